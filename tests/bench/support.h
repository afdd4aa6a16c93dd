/*
 * support.h — what every bench shares: clocks, a temporary folder with keys,
 * a policy and a config, one schakeld started from it (and ended by its PID
 * only), /proc readings of a process, a peak-RSS sampler, latency
 * histograms with quantiles and CDF files, and small JSON writers.
 * Linked into every bench_X by `make bench` (tests/bench/support.c).
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

/* ------------------------------------------------------------------ environment */

/* One benchmark's folder and broker. Zero-initialise, then bench_env_create. */
typedef struct bench_env {
    char dir[64]; /* /tmp/schakel-bench-XXXXXX */
    char config_path[BENCH_PATH_MAX], policy_path[BENCH_PATH_MAX], store_path[BENCH_PATH_MAX],
        log_path[BENCH_PATH_MAX], broker_pub[BENCH_PATH_MAX];
    pid_t broker_pid; /* 0 when no broker runs */
    int broker_pidfd; /* -1 when none */
    char endpoint[128];  /* from the READY line: tcp://127.0.0.1:PORT */
    double ready_s;      /* the last start: fork to READY line, seconds */
    char problem[512];   /* the first thing that went wrong, "" if nothing */
} bench_env_t;

/* Make the folder under /tmp, a key pair for "broker" and for each of the n
 * principals (files keys/<principal with '/' as '-'>.key/.pub), a store key
 * (keys/store.key), policy.yaml with `policy_text` verbatim (it names key
 * files as keys/<base>.pub, see bench_key_base), and schakeld.yaml
 * (listen tcp://127.0.0.1:*, key_file, store_key_file, policy, store) with
 * `config_extra` (NULL or YAML lines, e.g. limits) appended. Returns 0, or
 * -1 with env->problem set. */
int bench_env_create(bench_env_t *env, const char *const *principals, size_t n,
                     const char *policy_text, const char *config_extra);

/* "<dir>/keys/<principal with '/' as '-'>" (add ".key" or ".pub"). */
void bench_key_base(const bench_env_t *env, const char *principal, char *out, size_t len);

/* Remove the folder (unless keep, then print its name on stderr). Stops a
 * broker that still runs first. */
void bench_env_remove(bench_env_t *env, int keep);

/* The schakeld to run: $SCHAKELD, else $BUILD/schakeld, else build/schakeld. */
const char *bench_schakeld_path(void);

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
int bench_connect(bench_env_t *env, const char *principal, schakel_client_t **out,
                  int timeout_ms);

/* Record the first problem (printf-style); later ones are dropped. Thread-safe. */
void bench_problem(bench_env_t *env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Size of a file in bytes, -1 if it does not exist. */
long long bench_file_size(const char *path);

/* Write a whole file with `mode`. Returns 0 or -1 (errno set). */
int bench_write_file(const char *path, const char *text, unsigned mode);

/* ------------------------------------------------------------------ /proc */

typedef struct bench_mem {
    long rss_kib, hwm_kib, anon_kib, file_kib, shmem_kib;
    int threads;
} bench_mem_t;

/* VmRSS, VmHWM, RssAnon, RssFile, RssShmem of a process, in KiB, and its
 * Threads. pid 0 = self. 0 or -1. */
int bench_read_mem(pid_t pid, bench_mem_t *m);

/* Open file descriptors of a process (entries of /proc/<pid>/fd), -1 on
 * error. pid 0 = self. */
int bench_count_fds(pid_t pid);

/* User + system CPU seconds of a process so far, -1 on error. pid 0 = self. */
double bench_read_cpu_s(pid_t pid);

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

/* ------------------------------------------------------------------ JSON */

/* A JSON string with escapes. */
void bench_json_string(FILE *f, const char *s);

#endif
