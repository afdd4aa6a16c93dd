/*
 * delivery.h — a broker's Deliver frames inside libschakel: the bounded queue
 * of those received while the caller waited for something else, and their
 * decoding into the public schakel_delivery_t. Internal (not installed).
 */
#ifndef SCHAKEL_DELIVERY_H
#define SCHAKEL_DELIVERY_H

#include <stddef.h>
#include <stdint.h>

#include "schakel.h"
#include "wire.h"

/* One queued delivery: a Deliver frame (already through
 * wire_decode_broker_frame, so frame->deliver is set), or one the frame
 * codec refused that still named its seq (frame NULL, `unreadable` the
 * codec's words): handed out in its turn as a delivery that cannot be
 * read, never dropped unseen. */
typedef struct delivery_slot {
    Schakel__Frame *frame;
    uint64_t seq;
    char *unreadable;
} delivery_slot_t;

/* A ring of queued deliveries, oldest first. The queue owns what it holds. */
typedef struct delivery_queue {
    delivery_slot_t *slots; /* `capacity` of them */
    size_t capacity;
    size_t head;
    size_t count;
} delivery_queue_t;

/* Allocate the slots. Returns 0, or -1 when out of memory (q stays empty and
 * is safe to pass to delivery_queue_destroy). */
int delivery_queue_init(delivery_queue_t *q, size_t capacity);

/* Free everything queued and the slots; safe on a zeroed or failed queue. */
void delivery_queue_destroy(delivery_queue_t *q);

int delivery_queue_full(const delivery_queue_t *q);

/* Queue a Deliver frame; ownership moves to the queue. A delivery whose seq
 * is already queued (a redelivery) replaces the queued one in place.
 * Returns 0, or -1 when the queue is full (the caller keeps the frame). */
int delivery_queue_push(delivery_queue_t *q, Schakel__Frame *frame);

/* Queue, as delivery_queue_push, a Deliver the frame codec refused: its
 * seq (not 0) and the codec's text (copied). Returns 0, or -1 when the
 * queue is full or the copy cannot be made (nothing queued). */
int delivery_queue_push_unreadable(delivery_queue_t *q, uint64_t seq, const char *text);

/* The oldest queued delivery, still owned by the queue; NULL when empty. */
const delivery_slot_t *delivery_queue_peek(const delivery_queue_t *q);

/* Free the oldest queued delivery (no-op when empty). */
void delivery_queue_drop_front(delivery_queue_t *q);

/* Free a queued copy of seq, if any (it was acked: never hand it out again). */
void delivery_queue_forget(delivery_queue_t *q, uint64_t seq);

/* Decode a Deliver (already through wire_decode_broker_frame, whose check
 * of every string in the frame the envelope's texts rely on) into a new
 * delivery the caller frees with schakel_delivery_free. Safe on untrusted
 * input: the signal bytes are unpacked under SCHAKEL_DECODE_BUDGET_BYTES and
 * every string of the signal is checked for UTF-8. Returns SCHAKEL_OK with
 * *out set: the delivery took the Deliver's texts (those pointers in `in`
 * are NULL now; free the frame as usual). Or SCHAKEL_ERR_PROTOCOL (the
 * broker sent something broken) / SCHAKEL_ERR_NOMEM (an allocation failed;
 * decoding the same Deliver again later may succeed) with *out NULL, `in`
 * unchanged and a text naming the delivery's seq. */
schakel_status_t delivery_decode(Schakel__Deliver *in, schakel_delivery_t **out, char *text,
                                 size_t textlen);

#endif
