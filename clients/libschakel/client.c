/*
 * client.c — libschakel: one CurveZMQ connection from a partner to schakeld.
 *
 * Owns the client's zmq context, its DEALER socket and handshake monitor, the
 * publish/answer exchange, heartbeats, flow control and a bounded FIFO of
 * deliveries that arrive while the caller waits for something else. Trusts
 * nothing the broker sends: frames go through wire_decode_frame, deliveries
 * through delivery_decode (budgeted unpacking, UTF-8 checks). Never aborts
 * the host: every failure returns a schakel_status_t and fills the last error.
 */
#include "schakel.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>
#include <zmq.h>

#include "delivery.h"
#include "keys.h"
#include "schakel_limits.h"
#include "syntax.h"
#include "wire.h"

/* Client-side socket tuning. Not protocol limits, so they live here. */
#define CLIENT_LINGER_MS 500             /* let a last Ack leave on close, not more */
#define CLIENT_RECONNECT_IVL_MS 200      /* first retry after a lost connection */
#define CLIENT_RECONNECT_IVL_MAX_MS 5000 /* back-off cap while the broker is away */
#define CLIENT_MONITOR_ENDPOINT "inproc://schakel-client-monitor"
#define CLIENT_NAME_BYTES (SCHAKEL_MAX_PRINCIPAL_LEN + 1u)
#define CLIENT_ENDPOINT_BYTES 256u

/* Deliveries that arrive while the caller waits for an answer are queued.
 * The broker never has more than `window` unacked deliveries in flight to us
 * on one connection; a reconnect may resend all of them once more, and
 * duplicates (same seq) replace each other in place. Twice the largest window
 * therefore holds everything a conforming broker can send. If the queue is
 * full anyway, we stop reading the socket: nothing is ever dropped. */
#define CLIENT_FIFO_CAPACITY (2u * SCHAKEL_MAX_WINDOW)

struct schakel_client {
    void *context;
    void *socket;  /* DEALER to the broker */
    void *monitor; /* PAIR receiving the DEALER's socket events */
    keypair_t *keys;
    char endpoint[CLIENT_ENDPOINT_BYTES];
    char principal[CLIENT_NAME_BYTES];
    char partner[CLIENT_NAME_BYTES];
    char role[CLIENT_NAME_BYTES];
    uint64_t backlog;
    unsigned window;
    int subscribed;
    int handshakes;         /* successful CURVE handshakes so far */
    int connected;          /* a handshake succeeded and the connection has not dropped */
    int tcp_connects;       /* TCP connections made (for error texts) */
    int handshake_failures; /* connections closed during a handshake */
    unsigned heartbeats_pending;
    int64_t last_send_ms;
    Schakel__Frame **fifo; /* ring of Deliver frames, CLIENT_FIFO_CAPACITY */
    size_t fifo_head;
    size_t fifo_count;
    schakel_error_t last_error;
};

/* What a wait loop is waiting for. */
enum client_wait_kind {
    CLIENT_WAIT_HANDSHAKE,
    CLIENT_WAIT_HEARTBEAT,
    CLIENT_WAIT_ANSWER,
    CLIENT_WAIT_DELIVERY,
};

typedef struct client_wait {
    enum client_wait_kind kind;
    const uint8_t *message_id; /* CLIENT_WAIT_ANSWER: the publish we wait for */
    const uint8_t *publish;    /* its encoded frame, sent again after a reconnect */
    size_t publish_len;
    Schakel__Frame *answer; /* its Accepted or Rejected, owned by the wait */
    int done;
    schakel_status_t status; /* result once done */
} client_wait_t;

/* ------------------------------------------------------------------ errors */

static void client_error_vset(schakel_error_t *err, schakel_status_t status, const char *fmt,
                              va_list args) __attribute__((format(printf, 3, 0)));

static void client_error_vset(schakel_error_t *err, schakel_status_t status, const char *fmt,
                              va_list args)
{
    if (err == NULL)
        return;
    err->status = status;
    err->reason = 0;
    err->reason_name[0] = '\0';
    err->item_index = -1;
    vsnprintf(err->text, sizeof err->text, fmt, args);
}

