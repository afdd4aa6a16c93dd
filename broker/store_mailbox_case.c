/*
 * store_mailbox_case.c — cases and expiry's references over the mailbox
 * rows (store_mailbox.h): a leaving member's case rows removed delivery by
 * delivery through the marks, a case's retention set at its close or
 * reopen (its rows' rule lines rewritten and re-sealed), and the items,
 * publishes and cases that expiry may take because no waiting or
 * set-aside row refers to them, exactly per item. Trusts its caller for id
 * syntax and nothing read back: a row that reads damaged is refused where
 * it would be written, and where it is only read for what it still
 * references it is taken to reference everything it could (it frees
 * nothing). Errors: -1 with store_errmsg set.
 */
#include <inttypes.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "schakel_limits.h"
#include "store_mailbox_internal.h"

/* ------------------------------------------------------------------ shared checks */

/* The checks every writer here makes: a store, no callback, a transaction
 * open. 0, or -1 refused. */
static int case_enter(store_t *store, const char *what)
{
    if (store_enter(store, what) != 0)
        return -1;
    if (!store->txn_open || sqlite3_get_autocommit(store->db)) {
        store_refuse(store, what, "no transaction is open (call store_begin first)");
        return -1;
    }
    return 0;
}

static int case_id_plausible(const char *case_id)
{
    return case_id != NULL && strlen(case_id) == SCHAKEL_CASE_ID_LEN;
}

/* The statement with ?1 bound to text and, when second is set, ?2 to
 * *second; NULL with the failure recorded. */
static sqlite3_stmt *stmt_on(store_t *store, enum mailbox_stmt_id id, const char *text,
                             const int64_t *second)
{
    sqlite3_stmt *stmt = store_mailbox_stmt(store, id);
    if (stmt == NULL)
        return NULL;
    if ((text != NULL && store_bind_text(store, stmt, 1, text) != 0) ||
        (second != NULL && store_bind_int64(store, stmt, 2, *second) != 0)) {
        store_stmt_finish(stmt);
        return NULL;
    }
    return stmt;
}

/* ------------------------------------------------------------------ a member leaves */

/* Columns of MB_CASE_DROP_ROWS. */
enum { DROP_FIRST_SEQ, DROP_N, DROP_RECIPIENT };

/* A case's rows the walk could not read, set aside once it is done (the
 * walk's statement is live meanwhile); more stop the walk until a later
 * leave takes them. */
#define DROP_DAMAGED_MAX 16
typedef struct drop_damaged {
    int64_t first_seq[DROP_DAMAGED_MAX];
    char recipient[DROP_DAMAGED_MAX][SCHAKEL_MAX_PRINCIPAL_LEN + 1]; /* "": unreadable */
    char why[DROP_DAMAGED_MAX][STORE_SET_ASIDE_REASON_LEN];
    size_t n;
} drop_damaged_t;

/* Remove the pending deliveries of the current row of `rows` (the walk),
 * each as store_mailbox_row_remove does: 0 with *dropped counted, or -1.
 * The walk reads on: a removal marks in memory, the row is written at the
 * commit, so no row moves under it. A row that does not read (first_seq,
 * n, recipient, or its rule lines and counts as no broker writes them) is
 * noted in *damaged, to be set aside after the walk (0), so that one
 * damaged row cannot stop a member's leave. */
static int drop_row(store_t *store, sqlite3_stmt *rows, int64_t now, store_expired_fn fn, void *arg,
                    int *dropped, drop_damaged_t *damaged)
{
    int64_t first = sqlite3_column_int64(rows, DROP_FIRST_SEQ);
    int64_t n = sqlite3_column_int64(rows, DROP_N);
    const char *text = store_column_text(rows, DROP_RECIPIENT);
    char recipient[SCHAKEL_MAX_PRINCIPAL_LEN + 1] = "";
    if (text != NULL && strlen(text) < sizeof recipient)
        strcpy(recipient, text);
    int rc = 0;
    /* a case's row is a delivery of one: more would reach into the seqs of
     * the member's next row, which is not the case's */
    if (!mailbox_span_ok(first, n) || n != 1 || recipient[0] == 0) {
        store_refuse(store, "case_drop_deliveries",
                     "damaged row: first_seq, n or recipient as no broker writes them");
        rc = -1;
    }
    for (int64_t i = 0; rc == 0 && i < n && *dropped < INT_MAX; i++) {
        int removed =
            store_mailbox_row_remove(store, recipient, (uint64_t)(first + i), now, fn, arg);
        if (removed < 0)
            rc = -1;
        else
            *dropped += removed;
    }
    if (rc == 0)
        return 0;
    if (store->last_rc != 0 || strstr(store->errmsg, "damaged row") == NULL || first <= 0 ||
        damaged->n == DROP_DAMAGED_MAX)
        return -1;
    damaged->first_seq[damaged->n] = first;
    strcpy(damaged->recipient[damaged->n], recipient);
    snprintf(damaged->why[damaged->n], sizeof damaged->why[0], "%.250s", store->errmsg);
    damaged->n++;
    return 0;
}

/* Set the rows the walk could not read aside whole (store_mailbox_aside.c),
 * each listed for the caller, which records their deliveries
 * (store_mailbox_row_set_aside_take). 0 or -1. */
