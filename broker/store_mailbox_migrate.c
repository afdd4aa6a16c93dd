/*
 * store_mailbox_migrate.c — the mailbox rows' side of the store's life
 * outside the push (store_mailbox.h): the migration that moves every
 * delivery of the deliveries tables into rows of one delivery
 * (docs/design/mailbox.md, section 3.2 "Migration"), the rekey of the
 * rows, and the highest delivery seq they name, for the counters.
 * Trusts nothing read from the file: a delivery that does not open or
 * reads damaged is set aside with the reason, never guessed at; a row
 * that does not open refuses the rekey. Errors: -1 with store_errmsg set.
 */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "schakel_limits.h"
#include "store_mailbox_internal.h"

/* How many deliveries between two calls of the progress hook (as
 * store_migrate.c's steps). */
#define MIGRATE_PROGRESS_ROWS 10000u

/* ------------------------------------------------------------------ the migration */

/* A delivery's columns (STORE_DELIVERY_COLUMNS' order, for
 * store_delivery_row), its item's publish as the publishes table has it
 * (NULL when the item or its publish is gone), its item's own index and
 * retention, whether its case is there, and for a row set aside its when
 * and why. One pass in seq order: the rowid is the walk's order, the joins
 * one rowid lookup each. Only mailbox tables are written while it steps. */
#define MIGRATE_COLUMNS                                                                            \
    "d.seq, d.recipient, d.item_seq, d.message_id, d.item_index, d.sender, d.sender_partner,"      \
    " d.rule_id, d.rule_hash, d.purpose, d.legal_basis, d.accepted_at, d.expires_at, d.body,"      \
    " d.case_id, d.is_case_event, d.by_ref, p.id, i.item_index, i.expires_at"
#define MIGRATE_FROM(table)                                                                        \
    " FROM " table " AS d LEFT JOIN items AS i ON i.seq = d.item_seq"                              \
    " LEFT JOIN publishes AS p ON p.id = i.publish_id ORDER BY d.seq"
enum migrate_col {
    MC_PUBLISH_ID = DCOL_COUNT,
    MC_ITEM_INDEX,
    MC_ITEM_EXPIRES_AT,
    MC_CASE_KNOWN,
    MC_SET_ASIDE_AT,
    MC_REASON
};

static const char walk_deliveries_sql[] =
    "SELECT " MIGRATE_COLUMNS ", d.case_id IS NULL OR EXISTS (SELECT 1 FROM cases AS c"
    " WHERE c.case_id = d.case_id)" MIGRATE_FROM("deliveries");
static const char walk_set_aside_sql[] =
    "SELECT " MIGRATE_COLUMNS ", 1, d.set_aside_at, d.reason" MIGRATE_FROM("deliveries_set_aside");

/* A row of one delivery set aside: its columns as the delivery had them,
 * its rule line and items made from them (aside_bind), done NULL. */
static const char aside_insert_sql[] =
    "INSERT INTO mailbox_set_aside (first_seq, recipient, n, pending, publish_id, first_item_seq,"
    " sender, sender_partner, message_id, accepted_at, rules, items, expires_at, body, done,"
    " case_id, is_case_event, set_aside_at, reason)"
    " VALUES (?1, ?2, 1, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, NULL, ?13, ?14, ?15, ?16)";

/* The statements of one migration, prepared and finalized by it. */
typedef struct migration {
    sqlite3_stmt *walk, *aside;
    int64_t now;
    uint64_t walked; /* moved or set aside, both tables */
    uint64_t aside_count;
} migration_t;

enum { MOVED = 0, SET_ASIDE = 1 };

/* Bind column col of the walk's current row to param as it is (its type
 * and bytes). */
static int bind_copy(store_t *store, sqlite3_stmt *stmt, int param, sqlite3_stmt *walk, int col)
{
    return store_check_rc(store, sqlite3_bind_value(stmt, param, sqlite3_column_value(walk, col)),
                          "mailbox migration: bind");
}

/* A text column as a rule field: SQLite's text of whatever it holds, ""
 * for NULL (a row set aside says what it can). */
static const char *aside_text(sqlite3_stmt *walk, int col)
{
    const char *text = store_column_text(walk, col);
    return text != NULL ? text : "";
}

