/*
 * test_store_case.c — unit tests of broker/store_case.c (cases, members,
 * events, case deliveries, retention from the close) against real SQLite
 * files, each test in its own mkdtemp() folder under /tmp, removed
 * afterwards. The file is also read through a raw SQLite connection (to
 * check expiries and indexes, and to tamper with rows) and as raw bytes
 * (no plaintext of titles, notes or case deliveries). The store key is
 * random per run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>
#include <sqlite3.h>

#include "schakel_limits.h"
#include "store.h"
#include "store_fixture.h"
#include "store_mailbox.h"

#define RIEC "riec/analist"
#define POLITIE "politie/bvh-koppeling"
#define POLITIE2 "politie/wijkagent"
#define GEMEENTE "gemeente/meldingen"
#define CASE_TYPE "ondermijning-adres"
#define NOW 1750000000LL
#define OPEN STORE_CASE_OPEN_EXPIRY

typedef store_fixture_t fixture_t;

static uint8_t test_key[STORE_KEY_BYTES];

/* ------------------------------------------------------------------ fixture */

static int setup(void **state)
{
    *state = store_fixture_new("schakel-case", test_key);
    return 0;
}

static void reopen(fixture_t *f)
{
    store_close(&f->store);
    f->store = store_fixture_open(f->path, test_key);
}

/* ------------------------------------------------------------------ raw access */

static int64_t raw_int(const char *path, const char *sql)
{
    sqlite3 *db = store_fixture_raw_open(path);
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
        fail_msg("raw %s: %s", sql, sqlite3_errmsg(db));
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    int64_t value = sqlite3_column_int64(stmt, 0);
    assert_int_equal(sqlite3_finalize(stmt), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return value;
}

static int file_contains(const char *path, const void *needle, size_t len)
{
    FILE *file = fopen(path, "rb");
    if (file == NULL)
        return 0;
    assert_int_equal(fseek(file, 0, SEEK_END), 0);
    long size = ftell(file);
    assert_true(size >= 0);
    assert_int_equal(fseek(file, 0, SEEK_SET), 0);
    uint8_t *bytes = malloc((size_t)size + 1);
    assert_non_null(bytes);
    assert_int_equal(fread(bytes, 1, (size_t)size, file), (size_t)size);
    assert_int_equal(fclose(file), 0);
    int found = 0;
    for (size_t i = 0; !found && len > 0 && i + len <= (size_t)size; i++)
        found = memcmp(bytes + i, needle, len) == 0;
    free(bytes);
    return found;
}

/* Whether the database file or its WAL holds the text anywhere. */
static int store_files_contain(const char *db_path, const char *text)
{
    char wal_path[256];
    snprintf(wal_path, sizeof wal_path, "%s-wal", db_path);
    return file_contains(db_path, text, strlen(text)) ||
           file_contains(wal_path, text, strlen(text));
}

/* ------------------------------------------------------------------ building blocks */

/* Distinct, deterministic bytes per n. */
static void fill(uint8_t *out, size_t len, unsigned n, uint8_t salt)
{
    for (size_t i = 0; i < len; i++)
        out[i] = (uint8_t)(n * 31u + i * 7u + salt);
}

static void case_new(store_t *store, const char *title, char case_id[SCHAKEL_CASE_ID_LEN + 1])
{
    if (store_case_create(store, CASE_TYPE, "riec", title, NOW, case_id) != 0)
        fail_msg("store_case_create: %s", store_errmsg(store));
}

/* A signed command (or signal) stored as evidence: publish n by actor with
 * one item of these bytes. Returns the item seq. */
static int64_t command(store_t *store, const char *actor, unsigned n, const char *bytes)
{
    uint8_t id[16], hash[32], sig[64], root[32];
    fill(id, sizeof id, n, 1);
    fill(hash, sizeof hash, n, 2);
    fill(sig, sizeof sig, n, 3);
    fill(root, sizeof root, n, 4);
    int64_t publish_id = store_publish_add(store, actor, id, hash, sig, root, NOW + n);
    assert_true(publish_id > 0);
    int64_t item_seq = store_item_add(store, publish_id, 0, (const uint8_t *)bytes, strlen(bytes));
    assert_true(item_seq > 0);
    return item_seq;
}

/* A delivery of command n's item (made by `command` with the same actor
 * and n) to recipient. */
typedef struct case_delivery {
    store_delivery_t d;
    uint8_t id[16];
} case_delivery_t;

static void case_delivery(case_delivery_t *cd, const char *case_id, int is_case_event,
                          const char *recipient, const char *actor, unsigned n, int64_t item_seq,
                          const char *body, int64_t expires_at)
{
    static char partner[64];
    memset(cd, 0, sizeof *cd);
    fill(cd->id, sizeof cd->id, n, 1);
    snprintf(partner, sizeof partner, "%.*s", (int)(strchr(actor, '/') - actor), actor);
    cd->d.recipient = recipient;
    cd->d.item_seq = (uint64_t)item_seq;
    cd->d.message_id = cd->id;
    cd->d.item_index = 0;
    cd->d.sender = actor;
    cd->d.sender_partner = partner;
    cd->d.rule_id = "ondermijning-politie";
    cd->d.rule_hash = "5e1f";
    cd->d.purpose = "Gezamenlijke aanpak ondermijning";
    cd->d.legal_basis = "Convenant RIEC Limburg, art. 7";
    cd->d.accepted_at = NOW + n;
    cd->d.expires_at = expires_at;
    cd->d.body = (const uint8_t *)body;
    cd->d.body_len = strlen(body);
    cd->d.case_id = case_id;
    cd->d.is_case_event = is_case_event;
    /* a signal's delivery is by reference: its item's bytes, reduced to a
     * mask, when pushed (body is then not stored) */
    cd->d.by_ref = case_id == NULL;
    cd->d.fields = case_id == NULL ? 0x3u : 0;
}

static int64_t deliver(store_t *store, const char *case_id, int is_case_event,
                       const char *recipient, const char *actor, unsigned n, int64_t item_seq,
                       const char *body, int64_t expires_at)
{
    case_delivery_t cd;
    case_delivery(&cd, case_id, is_case_event, recipient, actor, n, item_seq, body, expires_at);
    int64_t seq = store_delivery_add(store, &cd.d);
    if (seq <= 0)
        fail_msg("store_delivery_add: %s", store_errmsg(store));
    return seq;
}

static void event_add_ok(store_t *store, const char *case_id, uint64_t seq, const char *body)
{
    if (store_case_event_add(store, case_id, seq, NOW + (int64_t)seq, (const uint8_t *)body,
                             strlen(body)) != 0)
        fail_msg("store_case_event_add(%s, %llu): %s", case_id, (unsigned long long)seq,
                 store_errmsg(store));
}

/* Event collector. */
#define MAX_SEEN 80
typedef struct events_seen {
    uint64_t seq[MAX_SEEN];
    char body[MAX_SEEN][64];
    size_t n;
    size_t stop_after; /* 0: never */
    store_t *reenter;  /* call the store from inside: must fail */
    int reenter_result;
} events_seen_t;

static int collect_event(uint64_t event_seq, const uint8_t *event, size_t len, void *arg)
{
    events_seen_t *seen = arg;
    assert_true(seen->n < MAX_SEEN && len < sizeof seen->body[0]);
    seen->seq[seen->n] = event_seq;
    memcpy(seen->body[seen->n], event, len);
    seen->body[seen->n][len] = '\0';
    seen->n++;
    if (seen->reenter != NULL) {
        store_case_t c;
        seen->reenter_result = store_case_get(seen->reenter, "C-00000001", &c);
    }
    return seen->stop_after != 0 && seen->n >= seen->stop_after;
}

/* ------------------------------------------------------------------ create and get */

static void test_create_and_get(void **state)
{
    fixture_t *f = *state;
    char long_type[SCHAKEL_MAX_ID_LEN + 2], long_title[SCHAKEL_MAX_CASE_TITLE_LEN + 2],
        full_title[SCHAKEL_MAX_CASE_TITLE_LEN + 1];
    memset(long_type, 't', sizeof long_type - 1);
    long_type[sizeof long_type - 1] = '\0';
    memset(long_title, 'x', sizeof long_title - 1);
    long_title[sizeof long_title - 1] = '\0';
    memset(full_title, 'y', sizeof full_title - 1);
    full_title[sizeof full_title - 1] = '\0';
    const struct {
        const char *type, *lead, *title;
        int ok;
    } rows[] = {
        {CASE_TYPE, "riec", "Kerkstraat 12, Maastricht", 1},
        {NULL, "riec", "x", 0},
        {CASE_TYPE, "", "x", 0},
        {CASE_TYPE, NULL, "x", 0},
        {"zorg-en-veiligheid", "veiligheidshuis", NULL, 1}, /* no title: empty */
        {long_type, "riec", "x", 0},
        {"overlast-straat", "gemeente", long_title, 0},
        {"overlast-straat", "gemeente", full_title, 1},
        {"overlast-straat", "gemeente", "", 1},
    };
    enum { N = sizeof rows / sizeof rows[0] };
    char ids[N][SCHAKEL_CASE_ID_LEN + 1];
    unsigned made = 0;
    for (size_t i = 0; i < N; i++) {
        memset(ids[i], 0, sizeof ids[i]);
        int rc = store_case_create(f->store, rows[i].type, rows[i].lead, rows[i].title,
                                   NOW + (int64_t)i, ids[i]);
        if ((rc == 0) != rows[i].ok)
            fail_msg("row %zu: create gave %d (%s)", i, rc, store_errmsg(f->store));
        if (rc != 0)
            continue;
        char want[16];
        snprintf(want, sizeof want, "C-%08u", ++made); /* in order, from 1, no gap */
        assert_string_equal(ids[i], want);
    }
    assert_int_equal(store_case_create(f->store, CASE_TYPE, "riec", "t", NOW, NULL), -1);

    reopen(f); /* and everything is read back from the file */
    for (size_t i = 0; i < N; i++) {
        if (!rows[i].ok)
            continue;
        store_case_t c;
        memset(&c, 0, sizeof c);
        assert_int_equal(store_case_get(f->store, ids[i], &c), 1);
        assert_string_equal(c.case_id, ids[i]);
        assert_string_equal(c.case_type, rows[i].type);
        assert_string_equal(c.lead, rows[i].lead);
        assert_string_equal(c.title, rows[i].title != NULL ? rows[i].title : "");
        assert_int_equal(c.closed, 0);
        assert_int_equal(c.opened_at, NOW + (int64_t)i);
        assert_int_equal(c.closed_at, 0);
        assert_int_equal(c.last_event_seq, 0);
    }
    /* Rows that find nothing, and one that is refused. */
    static const struct {
        const char *case_id;
        int result;
    } lookups[] = {
        {"C-99999999", 0}, {"C-0000001", 0},  {"C-000000001", 0}, {"", 0},
        {"c-00000001", 0}, {"C-00000001", 1}, {NULL, -1},
    };
    for (size_t i = 0; i < sizeof lookups / sizeof lookups[0]; i++) {
        store_case_t c;
        int rc = store_case_get(f->store, lookups[i].case_id, &c);
        if (rc != lookups[i].result)
            fail_msg("lookup %zu: got %d, want %d", i, rc, lookups[i].result);
    }
    assert_int_equal(store_case_get(f->store, "C-00000001", NULL), -1);
    /* The next id continues after a reopen. */
    char next[SCHAKEL_CASE_ID_LEN + 1];
    case_new(f->store, "t", next);
    char want[16];
    snprintf(want, sizeof want, "C-%08u", made + 1);
    assert_string_equal(next, want);
}

static void test_case_ids_never_reused(void **state)
{
    fixture_t *f = *state;
    char a[SCHAKEL_CASE_ID_LEN + 1], b[SCHAKEL_CASE_ID_LEN + 1], c[SCHAKEL_CASE_ID_LEN + 1];
    case_new(f->store, "a", a);
    case_new(f->store, "b", b);
    assert_string_equal(b, "C-00000002");
    /* Both expire and are swept away: their numbers stay used. */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_case_set_expiry(f->store, a, NOW - 1), 0);
    assert_int_equal(store_case_set_expiry(f->store, b, NOW - 1), 0);
    assert_int_equal(store_expire(f->store, NOW, 100, NULL, NULL), 2);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM cases"), 0);
    reopen(f);
    case_new(f->store, "c", c);
    assert_string_equal(c, "C-00000003");
    /* A rolled-back create used no number: the next create has it (the
     * case counter follows the transaction; nothing named it outside). */
    assert_int_equal(store_begin(f->store), 0);
    case_new(f->store, "d", c);
    assert_string_equal(c, "C-00000004");
    assert_int_equal(store_case_ids_left(f->store), SCHAKEL_CASE_NUM_MAX - 4);
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(store_case_ids_left(f->store), SCHAKEL_CASE_NUM_MAX - 3);
    case_new(f->store, "e", c);
    assert_string_equal(c, "C-00000004");
    /* a committed one stays used: a later rollback goes back to after it */
    assert_int_equal(store_begin(f->store), 0);
    case_new(f->store, "f", c);
    assert_string_equal(c, "C-00000005");
    assert_int_equal(store_rollback(f->store), 0);
    reopen(f);
    case_new(f->store, "g", c);
    assert_string_equal(c, "C-00000005");
}

