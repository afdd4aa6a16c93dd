/*
 * test_store_mailbox_migrate.c — unit tests of broker/store_mailbox_migrate.c
 * against real SQLite files, each test in its own mkdtemp() folder under
 * /tmp, removed afterwards: the migration of the deliveries tables of
 * schema 12 into mailbox rows, on an open store and by store_open's schema
 * step 13 (every delivery scanned back as it was, the ones that cannot be
 * rows set aside with their columns, a rollback, the refusals), the rekey
 * of the rows by store_rekey, and the highest delivery seq the rows name.
 * A store of schema 12 is made from a current one: its deliveries are
 * queued as rows, then written back into the deliveries tables as a
 * broker of schema 12 sealed them (old_store). The store key is random per
 * run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <sodium.h>
#include <sqlite3.h>

#include "mailbox_fixture.h"
#include "schakel_limits.h"
#include "store.h"
#include "store_fixture.h"
#include "store_mailbox.h"

#define OM "om/officier"

static int setup(void **state)
{
    *state = store_fixture_new("schakel-mbmigrate", mailbox_fixture_key);
    return 0;
}

/* The first column of sql's first row as text, into out ("" for none). */
static void raw_text(const char *path, const char *sql, char *out, size_t len)
{
    sqlite3 *db = store_fixture_raw_open(path);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    out[0] = '\0';
    if (sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_text(stmt, 0) != NULL)
        snprintf(out, len, "%s", (const char *)sqlite3_column_text(stmt, 0));
    sqlite3_finalize(stmt);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* Fail unless cond holds of mailbox_set_aside's row first_seq, showing the
 * row when it does not. */
static void aside_check(const char *path, int64_t first_seq, const char *cond)
{
    char sql[768];
    snprintf(sql, sizeof sql, "SELECT %s FROM mailbox_set_aside WHERE first_seq = %lld", cond,
             (long long)first_seq);
    if (mailbox_fixture_raw_int(path, sql) == 1)
        return;
    snprintf(sql, sizeof sql,
             "SELECT quote(recipient) || ' n=' || quote(n) || ' pending=' || quote(pending) ||"
             " ' publish=' || quote(publish_id) || ' item=' || quote(first_item_seq) || ' ' ||"
             " quote(sender) || ' ' || quote(sender_partner) || ' at=' || quote(accepted_at) ||"
             " ' items=' || quote(items) || ' expires=' || quote(expires_at) || ' done=' ||"
             " quote(done) || ' case=' || quote(case_id) || ' event=' || quote(is_case_event) ||"
             " ' set_aside_at=' || quote(set_aside_at) || ' ' || quote(reason)"
             " FROM mailbox_set_aside WHERE first_seq = %lld",
             (long long)first_seq);
    char row[1024];
    raw_text(path, sql, row, sizeof row);
    fail_msg("set-aside row %lld: not %s: %s", (long long)first_seq, cond, row);
}

/* ------------------------------------------------------------------ deliveries as the broker
 * queues them */

typedef struct rule {
    const char *id, *hash, *purpose, *basis;
    int64_t expires_at;
    uint32_t fields;
} rule_t;

static const rule_t short_rule = {"gemeente-naar-politie", "aa11",    "Signalering",
                                  "Gemeentewet art. 172",  NOW + DAY, 0x3};
static const rule_t long_rule = {"gemeente-naar-zorg", "bb22",         "Zorg, en\nnazorg",
                                 "Wmo 2015: art. 5.2", NOW + 30 * DAY, 0x5};
static const rule_t case_rule = {"ondermijning-lid", "cc33",        "Casusoverleg",
                                 "Wpg art. 8",       NOW + 7 * DAY, 0};

/* Queue item k of p for recipient: a signal by reference under r, or with
 * case_id a case's delivery with body (an event when event is 1). */
static int64_t queue(store_t *store, const mailbox_published_t *p, size_t k, const char *recipient,
                     const rule_t *r, const char *case_id, int event, const char *body)
{
    store_delivery_t d = {
        .recipient = recipient,
        .item_seq = (uint64_t)p->item_seq[k],
        .message_id = p->message_id,
        .item_index = (uint32_t)k,
        .sender = SENDER,
        .sender_partner = PARTNER,
        .rule_id = r->id,
        .rule_hash = r->hash,
        .purpose = r->purpose,
        .legal_basis = r->basis,
        .accepted_at = NOW,
        .expires_at = r->expires_at,
        .body = (const uint8_t *)body,
        .body_len = body != NULL ? strlen(body) : 0,
        .case_id = case_id,
        .is_case_event = event,
        .by_ref = case_id == NULL && body == NULL,
        .fields = r->fields,
    };
    int64_t seq = store_delivery_add(store, &d);
    if (seq <= 0)
        fail_msg("delivery add: %s", store_errmsg(store));
    return seq;
}

/* ------------------------------------------------------------------ views */

/* One delivery as the push is handed it, copied out field by field. */
typedef struct view {
    uint64_t seq, item_seq;
    uint8_t message_id[16];
    uint32_t item_index, fields;
    char recipient[64], sender[64], sender_partner[32], rule_id[64], rule_hash[72];
    char purpose[64], legal_basis[64], case_id[16];
    int64_t accepted_at, expires_at;
    int has_case, is_case_event, by_ref;
    uint8_t body[128];
    size_t body_len;
} view_t;

typedef struct views {
    size_t n;
    view_t v[16];
} views_t;

static int view_collect(const store_delivery_t *d, void *arg)
{
    views_t *vs = arg;
    assert_true(vs->n < 16);
    view_t *v = &vs->v[vs->n++];
    memset(v, 0, sizeof *v);
    v->seq = d->seq;
    v->item_seq = d->item_seq;
    memcpy(v->message_id, d->message_id, 16);
    v->item_index = d->item_index;
    v->fields = d->fields;
    snprintf(v->recipient, sizeof v->recipient, "%s", d->recipient);
    snprintf(v->sender, sizeof v->sender, "%s", d->sender);
    snprintf(v->sender_partner, sizeof v->sender_partner, "%s", d->sender_partner);
    snprintf(v->rule_id, sizeof v->rule_id, "%s", d->rule_id);
    snprintf(v->rule_hash, sizeof v->rule_hash, "%s", d->rule_hash);
    snprintf(v->purpose, sizeof v->purpose, "%s", d->purpose);
    snprintf(v->legal_basis, sizeof v->legal_basis, "%s", d->legal_basis);
    v->has_case = d->case_id != NULL;
    snprintf(v->case_id, sizeof v->case_id, "%s", d->case_id != NULL ? d->case_id : "");
    v->accepted_at = d->accepted_at;
    v->expires_at = d->expires_at;
    v->is_case_event = d->is_case_event;
    v->by_ref = d->by_ref;
    assert_true(d->body_len <= sizeof v->body);
    if (d->body_len > 0)
        memcpy(v->body, d->body, d->body_len);
    v->body_len = d->body_len;
    return 0;
}

/* recipient's deliveries through the rows' scan. */
static void views_rows(store_t *store, const char *recipient, views_t *vs)
{
    memset(vs, 0, sizeof *vs);
    if (store_mailbox_row_scan(store, recipient, 0, 100, NULL, view_collect, vs) < 0)
        fail_msg("row scan: %s", store_errmsg(store));
}

/* Drop the view of seq from vs (it is there). */
static void views_without(views_t *vs, uint64_t seq)
{
    for (size_t k = 0; k < vs->n; k++)
        if (vs->v[k].seq == seq) {
            memmove(&vs->v[k], &vs->v[k + 1], (vs->n - k - 1) * sizeof vs->v[0]);
            vs->n--;
            return;
        }
    fail_msg("seq %llu not among the views", (unsigned long long)seq);
}

static void views_equal(const views_t *want, const views_t *got)
{
    assert_int_equal(got->n, want->n);
    for (size_t k = 0; k < want->n; k++) {
        const view_t *a = &want->v[k], *b = &got->v[k];
        assert_int_equal(b->seq, a->seq);
        assert_int_equal(b->item_seq, a->item_seq);
        assert_memory_equal(b->message_id, a->message_id, 16);
        assert_int_equal(b->item_index, a->item_index);
        assert_int_equal(b->fields, a->fields);
        assert_string_equal(b->recipient, a->recipient);
        assert_string_equal(b->sender, a->sender);
        assert_string_equal(b->sender_partner, a->sender_partner);
        assert_string_equal(b->rule_id, a->rule_id);
        assert_string_equal(b->rule_hash, a->rule_hash);
        assert_string_equal(b->purpose, a->purpose);
        assert_string_equal(b->legal_basis, a->legal_basis);
        assert_int_equal(b->has_case, a->has_case);
        assert_string_equal(b->case_id, a->case_id);
        assert_int_equal(b->accepted_at, a->accepted_at);
        assert_int_equal(b->expires_at, a->expires_at);
        assert_int_equal(b->is_case_event, a->is_case_event);
        assert_int_equal(b->by_ref, a->by_ref);
        assert_int_equal(b->body_len, a->body_len);
        if (a->body_len > 0)
            assert_memory_equal(b->body, a->body, a->body_len);
    }
}

/* The store every migration test starts from: three recipients, signals
 * of several items under two rules, a case event and a case's delivery
 * that is not an event, one delivery acked (POLITIE's), none of ZORG's,
 * and one of OM's set aside after its body was damaged. Queued as rows;
 * `all` holds every delivery's view (om[2]'s too) as the scan gave it
 * before the damage, the counts are learnt after the set-aside (POLITIE
 * 4, ZORG 3, OM 2). Committed: old_store turns it into schema 12's. */
typedef struct world {
    mailbox_published_t a, b, c, d;
    char case_id[SCHAKEL_CASE_ID_LEN + 1];
    int64_t politie[5], zorg[3], om[3];
    views_t all[3];
    store_set_aside_t aside; /* om[2]'s */
    int64_t aside_expires_at;
} world_t;

static const char *const recipients[3] = {POLITIE, ZORG, OM};

static void world_make(fixture_t *f, world_t *w)
{
    memset(w, 0, sizeof *w);
    assert_int_equal(store_begin(f->store), 0);
    mailbox_fixture_publish(f->store, 1, 3, &w->a);
    mailbox_fixture_publish(f->store, 2, 2, &w->b);
    mailbox_fixture_publish(f->store, 3, 1, &w->c);
    mailbox_fixture_publish(f->store, 4, 1, &w->d);
    assert_int_equal(store_case_create(f->store, "ondermijning", "politie", NULL, NOW, w->case_id),
                     0);
    w->politie[0] = queue(f->store, &w->a, 0, POLITIE, &short_rule, NULL, 0, NULL);
    w->politie[1] = queue(f->store, &w->a, 1, POLITIE, &short_rule, NULL, 0, NULL);
    w->politie[2] = queue(f->store, &w->a, 2, POLITIE, &long_rule, NULL, 0, NULL);
    w->politie[3] = queue(f->store, &w->b, 0, POLITIE, &short_rule, NULL, 0, NULL);
    w->politie[4] = queue(f->store, &w->b, 1, POLITIE, &short_rule, NULL, 0, NULL);
    w->zorg[0] = queue(f->store, &w->a, 0, ZORG, &long_rule, NULL, 0, NULL);
    w->zorg[1] = queue(f->store, &w->a, 2, ZORG, &long_rule, NULL, 0, NULL);
    w->zorg[2] = queue(f->store, &w->c, 0, ZORG, &case_rule, w->case_id, 1, "event for zorg");
    w->om[0] = queue(f->store, &w->a, 1, OM, &short_rule, NULL, 0, NULL);
    w->om[1] = queue(f->store, &w->c, 0, OM, &case_rule, w->case_id, 0, "case note for om");
    w->om[2] = queue(f->store, &w->d, 0, OM, &short_rule, NULL, 0, NULL);
    assert_int_equal(store_commit(f->store), 0);

    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_delivery_ack(f->store, POLITIE, (uint64_t)w->politie[1]), 1);
    assert_int_equal(store_commit(f->store), 0);
    for (int r = 0; r < 3; r++)
        views_rows(f->store, recipients[r], &w->all[r]);

    mailbox_fixture_raw_execf(f->path,
                              "UPDATE mailbox SET body = zeroblob(44) WHERE first_seq = %lld",
                              (long long)w->om[2]);
    store_mailbox_aside_t row;
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_set_aside(f->store, OM, (uint64_t)w->om[2], NOW, &row), 1);
    assert_int_equal(store_set_aside_get(f->store, (uint64_t)w->om[2], &w->aside), 1);
    assert_int_equal(store_commit(f->store), 0);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT expires_at FROM mailbox_set_aside WHERE first_seq = %lld",
             (long long)w->om[2]);
    w->aside_expires_at = mailbox_fixture_raw_int(f->path, sql);
    for (int r = 0; r < 3; r++)
        assert_int_equal(store_mailbox_count(f->store, recipients[r]), r == 0 ? 4 : r == 1 ? 3 : 2);
}

