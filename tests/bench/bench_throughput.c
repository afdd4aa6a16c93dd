/*
 * bench_throughput.c — Schakel under the relay baseline's load: signed,
 * batched publishes of ~1 KiB signals by 1 and by 4 publishers, durable
 * store, a realistic policy, every signal delivered to 3 recipients that
 * ack; then the latency publish->deliver at paced rates.
 *
 * Owns a temporary folder under /tmp and the one schakeld it starts there
 * (support.h; the broker is ended by its PID only). Trusts nothing the
 * broker sends: every delivery is checked (the rule that carried it, the
 * fields that rule lets through, once per recipient, nothing missing).
 * Bounded by a deadline. Exit status: 0 when every run completed with every
 * item delivered exactly once to every recipient, 1 otherwise, 2 on usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "schakel.h"
#include "schakel_limits.h"
#include "support.h"
#include "wire.h"

#define TP_DEFAULT_COUNT 100000u
#define TP_MAX_COUNT 10000000u
/* One serialized Signal: "about 1 KiB", and still 256 of them fit one frame. */
#define TP_DEFAULT_ITEM_BYTES 1000u
#define TP_MIN_ITEM_BYTES 300u
#define TP_PUBLISHERS 4u
#define TP_RECIPIENTS 3u
#define TP_MAX_RATES 8u
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
#define TP_RULES 21 /* in tp_policy_rules */

static const char tp_summary_words[] =
    "Bewoners melden herhaaldelijk geluidsoverlast en samenscholing bij de portiek; de "
    "wijkagent en de woningcorporatie zijn eerder ingelicht, de situatie houdt aan. ";

static const unsigned tp_default_rates[] = {1000, 5000, 10000};

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
typedef struct tp_other_principal {
    const char *id, *role;
} tp_other_principal_t;

static const tp_other_principal_t tp_other_principals[] = {
    {"gemeente/wijkteam", "caseworker"}, {"politie/beheer", "operator"},
    {"riec/beheer", "operator"},         {"woco-maasvallei/meldingen", "system"},
    {"ggd/meldpunt", "system"},          {"om/parket", "caseworker"},
    {"veiligthuis/meldpunt", "system"},  {"belastingdienst/toezicht", "system"},
};

#define TP_N_OTHERS (sizeof tp_other_principals / sizeof tp_other_principals[0])
#define TP_N_PRINCIPALS (TP_PUBLISHERS + TP_RECIPIENTS + TP_N_OTHERS)

/* 21 rules. The bench traffic (kind overlastmelding, theme overlast, from
 * gemeente, area in GM0935) is carried by the three bench-overlast-* rules,
 * one per recipient partner, each with its own fields; the others are
 * candidates the decision must look past (same sender and theme, another
 * kind, area or a case_ref required) or traffic of other partners. */
