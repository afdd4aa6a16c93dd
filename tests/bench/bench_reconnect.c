/*
 * bench_reconnect.c — a reconnect storm against one broker: thousands of
 * short connections with registered keys, unregistered keys and raw DEALERs
 * that never send a frame, and the broker's memory before, during and after.
 *
 * Owns a temporary folder under /tmp (keys, policy, config, store, broker
 * log) and the one schakeld it starts there on a run-time loopback port
 * (see support.c); it ends only that PID. Trusts nothing the broker
 * answers: every whoami, refusal, acceptance and delivery is checked.
 * Bounded by a deadline. Exit status: 0 when every cycle had the expected
 * outcome and the broker served correctly afterwards, 1 otherwise, 2 on a
 * usage error. Its table and JSON: reconnect_report.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "keys.h"
#include "reconnect_report.h"
#include "schakel.h"
#include "schakel_limits.h"
#include "support.h"
#include "wire.h"

#define RECONNECT_DEFAULT_COUNT 5000u
#define RECONNECT_MAX_COUNT 10000000u
#define RECONNECT_DEFAULT_WARMUP 100u /* cycles: 300 connections before the baseline */
/* Enough that none of them reconnects SCHAKEL_DEFAULT_MAX_CONNECTIONS times
 * within a second: the broker's cap frees a slot only from a session quiet
 * for SCHAKEL_SESSION_ACTIVE_MS. */
#define RECONNECT_DEFAULT_PRINCIPALS 16u
#define RECONNECT_DEFAULT_PUBLISH_EVERY 10u
#define RECONNECT_DEFAULT_SAMPLE_EVERY 500u
#define RECONNECT_DEFAULT_MARGIN_MIB 5u
#define RECONNECT_POLL_MS 100            /* /proc reading interval while settling and waiting */
#define RECONNECT_SETTLE_MAX_MS 5000     /* settling: at most this long ... */
#define RECONNECT_SETTLE_STABLE_POLLS 10 /* ... or until VmRSS is unchanged for 1 s */
#define RECONNECT_START_TIMEOUT_MS 15000
#define RECONNECT_STOP_TIMEOUT_MS 30000
#define RECONNECT_CALL_TIMEOUT_MS 10000 /* one connect, whoami or publish at most */
#define RECONNECT_RAW_TIMEOUT_MS 5000   /* one raw DEALER waiting for its socket event */
#define RECONNECT_DRAIN_SILENCE_MS 15000
#define RECONNECT_CHECK_TIMEOUT_MS 120000 /* the whole service check at most */
/* Idle check, two settlings, the expiry wait and the service check. */
#define RECONNECT_AFTER_STORM_MS                                                                   \
    (RECONNECT_CALL_TIMEOUT_MS + 2 * RECONNECT_SETTLE_MAX_MS + RECONNECT_PLATEAU_MS +              \
     RECONNECT_CHECK_TIMEOUT_MS)
#define RECONNECT_RECIPIENT "ontvanger/systeem"
#define RECONNECT_PARTNER "bron"
#define RECONNECT_STRANGER "vreemd/stranger"
#define RECONNECT_REF_BYTES 48

/* ------------------------------------------------------------------ small helpers */

