/*
 * test_store_mailbox.c — unit tests of broker/store_mailbox.c (mailbox
 * rows of one publish and recipient) against real SQLite files, each test
 * in its own mkdtemp() folder under /tmp, removed afterwards: adding rows
 * and the refusals, scanning them into per-delivery views, acks marked and
 * written at the commit, removals with their tombstones, case rows, and
 * rows altered behind the store's back. The store key is random per run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
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

static int setup(void **state)
{
    return mailbox_fixture_setup(state, "schakel-mailbox");
}

/* ------------------------------------------------------------------ a publish and its rows */

/* ------------------------------------------------------------------ scanning */

typedef struct seen {
    size_t n;
    int stop_after; /* 0: never */
    uint64_t seq[16];
    uint64_t item_seq[16];
    uint32_t item_index[16];
    uint32_t fields[16];
    char rule_id[16][72];
    char purpose[16][64];
    char body[16][64]; /* "" for none */
    int by_ref[16];
    char case_id[16][16];
    int is_case_event[16];
} seen_t;

static int collect(const store_delivery_t *d, void *arg)
{
    seen_t *s = arg;
    assert_true(s->n < 16);
    size_t k = s->n++;
    s->seq[k] = d->seq;
    s->item_seq[k] = d->item_seq;
    s->item_index[k] = d->item_index;
    s->fields[k] = d->fields;
    snprintf(s->rule_id[k], sizeof s->rule_id[k], "%s", d->rule_id);
    snprintf(s->purpose[k], sizeof s->purpose[k], "%s", d->purpose);
    snprintf(s->body[k], sizeof s->body[k], "%.*s", (int)d->body_len,
             d->body != NULL ? (const char *)d->body : "");
    s->by_ref[k] = d->by_ref;
    snprintf(s->case_id[k], sizeof s->case_id[k], "%s", d->case_id != NULL ? d->case_id : "");
    s->is_case_event[k] = d->is_case_event;
    assert_string_equal(d->sender, SENDER);
    assert_string_equal(d->sender_partner, PARTNER);
    return s->stop_after != 0 && s->n >= (size_t)s->stop_after;
}

static int scan(store_t *store, const char *recipient, uint64_t after, size_t limit, seen_t *s)
{
    memset(s, 0, sizeof *s);
    return store_mailbox_row_scan(store, recipient, after, limit, NULL, collect, s);
}

/* A row's deliveries come out one by one as the push takes them: seqs in
 * order, each with its item, its rule line and its slot's field mask, the
 * item's own bytes as body. */
static void test_add_and_scan(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p;
    int64_t first = mailbox_fixture_two_rows(f, &p);
    seen_t s;
    assert_int_equal(scan(f->store, POLITIE, 0, 100, &s), 4);
    for (size_t k = 0; k < 4; k++) {
        char text[64];
        mailbox_fixture_item_text(&p, k, text, sizeof text);
        assert_int_equal(s.seq[k], (uint64_t)first + k);
        assert_int_equal(s.item_seq[k], (uint64_t)p.item_seq[k]);
        assert_int_equal(s.item_index[k], k);
        assert_string_equal(s.rule_id[k], mailbox_fixture_two_rules[k % 2].rule_id);
        assert_string_equal(s.purpose[k], mailbox_fixture_two_rules[k % 2].purpose);
        assert_int_equal(s.fields[k], mailbox_fixture_two_rules[k % 2].fields);
        assert_string_equal(s.body[k], text);
        assert_int_equal(s.by_ref[k], 1);
        assert_string_equal(s.case_id[k], "");
    }
    assert_int_equal(scan(f->store, ZORG, 0, 100, &s), 2);
    assert_int_equal(s.seq[0], (uint64_t)first + 4);
    assert_int_equal(s.item_seq[1], (uint64_t)p.item_seq[3]);
    assert_int_equal(s.item_index[1], 3);
    assert_string_equal(s.purpose[1], "Zorg, en\nnazorg");
    assert_int_equal(scan(f->store, "politie/anders", 0, 100, &s), 0);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 4);
    assert_int_equal(store_mailbox_row_pending(f->store, ZORG), 2);
    /* one row per publish and recipient, the masks sealed: no clear mask */
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox"), 2);
    assert_int_equal(mailbox_fixture_raw_int(
                         f->path, "SELECT expires_at FROM mailbox WHERE recipient = '" ZORG "'"),
                     NOW + 30 * DAY);
    assert_int_equal(mailbox_fixture_raw_int(
                         f->path, "SELECT expires_at FROM mailbox WHERE recipient = '" POLITIE "'"),
                     NOW + DAY);
    /* the items and the publish keep their deliveries' longest retention */
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT expires_at FROM items WHERE seq = %lld",
             (long long)p.item_seq[2]);
    assert_int_equal(mailbox_fixture_raw_int(f->path, sql), NOW + DAY);
    snprintf(sql, sizeof sql, "SELECT expires_at FROM items WHERE seq = %lld",
             (long long)p.item_seq[3]);
    assert_int_equal(mailbox_fixture_raw_int(f->path, sql), NOW + 30 * DAY);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT max(expires_at) FROM publishes"),
                     NOW + 30 * DAY);
}

/* Rule lines of any text come back as they went in: a purpose that looks
 * like the encoding itself, an empty one, expiries at the ends of the
 * range. */
