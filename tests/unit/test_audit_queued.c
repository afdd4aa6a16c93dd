/*
 * test_audit_queued.c — unit tests of the "delivery.queued" entry that
 * lists an item's deliveries (schema 7): the deliveries text as
 * docs/OPERATIONS.md defines it, every way the store refuses one, a trail
 * that mixes both shapes of queued entries verifying and exporting, a
 * tampered list named by verify, and a real schema-6 store migrated.
 * record.c's buffering of these entries is test_record.c's; a broker's
 * trail, tests/integration/test_audit.c's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>
#include <sqlite3.h>

#include "audit.h"
#include "keys.h"
#include "schakel_limits.h"
#include "store.h"
#include "store_fixture.h"

#define BASE_TIME 1700000000
#define SUBJECT "subj-Q-0001"
#define HASH_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define HASH_B "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define RULE_A "rule r-a " HASH_A " 1700086400 sender,kind,theme,subject 6:Aanpak 3:Wpg\n"
#define TOKEN_64 "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01"
#define TOKEN_65 TOKEN_64 "2"
#define RULE_B "rule r-b " HASH_B " 0 sender,kind,theme 7:a\nb \"c\" 0:\n"

static char group_dir[64];
static keypair_t *broker_key;
static uint8_t store_key[STORE_KEY_BYTES];

typedef store_fixture_t fixture_t;

static int group_setup(void **state)
{
    (void)state;
    store_fixture_group_keys(group_dir, sizeof group_dir, "schakel-auditq-keys", store_key,
                             &broker_key);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    keys_destroy(&broker_key);
    store_fixture_remove_tree(group_dir);
    return 0;
}

static int setup(void **state)
{
    *state = store_fixture_new("schakel-auditq", store_key);
    return 0;
}

/* ------------------------------------------------------------------ entries */

static void append_entry(store_t *store, store_audit_entry_t *e)
{
    if (audit_append(store, broker_key, BASE_TIME, e) != 0)
        fail_msg("append %s: %s", e->field[STORE_AUDIT_EVENT].text, store_errmsg(store));
}

/* A queued entry of one item listing its deliveries (schema 7). */
static void append_listed(store_t *store, uint64_t item_seq, const char *tag, const char *text)
{
    store_audit_entry_t e;
    audit_entry_init(&e, "delivery.queued");
    audit_set_text(&e, STORE_AUDIT_ACTOR, "politie/bvh-koppeling");
    audit_set_int(&e, STORE_AUDIT_ITEM_INDEX, 0);
    audit_set_int(&e, STORE_AUDIT_ITEM_SEQ, (int64_t)item_seq);
    audit_set_text(&e, STORE_AUDIT_KIND, "witwassen");
    audit_set_text(&e, STORE_AUDIT_THEME, "ondermijning");
    audit_set_text(&e, STORE_AUDIT_SUBJECT_TAG, tag);
    audit_set_text(&e, STORE_AUDIT_DELIVERIES, text);
    append_entry(store, &e);
}

/* A queued entry of one delivery, as written before schema 7. */
static void append_single(store_t *store, uint64_t item_seq, uint64_t delivery, const char *tag)
{
    store_audit_entry_t e;
    audit_entry_init(&e, "delivery.queued");
    audit_set_text(&e, STORE_AUDIT_ACTOR, "politie/bvh-koppeling");
    audit_set_text(&e, STORE_AUDIT_RECIPIENT, "om/parket");
    audit_set_text(&e, STORE_AUDIT_RECIPIENT_PARTNER, "om");
    audit_set_int(&e, STORE_AUDIT_ITEM_SEQ, (int64_t)item_seq);
    audit_set_int(&e, STORE_AUDIT_DELIVERY_SEQ, (int64_t)delivery);
    audit_set_text(&e, STORE_AUDIT_THEME, "ondermijning");
    audit_set_text(&e, STORE_AUDIT_SUBJECT_TAG, tag);
    audit_set_text(&e, STORE_AUDIT_RULE_ID, "politie-om");
    audit_set_text(&e, STORE_AUDIT_PURPOSE, "Aanpak");
    append_entry(store, &e);
}

static void append_acked(store_t *store, const char *recipient, const char *seqs)
{
    store_audit_entry_t e;
    audit_entry_init(&e, "delivery.acked");
    audit_set_text(&e, STORE_AUDIT_ACTOR, recipient);
    audit_set_text(&e, STORE_AUDIT_RECIPIENT, recipient);
    audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, seqs);
    append_entry(store, &e);
}

