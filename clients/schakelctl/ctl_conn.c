/*
 * ctl_conn.c — schakelctl's connection to the broker's admin endpoint: a
 * CURVE DEALER with our operator key and the pinned broker key, a socket
 * monitor that tells a refused key from an unreachable broker, and one
 * AdminRequest's answer reassembled from its AdminResponse chunks.
 *
 * Trusts the broker only after the CURVE handshake with the pinned key,
 * and even then decodes every frame with the wire codec and bounds the
 * answer (SCHAKEL_ADMIN_MAX_RESPONSE_BYTES). Errors are reported on stderr
 * in words and returned as exit codes; secrets are wiped on close.
 */
#include "ctl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>
#include <zmq.h>

#include "keys.h"
#include "schakel_limits.h"
#include "wire.h"

#define CTL_MONITOR_ENDPOINT "inproc://schakelctl-monitor"

struct ctl_conn {
    void *context;
    void *socket;
    void *monitor;
    keypair_t *keys;
    char endpoint[256];
    int tcp_connects;       /* TCP connections made */
    int handshake_failures; /* handshakes that failed without a ZAP verdict */
    int refused_status;     /* ZAP status of a refusal (400), 0 if none */
};

static int64_t ctl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ctl_conn_close(ctl_conn_t **connp)
{
    if (connp == NULL || *connp == NULL)
        return;
    ctl_conn_t *conn = *connp;
    if (conn->socket != NULL)
        (void)zmq_socket_monitor(conn->socket, NULL, 0);
    if (conn->monitor != NULL)
        zmq_close(conn->monitor);
    if (conn->socket != NULL)
        zmq_close(conn->socket);
    if (conn->context != NULL)
        zmq_ctx_term(conn->context);
    keys_destroy(&conn->keys);
    sodium_memzero(conn, sizeof *conn);
    free(conn);
    *connp = NULL;
}

void ctl_answer_free(ctl_answer_t *answer)
{
    free(answer->error);
    json_decref(answer->json);
    memset(answer, 0, sizeof *answer);
}

/* ------------------------------------------------------------------ connecting */

static int ctl_set_int(void *socket, int option, int value)
{
    return zmq_setsockopt(socket, option, &value, sizeof value);
}

/* Our key pair and the broker's pinned key; CTL_EXIT_OK or an exit code. */
static int ctl_conn_keys(ctl_conn_t *conn, const ctl_options_t *opts, uint8_t broker_curve[32])
{
    char text[512] = "";
    uint8_t broker_sign[32];
    if ((conn->keys = keys_load_secret(opts->key, text, sizeof text)) == NULL) {
        ctl_say("our key: %s", text);
        return CTL_EXIT_UNREACHABLE;
    }
    if (keys_load_public(opts->broker_key, broker_sign, text, sizeof text) != 0) {
        ctl_say("broker key: %s", text);
        return CTL_EXIT_UNREACHABLE;
    }
    if (keys_sign_pk_to_curve(broker_sign, broker_curve) != 0) {
        ctl_say("broker key %s is not a valid Ed25519 public key", opts->broker_key);
        return CTL_EXIT_UNREACHABLE;
    }
    return CTL_EXIT_OK;
}

static int ctl_conn_socket(ctl_conn_t *conn, const uint8_t broker_curve[32])
{
    int64_t max_frame = SCHAKEL_MAX_FRAME_BYTES + 1024; /* + CURVE framing */
    conn->socket = zmq_socket(conn->context, ZMQ_DEALER);
    if (conn->socket == NULL)
        return -1;
    int rc = zmq_setsockopt(conn->socket, ZMQ_CURVE_SERVERKEY, broker_curve, 32) |
             zmq_setsockopt(conn->socket, ZMQ_CURVE_PUBLICKEY, conn->keys->curve_pk, 32) |
             zmq_setsockopt(conn->socket, ZMQ_CURVE_SECRETKEY, conn->keys->curve_sk, 32) |
             ctl_set_int(conn->socket, ZMQ_LINGER, 0) |
             ctl_set_int(conn->socket, ZMQ_HANDSHAKE_IVL, SCHAKEL_HANDSHAKE_IVL_MS) |
             ctl_set_int(conn->socket, ZMQ_HEARTBEAT_IVL, SCHAKEL_ZMTP_HEARTBEAT_IVL_MS) |
             ctl_set_int(conn->socket, ZMQ_HEARTBEAT_TIMEOUT, SCHAKEL_ZMTP_HEARTBEAT_TIMEOUT_MS) |
             ctl_set_int(conn->socket, ZMQ_HEARTBEAT_TTL, SCHAKEL_ZMTP_HEARTBEAT_TIMEOUT_MS) |
             ctl_set_int(conn->socket, ZMQ_RECONNECT_IVL, 200) |
             zmq_setsockopt(conn->socket, ZMQ_MAXMSGSIZE, &max_frame, sizeof max_frame);
    int events = ZMQ_EVENT_CONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL;
    if (rc != 0 || zmq_socket_monitor(conn->socket, CTL_MONITOR_ENDPOINT, events) != 0)
        return -1;
    conn->monitor = zmq_socket(conn->context, ZMQ_PAIR);
    if (conn->monitor == NULL || ctl_set_int(conn->monitor, ZMQ_LINGER, 0) != 0 ||
        zmq_connect(conn->monitor, CTL_MONITOR_ENDPOINT) != 0)
        return -1;
    return 0;
}