static void test_rule_lines_round_trip(void **state)
{
    static const store_mailbox_rule_t odd[2] = {
        {"r1", "h1", "3:abc,", "", INT64_MAX, 0x1},
        {"r2", "h2", "", "12:no, not so", -5, 0x2},
    };
    fixture_t *f = *state;
    mailbox_published_t p;
    store_mailbox_entry_t e[2];
    static const size_t items[2] = {0, 1};
    static const uint32_t slots[2] = {1, 0};
    assert_int_equal(store_begin(f->store), 0);
    mailbox_fixture_publish(f->store, 4, 2, &p);
    int64_t first = store_delivery_seqs_reserve(f->store, 2);
    store_mailbox_row_t r =
        mailbox_fixture_row_of(&p, POLITIE, (uint64_t)first, items, slots, 2, e);
    r.rules = odd;
    if (store_mailbox_row_add(f->store, &r) != 0)
        fail_msg("row add: %s", store_errmsg(f->store));
    assert_int_equal(store_commit(f->store), 0);
    seen_t s;
    assert_int_equal(scan(f->store, POLITIE, 0, 100, &s), 2);
    assert_string_equal(s.rule_id[0], "r2");
    assert_string_equal(s.purpose[0], "");
    assert_int_equal(s.fields[0], 0x2);
    assert_string_equal(s.rule_id[1], "r1");
    assert_string_equal(s.purpose[1], "3:abc,");
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT expires_at FROM mailbox"), -5);
    /* the column itself: five netstrings a slot, expiry first */
    assert_int_equal(mailbox_fixture_raw_int(
                         f->path, "SELECT rules = '19:9223372036854775807,2:r1,2:h1,6:3:abc,,0:,"
                                  "2:-5,2:r2,2:h2,0:,13:12:no, not so,' FROM mailbox"),
                     1);
}

/* After a cursor in the middle of a row, at most limit, across rows, and
 * stopped by the callback. */
static void test_scan_cursor_and_limit(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p, q;
    int64_t first = mailbox_fixture_two_rows(f, &p);
    /* a second publish: POLITIE's second row */
    store_mailbox_entry_t e[2];
    static const size_t items[2] = {0, 1};
    static const uint32_t slots[2] = {0, 0};
    assert_int_equal(store_begin(f->store), 0);
    mailbox_fixture_publish(f->store, 2, 2, &q);
    int64_t second = store_delivery_seqs_reserve(f->store, 2);
    store_mailbox_row_t r =
        mailbox_fixture_row_of(&q, POLITIE, (uint64_t)second, items, slots, 2, e);
    assert_int_equal(store_mailbox_row_add(f->store, &r), 0);
    assert_int_equal(store_commit(f->store), 0);

    seen_t s;
    assert_int_equal(scan(f->store, POLITIE, (uint64_t)first + 1, 100, &s), 4);
    assert_int_equal(s.seq[0], (uint64_t)first + 2);
    assert_int_equal(s.seq[2], (uint64_t)second);
    assert_int_equal(s.seq[3], (uint64_t)second + 1);
    assert_int_equal(scan(f->store, POLITIE, (uint64_t)first + 2, 2, &s), 2);
    assert_int_equal(s.seq[0], (uint64_t)first + 3);
    assert_int_equal(s.seq[1], (uint64_t)second);
    /* a cursor in the gap between the rows (ZORG's seqs) */
    assert_int_equal(scan(f->store, POLITIE, (uint64_t)first + 4, 100, &s), 2);
    assert_int_equal(s.seq[0], (uint64_t)second);
    assert_int_equal(scan(f->store, POLITIE, (uint64_t)second + 1, 100, &s), 0);
    memset(&s, 0, sizeof s);
    s.stop_after = 3;
    assert_int_equal(store_mailbox_row_scan(f->store, POLITIE, 0, 100, NULL, collect, &s), 3);
    assert_int_equal(scan(f->store, POLITIE, 0, 0, &s), 0);
    assert_int_equal(scan(f->store, POLITIE, INT64_MAX, 10, &s), 0);
    assert_int_equal(store_mailbox_row_scan(f->store, POLITIE, 0, 10, NULL, NULL, &s), -1);
    assert_int_equal(store_mailbox_row_scan(f->store, NULL, 0, 10, NULL, collect, &s), -1);
}

/* ------------------------------------------------------------------ refusals */

static void expect_refused(fixture_t *f, const store_mailbox_row_t *r, const char *why)
{
    if (store_mailbox_row_add(f->store, r) != -1)
        fail_msg("row added, expected \"%s\"", why);
    if (strstr(store_errmsg(f->store), why) == NULL)
        fail_msg("\"%s\" does not say \"%s\"", store_errmsg(f->store), why);
}