static schakel_status_t client_error_set(schakel_error_t *err, schakel_status_t status,
                                         const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static schakel_status_t client_error_set(schakel_error_t *err, schakel_status_t status,
                                         const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    client_error_vset(err, status, fmt, args);
    va_end(args);
    return status;
}

/* Record a failure as the client's last error and return its status. */
static schakel_status_t client_fail(schakel_client_t *client, schakel_status_t status,
                                    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static schakel_status_t client_fail(schakel_client_t *client, schakel_status_t status,
                                    const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    client_error_vset(&client->last_error, status, fmt, args);
    va_end(args);
    return status;
}

/* Copy a broker Rejected into err: reason code, its name, item, and the
 * broker's own text (prefixed by `what` when given, e.g. the acked seq). */
static void client_error_rejected(schakel_error_t *err, const Schakel__Rejected *rejected,
                                  const char *what)
{
    Schakel__Reason reason = rejected->has_reason ? rejected->reason : SCHAKEL__REASON__REASON_NONE;
    const char *text =
        rejected->text != NULL && rejected->text[0] != '\0' ? rejected->text : "(no text)";

    if (!syntax_is_utf8((const uint8_t *)text, strlen(text)))
        text = "(reason text not valid UTF-8)";
    client_error_set(err, SCHAKEL_ERR_REFUSED, "%s%s%s", what != NULL ? what : "",
                     what != NULL ? ": " : "", text);
    err->reason = (int)reason;
    snprintf(err->reason_name, sizeof err->reason_name, "%s", wire_reason_name(reason));
    err->item_index = rejected->has_item_index ? rejected->item_index : -1;
}

const char *schakel_strerror(schakel_status_t status)
{
    switch (status) {
    case SCHAKEL_OK:
        return "success";
    case SCHAKEL_ERR_USAGE:
        return "invalid argument";
    case SCHAKEL_ERR_KEY:
        return "key file missing, unreadable, too open or malformed";
    case SCHAKEL_ERR_CONNECT:
        return "cannot reach the broker or complete the handshake";
    case SCHAKEL_ERR_AUTH:
        return "the broker refused our key";
    case SCHAKEL_ERR_TIMEOUT:
        return "timed out";
    case SCHAKEL_ERR_REFUSED:
        return "refused by the broker";
    case SCHAKEL_ERR_PROTOCOL:
        return "malformed or unexpected message from the broker";
    case SCHAKEL_ERR_NOMEM:
        return "out of memory";
    case SCHAKEL_ERR_INTERNAL:
        return "internal error";
    }
    return "unknown status";
}

const schakel_error_t *schakel_last_error(const schakel_client_t *client)
{
    static const schakel_error_t no_client = {SCHAKEL_ERR_USAGE, 0, "", -1, "no client"};
    return client != NULL ? &client->last_error : &no_client;
}

/* ------------------------------------------------------------------ time */

static int64_t client_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t client_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ FIFO */

static void client_fifo_clear(schakel_client_t *client)
{
    while (client->fifo_count > 0) {
        wire_frame_free(&client->fifo[client->fifo_head]);
        client->fifo_head = (client->fifo_head + 1) % CLIENT_FIFO_CAPACITY;
        client->fifo_count--;
    }
}

static Schakel__Frame **client_fifo_find(schakel_client_t *client, uint64_t seq)
{
    for (size_t i = 0; i < client->fifo_count; i++) {
        Schakel__Frame **slot = &client->fifo[(client->fifo_head + i) % CLIENT_FIFO_CAPACITY];
        if ((*slot)->deliver->seq == seq)
            return slot;
    }
    return NULL;
}

/* Queue a Deliver frame (ownership moves to the FIFO). A redelivery of a seq
 * already queued replaces the queued copy in place. The caller checked there
 * is room (the socket is not read while the FIFO is full). */
static void client_fifo_push(schakel_client_t *client, Schakel__Frame *frame)
{
    Schakel__Frame **same = client_fifo_find(client, frame->deliver->seq);
    if (same != NULL) {
        wire_frame_free(same);
        *same = frame;
        return;
    }
    client->fifo[(client->fifo_head + client->fifo_count) % CLIENT_FIFO_CAPACITY] = frame;
    client->fifo_count++;
}

static Schakel__Frame *client_fifo_pop(schakel_client_t *client)
{
    if (client->fifo_count == 0)
        return NULL;
    Schakel__Frame *frame = client->fifo[client->fifo_head];
    client->fifo[client->fifo_head] = NULL;
    client->fifo_head = (client->fifo_head + 1) % CLIENT_FIFO_CAPACITY;
    client->fifo_count--;
    return frame;
}

/* Remove a queued copy of an acked seq, so it is not handed out again. */
static void client_fifo_forget(schakel_client_t *client, uint64_t seq)
{
    size_t kept = 0;
    for (size_t i = 0; i < client->fifo_count; i++) {
        size_t from = (client->fifo_head + i) % CLIENT_FIFO_CAPACITY;
        if (client->fifo[from]->deliver->seq == seq) {
            wire_frame_free(&client->fifo[from]);
            continue;
        }
        client->fifo[(client->fifo_head + kept) % CLIENT_FIFO_CAPACITY] = client->fifo[from];
        kept++;
    }
    client->fifo_count = kept;
}

/* ------------------------------------------------------------------ sending */

/* Encode and send one frame without blocking. With ZMQ_IMMEDIATE off the
 * DEALER queues while (re)connecting, so EAGAIN only means the send queue
 * (SCHAKEL_SNDHWM messages) is full. */
static schakel_status_t client_send_bytes(schakel_client_t *client, const uint8_t *buf, size_t len,
                                          const char *what)
{
    int rc = zmq_send(client->socket, buf, len, ZMQ_DONTWAIT);
    int saved_errno = errno;
    if (rc == -1 && saved_errno == EAGAIN)
        return client_fail(client, SCHAKEL_ERR_TIMEOUT,
                           "cannot send %s: the queue to broker %s is full (broker unreachable?)",
                           what, client->endpoint);
    if (rc == -1)
        return client_fail(client, SCHAKEL_ERR_INTERNAL, "cannot send %s: %s", what,
                           zmq_strerror(saved_errno));
    client->last_send_ms = client_now_ms();
    return SCHAKEL_OK;
}

static schakel_status_t client_send(schakel_client_t *client, Schakel__Frame *frame,
                                    const char *what)
{
    size_t len = 0;
    uint8_t *buf = wire_encode_frame(frame, &len);
    if (buf == NULL)
        return client_fail(client, SCHAKEL_ERR_NOMEM, "out of memory encoding %s", what);
    schakel_status_t status = client_send_bytes(client, buf, len, what);
    free(buf);
    return status;
}

static schakel_status_t client_send_heartbeat(schakel_client_t *client)
{
    Schakel__Heartbeat heartbeat = SCHAKEL__HEARTBEAT__INIT;
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    heartbeat.has_time = 1;
    heartbeat.time = client_wall_ms();
    frame.body_case = SCHAKEL__FRAME__BODY_HEARTBEAT;
    frame.heartbeat = &heartbeat;
    schakel_status_t status = client_send(client, &frame, "Heartbeat");
    if (status == SCHAKEL_OK)
        client->heartbeats_pending++;
    return status;
}

static schakel_status_t client_send_flow(schakel_client_t *client)
{
    Schakel__Flow flow = SCHAKEL__FLOW__INIT;
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    flow.has_window = 1;
    flow.window = client->window;
    frame.body_case = SCHAKEL__FRAME__BODY_FLOW;
    frame.flow = &flow;
    return client_send(client, &frame, "Flow");
}

/* ------------------------------------------------------------------ events */

/* Read one socket event from the monitor (two frames: 6 bytes of event and
 * value, then the endpoint). Returns 0, or -1 if none is waiting. */
static int client_read_event(void *monitor, uint16_t *event, int32_t *value)
{
    zmq_msg_t part;
    zmq_msg_init(&part);
    if (zmq_msg_recv(&part, monitor, ZMQ_DONTWAIT) == -1) {
        zmq_msg_close(&part);
        return -1;
    }
    int ok = zmq_msg_size(&part) >= 6;
    if (ok) {
        const uint8_t *data = zmq_msg_data(&part);
        uint32_t raw_value;
        memcpy(event, data, sizeof *event);
        memcpy(&raw_value, data + 2, sizeof raw_value);
        *value = (int32_t)raw_value;
    }
    while (zmq_msg_more(&part)) {
        zmq_msg_close(&part);
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, monitor, ZMQ_DONTWAIT) == -1)
            break;
    }
    zmq_msg_close(&part);
    return ok ? 0 : -1;
}

