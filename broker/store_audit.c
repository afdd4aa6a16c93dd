/*
 * store_audit.c — the audit trail's rows written: entries and signed
 * checkpoints appended in the caller's transaction, the acked-delivery
 * index (audit_ack_ranges) written with them and made from the older
 * index by the migration to schema 12, the tail, and the trail's
 * statements (store_audit_read.c reads with them). Knows SQL, not hashes or
 * signatures (audit.c's). Errors are -1 with store_errmsg set.
 */
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "store_audit_internal.h"
#include "syntax.h"

/* Columns in the order of enum store_audit_field (and of the canonical
 * encoding); audit_prepare checks the scan's column names against this
 * table, so the two cannot drift apart unnoticed. */
const store_audit_field_info_t store_audit_fields[STORE_AUDIT_FIELD_COUNT] = {
    [STORE_AUDIT_EVENT] = {"event", 0, 0},
    [STORE_AUDIT_ACTOR] = {"actor", 0, 0},
    [STORE_AUDIT_PEER] = {"peer", 0, 0},
    [STORE_AUDIT_CURVE_KEY] = {"curve_key", 0, 0},
    [STORE_AUDIT_RECIPIENT] = {"recipient", 0, 0},
    [STORE_AUDIT_RECIPIENT_PARTNER] = {"recipient_partner", 0, 0},
    [STORE_AUDIT_MESSAGE_ID] = {"message_id", 0, 0},
    [STORE_AUDIT_ITEM_INDEX] = {"item_index", 1, 0},
    [STORE_AUDIT_ITEM_SEQ] = {"item_seq", 1, 0},
    [STORE_AUDIT_DELIVERY_SEQ] = {"delivery_seq", 1, 0},
    [STORE_AUDIT_KIND] = {"kind", 0, 0},
    [STORE_AUDIT_THEME] = {"theme", 0, 0},
    [STORE_AUDIT_SUBJECT_TAG] = {"subject_tag", 0, 0},
    [STORE_AUDIT_RULE_ID] = {"rule_id", 0, 0},
    [STORE_AUDIT_RULE_HASH] = {"rule_hash", 0, 0},
    [STORE_AUDIT_PURPOSE] = {"purpose", 0, 0},
    [STORE_AUDIT_LEGAL_BASIS] = {"legal_basis", 0, 0},
    [STORE_AUDIT_FIELDS] = {"fields", 0, 0},
    [STORE_AUDIT_EXPIRES_AT] = {"expires_at", 1, 0},
    [STORE_AUDIT_REASON] = {"reason", 0, 0},
    [STORE_AUDIT_DETAIL] = {"detail", 0, 0},
    [STORE_AUDIT_DELIVERY_SEQS] = {"delivery_seqs", 0, 1},
    [STORE_AUDIT_DELIVERIES] = {"deliveries", 0, 1},
};

/* The schema step that added delivery_seqs and audit_acks (store_schema.c,
 * 5 -> 6). An offline reader may open an older store: its entries then
 * read with delivery_seqs absent, and it has no acked-delivery index. */
#define AUDIT_ACKS_SCHEMA_VERSION 6
/* The step that added deliveries (6 -> 7): an older store's entries read
 * with it absent. */
#define AUDIT_QUEUED_SCHEMA_VERSION 7
/* The step that made the index ranges (11 -> 12): an offline reader of an
 * older store reads audit_acks, a row per seq, as ranges of one seq. */
#define AUDIT_RANGES_SCHEMA_VERSION STORE_SCHEMA_ACK_RANGES_VERSION

#define AUDIT_FIELD_COLUMNS_BEFORE_ACKS                                                            \
    "event, actor, peer, curve_key, recipient, recipient_partner, message_id, item_index,"         \
    " item_seq, delivery_seq, kind, theme, subject_tag, rule_id, rule_hash, purpose,"              \
    " legal_basis,"                                                                                \
    " fields, expires_at, reason, detail"
#define AUDIT_FIELD_COLUMNS AUDIT_FIELD_COLUMNS_BEFORE_ACKS ", delivery_seqs, deliveries"
#define AUDIT_ROW_COLUMNS "seq, at, " AUDIT_FIELD_COLUMNS ", hash"
/* The same columns from a store older than schema 6, and from one of
 * schema 6. */
#define AUDIT_ROW_COLUMNS_BEFORE_ACKS                                                              \
    "seq, at, " AUDIT_FIELD_COLUMNS_BEFORE_ACKS ", NULL AS delivery_seqs, NULL AS deliveries, "    \
                                                "hash"
#define AUDIT_ROW_COLUMNS_BEFORE_QUEUED                                                            \
    "seq, at, " AUDIT_FIELD_COLUMNS_BEFORE_ACKS ", delivery_seqs, NULL AS deliveries, hash"
#define AUDIT_CHECKPOINT_COLUMNS "seq, at, hash, key, signature"

