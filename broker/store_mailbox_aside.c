/*
 * store_mailbox_aside.c — mailbox rows set aside whole (store_mailbox.h,
 * docs/design/mailbox.md 3.2): a row that does not authenticate or reads
 * damaged moved into mailbox_set_aside as it is, this transaction's marks
 * folded in; its deliveries given back per seq for their trail entries;
 * the rows counted, and expired whole when due. Trusts nothing read from
 * the file: a set-aside row is damaged more often than not, so each
 * column that does not read is taken as the header says (store_mailbox.h)
 * instead of refused. Errors: -1 with store_errmsg set.
 */
#include <limits.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "schakel_limits.h"
#include "store_mailbox_internal.h"

/* Columns of MB_ASIDE_ROW, MB_ASIDE_DUE_UNTYPED and MB_ASIDE_DUE; the
 * first four are MB_ASIDE_ROWS' too. */
enum aside_col {
    AC_FIRST_SEQ,
    AC_RECIPIENT,
    AC_N,
    AC_DONE,
    AC_FIRST_ITEM_SEQ,
    AC_RULES,
    AC_ITEMS,
    AC_EXPIRES_AT,
    AC_REASON
};

/* Columns of MB_ASIDE_FIND. */
enum find_col { FC_FIRST_SEQ, FC_N, FC_DONE, FC_PENDING };

/* ------------------------------------------------------------------ a set-aside row's seqs */

/* The seqs a set-aside row names: first_seq + i for i below n whose bit in
 * done is clear, n and done as the header's rules read them. */
typedef struct aside_span {
    int64_t first_seq;
    uint32_t n;          /* 0: the row names no seq (it starts below 1) */
    int n_read;          /* n is the column's (else taken as 1, or 0) */
    const uint8_t *done; /* borrows the row; NULL: none done */
} aside_span_t;

static void aside_span_read(sqlite3_stmt *row, aside_span_t *s)
{
    s->first_seq = sqlite3_column_int64(row, AC_FIRST_SEQ);
    int64_t n = sqlite3_column_int64(row, AC_N);
    s->n_read =
        sqlite3_column_type(row, AC_N) == SQLITE_INTEGER && mailbox_span_ok(s->first_seq, n);
    s->n = s->first_seq < 1 ? 0 : s->n_read ? (uint32_t)n : 1;
    s->done = NULL;
    size_t len = 0;
    if (s->n_read && sqlite3_column_type(row, AC_DONE) == SQLITE_BLOB) {
        const uint8_t *done = store_column_bytes(row, AC_DONE, &len);
        if (done != NULL && len == (s->n + 7) / 8)
            s->done = done;
    }
}

static int aside_named(const aside_span_t *s, uint32_t i)
{
    return i < s->n && !mailbox_done_bit(s->done, i);
}

/* What a delivery of a set-aside row says of itself, as far as its row
 * reads: its rule lines parsed once per row. */
typedef struct aside_facts {
    mailbox_rules_t rules;
    int readable; /* items, rule lines and first_item_seq read */
    const uint8_t *items;
    int64_t first_item_seq;
} aside_facts_t;

/* 0, or -1 when memory runs out (refused as what); damage is no failure. */
static int aside_facts_read(store_t *store, sqlite3_stmt *row, const aside_span_t *s,
                            aside_facts_t *f, const char *what)
{
    size_t items_len = 0, rules_len = 0;
    f->rules = (mailbox_rules_t){NULL, NULL, 0, 0};
    f->first_item_seq = sqlite3_column_int64(row, AC_FIRST_ITEM_SEQ);
    f->items = store_column_bytes(row, AC_ITEMS, &items_len);
    const uint8_t *text = store_column_bytes(row, AC_RULES, &rules_len);
    f->readable = 0;
    if (!s->n_read || sqlite3_column_type(row, AC_FIRST_ITEM_SEQ) != SQLITE_INTEGER ||
        !mailbox_item_seq_ok(f->first_item_seq) || f->items == NULL ||
        items_len != 4 * (size_t)s->n || text == NULL)
        return 0;
    int parsed = store_mailbox_rules_parse((const char *)text, rules_len, s->n, &f->rules);
    if (parsed == -2) {
        store_refuse(store, what, "out of memory");
        return -1;
    }
    f->readable = parsed == 0;
    return 0;
}

/* A text of the row, or "" when it is missing or longer than max. */
static const char *aside_text(const char *text, size_t max)
{
    return text != NULL && strlen(text) <= max ? text : "";
}