static void append_expired(store_t *store, uint64_t delivery)
{
    store_audit_entry_t e;
    audit_entry_init(&e, "delivery.expired");
    audit_set_text(&e, STORE_AUDIT_RECIPIENT, "riec/analyse");
    audit_set_int(&e, STORE_AUDIT_DELIVERY_SEQ, (int64_t)delivery);
    append_entry(store, &e);
}

static void verify_ok(const char *path, audit_verify_report_t *r)
{
    uint8_t pk[1][32];
    memcpy(pk[0], broker_key->sign_pk, 32);
    store_t *reader = store_fixture_open_reader(path, store_key);
    if (audit_verify(reader, (const uint8_t(*)[32])pk, 1, NULL, r) != 0)
        fail_msg("audit_verify: %s", r->problem);
    store_close(&reader);
}

static size_t occurrences(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* ------------------------------------------------------------------ the text */

typedef struct seen {
    size_t n;
    store_audit_delivery_t d[8];
} seen_t;

static int keep_delivery(const store_audit_delivery_t *d, void *arg)
{
    seen_t *s = arg;
    assert_true(s->n < 8);
    s->d[s->n++] = *d;
    return 0;
}

static void assert_span(const char *s, size_t len, const char *expected)
{
    if (len != strlen(expected) || memcmp(s, expected, len) != 0)
        fail_msg("\"%.*s\" != \"%s\"", (int)len, s, expected);
}

/* The documented example: each delivery with its rule's facts, the
 * partner the part of the recipient before '/'. */
static void test_documented_text_parses(void **state)
{
    (void)state;
    seen_t s = {0};
    const char *text = RULE_A RULE_B "20 0 om/parket\n21 1 riec/analyse\n22 0 riec/team-2\n";
    assert_int_equal(store_audit_deliveries_parse(text, keep_delivery, &s), 3);
    assert_int_equal(s.n, 3);
    static const struct {
        uint64_t seq;
        const char *recipient, *partner, *rule, *purpose, *legal;
        int64_t expires;
    } expected[] = {
        {20, "om/parket", "om", "r-a", "Aanpak", "Wpg", 1700086400},
        {21, "riec/analyse", "riec", "r-b", "a\nb \"c\"", "", 0},
        {22, "riec/team-2", "riec", "r-a", "Aanpak", "Wpg", 1700086400},
    };
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(s.d[i].seq, expected[i].seq);
        assert_span(s.d[i].recipient, s.d[i].recipient_len, expected[i].recipient);
        assert_span(s.d[i].recipient, s.d[i].recipient_partner_len, expected[i].partner);
        assert_span(s.d[i].rule_id, s.d[i].rule_id_len, expected[i].rule);
        assert_span(s.d[i].purpose, s.d[i].purpose_len, expected[i].purpose);
        assert_span(s.d[i].legal_basis, s.d[i].legal_basis_len, expected[i].legal);
        assert_int_equal(s.d[i].expires_at, expected[i].expires);
    }
    assert_span(s.d[0].fields, s.d[0].fields_len, "sender,kind,theme,subject");
    assert_span(s.d[1].rule_hash, 64, HASH_B);
    /* fn may stop the walk; the count is the list's all the same */
    assert_int_equal(store_audit_deliveries_parse(text, NULL, NULL), 3);
    /* the longest tokens, and texts beyond ASCII */
    const char *longest =
        "rule " TOKEN_64 " " HASH_A " 9223372036854775807 sender_x,kind 4:\xc3\xa9\xc3\xa9 "
        "3:\xe2\x82\xac\n9223372036854775807 0 " TOKEN_64 "/" TOKEN_64 "\n";
    memset(&s, 0, sizeof s);
    assert_int_equal(store_audit_deliveries_parse(longest, keep_delivery, &s), 1);
    assert_span(s.d[0].purpose, s.d[0].purpose_len, "\xc3\xa9\xc3\xa9");
    assert_span(s.d[0].legal_basis, s.d[0].legal_basis_len, "\xe2\x82\xac");
    assert_span(s.d[0].recipient, s.d[0].recipient_partner_len, TOKEN_64);
    assert_int_equal(s.d[0].recipient_len, 129);
    assert_int_equal(s.d[0].expires_at, INT64_MAX);
}

