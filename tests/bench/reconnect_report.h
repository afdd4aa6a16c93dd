/*
 * reconnect_report.h — the state of one run of bench_reconnect (its
 * options, the outcomes of its cycles, the broker's memory samples and the
 * service check), which bench_reconnect.c fills in as the run goes, and
 * what reconnect_report.c makes of it: the table on stdout, the JSON file
 * and the verdict on the connections' outcomes. Linked only into
 * bench_reconnect.
 */
#ifndef SCHAKEL_BENCH_RECONNECT_REPORT_H
#define SCHAKEL_BENCH_RECONNECT_REPORT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "keys.h"
#include "schakel_limits.h"
#include "support.h"

#define RECONNECT_MAX_PRINCIPALS 64u
/* The broker expires idle sessions in a housekeeping pass once a second:
 * a session is gone at most timeout + 1 s after its last frame. */
#define RECONNECT_EXPIRY_MARGIN_MS 2000
#define RECONNECT_PLATEAU_MS (SCHAKEL_SESSION_TIMEOUT_MS + RECONNECT_EXPIRY_MARGIN_MS)

/* ------------------------------------------------------------------ types */

/* What a raw DEALER does before it closes; none of them sends a frame. */
enum raw_kind {
    RAW_SILENT, /* registered CURVE key: handshake completes, then silence and close */
    RAW_NULL,   /* no CURVE at all: the broker refuses the mechanism */
    RAW_ABORT,  /* CURVE: closes as soon as TCP is up, mid-handshake */
    RAW_KINDS
};

/* The connections a cycle makes (--kinds); all three by default. */
enum cycle_kind { KIND_VALID = 1, KIND_INVALID = 2, KIND_RAW = 4, KIND_ALL = 7 };

typedef struct reconnect_options {
    uint64_t count;
    unsigned warmup;
    unsigned principals;
    unsigned publish_every;
    unsigned sample_every;
    unsigned max_connections;
    unsigned margin_mib;
    double deadline_s; /* 0: derived from count */
    int expiry_wait;
    unsigned kinds; /* enum cycle_kind bits */
    const char *json_path;
    const char *log_level;
    int keep;
} reconnect_options_t;

typedef struct mem_sample {
    uint64_t cycles;
    double at_s; /* since the storm started */
    bench_mem_t mem;
} mem_sample_t;

/* Outcomes of the cycles of one phase (warm-up or storm). */
typedef struct storm_counts {
    uint64_t cycles;
    uint64_t valid_ok, whoami_ok, publish_ok, valid_failed, too_many;
    uint64_t invalid_auth, invalid_wrong, invalid_admitted;
    uint64_t raw_done[RAW_KINDS], raw_failed;
} storm_counts_t;

typedef struct service_check {
    int ran, ok;
    int final_accepted, final_delivered;
    uint64_t expected, delivered, distinct, unknown, duplicates;
    int64_t backlog_after; /* -1: not known */
} service_check_t;

typedef struct settle_result {
    bench_mem_t mem;
    int settled; /* VmRSS stopped changing within the bound */
    double waited_ms;
} settle_result_t;

typedef struct bench {
    reconnect_options_t opt;
    bench_env_t env; /* folder, broker, the first thing that stopped the run */
    int64_t started_ms, deadline_ms;
    char principal_ids[RECONNECT_MAX_PRINCIPALS][32];
    char valid_keys[RECONNECT_MAX_PRINCIPALS][BENCH_PATH_MAX + 8];
    char stranger_key[BENCH_PATH_MAX + 8]; /* a fresh unregistered key for every attempt */
    char recipient_key[BENCH_PATH_MAX + 8];
    int64_t observed_at;
    /* raw DEALERs: one context, the first principal's key, the broker's key */
    void *raw_ctx;
    keypair_t *raw_key;
    uint8_t broker_curve_pk[32];
    uint64_t raw_serial;
    /* item seqs of every accepted publish, in publish order */
    uint64_t *accepted;
    size_t n_accepted, cap_accepted;
    int64_t last_valid_ms; /* when the broker last answered a valid connection */
    /* when each registered connection's last frame was answered: the broker
     * keeps a session per such connection until it expires */
    int64_t *session_ms;
    size_t n_session_ms, cap_session_ms;
    storm_counts_t warm, storm;
    double storm_s;
    int64_t storm_started_ms;
    mem_sample_t *samples;
    size_t n_samples, cap_samples;
    bench_mem_t baseline;
    settle_result_t baseline_settle, settled, final;
    int final_after_expiry;
    long client_rss_baseline_kib, client_rss_final_kib;
    atomic_long peak_rss_kib; /* highest VmRSS seen from the baseline on */
    bench_sampler_t sampler;  /* the broker's VmRSS every RECONNECT_POLL_MS, for the peak */
    service_check_t check;
    int completed; /* every cycle ran */
    int broker_exit;
    long long log_bytes;
    char first_wrong[512]; /* the first cycle with an unexpected outcome */
} bench_t;

/* ------------------------------------------------------------------ report */

/* 1 when a cycle of c had an outcome other than the expected one (a
 * registered key not served, an unregistered key not refused at the
 * handshake, a raw DEALER whose socket event did not come). */
int reconnect_report_wrong_outcomes(const storm_counts_t *c);

/* The name of a raw DEALER kind as the JSON keys ("raw_<name>") and the
 * messages give it: a static string. */
const char *reconnect_report_raw_name(enum raw_kind kind);

/* The results table on stdout: counts, broker memory, the service check,
 * the memory samples and the criteria, each "met" or "not met". */
void reconnect_report_print_table(const bench_t *b);

/* Write the results to b->opt.json_path (its folder made if missing; run.sh
 * reads the keys). 0, or -1 when it cannot be written (said on stderr when
 * it cannot be opened). */
int reconnect_report_write_json(const bench_t *b);

#endif