static void client_wait_finish(client_wait_t *wait, schakel_status_t status)
{
    if (!wait->done) {
        wait->done = 1;
        wait->status = status;
    }
}

/* A new connection is up: the broker keeps no session state across
 * connections, so re-announce our window, and re-ask a question whose answer
 * may have been lost with the old connection. A publish is sent again as
 * is: the broker answers a repeated message id with the original answer. */
static void client_on_handshake(schakel_client_t *client, client_wait_t *wait)
{
    client->handshakes++;
    client->connected = 1;
    client->handshake_failures = 0;
    if (client->handshakes > 1) {
        if (client->subscribed)
            (void)client_send_flow(client); /* on failure the next reconnect retries */
        if (wait->kind == CLIENT_WAIT_ANSWER && wait->publish != NULL &&
            client_send_bytes(client, wait->publish, wait->publish_len, "Publish") != SCHAKEL_OK)
            client_wait_finish(wait, client->last_error.status);
        int asking = wait->kind == CLIENT_WAIT_HEARTBEAT && client->heartbeats_pending > 0;
        client->heartbeats_pending = 0;
        if (asking && client_send_heartbeat(client) != SCHAKEL_OK)
            client_wait_finish(wait, client->last_error.status);
    }
    if (wait->kind == CLIENT_WAIT_HANDSHAKE)
        client_wait_finish(wait, SCHAKEL_OK);
}

static void client_on_event(schakel_client_t *client, uint16_t event, int32_t value,
                            client_wait_t *wait)
{
    switch (event) {
    case ZMQ_EVENT_CONNECTED:
        client->tcp_connects++;
        break;
    case ZMQ_EVENT_DISCONNECTED:
        client->connected = 0;
        break;
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
        client_on_handshake(client, wait);
        break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        client_fail(client, SCHAKEL_ERR_AUTH,
                    "broker %s refused our key (status %d): is this key registered in the "
                    "policy?",
                    client->endpoint, (int)value);
        client_wait_finish(wait, SCHAKEL_ERR_AUTH);
        break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
        client->handshake_failures++;
        break;
    default:
        break;
    }
}

static void client_drain_events(schakel_client_t *client, client_wait_t *wait)
{
    uint16_t event;
    int32_t value;
    while (client_read_event(client->monitor, &event, &value) == 0)
        client_on_event(client, event, value, wait);
}

