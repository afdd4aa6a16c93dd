/*
 * store.c — the broker's durable state in one SQLite file (WAL, synchronous=FULL).
 *
 * Owns the schema, its version and every SQL statement; nothing else in the
 * broker knows SQL. Trusts its caller (the router) to pass validated ids and
 * bodies: it checks presence, sizes and that a delivery matches its item, not
 * id syntax. Every failure returns -1 (NULL from store_open) and leaves a
 * message for store_errmsg; bad data never aborts the daemon.
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The schema version this code writes and understands (PRAGMA user_version).
 * A store with a higher version was written by a newer schakeld: refused. */
#define STORE_SCHEMA_VERSION 1
#define STORE_STRINGIFY_(x) #x
#define STORE_STRINGIFY(x) STORE_STRINGIFY_(x)

/* How long a statement waits for a lock held by another process (an
 * operator's backup, say) before failing. The broker is the only writer in
 * normal operation, so this is only ever waited in exceptional cases; it
 * blocks the event loop while it lasts, hence short. */
#define STORE_BUSY_TIMEOUT_MS 2000

#define STORE_ERRMSG_LEN 512
#define STORE_HASH_BYTES 32
#define STORE_SIGNATURE_BYTES 64
#define STORE_MESSAGE_ID_BYTES 16

/*
 * Schema migrations: step i takes a store from user_version i to i + 1 and
 * ends by setting user_version. store_open runs the missing steps in one
 * transaction, so a store is at one version or the next, never between.
 *
 * Why deliveries repeat sender, sender_partner, message_id, item_index and
 * accepted_at instead of joining items and publishes at scan time: the
 * mailbox scan is the hot path (every reconnect, every credit refill) and
 * this way it is a single range over the (recipient, seq) index plus one
 * rowid lookup per row, in one table. A join would add two more B-tree
 * descents per row, into tables whose rows hold the large signed bodies.
 * A delivery row is also what the recipient was given, under which rule and
 * purpose (copied at decision time, since policies change), so it stands on
 * its own as a record. The copy costs about 200 bytes per delivery;
 * store_delivery_add copies the fields from the item's own rows and refuses
 * a caller whose values disagree, so the copies cannot drift.
 *
 * AUTOINCREMENT on items and deliveries: a seq is never reused, even after
 * the highest delivery has been acked and removed, so an Ack for an old seq
 * can never remove a newer delivery.
 *
 * deliveries.item_seq has no index of its own: nothing deletes items yet.
 * The retention work that purges items must add one (a parent delete checks
 * its children through it) and purge by expires_at, which is stored.
 */
static const char *const schema_steps[STORE_SCHEMA_VERSION] = {
    /* 0 -> 1 */
    "CREATE TABLE IF NOT EXISTS publishes ("
    "  id INTEGER PRIMARY KEY,"
    "  sender TEXT NOT NULL,"
    "  message_id BLOB NOT NULL CHECK (length(message_id) = 16),"
    "  content_hash BLOB NOT NULL CHECK (length(content_hash) = 32),"
    "  signature BLOB NOT NULL CHECK (length(signature) = 64),"
    "  root BLOB NOT NULL CHECK (length(root) = 32),"
    "  accepted_at INTEGER NOT NULL,"
    "  reply BLOB,"
    "  UNIQUE (sender, message_id)"
    ");"
    "CREATE TABLE IF NOT EXISTS items ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  publish_id INTEGER NOT NULL REFERENCES publishes(id),"
    "  item_index INTEGER NOT NULL CHECK (item_index >= 0),"
    "  body BLOB NOT NULL,"
    "  UNIQUE (publish_id, item_index)"
    ");"
    "CREATE TABLE IF NOT EXISTS deliveries ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  recipient TEXT NOT NULL,"
    "  item_seq INTEGER NOT NULL REFERENCES items(seq),"
    "  sender TEXT NOT NULL,"
    "  sender_partner TEXT NOT NULL,"
    "  message_id BLOB NOT NULL CHECK (length(message_id) = 16),"
    "  item_index INTEGER NOT NULL,"
    "  accepted_at INTEGER NOT NULL,"
    "  rule_id TEXT NOT NULL,"
    "  rule_hash TEXT NOT NULL,"
    "  purpose TEXT NOT NULL,"
    "  legal_basis TEXT NOT NULL,"
    "  expires_at INTEGER NOT NULL,"
    "  body BLOB NOT NULL"
    ");"
    "CREATE INDEX IF NOT EXISTS deliveries_by_recipient ON deliveries (recipient, seq);"
    "PRAGMA user_version = 1;",
};

