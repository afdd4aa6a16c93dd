/*
 * broker_new.c — making and ending a broker (broker_new, broker_destroy):
 * the keys and policy loaded, the store opened only when it is there, not
 * hard-linked, not marked, owner-only and its trail chaining, the clock
 * started, the sockets bound. Trusts nothing on disk it has not checked;
 * every refusal is NULL from broker_new with err saying why and what to do.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <zmq.h>

#include "audit.h"
#include "broker.h"
#include "broker_internal.h"
#include "case.h"
#include "connevents.h"
#include "log.h"
#include "purge.h"
#include "record.h"
#include "storefile.h"

/* Socket options of a CURVE endpoint (partners or operators): CURVE
 * server with our key, its ZAP domain, mandatory routing (so an unroutable
 * send is reported, not dropped), finite queues, dead-peer detection, and a
 * per-frame cap that disconnects peers sending frames far over the limit
 * (frames just over it are still read and refused FRAME_TOO_LARGE). */
int broker_configure_router(void *router, const keypair_t *key, const char *domain,
                            int heartbeat_timeout_ms)
{
    int one = 1, zero = 0;
    int sndhwm = SCHAKEL_SNDHWM, rcvhwm = SCHAKEL_BROKER_RCVHWM;
    int handshake = SCHAKEL_HANDSHAKE_IVL_MS;
    int hb_ivl = SCHAKEL_ZMTP_HEARTBEAT_IVL_MS, hb_timeout = heartbeat_timeout_ms;
    int64_t maxmsg = 4 * (int64_t)SCHAKEL_MAX_FRAME_BYTES;
    return zmq_setsockopt(router, ZMQ_CURVE_SERVER, &one, sizeof one) ||
           zmq_setsockopt(router, ZMQ_CURVE_SECRETKEY, key->curve_sk, 32) ||
           zmq_setsockopt(router, ZMQ_ZAP_DOMAIN, domain, strlen(domain)) ||
           zmq_setsockopt(router, ZMQ_ROUTER_MANDATORY, &one, sizeof one) ||
           zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof zero) ||
           zmq_setsockopt(router, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm) ||
           zmq_setsockopt(router, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm) ||
           zmq_setsockopt(router, ZMQ_HANDSHAKE_IVL, &handshake, sizeof handshake) ||
           zmq_setsockopt(router, ZMQ_HEARTBEAT_IVL, &hb_ivl, sizeof hb_ivl) ||
           zmq_setsockopt(router, ZMQ_HEARTBEAT_TIMEOUT, &hb_timeout, sizeof hb_timeout) ||
           zmq_setsockopt(router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
}

/* ------------------------------------------------------------ connections */

/* The router reports each connection it accepts and each that closes, by
 * its socket (the ZMQ_SRCFD of its frames). A session is bound to its
 * connection: when that closes, the session goes at once, so that nothing
 * meant for it is pushed to a later connection that takes the same
 * routing id (a client may choose one: PROTOCOL.md 3.2). Without the
 * events (an error here) sessions go as before: on a failed push, or
 * after SCHAKEL_SESSION_TIMEOUT_MS. */
#define ROUTER_EVENTS_ENDPOINT "inproc://schakel-router-events"

static void router_events_open(broker_t *b)
{
    /* two small frames per connection event */
    b->router_events = connevents_open(b->ctx, b->router, ROUTER_EVENTS_ENDPOINT,
                                       ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED, 1 << 20,
                                       "broker.connection_events_unavailable");
}

/* A store that is not there is never replaced by a new, empty one: seqs
 * would start again at 1 (a recipient that deduplicates by Deliver.seq
 * drops what comes next) and the audit trail anew. Said first, before
 * the key: the way on may be a backup rather than --init. */
static int store_missing_refused(const char *store_path, char *err, size_t errlen)
{
    char why[PATH_MAX + 200];
    store_file_state_t state = store_presence(store_path, why, sizeof why);
    if (state != STORE_FILE_MISSING && state != STORE_FILE_WAL_ONLY)
        return 0; /* there, or store_open says why it cannot tell */
    log_event(LOG_ERROR, "store.missing", "path", store_path, "why", why, NULL);
    snprintf(err, errlen,
             "the store is missing: %s; schakeld does not start on a new, empty store by itself "
             "(its seqs would start again at 1, its audit trail anew): restore a backup "
             "(docs/OPERATIONS.md, \"Restoring a backup\"), or create a new store with schakeld "
             "--init",
             why);
    return -1;
}

