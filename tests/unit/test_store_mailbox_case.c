/*
 * test_store_mailbox_case.c — unit tests of broker/store_mailbox_case.c
 * (cases and expiry's references over the mailbox rows) against real
 * SQLite files, each test in its own mkdtemp() folder under /tmp, removed
 * afterwards: a leaving member's case rows removed with their tombstones,
 * a case's close and reopen re-sealing its rows, the items, publishes and
 * cases expiry may take, and rows altered behind the store's back. The
 * store key is random per run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>
#include <sqlite3.h>

#include "mailbox_fixture.h"
#include "schakel_limits.h"
#include "store.h"
#include "store_fixture.h"
#include "store_mailbox.h"

#define POLITIE2 "politie/anders"
#define OPEN STORE_CASE_OPEN_EXPIRY

static int setup(void **state)
{
    return mailbox_fixture_setup(state, "schakel-mbcase");
}

/* ------------------------------------------------------------------ publishes and rows */

static const store_mailbox_rule_t rules[3] = {
    {"gemeente-naar-politie", "aa11", "Signalering", "Gemeentewet art. 172", NOW + DAY, 0x3},
    {"gemeente-naar-zorg", "bb22", "Zorg", "Wmo 2015: art. 5.2", NOW + 30 * DAY, 0x5},
    {"casus-lid", "cc33", "Casusoverleg", "Convenant RIEC", OPEN, 0},
};

/* Add a row of p's items[0 .. n) for recipient, entry k under slot
 * slots[k] of rules[first_rule ..]; a case's row when case_id is set (one
 * item, its body "event <recipient>"). Inside the open transaction. Its
 * first seq. */
static int64_t row_add(store_t *store, const mailbox_published_t *p, const char *recipient,
                       const size_t *items, const uint32_t *slots, size_t n, size_t first_rule,
                       size_t n_rules, const char *case_id)
{
    store_mailbox_entry_t e[4];
    assert_true(n <= 4);
    int64_t first = store_delivery_seqs_reserve(store, n);
    assert_true(first > 0);
    char body[64];
    snprintf(body, sizeof body, "event %s", recipient);
    store_mailbox_row_t r =
        mailbox_fixture_row_of(p, recipient, (uint64_t)first, items, slots, n, e);
    r.rules = &rules[first_rule];
    r.n_rules = n_rules;
    r.case_id = case_id;
    r.is_case_event = case_id != NULL;
    r.body = case_id != NULL ? (const uint8_t *)body : NULL;
    r.body_len = case_id != NULL ? strlen(body) : 0;
    if (store_mailbox_row_add(store, &r) != 0)
        fail_msg("row add: %s", store_errmsg(store));
    return first;
}

/* A case's row of item k for recipient, under the case's rule. */
static int64_t case_row(store_t *store, const mailbox_published_t *p, size_t k,
                        const char *recipient, const char *case_id)
{
    static const uint32_t slot0[1] = {0};
    return row_add(store, p, recipient, &k, slot0, 1, 2, 1, case_id);
}

static void case_new(store_t *store, char case_id[SCHAKEL_CASE_ID_LEN + 1])
{
    assert_int_equal(store_case_create(store, "ondermijning", "politie", NULL, NOW, case_id), 0);
}

/* ------------------------------------------------------------------ scanning and removals */

typedef struct seen {
    size_t n;
    uint64_t seq[8];
    int64_t expires_at[8];
    char body[8][64];
} seen_t;

static int collect(const store_delivery_t *d, void *arg)
{
    seen_t *s = arg;
    assert_true(s->n < 8);
    s->seq[s->n] = d->seq;
    s->expires_at[s->n] = d->expires_at;
    snprintf(s->body[s->n], sizeof s->body[0], "%.*s", (int)d->body_len,
             d->body != NULL ? (const char *)d->body : "");
    s->n++;
    return 0;
}

static int scan(store_t *store, const char *recipient, seen_t *s)
{
    memset(s, 0, sizeof *s);
    return store_mailbox_row_scan(store, recipient, 0, 100, NULL, collect, s);
}

typedef struct removed {
    int calls;
    uint64_t seq[8];
    char recipient[8][72];
} removed_t;

static void on_removed(const store_expired_t *e, void *arg)
{
    removed_t *r = arg;
    assert_true(r->calls < 8);
    r->seq[r->calls] = e->seq;
    snprintf(r->recipient[r->calls], sizeof r->recipient[0], "%s", e->recipient);
    r->calls++;
}

/* ------------------------------------------------------------------ a member leaves */

