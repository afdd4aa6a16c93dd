/*
 * client_frames.c — frames in from the broker: each read, decoded and
 * paired with the request that waits for it, a publish in flight, a
 * Heartbeat or a request given up on (answers come in the order of the
 * requests), or queued (deliveries, one that does not decode but names
 * its seq). Trusts nothing the broker sends: frames go through
 * wire_decode_broker_frame (a delivery, once handed out, through
 * delivery_decode). A frame that breaks the protocol ends the wait with
 * SCHAKEL_ERR_PROTOCOL; never aborts the host.
 */
#include <stdio.h>
#include <string.h>

#include <zmq.h>

#include "client_internal.h"
#include "client_state.h"
#include "syntax.h"
#include "wire.h"

/* ------------------------------------------------------------------ answers owed */

/* Forget the requests given up on that were sent before `order`: answers
 * come in the order of the requests, so once a later request is answered
 * theirs came (or went with a lost connection). */
static void client_forget_gave_up_before(schakel_client_t *client, uint64_t order)
{
    size_t keep = 0;
    for (size_t i = 0; i < client->n_gave_up; i++)
        if (client->gave_up[i].order >= order)
            client->gave_up[keep++] = client->gave_up[i];
    client->n_gave_up = keep;
}

/* The same, for an answer to the request sent as `order`: the Acks sent
 * before it were taken or refused too. */
static void client_settle_before(schakel_client_t *client, uint64_t order)
{
    acksent_settle_before(&client->acks_sent, order);
    client_forget_gave_up_before(client, order);
}

/* The Heartbeat at `index` of those owed an answer got one: requests
 * given up on before it were answered too, and so were the Heartbeats
 * before it (answers come in order). */
static void client_heartbeat_settle(schakel_client_t *client, size_t index)
{
    client_settle_before(client, client->heartbeats[index].order);
    client->heartbeats_pending -= index + 1;
    memmove(&client->heartbeats[0], &client->heartbeats[index + 1],
            client->heartbeats_pending * sizeof client->heartbeats[0]);
}

/* The oldest Heartbeat still owed an answer got a refusal (refusals name
 * no Heartbeat). Fills *answered and returns 1, or returns 0 if none is
 * owed one (forgotten, CLIENT_HEARTBEATS_MAX, or sent before a reconnect). */
static int client_heartbeat_answered(schakel_client_t *client, client_heartbeat_t *answered)
{
    if (client->heartbeats_pending == 0)
        return 0;
    *answered = client->heartbeats[0];
    client_heartbeat_settle(client, 0);
    return 1;
}

/* A Heartbeat answer without heartbeat_id: it answers the oldest Heartbeat
 * owed one if that went without the id too (to a broker from before the
 * field, which answers in order), and nothing (0) otherwise. A Heartbeat
 * that named itself is answered naming it by a broker that takes the field;
 * one from before the field refuses it. An answer naming none left from a
 * lost connection to such a broker is not taken for it, then, and neither is
 * that of a broker that takes the field without echoing it (which breaks
 * PROTOCOL 4.9; no Schakel broker does): the call times out. */
static int client_heartbeat_unnamed_answered(schakel_client_t *client)
{
    if (client->heartbeats_pending == 0 || client->heartbeats[0].named)
        return 0;
    client_heartbeat_settle(client, 0);
    return 1;
}

/* A Heartbeat answer naming `id`: settles the Heartbeat owed an answer that
 * it names (1), or nothing (0) when it names none of them: the answer
 * to a Heartbeat sent on a lost connection (PROTOCOL 7.10), or forgotten. */
static int client_heartbeat_named_answered(schakel_client_t *client, const ProtobufCBinaryData *id)
{
    uint8_t expected[CLIENT_HEARTBEAT_ID_BYTES];
    if (id->len != sizeof expected)
        return 0;
    for (size_t i = 0; i < client->heartbeats_pending; i++) {
        client_heartbeat_id(client->heartbeats[i].order, expected);
        if (client->heartbeats[i].named && memcmp(id->data, expected, sizeof expected) == 0) {
            client_heartbeat_settle(client, i);
            return 1;
        }
    }
    return 0;
}

