/*
 * import_progress.c — progress of `schakel import` on stderr: on a
 * terminal one line redrawn at most ten times a second (a bar, lines
 * done/total, percent, rate, ETA); otherwise a plain line every few
 * seconds and one at the end, for logs. Writes nothing else; never fails.
 */
#include "import.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define IMPORT_BAR_INTERVAL_S 0.1
#define IMPORT_PLAIN_INTERVAL_S 5.0
#define IMPORT_BAR_WIDTH 24

enum { IMPORT_PROGRESS_NONE, IMPORT_PROGRESS_BAR, IMPORT_PROGRESS_PLAIN };

static double import_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void import_progress_init(import_progress_t *progress, int quiet, uint64_t total)
{
    memset(progress, 0, sizeof *progress);
    progress->mode = quiet                   ? IMPORT_PROGRESS_NONE
                     : isatty(STDERR_FILENO) ? IMPORT_PROGRESS_BAR
                                             : IMPORT_PROGRESS_PLAIN;
    progress->total = total;
    progress->begin_s = import_now_s();
    progress->start_s = progress->begin_s;
    progress->last_s = progress->begin_s;
}

void import_progress_mark_start(import_progress_t *progress)
{
    progress->start_done = progress->done;
    progress->start_s = import_now_s();
}

/* Lines per second of this run, 0 before there is anything to say. */
static double import_rate(const import_progress_t *progress, double now)
{
    double elapsed = now - progress->start_s;
    uint64_t lines = progress->done - progress->start_done;
    return elapsed > 0.0 && lines > 0 ? (double)lines / elapsed : 0.0;
}

static unsigned import_percent(const import_progress_t *progress)
{
    if (progress->total == 0)
        return 100;
    uint64_t done = progress->done > progress->total ? progress->total : progress->done;
    return (unsigned)(done * 100 / progress->total);
}

/* "1:02:03" or "2:03", or "--:--" without a rate. */
static void import_eta(const import_progress_t *progress, double rate, char *out, size_t len)
{
    if (rate <= 0.0 || progress->done >= progress->total) {
        snprintf(out, len, progress->done >= progress->total ? "0:00" : "--:--");
        return;
    }
    unsigned long s = (unsigned long)((double)(progress->total - progress->done) / rate + 0.5);
    if (s >= 3600)
        snprintf(out, len, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60, s % 60);
    else
        snprintf(out, len, "%lu:%02lu", s / 60, s % 60);
}

static void import_draw_bar(import_progress_t *progress, double now)
{
    char bar[IMPORT_BAR_WIDTH + 1], eta[32];
    unsigned percent = import_percent(progress);
    unsigned filled = percent * IMPORT_BAR_WIDTH / 100;
    for (unsigned i = 0; i < IMPORT_BAR_WIDTH; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[IMPORT_BAR_WIDTH] = '\0';
    double rate = import_rate(progress, now);
    import_eta(progress, rate, eta, sizeof eta);
    fprintf(stderr, "\r\033[K[%s] %llu/%llu %3u%% %.0f lines/s ETA %s", bar,
            (unsigned long long)progress->done, (unsigned long long)progress->total, percent, rate,
            eta);
    fflush(stderr);
    progress->bar_drawn = 1;
}

static void import_draw_plain(const import_progress_t *progress, double now, int final)
{
    char eta[32];
    double rate = import_rate(progress, now);
    import_eta(progress, rate, eta, sizeof eta);
    if (final && progress->start_done > 0)
        fprintf(stderr,
                "schakel: import: %llu/%llu lines (%u%%; %llu done before) in %.1f s, %.0f "
                "lines/s\n",
                (unsigned long long)progress->done, (unsigned long long)progress->total,
                import_percent(progress), (unsigned long long)progress->start_done,
                now - progress->begin_s, rate);
    else if (final)
        fprintf(stderr, "schakel: import: %llu/%llu lines (%u%%) in %.1f s, %.0f lines/s\n",
                (unsigned long long)progress->done, (unsigned long long)progress->total,
                import_percent(progress), now - progress->begin_s, rate);
    else
        fprintf(stderr, "schakel: import: %llu/%llu lines (%u%%), %.0f lines/s, ETA %s\n",
                (unsigned long long)progress->done, (unsigned long long)progress->total,
                import_percent(progress), rate, eta);
}

void import_progress_update(import_progress_t *progress, uint64_t done)
{
    progress->done = done;
    if (progress->mode == IMPORT_PROGRESS_NONE)
        return;
    double now = import_now_s();
    if (progress->mode == IMPORT_PROGRESS_BAR && now - progress->last_s >= IMPORT_BAR_INTERVAL_S) {
        import_draw_bar(progress, now);
        progress->last_s = now;
    } else if (progress->mode == IMPORT_PROGRESS_PLAIN &&
               now - progress->last_s >= IMPORT_PLAIN_INTERVAL_S) {
        import_draw_plain(progress, now, 0);
        progress->last_s = now;
    }
}

void import_progress_clear(import_progress_t *progress)
{
    if (progress->mode == IMPORT_PROGRESS_BAR && progress->bar_drawn) {
        fputs("\r\033[K", stderr);
        progress->bar_drawn = 0;
    }
}

void import_progress_finish(import_progress_t *progress)
{
    double now = import_now_s();
    if (progress->mode == IMPORT_PROGRESS_BAR) {
        import_draw_bar(progress, now);
        fputc('\n', stderr);
        progress->bar_drawn = 0;
    } else if (progress->mode == IMPORT_PROGRESS_PLAIN) {
        import_draw_plain(progress, now, 1);
    }
}
