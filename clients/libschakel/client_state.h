/*
 * client_state.h — one client's state (struct schakel_client), what a
 * wait loop waits for, and what the four files of the connection share:
 * client.c (errors, connect, the Heartbeat's questions, keys),
 * client_wait.c (sending, the monitor's events and the wait loop),
 * client_frames.c (frames in, paired with the requests owed an answer)
 * and client_request.c (publishes, case.c's requests, receiving and
 * acks). Private to those four files (not installed, not exported).
 */
#ifndef SCHAKEL_CLIENT_STATE_H
#define SCHAKEL_CLIENT_STATE_H

#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#include "acksent.h"
#include "delivery.h"
#include "inflight.h"
#include "keys.h"
#include "schakel.h"
#include "schakel_limits.h"
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
    int asked_epoch;    /* it asked for the store epoch */
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
    /* The delivery the last error is about (schakel_undecodable_seq): set
     * by schakel_receive with a SCHAKEL_ERR_PROTOCOL for a delivery it
     * could not read, cleared by every other failure (client_fail). */
    uint64_t undecodable_seq;
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
    const char *what;   /* the request's name for error texts ("Publish") */
    uint64_t order;     /* when the request was (last) sent (client->requests_sent) */
    int sent_connected; /* it was sent while a connection was up (inflight.h) */
    unsigned socket_no; /* client->sockets_made when it was sent */
    /* A reconnect came after it was sent: send it (or a Heartbeat) again,
     * once every event read with that one is handled (client_wait_chores),
     * so that reconnects read together are answered with one copy. */
    int resend_owed;
    int heartbeat_owed;
    Schakel__Frame *answer; /* its answer, owned by the wait */
    int done;
    schakel_status_t status; /* result once done */
    int interrupted;         /* a wait without deadline ended by a signal (TIMEOUT) */
} client_wait_t;

/* What client_wait.c and client_frames.c share, inline: they run for
 * every frame and every Heartbeat. */

/* The id a Heartbeat sent as request `order` names: order, big-endian. */
static inline void client_heartbeat_id(uint64_t order, uint8_t id[CLIENT_HEARTBEAT_ID_BYTES])
{
    for (unsigned i = 0; i < CLIENT_HEARTBEAT_ID_BYTES; i++)
        id[i] = (uint8_t)(order >> (8u * (CLIENT_HEARTBEAT_ID_BYTES - 1u - i)));
}

/* The wait ends with status, unless it ended already. */
static inline void client_wait_finish(client_wait_t *wait, schakel_status_t status)
{
    if (!wait->done) {
        wait->done = 1;
        wait->status = status;
    }
}

/* ------------------------------------------------------------------ client.c */

/* Replace an abandoned (or missing) socket by a new one, connecting at
 * once; what was queued on the old one is lost. */
schakel_status_t client_replace_socket(schakel_client_t *client);

/* ------------------------------------------------------------------ client_wait.c */

/* Send encoded bytes without blocking (`what` names them in texts). */
schakel_status_t client_send_bytes(schakel_client_t *client, const uint8_t *buf, size_t len,
                                   const char *what);

/* Send a Heartbeat naming itself (unless this broker refused ids). */
schakel_status_t client_send_heartbeat(schakel_client_t *client);

/* Send the Flow this connection is owed; one not sent stays owed. */
schakel_status_t client_send_owed_flow(schakel_client_t *client);

/* Send again each publish in flight whose resend is owed, oldest first. */
schakel_status_t client_send_owed_publishes(schakel_client_t *client);

/* Send again each Ack refused RATE_LIMITED whose pause is over. */
schakel_status_t client_send_owed_acks(schakel_client_t *client, int64_t now);

/* The answered publish a wait for `id` (NULL: any) would hand out. */
inflight_entry_t *client_flight_ready(schakel_client_t *client, const uint8_t *id);

/* Events that came while no call read them, handled before a request
 * goes out. Returns an error a handshake ended in, else SCHAKEL_OK. */
schakel_status_t client_catch_up(schakel_client_t *client);

/* Poll the socket and the monitor until the wait is done or the deadline
 * (monotonic ms; -1 = none) passes. Returns the wait's status or TIMEOUT. */
schakel_status_t client_wait(schakel_client_t *client, client_wait_t *wait, int64_t deadline);

/* Deadline for a timeout in ms; negative timeouts are refused by callers. */
int64_t client_deadline(int timeout_ms);

/* What else a timed-out wait may owe its silence to, for the error text
 * (in buf, or a static text). */
const char *client_timeout_hint(const schakel_client_t *client, int drops_before, char *buf,
                                size_t len);

/* One Heartbeat round trip: refreshes principal, partner, role, backlog. */
schakel_status_t client_heartbeat_round_trip(schakel_client_t *client, int timeout_ms);

/* ------------------------------------------------------------------ client_frames.c */

/* A request sent as `order` (naming message id `id`, or NULL) was given
 * up on: its answer still comes. */
void client_give_up(schakel_client_t *client, uint64_t order, int sent_connected, int query,
                    const uint8_t *id);

/* A publish in flight dropped by the caller: its answer, if it still
 * comes, is not taken for another's. */
void client_flight_drop(schakel_client_t *client, inflight_entry_t *entry);

/* Read one ZMQ message from the broker, if one is there (1, else 0), and
 * act on it: decoded, paired with the request it answers, or queued. A
 * frame that does not decode ends the wait (SCHAKEL_ERR_PROTOCOL), one
 * not decoded for want of memory is held for the next wait. */
int client_read_frame(schakel_client_t *client, client_wait_t *wait);

#endif
