/*
 * test_hostile.c — a catalogue of bad input, each row against a real
 * schakeld: unknown and revoked keys, malformed and oversized frames, broken
 * publishes and signatures, replays, foreign acks, credit overflow, floods,
 * connection and handshake abuse, hostile policy files.
 *
 * Every row asserts the exact outcome (the Rejected's reason, id, item and
 * seq, or the handshake's monitor event), the broker's log line and its
 * audit entry for it (read from the store, read-only), and that the broker
 * still serves the well-behaved afterwards: a signal accepted before the
 * bad input is delivered, a bystander pair still publishes and receives, a
 * watcher connected before it is not disconnected, and nothing of a
 * refused publish reaches a mailbox.
 *
 * Hostile frames are written byte by byte (pb_*), on a CURVE DEALER of their
 * own (raw_*), so that each is wrong in exactly one way; answers are read
 * with the generated protobuf-c code. Every wait is bounded: replies,
 * monitor events, inotify on the broker log, poll on sockets.
 */
/* asprintf, getline */
#define _GNU_SOURCE

#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>
#include <zmq.h>

#include "keys.h"
#include "refusals.h"
#include "wire.h"
#include "zap.h"
#include "zmtp_raw.h"

/* The principal that misbehaves in most rows: its signals go to politie. */
#define HOSTILE H_WOCO_MAASOEVER

/* ------------------------------------------------------------------ time */

static int64_t hostile_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int hostile_left_ms(int64_t deadline)
{
    int64_t left = deadline - hostile_now_ms();
    return left < 0 ? 0 : (int)left;
}

static int64_t hostile_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ protobuf by hand */

/* A growing byte buffer that protobuf fields are written into, so that a
 * frame can be wrong in exactly the way a row wants. */
typedef struct pb {
    uint8_t *data;
    size_t len, cap;
} pb_t;

static void pb_put(pb_t *b, const void *bytes, size_t n)
{
    if (n == 0)
        return;
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n)
            cap *= 2;
        uint8_t *data = realloc(b->data, cap);
        assert_non_null(data);
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
}

static size_t pb_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static void pb_varint(pb_t *b, uint64_t v)
{
    uint8_t out[10];
    size_t n = 0;
    do {
        out[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v)
            out[n] |= 0x80;
        n++;
    } while (v);
    pb_put(b, out, n);
}

static void pb_key(pb_t *b, uint32_t field, unsigned wire_type)
{
    pb_varint(b, (uint64_t)field << 3 | wire_type);
}

static void pb_bytes(pb_t *b, uint32_t field, const void *bytes, size_t n)
{
    pb_key(b, field, 2);
    pb_varint(b, n);
    pb_put(b, bytes, n);
}

static void pb_text(pb_t *b, uint32_t field, const char *text)
{
    pb_bytes(b, field, text, strlen(text));
}

static void pb_uint(pb_t *b, uint32_t field, uint64_t v)
{
    pb_key(b, field, 0);
    pb_varint(b, v);
}

static void pb_free(pb_t *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* Field numbers come from the generated descriptors, never from memory. */
static uint32_t field_no(const ProtobufCMessageDescriptor *d, const char *name)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, name);
    if (!f)
        fail_msg("the schema has no field %s.%s", d->short_name, name);
    return f->id;
}

#define FRAME_F(name) field_no(&schakel__frame__descriptor, name)
#define PUBLISH_F(name) field_no(&schakel__publish__descriptor, name)
#define SIGNAL_F(name) field_no(&schakel__signal__descriptor, name)
#define HEARTBEAT_F(name) field_no(&schakel__heartbeat__descriptor, name)

/* Field numbers no message of the schema has (32..95 are reserved bodies). */
#define UNKNOWN_FIELD 99u
#define UNKNOWN_FRAME_FIELD 100u

/* ------------------------------------------------------------------ broker log */

/* 1 if one whole line after offset holds every needle (NULL-terminated). */
static int log_has_line(const h_env_t *env, long offset, const char *const *needles)
{
    FILE *f = h_log_open_at(env, offset);
    if (!f)
        return 0;
    int found = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while (!found && (n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] != '\n')
            break; /* the broker is still writing it */
        found = 1;
        for (size_t i = 0; found && needles[i]; i++)
            found = strstr(line, needles[i]) != NULL;
    }
    free(line);
    fclose(f);
    return found;
}

/* Whole lines after offset that hold every needle. */
static size_t log_count_lines(const h_env_t *env, long offset, const char *const *needles)
{
    FILE *f = h_log_open_at(env, offset);
    if (!f)
        return 0;
    size_t count = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        int all = line[n - 1] == '\n';
        for (size_t i = 0; all && needles[i]; i++)
            all = strstr(line, needles[i]) != NULL;
        count += all ? 1 : 0;
    }
    free(line);
    fclose(f);
    return count;
}

/* Wait (bounded, on inotify) for a line after offset holding every needle;
 * fails the test, naming `what` and the needles, if none comes. */
static void log_await(const h_env_t *env, long offset, const char *what, const char *const *needles)
{
    int watch = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (watch < 0 || inotify_add_watch(watch, env->log_path, IN_MODIFY) < 0)
        fail_msg("inotify on %s: %s", env->log_path, strerror(errno));
    int64_t deadline = hostile_now_ms() + H_TIMEOUT_MS;
    int found;
    /* Search after arming the watch: a line written in between is seen
     * either by the search or as an event. */
    while (!(found = log_has_line(env, offset, needles)) && hostile_left_ms(deadline) > 0) {
        struct pollfd p = {.fd = watch, .events = POLLIN};
        if (poll(&p, 1, hostile_left_ms(deadline)) > 0) {
            char events[4096];
            while (read(watch, events, sizeof events) > 0)
                ;
        }
    }
    close(watch);
    if (!found) {
        char all[1024] = "";
        for (size_t i = 0; needles[i]; i++)
            snprintf(all + strlen(all), sizeof all - strlen(all), "%s[%s]", i ? " and " : "",
                     needles[i]);
        h_dump_log(env);
        fail_msg("%s: the broker logged no line with %s", what, all);
    }
}

/* ------------------------------------------------------------------ audit trail */

/* Where the record stood before a row: log size and last audit entry. */
typedef struct mark {
    long log_offset;
    int64_t audit_seq;
} mark_t;

static sqlite3 *audit_open(const h_env_t *env)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(env->store_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        fail_msg("open %s read-only: %s", env->store_path, db ? sqlite3_errmsg(db) : "no memory");
    sqlite3_busy_timeout(db, H_TIMEOUT_MS);
    return db;
}

static int64_t audit_query(const h_env_t *env, const char *sql, const char *const *texts,
                           size_t n_texts, int64_t since)
{
    sqlite3 *db = audit_open(env);
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
        fail_msg("prepare \"%s\": %s", sql, sqlite3_errmsg(db));
    sqlite3_bind_int64(stmt, 1, since);
    for (size_t i = 0; i < n_texts; i++)
        sqlite3_bind_text(stmt, (int)i + 2, texts[i], -1, SQLITE_STATIC);
    if (sqlite3_step(stmt) != SQLITE_ROW)
        fail_msg("\"%s\": %s", sql, sqlite3_errmsg(db));
    int64_t value = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return value;
}

static mark_t mark_take(const h_env_t *env)
{
    mark_t m = {h_log_offset(env), 0};
    m.audit_seq =
        audit_query(env, "SELECT coalesce(max(seq), 0) FROM audit WHERE seq > ?1", NULL, 0, 0);
    return m;
}

/* Audit entries after the mark of one event by one actor. message_id: hex,
 * NULL for none, "*" for any; item: the index, "" for none, "*" for any;
 * reason: the reason name, or NULL for any. */
static int64_t audit_count(const h_env_t *env, const mark_t *m, const char *event,
                           const char *actor, const char *message_id, const char *item,
                           const char *reason)
{
    const char *sql = "SELECT count(*) FROM audit WHERE seq > ?1 AND event = ?2 AND actor IS ?3"
                      " AND (?4 = '*' OR message_id IS ?4)"
                      " AND (?5 = '*' OR coalesce(CAST(item_index AS TEXT), '') = ?5)"
                      " AND (?6 IS NULL OR reason = ?6)";
    const char *texts[] = {event, actor, message_id, item, reason};
    return audit_query(env, sql, texts, 5, m->audit_seq);
}

/* The refusals of `principal` the summaries after the mark counted
 * without an entry of their own (request.refused_summary, detail "...
 * principals=P:N,...": P the first principal named, as when it is the only
 * one refused beyond the limits). */
static int64_t audit_summarized(const h_env_t *env, const mark_t *m, const char *principal)
{
    char key[160];
    snprintf(key, sizeof key, "principals=%s:", principal);
    const char *sql = "SELECT coalesce(sum(CAST(substr(detail, instr(detail, ?2) + length(?2))"
                      " AS INTEGER)), 0) FROM audit WHERE seq > ?1"
                      " AND event = 'request.refused_summary' AND instr(detail, ?2) > 0";
    const char *texts[] = {key};
    return audit_query(env, sql, texts, 1, m->audit_seq);
}

/* One audit entry after the mark of an event whose reason, detail and
 * curve key match (LIKE patterns; NULL: any). */
static void audit_expect(const h_env_t *env, const mark_t *m, const char *what, const char *event,
                         const char *reason_like, const char *detail_like, const char *curve_key)
{
    const char *sql = "SELECT count(*) FROM audit WHERE seq > ?1 AND event = ?2"
                      " AND (?3 IS NULL OR reason LIKE ?3) AND (?4 IS NULL OR detail LIKE ?4)"
                      " AND (?5 IS NULL OR curve_key = ?5)";
    const char *texts[] = {event, reason_like, detail_like, curve_key};
    int64_t n = audit_query(env, sql, texts, 4, m->audit_seq);
    if (n != 1)
        fail_msg("%s: %lld audit entries %s (reason like \"%s\"), expected 1", what, (long long)n,
                 event, reason_like ? reason_like : "*");
}

/* The needle of a refusal as record.c logs it. */
static void refusal_needle(char *out, size_t len, const char *principal, const uint8_t *id,
                           Schakel__Reason reason, int item_index)
{
    char id_hex[33] = "-";
    if (id)
        sodium_bin2hex(id_hex, sizeof id_hex, id, 16);
    snprintf(out, len,
             "event=request.refused principal=%s message_id=%s reason=%s item=%d text=", principal,
             id_hex, wire_reason_name(reason), item_index);
}

/* A refusal is recorded twice: one log line, one audit entry (committed
 * before the Rejected is sent). */
static void expect_refusal_recorded(const h_env_t *env, const mark_t *m, const char *what,
                                    const char *principal, const uint8_t *id,
                                    Schakel__Reason reason, int item_index)
{
    char needle[320];
    refusal_needle(needle, sizeof needle, principal, id, reason, item_index);
    const char *needles[] = {needle, NULL};
    log_await(env, m->log_offset, what, needles);
    char id_hex[33], item[16] = "";
    if (id)
        sodium_bin2hex(id_hex, sizeof id_hex, id, 16);
    if (item_index >= 0)
        snprintf(item, sizeof item, "%d", item_index);
    int64_t n = audit_count(env, m, id ? "publish.refused" : "request.refused", principal,
                            id ? id_hex : NULL, item, wire_reason_name(reason));
    if (n != 1)
        fail_msg("%s: %lld audit entries for the refusal %s, expected 1", what, (long long)n,
                 wire_reason_name(reason));
}

static void expect_accept_recorded(const h_env_t *env, const mark_t *m, const char *what,
                                   const char *principal, const uint8_t id[16])
{
    char id_hex[33], needle[256];
    sodium_bin2hex(id_hex, sizeof id_hex, id, 16);
    snprintf(needle, sizeof needle, "event=publish.accepted principal=%s message_id=%s", principal,
             id_hex);
    const char *needles[] = {needle, NULL};
    log_await(env, m->log_offset, what, needles);
    if (audit_count(env, m, "publish.accepted", principal, id_hex, "*", NULL) != 1)
        fail_msg("%s: no audit entry for the accepted publish", what);
}

/* A handshake refused by the ZAP handler: log line and audit entry, both
 * naming the CURVE key. */
static void expect_auth_refusal_recorded(const h_env_t *env, const mark_t *m, const char *what,
                                         const char *why, const char *z85)
{
    char reason[160];
    snprintf(reason, sizeof reason, "reason=\"%s\"", why);
    const char *needles[] = {"event=auth.refused", reason, z85, NULL};
    log_await(env, m->log_offset, what, needles);
    audit_expect(env, m, what, "auth.refused", why, NULL, z85);
}

/* The policy hash the broker started with, from its broker.ready line. */
static void log_start_policy_hash(const h_env_t *env, char out[65])
{
    const char *needles[] = {"event=broker.ready", NULL};
    log_await(env, 0, "start", needles);
    FILE *f = fopen(env->log_path, "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    out[0] = '\0';
    while (!out[0] && getline(&line, &cap, f) > 0) {
        const char *at = strstr(line, "event=broker.ready");
        const char *hash = at ? strstr(at, " policy=") : NULL;
        if (hash && strspn(hash + 8, "0123456789abcdef") == 64)
            snprintf(out, 65, "%.64s", hash + 8);
    }
    free(line);
    fclose(f);
    if (!out[0])
        fail_msg("the broker.ready line names no 64-hex-digit policy hash");
}

/* ------------------------------------------------------------------ raw CURVE client */

#define RAW_MONITOR_EVENTS                                                                         \
    (ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |                        \
     ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |                       \
     ZMQ_EVENT_DISCONNECTED)

/* A DEALER with CURVE keys from a principal's key file, sending whatever
 * bytes a row wants, with a socket monitor that reports the handshake
 * outcome and every disconnect. One ZMQ context each: a failing row can
 * leave it behind without disturbing the others. */
typedef struct raw {
    void *ctx;
    void *socket;
    void *monitor;
    keypair_t *key;
    char label[SCHAKEL_MAX_PRINCIPAL_LEN + 1]; /* the principal it authenticates as */
    uint64_t fences;
    int disconnects; /* DISCONNECTED events seen */
} raw_t;

static raw_t *raw_open_as(const h_env_t *env, const char *key_file, const char *server_pub,
                          const char *label, const void *routing_id, size_t routing_len);

static raw_t *raw_open(const h_env_t *env, const char *key_file, const char *server_pub,
                       const char *label)
{
    return raw_open_as(env, key_file, server_pub, label, NULL, 0);
}

static raw_t *raw_open_with(const h_env_t *env, const char *key_file, const char *server_pub,
                            const char *label, const void *routing_id, size_t routing_len,
                            int rcvhwm, int rcvbuf);

/* raw_open, with a routing id of the client's choosing when not NULL (a
 * client the protocol forbids). */
static raw_t *raw_open_as(const h_env_t *env, const char *key_file, const char *server_pub,
                          const char *label, const void *routing_id, size_t routing_len)
{
    return raw_open_with(env, key_file, server_pub, label, routing_id, routing_len, 20000, 0);
}

/* raw_open_as with a receive queue of rcvhwm frames and, unless 0, a
 * kernel receive buffer of rcvbuf bytes: set before it connects, as
 * libzmq takes them for a connection when it is made. */
static raw_t *raw_open_with(const h_env_t *env, const char *key_file, const char *server_pub,
                            const char *label, const void *routing_id, size_t routing_len,
                            int rcvhwm, int rcvbuf)
{
    raw_t *r = calloc(1, sizeof *r);
    assert_non_null(r);
    snprintf(r->label, sizeof r->label, "%s", label);
    char err[256];
    uint8_t server_sign[32], server_curve[32];
    if ((r->key = keys_load_secret(key_file, err, sizeof err)) == NULL)
        fail_msg("%s: %s", label, err);
    if (keys_load_public(server_pub, server_sign, err, sizeof err) != 0)
        fail_msg("%s: %s", label, err);
    if (keys_sign_pk_to_curve(server_sign, server_curve) != 0)
        fail_msg("%s: %s does not convert to an X25519 key", label, server_pub);
    int linger = 0, hwm = 20000, reconnect_ms = 100;
    r->ctx = zmq_ctx_new();
    r->socket = r->ctx ? zmq_socket(r->ctx, ZMQ_DEALER) : NULL;
    if (!r->socket || zmq_setsockopt(r->socket, ZMQ_CURVE_SERVERKEY, server_curve, 32) != 0 ||
        zmq_setsockopt(r->socket, ZMQ_CURVE_PUBLICKEY, r->key->curve_pk, 32) != 0 ||
        zmq_setsockopt(r->socket, ZMQ_CURVE_SECRETKEY, r->key->curve_sk, 32) != 0 ||
        zmq_setsockopt(r->socket, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(r->socket, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(r->socket, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm) != 0 ||
        (rcvbuf > 0 && zmq_setsockopt(r->socket, ZMQ_RCVBUF, &rcvbuf, sizeof rcvbuf) != 0) ||
        zmq_setsockopt(r->socket, ZMQ_RECONNECT_IVL, &reconnect_ms, sizeof reconnect_ms) != 0 ||
        (routing_id != NULL &&
         zmq_setsockopt(r->socket, ZMQ_ROUTING_ID, routing_id, routing_len) != 0))
        fail_msg("%s: DEALER set-up: %s", label, zmq_strerror(zmq_errno()));
    /* The monitor's reader connects before the DEALER does: libzmq drops
     * events that nobody is connected to receive. */
    const char *monitor_ep = "inproc://hostile-monitor";
    if (zmq_socket_monitor(r->socket, monitor_ep, RAW_MONITOR_EVENTS) != 0 ||
        (r->monitor = zmq_socket(r->ctx, ZMQ_PAIR)) == NULL ||
        zmq_setsockopt(r->monitor, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_connect(r->monitor, monitor_ep) != 0 || zmq_connect(r->socket, env->endpoint) != 0)
        fail_msg("%s: monitor or connect: %s", label, zmq_strerror(zmq_errno()));
    return r;
}

static void raw_close(raw_t **rp)
{
    raw_t *r = *rp;
    if (!r)
        return;
    if (r->monitor)
        zmq_close(r->monitor);
    if (r->socket)
        zmq_close(r->socket);
    if (r->ctx)
        zmq_ctx_term(r->ctx);
    keys_destroy(&r->key);
    free(r);
    *rp = NULL;
}

/* The next monitor event within timeout_ms (0: only one already there):
 * its number, 0 if none; its value in *value. */
static int raw_event(raw_t *r, int timeout_ms, uint32_t *value)
{
    zmq_pollitem_t item = {.socket = r->monitor, .events = ZMQ_POLLIN};
    int64_t deadline = hostile_now_ms() + timeout_ms;
    for (;;) {
        int n = zmq_poll(&item, 1, hostile_left_ms(deadline));
        if (n < 0 && zmq_errno() == EINTR)
            continue;
        if (n <= 0)
            return 0;
        break;
    }
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, r->monitor, 0) < 0 || zmq_msg_size(&msg) < 6)
        fail_msg("%s: unreadable monitor event", r->label);
    uint16_t event;
    uint32_t v;
    memcpy(&event, zmq_msg_data(&msg), 2);
    memcpy(&v, (const uint8_t *)zmq_msg_data(&msg) + 2, 4);
    int more = zmq_msg_more(&msg);
    zmq_msg_close(&msg);
    if (more) { /* the endpoint */
        zmq_msg_init(&msg);
        (void)zmq_msg_recv(&msg, r->monitor, 0);
        zmq_msg_close(&msg);
    }
    if (event == ZMQ_EVENT_DISCONNECTED)
        r->disconnects++;
    if (value)
        *value = v;
    return event;
}

/* The first handshake outcome within timeout_ms (0 if none). */
static int raw_await_handshake(raw_t *r, int timeout_ms, uint32_t *value)
{
    int64_t deadline = hostile_now_ms() + timeout_ms;
    while (hostile_left_ms(deadline) > 0) {
        int event = raw_event(r, hostile_left_ms(deadline), value);
        if (event != 0 && event != ZMQ_EVENT_DISCONNECTED)
            return event;
    }
    return 0;
}

static raw_t *raw_connect(const h_env_t *env, const char *principal)
{
    raw_t *r = raw_open(env, h_key_file(env, principal), env->broker_pub, principal);
    uint32_t value = 0;
    int event = raw_await_handshake(r, H_TIMEOUT_MS, &value);
    if (event != ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
        fail_msg("%s: raw connect ended in monitor event 0x%x (value %u)", principal, event, value);
    return r;
}

/* No disconnect since the socket connected (events already queued). */
static void raw_assert_connected(raw_t *r, const char *what)
{
    while (raw_event(r, 0, NULL) != 0)
        ;
    if (r->disconnects != 0)
        fail_msg("%s: %s was disconnected", what, r->label);
}

static void raw_send(raw_t *r, const pb_t *parts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int flags = i + 1 < n ? ZMQ_SNDMORE : 0;
        if (zmq_send(r->socket, parts[i].data, parts[i].len, flags) != (int)parts[i].len)
            fail_msg("%s: send: %s", r->label, zmq_strerror(zmq_errno()));
    }
}

/* The next frame within timeout_ms, decoded; NULL if none came. */
static Schakel__Frame *raw_recv(raw_t *r, int timeout_ms)
{
    zmq_pollitem_t item = {.socket = r->socket, .events = ZMQ_POLLIN};
    int64_t deadline = hostile_now_ms() + timeout_ms;
    for (;;) {
        int n = zmq_poll(&item, 1, hostile_left_ms(deadline));
        if (n < 0 && zmq_errno() == EINTR)
            continue;
        if (n <= 0)
            return NULL;
        break;
    }
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, r->socket, 0) < 0)
        fail_msg("%s: recv: %s", r->label, zmq_strerror(zmq_errno()));
    if (zmq_msg_more(&msg))
        fail_msg("%s: the broker sent a multipart message", r->label);
    Schakel__Frame *f = schakel__frame__unpack(NULL, zmq_msg_size(&msg), zmq_msg_data(&msg));
    zmq_msg_close(&msg);
    if (!f)
        fail_msg("%s: the broker sent a frame that does not decode", r->label);
    if (!f->has_version || f->version != SCHAKEL_PROTOCOL_VERSION)
        fail_msg("%s: the broker sent a frame without version 1", r->label);
    return f;
}

static void frame_free(Schakel__Frame **f)
{
    if (*f)
        schakel__frame__free_unpacked(*f, NULL);
    *f = NULL;
}

static void frame_describe(const Schakel__Frame *f, char *out, size_t len)
{
    switch (f->body_case) {
    case SCHAKEL__FRAME__BODY_REJECTED:
        snprintf(out, len, "Rejected{%s, \"%s\"}",
                 f->rejected->has_reason ? wire_reason_name(f->rejected->reason) : "no reason",
                 f->rejected->text ? f->rejected->text : "");
        break;
    case SCHAKEL__FRAME__BODY_ACCEPTED:
        snprintf(out, len, "Accepted");
        break;
    case SCHAKEL__FRAME__BODY_DELIVER:
        snprintf(out, len, "Deliver{seq %llu}", (unsigned long long)f->deliver->seq);
        break;
    case SCHAKEL__FRAME__BODY_HEARTBEAT:
        snprintf(out, len, "Heartbeat");
        break;
    default:
        snprintf(out, len, "a frame with body %d", (int)f->body_case);
        break;
    }
}

/* The next frame, which must have the given body; fails the test if no
 * frame comes in time or another one comes first. */
static Schakel__Frame *raw_next(raw_t *r, const char *what, Schakel__Frame__BodyCase body)
{
    /* a turn of full batches takes seconds under valgrind */
    int wait_ms = H_TIMEOUT_MS;
    Schakel__Frame *f = raw_recv(r, wait_ms);
    if (!f)
        fail_msg("%s: %s got no answer within %d ms", what, r->label, wait_ms);
    if (f->body_case != body) {
        char got[400];
        frame_describe(f, got, sizeof got);
        frame_free(&f);
        fail_msg("%s: %s got %s, expected body %d", what, r->label, got, (int)body);
    }
    return f;
}

/* What the broker's own text of a refusal for `reason` always says (the
 * codec's texts are checked word for word in test_wire); NULL: varies. */
static const char *broker_text(Schakel__Reason reason)
{
    switch (reason) {
    case SCHAKEL__REASON__SENDER_MISMATCH:
        return "but this connection is authenticated as ";
    case SCHAKEL__REASON__BAD_SIGNATURE:
        return "signature";
    case SCHAKEL__REASON__UNKNOWN_DELIVERY:
        return "is not a pending delivery in your mailbox";
    case SCHAKEL__REASON__RATE_LIMITED:
        return "publishes per second from this principal";
    case SCHAKEL__REASON__TOO_MANY_CONNECTIONS:
        return "connections";
    case SCHAKEL__REASON__TOO_MANY_FRAMES:
        return "exactly one frame per message";
    default:
        return NULL;
    }
}

/* The next frame must be exactly this Rejected: reason, the publish's id
 * (id NULL: no id), item index, and seq (0: no seq); a text of 1..255
 * bytes that says what broker_text expects for the reason. */
static void raw_expect_rejected(raw_t *r, const char *what, Schakel__Reason reason,
                                const uint8_t *id, int item_index, uint64_t seq)
{
    Schakel__Frame *f = raw_next(r, what, SCHAKEL__FRAME__BODY_REJECTED);
    const Schakel__Rejected *rj = f->rejected;
    char got[400];
    frame_describe(f, got, sizeof got);
    if (!rj->has_reason || rj->reason != reason)
        fail_msg("%s: got %s, expected reason %s", what, got, wire_reason_name(reason));
    if (!rj->text || !rj->text[0] || strlen(rj->text) >= SCHAKEL_MAX_REJECT_TEXT)
        fail_msg("%s: %s has no text of 1..255 bytes", what, got);
    const char *says = broker_text(reason);
    if (says != NULL && strstr(rj->text, says) == NULL)
        fail_msg("%s: %s does not say \"%s\"", what, got, says);
    if (!rj->has_item_index || rj->item_index != item_index)
        fail_msg("%s: %s names item %d, expected %d", what, got,
                 rj->has_item_index ? rj->item_index : -99, item_index);
    if (id && (!rj->has_message_id || rj->message_id.len != 16 ||
               memcmp(rj->message_id.data, id, 16) != 0))
        fail_msg("%s: %s does not name the publish's message id", what, got);
    if (!id && rj->has_message_id)
        fail_msg("%s: %s names a message id; this refusal must not", what, got);
    if (seq && (!rj->has_seq || rj->seq != seq))
        fail_msg("%s: %s does not name seq %llu", what, got, (unsigned long long)seq);
    if (!seq && rj->has_seq)
        fail_msg("%s: %s names a seq; this refusal must not", what, got);
    frame_free(&f);
}

/* The next frame must be the Accepted of this publish; returns the first
 * item's seq. */
static uint64_t raw_expect_accepted(raw_t *r, const char *what, const uint8_t id[16],
                                    size_t n_items, int duplicate)
{
    Schakel__Frame *f = raw_next(r, what, SCHAKEL__FRAME__BODY_ACCEPTED);
    const Schakel__Accepted *a = f->accepted;
    if (!a->has_message_id || a->message_id.len != 16 || memcmp(a->message_id.data, id, 16) != 0)
        fail_msg("%s: Accepted names another message id", what);
    if (a->n_items != n_items)
        fail_msg("%s: Accepted lists %zu items, expected %zu", what, a->n_items, n_items);
    for (size_t i = 0; i < n_items; i++)
        if (!a->items[i]->has_seq || a->items[i]->seq == 0 || !a->items[i]->has_recipients)
            fail_msg("%s: Accepted item %zu lacks seq or recipients", what, i);
    if (duplicate != (a->has_duplicate && a->duplicate))
        fail_msg("%s: Accepted %s duplicate, expected %s", what,
                 a->has_duplicate && a->duplicate ? "is a" : "is not a",
                 duplicate ? "a duplicate" : "a first answer");
    if (!duplicate && a->has_duplicate)
        fail_msg("%s: a first Accepted must not carry the duplicate field", what);
    uint64_t seq = a->items[0]->seq;
    frame_free(&f);
    return seq;
}

static void frame_heartbeat(pb_t *frame)
{
    pb_t body = {0};
    pb_uint(&body, HEARTBEAT_F("time"), (uint64_t)hostile_wall_ms());
    pb_uint(frame, FRAME_F("version"), 1);
    pb_bytes(frame, FRAME_F("heartbeat"), body.data, body.len);
    pb_free(&body);
}

static void frame_ack(pb_t *frame, const uint64_t *seqs, size_t n)
{
    pb_t body = {0};
    for (size_t i = 0; i < n; i++)
        pb_uint(&body, field_no(&schakel__ack__descriptor, "seqs"), seqs[i]);
    pb_uint(frame, FRAME_F("version"), 1);
    pb_bytes(frame, FRAME_F("ack"), body.data, body.len);
    pb_free(&body);
}

static void frame_flow(pb_t *frame, uint32_t window)
{
    pb_t body = {0};
    pb_uint(&body, field_no(&schakel__flow__descriptor, "window"), window);
    pb_uint(frame, FRAME_F("version"), 1);
    pb_bytes(frame, FRAME_F("flow"), body.data, body.len);
    pb_free(&body);
}

static void raw_send_frame(raw_t *r, pb_t *frame)
{
    raw_send(r, frame, 1);
    pb_free(frame);
}

/* Heartbeat round trip: the answer must be the next frame and name this
 * connection's principal. Returns the backlog it reports. */
static uint64_t raw_heartbeat(raw_t *r, const char *what)
{
    pb_t frame = {0};
    frame_heartbeat(&frame);
    raw_send_frame(r, &frame);
    Schakel__Frame *f = raw_next(r, what, SCHAKEL__FRAME__BODY_HEARTBEAT);
    const Schakel__Heartbeat *hb = f->heartbeat;
    if (!hb->principal || strcmp(hb->principal, r->label) != 0 || !hb->has_backlog)
        fail_msg("%s: the heartbeat answer names \"%s\" (expected %s) or lacks a backlog", what,
                 hb->principal ? hb->principal : "", r->label);
    uint64_t backlog = hb->backlog;
    frame_free(&f);
    return backlog;
}

/* A fence, then a heartbeat. The fence is an Ack of a seq nobody has: its
 * Rejected echoes the seq, so it proves that every answer to what was sent
 * before has been read and that no extra answer came. */
static uint64_t raw_settle(raw_t *r, const char *what)
{
    uint64_t seq = (UINT64_C(1) << 62) + ++r->fences;
    pb_t frame = {0};
    frame_ack(&frame, &seq, 1);
    raw_send_frame(r, &frame);
    raw_expect_rejected(r, what, SCHAKEL__REASON__UNKNOWN_DELIVERY, NULL, -1, seq);
    return raw_heartbeat(r, what);
}

