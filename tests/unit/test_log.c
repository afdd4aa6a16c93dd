/* test_log.c — log lines: one line per event, hostile values escaped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

/* Run one log_event with stderr redirected into a pipe; return the text. */
static void capture(char *out, size_t len, const char *event, const char *key, const char *value)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    dup2(fds[1], STDERR_FILENO);
    log_event(LOG_WARN, event, key, value, NULL);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fds[1]);
    ssize_t n = read(fds[0], out, len - 1);
    close(fds[0]);
    out[n > 0 ? n : 0] = '\0';
}

typedef struct row {
    const char *value;
    const char *expect; /* substring of the line */
} row_t;

static void test_values_are_escaped(void **state)
{
    (void)state;
    static const row_t rows[] = {
        {"plain", " reason=plain\n"},
        {"two words", " reason=\"two words\"\n"},
        {"forged\nts=0 level=error event=fake",
         " reason=\"forged\\x0ats=0 level=error event=fake\"\n"},
        {"quote\"back\\slash", " reason=\"quote\\\"back\\\\slash\"\n"},
        {"caf\xc3\xa9", "reason=caf\\xc3\\xa9\n"},
        {"", "reason=\"\"\n"},
        {NULL, "reason=-\n"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char line[8192];
        capture(line, sizeof line, "test.event", "reason", rows[i].value);
        /* exactly one newline, at the end */
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        assert_int_equal(nl[1], '\0');
        assert_non_null(strstr(line, " level=warn event=test.event "));
        if (strstr(line, rows[i].expect) == NULL)
            fail_msg("row %zu: expected \"%s\" in \"%s\"", i, rows[i].expect, line);
    }
}

static void test_exact_forms(void **state)
{
    (void)state;
    char line[8192];
    capture(line, sizeof line, "e", "k", "plain");
    assert_non_null(strstr(line, " k=plain\n"));
    capture(line, sizeof line, "e", "k", "two words");
    assert_non_null(strstr(line, " k=\"two words\"\n"));
    capture(line, sizeof line, "e", "k", "a\nb");
    assert_non_null(strstr(line, " k=a\\x0ab\n"));
    capture(line, sizeof line, "e", "k", "q\"");
    assert_non_null(strstr(line, " k=\"q\\\"\"\n"));
    capture(line, sizeof line, "e", "k", NULL);
    assert_non_null(strstr(line, " k=-\n"));
}

static void test_long_values_are_cut_not_split(void **state)
{
    (void)state;
    static char big[10000];
    memset(big, 'x', sizeof big - 1);
    char line[16384];
    capture(line, sizeof line, "e", "k", big);
    assert_non_null(strstr(line, " cut=true\n"));
    assert_true(strlen(line) < 4096);
    assert_ptr_equal(strchr(line, '\n'), line + strlen(line) - 1);
}

static void test_level_filter(void **state)
{
    (void)state;
    char line[512];
    log_set_level(LOG_ERROR);
    capture(line, sizeof line, "e", "k", "v");
    log_set_level(LOG_INFO);
    assert_string_equal(line, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_are_escaped),
        cmocka_unit_test(test_exact_forms),
        cmocka_unit_test(test_long_values_are_cut_not_split),
        cmocka_unit_test(test_level_filter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
