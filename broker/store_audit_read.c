/*
 * store_audit_read.c — the audit trail read back: entry scans (in seq
 * order, by subject, by delivery, by acked delivery), checkpoint scans,
 * the acked-delivery index's look-ups, verification's counts and
 * integrity checks, and a keyless read-only opening of a store for
 * offline readers. Trusts no row: one that cannot be
 * an honest entry is handed out marked damaged. Errors: -1, store_errmsg set.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_audit_internal.h"

/* ------------------------------------------------------------------ reading rows */

/* One field of the current row into v; the damage, if any, into *damage. */
static void row_field(sqlite3_stmt *stmt, int i, store_audit_value_t *v, const char **damage)
{
    int col = ROW_FIRST_FIELD + i, type = sqlite3_column_type(stmt, col);
    memset(v, 0, sizeof *v);
    if (type == SQLITE_NULL)
        return;
    if (store_audit_fields[i].is_integer) {
        if (type != SQLITE_INTEGER && *damage == NULL)
            *damage = "an integer field holds another type";
        v->present = 1;
        v->number = sqlite3_column_int64(stmt, col);
        return;
    }
    const char *text = store_column_text(stmt, col);
    int bytes = sqlite3_column_bytes(stmt, col);
    v->present = 1;
    v->text = text != NULL ? text : "";
    /* A blob or an embedded NUL would make the C string differ from the
     * stored bytes, and the hash check could then miss an edit. */
    if (*damage == NULL &&
        (type != SQLITE_TEXT || text == NULL || bytes < 0 || strlen(text) != (size_t)bytes))
        *damage = "a text field holds another type or a NUL byte";
}

/* Fill e from the current row of an entry scan. Strings borrow the row. */
static void row_entry(sqlite3_stmt *stmt, store_audit_entry_t *e)
{
    size_t hash_len = 0;
    memset(e, 0, sizeof *e);
    e->seq = (uint64_t)sqlite3_column_int64(stmt, ROW_SEQ);
    e->at = sqlite3_column_int64(stmt, ROW_AT);
    if (sqlite3_column_type(stmt, ROW_SEQ) != SQLITE_INTEGER ||
        sqlite3_column_type(stmt, ROW_AT) != SQLITE_INTEGER)
        e->damage = "seq or at is not an integer";
    for (int i = 0; i < STORE_AUDIT_FIELD_COUNT; i++)
        row_field(stmt, i, &e->field[i], &e->damage);
    if (!e->field[STORE_AUDIT_EVENT].present && e->damage == NULL)
        e->damage = "the entry has no event";
    const uint8_t *hash = store_column_bytes(stmt, ROW_HASH, &hash_len);
    if (hash != NULL && hash_len == STORE_AUDIT_HASH_BYTES &&
        sqlite3_column_type(stmt, ROW_HASH) == SQLITE_BLOB)
        memcpy(e->hash, hash, STORE_AUDIT_HASH_BYTES);
    else if (e->damage == NULL)
        e->damage = "the stored hash is not 32 bytes";
}