enum stmt_id {
    STMT_BEGIN,
    STMT_COMMIT,
    STMT_ROLLBACK,
    STMT_PUBLISH_FIND,
    STMT_PUBLISH_ADD,
    STMT_PUBLISH_SET_REPLY,
    STMT_ITEM_ADD,
    STMT_DELIVERY_ADD,
    STMT_MAILBOX_SCAN,
    STMT_MAILBOX_COUNT,
    STMT_DELIVERY_ACK,
    STMT_DELIVERY_LAST_SEQ,
    STMT_COUNT
};

/* Every statement the store runs, prepared once at open. Parameters only:
 * no SQL text is ever built from input. */
static const char *const stmt_sql[STMT_COUNT] = {
    [STMT_BEGIN] = "BEGIN IMMEDIATE",
    [STMT_COMMIT] = "COMMIT",
    [STMT_ROLLBACK] = "ROLLBACK",
    [STMT_PUBLISH_FIND] = "SELECT content_hash, reply FROM publishes"
                          " WHERE sender = ?1 AND message_id = ?2",
    [STMT_PUBLISH_ADD] = "INSERT INTO publishes"
                         " (sender, message_id, content_hash, signature, root, accepted_at)"
                         " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [STMT_PUBLISH_SET_REPLY] = "UPDATE publishes SET reply = ?2 WHERE id = ?1",
    [STMT_ITEM_ADD] = "INSERT INTO items (publish_id, item_index, body) VALUES (?1, ?2, ?3)",
    /* Copies the publish's facts from its own rows; the WHERE clause makes a
     * caller whose copy disagrees insert nothing (detected by changes()). */
    [STMT_DELIVERY_ADD] =
        "INSERT INTO deliveries (recipient, item_seq, sender, sender_partner, message_id,"
        " item_index, accepted_at, rule_id, rule_hash, purpose, legal_basis, expires_at, body)"
        " SELECT ?1, i.seq, p.sender, ?2, p.message_id, i.item_index, p.accepted_at,"
        " ?3, ?4, ?5, ?6, ?7, ?8"
        " FROM items AS i JOIN publishes AS p ON p.id = i.publish_id"
        " WHERE i.seq = ?9 AND p.sender = ?10 AND p.message_id = ?11"
        " AND i.item_index = ?12 AND p.accepted_at = ?13",
    [STMT_MAILBOX_SCAN] =
        "SELECT seq, recipient, item_seq, message_id, item_index, sender, sender_partner,"
        " rule_id, rule_hash, purpose, legal_basis, accepted_at, expires_at, body"
        " FROM deliveries WHERE recipient = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    [STMT_MAILBOX_COUNT] = "SELECT count(*) FROM deliveries WHERE recipient = ?1",
    [STMT_DELIVERY_ACK] = "DELETE FROM deliveries WHERE seq = ?1 AND recipient = ?2",
    [STMT_DELIVERY_LAST_SEQ] = "SELECT coalesce(max(seq), 0) FROM deliveries",
};

/* Result columns of STMT_MAILBOX_SCAN, in order. */
enum scan_col {
    SCAN_SEQ,
    SCAN_RECIPIENT,
    SCAN_ITEM_SEQ,
    SCAN_MESSAGE_ID,
    SCAN_ITEM_INDEX,
    SCAN_SENDER,
    SCAN_SENDER_PARTNER,
    SCAN_RULE_ID,
    SCAN_RULE_HASH,
    SCAN_PURPOSE,
    SCAN_LEGAL_BASIS,
    SCAN_ACCEPTED_AT,
    SCAN_EXPIRES_AT,
    SCAN_BODY
};

struct store {
    sqlite3 *db;
    sqlite3_stmt *stmt[STMT_COUNT];
    int scanning; /* inside a store_mailbox_scan callback */
    char errmsg[STORE_ERRMSG_LEN];
};

/* A zero-length blob is stored as a zero-length blob, never as NULL: SQLite
 * binds a NULL pointer as SQL NULL, so empty input points here instead. */
static const uint8_t empty_bytes[1];

/* ------------------------------------------------------------------ errors */

static void store_fail(store_t *store, const char *what)
{
    snprintf(store->errmsg, sizeof store->errmsg, "%s: %s", what, sqlite3_errmsg(store->db));
}

static void store_refuse(store_t *store, const char *what, const char *why)
{
    snprintf(store->errmsg, sizeof store->errmsg, "%s: %s", what, why);
}

/* Every entry point but store_close and store_errmsg starts here: the scan
 * callback runs while the scan statement is live, so the store must not be
 * re-entered from it (a nested scan would reset the running statement, and
 * writes to the table being read give undefined scan results). */