/* Every text that is not the one spelling of its content is refused, by
 * the parser and by the store; and the entry shapes the store refuses. */
static void test_store_refuses_what_is_not_canonical(void **state)
{
    fixture_t *f = *state;
    static const char *const bad[] = {
        "",                                                     /* no rule, no delivery */
        RULE_A,                                                 /* no delivery */
        "20 0 om/parket\n",                                     /* no rule */
        RULE_A "20 0 om/parket",                                /* no final LF */
        RULE_A "020 0 om/parket\n",                             /* leading zero */
        RULE_A "0 0 om/parket\n",                               /* seq 0 */
        RULE_A "21 0 om/parket\n20 0 om/riec\n",                /* not ascending */
        RULE_A "20 0 om/parket\n20 0 om/riec\n",                /* twice */
        RULE_A "20 1 om/parket\n",                              /* no such rule */
        RULE_A RULE_B "20 0 om/parket\n",                       /* rule b unused */
        RULE_A RULE_B "20 1 om/parket\n21 0 om/riec\n",         /* not in order of first use */
        RULE_A RULE_A "20 0 om/parket\n21 1 om/riec\n",         /* one rule twice */
        RULE_A "20 0 om\n",                                     /* no principal */
        RULE_A "20 0 om/parket extra\n",                        /* a word too many */
        RULE_A "20  0 om/parket\n",                             /* two spaces */
        RULE_A "9223372036854775808 0 om/parket\n",             /* beyond INT64_MAX */
        "rule R-A " HASH_A " 0 sender 0: 0:\n20 0 om/parket\n", /* no id token */
        "rule r " HASH_A "0 0 sender 0: 0:\n20 0 om/parket\n",  /* hash of 65 */
        "rule r AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA 0 sender 0: 0:\n"
        "20 0 om/parket\n",                                               /* upper-case hash */
        "rule r " HASH_A " -1 sender 0: 0:\n20 0 om/parket\n",            /* negative */
        "rule r " HASH_A " 0 sender,,kind 0: 0:\n20 0 om/parket\n",       /* empty field name */
        "rule r " HASH_A " 0 sender, 0: 0:\n20 0 om/parket\n",            /* trailing comma */
        "rule r " HASH_A " 0 Sender 0: 0:\n20 0 om/parket\n",             /* not [a-z_] */
        "rule r " HASH_A " 0 sender 3:ab 0:\n20 0 om/parket\n",           /* length too long */
        "rule r " HASH_A " 0 sender 1:ab 0:\n20 0 om/parket\n",           /* too short */
        "rule r " HASH_A " 0 sender 01:a 0:\n20 0 om/parket\n",           /* leading zero */
        "rule r " HASH_A " 0 sender 1:\xff 0:\n20 0 om/parket\n",         /* not UTF-8 */
        "rule r " HASH_A " 0 sender 0: 0:\r\n20 0 om/parket\n",           /* CR */
        "rules r " HASH_A " 0 sender 0: 0:\n20 0 om/parket\n",            /* keyword */
        RULE_A "20 0 om/parket/x\n",                                      /* two slashes */
        RULE_A "20 0 om/Parket\n",                                        /* not a token */
        RULE_A "20 0 /parket\n",                                          /* no partner */
        RULE_A "20 0 om/\n",                                              /* no name */
        "rule " TOKEN_65 " " HASH_A " 0 sender 0: 0:\n20 0 om/parket\n",  /* token of 65 */
        RULE_A "20 0 om/" TOKEN_65 "\n",                                  /* name of 65 */
        "rule r " HASH_A " 0 sender 3:\xc3\xa9\xff 0:\n20 0 om/parket\n", /* UTF-8, then not */
        "rule r " HASH_A " 0 sender 2:\xc3 0:\n20 0 om/parket\n",         /* cut in a character */
        "rule r " HASH_A " 0 sender 3:\xc3\xa9",                          /* ends inside a text */
        "rule r " HASH_A,                                                 /* ends inside the line */
    };
    assert_int_equal(store_begin(f->store), 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (store_audit_deliveries_parse(bad[i], NULL, NULL) != 0)
            fail_msg("row %zu parsed: %s", i, bad[i]);
        store_audit_entry_t e;
        audit_entry_init(&e, "delivery.queued");
        audit_set_text(&e, STORE_AUDIT_DELIVERIES, bad[i]);
        if (audit_append(f->store, broker_key, BASE_TIME, &e) == 0)
            fail_msg("row %zu appended: %s", i, bad[i]);
        assert_non_null(strstr(store_errmsg(f->store), "canonical delivery list"));
    }
    assert_int_equal(store_audit_deliveries_parse(NULL, NULL, NULL), 0);

    /* More than the bound: 1,025 deliveries, or a text past its size. */
    size_t cap = 64 + (STORE_AUDIT_MAX_QUEUED_DELIVERIES + 1) * 32;
    char *many = malloc(cap);
    assert_non_null(many);
    size_t used = (size_t)snprintf(many, cap, "%s", RULE_A);
    for (unsigned i = 1; i <= STORE_AUDIT_MAX_QUEUED_DELIVERIES + 1; i++)
        used += (size_t)snprintf(many + used, cap - used, "%u 0 om/p%u\n", i, i);
    assert_int_equal(store_audit_deliveries_parse(many, NULL, NULL), 0);
    char *last = strstr(many, "1025 0 om/p1025\n");
    assert_non_null(last);
    *last = '\0';
    assert_int_equal(store_audit_deliveries_parse(many, NULL, NULL),
                     STORE_AUDIT_MAX_QUEUED_DELIVERIES);
    free(many);
    char *huge = malloc(STORE_AUDIT_MAX_DELIVERIES_TEXT + 64);
    assert_non_null(huge);
    memset(huge, '1', STORE_AUDIT_MAX_DELIVERIES_TEXT + 32);
    huge[STORE_AUDIT_MAX_DELIVERIES_TEXT + 32] = '\0';
    assert_int_equal(store_audit_deliveries_parse(huge, NULL, NULL), 0);
    free(huge);

    /* A canonical list on the wrong entry, or beside a single delivery's
     * columns. */
    static const int single[] = {STORE_AUDIT_RECIPIENT,    STORE_AUDIT_RECIPIENT_PARTNER,
                                 STORE_AUDIT_DELIVERY_SEQ, STORE_AUDIT_RULE_ID,
                                 STORE_AUDIT_RULE_HASH,    STORE_AUDIT_PURPOSE,
                                 STORE_AUDIT_LEGAL_BASIS,  STORE_AUDIT_FIELDS,
                                 STORE_AUDIT_EXPIRES_AT};
    const char *good = RULE_A "20 0 om/parket\n";
    for (size_t i = 0; i <= sizeof single / sizeof single[0]; i++) {
        store_audit_entry_t e;
        audit_entry_init(&e, i == 0 ? "delivery.acked" : "delivery.queued");
        audit_set_text(&e, STORE_AUDIT_DELIVERIES, good);
        if (i > 0 &&
            (single[i - 1] == STORE_AUDIT_DELIVERY_SEQ || single[i - 1] == STORE_AUDIT_EXPIRES_AT))
            audit_set_int(&e, single[i - 1], 20);
        else if (i > 0)
            audit_set_text(&e, single[i - 1], "om");
        assert_int_equal(audit_append(f->store, broker_key, BASE_TIME, &e), -1);
        assert_non_null(strstr(store_errmsg(f->store),
                               i == 0 ? "only a delivery.queued" : "names no single delivery"));
    }
    /* The transaction goes on: a good one is taken. */
    append_listed(f->store, 1, NULL, good);
    assert_int_equal(store_commit(f->store), 0);
}

