/*
 * client.c — libschakel: one CurveZMQ connection from a partner to schakeld.
 *
 * Owns the client's zmq context, its DEALER socket and handshake monitor, the
 * publish/answer exchange, heartbeats and flow control. Trusts nothing the
 * broker sends: frames go through wire_decode_frame, deliveries through
 * delivery_decode (budgeted unpacking, UTF-8 checks). Never aborts the host
 * and never loses what the broker sent to a passing allocation failure:
 * every failure returns a schakel_status_t and fills the last error.
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

#include "acksent.h"
#include "client_internal.h"
#include "delivery.h"
#include "inflight.h"
#include "keys.h"
#include "schakel_limits.h"
#include "signal_pb.h"
#include "syntax.h"
#include "wire.h"

/* Client-side socket tuning. Not protocol limits, so they live here. */
#define CLIENT_LINGER_MS 500             /* let a last Ack leave on close, not more */
#define CLIENT_RECONNECT_IVL_MS 200      /* first retry after a lost connection */
#define CLIENT_RECONNECT_IVL_MAX_MS 5000 /* back-off cap while the broker is away */
#define CLIENT_MONITOR_PREFIX "inproc://schakel-client-monitor-" /* + a per-socket number */
/* libzmq announces its reconnect (CONNECT_RETRIED) within microseconds of a
 * lost connection; a drop this long without it was abandoned (see
 * client_connection_abandoned). */
#define CLIENT_RETRY_GRACE_MS 500
#define CLIENT_NAME_BYTES (SCHAKEL_MAX_PRINCIPAL_LEN + 1u)
#define CLIENT_ENDPOINT_BYTES 256u
/* ZMQ_MAXMSGSIZE counts a frame as it travels: the CurveZMQ MESSAGE command
 * adds its name (8 bytes), nonce (8), MAC (16) and flags (1) to our bytes.
 * We accept every frame wire_decode_frame accepts, and send none that the
 * broker's socket (limit SCHAKEL_MAX_FRAME_BYTES on the wire) would drop. */
#define CLIENT_CURVE_OVERHEAD 33u
#define CLIENT_MAX_SEND_BYTES (SCHAKEL_MAX_FRAME_BYTES - CLIENT_CURVE_OVERHEAD)

/* Deliveries that arrive while the caller waits for an answer are queued.
 * The broker never has more than `window` unacked deliveries in flight to us
 * on one connection; a reconnect may resend all of them once more, and
 * duplicates (same seq) replace each other in place. Twice the largest window
 * therefore holds everything a conforming broker can send. If the queue is
 * full anyway, we stop reading the socket: nothing is ever dropped. */
#define CLIENT_FIFO_CAPACITY (2u * SCHAKEL_MAX_WINDOW)
/* Requests given up on that are remembered until their answer comes. */
#define CLIENT_GAVE_UP_MAX 16u
/* Heartbeats sent and not yet answered that the client keeps; beyond it
 * the oldest is forgotten (its answer, naming it, is then ignored; a
 * refusal of it lands on the next one, as refusals name no Heartbeat). */
#define CLIENT_HEARTBEATS_MAX 16u
/* A Heartbeat names itself (heartbeat_id) by when it was sent: its order,
 * 8 bytes big-endian. Orders are never reused by a client, so an answer
 * names one Heartbeat of this client's whole life, whatever connection it
 * came over. */
#define CLIENT_HEARTBEAT_ID_BYTES 8u
/* A round trip whose Heartbeat a broker from before heartbeat_id refused
 * is asked again without one; a reconnect between may take another try. */
#define CLIENT_HEARTBEAT_TRIES 3

/* A Heartbeat sent and not yet answered. */
typedef struct client_heartbeat {
    uint64_t order;     /* when it was sent (client->requests_sent), its heartbeat_id */
    int named;          /* it carried that id (not to a broker that refused ids) */
    int sent_connected; /* as inflight_entry_t's: lost with that connection */
    unsigned socket_no; /* client->sockets_made when it was sent */
} client_heartbeat_t;

typedef struct client_gave_up {
    uint64_t order;     /* when it was sent (client->requests_sent) */
    int sent_connected; /* as inflight_entry_t's: lost with that connection */
    int query;          /* a CaseQuery (answered by a CaseView), else a publish or command */
    int has_id;         /* a publish or case command: its answer names this id */
    uint8_t id[SCHAKEL_MESSAGE_ID_BYTES];
} client_gave_up_t;