static const char tp_policy_rules[] =
    "rules:\n"
    "  - id: woco-ondermijning\n"
    "    from: [woco-servatius, woco-maasvallei]\n"
    "    to: [politie, riec]\n"
    "    themes: [ondermijning, drugs]\n"
    "    areas: [GM0935, GM0917]\n"
    "    purpose: \"Aanpak ondermijning (convenant RIEC art. 4)\"\n"
    "    legal_basis: \"Convenant RIEC Limburg 2023, art. 6; Wpg art. 16\"\n"
    "    fields: [area, address, subject, grounds, severity, observed_at, summary, source_ref]\n"
    "    retention: 365d\n"
    "  - id: politie-ondermijning-riec\n"
    "    from: [politie]\n"
    "    to: [riec]\n"
    "    themes: [ondermijning, mensenhandel, drugs]\n"
    "    areas: [\"*\"]\n"
    "    purpose: \"Integrale analyse ondermijnende criminaliteit\"\n"
    "    legal_basis: \"Convenant RIEC Limburg 2023, art. 6; Wpg art. 19\"\n"
    "    fields: [area, address, subject, grounds, severity, observed_at, summary, source_ref, "
    "case_ref]\n"
    "    retention: 2y\n"
    "  - id: politie-overlast-gemeente\n"
    "    from: [politie]\n"
    "    to: [gemeente]\n"
    "    themes: [overlast]\n"
    "    areas: [GM0935]\n"
    "    purpose: \"Aanpak woonoverlast (art. 151d Gemeentewet)\"\n"
    "    legal_basis: \"Wpg art. 19; Gemeentewet art. 151d\"\n"
    "    fields: [area, address, severity, observed_at, summary]\n"
    "    retention: 180d\n"
    "  - id: gemeente-zorg-ggd\n"
    "    from: [gemeente]\n"
    "    to: [ggd]\n"
    "    kinds: [zorgmelding, verward-gedrag]\n"
    "    themes: [zorg, overlast]\n"
    "    areas: [GM0935]\n"
    "    purpose: \"Zorg bij personen met verward gedrag\"\n"
    "    legal_basis: \"Wet verplichte ggz art. 5:2\"\n"
    "    fields: [area, subject, grounds, severity, summary]\n"
    "    retention: 90d\n"
    "  - id: gemeente-huiselijk-geweld\n"
    "    from: [gemeente]\n"
    "    to: [veiligthuis]\n"
    "    themes: [huiselijk-geweld]\n"
    "    areas: [\"*\"]\n"
    "    purpose: \"Meldcode huiselijk geweld en kindermishandeling\"\n"
    "    legal_basis: \"Wmo 2015 art. 4.1.1\"\n"
    "    fields: [area, address, subject, grounds, severity, observed_at, summary]\n"
    "    retention: 5y\n"
    "  - id: gemeente-woonfraude-belastingdienst\n"
    "    from: [gemeente]\n"
    "    to: [belastingdienst]\n"
    "    themes: [woonfraude]\n"
    "    areas: [GM0935]\n"
    "    purpose: \"Bestrijding woonfraude en adresfraude\"\n"
    "    legal_basis: \"Wet BRP art. 3.21; AWR art. 53\"\n"
    "    fields: [address, subject, grounds, observed_at]\n"
    "    retention: 3y\n"
    "  - id: gemeente-overlast-om\n"
    "    from: [gemeente]\n"
    "    to: [om]\n"
    "    themes: [overlast]\n"
    "    areas: [GM0935]\n"
    "    purpose: \"Strafrechtelijke aanpak in lopende zaken\"\n"
    "    legal_basis: \"Wjsg art. 39f\"\n"
    "    fields: [area, address, subject, grounds, summary, case_ref]\n"
    "    retention: 5y\n"
    "    require_case_ref: true\n"
    "  - id: riec-terugkoppeling\n"
    "    from: [riec]\n"
    "    to: [gemeente, politie]\n"
    "    kinds: [terugkoppeling]\n"
    "    themes: [\"*\"]\n"
    "    areas: [\"*\"]\n"
    "    purpose: \"Terugkoppeling van de integrale analyse\"\n"
    "    legal_basis: \"Convenant RIEC Limburg 2023, art. 9\"\n"
    "    fields: [area, summary, case_ref]\n"
    "    retention: 1y\n"
    "  - id: ggd-zorg-gemeente\n"
    "    from: [ggd]\n"
    "    to: [gemeente]\n"
    "    themes: [zorg]\n"
    "    areas: [GM0935]\n"
    "    purpose: \"Zorg- en veiligheidsoverleg\"\n"
    "    legal_basis: \"Wmo 2015 art. 5.2.5\"\n"
    "    fields: [area, severity, summary]\n"
    "    retention: 90d\n"
    "  - id: woco-overlast-gemeente\n"
    "    from: [woco-servatius, woco-maasvallei]\n"
    "    to: [gemeente]\n"
    "    themes: [overlast, woonfraude]\n"
    "    areas: [GM0935, GM0917]\n"
    "    purpose: \"Aanpak woonoverlast en woonfraude\"\n"
    "    legal_basis: \"Convenant woonoverlast Maastricht 2022\"\n"
    "    fields: [area, address, grounds, severity, observed_at, summary, source_ref]\n"
    "    retention: 365d\n"
    "  - id: politie-jeugd-gemeente\n"
    "    from: [politie]\n"
    "    to: [gemeente]\n"
    "    themes: [jeugdcriminaliteit]\n"
    "    areas: [GM0935]\n"
    "    purpose: \"Persoonsgerichte aanpak jeugd\"\n"
    "    legal_basis: \"Wpg art. 20\"\n"
    "    fields: [area, subject, grounds, severity]\n"
    "    retention: 2y\n"
    "  - id: politie-radicalisering\n"
    "    from: [politie]\n"
    "    to: [gemeente, om]\n"
    "    themes: [radicalisering]\n"
    "    areas: [\"*\"]\n"
    "    purpose: \"Casusoverleg radicalisering\"\n"
    "    legal_basis: \"Wpg art. 20; convenant veiligheidshuis\"\n"
    "    fields: [area, subject, grounds, severity, summary, case_ref]\n"
    "    retention: 5y\n"
    "  - id: om-mensenhandel\n"
    "    from: [om]\n"
    "    to: [politie, riec]\n"
    "    themes: [mensenhandel]\n"
    "    areas: [\"*\"]\n"
    "    purpose: \"Aanpak mensenhandel\"\n"
    "    legal_basis: \"Wjsg art. 39f\"\n"
    "    fields: [area, address, subject, grounds, severity, summary, case_ref]\n"
    "    retention: 5y\n"
    "  - id: veiligthuis-terugkoppeling\n"
    "    from: [veiligthuis]\n"
    "    to: [gemeente]\n"
    "    themes: [huiselijk-geweld]\n"
    "    areas: [GM0935]\n"
    "    purpose: \"Terugkoppeling meldcode\"\n"
    "    legal_basis: \"Wmo 2015 art. 4.1.1\"\n"
    "    fields: [area, severity, summary]\n"
    "    retention: 1y\n"
    "  - id: gemeente-brandveiligheid\n"
    "    from: [gemeente]\n"
    "    to: [woco-servatius, woco-maasvallei]\n"
    "    themes: [brandveiligheid]\n"
    "    areas: [GM0935]\n"
    "    purpose: \"Brandveiligheid in huurwoningen\"\n"
    "    legal_basis: \"Woningwet art. 1b\"\n"
    "    fields: [address, grounds, severity, observed_at, summary]\n"
    "    retention: 365d\n"
    "  - id: gemeente-ondermijning\n"
    "    from: [gemeente]\n"
    "    to: [politie, riec]\n"
    "    themes: [ondermijning, drugs]\n"
    "    areas: [GM0935]\n"
    "    purpose: \"Aanpak ondermijning (convenant RIEC art. 4)\"\n"
    "    legal_basis: \"Convenant RIEC Limburg 2023, art. 6; Gemeentewet art. 13b\"\n"
    "    fields: [area, address, subject, grounds, severity, observed_at, summary, source_ref]\n"
    "    retention: 2y\n"
    "  - id: gemeente-overlast-maasvallei\n"
    "    from: [gemeente]\n"
    "    to: [woco-maasvallei]\n"
    "    themes: [overlast]\n"
    "    areas: [GM0917, GM0882]\n"
    "    purpose: \"Aanpak woonoverlast in het bezit van de corporatie\"\n"
    "    legal_basis: \"Convenant woonoverlast Parkstad 2021\"\n"
    "    fields: [address, severity, observed_at, summary, source_ref]\n"
    "    retention: 365d\n"
    "  - id: bench-overlast-politie\n"
    "    from: [gemeente]\n"
    "    from_roles: [system]\n"
    "    to: [politie]\n"
    "    kinds: [" TP_KIND "]\n"
    "    themes: [" TP_THEME "]\n"
    "    areas: [GM0935]\n"
    "    purpose: \"Aanpak woonoverlast: meldingen van de gemeente aan de wijkagent\"\n"
    "    legal_basis: \"Gemeentewet art. 151d; Wpg art. 16\"\n"
    "    fields: [area, address, subject, grounds, severity, observed_at, summary, source_ref]\n"
    "    retention: 365d\n"
    "  - id: bench-overlast-riec\n"
    "    from: [gemeente]\n"
    "    from_roles: [system]\n"
    "    to: [riec]\n"
    "    kinds: [" TP_KIND "]\n"
    "    themes: [" TP_THEME "]\n"
    "    areas: [GM0935]\n"
    "    purpose: \"Signalen van overlast als indicator van ondermijning\"\n"
    "    legal_basis: \"Convenant RIEC Limburg 2023, art. 6\"\n"
    "    fields: [area, subject, severity, summary, source_ref]\n"
    "    retention: 2y\n"
    "  - id: bench-overlast-woco\n"
    "    from: [gemeente]\n"
    "    from_roles: [system]\n"
    "    to: [woco-servatius]\n"
    "    kinds: [" TP_KIND "]\n"
    "    themes: [" TP_THEME "]\n"
    "    areas: [GM0935]\n"
    "    purpose: \"Aanpak woonoverlast in het bezit van de corporatie\"\n"
    "    legal_basis: \"Convenant woonoverlast Maastricht 2022\"\n"
    "    fields: [address, severity, observed_at, summary, source_ref]\n"
    "    retention: 180d\n"
    "  - id: belastingdienst-woonfraude\n"
    "    from: [belastingdienst]\n"
    "    to: [gemeente]\n"
    "    themes: [woonfraude]\n"
    "    areas: [\"*\"]\n"
    "    purpose: \"Bestrijding woonfraude en adresfraude\"\n"
    "    legal_basis: \"AWR art. 43c\"\n"
    "    fields: [address, subject, grounds]\n"
    "    retention: 3y\n";

