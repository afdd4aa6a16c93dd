/*
 * sendq.c — a connection's queued bytes, counted across the loop thread
 * and libzmq's I/O thread (sendq.h). Its atomics (and those of the
 * principal's count it is within) and, for a watched connection, an fstat
 * of its socket per frame freed: no lock, no log, nothing that can fail
 * once made.
 */
#include "sendq.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "schakel_limits.h"

struct sendq {
    atomic_size_t bytes;      /* all of it */
    atomic_size_t push_bytes; /* of it, deliveries' */
    atomic_uint refs;
    sendq_t *shared; /* the principal's count this one is summed in, or NULL */
    /* the connection its frames go to (sendq_watch): set before the first
     * frame is handed to libzmq, read-only after */
    int watch_fd; /* -1: none */
    dev_t watch_dev;
    ino_t watch_ino;
    atomic_size_t dropped; /* frames freed after it closed */
};

sendq_t *sendq_new_within(sendq_t *shared)
{
    sendq_t *q = malloc(sizeof *q);
    if (q == NULL)
        return NULL;
    atomic_init(&q->bytes, 0);
    atomic_init(&q->push_bytes, 0);
    atomic_init(&q->refs, 1);
    atomic_init(&q->dropped, 0);
    q->shared = sendq_hold(shared);
    q->watch_fd = -1;
    return q;
}

sendq_t *sendq_new(void)
{
    return sendq_new_within(NULL);
}

sendq_t *sendq_hold(sendq_t *q)
{
    if (q != NULL)
        atomic_fetch_add_explicit(&q->refs, 1, memory_order_relaxed);
    return q;
}

void sendq_release(sendq_t **qp)
{
    if (qp == NULL || *qp == NULL)
        return;
    sendq_t *q = *qp;
    *qp = NULL;
    /* acq_rel: the last holder sees every other holder's writes before it
     * frees (the usual reference-count pattern) */
    if (atomic_fetch_sub_explicit(&q->refs, 1, memory_order_acq_rel) == 1) {
        sendq_release(&q->shared);
        free(q);
    }
}

void sendq_add(sendq_t *q, size_t n, int push)
{
    if (q == NULL)
        return;
    atomic_fetch_add_explicit(&q->bytes, n, memory_order_relaxed);
    if (push)
        atomic_fetch_add_explicit(&q->push_bytes, n, memory_order_relaxed);
    if (q->shared != NULL)
        sendq_add(q->shared, n, push);
}

/* n off *count, never below 0: a defect must not wrap to "full" for ever */
static void count_sub(atomic_size_t *count, size_t n)
{
    size_t old = atomic_load_explicit(count, memory_order_relaxed);
    size_t fresh;
    do
        fresh = old > n ? old - n : 0;
    while (!atomic_compare_exchange_weak_explicit(count, &old, fresh, memory_order_relaxed,
                                                  memory_order_relaxed));
}

void sendq_sub(sendq_t *q, size_t n, int push)
{
    if (q == NULL)
        return;
    count_sub(&q->bytes, n);
    if (push)
        count_sub(&q->push_bytes, n);
    if (q->shared != NULL)
        sendq_sub(q->shared, n, push);
}

void sendq_watch(sendq_t *q, int fd, const struct stat *st)
{
    if (q == NULL || st == NULL || fd < 0)
        return;
    q->watch_fd = fd;
    q->watch_dev = st->st_dev;
    q->watch_ino = st->st_ino;
}

/* A socket's inode is its own while it is open: a closed fd fails, and a
 * file or socket that took its number since is another inode. */
static int watched_gone(const sendq_t *q)
{
    struct stat st;
    return fstat(q->watch_fd, &st) != 0 || st.st_dev != q->watch_dev || st.st_ino != q->watch_ino;
}

void sendq_freed(sendq_t *q, size_t n, int push)
{
    if (q == NULL)
        return;
    if (q->watch_fd >= 0 && watched_gone(q))
        atomic_fetch_add_explicit(&q->dropped, 1, memory_order_relaxed);
    /* a reader that sees these bytes gone (sendq_bytes) sees the drop */
    atomic_thread_fence(memory_order_release);
    sendq_sub(q, n, push);
}

size_t sendq_dropped(const sendq_t *q)
{
    if (q == NULL)
        return 0;
    atomic_thread_fence(memory_order_acquire); /* pairs with sendq_freed's */
    return atomic_load_explicit(&q->dropped, memory_order_relaxed);
}

size_t sendq_bytes(const sendq_t *q)
{
    return q != NULL ? atomic_load_explicit(&q->bytes, memory_order_relaxed) : 0;
}

size_t sendq_push_bytes(const sendq_t *q)
{
    return q != NULL ? atomic_load_explicit(&q->push_bytes, memory_order_relaxed) : 0;
}

size_t sendq_shared_bytes(const sendq_t *q)
{
    return q != NULL ? sendq_bytes(q->shared) : 0;
}

int sendq_full(const sendq_t *q)
{
    return sendq_bytes(q) >= SCHAKEL_MAX_QUEUED_BYTES;
}

int sendq_push_full(const sendq_t *q)
{
    return sendq_bytes(q) >= SCHAKEL_MAX_QUEUED_PUSH_BYTES;
}
