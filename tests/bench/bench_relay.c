/*
 * bench_relay.c — the baseline for the Schakel benches: a minimal relay made
 * of libzmq alone, measured in the same run on the same machine.
 *
 * A publisher DEALER sends N messages of B bytes over CURVE to the relay's
 * ROUTER; the relay fans each one out over CURVE to every subscriber DEALER
 * on a second ROUTER. A ZAP handler admits the two known keys (only at the
 * handshake). No policy, no signature, no store, no acks: what is left is
 * the transport's own cost, the ceiling a broker is compared with. Owns the
 * three zmq contexts and threads it starts; binds only 127.0.0.1 on run-time
 * ports. Bounded by a deadline. Exit status: 0 when every message arrived in
 * order, 1 otherwise, 2 on usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <zmq.h>

#include "schakel_limits.h"

#define RELAY_DEFAULT_COUNT 1000000u
#define RELAY_MAX_COUNT 100000000u
/* The backlog bench's item size; run.sh passes the size it measured. */
#define RELAY_DEFAULT_BYTES 1000u
#define RELAY_MIN_BYTES 8u /* room for the message's index */
#define RELAY_MAX_SUBSCRIBERS 8
#define RELAY_BATCH 512          /* messages relayed per loop turn, as the broker's turn */
#define RELAY_POLL_MS 100        /* how often loops look at the stop flag */
#define RELAY_IO_TIMEOUT_MS 1000 /* one blocking send or receive of a client */
#define RELAY_HELLO_TIMEOUT_MS 10000
#define RELAY_HELLO "hello"
#define RELAY_WELCOME "welcome"

static volatile sig_atomic_t relay_interrupted;

typedef struct relay_options {
    uint64_t count;
    unsigned bytes;
    double deadline_s; /* 0: derived from count */
    const char *json_path;
} relay_options_t;

typedef struct relay_keys {
    char public_z85[41];
    char secret_z85[41];
    uint8_t public_raw[32];
} relay_keys_t;

typedef struct subscriber_ref {
    uint8_t id[256];
    size_t len;
} subscriber_ref_t;

typedef struct relay {
    relay_options_t opt;
    int64_t deadline_ms;
    relay_keys_t server, publisher, subscriber;
    /* the relay (its own context, as another process would have) */
    void *relay_ctx, *zap, *in, *out;
    char in_endpoint[128], out_endpoint[128];
    subscriber_ref_t subs[RELAY_MAX_SUBSCRIBERS];
    size_t n_subs;
    uint64_t relayed;
    /* the clients */
    void *pub_ctx, *pub_socket, *sub_ctx, *sub_socket;
    atomic_int stop;
    atomic_int_fast64_t started_ns; /* the publisher's first timed send, 0 before */
    pthread_mutex_t lock;
    char problem[512];
    /* results */
    uint64_t received, out_of_order, wrong_size;
    double elapsed_s;
} relay_t;

/* ------------------------------------------------------------------ helpers */

static int64_t relay_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t relay_now_ms(void)
{
    return relay_now_ns() / 1000000;
}