static void reconnect_wrong(bench_t *b, uint64_t cycle, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* An unexpected outcome of one connection: counted by the caller, the
 * first one kept in words. */
static void reconnect_wrong(bench_t *b, uint64_t cycle, const char *fmt, ...)
{
    if (b->first_wrong[0] != '\0')
        return;
    char text[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    snprintf(b->first_wrong, sizeof b->first_wrong, "cycle %" PRIu64 ": %s", cycle, text);
    fprintf(stderr, "bench_reconnect: %s\n", b->first_wrong);
}

/* ------------------------------------------------------------------ options */

static void reconnect_usage(FILE *out)
{
    fprintf(out,
            "usage: bench_reconnect [--count N] [--warmup N] [--principals P] [--publish-every K]\n"
            "                       [--sample-every N] [--max-connections N] [--margin-mib M]\n"
            "                       [--kinds valid,invalid,raw]\n"
            "                       [--deadline SECONDS] [--no-expiry-wait] [--json FILE]\n"
            "                       [--broker-log-level L] [--keep]\n"
            "  --count N            storm cycles (default %u); a cycle is one registered-key\n"
            "                       connection, one unregistered-key connection, one raw DEALER\n"
            "  --warmup N           cycles before the baseline is measured (default %u)\n"
            "  --principals P       registered principals used in turn, 1..%u (default %u)\n"
            "  --publish-every K    every K-th registered connection publishes, the others ask\n"
            "                       whoami (default %u)\n"
            "  --sample-every N     broker memory sample every N cycles (default %u)\n"
            "  --max-connections N  the broker's max_connections_per_principal, 1..%u\n"
            "                       (default %u, the broker's own; %u stresses the session\n"
            "                       table)\n"
            "  --margin-mib M       final RSS must stay within baseline + M MiB (default %u)\n"
            "  --kinds LIST         connections per cycle, comma-separated: valid, invalid, raw\n"
            "                       (default all three; one kind alone attributes growth)\n"
            "  --deadline S         stop the storm after S seconds (default 60 + 40 per 1000 "
            "cycles)\n"
            "  --no-expiry-wait     measure the final RSS without waiting out the broker's\n"
            "                       %d ms session expiry\n"
            "  --json FILE          results (default tests/bench/results/reconnect.json)\n"
            "  --broker-log-level L schakeld --log-level (default info, as deployed)\n"
            "  --keep               keep the temporary folder (store, log) and name it\n"
            "environment: SCHAKELD (the broker binary), else $BUILD/schakeld, else "
            "build/schakeld\n",
            RECONNECT_DEFAULT_COUNT, RECONNECT_DEFAULT_WARMUP, RECONNECT_MAX_PRINCIPALS,
            RECONNECT_DEFAULT_PRINCIPALS, RECONNECT_DEFAULT_PUBLISH_EVERY,
            RECONNECT_DEFAULT_SAMPLE_EVERY, SCHAKEL_MAX_CONNECTIONS_CAP,
            SCHAKEL_DEFAULT_MAX_CONNECTIONS, SCHAKEL_MAX_CONNECTIONS_CAP,
            RECONNECT_DEFAULT_MARGIN_MIB, SCHAKEL_SESSION_TIMEOUT_MS);
}

/* A comma-separated list of valid, invalid, raw (or all). */
static int reconnect_parse_kinds(const char *text, void *out)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {
        {"valid", KIND_VALID}, {"invalid", KIND_INVALID}, {"raw", KIND_RAW}, {"all", KIND_ALL}};
    unsigned kinds = 0;
    const char *p = text;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        unsigned bit = 0;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strlen(names[i].name) == len && strncmp(p, names[i].name, len) == 0)
                bit = names[i].bit;
        if (bit == 0)
            return -1;
        kinds |= bit;
        p += len + (p[len] == ',');
    }
    *(unsigned *)out = kinds;
    return kinds != 0 ? 0 : -1;
}

/* Returns 0 to run, 1 for --help, 2 on a usage error. */
static int reconnect_parse_args(int argc, char **argv, reconnect_options_t *o)
{
    const bench_option_t options[] = {
        {"--count", BENCH_OPT_U64, &o->count, 1, RECONNECT_MAX_COUNT, NULL},
        {"--warmup", BENCH_OPT_UNSIGNED, &o->warmup, 0, 100000, NULL},
        {"--principals", BENCH_OPT_UNSIGNED, &o->principals, 1, RECONNECT_MAX_PRINCIPALS, NULL},
        {"--publish-every", BENCH_OPT_UNSIGNED, &o->publish_every, 1, 1000000, NULL},
        {"--sample-every", BENCH_OPT_UNSIGNED, &o->sample_every, 1, 1000000, NULL},
        {"--max-connections", BENCH_OPT_UNSIGNED, &o->max_connections, 1,
         SCHAKEL_MAX_CONNECTIONS_CAP, NULL},
        {"--margin-mib", BENCH_OPT_UNSIGNED, &o->margin_mib, 1, 1024, NULL},
        {"--deadline", BENCH_OPT_SECONDS, &o->deadline_s, 1, 86400, NULL},
        {"--kinds", BENCH_OPT_CUSTOM, &o->kinds, 0, 0, reconnect_parse_kinds},
        {"--json", BENCH_OPT_TEXT, &o->json_path, 0, 0, NULL},
        {"--broker-log-level", BENCH_OPT_TEXT, &o->log_level, 0, 0, NULL},
        {"--no-expiry-wait", BENCH_OPT_FLAG, &o->expiry_wait, 0, 0, NULL},
        {"--keep", BENCH_OPT_FLAG, &o->keep, 1, 0, NULL},
    };
    int rc = bench_parse_options(argc, argv, options, sizeof options / sizeof options[0]);
    if (rc != 0)
        return rc;
    if (o->deadline_s == 0)
        o->deadline_s = 60.0 + 40.0 * (double)o->count / 1000.0;
    return 0;
}

/* ------------------------------------------------------------------ environment */

/* "<dir>/keys/<principal>.key" */
static void reconnect_key_file(const bench_t *b, const char *principal, char *out, size_t len)
{
    char base[BENCH_PATH_MAX];
    bench_key_base(&b->env, principal, base, sizeof base);
    snprintf(out, len, "%.*s.key", (int)(len > 5 ? len - 5 : 0), base);
}

/* A key nobody registered, new for every attempt: per-key state in the
 * broker (counters, caches) would show as growth. */
static int reconnect_fresh_stranger(bench_t *b)
{
    char base[BENCH_PATH_MAX], pub[BENCH_PATH_MAX + 8], err[256];
    bench_key_base(&b->env, RECONNECT_STRANGER, base, sizeof base);
    snprintf(pub, sizeof pub, "%s.pub", base);
    if ((unlink(b->stranger_key) != 0 && errno != ENOENT) || (unlink(pub) != 0 && errno != ENOENT))
        return -1;
    if (keys_generate(base, err, sizeof err) != 0) {
        bench_problem(&b->env, "keys_generate %s: %s", base, err);
        return -1;
    }
    return 0;
}