/* An answer to a request given up on came: a CaseView (query) or an
 * answer naming no id (or a malformed one). It answers the oldest such
 * request, and every request given up on before it. */
static void client_settle_gave_up(schakel_client_t *client, int query)
{
    for (size_t i = 0; i < client->n_gave_up; i++)
        if (client->gave_up[i].query == query) {
            client_settle_before(client, client->gave_up[i].order + 1);
            return;
        }
}

/* An answer naming message id `id` that no publish in flight or wait
 * has: the answer of the request given up on that names it, which settles
 * it and every request sent before it (answers come in order), however many
 * of those lost their answer (a broker drops one it cannot queue). An id no
 * such request names (a second copy's answer, or one beyond
 * CLIENT_GAVE_UP_MAX) settles nothing: taking it for the oldest given up on
 * would leave a later one owed an answer, and the next refusal naming no
 * id, another request's, would be taken for that one's. */
static void client_settle_gave_up_id(schakel_client_t *client, const uint8_t *id)
{
    /* the oldest copy under that id: answers come in order */
    for (size_t i = 0; i < client->n_gave_up; i++)
        if (client->gave_up[i].has_id &&
            memcmp(client->gave_up[i].id, id, SCHAKEL_MESSAGE_ID_BYTES) == 0) {
            client_settle_before(client, client->gave_up[i].order + 1);
            return;
        }
}

/* A request sent as `order` (naming message id `id`, or NULL) was given up
 * on: its answer still comes. */
void client_give_up(schakel_client_t *client, uint64_t order, int sent_connected, int query,
                    const uint8_t *id)
{
    if (client->n_gave_up == CLIENT_GAVE_UP_MAX) /* the oldest is the least likely to come */
        client_forget_gave_up_before(client, client->gave_up[0].order + 1);
    size_t at = client->n_gave_up;
    while (at > 0 && client->gave_up[at - 1].order > order)
        at--;
    memmove(&client->gave_up[at + 1], &client->gave_up[at],
            (client->n_gave_up - at) * sizeof client->gave_up[0]);
    client->gave_up[at] = (client_gave_up_t){order, sent_connected, query, id != NULL, {0}};
    if (id != NULL)
        memcpy(client->gave_up[at].id, id, SCHAKEL_MESSAGE_ID_BYTES);
    client->n_gave_up++;
}

/* A publish in flight is dropped by the caller: if it is on the wire and
 * unanswered, its answer still comes and must not be taken for another's. */
void client_flight_drop(schakel_client_t *client, inflight_entry_t *entry)
{
    if (entry->answer == NULL && !entry->resend_owed)
        client_give_up(client, entry->order, entry->sent_connected, 0, entry->id);
    inflight_remove(&client->flight, entry);
}

/* ------------------------------------------------------------------ frames in */

static int client_same_id(const ProtobufCBinaryData *id, const uint8_t *expected)
{
    return expected != NULL && id->len == SCHAKEL_MESSAGE_ID_BYTES &&
           memcmp(id->data, expected, SCHAKEL_MESSAGE_ID_BYTES) == 0;
}

/* The broker's Heartbeat answer: who we are, our backlog, and the store
 * epoch when we asked for it. Only the answer to a Heartbeat owed one is
 * taken: one naming a Heartbeat that is not (sent on a lost connection)
 * tells nothing of now (its backlog counts acks from before, its epoch may
 * be of a store since restored), and is ignored (a malformed one still
 * ends the wait as a protocol error: the broker broke it). An answer without
 * heartbeat_id answers only the oldest Heartbeat, and only one that went
 * without the id (to a broker from before the field, which answers in order
 * on one connection): then an answer from a lost connection can be taken
 * for a later one's, as before the field. A named Heartbeat is never so. */
