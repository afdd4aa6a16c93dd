/*
 * acksent.h — the Acks a libschakel client sent whose refusal may still
 * come, and those the broker refused RATE_LIMITED (nothing of such an Ack
 * was acknowledged: its deliveries stay in the mailbox, PROTOCOL 4.7),
 * kept to be sent again after a pause. Internal (not installed).
 */
#ifndef SCHAKEL_ACKSENT_H
#define SCHAKEL_ACKSENT_H

#include <stddef.h>
#include <stdint.h>

/* Acks kept at once. A refusal comes within a round trip, and every
 * answer to a later request settles the Acks before it, so this holds
 * what a receiver acks between two answers; beyond it the oldest is
 * forgotten (a refusal of it is then only kept as the last error). */
#define ACKSENT_MAX 64u
/* A refused Ack goes again after 1 s (the broker's bucket gains a token
 * within 1 / max_unknown_acks_per_second, at least one a second), then
 * after 2 s and 4 s if refused again; refused a fourth time it is given
 * up: its deliveries come again, flagged, at the ack timeout. */
#define ACKSENT_PAUSE_MS 1000
#define ACKSENT_RESENDS 3u

typedef struct acksent_entry {
    uint64_t order;     /* when it was (last) sent, among the client's requests */
    uint64_t first_seq; /* the seq a refusal of it names */
    uint8_t *frame;     /* the encoded Ack, owned */
    size_t frame_len;
    unsigned refusals; /* RATE_LIMITED refusals so far */
    int64_t resend_at; /* 0: on the wire, a refusal may come; else owed again at
                        * this time (monotonic ms) */
} acksent_entry_t;

/* Entries sent, in the order they were sent (the owed ones where they
 * were when refused). */
typedef struct acksent {
    acksent_entry_t entries[ACKSENT_MAX];
    size_t count;
} acksent_t;

/* Keep an Ack just sent as `order`, naming first_seq first; the table
 * takes the frame (malloc'd) it was sent from, so keeping allocates
 * nothing. When full, the oldest entry is forgotten first. */
void acksent_keep(acksent_t *table, uint64_t order, uint64_t first_seq, uint8_t *frame,
                  size_t frame_len);

/* A request sent as `order` was answered: the Acks sent before it were
 * taken or refused (answers come in the order of the requests), so those
 * still on the wire are forgotten. Owed ones stay. */
void acksent_settle_before(acksent_t *table, uint64_t order);

/* A Rejected{RATE_LIMITED} naming first_seq came: it refuses the oldest
 * Ack on the wire that names first_seq first (those sent before it were
 * taken, and are forgotten). Returns 1 when that Ack is now owed again
 * (after ACKSENT_PAUSE_MS, doubled with each refusal), 0 when there is
 * none or it was refused ACKSENT_RESENDS times already (forgotten). */
int acksent_refused(acksent_t *table, uint64_t first_seq, int64_t now_ms);

/* The oldest owed Ack whose time came, or NULL. */
acksent_entry_t *acksent_due(acksent_t *table, int64_t now_ms);

/* An owed Ack was sent again as `order`: it is on the wire once more,
 * the newest entry. The pointer is not valid afterwards. */
void acksent_resent(acksent_t *table, acksent_entry_t *entry, uint64_t order);

/* When the first owed Ack is due (monotonic ms), or -1 when none is. */
int64_t acksent_next_due(const acksent_t *table);

/* Forget every entry. */
void acksent_clear(acksent_t *table);

#endif
