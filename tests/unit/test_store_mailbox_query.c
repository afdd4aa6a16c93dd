/*
 * test_store_mailbox_query.c — unit tests of broker/store_mailbox_query.c
 * (what the store answers about the mailbox rows) against real SQLite
 * files, each test in its own mkdtemp() folder under /tmp, removed
 * afterwards: a pending delivery's rule, the `pending` listing expanded
 * from rows waiting and set aside and paged across them, purge's walk of
 * recipients and their oldest seqs, the backlog and the highest pending
 * seq; with rows partly done, this transaction's marks, rollbacks, case
 * rows and rows altered behind the store's back. The store key is random
 * per run.
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
#include "store_mailbox_internal.h"

#define SET_ASIDE_AT (NOW + 7)

static int setup(void **state)
{
    return mailbox_fixture_setup(state, "schakel-mbquery");
}

/* SQL made from fmt, run behind the store's back, CHECKs off. */
__attribute__((format(printf, 2, 3))) static void raw_row_exec(const char *path, const char *fmt,
                                                               ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    assert_true(len > 0 && (size_t)len < sizeof text);
    sqlite3 *db = store_fixture_raw_open(path);
    store_fixture_db_exec(db, "PRAGMA ignore_check_constraints = ON");
    store_fixture_db_exec(db, text);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* ------------------------------------------------------------------ publishes and rows */

/* Add a row of p's items 0 .. n-1 for recipient, entry k under rule slot
 * k % 2, at the next n seqs reserved; inside the open transaction. Its
 * first seq. */
static int64_t row_add(store_t *store, const mailbox_published_t *p, const char *recipient,
                       size_t n)
{
    static const size_t items[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    static const uint32_t slots[8] = {0, 1, 0, 1, 0, 1, 0, 1};
    store_mailbox_entry_t entries[8];
    assert_true(n <= 8);
    int64_t first = store_delivery_seqs_reserve(store, n);
    assert_true(first > 0);
    store_mailbox_row_t r =
        mailbox_fixture_row_of(p, recipient, (uint64_t)first, items, slots, n, entries);
    r.n_rules = n < 2 ? 1 : 2; /* a row of one entry: its one rule line */
    if (store_mailbox_row_add(store, &r) != 0)
        fail_msg("row add: %s", store_errmsg(store));
    return first;
}

/* The mailboxes most tests start from, committed: POLITIE's rows A (4
 * deliveries), B (2), C (2); ZORG's row Z (2) between A and B. */
typedef struct mailboxes {
    mailbox_published_t p[3];
    int64_t a, z, b, c;
} mailboxes_t;

static void mailboxes(fixture_t *f, mailboxes_t *m)
{
    assert_int_equal(store_begin(f->store), 0);
    mailbox_fixture_publish(f->store, 1, 4, &m->p[0]);
    m->a = row_add(f->store, &m->p[0], POLITIE, 4);
    m->z = row_add(f->store, &m->p[0], ZORG, 2);
    mailbox_fixture_publish(f->store, 2, 2, &m->p[1]);
    m->b = row_add(f->store, &m->p[1], POLITIE, 2);
    mailbox_fixture_publish(f->store, 3, 2, &m->p[2]);
    m->c = row_add(f->store, &m->p[2], POLITIE, 2);
    assert_int_equal(store_commit(f->store), 0);
}

/* Move the row at first_seq to mailbox_set_aside, whole, as it was. */
static void set_aside(fixture_t *f, int64_t first_seq)
{
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO mailbox_set_aside (first_seq, recipient, n, pending, publish_id,"
             " first_item_seq, sender, sender_partner, message_id, accepted_at, rules, items,"
             " expires_at, body, done, case_id, is_case_event, set_aside_at, reason)"
             " SELECT first_seq, recipient, n, pending, publish_id, first_item_seq, sender,"
             " sender_partner, message_id, accepted_at, rules, items, expires_at, body, done,"
             " case_id, is_case_event, %lld, 'body of mailbox row %lld does not authenticate'"
             " FROM mailbox WHERE first_seq = %lld;"
             "DELETE FROM mailbox WHERE first_seq = %lld",
             SET_ASIDE_AT, (long long)first_seq, (long long)first_seq, (long long)first_seq);
    store_fixture_raw_exec(f->path, sql);
    mailbox_fixture_reopen(f); /* the counts in memory are learnt again */
}

/* Ack seqs[0 .. n) of recipient in a transaction of their own, committed. */
static void ack_committed(fixture_t *f, const char *recipient, const int64_t *seqs, size_t n)
{
    assert_int_equal(store_begin(f->store), 0);
    for (size_t k = 0; k < n; k++)
        assert_int_equal(store_mailbox_row_ack(f->store, recipient, (uint64_t)seqs[k]), 1);
    assert_int_equal(store_commit(f->store), 0);
}

/* ------------------------------------------------------------------ what the listing hands out */

/* What the listing handed out, copied. */
typedef struct listed_seen {
    size_t n, stop_after;
    uint64_t seq[32], item_seq[32], event_seq[32];
    uint32_t item_index[32];
    int set_aside[32], has_id[32], is_case_event[32];
    char sender[32][64], rule_id[32][72], rule_hash[32][72], case_id[32][16], reason[32][128];
    int64_t queued_at[32], expires_at[32], set_aside_at[32];
} listed_seen_t;

static void copy_or_null(char *out, size_t len, const char *text)
{
    snprintf(out, len, "%s", text != NULL ? text : "(null)");
}

static int collect_listed(const store_listed_t *d, void *arg)
{
    listed_seen_t *s = arg;
    assert_true(s->n < 32);
    size_t i = s->n++;
    s->seq[i] = d->seq;
    s->item_seq[i] = d->item_seq;
    s->item_index[i] = d->item_index;
    s->event_seq[i] = d->event_seq;
    s->set_aside[i] = d->set_aside;
    s->has_id[i] = d->message_id != NULL;
    s->is_case_event[i] = d->is_case_event;
    copy_or_null(s->sender[i], sizeof s->sender[i], d->sender);
    copy_or_null(s->rule_id[i], sizeof s->rule_id[i], d->rule_id);
    copy_or_null(s->rule_hash[i], sizeof s->rule_hash[i], d->rule_hash);
    copy_or_null(s->case_id[i], sizeof s->case_id[i], d->case_id);
    copy_or_null(s->reason[i], sizeof s->reason[i], d->reason);
    s->queued_at[i] = d->queued_at;
    s->expires_at[i] = d->expires_at;
    s->set_aside_at[i] = d->set_aside_at;
    return s->stop_after != 0 && s->n >= s->stop_after;
}

static int list(store_t *store, const char *recipient, uint64_t after, size_t limit,
                listed_seen_t *s)
{
    size_t stop_after = s->stop_after;
    memset(s, 0, sizeof *s);
    s->stop_after = stop_after;
    return store_mailbox_row_list(store, recipient, after, limit, collect_listed, s);
}

/* ------------------------------------------------------------------ a delivery's rule */

/* The rule of each pending delivery as its row's rule line names it;
 * nothing for a seq done, another's, in no row, or not a seq. */
static void test_rule(void **state)
{
    fixture_t *f = *state;
    mailboxes_t m;
    mailboxes(f, &m);
    const int64_t acked = m.a + 1;
    ack_committed(f, POLITIE, &acked, 1);
    store_delivery_rule_t out;
    for (int64_t k = 0; k < 4; k++) {
        memset(&out, 'x', sizeof out);
        int found = store_mailbox_row_rule(f->store, POLITIE, (uint64_t)(m.a + k), &out);
        if (k == 1) {
            assert_int_equal(found, 0); /* acked: the row's done bit */
            continue;
        }
        assert_int_equal(found, 1);
        assert_string_equal(out.rule_id, mailbox_fixture_two_rules[k % 2].rule_id);
        assert_string_equal(out.rule_hash, mailbox_fixture_two_rules[k % 2].rule_hash);
        assert_string_equal(out.case_id, "");
    }
    assert_int_equal(store_mailbox_row_rule(f->store, ZORG, (uint64_t)m.z + 1, &out), 1);
    assert_string_equal(out.rule_id, mailbox_fixture_two_rules[1].rule_id);
    static const struct {
        const char *recipient;
        int64_t offset; /* from m.a; -1: 0, -2: UINT64_MAX */
    } none[] = {
        {ZORG, 0},             /* POLITIE's */
        {POLITIE, 4},          /* ZORG's: in the gap between POLITIE's rows */
        {POLITIE, 10},         /* past every row */
        {"politie/anders", 0}, /* a recipient without rows */
        {POLITIE, -1},
        {POLITIE, -2},
    };
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        uint64_t seq = none[i].offset == -1   ? 0
                       : none[i].offset == -2 ? UINT64_MAX
                                              : (uint64_t)(m.a + none[i].offset);
        if (store_mailbox_row_rule(f->store, none[i].recipient, seq, &out) != 0)
            fail_msg("row %zu: a rule found", i);
    }
    assert_int_equal(store_mailbox_row_rule(f->store, NULL, (uint64_t)m.a, &out), -1);
    assert_int_equal(store_mailbox_row_rule(f->store, POLITIE, (uint64_t)m.a, NULL), -1);

    /* this transaction's acks and removals count; a rollback undoes them */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, (uint64_t)m.a + 2), 1);
    assert_int_equal(
        store_mailbox_row_remove(f->store, POLITIE, (uint64_t)m.b + 1, NOW, NULL, NULL), 1);
    assert_int_equal(store_mailbox_row_rule(f->store, POLITIE, (uint64_t)m.a + 2, &out), 0);
    assert_int_equal(store_mailbox_row_rule(f->store, POLITIE, (uint64_t)m.b + 1, &out), 0);
    assert_int_equal(store_mailbox_row_rule(f->store, POLITIE, (uint64_t)m.a + 3, &out), 1);
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(store_mailbox_row_rule(f->store, POLITIE, (uint64_t)m.a + 2, &out), 1);
    assert_int_equal(store_mailbox_row_rule(f->store, POLITIE, (uint64_t)m.b + 1, &out), 1);
    assert_string_equal(out.rule_id, mailbox_fixture_two_rules[1].rule_id);

    /* rule lines and items stored as the other of text and blob read as
     * the scan reads them */
    raw_row_exec(f->path,
                 "UPDATE mailbox SET rules = CAST(rules AS BLOB), items = CAST(items AS TEXT)"
                 " WHERE first_seq = %lld",
                 (long long)m.b);
    assert_int_equal(mailbox_fixture_raw_int(
                         f->path, "SELECT count(*) FROM mailbox WHERE typeof(rules) = 'blob'"),
                     1);
    assert_int_equal(store_mailbox_row_rule(f->store, POLITIE, (uint64_t)m.b + 1, &out), 1);
    assert_string_equal(out.rule_hash, mailbox_fixture_two_rules[1].rule_hash);
    listed_seen_t s = {0};
    assert_int_equal(list(f->store, POLITIE, (uint64_t)m.b, 1, &s), 1);
    assert_string_equal(s.rule_id[0], mailbox_fixture_two_rules[1].rule_id);
    assert_int_equal(s.item_index[0], 1);

    /* a row set aside holds no pending delivery */
    set_aside(f, m.c);
    assert_int_equal(store_mailbox_row_rule(f->store, POLITIE, (uint64_t)m.c, &out), 0);
}