static const char *const tp_partners[][2] = {
    {"gemeente", "Gemeente Maastricht"},
    {"politie", "Politie Limburg"},
    {"riec", "RIEC Limburg"},
    {"woco-servatius", "Woningcorporatie Servatius"},
    {"woco-maasvallei", "Woningcorporatie Maasvallei"},
    {"ggd", "GGD Zuid Limburg"},
    {"om", "Openbaar Ministerie, parket Limburg"},
    {"veiligthuis", "Veilig Thuis Limburg"},
    {"belastingdienst", "Belastingdienst"},
};

static volatile sig_atomic_t tp_interrupted;

/* ------------------------------------------------------------------ types */

typedef struct tp_options {
    uint64_t count;
    unsigned item_bytes, window, latency_s, latency_publishers;
    unsigned rates[TP_MAX_RATES];
    size_t n_rates;
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
    double p50_us, p99_us, p999_us, max_us;
    uint64_t samples;
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
    bench_env_t env;
    atomic_int stop;
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
    tp_result_t latency[TP_MAX_RATES];
    long broker_peak_rss_kib, broker_hwm_kib, latency_peak_rss_kib;
    int64_t backlog_after[TP_RECIPIENTS];
    int broker_exit;
    double load_start, load_end;
};

/* ------------------------------------------------------------------ helpers */

