/*
 * inflight.h — the publishes a libschakel client has sent and not yet handed
 * the answer of to its caller: each with the frame as sent (sent again after
 * a reconnect) and, once it came, the broker's answer. Internal (not
 * installed).
 */
#ifndef SCHAKEL_INFLIGHT_H
#define SCHAKEL_INFLIGHT_H

#include <stddef.h>
#include <stdint.h>

#include "schakel.h"
#include "schakel_limits.h"
#include "wire.h"

typedef struct inflight_entry {
    uint8_t id[SCHAKEL_MESSAGE_ID_BYTES];
    uint8_t *frame; /* the encoded Publish, owned */
    size_t frame_len;
    size_t n_items;
    Schakel__Frame *answer; /* Accepted or Rejected once it came, owned; else NULL */
    int resend_owed;        /* to be sent again (after a reconnect), not sent yet */
    /* Sent while a connection was up: it may be lost with that connection
     * (sent again at the next handshake). One sent while none was is held
     * in the socket's queue and goes out once the next connection is up. */
    int sent_connected;
    uint64_t order;         /* when it was (last) sent, among the client's requests */
} inflight_entry_t;

/* Entries in the order they were sent, oldest first. */
typedef struct inflight {
    inflight_entry_t entries[SCHAKEL_MAX_IN_FLIGHT];
    size_t count;
} inflight_t;

/* The entry with this message id, or NULL. */
inflight_entry_t *inflight_find(inflight_t *table, const uint8_t *id);

/* The oldest entry still without an answer and not waiting to be sent
 * again (so on the wire, owed an answer), or NULL. */
inflight_entry_t *inflight_oldest_unanswered(inflight_t *table);

/* The oldest entry with an answer, or NULL. */
inflight_entry_t *inflight_first_answered(inflight_t *table);

/* Add an entry as the newest; it takes the frame. Returns the entry, or
 * NULL when the table is full (the caller keeps the frame). */
inflight_entry_t *inflight_add(inflight_t *table, const uint8_t id[SCHAKEL_MESSAGE_ID_BYTES],
                               uint8_t *frame, size_t frame_len, size_t n_items);

/* Remove an entry, freeing its frame and answer. The entries after it move
 * up one place: pointers to them are no longer valid. */
void inflight_remove(inflight_t *table, inflight_entry_t *entry);

/* Remove every entry. */
void inflight_clear(inflight_t *table);

#endif
