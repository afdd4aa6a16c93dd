/*
 * record_internal.h — what record.c (the entries of every decision, the
 * turn's acks and queued deliveries) and record_carry.c (entries carried
 * to a commit) share: the per-turn state kept in b->acks and the helpers
 * both write entries with. Private to those two files.
 */
#ifndef SCHAKEL_RECORD_INTERNAL_H
#define SCHAKEL_RECORD_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "broker.h"
#include "store.h"

typedef struct record_acker {
    char recipient[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    uint64_t *seqs;
    size_t n, cap;
} record_acker_t;

struct record_acks {
    record_acker_t *ackers; /* the first n_active acked in this turn */
    size_t n_active, n_ackers, cap_ackers;
    size_t last; /* the acker of the last ack: acks come a frame at a time */
    char text[STORE_AUDIT_MAX_ACKED_SEQS * 21u + 1u]; /* up to 20 digits and a comma each */
    struct record_queue *queue;   /* the kept deliveries of one item (record_queued) */
    struct set_aside_texts *said; /* the turn's set-asides, said once it commits */
    size_t n_said;                /* of SCHAKEL_SET_ASIDE_BATCH */
    struct line_said *lines;      /* the turn's publishes and case events, said once it commits */
    size_t n_lines, cap_lines;
    struct record_carried *carried; /* entries owed to the trail, oldest first */
    size_t n_carried, cap_carried;
    int64_t carried_next_ms;  /* now_ms before which a settle does not write them again */
    int64_t carried_pause_ms; /* the wait after the last failed try: doubled, reset by a success */
};

/* ------------------------------------------------------------------ record.c */

/* The broker's time for entries: the turn's now_s, else the clock. */
int64_t record_now(const broker_t *b);

/* A write of the trail failed: said as event with why, or as
 * audit.tail_mismatch (see record.c). */
void record_write_failed(broker_t *b, const char *event, const char *entry, const char *why);

/* A copy of free text fit to keep into out (printable, valid UTF-8, cut
 * on a character boundary, 5 bytes of outlen left free); NULL for NULL. */
const char *record_clean(const char *text, char *out, size_t outlen);

/* One entry for the kept deliveries, if any; the queue is empty
 * afterwards. On failure the turn has failed: -1. */
int record_queue_flush(broker_t *b);

/* ------------------------------------------------------------------ record_carry.c */

/* Keep entry e and write it in the turn's transaction; past
 * SCHAKEL_AUDIT_MAX_CARRIED written once. 0 when written now, else -1. */
int record_carry(broker_t *b, const store_audit_entry_t *e);

/* Keep entry e, whose write failed already, for a settle to write in a
 * transaction of its own. */
void record_carry_owed(broker_t *b, const store_audit_entry_t *e);

/* After each turn's commit or rollback: forget the carried entries on the
 * trail, write the others again in a transaction of their own. */
void record_carried_settle(broker_t *b);

/* At a stop, before broker.stopped: every carried entry not on the trail
 * is written into the open transaction. */
void record_carried_flush(broker_t *b);

/* broker.stopped committed: only the entries whose last write failed are
 * still owed. */
void record_carried_stopped(broker_t *b);

/* At the release: each entry still owed is said (audit.not_recorded);
 * their memory is freed. */
void record_carried_release(broker_t *b);

#endif