/* A fire-safety signal for woco-maasoever (HOSTILE), which the default
 * rules let brandweer send. */
static schakel_signal_t fire_to_maasoever(void)
{
    static const char *const to_maasoever[] = {"woco-maasoever"};
    return (schakel_signal_t){.kind = "brandonveilige-situatie",
                              .theme = "brandveiligheid",
                              .area = "GM0935",
                              .recipients = to_maasoever,
                              .n_recipients = 1};
}

/* ------------------------------------------------------------------ bystanders */

/* The well-behaved: a publisher and a receiver (brandweer → woco-jekerdal
 * under rule brandweer-brandveiligheid) on the client library, and a
 * watcher (om/parket) on a raw socket whose monitor sees any disconnect.
 * All are connected before the bad input. */
typedef struct bystanders {
    h_env_t *env;
    schakel_client_t *publisher;
    schakel_client_t *receiver;
    raw_t *watcher;
    uint8_t pending_id[16]; /* accepted before the bad input, not received yet */
    int pending;
    unsigned round;
    char rule_hash[65]; /* the rule's version: the policy must not change under it */
} bystanders_t;

static void bystanders_open(h_env_t *env, bystanders_t *by)
{
    memset(by, 0, sizeof *by);
    by->env = env;
    by->publisher = h_connect(env, H_BRANDWEER);
    by->receiver = h_connect(env, H_WOCO_JEKERDAL);
    assert_int_equal(schakel_subscribe(by->receiver, 0), SCHAKEL_OK);
    assert_int_equal(h_backlog(by->receiver), 0);
    by->watcher = raw_connect(env, H_OM);
    (void)raw_settle(by->watcher, "watcher at start");
}

static void bystanders_close(bystanders_t *by)
{
    schakel_close(&by->publisher);
    schakel_close(&by->receiver);
    raw_close(&by->watcher);
}

static void bystanders_publish(bystanders_t *by, uint8_t id[16], const char *what)
{
    static const char *const to[] = {"woco-jekerdal"};
    char ref[32];
    snprintf(ref, sizeof ref, "ronde-%u", ++by->round);
    schakel_signal_t s = {
        .kind = "brandonveilige-situatie",
        .theme = "brandveiligheid",
        .area = "BU09350101",
        .severity = SCHAKEL_SEVERITY_MEDIUM,
        .summary = "Vluchtweg geblokkeerd door opgeslagen goederen",
        .source_ref = ref,
        .recipients = to,
        .n_recipients = 1,
    };
    uint32_t recipients = 0;
    (void)h_publish_ok(by->publisher, &s, NULL, id, &recipients, NULL);
    if (recipients != 1)
        fail_msg("%s: the bystanders' signal went to %u mailboxes, expected 1", what, recipients);
}

static void bystanders_receive(bystanders_t *by, const uint8_t id[16], const char *what)
{
    schakel_delivery_t *d = h_receive(by->receiver);
    if (memcmp(d->message_id, id, 16) != 0)
        fail_msg("%s: the bystander received seq %llu, not the signal accepted for it", what,
                 (unsigned long long)d->seq);
    if (!by->rule_hash[0])
        snprintf(by->rule_hash, sizeof by->rule_hash, "%s", d->rule_hash);
    else if (strcmp(by->rule_hash, d->rule_hash) != 0)
        fail_msg("%s: the bystanders' rule has another version now (%s, was %s)", what,
                 d->rule_hash, by->rule_hash);
    assert_int_equal(schakel_ack(by->receiver, d->seq), SCHAKEL_OK);
    schakel_delivery_free(&d);
}

/* Before the bad input: a signal is accepted for the bystander. */
static void bystanders_before(bystanders_t *by, const char *what)
{
    bystanders_publish(by, by->pending_id, what);
    by->pending = 1;
}

/* After it: that signal arrives, a new one goes through, the mailbox is
 * empty, and the watcher is still connected and answered. */
static void bystanders_after(bystanders_t *by, const char *what)
{
    if (by->pending) {
        bystanders_receive(by, by->pending_id, what);
        by->pending = 0;
    }
    uint8_t id[16];
    bystanders_publish(by, id, what);
    bystanders_receive(by, id, what);
    if (h_backlog(by->receiver) != 0)
        fail_msg("%s: the bystander's mailbox is not empty after it acked everything", what);
    raw_assert_connected(by->watcher, what);
    (void)raw_settle(by->watcher, what);
}

/* A politie client that receives: whatever the hostile principal gets
 * accepted lands here, and a refused publish must leave it empty. */
static schakel_client_t *forward_watch_open(h_env_t *env)
{
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    assert_int_equal(schakel_subscribe(politie, 0), SCHAKEL_OK);
    assert_int_equal(h_backlog(politie), 0);
    return politie;
}

static void forward_watch_expect(schakel_client_t *politie, const uint8_t id[16], const char *what)
{
    schakel_delivery_t *d = h_receive(politie);
    if (memcmp(d->message_id, id, 16) != 0)
        fail_msg("%s: politie received another message than the accepted one", what);
    assert_int_equal(schakel_ack(politie, d->seq), SCHAKEL_OK);
    schakel_delivery_free(&d);
}

static void forward_watch_empty(schakel_client_t *politie, const char *what)
{
    uint64_t backlog = h_backlog(politie);
    if (backlog != 0)
        fail_msg("%s: %llu deliveries reached politie; a refused publish must forward nothing",
                 what, (unsigned long long)backlog);
}

/* ------------------------------------------------------------------ signals and publishes */

/* One change to the hostile principal's base signal. */
enum edit_kind {
    EDIT_END = 0,
    EDIT_TEXT,   /* a string field: text */
    EDIT_BYTES,  /* a length-delimited field: len bytes of text (NULs allowed) */
    EDIT_FILL,   /* a string field of len letters 'a' */
    EDIT_UINT,   /* a varint field: value */
    EDIT_TIME,   /* a varint field: now + value */
    EDIT_DROP,   /* the field is left out */
    EDIT_TOKENS, /* len repeats of distinct id tokens ("partner00", ...) */
};

typedef struct edit {
    enum edit_kind kind;
    const char *field; /* Signal field name; NULL: `number`, a field the schema lacks */
    uint32_t number;
    const char *text;
    size_t len;
    int64_t value;
} edit_t;

#define E_TEXT(f, s)                                                                               \
    {                                                                                              \
        EDIT_TEXT, f, 0, s, 0, 0                                                                   \
    }
#define E_BYTES(f, s)                                                                              \
    {                                                                                              \
        EDIT_BYTES, f, 0, s, sizeof(s) - 1, 0                                                      \
    }
#define E_FILL(f, n)                                                                               \
    {                                                                                              \
        EDIT_FILL, f, 0, NULL, n, 0                                                                \
    }
#define E_UINT(f, v)                                                                               \
    {                                                                                              \
        EDIT_UINT, f, 0, NULL, 0, v                                                                \
    }
#define E_TIME(f, d)                                                                               \
    {                                                                                              \
        EDIT_TIME, f, 0, NULL, 0, d                                                                \
    }
#define E_DROP(f)                                                                                  \
    {                                                                                              \
        EDIT_DROP, f, 0, NULL, 0, 0                                                                \
    }
#define E_TOKENS(f, n)                                                                             \
    {                                                                                              \
        EDIT_TOKENS, f, 0, NULL, n, 0                                                              \
    }
#define E_UNKNOWN_UINT(num, v)                                                                     \
    {                                                                                              \
        EDIT_UINT, NULL, num, NULL, 0, v                                                           \
    }
#define E_UNKNOWN_TEXT(num, s)                                                                     \
    {                                                                                              \
        EDIT_TEXT, NULL, num, s, 0, 0                                                              \
    }

#define MAX_EDITS 4

/* A valid ondermijning signal of the hostile principal, for politie only. */
static const edit_t signal_base[] = {
    E_TEXT("sender", HOSTILE),
    E_TEXT("kind", "hennepkwekerij"),
    E_TEXT("theme", "ondermijning"),
    E_TEXT("area", "GM0935"),
    E_UINT("severity", 3),
    E_TIME("observed_at", -3600),
    E_TEXT("summary", "Verdachte stroomafname in een leegstaande woning"),
    E_TEXT("recipients", "politie"),
    {EDIT_END, NULL, 0, NULL, 0, 0},
};

static uint32_t edit_number(const edit_t *e)
{
    return e->field ? SIGNAL_F(e->field) : e->number;
}

static void edit_emit(pb_t *b, const edit_t *e, int64_t now)
{
    uint32_t n = edit_number(e);
    switch (e->kind) {
    case EDIT_TEXT:
        pb_text(b, n, e->text);
        break;
    case EDIT_BYTES:
        pb_bytes(b, n, e->text, e->len);
        break;
    case EDIT_FILL: {
        char *fill = malloc(e->len);
        assert_non_null(fill);
        memset(fill, 'a', e->len);
        pb_bytes(b, n, fill, e->len);
        free(fill);
        break;
    }
    case EDIT_UINT:
        pb_uint(b, n, (uint64_t)e->value);
        break;
    case EDIT_TIME:
        pb_uint(b, n, (uint64_t)(now + e->value));
        break;
    case EDIT_TOKENS:
        for (size_t i = 0; i < e->len; i++) {
            char token[32];
            snprintf(token, sizeof token, "partner%02zu", i);
            pb_text(b, n, token);
        }
        break;
    case EDIT_DROP:
    case EDIT_END:
        break;
    }
}

static int edits_touch(const edit_t *edits, uint32_t number)
{
    for (size_t i = 0; edits && i < MAX_EDITS && edits[i].kind != EDIT_END; i++)
        if (edit_number(&edits[i]) == number)
            return 1;
    return 0;
}

/* The serialized base signal with the edits applied: an edited field is
 * replaced where the base has it (by every edit of that field, in order),
 * other edits are appended. */
static void signal_item(pb_t *out, const edit_t *edits, int64_t now)
{
    uint32_t done[16];
    size_t n_done = 0;
    for (const edit_t *b = signal_base; b->kind != EDIT_END; b++) {
        uint32_t number = edit_number(b);
        if (!edits_touch(edits, number)) {
            edit_emit(out, b, now);
            continue;
        }
        int seen = 0;
        for (size_t i = 0; i < n_done; i++)
            seen |= done[i] == number;
        if (seen)
            continue;
        done[n_done++] = number;
        for (size_t i = 0; i < MAX_EDITS && edits[i].kind != EDIT_END; i++)
            if (edit_number(&edits[i]) == number)
                edit_emit(out, &edits[i], now);
    }
    for (size_t i = 0; edits && i < MAX_EDITS && edits[i].kind != EDIT_END; i++) {
        int in_base = 0;
        for (const edit_t *b = signal_base; b->kind != EDIT_END; b++)
            in_base |= edit_number(b) == edit_number(&edits[i]);
        if (!in_base)
            edit_emit(out, &edits[i], now);
    }
}

/* The 64 bytes a publish signature covers (wire_sign.c builds them the way
 * docs/PROTOCOL.md section 6 says), signed with key. */
static void sign_items(const keypair_t *key, const uint8_t id[16], const pb_t *items, size_t n,
                       uint8_t sig[64])
{
    ProtobufCBinaryData *bin = calloc(n, sizeof *bin);
    assert_non_null(bin);
    for (size_t i = 0; i < n; i++) {
        bin[i].data = items[i].data;
        bin[i].len = items[i].len;
    }
    uint8_t root[32], signed_bytes[64];
    wire_items_root(bin, n, root);
    wire_signed_bytes(id, root, signed_bytes);
    if (keys_sign(key, signed_bytes, sizeof signed_bytes, sig) != 0)
        fail_msg("keys_sign failed");
    free(bin);
}

/* What a Publish frame carries; NULL/negative leaves a field out. */
typedef struct publish_spec {
    int64_t version; /* < 0: no version field */
    const uint8_t *id;
    size_t id_len;
    const pb_t *items;
    size_t n_items;
    const uint8_t *signature;
    size_t signature_len;
    int unknown_field; /* add a field the Publish schema lacks */
} publish_spec_t;

static void publish_body(pb_t *body, const publish_spec_t *s)
{
    if (s->id)
        pb_bytes(body, PUBLISH_F("message_id"), s->id, s->id_len);
    for (size_t i = 0; i < s->n_items; i++)
        pb_bytes(body, PUBLISH_F("items"), s->items[i].data, s->items[i].len);
    if (s->signature)
        pb_bytes(body, PUBLISH_F("signature"), s->signature, s->signature_len);
    if (s->unknown_field)
        pb_uint(body, UNKNOWN_FIELD, 1);
}

static void frame_publish(pb_t *frame, const publish_spec_t *s)
{
    pb_t body = {0};
    publish_body(&body, s);
    if (s->version >= 0)
        pb_uint(frame, FRAME_F("version"), (uint64_t)s->version);
    pb_bytes(frame, FRAME_F("publish"), body.data, body.len);
    pb_free(&body);
}

/* A correctly signed Publish frame of the items. */
static void publish_signed(const keypair_t *key, const uint8_t id[16], const pb_t *items, size_t n,
                           pb_t *frame)
{
    uint8_t sig[64];
    sign_items(key, id, items, n, sig);
    publish_spec_t s = {.version = 1,
                        .id = id,
                        .id_len = 16,
                        .items = items,
                        .n_items = n,
                        .signature = sig,
                        .signature_len = 64};
    frame_publish(frame, &s);
}

/* Frame{version 1, publish{message_id, filler items, 64 bytes}} of exactly
 * `size` bytes (at least 40,000), each item at most the item limit: the
 * items' contents are never looked at before the signature, and these 64
 * bytes are no signature. */
static void frame_of_size(pb_t *frame, const uint8_t id[16], size_t size)
{
    /* 08 01 | publish key (2 bytes) | length (3 bytes at these sizes) | body;
     * body = message_id (18) + items + signature (66); an item of L bytes
     * in 16,384..32,768 takes L + 4. */
    assert_true(size >= 40000);
    size_t items_total = size - 2 - 2 - 3 - 18 - 66;
    size_t full = 4 + SCHAKEL_MAX_ITEM_BYTES;
    size_t n = (items_total + full - 1) / full;
    size_t base = (items_total - 4 * n) / n, extra = (items_total - 4 * n) % n;
    assert_true(base >= 16384 && base + 1 <= SCHAKEL_MAX_ITEM_BYTES);
    uint8_t *filler = malloc(SCHAKEL_MAX_ITEM_BYTES);
    assert_non_null(filler);
    memset(filler, 0x5a, SCHAKEL_MAX_ITEM_BYTES);
    pb_t body = {0};
    pb_bytes(&body, PUBLISH_F("message_id"), id, 16);
    for (size_t i = 0; i < n; i++)
        pb_bytes(&body, PUBLISH_F("items"), filler, base + (i < extra ? 1 : 0));
    uint8_t sig[64];
    randombytes_buf(sig, sizeof sig);
    pb_bytes(&body, PUBLISH_F("signature"), sig, sizeof sig);
    pb_uint(frame, FRAME_F("version"), 1);
    pb_bytes(frame, FRAME_F("publish"), body.data, body.len);
    if (frame->len != size || pb_varint_len(body.len) != 3)
        fail_msg("frame_of_size: built %zu bytes, wanted %zu", frame->len, size);
    pb_free(&body);
    free(filler);
}

/* ------------------------------------------------------------------ rows */

/* What a row's bad input is built from. */
typedef struct hostile_ctx {
    h_env_t *env;
    raw_t *raw;           /* the hostile principal's own connection */
    keypair_t *other_key; /* politie's key: registered, but not the sender's */
    uint8_t id[16];       /* message id of the row's publish */
    int64_t now;          /* wall clock (s) when the row was built */
} hostile_ctx_t;

#define ROW_MAX_PARTS 3

typedef struct row row_t;
typedef void (*row_build_fn)(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n_parts);

struct row {
    const char *name;
    row_build_fn build;
    Schakel__Reason reason; /* REASON_NONE: the publish must be accepted */
    int names_id;           /* the Rejected names the row's message id */
    int item_index;
    int64_t arg; /* builder's parameter */
    edit_t edits[MAX_EDITS];
};

static void base_item(pb_t *item, int64_t now)
{
    signal_item(item, NULL, now);
}

/* One item, the base signal with the row's edits, correctly signed. */
static void build_signal(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    pb_t item = {0};
    signal_item(&item, row->edits, ctx->now);
    publish_signed(ctx->raw->key, ctx->id, &item, 1, &parts[0]);
    pb_free(&item);
    *n = 1;
}

/* Two items, a valid one and then the edited one, correctly signed. */
static void build_second_item(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    pb_t items[2] = {{0}};
    base_item(&items[0], ctx->now);
    signal_item(&items[1], row->edits, ctx->now);
    publish_signed(ctx->raw->key, ctx->id, items, 2, &parts[0]);
    pb_free(&items[0]);
    pb_free(&items[1]);
    *n = 1;
}

/* A signed publish whose message id is row->arg bytes (-1: none). */
static void build_id_len(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    uint8_t id[32], sig[64];
    randombytes_buf(id, sizeof id);
    pb_t item = {0};
    base_item(&item, ctx->now);
    sign_items(ctx->raw->key, id, &item, 1, sig);
    publish_spec_t s = {.version = 1,
                        .id = row->arg >= 0 ? id : NULL,
                        .id_len = (size_t)row->arg,
                        .items = &item,
                        .n_items = 1,
                        .signature = sig,
                        .signature_len = 64};
    frame_publish(&parts[0], &s);
    pb_free(&item);
    *n = 1;
}

static void build_no_items(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    (void)row;
    uint8_t sig[64];
    randombytes_buf(sig, sizeof sig);
    publish_spec_t s = {
        .version = 1, .id = ctx->id, .id_len = 16, .signature = sig, .signature_len = 64};
    frame_publish(&parts[0], &s);
    *n = 1;
}

/* Two items, item row->arg empty, correctly signed. */
static void build_empty_item(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    pb_t items[2] = {{0}};
    base_item(&items[row->arg == 0 ? 1 : 0], ctx->now);
    publish_signed(ctx->raw->key, ctx->id, items, 2, &parts[0]);
    pb_free(&items[0]);
    pb_free(&items[1]);
    *n = 1;
}

/* One item of row->arg filler bytes under a random signature. */
static void build_item_of_size(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    pb_t item = {0};
    uint8_t *filler = calloc(1, (size_t)row->arg);
    assert_non_null(filler);
    pb_put(&item, filler, (size_t)row->arg);
    free(filler);
    uint8_t sig[64];
    randombytes_buf(sig, sizeof sig);
    publish_spec_t s = {.version = 1,
                        .id = ctx->id,
                        .id_len = 16,
                        .items = &item,
                        .n_items = 1,
                        .signature = sig,
                        .signature_len = 64};
    frame_publish(&parts[0], &s);
    pb_free(&item);
    *n = 1;
}

/* row->arg one-byte items under a random signature. */
static void build_many_items(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    size_t count = (size_t)row->arg;
    pb_t *items = calloc(count, sizeof *items);
    assert_non_null(items);
    for (size_t i = 0; i < count; i++)
        pb_put(&items[i], "x", 1);
    uint8_t sig[64];
    randombytes_buf(sig, sizeof sig);
    publish_spec_t s = {.version = 1,
                        .id = ctx->id,
                        .id_len = 16,
                        .items = items,
                        .n_items = count,
                        .signature = sig,
                        .signature_len = 64};
    frame_publish(&parts[0], &s);
    for (size_t i = 0; i < count; i++)
        pb_free(&items[i]);
    free(items);
    *n = 1;
}

/* One correctly signed item that is not a Signal: row->arg 0 is bytes no
 * protobuf starts with, 1 a serialized Heartbeat (field 1 as a varint,
 * where Signal.sender is a string). */
static void build_foreign_item(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    pb_t item = {0};
    if (row->arg == 0)
        pb_put(&item, "\x07garbage", 8);
    else
        pb_uint(&item, HEARTBEAT_F("time"), (uint64_t)hostile_wall_ms());
    publish_signed(ctx->raw->key, ctx->id, &item, 1, &parts[0]);
    pb_free(&item);
    *n = 1;
}

static void build_publish_unknown_field(hostile_ctx_t *ctx, const row_t *row, pb_t *parts,
                                        size_t *n)
{
    (void)row;
    pb_t item = {0};
    base_item(&item, ctx->now);
    uint8_t sig[64];
    sign_items(ctx->raw->key, ctx->id, &item, 1, sig);
    publish_spec_t s = {.version = 1,
                        .id = ctx->id,
                        .id_len = 16,
                        .items = &item,
                        .n_items = 1,
                        .signature = sig,
                        .signature_len = 64,
                        .unknown_field = 1};
    frame_publish(&parts[0], &s);
    pb_free(&item);
    *n = 1;
}

/* Ways to get the signature wrong (row->arg). */
enum sig_fault {
    SIG_NONE,          /* no signature field */
    SIG_SHORT,         /* 63 bytes of a valid signature */
    SIG_LONG,          /* a valid signature and one byte more */
    SIG_RANDOM,        /* 64 random bytes */
    SIG_ZERO,          /* 64 zero bytes */
    SIG_OTHER_KEY,     /* valid, by politie's registered key */
    SIG_OTHER_ITEM,    /* valid, over another item than the one sent */
    SIG_OTHER_ID,      /* valid, over another message id */
    SIG_REORDERED,     /* valid over [a, b], sent as [b, a] */
    SIG_RAW_ITEM,      /* Ed25519 over the item bytes, not the signed bytes */
    SIG_OTHER_PREFIX,  /* over "schakel-publish2" || id || root */
    SIG_MALLEATED,     /* a valid signature with L added to its s half */
    SIG_UNKNOWN_FIELD, /* random signature over an item with an unknown field */
};

/* s + L (little-endian, 32 bytes): the same point equation, but not the
 * canonical s that RFC 8032 requires. */
static void sig_add_order(uint8_t s[32])
{
    static const uint8_t order[32] = {0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58,
                                      0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
                                      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10};
    unsigned carry = 0;
    for (int i = 0; i < 32; i++) {
        unsigned sum = (unsigned)s[i] + order[i] + carry;
        s[i] = (uint8_t)sum;
        carry = sum >> 8;
    }
}

static void build_bad_signature(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    enum sig_fault fault = (enum sig_fault)row->arg;
    pb_t items[2] = {{0}}, other = {0};
    static const edit_t second[] = {E_TEXT("kind", "drugslab"), {EDIT_END, NULL, 0, NULL, 0, 0}};
    static const edit_t unknown[] = {E_UNKNOWN_UINT(UNKNOWN_FIELD, 1),
                                     {EDIT_END, NULL, 0, NULL, 0, 0}};
    signal_item(&items[0], fault == SIG_UNKNOWN_FIELD ? unknown : NULL, ctx->now);
    signal_item(&items[1], second, ctx->now);
    size_t n_items = fault == SIG_REORDERED ? 2 : 1;
    uint8_t sig[65], other_id[16], signed_bytes[64];
    size_t sig_len = 64;
    sign_items(ctx->raw->key, ctx->id, items, n_items, sig);
    switch (fault) {
    case SIG_SHORT:
        sig_len = 63;
        break;
    case SIG_LONG:
        sig[64] = 0;
        sig_len = 65;
        break;
    case SIG_RANDOM:
        randombytes_buf(sig, 64);
        break;
    case SIG_ZERO:
        memset(sig, 0, 64);
        break;
    case SIG_OTHER_KEY:
        sign_items(ctx->other_key, ctx->id, items, 1, sig);
        break;
    case SIG_OTHER_ITEM:
        signal_item(&other, second, ctx->now);
        sign_items(ctx->raw->key, ctx->id, &other, 1, sig);
        break;
    case SIG_OTHER_ID:
        randombytes_buf(other_id, sizeof other_id);
        sign_items(ctx->raw->key, other_id, items, 1, sig);
        break;
    case SIG_REORDERED: {
        pb_t swap = items[0];
        items[0] = items[1];
        items[1] = swap;
        break;
    }
    case SIG_RAW_ITEM:
        if (keys_sign(ctx->raw->key, items[0].data, items[0].len, sig) != 0)
            fail_msg("keys_sign failed");
        break;
    case SIG_OTHER_PREFIX: {
        ProtobufCBinaryData bin = {items[0].len, items[0].data};
        uint8_t root[32];
        wire_items_root(&bin, 1, root);
        wire_signed_bytes(ctx->id, root, signed_bytes);
        signed_bytes[15] = '2';
        if (keys_sign(ctx->raw->key, signed_bytes, sizeof signed_bytes, sig) != 0)
            fail_msg("keys_sign failed");
        break;
    }
    case SIG_MALLEATED:
        sig_add_order(sig + 32);
        break;
    case SIG_UNKNOWN_FIELD:
        randombytes_buf(sig, 64);
        break;
    case SIG_NONE:
        break;
    }
    publish_spec_t s = {.version = 1,
                        .id = ctx->id,
                        .id_len = 16,
                        .items = items,
                        .n_items = n_items,
                        .signature = fault == SIG_NONE ? NULL : sig,
                        .signature_len = sig_len};
    frame_publish(&parts[0], &s);
    pb_free(&items[0]);
    pb_free(&items[1]);
    pb_free(&other);
    *n = 1;
}

/* Check a row's answer, its log line, the hostile connection, politie's
 * mailbox and the bystanders. */
static void run_row(hostile_ctx_t *ctx, bystanders_t *by, schakel_client_t *politie,
                    const row_t *row)
{
    bystanders_before(by, row->name);
    randombytes_buf(ctx->id, sizeof ctx->id);
    ctx->now = (int64_t)time(NULL);
    pb_t parts[ROW_MAX_PARTS];
    memset(parts, 0, sizeof parts);
    size_t n_parts = 0;
    row->build(ctx, row, parts, &n_parts);
    mark_t mark = mark_take(ctx->env);
    raw_send(ctx->raw, parts, n_parts);
    for (size_t i = 0; i < ROW_MAX_PARTS; i++)
        pb_free(&parts[i]);
    if (row->reason == SCHAKEL__REASON__REASON_NONE) {
        (void)raw_expect_accepted(ctx->raw, row->name, ctx->id, 1, 0);
        expect_accept_recorded(ctx->env, &mark, row->name, HOSTILE, ctx->id);
        forward_watch_expect(politie, ctx->id, row->name);
    } else {
        const uint8_t *id = row->names_id ? ctx->id : NULL;
        raw_expect_rejected(ctx->raw, row->name, row->reason, id, row->item_index, 0);
        expect_refusal_recorded(ctx->env, &mark, row->name, HOSTILE, id, row->reason,
                                row->item_index);
    }
    raw_assert_connected(ctx->raw, row->name);
    (void)raw_settle(ctx->raw, row->name);
    forward_watch_empty(politie, row->name);
    bystanders_after(by, row->name);
}

typedef struct row_env {
    hostile_ctx_t ctx;
    bystanders_t by;
    schakel_client_t *politie;
} row_env_t;

static void row_env_open(h_env_t *env, row_env_t *re)
{
    memset(re, 0, sizeof *re);
    re->ctx.env = env;
    char err[256];
    if ((re->ctx.other_key = keys_load_secret(h_key_file(env, H_POLITIE), err, sizeof err)) == NULL)
        fail_msg("%s", err);
    bystanders_open(env, &re->by);
    re->politie = forward_watch_open(env);
    re->ctx.raw = raw_connect(env, HOSTILE);
    (void)raw_settle(re->ctx.raw, "hostile at start");
}

static void row_env_close(row_env_t *re)
{
    raw_close(&re->ctx.raw);
    keys_destroy(&re->ctx.other_key);
    schakel_close(&re->politie);
    bystanders_close(&re->by);
}

static void run_rows(h_env_t *env, const row_t *rows, size_t n)
{
    row_env_t re;
    row_env_open(env, &re);
    for (size_t i = 0; i < n; i++)
        run_row(&re.ctx, &re.by, re.politie, &rows[i]);
    row_env_close(&re);
}

/* ------------------------------------------------------------------ catalogue: publishes */

#define R_INVALID_MESSAGE SCHAKEL__REASON__INVALID_MESSAGE
#define R_INVALID_FIELD SCHAKEL__REASON__INVALID_FIELD
#define R_ACCEPTED SCHAKEL__REASON__REASON_NONE

/* A signal row: one signed item with the edits; refusals name item 0. */
#define SIGNAL_ROW(label, why, ...)                                                                \
    {                                                                                              \
        .name = label, .build = build_signal, .reason = why, .names_id = 1, .item_index = 0,       \
        .edits = {                                                                                 \
            __VA_ARGS__                                                                            \
        }                                                                                          \
    }

/* An Address submessage, written as raw bytes: 0a = postcode, 10 = house
 * number, 1a = addition. */
#define ADDRESS(bytes) E_BYTES("address", bytes)

