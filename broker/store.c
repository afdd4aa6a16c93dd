/*
 * store.c — the broker's durable state in one SQLite file (WAL; a commit syncs
 * the WAL itself, unless its caller says the turn can do without).
 *
 * Owns opening and closing, the prepared statements (all their SQL, expiry's
 * and deliveries' included), transactions, publishes and items;
 * store_delivery.c the mailboxes (deliveries, scans, counts, acks).
 * store_schema.c creates, migrates and
 * checks the schema; store_expire.c applies retention; store_seal.c seals
 * and opens bodies, keeps the key and its check, and rekeys; store_case.c
 * keeps cases and prepares its own statements (store_internal.h joins
 * them). Trusts its caller (the router) to pass
 * validated ids and bodies: it checks presence, sizes and that a delivery
 * matches its item, not id syntax. Trusts nothing read back from the file:
 * a body that does not authenticate is an error.
 * Every failure returns -1 (NULL from store_open) and leaves a message for
 * store_errmsg and a class for store_last_error_is_unavailable; bad data
 * never aborts.
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "schakel_limits.h"
#include "store_internal.h"

#define STORE_HASH_BYTES 32
#define STORE_SIGNATURE_BYTES 64

/* Every statement the store runs, prepared once at open. Parameters only:
 * no SQL text is ever built from input. */
static const char *const stmt_sql[STMT_COUNT] = {
    [STMT_BEGIN] = "BEGIN IMMEDIATE",
    [STMT_COMMIT] = "COMMIT",
    [STMT_ROLLBACK] = "ROLLBACK",
    [STMT_PUBLISH_FIND] = "SELECT content_hash, reply FROM publishes"
                          " WHERE sender = ?1 AND message_id = ?2",
    [STMT_PUBLISH_ADD] = "INSERT INTO publishes"
                         " (sender, message_id, content_hash, evidence, accepted_at, expires_at)"
                         " VALUES (?1, ?2, ?3, ?4, ?5, max(?5, ?6))",
    [STMT_PUBLISH_SET_REPLY] = "UPDATE publishes SET reply = ?2 WHERE id = ?1",
    /* Selecting from the publish makes an unknown publish insert nothing. */
    [STMT_ITEM_ADD] = "INSERT INTO items (seq, publish_id, item_index, expires_at, body)"
                      " SELECT ?1, id, ?3, max(accepted_at, ?5), ?4 FROM publishes WHERE id = ?2",
    /* The same for an item of the publish this transaction added (its
     * facts known, store_item_add_retained): one row, no SELECT, so no
     * statement journal either; the foreign key still checks the publish. */
    [STMT_ITEM_ADD_KNOWN] = "INSERT INTO items (seq, publish_id, item_index, expires_at, body)"
                            " VALUES (?1, ?2, ?3, ?5, ?4)",
    /* One row, no trigger, no SELECT: SQLite then needs no statement
     * journal (an undo copy of every page the statement touches). The
     * publish's facts are checked against its own rows first (
     * STMT_DELIVERY_ITEM_FACTS, once per item and transaction). */
    [STMT_DELIVERY_ADD] =
        "INSERT INTO deliveries (seq, recipient, item_seq, sender, sender_partner, message_id,"
        " item_index, accepted_at, rule_id, rule_hash, purpose, legal_basis, expires_at, body,"
        " case_id, is_case_event, by_ref)"
        " VALUES (?14, ?1, ?9, ?10, ?2, ?11, ?12, ?13, ?3, ?4, ?5, ?6, ?7, ?8, ?15, ?16, ?17)",
    [STMT_DELIVERY_ITEM_FACTS] = "SELECT p.sender, p.message_id, i.item_index, p.accepted_at"
                                 " FROM items AS i JOIN publishes AS p ON p.id = i.publish_id"
                                 " WHERE i.seq = ?1",
    [STMT_DELIVERY_CASE_KNOWN] = "SELECT 1 FROM cases WHERE case_id = ?1",
    /* What a trigger did before schema 5: a case's deliveries tie their
     * items to it (case_items_extend_retention then raises them). */
    [STMT_DELIVERY_CASE_ITEM] =
        "INSERT OR IGNORE INTO case_items (case_id, item_seq) VALUES (?1, ?2)",
    /* A delivery's columns in the order of STORE_DELIVERY_COLUMNS, then its
     * item's: a delivery by reference brings its item's sealed bytes along
     * (one rowid lookup); the others bring NULL there. */
    [STMT_MAILBOX_SCAN] =
        "SELECT d.seq, d.recipient, d.item_seq, d.message_id, d.item_index, d.sender,"
        " d.sender_partner, d.rule_id, d.rule_hash, d.purpose, d.legal_basis, d.accepted_at,"
        " d.expires_at, d.body, d.case_id, d.is_case_event, d.by_ref, i.body, i.publish_id"
        " FROM deliveries AS d LEFT JOIN items AS i ON d.by_ref = 1 AND i.seq = d.item_seq"
        " WHERE d.recipient = ?1 AND d.seq > ?2 ORDER BY d.seq LIMIT ?3",
    /* A delivery raises its item's and publish's retention here, once per
     * item and transaction (a trigger did it per delivery before schema 5). */
    [STMT_ITEM_RAISE] = "UPDATE items SET expires_at = ?2 WHERE seq = ?1 AND expires_at < ?2",
    [STMT_PUBLISH_RAISE] = "UPDATE publishes SET expires_at = ?2"
                           " WHERE id = (SELECT publish_id FROM items WHERE seq = ?1)"
                           " AND expires_at < ?2",
    [STMT_MAILBOX_COUNT] = "SELECT count(*) FROM deliveries WHERE recipient = ?1",
    [STMT_DELIVERY_ACK] = "DELETE FROM deliveries WHERE seq = ?1 AND recipient = ?2",
    [STMT_DELIVERY_RULE] = "SELECT rule_id, rule_hash, case_id FROM deliveries"
                           " WHERE seq = ?1 AND recipient = ?2",
    [STMT_DELIVERY_LAST_SEQ] = "SELECT coalesce(max(seq), 0) FROM deliveries",
    [STMT_EXPIRE_NEXT_DELIVERY] =
        "SELECT seq, recipient, item_seq, rule_id, rule_hash, expires_at"
        " FROM deliveries WHERE expires_at <= ?1 ORDER BY expires_at LIMIT 1",
    /* A seq that has a tombstone already keeps it (store_expire.c). */
    [STMT_TOMBSTONE_ADD] = "INSERT INTO tombstones"
                           " (seq, recipient, item_seq, rule_id, rule_hash, expires_at, expired_at)"
                           " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (seq) DO NOTHING",
    [STMT_DELIVERY_REMOVE] = STORE_DELIVERY_REMOVE_SQL,
    [STMT_REVOKE_FIND] = "SELECT seq, recipient, item_seq, rule_id, rule_hash, expires_at"
                         " FROM deliveries WHERE seq = ?1 AND recipient = ?2",
    /* Looks at no more than ?2 due rows: one still referenced is skipped
     * this time and taken once its deliveries (due no later) are gone. */
    /* An item named by a delivery set aside stays with it (the content
     * of one by reference, and the evidence when it was the item that
     * failed): the set-aside row is due no later, its item's retention
     * having been raised to it. */
    /* Each item removed names its sender and sealed length, for the
     * partners' sums (store_bytes.c). */
    [STMT_EXPIRE_ITEMS] =
        "DELETE FROM items WHERE seq IN"
        " (SELECT seq FROM items WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)"
        " AND NOT EXISTS (SELECT 1 FROM deliveries WHERE deliveries.item_seq = items.seq)"
        " AND NOT EXISTS (SELECT 1 FROM deliveries_set_aside AS s WHERE s.item_seq = items.seq)"
        " RETURNING (SELECT sender FROM publishes WHERE publishes.id = items.publish_id),"
        " length(body)",
    [STMT_EXPIRE_PUBLISHES] =
        "DELETE FROM publishes WHERE id IN"
        " (SELECT id FROM publishes WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)"
        " AND NOT EXISTS (SELECT 1 FROM items WHERE items.publish_id = publishes.id)",
    /* A case's events go with it: no tombstone (the deliveries made of
     * them have their own). */
    [STMT_EXPIRE_CASE_EVENTS] =
        "DELETE FROM case_events WHERE id IN"
        " (SELECT id FROM case_events WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
    /* Like items: a due case still named by an event or a delivery is
     * skipped this time. Its members and item links cascade. */
    [STMT_EXPIRE_CASES] =
        "DELETE FROM cases WHERE num IN"
        " (SELECT num FROM cases WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)"
        " AND NOT EXISTS (SELECT 1 FROM case_events WHERE case_events.case_id = cases.case_id)"
        " AND NOT EXISTS (SELECT 1 FROM deliveries WHERE deliveries.case_id = cases.case_id)"
        " AND NOT EXISTS (SELECT 1 FROM deliveries_set_aside AS s WHERE s.case_id = cases.case_id)",
    /* The scan's row for one delivery (store_delivery_set_aside checks it
     * again before moving it). */
    [STMT_SET_ASIDE_FIND] =
        "SELECT d.seq, d.recipient, d.item_seq, d.message_id, d.item_index, d.sender,"
        " d.sender_partner, d.rule_id, d.rule_hash, d.purpose, d.legal_basis, d.accepted_at,"
        " d.expires_at, d.body, d.case_id, d.is_case_event, d.by_ref, i.body, i.publish_id"
        " FROM deliveries AS d LEFT JOIN items AS i ON d.by_ref = 1 AND i.seq = d.item_seq"
        " WHERE d.seq = ?1 AND d.recipient = ?2",
    [STMT_SET_ASIDE_MOVE] = STORE_SET_ASIDE_MOVE_SQL,
    [STMT_SET_ASIDE_GET] = "SELECT seq, recipient, item_seq, rule_id, rule_hash, expires_at,"
                           " reason FROM deliveries_set_aside WHERE seq = ?1",
    /* The columns store_expire_found_delivery reads. */
    [STMT_EXPIRE_NEXT_SET_ASIDE] =
        "SELECT seq, recipient, item_seq, rule_id, rule_hash, expires_at"
        " FROM deliveries_set_aside WHERE expires_at <= ?1 ORDER BY expires_at LIMIT 1",
    [STMT_PUBLISH_SENDER] = "SELECT sender FROM publishes WHERE id = ?1",
    [STMT_STORED_BYTES_ADD] = "INSERT INTO stored_bytes (partner, bytes) VALUES (?1, ?2)"
                              " ON CONFLICT (partner) DO UPDATE SET bytes = bytes + excluded.bytes",
    [STMT_SET_ASIDE_REMOVE] = "DELETE FROM deliveries_set_aside WHERE seq = ?1",
    /* One whose expires_at is no integer in range (NULL, a text or a blob,
     * which sort after every number, or a real past any integer): the
     * table keeps no types, and that may be the damage. Each term is a
     * range of the expires_at index. */
    [STMT_EXPIRE_NEXT_SET_ASIDE_DAMAGED] =
        "SELECT seq, recipient, item_seq, rule_id, rule_hash, expires_at"
        " FROM deliveries_set_aside WHERE expires_at IS NULL OR expires_at >= ''"
        " OR expires_at > 9223372036854775807 LIMIT 1",
};