/* The case's rows of a partner's principals go, each with its tombstone,
 * the callback and the count; another member's, another case's and a
 * signal's rows stay; written at the commit, gone with a rollback. */
static void test_case_drop(void **state)
{
    fixture_t *f = *state;
    char a[SCHAKEL_CASE_ID_LEN + 1], b[SCHAKEL_CASE_ID_LEN + 1];
    mailbox_published_t p;
    static const size_t item0[1] = {0};
    static const uint32_t slot0[1] = {0};
    assert_int_equal(store_begin(f->store), 0);
    case_new(f->store, a);
    case_new(f->store, b);
    mailbox_fixture_publish(f->store, 1, 2, &p);
    int64_t pol = case_row(f->store, &p, 0, POLITIE, a);
    int64_t pol2 = case_row(f->store, &p, 1, POLITIE2, a);
    int64_t zorg = case_row(f->store, &p, 0, ZORG, a);
    int64_t other_case = case_row(f->store, &p, 1, POLITIE, b);
    int64_t signal = row_add(f->store, &p, POLITIE, item0, slot0, 1, 0, 1, NULL);
    assert_int_equal(store_commit(f->store), 0);

    /* refusals */
    assert_int_equal(store_mailbox_row_case_drop(f->store, a, POLITIE), -1);
    assert_non_null(strstr(store_errmsg(f->store), "transaction"));
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_case_drop(f->store, NULL, POLITIE), -1);
    assert_int_equal(store_mailbox_row_case_drop(f->store, a, NULL), -1);
    assert_non_null(strstr(store_errmsg(f->store), "required"));
    /* nobody's, a prefix that is no partner, an unknown case */
    assert_int_equal(store_mailbox_row_case_drop(f->store, a, "om/officier"), 0);
    assert_int_equal(store_mailbox_row_case_drop(f->store, a, "politi"), 0);
    assert_int_equal(store_mailbox_row_case_drop(f->store, "C-00000077", POLITIE), 0);

    /* a rollback undoes it all */
    removed_t r = {0};
    assert_int_equal(store_mailbox_row_case_drop_at(f->store, a, "politie", NOW, on_removed, &r),
                     2);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 2);
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 3);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE2), 1);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM tombstones"), 0);

    /* this transaction's ack counts: that one is not removed again */
    memset(&r, 0, sizeof r);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, (uint64_t)pol), 1);
    assert_int_equal(store_mailbox_row_case_drop_at(f->store, a, "politie", NOW, on_removed, &r),
                     1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.seq[0], (uint64_t)pol2);
    assert_string_equal(r.recipient[0], POLITIE2);
    assert_int_equal(store_mailbox_row_case_drop_at(f->store, a, "politie", NOW, on_removed, &r),
                     0);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE2, (uint64_t)pol2), 0);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 2);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE2), 0);
    /* one principal by its own id */
    assert_int_equal(store_mailbox_row_case_drop(f->store, a, ZORG), 1);
    assert_int_equal(store_commit(f->store), 0);

    assert_int_equal(mailbox_fixture_raw_intf(f->path,
                                              "SELECT count(*) FROM tombstones WHERE seq = %" PRId64
                                              " AND recipient = '" POLITIE2
                                              "' AND rule_id = 'casus-lid'",
                                              pol2),
                     1);
    assert_int_equal(mailbox_fixture_raw_intf(
                         f->path, "SELECT count(*) FROM tombstones WHERE seq = %" PRId64, zorg),
                     1);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM tombstones"),
                     2); /* not the acked */
    assert_int_equal(
        mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox WHERE case_id IS NOT NULL"),
        1);
    seen_t s;
    assert_int_equal(scan(f->store, POLITIE, &s), 2);
    assert_int_equal(s.seq[0], (uint64_t)other_case);
    assert_int_equal(s.seq[1], (uint64_t)signal);
    assert_int_equal(scan(f->store, ZORG, &s), 0);
}

/* A case row whose seqs no broker writes is set aside whole by the leave,
 * its delivery left for the caller to record; the other member's stays. */