/* ------------------------------------------------------------------ frames in */

static int client_same_id(const ProtobufCBinaryData *id, const uint8_t *expected)
{
    return expected != NULL && id->len == SCHAKEL_MESSAGE_ID_BYTES &&
           memcmp(id->data, expected, SCHAKEL_MESSAGE_ID_BYTES) == 0;
}

/* The broker's Heartbeat answer: who we are, and our backlog. */
static void client_on_heartbeat(schakel_client_t *client, const Schakel__Heartbeat *heartbeat,
                                client_wait_t *wait)
{
    if (heartbeat->principal == NULL)
        return; /* a heartbeat of the broker's own, not an answer */
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
    snprintf(client->principal, sizeof client->principal, "%s", heartbeat->principal);
    snprintf(client->partner, sizeof client->partner, "%s", partner);
    snprintf(client->role, sizeof client->role, "%s", role);
    if (heartbeat->has_backlog)
        client->backlog = heartbeat->backlog;
    if (client->heartbeats_pending > 0)
        client->heartbeats_pending--;
    if (wait->kind == CLIENT_WAIT_HEARTBEAT && client->heartbeats_pending == 0)
        client_wait_finish(wait, SCHAKEL_OK);
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
        return 0; /* recorded; whatever we wait for goes on */
    }
    if (rejected->has_message_id) {
        if (wait->kind != CLIENT_WAIT_ANSWER ||
            !client_same_id(&rejected->message_id, wait->message_id))
            return 0; /* answer to an earlier publish the caller gave up on */
        wait->answer = frame;
        client_wait_finish(wait, SCHAKEL_OK);
        return 1;
    }
    /* Refused as a whole frame (not parseable as the request it was): it
     * answers what we are waiting for, since frames are answered in order. */
    client_error_rejected(&client->last_error, rejected, NULL);
    if (wait->kind == CLIENT_WAIT_ANSWER) {
        wait->answer = frame;
        client_wait_finish(wait, SCHAKEL_OK);
        return 1;
    }
    if (wait->kind == CLIENT_WAIT_HEARTBEAT)
        client_wait_finish(wait, SCHAKEL_ERR_REFUSED);
    return 0;
}

/* Dispatch one decoded frame. Returns 1 if ownership moved (do not free). */
static int client_on_frame(schakel_client_t *client, Schakel__Frame *frame, client_wait_t *wait)
{
    switch (frame->body_case) {
    case SCHAKEL__FRAME__BODY_DELIVER:
        client_fifo_push(client, frame);
        if (wait->kind == CLIENT_WAIT_DELIVERY)
            client_wait_finish(wait, SCHAKEL_OK);
        return 1;
    case SCHAKEL__FRAME__BODY_HEARTBEAT:
        client_on_heartbeat(client, frame->heartbeat, wait);
        return 0;
    case SCHAKEL__FRAME__BODY_ACCEPTED:
        if (wait->kind != CLIENT_WAIT_ANSWER ||
            !client_same_id(&frame->accepted->message_id, wait->message_id))
            return 0; /* answer to an earlier publish the caller gave up on */
        wait->answer = frame;
        client_wait_finish(wait, SCHAKEL_OK);
        return 1;
    case SCHAKEL__FRAME__BODY_REJECTED:
        return client_on_rejected(client, frame, wait);
    default:
        client_fail(client, SCHAKEL_ERR_PROTOCOL,
                    "broker %s sent a frame with body %d, which only clients send",
                    client->endpoint, (int)frame->body_case);
        client_wait_finish(wait, SCHAKEL_ERR_PROTOCOL);
        return 0;
    }
}

/* Read one ZMQ message from the broker and act on it. A message the codec
 * refuses (not a Frame, wrong version, multipart, over the size limit) ends
 * the current wait with SCHAKEL_ERR_PROTOCOL: the broker is not speaking our
 * protocol, and waiting on would only hide that behind a timeout. */
static void client_read_frame(schakel_client_t *client, client_wait_t *wait)
{
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, client->socket, ZMQ_DONTWAIT) == -1) {
        zmq_msg_close(&msg);
        return;
    }
    int multipart = zmq_msg_more(&msg);
    wire_error_t werr;
    memset(&werr, 0, sizeof werr);
    Schakel__Frame *frame = NULL;
    if (!multipart)
        frame = wire_decode_frame(zmq_msg_data(&msg), zmq_msg_size(&msg), &werr);
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
        return;
    }
    if (!client_on_frame(client, frame, wait))
        wire_frame_free(&frame);
}

/* ------------------------------------------------------------------ waiting */

/* Poll the socket and the monitor until the wait is done or the deadline
 * (monotonic ms; -1 = none) passes. While waiting for a delivery, a
 * Heartbeat goes out after SCHAKEL_CLIENT_HEARTBEAT_MS without sending, so
 * the broker keeps the session. Returns the wait's status or TIMEOUT. */
