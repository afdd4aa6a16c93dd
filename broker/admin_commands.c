/*
 * admin_commands.c — what the admin endpoint's status, partners, rules and
 * reload answer (pending: admin_pending.c), each run after its request's
 * record committed, its answer a JSON document (docs/PROTOCOL.md section
 * 11). Trusts the broker's state and the checked request; a command that
 * fails returns -1 with why, answered AdminResponse{ok: false}.
 */
#include "admin.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "admin_internal.h"
#include "admin_pending.h"
#include "log.h"
#include "syntax.h"

/* ------------------------------------------------------------------ status */

/* Wall-clock seconds of a monotonic instant of this turn. */
static int64_t admin_wall_time(const broker_t *b, int64_t monotonic_ms)
{
    return b->now_s - (b->now_ms - monotonic_ms) / 1000;
}

static int64_t admin_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
}

static void admin_status_store(admin_t *admin, broker_t *b, admin_json_t *out)
{
    char wal[4200];
    snprintf(wal, sizeof wal, "%s-wal", admin->store_path);
    int64_t db_bytes = admin_file_size(admin->store_path), wal_bytes = admin_file_size(wal);
    int64_t backlog = store_backlog_total(b->store);
    admin_json_key(out, "backlog");
    if (backlog >= 0)
        admin_json_int(out, backlog);
    else
        admin_json_null(out);
    admin_json_key(out, "store");
    admin_json_object_begin(out);
    admin_json_member_string(out, "path", admin->store_path);
    admin_json_member_int(out, "bytes", db_bytes + wal_bytes);
    admin_json_member_int(out, "db_bytes", db_bytes);
    admin_json_member_int(out, "wal_bytes", wal_bytes);
    /* The floor (space.h): the room last measured, null before the first */
    admin_json_key(out, "free_bytes");
    if (b->space.known)
        admin_json_uint(out, b->space.last.free_bytes);
    else
        admin_json_null(out);
    admin_json_member_uint(out, "min_free_bytes", b->space.min_free);
    admin_json_member_bool(out, "below_floor", b->space.below);
    admin_json_member_uint(out, "max_stored_bytes_per_partner", b->space.max_partner);
    /* the schema it is at, and the one this start migrated it from */
    admin_json_member_int(out, "schema", store_schema_version());
    int64_t migrated_ms = 0;
    int migrated_from = store_migrated_from(b->store, &migrated_ms);
    admin_json_key(out, "migrated_from");
    if (migrated_from > 0)
        admin_json_int(out, migrated_from);
    else
        admin_json_null(out);
    if (backlog < 0)
        admin_json_member_string(out, "error", store_errmsg(b->store));
    admin_json_object_end(out);
}

/* Where the audit trail ends: its last entry and its last signed
 * checkpoint (entries after it are chained but not yet signed). */
static void admin_status_audit(broker_t *b, admin_json_t *out)
{
    store_audit_tail_t tail;
    char hash[2 * STORE_AUDIT_HASH_BYTES + 1];
    admin_json_key(out, "audit");
    if (store_audit_tail(b->store, &tail) != 0) {
        admin_json_null(out);
        return;
    }
    syntax_hex(tail.hash, sizeof tail.hash, hash);
    admin_json_object_begin(out);
    admin_json_member_uint(out, "entries", tail.seq);
    admin_json_member_string(out, "last_hash", tail.seq > 0 ? hash : NULL);
    admin_json_member_uint(out, "last_checkpoint_seq", tail.checkpoint_seq);
    admin_json_key(out, "last_checkpoint_at");
    if (tail.checkpoint_seq > 0)
        admin_json_int(out, tail.checkpoint_at);
    else
        admin_json_null(out);
    admin_json_object_end(out);
}

/* The last reload and whether the files on disk would start the broker
 * (broker.h reload_report_t). */
