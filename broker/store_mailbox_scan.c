/*
 * store_mailbox_scan.c — a recipient's deliveries read out of its mailbox
 * rows, in seq order, as the push takes them (store_mailbox_row_scan):
 * each row's clear columns checked and its rule lines parsed, its body
 * opened at most once per call, and only for a delivery the caller does
 * not vouch for. Trusts nothing read from the file: a row that does not
 * authenticate or reads damaged stops the scan, named for setting aside.
 * Errors: -1 with store_errmsg set.
 */
#include <inttypes.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schakel_limits.h"
#include "store_mailbox_internal.h"

/* Columns of MB_SCAN. */
enum scan_col {
    SC_FIRST_SEQ,
    SC_N,
    SC_DONE,
    SC_FIRST_ITEM_SEQ,
    SC_PUBLISH_ID,
    SC_SENDER,
    SC_SENDER_PARTNER,
    SC_MESSAGE_ID,
    SC_ACCEPTED_AT,
    SC_RULES,
    SC_ITEMS,
    SC_BODY,
    SC_CASE_ID,
    SC_IS_CASE_EVENT,
    SC_PENDING,
    SC_EXPIRES_AT
};

/* ------------------------------------------------------------------ the scan */

enum { SCAN_FAILED = -1, SCAN_UNREADABLE = -2 };

/* One row of the scan, its clear columns read and checked. */
typedef struct scan_row {
    mailbox_row_clear_t clear;
    const uint8_t *done; /* n bits, or NULL: none */
    mailbox_rules_t rules;
    uint32_t masks[STORE_MAILBOX_MAX_N]; /* once opened: each slot's */
    int opened;                          /* the body opened (masks, or the case body) */
    const uint8_t *case_body;            /* a case's row once opened: in store->opened */
    size_t case_body_len;
} scan_row_t;

static int scan_damaged(store_t *store, const char *why)
{
    store_refuse(store, "mailbox_scan", why);
    return SCAN_UNREADABLE;
}

/* The integer columns the broker writes as integers. */
static int scan_integers_typed(sqlite3_stmt *stmt)
{
    static const int cols[] = {SC_FIRST_SEQ,  SC_N,           SC_FIRST_ITEM_SEQ,
                               SC_PUBLISH_ID, SC_ACCEPTED_AT, SC_IS_CASE_EVENT,
                               SC_EXPIRES_AT};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
        if (sqlite3_column_type(stmt, cols[i]) != SQLITE_INTEGER)
            return 0;
    return 1;
}

/* Read the current row of MB_SCAN into *r (strings borrow the row). 0,
 * SCAN_UNREADABLE or SCAN_FAILED. */