/* Delivery i of the row as its trail entry and tombstone name it, into
 * *e (strings borrow the row and f): recipient and expires_at are the
 * caller's to set. */
static void aside_delivery(const aside_span_t *s, const aside_facts_t *f, uint32_t i,
                           store_expired_t *e)
{
    *e = (store_expired_t){
        .seq = (uint64_t)(s->first_seq + (int64_t)i),
        .rule_id = "",
        .rule_hash = "",
        .set_aside = 1,
    };
    if (!f->readable || mailbox_rule_slot_at(f->items, i) >= f->rules.n_slots)
        return;
    int64_t item_seq = f->first_item_seq + (int64_t)mailbox_item_index_at(f->items, i) -
                       (int64_t)mailbox_item_index_at(f->items, 0);
    const mailbox_rule_slot_t *slot = &f->rules.slots[mailbox_rule_slot_at(f->items, i)];
    e->item_seq = item_seq > 0 ? (uint64_t)item_seq : 0;
    e->rule_id = aside_text(slot->rule_id, SCHAKEL_MAX_ID_LEN);
    e->rule_hash = aside_text(slot->rule_hash, 64);
}

/* ------------------------------------------------------------------ setting a row aside */

/* The row of recipient holding seq, as MB_ASIDE_FIND finds it. */
typedef struct aside_found {
    int64_t first_seq;
    uint32_t n;      /* as aside_span_t: 1 when the column does not read */
    int counts_read; /* n and done read: left is exact */
    uint32_t left;   /* deliveries not done, this transaction's marks included */
    int64_t pending; /* the pending column, as the count summed it */
    int64_t marked;  /* bits this transaction's marks set: the count has them */
    int has_mark;
    int pending_agrees;                    /* the pending column is n less the done column's bits */
    uint8_t done[STORE_MAILBOX_MAX_N / 8]; /* the mark's bitmap, when has_mark */
} aside_found_t;

/* 1 with *x filled, 0 when no row of recipient holds seq, -1. */
static int aside_find(store_t *store, const char *recipient, int64_t seq, aside_found_t *x)
{
    sqlite3_stmt *find = store_mailbox_stmt(store, MB_ASIDE_FIND);
    if (find == NULL)
        return -1;
    if (store_bind_text(store, find, 1, recipient) != 0 ||
        store_bind_int64(store, find, 2, seq) != 0) {
        store_stmt_finish(find);
        return -1;
    }
    int rc = sqlite3_step(find);
    if (rc != SQLITE_ROW) {
        if (rc != SQLITE_DONE)
            store_fail(store, "mailbox_row_set_aside: find");
        store_stmt_finish(find);
        return rc == SQLITE_DONE ? 0 : -1;
    }
    memset(x, 0, sizeof *x);
    x->first_seq = sqlite3_column_int64(find, FC_FIRST_SEQ);
    int64_t n = sqlite3_column_int64(find, FC_N);
    int n_read =
        sqlite3_column_type(find, FC_N) == SQLITE_INTEGER && mailbox_span_ok(x->first_seq, n);
    x->n = n_read ? (uint32_t)n : 1;
    size_t len = 0;
    int done_type = sqlite3_column_type(find, FC_DONE);
    const uint8_t *done = done_type == SQLITE_BLOB ? store_column_bytes(find, FC_DONE, &len) : NULL;
    x->counts_read =
        n_read && (done_type == SQLITE_NULL || (done != NULL && len == (x->n + 7) / 8));
    x->pending = sqlite3_column_int64(find, FC_PENDING);
    int holds = x->first_seq >= 1 && seq - x->first_seq < (int64_t)x->n;
    if (holds && x->counts_read) {
        /* a mark is only ever made of a row whose n and done read */
        const uint8_t *marked = store_mailbox_marked(store, x->first_seq);
        uint32_t before = mailbox_done_count(done, x->n);
        x->has_mark = marked != NULL;
        if (marked != NULL)
            memcpy(x->done, marked, (x->n + 7) / 8);
        x->marked = marked != NULL ? (int64_t)mailbox_done_count(marked, x->n) - before : 0;
        x->left = x->n - before - (uint32_t)x->marked;
        x->pending_agrees = x->pending == (int64_t)x->n - (int64_t)before;
    }
    store_stmt_finish(find);
    return holds;
}

static int count_visited(const store_delivery_t *d, void *arg)
{
    (void)d;
    (*(size_t *)arg)++;
    return 0;
}

