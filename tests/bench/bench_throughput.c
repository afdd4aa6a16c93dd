/*
 * bench_throughput.c — Schakel under the relay baseline's load: signed,
 * batched publishes of ~1 KiB signals by 1 and by 4 publishers, durable
 * store, a realistic policy, every signal delivered to 3 recipients that
 * ack; then the latency publish->deliver at paced rates.
 *
 * Owns a temporary folder under /tmp and the one schakeld it starts there
 * (support.h; the broker is ended by its PID only), with the policy of
 * throughput-policy.yaml. Trusts nothing the broker sends: every delivery
 * is checked (the rule that carried it, the fields that rule lets through,
 * once per recipient, nothing missing).
 * Bounded by a deadline. Exit status: 0 when every run completed with every
 * item delivered exactly once to every recipient, 1 otherwise, 2 on usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "schakel.h"
#include "schakel_limits.h"
#include "support.h"

#define TP_DEFAULT_COUNT 100000u
#define TP_MAX_COUNT 10000000u
/* One serialized Signal: "about 1 KiB", and still 256 of them fit one frame. */
#define TP_DEFAULT_ITEM_BYTES 1000u
#define TP_MIN_ITEM_BYTES 300u
#define TP_PUBLISHERS 4u
#define TP_RECIPIENTS 3u
#define TP_MAX_RATE 100000u
#define TP_DEFAULT_LATENCY_S 3u
/* Two group-committing publishers: while one waits for its Accepted (an
 * fsync), the other's batch is already on its way; see README.md. */
#define TP_DEFAULT_LATENCY_PUBLISHERS 2u
#define TP_ACK_BATCH 256u
#define TP_REF_BYTES 48
#define TP_FRAME_OVERHEAD 192u /* Frame version, Publish header, sender, message id, signature */
#define TP_START_TIMEOUT_MS 15000
#define TP_STOP_TIMEOUT_MS 60000
#define TP_CALL_TIMEOUT_MS 30000 /* one publish or backlog query at most */
#define TP_RECEIVE_WAIT_MS 100   /* a recipient looks at the flags this often */
#define TP_SILENCE_MS 20000      /* a recipient that hears nothing this long gives up */
#define TP_PUBLISH_ATTEMPTS 3
#define TP_SAMPLE_MS 20 /* the broker's RSS, read this often */
#define TP_PACE_LEAD_NS 20000000LL
#define TP_CDF_POINTS 4000
/* The broker's per-principal publish limit, raised for a feed: a group-
 * committing publisher at 10,000 items/s sends up to a few thousand
 * publishes per second. */
#define TP_PUBLISH_RATE_LIMIT 100000
#define TP_KIND "overlastmelding"
#define TP_THEME "overlast"
#define TP_SENDER_PARTNER "gemeente"
/* The policy, next to this file in the source tree (tp_policy_path), or
 * the file $BENCH_THROUGHPUT_POLICY names. */
#define TP_POLICY_FILE "throughput-policy.yaml"
#define TP_POLICY_ENV "BENCH_THROUGHPUT_POLICY"
#define TP_POLICY_MAX_BYTES (1024 * 1024)

static const char tp_summary_words[] =
    "Bewoners melden herhaaldelijk geluidsoverlast en samenscholing bij de portiek; de "
    "wijkagent en de woningcorporatie zijn eerder ingelicht, de situatie houdt aan. ";

static const char *const tp_publisher_ids[TP_PUBLISHERS] = {"gemeente/feed-1", "gemeente/feed-2",
                                                            "gemeente/feed-3", "gemeente/feed-4"};

/* Fields a delivery can carry, as the bench checks them. */
enum tp_field {
    TP_F_AREA = 1u << 0,
    TP_F_ADDRESS = 1u << 1,
    TP_F_SUBJECT = 1u << 2,
    TP_F_GROUNDS = 1u << 3,
    TP_F_SEVERITY = 1u << 4,
    TP_F_OBSERVED = 1u << 5,
    TP_F_SUMMARY = 1u << 6,
    TP_F_SOURCE = 1u << 7,
    TP_F_CASE_REF = 1u << 8,
    TP_F_RECIPIENTS = 1u << 9,
};

/* A recipient, the rule that must carry the bench traffic to it, and the
 * fields that rule lets through (policy below). */
typedef struct tp_recipient_spec {
    const char *principal;
    const char *rule;
    unsigned fields;
} tp_recipient_spec_t;

static const tp_recipient_spec_t tp_recipient_specs[TP_RECIPIENTS] = {
    {"politie/bvh-koppeling", "bench-overlast-politie",
     TP_F_AREA | TP_F_ADDRESS | TP_F_SUBJECT | TP_F_GROUNDS | TP_F_SEVERITY | TP_F_OBSERVED |
         TP_F_SUMMARY | TP_F_SOURCE},
    {"riec/analyse", "bench-overlast-riec",
     TP_F_AREA | TP_F_SUBJECT | TP_F_SEVERITY | TP_F_SUMMARY | TP_F_SOURCE},
    {"woco-servatius/meldingen", "bench-overlast-woco",
     TP_F_ADDRESS | TP_F_SEVERITY | TP_F_OBSERVED | TP_F_SUMMARY | TP_F_SOURCE},
};

/* Principals that are in the policy and never take part: the policy is not
 * just the bench traffic. Operators of recipient partners never receive. */
static const char *const tp_other_ids[] = {
    "gemeente/wijkteam", "politie/beheer", "riec/beheer",          "woco-maasvallei/meldingen",
    "ggd/meldpunt",      "om/parket",      "veiligthuis/meldpunt", "belastingdienst/toezicht",
};

#define TP_N_OTHERS (sizeof tp_other_ids / sizeof tp_other_ids[0])
#define TP_N_PRINCIPALS (TP_PUBLISHERS + TP_RECIPIENTS + TP_N_OTHERS)

/* ------------------------------------------------------------------ types */

typedef struct tp_options {
    uint64_t count;
    unsigned item_bytes, window, latency_s, latency_publishers;
    bench_rates_t rates;
    double deadline_s; /* 0: derived */
    const char *json_path, *log_level;
    int keep;
} tp_options_t;

/* One run: throughput (rate 0: as fast as Accepted comes back) or paced. */
typedef struct tp_phase {
    unsigned number; /* 1-based, in every source_ref */
    unsigned rate;   /* items/s; 0 = throughput */
    unsigned publishers;
    uint64_t count; /* items of all publishers */
    int64_t start_ns;
} tp_phase_t;