static int scan_read(store_t *store, sqlite3_stmt *stmt, const char *recipient, scan_row_t *r)
{
    mailbox_row_clear_t *c = &r->clear;
    r->rules = (mailbox_rules_t){NULL, NULL, 0, 0};
    size_t id_len = 0, rules_len = 0, items_len = 0, done_len = 0;
    int64_t n = sqlite3_column_int64(stmt, SC_N);
    *c = (mailbox_row_clear_t){
        .first_seq = sqlite3_column_int64(stmt, SC_FIRST_SEQ),
        .recipient = recipient,
        .publish_id = sqlite3_column_int64(stmt, SC_PUBLISH_ID),
        .first_item_seq = sqlite3_column_int64(stmt, SC_FIRST_ITEM_SEQ),
        .sender = store_column_text(stmt, SC_SENDER),
        .sender_partner = store_column_text(stmt, SC_SENDER_PARTNER),
        .message_id = store_column_bytes(stmt, SC_MESSAGE_ID, &id_len),
        .accepted_at = sqlite3_column_int64(stmt, SC_ACCEPTED_AT),
        .rules = (const char *)store_column_bytes(stmt, SC_RULES, &rules_len),
        .items = store_column_bytes(stmt, SC_ITEMS, &items_len),
        .case_id = store_column_text(stmt, SC_CASE_ID),
        .is_case_event = sqlite3_column_int64(stmt, SC_IS_CASE_EVENT) != 0,
    };
    c->rules_len = rules_len;
    int done_type = sqlite3_column_type(stmt, SC_DONE);
    r->done = done_type == SQLITE_BLOB ? store_column_bytes(stmt, SC_DONE, &done_len) : NULL;
    r->opened = 0;
    r->case_body = NULL;
    r->case_body_len = 0;
    if (sqlite3_errcode(store->db) == SQLITE_NOMEM) {
        store_refuse(store, "mailbox_scan", "out of memory");
        return SCAN_FAILED;
    }
    if (!scan_integers_typed(stmt) || !mailbox_span_ok(c->first_seq, n) ||
        !mailbox_item_seq_ok(c->first_item_seq) || c->sender == NULL || c->sender_partner == NULL ||
        c->message_id == NULL || id_len != STORE_MESSAGE_ID_BYTES || c->items == NULL ||
        items_len != 4 * (size_t)n || c->rules == NULL ||
        (done_type != SQLITE_NULL && (r->done == NULL || done_len != ((size_t)n + 7) / 8)) ||
        (c->case_id == NULL && sqlite3_column_type(stmt, SC_CASE_ID) != SQLITE_NULL) ||
        (c->case_id == NULL && c->is_case_event) || (c->case_id != NULL && n != 1) ||
        !mailbox_pending_ok(stmt, SC_PENDING, n, r->done))
        return scan_damaged(store, "damaged row: a column no broker writes so");
    c->n = (uint32_t)n;
    int parsed = store_mailbox_rules_parse(c->rules, rules_len, (size_t)n, &r->rules);
    if (parsed != 0) {
        if (parsed == -2) {
            store_refuse(store, "mailbox_scan", "out of memory");
            return SCAN_FAILED;
        }
        return scan_damaged(store, "damaged row: rule lines no broker writes so");
    }
    /* The row's expires_at (not bound by the seal) is the earliest expiry
     * of its pending deliveries, or earlier (an ack does not rewrite it):
     * later would hide them from the expiry sweep, which finds due rows
     * by it, so that is damage too. */
    int64_t earliest = INT64_MAX;
    for (uint32_t i = 0; i < c->n; i++) {
        uint32_t slot = mailbox_rule_slot_at(c->items, i);
        if (slot >= r->rules.n_slots || c->first_item_seq +
                                                (int64_t)mailbox_item_index_at(c->items, i) -
                                                (int64_t)mailbox_item_index_at(c->items, 0) <=
                                            0)
            return scan_damaged(store, "damaged row: a rule slot or item out of range");
        if (!mailbox_done_bit(r->done, i) && r->rules.slots[slot].expires_at < earliest)
            earliest = r->rules.slots[slot].expires_at;
    }
    if (sqlite3_column_int64(stmt, SC_EXPIRES_AT) > earliest)
        return scan_damaged(store, "damaged row: its expiry later than its deliveries'");
    /* this transaction's acks and removals, not yet written */
    const uint8_t *marked = store_mailbox_marked(store, c->first_seq);
    if (marked != NULL)
        r->done = marked;
    return 0;
}

/* Open the row's body once: its masks (4 bytes a slot), or a case's body
 * (left in store->opened). 0, SCAN_UNREADABLE or SCAN_FAILED. */