/* A case's row names its case; a rule or case that cannot fit is no
 * honest row's (as store_delivery_rule answers). */
static void test_rule_case_and_sizes(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p;
    char case_id[SCHAKEL_CASE_ID_LEN + 1];
    static const char event[] = "a case event";
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_case_create(f->store, "ondermijning", "politie", NULL, NOW, case_id), 0);
    mailbox_fixture_publish(f->store, 5, 2, &p);
    int64_t first = store_delivery_seqs_reserve(f->store, 3);
    store_mailbox_entry_t e[2] = {{(uint64_t)p.item_seq[0], 0, 0}, {(uint64_t)p.item_seq[1], 1, 1}};
    store_mailbox_row_t r = {
        .first_seq = (uint64_t)first,
        .recipient = ZORG,
        .sender = SENDER,
        .sender_partner = PARTNER,
        .message_id = p.message_id,
        .accepted_at = NOW,
        .entries = e,
        .n = 1,
        .rules = mailbox_fixture_two_rules,
        .n_rules = 1,
        .case_id = case_id,
        .is_case_event = 1,
        .body = (const uint8_t *)event,
        .body_len = strlen(event),
    };
    if (store_mailbox_row_add(f->store, &r) != 0)
        fail_msg("case row: %s", store_errmsg(f->store));
    r = (store_mailbox_row_t){
        .first_seq = (uint64_t)first + 1,
        .recipient = POLITIE,
        .sender = SENDER,
        .sender_partner = PARTNER,
        .message_id = p.message_id,
        .accepted_at = NOW,
        .entries = e,
        .n = 2,
        .rules = mailbox_fixture_two_rules,
        .n_rules = 2,
    };
    if (store_mailbox_row_add(f->store, &r) != 0)
        fail_msg("row: %s", store_errmsg(f->store));
    assert_int_equal(store_commit(f->store), 0);
    store_delivery_rule_t out;
    assert_int_equal(store_mailbox_row_rule(f->store, POLITIE, (uint64_t)first + 2, &out), 1);
    /* rule lines no broker writes (it refuses such ids), yet well formed:
     * an id one longer than any, a hash of 66 */
    char id[SCHAKEL_MAX_ID_LEN + 2], hash[67];
    memset(id, 'r', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    memset(hash, 'a', sizeof hash - 1);
    hash[sizeof hash - 1] = '\0';
    raw_row_exec(f->path,
                 "UPDATE mailbox SET rules = '1:1,%zu:%s,2:h1,1:p,1:l,1:1,2:r2,%zu:%s,1:p,1:l,'"
                 " WHERE first_seq = %lld",
                 strlen(id), id, strlen(hash), hash, (long long)first + 1);
    assert_int_equal(store_mailbox_row_rule(f->store, ZORG, (uint64_t)first, &out), 1);
    assert_string_equal(out.rule_id, mailbox_fixture_two_rules[0].rule_id);
    assert_string_equal(out.case_id, case_id);
    assert_int_equal(store_mailbox_row_rule(f->store, POLITIE, (uint64_t)first + 1, &out), 0);
    assert_int_equal(store_mailbox_row_rule(f->store, POLITIE, (uint64_t)first + 2, &out), 0);
    /* a case id that is empty text is no case: no honest row */
    raw_row_exec(f->path, "UPDATE mailbox SET case_id = '' WHERE first_seq = %lld",
                 (long long)first);
    assert_int_equal(store_mailbox_row_rule(f->store, ZORG, (uint64_t)first, &out), 0);
}

