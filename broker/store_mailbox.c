/*
 * store_mailbox.c — the mailbox as rows of one publish and recipient
 * (store_mailbox.h, docs/design/mailbox.md section 3): the table and its
 * statements, acks and removals marked in memory and written once per row
 * before the commit, expiry, and the pending counts. Adding a row is
 * store_mailbox_add.c's, the scan store_mailbox_scan.c's, a row's clear
 * columns and seal store_mailbox_row.c's. Trusts its caller for id syntax
 * and nothing read back from the file (a row that reads damaged is
 * refused). Errors: -1 with store_errmsg set.
 */
#include <inttypes.h>
#include <limits.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schakel_limits.h"
#include "store_mailbox_internal.h"

/* ------------------------------------------------------------------ schema */

/* first_seq is the rowid: seqs are unique broker-wide, so the row of a
 * seq is the recipient's row with the greatest first_seq at most the seq
 * (one descent of mailbox_by_recipient), and the seq is the row's when it
 * is below first_seq + n. done is a bitmap of n bits (bit i: seq
 * first_seq + i acked or removed), NULL while none is; pending counts the
 * others. expires_at is the earliest expiry among the row's deliveries
 * (each one's own is in its rule line), for the expiry's index. */
static const char mailbox_schema_sql[] =
    "CREATE TABLE IF NOT EXISTS mailbox ("
    "  first_seq INTEGER PRIMARY KEY CHECK (first_seq > 0),"
    "  recipient TEXT NOT NULL,"
    "  n INTEGER NOT NULL CHECK (n BETWEEN 1 AND 1024),"
    "  pending INTEGER NOT NULL CHECK (pending BETWEEN 1 AND n),"
    "  publish_id INTEGER NOT NULL REFERENCES publishes(id),"
    "  first_item_seq INTEGER NOT NULL,"
    "  sender TEXT NOT NULL,"
    "  sender_partner TEXT NOT NULL,"
    "  message_id BLOB NOT NULL CHECK (length(message_id) = 16),"
    "  accepted_at INTEGER NOT NULL,"
    "  rules TEXT NOT NULL,"
    "  items BLOB NOT NULL CHECK (length(items) = 4 * n),"
    "  expires_at INTEGER NOT NULL,"
    "  body BLOB NOT NULL,"
    "  done BLOB,"
    "  case_id TEXT REFERENCES cases(case_id),"
    "  is_case_event INTEGER NOT NULL DEFAULT 0"
    "   CHECK (is_case_event IN (0, 1) AND (case_id IS NOT NULL OR is_case_event = 0))"
    ");"
    "CREATE INDEX IF NOT EXISTS mailbox_by_recipient ON mailbox (recipient, first_seq);"
    "CREATE INDEX IF NOT EXISTS mailbox_by_expiry ON mailbox (expires_at);"
    "CREATE INDEX IF NOT EXISTS mailbox_by_publish ON mailbox (publish_id);"
    "CREATE INDEX IF NOT EXISTS mailbox_by_case ON mailbox (case_id, recipient) WHERE case_id IS "
    "NOT NULL;"
    /* A row that does not authenticate, or reads as no broker writes it,
     * is moved here whole, as it was (no constraint on the copied columns:
     * it comes over however damaged), with when and why; its deliveries
     * not done are each named on the trail by a delivery.set_aside entry. */
    "CREATE TABLE IF NOT EXISTS mailbox_set_aside ("
    "  first_seq INTEGER PRIMARY KEY,"
    "  recipient, n, pending, publish_id, first_item_seq, sender, sender_partner,"
    "  message_id, accepted_at, rules, items, expires_at, body, done, case_id,"
    "  is_case_event,"
    "  set_aside_at INTEGER NOT NULL,"
    "  reason TEXT NOT NULL"
    ");"
    "CREATE INDEX IF NOT EXISTS mailbox_set_aside_by_recipient ON mailbox_set_aside (recipient, "
    "first_seq);"
    "CREATE INDEX IF NOT EXISTS mailbox_set_aside_by_expiry ON mailbox_set_aside (expires_at);"
    "CREATE INDEX IF NOT EXISTS mailbox_set_aside_by_publish ON mailbox_set_aside (publish_id);"
    "CREATE INDEX IF NOT EXISTS mailbox_set_aside_by_case ON mailbox_set_aside (case_id)"
    "  WHERE case_id IS NOT NULL;"
    /* The rows whose expires_at is no integer (the copied columns keep no
     * type, and that may be the damage): due at once, found without a
     * walk of the table (store_mailbox_row_set_aside_expire). Empty unless
     * something went wrong. */
    "CREATE INDEX IF NOT EXISTS mailbox_set_aside_untyped ON mailbox_set_aside (first_seq)"
    "  WHERE typeof(expires_at) <> 'integer';";

int store_mailbox_schema(store_t *store)
{
    if (store_enter(store, "mailbox schema") != 0)
        return -1;
    return store_exec_fixed(store, mailbox_schema_sql, "mailbox schema");
}

/* ------------------------------------------------------------------ statements */

