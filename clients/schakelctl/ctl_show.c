/*
 * ctl_show.c — `schakelctl status`, `partners`, `rules` and `reload`: ask
 * the broker's admin endpoint and print its answer as a human table, or
 * with --json as the broker's JSON document.
 *
 * Trusts the broker's answer for its values, not its shape: a member that
 * is missing or of the wrong type prints as "-". Text from the answer goes
 * through ctl_put_safe before it reaches a terminal.
 */
#include "ctl.h"

#include <limits.h>
#include <getopt.h>
#include <string.h>

#include "audit_cmd.h"
#include "plural.h"

typedef int (*ctl_print_fn)(const json_t *doc);

static int ctl_show_status(const json_t *doc);
static int ctl_show_partners(const json_t *doc);
static int ctl_show_rules(const json_t *doc);
static int ctl_show_reload(const json_t *doc);

/* The export is a JSON document by nature: printed as it came. */
static int ctl_show_export(const json_t *doc)
{
    return ctl_print_json(doc) == 0 ? CTL_EXIT_OK : CTL_EXIT_FAILURE;
}

static const struct {
    const char *command; /* the admin request's */
    const char *name;    /* as typed after "schakelctl" */
    const char *summary;
    ctl_print_fn print;
    const char *operand; /* the one argument it takes, or NULL for none */
} ctl_show_commands[] = {
    {"status", "status",
     "uptime, version, policy, connections, message counters, backlog, store size", ctl_show_status,
     NULL},
    {"partners", "partners", "per partner and principal: connected, last seen, backlog, refusals",
     ctl_show_partners, NULL},
    {"rules", "rules", "the rules in force: ids, hashes, scope, purposes, legal bases, retention",
     ctl_show_rules, NULL},
    {"reload", "reload",
     "reload the broker's policy file now (as SIGHUP does) and report the outcome", ctl_show_reload,
     NULL},
    {"audit-subject", "audit subject",
     "everything the audit trail holds about one data subject (PSEUDONYM), as JSON; the broker "
     "records the export itself in the trail",
     ctl_show_export, "PSEUDONYM"},
};

static void ctl_show_usage(const char *name, const char *operand, const char *summary)
{
    printf("usage: schakelctl %s%s%s [OPTIONS]\n\n%s.\n\n" CTL_COMMON_HELP, name,
           operand != NULL ? " " : "", operand != NULL ? operand : "", summary);
    if (operand != NULL)
        printf("\nOptions may stand before or after the %s. A %s that begins with a\n"
               "single '-' is taken as it is; one that begins with '--' follows '--'.\n",
               operand, operand);
}

/* "label       value" with the value made safe. */
static void ctl_row(const char *label, const char *value)
{
    printf("%-13s ", label);
    ctl_put_safe(stdout, value);
    putchar('\n');
}

/* ------------------------------------------------------------------ status */

/* The room the store has left, against its floor and the partners'
 * share (store_min_free_bytes, max_stored_bytes_per_partner). */
static void ctl_status_room(const json_t *store)
{
    char text[200], free_text[32], floor[32], share[32];
    long long free_bytes = ctl_json_int(store, "free_bytes", -1);
    ctl_format_bytes(ctl_json_int(store, "min_free_bytes", 0), floor, sizeof floor);
    ctl_format_bytes(ctl_json_int(store, "max_stored_bytes_per_partner", 0), share, sizeof share);
    if (free_bytes < 0)
        snprintf(text, sizeof text, "not measured yet (floor %s)", floor);
    else {
        ctl_format_bytes(free_bytes, free_text, sizeof free_text);
        snprintf(text, sizeof text, "%s free (floor %s)%s", free_text, floor,
                 ctl_json_bool(store, "below_floor")
                     ? ": BELOW THE FLOOR, publishes and new case content are refused"
                     : "");
    }
    ctl_row("room", text);
    snprintf(text, sizeof text, "%s of items each (schakelctl partners: STORED)", share);
    ctl_row("partner share", text);
}