/* The folder, every key, the policy and the config (support.c). */
static int reconnect_env_create(bench_t *b)
{
    const char *principals[RECONNECT_MAX_PRINCIPALS + 1] = {RECONNECT_RECIPIENT};
    char extra[128];
    for (unsigned i = 0; i < b->opt.principals; i++) {
        snprintf(b->principal_ids[i], sizeof b->principal_ids[i], RECONNECT_PARTNER "/client-%u",
                 i + 1);
        principals[i + 1] = b->principal_ids[i];
    }
    /* The storm measures memory, not the handshake ration: at its cap. */
    snprintf(extra, sizeof extra,
             "max_connections_per_principal: %u\nmax_handshakes_per_minute: %u\n",
             b->opt.max_connections, (unsigned)SCHAKEL_MAX_HANDSHAKES_CAP);
    char *policy = bench_policy_pair(
        "policy of one reconnect benchmark: bron publishes, ontvanger receives", principals,
        b->opt.principals + 1, "bench-reconnect", "Benchmark: a reconnect storm");
    if (policy == NULL) {
        bench_problem(&b->env, "out of memory for the policy");
        return -1;
    }
    int rc = bench_env_create(&b->env, principals, b->opt.principals + 1, policy, extra);
    free(policy);
    if (rc != 0)
        return -1;
    reconnect_key_file(b, RECONNECT_RECIPIENT, b->recipient_key, sizeof b->recipient_key);
    for (unsigned i = 0; i < b->opt.principals; i++)
        reconnect_key_file(b, b->principal_ids[i], b->valid_keys[i], sizeof b->valid_keys[i]);
    reconnect_key_file(b, RECONNECT_STRANGER, b->stranger_key, sizeof b->stranger_key);
    return 0;
}
/* The keys a raw CURVE DEALER uses: the first principal's pair, and the
 * broker's public key as X25519. */