typedef struct tp_result {
    int ran;
    unsigned rate, publishers;
    uint64_t count, accepted, publishes, delivered, duplicates, stale, wrong, missing;
    double publish_s; /* start to the last Accepted */
    double deliver_s; /* start to the last delivery */
    double items_per_s, publishes_per_s, deliveries_per_s;
    double broker_cpu_s;
    double bench_cpu_s;   /* this process: signing, decoding, acking, checking */
    double max_behind_ms; /* the furthest a paced publisher fell behind its schedule */
    bench_latency_t lat;
} tp_result_t;

typedef struct tp_bench tp_bench_t;

typedef struct tp_publisher {
    tp_bench_t *bench;
    unsigned number; /* 0-based */
    schakel_client_t *client;
    pthread_t thread;
    int started;
    /* per phase */
    uint64_t accepted, publishes;
    int64_t last_accepted_ns, max_behind_ns;
} tp_publisher_t;

typedef struct tp_recipient {
    tp_bench_t *bench;
    unsigned number;
    const tp_recipient_spec_t *spec;
    schakel_client_t *client;
    pthread_t thread;
    int started;
    uint64_t pending[TP_ACK_BATCH]; /* seqs received, not yet acked */
    size_t n_pending;
    /* per phase */
    uint8_t *seen; /* one bit per item of the phase */
    uint64_t distinct, duplicates, stale, wrong;
    int64_t last_ns;
    bench_hist_t hist;
} tp_recipient_t;

struct tp_bench {
    tp_options_t opt;
    int64_t deadline_ms;
    bench_env_t env; /* its stop: every loop winds down */
    /* every item is this signal with its own source_ref */
    size_t item_bytes, batch, summary_len;
    char summary[SCHAKEL_MAX_SUMMARY_LEN + 1];
    int64_t observed_at;
    tp_publisher_t pubs[TP_PUBLISHERS];
    tp_recipient_t recipients[TP_RECIPIENTS];
    const tp_phase_t *phase; /* set before a phase's threads start */
    bench_sampler_t sampler;
    /* results */
    tp_result_t p1, p4;
    tp_result_t latency[BENCH_MAX_RATES];
    int rules; /* in the policy */
    long broker_peak_rss_kib, broker_hwm_kib, latency_peak_rss_kib;
    int64_t backlog_after[TP_RECIPIENTS];
    int broker_exit;
    double load_start, load_end;
};

/* ------------------------------------------------------------------ helpers */

static int tp_out_of_time(tp_bench_t *b)
{
    if (atomic_load(&b->env.stop))
        return 1;
    if (bench_interrupted()) {
        bench_problem(&b->env, "interrupted");
        return 1;
    }
    if (bench_now_ms() >= b->deadline_ms) {
        bench_problem(&b->env, "deadline of %.0f s reached", b->opt.deadline_s);
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ options */

static void tp_usage(FILE *out)
{
    fprintf(out,
            "usage: bench_throughput [--count N] [--item-bytes B] [--window W] [--rates R,...]\n"
            "                        [--latency-seconds S] [--latency-publishers P]\n"
            "                        [--deadline SECONDS] [--json FILE] [--broker-log-level L]\n"
            "                        [--keep]\n"
            "  --count N               items of each throughput run (default %u)\n"
            "  --item-bytes B          serialized size of one signal (default %u)\n"
            "  --window W              the recipients' Flow window, 1..%u (default %u)\n"
            "  --rates R,...           paced latency runs, items/s (default 1000,5000,10000;\n"
            "                          0 = none)\n"
            "  --latency-seconds S     length of each paced run (default %u)\n"
            "  --latency-publishers P  publisher connections of the paced runs, 1..%u "
            "(default %u)\n"
            "  --deadline S            give up after S seconds (default 120 + 1200 per million\n"
            "                          items + the paced runs)\n"
            "  --json FILE             results (default tests/bench/results/throughput.json);\n"
            "                          the CDFs go next to it as cdf_schakel_<rate>.dat\n"
            "  --broker-log-level L    schakeld --log-level (default info, as deployed)\n"
            "  --keep                  keep the temporary folder (store, log) and name it\n"
            "environment: SCHAKELD (the broker binary), else $BUILD/schakeld, else "
            "build/schakeld\n",
            TP_DEFAULT_COUNT, TP_DEFAULT_ITEM_BYTES, SCHAKEL_MAX_WINDOW, SCHAKEL_MAX_WINDOW,
            TP_DEFAULT_LATENCY_S, TP_PUBLISHERS, TP_DEFAULT_LATENCY_PUBLISHERS);
}

/* Returns 0 to run, 1 for --help, 2 on a usage error. */
static int tp_parse_args(int argc, char **argv, tp_options_t *o)
{
    const bench_option_t options[] = {
        {"--count", BENCH_OPT_U64, &o->count, 1, TP_MAX_COUNT, NULL},
        {"--item-bytes", BENCH_OPT_UNSIGNED, &o->item_bytes, TP_MIN_ITEM_BYTES,
         SCHAKEL_MAX_ITEM_BYTES, NULL},
        {"--window", BENCH_OPT_UNSIGNED, &o->window, 1, SCHAKEL_MAX_WINDOW, NULL},
        {"--rates", BENCH_OPT_RATES, &o->rates, 1, TP_MAX_RATE, NULL},
        {"--latency-seconds", BENCH_OPT_UNSIGNED, &o->latency_s, 1, 600, NULL},
        {"--latency-publishers", BENCH_OPT_UNSIGNED, &o->latency_publishers, 1, TP_PUBLISHERS,
         NULL},
        {"--deadline", BENCH_OPT_SECONDS, &o->deadline_s, 1, 86400, NULL},
        {"--json", BENCH_OPT_TEXT, &o->json_path, 0, 0, NULL},
        {"--broker-log-level", BENCH_OPT_TEXT, &o->log_level, 0, 0, NULL},
        {"--keep", BENCH_OPT_FLAG, &o->keep, 1, 0, NULL},
    };
    int rc = bench_parse_options(argc, argv, options, sizeof options / sizeof options[0]);
    if (rc != 0)
        return rc;
    if (o->deadline_s == 0)
        o->deadline_s =
            120.0 + 1200.0 * (double)o->count / 1e6 + (double)(o->rates.n * (o->latency_s + 30));
    return 0;
}

/* ------------------------------------------------------------------ the signal */

static void tp_fill_signal(const tp_bench_t *b, schakel_signal_t *s, const char *source_ref)
{
    bench_signal_init(s, TP_KIND,
                      "Meldingen van omwonenden en een waarneming van de handhaver (benchmark).",
                      SCHAKEL_SEVERITY_MEDIUM, b->observed_at, b->summary, source_ref);
}

/* The scheduled (paced) or actual (throughput) send time, the phase and
 * the item's number in the phase, at a fixed width so every item has the
 * same size: "t=" 19 digits ":p" 2 digits ":n" 10 digits. Written and read
 * digit by digit: with snprintf and sscanf they took about 2,300 and 3,300
 * instructions an item, more than a tenth of what a recipient thread did. */
#define TP_REF_TIME_DIGITS 19u
#define TP_REF_PHASE_DIGITS 2u
#define TP_REF_NUMBER_DIGITS 10u
_Static_assert(6 + TP_REF_TIME_DIGITS + TP_REF_PHASE_DIGITS + TP_REF_NUMBER_DIGITS < TP_REF_BYTES,
               "a source_ref and its NUL fit TP_REF_BYTES");

static char *tp_put_digits(char *out, uint64_t value, unsigned digits)
{
    for (unsigned i = digits; i-- > 0; value /= 10)
        out[i] = (char)('0' + value % 10);
    return out + digits;
}

static void tp_format_ref(char *out, int64_t at_ns, unsigned phase, uint64_t number)
{
    char *at = out;
    memcpy(at, "t=", 2);
    at = tp_put_digits(at + 2, at_ns > 0 ? (uint64_t)at_ns : 0, TP_REF_TIME_DIGITS);
    memcpy(at, ":p", 2);
    at = tp_put_digits(at + 2, phase % 100u, TP_REF_PHASE_DIGITS);
    memcpy(at, ":n", 2);
    at = tp_put_digits(at + 2, number % 10000000000u, TP_REF_NUMBER_DIGITS);
    *at = '\0';
}

/* Reads `digits` decimal digits; -1 if one is not. */
static int tp_get_digits(const char **in, unsigned digits, uint64_t *value)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < digits; i++) {
        char c = (*in)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (uint64_t)(c - '0');
    }
    *in += digits;
    *value = v;
    return 0;
}