/* A row whose columns read as no broker writes them is refused, as an ack
 * of it is, not guessed at. */
static void test_rule_damaged(void **state)
{
    static const char *const damage[] = {
        "UPDATE mailbox SET rules = 'kapot'",
        "UPDATE mailbox SET rules = x'00'",
        "UPDATE mailbox SET items = x'0000'",
        "UPDATE mailbox SET items = x'00000500010000000200000003000000'",
        "UPDATE mailbox SET done = x'0000'",
        "UPDATE mailbox SET done = 'x'",
        "UPDATE mailbox SET n = 2000",
        "UPDATE mailbox SET n = 'vier'",
        "UPDATE mailbox SET case_id = 'C-00000001'", /* a case's row of more than one */
    };
    fixture_t *f = *state;
    for (size_t i = 0; i < sizeof damage / sizeof damage[0]; i++) {
        mailboxes_t m;
        mailboxes(f, &m);
        store_delivery_rule_t out;
        assert_int_equal(store_mailbox_row_rule(f->store, POLITIE, (uint64_t)m.a, &out), 1);
        raw_row_exec(f->path, "%s WHERE first_seq = %lld", damage[i], (long long)m.a);
        if (store_mailbox_row_rule(f->store, POLITIE, (uint64_t)m.a, &out) != -1 ||
            strstr(store_errmsg(f->store), "damaged row") == NULL)
            fail_msg("damage %zu: not refused (%s)", i, store_errmsg(f->store));
        /* the other rows answer as before */
        assert_int_equal(store_mailbox_row_rule(f->store, POLITIE, (uint64_t)m.b, &out), 1);
        store_fixture_destroy(&f);
        f = store_fixture_new("schakel-mbquery", mailbox_fixture_key);
        assert_int_equal(store_mailbox_schema(f->store), 0);
        *state = f;
    }
}