static int reconnect_raw_prepare(bench_t *b)
{
    char err[256];
    uint8_t broker_sign_pk[32];
    b->raw_key = keys_load_secret(b->valid_keys[0], err, sizeof err);
    if (b->raw_key == NULL) {
        bench_problem(&b->env, "load %s: %s", b->valid_keys[0], err);
        return -1;
    }
    if (keys_load_public(b->env.broker_pub, broker_sign_pk, err, sizeof err) != 0 ||
        keys_sign_pk_to_curve(broker_sign_pk, b->broker_curve_pk) != 0) {
        bench_problem(&b->env, "broker key %s: %s", b->env.broker_pub, err);
        return -1;
    }
    b->raw_ctx = zmq_ctx_new();
    if (b->raw_ctx == NULL) {
        bench_problem(&b->env, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
        return -1;
    }
    return 0;
}

static void reconnect_add_sample(bench_t *b, uint64_t cycles)
{
    bench_mem_t m;
    if (bench_read_proc(b->env.broker_pid, &m) != 0)
        return;
    bench_note_peak(&b->peak_rss_kib, m.rss_kib);
    if (b->n_samples == b->cap_samples) {
        size_t cap = b->cap_samples ? b->cap_samples * 2 : 64;
        mem_sample_t *grown = realloc(b->samples, cap * sizeof *grown);
        if (grown == NULL)
            return;
        b->samples = grown;
        b->cap_samples = cap;
    }
    b->samples[b->n_samples++] = (mem_sample_t){
        .cycles = cycles,
        .at_s = (double)(bench_now_ms() - b->storm_started_ms) / 1000.0,
        .mem = m,
    };
}

/* Read the broker's memory every RECONNECT_POLL_MS until VmRSS has not
 * changed for RECONNECT_SETTLE_STABLE_POLLS readings, at most
 * RECONNECT_SETTLE_MAX_MS. Measurement, not synchronisation: the caller
 * already made sure the broker has nothing left to do. */
static int reconnect_settle(bench_t *b, settle_result_t *out)
{
    int64_t start = bench_now_ms();
    int stable = 0;
    long previous = -1;
    memset(out, 0, sizeof *out);
    for (;;) {
        bench_mem_t m;
        if (bench_read_proc(b->env.broker_pid, &m) != 0) {
            bench_problem(&b->env, "cannot read /proc/%ld/status: the broker is gone",
                          (long)b->env.broker_pid);
            return -1;
        }
        bench_note_peak(&b->peak_rss_kib, m.rss_kib);
        stable = m.rss_kib == previous ? stable + 1 : 0;
        previous = m.rss_kib;
        out->mem = m;
        out->waited_ms = (double)(bench_now_ms() - start);
        if (stable >= RECONNECT_SETTLE_STABLE_POLLS) {
            out->settled = 1;
            return 0;
        }
        if (bench_now_ms() - start >= RECONNECT_SETTLE_MAX_MS)
            return 0;
        bench_broker_pause(&b->env, RECONNECT_POLL_MS);
    }
}

/* ------------------------------------------------------------------ registered keys */

static int reconnect_record_seq(bench_t *b, uint64_t seq)
{
    if (b->n_accepted == b->cap_accepted) {
        size_t cap = b->cap_accepted ? b->cap_accepted * 2 : 256;
        uint64_t *grown = realloc(b->accepted, cap * sizeof *grown);
        if (grown == NULL)
            return -1;
        b->accepted = grown;
        b->cap_accepted = cap;
    }
    b->accepted[b->n_accepted++] = seq;
    return 0;
}

/* A registered connection sent its last frame at `at_ms`. Losing a note
 * to out-of-memory only makes the session estimate low. */
static void reconnect_note_session(bench_t *b, int64_t at_ms)
{
    if (b->n_session_ms == b->cap_session_ms) {
        size_t cap = b->cap_session_ms ? b->cap_session_ms * 2 : 1024;
        int64_t *grown = realloc(b->session_ms, cap * sizeof *grown);
        if (grown == NULL)
            return;
        b->session_ms = grown;
        b->cap_session_ms = cap;
    }
    b->session_ms[b->n_session_ms++] = at_ms;
}

/* One signed publish of one signal, to be queued for the recipient. */
static int reconnect_publish(bench_t *b, schakel_client_t *client, const char *tag, uint64_t n,
                             uint8_t id_out[16])
{
    char ref[RECONNECT_REF_BYTES];
    schakel_signal_t signal;
    schakel_item_result_t result = {0, 0};
    int duplicate = 0;
    snprintf(ref, sizeof ref, "bench:%s:%" PRIu64, tag, n);
    bench_signal_init(&signal, "bench-signaal", "Herhaalde meldingen van buren (benchmark).",
                      SCHAKEL_SEVERITY_LOW, b->observed_at,
                      "Korte melding tijdens een reconnect-benchmark.", ref);
    int timeout = bench_call_timeout(b->deadline_ms, RECONNECT_CALL_TIMEOUT_MS);
    schakel_status_t st = timeout > 0 ? schakel_publish(client, NULL, &signal, 1, NULL, id_out,
                                                        &result, &duplicate, timeout)
                                      : SCHAKEL_ERR_TIMEOUT;
    if (st != SCHAKEL_OK) {
        const schakel_error_t *e = schakel_last_error(client);
        reconnect_wrong(b, n, "publish: %s %s: %s", schakel_strerror(st), e->reason_name, e->text);
        return -1;
    }
    if (result.recipients != 1 || duplicate) {
        reconnect_wrong(b, n, "publish accepted for %u mailboxes%s, not 1", result.recipients,
                        duplicate ? " as a duplicate" : "");
        return -1;
    }
    if (reconnect_record_seq(b, result.seq) != 0) {
        bench_problem(&b->env, "out of memory for the accepted seqs");
        return -1;
    }
    return 0;
}

static int reconnect_whoami(bench_t *b, schakel_client_t *client, const char *principal, uint64_t n)
{
    char who[SCHAKEL_MAX_PRINCIPAL_LEN + 1], partner[SCHAKEL_MAX_PRINCIPAL_LEN + 1],
        role[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    int timeout = bench_call_timeout(b->deadline_ms, RECONNECT_CALL_TIMEOUT_MS);
    schakel_status_t st =
        timeout > 0 ? schakel_whoami(client, who, partner, role, timeout) : SCHAKEL_ERR_TIMEOUT;
    if (st != SCHAKEL_OK) {
        const schakel_error_t *e = schakel_last_error(client);
        reconnect_wrong(b, n, "whoami as %s: %s %s: %s", principal, schakel_strerror(st),
                        e->reason_name, e->text);
        return -1;
    }
    if (strcmp(who, principal) != 0 || strcmp(partner, RECONNECT_PARTNER) != 0 ||
        strcmp(role, "system") != 0) {
        reconnect_wrong(b, n, "whoami as %s answered %s (%s, %s)", principal, who, partner, role);
        return -1;
    }
    return 0;
}

static schakel_status_t reconnect_connect(bench_t *b, const char *key, schakel_client_t **out,
                                          schakel_error_t *err)
{
    int timeout = bench_call_timeout(b->deadline_ms, RECONNECT_CALL_TIMEOUT_MS);
    if (timeout == 0) {
        snprintf(err->text, sizeof err->text, "deadline");
        err->reason = 0;
        return SCHAKEL_ERR_TIMEOUT;
    }
    return schakel_connect(out, b->env.endpoint, b->env.broker_pub, key, timeout, err);
}

/* A registered key: connect, publish (every publish_every-th, if
 * may_publish) or whoami, close. */
static void reconnect_valid(bench_t *b, storm_counts_t *c, uint64_t n, const char *tag,
                            int may_publish)
{
    unsigned which = (unsigned)(n % b->opt.principals);
    const char *principal = b->principal_ids[which];
    schakel_client_t *client = NULL;
    schakel_error_t err;
    memset(&err, 0, sizeof err);
    schakel_status_t st = reconnect_connect(b, b->valid_keys[which], &client, &err);
    if (st != SCHAKEL_OK) {
        if (st == SCHAKEL_ERR_REFUSED && err.reason == SCHAKEL__REASON__TOO_MANY_CONNECTIONS)
            c->too_many++;
        else
            c->valid_failed++;
        reconnect_wrong(b, n, "connect as %s: %s %s: %s", principal, schakel_strerror(st),
                        err.reason_name, err.text);
        return;
    }
    int ok;
    if (may_publish && n % b->opt.publish_every == 0) {
        uint8_t id[SCHAKEL_MESSAGE_ID_BYTES];
        ok = reconnect_publish(b, client, tag, n, id) == 0;
        c->publish_ok += (uint64_t)ok;
    } else {
        ok = reconnect_whoami(b, client, principal, n) == 0;
        c->whoami_ok += (uint64_t)ok;
    }
    b->last_valid_ms = bench_now_ms();
    reconnect_note_session(b, b->last_valid_ms);
    schakel_close(&client);
    if (ok)
        c->valid_ok++;
    else
        c->valid_failed++;
}

/* A fresh unregistered key: the broker must refuse it at the handshake. */
static void reconnect_invalid(bench_t *b, storm_counts_t *c, uint64_t n)
{
    schakel_client_t *client = NULL;
    schakel_error_t err;
    memset(&err, 0, sizeof err);
    if (reconnect_fresh_stranger(b) != 0) {
        c->invalid_wrong++;
        reconnect_wrong(b, n, "cannot make a fresh unregistered key: %s", b->env.problem);
        return;
    }
    schakel_status_t st = reconnect_connect(b, b->stranger_key, &client, &err);
    if (st == SCHAKEL_ERR_AUTH) {
        c->invalid_auth++;
    } else if (st == SCHAKEL_OK) {
        c->invalid_admitted++;
        reconnect_wrong(b, n, "the broker admitted an unregistered key");
        schakel_close(&client);
    } else {
        c->invalid_wrong++;
        reconnect_wrong(b, n, "unregistered key: %s instead of %s: %s", schakel_strerror(st),
                        schakel_strerror(SCHAKEL_ERR_AUTH), err.text);
    }
}

/* ------------------------------------------------------------------ raw DEALERs */

/* Wait for the first event on the monitor (it only reports the events the
 * caller subscribed); returns it, or 0 on timeout or a socket error. */
static int reconnect_await_event(void *monitor, int timeout_ms)
{
    int64_t deadline = bench_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - bench_now_ms();
        if (left <= 0)
            return 0;
        zmq_pollitem_t item = {monitor, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&item, 1, (long)left);
        if (rc < 0 && zmq_errno() == EINTR)
            continue;
        if (rc <= 0)
            return 0;
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, monitor, 0) < 0) {
            zmq_msg_close(&part);
            return 0;
        }
        uint16_t event = 0;
        if (zmq_msg_size(&part) >= 6)
            memcpy(&event, zmq_msg_data(&part), sizeof event);
        while (zmq_msg_more(&part)) { /* the endpoint frame */
            zmq_msg_close(&part);
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, monitor, 0) < 0)
                break;
        }
        zmq_msg_close(&part);
        if (event != 0)
            return event;
    }
}