/* ------------------------------------------------------------------ trails */

/* Both shapes in one chain: verify passes; the export of the subject
 * holds its listed entry, the acked entry of a listed delivery and an
 * expiry found by delivery seq; tail's JSON shows the list parsed. */
static void test_mixed_trail_verifies_and_exports(void **state)
{
    fixture_t *f = *state;
    char tag[STORE_SUBJECT_TAG_LEN + 1], *json = NULL, err[256];
    audit_verify_report_t r;
    assert_int_equal(store_subject_tag(f->store, SUBJECT, tag), 0);
    assert_int_equal(store_begin(f->store), 0);
    append_single(f->store, 1, 10, tag);
    append_listed(f->store, 2, tag, RULE_A RULE_B "20 0 om/parket\n21 1 riec/analyse\n");
    append_listed(f->store, 3, NULL, RULE_A "30 0 om/parket\n");
    append_acked(f->store, "om/parket", "10,20,30");
    append_expired(f->store, 21);
    assert_int_equal(store_commit(f->store), 0);
    verify_ok(f->path, &r);
    if (!r.intact || !r.index_intact)
        fail_msg("verify: %s %s", r.problem, r.index_problem);
    assert_int_equal(r.entries, 5);

    store_t *reader = store_fixture_open_reader(f->path, store_key);
    if (audit_subject_export(reader, SUBJECT, (int64_t)time(NULL), &json, err, sizeof err) != 0)
        fail_msg("export: %s", err);
    assert_int_equal(occurrences(json, "\"event\":\"delivery.queued\""), 2);
    assert_int_equal(occurrences(json, "\"event\":\"delivery.expired\""), 1);
    /* the ack of 10 and 20, not of 30 (another item's) */
    assert_int_equal(occurrences(json, "\"delivery_seqs\":\"10,20\",\"delivery_seqs_withheld\":1"),
                     1);
    assert_int_equal(occurrences(json, "\"deliveries_listed\":[{\"delivery_seq\":20,"
                                       "\"recipient\":\"om/parket\",\"recipient_partner\":\"om\","
                                       "\"rule_id\":\"r-a\""),
                     1);
    assert_int_equal(occurrences(json, "\"purpose\":\"a\\u000ab \\\"c\\\"\""), 1);
    free(json);
    store_close(&reader);
}