/* ------------------------------------------------------------------ the listing */

/* POLITIE's deliveries in the usual mailboxes with A's second acked and B
 * set aside: A0, A2, A3, B0, B1 (set aside), C0, C1. */
static size_t expected_seqs(const mailboxes_t *m, uint64_t seqs[7])
{
    const int64_t all[7] = {m->a, m->a + 2, m->a + 3, m->b, m->b + 1, m->c, m->c + 1};
    for (size_t k = 0; k < 7; k++)
        seqs[k] = (uint64_t)all[k];
    return 7;
}

/* One recipient's waiting deliveries and those set aside, rows expanded
 * in seq order, the done ones left out, every column the listing shows. */
static void test_list(void **state)
{
    fixture_t *f = *state;
    mailboxes_t m;
    mailboxes(f, &m);
    const int64_t acked = m.a + 1;
    ack_committed(f, POLITIE, &acked, 1);
    set_aside(f, m.b);
    uint64_t want[7];
    size_t n_want = expected_seqs(&m, want);
    listed_seen_t s = {0};
    assert_int_equal(list(f->store, POLITIE, 0, 100, &s), (int)n_want);
    for (size_t k = 0; k < n_want; k++) {
        int aside = want[k] == (uint64_t)m.b || want[k] == (uint64_t)m.b + 1;
        const mailbox_published_t *p = want[k] < (uint64_t)m.b   ? &m.p[0]
                                       : want[k] < (uint64_t)m.c ? &m.p[1]
                                                                 : &m.p[2];
        uint64_t index = want[k] - (uint64_t)(p == &m.p[0] ? m.a : p == &m.p[1] ? m.b : m.c);
        assert_int_equal(s.seq[k], want[k]);
        assert_int_equal(s.item_index[k], index);
        assert_int_equal(s.item_seq[k], (uint64_t)p->item_seq[index]);
        assert_string_equal(s.sender[k], SENDER);
        assert_true(s.has_id[k]);
        assert_int_equal(s.queued_at[k], NOW);
        assert_string_equal(s.rule_id[k], mailbox_fixture_two_rules[index % 2].rule_id);
        assert_string_equal(s.rule_hash[k], mailbox_fixture_two_rules[index % 2].rule_hash);
        assert_string_equal(s.case_id[k], "(null)");
        assert_false(s.is_case_event[k]);
        assert_int_equal(s.event_seq[k], 0);
        assert_int_equal(s.set_aside[k], aside);
        /* waiting: its own rule's expiry; set aside: the row's, at which it goes */
        assert_int_equal(s.expires_at[k],
                         aside ? NOW + DAY : mailbox_fixture_two_rules[index % 2].expires_at);
        assert_int_equal(s.set_aside_at[k], aside ? SET_ASIDE_AT : 0);
        if (aside)
            assert_non_null(strstr(s.reason[k], "does not authenticate"));
        else
            assert_string_equal(s.reason[k], "(null)");
    }
    assert_int_equal(list(f->store, ZORG, 0, 100, &s), 2);
    assert_int_equal(s.seq[0], (uint64_t)m.z);
    assert_int_equal(s.item_seq[1], (uint64_t)m.p[0].item_seq[1]);
    /* the edges and the refusals, as store_mailbox_list's */
    assert_int_equal(list(f->store, "om/officier", 0, 100, &s), 0);
    assert_int_equal(list(f->store, POLITIE, UINT64_MAX, 100, &s), 0);
    assert_int_equal(list(f->store, POLITIE, INT64_MAX, 100, &s), 0);
    assert_int_equal(list(f->store, POLITIE, 0, 0, &s), 0);
    assert_int_equal(store_mailbox_row_list(f->store, NULL, 0, 100, collect_listed, &s), -1);
    assert_int_equal(store_mailbox_row_list(f->store, POLITIE, 0, 100, NULL, NULL), -1);
    assert_int_equal(
        store_mailbox_row_list(f->store, POLITIE, 0, (size_t)INT32_MAX + 1, collect_listed, &s),
        -1);
    assert_non_null(strstr(store_errmsg(f->store), "limit up to INT_MAX"));
}