static const row_t signal_rows[] = {
    /* the boundaries that must pass */
    SIGNAL_ROW("the base signal", R_ACCEPTED, {EDIT_END, NULL, 0, NULL, 0, 0}),
    SIGNAL_ROW("summary of exactly 2000 bytes", R_ACCEPTED, E_FILL("summary", 2000)),
    SIGNAL_ROW("kind of exactly 64 bytes", R_ACCEPTED, E_FILL("kind", 64)),
    SIGNAL_ROW("summary with tab and line breaks", R_ACCEPTED,
               E_TEXT("summary", "regel een\n\tregel twee\r\n")),
    SIGNAL_ROW("summary in UTF-8 beyond ASCII", R_ACCEPTED,
               E_TEXT("summary", "Woning aan de Maas, \xc3\xa9\xc3\xa9n verdieping \xe2\x80\x94 "
                                 "\xe2\x82\xac 40.000 contant \xf0\x9f\x8f\xa0")),
    SIGNAL_ROW("area BU0935AB01 (capitals in the buurt positions)", R_ACCEPTED,
               E_TEXT("area", "BU0935AB01")),
    SIGNAL_ROW("observed_at 300 s ahead (the bound)", R_ACCEPTED, E_TIME("observed_at", 300)),
    SIGNAL_ROW("observed_at a minute within ten years back", R_ACCEPTED,
               E_TIME("observed_at", -SCHAKEL_MAX_PAST_S + 60)),
    SIGNAL_ROW("subject with grounds", R_ACCEPTED, E_TEXT("subject", "p-7f3a9c21"),
               E_TEXT("grounds", "Drie meldingen van stankoverlast in een maand")),
    SIGNAL_ROW("address 6211AB 12 A", R_ACCEPTED,
               ADDRESS("\x0a\x06"
                       "6211AB"
                       "\x10\x0c"
                       "\x1a\x01"
                       "A")),
    /* mandatory fields */
    SIGNAL_ROW("no sender", R_INVALID_MESSAGE, E_DROP("sender")),
    SIGNAL_ROW("no kind", R_INVALID_MESSAGE, E_DROP("kind")),
    SIGNAL_ROW("no theme", R_INVALID_MESSAGE, E_DROP("theme")),
    SIGNAL_ROW("no area", R_INVALID_MESSAGE, E_DROP("area")),
    /* sender */
    SIGNAL_ROW("sender is another registered principal", SCHAKEL__REASON__SENDER_MISMATCH,
               E_TEXT("sender", H_POLITIE)),
    SIGNAL_ROW("sender is an unregistered principal", SCHAKEL__REASON__SENDER_MISMATCH,
               E_TEXT("sender", H_UNREGISTERED)),
    SIGNAL_ROW("sender is only a partner id", R_INVALID_FIELD, E_TEXT("sender", "woco-maasoever")),
    SIGNAL_ROW("sender with capitals", R_INVALID_FIELD,
               E_TEXT("sender", "Woco-maasoever/meldingen")),
    /* kind */
    SIGNAL_ROW("kind with capitals", R_INVALID_FIELD, E_TEXT("kind", "Hennepkwekerij")),
    SIGNAL_ROW("kind of 65 bytes", R_INVALID_FIELD, E_FILL("kind", 65)),
    SIGNAL_ROW("kind present but empty", R_INVALID_FIELD, E_TEXT("kind", "")),
    SIGNAL_ROW("kind with an embedded NUL", R_INVALID_FIELD, E_BYTES("kind", "hennep\0kwekerij")),
    /* theme */
    SIGNAL_ROW("theme with a capital", SCHAKEL__REASON__INVALID_THEME,
               E_TEXT("theme", "Ondermijning")),
    SIGNAL_ROW("theme outside the vocabulary", SCHAKEL__REASON__INVALID_THEME,
               E_TEXT("theme", "terrorisme")),
    SIGNAL_ROW("theme present but empty", SCHAKEL__REASON__INVALID_THEME, E_TEXT("theme", "")),
    SIGNAL_ROW("theme with a trailing newline", SCHAKEL__REASON__INVALID_THEME,
               E_TEXT("theme", "ondermijning\n")),
    SIGNAL_ROW("theme not UTF-8 (checked before the vocabulary)", R_INVALID_FIELD,
               E_TEXT("theme", "ondermijning\xff")),
    /* area */
    SIGNAL_ROW("area GM with three digits", SCHAKEL__REASON__INVALID_AREA, E_TEXT("area", "GM935")),
    SIGNAL_ROW("area GM with five digits", SCHAKEL__REASON__INVALID_AREA,
               E_TEXT("area", "GM09351")),
    SIGNAL_ROW("area in lower case", SCHAKEL__REASON__INVALID_AREA, E_TEXT("area", "gm0935")),
    SIGNAL_ROW("area WK without its district digits", SCHAKEL__REASON__INVALID_AREA,
               E_TEXT("area", "WK0935")),
    SIGNAL_ROW("area BU with a lower-case position", SCHAKEL__REASON__INVALID_AREA,
               E_TEXT("area", "BU0935010a")),
    SIGNAL_ROW("area with an unknown prefix", SCHAKEL__REASON__INVALID_AREA,
               E_TEXT("area", "XX0935")),
    SIGNAL_ROW("area with a trailing newline", SCHAKEL__REASON__INVALID_AREA,
               E_TEXT("area", "GM0935\n")),
    /* address */
    SIGNAL_ROW("postcode with a space", SCHAKEL__REASON__INVALID_POSTCODE,
               ADDRESS("\x0a\x07"
                       "6211 AB"
                       "\x10\x0c")),
    SIGNAL_ROW("postcode in lower case", SCHAKEL__REASON__INVALID_POSTCODE,
               ADDRESS("\x0a\x06"
                       "6211ab"
                       "\x10\x0c")),
    SIGNAL_ROW("postcode with a leading zero", SCHAKEL__REASON__INVALID_POSTCODE,
               ADDRESS("\x0a\x06"
                       "0211AB"
                       "\x10\x0c")),
    SIGNAL_ROW("postcode with the letters SS", SCHAKEL__REASON__INVALID_POSTCODE,
               ADDRESS("\x0a\x06"
                       "6211SS"
                       "\x10\x0c")),
    SIGNAL_ROW("address without a postcode", SCHAKEL__REASON__INVALID_POSTCODE,
               ADDRESS("\x10\x0c")),
    SIGNAL_ROW("house number 0", R_INVALID_FIELD,
               ADDRESS("\x0a\x06"
                       "6211AB"
                       "\x10\x00")),
    SIGNAL_ROW("house number 100000", R_INVALID_FIELD,
               ADDRESS("\x0a\x06"
                       "6211AB"
                       "\x10\xa0\x8d\x06")),
    SIGNAL_ROW("address without a house number", R_INVALID_FIELD,
               ADDRESS("\x0a\x06"
                       "6211AB")),
    SIGNAL_ROW("addition with a '!'", R_INVALID_FIELD,
               ADDRESS("\x0a\x06"
                       "6211AB"
                       "\x10\x0c"
                       "\x1a\x02"
                       "A!")),
    SIGNAL_ROW("addition of 9 bytes", R_INVALID_FIELD,
               ADDRESS("\x0a\x06"
                       "6211AB"
                       "\x10\x0c"
                       "\x1a\x09"
                       "ABCDEFGHI")),
    SIGNAL_ROW("an unknown field inside the address", R_INVALID_MESSAGE,
               ADDRESS("\x0a\x06"
                       "6211AB"
                       "\x10\x0c"
                       "\xf8\x06\x01")),
    /* subject and grounds */
    SIGNAL_ROW("subject of digits only (could be a BSN)", R_INVALID_FIELD,
               E_TEXT("subject", "123456789"), E_TEXT("grounds", "Melding van de buren")),
    SIGNAL_ROW("subject of 7 bytes", R_INVALID_FIELD, E_TEXT("subject", "p-12345"),
               E_TEXT("grounds", "Melding van de buren")),
    SIGNAL_ROW("subject of 65 bytes", R_INVALID_FIELD, E_FILL("subject", 65),
               E_TEXT("grounds", "Melding van de buren")),
    SIGNAL_ROW("subject without grounds", SCHAKEL__REASON__MISSING_GROUNDS,
               E_TEXT("subject", "p-7f3a9c21")),
    SIGNAL_ROW("subject with empty grounds", SCHAKEL__REASON__MISSING_GROUNDS,
               E_TEXT("subject", "p-7f3a9c21"), E_TEXT("grounds", "")),
    SIGNAL_ROW("grounds of 2001 bytes", R_INVALID_FIELD, E_TEXT("subject", "p-7f3a9c21"),
               E_FILL("grounds", 2001)),
    /* free text */
    SIGNAL_ROW("summary of 2001 bytes", R_INVALID_FIELD, E_FILL("summary", 2001)),
    SIGNAL_ROW("summary with a lone continuation byte", R_INVALID_FIELD,
               E_TEXT("summary", "stroom \x80 afname")),
    SIGNAL_ROW("summary with a truncated sequence", R_INVALID_FIELD,
               E_TEXT("summary", "stroom \xc3"
                                 "(afname")),
    SIGNAL_ROW("summary with an overlong '/'", R_INVALID_FIELD,
               E_TEXT("summary", "stroom \xc0\xaf afname")),
    SIGNAL_ROW("summary with a UTF-16 surrogate", R_INVALID_FIELD,
               E_TEXT("summary", "stroom \xed\xa0\x80 afname")),
    SIGNAL_ROW("summary above U+10FFFF", R_INVALID_FIELD,
               E_TEXT("summary", "stroom \xf4\x90\x80\x80 afname")),
    SIGNAL_ROW("summary with an embedded NUL", R_INVALID_FIELD,
               E_BYTES("summary", "stroom\0afname")),
    SIGNAL_ROW("summary with a terminal escape", R_INVALID_FIELD,
               E_TEXT("summary", "stroom \x1b[2J afname")),
    SIGNAL_ROW("summary with a C1 control (CSI)", R_INVALID_FIELD,
               E_TEXT("summary", "stroom \xc2\x9b"
                                 "2J afname")),
    SIGNAL_ROW("source_ref of 129 bytes", R_INVALID_FIELD, E_FILL("source_ref", 129)),
    SIGNAL_ROW("source_ref with a newline", R_INVALID_FIELD, E_TEXT("source_ref", "ref-1\nref-2")),
    SIGNAL_ROW("case_ref of 129 bytes", R_INVALID_FIELD, E_FILL("case_ref", 129)),
    /* numbers */
    SIGNAL_ROW("severity 0 present", R_INVALID_FIELD, E_UINT("severity", 0)),
    SIGNAL_ROW("severity 7 (not in the enum)", R_INVALID_FIELD, E_UINT("severity", 7)),
    SIGNAL_ROW("severity -1", R_INVALID_FIELD, E_UINT("severity", -1)),
    SIGNAL_ROW("observed_at an hour ahead", R_INVALID_FIELD, E_TIME("observed_at", 3600)),
    SIGNAL_ROW("observed_at ten years and a day back", R_INVALID_FIELD,
               E_TIME("observed_at", -SCHAKEL_MAX_PAST_S - 86400)),
    SIGNAL_ROW("observed_at 0 (1970)", R_INVALID_FIELD, E_UINT("observed_at", 0)),
    SIGNAL_ROW("observed_at negative", R_INVALID_FIELD, E_UINT("observed_at", -1)),
    /* recipients */
    SIGNAL_ROW("17 recipients", R_INVALID_FIELD, E_TOKENS("recipients", 17)),
    SIGNAL_ROW("16 recipients, none of them a partner", SCHAKEL__REASON__POLICY_DENIED,
               E_TOKENS("recipients", 16)),
    SIGNAL_ROW("a recipient named twice", R_INVALID_FIELD, E_TEXT("recipients", "politie"),
               E_TEXT("recipients", "politie")),
    SIGNAL_ROW("a recipient with a capital", R_INVALID_FIELD, E_TEXT("recipients", "Politie")),
    SIGNAL_ROW("a recipient that is no partner", SCHAKEL__REASON__POLICY_DENIED,
               E_TEXT("recipients", "onbekend")),
    SIGNAL_ROW("a recipient no rule entitles", SCHAKEL__REASON__POLICY_DENIED,
               E_TEXT("recipients", "brandweer")),
    /* policy */
    SIGNAL_ROW("a theme no rule allows", SCHAKEL__REASON__POLICY_DENIED, E_TEXT("theme", "drugs")),
    SIGNAL_ROW("an area no rule allows", SCHAKEL__REASON__POLICY_DENIED, E_TEXT("area", "GM0917")),
    /* schema */
    SIGNAL_ROW("an unknown varint field", R_INVALID_MESSAGE, E_UNKNOWN_UINT(UNKNOWN_FIELD, 1)),
    SIGNAL_ROW("an unknown string field", R_INVALID_MESSAGE,
               E_UNKNOWN_TEXT(UNKNOWN_FIELD, "extra")),
    SIGNAL_ROW("kind with the wire type of a number", R_INVALID_MESSAGE, E_UINT("kind", 5)),
};

static const row_t publish_rows[] = {
    {.name = "publish without a message id",
     .build = build_id_len,
     .reason = R_INVALID_MESSAGE,
     .item_index = -1,
     .arg = -1},
    {.name = "message id of 15 bytes",
     .build = build_id_len,
     .reason = R_INVALID_FIELD,
     .item_index = -1,
     .arg = 15},
    {.name = "message id of 17 bytes",
     .build = build_id_len,
     .reason = R_INVALID_FIELD,
     .item_index = -1,
     .arg = 17},
    {.name = "publish without items",
     .build = build_no_items,
     .reason = R_INVALID_MESSAGE,
     .names_id = 1,
     .item_index = -1},
    {.name = "an empty first item",
     .build = build_empty_item,
     .reason = R_INVALID_MESSAGE,
     .names_id = 1,
     .item_index = 0,
     .arg = 0},
    {.name = "an empty second item",
     .build = build_empty_item,
     .reason = R_INVALID_MESSAGE,
     .names_id = 1,
     .item_index = 1,
     .arg = 1},
    {.name = "an item of 32,769 bytes",
     .build = build_item_of_size,
     .reason = R_INVALID_FIELD,
     .names_id = 1,
     .item_index = 0,
     .arg = SCHAKEL_MAX_ITEM_BYTES + 1},
    {.name = "an item of 32,768 bytes (the limit) under a bad signature",
     .build = build_item_of_size,
     .reason = SCHAKEL__REASON__BAD_SIGNATURE,
     .names_id = 1,
     .item_index = -1,
     .arg = SCHAKEL_MAX_ITEM_BYTES},
    {.name = "257 items",
     .build = build_many_items,
     .reason = SCHAKEL__REASON__TOO_MANY_ITEMS,
     .names_id = 1,
     .item_index = -1,
     .arg = SCHAKEL_MAX_ITEMS + 1},
    {.name = "256 items (the limit) under a bad signature",
     .build = build_many_items,
     .reason = SCHAKEL__REASON__BAD_SIGNATURE,
     .names_id = 1,
     .item_index = -1,
     .arg = SCHAKEL_MAX_ITEMS},
    {.name = "a signed item that is no protobuf",
     .build = build_foreign_item,
     .reason = R_INVALID_MESSAGE,
     .names_id = 1,
     .item_index = 0,
     .arg = 0},
    {.name = "a signed item that is a Heartbeat",
     .build = build_foreign_item,
     .reason = R_INVALID_MESSAGE,
     .names_id = 1,
     .item_index = 0,
     .arg = 1},
    {.name = "second item with an unknown field (the first is not stored)",
     .build = build_second_item,
     .reason = R_INVALID_MESSAGE,
     .names_id = 1,
     .item_index = 1,
     .edits = {E_UNKNOWN_UINT(UNKNOWN_FIELD, 1)}},
    {.name = "second item in another sender's name",
     .build = build_second_item,
     .reason = SCHAKEL__REASON__SENDER_MISMATCH,
     .names_id = 1,
     .item_index = 1,
     .edits = {E_TEXT("sender", H_POLITIE)}},
    {.name = "second item with a theme no rule allows",
     .build = build_second_item,
     .reason = SCHAKEL__REASON__POLICY_DENIED,
     .names_id = 1,
     .item_index = 1,
     .edits = {E_TEXT("theme", "drugs")}},
    {.name = "publish with an unknown field",
     .build = build_publish_unknown_field,
     .reason = R_INVALID_MESSAGE,
     .names_id = 1,
     .item_index = -1},
};

#define SIG_ROW(label, fault)                                                                      \
    {                                                                                              \
        .name = label, .build = build_bad_signature, .reason = SCHAKEL__REASON__BAD_SIGNATURE,     \
        .names_id = 1, .item_index = -1, .arg = fault                                              \
    }

static const row_t signature_rows[] = {
    SIG_ROW("no signature", SIG_NONE),
    SIG_ROW("signature of 63 bytes", SIG_SHORT),
    SIG_ROW("signature of 65 bytes", SIG_LONG),
    SIG_ROW("64 random bytes", SIG_RANDOM),
    SIG_ROW("64 zero bytes", SIG_ZERO),
    SIG_ROW("signed by another registered key", SIG_OTHER_KEY),
    SIG_ROW("valid signature over another item", SIG_OTHER_ITEM),
    SIG_ROW("valid signature over another message id", SIG_OTHER_ID),
    SIG_ROW("items in another order than signed", SIG_REORDERED),
    SIG_ROW("Ed25519 over the item, not the signed bytes", SIG_RAW_ITEM),
    SIG_ROW("signed bytes with another domain prefix", SIG_OTHER_PREFIX),
    SIG_ROW("malleated signature (s + L)", SIG_MALLEATED),
    SIG_ROW("unknown field in an item under a bad signature: the signature decides",
            SIG_UNKNOWN_FIELD),
};

static void test_bad_signals_are_refused(void **state)
{
    h_env_t *env = *state;
    run_rows(env, signal_rows, sizeof signal_rows / sizeof signal_rows[0]);
    h_done(env);
}

static void test_bad_publishes_are_refused(void **state)
{
    h_env_t *env = *state;
    run_rows(env, publish_rows, sizeof publish_rows / sizeof publish_rows[0]);
    h_done(env);
}

static void test_bad_signatures_are_refused(void **state)
{
    h_env_t *env = *state;
    run_rows(env, signature_rows, sizeof signature_rows / sizeof signature_rows[0]);
    h_done(env);
}

/* ------------------------------------------------------------------ catalogue: frames */

static void build_empty_frame(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    (void)ctx;
    (void)row;
    (void)parts;
    *n = 1; /* parts[0] stays empty */
}

/* A valid signed publish cut short by row->arg bytes (0: cut in half). */
static void build_truncated(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    pb_t item = {0};
    base_item(&item, ctx->now);
    publish_signed(ctx->raw->key, ctx->id, &item, 1, &parts[0]);
    pb_free(&item);
    parts[0].len = row->arg == 0 ? parts[0].len / 2 : parts[0].len - (size_t)row->arg;
    *n = 1;
}

/* 200 pseudo-random bytes (fixed seed) that start with a key of wire type
 * 7, which no protobuf message can start with. */
static void build_random_bytes(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    (void)ctx;
    (void)row;
    static const unsigned char seed[randombytes_SEEDBYTES] = "schakel hostile random frame 01";
    uint8_t bytes[200];
    randombytes_buf_deterministic(bytes, sizeof bytes, seed);
    bytes[0] = 0x07;
    pb_put(&parts[0], bytes, sizeof bytes);
    *n = 1;
}

/* Valid protobuf of another message, sent where a Frame belongs. */
static void build_wrong_message(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    pb_t item = {0};
    base_item(&item, ctx->now);
    switch (row->arg) {
    case 0: /* a Signal */
        pb_put(&parts[0], item.data, item.len);
        break;
    case 1: { /* a Publish body without its Frame */
        uint8_t sig[64];
        sign_items(ctx->raw->key, ctx->id, &item, 1, sig);
        publish_spec_t s = {.id = ctx->id,
                            .id_len = 16,
                            .items = &item,
                            .n_items = 1,
                            .signature = sig,
                            .signature_len = 64};
        publish_body(&parts[0], &s);
        break;
    }
    default: /* a Heartbeat body {time: 5}: field 1 is Frame.version */
        pb_uint(&parts[0], HEARTBEAT_F("time"), 5);
        break;
    }
    pb_free(&item);
    *n = 1;
}

/* A signed publish with Frame.version row->arg (-1: absent); with
 * edits[0].value set, also a Frame field the schema lacks. */
static void build_version(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    pb_t item = {0};
    base_item(&item, ctx->now);
    uint8_t sig[64];
    sign_items(ctx->raw->key, ctx->id, &item, 1, sig);
    publish_spec_t s = {.version = row->arg,
                        .id = ctx->id,
                        .id_len = 16,
                        .items = &item,
                        .n_items = 1,
                        .signature = sig,
                        .signature_len = 64};
    frame_publish(&parts[0], &s);
    if (row->edits[0].value)
        pb_uint(&parts[0], UNKNOWN_FRAME_FIELD, 1);
    pb_free(&item);
    *n = 1;
}

/* A Heartbeat frame with one raw addition (row->arg):
 * 0 a Frame field the schema lacks, 1 an unknown field in the body,
 * 2 no body at all, 3 a body number reserved for case commands,
 * 4 the body field edits[0] holds (a string of raw bytes). */
static void build_heartbeat_variant(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    (void)ctx;
    pb_t body = {0};
    pb_uint(&body, HEARTBEAT_F("time"), (uint64_t)hostile_wall_ms());
    if (row->arg == 1)
        pb_uint(&body, UNKNOWN_FIELD, 1);
    if (row->arg == 4)
        pb_bytes(&body, HEARTBEAT_F(row->edits[0].field), row->edits[0].text, row->edits[0].len);
    pb_uint(&parts[0], FRAME_F("version"), 1);
    if (row->arg == 3)
        pb_bytes(&parts[0], 32, NULL, 0);
    else if (row->arg != 2)
        pb_bytes(&parts[0], FRAME_F("heartbeat"), body.data, body.len);
    if (row->arg == 0)
        pb_uint(&parts[0], UNKNOWN_FRAME_FIELD, 1);
    pb_free(&body);
    *n = 1;
}

/* A body only the broker sends (row->arg): 0 Accepted, 1 Accepted without
 * its message id, 2 Deliver, 3 Rejected with reason 99, 4 Rejected
 * without a reason. */
static void build_broker_body(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    pb_t body = {0}, inner = {0};
    const ProtobufCMessageDescriptor *accepted = &schakel__accepted__descriptor;
    const ProtobufCMessageDescriptor *rejected = &schakel__rejected__descriptor;
    const char *body_name = row->arg <= 1 ? "accepted" : row->arg == 2 ? "deliver" : "rejected";
    switch (row->arg) {
    case 0:
    case 1:
        if (row->arg == 0)
            pb_bytes(&body, field_no(accepted, "message_id"), ctx->id, 16);
        pb_uint(&inner, field_no(&schakel__item_accepted__descriptor, "seq"), 1);
        pb_uint(&inner, field_no(&schakel__item_accepted__descriptor, "recipients"), 1);
        pb_bytes(&body, field_no(accepted, "items"), inner.data, inner.len);
        break;
    case 2:
        pb_uint(&body, field_no(&schakel__deliver__descriptor, "seq"), 1);
        pb_bytes(&body, field_no(&schakel__deliver__descriptor, "signal"), "x", 1);
        break;
    default:
        if (row->arg == 3)
            pb_uint(&body, field_no(rejected, "reason"), 99);
        pb_text(&body, field_no(rejected, "text"), "no");
        break;
    }
    pb_uint(&parts[0], FRAME_F("version"), 1);
    pb_bytes(&parts[0], FRAME_F(body_name), body.data, body.len);
    pb_free(&body);
    pb_free(&inner);
    *n = 1;
}

static void build_flow_without_window(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    (void)ctx;
    (void)row;
    pb_uint(&parts[0], FRAME_F("version"), 1);
    pb_bytes(&parts[0], FRAME_F("flow"), NULL, 0);
    *n = 1;
}

/* An Ack of row->arg seqs 1..N (0: none; -1: the seq 0), unpacked. */
static void build_ack(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    (void)ctx;
    size_t count = row->arg < 0 ? 1 : (size_t)row->arg;
    uint64_t *seqs = calloc(count ? count : 1, sizeof *seqs);
    assert_non_null(seqs);
    for (size_t i = 0; i < count; i++)
        seqs[i] = row->arg < 0 ? 0 : i + 1;
    frame_ack(&parts[0], seqs, count);
    free(seqs);
    *n = 1;
}

/* An Ack of row->arg seqs in packed encoding: one byte each, eight bytes
 * each once decoded. */
static void build_ack_packed(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    (void)ctx;
    pb_t packed = {0}, body = {0};
    for (int64_t i = 0; i < row->arg; i++)
        pb_put(&packed, "\x01", 1);
    pb_bytes(&body, field_no(&schakel__ack__descriptor, "seqs"), packed.data, packed.len);
    pb_uint(&parts[0], FRAME_F("version"), 1);
    pb_bytes(&parts[0], FRAME_F("ack"), body.data, body.len);
    pb_free(&packed);
    pb_free(&body);
    *n = 1;
}

/* A publish holding row->arg empty items: small on the wire, but each one
 * costs the decoder a ProtobufCBinaryData. */
static void build_many_empty_items(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    pb_t body = {0};
    pb_bytes(&body, PUBLISH_F("message_id"), ctx->id, 16);
    for (int64_t i = 0; i < row->arg; i++)
        pb_bytes(&body, PUBLISH_F("items"), NULL, 0);
    pb_uint(&parts[0], FRAME_F("version"), 1);
    pb_bytes(&parts[0], FRAME_F("publish"), body.data, body.len);
    pb_free(&body);
    *n = 1;
}

/* A publish field whose length prefix claims 1 GiB of a 40-byte frame. */
static void build_length_claim(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    (void)ctx;
    (void)row;
    pb_uint(&parts[0], FRAME_F("version"), 1);
    pb_key(&parts[0], FRAME_F("publish"), 2);
    pb_varint(&parts[0], UINT64_C(1) << 30);
    pb_put(&parts[0], "0123456789012345678901234567890123", 34);
    *n = 1;
}

/* Multipart: row->arg 0 two heartbeats, 1 a valid publish and two empty
 * parts. */
static void build_multipart(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    if (row->arg == 0) {
        frame_heartbeat(&parts[0]);
        frame_heartbeat(&parts[1]);
        *n = 2;
        return;
    }
    pb_t item = {0};
    base_item(&item, ctx->now);
    publish_signed(ctx->raw->key, ctx->id, &item, 1, &parts[0]);
    pb_free(&item);
    *n = 3;
}

static void build_frame_of_size(hostile_ctx_t *ctx, const row_t *row, pb_t *parts, size_t *n)
{
    frame_of_size(&parts[0], ctx->id, (size_t)row->arg);
    *n = 1;
}

#define FRAME_ROW(label, fn, why, with_id, argument)                                               \
    {                                                                                              \
        .name = label, .build = fn, .reason = why, .names_id = with_id, .item_index = -1,          \
        .arg = argument                                                                            \
    }

static const row_t frame_rows[] = {
    FRAME_ROW("empty frame", build_empty_frame, R_INVALID_MESSAGE, 0, 0),
    FRAME_ROW("publish cut in half", build_truncated, R_INVALID_MESSAGE, 0, 0),
    FRAME_ROW("publish without its last byte", build_truncated, R_INVALID_MESSAGE, 0, 1),
    FRAME_ROW("200 random bytes", build_random_bytes, R_INVALID_MESSAGE, 0, 0),
    FRAME_ROW("a serialized Signal sent as a Frame", build_wrong_message, R_INVALID_MESSAGE, 0, 0),
    FRAME_ROW("a Publish body sent as a Frame", build_wrong_message, R_INVALID_MESSAGE, 0, 1),
    FRAME_ROW("a Heartbeat body sent as a Frame (reads as version 5)", build_wrong_message,
              SCHAKEL__REASON__UNSUPPORTED_VERSION, 0, 2),
    FRAME_ROW("protocol version 2", build_version, SCHAKEL__REASON__UNSUPPORTED_VERSION, 1, 2),
    FRAME_ROW("protocol version 0", build_version, SCHAKEL__REASON__UNSUPPORTED_VERSION, 1, 0),
    FRAME_ROW("protocol version 2^32-1", build_version, SCHAKEL__REASON__UNSUPPORTED_VERSION, 1,
              UINT32_MAX),
    FRAME_ROW("no protocol version", build_version, SCHAKEL__REASON__UNSUPPORTED_VERSION, 1, -1),
    {.name = "version 2 with an unknown field: the version decides",
     .build = build_version,
     .reason = SCHAKEL__REASON__UNSUPPORTED_VERSION,
     .names_id = 1,
     .item_index = -1,
     .arg = 2,
     .edits = {E_UINT(NULL, 1)}},
    {.name = "version 1 publish with an unknown Frame field",
     .build = build_version,
     .reason = R_INVALID_MESSAGE,
     .names_id = 1,
     .item_index = -1,
     .arg = 1,
     .edits = {E_UINT(NULL, 1)}},
    FRAME_ROW("heartbeat with an unknown Frame field", build_heartbeat_variant, R_INVALID_MESSAGE,
              0, 0),
    FRAME_ROW("heartbeat with an unknown field in its body", build_heartbeat_variant,
              R_INVALID_MESSAGE, 0, 1),
    FRAME_ROW("frame without a body", build_heartbeat_variant, R_INVALID_MESSAGE, 0, 2),
    FRAME_ROW("a body number reserved for case commands", build_heartbeat_variant,
              R_INVALID_MESSAGE, 0, 3),
    {.name = "heartbeat.role not UTF-8",
     .build = build_heartbeat_variant,
     .reason = R_INVALID_FIELD,
     .item_index = -1,
     .arg = 4,
     .edits = {E_BYTES("role", "system\xff")}},
    {.name = "heartbeat.heartbeat_id of 17 bytes",
     .build = build_heartbeat_variant,
     .reason = R_INVALID_FIELD,
     .item_index = -1,
     .arg = 4,
     .edits = {E_BYTES("heartbeat_id", "0123456789abcdefg")}},
    {.name = "heartbeat.principal with a NUL",
     .build = build_heartbeat_variant,
     .reason = R_INVALID_FIELD,
     .item_index = -1,
     .arg = 4,
     .edits = {E_BYTES("principal", "politie/bvh\0koppeling")}},
    FRAME_ROW("Accepted sent by a client", build_broker_body, SCHAKEL__REASON__UNEXPECTED_BODY, 0,
              0),
    FRAME_ROW("Accepted without a message id", build_broker_body, R_INVALID_MESSAGE, 0, 1),
    FRAME_ROW("Deliver sent by a client", build_broker_body, SCHAKEL__REASON__UNEXPECTED_BODY, 0,
              2),
    FRAME_ROW("Rejected with reason 99", build_broker_body, R_INVALID_FIELD, 0, 3),
    FRAME_ROW("Rejected without a reason", build_broker_body, R_INVALID_MESSAGE, 0, 4),
    FRAME_ROW("Flow without a window", build_flow_without_window, R_INVALID_MESSAGE, 0, 0),
    FRAME_ROW("Ack without seqs", build_ack, R_INVALID_MESSAGE, 0, 0),
    FRAME_ROW("Ack of seq 0", build_ack, R_INVALID_FIELD, 0, -1),
    FRAME_ROW("Ack of 1025 seqs", build_ack, R_INVALID_FIELD, 0, SCHAKEL_MAX_ACKS + 1),
    FRAME_ROW("Ack of 200,000 packed seqs: over the decode budget", build_ack_packed,
              R_INVALID_MESSAGE, 0, 200000),
    FRAME_ROW("publish of 130,000 empty items: over the decode budget", build_many_empty_items,
              R_INVALID_MESSAGE, 0, 130000),
    FRAME_ROW("a length prefix claiming 1 GiB", build_length_claim, R_INVALID_MESSAGE, 0, 0),
    FRAME_ROW("two frames in one message", build_multipart, SCHAKEL__REASON__TOO_MANY_FRAMES, 0, 0),
    FRAME_ROW("a publish and two empty frames in one message", build_multipart,
              SCHAKEL__REASON__TOO_MANY_FRAMES, 0, 1),
    FRAME_ROW("frame of 262,145 bytes", build_frame_of_size, SCHAKEL__REASON__FRAME_TOO_LARGE, 0,
              SCHAKEL_MAX_FRAME_BYTES + 1),
    FRAME_ROW("frame of 262,144 bytes (the limit): read, then the signature fails",
              build_frame_of_size, SCHAKEL__REASON__BAD_SIGNATURE, 1, SCHAKEL_MAX_FRAME_BYTES),
    FRAME_ROW("frame of 1,048,543 bytes: the largest that is read and refused", build_frame_of_size,
              SCHAKEL__REASON__FRAME_TOO_LARGE, 0, 4 * SCHAKEL_MAX_FRAME_BYTES - 33),
};

