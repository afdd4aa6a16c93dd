/*
 * sendq.h — the bytes one connection owes: answers queued in the loop for
 * it, and frames handed to libzmq that libzmq has not yet taken out to
 * encrypt and write. libzmq's own send limit counts frames (SNDHWM), not
 * bytes, so a client that reads nothing could have the broker hold
 * thousands of frames of up to 256 KiB each; the broker asks sendq_bytes
 * before it queues more of what a client can make large (case views,
 * deliveries, resends) and holds back past SCHAKEL_MAX_QUEUED_BYTES (the
 * push at half of it).
 *
 * A sendq_t is counted down on libzmq's I/O thread (broker_send's free
 * function) and outlives the session that made it while any of its frames
 * is still in libzmq: it is reference-counted, and every count is atomic.
 * Allocation failure is the only error (sendq_new returns NULL).
 */
#ifndef SCHAKEL_SENDQ_H
#define SCHAKEL_SENDQ_H

#include <stddef.h>
#include <sys/stat.h>

typedef struct sendq sendq_t;

/* A new count at 0 bytes, holding one reference (the caller's); NULL when
 * out of memory. */
sendq_t *sendq_new(void);

/* The same, within `shared` (a principal's count; may be NULL): every
 * byte counted in the new count is counted in `shared` too, at the cost of
 * one more atomic add or subtract. The new count holds a reference to
 * `shared` until it is freed. */
sendq_t *sendq_new_within(sendq_t *shared);

/* Another reference to q (a queued answer, a frame in libzmq). Safe on
 * NULL; returns q. */
sendq_t *sendq_hold(sendq_t *q);

/* Drop one reference and set *q to NULL; the last one frees it. Safe on
 * NULL and *q NULL; safe on any thread. */
void sendq_release(sendq_t **q);

/* Count n bytes queued, or taken out again (sendq_sub: never below 0);
 * push: 1 when they are a delivery's, which are also counted apart.
 * Safe on NULL; safe on any thread. */
void sendq_add(sendq_t *q, size_t n, int push);
void sendq_sub(sendq_t *q, size_t n, int push);

/* Bytes queued now (0 for NULL); of them, deliveries' (sendq_push_bytes:
 * what an ack timeout waits for to leave before it sends them again; an
 * answer to the client's own requests does not hold it back). */
size_t sendq_bytes(const sendq_t *q);
size_t sendq_push_bytes(const sendq_t *q);

/* The frames counted in q go to one CURVE connection of libzmq's, on
 * socket fd (ZMQ_SRCFD), which st (its fstat, taken when its request was
 * read) names. libzmq frees such a frame as CURVE encrypts it for that
 * connection, while it is open, or throws it away once the connection has
 * closed: libzmq closes the fd as the connection fails, and drops the
 * frames it still held only after that (a round of commands through the
 * socket's own thread). So a frame freed (sendq_freed) when fd no longer
 * names that connection (closed, or taken by another file since) never
 * left for it: it is counted dropped. Call before any frame is counted in
 * q; NULL st or q: nothing watched. (Over a transport without encryption
 * libzmq may free a frame after writing it, and this would not hold: the
 * admin endpoint is CURVE only.) */
void sendq_watch(sendq_t *q, int fd, const struct stat *st);

/* A frame of n bytes that libzmq frees (its free function): sendq_sub,
 * after counting it dropped when q is watched and its connection is gone.
 * Safe on NULL; safe on any thread. */
void sendq_freed(sendq_t *q, size_t n, int push);

/* The frames of a watched q freed after their connection closed. Read it
 * after sendq_bytes: a frame that has left that count is in this one. */
size_t sendq_dropped(const sendq_t *q);

/* Bytes queued now in the count q is within (sendq_new_within): what all
 * of its principal's connections owe together; 0 when q is NULL or within
 * none. */
size_t sendq_shared_bytes(const sendq_t *q);

/* 1 when q has reached SCHAKEL_MAX_QUEUED_BYTES (0 for NULL): no more
 * answers a client can make large. */
int sendq_full(const sendq_t *q);

/* 1 when q has reached SCHAKEL_MAX_QUEUED_PUSH_BYTES (0 for NULL): no more
 * deliveries for now. */
int sendq_push_full(const sendq_t *q);

#endif