static int drop_set_aside(store_t *store, const drop_damaged_t *damaged, int64_t now)
{
    for (size_t k = 0; k < damaged->n; k++) {
        store_mailbox_aside_t aside;
        int rc = damaged->recipient[k][0] != 0
                     ? store_mailbox_row_set_aside(store, damaged->recipient[k],
                                                   (uint64_t)damaged->first_seq[k], now, &aside)
                     : (store_mailbox_row_set_aside_unread(store, damaged->first_seq[k], now,
                                                           damaged->why[k]) == 0
                            ? 1
                            : -1);
        if (rc < 0)
            return -1;
        if (rc == 0) { /* it reads after all: what the walk met stands */
            store_refuse(store, "case_drop_deliveries", damaged->why[k]);
            return -1;
        }
        if (store_mailbox_aside_list(store, damaged->first_seq[k]) != 0)
            return -1;
    }
    return 0;
}

/* Cost: one range of mailbox_by_case (the case's rows of that principal,
 * or of the partner's principals), and per pending delivery what
 * store_mailbox_row_remove costs (a descent of mailbox_by_recipient, the
 * rule lines parsed, a tombstone): O(k log n) for k removed. */
int store_mailbox_row_case_drop_at(store_t *store, const char *case_id, const char *recipient,
                                   int64_t now, store_expired_fn fn, void *arg)
{
    if (case_enter(store, "case_drop_deliveries") != 0)
        return -1;
    if (case_id == NULL || recipient == NULL) {
        store_refuse(store, "case_drop_deliveries", "case id and recipient are required");
        return -1;
    }
    sqlite3_stmt *rows = stmt_on(store, MB_CASE_DROP_ROWS, case_id, NULL);
    if (rows == NULL || store_bind_text(store, rows, 2, recipient) != 0) {
        if (rows != NULL)
            store_stmt_finish(rows);
        return -1;
    }
    drop_damaged_t damaged; /* about 6 KB */
    damaged.n = 0;
    int dropped = 0, rc = SQLITE_DONE, result = 0;
    while (result == 0 && dropped < INT_MAX && (rc = sqlite3_step(rows)) == SQLITE_ROW)
        result = drop_row(store, rows, now, fn, arg, &dropped, &damaged);
    if (result == 0 && dropped < INT_MAX && rc != SQLITE_DONE) {
        store_fail(store, "case_drop_deliveries");
        result = -1;
    }
    store_stmt_finish(rows);
    if (result == 0)
        result = drop_set_aside(store, &damaged, now);
    return result == 0 ? dropped : -1;
}

/* The broker's clock is not passed here, so the tombstones take the wall
 * clock's; nothing reads expired_at back but operators. */
int store_mailbox_row_case_drop(store_t *store, const char *case_id, const char *recipient)
{
    return store_mailbox_row_case_drop_at(store, case_id, recipient, (int64_t)time(NULL), NULL,
                                          NULL);
}

/* ------------------------------------------------------------------ what a publish's rows hold */

/* The item indexes of one publish that its waiting rows (deliveries not
 * done, this transaction's marks included) and its set-aside rows (their
 * deliveries not done when set aside) refer to, and for one index asked
 * about the latest expiry among them. A row that cannot be read as the
 * broker writes it may refer to any of the publish's items: `unknown`,
 * until its own expiry for a set-aside row (when that reads as one), else
 * for as long as the item is kept now (unknown_until INT64_MAX). */
typedef struct publish_refs {
    int64_t publish_id;                /* of the refs below; 0: none read yet */
    uint8_t ref[(UINT16_MAX + 1) / 8]; /* bit per item index */
    int unknown;
    int64_t unknown_until;
    int64_t latest;  /* of want_index: INT64_MIN when nothing refers to it */
    long want_index; /* -1: no latest wanted */
} publish_refs_t;

static void refs_mark(publish_refs_t *refs, uint32_t index, int64_t expires_at)
{
    refs->ref[index / 8] |= (uint8_t)(1u << (index % 8));
    if ((long)index == refs->want_index && expires_at > refs->latest)
        refs->latest = expires_at;
}

/* Columns of MB_PUBLISH_ROWS and MB_PUBLISH_SET_ASIDE_ROWS (REF_RECIPIENT:
 * of MB_PUBLISH_ROWS only). */
enum {
    REF_N,
    REF_DONE,
    REF_ITEMS,
    REF_RULES,
    REF_EXPIRES_AT,
    REF_CASE_ID,
    REF_FIRST_SEQ,
    REF_RECIPIENT
};

/* n, done and items of a row as the broker writes them: 0 with them set,
 * -1 (damage). */
static int refs_row_read(sqlite3_stmt *stmt, int64_t *n, const uint8_t **done,
                         const uint8_t **items)
{
    size_t items_len = 0, done_len = 0;
    *n = sqlite3_column_int64(stmt, REF_N);
    *items = store_column_bytes(stmt, REF_ITEMS, &items_len);
    int done_type = sqlite3_column_type(stmt, REF_DONE);
    *done = done_type == SQLITE_BLOB ? store_column_bytes(stmt, REF_DONE, &done_len) : NULL;
    if (sqlite3_column_type(stmt, REF_N) != SQLITE_INTEGER || *n < 1 ||
        *n > (int64_t)STORE_MAILBOX_MAX_N || *items == NULL || items_len != 4 * (size_t)*n ||
        (done_type != SQLITE_NULL && (*done == NULL || done_len != ((size_t)*n + 7) / 8)))
        return -1;
    return 0;
}