/* Check the row as the scan does, each pending delivery of it: 1 when it
 * does not authenticate or reads damaged (why in reason), 0 when it opens,
 * -1 on any other failure. The scan is bounded to the row's deliveries
 * (or its first, for a row whose counts do not read: the scan refuses
 * such a row before handing any out), so it never reads the next row. */
static int aside_check(store_t *store, const char *recipient, const aside_found_t *x, char *reason,
                       size_t reason_len)
{
    uint64_t unreadable_before = store->scan_unreadable_seq;
    size_t visited = 0;
    int rc = store_mailbox_row_scan(store, recipient, (uint64_t)x->first_seq - 1,
                                    x->counts_read ? x->left : 1, NULL, count_visited, &visited);
    int unreadable = rc < 0 && store->scan_unreadable_seq == (uint64_t)x->first_seq;
    store->scan_unreadable_seq = unreadable_before;
    if (unreadable)
        snprintf(reason, reason_len, "%.250s", store->errmsg);
    return rc >= 0 ? 0 : unreadable ? 1 : -1;
}

/* Move the row into mailbox_set_aside and out of mailbox. 0 or -1. */
static int aside_move(store_t *store, const aside_found_t *x, int64_t now, const char *reason)
{
    int64_t longest =
        now < INT64_MAX - SCHAKEL_MAX_RETENTION_S ? now + SCHAKEL_MAX_RETENTION_S : INT64_MAX;
    sqlite3_stmt *move = store_mailbox_stmt(store, MB_ASIDE_MOVE);
    if (move == NULL)
        return -1;
    int bound = store_bind_int64(store, move, 1, x->first_seq) == 0 &&
                store_bind_int64(store, move, 2, now) == 0 &&
                store_bind_text(store, move, 3, reason) == 0 &&
                store_bind_int64(store, move, 4, longest) == 0;
    if (bound && x->has_mark)
        bound = store_bind_bytes(store, move, 5, x->done, (x->n + 7) / 8) == 0 &&
                store_bind_int64(store, move, 6, (int64_t)x->left) == 0;
    else if (bound)
        bound = store_check_rc(store, sqlite3_bind_null(move, 5), "mailbox_row_set_aside") == 0 &&
                store_check_rc(store, sqlite3_bind_null(move, 6), "mailbox_row_set_aside") == 0;
    if (!bound) {
        store_stmt_finish(move);
        return -1;
    }
    if (store_stmt_run(store, move, "mailbox_row_set_aside: move") != 0)
        return -1;
    if (sqlite3_changes(store->db) != 1) {
        store_refuse(store, "mailbox_row_set_aside", "the row to set aside is not there");
        return -1;
    }
    sqlite3_stmt *remove = store_mailbox_stmt(store, MB_DELETE);
    if (remove == NULL)
        return -1;
    if (store_bind_int64(store, remove, 1, x->first_seq) != 0) {
        store_stmt_finish(remove);
        return -1;
    }
    if (store_stmt_run(store, remove, "mailbox_row_set_aside: remove") != 0)
        return -1;
    if (sqlite3_changes(store->db) != 1) {
        store_refuse(store, "mailbox_row_set_aside", "the row set aside is still there");
        return -1;
    }
    return 0;
}

/* Cost: the copy and the delete of store_mailbox_row_set_aside, no check
 * (the caller found the row unreadable) and no count (no recipient to
 * count it for). */
int store_mailbox_row_set_aside_unread(store_t *store, int64_t first_seq, int64_t now,
                                       const char *reason)
{
    if (store_enter(store, "mailbox_row_set_aside") != 0)
        return -1;
    if (!store->txn_open || sqlite3_get_autocommit(store->db) || reason == NULL) {
        store_refuse(store, "mailbox_row_set_aside",
                     "a reason and an open transaction are required");
        return -1;
    }
    store_mailbox_unmark(store, first_seq); /* nothing of it can be written back */
    aside_found_t x = {.first_seq = first_seq, .has_mark = 0};
    return aside_move(store, &x, now, reason);
}