static int scan_open(store_t *store, sqlite3_stmt *stmt, scan_row_t *r)
{
    if (r->opened)
        return 0;
    store_seal_ad_t ad;
    if (store_mailbox_row_ad(&ad, &r->clear) != 0)
        return scan_damaged(store, "damaged row: recipient, case id or a text of a wrong size");
    char what[64];
    snprintf(what, sizeof what, "mailbox row %" PRId64, r->clear.first_seq);
    const uint8_t *body = NULL;
    size_t len = 0;
    if (store_seal_column_named(store, stmt, SC_BODY, what, &ad, &body, &len) != 0)
        return store->body_unauthentic ? SCAN_UNREADABLE : SCAN_FAILED;
    r->opened = 1;
    if (r->clear.case_id != NULL) {
        r->case_body = body;
        r->case_body_len = len;
        return 0;
    }
    if (len != 4 * r->rules.n_slots) {
        sodium_memzero(store->opened.bytes, len);
        return scan_damaged(store, "damaged row: masks of a wrong size");
    }
    for (size_t i = 0; i < r->rules.n_slots; i++)
        r->masks[i] = (uint32_t)body[4 * i] | (uint32_t)body[4 * i + 1] << 8 |
                      (uint32_t)body[4 * i + 2] << 16 | (uint32_t)body[4 * i + 3] << 24;
    sodium_memzero(store->opened.bytes, len);
    return 0;
}

/* The item's opened bytes as d's body (store->opened). 0, SCAN_UNREADABLE
 * (gone, or does not authenticate) or SCAN_FAILED. */
static int scan_item(store_t *store, store_delivery_t *d)
{
    sqlite3_stmt *stmt = store_mailbox_stmt(store, MB_SCAN_ITEM);
    if (stmt == NULL)
        return SCAN_FAILED;
    if (store_bind_int64(store, stmt, 1, (int64_t)d->item_seq) != 0) {
        store_stmt_finish(stmt);
        return SCAN_FAILED;
    }
    int rc = sqlite3_step(stmt), result = 0;
    if (rc == SQLITE_ROW) {
        store_seal_ad_t ad;
        store_seal_ad_item(&ad, (int64_t)d->item_seq, sqlite3_column_int64(stmt, 1), d->item_index);
        if (store_seal_column_named(store, stmt, 0, "item", &ad, &d->body, &d->body_len) != 0)
            result = store->body_unauthentic ? SCAN_UNREADABLE : SCAN_FAILED;
    } else if (rc == SQLITE_DONE) {
        result = scan_damaged(store, "damaged row: the delivery's item is gone");
    } else {
        store_fail(store, "mailbox_scan: item");
        result = SCAN_FAILED;
    }
    store_stmt_finish(stmt); /* the opened bytes are in store->opened, not the row's */
    return result;
}

/* Delivery i of row r as the push takes it, into *d; its body opened as
 * needed. 0, SCAN_UNREADABLE or SCAN_FAILED. */
static int scan_delivery(store_t *store, sqlite3_stmt *stmt, scan_row_t *r, uint32_t i,
                         const store_scan_hints_t *hints, void *arg, store_delivery_t *d)
{
    const mailbox_row_clear_t *c = &r->clear;
    const mailbox_rule_slot_t *slot = &r->rules.slots[mailbox_rule_slot_at(c->items, i)];
    uint32_t item_index = mailbox_item_index_at(c->items, i);
    *d = (store_delivery_t){
        .seq = (uint64_t)(c->first_seq + (int64_t)i),
        .recipient = c->recipient,
        .item_seq = (uint64_t)(c->first_item_seq + (int64_t)item_index -
                               (int64_t)mailbox_item_index_at(c->items, 0)),
        .message_id = c->message_id,
        .item_index = item_index,
        .sender = c->sender,
        .sender_partner = c->sender_partner,
        .rule_id = slot->rule_id,
        .rule_hash = slot->rule_hash,
        .purpose = slot->purpose,
        .legal_basis = slot->legal_basis,
        .accepted_at = c->accepted_at,
        .expires_at = slot->expires_at,
        .case_id = c->case_id,
        .is_case_event = c->is_case_event,
        .by_ref = c->case_id == NULL,
    };
    if (c->case_id != NULL) {
        int opened = scan_open(store, stmt, r);
        d->body = r->case_body;
        d->body_len = r->case_body_len;
        return opened;
    }
    uint32_t fields = 0;
    if (hints->vouch != NULL && hints->vouch(d, &fields, arg)) {
        d->fields = fields; /* the caller wrote this very delivery: nothing to open */
        return 0;
    }
    int opened = scan_open(store, stmt, r);
    if (opened != 0)
        return opened;
    d->fields = r->masks[mailbox_rule_slot_at(c->items, i)];
    if (hints->have_item != NULL && hints->have_item(d->item_seq, arg))
        return 0;
    return scan_item(store, d);
}

