/*
 * support_measure.c — what a bench measures and how it reports it (see
 * support.h): /proc readings of a process, the peak-RSS sampler, latency
 * histograms with quantiles, CDF files and summaries, and the JSON writers.
 * Needs no broker and no folder; trusts /proc as the kernel writes it;
 * reports failures as -1 (a file it cannot write is also said on stderr).
 */
/* program_invocation_short_name */
#define _GNU_SOURCE

#include "support.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ /proc */

int bench_read_mem(pid_t pid, bench_mem_t *m)
{
    char path[64], line[256];
    if (pid > 0)
        snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    else
        snprintf(path, sizeof path, "/proc/self/status");
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    memset(m, 0, sizeof *m);
    while (fgets(line, sizeof line, f) != NULL) {
        long v = 0;
        if (sscanf(line, "VmRSS: %ld", &v) == 1)
            m->rss_kib = v;
        else if (sscanf(line, "VmHWM: %ld", &v) == 1)
            m->hwm_kib = v;
        else if (sscanf(line, "RssAnon: %ld", &v) == 1)
            m->anon_kib = v;
        else if (sscanf(line, "RssFile: %ld", &v) == 1)
            m->file_kib = v;
        else if (sscanf(line, "RssShmem: %ld", &v) == 1)
            m->shmem_kib = v;
        else if (sscanf(line, "Threads: %ld", &v) == 1)
            m->threads = (int)v;
    }
    fclose(f);
    m->fds = -1;
    return m->rss_kib > 0 ? 0 : -1;
}

int bench_read_proc(pid_t pid, bench_mem_t *m)
{
    if (bench_read_mem(pid, m) != 0)
        return -1;
    m->fds = pid > 0 ? bench_count_fds(pid) : -1;
    return 0;
}

int bench_count_fds(pid_t pid)
{
    char path[64];
    if (pid > 0)
        snprintf(path, sizeof path, "/proc/%ld/fd", (long)pid);
    else
        snprintf(path, sizeof path, "/proc/self/fd");
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    int n = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return pid > 0 ? n : n - 1; /* for ourselves, not the directory fd just opened */
}