static schakel_status_t client_wait(schakel_client_t *client, client_wait_t *wait, int64_t deadline)
{
    int polled = 0; /* poll at least once: a zero timeout still reads what is there */
    for (;;) {
        if (wait->kind == CLIENT_WAIT_DELIVERY && client->fifo_count > 0)
            client_wait_finish(wait, SCHAKEL_OK);
        if (wait->done)
            return wait->status;
        int64_t now = client_now_ms();
        if (deadline >= 0 && now >= deadline && polled)
            return SCHAKEL_ERR_TIMEOUT;
        int64_t sleep_ms = deadline < 0 ? -1 : deadline > now ? deadline - now : 0;
        if (wait->kind == CLIENT_WAIT_DELIVERY) {
            int64_t due = client->last_send_ms + SCHAKEL_CLIENT_HEARTBEAT_MS;
            if (now >= due) {
                /* Best-effort keep-alive; none is queued while disconnected,
                 * where it would only pile up and answer later questions. */
                if (client->connected)
                    (void)client_send_heartbeat(client);
                due = now + SCHAKEL_CLIENT_HEARTBEAT_MS;
            }
            if (sleep_ms < 0 || due - now < sleep_ms)
                sleep_ms = due - now;
        }
        zmq_pollitem_t items[2] = {
            {client->monitor, 0, ZMQ_POLLIN, 0},
            {client->socket, 0, client->fifo_count < CLIENT_FIFO_CAPACITY ? ZMQ_POLLIN : 0, 0},
        };
        polled = 1;
        if (zmq_poll(items, 2, (long)sleep_ms) == -1) {
            if (errno == EINTR)
                continue;
            return client_fail(client, SCHAKEL_ERR_INTERNAL, "zmq_poll: %s", zmq_strerror(errno));
        }
        if (items[0].revents & ZMQ_POLLIN)
            client_drain_events(client, wait);
        if (!wait->done && (items[1].revents & ZMQ_POLLIN))
            client_read_frame(client, wait);
    }
}

/* Deadline for a timeout in ms; negative timeouts are refused by callers. */
static int64_t client_deadline(int timeout_ms)
{
    return client_now_ms() + timeout_ms;
}

/* One Heartbeat round trip: refreshes principal, partner, role, backlog. */
static schakel_status_t client_heartbeat_round_trip(schakel_client_t *client, int timeout_ms)
{
    client_wait_t wait = {.kind = CLIENT_WAIT_HEARTBEAT};
    int64_t deadline = client_deadline(timeout_ms);
    schakel_status_t status = client_send_heartbeat(client);
    if (status != SCHAKEL_OK)
        return status;
    status = client_wait(client, &wait, deadline);
    if (status == SCHAKEL_ERR_TIMEOUT)
        return client_fail(client, SCHAKEL_ERR_TIMEOUT,
                           "broker %s did not answer a Heartbeat within %d ms%s", client->endpoint,
                           timeout_ms,
                           client->fifo_count == CLIENT_FIFO_CAPACITY
                               ? " (deliveries are waiting: call schakel_receive)"
                               : "");
    return status;
}

/* ------------------------------------------------------------------ connect */

static void client_destroy(schakel_client_t *client)
{
    if (client == NULL)
        return;
    client_fifo_clear(client);
    free(client->fifo);
    if (client->socket != NULL)
        (void)zmq_socket_monitor(client->socket, NULL, 0);
    if (client->monitor != NULL)
        zmq_close(client->monitor);
    if (client->socket != NULL)
        zmq_close(client->socket);
    if (client->context != NULL)
        zmq_ctx_term(client->context);
    keys_destroy(&client->keys);
    sodium_memzero(client, sizeof *client);
    free(client);
}

void schakel_close(schakel_client_t **client)
{
    if (client == NULL)
        return;
    client_destroy(*client);
    *client = NULL;
}

/* Load our key pair and the broker's pinned public key (as X25519). */
static schakel_status_t client_load_keys(schakel_client_t *client, const char *broker_pub_file,
                                         const char *key_file, uint8_t broker_curve_pk[32],
                                         schakel_error_t *err)
{
    char text[256] = "";
    uint8_t broker_sign_pk[32];

    client->keys = keys_load_secret(key_file, text, sizeof text);
    if (client->keys == NULL)
        return client_error_set(err, SCHAKEL_ERR_KEY, "our key: %s", text);
    if (keys_load_public(broker_pub_file, broker_sign_pk, text, sizeof text) != 0)
        return client_error_set(err, SCHAKEL_ERR_KEY, "broker key: %s", text);
    if (keys_sign_pk_to_curve(broker_sign_pk, broker_curve_pk) != 0)
        return client_error_set(err, SCHAKEL_ERR_KEY,
                                "broker key %s is not a valid Ed25519 public key", broker_pub_file);
    return SCHAKEL_OK;
}

static int client_set_int(void *socket, int option, int value)
{
    return zmq_setsockopt(socket, option, &value, sizeof value);
}