static int reconnect_raw_socket(bench_t *b, enum raw_kind kind, void **out)
{
    int zero = 0;
    void *s = zmq_socket(b->raw_ctx, ZMQ_DEALER);
    if (s == NULL)
        return -1;
    *out = s;
    int rc = zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (kind != RAW_NULL) {
        rc |= zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, b->broker_curve_pk, 32);
        rc |= zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, b->raw_key->curve_pk, 32);
        rc |= zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, b->raw_key->curve_sk, 32);
    }
    return rc == 0 ? 0 : -1;
}

/* A DEALER that connects and closes without sending a frame; `kind` says
 * how far it gets. Returns 0 when the socket event it waits for came. */
static int reconnect_raw_once(bench_t *b, enum raw_kind kind)
{
    static const int awaited[RAW_KINDS] = {
        [RAW_SILENT] = ZMQ_EVENT_HANDSHAKE_SUCCEEDED,
        [RAW_NULL] = ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                     ZMQ_EVENT_DISCONNECTED,
        [RAW_ABORT] = ZMQ_EVENT_CONNECTED,
    };
    int failures = ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                   ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
    int events = awaited[kind] | (kind == RAW_SILENT ? failures : 0);
    char monitor_ep[64];
    snprintf(monitor_ep, sizeof monitor_ep, "inproc://bench-reconnect-raw-%" PRIu64,
             b->raw_serial++);
    void *s = NULL, *monitor = NULL;
    int zero = 0, got = 0;
    if (reconnect_raw_socket(b, kind, &s) == 0 && zmq_socket_monitor(s, monitor_ep, events) == 0 &&
        (monitor = zmq_socket(b->raw_ctx, ZMQ_PAIR)) != NULL &&
        zmq_setsockopt(monitor, ZMQ_LINGER, &zero, sizeof zero) == 0 &&
        zmq_connect(monitor, monitor_ep) == 0 && zmq_connect(s, b->env.endpoint) == 0)
        got = reconnect_await_event(monitor, RECONNECT_RAW_TIMEOUT_MS);
    if (s != NULL)
        (void)zmq_socket_monitor(s, NULL, 0);
    if (monitor != NULL)
        zmq_close(monitor);
    if (s != NULL)
        zmq_close(s);
    return (got & awaited[kind]) != 0 ? 0 : -1;
}

