/*
 * splitmix.h — splitmix64, for tests that generate policies and signals:
 * the same sequence for the same seed everywhere.
 */
#ifndef SCHAKEL_TEST_SPLITMIX_H
#define SCHAKEL_TEST_SPLITMIX_H

#include <stdint.h>

static inline uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* 0 .. n - 1 (0 when n <= 1). */
static inline int rng_below(uint64_t *state, int n)
{
    return n <= 1 ? 0 : (int)(rng_next(state) % (uint64_t)n);
}

#endif
