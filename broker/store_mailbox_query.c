/*
 * store_mailbox_query.c — what the store answers about the mailbox rows
 * without changing them (store_mailbox.h): the rule of one pending
 * delivery, the `pending` listing of one recipient (waiting rows and rows
 * set aside, expanded into deliveries), the walk of purge.c (recipients,
 * their oldest deliveries), the backlog and the highest pending seq. This
 * transaction's acks and removals (the marks) count as written. Trusts
 * nothing read back from the file: a row the answer depends on that reads
 * as no broker writes it is refused ("damaged row: ..."), but for the
 * listing, which shows what it can of it. Errors: -1 with store_errmsg.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schakel_limits.h"
#include "store_mailbox_internal.h"

/* Whether delivery i of a row is done: this transaction's marks of the
 * row (marked, may be NULL) replace its done column. */
static int query_done(const uint8_t *marked, const uint8_t *done, size_t i)
{
    return mailbox_done_bit(marked != NULL ? marked : done, i);
}

/* The done column of the current row of stmt, n bits: 0 with *done (NULL
 * for none); -1 when it is neither NULL nor a blob of n bits. */
static int query_done_column(sqlite3_stmt *stmt, int col, int64_t n, const uint8_t **done)
{
    size_t len = 0;
    *done = NULL;
    if (sqlite3_column_type(stmt, col) == SQLITE_NULL)
        return 0;
    *done =
        sqlite3_column_type(stmt, col) == SQLITE_BLOB ? store_column_bytes(stmt, col, &len) : NULL;
    return *done != NULL && len == ((size_t)n + 7) / 8 ? 0 : -1;
}

/* The bytes of a text or blob column (rules, items, message_id: read as
 * the scan reads them, whichever of the two they are stored as), or NULL. */
static const uint8_t *query_bytes(sqlite3_stmt *stmt, int col, size_t *len)
{
    int type = sqlite3_column_type(stmt, col);
    *len = 0;
    return type == SQLITE_TEXT || type == SQLITE_BLOB ? store_column_bytes(stmt, col, len) : NULL;
}

/* ------------------------------------------------------------------ a delivery's rule */

/* Columns of MB_QUERY_RULE. */
enum rule_col { RC_FIRST_SEQ, RC_N, RC_DONE, RC_RULES, RC_ITEMS, RC_CASE_ID };

/* Delivery i's rule line and case of the current row of MB_QUERY_RULE
 * into *out: 1; 0 when they do not fit *out (no honest row); -1 refused
 * (damage, or out of memory). */
static int rule_of(store_t *store, sqlite3_stmt *stmt, int64_t n, size_t i,
                   store_delivery_rule_t *out)
{
    size_t items_len = 0, rules_len = 0;
    const uint8_t *items = query_bytes(stmt, RC_ITEMS, &items_len);
    const uint8_t *text = query_bytes(stmt, RC_RULES, &rules_len);
    /* the case id as the scan reads it (and binds it in the seal's data) */
    int of_case = sqlite3_column_type(stmt, RC_CASE_ID) != SQLITE_NULL;
    const char *case_id = of_case ? store_column_text(stmt, RC_CASE_ID) : "";
    if (case_id == NULL) {
        store_refuse(store, "mailbox_row_rule", "out of memory");
        return -1;
    }
    if (items == NULL || items_len != 4 * (size_t)n || text == NULL || (of_case && n != 1)) {
        store_refuse(store, "mailbox_row_rule", "damaged row: items, rule lines or case id");
        return -1;
    }
    mailbox_rules_t rules;
    int parsed = store_mailbox_rules_parse((const char *)text, rules_len, (size_t)n, &rules);
    if (parsed == 0 && mailbox_rule_slot_at(items, i) >= rules.n_slots)
        parsed = -1;
    if (parsed != 0) {
        store_refuse(store, "mailbox_row_rule",
                     parsed == -2 ? "out of memory" : "damaged row: items or rule lines");
        store_mailbox_rules_free(&rules);
        return -1;
    }
    const mailbox_rule_slot_t *slot = &rules.slots[mailbox_rule_slot_at(items, i)];
    int found = strlen(slot->rule_id) < sizeof out->rule_id &&
                strlen(slot->rule_hash) < sizeof out->rule_hash &&
                (!of_case || (case_id[0] != '\0' && strlen(case_id) < sizeof out->case_id));
    if (found) {
        memcpy(out->rule_id, slot->rule_id, strlen(slot->rule_id) + 1);
        memcpy(out->rule_hash, slot->rule_hash, strlen(slot->rule_hash) + 1);
        memcpy(out->case_id, case_id, strlen(case_id) + 1);
    }
    store_mailbox_rules_free(&rules);
    return found;
}

