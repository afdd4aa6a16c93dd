/*
 * support.h — what every bench shares: clocks, signals and deadlines,
 * option parsing, a temporary folder with keys, a policy and a config, one
 * schakeld started from it (and ended by its PID only), signals sized to a
 * byte count and published with retries, /proc readings of a process, a
 * peak-RSS sampler, latency histograms with quantiles and CDF files, and
 * small JSON writers. Linked into every bench_X by `make bench`: every
 * tests/bench/support*.c, i.e. support.c (clocks to signals) and
 * support_measure.c (/proc, sampler, latency, JSON).
 */
#ifndef SCHAKEL_BENCH_SUPPORT_H
#define SCHAKEL_BENCH_SUPPORT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "schakel.h"

#define BENCH_PATH_MAX 256
#define BENCH_MAX_RATES 8
/* The line that frames every bench's table on stdout. */
#define BENCH_RULE                                                                                 \
    "--------------------------------------------------------------------------------------"

/* ------------------------------------------------------------------ clocks */

/* CLOCK_MONOTONIC in nanoseconds, milliseconds, seconds. The same clock in
 * every process of the machine, so a timestamp written by a publisher can
 * be compared by a receiver in another process. */
int64_t bench_now_ns(void);
int64_t bench_now_ms(void);
double bench_now_s(void);

/* Sleep until the monotonic time `at_ns` (pacing a sender, never to wait
 * for another party). Returns at once if it has passed. */
void bench_sleep_until_ns(int64_t at_ns);

/* ------------------------------------------------------------------ run control */

/* Catch SIGINT and SIGTERM: they only set the flag that bench_interrupted
 * reads, so that a bench winds down, reports what it measured and removes
 * its folder. With ignore_sigpipe, SIGPIPE is ignored as well. */
void bench_catch_signals(int ignore_sigpipe);

/* 1 once SIGINT or SIGTERM came (after bench_catch_signals), else 0.
 * Async-signal-safe to read from any thread. */
int bench_interrupted(void);

/* Timeout for one blocking call: what is left until deadline_ms (the
 * bench_now_ms clock), at most cap_ms; 0 once the deadline has passed. */
int bench_call_timeout(int64_t deadline_ms, int cap_ms);

/* The machine's 1-minute load average (/proc/loadavg), -1 if unknown: other
 * work on the machine shows in every figure, so results say how busy it was. */
double bench_loadavg(void);

/* KiB as MiB. */
double bench_mib(long kib);

/* ------------------------------------------------------------------ options */

/* Paced rates, e.g. --rates 1000,5000,10000; n == 0: none ("0"). */
typedef struct bench_rates {
    unsigned rate[BENCH_MAX_RATES];
    size_t n;
} bench_rates_t;

typedef enum bench_option_kind {
    BENCH_OPT_FLAG,     /* no value: *(int *)target = (int)min */
    BENCH_OPT_U64,      /* uint64_t *target, decimal in [min, max] */
    BENCH_OPT_UNSIGNED, /* unsigned *target, decimal in [min, max] */
    BENCH_OPT_SECONDS,  /* double *target, whole seconds in [min, max] */
    BENCH_OPT_TEXT,     /* const char **target = the argument itself (not copied) */
    BENCH_OPT_RATES,    /* bench_rates_t *target: "0" or R,R,... each in [min, max] */
    BENCH_OPT_CUSTOM,   /* parse(value, target): 0, or -1 when out of range */
} bench_option_kind_t;

/* One command-line option of a bench: "--name" and where its value goes. */
typedef struct bench_option {
    const char *name;
    bench_option_kind_t kind;
    void *target;
    uint64_t min, max;
    int (*parse)(const char *value, void *target);
} bench_option_t;

/* Parse argv[1..] against the n options; every option but a FLAG takes the
 * next argument as its value. Returns 0 to run, 1 when --help or -h was
 * given, 2 on a usage error: a missing value, an unknown option or a value
 * out of range, said on stderr as "<program>: ...". Targets of options
 * before the error may have been set. */