static void test_add_refusals(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p, other;
    store_mailbox_entry_t e[STORE_MAILBOX_MAX_N + 1];
    static const size_t items[4] = {0, 1, 2, 3};
    static const uint32_t slots[4] = {0, 1, 0, 1};
    assert_int_equal(store_begin(f->store), 0);
    mailbox_fixture_publish(f->store, 1, 4, &p);
    mailbox_fixture_publish(f->store, 2, 1, &other);
    int64_t first = store_delivery_seqs_reserve(f->store, STORE_MAILBOX_MAX_N + 8);
    store_mailbox_row_t r =
        mailbox_fixture_row_of(&p, POLITIE, (uint64_t)first, items, slots, 4, e);

    store_mailbox_row_t bad = r;
    bad.n = 0;
    expect_refused(f, &bad, "n is out of range");
    for (size_t k = 0; k < STORE_MAILBOX_MAX_N + 1; k++)
        e[k] = e[k % 4];
    bad.n = STORE_MAILBOX_MAX_N + 1;
    expect_refused(f, &bad, "n is out of range");
    e[2].rule_slot = 2;
    expect_refused(f, &r, "rule slot is out of range");
    e[2].rule_slot = 0;
    bad = r;
    bad.n_rules = 0;
    expect_refused(f, &bad, "rule lines");
    bad = r;
    bad.recipient = NULL;
    expect_refused(f, &bad, "missing");
    bad = r;
    bad.sender = "zorg/meldingen";
    expect_refused(f, &bad, "not a principal of sender_partner");
    bad = r;
    bad.sender = "gemeente/anders";
    expect_refused(f, &bad, "sender, message id or accepted_at differ");
    bad = r;
    bad.accepted_at = NOW + 1;
    expect_refused(f, &bad, "sender, message id or accepted_at differ");
    bad = r;
    bad.message_id = other.message_id;
    expect_refused(f, &bad, "sender, message id or accepted_at differ");
    e[1].item_index = 2; /* item 1 said to be at index 2 */
    expect_refused(f, &r, "not numbered as their publish's");
    e[1].item_index = 1;
    bad = r;
    bad.n = 1;
    bad.n_rules = 1;
    e[0].item_seq = (uint64_t)other.item_seq[0]; /* an item of another publish */
    expect_refused(f, &bad, "sender, message id or accepted_at differ");
    e[0].item_seq = (uint64_t)p.item_seq[3] + 100; /* no such item */
    e[0].item_index = 103;
    expect_refused(f, &bad, "item unknown");
    e[0] = (store_mailbox_entry_t){(uint64_t)p.item_seq[0], 0, 0};
    bad = r;
    bad.first_seq = (uint64_t)first + STORE_MAILBOX_MAX_N + 6; /* runs past the reservation */
    expect_refused(f, &bad, "seqs not reserved");
    bad.first_seq = (uint64_t)first - 1;
    expect_refused(f, &bad, "seqs not reserved");
    bad = r;
    bad.case_id = "C-00000001";
    expect_refused(f, &bad, "a case's row is one delivery");
    bad.n = 1;
    bad.n_rules = 1;
    expect_refused(f, &bad, "no such case");
    bad = r;
    bad.body = (const uint8_t *)"x";
    expect_refused(f, &bad, "has no body of its own");

    assert_int_equal(store_mailbox_row_add(f->store, &r), 0);
    bad = r;
    bad.first_seq = (uint64_t)first + 3; /* its first seq is r's last */
    expect_refused(f, &bad, "seqs of another row");
    bad.first_seq = (uint64_t)first + 4;
    bad.recipient = ZORG;
    assert_int_equal(store_mailbox_row_add(f->store, &bad), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox"), 2);

    /* outside a transaction, and after the reservation's transaction */
    bad.first_seq = (uint64_t)first + 8;
    expect_refused(f, &bad, "no transaction open");
    assert_int_equal(store_begin(f->store), 0);
    expect_refused(f, &bad, "seqs not reserved");
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox"), 2);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 4);
}

/* ------------------------------------------------------------------ acks */

/* Acks are marked in memory, seen by the scan at once, written once per
 * row at the commit; the row goes with its last pending delivery. */
static void test_ack(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p;
    int64_t first = mailbox_fixture_two_rows(f, &p);
    uint64_t s0 = (uint64_t)first;
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, s0 + 1), -1); /* no transaction */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, s0 + 1), 1);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, s0 + 2), 1);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, s0 + 2), 0); /* acked already */
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, s0 + 4), 0); /* ZORG's */
    assert_int_equal(store_mailbox_row_ack(f->store, ZORG, s0 + 3), 0);    /* POLITIE's */
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, s0 + 6), 0); /* no row's */
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, 0), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, UINT64_MAX), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, NULL, s0), -1);
    seen_t s;
    assert_int_equal(scan(f->store, POLITIE, 0, 100, &s), 2);
    assert_int_equal(s.seq[0], s0);
    assert_int_equal(s.seq[1], s0 + 3);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 2);
    assert_int_equal(
        mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox WHERE done IS NULL"), 2);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(mailbox_fixture_raw_int(
                         f->path, "SELECT pending FROM mailbox WHERE recipient = '" POLITIE "'"),
                     2);

    /* written: a new handle sees it, the counts learnt from the rows */
    mailbox_fixture_reopen(f);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 2);
    assert_int_equal(scan(f->store, POLITIE, 0, 100, &s), 2);
    assert_int_equal(s.seq[1], s0 + 3);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, s0 + 1), 0); /* acked before */
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, s0 + 3), 1);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, s0), 1);
    assert_int_equal(store_mailbox_row_ack(f->store, ZORG, s0 + 5), 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox"), 1);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT pending FROM mailbox"), 1);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 0);
    assert_int_equal(store_mailbox_row_pending(f->store, ZORG), 1);
    assert_int_equal(scan(f->store, POLITIE, 0, 100, &s), 0);
    assert_int_equal(scan(f->store, ZORG, 0, 100, &s), 1);
    assert_int_equal(s.seq[0], s0 + 4);
}

/* A rollback drops the marks and their counts: the deliveries come again. */
static void test_ack_rolled_back(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p;
    int64_t first = mailbox_fixture_two_rows(f, &p);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 4);
    assert_int_equal(store_begin(f->store), 0);
    for (int k = 0; k < 4; k++)
        assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, (uint64_t)first + (uint64_t)k),
                         1);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 0);
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 4);
    seen_t s;
    assert_int_equal(scan(f->store, POLITIE, 0, 100, &s), 4);
    /* the marks of the rolled back transaction are not written by the next */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, (uint64_t)first + 2), 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(mailbox_fixture_raw_int(
                         f->path, "SELECT pending FROM mailbox WHERE recipient = '" POLITIE "'"),
                     3);
    assert_int_equal(scan(f->store, POLITIE, 0, 100, &s), 3);
}

/* Many rows touched in one transaction, acks and removals mixed: each
 * row is written once, the emptied ones deleted. */
static void test_ack_many_rows(void **state)
{
    enum { ROWS = 20 };
    fixture_t *f = *state;
    mailbox_published_t p[ROWS];
    int64_t first[ROWS];
    store_mailbox_entry_t e[2];
    static const size_t items[2] = {0, 1};
    static const uint32_t slots[2] = {0, 1};
    assert_int_equal(store_begin(f->store), 0);
    for (int k = 0; k < ROWS; k++) {
        mailbox_fixture_publish(f->store, (uint8_t)(10 + k), 2, &p[k]);
        first[k] = store_delivery_seqs_reserve(f->store, 2);
        store_mailbox_row_t r =
            mailbox_fixture_row_of(&p[k], POLITIE, (uint64_t)first[k], items, slots, 2, e);
        assert_int_equal(store_mailbox_row_add(f->store, &r), 0);
    }
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 2 * ROWS);
    assert_int_equal(store_begin(f->store), 0);
    for (int k = 0; k < ROWS; k++) /* the second of each, last row first */
        assert_int_equal(
            store_mailbox_row_ack(f->store, POLITIE, (uint64_t)first[ROWS - 1 - k] + 1), 1);
    for (int k = 0; k < ROWS; k += 2) /* and the first of every other row, removed */
        assert_int_equal(
            store_mailbox_row_remove(f->store, POLITIE, (uint64_t)first[k], NOW, NULL, NULL), 1);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), ROWS / 2);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox"), ROWS / 2);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT sum(pending) FROM mailbox"),
                     ROWS / 2);
    assert_int_equal(
        mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox WHERE done = x'02'"),
        ROWS / 2);
    seen_t s;
    assert_int_equal(scan(f->store, POLITIE, 0, 100, &s), ROWS / 2);
    for (int k = 0; k < ROWS / 2; k++)
        assert_int_equal(s.seq[k], (uint64_t)first[2 * k + 1]);
}