static void admin_status_reload(const broker_t *b, admin_json_t *out)
{
    admin_json_key(out, "last_reload");
    if (b->reload.at == 0) {
        admin_json_null(out);
    } else {
        admin_json_object_begin(out);
        admin_json_member_int(out, "at", b->reload.at);
        admin_json_member_string(out, "by", b->reload.by);
        admin_json_member_bool(out, "failed", b->reload.failed);
        admin_json_member_string(out, "error", b->reload.failed ? b->reload.error : NULL);
        admin_json_object_end(out);
    }
    admin_json_key(out, "next_start");
    admin_json_object_begin(out);
    admin_json_member_bool(out, "fails", b->reload.start_fails);
    admin_json_member_string(out, "error", b->reload.start_fails ? b->reload.start_error : NULL);
    /* the config names another policy file than the one a reload reads */
    admin_json_member_string(out, "policy",
                             b->reload.next_policy[0] != '\0' ? b->reload.next_policy : NULL);
    admin_json_object_end(out);
}

int admin_status(admin_t *admin, broker_t *b, const admin_request_t *request, admin_json_t *out,
                 char *err, size_t errlen)
{
    (void)request, (void)err, (void)errlen;
    size_t connected = 0;
    for (size_t i = 0; i < policy_principal_count(b->policy); i++) {
        sessions_principal_stats_t stats;
        sessions_principal_stats(b->sessions, policy_principal_at(b->policy, i)->id, &stats);
        connected += stats.sessions > 0;
    }
    zap_counts_t auth = zap_counts(b->zap);
    admin_json_object_begin(out);
    admin_json_member_string(out, "version", SCHAKEL_VERSION);
    admin_json_member_uint(out, "protocol", SCHAKEL_PROTOCOL_VERSION);
    admin_json_member_int(out, "started_at", b->started_at);
    admin_json_member_int(out, "uptime_s", b->now_s - b->started_at);
    admin_json_member_string(out, "endpoint", b->endpoint);
    admin_json_member_string(out, "admin_endpoint", admin->endpoint);
    admin_json_key(out, "policy");
    admin_json_object_begin(out);
    admin_json_member_string(out, "hash", policy_hash_hex(b->policy));
    admin_json_member_string(out, "path", b->policy_path);
    admin_json_member_int(out, "loaded_at", b->policy_loaded_at);
    admin_json_member_uint(out, "partners", policy_partner_count(b->policy));
    admin_json_member_uint(out, "principals", policy_principal_count(b->policy));
    admin_json_member_uint(out, "rules", policy_rule_count(b->policy));
    admin_json_object_end(out);
    admin_json_member_uint(out, "connected_principals", connected);
    admin_json_member_uint(out, "connections", sessions_count(b->sessions));
    admin_json_key(out, "messages");
    admin_json_object_begin(out);
    admin_json_member_uint(out, "accepted", b->stats.accepted);
    admin_json_member_uint(out, "refused", b->stats.refused);
    admin_json_member_uint(out, "delivered", b->stats.delivered);
    admin_json_member_uint(out, "acked", b->stats.acked);
    admin_json_member_uint(out, "duplicates", b->stats.duplicates);
    admin_json_object_end(out);
    admin_json_key(out, "handshakes");
    admin_json_object_begin(out);
    admin_json_member_uint(out, "admitted", auth.admitted);
    admin_json_member_uint(out, "refused", auth.refused);
    admin_json_object_end(out);
    admin_status_reload(b, out);
    admin_status_store(admin, b, out);
    admin_status_audit(b, out);
    admin_json_object_end(out);
    return 0;
}

/* ------------------------------------------------------------------ partners */

/* One principal as operators see it. */
typedef struct admin_principal_view {
    sessions_principal_stats_t stats;
    int64_t backlog; /* -1: the store could not count it */
    const receiver_t *receiver;
} admin_principal_view_t;

static void admin_last_seen(admin_json_t *out, const broker_t *b, int64_t last_seen_ms)
{
    admin_json_key(out, "last_seen");
    if (last_seen_ms > 0)
        admin_json_int(out, admin_wall_time(b, last_seen_ms));
    else
        admin_json_null(out);
}