static const char *const mailbox_sql[MB_STMT_COUNT] = {
    [MB_ADD] = "INSERT INTO mailbox (first_seq, recipient, n, pending, publish_id, first_item_seq,"
               " sender, sender_partner, message_id, accepted_at, rules, items, expires_at, body,"
               " case_id, is_case_event)"
               " VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    /* The end of the row starting last at or before ?1 (the new row's
     * last seq): rows never overlap, so it is the only one that can. */
    [MB_SEQS_TAKEN] = "SELECT first_seq + n FROM mailbox WHERE first_seq <= ?1"
                      " ORDER BY first_seq DESC LIMIT 1",
    [MB_ITEMS] = "SELECT seq, publish_id, item_index, expires_at FROM items"
                 " WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq",
    [MB_PUBLISH] =
        "SELECT sender, message_id, accepted_at, expires_at FROM publishes WHERE id = ?1",
    [MB_ITEM_RAISE] = "UPDATE items SET expires_at = ?2 WHERE seq = ?1 AND expires_at < ?2",
    [MB_PUBLISH_RAISE] = "UPDATE publishes SET expires_at = ?2 WHERE id = ?1 AND expires_at < ?2",
    /* From the row holding the seq after the cursor: the subquery is one
     * descent, run once; the rows then come in first_seq order. */
    [MB_SCAN] = "SELECT first_seq, n, done, first_item_seq, publish_id, sender, sender_partner,"
                " message_id, accepted_at, rules, items, body, case_id, is_case_event, pending,"
                " expires_at"
                " FROM mailbox WHERE recipient = ?1 AND first_seq >= coalesce((SELECT first_seq"
                " FROM mailbox WHERE recipient = ?1 AND first_seq <= ?2"
                " ORDER BY first_seq DESC LIMIT 1), 0) ORDER BY first_seq",
    [MB_SCAN_ITEM] = "SELECT body, publish_id FROM items WHERE seq = ?1",
    [MB_FIND] = "SELECT first_seq, n, done, pending, first_item_seq, rules, items FROM mailbox"
                " WHERE recipient = ?1 AND first_seq <= ?2 ORDER BY first_seq DESC LIMIT 1",
    [MB_UPDATE] = "UPDATE mailbox SET done = ?2, pending = ?3 WHERE first_seq = ?1",
    [MB_DELETE] = "DELETE FROM mailbox WHERE first_seq = ?1",
    [MB_PENDING] = "SELECT coalesce(sum(pending), 0) FROM mailbox WHERE recipient = ?1",
    /* MB_FIND's columns, then the recipient: the row due first. */
    [MB_EXPIRE_NEXT] =
        "SELECT first_seq, n, done, pending, first_item_seq, rules, items, recipient,"
        " expires_at, case_id FROM mailbox WHERE expires_at <= ?1"
        " ORDER BY expires_at LIMIT 1",
    [MB_REWRITE] =
        "UPDATE mailbox SET done = ?2, pending = ?3, expires_at = ?4 WHERE first_seq = ?1",
    /* store_mailbox_aside.c: the row of a seq (as MB_FIND), moved whole to
     * mailbox_set_aside with this transaction's marks folded in (?5 done,
     * ?6 pending; NULL: none) and its expires_at bounded by its publish's
     * retention and the longest (?4); one that is no integer is due now. */
    [MB_ASIDE_FIND] = "SELECT first_seq, n, done, pending FROM mailbox"
                      " WHERE recipient = ?1 AND first_seq <= ?2 ORDER BY first_seq DESC LIMIT 1",
    [MB_ASIDE_MOVE] =
        "INSERT INTO mailbox_set_aside (first_seq, recipient, n, pending, publish_id,"
        " first_item_seq, sender, sender_partner, message_id, accepted_at, rules, items,"
        " expires_at, body, done, case_id, is_case_event, set_aside_at, reason)"
        " SELECT m.first_seq, m.recipient, m.n, coalesce(?6, m.pending), m.publish_id,"
        " m.first_item_seq, m.sender, m.sender_partner, m.message_id, m.accepted_at, m.rules,"
        " m.items, CASE WHEN typeof(m.expires_at) = 'integer' THEN min(m.expires_at, ?4,"
        " coalesce((SELECT p.expires_at FROM publishes AS p WHERE p.id = m.publish_id"
        " AND typeof(p.expires_at) = 'integer'), ?4)) ELSE ?2 END,"
        " m.body, coalesce(?5, m.done), m.case_id, m.is_case_event, ?2, ?3"
        " FROM mailbox AS m WHERE m.first_seq = ?1",
    /* A set-aside row by a seq of it: the one starting last at or before. */
    [MB_ASIDE_ROW] = "SELECT first_seq, recipient, n, done, first_item_seq, rules, items,"
                     " expires_at, reason FROM mailbox_set_aside WHERE first_seq <= ?1"
                     " ORDER BY first_seq DESC LIMIT 1",
    /* From the row holding ?1 on, in seq order; none starting below 1. */
    [MB_ASIDE_ROWS] = "SELECT first_seq, NULL, n, done FROM mailbox_set_aside"
                      " WHERE first_seq >= max(1, coalesce((SELECT first_seq FROM mailbox_set_aside"
                      " WHERE first_seq <= ?1 ORDER BY first_seq DESC LIMIT 1), 1))"
                      " ORDER BY first_seq",
    [MB_ASIDE_RECORDED] =
        "SELECT 1 FROM audit WHERE delivery_seq = ?1 AND event = 'delivery.set_aside' LIMIT 1",
    /* MB_ASIDE_ROW's columns: one whose expires_at is no integer (by the
     * partial index, named: without it the planner may walk another index
     * whole), then the one due first. */
    [MB_ASIDE_DUE_UNTYPED] = "SELECT first_seq, recipient, n, done, first_item_seq, rules, items,"
                             " expires_at, reason FROM mailbox_set_aside"
                             " INDEXED BY mailbox_set_aside_untyped"
                             " WHERE typeof(expires_at) <> 'integer' LIMIT 1",
    [MB_ASIDE_DUE] = "SELECT first_seq, recipient, n, done, first_item_seq, rules, items,"
                     " expires_at, reason FROM mailbox_set_aside WHERE expires_at <= ?1"
                     " ORDER BY expires_at LIMIT 1",
    [MB_ASIDE_REMOVE] = "DELETE FROM mailbox_set_aside WHERE first_seq = ?1",
    /* store_mailbox_case.c. A case's rows of one principal, or of every
     * principal of a partner ("partner/..."): one range of mailbox_by_case,
     * in its order. */
    [MB_CASE_DROP_ROWS] = "SELECT first_seq, n, recipient FROM mailbox WHERE case_id = ?1"
                          " AND recipient >= ?2 AND recipient < ?2 || '0' AND (recipient = ?2"
                          " OR substr(recipient, 1, length(?2) + 1) = ?2 || '/')"
                          " ORDER BY recipient, first_seq",
    [MB_CASE_EXPIRY_CASE] = "UPDATE cases SET expires_at = ?2 WHERE case_id = ?1",
    [MB_CASE_EXPIRY_EVENTS] = "UPDATE case_events SET expires_at = ?2 WHERE case_id = ?1",
    /* A case's rows one at a time, in the order of mailbox_by_case: each
     * is rewritten (its rule lines and body re-sealed) before the next. */
    [MB_CASE_ROW_NEXT] =
        "SELECT first_seq, n, recipient, publish_id, first_item_seq, sender, sender_partner,"
        " message_id, accepted_at, rules, items, body, case_id, is_case_event FROM mailbox"
        " WHERE case_id = ?1 AND (recipient, first_seq) > (?2, ?3)"
        " ORDER BY recipient, first_seq LIMIT 1",
    /* ?2 and ?3 NULL: a row that does not re-seal keeps them as they are */
    /* A row kept as it was (?2 NULL: it could not be re-sealed) keeps its
     * rule lines, so its expires_at may only move earlier: later than its
     * deliveries' own is damage to the scan. */
    [MB_CASE_ROW_SET] = "UPDATE mailbox SET rules = coalesce(?2, rules), body = coalesce(?3, body),"
                        " expires_at = CASE WHEN ?2 IS NULL THEN min(?4, expires_at) ELSE ?4 END"
                        " WHERE first_seq = ?1",
    /* The case's items one at a time, with the latest expiry of another
     * case that links the item (what else holds it is read in the rows). */
    [MB_CASE_ITEM_NEXT] =
        "SELECT ci.item_seq, i.publish_id, i.item_index, i.expires_at,"
        " (SELECT max(c.expires_at) FROM case_items AS o JOIN cases AS c ON c.case_id = o.case_id"
        " WHERE o.item_seq = ci.item_seq AND o.case_id <> ?1)"
        " FROM case_items AS ci JOIN items AS i ON i.seq = ci.item_seq"
        " WHERE ci.case_id = ?1 AND ci.item_seq > ?2 ORDER BY ci.item_seq LIMIT 1",
    [MB_CASE_ITEM_SET] = "UPDATE items SET expires_at = ?2 WHERE seq = ?1",
    /* A case's rows set aside follow it (not re-sealed: they do not open),
     * never past their item's retention: their case_id may be the damage. */
    [MB_CASE_EXPIRY_SET_ASIDE] =
        "UPDATE mailbox_set_aside SET expires_at = min(?2, coalesce((SELECT i.expires_at"
        " FROM items AS i WHERE i.seq = mailbox_set_aside.first_item_seq"
        " AND typeof(i.expires_at) = 'integer'), ?2)) WHERE case_id = ?1",
    /* and a publish, never below its items (set just before) */
    [MB_CASE_EXPIRY_PUBLISHES] =
        "UPDATE publishes SET expires_at = max(?2, coalesce((SELECT max(i.expires_at) FROM items"
        " AS i WHERE i.publish_id = publishes.id), 0)) WHERE id IN"
        " (SELECT i.publish_id FROM case_items AS ci JOIN items AS i ON i.seq = ci.item_seq"
        " WHERE ci.case_id = ?1)",
    /* A publish's rows, waiting and set aside: what they still refer to. */
    [MB_PUBLISH_ROWS] = "SELECT n, done, items, rules, expires_at, case_id, first_seq, recipient"
                        " FROM mailbox WHERE publish_id = ?1",
    [MB_PUBLISH_SET_ASIDE_ROWS] = "SELECT n, done, items, rules, expires_at, case_id, first_seq"
                                  " FROM mailbox_set_aside WHERE publish_id = ?1",
    /* The next due item after (?2, ?3) in the order of items_by_expiry. */
    [MB_EXPIRE_ITEM_NEXT] = "SELECT seq, publish_id, item_index, expires_at FROM items"
                            " WHERE expires_at <= ?1 AND (expires_at, seq) > (?2, ?3)"
                            " ORDER BY expires_at, seq LIMIT 1",
    [MB_EXPIRE_ITEM_DELETE] =
        "DELETE FROM items WHERE seq = ?1"
        " RETURNING (SELECT sender FROM publishes WHERE publishes.id = items.publish_id),"
        " length(body)",
    /* Like items: a due publish or case still named by a row (waiting,
     * whatever its done, as its foreign key holds; or set aside) is
     * skipped this time. A case's members and item links cascade. */
    [MB_EXPIRE_PUBLISHES] =
        "DELETE FROM publishes WHERE id IN"
        " (SELECT id FROM publishes WHERE expires_at <= ?1 AND (expires_at, id) > (?3, ?4)"
        " ORDER BY expires_at, id LIMIT ?2)"
        " AND NOT EXISTS (SELECT 1 FROM items WHERE items.publish_id = publishes.id)"
        " AND NOT EXISTS (SELECT 1 FROM mailbox AS m WHERE m.publish_id = publishes.id)"
        /* + keeps the id's INTEGER affinity off the untyped column, which
         * would otherwise turn this lookup into a scan of its index */
        " AND NOT EXISTS (SELECT 1 FROM mailbox_set_aside AS s WHERE s.publish_id = +publishes.id)",
    [MB_EXPIRE_CASES] =
        "DELETE FROM cases WHERE num IN"
        " (SELECT num FROM cases WHERE expires_at <= ?1 AND (expires_at, num) > (?3, ?4)"
        " ORDER BY expires_at, num LIMIT ?2)"
        " AND NOT EXISTS (SELECT 1 FROM case_events WHERE case_events.case_id = cases.case_id)"
        " AND NOT EXISTS (SELECT 1 FROM mailbox AS m WHERE m.case_id = cases.case_id)"
        " AND NOT EXISTS (SELECT 1 FROM mailbox_set_aside AS s WHERE s.case_id = cases.case_id)",
    /* The last candidate of such a DELETE's window, when it is full: where
     * the next step goes on (store_mailbox_case.c, expire_unreferenced). */
    [MB_EXPIRE_PUBLISHES_END] = "SELECT expires_at, id FROM publishes WHERE expires_at <= ?1 AND "
                                "(expires_at, id) > (?3, ?4)"
                                " ORDER BY expires_at, id LIMIT 1 OFFSET ?2 - 1",
    [MB_EXPIRE_CASES_END] =
        "SELECT expires_at, num FROM cases WHERE expires_at <= ?1 AND (expires_at, num) > (?3, ?4)"
        " ORDER BY expires_at, num LIMIT 1 OFFSET ?2 - 1",
    /* store_mailbox_query.c: MB_FIND's descent, with what a rule names */
    [MB_QUERY_RULE] = "SELECT first_seq, n, done, rules, items, case_id FROM mailbox"
                      " WHERE recipient = ?1 AND first_seq <= ?2 ORDER BY first_seq DESC LIMIT 1",
    /* The listing's rows from the one holding seq ?2 (after_seq + 1), as
     * MB_SCAN finds them, of each table; clear columns only, never body. */
    [MB_QUERY_LIST_WAITING] =
        "SELECT first_seq, n, done, first_item_seq, sender, message_id, accepted_at, rules, items,"
        " expires_at, case_id, is_case_event, NULL, NULL FROM mailbox WHERE recipient = ?1"
        " AND first_seq >= coalesce((SELECT first_seq FROM mailbox WHERE recipient = ?1"
        " AND first_seq <= ?2 ORDER BY first_seq DESC LIMIT 1), 0) ORDER BY first_seq",
    [MB_QUERY_LIST_SET_ASIDE] =
        "SELECT first_seq, n, done, first_item_seq, sender, message_id, accepted_at, rules, items,"
        " expires_at, case_id, is_case_event, set_aside_at, reason FROM mailbox_set_aside"
        " WHERE recipient = ?1 AND first_seq >= coalesce((SELECT first_seq FROM mailbox_set_aside"
        " WHERE recipient = ?1 AND first_seq <= ?2 ORDER BY first_seq DESC LIMIT 1), 0)"
        " ORDER BY first_seq",
    [MB_QUERY_LIST_EVENT] = STORE_LIST_EVENT_SQL,
    /* mailbox_by_recipient from the first entry past ?1: a recipient's
     * rows in order, for the rare one this transaction's marks emptied */
    [MB_QUERY_NEXT_RECIPIENT] = "SELECT recipient, first_seq, n FROM mailbox WHERE recipient > ?1"
                                " ORDER BY recipient, first_seq",
    [MB_QUERY_OLDEST] =
        "SELECT first_seq, n, done FROM mailbox WHERE recipient = ?1 ORDER BY first_seq",
    [MB_QUERY_BACKLOG] = "SELECT coalesce(sum(pending), 0) FROM mailbox",
    /* from the end of the rowid b-tree: the last row, then the ones before */
    [MB_QUERY_LAST_SEQ] = "SELECT first_seq, n, done FROM mailbox ORDER BY first_seq DESC",
};

