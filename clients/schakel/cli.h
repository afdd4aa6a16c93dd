/*
 * cli.h — the parts of the `schakel` command-line tool that its files share.
 *
 * cli.c: common options, connecting, error reports and exit codes.
 * fields.c: text forms of severity and time. jsonio.c: signals from JSON and
 * deliveries and cases to JSON. case_print.c: cases as key=value lines.
 * publish.c, import*.c, listen.c, ack.c, identity.c, case_cmd.c: the
 * subcommands.
 */
#ifndef SCHAKEL_CLI_H
#define SCHAKEL_CLI_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "schakel.h"

/* Exit codes (docs/man/schakel.1). */
enum cli_exit {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILURE = 1,
    CLI_EXIT_USAGE = 2,
    CLI_EXIT_REFUSED = 3,
    CLI_EXIT_UNREACHABLE = 4,
};

/* Long option values of the options every connecting subcommand takes. */
enum cli_common_option {
    CLI_OPT_BROKER = 1000,
    CLI_OPT_BROKER_KEY,
    CLI_OPT_KEY,
    CLI_OPT_CONNECT_TIMEOUT,
    CLI_OPT_HELP,
    CLI_OPT_JSON,
    CLI_OPT_FIRST_OWN, /* subcommands number their own options from here */
};

/* getopt_long rows for the common options; spread into a subcommand's table. */
#define CLI_COMMON_LONG_OPTIONS                                                                    \
    {"broker", 1, NULL, CLI_OPT_BROKER}, {"broker-key", 1, NULL, CLI_OPT_BROKER_KEY},              \
        {"key", 1, NULL, CLI_OPT_KEY}, {"connect-timeout", 1, NULL, CLI_OPT_CONNECT_TIMEOUT},      \
        {"help", 0, NULL, CLI_OPT_HELP},                                                           \
    {                                                                                              \
        "json", 0, NULL, CLI_OPT_JSON                                                              \
    }

/* Help text of the common options, for the subcommands' usage texts. */
#define CLI_COMMON_HELP                                                                            \
    "  --broker EP          broker endpoint (default: $SCHAKEL_BROKER)\n"                          \
    "  --broker-key FILE    the broker's public key, .pub (default: $SCHAKEL_BROKER_KEY)\n"        \
    "  --key FILE           our secret key, .key (default: $SCHAKEL_KEY)\n"                        \
    "  --connect-timeout S  seconds to wait for the handshake (default 5)\n"                       \
    "  --json               machine-readable output, one JSON object per line\n"                   \
    "  --help               this text\n"

typedef struct cli_options {
    const char *broker;
    const char *broker_key;
    const char *key;
    int connect_timeout_ms;
    int json;
    int help;
} cli_options_t;

/* Defaults from the environment (SCHAKEL_BROKER, SCHAKEL_BROKER_KEY, SCHAKEL_KEY). */
void cli_options_init(cli_options_t *opts);

/* Apply one common option. Returns 1 if it was one, 0 if not, -1 on a bad
 * value (message printed). */
int cli_common_option(cli_options_t *opts, int option, const char *arg);

/* The options of a subcommand that takes only the common ones (ack,
 * inbox, whoami), from argv into opts (cli_options_init's defaults
 * first); usage is printed to stdout on --help. Returns CLI_GO_ON for the
 * subcommand to go on with its operands from optind, or the exit code to
 * end with (CLI_EXIT_OK after --help, CLI_EXIT_USAGE after a report). */
#define CLI_GO_ON (-1)
int cli_parse_common_options(const char *command, const char *usage, int argc, char **argv,
                             cli_options_t *opts);

/* Print "schakel: <text>" to stderr (printf format). */
void cli_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Print a usage error and a pointer to --help; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

struct option;

/* Report what getopt_long refused ('?' or ':' in result; the message is
 * optreport_describe's) as a usage error of command, named as in
 * cli_usage_error; returns CLI_EXIT_USAGE. Call it before getopt runs again. */
int cli_option_error(const char *command, int result, const struct option *options, int argc,
                     char *const argv[]);