/* Pages by after and limit: one ending inside a row goes on in it, one
 * ending at a row set aside goes on past it; every page size walks the
 * same deliveries; the callback stops it. */
static void test_list_paging(void **state)
{
    fixture_t *f = *state;
    mailboxes_t m;
    mailboxes(f, &m);
    const int64_t acked = m.a + 1;
    ack_committed(f, POLITIE, &acked, 1);
    set_aside(f, m.b);
    uint64_t want[7];
    size_t n_want = expected_seqs(&m, want);
    static const struct {
        int after; /* index into want, or -1 for 0 */
        size_t limit, stop_after;
        int visited, first;
    } rows[] = {
        {-1, 2, 0, 2, 0},  /* ends inside A, past its acked one */
        {1, 2, 0, 2, 2},   /* goes on inside A, ends inside B set aside */
        {2, 1, 0, 1, 3},   /* B0 alone */
        {3, 2, 0, 2, 4},   /* from inside B set aside into C */
        {4, 100, 0, 2, 5}, /* the rest */
        {6, 100, 0, 0, 0}, /* nothing after the last */
        {-1, 100, 3, 3, 0} /* the callback stops it */
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        listed_seen_t page = {.stop_after = rows[r].stop_after};
        uint64_t after = rows[r].after < 0 ? 0 : want[rows[r].after];
        int visited = list(f->store, POLITIE, after, rows[r].limit, &page);
        if (visited != rows[r].visited || page.n != (size_t)visited)
            fail_msg("row %zu: visited %d (callback %zu), want %d", r, visited, page.n,
                     rows[r].visited);
        for (int k = 0; k < visited; k++)
            assert_int_equal(page.seq[k], want[rows[r].first + k]);
    }
    /* an after inside A on its acked seq, or in ZORG's seqs between A and B */
    listed_seen_t s = {0};
    assert_int_equal(list(f->store, POLITIE, (uint64_t)m.a + 1, 1, &s), 1);
    assert_int_equal(s.seq[0], (uint64_t)m.a + 2);
    assert_int_equal(list(f->store, POLITIE, (uint64_t)m.z, 1, &s), 1);
    assert_int_equal(s.seq[0], (uint64_t)m.b);
    /* every page size walks every delivery once, in order */
    for (size_t limit = 1; limit <= n_want + 1; limit++) {
        size_t got = 0;
        uint64_t after = 0;
        for (;;) {
            listed_seen_t page = {0};
            int visited = list(f->store, POLITIE, after, limit, &page);
            assert_true(visited >= 0 && (size_t)visited <= limit);
            for (int k = 0; k < visited; k++) {
                assert_true(got < n_want);
                assert_int_equal(page.seq[k], want[got++]);
            }
            if ((size_t)visited < limit)
                break;
            after = page.seq[visited - 1];
        }
        if (got != n_want)
            fail_msg("pages of %zu: %zu deliveries, want %zu", limit, got, n_want);
    }
}

/* This transaction's acks and removals leave the listing at once, and
 * come back with a rollback; a row emptied so is passed over whole. */
static void test_list_marks(void **state)
{
    fixture_t *f = *state;
    mailboxes_t m;
    mailboxes(f, &m);
    listed_seen_t s = {0};
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, (uint64_t)m.a), 1);
    assert_int_equal(
        store_mailbox_row_remove(f->store, POLITIE, (uint64_t)m.a + 3, NOW, NULL, NULL), 1);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, (uint64_t)m.b), 1);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, (uint64_t)m.b + 1), 1);
    assert_int_equal(list(f->store, POLITIE, 0, 100, &s), 4);
    assert_int_equal(s.seq[0], (uint64_t)m.a + 1);
    assert_int_equal(s.seq[1], (uint64_t)m.a + 2);
    assert_int_equal(s.seq[2], (uint64_t)m.c);
    assert_int_equal(list(f->store, POLITIE, (uint64_t)m.a + 2, 1, &s), 1);
    assert_int_equal(s.seq[0], (uint64_t)m.c);
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(list(f->store, POLITIE, 0, 100, &s), 8);
    /* committed, the same */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, (uint64_t)m.b), 1);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, (uint64_t)m.b + 1), 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(list(f->store, POLITIE, 0, 100, &s), 6);
    assert_int_equal(s.seq[4], (uint64_t)m.c);
}

/* A case event's row: its case and the event seq its delivery.queued
 * entry names; a case row set aside keeps them. */
