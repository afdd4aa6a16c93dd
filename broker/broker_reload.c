/*
 * broker_reload.c — a policy reload (SIGHUP or an operator): the new
 * policy in force only once its audit entry is on disk, what it revokes
 * revoked at once (sessions, connections, waiting deliveries), pending
 * until then. Trusts policy_load for the file; a policy that does not
 * load, or an entry that cannot be written, leaves the old one in force
 * and returns -1 with err saying why.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "broker.h"
#include "broker_internal.h"
#include "case.h"
#include "log.h"
#include "purge.h"
#include "record.h"

static int reload_refused(broker_t *b, const char *requested_by, const char *err);

/* ------------------------------------------------------------ reload */

/* How often a reload pending for its record logs that it still is. */
#define RELOAD_RETRY_LOG_MS 60000

/* After a reload: the session's principal is gone, became an operator, or
 * now has another key than the one this connection authenticated with. */
int broker_session_revoked(const session_t *session, void *arg)
{
    return broker_principal_key_revoked(arg, session->principal, session->key);
}

/* `principal` is gone from `policy`, became an operator, or (key not "")
 * has another key there than `key` (Z85). */
int broker_principal_key_revoked(const policy_t *policy, const char *principal, const char *key)
{
    const policy_principal_t *p = policy_principal_by_id(policy, principal);
    if (p == NULL || p->role == ROLE_OPERATOR)
        return 1;
    char current[41];
    keys_public_z85(p->curve_pk, current);
    return key[0] != '\0' && strcmp(key, current) != 0;
}

/* The principal and key pairs `policy` registers on the partner
 * endpoint (no operators) into out (room for all its principals). */
static size_t registered_pairs(const policy_t *policy, conns_identity_t *out)
{
    size_t n = policy_principal_count(policy), k = 0;
    for (size_t i = 0; i < n; i++) {
        const policy_principal_t *p = policy_principal_at(policy, i);
        if (p->role == ROLE_OPERATOR)
            continue;
        char key[41];
        keys_public_z85(p->curve_pk, key);
        out[k++] = (conns_identity_t){conns_identity_hash(p->id), conns_identity_hash(key)};
    }
    return k;
}

/* Connections that served frames with a principal or key the policy in
 * force, or a reload still pending, does not register are closed later
 * (conns.h (c)), with a session or without one (it expired); a later
 * reload that registers their pair again takes that back. Without memory
 * for the lists, nothing changes now: their frames are refused all the
 * same. */
static void reload_revoke_connections(broker_t *b)
{
    size_t n = policy_principal_count(b->policy) + 1;
    conns_identity_t *pairs = malloc(n * sizeof *pairs);
    if (pairs == NULL)
        return;
    size_t k = registered_pairs(b->policy, pairs);
    if (b->policy_pending != NULL) { /* both must register a pair */
        conns_identity_t *pending =
            malloc((policy_principal_count(b->policy_pending) + 1) * sizeof *pending);
        if (pending == NULL) {
            free(pairs);
            return;
        }
        size_t m = registered_pairs(b->policy_pending, pending), kept = 0;
        if (m > 1)
            qsort(pending, m, sizeof *pending, conns_identity_order);
        for (size_t i = 0; i < k; i++)
            if (m > 0 &&
                bsearch(&pairs[i], pending, m, sizeof *pending, conns_identity_order) != NULL)
                pairs[kept++] = pairs[i];
        k = kept;
        free(pending);
    }
    size_t revoked = conns_revoke_unregistered(b->conns, b->now_ms, pairs, k);
    free(pairs);
    if (revoked > 0) {
        char count[24];
        snprintf(count, sizeof count, "%zu", revoked);
        log_event(LOG_INFO, "connections.revoked", "count", count, NULL);
    }
}

/* Sessions of removed principals and replaced keys under `policy` stop at
 * once: no more deliveries, their next frame is refused, and the ZAP
 * handler refuses their next handshake; their connections are closed
 * later. Returns how many sessions. */
typedef struct reload_revocation {
    broker_t *broker;
    const policy_t *policy;
} reload_revocation_t;

/* broker_session_revoked under arg->policy; a revoked session's Flow is kept with
 * its connection (restore_flow). */