/* The one delivery of view v, as store_fixture_delivery_put writes it. */
static void view_delivery(const view_t *v, store_delivery_t *d)
{
    memset(d, 0, sizeof *d);
    d->seq = v->seq;
    d->recipient = v->recipient;
    d->item_seq = v->item_seq;
    d->message_id = v->message_id;
    d->item_index = v->item_index;
    d->sender = v->sender;
    d->sender_partner = v->sender_partner;
    d->rule_id = v->rule_id;
    d->rule_hash = v->rule_hash;
    d->purpose = v->purpose;
    d->legal_basis = v->legal_basis;
    d->accepted_at = v->accepted_at;
    d->expires_at = v->expires_at;
    d->body = v->body;
    d->body_len = v->body_len;
    d->case_id = v->has_case ? v->case_id : NULL;
    d->is_case_event = v->is_case_event;
    d->by_ref = v->by_ref;
    d->fields = v->fields;
}

/* The store at f->path made one of schema 12, behind the open handle (or
 * with none open): the mailbox tables gone, every delivery of vs (n_vs
 * views) written into the deliveries table as schema 12 sealed it, and the
 * one of seq aside_seq (0: none) moved into deliveries_set_aside as schema
 * 10 to 12 set one aside: its body as the damage left it, when
 * (set_aside_at), why and its bounded expiry (aside_expires_at). */
