/*
 * bench_backlog.c — N signals queued for a partner that is not connected:
 * the broker's memory while the backlog waits, its restart from the same
 * store with the backlog pending, and the drain on reconnect.
 *
 * Owns a temporary folder under /tmp (keys, policy, config, store, broker
 * log) and the schakeld it starts there on a run-time loopback port (see
 * support.c); it ends only that PID. Trusts nothing the broker sends: every
 * delivery is checked against what the broker accepted, in publish order.
 * Bounded by a deadline. Exit status: 0 when the run completed and the
 * backlog drained in order, 1 otherwise (deadline, broker failure, wrong
 * drain), 2 on usage.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "keys.h"
#include "schakel.h"
#include "schakel_limits.h"
#include "support.h"

#define BACKLOG_DEFAULT_COUNT 1000000u
#define BACKLOG_MAX_COUNT 100000000u
/* One serialized Signal: "about 1 KiB", and still 256 of them fit one frame. */
#define BACKLOG_DEFAULT_ITEM_BYTES 1000u
#define BACKLOG_MIN_ITEM_BYTES 200u
#define BACKLOG_MAX_PUBLISHERS 2u
#define BACKLOG_RSS_LIMIT_KIB (100L * 1024L) /* the bound: 100 MiB */
#define BACKLOG_DRAIN_TARGET 20000.0         /* deliveries/s, the target of a later issue */
#define BACKLOG_READY_TARGET_S 2.0           /* restart with the backlog pending: ready < 2 s */
#define BACKLOG_SAMPLE_MS 50                 /* RSS sampling interval */
#define BACKLOG_MILESTONES 10                /* RSS samples at every 10% of each phase */
#define BACKLOG_MAX_SAMPLES (4 * BACKLOG_MILESTONES + 8)
#define BACKLOG_START_TIMEOUT_MS 15000
/* A restart may open a large store: bounded, but far above the target. */
#define BACKLOG_RESTART_TIMEOUT_MS 120000
#define BACKLOG_STOP_TIMEOUT_MS 60000  /* SIGTERM includes a WAL checkpoint */
#define BACKLOG_CALL_TIMEOUT_MS 60000  /* one publish, connect or backlog query at most */
#define BACKLOG_SILENCE_LIMIT_MS 30000 /* no delivery this long while some are owed: give up */
#define BACKLOG_PUBLISH_ATTEMPTS 3
#define BACKLOG_REF_BYTES 32
#define BACKLOG_FRAME_OVERHEAD 128u /* Frame version, Publish header, message id, signature */
#define BACKLOG_RECIPIENT "ontvanger/systeem"

static const char *const backlog_publisher_ids[BACKLOG_MAX_PUBLISHERS] = {"bron/publisher-1",
                                                                          "bron/publisher-2"};

static const char backlog_summary_words[] =
    "Bij herhaling overlast en vermoedelijke hennepteelt gemeld op dit adres; "
    "buurtbewoners noemen stankoverlast, verduisterde ramen en veel bezoek in de nacht. ";

/* ------------------------------------------------------------------ types */

typedef struct backlog_options {
    uint64_t count;
    unsigned publishers;
    unsigned window;
    unsigned item_bytes;
    double deadline_s; /* 0: derived from count */
    const char *json_path;
    const char *log_level;
    int keep;
    int restart; /* stop and start the broker with the backlog queued (default) */
} backlog_options_t;

enum backlog_phase {
    PHASE_START,
    PHASE_PUBLISH,
    PHASE_QUEUED,
    PHASE_RESTART,
    PHASE_DRAIN,
    PHASE_DONE,
    PHASE_N
};

static const char *const backlog_phase_names[PHASE_N] = {"start",   "publish", "queued",
                                                         "restart", "drain",   "done"};

typedef struct mem_sample {
    int phase;
    uint64_t progress; /* items accepted (publish) or delivered (drain) */
    double at_s;       /* since the bench started */
    bench_mem_t mem;
} mem_sample_t;

/* One accepted item, as the publisher learnt it from Accepted. */
typedef struct expected_item {
    uint64_t item_seq;
    uint8_t message_id[SCHAKEL_MESSAGE_ID_BYTES];
    uint32_t item_index;
    uint32_t publisher; /* 1-based, as in source_ref */
    uint64_t counter;   /* the publisher's running item number, as in source_ref */
} expected_item_t;

typedef struct backlog_results {
    int completed; /* every phase ran to its end */
    /* publish */
    uint64_t published, publishes;
    double publish_s;
    bench_mem_t queued;
    double rss_growth_per_msg, anon_growth_per_msg; /* bytes per queued message */
    int growth_known;
    long long store_bytes, wal_bytes, shm_bytes, log_bytes, store_bytes_drained;
    double cpu_publish_s, cpu_drain_s;
    /* restart with the backlog pending */
    int restarted;
    double restart_stop_s, restart_ready_s;
    int restart_stop_exit;
    uint64_t restart_pending;
    bench_mem_t restart_mem; /* right after READY */
    /* drain */
    int drain_ran;
    double connect_ms, first_delivery_ms, drain_s, drain_rate;
    uint64_t delivered, distinct, out_of_order, seq_not_increasing, duplicates, unknown,
        content_errors, missing;
    int64_t backlog_before, backlog_after; /* -1: not known */
    bench_mem_t drained;
    long drain_peak_rss_kib, publish_peak_rss_kib;
    int broker_exit;
    int in_order;
} backlog_results_t;

typedef struct bench {
    backlog_options_t opt;
    bench_env_t env; /* folder, broker, first problem; its stop: every loop winds down */
    int64_t started_ms, deadline_ms;
    /* every item is this signal with its own source_ref */
    size_t item_bytes, batch, summary_len;
    char summary[SCHAKEL_MAX_SUMMARY_LEN + 1];
    int64_t observed_at;
    /* shared with the publisher threads */
    atomic_uint_fast64_t accepted;
    atomic_uint_fast64_t drained;
    atomic_int phase;
    bench_sampler_t sampler; /* the broker's VmRSS every BACKLOG_SAMPLE_MS: peak per phase */
    pthread_mutex_t lock;    /* guards samples and peaks */
    mem_sample_t samples[BACKLOG_MAX_SAMPLES];
    size_t n_samples;
    long peak_rss_kib[PHASE_N];
    /* the accepted items in publish (item seq) order */
    expected_item_t *expected;
    uint64_t n_expected;
    backlog_results_t res;
} bench_t;