static int store_enter(store_t *store, const char *what)
{
    if (store == NULL)
        return -1;
    if (store->scanning) {
        store_refuse(store, what, "called from inside a mailbox scan callback");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ statements */

/* Return a statement to its prepared state. sqlite3_reset repeats the code
 * of the statement's last step, which the caller has already examined and
 * recorded; it reports nothing new. sqlite3_clear_bindings always succeeds. */
static void stmt_finish(sqlite3_stmt *stmt)
{
    (void)sqlite3_reset(stmt);
    (void)sqlite3_clear_bindings(stmt);
}

static int bind_checked(store_t *store, int rc, const char *what)
{
    if (rc == SQLITE_OK)
        return 0;
    store_fail(store, what);
    return -1;
}

static int bind_text(store_t *store, sqlite3_stmt *stmt, int param, const char *text)
{
    return bind_checked(store, sqlite3_bind_text(stmt, param, text, -1, SQLITE_STATIC),
                        "bind text");
}

static int bind_bytes(store_t *store, sqlite3_stmt *stmt, int param, const uint8_t *bytes,
                      size_t len)
{
    const void *data = len == 0 ? empty_bytes : bytes;
    return bind_checked(
        store, sqlite3_bind_blob64(stmt, param, data, (sqlite3_uint64)len, SQLITE_STATIC),
        "bind blob");
}

static int bind_int64(store_t *store, sqlite3_stmt *stmt, int param, int64_t value)
{
    return bind_checked(store, sqlite3_bind_int64(stmt, param, (sqlite3_int64)value),
                        "bind integer");
}

/* Step a statement that returns no rows, then reset it. Returns 0 or -1. */
static int stmt_run(store_t *store, sqlite3_stmt *stmt, const char *what)
{
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE)
        store_fail(store, what);
    stmt_finish(stmt);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* A text column of a NOT NULL column. NULL means the value was NULL (the
 * schema forbids it) or SQLite ran out of memory converting it. */
static const char *column_text(sqlite3_stmt *stmt, int col)
{
    return (const char *)sqlite3_column_text(stmt, col);
}

/* A blob column; *len set. NULL on out-of-memory or an SQL NULL. */
static const uint8_t *column_bytes(sqlite3_stmt *stmt, int col, size_t *len)
{
    const uint8_t *bytes = sqlite3_column_blob(stmt, col);
    int n = sqlite3_column_bytes(stmt, col);
    *len = n > 0 ? (size_t)n : 0;
    if (bytes == NULL && sqlite3_column_type(stmt, col) == SQLITE_BLOB)
        return empty_bytes; /* a zero-length blob */
    return bytes;
}

/* ------------------------------------------------------------------ bodies */

/*
 * Bodies at rest. Every body (an item's signed bytes, a delivery's filtered
 * Signal) is written through body_bind and read back through body_column,
 * and nowhere else. Sealing bodies (XChaCha20-Poly1305 with associated data
 * naming the row: items by (publish_id, item_index), deliveries by
 * (recipient, item_seq), both known before the insert) changes these two
 * functions and the kind of value they pass, not their callers. Until then
 * a body is stored as given.
 */
enum body_kind { BODY_ITEM, BODY_DELIVERY };

static int body_bind(store_t *store, sqlite3_stmt *stmt, int param, enum body_kind kind,
                     const uint8_t *body, size_t len)
{
    (void)kind;
    return bind_bytes(store, stmt, param, body, len);
}

/* *body stays valid until the statement steps or resets again. */
static int body_column(store_t *store, sqlite3_stmt *stmt, int col, enum body_kind kind,
                       const uint8_t **body, size_t *len)
{
    (void)kind;
    *body = column_bytes(stmt, col, len);
    if (*body == NULL) {
        store_refuse(store, "read body", "missing or out of memory");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ open and close */

static void open_error(char *err, size_t errlen, const char *what, const char *why)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: %s", what, why);
}

/* Run a one-off statement at open that yields one row with one value, and
 * copy that value as text (PRAGMA answers). Returns 0 or -1. */
static int pragma_text(store_t *store, const char *sql, char *out, size_t outlen)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(store->db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        store_fail(store, sql);
        return -1;
    }
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const char *value = column_text(stmt, 0);
        snprintf(out, outlen, "%s", value != NULL ? value : "");
    } else if (rc == SQLITE_DONE) {
        store_refuse(store, sql, "no answer (not supported by this SQLite)");
    } else {
        store_fail(store, sql);
    }
    if (sqlite3_finalize(stmt) != SQLITE_OK && rc == SQLITE_ROW) {
        store_fail(store, sql);
        return -1;
    }
    return rc == SQLITE_ROW ? 0 : -1;
}

/* Run a one-off statement at open whose rows, if any, do not matter. */
static int pragma_set(store_t *store, const char *sql)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(store->db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        store_fail(store, sql);
        return -1;
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
        ;
    if (rc != SQLITE_DONE)
        store_fail(store, sql);
    int final_rc = sqlite3_finalize(stmt);
    if (rc == SQLITE_DONE && final_rc != SQLITE_OK) {
        store_fail(store, sql);
        return -1;
    }
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Set a PRAGMA and read it back, since SQLite ignores what it cannot do
 * (foreign_keys in a build without them, WAL on a file system without
 * shared memory) rather than failing. */
static int pragma_require(store_t *store, const char *set_sql, const char *get_sql,
                          const char *expected)
{
    char value[32];
    if (pragma_set(store, set_sql) != 0 || pragma_text(store, get_sql, value, sizeof value) != 0)
        return -1;
    if (strcmp(value, expected) != 0) {
        snprintf(store->errmsg, sizeof store->errmsg, "%s: got \"%s\", need \"%s\"", get_sql,
                 value, expected);
        return -1;
    }
    return 0;
}

static int schema_version(store_t *store, long *version)
{
    char value[32];
    char *end = NULL;
    if (pragma_text(store, "PRAGMA user_version", value, sizeof value) != 0)
        return -1;
    errno = 0;
    *version = strtol(value, &end, 10);
    if (errno != 0 || end == value || *end != '\0') {
        store_refuse(store, "PRAGMA user_version", "not a number");
        return -1;
    }
    return 0;
}

static int schema_check_not_newer(store_t *store, long version)
{
    if (version <= STORE_SCHEMA_VERSION)
        return 0;
    snprintf(store->errmsg, sizeof store->errmsg,
             "store schema version %ld is newer than this schakeld understands (%d); "
             "run the schakeld that wrote it, or a newer one",
             version, STORE_SCHEMA_VERSION);
    return -1;
}

static int exec_fixed(store_t *store, const char *sql, const char *what)
{
    char *message = NULL;
    int rc = sqlite3_exec(store->db, sql, NULL, NULL, &message);
    if (rc == SQLITE_OK)
        return 0;
    snprintf(store->errmsg, sizeof store->errmsg, "%s: %s", what,
             message != NULL ? message : sqlite3_errstr(rc));
    sqlite3_free(message);
    return -1;
}

/* Bring the schema to STORE_SCHEMA_VERSION in one immediate transaction; the
 * version is read again inside it, so two processes opening a new store at
 * once do not both migrate. */
static int schema_apply(store_t *store)
{
    long version = 0;
    if (exec_fixed(store, "BEGIN IMMEDIATE", "schema") != 0)
        return -1;
    if (schema_version(store, &version) != 0 || schema_check_not_newer(store, version) != 0)
        goto fail;
    if (version < 0) {
        store_refuse(store, "schema", "negative user_version: not a Schakel store");
        goto fail;
    }
    for (long step = version; step < STORE_SCHEMA_VERSION; step++)
        if (exec_fixed(store, schema_steps[step], "schema migration") != 0)
            goto fail;
    if (exec_fixed(store, "COMMIT", "schema") != 0)
        goto fail;
    return 0;
fail:
    if (!sqlite3_get_autocommit(store->db))
        (void)sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL); /* error already kept */
    return -1;
}

static int statements_prepare(store_t *store)
{
    for (int i = 0; i < STMT_COUNT; i++) {
        int rc = sqlite3_prepare_v3(store->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                    &store->stmt[i], NULL);
        if (rc != SQLITE_OK) {
            store_fail(store, stmt_sql[i]);
            return -1;
        }
    }
    return 0;
}

/* The store holds personal data: create it owner-only. SQLite gives its -wal
 * and -shm files the mode of the database file. An existing file keeps its
 * mode. */
static int file_create_private(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        open_error(err, errlen, path, strerror(errno));
        return -1;
    }
    if (close(fd) != 0) {
        open_error(err, errlen, path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Connection settings, then the version check before anything is written
 * (switching to WAL writes the file header), then the rest. */
static int store_configure(store_t *store)
{
    long version = 0;
    if (bind_checked(store, sqlite3_busy_timeout(store->db, STORE_BUSY_TIMEOUT_MS),
                     "busy_timeout") != 0 ||
        bind_checked(store,
                     sqlite3_db_config(store->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL),
                     "defensive mode") != 0)
        return -1;
    if (schema_version(store, &version) != 0 || schema_check_not_newer(store, version) != 0)
        return -1;
    if (pragma_require(store, "PRAGMA journal_mode = WAL", "PRAGMA journal_mode", "wal") != 0 ||
        pragma_require(store, "PRAGMA synchronous = FULL", "PRAGMA synchronous", "2") != 0 ||
        pragma_require(store, "PRAGMA foreign_keys = ON", "PRAGMA foreign_keys", "1") != 0)
        return -1;
    return 0;
}

store_t *store_open(const char *path, char *err, size_t errlen)
{
    if (path == NULL || path[0] == '\0' || strcmp(path, ":memory:") == 0) {
        open_error(err, errlen, "store", "the store must be a file path");
        return NULL;
    }
    if (file_create_private(path, err, errlen) != 0)
        return NULL;
    store_t *store = calloc(1, sizeof *store);
    if (store == NULL) {
        open_error(err, errlen, path, "out of memory");
        return NULL;
    }
    int rc = sqlite3_open_v2(path, &store->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        open_error(err, errlen, path,
                   store->db != NULL ? sqlite3_errmsg(store->db) : sqlite3_errstr(rc));
        store_close(&store);
        return NULL;
    }
    if (store_configure(store) != 0 || schema_apply(store) != 0 ||
        statements_prepare(store) != 0) {
        open_error(err, errlen, path, store->errmsg);
        store_close(&store);
        return NULL;
    }
    return store;
}

void store_close(store_t **store)
{
    if (store == NULL || *store == NULL)
        return;
    store_t *s = *store;
    if (s->db != NULL) {
        /* An open transaction is abandoned, exactly as in a crash. */
        if (!sqlite3_get_autocommit(s->db))
            (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        for (int i = 0; i < STMT_COUNT; i++)
            (void)sqlite3_finalize(s->stmt[i]); /* NULL-safe; repeats old errors only */
        /* With every statement finalized this closes at once; close_v2
         * returns SQLITE_OK in every case by design. */
        (void)sqlite3_close_v2(s->db);
    }
    free(s);
    *store = NULL;
}

const char *store_errmsg(const store_t *store)
{
    if (store == NULL)
        return "no store";
    return store->errmsg;
}

/* ------------------------------------------------------------------ transactions */

/* Cost of each: one lock change; COMMIT also writes and fsyncs the WAL
 * (synchronous=FULL), which is why callers group a loop turn into one. */

int store_begin(store_t *store)
{
    if (store_enter(store, "begin") != 0)
        return -1;
    if (!sqlite3_get_autocommit(store->db))
        return 0;
    return stmt_run(store, store->stmt[STMT_BEGIN], "begin");
}

int store_commit(store_t *store)
{
    if (store_enter(store, "commit") != 0)
        return -1;
    /* No transaction: SQLite may have rolled it back by itself after an
     * I/O or full-disk error. Saying 0 here would let the caller
     * acknowledge writes that are gone. */
    if (sqlite3_get_autocommit(store->db)) {
        store_refuse(store, "commit", "no transaction is open (rolled back?)");
        return -1;
    }
    if (stmt_run(store, store->stmt[STMT_COMMIT], "commit") == 0)
        return 0;
    /* Leave no half-state behind: the caller treats all of it as lost. */
    if (!sqlite3_get_autocommit(store->db)) {
        char kept[STORE_ERRMSG_LEN];
        memcpy(kept, store->errmsg, sizeof kept);
        (void)stmt_run(store, store->stmt[STMT_ROLLBACK], "rollback after failed commit");
        memcpy(store->errmsg, kept, sizeof kept);
    }
    return -1;
}

int store_rollback(store_t *store)
{
    if (store_enter(store, "rollback") != 0)
        return -1;
    if (sqlite3_get_autocommit(store->db))
        return 0;
    return stmt_run(store, store->stmt[STMT_ROLLBACK], "rollback");
}

int store_in_transaction(const store_t *store)
{
    if (store == NULL || store->db == NULL)
        return 0;
    return !sqlite3_get_autocommit(store->db);
}

/* ------------------------------------------------------------------ publishes and items */

/* Cost: one lookup in the UNIQUE (sender, message_id) index, O(log n). */
int store_publish_find(store_t *store, const char *sender, const uint8_t message_id[16],
                       uint8_t content_hash[32], uint8_t **accepted, size_t *accepted_len)
{
    if (store_enter(store, "publish_find") != 0)
        return -1;
    if (sender == NULL || message_id == NULL) {
        store_refuse(store, "publish_find", "sender and message id are required");
        return -1;
    }
    if (accepted != NULL)
        *accepted = NULL;
    if (accepted_len != NULL)
        *accepted_len = 0;
    sqlite3_stmt *stmt = store->stmt[STMT_PUBLISH_FIND];
    if (bind_text(store, stmt, 1, sender) != 0 ||
        bind_bytes(store, stmt, 2, message_id, STORE_MESSAGE_ID_BYTES) != 0) {
        stmt_finish(stmt);
        return -1;
    }
    int found = -1;
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) {
        found = 0;
    } else if (rc != SQLITE_ROW) {
        store_fail(store, "publish_find");
    } else {
        size_t hash_len = 0, reply_len = 0;
        const uint8_t *hash = column_bytes(stmt, 0, &hash_len);
        const uint8_t *reply = column_bytes(stmt, 1, &reply_len);
        uint8_t *copy = NULL;
        if (hash == NULL || hash_len != STORE_HASH_BYTES) {
            store_refuse(store, "publish_find", "stored content hash is damaged");
        } else if (reply == NULL && sqlite3_column_type(stmt, 1) != SQLITE_NULL) {
            store_refuse(store, "publish_find", "out of memory reading the reply");
        } else if (reply != NULL && accepted != NULL &&
                   (copy = malloc(reply_len > 0 ? reply_len : 1)) == NULL) {
            store_refuse(store, "publish_find", "out of memory");
        } else {
            if (content_hash != NULL)
                memcpy(content_hash, hash, STORE_HASH_BYTES);
            if (copy != NULL && reply_len > 0)
                memcpy(copy, reply, reply_len);
            if (accepted != NULL)
                *accepted = copy;
            if (accepted_len != NULL)
                *accepted_len = reply != NULL ? reply_len : 0;
            found = 1;
        }
    }
    stmt_finish(stmt);
    return found;
}

/* Cost: one table insert plus one (sender, message_id) index insert, O(log n). */
int64_t store_publish_add(store_t *store, const char *sender, const uint8_t message_id[16],
                          const uint8_t content_hash[32], const uint8_t signature[64],
                          const uint8_t root[32], int64_t accepted_at)
{
    if (store_enter(store, "publish_add") != 0)
        return -1;
    if (sender == NULL || sender[0] == '\0' || message_id == NULL || content_hash == NULL ||
        signature == NULL || root == NULL) {
        store_refuse(store, "publish_add", "a required field is missing");
        return -1;
    }
    sqlite3_stmt *stmt = store->stmt[STMT_PUBLISH_ADD];
    if (bind_text(store, stmt, 1, sender) != 0 ||
        bind_bytes(store, stmt, 2, message_id, STORE_MESSAGE_ID_BYTES) != 0 ||
        bind_bytes(store, stmt, 3, content_hash, STORE_HASH_BYTES) != 0 ||
        bind_bytes(store, stmt, 4, signature, STORE_SIGNATURE_BYTES) != 0 ||
        bind_bytes(store, stmt, 5, root, STORE_HASH_BYTES) != 0 ||
        bind_int64(store, stmt, 6, accepted_at) != 0) {
        stmt_finish(stmt);
        return -1;
    }
    if (stmt_run(store, stmt, "publish_add") != 0)
        return -1;
    return (int64_t)sqlite3_last_insert_rowid(store->db);
}

/* Cost: one rowid lookup and row rewrite, O(log n). */
int store_publish_set_reply(store_t *store, int64_t publish_id, const uint8_t *accepted,
                            size_t len)
{
    if (store_enter(store, "publish_set_reply") != 0)
        return -1;
    if (accepted == NULL && len > 0) {
        store_refuse(store, "publish_set_reply", "reply bytes missing");
        return -1;
    }
    sqlite3_stmt *stmt = store->stmt[STMT_PUBLISH_SET_REPLY];
    if (bind_int64(store, stmt, 1, publish_id) != 0 ||
        bind_bytes(store, stmt, 2, accepted, len) != 0) {
        stmt_finish(stmt);
        return -1;
    }
    if (stmt_run(store, stmt, "publish_set_reply") != 0)
        return -1;
    if (sqlite3_changes(store->db) != 1) {
        store_refuse(store, "publish_set_reply", "no such publish");
        return -1;
    }
    return 0;
}

/* Cost: one table append (seq is the rowid) plus one (publish_id,
 * item_index) index insert and the foreign-key lookup of the publish,
 * each O(log n). */
int64_t store_item_add(store_t *store, int64_t publish_id, uint32_t item_index,
                       const uint8_t *item, size_t len)
{
    if (store_enter(store, "item_add") != 0)
        return -1;
    if (item == NULL && len > 0) {
        store_refuse(store, "item_add", "item bytes missing");
        return -1;
    }
    sqlite3_stmt *stmt = store->stmt[STMT_ITEM_ADD];
    if (bind_int64(store, stmt, 1, publish_id) != 0 ||
        bind_int64(store, stmt, 2, (int64_t)item_index) != 0 ||
        body_bind(store, stmt, 3, BODY_ITEM, item, len) != 0) {
        stmt_finish(stmt);
        return -1;
    }
    if (stmt_run(store, stmt, "item_add") != 0)
        return -1;
    return (int64_t)sqlite3_last_insert_rowid(store->db);
}

/* ------------------------------------------------------------------ deliveries */

/* sender must be "<sender_partner>/<name>". */
static int sender_in_partner(const char *sender, const char *partner)
{
    size_t n = strlen(partner);
    return n > 0 && strncmp(sender, partner, n) == 0 && sender[n] == '/';
}

static int delivery_fields_present(const store_delivery_t *d)
{
    return d->recipient != NULL && d->recipient[0] != '\0' && d->message_id != NULL &&
           d->sender != NULL && d->sender_partner != NULL && d->rule_id != NULL &&
           d->rule_hash != NULL && d->purpose != NULL && d->legal_basis != NULL &&
           (d->body != NULL || d->body_len == 0);
}

/* Parameters of STMT_DELIVERY_ADD: ?1..?8 are written, ?9..?13 must match
 * the item's rows. */
static int delivery_bind(store_t *store, sqlite3_stmt *stmt, const store_delivery_t *d)
{
    if (bind_text(store, stmt, 1, d->recipient) != 0 ||
        bind_text(store, stmt, 2, d->sender_partner) != 0 ||
        bind_text(store, stmt, 3, d->rule_id) != 0 ||
        bind_text(store, stmt, 4, d->rule_hash) != 0 ||
        bind_text(store, stmt, 5, d->purpose) != 0 ||
        bind_text(store, stmt, 6, d->legal_basis) != 0 ||
        bind_int64(store, stmt, 7, d->expires_at) != 0 ||
        body_bind(store, stmt, 8, BODY_DELIVERY, d->body, d->body_len) != 0)
        return -1;
    if (bind_int64(store, stmt, 9, (int64_t)d->item_seq) != 0 ||
        bind_text(store, stmt, 10, d->sender) != 0 ||
        bind_bytes(store, stmt, 11, d->message_id, STORE_MESSAGE_ID_BYTES) != 0 ||
        bind_int64(store, stmt, 12, (int64_t)d->item_index) != 0 ||
        bind_int64(store, stmt, 13, d->accepted_at) != 0)
        return -1;
    return 0;
}

/* Cost: rowid lookups of the item and its publish, one table append and one
 * (recipient, seq) index insert, each O(log n). */
int64_t store_delivery_add(store_t *store, const store_delivery_t *d)
{
    if (store_enter(store, "delivery_add") != 0)
        return -1;
    if (d == NULL || !delivery_fields_present(d)) {
        store_refuse(store, "delivery_add", "a required field is missing");
        return -1;
    }
    if (!sender_in_partner(d->sender, d->sender_partner)) {
        store_refuse(store, "delivery_add", "sender is not a principal of sender_partner");
        return -1;
    }
    if (d->item_seq == 0 || d->item_seq > INT64_MAX) {
        store_refuse(store, "delivery_add", "no such item");
        return -1;
    }
    sqlite3_stmt *stmt = store->stmt[STMT_DELIVERY_ADD];
    if (delivery_bind(store, stmt, d) != 0) {
        stmt_finish(stmt);
        return -1;
    }
    if (stmt_run(store, stmt, "delivery_add") != 0)
        return -1;
    if (sqlite3_changes(store->db) != 1) {
        store_refuse(store, "delivery_add",
                     "item unknown, or its sender, message id, index or accepted_at differ");
        return -1;
    }
    return (int64_t)sqlite3_last_insert_rowid(store->db);
}

/* Fill d from the current row of the scan. Pointers borrow the row. */
static int scan_row(store_t *store, sqlite3_stmt *stmt, store_delivery_t *d)
{
    size_t id_len = 0;
    d->seq = (uint64_t)sqlite3_column_int64(stmt, SCAN_SEQ);
    d->item_seq = (uint64_t)sqlite3_column_int64(stmt, SCAN_ITEM_SEQ);
    d->item_index = (uint32_t)sqlite3_column_int64(stmt, SCAN_ITEM_INDEX);
    d->accepted_at = sqlite3_column_int64(stmt, SCAN_ACCEPTED_AT);
    d->expires_at = sqlite3_column_int64(stmt, SCAN_EXPIRES_AT);
    d->recipient = column_text(stmt, SCAN_RECIPIENT);
    d->message_id = column_bytes(stmt, SCAN_MESSAGE_ID, &id_len);
    d->sender = column_text(stmt, SCAN_SENDER);
    d->sender_partner = column_text(stmt, SCAN_SENDER_PARTNER);
    d->rule_id = column_text(stmt, SCAN_RULE_ID);
    d->rule_hash = column_text(stmt, SCAN_RULE_HASH);
    d->purpose = column_text(stmt, SCAN_PURPOSE);
    d->legal_basis = column_text(stmt, SCAN_LEGAL_BASIS);
    if (d->recipient == NULL || d->message_id == NULL || id_len != STORE_MESSAGE_ID_BYTES ||
        d->sender == NULL || d->sender_partner == NULL || d->rule_id == NULL ||
        d->rule_hash == NULL || d->purpose == NULL || d->legal_basis == NULL) {
        store_refuse(store, "mailbox_scan", "damaged row or out of memory");
        return -1;
    }
    return body_column(store, stmt, SCAN_BODY, BODY_DELIVERY, &d->body, &d->body_len);
}

/* Cost: one descent of the (recipient, seq) index, then one rowid lookup per
 * row visited; no sort (the index is in seq order) and no temporary storage.
 * Rows are stepped one at a time, so memory stays at one row whatever the
 * mailbox holds. */
int store_mailbox_scan(store_t *store, const char *recipient, uint64_t after_seq, size_t limit,
                       store_delivery_fn fn, void *arg)
{
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
    sqlite3_stmt *stmt = store->stmt[STMT_MAILBOX_SCAN];
    if (bind_text(store, stmt, 1, recipient) != 0 ||
        bind_int64(store, stmt, 2, (int64_t)after_seq) != 0 ||
        bind_int64(store, stmt, 3, (int64_t)limit) != 0) {
        stmt_finish(stmt);
        return -1;
    }
    int visited = 0, result = -1, rc;
    store->scanning = 1;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        store_delivery_t d;
        if (scan_row(store, stmt, &d) != 0)
            break;
        visited++;
        if (fn(&d, arg) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    store->scanning = 0;
    if (rc == SQLITE_DONE)
        result = visited;
    else if (rc != SQLITE_ROW)
        store_fail(store, "mailbox_scan");
    stmt_finish(stmt);
    return result;
}

/* Cost: one count over the recipient's range of the (recipient, seq)
 * index, O(log n + pending). Backlogs are bounded by retention; a counter
 * table would make this O(log n) at the price of a write per ack. */
int64_t store_mailbox_count(store_t *store, const char *recipient)
{
    if (store_enter(store, "mailbox_count") != 0)
        return -1;
    if (recipient == NULL) {
        store_refuse(store, "mailbox_count", "recipient is required");
        return -1;
    }
    sqlite3_stmt *stmt = store->stmt[STMT_MAILBOX_COUNT];
    if (bind_text(store, stmt, 1, recipient) != 0) {
        stmt_finish(stmt);
        return -1;
    }
    int64_t count = -1;
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        count = sqlite3_column_int64(stmt, 0);
    else
        store_fail(store, "mailbox_count");
    stmt_finish(stmt);
    return count;
}

/* Cost: max() of the rowid is one step to the end of the table's b-tree. */
int64_t store_delivery_last_seq(store_t *store)
{
    if (store_enter(store, "delivery_last_seq") != 0)
        return -1;
    sqlite3_stmt *stmt = store->stmt[STMT_DELIVERY_LAST_SEQ];
    int64_t seq = -1;
    if (sqlite3_step(stmt) == SQLITE_ROW)
        seq = sqlite3_column_int64(stmt, 0);
    else
        store_fail(store, "delivery_last_seq");
    stmt_finish(stmt);
    return seq;
}

/* Cost: one rowid lookup, the row delete and its index entry delete,
 * O(log n). The recipient is part of the WHERE clause, so one principal's
 * Ack can never remove another's delivery. */
int store_delivery_ack(store_t *store, const char *recipient, uint64_t seq)
{
    if (store_enter(store, "delivery_ack") != 0)
        return -1;
    if (recipient == NULL) {
        store_refuse(store, "delivery_ack", "recipient is required");
        return -1;
    }
    if (seq == 0 || seq > INT64_MAX)
        return 0; /* never a seq */
    sqlite3_stmt *stmt = store->stmt[STMT_DELIVERY_ACK];
    if (bind_int64(store, stmt, 1, (int64_t)seq) != 0 ||
        bind_text(store, stmt, 2, recipient) != 0) {
        stmt_finish(stmt);
        return -1;
    }
    if (stmt_run(store, stmt, "delivery_ack") != 0)
        return -1;
    return sqlite3_changes(store->db) == 1 ? 1 : 0;
}