static void test_malformed_frames_are_refused(void **state)
{
    h_env_t *env = *state;
    run_rows(env, frame_rows, sizeof frame_rows / sizeof frame_rows[0]);
    h_done(env);
}

/* A publish sent as the first part of a multipart message is refused whole
 * and never stored: the same bytes sent alone afterwards are a first
 * publish, not a duplicate. */
static void test_multipart_publish_is_not_stored(void **state)
{
    h_env_t *env = *state;
    row_env_t re;
    row_env_open(env, &re);
    const char *what = "publish inside a multipart message";
    bystanders_before(&re.by, what);
    randombytes_buf(re.ctx.id, 16);
    pb_t item = {0}, parts[2] = {{0}};
    base_item(&item, (int64_t)time(NULL));
    publish_signed(re.ctx.raw->key, re.ctx.id, &item, 1, &parts[0]);
    pb_put(&parts[1], "x", 1);
    mark_t mark = mark_take(env);
    raw_send(re.ctx.raw, parts, 2);
    raw_expect_rejected(re.ctx.raw, what, SCHAKEL__REASON__TOO_MANY_FRAMES, NULL, -1, 0);
    expect_refusal_recorded(env, &mark, what, HOSTILE, NULL, SCHAKEL__REASON__TOO_MANY_FRAMES, -1);
    (void)raw_settle(re.ctx.raw, what);
    forward_watch_empty(re.politie, what);
    bystanders_after(&re.by, what);

    raw_send(re.ctx.raw, parts, 1);
    (void)raw_expect_accepted(re.ctx.raw, "the same publish alone", re.ctx.id, 1, 0);
    forward_watch_expect(re.politie, re.ctx.id, "the same publish alone");
    pb_free(&item);
    pb_free(&parts[0]);
    pb_free(&parts[1]);
    row_env_close(&re);
    h_done(env);
}

/* A frame whose encrypted ZMTP frame exceeds the broker's ZMQ_MAXMSGSIZE
 * (1,048,544 bytes of Frame and more) makes libzmq drop that connection
 * unanswered; the DEALER reconnects by itself and is served again, and no
 * other connection notices. */