static void test_case_drop_damaged(void **state)
{
    fixture_t *f = *state;
    char a[SCHAKEL_CASE_ID_LEN + 1];
    mailbox_published_t p;
    assert_int_equal(store_begin(f->store), 0);
    case_new(f->store, a);
    mailbox_fixture_publish(f->store, 1, 1, &p);
    int64_t pol = case_row(f->store, &p, 0, POLITIE, a);
    (void)case_row(f->store, &p, 0, ZORG, a);
    assert_int_equal(store_commit(f->store), 0);
    mailbox_fixture_raw_execf(f->path,
                              "PRAGMA ignore_check_constraints = ON;"
                              "UPDATE mailbox SET n = 2000 WHERE first_seq = %" PRId64,
                              pol);
    /* the damaged row cannot be removed delivery by delivery: it is set
     * aside whole, and the leave goes on (the other member's row stays) */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_case_drop(f->store, a, "politie"), 0);
    assert_int_equal(store_mailbox_row_case_drop(f->store, a, ZORG), 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM tombstones"), 1);
    assert_int_equal(mailbox_fixture_raw_intf(f->path,
                                              "SELECT count(*) FROM mailbox_set_aside"
                                              " WHERE first_seq = %" PRId64,
                                              pol),
                     1);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox"), 0);
    uint64_t unrecorded[4];
    assert_int_equal(store_set_aside_unrecorded(f->store, 0, unrecorded, 4), 1);
    assert_int_equal(unrecorded[0], (uint64_t)pol);
}

/* A case row is a delivery of one: a case row whose n was altered to
 * more is damage, set aside at the leave, and the leave never reaches the
 * seqs after it, which are the member's next row's, not the case's. */
static void test_case_drop_never_reaches_the_next_row(void **state)
{
    fixture_t *f = *state;
    char a[SCHAKEL_CASE_ID_LEN + 1];
    mailbox_published_t p, q;
    static const size_t item0[1] = {0};
    static const uint32_t slot0[1] = {0};
    assert_int_equal(store_begin(f->store), 0);
    case_new(f->store, a);
    mailbox_fixture_publish(f->store, 1, 1, &p);
    int64_t pol = case_row(f->store, &p, 0, POLITIE, a);
    mailbox_fixture_publish(f->store, 2, 1, &q);
    int64_t next = row_add(f->store, &q, POLITIE, item0, slot0, 1, 0, 1, NULL);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(next, pol + 1);
    mailbox_fixture_raw_execf(f->path,
                              "PRAGMA ignore_check_constraints = ON;"
                              "UPDATE mailbox SET n = 2, pending = 2, items = items || items"
                              " WHERE first_seq = %" PRId64,
                              pol);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_case_drop(f->store, a, "politie"), 0);
    assert_int_equal(store_commit(f->store), 0);
    /* the case's row set aside, the next row as it was */
    assert_int_equal(mailbox_fixture_raw_intf(f->path,
                                              "SELECT count(*) FROM mailbox_set_aside"
                                              " WHERE first_seq = %" PRId64,
                                              pol),
                     1);
    assert_int_equal(mailbox_fixture_raw_intf(
                         f->path, "SELECT pending FROM mailbox WHERE first_seq = %" PRId64, next),
                     1);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM tombstones"), 0);
}

/* ------------------------------------------------------------------ a case closes or reopens */

/* Close, then reopen: every case row's deliveries take the case's expiry,
 * the row is re-sealed and still opens; the case, its items and their
 * publish follow, an item never below a pending delivery of it outside
 * the case (this transaction's acks counted), exactly per item. */