/* A list changed in a copy breaks the chain; one re-hashed by someone who
 * holds the file is named as not canonical (and the checkpoint would not
 * match the hash either way). */
static void test_tampered_lists_are_named(void **state)
{
    fixture_t *f = *state;
    audit_verify_report_t r;
    assert_int_equal(store_begin(f->store), 0);
    append_listed(f->store, 1, NULL, RULE_A "20 0 om/parket\n21 0 riec/analyse\n");
    assert_int_equal(store_commit(f->store), 0);
    store_close(&f->store);
    sqlite3 *db = store_fixture_raw_open_or_create(f->path);
    store_fixture_db_exec(db, "DROP TRIGGER audit_append_only_update;");
    store_fixture_db_exec(db,
                          "UPDATE audit SET deliveries = replace(deliveries, '21 0 riec/analyse', "
                          "'21 0 riec/other') WHERE seq = 1");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    verify_ok(f->path, &r);
    assert_false(r.intact);
    assert_non_null(strstr(r.problem, "does not match its hash"));

    /* Re-hashed, not canonical (seqs not ascending). */
    store_audit_entry_t e;
    uint8_t zero[STORE_AUDIT_HASH_BYTES] = {0}, hash[STORE_AUDIT_HASH_BYTES];
    const char *text = RULE_A "21 0 om/parket\n20 0 riec/analyse\n";
    audit_entry_init(&e, "delivery.queued");
    audit_set_text(&e, STORE_AUDIT_ACTOR, "politie/bvh-koppeling");
    audit_set_int(&e, STORE_AUDIT_ITEM_INDEX, 0);
    audit_set_int(&e, STORE_AUDIT_ITEM_SEQ, 1);
    audit_set_text(&e, STORE_AUDIT_KIND, "witwassen");
    audit_set_text(&e, STORE_AUDIT_THEME, "ondermijning");
    audit_set_text(&e, STORE_AUDIT_DELIVERIES, text);
    e.seq = 1;
    e.at = BASE_TIME;
    audit_entry_hash(zero, &e, hash);
    db = store_fixture_raw_open_or_create(f->path);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "UPDATE audit SET deliveries = ?1, hash = ?2, at = ?3"
                                        " WHERE seq = 1",
                                        -1, &stmt, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(stmt, 1, text, -1, SQLITE_STATIC);
    sqlite3_bind_blob(stmt, 2, hash, sizeof hash, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 3, BASE_TIME);
    assert_int_equal(sqlite3_step(stmt), SQLITE_DONE);
    sqlite3_finalize(stmt);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    verify_ok(f->path, &r);
    assert_false(r.intact);
    if (strstr(r.problem, "entry 1 is of a shape the broker does not write: deliveries is not "
                          "a canonical delivery list") == NULL)
        fail_msg("verify said: %s", r.problem);
    f->store = store_fixture_open(f->path, store_key);
}