/* Exactly what tp_format_ref writes, else -1 (19 digits fit an int64_t). */
static int tp_parse_ref(const char *ref, int64_t *at_ns, unsigned *phase, uint64_t *number)
{
    uint64_t t = 0, p = 0, n = 0;
    if (ref == NULL || strncmp(ref, "t=", 2) != 0)
        return -1;
    ref += 2;
    if (tp_get_digits(&ref, TP_REF_TIME_DIGITS, &t) != 0 || strncmp(ref, ":p", 2) != 0)
        return -1;
    ref += 2;
    if (tp_get_digits(&ref, TP_REF_PHASE_DIGITS, &p) != 0 || strncmp(ref, ":n", 2) != 0)
        return -1;
    ref += 2;
    if (tp_get_digits(&ref, TP_REF_NUMBER_DIGITS, &n) != 0 || *ref != '\0' || t > INT64_MAX)
        return -1;
    *at_ns = (int64_t)t;
    *phase = (unsigned)p;
    *number = n;
    return 0;
}

/* Choose the summary length that makes every item opt.item_bytes long (or
 * just under), and the batch that keeps a Publish under the frame limit. */
static int tp_size_signal(tp_bench_t *b)
{
    char ref[TP_REF_BYTES];
    schakel_signal_t s;
    b->observed_at = (int64_t)time(NULL) - 60;
    tp_format_ref(ref, bench_now_ns(), 1, 0);
    tp_fill_signal(b, &s, ref);
    b->item_bytes = bench_signal_pad(&s, tp_publisher_ids[0], tp_summary_words, b->summary,
                                     b->opt.item_bytes, &b->summary_len);
    if (b->item_bytes == 0) {
        bench_problem(&b->env, "--item-bytes %u is smaller than a signal without summary",
                      b->opt.item_bytes);
        return -1;
    }
    b->batch = bench_batch_items(b->item_bytes, TP_FRAME_OVERHEAD);
    return 0;
}

/* ------------------------------------------------------------------ environment */

/* Where the policy is: $TP_POLICY_ENV when set (only that); else
 * tests/bench/TP_POLICY_FILE under the nearest folder above the binary that
 * has it (the source tree, for a build folder inside it); else under the
 * working directory. 0, or -1 when none is readable (out: the last tried). */
static int tp_policy_path(char *out, size_t len)
{
    const char *given = getenv(TP_POLICY_ENV);
    char dir[PATH_MAX];
    if (given != NULL && *given != '\0') {
        snprintf(out, len, "%s", given);
        return access(out, R_OK) == 0 ? 0 : -1;
    }
    ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
    dir[n > 0 ? n : 0] = '\0';
    for (char *slash; (slash = strrchr(dir, '/')) != NULL && slash != dir;) {
        *slash = '\0'; /* the folder above */
        snprintf(out, len, "%s/tests/bench/" TP_POLICY_FILE, dir);
        if (access(out, R_OK) == 0)
            return 0;
    }
    snprintf(out, len, "tests/bench/" TP_POLICY_FILE);
    return access(out, R_OK) == 0 ? 0 : -1;
}

/* The policy's text: it must name every principal's key file as
 * bench_env_create writes it. Counts the rules into b->rules. */