static void test_case_set_expiry(void **state)
{
    fixture_t *f = *state;
    char a[SCHAKEL_CASE_ID_LEN + 1], b[SCHAKEL_CASE_ID_LEN + 1];
    mailbox_published_t p;
    static const size_t item1[1] = {1}, item0[1] = {0};
    static const uint32_t slot0[1] = {0};
    assert_int_equal(store_begin(f->store), 0);
    case_new(f->store, a);
    case_new(f->store, b);
    mailbox_fixture_publish(f->store, 1, 3, &p);
    int64_t pol = case_row(f->store, &p, 0, POLITIE, a);
    int64_t zorg = case_row(f->store, &p, 1, ZORG, a);
    (void)case_row(f->store, &p, 2, ZORG, b); /* another case's: untouched */
    /* signals of items 1 and 0, outside the case, to POLITIE2 */
    int64_t sig1 = row_add(f->store, &p, POLITIE2, item1, slot0, 1, 1, 1, NULL);
    int64_t sig0 = row_add(f->store, &p, POLITIE2, item0, slot0, 1, 0, 1, NULL);
    assert_int_equal(store_case_event_add(f->store, a, 1, NOW, (const uint8_t *)"e", 1), 0);
    assert_int_equal(store_commit(f->store), 0);

    assert_int_equal(store_mailbox_row_case_set_expiry(f->store, a, NOW + 10), -1);
    assert_non_null(strstr(store_errmsg(f->store), "transaction"));
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_case_set_expiry(f->store, "C-00000077", NOW + 10), -1);
    assert_non_null(strstr(store_errmsg(f->store), "no such case"));
    assert_int_equal(store_mailbox_row_case_set_expiry(f->store, NULL, NOW + 10), -1);
    assert_int_equal(store_mailbox_row_case_set_expiry(f->store, "C-1", NOW + 10), -1);
    /* the signal of item 0 acked in this transaction: it holds item 0 no more */
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE2, (uint64_t)sig0), 1);
    assert_int_equal(store_mailbox_row_case_set_expiry(f->store, a, NOW + 10), 0);
    assert_int_equal(store_commit(f->store), 0);

    seen_t s;
    assert_int_equal(scan(f->store, POLITIE, &s), 1);
    assert_int_equal(s.seq[0], (uint64_t)pol);
    assert_int_equal(s.expires_at[0], NOW + 10);
    assert_string_equal(s.body[0], "event " POLITIE);
    assert_int_equal(scan(f->store, ZORG, &s), 2);
    assert_int_equal(s.seq[0], (uint64_t)zorg);
    assert_int_equal(s.expires_at[0], NOW + 10);
    assert_string_equal(s.body[0], "event " ZORG);
    assert_int_equal(s.expires_at[1], OPEN);
    assert_int_equal(mailbox_fixture_raw_intf(
                         f->path, "SELECT expires_at FROM mailbox WHERE first_seq = %" PRId64, pol),
                     NOW + 10);
    assert_int_equal(
        mailbox_fixture_raw_intf(f->path, "SELECT expires_at FROM cases WHERE num = %d", 1),
        NOW + 10);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT expires_at FROM case_events"),
                     NOW + 10);
    /* item 0: nothing else waits for it; item 1: the signal to POLITIE2
     * does, under its own rule; item 2: case b's */
    assert_int_equal(mailbox_fixture_raw_intf(f->path,
                                              "SELECT expires_at FROM items WHERE seq = %" PRId64,
                                              p.item_seq[0]),
                     NOW + 10);
    assert_int_equal(mailbox_fixture_raw_intf(f->path,
                                              "SELECT expires_at FROM items WHERE seq = %" PRId64,
                                              p.item_seq[1]),
                     NOW + 30 * DAY);
    assert_int_equal(mailbox_fixture_raw_intf(f->path,
                                              "SELECT expires_at FROM items WHERE seq = %" PRId64,
                                              p.item_seq[2]),
                     OPEN);
    assert_int_equal(mailbox_fixture_raw_intf(
                         f->path, "SELECT count(*) FROM mailbox WHERE first_seq = %" PRId64, sig0),
                     0);
    /* expiry takes the closed case's rows then */
    removed_t r = {0};
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire(f->store, NOW + 10, 10, on_removed, &r), 2);
    assert_int_equal(store_rollback(f->store), 0);

    /* reopened: open again, still opening */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_case_set_expiry(f->store, a, OPEN), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(scan(f->store, POLITIE, &s), 1);
    assert_int_equal(s.expires_at[0], OPEN);
    assert_string_equal(s.body[0], "event " POLITIE);
    assert_int_equal(mailbox_fixture_raw_intf(f->path,
                                              "SELECT expires_at FROM items WHERE seq = %" PRId64,
                                              p.item_seq[0]),
                     OPEN);
    assert_int_equal(
        mailbox_fixture_raw_intf(f->path, "SELECT expires_at FROM publishes WHERE id = %" PRId64,
                                 p.publish_id),
        OPEN);
    assert_int_equal(scan(f->store, POLITIE2, &s), 1);
    assert_int_equal(s.seq[0], (uint64_t)sig1);
}

/* A case row that does not re-seal keeps its rule lines and body, takes
 * the new expiry, and does not hold up the close; the others re-seal. */
