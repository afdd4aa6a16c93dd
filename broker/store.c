/*
 * store.c — the broker's durable state in one SQLite file (WAL; a commit syncs
 * the WAL itself, unless its caller says the turn can do without).
 *
 * Owns the prepared statements (all their SQL, expiry's and deliveries'
 * included) and their helpers, errors, one-off statements, publishes and
 * items; store_open.c opens and closes the file; store_commit.c runs the
 * transactions; store_delivery.c the mailboxes (deliveries, scans, counts,
 * acks). store_schema.c creates, migrates and
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
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    [STMT_DELIVERY_CASE_KNOWN] = "SELECT 1 FROM cases WHERE case_id = ?1",
    /* What a trigger did before schema 5: a case's deliveries tie their
     * items to it (case_items_extend_retention then raises them). */
    [STMT_DELIVERY_CASE_ITEM] =
        "INSERT OR IGNORE INTO case_items (case_id, item_seq) VALUES (?1, ?2)",
    /* A seq that has a tombstone already keeps it (store_expire.c). */
    [STMT_TOMBSTONE_ADD] = "INSERT INTO tombstones"
                           " (seq, recipient, item_seq, rule_id, rule_hash, expires_at, expired_at)"
                           " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (seq) DO NOTHING",
    /* A case's events go with it: no tombstone (the deliveries made of
     * them have their own). */
    [STMT_EXPIRE_CASE_EVENTS] =
        "DELETE FROM case_events WHERE id IN"
        " (SELECT id FROM case_events WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
    [STMT_PUBLISH_SENDER] = "SELECT sender FROM publishes WHERE id = ?1",
    [STMT_STORED_BYTES_ADD] = "INSERT INTO stored_bytes (partner, bytes) VALUES (?1, ?2)"
                              " ON CONFLICT (partner) DO UPDATE SET bytes = bytes + excluded.bytes",
    [STMT_DELIVERY_HIGH_SET] = "INSERT INTO meta (name, value) VALUES ('delivery_seq_high', ?1)"
                               " ON CONFLICT (name) DO UPDATE SET value = excluded.value",

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

int store_statements_prepare(store_t *store)
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