/* A store made by an older version, or copied into place under umask
 * 022, may be readable by every local user: it and its -wal and -shm are
 * made owner-only before the store is opened (SQLite gives the side files
 * it makes then the store file's mode), each change a warning line. A
 * mode that cannot be changed refuses the start (storefile_tighten says
 * what to run). */
static int store_modes_tighten(const char *store_path, char *err, size_t errlen)
{
    static const char *const suffix[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
        char path[PATH_MAX], old[8];
        mode_t was = 0;
        if (storefile_side(path, sizeof path, store_path, suffix[i]) != 0)
            return snprintf(err, errlen, "%s: the path is too long", store_path), -1;
        int rc = storefile_tighten(path, &was, err, errlen);
        if (rc < 0)
            return -1;
        if (rc == 0)
            continue;
        snprintf(old, sizeof old, "%04o", (unsigned)was);
        log_event(LOG_WARN, "store.mode_tightened", "path", path, "was", old, "now", "0600", NULL);
    }
    return 0;
}

/* An upgrade is seen: the open that migrated the store says from which
 * schema, at every size (store.migrating says how far a long one is, but
 * only every 100,000 rows); an open that migrated nothing says nothing. */
static void log_store_migrated(const store_t *store)
{
    int64_t ms = 0;
    int from = store_migrated_from(store, &ms);
    if (from == 0)
        return;
    char from_text[16], to_text[16], ms_text[24];
    snprintf(from_text, sizeof from_text, "%d", from);
    snprintf(to_text, sizeof to_text, "%d", store_schema_version());
    snprintf(ms_text, sizeof ms_text, "%lld", (long long)ms);
    log_event(LOG_INFO, "store.migrated", "from", from_text, "to", to_text, "ms", ms_text, NULL);
}

/* Open the store with the sealing key from its key file; the key copy on
 * our stack is wiped on every path. */
static store_t *open_sealed_store(const char *store_path, const char *store_key_path, char *err,
                                  size_t errlen)
{
    uint8_t seal_key[STORE_KEY_BYTES];
    store_t *store = NULL;
    if (store_missing_refused(store_path, err, errlen) != 0 ||
        store_modes_tighten(store_path, err, errlen) != 0)
        return NULL;
    if (keys_load_symmetric(store_key_path, seal_key, err, errlen) == 0 &&
        (store = store_open(store_path, seal_key, STORE_OPEN_EXISTING, err, errlen)) != NULL)
        log_store_migrated(store);
    else if (access(store_key_path, F_OK) != 0 && errno == ENOENT)
        /* the store is there (store_missing_refused): only its own key opens it */
        snprintf(err + strlen(err), errlen - strlen(err),
                 " (the store %s is sealed under that key: put the key file back from its "
                 "backup; a new key cannot open it)",
                 store_path);
    sodium_memzero(seal_key, sizeof seal_key);
    return store;
}

/* STORE.audit-mismatch: a broker that ran on this store found its trail's
 * tail rewritten outside it (record.c). A start knows only the file, and
 * would sign that tail if it chains: no start until an operator has
 * verified the store with the mark's anchor (storefile_mismatch_refuse).
 * Nor on a store file with a second name (a hard link), whose own -wal
 * and mark would be beside that name (storefile_links_refuse), nor beside
 * a WAL an interrupted restore set aside (storefile_lost_wal_refuse). */
static int broker_store_name_refused(const char *store_path, char *err, size_t errlen)
{
    char why[2048];
    if (storefile_lost_wal_refuse(store_path, why, sizeof why) != 0) {
        log_event(LOG_ERROR, "store.lost_wal", "error", why, NULL);
    } else if (storefile_mismatch_refuse(store_path, why, sizeof why) == 0) {
        if (storefile_links_refuse(store_path, why, sizeof why) == 0)
            return 0;
        struct stat st;
        char links[24] = "?";
        if (stat(store_path, &st) == 0)
            snprintf(links, sizeof links, "%ju", (uintmax_t)st.st_nlink);
        log_event(LOG_ERROR, "store.hard_linked", "links", links, "error", why, NULL);
    } else {
        log_event(LOG_ERROR, "audit.tail_mismatch_marked", "error", why, NULL);
    }
    snprintf(err, errlen, "%s; the broker does not start on this store", why);
    return -1;
}