/* The last reload, and whether the broker's files would start it. */
static void ctl_status_reload(const json_t *doc)
{
    char text[1200], when[40];
    const json_t *reload = json_object_get(doc, "last_reload");
    if (json_is_object(reload)) {
        ctl_format_time(ctl_json_int(reload, "at", 0), when, sizeof when);
        if (ctl_json_bool(reload, "failed"))
            snprintf(text, sizeof text, "%s by %s: REFUSED, the policy in force is older: %s", when,
                     ctl_json_string(reload, "by", "-"), ctl_json_string(reload, "error", "-"));
        else
            snprintf(text, sizeof text, "%s by %s: taken", when,
                     ctl_json_string(reload, "by", "-"));
        ctl_row("last reload", text);
    } else if (json_is_null(reload)) {
        ctl_row("last reload", "none since the start");
    }
    const json_t *start = json_object_get(doc, "next_start");
    if (json_is_object(start) && ctl_json_bool(start, "fails")) {
        snprintf(text, sizeof text, "WOULD FAIL (found at the last reload): %s",
                 ctl_json_string(start, "error", "-"));
        ctl_row("next start", text);
    } else if (json_is_object(start)) {
        ctl_row("next start", "ok: the config and policy load (as found at the last reload)");
    }
    const char *next_policy = json_is_object(start) ? ctl_json_string(start, "policy", NULL) : NULL;
    if (next_policy != NULL) {
        snprintf(text, sizeof text,
                 "%s, named by the config: not the policy in force, which a reload reads "
                 "(restart to take it)",
                 next_policy);
        ctl_row("next policy", text);
    }
}

static int ctl_show_status(const json_t *doc)
{
    char text[512], when[40], span[40], size[40], db[40], wal[40];
    const json_t *policy = json_object_get(doc, "policy");
    const json_t *messages = json_object_get(doc, "messages");
    const json_t *auth = json_object_get(doc, "handshakes");
    const json_t *store = json_object_get(doc, "store");
    long long migrated_from = ctl_json_int(store, "migrated_from", 0);
    snprintf(text, sizeof text, "%s (protocol %lld, store schema %lld)",
             ctl_json_string(doc, "version", "-"), ctl_json_int(doc, "protocol", 0),
             ctl_json_int(store, "schema", 0));
    ctl_row("version", text);
    if (migrated_from > 0) {
        snprintf(text, sizeof text, "store migrated from schema %lld at this start", migrated_from);
        ctl_row("", text);
    }
    ctl_format_duration(ctl_json_int(doc, "uptime_s", 0), span, sizeof span);
    ctl_format_time(ctl_json_int(doc, "started_at", 0), when, sizeof when);
    snprintf(text, sizeof text, "%s (since %s)", span, when);
    ctl_row("uptime", text);
    snprintf(text, sizeof text, "%s (admin %s)", ctl_json_string(doc, "endpoint", "-"),
             ctl_json_string(doc, "admin_endpoint", "-"));
    ctl_row("endpoint", text);
    ctl_format_time(ctl_json_int(policy, "loaded_at", 0), when, sizeof when);
    snprintf(text, sizeof text, "%s (%s, loaded %s)", ctl_json_string(policy, "hash", "-"),
             ctl_json_string(policy, "path", "-"), when);
    ctl_row("policy", text);
    long long partners = ctl_json_int(policy, "partners", 0),
              principals = ctl_json_int(policy, "principals", 0),
              rules = ctl_json_int(policy, "rules", 0);
    snprintf(text, sizeof text, "%lld %s, %lld %s, %lld %s", partners,
             plural(partners, "partner", "partners"), principals,
             plural(principals, "principal", "principals"), rules, plural(rules, "rule", "rules"));
    ctl_row("", text);
    ctl_status_reload(doc);
    long long connected = ctl_json_int(doc, "connected_principals", 0),
              connections = ctl_json_int(doc, "connections", 0);
    snprintf(text, sizeof text, "%lld %s, %lld %s", connected,
             plural(connected, "principal", "principals"), connections,
             plural(connections, "connection", "connections"));
    ctl_row("connected", text);
    snprintf(text, sizeof text,
             "accepted %lld, refused %lld, delivered %lld, acked %lld, "
             "duplicates %lld",
             ctl_json_int(messages, "accepted", 0), ctl_json_int(messages, "refused", 0),
             ctl_json_int(messages, "delivered", 0), ctl_json_int(messages, "acked", 0),
             ctl_json_int(messages, "duplicates", 0));
    ctl_row("messages", text);
    snprintf(text, sizeof text, "admitted %lld, refused %lld", ctl_json_int(auth, "admitted", 0),
             ctl_json_int(auth, "refused", 0));
    ctl_row("handshakes", text);
    long long backlog = ctl_json_int(doc, "backlog", -1);
    if (backlog >= 0)
        snprintf(text, sizeof text, "%lld %s waiting", backlog,
                 plural(backlog, "delivery", "deliveries"));
    else
        snprintf(text, sizeof text, "unknown (%s)", ctl_json_string(store, "error", "-"));
    ctl_row("backlog", text);
    ctl_format_bytes(ctl_json_int(store, "bytes", 0), size, sizeof size);
    ctl_format_bytes(ctl_json_int(store, "db_bytes", 0), db, sizeof db);
    ctl_format_bytes(ctl_json_int(store, "wal_bytes", 0), wal, sizeof wal);
    snprintf(text, sizeof text, "%s (database %s, WAL %s) %s", size, db, wal,
             ctl_json_string(store, "path", "-"));
    ctl_row("store", text);
    ctl_status_room(store);
    const json_t *audit = json_object_get(doc, "audit");
    if (json_is_object(audit)) {
        ctl_format_time(ctl_json_int(audit, "last_checkpoint_at", 0), when, sizeof when);
        long long entries = ctl_json_int(audit, "entries", 0);
        snprintf(text, sizeof text, "%lld %s; last checkpoint at entry %lld (%s)", entries,
                 plural(entries, "entry", "entries"), ctl_json_int(audit, "last_checkpoint_seq", 0),
                 when);
        ctl_row("audit trail", text);
    }
    return CTL_EXIT_OK;
}

