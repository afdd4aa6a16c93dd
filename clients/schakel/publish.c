/*
 * publish.c — `schakel publish`: one signal from options, or a batch of JSON
 * objects (one per line) from stdin, published as ONE signed Publish.
 * Checks option syntax and JSON types here; the broker validates values and
 * policy and its refusal is printed as "refused: REASON: text" (exit 3).
 */
#include "cli.h"

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "schakel_limits.h"
#include "syntax.h"

#define PUBLISH_DEFAULT_TIMEOUT_MS 10000
#define PUBLISH_MAX_TIMEOUT_S 3600
#define PUBLISH_MAX_LINE_BYTES (1024u * 1024u) /* a JSON line; an item is at most 32 KiB */

enum publish_option {
    PUBLISH_OPT_KIND = CLI_OPT_FIRST_OWN,
    PUBLISH_OPT_THEME,
    PUBLISH_OPT_AREA,
    PUBLISH_OPT_POSTCODE,
    PUBLISH_OPT_HOUSE_NUMBER,
    PUBLISH_OPT_ADDITION,
    PUBLISH_OPT_SUBJECT,
    PUBLISH_OPT_GROUNDS,
    PUBLISH_OPT_CASE_REF,
    PUBLISH_OPT_SEVERITY,
    PUBLISH_OPT_OBSERVED_AT,
    PUBLISH_OPT_SUMMARY,
    PUBLISH_OPT_SOURCE_REF,
    PUBLISH_OPT_TO,
    PUBLISH_OPT_MESSAGE_ID,
    PUBLISH_OPT_TIMEOUT,
};

static const char publish_usage[] =
    "usage: schakel publish [OPTIONS] [SIGNAL OPTIONS]\n"
    "       schakel publish [OPTIONS] [-] < signals.jsonl\n"
    "\n"
    "Publish one signal given by the options below, or, without signal options\n"
    "or with '-', one JSON object per line from stdin (up to 256) as one signed\n"
    "batch. Prints \"accepted seq=N recipients=N\" per item.\n"
    "\n"
    "signal options:\n"
    "  --kind K             signal kind token (hennepkwekerij)\n"
    "  --theme T            theme (ondermijning, overlast, woninginbraak, ...)\n"
    "  --area A             CBS code: GM0935, WK093501, BU09350101\n"
    "  --postcode P         6211AB (no space)\n"
    "  --house-number N     house number\n"
    "  --addition X         house number addition\n"
    "  --subject S          pseudonym of a person (never a BSN)\n"
    "  --grounds G          the concrete, objective indication (needed with --subject)\n"
    "  --case-ref C         a case this signal belongs to\n"
    "  --severity V         low, medium, high or critical\n"
    "  --observed-at T      Unix seconds or 2026-11-20T14:00:00Z\n"
    "  --summary S          free text\n"
    "  --source-ref R       your own reference\n"
    "  --to PARTNER         intended recipient partner (repeatable)\n"
    "other options:\n"
    "  --message-id HEX     32 hex digits; repeat an id to retry safely\n"
    "  --timeout S          seconds to wait for the broker's answer (default 10)\n" CLI_COMMON_HELP
    "\n"
    "JSON fields: kind, theme, area, address {postcode, house_number, addition},\n"
    "subject, grounds, case_ref, severity (\"high\" or 1..4), observed_at (number or\n"
    "ISO-8601 UTC), summary, source_ref, recipients [...], message_id (hex).\n";

static const struct option publish_options[] = {
    CLI_COMMON_LONG_OPTIONS,
    {"kind", 1, NULL, PUBLISH_OPT_KIND},
    {"theme", 1, NULL, PUBLISH_OPT_THEME},
    {"area", 1, NULL, PUBLISH_OPT_AREA},
    {"postcode", 1, NULL, PUBLISH_OPT_POSTCODE},
    {"house-number", 1, NULL, PUBLISH_OPT_HOUSE_NUMBER},
    {"addition", 1, NULL, PUBLISH_OPT_ADDITION},
    {"subject", 1, NULL, PUBLISH_OPT_SUBJECT},
    {"grounds", 1, NULL, PUBLISH_OPT_GROUNDS},
    {"case-ref", 1, NULL, PUBLISH_OPT_CASE_REF},
    {"severity", 1, NULL, PUBLISH_OPT_SEVERITY},
    {"observed-at", 1, NULL, PUBLISH_OPT_OBSERVED_AT},
    {"summary", 1, NULL, PUBLISH_OPT_SUMMARY},
    {"source-ref", 1, NULL, PUBLISH_OPT_SOURCE_REF},
    {"to", 1, NULL, PUBLISH_OPT_TO},
    {"message-id", 1, NULL, PUBLISH_OPT_MESSAGE_ID},
    {"timeout", 1, NULL, PUBLISH_OPT_TIMEOUT},
    {NULL, 0, NULL, 0},
};

