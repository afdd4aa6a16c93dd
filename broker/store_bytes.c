/*
 * store_bytes.c — the bytes of items each sender partner has in the store,
 * kept in memory, so that the share check of every publish
 * (max_stored_bytes_per_partner) is one hash lookup instead of a sum over
 * the partner's items (a walk of every item body: seconds at 1,000,000).
 *
 * The sums live in the small table stored_bytes as well, so that an open
 * reads them (one row a partner) instead of summing. Every insert and
 * removal of an item goes through store.c (store_item_add_retained) and
 * store_expire.c (the only DELETE of items), which report it here. As in
 * store_count.c (both in a sumtable.c), changes inside a transaction are
 * kept apart (delta) and become the committed sums only when the
 * transaction commits; a rollback drops them. store_bytes_flush writes the deltas into stored_bytes
 * just before the COMMIT, in the same transaction (one statement per partner whose sum moved in the
 * turn, not per publish), so the table and the items can only commit together. Owns its table;
 * trusts its callers to report every change; store_partner_bytes_verify checks them against SQL.
 * Also measures the room left (store_space): the file system's, and the
 * store's free pages while the file system keeps room for the WAL.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>

#include "store_internal.h"
#include "sumtable.h"

/* Partners in the sums at most (a policy has SCHAKEL_MAX_PARTNERS; a
 * store keeps the items of partners a policy has since dropped). Past it
 * an item's partner is not followed: the sums are then wrong, which
 * store_partner_bytes_verify finds; no policy comes near it. */
#define BYTES_MAX_ENTRIES 4096u

/* The partner of a principal id: the part before its '/' (the whole id
 * when there is none, which no policy loads). */
static size_t bytes_partner_len(const char *sender)
{
    const char *slash = strchr(sender, '/');
    return slash != NULL ? (size_t)(slash - sender) : strlen(sender);
}

/* The partner's entry in sums, made if needed; NULL on memory, the
 * bound, or a name no partner has. */
static sumtable_entry_t *bytes_entry_in(sumtable_t *sums, const char *partner, size_t len)
{
    if (len == 0 || len > SCHAKEL_MAX_PRINCIPAL_LEN)
        return NULL;
    return sumtable_entry(sums, partner, len);
}

/* The partner's entry in the store's sums, made if needed. */
static sumtable_entry_t *bytes_entry(store_t *store, const char *partner, size_t len)
{
    if (store->bytes == NULL && (store->bytes = sumtable_new(BYTES_MAX_ENTRIES)) == NULL)
        return NULL;
    return bytes_entry_in(store->bytes, partner, len);
}

/* The partner's entry in the store's sums, or NULL. */
static const sumtable_entry_t *bytes_find(const store_t *store, const char *partner)
{
    size_t len = strlen(partner);
    return len <= SCHAKEL_MAX_PRINCIPAL_LEN ? sumtable_find(store->bytes, partner, len) : NULL;
}

/* A transaction SQLite rolled back by itself: its changes never happened. */
static void bytes_drop_lost(store_t *store)
{
    if (sumtable_moved(store->bytes) && sqlite3_get_autocommit(store->db))
        sumtable_end(store->bytes, 0);
}

/* Add change to the partner's row of stored_bytes, in whatever
 * transaction is open (or on its own). */
static int bytes_write(store_t *store, const char *partner, int64_t change)
{
    sqlite3_stmt *stmt = store->stmt[STMT_STORED_BYTES_ADD];
    if (store_bind_text(store, stmt, 1, partner) != 0 ||
        store_bind_int64(store, stmt, 2, change) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    return store_stmt_run(store, stmt, "stored bytes");
}

int store_bytes_change(store_t *store, const char *sender, int64_t change)
{
    bytes_drop_lost(store);
    size_t len = bytes_partner_len(sender);
    sumtable_entry_t *e = bytes_entry(store, sender, len);
    if (e == NULL)
        return 0;                            /* not followed: store_partner_bytes_verify says so */
    if (sqlite3_get_autocommit(store->db)) { /* an item written on its own */
        if (bytes_write(store, e->name, change) != 0)
            return -1;
        e->committed += change;
        return 0;
    }
    sumtable_change(store->bytes, e, change);
    return 0;
}

int store_bytes_flush(store_t *store)
{
    bytes_drop_lost(store);
    size_t cursor = 0;
    const sumtable_entry_t *e;
    while ((e = sumtable_next_moved(store->bytes, &cursor)) != NULL)
        if (e->delta != 0 && bytes_write(store, e->name, e->delta) != 0)
            return -1;
    return 0;
}

void store_bytes_commit(store_t *store)
{
    sumtable_end(store->bytes, 1);
}

void store_bytes_rollback(store_t *store)
{
    sumtable_end(store->bytes, 0);
}

int store_bytes_load(store_t *store)
{
    sqlite3_stmt *stmt = NULL;
    int rc =
        sqlite3_prepare_v2(store->db, "SELECT partner, bytes FROM stored_bytes", -1, &stmt, NULL);
    if (store_check_rc(store, rc, "stored bytes: load") != 0)
        return -1;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *partner = (const char *)sqlite3_column_text(stmt, 0);
        if (partner == NULL || sqlite3_column_type(stmt, 1) != SQLITE_INTEGER)
            continue; /* not the broker's row: verify names it */
        sumtable_entry_t *e = bytes_entry(store, partner, strlen(partner));
        if (e != NULL)
            e->committed = sqlite3_column_int64(stmt, 1);
    }
    sqlite3_finalize(stmt);
    return store_check_rc(store, rc == SQLITE_DONE ? SQLITE_OK : rc, "stored bytes: load");
}

