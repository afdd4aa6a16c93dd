/*
 * sync_gate.h — fdatasync and fsync for unit tests of the store's threads.
 *
 * sync_gate.c defines fdatasync and fsync; linked into a test program they
 * take the place of libc's (symbol interposition), for SQLite's syncs as
 * for the broker's. Syncs made on the thread that called sync_gate_init
 * (the test's own) always go through. Syncs of every other thread are
 * counted, can be failed with EIO, and can be held at a gate the test
 * opens, so that a sync "in progress" is a state the test controls
 * instead of a race it hopes to win. A held sync waits at most
 * SYNC_GATE_BOUND_MS (then the gate counts as expired and the test fails
 * on it). Nothing sleeps.
 */
#ifndef SCHAKEL_TESTS_SYNC_GATE_H
#define SCHAKEL_TESTS_SYNC_GATE_H

#include <time.h>

/* Bound of every positive wait; only a failing test waits this long. */
#define SYNC_GATE_BOUND_MS 10000

enum sync_gate_counter {
    SYNC_GATE_THREAD_SYNCS, /* syncs made by threads other than the test's */
    SYNC_GATE_HELD_TOTAL,   /* syncs that ever waited at the gate */
    SYNC_GATE_HELD_NOW,     /* syncs waiting at the gate now */
    SYNC_GATE_EXPIRED       /* 1 once a held sync waited SYNC_GATE_BOUND_MS */
};

/* In main(), before any test: the calling thread is the test's. */
void sync_gate_init(void);
/* Gate open, no failures, the expiry forgotten (a setup or teardown). */
void sync_gate_reset(void);
/* Close (1) or open (0) the gate; fail (1) or pass (0) the syncs. */
void sync_gate_close(int closed);
void sync_gate_fail(int fail);
unsigned sync_gate_count(enum sync_gate_counter which);
/* Wait (bounded) until `total` syncs have ever reached the closed gate;
 * fails the test otherwise. */
void sync_gate_await_held(unsigned total);
/* Fails the test if a held sync outwaited the bound. */
void sync_gate_assert_never_expired(void);
/* CLOCK_REALTIME in ms milliseconds, for pthread_cond_timedwait. */
struct timespec sync_gate_deadline(int ms);

#endif