int bench_parse_options(int argc, char **argv, const bench_option_t *options, size_t n);

/* A decimal without sign in [min, max] into *out. 0, or -1 (out unchanged). */
int bench_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *out);

/* ------------------------------------------------------------------ environment */

/* One benchmark's folder and broker. Zero-initialise, then bench_env_create. */
typedef struct bench_env {
    char dir[64]; /* /tmp/schakel-bench-XXXXXX */
    char config_path[BENCH_PATH_MAX], policy_path[BENCH_PATH_MAX], store_path[BENCH_PATH_MAX],
        log_path[BENCH_PATH_MAX], broker_pub[BENCH_PATH_MAX];
    pid_t broker_pid;   /* 0 when no broker runs */
    int broker_pidfd;   /* -1 when none */
    char endpoint[128]; /* from the READY line: tcp://127.0.0.1:PORT */
    double ready_s;     /* the last start: fork to READY line, seconds */
    char problem[512];  /* the first thing that went wrong, "" if nothing */
    atomic_int stop;    /* set with every problem: the bench's loops wind down */
} bench_env_t;

/* Make the folder under /tmp, a key pair for "broker" and for each of the n
 * principals (files keys/<principal with '/' as '-'>.key/.pub), policy.yaml
 * with `policy_text` verbatim (it names key files as keys/<base>.pub, see
 * bench_key_base), schakeld.yaml (listen tcp://127.0.0.1:*, key_file,
 * store_key_file, policy, store) with `config_extra` (NULL or YAML lines,
 * e.g. limits) appended, and the store key (keys/store.key) and an empty
 * store made by `schakeld --init --config` (bench_schakeld_path). Returns 0,
 * or -1 with env->problem set. */
int bench_env_create(bench_env_t *env, const char *const *principals, size_t n,
                     const char *policy_text, const char *config_extra);

/* "<dir>/keys/<principal with '/' as '-'>" (add ".key" or ".pub"). */
void bench_key_base(const bench_env_t *env, const char *principal, char *out, size_t len);

/* policy.yaml text for partner "bron" (publishers) and "ontvanger" (the
 * recipient): "# <comment>", both partners, the n principals in the order
 * given (role system, key_file keys/<base>.pub as bench_key_base names it),
 * and one rule `rule_id` from bron to ontvanger for kind bench-signaal,
 * theme overlast, any area, with `purpose` and every field but case_ref.
 * Returns a malloc'd string (the caller frees it), NULL without memory. */
char *bench_policy_pair(const char *comment, const char *const *principals, size_t n,
                        const char *rule_id, const char *purpose);

/* Remove the folder (unless keep, then print its name on stderr). Stops a
 * broker that still runs first. */
void bench_env_remove(bench_env_t *env, int keep);

/* The schakeld to run: $SCHAKELD, else $BUILD/schakeld, else build/schakeld. */
const char *bench_schakeld_path(void);

/* In a child between fork and exec: stdin from /dev/null, stdout to out,
 * stderr to err, then execve(program, argv, envp). Exits 126 when the
 * descriptors cannot be set up, 127 when the exec fails; async-signal-safe
 * calls only. */
void bench_exec_child(const char *program, char *const argv[], char *const envp[], int out, int err)
    __attribute__((noreturn));

/* Start schakeld --config <config> --log-level <level> --ready-fd 3, output
 * appended to log_path, and wait up to timeout_ms for its READY line; sets
 * endpoint, broker_pid, broker_pidfd and ready_s. Returns 0, or -1 with
 * env->problem set (the broker is stopped again then). */
int bench_broker_start(bench_env_t *env, const char *log_level, int timeout_ms);

/* SIGTERM our broker (by its PID), wait up to timeout_ms, SIGKILL if it did
 * not stop. Returns its exit code, 128+signal, or -1. */
int bench_broker_stop(bench_env_t *env, int timeout_ms);

/* Connect as `principal` (its key files from bench_key_base) to the broker
 * at env->endpoint. Returns 0, or -1 with env->problem set. */
int bench_connect(bench_env_t *env, const char *principal, schakel_client_t **out, int timeout_ms);