/* A row whose done or counts no broker writes is refused, not guessed at. */
static void test_ack_damaged_row(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p;
    int64_t first = mailbox_fixture_two_rows(f, &p);
    store_fixture_raw_exec(f->path,
                           "UPDATE mailbox SET done = x'0000' WHERE recipient = '" ZORG "'");
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, ZORG, (uint64_t)first + 4), -1);
    assert_non_null(strstr(store_errmsg(f->store), "damaged row"));
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, (uint64_t)first), 1);
    assert_int_equal(store_commit(f->store), 0);
    seen_t s;
    assert_int_equal(scan(f->store, ZORG, 0, 100, &s), -1);
    assert_int_equal(store_scan_unreadable(f->store), (uint64_t)first + 4);
    /* seqs no broker writes (past the table's CHECKs): refused, not computed */
    store_fixture_raw_exec(f->path,
                           "PRAGMA ignore_check_constraints = ON;"
                           "UPDATE mailbox SET first_seq = 9223372036854775806, n = 4, done = NULL"
                           " WHERE recipient = '" ZORG "'");
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, ZORG, INT64_MAX), -1);
    assert_non_null(strstr(store_errmsg(f->store), "damaged row"));
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(scan(f->store, ZORG, 0, 100, &s), -1);
    assert_non_null(strstr(store_errmsg(f->store), "damaged row"));
    /* an item gone from under a row stops the scan at the row too */
    char sql[96];
    snprintf(sql, sizeof sql, "DELETE FROM items WHERE seq = %lld", (long long)p.item_seq[2]);
    store_fixture_raw_exec(f->path, "PRAGMA foreign_keys = OFF");
    store_fixture_raw_exec(f->path, sql);
    assert_int_equal(scan(f->store, POLITIE, 0, 100, &s), -1);
    assert_int_equal(s.n, 1); /* the one before it was handed out */
    assert_int_equal(s.seq[0], (uint64_t)first + 1);
    assert_non_null(strstr(store_errmsg(f->store), "item is gone"));
    assert_int_equal(store_scan_unreadable(f->store), (uint64_t)first);
}

/* ------------------------------------------------------------------ removal */

typedef struct removed {
    int calls;
    uint64_t seq, item_seq;
    char rule_id[72];
    int64_t expires_at;
    int before;
} removed_t;

static void on_removed(const store_expired_t *e, void *arg)
{
    removed_t *r = arg;
    r->calls++;
    r->seq = e->seq;
    r->item_seq = e->item_seq;
    snprintf(r->rule_id, sizeof r->rule_id, "%s", e->rule_id);
    r->expires_at = e->expires_at;
    r->before = e->tombstoned_before;
}

/* One delivery removed mid-row: its tombstone, the callback, the count;
 * the rest of the row stays, and goes with its last. */
static void test_remove(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p;
    int64_t first = mailbox_fixture_two_rows(f, &p);
    uint64_t s0 = (uint64_t)first;
    removed_t r = {0};
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_remove(f->store, POLITIE, s0 + 1, NOW + 5, on_removed, &r),
                     1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.seq, s0 + 1);
    assert_int_equal(r.item_seq, (uint64_t)p.item_seq[1]);
    assert_string_equal(r.rule_id, mailbox_fixture_two_rules[1].rule_id);
    assert_int_equal(r.expires_at, mailbox_fixture_two_rules[1].expires_at);
    assert_int_equal(r.before, 0);
    assert_int_equal(store_mailbox_row_remove(f->store, POLITIE, s0 + 1, NOW + 5, on_removed, &r),
                     0);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, s0 + 1), 0);
    assert_int_equal(store_mailbox_row_remove(f->store, ZORG, s0 + 1, NOW + 5, on_removed, &r), 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 3);
    assert_int_equal(store_commit(f->store), 0);
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM tombstones WHERE seq = %llu AND recipient = '" POLITIE
             "' AND rule_id = 'gemeente-naar-zorg' AND expired_at = %lld",
             (unsigned long long)(s0 + 1), NOW + 5);
    assert_int_equal(mailbox_fixture_raw_int(f->path, sql), 1);
    seen_t s;
    assert_int_equal(scan(f->store, POLITIE, 0, 100, &s), 3);
    assert_int_equal(s.seq[1], s0 + 2);

    /* the rest acked and removed in one transaction: the row goes */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, s0), 1);
    assert_int_equal(store_mailbox_row_remove(f->store, POLITIE, s0 + 2, NOW, NULL, NULL), 1);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, s0 + 3), 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(mailbox_fixture_raw_int(
                         f->path, "SELECT count(*) FROM mailbox WHERE recipient = '" POLITIE "'"),
                     0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM tombstones"), 2);
    mailbox_fixture_reopen(f);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 0);
    assert_int_equal(store_mailbox_row_pending(f->store, ZORG), 2);
}

/* ------------------------------------------------------------------ expiry */

static int64_t row_expiry(const char *path, const char *recipient)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT expires_at FROM mailbox WHERE recipient = '%s'", recipient);
    return mailbox_fixture_raw_int(path, sql);
}

/* Expiry takes each delivery at its own rule's expiry, not the row's
 * earliest: the rest of the row waits, with the next expiry written. */