static void old_store(fixture_t *f, const view_t *vs, size_t n_vs, int64_t aside_seq,
                      const char *reason, int64_t aside_expires_at)
{
    sqlite3 *db = store_fixture_raw_open(f->path);
    store_fixture_db_exec(db, "BEGIN;" STORE_FIXTURE_MAILBOX_BEFORE_13);
    for (size_t k = 0; k < n_vs; k++) {
        store_delivery_t d;
        view_delivery(&vs[k], &d);
        store_fixture_delivery_put(db, mailbox_fixture_key, &d);
    }
    if (aside_seq > 0) {
        sqlite3_stmt *move = NULL;
        assert_int_equal(
            sqlite3_prepare_v2(
                db,
                "INSERT INTO deliveries_set_aside (seq, recipient, item_seq, message_id,"
                " item_index, sender, sender_partner, rule_id, rule_hash, purpose, legal_basis,"
                " accepted_at, expires_at, body, case_id, is_case_event, by_ref, set_aside_at,"
                " reason) SELECT seq, recipient, item_seq, message_id, item_index, sender,"
                " sender_partner, rule_id, rule_hash, purpose, legal_basis, accepted_at, ?2,"
                " zeroblob(44), case_id, is_case_event, by_ref, ?3, ?4 FROM deliveries"
                " WHERE seq = ?1",
                -1, &move, NULL),
            SQLITE_OK);
        assert_int_equal(sqlite3_bind_int64(move, 1, aside_seq), SQLITE_OK);
        assert_int_equal(sqlite3_bind_int64(move, 2, aside_expires_at), SQLITE_OK);
        assert_int_equal(sqlite3_bind_int64(move, 3, NOW), SQLITE_OK);
        assert_int_equal(sqlite3_bind_text(move, 4, reason, -1, SQLITE_STATIC), SQLITE_OK);
        assert_int_equal(sqlite3_step(move), SQLITE_DONE);
        assert_int_equal(sqlite3_changes(db), 1);
        sqlite3_finalize(move);
        char sql[96];
        snprintf(sql, sizeof sql, "DELETE FROM deliveries WHERE seq = %lld", (long long)aside_seq);
        store_fixture_db_exec(db, sql);
    }
    store_fixture_db_exec(db, "PRAGMA user_version = 12; COMMIT");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* The world's store made one of schema 12: every delivery of it as it
 * was queued, om[2] set aside. */
static void world_old(fixture_t *f, const world_t *w)
{
    view_t vs[16];
    size_t n = 0;
    for (int r = 0; r < 3; r++)
        for (size_t k = 0; k < w->all[r].n; k++)
            vs[n++] = w->all[r].v[k];
    old_store(f, vs, n, w->om[2], w->aside.reason, w->aside_expires_at);
}

/* The views the world's deliveries are to be scanned with: all but the
 * one set aside. */
static void world_want(const world_t *w, views_t want[3])
{
    for (int r = 0; r < 3; r++)
        want[r] = w->all[r];
    views_without(&want[2], (uint64_t)w->om[2]);
}

/* Mailbox tables made and the deliveries moved, in one transaction, on
 * the open store; then the file says schema 13 again, as the schema step
 * leaves it (a later open must not migrate it twice). */
static void migrate(fixture_t *f)
{
    assert_int_equal(store_begin(f->store), 0);
    if (store_mailbox_schema(f->store) != 0 || store_mailbox_migrate(f->store) != 0)
        fail_msg("migrate: %s", store_errmsg(f->store));
    assert_int_equal(store_commit(f->store), 0);
    mailbox_fixture_raw_execf(f->path, "PRAGMA user_version = %d", store_schema_version());
}

/* ------------------------------------------------------------------ progress */

static char progress_last[64];
static unsigned progress_calls;

static void progress_hook(const char *step, uint64_t done)
{
    (void)done;
    snprintf(progress_last, sizeof progress_last, "%s", step);
    progress_calls++;
}

/* ------------------------------------------------------------------ the migration */

/* Every delivery comes back through the rows' scan with the very view it
 * had before it was written into the deliveries table; the one whose body
 * was damaged since is set aside with its columns and body as they were;
 * the row set aside before comes over with its when and why; the counts
 * the store knew stay right; the old tables are gone, the seq mark kept. */
static void test_migrate(void **state)
{
    fixture_t *f = *state;
    world_t w;
    world_make(f, &w);
    world_old(f, &w);
    views_t want[3], got;
    world_want(&w, want);
    assert_int_equal(want[0].n, 4); /* politie[1] acked */
    assert_int_equal(want[1].n, 3);
    assert_int_equal(want[2].n, 2); /* om[2] set aside */
    /* counts learnt before (world_make), then followed */

    /* damaged after the views were taken: it cannot be a row */
    int64_t damaged = w.politie[4];
    mailbox_fixture_raw_execf(
        f->path, "UPDATE deliveries SET body = x'00' || substr(body, 2) WHERE seq = %lld",
        (long long)damaged);
    char body_before[256], aside_body_before[256], aside_expiry[32];
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT hex(body) FROM deliveries WHERE seq = %lld",
             (long long)damaged);
    raw_text(f->path, sql, body_before, sizeof body_before);
    snprintf(sql, sizeof sql, "SELECT hex(body) FROM deliveries_set_aside WHERE seq = %lld",
             (long long)w.om[2]);
    raw_text(f->path, sql, aside_body_before, sizeof aside_body_before);
    snprintf(sql, sizeof sql, "SELECT expires_at FROM deliveries_set_aside WHERE seq = %lld",
             (long long)w.om[2]);
    raw_text(f->path, sql, aside_expiry, sizeof aside_expiry);
    int64_t high_before = mailbox_fixture_raw_int(f->path, "SELECT value FROM meta"
                                                           " WHERE name = 'delivery_seq_high'");
    time_t began = time(NULL);

    progress_calls = 0;
    store_set_progress(progress_hook);
    migrate(f);
    store_set_progress(NULL);
    assert_true(progress_calls >= 1);
    assert_string_equal(progress_last, "dropping the deliveries tables");

    views_without(&want[0], (uint64_t)damaged);
    for (int r = 0; r < 3; r++) {
        views_rows(f->store, recipients[r], &got);
        views_equal(&want[r], &got);
    }
    /* one row of one delivery each, nothing done */
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox"), 8);
    assert_int_equal(
        mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox WHERE n = 1 AND pending = 1"
                                         " AND done IS NULL"),
        8);
    /* the counts: the one set aside left POLITIE's */
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 3);
    assert_int_equal(store_mailbox_row_pending(f->store, ZORG), 3);
    assert_int_equal(store_mailbox_row_pending(f->store, OM), 2);
    assert_int_equal(
        mailbox_fixture_raw_int(f->path,
                                "SELECT sum(pending) FROM mailbox WHERE recipient = '" POLITIE "'"),
        3);

    /* the damaged one, set aside as it was mapped, its body untouched */
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox_set_aside"), 2);
    char text[256];
    snprintf(sql, sizeof sql, "SELECT hex(body) FROM mailbox_set_aside WHERE first_seq = %lld",
             (long long)damaged);
    raw_text(f->path, sql, text, sizeof text);
    assert_string_equal(text, body_before);
    snprintf(sql, sizeof sql, "SELECT reason FROM mailbox_set_aside WHERE first_seq = %lld",
             (long long)damaged);
    raw_text(f->path, sql, text, sizeof text);
    assert_non_null(strstr(text, "does not authenticate"));
    assert_non_null(strstr(text, "migration to the mailbox rows"));
    snprintf(sql, sizeof sql,
             "n = 1 AND pending = 1 AND done IS NULL AND recipient = '" POLITIE
             "' AND first_item_seq = %lld AND publish_id = %lld AND hex(items) = '01000000'"
             " AND accepted_at = %lld AND expires_at = %lld AND is_case_event = 0"
             " AND case_id IS NULL AND set_aside_at >= %lld AND sender = '" SENDER
             "' AND sender_partner = '" PARTNER "'",
             (long long)w.b.item_seq[1], (long long)w.b.publish_id, (long long)NOW,
             (long long)(NOW + DAY), (long long)began);
    aside_check(f->path, damaged, sql);
    /* its rule line, as the rows write one */
    snprintf(sql, sizeof sql, "SELECT rules FROM mailbox_set_aside WHERE first_seq = %lld",
             (long long)damaged);
    raw_text(f->path, sql, text, sizeof text);
    assert_string_equal(text, "10:1750086400,21:gemeente-naar-politie,4:aa11,11:Signalering,"
                              "20:Gemeentewet art. 172,");

    /* the row set aside before: its when and why and body kept */
    snprintf(sql, sizeof sql, "SELECT hex(body) FROM mailbox_set_aside WHERE first_seq = %lld",
             (long long)w.om[2]);
    raw_text(f->path, sql, text, sizeof text);
    assert_string_equal(text, aside_body_before);
    snprintf(sql, sizeof sql, "SELECT reason FROM mailbox_set_aside WHERE first_seq = %lld",
             (long long)w.om[2]);
    raw_text(f->path, sql, text, sizeof text);
    assert_string_equal(text, w.aside.reason);
    snprintf(sql, sizeof sql,
             "set_aside_at = %lld AND expires_at = %s AND n = 1 AND pending = 1"
             " AND recipient = '" OM "' AND first_item_seq = %lld AND publish_id = %lld"
             " AND hex(items) = '00000000'",
             (long long)NOW, aside_expiry, (long long)w.d.item_seq[0], (long long)w.d.publish_id);
    aside_check(f->path, w.om[2], sql);

    /* the old tables gone, their mark kept */
    assert_int_equal(mailbox_fixture_raw_int(f->path,
                                             "SELECT count(*) FROM sqlite_master WHERE tbl_name IN"
                                             " ('deliveries', 'deliveries_set_aside')"),
                     0);
    assert_int_equal(mailbox_fixture_raw_int(
                         f->path, "SELECT count(*) FROM sqlite_sequence WHERE name = 'deliveries'"),
                     0);
    assert_int_equal(
        mailbox_fixture_raw_int(f->path, "SELECT value FROM meta WHERE name = 'delivery_seq_high'"),
        high_before);
    int64_t high = 0;
    assert_int_equal(store_mailbox_seq_high(f->store, &high), 0);
    assert_int_equal(high, w.om[2]);

    /* the rows are the mailbox now: an ack over them */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_row_ack(f->store, POLITIE, (uint64_t)w.politie[0]), 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 2);
    views_rows(f->store, POLITIE, &got);
    assert_int_equal(got.n, 2);
    assert_int_equal(got.v[0].seq, (uint64_t)w.politie[2]);
}