int store_mailbox_row_set_aside(store_t *store, const char *recipient, uint64_t seq, int64_t now,
                                store_mailbox_aside_t *out)
{
    char reason[STORE_SET_ASIDE_REASON_LEN] = "";
    if (store_enter(store, "mailbox_row_set_aside") != 0)
        return -1;
    if (recipient == NULL || out == NULL || !store->txn_open || sqlite3_get_autocommit(store->db)) {
        store_refuse(store, "mailbox_row_set_aside",
                     "a recipient, out and an open transaction are required");
        return -1;
    }
    if (seq == 0 || seq > INT64_MAX || strlen(recipient) > SCHAKEL_MAX_PRINCIPAL_LEN)
        return 0; /* never a seq, nor a recipient */
    aside_found_t x;
    int found = aside_find(store, recipient, (int64_t)seq, &x);
    if (found <= 0)
        return found;
    if (x.counts_read && x.left == 0 && x.pending_agrees)
        return 0; /* all of it done: the flush deletes it at the commit */
    if (x.counts_read && x.left == 0) {
        /* all done by its bits, but its pending column says otherwise: no
         * reader takes it (mailbox_pending_ok), nor would the flush; set
         * aside, it names no delivery, so it needs no entry */
        snprintf(reason, sizeof reason, "%s",
                 "damaged row: its pending column disagrees with its done bits");
    } else {
        int unreadable = aside_check(store, recipient, &x, reason, sizeof reason);
        if (unreadable <= 0)
            return unreadable;
    }
    if (aside_move(store, &x, now, reason) != 0)
        return -1;
    /* The count summed the pending column and has the marks' changes: take
     * out the rest, and the mark (its row is gone, the flush must not look
     * for it). */
    store_mailbox_unmark(store, x.first_seq);
    store_count_change(store, recipient, -(x.pending - x.marked));
    *out = (store_mailbox_aside_t){
        .first_seq = (uint64_t)x.first_seq,
        .last_seq = (uint64_t)x.first_seq + x.n - 1,
        .n_set_aside = x.counts_read ? x.left : x.n,
    };
    memcpy(out->reason, reason, sizeof out->reason);
    return 1;
}

/* ------------------------------------------------------------------ per seq */

/* MB_ASIDE_ROW for seq, stepped once (its result in *rc): the set-aside
 * row holding seq, if any. NULL on error. */
static sqlite3_stmt *aside_row_at(store_t *store, int64_t seq, int *rc)
{
    sqlite3_stmt *row = store_mailbox_stmt(store, MB_ASIDE_ROW);
    if (row == NULL)
        return NULL;
    if (store_bind_int64(store, row, 1, seq) != 0) {
        store_stmt_finish(row);
        return NULL;
    }
    *rc = sqlite3_step(row);
    return row;
}

/* Read set-aside delivery seq into *out: 1, 0 when it is none, -1. */
static int aside_get(store_t *store, int64_t seq, store_set_aside_t *out)
{
    int rc = SQLITE_DONE, result = 0;
    sqlite3_stmt *row = aside_row_at(store, seq, &rc);
    if (row == NULL)
        return -1;
    if (rc == SQLITE_ROW) {
        aside_span_t s;
        aside_span_read(row, &s);
        int64_t i = s.n > 0 ? seq - s.first_seq : -1; /* first_seq >= 1: no overflow */
        aside_facts_t f = {{NULL, NULL, 0, 0}, 0, NULL, 0};
        if (i < 0 || i >= (int64_t)s.n || !aside_named(&s, (uint32_t)i)) {
            result = 0;
        } else if (aside_facts_read(store, row, &s, &f, "mailbox_row_set_aside_get") != 0) {
            result = -1;
        } else {
            store_expired_t e;
            aside_delivery(&s, &f, (uint32_t)i, &e);
            int typed = sqlite3_column_type(row, AC_EXPIRES_AT) == SQLITE_INTEGER;
            e.expires_at = typed ? sqlite3_column_int64(row, AC_EXPIRES_AT) : 0;
            e.recipient =
                aside_text(store_column_text(row, AC_RECIPIENT), SCHAKEL_MAX_PRINCIPAL_LEN);
            store_expired_copy_set(&out->row, &e);
            snprintf(out->reason, sizeof out->reason, "%s",
                     aside_text(store_column_text(row, AC_REASON), sizeof out->reason - 1));
            result = 1;
        }
        store_mailbox_rules_free(&f.rules);
    } else if (rc != SQLITE_DONE) {
        store_fail(store, "mailbox_row_set_aside_get");
        result = -1;
    }
    store_stmt_finish(row);
    return result;
}

int store_mailbox_row_set_aside_get(store_t *store, uint64_t seq, store_set_aside_t *out)
{
    if (store_enter(store, "mailbox_row_set_aside_get") != 0)
        return -1;
    if (out == NULL) {
        store_refuse(store, "mailbox_row_set_aside_get", "out is required");
        return -1;
    }
    if (seq == 0 || seq > INT64_MAX)
        return 0; /* never a seq */
    return aside_get(store, (int64_t)seq, out);
}