/* The swap: a queued entry's list moved into delivery_seqs, or an acked
 * entry's into deliveries, by someone holding the file (the triggers
 * dropped). Each must break the chain at the moved entry, and the export
 * must not change its answer without verify saying so. */
static void test_lists_cannot_trade_columns(void **state)
{
    fixture_t *f = *state;
    char tag[STORE_SUBJECT_TAG_LEN + 1];
    audit_verify_report_t r;
    static const struct {
        const char *sql;
        uint64_t broken_seq;
    } rows[] = {
        {"UPDATE audit SET delivery_seqs = deliveries, deliveries = NULL"
         " WHERE event = 'delivery.queued'",
         1},
        {"UPDATE audit SET deliveries = delivery_seqs, delivery_seqs = NULL"
         " WHERE event = 'delivery.acked'",
         2},
    };
    assert_int_equal(store_subject_tag(f->store, SUBJECT, tag), 0);
    assert_int_equal(store_begin(f->store), 0);
    append_listed(f->store, 1, tag, RULE_A "20 0 om/parket\n21 0 riec/analyse\n");
    append_acked(f->store, "om/parket", "20,77");
    assert_int_equal(store_commit(f->store), 0);
    verify_ok(f->path, &r);
    assert_true(r.intact && r.index_intact);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char path[160];
        snprintf(path, sizeof path, "%s/swapped-%zu.db", f->dir, i);
        sqlite3 *db = store_fixture_raw_open_or_create(f->path);
        sqlite3 *copy = store_fixture_raw_open_or_create(path);
        sqlite3_backup *backup = sqlite3_backup_init(copy, "main", db, "main");
        assert_non_null(backup);
        assert_int_equal(sqlite3_backup_step(backup, -1), SQLITE_DONE);
        assert_int_equal(sqlite3_backup_finish(backup), SQLITE_OK);
        assert_int_equal(sqlite3_close(db), SQLITE_OK);
        store_fixture_db_exec(copy, "DROP TRIGGER audit_append_only_update;");
        store_fixture_db_exec(copy, rows[i].sql);
        assert_int_equal(store_fixture_db_int(copy, "SELECT changes()"), 1);
        assert_int_equal(sqlite3_close(copy), SQLITE_OK);
        verify_ok(path, &r);
        if (r.intact || r.broken_seq != rows[i].broken_seq ||
            strstr(r.problem, "does not match its hash") == NULL)
            fail_msg("row %zu: intact=%d at %llu: %s", i, r.intact,
                     (unsigned long long)r.broken_seq, r.problem);
        unlink(path);
    }
}

/* ------------------------------------------------------------------ shape rules in verify */

/* Insert an entry as someone holding the file would: every column as the
 * entry has it, its hash recomputed after prev (the store's checks and
 * triggers do not see a raw insert). */
