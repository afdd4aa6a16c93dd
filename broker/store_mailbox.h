/*
 * store_mailbox.h — the mailbox as rows of one publish and recipient
 * (docs/design/mailbox.md, section 3): a row holds one recipient's
 * deliveries of one publish under consecutive seqs, their items and rules
 * in clear, the field masks of its rule slots sealed once (or a case's
 * body, in a row of one delivery), and a bitmap of the deliveries acked or
 * removed. The store's API keeps per-delivery views (store_delivery_t).
 *
 * The broker's mailbox since schema 13 (which moved schema 12's
 * deliveries table over: store_mailbox_migrate). store.h's per-delivery
 * functions (store_delivery.c) hand their work to these
 * (store_mailbox_row_*), so most callers never name them.
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
 * store_errmsg. Made IF NOT EXISTS: the schema step (13) makes them, and
 * a store whose user_version was set back by hand has them. */
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
 * row due, `limit` rows at most (store_mailbox_expire_more says whether
 * it stopped there). This transaction's acks and removals of a row count (its
 * marks are written with it). A row due that does not read (its rule
 * lines, items, n or done as no broker writes them) is set aside whole
 * instead (store_mailbox_row_set_aside), so that it cannot stop the sweep,
 * and counted by store_mailbox_expire_set_aside. The number expired, or
 * -1 (SQLite, memory, or a damaged row that cannot be set aside). Items
 * and publishes are store_expire's. */
int store_mailbox_row_expire(store_t *store, int64_t now, size_t limit, store_expired_fn fn,
                             void *arg);

/* The rows the last store_mailbox_row_expire set aside because it could
 * not read them (damage): each is listed for
 * store_mailbox_row_set_aside_take, and the caller writes their
 * deliveries' "delivery.set_aside" entries in the same transaction. */
size_t store_mailbox_expire_set_aside(const store_t *store);

/* 1 when the last store_mailbox_row_expire stopped at its bound of rows
 * visited (`limit`, the rows it only rewrote with their next expiry
 * counted) with rows still due: the caller sweeps again next turn. */
int store_mailbox_expire_more(const store_t *store);

/* recipient's pending deliveries in the rows, this transaction's marks
 * and rows included: from the counts in memory (store_count.c), learnt
 * from the sum of the rows' pending counts the first time. -1 on error.
 * What store_mailbox_count answers. */
int64_t store_mailbox_row_pending(store_t *store, const char *recipient);

/* ------------------------------------------------------------------ migration, rekey, counters
 * (store_mailbox_migrate.c) */

/* The body of the schema step that moves the store onto the rows, inside
 * the caller's transaction (the schema's own, once the keys are loaded and
 * store_mailbox_schema has made the tables, which must be empty): every
 * deliveries row becomes a mailbox row of one delivery (n 1, nothing
 * done), re-sealed under the rows' seal with the same view for the push
 * (a signal by reference: its rule slot's mask; a case's: its body); one
 * that does not open under the deliveries' seal, or has no row form (a
 * signal that kept a body of its own, as stores before schema 5 queued
 * them), goes to mailbox_set_aside as it was mapped, body untouched, with
 * the reason, for whoever opened the store to record; every
 * deliveries_set_aside row goes there as a row of one delivery, its
 * set_aside_at and reason kept. Then deliveries and deliveries_set_aside
 * are dropped. Tells store_progress every 10,000 deliveries. Inside a
 * transaction of store_begin's the pending counts follow (a delivery set
 * aside leaves its recipient's); the schema's own runs before any count
 * is learnt. 0, or -1 with errmsg (the caller rolls back: nothing moved).
 * Cost: one pass over each table in seq order (a rowid lookup of each
 * delivery's item and publish), per delivery one opening, two BLAKE2b
 * passes (the old and the new associated data), one sealing and one insert
 * with its four index entries; then the drops, which with secure_delete
 * overwrite every page of the old tables. */
int store_mailbox_migrate(store_t *store);

/* Re-seal every mailbox row's body under new_key (STORE_KEY_BYTES), inside
 * the caller's transaction (store_rekey's): each opened under the store
 * key and sealed under new_key with a fresh nonce and the same associated
 * data. A row that does not open, or reads as no broker writes it, refuses
 * the whole rekey as store_rekey refuses a delivery ("body of mailbox row
 * N does not authenticate: ..." or "rekey: mailbox row N: damaged row"):
 * the caller rolls back, nothing changes. mailbox_set_aside is left as it
 * is, as store_rekey leaves deliveries_set_aside. Adds the bodies re-sealed
 * (one per row, however many deliveries it holds) to counts->deliveries
 * (counts may be NULL). 0 or -1. Cost: per row one rowid descent, one
 * opening, one BLAKE2b pass, one sealing and one rowid update. */