/* The span of the set-aside row starting at first_seq into *out: 1; 0
 * when no such row is there (gone since) or it names no seq; -1. */
static int aside_span_at(store_t *store, int64_t first_seq, store_mailbox_aside_t *out)
{
    int rc = SQLITE_DONE, result = 0;
    sqlite3_stmt *row = aside_row_at(store, first_seq, &rc);
    if (row == NULL)
        return -1;
    if (rc == SQLITE_ROW) {
        aside_span_t s;
        aside_span_read(row, &s);
        if (s.first_seq == first_seq && s.n > 0) {
            *out = (store_mailbox_aside_t){
                .first_seq = (uint64_t)s.first_seq,
                .last_seq = (uint64_t)s.first_seq + s.n - 1,
            };
            result = 1;
        }
    } else if (rc != SQLITE_DONE) {
        store_fail(store, "mailbox_row_set_aside_take");
        result = -1;
    }
    store_stmt_finish(row);
    return result;
}

int store_mailbox_row_set_aside_take(store_t *store, store_mailbox_aside_t *out)
{
    if (store_enter(store, "mailbox_row_set_aside_take") != 0)
        return -1;
    if (out == NULL) {
        store_refuse(store, "mailbox_row_set_aside_take", "out is required");
        return -1;
    }
    int64_t first_seq;
    while ((first_seq = store_mailbox_aside_next(store)) > 0) {
        int found = aside_span_at(store, first_seq, out);
        if (found != 0)
            return found;
    }
    return 0;
}