/* Bind ?1 .. ?14 of aside_insert_sql from the walk's current row: every
 * column the delivery had, copied; its rule line from its rule's columns
 * with expires_at as its expiry (the caller's: bounded, see
 * migrate_aside); its items the delivery's item index with rule slot 0,
 * or NULL when the index is not one a row can hold (then the row is read
 * as damaged wherever it is read). 0 or -1. */
static int aside_bind(store_t *store, sqlite3_stmt *aside, sqlite3_stmt *walk, int64_t expires_at)
{
    store_mailbox_rule_t rule = {aside_text(walk, DCOL_RULE_ID),
                                 aside_text(walk, DCOL_RULE_HASH),
                                 aside_text(walk, DCOL_PURPOSE),
                                 aside_text(walk, DCOL_LEGAL_BASIS),
                                 expires_at,
                                 0};
    if (sqlite3_errcode(store->db) == SQLITE_NOMEM) {
        store_refuse(store, "mailbox migration", "out of memory");
        return -1;
    }
    char *rules = NULL;
    size_t rules_len = 0;
    if (store_mailbox_rules_encode(&rule, 1, &rules, &rules_len) != 0) {
        store_refuse(store, "mailbox migration", "out of memory");
        return -1;
    }
    int64_t index = sqlite3_column_int64(walk, DCOL_ITEM_INDEX);
    int index_fits = sqlite3_column_type(walk, DCOL_ITEM_INDEX) == SQLITE_INTEGER && index >= 0 &&
                     index <= UINT16_MAX;
    uint8_t items[4];
    mailbox_item_put(items, 0, index_fits ? (uint32_t)index : 0, 0);
    int rc =
        bind_copy(store, aside, 1, walk, DCOL_SEQ) != 0 ||
        bind_copy(store, aside, 2, walk, DCOL_RECIPIENT) != 0 ||
        bind_copy(store, aside, 3, walk, MC_PUBLISH_ID) != 0 ||
        bind_copy(store, aside, 4, walk, DCOL_ITEM_SEQ) != 0 ||
        bind_copy(store, aside, 5, walk, DCOL_SENDER) != 0 ||
        bind_copy(store, aside, 6, walk, DCOL_SENDER_PARTNER) != 0 ||
        bind_copy(store, aside, 7, walk, DCOL_MESSAGE_ID) != 0 ||
        bind_copy(store, aside, 8, walk, DCOL_ACCEPTED_AT) != 0 ||
        store_check_rc(
            store, sqlite3_bind_text64(aside, 9, rules, rules_len, SQLITE_TRANSIENT, SQLITE_UTF8),
            "mailbox migration: bind") != 0 ||
        store_check_rc(store,
                       index_fits
                           ? sqlite3_bind_blob(aside, 10, items, sizeof items, SQLITE_TRANSIENT)
                           : sqlite3_bind_null(aside, 10),
                       "mailbox migration: bind") != 0 ||
        store_bind_int64(store, aside, 11, expires_at) != 0 ||
        bind_copy(store, aside, 12, walk, DCOL_BODY) != 0 ||
        bind_copy(store, aside, 13, walk, DCOL_CASE_ID) != 0 ||
        bind_copy(store, aside, 14, walk, DCOL_IS_CASE_EVENT) != 0;
    free(rules);
    return rc ? -1 : 0;
}

/* Set aside the delivery the walk stands on (of deliveries), as the push
 * would have (store_delivery_set_aside): its expiry bounded by what the
 * broker can trust, as STORE_SET_ASIDE_MOVE_SQL bounds it (its item's
 * retention, at most the longest a policy may set from now; due at once
 * when it is not a number), so a damaged expiry cannot keep the row, its
 * item and its case for ever. No audit entry names it yet: whoever opened
 * the store records it. 0 or -1. */