/* The trail's tail must chain from its last checkpoint before the broker
 * chains or signs anything more (audit_tail_check); from then on the
 * store holds it to the tail each commit leaves (store_audit_tail_guard),
 * so that a tail rewritten while the broker runs is refused, not signed.
 * A last checkpoint under another key than the broker's is said: the
 * check proves the signature, not whose key it is (audit.h). */
static int broker_trail_check(store_t *store, const keypair_t *key, const char *store_path,
                              char *err, size_t errlen)
{
    char why[512];
    audit_tail_signer_t other;
    int rc = audit_tail_check(store, key->sign_pk, &other, why, sizeof why);
    if (rc > 0) {
        log_event(LOG_ERROR, "audit.tail_broken", "error", why, NULL);
        snprintf(err, errlen,
                 "%s; the broker chains and signs nothing onto it and does not start: run "
                 "schakelctl audit verify --store %s (docs/OPERATIONS.md, \"When audit verify "
                 "fails\")",
                 why, store_path);
        return -1;
    }
    if (rc < 0) {
        snprintf(err, errlen, "%s", why);
        return -1;
    }
    if (other.seq > 0) {
        char seq[24], signer[41], own[41], verify[4200];
        snprintf(seq, sizeof seq, "%llu", (unsigned long long)other.seq);
        keys_public_z85(other.key, signer);
        keys_public_z85(key->sign_pk, own);
        snprintf(verify, sizeof verify,
                 "expected once after a rotation of the broker key; otherwise run schakelctl "
                 "audit verify --store %s with --broker-key for every broker key ever used",
                 store_path);
        log_event(LOG_ERROR, "audit.checkpoint_other_key", "seq", seq, "key", signer, "broker_key",
                  own, "action", verify, NULL);
    }
    if (store_audit_tail_guard(store) != 0) {
        snprintf(err, errlen, "cannot read the audit trail's tail: %s", store_errmsg(store));
        return -1;
    }
    return 0;
}

/* The broker's time from the system clock, not before the audit trail's
 * last entry (wallclock.h); said in the log when it is. */
static int broker_clock_start(broker_t *b, int accept_clock, char *err, size_t errlen)
{
    int64_t floor_s = 0;
    if (audit_trail_last_at(b->store, &floor_s) != 0) {
        snprintf(err, errlen, "cannot read the audit trail's last entry: %s",
                 store_errmsg(b->store));
        return -1;
    }
    int64_t wall_ms = broker_clock_ms(CLOCK_REALTIME);
    if (wallclock_start(&b->clock, wall_ms, broker_clock_ms(CLOCK_BOOTTIME), floor_s, accept_clock,
                        err, errlen) != 0) {
        char behind[24];
        snprintf(behind, sizeof behind, "%lld", (long long)(floor_s - wall_ms / 1000));
        log_event(LOG_ERROR, "clock.behind_trail", "behind_s", behind, NULL);
        return -1;
    }
    if (wall_ms / 1000 < floor_s) {
        char behind[24];
        snprintf(behind, sizeof behind, "%lld", (long long)(floor_s - wall_ms / 1000));
        log_event(LOG_WARN, "clock.behind_trail", "behind_s", behind, "effect",
                  accept_clock ? "the system clock is taken as it is (--accept-clock)"
                               : "the broker's time starts at the trail's last entry",
                  NULL);
    }
    b->now_s = b->clock.now_s;
    return 0;
}