/* A store of schema 12 opened: store_open's schema step 13 moves its
 * deliveries as store_mailbox_migrate does on an open store (every view
 * as it was, the damaged one and the one set aside before in
 * mailbox_set_aside, left for the opener to record), tells the progress
 * hook, and folds the deliveries' AUTOINCREMENT mark into
 * delivery_seq_high before it drops the tables: a seq handed out before,
 * even one no row names any more, is never handed out again. */
static void test_migrate_on_open(void **state)
{
    fixture_t *f = *state;
    world_t w;
    world_make(f, &w);
    store_close(&f->store);
    world_old(f, &w);
    views_t want[3], got;
    world_want(&w, want);
    views_without(&want[0], (uint64_t)w.politie[4]);
    mailbox_fixture_raw_execf(
        f->path,
        "UPDATE deliveries SET body = x'00' || substr(body, 2) WHERE seq = %lld;"
        "UPDATE sqlite_sequence SET seq = %lld WHERE name = 'deliveries';"
        "UPDATE meta SET value = %lld WHERE name = 'delivery_seq_high'",
        (long long)w.politie[4], (long long)w.om[2] + 7, (long long)w.om[2]);
    assert_int_equal(mailbox_fixture_raw_int(
                         f->path, "SELECT seq FROM sqlite_sequence WHERE name = 'deliveries'"),
                     w.om[2] + 7); /* a mark there to fold */

    progress_calls = 0;
    store_set_progress(progress_hook);
    f->store = store_fixture_open(f->path, mailbox_fixture_key);
    store_set_progress(NULL);
    assert_int_equal(store_migrated_from(f->store, NULL), 12);
    assert_true(progress_calls >= 1);
    assert_string_equal(progress_last, "dropping the deliveries tables");
    assert_int_equal(mailbox_fixture_raw_int(f->path, "PRAGMA user_version"),
                     store_schema_version());
    assert_int_equal(mailbox_fixture_raw_int(f->path,
                                             "SELECT count(*) FROM sqlite_master WHERE tbl_name IN"
                                             " ('deliveries', 'deliveries_set_aside')"),
                     0);
    assert_int_equal(mailbox_fixture_raw_int(
                         f->path, "SELECT count(*) FROM sqlite_sequence WHERE name = 'deliveries'"),
                     0);

    for (int r = 0; r < 3; r++) {
        views_rows(f->store, recipients[r], &got);
        views_equal(&want[r], &got);
    }
    assert_int_equal(store_mailbox_count(f->store, POLITIE), 3);
    assert_int_equal(store_mailbox_count(f->store, ZORG), 3);
    assert_int_equal(store_mailbox_count(f->store, OM), 2);
    assert_int_equal(
        mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox WHERE n = 1 AND pending = 1"
                                         " AND done IS NULL"),
        8);
    /* both set aside, neither yet on the trail: the opener's to record */
    uint64_t unrecorded[4] = {0};
    assert_int_equal(store_set_aside_unrecorded(f->store, 0, unrecorded, 4), 2);
    assert_int_equal(unrecorded[0], (uint64_t)w.politie[4]);
    assert_int_equal(unrecorded[1], (uint64_t)w.om[2]);
    store_set_aside_t x;
    assert_int_equal(store_set_aside_get(f->store, (uint64_t)w.om[2], &x), 1);
    assert_string_equal(x.reason, w.aside.reason);

    /* the mark: folded, and the next seq above it */
    assert_int_equal(
        mailbox_fixture_raw_int(f->path, "SELECT value FROM meta WHERE name = 'delivery_seq_high'"),
        w.om[2] + 7);
    assert_int_equal(store_begin(f->store), 0);
    int64_t next = queue(f->store, &w.d, 0, ZORG, &short_rule, NULL, 0, NULL);
    assert_int_equal(store_commit(f->store), 0);
    if (next <= w.om[2] + 7)
        fail_msg("seq %lld handed out again (the mark was %lld)", (long long)next,
                 (long long)w.om[2] + 7);
}