/* ------------------------------------------------------------------ partners */

static void ctl_partner_row(const json_t *row, const char *indent, const char *role)
{
    char name[200], when[40], backlog[24], connected[24];
    snprintf(name, sizeof name, "%s%s", indent, ctl_json_string(row, "id", "-"));
    ctl_format_time(ctl_json_int(row, "last_seen", 0), when, sizeof when);
    long long waiting = ctl_json_int(row, "backlog", -1);
    if (waiting >= 0)
        snprintf(backlog, sizeof backlog, "%lld", waiting);
    else
        snprintf(backlog, sizeof backlog, "?");
    snprintf(connected, sizeof connected, "%s%s", ctl_json_bool(row, "connected") ? "yes" : "no",
             ctl_json_bool(row, "receiving") ? " (recv)" : "");
    size_t width = strlen(name);
    ctl_put_safe(stdout, name);
    printf("%*s", width < 34 ? (int)(34 - width) : 1, "");
    printf("%-11s %-11s %-20s %8s %9lld", role, connected, when, backlog,
           ctl_json_int(row, "refusals", 0));
    long long stored = ctl_json_int(row, "stored_bytes", -1);
    char bytes[32];
    if (stored >= 0) { /* a partner's row; its principals share its count */
        ctl_format_bytes(stored, bytes, sizeof bytes);
        printf(" %10s", bytes);
    }
    putchar('\n');
}

static int ctl_show_partners(const json_t *doc)
{
    const json_t *partners = json_object_get(doc, "partners");
    size_t i, k;
    const json_t *partner, *principal;
    printf("%-34s%-11s %-11s %-20s %8s %9s %10s\n", "PARTNER / PRINCIPAL", "ROLE", "CONNECTED",
           "LAST SEEN", "BACKLOG", "REFUSALS", "STORED");
    json_array_foreach(partners, i, partner)
    {
        ctl_partner_row(partner, "", "");
        json_array_foreach(json_object_get(partner, "principals"), k, principal)
            ctl_partner_row(principal, "  ", ctl_json_string(principal, "role", "-"));
    }
    return CTL_EXIT_OK;
}

