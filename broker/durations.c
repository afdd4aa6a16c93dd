/*
 * durations.c — the histogram of durations.h. A bucket holds what took at
 * most its bound and more than the bound before it, as Prometheus's `le`
 * means. No allocation, no failure.
 */
#include "durations.h"

#include <time.h>

const double durations_bounds[DURATIONS_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
const char *const durations_bound_text[DURATIONS_BUCKETS] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05",   "0.1",     "0.25",   "0.5",   "1",      "2.5",   "5"};

void durations_add(durations_t *d, int64_t ns)
{
    double seconds = ns > 0 ? (double)ns / 1e9 : 0;
    unsigned i = 0;
    while (i < DURATIONS_BUCKETS && seconds > durations_bounds[i])
        i++;
    d->bucket[i]++;
    d->count++;
    d->sum_s += seconds;
}

void durations_merge(durations_t *to, const durations_t *from)
{
    for (unsigned i = 0; i <= DURATIONS_BUCKETS; i++)
        to->bucket[i] += from->bucket[i];
    to->count += from->count;
    to->sum_s += from->sum_s;
}

int64_t durations_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
