/*
 * store_counters.c — the store's counters of item seqs, delivery seqs and
 * case numbers: loaded at open past every one ever handed out (so that
 * none is used twice, whatever was deleted since), moved past a margin by
 * a restore, and read from a store file without its key. Trusts nothing
 * in the file: a counter out of range refuses the open. Errors are -1
 * with store_errmsg set (a file's: err), as everywhere in the store.
 */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>

#include "store_internal.h"
#include "store_mailbox.h"

/* The next case number, like the seqs below. */
static int counters_load_cases(store_t *store)
{
    int64_t cases = 0;
    if (store_query_int64(store,
                          "SELECT max(coalesce((SELECT seq FROM sqlite_sequence"
                          " WHERE name = 'cases'), 0),"
                          " coalesce((SELECT max(num) FROM cases), 0))",
                          &cases) != 0)
        return -1;
    if (cases < 0 || cases == INT64_MAX) {
        store_refuse(store, "store", "case numbers out of range");
        return -1;
    }
    store->next_case_num = cases + 1;
    return 0;
}

/* The highest delivery seq handed out, as SQL: meta's delivery_seq_high
 * (0 when the row is missing, -1 when it holds anything but an integer,
 * which the counters refuse as out of range). */
#define COUNTERS_DELIVERY_HIGH_SQL                                                                 \
    "coalesce((SELECT CASE typeof(value) WHEN 'integer' THEN value ELSE -1 END"                    \
    " FROM meta WHERE name = 'delivery_seq_high'), 0)"

/* The next seqs: past the highest ever handed out (sqlite_sequence keeps
 * the items' after deletes, delivery_seq_high the deliveries'), and past
 * anything in the tables or tombstones, should either ever have been
 * edited. */
int store_counters_load(store_t *store)
{
    int64_t items = 0, deliveries = 0;
    if (counters_load_cases(store) != 0)
        return -1;
    if (store_query_int64(
            store,
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'items'), 0),"
            " coalesce((SELECT max(seq) FROM items), 0))",
            &items) != 0 ||
        store_query_int64(store,
                          "SELECT CASE WHEN high < 0 THEN -1 ELSE max(high,"
                          " " STORE_MAILBOX_SEQ_HIGH_SQL ","
                          " coalesce((SELECT max(seq) FROM tombstones), 0)) END"
                          " FROM (SELECT " COUNTERS_DELIVERY_HIGH_SQL " AS high)",
                          &deliveries) != 0)
        return -1;
    if (items < 0 || items == INT64_MAX || deliveries < 0 || deliveries == INT64_MAX) {
        store_refuse(store, "store", "sequence numbers out of range");
        return -1;
    }
    store->next_item_seq = items + 1;
    store->next_delivery_seq = deliveries + 1;
    return 0;
}

/* One counter's row in sqlite_sequence, made if the table never had one,
 * set to last. */
static int counters_set(store_t *store, const char *table, int64_t last)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(store->db,
                                "INSERT INTO sqlite_sequence (name, seq) SELECT ?1, 0"
                                " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?1)",
                                -1, &stmt, NULL);
    if (store_check_rc(store, rc, "counters_move") != 0 ||
        store_bind_text(store, stmt, 1, table) != 0 ||
        store_stmt_run(store, stmt, "counters_move") != 0) {
        sqlite3_finalize(stmt);
        return -1;
    }
    sqlite3_finalize(stmt);
    stmt = NULL;
    rc = sqlite3_prepare_v2(store->db, "UPDATE sqlite_sequence SET seq = ?2 WHERE name = ?1", -1,
                            &stmt, NULL);
    int failed = store_check_rc(store, rc, "counters_move") != 0 ||
                 store_bind_text(store, stmt, 1, table) != 0 ||
                 store_bind_int64(store, stmt, 2, last) != 0 ||
                 store_stmt_run(store, stmt, "counters_move") != 0;
    sqlite3_finalize(stmt);
    return failed ? -1 : 0;
}