static void relay_problem(relay_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Keep the first problem and make every loop stop. */
static void relay_problem(relay_t *r, const char *fmt, ...)
{
    pthread_mutex_lock(&r->lock);
    if (r->problem[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->problem, sizeof r->problem, fmt, ap);
        va_end(ap);
        fprintf(stderr, "bench_relay: %s\n", r->problem);
    }
    pthread_mutex_unlock(&r->lock);
    atomic_store(&r->stop, 1);
}

static int relay_out_of_time(relay_t *r)
{
    if (atomic_load(&r->stop))
        return 1;
    if (relay_interrupted) {
        relay_problem(r, "interrupted");
        return 1;
    }
    if (relay_now_ms() >= r->deadline_ms) {
        relay_problem(r, "deadline of %.0f s reached after %" PRIu64 " of %" PRIu64 " messages",
                      r->opt.deadline_s, r->received, r->opt.count);
        return 1;
    }
    return 0;
}

static int relay_keypair(relay_keys_t *k)
{
    if (zmq_curve_keypair(k->public_z85, k->secret_z85) != 0)
        return -1;
    return zmq_z85_decode(k->public_raw, k->public_z85) != NULL ? 0 : -1;
}

/* Options every socket gets: finite queues (as the broker's), no linger. */
static int relay_common_options(void *socket)
{
    int hwm_out = SCHAKEL_SNDHWM, hwm_in = SCHAKEL_RCVHWM, zero = 0;
    return zmq_setsockopt(socket, ZMQ_SNDHWM, &hwm_out, sizeof hwm_out) ||
           zmq_setsockopt(socket, ZMQ_RCVHWM, &hwm_in, sizeof hwm_in) ||
           zmq_setsockopt(socket, ZMQ_LINGER, &zero, sizeof zero);
}

/* ------------------------------------------------------------------ options */

static void relay_usage(FILE *out)
{
    fprintf(out,
            "usage: bench_relay [--count N] [--size BYTES] [--deadline SECONDS] [--json FILE]\n"
            "  --count N     messages to relay (default %u)\n"
            "  --size B      bytes per message (default %u, the backlog bench's signal)\n"
            "  --deadline S  give up after S seconds (default 60 + 240 per million)\n"
            "  --json FILE   results (default tests/bench/results/relay.json)\n",
            RELAY_DEFAULT_COUNT, RELAY_DEFAULT_BYTES);
}

static int relay_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Returns 0 to run, 1 for --help, 2 on a usage error. */
static int relay_parse_args(int argc, char **argv, relay_options_t *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        uint64_t v = 0;
        int bad = 0;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return 1;
        if (i + 1 >= argc) {
            fprintf(stderr, "bench_relay: %s needs a value (or is unknown)\n", a);
            return 2;
        }
        const char *value = argv[++i];
        if (strcmp(a, "--count") == 0) {
            bad = relay_parse_u64(value, 1, RELAY_MAX_COUNT, &o->count);
        } else if (strcmp(a, "--size") == 0) {
            bad = relay_parse_u64(value, RELAY_MIN_BYTES, SCHAKEL_MAX_FRAME_BYTES, &v);
            o->bytes = (unsigned)v;
        } else if (strcmp(a, "--deadline") == 0) {
            bad = relay_parse_u64(value, 1, 86400, &v);
            o->deadline_s = (double)v;
        } else if (strcmp(a, "--json") == 0) {
            o->json_path = value;
        } else {
            fprintf(stderr, "bench_relay: unknown option %s\n", a);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "bench_relay: %s %s is out of range\n", a, value);
            return 2;
        }
    }
    if (o->deadline_s == 0)
        o->deadline_s = 60.0 + 240.0 * (double)o->count / 1e6;
    return 0;
}

/* ------------------------------------------------------------------ the relay */

static int relay_key_allowed(const relay_t *r, const uint8_t *key)
{
    return memcmp(key, r->publisher.public_raw, 32) == 0 ||
           memcmp(key, r->subscriber.public_raw, 32) == 0;
}

/* One ZAP request (RFC 27): admit the two known CURVE keys, refuse others. */
static int relay_zap_handle(relay_t *r)
{
    zmq_msg_t parts[7];
    size_t kept = 0, total = 0;
    int more = 1, rc = 0;
    while (more) {
        zmq_msg_t scratch;
        zmq_msg_t *part = kept < 7 ? &parts[kept] : &scratch;
        zmq_msg_init(part);
        if (zmq_msg_recv(part, r->zap, 0) < 0) {
            zmq_msg_close(part);
            rc = -1;
            break;
        }
        more = zmq_msg_more(part);
        total++;
        if (part == &scratch)
            zmq_msg_close(part); /* an oversized request is read whole, then refused */
        else
            kept++;
    }
    if (rc == 0) {
        int ok = total == 7 && zmq_msg_size(&parts[5]) == 5 &&
                 memcmp(zmq_msg_data(&parts[5]), "CURVE", 5) == 0 &&
                 zmq_msg_size(&parts[6]) == 32 && relay_key_allowed(r, zmq_msg_data(&parts[6]));
        const void *request_id = kept >= 2 ? zmq_msg_data(&parts[1]) : "";
        size_t request_id_len = kept >= 2 ? zmq_msg_size(&parts[1]) : 0;
        rc = zmq_send(r->zap, "1.0", 3, ZMQ_SNDMORE) < 0 ||
                     zmq_send(r->zap, request_id, request_id_len, ZMQ_SNDMORE) < 0 ||
                     zmq_send(r->zap, ok ? "200" : "400", 3, ZMQ_SNDMORE) < 0 ||
                     zmq_send(r->zap, ok ? "OK" : "unknown key", ok ? 2 : 11, ZMQ_SNDMORE) < 0 ||
                     zmq_send(r->zap, ok ? "client" : "", ok ? 6 : 0, ZMQ_SNDMORE) < 0 ||
                     zmq_send(r->zap, "", 0, 0) < 0
                 ? -1
                 : 0;
    }
    for (size_t i = 0; i < kept; i++)
        zmq_msg_close(&parts[i]);
    return rc;
}