static void forge_entry(const char *path, store_audit_entry_t *e,
                        const uint8_t prev[STORE_AUDIT_HASH_BYTES])
{
    char sql[1024];
    size_t used = (size_t)snprintf(sql, sizeof sql, "INSERT INTO audit (seq, at");
    for (int i = 0; i < STORE_AUDIT_FIELD_COUNT; i++)
        used += (size_t)snprintf(sql + used, sizeof sql - used, ", %s", store_audit_fields[i].name);
    used += (size_t)snprintf(sql + used, sizeof sql - used, ", hash) VALUES (?");
    for (int i = 0; i < STORE_AUDIT_FIELD_COUNT + 2; i++)
        used += (size_t)snprintf(sql + used, sizeof sql - used, ", ?");
    snprintf(sql + used, sizeof sql - used, ")");
    audit_entry_hash(prev, e, e->hash);
    sqlite3 *db = store_fixture_raw_open_or_create(path);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    sqlite3_bind_int64(stmt, 1, (int64_t)e->seq);
    sqlite3_bind_int64(stmt, 2, e->at);
    for (int i = 0; i < STORE_AUDIT_FIELD_COUNT; i++) {
        const store_audit_value_t *v = &e->field[i];
        if (!v->present)
            sqlite3_bind_null(stmt, 3 + i);
        else if (store_audit_fields[i].is_integer)
            sqlite3_bind_int64(stmt, 3 + i, v->number);
        else
            sqlite3_bind_text(stmt, 3 + i, v->text, -1, SQLITE_STATIC);
    }
    sqlite3_bind_blob(stmt, 3 + STORE_AUDIT_FIELD_COUNT, e->hash, STORE_AUDIT_HASH_BYTES,
                      SQLITE_STATIC);
    assert_int_equal(sqlite3_step(stmt), SQLITE_DONE);
    sqlite3_finalize(stmt);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* Each write-time shape rule, on an entry forged with a correct hash (no
 * checkpoint covers it): verify breaks the chain there and says which
 * rule. The first rows are shapes the broker writes, which verify. */
static void test_verify_enforces_the_shape_rules(void **state)
{
    fixture_t *f = *state;
    const char *listed = RULE_A "20 0 om/parket\n";
    enum {
        ACKED_OK,
        QUEUED_OK,
        SEQS_ON_EXPIRED,
        SEQS_NOT_CANONICAL,
        SEQS_WITH_SEQ,
        LIST_ON_ACKED,
        LIST_NOT_CANONICAL,
        LIST_WITH_RECIPIENT,
        LIST_WITH_EXPIRES,
        BOTH
    };
    static const struct {
        int shape;
        const char *problem; /* NULL: intact */
    } rows[] = {
        {ACKED_OK, NULL},
        {QUEUED_OK, NULL},
        {SEQS_ON_EXPIRED, "only a delivery.acked entry lists delivery_seqs"},
        {SEQS_NOT_CANONICAL, "delivery_seqs is not a list of 1 to 1024 ascending seqs"},
        {SEQS_WITH_SEQ, "an entry has delivery_seq or delivery_seqs, not both"},
        {LIST_ON_ACKED, "only a delivery.queued entry lists deliveries"},
        {LIST_NOT_CANONICAL, "deliveries is not a canonical delivery list"},
        {LIST_WITH_RECIPIENT, "an entry with deliveries names no single delivery's fields"},
        {LIST_WITH_EXPIRES, "an entry with deliveries names no single delivery's fields"},
        {BOTH, "an entry has delivery_seqs or deliveries, not both"},
    };
    uint8_t zero[STORE_AUDIT_HASH_BYTES] = {0};
    store_close(&f->store);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char path[160];
        audit_verify_report_t r;
        store_audit_entry_t e;
        snprintf(path, sizeof path, "%s/shape-%zu.db", f->dir, i);
        store_t *fresh = store_fixture_create(path, store_key); /* the schema, no entry */
        store_close(&fresh);
        int acked = rows[i].shape == ACKED_OK || rows[i].shape == SEQS_NOT_CANONICAL ||
                    rows[i].shape == SEQS_WITH_SEQ || rows[i].shape == LIST_ON_ACKED;
        audit_entry_init(&e, rows[i].shape == SEQS_ON_EXPIRED ? "delivery.expired"
                             : acked                          ? "delivery.acked"
                                                              : "delivery.queued");
        switch (rows[i].shape) {
        case ACKED_OK:
        case SEQS_ON_EXPIRED:
            audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, "20,77");
            break;
        case SEQS_NOT_CANONICAL:
            audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, "77,20");
            break;
        case SEQS_WITH_SEQ:
            audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, "20");
            audit_set_int(&e, STORE_AUDIT_DELIVERY_SEQ, 20);
            break;
        case QUEUED_OK:
        case LIST_ON_ACKED:
            audit_set_text(&e, STORE_AUDIT_DELIVERIES, listed);
            break;
        case LIST_NOT_CANONICAL:
            audit_set_text(&e, STORE_AUDIT_DELIVERIES, RULE_A "20 0 om/parket\n20 0 om/riec\n");
            break;
        case LIST_WITH_RECIPIENT:
            audit_set_text(&e, STORE_AUDIT_DELIVERIES, listed);
            audit_set_text(&e, STORE_AUDIT_RECIPIENT, "om/parket");
            break;
        case LIST_WITH_EXPIRES:
            audit_set_text(&e, STORE_AUDIT_DELIVERIES, listed);
            audit_set_int(&e, STORE_AUDIT_EXPIRES_AT, 1700086400);
            break;
        case BOTH:
            audit_set_text(&e, STORE_AUDIT_DELIVERIES, listed);
            audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, "20");
            break;
        }
        e.seq = 1;
        e.at = BASE_TIME;
        /* the store itself refuses each bad shape with the same words */
        store_t *writer = store_fixture_open(path, store_key);
        store_audit_entry_t copy = e;
        assert_int_equal(store_begin(writer), 0);
        int appended = audit_append(writer, NULL, BASE_TIME, &copy);
        if ((appended == 0) != (rows[i].problem == NULL) ||
            (rows[i].problem != NULL && strstr(store_errmsg(writer), rows[i].problem) == NULL))
            fail_msg("row %zu: append %d: %s", i, appended, store_errmsg(writer));
        store_rollback(writer);
        store_close(&writer);
        forge_entry(path, &e, zero);
        verify_ok(path, &r);
        if (rows[i].problem == NULL
                ? !r.intact
                : r.intact || r.broken_seq != 1 || strstr(r.problem, rows[i].problem) == NULL)
            fail_msg("row %zu: intact=%d at %llu: %s", i, r.intact,
                     (unsigned long long)r.broken_seq, r.problem);
        unlink(path);
    }
    f->store = store_fixture_open(f->path, store_key);
}

