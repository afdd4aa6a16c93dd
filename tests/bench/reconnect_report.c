/*
 * reconnect_report.c — what bench_reconnect says about a run: the table on
 * stdout, the JSON file run.sh reads, and the criteria both state (final
 * VmRSS within the margin, growth the session high-water mark explains,
 * every connection's expected outcome, service after the storm). Reads the
 * run's state only; the JSON writer returns -1 when the file fails.
 */
#include "reconnect_report.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>

/* What the broker holds, by design, per session until it expires: a
 * 448-byte session_t, its routing-id copy and hash slots at 25-50 % load,
 * about 0.6 KiB (0.7-0.95 KiB measured, the audit rows' page cache
 * included); freed sessions' pages stay with malloc for reuse, so their
 * high-water mark stays in VmRSS. */
#define RECONNECT_SESSION_ALLOWANCE_BYTES 1024
#define RECONNECT_MIN_SESSIONS_PER_RATIO 100 /* fewer: bytes per session mean nothing */

/* A count of the broker's open fds, or "n/a" (text) / null (JSON) when it
 * could not be read: schakeld is not dumpable, so only root reads its
 * /proc/PID/fd. */
static const char *reconnect_fds_text(int fds, char *out, size_t len)
{
    if (fds < 0)
        snprintf(out, len, "n/a");
    else
        snprintf(out, len, "%d", fds);
    return out;
}

static const char *reconnect_fds_json(int fds, char *out, size_t len)
{
    return fds < 0 ? "null" : reconnect_fds_text(fds, out, len);
}

/* "valid,invalid,raw" or the subset chosen. */
static const char *reconnect_kinds_text(unsigned kinds)
{
    static const char *const texts[KIND_ALL + 1] = {
        "",    "valid",     "invalid",     "valid,invalid",
        "raw", "valid,raw", "invalid,raw", "valid,invalid,raw"};
    return texts[kinds & KIND_ALL];
}

static unsigned reconnect_kinds_count(unsigned kinds)
{
    return (unsigned)((kinds & KIND_VALID) != 0) + ((kinds & KIND_INVALID) != 0) +
           ((kinds & KIND_RAW) != 0);
}

/* The names of the raw DEALER kinds, as the JSON keys carry them. */
const char *reconnect_report_raw_name(enum raw_kind kind)
{
    static const char *const names[RAW_KINDS] = {"handshake_then_silent", "null_mechanism",
                                                 "tcp_then_close"};
    return names[kind];
}

/* The most sessions the broker can have held at once: registered
 * connections whose last frames fall within one expiry period (timeout
 * plus the housekeeping second), and never more than the cap allows
 * (at the cap the broker drops a quiet session to make room). The notes
 * are in time order. */
static size_t reconnect_peak_sessions(const bench_t *b)
{
    size_t cap = (size_t)b->opt.principals * b->opt.max_connections;
    size_t peak = 0, from = 0;
    for (size_t i = 0; i < b->n_session_ms; i++) {
        while (b->session_ms[i] - b->session_ms[from] >= SCHAKEL_SESSION_TIMEOUT_MS + 1000)
            from++;
        if (i - from + 1 > peak)
            peak = i - from + 1;
    }
    return peak < cap ? peak : cap;
}

int reconnect_report_wrong_outcomes(const storm_counts_t *c)
{
    return c->valid_failed + c->too_many + c->invalid_wrong + c->invalid_admitted + c->raw_failed >
           0;
}

static int reconnect_rss_met(const bench_t *b)
{
    return b->completed && b->final.mem.rss_kib > 0 &&
           b->final.mem.rss_kib <= b->baseline.rss_kib + (long)b->opt.margin_mib * 1024;
}

/* Growth the margin and the session high-water mark explain (KiB). */
static long reconnect_explained_kib(const bench_t *b)
{
    return (long)b->opt.margin_mib * 1024 +
           (long)(reconnect_peak_sessions(b) * RECONNECT_SESSION_ALLOWANCE_BYTES / 1024);
}

static int reconnect_bounded_met(const bench_t *b)
{
    return b->completed && b->final.mem.rss_kib > 0 &&
           b->final.mem.rss_kib - b->baseline.rss_kib <= reconnect_explained_kib(b);
}

/* KiB per 1000 cycles: the least-squares slope of VmRSS over the samples
 * taken at least `from_s` seconds into the storm; NAN with fewer than 3. */