typedef struct publisher {
    bench_t *bench;
    unsigned number; /* 1-based */
    const char *principal;
    schakel_client_t *client;
    uint64_t count;           /* items this publisher sends */
    expected_item_t *records; /* filled in accept order */
    uint64_t n_records, publishes;
    pthread_t thread;
    int started;
} publisher_t;

/* Progress of the drain check. */
typedef struct drain_state {
    uint8_t *seen;      /* one bit per expected item */
    int64_t last_index; /* publish-order position of the previous new item, -1 at first */
    uint64_t last_seq;
} drain_state_t;

/* ------------------------------------------------------------------ small helpers */

/* True once the deadline passed or the run was interrupted; says so once. */
static int backlog_out_of_time(bench_t *b)
{
    if (atomic_load(&b->env.stop))
        return 1;
    if (bench_interrupted()) {
        bench_problem(&b->env, "interrupted");
        return 1;
    }
    if (bench_now_ms() >= b->deadline_ms) {
        bench_problem(&b->env,
                      "deadline of %.0f s reached: %" PRIu64 " of %" PRIu64
                      " items published, %" PRIu64 " drained",
                      b->opt.deadline_s, (uint64_t)atomic_load(&b->accepted), b->opt.count,
                      (uint64_t)atomic_load(&b->drained));
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ options */

static void backlog_usage(FILE *out)
{
    fprintf(out,
            "usage: bench_backlog [--count N] [--publishers 1|2] [--window W] [--item-bytes B]\n"
            "                     [--deadline SECONDS] [--json FILE] [--broker-log-level L]\n"
            "                     [--no-restart] [--keep]\n"
            "  --count N            signals to queue (default %u)\n"
            "  --publishers P       publisher connections, 1 or 2 (default 2)\n"
            "  --window W           the recipient's Flow window, 1..%u (default %u)\n"
            "  --item-bytes B       serialized size of one signal (default %u)\n"
            "  --deadline S         give up after S seconds (default 60 + 840 per million)\n"
            "  --json FILE          results (default tests/bench/results/backlog.json)\n"
            "  --broker-log-level L schakeld --log-level (default info, as deployed)\n"
            "  --no-restart         drain without stopping and restarting the broker first\n"
            "  --keep               keep the temporary folder (store, log) and name it\n"
            "environment: SCHAKELD (the broker binary), else $BUILD/schakeld, else "
            "build/schakeld\n",
            BACKLOG_DEFAULT_COUNT, SCHAKEL_MAX_WINDOW, SCHAKEL_MAX_WINDOW,
            BACKLOG_DEFAULT_ITEM_BYTES);
}

/* Returns 0 to run, 1 for --help, 2 on a usage error. */
static int backlog_parse_args(int argc, char **argv, backlog_options_t *o)
{
    const bench_option_t options[] = {
        {"--count", BENCH_OPT_U64, &o->count, 1, BACKLOG_MAX_COUNT, NULL},
        {"--publishers", BENCH_OPT_UNSIGNED, &o->publishers, 1, BACKLOG_MAX_PUBLISHERS, NULL},
        {"--window", BENCH_OPT_UNSIGNED, &o->window, 1, SCHAKEL_MAX_WINDOW, NULL},
        {"--item-bytes", BENCH_OPT_UNSIGNED, &o->item_bytes, BACKLOG_MIN_ITEM_BYTES,
         SCHAKEL_MAX_ITEM_BYTES, NULL},
        {"--deadline", BENCH_OPT_SECONDS, &o->deadline_s, 1, 86400, NULL},
        {"--json", BENCH_OPT_TEXT, &o->json_path, 0, 0, NULL},
        {"--broker-log-level", BENCH_OPT_TEXT, &o->log_level, 0, 0, NULL},
        {"--no-restart", BENCH_OPT_FLAG, &o->restart, 0, 0, NULL},
        {"--keep", BENCH_OPT_FLAG, &o->keep, 1, 0, NULL},
    };
    int rc = bench_parse_options(argc, argv, options, sizeof options / sizeof options[0]);
    if (rc != 0)
        return rc;
    if (o->deadline_s == 0)
        o->deadline_s = 60.0 + 840.0 * (double)o->count / 1e6;
    return 0;
}

/* ------------------------------------------------------------------ environment */

/* The folder, keys, the policy (bron may send to ontvanger) and the config
 * (support.c), then the broker. */
static int backlog_env_create(bench_t *b)
{
    const char *principals[] = {backlog_publisher_ids[0], backlog_publisher_ids[1],
                                BACKLOG_RECIPIENT};
    char *policy = bench_policy_pair(
        "policy of one backlog benchmark: bron publishes, ontvanger receives (and is away)",
        principals, 3, "bench-backlog", "Benchmark: a backlog for a partner that is away");
    if (policy == NULL) {
        bench_problem(&b->env, "out of memory for the policy");
        return -1;
    }
    int rc = bench_env_create(&b->env, principals, 3, policy, NULL);
    free(policy);
    return rc != 0 ? -1 : bench_broker_start(&b->env, b->opt.log_level, BACKLOG_START_TIMEOUT_MS);
}

/* ------------------------------------------------------------------ memory samples */

static void backlog_add_sample(bench_t *b, int phase, uint64_t progress, const bench_mem_t *m)
{
    pthread_mutex_lock(&b->lock);
    if (m->rss_kib > b->peak_rss_kib[phase])
        b->peak_rss_kib[phase] = m->rss_kib;
    if (b->n_samples < BACKLOG_MAX_SAMPLES)
        b->samples[b->n_samples++] = (mem_sample_t){
            .phase = phase,
            .progress = progress,
            .at_s = (double)(bench_now_ms() - b->started_ms) / 1000.0,
            .mem = *m,
        };
    pthread_mutex_unlock(&b->lock);
}

/* A sample now, for the record at the end of a phase. */
static int backlog_sample_now(bench_t *b, int phase, uint64_t progress, bench_mem_t *m)
{
    if (bench_read_mem(b->env.broker_pid, m) != 0)
        return -1;
    backlog_add_sample(b, phase, progress, m);
    return 0;
}

/* A sample each time a phase's progress passes another tenth of the count
 * (progress went from `before` to `after`); any thread may call it. */
static void backlog_milestone(bench_t *b, int phase, uint64_t before, uint64_t after)
{
    uint64_t step = b->opt.count / BACKLOG_MILESTONES > 0 ? b->opt.count / BACKLOG_MILESTONES : 1;
    bench_mem_t m;
    if (after / step > before / step && after < b->opt.count)
        (void)backlog_sample_now(b, phase, after, &m);
}

/* A phase starts: the sampler's peak from now on is this phase's. */
static void backlog_phase_begin(bench_t *b, int phase)
{
    atomic_store(&b->phase, phase);
    if (b->sampler.started)
        bench_sampler_reset(&b->sampler);
}

static void backlog_phase_end(bench_t *b, int phase)
{
    long peak = b->sampler.started ? bench_sampler_peak_kib(&b->sampler) : 0;
    pthread_mutex_lock(&b->lock);
    if (peak > b->peak_rss_kib[phase])
        b->peak_rss_kib[phase] = peak;
    pthread_mutex_unlock(&b->lock);
}

/* ------------------------------------------------------------------ the signal */

static void backlog_fill_signal(const bench_t *b, schakel_signal_t *s, const char *source_ref)
{
    bench_signal_init(
        s, "bench-signaal",
        "Herhaalde meldingen van buren en een eigen waarneming ter plaatse (benchmark).",
        SCHAKEL_SEVERITY_MEDIUM, b->observed_at, b->summary, source_ref);
}

static void backlog_format_ref(char *out, unsigned publisher, uint64_t counter)
{
    snprintf(out, BACKLOG_REF_BYTES, "bench:p%u:%012" PRIu64, publisher, counter);
}

/* Choose the summary length that makes every item opt.item_bytes long (or
 * just under), and the batch size that keeps a Publish under the frame
 * limit. */
static int backlog_size_signal(bench_t *b)
{
    char ref[BACKLOG_REF_BYTES];
    schakel_signal_t s;
    b->observed_at = (int64_t)time(NULL) - 60;
    backlog_format_ref(ref, 1, 0);
    backlog_fill_signal(b, &s, ref);
    b->item_bytes = bench_signal_pad(&s, backlog_publisher_ids[0], backlog_summary_words,
                                     b->summary, b->opt.item_bytes, &b->summary_len);
    if (b->item_bytes == 0) {
        bench_problem(&b->env, "--item-bytes %u is smaller than a signal without summary",
                      b->opt.item_bytes);
        return -1;
    }
    b->batch = bench_batch_items(b->item_bytes, BACKLOG_FRAME_OVERHEAD);
    return 0;
}

/* ------------------------------------------------------------------ publishing */

static int backlog_record_batch(publisher_t *p, const uint8_t id[16],
                                const schakel_item_result_t *results, size_t n, uint64_t first)
{
    for (size_t i = 0; i < n; i++) {
        if (results[i].recipients != 1) {
            bench_problem(&p->bench->env,
                          "item %zu of a publish by %s was queued for %u mailboxes, not 1", i,
                          p->principal, results[i].recipients);
            return -1;
        }
        expected_item_t *e = &p->records[p->n_records++];
        e->item_seq = results[i].seq;
        memcpy(e->message_id, id, SCHAKEL_MESSAGE_ID_BYTES);
        e->item_index = (uint32_t)i;
        e->publisher = p->number;
        e->counter = first + i;
    }
    return 0;
}

static void *backlog_publisher_run(void *arg)
{
    publisher_t *p = arg;
    bench_t *b = p->bench;
    schakel_signal_t signals[SCHAKEL_MAX_ITEMS];
    char refs[SCHAKEL_MAX_ITEMS][BACKLOG_REF_BYTES];
    schakel_item_result_t results[SCHAKEL_MAX_ITEMS];
    uint64_t sent = 0;
    while (sent < p->count && !backlog_out_of_time(b)) {
        size_t n = p->count - sent < b->batch ? (size_t)(p->count - sent) : b->batch;
        for (size_t i = 0; i < n; i++) {
            backlog_format_ref(refs[i], p->number, sent + i);
            backlog_fill_signal(b, &signals[i], refs[i]);
        }
        uint8_t id[SCHAKEL_MESSAGE_ID_BYTES];
        randombytes_buf(id, sizeof id);
        schakel_status_t st =
            bench_publish_retry(p->client, signals, n, id, results, BACKLOG_PUBLISH_ATTEMPTS,
                                b->deadline_ms, BACKLOG_CALL_TIMEOUT_MS, &b->env.stop);
        if (st != SCHAKEL_OK) {
            const schakel_error_t *e = schakel_last_error(p->client);
            if (!backlog_out_of_time(b))
                bench_problem(&b->env, "%s: publish after %" PRIu64 " items: %s %s: %s",
                              p->principal, sent, schakel_strerror(st), e->reason_name, e->text);
            break;
        }
        if (backlog_record_batch(p, id, results, n, sent) != 0)
            break;
        sent += n;
        p->publishes++;
        uint64_t before = atomic_fetch_add(&b->accepted, n);
        backlog_milestone(b, PHASE_PUBLISH, before, before + n);
    }
    return NULL;
}

static int backlog_connect(bench_t *b, const char *principal, schakel_client_t **out)
{
    return bench_connect(&b->env, principal, out,
                         bench_call_timeout(b->deadline_ms, BACKLOG_CALL_TIMEOUT_MS));
}

static int backlog_compare_items(const void *x, const void *y)
{
    const expected_item_t *a = x, *c = y;
    return a->item_seq < c->item_seq ? -1 : a->item_seq > c->item_seq;
}

/* Every accepted item, in the order the broker accepted it (item seq). */
static int backlog_merge_records(bench_t *b, const publisher_t *pubs)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < b->opt.publishers; i++)
        total += pubs[i].n_records;
    b->expected = calloc(total > 0 ? total : 1, sizeof *b->expected);
    if (b->expected == NULL) {
        bench_problem(&b->env, "out of memory for %" PRIu64 " expected items", total);
        return -1;
    }
    for (unsigned i = 0; i < b->opt.publishers; i++) {
        memcpy(b->expected + b->n_expected, pubs[i].records,
               pubs[i].n_records * sizeof *pubs[i].records);
        b->n_expected += pubs[i].n_records;
    }
    qsort(b->expected, b->n_expected, sizeof *b->expected, backlog_compare_items);
    for (uint64_t i = 1; i < b->n_expected; i++) {
        if (b->expected[i].item_seq == b->expected[i - 1].item_seq) {
            bench_problem(&b->env, "the broker accepted two items as seq %" PRIu64,
                          b->expected[i].item_seq);
            return -1;
        }
    }
    return 0;
}