/* Parameters only: no SQL text is ever built from input. */
static const char *const audit_sql[AUDIT_STMT_COUNT] = {
    [AUDIT_STMT_TAIL] = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
    [AUDIT_STMT_CHECKPOINT_TAIL] =
        "SELECT seq, at FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
    [AUDIT_STMT_APPEND] = "INSERT INTO audit (" AUDIT_ROW_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5,"
                          " ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,"
                          " ?20, ?21, ?22, ?23, ?24, ?25, ?26)",
    [AUDIT_STMT_CHECKPOINT_ADD] =
        "INSERT INTO audit_checkpoints (" AUDIT_CHECKPOINT_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5)",
    [AUDIT_STMT_SCAN] = "SELECT " AUDIT_ROW_COLUMNS " FROM audit WHERE seq > ?1"
                        " ORDER BY seq LIMIT ?2",
    /* "subject_tag = ?1" implies "subject_tag IS NOT NULL": the partial index
     * serves it, in seq order from ?2 (exclusive) to ?3, at most ?4 rows. Only entries of the chain
     * (seq from 1): a row below it was put in the file, not by the broker (audit_verify names it).
     * The index gives seqs only, and the row is read by seq: SQLite takes a column an index holds
     * from the index, and an index rebuilt outside the broker would then hand another subject's
     * entry out with this subject's tag, where the export's own check of the row could not see it.
     */
    [AUDIT_STMT_SCAN_SUBJECT] =
        "SELECT " AUDIT_ROW_COLUMNS " FROM audit WHERE seq IN"
        " (SELECT seq FROM audit WHERE subject_tag = ?1 AND seq > ?2 AND seq <= ?3"
        " ORDER BY seq LIMIT ?4) ORDER BY seq",
    [AUDIT_STMT_SCAN_DELIVERY] =
        "SELECT " AUDIT_ROW_COLUMNS " FROM audit WHERE seq IN"
        " (SELECT seq FROM audit WHERE delivery_seq = ?1 AND seq > 0 AND seq <= ?2)"
        " ORDER BY seq",
    [AUDIT_STMT_CHECKPOINT_SCAN] = "SELECT " AUDIT_CHECKPOINT_COLUMNS " FROM audit_checkpoints"
                                   " WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
    /* The run ?1..?2 of entry ?3, unless the row before its end reaches
     * its start: the rows never overlap (audit_verify checks it), so that
     * row is the only one that could hold a seq of the run, and one
     * descent inside the insert finds a delivery indexed before (its
     * audit_seq is then NULL, which NOT NULL refuses). A VALUES row, not
     * INSERT ... SELECT: that would copy its row through a temporary table
     * first, since it reads the table it writes (callgrind: 29,600
     * instructions a run, against 7,200 for this). */
    [AUDIT_STMT_ACKED_ADD] =
        "INSERT INTO audit_ack_ranges (first_seq, last_seq, audit_seq) VALUES (?1, ?2,"
        " CASE WHEN coalesce((SELECT last_seq FROM audit_ack_ranges WHERE first_seq <= ?2"
        " ORDER BY first_seq DESC LIMIT 1), 0) < ?1 THEN ?3 END)",
    /* A seq's row, if any, is the one with the greatest first_seq at most
     * the seq, when its last_seq reaches the seq: one descent of the rowid
     * b-tree, then a rowid lookup of the entry. */
    [AUDIT_STMT_SCAN_ACKED] =
        "SELECT " AUDIT_ROW_COLUMNS " FROM audit WHERE seq = (SELECT audit_seq FROM"
        " (SELECT audit_seq, last_seq FROM audit_ack_ranges WHERE first_seq <= ?1"
        " ORDER BY first_seq DESC LIMIT 1) WHERE last_seq >= ?1) AND seq <= ?2",
    [AUDIT_STMT_ACKED_LOOKUP] = ("SELECT first_seq, last_seq, audit_seq FROM audit_ack_ranges"
                                 " WHERE first_seq <= ?1 ORDER BY first_seq DESC LIMIT 1"),
    [AUDIT_STMT_ACKED_COUNT] = "SELECT count(*) FROM audit_ack_ranges WHERE audit_seq <= ?1",
    [AUDIT_STMT_SAVEPOINT] = "SAVEPOINT audit_acked",
    [AUDIT_STMT_RELEASE] = "RELEASE audit_acked",
    [AUDIT_STMT_ROLLBACK_TO] = "ROLLBACK TO audit_acked",
};

/* The entry scans for a store older than schema 6 (offline readers only:
 * the broker's own store is migrated when it opens). */
static const char *const audit_sql_before_acks[AUDIT_STMT_COUNT] = {
    [AUDIT_STMT_SCAN] = "SELECT " AUDIT_ROW_COLUMNS_BEFORE_ACKS " FROM audit WHERE seq > ?1"
                        " ORDER BY seq LIMIT ?2",
    [AUDIT_STMT_SCAN_SUBJECT] =
        "SELECT " AUDIT_ROW_COLUMNS_BEFORE_ACKS " FROM audit WHERE seq IN"
        " (SELECT seq FROM audit WHERE subject_tag = ?1 AND seq > ?2 AND seq <= ?3"
        " ORDER BY seq LIMIT ?4) ORDER BY seq",
    [AUDIT_STMT_SCAN_DELIVERY] =
        "SELECT " AUDIT_ROW_COLUMNS_BEFORE_ACKS " FROM audit WHERE seq IN"
        " (SELECT seq FROM audit WHERE delivery_seq = ?1 AND seq > 0 AND seq <= ?2)"
        " ORDER BY seq",
};