static double reconnect_slope(const bench_t *b, double from_s, double to_s)
{
    double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (size_t i = 0; i < b->n_samples; i++) {
        const mem_sample_t *s = &b->samples[i];
        if (s->at_s < from_s || s->at_s > to_s)
            continue;
        double x = (double)s->cycles / 1000.0, y = (double)s->mem.rss_kib;
        n++;
        sx += x;
        sy += y;
        sxx += x * x;
        sxy += x * y;
    }
    double den = n * sxx - sx * sx;
    if (n < 3 || den <= 0)
        return NAN;
    return (n * sxy - sx * sy) / den;
}

static double reconnect_growth_per_1000(const bench_t *b)
{
    if (b->storm.cycles == 0 || b->final.mem.rss_kib == 0)
        return 0;
    return (double)(b->final.mem.rss_kib - b->baseline.rss_kib) * 1000.0 / (double)b->storm.cycles;
}

static void reconnect_print_counts(const bench_t *b)
{
    const storm_counts_t *c = &b->storm;
    uint64_t connections = reconnect_kinds_count(b->opt.kinds) * c->cycles;
    printf("%-22s %" PRIu64 " cycles, %" PRIu64 " connections in %.1f s: %.1f cycles/s\n", "storm",
           c->cycles, connections, b->storm_s, b->storm_s > 0 ? (double)c->cycles / b->storm_s : 0);
    printf("%-22s %" PRIu64 " served (%" PRIu64 " whoami, %" PRIu64 " publish), %" PRIu64
           " failed, %" PRIu64 " TOO_MANY_CONNECTIONS\n",
           "registered keys", c->valid_ok, c->whoami_ok, c->publish_ok, c->valid_failed,
           c->too_many);
    printf("%-22s %" PRIu64 " refused at the handshake (AUTH), %" PRIu64 " otherwise, %" PRIu64
           " admitted\n",
           "unregistered keys", c->invalid_auth, c->invalid_wrong, c->invalid_admitted);
    printf("%-22s %" PRIu64 " handshake then silent, %" PRIu64 " NULL mechanism, %" PRIu64
           " closed after TCP connect, %" PRIu64 " failed\n",
           "raw DEALERs", c->raw_done[RAW_SILENT], c->raw_done[RAW_NULL], c->raw_done[RAW_ABORT],
           c->raw_failed);
}

static void reconnect_print_memory(const bench_t *b)
{
    double early = reconnect_slope(b, 0, SCHAKEL_SESSION_TIMEOUT_MS / 1000.0);
    double slope = reconnect_slope(b, RECONNECT_PLATEAU_MS / 1000.0, INFINITY);
    printf("%-22s baseline %.1f MiB, peak %.1f MiB, settled %.1f MiB, final %.1f MiB%s (VmHWM "
           "%.1f MiB)\n",
           "broker VmRSS", bench_mib(b->baseline.rss_kib), bench_mib(atomic_load(&b->peak_rss_kib)),
           bench_mib(b->settled.mem.rss_kib), bench_mib(b->final.mem.rss_kib),
           b->final_after_expiry ? " after session expiry" : "", bench_mib(b->final.mem.hwm_kib));
    printf("%-22s anon %.1f -> %.1f MiB, file %.1f -> %.1f MiB, shmem %.1f -> %.1f MiB\n",
           "broker RSS parts", bench_mib(b->baseline.anon_kib), bench_mib(b->final.mem.anon_kib),
           bench_mib(b->baseline.file_kib), bench_mib(b->final.mem.file_kib),
           bench_mib(b->baseline.shmem_kib), bench_mib(b->final.mem.shmem_kib));
    long growth_kib = b->final.mem.rss_kib - b->baseline.rss_kib;
    size_t peak_sessions = reconnect_peak_sessions(b);
    printf("%-22s %+ld KiB in all, %+.1f KiB per 1000 cycles; at most %zu sessions at once",
           "growth", growth_kib, reconnect_growth_per_1000(b), peak_sessions);
    if (peak_sessions >= RECONNECT_MIN_SESSIONS_PER_RATIO)
        printf(", %+.0f bytes per such session",
               (double)growth_kib * 1024.0 / (double)peak_sessions);
    printf("\n");
    /* Before any storm session can expire, and once they expire as fast as
     * they come: the difference is what the session table holds. */
    char early_text[32] = "n/a", slope_text[32] = "n/a (a shorter storm)";
    if (!isnan(early))
        snprintf(early_text, sizeof early_text, "%+.1f", early);
    if (!isnan(slope))
        snprintf(slope_text, sizeof slope_text, "%+.1f (steady)", slope);
    printf("%-22s first %d s: %s, after %d s: %s\n", "KiB per 1000 cycles",
           SCHAKEL_SESSION_TIMEOUT_MS / 1000, early_text, RECONNECT_PLATEAU_MS / 1000, slope_text);
    char fds_before[16], fds_after[16];
    printf("%-22s fds %s -> %s, threads %d -> %d, log %.1f MiB\n", "broker",
           reconnect_fds_text(b->baseline.fds, fds_before, sizeof fds_before),
           reconnect_fds_text(b->final.mem.fds, fds_after, sizeof fds_after), b->baseline.threads,
           b->final.mem.threads, (double)b->log_bytes / 1048576.0);
    printf("%-22s VmRSS %.1f -> %.1f MiB\n", "bench process", bench_mib(b->client_rss_baseline_kib),
           bench_mib(b->client_rss_final_kib));
}

