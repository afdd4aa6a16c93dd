/*
 * ctl.h — the parts of `schakelctl`, the operators' tool, that its files
 * share.
 *
 * ctl.c: common options, messages, exit codes, text formats. ctl_conn.c:
 * the CURVE connection to the broker's admin endpoint and one request's
 * answer. ctl_show.c: status, partners, rules, reload. ctl_pending.c:
 * pending. ctl_policy.c: policy check and policy explain, which need no
 * broker.
 */
#ifndef SCHAKEL_CTL_H
#define SCHAKEL_CTL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

/* Exit codes (docs/man/schakelctl.8). */
enum ctl_exit {
    CTL_EXIT_OK = 0,
    CTL_EXIT_FAILURE = 1, /* the command failed: reload refused, policy invalid, denied */
    CTL_EXIT_USAGE = 2,
    CTL_EXIT_UNREACHABLE = 4, /* cannot reach the broker or authenticate to it */
};

/* Long option values of the options every broker command takes. */
enum ctl_common_option {
    CTL_OPT_ADMIN = 1000,
    CTL_OPT_BROKER_KEY,
    CTL_OPT_KEY,
    CTL_OPT_CONNECT_TIMEOUT,
    CTL_OPT_TIMEOUT,
    CTL_OPT_JSON,
    CTL_OPT_HELP,
    CTL_OPT_FIRST_OWN, /* commands number their own options from here */
};

#define CTL_COMMON_LONG_OPTIONS                                                                    \
    {"admin", 1, NULL, CTL_OPT_ADMIN}, {"broker-key", 1, NULL, CTL_OPT_BROKER_KEY},                \
        {"key", 1, NULL, CTL_OPT_KEY}, {"connect-timeout", 1, NULL, CTL_OPT_CONNECT_TIMEOUT},      \
        {"timeout", 1, NULL, CTL_OPT_TIMEOUT}, {"json", 0, NULL, CTL_OPT_JSON},                    \
    {                                                                                              \
        "help", 0, NULL, CTL_OPT_HELP                                                              \
    }

#define CTL_COMMON_HELP                                                                            \
    "  --admin EP           the broker's admin endpoint (default: $SCHAKEL_ADMIN)\n"               \
    "  --broker-key FILE    the broker's public key, .pub (default: $SCHAKEL_BROKER_KEY)\n"        \
    "  --key FILE           our operator key, .key (default: $SCHAKEL_KEY)\n"                      \
    "  --connect-timeout S  seconds to wait for the handshake (default 5)\n"                       \
    "  --timeout S          seconds to wait for the answer (default 30; audit subject 600)\n"      \
    "  --json               print the broker's answer as one JSON object\n"                        \
    "  --help               this text\n"

/* How long audit subject waits for its answer unless --timeout says: the
 * broker reads a large subject's export in steps between its other work. */
#define CTL_EXPORT_TIMEOUT_MS 600000

typedef struct ctl_options {
    const char *admin;
    const char *broker_key;
    const char *key;
    int connect_timeout_ms;
    int timeout_ms;
    int timeout_given; /* --timeout was given: no command's own default */
    int json;
    int help;
} ctl_options_t;

/* Defaults from the environment (SCHAKEL_ADMIN, SCHAKEL_BROKER_KEY, SCHAKEL_KEY). */
void ctl_options_init(ctl_options_t *opts);

/* Apply one common option. Returns 1 if it was one, 0 if not, -1 on a bad
 * value (message printed). */
int ctl_common_option(ctl_options_t *opts, int option, const char *arg);

/* "schakelctl: <text>" on stderr (printf format). */
void ctl_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A usage error and a pointer to --help on stderr; returns CTL_EXIT_USAGE. */
int ctl_usage_error(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

struct option;

/* Report what getopt_long refused ('?' or ':' in result; the message is
 * optreport_describe's) as a usage error of command, as ctl_usage_error
 * does; returns CTL_EXIT_USAGE. Call it before getopt runs again. */
int ctl_option_error(const char *command, int result, const struct option *options, int argc,
                     char *const argv[]);

/* Parse a whole decimal number of digits only (no sign, no space) in
 * [min, max] (syntax_decimal). Returns 0 or -1. */
int ctl_parse_number(const char *text, long long min, long long max, long long *out);

/* One JSON value as a compact line on stdout; 0, or -1 if stdout failed. */
int ctl_print_json(const json_t *value);

/* Text forms for the human tables. Unix seconds as ISO-8601 UTC ("-" for
 * 0 or less); seconds as "3d 04h", "2h 03m", "12m 05s", "7s"; bytes as
 * "812 B", "1.5 KiB", "3.2 MiB", "1.1 GiB". out holds at least 32 bytes. */
void ctl_format_time(int64_t unix_seconds, char *out, size_t outlen);
void ctl_format_duration(int64_t seconds, char *out, size_t outlen);
void ctl_format_bytes(int64_t bytes, char *out, size_t outlen);

/* Write text for a terminal: control characters (C0, DEL, C1) become '?',
 * so that nothing a policy or broker says can drive the terminal. */
void ctl_put_safe(FILE *out, const char *text);

/* Members of a JSON object with a default for absent or mistyped ones. */
const char *ctl_json_string(const json_t *object, const char *key, const char *fallback);
long long ctl_json_int(const json_t *object, const char *key, long long fallback);
int ctl_json_bool(const json_t *object, const char *key);

/* ------------------------------------------------------------ ctl_conn.c */

typedef struct ctl_conn ctl_conn_t;

/* The broker's answer to one request. */
typedef struct ctl_answer {
    int ok;       /* AdminResponse.ok */
    char *error;  /* AdminResponse.error when !ok (malloc'd), or NULL */
    json_t *json; /* the JSON document, or NULL when the answer had none */
} ctl_answer_t;

/* Connect to the admin endpoint with the options and wait for the CURVE
 * handshake. Missing settings are usage errors. Returns CTL_EXIT_OK with
 * *conn set, or an exit code after a message on stderr (a refused key or
 * an unreachable broker: CTL_EXIT_UNREACHABLE). */
int ctl_conn_open(const ctl_options_t *opts, ctl_conn_t **conn);

/* Send one request and wait (up to timeout_ms) for its whole answer.
 * Returns CTL_EXIT_OK with *answer filled (ok or not: the broker answered),
 * or an exit code after a message: CTL_EXIT_UNREACHABLE for no answer in
 * time or a Rejected NOT_PERMITTED, CTL_EXIT_FAILURE for any other
 * Rejected or a malformed answer. */
int ctl_conn_request(ctl_conn_t *conn, const char *command, const char *const *args, size_t n_args,
                     int timeout_ms, ctl_answer_t *answer);

void ctl_conn_close(ctl_conn_t **conn);
void ctl_answer_free(ctl_answer_t *answer);

/* ------------------------------------------------------------ commands */

/* ctl_show.c: argv[0] is "status", "partners", "rules" or "reload". */
int ctl_show_main(int argc, char **argv);
/* ctl_pending.c: argv[0] is "pending". */
int ctl_pending_main(int argc, char **argv);
/* ctl_policy.c: argv[0] is "policy", argv[1] "check" or "explain". */
int ctl_policy_main(int argc, char **argv);

#endif