static void test_expire(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p;
    int64_t first = mailbox_fixture_two_rows(f, &p);
    uint64_t s0 = (uint64_t)first;
    removed_t r = {0};
    assert_int_equal(store_mailbox_row_expire(f->store, NOW + DAY, 10, NULL, NULL), -1);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire(f->store, NOW + DAY - 1, 10, on_removed, &r), 0);
    assert_int_equal(store_mailbox_row_expire(f->store, NOW + DAY, 10, on_removed, &r), 2);
    assert_int_equal(r.calls, 2);
    assert_int_equal(r.seq, s0 + 2); /* slot 0's: seqs 0 and 2 of POLITIE's row */
    assert_string_equal(r.rule_id, mailbox_fixture_two_rules[0].rule_id);
    assert_int_equal(r.expires_at, NOW + DAY);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 2);
    /* written at once with its next expiry: not due again */
    assert_int_equal(store_mailbox_row_expire(f->store, NOW + DAY, 10, on_removed, &r), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(row_expiry(f->path, POLITIE), NOW + 30 * DAY);
    seen_t s;
    assert_int_equal(scan(f->store, POLITIE, 0, 100, &s), 2);
    assert_int_equal(s.seq[0], s0 + 1);
    assert_int_equal(s.seq[1], s0 + 3);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM tombstones"), 2);

    /* an ack of this transaction counts; the limit stops mid-row */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, s0 + 1), 1);
    assert_int_equal(store_mailbox_row_expire(f->store, NOW + 30 * DAY, 1, on_removed, &r), 1);
    assert_int_equal(r.seq, s0 + 3); /* POLITIE's row is due first, and its s0 + 1 is acked */
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 0);
    assert_int_equal(store_mailbox_row_expire(f->store, NOW + 30 * DAY, 1, on_removed, &r), 1);
    assert_int_equal(r.seq, s0 + 4);
    assert_int_equal(store_mailbox_row_expire(f->store, NOW + 30 * DAY, 5, on_removed, &r), 1);
    assert_int_equal(r.seq, s0 + 5);
    assert_int_equal(store_mailbox_row_pending(f->store, ZORG), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox"), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM tombstones"),
                     5); /* not the acked */
    mailbox_fixture_reopen(f);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 0);
    assert_int_equal(store_mailbox_row_pending(f->store, ZORG), 0);
}

/* A row due whose rule lines do not read is set aside whole, not a stop
 * of the sweep for every mailbox; the rows due after it expire. */
static void test_expire_sets_aside_a_damaged_row(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p;
    int64_t first = mailbox_fixture_two_rows(f, &p);
    store_fixture_raw_exec(
        f->path, "UPDATE mailbox SET rules = 'no rule lines' WHERE recipient = '" POLITIE "'");
    removed_t r = {0};
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire(f->store, NOW + 30 * DAY, 10, on_removed, &r), 2);
    assert_int_equal(store_mailbox_expire_set_aside(f->store), 1);
    assert_int_equal(r.calls, 2); /* ZORG's two; POLITIE's row went aside, not expired */
    assert_int_equal(r.seq, (uint64_t)first + 5);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 0);
    assert_int_equal(store_mailbox_row_pending(f->store, ZORG), 0);
    assert_int_equal(store_commit(f->store), 0);
    char sql[128];
    snprintf(
        sql, sizeof sql,
        "SELECT count(*) FROM mailbox_set_aside WHERE first_seq = %lld AND recipient = '" POLITIE
        "'",
        (long long)first);
    assert_int_equal(mailbox_fixture_raw_int(f->path, sql), 1);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox"), 0);
    assert_int_equal(store_set_aside_count(f->store), 4);
    /* the next call counts its own */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire(f->store, NOW + 30 * DAY, 10, on_removed, &r), 0);
    assert_int_equal(store_mailbox_expire_set_aside(f->store), 0);
    assert_int_equal(store_commit(f->store), 0);
}

/* A row due whose recipient cannot be read (too long: no descent by
 * recipient finds it again) is set aside by its first seq, not a stop of
 * the sweep. */
static void test_expire_sets_aside_a_row_of_no_recipient(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p;
    int64_t first = mailbox_fixture_two_rows(f, &p);
    store_fixture_raw_exec(f->path,
                           "UPDATE mailbox SET recipient = replace(hex(zeroblob(300)), '0', 'x')"
                           " WHERE recipient = '" POLITIE "'");
    removed_t r = {0};
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire(f->store, NOW + 30 * DAY, 10, on_removed, &r), 2);
    assert_int_equal(store_mailbox_expire_set_aside(f->store), 1);
    assert_int_equal(r.seq, (uint64_t)first + 5); /* ZORG's expired */
    assert_int_equal(store_commit(f->store), 0);
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM mailbox_set_aside WHERE first_seq = %lld",
             (long long)first);
    assert_int_equal(mailbox_fixture_raw_int(f->path, sql), 1);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox"), 0);
}

/* A pending count that does not agree with the row's done bits (the seal
 * does not bind it): the scan refuses the row as damaged, so the push sets
 * it aside, rather than send deliveries no ack could then write. */
static void test_pending_that_disagrees_is_damage(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p;
    int64_t first = mailbox_fixture_two_rows(f, &p);
    store_fixture_raw_exec(f->path, "PRAGMA ignore_check_constraints = ON;"
                                    "UPDATE mailbox SET pending = 7 WHERE recipient = '" ZORG "'");
    seen_t s;
    assert_int_equal(scan(f->store, ZORG, 0, 100, &s), -1);
    assert_non_null(strstr(store_errmsg(f->store), "damaged row"));
    assert_int_equal(store_scan_unreadable(f->store), (uint64_t)first + 4);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, ZORG, (uint64_t)first + 4), -1);
    store_mailbox_aside_t a;
    assert_int_equal(store_mailbox_row_set_aside(f->store, ZORG, (uint64_t)first + 4, NOW, &a), 1);
    assert_int_equal(a.n_set_aside, 2);
    assert_int_equal(store_commit(f->store), 0);
    /* within the table's check, but not what its done bits leave: damage
     * too, and the sweep sets it aside as well */
    store_fixture_raw_exec(f->path,
                           "UPDATE mailbox SET pending = 3 WHERE recipient = '" POLITIE "'");
    assert_int_equal(scan(f->store, POLITIE, 0, 100, &s), -1);
    assert_non_null(strstr(store_errmsg(f->store), "damaged row"));
    removed_t r = {0};
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire(f->store, NOW + 30 * DAY, 10, on_removed, &r), 0);
    assert_int_equal(store_mailbox_expire_set_aside(f->store), 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox"), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox_set_aside"), 2);
}