/* A zero-length blob is stored as a zero-length blob, never as NULL: SQLite
 * binds a NULL pointer as SQL NULL, so empty input points here instead. */
static const uint8_t empty_bytes[1];

/* ------------------------------------------------------------------ errors */

void store_fail(store_t *store, const char *what)
{
    store->last_rc = sqlite3_extended_errcode(store->db);
    snprintf(store->errmsg, sizeof store->errmsg, "%s: %s", what, sqlite3_errmsg(store->db));
    /* SQLite ends the transaction by itself after some storage errors;
     * remember why, for the commit that will find it gone. */
    if (store->txn_open && sqlite3_get_autocommit(store->db) && store->txn_lost_rc == 0)
        store->txn_lost_rc = store->last_rc != 0 ? store->last_rc : SQLITE_ERROR;
}

void store_refuse(store_t *store, const char *what, const char *why)
{
    store->last_rc = 0;
    snprintf(store->errmsg, sizeof store->errmsg, "%s: %s", what, why);
}

int store_last_error_is_unavailable(const store_t *store)
{
    if (store == NULL)
        return 0;
    switch (store->last_rc & 0xff) { /* the primary code of an extended one */
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_BUSY:
        return 1;
    default:
        return 0;
    }
}

/* Every entry point but store_close and store_errmsg starts here: callbacks
 * run while a statement is live, so the store must not be re-entered from
 * them (a nested scan would reset the running statement, and writes to the
 * table being read give undefined scan results). */