/* The walk of the migration to schema 11: one pass over the items in
 * rowid order, summed per partner in memory (as bytes_partner_len cuts a
 * sender, as STORE_BYTES_SUM_SQL does), with the progress hook told every
 * STORE_BYTES_PROGRESS_ROWS items, so that schakeld asks systemd for more
 * start-up time all through it (one statement gave one call, then
 * nothing for the seconds a store of millions takes). The sums are then
 * written, one row a partner, in the migration's transaction. */
#define STORE_BYTES_PROGRESS_ROWS 10000u

static int bytes_migrate_write(store_t *store, const sumtable_t *sums)
{
    sqlite3_stmt *insert = NULL;
    int rc = sqlite3_prepare_v2(
        store->db, "INSERT INTO stored_bytes (partner, bytes) VALUES (?1, ?2)", -1, &insert, NULL);
    if (store_check_rc(store, rc, "schema migration: stored bytes") != 0)
        return -1;
    int result = 0;
    size_t cursor = 0;
    const sumtable_entry_t *e;
    while (result == 0 && (e = sumtable_next(sums, &cursor)) != NULL) {
        if (store_bind_text(store, insert, 1, e->name) != 0 ||
            store_bind_int64(store, insert, 2, e->committed) != 0 ||
            store_stmt_run(store, insert, "schema migration: stored bytes") != 0)
            result = -1;
    }
    (void)sqlite3_finalize(insert); /* NULL-safe; codes handled above */
    return result;
}

int store_bytes_migrate(store_t *store)
{
    static const char step[] = "summing the items' bytes per partner";
    sqlite3_stmt *walk = NULL;
    uint64_t walked = 0;
    store_progress(step, 0);
    sumtable_t *sums = sumtable_new(BYTES_MAX_ENTRIES);
    if (sums == NULL) {
        store_refuse(store, "schema migration: sum the items", "out of memory");
        return -1;
    }
    int rc = sqlite3_prepare_v2(store->db,
                                "SELECT p.sender, length(i.body) FROM items AS i"
                                " JOIN publishes AS p ON p.id = i.publish_id ORDER BY i.seq",
                                -1, &walk, NULL);
    if (store_check_rc(store, rc, "schema migration: sum the items") != 0) {
        sumtable_destroy(&sums);
        return -1;
    }
    while ((rc = sqlite3_step(walk)) == SQLITE_ROW) {
        const char *sender = (const char *)sqlite3_column_text(walk, 0);
        if (sender != NULL) { /* NOT NULL in the schema */
            sumtable_entry_t *e = bytes_entry_in(sums, sender, bytes_partner_len(sender));
            if (e != NULL) /* else not followed: store_partner_bytes_verify says so */
                e->committed += sqlite3_column_int64(walk, 1);
        }
        if (++walked % STORE_BYTES_PROGRESS_ROWS == 0)
            store_progress(step, walked);
    }
    (void)sqlite3_finalize(walk);
    int result = store_check_rc(store, rc == SQLITE_DONE ? SQLITE_OK : rc,
                                "schema migration: sum the items");
    if (result == 0)
        result = bytes_migrate_write(store, sums);
    sumtable_destroy(&sums);
    return result;
}

void store_bytes_free(store_t *store)
{
    sumtable_destroy(&store->bytes);
}

/* ------------------------------------------------------------------ the public side */

int64_t store_partner_bytes(store_t *store, const char *partner)
{
    bytes_drop_lost(store);
    const sumtable_entry_t *e = bytes_find(store, partner);
    return e != NULL ? e->committed + e->delta : 0;
}