static int tp_out_of_time(tp_bench_t *b)
{
    if (atomic_load(&b->stop))
        return 1;
    if (tp_interrupted) {
        bench_problem(&b->env, "interrupted");
        atomic_store(&b->stop, 1);
        return 1;
    }
    if (bench_now_ms() >= b->deadline_ms) {
        bench_problem(&b->env, "deadline of %.0f s reached", b->opt.deadline_s);
        atomic_store(&b->stop, 1);
        return 1;
    }
    return 0;
}

#define tp_fail(b, ...)                                                                            \
    do {                                                                                           \
        bench_problem(&(b)->env, __VA_ARGS__);                                                     \
        atomic_store(&(b)->stop, 1);                                                               \
    } while (0)

/* The 1-minute load average of the machine, -1 if unknown: other work on
 * the machine shows in the latencies, so the results say how busy it was. */
static double tp_loadavg(void)
{
    double load = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f != NULL) {
        if (fscanf(f, "%lf", &load) != 1)
            load = -1;
        fclose(f);
    }
    return load;
}

/* Timeout for one blocking call: what is left until the deadline, capped. */
static int tp_call_timeout(const tp_bench_t *b, int cap_ms)
{
    int64_t left = b->deadline_ms - bench_now_ms();
    if (left <= 0)
        return 0;
    return left < cap_ms ? (int)left : cap_ms;
}

/* The folder of the JSON file, where the CDF files go too. */
static void tp_results_dir(const tp_bench_t *b, char *out, size_t len)
{
    snprintf(out, len, "%s", b->opt.json_path);
    char *slash = strrchr(out, '/');
    if (slash != NULL)
        *slash = '\0';
    else
        snprintf(out, len, ".");
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

static int tp_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* "1000,5000,10000" or "0" (no paced runs). */
static int tp_parse_rates(const char *text, tp_options_t *o)
{
    char buf[128];
    if (strlen(text) >= sizeof buf)
        return -1;
    snprintf(buf, sizeof buf, "%s", text);
    o->n_rates = 0;
    if (strcmp(buf, "0") == 0)
        return 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        uint64_t v = 0;
        if (o->n_rates >= TP_MAX_RATES || tp_parse_u64(tok, 1, TP_MAX_RATE, &v) != 0)
            return -1;
        o->rates[o->n_rates++] = (unsigned)v;
    }
    return o->n_rates > 0 ? 0 : -1;
}

static int tp_parse_option(tp_options_t *o, const char *a, const char *value)
{
    uint64_t v = 0;
    int bad = 0;
    if (strcmp(a, "--count") == 0) {
        bad = tp_parse_u64(value, 1, TP_MAX_COUNT, &o->count);
    } else if (strcmp(a, "--item-bytes") == 0) {
        bad = tp_parse_u64(value, TP_MIN_ITEM_BYTES, SCHAKEL_MAX_ITEM_BYTES, &v);
        o->item_bytes = (unsigned)v;
    } else if (strcmp(a, "--window") == 0) {
        bad = tp_parse_u64(value, 1, SCHAKEL_MAX_WINDOW, &v);
        o->window = (unsigned)v;
    } else if (strcmp(a, "--rates") == 0) {
        bad = tp_parse_rates(value, o);
    } else if (strcmp(a, "--latency-seconds") == 0) {
        bad = tp_parse_u64(value, 1, 600, &v);
        o->latency_s = (unsigned)v;
    } else if (strcmp(a, "--latency-publishers") == 0) {
        bad = tp_parse_u64(value, 1, TP_PUBLISHERS, &v);
        o->latency_publishers = (unsigned)v;
    } else if (strcmp(a, "--deadline") == 0) {
        bad = tp_parse_u64(value, 1, 86400, &v);
        o->deadline_s = (double)v;
    } else if (strcmp(a, "--json") == 0) {
        o->json_path = value;
    } else if (strcmp(a, "--broker-log-level") == 0) {
        o->log_level = value;
    } else {
        fprintf(stderr, "bench_throughput: unknown option %s\n", a);
        return 2;
    }
    if (bad) {
        fprintf(stderr, "bench_throughput: %s %s is out of range\n", a, value);
        return 2;
    }
    return 0;
}

/* Returns 0 to run, 1 for --help, 2 on a usage error. */
static int tp_parse_args(int argc, char **argv, tp_options_t *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return 1;
        if (strcmp(a, "--keep") == 0) {
            o->keep = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "bench_throughput: %s needs a value (or is unknown)\n", a);
            return 2;
        }
        int rc = tp_parse_option(o, a, argv[++i]);
        if (rc != 0)
            return rc;
    }
    if (o->deadline_s == 0)
        o->deadline_s =
            120.0 + 1200.0 * (double)o->count / 1e6 + (double)(o->n_rates * (o->latency_s + 30));
    return 0;
}