/* ------------------------------------------------------------------ rules */

/* The strings of a JSON array joined with ", " (made safe when printed). */
static void ctl_put_list(const json_t *array)
{
    size_t i;
    const json_t *item;
    json_array_foreach(array, i, item)
    {
        if (i > 0)
            fputs(", ", stdout);
        ctl_put_safe(stdout, json_string_value(item));
    }
    if (json_array_size(array) == 0)
        fputs("-", stdout);
}

static void ctl_rule_side(const json_t *rule, const char *partners, const char *roles)
{
    ctl_put_list(json_object_get(rule, partners));
    fputs(" (", stdout);
    ctl_put_list(json_object_get(rule, roles));
    fputs(")", stdout);
}

static void ctl_rule_detail(const char *label, const char *text)
{
    printf("    %-12s ", label);
    ctl_put_safe(stdout, text);
    putchar('\n');
}

static int ctl_show_rules(const json_t *doc)
{
    const json_t *rules = json_object_get(doc, "rules"), *rule;
    size_t i;
    printf("policy %s: %zu %s\n", ctl_json_string(doc, "policy_hash", "-"), json_array_size(rules),
           plural(json_array_size(rules), "rule", "rules"));
    json_array_foreach(rules, i, rule)
    {
        char hash[13];
        snprintf(hash, sizeof hash, "%s", ctl_json_string(rule, "hash", "-"));
        putchar('\n');
        ctl_put_safe(stdout, ctl_json_string(rule, "id", "-"));
        printf("  hash %s  line %lld  retention %s%s\n", hash, ctl_json_int(rule, "line", 0),
               ctl_json_string(rule, "retention", "-"),
               ctl_json_bool(rule, "require_case_ref") ? "  requires case_ref" : "");
        printf("    %-12s ", "from");
        ctl_rule_side(rule, "from", "from_roles");
        printf("\n    %-12s ", "to");
        ctl_rule_side(rule, "to", "to_roles");
        const char *lists[][2] = {
            {"kinds", "kinds"}, {"themes", "themes"}, {"areas", "areas"}, {"fields", "fields"}};
        for (size_t l = 0; l < sizeof lists / sizeof lists[0]; l++) {
            printf("\n    %-12s ", lists[l][0]);
            ctl_put_list(json_object_get(rule, lists[l][1]));
        }
        putchar('\n');
        ctl_rule_detail("purpose", ctl_json_string(rule, "purpose", "-"));
        ctl_rule_detail("legal basis", ctl_json_string(rule, "legal_basis", "-"));
    }
    return CTL_EXIT_OK;
}

/* ------------------------------------------------------------------ reload */

/* "schakelctl: warning: TEXT" on stderr, TEXT made safe. */
static void ctl_warn(const char *text)
{
    fputs("schakelctl: warning: ", stderr);
    ctl_put_safe(stderr, text);
    fputc('\n', stderr);
}

/* The broker's files on disk would not start it (a reload's answer). */
static void ctl_warn_next_start(const json_t *doc)
{
    const char *error = ctl_json_string(doc, "next_start_error", NULL);
    const char *next_policy = ctl_json_string(doc, "next_start_policy", NULL);
    char text[PATH_MAX * 2 + 300];
    if (next_policy != NULL) {
        snprintf(text, sizeof text,
                 "the config now names another policy file, %s: the broker's next start loads "
                 "it, not %s, which this reload read (a reload reads only the file the broker "
                 "started with; restart to take the other)",
                 next_policy, ctl_json_string(doc, "policy", "-"));
        ctl_warn(text);
    }
    if (error == NULL)
        return;
    snprintf(text, sizeof text,
             "the broker's next start (a restart, the watchdog, a reboot) would fail: %s", error);
    ctl_warn(text);
}

