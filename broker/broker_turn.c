/*
 * broker_turn.c — the end of a turn: its one commit (synced in place,
 * unsynced, or handed to the sync thread) and the answers that commit made
 * true, queued during the turn, settled after it, held behind their sync
 * and sent in turn order. Trusts the store's result alone: a failed commit
 * turns every Accepted into a Rejected; an answer that cannot be sent is
 * counted and said, never retried (the client asks again).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>
#include <zmq.h>

#include "broker.h"
#include "broker_internal.h"
#include "case.h"
#include "log.h"
#include "purge.h"
#include "record.h"

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
 * rest summed up (broker_undeliverable_summary): a client that reads nothing
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
void broker_undeliverable_summary(broker_t *b, int force)
{
    char summary[1024];
    int64_t now_s = b->now_s > 0 ? b->now_s : (int64_t)time(NULL);
    if (refusals_summary(&b->undeliverable, now_s, force, summary, sizeof summary) > 0)
        log_event(LOG_WARN, "reply.undeliverable_summary", "detail", summary, NULL);
}

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
    return broker_principal_key_revoked(b->policy, r->principal, r->key) ||
           (b->policy_pending != NULL &&
            broker_principal_key_revoked(b->policy_pending, r->principal, r->key));
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

void broker_free_replies(pending_reply_t *replies, size_t n)
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
void broker_tickets_drop(broker_t *b)
{
    for (size_t i = 0; i < b->n_tickets; i++)
        broker_free_replies(b->tickets[i].replies, b->tickets[i].n_replies);
    b->n_tickets = 0;
    b->held_replies = 0;
}

static void syncer_failed(broker_t *b)
{
    log_event(LOG_ERROR, "store.sync_failed", "error", store_errmsg(b->store), NULL);
    broker_tickets_drop(b);
    b->sync_failed = 1; /* broker_run stops at the end of this turn */
}

/* What the syncer finished since the last look (non-blocking). */
void broker_tickets_collect(broker_t *b)
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
void broker_tickets_drain(broker_t *b)
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
        broker_free_replies(b->replies, b->n_replies);
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

/* ------------------------------------------------------------ commit */

/* More frames wait on the router: worth going on with while the disk
 * syncs. With nothing waiting, a sync in place answers sooner than a
 * hand-over to the sync thread and back (two wake-ups). */
int broker_frames_waiting(const broker_t *b)
{
    int events = 0;
    size_t len = sizeof events;
    return zmq_getsockopt(b->router, ZMQ_EVENTS, &events, &len) == 0 && (events & ZMQ_POLLIN);
}

/* A turn may commit without waiting for the disk when what it answers can
 * wait, and there is something to go on with meanwhile (broker_frames_waiting;
 * config sync_thread: always hands over every turn, for disks whose fsync
 * is slow). Handshakes and operator requests act right after their commit
 * (zap_flush, admin_after_commit): a turn with those syncs in place. */
static int turn_can_defer(const broker_t *b)
{
    return b->syncer != NULL && b->n_tickets < SCHAKEL_MAX_SYNC_TICKETS &&
           !zap_has_pending(b->zap) && !admin_has_pending(b->admin) &&
           (b->sync_always || broker_frames_waiting(b));
}

/* Commit the turn: synced in place, unsynced (acks only: claims nothing),
 * or deferred to the syncer (its answers and deliveries wait for the sync,
 * while the loop goes on). Answers leave in turn order. */
int broker_commit_turn(broker_t *b)
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