/* ------------------------------------------------------------------ the signal */

static void tp_fill_signal(const tp_bench_t *b, schakel_signal_t *s, const char *source_ref)
{
    memset(s, 0, sizeof *s);
    s->kind = TP_KIND;
    s->theme = TP_THEME;
    s->area = "BU09350101";
    s->postcode = "6211AB";
    s->house_number = 12;
    s->subject = "pseudo:bench-0001";
    s->grounds = "Meldingen van omwonenden en een waarneming van de handhaver (benchmark).";
    s->severity = SCHAKEL_SEVERITY_MEDIUM;
    s->observed_at = b->observed_at;
    s->summary = b->summary;
    s->source_ref = source_ref;
}

static char *tp_lend(const char *text)
{
    return (char *)(uintptr_t)text; /* packed only, never written */
}

/* Serialized size of one item as libschakel encodes it (same fields). */
static size_t tp_item_size(const schakel_signal_t *in, const char *sender)
{
    Schakel__Signal s = SCHAKEL__SIGNAL__INIT;
    Schakel__Address address = SCHAKEL__ADDRESS__INIT;
    s.sender = tp_lend(sender);
    s.kind = tp_lend(in->kind);
    s.theme = tp_lend(in->theme);
    s.area = tp_lend(in->area);
    address.postcode = tp_lend(in->postcode);
    address.has_house_number = 1;
    address.house_number = in->house_number;
    s.address = &address;
    s.subject = tp_lend(in->subject);
    s.grounds = tp_lend(in->grounds);
    s.has_severity = 1;
    s.severity = (Schakel__Severity)in->severity;
    s.has_observed_at = 1;
    s.observed_at = in->observed_at;
    s.summary = tp_lend(in->summary);
    s.source_ref = tp_lend(in->source_ref);
    size_t len = 0;
    uint8_t *bytes = wire_encode_signal(&s, &len);
    free(bytes);
    return bytes != NULL ? len : 0;
}

/* The scheduled (paced) or actual (throughput) send time, the phase and
 * the item's number in the phase, at a fixed width so every item has the
 * same size. */
static void tp_format_ref(char *out, int64_t at_ns, unsigned phase, uint64_t number)
{
    snprintf(out, TP_REF_BYTES, "t=%019" PRId64 ":p%02u:n%010" PRIu64, at_ns, phase % 100u, number);
}

static int tp_parse_ref(const char *ref, int64_t *at_ns, unsigned *phase, uint64_t *number)
{
    int used = 0;
    if (ref == NULL ||
        sscanf(ref, "t=%" SCNd64 ":p%u:n%" SCNu64 "%n", at_ns, phase, number, &used) != 3)
        return -1;
    return ref[used] == '\0' ? 0 : -1;
}

/* Choose the summary length that makes every item opt.item_bytes long (or
 * just under), and the batch that keeps a Publish under the frame limit. */
static int tp_size_signal(tp_bench_t *b)
{
    char ref[TP_REF_BYTES];
    schakel_signal_t s;
    size_t words = strlen(tp_summary_words), best = 0, best_size = 0;
    b->observed_at = (int64_t)time(NULL) - 60;
    tp_format_ref(ref, bench_now_ns(), 1, 0);
    for (size_t len = 0; len <= SCHAKEL_MAX_SUMMARY_LEN; len++) {
        for (size_t i = 0; i < len; i++)
            b->summary[i] = tp_summary_words[i % words];
        b->summary[len] = '\0';
        tp_fill_signal(b, &s, ref);
        size_t size = tp_item_size(&s, tp_publisher_ids[0]);
        if (size == 0 || size > b->opt.item_bytes)
            break;
        best = len;
        best_size = size;
    }
    if (best_size == 0) {
        tp_fail(b, "--item-bytes %u is smaller than a signal without summary", b->opt.item_bytes);
        return -1;
    }
    b->summary[best] = '\0';
    b->summary_len = best;
    b->item_bytes = best_size;
    size_t per_item = 1 + (best_size < 128 ? 1 : best_size < 16384 ? 2 : 3) + best_size;
    b->batch = SCHAKEL_MAX_ITEMS;
    while (b->batch > 1 && b->batch * per_item + TP_FRAME_OVERHEAD > SCHAKEL_MAX_FRAME_BYTES)
        b->batch--;
    return 0;
}

/* ------------------------------------------------------------------ environment */