/* The last ids: counted down to 0, then refused with the store's reason,
 * after a reopen too; a restore's move never goes back below the last. */
static void test_case_ids_run_out(void **state)
{
    fixture_t *f = *state;
    char id[SCHAKEL_CASE_ID_LEN + 1];
    assert_int_equal(store_case_ids_left(f->store), SCHAKEL_CASE_NUM_MAX);
    case_new(f->store, "a", id);
    assert_int_equal(store_case_ids_left(f->store), SCHAKEL_CASE_NUM_MAX - 1);
    /* a restore with fewer than its margin left moves past the last */
    store_counters_t floor = {1, 1, (uint64_t)SCHAKEL_CASE_NUM_MAX - 2}, after;
    assert_int_equal(store_counters_move(f->store, 10, 5, &floor, NULL, &after), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(after.next_case_num, (uint64_t)SCHAKEL_CASE_NUM_MAX + 1);
    assert_int_equal(store_case_ids_left(f->store), 0);
    reopen(f);
    assert_int_equal(store_case_ids_left(f->store), 0);
    assert_int_equal(store_case_create(f->store, CASE_TYPE, "riec", "b", NOW, id), -1);
    assert_non_null(strstr(store_errmsg(f->store), "case ids exhausted"));
    /* moved again: stays past the last, never wraps */
    assert_int_equal(store_counters_move(f->store, 10, 5, NULL, NULL, &after), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(after.next_case_num, (uint64_t)SCHAKEL_CASE_NUM_MAX + 1);
}

/* A restore with room left moves by its margin exactly: the last id it
 * leaves is the last there is. */
static void test_case_ids_move_to_the_last(void **state)
{
    fixture_t *f = *state;
    char id[SCHAKEL_CASE_ID_LEN + 1];
    store_counters_t floor = {1, 1, (uint64_t)SCHAKEL_CASE_NUM_MAX - 5}, after;
    assert_int_equal(store_counters_move(f->store, 10, 5, &floor, NULL, &after), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(after.next_case_num, (uint64_t)SCHAKEL_CASE_NUM_MAX);
    assert_int_equal(store_case_ids_left(f->store), 1);
    /* the last id taken by a transaction rolled back is still there */
    assert_int_equal(store_begin(f->store), 0);
    case_new(f->store, "rolled back", id);
    assert_string_equal(id, "C-99999999");
    assert_int_equal(store_case_ids_left(f->store), 0);
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(store_case_ids_left(f->store), 1);
    case_new(f->store, "the last", id);
    assert_string_equal(id, "C-99999999");
    assert_int_equal(store_case_ids_left(f->store), 0);
}

static void test_close_and_reopen_flags(void **state)
{
    fixture_t *f = *state;
    char id[SCHAKEL_CASE_ID_LEN + 1];
    case_new(f->store, "Kerkstraat", id);
    static const struct {
        int closed;
        int64_t at;
        int want_closed;
        int64_t want_closed_at;
    } rows[] = {
        {1, NOW + 10, 1, NOW + 10}, /* close */
        {0, NOW + 20, 0, 0},        /* reopen */
        {1, NOW + 30, 1, NOW + 30}, /* close again */
        {7, NOW + 40, 1, NOW + 40}, /* any non-zero closes */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        assert_int_equal(store_case_set_closed(f->store, id, rows[i].closed, rows[i].at), 0);
        store_case_t c;
        assert_int_equal(store_case_get(f->store, id, &c), 1);
        if (c.closed != rows[i].want_closed || c.closed_at != rows[i].want_closed_at)
            fail_msg("row %zu: closed %d at %lld", i, c.closed, (long long)c.closed_at);
        assert_string_equal(c.title, "Kerkstraat");
    }
    /* Rows that must fail: no such case. */
    static const char *const unknown[] = {"C-00000002", "C-1", "", NULL};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        assert_int_equal(store_case_set_closed(f->store, unknown[i], 1, NOW), -1);
        assert_non_null(strstr(store_errmsg(f->store), "no such case"));
    }
}

/* ------------------------------------------------------------------ members */

typedef struct members_seen {
    char partner[80][16];
    char state[80];
    char rule[80][32];
    size_t n;
    store_t *reenter;
    int reenter_result;
} members_seen_t;

static int collect_member(const char *partner, char state, const char *rule_id,
                          const char *rule_hash, void *arg)
{
    members_seen_t *seen = arg;
    assert_true(seen->n < 80);
    (void)rule_hash;
    snprintf(seen->partner[seen->n], sizeof seen->partner[0], "%s", partner);
    seen->state[seen->n] = state;
    snprintf(seen->rule[seen->n], sizeof seen->rule[0], "%s", rule_id);
    seen->n++;
    if (seen->reenter != NULL)
        seen->reenter_result =
            store_case_member_set(seen->reenter, "C-00000001", "om", 'i', "r", "h", NOW);
    return 0;
}

static void test_member_states(void **state)
{
    fixture_t *f = *state;
    char id[SCHAKEL_CASE_ID_LEN + 1];
    case_new(f->store, "t", id);
    static const struct {
        const char *partner;
        char state;
        const char *rule_id, *rule_hash;
        int result;
        char want; /* state afterwards; 0: no row */
    } rows[] = {
        {"riec", 'm', CASE_TYPE ".lead", "h1", 0, 'm'},
        {"politie", 'i', "ondermijning-politie", "h2", 0, 'i'},
        {"politie", 'm', NULL, NULL, 0, 'm'}, /* accept: the rule stays */
        {"gemeente", 'i', "ondermijning-gemeente", "h3", 0, 'i'},
        {"gemeente", 'd', NULL, NULL, 0, 'd'},
        {"politie", 'l', NULL, NULL, 0, 'l'},
        {"om", 'x', "r", "h", -1, 0}, /* no such state */
        {"om", '\0', "r", "h", -1, 0},
        {"om", 'm', NULL, "h", -1, 0}, /* a new row needs its rule */
        {"om", 'm', "r", NULL, -1, 0},
        {"om", 'i', "", "h", -1, 0},
        {"", 'i', "r", "h", -1, 0}, /* no partner */
        {NULL, 'i', "r", "h", -1, 0},
        {"om", 'i', "ondermijning-politie", "h2", 0, 'i'},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int rc = store_case_member_set(f->store, id, rows[i].partner, rows[i].state,
                                       rows[i].rule_id, rows[i].rule_hash, NOW + (int64_t)i);
        if (rc != rows[i].result)
            fail_msg("row %zu: member_set gave %d (%s)", i, rc, store_errmsg(f->store));
        if (rows[i].partner == NULL || rows[i].partner[0] == '\0')
            continue;
        char got = 0;
        int found = store_case_member_get(f->store, id, rows[i].partner, &got);
        if (found != (rows[i].want != 0) || (found == 1 && got != rows[i].want))
            fail_msg("row %zu: member_get gave %d, state '%c'", i, found, got ? got : '-');
    }
    /* The list, in the order the partners were added, rules kept. */
    members_seen_t seen = {.n = 0};
    assert_int_equal(store_case_members(f->store, id, collect_member, &seen), 4);
    static const struct {
        const char *partner;
        char state;
        const char *rule;
    } want[] = {{"riec", 'm', CASE_TYPE ".lead"},
                {"politie", 'l', "ondermijning-politie"},
                {"gemeente", 'd', "ondermijning-gemeente"},
                {"om", 'i', "ondermijning-politie"}};
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(seen.partner[i], want[i].partner);
        assert_int_equal(seen.state[i], want[i].state);
        assert_string_equal(seen.rule[i], want[i].rule);
    }
    /* The callback may not call the store. */
    members_seen_t reentry = {.reenter = f->store};
    assert_int_equal(store_case_members(f->store, id, collect_member, &reentry), 4);
    assert_int_equal(reentry.reenter_result, -1);
    /* Unknown cases and partners. */
    char got = 0;
    assert_int_equal(store_case_member_get(f->store, id, "woco-servatius", &got), 0);
    assert_int_equal(store_case_member_get(f->store, "C-00000002", "riec", &got), 0);
    assert_int_equal(store_case_member_get(f->store, "nonsense", "riec", &got), 0);
    assert_int_equal(store_case_member_get(f->store, id, NULL, &got), -1);
    assert_int_equal(store_case_member_get(f->store, id, "riec", NULL), -1);
    assert_int_equal(store_case_members(f->store, "C-00000002", collect_member, &seen), 0);
    assert_int_equal(store_case_members(f->store, id, NULL, NULL), -1);
    assert_int_equal(store_case_member_set(f->store, "C-00000002", "riec", 'm', "r", "h", NOW), -1);
    assert_non_null(strstr(store_errmsg(f->store), "no such case"));
}

static void test_member_limit(void **state)
{
    fixture_t *f = *state;
    char id[SCHAKEL_CASE_ID_LEN + 1], partner[32];
    case_new(f->store, "t", id);
    for (unsigned i = 0; i < SCHAKEL_MAX_CASE_MEMBERS; i++) {
        snprintf(partner, sizeof partner, "partner-%u", i);
        assert_int_equal(
            store_case_member_set(f->store, id, partner, i == 0 ? 'm' : 'i', "r", "h", NOW), 0);
    }
    static const struct {
        const char *partner;
        char state;
        int result;
    } rows[] = {
        {"partner-extra", 'i', -1}, /* one too many */
        {"partner-extra", 'm', -1},
        {"partner-extra", 'd', 0}, /* not invited nor member: no room needed */
        {"partner-3", 'm', 0},     /* already counted */
        {"partner-5", 'l', 0},     /* makes room */
        {"partner-extra", 'i', 0},
        {"partner-5", 'm', -1}, /* full again */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int rc = store_case_member_set(f->store, id, rows[i].partner, rows[i].state, "r", "h", NOW);
        if (rc != rows[i].result)
            fail_msg("row %zu: member_set gave %d (%s)", i, rc, store_errmsg(f->store));
    }
}

/* ------------------------------------------------------------------ events */

static void test_events_in_order(void **state)
{
    fixture_t *f = *state;
    char id[SCHAKEL_CASE_ID_LEN + 1], other[SCHAKEL_CASE_ID_LEN + 1];
    case_new(f->store, "t", id);
    case_new(f->store, "u", other);
    static uint8_t too_big[SCHAKEL_MAX_FRAME_BYTES + 1];
    static const struct {
        int which; /* 0: id, 1: other, 2: an unknown case */
        uint64_t seq;
        const char *body; /* NULL: the oversized one */
        size_t len;
        int result;
    } rows[] = {
        {0, 1, "opened", 6, 0},
        {0, 2, "invited politie", 15, 0},
        {0, 2, "twice", 5, -1}, /* not the next seq */
        {0, 4, "gap", 3, -1},
        {0, 0, "zero", 4, -1},
        {0, 3, "", 0, 0},            /* an empty event seals and opens too */
        {1, 1, "other case", 10, 0}, /* each case counts from 1 */
        {0, 4, "note with fields", 16, 0},
        {2, 1, "nowhere", 7, -1},
        {0, 5, NULL, sizeof too_big, -1},
        {0, 5, NULL, 0, 0}, /* NULL with length 0 is an empty event */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *case_id = rows[i].which == 0 ? id : rows[i].which == 1 ? other : "C-00000077";
        const uint8_t *body = rows[i].body != NULL ? (const uint8_t *)rows[i].body
                              : rows[i].len > 0    ? too_big
                                                   : NULL;
        int rc = store_case_event_add(f->store, case_id, rows[i].seq, NOW, body, rows[i].len);
        if (rc != rows[i].result)
            fail_msg("row %zu: event_add gave %d (%s)", i, rc, store_errmsg(f->store));
    }
    assert_int_equal(store_case_event_add(f->store, id, 6, NOW, NULL, 3), -1);
    store_case_t c;
    assert_int_equal(store_case_get(f->store, id, &c), 1);
    assert_int_equal(c.last_event_seq, 5);

    reopen(f);
    static const struct {
        uint64_t after;
        size_t stop_after;
        int visited;
        uint64_t first;
    } scans[] = {{0, 0, 5, 1}, {2, 0, 3, 3}, {4, 0, 1, 5},
                 {5, 0, 0, 0}, {0, 2, 2, 1}, {UINT64_MAX, 0, 0, 0}};
    static const char *const bodies[] = {"opened", "invited politie", "", "note with fields", ""};
    for (size_t i = 0; i < sizeof scans / sizeof scans[0]; i++) {
        events_seen_t seen = {.n = 0, .stop_after = scans[i].stop_after};
        int visited = store_case_events(f->store, id, scans[i].after, collect_event, &seen);
        if (visited != scans[i].visited || seen.n != (size_t)visited)
            fail_msg("scan %zu: visited %d, seen %zu", i, visited, seen.n);
        for (size_t k = 0; k < seen.n; k++) {
            assert_int_equal(seen.seq[k], scans[i].first + k);
            assert_string_equal(seen.body[k], bodies[seen.seq[k] - 1]);
        }
    }
    events_seen_t seen = {.n = 0};
    assert_int_equal(store_case_events(f->store, other, 0, collect_event, &seen), 1);
    assert_string_equal(seen.body[0], "other case");
    assert_int_equal(store_case_events(f->store, "C-00000077", 0, collect_event, &seen), 0);
    assert_int_equal(store_case_events(f->store, "junk", 0, collect_event, &seen), 0);
    assert_int_equal(store_case_events(f->store, id, 0, NULL, NULL), -1);
    /* The callback may not call the store. */
    events_seen_t reentry = {.reenter = f->store};
    assert_int_equal(store_case_events(f->store, id, 0, collect_event, &reentry), 5);
    assert_int_equal(reentry.reenter_result, -1);
    assert_int_equal(store_case_get(f->store, id, &c), 1); /* fine once it is over */
}

/* ------------------------------------------------------------------ sealing */

#define MARK_TITLE "TITLE-Kerkstraat-12-a7f3"
#define MARK_NOTE "NOTE-financieel-omzet-93c1"
#define MARK_DELIVERY "DELIVERED-note-5be0"
#define MARK_COMMAND "COMMAND-bytes-44d2"

static void check_case_file(const char *path)
{
    static const struct {
        const char *needle;
        int present;
    } rows[] = {
        {MARK_TITLE, 0},   {MARK_NOTE, 0},    {MARK_DELIVERY, 0},
        {MARK_COMMAND, 0}, {"C-00000001", 1}, /* routing: the case id */
        {CASE_TYPE, 1},                       /* the case type */
        {POLITIE, 1},                         /* the recipient */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int found = store_files_contain(path, rows[i].needle);
        if (found != rows[i].present)
            fail_msg("row %zu: \"%s\" %s in the store's files", i, rows[i].needle,
                     found ? "found" : "not found");
    }
}

static void test_case_bodies_sealed_in_file(void **state)
{
    fixture_t *f = *state;
    char id[SCHAKEL_CASE_ID_LEN + 1];
    assert_int_equal(store_begin(f->store), 0);
    case_new(f->store, MARK_TITLE, id);
    event_add_ok(f->store, id, 1, "note: " MARK_NOTE);
    int64_t item_seq = command(f->store, RIEC, 1, MARK_COMMAND);
    (void)deliver(f->store, id, 1, POLITIE, RIEC, 1, item_seq, MARK_DELIVERY, OPEN);
    assert_int_equal(store_commit(f->store), 0);
    check_case_file(f->path); /* in the WAL */
    store_close(&f->store);
    check_case_file(f->path); /* in the database file */
    f->store = store_fixture_open(f->path, test_key);
    store_case_t c;
    assert_int_equal(store_case_get(f->store, id, &c), 1);
    assert_string_equal(c.title, MARK_TITLE);
    events_seen_t seen = {.n = 0};
    assert_int_equal(store_case_events(f->store, id, 0, collect_event, &seen), 1);
    assert_string_equal(seen.body[0], "note: " MARK_NOTE);
}

/* The documented associated data of a case event (store.h). */
static size_t case_event_ad(uint8_t *ad, const char *case_id, uint64_t event_seq)
{
    static const char tag[] = "schakel-store-case-event-v1";
    size_t len = sizeof tag;
    memcpy(ad, tag, sizeof tag);
    memcpy(ad + len, case_id, SCHAKEL_CASE_ID_LEN);
    len += SCHAKEL_CASE_ID_LEN;
    for (int i = 7; i >= 0; i--)
        ad[len++] = (uint8_t)(event_seq >> (8 * i));
    return len;
}

static void test_case_event_sealed_to_its_row(void **state)
{
    fixture_t *f = *state;
    char id[SCHAKEL_CASE_ID_LEN + 1];
    case_new(f->store, "t", id);
    event_add_ok(f->store, id, 1, "opened");
    event_add_ok(f->store, id, 2, MARK_NOTE);
    sqlite3 *db = store_fixture_raw_open(f->path);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT body FROM case_events WHERE event_seq = 2", -1, &stmt, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    uint8_t sealed[256];
    size_t sealed_len = (size_t)sqlite3_column_bytes(stmt, 0);
    assert_int_equal(sealed_len, 24 + strlen(MARK_NOTE) + 16);
    memcpy(sealed, sqlite3_column_blob(stmt, 0), sealed_len);
    assert_int_equal(sqlite3_finalize(stmt), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);

    static const struct {
        const char *case_id;
        uint64_t event_seq;
        int flip_key, opens;
    } rows[] = {
        {"C-00000001", 2, 0, 1}, {"C-00000001", 1, 0, 0}, {"C-00000001", 3, 0, 0},
        {"C-00000002", 2, 0, 0}, {"C-00000001", 2, 1, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint8_t key[STORE_KEY_BYTES], ad[64], opened[256];
        memcpy(key, test_key, sizeof key);
        key[3] ^= (uint8_t)rows[i].flip_key;
        size_t ad_len = case_event_ad(ad, rows[i].case_id, rows[i].event_seq);
        unsigned long long opened_len = 0;
        int rc = crypto_aead_xchacha20poly1305_ietf_decrypt(
            opened, &opened_len, NULL, sealed + 24, sealed_len - 24, ad, ad_len, sealed, key);
        if ((rc == 0) != rows[i].opens)
            fail_msg("row %zu: decrypt gave %d", i, rc);
        if (rc == 0)
            assert_memory_equal(opened, MARK_NOTE, opened_len);
    }
}

enum case_tamper {
    CT_NONE,
    CT_SWAP_EVENTS,    /* the bodies of events 1 and 2 exchanged */
    CT_EVENT_SEQ,      /* event 2 renumbered 3 */
    CT_EVENT_MOVED,    /* event 1 moved into the other case */
    CT_EVENT_FLIP,     /* one bit of event 1's body */
    CT_TITLE_SWAP,     /* the two cases' titles exchanged */
    CT_DELIVERY_FLAG,  /* a case event's delivery made a signal's */
    CT_DELIVERY_CASE,  /* a case delivery moved into the other case */
    CT_DELIVERY_UNCASE /* a case delivery's case id removed */
};

enum case_read { READ_EVENTS, READ_OTHER_EVENTS, READ_TITLE, READ_MAILBOX, READ_COUNT };

static void case_tamper(const char *path, enum case_tamper how, const char *a, const char *b)
{
    char sql[768];
    switch (how) {
    case CT_NONE:
        return;
    case CT_SWAP_EVENTS:
        snprintf(
            sql, sizeof sql,
            "UPDATE case_events SET body = CASE event_seq"
            " WHEN 1 THEN (SELECT body FROM case_events WHERE case_id = '%s' AND event_seq = 2)"
            " ELSE (SELECT body FROM case_events WHERE case_id = '%s' AND event_seq = 1) END"
            " WHERE case_id = '%s'",
            a, a, a);
        break;
    case CT_EVENT_SEQ:
        snprintf(sql, sizeof sql,
                 "UPDATE case_events SET event_seq = 3 WHERE case_id = '%s' AND event_seq = 2", a);
        break;
    case CT_EVENT_MOVED:
        snprintf(sql, sizeof sql,
                 "UPDATE case_events SET case_id = '%s' WHERE case_id = '%s' AND event_seq = 1", b,
                 a);
        break;
    case CT_EVENT_FLIP:
        snprintf(sql, sizeof sql,
                 "UPDATE case_events SET body = substr(body, 1, 30) ||"
                 " CASE WHEN substr(body, 31, 1) = x'00' THEN x'01' ELSE x'00' END ||"
                 " substr(body, 32) WHERE case_id = '%s' AND event_seq = 1",
                 a);
        break;
    case CT_TITLE_SWAP:
        snprintf(sql, sizeof sql,
                 "UPDATE cases SET title = CASE case_id"
                 " WHEN '%s' THEN (SELECT title FROM cases WHERE case_id = '%s')"
                 " ELSE (SELECT title FROM cases WHERE case_id = '%s') END"
                 " WHERE case_id IN ('%s', '%s')",
                 a, b, a, a, b);
        break;
    case CT_DELIVERY_FLAG:
        snprintf(sql, sizeof sql, "UPDATE mailbox SET is_case_event = 0 WHERE case_id = '%s'", a);
        break;
    case CT_DELIVERY_CASE:
        snprintf(sql, sizeof sql, "UPDATE mailbox SET case_id = '%s' WHERE case_id = '%s'", b, a);
        break;
    case CT_DELIVERY_UNCASE:
        snprintf(sql, sizeof sql,
                 "UPDATE mailbox SET case_id = NULL, is_case_event = 0 WHERE case_id = '%s'", a);
        break;
    }
    store_fixture_raw_exec(path, sql);
}

static int count_delivery(const store_delivery_t *d, void *arg)
{
    (void)d;
    (*(size_t *)arg)++;
    return 0;
}

/* Each read of the case: its result (-1 or the number of rows). */
static int case_read(store_t *store, enum case_read what, const char *a, const char *b,
                     const char *recipient, size_t *handed_out)
{
    events_seen_t seen = {.n = 0};
    store_case_t c;
    int rc = 0;
    *handed_out = 0;
    switch (what) {
    case READ_EVENTS:
        rc = store_case_events(store, a, 0, collect_event, &seen);
        *handed_out = seen.n;
        break;
    case READ_OTHER_EVENTS:
        rc = store_case_events(store, b, 0, collect_event, &seen);
        *handed_out = seen.n;
        break;
    case READ_TITLE:
        rc = store_case_get(store, a, &c);
        break;
    case READ_MAILBOX:
        rc = store_mailbox_scan(store, recipient, 0, 10, count_delivery, handed_out);
        break;
    case READ_COUNT:
        break;
    }
    return rc;
}

static void test_tampered_case_rows_do_not_authenticate(void **state)
{
    fixture_t *f = *state;
    static const struct {
        enum case_tamper how;
        enum case_read fails; /* READ_COUNT: none */
        size_t handed_before; /* events read before the bad one */
    } rows[] = {
        {CT_NONE, READ_COUNT, 0},
        {CT_SWAP_EVENTS, READ_EVENTS, 0},
        {CT_EVENT_SEQ, READ_EVENTS, 1},
        {CT_EVENT_MOVED, READ_OTHER_EVENTS, 0},
        {CT_EVENT_FLIP, READ_EVENTS, 0},
        {CT_TITLE_SWAP, READ_TITLE, 0},
        {CT_DELIVERY_FLAG, READ_MAILBOX, 0},
        {CT_DELIVERY_CASE, READ_MAILBOX, 0},
        {CT_DELIVERY_UNCASE, READ_MAILBOX, 0},
    };
    static const int normal[READ_COUNT] = {2, 0, 1, 1};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char a[SCHAKEL_CASE_ID_LEN + 1], b[SCHAKEL_CASE_ID_LEN + 1], recipient[64];
        snprintf(recipient, sizeof recipient, "politie/rij-%zu", i);
        assert_int_equal(store_begin(f->store), 0);
        case_new(f->store, "title a", a);
        case_new(f->store, "title b", b);
        event_add_ok(f->store, a, 1, "opened, the first event");
        event_add_ok(f->store, a, 2, "a note, the second event");
        int64_t item_seq = command(f->store, RIEC, 10 + (unsigned)i, "command");
        (void)deliver(f->store, a, 1, recipient, RIEC, 10 + (unsigned)i, item_seq, "event 1", OPEN);
        assert_int_equal(store_commit(f->store), 0);
        case_tamper(f->path, rows[i].how, a, b);
        for (int what = READ_EVENTS; what < READ_COUNT; what++) {
            size_t handed = 0;
            int rc = case_read(f->store, (enum case_read)what, a, b, recipient, &handed);
            if (what != (int)rows[i].fails) {
                /* Untouched rows read as ever (a moved event is simply elsewhere). */
                if (rc < 0 || (rows[i].how == CT_NONE && rc != normal[what]))
                    fail_msg("row %zu read %d: got %d (%s)", i, what, rc, store_errmsg(f->store));
                continue;
            }
            if (rc != -1)
                fail_msg("row %zu read %d: a tampered row was read (%d)", i, what, rc);
            assert_int_equal(handed, rows[i].handed_before);
            assert_non_null(strstr(store_errmsg(f->store), "does not authenticate"));
            assert_false(store_last_error_is_unavailable(f->store));
        }
    }
}

/* ------------------------------------------------------------------ case deliveries */

typedef struct mailbox_seen {
    uint64_t seq[8];
    char case_id[8][SCHAKEL_CASE_ID_LEN + 1];
    int is_case_event[8], by_ref[8];
    uint32_t fields[8];
    char body[8][32];
    size_t n;
} mailbox_seen_t;

static int collect_mailbox(const store_delivery_t *d, void *arg)
{
    mailbox_seen_t *seen = arg;
    assert_true(seen->n < 8 && d->body_len < sizeof seen->body[0]);
    seen->seq[seen->n] = d->seq;
    snprintf(seen->case_id[seen->n], sizeof seen->case_id[0], "%s",
             d->case_id != NULL ? d->case_id : "");
    seen->is_case_event[seen->n] = d->is_case_event;
    seen->by_ref[seen->n] = d->by_ref;
    seen->fields[seen->n] = d->fields;
    memcpy(seen->body[seen->n], d->body, d->body_len);
    seen->body[seen->n][d->body_len] = '\0';
    seen->n++;
    return 0;
}

static void test_case_deliveries_in_mailbox(void **state)
{
    fixture_t *f = *state;
    char id[SCHAKEL_CASE_ID_LEN + 1];
    case_new(f->store, "t", id);
    int64_t signal = command(f->store, GEMEENTE, 1, "signal");
    int64_t open_cmd = command(f->store, RIEC, 2, "open command");
    static const struct {
        int use_case; /* 0: none, 1: the case, 2: an unknown one, 3: a malformed one */
        int is_case_event;
        int from_riec; /* else the signal */
        int ok;
    } rows[] = {
        {0, 0, 0, 1}, /* a signal, as ever */
        {1, 1, 1, 1}, /* a case event */
        {1, 0, 0, 1}, /* a delivery in the case that is not an event */
        {0, 1, 1, 0}, /* an event needs its case */
        {2, 1, 1, 0}, /* no such case */
        {3, 1, 1, 0}, /* not a case id */
        {1, 2, 1, 0}, /* the flag is 0 or 1 */
    };
    int64_t seqs[8];
    size_t ok = 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *case_id = rows[i].use_case == 1   ? id
                              : rows[i].use_case == 2 ? "C-00000999"
                              : rows[i].use_case == 3 ? "C-1"
                                                      : NULL;
        char body[32];
        snprintf(body, sizeof body, "body %zu", i);
        case_delivery_t cd;
        case_delivery(&cd, case_id, rows[i].is_case_event, POLITIE,
                      rows[i].from_riec ? RIEC : GEMEENTE, rows[i].from_riec ? 2 : 1,
                      rows[i].from_riec ? open_cmd : signal, body, OPEN);
        int64_t seq = store_delivery_add(f->store, &cd.d);
        if ((seq > 0) != rows[i].ok)
            fail_msg("row %zu: delivery_add gave %lld (%s)", i, (long long)seq,
                     store_errmsg(f->store));
        if (seq > 0)
            seqs[ok++] = seq;
    }
    reopen(f);
    mailbox_seen_t seen = {.n = 0};
    assert_int_equal(store_mailbox_scan(f->store, POLITIE, 0, 10, collect_mailbox, &seen), 3);
    size_t k = 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        if (!rows[i].ok)
            continue;
        char body[32];
        snprintf(body, sizeof body, "body %zu", i);
        assert_int_equal(seen.seq[k], seqs[k]);
        assert_string_equal(seen.case_id[k], rows[i].use_case == 1 ? id : "");
        assert_int_equal(seen.is_case_event[k], rows[i].is_case_event);
        /* a signal's by reference: its item's bytes and the mask; a case
         * delivery's its own body */
        assert_int_equal(seen.by_ref[k], rows[i].use_case != 1);
        assert_int_equal(seen.fields[k], rows[i].use_case != 1 ? 0x3u : 0);
        assert_string_equal(seen.body[k], rows[i].use_case != 1 ? "signal" : body);
        k++;
    }
    /* A case delivery's item is tied to the case (case_items). */
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM case_items"), 2);
}