double bench_stat_cpu_s(const char *path)
{
    char buf[1024];
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long long utime = 0, stime = 0;
    if (p == NULL || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                            &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

double bench_read_cpu_s(pid_t pid)
{
    char path[64];
    if (pid > 0)
        snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    else
        snprintf(path, sizeof path, "/proc/self/stat");
    return bench_stat_cpu_s(path);
}

/* ------------------------------------------------------------------ sampler */

void bench_note_peak(atomic_long *peak, long value)
{
    long seen = atomic_load(peak);
    while (value > seen && !atomic_compare_exchange_weak(peak, &seen, value))
        ;
}

static void *bench_sampler_run(void *arg)
{
    bench_sampler_t *s = arg;
    while (atomic_load(&s->run)) {
        bench_mem_t m;
        if (bench_read_mem(s->pid, &m) == 0)
            bench_note_peak(&s->peak_rss_kib, m.rss_kib);
        struct timespec pause = {s->interval_ms / 1000, (long)(s->interval_ms % 1000) * 1000000L};
        nanosleep(&pause, NULL); /* a sampling interval, not a synchronisation */
    }
    return NULL;
}

int bench_sampler_start(bench_sampler_t *s, pid_t pid, int interval_ms)
{
    s->pid = pid;
    s->interval_ms = interval_ms > 0 ? interval_ms : 1;
    atomic_store(&s->run, 1);
    atomic_store(&s->peak_rss_kib, 0);
    bench_mem_t m;
    if (bench_read_mem(pid, &m) == 0)
        bench_note_peak(&s->peak_rss_kib, m.rss_kib);
    s->started = pthread_create(&s->thread, NULL, bench_sampler_run, s) == 0;
    return s->started ? 0 : -1;
}

void bench_sampler_reset(bench_sampler_t *s)
{
    bench_mem_t m;
    atomic_store(&s->peak_rss_kib, 0);
    if (bench_read_mem(s->pid, &m) == 0)
        bench_note_peak(&s->peak_rss_kib, m.rss_kib);
}

long bench_sampler_peak_kib(const bench_sampler_t *s)
{
    return atomic_load(&s->peak_rss_kib);
}

void bench_sampler_stop(bench_sampler_t *s)
{
    if (!s->started)
        return;
    atomic_store(&s->run, 0);
    pthread_join(s->thread, NULL);
    s->started = 0;
}

/* ------------------------------------------------------------------ latency */

int bench_hist_init(bench_hist_t *h, size_t capacity)
{
    memset(h, 0, sizeof *h);
    h->ns = malloc((capacity > 0 ? capacity : 1) * sizeof *h->ns);
    if (h->ns == NULL)
        return -1;
    h->capacity = capacity;
    return 0;
}

void bench_hist_free(bench_hist_t *h)
{
    free(h->ns);
    memset(h, 0, sizeof *h);
}

void bench_hist_add(bench_hist_t *h, int64_t ns)
{
    if (h->n >= h->capacity) {
        h->dropped++;
        return;
    }
    h->ns[h->n++] = ns;
    h->sorted = 0;
}

int bench_hist_merge(bench_hist_t *into, const bench_hist_t *from)
{
    size_t need = into->n + from->n;
    if (need > into->capacity) {
        int64_t *grown = realloc(into->ns, need * sizeof *grown);
        if (grown == NULL)
            return -1;
        into->ns = grown;
        into->capacity = need;
    }
    if (from->n > 0)
        memcpy(into->ns + into->n, from->ns, from->n * sizeof *from->ns);
    into->n = need;
    into->dropped += from->dropped;
    into->sorted = 0;
    return 0;
}

static int bench_compare_i64(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return a < b ? -1 : a > b;
}

static void bench_hist_sort(bench_hist_t *h)
{
    if (!h->sorted && h->n > 1)
        qsort(h->ns, h->n, sizeof *h->ns, bench_compare_i64);
    h->sorted = 1;
}

double bench_hist_quantile_us(bench_hist_t *h, double q)
{
    if (h->n == 0 || !(q > 0))
        return -1;
    bench_hist_sort(h);
    double rank = q * (double)h->n; /* nearest rank: the ceil(q n)-th smallest */
    size_t index = (size_t)rank;
    if ((double)index < rank)
        index++;
    if (index < 1)
        index = 1;
    if (index > h->n)
        index = h->n;
    return (double)h->ns[index - 1] / 1000.0;
}

int bench_hist_write_cdf(bench_hist_t *h, const char *path, size_t max_points)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    bench_hist_sort(h);
    size_t points = max_points < 2 ? 2 : max_points;
    if (points > h->n)
        points = h->n;
    fprintf(f, "# latency_us fraction (%zu samples)\n", h->n);
    size_t previous = SIZE_MAX;
    for (size_t i = 0; i < points; i++) {
        /* ranks 0 .. n-1 evenly spaced, the last one always included */
        size_t rank =
            points > 1 ? (size_t)((double)i * (double)(h->n - 1) / (double)(points - 1)) : h->n - 1;
        if (rank == previous)
            continue;
        previous = rank;
        fprintf(f, "%.3f %.6f\n", (double)h->ns[rank] / 1000.0, (double)(rank + 1) / (double)h->n);
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* "<folder of json_path>/<name>", or "./<name>" without a folder. */
static void bench_results_path(const char *json_path, const char *name, char *out, size_t len)
{
    const char *slash = strrchr(json_path, '/');
    if (slash == NULL)
        snprintf(out, len, "./%s", name);
    else
        snprintf(out, len, "%.*s/%s", (int)(slash - json_path), json_path, name);
}

int bench_latency_summarize(const bench_hist_t *const *hists, size_t n, const char *json_path,
                            const char *name, unsigned rate, size_t cdf_points,
                            bench_latency_t *out)
{
    bench_hist_t all;
    size_t total = 0;
    int rc = 0;
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < n; i++)
        total += hists[i]->n;
    if (bench_hist_init(&all, total) != 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (bench_hist_merge(&all, hists[i]) != 0)
            rc = -1;
    out->samples = all.n;
    out->p50_us = bench_hist_quantile_us(&all, 0.50);
    out->p99_us = bench_hist_quantile_us(&all, 0.99);
    out->p999_us = bench_hist_quantile_us(&all, 0.999);
    out->max_us = bench_hist_quantile_us(&all, 1.0);
    char file[64], path[PATH_MAX];
    snprintf(file, sizeof file, "cdf_%s_%u.dat", name, rate);
    bench_results_path(json_path, file, path, sizeof path);
    if (all.n > 0 && bench_hist_write_cdf(&all, path, cdf_points) != 0)
        fprintf(stderr, "%s: cannot write %s: %s\n", program_invocation_short_name, path,
                strerror(errno));
    bench_hist_free(&all);
    return rc;
}

void bench_print_latency(unsigned rate, const bench_latency_t *lat, int ran, const char *more)
{
    char label[32];
    snprintf(label, sizeof label, "latency at %u/s", rate);
    if (lat->samples == 0) {
        printf("%-24s %s\n", label, ran ? "no samples" : "not run");
        return;
    }
    printf("%-24s p50 %.0f us, p99 %.0f us, p99.9 %.0f us, max %.0f us (%" PRIu64 " samples%s%s)\n",
           label, lat->p50_us, lat->p99_us, lat->p999_us, lat->max_us, lat->samples,
           more != NULL ? "; " : "", more != NULL ? more : "");
}

/* ------------------------------------------------------------------ JSON */

void bench_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s != NULL && *s != '\0'; s++) {
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

FILE *bench_json_open(const char *json_path)
{
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", json_path);
    char *slash = strrchr(parent, '/');
    if (slash != NULL) {
        *slash = '\0';
        (void)mkdir(parent, 0755); /* the results folder; its parent must exist */
    }
    FILE *f = fopen(json_path, "w");
    if (f == NULL)
        fprintf(stderr, "%s: cannot write %s: %s\n", program_invocation_short_name, json_path,
                strerror(errno));
    return f;
}

void bench_json_latency(FILE *f, unsigned rate, const bench_latency_t *lat, int ran)
{
    static const char *const names[] = {"p50", "p99", "p999", "max"};
    const double us[] = {lat->p50_us, lat->p99_us, lat->p999_us, lat->max_us};
    for (size_t i = 0; i < 4; i++)
        if (lat->samples > 0)
            fprintf(f, "  \"lat_%u_%s_us\": %.1f,\n", rate, names[i], us[i]);
        else
            fprintf(f, "  \"lat_%u_%s_us\": null,\n", rate, names[i]);
    fprintf(f, "  \"lat_%u_ran\": %s,\n", rate, ran ? "true" : "false");
    fprintf(f, "  \"lat_%u_samples\": %" PRIu64 ",\n", rate, lat->samples);
}

void bench_json_mem(FILE *f, const char *prefix, const bench_mem_t *m, unsigned fields)
{
    static const char *const names[] = {"rss", "hwm", "anon", "file", "shmem"};
    const long kib[] = {m->rss_kib, m->hwm_kib, m->anon_kib, m->file_kib, m->shmem_kib};
    for (unsigned i = 0; i < 5; i++)
        if (fields & (1u << i))
            fprintf(f, "  \"%s_%s_kib\": %ld,\n", prefix, names[i], kib[i]);
}