/* The sums as SQL finds them, by partner; fn for each. */
static int bytes_sum_each(store_t *store, const char *sql,
                          int (*fn)(store_t *store, const char *partner, int64_t bytes,
                                    char *problem, size_t len),
                          char *problem, size_t len)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(store->db, sql, -1, &stmt, NULL);
    if (store_check_rc(store, rc, "stored bytes: verify") != 0)
        return -1;
    int found = 0;
    while (found == 0 && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *partner = (const char *)sqlite3_column_text(stmt, 0);
        found =
            fn(store, partner != NULL ? partner : "", sqlite3_column_int64(stmt, 1), problem, len);
    }
    if (found == 0 && rc != SQLITE_DONE)
        found = store_check_rc(store, rc, "stored bytes: verify");
    sqlite3_finalize(stmt);
    return found;
}

static int bytes_compare(store_t *store, const char *partner, int64_t bytes, char *problem,
                         size_t len)
{
    const sumtable_entry_t *e = bytes_find(store, partner);
    int64_t kept = e != NULL ? e->committed : 0;
    if (kept == bytes)
        return 0;
    snprintf(problem, len, "partner %s: %lld bytes kept in memory, %lld in SQL", partner,
             (long long)kept, (long long)bytes);
    return 1;
}

/* The items' own sums, stored_bytes' rows (a row of 0 once its items are
 * gone), and memory: all three the same. */
int store_partner_bytes_verify(store_t *store, char *problem, size_t len)
{
    if (store_enter(store, "stored bytes: verify") != 0)
        return -1;
    if (!sqlite3_get_autocommit(store->db)) {
        store_refuse(store, "stored bytes: verify", "a transaction is open");
        return -1;
    }
    int rc = bytes_sum_each(store,
                            "SELECT partner, sum(bytes) FROM (SELECT partner, 0 AS bytes"
                            " FROM stored_bytes UNION ALL " STORE_BYTES_SUM_SQL ")"
                            " GROUP BY partner",
                            bytes_compare, problem, len);
    if (rc == 0)
        rc = bytes_sum_each(store, "SELECT partner, bytes FROM stored_bytes", bytes_compare,
                            problem, len);
    if (rc != 0)
        return rc;
    /* A partner in memory with bytes that SQL has no row or item of. */
    size_t cursor = 0;
    const sumtable_entry_t *e;
    while ((e = sumtable_next(store->bytes, &cursor)) != NULL) {
        if (e->committed == 0)
            continue;
        int64_t items = 0;
        sqlite3_stmt *stmt = NULL;
        int prc = sqlite3_prepare_v2(
            store->db, "SELECT count(*) FROM stored_bytes WHERE partner = ?1", -1, &stmt, NULL);
        if (store_check_rc(store, prc, "stored bytes: verify") != 0)
            return -1;
        if (store_bind_text(store, stmt, 1, e->name) != 0 || sqlite3_step(stmt) != SQLITE_ROW) {
            sqlite3_finalize(stmt);
            store_fail(store, "stored bytes: verify");
            return -1;
        }
        items = sqlite3_column_int64(stmt, 0);
        sqlite3_finalize(stmt);
        if (items == 0) {
            snprintf(problem, len, "partner %s: %lld bytes kept in memory, no row in SQL", e->name,
                     (long long)e->committed);
            return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ room left */

int store_space(store_t *store, store_space_t *space)
{
    if (store_enter(store, "space") != 0)
        return -1;
    const char *path = sqlite3_db_filename(store->db, "main");
    struct statvfs fs;
    if (path == NULL || path[0] == '\0' || statvfs(path, &fs) != 0) {
        store->last_rc = 0;
        snprintf(store->errmsg, sizeof store->errmsg, "space: statvfs of the store: %s",
                 path == NULL || path[0] == '\0' ? "no file" : strerror(errno));
        return -1;
    }
    int64_t pages = 0, page_size = 0;
    if (store_query_int64(store, "PRAGMA freelist_count", &pages) != 0 ||
        store_query_int64(store, "PRAGMA page_size", &page_size) != 0)
        return -1;
    uint64_t unit = fs.f_frsize != 0 ? (uint64_t)fs.f_frsize : (uint64_t)fs.f_bsize;
    space->fs_free_bytes = (uint64_t)fs.f_bavail > UINT64_MAX / (unit != 0 ? unit : 1)
                               ? UINT64_MAX
                               : (uint64_t)fs.f_bavail * unit;
    space->freelist_bytes = pages > 0 && page_size > 0 ? (uint64_t)pages * (uint64_t)page_size : 0;
    /* The free pages only while the file system can take the WAL's
     * growth (SCHAKEL_STORE_WAL_RESERVE_BYTES): a commit that cannot
     * extend the WAL fails, however many free pages the file holds. */
    if (space->fs_free_bytes < (uint64_t)SCHAKEL_STORE_WAL_RESERVE_BYTES)
        space->free_bytes = space->fs_free_bytes;
    else
        space->free_bytes = space->fs_free_bytes > UINT64_MAX - space->freelist_bytes
                                ? UINT64_MAX
                                : space->fs_free_bytes + space->freelist_bytes;
    return 0;
}
