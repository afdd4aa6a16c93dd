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
#include <stdlib.h>
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

/* A row's command line, argv[0] "cmd", in storage the caller keeps. */
typedef struct command_line {
    char storage[7][64];
    char *argv[8];
    int argc;
} command_line_t;

/* Run getopt_long over one row from the start; returns its first refusal
 * ('?' or ':'), or -1 if it accepted everything. */
static int first_refusal(const row_t *row, command_line_t *line)
{
    line->argc = 0;
    snprintf(line->storage[0], sizeof line->storage[0], "cmd");
    line->argv[line->argc++] = line->storage[0];
    for (size_t i = 0; row->args[i] != NULL; i++, line->argc++) {
        snprintf(line->storage[line->argc], sizeof line->storage[line->argc], "%s", row->args[i]);
        line->argv[line->argc] = line->storage[line->argc];
    }
    line->argv[line->argc] = NULL;
    opterr = 0;
    optind = 0; /* glibc: start over, forgetting the last row's cluster */
    int option;
    while ((option = getopt_long(line->argc, line->argv, row->optstring, test_options, NULL)) != -1)
        if (option == '?' || option == ':')
            return option;
    return -1;
}

/* The same, with the message for the refusal in out. */
static int refusal_of(const row_t *row, char *out, size_t outlen)
{
    command_line_t line;
    int refusal = first_refusal(row, &line);
    if (refusal != -1)
        optreport_describe(refusal, test_options, line.argc, line.argv, out, outlen);
    return refusal;
}

/* Each row refused as it says, or accepted. */
static void check_rows(const row_t *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char said[160] = "";
        int refusal = refusal_of(&rows[i], said, sizeof said);
        if (rows[i].says == NULL && refusal != -1)
            fail_msg("row %zu: refused (%s), expected accepted", i, said);
        if (rows[i].says != NULL && strcmp(said, rows[i].says) != 0)
            fail_msg("row %zu: said \"%s\", expected \"%s\"", i, said, rows[i].says);
    }
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
        /* with '-' arguments come in order (as 1): the same messages */
        {"-:hqv:", {"file", "-xq", NULL}, "unknown option '-x'"},
        {"-:hqv:", {"file", "--json=on", "more", NULL}, "--json takes no value"},
        {"-:hqv:", {"file", "--broker", NULL}, "--broker needs a value"},
        {"-:hqv:", {"file", "--", "-x", NULL}, NULL},
    };
    check_rows(rows, sizeof rows / sizeof rows[0]);
}

/* With POSIXLY_CORRECT set getopt_long stops at the first argument,
 * unless the optstring begins with '-': then it hands every argument over
 * in order, and the options after an argument are still read and refused
 * as without it. The tools' optstrings rely on that. */
static void test_optreport_posixly_correct(void **state)
{
    (void)state;
    static const row_t rows[] = {
        {":hqv:", {"file", "--json=on", NULL}, NULL}, /* stops at "file" */
        {"-:hqv:", {"file", "--json=on", NULL}, "--json takes no value"},
        {"-:hqv:", {"file", "-qx", NULL}, "unknown option '-x'"},
    };
    assert_int_equal(setenv("POSIXLY_CORRECT", "1", 1), 0);
    check_rows(rows, sizeof rows / sizeof rows[0]);
    assert_int_equal(unsetenv("POSIXLY_CORRECT"), 0);
}

/* Which long option of the table getopt_long refused, for a command that
 * names one of another subcommand as such: a flag given a value, an
 * option without its value, named in full or abbreviated; not an unknown
 * or ambiguous one, nor a short option (also one after a value that looks
 * like a long option). */
static void test_optreport_refused_long(void **state)
{
    (void)state;
    static const struct {
        row_t row;
        const char *refused; /* its name, or NULL */
    } rows[] = {
        {{":hqv:", {"--json=1", NULL}, NULL}, "json"},
        {{":hqv:", {"file", "--js=1", NULL}, NULL}, "json"},
        {{":hqv:", {"--broker", NULL}, NULL}, "broker"},
        {{":hqv:", {"--broker-k", NULL}, NULL}, "broker-key"},
        {{":hqv:", {"--help=yes", NULL}, NULL}, "help"},
        {{":hqv:", {"--bogus=1", NULL}, NULL}, NULL},
        {{":hqv:", {"--br", "x", NULL}, NULL}, NULL},
        {{":hqv:", {"-x", NULL}, NULL}, NULL},
        {{":hqv:", {"-v", NULL}, NULL}, NULL},
        {{":hqv:", {"--broker", "--json", "-qx", NULL}, NULL}, NULL},
        {{":hqv:", {"--broker", "--json=1", "-x", NULL}, NULL}, NULL},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        command_line_t line;
        int refusal = first_refusal(&rows[i].row, &line);
        if (refusal == -1)
            fail_msg("row %zu: accepted, expected a refusal", i);
        const struct option *refused =
            optreport_refused_long(refusal, test_options, line.argc, line.argv);
        const char *name = refused != NULL ? refused->name : NULL;
        if ((name == NULL) != (rows[i].refused == NULL) ||
            (name != NULL && strcmp(name, rows[i].refused) != 0))
            fail_msg("row %zu: named %s, expected %s", i, name ? name : "none",
                     rows[i].refused ? rows[i].refused : "none");
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
        cmocka_unit_test(test_optreport_posixly_correct),
        cmocka_unit_test(test_optreport_refused_long),
        cmocka_unit_test(test_optreport_cut_to_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