static void reconnect_raw(bench_t *b, storm_counts_t *c, uint64_t n)
{
    enum raw_kind kind = (enum raw_kind)(n % RAW_KINDS);
    if (reconnect_raw_once(b, kind) == 0) {
        c->raw_done[kind]++;
    } else {
        c->raw_failed++;
        reconnect_wrong(b, n,
                        "raw DEALER (%s): the handshake failed, or the expected socket event "
                        "did not come within %d ms",
                        reconnect_report_raw_name(kind), RECONNECT_RAW_TIMEOUT_MS);
    }
}

/* ------------------------------------------------------------------ phases */

/* Cycles [first, first + count): each one a registered key, an
 * unregistered key and a raw DEALER. Samples every sample_every cycles when
 * `sample` is set. Returns 0 when every cycle ran. */
static int reconnect_cycles(bench_t *b, storm_counts_t *c, uint64_t first, uint64_t count,
                            const char *tag, int sample)
{
    for (uint64_t i = 0; i < count; i++) {
        if (bench_interrupted()) {
            bench_problem(&b->env, "interrupted after %" PRIu64 " %s cycles", i, tag);
            return -1;
        }
        if (bench_now_ms() >= b->deadline_ms) {
            bench_problem(&b->env,
                          "deadline of %.0f s reached after %" PRIu64 " of %" PRIu64 " %s cycles",
                          b->opt.deadline_s, i, count, tag);
            return -1;
        }
        if (bench_broker_gone(&b->env)) {
            bench_problem(&b->env,
                          "schakeld exited during the %s, after %" PRIu64 " cycles (see %s)", tag,
                          i, b->env.log_path);
            return -1;
        }
        uint64_t n = first + i;
        if (b->opt.kinds & KIND_VALID)
            reconnect_valid(b, c, n, tag, 1);
        if (b->opt.kinds & KIND_INVALID)
            reconnect_invalid(b, c, n);
        if (b->opt.kinds & KIND_RAW)
            reconnect_raw(b, c, n);
        c->cycles++;
        if (sample && c->cycles % b->opt.sample_every == 0)
            reconnect_add_sample(b, c->cycles);
    }
    return 0;
}

/* Make sure the broker is idle: one more registered connection with a
 * whoami round trip. Every earlier request was answered already; what may
 * still run is libzmq tearing down closed connections, which the settling
 * that follows waits out as a measurement. */
static int reconnect_idle_check(bench_t *b, uint64_t n)
{
    storm_counts_t scratch;
    memset(&scratch, 0, sizeof scratch);
    reconnect_valid(b, &scratch, n, "idle", 0);
    if (scratch.valid_ok != 1) {
        bench_problem(&b->env, "the broker did not answer a whoami after the %s: %s",
                      n == 0 ? "warm-up" : "storm", b->first_wrong);
        return -1;
    }
    return 0;
}

/* After the storm: idle check, settle; then wait until every session the
 * storm left has expired, and settle again. */
static int reconnect_after_storm(bench_t *b)
{
    if (reconnect_idle_check(b, b->opt.warmup + b->opt.count) != 0 ||
        reconnect_settle(b, &b->settled) != 0)
        return -1;
    b->final = b->settled;
    if (!b->opt.expiry_wait)
        return 0;
    int64_t until = b->last_valid_ms + RECONNECT_PLATEAU_MS;
    printf("bench_reconnect: waiting %.1f s for the broker's %d ms session expiry\n",
           (double)(until - bench_now_ms()) / 1000.0, SCHAKEL_SESSION_TIMEOUT_MS);
    fflush(stdout);
    while (bench_now_ms() < until) {
        if (bench_interrupted() || bench_broker_gone(&b->env)) {
            bench_problem(&b->env, "%s while waiting for session expiry",
                          bench_interrupted() ? "interrupted" : "schakeld exited");
            return -1;
        }
        bench_mem_t m;
        if (bench_read_proc(b->env.broker_pid, &m) == 0)
            bench_note_peak(&b->peak_rss_kib, m.rss_kib);
        bench_broker_pause(&b->env, RECONNECT_POLL_MS);
    }
    if (reconnect_settle(b, &b->final) != 0)
        return -1;
    b->final_after_expiry = 1;
    return 0;
}

/* ------------------------------------------------------------------ service check */

static int reconnect_compare_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, c = *(const uint64_t *)y;
    return a < c ? -1 : a > c;
}