/* A row's expires_at (not bound by the seal) later than its pending
 * deliveries' own would hide it from the sweep: the scan refuses it as
 * damage, so the push sets it aside; earlier (as acks leave it) it reads. */
static void test_expiry_later_than_the_rows_is_damage(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p;
    int64_t first = mailbox_fixture_two_rows(f, &p);
    seen_t s;
    mailbox_fixture_raw_execf(f->path, "UPDATE mailbox SET expires_at = expires_at - 1");
    assert_int_equal(scan(f->store, POLITIE, 0, 100, &s), 4);
    assert_int_equal(scan(f->store, ZORG, 0, 100, &s), 2);
    mailbox_fixture_raw_execf(f->path,
                              "UPDATE mailbox SET expires_at = %lld WHERE recipient = '" ZORG "'",
                              (long long)(NOW + 3650 * DAY));
    assert_int_equal(scan(f->store, ZORG, 0, 100, &s), -1);
    assert_non_null(strstr(store_errmsg(f->store), "damaged row"));
    assert_int_equal(store_scan_unreadable(f->store), (uint64_t)first + 4);
    assert_int_equal(scan(f->store, POLITIE, 0, 100, &s), 4);
}

/* ------------------------------------------------------------------ cases */

static void test_case_row(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p;
    char case_id[SCHAKEL_CASE_ID_LEN + 1];
    static const char event[] = "a case event, filtered";
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_case_create(f->store, "ondermijning", "politie", NULL, NOW, case_id), 0);
    mailbox_fixture_publish(f->store, 3, 1, &p);
    int64_t first = store_delivery_seqs_reserve(f->store, 1);
    store_mailbox_entry_t e[1];
    static const size_t items[1] = {0};
    static const uint32_t slots[1] = {0};
    store_mailbox_row_t r = mailbox_fixture_row_of(&p, ZORG, (uint64_t)first, items, slots, 1, e);
    r.n_rules = 1;
    r.case_id = case_id;
    r.is_case_event = 1;
    r.body = (const uint8_t *)event;
    r.body_len = strlen(event);
    if (store_mailbox_row_add(f->store, &r) != 0)
        fail_msg("case row: %s", store_errmsg(f->store));
    assert_int_equal(store_commit(f->store), 0);
    seen_t s;
    assert_int_equal(scan(f->store, ZORG, 0, 100, &s), 1);
    assert_int_equal(s.seq[0], (uint64_t)first);
    assert_string_equal(s.body[0], event);
    assert_string_equal(s.case_id[0], case_id);
    assert_int_equal(s.is_case_event[0], 1);
    assert_int_equal(s.by_ref[0], 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM case_items"), 1);
    /* sealed: the body is not in the file in clear */
    assert_int_equal(mailbox_fixture_raw_int(
                         f->path, "SELECT count(*) FROM mailbox WHERE instr(body, 'filtered')"),
                     0);
}

/* ------------------------------------------------------------------ damage */

/* Any clear column the seal binds, changed behind the store's back, stops
 * the scan at that row, named for setting aside; done is not bound. */
static void test_tampered_row_fails_to_open(void **state)
{
    static const char *const tamper[] = {
        "UPDATE mailbox SET rules = replace(rules, 'Signalering', 'Signalerinh')",
        "UPDATE mailbox SET items = x'00000000010000000200000003000000'", /* slots moved */
        "UPDATE mailbox SET items = x'00000100010000000200010003000000'",
        "UPDATE mailbox SET first_item_seq = first_item_seq + 1",
        "UPDATE mailbox SET sender = 'gemeente/anders'",
        "UPDATE mailbox SET accepted_at = accepted_at + 1",
        "UPDATE mailbox SET recipient = 'politie/anders'",
        "UPDATE mailbox SET body = x'00'",
        "UPDATE mailbox SET n = 3, pending = 3, items = substr(items, 1, 12)",
    };
    fixture_t *f = *state;
    mailbox_published_t p;
    int64_t first = mailbox_fixture_two_rows(f, &p);
    for (size_t t = 0; t < sizeof tamper / sizeof tamper[0]; t++) {
        /* the first row tampered, in a store of its own */
        sqlite3 *db = store_fixture_raw_open(f->path);
        store_fixture_db_exec(db, "SAVEPOINT t");
        char sql[256];
        snprintf(sql, sizeof sql, "%s WHERE first_seq = %lld", tamper[t], (long long)first);
        store_fixture_db_exec(db, sql);
        store_fixture_db_exec(db, "RELEASE t");
        assert_int_equal(sqlite3_close(db), SQLITE_OK);
        seen_t s;
        const char *recipient =
            strstr(tamper[t], "politie/anders") != NULL ? "politie/anders" : POLITIE;
        if (scan(f->store, recipient, 0, 100, &s) != -1)
            fail_msg("tamper %zu: the scan went on", t);
        if (strstr(store_errmsg(f->store), "does not authenticate") == NULL &&
            strstr(store_errmsg(f->store), "damaged row") == NULL)
            fail_msg("tamper %zu: %s", t, store_errmsg(f->store));
        assert_int_equal(s.n, 0);
        assert_int_equal(store_scan_unreadable(f->store), (uint64_t)first);
        store_fixture_destroy(&f);
        f = store_fixture_new("schakel-mailbox", mailbox_fixture_key);
        assert_int_equal(store_mailbox_schema(f->store), 0);
        *state = f;
        first = mailbox_fixture_two_rows(f, &p);
    }
    /* done is not bound: a bit set behind the store's back withholds */
    store_fixture_raw_exec(f->path, "UPDATE mailbox SET done = x'01', pending = 3"
                                    " WHERE recipient = '" POLITIE "'");
    seen_t s;
    assert_int_equal(scan(f->store, POLITIE, 0, 100, &s), 3);
    assert_int_equal(s.seq[0], (uint64_t)first + 1);
}

