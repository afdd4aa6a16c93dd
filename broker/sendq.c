/*
 * sendq.c — a connection's queued bytes, counted across the loop thread
 * and libzmq's I/O thread (sendq.h). Two atomics and nothing else: no
 * lock, no log, nothing that can fail once made.
 */
#include "sendq.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "schakel_limits.h"

struct sendq {
    atomic_size_t bytes;
    atomic_uint refs;
};

sendq_t *sendq_new(void)
{
    sendq_t *q = malloc(sizeof *q);
    if (q == NULL)
        return NULL;
    atomic_init(&q->bytes, 0);
    atomic_init(&q->refs, 1);
    return q;
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
    if (atomic_fetch_sub_explicit(&q->refs, 1, memory_order_acq_rel) == 1)
        free(q);
}

void sendq_add(sendq_t *q, size_t n)
{
    if (q != NULL)
        atomic_fetch_add_explicit(&q->bytes, n, memory_order_relaxed);
}

void sendq_sub(sendq_t *q, size_t n)
{
    if (q == NULL)
        return;
    size_t old = atomic_load_explicit(&q->bytes, memory_order_relaxed);
    size_t fresh;
    do
        fresh = old > n ? old - n : 0; /* a defect must not wrap to "full" forever */
    while (!atomic_compare_exchange_weak_explicit(&q->bytes, &old, fresh, memory_order_relaxed,
                                                  memory_order_relaxed));
}

size_t sendq_bytes(const sendq_t *q)
{
    return q != NULL ? atomic_load_explicit(&q->bytes, memory_order_relaxed) : 0;
}

int sendq_full(const sendq_t *q)
{
    return sendq_bytes(q) >= SCHAKEL_MAX_QUEUED_BYTES;
}

int sendq_push_full(const sendq_t *q)
{
    return sendq_bytes(q) >= SCHAKEL_MAX_QUEUED_PUSH_BYTES;
}