static int session_revoked_keep_flow(const session_t *session, void *arg)
{
    const reload_revocation_t *r = arg;
    if (!broker_session_revoked(session, (void *)(uintptr_t)r->policy))
        return 0;
    conns_keep_flow(r->broker->conns, session->fd, session->flow_order, session->flow_window);
    return 1;
}

static size_t reload_drop_sessions(broker_t *b, const policy_t *policy)
{
    reload_revoke_connections(b);
    reload_revocation_t revocation = {b, policy};
    size_t dropped = sessions_drop_where(b->sessions, session_revoked_keep_flow, &revocation);
    if (dropped > 0) {
        char n[24];
        snprintf(n, sizeof n, "%zu", dropped);
        log_event(LOG_INFO, "policy.sessions_dropped", "count", n, NULL);
    }
    return dropped;
}

/* Operators `policy` registers (the keys the admin endpoint admits). */
size_t broker_reload_count_operators(const policy_t *policy)
{
    size_t n = policy_principal_count(policy), operators = 0;
    for (size_t i = 0; i < n; i++)
        operators += policy_principal_at(policy, i)->role == ROLE_OPERATOR;
    return operators;
}

/* The policy's warnings (policy.h: rules that never decide, on_behalf
 * entries never used), one line each, the first
 * SCHAKEL_POLICY_WARNINGS_SHOWN, then how many more: at the start and at
 * every reload applied, so that the log says it of the policy in force. */
void broker_log_policy_warnings(const policy_t *policy)
{
    size_t n = policy_warning_count(policy);
    for (size_t i = 0; i < n && i < SCHAKEL_POLICY_WARNINGS_SHOWN; i++) {
        char text[SCHAKEL_POLICY_WARNING_LEN];
        policy_warning_format(policy, i, text, sizeof text);
        log_event(LOG_WARN, "policy.warning", "warning", text, NULL);
    }
    if (n > SCHAKEL_POLICY_WARNINGS_SHOWN) {
        char more[24];
        snprintf(more, sizeof more, "%zu", n - SCHAKEL_POLICY_WARNINGS_SHOWN);
        log_event(LOG_WARN, "policy.warnings_more", "count", more, "effect",
                  "not logged: schakelctl policy check FILE lists every one", NULL);
    }
}

/* policy.reloaded, with what an operator must know of it: the operators
 * left and the open cases nobody can see or close any more (each case
 * type and lead is logged as cases.unreachable); a policy without an
 * operator, while the admin endpoint is on, is said apart: only SIGHUP
 * reloads then. A retry says after how many tries, as the refusals
 * logged leave some out. */
static void reload_log_applied(broker_t *b, const char *old_hash, const char *requested_by,
                               int retry, uint64_t tries)
{
    char operators[24], cases[24], retries[24];
    snprintf(operators, sizeof operators, "%zu", b->reload.operators);
    if (b->reload.cases_unreachable >= 0)
        snprintf(cases, sizeof cases, "%ld", b->reload.cases_unreachable);
    else
        snprintf(cases, sizeof cases, "unknown");
    snprintf(retries, sizeof retries, "%" PRIu64, tries);
    if (retry)
        log_event(LOG_INFO, "policy.reloaded", "old", old_hash, "new", policy_hash_hex(b->policy),
                  "by", requested_by, "operators", operators, "cases_unreachable", cases, "retries",
                  retries, NULL);
    else
        log_event(LOG_INFO, "policy.reloaded", "old", old_hash, "new", policy_hash_hex(b->policy),
                  "by", requested_by, "operators", operators, "cases_unreachable", cases, NULL);
    broker_log_policy_warnings(b->policy);
    if (b->reload.operators == 0 && b->admin != NULL)
        log_event(LOG_WARN, "policy.no_operators", "effect",
                  "the admin endpoint admits no key: schakelctl is refused until a reload "
                  "(SIGHUP, systemctl reload) registers an operator again",
                  NULL);
}

/* Whether other names the very file of policy_path (another spelling, a
 * link): not "another policy file" to warn of, but still loaded by the
 * start check, since key_file paths resolve against the folder of the name
 * as given and the file guard checks the folders of that name. */