/* The new policy's warnings (rules that never decide, ...) as the
 * reload's answer lists them, and how many it left out. */
static void ctl_warn_policy(const json_t *doc)
{
    const json_t *list = json_object_get(doc, "warnings");
    size_t shown = json_is_array(list) ? json_array_size(list) : 0;
    for (size_t i = 0; i < shown; i++)
        if (json_is_string(json_array_get(list, i)))
            ctl_warn(json_string_value(json_array_get(list, i)));
    long long total = ctl_json_int(doc, "warnings_total", 0);
    if (total > (long long)shown) {
        char text[200];
        snprintf(text, sizeof text,
                 "%lld more %s about the policy: schakelctl policy check FILE lists every "
                 "one",
                 total - (long long)shown, plural(total - (long long)shown, "warning", "warnings"));
        ctl_warn(text);
    }
}

static int ctl_show_reload(const json_t *doc)
{
    long long operators = ctl_json_int(doc, "operators", -1);
    long long unreachable = ctl_json_int(doc, "cases_unreachable", -1);
    long long dropped = ctl_json_int(doc, "sessions_dropped", 0);
    printf("reloaded %s: policy %s -> %s%s; %lld %s dropped; %lld %s\n",
           ctl_json_string(doc, "policy", "-"), ctl_json_string(doc, "old_hash", "-"),
           ctl_json_string(doc, "new_hash", "-"),
           ctl_json_bool(doc, "changed") ? "" : " (unchanged)", dropped,
           plural(dropped, "connection", "connections"), operators,
           plural(operators, "operator", "operators"));
    if (ctl_json_bool(doc, "removed_self"))
        ctl_warn(operators > 0 ? "this reload removed your own operator key: the broker refuses "
                                 "your next request; another operator's key still works"
                               : "this reload removed your own operator key, and no operator "
                                 "is left: only SIGHUP (systemctl reload schakeld) reloads now");
    else if (operators == 0)
        ctl_warn("no operator is left: only SIGHUP (systemctl reload schakeld) reloads now");
    if (unreachable > 0) {
        char text[200];
        snprintf(text, sizeof text,
                 "%lld open %s can no longer be seen or closed under this policy "
                 "(cases.unreachable in the broker's log names the case types and leads)",
                 unreachable, plural(unreachable, "case", "cases"));
        ctl_warn(text);
    }
    ctl_warn_policy(doc);
    ctl_warn_next_start(doc);
    return CTL_EXIT_OK;
}

/* ------------------------------------------------------------------ dispatch */

/* The broker refused the command (reload of a bad policy, ...); name is
 * the command as typed. */
static int ctl_show_failed(const char *name, const ctl_answer_t *answer, int json)
{
    ctl_say("%s failed: %s", name, answer->error ? answer->error : "no reason given");
    const char *kept = ctl_json_string(answer->json, "kept_hash", NULL);
    if (kept != NULL)
        ctl_say("the policy in force stays: %s", kept);
    ctl_warn_next_start(answer->json);
    if (json && answer->json != NULL) {
        json_t *copy = json_deep_copy(answer->json);
        if (copy != NULL &&
            json_object_set_new(copy, "error", json_string(answer->error ? answer->error : "")) ==
                0)
            ctl_print_json(copy);
        json_decref(copy);
    }
    return CTL_EXIT_FAILURE;
}

/* One argument that is not an option: the first two are kept. */
static void ctl_show_operand(const char *arg, const char *first[2], int *given)
{
    if (*given < 2)
        first[*given] = arg;
    ++*given;
}

/* The arguments that are not options, checked against what the command
 * takes. Returns 0 with *operand set (NULL for a command without one), or
 * a usage exit. */
static int ctl_show_operands(size_t which, const char *first[2], int given, const char **operand)
{
    const char *name = ctl_show_commands[which].name;
    const char *wanted = ctl_show_commands[which].operand;
    if (wanted == NULL && given > 0)
        return ctl_usage_error(name, "%s takes no arguments ('%s')", name, first[0]);
    if (wanted != NULL && given == 0)
        return ctl_usage_error(name, "%s needs a %s", name, wanted);
    if (given > 1)
        return ctl_usage_error(name, "unexpected argument '%s'", first[1]);
    *operand = first[0];
    return CTL_EXIT_OK;
}