int store_mailbox_rekey(store_t *store, const uint8_t new_key[STORE_KEY_BYTES],
                        store_rekey_counts_t *counts);

/* The highest delivery seq the rows name, as SQL (an expression, for the
 * counters' queries on a store handle and on a raw connection to a file
 * that has the tables): the greatest first_seq + n - 1 over mailbox and
 * mailbox_set_aside, 0 when both are empty. n is not trusted: one that is
 * not an integer of 1 to 1024 (a set-aside row holds whatever the damaged
 * row held; a file altered outside SQLite breaks the mailbox's CHECK) counts
 * as 1024, the most a row holds, so no seq such a row might name is handed
 * out again, at the price of at most 1,023 seqs skipped; a row whose end
 * would pass INT64_MAX gives INT64_MAX, which the counters refuse as
 * exhausted. Rows never overlap, so only the rows that start within 1,023
 * of the last one can end past it: each table costs a rowid descent and a
 * range of those rows (one, in practice), not a walk. */
#define STORE_MAILBOX_ROW_END_SQL(table)                                                           \
    "(SELECT max(CASE WHEN first_seq > 9223372036854774783 THEN 9223372036854775807"               \
    " ELSE first_seq - 1 + CASE WHEN typeof(n) = 'integer' AND n BETWEEN 1 AND 1024 THEN n"        \
    " ELSE 1024 END END) FROM " table " WHERE first_seq >= (SELECT max(first_seq) FROM " table     \
    ") - 1023)"
#define STORE_MAILBOX_SEQ_HIGH_SQL                                                                 \
    "max(coalesce(" STORE_MAILBOX_ROW_END_SQL(                                                     \
        "mailbox") ", 0), coalesce(" STORE_MAILBOX_ROW_END_SQL("mailbox_set_aside") ", 0))"

/* STORE_MAILBOX_SEQ_HIGH_SQL on the store: 0 with *high, or -1 with
 * errmsg (the tables missing among others). */
int store_mailbox_seq_high(store_t *store, int64_t *high);
/* ------------------------------------------------------------------ set aside
 * (store_mailbox_aside.c) */

/*
 * A row that does not authenticate (its sealed body, any clear column its
 * seal binds, or the content of an item one of its deliveries refers to)
 * or reads as no broker writes it cannot be sent, and would hold up its
 * recipient's mailbox. It is set aside whole (docs/design/mailbox.md,
 * 3.2): moved into mailbox_set_aside as it is, bytes untouched but for
 * this transaction's acks and removals folded into done and pending and
 * expires_at bounded (below), with when and why, out of the mailbox and
 * its count. Its deliveries are the seqs first_seq .. first_seq + n - 1
 * not done; each is named on the trail by its own "delivery.set_aside"
 * entry, and the functions below give them per seq, as store_set_aside_*
 * give the rows of deliveries_set_aside. There a row stays until its
 * expires_at (store_mailbox_row_set_aside_expire) or until an operator
 * puts it back from a backup.
 *
 * What a set-aside row's damage does to that: n that is no integer, or
 * outside 1 .. STORE_MAILBOX_MAX_N or past the last seq, is taken as 1
 * (the row names its first seq alone, the one the scan names it by);
 * done that is not a bitmap of n bits is taken as none done (each seq of
 * the row named: a false name on the trail rather than a delivery
 * unnamed); rule lines, items or first_item_seq that do not read give a
 * delivery item seq 0 and rule "" (its seq names it); a recipient, rule
 * or reason text missing or too long reads "". A row starting below 1 (a
 * rowid no broker writes) names no seq: it is never set aside, reported
 * or counted; expiry removes it with no tombstone.
 */

/* A row set aside, for writing an entry per delivery of it: the caller
 * asks store_mailbox_row_set_aside_get for each seq from first_seq to
 * last_seq (1 for each delivery set aside, 0 for one that was done). */
typedef struct store_mailbox_aside {
    uint64_t first_seq, last_seq;
    size_t n_set_aside; /* its deliveries not done */
    char reason[STORE_SET_ASIDE_REASON_LEN];
} store_mailbox_aside_t;