static char *tp_policy_text(tp_bench_t *b, const char *const *ids, size_t n)
{
    char path[PATH_MAX + 64], want[SCHAKEL_MAX_PRINCIPAL_LEN + 32];
    if (tp_policy_path(path, sizeof path) != 0) {
        bench_problem(&b->env, "no policy at %s (set %s to name it)", path, TP_POLICY_ENV);
        return NULL;
    }
    FILE *f = fopen(path, "r");
    char *text = f != NULL ? calloc(TP_POLICY_MAX_BYTES + 1, 1) : NULL;
    size_t got = text != NULL ? fread(text, 1, TP_POLICY_MAX_BYTES + 1, f) : 0;
    if (f == NULL || text == NULL || ferror(f) || got > TP_POLICY_MAX_BYTES) {
        bench_problem(&b->env, "cannot read %s (at most %d bytes)", path, TP_POLICY_MAX_BYTES);
        if (f != NULL)
            fclose(f);
        free(text);
        return NULL;
    }
    fclose(f);
    for (size_t i = 0; i < n; i++) {
        snprintf(want, sizeof want, "key_file: keys/%s.pub\n", ids[i]);
        for (char *c = want + strlen("key_file: keys/"); *c != '\0'; c++)
            *c = *c == '/' ? '-' : *c;
        if (strstr(text, want) == NULL) {
            bench_problem(&b->env, "%s does not name the key file of %s (%.*s)", path, ids[i],
                          (int)strlen(want) - 1, want);
            free(text);
            return NULL;
        }
    }
    /* the rules: the list items after "rules:", the policy's last section */
    const char *r = strstr(text, "\nrules:\n");
    while (r != NULL && (r = strstr(r + 1, "\n  - id: ")) != NULL)
        b->rules++;
    return text;
}

/* The folder, keys, policy and config; then the broker. */
static int tp_setup(tp_bench_t *b)
{
    const char *ids[TP_N_PRINCIPALS];
    char extra[128];
    for (size_t i = 0; i < TP_N_PRINCIPALS; i++)
        ids[i] = i < TP_PUBLISHERS ? tp_publisher_ids[i]
                 : i < TP_PUBLISHERS + TP_RECIPIENTS
                     ? tp_recipient_specs[i - TP_PUBLISHERS].principal
                     : tp_other_ids[i - TP_PUBLISHERS - TP_RECIPIENTS];
    snprintf(extra, sizeof extra, "max_publish_rate: %d\n", TP_PUBLISH_RATE_LIMIT);
    char *policy = tp_policy_text(b, ids, TP_N_PRINCIPALS);
    int rc = policy != NULL ? bench_env_create(&b->env, ids, TP_N_PRINCIPALS, policy, extra) : -1;
    free(policy);
    if (rc != 0)
        return -1;
    return bench_broker_start(&b->env, b->opt.log_level, TP_START_TIMEOUT_MS);
}