void reconnect_report_print_table(const bench_t *b)
{
    const char *rule = BENCH_RULE;
    const service_check_t *k = &b->check;
    printf("\nSchakel reconnect bench: %" PRIu64 " cycles (%s) after %u warm-up cycles, %u "
           "principals, publish every %u, max %u connections per principal\n%s\n",
           b->opt.count, reconnect_kinds_text(b->opt.kinds), b->opt.warmup, b->opt.principals,
           b->opt.publish_every, b->opt.max_connections, rule);
    reconnect_print_counts(b);
    reconnect_print_memory(b);
    printf("%-22s %s; %" PRIu64 " of %" PRIu64 " accepted publishes delivered once, backlog "
           "after %" PRId64 "\n",
           "service after",
           k->final_accepted ? (k->final_delivered ? "publish accepted and delivered"
                                                   : "publish accepted, not delivered")
                             : "no publish accepted",
           k->distinct, k->expected, k->backlog_after);
    printf("%s\n%-10s %-9s %-10s %-10s %-10s %-8s %-6s\n", rule, "cycles", "at s", "RSS MiB",
           "anon MiB", "HWM MiB", "threads", "fds");
    for (size_t i = 0; i < b->n_samples; i++) {
        const mem_sample_t *s = &b->samples[i];
        char fds[16];
        printf("%-10" PRIu64 " %-9.1f %-10.2f %-10.2f %-10.2f %-8d %-6s\n", s->cycles, s->at_s,
               bench_mib(s->mem.rss_kib), bench_mib(s->mem.anon_kib), bench_mib(s->mem.hwm_kib),
               s->mem.threads, reconnect_fds_text(s->mem.fds, fds, sizeof fds));
    }
    int wrong =
        reconnect_report_wrong_outcomes(&b->storm) || reconnect_report_wrong_outcomes(&b->warm);
    char target[32];
    snprintf(target, sizeof target, "<= %.1f", bench_mib(b->baseline.rss_kib) + b->opt.margin_mib);
    printf("%s\n%-44s %-12s %-12s %s\n", rule, "criterion", "value", "target", "result");
    printf("%-44s %-12.1f %-12s %s\n", "broker final VmRSS (MiB)", bench_mib(b->final.mem.rss_kib),
           target, reconnect_rss_met(b) ? "met" : "not met");
    snprintf(target, sizeof target, "<= %.1f", bench_mib(reconnect_explained_kib(b)));
    printf("%-44s %-12.1f %-12s %s\n", "growth beyond margin + 1 KiB/session (MiB)",
           bench_mib(b->final.mem.rss_kib - b->baseline.rss_kib), target,
           reconnect_bounded_met(b) ? "met" : "not met");
    printf("%-44s %-12s %-12s %s\n", "every connection had the expected outcome",
           wrong ? "no" : "yes", "yes", !wrong && b->completed ? "met" : "not met");
    printf("%-44s %-12s %-12s %s\n", "broker serves after the storm", k->ok ? "yes" : "no", "yes",
           k->ok ? "met" : "not met");
    if (b->first_wrong[0] != '\0')
        printf("first unexpected outcome: %s\n", b->first_wrong);
    if (b->env.problem[0] != '\0')
        printf("problem: %s\n", b->env.problem);
    printf("%s\n", rule);
}

static void reconnect_json_number(FILE *f, const char *name, double v)
{
    if (!isnan(v))
        fprintf(f, "  \"%s\": %.3f,\n", name, v);
    else
        fprintf(f, "  \"%s\": null,\n", name);
}