static void test_case_set_expiry_damaged(void **state)
{
    fixture_t *f = *state;
    char a[SCHAKEL_CASE_ID_LEN + 1];
    mailbox_published_t p;
    assert_int_equal(store_begin(f->store), 0);
    case_new(f->store, a);
    mailbox_fixture_publish(f->store, 1, 1, &p);
    int64_t pol = case_row(f->store, &p, 0, POLITIE, a);
    int64_t pol2 = case_row(f->store, &p, 0, POLITIE2, a);
    int64_t zorg = case_row(f->store, &p, 0, ZORG, a);
    assert_int_equal(store_commit(f->store), 0);
    /* walked by recipient: POLITIE2's first, POLITIE's last */
    mailbox_fixture_raw_execf(
        f->path, "UPDATE mailbox SET accepted_at = accepted_at + 1 WHERE first_seq = %" PRId64,
        pol2);
    mailbox_fixture_raw_execf(
        f->path, "UPDATE mailbox SET rules = 'garbage' WHERE first_seq = %" PRId64, pol);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_case_set_expiry(f->store, a, NOW + 10), 2);
    assert_non_null(strstr(store_errmsg(f->store), "damaged row"));
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path,
                                             "SELECT count(*) FROM mailbox WHERE expires_at = "
                                             "1750000010"),
                     3);
    /* the case's own damaged rows do not hold its item up */
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT expires_at FROM items"), NOW + 10);
    assert_int_equal(
        mailbox_fixture_raw_intf(
            f->path, "SELECT rules = 'garbage' FROM mailbox WHERE first_seq = %" PRId64, pol),
        1);
    seen_t s;
    assert_int_equal(scan(f->store, POLITIE, &s), -1);
    assert_non_null(strstr(store_errmsg(f->store), "damaged row"));
    assert_int_equal(scan(f->store, POLITIE2, &s), -1);
    assert_non_null(strstr(store_errmsg(f->store), "does not authenticate"));
    assert_int_equal(scan(f->store, ZORG, &s), 1);
    assert_int_equal(s.seq[0], (uint64_t)zorg);
    assert_int_equal(s.expires_at[0], NOW + 10);
    /* one whose body alone does not open: named by it */
    mailbox_fixture_raw_execf(f->path, "DELETE FROM mailbox WHERE first_seq = %" PRId64, pol);
    mailbox_fixture_raw_execf(f->path, "DELETE FROM mailbox WHERE first_seq = %" PRId64, pol2);
    mailbox_fixture_raw_execf(f->path, "UPDATE mailbox SET body = x'00' WHERE first_seq = %" PRId64,
                              zorg);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_case_set_expiry(f->store, a, NOW + 20), 1);
    assert_non_null(strstr(store_errmsg(f->store), "mailbox row"));
    assert_int_equal(store_commit(f->store), 0);
    /* kept as it was, its rule lines too: its expires_at only ever moves
     * earlier (the reopen's later one would hide it from the sweep) */
    assert_int_equal(
        mailbox_fixture_raw_intf(f->path,
                                 "SELECT expires_at FROM mailbox WHERE first_seq = %" PRId64, zorg),
        NOW + 10);
    assert_int_equal(
        mailbox_fixture_raw_intf(
            f->path, "SELECT body = x'00' FROM mailbox WHERE first_seq = %" PRId64, zorg),
        1);
    /* set aside, it follows the case still */
    mailbox_fixture_raw_execf(f->path,
                              "INSERT INTO mailbox_set_aside SELECT *, 1, 'test' FROM mailbox"
                              " WHERE first_seq = %" PRId64 "; DELETE FROM mailbox;",
                              zorg);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_case_set_expiry(f->store, a, NOW + 30), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT expires_at FROM mailbox_set_aside"),
                     NOW + 30);
}

/* A case's item is held by a set-aside row of it outside the case until
 * that row's own expiry (one that reads as none holds nothing), even when
 * its items column is damaged; by a damaged waiting row as it is. */
static void test_case_set_expiry_held(void **state)
{
    fixture_t *f = *state;
    char a[SCHAKEL_CASE_ID_LEN + 1];
    mailbox_published_t p;
    static const size_t item0[1] = {0};
    static const uint32_t slot0[1] = {0};
    assert_int_equal(store_begin(f->store), 0);
    case_new(f->store, a);
    mailbox_fixture_publish(f->store, 1, 1, &p);
    (void)case_row(f->store, &p, 0, ZORG, a);
    int64_t sig = row_add(f->store, &p, POLITIE, item0, slot0, 1, 0, 1, NULL);
    assert_int_equal(store_commit(f->store), 0);
    mailbox_fixture_raw_execf(f->path,
                              "INSERT INTO mailbox_set_aside SELECT *, 1, 'test' FROM mailbox"
                              " WHERE first_seq = %" PRId64
                              "; DELETE FROM mailbox WHERE case_id IS NULL;",
                              sig);
    static const struct {
        const char *damage; /* of the set-aside row */
        int64_t close_at, item_at;
    } steps[] = {
        {"UPDATE mailbox_set_aside SET n = n", NOW + 10, NOW + DAY},
        /* held to its own expiry, not to the item's as it is */
        {"UPDATE mailbox_set_aside SET items = x'00';"
         "UPDATE items SET expires_at = expires_at + 86400",
         NOW + 20, NOW + DAY},
        {"UPDATE mailbox_set_aside SET expires_at = 'soon'", NOW + 30, NOW + 30},
        {"DELETE FROM mailbox_set_aside", NOW + 40, NOW + 40},
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        store_fixture_raw_exec(f->path, steps[i].damage);
        assert_int_equal(store_begin(f->store), 0);
        assert_int_equal(store_mailbox_row_case_set_expiry(f->store, a, steps[i].close_at), 0);
        assert_int_equal(store_commit(f->store), 0);
        if (mailbox_fixture_raw_int(f->path, "SELECT expires_at FROM items") != steps[i].item_at)
            fail_msg("step %zu: item at %lld", i,
                     (long long)mailbox_fixture_raw_int(f->path, "SELECT expires_at FROM items"));
    }
    /* a waiting row of it outside the case, damaged: held as it is */
    assert_int_equal(store_begin(f->store), 0);
    (void)row_add(f->store, &p, POLITIE, item0, slot0, 1, 1, 1, NULL);
    assert_int_equal(store_commit(f->store), 0);
    store_fixture_raw_exec(f->path, "UPDATE mailbox SET done = x'0000' WHERE case_id IS NULL;"
                                    "UPDATE items SET expires_at = expires_at + 86400");
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_case_set_expiry(f->store, a, NOW + 50), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT expires_at FROM items"),
                     NOW + 31 * DAY);
}