/* The entry scans for a store of schema 6 (offline readers only). */
static const char *const audit_sql_before_queued[AUDIT_STMT_COUNT] = {
    [AUDIT_STMT_SCAN] = "SELECT " AUDIT_ROW_COLUMNS_BEFORE_QUEUED " FROM audit WHERE seq > ?1"
                        " ORDER BY seq LIMIT ?2",
    [AUDIT_STMT_SCAN_SUBJECT] =
        "SELECT " AUDIT_ROW_COLUMNS_BEFORE_QUEUED " FROM audit WHERE seq IN"
        " (SELECT seq FROM audit WHERE subject_tag = ?1 AND seq > ?2 AND seq <= ?3"
        " ORDER BY seq LIMIT ?4) ORDER BY seq",
    [AUDIT_STMT_SCAN_DELIVERY] = "SELECT " AUDIT_ROW_COLUMNS_BEFORE_QUEUED " FROM audit WHERE"
                                 " seq IN (SELECT seq FROM audit WHERE delivery_seq = ?1"
                                 " AND seq > 0 AND seq <= ?2) ORDER BY seq",
    [AUDIT_STMT_SCAN_ACKED] =
        "SELECT " AUDIT_ROW_COLUMNS_BEFORE_QUEUED " FROM audit WHERE seq ="
        " (SELECT audit_seq FROM audit_acks WHERE delivery_seq = ?1) AND seq <= ?2",
};

/* The acked-delivery statements for a store of schema 6 to 11 (offline
 * readers only): audit_acks, a row per seq, read as ranges of one seq. */
static const char *const audit_sql_per_seq[AUDIT_STMT_COUNT] = {
    [AUDIT_STMT_SCAN_ACKED] = "SELECT " AUDIT_ROW_COLUMNS " FROM audit WHERE seq ="
                              " (SELECT audit_seq FROM audit_acks WHERE delivery_seq = ?1)"
                              " AND seq <= ?2",
    [AUDIT_STMT_ACKED_LOOKUP] = "SELECT delivery_seq, delivery_seq, audit_seq FROM audit_acks"
                                " WHERE delivery_seq = ?1",
    [AUDIT_STMT_ACKED_COUNT] = "SELECT count(*) FROM audit_acks WHERE audit_seq <= ?1",
};

/* ------------------------------------------------------------------ statements */

/* The scans must yield the columns in the order of store_audit_fields. */
static int audit_columns_match(store_t *store, sqlite3_stmt *stmt)
{
    for (int i = 0; i < STORE_AUDIT_FIELD_COUNT; i++) {
        const char *name = sqlite3_column_name(stmt, ROW_FIRST_FIELD + i);
        if (name == NULL || strcmp(name, store_audit_fields[i].name) != 0) {
            store_refuse(store, "audit", "column order differs from store_audit_fields");
            return -1;
        }
    }
    return 0;
}

/* The schema version of the trail's columns: the broker's own store is
 * always current (store_open migrates it); an offline reader asks the
 * file, once per statement it prepares (and on each call that needs the
 * index of an older store). -1 on error. */
static long audit_schema(store_t *store)
{
    int64_t version = 0;
    if (!store->audit_reader)
        return AUDIT_RANGES_SCHEMA_VERSION;
    if (store_query_int64(store, "PRAGMA user_version", &version) != 0)
        return -1;
    return (long)version;
}

/* 1 when the store has delivery_seqs and an acked-delivery index, 0 when
 * it predates them, -1 on error. */
int store_audit_has_acks(store_t *store)
{
    long version = audit_schema(store);
    return version < 0 ? -1 : version >= AUDIT_ACKS_SCHEMA_VERSION;
}

int store_audit_acked_index(store_t *store)
{
    if (store_enter(store, "audit acked index") != 0)
        return -1;
    long version = audit_schema(store);
    if (version < 0)
        return -1;
    if (version < AUDIT_ACKS_SCHEMA_VERSION)
        return STORE_AUDIT_ACKED_NONE;
    return version < AUDIT_RANGES_SCHEMA_VERSION ? STORE_AUDIT_ACKED_PER_SEQ
                                                 : STORE_AUDIT_ACKED_RANGES;
}

/* The SQL of an entry scan (or an acked-delivery statement) for a store
 * of this schema version. */
static const char *audit_scan_sql(enum store_audit_stmt_id id, long version)
{
    if (version < AUDIT_ACKS_SCHEMA_VERSION && audit_sql_before_acks[id] != NULL)
        return audit_sql_before_acks[id];
    if (version < AUDIT_QUEUED_SCHEMA_VERSION && audit_sql_before_queued[id] != NULL)
        return audit_sql_before_queued[id];
    if (version < AUDIT_RANGES_SCHEMA_VERSION && audit_sql_per_seq[id] != NULL)
        return audit_sql_per_seq[id];
    return audit_sql[id];
}

/* A reader's scan prepared for an older store that a broker has upgraded
 * since (a `schakelctl audit tail` left running across the upgrade):
 * finalized, to be prepared again with the columns. Returns 0, or -1 on
 * error. */