broker_t *broker_new(const broker_options_t *o, char *err, size_t errlen)
{
    broker_t *b = calloc(1, sizeof *b);
    if (b == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    b->request_refusals.kind = &refusals_requests;
    b->undeliverable.kind = &refusals_undeliverable;
    b->acks_limited.kind = &refusals_acks_limited;
    if (!zmq_has("curve")) {
        snprintf(err, errlen, "this libzmq was built without CURVE support; refusing to run");
        goto fail;
    }
    if ((b->key = keys_load_secret(o->key_file, err, errlen)) == NULL)
        goto fail;
    if ((b->policy = policy_load(o->policy_path, err, errlen)) == NULL)
        goto fail;
    b->start_check = o->start_check;
    b->start_check_arg = o->start_check_arg;
    if ((b->policy_path = strdup(o->policy_path)) == NULL ||
        (b->store_path = strdup(o->store_path)) == NULL || (b->sessions = sessions_new()) == NULL ||
        (b->conns = conns_new()) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (broker_store_name_refused(o->store_path, err, errlen) != 0 ||
        (b->store = open_sealed_store(o->store_path, o->store_key_path, err, errlen)) == NULL ||
        broker_trail_check(b->store, b->key, o->store_path, err, errlen) != 0)
        goto fail;
    int64_t last_seq = store_delivery_last_seq(b->store);
    if (last_seq < 0) {
        snprintf(err, errlen, "cannot read the store: %s", store_errmsg(b->store));
        goto fail;
    }
    b->seq_at_start = b->seq_at_policy = (uint64_t)last_seq;
    b->push_limit_seq = UINT64_MAX; /* every commit so far is synced */
    if (broker_clock_start(b, o->accept_clock, err, errlen) != 0)
        goto fail;
    b->started_at = b->policy_loaded_at = b->clock.now_s;
    broker_log_policy_warnings(b->policy);
    b->reload.operators = broker_reload_count_operators(b->policy);
    b->reload.cases_unreachable = case_check_reachable(b); /* logged */
    case_ids_watch(b, broker_monotonic_ms());
    (void)purge_find(b); /* logged */
    b->ack_timeout_ms = o->ack_timeout_ms > 0 ? o->ack_timeout_ms : SCHAKEL_DEFAULT_ACK_TIMEOUT_MS;
    b->sync_always = o->sync_always;
    b->publish_rate = o->publish_rate > 0 ? o->publish_rate : SCHAKEL_DEFAULT_PUBLISH_RATE;
    b->max_connections =
        o->max_connections > 0 ? o->max_connections : SCHAKEL_DEFAULT_MAX_CONNECTIONS;
    b->max_handshakes = o->max_handshakes > 0 ? o->max_handshakes : SCHAKEL_DEFAULT_MAX_HANDSHAKES;
    b->case_opens_per_hour =
        o->case_opens_per_hour > 0 ? o->case_opens_per_hour : SCHAKEL_DEFAULT_CASE_OPENS_PER_HOUR;
    uint64_t partner_opens = (uint64_t)b->case_opens_per_hour * SCHAKEL_CASE_OPENS_PARTNER_FACTOR;
    if (partner_opens > SCHAKEL_MAX_CASE_OPENS_PARTNER_CAP)
        partner_opens = SCHAKEL_MAX_CASE_OPENS_PARTNER_CAP;
    b->case_opens_per_hour_per_partner = o->case_opens_per_hour_per_partner > 0
                                             ? o->case_opens_per_hour_per_partner
                                             : (uint32_t)partner_opens;
    b->max_principal_queued = o->max_principal_queued > 0 ? (size_t)o->max_principal_queued
                                                          : SCHAKEL_DEFAULT_PRINCIPAL_QUEUED_BYTES;
    b->unknown_ack_rate =
        o->unknown_ack_rate > 0 ? o->unknown_ack_rate : SCHAKEL_DEFAULT_UNKNOWN_ACK_RATE;
    space_init(&b->space, o->store_min_free, o->max_partner_stored);
    space_measure(b, 1); /* a store below its floor from the start is said at once */
    b->idle_timeout_ms =
        o->idle_timeout_ms > 0 ? o->idle_timeout_ms : SCHAKEL_DEFAULT_IDLE_TIMEOUT_MS;
    b->max_silent = o->max_silent > 0 ? o->max_silent : SCHAKEL_DEFAULT_MAX_SILENT;
    b->idempotency_s =
        (o->idempotency_ms > 0 ? o->idempotency_ms : SCHAKEL_DEFAULT_IDEMPOTENCY_MS) / 1000;
    b->max_window = o->max_window > 0 && o->max_window < SCHAKEL_MAX_WINDOW ? o->max_window
                                                                            : SCHAKEL_MAX_WINDOW;
    if ((b->ctx = zmq_ctx_new()) == NULL) {
        snprintf(err, errlen, "cannot create a ZMQ context: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    /* The ZAP handler must exist before the CURVE socket binds. */
    if ((b->zap = zap_new(b->ctx, err, errlen)) == NULL)
        goto fail;
    b->router = zmq_socket(b->ctx, ZMQ_ROUTER);
    if (b->router == NULL ||
        broker_configure_router(b->router, b->key, ZAP_DOMAIN_PARTNERS,
                                SCHAKEL_ZMTP_HEARTBEAT_TIMEOUT_MS) != 0 ||
        zmq_bind(b->router, o->listen) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", o->listen, zmq_strerror(zmq_errno()));
        goto fail;
    }
    router_events_open(b);
    if (b->router_events != NULL && !conns_cookies_supported())
        log_event(LOG_WARN, "connections.untracked", "why",
                  "this kernel gives sockets no cookie (SO_COOKIE)", "effect",
                  "connections that send nothing, or over a principal's cap, are not closed", NULL);
    size_t len = sizeof b->endpoint;
    if (zmq_getsockopt(b->router, ZMQ_LAST_ENDPOINT, b->endpoint, &len) != 0) {
        snprintf(err, errlen, "cannot read the bound endpoint: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (o->admin_listen != NULL &&
        (b->admin = admin_new(b->ctx, b->key, o->admin_listen, o->store_path,
                              o->admin_heartbeat_timeout_ms > 0 ? (int)o->admin_heartbeat_timeout_ms
                                                                : SCHAKEL_ZMTP_HEARTBEAT_TIMEOUT_MS,
                              err, errlen)) == NULL)
        goto fail;
    if ((b->metrics = metrics_new(o->metrics_listen, o->store_path, o->version, err, errlen)) ==
        NULL)
        goto fail;
    /* The trail notes each start (key, policy, version), once the broker
     * holds its endpoints: a start that cannot listen leaves no entry. If
     * it cannot be written the broker starts all the same: every action
     * then needs an entry of its own and is refused while none can be
     * written. */
    (void)record_started(b);
    /* Rows the schema migration set aside, at this start or at an opening
     * that could not record them. The broker does not start before its
     * trail names them: it would send a recipient what follows them, a
     * gap nothing explains. A failure leaves them to be found again at
     * the next start (store_set_aside_unrecorded). */
    if (record_set_aside_unrecorded(b) != 0) {
        snprintf(err, errlen,
                 "cannot record the deliveries the schema migration set aside"
                 " (delivery.set_aside): %s",
                 store_errmsg(b->store));
        goto fail;
    }
    if (store_sync_failed(b->store)) {
        snprintf(err, errlen, "the store could not sync its first commit: %s",
                 store_errmsg(b->store));
        goto fail;
    }
    return b;
fail:
    broker_destroy(&b);
    return NULL;
}

void broker_destroy(broker_t **bp)
{
    if (bp == NULL || *bp == NULL)
        return;
    broker_t *b = *bp;
    metrics_destroy(&b->metrics); /* stops the HTTP thread first */
    record_release(b);
    purge_release(b);
    store_syncer_stop(&b->syncer);
    broker_tickets_drop(b); /* never synced: nothing of them may be claimed */
    free(b->tickets);
    deliver_kept_destroy(&b->kept);
    broker_free_replies(b->replies, b->n_replies);
    connevents_close(b->router, &b->router_events);
    conns_destroy(&b->conns);
    if (b->router != NULL)
        zmq_close(b->router);
    admin_destroy(&b->admin);
    zap_destroy(&b->zap);
    if (b->ctx != NULL)
        zmq_ctx_term(b->ctx);
    sessions_destroy(&b->sessions);
    store_close(&b->store);
    policy_destroy(&b->policy_pending);
    policy_destroy(&b->policy);
    free(b->policy_path);
    free(b->store_path);
    keys_destroy(&b->key);
    free(b);
    *bp = NULL;
}
