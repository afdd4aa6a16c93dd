/*
 * store_migrate.c — the steps of a schema migration that SQL cannot do,
 * run by store_schema_apply inside the migration's transaction once the
 * keys are loaded: schema 8 seals the evidence of publishes stored in
 * clear, schema 9 seals every waiting delivery again with its envelope
 * bound. Trusts nothing read from the file: a publish it cannot read
 * refuses the open, naming the row, and the store stays as it was; a
 * delivery it cannot read or open is set aside (store_delivery_set_aside's
 * table), as the push would set it aside, for the opener to record.
 * Errors are -1 with store_errmsg set, as everywhere in the store.
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "store_internal.h"

/* How many rows between two calls of the progress hook. */
#define STORE_MIGRATION_PROGRESS_ROWS 10000u

/* ------------------------------------------------------------------ schema 8: evidence in clear */

/* A publish stored before its evidence was sealed, copied out of the row
 * (id, sender, message_id, content_hash, signature, root), so that the
 * SELECT can be reset before the row is rewritten. */
typedef struct clear_publish {
    int64_t id;
    char sender[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    uint8_t message_id[16];
    uint8_t hash[32];
    uint8_t evidence[32 + 64]; /* root, signature */
} clear_publish_t;

/* The first such publish after *after: 1, 0 when none is left, -1. */
static int clear_publish_next(store_t *store, sqlite3_stmt *next, int64_t after, clear_publish_t *p)
{
    if (store_bind_int64(store, next, 1, after) != 0) {
        store_stmt_finish(next);
        return -1;
    }
    int rc = sqlite3_step(next), result = -1;
    size_t id_len = 0, hash_len = 0, sig_len = 0, root_len = 0;
    if (rc == SQLITE_ROW) {
        p->id = sqlite3_column_int64(next, 0);
        const char *sender = store_column_text(next, 1);
        const uint8_t *message_id = store_column_bytes(next, 2, &id_len);
        const uint8_t *hash = store_column_bytes(next, 3, &hash_len);
        const uint8_t *sig = store_column_bytes(next, 4, &sig_len);
        const uint8_t *root = store_column_bytes(next, 5, &root_len);
        if (sender == NULL || strlen(sender) >= sizeof p->sender || message_id == NULL ||
            id_len != 16 || hash == NULL || hash_len != 32 || sig == NULL || sig_len != 64 ||
            root == NULL || root_len != 32) {
            store->last_rc = 0;
            snprintf(store->errmsg, sizeof store->errmsg,
                     "schema migration: publish %lld: damaged row", (long long)p->id);
        } else {
            strcpy(p->sender, sender);
            memcpy(p->message_id, message_id, 16);
            memcpy(p->hash, hash, 32);
            memcpy(p->evidence, root, 32);
            memcpy(p->evidence + 32, sig, 64);
            result = 1;
        }
    } else if (rc == SQLITE_DONE) {
        result = 0;
    } else {
        store_fail(store, "schema migration: read a publish");
    }
    store_stmt_finish(next);
    return result;
}

int store_migrate_evidence(store_t *store)
{
    sqlite3_stmt *next = NULL, *update = NULL;
    int result = 0;
    int64_t after = 0;
    uint64_t sealed = 0;
    if (sqlite3_prepare_v2(store->db,
                           "SELECT id, sender, message_id, content_hash, signature, root"
                           " FROM publishes WHERE id > ?1 AND evidence IS NULL ORDER BY id LIMIT 1",
                           -1, &next, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(store->db,
                           "UPDATE publishes SET evidence = ?2, content_hash = ?3 WHERE id = ?1",
                           -1, &update, NULL) != SQLITE_OK) {
        store_fail(store, "schema migration: prepare");
        result = -1;
    }
    while (result == 0) {
        clear_publish_t p;
        store_seal_ad_t ad;
        uint8_t tag[32];
        int found = clear_publish_next(store, next, after, &p);
        if (found <= 0) {
            result = found;
            break;
        }
        after = p.id;
        if (store_seal_ad_evidence(&ad, p.message_id, p.sender) != 0 ||
            store_content_tag(store, p.hash, tag) != 0 ||
            store_seal_bind(store, update, 2, &ad, p.evidence, sizeof p.evidence) != 0 ||
            store_bind_int64(store, update, 1, p.id) != 0 ||
            store_bind_bytes(store, update, 3, tag, sizeof tag) != 0 ||
            store_stmt_run(store, update, "schema migration: seal a publish's evidence") != 0) {
            store_stmt_finish(update);
            result = -1;
        }
        sodium_memzero(&p, sizeof p);
        if (result == 0 && ++sealed % STORE_MIGRATION_PROGRESS_ROWS == 0)
            store_progress("sealing the evidence of publishes", sealed);
    }
    (void)sqlite3_finalize(update); /* NULL-safe; repeats codes handled above */
    (void)sqlite3_finalize(next);
    /* The clear columns go; secure_delete overwrites what they held. */
    if (result == 0 && sealed > 0)
        store->evidence_migrated = 1;
    if (result == 0 && sealed > 0) /* each rewrites the table: as long again */
        store_progress("dropping the clear columns", sealed);
    if (result == 0)
        result = store_exec_fixed(store,
                                  "ALTER TABLE publishes DROP COLUMN signature;"
                                  "ALTER TABLE publishes DROP COLUMN root;",
                                  "schema migration: drop the evidence in clear");
    return result;
}

/* ------------------------------------------------------------------ schema 9: envelopes bound */

/* The next delivery after *after under the old layout, re-sealed under the
 * new one and bound to ?2 of update (?1 its seq). 1; 2 when it does not
 * open under the old layout or reads damaged (then why says so and
 * *after is past it: the caller sets it aside); 0 when none is left; -1.
 * The SELECT is reset before the caller rewrites the row. */
static int migrate_delivery_next(store_t *store, sqlite3_stmt *next, sqlite3_stmt *update,
                                 int64_t *after, char *why, size_t why_len)
{
    if (store_bind_int64(store, next, 1, *after) != 0) {
        store_stmt_finish(next);
        return -1;
    }
    int rc = sqlite3_step(next), result = -1;
    store_delivery_t d;
    store_seal_ad_t old_ad, new_ad;
    if (rc == SQLITE_DONE) {
        result = 0;
    } else if (rc != SQLITE_ROW) {
        store_fail(store, "schema migration: read a delivery");
    } else if (store_delivery_row(next, &d) != 0 ||
               store_seal_ad_delivery_v1(&old_ad, (int64_t)d.seq, &d) != 0 ||
               store_seal_ad_delivery(&new_ad, (int64_t)d.seq, &d) != 0) {
        if (sqlite3_errcode(store->db) == SQLITE_NOMEM) {
            store_refuse(store, "schema migration", "out of memory");
        } else {
            *after = sqlite3_column_int64(next, DCOL_SEQ);
            snprintf(why, why_len,
                     "damaged row: a column no broker writes so (migration to"
                     " schema 9)");
            result = 2;
        }
    } else {
        rc = store_seal_reseal(store, next, DCOL_BODY, "delivery", (int64_t)d.seq, &old_ad, &new_ad,
                               update, 2);
        if (rc == 0 && store_bind_int64(store, update, 1, (int64_t)d.seq) == 0) {
            *after = (int64_t)d.seq;
            result = 1;
        } else if (rc == 1) { /* named by store_seal_reseal */
            *after = (int64_t)d.seq;
            snprintf(why, why_len, "%.200s (under the layout of schema 8, migrating to 9)",
                     store->errmsg);
            result = 2;
        }
    }
    store_stmt_finish(next);
    return result;
}

/* Set aside the delivery the migration could not re-seal; no audit entry
 * names it yet, which is how whoever opened the store finds it to record
 * it (store_set_aside_unrecorded). */
static int migrate_set_aside(store_t *store, sqlite3_stmt *move, sqlite3_stmt *remove, int64_t seq,
                             const char *why)
{
    if (store_set_aside_move(store, move, remove, seq, (int64_t)time(NULL), why) != 0) {
        char was[STORE_ERRMSG_LEN];
        snprintf(was, sizeof was, "%s", store->errmsg);
        snprintf(store->errmsg, sizeof store->errmsg,
                 "schema migration: delivery %lld: cannot set it aside: %.400s", (long long)seq,
                 was);
        return -1;
    }
    return 0;
}

/* Cost: per delivery one index descent, an opening, a BLAKE2b pass, a
 * sealing and a rowid update, O(n log n) in all; memory one row (and a
 * seq per row set aside). */
int store_migrate_deliveries(store_t *store)
{
    sqlite3_stmt *next = NULL, *update = NULL, *move = NULL, *remove = NULL;
    int result = 0;
    int64_t after = 0;
    uint64_t walked = 0; /* re-sealed or set aside */
    if (sqlite3_prepare_v2(store->db,
                           "SELECT " STORE_DELIVERY_COLUMNS
                           " FROM deliveries WHERE seq > ?1 ORDER BY seq LIMIT 1",
                           -1, &next, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(store->db, "UPDATE deliveries SET body = ?2 WHERE seq = ?1", -1, &update,
                           NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(store->db, STORE_SET_ASIDE_MOVE_SQL, -1, &move, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(store->db, STORE_DELIVERY_REMOVE_SQL, -1, &remove, NULL) != SQLITE_OK) {
        store_fail(store, "schema migration: prepare");
        result = -1;
    }
    while (result == 0) {
        char why[STORE_SET_ASIDE_REASON_LEN];
        int found = migrate_delivery_next(store, next, update, &after, why, sizeof why);
        if (found <= 0) {
            result = found;
            break;
        }
        if (found == 2) {
            store_stmt_finish(update); /* nothing bound for this row */
            result = migrate_set_aside(store, move, remove, after, why);
        } else if (store_stmt_run(store, update, "schema migration: re-seal a delivery") != 0) {
            store_stmt_finish(update);
            result = -1;
        }
        if (result == 0 && ++walked % STORE_MIGRATION_PROGRESS_ROWS == 0)
            store_progress("re-sealing deliveries with their envelopes", walked);
    }
    (void)sqlite3_finalize(remove); /* NULL-safe; repeats codes handled above */
    (void)sqlite3_finalize(move);
    (void)sqlite3_finalize(update);
    (void)sqlite3_finalize(next);
    return result;
}