struct schakel_client {
    void *context;
    void *socket;  /* DEALER to the broker; NULL if replacing it failed */
    void *monitor; /* PAIR receiving the DEALER's socket events */
    unsigned sockets_made;
    int64_t retry_awaited_since; /* a drop not yet followed by CONNECT_RETRIED, or 0 */
    keypair_t *keys;
    uint8_t broker_curve_pk[32];
    char endpoint[CLIENT_ENDPOINT_BYTES];
    char principal[CLIENT_NAME_BYTES];
    char partner[CLIENT_NAME_BYTES];
    char role[CLIENT_NAME_BYTES];
    uint64_t backlog;
    /* schakel_store_epoch: while it waits, Heartbeats ask for the epoch
     * (never otherwise: a broker from before the field refuses them), and
     * an answer that carries one sets it */
    int epoch_asking;
    int epoch_answered;
    uint8_t epoch[SCHAKEL_STORE_EPOCH_BYTES];
    int epoch_floor_known; /* the answer named the epoch's floor seq: */
    uint64_t epoch_floor;
    unsigned window;
    int subscribed;
    int flow_owed;          /* a Flow must (still) be sent for this connection */
    int handshakes;         /* successful CURVE handshakes so far */
    int connected;          /* a handshake succeeded and the connection has not dropped */
    int tcp_connects;       /* TCP connections made (for error texts) */
    int handshake_failures; /* connections closed during a handshake */
    int drops;              /* connections lost after they were up (for error texts) */
    /* Heartbeats sent on this connection and not yet answered, oldest
     * first, and those sent while there was none, which wait in the
     * socket's queue for the next. An answer names its Heartbeat (heartbeat_id): one from a lost
     * connection, read after the next handshake (PROTOCOL 7.10), names
     * none of these and is ignored. A refusal names none, and answers the
     * oldest, as answers come in order (a revoked principal, too many
     * connections). */
    client_heartbeat_t heartbeats[CLIENT_HEARTBEATS_MAX];
    size_t heartbeats_pending;
    /* This connection's broker refused a Heartbeat naming itself as a
     * broker from before heartbeat_id does (INVALID_MESSAGE): Heartbeats go
     * without it, answers are taken in order, until the next connection,
     * which may be to a newer broker. */
    int heartbeat_ids_refused;
    unsigned heartbeat_id_refusals; /* such refusals so far (a round trip asks again) */
    int64_t last_send_ms;
    delivery_queue_t queue; /* Deliver frames not yet handed out, CLIENT_FIFO_CAPACITY */
    inflight_t flight;      /* publishes sent, answer not yet handed out */
    /* Requests sent on this client so far whose answers (or refusals) come
     * in order: publishes, case commands, queries, Heartbeats, and Acks,
     * whose only answer is a refusal. */
    uint64_t requests_sent;
    acksent_t acks_sent; /* Acks whose refusal may come, and those owed again */
    /* Requests given up on (a query that timed out, a publish forgotten or
     * timed out) whose answer is still owed: a refusal naming no id answers
     * the oldest request still owed one. Oldest (lowest order) first. */
    client_gave_up_t gave_up[CLIENT_GAVE_UP_MAX];
    size_t n_gave_up;
    zmq_msg_t held; /* a message we had no memory to decode, if holding */
    int holding;
    schakel_error_t last_error;
};

/* What a wait loop is waiting for. */
enum client_wait_kind {
    CLIENT_WAIT_HANDSHAKE,
    CLIENT_WAIT_HEARTBEAT,
    CLIENT_WAIT_ANSWER,  /* Accepted/Rejected naming message_id (CasePublish) */
    CLIENT_WAIT_PUBLISH, /* the answer of a publish in flight (message_id), or of any (NULL) */
    CLIENT_WAIT_VIEW,    /* CaseView naming request_id, or a Rejected of the whole frame */
    CLIENT_WAIT_DELIVERY,
    CLIENT_WAIT_PAUSE, /* nothing: a pause that still reads what comes */
};