typedef struct dropped_seen {
    uint64_t seq[8];
    size_t n;
    store_t *reenter;
    int reenter_result;
} dropped_seen_t;

static void collect_dropped(const store_expired_t *e, void *arg)
{
    dropped_seen_t *seen = arg;
    assert_true(seen->n < 8);
    seen->seq[seen->n++] = e->seq;
    if (seen->reenter != NULL)
        seen->reenter_result = (int)store_mailbox_count(seen->reenter, e->recipient);
}

/* A partner id drops what waits for every principal of that partner, and
 * only for that partner (not for one whose id merely starts the same). */
static void test_drop_deliveries_of_a_partner(void **state)
{
    fixture_t *f = *state;
    char c[SCHAKEL_CASE_ID_LEN + 1];
    case_new(f->store, "c", c);
    int64_t cmd = command(f->store, RIEC, 3, "command");
    (void)deliver(f->store, c, 1, POLITIE, RIEC, 3, cmd, "c1", OPEN);
    (void)deliver(f->store, c, 1, POLITIE2, RIEC, 3, cmd, "c2", OPEN);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_case_drop_deliveries(f->store, c, "politi"), 0);
    assert_int_equal(store_case_drop_deliveries(f->store, c, "politie"), 2);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(store_mailbox_count(f->store, POLITIE), 0);
    assert_int_equal(store_mailbox_count(f->store, POLITIE2), 0);
}