/* One waiting row of the publish into refs: its pending deliveries' items,
 * with their rule's expiry when refs wants one. -1 for damage. */
static int refs_waiting_row(store_t *store, sqlite3_stmt *stmt, publish_refs_t *refs)
{
    int64_t n = 0;
    const uint8_t *done = NULL, *items = NULL;
    if (refs_row_read(stmt, &n, &done, &items) != 0 ||
        !mailbox_span_ok(sqlite3_column_int64(stmt, REF_FIRST_SEQ), n))
        return -1;
    const uint8_t *marked = store_mailbox_marked(store, sqlite3_column_int64(stmt, REF_FIRST_SEQ));
    if (marked != NULL)
        done = marked;
    mailbox_rules_t rules = {NULL, NULL, 0, 0};
    if (refs->want_index >= 0) {
        size_t len = 0;
        const uint8_t *text = store_column_bytes(stmt, REF_RULES, &len);
        if (text == NULL || store_mailbox_rules_parse((const char *)text, len, (size_t)n, &rules))
            return -1; /* out of memory too: read as damage, nothing is freed by it */
    }
    int rc = 0;
    for (uint32_t i = 0; i < (uint32_t)n && rc == 0; i++) {
        if (mailbox_done_bit(done, i))
            continue;
        uint32_t slot = mailbox_rule_slot_at(items, i);
        if (refs->want_index >= 0 && slot >= rules.n_slots)
            rc = -1;
        else
            refs_mark(refs, mailbox_item_index_at(items, i),
                      refs->want_index >= 0 ? rules.slots[slot].expires_at : INT64_MIN);
    }
    store_mailbox_rules_free(&rules);
    return rc;
}

/* A set-aside row's expires_at: one that is no integer is due now (as
 * store_expire takes it), so it holds no item's expiry up. */
static int64_t set_aside_expiry(sqlite3_stmt *stmt)
{
    return sqlite3_column_type(stmt, REF_EXPIRES_AT) == SQLITE_INTEGER
               ? sqlite3_column_int64(stmt, REF_EXPIRES_AT)
               : INT64_MIN;
}

/* One set-aside row of the publish into refs: its deliveries not done when
 * it was set aside, with the row's expires_at (each delivery's own is in
 * rule lines that may be the damage). -1 for damage. */
static int refs_set_aside_row(sqlite3_stmt *stmt, publish_refs_t *refs)
{
    int64_t n = 0;
    const uint8_t *done = NULL, *items = NULL;
    if (refs_row_read(stmt, &n, &done, &items) != 0)
        return -1;
    int64_t expires_at = set_aside_expiry(stmt);
    for (uint32_t i = 0; i < (uint32_t)n; i++)
        if (!mailbox_done_bit(done, i))
            refs_mark(refs, mailbox_item_index_at(items, i), expires_at);
    return 0;
}

/* Walk one of the publish's row statements into refs, passing over the
 * rows of case skip_case (may be NULL). 0 or -1 (an SQLite failure). */
static int refs_walk(store_t *store, enum mailbox_stmt_id id, publish_refs_t *refs,
                     const char *skip_case, const char *what)
{
    sqlite3_stmt *stmt = store_mailbox_stmt(store, id);
    if (stmt == NULL)
        return -1;
    if (store_bind_int64(store, stmt, 1, refs->publish_id) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *case_id = store_column_text(stmt, REF_CASE_ID);
        if (skip_case != NULL && case_id != NULL && strcmp(case_id, skip_case) == 0)
            continue;
        if ((id == MB_PUBLISH_ROWS ? refs_waiting_row(store, stmt, refs)
                                   : refs_set_aside_row(stmt, refs)) != 0) {
            int64_t until = id == MB_PUBLISH_ROWS ? INT64_MAX : set_aside_expiry(stmt);
            refs->unknown = 1;
            refs->unknown_until = until > refs->unknown_until ? until : refs->unknown_until;
        }
    }
    if (rc != SQLITE_DONE)
        store_fail(store, what);
    store_stmt_finish(stmt);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* What the rows of publish_id, but those of case skip_case, refer to (and
 * for want_index, the latest expiry). 0 or -1. Cost: a range of
 * mailbox_by_publish (a row per recipient) and of
 * mailbox_set_aside_by_publish, each row's done and items read (its rule
 * lines parsed only for a latest expiry). */
static int publish_refs_read(store_t *store, int64_t publish_id, const char *skip_case,
                             long want_index, publish_refs_t *refs, const char *what)
{
    memset(refs->ref, 0, sizeof refs->ref);
    refs->publish_id = publish_id;
    refs->unknown = 0;
    refs->unknown_until = INT64_MIN;
    refs->latest = INT64_MIN;
    refs->want_index = want_index;
    if (refs_walk(store, MB_PUBLISH_ROWS, refs, skip_case, what) != 0 ||
        refs_walk(store, MB_PUBLISH_SET_ASIDE_ROWS, refs, skip_case, what) != 0) {
        refs->publish_id = 0;
        return -1;
    }
    return 0;
}