static void test_list_case(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p;
    char case_id[SCHAKEL_CASE_ID_LEN + 1];
    static const char event[] = "a case event";
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_case_create(f->store, "ondermijning", "politie", NULL, NOW, case_id), 0);
    mailbox_fixture_publish(f->store, 6, 1, &p);
    int64_t first = store_delivery_seqs_reserve(f->store, 2);
    store_mailbox_entry_t e[1] = {{(uint64_t)p.item_seq[0], 0, 0}};
    for (int k = 0; k < 2; k++) {
        store_mailbox_row_t r = {
            .first_seq = (uint64_t)first + (uint64_t)k,
            .recipient = ZORG,
            .sender = SENDER,
            .sender_partner = PARTNER,
            .message_id = p.message_id,
            .accepted_at = NOW,
            .entries = e,
            .n = 1,
            .rules = mailbox_fixture_two_rules,
            .n_rules = 1,
            .case_id = case_id,
            .is_case_event = k == 0,
            .body = (const uint8_t *)event,
            .body_len = strlen(event),
        };
        if (store_mailbox_row_add(f->store, &r) != 0)
            fail_msg("case row: %s", store_errmsg(f->store));
    }
    assert_int_equal(store_commit(f->store), 0);
    char sql[256];
    snprintf(sql, sizeof sql,
             "INSERT INTO audit (seq, at, event, delivery_seq, detail, hash) VALUES"
             " (1000, %lld, 'delivery.queued', %lld, 'case_id=%s event_seq=3', zeroblob(32))",
             NOW, (long long)first, case_id);
    store_fixture_raw_exec(f->path, sql);
    listed_seen_t s = {0};
    assert_int_equal(list(f->store, ZORG, 0, 100, &s), 2);
    assert_string_equal(s.case_id[0], case_id);
    assert_true(s.is_case_event[0]);
    assert_int_equal(s.event_seq[0], 3);
    assert_int_equal(s.item_seq[0], (uint64_t)p.item_seq[0]);
    assert_string_equal(s.case_id[1], case_id);
    assert_false(s.is_case_event[1]); /* a case's delivery, not an event: no entry looked up */
    assert_int_equal(s.event_seq[1], 0);
    set_aside(f, first);
    assert_int_equal(list(f->store, ZORG, 0, 100, &s), 2);
    assert_true(s.set_aside[0]);
    assert_true(s.is_case_event[0]);
    assert_int_equal(s.event_seq[0], 3);
}

/* Rows shown as far as they read: a column not as the broker writes it
 * reads as NULL or 0, waiting or set aside. */
static void test_list_damaged(void **state)
{
    fixture_t *f = *state;
    mailboxes_t m;
    mailboxes(f, &m);
    set_aside(f, m.b);
    set_aside(f, m.c);
    listed_seen_t s = {0};
    /* A waiting with rule lines that do not parse: no rule, the row's expiry */
    raw_row_exec(f->path, "UPDATE mailbox SET rules = 'kapot' WHERE first_seq = %lld",
                 (long long)m.a);
    assert_int_equal(list(f->store, POLITIE, 0, 4, &s), 4);
    for (int k = 0; k < 4; k++) {
        assert_int_equal(s.seq[k], (uint64_t)(m.a + k));
        assert_string_equal(s.rule_id[k], "(null)");
        assert_string_equal(s.rule_hash[k], "(null)");
        assert_int_equal(s.expires_at[k], NOW + DAY);
        assert_int_equal(s.item_seq[k], (uint64_t)m.p[0].item_seq[k]);
        assert_string_equal(s.sender[k], SENDER);
    }
    /* B set aside with its envelope columns of other types, its items and
     * done unreadable: every delivery listed, no item, no rule */
    raw_row_exec(f->path,
                 "UPDATE mailbox_set_aside SET sender = 7, message_id = 'kapot',"
                 " accepted_at = 'gisteren', reason = x'00ff', items = 'x', done = x'ffff',"
                 " expires_at = 'ooit', first_item_seq = -1 WHERE first_seq = %lld",
                 (long long)m.b);
    /* C set aside with an n out of range: its first seq alone */
    raw_row_exec(f->path, "UPDATE mailbox_set_aside SET n = 5000 WHERE first_seq = %lld",
                 (long long)m.c);
    assert_int_equal(list(f->store, POLITIE, (uint64_t)m.a + 3, 100, &s), 3);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(s.seq[k], (uint64_t)(m.b + k));
        assert_true(s.set_aside[k]);
        assert_string_equal(s.sender[k], "(null)");
        assert_false(s.has_id[k]);
        assert_int_equal(s.queued_at[k], 0);
        assert_int_equal(s.expires_at[k], 0);
        assert_string_equal(s.reason[k], "(null)");
        assert_int_equal(s.item_seq[k], 0);
        assert_int_equal(s.item_index[k], 0);
        assert_string_equal(s.rule_id[k], "(null)");
        assert_int_equal(s.set_aside_at[k], SET_ASIDE_AT);
    }
    assert_int_equal(s.seq[2], (uint64_t)m.c);
    assert_string_equal(s.rule_id[2], "(null)");
    assert_string_equal(s.sender[2], SENDER);
    /* A's done column of a wrong size: every delivery of it listed */
    raw_row_exec(f->path, "UPDATE mailbox SET done = x'0f0f', pending = 1 WHERE first_seq = %lld",
                 (long long)m.a);
    assert_int_equal(list(f->store, POLITIE, 0, 4, &s), 4);
    assert_int_equal(s.seq[3], (uint64_t)m.a + 3);
    /* and of the right size, all done but the last: that one */
    raw_row_exec(f->path, "UPDATE mailbox SET done = x'07' WHERE first_seq = %lld", (long long)m.a);
    assert_int_equal(list(f->store, POLITIE, 0, 1, &s), 1);
    assert_int_equal(s.seq[0], (uint64_t)m.a + 3);
}

/* ------------------------------------------------------------------ purge's walk */

