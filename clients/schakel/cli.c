/*
 * cli.c — what every `schakel` subcommand shares: the common options and
 * their environment defaults, connecting, reporting errors in words, and the
 * mapping of library statuses to exit codes. Prints only to stderr (reports)
 * and stdout (JSON lines); never exits by itself.
 */
#include "cli.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optreport.h"
#include "syntax.h"

#define CLI_DEFAULT_CONNECT_TIMEOUT_MS 5000
#define CLI_MAX_TIMEOUT_S 86400 /* a day: beyond that a timeout is a typo */

void cli_options_init(cli_options_t *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->broker = getenv("SCHAKEL_BROKER");
    opts->broker_key = getenv("SCHAKEL_BROKER_KEY");
    opts->key = getenv("SCHAKEL_KEY");
    opts->connect_timeout_ms = CLI_DEFAULT_CONNECT_TIMEOUT_MS;
}

int cli_parse_number(const char *text, long long min, long long max, long long *out)
{
    /* digits only: strtoll took " 2", "+1" and "-0" */
    return syntax_decimal(text, min, max, out);
}

int cli_common_option(cli_options_t *opts, int option, const char *arg)
{
    long long seconds;
    switch (option) {
    case CLI_OPT_BROKER:
        opts->broker = arg;
        return 1;
    case CLI_OPT_BROKER_KEY:
        opts->broker_key = arg;
        return 1;
    case CLI_OPT_KEY:
        opts->key = arg;
        return 1;
    case CLI_OPT_CONNECT_TIMEOUT:
        if (cli_parse_number(arg, 1, CLI_MAX_TIMEOUT_S, &seconds) != 0) {
            cli_say("--connect-timeout wants whole seconds from 1 to %d, not '%s'",
                    CLI_MAX_TIMEOUT_S, arg);
            return -1;
        }
        opts->connect_timeout_ms = (int)seconds * 1000;
        return 1;
    case CLI_OPT_HELP:
        opts->help = 1;
        return 1;
    case CLI_OPT_JSON:
        opts->json = 1;
        return 1;
    default:
        return 0;
    }
}

int cli_parse_common_options(const char *command, const char *usage, int argc, char **argv,
                             cli_options_t *opts)
{
    static const struct option options[] = {CLI_COMMON_LONG_OPTIONS, {NULL, 0, NULL, 0}};
    cli_options_init(opts);
    int option;
    opterr = 0; /* its '?' and ':' are told apart by cli_option_error */
    while ((option = getopt_long(argc, argv, "+:", options, NULL)) != -1) {
        int rc = cli_common_option(opts, option, optarg);
        if (rc < 0)
            return CLI_EXIT_USAGE;
        if (rc == 0)
            return cli_option_error(command, option, options, argc, argv);
    }
    if (opts->help) {
        fputs(usage, stdout);
        return CLI_EXIT_OK;
    }
    return CLI_GO_ON;
}

void cli_say(const char *fmt, ...)
{
    va_list args;
    fputs("schakel: ", stderr);
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fputc('\n', stderr);
}

static void cli_vusage(const char *command, const char *fmt, va_list args)
    __attribute__((format(printf, 2, 0)));

static void cli_vusage(const char *command, const char *fmt, va_list args)
{
    fputs("schakel: ", stderr);
    vfprintf(stderr, fmt, args);
    if (command != NULL)
        fprintf(stderr, "\nTry 'schakel %s --help'.\n", command);
    else
        fputs("\nTry 'schakel --help'.\n", stderr);
}

int cli_usage_error(const char *command, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    cli_vusage(command, fmt, args);
    va_end(args);
    return CLI_EXIT_USAGE;
}

int cli_option_error(const char *command, int result, const struct option *options, int argc,
                     char *const argv[])
{
    char text[256];
    optreport_describe(result, options, argc, argv, text, sizeof text);
    return cli_usage_error(command, "%s", text);
}

int cli_bad_value(const char *command, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    cli_vusage(command, fmt, args);
    va_end(args);
    return -1;
}

int cli_exit_for(schakel_status_t status)
{
    switch (status) {
    case SCHAKEL_OK:
        return CLI_EXIT_OK;
    case SCHAKEL_ERR_USAGE:
        return CLI_EXIT_USAGE;
    case SCHAKEL_ERR_REFUSED:
        return CLI_EXIT_REFUSED;
    case SCHAKEL_ERR_KEY: /* without a usable key we cannot authenticate */
    case SCHAKEL_ERR_CONNECT:
    case SCHAKEL_ERR_AUTH:
    case SCHAKEL_ERR_TIMEOUT: /* the broker did not answer */
        return CLI_EXIT_UNREACHABLE;
    case SCHAKEL_ERR_PROTOCOL:
    case SCHAKEL_ERR_NOMEM:
    case SCHAKEL_ERR_INTERNAL:
        return CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_FAILURE;
}

int cli_report(const char *what, schakel_status_t status, const schakel_error_t *err)
{
    const char *text = err != NULL && err->text[0] != '\0' ? err->text : schakel_strerror(status);
    if (status == SCHAKEL_ERR_REFUSED && err != NULL && err->reason_name[0] != '\0') {
        if (err->item_index >= 0)
            fprintf(stderr, "refused: %s: item %d: %s\n", err->reason_name, err->item_index, text);
        else
            fprintf(stderr, "refused: %s: %s\n", err->reason_name, text);
    } else {
        cli_say("%s: %s", what, text);
    }
    return cli_exit_for(status);
}

int cli_connect(const cli_options_t *opts, schakel_client_t **client)
{
    if (opts->broker == NULL || opts->broker[0] == '\0')
        return cli_usage_error(NULL, "no broker endpoint: give --broker or set SCHAKEL_BROKER");
    if (opts->broker_key == NULL || opts->broker_key[0] == '\0')
        return cli_usage_error(NULL, "no broker key: give --broker-key or set SCHAKEL_BROKER_KEY");
    if (opts->key == NULL || opts->key[0] == '\0')
        return cli_usage_error(NULL, "no key of ours: give --key or set SCHAKEL_KEY");
    schakel_error_t err;
    memset(&err, 0, sizeof err);
    schakel_status_t status = schakel_connect(client, opts->broker, opts->broker_key, opts->key,
                                              opts->connect_timeout_ms, &err);
    if (status != SCHAKEL_OK)
        return cli_report("connect", status, &err);
    return CLI_EXIT_OK;
}

/* DEL and the C1 controls escaped (syntax_json_escape_controls): jansson
 * writes them raw, and a terminal acts on them. */
int cli_print_json(const json_t *value)
{
    char *raw = json_dumps(value, JSON_COMPACT);
    char *text = raw != NULL ? syntax_json_escape_controls(raw) : NULL;
    free(raw);
    if (text == NULL)
        return -1;
    int rc = puts(text) == EOF ? -1 : 0;
    free(text);
    if (fflush(stdout) != 0)
        rc = -1;
    return rc;
}

void cli_field(const char *key, const char *value)
{
    if (value == NULL)
        return;
    size_t plain = strspn(value, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                 "0123456789._:/@+-");
    if (value[0] != '\0' && value[plain] == '\0') {
        printf(" %s=%s", key, value);
        return;
    }
    printf(" %s=\"", key);
    for (const unsigned char *p = (const unsigned char *)value; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            printf("\\x%02x", *p);
        else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) { /* a C1 control in UTF-8 */
            printf("\\x%02x\\x%02x", *p, p[1]);
            p++;
        } else
            putchar(*p);
    }
    putchar('"');
}