static int refs_has(const publish_refs_t *refs, int64_t index)
{
    return refs->unknown || index < 0 || index > UINT16_MAX ||
           (refs->ref[index / 8] >> (index % 8)) & 1;
}

/* ------------------------------------------------------------------ a case closes or reopens */

/* Columns of MB_CASE_ROW_NEXT. */
enum case_row_col {
    CR_FIRST_SEQ,
    CR_N,
    CR_RECIPIENT,
    CR_PUBLISH_ID,
    CR_FIRST_ITEM_SEQ,
    CR_SENDER,
    CR_SENDER_PARTNER,
    CR_MESSAGE_ID,
    CR_ACCEPTED_AT,
    CR_RULES,
    CR_ITEMS,
    CR_BODY,
    CR_CASE_ID,
    CR_IS_CASE_EVENT
};

/* The clear columns of the current row of `next` as its seal binds them,
 * and its rule lines parsed: 0, or -1 for a row no broker writes (its
 * columns' types or sizes, its rule lines) or out of memory (-2). */
static int case_row_read(sqlite3_stmt *next, mailbox_row_clear_t *c, mailbox_rules_t *rules)
{
    size_t id_len = 0, rules_len = 0, items_len = 0;
    int64_t n = sqlite3_column_int64(next, CR_N);
    *c = (mailbox_row_clear_t){
        .first_seq = sqlite3_column_int64(next, CR_FIRST_SEQ),
        .recipient = store_column_text(next, CR_RECIPIENT),
        .publish_id = sqlite3_column_int64(next, CR_PUBLISH_ID),
        .first_item_seq = sqlite3_column_int64(next, CR_FIRST_ITEM_SEQ),
        .sender = store_column_text(next, CR_SENDER),
        .sender_partner = store_column_text(next, CR_SENDER_PARTNER),
        .message_id = store_column_bytes(next, CR_MESSAGE_ID, &id_len),
        .accepted_at = sqlite3_column_int64(next, CR_ACCEPTED_AT),
        .rules = (const char *)store_column_bytes(next, CR_RULES, &rules_len),
        .items = store_column_bytes(next, CR_ITEMS, &items_len),
        .case_id = store_column_text(next, CR_CASE_ID),
        .is_case_event = sqlite3_column_int64(next, CR_IS_CASE_EVENT) != 0,
    };
    c->rules_len = rules_len;
    static const int ints[] = {CR_FIRST_SEQ,  CR_N,           CR_FIRST_ITEM_SEQ,
                               CR_PUBLISH_ID, CR_ACCEPTED_AT, CR_IS_CASE_EVENT};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (sqlite3_column_type(next, ints[i]) != SQLITE_INTEGER)
            return -1;
    if (!mailbox_span_ok(c->first_seq, n) || !mailbox_item_seq_ok(c->first_item_seq) ||
        c->recipient == NULL || c->sender == NULL || c->sender_partner == NULL ||
        c->message_id == NULL || id_len != STORE_MESSAGE_ID_BYTES || c->items == NULL ||
        items_len != 4 * (size_t)n || c->rules == NULL || c->case_id == NULL)
        return -1;
    c->n = (uint32_t)n;
    int parsed = store_mailbox_rules_parse(c->rules, rules_len, (size_t)n, rules);
    for (uint32_t i = 0; parsed == 0 && i < c->n; i++)
        if (mailbox_rule_slot_at(c->items, i) >= rules->n_slots)
            parsed = -1;
    return parsed;
}

/* The rule lines of `rules` with every slot's expiry set to expires_at,
 * malloc'd into *text. 0, or -1 when memory runs out. */
static int case_rules_moved(const mailbox_rules_t *rules, int64_t expires_at, char **text,
                            size_t *len)
{
    store_mailbox_rule_t *moved = calloc(rules->n_slots, sizeof *moved);
    if (moved == NULL)
        return -1;
    for (size_t i = 0; i < rules->n_slots; i++)
        moved[i] = (store_mailbox_rule_t){rules->slots[i].rule_id,
                                          rules->slots[i].rule_hash,
                                          rules->slots[i].purpose,
                                          rules->slots[i].legal_basis,
                                          expires_at,
                                          0};
    int rc = store_mailbox_rules_encode(moved, rules->n_slots, text, len);
    free(moved);
    return rc;
}

/* Bind the current row of `next` rewritten for expires_at into `set`
 * (?2 rules, ?3 body: each delivery's rule line moved, the body opened
 * under the old associated data and sealed under the new). 0 when bound;
 * 1 when the row cannot be re-sealed (damaged, or its body does not
 * authenticate: errmsg names it), ?2 and ?3 then NULL so that it keeps
 * its rule lines and body; -1 on error. *text holds the new rule lines
 * (the caller frees it after the step). */