/* Options and the command's operand, in any order. The optstring's '-'
 * hands getopt_long's arguments over in the order given, each operand as
 * 1, whatever POSIXLY_CORRECT says (without it getopt would stop at the
 * first operand there, and refuse `audit subject P --admin EP`). Where the
 * PSEUDONYM is due, an argument that begins with a single '-' is it, as
 * offline (audit_cmd_dash_pseudonym); after "--" every argument is an
 * operand. Returns 0, or a usage exit. */
static int ctl_show_args(size_t which, int argc, char **argv, ctl_options_t *opts,
                         const char **operand)
{
    static const struct option options[] = {CTL_COMMON_LONG_OPTIONS, {NULL, 0, NULL, 0}};
    const char *first[2] = {NULL, NULL};
    int option, given = 0;
    opterr = 0; /* its '?' and ':' are told apart by ctl_option_error */
    for (;;) {
        if (ctl_show_commands[which].operand != NULL && given == 0 && optind < argc &&
            audit_cmd_dash_pseudonym(argv[optind])) {
            ctl_show_operand(argv[optind++], first, &given);
            continue;
        }
        option = getopt_long(argc, argv, "-:", options, NULL);
        if (option == -1)
            break;
        if (option == 1) {
            ctl_show_operand(optarg, first, &given);
            continue;
        }
        int rc = ctl_common_option(opts, option, optarg);
        if (rc < 0)
            return CTL_EXIT_USAGE;
        if (rc == 0)
            return ctl_option_error(ctl_show_commands[which].name, option, options, argc, argv);
    }
    for (; optind < argc; optind++) /* after "--" */
        ctl_show_operand(argv[optind], first, &given);
    if (opts->help)
        return CTL_EXIT_OK;
    return ctl_show_operands(which, first, given, operand);
}

int ctl_show_main(int argc, char **argv)
{
    size_t which = 0;
    while (strcmp(ctl_show_commands[which].command, argv[0]) != 0)
        which++;
    const char *command = ctl_show_commands[which].command;
    const char *name = ctl_show_commands[which].name;
    const char *operand = NULL;
    ctl_options_t opts;
    ctl_options_init(&opts);
    int rc = ctl_show_args(which, argc, argv, &opts, &operand);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (opts.help) {
        ctl_show_usage(name, ctl_show_commands[which].operand, ctl_show_commands[which].summary);
        return CTL_EXIT_OK;
    }
    /* The broker reads an export in steps between its other work: a large
     * subject's takes longer than any other answer. */
    if (strcmp(command, "audit-subject") == 0 && !opts.timeout_given)
        opts.timeout_ms = CTL_EXPORT_TIMEOUT_MS;
    ctl_conn_t *conn = NULL;
    rc = ctl_conn_open(&opts, &conn);
    if (rc != CTL_EXIT_OK)
        return rc;
    ctl_answer_t answer;
    rc = ctl_conn_request(conn, command, &operand, operand != NULL ? 1 : 0, opts.timeout_ms,
                          &answer);
    ctl_conn_close(&conn);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (!answer.ok)
        rc = ctl_show_failed(name, &answer, opts.json);
    else if (answer.json == NULL || !json_is_object(answer.json)) {
        ctl_say("the broker answered '%s' without a JSON object", name);
        rc = CTL_EXIT_FAILURE;
    } else if (opts.json)
        rc = ctl_print_json(answer.json) == 0 ? CTL_EXIT_OK : CTL_EXIT_FAILURE;
    else
        rc = ctl_show_commands[which].print(answer.json);
    ctl_answer_free(&answer);
    if (rc == CTL_EXIT_OK && fflush(stdout) != 0)
        rc = CTL_EXIT_FAILURE;
    return rc;
}
