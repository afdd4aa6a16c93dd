/*
 * store_delivery.c — the mailboxes as store.h gives them, per delivery,
 * over the rows of store_mailbox*.c: seqs reserved, a delivery on its own
 * queued as a row of one, and the scan, counts, acks, listing and
 * queries handed to the rows' functions; a delivery's columns read from a
 * row of schema 12's deliveries table (store_delivery_row, for the
 * migrations) and moved aside there (store_set_aside_move). Trusts its
 * caller for id syntax, nothing read back from the file. Errors: -1 with
 * store_errmsg set.
 */
#include <limits.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schakel_limits.h"
#include "store.h"
#include "store_internal.h"
#include "store_mailbox.h"

/* ------------------------------------------------------------------ deliveries */

/* sender must be "<sender_partner>/<name>". */
static int sender_in_partner(const char *sender, const char *partner)
{
    size_t n = strlen(partner);
    return n > 0 && strncmp(sender, partner, n) == 0 && sender[n] == '/';
}

static int delivery_fields_present(const store_delivery_t *d)
{
    return d->recipient != NULL && d->recipient[0] != '\0' && d->message_id != NULL &&
           d->sender != NULL && d->sender_partner != NULL && d->rule_id != NULL &&
           d->rule_hash != NULL && d->purpose != NULL && d->legal_basis != NULL &&
           (d->by_ref || d->body != NULL || d->body_len == 0);
}

static int delivery_check(store_t *store, const store_delivery_t *d)
{
    if (d == NULL || !delivery_fields_present(d)) {
        store_refuse(store, "delivery_add", "a required field is missing");
        return -1;
    }
    if (!sender_in_partner(d->sender, d->sender_partner)) {
        store_refuse(store, "delivery_add", "sender is not a principal of sender_partner");
        return -1;
    }
    if (d->item_seq == 0 || d->item_seq > INT64_MAX) {
        store_refuse(store, "delivery_add", "no such item");
        return -1;
    }
    if (d->is_case_event != 0 && d->is_case_event != 1) {
        store_refuse(store, "delivery_add", "is_case_event is 0 or 1");
        return -1;
    }
    if (d->is_case_event && d->case_id == NULL) {
        store_refuse(store, "delivery_add", "a case event needs its case id");
        return -1;
    }
    if (d->case_id != NULL && strlen(d->case_id) != SCHAKEL_CASE_ID_LEN) {
        store_refuse(store, "delivery_add", "no such case");
        return -1;
    }
    if ((d->by_ref != 0 && d->by_ref != 1) || (d->by_ref && d->case_id != NULL)) {
        store_refuse(store, "delivery_add", "by_ref is 0 or 1, and only for a signal");
        return -1;
    }
    return 0;
}

int64_t store_delivery_seqs_reserve(store_t *store, uint64_t n)
{
    if (store_enter(store, "delivery_seqs_reserve") != 0)
        return -1;
    if (n == 0 || !store->txn_open) {
        store_refuse(store, "delivery_seqs_reserve",
                     n == 0 ? "no seqs asked for" : "no transaction open");
        return -1;
    }
    int64_t first = store_seq_peek(store, &store->next_delivery_seq, "delivery_seqs_reserve");
    if (first < 0)
        return -1;
    if (n > (uint64_t)(INT64_MAX - first)) { /* the last seq below INT64_MAX, as one by one */
        store_refuse(store, "delivery_seqs_reserve", "sequence numbers exhausted");
        return -1;
    }
    store->next_delivery_seq = first + (int64_t)n;
    store->delivery_high_due = 1; /* the mark passes the range at the commit */
    store->reserved_first = first;
    store->reserved_end = first + (int64_t)n;
    store->reserved_serial = store->txn_serial;
    return first;
}

/* One delivery as a mailbox row of its own (n 1): a case's with its body,
 * a signal's by reference with its mask. */
