/*
 * bench_relay.c — the baseline of the Schakel benches: a minimal relay made
 * of libzmq alone, measured in the same run on the same machine.
 *
 * Publisher DEALERs send messages over CURVE to the relay's ROUTER; the relay
 * fans each one out over CURVE to 3 subscriber DEALERs on a second ROUTER. A
 * ZAP handler admits the known keys (only at the handshake). No policy, no
 * signature, no store, no acks: the transport's own cost, the ceiling a
 * broker is compared with. Measures sustained throughput, latency at paced
 * rates (against each message's scheduled send time), CPU per message and
 * peak RSS. Owns the zmq contexts and threads it starts; binds 127.0.0.1 on
 * run-time ports; bounded by a deadline. Exit status: 0 when every message
 * reached every subscriber exactly once, 1 otherwise, 2 on usage.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "schakel_limits.h"
#include "support.h"

#define RELAY_DEFAULT_COUNT 300000u
#define RELAY_MAX_COUNT 100000000u
#define RELAY_DEFAULT_BYTES 1024u
/* Every message starts with its scheduled send time (8 bytes), its phase
 * (4) and its number within the phase (8): 20 bytes, and room to spare. */
#define RELAY_MIN_BYTES 24u
#define RELAY_SUBSCRIBERS 3u
#define RELAY_MAX_PUBLISHERS 4u
#define RELAY_MAX_RATE 1000000u
#define RELAY_DEFAULT_LATENCY_S 3u
#define RELAY_BATCH 512         /* messages relayed per loop turn, as the broker's turn */
#define RELAY_POLL_MS 100       /* how often loops look at the stop flag */
#define RELAY_IO_TIMEOUT_MS 100 /* one blocking send or receive, then the flags again */
#define RELAY_HELLO_TIMEOUT_MS 10000
#define RELAY_SILENCE_MS 15000        /* a subscriber that hears nothing this long gives up */
#define RELAY_PACE_LEAD_NS 20000000LL /* the first paced send is 20 ms after the start */
#define RELAY_CDF_POINTS 4000
#define RELAY_MAX_TASKS 64
#define RELAY_HELLO "hello"
#define RELAY_WELCOME "welcome"

typedef struct relay_options {
    uint64_t count;
    unsigned bytes;
    unsigned publishers;
    bench_rates_t rates;
    unsigned latency_s;
    double deadline_s; /* 0: derived from count and the latency runs */
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

/* One run: a throughput run (rate 0, as fast as possible) or a paced one. */
typedef struct relay_phase {
    unsigned number; /* 1-based, carried in every message */
    unsigned rate;   /* messages/s; 0: as fast as the relay takes them */
    uint64_t count;  /* messages of all publishers */
    unsigned publishers;
    int64_t start_ns; /* the first scheduled send */
} relay_phase_t;

/* What one phase measured. */
typedef struct relay_phase_result {
    int ran;
    uint64_t count, delivered, duplicates, stale, malformed, missing;
    double publish_s, deliver_s; /* first send to the relay's last message / last delivery */
    double publishes_per_s, deliveries_per_s;
    double cpu_thread_s, cpu_io_s; /* relay thread; the relay context's libzmq threads */
    bench_latency_t lat;
} relay_phase_result_t;

typedef struct relay relay_t;

typedef struct relay_client {
    relay_t *relay;
    unsigned number; /* 0-based */
    relay_keys_t keys;
    void *ctx, *socket;
    pthread_t thread;
    int started;
    /* per phase (subscribers) */
    uint8_t *seen; /* one bit per message of the phase */
    uint64_t distinct, duplicates, stale, malformed;
    int64_t last_ns;
    bench_hist_t hist;
} relay_client_t;

struct relay {
    relay_options_t opt;
    int64_t deadline_ms;
    relay_keys_t server;
    /* the relay (its own context, as another process would have) */
    void *relay_ctx, *zap, *in, *out;
    char in_endpoint[128], out_endpoint[128];
    subscriber_ref_t subs[RELAY_SUBSCRIBERS];
    size_t n_subs;
    pthread_t relay_thread;
    int relay_started;
    pid_t io_tids[RELAY_MAX_TASKS]; /* the relay context's own libzmq threads */
    size_t n_io_tids;
    atomic_uint_fast64_t relayed;
    atomic_int_fast64_t last_relay_ns;
    atomic_int shutdown; /* the relay loop ends */
    atomic_int stop;     /* something failed or the deadline passed: every loop ends */
    /* the clients, each in its own context */
    relay_client_t pubs[RELAY_MAX_PUBLISHERS];
    relay_client_t subscribers[RELAY_SUBSCRIBERS];
    const relay_phase_t *phase; /* set before a phase's threads start */
    pthread_mutex_t lock;
    char problem[512];
    /* results */
    relay_phase_result_t throughput;
    relay_phase_result_t latency[BENCH_MAX_RATES];
    long peak_rss_kib;
    double load_start, load_end;
};

/* ------------------------------------------------------------------ helpers */

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
    if (bench_interrupted()) {
        relay_problem(r, "interrupted");
        return 1;
    }
    if (bench_now_ms() >= r->deadline_ms) {
        relay_problem(r, "deadline of %.0f s reached", r->opt.deadline_s);
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

/* Options every socket gets: finite queues (as the broker's), no linger,
 * blocking calls that return every RELAY_IO_TIMEOUT_MS to look at the flags. */
static int relay_common_options(void *socket)
{
    int hwm_out = SCHAKEL_SNDHWM, hwm_in = SCHAKEL_RCVHWM, zero = 0, io = RELAY_IO_TIMEOUT_MS;
    return zmq_setsockopt(socket, ZMQ_SNDHWM, &hwm_out, sizeof hwm_out) ||
           zmq_setsockopt(socket, ZMQ_RCVHWM, &hwm_in, sizeof hwm_in) ||
           zmq_setsockopt(socket, ZMQ_LINGER, &zero, sizeof zero) ||
           zmq_setsockopt(socket, ZMQ_SNDTIMEO, &io, sizeof io) ||
           zmq_setsockopt(socket, ZMQ_RCVTIMEO, &io, sizeof io);
}

static void relay_put_u64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, sizeof v);
}