static void test_drop_deliveries(void **state)
{
    fixture_t *f = *state;
    char a[SCHAKEL_CASE_ID_LEN + 1], b[SCHAKEL_CASE_ID_LEN + 1];
    case_new(f->store, "a", a);
    case_new(f->store, "b", b);
    int64_t cmd = command(f->store, RIEC, 1, "command");
    int64_t signal = command(f->store, GEMEENTE, 2, "signal");
    int64_t a1 = deliver(f->store, a, 1, POLITIE, RIEC, 1, cmd, "a1", OPEN);
    int64_t a2 = deliver(f->store, a, 1, POLITIE, RIEC, 1, cmd, "a2", OPEN);
    (void)deliver(f->store, a, 1, POLITIE2, RIEC, 1, cmd, "a to the other principal", OPEN);
    (void)deliver(f->store, b, 1, POLITIE, RIEC, 1, cmd, "b1", OPEN);
    (void)deliver(f->store, NULL, 0, POLITIE, GEMEENTE, 2, signal, "signal", NOW + 1000);

    /* Outside a transaction: refused, nothing removed. */
    assert_int_equal(store_case_drop_deliveries(f->store, a, POLITIE), -1);
    assert_non_null(strstr(store_errmsg(f->store), "transaction"));
    assert_int_equal(store_mailbox_count(f->store, POLITIE), 4);

    assert_int_equal(store_begin(f->store), 0);
    const struct {
        const char *case_id, *recipient;
        int timed; /* store_case_drop_deliveries_at with the callback */
        int result;
        int64_t politie_left, politie2_left;
    } rows[] = {
        {"C-00000077", POLITIE, 1, 0, 4, 1}, /* an unknown case: nothing */
        {a, "om/officier", 1, 0, 4, 1},      /* nobody's mailbox */
        {a, POLITIE, 1, 2, 2, 1},            /* a's two for politie, nothing else */
        {a, POLITIE, 1, 0, 2, 1},            /* gone already */
        {b, POLITIE, 0, 1, 1, 1},            /* the plain call */
        {a, NULL, 0, -1, 1, 1},
        {NULL, POLITIE, 0, -1, 1, 1},
        {a, POLITIE2, 0, 1, 1, 0},
    };
    time_t before = time(NULL);
    dropped_seen_t told = {.n = 0};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        size_t told_before = told.n;
        int rc = rows[i].timed
                     ? store_case_drop_deliveries_at(f->store, rows[i].case_id, rows[i].recipient,
                                                     NOW, collect_dropped, &told)
                     : store_case_drop_deliveries(f->store, rows[i].case_id, rows[i].recipient);
        if (rc != rows[i].result)
            fail_msg("row %zu: drop gave %d (%s)", i, rc, store_errmsg(f->store));
        if (rows[i].timed)
            assert_int_equal(told.n - told_before, rc > 0 ? (size_t)rc : 0);
        assert_int_equal(store_mailbox_count(f->store, POLITIE), rows[i].politie_left);
        assert_int_equal(store_mailbox_count(f->store, POLITIE2), rows[i].politie2_left);
    }
    assert_int_equal(store_commit(f->store), 0);
    time_t after = time(NULL);
    assert_int_equal(told.n, 2);
    assert_int_equal(told.seq[0], a1);
    assert_int_equal(told.seq[1], a2);
    /* A tombstone for each, dated by the broker's clock or the wall clock. */
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM tombstones WHERE seq IN (%lld, %lld) AND expired_at = %lld",
             (long long)a1, (long long)a2, NOW);
    assert_int_equal(raw_int(f->path, sql), 2);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM tombstones WHERE expired_at BETWEEN %lld AND %lld",
             (long long)before, (long long)after);
    assert_int_equal(raw_int(f->path, sql), 2);
    /* The signal stays. */
    mailbox_seen_t seen = {.n = 0};
    assert_int_equal(store_mailbox_scan(f->store, POLITIE, 0, 10, collect_mailbox, &seen), 1);
    assert_string_equal(seen.body[0], "signal");

    /* The callback may not call the store. */
    (void)deliver(f->store, a, 1, POLITIE, RIEC, 1, cmd, "a3", OPEN);
    dropped_seen_t reentry = {.reenter = f->store};
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(
        store_case_drop_deliveries_at(f->store, a, POLITIE, NOW, collect_dropped, &reentry), 1);
    assert_int_equal(reentry.reenter_result, -1);
    assert_int_equal(store_commit(f->store), 0);
}

