/*
 * store_mailbox.h — the mailbox as rows of one publish and recipient
 * (docs/design/mailbox.md, section 3): a row holds one recipient's
 * deliveries of one publish under consecutive seqs, their items and rules
 * in clear, the field masks of its rule slots sealed once (or a case's
 * body, in a row of one delivery), and a bitmap of the deliveries acked or
 * removed. The store's API keeps per-delivery views (store_delivery_t).
 *
 * Built beside the deliveries table, not yet used by the broker: the
 * schema step that makes the table, moves the deliveries over and switches
 * the callers is a later change (the design's step 4). Until then these
 * names stand apart from store_delivery.c's (store_mailbox_row_*).
 */
#ifndef SCHAKEL_STORE_MAILBOX_H
#define SCHAKEL_STORE_MAILBOX_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* The most deliveries one row holds (the table's CHECK says the same). A
 * publish has at most SCHAKEL_MAX_ITEMS items, so one row per publish and
 * recipient always fits. */
#define STORE_MAILBOX_MAX_N 1024u

/* Make the mailbox table and its indexes (section 3.1 of the design):
 * for the schema step that will switch the store over, and for tests.
 * Inside the caller's transaction when one is open. 0, or -1 with
 * store_errmsg (the table exists already, among others). */
int store_mailbox_schema(store_t *store);

/* One delivery of a row: its item (the item's seq and its index in the
 * publish) and the slot of its rule among the row's rules. */
typedef struct store_mailbox_entry {
    uint64_t item_seq;
    uint32_t item_index;
    uint32_t rule_slot;
} store_mailbox_entry_t;

/* One rule slot: the rule a delivery is made under, as the recipient is
 * told it, with the delivery's expiry under it and, for a signal's row,
 * the field mask the item is reduced to when pushed (sealed). */
typedef struct store_mailbox_rule {
    const char *rule_id;
    const char *rule_hash;
    const char *purpose;
    const char *legal_basis;
    int64_t expires_at;
    uint32_t fields; /* policy FIELD_* bits; a case's row: unused */
} store_mailbox_rule_t;

/* One row as the caller hands it in. */
typedef struct store_mailbox_row {
    /* The row's deliveries get first_seq .. first_seq + n - 1, in the
     * order of entries; the seqs must be of the last reservation of the
     * open transaction (store_delivery_seqs_reserve), and no other row's. */
    uint64_t first_seq;
    const char *recipient;
    /* The publish's facts: they must be those of every entry's item. */
    const char *sender;
    const char *sender_partner; /* the part of sender before '/' */
    const uint8_t *message_id;  /* 16 bytes */
    int64_t accepted_at;
    const store_mailbox_entry_t *entries;
    size_t n; /* 1 .. STORE_MAILBOX_MAX_N */
    const store_mailbox_rule_t *rules;
    size_t n_rules; /* 1 .. n; each entry's rule_slot below it */
    /* NULL: a signal's row (its deliveries by reference, the masks
     * sealed). Set: a case's row of one delivery (n 1), body its content
     * (the filtered CaseEvent, sealed), is_case_event 0 or 1. */
    const char *case_id;
    int is_case_event;
    const uint8_t *body;
    size_t body_len;
} store_mailbox_row_t;

/* Queue a row: the recipient's deliveries of one publish. Inside the
 * caller's transaction only. Checks the facts against the items' and the
 * publish's rows (every entry's item of that publish, at its index; the
 * items of a row numbered as their publish's, so that item_seq minus
 * item_index is the same for each: the broker stores a publish's items so),
 * and raises an item's retention (and its publish's) to its latest
 * delivery in the row where it falls short. A case's row also ties its
 * item to the case (which must exist). Counts n pending deliveries for the
 * recipient. 0, or -1 (refused: no transaction, n or a rule slot out of
 * range, seqs not reserved or another row's, facts that differ, ...).
 * Cost: one insert (the table and four index entries), one rowid descent
 * for the seqs, a range read of the row's items and one read of the
 * publish (skipped for the publish added in this transaction), one seal
 * and one BLAKE2b pass over the row's clear columns. */
int store_mailbox_row_add(store_t *store, const store_mailbox_row_t *row);

/* store_mailbox_scan_vouched over the rows: up to `limit` deliveries of
 * recipient with seq > after_seq, in seq order, skipping the done ones
 * (acked or removed, this transaction's marks included), each as the view
 * the push takes. A row is opened at most once per call (its masks, or
 * its case body), and only when a delivery of it is not vouched for; a
 * delivery by reference gets its item's opened bytes as body unless
 * have_item says the caller has them. A row that does not authenticate or
 * reads as no broker writes it stops the scan with -1, errmsg "body of
 * mailbox row N does not authenticate: ..." or "damaged row: ...", and
 * store_scan_unreadable gives the row's first seq. fn and the hints must
 * not call store functions. The number visited, or -1.
 * Cost: two descents of mailbox_by_recipient, then per row one read and
 * one parse of its rules, at most one opening; per delivery by reference
 * not kept by the caller one item rowid lookup and one opening. */
int store_mailbox_row_scan(store_t *store, const char *recipient, uint64_t after_seq, size_t limit,
                           const store_scan_hints_t *hints, store_delivery_fn fn, void *arg);

/* Mark recipient's delivery seq acked, in memory: the row found by one
 * descent of mailbox_by_recipient (or already marked in this transaction)
 * is written once when the transaction commits (store_commit: done and
 * pending updated, or the row deleted when nothing is left pending), and
 * the marks go with a rollback. Inside a transaction only. 1 when marked,
 * 0 when the seq is in no row of recipient or is done already (acked or
 * removed, in this transaction too), -1 on error. */