/* store_delivery_set_aside over the rows: set aside recipient's row
 * holding seq (found as an ack finds it; a row whose n does not read is
 * taken to hold its first seq alone, the one store_scan_unreadable names),
 * inside the caller's transaction, if it still does not authenticate or
 * reads damaged: it is checked again as the scan checks it, each of its
 * pending deliveries (the store trusts no caller's word that a row is
 * damaged); out->reason says what failed. Its expires_at moves over
 * bounded by its publish's and by now + SCHAKEL_MAX_RETENTION_S (one that
 * is no integer: now, due at once), so setting aside never keeps data
 * past its retention. The recipient's pending count drops by the row's
 * pending column less this transaction's marks of it (for a row that
 * reads intact: its deliveries not done), as store_mailbox_row_pending
 * counted it. 1 when moved, with *out filled; 0 when there is nothing to
 * set aside (no row of recipient holds seq, every delivery of it is done,
 * or it opens after all); -1 on error (no transaction, out NULL, SQLite).
 * store_scan_unreadable is left as it was.
 * Cost: one descent of mailbox_by_recipient, the row checked as the scan
 * checks it (two descents, one opening of the row, and per pending
 * delivery by reference one item lookup and opening), the copy (the
 * table and five index entries, one publish rowid lookup) and the delete
 * (its four index entries). */
int store_mailbox_row_set_aside(store_t *store, const char *recipient, uint64_t seq, int64_t now,
                                store_mailbox_aside_t *out);

/* A waiting row whose recipient cannot be read (too long, or no text: a
 * file altered outside SQLite), so that no scan or descent by recipient
 * finds it: moved into mailbox_set_aside as it is, by its first_seq,
 * with reason, inside the caller's transaction; no count changes (none
 * was kept for a recipient no broker writes). Its deliveries then read as
 * store_mailbox_row_set_aside_get reads a damaged set-aside row's. For
 * the expiry sweep, which must not stop at it. 0 or -1. */
int store_mailbox_row_set_aside_unread(store_t *store, int64_t first_seq, int64_t now,
                                       const char *reason);

/* store_set_aside_unrecorded over mailbox_set_aside: up to max delivery
 * seqs greater than after, in seq order, of deliveries set aside (seqs of
 * set-aside rows not done) that no "delivery.set_aside" audit entry names.
 * How many (0: none left), or -1. Safe on any file content.
 * Cost: one descent of the rowid to the row holding after + 1, then per
 * row one read and per delivery not done one lookup of the trail's
 * delivery_seq index. */
int store_mailbox_row_set_aside_unrecorded(store_t *store, uint64_t after, uint64_t *seqs,
                                           size_t max);

/* The next row a store call of this transaction set aside on its own
 * (store_mailbox_row_expire, a case's drop: store_mailbox_row_case_drop_at),
 * oldest first, each once: its span in out->first_seq and out->last_seq
 * (the seqs its n names, as store_mailbox_row_set_aside_get reads them;
 * n_set_aside and reason are left empty): 1, 0 when none is left, -1 on
 * error. Those of a transaction rolled back are gone with it. The caller
 * records each delivery of it that is not done: every set-aside has its
 * entries, also a row put back by an operator and set aside again, whose
 * seqs the trail names already (store_set_aside_unrecorded would not find
 * them). store_mailbox_row_set_aside's own caller has the row in its out:
 * it is not listed.
 * Cost: one rowid descent per row. */
int store_mailbox_row_set_aside_take(store_t *store, store_mailbox_aside_t *out);

/* store_set_aside_get over mailbox_set_aside: delivery seq of a set-aside
 * row, copied into *out (recipient, item seq, rule id and hash from its
 * row's rule lines; expires_at the row's, when it goes: one that is no
 * integer reads 0; set_aside 1; the reason). 1; 0 when seq is no delivery
 * set aside (in no set-aside row, or done in its row); -1 on error.
 * Cost: one rowid descent, the row's rule lines parsed. */
int store_mailbox_row_set_aside_get(store_t *store, uint64_t seq, store_set_aside_t *out);

/* store_set_aside_count over mailbox_set_aside: the deliveries set aside
 * (per row its seqs not done), or -1. O(rows set aside): for metrics and
 * operators, a table that is empty unless something went wrong. */
int64_t store_mailbox_row_set_aside_count(store_t *store);

/* Expiry of set-aside rows, one bounded step inside the caller's
 * transaction (store_expire's part for deliveries_set_aside): a row goes
 * whole once its expires_at is at most now (the column is its earliest
 * delivery's expiry, bounded when set aside, so nothing is kept past its
 * retention), first any whose expires_at is no integer, at once. Each
 * delivery of it not done leaves a tombstone (its seq, recipient, item
 * seq, rule id and hash, expires_at the row's or now for one no integer,
 * expired_at now; a seq that has one already keeps it, fn told
 * tombstoned_before) and fn (may be NULL; it must not call store
 * functions) is told with set_aside 1; the count is not touched (the row
 * left it when set aside). A row is never split: rows are taken while
 * fewer than `limit` deliveries (and rows) have gone, so the last may
 * pass it by up to STORE_MAILBOX_MAX_N - 1. The number of deliveries
 * expired (0: nothing due), or -1.
 * Cost: per row one or two descents (the untyped partial index, then
 * mailbox_set_aside_by_expiry), its rule lines parsed, a tombstone per
 * delivery and the row's delete, O(log n) each. */