static int next_recipient(store_t *store, const char *after, char *out)
{
    return store_mailbox_row_next_recipient(store, after, out, SCHAKEL_MAX_PRINCIPAL_LEN + 1);
}

/* Recipients with a pending delivery in byte order, one row each; a
 * recipient whose rows this transaction emptied is passed over; one whose
 * rows are set aside has none pending. */
static void test_next_recipient(void **state)
{
    fixture_t *f = *state;
    char out[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    assert_int_equal(next_recipient(f->store, "", out), 0);
    mailboxes_t m;
    mailboxes(f, &m);
    mailbox_published_t p;
    assert_int_equal(store_begin(f->store), 0);
    mailbox_fixture_publish(f->store, 9, 1, &p);
    int64_t early = row_add(f->store, &p, "brandweer/meldkamer", 1);
    assert_int_equal(store_commit(f->store), 0);
    static const char *const order[] = {"brandweer/meldkamer", POLITIE, ZORG};
    char after[SCHAKEL_MAX_PRINCIPAL_LEN + 1] = "";
    for (size_t k = 0; k < 3; k++) {
        assert_int_equal(next_recipient(f->store, after, out), 1);
        assert_string_equal(out, order[k]);
        memcpy(after, out, sizeof after);
    }
    assert_int_equal(next_recipient(f->store, after, out), 0);
    assert_int_equal(next_recipient(f->store, "politie/", out), 1);
    assert_string_equal(out, POLITIE);
    /* emptied in this transaction: ZORG's one row, and POLITIE's A */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, ZORG, (uint64_t)m.z), 1);
    assert_int_equal(store_mailbox_row_remove(f->store, ZORG, (uint64_t)m.z + 1, NOW, NULL, NULL),
                     1);
    for (int k = 0; k < 4; k++)
        assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, (uint64_t)(m.a + k)), 1);
    assert_int_equal(next_recipient(f->store, "brandweer/meldkamer", out), 1);
    assert_string_equal(out, POLITIE); /* C and B still pending */
    assert_int_equal(next_recipient(f->store, POLITIE, out), 0);
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(next_recipient(f->store, POLITIE, out), 1);
    assert_string_equal(out, ZORG);
    /* a recipient's only row set aside: nothing pending */
    set_aside(f, early);
    assert_int_equal(next_recipient(f->store, "", out), 1);
    assert_string_equal(out, POLITIE);
    /* an id that does not fit, the refusals */
    char small[8];
    assert_int_equal(store_mailbox_row_next_recipient(f->store, "", small, sizeof small), -1);
    assert_non_null(strstr(store_errmsg(f->store), "too long"));
    assert_int_equal(store_mailbox_row_next_recipient(f->store, NULL, out, sizeof out), -1);
    assert_int_equal(store_mailbox_row_next_recipient(f->store, "", NULL, 0), -1);
}

/* A recipient's pending seqs, oldest first, across rows, the done ones
 * and this transaction's left out, up to the limit. */
static void test_oldest(void **state)
{
    fixture_t *f = *state;
    mailboxes_t m;
    mailboxes(f, &m);
    const int64_t acked = m.a + 1;
    ack_committed(f, POLITIE, &acked, 1);
    uint64_t seqs[16];
    uint64_t want[8] = {(uint64_t)m.a,     (uint64_t)m.a + 2, (uint64_t)m.a + 3, (uint64_t)m.b,
                        (uint64_t)m.b + 1, (uint64_t)m.c,     (uint64_t)m.c + 1};
    for (size_t limit = 0; limit <= 8; limit++) {
        int n = store_mailbox_row_oldest(f->store, POLITIE, seqs, limit);
        assert_int_equal(n, limit < 7 ? (int)limit : 7);
        for (int k = 0; k < n; k++)
            assert_int_equal(seqs[k], want[k]);
    }
    assert_int_equal(store_mailbox_row_oldest(f->store, ZORG, seqs, 16), 2);
    assert_int_equal(seqs[1], (uint64_t)m.z + 1);
    assert_int_equal(store_mailbox_row_oldest(f->store, "om/officier", seqs, 16), 0);
    assert_int_equal(store_mailbox_row_oldest(f->store, NULL, seqs, 16), -1);
    assert_int_equal(store_mailbox_row_oldest(f->store, POLITIE, NULL, 16), -1);
    /* purge's step: the oldest removed in this transaction, asked again */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_oldest(f->store, POLITIE, seqs, 4), 4);
    for (int k = 0; k < 4; k++)
        assert_int_equal(store_mailbox_row_remove(f->store, POLITIE, seqs[k], NOW, NULL, NULL), 1);
    assert_int_equal(store_mailbox_row_oldest(f->store, POLITIE, seqs, 16), 3);
    assert_int_equal(seqs[0], (uint64_t)m.b + 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(store_mailbox_row_oldest(f->store, POLITIE, seqs, 16), 3);
    assert_int_equal(seqs[0], (uint64_t)m.b + 1);
    /* a row set aside holds none pending; a damaged row is refused */
    set_aside(f, m.c);
    assert_int_equal(store_mailbox_row_oldest(f->store, POLITIE, seqs, 16), 1);
    raw_row_exec(f->path, "UPDATE mailbox SET done = x'0000' WHERE first_seq = %lld",
                 (long long)m.b);
    assert_int_equal(store_mailbox_row_oldest(f->store, POLITIE, seqs, 16), -1);
    assert_non_null(strstr(store_errmsg(f->store), "damaged row"));
    raw_row_exec(f->path, "UPDATE mailbox SET n = 0, done = NULL WHERE first_seq = %lld",
                 (long long)m.b);
    assert_int_equal(store_mailbox_row_oldest(f->store, POLITIE, seqs, 16), -1);
    assert_non_null(strstr(store_errmsg(f->store), "damaged row"));
}