static int case_row_reseal(store_t *store, sqlite3_stmt *next, sqlite3_stmt *set,
                           int64_t expires_at, char **text)
{
    mailbox_row_clear_t c;
    mailbox_rules_t rules = {NULL, NULL, 0, 0};
    store_seal_ad_t old_ad, new_ad;
    size_t len = 0;
    int parsed = case_row_read(next, &c, &rules), damaged = parsed != 0, rc = 1;
    if (parsed == -2 || (parsed == 0 && case_rules_moved(&rules, expires_at, text, &len) != 0)) {
        store_mailbox_rules_free(&rules);
        store_refuse(store, "case_set_expiry", "out of memory");
        return -1;
    }
    if (!damaged && store_mailbox_row_ad(&old_ad, &c) == 0) {
        c.rules = *text;
        c.rules_len = len;
        damaged = store_mailbox_row_ad(&new_ad, &c) != 0;
        if (!damaged)
            rc = store_seal_reseal(store, next, CR_BODY, "mailbox row", c.first_seq, &old_ad,
                                   &new_ad, set, 3);
    } else {
        damaged = 1;
    }
    store_mailbox_rules_free(&rules);
    if (rc == 0)
        return store_bind_text(store, set, 2, *text);
    if (rc == 1 && damaged) { /* store_seal_reseal names a body that does not open */
        store->last_rc = 0;
        snprintf(store->errmsg, sizeof store->errmsg,
                 "damaged row: mailbox row %" PRId64 ": columns or rule lines no broker writes",
                 (int64_t)sqlite3_column_int64(next, CR_FIRST_SEQ));
    }
    if (rc == 1 && (store_check_rc(store, sqlite3_bind_null(set, 2), "case_set_expiry") != 0 ||
                    store_check_rc(store, sqlite3_bind_null(set, 3), "case_set_expiry") != 0))
        return -1;
    return rc;
}

