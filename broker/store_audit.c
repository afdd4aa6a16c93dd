/*
 * store_audit.c — the audit trail's rows: entries and signed checkpoints
 * appended inside the caller's transaction, the index of acked deliveries
 * (audit_acks) written with their entries, the trail's tail, scans (in seq
 * order, by subject, by delivery), and a keyless read-only opening of a
 * store for offline readers. Knows SQL, not hashes or signatures: audit.c
 * computes and checks those. Trusts nothing read back: a row that cannot
 * be an honest entry is handed out marked damaged, for the verifier to
 * name. Errors are -1 with store_errmsg set, as everywhere in the store.
 */
#include <limits.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"
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

/* Result columns of the entry scans: seq, at, the fields, hash. */
enum { ROW_SEQ = 0, ROW_AT = 1, ROW_FIRST_FIELD = 2, ROW_HASH = 2 + STORE_AUDIT_FIELD_COUNT };

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
    [AUDIT_STMT_ACKED_ADD] = "INSERT INTO audit_acks (delivery_seq, audit_seq) VALUES (?1, ?2)",
    /* two rowid lookups: the index row, then the entry */
    [AUDIT_STMT_SCAN_ACKED] =
        "SELECT " AUDIT_ROW_COLUMNS " FROM audit WHERE seq ="
        " (SELECT audit_seq FROM audit_acks WHERE delivery_seq = ?1) AND seq <= ?2",
    [AUDIT_STMT_ACKED_LOOKUP] = "SELECT audit_seq FROM audit_acks WHERE delivery_seq = ?1",
    [AUDIT_STMT_ACKED_COUNT] = "SELECT count(*) FROM audit_acks WHERE audit_seq <= ?1",
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
        return AUDIT_QUEUED_SCHEMA_VERSION;
    if (store_query_int64(store, "PRAGMA user_version", &version) != 0)
        return -1;
    return (long)version;
}

/* 1 when the store has delivery_seqs and audit_acks, 0 when it predates
 * them, -1 on error. */
static int audit_has_acks(store_t *store)
{
    long version = audit_schema(store);
    return version < 0 ? -1 : version >= AUDIT_ACKS_SCHEMA_VERSION;
}