static int reload_same_policy_file(const char *policy_path, const char *other)
{
    struct stat a, b;
    return stat(policy_path, &a) == 0 && stat(other, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

/* Whether the config file and the policy it names, as they are on disk
 * now, would start the broker: a reload applies only the policy, and a
 * file that fails only at the next start (a restart, the watchdog, a
 * reboot) would leave the broker down then. Said when they would not,
 * and once when they would again. The policy is the one the reload just
 * read when the config names that file by the same name (reload_error:
 * why it did not load, NULL when it did), not read a second time; by
 * another name (a link) it is loaded again, as key_file paths resolve
 * against that name's folder, but not said; a config that names another
 * file (its policy: changed since the start) is said, and that file
 * loaded, as it is the one the next start reads. */
static void reload_check_start(broker_t *b, const char *reload_error)
{
    if (b->start_check == NULL)
        return;
    char err[sizeof b->reload.start_error];
    char *next = b->reload.next_policy;
    int rc =
        b->start_check(b->start_check_arg, next, sizeof b->reload.next_policy, err, sizeof err);
    if (rc != 0 || strcmp(b->policy_path, next) == 0) {
        next[0] = '\0';
        if (rc == 0 && reload_error != NULL) {
            snprintf(err, sizeof err, "%s", reload_error);
            rc = -1;
        }
    } else {
        char named[sizeof b->reload.next_policy];
        snprintf(named, sizeof named, "%s", next);
        if (reload_same_policy_file(b->policy_path, named))
            next[0] = '\0'; /* the same file by another name: loaded, not warned of */
        else
            log_event(LOG_WARN, "config.other_policy", "reloaded", b->policy_path, "next_start",
                      named, "effect",
                      "the config names another policy file than the one in force: a reload "
                      "reads only the file the broker started with, the next start reads the "
                      "other",
                      NULL);
        policy_t *policy = policy_load(named, err, sizeof err);
        rc = policy != NULL ? 0 : -1;
        policy_destroy(&policy);
    }
    if (rc != 0) {
        log_event(LOG_WARN, "config.would_not_start", "error", err, "effect",
                  "the broker runs on as it is, but its next start (a restart, the watchdog, "
                  "a reboot) fails: fix the file, then reload",
                  NULL);
        b->reload.start_fails = 1;
        snprintf(b->reload.start_error, sizeof b->reload.start_error, "%s", err);
    } else if (b->reload.start_fails) {
        log_event(LOG_INFO, "config.would_start", NULL);
        b->reload.start_fails = 0;
        b->reload.start_error[0] = '\0';
    }
}

/* Record the reload to `fresh` and put it in force. Returns the sessions
 * dropped, or -1 (err set) when its entry could not be written: then the
 * old policy stays in force, narrowed by `fresh` (b->policy_pending), and
 * the record is tried again (broker_reload_retry). */
static int reload_apply(broker_t *b, policy_t *fresh, const char *requested_by, char *err,
                        size_t errlen)
{
    /* A retry of the reload pending (once a second while the store stays
     * unwritable) logs its refusal once a minute, with the retries since. */
    int64_t now = broker_monotonic_ms();
    int retry = b->policy_pending == fresh;
    int logged = !retry || now - b->pending_logged_ms >= RELOAD_RETRY_LOG_MS;
    b->quiet_audit_failure = !logged;
    /* Fail closed: the new policy applies only once its record is on disk. */
    int recorded = record_policy_reloaded(b, requested_by, policy_hash_hex(b->policy),
                                          policy_hash_hex(fresh)) == 0;
    b->quiet_audit_failure = 0;
    if (!recorded) {
        snprintf(err, errlen,
                 "the audit trail cannot record the reload (%s); the old policy stays in force, "
                 "but what the new one takes away is held back now (its revoked keys refused, "
                 "the deliveries it would not allow neither sent nor removed), and the reload "
                 "applies as soon as its record can be written",
                 store_errmsg(b->store));
        if (logged) {
            char retries[24];
            snprintf(retries, sizeof retries, "%" PRIu64, b->pending_retries);
            log_event(LOG_ERROR, "policy.reload_refused", "error", err, "kept",
                      policy_hash_hex(b->policy), "pending", policy_hash_hex(fresh), "by",
                      requested_by, "retries", retries, NULL);
            b->pending_logged_ms = now;
            b->pending_retries = 0;
        } else {
            b->pending_retries++;
        }
        if (retry)
            b->pending_tries++;
        if (b->policy_pending != fresh) {
            policy_destroy(&b->policy_pending);
            b->policy_pending = fresh;
            b->policy_generation++; /* held replies are checked against it */
            snprintf(b->pending_by, sizeof b->pending_by, "%s", requested_by);
        }
        b->pending_retry_ms = broker_monotonic_ms() + 1000;
        b->last_turn_committed_writes = 0; /* tried: the next try waits its second */
        (void)reload_drop_sessions(b, fresh);
        return -1;
    }
    char old_hash[65];
    snprintf(old_hash, sizeof old_hash, "%s", policy_hash_hex(b->policy));
    uint64_t tries = b->pending_tries;
    b->pending_retries = b->pending_tries = 0;
    if (b->policy_pending == fresh)
        b->policy_pending = NULL;
    policy_destroy(&b->policy_pending); /* a newer reload replaces one still pending */
    policy_destroy(&b->policy);
    b->policy = fresh;
    b->policy_generation++; /* held replies are checked against it */
    b->policy_loaded_at = b->now_s;
    /* What waits now was decided before: its acks ask the policy again.
     * A seq handed out later is higher than any waiting one. */
    int64_t last_seq = store_delivery_last_seq(b->store);
    b->seq_at_policy = last_seq < 0 ? UINT64_MAX : (uint64_t)last_seq;
    deliver_policy_changed(b); /* what waits is decided again, under the new policy */
    b->reload.operators = broker_reload_count_operators(b->policy);
    b->reload.cases_unreachable = case_check_reachable(b); /* each case type and lead logged */
    reload_log_applied(b, old_hash, requested_by, retry, tries);
    (void)purge_find(b); /* logged */
    size_t dropped = reload_drop_sessions(b, b->policy);
    return dropped > INT32_MAX ? INT32_MAX : (int)dropped;
}

int broker_reload_policy(broker_t *b, const char *requested_by, char *err, size_t errlen)
{
    b->reload.at = b->now_s;
    snprintf(b->reload.by, sizeof b->reload.by, "%s", requested_by);
    policy_t *fresh = policy_load(b->policy_path, err, errlen);
    int loaded = fresh != NULL;
    int rc = loaded ? reload_apply(b, fresh, requested_by, err, errlen)
                    : reload_refused(b, requested_by, err);
    b->reload.failed = rc < 0;
    snprintf(b->reload.error, sizeof b->reload.error, "%s", rc < 0 ? err : "");
    reload_check_start(b, loaded ? NULL : err);
    return rc;
}

/* A reload whose policy file did not load (err says why): the policy in
 * force stays, and a reload still pending stays so (dropping it could give
 * back what it revokes): said, as the file no longer holds it. Returns -1. */
static int reload_refused(broker_t *b, const char *requested_by, const char *err)
{
    if (b->policy_pending != NULL)
        log_event(LOG_ERROR, "policy.reload_refused", "error", err, "kept",
                  policy_hash_hex(b->policy), "pending", policy_hash_hex(b->policy_pending), "by",
                  requested_by, NULL);
    else
        log_event(LOG_ERROR, "policy.reload_refused", "error", err, "kept",
                  policy_hash_hex(b->policy), "by", requested_by, NULL);
    (void)record_policy_refused(b, requested_by, policy_hash_hex(b->policy), err);
    return -1;
}

/* A reload still pending: its record is tried again, at most once a
 * second (a locked store makes each try wait its busy timeout). */
void broker_reload_retry(broker_t *b)
{
    /* a turn that just committed shows the store can be written: at once */
    if (b->policy_pending == NULL ||
        (broker_monotonic_ms() < b->pending_retry_ms && !b->last_turn_committed_writes))
        return;
    char err[512], by[sizeof b->pending_by];
    snprintf(by, sizeof by, "%s", b->pending_by);
    if (reload_apply(b, b->policy_pending, by, err, sizeof err) >= 0) { /* logged either way */
        b->reload.failed = 0;
        b->reload.error[0] = '\0';
    }
}
