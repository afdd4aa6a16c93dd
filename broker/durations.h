/*
 * durations.h — a histogram of how long something took (a WAL sync, a loop
 * turn), with fixed buckets from 0.1 ms to 5 s, as /metrics shows them
 * (Prometheus: cumulative buckets, a sum and a count). A plain value: the
 * owner decides who may touch it and copies it out.
 */
#ifndef SCHAKEL_DURATIONS_H
#define SCHAKEL_DURATIONS_H

#include <stdint.h>

#define DURATIONS_BUCKETS 15

typedef struct durations {
    uint64_t bucket[DURATIONS_BUCKETS + 1]; /* per bucket (not cumulative); the last: above */
    uint64_t count;
    double sum_s;
} durations_t;

/* Upper bounds of the buckets in seconds, and as /metrics prints them. */
extern const double durations_bounds[DURATIONS_BUCKETS];
extern const char *const durations_bound_text[DURATIONS_BUCKETS];

/* Count one duration of ns nanoseconds (negative counts as 0). */
void durations_add(durations_t *d, int64_t ns);

/* Add every count of `from` to `to`. */
void durations_merge(durations_t *to, const durations_t *from);

/* Monotonic clock in nanoseconds, for the start and end of what is timed. */
int64_t durations_now_ns(void);

#endif