/* The DEALER with CURVE keys, bounded queues and liveness checks. */
static schakel_status_t client_make_socket(schakel_client_t *client,
                                           const uint8_t broker_curve_pk[32], schakel_error_t *err)
{
    client->socket = zmq_socket(client->context, ZMQ_DEALER);
    if (client->socket == NULL)
        return client_error_set(err, SCHAKEL_ERR_INTERNAL, "cannot create a socket: %s",
                                zmq_strerror(errno));
    int64_t max_frame = SCHAKEL_MAX_FRAME_BYTES;
    int rc = 0;
    rc |= zmq_setsockopt(client->socket, ZMQ_CURVE_SERVERKEY, broker_curve_pk, 32);
    rc |= zmq_setsockopt(client->socket, ZMQ_CURVE_PUBLICKEY, client->keys->curve_pk, 32);
    rc |= zmq_setsockopt(client->socket, ZMQ_CURVE_SECRETKEY, client->keys->curve_sk, 32);
    rc |= client_set_int(client->socket, ZMQ_LINGER, CLIENT_LINGER_MS);
    rc |= client_set_int(client->socket, ZMQ_SNDHWM, SCHAKEL_SNDHWM);
    rc |= client_set_int(client->socket, ZMQ_RCVHWM, SCHAKEL_RCVHWM);
    rc |= zmq_setsockopt(client->socket, ZMQ_MAXMSGSIZE, &max_frame, sizeof max_frame);
    rc |= client_set_int(client->socket, ZMQ_HEARTBEAT_IVL, SCHAKEL_ZMTP_HEARTBEAT_IVL_MS);
    rc |= client_set_int(client->socket, ZMQ_HEARTBEAT_TIMEOUT, SCHAKEL_ZMTP_HEARTBEAT_TIMEOUT_MS);
    rc |= client_set_int(client->socket, ZMQ_HEARTBEAT_TTL, SCHAKEL_ZMTP_HEARTBEAT_TIMEOUT_MS);
    rc |= client_set_int(client->socket, ZMQ_HANDSHAKE_IVL, SCHAKEL_HANDSHAKE_IVL_MS);
    rc |= client_set_int(client->socket, ZMQ_RECONNECT_IVL, CLIENT_RECONNECT_IVL_MS);
    rc |= client_set_int(client->socket, ZMQ_RECONNECT_IVL_MAX, CLIENT_RECONNECT_IVL_MAX_MS);
    if (rc != 0)
        return client_error_set(err, SCHAKEL_ERR_INTERNAL, "cannot configure the socket: %s",
                                zmq_strerror(errno));
    int events = ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL;
    if (zmq_socket_monitor(client->socket, CLIENT_MONITOR_ENDPOINT, events) != 0)
        return client_error_set(err, SCHAKEL_ERR_INTERNAL, "cannot monitor the socket: %s",
                                zmq_strerror(errno));
    client->monitor = zmq_socket(client->context, ZMQ_PAIR);
    if (client->monitor == NULL || client_set_int(client->monitor, ZMQ_LINGER, 0) != 0 ||
        zmq_connect(client->monitor, CLIENT_MONITOR_ENDPOINT) != 0)
        return client_error_set(err, SCHAKEL_ERR_INTERNAL, "cannot monitor the socket: %s",
                                zmq_strerror(errno));
    return SCHAKEL_OK;
}

/* Wait for the CURVE handshake and explain a failure in words. */
static schakel_status_t client_await_handshake(schakel_client_t *client, int64_t deadline,
                                               int timeout_ms, schakel_error_t *err)
{
    client_wait_t wait = {.kind = CLIENT_WAIT_HANDSHAKE};
    schakel_status_t status = client_wait(client, &wait, deadline);
    if (status == SCHAKEL_OK)
        return SCHAKEL_OK;
    if (status != SCHAKEL_ERR_TIMEOUT) {
        *err = client->last_error;
        return status;
    }
    const char *why = "broker down, wrong address, or wrong broker key";
    if (client->tcp_connects == 0)
        why = "no TCP connection: broker down or wrong address";
    else if (client->handshake_failures > 0)
        why = "the broker closed the connection during the handshake: wrong broker key "
              "pinned?";
    return client_error_set(err, SCHAKEL_ERR_CONNECT,
                            "could not complete a CURVE handshake with %s within %d ms: %s",
                            client->endpoint, timeout_ms, why);
}

