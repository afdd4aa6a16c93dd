/*
 * client_request.c — what a caller asks of libschakel's connection:
 * publishes (encoded, signed, kept in flight until answered), the requests
 * of case.c (client_exchange), subscribing, receiving and acks. Trusts its
 * callers' arguments only after checking them (SCHAKEL_ERR_USAGE); never
 * aborts the host: every failure is a schakel_status_t with the last error
 * filled.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <zmq.h>

#include "client_internal.h"
#include "client_state.h"
#include "signal_pb.h"
#include "syntax.h"
#include "wire.h"

/* ------------------------------------------------------------------ publish */

/* protobuf-c declares message strings as char *; packing only reads them, so
 * lending it the caller's const strings is safe. The union avoids a cast
 * that would hide a real const violation elsewhere. */
char *client_lend(const char *text)
{
    union {
        const char *borrowed;
        char *lent;
    } u;
    u.borrowed = text;
    return u.lent;
}

uint8_t *client_lend_bytes(const uint8_t *bytes)
{
    union {
        const uint8_t *borrowed;
        uint8_t *lent;
    } u;
    u.borrowed = bytes;
    return u.lent;
}

static uint64_t *client_lend_seqs(const uint64_t *seqs)
{
    union {
        const uint64_t *borrowed;
        uint64_t *lent;
    } u;
    u.borrowed = seqs;
    return u.lent;
}

