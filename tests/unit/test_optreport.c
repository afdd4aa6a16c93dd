/*
 * test_optreport.c — the message for an option getopt_long refused
 * (common/optreport.c): real getopt_long runs over table rows, each
 * refusal described; the controls are command lines getopt accepts.
 */
#include <getopt.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "optreport.h"

enum { OPT_BROKER = 1000, OPT_BROKER_KEY, OPT_JSON, OPT_DRAIN };

/* Long options like the tools' (vals above a character), and --help that
 * is also -h; -v takes a value, -h and -q do not. */
static const struct option test_options[] = {
    {"broker", 1, NULL, OPT_BROKER}, {"broker-key", 1, NULL, OPT_BROKER_KEY},
    {"json", 0, NULL, OPT_JSON},     {"drain", 0, NULL, OPT_DRAIN},
    {"help", 0, NULL, 'h'},          {NULL, 0, NULL, 0}};

typedef struct row {
    const char *optstring;
    const char *args[6]; /* after argv[0] */
    const char *says;    /* NULL: a control, getopt accepts every option */
} row_t;

/* Run getopt_long over one row from the start; returns its first refusal
 * ('?' or ':') with the message in out, or -1 if it accepted everything. */
static int refusal_of(const row_t *row, char *out, size_t outlen)
{
    char storage[7][64];
    char *argv[8];
    int argc = 0;
    snprintf(storage[0], sizeof storage[0], "cmd");
    argv[argc++] = storage[0];
    for (size_t i = 0; row->args[i] != NULL; i++, argc++) {
        snprintf(storage[argc], sizeof storage[argc], "%s", row->args[i]);
        argv[argc] = storage[argc];
    }
    argv[argc] = NULL;
    opterr = 0;
    optind = 0; /* glibc: start over, forgetting the last row's cluster */
    int option;
    while ((option = getopt_long(argc, argv, row->optstring, test_options, NULL)) != -1)
        if (option == '?' || option == ':') {
            optreport_describe(option, test_options, argc, argv, out, outlen);
            return option;
        }
    return -1;
}

static void test_optreport_rows(void **state)
{
    (void)state;
    static const row_t rows[] = {
        /* controls */
        {"+:hqv:", {"--broker", "tcp://b", "--json", "-hq", "-vx", NULL}, NULL},
        {"+:hqv:", {"--broker=", "--js", "--he", "-v", "x", NULL}, NULL},
        /* unknown long options, with or without a value */
        {"+:hqv:", {"--bogus", NULL}, "unknown option '--bogus'"},
        {"+:hqv:", {"--json", "--bogus=3", NULL}, "unknown option '--bogus'"},
        {"+:hqv:", {"--brokers", "x", NULL}, "unknown option '--brokers'"},
        {"+:hqv:", {"--br", "x", NULL}, "option '--br' is ambiguous (--broker, --broker-key)"},
        /* a value to a flag, named in full */
        {"+:hqv:", {"--json=1", NULL}, "--json takes no value"},
        {"+:hqv:", {"--json=", NULL}, "--json takes no value"},
        {"+:hqv:", {"--js=yes", NULL}, "--json takes no value"},
        {"+:hqv:", {"-q", "--drain=0", NULL}, "--drain takes no value"},
        {"+:hqv:", {"--help=1", NULL}, "--help takes no value"},
        /* a long option without its value, named in full */
        {"+:hqv:", {"--json", "--broker", NULL}, "--broker needs a value"},
        {"+:hqv:", {"--broker-k", NULL}, "--broker-key needs a value"},
        /* unknown short options: alone, last of a cluster, inside one */
        {"+:hqv:", {"-x", NULL}, "unknown option '-x'"},
        {"+:hqv:", {"-hx", NULL}, "unknown option '-x'"},
        {"+:hqv:", {"-xh", NULL}, "unknown option '-x'"},
        {"+:hqv:", {"--json", "-qxh", NULL}, "unknown option '-x'"},
        {"+:hqv:", {"-\x01", NULL}, "unknown option '-\\x01'"},
        {"+:hqv:", {"-\xc3\xa9", NULL}, "unknown option '-\\xc3'"},
        /* a short option without its value */
        {"+:hqv:", {"-v", NULL}, "-v needs a value"},
        {"+:hqv:", {"--json", "-qv", NULL}, "-v needs a value"},
        /* options after arguments (no '+'): the same messages */
        {":hqv:", {"file", "-xq", NULL}, "unknown option '-x'"},
        {":hqv:", {"file", "--json=on", NULL}, "--json takes no value"},
        {":hqv:", {"file", "--broker", NULL}, "--broker needs a value"},
        /* with '+' what follows an argument is not an option */
        {"+:hqv:", {"file", "-xq", NULL}, NULL},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char said[160] = "";
        int refusal = refusal_of(&rows[i], said, sizeof said);
        if (rows[i].says == NULL && refusal != -1)
            fail_msg("row %zu: refused (%s), expected accepted", i, said);
        if (rows[i].says != NULL && strcmp(said, rows[i].says) != 0)
            fail_msg("row %zu: said \"%s\", expected \"%s\"", i, said, rows[i].says);
    }
}

/* A buffer too small for the message gets what fits, terminated. */
static void test_optreport_cut_to_buffer(void **state)
{
    (void)state;
    const row_t row = {"+:", {"--br=1", NULL}, "option '--br' is ambiguous"};
    char said[16];
    memset(said, 'x', sizeof said);
    assert_int_equal(refusal_of(&row, said, sizeof said), '?');
    assert_string_equal(said, "option '--br' i");
    char tiny[1] = {'x'};
    assert_int_equal(refusal_of(&row, tiny, sizeof tiny), '?');
    assert_int_equal(tiny[0], '\0');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_optreport_rows),
        cmocka_unit_test(test_optreport_cut_to_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