/* Step a bound entry scan, calling fn per row. Returns rows visited or -1. */
static int scan_rows(store_t *store, sqlite3_stmt *stmt, store_audit_fn fn, void *arg,
                     const char *what)
{
    int visited = 0, rc;
    store->in_callback = 1;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        store_audit_entry_t e;
        row_entry(stmt, &e);
        visited++;
        if (visited == INT_MAX || fn(&e, arg) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    store->in_callback = 0;
    if (rc != SQLITE_DONE)
        store_fail(store, what);
    store_stmt_finish(stmt);
    return rc == SQLITE_DONE ? visited : -1;
}

/* Cost: one descent of the rowid b-tree, then a step per row. */
int store_audit_scan(store_t *store, uint64_t after_seq, size_t limit, store_audit_fn fn, void *arg)
{
    if (store_enter(store, "audit scan") != 0 || fn == NULL)
        return -1;
    if (limit == 0 || after_seq >= INT64_MAX)
        return 0;
    if (limit > INT_MAX)
        limit = INT_MAX;
    sqlite3_stmt *stmt = store_audit_stmt(store, AUDIT_STMT_SCAN);
    if (stmt == NULL)
        return -1;
    if (store_bind_int64(store, stmt, 1, (int64_t)after_seq) != 0 ||
        store_bind_int64(store, stmt, 2, (int64_t)limit) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    return scan_rows(store, stmt, fn, arg, "audit scan");
}

/* A seq bound as SQLite takes it: the trail's seqs are below INT64_MAX. */
static int64_t seq_bound(uint64_t seq)
{
    return seq > INT64_MAX ? INT64_MAX : (int64_t)seq;
}

/* Cost: O(log n + limit) through the partial subject index (its rows are
 * in seq order within one tag, so a step from after_seq starts where the
 * last one ended). */
int store_audit_scan_subject(store_t *store, const char *subject, uint64_t after_seq,
                             uint64_t up_to_seq, size_t limit, store_audit_fn fn, void *arg)
{
    if (store_enter(store, "audit subject scan") != 0 || fn == NULL || subject == NULL)
        return -1;
    if (limit == 0 || after_seq >= up_to_seq || after_seq >= INT64_MAX)
        return 0;
    sqlite3_stmt *stmt = store_audit_stmt(store, AUDIT_STMT_SCAN_SUBJECT);
    if (stmt == NULL)
        return -1;
    if (store_bind_text(store, stmt, 1, subject) != 0 ||
        store_bind_int64(store, stmt, 2, (int64_t)after_seq) != 0 ||
        store_bind_int64(store, stmt, 3, seq_bound(up_to_seq)) != 0 ||
        store_bind_int64(store, stmt, 4, limit > INT_MAX ? INT_MAX : (int64_t)limit) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    return scan_rows(store, stmt, fn, arg, "audit subject scan");
}

int store_audit_scan_delivery(store_t *store, uint64_t delivery_seq, uint64_t up_to_seq,
                              store_audit_fn fn, void *arg)
{
    if (store_enter(store, "audit delivery scan") != 0 || fn == NULL)
        return -1;
    if (delivery_seq == 0 || delivery_seq > INT64_MAX)
        return 0;
    sqlite3_stmt *stmt = store_audit_stmt(store, AUDIT_STMT_SCAN_DELIVERY);
    if (stmt == NULL)
        return -1;
    if (store_bind_int64(store, stmt, 1, (int64_t)delivery_seq) != 0 ||
        store_bind_int64(store, stmt, 2, seq_bound(up_to_seq)) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    return scan_rows(store, stmt, fn, arg, "audit delivery scan");
}

/* The acked-delivery statements need an index: on an older store (an
 * offline reader's) there is nothing to find. Returns the statement, or
 * NULL with *absent set (older store) or not (error). */
static sqlite3_stmt *acked_stmt(store_t *store, enum store_audit_stmt_id id, int *absent)
{
    *absent = 0;
    if (store->audit_stmt[id] == NULL) {
        int has_acks = store_audit_has_acks(store);
        if (has_acks <= 0) {
            *absent = has_acks == 0;
            return NULL;
        }
    }
    return store_audit_stmt(store, id);
}

/* An acked-delivery statement with delivery_seq bound: 1 and *stmt, or 0
 * when there is nothing to find (no such seq can be indexed, an older
 * store without an index), or -1 on error. */
static int acked_stmt_for(store_t *store, enum store_audit_stmt_id id, uint64_t delivery_seq,
                          sqlite3_stmt **stmt)
{
    int absent = 0;
    if (delivery_seq == 0 || delivery_seq > INT64_MAX)
        return 0;
    *stmt = acked_stmt(store, id, &absent);
    if (*stmt == NULL)
        return absent ? 0 : -1;
    if (store_bind_int64(store, *stmt, 1, (int64_t)delivery_seq) != 0) {
        store_stmt_finish(*stmt);
        return -1;
    }
    return 1;
}

/* Cost: a descent of audit_ack_ranges to the row at or before the seq,
 * then a rowid lookup of the entry. */
int store_audit_scan_acked(store_t *store, uint64_t delivery_seq, uint64_t up_to_seq,
                           store_audit_fn fn, void *arg)
{
    sqlite3_stmt *stmt = NULL;
    if (store_enter(store, "audit acked scan") != 0 || fn == NULL)
        return -1;
    int ready = acked_stmt_for(store, AUDIT_STMT_SCAN_ACKED, delivery_seq, &stmt);
    if (ready <= 0)
        return ready;
    if (store_bind_int64(store, stmt, 2, seq_bound(up_to_seq)) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    return scan_rows(store, stmt, fn, arg, "audit acked scan");
}

/* Cost: one descent of the rowid b-tree (the row with the greatest
 * first_seq at most the seq). */
int store_audit_range_find(store_t *store, uint64_t delivery_seq, uint64_t *first, uint64_t *last,
                           uint64_t *audit_seq)
{
    sqlite3_stmt *stmt = NULL;
    int ready = acked_stmt_for(store, AUDIT_STMT_ACKED_LOOKUP, delivery_seq, &stmt);
    if (ready <= 0)
        return ready;
    int rc = sqlite3_step(stmt), found = 0;
    if (rc == SQLITE_ROW) {
        int64_t from = sqlite3_column_int64(stmt, 0), to = sqlite3_column_int64(stmt, 1),
                entry = sqlite3_column_int64(stmt, 2);
        *first = from > 0 ? (uint64_t)from : 0;
        *last = to > 0 ? (uint64_t)to : 0;
        *audit_seq = entry > 0 ? (uint64_t)entry : 0;
        found = 1;
    } else if (rc != SQLITE_DONE) {
        store_fail(store, "audit acked lookup");
        found = -1;
    }
    store_stmt_finish(stmt);
    return found;
}

int store_audit_acked_row(store_t *store, uint64_t delivery_seq, uint64_t *first, uint64_t *last,
                          uint64_t *audit_seq)
{
    if (store_enter(store, "audit acked lookup") != 0 || first == NULL || last == NULL ||
        audit_seq == NULL)
        return -1;
    /* the row at or before the seq holds it when its range reaches it */
    int found = store_audit_range_find(store, delivery_seq, first, last, audit_seq);
    return found > 0 && (*first > delivery_seq || *last < delivery_seq) ? 0 : found;
}

int store_audit_acked_lookup(store_t *store, uint64_t delivery_seq, uint64_t *audit_seq)
{
    uint64_t first = 0, last = 0;
    return store_audit_acked_row(store, delivery_seq, &first, &last, audit_seq);
}

int store_audit_snapshot_begin(store_t *store)
{
    if (store_enter(store, "audit snapshot") != 0)
        return -1;
    if (!sqlite3_get_autocommit(store->db))
        return 0; /* a transaction is open: its reads are one snapshot already */
    return store_exec_fixed(store, "BEGIN DEFERRED", "audit snapshot") == 0 ? 1 : -1;
}

void store_audit_snapshot_end(store_t *store, int began)
{
    if (began == 1 && !sqlite3_get_autocommit(store->db))
        (void)store_exec_fixed(store, "COMMIT", "audit snapshot end"); /* it only read */
}

/* Cost: one descent of the table's b-tree (rowids below 1 come first). */
int store_audit_off_chain(store_t *store, uint64_t *count)
{
    int64_t n = 0;
    if (store_enter(store, "audit off-chain count") != 0 || count == NULL ||
        store_query_int64(store, "SELECT count(*) FROM audit WHERE seq < 1", &n) != 0)
        return -1;
    *count = (uint64_t)n;
    return 0;
}

/* SQLite's integrity_check of one table and its indexes; the statement
 * text is fixed per table. Returns 0 (problem untouched when "ok"), or -1. */
static int integrity_of(store_t *store, const char *sql, const char *table, char *problem,
                        size_t problem_len, uint64_t *problems)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(store->db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        store_fail(store, "audit integrity check");
        return -1;
    }
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(stmt, 0);
        if (text == NULL || strcmp(text, "ok") == 0)
            continue;
        if ((*problems)++ == 0)
            snprintf(problem, problem_len, "%s (integrity_check of table %s)", text, table);
    }
    if (rc != SQLITE_DONE)
        store_fail(store, "audit integrity check");
    sqlite3_finalize(stmt);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Cost: a walk of each table and of each of its indexes, with a look-up
 * per row and index (what PRAGMA integrity_check does for one table). */
int store_audit_integrity(store_t *store, char *problem, size_t problem_len, uint64_t *problems)
{
    if (store_enter(store, "audit integrity check") != 0 || problem == NULL || problems == NULL)
        return -1;
    *problems = 0;
    problem[0] = '\0';
    int index = store_audit_acked_index(store);
    if (index < 0 ||
        integrity_of(store, "PRAGMA integrity_check(audit)", "audit", problem, problem_len,
                     problems) != 0 ||
        integrity_of(store, "PRAGMA integrity_check(audit_checkpoints)", "audit_checkpoints",
                     problem, problem_len, problems) != 0 ||
        (index == STORE_AUDIT_ACKED_PER_SEQ &&
         integrity_of(store, "PRAGMA integrity_check(audit_acks)", "audit_acks", problem,
                      problem_len, problems) != 0) ||
        (index == STORE_AUDIT_ACKED_RANGES &&
         integrity_of(store, "PRAGMA integrity_check(audit_ack_ranges)", "audit_ack_ranges",
                      problem, problem_len, problems) != 0))
        return -1;
    return 0;
}

/* Cost: a walk of the index (it has no index on audit_seq: only
 * verification asks this). */
int store_audit_acked_count(store_t *store, uint64_t up_to_seq, uint64_t *count)
{
    int absent = 0;
    if (store_enter(store, "audit acked count") != 0 || count == NULL)
        return -1;
    sqlite3_stmt *stmt = acked_stmt(store, AUDIT_STMT_ACKED_COUNT, &absent);
    if (stmt == NULL)
        return absent ? 0 : -1;
    if (store_bind_int64(store, stmt, 1, up_to_seq > INT64_MAX ? INT64_MAX : (int64_t)up_to_seq) !=
        0) {
        store_stmt_finish(stmt);
        return -1;
    }
    int rc = sqlite3_step(stmt), result = -1;
    if (rc == SQLITE_ROW) {
        *count = (uint64_t)sqlite3_column_int64(stmt, 0);
        result = 1;
    } else {
        store_fail(store, "audit acked count");
    }
    store_stmt_finish(stmt);
    return result;
}

/* Rows naming an entry past the one verified, with no such entry: an entry
 * and its rows commit together, so while a broker writes, a row it wrote
 * has its entry in the same snapshot (one statement reads one). Prepared
 * for the one call verification makes. Cost: a walk of the index and a
 * rowid look-up per row past after_seq. */
#define AUDIT_ACKED_STRAY_SQL                                                                      \
    "SELECT a.first_seq, a.audit_seq FROM audit_ack_ranges AS a WHERE a.audit_seq > ?1"            \
    " AND NOT EXISTS (SELECT 1 FROM audit WHERE seq = a.audit_seq)"                                \
    " ORDER BY a.first_seq LIMIT 1"
/* The same of a store of schema 6 to 11 (offline readers). */
#define AUDIT_ACKED_STRAY_PER_SEQ_SQL                                                              \
    "SELECT a.delivery_seq, a.audit_seq FROM audit_acks AS a WHERE a.audit_seq > ?1"               \
    " AND NOT EXISTS (SELECT 1 FROM audit WHERE seq = a.audit_seq)"                                \
    " ORDER BY a.delivery_seq LIMIT 1"
/* Two rows whose ranges overlap, the first in first_seq order: each row's
 * against the one before it (the window's lag), so one walk. */
#define AUDIT_ACKED_OVERLAP_SQL                                                                    \
    "SELECT before_first, before_last, first_seq, last_seq FROM"                                   \
    " (SELECT first_seq, last_seq, lag(first_seq) OVER by_first AS before_first,"                  \
    " lag(last_seq) OVER by_first AS before_last FROM audit_ack_ranges"                            \
    " WINDOW by_first AS (ORDER BY first_seq))"                                                    \
    " WHERE before_last >= first_seq LIMIT 1"

/* Step sql with ?1 bound to after (when it has one) for the first row:
 * 1 with its n first columns in out, 0 when there is none, -1. */
static int acked_first_row(store_t *store, const char *sql, int bind, uint64_t after, uint64_t *out,
                           int n)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(store->db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        store_fail(store, "audit acked index: prepare");
        sqlite3_finalize(stmt);
        return -1;
    }
    int result = -1;
    if (!bind ||
        store_bind_int64(store, stmt, 1, after > INT64_MAX ? INT64_MAX : (int64_t)after) == 0) {
        int rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW) {
            for (int i = 0; i < n; i++)
                out[i] = (uint64_t)sqlite3_column_int64(stmt, i);
            result = 1;
        } else if (rc == SQLITE_DONE) {
            result = 0;
        } else {
            store_fail(store, "audit acked index");
        }
    }
    sqlite3_finalize(stmt);
    return result;
}

int store_audit_acked_stray(store_t *store, uint64_t after_seq, uint64_t *delivery_seq,
                            uint64_t *audit_seq)
{
    uint64_t row[2] = {0, 0};
    if (store_enter(store, "audit acked index") != 0 || delivery_seq == NULL || audit_seq == NULL)
        return -1;
    int index = store_audit_acked_index(store);
    if (index <= STORE_AUDIT_ACKED_NONE)
        return index;
    int found = acked_first_row(store,
                                index == STORE_AUDIT_ACKED_RANGES ? AUDIT_ACKED_STRAY_SQL
                                                                  : AUDIT_ACKED_STRAY_PER_SEQ_SQL,
                                1, after_seq, row, 2);
    if (found == 1) {
        *delivery_seq = row[0];
        *audit_seq = row[1];
    }
    return found;
}

int store_audit_acked_overlap(store_t *store, uint64_t ranges[4])
{
    if (store_enter(store, "audit acked index") != 0 || ranges == NULL)
        return -1;
    int index = store_audit_acked_index(store);
    if (index != STORE_AUDIT_ACKED_RANGES)
        return index < 0 ? -1 : 0; /* a row per seq: the primary key keeps them apart */
    return acked_first_row(store, AUDIT_ACKED_OVERLAP_SQL, 0, 0, ranges, 4);
}

static void row_checkpoint(sqlite3_stmt *stmt, store_audit_checkpoint_t *cp)
{
    size_t hash_len = 0, key_len = 0, sig_len = 0;
    memset(cp, 0, sizeof *cp);
    cp->seq = (uint64_t)sqlite3_column_int64(stmt, 0);
    cp->at = sqlite3_column_int64(stmt, 1);
    const uint8_t *hash = store_column_bytes(stmt, 2, &hash_len);
    const uint8_t *key = store_column_bytes(stmt, 3, &key_len);
    const uint8_t *sig = store_column_bytes(stmt, 4, &sig_len);
    if (sqlite3_column_type(stmt, 0) != SQLITE_INTEGER ||
        sqlite3_column_type(stmt, 1) != SQLITE_INTEGER || hash == NULL ||
        hash_len != sizeof cp->hash || key == NULL || key_len != sizeof cp->key || sig == NULL ||
        sig_len != sizeof cp->signature) {
        cp->damage = "a column is missing or of the wrong size";
        return;
    }
    memcpy(cp->hash, hash, sizeof cp->hash);
    memcpy(cp->key, key, sizeof cp->key);
    memcpy(cp->signature, sig, sizeof cp->signature);
}

int store_audit_checkpoint_scan(store_t *store, uint64_t after_seq, uint64_t up_to_seq,
                                store_audit_checkpoint_fn fn, void *arg)
{
    if (store_enter(store, "audit checkpoint scan") != 0 || fn == NULL)
        return -1;
    if (after_seq >= INT64_MAX || up_to_seq <= after_seq)
        return 0;
    if (up_to_seq > INT64_MAX)
        up_to_seq = INT64_MAX;
    sqlite3_stmt *stmt = store_audit_stmt(store, AUDIT_STMT_CHECKPOINT_SCAN);
    if (stmt == NULL)
        return -1;
    if (store_bind_int64(store, stmt, 1, (int64_t)after_seq) != 0 ||
        store_bind_int64(store, stmt, 2, (int64_t)up_to_seq) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    int visited = 0, rc;
    store->in_callback = 1;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        store_audit_checkpoint_t cp;
        row_checkpoint(stmt, &cp);
        visited++;
        if (visited == INT_MAX || fn(&cp, arg) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    store->in_callback = 0;
    if (rc != SQLITE_DONE)
        store_fail(store, "audit checkpoint scan");
    store_stmt_finish(stmt);
    return rc == SQLITE_DONE ? visited : -1;
}

/* ------------------------------------------------------------------ reader */

static void reader_error(char *err, size_t errlen, const char *path, const char *why)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: %s", path, why);
}

/* With a key: check it, and load the subject key (never made here). */
static int reader_keys(store_t *store, const uint8_t *seal_key)
{
    if ((store->seal_key = store_seal_key_new(seal_key)) == NULL) {
        store_refuse(store, "store key", "out of memory");
        return -1;
    }
    return store_seal_keycheck(store) != 0 || store_seal_subject_key(store, 0) != 0 ? -1 : 0;
}

/* Read-only from the first byte: SQLITE_OPEN_READONLY, query_only, no
 * PRAGMA that writes. A WAL store needs its -shm index; SQLite creates it
 * beside a copy whose folder is writable, and uses the running broker's
 * otherwise. */
store_t *store_open_reader(const char *path, const uint8_t *seal_key, char *err, size_t errlen)
{
    if (path == NULL || path[0] == '\0') {
        reader_error(err, errlen, "store", "no store path");
        return NULL;
    }
    store_t *store = calloc(1, sizeof *store);
    if (store == NULL) {
        reader_error(err, errlen, path, "out of memory");
        return NULL;
    }
    store->audit_reader = 1;
    store->lock_fd = -1; /* a reader takes no writer's lock: it reads beside the broker */
    int rc = sqlite3_open_v2(path, &store->db, SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK) {
        reader_error(err, errlen, path,
                     store->db != NULL ? sqlite3_errmsg(store->db) : sqlite3_errstr(rc));
        store_close(&store);
        return NULL;
    }
    if (store_check_rc(store, sqlite3_busy_timeout(store->db, STORE_BUSY_TIMEOUT_MS),
                       "busy_timeout") != 0 ||
        store_pragma_set(store, "PRAGMA query_only = 1") != 0 ||
        store_schema_check_readable(store, STORE_SCHEMA_AUDIT_VERSION) != 0 ||
        (seal_key != NULL && reader_keys(store, seal_key) != 0)) {
        reader_error(err, errlen, path, store->errmsg);
        store_close(&store);
        return NULL;
    }
    return store;
}