static int delivery_row_add(store_t *store, const store_delivery_t *d, int64_t seq)
{
    if (d->case_id == NULL && !d->by_ref) {
        store_refuse(store, "delivery_add", "a signal's delivery is by reference");
        return -1;
    }
    store_mailbox_entry_t entry = {
        .item_seq = d->item_seq, .item_index = d->item_index, .rule_slot = 0};
    store_mailbox_rule_t rule = {
        .rule_id = d->rule_id,
        .rule_hash = d->rule_hash,
        .purpose = d->purpose,
        .legal_basis = d->legal_basis,
        .expires_at = d->expires_at,
        .fields = d->fields,
    };
    store_mailbox_row_t row = {
        .first_seq = (uint64_t)seq,
        .recipient = d->recipient,
        .sender = d->sender,
        .sender_partner = d->sender_partner,
        .message_id = d->message_id,
        .accepted_at = d->accepted_at,
        .entries = &entry,
        .n = 1,
        .rules = &rule,
        .n_rules = 1,
        .case_id = d->case_id,
        .is_case_event = d->is_case_event,
        .body = d->case_id != NULL ? d->body : NULL,
        .body_len = d->case_id != NULL ? d->body_len : 0,
    };
    return store_mailbox_row_add(store, &row);
}

/* A delivery on its own: one seq reserved and its row, in the caller's
 * transaction or, outside one, in a transaction of its own. */
int64_t store_delivery_add(store_t *store, const store_delivery_t *d)
{
    if (store_enter(store, "delivery_add") != 0 || delivery_check(store, d) != 0)
        return -1;
    int own = !store->txn_open;
    if (own && store_begin(store) != 0)
        return -1;
    int64_t seq = store_delivery_seqs_reserve(store, 1);
    if (seq < 0 || delivery_row_add(store, d, seq) != 0) {
        if (own)
            (void)store_rollback(store);
        return -1;
    }
    if (own && store_commit(store) != 0)
        return -1;
    return seq;
}

int64_t store_delivery_add_reserved(store_t *store, const store_delivery_t *d)
{
    if (store_enter(store, "delivery_add") != 0)
        return -1;
    int64_t seq = d->seq <= (uint64_t)INT64_MAX ? (int64_t)d->seq : -1;
    if (!store->txn_open || store->reserved_serial != store->txn_serial ||
        seq < store->reserved_first || seq >= store->reserved_end) {
        store_refuse(store, "delivery_add", "seq not reserved in this transaction");
        return -1;
    }
    if (delivery_check(store, d) != 0 || delivery_row_add(store, d, seq) != 0)
        return -1;
    return seq;
}

