/*
 * broker.c — the event loop: receive, dispatch, commit, reply, push.
 *
 * Trusts only the ZAP User-Id for identity; every frame goes through the
 * wire module before anything else looks at it. A bad frame from a client
 * is answered Rejected and the loop carries on; a broken invariant or a
 * dead socket is fatal (the supervisor restarts us; nothing acknowledged
 * is lost because nothing is acknowledged before its commit).
 */
#include "broker.h"
#include "plural.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
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
#include "case.h"
#include "connevents.h"
#include "log.h"
#include "purge.h"
#include "record.h"
#include "signals.h"
#include "storefile.h"

static size_t reload_count_operators(const policy_t *policy);
static void log_policy_warnings(const policy_t *policy);
static int reload_refused(broker_t *b, const char *requested_by, const char *err);

static int64_t clock_ms(clockid_t which)
{
    struct timespec ts;
    clock_gettime(which, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t monotonic_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

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

/* Frames of a closed connection may still be read after its close event
 * (libzmq keeps what it had received), and must not make a session, nor
 * take a principal's receiving from its live connection. */
int broker_connection_closed(const broker_t *b, int fd)
{
    return b->conns != NULL && conns_is_closed(b->conns, fd);
}

/* Every connection event so far: a session whose connection closed (or
 * whose socket number a new connection now has) goes. Non-blocking. */
void broker_connections_drain(broker_t *b)
{
    uint16_t id;
    int32_t fd;
    while (connevents_next(b->router_events, &id, &fd)) {
        if ((id == ZMQ_EVENT_DISCONNECTED || id == ZMQ_EVENT_ACCEPTED) && fd >= 0) {
            (void)sessions_drop_fd(b->sessions, fd);
            if (id == ZMQ_EVENT_DISCONNECTED)
                conns_closed(b->conns, fd);
            else
                conns_opened(b->conns, fd, monotonic_ms());
        }
    }
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
    int64_t wall_ms = clock_ms(CLOCK_REALTIME);
    if (wallclock_start(&b->clock, wall_ms, clock_ms(CLOCK_BOOTTIME), floor_s, accept_clock, err,
                        errlen) != 0) {
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
    log_policy_warnings(b->policy);
    b->reload.operators = reload_count_operators(b->policy);
    b->reload.cases_unreachable = case_check_reachable(b); /* logged */
    case_ids_watch(b, monotonic_ms());
    (void)purge_find(b);           /* logged */
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

static void tickets_drop(broker_t *b);
static void free_replies(pending_reply_t *replies, size_t n);

void broker_destroy(broker_t **bp)
{
    if (bp == NULL || *bp == NULL)
        return;
    broker_t *b = *bp;
    metrics_destroy(&b->metrics); /* stops the HTTP thread first */
    record_release(b);
    purge_release(b);
    store_syncer_stop(&b->syncer);
    tickets_drop(b); /* never synced: nothing of them may be claimed */
    free(b->tickets);
    deliver_kept_destroy(&b->kept);
    free_replies(b->replies, b->n_replies);
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

/* ------------------------------------------------------------ replies */

int broker_queue_reply(broker_t *b, const session_t *session, uint8_t *frame, size_t frame_len,
                       const uint8_t *accept_message_id)
{
    if (b->n_replies == b->cap_replies) {
        size_t cap = b->cap_replies ? b->cap_replies * 2 : 64;
        pending_reply_t *grown = realloc(b->replies, cap * sizeof *grown);
        if (grown == NULL) {
            free(frame);
            return -1;
        }
        b->replies = grown;
        b->cap_replies = cap;
    }
    pending_reply_t *r = &b->replies[b->n_replies++];
    memcpy(r->routing_id, session->routing_id, session->routing_len);
    r->routing_len = session->routing_len;
    strcpy(r->principal, session->principal);
    memcpy(r->key, session->key, sizeof r->key);
    r->policy_generation = b->policy_generation;
    r->frame = frame;
    r->frame_len = frame_len;
    r->queue = sendq_hold(session->queue);
    r->queued_len = frame_len;
    sendq_add(r->queue, frame_len, 0);
    r->is_accept = accept_message_id != NULL;
    r->is_gated = 0;
    r->view_check = NULL;
    r->is_refusal = 0;
    if (accept_message_id != NULL)
        memcpy(r->message_id, accept_message_id, SCHAKEL_MESSAGE_ID_BYTES);
    return 0;
}

int broker_queue_gated_reply(broker_t *b, const session_t *session, uint8_t *frame,
                             size_t frame_len, struct case_view_check *check)
{
    if (broker_queue_reply(b, session, frame, frame_len, NULL) != 0) {
        case_view_check_free(&check);
        return -1;
    }
    b->replies[b->n_replies - 1].is_gated = 1;
    b->replies[b->n_replies - 1].view_check = check;
    return 0;
}

static uint8_t *encode_rejected(Schakel__Reason reason, const char *text, const uint8_t *message_id,
                                int item_index, uint64_t seq, size_t *len)
{
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    Schakel__Rejected rejected = SCHAKEL__REJECTED__INIT;
    rejected.has_reason = 1;
    rejected.reason = reason;
    rejected.text = (char *)(uintptr_t)text;
    rejected.has_item_index = 1;
    rejected.item_index = item_index;
    if (message_id != NULL) {
        rejected.has_message_id = 1;
        rejected.message_id.data = (uint8_t *)(uintptr_t)message_id;
        rejected.message_id.len = SCHAKEL_MESSAGE_ID_BYTES;
    }
    if (seq != 0) {
        rejected.has_seq = 1;
        rejected.seq = seq;
    }
    frame.body_case = SCHAKEL__FRAME__BODY_REJECTED;
    frame.rejected = &rejected;
    return wire_encode_frame(&frame, len);
}

/* broker_reject, with its log line (`logged`) or without. */
static void reject(broker_t *b, const session_t *session, Schakel__Reason reason, const char *text,
                   const uint8_t *message_id, int item_index, uint64_t seq, int logged)
{
    size_t len = 0;
    metrics_refused(b, reason);
    sessions_count_refusal(b->sessions, session->principal);
    int recorded = refusals_take(&b->request_refusals, session->principal,
                                 b->now_s > 0 ? b->now_s : (int64_t)time(NULL));
    if (recorded && logged)
        record_refused(b, session->principal, message_id, reason, text, item_index);
    else if (recorded)
        (void)record_refused_entry(b, session->principal, message_id, reason, text, item_index);
    else if (logged)
        record_refused_counted(session->principal, message_id, reason, text, item_index);
    uint8_t *frame = encode_rejected(reason, text, message_id, item_index, seq, &len);
    if (frame == NULL || broker_queue_reply(b, session, frame, len, NULL) != 0) {
        log_event(LOG_ERROR, "reply.dropped", "principal", session->principal, "why",
                  "out of memory", NULL);
        return;
    }
    pending_reply_t *r = &b->replies[b->n_replies - 1];
    r->is_refusal = recorded;
    r->has_message_id = message_id != NULL;
    if (message_id != NULL)
        memcpy(r->message_id, message_id, SCHAKEL_MESSAGE_ID_BYTES);
    r->reason = reason;
    r->item_index = item_index;
    snprintf(r->text, sizeof r->text, "%s", text != NULL ? text : "");
}

void broker_reject(broker_t *b, const session_t *session, Schakel__Reason reason, const char *text,
                   const uint8_t *message_id, int item_index, uint64_t seq)
{
    reject(b, session, reason, text, message_id, item_index, seq, 1);
}

void broker_reject_unlogged(broker_t *b, const session_t *session, Schakel__Reason reason,
                            const char *text, uint64_t seq)
{
    reject(b, session, reason, text, NULL, -1, seq, 0);
}

/* What broker_send puts before a frame body it hands to libzmq: the
 * body's length, the count it is in and whether it is a delivery's. 32
 * bytes on LP64, which keeps the body as aligned as malloc's own. */
typedef struct send_head {
    sendq_t *queue;
    size_t len;
    size_t push;
    size_t unused;
} send_head_t;

/* libzmq's free function for a frame body handed over by broker_send: the
 * body may be plaintext (a delivery), and libzmq frees it on its I/O
 * thread once CURVE has encrypted it (the buffer its encryption copies the
 * plaintext into is libzmq's, and is not wiped), or when the connection's
 * queue is dropped. It leaves the connection's count then (sendq.h: atomic,
 * and held by the frame, so it may outlive its session), counted dropped
 * if the count watches a connection that has closed (sendq_freed). */
static void broker_wipe_free(void *data, void *hint)
{
    (void)hint;
    send_head_t *head = (send_head_t *)(void *)((uint8_t *)data - sizeof(send_head_t));
    sodium_memzero(data, head->len);
    sendq_freed(head->queue, head->len, head->push != 0);
    sendq_release(&head->queue);
    free(head);
}

int broker_send(broker_t *b, sendq_t *queue, int push, const uint8_t *routing_id,
                size_t routing_len, const uint8_t *frame, size_t frame_len)
{
    return broker_send_on(b->router, queue, push, routing_id, routing_len, frame, frame_len);
}

int broker_send_on(void *socket, sendq_t *queue, int push, const uint8_t *routing_id,
                   size_t routing_len, const uint8_t *frame, size_t frame_len)
{
    /* The body goes over as a message of our own, wiped when libzmq frees
     * it: zmq_send would copy it into memory that is freed unwiped. */
    send_head_t *head = malloc(sizeof *head + (frame_len > 0 ? frame_len : 1));
    if (head == NULL) {
        errno = ENOMEM;
        return -1;
    }
    uint8_t *copy = (uint8_t *)(head + 1);
    head->len = frame_len;
    head->push = push != 0;
    head->unused = 0;
    head->queue = sendq_hold(queue);
    sendq_add(queue, frame_len, push);
    if (frame_len > 0)
        memcpy(copy, frame, frame_len);
    zmq_msg_t body;
    if (zmq_msg_init_data(&body, copy, frame_len, broker_wipe_free, NULL) != 0) {
        broker_wipe_free(copy, NULL);
        return -1;
    }
    if (zmq_send(socket, routing_id, routing_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        int err = zmq_errno();
        zmq_msg_close(&body); /* wipes and frees the copy */
        errno = err;
        return -1;
    }
    /* With ROUTER_MANDATORY the routing frame is only accepted if the whole
     * message can be queued, so the body cannot fail halfway for EAGAIN. */
    if (zmq_msg_send(&body, socket, ZMQ_DONTWAIT) < 0) {
        int err = zmq_errno();
        zmq_msg_close(&body);
        errno = err;
        return -1;
    }
    return 0;
}

Schakel__Reason broker_store_failure_reason(const broker_t *b)
{
    return store_last_error_is_unavailable(b->store) ? SCHAKEL__REASON__UNAVAILABLE
                                                     : SCHAKEL__REASON__INTERNAL_ERROR;
}

/* After the commit: make every queued reply what it must say. If the
 * commit failed, every Accepted becomes Rejected (UNAVAILABLE or
 * INTERNAL_ERROR): nothing of it was stored, and the client retries with
 * the same message id. Nothing is sent here (send_replies). */
static void settle_replies(broker_t *b, int committed, Schakel__Reason failure)
{
    for (size_t i = 0; i < b->n_replies && !committed; i++) {
        pending_reply_t *r = &b->replies[i];
        if (r->is_accept) {
            /* A failed sync of a commit leaves the outcome unknown (the
             * frames are in the WAL, perhaps on disk): the broker stops,
             * and a repeat after its restart is answered as a duplicate if
             * the publish was stored after all. */
            const char *text =
                b->sync_failed
                    ? "the broker could not make this publish durable and is stopping; it may "
                      "have been stored: publish again with the same message id once it is "
                      "back (a stored one is answered as a duplicate)"
                    : "the broker could not store this publish; nothing was stored, publish "
                      "again with the same message id";
            size_t len = 0;
            uint8_t *frame = encode_rejected(failure, text, r->message_id, -1, 0, &len);
            /* Its acceptance was recorded before the commit: record that the
             * turn was rolled back and this publish refused after all
             * (carried: the next turn may roll back too). */
            metrics_refused(b, failure);
            record_refused_carried(b, r->principal, r->message_id, failure, text, -1, 1);
            free(r->frame);
            r->frame = frame;
            r->frame_len = len;
        } else if (r->is_gated) {
            static const char text[] = "the broker could not record this request; ask again";
            size_t len = 0;
            uint8_t *frame = encode_rejected(failure, text, NULL, -1, 0, &len);
            metrics_refused(b, failure);
            /* its case.viewed entries went with the turn; the refusal stands */
            record_refused_carried(b, r->principal, NULL, failure, text, -1, 1);
            sodium_memzero(r->frame, r->frame_len); /* a view: case contents */
            free(r->frame);
            r->frame = frame;
            r->frame_len = len;
            case_view_check_free(&r->view_check); /* no view any more */
        } else if (r->is_refusal) {
            /* Refused all the same, but its entry went with the rollback:
             * written again, and kept until the trail holds it (record.h). */
            record_refused_carried(b, r->principal, r->has_message_id ? r->message_id : NULL,
                                   r->reason, r->text, r->item_index, 0);
        }
    }
}

/* A reply may carry contents (a CaseView: titles, notes, a linked
 * signal's fields): wiped when freed, sent or not. */
static void reply_frame_free(pending_reply_t *r)
{
    if (r->frame != NULL) {
        sodium_memzero(r->frame, r->frame_len);
        free(r->frame);
    }
    r->frame = NULL;
    case_view_check_free(&r->view_check);
    sendq_sub(r->queue, r->queued_len, 0); /* broker_send counted its own copy */
    r->queued_len = 0;
    sendq_release(&r->queue);
}

/* An answer that could not be queued: the client is gone or does not
 * read; it will retry with the same message id and get the same answer
 * from the store. Said in full a few times per principal a minute, the
 * rest summed up (undeliverable_summary): a client that reads nothing
 * could otherwise have the broker write a log line per frame it sends. */
static void reply_undeliverable(broker_t *b, const pending_reply_t *r, int err, const char *why)
{
    int64_t now_s = b->now_s > 0 ? b->now_s : (int64_t)time(NULL);
    char summary[1024];
    if (refusals_summary(&b->undeliverable, now_s, 0, summary, sizeof summary) > 0)
        log_event(LOG_WARN, "reply.undeliverable_summary", "detail", summary, NULL);
    if (refusals_take(&b->undeliverable, r->principal, now_s)) {
        if (why != NULL)
            log_event(LOG_WARN, "reply.undeliverable", "principal", r->principal, "why", why, NULL);
        else
            log_event(LOG_WARN, "reply.undeliverable", "principal", r->principal, "errno",
                      zmq_strerror(err), NULL);
    }
    b->stats.replies_undeliverable++;
}

/* The window of undeliverable answers has ended (or the broker stops:
 * force): its summary line, if any were only counted. */
static void undeliverable_summary(broker_t *b, int force)
{
    char summary[1024];
    int64_t now_s = b->now_s > 0 ? b->now_s : (int64_t)time(NULL);
    if (refusals_summary(&b->undeliverable, now_s, force, summary, sizeof summary) > 0)
        log_event(LOG_WARN, "reply.undeliverable_summary", "detail", summary, NULL);
}

static int principal_key_revoked(const policy_t *policy, const char *principal, const char *key);

/* A reply queued before a reload (one that waited for its sync, or one
 * of the turn whose operator request reloaded) whose principal or key the
 * policy in force, or a reload pending, no longer registers: not sent.
 * Its answer was decided before, but it may carry case contents (a
 * CaseView; one whose key stays is decided again instead,
 * reply_view_decide_again). One call to the policy per reply queued before a reload,
 * none otherwise. */
static int reply_revoked(const broker_t *b, const pending_reply_t *r)
{
    if (r->policy_generation == b->policy_generation)
        return 0;
    return principal_key_revoked(b->policy, r->principal, r->key) ||
           (b->policy_pending != NULL &&
            principal_key_revoked(b->policy_pending, r->principal, r->key));
}

/* A CaseView decided before a reload, leaving now: decided again under
 * the policy in force (case_view_decide_again). One the policy no longer
 * shows as it is becomes the refusal the asker gets instead, in its place
 * among the connection's answers (a refusal names no request: answers
 * come in the order of the queries). The view's frame is wiped. Cheap:
 * a few look-ups in the policy per view decided before a reload, nothing
 * otherwise. */
static void reply_view_decide_again(broker_t *b, pending_reply_t *r)
{
    Schakel__Reason reason = SCHAKEL__REASON__REASON_NONE;
    char text[SCHAKEL_MAX_REJECT_TEXT];
    if (r->frame == NULL || r->view_check == NULL || r->policy_generation == b->policy_generation ||
        case_view_decide_again(b, r->principal, r->view_check, &reason, text, sizeof text))
        return;
    size_t len = 0;
    uint8_t *frame = encode_rejected(reason, text, NULL, -1, 0, &len);
    if (frame == NULL)
        log_event(LOG_ERROR, "reply.dropped", "principal", r->principal, "why", "out of memory",
                  NULL);
    sodium_memzero(r->frame, r->frame_len);
    free(r->frame);
    r->frame = frame; /* NULL: nothing is sent */
    r->frame_len = len;
    case_view_check_free(&r->view_check);
}

static void send_replies(broker_t *b, pending_reply_t *replies, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        pending_reply_t *r = &replies[i];
        if (r->frame != NULL && reply_revoked(b, r)) {
            /* a view's entries said shown: the trail says it was not */
            if (r->view_check != NULL)
                case_view_withheld(b, r->principal, r->view_check, SCHAKEL__REASON__NOT_PERMITTED);
            reply_undeliverable(b, r, 0, "its key was revoked by a reload after it was decided");
        } else {
            reply_view_decide_again(b, r);
            if (r->frame != NULL && broker_send(b, r->queue, 0, r->routing_id, r->routing_len,
                                                r->frame, r->frame_len) != 0)
                reply_undeliverable(b, r, zmq_errno(), NULL);
        }
        reply_frame_free(r);
    }
}

static void free_replies(pending_reply_t *replies, size_t n)
{
    for (size_t i = 0; i < n; i++)
        reply_frame_free(&replies[i]);
    free(replies);
}

/* ------------------------------------------------------------ syncing */

/* Tickets up to `synced` are on disk (all of them when all is set: a
 * synced commit covered them): their answers go out, in turn order, and
 * their deliveries may be pushed. */
static void tickets_release(broker_t *b, uint64_t synced, int all)
{
    size_t done = 0;
    uint64_t loop_syncs = store_loop_syncs(b->store); /* a sync in the loop covers them too */
    while (done < b->n_tickets &&
           (all || b->tickets[done].ticket <= synced || b->tickets[done].loop_syncs < loop_syncs)) {
        sync_ticket_t *t = &b->tickets[done++];
        send_replies(b, t->replies, t->n_replies);
        free(t->replies);
        b->held_replies -= t->n_replies;
        if (t->delivery_high > b->durable_high)
            b->durable_high = t->delivery_high;
    }
    if (done > 0 && done < b->n_tickets)
        memmove(b->tickets, b->tickets + done, (b->n_tickets - done) * sizeof *b->tickets);
    b->n_tickets -= done;
    if (all && store_delivery_high(b->store) > b->durable_high)
        b->durable_high = store_delivery_high(b->store);
    b->push_limit_seq = b->n_tickets > 0 ? b->durable_high : UINT64_MAX;
}

/* After a failed sync nothing unsynced may be claimed: the held answers
 * are dropped (their clients retry) and the loop stops. */
static void tickets_drop(broker_t *b)
{
    for (size_t i = 0; i < b->n_tickets; i++)
        free_replies(b->tickets[i].replies, b->tickets[i].n_replies);
    b->n_tickets = 0;
    b->held_replies = 0;
}

static void syncer_failed(broker_t *b)
{
    log_event(LOG_ERROR, "store.sync_failed", "error", store_errmsg(b->store), NULL);
    tickets_drop(b);
    b->sync_failed = 1; /* broker_run stops at the end of this turn */
}

/* What the syncer finished since the last look (non-blocking). */
static void tickets_collect(broker_t *b)
{
    uint64_t synced = 0;
    if (b->syncer == NULL)
        return;
    if (store_syncer_collect(b->syncer, &synced) != 0)
        syncer_failed(b);
    else
        tickets_release(b, synced, 0);
}

/* Wait for every held turn (a stop, or a ticket that cannot be queued). */
static void tickets_drain(broker_t *b)
{
    uint64_t synced = 0;
    if (b->syncer == NULL || b->n_tickets == 0)
        return;
    if (store_syncer_wait(b->syncer, b->tickets[b->n_tickets - 1].ticket, &synced) != 0)
        syncer_failed(b);
    else
        tickets_release(b, synced, 0);
}

/* No memory to queue a ticket: wait for its sync here and answer. */
static void tickets_hold_failed(broker_t *b, uint64_t ticket)
{
    uint64_t synced = 0;
    if (store_syncer_wait(b->syncer, ticket, &synced) != 0) {
        syncer_failed(b);
        free_replies(b->replies, b->n_replies);
        b->replies = NULL;
        b->n_replies = b->cap_replies = 0;
        return;
    }
    tickets_release(b, synced, 1); /* every commit so far is on disk */
    send_replies(b, b->replies, b->n_replies);
    b->n_replies = 0;
}

/* The turn's answers wait behind `ticket` (and every turn before it). */
static void tickets_hold(broker_t *b, uint64_t ticket)
{
    if (b->n_tickets == b->cap_tickets) {
        size_t cap = b->cap_tickets ? b->cap_tickets * 2 : 16;
        sync_ticket_t *grown = realloc(b->tickets, cap * sizeof *grown);
        if (grown == NULL) {
            /* no room to wait in: wait here, then answer at once */
            tickets_hold_failed(b, ticket);
            return;
        }
        b->tickets = grown;
        b->cap_tickets = cap;
    }
    sync_ticket_t *t = &b->tickets[b->n_tickets++];
    t->ticket = ticket;
    t->loop_syncs = store_loop_syncs(b->store);
    t->delivery_high = store_delivery_high(b->store);
    t->replies = b->replies;
    t->n_replies = b->n_replies;
    b->held_replies += b->n_replies;
    b->replies = NULL;
    b->n_replies = b->cap_replies = 0;
    b->push_limit_seq = b->durable_high;
}

/* A turn that needs no sync of its own (acks only, nothing written, rolled
 * back) while others wait: its answers go behind theirs, in the last
 * ticket. */
static void tickets_append(broker_t *b)
{
    if (b->n_replies == 0)
        return;
    sync_ticket_t *t = &b->tickets[b->n_tickets - 1];
    pending_reply_t *grown = realloc(t->replies, (t->n_replies + b->n_replies) * sizeof *grown);
    if (grown == NULL) {
        tickets_hold_failed(b, t->ticket); /* answers everything once it is synced */
        return;
    }
    memcpy(grown + t->n_replies, b->replies, b->n_replies * sizeof *grown);
    t->replies = grown;
    t->n_replies += b->n_replies;
    b->held_replies += b->n_replies;
    b->n_replies = 0; /* the frames are the ticket's now; the array is reused */
}

/* ------------------------------------------------------------ heartbeat */

/* The answer to a client's Heartbeat: who it is, its backlog, the store
 * epoch with its floor seq when it asked for it, and its heartbeat_id when
 * it named one (a client from before the fields refuses a frame with a
 * field it does not know). The id goes back only to the session that sent
 * it, as it came (at most SCHAKEL_MAX_HEARTBEAT_ID_BYTES, wire.c). */
static void heartbeat_reply(broker_t *b, const session_t *session,
                            const policy_principal_t *principal, const Schakel__Heartbeat *asked)
{
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    Schakel__Heartbeat hb = SCHAKEL__HEARTBEAT__INIT;
    uint8_t epoch[SCHAKEL_STORE_EPOCH_BYTES];
    int64_t backlog = store_mailbox_count(b->store, principal->id);
    hb.has_time = 1;
    hb.time = b->clock.now_ms; /* the broker's time, as expires_at and accepted_at */
    hb.principal = principal->id;
    hb.partner = principal->partner->id;
    hb.role = (char *)(uintptr_t)policy_role_name(principal->role);
    if (backlog >= 0) {
        hb.has_backlog = 1;
        hb.backlog = (uint64_t)backlog;
    }
    if (asked->has_store_epoch) {
        store_epoch(b->store, epoch);
        hb.has_store_epoch = 1;
        hb.store_epoch.data = epoch;
        hb.store_epoch.len = sizeof epoch;
        /* absent when unknown (a restore without the replaced store's
         * counters): the client then keeps nothing it recorded */
        hb.has_store_epoch_floor = store_epoch_floor(b->store, &hb.store_epoch_floor);
    }
    if (asked->has_heartbeat_id) {
        hb.has_heartbeat_id = 1;
        hb.heartbeat_id = asked->heartbeat_id;
    }
    frame.body_case = SCHAKEL__FRAME__BODY_HEARTBEAT;
    frame.heartbeat = &hb;
    size_t len = 0;
    uint8_t *bytes = wire_encode_frame(&frame, &len);
    if (bytes != NULL)
        broker_queue_reply(b, session, bytes, len, NULL);
}

/* ------------------------------------------------------------ dispatch */

static void dispatch(broker_t *b, session_t *session, const policy_principal_t *principal,
                     const uint8_t *data, size_t len)
{
    wire_error_t err = {0};
    Schakel__Frame *frame = wire_decode_frame(data, len, &err);
    if (frame == NULL) {
        broker_reject(b, session, err.reason, err.text, err.has_message_id ? err.message_id : NULL,
                      err.item_index, 0);
        return;
    }
    /* Refusals, like every write, clear it through their audit entry
     * (record.c); a frame of another kind clears it whatever it writes. */
    if (frame->body_case != SCHAKEL__FRAME__BODY_ACK &&
        frame->body_case != SCHAKEL__FRAME__BODY_FLOW &&
        frame->body_case != SCHAKEL__FRAME__BODY_HEARTBEAT)
        b->turn_acks_only = 0;
    /* the store work a frame can ask for besides itself (SCHAKEL_MAX_TURN_WORK) */
    if (frame->body_case == SCHAKEL__FRAME__BODY_PUBLISH)
        b->turn_work += (uint32_t)frame->publish->n_items;
    else if (frame->body_case == SCHAKEL__FRAME__BODY_ACK)
        b->turn_work += (uint32_t)frame->ack->n_seqs;
    switch (frame->body_case) {
    case SCHAKEL__FRAME__BODY_PUBLISH:
        publish_handle(b, session, principal, frame->publish);
        break;
    case SCHAKEL__FRAME__BODY_ACK:
        deliver_ack(b, session, frame->ack);
        break;
    case SCHAKEL__FRAME__BODY_FLOW:
        deliver_flow(b, session, frame->flow);
        break;
    case SCHAKEL__FRAME__BODY_HEARTBEAT:
        heartbeat_reply(b, session, principal, frame->heartbeat);
        break;
    case SCHAKEL__FRAME__BODY_CASE_PUBLISH:
        case_publish_handle(b, session, principal, frame->case_publish);
        break;
    case SCHAKEL__FRAME__BODY_CASE_QUERY:
        case_query_handle(b, session, principal, frame->case_query);
        break;
    case SCHAKEL__FRAME__BODY_ADMIN_REQUEST:
        broker_reject(b, session, SCHAKEL__REASON__UNEXPECTED_BODY,
                      "admin requests go to the admin endpoint, from operator keys", NULL, -1, 0);
        break;
    default:
        broker_reject(b, session, SCHAKEL__REASON__UNEXPECTED_BODY,
                      "this body is only ever sent by the broker", NULL, -1, 0);
        break;
    }
    wire_frame_free(&frame);
}

/* The key a connection authenticated with must still be its principal's
 * key: a policy reload that replaces a key cuts off connections made with
 * the old one at their next frame (libzmq cannot close one ROUTER peer). */
static int key_still_registered(const session_t *session, const policy_principal_t *principal)
{
    char current[41];
    keys_public_z85(principal->curve_pk, current);
    return strcmp(session->key, current) == 0;
}

/* Answer a frame on a connection that gets no session. */
static void refuse_sessionless(broker_t *b, zmq_msg_t *routing, const char *principal,
                               Schakel__Reason reason, const char *text)
{
    session_t probe;
    memset(&probe, 0, sizeof probe);
    size_t len = zmq_msg_size(routing);
    if (len == 0 || len > sizeof probe.routing_id || strlen(principal) >= sizeof probe.principal)
        return;
    memcpy(probe.routing_id, zmq_msg_data(routing), len);
    probe.routing_len = len;
    strcpy(probe.principal, principal);
    broker_reject(b, &probe, reason, text, NULL, -1, 0);
}

/* A principal over its connection cap: answered on the new connection
 * (which gets no session) with TOO_MANY_CONNECTIONS. */
static void refuse_connection(broker_t *b, zmq_msg_t *routing, const char *principal)
{
    char text[128];
    snprintf(text, sizeof text, "this principal already has %u %s, the most the broker allows",
             b->max_connections, plural(b->max_connections, "connection", "connections"));
    refuse_sessionless(b, routing, principal, SCHAKEL__REASON__TOO_MANY_CONNECTIONS, text);
}

/* libzmq names a connection whose client set no routing id with 5 bytes,
 * the first 0 (PROTOCOL.md 3.2). A routing id a client chose itself could
 * be taken by another principal's client once the first disconnected, and
 * get what the broker still pushes to it: such a connection gets no
 * session. */
static int routing_id_generated(zmq_msg_t *routing)
{
    return zmq_msg_size(routing) == 5 && ((const uint8_t *)zmq_msg_data(routing))[0] == 0;
}

/* A received frame is plaintext once CURVE has opened it (a Publish's
 * items): wiped before libzmq frees it. (libzmq 4.3's CURVE decrypts in
 * place and moves the frame 17 bytes down: the last 17 bytes stay behind
 * the end, out of reach; docs/SECURITY.md.) */
static void msg_wipe_close(zmq_msg_t *msg)
{
    sodium_memzero(zmq_msg_data(msg), zmq_msg_size(msg));
    zmq_msg_close(msg);
}

static int session_revoked(const session_t *session, void *arg);

/* The first frame served on a connection whose key a reload revoked and a
 * later one registered again, or whose standby session the cap ended: its
 * session gets back the Flow that was dropped (conns_keep_flow), so a
 * receiver whose connection stayed open receives again, and a standby
 * takes over again when the receiving connection closes, without sending
 * Flow. */
static void restore_flow(broker_t *b, session_t *session, int fd)
{
    uint64_t order = 0;
    uint32_t window = 0;
    if (!conns_take_flow(b->conns, fd, &order, &window))
        return;
    receiver_t *r = sessions_restore_flow(b->sessions, session, order, window);
    if (r == NULL) {
        log_event(LOG_ERROR, "flow.refused", "principal", session->principal, "why",
                  "out of memory", NULL);
        return;
    }
    if (r->session == session)
        r->progress_ms = b->now_ms; /* a claim leaves the receiver's ack clock alone */
    log_event(LOG_INFO, "flow.restored", "principal", session->principal, "receiving",
              r->session == session ? "yes" : "no", NULL);
}

/* A standby session (a Flow of its own, another connection receiving)
 * ended at the principal's cap to make room keeps its claim with its
 * connection, which stays open: its next frame gives it back in its place
 * (restore_flow), so it takes over when the receiving one closes. */
static void keep_evicted_claim(broker_t *b)
{
    int fd = -1;
    uint64_t order = 0;
    uint32_t window = 0;
    if (sessions_take_evicted_claim(b->sessions, &fd, &order, &window))
        conns_keep_flow(b->conns, fd, order, window);
}

/* Receive one ROUTER message: routing id, then exactly one data frame.
 * Returns 1 when a message was handled, 0 when none was pending, -1 on a
 * socket error. */
static int receive_one(broker_t *b)
{
    zmq_msg_t routing, data;
    zmq_msg_init(&routing);
    if (zmq_msg_recv(&routing, b->router, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&routing);
        return zmq_errno() == EAGAIN ? 0 : -1;
    }
    zmq_msg_init(&data);
    int parts = 0;
    int more = zmq_msg_more(&routing);
    uint64_t wire_bytes = 0; /* of all its parts: the routing id is libzmq's own */
    while (more) {
        zmq_msg_t extra;
        zmq_msg_t *target = parts == 0 ? &data : &extra;
        if (parts > 0)
            zmq_msg_init(&extra);
        if (zmq_msg_recv(target, b->router, 0) < 0) {
            if (parts > 0)
                zmq_msg_close(&extra);
            break;
        }
        more = zmq_msg_more(target);
        wire_bytes += conns_frame_wire_bytes(zmq_msg_size(target));
        if (parts > 0)
            msg_wipe_close(&extra);
        parts++;
    }
    /* What closed and opened before this frame came, first: its socket
     * number is then the connection it came from (or a later one, whose
     * messages conns_took tells apart by routing id), and a session ends
     * with the connection it was bound to. */
    broker_connections_drain(b);
    if (parts > 0)
        conns_took(b->conns, zmq_msg_get(&data, ZMQ_SRCFD), zmq_msg_data(&routing),
                   zmq_msg_size(&routing), wire_bytes);
    const char *user_id = parts > 0 ? zmq_msg_gets(&data, "User-Id") : NULL;
    if (user_id == NULL) {
        /* CURVE with our ZAP handler always sets a User-Id; a message
         * without one cannot be attributed and is dropped. */
        log_event(LOG_ERROR, "frame.unattributed", NULL);
    } else if (!routing_id_generated(&routing)) {
        log_event(LOG_WARN, "session.refused", "principal", user_id, "why",
                  "the client set its own routing id", NULL);
        refuse_sessionless(b, &routing, user_id, SCHAKEL__REASON__NOT_PERMITTED,
                           "this connection set its own routing id (ZMQ_ROUTING_ID), which the "
                           "protocol forbids: connect without one (PROTOCOL.md 3.2)");
    } else {
        const policy_principal_t *principal = policy_principal_by_id(b->policy, user_id);
        const char *key = zmq_msg_gets(&data, ZAP_PROPERTY_KEY);
        int over_limit = 0, fd = zmq_msg_get(&data, ZMQ_SRCFD);
        session_t *session =
            sessions_touch(b->sessions, zmq_msg_data(&routing), zmq_msg_size(&routing), user_id,
                           key ? key : "", b->now_ms, b->max_connections, &over_limit);
        keep_evicted_claim(b);
        if (session != NULL && fd >= 0 && session->fd >= 0 && session->fd != fd) {
            /* the routing id is another connection's now: a new session */
            sessions_drop(b->sessions, session);
            session =
                sessions_touch(b->sessions, zmq_msg_data(&routing), zmq_msg_size(&routing), user_id,
                               key ? key : "", b->now_ms, b->max_connections, &over_limit);
        }
        if (session != NULL)
            session->fd = fd;
        keep_evicted_claim(b);
        if (over_limit) {
            refuse_connection(b, &routing, user_id);
        } else if (session == NULL) {
            log_event(LOG_ERROR, "session.refused", "principal", user_id, "why",
                      "out of memory or oversized routing id", NULL);
        } else if (principal == NULL || principal->role == ROLE_OPERATOR ||
                   !key_still_registered(session, principal) ||
                   (b->policy_pending != NULL &&
                    session_revoked(session, (void *)(uintptr_t)b->policy_pending))) {
            broker_reject(b, session, SCHAKEL__REASON__NOT_PERMITTED,
                          "this key is no longer registered for the partner endpoint", NULL, -1, 0);
            conns_revoked(b->conns, fd, b->now_ms);
            conns_keep_flow(b->conns, fd, session->flow_order, session->flow_window);
            /* The reply has its own copy of the routing id; the session and
             * any receiving state go, so nothing more is pushed to it. */
            sessions_drop(b->sessions, session);
        } else if (parts != 1) {
            broker_reject(b, session, SCHAKEL__REASON__TOO_MANY_FRAMES,
                          "send exactly one frame per message", NULL, -1, 0);
        } else {
            conns_used(b->conns, fd, b->now_ms, user_id, key ? key : "");
            if (session->flow_order == 0)
                restore_flow(b, session, fd);
            dispatch(b, session, principal, zmq_msg_data(&data), zmq_msg_size(&data));
        }
    }
    msg_wipe_close(&data);
    zmq_msg_close(&routing);
    return 1;
}

/* ------------------------------------------------------------ reload */

/* How often a reload pending for its record logs that it still is. */
#define RELOAD_RETRY_LOG_MS 60000

/* After a reload: the session's principal is gone, became an operator, or
 * now has another key than the one this connection authenticated with. */
static int session_revoked(const session_t *session, void *arg)
{
    return principal_key_revoked(arg, session->principal, session->key);
}

/* `principal` is gone from `policy`, became an operator, or (key not "")
 * has another key there than `key` (Z85). */
static int principal_key_revoked(const policy_t *policy, const char *principal, const char *key)
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

/* session_revoked under arg->policy; a revoked session's Flow is kept with
 * its connection (restore_flow). */
static int session_revoked_keep_flow(const session_t *session, void *arg)
{
    const reload_revocation_t *r = arg;
    if (!session_revoked(session, (void *)(uintptr_t)r->policy))
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
static size_t reload_count_operators(const policy_t *policy)
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
static void log_policy_warnings(const policy_t *policy)
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
    log_policy_warnings(b->policy);
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
    int64_t now = monotonic_ms();
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
                 "but what the new one revokes is revoked now, and the reload applies as soon "
                 "as its record can be written",
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
        b->pending_retry_ms = monotonic_ms() + 1000;
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
    b->reload.operators = reload_count_operators(b->policy);
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
static void broker_reload_retry(broker_t *b)
{
    /* a turn that just committed shows the store can be written: at once */
    if (b->policy_pending == NULL ||
        (monotonic_ms() < b->pending_retry_ms && !b->last_turn_committed_writes))
        return;
    char err[512], by[sizeof b->pending_by];
    snprintf(by, sizeof by, "%s", b->pending_by);
    if (reload_apply(b, b->policy_pending, by, err, sizeof err) >= 0) { /* logged either way */
        b->reload.failed = 0;
        b->reload.error[0] = '\0';
    }
}

/* ------------------------------------------------------------ loop */

/* More frames wait on the router: worth going on with while the disk
 * syncs. With nothing waiting, a sync in place answers sooner than a
 * hand-over to the sync thread and back (two wake-ups). */
static int frames_waiting(const broker_t *b)
{
    int events = 0;
    size_t len = sizeof events;
    return zmq_getsockopt(b->router, ZMQ_EVENTS, &events, &len) == 0 && (events & ZMQ_POLLIN);
}

/* A turn may commit without waiting for the disk when what it answers can
 * wait, and there is something to go on with meanwhile (frames_waiting;
 * config sync_thread: always hands over every turn, for disks whose fsync
 * is slow). Handshakes and operator requests act right after their commit
 * (zap_flush, admin_after_commit): a turn with those syncs in place. */
static int turn_can_defer(const broker_t *b)
{
    return b->syncer != NULL && b->n_tickets < SCHAKEL_MAX_SYNC_TICKETS &&
           !zap_has_pending(b->zap) && !admin_has_pending(b->admin) &&
           (b->sync_always || frames_waiting(b));
}

/* Commit the turn: synced in place, unsynced (acks only: claims nothing),
 * or deferred to the syncer (its answers and deliveries wait for the sync,
 * while the loop goes on). Answers leave in turn order. */
static int commit_turn(broker_t *b)
{
    int lost = store_transaction_lost(b->store);
    int committed = 1, wrote = b->turn_failed || lost || store_in_transaction(b->store);
    int deferred = 0;
    Schakel__Reason failure = SCHAKEL__REASON__INTERNAL_ERROR;
    if (b->turn_failed) {
        failure = b->turn_failure;
        store_rollback(b->store);
        committed = 0;
        b->turn_failed = 0;
    } else if (lost || store_in_transaction(b->store)) {
        deferred = !b->turn_acks_only && turn_can_defer(b);
        int rc = b->turn_acks_only || deferred ? store_commit_unsynced(b->store)
                                               : store_commit(b->store);
        if (rc != 0) {
            /* a transaction SQLite rolled back by itself fails here too: the
             * turn's answers must not claim its writes */
            failure = broker_store_failure_reason(b);
            log_event(LOG_ERROR, "store.commit_failed", "error", store_errmsg(b->store), NULL);
            store_rollback(b->store);
            committed = deferred = 0;
            if (store_sync_failed(b->store))
                b->sync_failed = 1; /* broker_run stops after this turn's answers */
        } else if (!b->turn_acks_only && !deferred) {
            tickets_release(b, 0, 1); /* this sync covered every turn before */
        }
    }
    if (committed && wrote) {
        if (b->turn_acks_only)
            b->stats.commits_unsynced++;
        else
            b->stats.commits_synced++;
    }
    /* The next turn's, until something but an ack writes: the entries
     * written from here on (refusals again after a rollback, handshake
     * decisions in zap_flush, operator actions) belong to it and make it a
     * synced one (record.c). */
    b->turn_acks_only = 1;
    b->last_turn_rolled_back = !committed;
    b->last_turn_committed_writes = committed && wrote;
    record_turn_settle(b, committed);
    purge_settle(b, committed);
    sessions_case_opens_settle(b->sessions, committed); /* a rolled-back open costs no budget */
    if (!committed)
        sessions_restart_receivers(b->sessions);
    deliver_kept_settle(b->kept, committed); /* the turn's kept items: usable, or wiped */
    settle_replies(b, committed, failure);
    if (deferred)
        tickets_hold(b, store_syncer_request(b->syncer));
    else if (b->n_tickets > 0 && !b->sync_failed)
        tickets_append(b); /* behind the turns before */
    else {
        send_replies(b, b->replies, b->n_replies);
        b->n_replies = 0;
    }
    /* Handshakes are admitted only now, and only if their records committed. */
    zap_flush(b->zap, committed, record_auth, b);
    /* Admin requests run only now: their records are committed (or the
     * turn was rolled back, and they are refused unexecuted). */
    if (b->admin != NULL)
        admin_after_commit(b->admin, b, committed);
    return !committed ? METRICS_TURN_ROLLED_BACK
           : wrote    ? METRICS_TURN_COMMITTED
                      : METRICS_TURN_IDLE;
}

void broker_fail_turn(broker_t *b)
{
    if (!b->turn_failed) {
        b->turn_failed = 1;
        b->turn_failure = broker_store_failure_reason(b);
    }
}

/* Expired bodies are overwritten in the database (secure_delete), but old
 * page images stay in the WAL until a checkpoint truncates it. */
static void checkpoint_if_due(broker_t *b)
{
    if (b->expired_since_checkpoint == 0 || b->now_ms < b->next_checkpoint_ms)
        return;
    b->next_checkpoint_ms = b->now_ms + SCHAKEL_CHECKPOINT_IVL_MS;
    if (store_checkpoint(b->store) == 0)
        b->expired_since_checkpoint = 0;
    else /* a reader (a backup) holds the WAL: try again later */
        log_event(LOG_WARN, "store.checkpoint_deferred", "error", store_errmsg(b->store), NULL);
}

/* This turn's clocks. A step of the system clock is said when it is
 * found and once a minute while it lasts; the broker's time goes on
 * (wallclock.h). */
static void clock_turn(broker_t *b)
{
    wallclock_change_t change;
    b->now_ms = monotonic_ms();
    b->now_s =
        wallclock_update(&b->clock, clock_ms(CLOCK_REALTIME), clock_ms(CLOCK_BOOTTIME), &change);
    if (change == WALLCLOCK_AGREES) {
        log_event(LOG_INFO, "clock.agrees", "effect", "the broker follows the system clock again",
                  NULL);
    } else if (change == WALLCLOCK_HELD) {
        char offset[24];
        snprintf(offset, sizeof offset, "%+lld", (long long)(b->clock.offset_ms / 1000));
        log_event(LOG_WARN, "clock.stepped_back", "offset_s", offset, "effect",
                  "followed: the broker's time holds until the system clock has passed it", NULL);
    } else if (b->clock.stepped &&
               (change == WALLCLOCK_STEPPED || b->now_ms - b->clock_logged_ms >= 60000)) {
        char offset[24];
        snprintf(offset, sizeof offset, "%+lld", (long long)(b->clock.offset_ms / 1000));
        log_event(LOG_ERROR, "clock.stepped", "offset_s", offset, "effect",
                  "not followed: retention and the trail go on in the broker's own time; set the "
                  "clock right, or restart the broker to take it as it is",
                  NULL);
        b->clock_logged_ms = b->now_ms;
    }
}

/* zap_allow_fn: a principal's handshakes are rationed (sessions.h). */
static int allow_handshake(void *arg, const char *principal)
{
    broker_t *b = arg;
    return sessions_allow_handshake(b->sessions, principal, b->now_ms, b->max_handshakes);
}

int broker_serve_zap(broker_t *b)
{
    clock_turn(b);
    b->turn_acks_only = 0;
    int handled = zap_handle(b->zap, b->policy, b->policy_pending, record_auth, allow_handshake, b);
    record_turn_end(b);
    (void)commit_turn(b);
    return handled;
}

/* Silent connections beyond their address's share of the allowance, a
 * principal's quiet ones over its cap, and revoked keys' are shut down
 * (conns.h): a valid key cannot hold sockets without end. Each is older
 * or quieter than a loop that keeps up could leave a frame unread (the
 * idle timeout, a second). Over the cap, the receiving connection stays
 * (used now), and so do standbys while connections without a claim can
 * go. O(sessions + connections), once a second. */
static void close_idle_connections(broker_t *b)
{
    if (b->router_events == NULL)
        return; /* without connection events nothing is tracked */
    size_t cursor = 0;
    receiver_t *r;
    while ((r = sessions_next_receiver(b->sessions, &cursor)) != NULL)
        if (r->session != NULL)
            conns_used(b->conns, r->session->fd, b->now_ms, r->principal, r->session->key);
    cursor = 0;
    session_t *session;
    while ((session = sessions_next(b->sessions, &cursor)) != NULL)
        if (session->flow_order > 0)
            conns_claimed(b->conns, session->fd);
    conns_limits_t limits = {.idle_ms = b->idle_timeout_ms,
                             .max_silent = b->max_silent,
                             .quiet_ms = SCHAKEL_SESSION_ACTIVE_MS,
                             .max_per_principal = b->max_connections};
    size_t shut = conns_close_idle(b->conns, b->now_ms, &limits);
    if (shut == 0)
        return;
    b->stats.connections_closed_idle += shut;
    char n[24];
    snprintf(n, sizeof n, "%zu", shut);
    log_event(LOG_INFO, "connections.closed_idle", "connections", n, NULL);
}

/* A connection cut for the unfinished message it held: said with its peer
 * address and, when a session is on it, the session's principal. */
static void held_cut(void *arg, int fd, const char *peer, uint64_t held)
{
    broker_t *b = arg;
    b->stats.connections_cut_unfinished++;
    char bytes[24];
    const char *principal = "unknown"; /* no session: no message complete, or none for 20 s */
    size_t cursor = 0;
    session_t *session;
    while ((session = sessions_next(b->sessions, &cursor)) != NULL)
        if (session->fd == fd) {
            principal = session->principal;
            break;
        }
    snprintf(bytes, sizeof bytes, "%llu", (unsigned long long)held);
    log_event(LOG_WARN, "connection.cut_unfinished", "peer", peer, "principal", principal,
              "held_bytes", bytes, NULL);
}

/* The check of multipart messages that never end (conns.h), in two
 * halves: the snapshot at housekeeping, the check once every message
 * complete at the snapshot has been taken (the router holds none, or the
 * broker took twice a connection's queue from one connection since: see
 * conns_held_settled). O(connections). */
static void held_check_if_settled(broker_t *b)
{
    if (!conns_held_pending(b->conns) ||
        (!conns_held_settled(b->conns, SCHAKEL_BROKER_RCVHWM + 1) && frames_waiting(b)))
        return;
    conns_held_limits_t limits = {.bound = SCHAKEL_HELD_BOUND_BYTES,
                                  .command_bytes_per_s = SCHAKEL_HELD_COMMAND_BYTES_PER_S,
                                  .command_bytes_max = SCHAKEL_HELD_COMMAND_MAX_BYTES};
    (void)conns_held_check(b->conns, b->now_ms, &limits, held_cut, b);
}

/* A router found empty right after the snapshot checks at once (an idle
 * broker); otherwise the loop checks once it has read what waited. */
static void held_snapshot(broker_t *b)
{
    if (b->router_events == NULL || conns_held_pending(b->conns))
        return;
    conns_held_snapshot(b->conns, b->now_ms);
    held_check_if_settled(b);
}

/* Commits are synced on a second thread from here on, and the WAL is
 * copied into the database on a third; without them (an in-memory store,
 * no thread) every turn syncs its own commit, and the commit that makes a
 * checkpoint due runs it. */
static void syncer_start(broker_t *b)
{
    char err[256];
    b->durable_high = store_delivery_high(b->store);
    b->syncer = store_syncer_start(b->store, err, sizeof err);
    if (b->syncer == NULL)
        log_event(LOG_WARN, "store.syncer_unavailable", "error", err, "effect",
                  "each turn waits for its own sync", NULL);
    if (store_checkpointer_start(b->store, err, sizeof err) != 0)
        log_event(LOG_WARN, "store.checkpointer_unavailable", "error", err, "effect",
                  "the loop checkpoints the WAL itself", NULL);
}

int broker_run(broker_t *b)
{
    int64_t next_housekeeping = 0;
    /* The WAL an unclean stop left may hold page images of rows that
     * expired before it, whose truncation was still waiting its turn (the
     * count of them did not survive): truncated before serving, or, while
     * a reader holds it, by the next turn's checkpoint_if_due. */
    if (store_checkpoint(b->store) != 0) {
        log_event(LOG_WARN, "store.checkpoint_deferred", "error", store_errmsg(b->store), NULL);
        b->expired_since_checkpoint = 1;
    }
    syncer_start(b);
    while (!signals_stop_requested()) {
        if (signals_reload_take()) {
            char err[512];
            (void)broker_reload_policy(b, "SIGHUP", err, sizeof err); /* logged either way */
        }
        broker_reload_retry(b);
        /* router, ZAP, admin (if any), the syncer (if any), the router's
         * connection events (a receiving connection that closed hands
         * receiving back at once, not at the next wake-up), then the
         * signals' eventfd: a signal that came after the look at the flags
         * above ends this poll at once, not after wait_ms */
        zmq_pollitem_t items[6] = {
            {.socket = b->router, .events = ZMQ_POLLIN},
            {.socket = zap_socket(b->zap), .events = ZMQ_POLLIN},
        };
        int n_items = 2, admin_slot = -1;
        if (b->admin != NULL) {
            admin_slot = n_items;
            items[n_items++] =
                (zmq_pollitem_t){.socket = admin_socket(b->admin), .events = ZMQ_POLLIN};
        }
        int syncer_slot = -1;
        if (b->syncer != NULL) {
            syncer_slot = n_items;
            items[n_items++] =
                (zmq_pollitem_t){.fd = store_syncer_fd(b->syncer), .events = ZMQ_POLLIN};
        }
        if (b->router_events != NULL)
            items[n_items++] = (zmq_pollitem_t){.socket = b->router_events, .events = ZMQ_POLLIN};
        int wake_slot = -1;
        if (signals_wake_fd() >= 0) {
            wake_slot = n_items;
            items[n_items++] = (zmq_pollitem_t){.fd = signals_wake_fd(), .events = ZMQ_POLLIN};
        }
        /* woken for the watchdog, and when a kept item is due to be wiped */
        int wait_ms =
            deliver_kept_wait_ms(b->kept, monotonic_ms(), metrics_poll_timeout_ms(b, 1000));
        /* More expired, or deliveries to revoke: the next turn comes at
         * once, unless the last one failed (a store that fails is tried
         * again at the usual pace, not in a busy loop). */
        int export_wait_ms = admin_export_wait_ms(b->admin);
        if ((b->expiry_due || b->n_revocations > 0 || b->n_set_asides > 0 || purge_pending(b) ||
             export_wait_ms == 0) &&
            !b->last_turn_rolled_back)
            wait_ms = 0;
        /* an export whose operator owes its bound looks again soon */
        if (export_wait_ms > 0 && export_wait_ms < wait_ms)
            wait_ms = export_wait_ms;
        if (zmq_poll(items, n_items, wait_ms) < 0) {
            if (zmq_errno() == EINTR) {
                signals_wake_drain(); /* its write: no second wake-up for it */
                continue;
            }
            log_event(LOG_ERROR, "loop.poll_failed", "error", zmq_strerror(zmq_errno()), NULL);
            return -1;
        }
        /* Woken by a signal, as by EINTR: the flags first, and no turn of
         * its own (what else is ready stays ready for the next poll). */
        if (wake_slot >= 0 && (items[wake_slot].revents & ZMQ_POLLIN)) {
            signals_wake_drain();
            continue;
        }
        clock_turn(b);
        space_measure(b, 0);         /* the store's room, once a second */
        broker_connections_drain(b); /* sessions of closed connections go first */
        /* answers and deliveries of turns synced since (the read also
         * empties the syncer's eventfd, which a sync made readable) */
        if (b->n_tickets > 0 || (syncer_slot >= 0 && (items[syncer_slot].revents & ZMQ_POLLIN)))
            tickets_collect(b);
        /* A disk that stalls must not let held answers grow without end:
         * past the bound the loop waits for the sync, as without a thread. */
        if (b->held_replies >= SCHAKEL_MAX_HELD_REPLIES)
            tickets_drain(b);
        metrics_turn_begin(b);
        /* Handshakes, admin requests, expiry and revocations make a turn
         * that commits with an fsync, as every frame but the three that
         * only ack, open a window or ask for the backlog, and every audit
         * entry but an ack's (record.c); turn_acks_only was set for this
         * turn at the end of the last one. */
        if ((items[1].revents & ZMQ_POLLIN) ||
            (admin_slot >= 0 && (items[admin_slot].revents & ZMQ_POLLIN)))
            b->turn_acks_only = 0;
        if ((items[1].revents & ZMQ_POLLIN) &&
            zap_handle(b->zap, b->policy, b->policy_pending, record_auth, allow_handshake, b) < 0) {
            log_event(LOG_ERROR, "zap.failed", "error", zmq_strerror(zmq_errno()), NULL);
            return -1;
        }
        /* A turn ends at SCHAKEL_MAX_BATCH frames, at SCHAKEL_MAX_TURN_WORK
         * items and acked seqs (a burst of full batches from one partner
         * goes over several turns, and libzmq's fair queue reads the other
         * partners' frames between them), and when its answers and those
         * waiting for their sync reach SCHAKEL_MAX_HELD_REPLIES: a frame
         * makes at most one answer. */
        b->turn_work = 0;
        for (unsigned n = 0; n < SCHAKEL_MAX_BATCH && b->turn_work < SCHAKEL_MAX_TURN_WORK &&
                             b->n_replies + b->held_replies < SCHAKEL_MAX_HELD_REPLIES;
             n++) {
            int rc = receive_one(b);
            if (rc == 0)
                break;
            if (rc < 0 && zmq_errno() != EINTR) {
                log_event(LOG_ERROR, "loop.recv_failed", "error", zmq_strerror(zmq_errno()), NULL);
                return -1;
            }
        }
        broker_connections_drain(b); /* a connection that closed is not checked */
        held_check_if_settled(b);
        int admin_read = b->admin != NULL ? admin_receive(b->admin, b) : 0;
        if (admin_read < 0 && zmq_errno() != EINTR) {
            log_event(LOG_ERROR, "admin.recv_failed", "error", zmq_strerror(zmq_errno()), NULL);
            return -1;
        }
        if (admin_read > 0)
            b->turn_acks_only = 0; /* arrived after the poll: answered after a synced commit */
        purge_retry(b);            /* a listing that failed, at most once a second */
        int housekeeping = b->now_ms >= next_housekeeping;
        if (housekeeping || b->expiry_due || b->n_revocations > 0 || b->n_set_asides > 0 ||
            purge_pending(b))
            b->turn_acks_only = 0;
        if (housekeeping || b->expiry_due)
            deliver_expire(b);
        deliver_revoke(b);
        deliver_set_aside(b);
        purge_step(b);
        /* a data-subject export reads a step a turn (its last records it) */
        admin_export_step(b->admin, b);
        record_turn_end(b);
        int turn = commit_turn(b);
        broker_connections_drain(b); /* no push to a connection that closed meanwhile */
        deliver_push_all(b);
        checkpoint_if_due(b);
        store_case_forget(b->store); /* a case title read this turn */
        if (housekeeping) {
            /* After a reconnect storm many sessions go at once; glibc keeps
             * their memory in the process unless told to give it back. */
            if (sessions_expire(b->sessions, b->now_ms, SCHAKEL_SESSION_TIMEOUT_MS) >= 64)
                malloc_trim(0);
            close_idle_connections(b);
            held_snapshot(b);
            undeliverable_summary(b, 0);
            deliver_acks_limited_summary(b, 0);
            if (deliver_check_ack_timeouts(b) > 0) {
                broker_connections_drain(b);
                deliver_push_all(b);
            }
            next_housekeeping = b->now_ms + 1000;
        }
        metrics_turn_end(b, turn);
        /* a failed round of the checkpoint thread, found even in a turn
         * that commits nothing */
        if (!store_sync_failed(b->store) && store_checkpointer_check(b->store) != 0)
            log_event(LOG_ERROR, "store.checkpointer_failed", "error", store_errmsg(b->store),
                      NULL);
        if (b->sync_failed || store_sync_failed(b->store)) {
            /* What is on disk is unknown: only a restart (SQLite recovers
             * what the disk really holds) is safe. systemd starts it again. */
            log_event(LOG_ERROR, "broker.stopping", "why",
                      "a sync or checkpoint of the store failed; restart to recover from the disk",
                      NULL);
            return -1;
        }
    }
    metrics_stopping(b); /* /readyz says so before the stop waits for the disk */
    log_event(LOG_INFO, "broker.stopping", NULL);
    tickets_drain(b);        /* the turns waiting for their sync are answered first */
    admin_stop(b->admin, b); /* an export not done is answered so, and wiped */
    undeliverable_summary(b, 1);
    deliver_acks_limited_summary(b, 1);
    (void)record_stopped(b); /* the last entry and a checkpoint over all; logged on failure */
    /* the last checkpoint is the loop's, and complete */
    if (store_checkpointer_stop(b->store) != 0) {
        log_event(LOG_ERROR, "store.checkpointer_failed", "error", store_errmsg(b->store), NULL);
        return -1; /* exit 1: the next start recovers from the disk */
    }
    if (store_checkpoint(b->store) != 0)
        log_event(LOG_WARN, "store.checkpoint_failed", "error", store_errmsg(b->store), NULL);
    return store_sync_failed(b->store) ? -1 : 0;
}