static int migrate_aside(store_t *store, migration_t *m, const char *why)
{
    int64_t longest =
        m->now < INT64_MAX - SCHAKEL_MAX_RETENTION_S ? m->now + SCHAKEL_MAX_RETENTION_S : INT64_MAX;
    int64_t expires_at = m->now;
    if (sqlite3_column_type(m->walk, DCOL_EXPIRES_AT) == SQLITE_INTEGER) {
        expires_at = sqlite3_column_int64(m->walk, DCOL_EXPIRES_AT);
        expires_at = expires_at < longest ? expires_at : longest;
        int64_t item = sqlite3_column_int64(m->walk, MC_ITEM_EXPIRES_AT);
        if (sqlite3_column_type(m->walk, MC_ITEM_EXPIRES_AT) == SQLITE_INTEGER && item < expires_at)
            expires_at = item;
    }
    if (aside_bind(store, m->aside, m->walk, expires_at) != 0 ||
        store_bind_int64(store, m->aside, 15, m->now) != 0 ||
        store_bind_text(store, m->aside, 16, why) != 0) {
        store_stmt_finish(m->aside);
        return -1;
    }
    if (store_stmt_run(store, m->aside, "mailbox migration: set a delivery aside") != 0)
        return -1;
    /* it was counted as its recipient's, and is pending no longer */
    const char *recipient = store_column_text(m->walk, DCOL_RECIPIENT);
    if (store->txn_open && recipient != NULL &&
        sqlite3_column_type(m->walk, DCOL_RECIPIENT) == SQLITE_TEXT)
        store_count_change(store, recipient, -1);
    m->aside_count++;
    return 0;
}

/* What in the walk's current row (read into d) keeps the delivery from
 * being a row, before its body is opened: NULL when nothing does. Rows
 * name their item by the index of its publish in 16 bits, and bind the
 * publish id, which only the item's row gives: a delivery whose item or
 * publish is gone, or whose index is not its item's, could only be moved
 * by guessing. */
static const char *delivery_no_row(sqlite3_stmt *walk, const store_delivery_t *d)
{
    if (!mailbox_span_ok((int64_t)d->seq, 1) || !mailbox_item_seq_ok((int64_t)d->item_seq) ||
        d->item_index > UINT16_MAX)
        return "damaged row: a seq, item seq or item index no row can hold";
    if (sqlite3_column_type(walk, MC_PUBLISH_ID) != SQLITE_INTEGER)
        return "damaged row: the delivery's item or its publish is gone";
    if (sqlite3_column_int64(walk, MC_ITEM_INDEX) != (int64_t)d->item_index)
        return "damaged row: the delivery's item index is not its item's";
    if (sqlite3_column_int64(walk, MC_CASE_KNOWN) == 0)
        return "damaged row: the delivery's case is gone";
    if (d->case_id == NULL && !d->by_ref)
        return "a signal queued with a body of its own (before schema 5) has no mailbox row form";
    return NULL;
}

/* Write the delivery d (the walk's current row), its body opened (for a
 * signal by reference its field mask), as a mailbox row of one delivery:
 * the module's own encoding (one rule line, one item entry) sealed under
 * the rows' associated data, inserted with MB_ADD as store_mailbox_row_add
 * inserts, but without its checks against a reservation of seqs (these
 * were handed out long ago) and against the items and the publish (the
 * delivery's seal bound its envelope as the broker wrote it, checked then,
 * and the publish id comes from its item's row). MOVED, SET_ASIDE (why
 * set) or -1. */
