/*
 * store_fixture_v12.c — a store of schema 12 made from one of schema 13
 * (store_fixture_v12.h): the mailbox rows read back through the store's
 * own scan, each pending delivery written as a deliveries row by
 * store_fixture_delivery_put (sealed under the layout of schema 9 to 12),
 * the set-aside rows expanded into deliveries_set_aside, the mailbox
 * tables dropped. Trusts the test that calls it; every failure fails that test.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>
#include <sqlite3.h>

#include "store_fixture.h"
#include "store_fixture_v12.h"
#include "store_internal.h"
#include "store_mailbox_internal.h"
#include "store_v12_schema.h"

/* What schema 13 added, gone; AUTOINCREMENT's mark of deliveries at the
 * highest seq handed out (every seq of schema 12 was a row of it once). */
static const char v12_finish_sql[] =
    "DELETE FROM sqlite_sequence WHERE name = 'deliveries';"
    "INSERT INTO sqlite_sequence (name, seq) SELECT 'deliveries', max("
    "  coalesce((SELECT value FROM meta WHERE name = 'delivery_seq_high'), 0),"
    "  coalesce((SELECT max(seq) FROM deliveries), 0),"
    "  coalesce((SELECT max(seq) FROM deliveries_set_aside), 0));"
    "DROP TABLE mailbox;"
    "DROP TABLE mailbox_set_aside;"
    "PRAGMA user_version = 12;";

static const char v12_aside_insert_sql[] =
    "INSERT INTO deliveries_set_aside (seq, recipient, item_seq, message_id, item_index, sender,"
    " sender_partner, rule_id, rule_hash, purpose, legal_basis, accepted_at, expires_at, body,"
    " case_id, is_case_event, by_ref, set_aside_at, reason)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,"
    " ?19)";

static const char v12_aside_walk_sql[] =
    "SELECT first_seq, recipient, n, done, first_item_seq, sender, sender_partner, message_id,"
    " accepted_at, rules, items, expires_at, body, case_id, is_case_event, set_aside_at, reason"
    " FROM mailbox_set_aside ORDER BY first_seq";
enum v12_aside_col {
    VA_FIRST_SEQ,
    VA_RECIPIENT,
    VA_N,
    VA_DONE,
    VA_FIRST_ITEM_SEQ,
    VA_SENDER,
    VA_SENDER_PARTNER,
    VA_MESSAGE_ID,
    VA_ACCEPTED_AT,
    VA_RULES,
    VA_ITEMS,
    VA_EXPIRES_AT,
    VA_BODY,
    VA_CASE_ID,
    VA_IS_CASE_EVENT,
    VA_SET_ASIDE_AT,
    VA_REASON
};

/* ------------------------------------------------------------------ the waiting deliveries */

/* One delivery as the scan handed it out, copied (the scan's strings and
 * bodies are its own only while the callback runs). */
typedef struct v12_delivery {
    store_delivery_t d;
    uint8_t message_id[16];
    char *text[8]; /* recipient, sender, sender_partner, rule id, hash, purpose, basis, case */
    uint8_t *body;
} v12_delivery_t;

typedef struct v12_list {
    v12_delivery_t *all;
    size_t n, cap;
} v12_list_t;

static char *v12_strdup(const char *text)
{
    if (text == NULL)
        return NULL;
    char *copy = strdup(text);
    assert_non_null(copy);
    return copy;
}

static int v12_collect(const store_delivery_t *d, void *arg)
{
    v12_list_t *list = arg;
    if (list->n == list->cap) {
        list->cap = list->cap > 0 ? 2 * list->cap : 64;
        list->all = realloc(list->all, list->cap * sizeof *list->all);
        assert_non_null(list->all);
    }
    v12_delivery_t *c = &list->all[list->n++];
    memset(c, 0, sizeof *c);
    c->d = *d;
    memcpy(c->message_id, d->message_id, sizeof c->message_id);
    c->d.message_id = NULL; /* c moves as the list grows: v12_write_waiting points it */
    const char *texts[8] = {d->recipient, d->sender,  d->sender_partner, d->rule_id,
                            d->rule_hash, d->purpose, d->legal_basis,    d->case_id};
    for (int i = 0; i < 8; i++)
        c->text[i] = v12_strdup(texts[i]);
    c->d.recipient = c->text[0];
    c->d.sender = c->text[1];
    c->d.sender_partner = c->text[2];
    c->d.rule_id = c->text[3];
    c->d.rule_hash = c->text[4];
    c->d.purpose = c->text[5];
    c->d.legal_basis = c->text[6];
    c->d.case_id = c->text[7];
    c->d.body = NULL;
    c->d.body_len = 0;
    if (d->case_id != NULL) { /* a case row's body is the content; a signal's the mask */
        c->body = malloc(d->body_len > 0 ? d->body_len : 1);
        assert_non_null(c->body);
        if (d->body_len > 0)
            memcpy(c->body, d->body, d->body_len);
        c->d.body = c->body;
        c->d.body_len = d->body_len;
    }
    return 0;
}