/* ------------------------------------------------------------------ expiry's references */

static int64_t items_left(const char *path)
{
    return mailbox_fixture_raw_int(path, "SELECT count(*) FROM items");
}

static int item_there(const char *path, int64_t seq)
{
    return (int)mailbox_fixture_raw_intf(path, "SELECT count(*) FROM items WHERE seq = %" PRId64,
                                         seq);
}

/* Every item and publish due at once, behind the store's back. */
static void all_due(const char *path)
{
    store_fixture_raw_exec(path, "UPDATE items SET expires_at = 1; UPDATE publishes SET"
                                 " expires_at = 1");
}

/* An item of a publish stays while one delivery of it waits, in any
 * recipient's row, and goes when that is acked (in this transaction too):
 * per item, not per publish. Its bytes leave its sender's sum. The
 * publish goes once no row names it. */
static void test_expire_items_per_item(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p;
    static const size_t items3[3] = {0, 1, 2}, item1[1] = {1};
    static const uint32_t slots3[3] = {0, 0, 0}, slot0[1] = {0};
    assert_int_equal(store_begin(f->store), 0);
    mailbox_fixture_publish(f->store, 1, 3, &p);
    int64_t pol = row_add(f->store, &p, POLITIE, items3, slots3, 3, 0, 1, NULL);
    int64_t zorg = row_add(f->store, &p, ZORG, item1, slot0, 1, 1, 1, NULL);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, (uint64_t)pol), 1);
    assert_int_equal(store_commit(f->store), 0);
    all_due(f->path);

    assert_int_equal(store_mailbox_row_expire_items(f->store, NOW, 10), -1); /* no transaction */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire_items(f->store, 0, 10), 0); /* none due */
    assert_int_equal(store_mailbox_row_expire_items(f->store, NOW, 0), 0);
    /* item 0: its one delivery acked; 1 and 2 wait for POLITIE */
    assert_int_equal(store_mailbox_row_expire_items(f->store, NOW, 10), 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(item_there(f->path, p.item_seq[0]), 0);
    assert_int_equal(items_left(f->path), 2);

    /* POLITIE acks 1 and 2 in this transaction: 2 goes, 1 waits for ZORG */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, (uint64_t)pol + 1), 1);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, (uint64_t)pol + 2), 1);
    assert_int_equal(store_mailbox_row_expire_items(f->store, NOW, 10), 1);
    assert_int_equal(store_mailbox_row_expire_publishes(f->store, NOW, 10), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(item_there(f->path, p.item_seq[1]), 1);
    assert_int_equal(item_there(f->path, p.item_seq[2]), 0);

    /* ZORG's ack: the last item goes; the publish only once its row is
     * written away (its foreign key) */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, ZORG, (uint64_t)zorg), 1);
    assert_int_equal(store_mailbox_row_expire_items(f->store, NOW, 10), 1);
    assert_int_equal(store_mailbox_row_expire_publishes(f->store, NOW, 10), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(items_left(f->path), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox"), 0);
    assert_int_equal(
        mailbox_fixture_raw_int(f->path, "SELECT coalesce(sum(bytes), 0) FROM stored_bytes"), 0);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire_publishes(f->store, NOW, 10), 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM publishes"), 0);
}

/* The limit bounds the items looked at, the earliest due first; a
 * rollback puts back what was removed. */
static void test_expire_items_limit(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p, q;
    assert_int_equal(store_begin(f->store), 0);
    mailbox_fixture_publish(f->store, 1, 2, &p);
    mailbox_fixture_publish(f->store, 2, 2, &q);
    assert_int_equal(store_commit(f->store), 0);
    store_fixture_raw_exec(f->path, "UPDATE items SET expires_at = 10 - seq");
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire_items(f->store, NOW, 1), 1);
    assert_int_equal(item_there(f->path, q.item_seq[1]), 1); /* not committed: still there raw */
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(items_left(f->path), 4);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire_items(f->store, NOW, 3), 3);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(items_left(f->path), 1);
    assert_int_equal(item_there(f->path, p.item_seq[0]), 1); /* the latest due */
}

