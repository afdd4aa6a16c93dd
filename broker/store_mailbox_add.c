/*
 * store_mailbox_add.c — adding a mailbox row (store_mailbox_row_add): the
 * row checked against itself, against the reservation of its seqs and
 * the rows already there, and against its items' and publish's rows; the
 * items' and publish's retention raised where it falls short; the masks
 * (or a case's body) sealed under the row's associated data. Trusts its
 * caller for id syntax. Errors: -1 with store_errmsg set.
 */
#include <limits.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "schakel_limits.h"
#include "store_mailbox_internal.h"

/* ------------------------------------------------------------------ adding a row */

static int sender_in_partner(const char *sender, const char *partner)
{
    size_t n = strlen(partner);
    return n > 0 && strncmp(sender, partner, n) == 0 && sender[n] == '/';
}

static int row_refuse(store_t *store, const char *why)
{
    store_refuse(store, "mailbox_row_add", why);
    return -1;
}

static int row_rules_check(store_t *store, const store_mailbox_row_t *row)
{
    if (row->rules == NULL || row->n_rules == 0 || row->n_rules > row->n)
        return row_refuse(store, "rule lines: 1 to n are required");
    for (size_t i = 0; i < row->n_rules; i++) {
        const store_mailbox_rule_t *r = &row->rules[i];
        if (r->rule_id == NULL || r->rule_hash == NULL || r->purpose == NULL ||
            r->legal_basis == NULL || r->rule_id[0] == '\0' ||
            strlen(r->rule_id) > SCHAKEL_MAX_ID_LEN || strlen(r->rule_hash) > 64)
            return row_refuse(store, "a rule line's id, hash, purpose or legal basis is missing"
                                     " or too long");
    }
    return 0;
}

/* What row_add can check without reading the file. */
static int row_check(store_t *store, const store_mailbox_row_t *row)
{
    if (row == NULL || row->recipient == NULL || row->recipient[0] == '\0' ||
        strlen(row->recipient) > SCHAKEL_MAX_PRINCIPAL_LEN || row->sender == NULL ||
        row->sender_partner == NULL || row->message_id == NULL || row->entries == NULL)
        return row_refuse(store, "a required field is missing");
    if (row->n == 0 || row->n > STORE_MAILBOX_MAX_N)
        return row_refuse(store, "n is out of range (1 to 1024 deliveries a row)");
    if (!sender_in_partner(row->sender, row->sender_partner) ||
        strlen(row->sender) > SCHAKEL_MAX_PRINCIPAL_LEN)
        return row_refuse(store, "sender is not a principal of sender_partner");
    if (row_rules_check(store, row) != 0)
        return -1;
    if (row->case_id != NULL) {
        if (strlen(row->case_id) != SCHAKEL_CASE_ID_LEN)
            return row_refuse(store, "no such case");
        if (row->n != 1 || (row->is_case_event != 0 && row->is_case_event != 1) ||
            (row->body == NULL && row->body_len != 0))
            return row_refuse(store, "a case's row is one delivery with its body");
    } else if (row->is_case_event != 0 || row->body != NULL) {
        return row_refuse(store, "a signal's row has no body of its own (its masks are sealed)");
    }
    int64_t offset = 0;
    for (size_t i = 0; i < row->n; i++) {
        const store_mailbox_entry_t *e = &row->entries[i];
        if (e->rule_slot >= row->n_rules)
            return row_refuse(store, "a rule slot is out of range");
        if (e->item_seq == 0 || e->item_seq > INT64_MAX - 65536 || e->item_index > UINT16_MAX)
            return row_refuse(store, "no such item");
        int64_t o = (int64_t)e->item_seq - (int64_t)e->item_index;
        if (i > 0 && o != offset)
            return row_refuse(store, "the items of a row are not numbered as their publish's");
        offset = o;
    }
    if (!store->txn_open || sqlite3_get_autocommit(store->db))
        return row_refuse(store, "no transaction open");
    int64_t first = row->first_seq <= (uint64_t)INT64_MAX ? (int64_t)row->first_seq : -1;
    if (store->reserved_serial != store->txn_serial || first < store->reserved_first ||
        first >= store->reserved_end || (int64_t)row->n > store->reserved_end - first)
        return row_refuse(store, "seqs not reserved in this transaction");
    return 0;
}