int store_mailbox_row_ack(store_t *store, const char *recipient, uint64_t seq);

/* Remove recipient's pending delivery seq before it is acked (revocation,
 * expiry): its tombstone (as store_delivery_revoke leaves one), fn told
 * (may be NULL; it must not call store functions), and the delivery marked
 * done as an ack marks it. Inside a transaction only. 1 when removed, 0
 * when recipient has no such pending delivery, -1 on error. */
int store_mailbox_row_remove(store_t *store, const char *recipient, uint64_t seq, int64_t now,
                             store_expired_fn fn, void *arg);

/* Retention expiry over the rows, one bounded step, inside the caller's
 * transaction: the row due first (mailbox_by_expiry) has each pending
 * delivery whose rule's expiry is at most now removed as
 * store_mailbox_row_remove removes one (tombstone, fn, the count), up to
 * `limit` in all, and is written at once: deleted when nothing is left
 * pending, else with the earliest expiry of those left; then the next
 * row due. This transaction's acks and removals of a row count (its
 * marks are written with it). The number expired, or -1 (a row whose
 * rule lines or items no broker writes is refused: it stays, due, until
 * it is set aside). Items and publishes are store_expire's. */
int store_mailbox_row_expire(store_t *store, int64_t now, size_t limit, store_expired_fn fn,
                             void *arg);

/* recipient's pending deliveries in the rows, this transaction's marks
 * and rows included: from the counts in memory (store_count.c), learnt
 * from the sum of the rows' pending counts the first time. -1 on error.
 * The counts are the ones store_mailbox_count keeps for the deliveries
 * table: until the broker switches over, a store handle counts one
 * mailbox or the other, never both. */
int64_t store_mailbox_row_pending(store_t *store, const char *recipient);

/* ------------------------------------------------------------------ store_mailbox_query.c */

/* store_delivery_rule over the rows: the rule of recipient's pending
 * delivery seq (its rule line's id and hash, its row's case), for the
 * check an ack makes that the policy still allows it. The clear columns
 * are read, not authenticated (the push opens the row before it sends
 * it). 1 with *out filled; 0 when seq is in no row of recipient's or is
 * done (acked or removed, this transaction's marks included), or its rule
 * or case does not fit *out (no honest row); -1 on error, or refused for a
 * row whose seqs, done, items, rule lines or case read as no broker writes
 * them ("damaged row: ..."), as an ack of it is. Rows set aside are not
 * looked at. Cost: one descent of mailbox_by_recipient, the row's rule
 * lines parsed. */
int store_mailbox_row_rule(store_t *store, const char *recipient, uint64_t seq,
                           store_delivery_rule_t *out);

/* store_mailbox_list over the rows: fn for up to `limit` deliveries of
 * recipient with seq > after_seq, waiting ones (rows of mailbox, those
 * done left out, this transaction's marks included) and ones set aside
 * (rows of mailbox_set_aside, each delivery its done column left
 * pending), in seq order, each row expanded into its deliveries; a page
 * may end inside a row, and the next, after its last seq, starts there.
 * fn returns non-zero to stop (and must not call store functions). Opens
 * nothing. Each delivery has its rule line's id, hash and expiry (a row
 * set aside: the row's expires_at, at which it goes whole), its item's seq
 * and index. A row is shown as far as it reads: a column not as the
 * broker writes it reads as NULL or 0 (a rule line or item that does not
 * read: no rule, item 0, the row's expires_at), a done column that does
 * not read leaves every delivery listed, and an n out of range lists the
 * row's first seq alone. The number visited, or -1 (store_errmsg).
 * Cost: per table one descent of its recipient index to the row holding
 * after_seq + 1, then per row read one step and its rule lines parsed,
 * until limit deliveries; per case event one lookup of the trail's
 * delivery_seq index. Read-only. */
int store_mailbox_row_list(store_t *store, const char *recipient, uint64_t after_seq, size_t limit,
                           store_listed_fn fn, void *arg);

/* store_mailbox_next_recipient over the rows: the first recipient after
 * `after` ("" for the first of all), in byte order, with a pending
 * delivery (a row this transaction's marks emptied does not count), into
 * out (outlen bytes; an id that does not fit is refused). 1, 0 when none
 * is left, -1. Cost: one descent of mailbox_by_recipient and one row
 * read, and one step more per row this transaction's marks emptied. */
int store_mailbox_row_next_recipient(store_t *store, const char *after, char *out, size_t outlen);

/* store_mailbox_oldest over the rows: the seqs of up to `limit` pending
 * deliveries of recipient, oldest first (this transaction's marks
 * included), into seqs. How many, or -1 (refused for a row whose seqs or
 * done no broker writes so: "damaged row: ..."). Cost: one descent of
 * mailbox_by_recipient, then one step per row until limit seqs. */
int store_mailbox_row_oldest(store_t *store, const char *recipient, uint64_t *seqs, size_t limit);

/* store_backlog_total over the rows: pending deliveries in every mailbox
 * together (the rows' pending columns less this transaction's marks;
 * rows set aside are not pending); -1 on error. Cost: O(rows), one read
 * of each: for operators, never the routing path. */
int64_t store_mailbox_row_backlog_total(store_t *store);

/* store_delivery_last_seq over the rows: the highest seq of any pending
 * delivery, this transaction's marks included (0 when none), -1 on error
 * (refused for a row whose n no broker writes). A done column that does
 * not read counts as none done: callers take the seq as "nothing pending
 * above it", and it errs high. Cost: one step to the end of the rowid
 * b-tree, the last row read; one more per row this transaction's marks
 * emptied. */
int64_t store_mailbox_row_last_seq(store_t *store);

#endif
