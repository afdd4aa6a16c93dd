/*
 * ctl_policy.c — `schakelctl policy check FILE` and `schakelctl policy
 * explain`: for the people who write policies, without a broker.
 *
 * Both load the policy with the broker's own loader (policy_load: the same
 * validation, the same file:line errors) and explain uses the broker's own
 * decision (policy_decide_signal), so what they say is what schakeld would
 * do with that file. Trusts nothing on the command line: ids, themes and
 * area codes are checked as the broker checks a signal's.
 */
#include "ctl.h"

#include <getopt.h>
#include <string.h>

#include "admin.h"
#include "policy.h"
#include "plural.h"
#include "syntax.h"

#define CTL_EXPLAIN_MAX_TO 64

static const char ctl_check_usage[] =
    "usage: schakelctl policy check FILE [--strict] [--json]\n"
    "\n"
    "Load and validate a policy file as schakeld would (key files included),\n"
    "without a broker. Prints FILE:LINE: message for the first error and\n"
    "exits 1; exits 0 when the policy is valid. Warnings (FILE:LINE: warning:\n"
    "a rule that never decides for a partner, an on_behalf entry never used)\n"
    "go to stderr and leave the exit status 0; with --strict they exit 1.\n";

static const char ctl_explain_usage[] =
    "usage: schakelctl policy explain --policy FILE --from PRINCIPAL|PARTNER\n"
    "                                 --kind KIND --theme THEME --area AREA\n"
    "                                 [--to PARTNER|PRINCIPAL]... [--case-ref] [--json]\n"
    "\n"
    "Which rule of the policy FILE would decide about such a signal, and what\n"
    "a recipient would see (the fields that pass), or why it would be refused.\n"
    "--from names a principal, or a partner (then each of its principals).\n"
    "Without --to, every partner is tried. --case-ref: the signal cites a case.\n"
    "Exit 0: delivered (to every --to, or to some partner without --to);\n"
    "1: refused; 2: usage.\n";

/* ------------------------------------------------------------------ check */

/* The line a warning is about: its rule's, or its case type's. */
static unsigned ctl_warning_line(const policy_warning_t *w)
{
    if (w->rule != NULL)
        return w->rule->line;
    return w->case_type != NULL ? w->case_type->line : 0;
}

/* Every warning as FILE:LINE: warning: TEXT on stderr, TEXT made safe. */
static void ctl_check_warnings_print(const policy_t *policy, const char *file)
{
    for (size_t i = 0; i < policy_warning_count(policy); i++) {
        policy_warning_t w;
        char text[SCHAKEL_POLICY_WARNING_LEN];
        if (policy_warning_at(policy, i, &w) != 0)
            continue;
        policy_warning_format(policy, i, text, sizeof text);
        fprintf(stderr, "%s:%u: warning: ", file, ctl_warning_line(&w));
        ctl_put_safe(stderr, text);
        fputc('\n', stderr);
    }
}

static const char *ctl_warning_kind(policy_warning_kind_t kind)
{
    switch (kind) {
    case POLICY_WARNING_RULE_SHADOWED:
        return "rule_shadowed";
    case POLICY_WARNING_RULE_NEVER_APPLIES:
        return "rule_never_applies";
    case POLICY_WARNING_ON_BEHALF_UNUSED:
        return "on_behalf_unused";
    case POLICY_WARNING_CHECK_STOPPED:
        return "check_stopped";
    case POLICY_WARNING_NONE:
        break;
    }
    return "unknown";
}

static json_t *ctl_partners_json(const policy_t *policy, uint64_t partners)
{
    json_t *list = json_array();
    for (uint64_t m = partners; m && list != NULL; m &= m - 1)
        json_array_append_new(
            list, json_string(policy_partner_at(policy, (size_t)__builtin_ctzll(m))->id));
    return list;
}

/* The warnings as --json lists them: kind, line, message, and for a rule
 * that never decides, its partners and the earlier rules deciding first. */