int store_enter(store_t *store, const char *what)
{
    if (store == NULL)
        return -1;
    if (store->in_callback) {
        store_refuse(store, what, "called from inside a store callback (mailbox scan or expiry)");
        return -1;
    }
    /* A keyless read-only opening (store_open_reader) has neither the key
     * nor the routing statements: it serves the audit trail's calls only,
     * whose names all start with "audit". */
    if (store->audit_reader && strncmp(what, "audit", 5) != 0) {
        store_refuse(store, what, "this store was opened read-only for the audit trail");
        return -1;
    }
    if (store->sync_failed) {
        store->last_rc = SQLITE_IOERR_FSYNC;
        snprintf(store->errmsg, sizeof store->errmsg,
                 "%s: an earlier sync or checkpoint of the store failed; what is on disk is "
                 "unknown until the store is opened again",
                 what);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ statements */

/* Return a statement to its prepared state. sqlite3_reset repeats the code
 * of the statement's last step, which the caller has already examined and
 * recorded; it reports nothing new. sqlite3_clear_bindings always succeeds. */
void store_stmt_finish(sqlite3_stmt *stmt)
{
    (void)sqlite3_reset(stmt);
    (void)sqlite3_clear_bindings(stmt);
}

int store_check_rc(store_t *store, int rc, const char *what)
{
    if (rc == SQLITE_OK)
        return 0;
    store_fail(store, what);
    return -1;
}

int store_bind_text(store_t *store, sqlite3_stmt *stmt, int param, const char *text)
{
    return store_check_rc(store, sqlite3_bind_text(stmt, param, text, -1, SQLITE_STATIC),
                          "bind text");
}

int store_bind_bytes(store_t *store, sqlite3_stmt *stmt, int param, const uint8_t *bytes,
                     size_t len)
{
    const void *data = len == 0 ? empty_bytes : bytes;
    return store_check_rc(
        store, sqlite3_bind_blob64(stmt, param, data, (sqlite3_uint64)len, SQLITE_STATIC),
        "bind blob");
}

int store_bind_int64(store_t *store, sqlite3_stmt *stmt, int param, int64_t value)
{
    return store_check_rc(store, sqlite3_bind_int64(stmt, param, (sqlite3_int64)value),
                          "bind integer");
}

/* Step a statement that returns no rows, then reset it. Returns 0 or -1. */
int store_stmt_run(store_t *store, sqlite3_stmt *stmt, const char *what)
{
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE)
        store_fail(store, what);
    store_stmt_finish(stmt);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* A text column of a NOT NULL column. NULL means the value was NULL (the
 * schema forbids it) or SQLite ran out of memory converting it. */
const char *store_column_text(sqlite3_stmt *stmt, int col)
{
    return (const char *)sqlite3_column_text(stmt, col);
}

/* A blob column; *len set. NULL on out-of-memory or an SQL NULL. */
const uint8_t *store_column_bytes(sqlite3_stmt *stmt, int col, size_t *len)
{
    const uint8_t *bytes = sqlite3_column_blob(stmt, col);
    int n = sqlite3_column_bytes(stmt, col);
    *len = n > 0 ? (size_t)n : 0;
    if (bytes == NULL && sqlite3_column_type(stmt, col) == SQLITE_BLOB)
        return empty_bytes; /* a zero-length blob */
    return bytes;
}

/* ------------------------------------------------------------------ one-off statements */

static void open_error(char *err, size_t errlen, const char *what, const char *why)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: %s", what, why);
}

/* Run a one-off statement that yields one row with one value, and copy that
 * value as text (PRAGMA answers). Returns 0 or -1. */
int store_pragma_text(store_t *store, const char *sql, char *out, size_t outlen)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(store->db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        store_fail(store, sql);
        return -1;
    }
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const char *value = store_column_text(stmt, 0);
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

static int text_to_int64(store_t *store, const char *what, const char *text, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0') {
        store_refuse(store, what, "not a number");
        return -1;
    }
    *out = (int64_t)value;
    return 0;
}

int store_query_int64(store_t *store, const char *sql, int64_t *out)
{
    char value[32];
    if (store_pragma_text(store, sql, value, sizeof value) != 0)
        return -1;
    return text_to_int64(store, sql, value, out);
}

/* Run a one-off statement whose rows, if any, do not matter. */
int store_pragma_set(store_t *store, const char *sql)
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