/* A store with nothing queued migrates to empty tables. */
static void test_migrate_empty(void **state)
{
    fixture_t *f = *state;
    old_store(f, NULL, 0, 0, NULL, 0);
    progress_calls = 0;
    store_set_progress(progress_hook);
    migrate(f);
    store_set_progress(NULL);
    assert_int_equal(progress_calls, 0); /* nothing walked, nothing to report */
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox"), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox_set_aside"), 0);
    assert_int_equal(
        mailbox_fixture_raw_int(f->path,
                                "SELECT count(*) FROM sqlite_master WHERE tbl_name = 'deliveries'"),
        0);
    int64_t high = -1;
    assert_int_equal(store_mailbox_seq_high(f->store, &high), 0);
    assert_int_equal(high, 0);
}

/* Both old tables' every column of every row, as text, into deliveries and
 * set_aside (8192 bytes each). */
static void old_tables_dump(fixture_t *f, char *deliveries, char *set_aside)
{
    static const char columns[] =
        "group_concat(quote(seq) || quote(recipient) || quote(item_seq) || quote(message_id) ||"
        " quote(item_index) || quote(sender) || quote(sender_partner) || quote(rule_id) ||"
        " quote(rule_hash) || quote(purpose) || quote(legal_basis) || quote(accepted_at) ||"
        " quote(expires_at) || quote(body) || quote(case_id) || quote(is_case_event) ||"
        " quote(by_ref), ';')";
    char sql[1024];
    snprintf(sql, sizeof sql, "SELECT %s FROM (SELECT * FROM deliveries ORDER BY seq)", columns);
    raw_text(f->path, sql, deliveries, 8192);
    snprintf(sql, sizeof sql,
             "SELECT %s || quote(group_concat(set_aside_at || reason)) FROM"
             " (SELECT * FROM deliveries_set_aside ORDER BY seq)",
             columns);
    raw_text(f->path, sql, set_aside, 8192);
    assert_true(strlen(deliveries) > 0 && strlen(deliveries) < 8191);
    assert_true(strlen(set_aside) > 0 && strlen(set_aside) < 8191);
}