/* One monitor event (two frames: event and value, then the address);
 * returns the event, or 0 if none is waiting. */
static int ctl_conn_event(ctl_conn_t *conn)
{
    zmq_msg_t part;
    uint16_t event = 0;
    uint32_t value = 0;
    zmq_msg_init(&part);
    if (zmq_msg_recv(&part, conn->monitor, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&part);
        return 0;
    }
    if (zmq_msg_size(&part) >= 6) {
        memcpy(&event, zmq_msg_data(&part), 2);
        memcpy(&value, (const uint8_t *)zmq_msg_data(&part) + 2, 4);
    }
    while (zmq_msg_more(&part)) {
        zmq_msg_close(&part);
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, conn->monitor, 0) < 0)
            break;
    }
    zmq_msg_close(&part);
    if (event == ZMQ_EVENT_CONNECTED)
        conn->tcp_connects++;
    else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        conn->refused_status = (int)value;
    else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL ||
             event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
        conn->handshake_failures++;
    return event;
}

static int ctl_conn_refused(const ctl_conn_t *conn)
{
    /* The partner endpoint refuses an operator key just so: the handshake
     * alone cannot tell which of the two it was. */
    ctl_say("the broker at %s refused our key (status %d): either %s is not its admin endpoint "
            "(admin_listen; the partner endpoint refuses operator keys) or our key is not an "
            "operator key registered in the policy",
            conn->endpoint, conn->refused_status, conn->endpoint);
    return CTL_EXIT_UNREACHABLE;
}

static int ctl_conn_handshake(ctl_conn_t *conn, int timeout_ms)
{
    int64_t deadline = ctl_now_ms() + timeout_ms;
    for (;;) {
        int event;
        while ((event = ctl_conn_event(conn)) != 0) {
            if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
                return CTL_EXIT_OK;
            if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
                return ctl_conn_refused(conn);
        }
        int64_t left = deadline - ctl_now_ms();
        if (left <= 0)
            break;
        zmq_pollitem_t item = {conn->monitor, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, (long)left) < 0 && zmq_errno() != EINTR)
            break;
    }
    const char *why = "the broker accepted the connection but never completed the handshake: "
                      "it could not record the admission (storage trouble: see its log), or this "
                      "key made too many handshakes of late (max_handshakes_per_minute), or it "
                      "is overloaded, or no Schakel broker listens there";
    if (conn->tcp_connects == 0)
        why = "no TCP connection: broker down, wrong address, or admin_listen not set";
    else if (conn->handshake_failures > 0)
        why = "the broker closed the connection during the handshake: a wrong broker key "
              "pinned, or it could not record the admission (storage trouble: see its log)";
    ctl_say("could not complete a CURVE handshake with %s within %d ms: %s", conn->endpoint,
            timeout_ms, why);
    return CTL_EXIT_UNREACHABLE;
}