/* ------------------------------------------------------------------ retention */

/* The expiry of every row that belongs to case_id, as a count of rows
 * whose expires_at differs from want (0: all agree). */
static int64_t rows_not_expiring_at(const char *path, const char *case_id, int64_t want)
{
    char sql[1280], digits[24], rule_expiry[32];
    /* a case's mailbox row (one delivery) holds its expiry twice: its
     * expires_at, and its rule line's first field (store_mailbox_row.c) */
    snprintf(digits, sizeof digits, "%lld", (long long)want);
    snprintf(rule_expiry, sizeof rule_expiry, "%zu:%s,", strlen(digits), digits);
    snprintf(sql, sizeof sql,
             "SELECT (SELECT count(*) FROM cases WHERE case_id = '%1$s' AND expires_at != %2$lld)"
             " + (SELECT count(*) FROM case_events WHERE case_id = '%1$s'"
             "    AND expires_at != %2$lld)"
             " + (SELECT count(*) FROM mailbox WHERE case_id = '%1$s'"
             "    AND (expires_at != %2$lld OR substr(rules, 1, length('%3$s')) != '%3$s'))"
             " + (SELECT count(*) FROM items WHERE seq IN (SELECT item_seq FROM case_items"
             "    WHERE case_id = '%1$s') AND expires_at != %2$lld)"
             " + (SELECT count(*) FROM publishes WHERE id IN (SELECT publish_id FROM items"
             "    WHERE seq IN (SELECT item_seq FROM case_items WHERE case_id = '%1$s'))"
             "    AND expires_at != %2$lld)",
             case_id, (long long)want, rule_expiry);
    return raw_int(path, sql);
}

static int64_t rows_of_case(const char *path, const char *case_id)
{
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT (SELECT count(*) FROM cases WHERE case_id = '%1$s')"
             " + (SELECT count(*) FROM case_members WHERE case_id = '%1$s')"
             " + (SELECT count(*) FROM case_events WHERE case_id = '%1$s')"
             " + (SELECT count(*) FROM case_items WHERE case_id = '%1$s')"
             " + (SELECT count(*) FROM mailbox WHERE case_id = '%1$s')",
             case_id);
    return raw_int(path, sql);
}

/* Case a: members, three events, two commands delivered (one acked), one
 * command without deliveries (linked by hand). Case b: one event and one
 * delivery. A signal to politie, due late. */
typedef struct retention_world {
    char a[SCHAKEL_CASE_ID_LEN + 1], b[SCHAKEL_CASE_ID_LEN + 1];
    int64_t lone_item;
} retention_world_t;