/* Where the walk of a case's rows is: past this recipient and first_seq. */
typedef struct case_cursor {
    char recipient[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    int64_t first_seq;
} case_cursor_t;

/* The case's next row after the cursor, its rule lines and body re-sealed
 * for expires_at (or kept: *kept counts those) and its expires_at set, the
 * cursor moved past it. 1 when one was done, 0 when none is left, -1. The
 * walk's SELECT is reset before the row is rewritten. */
static int case_row_next(store_t *store, const char *case_id, int64_t expires_at, case_cursor_t *at,
                         int *kept)
{
    sqlite3_stmt *next = store_mailbox_stmt(store, MB_CASE_ROW_NEXT);
    sqlite3_stmt *set = store_mailbox_stmt(store, MB_CASE_ROW_SET);
    if (next == NULL || set == NULL)
        return -1;
    if (store_bind_text(store, next, 1, case_id) != 0 ||
        store_bind_text(store, next, 2, at->recipient) != 0 ||
        store_bind_int64(store, next, 3, at->first_seq) != 0) {
        store_stmt_finish(next);
        return -1;
    }
    int rc = sqlite3_step(next), result = -1;
    const char *recipient = rc == SQLITE_ROW ? store_column_text(next, CR_RECIPIENT) : NULL;
    char *text = NULL;
    if (rc == SQLITE_DONE) {
        result = 0;
    } else if (rc != SQLITE_ROW) {
        store_fail(store, "case_set_expiry");
    } else if (recipient == NULL || strlen(recipient) >= sizeof at->recipient) {
        store_refuse(store, "case_set_expiry", "damaged row: its recipient");
    } else {
        strcpy(at->recipient, recipient);
        at->first_seq = sqlite3_column_int64(next, CR_FIRST_SEQ);
        result = case_row_reseal(store, next, set, expires_at, &text);
    }
    store_stmt_finish(next);
    if (result < 0 || rc != SQLITE_ROW) {
        store_stmt_finish(set);
        free(text);
        return result;
    }
    if (result == 1 && *kept < INT_MAX)
        (*kept)++;
    int written = store_bind_int64(store, set, 1, at->first_seq) != 0 ||
                          store_bind_int64(store, set, 4, expires_at) != 0
                      ? -1
                      : store_stmt_run(store, set, "case_set_expiry");
    if (written != 0)
        store_stmt_finish(set);
    free(text);
    return written == 0 ? 1 : -1;
}

/* Columns of MB_CASE_ITEM_NEXT. */
enum { CI_ITEM_SEQ, CI_PUBLISH_ID, CI_ITEM_INDEX, CI_EXPIRES_AT, CI_OTHER_CASES };

/* The case's next item after *item_seq: its expiry set to expires_at, but
 * never below what else still needs it (a pending delivery of it outside
 * this case, a set-aside row of it, another case that links it; a row of
 * its publish that reads damaged: as publish_refs_t says). 1 when one was
 * done, 0 when none is left, -1. */
static int case_item_next(store_t *store, const char *case_id, int64_t expires_at,
                          int64_t *item_seq, publish_refs_t *refs)
{
    sqlite3_stmt *next = stmt_on(store, MB_CASE_ITEM_NEXT, case_id, item_seq);
    if (next == NULL)
        return -1;
    int rc = sqlite3_step(next);
    if (rc != SQLITE_ROW) {
        if (rc != SQLITE_DONE)
            store_fail(store, "case_set_expiry");
        store_stmt_finish(next);
        return rc == SQLITE_DONE ? 0 : -1;
    }
    *item_seq = sqlite3_column_int64(next, CI_ITEM_SEQ);
    int64_t publish_id = sqlite3_column_int64(next, CI_PUBLISH_ID);
    int64_t index = sqlite3_column_int64(next, CI_ITEM_INDEX);
    int64_t now_at = sqlite3_column_int64(next, CI_EXPIRES_AT);
    int64_t other = sqlite3_column_type(next, CI_OTHER_CASES) == SQLITE_INTEGER
                        ? sqlite3_column_int64(next, CI_OTHER_CASES)
                        : INT64_MIN;
    store_stmt_finish(next);
    if (publish_refs_read(store, publish_id, case_id,
                          index >= 0 && index <= UINT16_MAX ? index : -1, refs,
                          "case_set_expiry") != 0)
        return -1;
    int64_t keep = refs->latest > other ? refs->latest : other;
    int64_t held = refs->unknown_until == INT64_MAX ? now_at : refs->unknown_until;
    if (refs->unknown && held > keep)
        keep = held;
    sqlite3_stmt *set = store_mailbox_stmt(store, MB_CASE_ITEM_SET);
    if (set == NULL)
        return -1;
    if (store_bind_int64(store, set, 1, *item_seq) != 0 ||
        store_bind_int64(store, set, 2, keep > expires_at ? keep : expires_at) != 0) {
        store_stmt_finish(set);
        return -1;
    }
    return store_stmt_run(store, set, "case_set_expiry") == 0 ? 1 : -1;
}

/* Cost: the case row and its events (by case_id) rewritten; per row of
 * the case (one descent of mailbox_by_case each) its rule lines parsed and
 * encoded again, two BLAKE2b passes, a decryption and an encryption of its
 * body and one rewrite; per item of the case (one descent of case_items
 * each) its publish's rows read through mailbox_by_publish and
 * mailbox_set_aside_by_publish (a row per recipient, their rule lines
 * parsed) and one rewrite; the case's set-aside rows and the publishes of
 * its items rewritten: O((events + rows + items x recipients) log n). */
int store_mailbox_row_case_set_expiry(store_t *store, const char *case_id, int64_t expires_at)
{
    if (case_enter(store, "case_set_expiry") != 0)
        return -1;
    if (!case_id_plausible(case_id)) {
        store_refuse(store, "case_set_expiry", "no such case");
        return -1;
    }
    sqlite3_stmt *stmt = stmt_on(store, MB_CASE_EXPIRY_CASE, case_id, &expires_at);
    if (stmt == NULL || store_stmt_run(store, stmt, "case_set_expiry") != 0)
        return -1;
    if (sqlite3_changes(store->db) != 1) {
        store_refuse(store, "case_set_expiry", "no such case");
        return -1;
    }
    if ((stmt = stmt_on(store, MB_CASE_EXPIRY_EVENTS, case_id, &expires_at)) == NULL ||
        store_stmt_run(store, stmt, "case_set_expiry") != 0)
        return -1;
    case_cursor_t at = {.recipient = "", .first_seq = 0};
    int kept = 0, found;
    while ((found = case_row_next(store, case_id, expires_at, &at, &kept)) > 0)
        ;
    if (found < 0)
        return -1;
    publish_refs_t *refs = malloc(sizeof *refs);
    if (refs == NULL) {
        store_refuse(store, "case_set_expiry", "out of memory");
        return -1;
    }
    int64_t item_seq = 0;
    while ((found = case_item_next(store, case_id, expires_at, &item_seq, refs)) > 0)
        ;
    free(refs);
    /* the rows set aside after the items: bounded by them; the publishes
     * never below their items */
    if (found < 0 ||
        (stmt = stmt_on(store, MB_CASE_EXPIRY_SET_ASIDE, case_id, &expires_at)) == NULL ||
        store_stmt_run(store, stmt, "case_set_expiry") != 0 ||
        (stmt = stmt_on(store, MB_CASE_EXPIRY_PUBLISHES, case_id, &expires_at)) == NULL ||
        store_stmt_run(store, stmt, "case_set_expiry") != 0)
        return -1;
    return kept;
}

/* ------------------------------------------------------------------ expiry: what nothing holds */

/* ------------------------------------------------------------------ rows the sweep cannot see */

/* Whether the waiting row at stmt (MB_PUBLISH_ROWS) hides from the
 * expiry sweep: a pending delivery due by its rule line (at most now)
 * while the row's expires_at, which the seal does not bind and the sweep
 * finds rows by, is later. No broker writes that (an ack does not raise
 * it, a case's close moves both). 1, 0 (not, or a row that does not read:
 * refs_walk keeps its items), -1 out of memory. */
static int row_hidden(store_t *store, sqlite3_stmt *stmt, int64_t now)
{
    int64_t n = 0;
    const uint8_t *done = NULL, *items = NULL;
    if (refs_row_read(stmt, &n, &done, &items) != 0 ||
        !mailbox_span_ok(sqlite3_column_int64(stmt, REF_FIRST_SEQ), n) ||
        sqlite3_column_int64(stmt, REF_EXPIRES_AT) <= now)
        return 0;
    const uint8_t *marked = store_mailbox_marked(store, sqlite3_column_int64(stmt, REF_FIRST_SEQ));
    if (marked != NULL)
        done = marked;
    size_t len = 0;
    const uint8_t *text = store_column_bytes(stmt, REF_RULES, &len);
    mailbox_rules_t rules = {NULL, NULL, 0, 0};
    if (text == NULL)
        return 0;
    int parsed = store_mailbox_rules_parse((const char *)text, len, (size_t)n, &rules);
    if (parsed != 0)
        return parsed == -2 ? -1 : 0;
    int hidden = 0;
    for (uint32_t i = 0; i < (uint32_t)n && !hidden; i++) {
        uint32_t slot = mailbox_rule_slot_at(items, i);
        hidden = !mailbox_done_bit(done, i) && slot < rules.n_slots &&
                 rules.slots[slot].expires_at <= now;
    }
    store_mailbox_rules_free(&rules);
    return hidden;
}

/* The next waiting row of publish_id that hides from the sweep
 * (row_hidden): its first_seq and recipient. 1, 0 when none, -1. */
static int hidden_row_find(store_t *store, int64_t publish_id, int64_t now, int64_t *first_seq,
                           char recipient[SCHAKEL_MAX_PRINCIPAL_LEN + 1])
{
    sqlite3_stmt *stmt = store_mailbox_stmt(store, MB_PUBLISH_ROWS);
    if (stmt == NULL)
        return -1;
    if (store_bind_int64(store, stmt, 1, publish_id) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    int rc = SQLITE_DONE, found = 0;
    while (found == 0 && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *to = store_column_text(stmt, REF_RECIPIENT);
        if (to == NULL || strlen(to) > SCHAKEL_MAX_PRINCIPAL_LEN)
            continue; /* the sweep sets such a row aside when it is due */
        found = row_hidden(store, stmt, now);
        if (found == 1) {
            *first_seq = sqlite3_column_int64(stmt, REF_FIRST_SEQ);
            strcpy(recipient, to);
        } else if (found < 0) {
            store_refuse(store, "expire: items", "out of memory");
        }
    }
    if (found == 0 && rc != SQLITE_DONE) {
        store_fail(store, "expire: items");
        found = -1;
    }
    store_stmt_finish(stmt);
    return found;
}

/* Set aside every waiting row of publish_id that hides from the sweep: an
 * item of it is due and still held, so the sweep would keep it, and the
 * row, past every retention. Each set aside is counted for the caller's
 * entries (store_mailbox_expire_set_aside); its set-aside retention then
 * bounds it. 0 or -1. */
static int hidden_rows_set_aside(store_t *store, int64_t publish_id, int64_t now)
{
    int64_t first_seq = 0;
    char recipient[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    int found;
    while ((found = hidden_row_find(store, publish_id, now, &first_seq, recipient)) == 1) {
        store_mailbox_aside_t aside;
        int rc = store_mailbox_row_set_aside(store, recipient, (uint64_t)first_seq, now, &aside);
        if (rc < 0)
            return -1;
        if (rc == 0)
            break; /* read as sound after all (the scan is the judge): kept */
        if (store_mailbox_aside_list(store, (int64_t)aside.first_seq) != 0)
            return -1;
        store_mailbox_expire_aside_count(store);
    }
    return found < 0 ? -1 : 0;
}

/* Columns of MB_EXPIRE_ITEM_NEXT. */
enum { EI_SEQ, EI_PUBLISH_ID, EI_ITEM_INDEX, EI_EXPIRES_AT };

/* Remove item seq (its case links cascade) and take its bytes out of its
 * sender partner's sum. 0 or -1. */
static int expire_item_remove(store_t *store, int64_t seq)
{
    sqlite3_stmt *stmt = store_mailbox_stmt(store, MB_EXPIRE_ITEM_DELETE);
    if (stmt == NULL)
        return -1;
    if (store_bind_int64(store, stmt, 1, seq) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    int rc = sqlite3_step(stmt), result = 0;
    if (rc == SQLITE_ROW) {
        const char *sender = store_column_text(stmt, 0);
        /* A publish removed by hand under its items: its partner unknown,
         * the sums then say so (store_partner_bytes_verify). */
        if (sender != NULL &&
            store_bytes_change(store, sender, -sqlite3_column_int64(stmt, 1)) != 0)
            result = -1;
        else
            rc = sqlite3_step(stmt);
    }
    if (result == 0 && rc != SQLITE_DONE) {
        store_fail(store, "expire: items");
        result = -1;
    }
    store_stmt_finish(stmt);
    return result;
}

/* Cost: per item looked at, one step of items_by_expiry (a descent), and
 * per publish of those (in a row of them, as items of one publish due
 * together are) its rows read as publish_refs_read says; per item removed
 * its delete with the cascade of its case links. O(limit log n) when
 * publishes have few recipients. */
int store_mailbox_row_expire_items(store_t *store, int64_t now, size_t limit)
{
    if (case_enter(store, "expire") != 0)
        return -1;
    if (limit > INT_MAX)
        limit = INT_MAX; /* the count returned is an int */
    publish_refs_t *refs = malloc(sizeof *refs);
    if (refs == NULL) {
        store_refuse(store, "expire", "out of memory");
        return -1;
    }
    refs->publish_id = 0;
    mailbox_sweep_at_t *at = store_mailbox_sweep_at(store, MAILBOX_SWEEP_ITEMS);
    int64_t at_expiry = at != NULL ? at->expiry : INT64_MIN, at_seq = at != NULL ? at->key : 0;
    int64_t hidden_checked = 0;
    int removed = 0, result = 0, ended = 0;
    for (size_t looked = 0; looked < limit && result == 0; looked++) {
        sqlite3_stmt *next = store_mailbox_stmt(store, MB_EXPIRE_ITEM_NEXT);
        if (next == NULL || store_bind_int64(store, next, 1, now) != 0 ||
            store_bind_int64(store, next, 2, at_expiry) != 0 ||
            store_bind_int64(store, next, 3, at_seq) != 0) {
            if (next != NULL)
                store_stmt_finish(next);
            result = -1;
            break;
        }
        int rc = sqlite3_step(next);
        if (rc != SQLITE_ROW) {
            if (rc != SQLITE_DONE)
                store_fail(store, "expire: items");
            store_stmt_finish(next);
            result = rc == SQLITE_DONE ? 0 : -1;
            ended = 1;
            break;
        }
        at_seq = sqlite3_column_int64(next, EI_SEQ);
        at_expiry = sqlite3_column_int64(next, EI_EXPIRES_AT);
        int64_t publish_id = sqlite3_column_int64(next, EI_PUBLISH_ID);
        int64_t index = sqlite3_column_int64(next, EI_ITEM_INDEX);
        store_stmt_finish(next);
        if (refs->publish_id != publish_id &&
            publish_refs_read(store, publish_id, NULL, -1, refs, "expire: items") != 0) {
            result = -1;
        } else if (!refs_has(refs, index)) {
            result = expire_item_remove(store, at_seq);
            removed += result == 0;
        } else if (hidden_checked != publish_id) {
            /* due and still held: by a row the sweep has not reached yet,
             * or by one whose expires_at hides it from the sweep */
            hidden_checked = publish_id;
            result = hidden_rows_set_aside(store, publish_id, now);
        }
    }
    free(refs);
    if (result == 0 && at != NULL) /* the next step goes on here, or from the start */
        *at = ended ? (mailbox_sweep_at_t){INT64_MIN, 0} : (mailbox_sweep_at_t){at_expiry, at_seq};
    return result == 0 ? removed : -1;
}

/* One of the bounded DELETEs of due rows nothing references, from where
 * the last step of sweep `which` stopped: its window of `limit` due rows
 * after that place, the last of them (end_id) the next step's place when
 * the window is full, else the start. The number removed or -1. */
static int expire_unreferenced(store_t *store, enum mailbox_stmt_id id, enum mailbox_stmt_id end_id,
                               enum mailbox_sweep which, int64_t now, size_t limit,
                               const char *what)
{
    if (case_enter(store, "expire") != 0)
        return -1;
    if (limit > INT_MAX)
        limit = INT_MAX;
    if (limit == 0)
        return 0;
    mailbox_sweep_at_t *at = store_mailbox_sweep_at(store, which);
    mailbox_sweep_at_t from = at != NULL ? *at : (mailbox_sweep_at_t){INT64_MIN, 0};
    mailbox_sweep_at_t next = {INT64_MIN, 0};
    sqlite3_stmt *end = store_mailbox_stmt(store, end_id);
    if (end == NULL)
        return -1;
    if (store_bind_int64(store, end, 1, now) != 0 ||
        store_bind_int64(store, end, 2, (int64_t)limit) != 0 ||
        store_bind_int64(store, end, 3, from.expiry) != 0 ||
        store_bind_int64(store, end, 4, from.key) != 0) {
        store_stmt_finish(end);
        return -1;
    }
    int rc = sqlite3_step(end);
    if (rc == SQLITE_ROW)
        next = (mailbox_sweep_at_t){sqlite3_column_int64(end, 0), sqlite3_column_int64(end, 1)};
    else if (rc != SQLITE_DONE)
        store_fail(store, what);
    store_stmt_finish(end);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return -1;
    sqlite3_stmt *stmt = store_mailbox_stmt(store, id);
    if (stmt == NULL)
        return -1;
    if (store_bind_int64(store, stmt, 3, from.expiry) != 0 ||
        store_bind_int64(store, stmt, 4, from.key) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    int removed = store_expire_bounded(store, stmt, now, limit, what);
    if (removed >= 0 && at != NULL)
        *at = next;
    return removed;
}

/* Cost: up to limit candidates of publishes_by_expiry, each looked up in
 * items' (publish_id, item_index) index, mailbox_by_publish and
 * mailbox_set_aside_by_publish: O(limit log n). */
int store_mailbox_row_expire_publishes(store_t *store, int64_t now, size_t limit)
{
    return expire_unreferenced(store, MB_EXPIRE_PUBLISHES, MB_EXPIRE_PUBLISHES_END,
                               MAILBOX_SWEEP_PUBLISHES, now, limit, "expire: publishes");
}

/* Cost: up to limit candidates of cases_by_expiry, each looked up in its
 * events, mailbox_by_case and mailbox_set_aside_by_case, and its members
 * and item links cascading: O(limit log n + members + links). */
int store_mailbox_row_expire_cases(store_t *store, int64_t now, size_t limit)
{
    return expire_unreferenced(store, MB_EXPIRE_CASES, MB_EXPIRE_CASES_END, MAILBOX_SWEEP_CASES,
                               now, limit, "expire: cases");
}