int ctl_conn_open(const ctl_options_t *opts, ctl_conn_t **out)
{
    *out = NULL;
    if (opts->admin == NULL || opts->admin[0] == '\0')
        return ctl_usage_error(NULL, "no admin endpoint: give --admin or set SCHAKEL_ADMIN");
    if (opts->broker_key == NULL || opts->broker_key[0] == '\0')
        return ctl_usage_error(NULL, "no broker key: give --broker-key or set SCHAKEL_BROKER_KEY");
    if (opts->key == NULL || opts->key[0] == '\0')
        return ctl_usage_error(NULL, "no operator key: give --key or set SCHAKEL_KEY");
    if (keys_init() != 0) {
        ctl_say("libsodium failed to initialise");
        return CTL_EXIT_FAILURE;
    }
    ctl_conn_t *conn = calloc(1, sizeof *conn);
    if (conn == NULL) {
        ctl_say("out of memory");
        return CTL_EXIT_FAILURE;
    }
    snprintf(conn->endpoint, sizeof conn->endpoint, "%s", opts->admin);
    uint8_t broker_curve[32];
    int rc = ctl_conn_keys(conn, opts, broker_curve);
    if (rc == CTL_EXIT_OK && ((conn->context = zmq_ctx_new()) == NULL || !zmq_has("curve") ||
                              ctl_conn_socket(conn, broker_curve) != 0)) {
        ctl_say("cannot set up the connection: %s", zmq_strerror(zmq_errno()));
        rc = CTL_EXIT_FAILURE;
    }
    if (rc == CTL_EXIT_OK && zmq_connect(conn->socket, opts->admin) != 0) {
        ctl_say("invalid admin endpoint '%s': %s", opts->admin, zmq_strerror(zmq_errno()));
        rc = CTL_EXIT_USAGE;
    }
    if (rc == CTL_EXIT_OK)
        rc = ctl_conn_handshake(conn, opts->connect_timeout_ms);
    if (rc != CTL_EXIT_OK) {
        ctl_conn_close(&conn);
        return rc;
    }
    *out = conn;
    return CTL_EXIT_OK;
}

/* ------------------------------------------------------------------ one request */

typedef struct ctl_reassembly {
    uint64_t request_id;
    char *json;
    size_t len, cap; /* cap: bytes json has room for, its NUL's included */
    int frames; /* AdminResponse frames taken */
    int done;
} ctl_reassembly_t;

static int ctl_send_request(ctl_conn_t *conn, uint64_t request_id, const char *command,
                            const char *const *args, size_t n_args)
{
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    Schakel__AdminRequest request = SCHAKEL__ADMIN_REQUEST__INIT;
    request.has_request_id = 1;
    request.request_id = request_id;
    request.command = (char *)(uintptr_t)command;
    request.n_args = n_args;
    request.args = (char **)(uintptr_t)args;
    frame.body_case = SCHAKEL__FRAME__BODY_ADMIN_REQUEST;
    frame.admin_request = &request;
    size_t len = 0;
    uint8_t *bytes = wire_encode_frame(&frame, &len);
    int rc = bytes != NULL && zmq_send(conn->socket, bytes, len, ZMQ_DONTWAIT) == (int)len;
    free(bytes);
    if (!rc)
        ctl_say("cannot send the request to %s: %s", conn->endpoint, zmq_strerror(zmq_errno()));
    return rc ? CTL_EXIT_OK : CTL_EXIT_FAILURE;
}

/* One AdminResponse chunk of our request. Returns CTL_EXIT_OK or a code. */
static int ctl_take_chunk(ctl_reassembly_t *r, const Schakel__AdminResponse *response,
                          ctl_answer_t *answer)
{
    if (!response->has_request_id || response->request_id != r->request_id)
        return CTL_EXIT_OK; /* an answer to someone else's question: not ours */
    if (r->frames++ == 0) {
        answer->ok = response->has_ok && response->ok;
        if (response->error != NULL && (answer->error = strdup(response->error)) == NULL)
            return CTL_EXIT_FAILURE;
    }
    size_t n = response->json != NULL ? strlen(response->json) : 0;
    if (n > SCHAKEL_ADMIN_MAX_RESPONSE_BYTES - r->len) {
        ctl_say("the broker's answer is longer than %u bytes", SCHAKEL_ADMIN_MAX_RESPONSE_BYTES);
        return CTL_EXIT_FAILURE;
    }
    if (n > 0 && r->len + n + 1 > r->cap) {
        /* doubled, so that an export of thousands of chunks is copied a
         * few times, not once a chunk; never past the largest answer */
        size_t cap = r->cap > 0 ? r->cap : SCHAKEL_ADMIN_CHUNK_BYTES + 1;
        while (cap < r->len + n + 1)
            cap *= 2;
        if (cap > SCHAKEL_ADMIN_MAX_RESPONSE_BYTES + 1)
            cap = SCHAKEL_ADMIN_MAX_RESPONSE_BYTES + 1;
        char *grown = realloc(r->json, cap);
        if (grown == NULL) {
            ctl_say("out of memory");
            return CTL_EXIT_FAILURE;
        }
        r->json = grown;
        r->cap = cap;
    }
    if (n > 0) {
        memcpy(r->json + r->len, response->json, n);
        r->len += n;
        r->json[r->len] = '\0';
    }
    r->done = !(response->has_more && response->more);
    return CTL_EXIT_OK;
}