static void retention_world(store_t *store, retention_world_t *w)
{
    assert_int_equal(store_begin(store), 0);
    case_new(store, "a", w->a);
    case_new(store, "b", w->b);
    assert_int_equal(store_case_member_set(store, w->a, "riec", 'm', "a.lead", "h", NOW), 0);
    assert_int_equal(store_case_member_set(store, w->a, "politie", 'm', "a.politie", "h", NOW), 0);
    for (uint64_t e = 1; e <= 3; e++)
        event_add_ok(store, w->a, e, "event of a");
    event_add_ok(store, w->b, 1, "event of b");
    int64_t c1 = command(store, RIEC, 1, "open");
    int64_t c2 = command(store, RIEC, 2, "invite");
    (void)deliver(store, w->a, 1, POLITIE, RIEC, 1, c1, "opened", OPEN);
    int64_t acked = deliver(store, w->a, 1, RIEC, RIEC, 1, c1, "opened", OPEN);
    (void)deliver(store, w->a, 1, POLITIE, RIEC, 2, c2, "invited", OPEN);
    assert_int_equal(store_delivery_ack(store, RIEC, (uint64_t)acked), 1);
    w->lone_item = command(store, RIEC, 3, "a note nobody else receives");
    int64_t cb = command(store, RIEC, 4, "open b");
    (void)deliver(store, w->b, 1, POLITIE, RIEC, 4, cb, "opened b", OPEN);
    int64_t signal = command(store, GEMEENTE, 5, "signal");
    (void)deliver(store, NULL, 0, POLITIE, GEMEENTE, 5, signal, "signal", NOW + 100000);
    assert_int_equal(store_commit(store), 0);
}

static void test_item_link_keeps_command_evidence(void **state)
{
    fixture_t *f = *state;
    retention_world_t w;
    retention_world(f->store, &w);
    /* Rows that must fail. */
    assert_int_equal(store_case_item_link(f->store, "C-00000077", (uint64_t)w.lone_item), -1);
    assert_int_equal(store_case_item_link(f->store, w.a, 999999), -1);
    assert_int_equal(store_case_item_link(f->store, w.a, 0), -1);
    assert_int_equal(store_case_item_link(f->store, NULL, (uint64_t)w.lone_item), -1);
    /* Unlinked, a command nobody was sent expires at its accepted_at... */
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT expires_at FROM items WHERE seq = %lld",
             (long long)w.lone_item);
    assert_int_equal(raw_int(f->path, sql), NOW + 3);
    /* ...linked, it lives as long as the case, and twice is once. */
    assert_int_equal(store_case_item_link(f->store, w.a, (uint64_t)w.lone_item), 0);
    assert_int_equal(store_case_item_link(f->store, w.a, (uint64_t)w.lone_item), 0);
    assert_int_equal(raw_int(f->path, sql), OPEN);
    assert_int_equal(rows_not_expiring_at(f->path, w.a, OPEN), 0);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_expire(f->store, NOW + 50000, 100, NULL, NULL), 0);
    assert_int_equal(store_commit(f->store), 0);
    uint8_t *body = NULL;
    size_t len = 0;
    assert_int_equal(store_item_get(f->store, (uint64_t)w.lone_item, &body, &len), 1);
    assert_memory_equal(body, "a note nobody else receives", len);
    sodium_memzero(body, len);
    free(body);
}

typedef struct expired_count {
    size_t n;
} expired_count_t;

static void count_expired(const store_expired_t *e, void *arg)
{
    (void)e;
    ((expired_count_t *)arg)->n++;
}

static void test_set_expiry_and_sweep(void **state)
{
    fixture_t *f = *state;
    retention_world_t w;
    retention_world(f->store, &w);
    assert_int_equal(store_case_item_link(f->store, w.a, (uint64_t)w.lone_item), 0);
    const int64_t a_rows = rows_of_case(f->path, w.a), b_rows = rows_of_case(f->path, w.b);
    assert_int_equal(a_rows, 1 + 2 + 3 + 3 + 2); /* case, members, events, items, deliveries */

    /* Rows that must fail. */
    assert_int_equal(store_case_set_expiry(f->store, w.a, NOW + 500), -1); /* no transaction */
    assert_non_null(strstr(store_errmsg(f->store), "transaction"));
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_case_set_expiry(f->store, "C-00000077", NOW + 500), -1);
    assert_non_null(strstr(store_errmsg(f->store), "no such case"));

    assert_int_equal(store_rollback(f->store), 0);

    /* Close, reopen, close: every row of a follows; b never moves. */
    static const int64_t steps[] = {NOW + 500, OPEN, NOW + 500};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        assert_int_equal(store_begin(f->store), 0);
        assert_int_equal(store_case_set_expiry(f->store, w.a, steps[i]), 0);
        assert_int_equal(store_commit(f->store), 0);
        if (rows_not_expiring_at(f->path, w.a, steps[i]) != 0)
            fail_msg("step %zu: rows of a that do not expire at %lld", i, (long long)steps[i]);
        assert_int_equal(rows_not_expiring_at(f->path, w.b, OPEN), 0);
    }
    /* An event added after the close takes the case's expiry. */
    assert_int_equal(store_case_set_closed(f->store, w.a, 1, NOW), 0);
    event_add_ok(f->store, w.a, 4, "closed");
    assert_int_equal(rows_not_expiring_at(f->path, w.a, NOW + 500), 0);

    static const struct {
        int64_t now;
        int64_t a_rows, b_rows, tombstones, items, publishes;
        int removed;
    } sweeps[] = {
        /* before the end of a's retention: nothing of a */
        {NOW + 499, 1 + 2 + 4 + 3 + 2, 4, 0, 5, 5, 0},
        /* at its end: a's two pending deliveries (tombstones), its three
         * command items and publishes, four events and the case (members and
         * item links with it); b and the signal stay */
        {NOW + 500, 0, 4, 2, 2, 2, 2 + 3 + 3 + 4 + 1},
        {NOW + 501, 0, 4, 2, 2, 2, 0},
    };
    for (size_t i = 0; i < sizeof sweeps / sizeof sweeps[0]; i++) {
        expired_count_t told = {0};
        assert_int_equal(store_begin(f->store), 0);
        int removed = store_expire(f->store, sweeps[i].now, 100, count_expired, &told);
        assert_int_equal(store_commit(f->store), 0);
        int64_t got[5] = {rows_of_case(f->path, w.a), rows_of_case(f->path, w.b),
                          raw_int(f->path, "SELECT count(*) FROM tombstones"),
                          raw_int(f->path, "SELECT count(*) FROM items"),
                          raw_int(f->path, "SELECT count(*) FROM publishes")};
        int64_t want[5] = {sweeps[i].a_rows, sweeps[i].b_rows, sweeps[i].tombstones,
                           sweeps[i].items, sweeps[i].publishes};
        if (removed != sweeps[i].removed)
            fail_msg("sweep %zu: removed %d, want %d (%s)", i, removed, sweeps[i].removed,
                     store_errmsg(f->store));
        for (int k = 0; k < 5; k++)
            if (got[k] != want[k])
                fail_msg("sweep %zu: count %d is %lld, want %lld", i, k, (long long)got[k],
                         (long long)want[k]);
        assert_int_equal(told.n, (size_t)(i == 1 ? 2 : 0));
    }
    assert_int_equal(b_rows, 4);
    /* a is gone as if it never was; b is whole. */
    store_case_t c;
    assert_int_equal(store_case_get(f->store, w.a, &c), 0);
    events_seen_t seen = {.n = 0};
    assert_int_equal(store_case_events(f->store, w.a, 0, collect_event, &seen), 0);
    assert_int_equal(store_case_get(f->store, w.b, &c), 1);
    assert_int_equal(store_case_events(f->store, w.b, 0, collect_event, &seen), 1);
    assert_int_equal(store_mailbox_count(f->store, POLITIE), 2); /* b's event and the signal */
}

/* A row's purpose changed behind the store: its rule line names another
 * purpose (the same framing, so it still reads), which its seal binds. */
#define PURPOSE_ALTERED                                                                            \
    "UPDATE mailbox SET rules = replace(rules, '32:Gezamenlijke aanpak ondermijning,',"            \
    " '9:Marketing,') WHERE first_seq = %lld"

/* recipient's row holding seq, a row of that one delivery, set aside
 * inside the open transaction. */
static void set_aside_ok(store_t *store, const char *recipient, int64_t seq)
{
    store_mailbox_aside_t aside;
    if (store_mailbox_row_set_aside(store, recipient, (uint64_t)seq, NOW, &aside) != 1)
        fail_msg("set aside %s %lld: %s", recipient, (long long)seq, store_errmsg(store));
    assert_int_equal(aside.first_seq, (uint64_t)seq);
    assert_int_equal(aside.last_seq, (uint64_t)seq);
    assert_int_equal(aside.n_set_aside, 1);
}

/* A case's delivery set aside (it does not authenticate) follows the
 * case's retention as its waiting ones do: a close sets its expires_at
 * (else one of an open case would never go); the case stays while it
 * does, and both go at its end. */