static void admin_principal_write(admin_json_t *out, const broker_t *b, const policy_principal_t *p,
                                  const admin_principal_view_t *v)
{
    int receiving = v->receiver != NULL && v->receiver->session != NULL;
    admin_json_object_begin(out);
    admin_json_member_string(out, "id", p->id);
    admin_json_member_string(out, "role", policy_role_name(p->role));
    admin_json_member_bool(out, "connected", v->stats.sessions > 0);
    admin_json_member_uint(out, "connections", v->stats.sessions);
    admin_json_member_bool(out, "receiving", receiving);
    if (receiving) {
        admin_json_member_uint(out, "window", v->receiver->window);
        admin_json_member_uint(out, "in_flight", v->receiver->inflight);
    }
    admin_last_seen(out, b, v->stats.last_seen_ms);
    admin_json_key(out, "backlog");
    if (v->backlog >= 0)
        admin_json_int(out, v->backlog);
    else
        admin_json_null(out);
    admin_json_member_uint(out, "refusals", v->stats.refusals);
    admin_json_object_end(out);
}

/* One partner: its totals, then its principals in policy order. */
static void admin_partner_write(admin_json_t *out, broker_t *b, const policy_partner_t *partner,
                                const admin_principal_view_t *views)
{
    unsigned connections = 0;
    unsigned long refusals = 0;
    int64_t backlog = 0, last_seen_ms = 0;
    size_t n = policy_principal_count(b->policy);
    for (size_t i = 0; i < n; i++) {
        if (policy_principal_at(b->policy, i)->partner != partner)
            continue;
        connections += views[i].stats.sessions;
        refusals += views[i].stats.refusals;
        backlog = backlog < 0 || views[i].backlog < 0 ? -1 : backlog + views[i].backlog;
        if (views[i].stats.last_seen_ms > last_seen_ms)
            last_seen_ms = views[i].stats.last_seen_ms;
    }
    admin_json_object_begin(out);
    admin_json_member_string(out, "id", partner->id);
    admin_json_member_string(out, "name", partner->name);
    admin_json_member_bool(out, "connected", connections > 0);
    admin_json_member_uint(out, "connections", connections);
    admin_last_seen(out, b, last_seen_ms);
    admin_json_key(out, "backlog");
    if (backlog >= 0)
        admin_json_int(out, backlog);
    else
        admin_json_null(out);
    admin_json_member_uint(out, "refusals", refusals);
    admin_json_member_int(out, "stored_bytes", store_partner_bytes(b->store, partner->id));
    admin_json_key(out, "principals");
    admin_json_array_begin(out);
    for (size_t i = 0; i < n; i++) {
        const policy_principal_t *p = policy_principal_at(b->policy, i);
        if (p->partner == partner)
            admin_principal_write(out, b, p, &views[i]);
    }
    admin_json_array_end(out);
    admin_json_object_end(out);
}

/* Cost: one mailbox count per principal (an index range each) and
 * O(partners x principals) grouping; operators only. */
int admin_partners(admin_t *admin, broker_t *b, const admin_request_t *request, admin_json_t *out,
                   char *err, size_t errlen)
{
    (void)admin, (void)request;
    size_t n = policy_principal_count(b->policy);
    admin_principal_view_t *views = calloc(n ? n : 1, sizeof *views);
    if (views == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const policy_principal_t *p = policy_principal_at(b->policy, i);
        sessions_principal_stats(b->sessions, p->id, &views[i].stats);
        views[i].backlog = store_mailbox_count(b->store, p->id);
        views[i].receiver = sessions_receiver(b->sessions, p->id);
    }
    admin_json_object_begin(out);
    admin_json_member_string(out, "policy_hash", policy_hash_hex(b->policy));
    admin_json_key(out, "partners");
    admin_json_array_begin(out);
    for (size_t k = 0; k < policy_partner_count(b->policy); k++)
        admin_partner_write(out, b, policy_partner_at(b->policy, k), views);
    admin_json_array_end(out);
    admin_json_object_end(out);
    free(views);
    return 0;
}