/* The publish phase: connect, publish from every publisher thread, then
 * measure the broker with the backlog queued. */
static int backlog_publish_all(bench_t *b, publisher_t *pubs)
{
    backlog_results_t *r = &b->res;
    for (unsigned i = 0; i < b->opt.publishers; i++) {
        publisher_t *p = &pubs[i];
        *p = (publisher_t){.bench = b, .number = i + 1, .principal = backlog_publisher_ids[i]};
        p->count = b->opt.count / b->opt.publishers + (i < b->opt.count % b->opt.publishers);
        p->records = calloc(p->count > 0 ? p->count : 1, sizeof *p->records);
        if (p->records == NULL || backlog_connect(b, p->principal, &p->client) != 0) {
            if (p->records == NULL)
                bench_problem(&b->env, "out of memory for the publish records");
            return -1;
        }
    }
    double cpu0 = bench_read_cpu_s(b->env.broker_pid);
    double t0 = bench_now_s();
    backlog_phase_begin(b, PHASE_PUBLISH);
    for (unsigned i = 0; i < b->opt.publishers; i++) {
        if (pthread_create(&pubs[i].thread, NULL, backlog_publisher_run, &pubs[i]) != 0) {
            bench_problem(&b->env, "cannot start publisher thread %u", i + 1);
            break;
        }
        pubs[i].started = 1;
    }
    for (unsigned i = 0; i < b->opt.publishers; i++) {
        if (pubs[i].started)
            pthread_join(pubs[i].thread, NULL);
        r->published += pubs[i].n_records;
        r->publishes += pubs[i].publishes;
    }
    r->publish_s = bench_now_s() - t0;
    r->cpu_publish_s = bench_read_cpu_s(b->env.broker_pid) - cpu0;
    backlog_phase_end(b, PHASE_PUBLISH);
    backlog_phase_begin(b, PHASE_QUEUED);
    (void)backlog_sample_now(b, PHASE_QUEUED, r->published, &r->queued);
    r->store_bytes = bench_file_size(b->env.store_path);
    char path[BENCH_PATH_MAX + 8];
    snprintf(path, sizeof path, "%s-wal", b->env.store_path);
    r->wal_bytes = bench_file_size(path);
    snprintf(path, sizeof path, "%s-shm", b->env.store_path);
    r->shm_bytes = bench_file_size(path);
    for (unsigned i = 0; i < b->opt.publishers; i++)
        schakel_close(&pubs[i].client);
    if (backlog_merge_records(b, pubs) != 0)
        return -1;
    return r->published == b->opt.count ? 0 : -1;
}

