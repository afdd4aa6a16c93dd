/*
 * store_list.c — a page of one recipient's mailbox for operators
 * (store_mailbox_list, the admin endpoint's `pending`): the clear columns
 * of its waiting rows and of its rows set aside, merged in seq order.
 * Opens no body and writes nothing. Trusts nothing read back from the
 * file: a row set aside keeps whatever its columns held, and a column
 * that does not hold what the broker writes there reads as NULL or 0.
 * Errors: -1 with store_errmsg set.
 */
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "store.h"
#include "store_internal.h"

/* The columns of STORE_LIST_WAITING_SQL and STORE_LIST_SET_ASIDE_SQL
 * (store_internal.h, with their costs). */
enum list_col {
    LCOL_SEQ,
    LCOL_ITEM_SEQ,
    LCOL_SENDER,
    LCOL_MESSAGE_ID,
    LCOL_ITEM_INDEX,
    LCOL_RULE_ID,
    LCOL_RULE_HASH,
    LCOL_ACCEPTED_AT,
    LCOL_EXPIRES_AT,
    LCOL_CASE_ID,
    LCOL_IS_CASE_EVENT,
    LCOL_SET_ASIDE_AT,
    LCOL_REASON,
};
static const char *const list_sql[2] = {STORE_LIST_WAITING_SQL, STORE_LIST_SET_ASIDE_SQL};

/* An integer column, or 0 when the row does not hold one there (a row set
 * aside keeps whatever its columns held). */
static int64_t list_int(sqlite3_stmt *stmt, int col)
{
    return sqlite3_column_type(stmt, col) == SQLITE_INTEGER ? sqlite3_column_int64(stmt, col) : 0;
}

/* A text column, or NULL when the row holds no text there. */
static const char *list_text(sqlite3_stmt *stmt, int col)
{
    return sqlite3_column_type(stmt, col) == SQLITE_TEXT ? store_column_text(stmt, col) : NULL;
}

/* The event seq its delivery.queued entry names, or 0. */
static int list_event_seq(store_t *store, sqlite3_stmt *event, uint64_t seq, uint64_t *out)
{
    *out = 0;
    if (store_bind_int64(store, event, 1, (int64_t)seq) != 0)
        return -1;
    int rc = sqlite3_step(event);
    if (rc == SQLITE_ROW) {
        const char *detail = list_text(event, 0);
        const char *at = detail != NULL ? strstr(detail, " event_seq=") : NULL;
        unsigned long long value = 0;
        int used = 0;
        if (at != NULL && sscanf(at, " event_seq=%20llu%n", &value, &used) == 1 &&
            at[used] == '\0' && value <= INT64_MAX)
            *out = value;
    } else if (rc != SQLITE_DONE) {
        store_fail(store, "mailbox list: event seq");
        sqlite3_reset(event);
        return -1;
    }
    sqlite3_reset(event);
    return 0;
}

/* Fill *d from the current row of stmt (set_aside: of deliveries_set_aside). */
static int list_row(store_t *store, sqlite3_stmt *stmt, sqlite3_stmt *event, int set_aside,
                    store_listed_t *d)
{
    size_t id_len = 0;
    int64_t item_index = list_int(stmt, LCOL_ITEM_INDEX);
    memset(d, 0, sizeof *d);
    d->seq = (uint64_t)sqlite3_column_int64(stmt, LCOL_SEQ);
    d->item_seq = (uint64_t)list_int(stmt, LCOL_ITEM_SEQ);
    d->sender = list_text(stmt, LCOL_SENDER);
    d->message_id = sqlite3_column_type(stmt, LCOL_MESSAGE_ID) == SQLITE_BLOB
                        ? store_column_bytes(stmt, LCOL_MESSAGE_ID, &id_len)
                        : NULL;
    if (id_len != STORE_MESSAGE_ID_BYTES)
        d->message_id = NULL;
    d->item_index = item_index >= 0 && item_index <= UINT32_MAX ? (uint32_t)item_index : 0;
    d->rule_id = list_text(stmt, LCOL_RULE_ID);
    d->rule_hash = list_text(stmt, LCOL_RULE_HASH);
    d->queued_at = list_int(stmt, LCOL_ACCEPTED_AT);
    d->expires_at = list_int(stmt, LCOL_EXPIRES_AT);
    d->case_id = list_text(stmt, LCOL_CASE_ID);
    d->is_case_event = list_int(stmt, LCOL_IS_CASE_EVENT) == 1 && d->case_id != NULL;
    d->set_aside = set_aside;
    if (set_aside) {
        d->set_aside_at = list_int(stmt, LCOL_SET_ASIDE_AT);
        d->reason = list_text(stmt, LCOL_REASON);
    }
    if (d->is_case_event && list_event_seq(store, event, d->seq, &d->event_seq) != 0)
        return -1;
    return 0;
}