static int migrate_row(store_t *store, sqlite3_stmt *walk, const store_delivery_t *d,
                       const uint8_t *body, size_t body_len, char *why, size_t why_len)
{
    uint32_t fields = 0;
    if (d->case_id == NULL) {
        if (body_len != 4) {
            snprintf(why, why_len, "damaged row: a field mask of a wrong size");
            return SET_ASIDE;
        }
        fields = (uint32_t)body[0] | (uint32_t)body[1] << 8 | (uint32_t)body[2] << 16 |
                 (uint32_t)body[3] << 24;
    }
    store_mailbox_rule_t rule = {d->rule_id,     d->rule_hash,  d->purpose,
                                 d->legal_basis, d->expires_at, fields};
    char *rules = NULL;
    size_t rules_len = 0;
    if (store_mailbox_rules_encode(&rule, 1, &rules, &rules_len) != 0) {
        store_refuse(store, "mailbox migration", "out of memory");
        return -1;
    }
    uint8_t items[4];
    mailbox_item_put(items, 0, d->item_index, 0);
    mailbox_row_clear_t c = {
        .first_seq = (int64_t)d->seq,
        .n = 1,
        .recipient = d->recipient,
        .publish_id = sqlite3_column_int64(walk, MC_PUBLISH_ID),
        .first_item_seq = (int64_t)d->item_seq,
        .sender = d->sender,
        .sender_partner = d->sender_partner,
        .message_id = d->message_id,
        .accepted_at = d->accepted_at,
        .rules = rules,
        .rules_len = rules_len,
        .items = items,
        .case_id = d->case_id,
        .is_case_event = d->is_case_event,
    };
    store_seal_ad_t ad;
    if (store_mailbox_row_ad(&ad, &c) != 0) {
        free(rules);
        snprintf(why, why_len, "damaged row: a column too long for a mailbox row");
        return SET_ASIDE;
    }
    uint8_t mask[4] = {(uint8_t)fields, (uint8_t)(fields >> 8), (uint8_t)(fields >> 16),
                       (uint8_t)(fields >> 24)};
    sqlite3_stmt *add = store_mailbox_stmt(store, MB_ADD);
    int rc = add == NULL;
    if (!rc)
        rc = store_bind_int64(store, add, 1, c.first_seq) != 0 ||
             store_bind_text(store, add, 2, c.recipient) != 0 ||
             store_bind_int64(store, add, 3, 1) != 0 ||
             store_bind_int64(store, add, 4, c.publish_id) != 0 ||
             store_bind_int64(store, add, 5, c.first_item_seq) != 0 ||
             store_bind_text(store, add, 6, c.sender) != 0 ||
             store_bind_text(store, add, 7, c.sender_partner) != 0 ||
             store_bind_bytes(store, add, 8, c.message_id, STORE_MESSAGE_ID_BYTES) != 0 ||
             store_bind_int64(store, add, 9, c.accepted_at) != 0 ||
             store_bind_text(store, add, 10, c.rules) != 0 ||
             store_bind_bytes(store, add, 11, items, sizeof items) != 0 ||
             store_bind_int64(store, add, 12, d->expires_at) != 0 ||
             store_seal_bind(store, add, 13, &ad, d->case_id == NULL ? mask : body,
                             d->case_id == NULL ? sizeof mask : body_len) != 0 ||
             (d->case_id != NULL && store_bind_text(store, add, 14, d->case_id) != 0) ||
             store_bind_int64(store, add, 15, d->is_case_event ? 1 : 0) != 0;
    sodium_memzero(mask, sizeof mask);
    if (rc && add != NULL)
        store_stmt_finish(add);
    else if (!rc)
        rc = store_stmt_run(store, add, "mailbox migration: write a row");
    free(rules);
    return rc ? -1 : MOVED;
}

/* The delivery the walk stands on, moved: MOVED, SET_ASIDE (why set) or
 * -1. Its body is opened under the deliveries' seal (the layout of schema
 * 9 on, store_seal_ad_delivery) and wiped once sealed again. */
static int migrate_delivery(store_t *store, sqlite3_stmt *walk, char *why, size_t why_len)
{
    store_delivery_t d;
    if (store_delivery_row(walk, &d) != 0) {
        if (sqlite3_errcode(store->db) == SQLITE_NOMEM) {
            store_refuse(store, "mailbox migration", "out of memory");
            return -1;
        }
        snprintf(why, why_len, "damaged row: a column no broker writes so");
        return SET_ASIDE;
    }
    const char *no_row = delivery_no_row(walk, &d);
    if (no_row != NULL) {
        snprintf(why, why_len, "%s", no_row);
        return SET_ASIDE;
    }
    store_seal_ad_t ad;
    if (store_seal_ad_delivery(&ad, (int64_t)d.seq, &d) != 0) {
        snprintf(why, why_len, "damaged row: recipient or case id of a wrong size");
        return SET_ASIDE;
    }
    const uint8_t *body = NULL;
    size_t len = 0;
    if (store_seal_column(store, walk, DCOL_BODY, (int64_t)d.seq, &ad, &body, &len) != 0) {
        if (!store->body_unauthentic)
            return -1;
        snprintf(why, why_len, "%.200s (migration to the mailbox rows)", store->errmsg);
        return SET_ASIDE;
    }
    int rc = migrate_row(store, walk, &d, body, len, why, why_len);
    sodium_memzero(store->opened.bytes, len);
    return rc;
}

/* Step m->walk through its table: each delivery moved into a row or set
 * aside (deliveries), or each row copied aside as it is (set_aside_table:
 * deliveries_set_aside). 0 or -1. */