int store_delivery_high_write(store_t *store, int64_t high)
{
    sqlite3_stmt *stmt = store->stmt[STMT_DELIVERY_HIGH_SET];
    if (store_bind_int64(store, stmt, 1, high) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    return store_stmt_run(store, stmt, "delivery seq high");
}

/* Cost: one UPDATE of a meta row per transaction that added deliveries
 * (a publish's turn, a case event's), not one per delivery. */
int store_delivery_high_flush(store_t *store)
{
    if (!store->delivery_high_due)
        return 0;
    store->delivery_high_due = 0;
    return store_delivery_high_write(store, store->next_delivery_seq - 1);
}

/* What a row's failure to open was: the row itself (it does not
 * authenticate, or reads as no broker writes it: SCAN_UNREADABLE, which
 * store_delivery_set_aside takes), or anything else (memory, SQLite). */
enum { SCAN_FAILED = -1, SCAN_UNREADABLE = -2 };



/* The columns of a delivery row the broker writes as integers: any other
 * type there (a text, a real, NULL) is damage, not a value to convert. */
static int delivery_integers_typed(sqlite3_stmt *stmt)
{
    static const int cols[] = {DCOL_SEQ,         DCOL_ITEM_SEQ,   DCOL_ITEM_INDEX,
                               DCOL_ACCEPTED_AT, DCOL_EXPIRES_AT, DCOL_IS_CASE_EVENT,
                               DCOL_BY_REF};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
        if (sqlite3_column_type(stmt, cols[i]) != SQLITE_INTEGER)
            return 0;
    return 1;
}

int store_delivery_row(sqlite3_stmt *stmt, store_delivery_t *d)
{
    size_t id_len = 0;
    int64_t item_index = sqlite3_column_int64(stmt, DCOL_ITEM_INDEX);
    d->seq = (uint64_t)sqlite3_column_int64(stmt, DCOL_SEQ);
    d->item_seq = (uint64_t)sqlite3_column_int64(stmt, DCOL_ITEM_SEQ);
    d->item_index = (uint32_t)item_index;
    d->accepted_at = sqlite3_column_int64(stmt, DCOL_ACCEPTED_AT);
    d->expires_at = sqlite3_column_int64(stmt, DCOL_EXPIRES_AT);
    d->recipient = store_column_text(stmt, DCOL_RECIPIENT);
    d->message_id = store_column_bytes(stmt, DCOL_MESSAGE_ID, &id_len);
    d->sender = store_column_text(stmt, DCOL_SENDER);
    d->sender_partner = store_column_text(stmt, DCOL_SENDER_PARTNER);
    d->rule_id = store_column_text(stmt, DCOL_RULE_ID);
    d->rule_hash = store_column_text(stmt, DCOL_RULE_HASH);
    d->purpose = store_column_text(stmt, DCOL_PURPOSE);
    d->legal_basis = store_column_text(stmt, DCOL_LEGAL_BASIS);
    d->case_id = store_column_text(stmt, DCOL_CASE_ID); /* NULL: a signal's */
    d->is_case_event = sqlite3_column_int64(stmt, DCOL_IS_CASE_EVENT) != 0;
    d->by_ref = sqlite3_column_int64(stmt, DCOL_BY_REF) != 0;
    d->body = NULL;
    d->body_len = 0;
    d->fields = 0;
    if (d->recipient == NULL || d->message_id == NULL || id_len != STORE_MESSAGE_ID_BYTES ||
        item_index < 0 || item_index > UINT32_MAX || d->sender == NULL ||
        d->sender_partner == NULL || d->rule_id == NULL || d->rule_hash == NULL ||
        d->purpose == NULL || d->legal_basis == NULL ||
        (d->case_id == NULL && sqlite3_column_type(stmt, DCOL_CASE_ID) != SQLITE_NULL) ||
        (d->is_case_event && d->case_id == NULL) || !delivery_integers_typed(stmt))
        return -1;
    return 0;
}


/* Cost: one descent of the (recipient, seq) index, then one rowid lookup and
 * one decryption per row visited; no sort (the index is in seq order) and no
 * temporary storage. Rows are stepped one at a time, so memory stays at one
 * row whatever the mailbox holds. */
int store_mailbox_scan(store_t *store, const char *recipient, uint64_t after_seq, size_t limit,
                       store_delivery_fn fn, void *arg)
{
    return store_mailbox_scan_hinted(store, recipient, after_seq, limit, NULL, fn, arg);
}

/* Cost: as store_mailbox_scan, less one item decryption per row the caller
 * says it has. */
int store_mailbox_scan_hinted(store_t *store, const char *recipient, uint64_t after_seq,
                              size_t limit, store_have_item_fn have_item, store_delivery_fn fn,
                              void *arg)
{
    store_scan_hints_t hints = {.have_item = have_item, .vouch = NULL};
    return store_mailbox_scan_vouched(store, recipient, after_seq, limit, &hints, fn, arg);
}

/* Cost: as store_mailbox_scan_hinted, less the delivery's own decryption and
 * its envelope's hash for each row the caller vouches for. */
int store_mailbox_scan_vouched(store_t *store, const char *recipient, uint64_t after_seq,
                               size_t limit, const store_scan_hints_t *hints, store_delivery_fn fn,
                               void *arg)
{
    return store_mailbox_row_scan(store, recipient, after_seq, limit, hints, fn, arg);
}

/* Cost: O(1) from the counts in memory (store_count.c); the first call for
 * a recipient in a store handle's life counts over its range of the
 * (recipient, seq) index, O(log n + pending), once. */
int64_t store_mailbox_count(store_t *store, const char *recipient)
{
    return store_mailbox_row_pending(store, recipient);
}

/* Cost: max() of the rowid is one step to the end of the table's b-tree. */
int64_t store_delivery_last_seq(store_t *store)
{
    return store_mailbox_row_last_seq(store);
}

/* Cost: O(pending deliveries): SQLite counts the rows of the smallest
 * index. Only operators ask (schakelctl status), never the routing path. */
int64_t store_backlog_total(store_t *store)
{
    return store_mailbox_row_backlog_total(store);
}

/* Cost: one rowid lookup, the row delete and its index entry deletes,
 * O(log n). The recipient is part of the WHERE clause, so one principal's
 * Ack can never remove another's delivery. */
int store_delivery_ack(store_t *store, const char *recipient, uint64_t seq)
{
    return store_mailbox_row_ack(store, recipient, seq);
}

int store_delivery_rule(store_t *store, const char *recipient, uint64_t seq,
                        store_delivery_rule_t *out)
{
    return store_mailbox_row_rule(store, recipient, seq, out);
}

/* ------------------------------------------------------------------ walking mailboxes */

int store_mailbox_next_recipient(store_t *store, const char *after, char *out, size_t outlen)
{
    return store_mailbox_row_next_recipient(store, after, out, outlen);
}

int store_mailbox_oldest(store_t *store, const char *recipient, uint64_t *seqs, size_t limit)
{
    return store_mailbox_row_oldest(store, recipient, seqs, limit);
}

/* ------------------------------------------------------------------ set aside */

uint64_t store_scan_unreadable(const store_t *store)
{
    return store != NULL ? store->scan_unreadable_seq : 0;
}

int store_set_aside_move(store_t *store, sqlite3_stmt *move, sqlite3_stmt *remove, int64_t seq,
                         int64_t now, const char *reason)
{
    int64_t longest =
        now < INT64_MAX - SCHAKEL_MAX_RETENTION_S ? now + SCHAKEL_MAX_RETENTION_S : INT64_MAX;
    if (store_bind_int64(store, move, 1, seq) != 0 || store_bind_int64(store, move, 2, now) != 0 ||
        store_bind_text(store, move, 3, reason) != 0 ||
        store_bind_int64(store, move, 4, longest) != 0) {
        store_stmt_finish(move);
        return -1;
    }
    if (store_stmt_run(store, move, "set aside") != 0)
        return -1;
    if (sqlite3_changes(store->db) != 1) {
        store_refuse(store, "set aside", "the delivery to set aside is not there");
        return -1;
    }
    if (store_bind_int64(store, remove, 1, seq) != 0) {
        store_stmt_finish(remove);
        return -1;
    }
    return store_stmt_run(store, remove, "set aside");
}






/* Cost: per row set aside after `after`, in seq order, one lookup of the
 * trail's delivery_seq index; the rows are few unless something went
 * badly wrong. */
int store_set_aside_unrecorded(store_t *store, uint64_t after, uint64_t *seqs, size_t max)
{
    return store_mailbox_row_set_aside_unrecorded(store, after, seqs, max);
}

int store_set_aside_get(store_t *store, uint64_t seq, store_set_aside_t *out)
{
    return store_mailbox_row_set_aside_get(store, seq, out);
}

/* Cost: O(rows set aside), which is none unless something went wrong. */
int64_t store_set_aside_count(store_t *store)
{
    return store_mailbox_row_set_aside_count(store);
}

int store_mailbox_list(store_t *store, const char *recipient, uint64_t after_seq, size_t limit,
                       store_listed_fn fn, void *arg)
{
    return store_mailbox_row_list(store, recipient, after_seq, limit, fn, arg);
}