/* The batch being built, with everything its signals borrow from. */
typedef struct publish_batch {
    schakel_signal_t signals[SCHAKEL_MAX_ITEMS];
    const char **recipients[SCHAKEL_MAX_ITEMS]; /* arrays owned here */
    json_t *objects[SCHAKEL_MAX_ITEMS];         /* JSON the strings point into */
    size_t n;
    const char *to[SCHAKEL_MAX_RECIPIENTS]; /* --to, borrowed from argv */
    size_t n_to;
    const char *message_id_hex;
    int from_options; /* a signal option was given */
    int timeout_ms;
} publish_batch_t;

static void publish_batch_free(publish_batch_t *batch)
{
    for (size_t i = 0; i < SCHAKEL_MAX_ITEMS; i++) {
        free(batch->recipients[i]);
        json_decref(batch->objects[i]);
    }
    free(batch);
}

/* Signal options whose value is stored as given. */
static const struct {
    int option;
    size_t offset; /* of the const char * in schakel_signal_t */
} publish_text_options[] = {
    {PUBLISH_OPT_KIND, offsetof(schakel_signal_t, kind)},
    {PUBLISH_OPT_THEME, offsetof(schakel_signal_t, theme)},
    {PUBLISH_OPT_AREA, offsetof(schakel_signal_t, area)},
    {PUBLISH_OPT_POSTCODE, offsetof(schakel_signal_t, postcode)},
    {PUBLISH_OPT_ADDITION, offsetof(schakel_signal_t, addition)},
    {PUBLISH_OPT_SUBJECT, offsetof(schakel_signal_t, subject)},
    {PUBLISH_OPT_GROUNDS, offsetof(schakel_signal_t, grounds)},
    {PUBLISH_OPT_CASE_REF, offsetof(schakel_signal_t, case_ref)},
    {PUBLISH_OPT_SUMMARY, offsetof(schakel_signal_t, summary)},
    {PUBLISH_OPT_SOURCE_REF, offsetof(schakel_signal_t, source_ref)},
};

/* Signal options that need parsing. Returns 1, 0 if not one, -1 if bad. */
static int publish_parsed_option(publish_batch_t *batch, int option, const char *arg)
{
    schakel_signal_t *s = &batch->signals[0];
    long long number;
    switch (option) {
    case PUBLISH_OPT_HOUSE_NUMBER:
        if (cli_parse_number(arg, 1, SCHAKEL_MAX_HOUSE_NUMBER, &number) != 0)
            return cli_bad_value("publish", "--house-number wants a number from 1 to %u, not '%s'",
                                 SCHAKEL_MAX_HOUSE_NUMBER, arg);
        s->house_number = (uint32_t)number;
        return 1;
    case PUBLISH_OPT_SEVERITY:
        if (fields_parse_severity(arg, &s->severity) != 0)
            return cli_bad_value("publish",
                                 "--severity wants low, medium, high or critical, not '%s'", arg);
        return 1;
    case PUBLISH_OPT_OBSERVED_AT:
        if (fields_parse_time(arg, &s->observed_at) != 0)
            return cli_bad_value("publish",
                                 "--observed-at wants Unix seconds or ISO-8601 UTC like "
                                 "2026-11-20T14:00:00Z, not '%s'",
                                 arg);
        return 1;
    case PUBLISH_OPT_TO:
        if (batch->n_to == SCHAKEL_MAX_RECIPIENTS)
            return cli_bad_value("publish", "at most %u --to partners", SCHAKEL_MAX_RECIPIENTS);
        batch->to[batch->n_to++] = arg;
        return 1;
    default:
        return 0;
    }
}

/* Apply one signal option or --message-id / --timeout. Returns 1 if taken,
 * 0 if not ours, -1 on a bad value (reported). */