static void reconnect_json_counts(FILE *f, const bench_t *b)
{
    const storm_counts_t *c = &b->storm;
    fprintf(f, "  \"cycles_done\": %" PRIu64 ",\n  \"connections\": %" PRIu64 ",\n", c->cycles,
            reconnect_kinds_count(b->opt.kinds) * c->cycles);
    fprintf(f, "  \"storm_s\": %.3f,\n  \"cycles_per_s\": %.1f,\n", b->storm_s,
            b->storm_s > 0 ? (double)c->cycles / b->storm_s : 0);
    fprintf(f, "  \"valid_served\": %" PRIu64 ",\n  \"valid_whoami\": %" PRIu64 ",\n", c->valid_ok,
            c->whoami_ok);
    fprintf(f, "  \"valid_publish\": %" PRIu64 ",\n  \"valid_failed\": %" PRIu64 ",\n",
            c->publish_ok, c->valid_failed);
    fprintf(f, "  \"valid_too_many_connections\": %" PRIu64 ",\n", c->too_many);
    fprintf(f, "  \"invalid_refused_auth\": %" PRIu64 ",\n  \"invalid_other\": %" PRIu64 ",\n",
            c->invalid_auth, c->invalid_wrong);
    fprintf(f, "  \"invalid_admitted\": %" PRIu64 ",\n", c->invalid_admitted);
    for (int k = 0; k < RAW_KINDS; k++)
        fprintf(f, "  \"raw_%s\": %" PRIu64 ",\n", reconnect_report_raw_name((enum raw_kind)k),
                c->raw_done[k]);
    fprintf(f, "  \"raw_failed\": %" PRIu64 ",\n", c->raw_failed);
    fprintf(f, "  \"warmup_wrong_outcomes\": %s,\n",
            reconnect_report_wrong_outcomes(&b->warm) ? "true" : "false");
}

static void reconnect_json_memory(FILE *f, const bench_t *b)
{
    const bench_mem_t *base = &b->baseline, *fin = &b->final.mem;
    bench_json_mem(f, "baseline", base, BENCH_MEM_ALL & ~BENCH_MEM_SHMEM);
    fprintf(f, "  \"peak_rss_kib\": %ld,\n", atomic_load(&b->peak_rss_kib));
    fprintf(f, "  \"settled_rss_kib\": %ld,\n  \"settled\": %s,\n  \"settle_ms\": %.0f,\n",
            b->settled.mem.rss_kib, b->settled.settled ? "true" : "false", b->settled.waited_ms);
    fprintf(f, "  \"final_after_session_expiry\": %s,\n", b->final_after_expiry ? "true" : "false");
    bench_json_mem(f, "final", fin, BENCH_MEM_ALL);
    fprintf(f, "  \"growth_kib\": %ld,\n", fin->rss_kib - base->rss_kib);
    size_t peak_sessions = reconnect_peak_sessions(b);
    fprintf(f, "  \"peak_sessions\": %zu,\n", peak_sessions);
    reconnect_json_number(f, "growth_bytes_per_peak_session",
                          peak_sessions >= RECONNECT_MIN_SESSIONS_PER_RATIO
                              ? (double)(fin->rss_kib - base->rss_kib) * 1024.0 /
                                    (double)peak_sessions
                              : NAN);
    reconnect_json_number(f, "growth_kib_per_1000_cycles", reconnect_growth_per_1000(b));
    reconnect_json_number(f, "steady_slope_kib_per_1000_cycles",
                          reconnect_slope(b, RECONNECT_PLATEAU_MS / 1000.0, INFINITY));
    reconnect_json_number(f, "early_slope_kib_per_1000_cycles",
                          reconnect_slope(b, 0, SCHAKEL_SESSION_TIMEOUT_MS / 1000.0));
    reconnect_json_number(f, "storm_slope_kib_per_1000_cycles", reconnect_slope(b, 0, INFINITY));
    fprintf(f, "  \"threshold_kib\": %ld,\n", base->rss_kib + (long)b->opt.margin_mib * 1024);
    char fds_before[16], fds_after[16];
    fprintf(f, "  \"baseline_fds\": %s,\n  \"final_fds\": %s,\n",
            reconnect_fds_json(base->fds, fds_before, sizeof fds_before),
            reconnect_fds_json(fin->fds, fds_after, sizeof fds_after));
    fprintf(f, "  \"baseline_threads\": %d,\n  \"final_threads\": %d,\n", base->threads,
            fin->threads);
    fprintf(f, "  \"broker_log_bytes\": %lld,\n", b->log_bytes);
    fprintf(f, "  \"bench_rss_baseline_kib\": %ld,\n  \"bench_rss_final_kib\": %ld,\n",
            b->client_rss_baseline_kib, b->client_rss_final_kib);
}