int store_mailbox_row_set_aside_expire(store_t *store, int64_t now, size_t limit,
                                       store_expired_fn fn, void *arg);
/* ---------------------------------- cases and expiry's references (store_mailbox_case.c) */

/* store_case_drop_deliveries(_at) over the rows: remove every pending
 * delivery of case case_id to `recipient` (one principal id, or a partner
 * id meaning every principal of that partner), each as
 * store_mailbox_row_remove removes one (its tombstone with expired_at =
 * now, fn told, marked done, written at the commit; this transaction's
 * acks and removals count). Inside the caller's transaction (-1 without
 * one). The number removed, or -1 ("damaged row: ..." for a row whose
 * seqs or recipient no broker writes). The plain form takes the wall
 * clock and no callback.
 * Cost: one range of mailbox_by_case, then per pending delivery a descent
 * of mailbox_by_recipient, its rule lines parsed and a tombstone: O(k log
 * n) for k removed. */
int store_mailbox_row_case_drop(store_t *store, const char *case_id, const char *recipient);
int store_mailbox_row_case_drop_at(store_t *store, const char *case_id, const char *recipient,
                                   int64_t now, store_expired_fn fn, void *arg);

/* store_case_set_expiry over the rows: the case row, its events, its rows
 * (every rule line of a case row takes expires_at, so each row is
 * re-sealed, its associated data digesting the rule lines, and its
 * expires_at column set), its rows set aside (never past their item's
 * retention), its items (never below what else still needs one: a
 * pending delivery of it in a row outside this case, a set-aside row of
 * it, another case linking it; a row of its publish that reads damaged
 * holds it where it is if waiting, to the row's own expiry if set aside)
 * and their publishes all expire at
 * expires_at. A row that cannot be re-sealed (damaged, or its body does
 * not authenticate) takes the new expires_at but keeps its rule lines and
 * body as they were: it stays refused wherever it is read, and the close
 * is not held up by it. Inside the caller's transaction (-1 without one).
 * The number of such rows (0 when all were re-sealed; errmsg then names
 * the last), or -1 ("no such case" among others). The marks of this
 * transaction stay valid: done and pending are not touched.
 * Cost: per row of the case a descent of mailbox_by_case, its rule lines
 * parsed and encoded, two BLAKE2b passes, a decryption and an encryption,
 * a rewrite; per item of the case a descent of case_items and its
 * publish's rows read (mailbox_by_publish, mailbox_set_aside_by_publish:
 * a row per recipient, rule lines parsed); the events, set-aside rows
 * and publishes by their indexes: O((events + rows + items x recipients)
 * log n). */
int store_mailbox_row_case_set_expiry(store_t *store, const char *case_id, int64_t expires_at);

/* Expiry's items over the rows, one bounded step inside the caller's
 * transaction: of the first `limit` items due (expires_at <= now, in the
 * order of items_by_expiry), remove those no row refers to, each taken out
 * of its sender partner's stored bytes, its case links cascading. A
 * waiting row refers to an item only through a delivery of it not done
 * (this transaction's marks included), so an item goes when its own
 * deliveries are done, whatever its neighbours in the publish; a set-aside
 * row through its deliveries not done when it was set aside; a row whose
 * n, done or items no broker writes refers to every item of its publish
 * (it frees nothing, and holds up nothing else). The number removed, or -1.
 * Cost: per item looked at, a descent of items_by_expiry; per publish
 * among them (once for a run of its items, as items due together come) a
 * range of mailbox_by_publish and of mailbox_set_aside_by_publish, each
 * row's done and items read (no rule lines parsed, nothing opened); per
 * item removed its delete: O(limit log n) for publishes of few recipients. */
int store_mailbox_row_expire_items(store_t *store, int64_t now, size_t limit);

/* The publishes due (up to `limit` looked at) that no item and no row,
 * waiting (whatever its done: its foreign key) or set aside, names are
 * removed; then, in store_expire's order after the case events, the cases
 * due that no event and no row, waiting or set aside, names, their
 * members and item links cascading. Inside the caller's transaction. The
 * number removed, or -1. Cost: per candidate a lookup in items'
 * (publish_id, item_index) index (a case: its events' index) and in
 * mailbox_by_publish and mailbox_set_aside_by_publish (mailbox_by_case,
 * mailbox_set_aside_by_case): O(limit log n). */
int store_mailbox_row_expire_publishes(store_t *store, int64_t now, size_t limit);
int store_mailbox_row_expire_cases(store_t *store, int64_t now, size_t limit);
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