static uint64_t relay_get_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* ------------------------------------------------------------------ CPU of threads */

/* The ids of this process's threads (from /proc/self/task). */
static size_t relay_list_tasks(pid_t *out, size_t max)
{
    DIR *d = opendir("/proc/self/task");
    size_t n = 0;
    if (d == NULL)
        return 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL && n < max)
        if (e->d_name[0] != '.')
            out[n++] = (pid_t)atol(e->d_name);
    closedir(d);
    return n;
}

/* User + system CPU seconds of one thread of ours, 0 if it cannot be read. */
static double relay_task_cpu_s(pid_t tid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%ld/stat", (long)tid);
    double s = bench_stat_cpu_s(path);
    return s < 0 ? 0 : s;
}

/* The relay thread's own CPU clock (CLOCK_THREAD_CPUTIME_ID of that thread). */
static double relay_thread_cpu_s(const relay_t *r)
{
    clockid_t clock;
    struct timespec ts;
    if (!r->relay_started || pthread_getcpuclockid(r->relay_thread, &clock) != 0 ||
        clock_gettime(clock, &ts) != 0)
        return 0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The libzmq threads of the relay's context: CURVE encryption and the TCP
 * work happen there, not in the relay thread. */
static double relay_io_cpu_s(const relay_t *r)
{
    double sum = 0;
    for (size_t i = 0; i < r->n_io_tids; i++)
        sum += relay_task_cpu_s(r->io_tids[i]);
    return sum;
}

/* ------------------------------------------------------------------ options */

static void relay_usage(FILE *out)
{
    fprintf(out,
            "usage: bench_relay [--count N] [--size BYTES] [--publishers P] [--rates R,R,...]\n"
            "                   [--latency-seconds S] [--deadline SECONDS] [--json FILE]\n"
            "  --count N            messages of the throughput run (default %u)\n"
            "  --size B             bytes per message, at least %u (default %u)\n"
            "  --publishers P       publisher connections of the throughput run, 1..%u "
            "(default 1)\n"
            "  --rates R,...        paced latency runs, messages/s (default 1000,5000,10000; "
            "0 = none)\n"
            "  --latency-seconds S  length of each paced run (default %u)\n"
            "  --deadline S         give up after S seconds (default 60 + 240 per million\n"
            "                       messages + the paced runs)\n"
            "  --json FILE          results (default tests/bench/results/relay.json); the\n"
            "                       CDFs go next to it as cdf_relay_<rate>.dat\n",
            RELAY_DEFAULT_COUNT, RELAY_MIN_BYTES, RELAY_DEFAULT_BYTES, RELAY_MAX_PUBLISHERS,
            RELAY_DEFAULT_LATENCY_S);
}

/* Returns 0 to run, 1 for --help, 2 on a usage error. */
static int relay_parse_args(int argc, char **argv, relay_options_t *o)
{
    const bench_option_t options[] = {
        {"--count", BENCH_OPT_U64, &o->count, 1, RELAY_MAX_COUNT, NULL},
        {"--size", BENCH_OPT_UNSIGNED, &o->bytes, RELAY_MIN_BYTES, SCHAKEL_MAX_FRAME_BYTES, NULL},
        {"--publishers", BENCH_OPT_UNSIGNED, &o->publishers, 1, RELAY_MAX_PUBLISHERS, NULL},
        {"--rates", BENCH_OPT_RATES, &o->rates, 1, RELAY_MAX_RATE, NULL},
        {"--latency-seconds", BENCH_OPT_UNSIGNED, &o->latency_s, 1, 600, NULL},
        {"--deadline", BENCH_OPT_SECONDS, &o->deadline_s, 1, 86400, NULL},
        {"--json", BENCH_OPT_TEXT, &o->json_path, 0, 0, NULL},
    };
    int rc = bench_parse_options(argc, argv, options, sizeof options / sizeof options[0]);
    if (rc != 0)
        return rc;
    if (o->deadline_s == 0)
        o->deadline_s =
            60.0 + 240.0 * (double)o->count / 1e6 + 2.0 * (double)(o->latency_s * o->rates.n);
    return 0;
}

/* ------------------------------------------------------------------ the relay */

static int relay_key_allowed(const relay_t *r, const uint8_t *key)
{
    for (unsigned i = 0; i < RELAY_MAX_PUBLISHERS; i++)
        if (memcmp(key, r->pubs[i].keys.public_raw, 32) == 0)
            return 1;
    for (unsigned i = 0; i < RELAY_SUBSCRIBERS; i++)
        if (memcmp(key, r->subscribers[i].keys.public_raw, 32) == 0)
            return 1;
    return 0;
}

/* One ZAP request (RFC 27): admit the known CURVE keys, refuse others. */
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
    if (rc == 1 && relay_is_hello(&data) && r->n_subs < RELAY_SUBSCRIBERS) {
        r->subs[r->n_subs++] = s;
        if (relay_send_routed(r->out, s.id, s.len, RELAY_WELCOME, strlen(RELAY_WELCOME)) != 0)
            rc = -1;
    }
    zmq_msg_close(&data);
    return rc < 0 ? -1 : 0;
}