/* ------------------------------------------------------------------ restart */

/* Stop the broker with the whole backlog queued (SIGTERM, as an operator
 * would) and start it again from the same store: the time from start to
 * READY with N deliveries pending, and its memory right after. The drain
 * that follows shows that nothing was lost. */
static int backlog_restart(bench_t *b)
{
    backlog_results_t *r = &b->res;
    bench_sampler_stop(&b->sampler);
    backlog_phase_begin(b, PHASE_RESTART);
    double t0 = bench_now_s();
    r->restart_stop_exit = bench_broker_stop(&b->env, BACKLOG_STOP_TIMEOUT_MS);
    r->restart_stop_s = bench_now_s() - t0;
    if (r->restart_stop_exit != 0) {
        bench_problem(&b->env,
                      "schakeld exited with %d on SIGTERM with the backlog queued (see %s)",
                      r->restart_stop_exit, b->env.log_path);
        return -1;
    }
    int timeout = bench_call_timeout(b->deadline_ms, BACKLOG_RESTART_TIMEOUT_MS);
    if (timeout == 0 || backlog_out_of_time(b))
        return -1;
    if (bench_broker_start(&b->env, b->opt.log_level, timeout) != 0)
        return -1;
    r->restarted = 1;
    r->restart_ready_s = b->env.ready_s;
    r->restart_pending = b->n_expected;
    (void)backlog_sample_now(b, PHASE_RESTART, b->n_expected, &r->restart_mem);
    if (bench_sampler_start(&b->sampler, b->env.broker_pid, BACKLOG_SAMPLE_MS) != 0)
        fprintf(stderr, "bench_backlog: no sampler thread after the restart; peaks from samples\n");
    return 0;
}

/* ------------------------------------------------------------------ drain */

static const expected_item_t *backlog_find(const bench_t *b, uint64_t item_seq)
{
    expected_item_t key = {.item_seq = item_seq};
    return bsearch(&key, b->expected, b->n_expected, sizeof *b->expected, backlog_compare_items);
}

/* The delivery is the item the broker accepted under this item seq, with
 * the fields the rule lets the recipient see. */