/* The SQL of an entry scan for a store of this schema version. */
static const char *audit_scan_sql(enum store_audit_stmt_id id, long version)
{
    if (version < AUDIT_ACKS_SCHEMA_VERSION && audit_sql_before_acks[id] != NULL)
        return audit_sql_before_acks[id];
    if (version < AUDIT_QUEUED_SCHEMA_VERSION && audit_sql_before_queued[id] != NULL)
        return audit_sql_before_queued[id];
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
        (audit_sql_before_acks[id] == NULL && audit_sql_before_queued[id] == NULL))
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
static sqlite3_stmt *audit_stmt(store_t *store, enum store_audit_stmt_id id)
{
    if (store->audit_stmt[id] != NULL && audit_stmt_refresh(store, id) != 0)
        return NULL;
    if (store->audit_stmt[id] != NULL)
        return store->audit_stmt[id];
    const char *sql = audit_sql[id];
    int is_scan = id == AUDIT_STMT_SCAN || id == AUDIT_STMT_SCAN_SUBJECT ||
                  id == AUDIT_STMT_SCAN_DELIVERY || id == AUDIT_STMT_SCAN_ACKED;
    if (is_scan && store->audit_reader) {
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
    sqlite3_stmt *stmt = audit_stmt(store, AUDIT_STMT_TAIL);
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
    sqlite3_stmt *stmt = audit_stmt(store, AUDIT_STMT_CHECKPOINT_TAIL);
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

/* ------------------------------------------------------------------ seq lists */

size_t store_audit_seqs_parse(const char *text, uint64_t *seqs, size_t max)
{
    size_t n = 0;
    uint64_t last = 0;
    const char *p = text;
    if (p == NULL)
        return 0;
    for (;;) {
        uint64_t value = 0;
        if (*p < '1' || *p > '9') /* no empty item, sign, space or leading zero */
            return 0;
        while (*p >= '0' && *p <= '9') {
            uint64_t digit = (uint64_t)(*p++ - '0');
            if (value > ((uint64_t)INT64_MAX - digit) / 10)
                return 0;
            value = value * 10 + digit;
        }
        if (value <= last || n == STORE_AUDIT_MAX_ACKED_SEQS)
            return 0;
        if (seqs != NULL && n < max)
            seqs[n] = value;
        n++;
        last = value;
        if (*p == '\0')
            return n;
        if (*p++ != ',')
            return 0;
    }
}

/* ------------------------------------------------------------------ deliveries */

/* A canonical decimal in 0..INT64_MAX (no sign, no leading zero) ending at
 * `end`; *p moves past it. Returns 0, or -1. */
static int parse_decimal(const char **p, char end, uint64_t *value)
{
    const char *q = *p;
    uint64_t v = 0;
    if (*q < '0' || *q > '9' || (*q == '0' && q[1] >= '0' && q[1] <= '9'))
        return -1;
    while (*q >= '0' && *q <= '9') {
        uint64_t digit = (uint64_t)(*q++ - '0');
        if (v > ((uint64_t)INT64_MAX - digit) / 10)
            return -1;
        v = v * 10 + digit;
    }
    if (*q != end)
        return -1;
    *p = q + 1;
    *value = v;
    return 0;
}

/* The checks below read each byte once, in place, and stop at the first
 * that does not belong (a NUL included), so that checking a list costs a
 * pass over it. */

static int is_token_byte(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

/* An id token (syntax_is_id_token: [a-z0-9][a-z0-9._-]{0,63}) followed by
 * `end`; *p moves past `end`. */
static int parse_token(const char **p, char end, const char **word, size_t *len)
{
    const char *q = *p;
    if (!((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9')))
        return -1;
    while (is_token_byte(*q))
        q++;
    if (*q != end || (size_t)(q - *p) > SCHAKEL_MAX_ID_LEN)
        return -1;
    *word = *p;
    *len = (size_t)(q - *p);
    *p = q + 1;
    return 0;
}

/* A principal id (syntax_is_principal_id: token "/" token) followed by
 * `end`; *p moves past `end`, *partner_len is the first token's length. */
static int parse_principal(const char **p, char end, const char **word, size_t *len,
                           size_t *partner_len)
{
    const char *q = *p, *name = NULL;
    size_t name_len = 0;
    if (parse_token(&q, '/', word, partner_len) != 0 || parse_token(&q, end, &name, &name_len) != 0)
        return -1;
    *len = (size_t)(q - 1 - *p);
    *p = q;
    return 0;
}

/* 64 lower-case hex digits followed by `end`. */
static int parse_hash(const char **p, char end, const char **hash)
{
    const char *q = *p;
    for (int i = 0; i < 64; i++, q++)
        if (!((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f')))
            return -1;
    if (*q != end)
        return -1;
    *hash = *p;
    *p = q + 1;
    return 0;
}

/* Field names ([a-z_]+ joined by single commas) followed by `end`. */
static int parse_fields(const char **p, char end, const char **fields, size_t *len)
{
    const char *q = *p;
    for (;;) {
        const char *word = q;
        while ((*q >= 'a' && *q <= 'z') || *q == '_')
            q++;
        if (q == word)
            return -1;
        if (*q != ',')
            break;
        q++;
    }
    if (*q != end)
        return -1;
    *fields = *p;
    *len = (size_t)(q - *p);
    *p = q + 1;
    return 0;
}

/* n bytes at s: no NUL, valid UTF-8. ASCII (the usual case) is checked a
 * byte at a time here; from the first byte above 0x7F, syntax_is_utf8
 * checks the rest (it stops at nothing, so the NUL check comes first). */
static int counted_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == 0)
            return 0;
        if (c >= 0x80)
            return strnlen(s + i, n - i) == n - i && syntax_is_utf8((const uint8_t *)s + i, n - i);
    }
    return 1;
}

/* LEN ":" bytes, followed by `end`: valid UTF-8 without NUL. Reads no
 * byte past a NUL: counted_ok stops at one first. */
static int parse_counted(const char **p, char end, const char **text, size_t *len)
{
    uint64_t n = 0;
    if (parse_decimal(p, ':', &n) != 0 || n > SCHAKEL_AUDIT_MAX_TEXT_LEN ||
        !counted_ok(*p, (size_t)n) || (*p)[n] != end)
        return -1;
    *text = *p;
    *len = (size_t)n;
    *p += n + 1;
    return 0;
}

/* One rule line at *p into d (its rule part); *p moves past its LF. */
static int parse_rule_line(const char **p, store_audit_delivery_t *d)
{
    const char *q = *p;
    uint64_t expires = 0;
    if (strncmp(q, "rule ", 5) != 0)
        return -1;
    q += 5;
    if (parse_token(&q, ' ', &d->rule_id, &d->rule_id_len) != 0 ||
        parse_hash(&q, ' ', &d->rule_hash) != 0 || parse_decimal(&q, ' ', &expires) != 0 ||
        parse_fields(&q, ' ', &d->fields, &d->fields_len) != 0 ||
        parse_counted(&q, ' ', &d->purpose, &d->purpose_len) != 0 ||
        parse_counted(&q, '\n', &d->legal_basis, &d->legal_basis_len) != 0)
        return -1;
    d->expires_at = (int64_t)expires;
    *p = q;
    return 0;
}

/* The walk of store_audit_deliveries_parse: with fn NULL it only checks.
 * Returns the number of deliveries, or 0. */
static size_t deliveries_walk(const char *text, store_audit_delivery_fn fn, void *arg)
{
    uint32_t rule_at[STORE_AUDIT_MAX_QUEUED_DELIVERIES + 1];
    size_t n_rules = 0, n = 0, used = 0;
    uint64_t last = 0;
    const char *p = text;
    if (text == NULL ||
        strnlen(text, STORE_AUDIT_MAX_DELIVERIES_TEXT + 1) > STORE_AUDIT_MAX_DELIVERIES_TEXT)
        return 0;
    while (*p == 'r') { /* the rules, each once */
        store_audit_delivery_t d;
        if (n_rules == STORE_AUDIT_MAX_QUEUED_DELIVERIES)
            return 0;
        rule_at[n_rules] = (uint32_t)(p - text);
        if (parse_rule_line(&p, &d) != 0)
            return 0;
        size_t len = (size_t)(p - text) - rule_at[n_rules];
        for (size_t i = 0; i < n_rules; i++)
            if (rule_at[i + 1] - rule_at[i] == len &&
                memcmp(text + rule_at[i], text + rule_at[n_rules], len) == 0)
                return 0;
        rule_at[++n_rules] = (uint32_t)(p - text);
    }
    while (*p != '\0') { /* the deliveries, ascending; rules in order of first use */
        store_audit_delivery_t d;
        uint64_t seq = 0, rule = 0;
        memset(&d, 0, sizeof d);
        if (n == STORE_AUDIT_MAX_QUEUED_DELIVERIES || parse_decimal(&p, ' ', &seq) != 0 ||
            seq <= last || parse_decimal(&p, ' ', &rule) != 0 || rule > used || rule >= n_rules ||
            parse_principal(&p, '\n', &d.recipient, &d.recipient_len, &d.recipient_partner_len) !=
                0)
            return 0;
        used += rule == used;
        last = seq;
        n++;
        if (fn != NULL) {
            const char *r = text + rule_at[rule];
            (void)parse_rule_line(&r, &d);
            d.seq = seq;
            if (fn(&d, arg) != 0)
                return n;
        }
    }
    return n > 0 && used == n_rules ? n : 0;
}

size_t store_audit_deliveries_parse(const char *text, store_audit_delivery_fn fn, void *arg)
{
    size_t n = deliveries_walk(text, NULL, NULL);
    if (n == 0 || fn == NULL)
        return n;
    (void)deliveries_walk(text, fn, arg);
    return n;
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
    sqlite3_stmt *stmt = audit_stmt(store, AUDIT_STMT_APPEND);
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

/* A row of audit_acks that names the delivery already: the broker acks a
 * delivery once (its second ack finds none), so the row was written
 * outside it, and every turn that acks the delivery fails until an
 * operator removes the row (docs/OPERATIONS.md, "When audit verify
 * fails"). Say so, instead of SQLite's words. */
static void audit_acked_taken(store_t *store, uint64_t delivery_seq)
{
    if (store->last_rc != SQLITE_CONSTRAINT_PRIMARYKEY &&
        store->last_rc != SQLITE_CONSTRAINT_UNIQUE)
        return;
    snprintf(store->errmsg, sizeof store->errmsg,
             "audit acked index: the audit_acks index already names delivery %llu (run "
             "schakelctl audit verify)",
             (unsigned long long)delivery_seq);
}

/* The acked-delivery index rows of an entry: delivery seq -> entry seq. A
 * seq indexed before fails on the primary key (audit_acked_taken). */
static int audit_insert_acked(store_t *store, uint64_t audit_seq, const uint64_t *seqs, size_t n)
{
    sqlite3_stmt *stmt = audit_stmt(store, AUDIT_STMT_ACKED_ADD);
    if (stmt == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (store_bind_int64(store, stmt, 1, (int64_t)seqs[i]) != 0 ||
            store_bind_int64(store, stmt, 2, (int64_t)audit_seq) != 0) {
            store_stmt_finish(stmt);
            return -1;
        }
        if (store_stmt_run(store, stmt, "audit acked index") != 0) {
            audit_acked_taken(store, seqs[i]);
            return -1;
        }
    }
    return 0;
}

/* Run a savepoint statement; a failure is recorded under what unless
 * quiet (a ROLLBACK TO after a failure keeps that failure's message). */
static int audit_savepoint_step(store_t *store, enum store_audit_stmt_id id, const char *what,
                                int quiet)
{
    sqlite3_stmt *stmt = audit_stmt(store, id);
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
 * and for delivery_seq where present, O(log n); for an acked entry one
 * insert into audit_acks per seq instead; no extra fsync (the caller's
 * transaction commits it with everything else). */
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
    sqlite3_stmt *stmt = audit_stmt(store, AUDIT_STMT_CHECKPOINT_ADD);
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
    sqlite3_stmt *stmt = audit_stmt(store, AUDIT_STMT_SCAN);
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
    sqlite3_stmt *stmt = audit_stmt(store, AUDIT_STMT_SCAN_SUBJECT);
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
    sqlite3_stmt *stmt = audit_stmt(store, AUDIT_STMT_SCAN_DELIVERY);
    if (stmt == NULL)
        return -1;
    if (store_bind_int64(store, stmt, 1, (int64_t)delivery_seq) != 0 ||
        store_bind_int64(store, stmt, 2, seq_bound(up_to_seq)) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    return scan_rows(store, stmt, fn, arg, "audit delivery scan");
}

/* The acked-delivery statements need audit_acks: on an older store (an
 * offline reader's) there is nothing to find. Returns the statement, or
 * NULL with *absent set (older store) or not (error). */
static sqlite3_stmt *acked_stmt(store_t *store, enum store_audit_stmt_id id, int *absent)
{
    *absent = 0;
    if (store->audit_stmt[id] == NULL) {
        int has_acks = audit_has_acks(store);
        if (has_acks <= 0) {
            *absent = has_acks == 0;
            return NULL;
        }
    }
    return audit_stmt(store, id);
}

/* An acked-delivery statement with delivery_seq bound: 1 and *stmt, or 0
 * when there is nothing to find (no such seq can be indexed, an older
 * store without audit_acks), or -1 on error. */
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

/* Cost: two rowid lookups (audit_acks, then audit). */
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

int store_audit_acked_lookup(store_t *store, uint64_t delivery_seq, uint64_t *audit_seq)
{
    sqlite3_stmt *stmt = NULL;
    if (store_enter(store, "audit acked lookup") != 0 || audit_seq == NULL)
        return -1;
    int ready = acked_stmt_for(store, AUDIT_STMT_ACKED_LOOKUP, delivery_seq, &stmt);
    if (ready <= 0)
        return ready;
    int rc = sqlite3_step(stmt), found = 0;
    if (rc == SQLITE_ROW) {
        int64_t value = sqlite3_column_int64(stmt, 0);
        *audit_seq = value > 0 ? (uint64_t)value : 0;
        found = 1;
    } else if (rc != SQLITE_DONE) {
        store_fail(store, "audit acked lookup");
        found = -1;
    }
    store_stmt_finish(stmt);
    return found;
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
    int has_acks = audit_has_acks(store);
    if (has_acks < 0 ||
        integrity_of(store, "PRAGMA integrity_check(audit)", "audit", problem, problem_len,
                     problems) != 0 ||
        integrity_of(store, "PRAGMA integrity_check(audit_checkpoints)", "audit_checkpoints",
                     problem, problem_len, problems) != 0 ||
        (has_acks && integrity_of(store, "PRAGMA integrity_check(audit_acks)", "audit_acks",
                                  problem, problem_len, problems) != 0))
        return -1;
    return 0;
}

/* Cost: a walk of audit_acks (it has no index on audit_seq: only
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
 * for the one call verification makes. Cost: a walk of audit_acks and a
 * rowid look-up per row past after_seq. */
#define AUDIT_ACKED_STRAY_SQL                                                                      \
    "SELECT a.delivery_seq, a.audit_seq FROM audit_acks AS a WHERE a.audit_seq > ?1"               \
    " AND NOT EXISTS (SELECT 1 FROM audit WHERE seq = a.audit_seq)"                                \
    " ORDER BY a.delivery_seq LIMIT 1"

int store_audit_acked_stray(store_t *store, uint64_t after_seq, uint64_t *delivery_seq,
                            uint64_t *audit_seq)
{
    sqlite3_stmt *stmt = NULL;
    if (store_enter(store, "audit acked index") != 0 || delivery_seq == NULL || audit_seq == NULL)
        return -1;
    int has_acks = audit_has_acks(store);
    if (has_acks <= 0)
        return has_acks;
    if (sqlite3_prepare_v2(store->db, AUDIT_ACKED_STRAY_SQL, -1, &stmt, NULL) != SQLITE_OK) {
        store_fail(store, "audit acked index: prepare");
        sqlite3_finalize(stmt);
        return -1;
    }
    int rc =
        store_bind_int64(store, stmt, 1, after_seq > INT64_MAX ? INT64_MAX : (int64_t)after_seq);
    int result = -1;
    if (rc == 0) {
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW) {
            *delivery_seq = (uint64_t)sqlite3_column_int64(stmt, 0);
            *audit_seq = (uint64_t)sqlite3_column_int64(stmt, 1);
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
    sqlite3_stmt *stmt = audit_stmt(store, AUDIT_STMT_CHECKPOINT_SCAN);
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
