/*
 * test_store.c — unit tests of broker/store.c against real SQLite files.
 *
 * Each test gets its own mkdtemp() folder under /tmp, removed afterwards.
 * The store's file is also inspected through a second, raw SQLite
 * connection (WAL mode, schema version, sealed bodies, tampering) and as raw
 * bytes (no plaintext, expired bodies gone); a crash is simulated by a child
 * process that exits in the middle of a transaction, a full disk by a page
 * limit. The store key is random per run.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>
#include <sqlite3.h>

#include "store.h"

#define GEMEENTE "gemeente/meldingen"
#define WOCO "woco-servatius/meldingen"
#define POLITIE "politie/bvh-koppeling"
#define RIEC "riec/analist"

typedef struct fixture {
    char dir[64];
    char path[128];
    store_t *store;
} fixture_t;

/* ------------------------------------------------------------------ helpers */

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        char file[512];
        snprintf(file, sizeof file, "%s/%s", dir, entry->d_name);
        unlink(file);
    }
    closedir(d);
    rmdir(dir);
}

static void fixture_path(const fixture_t *f, const char *name, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "%s/%s", f->dir, name);
    assert_true(n > 0 && (size_t)n < outlen);
}

static uint8_t test_key[STORE_KEY_BYTES];

static store_t *open_with(const char *path, const uint8_t key[STORE_KEY_BYTES], char *err,
                          size_t errlen)
{
    store_transitional_set_key(key);
    return store_open(path, err, errlen);
}

static store_t *open_ok(const char *path)
{
    char err[512] = "";
    store_t *store = open_with(path, test_key, err, sizeof err);
    if (store == NULL)
        fail_msg("store_open(%s): %s", path, err);
    return store;
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/schakel-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    fixture_path(f, "store.db", f->path, sizeof f->path);
    f->store = open_ok(f->path);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    store_close(&f->store);
    remove_tree(f->dir);
    free(f);
    return 0;
}

static void reopen(fixture_t *f)
{
    store_close(&f->store);
    assert_null(f->store);
    f->store = open_ok(f->path);
}

/* Distinct, deterministic bytes per n, so that every id and hash differs. */
static void fill(uint8_t *out, size_t len, unsigned n, uint8_t salt)
{
    for (size_t i = 0; i < len; i++)
        out[i] = (uint8_t)(n * 31u + i * 7u + salt);
}

static int64_t publish(store_t *store, const char *sender, unsigned n, int64_t accepted_at)
{
    uint8_t id[16], hash[32], sig[64], root[32];
    fill(id, sizeof id, n, 1);
    fill(hash, sizeof hash, n, 2);
    fill(sig, sizeof sig, n, 3);
    fill(root, sizeof root, n, 4);
    return store_publish_add(store, sender, id, hash, sig, root, accepted_at);
}

static int64_t item(store_t *store, int64_t publish_id, uint32_t index)
{
    uint8_t body[48];
    fill(body, sizeof body, (unsigned)publish_id * 100u + index, 5);
    return store_item_add(store, publish_id, index, body, sizeof body);
}

/* A delivery matching the item: the publish (sender, n, accepted_at) and its
 * item index. id must outlive the delivery. */
typedef struct delivery_spec {
    store_delivery_t d;
    uint8_t id[16];
    uint8_t body[24];
} delivery_spec_t;

static void delivery_spec(delivery_spec_t *spec, const char *recipient, const char *sender,
                          const char *sender_partner, unsigned n, int64_t accepted_at,
                          int64_t item_seq, uint32_t index)
{
    memset(spec, 0, sizeof *spec);
    fill(spec->id, sizeof spec->id, n, 1);
    fill(spec->body, sizeof spec->body, (unsigned)item_seq, 9);
    spec->d.recipient = recipient;
    spec->d.item_seq = (uint64_t)item_seq;
    spec->d.message_id = spec->id;
    spec->d.item_index = index;
    spec->d.sender = sender;
    spec->d.sender_partner = sender_partner;
    spec->d.rule_id = "woco-ondermijning";
    spec->d.rule_hash = "9f2c0d4e";
    spec->d.purpose = "Aanpak ondermijning";
    spec->d.legal_basis = "Convenant RIEC Limburg 2023, art. 6";
    spec->d.accepted_at = accepted_at;
    spec->d.expires_at = accepted_at + 365 * 86400;
    spec->d.body = spec->body;
    spec->d.body_len = sizeof spec->body;
}

