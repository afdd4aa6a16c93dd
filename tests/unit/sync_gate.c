/*
 * sync_gate.c — fdatasync and fsync for unit tests of the store's threads:
 * counted, failed or held for every thread but the test's (sync_gate.h).
 */
#include "sync_gate.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static pthread_t main_thread;
static int gate_closed;       /* syncs of other threads wait while set */
static unsigned gate_expired; /* a held sync waited SYNC_GATE_BOUND_MS: the test failed */
static int fail_thread_syncs; /* syncs of other threads fail with EIO */
static unsigned thread_syncs; /* syncs made by threads other than main */
static unsigned held_total;   /* syncs that ever waited at the gate */
static unsigned held_now;     /* syncs waiting at the gate now */

struct timespec sync_gate_deadline(int ms)
{
    struct timespec at;
    clock_gettime(CLOCK_REALTIME, &at);
    at.tv_sec += ms / 1000;
    at.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (at.tv_nsec >= 1000000000L) {
        at.tv_sec++;
        at.tv_nsec -= 1000000000L;
    }
    return at;
}

/* Called with gate_lock held, on a thread that is not main. */
static void gate_pass_locked(void)
{
    thread_syncs++;
    if (!gate_closed)
        return;
    held_total++;
    held_now++;
    pthread_cond_broadcast(&gate_cv);
    struct timespec until = sync_gate_deadline(SYNC_GATE_BOUND_MS);
    while (gate_closed && !gate_expired)
        if (pthread_cond_timedwait(&gate_cv, &gate_lock, &until) == ETIMEDOUT)
            gate_expired = 1; /* never hang the suite: the test sees this flag */
    held_now--;
    pthread_cond_broadcast(&gate_cv);
}

static int gated_sync(int fd, long sysno)
{
    int fail = 0;
    pthread_mutex_lock(&gate_lock);
    if (!pthread_equal(pthread_self(), main_thread)) {
        gate_pass_locked();
        fail = fail_thread_syncs;
    }
    pthread_mutex_unlock(&gate_lock);
    if (fail) {
        errno = EIO;
        return -1;
    }
    return (int)syscall(sysno, fd);
}

int fdatasync(int fd)
{
    return gated_sync(fd, SYS_fdatasync);
}

int fsync(int fd)
{
    return gated_sync(fd, SYS_fsync);
}

void sync_gate_init(void)
{
    main_thread = pthread_self();
}

void sync_gate_close(int closed)
{
    pthread_mutex_lock(&gate_lock);
    gate_closed = closed;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_lock);
}

void sync_gate_fail(int fail)
{
    pthread_mutex_lock(&gate_lock);
    fail_thread_syncs = fail;
    pthread_mutex_unlock(&gate_lock);
}

void sync_gate_reset(void)
{
    sync_gate_close(0);
    sync_gate_fail(0);
    pthread_mutex_lock(&gate_lock);
    gate_expired = 0;
    pthread_mutex_unlock(&gate_lock);
}

unsigned sync_gate_count(enum sync_gate_counter which)
{
    pthread_mutex_lock(&gate_lock);
    unsigned value = which == SYNC_GATE_THREAD_SYNCS ? thread_syncs
                     : which == SYNC_GATE_HELD_TOTAL ? held_total
                     : which == SYNC_GATE_HELD_NOW   ? held_now
                                                     : gate_expired;
    pthread_mutex_unlock(&gate_lock);
    return value;
}

void sync_gate_await_held(unsigned total)
{
    struct timespec until = sync_gate_deadline(SYNC_GATE_BOUND_MS);
    pthread_mutex_lock(&gate_lock);
    int rc = 0;
    while (held_total < total && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&gate_cv, &gate_lock, &until);
    unsigned seen = held_total;
    pthread_mutex_unlock(&gate_lock);
    if (seen < total)
        fail_msg("no thread reached the sync gate within %d ms (%u of %u syncs held)",
                 SYNC_GATE_BOUND_MS, seen, total);
}

void sync_gate_assert_never_expired(void)
{
    if (sync_gate_count(SYNC_GATE_EXPIRED))
        fail_msg("a sync waited %d ms at the gate: the test lost track of it", SYNC_GATE_BOUND_MS);
}