static int backlog_same_item(const bench_t *b, const expected_item_t *e,
                             const schakel_delivery_t *d)
{
    char ref[BACKLOG_REF_BYTES];
    backlog_format_ref(ref, e->publisher, e->counter);
    return memcmp(d->message_id, e->message_id, SCHAKEL_MESSAGE_ID_BYTES) == 0 &&
           d->item_index == e->item_index && d->sender != NULL &&
           strcmp(d->sender, backlog_publisher_ids[e->publisher - 1]) == 0 &&
           d->source_ref != NULL && strcmp(d->source_ref, ref) == 0 && d->summary != NULL &&
           strlen(d->summary) == b->summary_len && d->kind != NULL && d->theme != NULL;
}

static void backlog_note(char *first, size_t len, const char *what, uint64_t seq)
{
    if (first[0] == '\0')
        snprintf(first, len, "%s (delivery seq %" PRIu64 ")", what, seq);
}

static void backlog_check_delivery(bench_t *b, drain_state_t *ds, const schakel_delivery_t *d,
                                   char *first, size_t first_len)
{
    backlog_results_t *r = &b->res;
    r->delivered++;
    if (d->seq <= ds->last_seq) {
        r->seq_not_increasing++;
        backlog_note(first, first_len, "seq did not increase", d->seq);
    } else {
        ds->last_seq = d->seq;
    }
    const expected_item_t *e = backlog_find(b, d->item_seq);
    if (e == NULL) {
        r->unknown++;
        backlog_note(first, first_len, "an item seq the broker never accepted", d->seq);
        return;
    }
    uint64_t index = (uint64_t)(e - b->expected);
    if (!backlog_same_item(b, e, d)) {
        r->content_errors++;
        backlog_note(first, first_len, "delivery differs from the accepted item", d->seq);
    }
    if (ds->seen[index / 8] & (1u << (index % 8))) {
        r->duplicates++;
        backlog_note(first, first_len, "item delivered twice", d->seq);
        return;
    }
    ds->seen[index / 8] |= (uint8_t)(1u << (index % 8));
    r->distinct++;
    if ((int64_t)index != ds->last_index + 1) {
        r->out_of_order++;
        backlog_note(first, first_len, "item out of publish order", d->seq);
    }
    ds->last_index = (int64_t)index;
}

static int backlog_query_backlog(bench_t *b, schakel_client_t *client, int64_t *out)
{
    uint64_t backlog = 0;
    int timeout = bench_call_timeout(b->deadline_ms, BACKLOG_CALL_TIMEOUT_MS);
    schakel_status_t st =
        timeout > 0 ? schakel_backlog(client, &backlog, timeout) : SCHAKEL_ERR_TIMEOUT;
    if (st != SCHAKEL_OK) {
        bench_problem(&b->env, "backlog query: %s (%s)", schakel_strerror(st),
                      schakel_last_error(client)->text);
        return -1;
    }
    *out = (int64_t)backlog;
    return 0;
}

/* Receive, check and ack until every accepted item arrived. */
static void backlog_receive_all(bench_t *b, schakel_client_t *client, drain_state_t *ds, double t0)
{
    backlog_results_t *r = &b->res;
    char first[200] = "";
    while (r->distinct < b->n_expected && !backlog_out_of_time(b)) {
        schakel_delivery_t *d = NULL;
        int timeout = bench_call_timeout(b->deadline_ms, BACKLOG_SILENCE_LIMIT_MS);
        schakel_status_t st = schakel_receive(client, &d, timeout > 0 ? timeout : 1);
        if (st != SCHAKEL_OK) {
            if (!backlog_out_of_time(b))
                bench_problem(&b->env, "receive with %" PRIu64 " items still owed: %s (%s)",
                              b->n_expected - r->distinct, schakel_strerror(st),
                              schakel_last_error(client)->text);
            break;
        }
        if (r->delivered == 0)
            r->first_delivery_ms = (bench_now_s() - t0) * 1000.0;
        uint64_t before = r->distinct;
        backlog_check_delivery(b, ds, d, first, sizeof first);
        backlog_milestone(b, PHASE_DRAIN, before, r->distinct);
        st = schakel_ack(client, d->seq);
        schakel_delivery_free(&d);
        if (st != SCHAKEL_OK) {
            bench_problem(&b->env, "ack: %s (%s)", schakel_strerror(st),
                          schakel_last_error(client)->text);
            break;
        }
        atomic_store(&b->drained, r->distinct);
    }
    if (first[0] != '\0')
        fprintf(stderr, "bench_backlog: first drain problem: %s\n", first);
}

/* The drain phase: connect the recipient, take everything with acks. */
static int backlog_drain(bench_t *b)
{
    backlog_results_t *r = &b->res;
    schakel_client_t *client = NULL;
    drain_state_t ds = {.last_index = -1};
    ds.seen = calloc(b->n_expected / 8 + 1, 1);
    if (ds.seen == NULL) {
        bench_problem(&b->env, "out of memory for the drain check");
        return -1;
    }
    double c0 = bench_now_s();
    int rc = backlog_connect(b, BACKLOG_RECIPIENT, &client);
    r->connect_ms = (bench_now_s() - c0) * 1000.0;
    if (rc == 0)
        rc = backlog_query_backlog(b, client, &r->backlog_before);
    if (rc == 0) {
        r->drain_ran = 1;
        double cpu0 = bench_read_cpu_s(b->env.broker_pid);
        backlog_phase_begin(b, PHASE_DRAIN);
        double t0 = bench_now_s();
        if (schakel_subscribe(client, b->opt.window) != SCHAKEL_OK)
            bench_problem(&b->env, "subscribe: %s", schakel_last_error(client)->text);
        else
            backlog_receive_all(b, client, &ds, t0);
        r->drain_s = bench_now_s() - t0;
        r->drain_rate = r->drain_s > 0 ? (double)r->distinct / r->drain_s : 0;
        if (r->distinct == b->n_expected)
            (void)backlog_query_backlog(b, client, &r->backlog_after);
        r->cpu_drain_s = bench_read_cpu_s(b->env.broker_pid) - cpu0;
        backlog_phase_end(b, PHASE_DRAIN);
        backlog_phase_begin(b, PHASE_DONE);
        (void)backlog_sample_now(b, PHASE_DONE, r->distinct, &r->drained);
        r->store_bytes_drained = bench_file_size(b->env.store_path);
    }
    schakel_close(&client);
    free(ds.seen);
    r->missing = b->n_expected - r->distinct;
    return rc == 0 && r->distinct == b->n_expected ? 0 : -1;
}