/* The item's bytes are not needed (a delivery by reference seals only its
 * mask), so no item is opened: one that would not open changes nothing. */
static int v12_have_item(uint64_t item_seq, void *arg)
{
    (void)item_seq;
    (void)arg;
    return 1;
}

static void v12_list_free(v12_list_t *list)
{
    for (size_t i = 0; i < list->n; i++) {
        for (int t = 0; t < 8; t++)
            free(list->all[i].text[t]);
        if (list->all[i].body != NULL)
            sodium_memzero(list->all[i].body, list->all[i].d.body_len);
        free(list->all[i].body);
    }
    free(list->all);
}

/* Every pending delivery of every mailbox row, recipient by recipient. */
static void v12_read_waiting(store_t *store, v12_list_t *list)
{
    sqlite3_stmt *recipients = NULL;
    assert_int_equal(sqlite3_prepare_v2(store->db,
                                        "SELECT DISTINCT recipient FROM mailbox ORDER BY recipient",
                                        -1, &recipients, NULL),
                     SQLITE_OK);
    size_t names = 0;
    char **name = NULL;
    while (sqlite3_step(recipients) == SQLITE_ROW) {
        name = realloc(name, (names + 1) * sizeof *name);
        assert_non_null(name);
        name[names++] = v12_strdup((const char *)sqlite3_column_text(recipients, 0));
    }
    assert_int_equal(sqlite3_finalize(recipients), SQLITE_OK);
    for (size_t r = 0; r < names; r++) {
        size_t before = list->n;
        int visited =
            store_mailbox_scan_hinted(store, name[r], 0, INT_MAX, v12_have_item, v12_collect, list);
        if (visited < 0)
            fail_msg("back to 12: scan of %s: %s", name[r], store_errmsg(store));
        assert_int_equal((size_t)visited, list->n - before);
        free(name[r]);
    }
    free(name);
}

/* Write list's deliveries into deliveries as store_fixture_delivery_put
 * does (sealed as schema 9 to 12 sealed them: the field mask of a
 * delivery by reference, the body of a case's), by reference unless a
 * case's. */
static void v12_write_waiting(store_t *store, const uint8_t key[STORE_KEY_BYTES],
                              const v12_list_t *list)
{
    for (size_t i = 0; i < list->n; i++) {
        store_delivery_t d = list->all[i].d;
        d.message_id = list->all[i].message_id; /* the list may have moved since */
        d.by_ref = d.case_id == NULL;
        store_fixture_delivery_put(store->db, key, &d);
    }
}

/* ------------------------------------------------------------------ the set-aside rows */

/* Bind the columns a set-aside row's deliveries share, copied as they are
 * (of whatever type the row holds them). */
static void v12_aside_bind_row(sqlite3_stmt *insert, sqlite3_stmt *row)
{
    static const struct {
        int param, col;
    } copied[] = {{2, VA_RECIPIENT},      {4, VA_MESSAGE_ID},   {6, VA_SENDER},
                  {7, VA_SENDER_PARTNER}, {12, VA_ACCEPTED_AT}, {13, VA_EXPIRES_AT},
                  {14, VA_BODY},          {15, VA_CASE_ID},     {16, VA_IS_CASE_EVENT},
                  {18, VA_SET_ASIDE_AT},  {19, VA_REASON}};
    for (size_t i = 0; i < sizeof copied / sizeof copied[0]; i++)
        assert_int_equal(
            sqlite3_bind_value(insert, copied[i].param, sqlite3_column_value(row, copied[i].col)),
            SQLITE_OK);
    assert_int_equal(
        sqlite3_bind_int64(insert, 17, sqlite3_column_type(row, VA_CASE_ID) == SQLITE_NULL),
        SQLITE_OK);
}

static void v12_aside_step(sqlite3 *db, sqlite3_stmt *insert, int64_t seq)
{
    assert_int_equal(sqlite3_bind_int64(insert, 1, seq), SQLITE_OK);
    if (sqlite3_step(insert) != SQLITE_DONE)
        fail_msg("back to 12: set-aside delivery %lld: %s", (long long)seq, sqlite3_errmsg(db));
    assert_int_equal(sqlite3_reset(insert), SQLITE_OK);
}

/* One set-aside row into deliveries_set_aside: a row per delivery not
 * done, or one at its first seq when its rule lines or items do not parse
 * (item index and rule columns NULL). How many. */
