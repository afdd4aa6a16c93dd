/*
 * ctl_pending.c — `schakelctl pending PRINCIPAL [--after SEQ] [--limit N]`:
 * which deliveries wait for one principal, oldest first, and in what state
 * the broker knows each; a table, or with --json the broker's document.
 *
 * Checks its own options before it asks (the broker checks them again);
 * trusts the broker's answer for its values, not its shape: a member that
 * is missing or of the wrong type prints as "-". Text from the answer goes
 * through ctl_put_safe before it reaches a terminal.
 */
#include "ctl.h"

#include <getopt.h>
#include <inttypes.h>
#include <string.h>

#include "schakel_limits.h"

static const char ctl_pending_summary[] =
    "which deliveries wait in PRINCIPAL's mailbox (and those set aside), oldest first: seq,\n"
    "item seq, kind, sender, message id or case, when queued, when their retention ends, and\n"
    "the state the broker knows each in (waiting, in_flight, expired, revoked, withheld,\n"
    "set_aside). Metadata only: never a signal's or case's content";

static void ctl_pending_usage(void)
{
    printf("usage: schakelctl pending PRINCIPAL [--after SEQ] [--limit N] [OPTIONS]\n\n%s.\n\n"
           "  --after SEQ          list only deliveries with a seq above SEQ (default 0);\n"
           "                       a page's next_after is the next page's SEQ\n"
           "  --limit N            at most N deliveries, 1 to %u (default %u)\n" CTL_COMMON_HELP,
           ctl_pending_summary, SCHAKEL_ADMIN_PENDING_MAX_LIMIT, SCHAKEL_ADMIN_PENDING_LIMIT);
}

/* The request's arguments: PRINCIPAL, then after= and limit= as given. */
typedef struct ctl_pending_args {
    const char *principal;
    char after[32]; /* "after=SEQ", or "" */
    char limit[32]; /* "limit=N", or "" */
} ctl_pending_args_t;

/* A whole number within [min, max] into "name=VALUE"; a usage exit if not. */
static int ctl_pending_number(const char *option, const char *name, const char *arg, long long min,
                              long long max, char *out, size_t outlen)
{
    long long value;
    if (ctl_parse_number(arg, min, max, &value) != 0)
        return ctl_usage_error("pending", "%s wants a whole number from %lld to %lld, not '%s'",
                               option, min, max, arg);
    snprintf(out, outlen, "%s=%lld", name, value);
    return CTL_EXIT_OK;
}

/* Options and PRINCIPAL, in any order (the optstring's '-' hands them over
 * in the order given, PRINCIPAL as 1); after "--" every argument is an
 * operand. Returns 0, or a usage exit. */
static int ctl_pending_parse(int argc, char **argv, ctl_options_t *opts, ctl_pending_args_t *args)
{
    enum { OPT_AFTER = CTL_OPT_FIRST_OWN, OPT_LIMIT };
    static const struct option options[] = {CTL_COMMON_LONG_OPTIONS,
                                            {"after", 1, NULL, OPT_AFTER},
                                            {"limit", 1, NULL, OPT_LIMIT},
                                            {NULL, 0, NULL, 0}};
    const char *operands[2] = {NULL, NULL};
    int given = 0, option, rc;
    opterr = 0; /* its '?' and ':' are told apart by ctl_option_error */
    while ((option = getopt_long(argc, argv, "-:", options, NULL)) != -1) {
        if (option == 1) {
            if (given < 2)
                operands[given] = optarg;
            given++;
        } else if (option == OPT_AFTER) {
            rc = ctl_pending_number("--after", "after", optarg, 0, INT64_MAX, args->after,
                                    sizeof args->after);
            if (rc != CTL_EXIT_OK)
                return rc;
        } else if (option == OPT_LIMIT) {
            rc = ctl_pending_number("--limit", "limit", optarg, 1, SCHAKEL_ADMIN_PENDING_MAX_LIMIT,
                                    args->limit, sizeof args->limit);
            if (rc != CTL_EXIT_OK)
                return rc;
        } else {
            rc = ctl_common_option(opts, option, optarg);
            if (rc < 0)
                return CTL_EXIT_USAGE;
            if (rc == 0)
                return ctl_option_error("pending", option, options, argc, argv);
        }
    }
    for (; optind < argc; optind++) { /* after "--" */
        if (given < 2)
            operands[given] = argv[optind];
        given++;
    }
    if (opts->help)
        return CTL_EXIT_OK;
    if (given == 0)
        return ctl_usage_error("pending", "pending needs a PRINCIPAL (as the policy names it, "
                                          "e.g. politie/bvh-koppeling)");
    if (given > 1)
        return ctl_usage_error("pending", "unexpected argument '%s'", operands[1]);
    args->principal = operands[0];
    return CTL_EXIT_OK;
}