/* 1 when a "delivery.set_aside" entry names seq, 0 when none does, -1. */
static int aside_recorded(store_t *store, int64_t seq)
{
    sqlite3_stmt *stmt = store_mailbox_stmt(store, MB_ASIDE_RECORDED);
    if (stmt == NULL)
        return -1;
    if (store_bind_int64(store, stmt, 1, seq) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        store_fail(store, "mailbox_row_set_aside_unrecorded");
    store_stmt_finish(stmt);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/* Walk the set-aside rows from the one holding after + 1, in seq order:
 * each seq named and greater than after goes into seqs (up to max) when
 * it is not recorded, or counted when seqs is NULL. The number, or -1. */
static int64_t aside_walk(store_t *store, uint64_t after, uint64_t *seqs, size_t max,
                          const char *what)
{
    sqlite3_stmt *rows = store_mailbox_stmt(store, MB_ASIDE_ROWS);
    if (rows == NULL)
        return -1;
    if (store_bind_int64(store, rows, 1, (int64_t)after + 1) != 0) {
        store_stmt_finish(rows);
        return -1;
    }
    int64_t n = 0;
    int rc = SQLITE_DONE;
    while ((seqs == NULL || (size_t)n < max) && (rc = sqlite3_step(rows)) == SQLITE_ROW) {
        aside_span_t s;
        aside_span_read(rows, &s);
        for (uint32_t i = 0; i < s.n && (seqs == NULL || (size_t)n < max); i++) {
            int64_t seq = s.first_seq + (int64_t)i;
            if (!aside_named(&s, i) || (uint64_t)seq <= after)
                continue;
            int recorded = seqs != NULL ? aside_recorded(store, seq) : 0;
            if (recorded < 0) {
                store_stmt_finish(rows);
                return -1;
            }
            if (!recorded && seqs != NULL)
                seqs[n] = (uint64_t)seq;
            n += !recorded;
        }
    }
    if ((seqs == NULL || (size_t)n < max) && rc != SQLITE_DONE) {
        store_fail(store, what);
        n = -1;
    }
    store_stmt_finish(rows);
    return n;
}

int store_mailbox_row_set_aside_unrecorded(store_t *store, uint64_t after, uint64_t *seqs,
                                           size_t max)
{
    if (store_enter(store, "mailbox_row_set_aside_unrecorded") != 0)
        return -1;
    if (seqs == NULL || max == 0 || max > INT_MAX) {
        store_refuse(store, "mailbox_row_set_aside_unrecorded",
                     "room for 1 to INT_MAX seqs is required");
        return -1;
    }
    if (after >= INT64_MAX)
        return 0;
    return (int)aside_walk(store, after, seqs, max, "mailbox_row_set_aside_unrecorded");
}

int64_t store_mailbox_row_set_aside_count(store_t *store)
{
    if (store_enter(store, "mailbox_row_set_aside_count") != 0)
        return -1;
    return aside_walk(store, 0, NULL, 0, "mailbox_row_set_aside_count");
}

/* ------------------------------------------------------------------ expiry */

/* Expire the row `due` stands on: a tombstone and fn per delivery named,
 * then the row deleted. Finishes `due`. The deliveries expired, or -1. */
static int64_t aside_expire_row(store_t *store, sqlite3_stmt *due, int64_t now, store_expired_fn fn,
                                void *arg)
{
    aside_span_t s;
    aside_facts_t f;
    aside_span_read(due, &s);
    int64_t first_seq = s.first_seq, expired = 0;
    if (aside_facts_read(store, due, &s, &f, "mailbox_row_set_aside_expire") != 0) {
        store_mailbox_rules_free(&f.rules);
        store_stmt_finish(due);
        return -1;
    }
    int typed = sqlite3_column_type(due, AC_EXPIRES_AT) == SQLITE_INTEGER;
    int64_t expires_at = typed ? sqlite3_column_int64(due, AC_EXPIRES_AT) : now;
    const char *recipient =
        aside_text(store_column_text(due, AC_RECIPIENT), SCHAKEL_MAX_PRINCIPAL_LEN);
    for (uint32_t i = 0; i < s.n && expired >= 0; i++) {
        if (!aside_named(&s, i))
            continue;
        store_expired_t e;
        aside_delivery(&s, &f, i, &e);
        e.recipient = recipient;
        e.expires_at = expires_at;
        if (store_mailbox_tombstone(store, &e, now, "mailbox_row_set_aside_expire: tombstone") !=
            0) {
            expired = -1;
            break;
        }
        if (fn != NULL) {
            store->in_callback = 1;
            fn(&e, arg);
            store->in_callback = 0;
        }
        expired++;
    }
    store_mailbox_rules_free(&f.rules);
    store_stmt_finish(due); /* e's strings end here */
    if (expired < 0)
        return -1;
    sqlite3_stmt *remove = store_mailbox_stmt(store, MB_ASIDE_REMOVE);
    if (remove == NULL)
        return -1;
    if (store_bind_int64(store, remove, 1, first_seq) != 0) {
        store_stmt_finish(remove);
        return -1;
    }
    if (store_stmt_run(store, remove, "mailbox_row_set_aside_expire: remove") != 0)
        return -1;
    if (sqlite3_changes(store->db) != 1) {
        store_refuse(store, "mailbox_row_set_aside_expire", "the expired row vanished");
        return -1;
    }
    return expired;
}

/* The next row due, left on its row in *due (1); 0 when none is; -1. */
static int aside_next_due(store_t *store, int64_t now, sqlite3_stmt **due)
{
    for (int untyped = 1; untyped >= 0; untyped--) {
        sqlite3_stmt *stmt =
            store_mailbox_stmt(store, untyped ? MB_ASIDE_DUE_UNTYPED : MB_ASIDE_DUE);
        if (stmt == NULL)
            return -1;
        if (!untyped && store_bind_int64(store, stmt, 1, now) != 0) {
            store_stmt_finish(stmt);
            return -1;
        }
        int rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW) {
            *due = stmt;
            return 1;
        }
        if (rc != SQLITE_DONE)
            store_fail(store, "mailbox_row_set_aside_expire");
        store_stmt_finish(stmt);
        if (rc != SQLITE_DONE)
            return -1;
    }
    return 0;
}

int store_mailbox_row_set_aside_expire(store_t *store, int64_t now, size_t limit,
                                       store_expired_fn fn, void *arg)
{
    if (store_enter(store, "mailbox_row_set_aside_expire") != 0)
        return -1;
    if (!store->txn_open || sqlite3_get_autocommit(store->db)) {
        store_refuse(store, "mailbox_row_set_aside_expire", "no transaction open");
        return -1;
    }
    if (limit > INT_MAX - STORE_MAILBOX_MAX_N)
        limit = INT_MAX - STORE_MAILBOX_MAX_N; /* the count returned is an int */
    int64_t expired = 0;
    for (size_t rows = 0; (size_t)expired < limit && rows < limit; rows++) {
        sqlite3_stmt *due = NULL;
        int found = aside_next_due(store, now, &due);
        if (found <= 0) {
            if (found < 0)
                return -1;
            break;
        }
        int64_t gone = aside_expire_row(store, due, now, fn, arg);
        if (gone < 0)
            return -1;
        expired += gone;
    }
    return (int)expired;
}