static void reconnect_json_scalars(FILE *f, const bench_t *b)
{
    const service_check_t *k = &b->check;
    fprintf(f, "  \"bench\": \"reconnect\",\n  \"completed\": %s,\n",
            b->completed ? "true" : "false");
    fprintf(f, "  \"count\": %" PRIu64 ",\n  \"warmup_cycles\": %u,\n", b->opt.count,
            b->opt.warmup);
    fprintf(f, "  \"principals\": %u,\n  \"publish_every\": %u,\n", b->opt.principals,
            b->opt.publish_every);
    fprintf(f, "  \"max_connections_per_principal\": %u,\n", b->opt.max_connections);
    fprintf(f, "  \"kinds\": \"%s\",\n", reconnect_kinds_text(b->opt.kinds));
    fprintf(f, "  \"margin_mib\": %u,\n  \"deadline_s\": %.0f,\n", b->opt.margin_mib,
            b->opt.deadline_s);
    fprintf(f, "  \"broker_log_level\": ");
    bench_json_string(f, b->opt.log_level);
    fprintf(f, ",\n");
    reconnect_json_counts(f, b);
    reconnect_json_memory(f, b);
    fprintf(f, "  \"service_ok\": %s,\n  \"expected_deliveries\": %" PRIu64 ",\n",
            k->ok ? "true" : "false", k->expected);
    fprintf(f, "  \"delivered_distinct\": %" PRIu64 ",\n  \"backlog_after\": %" PRId64 ",\n",
            k->distinct, k->backlog_after);
    fprintf(f, "  \"broker_exit\": %d,\n  \"first_wrong\": ", b->broker_exit);
    bench_json_string(f, b->first_wrong);
    fprintf(f, ",\n  \"problem\": ");
    bench_json_string(f, b->env.problem);
    fprintf(f, ",\n");
}

static void reconnect_json_tail(FILE *f, const bench_t *b)
{
    int wrong =
        reconnect_report_wrong_outcomes(&b->storm) || reconnect_report_wrong_outcomes(&b->warm);
    fprintf(f, "  \"criteria\": {\n");
    fprintf(f,
            "    \"final_rss_within_margin\": {\"value_kib\": %ld, \"limit_kib\": %ld, \"met\": "
            "%s},\n",
            b->final.mem.rss_kib, b->baseline.rss_kib + (long)b->opt.margin_mib * 1024,
            reconnect_rss_met(b) ? "true" : "false");
    fprintf(f,
            "    \"growth_within_margin_and_sessions\": {\"value_kib\": %ld, \"limit_kib\": %ld, "
            "\"met\": %s},\n",
            b->final.mem.rss_kib - b->baseline.rss_kib, reconnect_explained_kib(b),
            reconnect_bounded_met(b) ? "true" : "false");
    fprintf(f, "    \"expected_outcomes\": {\"met\": %s},\n",
            !wrong && b->completed ? "true" : "false");
    fprintf(f, "    \"serves_after_storm\": {\"met\": %s}\n", b->check.ok ? "true" : "false");
    fprintf(f, "  },\n  \"samples\": [\n");
    for (size_t i = 0; i < b->n_samples; i++) {
        const mem_sample_t *s = &b->samples[i];
        char fds[16];
        fprintf(f,
                "    {\"cycles\": %" PRIu64 ", \"at_s\": %.2f, \"rss_kib\": %ld, \"hwm_kib\": "
                "%ld, \"anon_kib\": %ld, \"file_kib\": %ld, \"threads\": %d, \"fds\": %s}%s\n",
                s->cycles, s->at_s, s->mem.rss_kib, s->mem.hwm_kib, s->mem.anon_kib,
                s->mem.file_kib, s->mem.threads, reconnect_fds_json(s->mem.fds, fds, sizeof fds),
                i + 1 < b->n_samples ? "," : "");
    }
    fprintf(f, "  ]\n");
}

int reconnect_report_write_json(const bench_t *b)
{
    FILE *f = bench_json_open(b->opt.json_path);
    if (f == NULL)
        return -1;
    fprintf(f, "{\n");
    reconnect_json_scalars(f, b);
    reconnect_json_tail(f, b);
    fprintf(f, "}\n");
    return fclose(f);
}