/* "MESSAGE ID/ITEM" of a signal, "CASE event N" of a case event. */
static void ctl_pending_what(const json_t *row, char *out, size_t outlen)
{
    if (strcmp(ctl_json_string(row, "kind", ""), "case_event") == 0) {
        long long event = ctl_json_int(row, "event_seq", -1);
        if (event >= 0)
            snprintf(out, outlen, "%s event %lld", ctl_json_string(row, "case_id", "-"), event);
        else
            snprintf(out, outlen, "%s event -", ctl_json_string(row, "case_id", "-"));
        return;
    }
    long long index = ctl_json_int(row, "item_index", -1);
    if (index >= 0)
        snprintf(out, outlen, "%s/%lld", ctl_json_string(row, "message_id", "-"), index);
    else
        snprintf(out, outlen, "%s/-", ctl_json_string(row, "message_id", "-"));
}

/* One cell: the text made safe, padded to width (at least one space). */
static void ctl_pending_cell(const char *text, size_t width)
{
    size_t len = strlen(text);
    ctl_put_safe(stdout, text);
    printf("%*s", len < width ? (int)(width - len) : 1, "");
}

static void ctl_pending_row(const json_t *row)
{
    char seq[24], item[24], what[160], queued[40], expires[40];
    snprintf(seq, sizeof seq, "%lld", ctl_json_int(row, "seq", 0));
    snprintf(item, sizeof item, "%lld", ctl_json_int(row, "item_seq", 0));
    ctl_pending_what(row, what, sizeof what);
    ctl_format_time(ctl_json_int(row, "queued_at", 0), queued, sizeof queued);
    ctl_format_time(ctl_json_int(row, "expires_at", 0), expires, sizeof expires);
    ctl_pending_cell(seq, 9);
    ctl_pending_cell(item, 9);
    ctl_pending_cell(ctl_json_string(row, "kind", "-"), 11);
    ctl_pending_cell(ctl_json_string(row, "sender", "-"), 28);
    ctl_pending_cell(what, 36);
    ctl_pending_cell(queued, 21);
    ctl_pending_cell(expires, 21);
    ctl_pending_cell(ctl_json_string(row, "state", "-"), 10);
    ctl_put_safe(stdout, ctl_json_string(row, "sent", "-"));
    putchar('\n');
    if (strcmp(ctl_json_string(row, "state", ""), "set_aside") == 0) {
        char when[40];
        ctl_format_time(ctl_json_int(row, "set_aside_at", 0), when, sizeof when);
        printf("         set aside %s: ", when);
        ctl_put_safe(stdout, ctl_json_string(row, "reason", "-"));
        putchar('\n');
    }
}

static int ctl_pending_print(const json_t *doc)
{
    const json_t *rows = json_object_get(doc, "deliveries"), *row;
    size_t i;
    char head[300];
    snprintf(head, sizeof head, "%s (partner %s): %lld pending",
             ctl_json_string(doc, "principal", "-"), ctl_json_string(doc, "partner", "-"),
             ctl_json_int(doc, "pending", -1));
    ctl_put_safe(stdout, head);
    printf("; %zu listed after seq %lld\n", json_array_size(rows), ctl_json_int(doc, "after", 0));
    if (json_array_size(rows) > 0)
        printf("%-9s%-9s%-11s%-28s%-36s%-21s%-21s%-10s%s\n", "SEQ", "ITEM SEQ", "KIND", "SENDER",
               "MESSAGE ID/ITEM or CASE", "QUEUED", "EXPIRES", "STATE", "SENT");
    json_array_foreach(rows, i, row) ctl_pending_row(row);
    long long next = ctl_json_int(doc, "next_after", -1);
    if (next >= 0) {
        char more[200];
        snprintf(more, sizeof more, "more: schakelctl pending %s --after %lld",
                 ctl_json_string(doc, "principal", "-"), next);
        ctl_put_safe(stdout, more);
        putchar('\n');
    }
    return CTL_EXIT_OK;
}

int ctl_pending_main(int argc, char **argv)
{
    ctl_options_t opts;
    ctl_pending_args_t args;
    memset(&args, 0, sizeof args);
    ctl_options_init(&opts);
    int rc = ctl_pending_parse(argc, argv, &opts, &args);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (opts.help) {
        ctl_pending_usage();
        return CTL_EXIT_OK;
    }
    const char *request[3] = {args.principal, NULL, NULL};
    size_t n = 1;
    if (args.after[0] != '\0')
        request[n++] = args.after;
    if (args.limit[0] != '\0')
        request[n++] = args.limit;
    ctl_conn_t *conn = NULL;
    rc = ctl_conn_open(&opts, &conn);
    if (rc != CTL_EXIT_OK)
        return rc;
    ctl_answer_t answer;
    rc = ctl_conn_request(conn, "pending", request, n, opts.timeout_ms, &answer);
    ctl_conn_close(&conn);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (!answer.ok) {
        ctl_say("pending failed: %s", answer.error ? answer.error : "no reason given");
        rc = CTL_EXIT_FAILURE;
    } else if (answer.json == NULL || !json_is_object(answer.json)) {
        ctl_say("the broker answered 'pending' without a JSON object");
        rc = CTL_EXIT_FAILURE;
    } else if (opts.json) {
        rc = ctl_print_json(answer.json) == 0 ? CTL_EXIT_OK : CTL_EXIT_FAILURE;
    } else {
        rc = ctl_pending_print(answer.json);
    }
    ctl_answer_free(&answer);
    if (rc == CTL_EXIT_OK && fflush(stdout) != 0)
        rc = CTL_EXIT_FAILURE;
    return rc;
}