static void test_set_aside_delivery_follows_its_case(void **state)
{
    fixture_t *f = *state;
    char case_id[SCHAKEL_CASE_ID_LEN + 1], sql[256];
    assert_int_equal(store_begin(f->store), 0);
    case_new(f->store, "Pand Kerkstraat", case_id);
    int64_t item_seq = command(f->store, "riec/analist", 1, "opened");
    int64_t seq =
        deliver(f->store, case_id, 1, POLITIE, "riec/analist", 1, item_seq, "opened", OPEN);
    assert_int_equal(store_commit(f->store), 0);
    snprintf(sql, sizeof sql, PURPOSE_ALTERED, (long long)seq);
    store_fixture_raw_exec(f->path, sql);
    size_t visited = 0;
    assert_int_equal(store_mailbox_scan(f->store, POLITIE, 0, 10, count_delivery, &visited), -1);
    assert_int_equal(store_scan_unreadable(f->store), (uint64_t)seq);
    assert_int_equal(store_begin(f->store), 0);
    set_aside_ok(f->store, POLITIE, seq);
    assert_int_equal(store_case_set_expiry(f->store, case_id, NOW + 500), 0);
    assert_int_equal(store_commit(f->store), 0);
    snprintf(sql, sizeof sql, "SELECT expires_at FROM mailbox_set_aside WHERE first_seq = %lld",
             (long long)seq);
    assert_int_equal(raw_int(f->path, sql), NOW + 500);

    /* held longer by hand: the case waits for it */
    snprintf(sql, sizeof sql,
             "UPDATE mailbox_set_aside SET expires_at = %lld WHERE first_seq = %lld",
             (long long)(NOW + 900), (long long)seq);
    store_fixture_raw_exec(f->path, sql);
    static const struct {
        int64_t now;
        int64_t set_aside, cases;
    } sweeps[] = {{NOW + 500, 1, 1}, {NOW + 900, 0, 0}};
    for (size_t i = 0; i < sizeof sweeps / sizeof sweeps[0]; i++) {
        assert_int_equal(store_begin(f->store), 0);
        assert_true(store_expire(f->store, sweeps[i].now, 100, NULL, NULL) >= 0);
        assert_int_equal(store_commit(f->store), 0);
        assert_int_equal(raw_int(f->path, "SELECT count(*) FROM mailbox_set_aside"),
                         sweeps[i].set_aside);
        assert_int_equal(raw_int(f->path, "SELECT count(*) FROM cases"), sweeps[i].cases);
    }
    snprintf(sql, sizeof sql, "SELECT count(*) FROM tombstones WHERE seq = %lld", (long long)seq);
    assert_int_equal(raw_int(f->path, sql), 1);
}

/* A case's close sets the expires_at of its deliveries set aside, but
 * their case_id may be the damage: a signal's row altered to name the
 * case (it no longer authenticates, and is set aside) is never kept past
 * its own item's retention by the close, while the case's own row
 * follows the close, and a reopen, as before. */
static void test_close_bounds_set_aside_rows_by_their_item(void **state)
{
    fixture_t *f = *state;
    char case_id[SCHAKEL_CASE_ID_LEN + 1], sql[256];
    const int64_t signal_until = NOW + 200, closed_until = NOW + 5000;
    assert_int_equal(store_begin(f->store), 0);
    case_new(f->store, "Pand Molenweg", case_id);
    int64_t command_item = command(f->store, "riec/analist", 1, "opened");
    int64_t own =
        deliver(f->store, case_id, 1, POLITIE, "riec/analist", 1, command_item, "opened", OPEN);
    int64_t signal_item = command(f->store, "politie/bvh", 2, "signal");
    int64_t signal = deliver(f->store, NULL, 0, "om/parket", "politie/bvh", 2, signal_item,
                             "signal", signal_until);
    assert_int_equal(store_commit(f->store), 0);
    snprintf(sql, sizeof sql,
             PURPOSE_ALTERED ";"
                             "UPDATE mailbox SET case_id = '%s' WHERE first_seq = %lld",
             (long long)own, case_id, (long long)signal);
    store_fixture_raw_exec(f->path, sql);
    const struct {
        const char *recipient;
        int64_t seq;
    } rows[] = {{POLITIE, own}, {"om/parket", signal}};
    for (size_t i = 0; i < 2; i++) {
        size_t visited = 0;
        assert_int_equal(
            store_mailbox_scan(f->store, rows[i].recipient, 0, 10, count_delivery, &visited), -1);
        assert_int_equal(store_begin(f->store), 0);
        set_aside_ok(f->store, rows[i].recipient, rows[i].seq);
        assert_int_equal(store_commit(f->store), 0);
    }
    const struct {
        int64_t expiry, own, signal;
    } steps[] = {
        {closed_until, closed_until, signal_until}, /* a close */
        {OPEN, OPEN, signal_until},                 /* a reopen */
        {closed_until, closed_until, signal_until}, /* closed again */
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        assert_int_equal(store_begin(f->store), 0);
        assert_int_equal(store_case_set_expiry(f->store, case_id, steps[i].expiry), 0);
        assert_int_equal(store_commit(f->store), 0);
        snprintf(sql, sizeof sql, "SELECT expires_at FROM mailbox_set_aside WHERE first_seq = %lld",
                 (long long)own);
        if (raw_int(f->path, sql) != steps[i].own)
            fail_msg("step %zu: the case's own row expires at %lld", i,
                     (long long)raw_int(f->path, sql));
        snprintf(sql, sizeof sql, "SELECT expires_at FROM mailbox_set_aside WHERE first_seq = %lld",
                 (long long)signal);
        if (raw_int(f->path, sql) != steps[i].signal)
            fail_msg("step %zu: the altered signal's row expires at %lld", i,
                     (long long)raw_int(f->path, sql));
    }
}

/* Closing a case never lowers an item below what else still needs it: a
 * pending delivery outside the case, or another case that links it.
 * Otherwise the sweep, which takes the earliest due items first, a batch
 * at a time, would stall on due items still referenced (and leave others
 * past their retention), and closing one case could remove an item another
 * still holds. */