/* Everything after the client is allocated; err is always filled on error. */
static schakel_status_t client_open(schakel_client_t *client, const char *endpoint,
                                    const char *broker_pub_file, const char *key_file,
                                    int timeout_ms, schakel_error_t *err)
{
    uint8_t broker_curve_pk[32];
    int64_t deadline = client_deadline(timeout_ms);

    schakel_status_t status =
        client_load_keys(client, broker_pub_file, key_file, broker_curve_pk, err);
    if (status != SCHAKEL_OK)
        return status;
    client->fifo = calloc(CLIENT_FIFO_CAPACITY, sizeof *client->fifo);
    if (client->fifo == NULL)
        return client_error_set(err, SCHAKEL_ERR_NOMEM, "out of memory");
    client->context = zmq_ctx_new();
    if (client->context == NULL)
        return client_error_set(err, errno == ENOMEM ? SCHAKEL_ERR_NOMEM : SCHAKEL_ERR_INTERNAL,
                                "cannot create a zmq context: %s", zmq_strerror(errno));
    if (!zmq_has("curve"))
        return client_error_set(err, SCHAKEL_ERR_INTERNAL,
                                "this libzmq was built without CURVE support");
    status = client_make_socket(client, broker_curve_pk, err);
    if (status != SCHAKEL_OK)
        return status;
    if (zmq_connect(client->socket, endpoint) != 0)
        return client_error_set(err, SCHAKEL_ERR_CONNECT, "invalid broker endpoint '%s': %s",
                                client->endpoint, zmq_strerror(errno));
    status = client_await_handshake(client, deadline, timeout_ms, err);
    if (status != SCHAKEL_OK)
        return status;
    int64_t left = deadline - client_now_ms();
    status = client_heartbeat_round_trip(client, left > 0 ? (int)left : 0);
    if (status != SCHAKEL_OK) {
        *err = client->last_error;
        if (status == SCHAKEL_ERR_TIMEOUT)
            err->status = status = SCHAKEL_ERR_CONNECT;
    }
    return status;
}

schakel_status_t schakel_connect(schakel_client_t **out, const char *endpoint,
                                 const char *broker_pub_file, const char *key_file, int timeout_ms,
                                 schakel_error_t *err)
{
    schakel_error_t local_err;
    if (err == NULL)
        err = &local_err;
    if (out == NULL || endpoint == NULL || broker_pub_file == NULL || key_file == NULL ||
        timeout_ms <= 0)
        return client_error_set(err, SCHAKEL_ERR_USAGE,
                                "schakel_connect needs out, endpoint, broker key file, key file "
                                "and a positive timeout");
    *out = NULL;
    if (keys_init() != 0)
        return client_error_set(err, SCHAKEL_ERR_INTERNAL, "libsodium failed to initialise");
    schakel_client_t *client = calloc(1, sizeof *client);
    if (client == NULL)
        return client_error_set(err, SCHAKEL_ERR_NOMEM, "out of memory");
    snprintf(client->endpoint, sizeof client->endpoint, "%s", endpoint);
    client->last_error.item_index = -1;
    schakel_status_t status =
        client_open(client, endpoint, broker_pub_file, key_file, timeout_ms, err);
    if (status != SCHAKEL_OK) {
        client_destroy(client);
        return status;
    }
    err->status = SCHAKEL_OK;
    err->text[0] = '\0';
    *out = client;
    return SCHAKEL_OK;
}

/* ------------------------------------------------------------------ whoami, backlog */

schakel_status_t schakel_whoami(schakel_client_t *client, char *principal, char *partner,
                                char *role, int timeout_ms)
{
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    if (timeout_ms <= 0)
        return client_fail(client, SCHAKEL_ERR_USAGE, "schakel_whoami needs a positive timeout");
    schakel_status_t status = client_heartbeat_round_trip(client, timeout_ms);
    if (status != SCHAKEL_OK)
        return status;
    if (principal != NULL)
        memcpy(principal, client->principal, sizeof client->principal);
    if (partner != NULL)
        memcpy(partner, client->partner, sizeof client->partner);
    if (role != NULL)
        memcpy(role, client->role, sizeof client->role);
    return SCHAKEL_OK;
}

schakel_status_t schakel_backlog(schakel_client_t *client, uint64_t *backlog, int timeout_ms)
{
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    if (backlog == NULL || timeout_ms <= 0)
        return client_fail(client, SCHAKEL_ERR_USAGE,
                           "schakel_backlog needs an output and a positive timeout");
    schakel_status_t status = client_heartbeat_round_trip(client, timeout_ms);
    if (status == SCHAKEL_OK)
        *backlog = client->backlog;
    return status;
}

/* ------------------------------------------------------------------ publish */

/* protobuf-c declares message strings as char *; packing only reads them, so
 * lending it the caller's const strings is safe. The union avoids a cast
 * that would hide a real const violation elsewhere. */
static char *client_lend(const char *text)
{
    union {
        const char *borrowed;
        char *lent;
    } u;
    u.borrowed = text;
    return u.lent;
}

static uint8_t *client_lend_bytes(const uint8_t *bytes)
{
    union {
        const uint8_t *borrowed;
        uint8_t *lent;
    } u;
    u.borrowed = bytes;
    return u.lent;
}

static char **client_lend_array(const char *const *texts)
{
    union {
        const char *const *borrowed;
        char **lent;
    } u;
    u.borrowed = texts;
    return u.lent;
}