static int migrate_walk(store_t *store, migration_t *m, int set_aside_table)
{
    int rc;
    while ((rc = sqlite3_step(m->walk)) == SQLITE_ROW) {
        if (set_aside_table) {
            /* copied as it is; its expiry was bounded when it was set aside,
             * one that is not a number is due at once as it would be there */
            int64_t expires_at = sqlite3_column_type(m->walk, DCOL_EXPIRES_AT) == SQLITE_INTEGER
                                     ? sqlite3_column_int64(m->walk, DCOL_EXPIRES_AT)
                                     : m->now;
            if (aside_bind(store, m->aside, m->walk, expires_at) != 0 ||
                bind_copy(store, m->aside, 15, m->walk, MC_SET_ASIDE_AT) != 0 ||
                bind_copy(store, m->aside, 16, m->walk, MC_REASON) != 0) {
                store_stmt_finish(m->aside);
                return -1;
            }
            if (store_stmt_run(store, m->aside, "mailbox migration: move a row set aside") != 0)
                return -1;
        } else {
            char why[STORE_SET_ASIDE_REASON_LEN];
            int moved = migrate_delivery(store, m->walk, why, sizeof why);
            if (moved < 0 || (moved == SET_ASIDE && migrate_aside(store, m, why) != 0))
                return -1;
        }
        if (++m->walked % MIGRATE_PROGRESS_ROWS == 0)
            store_progress("moving deliveries into mailbox rows", m->walked);
    }
    if (rc != SQLITE_DONE) {
        store_fail(store, "mailbox migration: read a delivery");
        return -1;
    }
    return 0;
}

/* Dropping the old tables is safe because everything in them was moved,
 * in this same transaction, into mailbox and mailbox_set_aside (or the
 * migration failed, and the rollback takes the copies and the drops
 * together). The drop also takes the deliveries' row of sqlite_sequence,
 * the high-water mark before schema 12: folded into delivery_seq_high
 * first, as step 12 computes it, so no seq it covered is handed out
 * again whatever delivery_seq_high held. */
static const char drop_sql[] =
    "INSERT OR REPLACE INTO meta (name, value) SELECT 'delivery_seq_high', max("
    "  coalesce((SELECT value FROM meta WHERE name = 'delivery_seq_high'"
    "   AND typeof(value) = 'integer'), 0),"
    "  coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'deliveries'), 0),"
    "  coalesce((SELECT max(seq) FROM deliveries), 0),"
    "  coalesce((SELECT max(seq) FROM deliveries_set_aside), 0));"
    "DROP TABLE deliveries_set_aside;"
    "DROP TABLE deliveries;";

/* Refused unless the mailbox tables are empty: the rows made here are of
 * one delivery at the delivery's own seq, which cannot meet another row's
 * only because there is none. */
static int migrate_check(store_t *store)
{
    if (sqlite3_get_autocommit(store->db)) {
        store_refuse(store, "mailbox migration", "no transaction open");
        return -1;
    }
    int64_t rows = 0;
    if (store_query_int64(store,
                          "SELECT EXISTS (SELECT 1 FROM mailbox)"
                          " OR EXISTS (SELECT 1 FROM mailbox_set_aside)",
                          &rows) != 0)
        return -1;
    if (rows != 0) {
        store_refuse(store, "mailbox migration", "the mailbox tables are not empty");
        return -1;
    }
    return 0;
}

int store_mailbox_migrate(store_t *store)
{
    if (store_enter(store, "mailbox migration") != 0 || migrate_check(store) != 0)
        return -1;
    migration_t m = {NULL, NULL, (int64_t)time(NULL), 0, 0};
    int result = 0;
    for (int table = 0; table < 2 && result == 0; table++) {
        if (sqlite3_prepare_v2(store->db, table == 0 ? walk_deliveries_sql : walk_set_aside_sql, -1,
                               &m.walk, NULL) != SQLITE_OK ||
            (m.aside == NULL &&
             sqlite3_prepare_v2(store->db, aside_insert_sql, -1, &m.aside, NULL) != SQLITE_OK)) {
            store_fail(store, "mailbox migration: prepare");
            result = -1;
        } else {
            result = migrate_walk(store, &m, table == 1);
        }
        (void)sqlite3_finalize(m.walk); /* NULL-safe; repeats codes handled above */
        m.walk = NULL;
    }
    (void)sqlite3_finalize(m.aside);
    if (result == 0 && m.walked > 0) /* the drops overwrite every page: as long again */
        store_progress("dropping the deliveries tables", m.walked);
    if (result == 0)
        result = store_exec_fixed(store, drop_sql, "mailbox migration: drop the deliveries tables");
    return result;
}