static int tp_connect_all(tp_bench_t *b)
{
    for (unsigned i = 0; i < TP_PUBLISHERS; i++) {
        b->pubs[i] = (tp_publisher_t){.bench = b, .number = i};
        if (bench_connect(&b->env, tp_publisher_ids[i], &b->pubs[i].client,
                          bench_call_timeout(b->deadline_ms, TP_CALL_TIMEOUT_MS)) != 0)
            return -1;
    }
    for (unsigned i = 0; i < TP_RECIPIENTS; i++) {
        tp_recipient_t *r = &b->recipients[i];
        r->bench = b;
        r->number = i;
        r->spec = &tp_recipient_specs[i];
        if (bench_connect(&b->env, r->spec->principal, &r->client,
                          bench_call_timeout(b->deadline_ms, TP_CALL_TIMEOUT_MS)) != 0)
            return -1;
        if (schakel_subscribe(r->client, b->opt.window) != SCHAKEL_OK) {
            bench_problem(&b->env, "%s: subscribe: %s", r->spec->principal,
                          schakel_last_error(r->client)->text);
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ publishing */

/* The number of item j of publisher k, and its scheduled send time. */
static uint64_t tp_item_number(const tp_phase_t *ph, unsigned k, uint64_t j)
{
    return j * ph->publishers + k;
}

static int64_t tp_scheduled_ns(const tp_phase_t *ph, unsigned k, uint64_t j)
{
    return ph->start_ns + (int64_t)((double)tp_item_number(ph, k, j) * 1e9 /
                                    (double)(ph->rate > 0 ? ph->rate : 1));
}

/* Items j .. j+n-1 of this publisher as one signed publish, retried with
 * the same message id (the broker answers a repeat with the original
 * Accepted). Every item must be queued for the 3 recipients. */
static int tp_publish(tp_publisher_t *p, const tp_phase_t *ph, uint64_t j, size_t n)
{
    tp_bench_t *b = p->bench;
    schakel_signal_t signals[SCHAKEL_MAX_ITEMS];
    char refs[SCHAKEL_MAX_ITEMS][TP_REF_BYTES];
    schakel_item_result_t results[SCHAKEL_MAX_ITEMS];
    int64_t now = bench_now_ns();
    for (size_t i = 0; i < n; i++) {
        int64_t at = ph->rate > 0 ? tp_scheduled_ns(ph, p->number, j + i) : now;
        tp_format_ref(refs[i], at, ph->number, tp_item_number(ph, p->number, j + i));
        tp_fill_signal(b, &signals[i], refs[i]);
    }
    uint8_t id[SCHAKEL_MESSAGE_ID_BYTES];
    randombytes_buf(id, sizeof id);
    schakel_status_t st =
        bench_publish_retry(p->client, signals, n, id, results, TP_PUBLISH_ATTEMPTS, b->deadline_ms,
                            TP_CALL_TIMEOUT_MS, &b->env.stop);
    if (st != SCHAKEL_OK) {
        const schakel_error_t *e = schakel_last_error(p->client);
        if (!tp_out_of_time(b))
            bench_problem(&b->env, "%s: publish in phase %u after %" PRIu64 " items: %s %s: %s",
                          tp_publisher_ids[p->number], ph->number, p->accepted,
                          schakel_strerror(st), e->reason_name, e->text);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (results[i].recipients != TP_RECIPIENTS) {
            bench_problem(&b->env, "%s: item %zu of a publish was queued for %u mailboxes, not %u",
                          tp_publisher_ids[p->number], i, results[i].recipients, TP_RECIPIENTS);
            return -1;
        }
    p->accepted += n;
    p->publishes++;
    p->last_accepted_ns = bench_now_ns();
    return 0;
}

/* Throughput: publish batches back to back. Paced: a group-commit client,
 * publishing as one batch every item whose scheduled time has come, then
 * waiting for Accepted; items scheduled meanwhile wait for the next batch
 * and their latency counts from their schedule. */
static void *tp_publisher_run(void *arg)
{
    tp_publisher_t *p = arg;
    tp_bench_t *b = p->bench;
    const tp_phase_t *ph = b->phase;
    uint64_t mine = ph->count / ph->publishers + (p->number < ph->count % ph->publishers);
    uint64_t next = 0;
    while (next < mine && !tp_out_of_time(b)) {
        size_t n = 0;
        if (ph->rate == 0) {
            n = mine - next < b->batch ? (size_t)(mine - next) : b->batch;
        } else {
            int64_t now = bench_now_ns();
            while (next + n < mine && n < b->batch &&
                   tp_scheduled_ns(ph, p->number, next + n) <= now)
                n++;
            if (n == 0) {
                bench_sleep_until_ns(tp_scheduled_ns(ph, p->number, next));
                continue;
            }
            int64_t behind = now - tp_scheduled_ns(ph, p->number, next);
            if (behind > p->max_behind_ns)
                p->max_behind_ns = behind;
        }
        if (tp_publish(p, ph, next, n) != 0)
            break;
        next += n;
    }
    return NULL;
}

/* ------------------------------------------------------------------ receiving */

static int tp_flush_acks(tp_recipient_t *r)
{
    if (r->n_pending == 0)
        return 0;
    schakel_status_t st = schakel_ack_many(r->client, r->pending, r->n_pending);
    if (st != SCHAKEL_OK) {
        bench_problem(&r->bench->env, "%s: ack: %s", r->spec->principal,
                      schakel_last_error(r->client)->text);
        return -1;
    }
    r->n_pending = 0;
    return 0;
}

/* Which fields a delivery carries. */
static unsigned tp_fields_of(const schakel_delivery_t *d)
{
    return (d->area != NULL ? TP_F_AREA : 0) | (d->postcode != NULL ? TP_F_ADDRESS : 0) |
           (d->subject != NULL ? TP_F_SUBJECT : 0) | (d->grounds != NULL ? TP_F_GROUNDS : 0) |
           (d->severity != 0 ? TP_F_SEVERITY : 0) | (d->observed_at != 0 ? TP_F_OBSERVED : 0) |
           (d->summary != NULL ? TP_F_SUMMARY : 0) | (d->source_ref != NULL ? TP_F_SOURCE : 0) |
           (d->case_ref != NULL ? TP_F_CASE_REF : 0) | (d->n_recipients > 0 ? TP_F_RECIPIENTS : 0);
}

/* The delivery is a bench signal from a publisher of the feed partner,
 * carried by this recipient's rule, with exactly that rule's fields. */
static int tp_content_ok(const tp_recipient_t *r, const schakel_delivery_t *d)
{
    const tp_bench_t *b = r->bench;
    return !d->is_case_event && d->sender != NULL && d->sender_partner != NULL &&
           strcmp(d->sender_partner, TP_SENDER_PARTNER) == 0 &&
           strncmp(d->sender, "gemeente/feed-", 14) == 0 && d->kind != NULL &&
           strcmp(d->kind, TP_KIND) == 0 && d->theme != NULL && strcmp(d->theme, TP_THEME) == 0 &&
           d->rule_id != NULL && strcmp(d->rule_id, r->spec->rule) == 0 &&
           tp_fields_of(d) == r->spec->fields && strlen(d->summary) == b->summary_len;
}

static void tp_recipient_take(tp_recipient_t *r, const tp_phase_t *ph, const schakel_delivery_t *d,
                              int64_t now)
{
    int64_t at = 0;
    unsigned phase = 0;
    uint64_t number = 0;
    if (d->is_case_event || tp_parse_ref(d->source_ref, &at, &phase, &number) != 0) {
        r->wrong++;
        return;
    }
    if (phase != ph->number % 100u) {
        r->stale++;
        return;
    }
    if (number >= ph->count) {
        r->wrong++;
        return;
    }
    if (!tp_content_ok(r, d))
        r->wrong++;
    uint8_t bit = (uint8_t)(1u << (number % 8));
    if (r->seen[number / 8] & bit) {
        r->duplicates++;
        return;
    }
    r->seen[number / 8] |= bit;
    r->distinct++;
    r->last_ns = now;
    if (ph->rate > 0)
        bench_hist_add(&r->hist, now - at);
}

/* Receive until every item of the phase came, acking in batches: at once
 * when nothing more is waiting, so a quiet stream is acked promptly. */
static void *tp_recipient_run(void *arg)
{
    tp_recipient_t *r = arg;
    tp_bench_t *b = r->bench;
    const tp_phase_t *ph = b->phase;
    int64_t heard_ms = bench_now_ms();
    while (r->distinct < ph->count && !tp_out_of_time(b)) {
        schakel_delivery_t *d = NULL;
        schakel_status_t st =
            schakel_receive(r->client, &d, r->n_pending > 0 ? 0 : TP_RECEIVE_WAIT_MS);
        if (st == SCHAKEL_ERR_TIMEOUT) {
            if (tp_flush_acks(r) != 0)
                break;
            if (bench_now_ms() - heard_ms > TP_SILENCE_MS) {
                bench_problem(
                    &b->env,
                    "%s heard nothing for %d s with %" PRIu64 " of %" PRIu64 " items of phase %u",
                    r->spec->principal, TP_SILENCE_MS / 1000, r->distinct, ph->count, ph->number);
                break;
            }
            continue;
        }
        if (st != SCHAKEL_OK) {
            bench_problem(&b->env, "%s: receive: %s", r->spec->principal,
                          schakel_last_error(r->client)->text);
            break;
        }
        int64_t now = bench_now_ns();
        heard_ms = now / 1000000;
        tp_recipient_take(r, ph, d, now);
        r->pending[r->n_pending++] = d->seq;
        schakel_delivery_free(&d);
        if (r->n_pending == TP_ACK_BATCH && tp_flush_acks(r) != 0)
            break;
    }
    (void)tp_flush_acks(r);
    return NULL;
}

/* ------------------------------------------------------------------ phases */

static int tp_phase_prepare(tp_bench_t *b, const tp_phase_t *ph)
{
    for (unsigned i = 0; i < TP_RECIPIENTS; i++) {
        tp_recipient_t *r = &b->recipients[i];
        free(r->seen);
        bench_hist_free(&r->hist);
        r->seen = calloc(ph->count / 8 + 1, 1);
        r->distinct = r->duplicates = r->stale = r->wrong = 0;
        r->last_ns = 0;
        if (r->seen == NULL || bench_hist_init(&r->hist, ph->rate > 0 ? ph->count : 1) != 0) {
            bench_problem(&b->env, "out of memory for phase %u", ph->number);
            return -1;
        }
    }
    for (unsigned i = 0; i < TP_PUBLISHERS; i++) {
        tp_publisher_t *p = &b->pubs[i];
        p->accepted = p->publishes = 0;
        p->last_accepted_ns = p->max_behind_ns = 0;
    }
    return 0;
}

/* The latency of a paced phase at every recipient; its CDF file. */
static void tp_phase_latency(tp_bench_t *b, const tp_phase_t *ph, tp_result_t *res)
{
    const bench_hist_t *hists[TP_RECIPIENTS];
    for (unsigned i = 0; i < TP_RECIPIENTS; i++)
        hists[i] = &b->recipients[i].hist;
    if (bench_latency_summarize(hists, TP_RECIPIENTS, b->opt.json_path, "schakel", ph->rate,
                                TP_CDF_POINTS, &res->lat) != 0)
        bench_problem(&b->env, "out of memory for the latencies");
}

static void tp_phase_collect(tp_bench_t *b, const tp_phase_t *ph, tp_result_t *res)
{
    int64_t last_delivery = 0, last_accept = 0, behind = 0;
    for (unsigned i = 0; i < ph->publishers; i++) {
        const tp_publisher_t *p = &b->pubs[i];
        res->accepted += p->accepted;
        res->publishes += p->publishes;
        if (p->last_accepted_ns > last_accept)
            last_accept = p->last_accepted_ns;
        if (p->max_behind_ns > behind)
            behind = p->max_behind_ns;
    }
    for (unsigned i = 0; i < TP_RECIPIENTS; i++) {
        const tp_recipient_t *r = &b->recipients[i];
        res->delivered += r->distinct;
        res->duplicates += r->duplicates;
        res->stale += r->stale;
        res->wrong += r->wrong;
        if (r->last_ns > last_delivery)
            last_delivery = r->last_ns;
    }
    res->missing = ph->count * TP_RECIPIENTS - res->delivered;
    res->publish_s = last_accept > ph->start_ns ? (double)(last_accept - ph->start_ns) / 1e9 : 0;
    res->deliver_s =
        last_delivery > ph->start_ns ? (double)(last_delivery - ph->start_ns) / 1e9 : 0;
    res->items_per_s = res->publish_s > 0 ? (double)res->accepted / res->publish_s : 0;
    res->publishes_per_s = res->publish_s > 0 ? (double)res->publishes / res->publish_s : 0;
    res->deliveries_per_s = res->deliver_s > 0 ? (double)res->delivered / res->deliver_s : 0;
    res->max_behind_ms = (double)behind / 1e6;
}

/* Run one phase: recipients first, then the publishers; wait for both. */
static void tp_run_phase(tp_bench_t *b, tp_phase_t *ph, tp_result_t *res)
{
    memset(res, 0, sizeof *res);
    res->count = ph->count;
    res->rate = ph->rate;
    res->publishers = ph->publishers;
    if (atomic_load(&b->env.stop) || tp_phase_prepare(b, ph) != 0)
        return;
    res->ran = 1;
    double cpu0 = bench_read_cpu_s(b->env.broker_pid), own0 = bench_read_cpu_s(0);
    ph->start_ns = bench_now_ns() + (ph->rate > 0 ? TP_PACE_LEAD_NS : 0);
    b->phase = ph;
    for (unsigned i = 0; i < TP_RECIPIENTS; i++) {
        tp_recipient_t *r = &b->recipients[i];
        r->started = pthread_create(&r->thread, NULL, tp_recipient_run, r) == 0;
        if (!r->started)
            bench_problem(&b->env, "cannot start a recipient thread");
    }
    for (unsigned i = 0; i < ph->publishers && !atomic_load(&b->env.stop); i++) {
        tp_publisher_t *p = &b->pubs[i];
        p->started = pthread_create(&p->thread, NULL, tp_publisher_run, p) == 0;
        if (!p->started)
            bench_problem(&b->env, "cannot start a publisher thread");
    }
    for (unsigned i = 0; i < TP_PUBLISHERS; i++)
        if (b->pubs[i].started) {
            pthread_join(b->pubs[i].thread, NULL);
            b->pubs[i].started = 0;
        }
    for (unsigned i = 0; i < TP_RECIPIENTS; i++)
        if (b->recipients[i].started) {
            pthread_join(b->recipients[i].thread, NULL);
            b->recipients[i].started = 0;
        }
    res->broker_cpu_s = bench_read_cpu_s(b->env.broker_pid) - cpu0;
    res->bench_cpu_s = bench_read_cpu_s(0) - own0;
    tp_phase_collect(b, ph, res);
    if (ph->rate > 0)
        tp_phase_latency(b, ph, res);
    if (res->missing > 0 || res->duplicates > 0 || res->stale > 0 || res->wrong > 0)
        bench_problem(&b->env,
                      "phase %u: %" PRIu64 " deliveries missing, %" PRIu64 " duplicates, %" PRIu64
                      " from an earlier phase, %" PRIu64 " wrong (rule, fields or content)",
                      ph->number, res->missing, res->duplicates, res->stale, res->wrong);
}

/* After the last phase every mailbox must be empty: everything delivered
 * was acked, and nothing was queued that the bench did not receive. */
static void tp_check_backlogs(tp_bench_t *b)
{
    for (unsigned i = 0; i < TP_RECIPIENTS; i++) {
        tp_recipient_t *r = &b->recipients[i];
        uint64_t backlog = 0;
        b->backlog_after[i] = -1;
        if (r->client == NULL)
            continue;
        schakel_status_t st = schakel_backlog(
            r->client, &backlog, bench_call_timeout(b->deadline_ms, TP_CALL_TIMEOUT_MS));
        if (st != SCHAKEL_OK) {
            bench_problem(&b->env, "%s: backlog: %s", r->spec->principal,
                          schakel_last_error(r->client)->text);
            continue;
        }
        b->backlog_after[i] = (int64_t)backlog;
        if (backlog != 0)
            bench_problem(&b->env, "%s: %" PRIu64 " deliveries still in the mailbox at the end",
                          r->spec->principal, backlog);
    }
}

static void tp_measure(tp_bench_t *b)
{
    if (tp_connect_all(b) != 0)
        return;
    if (bench_sampler_start(&b->sampler, b->env.broker_pid, TP_SAMPLE_MS) != 0)
        bench_problem(&b->env, "cannot start the RSS sampler");
    tp_phase_t p1 = {.number = 1, .count = b->opt.count, .publishers = 1};
    tp_phase_t p4 = {.number = 2, .count = b->opt.count, .publishers = TP_PUBLISHERS};
    printf("bench_throughput: throughput, %" PRIu64 " items from 1 publisher\n", p1.count);
    fflush(stdout);
    tp_run_phase(b, &p1, &b->p1);
    printf("bench_throughput: throughput, %" PRIu64 " items from %u publishers\n", p4.count,
           TP_PUBLISHERS);
    fflush(stdout);
    tp_run_phase(b, &p4, &b->p4);
    b->broker_peak_rss_kib = bench_sampler_peak_kib(&b->sampler);
    bench_sampler_reset(&b->sampler);
    for (size_t i = 0; i < b->opt.rates.n && !atomic_load(&b->env.stop); i++) {
        tp_phase_t paced = {.number = (unsigned)i + 3,
                            .rate = b->opt.rates.rate[i],
                            .count = (uint64_t)b->opt.rates.rate[i] * b->opt.latency_s,
                            .publishers = b->opt.latency_publishers};
        printf("bench_throughput: latency at %u items/s for %u s (%u publisher%s)\n", paced.rate,
               b->opt.latency_s, paced.publishers, paced.publishers == 1 ? "" : "s");
        fflush(stdout);
        tp_run_phase(b, &paced, &b->latency[i]);
    }
    b->latency_peak_rss_kib = bench_sampler_peak_kib(&b->sampler);
    bench_sampler_stop(&b->sampler);
    bench_mem_t m;
    if (bench_read_mem(b->env.broker_pid, &m) == 0)
        b->broker_hwm_kib = m.hwm_kib;
    if (!atomic_load(&b->env.stop))
        tp_check_backlogs(b);
}

/* ------------------------------------------------------------------ report */

static int tp_result_ok(const tp_result_t *r)
{
    return r->ran && r->accepted == r->count && r->missing == 0 && r->duplicates == 0 &&
           r->stale == 0 && r->wrong == 0;
}

static int tp_completed(const tp_bench_t *b)
{
    if (!tp_result_ok(&b->p1) || !tp_result_ok(&b->p4))
        return 0;
    for (size_t i = 0; i < b->opt.rates.n; i++)
        if (!tp_result_ok(&b->latency[i]))
            return 0;
    for (unsigned i = 0; i < TP_RECIPIENTS; i++)
        if (b->backlog_after[i] != 0)
            return 0;
    return b->env.problem[0] == '\0';
}

static double tp_per_1000(double cpu_s, uint64_t items)
{
    return items > 0 ? cpu_s * 1000.0 / (double)items : 0;
}

static void tp_json_run(FILE *f, const char *p, const tp_result_t *r)
{
    fprintf(f, "  \"%s_publishes_per_s\": %.1f,\n  \"%s_items_per_s\": %.1f,\n", p,
            r->publishes_per_s, p, r->items_per_s);
    fprintf(f, "  \"%s_deliveries_per_s\": %.1f,\n", p, r->deliveries_per_s);
    fprintf(f, "  \"%s_items\": %" PRIu64 ",\n  \"%s_publishes\": %" PRIu64 ",\n", p, r->accepted,
            p, r->publishes);
    fprintf(f, "  \"%s_deliveries\": %" PRIu64 ",\n  \"%s_missing\": %" PRIu64 ",\n", p,
            r->delivered, p, r->missing);
    fprintf(f, "  \"%s_duplicates\": %" PRIu64 ",\n", p, r->duplicates);
    fprintf(f, "  \"%s_publish_s\": %.3f,\n  \"%s_deliver_s\": %.3f,\n", p, r->publish_s, p,
            r->deliver_s);
    fprintf(f, "  \"%s_broker_cpu_s_per_1000\": %.5f,\n", p,
            tp_per_1000(r->broker_cpu_s, r->accepted));
    fprintf(f, "  \"%s_bench_cpu_s_per_1000\": %.5f,\n", p,
            tp_per_1000(r->bench_cpu_s, r->accepted));
}

static void tp_json_latency(FILE *f, unsigned rate, const tp_result_t *r)
{
    bench_json_latency(f, rate, &r->lat, r->ran);
    fprintf(f, "  \"lat_%u_items\": %" PRIu64 ",\n", rate, r->count);
    fprintf(f, "  \"lat_%u_missing\": %" PRIu64 ",\n  \"lat_%u_publishes\": %" PRIu64 ",\n", rate,
            r->missing, rate, r->publishes);
    fprintf(f, "  \"lat_%u_items_per_publish\": %.1f,\n", rate,
            r->publishes > 0 ? (double)r->accepted / (double)r->publishes : 0);
    fprintf(f, "  \"lat_%u_max_behind_ms\": %.2f,\n", rate, r->max_behind_ms);
    fprintf(f, "  \"lat_%u_broker_cpu_s_per_1000\": %.5f,\n", rate,
            tp_per_1000(r->broker_cpu_s, r->accepted));
}

static int tp_write_json(const tp_bench_t *b, int completed)
{
    FILE *f = bench_json_open(b->opt.json_path);
    if (f == NULL)
        return -1;
    uint64_t items = b->p1.accepted + b->p4.accepted;
    fprintf(f, "{\n  \"bench\": \"throughput\",\n  \"completed\": %s,\n",
            completed ? "true" : "false");
    fprintf(f, "  \"count\": %" PRIu64 ",\n  \"item_bytes\": %zu,\n  \"batch_items\": %zu,\n",
            b->opt.count, b->item_bytes, b->batch);
    fprintf(f, "  \"recipients\": %u,\n  \"publishers\": %u,\n  \"window\": %u,\n", TP_RECIPIENTS,
            TP_PUBLISHERS, b->opt.window);
    fprintf(f, "  \"rules\": %d,\n  \"broker_log_level\": ", b->rules);
    bench_json_string(f, b->opt.log_level);
    fprintf(f, ",\n  \"deadline_s\": %.0f,\n  \"broker_ready_s\": %.3f,\n", b->opt.deadline_s,
            b->env.ready_s);
    tp_json_run(f, "p1", &b->p1);
    tp_json_run(f, "p4", &b->p4);
    fprintf(f, "  \"broker_cpu_s_per_1000\": %.5f,\n",
            tp_per_1000(b->p1.broker_cpu_s + b->p4.broker_cpu_s, items));
    fprintf(f, "  \"broker_peak_rss_kib\": %ld,\n", b->broker_peak_rss_kib);
    fprintf(f, "  \"broker_latency_peak_rss_kib\": %ld,\n", b->latency_peak_rss_kib);
    fprintf(f, "  \"broker_hwm_kib\": %ld,\n", b->broker_hwm_kib);
    fprintf(f, "  \"latency_seconds\": %u,\n  \"latency_publishers\": %u,\n", b->opt.latency_s,
            b->opt.latency_publishers);
    for (size_t i = 0; i < b->opt.rates.n; i++)
        tp_json_latency(f, b->opt.rates.rate[i], &b->latency[i]);
    fprintf(f, "  \"loadavg_start\": %.2f,\n  \"loadavg_end\": %.2f,\n  \"cpus\": %ld,\n",
            b->load_start, b->load_end, sysconf(_SC_NPROCESSORS_ONLN));
    fprintf(f, "  \"backlog_after\": %" PRId64 ",\n",
            b->backlog_after[0] + b->backlog_after[1] + b->backlog_after[2]);
    fprintf(f, "  \"broker_exit\": %d,\n  \"problem\": ", b->broker_exit);
    bench_json_string(f, b->env.problem);
    fprintf(f, "\n}\n");
    return fclose(f);
}

static void tp_print_run(const char *label, const tp_result_t *r)
{
    printf("%-24s %" PRIu64 " items in %" PRIu64 " publishes: %.0f items/s, %.0f publishes/s, "
           "%.0f deliveries/s\n",
           label, r->accepted, r->publishes, r->items_per_s, r->publishes_per_s,
           r->deliveries_per_s);
    printf("%-24s %" PRIu64 " deliveries in %.2f s, %" PRIu64 " missing, %" PRIu64 " duplicates\n",
           "", r->delivered, r->deliver_s, r->missing, r->duplicates);
    printf("%-24s CPU s per 1000 items: broker %.4f, the clients in this process %.4f\n", "",
           tp_per_1000(r->broker_cpu_s, r->accepted), tp_per_1000(r->bench_cpu_s, r->accepted));
}

static void tp_print_table(const tp_bench_t *b)
{
    printf("\nSchakel: signals of %zu bytes, batches of up to %zu, %u recipients that ack "
           "(window %u), store with fsync, %d rules\n%s\n",
           b->item_bytes, b->batch, TP_RECIPIENTS, b->opt.window, b->rules, BENCH_RULE);
    tp_print_run("throughput, 1 publisher", &b->p1);
    tp_print_run("throughput, 4 publishers", &b->p4);
    printf("%-24s %.4f s per 1000 items (both runs)\n", "broker CPU",
           tp_per_1000(b->p1.broker_cpu_s + b->p4.broker_cpu_s, b->p1.accepted + b->p4.accepted));
    printf("%-24s %.1f MiB during the throughput runs (VmHWM at the end %.1f MiB)\n",
           "broker peak RSS", (double)b->broker_peak_rss_kib / 1024.0,
           (double)b->broker_hwm_kib / 1024.0);
    printf("%-24s %.2f at the start, %.2f at the end (%ld CPUs)\n", "load average", b->load_start,
           b->load_end, sysconf(_SC_NPROCESSORS_ONLN));
    for (size_t i = 0; i < b->opt.rates.n; i++) {
        const tp_result_t *r = &b->latency[i];
        char more[96];
        snprintf(more, sizeof more, "%.1f items per publish, at most %.1f ms behind",
                 r->publishes > 0 ? (double)r->accepted / (double)r->publishes : 0,
                 r->max_behind_ms);
        bench_print_latency(b->opt.rates.rate[i], &r->lat, r->ran, more);
    }
    if (b->env.problem[0] != '\0')
        printf("problem: %s\n", b->env.problem);
    printf("%s\n", BENCH_RULE);
}

/* ------------------------------------------------------------------ main */

static void tp_close_all(tp_bench_t *b)
{
    for (unsigned i = 0; i < TP_PUBLISHERS; i++)
        schakel_close(&b->pubs[i].client);
    for (unsigned i = 0; i < TP_RECIPIENTS; i++) {
        schakel_close(&b->recipients[i].client);
        free(b->recipients[i].seen);
        bench_hist_free(&b->recipients[i].hist);
    }
}

int main(int argc, char **argv)
{
    static tp_bench_t bench;
    tp_bench_t *b = &bench;
    b->opt = (tp_options_t){.count = TP_DEFAULT_COUNT,
                            .item_bytes = TP_DEFAULT_ITEM_BYTES,
                            .window = SCHAKEL_MAX_WINDOW,
                            .latency_s = TP_DEFAULT_LATENCY_S,
                            .latency_publishers = TP_DEFAULT_LATENCY_PUBLISHERS,
                            .rates = {{1000, 5000, 10000}, 3},
                            .json_path = "tests/bench/results/throughput.json",
                            .log_level = "info"};
    int rc = tp_parse_args(argc, argv, &b->opt);
    if (rc != 0) {
        tp_usage(rc == 1 ? stdout : stderr);
        return rc == 1 ? 0 : 2;
    }
    for (unsigned i = 0; i < TP_RECIPIENTS; i++)
        b->backlog_after[i] = -1;
    b->env.broker_pidfd = -1;
    b->deadline_ms = bench_now_ms() + (int64_t)(b->opt.deadline_s * 1000.0);
    bench_catch_signals(0);
    if (sodium_init() < 0) {
        fprintf(stderr, "bench_throughput: libsodium failed to initialise\n");
        return 1;
    }
    b->load_start = bench_loadavg();
    if (tp_size_signal(b) == 0 && tp_setup(b) == 0)
        tp_measure(b);
    b->load_end = bench_loadavg();
    tp_close_all(b);
    if (b->env.broker_pid > 0)
        b->broker_exit = bench_broker_stop(&b->env, TP_STOP_TIMEOUT_MS);
    int completed = tp_completed(b) && b->broker_exit == 0;
    if (b->broker_exit != 0 && b->env.problem[0] == '\0')
        bench_problem(&b->env, "the broker exited with status %d", b->broker_exit);
    tp_print_table(b);
    int json_rc = tp_write_json(b, completed);
    bench_env_remove(&b->env, b->opt.keep);
    return completed && json_rc == 0 ? 0 : 1;
}