int store_exec_fixed(store_t *store, const char *sql, const char *what)
{
    char *message = NULL;
    int rc = sqlite3_exec(store->db, sql, NULL, NULL, &message);
    if (rc == SQLITE_OK)
        return 0;
    store->last_rc = sqlite3_extended_errcode(store->db);
    snprintf(store->errmsg, sizeof store->errmsg, "%s: %s", what,
             message != NULL ? message : sqlite3_errstr(rc));
    sqlite3_free(message);
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

/* ------------------------------------------------------------------ open and close */

/* A new store file, owner-only: it holds personal data (SQLite gives its
 * -wal and -shm files the mode of the database file). O_EXCL: a file
 * that is there, whatever it holds, is never taken for a new store. */
static int file_create_new(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
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

store_file_state_t store_presence(const char *path, char *err, size_t errlen)
{
    char said[PATH_MAX + 160], wal[PATH_MAX];
    struct stat st;
    store_file_state_t state = STORE_FILE_MISSING;
    if (path == NULL || path[0] == '\0') {
        open_error(err, errlen, "store", "no store path");
        return STORE_FILE_UNKNOWN;
    }
    int found = stat(path, &st) == 0;
    int stat_errno = found ? 0 : errno;
    if (found && S_ISREG(st.st_mode) && st.st_size > 0)
        return STORE_FILE_PRESENT;
    if ((found && !S_ISREG(st.st_mode)) || (!found && stat_errno != ENOENT)) {
        open_error(err, errlen, path, found ? "not a regular file" : strerror(stat_errno));
        return STORE_FILE_UNKNOWN;
    }
    if (snprintf(wal, sizeof wal, "%s-wal", path) >= (int)sizeof wal) {
        open_error(err, errlen, path, "the path is too long");
        return STORE_FILE_UNKNOWN;
    }
    if (found)
        snprintf(said, sizeof said, "%s is an empty file", path);
    else
        snprintf(said, sizeof said, "%s: %s", path, strerror(stat_errno));
    if (stat(wal, &st) == 0) {
        size_t used = strlen(said);
        snprintf(said + used, sizeof said - used,
                 ", but %s is there (%lld bytes): the write-ahead log of a store that is gone", wal,
                 (long long)st.st_size);
        state = STORE_FILE_WAL_ONLY;
    }
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", said);
    return state;
}

/* One process writes a store: a second broker on the same file would hand
 * out the same seqs (each keeps its counters in memory), deliver twice
 * without the redelivery flag and write a second chain into the trail.
 * An exclusive flock on PATH.lock, held as long as the handle is open
 * (the kernel releases it when the process ends, however it ends), with
 * the holder's pid in the file for the message. Returns the lock's fd, or
 * -1 with err. */
int store_lock_take(const char *path, char *err, size_t errlen)
{
    char lock_path[PATH_MAX];
    if (snprintf(lock_path, sizeof lock_path, "%s.lock", path) >= (int)sizeof lock_path) {
        open_error(err, errlen, path, "the path is too long");
        return -1;
    }
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        open_error(err, errlen, lock_path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int saved = errno;
        char holder[24] = "";
        ssize_t got = pread(fd, holder, sizeof holder - 1, 0);
        holder[got > 0 ? (size_t)got : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        if (saved == EWOULDBLOCK)
            snprintf(err, errlen,
                     "%s: in use by another process (pid %s): one schakeld per store; stop it "
                     "first",
                     path, holder[0] != '\0' ? holder : "unknown");
        else
            open_error(err, errlen, lock_path, strerror(saved));
        close(fd);
        return -1;
    }
    char pid[24];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        /* the lock holds without the pid; only the message would lack it */
    }
    return fd;
}

static store_t *store_new(const uint8_t seal_key[STORE_KEY_BYTES])
{
    store_t *store = calloc(1, sizeof *store);
    if (store == NULL)
        return NULL;
    store->lock_fd = -1;
    if ((store->seal_key = store_seal_key_new(seal_key)) == NULL) {
        free(store);
        return NULL;
    }
    return store;
}

/* Where a store must be there: a path without one, said before anything
 * is created (not even the lock file). */
static int store_require_present(const char *path, char *err, size_t errlen)
{
    store_file_state_t state = store_presence(path, err, errlen);
    if (state == STORE_FILE_PRESENT)
        return 0;
    if (state != STORE_FILE_UNKNOWN && err != NULL && errlen > 0) {
        size_t used = strnlen(err, errlen);
        snprintf(err + used, errlen - used, ": no store to open (only schakeld --init makes one)");
    }
    return -1;
}

/* Where a new store is to be made: nothing there, not even the -wal of a
 * store that is gone (SQLite would lay its pages over the new file). */
static int store_make_file(const char *path, char *err, size_t errlen)
{
    if (store_presence(path, err, errlen) == STORE_FILE_WAL_ONLY) {
        size_t used = strnlen(err, errlen);
        snprintf(err + used, errlen - used, "; no new store is made under it");
        return -1;
    }
    return file_create_new(path, err, errlen);
}

/* A file that is there but has no Schakel schema (user_version 0: another
 * database, or a store made in place by an --init of an older schakeld
 * that was interrupted) is refused where a
 * store must exist, before anything is written to it: giving it the
 * schema here would start an empty store as silently as creating one. */
static int store_check_made(store_t *store)
{
    int64_t version = 0;
    if (store_check_rc(store, sqlite3_busy_timeout(store->db, STORE_BUSY_TIMEOUT_MS),
                       "busy_timeout") != 0 ||
        store_query_int64(store, "PRAGMA user_version", &version) != 0)
        return -1;
    if (version != 0)
        return 0;
    store_refuse(store, "not a Schakel store",
                 "schema version 0 (an empty database, or what an interrupted --init of an "
                 "older schakeld left); no store to open: if it holds nothing to keep, remove it "
                 "and run schakeld --init again (only schakeld --init makes a store)");
    return -1;
}

/* A store this open made and could not finish goes again, with what
 * SQLite kept beside it (the lock file stays: it is any store's). */
static void store_unmake(const char *path)
{
    char side[PATH_MAX];
    (void)unlink(path);
    if (snprintf(side, sizeof side, "%s-wal", path) < (int)sizeof side)
        (void)unlink(side);
    if (snprintf(side, sizeof side, "%s-shm", path) < (int)sizeof side)
        (void)unlink(side);
}

store_t *store_open(const char *path, const uint8_t seal_key[STORE_KEY_BYTES],
                    store_open_mode_t mode, char *err, size_t errlen)
{
    if (path == NULL || path[0] == '\0' || strcmp(path, ":memory:") == 0) {
        open_error(err, errlen, "store", "the store must be a file path");
        return NULL;
    }
    if (seal_key == NULL) {
        open_error(err, errlen, path, "no store key");
        return NULL;
    }
    if (sodium_init() < 0) {
        open_error(err, errlen, path, "libsodium cannot initialise");
        return NULL;
    }
    int creating = mode == STORE_OPEN_CREATE;
    if ((creating ? store_make_file(path, err, errlen)
                  : store_require_present(path, err, errlen)) != 0)
        return NULL;
    int lock_fd = store_lock_take(path, err, errlen);
    store_t *store = lock_fd >= 0 ? store_new(seal_key) : NULL;
    if (store == NULL) {
        if (lock_fd >= 0) {
            close(lock_fd);
            open_error(err, errlen, path, "out of memory");
        }
        if (creating)
            store_unmake(path);
        return NULL;
    }
    store->lock_fd = lock_fd;
    /* One thread uses a store handle at a time: SQLite's own mutexes on
     * every call are not needed (multi-thread mode). The file is there
     * (made above, or checked): SQLite is never asked to create one. */
    int rc = sqlite3_open_v2(path, &store->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        open_error(err, errlen, path,
                   store->db != NULL ? sqlite3_errmsg(store->db) : sqlite3_errstr(rc));
        store_close(&store);
        if (creating)
            store_unmake(path);
        return NULL;
    }
    store_wal_hook_install(store);
    if ((!creating && store_check_made(store) != 0) || store_schema_configure(store) != 0 ||
        store_schema_apply(store) != 0 || statements_prepare(store) != 0 ||
        store_schema_counters_load(store) != 0 || store_bytes_load(store) != 0) {
        open_error(err, errlen, path, store->errmsg);
        store_close(&store);
        if (creating)
            store_unmake(path);
        return NULL;
    }
    /* A migration that sealed evidence held in clear: the old pages of a
     * WAL left by an unclean stop, and those the migration wrote after
     * them, go now, not at some later truncating checkpoint. Best effort
     * (a reader may hold the WAL); the database file is clean either way
     * once checkpointed (secure_delete). */
    if (store->evidence_migrated) {
        store_progress("truncating the WAL", 0);
        (void)store_checkpoint(store);
        store->last_rc = 0;
        store->errmsg[0] = '\0';
    }
    return store;
}

static store_progress_fn store_progress_hook;

void store_set_progress(store_progress_fn fn)
{
    store_progress_hook = fn;
}

void store_progress(const char *step, uint64_t done)
{
    if (store_progress_hook != NULL)
        store_progress_hook(step, done);
}

void store_close(store_t **store)
{
    if (store == NULL || *store == NULL)
        return;
    store_t *s = *store;
    store_checkpointer_stop(s); /* its connection goes before the loop's */
    if (s->db != NULL) {
        /* An open transaction is abandoned, exactly as in a crash. */
        if (!sqlite3_get_autocommit(s->db))
            (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        for (int i = 0; i < STMT_COUNT; i++)
            (void)sqlite3_finalize(s->stmt[i]); /* NULL-safe; repeats old errors only */
        for (int i = 0; i < AUDIT_STMT_COUNT; i++)
            (void)sqlite3_finalize(s->audit_stmt[i]);
        for (int i = 0; i < CASE_STMT_COUNT; i++)
            (void)sqlite3_finalize(s->case_stmt[i]);
        /* With every statement finalized this closes at once; close_v2
         * returns SQLITE_OK in every case by design. */
        (void)sqlite3_close_v2(s->db);
    }
    store_seal_free(s);
    store_count_free(s);
    store_bytes_free(s);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* the lock goes with it */
    free(s);
    *store = NULL;
}

const char *store_errmsg(const store_t *store)
{
    if (store == NULL)
        return "no store";
    return store->errmsg;
}

void store_global_init(void)
{
    /* SQLITE_MISUSE once SQLite is initialised: then it keeps counting,
     * which costs time, not correctness. */
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

/* ------------------------------------------------------------------ transactions */

/* Cost of each: one lock change; COMMIT also writes the WAL, and
 * store_commit syncs it (one fsync), which is why callers group a loop turn
 * into one. */

int store_begin(store_t *store)
{
    if (store_enter(store, "begin") != 0)
        return -1;
    if (!sqlite3_get_autocommit(store->db))
        return 0;
    if (store->txn_open) {
        /* SQLite rolled our transaction back by itself (I/O error, disk
         * full): beginning a fresh one here would let the caller's commit
         * report writes of the lost one as done. The caller must roll back
         * (store_rollback) before anything else is written. */
        store_refuse(store, "begin",
                     "the open transaction was rolled back after a storage error; roll back "
                     "before writing again");
        return -1;
    }
    store->txn_lost_rc = 0;
    if (store_stmt_run(store, store->stmt[STMT_BEGIN], "begin") != 0)
        return -1;
    store->txn_open = 1;
    store->txn_case_num = store->next_case_num;
    store->txn_serial++;       /* a new transaction: the cached audit tail is stale */
    store->audit_mismatch = 0; /* its reads say again */
    return 0;
}

/* The open transaction ends without its writes (rolled back, lost or
 * refused): what it counted goes with them. The item and delivery seqs it
 * took stay taken (a gap in 63 bits costs nothing); the case number it
 * took is the next open's again, since case ids are eight digits and the
 * last of them must not be lost to a failed commit. Nothing outside the
 * store saw that number: the turn's answers say it failed. */
static void txn_counters_drop(store_t *store)
{
    store_count_rollback(store);
    store_bytes_rollback(store);
    if (store->txn_case_num > 0)
        store->next_case_num = store->txn_case_num;
    store->txn_case_num = 0;
}

/* The transaction is gone without a COMMIT or ROLLBACK from us: SQLite
 * rolled it back by itself (after an I/O or full-disk error), or none was
 * begun. Saying 0 would let the caller acknowledge writes that are gone. */
static int commit_lost(store_t *store)
{
    int lost_rc = store->txn_open ? store->txn_lost_rc : 0;
    store_refuse(store, "commit",
                 lost_rc != 0 ? "the transaction was rolled back after a storage error"
                              : "no transaction is open (rolled back?)");
    store->last_rc = lost_rc;
    store->txn_open = 0;
    store->txn_lost_rc = 0;
    return -1;
}

static int commit_now(store_t *store)
{
    store->item_serial = 0;  /* the per-item memo ends with the transaction */
    store->commit_wrote = 0; /* the WAL hook says otherwise */
    /* A round asked for or running while this commit appends could copy
     * its frames before the plan below looks (store_checkpoint.c): only a
     * commit made beside an idle thread may ask for the next round. */
    store->commit_beside_round = !store_checkpointer_idle(store);
    if (sqlite3_get_autocommit(store->db)) {
        txn_counters_drop(store);
        return commit_lost(store);
    }
    /* The turn's changes of the partners' sums go into stored_bytes in
     * the same transaction: they commit with the items or not at all. */
    if (store_bytes_flush(store) == 0 &&
        store_stmt_run(store, store->stmt[STMT_COMMIT], "commit") == 0) {
        store->txn_open = 0;
        store->txn_case_num = 0;
        store_count_commit(store);
        store_bytes_commit(store);
        store_audit_committed(store);
        return 0;
    }
    txn_counters_drop(store);
    /* SQLite syncs inside COMMIT too (the WAL's header, when the WAL starts
     * over): a failed sync there is as final as one of ours. */
    int failed_rc = sqlite3_extended_errcode(store->db);
    /* Leave no half-state behind: the caller treats all of it as lost. */
    if (!sqlite3_get_autocommit(store->db)) {
        char kept[STORE_ERRMSG_LEN];
        int kept_rc = store->last_rc;
        memcpy(kept, store->errmsg, sizeof kept);
        (void)store_stmt_run(store, store->stmt[STMT_ROLLBACK], "rollback after failed commit");
        memcpy(store->errmsg, kept, sizeof kept);
        store->last_rc = kept_rc;
    }
    store->txn_open = 0;
    if (failed_rc == SQLITE_IOERR_FSYNC || failed_rc == SQLITE_IOERR_DIR_FSYNC)
        store_io_failed(store, failed_rc, "syncing the WAL inside the commit");
    return -1;
}

/* Make the committed WAL frames durable: the store runs with synchronous =
 * NORMAL (store_schema_configure), under which a WAL commit does not sync,
 * so a synced commit syncs the WAL itself, through SQLite's own handle of
 * the file. One sync covers every frame before it, the unsynced commits'
 * among them. Checkpoints sync the WAL and the database file by themselves. */
int store_wal_sync(store_t *store)
{
    sqlite3_file *wal = NULL;
    int rc = sqlite3_file_control(store->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal);
    if (rc == SQLITE_OK && (wal == NULL || wal->pMethods == NULL))
        rc = SQLITE_IOERR_FSYNC; /* after a commit in WAL mode its file is open */
    if (rc == SQLITE_OK) {
        int64_t start = durations_now_ns();
        rc = wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL);
        durations_add(&store->loop_sync_durations, durations_now_ns() - start);
    }
    if (rc == SQLITE_OK) {
        store->loop_syncs++; /* covers every commit so far (store_loop_syncs) */
        return 0;
    }
    store_io_failed(store, rc, "syncing the WAL");
    return -1;
}

/* The commit is visible but perhaps not on disk, and after a failed fsync
 * the kernel may call the same pages clean: no later sync can be trusted to
 * cover them. The handle refuses everything from now on; only reopening is
 * safe. */
void store_io_failed(store_t *store, int rc, const char *what)
{
    store->sync_failed = 1;
    store->last_rc = rc;
    snprintf(store->errmsg, sizeof store->errmsg,
             "commit: %s failed (%s); the store must be opened again", what, sqlite3_errstr(rc));
}

/* Counts the WAL's frames after each commit, in place of SQLite's automatic
 * checkpoint, which runs inside COMMIT and drops a failed sync of its own
 * (store_open turns it off by installing this hook). A WAL that started
 * over holds this commit's frames only (SQLite restarts it at the first
 * frame a transaction writes, when every frame before was copied); the
 * frames this commit wrote come from the connection's count of pages
 * written. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void)name;
    store_t *store = arg;
    int written = 0, high = 0;
    if (sqlite3_db_status(db, SQLITE_DBSTATUS_CACHE_WRITE, &written, &high, 0) == SQLITE_OK) {
        /* unsigned: the count wraps after 2^32 pages, the difference not */
        unsigned by_this = (unsigned)written - store->cache_writes;
        store->cache_writes = (unsigned)written;
        if (frames >= 0 && (unsigned)frames <= by_this)
            store->wal_generation++; /* the WAL started over */
        else if (frames < store->wal_frames)
            store->wal_generation++;
    } else if (frames < store->wal_frames) {
        store->wal_generation++;
    }
    store->wal_frames = frames;
    store->commit_wrote = 1;
    if (frames > store->wal_frames_peak)
        store->wal_frames_peak = frames;
    return SQLITE_OK;
}

static int checkpoint_threshold(const store_t *store)
{
    return store->checkpoint_frames > 0 ? store->checkpoint_frames : STORE_CHECKPOINT_FRAMES;
}

void store_test_checkpoint_frames(store_t *store, int frames)
{
    if (store != NULL)
        store->checkpoint_frames = frames;
}

int store_test_wal_frames_peak(store_t *store)
{
    int peak = store->wal_frames_peak;
    store->wal_frames_peak = store->wal_frames;
    return peak;
}

enum checkpoint_plan { PLAN_NONE, PLAN_FINISH, PLAN_FORCE };

/* After a commit: once the WAL holds the threshold (STORE_CHECKPOINT_FRAMES)
 * it is to be copied into the database. Without a checkpointer that is done
 * here, in place. With one, the thread copies it in rounds while the loop
 * goes on; but the WAL starts over only at a write that finds every frame
 * copied, and under steady load a commit always comes before a round ends.
 * So once a round has left at most STORE_CHECKPOINT_FINISH_FRAMES behind,
 * the loop copies those itself (between its transactions, so nothing comes
 * in between), and the next write starts the WAL over. From
 * STORE_CHECKPOINT_HARD_FACTOR times the threshold the loop checkpoints in
 * place even if no round got that close. The loop never checkpoints in
 * place while a round is asked for or runs, and asks for one only right
 * after a commit that appended frames while the thread was idle
 * (store_checkpoint.c: the WAL-reset race). A checkpoint that could not copy everything (a reader
 * holds part of the WAL) is tried again a threshold later, not at every
 * commit, and a round is asked for again only when the WAL has grown by
 * the finish bound since the last one was. A failed round is not reported
 * here (this commit is made and synced): the next commit is refused
 * (commit_allowed). */
static enum checkpoint_plan checkpoint_plan(store_t *store)
{
    /* A commit that appended nothing (the hook did not run) leaves the
     * counts as they were: nothing to decide, and no round may be asked
     * for on its word (the WAL may be fully copied). Nor may one made while
     * a round was asked for or ran: that round may have copied its frames
     * too. The next commit decides. */
    if (!store->commit_wrote || store->commit_beside_round)
        return PLAN_NONE;
    int threshold = checkpoint_threshold(store);
    if (store->wal_generation != store->checkpoint_marks_generation)
        store->checkpoint_retry_frames = store->checkpoint_request_frames = 0;
    if (store->wal_frames < threshold || store->wal_frames < store->checkpoint_retry_frames)
        return PLAN_NONE;
    if (store->checkpointer == NULL)
        return PLAN_FORCE;
    int copied = -1;
    if (store_checkpointer_poll(store, store->wal_generation, &copied) != 1)
        return PLAN_NONE; /* a round is on its way (or failed: the next commit says so) */
    if (store->wal_frames >= threshold * STORE_CHECKPOINT_HARD_FACTOR)
        return PLAN_FORCE;
    if (copied >= 0 && store->wal_frames - copied <= STORE_CHECKPOINT_FINISH_FRAMES)
        return PLAN_FINISH;
    if (store->wal_frames < store->checkpoint_request_frames)
        return PLAN_NONE; /* a round for a few frames more would cost its syncs for little */
    store_checkpointer_request(store, store->wal_generation);
    store->checkpoint_requests++;
    store->checkpoint_request_frames = store->wal_frames + STORE_CHECKPOINT_FINISH_FRAMES;
    store->checkpoint_marks_generation = store->wal_generation;
    return PLAN_NONE;
}

/* PASSIVE: never waits for a reader. The checkpoint syncs the WAL and the
 * file; an I/O error there poisons the handle like a failed sync. Busy
 * (another checkpoint runs) or held back by a reader: tried again later. */
static void checkpoint_in_place(store_t *store, enum checkpoint_plan plan)
{
    int log = 0, copied = 0;
    int rc = sqlite3_wal_checkpoint_v2(store->db, "main", SQLITE_CHECKPOINT_PASSIVE, &log, &copied);
    if (store_checkpoint_failure_is_final(rc)) {
        /* The commit before it is made and synced: it stands. The handle
         * refuses everything after, and the loop stops at the end of the
         * turn (store_sync_failed). */
        store_io_failed(store, rc, "checkpointing the WAL");
        return;
    }
    if (rc != SQLITE_OK) { /* SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM: a threshold later */
        store->checkpoints_busy++;
        store->checkpoint_retry_frames = store->wal_frames + checkpoint_threshold(store);
        store->checkpoint_marks_generation = store->wal_generation;
        return;
    }
    if (plan == PLAN_FINISH)
        store->checkpoints_finished++;
    else
        store->checkpoints_forced++;
    if (copied < log) { /* a reader holds the rest: not again before a threshold more */
        store->checkpoint_retry_frames = store->wal_frames + checkpoint_threshold(store);
        store->checkpoint_marks_generation = store->wal_generation;
    }
}

int store_checkpoint_failure_is_final(int rc)
{
    int primary = rc & 0xff;
    return primary == SQLITE_IOERR || primary == SQLITE_FULL || primary == SQLITE_CORRUPT ||
           primary == SQLITE_NOTADB;
}

/* The transaction is dropped without a word to the caller's error: what
 * refused it (a failed round) is in errmsg already. */
static void commit_abandon(store_t *store)
{
    store->item_serial = 0;
    txn_counters_drop(store);
    store->txn_open = 0;
    if (!sqlite3_get_autocommit(store->db))
        (void)sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
}

void store_wal_hook_install(store_t *store)
{
    (void)sqlite3_wal_hook(store->db, wal_hook, store);
}

int store_sync_failed(const store_t *store)
{
    return store != NULL && store->sync_failed;
}

/* A round of the checkpoint thread that failed refuses the commit: nothing
 * of the transaction is kept, and the handle is poisoned from then on. */
static int commit_allowed(store_t *store)
{
    if (store_checkpointer_check(store) == 0)
        return 0;
    commit_abandon(store);
    return -1;
}

int store_commit(store_t *store)
{
    if (store_enter(store, "commit") != 0 || commit_allowed(store) != 0)
        return -1;
    if (commit_now(store) != 0 || store_wal_sync(store) != 0)
        return -1;
    if (store->test_after_commit != NULL)
        store->test_after_commit(store, store->test_after_commit_arg);
    enum checkpoint_plan plan = checkpoint_plan(store);
    if (plan != PLAN_NONE)
        checkpoint_in_place(store, plan);
    return 0;
}

void store_test_after_commit(store_t *store, void (*fn)(store_t *store, void *arg), void *arg)
{
    store->test_after_commit = fn;
    store->test_after_commit_arg = arg;
}

/* A WAL due for a checkpoint in place is synced and checkpointed here too,
 * so that a long run of unsynced commits (a drain of acks) cannot grow it. */
int store_commit_unsynced(store_t *store)
{
    if (store_enter(store, "commit") != 0 || commit_allowed(store) != 0)
        return -1;
    if (commit_now(store) != 0)
        return -1;
    enum checkpoint_plan plan = checkpoint_plan(store);
    if (plan == PLAN_NONE)
        return 0; /* the thread's rounds sync the WAL themselves */
    if (store_wal_sync(store) != 0)
        return -1;
    checkpoint_in_place(store, plan);
    return 0;
}

int store_rollback(store_t *store)
{
    if (store_enter(store, "rollback") != 0)
        return -1;
    store->item_serial = 0;   /* what the memo knew may be rolled back */
    txn_counters_drop(store); /* and what the transaction counted */
    store->txn_open = 0;
    if (sqlite3_get_autocommit(store->db))
        return 0;
    return store_stmt_run(store, store->stmt[STMT_ROLLBACK], "rollback");
}

int store_transaction_lost(const store_t *store)
{
    return store != NULL && store->db != NULL && store->txn_open &&
           sqlite3_get_autocommit(store->db);
}

int store_in_transaction(const store_t *store)
{
    if (store == NULL || store->db == NULL)
        return 0;
    return !sqlite3_get_autocommit(store->db);
}

/* ------------------------------------------------------------------ publishes and items */

/* Compare the found publish's content with content_hash and copy its reply
 * out of the current row. */
static int publish_found(store_t *store, sqlite3_stmt *stmt, const uint8_t content_hash[32],
                         int *same_content, uint8_t **accepted, size_t *accepted_len)
{
    size_t hash_len = 0, reply_len = 0;
    const uint8_t *stored_tag = store_column_bytes(stmt, 0, &hash_len);
    const uint8_t *reply = store_column_bytes(stmt, 1, &reply_len);
    uint8_t *copy = NULL, tag[STORE_HASH_BYTES];
    if (stored_tag == NULL || hash_len != STORE_HASH_BYTES) {
        store_refuse(store, "publish_find", "stored content hash is damaged");
        return -1;
    }
    if (content_hash != NULL && store_content_tag(store, content_hash, tag) != 0)
        return -1;
    if (reply == NULL && sqlite3_column_type(stmt, 1) != SQLITE_NULL) {
        store_refuse(store, "publish_find", "out of memory reading the reply");
        return -1;
    }
    if (reply != NULL && accepted != NULL &&
        (copy = malloc(reply_len > 0 ? reply_len : 1)) == NULL) {
        store_refuse(store, "publish_find", "out of memory");
        return -1;
    }
    if (content_hash != NULL && same_content != NULL)
        *same_content = sodium_memcmp(tag, stored_tag, STORE_HASH_BYTES) == 0;
    if (copy != NULL && reply_len > 0)
        memcpy(copy, reply, reply_len);
    if (accepted != NULL)
        *accepted = copy;
    if (accepted_len != NULL)
        *accepted_len = reply != NULL ? reply_len : 0;
    return 1;
}

/* Cost: one lookup in the UNIQUE (sender, message_id) index, O(log n). */
int store_publish_find(store_t *store, const char *sender, const uint8_t message_id[16],
                       const uint8_t content_hash[32], int *same_content, uint8_t **accepted,
                       size_t *accepted_len)
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
    if (store_bind_text(store, stmt, 1, sender) != 0 ||
        store_bind_bytes(store, stmt, 2, message_id, STORE_MESSAGE_ID_BYTES) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    int found = -1;
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE)
        found = 0;
    else if (rc == SQLITE_ROW)
        found = publish_found(store, stmt, content_hash, same_content, accepted, accepted_len);
    else
        store_fail(store, "publish_find");
    store_stmt_finish(stmt);
    return found;
}