/* Send one message to every subscriber. A subscriber whose queue is full
 * makes the send block (ROUTER_MANDATORY, SNDTIMEO): back-pressure reaches
 * the publisher, and the relay thread sleeps meanwhile instead of spinning. */
static int relay_fan_out(relay_t *r, zmq_msg_t *data)
{
    for (size_t i = 0; i < r->n_subs; i++) {
        const subscriber_ref_t *s = &r->subs[i];
        int rc;
        while ((rc = zmq_send(r->out, s->id, s->len, ZMQ_SNDMORE)) < 0 && zmq_errno() == EAGAIN &&
               !relay_out_of_time(r))
            ;
        if (rc >= 0) {
            /* ROUTER_MANDATORY takes the routing frame only when the whole
             * message fits, so the body cannot fail for EAGAIN. */
            zmq_msg_t copy;
            zmq_msg_init(&copy);
            zmq_msg_copy(&copy, data); /* reference-counted, no byte copy */
            rc = zmq_msg_send(&copy, r->out, ZMQ_DONTWAIT);
            zmq_msg_close(&copy);
        }
        if (rc < 0) {
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
        if (rc == 1 && relay_is_hello(&data)) {
            rc = relay_send_routed(r->in, id, id_len, RELAY_WELCOME, strlen(RELAY_WELCOME)) == 0
                     ? 1
                     : -1;
        } else if (rc == 1 && relay_fan_out(r, &data) != 0) {
            rc = -1;
        } else if (rc == 1) {
            atomic_fetch_add(&r->relayed, 1);
            atomic_store(&r->last_relay_ns, bench_now_ns());
        }
        zmq_msg_close(&data);
        if (rc <= 0)
            return rc;
    }
    return 0;
}

static void *relay_run(void *arg)
{
    relay_t *r = arg;
    while (!atomic_load(&r->shutdown) && !atomic_load(&r->stop)) {
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

/* The threads libzmq started for the relay's context: those that exist now
 * and did not before. */
static void relay_note_io_threads(relay_t *r, const pid_t *before, size_t n_before)
{
    pid_t now[RELAY_MAX_TASKS];
    size_t n = relay_list_tasks(now, RELAY_MAX_TASKS);
    for (size_t i = 0; i < n; i++) {
        int known = 0;
        for (size_t j = 0; j < n_before && !known; j++)
            known = now[i] == before[j];
        if (!known && r->n_io_tids < RELAY_MAX_TASKS)
            r->io_tids[r->n_io_tids++] = now[i];
    }
}

/* The relay's context: the ZAP handler first (it must exist before a CURVE
 * socket binds), then the two CURVE servers. Runs before any other thread
 * of ours exists, so that the new threads are the relay context's. */
static int relay_setup(relay_t *r)
{
    int one = 1;
    const char *domain = "relay";
    pid_t before[RELAY_MAX_TASKS];
    size_t n_before = relay_list_tasks(before, RELAY_MAX_TASKS);
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
    if (relay_bind(r->in, r->in_endpoint, sizeof r->in_endpoint) ||
        relay_bind(r->out, r->out_endpoint, sizeof r->out_endpoint))
        return -1;
    relay_note_io_threads(r, before, n_before);
    return 0;
}

/* ------------------------------------------------------------------ clients */

/* A CURVE client DEALER in its own context, connected, having said hello
 * and heard welcome (so the handshake is behind it). */
static int relay_client_connect(relay_t *r, relay_client_t *c, const char *endpoint)
{
    c->ctx = zmq_ctx_new();
    c->socket = c->ctx != NULL ? zmq_socket(c->ctx, ZMQ_DEALER) : NULL;
    if (c->socket == NULL || relay_common_options(c->socket) != 0 ||
        zmq_setsockopt(c->socket, ZMQ_CURVE_SERVERKEY, r->server.public_z85, 40) != 0 ||
        zmq_setsockopt(c->socket, ZMQ_CURVE_PUBLICKEY, c->keys.public_z85, 40) != 0 ||
        zmq_setsockopt(c->socket, ZMQ_CURVE_SECRETKEY, c->keys.secret_z85, 40) != 0 ||
        zmq_connect(c->socket, endpoint) != 0)
        return -1;
    int64_t until = bench_now_ms() + RELAY_HELLO_TIMEOUT_MS;
    int sent = 0;
    while (bench_now_ms() < until && !relay_out_of_time(r)) {
        if (!sent) {
            sent = zmq_send(c->socket, RELAY_HELLO, strlen(RELAY_HELLO), 0) >= 0;
            continue;
        }
        char answer[16];
        int n = zmq_recv(c->socket, answer, sizeof answer, 0);
        if (n == (int)strlen(RELAY_WELCOME) && memcmp(answer, RELAY_WELCOME, (size_t)n) == 0)
            return 0;
        if (n < 0 && zmq_errno() != EAGAIN && zmq_errno() != EINTR)
            return -1;
    }
    errno = ETIMEDOUT;
    return -1;
}

/* The messages of one phase that publisher `number` sends: numbers
 * number, number + P, number + 2P, ... below the phase's count. */
static uint64_t relay_share(const relay_phase_t *ph, unsigned number)
{
    return ph->count / ph->publishers + (number < ph->count % ph->publishers);
}

static void *relay_publisher_run(void *arg)
{
    relay_client_t *p = arg;
    relay_t *r = p->relay;
    const relay_phase_t *ph = r->phase;
    uint8_t *message = malloc(r->opt.bytes);
    if (message == NULL) {
        relay_problem(r, "out of memory");
        return NULL;
    }
    memset(message, 'x', r->opt.bytes);
    uint32_t phase_number = ph->number;
    memcpy(message + 8, &phase_number, sizeof phase_number);
    uint64_t mine = relay_share(ph, p->number);
    double interval_ns = ph->rate > 0 ? 1e9 / (double)ph->rate : 0;
    for (uint64_t j = 0; j < mine && !atomic_load(&r->stop); j++) {
        uint64_t number = j * ph->publishers + p->number;
        int64_t at;
        if (ph->rate > 0) {
            /* the scheduled time, not the send time: a relay that falls
             * behind shows as latency (no coordinated omission) */
            at = ph->start_ns + (int64_t)((double)number * interval_ns);
            bench_sleep_until_ns(at);
        } else {
            at = bench_now_ns();
        }
        relay_put_u64(message, (uint64_t)at);
        relay_put_u64(message + 12, number);
        while (zmq_send(p->socket, message, r->opt.bytes, 0) < 0) {
            if ((zmq_errno() != EAGAIN && zmq_errno() != EINTR) || relay_out_of_time(r)) {
                if (!relay_out_of_time(r))
                    relay_problem(r, "publisher %u send: %s", p->number + 1,
                                  zmq_strerror(zmq_errno()));
                free(message);
                return NULL;
            }
        }
    }
    free(message);
    return NULL;
}

/* One message at a subscriber: the phase's, of the right size, not seen
 * before; its latency against the scheduled send time. */
static void relay_subscriber_take(relay_client_t *s, const relay_phase_t *ph, const uint8_t *buf,
                                  int n, int64_t now)
{
    uint32_t phase_number = 0;
    if ((unsigned)n != s->relay->opt.bytes) {
        s->malformed++;
        return;
    }
    memcpy(&phase_number, buf + 8, sizeof phase_number);
    uint64_t number = relay_get_u64(buf + 12);
    if (phase_number != ph->number) {
        s->stale++;
        return;
    }
    if (number >= ph->count) {
        s->malformed++;
        return;
    }
    uint8_t bit = (uint8_t)(1u << (number % 8));
    if (s->seen[number / 8] & bit) {
        s->duplicates++;
        return;
    }
    s->seen[number / 8] |= bit;
    s->distinct++;
    s->last_ns = now;
    if (ph->rate > 0)
        bench_hist_add(&s->hist, now - (int64_t)relay_get_u64(buf));
}

static void *relay_subscriber_run(void *arg)
{
    relay_client_t *s = arg;
    relay_t *r = s->relay;
    const relay_phase_t *ph = r->phase;
    uint8_t *buf = malloc((size_t)r->opt.bytes + 1);
    if (buf == NULL) {
        relay_problem(r, "out of memory");
        return NULL;
    }
    int64_t heard_ms = bench_now_ms();
    while (s->distinct < ph->count && !relay_out_of_time(r)) {
        int n = zmq_recv(s->socket, buf, (size_t)r->opt.bytes + 1, 0);
        if (n < 0) {
            if (zmq_errno() != EAGAIN && zmq_errno() != EINTR) {
                relay_problem(r, "subscriber %u receive: %s", s->number + 1,
                              zmq_strerror(zmq_errno()));
                break;
            }
            if (bench_now_ms() - heard_ms > RELAY_SILENCE_MS) {
                relay_problem(r,
                              "subscriber %u heard nothing for %d s with %" PRIu64 " of %" PRIu64
                              " messages of phase %u",
                              s->number + 1, RELAY_SILENCE_MS / 1000, s->distinct, ph->count,
                              ph->number);
                break;
            }
            continue;
        }
        heard_ms = bench_now_ms();
        relay_subscriber_take(s, ph, buf, n, bench_now_ns());
    }
    free(buf);
    return NULL;
}

/* ------------------------------------------------------------------ phases */

static int relay_phase_prepare(relay_t *r, const relay_phase_t *ph)
{
    for (unsigned i = 0; i < RELAY_SUBSCRIBERS; i++) {
        relay_client_t *s = &r->subscribers[i];
        free(s->seen);
        bench_hist_free(&s->hist);
        s->seen = calloc(ph->count / 8 + 1, 1);
        s->distinct = s->duplicates = s->stale = s->malformed = 0;
        s->last_ns = 0;
        if (s->seen == NULL || bench_hist_init(&s->hist, ph->rate > 0 ? ph->count : 1) != 0) {
            relay_problem(r, "out of memory for phase %u", ph->number);
            return -1;
        }
    }
    return 0;
}

static void relay_start(relay_t *r, relay_client_t *c, void *(*run)(void *), const char *what)
{
    c->started = pthread_create(&c->thread, NULL, run, c) == 0;
    if (!c->started)
        relay_problem(r, "cannot start %s thread %u", what, c->number + 1);
}

static void relay_join(relay_client_t *c)
{
    if (c->started)
        pthread_join(c->thread, NULL);
    c->started = 0;
}

/* The latency of a paced phase, from every subscriber; its CDF file. */
static void relay_phase_latency(relay_t *r, const relay_phase_t *ph, relay_phase_result_t *res)
{
    const bench_hist_t *hists[RELAY_SUBSCRIBERS];
    for (unsigned i = 0; i < RELAY_SUBSCRIBERS; i++)
        hists[i] = &r->subscribers[i].hist;
    if (bench_latency_summarize(hists, RELAY_SUBSCRIBERS, r->opt.json_path, "relay", ph->rate,
                                RELAY_CDF_POINTS, &res->lat) != 0)
        relay_problem(r, "out of memory for the latencies");
}

/* Run one phase: subscribers first, then the publishers; wait for both. */
static void relay_run_phase(relay_t *r, relay_phase_t *ph, relay_phase_result_t *res)
{
    memset(res, 0, sizeof *res);
    res->count = ph->count;
    if (atomic_load(&r->stop) || relay_phase_prepare(r, ph) != 0)
        return;
    res->ran = 1;
    double thread0 = relay_thread_cpu_s(r), io0 = relay_io_cpu_s(r);
    ph->start_ns = bench_now_ns() + (ph->rate > 0 ? RELAY_PACE_LEAD_NS : 0);
    r->phase = ph;
    for (unsigned i = 0; i < RELAY_SUBSCRIBERS; i++)
        relay_start(r, &r->subscribers[i], relay_subscriber_run, "subscriber");
    for (unsigned i = 0; i < ph->publishers; i++)
        relay_start(r, &r->pubs[i], relay_publisher_run, "publisher");
    for (unsigned i = 0; i < ph->publishers; i++)
        relay_join(&r->pubs[i]);
    for (unsigned i = 0; i < RELAY_SUBSCRIBERS; i++)
        relay_join(&r->subscribers[i]);
    res->cpu_thread_s = relay_thread_cpu_s(r) - thread0;
    res->cpu_io_s = relay_io_cpu_s(r) - io0;
    int64_t last = 0;
    for (unsigned i = 0; i < RELAY_SUBSCRIBERS; i++) {
        const relay_client_t *s = &r->subscribers[i];
        res->delivered += s->distinct;
        res->duplicates += s->duplicates;
        res->stale += s->stale;
        res->malformed += s->malformed;
        if (s->last_ns > last)
            last = s->last_ns;
    }
    res->missing = ph->count * RELAY_SUBSCRIBERS - res->delivered;
    int64_t last_relay = atomic_load(&r->last_relay_ns);
    res->publish_s = last_relay > ph->start_ns ? (double)(last_relay - ph->start_ns) / 1e9 : 0;
    res->deliver_s = last > ph->start_ns ? (double)(last - ph->start_ns) / 1e9 : 0;
    res->publishes_per_s = res->publish_s > 0 ? (double)ph->count / res->publish_s : 0;
    res->deliveries_per_s = res->deliver_s > 0 ? (double)res->delivered / res->deliver_s : 0;
    if (ph->rate > 0)
        relay_phase_latency(r, ph, res);
    if (res->missing > 0 || res->duplicates > 0 || res->stale > 0 || res->malformed > 0)
        relay_problem(r,
                      "phase %u: %" PRIu64 " deliveries missing, %" PRIu64 " duplicates, %" PRIu64
                      " from an earlier phase, %" PRIu64 " malformed",
                      ph->number, res->missing, res->duplicates, res->stale, res->malformed);
}

/* ------------------------------------------------------------------ report */

static int relay_phase_ok(const relay_phase_result_t *p)
{
    return p->ran && p->missing == 0 && p->duplicates == 0 && p->stale == 0 && p->malformed == 0;
}

static int relay_completed(const relay_t *r)
{
    if (!relay_phase_ok(&r->throughput))
        return 0;
    for (size_t i = 0; i < r->opt.rates.n; i++)
        if (!relay_phase_ok(&r->latency[i]))
            return 0;
    return r->problem[0] == '\0';
}

static double relay_per_1000(double cpu_s, uint64_t count)
{
    return count > 0 ? cpu_s * 1000.0 / (double)count : 0;
}

static void relay_json_latency(FILE *f, unsigned rate, const relay_phase_result_t *p)
{
    bench_json_latency(f, rate, &p->lat, p->ran);
    fprintf(f, "  \"lat_%u_messages\": %" PRIu64 ",\n", rate, p->count);
    fprintf(f, "  \"lat_%u_missing\": %" PRIu64 ",\n", rate, p->missing);
}

static int relay_write_json(const relay_t *r, int completed)
{
    const relay_phase_result_t *t = &r->throughput;
    FILE *f = bench_json_open(r->opt.json_path);
    if (f == NULL)
        return -1;
    fprintf(f, "{\n  \"bench\": \"relay\",\n  \"completed\": %s,\n", completed ? "true" : "false");
    fprintf(f, "  \"count\": %" PRIu64 ",\n  \"message_bytes\": %u,\n", r->opt.count, r->opt.bytes);
    fprintf(f, "  \"subscribers\": %u,\n  \"publishers\": %u,\n", RELAY_SUBSCRIBERS,
            r->opt.publishers);
    fprintf(f, "  \"deadline_s\": %.0f,\n", r->opt.deadline_s);
    fprintf(f, "  \"relay_publishes_per_s\": %.1f,\n", t->publishes_per_s);
    fprintf(f, "  \"relay_deliveries_per_s\": %.1f,\n", t->deliveries_per_s);
    fprintf(f, "  \"relay_publish_s\": %.3f,\n  \"relay_deliver_s\": %.3f,\n", t->publish_s,
            t->deliver_s);
    fprintf(f, "  \"deliveries\": %" PRIu64 ",\n  \"missing\": %" PRIu64 ",\n", t->delivered,
            t->missing);
    fprintf(f, "  \"duplicates\": %" PRIu64 ",\n", t->duplicates);
    fprintf(f, "  \"relay_cpu_s_per_1000\": %.5f,\n",
            relay_per_1000(t->cpu_thread_s + t->cpu_io_s, t->count));
    fprintf(f, "  \"relay_thread_cpu_s_per_1000\": %.5f,\n",
            relay_per_1000(t->cpu_thread_s, t->count));
    fprintf(f, "  \"relay_io_cpu_s_per_1000\": %.5f,\n", relay_per_1000(t->cpu_io_s, t->count));
    fprintf(f, "  \"peak_rss_kib\": %ld,\n", r->peak_rss_kib);
    fprintf(f, "  \"latency_seconds\": %u,\n", r->opt.latency_s);
    fprintf(f, "  \"loadavg_start\": %.2f,\n  \"loadavg_end\": %.2f,\n  \"cpus\": %ld,\n",
            r->load_start, r->load_end, sysconf(_SC_NPROCESSORS_ONLN));
    for (size_t i = 0; i < r->opt.rates.n; i++)
        relay_json_latency(f, r->opt.rates.rate[i], &r->latency[i]);
    fprintf(f, "  \"problem\": ");
    bench_json_string(f, r->problem);
    fprintf(f, "\n}\n");
    return fclose(f);
}

static void relay_print_table(const relay_t *r)
{
    const relay_phase_result_t *t = &r->throughput;
    printf("\nlibzmq relay baseline: messages of %u bytes, CURVE in and out, fan-out to %u "
           "subscribers\n%s\n",
           r->opt.bytes, RELAY_SUBSCRIBERS, BENCH_RULE);
    printf("%-24s %" PRIu64 " messages from %u publisher(s): %.0f publishes/s, %.0f "
           "deliveries/s\n",
           "throughput", t->count, r->opt.publishers, t->publishes_per_s, t->deliveries_per_s);
    printf("%-24s %" PRIu64 " deliveries in %.2f s, %" PRIu64 " missing, %" PRIu64 " duplicates\n",
           "", t->delivered, t->deliver_s, t->missing, t->duplicates);
    printf("%-24s %.4f s per 1000 messages (relay thread %.4f + its libzmq threads %.4f)\n",
           "relay CPU", relay_per_1000(t->cpu_thread_s + t->cpu_io_s, t->count),
           relay_per_1000(t->cpu_thread_s, t->count), relay_per_1000(t->cpu_io_s, t->count));
    printf("%-24s %.1f MiB (the whole bench process)\n", "peak RSS",
           (double)r->peak_rss_kib / 1024.0);
    printf("%-24s %.2f at the start, %.2f at the end (%ld CPUs)\n", "load average", r->load_start,
           r->load_end, sysconf(_SC_NPROCESSORS_ONLN));
    for (size_t i = 0; i < r->opt.rates.n; i++)
        bench_print_latency(r->opt.rates.rate[i], &r->latency[i].lat, r->latency[i].ran, NULL);
    if (r->problem[0] != '\0')
        printf("problem: %s\n", r->problem);
    printf("%s\n", BENCH_RULE);
}

/* ------------------------------------------------------------------ main */

static void relay_close_all(relay_t *r)
{
    for (unsigned i = 0; i < RELAY_MAX_PUBLISHERS + RELAY_SUBSCRIBERS; i++) {
        relay_client_t *c =
            i < RELAY_MAX_PUBLISHERS ? &r->pubs[i] : &r->subscribers[i - RELAY_MAX_PUBLISHERS];
        if (c->socket != NULL)
            zmq_close(c->socket);
        if (c->ctx != NULL)
            zmq_ctx_term(c->ctx);
        free(c->seen);
        bench_hist_free(&c->hist);
    }
    void *sockets[] = {r->zap, r->in, r->out};
    for (size_t i = 0; i < sizeof sockets / sizeof sockets[0]; i++)
        if (sockets[i] != NULL)
            zmq_close(sockets[i]);
    if (r->relay_ctx != NULL)
        zmq_ctx_term(r->relay_ctx);
}

static int relay_make_keys(relay_t *r)
{
    if (!zmq_has("curve") || relay_keypair(&r->server) != 0)
        return -1;
    for (unsigned i = 0; i < RELAY_MAX_PUBLISHERS; i++) {
        r->pubs[i] = (relay_client_t){.relay = r, .number = i};
        if (relay_keypair(&r->pubs[i].keys) != 0)
            return -1;
    }
    for (unsigned i = 0; i < RELAY_SUBSCRIBERS; i++) {
        r->subscribers[i] = (relay_client_t){.relay = r, .number = i};
        if (relay_keypair(&r->subscribers[i].keys) != 0)
            return -1;
    }
    return 0;
}

/* Connect every client (each says hello, so handshakes are not timed). */
static int relay_connect_all(relay_t *r)
{
    for (unsigned i = 0; i < RELAY_SUBSCRIBERS; i++)
        if (relay_client_connect(r, &r->subscribers[i], r->out_endpoint) != 0) {
            relay_problem(r, "subscriber %u cannot reach the relay: %s", i + 1,
                          zmq_strerror(zmq_errno()));
            return -1;
        }
    for (unsigned i = 0; i < r->opt.publishers; i++)
        if (relay_client_connect(r, &r->pubs[i], r->in_endpoint) != 0) {
            relay_problem(r, "publisher %u cannot reach the relay: %s", i + 1,
                          zmq_strerror(zmq_errno()));
            return -1;
        }
    return 0;
}

/* The relay thread, the clients, the throughput phase, the paced phases. */
static void relay_measure(relay_t *r)
{
    if (relay_setup(r) != 0) {
        relay_problem(r, "relay setup: %s", zmq_strerror(zmq_errno()));
        return;
    }
    r->relay_started = pthread_create(&r->relay_thread, NULL, relay_run, r) == 0;
    if (!r->relay_started) {
        relay_problem(r, "cannot start the relay thread");
        return;
    }
    if (relay_connect_all(r) == 0) {
        relay_phase_t ph = {
            .number = 1, .rate = 0, .count = r->opt.count, .publishers = r->opt.publishers};
        printf("bench_relay: throughput, %" PRIu64 " messages\n", ph.count);
        fflush(stdout);
        relay_run_phase(r, &ph, &r->throughput);
        for (size_t i = 0; i < r->opt.rates.n && !atomic_load(&r->stop); i++) {
            relay_phase_t paced = {.number = (unsigned)i + 2,
                                   .rate = r->opt.rates.rate[i],
                                   .count = (uint64_t)r->opt.rates.rate[i] * r->opt.latency_s,
                                   .publishers = 1};
            printf("bench_relay: latency at %u messages/s for %u s\n", paced.rate,
                   r->opt.latency_s);
            fflush(stdout);
            relay_run_phase(r, &paced, &r->latency[i]);
        }
    }
    atomic_store(&r->shutdown, 1);
    pthread_join(r->relay_thread, NULL);
    bench_mem_t m;
    if (bench_read_mem(0, &m) == 0)
        r->peak_rss_kib = m.hwm_kib;
}

int main(int argc, char **argv)
{
    static relay_t relay;
    relay_t *r = &relay;
    r->opt = (relay_options_t){.count = RELAY_DEFAULT_COUNT,
                               .bytes = RELAY_DEFAULT_BYTES,
                               .publishers = 1,
                               .latency_s = RELAY_DEFAULT_LATENCY_S,
                               .rates = {{1000, 5000, 10000}, 3},
                               .json_path = "tests/bench/results/relay.json"};
    int rc = relay_parse_args(argc, argv, &r->opt);
    if (rc != 0) {
        relay_usage(rc == 1 ? stdout : stderr);
        return rc == 1 ? 0 : 2;
    }
    pthread_mutex_init(&r->lock, NULL);
    r->deadline_ms = bench_now_ms() + (int64_t)(r->opt.deadline_s * 1000.0);
    bench_catch_signals(0);
    if (relay_make_keys(r) != 0) {
        fprintf(stderr, "bench_relay: this libzmq cannot make CURVE keys\n");
        return 1;
    }
    r->load_start = bench_loadavg();
    relay_measure(r);
    r->load_end = bench_loadavg();
    relay_close_all(r);
    int completed = relay_completed(r);
    relay_print_table(r);
    int json_rc = relay_write_json(r, completed);
    pthread_mutex_destroy(&r->lock);
    return completed && json_rc == 0 ? 0 : 1;
}