static void test_frame_far_over_the_limit_drops_only_that_connection(void **state)
{
    h_env_t *env = *state;
    row_env_t re;
    row_env_open(env, &re);
    const char *what = "frame of 1,048,544 bytes";
    bystanders_before(&re.by, what);
    randombytes_buf(re.ctx.id, 16);
    pb_t frame = {0};
    frame_of_size(&frame, re.ctx.id, 4 * SCHAKEL_MAX_FRAME_BYTES - 32);
    raw_send_frame(re.ctx.raw, &frame);
    int64_t deadline = hostile_now_ms() + H_TIMEOUT_MS;
    while (re.ctx.raw->disconnects == 0 && hostile_left_ms(deadline) > 0)
        (void)raw_event(re.ctx.raw, hostile_left_ms(deadline), NULL);
    if (re.ctx.raw->disconnects == 0)
        fail_msg("%s: the broker kept the connection", what);
    uint32_t value = 0;
    if (raw_await_handshake(re.ctx.raw, H_TIMEOUT_MS, &value) != ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
        fail_msg("%s: the DEALER did not reconnect", what);
    Schakel__Frame *stray = raw_recv(re.ctx.raw, 0);
    if (stray) {
        char got[400];
        frame_describe(stray, got, sizeof got);
        frame_free(&stray);
        fail_msg("%s: the dropped frame was answered (%s)", what, got);
    }
    (void)raw_settle(re.ctx.raw, "after the reconnect");
    forward_watch_empty(re.politie, what);
    bystanders_after(&re.by, what);
    row_env_close(&re);
    h_done(env);
}

/* A client that sets its own routing id (forbidden, PROTOCOL.md 3.2) gets
 * no session: each frame is refused NOT_PERMITTED and nothing is pushed to
 * it, so another principal's client that takes the same routing id later
 * can never get what was meant for it. Well-behaved clients go on. */
static void test_chosen_routing_id_gets_no_session(void **state)
{
    h_env_t *env = *state;
    static const char chosen[] = "om-vaste-routing-id";
    raw_t *fixed =
        raw_open_as(env, h_key_file(env, H_OM), env->broker_pub, H_OM, chosen, sizeof chosen - 1);
    uint32_t value = 0;
    if (raw_await_handshake(fixed, H_TIMEOUT_MS, &value) != ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
        fail_msg("the handshake with a chosen routing id failed (value %u)", value);
    pb_t frame = {0};
    frame_heartbeat(&frame);
    raw_send_frame(fixed, &frame);
    Schakel__Frame *f =
        raw_next(fixed, "heartbeat with a chosen routing id", SCHAKEL__FRAME__BODY_REJECTED);
    assert_int_equal(f->rejected->reason, SCHAKEL__REASON__NOT_PERMITTED);
    assert_non_null(strstr(f->rejected->text, "routing id"));
    frame_free(&f);
    /* a Flow opens nothing: a delivery for om stays in its mailbox */
    frame_flow(&frame, 16);
    raw_send_frame(fixed, &frame);
    f = raw_next(fixed, "flow with a chosen routing id", SCHAKEL__FRAME__BODY_REJECTED);
    frame_free(&f);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = h_police_signal("BVH-ROUTING-1");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    assert_null(raw_recv(fixed, 500));
    assert_int_equal(h_backlog_of(env, H_OM), 1);
    raw_close(&fixed);
    schakel_close(&politie);
    h_done(env);
}

/* A session is bound to its connection: once that closes, nothing meant
 * for it goes to a later connection that takes the same routing id, even
 * one that imitates libzmq's form (5 bytes, the first 0). */
static void test_routing_id_taken_after_close_gets_nothing(void **state)
{
    h_env_t *env = *state;
    static const uint8_t chosen[5] = {0, 'o', 'm', '-', '1'};
    raw_t *om = raw_open_as(env, h_key_file(env, H_OM), env->broker_pub, H_OM, chosen, 5);
    uint32_t value = 0;
    if (raw_await_handshake(om, H_TIMEOUT_MS, &value) != ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
        fail_msg("om's handshake failed (value %u)", value);
    pb_t frame = {0};
    frame_flow(&frame, 8);
    raw_send_frame(om, &frame);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = h_police_signal("BVH-ROUTING-2");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    for (int i = 0; i < 2; i++) {
        Schakel__Frame *got = raw_next(om, "om's deliveries", SCHAKEL__FRAME__BODY_DELIVER);
        frame_free(&got);
    }
    raw_close(&om); /* two deliveries in flight, unacked: room for six more in its window */
    Schakel__Frame *f = NULL;

    /* Another principal's client takes the routing id, silently (a frame
     * of its own would end om's session anyway): libzmq lets it in once
     * om's connection is gone, so a handshake that is not followed by a
     * disconnect holds the id. */
    raw_t *thief = raw_open_as(env, h_key_file(env, H_RIEC), env->broker_pub, H_RIEC, chosen, 5);
    int holds = 0;
    for (int round = 0; round < 20 && !holds; round++) {
        if (raw_await_handshake(thief, H_TIMEOUT_MS, &value) != ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
            fail_msg("riec's handshake failed (value %u)", value);
        int disconnects = thief->disconnects;
        while (raw_event(thief, 300, NULL) != 0)
            ;
        holds = thief->disconnects == disconnects;
    }
    if (!holds)
        fail_msg("riec's client never held the routing id");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL); /* more for om, pushed now */
    Schakel__Frame *stray = raw_recv(thief, 1000);
    if (stray != NULL) {
        char got[400];
        frame_describe(stray, got, sizeof got);
        frame_free(&stray);
        fail_msg("riec's client got a frame meant for om's closed connection: %s", got);
    }
    /* it did hold the id: its own heartbeat is answered */
    frame_heartbeat(&frame);
    raw_send_frame(thief, &frame);
    f = raw_next(thief, "riec's heartbeat", SCHAKEL__FRAME__BODY_HEARTBEAT);
    frame_free(&f);
    assert_int_equal(h_backlog_of(env, H_OM), 3); /* nothing lost: all three wait for om */
    (void)f;
    raw_close(&thief);
    schakel_close(&politie);
    h_done(env);
}

/* Two connections of om, both with a Flow: the later one receives, and
 * when it closes, receiving goes back to the earlier one, with what was
 * in flight to the closed one sent again (PROTOCOL.md 7.8). Before, the
 * earlier connection got nothing until it sent Flow again. */
static void test_receiving_goes_back_to_the_live_connection(void **state)
{
    h_env_t *env = *state;
    raw_t *live = raw_connect(env, H_OM);
    raw_t *later = raw_connect(env, H_OM);
    pb_t frame = {0};
    frame_flow(&frame, 8);
    raw_send_frame(live, &frame);
    (void)raw_settle(live, "live's Flow");
    frame_flow(&frame, 8);
    raw_send_frame(later, &frame);
    (void)raw_settle(later, "the later connection's Flow");
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = h_police_signal("BVH-TWO-CONNECTIONS-1");
    uint64_t first = h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    Schakel__Frame *f =
        raw_next(later, "the later connection's delivery", SCHAKEL__FRAME__BODY_DELIVER);
    assert_int_equal(f->deliver->seq, first);
    frame_free(&f);
    raw_close(&later); /* unacked */
    s = h_police_signal("BVH-TWO-CONNECTIONS-2");
    uint64_t second = h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    f = raw_next(live, "the first delivery, again, on the live connection",
                 SCHAKEL__FRAME__BODY_DELIVER);
    assert_int_equal(f->deliver->seq, first);
    assert_true(f->deliver->has_redelivery && f->deliver->redelivery);
    frame_free(&f);
    f = raw_next(live, "the second delivery on the live connection", SCHAKEL__FRAME__BODY_DELIVER);
    assert_int_equal(f->deliver->seq, second);
    frame_free(&f);
    raw_assert_connected(live, "after the later connection closed");
    raw_close(&live);
    schakel_close(&politie);
    h_done(env);
}

/* ------------------------------------------------------------------ case commands */

/* A CaseCommand opening an address case, packed; actor and case_id as
 * given (case_id NULL: none, as an open must be); with one field the
 * schema lacks added when `unknown_field`. */
static void case_open_command(pb_t *out, const char *actor, const char *case_id, int unknown_field)
{
    Schakel__CaseOpen open = SCHAKEL__CASE_OPEN__INIT;
    open.case_type = (char *)(uintptr_t) "ondermijning-adres";
    open.area = (char *)(uintptr_t) "BU09350101";
    open.title = (char *)(uintptr_t) "Hennepkwekerij Boschstraat";
    Schakel__CaseCommand cmd = SCHAKEL__CASE_COMMAND__INIT;
    cmd.actor = (char *)(uintptr_t)actor;
    cmd.case_id = (char *)(uintptr_t)case_id;
    cmd.op_case = SCHAKEL__CASE_COMMAND__OP_OPEN;
    cmd.open = &open;
    size_t len = 0;
    uint8_t *bytes = wire_encode_case_command(&cmd, &len);
    assert_non_null(bytes);
    pb_put(out, bytes, len);
    free(bytes);
    if (unknown_field)
        pb_uint(out, UNKNOWN_FIELD, 1);
}

/* Frame{version 1, case_publish{command_id, command, signature}}, signed by
 * `key` over `signed_command` (the command sent unless a test changes it
 * after signing). */
static void frame_case_publish(pb_t *frame, const uint8_t id[16], const pb_t *command,
                               const pb_t *signed_command, const keypair_t *key)
{
    uint8_t signed_bytes[64], sig[64];
    wire_case_signed_bytes(id, signed_command->data, signed_command->len, signed_bytes);
    if (keys_sign(key, signed_bytes, sizeof signed_bytes, sig) != 0)
        fail_msg("keys_sign failed");
    pb_t body = {0};
    uint32_t f_id = field_no(&schakel__case_publish__descriptor, "command_id");
    pb_bytes(&body, f_id, id, 16);
    pb_bytes(&body, field_no(&schakel__case_publish__descriptor, "command"), command->data,
             command->len);
    pb_bytes(&body, field_no(&schakel__case_publish__descriptor, "signature"), sig, sizeof sig);
    pb_uint(frame, FRAME_F("version"), 1);
    pb_bytes(frame, FRAME_F("case_publish"), body.data, body.len);
    pb_free(&body);
}

static int setup_cases(void **state)
{
    h_env_t *env = h_env_new_with_cases();
    h_broker_start(env);
    *state = env;
    return 0;
}

/* Signed case commands a client library would never send: each refused
 * with its reason, naming the command id, recorded, and nothing opened;
 * the broker goes on (a well-formed one is accepted after them). */
static void test_bad_case_commands_are_refused(void **state)
{
    h_env_t *env = *state;
    enum fault { F_OTHER_KEY, F_CHANGED_AFTER_SIGNING, F_OTHER_ACTOR, F_OPEN_WITH_ID, F_UNKNOWN };
    static const struct {
        const char *label;
        enum fault fault;
        Schakel__Reason reason;
        const char *text; /* a part of the answer's text */
    } rows[] = {
        {"signed with another principal's key", F_OTHER_KEY, SCHAKEL__REASON__BAD_SIGNATURE,
         "does not verify with the actor's registered key"},
        {"command changed after signing", F_CHANGED_AFTER_SIGNING, SCHAKEL__REASON__BAD_SIGNATURE,
         "does not verify"},
        {"actor is another principal", F_OTHER_ACTOR, SCHAKEL__REASON__SENDER_MISMATCH,
         "names actor " H_POLITIE " but this connection is authenticated as " H_RIEC},
        {"open naming a case id", F_OPEN_WITH_ID, SCHAKEL__REASON__INVALID_FIELD, "case_id"},
        {"a field the schema lacks", F_UNKNOWN, SCHAKEL__REASON__INVALID_MESSAGE, "unknown"},
    };
    raw_t *riec = raw_connect(env, H_RIEC);
    char err[256];
    keypair_t *politie_key = keys_load_secret(h_key_file(env, H_POLITIE), err, sizeof err);
    assert_non_null(politie_key);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint8_t id[16];
        randombytes_buf(id, sizeof id);
        pb_t command = {0}, signed_command = {0}, frame = {0};
        const keypair_t *key = riec->key;
        switch (rows[i].fault) {
        case F_OTHER_KEY:
            case_open_command(&command, H_RIEC, NULL, 0);
            key = politie_key;
            break;
        case F_CHANGED_AFTER_SIGNING:
            case_open_command(&command, H_RIEC, NULL, 0);
            case_open_command(&signed_command, H_RIEC, NULL, 1);
            break;
        case F_OTHER_ACTOR:
            case_open_command(&command, H_POLITIE, NULL, 0);
            break;
        case F_OPEN_WITH_ID:
            case_open_command(&command, H_RIEC, "C-00000001", 0);
            break;
        case F_UNKNOWN:
            case_open_command(&command, H_RIEC, NULL, 1);
            break;
        }
        mark_t m = mark_take(env);
        frame_case_publish(&frame, id, &command, signed_command.len ? &signed_command : &command,
                           key);
        raw_send_frame(riec, &frame);
        Schakel__Frame *f = raw_next(riec, rows[i].label, SCHAKEL__FRAME__BODY_REJECTED);
        const Schakel__Rejected *rj = f->rejected;
        if (!rj->has_reason || rj->reason != rows[i].reason || !rj->text ||
            !strstr(rj->text, rows[i].text) || !rj->has_message_id || rj->message_id.len != 16 ||
            memcmp(rj->message_id.data, id, 16) != 0)
            fail_msg("%s: answered %s \"%s\" (expected %s, \"...%s...\", the command id)",
                     rows[i].label, rj->has_reason ? wire_reason_name(rj->reason) : "no reason",
                     rj->text ? rj->text : "", wire_reason_name(rows[i].reason), rows[i].text);
        frame_free(&f);
        expect_refusal_recorded(env, &m, rows[i].label, H_RIEC, id, rows[i].reason, -1);
        pb_free(&command);
        pb_free(&signed_command);
    }
    keys_destroy(&politie_key);
    /* nothing was opened; a good command is accepted after all of them */
    schakel_client_t *riec_client = h_connect(env, H_RIEC);
    schakel_case_list_t *list = NULL;
    assert_int_equal(schakel_case_list(riec_client, &list, H_TIMEOUT_MS), SCHAKEL_OK);
    assert_int_equal(list->n_cases, 0);
    schakel_case_list_free(&list);
    uint8_t id[16];
    randombytes_buf(id, sizeof id);
    pb_t command = {0}, frame = {0};
    case_open_command(&command, H_RIEC, NULL, 0);
    frame_case_publish(&frame, id, &command, &command, riec->key);
    raw_send_frame(riec, &frame);
    Schakel__Frame *f = raw_next(riec, "a good open", SCHAKEL__FRAME__BODY_ACCEPTED);
    frame_free(&f);
    pb_free(&command);
    assert_int_equal(schakel_case_list(riec_client, &list, H_TIMEOUT_MS), SCHAKEL_OK);
    assert_int_equal(list->n_cases, 1);
    schakel_case_list_free(&list);
    raw_assert_connected(riec, "after the bad case commands");
    schakel_close(&riec_client);
    raw_close(&riec);
    h_done(env);
}

static int setup_cases_env(void **state)
{
    *state = h_env_new_with_cases();
    return 0;
}

/* Case commands count against the principal's publish rate: a flood of
 * signed opens is refused RATE_LIMITED beyond it, each refusal naming its
 * command id and saying to retry with it; what was accepted is exactly
 * what is stored, and a refused command sent again later with the same
 * bytes is accepted once. */
static void test_case_command_flood_is_rate_limited(void **state)
{
    enum { FLOOD = 60 };
    h_env_t *env = *state;
    const char *extra[] = {"--max-publish-rate", "20", NULL};
    h_broker_start_with(env, extra);
    raw_t *riec = raw_connect(env, H_RIEC);
    static uint8_t ids[FLOOD][16];
    pb_t command = {0}, frames[FLOOD];
    memset(frames, 0, sizeof frames);
    case_open_command(&command, H_RIEC, NULL, 0);
    for (size_t i = 0; i < FLOOD; i++) {
        randombytes_buf(ids[i], 16);
        frame_case_publish(&frames[i], ids[i], &command, &command, riec->key);
    }
    for (size_t i = 0; i < FLOOD; i++)
        raw_send(riec, &frames[i], 1);
    size_t accepted = 0, limited = 0, retry = FLOOD;
    for (size_t i = 0; i < FLOOD; i++) {
        Schakel__Frame *f = raw_recv(riec, H_TIMEOUT_MS);
        if (f == NULL)
            fail_msg("case flood: answer %zu of %d missing", i, (int)FLOOD);
        if (f->body_case == SCHAKEL__FRAME__BODY_ACCEPTED) {
            accepted++;
        } else if (f->body_case == SCHAKEL__FRAME__BODY_REJECTED &&
                   f->rejected->reason == SCHAKEL__REASON__RATE_LIMITED) {
            limited++;
            if (!f->rejected->text || !strstr(f->rejected->text, "same command id") ||
                !f->rejected->has_message_id || f->rejected->message_id.len != 16)
                fail_msg("case flood: a RATE_LIMITED without the command id or its advice");
            for (size_t k = 0; k < FLOOD; k++)
                if (memcmp(f->rejected->message_id.data, ids[k], 16) == 0)
                    retry = k;
        } else {
            char got[400];
            frame_describe(f, got, sizeof got);
            fail_msg("case flood: answer %zu is %s", i, got);
        }
        frame_free(&f);
    }
    if (accepted == 0 || limited == 0 || retry == FLOOD)
        fail_msg("case flood of %d: %zu accepted, %zu limited; expected both", (int)FLOOD, accepted,
                 limited);
    schakel_client_t *client = h_connect(env, H_RIEC);
    schakel_case_list_t *list = NULL;
    assert_int_equal(schakel_case_list(client, &list, H_TIMEOUT_MS), SCHAKEL_OK);
    assert_int_equal(list->n_cases, accepted);
    schakel_case_list_free(&list);
    /* the refused one again, as a client retries: accepted once the rate
     * allows, then answered as a duplicate */
    for (int duplicate = 0; duplicate < 2; duplicate++) {
        Schakel__Frame *f = NULL;
        int64_t deadline = hostile_now_ms() + H_TIMEOUT_MS; /* a token every 50 ms */
        while (f == NULL && hostile_now_ms() < deadline) {
            raw_send(riec, &frames[retry], 1);
            f = raw_recv(riec, H_TIMEOUT_MS);
            assert_non_null(f);
            if (f->body_case == SCHAKEL__FRAME__BODY_REJECTED &&
                f->rejected->reason == SCHAKEL__REASON__RATE_LIMITED)
                frame_free(&f);
        }
        if (f == NULL || f->body_case != SCHAKEL__FRAME__BODY_ACCEPTED ||
            (f->accepted->has_duplicate && f->accepted->duplicate) != duplicate)
            fail_msg("the retried case command (%d): not %s", duplicate,
                     duplicate ? "a duplicate Accepted" : "Accepted");
        frame_free(&f);
    }
    assert_int_equal(schakel_case_list(client, &list, H_TIMEOUT_MS), SCHAKEL_OK);
    assert_int_equal(list->n_cases, accepted + 1);
    schakel_case_list_free(&list);
    for (size_t i = 0; i < FLOOD; i++)
        pb_free(&frames[i]);
    pb_free(&command);
    schakel_close(&client);
    raw_close(&riec);
    h_done(env);
}

/* A loop that cannot go on (another process holds the store's write lock,
 * so each turn waits out its busy timeout) holds few of a connection's
 * unread frames: past SCHAKEL_BROKER_RCVHWM libzmq stops reading the
 * connection, and the rest wait on the client's side. Every frame is
 * still answered once the store can be written again. */
static void test_stalled_loop_holds_few_unread_frames(void **state)
{
    h_env_t *env = *state;
    enum { FLOOD = 600 };
#if defined(__SANITIZE_ADDRESS__)
    /* ASan keeps what is freed in quarantine (256 MiB): this broker frees
     * at once, so that its peak memory is what it really holds */
    const char *asan = getenv("ASAN_OPTIONS");
    char *saved = asan != NULL ? strdup(asan) : NULL, options[512];
    snprintf(options, sizeof options, "%s%squarantine_size_mb=0", saved ? saved : "",
             saved && saved[0] ? ":" : "");
    setenv("ASAN_OPTIONS", options, 1);
    h_broker_start(env);
    if (saved != NULL)
        setenv("ASAN_OPTIONS", saved, 1);
    else
        unsetenv("ASAN_OPTIONS");
    free(saved);
#else
    h_broker_start(env);
#endif
    raw_t *raw = raw_connect(env, H_POLITIE);
    (void)raw_heartbeat(raw, "before the flood");
    long before = h_broker_status_kib(env, "VmHWM");
    sqlite3 *lock = NULL;
    assert_int_equal(sqlite3_open(env->store_path, &lock), SQLITE_OK);
    assert_int_equal(sqlite3_exec(lock, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    long offset = h_log_offset(env);
    for (int i = 0; i < FLOOD; i++) { /* 150 MiB of publishes with bad signatures */
        uint8_t id[16];
        pb_t frame = {0};
        randombytes_buf(id, sizeof id);
        frame_of_size(&frame, id, SCHAKEL_MAX_FRAME_BYTES);
        raw_send_frame(raw, &frame);
    }
    /* the loop's first refusal waited out the lock: the flood waited too */
    if (h_await_log(env, offset, "event=audit.write_failed", H_TIMEOUT_MS) != 0)
        fail_msg("the broker never found the store locked");
    assert_int_equal(sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(lock);
    for (int i = 0; i < FLOOD; i++) {
        Schakel__Frame *f = raw_next(raw, "the flood's answers", SCHAKEL__FRAME__BODY_REJECTED);
        frame_free(&f);
    }
    long grown = h_broker_status_kib(env, "VmHWM") - before;
    if (grown > 80 * 1024)
        fail_msg("the broker's peak memory grew by %ld MiB while its loop stalled", grown / 1024);
    raw_close(&raw);
    h_done(env);
}

/* A burst of tiny invalid frames: each is refused on its own, in order,
 * and logged; the broker answers everyone else meanwhile. */
static void test_burst_of_tiny_invalid_frames(void **state)
{
    h_env_t *env = *state;
    row_env_t re;
    row_env_open(env, &re);
    const char *what = "burst of tiny invalid frames";
    enum { BURST = 2000 };
    /* empty; a key of wire type 7; a varint that never ends; version only */
    static const struct {
        const char *bytes;
        size_t len;
    } tiny[] = {{"", 0}, {"\x07", 1}, {"\xff", 1}, {"\x08\x01", 2}};
    bystanders_before(&re.by, what);
    mark_t mark = mark_take(env);
    int64_t started = hostile_now_ms();
    for (size_t i = 0; i < BURST; i++) {
        pb_t frame = {0};
        pb_put(&frame, tiny[i % 4].bytes, tiny[i % 4].len);
        raw_send_frame(re.ctx.raw, &frame);
    }
    /* The bystanders are served while the burst is being answered. */
    uint8_t id[16];
    bystanders_publish(&re.by, id, what);
    for (size_t i = 0; i < BURST; i++)
        raw_expect_rejected(re.ctx.raw, what, R_INVALID_MESSAGE, NULL, -1, 0);
    int64_t elapsed = hostile_now_ms() - started;
    char needle[320];
    refusal_needle(needle, sizeof needle, HOSTILE, NULL, R_INVALID_MESSAGE, -1);
    const char *needles[] = {needle, NULL};
    size_t logged = log_count_lines(env, mark.log_offset, needles);
    if (logged != BURST)
        fail_msg("%s: %zu refusals logged for %d frames", what, logged, (int)BURST);
    print_message("    %d tiny frames refused and logged in %lld ms\n", (int)BURST,
                  (long long)elapsed);
    (void)raw_settle(re.ctx.raw, what);
    bystanders_receive(&re.by, re.by.pending_id, what);
    re.by.pending = 0;
    bystanders_receive(&re.by, id, what);
    bystanders_after(&re.by, what);
    forward_watch_empty(re.politie, what);
    row_env_close(&re);
    /* The trail took 600 a minute in full and summed up the rest (at the
     * latest at the stop): every refusal logged since the start, and not
     * 2,000 entries. */
    assert_int_equal(h_broker_stop(env), 0);
    const mark_t start = {0, 0};
    char any[160];
    snprintf(any, sizeof any, "event=request.refused principal=%s ", HOSTILE);
    const char *any_needles[] = {any, NULL};
    size_t refused = log_count_lines(env, 0, any_needles);
    int64_t audited = audit_count(env, &start, "request.refused", HOSTILE, "*", "*", NULL) +
                      audit_count(env, &start, "publish.refused", HOSTILE, "*", "*", NULL);
    int64_t summarized = audit_summarized(env, &start, HOSTILE);
    if (refused < BURST || audited < 600 || audited >= BURST ||
        (size_t)(audited + summarized) != refused)
        fail_msg("%s: %lld refusals audited in full and %lld summed up, of %zu logged", what,
                 (long long)audited, (long long)summarized, refused);
    h_done(env);
}

/* ------------------------------------------------------------------ handshakes */

typedef struct handshake_row {
    const char *name;
    const char *key_principal; /* whose key file the client uses */
    const char *refusal;       /* the ZAP handler's reason in the log */
} handshake_row_t;

static const handshake_row_t handshake_rows[] = {
    {"a key the policy does not know", H_UNREGISTERED, "key not registered"},
    {"an operator key on the partner endpoint", H_OPERATOR,
     "operator keys may not use the partner endpoint"},
};

static void curve_key_z85(const h_env_t *env, const char *principal, char out[41])
{
    char err[256];
    keypair_t *key = keys_load_secret(h_key_file(env, principal), err, sizeof err);
    if (!key)
        fail_msg("%s", err);
    keys_public_z85(key->curve_pk, out);
    keys_destroy(&key);
}

/* Refused keys: the handshake ends in ZMTP ERROR (monitor: HANDSHAKE_FAILED_AUTH
 * with ZAP status 400), the client library says SCHAKEL_ERR_AUTH, and the
 * ZAP handler logs auth.refused with the reason and the key. A wrong pinned
 * broker key never reaches the ZAP handler: the broker cannot read the HELLO. */
static void test_refused_keys_at_the_handshake(void **state)
{
    h_env_t *env = *state;
    bystanders_t by;
    bystanders_open(env, &by);
    for (size_t i = 0; i < sizeof handshake_rows / sizeof handshake_rows[0]; i++) {
        const handshake_row_t *row = &handshake_rows[i];
        bystanders_before(&by, row->name);
        char z85[41];
        curve_key_z85(env, row->key_principal, z85);
        mark_t mark = mark_take(env);
        raw_t *r =
            raw_open(env, h_key_file(env, row->key_principal), env->broker_pub, row->key_principal);
        uint32_t value = 0;
        int event = raw_await_handshake(r, H_TIMEOUT_MS, &value);
        if (event != ZMQ_EVENT_HANDSHAKE_FAILED_AUTH || value != 400)
            fail_msg("%s: handshake ended in event 0x%x value %u, expected FAILED_AUTH 400",
                     row->name, event, value);
        raw_close(&r);
        expect_auth_refusal_recorded(env, &mark, row->name, row->refusal, z85);

        schakel_client_t *client = NULL;
        schakel_error_t err;
        schakel_status_t st =
            h_try_connect(env, h_key_file(env, row->key_principal), &client, &err);
        if (st != SCHAKEL_ERR_AUTH)
            fail_msg("%s: the client library says %s (%s), expected SCHAKEL_ERR_AUTH", row->name,
                     schakel_strerror(st), err.text);
        assert_null(client);
        bystanders_after(&by, row->name);
    }

    const char *what = "a registered key pinning the wrong broker key";
    bystanders_before(&by, what);
    raw_t *r = raw_open(env, h_key_file(env, H_GEMEENTE), h_pub_file(env, H_POLITIE), H_GEMEENTE);
    uint32_t value = 0;
    int event = raw_await_handshake(r, H_TIMEOUT_MS, &value);
    if (event == 0 || event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
        fail_msg("%s: handshake ended in event 0x%x", what, event);
    raw_close(&r);
    bystanders_after(&by, what);
    bystanders_close(&by);
    h_done(env);
}

/* ------------------------------------------------------------------ revocation */

static char *text_replaced(const char *text, const char *what, const char *with)
{
    const char *at = strstr(text, what);
    if (!at)
        fail_msg("policy text lacks \"%s\"", what);
    size_t head = (size_t)(at - text);
    char *out = malloc(strlen(text) - strlen(what) + strlen(with) + 1);
    assert_non_null(out);
    memcpy(out, text, head);
    strcpy(out + head, with);
    strcat(out, at + strlen(what));
    return out;
}

/* Keys revoked while connected: woco-maasoever's principal is removed and
 * riec/analyse gets a new key. At the reload both sessions are dropped
 * (the receiving one with its window); every frame on the open connections
 * is refused NOT_PERMITTED; new handshakes with the old keys are refused;
 * the new key works. */
static void test_revoked_keys_are_cut_off(void **state)
{
    h_env_t *env = *state;
    bystanders_t by;
    bystanders_open(env, &by);
    raw_t *removed = raw_connect(env, HOSTILE);
    raw_t *rekeyed = raw_connect(env, H_RIEC);
    (void)raw_settle(removed, "removed principal before");
    (void)raw_settle(rekeyed, "rekeyed principal before");

    /* The removed principal receives with a window of 1: one delivery in
     * flight, one waiting when its key is revoked. */
    schakel_signal_t fire = fire_to_maasoever();
    (void)h_publish_ok(by.publisher, &fire, NULL, NULL, NULL, NULL);
    (void)h_publish_ok(by.publisher, &fire, NULL, NULL, NULL, NULL);
    pb_t frame = {0};
    frame_flow(&frame, 1);
    raw_send_frame(removed, &frame);
    Schakel__Frame *d = raw_next(removed, "window of 1", SCHAKEL__FRAME__BODY_DELIVER);
    uint64_t in_flight = d->deliver->seq;
    frame_free(&d);
    bystanders_before(&by, "revocation");

    char path[256], err[256];
    snprintf(path, sizeof path, "%s/keys/riec-analyse-2", env->dir);
    if (keys_generate(path, err, sizeof err) != 0)
        fail_msg("%s", err);
    char *without = text_replaced(h_policy_header,
                                  "  - id: woco-maasoever/meldingen\n    role: system\n"
                                  "    key_file: keys/woco-maasoever-meldingen.pub\n",
                                  "");
    char *header = text_replaced(without, "keys/riec-analyse.pub", "keys/riec-analyse-2.pub");
    h_env_write_policy(env, "%s%s", header, h_default_rules);
    free(without);
    free(header);
    mark_t mark = mark_take(env);
    assert_int_equal(h_broker_reload(env), 1);
    const char *dropped[] = {"event=policy.sessions_dropped count=2", NULL};
    log_await(env, mark.log_offset, "reload", dropped);
    audit_expect(env, &mark, "reload", "policy.reloaded", NULL, NULL, NULL);

    /* Every frame on the open connections: NOT_PERMITTED, and the delivery
     * that was waiting never comes. */
    mark = mark_take(env);
    frame_heartbeat(&frame);
    raw_send_frame(removed, &frame);
    raw_expect_rejected(removed, "heartbeat after removal", SCHAKEL__REASON__NOT_PERMITTED, NULL,
                        -1, 0);
    expect_refusal_recorded(env, &mark, "heartbeat after removal", HOSTILE, NULL,
                            SCHAKEL__REASON__NOT_PERMITTED, -1);
    pb_t item = {0};
    uint8_t id[16];
    randombytes_buf(id, sizeof id);
    base_item(&item, (int64_t)time(NULL));
    publish_signed(removed->key, id, &item, 1, &frame);
    pb_free(&item);
    raw_send_frame(removed, &frame);
    raw_expect_rejected(removed, "publish after removal", SCHAKEL__REASON__NOT_PERMITTED, NULL, -1,
                        0);
    frame_ack(&frame, &in_flight, 1);
    raw_send_frame(removed, &frame);
    raw_expect_rejected(removed, "ack after removal", SCHAKEL__REASON__NOT_PERMITTED, NULL, -1, 0);
    mark = mark_take(env);
    frame_heartbeat(&frame);
    raw_send_frame(rekeyed, &frame);
    raw_expect_rejected(rekeyed, "heartbeat with a replaced key", SCHAKEL__REASON__NOT_PERMITTED,
                        NULL, -1, 0);
    expect_refusal_recorded(env, &mark, "heartbeat with a replaced key", H_RIEC, NULL,
                            SCHAKEL__REASON__NOT_PERMITTED, -1);
    raw_close(&removed);
    raw_close(&rekeyed);

    /* New handshakes with the old keys are refused; the new key works. */
    const char *old_keys[] = {HOSTILE, H_RIEC};
    for (size_t i = 0; i < 2; i++) {
        char z85[41];
        curve_key_z85(env, old_keys[i], z85);
        mark = mark_take(env);
        raw_t *r = raw_open(env, h_key_file(env, old_keys[i]), env->broker_pub, old_keys[i]);
        uint32_t value = 0;
        int event = raw_await_handshake(r, H_TIMEOUT_MS, &value);
        if (event != ZMQ_EVENT_HANDSHAKE_FAILED_AUTH || value != 400)
            fail_msg("reconnect with the revoked key of %s: event 0x%x value %u", old_keys[i],
                     event, value);
        raw_close(&r);
        expect_auth_refusal_recorded(env, &mark, "reconnect with a revoked key",
                                     "key not registered", z85);
    }
    snprintf(path, sizeof path, "%s/keys/riec-analyse-2.key", env->dir);
    raw_t *renewed = raw_open(env, path, env->broker_pub, H_RIEC);
    uint32_t value = 0;
    if (raw_await_handshake(renewed, H_TIMEOUT_MS, &value) != ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
        fail_msg("the replacement key of %s was not admitted", H_RIEC);
    (void)raw_settle(renewed, "the replacement key");
    raw_close(&renewed);
    bystanders_after(&by, "revocation");
    bystanders_close(&by);
    h_done(env);
}

/* ------------------------------------------------------------------ replays and acks */

/* A message id already accepted from this principal, with other content:
 * DUPLICATE_CONFLICT, and the id stays bound to the original (which is
 * delivered once). The same bytes again: the original Accepted, marked
 * duplicate. Another principal may use the same id; a refused id is not
 * remembered. */
static void test_replayed_message_id_with_other_content(void **state)
{
    h_env_t *env = *state;
    row_env_t re;
    row_env_open(env, &re);
    hostile_ctx_t *ctx = &re.ctx;
    int64_t now = (int64_t)time(NULL);
    static const edit_t other[] = {E_TEXT("summary", "Een andere tekst onder hetzelfde id"),
                                   {EDIT_END, NULL, 0, NULL, 0, 0}};
    static const edit_t denied[] = {E_TEXT("theme", "drugs"), {EDIT_END, NULL, 0, NULL, 0, 0}};
    pb_t original_item = {0}, other_item = {0}, denied_item = {0};
    base_item(&original_item, now);
    signal_item(&other_item, other, now);
    signal_item(&denied_item, denied, now);
    uint8_t id[16], refused_id[16];
    randombytes_buf(id, sizeof id);
    randombytes_buf(refused_id, sizeof refused_id);

    pb_t original = {0}, conflict = {0}, two = {0};
    publish_signed(ctx->raw->key, id, &original_item, 1, &original);
    publish_signed(ctx->raw->key, id, &other_item, 1, &conflict);
    pb_t both[2] = {original_item, other_item};
    publish_signed(ctx->raw->key, id, both, 2, &two);
    raw_send(ctx->raw, &original, 1);
    uint64_t item_seq = raw_expect_accepted(ctx->raw, "the original", id, 1, 0);

    bystanders_before(&re.by, "replay");
    const pb_t *conflicts[] = {&conflict, &two, &conflict};
    const char *names[] = {"same id, other item", "same id, the item and another",
                           "same id, other item, again"};
    for (size_t i = 0; i < 3; i++) {
        mark_t mark = mark_take(env);
        raw_send(ctx->raw, conflicts[i], 1);
        raw_expect_rejected(ctx->raw, names[i], SCHAKEL__REASON__DUPLICATE_CONFLICT, id, -1, 0);
        expect_refusal_recorded(env, &mark, names[i], HOSTILE, id,
                                SCHAKEL__REASON__DUPLICATE_CONFLICT, -1);
    }
    mark_t mark = mark_take(env);
    raw_send(ctx->raw, &original, 1);
    if (raw_expect_accepted(ctx->raw, "the original again", id, 1, 1) != item_seq)
        fail_msg("the repeated publish was answered with another item seq");
    char id_hex[33], needle[200];
    sodium_bin2hex(id_hex, sizeof id_hex, id, 16);
    snprintf(needle, sizeof needle, "event=publish.duplicate principal=%s message_id=%s", HOSTILE,
             id_hex);
    const char *dup_needles[] = {needle, NULL};
    log_await(env, mark.log_offset, "the original again", dup_needles);
    if (audit_count(env, &mark, "publish.duplicate", HOSTILE, id_hex, "*", NULL) != 1)
        fail_msg("the repeated publish has no audit entry");
    /* Delivered once, after all this. */
    forward_watch_expect(re.politie, id, "the original");
    forward_watch_empty(re.politie, "the replays");

    /* Scope is the principal: the bystander publisher may use the same id. */
    schakel_signal_t fire = {.kind = "brandonveilige-situatie",
                             .theme = "brandveiligheid",
                             .area = "GM0935",
                             .recipients = (const char *const[]){"woco-jekerdal"},
                             .n_recipients = 1};
    int duplicate = -1;
    (void)h_publish_ok(re.by.publisher, &fire, id, NULL, NULL, &duplicate);
    assert_int_equal(duplicate, 0);
    bystanders_receive(&re.by, re.by.pending_id, "replay");
    re.by.pending = 0;
    bystanders_receive(&re.by, id, "the same id from another principal");

    /* A refused publish does not use up its id. */
    pb_t refused = {0}, accepted = {0};
    publish_signed(ctx->raw->key, refused_id, &denied_item, 1, &refused);
    publish_signed(ctx->raw->key, refused_id, &original_item, 1, &accepted);
    raw_send(ctx->raw, &refused, 1);
    raw_expect_rejected(ctx->raw, "an id first refused", SCHAKEL__REASON__POLICY_DENIED, refused_id,
                        0, 0);
    raw_send(ctx->raw, &accepted, 1);
    (void)raw_expect_accepted(ctx->raw, "the refused id with valid content", refused_id, 1, 0);
    forward_watch_expect(re.politie, refused_id, "the refused id with valid content");

    (void)raw_settle(ctx->raw, "replay");
    forward_watch_empty(re.politie, "replay");
    bystanders_after(&re.by, "replay");
    pb_t *all[] = {&original_item, &other_item, &denied_item, &original,
                   &conflict,      &two,        &refused,     &accepted};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        pb_free(all[i]);
    row_env_close(&re);
    h_done(env);
}

/* An ack of another principal's delivery: UNKNOWN_DELIVERY naming the seq,
 * the other mailbox untouched, and the ack's other seqs still processed. */
static void test_ack_of_another_principals_delivery(void **state)
{
    h_env_t *env = *state;
    row_env_t re;
    row_env_open(env, &re);
    raw_t *hostile = re.ctx.raw;

    /* The hostile principal's own delivery, received on its raw socket. */
    schakel_signal_t fire = fire_to_maasoever();
    (void)h_publish_ok(re.by.publisher, &fire, NULL, NULL, NULL, NULL);
    pb_t frame = {0};
    frame_flow(&frame, 1);
    raw_send_frame(hostile, &frame);
    Schakel__Frame *d = raw_next(hostile, "own delivery", SCHAKEL__FRAME__BODY_DELIVER);
    uint64_t own = d->deliver->seq;
    frame_free(&d);

    /* The bystander's delivery, received and not yet acked. */
    uint8_t victim_id[16];
    bystanders_publish(&re.by, victim_id, "victim");
    schakel_delivery_t *victim = h_receive(re.by.receiver);
    assert_memory_equal(victim->message_id, victim_id, 16);
    uint64_t seq = victim->seq;
    bystanders_before(&re.by, "foreign ack");

    const uint64_t foreign[] = {seq}, mixed[] = {own, seq}, again[] = {own};
    const struct {
        const char *name;
        const uint64_t *seqs;
        size_t n;
        uint64_t refused;
    } acks[] = {
        {"ack of another principal's delivery", foreign, 1, seq},
        {"ack of its own and another's delivery", mixed, 2, seq},
        {"ack of its own delivery twice", again, 1, own},
    };
    for (size_t i = 0; i < 3; i++) {
        mark_t mark = mark_take(env);
        frame_ack(&frame, acks[i].seqs, acks[i].n);
        raw_send_frame(hostile, &frame);
        raw_expect_rejected(hostile, acks[i].name, SCHAKEL__REASON__UNKNOWN_DELIVERY, NULL, -1,
                            acks[i].refused);
        char needle[320], text[80];
        refusal_needle(needle, sizeof needle, HOSTILE, NULL, SCHAKEL__REASON__UNKNOWN_DELIVERY, -1);
        snprintf(text, sizeof text, "sequence %llu is not a pending delivery",
                 (unsigned long long)acks[i].refused);
        const char *needles[] = {needle, text, NULL};
        log_await(env, mark.log_offset, acks[i].name, needles);
        if (audit_count(env, &mark, "request.refused", HOSTILE, NULL, "",
                        wire_reason_name(SCHAKEL__REASON__UNKNOWN_DELIVERY)) != 1)
            fail_msg("%s: no audit entry for the refused ack", acks[i].name);
        /* Untouched: still in the bystander's mailbox (plus the pending one). */
        if (h_backlog(re.by.receiver) != 2)
            fail_msg("%s: the bystander's mailbox changed", acks[i].name);
    }
    if (raw_settle(hostile, "own ack") != 0)
        fail_msg("the hostile principal's own delivery was not removed by its ack");
    assert_int_equal(schakel_ack(re.by.receiver, seq), SCHAKEL_OK);
    schakel_delivery_free(&victim);
    bystanders_after(&re.by, "foreign ack");
    forward_watch_empty(re.politie, "foreign ack");
    row_env_close(&re);
    h_done(env);
}

/* ------------------------------------------------------------------ credit */

/* Heartbeat, then read until its answer, twice: every Deliver the broker
 * pushed in answer to what came before is then read (pushes follow the
 * replies of a loop turn, so one heartbeat is not enough). Returns the
 * number of Delivers; their seqs go to seqs (at most max). */
static size_t raw_drain_deliveries(raw_t *r, const char *what, uint64_t *seqs, size_t max,
                                   uint64_t *backlog)
{
    size_t n = 0;
    for (int round = 0; round < 2; round++) {
        pb_t frame = {0};
        frame_heartbeat(&frame);
        raw_send_frame(r, &frame);
        for (;;) {
            Schakel__Frame *f = raw_recv(r, H_TIMEOUT_MS);
            if (!f)
                fail_msg("%s: no heartbeat answer", what);
            if (f->body_case == SCHAKEL__FRAME__BODY_HEARTBEAT) {
                *backlog = f->heartbeat->backlog;
                frame_free(&f);
                break;
            }
            if (f->body_case != SCHAKEL__FRAME__BODY_DELIVER) {
                char got[400];
                frame_describe(f, got, sizeof got);
                fail_msg("%s: got %s while draining deliveries", what, got);
            }
            if (n >= max)
                fail_msg("%s: more than %zu deliveries in flight", what, max);
            seqs[n++] = f->deliver->seq;
            frame_free(&f);
        }
    }
    return n;
}

/* Flow{window: 4294967295} is clamped to 1024: with 1100 deliveries
 * waiting, exactly 1024 come unacked, and one more per ack. */
static void test_credit_window_overflow_is_clamped(void **state)
{
    h_env_t *env = *state;
    row_env_t re;
    row_env_open(env, &re);
    enum { BATCH = 220, BATCHES = 5, TOTAL = BATCH * BATCHES };
    static const char *const to_maasoever[] = {"woco-maasoever"};
    schakel_signal_t *signals = calloc(BATCH, sizeof *signals);
    schakel_item_result_t *results = calloc(BATCH, sizeof *results);
    assert_true(signals && results);
    for (size_t i = 0; i < BATCH; i++)
        signals[i] = (schakel_signal_t){.kind = "brandonveilige-situatie",
                                        .theme = "brandveiligheid",
                                        .area = "GM0935",
                                        .recipients = to_maasoever,
                                        .n_recipients = 1};
    for (int b = 0; b < BATCHES; b++) {
        schakel_status_t st = schakel_publish(re.by.publisher, NULL, signals, BATCH, NULL, NULL,
                                              results, NULL, H_TIMEOUT_MS);
        if (st != SCHAKEL_OK)
            fail_msg("batch %d: %s", b, schakel_last_error(re.by.publisher)->text);
        for (size_t i = 0; i < BATCH; i++)
            assert_int_equal(results[i].recipients, 1);
    }
    free(signals);
    free(results);
    raw_t *hostile = re.ctx.raw;
    if (raw_heartbeat(hostile, "before the flow") != TOTAL)
        fail_msg("the mailbox does not hold the %d deliveries", (int)TOTAL);

    bystanders_before(&re.by, "credit overflow");
    pb_t frame = {0};
    frame_flow(&frame, UINT32_MAX);
    raw_send_frame(hostile, &frame);
    uint64_t *seqs = calloc(TOTAL, sizeof *seqs), backlog = 0;
    assert_non_null(seqs);
    size_t n = raw_drain_deliveries(hostile, "window 4294967295", seqs, TOTAL, &backlog);
    if (n != SCHAKEL_MAX_WINDOW)
        fail_msg("Flow{window: 4294967295}: %zu deliveries in flight, expected %u", n,
                 SCHAKEL_MAX_WINDOW);
    for (size_t i = 1; i < n; i++)
        if (seqs[i] <= seqs[i - 1])
            fail_msg("deliveries out of order: %llu after %llu", (unsigned long long)seqs[i],
                     (unsigned long long)seqs[i - 1]);
    assert_int_equal(backlog, TOTAL);
    uint64_t first = seqs[0];
    frame_ack(&frame, &first, 1);
    raw_send_frame(hostile, &frame);
    n = raw_drain_deliveries(hostile, "after one ack", seqs, TOTAL, &backlog);
    if (n != 1)
        fail_msg("one ack let %zu more deliveries in flight, expected 1", n);
    assert_int_equal(backlog, TOTAL - 1);
    free(seqs);
    bystanders_after(&re.by, "credit overflow");
    forward_watch_empty(re.politie, "credit overflow");
    row_env_close(&re);
    h_done(env);
}

/* ------------------------------------------------------------------ floods and connections */

/* Everything the flood test sends: frames kept byte for byte for retries. */
typedef struct flood {
    uint8_t (*ids)[16];
    pb_t *frames;
    int *state; /* 0 unanswered, 1 accepted, 2 rate limited, 3 delivered */
    size_t n;
} flood_t;

static void flood_build(flood_t *f, size_t n, const keypair_t *key, const edit_t *edits)
{
    f->n = n;
    f->ids = calloc(n, sizeof *f->ids);
    f->frames = calloc(n, sizeof *f->frames);
    f->state = calloc(n, sizeof *f->state);
    assert_true(f->ids && f->frames && f->state);
    for (size_t i = 0; i < n; i++) {
        pb_t item = {0};
        signal_item(&item, edits, (int64_t)time(NULL));
        randombytes_buf(f->ids[i], 16);
        publish_signed(key, f->ids[i], &item, 1, &f->frames[i]);
        pb_free(&item);
    }
}

static void flood_free(flood_t *f)
{
    for (size_t i = 0; i < f->n; i++)
        pb_free(&f->frames[i]);
    free(f->ids);
    free(f->frames);
    free(f->state);
}

/* Read the answer to publish i: Accepted, or RATE_LIMITED naming its id. */
static void flood_answer(flood_t *f, raw_t *r, size_t i, const char *what)
{
    Schakel__Frame *a = raw_recv(r, H_TIMEOUT_MS);
    if (!a)
        fail_msg("%s: publish %zu got no answer", what, i);
    if (a->body_case == SCHAKEL__FRAME__BODY_ACCEPTED && a->accepted->message_id.len == 16 &&
        memcmp(a->accepted->message_id.data, f->ids[i], 16) == 0 && !a->accepted->has_duplicate) {
        f->state[i] = 1;
    } else if (a->body_case == SCHAKEL__FRAME__BODY_REJECTED && a->rejected->has_reason &&
               a->rejected->reason == SCHAKEL__REASON__RATE_LIMITED &&
               a->rejected->has_message_id && a->rejected->message_id.len == 16 &&
               memcmp(a->rejected->message_id.data, f->ids[i], 16) == 0 &&
               a->rejected->item_index == -1) {
        f->state[i] = 2;
    } else {
        char got[400];
        frame_describe(a, got, sizeof got);
        fail_msg("%s: publish %zu was answered %s", what, i, got);
    }
    frame_free(&a);
}

static size_t flood_count(const flood_t *f, int state)
{
    size_t n = 0;
    for (size_t i = 0; i < f->n; i++)
        n += f->state[i] == state;
    return n;
}

/* Receive every accepted publish of the flood at the client, exactly once. */
static void flood_receive(flood_t *f, schakel_client_t *client, const char *what)
{
    size_t owed = flood_count(f, 1);
    for (size_t k = 0; k < owed; k++) {
        schakel_delivery_t *d = h_receive(client);
        size_t i = 0;
        while (i < f->n && memcmp(f->ids[i], d->message_id, 16) != 0)
            i++;
        if (i == f->n || f->state[i] != 1)
            fail_msg("%s: a delivery that is not an accepted, undelivered publish of the flood",
                     what);
        f->state[i] = 3;
        assert_int_equal(schakel_ack(client, d->seq), SCHAKEL_OK);
        schakel_delivery_free(&d);
    }
    if (h_backlog(client) != 0)
        fail_msg("%s: more deliveries than accepted publishes", what);
}

static size_t log_count_refusals(const h_env_t *env, long offset, const char *principal,
                                 Schakel__Reason reason)
{
    char who[200], why[64];
    snprintf(who, sizeof who, "event=request.refused principal=%s ", principal);
    snprintf(why, sizeof why, " reason=%s ", wire_reason_name(reason));
    const char *needles[] = {who, why, NULL};
    return log_count_lines(env, offset, needles);
}

/* --max-publish-rate 20: 60 publishes sent at once get some RATE_LIMITED
 * (each naming its id, each logged), every accepted one is delivered, and
 * a second principal publishing at the same time is not limited. The
 * limited ones, retried with the same bytes after a pause, get through. */
static void test_publish_flood_is_rate_limited(void **state)
{
    h_env_t *env = *state;
    const char *extra[] = {"--max-publish-rate", "20", NULL};
    h_broker_start_with(env, extra);
    row_env_t re;
    row_env_open(env, &re);
    enum { FLOOD = 60, CALM = 15, RATE = 20 };
    static const edit_t burglary[] = {E_TEXT("sender", H_POLITIE), E_TEXT("kind", "inbraakreeks"),
                                      E_TEXT("theme", "woninginbraak"),
                                      E_TEXT("recipients", "gemeente")};
    raw_t *calm = raw_connect(env, H_POLITIE);
    schakel_client_t *gemeente = h_connect(env, H_GEMEENTE);
    assert_int_equal(schakel_subscribe(gemeente, 0), SCHAKEL_OK);
    assert_int_equal(h_backlog(gemeente), 0);
    flood_t flood, quiet;
    flood_build(&flood, FLOOD, re.ctx.raw->key, NULL);
    flood_build(&quiet, CALM, calm->key, burglary);
    bystanders_before(&re.by, "flood");

    mark_t mark = mark_take(env);
    int64_t started = hostile_now_ms();
    for (size_t i = 0, j = 0; i < FLOOD; i++) {
        raw_send(re.ctx.raw, &flood.frames[i], 1);
        if (i % 4 == 0 && j < CALM)
            raw_send(calm, &quiet.frames[j++], 1);
    }
    for (size_t i = 0; i < FLOOD; i++)
        flood_answer(&flood, re.ctx.raw, i, "flood");
    int64_t elapsed = hostile_now_ms() - started;
    for (size_t j = 0; j < CALM; j++)
        flood_answer(&quiet, calm, j, "the other principal");
    size_t accepted = flood_count(&flood, 1), limited = flood_count(&flood, 2);
    print_message("    flood: %zu accepted, %zu rate limited in %lld ms\n", accepted, limited,
                  (long long)elapsed);
    if (limited == 0 || accepted == 0)
        fail_msg("flood of %d: %zu accepted, %zu limited; expected both", (int)FLOOD, accepted,
                 limited);
    /* A second's worth may burst, then RATE per second. */
    if ((int64_t)accepted > RATE + RATE * elapsed / 1000 + 1)
        fail_msg("flood: %zu accepted in %lld ms at %d per second", accepted, (long long)elapsed,
                 (int)RATE);
    if (flood_count(&quiet, 1) != CALM)
        fail_msg("the other principal was limited: %zu of %d accepted", flood_count(&quiet, 1),
                 (int)CALM);
    const char *limited_name = wire_reason_name(SCHAKEL__REASON__RATE_LIMITED);
    size_t logged =
        log_count_refusals(env, mark.log_offset, HOSTILE, SCHAKEL__REASON__RATE_LIMITED);
    int64_t audited = audit_count(env, &mark, "publish.refused", HOSTILE, "*", "", limited_name);
    if (logged != limited || audited != (int64_t)limited)
        fail_msg("flood: %zu refusals, %zu logged, %lld audited", limited, logged,
                 (long long)audited);
    assert_int_equal(
        log_count_refusals(env, mark.log_offset, H_POLITIE, SCHAKEL__REASON__RATE_LIMITED), 0);
    assert_int_equal(audit_count(env, &mark, "publish.refused", H_POLITIE, "*", "*", limited_name),
                     0);
    flood_receive(&flood, re.politie, "flood");
    flood_receive(&quiet, gemeente, "the other principal");

    /* Retried with the same bytes, after a pause as a client would make. */
    for (int round = 0; round < 50 && flood_count(&flood, 2) > 0; round++) {
        struct timespec pause = {0, 200 * 1000 * 1000};
        nanosleep(&pause, NULL);
        for (size_t i = 0; i < FLOOD; i++) {
            if (flood.state[i] != 2)
                continue;
            raw_send(re.ctx.raw, &flood.frames[i], 1);
            flood_answer(&flood, re.ctx.raw, i, "retry");
        }
        flood_receive(&flood, re.politie, "retry");
    }
    if (flood_count(&flood, 3) != FLOOD)
        fail_msg("after retries %zu of %d publishes were delivered", flood_count(&flood, 3),
                 (int)FLOOD);
    (void)raw_settle(re.ctx.raw, "flood");
    bystanders_after(&re.by, "flood");
    flood_free(&flood);
    flood_free(&quiet);
    raw_close(&calm);
    schakel_close(&gemeente);
    row_env_close(&re);
    h_done(env);
}

/* A round trip on each: these connections were active within the last
 * second, so none of them may make room for another. */
static void keep_active(raw_t *const *conns, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        (void)raw_heartbeat(conns[i], what);
}

static void expect_too_many(const h_env_t *env, raw_t *r, const char *what)
{
    mark_t mark = mark_take(env);
    pb_t frame = {0};
    frame_heartbeat(&frame);
    raw_send_frame(r, &frame);
    raw_expect_rejected(r, what, SCHAKEL__REASON__TOO_MANY_CONNECTIONS, NULL, -1, 0);
    expect_refusal_recorded(env, &mark, what, HOSTILE, NULL, SCHAKEL__REASON__TOO_MANY_CONNECTIONS,
                            -1);
}

/* --max-connections 3: while three connections of one principal are
 * active, a fourth completes its handshake but its every frame is refused
 * TOO_MANY_CONNECTIONS; the three keep publishing and receiving. A
 * connection left behind (closed by its client) makes room once it has
 * been quiet for SCHAKEL_SESSION_ACTIVE_MS. */
static void test_connection_cap_per_principal(void **state)
{
    h_env_t *env = *state;
    const char *extra[] = {"--max-connections", "3", NULL};
    h_broker_start_with(env, extra);
    bystanders_t by;
    bystanders_open(env, &by);
    schakel_client_t *politie = forward_watch_open(env);
    raw_t *conns[3];
    for (size_t i = 0; i < 3; i++) {
        conns[i] = raw_connect(env, HOSTILE);
        (void)raw_settle(conns[i], "one of three connections");
    }
    const char *what = "a fourth connection";
    bystanders_before(&by, what);
    raw_t *fourth = raw_connect(env, HOSTILE);
    keep_active(conns, 3, what);
    expect_too_many(env, fourth, what);
    uint8_t id[16];
    randombytes_buf(id, sizeof id);
    pb_t item = {0}, frame = {0};
    base_item(&item, (int64_t)time(NULL));
    publish_signed(fourth->key, id, &item, 1, &frame);
    keep_active(conns, 3, what);
    raw_send_frame(fourth, &frame);
    raw_expect_rejected(fourth, "a publish on the fourth connection",
                        SCHAKEL__REASON__TOO_MANY_CONNECTIONS, NULL, -1, 0);
    forward_watch_empty(politie, what);

    /* The three publish, and one of them receives. */
    for (size_t i = 0; i < 3; i++) {
        randombytes_buf(id, sizeof id);
        publish_signed(conns[i]->key, id, &item, 1, &frame);
        raw_send_frame(conns[i], &frame);
        (void)raw_expect_accepted(conns[i], "one of the three publishes", id, 1, 0);
        forward_watch_expect(politie, id, "one of the three publishes");
    }
    pb_free(&item);
    frame_flow(&frame, 0);
    raw_send_frame(conns[0], &frame);
    schakel_signal_t fire = fire_to_maasoever();
    (void)h_publish_ok(by.publisher, &fire, NULL, id, NULL, NULL);
    Schakel__Frame *d =
        raw_next(conns[0], "one of the three receives", SCHAKEL__FRAME__BODY_DELIVER);
    assert_memory_equal(d->deliver->message_id.data, id, 16);
    uint64_t seq = d->deliver->seq;
    frame_free(&d);
    frame_ack(&frame, &seq, 1);
    raw_send_frame(conns[0], &frame);
    if (raw_heartbeat(conns[0], "one of the three acks") != 0)
        fail_msg("the ack on one of the three connections did not remove the delivery");
    keep_active(conns, 3, what);
    expect_too_many(env, fourth, "the fourth connection later");

    /* A client that reconnects leaves its old connection behind; once that
     * one has been quiet for a second it makes room. The wait is the rule
     * itself: there is no event to wait for. */
    int64_t quiet_from = hostile_now_ms();
    raw_close(&conns[2]);
    int64_t until = quiet_from + SCHAKEL_SESSION_ACTIVE_MS + 100;
    while (hostile_now_ms() < until) {
        struct timespec pause = {0, 50 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    keep_active(conns, 2, "after the reconnect");
    (void)raw_settle(fourth, "the fourth takes the quiet one's place");
    conns[2] = fourth;
    fourth = NULL;
    raw_t *fifth = raw_connect(env, HOSTILE);
    keep_active(conns, 3, "a fifth connection");
    expect_too_many(env, fifth, "a fifth connection");
    raw_close(&fifth);
    for (size_t i = 0; i < 3; i++) {
        raw_assert_connected(conns[i], what);
        raw_close(&conns[i]);
    }
    bystanders_after(&by, what);
    schakel_close(&politie);
    bystanders_close(&by);
    h_done(env);
}

/* ------------------------------------------------------------------ idle connections */

/* Wait for r's connection to close (within timeout_ms). With
 * `no_handshake`, its handshake must neither succeed nor be refused for
 * good (an ERROR, FAILED_AUTH): a temporary refusal (ZAP 300) closes it
 * silently. Returns when it closed. */
static int64_t raw_await_closed(raw_t *r, int timeout_ms, int no_handshake, const char *what)
{
    int64_t deadline = hostile_now_ms() + timeout_ms;
    int before = r->disconnects;
    while (r->disconnects == before) {
        if (hostile_left_ms(deadline) <= 0)
            fail_msg("%s: still connected after %d ms", what, timeout_ms);
        uint32_t value = 0;
        int event = raw_event(r, hostile_left_ms(deadline), &value);
        if (no_handshake && event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
            fail_msg("%s: the handshake succeeded", what);
        if (no_handshake && event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
            fail_msg("%s: refused for good (FAILED_AUTH %u), not for now", what, value);
    }
    return hostile_now_ms();
}

/* connection_idle_timeout 1s, max_silent_connections 1: of two
 * connections that send no frame after their handshake, the older is
 * kept (the allowance) and the newer closed once that second has passed.
 * Connections that served frames stay, however long they are quiet, while
 * their principal is within its cap: a receiving one (delivered to
 * afterwards), a raw one that sent one Heartbeat, and a libschakel client
 * (which publishes afterwards without having reconnected). */
static void test_silent_connections_are_closed(void **state)
{
    h_env_t *env = *state;
    const char *extra[] = {"--set", "connection_idle_timeout=1s", "--set",
                           "max_silent_connections=1", NULL};
    h_broker_start_with(env, extra);
    long offset = h_log_offset(env);
    raw_t *receiver = raw_connect(env, HOSTILE);
    pb_t frame = {0};
    frame_flow(&frame, 0);
    raw_send_frame(receiver, &frame);
    (void)raw_settle(receiver, "the receiver");
    schakel_client_t *brandweer = h_connect(env, H_BRANDWEER);
    raw_t *quiet = raw_connect(env, HOSTILE);
    (void)raw_heartbeat(quiet, "the quiet connection's one frame");
    raw_t *kept = raw_connect(env, HOSTILE);
    /* opened after the others were last used: when it is closed, they
     * have been quiet for longer */
    int64_t opened = hostile_now_ms();
    raw_t *silent = raw_connect(env, HOSTILE);
    int64_t closed = raw_await_closed(silent, 1000 + H_TIMEOUT_MS, 0, "a second silent connection");
    if (closed - opened <= 1000)
        fail_msg("closed %lld ms after its handshake, before the idle timeout (1000 ms)",
                 (long long)(closed - opened));
    if (h_await_log(env, offset, "event=connections.closed_idle", H_TIMEOUT_MS) != 0)
        fail_msg("no connections.closed_idle line in the broker's log");
    print_message("    a silent connection closed %lld ms after its handshake (timeout 1000 ms)\n",
                  (long long)(closed - opened));

    raw_assert_connected(kept, "the older silent connection (within the allowance)");
    raw_assert_connected(quiet, "a quiet connection that sent a frame");
    (void)raw_heartbeat(quiet, "the quiet connection later");
    raw_assert_connected(receiver, "the receiving connection");
    schakel_signal_t fire = fire_to_maasoever();
    uint8_t id[16];
    (void)h_publish_ok(brandweer, &fire, NULL, id, NULL, NULL);
    Schakel__Frame *d = raw_next(receiver, "the receiver", SCHAKEL__FRAME__BODY_DELIVER);
    assert_memory_equal(d->deliver->message_id.data, id, 16);
    frame_free(&d);
    raw_assert_connected(receiver, "the receiving connection");
    int admitted = h_log_count(env, offset, "event=auth.admitted principal=" H_BRANDWEER);
    if (admitted != 1)
        fail_msg("the libschakel client was admitted %d times: its connection was closed",
                 admitted);
    schakel_close(&brandweer);
    raw_close(&silent);
    raw_close(&kept);
    raw_close(&quiet);
    raw_close(&receiver);
    h_done(env);
}

/* A libschakel client that makes no call while the broker restarts
 * reconnects by itself and holds a silent connection (it sends only from
 * within a call): within the allowance it is not closed and reconnected
 * again and again, and its next publish goes out on it. */
static void test_idle_client_after_a_restart_is_kept(void **state)
{
    h_env_t *env = *state;
    const char *extra[] = {"--set", "connection_idle_timeout=1s", "--set",
                           "max_silent_connections=1", NULL};
    h_broker_start_with(env, extra);
    schakel_client_t *brandweer = h_connect(env, H_BRANDWEER);
    char endpoint[sizeof env->endpoint], problem[256];
    snprintf(endpoint, sizeof endpoint, "%s", env->endpoint);
    h_broker_kill9(env);
    long offset = h_log_offset(env);
    if (h_broker_try_start_with(env, endpoint, extra, problem, sizeof problem) != 0)
        fail_msg("restart: %s", problem);
    if (h_await_log(env, offset, "event=auth.admitted principal=" H_BRANDWEER, H_TIMEOUT_MS) != 0)
        fail_msg("the idle client did not reconnect by itself");
    /* a newer silent connection beyond the allowance: once it is closed,
     * the client's (older) was past the timeout in the same pass */
    raw_t *silent = raw_connect(env, HOSTILE);
    (void)raw_await_closed(silent, 1000 + H_TIMEOUT_MS, 0, "a newer silent connection");
    raw_close(&silent);
    int admitted = h_log_count(env, offset, "event=auth.admitted principal=" H_BRANDWEER);
    if (admitted != 1)
        fail_msg("the idle client was admitted %d times after the restart: closed and "
                 "reconnected",
                 admitted);
    schakel_signal_t fire = fire_to_maasoever();
    (void)h_publish_ok(brandweer, &fire, NULL, NULL, NULL, NULL);
    schakel_close(&brandweer);
    h_done(env);
}

/* connection_idle_timeout 1s: a connection that served frames with a key
 * a reload revoked is closed once that second has passed, though it sends
 * nothing more (it need not hold a session: the broker keeps who each
 * connection served). */
static void test_revoked_connection_is_closed(void **state)
{
    h_env_t *env = *state;
    const char *extra[] = {"--set", "connection_idle_timeout=1s", NULL};
    h_broker_start_with(env, extra);
    raw_t *removed = raw_connect(env, HOSTILE);
    (void)raw_settle(removed, "before the reload");
    raw_t *kept = raw_connect(env, H_OM);
    (void)raw_settle(kept, "another principal before the reload");
    char *without = text_replaced(h_policy_header,
                                  "  - id: woco-maasoever/meldingen\n    role: system\n"
                                  "    key_file: keys/woco-maasoever-meldingen.pub\n",
                                  "");
    h_env_write_policy(env, "%s%s", without, h_default_rules);
    free(without);
    long offset = h_log_offset(env);
    int64_t revoked = hostile_now_ms();
    assert_int_equal(h_broker_reload(env), 1);
    if (h_await_log(env, offset, "event=connections.revoked count=1", H_TIMEOUT_MS) != 0)
        fail_msg("no connections.revoked line after the reload");
    int64_t closed =
        raw_await_closed(removed, 1000 + H_TIMEOUT_MS, 0, "a revoked key's connection");
    if (closed - revoked <= 1000)
        fail_msg("closed %lld ms after the reload, before the idle timeout",
                 (long long)(closed - revoked));
    raw_assert_connected(kept, "another principal's connection");
    (void)raw_settle(kept, "another principal after the reload");
    raw_close(&removed);
    raw_close(&kept);
    h_done(env);
}

/* --max-connections 2: a principal that holds more connections that
 * served frames (the session cap let a newer one in once the oldest had
 * been quiet for a second) gets its least recently used quiet one closed;
 * its two most recent stay and are served. */
static void test_connections_over_the_cap_are_closed(void **state)
{
    h_env_t *env = *state;
    const char *extra[] = {"--max-connections", "2", NULL};
    h_broker_start_with(env, extra);
    raw_t *oldest = raw_connect(env, HOSTILE);
    (void)raw_heartbeat(oldest, "the oldest connection");
    raw_t *second = raw_connect(env, HOSTILE);
    (void)raw_heartbeat(second, "the second connection");
    /* The session cap lets a third in once one of the two has been quiet
     * for SCHAKEL_SESSION_ACTIVE_MS: the wait is the rule itself. */
    int64_t until = hostile_now_ms() + SCHAKEL_SESSION_ACTIVE_MS + 100;
    while (hostile_now_ms() < until) {
        struct timespec pause = {0, 50 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    (void)raw_heartbeat(second, "the second connection again");
    raw_t *third = raw_connect(env, HOSTILE);
    (void)raw_heartbeat(third, "a third connection");
    (void)raw_await_closed(oldest, 2000 + H_TIMEOUT_MS, 0, "the least recently used connection");
    raw_assert_connected(second, "the second connection");
    raw_assert_connected(third, "the third connection");
    (void)raw_heartbeat(second, "the second connection after the close");
    (void)raw_heartbeat(third, "the third connection after the close");
    raw_close(&oldest);
    raw_close(&second);
    raw_close(&third);
    h_done(env);
}

/* Until what was sent so far has been quiet for SCHAKEL_SESSION_ACTIVE_MS:
 * from then on a new connection's first frame at the cap may end one of
 * those sessions to make room. The wait is the rule itself: there is no
 * event to wait for. */
static void await_sessions_quiet(void)
{
    int64_t until = hostile_now_ms() + SCHAKEL_SESSION_ACTIVE_MS + 100;
    while (hostile_now_ms() < until) {
        struct timespec pause = {0, 50 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}

/* The next frame on the receiving connection r is the delivery of `seq`,
 * sent for the first time. When none comes, says whether `standby` took
 * receiving over (it then gets what was in flight to r, sent again). */
static void expect_first_delivery(raw_t *r, uint64_t seq, schakel_client_t *standby,
                                  const char *what)
{
    Schakel__Frame *f = raw_recv(r, H_TIMEOUT_MS);
    if (f == NULL) {
        schakel_delivery_t *d = NULL;
        if (schakel_receive(standby, &d, H_TIMEOUT_MS) == SCHAKEL_OK) {
            unsigned long long got = (unsigned long long)d->seq;
            int again = d->redelivery;
            schakel_delivery_free(&d);
            fail_msg("%s: receiving moved to a standby, which got seq %llu (redelivery %d)", what,
                     got, again);
        }
        fail_msg("%s: no delivery on the receiving connection within %d ms", what, H_TIMEOUT_MS);
    }
    char got[400];
    frame_describe(f, got, sizeof got);
    int again = f->body_case == SCHAKEL__FRAME__BODY_DELIVER && f->deliver->has_redelivery &&
                f->deliver->redelivery;
    if (f->body_case != SCHAKEL__FRAME__BODY_DELIVER || f->deliver->seq != seq || again)
        fail_msg("%s: got %s%s, expected seq %llu sent for the first time", what, got,
                 again ? " (redelivery)" : "", (unsigned long long)seq);
    frame_free(&f);
}

/* The next deliveries of `client` are seqs[0..n), each flagged as sent
 * before; each is acked. */
static void expect_sent_again(schakel_client_t *client, const uint64_t *seqs, size_t n,
                              const char *what)
{
    for (size_t i = 0; i < n; i++) {
        schakel_delivery_t *d = h_receive(client);
        if (d->seq != seqs[i] || !d->redelivery)
            fail_msg("%s: got seq %llu (redelivery %d), expected seq %llu sent again", what,
                     (unsigned long long)d->seq, d->redelivery, (unsigned long long)seqs[i]);
        assert_int_equal(schakel_ack(client, d->seq), SCHAKEL_OK);
        schakel_delivery_free(&d);
    }
    assert_int_equal(h_backlog(client), 0);
}

/* --max-connections 2: a libschakel client of woco-maasoever that sent
 * Flow, a raw connection whose later Flow takes receiving over (the
 * client waits as a standby), and a third connection that sends a
 * Heartbeat (its first frame ends the standby's quiet session; the claim
 * stays with its connection). Over the cap the one without a claim is
 * closed, though used after the standby: had the standby been closed, its
 * client would reconnect at its next call and send Flow again, taking
 * receiving over and getting what was in flight once more. The standby
 * takes over when the receiving connection closes. */
static void test_over_the_cap_a_standby_is_not_closed(void **state)
{
    h_env_t *env = *state;
    const char *extra[] = {"--max-connections", "2", NULL};
    h_broker_start_with(env, extra);
    schakel_client_t *brandweer = h_connect(env, H_BRANDWEER);
    schakel_client_t *standby = h_connect(env, HOSTILE);
    assert_int_equal(schakel_subscribe(standby, 0), SCHAKEL_OK);
    assert_int_equal(h_backlog(standby), 0); /* its Flow is read */
    raw_t *active = raw_connect(env, HOSTILE);
    pb_t frame = {0};
    frame_flow(&frame, 4);
    raw_send_frame(active, &frame);
    (void)raw_settle(active, "the receiving connection's Flow");
    schakel_signal_t fire = fire_to_maasoever();
    uint64_t seqs[2];
    seqs[0] = h_publish_ok(brandweer, &fire, NULL, NULL, NULL, NULL);
    expect_first_delivery(active, seqs[0], standby, "the first delivery"); /* not acked */
    await_sessions_quiet();
    long offset = h_log_offset(env);
    raw_t *busy = raw_connect(env, HOSTILE);
    (void)raw_heartbeat(busy, "a connection without a claim");
    if (h_await_log(env, offset, "event=connections.closed_idle connections=1",
                    2000 + H_TIMEOUT_MS) != 0)
        fail_msg("no connection of the three was closed at the cap");
    /* In a call, a standby whose connection was closed reconnects and
     * sends Flow again; its new connection's first frame can end the
     * other's session once that is quiet. */
    await_sessions_quiet();
    assert_int_equal(h_backlog(standby), 1);
    seqs[1] = h_publish_ok(brandweer, &fire, NULL, NULL, NULL, NULL);
    expect_first_delivery(active, seqs[1], standby, "a delivery after the close");
    (void)raw_await_closed(busy, H_TIMEOUT_MS, 0, "the connection without a claim");
    raw_assert_connected(active, "the receiving connection");
    raw_close(&active);
    expect_sent_again(standby, seqs, 2, "the standby once the receiving connection closed");
    raw_close(&busy);
    schakel_close(&standby);
    schakel_close(&brandweer);
    h_done(env);
}

/* --max-connections 2, and three clients of woco-maasoever that receive:
 * a libschakel client (first), a raw connection whose later Flow takes
 * receiving over, and a second libschakel client whose Flow would give
 * the principal three claims to receive. That Flow waits as a standby
 * (flow.standby). The cap then closes the least recently used standby,
 * the first client's, which reconnects at its next call and sends Flow
 * again: that one waits too. Receiving stays on the raw connection, with
 * nothing sent again, until it closes; then the latest standby gets all
 * that is unacked, flagged as sent before. */
static void test_flows_over_the_cap_stand_by(void **state)
{
    h_env_t *env = *state;
    const char *extra[] = {"--max-connections", "2", NULL};
    h_broker_start_with(env, extra);
    schakel_client_t *brandweer = h_connect(env, H_BRANDWEER);
    schakel_client_t *first = h_connect(env, HOSTILE);
    assert_int_equal(schakel_subscribe(first, 0), SCHAKEL_OK);
    assert_int_equal(h_backlog(first), 0);
    raw_t *active = raw_connect(env, HOSTILE);
    pb_t frame = {0};
    frame_flow(&frame, 4);
    raw_send_frame(active, &frame);
    (void)raw_settle(active, "the receiving connection's Flow"); /* two claims: it takes over */
    schakel_signal_t fire = fire_to_maasoever();
    uint64_t seqs[3];
    seqs[0] = h_publish_ok(brandweer, &fire, NULL, NULL, NULL, NULL);
    expect_first_delivery(active, seqs[0], first, "the first delivery"); /* not acked */
    await_sessions_quiet(); /* the second's first frame ends the first's session */
    long offset = h_log_offset(env);
    schakel_client_t *second = h_connect(env, HOSTILE);
    assert_int_equal(schakel_subscribe(second, 0), SCHAKEL_OK);
    assert_int_equal(h_backlog(second), 1);
    if (h_await_log(env, offset, "event=flow.standby principal=" HOSTILE " cap=2", H_TIMEOUT_MS) !=
        0)
        fail_msg("the second client's Flow, a third claim, did not stand by");
    seqs[1] = h_publish_ok(brandweer, &fire, NULL, NULL, NULL, NULL);
    expect_first_delivery(active, seqs[1], second, "a delivery after the third Flow");

    if (h_await_log(env, offset, "event=connections.closed_idle connections=1",
                    2000 + H_TIMEOUT_MS) != 0)
        fail_msg("no standby was closed with three claims over a cap of two");
    await_sessions_quiet(); /* the first's new connection ends the second's session */
    long again = h_log_offset(env);
    assert_int_equal(h_backlog(first), 2); /* reconnected in this call, its Flow sent again */
    if (h_await_log(env, again, "event=flow.standby principal=" HOSTILE " cap=2", H_TIMEOUT_MS) !=
        0)
        fail_msg("the first client's Flow after its reconnect did not stand by");
    seqs[2] = h_publish_ok(brandweer, &fire, NULL, NULL, NULL, NULL);
    expect_first_delivery(active, seqs[2], first, "a delivery after the first reconnected");
    raw_assert_connected(active, "the receiving connection");
    raw_close(&active);
    expect_sent_again(first, seqs, 3, "the latest standby once the receiving connection closed");
    schakel_close(&second);
    schakel_close(&first);
    schakel_close(&brandweer);
    h_done(env);
}

/* max_handshakes_per_minute 3: a principal's fourth handshake within the
 * minute is refused for now (ZAP 300: closed without an ERROR, the client
 * tries again later) and recorded; its three connections and other
 * principals go on. */
static void test_handshakes_are_rationed_per_principal(void **state)
{
    h_env_t *env = *state;
    const char *extra[] = {"--set", "max_handshakes_per_minute=3", NULL};
    h_broker_start_with(env, extra);
    bystanders_t by;
    bystanders_open(env, &by);
    raw_t *conns[3];
    for (size_t i = 0; i < 3; i++) {
        conns[i] = raw_connect(env, HOSTILE);
        (void)raw_settle(conns[i], "one of three connections");
    }
    const char *what = "a fourth handshake within the minute";
    bystanders_before(&by, what);
    char z85[41];
    curve_key_z85(env, HOSTILE, z85);
    mark_t mark = mark_take(env);
    raw_t *fourth = raw_open(env, h_key_file(env, HOSTILE), env->broker_pub, HOSTILE);
    (void)raw_await_closed(fourth, H_TIMEOUT_MS, 1, what);
    raw_close(&fourth);
    expect_auth_refusal_recorded(env, &mark, what, ZAP_WHY_THROTTLED, z85);
    for (size_t i = 0; i < 3; i++) {
        (void)raw_settle(conns[i], "the three after the fourth");
        raw_assert_connected(conns[i], what);
        raw_close(&conns[i]);
    }
    bystanders_after(&by, what);
    bystanders_close(&by);
    h_done(env);
}

/* ------------------------------------------------------------------ slow handshakes */

static int tcp_connect_endpoint(const char *endpoint)
{
    const char *colon = strrchr(endpoint, ':');
    assert_non_null(colon);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        fail_msg("connect to %s: %s", endpoint, strerror(errno));
    return fd;
}

/* Read (and drop) until the peer closes fd. Returns 1 once closed, 0 if
 * still open at the deadline. */
static int tcp_await_close(int fd, int64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, hostile_left_ms(deadline));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        char buf[512];
        ssize_t got = read(fd, buf, sizeof buf);
        if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN))
            return 1;
    }
}

/* Raw TCP connections that never finish the ZMTP/CURVE handshake (silent,
 * a partial greeting, a whole greeting and then nothing) do not keep
 * anyone else out, and the broker closes each after its handshake
 * interval. */
static void test_slow_handshakes_are_closed(void **state)
{
    h_env_t *env = *state;
    bystanders_t by;
    bystanders_open(env, &by);
    enum { PER_KIND = 8, KINDS = 3 };
    /* ZMTP 3.0 greeting: signature, version 3.0, mechanism CURVE, client. */
    uint8_t greeting[64] = {0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 3, 0};
    memcpy(greeting + 12, "CURVE", 5);
    const size_t sent[KINDS] = {0, 11, sizeof greeting};
    int fds[KINDS * PER_KIND];
    int64_t opened = hostile_now_ms();
    for (size_t i = 0; i < KINDS * PER_KIND; i++) {
        fds[i] = tcp_connect_endpoint(env->endpoint);
        size_t len = sent[i % KINDS];
        if (len && write(fds[i], greeting, len) != (ssize_t)len)
            fail_msg("write to a slow socket: %s", strerror(errno));
    }
    /* Meanwhile a new client connects, publishes, and is delivered to. */
    const char *what = "while slow handshakes are pending";
    bystanders_before(&by, what);
    schakel_client_t *fresh = h_connect(env, H_BRANDWEER);
    static const char *const to[] = {"woco-jekerdal"};
    schakel_signal_t fire = {.kind = "brandonveilige-situatie",
                             .theme = "brandveiligheid",
                             .area = "GM0935",
                             .recipients = to,
                             .n_recipients = 1};
    uint8_t id[16];
    (void)h_publish_ok(fresh, &fire, NULL, id, NULL, NULL);
    schakel_close(&fresh);
    bystanders_receive(&by, by.pending_id, what);
    by.pending = 0;
    bystanders_receive(&by, id, what);
    int64_t meanwhile = hostile_now_ms() - opened;

    int64_t deadline = opened + SCHAKEL_HANDSHAKE_IVL_MS + H_TIMEOUT_MS;
    int64_t last = 0;
    for (size_t i = 0; i < KINDS * PER_KIND; i++) {
        if (!tcp_await_close(fds[i], deadline))
            fail_msg("a slow handshake (%zu greeting bytes) is still open after %lld ms",
                     sent[i % KINDS], (long long)(hostile_now_ms() - opened));
        last = hostile_now_ms() - opened;
        close(fds[i]);
    }
    print_message("    served a new client %lld ms after opening %d slow sockets; all closed "
                  "by %lld ms\n",
                  (long long)meanwhile, (int)(KINDS * PER_KIND), (long long)last);
    if (meanwhile >= SCHAKEL_HANDSHAKE_IVL_MS)
        fail_msg("the new client was served only after %lld ms", (long long)meanwhile);
    bystanders_after(&by, what);
    bystanders_close(&by);
    h_done(env);
}

/* ------------------------------------------------------------------ hostile policy files */

typedef char *(*policy_text_fn)(h_env_t *env, size_t *len);

static char *text_repeat(const char *head, const char *unit, size_t count, const char *middle,
                         const char *unit2, size_t count2, const char *tail, size_t *len)
{
    pb_t b = {0};
    pb_put(&b, head, strlen(head));
    for (size_t i = 0; i < count; i++)
        pb_put(&b, unit, strlen(unit));
    pb_put(&b, middle, strlen(middle));
    for (size_t i = 0; i < count2; i++)
        pb_put(&b, unit2, strlen(unit2));
    pb_put(&b, tail, strlen(tail) + 1);
    *len = b.len - 1;
    return (char *)b.data;
}

static char *full_policy(void)
{
    char *text = NULL;
    if (asprintf(&text, "%s%s", h_policy_header, h_default_rules) < 0)
        fail_msg("out of memory");
    return text;
}

static char *policy_deep_flow(h_env_t *env, size_t *len)
{
    (void)env;
    return text_repeat("version: 1\npartners: ", "[", 100000, "", "]", 100000, "\n", len);
}

static char *policy_deep_block(h_env_t *env, size_t *len)
{
    (void)env;
    pb_t b = {0};
    pb_put(&b, "version: 1\n", 11);
    for (int i = 0; i < 40; i++) {
        char line[128];
        snprintf(line, sizeof line, "%*sk%d:\n", 2 * i, "", i);
        pb_put(&b, line, strlen(line));
    }
    char last[128];
    snprintf(last, sizeof last, "%*sv: 1\n", 2 * 40, "");
    pb_put(&b, last, strlen(last) + 1);
    *len = b.len - 1;
    return (char *)b.data;
}

/* Nine levels of ten aliases each: a billion "lol"s once expanded. */
static char *policy_billion_laughs(h_env_t *env, size_t *len)
{
    (void)env;
    pb_t b = {0};
    const char *head = "version: 1\nlol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n";
    pb_put(&b, head, strlen(head));
    for (int level = 1; level < 9; level++) {
        char line[160];
        snprintf(line, sizeof line,
                 "lol%d: &l%d [*l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, "
                 "*l%d, *l%d]\n",
                 level, level, level - 1, level - 1, level - 1, level - 1, level - 1, level - 1,
                 level - 1, level - 1, level - 1, level - 1);
        pb_put(&b, line, strlen(line));
    }
    pb_put(&b, "", 1);
    *len = b.len - 1;
    return (char *)b.data;
}

static char *policy_alias(h_env_t *env, size_t *len)
{
    (void)env;
    char *text = NULL;
    if (asprintf(&text, "%srules: *rules\n", h_policy_header) < 0)
        fail_msg("out of memory");
    *len = strlen(text);
    return text;
}

static char *policy_with_name(const char *name, size_t *len)
{
    char *full = full_policy();
    char *line = NULL;
    if (asprintf(&line, "    name: %s\n", name) < 0)
        fail_msg("out of memory");
    char *text = text_replaced(full, "    name: Gemeente Maastricht\n", line);
    free(full);
    free(line);
    *len = strlen(text);
    return text;
}

static char *policy_huge_scalar(h_env_t *env, size_t *len)
{
    (void)env;
    size_t n = 3u << 20;
    char *name = malloc(n + 1);
    assert_non_null(name);
    memset(name, 'x', n);
    name[n] = '\0';
    char *text = policy_with_name(name, len);
    free(name);
    return text;
}

static char *policy_over_size(h_env_t *env, size_t *len)
{
    (void)env;
    char *full = full_policy();
    char *text = text_repeat(full, "", 0, "# ", "x", SCHAKEL_MAX_POLICY_BYTES, "\n", len);
    free(full);
    return text;
}

static char *policy_two_documents(h_env_t *env, size_t *len)
{
    (void)env;
    char *full = full_policy();
    char *text = text_repeat(full, "", 0, "---\nversion: 1\n", "", 0, "", len);
    free(full);
    return text;
}

static char *policy_control_character(h_env_t *env, size_t *len)
{
    (void)env;
    return policy_with_name("\"Gemeente \\e[2J Maastricht\"", len);
}

static char *policy_invalid_utf8(h_env_t *env, size_t *len)
{
    (void)env;
    return policy_with_name("Gemeente \xff Maastricht", len);
}

static char *policy_nul_bytes(h_env_t *env, size_t *len)
{
    (void)env;
    char *text = malloc(32);
    assert_non_null(text);
    memcpy(text, "version: 1\npartners:\0\0\0\0", 25);
    *len = 25;
    return text;
}

static char *policy_duplicate_key(h_env_t *env, size_t *len)
{
    (void)env;
    char *full = full_policy();
    char *text = text_repeat("version: 1\n", "", 0, full, "", 0, "", len);
    free(full);
    return text;
}

static char *policy_many_keys(h_env_t *env, size_t *len)
{
    (void)env;
    pb_t b = {0};
    pb_put(&b, "version: 1\n", 11);
    for (int i = 0; i < 100; i++) {
        char line[32];
        snprintf(line, sizeof line, "k%d: 1\n", i);
        pb_put(&b, line, strlen(line));
    }
    pb_put(&b, "", 1);
    *len = b.len - 1;
    return (char *)b.data;
}

static char *policy_long_key(h_env_t *env, size_t *len)
{
    (void)env;
    return text_repeat("version: 1\n", "k", 65, ": 1\n", "", 0, "", len);
}

static char *policy_extra_principal(const char *block, size_t *len)
{
    char *text = NULL;
    if (asprintf(&text, "%s%s%s", h_policy_header, block, h_default_rules) < 0)
        fail_msg("out of memory");
    *len = strlen(text);
    return text;
}

static char *policy_shared_key(h_env_t *env, size_t *len)
{
    (void)env;
    return policy_extra_principal("  - id: gemeente/kopie\n    role: system\n"
                                  "    key_file: keys/gemeente-meldingen.pub\n",
                                  len);
}

static char *policy_small_order_key(h_env_t *env, size_t *len)
{
    (void)env;
    return policy_extra_principal("  - id: gemeente/nul\n    role: system\n"
                                  "    key: \"0000000000000000000000000000000000000000\"\n",
                                  len);
}

static char *policy_key_file_device(h_env_t *env, size_t *len)
{
    (void)env;
    return policy_extra_principal("  - id: gemeente/nul\n    role: system\n"
                                  "    key_file: /dev/zero\n",
                                  len);
}

static char *policy_unknown_partner(h_env_t *env, size_t *len)
{
    (void)env;
    return policy_extra_principal("  - id: onbekend/systeem\n    role: system\n"
                                  "    key_file: keys/woco-maasoever-onbekend.pub\n",
                                  len);
}

typedef struct policy_row {
    const char *name;
    policy_text_fn text;
    const char *error; /* in the reload_refused line */
} policy_row_t;

static const policy_row_t policy_rows[] = {
    {"flow sequences nested 100,000 deep", policy_deep_flow, "nesting deeper than 16 levels"},
    {"block mappings nested 40 deep", policy_deep_block, "nesting deeper than 16 levels"},
    {"a billion laughs (anchors and aliases)", policy_billion_laughs,
     "anchors (&name) are not allowed"},
    {"an alias", policy_alias, "aliases (*name) are not allowed"},
    {"a 3 MiB partner name", policy_huge_scalar, "longer than 1000 bytes"},
    {"a file over 4 MiB", policy_over_size, "policy is larger than 4194304 bytes"},
    {"two YAML documents", policy_two_documents, "only one YAML document is allowed"},
    {"a terminal escape in a name", policy_control_character, "control character 0x1b"},
    {"a name that is not UTF-8", policy_invalid_utf8,
     "policy.yaml:4: not UTF-8: invalid leading UTF-8 octet 0xff"},
    {"NUL bytes", policy_nul_bytes, "policy.yaml:2: control character 0x00"},
    {"a key given twice", policy_duplicate_key, "duplicate key"},
    {"100 keys in one mapping", policy_many_keys, "more than 64 keys in one mapping"},
    {"a key of 65 bytes", policy_long_key, "mapping key longer than 64 bytes"},
    {"two principals with one key", policy_shared_key, "has the same key as"},
    {"a small-order public key", policy_small_order_key, "is not a Z85 Ed25519 public key"},
    {"a key_file that is a device", policy_key_file_device, "is not a regular file"},
    {"a principal of an unknown partner", policy_unknown_partner, "belongs to unknown partner"},
};

static void write_policy_bytes(const h_env_t *env, const char *text, size_t len)
{
    FILE *f = fopen(env->policy_path, "wb");
    if (!f || fwrite(text, 1, len, f) != len || fclose(f) != 0)
        fail_msg("write %s: %s", env->policy_path, strerror(errno));
}

/* A hostile policy file, SIGHUP: refused (policy.reload_refused naming the
 * problem and the policy kept), and the old policy stays in force: the same
 * rule version delivers, the same keys are admitted. */
static void test_hostile_policy_files_are_refused(void **state)
{
    h_env_t *env = *state;
    char kept[65], kept_needle[80];
    log_start_policy_hash(env, kept);
    snprintf(kept_needle, sizeof kept_needle, "kept=%s", kept);
    bystanders_t by;
    bystanders_open(env, &by);
    raw_t *connected = raw_connect(env, HOSTILE);
    (void)raw_settle(connected, "connected before the reloads");
    for (size_t i = 0; i < sizeof policy_rows / sizeof policy_rows[0]; i++) {
        const policy_row_t *row = &policy_rows[i];
        bystanders_before(&by, row->name);
        size_t len = 0;
        char *text = row->text(env, &len);
        write_policy_bytes(env, text, len);
        free(text);
        mark_t mark = mark_take(env);
        if (h_broker_reload(env) != 0)
            fail_msg("%s: the broker took the policy", row->name);
        const char *needles[] = {"event=policy.reload_refused", row->error, kept_needle, NULL};
        log_await(env, mark.log_offset, row->name, needles);
        /* The refusal's audit entry joins the broker's open turn and is
         * committed when that turn ends: a round trip ends it. */
        (void)raw_settle(connected, row->name);
        char reason_like[160], detail_like[96];
        snprintf(reason_like, sizeof reason_like, "%%%s%%", row->error);
        snprintf(detail_like, sizeof detail_like, "kept_policy=%s%%", kept);
        audit_expect(env, &mark, row->name, "policy.reload_refused", reason_like, detail_like,
                     NULL);
        raw_t *fresh = raw_connect(env, H_RIEC);
        (void)raw_settle(fresh, row->name);
        raw_close(&fresh);
        bystanders_after(&by, row->name);
    }
    /* The original text loads again: reloading works at all. */
    char *full = full_policy();
    write_policy_bytes(env, full, strlen(full));
    free(full);
    assert_int_equal(h_broker_reload(env), 1);
    raw_assert_connected(connected, "after the reloads");
    (void)raw_settle(connected, "after the reloads");
    raw_close(&connected);
    bystanders_after(&by, "after the reloads");
    bystanders_close(&by);
    h_done(env);
}

/* ------------------------------------------------------------------ bounds */

/* Start the broker (with extra options, or none; with metrics on a free
 * loopback port, its HOST:PORT in metrics, unless that is NULL) so that
 * its peak memory is what it holds: under ASan the quarantine (256 MiB)
 * would keep what it frees. */
static void broker_start_measuring(h_env_t *env, const char *const *extra, char *metrics,
                                   size_t metrics_len)
{
    static const char *const none[] = {NULL};
#if defined(__SANITIZE_ADDRESS__)
    const char *asan = getenv("ASAN_OPTIONS");
    char *saved = asan != NULL ? strdup(asan) : NULL, options[512];
    snprintf(options, sizeof options, "%s%squarantine_size_mb=0", saved ? saved : "",
             saved && saved[0] ? ":" : "");
    setenv("ASAN_OPTIONS", options, 1);
#endif
    if (metrics != NULL)
        h_broker_start_metrics(env, extra, metrics, metrics_len);
    else
        h_broker_start_with(env, extra != NULL ? extra : none);
#if defined(__SANITIZE_ADDRESS__)
    if (saved != NULL)
        setenv("ASAN_OPTIONS", saved, 1);
    else
        unsetenv("ASAN_OPTIONS");
    free(saved);
#endif
}

static void broker_start_measured(h_env_t *env, const char *const *extra)
{
    broker_start_measuring(env, extra, NULL, 0);
}

/* The loop's writing turns so far: its commits, synced or not, read from
 * the broker's /metrics at address (HOST:PORT). Counted at each turn's
 * end: read after an answer of a later turn, it holds every turn before. */
static double writing_turns(const char *address)
{
    int fd = h_connect_tcp(address);
    static const char request[] = "GET /metrics HTTP/1.0\r\n\r\n";
    assert_int_equal(write(fd, request, sizeof request - 1), (ssize_t)(sizeof request - 1));
    char *text = h_read_to_close(fd, H_TIMEOUT_MS); /* the server closes after its reply */
    close(fd);
    if (text == NULL)
        fail_msg("no complete answer from %s/metrics within %d ms", address, H_TIMEOUT_MS);
    static const char *const series[] = {"\nschakel_store_commits_synced_total ",
                                         "\nschakel_store_commits_unsynced_total "};
    double turns = 0;
    for (size_t i = 0; i < sizeof series / sizeof series[0]; i++) {
        const char *at = strstr(text, series[i]);
        if (at == NULL)
            fail_msg("%s/metrics has no%s", address, series[i]);
        turns += strtod(at + strlen(series[i]), NULL);
    }
    free(text);
    return turns;
}

/* A frame on a raw ZMTP connection; fails the test once it is closed. */
static void zmtp_send_frame(zmtp_raw_t *r, pb_t *frame, const char *what)
{
    if (zmtp_raw_send(r, frame->data, frame->len, 0) != 0)
        fail_msg("%s: the broker closed the connection", what);
    pb_free(frame);
}

/* The next answer on a raw ZMTP connection, which must have the given
 * body; fails the test if none comes in time or another comes first. */
static Schakel__Frame *zmtp_next(zmtp_raw_t *r, const char *what, Schakel__Frame__BodyCase body)
{
    int wait_ms = H_TIMEOUT_MS;
    uint8_t *answer = NULL;
    size_t len = 0;
    if (zmtp_raw_recv(r, &answer, &len, wait_ms) != 1)
        fail_msg("%s: no answer within %d ms", what, wait_ms);
    Schakel__Frame *f = schakel__frame__unpack(NULL, len, answer);
    free(answer);
    if (f == NULL)
        fail_msg("%s: the broker sent a frame that does not decode", what);
    if (f->body_case != body) {
        char got[400];
        frame_describe(f, got, sizeof got);
        frame_free(&f);
        fail_msg("%s: got %s, expected body %d", what, got, (int)body);
    }
    return f;
}

/* A Heartbeat round trip on a raw ZMTP connection. */
static void zmtp_heartbeat(zmtp_raw_t *r, const char *what)
{
    pb_t frame = {0};
    frame_heartbeat(&frame);
    zmtp_send_frame(r, &frame, what);
    Schakel__Frame *f = zmtp_next(r, what, SCHAKEL__FRAME__BODY_HEARTBEAT);
    frame_free(&f);
}

/* Ack frames of SCHAKEL_MAX_ACKS seqs that were never sent, each followed
 * by a Heartbeat, in groups of one more Ack than a turn may take, each
 * group all waiting for the broker at once (its loop was paused until
 * the broker's libzmq had read them): one Rejected per frame, naming its
 * first unknown seq and counting them all, one log line and one audit
 * entry per frame; not one of each per seq (65,536 answers, each held in
 * the turn). The acked seqs count towards a turn's SCHAKEL_MAX_TURN_WORK:
 * each group takes two turns at least, counted by the broker itself (its
 * commits in /metrics: each refusal writes its audit entry, and nothing
 * else writes meanwhile). Another partner is answered meanwhile, and the
 * broker's memory stays put. (Without tracing, the broker is stopped
 * whole: its libzmq may then hand the loop a group in parts, and the
 * count can only be higher.) */
static void test_unknown_acks_get_one_refusal_per_frame(void **state)
{
    h_env_t *env = *state;
    enum { GROUP = SCHAKEL_MAX_TURN_WORK / SCHAKEL_MAX_ACKS + 1, GROUPS = 13 };
    enum { FRAMES = GROUP * GROUPS };
    _Static_assert(2 * GROUP < SCHAKEL_BROKER_RCVHWM, "libzmq reads a whole group for the loop");
    /* the unknown-ack rate out of the way (its own test follows) */
    static const char *const unlimited[] = {"--set", "max_unknown_acks_per_second=1000000", NULL};
    char metrics[64];
    broker_start_measuring(env, unlimited, metrics, sizeof metrics);
    zmtp_raw_t *attacker = zmtp_raw_connect(env, H_POLITIE);
    raw_t *watcher = raw_connect(env, H_OM);
    zmtp_heartbeat(attacker, "attacker before");
    (void)raw_heartbeat(watcher, "watcher before");
    long before = h_broker_status_kib(env, "VmHWM");
    mark_t mark = mark_take(env);
    const uint64_t base = (UINT64_C(1) << 62) + 1000000;
    static uint64_t seqs[SCHAKEL_MAX_ACKS];
    int traced = 1;
    for (int g = 0; g < GROUPS; g++) {
        double turns_before = writing_turns(metrics);
        if (traced && h_broker_pause_loop(env) != 0)
            traced = 0; /* not permitted here: the whole broker stops */
        if (!traced)
            h_broker_pause(env);
        for (int f = g * GROUP; f < (g + 1) * GROUP; f++) {
            for (size_t i = 0; i < SCHAKEL_MAX_ACKS; i++)
                seqs[i] = base + (uint64_t)f * SCHAKEL_MAX_ACKS + i;
            pb_t frame = {0};
            frame_ack(&frame, seqs, SCHAKEL_MAX_ACKS);
            zmtp_send_frame(attacker, &frame, "an Ack");
            frame_heartbeat(&frame);
            zmtp_send_frame(attacker, &frame, "a heartbeat after an Ack");
        }
        if (zmtp_raw_delivered(attacker, H_TIMEOUT_MS) != 0)
            fail_msg("group %d: the broker's kernel did not take the frames", g);
        if (traced && h_broker_await_io_idle(env, H_TIMEOUT_MS) != 0)
            fail_msg("group %d: the broker's libzmq I/O thread stayed busy", g);
        if (traced)
            h_broker_resume_loop(env);
        else
            h_broker_resume(env);
        if (g == 0)
            (void)raw_heartbeat(watcher, "watcher during the acks");
        for (int f = g * GROUP; f < (g + 1) * GROUP; f++) {
            Schakel__Frame *fr =
                zmtp_next(attacker, "refusal of an Ack", SCHAKEL__FRAME__BODY_REJECTED);
            const Schakel__Rejected *rj = fr->rejected;
            uint64_t first = base + (uint64_t)f * SCHAKEL_MAX_ACKS;
            char head[96], seqs_named[64];
            snprintf(head, sizeof head, "%u of the %u acknowledged sequences", SCHAKEL_MAX_ACKS,
                     SCHAKEL_MAX_ACKS);
            snprintf(seqs_named, sizeof seqs_named, ": %llu %llu ", (unsigned long long)first,
                     (unsigned long long)first + 1);
            if (!rj->has_reason || rj->reason != SCHAKEL__REASON__UNKNOWN_DELIVERY ||
                !rj->has_seq || rj->seq != first || rj->has_message_id || !rj->has_item_index ||
                rj->item_index != -1 || rj->text == NULL ||
                strlen(rj->text) >= SCHAKEL_MAX_REJECT_TEXT || strstr(rj->text, head) == NULL ||
                strstr(rj->text, seqs_named) == NULL ||
                strcmp(rj->text + strlen(rj->text) - 4, " ...") != 0) {
                char got[400];
                frame_describe(fr, got, sizeof got);
                fail_msg("Ack frame %d: got %s; expected one UNKNOWN_DELIVERY naming seq %llu", f,
                         got, (unsigned long long)first);
            }
            frame_free(&fr);
            /* nothing more for that Ack: the next answer is its heartbeat's */
            fr = zmtp_next(attacker, "heartbeat after an Ack", SCHAKEL__FRAME__BODY_HEARTBEAT);
            frame_free(&fr);
        }
        /* answered in a turn after the group's last: all of them counted */
        zmtp_heartbeat(attacker, "after a group");
        double turns = writing_turns(metrics) - turns_before;
        if (turns < 2)
            fail_msg("group %d: %d Acks of %u seqs, all waiting at once, were handled in %g "
                     "turn(s) (at most %d a turn)",
                     g, GROUP, SCHAKEL_MAX_ACKS, turns, GROUP - 1);
    }
    char needle[320];
    refusal_needle(needle, sizeof needle, H_POLITIE, NULL, SCHAKEL__REASON__UNKNOWN_DELIVERY, -1);
    int lines = h_log_count(env, mark.log_offset, needle);
    if (lines != FRAMES)
        fail_msg("%d request.refused log lines for %d Ack frames", lines, FRAMES);
    if (audit_count(env, &mark, "request.refused", H_POLITIE, NULL, "",
                    wire_reason_name(SCHAKEL__REASON__UNKNOWN_DELIVERY)) != FRAMES)
        fail_msg("not one audit entry per refused Ack frame");
    long grown = h_broker_status_kib(env, "VmHWM") - before;
    if (grown > 32 * 1024)
        fail_msg("Ack frames of unknown seqs grew the broker's peak memory by %ld MiB",
                 grown / 1024);
    zmtp_raw_close(&attacker);
    raw_close(&watcher);
    h_done(env);
}

/* max_unknown_acks_per_second 100: Ack frames of SCHAKEL_MAX_ACKS seqs
 * never sent, each followed by a Heartbeat, all waiting for the broker at
 * once (it was paused). The first is looked up and refused
 * UNKNOWN_DELIVERY; its 1,024 unknown seqs put its principal's bucket
 * 924 below 0 (over 9 s to refill), and every later one is answered
 * RATE_LIMITED whole, naming its first seq, with nothing looked up; one
 * ack.rate_limited line for them all (no request.refused line each), the
 * rest summed up at the stop, each audited as any refusal. Another
 * principal's unknown ack is looked up and answered as before. */
static void test_unknown_acks_are_rate_limited(void **state)
{
    h_env_t *env = *state;
    enum { FRAMES = 24 };
    static const char *const slow[] = {"--set", "max_unknown_acks_per_second=100", NULL};
    h_broker_start_with(env, slow);
    raw_t *attacker = raw_connect(env, H_POLITIE);
    raw_t *watcher = raw_connect(env, H_OM);
    (void)raw_heartbeat(attacker, "attacker before");
    (void)raw_heartbeat(watcher, "watcher before");
    mark_t mark = mark_take(env);
    const uint64_t base = (UINT64_C(1) << 62) + 2000000;
    static uint64_t seqs[SCHAKEL_MAX_ACKS];
    h_broker_pause(env);
    for (int f = 0; f < FRAMES; f++) {
        for (size_t i = 0; i < SCHAKEL_MAX_ACKS; i++)
            seqs[i] = base + (uint64_t)f * SCHAKEL_MAX_ACKS + i;
        pb_t frame = {0};
        frame_ack(&frame, seqs, SCHAKEL_MAX_ACKS);
        raw_send_frame(attacker, &frame);
        frame_heartbeat(&frame);
        raw_send_frame(attacker, &frame);
    }
    h_broker_resume(env);
    for (int f = 0; f < FRAMES; f++) {
        Schakel__Frame *fr = raw_next(attacker, "refusal of an Ack", SCHAKEL__FRAME__BODY_REJECTED);
        const Schakel__Rejected *rj = fr->rejected;
        Schakel__Reason expected =
            f == 0 ? SCHAKEL__REASON__UNKNOWN_DELIVERY : SCHAKEL__REASON__RATE_LIMITED;
        if (!rj->has_reason || rj->reason != expected || !rj->has_seq ||
            rj->seq != base + (uint64_t)f * SCHAKEL_MAX_ACKS || rj->has_message_id ||
            rj->text == NULL ||
            (f > 0 && strstr(rj->text, "max_unknown_acks_per_second") == NULL)) {
            char got[400];
            frame_describe(fr, got, sizeof got);
            fail_msg("Ack frame %d: got %s; expected %s", f, got, wire_reason_name(expected));
        }
        frame_free(&fr);
        fr = raw_next(attacker, "heartbeat after an Ack", SCHAKEL__FRAME__BODY_HEARTBEAT);
        frame_free(&fr);
    }
    /* another principal's bucket is its own */
    uint64_t theirs = base - 1;
    pb_t frame = {0};
    frame_ack(&frame, &theirs, 1);
    raw_send_frame(watcher, &frame);
    raw_expect_rejected(watcher, "another principal's unknown ack",
                        SCHAKEL__REASON__UNKNOWN_DELIVERY, NULL, -1, theirs);
    char needle[320];
    refusal_needle(needle, sizeof needle, H_POLITIE, NULL, SCHAKEL__REASON__RATE_LIMITED, -1);
    if (h_log_count(env, mark.log_offset, needle) != 0)
        fail_msg("a rate-limited Ack was logged a line of its own");
    if (h_log_count(env, mark.log_offset, "event=ack.rate_limited principal=" H_POLITIE) != 1)
        fail_msg("not one ack.rate_limited line for the principal's rate-limited Acks");
    if (audit_count(env, &mark, "request.refused", H_POLITIE, NULL, "",
                    wire_reason_name(SCHAKEL__REASON__RATE_LIMITED)) != FRAMES - 1)
        fail_msg("not one audit entry per rate-limited Ack frame");
    raw_close(&attacker);
    raw_close(&watcher);
    long offset = h_log_offset(env);
    assert_int_equal(h_broker_stop(env), 0);
    char summary[160];
    snprintf(summary, sizeof summary, "event=ack.rate_limited_summary detail=\"suppressed=%d ",
             FRAMES - 2);
    if (h_log_count(env, offset, summary) != 1)
        fail_msg("the stop did not sum up the %d rate-limited Acks not logged", FRAMES - 2);
    h_done(env);
}

/* Full batches (SCHAKEL_MAX_ITEMS items each), each followed by a
 * Heartbeat, all waiting for the broker at once (it was paused): a turn
 * takes at most SCHAKEL_MAX_TURN_WORK items, so that the frames of other
 * connections are read between turns. A Heartbeat's answer carries the
 * time of the turn that handled it: no more than a turn's worth of
 * batches comes before heartbeats of one time. Everything is accepted. */
static void test_burst_of_full_batches_is_spread_over_turns(void **state)
{
    h_env_t *env = *state;
    enum { BATCHES = 48 };
    const unsigned per_turn = SCHAKEL_MAX_TURN_WORK / SCHAKEL_MAX_ITEMS;
    raw_t *attacker = raw_connect(env, HOSTILE);
    raw_t *watcher = raw_connect(env, H_OM);
    (void)raw_heartbeat(attacker, "attacker before");
    (void)raw_heartbeat(watcher, "watcher before");
    static pb_t items[SCHAKEL_MAX_ITEMS];
    for (size_t i = 0; i < SCHAKEL_MAX_ITEMS; i++)
        signal_item(&items[i], NULL, (int64_t)time(NULL));
    uint8_t ids[BATCHES][16];
    h_broker_pause(env);
    for (int b = 0; b < BATCHES; b++) {
        pb_t frame = {0};
        randombytes_buf(ids[b], sizeof ids[b]);
        publish_signed(attacker->key, ids[b], items, SCHAKEL_MAX_ITEMS, &frame);
        raw_send_frame(attacker, &frame);
        frame_heartbeat(&frame);
        raw_send_frame(attacker, &frame);
    }
    for (size_t i = 0; i < SCHAKEL_MAX_ITEMS; i++)
        pb_free(&items[i]);
    h_broker_resume(env);
    (void)raw_heartbeat(watcher, "watcher during the batches");
    uint64_t turn_time = 0;
    unsigned in_turn = 0, turns = 0;
    for (int b = 0; b < BATCHES; b++) {
        (void)raw_expect_accepted(attacker, "a full batch", ids[b], SCHAKEL_MAX_ITEMS, 0);
        Schakel__Frame *f =
            raw_next(attacker, "heartbeat after a batch", SCHAKEL__FRAME__BODY_HEARTBEAT);
        uint64_t t = f->heartbeat->has_time ? (uint64_t)f->heartbeat->time : 0;
        frame_free(&f);
        if (b == 0 || t != turn_time) {
            turn_time = t;
            in_turn = 0;
            turns++;
        }
        if (++in_turn > per_turn)
            fail_msg("%u full batches were handled in one turn (at most %u)", in_turn, per_turn);
    }
    if (turns < BATCHES / per_turn)
        fail_msg("%d full batches in %u turns", BATCHES, turns);
    raw_close(&attacker);
    raw_close(&watcher);
    h_done(env);
}

/* A case of two attachments of 120,000 bytes: each view of it is ~234 KB. */
static void open_case_with_attachments(h_env_t *env, char id[SCHAKEL_CASE_ID_SIZE],
                                       const char *member, int attachments, size_t size)
{
    schakel_client_t *riec = h_connect(env, H_RIEC);
    static const schakel_case_open_t open = {
        .case_type = "ondermijning-adres",
        .area = "BU09350101",
        .subject = "PSN-7f3a9c2e41",
        .postcode = "6211AB",
        .house_number = 12,
        .title = "bounds",
    };
    schakel_case_result_t res;
    assert_int_equal(schakel_case_open(riec, &open, NULL, id, &res, H_TIMEOUT_MS), SCHAKEL_OK);
    if (member != NULL) {
        schakel_client_t *other = h_connect(env, member);
        assert_int_equal(schakel_case_invite(riec, id, "om", NULL, NULL, H_TIMEOUT_MS), SCHAKEL_OK);
        assert_int_equal(schakel_case_accept(other, id, NULL, NULL, H_TIMEOUT_MS), SCHAKEL_OK);
        schakel_close(&other);
    }
    uint8_t *content = malloc(size);
    assert_non_null(content);
    randombytes_buf(content, size);
    for (int i = 0; i < attachments; i++)
        assert_int_equal(schakel_case_attach(riec, id, "a.bin", "application/octet-stream", content,
                                             size, NULL, NULL, H_TIMEOUT_MS),
                         SCHAKEL_OK);
    free(content);
    schakel_close(&riec);
}

/* A raw connection that reads as little as libzmq lets it: one frame in
 * its queue, 4 KiB in the kernel's buffer. */
static raw_t *raw_connect_unread(h_env_t *env, const char *principal)
{
    raw_t *r = raw_open_with(env, h_key_file(env, principal), env->broker_pub, principal, NULL, 0,
                             1, 4096);
    uint32_t value = 0;
    assert_int_equal(raw_await_handshake(r, H_TIMEOUT_MS, &value), ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
    return r;
}

/* A member asks for a case view of ~234 KB again and again and reads
 * nothing: once the connection owes SCHAKEL_MAX_QUEUED_BYTES, a query is
 * answered RATE_LIMITED (a few views more may have left for the kernel's
 * buffers), and the broker does not hold every view it was asked for. */
static void test_unread_case_views_are_rate_limited(void **state)
{
    h_env_t *env = *state;
    enum { QUERIES = 400, VIEWS_AT_MOST = 64 };
    broker_start_measured(env, NULL);
    char id[SCHAKEL_CASE_ID_SIZE];
    open_case_with_attachments(env, id, NULL, 2, 120000);
    raw_t *r = raw_connect_unread(env, H_RIEC);
    long before = h_broker_status_kib(env, "VmHWM");
    long offset = h_log_offset(env);
    pb_t body = {0}, frame = {0};
    pb_uint(&body, field_no(&schakel__case_query__descriptor, "request_id"), 7);
    pb_text(&body, field_no(&schakel__case_query__descriptor, "case_id"), id);
    pb_uint(&frame, FRAME_F("version"), 1);
    pb_bytes(&frame, FRAME_F("case_query"), body.data, body.len);
    pb_free(&body);
    for (int i = 0; i < QUERIES; i++)
        raw_send(r, &frame, 1);
    pb_free(&frame);
    char needle[320];
    refusal_needle(needle, sizeof needle, H_RIEC, NULL, SCHAKEL__REASON__RATE_LIMITED, -1);
    if (h_await_log(env, offset, needle, H_TIMEOUT_MS) != 0)
        fail_msg("no case query was answered RATE_LIMITED while the connection read nothing");
    long grown = h_broker_status_kib(env, "VmHWM") - before;
    int views = 0, limited = 0, first_limited = -1;
    for (int i = 0; i < QUERIES; i++) {
        Schakel__Frame *f = raw_recv(r, H_TIMEOUT_MS);
        if (f == NULL)
            fail_msg("answer %d of %d did not come", i, QUERIES);
        if (f->body_case == SCHAKEL__FRAME__BODY_CASE_VIEW) {
            views++;
        } else if (f->body_case == SCHAKEL__FRAME__BODY_REJECTED && f->rejected->has_reason &&
                   f->rejected->reason == SCHAKEL__REASON__RATE_LIMITED &&
                   !f->rejected->has_message_id && f->rejected->text != NULL &&
                   strstr(f->rejected->text, "read them, then ask again") != NULL) {
            if (first_limited < 0)
                first_limited = i;
            limited++;
        } else {
            char got[400];
            frame_describe(f, got, sizeof got);
            fail_msg("answer %d: %s", i, got);
        }
        frame_free(&f);
    }
    if (first_limited < 0 || first_limited > VIEWS_AT_MOST)
        fail_msg("%d views went out before the first RATE_LIMITED (at most %d)", first_limited,
                 VIEWS_AT_MOST);
    if (grown > 48 * 1024)
        fail_msg("unread case views grew the broker's peak memory by %ld MiB", grown / 1024);
    /* read, it is answered again */
    (void)raw_heartbeat(r, "after reading");
    raw_close(&r);
    h_done(env);
}

/* max_queued_bytes_per_principal 2 MiB: a member asks for a case view of
 * ~234 KB again and again on each of 12 connections and reads nothing.
 * Each connection alone could be owed 4 MiB (48 MiB in all); past what
 * they owe together, a query on any of them is answered RATE_LIMITED
 * naming the principal's bound, and the broker's memory grows by about
 * that. Another principal's query is answered meanwhile; once the member
 * reads, it is answered again. */
static void test_unread_case_views_are_bounded_per_principal(void **state)
{
    h_env_t *env = *state;
    enum { CONNECTIONS = 12, QUERIES = 40 };
    static const char *const bound[] = {"--set", "max_queued_bytes_per_principal=1", NULL};
    broker_start_measured(env, bound);
    char id[SCHAKEL_CASE_ID_SIZE];
    open_case_with_attachments(env, id, H_OM, 2, 120000);
    raw_t *r[CONNECTIONS];
    for (int c = 0; c < CONNECTIONS; c++)
        r[c] = raw_connect_unread(env, H_RIEC);
    raw_t *other = raw_connect(env, H_OM);
    long before = h_broker_status_kib(env, "VmHWM");
    long offset = h_log_offset(env);
    pb_t body = {0}, frame = {0};
    pb_uint(&body, field_no(&schakel__case_query__descriptor, "request_id"), 7);
    pb_text(&body, field_no(&schakel__case_query__descriptor, "case_id"), id);
    pb_uint(&frame, FRAME_F("version"), 1);
    pb_bytes(&frame, FRAME_F("case_query"), body.data, body.len);
    pb_free(&body);
    for (int i = 0; i < QUERIES; i++)
        for (int c = 0; c < CONNECTIONS; c++)
            raw_send(r[c], &frame, 1);
    char needle[320];
    refusal_needle(needle, sizeof needle, H_RIEC, NULL, SCHAKEL__REASON__RATE_LIMITED, -1);
    strncat(needle, "\"the connections of this principal", sizeof needle - strlen(needle) - 1);
    if (h_await_log(env, offset, needle, H_TIMEOUT_MS) != 0)
        fail_msg("no case query was refused for what the principal's connections owe");
    /* the other principal is answered */
    raw_send(other, &frame, 1);
    Schakel__Frame *f = raw_next(other, "another principal's view", SCHAKEL__FRAME__BODY_CASE_VIEW);
    frame_free(&f);
    /* every query of the member handled (a view or a refusal each), and
     * what the broker held for them measured, before anything is read */
    char viewed[96];
    snprintf(viewed, sizeof viewed, "event=case.viewed principal=%s ", H_RIEC);
    for (;;) {
        long now = h_log_offset(env);
        int handled = h_log_count(env, offset, viewed) + h_log_count(env, offset, needle);
        if (handled >= CONNECTIONS * QUERIES)
            break;
        if (h_await_log(env, now, "principal=" H_RIEC " ", H_TIMEOUT_MS) != 0)
            fail_msg("%d of %d case queries were handled", handled, CONNECTIONS * QUERIES);
    }
    long grown = h_broker_status_kib(env, "VmHWM") - before;
    if (grown > 24 * 1024)
        fail_msg("unread case views on %d connections of one principal grew the broker's peak "
                 "memory by %ld MiB",
                 CONNECTIONS, grown / 1024);
    int views = 0, limited = 0;
    for (int c = 0; c < CONNECTIONS; c++) {
        for (int i = 0; i < QUERIES; i++) {
            f = raw_recv(r[c], H_TIMEOUT_MS);
            if (f == NULL)
                fail_msg("connection %d: answer %d of %d did not come", c, i, QUERIES);
            if (f->body_case == SCHAKEL__FRAME__BODY_CASE_VIEW) {
                views++;
            } else if (f->body_case == SCHAKEL__FRAME__BODY_REJECTED && f->rejected->has_reason &&
                       f->rejected->reason == SCHAKEL__REASON__RATE_LIMITED &&
                       f->rejected->text != NULL &&
                       strstr(f->rejected->text, "read them, then ask again") != NULL) {
                limited++;
            } else {
                char got[400];
                frame_describe(f, got, sizeof got);
                fail_msg("connection %d, answer %d: %s", c, i, got);
            }
            frame_free(&f);
        }
    }
    if (views == 0 || limited == 0)
        fail_msg("%d views and %d refusals (expected both)", views, limited);
    /* read, it is answered again */
    raw_send(r[0], &frame, 1);
    f = raw_next(r[0], "a view once read", SCHAKEL__FRAME__BODY_CASE_VIEW);
    frame_free(&f);
    pb_free(&frame);
    for (int c = 0; c < CONNECTIONS; c++)
        raw_close(&r[c]);
    raw_close(&other);
    h_done(env);
}

/* A CaseQuery frame of request 8 for case `id`. */
static void frame_case_query(pb_t *frame, const char *id)
{
    pb_t body = {0};
    pb_uint(&body, field_no(&schakel__case_query__descriptor, "request_id"), 8);
    pb_text(&body, field_no(&schakel__case_query__descriptor, "case_id"), id);
    pb_uint(frame, FRAME_F("version"), 1);
    pb_bytes(frame, FRAME_F("case_query"), body.data, body.len);
    pb_free(&body);
}

/* Two case views read in one turn, the second's entry refused by the
 * store: the turn is rolled back, and the first view, answered in it, is
 * refused after all ("ask again"); that refusal is on the trail once the
 * store takes it (review: nothing recorded it, and the view's case.viewed
 * went with the turn). The frames are read in one turn while the broker
 * is stopped when they are sent; should they come in two, the try is
 * made again. */
static void test_view_of_a_rolled_back_turn_refused_on_record(void **state)
{
    static const char asked_again[] = "the broker could not record this request; ask again";
    h_env_t *env = *state;
    h_broker_start(env);
    char id[SCHAKEL_CASE_ID_SIZE];
    open_case_with_attachments(env, id, NULL, 0, 1);
    raw_t *r = raw_connect(env, H_RIEC);
    pb_t query = {0};
    frame_case_query(&query, id);
    long offset = h_log_offset(env);
    int one_turn = 0;
    for (int attempt = 0; attempt < 5 && !one_turn; attempt++) {
        /* the first view's entry is taken, the second's refused */
        char sql[320];
        snprintf(sql, sizeof sql,
                 "CREATE TRIGGER test_refuse BEFORE INSERT ON audit WHEN NEW.event = "
                 "'case.viewed' AND (SELECT count(*) FROM audit WHERE event = 'case.viewed') > "
                 "%lld BEGIN SELECT RAISE(ABORT, 'the audit path is full'); END",
                 (long long)h_store_int(
                     env, "SELECT count(*) FROM audit WHERE event = 'case.viewed'", NULL));
        h_store_exec(env, sql);
        h_broker_pause(env);
        raw_send(r, &query, 1);
        raw_send(r, &query, 1);
        h_broker_resume(env);
        Schakel__Frame *first = raw_recv(r, H_TIMEOUT_MS);
        Schakel__Frame *second = raw_recv(r, H_TIMEOUT_MS);
        if (first == NULL || second == NULL)
            fail_msg("the two views were not answered");
        h_store_exec(env, "DROP TRIGGER test_refuse");
        one_turn = first->body_case == SCHAKEL__FRAME__BODY_REJECTED;
        if (one_turn &&
            (first->rejected->text == NULL || strcmp(first->rejected->text, asked_again) != 0))
            fail_msg("the first view was refused \"%s\"", first->rejected->text);
        frame_free(&first);
        frame_free(&second);
    }
    pb_free(&query);
    if (!one_turn)
        fail_msg("the two views never came in one turn");
    if (h_await_log(env, offset, "event=audit.recorded_late entry=request.refused", H_TIMEOUT_MS) !=
        0)
        fail_msg("the refusals were not recorded");
    /* written a second after it was decided at least: the entry says when */
    static const char count[] = "SELECT count(*) FROM audit WHERE event = 'request.refused' AND"
                                " actor = '" H_RIEC "' AND detail LIKE ?1 || ' decided_at=%'";
    raw_close(&r);
    assert_int_equal(h_broker_stop(env), 0);
    assert_int_equal(h_store_int(env, count, asked_again), 1);
    h_done(env);
}

/* The default rules without the rule `id`. */
static char *rules_without(const char *id)
{
    char from[96];
    snprintf(from, sizeof from, "  - id: %s\n", id);
    const char *at = strstr(h_default_rules, from);
    assert_non_null(at);
    const char *next = strstr(at + strlen(from), "  - id: ");
    size_t head = (size_t)(at - h_default_rules), tail = next != NULL ? strlen(next) : 0;
    char *out = malloc(head + tail + 1);
    assert_non_null(out);
    memcpy(out, h_default_rules, head);
    memcpy(out + head, next != NULL ? next : "", tail + 1);
    return out;
}

/* Acks of deliveries the recipient had, which a rule removed since
 * withholds (pushed before a restart), are no abuse: answered as not
 * pending, but not rationed as unknown acks (review: one Ack of them took
 * the bucket below zero, and the recipient's next Ack of a live delivery
 * was refused whole, RATE_LIMITED). */
static void test_acks_of_withheld_deliveries_are_not_rationed(void **state)
{
    h_env_t *env = *state;
    enum { WITHHELD = 40 };
    static const char *const slow[] = {"--set", "max_unknown_acks_per_second=2", NULL};
    h_broker_start_with(env, slow);
    schakel_client_t *woco = h_connect(env, H_WOCO_MAASOEVER);
    schakel_signal_t s[WITHHELD];
    for (int i = 0; i < WITHHELD; i++)
        s[i] = (schakel_signal_t){.kind = "hennepteelt",
                                  .theme = "ondermijning",
                                  .area = "GM0935",
                                  .severity = SCHAKEL_SEVERITY_HIGH,
                                  .summary = "Stroomverbruik wijst op een kwekerij"};
    schakel_item_result_t results[WITHHELD];
    uint8_t id[16];
    assert_int_equal(
        schakel_publish(woco, NULL, s, WITHHELD, NULL, id, results, NULL, H_TIMEOUT_MS),
        SCHAKEL_OK);
    schakel_close(&woco);
    schakel_client_t *gemeente = h_connect(env, H_GEMEENTE);
    assert_int_equal(schakel_subscribe(gemeente, 0), SCHAKEL_OK);
    static uint64_t seqs[WITHHELD];
    for (int i = 0; i < WITHHELD; i++) {
        schakel_delivery_t *d = h_receive(gemeente);
        seqs[i] = d->seq;
        schakel_delivery_free(&d);
    }
    schakel_close(&gemeente);
    assert_int_equal(h_broker_stop(env), 0);

    char *rules = rules_without("woco-ondermijning-gemeente");
    h_env_write_policy(env, "%s%s", h_policy_header, rules);
    free(rules);
    h_broker_start_with(env, slow);
    long offset = h_log_offset(env);
    gemeente = h_connect(env, H_GEMEENTE);
    /* before any Flow: the push has not withdrawn them yet */
    assert_int_equal(schakel_ack_many(gemeente, seqs, WITHHELD), SCHAKEL_OK);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t live = {.kind = "inbraakreeks",
                             .theme = "woninginbraak",
                             .area = "GM0935",
                             .severity = SCHAKEL_SEVERITY_MEDIUM,
                             .summary = "Drie inbraken in een week"};
    (void)h_publish_ok(politie, &live, NULL, id, NULL, NULL);
    schakel_close(&politie);
    assert_int_equal(schakel_subscribe(gemeente, 0), SCHAKEL_OK);
    schakel_delivery_t *d = h_receive(gemeente);
    assert_memory_equal(d->message_id, id, 16);
    const uint64_t live_seq = d->seq;
    schakel_delivery_free(&d);
    assert_int_equal(schakel_ack(gemeente, live_seq), SCHAKEL_OK);
    /* the ack was taken: nothing is owed once the withheld ones are
     * withdrawn (a batch a turn; each Heartbeat answered is a turn later),
     * and no Ack was rationed */
    int turns = 0;
    while (h_backlog(gemeente) != 0 && ++turns < 64)
        ;
    if (turns == 64)
        fail_msg("gemeente still owed %d deliveries", h_backlog(gemeente));
    if (h_log_count(env, offset, "event=ack.rate_limited") != 0)
        fail_msg("an Ack was rationed after acks of withheld deliveries");
    schakel_close(&gemeente);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

/* A principal bound of 1 byte still lets the push go, one delivery at a
 * time (review: half of 1 is 0, and the push waited for ever). */
static void test_smallest_principal_bound_still_delivers(void **state)
{
    h_env_t *env = *state;
    static const char *const tiny[] = {"--set", "max_queued_bytes_per_principal=1", NULL};
    h_broker_start_with(env, tiny);
    schakel_client_t *om = h_connect(env, H_OM);
    assert_int_equal(schakel_subscribe(om, 0), SCHAKEL_OK);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    uint8_t ids[2][16];
    for (int i = 0; i < 2; i++) {
        schakel_signal_t s = h_police_signal(i == 0 ? "BVH-TINY-1" : "BVH-TINY-2");
        (void)h_publish_ok(politie, &s, NULL, ids[i], NULL, NULL);
    }
    for (int i = 0; i < 2; i++) {
        schakel_delivery_t *d = h_receive(om);
        assert_memory_equal(d->message_id, ids[i], 16);
        assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
        schakel_delivery_free(&d);
    }
    schakel_close(&politie);
    schakel_close(&om);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

/* The most the kernel may hold of a connection's bytes on the broker's
 * side (net.ipv4.tcp_wmem's maximum), or 4 MiB if it cannot be read. */
static long tcp_wmem_max(void)
{
    long lo = 0, def = 0, max = 4L * 1024 * 1024;
    FILE *f = fopen("/proc/sys/net/ipv4/tcp_wmem", "r");
    if (f != NULL) {
        if (fscanf(f, "%ld %ld %ld", &lo, &def, &max) != 3)
            max = 4L * 1024 * 1024;
        fclose(f);
    }
    return max;
}

/* Wait until n case queries of om's sent since offset have been handled:
 * each answered with a view (case.viewed) or refused (the refusal's log
 * line, needle). Only whole lines begun after offset are read
 * (h_log_open_at), and the wait for more starts where the last of them
 * ends: the log's size, taken while the broker writes a line across a
 * page, can end inside it. */
static void await_queries_handled(const h_env_t *env, long offset, const char *needle, int n,
                                  const char *what)
{
    for (;;) {
        FILE *f = h_log_open_at(env, offset);
        long end = offset;
        int handled = 0;
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        while (f != NULL && (len = getline(&line, &cap, f)) > 0 && line[len - 1] == '\n') {
            end = ftell(f);
            handled += strstr(line, "event=case.viewed principal=" H_OM " ") != NULL ||
                       strstr(line, needle) != NULL;
        }
        free(line);
        if (f != NULL)
            fclose(f);
        if (handled >= n)
            return;
        if (h_await_log(env, end, "principal=" H_OM " ", H_TIMEOUT_MS) != 0)
            fail_msg("%d of %d case queries %s were handled", handled, n, what);
    }
}

/* Wait until nothing moves between the broker and this process: every
 * libzmq I/O thread of both sleeps in epoll_wait, seen so twice in a row.
 * A connection that reads nothing then holds what it will ever take of
 * what it was sent: its libzmq reads only while its own queue has room,
 * and each step on the way (the broker's libzmq writing, its kernel
 * passing bytes on, the client's libzmq reading them) wakes the thread
 * of the next, which is then not asleep. */
static void await_quiet_io(const h_env_t *env)
{
    for (int round = 0; round < 1000; round++) {
        if (h_await_io_idle_of(env->broker_pid, H_TIMEOUT_MS) != 0 ||
            h_await_io_idle_of(getpid(), H_TIMEOUT_MS) != 0)
            fail_msg("the broker's or this process's libzmq I/O threads stayed busy");
        if (h_await_io_idle_of(env->broker_pid, 0) == 0 && h_await_io_idle_of(getpid(), 0) == 0)
            return;
    }
    fail_msg("the broker's and this process's libzmq I/O threads were never idle together");
}

/* max_queued_bytes_per_principal 2 MiB: a member's connection that reads
 * nothing is owed case views up to its bound: a wave of queries, then one
 * at a time until one is refused with every view handed to libzmq and
 * nothing moving between the broker and the test (what the kernel's
 * buffers, which grow as they take, and the connection's libzmq take of
 * the views is taken by then: the principal owes its bound, and keeps
 * owing it). Meanwhile another connection of the member, which reads and
 * owes nothing itself, sends Flow: nothing is pushed to it (its
 * Heartbeat, answered in a later turn, comes before any delivery). Once
 * the first connection reads, the push goes on: every delivery in the
 * mailbox comes, none lost. */
static void test_push_waits_for_the_principal_bound(void **state)
{
    h_env_t *env = *state;
    enum { QUERIES = 94, EVENTS = 3 };
    /* 2 MiB: the views (up to 256 KiB each) fill the kernel's buffers of
     * the connection that reads nothing, then libzmq holds past the bound
     * (a refusal) */
    static const char *const bound[] = {"--set", "max_queued_bytes_per_principal=2097152", NULL};
    h_broker_start_with(env, bound);
    char id[SCHAKEL_CASE_ID_SIZE];
    open_case_with_attachments(env, id, H_OM, EVENTS, 120000);
    raw_t *unread = raw_connect_unread(env, H_OM);
    raw_t *reader = raw_connect(env, H_OM);
    uint64_t backlog = raw_heartbeat(reader, "the reader's backlog");
    if (backlog < EVENTS)
        fail_msg("the member's mailbox holds %llu deliveries (expected %d at least)",
                 (unsigned long long)backlog, EVENTS);
    pb_t query = {0}, frame = {0};
    frame_case_query(&query, id);
    char needle[320];
    refusal_needle(needle, sizeof needle, H_OM, NULL, SCHAKEL__REASON__RATE_LIMITED, -1);
    long offset = h_log_offset(env);
    for (int i = 0; i < QUERIES; i++)
        raw_send(unread, &query, 1);
    /* each answered, a view or, once libzmq holds past the bound, a
     * refusal */
    await_queries_handled(env, offset, needle, QUERIES, "of the wave");
    if (h_log_count(env, offset, needle) == 0)
        fail_msg("the connection that reads nothing was not refused a view");
    /* What the kernel and libzmq took after that refusal (the kernel's
     * buffers grow as they take) is no longer owed. Once every view is
     * libzmq's (answers go out in turn order: a Heartbeat answered after
     * them) and nothing moves, a query refused says that the principal
     * still owes its bound, and nothing takes any of it until the
     * connection reads. A view instead is owed too, and so on. */
    /* what the kernel may take, and the bound twice over, at 100 kB a view
     * (each is ~234 KB) */
    const int more_at_most = (int)((tcp_wmem_max() + 2 * 2097152L) / 100000) + 8;
    int more = 0;
    for (int refused = 0; !refused; more++) {
        if (more == more_at_most)
            fail_msg("%d more views were answered to a connection that reads nothing", more);
        (void)raw_heartbeat(reader, "after the views"); /* they are libzmq's */
        await_quiet_io(env);
        offset = h_log_offset(env);
        raw_send(unread, &query, 1);
        await_queries_handled(env, offset, needle, 1, "after the connections had settled");
        refused = h_log_count(env, offset, needle) == 1;
    }
    frame_flow(&frame, 16);
    raw_send_frame(reader, &frame);
    /* raw_heartbeat fails on any other frame: no delivery came first */
    (void)raw_heartbeat(reader, "the Flow's turn or the next");
    (void)raw_heartbeat(reader, "a turn after the Flow's push");
    /* the first connection reads everything it was sent */
    Schakel__Frame *f;
    for (int i = 0; i < QUERIES + more; i++) {
        f = raw_recv(unread, H_TIMEOUT_MS);
        if (f == NULL)
            fail_msg("answer %d of %d did not come", i, QUERIES + more);
        frame_free(&f);
    }
    raw_close(&unread);
    /* the push goes on in a later turn: every delivery comes (each
     * Heartbeat makes a turn) */
    uint64_t delivered = 0;
    for (int turn = 0; delivered < backlog && turn < 50; turn++) {
        frame_heartbeat(&frame);
        raw_send_frame(reader, &frame);
        for (;;) {
            f = raw_recv(reader, H_TIMEOUT_MS);
            if (f == NULL)
                fail_msg("no answer to a Heartbeat");
            int hb = f->body_case == SCHAKEL__FRAME__BODY_HEARTBEAT;
            delivered += f->body_case == SCHAKEL__FRAME__BODY_DELIVER;
            frame_free(&f);
            if (hb)
                break;
        }
    }
    pb_free(&query);
    if (delivered != backlog)
        fail_msg("%llu of %llu deliveries were pushed once the principal's connections had read",
                 (unsigned long long)delivered, (unsigned long long)backlog);
    raw_close(&reader);
    h_done(env);
}

/* A member that stops reading while a window of large case events is in
 * flight: the push stops once the connection owes
 * SCHAKEL_MAX_QUEUED_PUSH_BYTES (what libzmq and the kernel took beyond
 * that aside), and an ack timeout sends nothing again while what was sent
 * has not left (it says so), so that timeouts do not pile copies of the
 * window into the same queue. Its deliveries alone do not get its case
 * query refused: the view comes once it reads. */
static void test_unread_window_is_not_resent(void **state)
{
    h_env_t *env = *state;
    /* deliveries the broker may have pushed before it stops: its own
     * bound, the kernel's send buffer, and the client's 4 KiB */
    const long pushed_at_most = ((long)SCHAKEL_MAX_QUEUED_PUSH_BYTES + tcp_wmem_max() + 64 * 1024) /
                                    (long)SCHAKEL_MAX_ATTACHMENT_BYTES +
                                8;
    const int attachments = (int)pushed_at_most + 24;
    static const char *const fast_acks[] = {"--ack-timeout", "1s", NULL};
    broker_start_measured(env, fast_acks);
    char id[SCHAKEL_CASE_ID_SIZE];
    open_case_with_attachments(env, id, H_OM, attachments, SCHAKEL_MAX_ATTACHMENT_BYTES);
    raw_t *r = raw_connect_unread(env, H_OM);
    long before = h_broker_status_kib(env, "VmHWM");
    long offset = h_log_offset(env);
    pb_t frame = {0};
    frame_flow(&frame, SCHAKEL_MAX_WINDOW);
    raw_send_frame(r, &frame);
    static const char deferred[] = "event=delivery.ack_timeout_deferred recipient=" H_OM;
    for (int i = 0; i < 3; i++) { /* three timeouts, each one ack_timeout apart */
        if (h_await_log(env, offset, deferred, H_TIMEOUT_MS) != 0)
            fail_msg("ack timeout %d of a connection that reads nothing was not deferred", i + 1);
        offset = h_log_offset(env);
        /* its answer is queued behind whatever was pushed before */
        frame_heartbeat(&frame);
        raw_send_frame(r, &frame);
    }
    if (h_log_count(env, 0, "event=delivery.ack_timeout recipient=" H_OM) != 0)
        fail_msg("an ack timeout sent the window again into the unread queue");
    long grown = h_broker_status_kib(env, "VmHWM") - before;
    if (grown > 48 * 1024)
        fail_msg("an unread window grew the broker's peak memory by %ld MiB", grown / 1024);
    pb_t body = {0};
    pb_uint(&body, field_no(&schakel__case_query__descriptor, "request_id"), 9);
    pb_text(&body, field_no(&schakel__case_query__descriptor, "case_id"), id);
    pb_uint(&frame, FRAME_F("version"), 1);
    pb_bytes(&frame, FRAME_F("case_query"), body.data, body.len);
    pb_free(&body);
    raw_send_frame(r, &frame);
    long delivered = 0;
    int heartbeats = 0, views = 0;
    while (views == 0) { /* the deliveries, three heartbeats' answers, then the view */
        Schakel__Frame *f = raw_recv(r, H_TIMEOUT_MS);
        if (f == NULL)
            fail_msg("the case query's answer did not come");
        if (f->body_case == SCHAKEL__FRAME__BODY_HEARTBEAT) {
            heartbeats++;
        } else if (f->body_case == SCHAKEL__FRAME__BODY_CASE_VIEW) {
            views++;
        } else if (f->body_case == SCHAKEL__FRAME__BODY_DELIVER) {
            if (heartbeats == 0)
                delivered++;
        } else {
            char got[400];
            frame_describe(f, got, sizeof got);
            fail_msg("a receiver's case query: got %s, expected its view", got);
        }
        frame_free(&f);
    }
    if (delivered > pushed_at_most)
        fail_msg("%ld deliveries were pushed to a connection that read nothing (at most %ld)",
                 delivered, pushed_at_most);
    raw_close(&r);
    h_done(env);
}

/* A receiver that reads what it is sent and keeps asking (a Heartbeat
 * after another, each answered) but never acks a delivery gets it again at
 * the ack timeout: the answers owed to its own requests do not hold the
 * resend back, only deliveries that have not left the broker do. */
static void test_busy_reader_gets_redelivery(void **state)
{
    h_env_t *env = *state;
    static const char *const fast_acks[] = {"--ack-timeout", "1s", NULL};
    h_broker_start_with(env, fast_acks);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = h_police_signal("BVH-BUSY-READER");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    schakel_close(&politie);
    raw_t *r = raw_connect(env, H_OM);
    pb_t frame = {0};
    frame_flow(&frame, 1);
    raw_send_frame(r, &frame);
    uint64_t seq = 0;
    int delivered = 0, asked = 0;
    int64_t deadline = hostile_now_ms() + 10 * 1000; /* ten ack timeouts */
    while (delivered < 2 && hostile_now_ms() < deadline && asked < 1000000) {
        if (delivered > 0) { /* asks again as soon as it is answered */
            frame_heartbeat(&frame);
            raw_send_frame(r, &frame);
            asked++;
        }
        for (int answered = 0; !answered;) {
            Schakel__Frame *f = raw_recv(r, H_TIMEOUT_MS);
            if (f == NULL)
                fail_msg("no answer to heartbeat %d", asked);
            if (f->body_case == SCHAKEL__FRAME__BODY_DELIVER) {
                if (seq != 0 && f->deliver->seq != seq)
                    fail_msg("got seq %llu, expected %llu again",
                             (unsigned long long)f->deliver->seq, (unsigned long long)seq);
                seq = f->deliver->seq;
                delivered++;
                answered = asked == 0; /* the first delivery is what it waits for */
            } else if (f->body_case == SCHAKEL__FRAME__BODY_HEARTBEAT) {
                answered = 1;
            } else {
                char got[400];
                frame_describe(f, got, sizeof got);
                fail_msg("a busy reader: got %s", got);
            }
            frame_free(&f);
        }
    }
    if (delivered < 2)
        fail_msg("a delivery never acked was not sent again to a reader that kept asking (%d "
                 "heartbeats in 10 s, ack timeout 1 s)",
                 asked);
    if (h_log_count(env, 0, "event=delivery.ack_timeout recipient=" H_OM) < 1)
        fail_msg("no delivery.ack_timeout for the resend");
    raw_close(&r);
    h_done(env);
}

/* The harness lets a traced loop go at any moment: right after its
 * seize, while it runs on (where PTRACE_DETACH alone fails, ESRCH, and
 * the broker, left traced, would stop for good at the SIGTERM that ends
 * it), over and over; with a signal on its way to it, which still comes
 * (SIGHUP: the policy is reloaded); and stopped in poll. The broker then
 * answers, and ends at SIGTERM with status 0. */
static void test_harness_lets_a_traced_loop_go(void **state)
{
    h_env_t *env = *state;
    for (int i = 0; i < 50; i++) {
        if (h_broker_trace_loop(env) != 0) {
            h_done(env);
            skip();
        }
        h_broker_resume_loop(env);
    }
    long offset = h_log_offset(env);
    assert_int_equal(h_broker_trace_loop(env), 0);
    assert_int_equal(kill(env->broker_pid, SIGHUP), 0);
    h_broker_resume_loop(env);
    if (h_await_log(env, offset, "event=policy.reloaded ", H_TIMEOUT_MS) != 0)
        fail_msg("the SIGHUP sent while the loop was traced did not reload the policy");
    assert_int_equal(h_broker_pause_loop(env), 0);
    h_broker_resume_loop(env);
    assert_int_equal(h_backlog_of(env, H_OM), 0);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

/* Answers to a connection that is gone cannot be queued: a client that
 * sends many frames and leaves had a log line written for each of them.
 * Now a few per principal a minute say so in full, and the rest are
 * summed up in one line (here when the broker stops). Only the broker's
 * loop is stopped while the frames and the connection's end reach it,
 * and it goes on once libzmq's I/O thread has read them all, closed the
 * connection and gone idle, having told the loop's socket that the
 * connection is gone: every answer then finds it gone, under any load.
 * Fewer frames than the broker's RCVHWM, which would hold the end back
 * until the loop took some. (With the whole broker stopped, libzmq read
 * the end only when its thread got to it, and under load answers left
 * before: once 10 or fewer were undeliverable, and no summary came.) */
static void test_undeliverable_answers_are_summed_up(void **state)
{
    h_env_t *env = *state;
    enum { FRAMES = 100 };
    _Static_assert(FRAMES < SCHAKEL_BROKER_RCVHWM, "libzmq reads the end only behind the frames");
    zmtp_raw_t *r = zmtp_raw_connect(env, H_POLITIE);
    pb_t frame = {0};
    frame_heartbeat(&frame);
    uint8_t *answer = NULL;
    size_t answer_len = 0;
    if (zmtp_raw_send(r, frame.data, frame.len, 0) != 0 ||
        zmtp_raw_recv(r, &answer, &answer_len, H_TIMEOUT_MS) != 1)
        fail_msg("no answer to a heartbeat before");
    pb_free(&frame);
    Schakel__Frame *f = schakel__frame__unpack(NULL, answer_len, answer);
    free(answer);
    if (f == NULL || f->body_case != SCHAKEL__FRAME__BODY_HEARTBEAT)
        fail_msg("the answer to a heartbeat before is no heartbeat");
    frame_free(&f);
    long offset = h_log_offset(env);
    if (h_broker_pause_loop(env) != 0) {
        zmtp_raw_close(&r);
        h_done(env);
        skip();
    }
    for (int i = 0; i < FRAMES; i++) {
        uint64_t seq = (UINT64_C(1) << 62) + 5000 + (uint64_t)i;
        frame_ack(&frame, &seq, 1);
        if (zmtp_raw_send(r, frame.data, frame.len, 0) != 0)
            fail_msg("the broker closed the connection at frame %d", i);
        pb_free(&frame);
    }
    zmtp_raw_end(r);
    if (zmtp_raw_closed(r, H_TIMEOUT_MS) != 1)
        fail_msg("the broker's libzmq did not close a connection that ended, its loop stopped");
    if (h_broker_await_io_idle(env, H_TIMEOUT_MS) != 0)
        fail_msg("the broker's libzmq I/O thread stayed busy after the connection closed");
    zmtp_raw_close(&r);
    h_broker_resume_loop(env);
    char last[96];
    snprintf(last, sizeof last, "sequence %llu is not a pending delivery",
             (unsigned long long)((UINT64_C(1) << 62) + 5000 + FRAMES - 1));
    if (h_await_log(env, offset, last, H_TIMEOUT_MS) != 0)
        fail_msg("the broker did not handle the last frame");
    assert_int_equal(h_broker_stop(env), 0);
    int full = h_log_count(env, offset, "event=reply.undeliverable principal=" H_POLITIE " ");
    if (full != (int)REFUSALS_UNDELIVERABLE_PER_PRINCIPAL)
        fail_msg("%d reply.undeliverable lines (expected %u, the rest summed up)", full,
                 REFUSALS_UNDELIVERABLE_PER_PRINCIPAL);
    char suppressed[64], principals[64];
    snprintf(suppressed, sizeof suppressed, "detail=\"suppressed=%u ",
             FRAMES - REFUSALS_UNDELIVERABLE_PER_PRINCIPAL);
    snprintf(principals, sizeof principals, "principals=" H_POLITIE ":%u\"",
             FRAMES - REFUSALS_UNDELIVERABLE_PER_PRINCIPAL);
    if (h_log_count(env, offset, "event=reply.undeliverable_summary ") != 1 ||
        h_log_count_both(env, offset, suppressed, principals) != 1)
        fail_msg("no summary of the %u undeliverable answers not said in full when the broker "
                 "stopped",
                 FRAMES - REFUSALS_UNDELIVERABLE_PER_PRINCIPAL);
    h_done(env);
}

/* ------------------------------------------------------------------ main */

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_refused_keys_at_the_handshake, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_revoked_keys_are_cut_off, h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_malformed_frames_are_refused, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_multipart_publish_is_not_stored, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_frame_far_over_the_limit_drops_only_that_connection,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_chosen_routing_id_gets_no_session, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_bad_case_commands_are_refused, setup_cases,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_case_command_flood_is_rate_limited, setup_cases_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_receiving_goes_back_to_the_live_connection,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_routing_id_taken_after_close_gets_nothing,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_stalled_loop_holds_few_unread_frames, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_burst_of_tiny_invalid_frames, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_bad_publishes_are_refused, h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_bad_signatures_are_refused, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_bad_signals_are_refused, h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_replayed_message_id_with_other_content, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_ack_of_another_principals_delivery, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_credit_window_overflow_is_clamped, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_publish_flood_is_rate_limited, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_connection_cap_per_principal, h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_silent_connections_are_closed, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_idle_client_after_a_restart_is_kept, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_revoked_connection_is_closed, h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_connections_over_the_cap_are_closed, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_over_the_cap_a_standby_is_not_closed, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_flows_over_the_cap_stand_by, h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_handshakes_are_rationed_per_principal, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_slow_handshakes_are_closed, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_hostile_policy_files_are_refused, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_acks_get_one_refusal_per_frame, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_burst_of_full_batches_is_spread_over_turns,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_unread_case_views_are_rate_limited, setup_cases_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_view_of_a_rolled_back_turn_refused_on_record,
                                        setup_cases_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_acks_are_rate_limited, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_unread_case_views_are_bounded_per_principal,
                                        setup_cases_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_push_waits_for_the_principal_bound, setup_cases_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_acks_of_withheld_deliveries_are_not_rationed,
                                        h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_smallest_principal_bound_still_delivers, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_unread_window_is_not_resent, setup_cases_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_busy_reader_gets_redelivery, h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_harness_lets_a_traced_loop_go, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_undeliverable_answers_are_summed_up, h_setup_broker,
                                        h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