/* Cost: one table insert plus the (sender, message_id) and expires_at index
 * inserts, O(log n). */
int64_t store_publish_add_retained(store_t *store, const char *sender, const uint8_t message_id[16],
                                   const uint8_t content_hash[32], const uint8_t signature[64],
                                   const uint8_t root[32], int64_t accepted_at,
                                   int64_t retain_until)
{
    if (store_enter(store, "publish_add") != 0)
        return -1;
    if (sender == NULL || sender[0] == '\0' || message_id == NULL || content_hash == NULL ||
        signature == NULL || root == NULL) {
        store_refuse(store, "publish_add", "a required field is missing");
        return -1;
    }
    sqlite3_stmt *stmt = store->stmt[STMT_PUBLISH_ADD];
    uint8_t tag[STORE_HASH_BYTES], evidence[STORE_HASH_BYTES + STORE_SIGNATURE_BYTES];
    store_seal_ad_t ad;
    if (store_seal_ad_evidence(&ad, message_id, sender) != 0) {
        store_refuse(store, "publish_add", "sender too long");
        return -1;
    }
    memcpy(evidence, root, STORE_HASH_BYTES);
    memcpy(evidence + STORE_HASH_BYTES, signature, STORE_SIGNATURE_BYTES);
    if (store_content_tag(store, content_hash, tag) != 0 ||
        store_bind_text(store, stmt, 1, sender) != 0 ||
        store_bind_bytes(store, stmt, 2, message_id, STORE_MESSAGE_ID_BYTES) != 0 ||
        store_bind_bytes(store, stmt, 3, tag, STORE_HASH_BYTES) != 0 ||
        store_seal_bind(store, stmt, 4, &ad, evidence, sizeof evidence) != 0 ||
        store_bind_int64(store, stmt, 5, accepted_at) != 0 ||
        store_bind_int64(store, stmt, 6, retain_until) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    store->publish_serial = 0; /* whatever this one does, the last is no longer the one */
    if (store_stmt_run(store, stmt, "publish_add") != 0)
        return -1;
    int64_t id = (int64_t)sqlite3_last_insert_rowid(store->db);
    /* What was written, for its items (store_item_add_retained); only
     * inside a transaction, where nothing else can change the row. */
    if (!sqlite3_get_autocommit(store->db) && strlen(sender) <= SCHAKEL_MAX_PRINCIPAL_LEN) {
        store->publish_serial = store->txn_serial;
        store->added_publish_id = id;
        store->added_accepted_at = accepted_at;
        store->added_expires_at = retain_until > accepted_at ? retain_until : accepted_at;
        strcpy(store->added_sender, sender);
        memcpy(store->added_message_id, message_id, STORE_MESSAGE_ID_BYTES);
    }
    return id;
}

int64_t store_publish_add(store_t *store, const char *sender, const uint8_t message_id[16],
                          const uint8_t content_hash[32], const uint8_t signature[64],
                          const uint8_t root[32], int64_t accepted_at)
{
    return store_publish_add_retained(store, sender, message_id, content_hash, signature, root,
                                      accepted_at, INT64_MIN);
}

/* Cost: one rowid lookup and row rewrite, O(log n). */
int store_publish_set_reply(store_t *store, int64_t publish_id, const uint8_t *accepted, size_t len)
{
    if (store_enter(store, "publish_set_reply") != 0)
        return -1;
    if (accepted == NULL && len > 0) {
        store_refuse(store, "publish_set_reply", "reply bytes missing");
        return -1;
    }
    sqlite3_stmt *stmt = store->stmt[STMT_PUBLISH_SET_REPLY];
    if (store_bind_int64(store, stmt, 1, publish_id) != 0 ||
        store_bind_bytes(store, stmt, 2, accepted, len) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    if (store_stmt_run(store, stmt, "publish_set_reply") != 0)
        return -1;
    if (sqlite3_changes(store->db) != 1) {
        store_refuse(store, "publish_set_reply", "no such publish");
        return -1;
    }
    return 0;
}

int64_t store_seq_peek(store_t *store, const int64_t *counter, const char *what)
{
    if (*counter <= 0 || *counter == INT64_MAX) {
        store_refuse(store, what, "sequence numbers exhausted");
        return -1;
    }
    return *counter;
}

/* The publish store_publish_add added in this transaction, as written. */
static int publish_added_here(const store_t *store, int64_t publish_id)
{
    return store->publish_serial != 0 && store->publish_serial == store->txn_serial &&
           store->added_publish_id == publish_id && !sqlite3_get_autocommit(store->db);
}

/* The sender of the publish an item was just added to, for the partners'
 * sums: known when this transaction added it, else read (one rowid
 * lookup; no caller in the broker adds an item to an older publish). */
static int item_sender(store_t *store, int known, int64_t publish_id,
                       char sender[SCHAKEL_MAX_PRINCIPAL_LEN + 1])
{
    if (known) {
        strcpy(sender, store->added_sender);
        return 0;
    }
    sqlite3_stmt *stmt = store->stmt[STMT_PUBLISH_SENDER];
    if (store_bind_int64(store, stmt, 1, publish_id) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    int rc = sqlite3_step(stmt);
    const char *text = rc == SQLITE_ROW ? store_column_text(stmt, 0) : NULL;
    if (text == NULL || strlen(text) > SCHAKEL_MAX_PRINCIPAL_LEN) {
        if (rc == SQLITE_ROW)
            store_refuse(store, "item_add", "the publish's sender is damaged");
        else
            store_fail(store, "item_add: the publish's sender");
        store_stmt_finish(stmt);
        return -1;
    }
    strcpy(sender, text);
    store_stmt_finish(stmt);
    return 0;
}

size_t store_sealed_len(size_t len)
{
    return len + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES +
           crypto_aead_xchacha20poly1305_ietf_ABYTES;
}

/* Cost: one table append (seq is the rowid) and the (publish_id,
 * item_index) and expires_at index inserts, each O(log n), with the
 * publish's rowid lookup (its foreign key, or the SELECT of its
 * accepted_at when it was not added in this transaction); sealing is
 * linear in len. */
int64_t store_item_add_retained(store_t *store, int64_t publish_id, uint32_t item_index,
                                const uint8_t *item, size_t len, int64_t retain_until)
{
    if (store_enter(store, "item_add") != 0)
        return -1;
    if (item == NULL && len > 0) {
        store_refuse(store, "item_add", "item bytes missing");
        return -1;
    }
    int64_t seq = store_seq_peek(store, &store->next_item_seq, "item_add");
    if (seq < 0)
        return -1;
    int known = publish_added_here(store, publish_id);
    char sender[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    int64_t expires_at = retain_until;
    if (known && expires_at < store->added_accepted_at)
        expires_at = store->added_accepted_at;
    store_seal_ad_t ad;
    store_seal_ad_item(&ad, seq, publish_id, item_index);
    sqlite3_stmt *stmt = store->stmt[known ? STMT_ITEM_ADD_KNOWN : STMT_ITEM_ADD];
    if (store_bind_int64(store, stmt, 1, seq) != 0 ||
        store_bind_int64(store, stmt, 2, publish_id) != 0 ||
        store_bind_int64(store, stmt, 3, (int64_t)item_index) != 0 ||
        store_seal_bind(store, stmt, 4, &ad, item, len) != 0 ||
        store_bind_int64(store, stmt, 5, expires_at) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    if (store_stmt_run(store, stmt, "item_add") != 0)
        return -1;
    if (sqlite3_changes(store->db) != 1) {
        store_refuse(store, "item_add", "no such publish");
        return -1;
    }
    store->next_item_seq = seq + 1;
    if (item_sender(store, known, publish_id, sender) != 0 ||
        store_bytes_change(store, sender, (int64_t)store_sealed_len(len)) != 0)
        return -1;
    if (known) /* its deliveries need not read back what was just written */
        store_delivery_item_known(store, seq, item_index, expires_at);
    return seq;
}

int64_t store_item_add(store_t *store, int64_t publish_id, uint32_t item_index, const uint8_t *item,
                       size_t len)
{
    return store_item_add_retained(store, publish_id, item_index, item, len, INT64_MIN);
}

int64_t store_test_limit_pages(store_t *store, int64_t max_pages)
{
    char sql[64];
    int64_t in_force = -1;
    if (store_enter(store, "limit pages") != 0)
        return -1;
    if (max_pages > 0) {
        /* An integer formatted here, not input text. */
        snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld", (long long)max_pages);
        if (store_pragma_set(store, sql) != 0)
            return -1;
    }
    if (store_query_int64(store, "PRAGMA max_page_count", &in_force) != 0)
        return -1;
    return in_force;
}