static void client_on_heartbeat(schakel_client_t *client, const Schakel__Heartbeat *heartbeat,
                                client_wait_t *wait)
{
    int owed; /* a malformed answer is the answer all the same */
    if (heartbeat->principal == NULL)
        return; /* a heartbeat of the broker's own, not an answer */
    if (heartbeat->has_heartbeat_id)
        owed = client_heartbeat_named_answered(client, &heartbeat->heartbeat_id);
    else
        owed = client_heartbeat_unnamed_answered(client);
    const char *partner = heartbeat->partner != NULL ? heartbeat->partner : "";
    const char *role = heartbeat->role != NULL ? heartbeat->role : "";
    if (!syntax_is_principal_id(heartbeat->principal) || strlen(role) >= CLIENT_NAME_BYTES ||
        strlen(partner) >= CLIENT_NAME_BYTES ||
        !syntax_is_utf8((const uint8_t *)role, strlen(role)) ||
        !syntax_is_utf8((const uint8_t *)partner, strlen(partner))) {
        client_fail(client, SCHAKEL_ERR_PROTOCOL,
                    "broker %s answered a Heartbeat with a malformed principal, partner or role",
                    client->endpoint);
        client_wait_finish(wait, SCHAKEL_ERR_PROTOCOL);
        return;
    }
    if (heartbeat->has_store_epoch && heartbeat->store_epoch.len != sizeof client->epoch) {
        client_fail(client, SCHAKEL_ERR_PROTOCOL,
                    "broker %s answered a Heartbeat with a store epoch of %zu bytes, not %zu",
                    client->endpoint, heartbeat->store_epoch.len, sizeof client->epoch);
        client_wait_finish(wait, SCHAKEL_ERR_PROTOCOL);
        return;
    }
    if (!owed)
        return;
    if (heartbeat->has_store_epoch) {
        memcpy(client->epoch, heartbeat->store_epoch.data, sizeof client->epoch);
        client->epoch_answered = 1;
        /* a floor without an epoch names nothing */
        client->epoch_floor_known = heartbeat->has_store_epoch_floor;
        client->epoch_floor = heartbeat->has_store_epoch_floor ? heartbeat->store_epoch_floor : 0;
    }
    snprintf(client->principal, sizeof client->principal, "%s", heartbeat->principal);
    snprintf(client->partner, sizeof client->partner, "%s", partner);
    snprintf(client->role, sizeof client->role, "%s", role);
    if (heartbeat->has_backlog)
        client->backlog = heartbeat->backlog;
    if (wait->kind == CLIENT_WAIT_HEARTBEAT && client->heartbeats_pending == 0)
        client_wait_finish(wait, SCHAKEL_OK);
}

/* Keep an answer with its publish in flight; it ends a wait for it. */
static void client_flight_store(schakel_client_t *client, inflight_entry_t *entry,
                                Schakel__Frame *frame, client_wait_t *wait)
{
    client_settle_before(client, entry->order);
    entry->answer = frame;
    entry->resend_owed = 0;
    if (wait->kind == CLIENT_WAIT_PUBLISH &&
        (wait->message_id == NULL ||
         memcmp(wait->message_id, entry->id, SCHAKEL_MESSAGE_ID_BYTES) == 0))
        client_wait_finish(wait, SCHAKEL_OK);
}

/* An answer naming `id` while a request with that id, sent as `order`, is
 * owed one: if an earlier copy under the same id was given up on and is
 * still owed its answer, this is that copy's (answers come in the order
 * of the requests), not the later one's, whose content may differ (the
 * rest of a publish after the broker refused one of its items). Settles
 * the copy and returns 1; 0 when the answer is the later request's. */
static int client_stale_copy(schakel_client_t *client, const ProtobufCBinaryData *id,
                             uint64_t order)
{
    for (size_t i = 0; i < client->n_gave_up; i++) {
        const client_gave_up_t *g = &client->gave_up[i];
        if (g->has_id && g->order < order &&
            memcmp(g->id, id->data, SCHAKEL_MESSAGE_ID_BYTES) == 0) {
            client_settle_before(client, g->order + 1);
            return 1;
        }
    }
    return 0;
}

/* An Accepted, or a Rejected naming message id `id`: the answer of a
 * publish in flight still without one, of the publish or case command
 * waited for, of an earlier copy of either given up on, or of another
 * request given up on. A second answer to the same publish (it was sent
 * again after a reconnect and both copies were answered) is not kept: the
 * first stands. Returns 1 if the frame was kept (do not free). */
