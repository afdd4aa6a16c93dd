/*
 * store_expire.c — retention: store_expire removes the deliveries whose
 * rule's retention has ended, waiting or set aside (each leaving a
 * tombstone without content),
 * then the items and publishes nothing references any more, then the
 * events and rows of cases whose retention after the close has ended, and
 * store_checkpoint clears their old page images from the WAL. Trusts the
 * schema's expires_at triggers and indexes (store_schema.c). Errors are -1
 * with store_errmsg set, a row that reads back damaged included.
 */
#include <limits.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "store_internal.h"
#include "store_mailbox.h"

/* ------------------------------------------------------------------ expiry */






/* Remove one pending delivery before its retention ends (the policy no
 * longer allows it): like an expiry, with a tombstone and the callback. */
int store_delivery_revoke(store_t *store, const char *recipient, uint64_t seq, int64_t now,
                          store_expired_fn fn, void *arg)
{
    if (store_enter(store, "revoke") != 0)
        return -1;
    if (sqlite3_get_autocommit(store->db)) {
        store_refuse(store, "revoke", "no transaction is open (call store_begin first)");
        return -1;
    }
    return store_mailbox_row_remove(store, recipient, seq, now, fn, arg);
}

int store_expire_bounded(store_t *store, sqlite3_stmt *stmt, int64_t now, size_t limit,
                         const char *what)
{
    if (store_bind_int64(store, stmt, 1, now) != 0 ||
        store_bind_int64(store, stmt, 2, (int64_t)limit) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    if (store_stmt_run(store, stmt, what) != 0)
        return -1;
    return sqlite3_changes(store->db);
}

/* Cost: up to limit descents of the deliveries' expires_at index with
 * O(log n) writes each, then four DELETEs that look at no more than limit
 * candidates each (a case's members and item links cascade through their
 * case_id indexes, O(members + commands) per case): O(limit * log n) in
 * all, whatever is due. Order matters: deliveries first, so that the items
 * and cases they named can go in the same step. */
int store_expire(store_t *store, int64_t now, size_t limit, store_expired_fn fn, void *arg)
{
    if (store_enter(store, "expire") != 0)
        return -1;
    if (sqlite3_get_autocommit(store->db)) {
        store_refuse(store, "expire", "no transaction is open (call store_begin first)");
        return -1;
    }
    if (limit > INT_MAX / 5)
        limit = INT_MAX / 5; /* the total returned is an int */
    if (limit == 0)
        return 0;
    /* Waiting deliveries first, then those set aside, within one limit:
     * fn is told at most `limit` of them in all. */
    int removed = store_mailbox_row_expire(store, now, limit, fn, arg);
    if (removed < 0)
        return -1;
    /* Rows this step set aside (damaged) are recorded by the caller before
     * any may expire: set-aside expiry waits for the next step then. */
    if ((size_t)removed < limit && store_mailbox_expire_set_aside(store) == 0) {
        int aside =
            store_mailbox_row_set_aside_expire(store, now, limit - (size_t)removed, fn, arg);
        if (aside < 0)
            return -1;
        removed += aside;
    }
    int items = store_mailbox_row_expire_items(store, now, limit);
    if (items < 0)
        return -1;
    int publishes = store_mailbox_row_expire_publishes(store, now, limit);
    if (publishes < 0)
        return -1;
    int events = store_expire_bounded(store, store->stmt[STMT_EXPIRE_CASE_EVENTS], now, limit,
                                      "expire: case events");
    if (events < 0)
        return -1;
    int cases = store_mailbox_row_expire_cases(store, now, limit);
    if (cases < 0)
        return -1;
    return removed + items + publishes + events + cases;
}

/* ------------------------------------------------------------------ checkpoint */

/* Cost: copies every WAL frame not yet in the database file, fsyncs, and
 * truncates the WAL: proportional to what was written since the last one.
 * It does not wait for readers (the busy timeout is lifted meanwhile) nor
 * for a round of the checkpoint thread: the event loop must not stall on
 * an operator's backup or a slow disk; the broker tries again later. */
int store_checkpoint(store_t *store)
{
    char busy[32];
    if (store_enter(store, "checkpoint") != 0)
        return -1;
    if (!sqlite3_get_autocommit(store->db)) {
        store_refuse(store, "checkpoint", "a transaction is open");
        return -1;
    }
    if (store_checkpointer_quiesce(store) != 0) {
        store_refuse(store, "checkpoint",
                     "the checkpoint thread is copying the WAL; try again later");
        store->last_rc = SQLITE_BUSY;
        return -1;
    }
    (void)sqlite3_busy_timeout(store->db, 0); /* cannot fail on an open connection */
    /* The first column of the answer is 1 when a reader kept the
     * checkpoint from completing. */
    int rc = store_pragma_text(store, "PRAGMA wal_checkpoint(TRUNCATE)", busy, sizeof busy);
    (void)sqlite3_busy_timeout(store->db, STORE_BUSY_TIMEOUT_MS);
    if (rc != 0) {
        if (store_checkpoint_failure_is_final(store->last_rc))
            store_io_failed(store, store->last_rc, "checkpointing the WAL");
        return -1;
    }
    if (strcmp(busy, "0") != 0) {
        store_refuse(store, "checkpoint", "another connection is reading; try again later");
        store->last_rc = SQLITE_BUSY;
        return -1;
    }
    store->wal_frames = 0; /* truncated: the thread's last round is of an old WAL */
    store->wal_generation++;
    return 0;
}

void store_expired_copy_set(store_expired_copy_t *copy, const store_expired_t *e)
{
    snprintf(copy->recipient, sizeof copy->recipient, "%s", e->recipient);
    snprintf(copy->rule_id, sizeof copy->rule_id, "%s", e->rule_id);
    snprintf(copy->rule_hash, sizeof copy->rule_hash, "%s", e->rule_hash);
    copy->view = *e;
    copy->view.recipient = copy->recipient;
    copy->view.rule_id = copy->rule_id;
    copy->view.rule_hash = copy->rule_hash;
}