typedef struct client_wait {
    enum client_wait_kind kind;
    const uint8_t *message_id; /* CLIENT_WAIT_ANSWER, _PUBLISH: the one we wait for */
    uint64_t request_id;       /* CLIENT_WAIT_VIEW: the query we wait for */
    const uint8_t *request;    /* its encoded frame, sent again after a reconnect */
    size_t request_len;
    const char *what;       /* the request's name for error texts ("Publish") */
    uint64_t order;         /* when the request was (last) sent (client->requests_sent) */
    int sent_connected;     /* it was sent while a connection was up (inflight.h) */
    unsigned socket_no;     /* client->sockets_made when it was sent */
    /* A reconnect came after it was sent: send it (or a Heartbeat) again,
     * once every event read with that one is handled (client_wait_chores),
     * so that reconnects read together are answered with one copy. */
    int resend_owed;
    int heartbeat_owed;
    Schakel__Frame *answer; /* its answer, owned by the wait */
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

schakel_status_t client_fail(schakel_client_t *client, schakel_status_t status, const char *fmt,
                             ...)
{
    va_list args;
    va_start(args, fmt);
    client_error_vset(&client->last_error, status, fmt, args);
    va_end(args);
    return status;
}

/* Copy a broker Rejected into err: reason code, its name, item, and the
 * broker's own text (prefixed by `what` when given, e.g. the acked seq). */
void client_error_rejected(schakel_error_t *err, const Schakel__Rejected *rejected,
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

int64_t client_now_ms(void)
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

/* ------------------------------------------------------------------ sending */

static schakel_status_t client_replace_socket(schakel_client_t *client);

/* Send encoded bytes without blocking. With ZMQ_IMMEDIATE off the DEALER
 * queues while (re)connecting, so EAGAIN means the send queue
 * (SCHAKEL_SNDHWM messages) is full, or libzmq abandoned the connection. */
static schakel_status_t client_send_bytes(schakel_client_t *client, const uint8_t *buf, size_t len,
                                          const char *what)
{
    if (client->socket == NULL && client_replace_socket(client) != SCHAKEL_OK)
        return client->last_error.status;
    int rc = zmq_send(client->socket, buf, len, ZMQ_DONTWAIT);
    int saved_errno = errno;
    /* A live connection keeps its queue while reconnecting, so a full queue
     * right after an unannounced drop is an abandoned connection. */
    if (rc == -1 && saved_errno == EAGAIN && client->retry_awaited_since != 0 &&
        client_replace_socket(client) == SCHAKEL_OK) {
        rc = zmq_send(client->socket, buf, len, ZMQ_DONTWAIT);
        saved_errno = errno;
    }
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

static void client_heartbeat_id(uint64_t order, uint8_t id[CLIENT_HEARTBEAT_ID_BYTES])
{
    for (unsigned i = 0; i < CLIENT_HEARTBEAT_ID_BYTES; i++)
        id[i] = (uint8_t)(order >> (8u * (CLIENT_HEARTBEAT_ID_BYTES - 1u - i)));
}

static schakel_status_t client_send_heartbeat(schakel_client_t *client)
{
    Schakel__Heartbeat heartbeat = SCHAKEL__HEARTBEAT__INIT;
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    uint8_t id[CLIENT_HEARTBEAT_ID_BYTES];
    uint64_t order = client->requests_sent + 1;
    int named = !client->heartbeat_ids_refused;
    client_heartbeat_id(order, id);
    heartbeat.has_time = 1;
    heartbeat.time = client_wall_ms();
    heartbeat.has_store_epoch = client->epoch_asking; /* empty: asks for it */
    heartbeat.has_heartbeat_id = named;
    heartbeat.heartbeat_id.data = id;
    heartbeat.heartbeat_id.len = sizeof id;
    frame.body_case = SCHAKEL__FRAME__BODY_HEARTBEAT;
    frame.heartbeat = &heartbeat;
    schakel_status_t status = client_send(client, &frame, "Heartbeat");
    if (status != SCHAKEL_OK)
        return status;
    if (client->heartbeats_pending == CLIENT_HEARTBEATS_MAX) {
        memmove(&client->heartbeats[0], &client->heartbeats[1],
                (CLIENT_HEARTBEATS_MAX - 1) * sizeof client->heartbeats[0]);
        client->heartbeats_pending--;
    }
    client->heartbeats[client->heartbeats_pending++] =
        (client_heartbeat_t){order, named, client->connected, client->sockets_made};
    client->requests_sent = order;
    return SCHAKEL_OK;
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

/* Send the Flow this connection is owed. A Flow that could not be sent
 * stays owed and is tried again by the next wait: a receiver whose Flow was
 * lost would otherwise never be pushed to until the next reconnect. */
static schakel_status_t client_send_owed_flow(schakel_client_t *client)
{
    if (!client->flow_owed)
        return SCHAKEL_OK;
    schakel_status_t status = client_send_flow(client);
    if (status == SCHAKEL_OK)
        client->flow_owed = 0;
    return status;
}

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
static void client_give_up(schakel_client_t *client, uint64_t order, int sent_connected, int query,
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

/* A new connection is up: what was given up on while a connection was up
 * went with it; what was sent while none was goes out on this one. */
static void client_gave_up_reconnected(schakel_client_t *client)
{
    size_t keep = 0;
    for (size_t i = 0; i < client->n_gave_up; i++)
        if (!client->gave_up[i].sent_connected) {
            client->gave_up[keep] = client->gave_up[i];
            client->gave_up[keep++].sent_connected = 1;
        }
    client->n_gave_up = keep;
}

/* A publish in flight is dropped by the caller: if it is on the wire and
 * unanswered, its answer still comes and must not be taken for another's. */
static void client_flight_drop(schakel_client_t *client, inflight_entry_t *entry)
{
    if (entry->answer == NULL && !entry->resend_owed)
        client_give_up(client, entry->order, entry->sent_connected, 0, entry->id);
    inflight_remove(&client->flight, entry);
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

/* Send again each publish in flight whose resend is owed (after a
 * reconnect), oldest first; one that cannot be queued now stays owed, and
 * so do those after it, which keeps them in order. */
static schakel_status_t client_send_owed_publishes(schakel_client_t *client)
{
    for (size_t i = 0; i < client->flight.count; i++) {
        inflight_entry_t *entry = &client->flight.entries[i];
        if (entry->answer != NULL)
            entry->resend_owed = 0; /* answered meanwhile: nothing to send */
        if (!entry->resend_owed)
            continue;
        schakel_status_t status =
            client_send_bytes(client, entry->frame, entry->frame_len, "Publish");
        if (status != SCHAKEL_OK)
            return status;
        entry->resend_owed = 0;
        entry->order = ++client->requests_sent;
        entry->sent_connected = client->connected;
    }
    return SCHAKEL_OK;
}

/* Send again each Ack the broker refused RATE_LIMITED whose pause is
 * over (acksent.h), oldest first; one that cannot be queued now stays
 * owed, and is tried again by the next wait. */
static schakel_status_t client_send_owed_acks(schakel_client_t *client, int64_t now)
{
    acksent_entry_t *entry;
    while ((entry = acksent_due(&client->acks_sent, now)) != NULL) {
        schakel_status_t status = client_send_bytes(client, entry->frame, entry->frame_len, "Ack");
        if (status != SCHAKEL_OK)
            return status;
        acksent_resent(&client->acks_sent, entry, ++client->requests_sent);
    }
    return SCHAKEL_OK;
}

/* A new connection is up: Heartbeats that went out on the lost one are
 * owed no answer any more (one may still be read, PROTOCOL 7.10: it names
 * a Heartbeat not owed one, and is ignored), and the one a wait is for is
 * asked again. Those sent while there was none wait in the socket's queue
 * and go out on this one: they stay owed, and are answered (or refused, by
 * a broker from before heartbeat_id, whose refusals would otherwise be
 * taken for those of the Heartbeats asked after them). */
static void client_heartbeats_reconnected(schakel_client_t *client, client_wait_t *wait)
{
    size_t kept = 0;
    int last_lost = 0; /* a wait's Heartbeat is the last one sent */
    for (size_t i = 0; i < client->heartbeats_pending; i++) {
        client_heartbeat_t heartbeat = client->heartbeats[i];
        if (!heartbeat.sent_connected && heartbeat.socket_no == client->sockets_made) {
            heartbeat.sent_connected = 1; /* in the queue: it goes out now */
            client->heartbeats[kept++] = heartbeat;
        } else {
            last_lost = i + 1 == client->heartbeats_pending;
        }
    }
    if (wait->kind == CLIENT_WAIT_HEARTBEAT && last_lost)
        wait->heartbeat_owed = 1;
    client->heartbeats_pending = kept;
}

/* A new connection is up: the broker keeps no session state across
 * connections, so our window is owed again, and so is a question whose
 * answer may have been lost with the old connection. A publish is sent
 * again as is: the broker answers a repeated message id with the original
 * answer. Nothing is sent here: the wait sends what is owed once every
 * event read with this one is handled (events are read late, after calls
 * that did not read them, and several reconnects then mean one copy). */
static void client_on_handshake(schakel_client_t *client, client_wait_t *wait)
{
    client->handshakes++;
    client->connected = 1;
    client->handshake_failures = 0;
    if (client->handshakes > 1) {
        client->flow_owed = client->subscribed;
        client_gave_up_reconnected(client);
        /* What went out on the lost connection is sent again; what was
         * sent while there was none waits in the socket's queue and goes
         * out on this one (sending it again would make two copies, and a
         * second, stale answer). */
        for (size_t i = 0; i < client->flight.count; i++) {
            inflight_entry_t *entry = &client->flight.entries[i];
            if (entry->answer != NULL || entry->resend_owed)
                continue;
            if (entry->sent_connected)
                entry->resend_owed = 1;
            else
                entry->sent_connected = 1;
        }
        /* A publish or case command is answered once whatever the number of
         * copies (idempotent by id); a query has no effect to repeat. */
        if ((wait->kind == CLIENT_WAIT_ANSWER || wait->kind == CLIENT_WAIT_VIEW) &&
            wait->request != NULL && !wait->resend_owed) {
            if (!wait->sent_connected && wait->socket_no == client->sockets_made)
                wait->sent_connected = 1; /* in the queue: it goes out now */
            else
                wait->resend_owed = 1;
        }
        client_heartbeats_reconnected(client, wait);
        client->heartbeat_ids_refused = 0; /* perhaps a newer broker */
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
        client->retry_awaited_since = 0;
        break;
    case ZMQ_EVENT_CONNECT_DELAYED:
    case ZMQ_EVENT_CONNECT_RETRIED:
        client->retry_awaited_since = 0;
        break;
    case ZMQ_EVENT_DISCONNECTED:
        if (client->connected)
            client->drops++;
        else
            client->handshake_failures++; /* closed before the handshake completed */
        client->connected = 0;
        client->retry_awaited_since = client_now_ms() | 1; /* never 0 */
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

/* Read one ZMQ message from the broker, if one is there (returns 1, else 0),
 * and act on it. A message the codec
 * refuses (not a Frame, wrong version, multipart, over the size limit) ends
 * the current wait with SCHAKEL_ERR_PROTOCOL: the broker is not speaking our
 * protocol, and waiting on would only hide that behind a timeout. A message
 * we lacked the memory to decode (the codec's INTERNAL_ERROR) ends the wait
 * with SCHAKEL_ERR_NOMEM and is held, to be decoded first by the next wait:
 * it may be the answer or delivery the broker will not send again. */
static int client_read_frame(schakel_client_t *client, client_wait_t *wait)
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
    if (frame == NULL && !multipart && werr.reason == SCHAKEL__REASON__INTERNAL_ERROR &&
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

/* ------------------------------------------------------------------ waiting */

/* libzmq reconnects a lost connection and says so at once (CONNECT_RETRIED),
 * except after a protocol error on an established connection (a frame over
 * ZMQ_MAXMSGSIZE, a frame failing CURVE authentication): then it abandons
 * the connection for good, silently, and every send fails with EAGAIN. A
 * drop without that word for CLIENT_RETRY_GRACE_MS is taken as abandoned,
 * and the socket is replaced. */
static int client_connection_abandoned(const schakel_client_t *client, int64_t now)
{
    return client->retry_awaited_since != 0 &&
           now - client->retry_awaited_since >= CLIENT_RETRY_GRACE_MS;
}

/* The answered publish a wait for `id` (NULL: any) would hand out. */
static inflight_entry_t *client_flight_ready(schakel_client_t *client, const uint8_t *id)
{
    if (id == NULL)
        return inflight_first_answered(&client->flight);
    inflight_entry_t *entry = inflight_find(&client->flight, id);
    return entry != NULL && entry->answer != NULL ? entry : NULL;
}

/* The request a wait is for, or its Heartbeat, sent again after a
 * reconnect (client_on_handshake); a failure to send ends the wait. */
static void client_send_owed_request(schakel_client_t *client, client_wait_t *wait)
{
    if (wait->resend_owed) {
        if (client_send_bytes(client, wait->request, wait->request_len, wait->what) != SCHAKEL_OK) {
            client_wait_finish(wait, client->last_error.status);
            return;
        }
        wait->resend_owed = 0;
        wait->order = ++client->requests_sent;
        wait->sent_connected = client->connected;
        wait->socket_no = client->sockets_made;
    }
    if (wait->heartbeat_owed) {
        wait->heartbeat_owed = 0;
        if (client_send_heartbeat(client) != SCHAKEL_OK)
            client_wait_finish(wait, client->last_error.status);
    }
}

/* Events that came while no call read them (drops, reconnects), handled
 * before a request goes out: it is then sent knowing the connection it
 * goes out on, and is not taken for one lost with an earlier connection
 * (which would send it again once per reconnect read). What they make
 * owed goes out with the request's own wait. Returns an error a handshake
 * ended in (a refused key), else SCHAKEL_OK. */
static schakel_status_t client_catch_up(schakel_client_t *client)
{
    client_wait_t idle = {.kind = CLIENT_WAIT_DELIVERY}; /* waits for nothing of its own */
    if (client->monitor != NULL)
        client_drain_events(client, &idle);
    return idle.done ? idle.status : SCHAKEL_OK;
}

/* What a wait does before it polls: hand out what is queued, replace an
 * abandoned socket, decode a held message, send an owed Flow. */
static void client_wait_chores(schakel_client_t *client, client_wait_t *wait, int64_t now)
{
    if (wait->kind == CLIENT_WAIT_DELIVERY && client->queue.count > 0)
        client_wait_finish(wait, SCHAKEL_OK);
    if (wait->kind == CLIENT_WAIT_PUBLISH && client_flight_ready(client, wait->message_id) != NULL)
        client_wait_finish(wait, SCHAKEL_OK);
    if (!wait->done && client_connection_abandoned(client, now))
        client_drain_events(client, wait); /* the word may have come while no call read it */
    if (!wait->done && (client->socket == NULL || client_connection_abandoned(client, now)) &&
        client_replace_socket(client) != SCHAKEL_OK)
        client_wait_finish(wait, client->last_error.status);
    if (!wait->done && client->holding && !delivery_queue_full(&client->queue))
        client_read_frame(client, wait);
    if (!wait->done) {
        (void)client_send_owed_flow(client);      /* stays owed on failure */
        (void)client_send_owed_publishes(client); /* likewise */
        (void)client_send_owed_acks(client, now); /* likewise */
        client_send_owed_request(client, wait);
    }
}

/* How long the wait may sleep in zmq_poll (-1 = no limit): until its
 * deadline, the moment an unannounced drop counts as abandoned, when a
 * refused Ack is owed again, and, while
 * waiting for a delivery, the next keep-alive Heartbeat (sent here when due,
 * so that the broker keeps the session). */
static int64_t client_wait_sleep_ms(schakel_client_t *client, const client_wait_t *wait,
                                    int64_t deadline, int64_t now)
{
    int64_t sleep_ms = deadline < 0 ? -1 : deadline > now ? deadline - now : 0;
    int64_t wake = -1;
    if (client->retry_awaited_since != 0)
        wake = client->retry_awaited_since + CLIENT_RETRY_GRACE_MS;
    int64_t ack_due = acksent_next_due(&client->acks_sent); /* an Ack owed again */
    if (ack_due >= 0 && (wake < 0 || ack_due < wake))
        wake = ack_due;
    if (wait->kind == CLIENT_WAIT_DELIVERY) {
        int64_t due = client->last_send_ms + SCHAKEL_CLIENT_HEARTBEAT_MS;
        if (now >= due) {
            /* Best-effort keep-alive; none is queued while disconnected,
             * where it would only pile up and answer later questions. */
            if (client->connected)
                (void)client_send_heartbeat(client);
            due = now + SCHAKEL_CLIENT_HEARTBEAT_MS;
        }
        if (wake < 0 || due < wake)
            wake = due;
    }
    if (wake >= 0 && (sleep_ms < 0 || wake - now < sleep_ms))
        sleep_ms = wake > now ? wake - now : 0;
    return sleep_ms;
}

/* Poll the socket and the monitor until the wait is done or the deadline
 * (monotonic ms; -1 = none) passes. Returns the wait's status or TIMEOUT. */
static schakel_status_t client_wait(schakel_client_t *client, client_wait_t *wait, int64_t deadline)
{
    int polled = 0; /* poll at least once: a zero timeout still reads what is there */
    for (;;) {
        int64_t now = client_now_ms();
        client_wait_chores(client, wait, now);
        if (wait->done)
            return wait->status;
        if (deadline >= 0 && now >= deadline && polled)
            return SCHAKEL_ERR_TIMEOUT;
        long sleep_ms = (long)client_wait_sleep_ms(client, wait, deadline, now); /* keep-alive */
        polled = 1;
        /* What zmq_poll would find ready, taken without it while frames
         * come in a stream (most of a receiver's waits): the socket's
         * events first, then one frame, as below. Only a wait that finds
         * nothing there polls, and sleeps. */
        if (client->monitor != NULL)
            client_drain_events(client, wait);
        if (!wait->done && client->socket != NULL && !delivery_queue_full(&client->queue) &&
            client_read_frame(client, wait))
            continue;
        if (wait->done)
            continue;
        zmq_pollitem_t items[2] = {
            {client->monitor, 0, ZMQ_POLLIN, 0},
            {client->socket, 0, delivery_queue_full(&client->queue) ? 0 : ZMQ_POLLIN, 0},
        };
        if (zmq_poll(items, 2, sleep_ms) == -1) {
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

/* What else a timed-out wait may owe its silence to, for the error text:
 * a full delivery queue (we stopped reading), connections lost meanwhile
 * (a broker restarting, or one sending frames over our size limit, which
 * libzmq answers by dropping the connection), or no connection at all. */
static const char *client_timeout_hint(const schakel_client_t *client, int drops_before, char *buf,
                                       size_t len)
{
    int drops = client->drops - drops_before;
    if (delivery_queue_full(&client->queue))
        return " (deliveries are waiting: call schakel_receive)";
    if (drops > 0) {
        snprintf(buf, len,
                 " (the connection dropped %d time%s meanwhile: broker restarting, or sending "
                 "frames over %u bytes?)",
                 drops, drops == 1 ? "" : "s", SCHAKEL_MAX_FRAME_BYTES);
        return buf;
    }
    return client->connected ? "" : " (not connected to the broker)";
}

/* One Heartbeat round trip: refreshes principal, partner, role, backlog.
 * A Heartbeat that a broker from before heartbeat_id refused is asked
 * again without it (client_on_rejected). */
static schakel_status_t client_heartbeat_round_trip(schakel_client_t *client, int timeout_ms)
{
    int64_t deadline = client_deadline(timeout_ms);
    int drops_before = client->drops;
    char hint[160];
    schakel_status_t status = SCHAKEL_ERR_REFUSED;
    for (int tries = 0; tries < CLIENT_HEARTBEAT_TRIES; tries++) {
        client_wait_t wait = {.kind = CLIENT_WAIT_HEARTBEAT};
        unsigned refusals = client->heartbeat_id_refusals;
        status = client_catch_up(client);
        if (status == SCHAKEL_OK)
            status = client_send_heartbeat(client);
        if (status != SCHAKEL_OK)
            return status;
        status = client_wait(client, &wait, deadline);
        if (status != SCHAKEL_ERR_REFUSED || client->heartbeat_id_refusals == refusals)
            break;
    }
    if (status == SCHAKEL_ERR_TIMEOUT)
        return client_fail(client, SCHAKEL_ERR_TIMEOUT,
                           "broker %s did not answer a Heartbeat within %d ms%s", client->endpoint,
                           timeout_ms,
                           client_timeout_hint(client, drops_before, hint, sizeof hint));
    return status;
}

/* ------------------------------------------------------------------ connect */

/* Close the DEALER and its monitor; linger_ms < 0 keeps the socket's own. */
static void client_close_socket(schakel_client_t *client, int linger_ms)
{
    if (client->socket != NULL) {
        (void)zmq_socket_monitor(client->socket, NULL, 0);
        if (linger_ms >= 0)
            (void)zmq_setsockopt(client->socket, ZMQ_LINGER, &linger_ms, sizeof linger_ms);
    }
    if (client->monitor != NULL)
        zmq_close(client->monitor);
    if (client->socket != NULL)
        zmq_close(client->socket);
    client->monitor = client->socket = NULL;
    client->connected = 0;
    client->retry_awaited_since = 0;
}

static void client_destroy(schakel_client_t *client)
{
    if (client == NULL)
        return;
    delivery_queue_destroy(&client->queue);
    inflight_clear(&client->flight);
    acksent_clear(&client->acks_sent);
    zmq_msg_close(&client->held);
    client_close_socket(client, -1);
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
                                         const char *key_file, schakel_error_t *err)
{
    char text[256] = "";
    uint8_t broker_sign_pk[32];

    /* keys_load_secret names no cause; the allocators (malloc and
     * sodium_malloc) leave ENOMEM in errno, and a shortage of memory must not
     * send the user off to inspect a key file. */
    errno = 0;
    client->keys = keys_load_secret(key_file, text, sizeof text);
    if (client->keys == NULL && errno == ENOMEM)
        return client_error_set(err, SCHAKEL_ERR_NOMEM, "out of memory loading our key %s",
                                key_file);
    if (client->keys == NULL)
        return client_error_set(err, SCHAKEL_ERR_KEY, "our key: %s", text);
    if (keys_load_public(broker_pub_file, broker_sign_pk, text, sizeof text) != 0)
        return client_error_set(err, SCHAKEL_ERR_KEY, "broker key: %s", text);
    if (keys_sign_pk_to_curve(broker_sign_pk, client->broker_curve_pk) != 0)
        return client_error_set(err, SCHAKEL_ERR_KEY,
                                "broker key %s is not a valid Ed25519 public key", broker_pub_file);
    return SCHAKEL_OK;
}

static int client_set_int(void *socket, int option, int value)
{
    return zmq_setsockopt(socket, option, &value, sizeof value);
}

/* The DEALER with CURVE keys, bounded queues and liveness checks, and the
 * PAIR that receives its events. */
static schakel_status_t client_make_socket(schakel_client_t *client, schakel_error_t *err)
{
    char monitor_endpoint[64];
    client->socket = zmq_socket(client->context, ZMQ_DEALER);
    if (client->socket == NULL)
        return client_error_set(err, SCHAKEL_ERR_INTERNAL, "cannot create a socket: %s",
                                zmq_strerror(errno));
    int64_t max_frame = SCHAKEL_MAX_FRAME_BYTES + CLIENT_CURVE_OVERHEAD;
    int rc = 0;
    rc |= zmq_setsockopt(client->socket, ZMQ_CURVE_SERVERKEY, client->broker_curve_pk, 32);
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
    int events = ZMQ_EVENT_CONNECTED | ZMQ_EVENT_CONNECT_DELAYED | ZMQ_EVENT_CONNECT_RETRIED |
                 ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL;
    /* a fresh name for each socket: the old one's may still be in use */
    snprintf(monitor_endpoint, sizeof monitor_endpoint, "%s%u", CLIENT_MONITOR_PREFIX,
             client->sockets_made++);
    if (zmq_socket_monitor(client->socket, monitor_endpoint, events) != 0)
        return client_error_set(err, SCHAKEL_ERR_INTERNAL, "cannot monitor the socket: %s",
                                zmq_strerror(errno));
    client->monitor = zmq_socket(client->context, ZMQ_PAIR);
    if (client->monitor == NULL || client_set_int(client->monitor, ZMQ_LINGER, 0) != 0 ||
        zmq_connect(client->monitor, monitor_endpoint) != 0)
        return client_error_set(err, SCHAKEL_ERR_INTERNAL, "cannot monitor the socket: %s",
                                zmq_strerror(errno));
    if (zmq_connect(client->socket, client->endpoint) != 0)
        return client_error_set(err, SCHAKEL_ERR_CONNECT, "invalid broker endpoint '%s': %s",
                                client->endpoint, zmq_strerror(errno));
    return SCHAKEL_OK;
}

/* Replace an abandoned (or missing) socket by a new one, connecting at once.
 * What was queued on the old one is lost: the calls that wait send their
 * question again after the handshake (client_on_handshake), and an Ack lost
 * here only means the broker delivers that seq once more. */
static schakel_status_t client_replace_socket(schakel_client_t *client)
{
    schakel_error_t err;
    client_close_socket(client, 0);
    /* The old socket's queue is gone: everything unanswered is sent again
     * on the new connection, and no answer comes for what was given up. */
    for (size_t i = 0; i < client->flight.count; i++)
        if (client->flight.entries[i].answer == NULL)
            client->flight.entries[i].sent_connected = 1;
    client->n_gave_up = 0;
    schakel_status_t status = client_make_socket(client, &err);
    if (status != SCHAKEL_OK) {
        client_close_socket(client, 0);
        client->last_error = err;
    }
    return status;
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
    const char *why = "the server accepted the connection but never completed the handshake: "
                      "not a Schakel broker at that address, or one overloaded?";
    if (client->tcp_connects == 0)
        why = "no TCP connection: broker down or wrong address";
    else if (client->handshake_failures > 0)
        why = "the connection was closed during the handshake: the broker may be turning this "
              "key away for now (too many handshakes of late, or it cannot record the "
              "admission: see its log), or a wrong broker key is pinned, or no Schakel broker "
              "listens there";
    return client_error_set(err, SCHAKEL_ERR_CONNECT,
                            "could not complete a CURVE handshake with %s within %d ms: %s",
                            client->endpoint, timeout_ms, why);
}

/* Everything after the client is allocated; err is always filled on error. */
static schakel_status_t client_open(schakel_client_t *client, const char *broker_pub_file,
                                    const char *key_file, int timeout_ms, schakel_error_t *err)
{
    int64_t deadline = client_deadline(timeout_ms);

    schakel_status_t status = client_load_keys(client, broker_pub_file, key_file, err);
    if (status != SCHAKEL_OK)
        return status;
    if (delivery_queue_init(&client->queue, CLIENT_FIFO_CAPACITY) != 0)
        return client_error_set(err, SCHAKEL_ERR_NOMEM, "out of memory");
    client->context = zmq_ctx_new();
    if (client->context == NULL)
        return client_error_set(err, errno == ENOMEM ? SCHAKEL_ERR_NOMEM : SCHAKEL_ERR_INTERNAL,
                                "cannot create a zmq context: %s", zmq_strerror(errno));
    if (!zmq_has("curve"))
        return client_error_set(err, SCHAKEL_ERR_INTERNAL,
                                "this libzmq was built without CURVE support");
    status = client_make_socket(client, err);
    if (status != SCHAKEL_OK)
        return status;
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
    /* kept whole: every replacement socket connects to it again */
    if (strlen(endpoint) >= CLIENT_ENDPOINT_BYTES)
        return client_error_set(err, SCHAKEL_ERR_USAGE, "broker endpoint longer than %u bytes",
                                CLIENT_ENDPOINT_BYTES - 1);
    if (keys_init() != 0)
        return client_error_set(err, SCHAKEL_ERR_INTERNAL, "libsodium failed to initialise");
    schakel_client_t *client = calloc(1, sizeof *client);
    if (client == NULL)
        return client_error_set(err, SCHAKEL_ERR_NOMEM, "out of memory");
    zmq_msg_init(&client->held); /* closed by client_destroy, on every path */
    snprintf(client->endpoint, sizeof client->endpoint, "%s", endpoint);
    client->last_error.item_index = -1;
    schakel_status_t status = client_open(client, broker_pub_file, key_file, timeout_ms, err);
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

_Static_assert(SCHAKEL_STORE_EPOCH_BYTES == 16, "schakel.h says 16 bytes");

/* Both calls: the Heartbeat round trip that asks for the epoch. */
static schakel_status_t client_store_epoch(schakel_client_t *client, uint8_t epoch[16], int *known,
                                           uint64_t *floor_seq, int *floor_known, int timeout_ms)
{
    memset(epoch, 0, SCHAKEL_STORE_EPOCH_BYTES);
    *known = 0;
    *floor_seq = 0;
    *floor_known = 0;
    client->epoch_asking = 1;
    client->epoch_answered = 0;
    client->epoch_floor_known = 0;
    schakel_status_t status = client_heartbeat_round_trip(client, timeout_ms);
    client->epoch_asking = 0;
    /* A broker from before store epochs refuses a Heartbeat that asks (an
     * unknown field): it names none. Any other refusal is the caller's. */
    if (status == SCHAKEL_ERR_REFUSED &&
        client->last_error.reason == SCHAKEL__REASON__INVALID_MESSAGE)
        return SCHAKEL_OK;
    if (status == SCHAKEL_OK && client->epoch_answered) {
        memcpy(epoch, client->epoch, SCHAKEL_STORE_EPOCH_BYTES);
        *known = 1;
        *floor_known = client->epoch_floor_known;
        *floor_seq = client->epoch_floor;
    }
    return status;
}

schakel_status_t schakel_store_epoch(schakel_client_t *client, uint8_t epoch[16], int *known,
                                     int timeout_ms)
{
    uint64_t floor_seq;
    int floor_known;
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    if (epoch == NULL || known == NULL || timeout_ms <= 0)
        return client_fail(client, SCHAKEL_ERR_USAGE,
                           "schakel_store_epoch needs two outputs and a positive timeout");
    return client_store_epoch(client, epoch, known, &floor_seq, &floor_known, timeout_ms);
}

schakel_status_t schakel_store_epoch_floor(schakel_client_t *client, uint8_t epoch[16], int *known,
                                           uint64_t *floor_seq, int *floor_known, int timeout_ms)
{
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    if (epoch == NULL || known == NULL || floor_seq == NULL || floor_known == NULL ||
        timeout_ms <= 0)
        return client_fail(client, SCHAKEL_ERR_USAGE,
                           "schakel_store_epoch_floor needs four outputs and a positive timeout");
    return client_store_epoch(client, epoch, known, floor_seq, floor_known, timeout_ms);
}

schakel_status_t schakel_connections_made(schakel_client_t *client, uint64_t *count)
{
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    if (count == NULL)
        return client_fail(client, SCHAKEL_ERR_USAGE, "schakel_connections_made needs an output");
    /* libzmq says a handshake succeeded before the connection hands on any
     * frame it brings, so once an answer was read its connection's word is
     * in the monitor: read here, it is counted */
    schakel_status_t status = client_catch_up(client);
    *count = (uint64_t)client->handshakes;
    return status;
}

schakel_status_t schakel_derive_secret(schakel_client_t *client, const char *context,
                                       uint64_t subkey_id, uint8_t *out, size_t len)
{
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    /* strnlen: a context longer than 8 is refused without reading past
     * its ninth byte */
    if (out == NULL || context == NULL ||
        strnlen(context, crypto_kdf_CONTEXTBYTES + 1) != crypto_kdf_CONTEXTBYTES)
        return client_fail(client, SCHAKEL_ERR_USAGE,
                           "schakel_derive_secret needs an output and a context of %u characters",
                           (unsigned)crypto_kdf_CONTEXTBYTES);
    if (len < crypto_kdf_BYTES_MIN || len > crypto_kdf_BYTES_MAX)
        return client_fail(client, SCHAKEL_ERR_USAGE,
                           "schakel_derive_secret derives %u to %u bytes, not %zu",
                           (unsigned)crypto_kdf_BYTES_MIN, (unsigned)crypto_kdf_BYTES_MAX, len);
    if (keys_derive(client->keys, context, subkey_id, out, len) != 0) {
        sodium_memzero(out, len);
        return client_fail(client, SCHAKEL_ERR_INTERNAL, "cannot derive a secret from the key");
    }
    return SCHAKEL_OK;
}

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
    if (status == SCHAKEL_ERR_TIMEOUT)
        return client_fail(client, SCHAKEL_ERR_TIMEOUT, "no delivery within %d ms", timeout_ms);
    if (status != SCHAKEL_OK)
        return status;
    char text[200] = "";
    status = delivery_decode(delivery_queue_peek(&client->queue)->deliver, out, text, sizeof text);
    /* Short of memory, the delivery stays queued for the next call: the
     * broker would not send it again before its ack timeout. */
    if (status != SCHAKEL_ERR_NOMEM)
        delivery_queue_drop_front(&client->queue);
    if (status != SCHAKEL_OK)
        return client_fail(client, status, "%s (from broker %s)", text, client->endpoint);
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