/* ------------------------------------------------------------------ report */

/* Bytes of memory per queued message, between the first milestone sample of
 * the publish phase and the sample with the whole backlog queued. */
static void backlog_growth(bench_t *b)
{
    backlog_results_t *r = &b->res;
    const mem_sample_t *from = NULL;
    for (size_t i = 0; i < b->n_samples && from == NULL; i++)
        if (b->samples[i].phase == PHASE_PUBLISH)
            from = &b->samples[i];
    if (from == NULL || r->published <= from->progress || r->queued.rss_kib == 0)
        return;
    double n = (double)(r->published - from->progress);
    r->rss_growth_per_msg = (double)(r->queued.rss_kib - from->mem.rss_kib) * 1024.0 / n;
    r->anon_growth_per_msg = (double)(r->queued.anon_kib - from->mem.anon_kib) * 1024.0 / n;
    r->growth_known = 1;
}

/* Ready within the target after a restart with the whole backlog pending
 * (every item published, so N pending). */
static int backlog_restart_met(const bench_t *b)
{
    const backlog_results_t *r = &b->res;
    return r->restarted && r->restart_pending == b->opt.count &&
           r->restart_ready_s < BACKLOG_READY_TARGET_S;
}

/* The whole backlog published, and the broker's peak RSS under the bound. */
static int backlog_rss_met(const bench_t *b)
{
    const backlog_results_t *r = &b->res;
    return r->queued.hwm_kib > 0 && r->queued.hwm_kib < BACKLOG_RSS_LIMIT_KIB &&
           r->published == b->opt.count;
}

static int backlog_rate_met(const bench_t *b)
{
    return b->res.in_order && b->res.drain_rate >= BACKLOG_DRAIN_TARGET;
}

/* The targets, met or not, and the problem if there was one. */
static void backlog_print_criteria(const bench_t *b, const char *rule)
{
    const backlog_results_t *r = &b->res;
    printf("%s\n%-42s %-16s %-14s %s\n", rule, "criterion", "value", "target", "result");
    printf("%-42s %-16.1f %-14s %s\n", "broker peak RSS, backlog queued (MiB)",
           bench_mib(r->queued.hwm_kib), "< 100", backlog_rss_met(b) ? "met" : "not met");
    if (r->restarted)
        printf("%-42s %-16.3f %-14s %s\n", "ready after restart, backlog pending (s)",
               r->restart_ready_s, "< 2", backlog_restart_met(b) ? "met" : "not met");
    else
        printf("%-42s %-16s %-14s %s\n", "ready after restart, backlog pending (s)", "-", "< 2",
               "not run");
    printf("%-42s %-16s %-14s %s\n", "backlog drains in order, each item once",
           r->in_order ? "yes" : "no", "yes", r->in_order ? "met" : "not met");
    printf("%-42s %-16.0f %-14s %s\n", "drain rate (deliveries/s)", r->drain_rate, ">= 20000",
           backlog_rate_met(b) ? "met" : "not met");
    if (b->env.problem[0] != '\0')
        printf("problem: %s\n", b->env.problem);
    printf("%s\n", rule);
}

static void backlog_print_table(const bench_t *b)
{
    const backlog_results_t *r = &b->res;
    const char *rule = BENCH_RULE;
    printf("\nSchakel backlog bench: %" PRIu64 " signals of %zu bytes, %u publisher(s), "
           "batches of %zu, window %u, broker log level %s\n%s\n",
           b->opt.count, b->item_bytes, b->opt.publishers, b->batch, b->opt.window,
           b->opt.log_level, rule);
    printf("%-22s %" PRIu64 " publishes, %" PRIu64 " items in %.1f s: %.1f publishes/s, %.0f "
           "items/s\n",
           "publish", r->publishes, r->published, r->publish_s,
           r->publish_s > 0 ? (double)r->publishes / r->publish_s : 0,
           r->publish_s > 0 ? (double)r->published / r->publish_s : 0);
    printf("%-22s VmRSS %.1f MiB, peak VmHWM %.1f MiB (anon %.1f, file %.1f, shmem %.1f MiB)\n",
           "broker, queued", bench_mib(r->queued.rss_kib), bench_mib(r->queued.hwm_kib),
           bench_mib(r->queued.anon_kib), bench_mib(r->queued.file_kib),
           bench_mib(r->queued.shmem_kib));
    if (r->growth_known)
        printf("%-22s %+.2f bytes RSS (%+.2f anon) per queued message\n", "memory per message",
               r->rss_growth_per_msg, r->anon_growth_per_msg);
    printf("%-22s %.1f MiB store, %.1f MiB WAL, %.1f MiB shm; broker log %.1f MiB\n", "on disk",
           (double)r->store_bytes / 1048576.0, (double)r->wal_bytes / 1048576.0,
           (double)r->shm_bytes / 1048576.0, (double)r->log_bytes / 1048576.0);
    if (r->restarted)
        printf("%-22s stop %.1f s (exit %d); start to READY %.3f s with %" PRIu64
               " pending; then VmRSS %.1f MiB, VmHWM %.1f MiB (anon %.1f MiB)\n",
               "broker restart", r->restart_stop_s, r->restart_stop_exit, r->restart_ready_s,
               r->restart_pending, bench_mib(r->restart_mem.rss_kib),
               bench_mib(r->restart_mem.hwm_kib), bench_mib(r->restart_mem.anon_kib));
    if (r->drain_ran) {
        printf("%-22s %.0f ms, backlog reported %" PRId64 "\n", "recipient connect", r->connect_ms,
               r->backlog_before);
        printf("%-22s %" PRIu64 " items in %.1f s: %.0f deliveries/s (first after %.0f ms)\n",
               "drain", r->distinct, r->drain_s, r->drain_rate, r->first_delivery_ms);
        printf("%-22s peak VmRSS %.1f MiB, after %.1f MiB, VmHWM %.1f MiB\n", "broker, drain",
               bench_mib(r->drain_peak_rss_kib), bench_mib(r->drained.rss_kib),
               bench_mib(r->drained.hwm_kib));
        printf("%-22s %" PRIu64 " out of order, %" PRIu64 " seq not increasing, %" PRIu64
               " twice, %" PRIu64 " unknown, %" PRIu64 " altered, %" PRIu64
               " missing; backlog after %" PRId64 "\n",
               "drain check", r->out_of_order, r->seq_not_increasing, r->duplicates, r->unknown,
               r->content_errors, r->missing, r->backlog_after);
    }
    printf("%-22s publish %.1f s, drain %.1f s\n", "broker CPU", r->cpu_publish_s, r->cpu_drain_s);
    backlog_print_criteria(b, rule);
}