static void client_free_items(ProtobufCBinaryData *items, size_t n)
{
    if (items == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(items[i].data);
    free(items);
}

/* Serialize and sign one Publish frame into *frame_out (caller frees). */
static schakel_status_t client_encode_publish(schakel_client_t *client, const char *sender,
                                              const schakel_signal_t *signals, size_t n,
                                              const uint8_t message_id[16], uint8_t **frame_out,
                                              size_t *frame_len)
{
    ProtobufCBinaryData *items = calloc(n, sizeof *items);
    if (items == NULL)
        return client_fail(client, SCHAKEL_ERR_NOMEM, "out of memory building the publish");
    for (size_t i = 0; i < n; i++) {
        items[i].data = signal_pb_encode(&signals[i], sender, &items[i].len);
        if (items[i].data == NULL) {
            client_free_items(items, n);
            return client_fail(client, SCHAKEL_ERR_NOMEM, "out of memory encoding item %zu", i);
        }
        if (items[i].len > SCHAKEL_MAX_ITEM_BYTES) {
            size_t len = items[i].len;
            client_free_items(items, n);
            return client_fail(client, SCHAKEL_ERR_USAGE,
                               "signal %zu encodes to %zu bytes; at most %u are allowed", i, len,
                               SCHAKEL_MAX_ITEM_BYTES);
        }
    }
    uint8_t root[32], signed_bytes[64], signature[SCHAKEL_SIGNATURE_BYTES];
    wire_items_root(items, n, root);
    wire_signed_bytes(message_id, root, signed_bytes);
    if (keys_sign(client->keys, signed_bytes, sizeof signed_bytes, signature) != 0) {
        client_free_items(items, n);
        return client_fail(client, SCHAKEL_ERR_INTERNAL, "cannot sign the publish");
    }
    Schakel__Publish publish = SCHAKEL__PUBLISH__INIT;
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    publish.has_message_id = 1;
    publish.message_id.data = client_lend_bytes(message_id);
    publish.message_id.len = SCHAKEL_MESSAGE_ID_BYTES;
    publish.n_items = n;
    publish.items = items;
    publish.has_signature = 1;
    publish.signature.data = signature;
    publish.signature.len = sizeof signature;
    frame.body_case = SCHAKEL__FRAME__BODY_PUBLISH;
    frame.publish = &publish;
    *frame_out = wire_encode_frame(&frame, frame_len);
    client_free_items(items, n);
    if (*frame_out == NULL)
        return client_fail(client, SCHAKEL_ERR_NOMEM, "out of memory encoding the publish");
    /* The broker's socket drops a connection that sends a larger frame (its
     * ZMQ_MAXMSGSIZE), and our resend after each reconnect would repeat that
     * until the timeout: refuse it here, with the reason. */
    if (*frame_len > CLIENT_MAX_SEND_BYTES) {
        free(*frame_out);
        *frame_out = NULL;
        return client_fail(client, SCHAKEL_ERR_USAGE,
                           "the publish of %zu signals encodes to %zu bytes; at most %u fit in "
                           "one frame: publish fewer signals at once",
                           n, *frame_len, CLIENT_MAX_SEND_BYTES);
    }
    return SCHAKEL_OK;
}

/* Turn the broker's answer into results, or a refusal into the last error. */
static schakel_status_t client_take_answer(schakel_client_t *client, const Schakel__Frame *answer,
                                           size_t n, schakel_item_result_t *results, int *duplicate)
{
    if (answer->body_case == SCHAKEL__FRAME__BODY_REJECTED) {
        const Schakel__Rejected *rejected = answer->rejected;
        if (rejected->has_item_index &&
            (rejected->item_index < -1 || (int64_t)rejected->item_index >= (int64_t)n))
            return client_fail(client, SCHAKEL_ERR_PROTOCOL,
                               "broker refused (%s) item %d of a publish of %zu items",
                               wire_reason_name(rejected->reason), (int)rejected->item_index, n);
        client_error_rejected(&client->last_error, rejected, NULL);
        return SCHAKEL_ERR_REFUSED;
    }
    const Schakel__Accepted *accepted = answer->accepted;
    if (accepted->n_items != n)
        return client_fail(client, SCHAKEL_ERR_PROTOCOL,
                           "broker accepted %zu items of a publish of %zu", accepted->n_items, n);
    for (size_t i = 0; results != NULL && i < n; i++) {
        results[i].seq = accepted->items[i]->seq;
        results[i].recipients = accepted->items[i]->recipients;
    }
    if (duplicate != NULL)
        *duplicate = accepted->has_duplicate && accepted->duplicate;
    return SCHAKEL_OK;
}

/* The message id of a new publish: the caller's, or a random one. */
static void client_choose_id(const uint8_t *message_id, uint8_t id[SCHAKEL_MESSAGE_ID_BYTES],
                             uint8_t *id_out)
{
    if (message_id != NULL)
        memcpy(id, message_id, SCHAKEL_MESSAGE_ID_BYTES);
    else
        randombytes_buf(id, SCHAKEL_MESSAGE_ID_BYTES);
    if (id_out != NULL)
        memcpy(id_out, id, SCHAKEL_MESSAGE_ID_BYTES);
}

/* An earlier copy under `id` was given up on and may still be answered:
 * a Heartbeat goes first. Its answer comes after that copy's (answers
 * come in the order of the requests) and settles it, so that the copy
 * about to go out never loses its own answer to a copy whose answer never
 * comes (a broker that could not send it to a client not reading). */
static void client_fence_copies(schakel_client_t *client, const uint8_t *id)
{
    for (size_t i = 0; i < client->n_gave_up; i++)
        if (client->gave_up[i].has_id &&
            memcmp(client->gave_up[i].id, id, SCHAKEL_MESSAGE_ID_BYTES) == 0) {
            /* if it cannot be sent, the copy's answer still goes first */
            (void)client_send_heartbeat(client);
            return;
        }
}

/* Encode, sign and send one publish, and put it in flight (the table keeps
 * the frame, to send it again after a reconnect). Nothing is in flight
 * when it fails. */
static schakel_status_t client_publish_start(schakel_client_t *client, const char *sender,
                                             const schakel_signal_t *signals, size_t n,
                                             const uint8_t id[SCHAKEL_MESSAGE_ID_BYTES])
{
    if (client->flight.count >= SCHAKEL_MAX_IN_FLIGHT)
        return client_fail(client, SCHAKEL_ERR_USAGE,
                           "%u publishes are in flight: take an answer with schakel_publish_wait "
                           "first",
                           SCHAKEL_MAX_IN_FLIGHT);
    if (inflight_find(&client->flight, id) != NULL)
        return client_fail(client, SCHAKEL_ERR_USAGE,
                           "a publish with this message id is in flight: wait for its answer, "
                           "or forget it, before sending it again");
    if (sender == NULL)
        sender = client->principal;
    schakel_status_t status = client_catch_up(client);
    if (status != SCHAKEL_OK)
        return status;
    uint8_t *frame = NULL;
    size_t len = 0;
    status = client_encode_publish(client, sender, signals, n, id, &frame, &len);
    /* Publishes still to be sent again go first: a new one must not
     * overtake them; it waits behind them if they cannot go now. */
    int behind = status == SCHAKEL_OK && client_send_owed_publishes(client) != SCHAKEL_OK;
    if (status == SCHAKEL_OK && !behind) {
        client_fence_copies(client, id);
        status = client_send_bytes(client, frame, len, "Publish");
    }
    if (status != SCHAKEL_OK) {
        if (frame != NULL)
            sodium_memzero(frame, len);
        free(frame);
        return status;
    }
    inflight_entry_t *entry = inflight_add(&client->flight, id, frame, len, n); /* room checked */
    entry->resend_owed = behind;
    entry->order = ++client->requests_sent;
    entry->sent_connected = client->connected;
    return SCHAKEL_OK;
}

schakel_status_t schakel_publish(schakel_client_t *client, const char *sender,
                                 const schakel_signal_t *signals, size_t n,
                                 const uint8_t *message_id, uint8_t id_out[16],
                                 schakel_item_result_t *results, int *duplicate, int timeout_ms)
{
    uint8_t id[SCHAKEL_MESSAGE_ID_BYTES];
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    if (signals == NULL || n == 0 || n > SCHAKEL_MAX_ITEMS || timeout_ms <= 0)
        return client_fail(client, SCHAKEL_ERR_USAGE,
                           "schakel_publish needs 1 to %u signals and a positive timeout",
                           SCHAKEL_MAX_ITEMS);
    client_choose_id(message_id, id, id_out);
    if (duplicate != NULL)
        *duplicate = 0;

    int64_t deadline = client_deadline(timeout_ms);
    int drops_before = client->drops;
    char hint[160];
    schakel_status_t status = client_publish_start(client, sender, signals, n, id);
    if (status != SCHAKEL_OK)
        return status;
    client_wait_t wait = {.kind = CLIENT_WAIT_PUBLISH, .message_id = id, .what = "Publish"};
    status = client_wait(client, &wait, deadline);
    inflight_entry_t *entry = inflight_find(&client->flight, id);
    if (status == SCHAKEL_OK)
        status = client_take_answer(client, entry->answer, n, results, duplicate);
    else if (status == SCHAKEL_ERR_TIMEOUT)
        client_fail(client, SCHAKEL_ERR_TIMEOUT,
                    "no answer from broker %s to the publish within %d ms; retrying with the "
                    "same message id is safe%s",
                    client->endpoint, timeout_ms,
                    client_timeout_hint(client, drops_before, hint, sizeof hint));
    /* Answered, or given up on: a later answer is dropped. */
    client_flight_drop(client, entry);
    return status;
}

schakel_status_t schakel_publish_send(schakel_client_t *client, const char *sender,
                                      const schakel_signal_t *signals, size_t n,
                                      const uint8_t *message_id, uint8_t id_out[16])
{
    uint8_t id[SCHAKEL_MESSAGE_ID_BYTES];
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    if (signals == NULL || n == 0 || n > SCHAKEL_MAX_ITEMS)
        return client_fail(client, SCHAKEL_ERR_USAGE, "schakel_publish_send needs 1 to %u signals",
                           SCHAKEL_MAX_ITEMS);
    client_choose_id(message_id, id, id_out);
    return client_publish_start(client, sender, signals, n, id);
}

schakel_status_t schakel_publish_wait(schakel_client_t *client, const uint8_t *message_id,
                                      schakel_publish_answer_t *answer, int timeout_ms)
{
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    if (answer == NULL || timeout_ms < 0)
        return client_fail(client, SCHAKEL_ERR_USAGE,
                           "schakel_publish_wait needs an answer and a timeout of 0 or more");
    if (message_id != NULL ? inflight_find(&client->flight, message_id) == NULL
                           : client->flight.count == 0)
        return client_fail(client, SCHAKEL_ERR_USAGE,
                           message_id != NULL ? "no publish with this message id is in flight"
                                              : "no publish is in flight");
    int64_t deadline = client_deadline(timeout_ms);
    int drops_before = client->drops;
    char hint[160];
    client_wait_t wait = {.kind = CLIENT_WAIT_PUBLISH, .message_id = message_id, .what = "Publish"};
    schakel_status_t status = client_wait(client, &wait, deadline);
    if (status == SCHAKEL_ERR_TIMEOUT)
        return client_fail(client, SCHAKEL_ERR_TIMEOUT,
                           "no answer from broker %s to %s within %d ms (%zu in flight)%s",
                           client->endpoint, message_id != NULL ? "that publish" : "any publish",
                           timeout_ms, client->flight.count,
                           client_timeout_hint(client, drops_before, hint, sizeof hint));
    if (status != SCHAKEL_OK)
        return status;
    inflight_entry_t *entry = client_flight_ready(client, message_id);
    memset(answer, 0, sizeof *answer);
    memcpy(answer->message_id, entry->id, sizeof answer->message_id);
    answer->n = entry->n_items;
    answer->status = client_take_answer(client, entry->answer, entry->n_items, answer->results,
                                        &answer->duplicate);
    if (answer->status != SCHAKEL_OK)
        answer->error = client->last_error;
    inflight_remove(&client->flight, entry);
    return SCHAKEL_OK;
}

size_t schakel_publishes_in_flight(const schakel_client_t *client)
{
    return client != NULL ? client->flight.count : 0;
}

schakel_status_t schakel_publish_forget(schakel_client_t *client, const uint8_t *message_id)
{
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    inflight_entry_t *entry =
        message_id != NULL ? inflight_find(&client->flight, message_id) : NULL;
    if (entry == NULL)
        return client_fail(client, SCHAKEL_ERR_USAGE,
                           "no publish with this message id is in flight");
    client_flight_drop(client, entry);
    return SCHAKEL_OK;
}

/* ------------------------------------------------------------------ requests of case.c */

const char *client_principal(const schakel_client_t *client)
{
    return client->principal;
}

int client_sign(schakel_client_t *client, const uint8_t *bytes, size_t len,
                uint8_t signature[SCHAKEL_SIGNATURE_BYTES])
{
    return keys_sign(client->keys, bytes, len, signature);
}

schakel_status_t client_exchange(schakel_client_t *client, const uint8_t *request, size_t len,
                                 const uint8_t *message_id, uint64_t request_id, const char *what,
                                 int timeout_ms, Schakel__Frame **answer)
{
    *answer = NULL;
    /* As for a publish: the broker's socket would drop the connection. */
    if (len > CLIENT_MAX_SEND_BYTES)
        return client_fail(client, SCHAKEL_ERR_USAGE,
                           "the %s encodes to %zu bytes; at most %u fit in one frame", what, len,
                           CLIENT_MAX_SEND_BYTES);
    int64_t deadline = client_deadline(timeout_ms);
    int drops_before = client->drops;
    char hint[160];
    client_wait_t wait = {.kind = message_id != NULL ? CLIENT_WAIT_ANSWER : CLIENT_WAIT_VIEW,
                          .message_id = message_id,
                          .request_id = request_id,
                          .request = request,
                          .request_len = len,
                          .what = what};
    schakel_status_t status = client_catch_up(client);
    if (status != SCHAKEL_OK)
        return status;
    if (message_id != NULL)
        client_fence_copies(client, message_id);
    status = client_send_bytes(client, request, len, what);
    if (status != SCHAKEL_OK)
        return status;
    wait.order = ++client->requests_sent;
    wait.sent_connected = client->connected;
    wait.socket_no = client->sockets_made;
    status = client_wait(client, &wait, deadline);
    if (status != SCHAKEL_OK) /* its answer, when it comes, is not another's */
        client_give_up(client, wait.order, wait.sent_connected, wait.kind == CLIENT_WAIT_VIEW,
                       message_id);
    if (status == SCHAKEL_OK) {
        *answer = wait.answer;
        wait.answer = NULL;
    } else if (status == SCHAKEL_ERR_TIMEOUT) {
        client_fail(client, SCHAKEL_ERR_TIMEOUT,
                    "no answer from broker %s to the %s within %d ms%s%s", client->endpoint, what,
                    timeout_ms,
                    message_id != NULL ? "; retrying with the same command id is safe" : "",
                    client_timeout_hint(client, drops_before, hint, sizeof hint));
    }
    wire_frame_free(&wait.answer);
    return status;
}

schakel_status_t client_pause(schakel_client_t *client, int pause_ms)
{
    client_wait_t wait = {.kind = CLIENT_WAIT_PAUSE};
    schakel_status_t status = client_wait(client, &wait, client_deadline(pause_ms));
    return status == SCHAKEL_ERR_TIMEOUT ? SCHAKEL_OK : status;
}

void client_refused(schakel_client_t *client, const Schakel__Rejected *rejected)
{
    client_error_rejected(&client->last_error, rejected, NULL);
}

/* ------------------------------------------------------------------ receive */

schakel_status_t schakel_subscribe(schakel_client_t *client, unsigned window)
{
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    if (window == 0)
        window = SCHAKEL_DEFAULT_WINDOW;
    if (window > SCHAKEL_MAX_WINDOW)
        window = SCHAKEL_MAX_WINDOW;
    client->window = window;
    client->subscribed = 1;
    client->flow_owed = 1;
    schakel_status_t status = client_catch_up(client);
    return status != SCHAKEL_OK ? status : client_send_owed_flow(client);
}

schakel_status_t schakel_receive(schakel_client_t *client, schakel_delivery_t **out, int timeout_ms)
{
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    if (out == NULL)
        return client_fail(client, SCHAKEL_ERR_USAGE, "schakel_receive needs an output");
    *out = NULL;
    if (!client->subscribed) {
        schakel_status_t status = schakel_subscribe(client, 0);
        if (status != SCHAKEL_OK)
            return status;
    }
    client_wait_t wait = {.kind = CLIENT_WAIT_DELIVERY};
    schakel_status_t status =
        client_wait(client, &wait, timeout_ms < 0 ? -1 : client_deadline(timeout_ms));
    if (status == SCHAKEL_ERR_TIMEOUT && wait.interrupted)
        return client_fail(client, SCHAKEL_ERR_TIMEOUT,
                           "no delivery: the wait without limit was interrupted by a signal");
    if (status == SCHAKEL_ERR_TIMEOUT)
        return client_fail(client, SCHAKEL_ERR_TIMEOUT, "no delivery within %d ms", timeout_ms);
    if (status != SCHAKEL_OK)
        return status;
    char text[sizeof client->last_error.text - 80] = "";
    const delivery_slot_t *next = delivery_queue_peek(&client->queue);
    uint64_t seq = next->seq;
    if (next->frame != NULL) {
        status = delivery_decode(next->frame->deliver, out, text, sizeof text);
    } else { /* refused by the frame codec, which named its seq */
        snprintf(text, sizeof text, "%s", next->unreadable);
        status = SCHAKEL_ERR_PROTOCOL;
    }
    /* Short of memory, the delivery stays queued for the next call: the
     * broker would not send it again before its ack timeout. One that
     * cannot be read is dropped, not acked: the broker counts it in flight
     * (a slot of the window) until the caller acks it, or sends it again
     * at its ack timeout or to the next receiving connection. */
    if (status != SCHAKEL_ERR_NOMEM)
        delivery_queue_drop_front(&client->queue);
    if (status == SCHAKEL_OK)
        return status;
    client_fail(client, status, "%s (from broker %s)", text, client->endpoint);
    if (status == SCHAKEL_ERR_PROTOCOL)
        client->undecodable_seq = seq;
    return status;
}

/* Send one Ack of count seqs (1..SCHAKEL_MAX_ACKS) and keep its frame, to
 * send it again should the broker refuse it RATE_LIMITED. */
static schakel_status_t client_send_ack(schakel_client_t *client, const uint64_t *seqs,
                                        size_t count)
{
    Schakel__Ack ack = SCHAKEL__ACK__INIT;
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    ack.n_seqs = count;
    ack.seqs = client_lend_seqs(seqs);
    frame.body_case = SCHAKEL__FRAME__BODY_ACK;
    frame.ack = &ack;
    size_t len = 0;
    uint8_t *buf = wire_encode_frame(&frame, &len);
    if (buf == NULL)
        return client_fail(client, SCHAKEL_ERR_NOMEM, "out of memory encoding Ack");
    schakel_status_t status = client_send_bytes(client, buf, len, "Ack");
    if (status == SCHAKEL_OK)
        acksent_keep(&client->acks_sent, ++client->requests_sent, seqs[0], buf, len);
    else
        free(buf);
    return status;
}

schakel_status_t schakel_ack_many(schakel_client_t *client, const uint64_t *seqs, size_t n)
{
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    if (seqs == NULL && n > 0)
        return client_fail(client, SCHAKEL_ERR_USAGE, "schakel_ack_many needs seqs");
    /* The broker refuses a whole Ack naming seq 0, and such an unnamed
     * refusal could be taken for the answer to a publish: check first. */
    for (size_t i = 0; i < n; i++)
        if (seqs[i] == 0)
            return client_fail(client, SCHAKEL_ERR_USAGE,
                               "cannot ack seq 0 (entry %zu): delivery seqs start at 1", i);
    (void)client_send_owed_acks(client, client_now_ms()); /* stays owed on failure */
    for (size_t sent = 0; sent < n;) {
        size_t count = n - sent < SCHAKEL_MAX_ACKS ? n - sent : SCHAKEL_MAX_ACKS;
        schakel_status_t status = client_send_ack(client, seqs + sent, count);
        if (status != SCHAKEL_OK) {
            char text[sizeof client->last_error.text];
            memcpy(text, client->last_error.text, sizeof text);
            return client_fail(client, status, "%.400s (%zu of %zu seqs were acked before)", text,
                               sent, n);
        }
        /* Forget queued copies only once the Ack is on its way: after a
         * failed send, the caller acks again and the broker still owes it. */
        for (size_t i = 0; i < count && client->queue.count > 0; i++)
            delivery_queue_forget(&client->queue, seqs[sent + i]);
        sent += count;
    }
    return SCHAKEL_OK;
}

schakel_status_t schakel_ack(schakel_client_t *client, uint64_t seq)
{
    return schakel_ack_many(client, &seq, 1);
}