static int audit_stmt_refresh(store_t *store, enum store_audit_stmt_id id)
{
    sqlite3_stmt *stmt = store->audit_stmt[id];
    if (!store->audit_reader || strcmp(sqlite3_sql(stmt), audit_sql[id]) == 0 ||
        (audit_sql_before_acks[id] == NULL && audit_sql_before_queued[id] == NULL &&
         audit_sql_per_seq[id] == NULL))
        return 0;
    long version = audit_schema(store);
    if (version < 0)
        return -1;
    if (strcmp(sqlite3_sql(stmt), audit_scan_sql(id, version)) != 0) {
        sqlite3_finalize(stmt);
        store->audit_stmt[id] = NULL;
    }
    return 0;
}

/* The statement, prepared at its first use on this connection. */
sqlite3_stmt *store_audit_stmt(store_t *store, enum store_audit_stmt_id id)
{
    if (store->audit_stmt[id] != NULL && audit_stmt_refresh(store, id) != 0)
        return NULL;
    if (store->audit_stmt[id] != NULL)
        return store->audit_stmt[id];
    const char *sql = audit_sql[id];
    int is_scan = id == AUDIT_STMT_SCAN || id == AUDIT_STMT_SCAN_SUBJECT ||
                  id == AUDIT_STMT_SCAN_DELIVERY || id == AUDIT_STMT_SCAN_ACKED;
    int by_version = is_scan || id == AUDIT_STMT_ACKED_LOOKUP || id == AUDIT_STMT_ACKED_COUNT;
    if (by_version && store->audit_reader) {
        long version = audit_schema(store);
        if (version < 0)
            return NULL;
        sql = audit_scan_sql(id, version);
    }
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v3(store->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL) !=
        SQLITE_OK) {
        store_fail(store, "audit: prepare");
        return NULL;
    }
    if (is_scan && audit_columns_match(store, stmt) != 0) {
        sqlite3_finalize(stmt);
        return NULL;
    }
    store->audit_stmt[id] = stmt;
    return stmt;
}

/* A transaction begun by store_begin is open and still there. */
static int audit_txn_open(const store_t *store)
{
    return store->txn_open && !sqlite3_get_autocommit(store->db);
}

/* ------------------------------------------------------------------ tail */

static int tail_read_entry(store_t *store, store_audit_tail_t *tail)
{
    sqlite3_stmt *stmt = store_audit_stmt(store, AUDIT_STMT_TAIL);
    if (stmt == NULL)
        return -1;
    int rc = sqlite3_step(stmt), result = -1;
    if (rc == SQLITE_DONE) {
        result = 0;
    } else if (rc == SQLITE_ROW) {
        size_t len = 0;
        const uint8_t *hash = store_column_bytes(stmt, 1, &len);
        if (hash == NULL || len != STORE_AUDIT_HASH_BYTES) {
            store_refuse(store, "audit tail", "the last entry's hash is damaged");
        } else {
            tail->seq = (uint64_t)sqlite3_column_int64(stmt, 0);
            memcpy(tail->hash, hash, STORE_AUDIT_HASH_BYTES);
            result = 0;
        }
    } else {
        store_fail(store, "audit tail");
    }
    store_stmt_finish(stmt);
    return result;
}

static int tail_read_checkpoint(store_t *store, store_audit_tail_t *tail)
{
    sqlite3_stmt *stmt = store_audit_stmt(store, AUDIT_STMT_CHECKPOINT_TAIL);
    if (stmt == NULL)
        return -1;
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        tail->checkpoint_seq = (uint64_t)sqlite3_column_int64(stmt, 0);
        tail->checkpoint_at = sqlite3_column_int64(stmt, 1);
    } else if (rc != SQLITE_DONE) {
        store_fail(store, "audit checkpoint tail");
    }
    store_stmt_finish(stmt);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

/* The guard: the stored tail must be the one this handle last committed
 * (a memcmp). Another is a trail written outside the broker since (rows
 * removed, re-appended with recomputed hashes): nothing may be chained to
 * it or signed over it. Once one was seen, the tail this handle committed
 * is refused too: it was put back outside the broker, and what was done
 * to the trail meanwhile only audit verify can tell; a broker that went on
 * would sign onto it, and the mark it left (record.c) would then stand
 * against its own entries. The found seq and hash stay those of the last
 * tail that was not the committed one. */