static int client_on_id_answer(schakel_client_t *client, const ProtobufCBinaryData *id,
                               Schakel__Frame *frame, client_wait_t *wait)
{
    if (id->len != SCHAKEL_MESSAGE_ID_BYTES) {
        client_settle_gave_up(client, 0);
        return 0;
    }
    inflight_entry_t *entry = inflight_find(&client->flight, id->data);
    if (entry != NULL && entry->answer == NULL) {
        if (client_stale_copy(client, id, entry->order))
            return 0;
        client_flight_store(client, entry, frame, wait);
        return 1;
    }
    if (wait->kind == CLIENT_WAIT_ANSWER && client_same_id(id, wait->message_id)) {
        if (client_stale_copy(client, id, wait->order))
            return 0;
        client_settle_before(client, wait->order);
        wait->answer = frame;
        client_wait_finish(wait, SCHAKEL_OK);
        return 1;
    }
    client_settle_gave_up_id(client, id->data); /* answer to a request given up on */
    return 0;
}

/* A refusal that every frame of this connection gets (a revoked key, too
 * many connections), which a wait for deliveries must not sit out: no
 * delivery will come. */
static int client_connection_refused(const Schakel__Rejected *rejected, const client_wait_t *wait)
{
    return wait->kind == CLIENT_WAIT_DELIVERY && rejected->has_reason &&
           (rejected->reason == SCHAKEL__REASON__NOT_PERMITTED ||
            rejected->reason == SCHAKEL__REASON__TOO_MANY_CONNECTIONS);
}

/* Whether a refusal naming nothing, due by order to the oldest Heartbeat
 * owed an answer, cannot be that one's: a broker from before heartbeat_id
 * refuses a Heartbeat naming itself INVALID_MESSAGE (and one asking for
 * the store epoch, if from before that too), never one that does neither.
 * It is then the refusal of a named Heartbeat the client took for lost
 * with a connection: one sent after that connection dropped but before
 * the client read that it had, which libzmq still held in the socket's
 * queue and sent on the next connection, ahead of everything asked after
 * it (PROTOCOL 4.9). Taken for the oldest, it answered a later Heartbeat
 * in its place, and each after that the refusal or answer of the one
 * before it. */
static int client_heartbeat_refusal_stray(const schakel_client_t *client,
                                          const Schakel__Rejected *rejected)
{
    const client_heartbeat_t *oldest = &client->heartbeats[0];
    return client->heartbeats_pending > 0 && !oldest->named && !oldest->asked_epoch &&
           rejected->has_reason && rejected->reason == SCHAKEL__REASON__INVALID_MESSAGE;
}