/* A set-aside row keeps the items of its deliveries not done; one whose
 * items or done no broker writes keeps every item of its publish, as
 * does a waiting row so damaged, without holding up the rest. */
static void test_expire_items_set_aside_and_damage(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p, q, d;
    static const size_t items2[2] = {0, 1};
    static const uint32_t slots2[2] = {0, 0};
    assert_int_equal(store_begin(f->store), 0);
    mailbox_fixture_publish(f->store, 1, 2, &p);
    mailbox_fixture_publish(f->store, 2, 2, &q);
    mailbox_fixture_publish(f->store, 3, 2, &d);
    int64_t pol = row_add(f->store, &p, POLITIE, items2, slots2, 2, 0, 1, NULL);
    int64_t zorg = row_add(f->store, &q, ZORG, items2, slots2, 2, 0, 1, NULL);
    int64_t bad = row_add(f->store, &d, POLITIE2, items2, slots2, 2, 0, 1, NULL);
    assert_int_equal(store_commit(f->store), 0);
    /* POLITIE's row set aside with its first delivery done; ZORG's set
     * aside with its items column damaged; POLITIE2's waiting row damaged */
    mailbox_fixture_raw_execf(
        f->path,
        "UPDATE mailbox SET done = x'01', pending = 1 WHERE first_seq = %" PRId64 ";"
        "INSERT INTO mailbox_set_aside SELECT *, 1, 'test' FROM mailbox"
        " WHERE first_seq = %" PRId64 ";",
        pol, pol);
    mailbox_fixture_raw_execf(f->path, "DELETE FROM mailbox WHERE first_seq = %" PRId64, pol);
    mailbox_fixture_raw_execf(f->path,
                              "INSERT INTO mailbox_set_aside SELECT *, 1, 'test' FROM mailbox"
                              " WHERE first_seq = %" PRId64,
                              zorg);
    mailbox_fixture_raw_execf(
        f->path, "UPDATE mailbox_set_aside SET items = x'00' WHERE first_seq = %" PRId64, zorg);
    mailbox_fixture_raw_execf(f->path, "DELETE FROM mailbox WHERE first_seq = %" PRId64, zorg);
    mailbox_fixture_raw_execf(f->path,
                              "UPDATE mailbox SET done = x'0000' WHERE first_seq = %" PRId64, bad);
    all_due(f->path);

    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire_items(f->store, NOW, 10), 1);
    assert_int_equal(store_mailbox_row_expire_publishes(f->store, NOW, 10), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(item_there(f->path, p.item_seq[0]), 0);
    assert_int_equal(item_there(f->path, p.item_seq[1]), 1);
    assert_int_equal(items_left(f->path), 5);

    /* the damaged rows gone, POLITIE's set-aside row all done: the rest
     * of the items go, and the publishes no row names */
    mailbox_fixture_raw_execf(f->path,
                              "DELETE FROM mailbox_set_aside WHERE first_seq <> %" PRId64
                              "; DELETE FROM mailbox;"
                              "UPDATE mailbox_set_aside SET done = x'03'",
                              pol);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire_items(f->store, NOW, 10), 5);
    assert_int_equal(store_mailbox_row_expire_publishes(f->store, NOW, 10), 2);
    assert_int_equal(store_commit(f->store), 0);
    store_fixture_raw_exec(f->path, "DELETE FROM mailbox_set_aside");
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire_publishes(f->store, NOW, 10), 1);
    assert_int_equal(store_commit(f->store), 0);
}

/* A due case goes once no row, waiting or set aside, names it; its item
 * links with it. */