static int tail_guard_check(store_t *store, const store_audit_tail_t *fresh)
{
    if (!store->audit_guarded)
        return 0;
    int committed =
        fresh->seq == store->audit_committed_seq &&
        sodium_memcmp(fresh->hash, store->audit_committed_hash, STORE_AUDIT_HASH_BYTES) == 0;
    if (committed && !store->audit_mismatch_seen) {
        store->audit_mismatch = 0;
        return 0;
    }
    char hex[2 * STORE_AUDIT_HASH_BYTES + 1], why[448];
    syntax_hex(store->audit_committed_hash, STORE_AUDIT_HASH_BYTES, hex);
    store->audit_mismatch = 1;
    store->audit_mismatch_seen = 1;
    if (!committed) {
        store->audit_mismatch_seq = fresh->seq;
        memcpy(store->audit_mismatch_hash, fresh->hash, STORE_AUDIT_HASH_BYTES);
        snprintf(why, sizeof why,
                 "the trail ends at entry %llu%s, but this broker last committed entry %llu: it "
                 "was written outside the broker, and nothing is chained to it or signed (run "
                 "schakelctl audit verify --expect %llu:%s)",
                 (unsigned long long)fresh->seq,
                 fresh->seq == store->audit_committed_seq ? " with another hash" : "",
                 (unsigned long long)store->audit_committed_seq,
                 (unsigned long long)store->audit_committed_seq, hex);
    } else {
        snprintf(why, sizeof why,
                 "the trail ends at this broker's last committed entry %llu again, but it was "
                 "written outside the broker since (it ended at entry %llu): nothing is chained "
                 "to it or signed until a restart after audit verify (run schakelctl audit "
                 "verify --expect %llu:%s)",
                 (unsigned long long)store->audit_committed_seq,
                 (unsigned long long)store->audit_mismatch_seq,
                 (unsigned long long)store->audit_committed_seq, hex);
    }
    store_refuse(store, "audit tail", why);
    return -1;
}

int store_audit_tail_guard(store_t *store)
{
    store_audit_tail_t tail;
    if (store_enter(store, "audit tail guard") != 0)
        return -1;
    store->audit_guarded = 0;
    store->audit_mismatch = 0;
    store->audit_mismatch_seen = 0;
    if (audit_txn_open(store)) {
        store_refuse(store, "audit tail guard", "a transaction is open: only committed entries");
        return -1;
    }
    if (store_audit_tail(store, &tail) != 0)
        return -1;
    store->audit_committed_seq = tail.seq;
    memcpy(store->audit_committed_hash, tail.hash, STORE_AUDIT_HASH_BYTES);
    store->audit_guarded = 1;
    return 0;
}

int store_audit_committed_seq(store_t *store, uint64_t *seq)
{
    store_audit_tail_t tail;
    if (store_enter(store, "audit committed seq") != 0 || seq == NULL)
        return -1;
    if (store->audit_guarded) {
        *seq = store->audit_committed_seq;
        return 0;
    }
    if (audit_txn_open(store)) {
        store_refuse(store, "audit committed seq", "a transaction is open: only committed entries");
        return -1;
    }
    if (store_audit_tail(store, &tail) != 0)
        return -1;
    *seq = tail.seq;
    return 0;
}

void store_audit_committed(store_t *store)
{
    if (!store->audit_guarded || store->audit_tail_serial == 0 ||
        store->audit_tail_serial != store->txn_serial)
        return; /* the transaction read no tail: it wrote no entry */
    store->audit_committed_seq = store->audit_tail.seq;
    memcpy(store->audit_committed_hash, store->audit_tail.hash, STORE_AUDIT_HASH_BYTES);
}

int store_audit_tail_mismatch(const store_t *store, uint64_t *stored_seq,
                              uint8_t stored_hash[STORE_AUDIT_HASH_BYTES], uint64_t *committed_seq,
                              uint8_t committed_hash[STORE_AUDIT_HASH_BYTES])
{
    if (store == NULL || !store->audit_mismatch)
        return 0;
    *stored_seq = store->audit_mismatch_seq;
    if (stored_hash != NULL)
        memcpy(stored_hash, store->audit_mismatch_hash, STORE_AUDIT_HASH_BYTES);
    *committed_seq = store->audit_committed_seq;
    memcpy(committed_hash, store->audit_committed_hash, STORE_AUDIT_HASH_BYTES);
    return 1;
}

/* Cost: two descents to the end of a rowid b-tree; none when cached. The
 * cache lives as long as one transaction begun by store_begin: the broker
 * is the only writer, so within it nothing else moves the tail, and after
 * a commit or a rollback the next transaction reads it again. */
int store_audit_tail(store_t *store, store_audit_tail_t *tail)
{
    if (store_enter(store, "audit tail") != 0 || tail == NULL)
        return -1;
    if (audit_txn_open(store) && store->audit_tail_serial == store->txn_serial) {
        *tail = store->audit_tail;
        return 0;
    }
    store_audit_tail_t fresh;
    memset(&fresh, 0, sizeof fresh);
    if (tail_read_entry(store, &fresh) != 0 || tail_read_checkpoint(store, &fresh) != 0 ||
        tail_guard_check(store, &fresh) != 0)
        return -1;
    if (audit_txn_open(store)) {
        store->audit_tail = fresh;
        store->audit_tail_serial = store->txn_serial;
    }
    *tail = fresh;
    return 0;
}

/* ------------------------------------------------------------------ append */

static int audit_check_text(store_t *store, const store_audit_value_t *v)
{
    size_t len = v->text != NULL ? strlen(v->text) : 0;
    if (v->text == NULL || len > SCHAKEL_AUDIT_MAX_TEXT_LEN ||
        !syntax_is_utf8((const uint8_t *)v->text, len)) {
        store_refuse(store, "audit append", "a text field is missing, too long or not UTF-8");
        return -1;
    }
    return 0;
}