/* Report a bad option value like cli_usage_error, and return -1 (for the
 * option parsers' "bad value" result). */
int cli_bad_value(const char *command, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Exit code for a library status (docs/man/schakel.1 "EXIT STATUS"). */
int cli_exit_for(schakel_status_t status);

/* Report a library failure on stderr in words, with the reason code when the
 * broker refused; returns the exit code. */
int cli_report(const char *what, schakel_status_t status, const schakel_error_t *err);

/* Connect with the options (missing broker/key settings are usage errors).
 * Returns CLI_EXIT_OK with *client set, or the exit code after a report. */
int cli_connect(const cli_options_t *opts, schakel_client_t **client);

/* Parse a whole decimal number of digits only (no sign, no space) in
 * [min, max] (syntax_decimal). Returns 0 or -1. */
int cli_parse_number(const char *text, long long min, long long max, long long *out);

/* Print " key=value" to stdout (nothing for a NULL value), quoting the value
 * unless it is plain; control characters are escaped so that what the
 * broker relays can never drive the terminal. */
void cli_field(const char *key, const char *value);

/* Write one JSON value as a line to stdout; returns 0, or -1 if stdout failed. */
int cli_print_json(const json_t *value);

/* ------------------------------------------------------------ fields.c */

/* "low", "medium", "high", "critical" or 0..4 in digits. Returns 0 or -1. */
int fields_parse_severity(const char *text, int *severity);
/* Name of a severity ("high"), or NULL for unspecified/out of range. */
const char *fields_severity_name(int severity);
/* Unix seconds in digits, or ISO-8601 UTC "2026-11-20T14:00:00Z" (also
 * "+00:00" instead of "Z"). Returns 0 or -1. */
int fields_parse_time(const char *text, int64_t *unix_seconds);
/* ISO-8601 UTC text of Unix seconds into out (at least 32 bytes). */
void fields_format_time(int64_t unix_seconds, char *out, size_t outlen);

/* ------------------------------------------------------------ jsonio.c */

/* Fill a signal from one JSON object of `schakel publish` input. String
 * pointers borrow from obj (keep it alive); *recipients is a new array the
 * caller frees. A "message_id" member is returned in message_id_hex (borrowed,
 * NULL if absent). Unknown members are refused. Returns 0 or -1 with err. */
int jsonio_signal_from_json(json_t *obj, schakel_signal_t *signal, const char ***recipients,
                            const char **message_id_hex, char *err, size_t errlen);

/* A new JSON object with every field of the delivery that is present, or
 * NULL when out of memory. */
json_t *jsonio_delivery_to_json(const schakel_delivery_t *delivery);

/* A new JSON object for a case (case_id, case_type, lead, state, my_state,
 * title, opened_at, members) or a case event (case_id, case_type,
 * event_seq, kind by name, actor, on_behalf_of, at, lead, members, partner,
 * title, area, address, subject, text, fields {name: value}, attachment
 * {name, media_type, size, content_base64}, signal {...}); what is absent
 * is left out. NULL when out of memory. */
json_t *jsonio_case_summary_to_json(const schakel_case_summary_t *summary);
json_t *jsonio_case_event_to_json(const schakel_case_event_t *event);

/* ------------------------------------------------------------ case_print.c */

/* One case as a key=value line (no newline): case= state= my_state= type=
 * lead= opened= members= title=. */
void case_print_summary(const schakel_case_summary_t *summary);
/* One event as key=value pairs (no newline): event= at= kind= actor= for=
 * partner= ... text= field.NAME= attachment= media_type= size= signal.* */
void case_print_event(const schakel_case_event_t *event);

/* ------------------------------------------------------------ subcommands */

int publish_main(int argc, char **argv);
int import_main(int argc, char **argv); /* import.c; exit codes in import.h */
int listen_main(int argc, char **argv);
int ack_main(int argc, char **argv);
int identity_whoami_main(int argc, char **argv);
int identity_keygen_main(int argc, char **argv);
int case_main(int argc, char **argv);
int case_inbox_main(int argc, char **argv);

#endif