static void test_expire_cases(void **state)
{
    fixture_t *f = *state;
    char a[SCHAKEL_CASE_ID_LEN + 1], b[SCHAKEL_CASE_ID_LEN + 1];
    mailbox_published_t p;
    assert_int_equal(store_begin(f->store), 0);
    case_new(f->store, a);
    case_new(f->store, b);
    mailbox_fixture_publish(f->store, 1, 1, &p);
    int64_t pol = case_row(f->store, &p, 0, POLITIE, a);
    int64_t zorg = case_row(f->store, &p, 0, ZORG, b);
    assert_int_equal(store_commit(f->store), 0);
    mailbox_fixture_raw_execf(f->path,
                              "INSERT INTO mailbox_set_aside SELECT *, 1, 'test' FROM mailbox"
                              " WHERE first_seq = %" PRId64,
                              zorg);
    mailbox_fixture_raw_execf(f->path, "DELETE FROM mailbox WHERE first_seq = %" PRId64, zorg);
    store_fixture_raw_exec(f->path, "UPDATE cases SET expires_at = 1");
    assert_int_equal(store_mailbox_row_expire_cases(f->store, NOW, 10), -1); /* no transaction */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire_cases(f->store, NOW, 10), 0);
    /* acked in this transaction: the row is still there until the commit */
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, (uint64_t)pol), 1);
    assert_int_equal(store_mailbox_row_expire_cases(f->store, NOW, 10), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire_cases(f->store, NOW, 10), 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM cases"), 1);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM case_items"),
                     1); /* b's */
    store_fixture_raw_exec(f->path, "DELETE FROM mailbox_set_aside");
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire_cases(f->store, NOW, 10), 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM cases"), 0);
}

/* A case's row that cannot be re-sealed at the close still gets the
 * close's expiry in its rule lines, not only in expires_at: the sweep
 * reads the rule lines, and would otherwise write the case's open expiry
 * back and keep the row, its case, item and publish for ever while the
 * member does not connect. */
static void test_unresealed_case_row_held_to_the_close(void **state)
{
    static const store_mailbox_rule_t member_rule = {
        "casus-lid", "cc33", "Casusoverleg", "Convenant RIEC", STORE_CASE_OPEN_EXPIRY, 0};
    fixture_t *f = *state;
    char case_id[SCHAKEL_CASE_ID_LEN + 1];
    mailbox_published_t p;
    static const char body[] = "event zorg";
    static const size_t items[1] = {0};
    static const uint32_t slots[1] = {0};
    store_mailbox_entry_t e[1];
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_case_create(f->store, "ondermijning", "politie", NULL, NOW, case_id), 0);
    mailbox_fixture_publish(f->store, 1, 1, &p);
    int64_t first = store_delivery_seqs_reserve(f->store, 1);
    store_mailbox_row_t r = mailbox_fixture_row_of(&p, ZORG, (uint64_t)first, items, slots, 1, e);
    r.rules = &member_rule;
    r.n_rules = 1;
    r.case_id = case_id;
    r.is_case_event = 1;
    r.body = (const uint8_t *)body;
    r.body_len = strlen(body);
    if (store_mailbox_row_add(f->store, &r) != 0)
        fail_msg("row add: %s", store_errmsg(f->store));
    assert_int_equal(store_commit(f->store), 0);
    /* the row's body rots; the case closes with 10 s of retention */
    mailbox_fixture_raw_execf(f->path, "UPDATE mailbox SET body = x'00' WHERE first_seq = %" PRId64,
                              first);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_case_set_expiry(f->store, case_id, NOW + 10), 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(
        mailbox_fixture_raw_intf(
            f->path, "SELECT expires_at FROM mailbox WHERE first_seq = %" PRId64, first),
        NOW + 10);
    /* the sweep after the case's retention */
    assert_int_equal(store_begin(f->store), 0);
    assert_true(store_expire(f->store, NOW + 11, SCHAKEL_EXPIRY_BATCH, NULL, NULL) >= 0);
    assert_int_equal(store_commit(f->store), 0);
    int64_t waiting = mailbox_fixture_raw_intf(
        f->path, "SELECT count(*) FROM mailbox WHERE first_seq = %" PRId64, first);
    int64_t until = mailbox_fixture_raw_intf(
        f->path, "SELECT coalesce(max(expires_at), 0) FROM mailbox WHERE first_seq = %" PRId64,
        first);
    int64_t cases = mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM cases");
    assert_int_equal(waiting, 0);
    assert_int_equal(until, 0);
    (void)cases;
}

int main(void)
{
    if (mailbox_fixture_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_unresealed_case_row_held_to_the_close, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_case_drop_never_reaches_the_next_row, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_case_drop, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_case_drop_damaged, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_case_set_expiry, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_case_set_expiry_damaged, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_case_set_expiry_held, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_expire_items_per_item, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_expire_items_limit, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_expire_items_set_aside_and_damage, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_expire_cases, setup, store_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