static json_t *ctl_check_warnings_json(const policy_t *policy)
{
    json_t *list = json_array();
    for (size_t i = 0; i < policy_warning_count(policy) && list != NULL; i++) {
        policy_warning_t w;
        char text[SCHAKEL_POLICY_WARNING_LEN];
        if (policy_warning_at(policy, i, &w) != 0)
            continue;
        policy_warning_format(policy, i, text, sizeof text);
        json_t *item = json_pack("{s:s, s:I, s:s}", "kind", ctl_warning_kind(w.kind), "line",
                                 (json_int_t)ctl_warning_line(&w), "message", text);
        if (item == NULL)
            continue;
        if (w.rule != NULL)
            json_object_set_new(item, "rule", json_string(w.rule->id));
        if (w.case_type != NULL)
            json_object_set_new(item, "case_type", json_string(w.case_type->id));
        if (w.principal != NULL)
            json_object_set_new(item, "principal", json_string(w.principal->id));
        if (w.n_by > 0) {
            json_object_set_new(item, "partners", ctl_partners_json(policy, w.partners));
            json_t *by = json_array();
            uint64_t partners;
            const policy_rule_t *earlier;
            for (size_t j = 0;
                 (earlier = policy_warning_by(policy, i, j, &partners)) != NULL && by != NULL; j++)
                json_array_append_new(by, json_pack("{s:s, s:I, s:o}", "rule", earlier->id, "line",
                                                    (json_int_t)earlier->line, "partners",
                                                    ctl_partners_json(policy, partners)));
            json_object_set_new(item, "decided_by", by);
        }
        json_array_append_new(list, item);
    }
    return list;
}

/* `policy check FILE [--json]`: options before or after FILE. The
 * optstring's '-' hands getopt_long's arguments over in the order given,
 * FILE as 1, whatever POSIXLY_CORRECT says (without it getopt would stop
 * at FILE there, and refuse `policy check FILE --json`); after "--" every
 * argument is a FILE. */