/* A migration rolled back leaves the store as it was: the deliveries
 * tables row for row, no mailbox table, the counts. */
static void test_migrate_rolled_back(void **state)
{
    fixture_t *f = *state;
    world_t w;
    world_make(f, &w);
    world_old(f, &w);
    mailbox_fixture_raw_execf(
        f->path, "UPDATE deliveries SET body = x'00' || substr(body, 2) WHERE seq = %lld",
        (long long)w.politie[4]);
    char before[2][8192];
    old_tables_dump(f, before[0], before[1]);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_schema(f->store), 0);
    assert_int_equal(store_mailbox_migrate(f->store), 0);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 3); /* inside: set aside */
    assert_int_equal(store_rollback(f->store), 0);

    assert_int_equal(store_mailbox_count(f->store, POLITIE), 4); /* as learnt, before */
    assert_int_equal(mailbox_fixture_raw_int(f->path,
                                             "SELECT count(*) FROM sqlite_master WHERE tbl_name IN"
                                             " ('mailbox', 'mailbox_set_aside')"),
                     0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM deliveries"), 9);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM deliveries_set_aside"),
                     1);
    char after[2][8192];
    old_tables_dump(f, after[0], after[1]);
    assert_string_equal(after[0], before[0]);
    assert_string_equal(after[1], before[1]);
    /* and it can run again, to the end */
    migrate(f);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 3);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox"), 8);
}

/* Outside a transaction, without the tables, or onto tables that hold
 * rows already: refused, nothing moved. */
static void test_migrate_refusals(void **state)
{
    fixture_t *f = *state;
    world_t w;
    world_make(f, &w);
    world_old(f, &w);
    assert_int_equal(store_mailbox_migrate(NULL), -1);
    assert_int_equal(store_mailbox_migrate(f->store), -1);
    assert_non_null(strstr(store_errmsg(f->store), "no transaction open"));

    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_migrate(f->store), -1); /* no mailbox tables */
    assert_int_equal(store_rollback(f->store), 0);

    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_schema(f->store), 0);
    assert_int_equal(store_commit(f->store), 0);
    store_fixture_raw_exec(f->path, "INSERT INTO mailbox_set_aside (first_seq, set_aside_at,"
                                    " reason) VALUES (999999, 1, 'put there')");
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_migrate(f->store), -1);
    assert_non_null(strstr(store_errmsg(f->store), "the mailbox tables are not empty"));
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM deliveries"), 9);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox"), 0);
}

/* Deliveries that no row can hold are set aside, each with why, their
 * columns copied as they were: a signal with a body of its own (stores
 * before schema 5), a column of the wrong type, an item gone, an item
 * index not the item's, an expiry of no number (due at once) and one of
 * centuries (bounded by its item's). The good one beside them moves. */