static int publish_option(publish_batch_t *batch, int option, const char *arg)
{
    long long seconds;
    if (option == PUBLISH_OPT_MESSAGE_ID) {
        batch->message_id_hex = arg;
        return 1;
    }
    if (option == PUBLISH_OPT_TIMEOUT) {
        if (cli_parse_number(arg, 1, PUBLISH_MAX_TIMEOUT_S, &seconds) != 0)
            return cli_bad_value("publish", "--timeout wants whole seconds from 1 to %d, not '%s'",
                                 PUBLISH_MAX_TIMEOUT_S, arg);
        batch->timeout_ms = (int)seconds * 1000;
        return 1;
    }
    for (size_t i = 0; i < sizeof publish_text_options / sizeof publish_text_options[0]; i++) {
        if (publish_text_options[i].option == option) {
            /* store the pointer at the field's offset (memcpy: no aliasing cast) */
            char *field = (char *)&batch->signals[0] + publish_text_options[i].offset;
            memcpy(field, &arg, sizeof arg);
            batch->from_options = 1;
            return 1;
        }
    }
    int rc = publish_parsed_option(batch, option, arg);
    if (rc == 1)
        batch->from_options = 1;
    return rc;
}

/* Parse one stdin line into the next item. Returns 0 or an exit code. */
static int publish_add_json(publish_batch_t *batch, const char *line, size_t lineno)
{
    json_error_t jerr;
    char err[200];
    const char *message_id_hex = NULL;
    if (batch->n == SCHAKEL_MAX_ITEMS)
        return cli_usage_error("publish",
                               "more than %u signals on stdin: one publish carries "
                               "at most %u; split the input",
                               SCHAKEL_MAX_ITEMS, SCHAKEL_MAX_ITEMS);
    json_t *obj = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
    if (obj == NULL)
        return cli_usage_error("publish", "stdin line %zu: not JSON: %s", lineno, jerr.text);
    size_t i = batch->n;
    batch->objects[i] = obj;
    batch->n++;
    if (jsonio_signal_from_json(obj, &batch->signals[i], &batch->recipients[i], &message_id_hex,
                                err, sizeof err) != 0)
        return cli_usage_error("publish", "stdin line %zu: %s", lineno, err);
    if (message_id_hex != NULL) {
        if (batch->message_id_hex != NULL && strcmp(batch->message_id_hex, message_id_hex) != 0)
            return cli_usage_error("publish",
                                   "stdin line %zu: message_id differs from an "
                                   "earlier one; a batch has one message id",
                                   lineno);
        batch->message_id_hex = message_id_hex;
    }
    return 0;
}

static int publish_read_stdin(publish_batch_t *batch)
{
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t len;
    int rc = 0;
    if (isatty(STDIN_FILENO))
        cli_say("reading signals as JSON from stdin, one object per line (end with Ctrl-D)");
    while (rc == 0 && (len = getline(&line, &cap, stdin)) != -1) {
        lineno++;
        if ((size_t)len > PUBLISH_MAX_LINE_BYTES) {
            rc = cli_usage_error("publish", "stdin line %zu is longer than %u bytes", lineno,
                                 PUBLISH_MAX_LINE_BYTES);
            break;
        }
        size_t start = strspn(line, " \t\r\n");
        if (line[start] == '\0')
            continue; /* blank line */
        rc = publish_add_json(batch, line, lineno);
    }
    if (rc == 0 && ferror(stdin)) {
        cli_say("cannot read stdin");
        rc = CLI_EXIT_FAILURE;
    }
    free(line);
    if (rc == 0 && batch->n == 0)
        rc = cli_usage_error("publish", "no signals: give signal options or JSON on stdin");
    return rc;
}

static int publish_print(const cli_options_t *opts, const publish_batch_t *batch,
                         const uint8_t id[16], const schakel_item_result_t *results, int duplicate)
{
    char id_hex[2 * SCHAKEL_MESSAGE_ID_BYTES + 1];
    syntax_hex(id, SCHAKEL_MESSAGE_ID_BYTES, id_hex);
    if (!opts->json) {
        for (size_t i = 0; i < batch->n; i++)
            printf("accepted seq=%llu recipients=%u%s\n", (unsigned long long)results[i].seq,
                   results[i].recipients, duplicate ? " duplicate" : "");
        return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
    }
    json_t *items = json_array();
    json_t *obj =
        json_pack("{s:s, s:b, s:o*}", "message_id", id_hex, "duplicate", duplicate, "items", items);
    int failed = obj == NULL || items == NULL;
    for (size_t i = 0; !failed && i < batch->n; i++) {
        json_t *item =
            json_pack("{s:I, s:I, s:I}", "item_index", (json_int_t)i, "seq",
                      (json_int_t)results[i].seq, "recipients", (json_int_t)results[i].recipients);
        failed = item == NULL || json_array_append_new(items, item) != 0;
    }
    if (!failed)
        failed = cli_print_json(obj) != 0;
    json_decref(obj);
    return failed ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
}