/* ------------------------------------------------------------------ rekey */

/* A row's columns its associated data binds, and its body; by first_seq,
 * one at a time: the SELECT is reset before the row is rewritten, as
 * store_rekey does. */
static const char rekey_next_sql[] =
    "SELECT first_seq, n, first_item_seq, publish_id, sender, sender_partner, message_id,"
    " accepted_at, rules, items, body, case_id, is_case_event, recipient FROM mailbox"
    " WHERE first_seq > ?1 ORDER BY first_seq LIMIT 1";
static const char rekey_update_sql[] = "UPDATE mailbox SET body = ?2 WHERE first_seq = ?1";
enum rekey_col {
    RC_FIRST_SEQ,
    RC_N,
    RC_FIRST_ITEM_SEQ,
    RC_PUBLISH_ID,
    RC_SENDER,
    RC_SENDER_PARTNER,
    RC_MESSAGE_ID,
    RC_ACCEPTED_AT,
    RC_RULES,
    RC_ITEMS,
    RC_BODY,
    RC_CASE_ID,
    RC_IS_CASE_EVENT,
    RC_RECIPIENT
};

/* The current row's clear columns into *c, borrowing the row, checked as
 * the scan checks them before it computes the associated data; 0, or -1
 * for a row no broker writes. */
static int rekey_clear(sqlite3_stmt *row, mailbox_row_clear_t *c)
{
    static const int integers[] = {RC_FIRST_SEQ,  RC_N,           RC_FIRST_ITEM_SEQ,
                                   RC_PUBLISH_ID, RC_ACCEPTED_AT, RC_IS_CASE_EVENT};
    for (size_t i = 0; i < sizeof integers / sizeof integers[0]; i++)
        if (sqlite3_column_type(row, integers[i]) != SQLITE_INTEGER)
            return -1;
    size_t id_len = 0, rules_len = 0, items_len = 0;
    int64_t n = sqlite3_column_int64(row, RC_N);
    *c = (mailbox_row_clear_t){
        .first_seq = sqlite3_column_int64(row, RC_FIRST_SEQ),
        .recipient = store_column_text(row, RC_RECIPIENT),
        .publish_id = sqlite3_column_int64(row, RC_PUBLISH_ID),
        .first_item_seq = sqlite3_column_int64(row, RC_FIRST_ITEM_SEQ),
        .sender = store_column_text(row, RC_SENDER),
        .sender_partner = store_column_text(row, RC_SENDER_PARTNER),
        .message_id = store_column_bytes(row, RC_MESSAGE_ID, &id_len),
        .accepted_at = sqlite3_column_int64(row, RC_ACCEPTED_AT),
        .rules = (const char *)store_column_bytes(row, RC_RULES, &rules_len),
        .items = store_column_bytes(row, RC_ITEMS, &items_len),
        .case_id = store_column_text(row, RC_CASE_ID),
        .is_case_event = sqlite3_column_int64(row, RC_IS_CASE_EVENT) != 0,
    };
    c->rules_len = rules_len;
    if (!mailbox_span_ok(c->first_seq, n) || c->recipient == NULL || c->sender == NULL ||
        c->sender_partner == NULL || c->message_id == NULL || id_len != STORE_MESSAGE_ID_BYTES ||
        c->rules == NULL || c->items == NULL || items_len != 4 * (size_t)n ||
        (c->case_id == NULL && sqlite3_column_type(row, RC_CASE_ID) != SQLITE_NULL))
        return -1;
    c->n = (uint32_t)n;
    return 0;
}

/* Seal body under key (not the store's) and bind it to param: store_seal.c
 * seals under store->seal_key only, so the key is lent to it for the one
 * seal and given back. 0 or -1. */
static int seal_bind_under(store_t *store, uint8_t *key, sqlite3_stmt *stmt, int param,
                           const store_seal_ad_t *ad, const uint8_t *body, size_t len)
{
    uint8_t *own = store->seal_key;
    store->seal_key = key;
    int rc = store_seal_bind(store, stmt, param, ad, body, len);
    store->seal_key = own;
    return rc;
}

