/*
 * test_cli_field.c — how `schakel` prints a field another partner sent
 * (clients/schakel/cli.c, cli_field): plain values as they are, the rest
 * quoted, and every control character escaped (C0, DEL and the C1 range
 * in UTF-8), so that relayed text can never drive the terminal.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli.h"

/* What cli_field printed for value (or, with summary set, what
 * case_print_summary printed for it), read back from a file stdout was
 * pointed at for the call. */
static void printed_of(const char *value, const schakel_case_summary_t *summary, char *out,
                       size_t outlen)
{
    FILE *capture = tmpfile();
    assert_non_null(capture);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(capture), STDOUT_FILENO) >= 0);
    if (summary != NULL)
        case_print_summary(summary);
    else
        cli_field("summary", value);
    fflush(stdout);
    assert_true(dup2(saved, STDOUT_FILENO) >= 0);
    close(saved);
    rewind(capture);
    size_t n = fread(out, 1, outlen - 1, capture);
    out[n] = '\0';
    fclose(capture);
}

static void printed(const char *value, char *out, size_t outlen)
{
    printed_of(value, NULL, out, outlen);
}

static void test_fields_are_printed_safely(void **state)
{
    (void)state;
    static const struct {
        const char *value;
        const char *printed;
    } rows[] = {
        {"GM0935", " summary=GM0935"},
        {"twee woorden", " summary=\"twee woorden\""},
        {"", " summary=\"\""},
        {"a \"quote\" and \\", " summary=\"a \\\"quote\\\" and \\\\\""},
        {"esc \x1b[2J", " summary=\"esc \\x1b[2J\""},
        {"nl\ntab\t", " summary=\"nl\\x0atab\\x09\""},
        {"del \x7f", " summary=\"del \\x7f\""},
        {"csi \xc2\x9b"
         "2J",
         " summary=\"csi \\xc2\\x9b2J\""},                                     /* C1: U+009B */
        {"nel \xc2\x85", " summary=\"nel \\xc2\\x85\""},                       /* C1: U+0085 */
        {"caf\xc3\xa9 \xc2\xa0nbsp", " summary=\"caf\xc3\xa9 \xc2\xa0nbsp\""}, /* not controls */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char out[256];
        printed(rows[i].value, out, sizeof out);
        if (strcmp(out, rows[i].printed) != 0)
            fail_msg("row %zu: printed [%s], expected [%s]", i, out, rows[i].printed);
    }
    char absent[16];
    printed(NULL, absent, sizeof absent);
    assert_string_equal(absent, ""); /* no value: nothing at all */
}

/* A case's members: all of them for any case this broker can hold (64
 * partners of 64 characters); a longer list is cut on a name and says how
 * many there are. */
static void test_members_are_listed_whole(void **state)
{
    (void)state;
    enum { MANY = 80 };
    static char names[MANY][65];
    char *members[MANY];
    for (size_t i = 0; i < MANY; i++) {
        memset(names[i], 'p', 64);
        snprintf(names[i] + 58, 7, "-%05zu", i);
        members[i] = names[i];
    }
    schakel_case_summary_t c = {.case_id = "C-00000042",
                                .case_type = "ondermijning-adres",
                                .lead = "riec",
                                .members = members,
                                .n_members = 64};
    static char out[16384];
    printed_of(NULL, &c, out, sizeof out);
    assert_non_null(strstr(out, "-00063"));
    assert_null(strstr(out, "in all)"));
    c.n_members = MANY;
    printed_of(NULL, &c, out, sizeof out);
    assert_non_null(strstr(out, ",...(80 in all)"));
    assert_non_null(strstr(out, "-00000,"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields_are_printed_safely),
        cmocka_unit_test(test_members_are_listed_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