/* ------------------------------------------------------------------ totals */

/* Every mailbox's pending deliveries together: rows partly done, this
 * transaction's marks, a rollback, rows set aside not counted. */
static void test_backlog_total(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(store_mailbox_row_backlog_total(f->store), 0);
    mailboxes_t m;
    mailboxes(f, &m);
    assert_int_equal(store_mailbox_row_backlog_total(f->store), 10);
    const int64_t acked[2] = {m.a + 1, m.c + 1};
    ack_committed(f, POLITIE, acked, 2);
    assert_int_equal(store_mailbox_row_backlog_total(f->store), 8);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, ZORG, (uint64_t)m.z), 1);
    assert_int_equal(store_mailbox_row_remove(f->store, ZORG, (uint64_t)m.z + 1, NOW, NULL, NULL),
                     1);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, (uint64_t)m.b), 1);
    assert_int_equal(store_mailbox_row_backlog_total(f->store), 5);
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(store_mailbox_row_backlog_total(f->store), 8);
    set_aside(f, m.a);
    assert_int_equal(store_mailbox_row_backlog_total(f->store), 5);
}

/* The highest pending seq: the last row's last not done, this
 * transaction's marks included; a row they emptied passed over. */
static void test_last_seq(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(store_mailbox_row_last_seq(f->store), 0);
    mailboxes_t m;
    mailboxes(f, &m);
    assert_int_equal(store_mailbox_row_last_seq(f->store), m.c + 1);
    const int64_t acked = m.c + 1;
    ack_committed(f, POLITIE, &acked, 1);
    assert_int_equal(store_mailbox_row_last_seq(f->store), m.c);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, (uint64_t)m.c), 1);
    assert_int_equal(
        store_mailbox_row_remove(f->store, POLITIE, (uint64_t)m.b + 1, NOW, NULL, NULL), 1);
    assert_int_equal(store_mailbox_row_last_seq(f->store), m.b);
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(store_mailbox_row_last_seq(f->store), m.c);
    /* a done column that does not read counts as none done: it errs high */
    raw_row_exec(f->path, "UPDATE mailbox SET done = x'0000' WHERE first_seq = %lld",
                 (long long)m.c);
    assert_int_equal(store_mailbox_row_last_seq(f->store), m.c + 1);
    /* set aside: not pending */
    set_aside(f, m.c);
    assert_int_equal(store_mailbox_row_last_seq(f->store), m.b + 1);
    /* an n no broker writes: refused, not computed */
    raw_row_exec(f->path, "UPDATE mailbox SET n = 2000 WHERE first_seq = %lld", (long long)m.b);
    assert_int_equal(store_mailbox_row_last_seq(f->store), -1);
    assert_non_null(strstr(store_errmsg(f->store), "damaged row"));
}

/* ------------------------------------------------------------------ costs */

/* The query plans: each statement through its index, none sorting in a
 * temporary b-tree, so each costs its descents and the rows it reads. */
static void test_query_plans(void **state)
{
    fixture_t *f = *state;
    static const struct {
        enum mailbox_stmt_id id;
        const char *uses;
    } rows[] = {
        {MB_QUERY_RULE, "USING INDEX mailbox_by_recipient (recipient=? AND first_seq<?)"},
        {MB_QUERY_LIST_WAITING, "USING INDEX mailbox_by_recipient (recipient=? AND first_seq>?)"},
        {MB_QUERY_LIST_SET_ASIDE,
         "USING INDEX mailbox_set_aside_by_recipient (recipient=? AND first_seq>?)"},
        {MB_QUERY_LIST_EVENT, "USING INDEX audit_by_delivery (delivery_seq=?)"},
        {MB_QUERY_NEXT_RECIPIENT, "USING INDEX mailbox_by_recipient (recipient>?)"},
        {MB_QUERY_OLDEST, "USING INDEX mailbox_by_recipient (recipient=?)"},
        {MB_QUERY_LAST_SEQ, "SCAN mailbox"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        sqlite3_stmt *prepared = store_mailbox_stmt(f->store, rows[i].id);
        assert_non_null(prepared);
        char plan[2048];
        store_fixture_plan(f->path, sqlite3_sql(prepared), plan, sizeof plan);
        if (strstr(plan, rows[i].uses) == NULL || strstr(plan, "TEMP B-TREE") != NULL)
            fail_msg("row %zu: plan \"%s\": wanted %s, no sort", i, plan, rows[i].uses);
    }
}

int main(void)
{
    if (mailbox_fixture_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rule, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_rule_case_and_sizes, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_rule_damaged, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_list, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_list_paging, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_list_marks, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_list_case, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_list_damaged, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_next_recipient, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_oldest, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_backlog_total, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_last_seq, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_query_plans, setup, store_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