/* ------------------------------------------------------------------ hints */

static int have_every_item(uint64_t item_seq, void *arg)
{
    (void)item_seq;
    (void)arg;
    return 1;
}

static int vouch_all(const store_delivery_t *d, uint32_t *fields, void *arg)
{
    (void)d;
    (void)arg;
    *fields = 0x77;
    return 1;
}

/* Items the caller has come without a body; deliveries it vouches for
 * open nothing, so a row all vouched for is not opened at all. */
static void test_hints(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p;
    (void)mailbox_fixture_two_rows(f, &p);
    seen_t s;
    memset(&s, 0, sizeof s);
    store_scan_hints_t have = {.have_item = have_every_item, .vouch = NULL};
    assert_int_equal(store_mailbox_row_scan(f->store, POLITIE, 0, 100, &have, collect, &s), 4);
    assert_string_equal(s.body[0], "");
    assert_int_equal(s.fields[1], mailbox_fixture_two_rules[1].fields);
    store_fixture_raw_exec(f->path, "UPDATE mailbox SET body = x'00'");
    memset(&s, 0, sizeof s);
    store_scan_hints_t vouched = {.have_item = NULL, .vouch = vouch_all};
    assert_int_equal(store_mailbox_row_scan(f->store, POLITIE, 0, 100, &vouched, collect, &s), 4);
    assert_int_equal(s.fields[2], 0x77);
    assert_string_equal(s.body[2], "");
    memset(&s, 0, sizeof s);
    assert_int_equal(store_mailbox_row_scan(f->store, POLITIE, 0, 100, &have, collect, &s), -1);
}

/* One step of the sweep visits at most `limit` rows, those it only
 * rewrites included: a row whose expires_at is due while none of its
 * pending deliveries is (its earliest delivery was acked, not expired: an
 * ack does not rewrite expires_at) gets its next expiry written, and a
 * backlog of them takes a step per `limit` rows, not one turn for all;
 * store_mailbox_expire_more says more may be due. */
static void test_sweep_bounded_by_rows_rewritten(void **state)
{
    fixture_t *f = *state;
    enum { ROWS = 40 };
    int64_t firsts[ROWS];
    static const size_t items[2] = {0, 1};
    static const uint32_t slots[2] = {0, 1}; /* due at NOW + DAY, NOW + 30 days */
    assert_int_equal(store_begin(f->store), 0);
    for (int k = 0; k < ROWS; k++) {
        mailbox_published_t p;
        store_mailbox_entry_t e[2];
        mailbox_fixture_publish(f->store, (uint8_t)(k + 1), 2, &p);
        firsts[k] = store_delivery_seqs_reserve(f->store, 2);
        store_mailbox_row_t r =
            mailbox_fixture_row_of(&p, POLITIE, (uint64_t)firsts[k], items, slots, 2, e);
        if (store_mailbox_row_add(f->store, &r) != 0)
            fail_msg("row add: %s", store_errmsg(f->store));
    }
    assert_int_equal(store_commit(f->store), 0);
    /* the recipient acks the short rule's delivery of each row */
    assert_int_equal(store_begin(f->store), 0);
    for (int k = 0; k < ROWS; k++)
        assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, (uint64_t)firsts[k]), 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(
        mailbox_fixture_raw_intf(f->path, "SELECT count(*) FROM mailbox WHERE expires_at = %lld",
                                 (long long)(NOW + DAY)),
        ROWS);
    /* one step of limit 1 at the short rule's expiry: nothing expires */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire(f->store, NOW + DAY, 1, NULL, NULL), 0);
    assert_int_equal(store_commit(f->store), 0);
    int64_t rewritten =
        mailbox_fixture_raw_intf(f->path, "SELECT count(*) FROM mailbox WHERE expires_at = %lld",
                                 (long long)(NOW + 30 * DAY));
    assert_int_equal(rewritten, 1);
    assert_true(store_mailbox_expire_more(f->store));
    /* the following steps take the rest, one row each */
    for (int k = 1; k < ROWS; k++) {
        assert_int_equal(store_begin(f->store), 0);
        assert_int_equal(store_mailbox_row_expire(f->store, NOW + DAY, 1, NULL, NULL), 0);
        assert_int_equal(store_commit(f->store), 0);
    }
    assert_int_equal(
        mailbox_fixture_raw_intf(f->path, "SELECT count(*) FROM mailbox WHERE expires_at = %lld",
                                 (long long)(NOW + 30 * DAY)),
        ROWS);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire(f->store, NOW + DAY, 1, NULL, NULL), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_false(store_mailbox_expire_more(f->store));
}

/* An expires_at raised past the row's pending deliveries' own hides the
 * row from the sweep, which finds due rows by that column; a row the push
 * never reads again (its recipient does not connect, or its deliveries
 * went out and are not acked) is found by its items instead: an item due
 * that a row's delivery still holds, itself due by its rule line, is
 * damage, and the row is set aside, its retention bounded. */
static void test_raised_expiry_hides_an_unread_row(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p;
    (void)mailbox_fixture_two_rows(f, &p);
    mailbox_fixture_raw_execf(f->path,
                              "UPDATE mailbox SET expires_at = %lld WHERE recipient = '" ZORG "'",
                              (long long)(NOW + 3650 * DAY));
    assert_int_equal(store_begin(f->store), 0);
    int removed = store_expire(f->store, NOW + 31 * DAY, SCHAKEL_EXPIRY_BATCH, NULL, NULL);
    assert_true(removed >= 0);
    /* counted and listed for the caller's delivery.set_aside entries */
    assert_int_equal(store_mailbox_expire_set_aside(f->store), 1);
    store_mailbox_aside_t taken;
    assert_int_equal(store_mailbox_row_set_aside_take(f->store, &taken), 1);
    assert_int_equal(store_mailbox_row_set_aside_take(f->store, &taken), 0);
    assert_int_equal(store_commit(f->store), 0);
    int64_t waiting = mailbox_fixture_raw_int(
        f->path, "SELECT count(*) FROM mailbox WHERE recipient = '" ZORG "'");
    int64_t items = mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM items");
    assert_int_equal(waiting, 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox_set_aside"
                                                      " WHERE recipient = '" ZORG "'"),
                     1);
    (void)items;
}