/* Columns of MB_FIND, and of MB_EXPIRE_NEXT with those from FC_RECIPIENT. */
enum find_col {
    FC_FIRST_SEQ,
    FC_N,
    FC_DONE,
    FC_PENDING,
    FC_FIRST_ITEM_SEQ,
    FC_RULES,
    FC_ITEMS,
    FC_RECIPIENT,
    FC_EXPIRES_AT,
    FC_CASE_ID
};

/* One row touched by this transaction's acks and removals: its bitmap and
 * pending count as they will be written (store_mailbox_flush). */
typedef struct mailbox_mark {
    int64_t first_seq;
    uint32_t n;
    uint32_t pending; /* as it will be written */
    uint32_t marked;  /* bits this transaction set: the count's changes */
    char recipient[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    uint8_t done[STORE_MAILBOX_MAX_N / 8];
} mailbox_mark_t;

struct store_mailbox {
    sqlite3_stmt *stmt[MB_STMT_COUNT];
    mailbox_mark_t *marks;
    size_t n_marks, cap_marks;
    uint64_t marks_serial; /* the transaction they were made in */
    size_t aside_by_expiry; /* rows the last store_mailbox_row_expire set aside */
    int expire_more;        /* it stopped at its bound of rows with rows still due */
    /* where the sweeps of items, publishes and cases go on: as the last
     * commit left it, and as this transaction (sweep_serial) moved it */
    mailbox_sweep_at_t sweep_at[MAILBOX_SWEEPS], sweep_next[MAILBOX_SWEEPS];
    uint64_t sweep_serial;
    /* The rows store calls of this transaction set aside on their own, by
     * first_seq (store_mailbox_aside_list), the first n_taken taken. */
    int64_t *listed;
    size_t n_listed, cap_listed, n_taken;
    uint64_t listed_serial; /* the transaction they were set aside in */
};

static struct store_mailbox *mailbox_of(store_t *store)
{
    if (store->mailbox != NULL)
        return store->mailbox;
    if ((store->mailbox = calloc(1, sizeof *store->mailbox)) == NULL) {
        store_refuse(store, "mailbox", "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < MAILBOX_SWEEPS; i++)
        store->mailbox->sweep_at[i] = (mailbox_sweep_at_t){INT64_MIN, 0};
    return store->mailbox;
}

/* Prepared at first use, kept until store_close. NULL with the failure
 * recorded (the table missing among others). */
sqlite3_stmt *store_mailbox_stmt(store_t *store, enum mailbox_stmt_id id)
{
    struct store_mailbox *m = mailbox_of(store);
    if (m == NULL)
        return NULL;
    if (m->stmt[id] != NULL)
        return m->stmt[id];
    if (sqlite3_prepare_v3(store->db, mailbox_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &m->stmt[id],
                           NULL) != SQLITE_OK) {
        store_fail(store, "mailbox: prepare");
        m->stmt[id] = NULL;
    }
    return m->stmt[id];
}

void store_mailbox_free(store_t *store)
{
    struct store_mailbox *m = store->mailbox;
    if (m == NULL)
        return;
    for (int i = 0; i < MB_STMT_COUNT; i++)
        (void)sqlite3_finalize(m->stmt[i]);
    free(m->marks);
    free(m->listed);
    free(m);
    store->mailbox = NULL;
}

/* ------------------------------------------------------------------ rows set aside, listed */

/* This transaction's list; an older one (its transaction committed or
 * rolled back: taken or gone with it) is dropped first. */
static struct store_mailbox *listed_current(store_t *store)
{
    struct store_mailbox *m = store->mailbox;
    if (m != NULL && m->n_listed > 0 &&
        (m->listed_serial != store->txn_serial || !store->txn_open ||
         sqlite3_get_autocommit(store->db)))
        m->n_listed = m->n_taken = 0;
    return m;
}

int store_mailbox_aside_list(store_t *store, int64_t first_seq)
{
    struct store_mailbox *m = listed_current(store);
    if (m == NULL && (m = mailbox_of(store)) == NULL)
        return -1;
    if (m->n_listed == m->cap_listed) {
        size_t cap = m->cap_listed == 0 ? 8 : 2 * m->cap_listed;
        int64_t *grown = realloc(m->listed, cap * sizeof *grown);
        if (grown == NULL) {
            store_refuse(store, "mailbox_row_set_aside", "out of memory");
            return -1;
        }
        m->listed = grown;
        m->cap_listed = cap;
    }
    m->listed_serial = store->txn_serial;
    m->listed[m->n_listed++] = first_seq;
    return 0;
}

int64_t store_mailbox_aside_next(store_t *store)
{
    struct store_mailbox *m = listed_current(store);
    if (m == NULL || m->n_taken == m->n_listed)
        return 0;
    return m->listed[m->n_taken++];
}

/* ------------------------------------------------------------------ marks */

/* This transaction's marks; older ones (their transaction rolled back, by
 * us or by SQLite) are dropped first. */
static struct store_mailbox *marks_current(store_t *store)
{
    struct store_mailbox *m = store->mailbox;
    if (m != NULL && m->n_marks > 0 &&
        (m->marks_serial != store->txn_serial || !store->txn_open ||
         sqlite3_get_autocommit(store->db)))
        m->n_marks = 0;
    return m;
}

/* The mark of the row starting at first_seq, or NULL. The last touched is
 * looked at first: the seqs of an ack come in order. */
static mailbox_mark_t *mark_of_row(store_t *store, int64_t first_seq)
{
    struct store_mailbox *m = marks_current(store);
    for (size_t k = m != NULL ? m->n_marks : 0; k-- > 0;)
        if (m->marks[k].first_seq == first_seq)
            return &m->marks[k];
    return NULL;
}

const uint8_t *store_mailbox_marked(store_t *store, int64_t first_seq)
{
    const mailbox_mark_t *mark = mark_of_row(store, first_seq);
    return mark != NULL ? mark->done : NULL;
}

void store_mailbox_unmark(store_t *store, int64_t first_seq)
{
    mailbox_mark_t *mark = mark_of_row(store, first_seq);
    if (mark != NULL)
        *mark = store->mailbox->marks[--store->mailbox->n_marks];
}

int64_t store_mailbox_marked_count(store_t *store, const char *recipient)
{
    struct store_mailbox *m = marks_current(store);
    int64_t count = 0;
    for (size_t k = 0; m != NULL && k < m->n_marks; k++)
        if (recipient == NULL || strcmp(m->marks[k].recipient, recipient) == 0)
            count += (int64_t)m->marks[k].marked;
    return count;
}

/* The mark of recipient's row holding seq, or NULL. */
static mailbox_mark_t *mark_of_seq(store_t *store, const char *recipient, int64_t seq)
{
    struct store_mailbox *m = marks_current(store);
    for (size_t k = m != NULL ? m->n_marks : 0; k-- > 0;) {
        mailbox_mark_t *mark = &m->marks[k];
        if (seq >= mark->first_seq && seq - mark->first_seq < (int64_t)mark->n)
            return strcmp(mark->recipient, recipient) == 0 ? mark : NULL;
    }
    return NULL;
}

static mailbox_mark_t *mark_new(store_t *store)
{
    struct store_mailbox *m = mailbox_of(store);
    if (m == NULL)
        return NULL;
    if (m->n_marks == m->cap_marks) {
        size_t cap = m->cap_marks == 0 ? 8 : 2 * m->cap_marks;
        mailbox_mark_t *grown = realloc(m->marks, cap * sizeof *grown);
        if (grown == NULL) {
            store_refuse(store, "mailbox marks", "out of memory");
            return NULL;
        }
        m->marks = grown;
        m->cap_marks = cap;
    }
    m->marks_serial = store->txn_serial;
    return &m->marks[m->n_marks++];
}

/* The current row of MB_FIND as a new mark of recipient's. NULL with the
 * failure (a damaged row is refused). */
static mailbox_mark_t *mark_load(store_t *store, sqlite3_stmt *find, const char *recipient)
{
    int64_t n = sqlite3_column_int64(find, FC_N);
    int done_type = sqlite3_column_type(find, FC_DONE);
    size_t done_len = 0;
    const uint8_t *done =
        done_type == SQLITE_BLOB ? store_column_bytes(find, FC_DONE, &done_len) : NULL;
    if (!mailbox_span_ok(sqlite3_column_int64(find, FC_FIRST_SEQ), n) ||
        (done_type != SQLITE_NULL && (done == NULL || done_len != ((size_t)n + 7) / 8)) ||
        !mailbox_pending_ok(find, FC_PENDING, n, done)) {
        store_refuse(store, "mailbox", "damaged row: n, pending or done as no broker writes them");
        return NULL;
    }
    mailbox_mark_t *mark = mark_new(store);
    if (mark == NULL)
        return NULL;
    mark->first_seq = sqlite3_column_int64(find, FC_FIRST_SEQ);
    mark->n = (uint32_t)n;
    memset(mark->done, 0, sizeof mark->done);
    if (done != NULL)
        memcpy(mark->done, done, done_len);
    mark->pending = mark->n - mailbox_done_count(mark->done, mark->n);
    mark->marked = 0;
    strcpy(mark->recipient, recipient);
    return mark;
}

/* Find recipient's row holding seq with MB_FIND, left on its row (1) for
 * the caller to read and finish; 0 (finished) when there is none; -1. */
static int row_find(store_t *store, const char *recipient, int64_t seq, sqlite3_stmt **out)
{
    sqlite3_stmt *find = store_mailbox_stmt(store, MB_FIND);
    if (find == NULL)
        return -1;
    if (store_bind_text(store, find, 1, recipient) != 0 ||
        store_bind_int64(store, find, 2, seq) != 0) {
        store_stmt_finish(find);
        return -1;
    }
    int rc = sqlite3_step(find);
    if (rc == SQLITE_ROW && !mailbox_span_ok(sqlite3_column_int64(find, FC_FIRST_SEQ),
                                             sqlite3_column_int64(find, FC_N))) {
        store_refuse(store, "mailbox", "damaged row: first_seq or n as no broker writes them");
        store_stmt_finish(find);
        return -1;
    }
    if (rc == SQLITE_ROW &&
        seq - sqlite3_column_int64(find, FC_FIRST_SEQ) < sqlite3_column_int64(find, FC_N)) {
        *out = find;
        return 1;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        store_fail(store, "mailbox: find");
    store_stmt_finish(find);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

/* The checks every marking call makes. 0, or -1 refused. */
static int mark_enter(store_t *store, const char *what, const char *recipient)
{
    if (store_enter(store, what) != 0)
        return -1;
    if (recipient == NULL) {
        store_refuse(store, what, "recipient is required");
        return -1;
    }
    if (!store->txn_open || sqlite3_get_autocommit(store->db)) {
        store_refuse(store, what, "no transaction open");
        return -1;
    }
    return mailbox_of(store) != NULL ? 0 : -1;
}

/* Set the bit of seq in its mark: the mark's pending goes down by one and
 * the recipient's count with it. */
static void mark_done(store_t *store, mailbox_mark_t *mark, int64_t seq)
{
    size_t bit = (size_t)(seq - mark->first_seq);
    mark->done[bit / 8] |= (uint8_t)(1u << (bit % 8));
    mark->pending--;
    mark->marked++;
    store_count_change(store, mark->recipient, -1);
}

/* Cost: a look through this transaction's marks (the last first), and for
 * a row not yet marked one descent of mailbox_by_recipient. The write
 * comes once per row at the commit (store_mailbox_flush). */
int store_mailbox_row_ack(store_t *store, const char *recipient, uint64_t seq)
{
    if (mark_enter(store, "mailbox_row_ack", recipient) != 0)
        return -1;
    if (seq == 0 || seq > INT64_MAX || strlen(recipient) > SCHAKEL_MAX_PRINCIPAL_LEN)
        return 0; /* never a seq, nor a recipient */
    mailbox_mark_t *mark = mark_of_seq(store, recipient, (int64_t)seq);
    if (mark == NULL) {
        sqlite3_stmt *find = NULL;
        int found = row_find(store, recipient, (int64_t)seq, &find);
        if (found <= 0)
            return found;
        mark = mark_load(store, find, recipient);
        store_stmt_finish(find);
        if (mark == NULL)
            return -1;
    }
    if (mailbox_done_bit(mark->done, (size_t)((int64_t)seq - mark->first_seq)))
        return 0;
    mark_done(store, mark, (int64_t)seq);
    return 1;
}

int store_mailbox_tombstone(store_t *store, store_expired_t *e, int64_t now, const char *what)
{
    sqlite3_stmt *stmt = store->stmt[STMT_TOMBSTONE_ADD];
    if (store_bind_int64(store, stmt, 1, (int64_t)e->seq) != 0 ||
        store_bind_text(store, stmt, 2, e->recipient) != 0 ||
        store_bind_int64(store, stmt, 3, (int64_t)e->item_seq) != 0 ||
        store_bind_text(store, stmt, 4, e->rule_id) != 0 ||
        store_bind_text(store, stmt, 5, e->rule_hash) != 0 ||
        store_bind_int64(store, stmt, 6, e->expires_at) != 0 ||
        store_bind_int64(store, stmt, 7, now) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    if (store_stmt_run(store, stmt, what) != 0)
        return -1;
    e->tombstoned_before = sqlite3_changes(store->db) == 0;
    return 0;
}

/* The rule lines and items of the current row of MB_FIND (or
 * MB_EXPIRE_NEXT, whose first columns are the same), read in clear as
 * store_delivery_revoke reads its row, every entry's slot and item seq
 * checked: 0 with *items borrowing the row; -1 for a damaged row or out of
 * memory (refused as what). *rules is the caller's to free either way. */
static int row_lines(store_t *store, sqlite3_stmt *find, const char *what, mailbox_rules_t *rules,
                     const uint8_t **items)
{
    int64_t first = sqlite3_column_int64(find, FC_FIRST_SEQ);
    int64_t n = sqlite3_column_int64(find, FC_N);
    int64_t first_item_seq = sqlite3_column_int64(find, FC_FIRST_ITEM_SEQ);
    *rules = (mailbox_rules_t){NULL, NULL, 0, 0};
    size_t items_len = 0, rules_len = 0;
    *items = store_column_bytes(find, FC_ITEMS, &items_len);
    const uint8_t *text = store_column_bytes(find, FC_RULES, &rules_len);
    int parsed = mailbox_span_ok(first, n) && mailbox_item_seq_ok(first_item_seq) &&
                         *items != NULL && items_len == 4 * (size_t)n && text != NULL
                     ? store_mailbox_rules_parse((const char *)text, rules_len, (size_t)n, rules)
                     : -1;
    for (int64_t i = 0; parsed == 0 && i < n; i++)
        if (mailbox_rule_slot_at(*items, (size_t)i) >= rules->n_slots ||
            first_item_seq + (int64_t)mailbox_item_index_at(*items, (size_t)i) -
                    (int64_t)mailbox_item_index_at(*items, 0) <=
                0)
            parsed = -1;
    if (parsed != 0)
        store_refuse(store, what,
                     parsed == -2 ? "out of memory" : "damaged row: items or rule lines");
    return parsed == 0 ? 0 : -1;
}

/* Delivery i of the row row_lines read, as its tombstone names it: *e's
 * strings point into rules and recipient. */
static void removed_facts(sqlite3_stmt *find, const uint8_t *items, const mailbox_rules_t *rules,
                          const char *recipient, size_t i, store_expired_t *e)
{
    const mailbox_rule_slot_t *slot = &rules->slots[mailbox_rule_slot_at(items, i)];
    *e = (store_expired_t){
        .seq = (uint64_t)(sqlite3_column_int64(find, FC_FIRST_SEQ) + (int64_t)i),
        .recipient = recipient,
        .item_seq = (uint64_t)(sqlite3_column_int64(find, FC_FIRST_ITEM_SEQ) +
                               (int64_t)mailbox_item_index_at(items, i) -
                               (int64_t)mailbox_item_index_at(items, 0)),
        .rule_id = slot->rule_id,
        .rule_hash = slot->rule_hash,
        .expires_at = slot->expires_at,
    };
}

/* Tombstone e, then tell fn (may be NULL). 0 or -1. */
static int removed_tell(store_t *store, store_expired_t *e, int64_t now, store_expired_fn fn,
                        void *arg)
{
    if (store_mailbox_tombstone(store, e, now, "mailbox_row_remove: tombstone") != 0)
        return -1;
    if (fn != NULL) {
        store->in_callback = 1;
        fn(e, arg);
        store->in_callback = 0;
    }
    return 0;
}

/* Cost: as store_mailbox_row_ack, the row's rule lines parsed, and the
 * tombstone's insert, O(log n). */
int store_mailbox_row_remove(store_t *store, const char *recipient, uint64_t seq, int64_t now,
                             store_expired_fn fn, void *arg)
{
    if (mark_enter(store, "mailbox_row_remove", recipient) != 0)
        return -1;
    if (seq == 0 || seq > INT64_MAX || strlen(recipient) > SCHAKEL_MAX_PRINCIPAL_LEN)
        return 0; /* never a seq, nor a recipient */
    sqlite3_stmt *find = NULL;
    int found = row_find(store, recipient, (int64_t)seq, &find);
    if (found <= 0)
        return found;
    mailbox_mark_t *mark = mark_of_row(store, sqlite3_column_int64(find, FC_FIRST_SEQ));
    if (mark == NULL && (mark = mark_load(store, find, recipient)) == NULL) {
        store_stmt_finish(find);
        return -1;
    }
    if (mailbox_done_bit(mark->done, (size_t)((int64_t)seq - mark->first_seq))) {
        store_stmt_finish(find);
        return 0;
    }
    mailbox_rules_t rules;
    const uint8_t *items = NULL;
    store_expired_t e;
    int rc = row_lines(store, find, "mailbox_row_remove", &rules, &items);
    if (rc == 0) {
        removed_facts(find, items, &rules, recipient, (size_t)((int64_t)seq - mark->first_seq), &e);
        rc = removed_tell(store, &e, now, fn, arg);
    }
    store_stmt_finish(find);
    store_mailbox_rules_free(&rules);
    if (rc != 0)
        return -1;
    mark_done(store, mark, (int64_t)seq); /* no mark was made since: mark is still the row's */
    return 1;
}

/* Forget the mark of a row just written or deleted (swapped with the
 * last): nothing of it is left to write. */
static void mark_forget(store_t *store, mailbox_mark_t *mark)
{
    struct store_mailbox *m = store->mailbox;
    *mark = m->marks[--m->n_marks];
}

/* Write the row of mark now, as expiry leaves it: deleted when nothing is
 * pending, else its done, pending and next expiry. 0 or -1. */
static int expire_write(store_t *store, mailbox_mark_t *mark, int64_t next_expiry)
{
    int gone = mark->pending == 0;
    sqlite3_stmt *stmt = store_mailbox_stmt(store, gone ? MB_DELETE : MB_REWRITE);
    if (stmt == NULL)
        return -1;
    if (store_bind_int64(store, stmt, 1, mark->first_seq) != 0 ||
        (!gone && (store_bind_bytes(store, stmt, 2, mark->done, (mark->n + 7) / 8) != 0 ||
                   store_bind_int64(store, stmt, 3, mark->pending) != 0 ||
                   store_bind_int64(store, stmt, 4, next_expiry) != 0))) {
        store_stmt_finish(stmt);
        return -1;
    }
    if (store_stmt_run(store, stmt, "mailbox_row_expire") != 0)
        return -1;
    if (sqlite3_changes(store->db) != 1) {
        store_refuse(store, "mailbox_row_expire", "the row is not there");
        return -1;
    }
    mark_forget(store, mark);
    return 0;
}

/* Expire the due deliveries of the row `next` stands on (MB_EXPIRE_NEXT),
 * up to limit in all, and write the row at once: deleted, or with its
 * next expiry (the earliest of its deliveries still pending, which is in
 * the past only when limit stopped it). Finishes `next`. 0 or -1. */
static int expire_row(store_t *store, sqlite3_stmt *next, int64_t now, size_t limit,
                      store_expired_fn fn, void *arg, size_t *expired)
{
    char recipient[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    const char *text = store_column_text(next, FC_RECIPIENT);
    mailbox_rules_t rules = {NULL, NULL, 0, 0};
    const uint8_t *items = NULL;
    mailbox_mark_t *mark = NULL;
    int rc = -1;
    if (text == NULL || strlen(text) >= sizeof recipient) {
        store_refuse(store, "mailbox_row_expire", "damaged row: recipient");
    } else {
        strcpy(recipient, text);
        mark = mark_of_row(store, sqlite3_column_int64(next, FC_FIRST_SEQ));
        if (mark == NULL)
            mark = mark_load(store, next, recipient);
        if (mark != NULL)
            rc = row_lines(store, next, "mailbox_row_expire", &rules, &items);
    }
    int64_t next_expiry = INT64_MAX;
    /* A case's row (a delivery of one) whose rule line its case's close
     * could not move (its body did not open to be sealed again) has the
     * close's expiry in expires_at alone: that one holds, or the row would
     * get the open case's back and be kept for ever. */
    int64_t case_until = rc == 0 && sqlite3_column_type(next, FC_CASE_ID) != SQLITE_NULL
                             ? sqlite3_column_int64(next, FC_EXPIRES_AT)
                             : INT64_MAX;
    for (uint32_t i = 0; rc == 0 && i < mark->n; i++) {
        if (mailbox_done_bit(mark->done, i))
            continue;
        store_expired_t e;
        removed_facts(next, items, &rules, recipient, i, &e);
        if (e.expires_at > case_until)
            e.expires_at = case_until;
        if (e.expires_at > now || *expired >= limit) {
            next_expiry = e.expires_at < next_expiry ? e.expires_at : next_expiry;
            continue;
        }
        rc = removed_tell(store, &e, now, fn, arg);
        if (rc == 0) {
            mark_done(store, mark, (int64_t)e.seq);
            (*expired)++;
        }
    }
    store_stmt_finish(next);
    store_mailbox_rules_free(&rules);
    return rc == 0 ? expire_write(store, mark, next_expiry) : -1;
}

/* A row due whose expiry could not read it (its rule lines, items, n or
 * done as no broker writes them): set aside whole, as the push would set
 * it aside (store_mailbox_row_set_aside checks it again), so that one
 * damaged row never stops the sweep for every mailbox; its set-aside
 * expiry then takes it. 0 when set aside; -1 (errmsg kept) when the
 * failure was not the row's (SQLite, memory), or it cannot be. */
static int expire_set_aside(store_t *store, const char *recipient, int64_t first_seq, int64_t now)
{
    if (store->last_rc != 0 || strstr(store->errmsg, "damaged row") == NULL || first_seq <= 0)
        return -1;
    char why[sizeof store->errmsg];
    snprintf(why, sizeof why, "%s", store->errmsg);
    if (recipient[0] == 0) { /* not found again by recipient: moved by its rowid */
        if (store_mailbox_row_set_aside_unread(store, first_seq, now, why) != 0 ||
            store_mailbox_aside_list(store, first_seq) != 0)
            return -1;
        store->mailbox->aside_by_expiry++;
        return 0;
    }
    store_mailbox_aside_t aside;
    int rc = store_mailbox_row_set_aside(store, recipient, (uint64_t)first_seq, now, &aside);
    if (rc == 1) { /* listed for the caller's entries */
        if (store_mailbox_aside_list(store, (int64_t)aside.first_seq) != 0)
            return -1;
        store->mailbox->aside_by_expiry++;
        return 0;
    }
    if (rc == 0) /* it opens after all: the failure stands */
        snprintf(store->errmsg, sizeof store->errmsg, "%s", why);
    return -1;
}

/* Cost: per row due, one step of mailbox_by_expiry, its rule lines parsed,
 * a tombstone per delivery expired and one write of the row, O(log n)
 * each. */
int store_mailbox_row_expire(store_t *store, int64_t now, size_t limit, store_expired_fn fn,
                             void *arg)
{
    if (store_enter(store, "mailbox_row_expire") != 0)
        return -1;
    if (!store->txn_open || sqlite3_get_autocommit(store->db)) {
        store_refuse(store, "mailbox_row_expire", "no transaction open");
        return -1;
    }
    if (limit > INT_MAX)
        limit = INT_MAX; /* the count returned is an int */
    size_t expired = 0;
    if (mailbox_of(store) == NULL)
        return -1;
    store->mailbox->aside_by_expiry = 0;
    store->mailbox->expire_more = 0;
    /* Bounded by rows as well as by deliveries: a row due whose pending
     * deliveries are not (its earliest was acked: an ack does not rewrite
     * expires_at) is only rewritten with its next expiry, and a backlog of
     * them must not be rewritten whole in one turn. */
    for (size_t rows = 0; expired < limit; rows++) {
        if (rows == limit) {
            store->mailbox->expire_more = 1; /* perhaps: the next step looks */
            break;
        }
        sqlite3_stmt *next = store_mailbox_stmt(store, MB_EXPIRE_NEXT);
        if (next == NULL)
            return -1;
        if (store_bind_int64(store, next, 1, now) != 0) {
            store_stmt_finish(next);
            return -1;
        }
        int rc = sqlite3_step(next);
        if (rc != SQLITE_ROW) {
            if (rc != SQLITE_DONE)
                store_fail(store, "mailbox_row_expire");
            store_stmt_finish(next);
            if (rc != SQLITE_DONE)
                return -1;
            break;
        }
        int64_t first_seq = sqlite3_column_int64(next, FC_FIRST_SEQ);
        char recipient[SCHAKEL_MAX_PRINCIPAL_LEN + 1] = "";
        const char *text = store_column_text(next, FC_RECIPIENT);
        if (text != NULL && strlen(text) < sizeof recipient)
            strcpy(recipient, text);
        if (expire_row(store, next, now, limit, fn, arg, &expired) != 0 &&
            expire_set_aside(store, recipient, first_seq, now) != 0)
            return -1;
    }
    return (int)expired;
}

size_t store_mailbox_expire_set_aside(const store_t *store)
{
    return store->mailbox != NULL ? store->mailbox->aside_by_expiry : 0;
}

mailbox_sweep_at_t *store_mailbox_sweep_at(store_t *store, enum mailbox_sweep which)
{
    struct store_mailbox *m = mailbox_of(store);
    if (m == NULL)
        return NULL;
    if (m->sweep_serial != store->txn_serial) { /* a new transaction: from the last commit's */
        memcpy(m->sweep_next, m->sweep_at, sizeof m->sweep_next);
        m->sweep_serial = store->txn_serial;
    }
    return &m->sweep_next[which];
}

void store_mailbox_committed(store_t *store)
{
    struct store_mailbox *m = store->mailbox;
    if (m != NULL && m->sweep_serial == store->txn_serial)
        memcpy(m->sweep_at, m->sweep_next, sizeof m->sweep_at);
}

void store_mailbox_expire_aside_count(store_t *store)
{
    if (store->mailbox != NULL)
        store->mailbox->aside_by_expiry++;
}

int store_mailbox_expire_more(const store_t *store)
{
    return store->mailbox != NULL && store->mailbox->expire_more;
}

/* Cost: per row marked, one update of its done and pending (or its
 * delete, with its index entries), O(log n) each; nothing without marks. */
int store_mailbox_flush(store_t *store)
{
    struct store_mailbox *m = marks_current(store);
    if (m == NULL || m->n_marks == 0)
        return 0;
    int rc = 0;
    for (size_t k = 0; k < m->n_marks && rc == 0; k++) {
        const mailbox_mark_t *mark = &m->marks[k];
        if (mark->marked == 0)
            continue; /* read, nothing set */
        int gone = mark->pending == 0;
        sqlite3_stmt *stmt = store_mailbox_stmt(store, gone ? MB_DELETE : MB_UPDATE);
        if (stmt == NULL || store_bind_int64(store, stmt, 1, mark->first_seq) != 0 ||
            (!gone && (store_bind_bytes(store, stmt, 2, mark->done, (mark->n + 7) / 8) != 0 ||
                       store_bind_int64(store, stmt, 3, mark->pending) != 0))) {
            if (stmt != NULL)
                store_stmt_finish(stmt);
            rc = -1;
            break;
        }
        rc = store_stmt_run(store, stmt, "mailbox: acks written");
        if (rc == 0 && sqlite3_changes(store->db) != 1) {
            store_refuse(store, "mailbox: acks written", "a row marked is not there");
            rc = -1;
        }
    }
    m->n_marks = 0; /* written, or the commit fails and all of it goes */
    return rc;
}

void store_mailbox_drop(store_t *store)
{
    if (store->mailbox != NULL)
        store->mailbox->n_marks = 0;
}

/* ------------------------------------------------------------------ counts */

int64_t store_mailbox_row_pending(store_t *store, const char *recipient)
{
    if (store_enter(store, "mailbox_row_pending") != 0)
        return -1;
    if (recipient == NULL) {
        store_refuse(store, "mailbox_row_pending", "recipient is required");
        return -1;
    }
    int64_t count = -1;
    if (store_count_get(store, recipient, &count))
        return count;
    sqlite3_stmt *stmt = store_mailbox_stmt(store, MB_PENDING);
    if (stmt == NULL)
        return -1;
    if (store_bind_text(store, stmt, 1, recipient) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        count = sqlite3_column_int64(stmt, 0);
        /* the marks not yet written are in the count's changes already */
        struct store_mailbox *m = marks_current(store);
        for (size_t k = 0; m != NULL && k < m->n_marks; k++)
            if (strcmp(m->marks[k].recipient, recipient) == 0)
                count -= (int64_t)m->marks[k].marked;
        store_count_learn(store, recipient, count);
    } else {
        store_fail(store, "mailbox_row_pending");
    }
    store_stmt_finish(stmt);
    return count;
}