static size_t v12_aside_row(sqlite3 *db, sqlite3_stmt *insert, sqlite3_stmt *row)
{
    assert_int_equal(sqlite3_clear_bindings(insert), SQLITE_OK);
    v12_aside_bind_row(insert, row);
    int64_t first_seq = sqlite3_column_int64(row, VA_FIRST_SEQ);
    int64_t n = sqlite3_column_int64(row, VA_N);
    int64_t first_item_seq = sqlite3_column_int64(row, VA_FIRST_ITEM_SEQ);
    size_t rules_len = (size_t)sqlite3_column_bytes(row, VA_RULES);
    const char *rules = (const char *)sqlite3_column_blob(row, VA_RULES);
    const uint8_t *items = sqlite3_column_blob(row, VA_ITEMS);
    const uint8_t *done =
        sqlite3_column_type(row, VA_DONE) == SQLITE_BLOB ? sqlite3_column_blob(row, VA_DONE) : NULL;
    mailbox_rules_t parsed = {NULL, NULL, 0, 0};
    int readable =
        sqlite3_column_type(row, VA_N) == SQLITE_INTEGER && n >= 1 &&
        n <= (int64_t)STORE_MAILBOX_MAX_N && items != NULL &&
        (size_t)sqlite3_column_bytes(row, VA_ITEMS) == 4 * (size_t)n &&
        (done == NULL || (size_t)sqlite3_column_bytes(row, VA_DONE) == ((size_t)n + 7) / 8) &&
        rules != NULL && store_mailbox_rules_parse(rules, rules_len, (size_t)n, &parsed) == 0;
    for (uint32_t i = 0; readable && i < (uint32_t)n; i++)
        readable = mailbox_rule_slot_at(items, i) < parsed.n_slots;
    size_t written = 0;
    if (!readable) {
        assert_int_equal(
            sqlite3_bind_value(insert, 3, sqlite3_column_value(row, VA_FIRST_ITEM_SEQ)), SQLITE_OK);
        v12_aside_step(db, insert, first_seq);
        written = 1;
    }
    for (uint32_t i = 0; readable && i < (uint32_t)n; i++) {
        if (mailbox_done_bit(done, i))
            continue;
        const mailbox_rule_slot_t *slot = &parsed.slots[mailbox_rule_slot_at(items, i)];
        uint32_t index = mailbox_item_index_at(items, i);
        assert_int_equal(sqlite3_bind_int64(insert, 3,
                                            first_item_seq + (int64_t)index -
                                                (int64_t)mailbox_item_index_at(items, 0)),
                         SQLITE_OK);
        assert_int_equal(sqlite3_bind_int64(insert, 5, index), SQLITE_OK);
        const char *texts[4] = {slot->rule_id, slot->rule_hash, slot->purpose, slot->legal_basis};
        for (int t = 0; t < 4; t++)
            assert_int_equal(sqlite3_bind_text(insert, 8 + t, texts[t], -1, SQLITE_TRANSIENT),
                             SQLITE_OK);
        v12_aside_step(db, insert, first_seq + (int64_t)i);
        written++;
    }
    store_mailbox_rules_free(&parsed);
    return written;
}

static size_t v12_write_set_aside(sqlite3 *db)
{
    sqlite3_stmt *walk = NULL, *insert = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, v12_aside_walk_sql, -1, &walk, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, v12_aside_insert_sql, -1, &insert, NULL), SQLITE_OK);
    size_t written = 0;
    int rc;
    while ((rc = sqlite3_step(walk)) == SQLITE_ROW)
        written += v12_aside_row(db, insert, walk);
    assert_int_equal(rc, SQLITE_DONE);
    assert_int_equal(sqlite3_finalize(insert), SQLITE_OK);
    assert_int_equal(sqlite3_finalize(walk), SQLITE_OK);
    return written;
}

/* ------------------------------------------------------------------ back to 12 */

static void v12_exec(sqlite3 *db, const char *sql)
{
    char *message = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &message) != SQLITE_OK)
        fail_msg("back to 12: %s", message);
}

void store_fixture_back_to_12(const char *path, const uint8_t key[STORE_KEY_BYTES],
                              store_fixture_v12_t *out)
{
    store_t *store = store_fixture_open(path, key);
    assert_int_equal(store_fixture_db_int(store->db, "PRAGMA user_version"), 13);
    v12_list_t list = {NULL, 0, 0};
    v12_read_waiting(store, &list);
    v12_exec(store->db, "BEGIN IMMEDIATE");
    v12_exec(store->db, STORE_V12_TABLES_SQL);
    v12_write_waiting(store, key, &list);
    size_t set_aside = v12_write_set_aside(store->db);
    v12_exec(store->db, v12_finish_sql);
    v12_exec(store->db, "COMMIT");
    if (out != NULL)
        *out = (store_fixture_v12_t){list.n, set_aside};
    v12_list_free(&list);
    store_close(&store);
}