/* policy.yaml: the partners, every principal with its key file, the rules. */
static char *tp_policy_text(const tp_bench_t *b)
{
    size_t cap = sizeof tp_policy_rules + 8192;
    char *text = malloc(cap), base[BENCH_PATH_MAX];
    if (text == NULL)
        return NULL;
    size_t n = (size_t)snprintf(text, cap,
                                "# policy of the throughput benchmark: a municipality's feed to "
                                "police, RIEC and a housing corporation, among other traffic\n"
                                "version: 1\npartners:\n");
    for (size_t i = 0; i < sizeof tp_partners / sizeof tp_partners[0]; i++)
        n += (size_t)snprintf(text + n, cap - n, "  - id: %s\n    name: %s\n", tp_partners[i][0],
                              tp_partners[i][1]);
    n += (size_t)snprintf(text + n, cap - n, "principals:\n");
    for (size_t i = 0; i < TP_N_PRINCIPALS; i++) {
        const char *id = i < TP_PUBLISHERS ? tp_publisher_ids[i]
                         : i < TP_PUBLISHERS + TP_RECIPIENTS
                             ? tp_recipient_specs[i - TP_PUBLISHERS].principal
                             : tp_other_principals[i - TP_PUBLISHERS - TP_RECIPIENTS].id;
        const char *role = i < TP_PUBLISHERS + TP_RECIPIENTS
                               ? "system"
                               : tp_other_principals[i - TP_PUBLISHERS - TP_RECIPIENTS].role;
        bench_key_base(&b->env, id, base, sizeof base);
        const char *file = strrchr(base, '/') + 1; /* keys/<file>.pub, relative to the policy */
        n += (size_t)snprintf(text + n, cap - n,
                              "  - id: %s\n    role: %s\n    key_file: keys/%s.pub\n", id, role,
                              file);
    }
    if (n + sizeof tp_policy_rules >= cap) {
        free(text);
        return NULL;
    }
    memcpy(text + n, tp_policy_rules, sizeof tp_policy_rules);
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
                     : tp_other_principals[i - TP_PUBLISHERS - TP_RECIPIENTS].id;
    /* bench_env_create names the folder first; the policy names key files
     * in it, so the text is written once the folder exists. */
    snprintf(extra, sizeof extra, "max_publish_rate: %d\n", TP_PUBLISH_RATE_LIMIT);
    if (bench_env_create(&b->env, ids, TP_N_PRINCIPALS, "version: 1\n", extra) != 0)
        return -1;
    char *policy = tp_policy_text(b);
    if (policy == NULL || bench_write_file(b->env.policy_path, policy, 0644) != 0) {
        free(policy);
        tp_fail(b, "cannot write %s", b->env.policy_path);
        return -1;
    }
    free(policy);
    if (bench_broker_start(&b->env, b->opt.log_level, TP_START_TIMEOUT_MS) != 0) {
        atomic_store(&b->stop, 1);
        return -1;
    }
    return 0;
}