/* Serialize one schakel_signal_t as a Signal item from sender. */
static uint8_t *client_encode_signal(const schakel_signal_t *in, const char *sender, size_t *len)
{
    Schakel__Signal signal = SCHAKEL__SIGNAL__INIT;
    Schakel__Address address = SCHAKEL__ADDRESS__INIT;

    signal.sender = client_lend(sender);
    signal.kind = client_lend(in->kind);
    signal.theme = client_lend(in->theme);
    signal.area = client_lend(in->area);
    if (in->postcode != NULL || in->house_number != 0 || in->addition != NULL) {
        address.postcode = client_lend(in->postcode);
        address.has_house_number = in->house_number != 0;
        address.house_number = in->house_number;
        address.addition = client_lend(in->addition);
        signal.address = &address;
    }
    signal.subject = client_lend(in->subject);
    signal.grounds = client_lend(in->grounds);
    signal.case_ref = client_lend(in->case_ref);
    signal.has_severity = in->severity != SCHAKEL_SEVERITY_UNSPECIFIED;
    signal.severity = (Schakel__Severity)in->severity;
    signal.has_observed_at = in->observed_at != 0;
    signal.observed_at = in->observed_at;
    signal.summary = client_lend(in->summary);
    signal.source_ref = client_lend(in->source_ref);
    if (in->recipients != NULL) {
        signal.n_recipients = in->n_recipients;
        signal.recipients = client_lend_array(in->recipients);
    }
    return wire_encode_signal(&signal, len);
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
        items[i].data = client_encode_signal(&signals[i], sender, &items[i].len);
        if (items[i].data == NULL) {
            client_free_items(items, n);
            return client_fail(client, SCHAKEL_ERR_NOMEM, "out of memory encoding item %zu", i);
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
    return SCHAKEL_OK;
}

/* Turn the broker's answer into results, or a refusal into the last error. */
static schakel_status_t client_take_answer(schakel_client_t *client, const Schakel__Frame *answer,
                                           size_t n, schakel_item_result_t *results, int *duplicate)
{
    if (answer->body_case == SCHAKEL__FRAME__BODY_REJECTED) {
        client_error_rejected(&client->last_error, answer->rejected, NULL);
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
    if (sender == NULL)
        sender = client->principal;
    if (message_id != NULL)
        memcpy(id, message_id, sizeof id);
    else
        randombytes_buf(id, sizeof id);
    if (id_out != NULL)
        memcpy(id_out, id, sizeof id);
    if (duplicate != NULL)
        *duplicate = 0;

    int64_t deadline = client_deadline(timeout_ms);
    client_wait_t wait = {.kind = CLIENT_WAIT_ANSWER, .message_id = id};
    uint8_t *frame = NULL;
    schakel_status_t status =
        client_encode_publish(client, sender, signals, n, id, &frame, &wait.publish_len);
    if (status == SCHAKEL_OK)
        status = client_send_bytes(client, frame, wait.publish_len, "Publish");
    if (status != SCHAKEL_OK) {
        free(frame);
        return status;
    }
    wait.publish = frame;
    status = client_wait(client, &wait, deadline);
    free(frame);
    if (status == SCHAKEL_OK)
        status = client_take_answer(client, wait.answer, n, results, duplicate);
    else if (status == SCHAKEL_ERR_TIMEOUT)
        client_fail(client, SCHAKEL_ERR_TIMEOUT,
                    "no answer from broker %s to the publish within %d ms; retrying with the "
                    "same message id is safe%s",
                    client->endpoint, timeout_ms,
                    client->fifo_count == CLIENT_FIFO_CAPACITY
                        ? " (deliveries are waiting: call schakel_receive)"
                        : "");
    wire_frame_free(&wait.answer);
    return status;
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
    return client_send_flow(client);
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
    if (status == SCHAKEL_ERR_TIMEOUT)
        return client_fail(client, SCHAKEL_ERR_TIMEOUT, "no delivery within %d ms", timeout_ms);
    if (status != SCHAKEL_OK)
        return status;
    Schakel__Frame *frame = client_fifo_pop(client);
    char text[200] = "";
    status = delivery_decode(frame->deliver, out, text, sizeof text);
    wire_frame_free(&frame);
    if (status != SCHAKEL_OK)
        return client_fail(client, status, "%s (from broker %s)", text, client->endpoint);
    return status;
}

schakel_status_t schakel_ack(schakel_client_t *client, uint64_t seq)
{
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    Schakel__Ack ack = SCHAKEL__ACK__INIT;
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    ack.n_seqs = 1;
    ack.seqs = &seq;
    frame.body_case = SCHAKEL__FRAME__BODY_ACK;
    frame.ack = &ack;
    client_fifo_forget(client, seq);
    return client_send(client, &frame, "Ack");
}

/* ------------------------------------------------------------------ keys */

schakel_status_t schakel_keygen(const char *path_base, schakel_error_t *err)
{
    schakel_error_t local_err;
    if (err == NULL)
        err = &local_err;
    if (path_base == NULL || path_base[0] == '\0')
        return client_error_set(err, SCHAKEL_ERR_USAGE, "schakel_keygen needs a path");
    if (keys_init() != 0)
        return client_error_set(err, SCHAKEL_ERR_INTERNAL, "libsodium failed to initialise");
    char text[256] = "";
    if (keys_generate(path_base, text, sizeof text) != 0)
        return client_error_set(err, SCHAKEL_ERR_KEY, "%s", text);
    err->status = SCHAKEL_OK;
    err->text[0] = '\0';
    return SCHAKEL_OK;
}