static void test_migrate_no_row_form(void **state)
{
    fixture_t *f = *state;
    mailbox_published_t p[7];
    int64_t seq[7];
    assert_int_equal(store_begin(f->store), 0);
    for (int k = 0; k < 7; k++) {
        mailbox_fixture_publish(f->store, (uint8_t)(10 + k), 1, &p[k]);
        seq[k] = queue(f->store, &p[k], 0, POLITIE, &short_rule, NULL, 0, NULL);
    }
    assert_int_equal(store_commit(f->store), 0);
    views_t vs;
    views_rows(f->store, POLITIE, &vs);
    assert_int_equal(vs.n, 7);
    assert_int_equal(store_mailbox_count(f->store, POLITIE), 7);
    /* the second queued as stores before schema 5 queued a signal */
    vs.v[1].by_ref = 0;
    vs.v[1].fields = 0;
    memcpy(vs.v[1].body, "own", 3);
    vs.v[1].body_len = 3;
    old_store(f, vs.v, vs.n, 0, NULL, 0);
    mailbox_fixture_raw_execf(f->path, "UPDATE deliveries SET accepted_at = 'x' WHERE seq = %lld",
                              (long long)seq[2]);
    mailbox_fixture_raw_execf(f->path, "DELETE FROM items WHERE seq = %lld",
                              (long long)p[3].item_seq[0]);
    mailbox_fixture_raw_execf(f->path, "UPDATE deliveries SET item_index = 1 WHERE seq = %lld",
                              (long long)seq[4]);
    mailbox_fixture_raw_execf(
        f->path, "UPDATE deliveries SET expires_at = 'never' WHERE seq = %lld", (long long)seq[5]);
    mailbox_fixture_raw_execf(
        f->path, "UPDATE deliveries SET expires_at = 9000000000000000000 WHERE seq = %lld",
        (long long)seq[6]);
    migrate(f);

    views_t got;
    views_rows(f->store, POLITIE, &got);
    assert_int_equal(got.n, 1);
    assert_int_equal(got.v[0].seq, (uint64_t)seq[0]);
    assert_int_equal(store_mailbox_row_pending(f->store, POLITIE), 1);
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox_set_aside"), 6);
    static const char *const why[7] = {
        NULL,
        "a signal queued with a body of its own (before schema 5) has no mailbox row form",
        "damaged row: a column no broker writes so",
        "damaged row: the delivery's item or its publish is gone",
        "damaged row: the delivery's item index is not its item's",
        "damaged row: a column no broker writes so",
        "does not authenticate",
    };
    for (int k = 1; k < 7; k++) {
        char sql[160], text[256];
        snprintf(sql, sizeof sql, "SELECT reason FROM mailbox_set_aside WHERE first_seq = %lld",
                 (long long)seq[k]);
        raw_text(f->path, sql, text, sizeof text);
        if (strstr(text, why[k]) == NULL)
            fail_msg("delivery %d: reason \"%s\", not \"%s\"", k, text, why[k]);
    }
    /* copied as it was: the text in an integer column stays a text */
    aside_check(f->path, seq[2], "typeof(accepted_at) = 'text' AND accepted_at = 'x'");
    aside_check(f->path, seq[3], "publish_id IS NULL");
    aside_check(f->path, seq[4], "hex(items) = '01000000'");
    aside_check(f->path, seq[5], "expires_at = set_aside_at");
    aside_check(f->path, seq[6], "expires_at = 1750086400");
}

/* ------------------------------------------------------------------ rekey */

/* The world migrated, and a copy of every row's body in old_bodies. */
static void rekey_world(fixture_t *f, world_t *w, views_t want[3])
{
    world_make(f, w);
    world_old(f, w);
    world_want(w, want);
    migrate(f);
    store_fixture_raw_exec(f->path,
                           "CREATE TABLE old_bodies AS SELECT first_seq, body FROM mailbox");
}

/* Every row re-sealed under the new key by store_rekey:
 * each body changes, the scan under the new key gives every view as
 * before, after a reopen with the new key too, and each row's body is
 * counted once. */
static void test_rekey(void **state)
{
    fixture_t *f = *state;
    world_t w;
    views_t want[3], got;
    rekey_world(f, &w, want);
    uint8_t new_key[STORE_KEY_BYTES];
    randombytes_buf(new_key, sizeof new_key);
    store_rekey_counts_t counts = {0, 0};
    if (store_rekey(f->store, new_key, &counts) != 0)
        fail_msg("rekey: %s", store_errmsg(f->store));
    assert_int_equal(counts.mailbox_rows, 9); /* one body a row */
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox"), 9);
    assert_int_equal(
        mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox AS m JOIN old_bodies AS o"
                                         " ON o.first_seq = m.first_seq AND o.body = m.body"),
        0);
    for (int r = 0; r < 3; r++) {
        views_rows(f->store, recipients[r], &got);
        views_equal(&want[r], &got);
    }
    store_close(&f->store);
    f->store = store_fixture_open(f->path, new_key);
    for (int r = 0; r < 3; r++) {
        views_rows(f->store, recipients[r], &got);
        views_equal(&want[r], &got);
    }
    /* mailbox_set_aside is left as it is, as deliveries_set_aside was */
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox_set_aside"), 1);
    sodium_memzero(new_key, sizeof new_key);
}

/* A row that does not open, or reads as no broker writes it, refuses the
 * rekey, named; the caller's rollback leaves every row as it was, still
 * open under the old key. Outside a transaction, or without a key:
 * refused. */