/* ------------------------------------------------------------------ rules */

void admin_retention_text(int64_t seconds, char *out, size_t outlen)
{
    static const struct {
        int64_t seconds;
        char unit;
    } units[] = {{365LL * 86400, 'y'}, {86400, 'd'}, {3600, 'h'}, {60, 'm'}, {1, 's'}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (seconds % units[i].seconds == 0) {
            snprintf(out, outlen, "%" PRId64 "%c", seconds / units[i].seconds, units[i].unit);
            return;
        }
    }
}

static void admin_partner_list(admin_json_t *out, const policy_t *policy, const char *key,
                               uint64_t mask)
{
    admin_json_key(out, key);
    admin_json_array_begin(out);
    for (size_t k = 0; k < policy_partner_count(policy) && k < 64; k++)
        if (mask >> k & 1)
            admin_json_string(out, policy_partner_at(policy, k)->id);
    admin_json_array_end(out);
}

static void admin_role_list(admin_json_t *out, const char *key, unsigned roles)
{
    static const role_t order[] = {ROLE_SYSTEM, ROLE_CASEWORKER, ROLE_OPERATOR};
    admin_json_key(out, key);
    admin_json_array_begin(out);
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (roles & (unsigned)order[i])
            admin_json_string(out, policy_role_name(order[i]));
    admin_json_array_end(out);
}

/* A list as written, or ["*"] for any. */
static void admin_pattern_list(admin_json_t *out, const char *key, int any,
                               const char *const *items, size_t n)
{
    admin_json_key(out, key);
    admin_json_array_begin(out);
    if (any)
        admin_json_string(out, "*");
    for (size_t i = 0; !any && i < n; i++)
        admin_json_string(out, items[i]);
    admin_json_array_end(out);
}

static void admin_rule_scope_write(admin_json_t *out, const policy_t *policy,
                                   const policy_rule_scope_t *scope)
{
    admin_partner_list(out, policy, "from", scope->from_partners);
    admin_role_list(out, "from_roles", scope->from_roles);
    admin_partner_list(out, policy, "to", scope->to_partners);
    admin_role_list(out, "to_roles", scope->to_roles);
    admin_pattern_list(out, "kinds", scope->any_kind, scope->kinds, scope->n_kinds);
    admin_json_key(out, "themes");
    admin_json_array_begin(out);
    if (scope->any_theme)
        admin_json_string(out, "*");
    for (size_t t = 0; !scope->any_theme && syntax_themes[t] != NULL && t < 64; t++)
        if (scope->themes >> t & 1)
            admin_json_string(out, syntax_themes[t]);
    admin_json_array_end(out);
    admin_pattern_list(out, "areas", scope->any_area, scope->areas, scope->n_areas);
}

static void admin_rule_write(admin_json_t *out, const policy_t *policy, const policy_rule_t *rule)
{
    policy_rule_scope_t scope;
    char retention[32] = "";
    admin_retention_text(rule->retention_s, retention, sizeof retention);
    admin_json_object_begin(out);
    admin_json_member_string(out, "id", rule->id);
    admin_json_member_string(out, "hash", rule->hash_hex);
    admin_json_member_uint(out, "line", rule->line);
    if (policy_rule_scope(policy, rule, &scope) == 0)
        admin_rule_scope_write(out, policy, &scope);
    admin_json_key(out, "fields");
    admin_json_array_begin(out);
    for (uint32_t bit = 1; bit != 0; bit <<= 1)
        if ((rule->fields & bit) && policy_field_name(bit) != NULL)
            admin_json_string(out, policy_field_name(bit));
    admin_json_array_end(out);
    admin_json_member_string(out, "purpose", rule->purpose);
    admin_json_member_string(out, "legal_basis", rule->legal_basis);
    admin_json_member_string(out, "retention", retention);
    admin_json_member_int(out, "retention_s", rule->retention_s);
    admin_json_member_bool(out, "require_case_ref", rule->require_case_ref);
    admin_json_object_end(out);
}