/* Receive routing id + one data frame from a ROUTER. Returns 1, 0 when
 * nothing is waiting, -1 on error. */
static int relay_recv_routed(void *socket, uint8_t *id, size_t *id_len, zmq_msg_t *data)
{
    int n = zmq_recv(socket, id, 256, ZMQ_DONTWAIT);
    if (n < 0)
        return zmq_errno() == EAGAIN ? 0 : -1;
    *id_len = (size_t)n > 256 ? 256 : (size_t)n;
    if (zmq_msg_recv(data, socket, 0) < 0)
        return -1;
    while (zmq_msg_more(data)) { /* one data frame is the protocol: drop extras */
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        int rc = zmq_msg_recv(&extra, socket, 0);
        zmq_msg_close(&extra);
        if (rc < 0)
            return -1;
    }
    return 1;
}

static int relay_is_hello(zmq_msg_t *data)
{
    return zmq_msg_size(data) == strlen(RELAY_HELLO) &&
           memcmp(zmq_msg_data(data), RELAY_HELLO, strlen(RELAY_HELLO)) == 0;
}

static int relay_send_routed(void *socket, const uint8_t *id, size_t id_len, const void *data,
                             size_t len)
{
    if (zmq_send(socket, id, id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    return zmq_send(socket, data, len, ZMQ_DONTWAIT) < 0 ? -1 : 0;
}

/* A subscriber says hello on the out socket: remember its routing id. */
static int relay_take_subscriber(relay_t *r)
{
    subscriber_ref_t s;
    zmq_msg_t data;
    zmq_msg_init(&data);
    int rc = relay_recv_routed(r->out, s.id, &s.len, &data);
    if (rc == 1 && relay_is_hello(&data) && r->n_subs < RELAY_MAX_SUBSCRIBERS) {
        r->subs[r->n_subs++] = s;
        if (relay_send_routed(r->out, s.id, s.len, RELAY_WELCOME, strlen(RELAY_WELCOME)) != 0)
            rc = -1;
    }
    zmq_msg_close(&data);
    return rc < 0 ? -1 : 0;
}

/* Send one message to every subscriber, waiting (bounded) while a
 * subscriber's queue is full: back-pressure reaches the publisher. */
static int relay_fan_out(relay_t *r, zmq_msg_t *data)
{
    for (size_t i = 0; i < r->n_subs; i++) {
        const subscriber_ref_t *s = &r->subs[i];
        zmq_msg_t copy;
        zmq_msg_init(&copy);
        zmq_msg_copy(&copy, data); /* reference-counted, no byte copy */
        /* rc: 0 sent, -1 failed (zmq_send itself returns a byte count) */
        int rc;
        while ((rc = zmq_send(r->out, s->id, s->len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ? -1 : 0) <
                   0 &&
               zmq_errno() == EAGAIN && !relay_out_of_time(r)) {
            zmq_pollitem_t wait = {.socket = r->out, .events = ZMQ_POLLOUT};
            (void)zmq_poll(&wait, 1, RELAY_POLL_MS);
        }
        /* ROUTER_MANDATORY takes the routing frame only when the whole
         * message fits, so the body cannot fail for EAGAIN. */
        if (rc == 0)
            rc = zmq_msg_send(&copy, r->out, ZMQ_DONTWAIT) < 0 ? -1 : 0;
        zmq_msg_close(&copy);
        if (rc != 0) {
            if (!relay_out_of_time(r))
                relay_problem(r, "relay send: %s", zmq_strerror(zmq_errno()));
            return -1;
        }
    }
    return 0;
}

/* Up to RELAY_BATCH messages from the in socket: a hello is answered, the
 * rest fanned out. */
static int relay_take_messages(relay_t *r)
{
    for (int n = 0; n < RELAY_BATCH; n++) {
        uint8_t id[256];
        size_t id_len = 0;
        zmq_msg_t data;
        zmq_msg_init(&data);
        int rc = relay_recv_routed(r->in, id, &id_len, &data);
        if (rc == 1 && relay_is_hello(&data))
            rc = relay_send_routed(r->in, id, id_len, RELAY_WELCOME, strlen(RELAY_WELCOME)) == 0
                     ? 1
                     : -1;
        else if (rc == 1 && relay_fan_out(r, &data) != 0)
            rc = -1;
        else if (rc == 1)
            r->relayed++;
        zmq_msg_close(&data);
        if (rc <= 0)
            return rc;
    }
    return 0;
}

static void *relay_run(void *arg)
{
    relay_t *r = arg;
    while (!atomic_load(&r->stop)) {
        zmq_pollitem_t items[] = {
            {.socket = r->zap, .events = ZMQ_POLLIN},
            {.socket = r->in, .events = ZMQ_POLLIN},
            {.socket = r->out, .events = ZMQ_POLLIN},
        };
        if (zmq_poll(items, 3, RELAY_POLL_MS) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            relay_problem(r, "relay poll: %s", zmq_strerror(zmq_errno()));
            break;
        }
        int rc = 0;
        if (items[0].revents & ZMQ_POLLIN)
            rc = relay_zap_handle(r);
        if (rc == 0 && (items[2].revents & ZMQ_POLLIN))
            rc = relay_take_subscriber(r);
        if (rc == 0 && (items[1].revents & ZMQ_POLLIN))
            rc = relay_take_messages(r);
        if (rc < 0) {
            if (!atomic_load(&r->stop))
                relay_problem(r, "relay: %s", zmq_strerror(zmq_errno()));
            break;
        }
    }
    return NULL;
}

static int relay_bind(void *socket, char *endpoint, size_t len)
{
    return zmq_bind(socket, "tcp://127.0.0.1:*") ||
           zmq_getsockopt(socket, ZMQ_LAST_ENDPOINT, endpoint, &len);
}

/* The relay's context: the ZAP handler first (it must exist before a CURVE
 * socket binds), then the two CURVE servers. */
static int relay_setup(relay_t *r)
{
    int one = 1;
    const char *domain = "relay";
    r->relay_ctx = zmq_ctx_new();
    if (r->relay_ctx == NULL)
        return -1;
    r->zap = zmq_socket(r->relay_ctx, ZMQ_REP);
    r->in = zmq_socket(r->relay_ctx, ZMQ_ROUTER);
    r->out = zmq_socket(r->relay_ctx, ZMQ_ROUTER);
    if (r->zap == NULL || r->in == NULL || r->out == NULL || relay_common_options(r->zap) != 0 ||
        zmq_bind(r->zap, "inproc://zeromq.zap.01") != 0)
        return -1;
    void *servers[2] = {r->in, r->out};
    for (int i = 0; i < 2; i++) {
        if (relay_common_options(servers[i]) != 0 ||
            zmq_setsockopt(servers[i], ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
            zmq_setsockopt(servers[i], ZMQ_CURVE_SECRETKEY, r->server.secret_z85, 40) != 0 ||
            zmq_setsockopt(servers[i], ZMQ_ZAP_DOMAIN, domain, strlen(domain)) != 0 ||
            zmq_setsockopt(servers[i], ZMQ_ROUTER_MANDATORY, &one, sizeof one) != 0)
            return -1;
    }
    return relay_bind(r->in, r->in_endpoint, sizeof r->in_endpoint) ||
                   relay_bind(r->out, r->out_endpoint, sizeof r->out_endpoint)
               ? -1
               : 0;
}

/* ------------------------------------------------------------------ clients */

/* A CURVE client DEALER in its own context, connected, having said hello
 * and heard welcome (so the handshake is behind it). */
static int relay_client(relay_t *r, const relay_keys_t *own, const char *endpoint, void **ctx,
                        void **socket)
{
    int io_timeout = RELAY_IO_TIMEOUT_MS;
    *ctx = zmq_ctx_new();
    *socket = *ctx != NULL ? zmq_socket(*ctx, ZMQ_DEALER) : NULL;
    if (*socket == NULL || relay_common_options(*socket) != 0 ||
        zmq_setsockopt(*socket, ZMQ_CURVE_SERVERKEY, r->server.public_z85, 40) != 0 ||
        zmq_setsockopt(*socket, ZMQ_CURVE_PUBLICKEY, own->public_z85, 40) != 0 ||
        zmq_setsockopt(*socket, ZMQ_CURVE_SECRETKEY, own->secret_z85, 40) != 0 ||
        zmq_setsockopt(*socket, ZMQ_SNDTIMEO, &io_timeout, sizeof io_timeout) != 0 ||
        zmq_setsockopt(*socket, ZMQ_RCVTIMEO, &io_timeout, sizeof io_timeout) != 0 ||
        zmq_connect(*socket, endpoint) != 0 ||
        zmq_send(*socket, RELAY_HELLO, strlen(RELAY_HELLO), 0) < 0)
        return -1;
    char answer[16];
    int64_t until = relay_now_ms() + RELAY_HELLO_TIMEOUT_MS;
    while (relay_now_ms() < until && !relay_out_of_time(r)) {
        int n = zmq_recv(*socket, answer, sizeof answer, 0);
        if (n == (int)strlen(RELAY_WELCOME) && memcmp(answer, RELAY_WELCOME, (size_t)n) == 0)
            return 0;
        if (n < 0 && zmq_errno() != EAGAIN && zmq_errno() != EINTR)
            return -1;
    }
    errno = ETIMEDOUT;
    return -1;
}

static void *relay_publisher_run(void *arg)
{
    relay_t *r = arg;
    if (relay_client(r, &r->publisher, r->in_endpoint, &r->pub_ctx, &r->pub_socket) != 0) {
        relay_problem(r, "publisher cannot reach the relay: %s", zmq_strerror(zmq_errno()));
        return NULL;
    }
    uint8_t *message = malloc(r->opt.bytes);
    if (message == NULL) {
        relay_problem(r, "out of memory");
        return NULL;
    }
    memset(message, 'x', r->opt.bytes);
    atomic_store(&r->started_ns, relay_now_ns());
    for (uint64_t i = 0; i < r->opt.count; i++) {
        memcpy(message, &i, sizeof i);
        while (zmq_send(r->pub_socket, message, r->opt.bytes, 0) < 0) {
            if ((zmq_errno() != EAGAIN && zmq_errno() != EINTR) || relay_out_of_time(r)) {
                if (!relay_out_of_time(r))
                    relay_problem(r, "publisher send: %s", zmq_strerror(zmq_errno()));
                free(message);
                return NULL;
            }
        }
    }
    free(message);
    return NULL;
}

/* Receive every message in the subscriber, checking size and order. */
static void relay_subscribe_all(relay_t *r)
{
    uint8_t *buf = malloc((size_t)r->opt.bytes + 1);
    if (buf == NULL) {
        relay_problem(r, "out of memory");
        return;
    }
    uint64_t expected = 0;
    while (r->received < r->opt.count && !relay_out_of_time(r)) {
        int n = zmq_recv(r->sub_socket, buf, (size_t)r->opt.bytes + 1, 0);
        if (n < 0) {
            if (zmq_errno() == EAGAIN || zmq_errno() == EINTR)
                continue;
            relay_problem(r, "subscriber receive: %s", zmq_strerror(zmq_errno()));
            break;
        }
        uint64_t index = 0;
        if ((unsigned)n != r->opt.bytes)
            r->wrong_size++;
        else
            memcpy(&index, buf, sizeof index);
        if (index != expected)
            r->out_of_order++;
        expected = index + 1;
        r->received++;
    }
    int64_t started = atomic_load(&r->started_ns);
    r->elapsed_s = started > 0 ? (double)(relay_now_ns() - started) / 1e9 : 0;
    free(buf);
}

/* ------------------------------------------------------------------ report */

static void relay_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static int relay_write_json(const relay_t *r, int completed, double rate)
{
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", r->opt.json_path);
    char *slash = strrchr(parent, '/');
    if (slash != NULL) {
        *slash = '\0';
        (void)mkdir(parent, 0755); /* the results folder; its parent must exist */
    }
    FILE *f = fopen(r->opt.json_path, "w");
    if (f == NULL) {
        fprintf(stderr, "bench_relay: cannot write %s: %s\n", r->opt.json_path, strerror(errno));
        return -1;
    }
    fprintf(f, "{\n  \"bench\": \"relay\",\n  \"completed\": %s,\n", completed ? "true" : "false");
    fprintf(f, "  \"count\": %" PRIu64 ",\n  \"message_bytes\": %u,\n", r->opt.count, r->opt.bytes);
    fprintf(f, "  \"subscribers\": %zu,\n  \"deadline_s\": %.0f,\n", r->n_subs, r->opt.deadline_s);
    fprintf(f, "  \"received\": %" PRIu64 ",\n  \"out_of_order\": %" PRIu64 ",\n", r->received,
            r->out_of_order);
    fprintf(f, "  \"wrong_size\": %" PRIu64 ",\n  \"relay_s\": %.3f,\n", r->wrong_size,
            r->elapsed_s);
    fprintf(f, "  \"relay_messages_per_s\": %.1f,\n", rate);
    fprintf(f, "  \"relay_mib_per_s\": %.1f,\n", rate * r->opt.bytes / 1048576.0);
    fprintf(f, "  \"problem\": ");
    relay_json_string(f, r->problem);
    fprintf(f, "\n}\n");
    return fclose(f);
}

static void relay_print_table(const relay_t *r, double rate)
{
    const char *rule = "------------------------------------------------------------------------"
                       "--------------";
    printf("\nlibzmq relay baseline: %" PRIu64 " messages of %u bytes, CURVE in and out, "
           "%zu subscriber(s)\n%s\n",
           r->opt.count, r->opt.bytes, r->n_subs, rule);
    printf("%-22s %" PRIu64 " messages in %.2f s: %.0f messages/s, %.1f MiB/s\n", "relayed",
           r->received, r->elapsed_s, rate, rate * r->opt.bytes / 1048576.0);
    printf("%-22s %" PRIu64 " out of order, %" PRIu64 " of a wrong size, %" PRIu64 " missing\n",
           "check", r->out_of_order, r->wrong_size, r->opt.count - r->received);
    if (r->problem[0] != '\0')
        printf("problem: %s\n", r->problem);
    printf("%s\n", rule);
}

/* ------------------------------------------------------------------ main */

static void relay_on_signal(int sig)
{
    (void)sig;
    relay_interrupted = 1;
}

static void relay_close_all(relay_t *r)
{
    void *sockets[] = {r->pub_socket, r->sub_socket, r->zap, r->in, r->out};
    for (size_t i = 0; i < sizeof sockets / sizeof sockets[0]; i++)
        if (sockets[i] != NULL)
            zmq_close(sockets[i]);
    void *contexts[] = {r->pub_ctx, r->sub_ctx, r->relay_ctx};
    for (size_t i = 0; i < sizeof contexts / sizeof contexts[0]; i++)
        if (contexts[i] != NULL)
            zmq_ctx_term(contexts[i]);
}

/* Relay thread, subscriber here, publisher thread; then stop them all. */
static void relay_measure(relay_t *r)
{
    pthread_t relay_thread, publisher_thread;
    if (relay_setup(r) != 0) {
        relay_problem(r, "relay setup: %s", zmq_strerror(zmq_errno()));
        return;
    }
    if (pthread_create(&relay_thread, NULL, relay_run, r) != 0) {
        relay_problem(r, "cannot start the relay thread");
        return;
    }
    int publishing = 0;
    if (relay_client(r, &r->subscriber, r->out_endpoint, &r->sub_ctx, &r->sub_socket) != 0)
        relay_problem(r, "subscriber cannot reach the relay: %s", zmq_strerror(zmq_errno()));
    else if (pthread_create(&publisher_thread, NULL, relay_publisher_run, r) != 0)
        relay_problem(r, "cannot start the publisher thread");
    else
        publishing = 1;
    if (publishing)
        relay_subscribe_all(r);
    atomic_store(&r->stop, 1);
    if (publishing)
        pthread_join(publisher_thread, NULL);
    pthread_join(relay_thread, NULL);
}

int main(int argc, char **argv)
{
    static relay_t relay;
    relay_t *r = &relay;
    r->opt = (relay_options_t){.count = RELAY_DEFAULT_COUNT,
                               .bytes = RELAY_DEFAULT_BYTES,
                               .json_path = "tests/bench/results/relay.json"};
    int rc = relay_parse_args(argc, argv, &r->opt);
    if (rc != 0) {
        relay_usage(rc == 1 ? stdout : stderr);
        return rc == 1 ? 0 : 2;
    }
    pthread_mutex_init(&r->lock, NULL);
    r->deadline_ms = relay_now_ms() + (int64_t)(r->opt.deadline_s * 1000.0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = relay_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (!zmq_has("curve") || relay_keypair(&r->server) != 0 || relay_keypair(&r->publisher) != 0 ||
        relay_keypair(&r->subscriber) != 0) {
        fprintf(stderr, "bench_relay: this libzmq cannot make CURVE keys\n");
        return 1;
    }
    relay_measure(r);
    relay_close_all(r);
    int completed = r->received == r->opt.count && r->out_of_order == 0 && r->wrong_size == 0;
    double rate = r->elapsed_s > 0 ? (double)r->received / r->elapsed_s : 0;
    relay_print_table(r, rate);
    int json_rc = relay_write_json(r, completed, rate);
    pthread_mutex_destroy(&r->lock);
    return completed && json_rc == 0 ? 0 : 1;
}