static void test_rekey_refused(void **state)
{
    fixture_t *f = *state;
    world_t w;
    views_t want[3], got;
    rekey_world(f, &w, want);
    uint8_t new_key[STORE_KEY_BYTES];
    randombytes_buf(new_key, sizeof new_key);
    assert_int_equal(store_mailbox_rekey(NULL, new_key, NULL), -1);
    assert_int_equal(store_mailbox_rekey(f->store, new_key, NULL), -1);
    assert_non_null(strstr(store_errmsg(f->store), "no transaction open"));
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_rekey(f->store, NULL, NULL), -1);
    assert_non_null(strstr(store_errmsg(f->store), "no new key"));
    assert_int_equal(store_rollback(f->store), 0);

    mailbox_fixture_raw_execf(
        f->path, "UPDATE mailbox SET body = x'00' || substr(body, 2) WHERE first_seq = %lld",
        (long long)w.zorg[2]);
    store_rekey_counts_t counts = {0, 0};
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_rekey(f->store, new_key, &counts), -1);
    char expect[96];
    snprintf(expect, sizeof expect, "body of mailbox row %lld does not authenticate",
             (long long)w.zorg[2]);
    if (strstr(store_errmsg(f->store), expect) == NULL)
        fail_msg("rekey: \"%s\"", store_errmsg(f->store));
    assert_int_equal(counts.mailbox_rows, 0);
    assert_int_equal(store_rollback(f->store), 0);
    /* and store_rekey's own pass, which rolls itself back */
    assert_int_equal(store_rekey(f->store, new_key, &counts), -1);
    if (strstr(store_errmsg(f->store), expect) == NULL)
        fail_msg("store_rekey: \"%s\"", store_errmsg(f->store));

    /* a column no broker writes so, in the first row */
    store_fixture_raw_exec(f->path, "PRAGMA ignore_check_constraints = ON;"
                                    "UPDATE mailbox SET n = 'x' WHERE first_seq ="
                                    " (SELECT min(first_seq) FROM mailbox)");
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_rekey(f->store, new_key, &counts), -1);
    snprintf(expect, sizeof expect, "rekey: mailbox row %lld: damaged row",
             (long long)w.politie[0]);
    if (strstr(store_errmsg(f->store), expect) == NULL)
        fail_msg("rekey: \"%s\"", store_errmsg(f->store));
    assert_int_equal(store_rollback(f->store), 0);

    /* nothing re-sealed: every body as it was, the others open as before */
    assert_int_equal(
        mailbox_fixture_raw_int(f->path, "SELECT count(*) FROM mailbox AS m JOIN old_bodies AS o"
                                         " ON o.first_seq = m.first_seq AND o.body = m.body"),
        8);
    views_rows(f->store, OM, &got);
    views_equal(&want[2], &got);
    sodium_memzero(new_key, sizeof new_key);
}

/* ------------------------------------------------------------------ the seq high */

static int64_t seq_high(fixture_t *f)
{
    int64_t high = -1;
    if (store_mailbox_seq_high(f->store, &high) != 0)
        fail_msg("seq high: %s", store_errmsg(f->store));
    /* the same SQL on a connection without the store, as a file's reader */
    assert_int_equal(mailbox_fixture_raw_int(f->path, "SELECT " STORE_MAILBOX_SEQ_HIGH_SQL), high);
    return high;
}

static void mailbox_put(fixture_t *f, long long first_seq, int n)
{
    char sql[400];
    snprintf(sql, sizeof sql,
             "INSERT INTO mailbox (first_seq, recipient, n, pending, publish_id, first_item_seq,"
             " sender, sender_partner, message_id, accepted_at, rules, items, expires_at, body)"
             " VALUES (%lld, 'r', %d, 1, 1, 1, 's', 'p', zeroblob(16), 0, '', zeroblob(%d), 0,"
             " x'00')",
             first_seq, n, 4 * n);
    store_fixture_raw_exec(f->path, sql);
}

static void aside_put(fixture_t *f, long long first_seq, const char *n)
{
    char sql[200];
    snprintf(sql, sizeof sql,
             "INSERT INTO mailbox_set_aside (first_seq, n, set_aside_at, reason)"
             " VALUES (%lld, %s, 1, 'test')",
             first_seq, n);
    store_fixture_raw_exec(f->path, sql);
}

/* The highest seq the rows name: a row's last; a set-aside row's n not
 * trusted (not an integer of 1 to 1024: as 1024), so one that starts
 * before the last can end after it; an end past INT64_MAX as INT64_MAX;
 * the same through the SQL on a raw connection. */
static void test_seq_high(void **state)
{
    fixture_t *f = *state;
    int64_t high = 0;
    old_store(f, NULL, 0, 0, NULL, 0);
    assert_int_equal(store_mailbox_seq_high(f->store, &high), -1); /* no tables */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_mailbox_schema(f->store), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(seq_high(f), 0);
    mailbox_put(f, 100, 4);
    assert_int_equal(seq_high(f), 103);
    mailbox_put(f, 104, 2);
    assert_int_equal(seq_high(f), 105);
    /* an n the CHECK would refuse, written behind SQLite's back */
    store_fixture_raw_exec(f->path, "PRAGMA ignore_check_constraints = ON;"
                                    "UPDATE mailbox SET n = 2000 WHERE first_seq = 104");
    assert_int_equal(seq_high(f), 104 + 1023);
    store_fixture_raw_exec(f->path, "PRAGMA ignore_check_constraints = ON;"
                                    "UPDATE mailbox SET n = 2 WHERE first_seq = 104");
    aside_put(f, 50, "3"); /* below: changes nothing */
    assert_int_equal(seq_high(f), 105);
    aside_put(f, 200, "3");
    assert_int_equal(seq_high(f), 202);
    aside_put(f, 300, "'x'");
    aside_put(f, 310, "2");
    assert_int_equal(seq_high(f), 300 + 1023);
    aside_put(f, 2000, "5000");
    assert_int_equal(seq_high(f), 2000 + 1023);
    aside_put(f, 2400, "-1");
    assert_int_equal(seq_high(f), 2400 + 1023);
    aside_put(f, 2500, "NULL");
    assert_int_equal(seq_high(f), 2500 + 1023);
    aside_put(f, 9223372036854775800LL, "1");
    assert_int_equal(seq_high(f), INT64_MAX);
}

int main(void)
{
    if (mailbox_fixture_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrate, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_migrate_on_open, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_migrate_empty, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_migrate_rolled_back, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_migrate_refusals, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_migrate_no_row_form, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_rekey, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_rekey_refused, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_seq_high, setup, store_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
