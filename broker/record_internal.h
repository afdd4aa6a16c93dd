/*
 * record_internal.h — what the record_*.c files share: record.c (the
 * helpers entries are written with, publishes, the turn's acks and queued
 * deliveries), record_removed.c, record_case.c, record_broker.c and
 * record_carry.c (entries carried to a commit): the per-turn state kept in
 * b->acks and the helpers they write entries with. Private to those files.
 */
#ifndef SCHAKEL_RECORD_INTERNAL_H
#define SCHAKEL_RECORD_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "audit.h"
#include "broker.h"
#include "store.h"
#include "syntax.h"

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

/* Append one entry in the turn's transaction as it is (record_append
 * writes the kept deliveries first); on failure log it and fail the
 * turn: -1. */
int record_append_now(broker_t *b, store_audit_entry_t *entry);

/* Write the turn's acks, an entry per recipient (on failure the turn has
 * failed: -1), and forget them either way. */
int record_acks_flush(broker_t *b);

/* The subject's tag (store_subject_tag) into tag; -1 fails the turn,
 * with `event` the entry that said why. */
int record_subject_tag(broker_t *b, const char *pseudonym, const char *event,
                       char tag[STORE_SUBJECT_TAG_LEN + 1]);

/* "sender,kind,theme" and the names of the fields in mask, in POLICY.md's
 * words, into out; returns the length (cut to fit outlen). */
size_t record_field_names(uint32_t mask, char *out, size_t outlen);

/* A log line kept until its turn commits (record_turn_settle): a publish
 * or case command whose turn is rolled back was not carried out, and its
 * line would name what the next one gets. */
typedef struct line_said {
    const char *event;  /* static */
    const char *key[5]; /* static; the first NULL ends the pairs */
    char val[5][SCHAKEL_MAX_PRINCIPAL_LEN + 1];
} line_said_t;

/* Keep line t for the turn's end (copied); said at once without memory. */
void record_line_say_at_commit(broker_t *b, const line_said_t *t);

/* The turn's kept lines said if it committed, forgotten if not. */
void record_line_settle(broker_t *b, int committed);

/* These two are inline, as they were while one file held them: they are
 * on the path of every publish, delivery and ack, and the broker's objects
 * are built -fPIC without LTO, where a function that is not static is not
 * inlined even in its own file. */

/* The message id (if not NULL) as hex in e, which points into hex. */
static inline void record_set_message_id(store_audit_entry_t *e, const uint8_t *message_id,
                                         char hex[2 * SCHAKEL_MESSAGE_ID_BYTES + 1])
{
    if (message_id == NULL)
        return;
    syntax_hex(message_id, SCHAKEL_MESSAGE_ID_BYTES, hex);
    audit_set_text(e, STORE_AUDIT_MESSAGE_ID, hex);
}

/* Any entry but a queued one: the item whose deliveries are kept is
 * written first, so that the trail keeps the order of the actions (an
 * item's queued entry before its publish's accepted entry, queued
 * entries in item order). */
static inline int record_append(broker_t *b, store_audit_entry_t *entry)
{
    if (record_queue_flush(b) != 0)
        return -1;
    return record_append_now(b, entry);
}

/* ------------------------------------------------------------------ record_removed.c */

/* The turn's set-asides said (at error level) if it committed, forgotten
 * if not. */
void record_set_aside_settle(broker_t *b, int committed);

/* ------------------------------------------------------------------ record_broker.c */

/* The summaries of refused handshakes and refused requests that are due
 * (force: the open window's too, at a stop), an entry each. Returns 0
 * (also when there is none), or -1 with the turn failed. */
int record_refusals_summary(broker_t *b, int force);

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