/* Receive and ack until every accepted item arrived once (or silence). */
static void reconnect_drain(bench_t *b, schakel_client_t *rc, uint8_t *seen, uint64_t final_seq,
                            const uint8_t final_id[16])
{
    service_check_t *k = &b->check;
    int64_t started = bench_now_ms(), last = started;
    while (k->distinct < k->expected) {
        int64_t now = bench_now_ms();
        if (now - last > RECONNECT_DRAIN_SILENCE_MS || now - started > RECONNECT_CHECK_TIMEOUT_MS ||
            bench_interrupted())
            break;
        schakel_delivery_t *d = NULL;
        schakel_status_t st = schakel_receive(rc, &d, 1000);
        if (st == SCHAKEL_ERR_TIMEOUT)
            continue;
        if (st != SCHAKEL_OK) {
            bench_problem(&b->env, "service check: receive: %s (%s)", schakel_strerror(st),
                          schakel_last_error(rc)->text);
            break;
        }
        last = bench_now_ms();
        k->delivered++;
        const uint64_t *hit = bsearch(&d->item_seq, b->accepted, b->n_accepted, sizeof *b->accepted,
                                      reconnect_compare_u64);
        if (hit == NULL || d->sender == NULL ||
            strncmp(d->sender, RECONNECT_PARTNER "/", strlen(RECONNECT_PARTNER "/")) != 0) {
            k->unknown++;
        } else if (seen[hit - b->accepted]) {
            k->duplicates++;
        } else {
            seen[hit - b->accepted] = 1;
            k->distinct++;
            if (d->item_seq == final_seq && memcmp(d->message_id, final_id, 16) == 0)
                k->final_delivered = 1;
        }
        if (schakel_ack(rc, d->seq) != SCHAKEL_OK)
            bench_problem(&b->env, "service check: ack %" PRIu64 ": %s", d->seq,
                          schakel_last_error(rc)->text);
        schakel_delivery_free(&d);
    }
}

/* One fresh publish after the storm, accepted; then the recipient gets it
 * and every publish the storm made, each exactly once, and its backlog is
 * 0 afterwards. */
static void reconnect_service_check(bench_t *b)
{
    service_check_t *k = &b->check;
    schakel_client_t *publisher = NULL, *recipient = NULL;
    schakel_error_t err;
    uint8_t final_id[16] = {0};
    uint64_t final_seq = 0;
    k->ran = 1;
    if (reconnect_connect(b, b->recipient_key, &recipient, &err) != SCHAKEL_OK) {
        bench_problem(&b->env, "service check: recipient connect: %s", err.text);
        return;
    }
    if (schakel_subscribe(recipient, SCHAKEL_MAX_WINDOW) != SCHAKEL_OK) {
        bench_problem(&b->env, "service check: subscribe: %s", schakel_last_error(recipient)->text);
        schakel_close(&recipient);
        return;
    }
    if (reconnect_connect(b, b->valid_keys[0], &publisher, &err) != SCHAKEL_OK) {
        bench_problem(&b->env, "service check: publisher connect: %s", err.text);
    } else if (reconnect_publish(b, publisher, "final", 0, final_id) == 0) {
        k->final_accepted = 1;
        final_seq = b->accepted[b->n_accepted - 1];
    } else {
        bench_problem(&b->env, "service check: the publish after the storm was not accepted: %s",
                      b->first_wrong);
    }
    schakel_close(&publisher);
    qsort(b->accepted, b->n_accepted, sizeof *b->accepted, reconnect_compare_u64);
    k->expected = b->n_accepted;
    uint8_t *seen = calloc(b->n_accepted > 0 ? b->n_accepted : 1, 1);
    if (seen == NULL) {
        bench_problem(&b->env, "out of memory for the service check");
    } else if (k->final_accepted) {
        reconnect_drain(b, recipient, seen, final_seq, final_id);
        uint64_t backlog = 0;
        if (schakel_backlog(recipient, &backlog, RECONNECT_CALL_TIMEOUT_MS) == SCHAKEL_OK)
            k->backlog_after = (int64_t)backlog;
    }
    free(seen);
    schakel_close(&recipient);
    k->ok = k->final_accepted && k->final_delivered && k->distinct == k->expected &&
            k->unknown == 0 && k->duplicates == 0 && k->backlog_after == 0;
    if (!k->ok)
        bench_problem(&b->env,
                      "service check failed: %" PRIu64 " of %" PRIu64
                      " accepted publishes delivered, %" PRIu64 " unknown, %" PRIu64
                      " twice, backlog after %" PRId64,
                      k->distinct, k->expected, k->unknown, k->duplicates, k->backlog_after);
}

/* ------------------------------------------------------------------ run */

static int reconnect_baseline(bench_t *b)
{
    if (reconnect_cycles(b, &b->warm, 0, b->opt.warmup, "warm-up", 0) != 0 ||
        reconnect_idle_check(b, 0) != 0 || reconnect_settle(b, &b->baseline_settle) != 0)
        return -1;
    b->baseline = b->baseline_settle.mem;
    bench_mem_t self;
    if (bench_read_proc(0, &self) == 0)
        b->client_rss_baseline_kib = self.rss_kib;
    atomic_store(&b->peak_rss_kib, b->baseline.rss_kib);
    return 0;
}