/* Connect, publish the batch, print the outcome. */
static int publish_send(const cli_options_t *opts, publish_batch_t *batch)
{
    uint8_t id[SCHAKEL_MESSAGE_ID_BYTES], *given_id = NULL;
    char id_hex[2 * SCHAKEL_MESSAGE_ID_BYTES + 1];
    if (batch->message_id_hex != NULL) {
        if (strlen(batch->message_id_hex) != 2 * SCHAKEL_MESSAGE_ID_BYTES ||
            syntax_unhex(batch->message_id_hex, id, sizeof id) != 0)
            return cli_usage_error("publish", "a message id is 32 hex digits, not '%s'",
                                   batch->message_id_hex);
        given_id = id;
    }
    schakel_client_t *client = NULL;
    int rc = cli_connect(opts, &client);
    if (rc != CLI_EXIT_OK)
        return rc;
    schakel_item_result_t *results = calloc(batch->n, sizeof *results);
    int duplicate = 0;
    schakel_status_t status = SCHAKEL_ERR_NOMEM;
    if (results != NULL)
        status = schakel_publish(client, NULL, batch->signals, batch->n, given_id, id, results,
                                 &duplicate, batch->timeout_ms);
    if (status == SCHAKEL_OK) {
        rc = publish_print(opts, batch, id, results, duplicate);
    } else if (results == NULL) {
        cli_say("publish: out of memory");
        rc = CLI_EXIT_FAILURE;
    } else {
        rc = cli_report("publish", status, schakel_last_error(client));
        syntax_hex(id, sizeof id, id_hex);
        const schakel_error_t *e = schakel_last_error(client);
        if (status == SCHAKEL_ERR_TIMEOUT)
            cli_say("the publish may or may not have been accepted; retry with "
                    "--message-id %s to be sure it is stored once",
                    id_hex);
        else if (status == SCHAKEL_ERR_REFUSED && (strcmp(e->reason_name, "UNAVAILABLE") == 0 ||
                                                   strcmp(e->reason_name, "INTERNAL_ERROR") == 0 ||
                                                   strcmp(e->reason_name, "RATE_LIMITED") == 0))
            cli_say("publish again with --message-id %s: a repeat of a publish the broker "
                    "did store is answered as a duplicate, never stored twice",
                    id_hex);
    }
    free(results);
    schakel_close(&client);
    return rc;
}

/* Parse options and the positional '-'. Returns 0 to go on, or an exit code. */
static int publish_parse(int argc, char **argv, cli_options_t *opts, publish_batch_t *batch,
                         int *from_stdin)
{
    int option;
    opterr = 0; /* its '?' and ':' are told apart by cli_option_error */
    while ((option = getopt_long(argc, argv, "+:", publish_options, NULL)) != -1) {
        int rc = cli_common_option(opts, option, optarg);
        if (rc == 0)
            rc = publish_option(batch, option, optarg);
        if (rc < 0)
            return CLI_EXIT_USAGE;
        if (rc == 0)
            return cli_option_error("publish", option, publish_options, argc, argv);
    }
    if (opts->help) {
        fputs(publish_usage, stdout);
        return -1;
    }
    *from_stdin = !batch->from_options;
    if (optind < argc) {
        if (optind + 1 != argc || strcmp(argv[optind], "-") != 0)
            return cli_usage_error("publish", "unexpected argument '%s'", argv[optind]);
        if (!*from_stdin)
            return cli_usage_error("publish", "give signal options or '-' (JSON on stdin), "
                                              "not both");
    }
    return 0;
}

int publish_main(int argc, char **argv)
{
    cli_options_t opts;
    cli_options_init(&opts);
    publish_batch_t *batch = calloc(1, sizeof *batch);
    if (batch == NULL) {
        cli_say("out of memory");
        return CLI_EXIT_FAILURE;
    }
    batch->timeout_ms = PUBLISH_DEFAULT_TIMEOUT_MS;
    int from_stdin = 0;
    int rc = publish_parse(argc, argv, &opts, batch, &from_stdin);
    if (rc == -1) {
        rc = CLI_EXIT_OK; /* --help */
    } else if (rc == 0 && from_stdin) {
        rc = publish_read_stdin(batch);
    } else if (rc == 0) {
        batch->n = 1;
        if (batch->n_to > 0) {
            batch->signals[0].recipients = batch->to;
            batch->signals[0].n_recipients = batch->n_to;
        }
    }
    if (rc == 0 && !opts.help)
        rc = publish_send(&opts, batch);
    publish_batch_free(batch);
    return rc;
}