static int ctl_policy_check(int argc, char **argv)
{
    enum { OPT_STRICT = CTL_OPT_FIRST_OWN };
    static const struct option options[] = {{"json", 0, NULL, CTL_OPT_JSON},
                                            {"strict", 0, NULL, OPT_STRICT},
                                            {"help", 0, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    int json = 0, strict = 0, files = 0;
    const char *file = NULL;
    int option;
    opterr = 0; /* its '?' and ':' are told apart by ctl_option_error */
    optind = 2; /* after "policy check" */
    while ((option = getopt_long(argc, argv, "-:h", options, NULL)) != -1) {
        if (option == 'h') {
            fputs(ctl_check_usage, stdout);
            return CTL_EXIT_OK;
        }
        if (option == 1 && files++ == 0)
            file = optarg;
        else if (option == CTL_OPT_JSON)
            json = 1;
        else if (option == OPT_STRICT)
            strict = 1;
        else if (option != 1)
            return ctl_option_error("policy check", option, options, argc, argv);
    }
    for (; optind < argc; optind++) /* after "--" */
        if (files++ == 0)
            file = argv[optind];
    if (files == 0)
        return ctl_usage_error("policy check", "policy check needs a FILE");
    if (files != 1)
        return ctl_usage_error("policy check", "policy check takes one FILE");
    char err[1024] = "";
    policy_t *policy = policy_load(file, err, sizeof err);
    size_t warnings = policy_warning_count(policy);
    if (json) {
        json_t *out = policy != NULL
                          ? json_pack("{s:s, s:b, s:s, s:I, s:I, s:I, s:o}", "file", file, "ok", 1,
                                      "hash", policy_hash_hex(policy), "partners",
                                      (json_int_t)policy_partner_count(policy), "principals",
                                      (json_int_t)policy_principal_count(policy), "rules",
                                      (json_int_t)policy_rule_count(policy), "warnings",
                                      ctl_check_warnings_json(policy))
                          : json_pack("{s:s, s:b, s:s}", "file", file, "ok", 0, "error", err);
        if (out == NULL || ctl_print_json(out) != 0)
            ctl_say("cannot write the result");
        json_decref(out);
    } else if (policy != NULL) {
        size_t partners = policy_partner_count(policy), principals = policy_principal_count(policy),
               rules = policy_rule_count(policy);
        printf("%s: valid: %zu %s, %zu %s, %zu %s; policy hash %s\n", file, partners,
               plural(partners, "partner", "partners"), principals,
               plural(principals, "principal", "principals"), rules, plural(rules, "rule", "rules"),
               policy_hash_hex(policy));
        ctl_check_warnings_print(policy, file);
    } else {
        fputs(err, stderr);
        fputc('\n', stderr);
    }
    int rc = policy == NULL || (strict && warnings > 0) ? CTL_EXIT_FAILURE : CTL_EXIT_OK;
    policy_destroy(&policy);
    return rc;
}

/* ------------------------------------------------------------------ explain */

typedef struct ctl_explain {
    const char *policy_file;
    const char *from;
    const char *to[CTL_EXPLAIN_MAX_TO];
    size_t n_to;
    const char *kind, *theme, *area;
    int case_ref;
    int json;
    int help;
} ctl_explain_t;

enum {
    OPT_POLICY = CTL_OPT_FIRST_OWN,
    OPT_FROM,
    OPT_TO,
    OPT_KIND,
    OPT_THEME,
    OPT_AREA,
    OPT_CASE_REF,
    OPT_JSON,
    OPT_HELP
};

static int ctl_explain_args(int argc, char **argv, ctl_explain_t *e)
{
    static const struct option options[] = {{"policy", 1, NULL, OPT_POLICY},
                                            {"from", 1, NULL, OPT_FROM},
                                            {"to", 1, NULL, OPT_TO},
                                            {"kind", 1, NULL, OPT_KIND},
                                            {"theme", 1, NULL, OPT_THEME},
                                            {"area", 1, NULL, OPT_AREA},
                                            {"case-ref", 0, NULL, OPT_CASE_REF},
                                            {"json", 0, NULL, OPT_JSON},
                                            {"help", 0, NULL, OPT_HELP},
                                            {NULL, 0, NULL, 0}};
    int option;
    opterr = 0; /* its '?' and ':' are told apart by ctl_option_error */
    optind = 2; /* after "policy explain" */
    while ((option = getopt_long(argc, argv, "+:", options, NULL)) != -1) {
        switch (option) {
        case OPT_POLICY:
            e->policy_file = optarg;
            break;
        case OPT_FROM:
            e->from = optarg;
            break;
        case OPT_KIND:
            e->kind = optarg;
            break;
        case OPT_THEME:
            e->theme = optarg;
            break;
        case OPT_AREA:
            e->area = optarg;
            break;
        case OPT_CASE_REF:
            e->case_ref = 1;
            break;
        case OPT_JSON:
            e->json = 1;
            break;
        case OPT_HELP:
            e->help = 1;
            break;
        case OPT_TO:
            if (e->n_to == CTL_EXPLAIN_MAX_TO)
                return ctl_usage_error("policy explain", "at most %d --to", CTL_EXPLAIN_MAX_TO);
            e->to[e->n_to++] = optarg;
            break;
        default:
            return ctl_option_error("policy explain", option, options, argc, argv);
        }
    }
    if (e->help)
        return CTL_EXIT_OK;
    if (optind != argc)
        return ctl_usage_error("policy explain", "unexpected argument '%s'", argv[optind]);
    if (!e->policy_file || !e->from || !e->kind || !e->theme || !e->area)
        return ctl_usage_error("policy explain",
                               "policy explain needs --policy, --from, --kind, --theme, --area");
    /* The broker would refuse such a signal before any rule is looked at. */
    if (!syntax_is_id_token(e->kind))
        return ctl_usage_error("policy explain", "--kind '%s' is not a kind token", e->kind);
    if (!syntax_is_theme(e->theme))
        return ctl_usage_error("policy explain", "--theme '%s' is not a theme of the vocabulary",
                               e->theme);
    if (!syntax_is_area_code(e->area))
        return ctl_usage_error("policy explain",
                               "--area '%s' is not a CBS code (GM0935, WK093501, BU09350101)",
                               e->area);
    return CTL_EXIT_OK;
}

/* One decision: a sender principal and a recipient (partner or principal). */
typedef struct ctl_row {
    const policy_principal_t *sender;
    const char *to; /* as asked */
    int allowed;
    const policy_rule_t *rule;
    const policy_principal_t *reached[SCHAKEL_MAX_PRINCIPALS_PER_PARTNER];
    size_t n_reached;
    char reason[320];
} ctl_row_t;

static void ctl_decide(const policy_t *policy, const ctl_explain_t *e, ctl_row_t *row)
{
    const policy_principal_t *to_principal = policy_principal_by_id(policy, row->to);
    const policy_partner_t *partner =
        to_principal ? to_principal->partner : policy_partner_by_id(policy, row->to);
    if (partner == NULL) {
        snprintf(row->reason, sizeof row->reason,
                 "\"%s\" is neither a partner nor a principal "
                 "of this policy",
                 row->to);
        return;
    }
    const char *recipients[1] = {partner->id};
    policy_signal_facts_t facts = {.kind = e->kind,
                                   .theme = e->theme,
                                   .area = e->area,
                                   .has_case_ref = e->case_ref,
                                   .recipients = recipients,
                                   .n_recipients = 1};
    policy_decision_t decision;
    if (policy_decide_signal(policy, row->sender, &facts, &decision) != VERDICT_ALLOW ||
        decision.n_grants != 1) {
        snprintf(row->reason, sizeof row->reason, "%s", decision.reason);
        return;
    }
    row->rule = decision.grants[0].rule;
    row->n_reached = policy_recipients(policy, row->rule, partner, row->reached,
                                       SCHAKEL_MAX_PRINCIPALS_PER_PARTNER);
    if (to_principal != NULL) {
        int reached = 0;
        for (size_t i = 0; i < row->n_reached; i++)
            reached |= row->reached[i] == to_principal;
        if (!reached) {
            snprintf(row->reason, sizeof row->reason,
                     "rule \"%s\" lets %s send to %s, but not to %s (role %s)", row->rule->id,
                     row->sender->id, partner->id, to_principal->id,
                     policy_role_name(to_principal->role));
            return;
        }
        row->reached[0] = to_principal;
        row->n_reached = 1;
    }
    row->allowed = 1;
}

/* sender, kind, theme always pass; then the rule's fields. */
static json_t *ctl_fields_json(uint32_t mask)
{
    json_t *fields = json_pack("[s, s, s]", "sender", "kind", "theme");
    for (uint32_t bit = 1; fields != NULL && bit != 0; bit <<= 1)
        if ((mask & bit) && policy_field_name(bit) != NULL)
            json_array_append_new(fields, json_string(policy_field_name(bit)));
    return fields;
}

static json_t *ctl_row_json(const ctl_row_t *row)
{
    json_t *out = json_pack("{s:s, s:s, s:s}", "from", row->sender->id, "to", row->to, "verdict",
                            row->allowed ? "allow" : "deny");
    if (out == NULL || !row->allowed) {
        if (out != NULL)
            json_object_set_new(out, "reason", json_string(row->reason));
        return out;
    }
    char retention[32];
    admin_retention_text(row->rule->retention_s, retention, sizeof retention);
    json_t *recipients = json_array();
    for (size_t i = 0; recipients != NULL && i < row->n_reached; i++)
        json_array_append_new(recipients, json_string(row->reached[i]->id));
    json_object_set_new(out, "rule",
                        json_pack("{s:s, s:s, s:I, s:s, s:s, s:s, s:I, s:b}", "id", row->rule->id,
                                  "hash", row->rule->hash_hex, "line", (json_int_t)row->rule->line,
                                  "purpose", row->rule->purpose, "legal_basis",
                                  row->rule->legal_basis, "retention", retention, "retention_s",
                                  (json_int_t)row->rule->retention_s, "require_case_ref",
                                  row->rule->require_case_ref));
    json_object_set_new(out, "fields", ctl_fields_json(row->rule->fields));
    json_object_set_new(out, "recipients", recipients);
    return out;
}

static void ctl_row_print(const ctl_row_t *row)
{
    printf("%s %s -> ", row->allowed ? "ALLOW" : "DENY ", row->sender->id);
    ctl_put_safe(stdout, row->to);
    if (!row->allowed) {
        fputs(": ", stdout);
        ctl_put_safe(stdout, row->reason);
        putchar('\n');
        return;
    }
    char retention[32];
    admin_retention_text(row->rule->retention_s, retention, sizeof retention);
    printf("\n    rule         %s (line %u, hash %s)\n", row->rule->id, row->rule->line,
           row->rule->hash_hex);
    printf("    purpose      ");
    ctl_put_safe(stdout, row->rule->purpose);
    printf("\n    legal basis  ");
    ctl_put_safe(stdout, row->rule->legal_basis);
    printf("\n    retention    %s\n    fields       sender, kind, theme", retention);
    for (uint32_t bit = 1; bit != 0; bit <<= 1)
        if ((row->rule->fields & bit) && policy_field_name(bit) != NULL)
            printf(", %s", policy_field_name(bit));
    printf("\n    recipients   ");
    for (size_t i = 0; i < row->n_reached; i++)
        printf("%s%s", i ? ", " : "", row->reached[i]->id);
    printf("%s\n", row->n_reached ? "" : "-");
}

/* The senders --from names: a principal, or every principal of a partner
 * that may send at all (its operators only when it has nobody else, so
 * that the answer says why operators never send). */
static size_t ctl_senders(const policy_t *policy, const char *from, const policy_principal_t **out,
                          size_t max)
{
    const policy_principal_t *one = policy_principal_by_id(policy, from);
    if (one != NULL) {
        out[0] = one;
        return 1;
    }
    size_t n = 0;
    for (int operators = 0; operators < 2 && n == 0; operators++) {
        for (size_t i = 0; i < policy_principal_count(policy) && n < max; i++) {
            const policy_principal_t *p = policy_principal_at(policy, i);
            if (strcmp(p->partner->id, from) == 0 && (p->role == ROLE_OPERATOR) == operators)
                out[n++] = p;
        }
    }
    return n;
}

/* Decide and print every (sender, recipient) row. Returns the exit code. */
static int ctl_explain_rows(const policy_t *policy, const ctl_explain_t *e,
                            const policy_principal_t *const *senders, size_t n_senders)
{
    json_t *decisions = e->json ? json_array() : NULL;
    int every_sender_ok = 1;
    ctl_row_t *row = malloc(sizeof *row);
    if (row == NULL || (e->json && decisions == NULL)) {
        ctl_say("out of memory");
        free(row);
        json_decref(decisions);
        return CTL_EXIT_FAILURE;
    }
    size_t n_to = e->n_to ? e->n_to : policy_partner_count(policy);
    for (size_t s = 0; s < n_senders; s++) {
        size_t allowed = 0;
        for (size_t t = 0; t < n_to; t++) {
            memset(row, 0, sizeof *row);
            row->sender = senders[s];
            row->to = e->n_to ? e->to[t] : policy_partner_at(policy, t)->id;
            ctl_decide(policy, e, row);
            allowed += row->allowed != 0;
            if (e->json)
                json_array_append_new(decisions, ctl_row_json(row));
            else
                ctl_row_print(row);
        }
        /* Named recipients are all or nothing, as in a publish. */
        if (e->n_to ? allowed != n_to : allowed == 0)
            every_sender_ok = 0;
    }
    free(row);
    if (e->json) {
        json_t *out = json_pack("{s:s, s:{s:s, s:s, s:s, s:b}, s:o, s:b}", "policy_hash",
                                policy_hash_hex(policy), "signal", "kind", e->kind, "theme",
                                e->theme, "area", e->area, "case_ref", e->case_ref, "decisions",
                                decisions, "delivered", every_sender_ok);
        if (out == NULL || ctl_print_json(out) != 0)
            ctl_say("cannot write the result");
        json_decref(out);
    }
    return every_sender_ok ? CTL_EXIT_OK : CTL_EXIT_FAILURE;
}

static int ctl_policy_explain(int argc, char **argv)
{
    ctl_explain_t e = {0};
    int rc = ctl_explain_args(argc, argv, &e);
    if (rc != CTL_EXIT_OK || e.help) {
        if (e.help)
            fputs(ctl_explain_usage, stdout);
        return rc;
    }
    char err[1024] = "";
    policy_t *policy = policy_load(e.policy_file, err, sizeof err);
    if (policy == NULL) {
        fprintf(stderr, "%s\n", err);
        return CTL_EXIT_FAILURE;
    }
    static const policy_principal_t *senders[SCHAKEL_MAX_PRINCIPALS_PER_PARTNER];
    size_t n_senders = ctl_senders(policy, e.from, senders, SCHAKEL_MAX_PRINCIPALS_PER_PARTNER);
    if (n_senders == 0)
        rc = ctl_usage_error("policy explain",
                             "--from '%s' is neither a principal nor a partner of %s", e.from,
                             e.policy_file);
    else
        rc = ctl_explain_rows(policy, &e, senders, n_senders);
    policy_destroy(&policy);
    if (rc != CTL_EXIT_USAGE && fflush(stdout) != 0)
        rc = CTL_EXIT_FAILURE;
    return rc;
}

int ctl_policy_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(ctl_check_usage, argc < 2 ? stderr : stdout);
        fputs("\n", argc < 2 ? stderr : stdout);
        fputs(ctl_explain_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CTL_EXIT_USAGE : CTL_EXIT_OK;
    }
    if (strcmp(argv[1], "check") == 0)
        return ctl_policy_check(argc, argv);
    if (strcmp(argv[1], "explain") == 0)
        return ctl_policy_explain(argc, argv);
    return ctl_usage_error("policy", "unknown policy command '%s' (check, explain)", argv[1]);
}