/* Returns 1 if the frame was kept by the wait or the FIFO (do not free). */
static int client_on_rejected(schakel_client_t *client, Schakel__Frame *frame, client_wait_t *wait)
{
    const Schakel__Rejected *rejected = frame->rejected;
    if (rejected->has_seq) {
        char what[64];
        snprintf(what, sizeof what, "ack of delivery seq=%llu refused",
                 (unsigned long long)rejected->seq);
        client_error_rejected(&client->last_error, rejected, what);
        /* RATE_LIMITED: nothing of that Ack was acknowledged (PROTOCOL
         * 4.7); it goes again after a pause (client_send_owed_acks) */
        if (rejected->has_reason && rejected->reason == SCHAKEL__REASON__RATE_LIMITED)
            (void)acksent_refused(&client->acks_sent, rejected->seq, client_now_ms());
        return 0; /* recorded; whatever we wait for goes on */
    }
    if (rejected->has_message_id)
        return client_on_id_answer(client, &rejected->message_id, frame, wait);
    /* Refused as a whole frame (not parseable as the request it was, or
     * from a principal refused every frame), or a refused CaseQuery: it
     * answers the oldest request still owed an answer, since requests are
     * answered in order: a query given up on, a publish in flight, a
     * Heartbeat, or what we are waiting for. (A Flow has no answer to keep
     * the order of; it is refused only where every frame of the connection
     * is, so the request its refusal lands on is refused for that reason.) */
    inflight_entry_t *oldest = inflight_oldest_unanswered(&client->flight);
    uint64_t gave_up = client->n_gave_up > 0 ? client->gave_up[0].order : UINT64_MAX;
    uint64_t publish = oldest != NULL ? oldest->order : UINT64_MAX;
    uint64_t heartbeat = client->heartbeats_pending > 0 ? client->heartbeats[0].order : UINT64_MAX;
    int asking = wait->kind == CLIENT_WAIT_ANSWER || wait->kind == CLIENT_WAIT_VIEW;
    uint64_t asked = asking ? wait->order : UINT64_MAX;
    if (gave_up < publish && gave_up < asked && gave_up < heartbeat) {
        client_settle_before(client, gave_up + 1); /* the late answer of one given up on */
        return 0;
    }
    if (oldest != NULL && publish < asked && publish < heartbeat) {
        client_flight_store(client, oldest, frame, wait);
        return 1;
    }
    if (heartbeat < asked && client_heartbeat_refusal_stray(client, rejected)) {
        client_error_rejected(&client->last_error, rejected, NULL);
        return 0; /* recorded; the Heartbeat's own answer is still to come */
    }
    client_error_rejected(&client->last_error, rejected, NULL);
    if (heartbeat < asked) {
        client_heartbeat_t refused;
        /* a broker from before heartbeat_id refuses a Heartbeat naming
         * itself as carrying an unknown field (PROTOCOL 1.3, 4.9) */
        if (client_heartbeat_answered(client, &refused) && refused.named &&
            rejected->reason == SCHAKEL__REASON__INVALID_MESSAGE) {
            client->heartbeat_ids_refused = 1;
            client->heartbeat_id_refusals++;
        }
        if ((wait->kind == CLIENT_WAIT_HEARTBEAT && client->heartbeats_pending == 0) ||
            client_connection_refused(rejected, wait))
            client_wait_finish(wait, SCHAKEL_ERR_REFUSED);
        return 0;
    }
    if (asking) {
        client_settle_before(client, wait->order);
        wait->answer = frame;
        client_wait_finish(wait, SCHAKEL_OK);
        return 1;
    }
    /* nothing owed: the refusal of a Flow, or of a frame the connection
     * sent before; a wait for a Heartbeat's answer or for deliveries ends */
    if (wait->kind == CLIENT_WAIT_HEARTBEAT || client_connection_refused(rejected, wait))
        client_wait_finish(wait, SCHAKEL_ERR_REFUSED);
    return 0;
}

/* Dispatch one decoded frame. Returns 1 if ownership moved (do not free). */
static int client_on_frame(schakel_client_t *client, Schakel__Frame *frame, client_wait_t *wait)
{
    switch (frame->body_case) {
    case SCHAKEL__FRAME__BODY_DELIVER:
        /* Never full here: the socket is not read while the queue is full. */
        if (delivery_queue_push(&client->queue, frame) != 0) {
            client_fail(client, SCHAKEL_ERR_INTERNAL, "delivery queue overflow");
            client_wait_finish(wait, SCHAKEL_ERR_INTERNAL);
            return 0;
        }
        if (wait->kind == CLIENT_WAIT_DELIVERY)
            client_wait_finish(wait, SCHAKEL_OK);
        return 1;
    case SCHAKEL__FRAME__BODY_HEARTBEAT:
        client_on_heartbeat(client, frame->heartbeat, wait);
        return 0;
    case SCHAKEL__FRAME__BODY_ACCEPTED:
        return client_on_id_answer(client, &frame->accepted->message_id, frame, wait);
    case SCHAKEL__FRAME__BODY_REJECTED:
        return client_on_rejected(client, frame, wait);
    case SCHAKEL__FRAME__BODY_CASE_VIEW:
        if (wait->kind != CLIENT_WAIT_VIEW || !frame->case_view->has_request_id ||
            frame->case_view->request_id != wait->request_id) {
            client_settle_gave_up(client, 1); /* answer to a query given up on */
            return 0;
        }
        client_settle_before(client, wait->order);
        wait->answer = frame;
        client_wait_finish(wait, SCHAKEL_OK);
        return 1;
    default:
        client_fail(client, SCHAKEL_ERR_PROTOCOL,
                    "broker %s sent a frame with body %d, which only clients send",
                    client->endpoint, (int)frame->body_case);
        client_wait_finish(wait, SCHAKEL_ERR_PROTOCOL);
        return 0;
    }
}

/* The next message to act on: the one held back after an allocation
 * failure first, else one from the socket. Returns 0, or -1 if none. */