/* One publish by WOCO (number n) with one item, delivered to recipient. */
static int64_t deliver_new(store_t *store, const char *recipient, unsigned n)
{
    int64_t accepted_at = 1700000000 + n;
    int64_t publish_id = publish(store, WOCO, n, accepted_at);
    assert_true(publish_id > 0);
    int64_t item_seq = item(store, publish_id, 0);
    assert_true(item_seq > 0);
    delivery_spec_t spec;
    delivery_spec(&spec, recipient, WOCO, "woco-servatius", n, accepted_at, item_seq, 0);
    int64_t seq = store_delivery_add(store, &spec.d);
    if (seq <= 0)
        fail_msg("store_delivery_add: %s", store_errmsg(store));
    return seq;
}

static int publish_known(store_t *store, const char *sender, unsigned n)
{
    uint8_t id[16];
    fill(id, sizeof id, n, 1);
    return store_publish_find(store, sender, id, NULL, NULL, NULL);
}

static sqlite3 *raw_open(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    return db;
}

static void raw_text(sqlite3 *db, const char *sql, char *out, size_t outlen)
{
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    snprintf(out, outlen, "%s", (const char *)sqlite3_column_text(stmt, 0));
    assert_int_equal(sqlite3_finalize(stmt), SQLITE_OK);
}

static long raw_user_version(const char *path)
{
    char value[32];
    sqlite3 *db = raw_open(path);
    raw_text(db, "PRAGMA user_version", value, sizeof value);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return strtol(value, NULL, 10);
}

/* Scan collector. */
#define MAX_SEEN 32
typedef struct seen {
    uint64_t seq[MAX_SEEN];
    size_t n;
    size_t stop_after; /* stop once this many were seen; 0 = never */
    const char *recipient;
    int recipient_wrong;
} seen_t;

static int collect(const store_delivery_t *d, void *arg)
{
    seen_t *seen = arg;
    if (seen->recipient != NULL && strcmp(d->recipient, seen->recipient) != 0)
        seen->recipient_wrong = 1;
    if (seen->n < MAX_SEEN)
        seen->seq[seen->n] = d->seq;
    seen->n++;
    return seen->stop_after != 0 && seen->n >= seen->stop_after;
}

/* ------------------------------------------------------------------ open */

static void test_open_creates_wal_private_versioned_file(void **state)
{
    fixture_t *f = *state;
    char mode[32];
    struct stat st;

    sqlite3 *db = raw_open(f->path);
    raw_text(db, "PRAGMA journal_mode", mode, sizeof mode);
    assert_string_equal(mode, "wal");
    char index_name[64];
    raw_text(db,
             "SELECT name FROM sqlite_master WHERE type = 'index'"
             " AND tbl_name = 'deliveries' AND sql LIKE '%recipient, seq%'",
             index_name, sizeof index_name);
    assert_true(strlen(index_name) > 0);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);

    assert_true(raw_user_version(f->path) > 0);
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 077, 0);
}

static void test_reopen_keeps_data(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(store_begin(f->store), 0);
    int64_t seq = deliver_new(f->store, POLITIE, 1);
    assert_int_equal(store_commit(f->store), 0);
    long version = raw_user_version(f->path);

    reopen(f);
    assert_int_equal(raw_user_version(f->path), version);
    assert_int_equal(publish_known(f->store, WOCO, 1), 1);
    seen_t seen = {.recipient = POLITIE};
    assert_int_equal(store_mailbox_scan(f->store, POLITIE, 0, 10, collect, &seen), 1);
    assert_int_equal(seen.seq[0], (uint64_t)seq);
}

enum bad_store { BAD_NULL, BAD_EMPTY, BAD_MEMORY, BAD_NO_DIR, BAD_GARBAGE, BAD_TOO_NEW };

/* Prepare a path that store_open must refuse. */
static const char *bad_store_path(const fixture_t *f, enum bad_store kind, char *buf, size_t len)
{
    switch (kind) {
    case BAD_NULL:
        return NULL;
    case BAD_EMPTY:
        return "";
    case BAD_MEMORY:
        return ":memory:";
    case BAD_NO_DIR:
        fixture_path(f, "missing/store.db", buf, len);
        return buf;
    case BAD_GARBAGE: {
        fixture_path(f, "garbage.db", buf, len);
        FILE *file = fopen(buf, "w");
        assert_non_null(file);
        for (int i = 0; i < 256; i++)
            fputs("this is not an SQLite database\n", file);
        assert_int_equal(fclose(file), 0);
        return buf;
    }
    case BAD_TOO_NEW: {
        /* One version past what this code writes, in a file that is
         * otherwise a plain rollback-journal database. */
        long known = raw_user_version(f->path);
        char sql[64];
        fixture_path(f, "ahead.db", buf, len);
        sqlite3 *db = NULL;
        assert_int_equal(sqlite3_open(buf, &db), SQLITE_OK);
        snprintf(sql, sizeof sql, "PRAGMA user_version = %ld", known + 1);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_close(db), SQLITE_OK);
        return buf;
    }
    }
    return NULL;
}