/* The fields a queued entry's deliveries replace. */
static const int audit_per_delivery[] = {
    STORE_AUDIT_RECIPIENT,    STORE_AUDIT_RECIPIENT_PARTNER,
    STORE_AUDIT_DELIVERY_SEQ, STORE_AUDIT_RULE_ID,
    STORE_AUDIT_RULE_HASH,    STORE_AUDIT_PURPOSE,
    STORE_AUDIT_LEGAL_BASIS,  STORE_AUDIT_FIELDS,
    STORE_AUDIT_EXPIRES_AT,
};

_Static_assert(STORE_AUDIT_MAX_ACKED_SEQS == 1024u, "the message below names the bound");

/* Whether the entry's event is exactly `event`. */
static int audit_event_is(const store_audit_entry_t *e, const char *event)
{
    const store_audit_value_t *v = &e->field[STORE_AUDIT_EVENT];
    return v->present && v->text != NULL && strcmp(v->text, event) == 0;
}

/* An entry names its deliveries one way or the other: delivery_seqs (acked,
 * schema 6), deliveries (queued, schema 7), or the single delivery's
 * columns; never two of them. */
const char *store_audit_shape_problem(const store_audit_entry_t *e)
{
    const store_audit_value_t *seqs = &e->field[STORE_AUDIT_DELIVERY_SEQS];
    const store_audit_value_t *listed = &e->field[STORE_AUDIT_DELIVERIES];
    if (!seqs->present && !listed->present)
        return NULL;
    if (seqs->present && listed->present)
        return "an entry has delivery_seqs or deliveries, not both";
    if (seqs->present) {
        if (store_audit_seqs_parse(seqs->text, NULL, 0) == 0)
            return "delivery_seqs is not a list of 1 to 1024 ascending seqs (\"7,9,12\")";
        if (!audit_event_is(e, "delivery.acked"))
            return "only a delivery.acked entry lists delivery_seqs";
        if (e->field[STORE_AUDIT_DELIVERY_SEQ].present)
            return "an entry has delivery_seq or delivery_seqs, not both";
        return NULL;
    }
    if (store_audit_deliveries_parse(listed->text, NULL, NULL) == 0)
        return "deliveries is not a canonical delivery list (docs/OPERATIONS.md)";
    if (!audit_event_is(e, "delivery.queued"))
        return "only a delivery.queued entry lists deliveries";
    for (size_t i = 0; i < sizeof audit_per_delivery / sizeof audit_per_delivery[0]; i++)
        if (e->field[audit_per_delivery[i]].present)
            return "an entry with deliveries names no single delivery's fields";
    return NULL;
}

static int audit_check_entry(store_t *store, const store_audit_entry_t *e)
{
    if (e == NULL || !e->field[STORE_AUDIT_EVENT].present) {
        store_refuse(store, "audit append", "an entry needs an event");
        return -1;
    }
    for (int i = 0; i < STORE_AUDIT_FIELD_COUNT; i++) {
        if (i == STORE_AUDIT_DELIVERY_SEQS || i == STORE_AUDIT_DELIVERIES)
            continue; /* their own rules: store_audit_shape_problem */
        const store_audit_value_t *v = &e->field[i];
        if (!v->present)
            continue;
        if (store_audit_fields[i].is_integer ? v->text != NULL : audit_check_text(store, v) != 0) {
            if (store_audit_fields[i].is_integer)
                store_refuse(store, "audit append", "an integer field was given text");
            return -1;
        }
    }
    return 0;
}

/* The present fields; an absent one stays NULL, as every parameter is
 * after store_stmt_finish (which clears the bindings) and after prepare. */