/* The items' sweep goes on where its last step stopped: due items that a
 * waiting row still holds, `limit` or more of them first in the order of
 * expiry, do not keep it from the due items behind them for ever. */
static void test_item_sweep_goes_past_held_items(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t held, free_one;
    static const size_t items[3] = {0, 1, 2};
    static const uint32_t slots[3] = {0, 0, 0};
    store_mailbox_entry_t e[3];
    assert_int_equal(store_begin(f->store), 0);
    mailbox_fixture_publish(f->store, 1, 3, &held);
    int64_t first = store_delivery_seqs_reserve(f->store, 3);
    store_mailbox_row_t r =
        mailbox_fixture_row_of(&held, POLITIE, (uint64_t)first, items, slots, 3, e);
    if (store_mailbox_row_add(f->store, &r) != 0)
        fail_msg("row add: %s", store_errmsg(f->store));
    /* one more item, due with them but after them (its seq), its only
     * delivery acked: nothing holds it */
    mailbox_fixture_publish(f->store, 2, 1, &free_one);
    int64_t its = store_delivery_seqs_reserve(f->store, 1);
    r = mailbox_fixture_row_of(&free_one, ZORG, (uint64_t)its, items, slots, 1, e);
    r.n_rules = 1;
    if (store_mailbox_row_add(f->store, &r) != 0)
        fail_msg("row add: %s", store_errmsg(f->store));
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, ZORG, (uint64_t)its), 1);
    assert_int_equal(store_commit(f->store), 0);
    int64_t due = mailbox_fixture_raw_int(f->path, "SELECT max(expires_at) FROM items");
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT min(expires_at) FROM items"), due);
    /* steps of 2 at the time all four are due: the three held stay, the
     * fourth goes within two steps */
    for (int step = 0; step < 2; step++) {
        assert_int_equal(store_begin(f->store), 0);
        assert_true(store_mailbox_row_expire_items(f->store, due, 2) >= 0);
        assert_int_equal(store_commit(f->store), 0);
    }
    assert_int_equal(mailbox_fixture_raw_intf(f->path,
                                              "SELECT count(*) FROM items WHERE seq = %lld",
                                              (long long)free_one.item_seq[0]),
                     0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM items"), 3);
}

/* The publishes' sweep goes on where its last step stopped too: due
 * publishes that their items still hold, `limit` of them first, do not
 * keep it from the one behind them; a step rolled back does not move it. */
static void test_publish_sweep_goes_past_held_publishes(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t a, b, c;
    assert_int_equal(store_begin(f->store), 0);
    mailbox_fixture_publish(f->store, 1, 1, &a);
    mailbox_fixture_publish(f->store, 2, 1, &b);
    mailbox_fixture_publish(f->store, 3, 0, &c); /* no item: nothing holds it */
    assert_int_equal(store_commit(f->store), 0);
    mailbox_fixture_raw_execf(f->path, "UPDATE publishes SET expires_at = %lld", (long long)NOW);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire_publishes(f->store, NOW, 2), 0);
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire_publishes(f->store, NOW, 2), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_expire_publishes(f->store, NOW, 2), 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(mailbox_fixture_raw_intf(f->path,
                                              "SELECT count(*) FROM publishes WHERE id = %lld",
                                              (long long)c.publish_id),
                     0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM publishes"), 2);
}

/* A row whose done bits mark every delivery while its pending column
 * says otherwise (damage the seal does not bind) reads as damage to the
 * sweep, which sets it aside; it names no delivery, so nothing is
 * recorded for it, and the sweep goes on to the rows due after it. */
static void test_all_done_row_with_pending_left_set_aside_by_sweep(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p;
    (void)mailbox_fixture_two_rows(f, &p);
    store_fixture_raw_exec(f->path, "PRAGMA ignore_check_constraints = ON;"
                                    "UPDATE mailbox SET done = x'03', pending = 1,"
                                    " expires_at = expires_at - 100 * 86400"
                                    " WHERE recipient = '" ZORG "'");
    removed_t r = {0};
    assert_int_equal(store_begin(f->store), 0);
    if (store_mailbox_row_expire(f->store, NOW + 30 * DAY, 10, on_removed, &r) < 0)
        fail_msg("the sweep stopped at the row: %s", store_errmsg(f->store));
    assert_int_equal(store_mailbox_expire_set_aside(f->store), 1);
    store_mailbox_aside_t taken;
    assert_int_equal(store_mailbox_row_set_aside_take(f->store, &taken), 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox"), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox_set_aside"
                                                      " WHERE recipient = '" ZORG "'"),
                     1);
    /* it names no delivery: no entry to write for it */
    store_set_aside_t x;
    for (uint64_t seq = taken.first_seq; seq <= taken.last_seq; seq++)
        assert_int_equal(store_mailbox_row_set_aside_get(f->store, seq, &x), 0);
}

int main(void)
{
    if (mailbox_fixture_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_add_and_scan, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_rule_lines_round_trip, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_scan_cursor_and_limit, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_add_refusals, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_ack, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_ack_rolled_back, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_ack_many_rows, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_ack_damaged_row, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_remove, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_expire, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_expire_sets_aside_a_damaged_row, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_expire_sets_aside_a_row_of_no_recipient, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_pending_that_disagrees_is_damage, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_expiry_later_than_the_rows_is_damage, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_case_row, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_tampered_row_fails_to_open, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_hints, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_sweep_bounded_by_rows_rewritten, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_raised_expiry_hides_an_unread_row, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_item_sweep_goes_past_held_items, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_publish_sweep_goes_past_held_publishes, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_all_done_row_with_pending_left_set_aside_by_sweep,
                                        setup, store_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