static void backlog_json_criteria(FILE *f, const bench_t *b)
{
    const backlog_results_t *r = &b->res;
    fprintf(f, "  \"criteria\": {\n");
    fprintf(f,
            "    \"peak_rss_under_100_mib\": {\"value_kib\": %ld, \"limit_kib\": %ld, "
            "\"met\": %s},\n",
            r->queued.hwm_kib, BACKLOG_RSS_LIMIT_KIB, backlog_rss_met(b) ? "true" : "false");
    if (r->restarted)
        fprintf(f,
                "    \"restart_ready_under_2_s\": {\"value_s\": %.3f, \"target_s\": %.1f, "
                "\"met\": %s},\n",
                r->restart_ready_s, BACKLOG_READY_TARGET_S,
                backlog_restart_met(b) ? "true" : "false");
    fprintf(f, "    \"drain_in_order\": {\"met\": %s},\n", r->in_order ? "true" : "false");
    fprintf(f, "    \"drain_rate\": {\"value\": %.1f, \"target\": %.0f, \"met\": %s}\n",
            r->drain_rate, BACKLOG_DRAIN_TARGET, backlog_rate_met(b) ? "true" : "false");
    fprintf(f, "  },\n");
}

static void backlog_json_samples(FILE *f, const bench_t *b)
{
    fprintf(f, "  \"samples\": [\n");
    for (size_t i = 0; i < b->n_samples; i++) {
        const mem_sample_t *s = &b->samples[i];
        fprintf(f,
                "    {\"phase\": \"%s\", \"progress\": %" PRIu64 ", \"at_s\": %.2f, "
                "\"rss_kib\": %ld, \"hwm_kib\": %ld, \"anon_kib\": %ld, \"file_kib\": %ld, "
                "\"shmem_kib\": %ld}%s\n",
                backlog_phase_names[s->phase], s->progress, s->at_s, s->mem.rss_kib, s->mem.hwm_kib,
                s->mem.anon_kib, s->mem.file_kib, s->mem.shmem_kib,
                i + 1 < b->n_samples ? "," : "");
    }
    fprintf(f, "  ]\n");
}

/* The restart: null where it did not run (--no-restart, or the run ended
 * before it). */
static void backlog_json_restart(FILE *f, const bench_t *b)
{
    const backlog_results_t *r = &b->res;
    fprintf(f, "  \"restart_stop_s\": ");
    if (r->restarted)
        fprintf(f, "%.3f,\n  \"restart_ready_s\": %.3f,\n", r->restart_stop_s, r->restart_ready_s);
    else
        fprintf(f, "null,\n  \"restart_ready_s\": null,\n");
    fprintf(f, "  \"restart_stop_exit\": %d,\n  \"restart_pending\": %" PRIu64 ",\n",
            r->restart_stop_exit, r->restart_pending);
    bench_json_mem(f, "restart", &r->restart_mem, BENCH_MEM_RSS | BENCH_MEM_HWM | BENCH_MEM_ANON);
}

/* One scalar per line at the top level, so that run.sh can read it with sed. */
static void backlog_json_scalars(FILE *f, const bench_t *b)
{
    const backlog_results_t *r = &b->res;
    double pub_rate = r->publish_s > 0 ? (double)r->published / r->publish_s : 0;
    double publishes_rate = r->publish_s > 0 ? (double)r->publishes / r->publish_s : 0;
    fprintf(f, "  \"bench\": \"backlog\",\n  \"completed\": %s,\n",
            r->completed ? "true" : "false");
    fprintf(f, "  \"count\": %" PRIu64 ",\n  \"publishers\": %u,\n  \"batch_items\": %zu,\n",
            b->opt.count, b->opt.publishers, b->batch);
    fprintf(f, "  \"item_bytes\": %zu,\n  \"window\": %u,\n  \"broker_log_level\": ", b->item_bytes,
            b->opt.window);
    bench_json_string(f, b->opt.log_level);
    fprintf(f, ",\n  \"deadline_s\": %.0f,\n", b->opt.deadline_s);
    fprintf(f, "  \"published_items\": %" PRIu64 ",\n  \"publishes\": %" PRIu64 ",\n", r->published,
            r->publishes);
    fprintf(f, "  \"publish_s\": %.3f,\n  \"publishes_per_s\": %.1f,\n", r->publish_s,
            publishes_rate);
    fprintf(f, "  \"publish_items_per_s\": %.1f,\n", pub_rate);
    fprintf(f, "  \"publish_peak_rss_kib\": %ld,\n", r->publish_peak_rss_kib);
    bench_json_mem(f, "queued", &r->queued, BENCH_MEM_ALL);
    if (r->growth_known)
        fprintf(f,
                "  \"rss_growth_bytes_per_message\": %.3f,\n"
                "  \"anon_growth_bytes_per_message\": %.3f,\n",
                r->rss_growth_per_msg, r->anon_growth_per_msg);
    fprintf(f, "  \"store_bytes\": %lld,\n  \"wal_bytes\": %lld,\n  \"shm_bytes\": %lld,\n",
            r->store_bytes, r->wal_bytes, r->shm_bytes);
    fprintf(f, "  \"store_bytes_after_drain\": %lld,\n  \"broker_log_bytes\": %lld,\n",
            r->store_bytes_drained, r->log_bytes);
    backlog_json_restart(f, b);
    fprintf(f, "  \"connect_ms\": %.1f,\n  \"backlog_before\": %" PRId64 ",\n", r->connect_ms,
            r->backlog_before);
    fprintf(f, "  \"first_delivery_ms\": %.1f,\n  \"drain_s\": %.3f,\n", r->first_delivery_ms,
            r->drain_s);
    fprintf(f, "  \"drain_deliveries_per_s\": %.1f,\n", r->drain_rate);
    fprintf(f, "  \"drain_peak_rss_kib\": %ld,\n  \"drained_rss_kib\": %ld,\n",
            r->drain_peak_rss_kib, r->drained.rss_kib);
    fprintf(f, "  \"drained_hwm_kib\": %ld,\n", r->drained.hwm_kib);
    fprintf(f, "  \"delivered\": %" PRIu64 ",\n  \"distinct\": %" PRIu64 ",\n", r->delivered,
            r->distinct);
    fprintf(f, "  \"out_of_order\": %" PRIu64 ",\n  \"seq_not_increasing\": %" PRIu64 ",\n",
            r->out_of_order, r->seq_not_increasing);
    fprintf(f, "  \"duplicates\": %" PRIu64 ",\n  \"unknown\": %" PRIu64 ",\n", r->duplicates,
            r->unknown);
    fprintf(f, "  \"content_errors\": %" PRIu64 ",\n  \"missing\": %" PRIu64 ",\n",
            r->content_errors, r->missing);
    fprintf(f, "  \"backlog_after\": %" PRId64 ",\n", r->backlog_after);
    fprintf(f, "  \"broker_cpu_publish_s\": %.2f,\n  \"broker_cpu_drain_s\": %.2f,\n",
            r->cpu_publish_s, r->cpu_drain_s);
    fprintf(f, "  \"broker_exit\": %d,\n  \"problem\": ", r->broker_exit);
    bench_json_string(f, b->env.problem);
    fprintf(f, ",\n");
}