/* Step stmt to its next row: 1 (a row), 0 (done), -1 (failed). */
static int list_step(store_t *store, sqlite3_stmt *stmt)
{
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    store_fail(store, "mailbox list");
    return -1;
}

/* The two statements stepped side by side, the lower seq first (a seq is
 * in one table or the other, never both), up to limit rows. */
static int list_merge(store_t *store, sqlite3_stmt *const stmts[2], sqlite3_stmt *event,
                      size_t limit, store_listed_fn fn, void *arg)
{
    int has[2];
    size_t visited = 0;
    for (int t = 0; t < 2; t++)
        if ((has[t] = list_step(store, stmts[t])) < 0)
            return -1;
    while ((has[0] || has[1]) && visited < limit) {
        int t = !has[0] || (has[1] && sqlite3_column_int64(stmts[1], LCOL_SEQ) <
                                          sqlite3_column_int64(stmts[0], LCOL_SEQ));
        store_listed_t d;
        if (list_row(store, stmts[t], event, t, &d) != 0)
            return -1;
        visited++;
        if (fn(&d, arg) != 0)
            break;
        if ((has[t] = list_step(store, stmts[t])) < 0)
            return -1;
    }
    return (int)visited;
}

int store_mailbox_list(store_t *store, const char *recipient, uint64_t after_seq, size_t limit,
                       store_listed_fn fn, void *arg)
{
    if (store_enter(store, "mailbox list") != 0)
        return -1;
    if (recipient == NULL || fn == NULL || limit > INT_MAX) {
        store_refuse(store, "mailbox list",
                     "recipient, callback and a limit up to INT_MAX are "
                     "required");
        return -1;
    }
    if (limit == 0 || after_seq >= INT64_MAX)
        return 0; /* nothing can be visited: no seq exceeds INT64_MAX */
    sqlite3_stmt *stmts[2] = {NULL, NULL}, *event = NULL;
    int result = -1;
    for (int t = 0; t < 2; t++) {
        int rc = sqlite3_prepare_v2(store->db, list_sql[t], -1, &stmts[t], NULL);
        if (store_check_rc(store, rc, "mailbox list") != 0 ||
            store_bind_text(store, stmts[t], 1, recipient) != 0 ||
            store_bind_int64(store, stmts[t], 2, (int64_t)after_seq) != 0 ||
            store_bind_int64(store, stmts[t], 3, (int64_t)limit) != 0)
            goto done;
    }
    if (store_check_rc(store, sqlite3_prepare_v2(store->db, STORE_LIST_EVENT_SQL, -1, &event, NULL),
                       "mailbox list") != 0)
        goto done;
    store->in_callback = 1;
    result = list_merge(store, stmts, event, limit, fn, arg);
    store->in_callback = 0;
done:
    sqlite3_finalize(event);
    sqlite3_finalize(stmts[0]);
    sqlite3_finalize(stmts[1]);
    return result;
}