static void test_open_refuses(void **state)
{
    fixture_t *f = *state;
    static const struct {
        enum bad_store kind;
        const char *reason; /* expected in the error text */
    } rows[] = {
        {BAD_NULL, "file path"},     {BAD_EMPTY, "file path"},
        {BAD_MEMORY, "file path"},   {BAD_NO_DIR, "No such file"},
        {BAD_GARBAGE, "not a database"}, {BAD_TOO_NEW, "is newer than"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char path[256], err[512] = "";
        const char *p = bad_store_path(f, rows[i].kind, path, sizeof path);
        store_t *store = open_with(p, test_key, err, sizeof err);
        if (store != NULL) {
            store_close(&store);
            fail_msg("row %zu: store_open accepted a bad store", i);
        }
        if (strstr(err, rows[i].reason) == NULL)
            fail_msg("row %zu: error \"%s\" lacks \"%s\"", i, err, rows[i].reason);
    }
}

static void test_too_new_store_left_untouched(void **state)
{
    fixture_t *f = *state;
    char path[256], mode[32], err[512] = "";
    bad_store_path(f, BAD_TOO_NEW, path, sizeof path);
    long version = raw_user_version(path);

    assert_null(open_with(path, test_key, err, sizeof err));
    /* Refused before anything was written: not switched to WAL, version kept. */
    sqlite3 *db = raw_open(path);
    raw_text(db, "PRAGMA journal_mode", mode, sizeof mode);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_string_equal(mode, "delete");
    assert_int_equal(raw_user_version(path), version);
}

/* ------------------------------------------------------------------ publishes and items */

static void test_publish_find_before_and_after_add(void **state)
{
    fixture_t *f = *state;
    uint8_t id[16], hash[32], sig[64], root[32], found_hash[32];
    static uint8_t sentinel;
    uint8_t *reply = &sentinel; /* must be overwritten with NULL */
    size_t reply_len = 99;
    const uint8_t accepted[] = {0x0a, 0x10, 0x01, 0x02, 0x00, 0xff};
    fill(id, sizeof id, 7, 1);
    fill(hash, sizeof hash, 7, 2);
    fill(sig, sizeof sig, 7, 3);
    fill(root, sizeof root, 7, 4);

    assert_int_equal(store_publish_find(f->store, WOCO, id, found_hash, &reply, &reply_len), 0);
    assert_null(reply);
    assert_int_equal(reply_len, 0);

    int64_t publish_id = store_publish_add(f->store, WOCO, id, hash, sig, root, 1700000000);
    assert_true(publish_id > 0);
    /* Known, but no reply attached yet. */
    assert_int_equal(store_publish_find(f->store, WOCO, id, found_hash, &reply, &reply_len), 1);
    assert_memory_equal(found_hash, hash, sizeof hash);
    assert_null(reply);
    assert_int_equal(reply_len, 0);

    assert_int_equal(store_publish_set_reply(f->store, publish_id, accepted, sizeof accepted), 0);
    assert_int_equal(store_publish_find(f->store, WOCO, id, found_hash, &reply, &reply_len), 1);
    assert_int_equal(reply_len, sizeof accepted);
    assert_memory_equal(reply, accepted, sizeof accepted);
    free(reply);

    /* Same id from another sender, another id from the same sender: unknown. */
    assert_int_equal(store_publish_find(f->store, GEMEENTE, id, NULL, NULL, NULL), 0);
    assert_int_equal(publish_known(f->store, WOCO, 8), 0);
    /* A reply for a publish that does not exist. */
    assert_int_equal(store_publish_set_reply(f->store, publish_id + 100, accepted, 1), -1);
    assert_true(strlen(store_errmsg(f->store)) > 0);
}

static void test_publish_add_duplicates_and_bad_input(void **state)
{
    fixture_t *f = *state;
    static const struct {
        const char *sender;
        unsigned n;
        int ok;
    } rows[] = {
        {WOCO, 1, 1},     /* first */
        {WOCO, 1, 0},     /* the same (sender, message_id) again */
        {WOCO, 2, 1},     /* another id */
        {GEMEENTE, 1, 1}, /* the same id from another sender */
        {GEMEENTE, 1, 0},
        {"", 3, 0},
        {NULL, 4, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int64_t id = publish(f->store, rows[i].sender, rows[i].n, 1700000000);
        if (rows[i].ok && id <= 0)
            fail_msg("row %zu refused: %s", i, store_errmsg(f->store));
        if (!rows[i].ok && id != -1)
            fail_msg("row %zu accepted as %lld", i, (long long)id);
    }
    publish(f->store, WOCO, 1, 1700000000);
    assert_non_null(strstr(store_errmsg(f->store), "UNIQUE"));

    uint8_t id[16] = {0}, hash[32] = {0}, sig[64] = {0}, root[32] = {0};
    assert_int_equal(store_publish_add(f->store, WOCO, NULL, hash, sig, root, 1), -1);
    assert_int_equal(store_publish_add(f->store, WOCO, id, NULL, sig, root, 1), -1);
    assert_int_equal(store_publish_add(f->store, WOCO, id, hash, NULL, root, 1), -1);
    assert_int_equal(store_publish_add(f->store, WOCO, id, hash, sig, NULL, 1), -1);
}

static void test_item_seqs_increase(void **state)
{
    fixture_t *f = *state;
    int64_t first = publish(f->store, WOCO, 1, 1700000000);
    int64_t second = publish(f->store, GEMEENTE, 2, 1700000001);
    assert_true(first > 0 && second > 0);
    int64_t last = 0;
    for (uint32_t i = 0; i < 8; i++) {
        int64_t seq = item(f->store, i % 2 ? second : first, i / 2);
        assert_true(seq > last);
        last = seq;
    }
    /* Rows that must fail: an index used twice, an unknown publish, bytes missing. */
    assert_int_equal(item(f->store, first, 0), -1);
    assert_int_equal(item(f->store, second + 1000, 0), -1);
    assert_int_equal(store_item_add(f->store, first, 9, NULL, 10), -1);
    /* After the refusals, the next item still comes after every earlier one. */
    assert_true(item(f->store, first, 9) > last);
}

/* ------------------------------------------------------------------ deliveries */

static int check_fields(const store_delivery_t *d, void *arg)
{
    const delivery_spec_t *want = arg;
    assert_string_equal(d->recipient, want->d.recipient);
    assert_int_equal(d->item_seq, want->d.item_seq);
    assert_memory_equal(d->message_id, want->d.message_id, 16);
    assert_int_equal(d->item_index, want->d.item_index);
    assert_string_equal(d->sender, want->d.sender);
    assert_string_equal(d->sender_partner, want->d.sender_partner);
    assert_string_equal(d->rule_id, want->d.rule_id);
    assert_string_equal(d->rule_hash, want->d.rule_hash);
    assert_string_equal(d->purpose, want->d.purpose);
    assert_string_equal(d->legal_basis, want->d.legal_basis);
    assert_int_equal(d->accepted_at, want->d.accepted_at);
    assert_int_equal(d->expires_at, want->d.expires_at);
    assert_int_equal(d->body_len, want->d.body_len);
    assert_memory_equal(d->body, want->d.body, want->d.body_len);
    return 0;
}

static void test_delivery_fields_round_trip(void **state)
{
    fixture_t *f = *state;
    int64_t publish_id = publish(f->store, GEMEENTE, 5, 1700000123);
    int64_t item0 = item(f->store, publish_id, 0);
    int64_t item1 = item(f->store, publish_id, 1);
    assert_true(item0 > 0 && item1 > item0);
    delivery_spec_t spec;
    delivery_spec(&spec, RIEC, GEMEENTE, "gemeente", 5, 1700000123, item1, 1);
    int64_t seq = store_delivery_add(f->store, &spec.d);
    assert_true(seq > 0);

    reopen(f);
    assert_int_equal(store_mailbox_scan(f->store, RIEC, 0, 10, check_fields, &spec), 1);
}

static void test_deliveries_in_order_per_recipient(void **state)
{
    fixture_t *f = *state;
    uint64_t politie[6], riec[6];
    size_t n_politie = 0, n_riec = 0;
    /* Interleaved: 0 1 2 to politie, 1 3 4 5 to riec. */
    static const struct {
        unsigned n;
        int to_politie, to_riec;
    } plan[] = {{1, 1, 0}, {2, 1, 1}, {3, 1, 0}, {4, 0, 1}, {5, 0, 1}, {6, 0, 1}};
    assert_int_equal(store_begin(f->store), 0);
    for (size_t i = 0; i < sizeof plan / sizeof plan[0]; i++) {
        int64_t accepted_at = 1700000000 + plan[i].n;
        int64_t publish_id = publish(f->store, WOCO, plan[i].n, accepted_at);
        int64_t item_seq = item(f->store, publish_id, 0);
        delivery_spec_t spec;
        const char *to[2] = {plan[i].to_politie ? POLITIE : NULL, plan[i].to_riec ? RIEC : NULL};
        for (int k = 0; k < 2; k++) {
            if (to[k] == NULL)
                continue;
            delivery_spec(&spec, to[k], WOCO, "woco-servatius", plan[i].n, accepted_at, item_seq,
                          0);
            int64_t seq = store_delivery_add(f->store, &spec.d);
            assert_true(seq > 0);
            if (k == 0)
                politie[n_politie++] = (uint64_t)seq;
            else
                riec[n_riec++] = (uint64_t)seq;
        }
    }
    assert_int_equal(store_commit(f->store), 0);

    seen_t seen = {.recipient = POLITIE};
    assert_int_equal(store_mailbox_scan(f->store, POLITIE, 0, 100, collect, &seen), n_politie);
    assert_false(seen.recipient_wrong);
    assert_memory_equal(seen.seq, politie, n_politie * sizeof politie[0]);
    seen_t seen_riec = {.recipient = RIEC};
    assert_int_equal(store_mailbox_scan(f->store, RIEC, 0, 100, collect, &seen_riec), n_riec);
    assert_false(seen_riec.recipient_wrong);
    assert_memory_equal(seen_riec.seq, riec, n_riec * sizeof riec[0]);
    for (size_t i = 1; i < n_riec; i++)
        assert_true(riec[i] > riec[i - 1]);
    seen_t none = {0};
    assert_int_equal(store_mailbox_scan(f->store, "om/officier", 0, 100, collect, &none), 0);
}

static void test_scan_after_seq_and_limit(void **state)
{
    fixture_t *f = *state;
    enum { N = 5 };
    uint64_t seqs[N];
    assert_int_equal(store_begin(f->store), 0);
    for (unsigned i = 0; i < N; i++) {
        seqs[i] = (uint64_t)deliver_new(f->store, POLITIE, 10 + i);
        (void)deliver_new(f->store, RIEC, 100 + i); /* someone else's, in between */
    }
    assert_int_equal(store_commit(f->store), 0);

    enum { FROM_ZERO = -1, FROM_MAX = -2 };
    static const struct {
        int after;         /* index into seqs, or FROM_ZERO / FROM_MAX */
        size_t limit;
        size_t stop_after; /* callback stops after this many; 0 = never */
        int visited;
        int first;         /* index into seqs of the first seen */
    } rows[] = {
        {FROM_ZERO, 100, 0, N, 0},
        {FROM_ZERO, 2, 0, 2, 0},
        {0, 2, 0, 2, 1},
        {1, 100, 0, 3, 2},
        {3, 100, 0, 1, 4},
        {4, 100, 0, 0, 0},          /* after the last */
        {FROM_ZERO, 0, 0, 0, 0},    /* limit 0 */
        {FROM_MAX, 100, 0, 0, 0},   /* beyond any seq */
        {FROM_ZERO, 100, 3, 3, 0},  /* the callback stops */
        {2, (size_t)-1, 0, 2, 3},   /* a huge limit */
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        uint64_t after = rows[r].after == FROM_ZERO  ? 0
                         : rows[r].after == FROM_MAX ? UINT64_MAX
                                                     : seqs[rows[r].after];
        seen_t seen = {.stop_after = rows[r].stop_after, .recipient = POLITIE};
        int visited = store_mailbox_scan(f->store, POLITIE, after, rows[r].limit, collect, &seen);
        if (visited != rows[r].visited || seen.n != (size_t)rows[r].visited)
            fail_msg("row %zu: visited %d (callback %zu), want %d", r, visited, seen.n,
                     rows[r].visited);
        assert_false(seen.recipient_wrong);
        for (int k = 0; k < visited; k++)
            assert_int_equal(seen.seq[k], seqs[rows[r].first + k]);
    }
    assert_int_equal(store_mailbox_scan(f->store, NULL, 0, 10, collect, NULL), -1);
    assert_int_equal(store_mailbox_scan(f->store, POLITIE, 0, 10, NULL, NULL), -1);
}

static void test_ack(void **state)
{
    fixture_t *f = *state;
    int64_t own = deliver_new(f->store, POLITIE, 1);
    int64_t others = deliver_new(f->store, RIEC, 2);
    int64_t own_second = deliver_new(f->store, POLITIE, 3);

    enum { OWN, OWN_SECOND, OTHERS, UNKNOWN, ZERO, HUGE };
    static const struct {
        int which;
        int expect;
        int64_t politie_left, riec_left;
    } rows[] = {
        {OTHERS, 0, 2, 1},     /* riec's delivery, acked by politie: refused */
        {UNKNOWN, 0, 2, 1},
        {ZERO, 0, 2, 1},
        {HUGE, 0, 2, 1},
        {OWN, 1, 1, 1},
        {OWN, 0, 1, 1},        /* acked twice */
        {OWN_SECOND, 1, 0, 1},
        {OWN_SECOND, 0, 0, 1},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint64_t seq = rows[i].which == OWN          ? (uint64_t)own
                       : rows[i].which == OWN_SECOND ? (uint64_t)own_second
                       : rows[i].which == OTHERS     ? (uint64_t)others
                       : rows[i].which == UNKNOWN    ? (uint64_t)own_second + 1000
                       : rows[i].which == ZERO       ? 0
                                                     : UINT64_MAX;
        int got = store_delivery_ack(f->store, POLITIE, seq);
        if (got != rows[i].expect)
            fail_msg("row %zu: ack gave %d, want %d", i, got, rows[i].expect);
        assert_int_equal(store_mailbox_count(f->store, POLITIE), rows[i].politie_left);
        assert_int_equal(store_mailbox_count(f->store, RIEC), rows[i].riec_left);
    }
    assert_int_equal(store_delivery_ack(f->store, RIEC, (uint64_t)others), 1);
    assert_int_equal(store_delivery_ack(f->store, NULL, (uint64_t)others), -1);
}

static void test_count(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(store_mailbox_count(f->store, POLITIE), 0);
    int64_t seqs[4];
    for (unsigned i = 0; i < 4; i++) {
        seqs[i] = deliver_new(f->store, POLITIE, i + 1);
        assert_int_equal(store_mailbox_count(f->store, POLITIE), i + 1);
    }
    (void)deliver_new(f->store, RIEC, 9);
    assert_int_equal(store_mailbox_count(f->store, POLITIE), 4);
    assert_int_equal(store_delivery_ack(f->store, POLITIE, (uint64_t)seqs[1]), 1);
    assert_int_equal(store_mailbox_count(f->store, POLITIE), 3);
    assert_int_equal(store_mailbox_count(f->store, RIEC), 1);
    assert_int_equal(store_mailbox_count(f->store, "om/officier"), 0);
    assert_int_equal(store_mailbox_count(f->store, NULL), -1);
}

static void test_seq_never_reused(void **state)
{
    fixture_t *f = *state;
    (void)deliver_new(f->store, POLITIE, 1);
    int64_t highest = deliver_new(f->store, POLITIE, 2);
    assert_int_equal(store_delivery_ack(f->store, POLITIE, (uint64_t)highest), 1);
    int64_t next = deliver_new(f->store, POLITIE, 3);
    assert_true(next > highest);
    assert_int_equal(store_delivery_ack(f->store, POLITIE, (uint64_t)next), 1);
    reopen(f);
    assert_true(deliver_new(f->store, POLITIE, 4) > next);
    /* An old Ack for the removed seq does not touch the new delivery. */
    assert_int_equal(store_delivery_ack(f->store, POLITIE, (uint64_t)highest), 0);
    assert_int_equal(store_mailbox_count(f->store, POLITIE), 2);
}

static void test_delivery_add_refuses_mismatch(void **state)
{
    fixture_t *f = *state;
    int64_t accepted_at = 1700000000;
    int64_t publish_id = publish(f->store, WOCO, 1, accepted_at);
    int64_t item0 = item(f->store, publish_id, 0);
    int64_t other_publish = publish(f->store, GEMEENTE, 2, accepted_at);
    int64_t other_item = item(f->store, other_publish, 0);
    assert_true(item0 > 0 && other_item > 0);

    enum mutation {
        VALID, WRONG_ID, WRONG_SENDER, WRONG_INDEX, WRONG_ACCEPTED_AT, WRONG_PARTNER,
        OTHER_ITEM, UNKNOWN_ITEM, ZERO_ITEM, NO_RECIPIENT, EMPTY_RECIPIENT, NO_BODY,
        NO_RULE, NO_MESSAGE_ID
    };
    static const struct {
        enum mutation mutation;
        int ok;
    } rows[] = {
        {WRONG_ID, 0},      {WRONG_SENDER, 0},    {WRONG_INDEX, 0},
        {WRONG_ACCEPTED_AT, 0}, {WRONG_PARTNER, 0}, {OTHER_ITEM, 0},
        {UNKNOWN_ITEM, 0},  {ZERO_ITEM, 0},       {NO_RECIPIENT, 0},
        {EMPTY_RECIPIENT, 0}, {NO_BODY, 0},       {NO_RULE, 0},
        {NO_MESSAGE_ID, 0}, {VALID, 1},
    };
    int64_t pending = 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        delivery_spec_t spec;
        delivery_spec(&spec, POLITIE, WOCO, "woco-servatius", 1, accepted_at, item0, 0);
        switch (rows[i].mutation) {
        case VALID: break;
        case WRONG_ID: spec.id[0] ^= 1; break;
        case WRONG_SENDER: spec.d.sender = "woco-servatius/ander"; break;
        case WRONG_INDEX: spec.d.item_index = 1; break;
        case WRONG_ACCEPTED_AT: spec.d.accepted_at++; break;
        case WRONG_PARTNER: spec.d.sender_partner = "woco"; break;
        case OTHER_ITEM: spec.d.item_seq = (uint64_t)other_item; break;
        case UNKNOWN_ITEM: spec.d.item_seq = (uint64_t)other_item + 1000; break;
        case ZERO_ITEM: spec.d.item_seq = 0; break;
        case NO_RECIPIENT: spec.d.recipient = NULL; break;
        case EMPTY_RECIPIENT: spec.d.recipient = ""; break;
        case NO_BODY: spec.d.body = NULL; break;
        case NO_RULE: spec.d.rule_id = NULL; break;
        case NO_MESSAGE_ID: spec.d.message_id = NULL; break;
        }
        int64_t seq = store_delivery_add(f->store, &spec.d);
        if (rows[i].ok != (seq > 0))
            fail_msg("row %zu: delivery_add gave %lld (%s)", i, (long long)seq,
                     store_errmsg(f->store));
        if (!rows[i].ok) {
            assert_int_equal(seq, -1);
            assert_true(strlen(store_errmsg(f->store)) > 0);
        } else {
            pending++;
        }
        assert_int_equal(store_mailbox_count(f->store, POLITIE), pending);
    }
    assert_int_equal(store_delivery_add(f->store, NULL), -1);
}

typedef struct reentry {
    store_t *store;
    int ack_result, count_result, scan_result, begin_result;
} reentry_t;

static int reenter(const store_delivery_t *d, void *arg)
{
    reentry_t *r = arg;
    r->ack_result = store_delivery_ack(r->store, d->recipient, d->seq);
    r->count_result = (int)store_mailbox_count(r->store, d->recipient);
    r->scan_result = store_mailbox_scan(r->store, d->recipient, 0, 1, collect, NULL);
    r->begin_result = store_begin(r->store);
    return 1;
}

static void test_scan_callback_cannot_reenter(void **state)
{
    fixture_t *f = *state;
    int64_t seq = deliver_new(f->store, POLITIE, 1);
    reentry_t r = {.store = f->store};
    assert_int_equal(store_mailbox_scan(f->store, POLITIE, 0, 10, reenter, &r), 1);
    assert_int_equal(r.ack_result, -1);
    assert_int_equal(r.count_result, -1);
    assert_int_equal(r.scan_result, -1);
    assert_int_equal(r.begin_result, -1);
    assert_non_null(strstr(store_errmsg(f->store), "scan"));
    /* Usable again once the scan is over. */
    assert_int_equal(store_delivery_ack(f->store, POLITIE, (uint64_t)seq), 1);
}

/* ------------------------------------------------------------------ transactions */

static void test_begin_idempotent_and_commit(void **state)
{
    fixture_t *f = *state;
    assert_false(store_in_transaction(f->store));
    assert_int_equal(store_commit(f->store), -1); /* nothing open */
    assert_true(strlen(store_errmsg(f->store)) > 0);
    assert_int_equal(store_rollback(f->store), 0); /* safe without one */

    assert_int_equal(store_begin(f->store), 0);
    assert_true(store_in_transaction(f->store));
    assert_int_equal(publish(f->store, WOCO, 1, 1700000000) > 0, 1);
    assert_int_equal(store_begin(f->store), 0); /* idempotent: same transaction */
    assert_true(store_in_transaction(f->store));
    assert_int_equal(publish(f->store, WOCO, 2, 1700000000) > 0, 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_false(store_in_transaction(f->store));
    assert_int_equal(store_commit(f->store), -1);

    reopen(f);
    assert_int_equal(publish_known(f->store, WOCO, 1), 1);
    assert_int_equal(publish_known(f->store, WOCO, 2), 1);
}

static void test_rollback_leaves_nothing(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(store_begin(f->store), 0);
    (void)deliver_new(f->store, POLITIE, 1);
    assert_int_equal(store_begin(f->store), 0);
    (void)deliver_new(f->store, POLITIE, 2);
    assert_int_equal(store_mailbox_count(f->store, POLITIE), 2); /* visible inside */
    assert_int_equal(store_rollback(f->store), 0);
    assert_false(store_in_transaction(f->store));

    assert_int_equal(publish_known(f->store, WOCO, 1), 0);
    assert_int_equal(publish_known(f->store, WOCO, 2), 0);
    assert_int_equal(store_mailbox_count(f->store, POLITIE), 0);
    seen_t seen = {0};
    assert_int_equal(store_mailbox_scan(f->store, POLITIE, 0, 10, collect, &seen), 0);
    /* The same ids are free again. */
    assert_true(deliver_new(f->store, POLITIE, 1) > 0);
}

static void test_close_without_commit_loses_transaction(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(store_begin(f->store), 0);
    (void)deliver_new(f->store, POLITIE, 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(store_begin(f->store), 0);
    (void)deliver_new(f->store, POLITIE, 2);
    store_close(&f->store);

    f->store = open_ok(f->path);
    assert_false(store_in_transaction(f->store));
    assert_int_equal(publish_known(f->store, WOCO, 1), 1);
    assert_int_equal(publish_known(f->store, WOCO, 2), 0);
    assert_int_equal(store_mailbox_count(f->store, POLITIE), 1);
}

/* The child commits publish 1, then writes publish 2 with enough items that
 * SQLite's page cache spills uncommitted pages into the WAL, and exits
 * without commit or close, as a crash would. Exit code 0 = all steps done. */
static int crash_child(const char *path)
{
    char err[512];
    store_t *store = open_with(path, test_key, err, sizeof err);
    if (store == NULL || store_begin(store) != 0)
        return 2;
    int64_t first = publish(store, WOCO, 1, 1700000000);
    if (first <= 0 || item(store, first, 0) <= 0 || store_commit(store) != 0)
        return 3;
    if (store_begin(store) != 0)
        return 4;
    int64_t second = publish(store, WOCO, 2, 1700000001);
    if (second <= 0)
        return 5;
    static uint8_t big[32 * 1024];
    for (uint32_t i = 0; i < 128; i++) {
        fill(big, sizeof big, i, 6);
        if (store_item_add(store, second, i, big, sizeof big) <= 0)
            return 6;
    }
    return 0;
}

static void test_crash_without_commit(void **state)
{
    fixture_t *f = *state;
    char path[256];
    fixture_path(f, "crash.db", path, sizeof path);
    fflush(NULL);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0)
        _exit(crash_child(path));
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    store_t *store = open_ok(path);
    assert_int_equal(publish_known(store, WOCO, 1), 1);
    assert_int_equal(publish_known(store, WOCO, 2), 0);
    /* The lost publish's id is free: its items were never committed. */
    int64_t again = publish(store, WOCO, 2, 1700000002);
    assert_true(again > 0);
    assert_true(item(store, again, 0) > 0);
    store_close(&store);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    randombytes_buf(test_key, sizeof test_key);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_creates_wal_private_versioned_file, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reopen_keeps_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_new_store_left_untouched, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publish_find_before_and_after_add, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publish_add_duplicates_and_bad_input, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_item_seqs_increase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delivery_fields_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliveries_in_order_per_recipient, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_after_seq_and_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seq_never_reused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delivery_add_refuses_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_callback_cannot_reenter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_begin_idempotent_and_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_without_commit_loses_transaction, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_crash_without_commit, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