int admin_rules(admin_t *admin, broker_t *b, const admin_request_t *request, admin_json_t *out,
                char *err, size_t errlen)
{
    (void)admin, (void)request, (void)err, (void)errlen;
    admin_json_object_begin(out);
    admin_json_member_string(out, "policy_hash", policy_hash_hex(b->policy));
    admin_json_key(out, "rules");
    admin_json_array_begin(out);
    for (size_t i = 0; i < policy_rule_count(b->policy); i++)
        admin_rule_write(out, b->policy, policy_rule_at(b->policy, i));
    admin_json_array_end(out);
    admin_json_object_end(out);
    return 0;
}

/* ------------------------------------------------------------------ reload */

/* The new policy's warnings (rules that never decide, ...): the first
 * SCHAKEL_POLICY_WARNINGS_SHOWN lines, and how many there are. */
static void admin_reload_warnings(const policy_t *policy, admin_json_t *out)
{
    size_t n = policy_warning_count(policy);
    admin_json_member_uint(out, "warnings_total", n);
    admin_json_key(out, "warnings");
    admin_json_array_begin(out);
    for (size_t i = 0; i < n && i < SCHAKEL_POLICY_WARNINGS_SHOWN; i++) {
        char text[SCHAKEL_POLICY_WARNING_LEN];
        policy_warning_format(policy, i, text, sizeof text);
        admin_json_string(out, text);
    }
    admin_json_array_end(out);
}

int admin_reload(admin_t *admin, broker_t *b, const admin_request_t *request, admin_json_t *out,
                 char *err, size_t errlen)
{
    (void)admin;
    char old_hash[65], by[SCHAKEL_MAX_PRINCIPAL_LEN + 16];
    snprintf(old_hash, sizeof old_hash, "%s", policy_hash_hex(b->policy));
    snprintf(by, sizeof by, "admin:%s", request->principal);
    int dropped = broker_reload_policy(b, by, err, errlen);
    admin_json_object_begin(out);
    admin_json_member_string(out, "policy", b->policy_path);
    if (dropped < 0) {
        admin_json_member_string(out, "kept_hash", old_hash);
    } else {
        /* The asker reloaded its own key away: answered, then refused
         * (admin_still_operator); with no operator left only SIGHUP
         * reloads. */
        int removed_self = !admin_still_operator(b, request->principal, request->key);
        if (removed_self) {
            char operators[24];
            snprintf(operators, sizeof operators, "%zu", b->reload.operators);
            log_event(LOG_WARN, "admin.operator_removed_itself", "principal", request->principal,
                      "operators", operators, "effect",
                      "answered; its next request is refused NOT_PERMITTED", NULL);
        }
        admin_json_member_string(out, "old_hash", old_hash);
        admin_json_member_string(out, "new_hash", policy_hash_hex(b->policy));
        admin_json_member_bool(out, "changed", strcmp(old_hash, policy_hash_hex(b->policy)) != 0);
        admin_json_member_int(out, "sessions_dropped", dropped);
        admin_json_member_uint(out, "operators", b->reload.operators);
        admin_json_member_bool(out, "removed_self", removed_self);
        admin_json_member_int(out, "cases_unreachable", b->reload.cases_unreachable);
        admin_reload_warnings(b->policy, out);
    }
    /* the config or policy on disk would not start the broker (for a
     * refused policy, the same error) */
    if (b->reload.start_fails)
        admin_json_member_string(out, "next_start_error", b->reload.start_error);
    /* the next start reads another policy file than the one reloaded */
    if (b->reload.next_policy[0] != '\0')
        admin_json_member_string(out, "next_start_policy", b->reload.next_policy);
    admin_json_object_end(out);
    return dropped < 0 ? -1 : 0;
}

/* ------------------------------------------------------------------ pending */

int admin_pending(admin_t *admin, broker_t *b, const admin_request_t *request, admin_json_t *out,
                  char *err, size_t errlen)
{
    (void)admin;
    return admin_pending_run(b, request->args, request->n_args, out, err, errlen);
}