/* A store of schema 6 with entries of one delivery each: an offline
 * reader takes it as it is; the broker's opening adds the column; old and
 * new entries verify and export together. */
static void test_schema_6_store_migrates(void **state)
{
    fixture_t *f = *state;
    char tag[STORE_SUBJECT_TAG_LEN + 1], *json = NULL, err[256];
    audit_verify_report_t r;
    assert_int_equal(store_subject_tag(f->store, SUBJECT, tag), 0);
    assert_int_equal(store_begin(f->store), 0);
    append_single(f->store, 1, 10, tag);
    append_single(f->store, 1, 11, tag);
    append_acked(f->store, "om/parket", "10");
    assert_int_equal(store_commit(f->store), 0);
    store_close(&f->store);
    sqlite3 *db = store_fixture_raw_open_or_create(f->path);
    store_fixture_db_exec(
        db, "ALTER TABLE audit DROP COLUMN deliveries;" STORE_FIXTURE_PUBLISHES_BEFORE_8
                STORE_FIXTURE_ACKS_BEFORE_12 STORE_FIXTURE_MAILBOX_BEFORE_13
            "DROP TABLE deliveries_set_aside;" /* schema 10's */
            "PRAGMA user_version = 6;");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);

    verify_ok(f->path, &r);
    assert_true(r.intact);
    assert_int_equal(r.entries, 3);
    /* stays open across the upgrade */
    store_t *early = store_fixture_open_reader(f->path, store_key);
    if (audit_subject_export(early, SUBJECT, (int64_t)time(NULL), &json, err, sizeof err) != 0)
        fail_msg("export: %s", err);
    assert_int_equal(occurrences(json, "\"event\":\"delivery.queued\""), 2);
    free(json);

    f->store = store_fixture_open(f->path, store_key);
    assert_int_equal(store_migrated_from(f->store, NULL), 6);
    db = store_fixture_raw_open_or_create(f->path);
    assert_int_equal(store_fixture_db_int(db, "PRAGMA user_version"), store_schema_version());
    assert_int_equal(
        store_fixture_db_int(db, "SELECT count(*) FROM audit WHERE deliveries IS NOT NULL"), 0);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_int_equal(store_begin(f->store), 0);
    append_listed(f->store, 2, tag, RULE_A "20 0 om/parket\n21 0 riec/analyse\n");
    append_acked(f->store, "riec/analyse", "11,21");
    assert_int_equal(store_commit(f->store), 0);
    verify_ok(f->path, &r);
    if (!r.intact || !r.index_intact || r.entries != 5 || r.acked_seqs != 3)
        fail_msg("verify: %d %llu %s", r.intact, (unsigned long long)r.entries, r.problem);
    if (audit_subject_export(early, SUBJECT, (int64_t)time(NULL), &json, err, sizeof err) != 0)
        fail_msg("export: %s", err);
    assert_int_equal(occurrences(json, "\"event\":\"delivery.queued\""), 3);
    assert_int_equal(occurrences(json, "\"deliveries_listed\""), 1);
    assert_int_equal(occurrences(json, "\"event\":\"delivery.acked\""), 2);
    free(json);
    store_close(&early);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_documented_text_parses),
        cmocka_unit_test_setup_teardown(test_store_refuses_what_is_not_canonical, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_mixed_trail_verifies_and_exports, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_tampered_lists_are_named, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_lists_cannot_trade_columns, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_verify_enforces_the_shape_rules, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_schema_6_store_migrates, setup,
                                        store_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