static void reconnect_run(bench_t *b)
{
    if (reconnect_env_create(b) != 0 ||
        bench_broker_start(&b->env, b->opt.log_level, RECONNECT_START_TIMEOUT_MS) != 0 ||
        reconnect_raw_prepare(b) != 0)
        return;
    printf("bench_reconnect: broker on %s; warm-up of %u cycles\n", b->env.endpoint, b->opt.warmup);
    fflush(stdout);
    if (reconnect_baseline(b) != 0)
        return;
    printf("bench_reconnect: baseline VmRSS %.1f MiB; storm of %" PRIu64 " cycles\n",
           bench_mib(b->baseline.rss_kib), b->opt.count);
    if (b->baseline.fds < 0) /* schakeld is not dumpable: its /proc/PID/fd is root's */
        printf("bench_reconnect: the broker's open fds are not readable by this user (schakeld "
               "makes itself not dumpable); they are reported as n/a: run the bench as root "
               "for them\n");
    fflush(stdout);
    if (bench_sampler_start(&b->sampler, b->env.broker_pid, RECONNECT_POLL_MS) != 0)
        fprintf(stderr, "bench_reconnect: no sampler thread; the peak is from samples only\n");
    b->storm_started_ms = bench_now_ms();
    reconnect_add_sample(b, 0);
    int ran = reconnect_cycles(b, &b->storm, b->opt.warmup, b->opt.count, "storm", 1) == 0;
    b->storm_s = (double)(bench_now_ms() - b->storm_started_ms) / 1000.0;
    if (b->storm.cycles % b->opt.sample_every != 0)
        reconnect_add_sample(b, b->storm.cycles);
    /* What follows has its own bound, also when the storm ran out of time:
     * the measurements after it are still worth reporting. */
    b->deadline_ms = bench_now_ms() + RECONNECT_AFTER_STORM_MS;
    if (bench_broker_gone(&b->env) || bench_interrupted())
        ran = 0;
    else if (reconnect_after_storm(b) == 0)
        reconnect_service_check(b);
    bench_sampler_stop(&b->sampler);
    bench_note_peak(&b->peak_rss_kib, bench_sampler_peak_kib(&b->sampler));
    bench_mem_t self;
    if (bench_read_proc(0, &self) == 0)
        b->client_rss_final_kib = self.rss_kib;
    b->completed = ran && b->storm.cycles == b->opt.count && b->final.mem.rss_kib > 0;
}

/* ------------------------------------------------------------------ main */

static void reconnect_cleanup(bench_t *b)
{
    if (b->raw_ctx != NULL)
        zmq_ctx_term(b->raw_ctx);
    keys_destroy(&b->raw_key);
    bench_env_remove(&b->env, b->opt.keep);
    free(b->samples);
    free(b->accepted);
    free(b->session_ms);
}

int main(int argc, char **argv)
{
    bench_t *b = calloc(1, sizeof *b);
    if (b == NULL)
        return 1;
    b->opt = (reconnect_options_t){.count = RECONNECT_DEFAULT_COUNT,
                                   .warmup = RECONNECT_DEFAULT_WARMUP,
                                   .principals = RECONNECT_DEFAULT_PRINCIPALS,
                                   .publish_every = RECONNECT_DEFAULT_PUBLISH_EVERY,
                                   .sample_every = RECONNECT_DEFAULT_SAMPLE_EVERY,
                                   .max_connections = SCHAKEL_DEFAULT_MAX_CONNECTIONS,
                                   .margin_mib = RECONNECT_DEFAULT_MARGIN_MIB,
                                   .expiry_wait = 1,
                                   .kinds = KIND_ALL,
                                   .json_path = "tests/bench/results/reconnect.json",
                                   .log_level = "info"};
    int rc = reconnect_parse_args(argc, argv, &b->opt);
    if (rc != 0) {
        reconnect_usage(rc == 1 ? stdout : stderr);
        free(b);
        return rc == 1 ? 0 : 2;
    }
    b->env.broker_pidfd = -1;
    b->broker_exit = -1;
    b->check.backlog_after = -1;
    b->started_ms = bench_now_ms();
    b->deadline_ms = b->started_ms + (int64_t)(b->opt.deadline_s * 1000.0);
    b->observed_at = (int64_t)time(NULL) - 60;
    bench_catch_signals(1);
    if (keys_init() != 0) {
        fprintf(stderr, "bench_reconnect: libsodium failed to initialise\n");
        free(b);
        return 1;
    }
    printf("bench_reconnect: %" PRIu64 " cycles, deadline %.0f s for the storm\n", b->opt.count,
           b->opt.deadline_s);
    fflush(stdout);
    reconnect_run(b);
    if (b->env.broker_pid > 0)
        b->broker_exit = bench_broker_stop(&b->env, RECONNECT_STOP_TIMEOUT_MS);
    b->log_bytes = bench_file_size(b->env.log_path);
    reconnect_report_print_table(b);
    int json_rc = reconnect_report_write_json(b);
    int ok = b->completed && b->check.ok && !reconnect_report_wrong_outcomes(&b->storm) &&
             !reconnect_report_wrong_outcomes(&b->warm) && json_rc == 0;
    reconnect_cleanup(b);
    free(b);
    return ok ? 0 : 1;
}