static uint64_t counter_max(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

int store_counters_move(store_t *store, uint64_t seq_margin, uint64_t case_margin,
                        const store_counters_t *floor, store_counters_t *before,
                        store_counters_t *after)
{
    if (store_enter(store, "counters_move") != 0 || store_begin(store) != 0 ||
        store_counters_load(store) != 0)
        return -1;
    store_counters_t was = {(uint64_t)store->next_item_seq, (uint64_t)store->next_delivery_seq,
                            (uint64_t)store->next_case_num};
    store_counters_t from = was;
    if (floor != NULL) {
        from.next_item_seq = counter_max(from.next_item_seq, floor->next_item_seq);
        from.next_delivery_seq = counter_max(from.next_delivery_seq, floor->next_delivery_seq);
        from.next_case_num = counter_max(from.next_case_num, floor->next_case_num);
    }
    const uint64_t seq_max = (uint64_t)INT64_MAX / 2; /* room left for the seqs themselves */
    if (seq_margin > seq_max || from.next_item_seq > seq_max - seq_margin ||
        from.next_delivery_seq > seq_max - seq_margin) {
        store_refuse(store, "counters_move", "sequence numbers would run out");
        return -1;
    }
    /* Case numbers past the last: none left rather than one used twice
     * (the broker then refuses opens, CASE_IDS_EXHAUSTED). */
    const uint64_t case_end = (uint64_t)STORE_CASE_NUM_MAX + 1;
    uint64_t next_case = from.next_case_num;
    if (next_case < case_end)
        next_case = case_margin >= case_end - next_case ? case_end : next_case + case_margin;
    store_counters_t now = {from.next_item_seq + seq_margin, from.next_delivery_seq + seq_margin,
                            next_case};
    if (counters_set(store, "items", (int64_t)now.next_item_seq - 1) != 0 ||
        store_delivery_high_write(store, (int64_t)now.next_delivery_seq - 1) != 0 ||
        counters_set(store, "cases", (int64_t)now.next_case_num - 1) != 0)
        return -1;
    store->next_item_seq = (int64_t)now.next_item_seq;
    store->next_delivery_seq = (int64_t)now.next_delivery_seq;
    store->next_case_num = (int64_t)now.next_case_num;
    if (before != NULL)
        *before = was;
    *after = now;
    return 0;
}

/* One counter query on a raw connection: 0 with *value, or -1 with err. */
static int counters_file_query(sqlite3 *db, const char *sql, int64_t *value, char *err,
                               size_t errlen)
{
    sqlite3_stmt *stmt = NULL;
    int ok = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK &&
             sqlite3_step(stmt) == SQLITE_ROW;
    if (ok)
        *value = sqlite3_column_int64(stmt, 0);
    else
        snprintf(err, errlen, "%s", sqlite3_errmsg(db));
    sqlite3_finalize(stmt);
    if (ok && (*value < 0 || *value == INT64_MAX)) {
        snprintf(err, errlen, "a counter out of range (%lld)", (long long)*value);
        ok = 0;
    }
    return ok ? 0 : -1;
}

/* The highest delivery seq a store file names, given the SQL of its
 * delivery_seq_high. */
#define COUNTERS_FILE_DELIVERIES_SQL(high_sql)                                                     \
    "SELECT CASE WHEN high < 0 THEN -1 ELSE max(high,"                                             \
    " coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'deliveries'), 0),"                   \
    " coalesce((SELECT max(seq) FROM deliveries), 0),"                                             \
    " coalesce((SELECT max(seq) FROM tombstones), 0)) END FROM (SELECT " high_sql " AS high)"

/* The same from schema 13 on, which keeps the mailbox as rows (its
 * deliveries table is gone). */
#define COUNTERS_FILE_ROWS_SQL(high_sql)                                                           \
    "SELECT CASE WHEN high < 0 THEN -1 ELSE max(high, " STORE_MAILBOX_SEQ_HIGH_SQL ","            \
    " coalesce((SELECT max(seq) FROM tombstones), 0)) END FROM (SELECT " high_sql " AS high)"

int store_counters_of_file(const char *path, store_counters_t *next, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int64_t items = 0, deliveries = 0, cases = 0;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s", db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return -1;
    }
    (void)sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);
    /* delivery_seq_high (schema 12) beside sqlite_sequence (which kept the
     * mark before); a file without meta (damaged: every store has it)
     * still gives what its tables hold */
    int64_t has_meta = 0, has_rows = 0;
    if (counters_file_query(
            db,
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence"
            " WHERE name = 'items'), 0), coalesce((SELECT max(seq) FROM items), 0))",
            &items, err, errlen) != 0 ||
        counters_file_query(db,
                            "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                            " AND name = 'meta'",
                            &has_meta, err, errlen) != 0 ||
        counters_file_query(db,
                            "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                            " AND name = 'mailbox'",
                            &has_rows, err, errlen) != 0 ||
        counters_file_query(db,
                            has_rows > 0   ? (has_meta > 0 ? COUNTERS_FILE_ROWS_SQL(
                                                               COUNTERS_DELIVERY_HIGH_SQL)
                                                         : COUNTERS_FILE_ROWS_SQL("0"))
                            : has_meta > 0 ? COUNTERS_FILE_DELIVERIES_SQL(COUNTERS_DELIVERY_HIGH_SQL)
                                           : COUNTERS_FILE_DELIVERIES_SQL("0"),
                            &deliveries, err, errlen) != 0) {
        sqlite3_close(db);
        return -1;
    }
    next->next_item_seq = (uint64_t)items + 1;
    next->next_delivery_seq = (uint64_t)deliveries + 1;
    next->next_case_num = 1;
    /* a store from before cases has no table of them: none was used; one
     * whose case counter cannot be read still gives its seqs (1) */
    int64_t has_cases = 0;
    int partial = counters_file_query(db,
                                      "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                                      " AND name = 'cases'",
                                      &has_cases, err, errlen) != 0 ||
                  (has_cases > 0 &&
                   counters_file_query(
                       db,
                       "SELECT max(coalesce((SELECT seq FROM sqlite_sequence"
                       " WHERE name = 'cases'), 0), coalesce((SELECT max(num) FROM cases), 0))",
                       &cases, err, errlen) != 0);
    sqlite3_close(db);
    if (partial)
        return 1;
    next->next_case_num = (uint64_t)cases + 1;
    return 0;
}
