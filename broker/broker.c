/*
 * broker.c — the event loop: receive, dispatch, then the turn's commit
 * and answers (broker_turn.c), push and housekeeping.
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
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sodium.h>
#include <zmq.h>

#include "broker_internal.h"
#include "case.h"
#include "connevents.h"
#include "log.h"
#include "purge.h"
#include "record.h"
#include "signals.h"

/* ------------------------------------------------------------ connections */

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
                conns_opened(b->conns, fd, broker_monotonic_ms());
        }
    }
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
                    broker_session_revoked(session, (void *)(uintptr_t)b->policy_pending))) {
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

/* ------------------------------------------------------------ loop */

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
    b->now_ms = broker_monotonic_ms();
    b->now_s = wallclock_update(&b->clock, broker_clock_ms(CLOCK_REALTIME),
                                broker_clock_ms(CLOCK_BOOTTIME), &change);
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
    (void)broker_commit_turn(b);
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
        (!conns_held_settled(b->conns, SCHAKEL_BROKER_RCVHWM + 1) && broker_frames_waiting(b)))
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

/* At the stop, once the store is done with (its last answers handed to
 * libzmq before, its record and checkpoint written) and before an
 * export's drain of up to SCHAKEL_ADMIN_STOP_MAX_MS: the partner endpoint
 * stops listening. A partner that connects from then on is refused by the
 * kernel (ECONNREFUSED) and tries again, rather than stalling in a CURVE
 * handshake nobody answers (the router and ZAP are read no more). libzmq
 * closes the connections accepted there with it (ZMQ_LINGER 0), as the
 * exit would: nothing more goes to them. Not earlier: the answers of the
 * last turns, handed to libzmq by broker_tickets_drain, are written by its
 * I/O thread meanwhile, and a close drops what it has not written. */
static void broker_stop_listening(broker_t *b)
{
    if (b->router == NULL || b->endpoint[0] == '\0' || zmq_unbind(b->router, b->endpoint) == 0)
        return;
    log_event(LOG_WARN, "broker.unlisten_failed", "endpoint", b->endpoint, "error",
              zmq_strerror(zmq_errno()), "effect",
              "partners that connect until the broker exits wait for a handshake unanswered", NULL);
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
            deliver_kept_wait_ms(b->kept, broker_monotonic_ms(), metrics_poll_timeout_ms(b, 1000));
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
            broker_tickets_collect(b);
        /* A disk that stalls must not let held answers grow without end:
         * past the bound the loop waits for the sync, as without a thread. */
        if (b->held_replies >= SCHAKEL_MAX_HELD_REPLIES)
            broker_tickets_drain(b);
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
        int turn = broker_commit_turn(b);
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
            broker_undeliverable_summary(b, 0);
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
    broker_tickets_drain(b); /* the turns waiting for their sync are answered first */
    admin_stop(b->admin, b); /* an export not done is answered so, and wiped */
    broker_undeliverable_summary(b, 1);
    deliver_acks_limited_summary(b, 1);
    (void)record_stopped(b); /* the last entry and a checkpoint over all; logged on failure */
    /* the last checkpoint is the loop's, and complete */
    if (store_checkpointer_stop(b->store) != 0) {
        log_event(LOG_ERROR, "store.checkpointer_failed", "error", store_errmsg(b->store), NULL);
        return -1; /* exit 1: the next start recovers from the disk */
    }
    if (store_checkpoint(b->store) != 0)
        log_event(LOG_WARN, "store.checkpoint_failed", "error", store_errmsg(b->store), NULL);
    if (store_sync_failed(b->store))
        return -1;
    broker_stop_listening(b);      /* no partner waits on the drain */
    admin_stop_drain(b->admin, b); /* an export going out, with the store done with */
    return 0;
}