/* Hand out row r's deliveries after after_seq and not done, while
 * *visited < limit. 1 when fn asked to stop, 0 to go on, or the failure. */
static int scan_row_deliveries(store_t *store, sqlite3_stmt *stmt, scan_row_t *r,
                               uint64_t after_seq, size_t limit, const store_scan_hints_t *hints,
                               store_delivery_fn fn, void *arg, int *visited)
{
    for (uint32_t i = 0; i < r->clear.n && (size_t)*visited < limit; i++) {
        if ((uint64_t)(r->clear.first_seq + (int64_t)i) <= after_seq ||
            mailbox_done_bit(r->done, i))
            continue;
        store_delivery_t d;
        int opened = scan_delivery(store, stmt, r, i, hints, arg, &d);
        if (opened != 0)
            return opened;
        (*visited)++;
        int stop = fn(&d, arg);
        if (d.body != NULL)
            sodium_memzero(store->opened.bytes, d.body_len); /* the plaintext is fn's no longer */
        if (stop != 0)
            return 1;
    }
    return 0;
}

int store_mailbox_row_scan(store_t *store, const char *recipient, uint64_t after_seq, size_t limit,
                           const store_scan_hints_t *hints, store_delivery_fn fn, void *arg)
{
    static const store_scan_hints_t no_hints = {NULL, NULL};
    if (store_enter(store, "mailbox_scan") != 0)
        return -1;
    if (recipient == NULL || fn == NULL) {
        store_refuse(store, "mailbox_scan", "recipient and callback are required");
        return -1;
    }
    if (limit == 0 || after_seq >= INT64_MAX)
        return 0; /* nothing can be visited: no seq exceeds INT64_MAX */
    if (limit > INT_MAX)
        limit = INT_MAX; /* the count returned is an int */
    if (hints == NULL)
        hints = &no_hints;
    sqlite3_stmt *stmt = store_mailbox_stmt(store, MB_SCAN);
    if (stmt == NULL)
        return -1;
    if (store_bind_text(store, stmt, 1, recipient) != 0 ||
        store_bind_int64(store, stmt, 2, (int64_t)after_seq + 1) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    int visited = 0, result = 0, rc = SQLITE_DONE;
    store->scan_unreadable_seq = 0;
    store->in_callback = 1;
    scan_row_t *r = malloc(sizeof *r);
    if (r == NULL) {
        store_refuse(store, "mailbox_scan", "out of memory");
        result = SCAN_FAILED;
    }
    while (result == 0 && (size_t)visited < limit && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        result = scan_read(store, stmt, recipient, r);
        if (result == 0)
            result =
                scan_row_deliveries(store, stmt, r, after_seq, limit, hints, fn, arg, &visited);
        if (result == SCAN_UNREADABLE && sqlite3_column_int64(stmt, SC_FIRST_SEQ) > 0)
            store->scan_unreadable_seq = (uint64_t)sqlite3_column_int64(stmt, SC_FIRST_SEQ);
        if (r->opened) /* the masks of its slots, no more */
            sodium_memzero(r->masks, r->rules.n_slots * sizeof r->masks[0]);
        store_mailbox_rules_free(&r->rules);
    }
    free(r);
    store->in_callback = 0;
    if (result == 0 && rc != SQLITE_ROW && rc != SQLITE_DONE) {
        store_fail(store, "mailbox_scan");
        result = SCAN_FAILED;
    }
    store_stmt_finish(stmt);
    return result < 0 ? -1 : visited;
}