static int client_next_message(schakel_client_t *client, zmq_msg_t *msg)
{
    zmq_msg_init(msg);
    if (client->holding) {
        client->holding = 0;
        if (zmq_msg_move(msg, &client->held) == 0)
            return 0;
    } else if (zmq_msg_recv(msg, client->socket, ZMQ_DONTWAIT) != -1) {
        return 0;
    }
    zmq_msg_close(msg);
    return -1;
}

/* A Deliver the codec refused that named its seq (a string not UTF-8,
 * both a signal and a case event, an enum value we do not know) is a
 * delivery we cannot read, not a broker that does not speak our protocol:
 * it is queued in its turn, for schakel_receive to report with its seq,
 * and ends no other wait. Returns 0, or -1 when it could not be queued
 * (no memory for its text). */
static int client_queue_unreadable(schakel_client_t *client, const wire_error_t *werr,
                                   client_wait_t *wait)
{
    char text[sizeof client->last_error.text];
    snprintf(text, sizeof text, "delivery seq=%llu does not decode: %s: %s",
             (unsigned long long)werr->deliver_seq, wire_reason_name(werr->reason), werr->text);
    if (delivery_queue_push_unreadable(&client->queue, werr->deliver_seq, text) != 0)
        return -1;
    if (wait->kind == CLIENT_WAIT_DELIVERY)
        client_wait_finish(wait, SCHAKEL_OK);
    return 0;
}

/* Read one ZMQ message from the broker, if one is there (returns 1, else 0),
 * and act on it. A message the codec
 * refuses (not a Frame, wrong version, multipart, over the size limit) ends
 * the current wait with SCHAKEL_ERR_PROTOCOL: the broker is not speaking our
 * protocol, and waiting on would only hide that behind a timeout; but a
 * refused Deliver that names its seq is queued (client_queue_unreadable). A
 * message we lacked the memory to decode (the codec's INTERNAL_ERROR, or
 * such a Deliver's text) ends the wait
 * with SCHAKEL_ERR_NOMEM and is held, to be decoded first by the next wait:
 * it may be the answer or delivery the broker will not send again. */
int client_read_frame(schakel_client_t *client, client_wait_t *wait)
{
    zmq_msg_t msg;
    if (client_next_message(client, &msg) != 0)
        return 0;
    int multipart = zmq_msg_more(&msg);
    wire_error_t werr;
    memset(&werr, 0, sizeof werr);
    Schakel__Frame *frame = NULL;
    if (!multipart)
        frame = wire_decode_broker_frame(zmq_msg_data(&msg), zmq_msg_size(&msg), &werr);
    int unreadable = frame == NULL && !multipart && werr.deliver_seq != 0 &&
                     werr.reason != SCHAKEL__REASON__INTERNAL_ERROR;
    if (unreadable && client_queue_unreadable(client, &werr, wait) == 0) {
        zmq_msg_close(&msg);
        return 1;
    }
    if (frame == NULL && !multipart &&
        (unreadable || werr.reason == SCHAKEL__REASON__INTERNAL_ERROR) &&
        zmq_msg_move(&client->held, &msg) == 0) {
        client->holding = 1;
        zmq_msg_close(&msg);
        client_fail(client, SCHAKEL_ERR_NOMEM,
                    "out of memory decoding a frame from broker %s (kept for the next call)",
                    client->endpoint);
        client_wait_finish(wait, SCHAKEL_ERR_NOMEM);
        return 1;
    }
    while (zmq_msg_more(&msg)) { /* drop the rest of a multipart message */
        zmq_msg_close(&msg);
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, client->socket, ZMQ_DONTWAIT) == -1)
            break;
    }
    zmq_msg_close(&msg);
    if (frame == NULL) {
        client_fail(client, SCHAKEL_ERR_PROTOCOL, "malformed frame from broker %s: %s: %s",
                    client->endpoint, multipart ? "TOO_MANY_FRAMES" : wire_reason_name(werr.reason),
                    multipart ? "a multipart message" : werr.text);
        client_wait_finish(wait, SCHAKEL_ERR_PROTOCOL);
        return 1;
    }
    if (!client_on_frame(client, frame, wait))
        wire_frame_free(&frame);
    return 1;
}