static int audit_bind_fields(store_t *store, sqlite3_stmt *stmt, const store_audit_entry_t *e)
{
    for (int i = 0; i < STORE_AUDIT_FIELD_COUNT; i++) {
        const store_audit_value_t *v = &e->field[i];
        int param = ROW_FIRST_FIELD + i + 1, rc;
        if (!v->present)
            continue;
        if (store_audit_fields[i].is_integer)
            rc = store_bind_int64(store, stmt, param, v->number);
        else
            rc = store_bind_text(store, stmt, param, v->text);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* Insert the entry row itself (the statement is finished either way). */
static int audit_insert_row(store_t *store, const store_audit_entry_t *entry)
{
    sqlite3_stmt *stmt = store_audit_stmt(store, AUDIT_STMT_APPEND);
    if (stmt == NULL)
        return -1;
    if (store_bind_int64(store, stmt, ROW_SEQ + 1, (int64_t)entry->seq) != 0 ||
        store_bind_int64(store, stmt, ROW_AT + 1, entry->at) != 0 ||
        audit_bind_fields(store, stmt, entry) != 0 ||
        store_bind_bytes(store, stmt, ROW_HASH + 1, entry->hash, STORE_AUDIT_HASH_BYTES) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    return store_stmt_run(store, stmt, "audit append");
}

/* A row of the index that names one of the entry's deliveries already:
 * the broker acks a delivery once (its second ack finds none), so the row
 * was written outside it, and every turn that acks the delivery fails
 * until an operator removes the row (docs/OPERATIONS.md, "When audit
 * verify fails"). Say so, instead of SQLite's words. */
static int audit_acked_taken(store_t *store, uint64_t delivery_seq)
{
    snprintf(store->errmsg, sizeof store->errmsg,
             "audit acked index: the audit_ack_ranges index already names delivery %llu (run "
             "schakelctl audit verify)",
             (unsigned long long)delivery_seq);
    return -1;
}

/* One index row: the run first..last of the entry audit_seq, refused
 * when a row holds a seq of it already (AUDIT_STMT_ACKED_ADD fails on NOT
 * NULL then, or on the primary key; the look-up that names the delivery
 * runs only in that case). */
static int audit_insert_run(store_t *store, uint64_t audit_seq, uint64_t first, uint64_t last)
{
    sqlite3_stmt *stmt = store_audit_stmt(store, AUDIT_STMT_ACKED_ADD);
    if (stmt == NULL)
        return -1;
    if (store_bind_int64(store, stmt, 1, (int64_t)first) != 0 ||
        store_bind_int64(store, stmt, 2, (int64_t)last) != 0 ||
        store_bind_int64(store, stmt, 3, (int64_t)audit_seq) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    if (store_stmt_run(store, stmt, "audit acked index") == 0)
        return 0;
    if (store->last_rc != SQLITE_CONSTRAINT_NOTNULL &&
        store->last_rc != SQLITE_CONSTRAINT_PRIMARYKEY &&
        store->last_rc != SQLITE_CONSTRAINT_UNIQUE)
        return -1;
    uint64_t row_first = 0, row_last = 0, row_entry = 0;
    char kept[STORE_ERRMSG_LEN];
    int kept_rc = store->last_rc;
    memcpy(kept, store->errmsg, sizeof kept);
    if (store_audit_range_find(store, last, &row_first, &row_last, &row_entry) <= 0 ||
        row_last < first) { /* no row to name: say what SQLite said */
        memcpy(store->errmsg, kept, sizeof kept);
        store->last_rc = kept_rc;
        return -1;
    }
    store->last_rc = kept_rc;
    return audit_acked_taken(store, row_first > first ? row_first : first);
}

/* The acked-delivery index rows of an entry: a row per run of consecutive
 * seqs in its list (ascending), naming the entry. */
static int audit_insert_acked(store_t *store, uint64_t audit_seq, const uint64_t *seqs, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t end = store_audit_seqs_run(seqs, n, i);
        if (audit_insert_run(store, audit_seq, seqs[i], seqs[end - 1]) != 0)
            return -1;
        i = end;
    }
    return 0;
}

/* Run a savepoint statement; a failure is recorded under what unless
 * quiet (a ROLLBACK TO after a failure keeps that failure's message). */
static int audit_savepoint_step(store_t *store, enum store_audit_stmt_id id, const char *what,
                                int quiet)
{
    sqlite3_stmt *stmt = store_audit_stmt(store, id);
    if (stmt == NULL)
        return -1;
    if (!quiet)
        return store_stmt_run(store, stmt, what);
    int rc = sqlite3_step(stmt);
    store_stmt_finish(stmt);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* An acked entry with its index rows, inside a savepoint: both or neither,
 * so that a refused index row leaves the transaction as it was. */
static int audit_append_acked(store_t *store, const store_audit_entry_t *entry,
                              const uint64_t *seqs, size_t n)
{
    if (audit_savepoint_step(store, AUDIT_STMT_SAVEPOINT, "audit savepoint", 0) != 0)
        return -1;
    if (audit_insert_row(store, entry) == 0 && audit_insert_acked(store, entry->seq, seqs, n) == 0)
        return audit_savepoint_step(store, AUDIT_STMT_RELEASE, "audit release", 0);
    /* SQLite may have rolled the whole transaction back by itself (a full
     * disk): then there is no savepoint left, and nothing to undo. */
    if (audit_txn_open(store)) {
        (void)audit_savepoint_step(store, AUDIT_STMT_ROLLBACK_TO, NULL, 1);
        (void)audit_savepoint_step(store, AUDIT_STMT_RELEASE, NULL, 1);
    }
    return -1;
}

/* Cost: one append to the rowid b-tree and an index insert for subject
 * and for delivery_seq where present, O(log n); for an acked entry a
 * descent and an insert into audit_ack_ranges per run of consecutive seqs
 * instead (one for a whole batch acked in order); no extra fsync (the
 * caller's transaction commits it with everything else). */
int store_audit_append(store_t *store, const store_audit_entry_t *entry)
{
    store_audit_tail_t tail;
    uint64_t seqs[STORE_AUDIT_MAX_ACKED_SEQS];
    size_t n_seqs = 0;
    if (store_enter(store, "audit append") != 0)
        return -1;
    if (!audit_txn_open(store)) {
        store_refuse(store, "audit append", "no transaction is open (call store_begin first)");
        return -1;
    }
    if (audit_check_entry(store, entry) != 0 || store_audit_tail(store, &tail) != 0)
        return -1;
    const char *shape = store_audit_shape_problem(entry);
    if (shape != NULL) {
        store_refuse(store, "audit append", shape);
        return -1;
    }
    if (entry->field[STORE_AUDIT_DELIVERY_SEQS].present)
        n_seqs = store_audit_seqs_parse(entry->field[STORE_AUDIT_DELIVERY_SEQS].text, seqs,
                                        STORE_AUDIT_MAX_ACKED_SEQS);
    if (entry->seq != tail.seq + 1 || entry->seq > INT64_MAX) {
        store_refuse(store, "audit append", "the entry's seq does not follow the trail's last");
        return -1;
    }
    if ((n_seqs > 0 ? audit_append_acked(store, entry, seqs, n_seqs)
                    : audit_insert_row(store, entry)) != 0)
        return -1;
    store->audit_tail.seq = entry->seq;
    memcpy(store->audit_tail.hash, entry->hash, STORE_AUDIT_HASH_BYTES);
    return 0;
}

int store_audit_checkpoint_add(store_t *store, const store_audit_checkpoint_t *cp)
{
    store_audit_tail_t tail;
    if (store_enter(store, "audit checkpoint") != 0)
        return -1;
    if (!audit_txn_open(store)) {
        store_refuse(store, "audit checkpoint", "no transaction is open (call store_begin first)");
        return -1;
    }
    if (cp == NULL || store_audit_tail(store, &tail) != 0)
        return -1;
    if (cp->seq == 0 || cp->seq > tail.seq || cp->seq <= tail.checkpoint_seq) {
        store_refuse(store, "audit checkpoint", "no such entry, or not after the last checkpoint");
        return -1;
    }
    sqlite3_stmt *stmt = store_audit_stmt(store, AUDIT_STMT_CHECKPOINT_ADD);
    if (stmt == NULL)
        return -1;
    if (store_bind_int64(store, stmt, 1, (int64_t)cp->seq) != 0 ||
        store_bind_int64(store, stmt, 2, cp->at) != 0 ||
        store_bind_bytes(store, stmt, 3, cp->hash, STORE_AUDIT_HASH_BYTES) != 0 ||
        store_bind_bytes(store, stmt, 4, cp->key, sizeof cp->key) != 0 ||
        store_bind_bytes(store, stmt, 5, cp->signature, sizeof cp->signature) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    if (store_stmt_run(store, stmt, "audit checkpoint") != 0)
        return -1;
    store->audit_tail.checkpoint_seq = cp->seq;
    store->audit_tail.checkpoint_at = cp->at;
    return 0;
}

/* ------------------------------------------------------------------ migration */

/* The migration to schema 12 (store_schema.c): audit_acks, a row per
 * acked seq, becomes audit_ack_ranges, a row per run of consecutive seqs
 * of one entry, then goes. One walk in seq order: a row extends the run
 * before it when it names the same entry and the next seq, so the runs
 * are those of each entry's list (a seq between two of an entry's is
 * another entry's, or none's, and ends the run). The progress hook is
 * told every STORE_ACK_RANGES_PROGRESS_ROWS rows, and once before. A
 * store whose version was set back by hand may have no audit_acks: then
 * there is nothing to walk. */
#define STORE_ACK_RANGES_PROGRESS_ROWS 10000u

static int ranges_migrate_walk(store_t *store, sqlite3_stmt *walk)
{
    static const char step[] = "indexing the acked deliveries by runs";
    uint64_t walked = 0, first = 0, last = 0, entry = 0;
    int rc;
    store_progress(step, 0);
    while ((rc = sqlite3_step(walk)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(walk, 0), of = sqlite3_column_int64(walk, 1);
        if (seq <= 0 || of <= 0) { /* CHECKs of audit_acks: a row the broker never wrote */
            store_refuse(store, "schema migration: acked index", "audit_acks holds a seq below 1");
            return -1;
        }
        if (walked > 0 && (uint64_t)of == entry && (uint64_t)seq == last + 1) {
            last = (uint64_t)seq;
        } else {
            if (walked > 0 && audit_insert_run(store, entry, first, last) != 0)
                return -1;
            first = last = (uint64_t)seq;
            entry = (uint64_t)of;
        }
        if (++walked % STORE_ACK_RANGES_PROGRESS_ROWS == 0)
            store_progress(step, walked);
    }
    if (store_check_rc(store, rc == SQLITE_DONE ? SQLITE_OK : rc,
                       "schema migration: acked index") != 0)
        return -1;
    return walked > 0 ? audit_insert_run(store, entry, first, last) : 0;
}

int store_audit_ranges_migrate(store_t *store)
{
    int64_t has_acks = 0;
    if (store_query_int64(store,
                          "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                          " AND name = 'audit_acks'",
                          &has_acks) != 0)
        return -1;
    if (has_acks == 0)
        return 0;
    sqlite3_stmt *walk = NULL;
    int rc = sqlite3_prepare_v2(store->db,
                                "SELECT delivery_seq, audit_seq FROM audit_acks"
                                " ORDER BY delivery_seq",
                                -1, &walk, NULL);
    if (store_check_rc(store, rc, "schema migration: acked index") != 0)
        return -1;
    int result = ranges_migrate_walk(store, walk);
    (void)sqlite3_finalize(walk); /* NULL-safe; codes handled above */
    if (result == 0)
        result = store_exec_fixed(store,
                                  "DROP TRIGGER IF EXISTS audit_acks_append_only_update;"
                                  "DROP TRIGGER IF EXISTS audit_acks_append_only_delete;"
                                  "DROP TABLE audit_acks;",
                                  "schema migration: acked index");
    return result;
}