static int ctl_take_frame(ctl_conn_t *conn, ctl_reassembly_t *r, ctl_answer_t *answer)
{
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, conn->socket, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&msg);
        return CTL_EXIT_OK;
    }
    wire_error_t err = {0};
    Schakel__Frame *frame = wire_decode_broker_frame(zmq_msg_data(&msg), zmq_msg_size(&msg), &err);
    int more = zmq_msg_more(&msg);
    zmq_msg_close(&msg);
    int rc = CTL_EXIT_OK;
    if (frame == NULL || more) {
        ctl_say("the broker sent a malformed answer: %s",
                frame == NULL ? err.text : "a multipart message");
        rc = CTL_EXIT_FAILURE;
    } else if (frame->body_case == SCHAKEL__FRAME__BODY_REJECTED) {
        Schakel__Reason reason = frame->rejected->reason;
        fprintf(stderr, "refused: %s: %s\n", wire_reason_name(reason),
                frame->rejected->text ? frame->rejected->text : "");
        rc = reason == SCHAKEL__REASON__NOT_PERMITTED ? CTL_EXIT_UNREACHABLE : CTL_EXIT_FAILURE;
    } else if (frame->body_case == SCHAKEL__FRAME__BODY_ADMIN_RESPONSE) {
        rc = ctl_take_chunk(r, frame->admin_response, answer);
    }
    wire_frame_free(&frame);
    return rc;
}

static int ctl_finish_answer(ctl_reassembly_t *r, ctl_answer_t *answer)
{
    if (r->len == 0)
        return CTL_EXIT_OK;
    json_error_t error;
    answer->json = json_loadb(r->json, r->len, JSON_REJECT_DUPLICATES, &error);
    if (answer->json == NULL) {
        ctl_say("the broker's answer is not valid JSON (%s, at byte %d)", error.text,
                error.position);
        return CTL_EXIT_FAILURE;
    }
    return CTL_EXIT_OK;
}

int ctl_conn_request(ctl_conn_t *conn, const char *command, const char *const *args, size_t n_args,
                     int timeout_ms, ctl_answer_t *answer)
{
    memset(answer, 0, sizeof *answer);
    ctl_reassembly_t r = {0};
    while (r.request_id == 0)
        randombytes_buf(&r.request_id, sizeof r.request_id);
    int rc = ctl_send_request(conn, r.request_id, command, args, n_args);
    int64_t deadline = ctl_now_ms() + timeout_ms;
    while (rc == CTL_EXIT_OK && !r.done) {
        int64_t left = deadline - ctl_now_ms();
        if (left <= 0) {
            ctl_say("the broker at %s did not answer '%s' within %d ms", conn->endpoint, command,
                    timeout_ms);
            rc = CTL_EXIT_UNREACHABLE;
            break;
        }
        zmq_pollitem_t items[2] = {{conn->socket, 0, ZMQ_POLLIN, 0},
                                   {conn->monitor, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, (long)left) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            ctl_say("zmq_poll: %s", zmq_strerror(zmq_errno()));
            rc = CTL_EXIT_FAILURE;
            break;
        }
        /* A reconnect after our key was revoked is refused by ZAP. */
        while (ctl_conn_event(conn) != 0)
            ;
        if (conn->refused_status != 0)
            rc = ctl_conn_refused(conn);
        if (rc == CTL_EXIT_OK && (items[0].revents & ZMQ_POLLIN))
            rc = ctl_take_frame(conn, &r, answer);
    }
    if (rc == CTL_EXIT_OK)
        rc = ctl_finish_answer(&r, answer);
    free(r.json);
    if (rc != CTL_EXIT_OK)
        ctl_answer_free(answer);
    return rc;
}
