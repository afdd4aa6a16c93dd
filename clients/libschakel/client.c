/*
 * client.c — libschakel: one CurveZMQ connection from a partner to schakeld.
 *
 * Owns the client's zmq context, its DEALER socket and handshake monitor
 * (connect, replace, close), the last error, what a Heartbeat asks
 * (whoami, backlog, store epoch) and keys; client_wait.c has the wait loop
 * (sending, events, frames in), client_request.c the publish/answer
 * exchange, receiving and acks (client_state.h). Trusts nothing the
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
#include "client_state.h"
#include "delivery.h"
#include "inflight.h"
#include "keys.h"
#include "schakel_limits.h"
#include "signal_pb.h"
#include "syntax.h"
#include "wire.h"

/* ------------------------------------------------------------------ errors */

/* schakel.h's reason codes are the protocol's (proto/schakel.proto;
 * tests/docs/test_man.py checks that the header names every one). */
#define SAME_REASON(name)                                                                          \
    _Static_assert((int)SCHAKEL_REASON_##name == (int)SCHAKEL__REASON__##name, #name)
_Static_assert((int)SCHAKEL_REASON_NONE == (int)SCHAKEL__REASON__REASON_NONE, "NONE");
SAME_REASON(INVALID_MESSAGE);
SAME_REASON(FRAME_TOO_LARGE);
SAME_REASON(TOO_MANY_FRAMES);
SAME_REASON(UNSUPPORTED_VERSION);
SAME_REASON(SENDER_MISMATCH);
SAME_REASON(BAD_SIGNATURE);
SAME_REASON(DUPLICATE_CONFLICT);
SAME_REASON(POLICY_DENIED);
SAME_REASON(INVALID_THEME);
SAME_REASON(INVALID_AREA);
SAME_REASON(INVALID_POSTCODE);
SAME_REASON(INVALID_FIELD);
SAME_REASON(MISSING_GROUNDS);
SAME_REASON(TOO_MANY_ITEMS);
SAME_REASON(NOT_PERMITTED);
SAME_REASON(UNKNOWN_DELIVERY);
SAME_REASON(UNEXPECTED_BODY);
SAME_REASON(INTERNAL_ERROR);
SAME_REASON(RATE_LIMITED);
SAME_REASON(NOT_FOUND);
SAME_REASON(CASE_CLOSED);
SAME_REASON(TOO_MANY_CONNECTIONS);
SAME_REASON(UNAVAILABLE);
SAME_REASON(CASE_IDS_EXHAUSTED);
#undef SAME_REASON

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
    client->undecodable_seq = 0;
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

/* Only while the last error is the receive's: a refusal recorded since
 * (client_error_rejected, which does not go through client_fail) is not. */
uint64_t schakel_undecodable_seq(const schakel_client_t *client)
{
    return client != NULL && client->last_error.status == SCHAKEL_ERR_PROTOCOL
               ? client->undecodable_seq
               : 0;
}

/* ------------------------------------------------------------------ time */

int64_t client_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
schakel_status_t client_replace_socket(schakel_client_t *client)
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
        client->undecodable_seq = 0;
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