/* 0 when no row holds any of the row's seqs, else -1 (refused). */
static int row_seqs_free(store_t *store, const store_mailbox_row_t *row)
{
    sqlite3_stmt *stmt = store_mailbox_stmt(store, MB_SEQS_TAKEN);
    if (stmt == NULL)
        return -1;
    int64_t last = (int64_t)row->first_seq + (int64_t)row->n - 1;
    if (store_bind_int64(store, stmt, 1, last) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    int rc = sqlite3_step(stmt);
    int taken = rc == SQLITE_ROW && sqlite3_column_int64(stmt, 0) > (int64_t)row->first_seq;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        store_fail(store, "mailbox_row_add");
    store_stmt_finish(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return -1;
    return taken ? row_refuse(store, "seqs of another row") : 0;
}

/* The row's items, min_seq .. min_seq + span - 1: read in one range, each
 * of one publish (*publish_id) at the index its seq says; raise[k] in,
 * the latest expiry of item k's deliveries in the row; out, the same where
 * the item's retention falls short of it, else INT64_MIN. 0 or -1. */
static int row_items_check(store_t *store, int64_t min_seq, size_t span, int64_t offset,
                           int64_t *raise, int64_t *publish_id)
{
    sqlite3_stmt *stmt = store_mailbox_stmt(store, MB_ITEMS);
    if (stmt == NULL)
        return -1;
    if (store_bind_int64(store, stmt, 1, min_seq) != 0 ||
        store_bind_int64(store, stmt, 2, min_seq + (int64_t)span - 1) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    size_t k = 0;
    int rc = SQLITE_DONE, ok = 1;
    while (ok && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(stmt, 0), pid = sqlite3_column_int64(stmt, 1);
        int64_t index = sqlite3_column_int64(stmt, 2), expires_at = sqlite3_column_int64(stmt, 3);
        if (k == 0)
            *publish_id = pid;
        ok = k < span && seq == min_seq + (int64_t)k && pid == *publish_id && seq - index == offset;
        if (ok && expires_at >= raise[k])
            raise[k] = INT64_MIN;
        k++;
    }
    if (ok && rc != SQLITE_DONE)
        store_fail(store, "mailbox_row_add");
    store_stmt_finish(stmt);
    if (ok && rc != SQLITE_DONE)
        return -1;
    if (!ok || k != span)
        return row_refuse(store, "item unknown, or not of one publish at the index given");
    return 0;
}

/* The publish's facts must be the row's; its retention is raised to
 * latest where it falls short. 0 or -1. */
static int row_publish_check(store_t *store, const store_mailbox_row_t *row, int64_t publish_id,
                             int64_t latest)
{
    int64_t expires_at = INT64_MIN;
    int same = 0;
    if (store->publish_serial != 0 && store->publish_serial == store->txn_serial &&
        store->added_publish_id == publish_id) {
        /* added in this transaction: as store_publish_add wrote it */
        same = strcmp(store->added_sender, row->sender) == 0 &&
               memcmp(store->added_message_id, row->message_id, STORE_MESSAGE_ID_BYTES) == 0 &&
               store->added_accepted_at == row->accepted_at;
        expires_at = store->added_expires_at;
    } else {
        sqlite3_stmt *stmt = store_mailbox_stmt(store, MB_PUBLISH);
        if (stmt == NULL)
            return -1;
        if (store_bind_int64(store, stmt, 1, publish_id) != 0) {
            store_stmt_finish(stmt);
            return -1;
        }
        int rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW) {
            size_t id_len = 0;
            const char *sender = store_column_text(stmt, 0);
            const uint8_t *id = store_column_bytes(stmt, 1, &id_len);
            same = sender != NULL && strcmp(sender, row->sender) == 0 && id != NULL &&
                   id_len == STORE_MESSAGE_ID_BYTES &&
                   memcmp(id, row->message_id, STORE_MESSAGE_ID_BYTES) == 0 &&
                   sqlite3_column_int64(stmt, 2) == row->accepted_at;
            expires_at = sqlite3_column_int64(stmt, 3);
        } else if (rc != SQLITE_DONE) {
            store_fail(store, "mailbox_row_add");
        }
        store_stmt_finish(stmt);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return -1;
    }
    if (!same)
        return row_refuse(store, "the publish's sender, message id or accepted_at differ");
    if (expires_at >= latest)
        return 0;
    sqlite3_stmt *raise = store_mailbox_stmt(store, MB_PUBLISH_RAISE);
    if (raise == NULL)
        return -1;
    if (store_bind_int64(store, raise, 1, publish_id) != 0 ||
        store_bind_int64(store, raise, 2, latest) != 0) {
        store_stmt_finish(raise);
        return -1;
    }
    return store_stmt_run(store, raise, "mailbox_row_add");
}

static int item_raise(store_t *store, int64_t item_seq, int64_t expires_at)
{
    sqlite3_stmt *stmt = store_mailbox_stmt(store, MB_ITEM_RAISE);
    if (stmt == NULL)
        return -1;
    if (store_bind_int64(store, stmt, 1, item_seq) != 0 ||
        store_bind_int64(store, stmt, 2, expires_at) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    return store_stmt_run(store, stmt, "mailbox_row_add");
}

/* A case's row: the case must exist, and its item is tied to it. */
static int row_case(store_t *store, const store_mailbox_row_t *row)
{
    sqlite3_stmt *known = store->stmt[STMT_DELIVERY_CASE_KNOWN];
    if (store_bind_text(store, known, 1, row->case_id) != 0) {
        store_stmt_finish(known);
        return -1;
    }
    int rc = sqlite3_step(known);
    store_stmt_finish(known);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        store_fail(store, "mailbox_row_add");
        return -1;
    }
    if (rc == SQLITE_DONE)
        return row_refuse(store, "no such case");
    sqlite3_stmt *link = store->stmt[STMT_DELIVERY_CASE_ITEM];
    if (store_bind_text(store, link, 1, row->case_id) != 0 ||
        store_bind_int64(store, link, 2, (int64_t)row->entries[0].item_seq) != 0) {
        store_stmt_finish(link);
        return -1;
    }
    return store_stmt_run(store, link, "mailbox_row_add");
}

/* Check the row's items and publish against their rows and raise their
 * retention where it falls short; *publish_id and *first_item_seq are
 * the row's. 0 or -1. */
static int row_facts(store_t *store, const store_mailbox_row_t *row, int64_t *publish_id,
                     int64_t *earliest)
{
    int64_t min_seq = INT64_MAX, max_seq = 0, latest = INT64_MIN;
    *earliest = INT64_MAX;
    for (size_t i = 0; i < row->n; i++) {
        int64_t seq = (int64_t)row->entries[i].item_seq;
        min_seq = seq < min_seq ? seq : min_seq;
        max_seq = seq > max_seq ? seq : max_seq;
    }
    if (max_seq - min_seq >= (int64_t)STORE_MAILBOX_MAX_N)
        return row_refuse(store, "the items of a row span more than a row holds");
    size_t span = (size_t)(max_seq - min_seq) + 1;
    int64_t raise[STORE_MAILBOX_MAX_N];
    for (size_t k = 0; k < span; k++)
        raise[k] = INT64_MIN;
    for (size_t i = 0; i < row->n; i++) {
        int64_t expires_at = row->rules[row->entries[i].rule_slot].expires_at;
        size_t k = (size_t)((int64_t)row->entries[i].item_seq - min_seq);
        raise[k] = expires_at > raise[k] ? expires_at : raise[k];
        latest = expires_at > latest ? expires_at : latest;
        *earliest = expires_at < *earliest ? expires_at : *earliest;
    }
    int64_t offset = (int64_t)row->entries[0].item_seq - (int64_t)row->entries[0].item_index;
    if (row_items_check(store, min_seq, span, offset, raise, publish_id) != 0 ||
        row_publish_check(store, row, *publish_id, latest) != 0)
        return -1;
    for (size_t k = 0; k < span; k++)
        if (raise[k] != INT64_MIN && item_raise(store, min_seq + (int64_t)k, raise[k]) != 0)
            return -1;
    return row->case_id != NULL ? row_case(store, row) : 0;
}

/* Bind the row's columns and seal its body (the masks of its rule slots,
 * 4 bytes little-endian each, or the case's body). 0 or -1. */
static int row_bind(store_t *store, sqlite3_stmt *stmt, const store_mailbox_row_t *row,
                    const mailbox_row_clear_t *c, int64_t earliest)
{
    store_seal_ad_t ad;
    if (store_mailbox_row_ad(&ad, c) != 0)
        return row_refuse(store, "a column is too long to seal");
    uint8_t masks[4 * STORE_MAILBOX_MAX_N];
    for (size_t i = 0; i < row->n_rules && row->case_id == NULL; i++) {
        uint32_t f = row->rules[i].fields;
        masks[4 * i] = (uint8_t)f;
        masks[4 * i + 1] = (uint8_t)(f >> 8);
        masks[4 * i + 2] = (uint8_t)(f >> 16);
        masks[4 * i + 3] = (uint8_t)(f >> 24);
    }
    const uint8_t *body = row->case_id == NULL ? masks : row->body;
    size_t body_len = row->case_id == NULL ? 4 * row->n_rules : row->body_len;
    int rc = store_bind_int64(store, stmt, 1, c->first_seq) != 0 ||
             store_bind_text(store, stmt, 2, c->recipient) != 0 ||
             store_bind_int64(store, stmt, 3, (int64_t)c->n) != 0 ||
             store_bind_int64(store, stmt, 4, c->publish_id) != 0 ||
             store_bind_int64(store, stmt, 5, c->first_item_seq) != 0 ||
             store_bind_text(store, stmt, 6, c->sender) != 0 ||
             store_bind_text(store, stmt, 7, c->sender_partner) != 0 ||
             store_bind_bytes(store, stmt, 8, c->message_id, STORE_MESSAGE_ID_BYTES) != 0 ||
             store_bind_int64(store, stmt, 9, c->accepted_at) != 0 ||
             store_bind_text(store, stmt, 10, c->rules) != 0 ||
             store_bind_bytes(store, stmt, 11, c->items, 4 * (size_t)c->n) != 0 ||
             store_bind_int64(store, stmt, 12, earliest) != 0 ||
             store_seal_bind(store, stmt, 13, &ad, body, body_len) != 0 ||
             store_bind_int64(store, stmt, 15, c->is_case_event ? 1 : 0) != 0 ||
             (c->case_id != NULL && store_bind_text(store, stmt, 14, c->case_id) != 0);
    sodium_memzero(masks, sizeof masks);
    return rc ? -1 : 0;
}

int store_mailbox_row_add(store_t *store, const store_mailbox_row_t *row)
{
    if (store_enter(store, "mailbox_row_add") != 0 || row_check(store, row) != 0 ||
        row_seqs_free(store, row) != 0)
        return -1;
    int64_t publish_id = 0, earliest = INT64_MAX;
    if (row_facts(store, row, &publish_id, &earliest) != 0)
        return -1;
    uint8_t items[4 * STORE_MAILBOX_MAX_N];
    for (size_t i = 0; i < row->n; i++)
        mailbox_item_put(items, i, row->entries[i].item_index, row->entries[i].rule_slot);
    char *rules = NULL;
    size_t rules_len = 0;
    if (store_mailbox_rules_encode(row->rules, row->n_rules, &rules, &rules_len) != 0)
        return row_refuse(store, "out of memory");
    mailbox_row_clear_t c = {
        .first_seq = (int64_t)row->first_seq,
        .n = (uint32_t)row->n,
        .recipient = row->recipient,
        .publish_id = publish_id,
        .first_item_seq = (int64_t)row->entries[0].item_seq,
        .sender = row->sender,
        .sender_partner = row->sender_partner,
        .message_id = row->message_id,
        .accepted_at = row->accepted_at,
        .rules = rules,
        .rules_len = rules_len,
        .items = items,
        .case_id = row->case_id,
        .is_case_event = row->is_case_event,
    };
    sqlite3_stmt *stmt = store_mailbox_stmt(store, MB_ADD);
    int rc = stmt == NULL ? -1 : row_bind(store, stmt, row, &c, earliest);
    if (rc == 0)
        rc = store_stmt_run(store, stmt, "mailbox_row_add");
    else if (stmt != NULL)
        store_stmt_finish(stmt);
    free(rules);
    if (rc != 0)
        return -1;
    store_count_change(store, row->recipient, (int64_t)row->n);
    return 0;
}