int store_mailbox_row_rule(store_t *store, const char *recipient, uint64_t seq,
                           store_delivery_rule_t *out)
{
    if (store_enter(store, "mailbox_row_rule") != 0)
        return -1;
    if (recipient == NULL || out == NULL) {
        store_refuse(store, "mailbox_row_rule", "recipient and out are required");
        return -1;
    }
    if (seq == 0 || seq > INT64_MAX)
        return 0; /* never a seq */
    sqlite3_stmt *stmt = store_mailbox_stmt(store, MB_QUERY_RULE);
    if (stmt == NULL)
        return -1;
    if (store_bind_text(store, stmt, 1, recipient) != 0 ||
        store_bind_int64(store, stmt, 2, (int64_t)seq) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    int rc = sqlite3_step(stmt), found = 0;
    if (rc == SQLITE_ROW) {
        int64_t first = sqlite3_column_int64(stmt, RC_FIRST_SEQ);
        int64_t n = sqlite3_column_int64(stmt, RC_N);
        const uint8_t *done = NULL, *marked = store_mailbox_marked(store, first);
        if (!mailbox_span_ok(first, n) || sqlite3_column_type(stmt, RC_N) != SQLITE_INTEGER) {
            store_refuse(store, "mailbox_row_rule", "damaged row: first_seq or n");
            found = -1;
        } else if ((int64_t)seq - first >= n) {
            found = 0; /* in no row of recipient's */
        } else if (marked == NULL && query_done_column(stmt, RC_DONE, n, &done) != 0) {
            store_refuse(store, "mailbox_row_rule", "damaged row: done");
            found = -1;
        } else if (query_done(marked, done, (size_t)((int64_t)seq - first))) {
            found = 0; /* acked or removed, in this transaction too */
        } else {
            found = rule_of(store, stmt, n, (size_t)((int64_t)seq - first), out);
        }
    } else if (rc != SQLITE_DONE) {
        store_fail(store, "mailbox_row_rule");
        found = -1;
    }
    store_stmt_finish(stmt);
    return found;
}

/* ------------------------------------------------------------------ the listing */

/* Columns of MB_QUERY_LIST_WAITING and MB_QUERY_LIST_SET_ASIDE. */
enum list_col {
    LC_FIRST_SEQ,
    LC_N,
    LC_DONE,
    LC_FIRST_ITEM_SEQ,
    LC_SENDER,
    LC_MESSAGE_ID,
    LC_ACCEPTED_AT,
    LC_RULES,
    LC_ITEMS,
    LC_EXPIRES_AT,
    LC_CASE_ID,
    LC_IS_CASE_EVENT,
    LC_SET_ASIDE_AT,
    LC_REASON
};

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

/* A text or blob column of exactly len bytes, or NULL. */
static const uint8_t *list_blob(sqlite3_stmt *stmt, int col, size_t len)
{
    size_t got = 0;
    const uint8_t *bytes = query_bytes(stmt, col, &got);
    return bytes != NULL && got == len ? bytes : NULL;
}

/* One row of the listing as far as it reads: what every delivery of it
 * shares in base, and what tells them apart where the row holds it as the
 * broker writes it. */
typedef struct list_row {
    store_listed_t base;
    int64_t first_seq;
    uint32_t n;           /* 1 when n reads damaged: the row's first seq alone */
    const uint8_t *done;  /* n bits (this transaction's marks, or the column), or NULL */
    const uint8_t *items; /* 4 * n bytes, or NULL */
    int64_t first_item_seq;
    mailbox_rules_t rules; /* n_slots 0 when they do not parse */
} list_row_t;

/* Read the current row of stmt (set_aside: of mailbox_set_aside) into *r.
 * 0, or -1 when memory runs out. */
static int list_row_read(store_t *store, sqlite3_stmt *stmt, int set_aside, list_row_t *r)
{
    memset(r, 0, sizeof *r);
    r->first_seq = sqlite3_column_int64(stmt, LC_FIRST_SEQ);
    int64_t n = list_int(stmt, LC_N);
    int whole = mailbox_span_ok(r->first_seq, n);
    r->n = whole ? (uint32_t)n : 1;
    store_listed_t *b = &r->base;
    b->sender = list_text(stmt, LC_SENDER);
    b->message_id = list_blob(stmt, LC_MESSAGE_ID, STORE_MESSAGE_ID_BYTES);
    b->queued_at = list_int(stmt, LC_ACCEPTED_AT);
    /* the row's earliest expiry: a row set aside goes whole at it, and a
     * delivery whose rule line does not read has no expiry of its own */
    b->expires_at = list_int(stmt, LC_EXPIRES_AT);
    b->case_id = list_text(stmt, LC_CASE_ID);
    b->is_case_event = list_int(stmt, LC_IS_CASE_EVENT) == 1 && b->case_id != NULL;
    b->set_aside = set_aside;
    if (set_aside) {
        b->set_aside_at = list_int(stmt, LC_SET_ASIDE_AT);
        b->reason = list_text(stmt, LC_REASON);
    }
    if (!whole)
        return 0; /* nothing else can be told apart */
    const uint8_t *marked = set_aside ? NULL : store_mailbox_marked(store, r->first_seq);
    if (marked != NULL)
        r->done = marked;
    else if (query_done_column(stmt, LC_DONE, n, &r->done) != 0)
        r->done = NULL; /* damaged: every delivery listed, none passed over */
    r->items = list_blob(stmt, LC_ITEMS, 4 * (size_t)n);
    r->first_item_seq = list_int(stmt, LC_FIRST_ITEM_SEQ);
    size_t rules_len = 0;
    const uint8_t *text = query_bytes(stmt, LC_RULES, &rules_len);
    int parsed = text != NULL ? store_mailbox_rules_parse((const char *)text, rules_len, (size_t)n,
                                                          &r->rules)
                              : -1;
    if (parsed == -2) {
        store_refuse(store, "mailbox_row_list", "out of memory");
        return -1;
    }
    return 0;
}

/* Delivery i of r, into *d. */
static void list_delivery(const list_row_t *r, uint32_t i, store_listed_t *d)
{
    *d = r->base;
    d->seq = (uint64_t)(r->first_seq + (int64_t)i);
    if (r->items == NULL)
        return;
    uint32_t index = mailbox_item_index_at(r->items, i);
    d->item_index = index;
    if (mailbox_item_seq_ok(r->first_item_seq)) {
        int64_t item_seq =
            r->first_item_seq + (int64_t)index - (int64_t)mailbox_item_index_at(r->items, 0);
        d->item_seq = item_seq > 0 ? (uint64_t)item_seq : 0;
    }
    uint32_t slot = mailbox_rule_slot_at(r->items, i);
    if (slot < r->rules.n_slots) {
        d->rule_id = r->rules.slots[slot].rule_id;
        d->rule_hash = r->rules.slots[slot].rule_hash;
        if (!r->base.set_aside)
            d->expires_at = r->rules.slots[slot].expires_at;
    }
}

/* The event seq its delivery.queued entry names, or 0 (as the listing
 * reads it). 0 or -1. */
static int list_event_seq(store_t *store, uint64_t seq, uint64_t *out)
{
    *out = 0;
    sqlite3_stmt *event = store_mailbox_stmt(store, MB_QUERY_LIST_EVENT);
    if (event == NULL)
        return -1;
    if (store_bind_int64(store, event, 1, (int64_t)seq) != 0) {
        store_stmt_finish(event);
        return -1;
    }
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
        store_fail(store, "mailbox_row_list: event seq");
    }
    store_stmt_finish(event);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

/* Hand out r's deliveries after after_seq and not done while *visited <
 * limit. 1 when fn asked to stop, 0 to go on, -1. */
static int list_row_deliveries(store_t *store, const list_row_t *r, uint64_t after_seq,
                               size_t limit, store_listed_fn fn, void *arg, size_t *visited)
{
    for (uint32_t i = 0; i < r->n && *visited < limit; i++) {
        if (r->first_seq + (int64_t)i <= (int64_t)after_seq || mailbox_done_bit(r->done, i))
            continue;
        store_listed_t d;
        list_delivery(r, i, &d);
        if (d.is_case_event && list_event_seq(store, d.seq, &d.event_seq) != 0)
            return -1;
        (*visited)++;
        store->in_callback = 1;
        int stop = fn(&d, arg);
        store->in_callback = 0;
        if (stop != 0)
            return 1;
    }
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
    store_fail(store, "mailbox_row_list");
    return -1;
}

/* The two tables' rows stepped side by side, the lower first_seq first (a
 * row is in one table or the other, and rows never share a seq), each
 * expanded, up to limit deliveries. The number visited, or -1. */
static int list_merge(store_t *store, sqlite3_stmt *const stmts[2], uint64_t after_seq,
                      size_t limit, store_listed_fn fn, void *arg)
{
    int has[2];
    size_t visited = 0;
    for (int t = 0; t < 2; t++)
        if ((has[t] = list_step(store, stmts[t])) < 0)
            return -1;
    while ((has[0] || has[1]) && visited < limit) {
        int t = !has[0] || (has[1] && sqlite3_column_int64(stmts[1], LC_FIRST_SEQ) <
                                          sqlite3_column_int64(stmts[0], LC_FIRST_SEQ));
        list_row_t r;
        int rc = list_row_read(store, stmts[t], t, &r);
        if (rc == 0)
            rc = list_row_deliveries(store, &r, after_seq, limit, fn, arg, &visited);
        store_mailbox_rules_free(&r.rules);
        if (rc != 0)
            return rc < 0 ? -1 : (int)visited;
        if ((has[t] = list_step(store, stmts[t])) < 0)
            return -1;
    }
    return (int)visited;
}

/* Cost: per table one descent of its recipient index to the row holding
 * after_seq + 1, then the rows in order (each read once, its rule lines
 * parsed) until limit deliveries are handed out; per case event one
 * lookup of the trail's delivery_seq index. */
int store_mailbox_row_list(store_t *store, const char *recipient, uint64_t after_seq, size_t limit,
                           store_listed_fn fn, void *arg)
{
    if (store_enter(store, "mailbox_row_list") != 0)
        return -1;
    if (recipient == NULL || fn == NULL || limit > INT_MAX) {
        store_refuse(store, "mailbox_row_list",
                     "recipient, callback and a limit up to INT_MAX are required");
        return -1;
    }
    if (limit == 0 || after_seq >= INT64_MAX)
        return 0; /* nothing can be visited: no seq exceeds INT64_MAX */
    sqlite3_stmt *stmts[2] = {store_mailbox_stmt(store, MB_QUERY_LIST_WAITING),
                              store_mailbox_stmt(store, MB_QUERY_LIST_SET_ASIDE)};
    int result = -1;
    if (stmts[0] != NULL && stmts[1] != NULL) {
        result = 0;
        for (int t = 0; t < 2 && result == 0; t++)
            if (store_bind_text(store, stmts[t], 1, recipient) != 0 ||
                store_bind_int64(store, stmts[t], 2, (int64_t)after_seq + 1) != 0)
                result = -1;
        if (result == 0)
            result = list_merge(store, stmts, after_seq, limit, fn, arg);
    }
    for (int t = 0; t < 2; t++)
        if (stmts[t] != NULL)
            store_stmt_finish(stmts[t]);
    return result;
}

/* ------------------------------------------------------------------ walking mailboxes */

/* Whether this transaction's marks have every delivery of the row done. */
static int row_emptied(store_t *store, int64_t first_seq, int64_t n)
{
    const uint8_t *marked = store_mailbox_marked(store, first_seq);
    if (marked == NULL || !mailbox_span_ok(first_seq, n))
        return 0;
    for (int64_t i = 0; i < n; i++)
        if (!mailbox_done_bit(marked, (size_t)i))
            return 0;
    return 1;
}

int store_mailbox_row_next_recipient(store_t *store, const char *after, char *out, size_t outlen)
{
    if (store_enter(store, "mailbox_row_next_recipient") != 0)
        return -1;
    if (after == NULL || out == NULL) {
        store_refuse(store, "mailbox_row_next_recipient", "after and out are required");
        return -1;
    }
    sqlite3_stmt *stmt = store_mailbox_stmt(store, MB_QUERY_NEXT_RECIPIENT);
    if (stmt == NULL)
        return -1;
    if (store_bind_text(store, stmt, 1, after) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    int rc = SQLITE_DONE, found = 0;
    while (found == 0 && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (row_emptied(store, sqlite3_column_int64(stmt, 1), sqlite3_column_int64(stmt, 2)))
            continue; /* its last pending ones acked or removed in this transaction */
        const char *recipient = list_text(stmt, 0);
        if (recipient == NULL || strlen(recipient) >= outlen) {
            store_refuse(store, "mailbox_row_next_recipient",
                         "a recipient id that is not text or too long");
            found = -1;
        } else {
            memcpy(out, recipient, strlen(recipient) + 1);
            found = 1;
        }
    }
    if (found == 0 && rc != SQLITE_DONE) {
        store_fail(store, "mailbox_row_next_recipient");
        found = -1;
    }
    store_stmt_finish(stmt);
    return found;
}

/* Columns of MB_QUERY_OLDEST and MB_QUERY_LAST_SEQ. */
enum seqs_col { SQ_FIRST_SEQ, SQ_N, SQ_DONE };

/* The current row of MB_QUERY_OLDEST or MB_QUERY_LAST_SEQ: its first seq,
 * n and done bits (this transaction's marks first). 0, or -1 refused as
 * what for a row no broker writes so; a done column that does not read
 * counts as none done when lenient is set. */
static int seqs_row(store_t *store, sqlite3_stmt *stmt, const char *what, int lenient,
                    int64_t *first, uint32_t *n, const uint8_t **done)
{
    *first = sqlite3_column_int64(stmt, SQ_FIRST_SEQ);
    int64_t count = sqlite3_column_int64(stmt, SQ_N);
    if (!mailbox_span_ok(*first, count) || sqlite3_column_type(stmt, SQ_N) != SQLITE_INTEGER) {
        store_refuse(store, what, "damaged row: first_seq or n");
        return -1;
    }
    *n = (uint32_t)count;
    if ((*done = store_mailbox_marked(store, *first)) != NULL)
        return 0;
    if (query_done_column(stmt, SQ_DONE, count, done) == 0)
        return 0;
    *done = NULL;
    if (lenient)
        return 0;
    store_refuse(store, what, "damaged row: done");
    return -1;
}

/* Cost: one descent of mailbox_by_recipient, then the recipient's rows in
 * order until limit seqs (a row's not done all of them, or only up to the
 * limit). */
int store_mailbox_row_oldest(store_t *store, const char *recipient, uint64_t *seqs, size_t limit)
{
    if (store_enter(store, "mailbox_row_oldest") != 0)
        return -1;
    if (recipient == NULL || (seqs == NULL && limit > 0)) {
        store_refuse(store, "mailbox_row_oldest", "recipient and seqs are required");
        return -1;
    }
    if (limit > INT_MAX)
        limit = INT_MAX; /* the count returned is an int */
    if (limit == 0)
        return 0;
    sqlite3_stmt *stmt = store_mailbox_stmt(store, MB_QUERY_OLDEST);
    if (stmt == NULL)
        return -1;
    if (store_bind_text(store, stmt, 1, recipient) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    size_t taken = 0;
    int rc = SQLITE_DONE, failed = 0;
    while (!failed && taken < limit && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        int64_t first = 0;
        uint32_t n = 0;
        const uint8_t *done = NULL;
        if (seqs_row(store, stmt, "mailbox_row_oldest", 0, &first, &n, &done) != 0) {
            failed = 1;
            break;
        }
        for (uint32_t i = 0; i < n && taken < limit; i++)
            if (!mailbox_done_bit(done, i))
                seqs[taken++] = (uint64_t)(first + (int64_t)i);
    }
    if (!failed && rc != SQLITE_ROW && rc != SQLITE_DONE) {
        store_fail(store, "mailbox_row_oldest");
        failed = 1;
    }
    store_stmt_finish(stmt);
    return failed ? -1 : (int)taken;
}

/* ------------------------------------------------------------------ totals */

/* Cost: O(rows): SQLite sums the pending column of every row, then this
 * transaction's marks are taken off. Only operators ask. */
int64_t store_mailbox_row_backlog_total(store_t *store)
{
    if (store_enter(store, "mailbox_row_backlog_total") != 0)
        return -1;
    sqlite3_stmt *stmt = store_mailbox_stmt(store, MB_QUERY_BACKLOG);
    if (stmt == NULL)
        return -1;
    int64_t total = -1;
    if (sqlite3_step(stmt) == SQLITE_ROW)
        total = sqlite3_column_int64(stmt, 0) - store_mailbox_marked_count(store, NULL);
    else
        store_fail(store, "mailbox_row_backlog_total");
    store_stmt_finish(stmt);
    return total;
}

/* Cost: one step to the end of the rowid b-tree and the last row read;
 * a row before it only when this transaction's marks emptied it. A done
 * column that does not read counts as none done: the seq returned is a
 * bound its callers take as "nothing pending above", and errs high. */
int64_t store_mailbox_row_last_seq(store_t *store)
{
    if (store_enter(store, "mailbox_row_last_seq") != 0)
        return -1;
    sqlite3_stmt *stmt = store_mailbox_stmt(store, MB_QUERY_LAST_SEQ);
    if (stmt == NULL)
        return -1;
    int64_t last = -1;
    int rc = SQLITE_DONE;
    while (last < 0 && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        int64_t first = 0;
        uint32_t n = 0;
        const uint8_t *done = NULL;
        if (seqs_row(store, stmt, "mailbox_row_last_seq", 1, &first, &n, &done) != 0)
            break;
        for (uint32_t i = n; i-- > 0 && last < 0;)
            if (!mailbox_done_bit(done, i))
                last = first + (int64_t)i;
    }
    if (last < 0 && rc == SQLITE_DONE)
        last = 0;
    else if (last < 0 && rc != SQLITE_ROW)
        store_fail(store, "mailbox_row_last_seq");
    store_stmt_finish(stmt);
    return last;
}