static int tp_connect_all(tp_bench_t *b)
{
    for (unsigned i = 0; i < TP_PUBLISHERS; i++) {
        b->pubs[i] = (tp_publisher_t){.bench = b, .number = i};
        if (bench_connect(&b->env, tp_publisher_ids[i], &b->pubs[i].client,
                          tp_call_timeout(b, TP_CALL_TIMEOUT_MS)) != 0)
            return -1;
    }
    for (unsigned i = 0; i < TP_RECIPIENTS; i++) {
        tp_recipient_t *r = &b->recipients[i];
        r->bench = b;
        r->number = i;
        r->spec = &tp_recipient_specs[i];
        if (bench_connect(&b->env, r->spec->principal, &r->client,
                          tp_call_timeout(b, TP_CALL_TIMEOUT_MS)) != 0)
            return -1;
        if (schakel_subscribe(r->client, b->opt.window) != SCHAKEL_OK) {
            tp_fail(b, "%s: subscribe: %s", r->spec->principal,
                    schakel_last_error(r->client)->text);
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ publishing */

static int tp_retryable(const schakel_client_t *client, schakel_status_t st)
{
    const schakel_error_t *e = schakel_last_error(client);
    return st == SCHAKEL_ERR_TIMEOUT ||
           (st == SCHAKEL_ERR_REFUSED && (e->reason == SCHAKEL__REASON__INTERNAL_ERROR ||
                                          e->reason == SCHAKEL__REASON__UNAVAILABLE));
}

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
    schakel_status_t st = SCHAKEL_ERR_TIMEOUT;
    for (int attempt = 0; attempt < TP_PUBLISH_ATTEMPTS && !tp_out_of_time(b); attempt++) {
        st = schakel_publish(p->client, NULL, signals, n, id, NULL, results, NULL,
                             tp_call_timeout(b, TP_CALL_TIMEOUT_MS));
        if (st == SCHAKEL_OK || !tp_retryable(p->client, st))
            break;
    }
    if (st != SCHAKEL_OK) {
        const schakel_error_t *e = schakel_last_error(p->client);
        if (!tp_out_of_time(b))
            tp_fail(b, "%s: publish in phase %u after %" PRIu64 " items: %s %s: %s",
                    tp_publisher_ids[p->number], ph->number, p->accepted, schakel_strerror(st),
                    e->reason_name, e->text);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (results[i].recipients != TP_RECIPIENTS) {
            tp_fail(b, "%s: item %zu of a publish was queued for %u mailboxes, not %u",
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
        tp_fail(r->bench, "%s: ack: %s", r->spec->principal, schakel_last_error(r->client)->text);
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
                tp_fail(
                    b,
                    "%s heard nothing for %d s with %" PRIu64 " of %" PRIu64 " items of phase %u",
                    r->spec->principal, TP_SILENCE_MS / 1000, r->distinct, ph->count, ph->number);
                break;
            }
            continue;
        }
        if (st != SCHAKEL_OK) {
            tp_fail(b, "%s: receive: %s", r->spec->principal, schakel_last_error(r->client)->text);
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
            tp_fail(b, "out of memory for phase %u", ph->number);
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
    bench_hist_t all;
    if (bench_hist_init(&all, (size_t)ph->count * TP_RECIPIENTS) != 0) {
        tp_fail(b, "out of memory for the latencies");
        return;
    }
    for (unsigned i = 0; i < TP_RECIPIENTS; i++)
        if (bench_hist_merge(&all, &b->recipients[i].hist) != 0)
            tp_fail(b, "out of memory for the latencies");
    res->samples = all.n;
    res->p50_us = bench_hist_quantile_us(&all, 0.50);
    res->p99_us = bench_hist_quantile_us(&all, 0.99);
    res->p999_us = bench_hist_quantile_us(&all, 0.999);
    res->max_us = bench_hist_quantile_us(&all, 1.0);
    char dir[PATH_MAX], path[PATH_MAX + 64];
    tp_results_dir(b, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/cdf_schakel_%u.dat", dir, ph->rate);
    if (all.n > 0 && bench_hist_write_cdf(&all, path, TP_CDF_POINTS) != 0)
        fprintf(stderr, "bench_throughput: cannot write %s: %s\n", path, strerror(errno));
    bench_hist_free(&all);
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
    if (atomic_load(&b->stop) || tp_phase_prepare(b, ph) != 0)
        return;
    res->ran = 1;
    double cpu0 = bench_read_cpu_s(b->env.broker_pid), own0 = bench_read_cpu_s(0);
    ph->start_ns = bench_now_ns() + (ph->rate > 0 ? TP_PACE_LEAD_NS : 0);
    b->phase = ph;
    for (unsigned i = 0; i < TP_RECIPIENTS; i++) {
        tp_recipient_t *r = &b->recipients[i];
        r->started = pthread_create(&r->thread, NULL, tp_recipient_run, r) == 0;
        if (!r->started)
            tp_fail(b, "cannot start a recipient thread");
    }
    for (unsigned i = 0; i < ph->publishers && !atomic_load(&b->stop); i++) {
        tp_publisher_t *p = &b->pubs[i];
        p->started = pthread_create(&p->thread, NULL, tp_publisher_run, p) == 0;
        if (!p->started)
            tp_fail(b, "cannot start a publisher thread");
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
        tp_fail(b,
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
        schakel_status_t st =
            schakel_backlog(r->client, &backlog, tp_call_timeout(b, TP_CALL_TIMEOUT_MS));
        if (st != SCHAKEL_OK) {
            tp_fail(b, "%s: backlog: %s", r->spec->principal, schakel_last_error(r->client)->text);
            continue;
        }
        b->backlog_after[i] = (int64_t)backlog;
        if (backlog != 0)
            tp_fail(b, "%s: %" PRIu64 " deliveries still in the mailbox at the end",
                    r->spec->principal, backlog);
    }
}

static void tp_measure(tp_bench_t *b)
{
    if (tp_connect_all(b) != 0) {
        atomic_store(&b->stop, 1);
        return;
    }
    if (bench_sampler_start(&b->sampler, b->env.broker_pid, TP_SAMPLE_MS) != 0)
        tp_fail(b, "cannot start the RSS sampler");
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
    for (size_t i = 0; i < b->opt.n_rates && !atomic_load(&b->stop); i++) {
        tp_phase_t paced = {.number = (unsigned)i + 3,
                            .rate = b->opt.rates[i],
                            .count = (uint64_t)b->opt.rates[i] * b->opt.latency_s,
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
    if (!atomic_load(&b->stop))
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
    for (size_t i = 0; i < b->opt.n_rates; i++)
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

/* One latency quantile: null when nothing was measured. */
static void tp_json_us(FILE *f, unsigned rate, const char *name, double us, uint64_t samples)
{
    if (samples > 0)
        fprintf(f, "  \"lat_%u_%s_us\": %.1f,\n", rate, name, us);
    else
        fprintf(f, "  \"lat_%u_%s_us\": null,\n", rate, name);
}

static void tp_json_latency(FILE *f, unsigned rate, const tp_result_t *r)
{
    tp_json_us(f, rate, "p50", r->p50_us, r->samples);
    tp_json_us(f, rate, "p99", r->p99_us, r->samples);
    tp_json_us(f, rate, "p999", r->p999_us, r->samples);
    tp_json_us(f, rate, "max", r->max_us, r->samples);
    fprintf(f, "  \"lat_%u_ran\": %s,\n", rate, r->ran ? "true" : "false");
    fprintf(f, "  \"lat_%u_samples\": %" PRIu64 ",\n  \"lat_%u_items\": %" PRIu64 ",\n", rate,
            r->samples, rate, r->count);
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
    char dir[PATH_MAX];
    tp_results_dir(b, dir, sizeof dir);
    (void)mkdir(dir, 0755); /* the results folder; its parent must exist */
    FILE *f = fopen(b->opt.json_path, "w");
    if (f == NULL) {
        fprintf(stderr, "bench_throughput: cannot write %s: %s\n", b->opt.json_path,
                strerror(errno));
        return -1;
    }
    uint64_t items = b->p1.accepted + b->p4.accepted;
    fprintf(f, "{\n  \"bench\": \"throughput\",\n  \"completed\": %s,\n",
            completed ? "true" : "false");
    fprintf(f, "  \"count\": %" PRIu64 ",\n  \"item_bytes\": %zu,\n  \"batch_items\": %zu,\n",
            b->opt.count, b->item_bytes, b->batch);
    fprintf(f, "  \"recipients\": %u,\n  \"publishers\": %u,\n  \"window\": %u,\n", TP_RECIPIENTS,
            TP_PUBLISHERS, b->opt.window);
    fprintf(f, "  \"rules\": %d,\n  \"broker_log_level\": ", TP_RULES);
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
    for (size_t i = 0; i < b->opt.n_rates; i++)
        tp_json_latency(f, b->opt.rates[i], &b->latency[i]);
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
    const char *rule = "------------------------------------------------------------------------"
                       "--------------";
    printf("\nSchakel: signals of %zu bytes, batches of up to %zu, %u recipients that ack "
           "(window %u), store with fsync, %d rules\n%s\n",
           b->item_bytes, b->batch, TP_RECIPIENTS, b->opt.window, TP_RULES, rule);
    tp_print_run("throughput, 1 publisher", &b->p1);
    tp_print_run("throughput, 4 publishers", &b->p4);
    printf("%-24s %.4f s per 1000 items (both runs)\n", "broker CPU",
           tp_per_1000(b->p1.broker_cpu_s + b->p4.broker_cpu_s, b->p1.accepted + b->p4.accepted));
    printf("%-24s %.1f MiB during the throughput runs (VmHWM at the end %.1f MiB)\n",
           "broker peak RSS", (double)b->broker_peak_rss_kib / 1024.0,
           (double)b->broker_hwm_kib / 1024.0);
    printf("%-24s %.2f at the start, %.2f at the end (%ld CPUs)\n", "load average", b->load_start,
           b->load_end, sysconf(_SC_NPROCESSORS_ONLN));
    for (size_t i = 0; i < b->opt.n_rates; i++) {
        const tp_result_t *r = &b->latency[i];
        char label[32];
        snprintf(label, sizeof label, "latency at %u/s", b->opt.rates[i]);
        if (r->samples == 0) {
            printf("%-24s %s\n", label, r->ran ? "no samples" : "not run");
            continue;
        }
        printf("%-24s p50 %.0f us, p99 %.0f us, p99.9 %.0f us, max %.0f us (%" PRIu64
               " samples; %.1f items per publish, at most %.1f ms behind)\n",
               label, r->p50_us, r->p99_us, r->p999_us, r->max_us, r->samples,
               r->publishes > 0 ? (double)r->accepted / (double)r->publishes : 0, r->max_behind_ms);
    }
    if (b->env.problem[0] != '\0')
        printf("problem: %s\n", b->env.problem);
    printf("%s\n", rule);
}

/* ------------------------------------------------------------------ main */

static void tp_on_signal(int sig)
{
    (void)sig;
    tp_interrupted = 1;
}

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
                            .json_path = "tests/bench/results/throughput.json",
                            .log_level = "info"};
    for (size_t i = 0; i < sizeof tp_default_rates / sizeof tp_default_rates[0]; i++)
        b->opt.rates[b->opt.n_rates++] = tp_default_rates[i];
    int rc = tp_parse_args(argc, argv, &b->opt);
    if (rc != 0) {
        tp_usage(rc == 1 ? stdout : stderr);
        return rc == 1 ? 0 : 2;
    }
    for (unsigned i = 0; i < TP_RECIPIENTS; i++)
        b->backlog_after[i] = -1;
    b->env.broker_pidfd = -1;
    b->deadline_ms = bench_now_ms() + (int64_t)(b->opt.deadline_s * 1000.0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = tp_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (sodium_init() < 0) {
        fprintf(stderr, "bench_throughput: libsodium failed to initialise\n");
        return 1;
    }
    b->load_start = tp_loadavg();
    if (tp_size_signal(b) == 0 && tp_setup(b) == 0)
        tp_measure(b);
    b->load_end = tp_loadavg();
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