static void test_close_keeps_items_others_need(void **state)
{
    fixture_t *f = *state;
    enum { LINKED = 150, SWEEP = 100 }; /* more due-but-linked items than one sweep looks at */
    const int64_t year = NOW + 365 * 86400;
    char a[SCHAKEL_CASE_ID_LEN + 1], b[SCHAKEL_CASE_ID_LEN + 1];
    assert_int_equal(store_begin(f->store), 0);
    case_new(f->store, "A", a);
    case_new(f->store, "B", b);
    int64_t lone = command(f->store, POLITIE, 1000, "referenced by nothing"); /* due at NOW+1000 */
    int64_t shared = command(f->store, POLITIE, 2, "linked to both cases");
    assert_int_equal(store_case_item_link(f->store, a, (uint64_t)shared), 0);
    assert_int_equal(store_case_item_link(f->store, b, (uint64_t)shared), 0);
    for (unsigned i = 0; i < LINKED; i++) {
        char body[32];
        snprintf(body, sizeof body, "signal %u", i);
        int64_t item = command(f->store, POLITIE, 300 + i, body);
        (void)deliver(f->store, NULL, 0, POLITIE2, POLITIE, 300 + i, item, "mask", year);
        assert_int_equal(store_case_item_link(f->store, a, (uint64_t)item), 0);
    }
    assert_int_equal(store_case_set_expiry(f->store, a, NOW + 10), 0); /* a closes */
    char sql_due[96];
    assert_int_equal(store_commit(f->store), 0);
    snprintf(sql_due, sizeof sql_due, "SELECT count(*) FROM items WHERE expires_at < %lld",
             (long long)year);
    assert_int_equal(raw_int(f->path, sql_due), 1); /* only the lone item is due within the year */
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT expires_at FROM items WHERE seq = %lld", (long long)shared);
    assert_true(raw_int(f->path, sql) == OPEN); /* b is open */

    expired_count_t told = {0};
    assert_int_equal(store_begin(f->store), 0);
    int removed = store_expire(f->store, NOW + 5000, SWEEP, count_expired, &told);
    assert_int_equal(store_commit(f->store), 0);
    assert_true(removed >= 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM items WHERE seq = %lld", (long long)lone);
    assert_int_equal(raw_int(f->path, sql), 0); /* swept, not held up behind the linked ones */
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM items"), LINKED + 1);
    assert_int_equal(told.n, 0); /* no delivery was due */
}

static void test_case_waits_for_its_deliveries(void **state)
{
    fixture_t *f = *state;
    char id[SCHAKEL_CASE_ID_LEN + 1];
    assert_int_equal(store_begin(f->store), 0);
    case_new(f->store, "t", id);
    for (uint64_t e = 1; e <= 5; e++)
        event_add_ok(f->store, id, e, "event");
    assert_int_equal(store_case_set_expiry(f->store, id, NOW + 10), 0);
    /* A delivery the caller gave a later expiry than the case's. */
    int64_t cmd = command(f->store, RIEC, 1, "close");
    (void)deliver(f->store, id, 1, POLITIE, RIEC, 1, cmd, "closed", NOW + 20);
    assert_int_equal(store_commit(f->store), 0);
    static const struct {
        int64_t now;
        size_t limit;
        int64_t events, cases, deliveries;
    } rows[] = {
        {NOW + 15, 2, 3, 1, 1}, /* bounded: two events at a time */
        {NOW + 15, 2, 1, 1, 1},
        {NOW + 15, 2, 0, 1, 1}, /* the case waits for its delivery */
        {NOW + 20, 2, 0, 0, 0}, /* delivery, item, publish, then the case */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        assert_int_equal(store_begin(f->store), 0);
        assert_true(store_expire(f->store, rows[i].now, rows[i].limit, NULL, NULL) >= 0);
        assert_int_equal(store_commit(f->store), 0);
        int64_t got[3] = {raw_int(f->path, "SELECT count(*) FROM case_events"),
                          raw_int(f->path, "SELECT count(*) FROM cases"),
                          raw_int(f->path, "SELECT count(*) FROM mailbox")};
        int64_t want[3] = {rows[i].events, rows[i].cases, rows[i].deliveries};
        for (int k = 0; k < 3; k++)
            if (got[k] != want[k])
                fail_msg("row %zu: count %d is %lld, want %lld", i, k, (long long)got[k],
                         (long long)want[k]);
    }
}

/* ------------------------------------------------------------------ a partner's cases */

typedef struct cases_seen {
    char case_id[8][SCHAKEL_CASE_ID_LEN + 1];
    char title[8][32];
    char state[8];
    int closed[8];
    size_t n, stop_after;
    store_t *reenter;
    int reenter_result;
} cases_seen_t;

static int collect_case(const store_case_t *c, char my_state, void *arg)
{
    cases_seen_t *seen = arg;
    assert_true(seen->n < 8);
    assert_string_equal(c->case_type, CASE_TYPE);
    assert_string_equal(c->lead, "riec");
    snprintf(seen->case_id[seen->n], sizeof seen->case_id[0], "%s", c->case_id);
    snprintf(seen->title[seen->n], sizeof seen->title[0], "%s", c->title);
    seen->state[seen->n] = my_state;
    seen->closed[seen->n] = c->closed;
    seen->n++;
    if (seen->reenter != NULL) {
        char id[SCHAKEL_CASE_ID_LEN + 1];
        seen->reenter_result = store_case_create(seen->reenter, CASE_TYPE, "riec", "x", NOW, id);
    }
    return seen->stop_after != 0 && seen->n >= seen->stop_after;
}

static void test_cases_of_partner(void **state)
{
    fixture_t *f = *state;
    char ids[4][SCHAKEL_CASE_ID_LEN + 1];
    for (unsigned i = 0; i < 4; i++) {
        char title[24];
        snprintf(title, sizeof title, "title %u", i);
        case_new(f->store, title, ids[i]);
        assert_int_equal(store_case_member_set(f->store, ids[i], "riec", 'm', "lead", "h", NOW), 0);
    }
    assert_int_equal(store_case_member_set(f->store, ids[0], "politie", 'm', "r", "h", NOW), 0);
    assert_int_equal(store_case_member_set(f->store, ids[2], "politie", 'i', "r", "h", NOW), 0);
    assert_int_equal(store_case_member_set(f->store, ids[3], "politie", 'l', "r", "h", NOW), 0);
    assert_int_equal(store_case_member_set(f->store, ids[1], "gemeente", 'd', "r", "h", NOW), 0);
    assert_int_equal(store_case_set_closed(f->store, ids[2], 1, NOW), 0);
    static const struct {
        const char *partner;
        int count;
        int index[4]; /* which of ids, in order */
        char state[4];
    } rows[] = {
        {"riec", 4, {0, 1, 2, 3}, {'m', 'm', 'm', 'm'}},
        /* a case left or declined is not read (its title not unsealed) */
        {"politie", 2, {0, 2}, {'m', 'i'}},
        {"gemeente", 0, {0}, {0}},
        {"om", 0, {0}, {0}},
        {"", 0, {0}, {0}},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        cases_seen_t seen = {.n = 0};
        int rc = store_cases_of_partner(f->store, rows[i].partner, collect_case, &seen);
        if (rc != rows[i].count)
            fail_msg("row %zu: got %d (%s)", i, rc, store_errmsg(f->store));
        for (int k = 0; k < rows[i].count; k++) {
            int which = rows[i].index[k];
            char title[24];
            snprintf(title, sizeof title, "title %d", which);
            assert_string_equal(seen.case_id[k], ids[which]);
            assert_string_equal(seen.title[k], title);
            assert_int_equal(seen.state[k], rows[i].state[k]);
            assert_int_equal(seen.closed[k], which == 2);
        }
    }
    cases_seen_t stop = {.stop_after = 1};
    assert_int_equal(store_cases_of_partner(f->store, "riec", collect_case, &stop), 1);
    assert_int_equal(store_cases_of_partner(f->store, NULL, collect_case, &stop), -1);
    assert_int_equal(store_cases_of_partner(f->store, "riec", NULL, NULL), -1);
    cases_seen_t reentry = {.reenter = f->store};
    assert_int_equal(store_cases_of_partner(f->store, "politie", collect_case, &reentry), 2);
    assert_int_equal(reentry.reenter_result, -1);
}

/* ------------------------------------------------------------------ items */

static void test_item_get(void **state)
{
    fixture_t *f = *state;
    int64_t signal = command(f->store, GEMEENTE, 1, "the signed signal bytes");
    int64_t empty = command(f->store, GEMEENTE, 2, "");
    int64_t flipped = command(f->store, GEMEENTE, 3, "a signal someone tampered with");
    char sql[256];
    snprintf(sql, sizeof sql,
             "UPDATE items SET body = substr(body, 1, 30) ||"
             " CASE WHEN substr(body, 31, 1) = x'00' THEN x'01' ELSE x'00' END ||"
             " substr(body, 32) WHERE seq = %lld",
             (long long)flipped);
    store_fixture_raw_exec(f->path, sql);
    static const struct {
        int which; /* 0 signal, 1 empty, 2 flipped, 3 unknown, 4 zero */
        int result;
        const char *body;
    } rows[] = {
        {0, 1, "the signed signal bytes"}, {1, 1, ""}, {2, -1, NULL}, {3, 0, NULL}, {4, 0, NULL},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint64_t seq = rows[i].which == 0   ? (uint64_t)signal
                       : rows[i].which == 1 ? (uint64_t)empty
                       : rows[i].which == 2 ? (uint64_t)flipped
                       : rows[i].which == 3 ? (uint64_t)flipped + 100
                                            : 0;
        uint8_t *body = (uint8_t *)"not touched";
        size_t len = 99;
        int rc = store_item_get(f->store, seq, &body, &len);
        if (rc != rows[i].result)
            fail_msg("row %zu: item_get gave %d (%s)", i, rc, store_errmsg(f->store));
        if (rc == 1) {
            assert_int_equal(len, strlen(rows[i].body));
            assert_memory_equal(body, rows[i].body, len);
            sodium_memzero(body, len);
            free(body);
        } else {
            assert_null(body);
            assert_int_equal(len, 0);
        }
        if (rc == -1)
            assert_non_null(strstr(store_errmsg(f->store), "does not authenticate"));
    }
    size_t len = 0;
    uint8_t *body = NULL;
    assert_int_equal(store_item_get(f->store, (uint64_t)signal, NULL, &len), -1);
    assert_int_equal(store_item_get(f->store, (uint64_t)signal, &body, NULL), -1);
}

/* ------------------------------------------------------------------ rekeying and indexes */

static void test_rekey_reseals_case_bodies(void **state)
{
    fixture_t *f = *state;
    char id[SCHAKEL_CASE_ID_LEN + 1];
    case_new(f->store, MARK_TITLE, id);
    event_add_ok(f->store, id, 1, "opened");
    event_add_ok(f->store, id, 2, MARK_NOTE);
    int64_t cmd = command(f->store, RIEC, 1, "note command");
    (void)deliver(f->store, id, 1, POLITIE, RIEC, 1, cmd, MARK_DELIVERY, OPEN);
    uint8_t new_key[STORE_KEY_BYTES];
    randombytes_buf(new_key, sizeof new_key);
    store_rekey_counts_t counts = {0, 0};
    assert_int_equal(store_rekey(f->store, new_key, &counts), 0);
    assert_int_equal(counts.items, 1);
    assert_int_equal(counts.mailbox_rows, 1);
    /* Read back through a new opening under the new key. */
    store_close(&f->store);
    f->store = store_fixture_open(f->path, new_key);
    store_case_t c;
    assert_int_equal(store_case_get(f->store, id, &c), 1);
    assert_string_equal(c.title, MARK_TITLE);
    events_seen_t seen = {.n = 0};
    assert_int_equal(store_case_events(f->store, id, 0, collect_event, &seen), 2);
    assert_string_equal(seen.body[1], MARK_NOTE);
    mailbox_seen_t mailbox = {.n = 0};
    assert_int_equal(store_mailbox_scan(f->store, POLITIE, 0, 10, collect_mailbox, &mailbox), 1);
    assert_string_equal(mailbox.body[0], MARK_DELIVERY);
    assert_string_equal(mailbox.case_id[0], id);
    /* The old key opens nothing any more. */
    store_close(&f->store); /* one handle writes a store at a time */
    char err[512] = "";
    store_t *old = store_open(f->path, test_key, STORE_OPEN_EXISTING, err, sizeof err);
    assert_null(old);
    assert_non_null(strstr(err, "does not open this store"));
    sodium_memzero(new_key, sizeof new_key);
}

static void test_case_queries_use_indexes(void **state)
{
    fixture_t *f = *state;
    static const struct {
        const char *sql, *index;
    } rows[] = {
        /* the statements' own shapes, parameters included: a bound case id
         * must still select the partial index */
        {"SELECT first_seq, n, recipient FROM mailbox WHERE case_id = ?1"
         " AND recipient >= ?2 AND recipient < ?2 || '0' AND (recipient = ?2"
         " OR substr(recipient, 1, length(?2) + 1) = ?2 || '/')"
         " ORDER BY recipient, first_seq",
         "mailbox_by_case"},
        {"SELECT first_seq, n, recipient, body FROM mailbox"
         " WHERE case_id = ?1 AND (recipient, first_seq) > (?2, ?3)"
         " ORDER BY recipient, first_seq LIMIT 1",
         "mailbox_by_case"},
        {"SELECT event_seq, body FROM case_events WHERE case_id = ?1 AND event_seq > ?2"
         " ORDER BY event_seq",
         "sqlite_autoindex_case_events"},
        {"SELECT id FROM case_events WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
         "case_events_by_expiry"},
        {"SELECT num FROM cases WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
         "cases_by_expiry"},
        {"SELECT c.case_id FROM case_members AS m JOIN cases AS c ON c.case_id = m.case_id"
         " WHERE m.partner = ?1 ORDER BY c.num",
         "case_members_by_partner"},
        {"SELECT partner, state FROM case_members WHERE case_id = ?1 ORDER BY id",
         "sqlite_autoindex_case_members"},
        {"UPDATE mailbox_set_aside SET expires_at = ?2 WHERE case_id = ?1",
         "mailbox_set_aside_by_case"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char plan[1024];
        store_fixture_plan(f->path, rows[i].sql, plan, sizeof plan);
        if (strstr(plan, rows[i].index) == NULL)
            fail_msg("row %zu: plan \"%s\" does not use %s", i, plan, rows[i].index);
        if (i < 5 && strstr(plan, "TEMP B-TREE") != NULL)
            fail_msg("row %zu: plan \"%s\" sorts", i, plan);
    }
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    randombytes_buf(test_key, sizeof test_key);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_and_get, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_case_ids_never_reused, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_case_ids_run_out, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_case_ids_move_to_the_last, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_close_and_reopen_flags, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_member_states, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_member_limit, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_events_in_order, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_case_bodies_sealed_in_file, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_case_event_sealed_to_its_row, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_tampered_case_rows_do_not_authenticate, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_case_deliveries_in_mailbox, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_drop_deliveries, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_drop_deliveries_of_a_partner, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_item_link_keeps_command_evidence, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_set_expiry_and_sweep, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_set_aside_delivery_follows_its_case, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_close_bounds_set_aside_rows_by_their_item, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_close_keeps_items_others_need, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_case_waits_for_its_deliveries, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_cases_of_partner, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_item_get, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_rekey_reseals_case_bodies, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_case_queries_use_indexes, setup,
                                        store_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