/* 1 when our broker has exited or none runs (it is not reaped here). */
int bench_broker_gone(const bench_env_t *env);

/* Wait up to ms, waking early when our broker exits: a measurement
 * interval, never a synchronisation. */
void bench_broker_pause(const bench_env_t *env, int ms);

/* Record the first problem (printf-style); later ones are dropped (they
 * are mostly its consequences). Every call sets env->stop. Thread-safe. */
void bench_problem(bench_env_t *env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Size of a file in bytes, -1 if it does not exist. */
long long bench_file_size(const char *path);

/* Write a whole file with `mode`. Returns 0 or -1 (errno set). */
int bench_write_file(const char *path, const char *text, unsigned mode);

/* ------------------------------------------------------------------ signals */

/* A bench signal: `kind`, theme overlast, area BU09350101, address 6211AB
 * 12, subject pseudo:bench-0001, and the rest as given (the strings are
 * borrowed, not copied); every other field absent. */
void bench_signal_init(schakel_signal_t *s, const char *kind, const char *grounds, int severity,
                       int64_t observed_at, const char *summary, const char *source_ref);

/* Make every item the same size: the longest summary (the text `words`
 * repeated) with which `s` stays at most `target` bytes. Points s->summary
 * at `summary` (SCHAKEL_MAX_SUMMARY_LEN + 1 bytes, written), sets
 * *summary_len and returns the item's size; 0 when even an empty summary
 * is larger than target. The other fields of s must be set (source_ref at
 * its final length). */
size_t bench_signal_pad(schakel_signal_t *s, const char *sender, const char *words, char *summary,
                        size_t target, size_t *summary_len);

/* How many items of item_bytes fit one Publish frame (at most
 * SCHAKEL_MAX_ITEMS) next to `overhead` bytes of the rest of the frame. */
size_t bench_batch_items(size_t item_bytes, size_t overhead);

/* schakel_publish of n signals under message id `id`, retried with the
 * same id (the broker answers a repeat with the original Accepted) up to
 * `attempts` times while the failure may pass: a timeout, or a refusal
 * INTERNAL_ERROR or UNAVAILABLE. Each try waits at most cap_ms and never
 * past deadline_ms; no try starts once *stop (NULL: none) is set, an
 * interrupt came or the deadline passed (SCHAKEL_ERR_TIMEOUT then, if
 * none was made). Returns the last status; results as schakel_publish. */
schakel_status_t bench_publish_retry(schakel_client_t *client, const schakel_signal_t *signals,
                                     size_t n, const uint8_t *id, schakel_item_result_t *results,
                                     int attempts, int64_t deadline_ms, int cap_ms,
                                     atomic_int *stop);

/* ------------------------------------------------------------------ /proc */

/* From here to the end: support_measure.c. */

typedef struct bench_mem {
    long rss_kib, hwm_kib, anon_kib, file_kib, shmem_kib;
    int threads;
    int fds; /* open fds: bench_read_proc of another process only, else -1 */
} bench_mem_t;

/* VmRSS, VmHWM, RssAnon, RssFile, RssShmem of a process, in KiB, and its
 * Threads (fds -1). pid 0 = self. 0 or -1. */
int bench_read_mem(pid_t pid, bench_mem_t *m);

/* bench_read_mem, and for pid > 0 also its open fds (bench_count_fds). */
int bench_read_proc(pid_t pid, bench_mem_t *m);

/* Open file descriptors of a process (entries of /proc/<pid>/fd), -1 on
 * error: also for a broker when we are not root (schakeld is not
 * dumpable, so its /proc/<pid>/fd is root's). pid 0 = self. */
int bench_count_fds(pid_t pid);

/* User + system CPU seconds of a process so far, -1 on error. pid 0 = self. */
double bench_read_cpu_s(pid_t pid);

/* User + system CPU seconds from a /proc stat file (a process's, or a
 * thread's: /proc/self/task/<tid>/stat), -1 on error. */
double bench_stat_cpu_s(const char *path);

/* Raise *peak to value if value is higher (atomically, from any thread). */
void bench_note_peak(atomic_long *peak, long value);

/* A thread that reads a process's VmRSS every interval_ms and keeps the
 * peak (reset with bench_sampler_reset, e.g. at the start of a phase). */
typedef struct bench_sampler {
    pid_t pid;
    int interval_ms;
    atomic_int run;
    atomic_long peak_rss_kib;
    pthread_t thread;
    int started;
} bench_sampler_t;

int bench_sampler_start(bench_sampler_t *s, pid_t pid, int interval_ms);
void bench_sampler_reset(bench_sampler_t *s);
long bench_sampler_peak_kib(const bench_sampler_t *s);
void bench_sampler_stop(bench_sampler_t *s);

/* ------------------------------------------------------------------ latency */

/* Latency samples in nanoseconds, kept whole (a bench records at most
 * `capacity`; further samples are counted in `dropped`). Not thread-safe:
 * one histogram per thread, merged with bench_hist_merge. */
typedef struct bench_hist {
    int64_t *ns;
    size_t n, capacity;
    uint64_t dropped;
    int sorted;
} bench_hist_t;

int bench_hist_init(bench_hist_t *h, size_t capacity);
void bench_hist_free(bench_hist_t *h);
void bench_hist_add(bench_hist_t *h, int64_t ns);
int bench_hist_merge(bench_hist_t *into, const bench_hist_t *from);
/* The q-quantile (0 < q <= 1) in microseconds (nearest rank); -1 when empty. */
double bench_hist_quantile_us(bench_hist_t *h, double q);
/* Write "latency_us fraction" lines (at most max_points, evenly spaced in
 * rank, always including the last) for gnuplot. 0 or -1. */
int bench_hist_write_cdf(bench_hist_t *h, const char *path, size_t max_points);

/* What one paced run's latencies came to, in microseconds. */
typedef struct bench_latency {
    double p50_us, p99_us, p999_us, max_us;
    uint64_t samples;
} bench_latency_t;

/* Merge the n histograms (each left as it is) into p50 / p99 / p99.9 / max
 * in *out; when there are samples, write their CDF (at most cdf_points) to
 * cdf_<name>_<rate>.dat in the folder of json_path (a failure is said on
 * stderr). Returns 0, or -1 when memory ran out (what fit is counted). */
int bench_latency_summarize(const bench_hist_t *const *hists, size_t n, const char *json_path,
                            const char *name, unsigned rate, size_t cdf_points,
                            bench_latency_t *out);

/* The table row "latency at <rate>/s": the quantiles and the samples, with
 * "; <more>" inside the parentheses when more is not NULL; "not run" or
 * "no samples" when there are none. */
void bench_print_latency(unsigned rate, const bench_latency_t *lat, int ran, const char *more);

/* ------------------------------------------------------------------ JSON */

/* A JSON string with escapes. */
void bench_json_string(FILE *f, const char *s);

/* Open json_path for writing, after making its folder (its parent must
 * exist). NULL on failure, said on stderr. */
FILE *bench_json_open(const char *json_path);

/* Top-level lines "lat_<rate>_p50_us", _p99_us, _p999_us, _max_us (null
 * without samples), "lat_<rate>_ran" and "lat_<rate>_samples", each
 * followed by a comma: run.sh reads these keys. */
void bench_json_latency(FILE *f, unsigned rate, const bench_latency_t *lat, int ran);

/* The JSON lines "<prefix>_rss_kib", _hwm_kib, _anon_kib, _file_kib,
 * _shmem_kib of m, those named by `fields` (BENCH_MEM_ bits), in that order,
 * each followed by a comma. */
enum {
    BENCH_MEM_RSS = 1,
    BENCH_MEM_HWM = 2,
    BENCH_MEM_ANON = 4,
    BENCH_MEM_FILE = 8,
    BENCH_MEM_SHMEM = 16,
    BENCH_MEM_ALL = 31
};
void bench_json_mem(FILE *f, const char *prefix, const bench_mem_t *m, unsigned fields);

#endif