static int backlog_write_json(const bench_t *b)
{
    FILE *f = bench_json_open(b->opt.json_path);
    if (f == NULL)
        return -1;
    fprintf(f, "{\n");
    backlog_json_scalars(f, b);
    backlog_json_criteria(f, b);
    backlog_json_samples(f, b);
    fprintf(f, "}\n");
    return fclose(f);
}

/* ------------------------------------------------------------------ main */

/* Run both phases; the results say how far it got. */
static void backlog_run(bench_t *b)
{
    backlog_results_t *r = &b->res;
    publisher_t pubs[BACKLOG_MAX_PUBLISHERS];
    memset(pubs, 0, sizeof pubs);
    if (backlog_env_create(b) != 0)
        return;
    if (bench_sampler_start(&b->sampler, b->env.broker_pid, BACKLOG_SAMPLE_MS) != 0)
        fprintf(stderr, "bench_backlog: no sampler thread; peaks from samples only\n");
    int published = backlog_publish_all(b, pubs) == 0;
    for (unsigned i = 0; i < BACKLOG_MAX_PUBLISHERS; i++) {
        schakel_close(&pubs[i].client);
        free(pubs[i].records);
    }
    if (published && (!b->opt.restart || backlog_restart(b) == 0) && backlog_drain(b) == 0)
        r->completed = 1;
    r->in_order = r->completed && r->backlog_before == (int64_t)b->n_expected &&
                  r->backlog_after == 0 && r->out_of_order == 0 && r->seq_not_increasing == 0 &&
                  r->duplicates == 0 && r->unknown == 0 && r->content_errors == 0 &&
                  r->missing == 0;
    bench_sampler_stop(&b->sampler);
    r->publish_peak_rss_kib = b->peak_rss_kib[PHASE_PUBLISH];
    r->drain_peak_rss_kib = b->peak_rss_kib[PHASE_DRAIN];
    r->log_bytes = bench_file_size(b->env.log_path);
}

int main(int argc, char **argv)
{
    bench_t *b = calloc(1, sizeof *b);
    if (b == NULL)
        return 1;
    b->opt = (backlog_options_t){.count = BACKLOG_DEFAULT_COUNT,
                                 .publishers = BACKLOG_MAX_PUBLISHERS,
                                 .window = SCHAKEL_MAX_WINDOW,
                                 .item_bytes = BACKLOG_DEFAULT_ITEM_BYTES,
                                 .json_path = "tests/bench/results/backlog.json",
                                 .log_level = "info",
                                 .restart = 1};
    int rc = backlog_parse_args(argc, argv, &b->opt);
    if (rc != 0) {
        backlog_usage(rc == 1 ? stdout : stderr);
        free(b);
        return rc == 1 ? 0 : 2;
    }
    pthread_mutex_init(&b->lock, NULL);
    b->env.broker_pidfd = -1;
    b->res.restart_stop_exit = -1;
    b->res.backlog_before = b->res.backlog_after = -1;
    b->res.broker_exit = -1;
    b->started_ms = bench_now_ms();
    b->deadline_ms = b->started_ms + (int64_t)(b->opt.deadline_s * 1000.0);
    bench_catch_signals(1);
    if (keys_init() != 0 || backlog_size_signal(b) != 0) {
        fprintf(stderr, "bench_backlog: cannot prepare the signals: %s\n", b->env.problem);
        free(b);
        return 1;
    }
    printf("bench_backlog: %" PRIu64 " signals of %zu bytes, deadline %.0f s\n", b->opt.count,
           b->item_bytes, b->opt.deadline_s);
    fflush(stdout);
    backlog_run(b);
    if (b->env.broker_pid > 0)
        b->res.broker_exit = bench_broker_stop(&b->env, BACKLOG_STOP_TIMEOUT_MS);
    backlog_growth(b);
    backlog_print_table(b);
    int json_rc = backlog_write_json(b);
    bench_env_remove(&b->env, b->opt.keep);
    int ok = b->res.completed && b->res.in_order && json_rc == 0;
    free(b->expected);
    pthread_mutex_destroy(&b->lock);
    free(b);
    return ok ? 0 : 1;
}