/* The first row after *after opened under the store key and its body
 * sealed under key, bound to update (?1 its first_seq, ?2 the body): 1;
 * 0 when none is left; -1 (a row that does not open or reads damaged,
 * named in errmsg, included). next is reset before the caller rewrites. */
static int rekey_next(store_t *store, sqlite3_stmt *next, sqlite3_stmt *update, uint8_t *key,
                      int64_t *after)
{
    if (store_bind_int64(store, next, 1, *after) != 0) {
        store_stmt_finish(next);
        return -1;
    }
    int rc = sqlite3_step(next), result = -1;
    mailbox_row_clear_t c;
    store_seal_ad_t ad;
    if (rc == SQLITE_DONE) {
        result = 0;
    } else if (rc != SQLITE_ROW) {
        store_fail(store, "rekey: read");
    } else if (rekey_clear(next, &c) != 0 || store_mailbox_row_ad(&ad, &c) != 0) {
        store->last_rc = 0;
        snprintf(store->errmsg, sizeof store->errmsg, "rekey: mailbox row %" PRId64 ": damaged row",
                 (int64_t)sqlite3_column_int64(next, RC_FIRST_SEQ));
    } else {
        char what[48];
        snprintf(what, sizeof what, "mailbox row %" PRId64, c.first_seq);
        const uint8_t *body = NULL;
        size_t len = 0;
        if (store_seal_column_named(store, next, RC_BODY, what, &ad, &body, &len) == 0) {
            *after = c.first_seq;
            if (seal_bind_under(store, key, update, 2, &ad, body, len) == 0 &&
                store_bind_int64(store, update, 1, c.first_seq) == 0)
                result = 1;
            sodium_memzero(store->opened.bytes, len);
        }
    }
    store_stmt_finish(next);
    return result;
}

int store_mailbox_rekey(store_t *store, const uint8_t new_key[STORE_KEY_BYTES],
                        store_rekey_counts_t *counts)
{
    if (store_enter(store, "rekey") != 0)
        return -1;
    if (new_key == NULL) {
        store_refuse(store, "rekey", "no new key");
        return -1;
    }
    if (sqlite3_get_autocommit(store->db)) {
        store_refuse(store, "rekey", "no transaction open");
        return -1;
    }
    sqlite3_stmt *next = NULL, *update = NULL;
    int result = 0;
    if (sqlite3_prepare_v2(store->db, rekey_next_sql, -1, &next, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(store->db, rekey_update_sql, -1, &update, NULL) != SQLITE_OK) {
        store_fail(store, "rekey: prepare");
        result = -1;
    }
    uint8_t key[STORE_KEY_BYTES];
    memcpy(key, new_key, sizeof key);
    int64_t after = 0;
    uint64_t rows = 0;
    while (result == 0) {
        int found = rekey_next(store, next, update, key, &after);
        if (found <= 0) {
            if (found < 0)
                store_stmt_finish(update); /* a body may be bound */
            result = found;
            break;
        }
        if (store_stmt_run(store, update, "rekey: rewrite body") != 0)
            result = -1;
        else
            rows++;
    }
    sodium_memzero(key, sizeof key);
    (void)sqlite3_finalize(update); /* NULL-safe; repeats codes handled above */
    (void)sqlite3_finalize(next);
    if (result == 0 && counts != NULL)
        counts->mailbox_rows += rows;
    return result;
}

/* ------------------------------------------------------------------ counters */

int store_mailbox_seq_high(store_t *store, int64_t *high)
{
    if (store_enter(store, "mailbox_seq_high") != 0)
        return -1;
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(store->db, "SELECT " STORE_MAILBOX_SEQ_HIGH_SQL, -1, &stmt, NULL) !=
        SQLITE_OK) {
        store_fail(store, "mailbox_seq_high");
        return -1;
    }
    int rc = sqlite3_step(stmt), result = -1;
    if (rc == SQLITE_ROW && sqlite3_column_type(stmt, 0) == SQLITE_INTEGER) {
        *high = sqlite3_column_int64(stmt, 0);
        result = 0;
    } else if (rc == SQLITE_ROW) {
        store_refuse(store, "mailbox_seq_high", "not a number");
    } else {
        store_fail(store, "mailbox_seq_high");
    }
    (void)sqlite3_finalize(stmt);
    return result;
}
