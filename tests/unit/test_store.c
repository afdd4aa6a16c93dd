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
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>
#include <sqlite3.h>

#include "store.h"
#include "store_fixture.h"
#include "store_fixture_v12.h"
#include "store_internal.h"
#include "store_mailbox.h"
#include "store_mailbox_internal.h"

#define GEMEENTE "gemeente/meldingen"
#define WOCO "woco-servatius/meldingen"
#define POLITIE "politie/bvh-koppeling"
#define RIEC "riec/analist"

typedef store_fixture_t fixture_t;

/* ------------------------------------------------------------------ helpers */

static void fixture_path(const fixture_t *f, const char *name, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "%s/%s", f->dir, name);
    assert_true(n > 0 && (size_t)n < outlen);
}

static uint8_t test_key[STORE_KEY_BYTES];

static store_t *open_with(const char *path, const uint8_t key[STORE_KEY_BYTES], char *err,
                          size_t errlen)
{
    return store_open(path, key, STORE_OPEN_EXISTING, err, errlen);
}

static int setup(void **state)
{
    *state = store_fixture_new("schakel-store", test_key);
    return 0;
}

static void reopen(fixture_t *f)
{
    store_close(&f->store);
    assert_null(f->store);
    f->store = store_fixture_open(f->path, test_key);
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

/* The bytes item() stores for item index of publish_id. */
#define ITEM_BYTES 48
static void item_bytes(uint8_t out[ITEM_BYTES], int64_t publish_id, uint32_t index)
{
    fill(out, ITEM_BYTES, (unsigned)publish_id * 100u + index, 5);
}

static int64_t item(store_t *store, int64_t publish_id, uint32_t index)
{
    uint8_t body[ITEM_BYTES];
    item_bytes(body, publish_id, index);
    return store_item_add(store, publish_id, index, body, sizeof body);
}

/* A delivery matching the item: the publish (sender, n, accepted_at) and its
 * item index, by reference (a signal's delivery always is) with a field
 * mask of its own per item (delivery_mask), so a scan that hands out the
 * wrong row's mask shows. id must outlive the delivery. */
typedef struct delivery_spec {
    store_delivery_t d;
    uint8_t id[16];
    uint8_t body[24]; /* a case delivery's content (delivery_spec_case) */
} delivery_spec_t;

static uint32_t delivery_mask(int64_t item_seq)
{
    return 0x5a000000u ^ (uint32_t)item_seq * 2654435761u;
}

static void delivery_spec(delivery_spec_t *spec, const char *recipient, const char *sender,
                          const char *sender_partner, unsigned n, int64_t accepted_at,
                          int64_t item_seq, uint32_t index)
{
    memset(spec, 0, sizeof *spec);
    fill(spec->id, sizeof spec->id, n, 1);
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
    spec->d.by_ref = 1;
    spec->d.fields = delivery_mask(item_seq);
}

/* The spec made a delivery of case case_id (which must exist): with a
 * content of its own (the filtered CaseEvent, here distinct bytes per
 * item), never by reference. */
static void delivery_spec_case(delivery_spec_t *spec, const char *case_id, int is_case_event)
{
    fill(spec->body, sizeof spec->body, (unsigned)spec->d.item_seq, 9);
    spec->d.by_ref = 0;
    spec->d.fields = 0;
    spec->d.case_id = case_id;
    spec->d.is_case_event = is_case_event;
    spec->d.body = spec->body;
    spec->d.body_len = sizeof spec->body;
}

/* A case, made in the caller's transaction (if one is open). */
static void case_new(store_t *store, char case_id[SCHAKEL_CASE_ID_LEN + 1])
{
    if (store_case_create(store, "zorg-en-veiligheid", "woco-servatius", "casus", 1700000000,
                          case_id) != 0)
        fail_msg("store_case_create: %s", store_errmsg(store));
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

/* An ack in a transaction of its own, as a broker's turn makes one (an
 * ack marks its row in memory; the row is written at the commit). The
 * ack's result. */
static int ack_alone(store_t *store, const char *recipient, uint64_t seq)
{
    assert_int_equal(store_begin(store), 0);
    int acked = store_delivery_ack(store, recipient, seq);
    if (acked < 0)
        assert_int_equal(store_rollback(store), 0);
    else
        assert_int_equal(store_commit(store), 0);
    return acked;
}

static int publish_known(store_t *store, const char *sender, unsigned n)
{
    uint8_t id[16];
    fill(id, sizeof id, n, 1);
    return store_publish_find(store, sender, id, NULL, NULL, NULL, NULL);
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
    sqlite3 *db = store_fixture_raw_open(path);
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

    sqlite3 *db = store_fixture_raw_open(f->path);
    raw_text(db, "PRAGMA journal_mode", mode, sizeof mode);
    assert_string_equal(mode, "wal");
    char index_name[64];
    raw_text(db,
             "SELECT name FROM sqlite_master WHERE type = 'index'"
             " AND tbl_name = 'mailbox' AND sql LIKE '%recipient, first_seq%'",
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
    assert_int_equal(version, store_schema_version());
    assert_int_equal(store_migrated_from(f->store, NULL), 0); /* made new: no migration */

    reopen(f);
    assert_int_equal(raw_user_version(f->path), version);
    assert_int_equal(store_migrated_from(f->store, NULL), 0); /* current: none */
    assert_int_equal(store_migrated_from(NULL, NULL), 0);
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
        {BAD_NULL, "file path"},         {BAD_EMPTY, "file path"},
        {BAD_MEMORY, "file path"},       {BAD_NO_DIR, "No such file"},
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
    char err[512] = "";
    assert_null(store_open(f->path, NULL, STORE_OPEN_EXISTING, err, sizeof err));
    assert_non_null(strstr(err, "no store key"));
}

static void test_too_new_store_left_untouched(void **state)
{
    fixture_t *f = *state;
    char path[256], mode[32], err[512] = "";
    bad_store_path(f, BAD_TOO_NEW, path, sizeof path);
    long version = raw_user_version(path);

    assert_null(open_with(path, test_key, err, sizeof err));
    /* Refused before anything was written: not switched to WAL, version kept. */
    sqlite3 *db = store_fixture_raw_open(path);
    raw_text(db, "PRAGMA journal_mode", mode, sizeof mode);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_string_equal(mode, "delete");
    assert_int_equal(raw_user_version(path), version);
}

/* ------------------------------------------------------------------ no store made by accident */

enum no_store { NS_MISSING, NS_EMPTY_FILE, NS_WAL_ONLY, NS_NO_SCHEMA, NS_THE_STORE };

/* The file (stat) and its bytes: what an open must leave as it was. */
typedef struct file_seen {
    int there;
    size_t len;
    uint8_t bytes[8192];
} file_seen_t;

static void file_look(const char *path, file_seen_t *seen)
{
    memset(seen, 0, sizeof *seen);
    FILE *file = fopen(path, "rb");
    if (file == NULL)
        return;
    seen->there = 1;
    seen->len = fread(seen->bytes, 1, sizeof seen->bytes, file);
    assert_int_equal(fclose(file), 0);
}

/* Prepare what is at path for the row (NS_THE_STORE: the fixture's own). */
static const char *no_store_path(const fixture_t *f, enum no_store kind, char *buf, size_t len)
{
    char wal[300];
    if (kind == NS_THE_STORE)
        return f->path;
    fixture_path(f, "elsewhere.db", buf, len);
    snprintf(wal, sizeof wal, "%s-wal", buf);
    FILE *file = NULL;
    switch (kind) {
    case NS_MISSING:
    case NS_THE_STORE:
        break;
    case NS_EMPTY_FILE:
        file = fopen(buf, "wb");
        break;
    case NS_WAL_ONLY:
        file = fopen(wal, "wb");
        assert_non_null(file);
        fputs("the log of a store that is gone", file);
        break;
    case NS_NO_SCHEMA: {
        sqlite3 *db = store_fixture_raw_open_or_create(buf);
        assert_int_equal(sqlite3_exec(db, "CREATE TABLE notes (line TEXT)", NULL, NULL, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_close(db), SQLITE_OK);
        break;
    }
    }
    if (file != NULL)
        assert_int_equal(fclose(file), 0);
    return buf;
}

/* STORE_OPEN_EXISTING makes no store where there is none (nor its lock
 * file), and gives no schema to a file without one; STORE_OPEN_CREATE
 * makes none where a file, or only a -wal, is: each refusal leaves what
 * is there byte for byte (a file that is there gets the lock file every
 * opener takes before it reads). */
static void test_open_makes_no_store_by_accident(void **state)
{
    fixture_t *f = *state;
    store_close(&f->store); /* the fixture's store, opened again below */
    static const struct {
        store_open_mode_t mode;
        enum no_store kind;
        const char *reason; /* expected in the error text */
        int locked;         /* the lock file may be made */
    } rows[] = {
        {STORE_OPEN_EXISTING, NS_MISSING, "No such file or directory: no store to open", 0},
        {STORE_OPEN_EXISTING, NS_EMPTY_FILE, "is an empty file: no store to open", 0},
        {STORE_OPEN_EXISTING, NS_WAL_ONLY, "-wal is there", 0},
        {STORE_OPEN_EXISTING, NS_NO_SCHEMA, "not a Schakel store: schema version 0", 1},
        {STORE_OPEN_CREATE, NS_THE_STORE, "File exists", 0},
        {STORE_OPEN_CREATE, NS_EMPTY_FILE, "File exists", 0},
        {STORE_OPEN_CREATE, NS_NO_SCHEMA, "File exists", 0},
        {STORE_OPEN_CREATE, NS_WAL_ONLY, "no new store is made under it", 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char path[256], side[300], err[768] = "";
        const char *p = no_store_path(f, rows[i].kind, path, sizeof path);
        static file_seen_t before[3], after[3];
        static const char *const suffix[] = {"", "-wal", ".lock"};
        for (size_t k = 0; k < 3; k++) {
            snprintf(side, sizeof side, "%s%s", p, suffix[k]);
            file_look(side, &before[k]);
        }
        store_t *store = store_open(p, test_key, rows[i].mode, err, sizeof err);
        if (store != NULL) {
            store_close(&store);
            fail_msg("row %zu: store_open made or opened a store", i);
        }
        if (strstr(err, rows[i].reason) == NULL || strstr(err, p) == NULL)
            fail_msg("row %zu: error \"%s\" lacks \"%s\" or the path", i, err, rows[i].reason);
        for (size_t k = 0; k < 3; k++) {
            snprintf(side, sizeof side, "%s%s", p, suffix[k]);
            file_look(side, &after[k]);
            if (k == 2 && rows[i].locked && !before[k].there)
                continue;
            if (after[k].there != before[k].there || after[k].len != before[k].len ||
                memcmp(after[k].bytes, before[k].bytes, after[k].len) != 0)
                fail_msg("row %zu: %s was %s", i, side,
                         !before[k].there  ? "created"
                         : !after[k].there ? "removed"
                                           : "changed");
        }
        if (rows[i].kind != NS_THE_STORE)
            for (size_t k = 0; k < 3; k++) {
                snprintf(side, sizeof side, "%s%s", p, suffix[k]);
                (void)unlink(side);
            }
    }
    /* the fixture's store opens as before */
    f->store = store_fixture_open(f->path, test_key);
    assert_int_equal(store_begin(f->store), 0);
    assert_true(deliver_new(f->store, POLITIE, 1) > 0);
    assert_int_equal(store_commit(f->store), 0);
}

/* ------------------------------------------------------------------ publishes and items */

static void test_publish_find_before_and_after_add(void **state)
{
    fixture_t *f = *state;
    uint8_t id[16], hash[32], sig[64], root[32], other[32];
    static uint8_t sentinel;
    uint8_t *reply = &sentinel; /* must be overwritten with NULL */
    size_t reply_len = 99;
    const uint8_t accepted[] = {0x0a, 0x10, 0x01, 0x02, 0x00, 0xff};
    fill(id, sizeof id, 7, 1);
    fill(hash, sizeof hash, 7, 2);
    fill(sig, sizeof sig, 7, 3);
    fill(root, sizeof root, 7, 4);
    memcpy(other, hash, sizeof other);

    int same = -1;
    assert_int_equal(store_publish_find(f->store, WOCO, id, hash, &same, &reply, &reply_len), 0);
    assert_int_equal(same, -1);
    assert_null(reply);
    assert_int_equal(reply_len, 0);

    int64_t publish_id = store_publish_add(f->store, WOCO, id, hash, sig, root, 1700000000);
    assert_true(publish_id > 0);
    /* Known, but no reply attached yet; the same content, or other. */
    assert_int_equal(store_publish_find(f->store, WOCO, id, hash, &same, &reply, &reply_len), 1);
    assert_int_equal(same, 1);
    assert_null(reply);
    other[0] ^= 1;
    assert_int_equal(store_publish_find(f->store, WOCO, id, other, &same, &reply, &reply_len), 1);
    assert_int_equal(same, 0);
    assert_int_equal(reply_len, 0);

    assert_int_equal(store_publish_set_reply(f->store, publish_id, accepted, sizeof accepted), 0);
    assert_int_equal(store_publish_find(f->store, WOCO, id, NULL, NULL, &reply, &reply_len), 1);
    assert_int_equal(reply_len, sizeof accepted);
    assert_memory_equal(reply, accepted, sizeof accepted);
    free(reply);

    /* Same id from another sender, another id from the same sender: unknown. */
    assert_int_equal(store_publish_find(f->store, GEMEENTE, id, NULL, NULL, NULL, NULL), 0);
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
        {GEMEENTE, 1, 0}, {"", 3, 0}, {NULL, 4, 0},
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

/* What a scan must hand out: the delivery as added, and its item's bytes. */
typedef struct delivery_want {
    delivery_spec_t spec;
    uint8_t item[ITEM_BYTES];
} delivery_want_t;

static int check_fields(const store_delivery_t *d, void *arg)
{
    const delivery_want_t *all = arg;
    const delivery_spec_t *want = &all->spec;
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
    /* by reference: the item's own bytes, and the mask to reduce them to */
    assert_int_equal(d->by_ref, 1);
    assert_int_equal(d->fields, want->d.fields);
    assert_null(d->case_id);
    assert_int_equal(d->body_len, ITEM_BYTES);
    assert_memory_equal(d->body, all->item, ITEM_BYTES);
    return 0;
}

static void test_delivery_fields_round_trip(void **state)
{
    fixture_t *f = *state;
    int64_t publish_id = publish(f->store, GEMEENTE, 5, 1700000123);
    int64_t item0 = item(f->store, publish_id, 0);
    int64_t item1 = item(f->store, publish_id, 1);
    assert_true(item0 > 0 && item1 > item0);
    delivery_want_t want;
    delivery_spec(&want.spec, RIEC, GEMEENTE, "gemeente", 5, 1700000123, item1, 1);
    item_bytes(want.item, publish_id, 1);
    int64_t seq = store_delivery_add(f->store, &want.spec.d);
    assert_true(seq > 0);

    reopen(f);
    assert_int_equal(store_mailbox_scan(f->store, RIEC, 0, 10, check_fields, &want), 1);
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

/* Seqs set aside for one publish (store_delivery_seqs_reserve) are added
 * in any order, each once, only in the transaction that set them aside;
 * the counter is past them at once, so one left unused is a gap. */
static int64_t raw_int(const char *path, const char *sql);

static void test_delivery_seqs_reserved(void **state)
{
    fixture_t *f = *state;
    int64_t before = deliver_new(f->store, POLITIE, 1);
    assert_int_equal(store_delivery_seqs_reserve(f->store, 3), -1); /* no transaction */
    int64_t accepted_at = 1700000000 + 2;
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_delivery_seqs_reserve(f->store, 0), -1);
    int64_t publish_id = publish(f->store, WOCO, 2, accepted_at);
    int64_t item_seq = item(f->store, publish_id, 0);
    int64_t first = store_delivery_seqs_reserve(f->store, 3);
    assert_int_equal(first, before + 1);
    delivery_spec_t spec;
    delivery_spec(&spec, RIEC, WOCO, "woco-servatius", 2, accepted_at, item_seq, 0);
    static const struct {
        int64_t offset; /* from first */
        int ok;
    } rows[] = {{3, 0}, {-1, 0}, {2, 1}, {0, 1}, {0, 0} /* twice */};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        spec.d.seq = (uint64_t)(first + rows[i].offset);
        int64_t seq = store_delivery_add_reserved(f->store, &spec.d);
        if (rows[i].ok != (seq == first + rows[i].offset))
            fail_msg("row %zu: add at %lld gave %lld (%s)", i, (long long)spec.d.seq,
                     (long long)seq, store_errmsg(f->store));
        if (!rows[i].ok)
            assert_int_equal(seq, -1);
    }
    assert_int_equal(store_delivery_add(f->store, &spec.d), first + 3);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(store_begin(f->store), 0);
    spec.d.seq = (uint64_t)first + 1; /* set aside in the transaction before */
    assert_int_equal(store_delivery_add_reserved(f->store, &spec.d), -1);
    assert_int_equal(store_rollback(f->store), 0);

    seen_t seen = {.recipient = RIEC};
    assert_int_equal(store_mailbox_scan(f->store, RIEC, 0, 100, collect, &seen), 3);
    uint64_t want[3] = {(uint64_t)first, (uint64_t)first + 2, (uint64_t)first + 3};
    assert_memory_equal(seen.seq, want, sizeof want);
    assert_int_equal(store_mailbox_count(f->store, RIEC), 3);
    /* a transaction that adds only reserved seqs moves the high-water mark
     * (meta's delivery_seq_high) past its whole reservation at its commit */
    assert_int_equal(store_begin(f->store), 0);
    int64_t again = store_delivery_seqs_reserve(f->store, 2);
    assert_true(again > first + 3);
    spec.d.seq = (uint64_t)again;
    assert_int_equal(store_delivery_add_reserved(f->store, &spec.d), again);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(raw_int(f->path, "SELECT value FROM meta WHERE name = 'delivery_seq_high'"),
                     again + 1);
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
        int after; /* index into seqs, or FROM_ZERO / FROM_MAX */
        size_t limit;
        size_t stop_after; /* callback stops after this many; 0 = never */
        int visited;
        int first; /* index into seqs of the first seen */
    } rows[] = {
        {FROM_ZERO, 100, 0, N, 0}, {FROM_ZERO, 2, 0, 2, 0}, {0, 2, 0, 2, 1},
        {1, 100, 0, 3, 2},         {3, 100, 0, 1, 4},       {4, 100, 0, 0, 0}, /* after the last */
        {FROM_ZERO, 0, 0, 0, 0},                                               /* limit 0 */
        {FROM_MAX, 100, 0, 0, 0},                                              /* beyond any seq */
        {FROM_ZERO, 100, 3, 3, 0}, /* the callback stops */
        {2, (size_t)-1, 0, 2, 3},  /* a huge limit */
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
        {OTHERS, 0, 2, 1}, /* riec's delivery, acked by politie: refused */
        {UNKNOWN, 0, 2, 1},    {ZERO, 0, 2, 1},       {HUGE, 0, 2, 1},
        {OWN, 1, 1, 1},        {OWN, 0, 1, 1}, /* acked twice */
        {OWN_SECOND, 1, 0, 1}, {OWN_SECOND, 0, 0, 1},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint64_t seq = rows[i].which == OWN          ? (uint64_t)own
                       : rows[i].which == OWN_SECOND ? (uint64_t)own_second
                       : rows[i].which == OTHERS     ? (uint64_t)others
                       : rows[i].which == UNKNOWN    ? (uint64_t)own_second + 1000
                       : rows[i].which == ZERO       ? 0
                                                     : UINT64_MAX;
        int got = ack_alone(f->store, POLITIE, seq);
        if (got != rows[i].expect)
            fail_msg("row %zu: ack gave %d, want %d", i, got, rows[i].expect);
        assert_int_equal(store_mailbox_count(f->store, POLITIE), rows[i].politie_left);
        assert_int_equal(store_mailbox_count(f->store, RIEC), rows[i].riec_left);
    }
    assert_int_equal(ack_alone(f->store, RIEC, (uint64_t)others), 1);
    assert_int_equal(ack_alone(f->store, NULL, (uint64_t)others), -1);
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
    assert_int_equal(ack_alone(f->store, POLITIE, (uint64_t)seqs[1]), 1);
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
    assert_int_equal(ack_alone(f->store, POLITIE, (uint64_t)highest), 1);
    int64_t next = deliver_new(f->store, POLITIE, 3);
    assert_true(next > highest);
    assert_int_equal(ack_alone(f->store, POLITIE, (uint64_t)next), 1);
    reopen(f);
    assert_true(deliver_new(f->store, POLITIE, 4) > next);
    /* An old Ack for the removed seq does not touch the new delivery. */
    assert_int_equal(ack_alone(f->store, POLITIE, (uint64_t)highest), 0);
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
        VALID,
        WRONG_ID,
        WRONG_SENDER,
        WRONG_INDEX,
        WRONG_ACCEPTED_AT,
        WRONG_PARTNER,
        OTHER_ITEM,
        UNKNOWN_ITEM,
        ZERO_ITEM,
        NO_RECIPIENT,
        EMPTY_RECIPIENT,
        NOT_BY_REF,
        BY_REF_TWO,
        NO_RULE,
        NO_MESSAGE_ID
    };
    static const struct {
        enum mutation mutation;
        int ok;
    } rows[] = {
        {WRONG_ID, 0},      {WRONG_SENDER, 0},    {WRONG_INDEX, 0},  {WRONG_ACCEPTED_AT, 0},
        {WRONG_PARTNER, 0}, {OTHER_ITEM, 0},      {UNKNOWN_ITEM, 0}, {ZERO_ITEM, 0},
        {NO_RECIPIENT, 0},  {EMPTY_RECIPIENT, 0}, {NOT_BY_REF, 0},   {BY_REF_TWO, 0},
        {NO_RULE, 0},       {NO_MESSAGE_ID, 0},   {VALID, 1},
    };
    int64_t pending = 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        delivery_spec_t spec;
        delivery_spec(&spec, POLITIE, WOCO, "woco-servatius", 1, accepted_at, item0, 0);
        switch (rows[i].mutation) {
        case VALID:
            break;
        case WRONG_ID:
            spec.id[0] ^= 1;
            break;
        case WRONG_SENDER:
            spec.d.sender = "woco-servatius/ander";
            break;
        case WRONG_INDEX:
            spec.d.item_index = 1;
            break;
        case WRONG_ACCEPTED_AT:
            spec.d.accepted_at++;
            break;
        case WRONG_PARTNER:
            spec.d.sender_partner = "woco";
            break;
        case OTHER_ITEM:
            spec.d.item_seq = (uint64_t)other_item;
            break;
        case UNKNOWN_ITEM:
            spec.d.item_seq = (uint64_t)other_item + 1000;
            break;
        case ZERO_ITEM:
            spec.d.item_seq = 0;
            break;
        case NO_RECIPIENT:
            spec.d.recipient = NULL;
            break;
        case EMPTY_RECIPIENT:
            spec.d.recipient = "";
            break;
        case NOT_BY_REF: /* a signal's delivery with a body of its own */
            spec.d.by_ref = 0;
            spec.d.body = spec.id;
            spec.d.body_len = sizeof spec.id;
            break;
        case BY_REF_TWO:
            spec.d.by_ref = 2;
            break;
        case NO_RULE:
            spec.d.rule_id = NULL;
            break;
        case NO_MESSAGE_ID:
            spec.d.message_id = NULL;
            break;
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

/* The retention an item was written with, or raised to (raw read). */
static long long item_expires_at(const fixture_t *f, int64_t item_seq)
{
    char sql[128], value[32];
    snprintf(sql, sizeof sql, "SELECT expires_at FROM items WHERE seq = %lld", (long long)item_seq);
    sqlite3 *db = store_fixture_raw_open(f->path);
    raw_text(db, sql, value, sizeof value);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return strtoll(value, NULL, 10);
}

static int64_t item_retained(store_t *store, int64_t publish_id, uint32_t index,
                             int64_t retain_until)
{
    uint8_t body[48];
    fill(body, sizeof body, (unsigned)publish_id * 100u + index, 5);
    return store_item_add_retained(store, publish_id, index, body, sizeof body, retain_until);
}

/* An item of the publish added in the same transaction is written without
 * reading the publish back, and its deliveries are checked against what
 * store_publish_add wrote: every mismatch is still refused, a publish of
 * an earlier transaction or of a rolled-back one is read from its rows,
 * and the retention given is the item's from the start. */
static void test_item_added_with_its_publish(void **state)
{
    fixture_t *f = *state;
    enum how {
        SAME_TXN,      /* publish and item in one transaction */
        EARLIER_TXN,   /* the publish committed before */
        NO_TXN,        /* no transaction at all */
        AFTER_ROLLBACK /* a publish rolled back, another given its rowid */
    };
    enum mutation { VALID, WRONG_ID, WRONG_SENDER, WRONG_INDEX, WRONG_ACCEPTED_AT, OTHER_ITEM };
    static const struct {
        enum how how;
        enum mutation mutation;
        int ok;
    } rows[] = {
        {SAME_TXN, VALID, 1},
        {SAME_TXN, WRONG_ID, 0},
        {SAME_TXN, WRONG_SENDER, 0},
        {SAME_TXN, WRONG_INDEX, 0},
        {SAME_TXN, WRONG_ACCEPTED_AT, 0},
        {SAME_TXN, OTHER_ITEM, 0},
        {EARLIER_TXN, VALID, 1},
        {EARLIER_TXN, WRONG_SENDER, 0},
        {NO_TXN, VALID, 1},
        {NO_TXN, WRONG_ACCEPTED_AT, 0},
        {AFTER_ROLLBACK, VALID, 1},
        {AFTER_ROLLBACK, WRONG_SENDER, 0},
        {AFTER_ROLLBACK, WRONG_ID, 0},
    };
    int64_t other_publish = publish(f->store, GEMEENTE, 500, 1700000000);
    int64_t other_item = item(f->store, other_publish, 0);
    assert_true(other_item > 0);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        unsigned n = 600 + (unsigned)i;
        int64_t accepted_at = 1700000000 + (int64_t)i;
        int64_t retain = accepted_at + 1000;
        if (rows[i].how == AFTER_ROLLBACK) {
            /* the rolled-back publish: another sender, other facts */
            assert_int_equal(store_begin(f->store), 0);
            int64_t gone = publish(f->store, GEMEENTE, n + 100, accepted_at + 7);
            assert_true(gone > 0);
            assert_int_equal(store_rollback(f->store), 0);
        }
        if (rows[i].how != NO_TXN)
            assert_int_equal(store_begin(f->store), 0);
        int64_t publish_id = publish(f->store, WOCO, n, accepted_at);
        assert_true(publish_id > 0);
        if (rows[i].how == EARLIER_TXN) {
            assert_int_equal(store_commit(f->store), 0);
            assert_int_equal(store_begin(f->store), 0);
        }
        int64_t item_seq = item_retained(f->store, publish_id, 2, retain);
        if (item_seq <= 0)
            fail_msg("row %zu: item_add: %s", i, store_errmsg(f->store));

        delivery_spec_t spec;
        delivery_spec(&spec, POLITIE, WOCO, "woco-servatius", n, accepted_at, item_seq, 2);
        spec.d.expires_at = retain + 5; /* beyond what the item was written with */
        switch (rows[i].mutation) {
        case VALID:
            break;
        case WRONG_ID:
            spec.id[3] ^= 1;
            break;
        case WRONG_SENDER:
            spec.d.sender = GEMEENTE;
            break;
        case WRONG_INDEX:
            spec.d.item_index = 0;
            break;
        case WRONG_ACCEPTED_AT:
            spec.d.accepted_at++;
            break;
        case OTHER_ITEM:
            spec.d.item_seq = (uint64_t)other_item;
            break;
        }
        int64_t seq = store_delivery_add(f->store, &spec.d);
        if (rows[i].ok != (seq > 0))
            fail_msg("row %zu: delivery_add gave %lld (%s)", i, (long long)seq,
                     store_errmsg(f->store));
        if (store_in_transaction(f->store))
            assert_int_equal(store_commit(f->store), 0);
        /* written with the retention given, raised by a valid delivery */
        long long want = rows[i].ok ? (long long)retain + 5 : (long long)retain;
        if (item_expires_at(f, item_seq) != want)
            fail_msg("row %zu: the item's retention is %lld, want %lld", i,
                     item_expires_at(f, item_seq), want);
    }
    /* A retention before the publish's acceptance starts at the acceptance. */
    assert_int_equal(store_begin(f->store), 0);
    int64_t publish_id = publish(f->store, WOCO, 700, 1700000500);
    int64_t early = item_retained(f->store, publish_id, 0, 1600000000);
    assert_int_equal(store_commit(f->store), 0);
    assert_true(early > 0);
    assert_int_equal(item_expires_at(f, early), 1700000500);
    /* An unknown publish, in a transaction that added another one. */
    assert_int_equal(store_begin(f->store), 0);
    publish_id = publish(f->store, WOCO, 701, 1700000600);
    assert_int_equal(item_retained(f->store, publish_id + 50, 0, 1800000000), -1);
    assert_non_null(strstr(store_errmsg(f->store), "no such publish"));
    assert_int_equal(store_rollback(f->store), 0);
    /* The publish of a rolled-back transaction is no longer known. */
    assert_int_equal(store_begin(f->store), 0);
    publish_id = publish(f->store, WOCO, 702, 1700000700);
    assert_true(publish_id > 0);
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(item_retained(f->store, publish_id, 0, 1800000000), -1);
    assert_non_null(strstr(store_errmsg(f->store), "no such publish"));
    assert_int_equal(store_rollback(f->store), 0);
}

static long long publish_expires_at(const fixture_t *f, int64_t publish_id)
{
    char sql[128], value[32];
    snprintf(sql, sizeof sql, "SELECT expires_at FROM publishes WHERE id = %lld",
             (long long)publish_id);
    sqlite3 *db = store_fixture_raw_open(f->path);
    raw_text(db, sql, value, sizeof value);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return strtoll(value, NULL, 10);
}

/* A publish written with the retention its caller gives keeps at least
 * that, and its items' deliveries raise it beyond, never lower: item 0's
 * delivery expires at first_until, item 1's at second_until. */
static void test_publish_added_with_retention(void **state)
{
    fixture_t *f = *state;
    const int64_t A = 1700001000;
    static const struct {
        int64_t publish_retain, first_until, second_until, want_publish;
    } rows[] = {
        {INT64_MIN, 100, 50, 100}, /* raised by the deliveries */
        {200, 100, 150, 200},      /* given: kept, not lowered */
        {50, 100, 300, 300},       /* given, then raised by the second item */
        {-10, -5, -1, 0},          /* before acceptance: acceptance */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        unsigned n = 800 + (unsigned)i;
        uint8_t id[16], hash[32], sig[64], root[32];
        fill(id, sizeof id, n, 1);
        fill(hash, sizeof hash, n, 2);
        fill(sig, sizeof sig, n, 3);
        fill(root, sizeof root, n, 4);
        int64_t retain =
            rows[i].publish_retain == INT64_MIN ? INT64_MIN : A + rows[i].publish_retain;
        assert_int_equal(store_begin(f->store), 0);
        int64_t publish_id =
            store_publish_add_retained(f->store, WOCO, id, hash, sig, root, A, retain);
        assert_true(publish_id > 0);
        for (uint32_t index = 0; index < 2; index++) {
            int64_t until = A + (index == 0 ? rows[i].first_until : rows[i].second_until);
            int64_t item_seq = item_retained(f->store, publish_id, index, INT64_MIN);
            assert_true(item_seq > 0);
            delivery_spec_t spec;
            delivery_spec(&spec, POLITIE, WOCO, "woco-servatius", n, A, item_seq, index);
            spec.d.expires_at = until;
            if (store_delivery_add(f->store, &spec.d) <= 0)
                fail_msg("row %zu: %s", i, store_errmsg(f->store));
        }
        assert_int_equal(store_commit(f->store), 0);
        if (publish_expires_at(f, publish_id) != A + rows[i].want_publish)
            fail_msg("row %zu: the publish's retention is %lld, want %lld", i,
                     publish_expires_at(f, publish_id), (long long)(A + rows[i].want_publish));
    }
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
    assert_int_equal(ack_alone(f->store, POLITIE, (uint64_t)seq), 1);
}

/* ------------------------------------------------------------------ transactions */

/* Every fdatasync (and fsync) of the process, SQLite's included: the test
 * program's definitions take the place of libc's for libsqlite3 too (symbol
 * interposition), so a test can count what a commit syncs. */
static int fdatasync_calls;
/* n > 0: the n-th sync from now and every later one fail with EIO, until
 * it is set to 0 again (a disk that went bad stays bad; SQLite ignores the
 * failure of some syncs, such as a directory's, so a single failure could
 * land on one of those). */
static int fdatasync_fail_next;

static int sync_fails_now(void)
{
    fdatasync_calls++;
    if (fdatasync_fail_next > 1) {
        fdatasync_fail_next--;
        return 0;
    }
    if (fdatasync_fail_next == 1) {
        errno = EIO;
        return 1;
    }
    return 0;
}

int fdatasync(int fd)
{
    return sync_fails_now() ? -1 : (int)syscall(SYS_fdatasync, fd);
}

/* fsync counts (and fails) too: a build of SQLite that syncs with it must
 * not make an unsynced commit look right. */
int fsync(int fd)
{
    return sync_fails_now() ? -1 : (int)syscall(SYS_fsync, fd);
}

/* A commit syncs the WAL before it returns; an unsynced one does not, and
 * the next synced commit keeps both. Rows that must fail: committing with
 * nothing open, either way. */
static void test_commit_syncs_unsynced_does_not(void **state)
{
    fixture_t *f = *state;
    static const struct {
        int synced;
        unsigned n;
    } rows[] = {{1, 11}, {0, 12}, {0, 13}, {1, 14}, {0, 15}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        assert_int_equal(store_begin(f->store), 0);
        assert_true(publish(f->store, WOCO, rows[i].n, 1700000000) > 0);
        int before = fdatasync_calls;
        int rc = rows[i].synced ? store_commit(f->store) : store_commit_unsynced(f->store);
        if (rc != 0)
            fail_msg("row %zu: commit: %s", i, store_errmsg(f->store));
        if (rows[i].synced && fdatasync_calls == before)
            fail_msg("row %zu: a synced commit returned without syncing", i);
        if (!rows[i].synced && fdatasync_calls != before)
            fail_msg("row %zu: an unsynced commit synced %d time(s)", i, fdatasync_calls - before);
        assert_false(store_in_transaction(f->store));
    }
    assert_int_equal(store_commit(f->store), -1); /* nothing open */
    assert_int_equal(store_commit_unsynced(f->store), -1);
    reopen(f);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        assert_int_equal(publish_known(f->store, WOCO, rows[i].n), 1);
}

/* A commit whose WAL sync fails is not known to be on disk, and the kernel
 * may have dropped the failed pages: the handle refuses every later call,
 * so nothing is answered from it until the store is opened again. */
static void test_failed_sync_poisons_the_handle(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(store_begin(f->store), 0);
    assert_true(publish(f->store, WOCO, 21, 1700000000) > 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_false(store_sync_failed(f->store));

    assert_int_equal(store_begin(f->store), 0);
    assert_true(publish(f->store, WOCO, 22, 1700000000) > 0);
    int calls = fdatasync_calls;
    fdatasync_fail_next = 1;
    assert_int_equal(store_commit(f->store), -1);
    fdatasync_fail_next = 0;
    assert_true(fdatasync_calls > calls); /* the failing sync was the commit's */
    assert_true(store_sync_failed(f->store));
    assert_non_null(strstr(store_errmsg(f->store), "syncing the WAL failed"));
    assert_true(store_last_error_is_unavailable(f->store));
    /* every later call is refused, reads included */
    assert_int_equal(store_begin(f->store), -1);
    assert_int_equal(publish_known(f->store, WOCO, 21), -1);
    assert_non_null(
        strstr(store_errmsg(f->store), "an earlier sync or checkpoint of the store failed"));
    /* opened again, the store serves what it holds */
    reopen(f);
    assert_false(store_sync_failed(f->store));
    assert_int_equal(publish_known(f->store, WOCO, 21), 1);
}

/* The per-item memo (facts checked, retention raised) never outlives what
 * it knew: after a rollback, the same delivery again raises its item's
 * retention, in a transaction or without one. */
static void test_item_memo_after_rollback(void **state)
{
    fixture_t *f = *state;
    static const int in_txn_after[] = {0, 1};
    for (size_t i = 0; i < 2; i++) {
        unsigned n = 30 + (unsigned)i;
        assert_int_equal(store_begin(f->store), 0);
        int64_t publish_id = publish(f->store, WOCO, n, 1700000000);
        int64_t item_seq = item(f->store, publish_id, 0);
        assert_true(item_seq > 0);
        assert_int_equal(store_commit(f->store), 0);

        delivery_spec_t spec;
        delivery_spec(&spec, POLITIE, WOCO, "woco-servatius", n, 1700000000, item_seq, 0);
        spec.d.expires_at = 1900000000;
        assert_int_equal(store_begin(f->store), 0);
        assert_true(store_delivery_add(f->store, &spec.d) > 0);
        assert_int_equal(store_rollback(f->store), 0);

        if (in_txn_after[i])
            assert_int_equal(store_begin(f->store), 0);
        if (store_delivery_add(f->store, &spec.d) <= 0)
            fail_msg("row %zu: %s", i, store_errmsg(f->store));
        if (in_txn_after[i])
            assert_int_equal(store_commit(f->store), 0);

        char sql[128], value[32];
        snprintf(sql, sizeof sql, "SELECT expires_at FROM items WHERE seq = %lld",
                 (long long)item_seq);
        sqlite3 *db = store_fixture_raw_open(f->path);
        raw_text(db, sql, value, sizeof value);
        assert_int_equal(sqlite3_close(db), SQLITE_OK);
        if (strcmp(value, "1900000000") != 0)
            fail_msg("row %zu: the item's retention is %s after the rollback, want 1900000000", i,
                     value);
    }
}

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

    f->store = store_fixture_open(f->path, test_key);
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
    store_t *store = store_open(path, test_key, STORE_OPEN_CREATE, err, sizeof err);
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

    store_t *store = store_fixture_open(path, test_key);
    assert_int_equal(publish_known(store, WOCO, 1), 1);
    assert_int_equal(publish_known(store, WOCO, 2), 0);
    /* The lost publish's id is free: its items were never committed. */
    int64_t again = publish(store, WOCO, 2, 1700000002);
    assert_true(again > 0);
    assert_true(item(store, again, 0) > 0);
    store_close(&store);
}

/* ------------------------------------------------------------------ raw file access */

typedef struct file_bytes {
    uint8_t *bytes;
    size_t len;
} file_bytes_t;

/* The whole file, or nothing (len 0) when it does not exist. */
static void file_read(const char *path, file_bytes_t *out)
{
    out->bytes = NULL;
    out->len = 0;
    FILE *file = fopen(path, "rb");
    if (file == NULL)
        return;
    assert_int_equal(fseek(file, 0, SEEK_END), 0);
    long size = ftell(file);
    assert_true(size >= 0);
    assert_int_equal(fseek(file, 0, SEEK_SET), 0);
    out->bytes = malloc((size_t)size + 1);
    assert_non_null(out->bytes);
    out->len = fread(out->bytes, 1, (size_t)size, file);
    assert_int_equal(out->len, (size_t)size);
    assert_int_equal(fclose(file), 0);
}

static int bytes_contain(const uint8_t *hay, size_t hay_len, const void *needle, size_t len)
{
    for (size_t i = 0; len > 0 && i + len <= hay_len; i++)
        if (memcmp(hay + i, needle, len) == 0)
            return 1;
    return 0;
}

/* Whether the database file or its WAL holds these bytes anywhere. */
static int store_files_contain(const char *db_path, const void *needle, size_t len)
{
    char wal_path[256];
    snprintf(wal_path, sizeof wal_path, "%s-wal", db_path);
    const char *paths[2] = {db_path, wal_path};
    int found = 0;
    for (int i = 0; i < 2; i++) {
        file_bytes_t file;
        file_read(paths[i], &file);
        found |= bytes_contain(file.bytes, file.len, needle, len);
        free(file.bytes);
    }
    return found;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* One blob that a raw query yields, copied into out; returns its length. */
static size_t raw_blob(sqlite3 *db, const char *sql, int64_t param, uint8_t *out, size_t cap)
{
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_bind_int64(stmt, 1, param), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    size_t len = (size_t)sqlite3_column_bytes(stmt, 0);
    assert_true(len <= cap);
    memcpy(out, sqlite3_column_blob(stmt, 0), len);
    assert_int_equal(sqlite3_finalize(stmt), SQLITE_OK);
    return len;
}

static int64_t raw_int(const char *path, const char *sql)
{
    char value[32];
    sqlite3 *db = store_fixture_raw_open(path);
    raw_text(db, sql, value, sizeof value);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return strtoll(value, NULL, 10);
}

/* Every column of the mailbox row starting at first_seq in `table`
 * (mailbox or mailbox_set_aside) as SQL literals, to compare a row with its
 * copy byte for byte; expires_at apart (setting aside bounds it). */
static void raw_row_quoted(const char *path, const char *table, int64_t first_seq, char *out,
                           size_t outlen)
{
    char sql[768];
    snprintf(sql, sizeof sql,
             "SELECT quote(first_seq)||quote(recipient)||quote(n)||quote(pending)||"
             "quote(publish_id)||quote(first_item_seq)||quote(sender)||quote(sender_partner)||"
             "quote(message_id)||quote(accepted_at)||quote(rules)||quote(items)||quote(body)||"
             "quote(done)||quote(case_id)||quote(is_case_event) FROM %s WHERE first_seq = %lld",
             table, (long long)first_seq);
    sqlite3 *db = store_fixture_raw_open(path);
    raw_text(db, sql, out, outlen);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* The columns a delivery of `table` keeps as they were when it becomes a
 * mailbox row (deliveries: seq_col "seq", item_col "item_seq"; mailbox or
 * mailbox_set_aside: "first_seq", "first_item_seq") as SQL literals, of
 * the row at seq. */
static void raw_delivery_quoted(const char *path, const char *table, const char *seq_col,
                                const char *item_col, int64_t seq, char *out, size_t outlen)
{
    char sql[768];
    snprintf(sql, sizeof sql,
             "SELECT quote(%s)||quote(recipient)||quote(%s)||quote(sender)||quote(sender_partner)||"
             "quote(message_id)||quote(accepted_at)||quote(body)||quote(case_id)||"
             "quote(is_case_event) FROM %s WHERE %s = %lld",
             seq_col, item_col, table, seq_col, (long long)seq);
    sqlite3 *db = store_fixture_raw_open(path);
    raw_text(db, sql, out, outlen);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* A new store has 8 KiB pages (store_schema.c); a store whose file was
 * made with another page size keeps it, and works as before. */
static void test_page_size_of_new_and_existing_stores(void **state)
{
    fixture_t *f = *state;
    static const struct {
        int existing; /* a store whose file has 4 KiB pages (as one made before 8 KiB) */
        int64_t want;
    } rows[] = {{0, 8192}, {1, 4096}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s.%zu", f->path, i);
        if (rows[i].existing) {
            store_t *made = store_fixture_create(path, test_key);
            store_close(&made);
            sqlite3 *db = store_fixture_raw_open(path);
            assert_int_equal(sqlite3_exec(db,
                                          "PRAGMA journal_mode = DELETE; PRAGMA page_size = 4096;"
                                          " VACUUM; PRAGMA journal_mode = WAL;",
                                          NULL, NULL, NULL),
                             SQLITE_OK);
            assert_int_equal(sqlite3_close(db), SQLITE_OK);
        }
        store_t *store = rows[i].existing ? store_fixture_open(path, test_key)
                                          : store_fixture_create(path, test_key);
        assert_int_equal(store_begin(store), 0);
        int64_t seq = deliver_new(store, POLITIE, 900 + (unsigned)i);
        assert_int_equal(store_commit(store), 0);
        store_close(&store);
        store = store_fixture_open(path, test_key);
        seen_t seen = {.recipient = POLITIE};
        assert_int_equal(store_mailbox_scan(store, POLITIE, 0, 10, collect, &seen), 1);
        assert_int_equal(seen.seq[0], (uint64_t)seq);
        store_close(&store);
        int64_t page_size = raw_int(path, "PRAGMA page_size");
        if (page_size != rows[i].want)
            fail_msg("row %zu: pages of %lld bytes, want %lld", i, (long long)page_size,
                     (long long)rows[i].want);
        char side[300];
        unlink(path);
        snprintf(side, sizeof side, "%s-wal", path);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", path);
        unlink(side);
    }
}

/* ------------------------------------------------------------------ sealing */

/* The field mask deliver_bytes' deliveries are reduced to, unless a test
 * names its own. */
#define BODY_MASK 0x2a5u

/* A publish by WOCO (number n) with one item of the given bytes, delivered
 * to recipient by reference with the given field mask and expiry. Returns
 * the delivery seq; *item_seq_out gets the item's. */
static int64_t deliver_bytes(store_t *store, const char *recipient, unsigned n,
                             const char *item_text, uint32_t fields, int64_t expires_at,
                             int64_t *item_seq_out)
{
    int64_t accepted_at = 1700000000 + n;
    int64_t publish_id = publish(store, WOCO, n, accepted_at);
    assert_true(publish_id > 0);
    int64_t item_seq =
        store_item_add(store, publish_id, 0, (const uint8_t *)item_text, strlen(item_text));
    assert_true(item_seq > 0);
    delivery_spec_t spec;
    delivery_spec(&spec, recipient, WOCO, "woco-servatius", n, accepted_at, item_seq, 0);
    spec.d.fields = fields;
    spec.d.expires_at = expires_at;
    int64_t seq = store_delivery_add(store, &spec.d);
    if (seq <= 0)
        fail_msg("store_delivery_add: %s", store_errmsg(store));
    if (item_seq_out != NULL)
        *item_seq_out = item_seq;
    return seq;
}

/* A publish by WOCO (number n) with one item, delivered to recipient in
 * case case_id with body_text as its content (not by reference). Returns
 * the delivery seq. */
static int64_t deliver_case(store_t *store, const char *recipient, unsigned n, const char *case_id,
                            const char *body_text)
{
    int64_t accepted_at = 1700000000 + n;
    int64_t publish_id = publish(store, WOCO, n, accepted_at);
    assert_true(publish_id > 0);
    int64_t item_seq = item(store, publish_id, 0);
    assert_true(item_seq > 0);
    delivery_spec_t spec;
    delivery_spec(&spec, recipient, WOCO, "woco-servatius", n, accepted_at, item_seq, 0);
    delivery_spec_case(&spec, case_id, 0);
    spec.d.body = (const uint8_t *)body_text;
    spec.d.body_len = strlen(body_text);
    int64_t seq = store_delivery_add(store, &spec.d);
    if (seq <= 0)
        fail_msg("store_delivery_add: %s", store_errmsg(store));
    return seq;
}

#define MARK_SUMMARY "MARKER-summary-7f3a"
#define MARK_SUBJECT "PSEUDO-c81d44e2b9"
#define MARK_GROUNDS "GROUNDS-herhaalde-overlast-19"
static const char marked_item[] =
    "summary=" MARK_SUMMARY ";subject=" MARK_SUBJECT ";grounds=" MARK_GROUNDS ";address=6211AB 12";

/* What a scan handed out: a delivery by reference's item bytes (the last
 * one's) and its field mask. */
typedef struct body_seen {
    char text[128];
    uint32_t fields;
    size_t n;
} body_seen_t;

static int collect_body(const store_delivery_t *d, void *arg)
{
    body_seen_t *seen = arg;
    assert_int_equal(d->by_ref, 1);
    assert_true(d->body_len < sizeof seen->text);
    memcpy(seen->text, d->body, d->body_len);
    seen->text[d->body_len] = '\0';
    seen->fields = d->fields;
    seen->n++;
    return 0;
}

/* What must and must not be found in the raw files. */
static void check_file_contents(const char *path)
{
    static const struct {
        const char *needle;
        int present;
    } rows[] = {
        {MARK_SUMMARY, 0},
        {MARK_SUBJECT, 0},
        {MARK_GROUNDS, 0},
        {"6211AB", 0},
        {POLITIE, 1},             /* routing: the recipient */
        {"woco-ondermijning", 1}, /* routing: the rule id */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int found = store_files_contain(path, rows[i].needle, strlen(rows[i].needle));
        if (found != rows[i].present)
            fail_msg("row %zu: \"%s\" %s in the store's files", i, rows[i].needle,
                     found ? "found" : "not found");
    }
}

static void test_bodies_sealed_in_file(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(store_begin(f->store), 0);
    (void)deliver_bytes(f->store, POLITIE, 1, marked_item, BODY_MASK, 1800000000, NULL);
    assert_int_equal(store_commit(f->store), 0);

    /* The body went in and comes out whole... */
    body_seen_t seen = {.n = 0};
    assert_int_equal(store_mailbox_scan(f->store, POLITIE, 0, 10, collect_body, &seen), 1);
    assert_string_equal(seen.text, marked_item); /* by reference: the item's bytes */
    assert_int_equal(seen.fields, BODY_MASK);
    /* ...and is nowhere in clear: in the WAL while open, in the file after. */
    check_file_contents(f->path);
    store_close(&f->store);
    check_file_contents(f->path);
    f->store = store_fixture_open(f->path, test_key);
}

/* The documented associated data of an item (store.h). */
static size_t item_ad(uint8_t *ad, int64_t seq, int64_t publish_id, uint32_t index)
{
    static const char tag[] = "schakel-store-item-v1";
    size_t len = sizeof tag;
    memcpy(ad, tag, sizeof tag);
    for (int i = 7; i >= 0; i--)
        ad[len++] = (uint8_t)((uint64_t)seq >> (8 * i));
    for (int i = 7; i >= 0; i--)
        ad[len++] = (uint8_t)((uint64_t)publish_id >> (8 * i));
    for (int i = 3; i >= 0; i--)
        ad[len++] = (uint8_t)(index >> (8 * i));
    return len;
}

static void test_item_body_sealed_to_its_row(void **state)
{
    fixture_t *f = *state;
    int64_t publish_id = publish(f->store, WOCO, 1, 1700000001);
    int64_t item_seq =
        store_item_add(f->store, publish_id, 3, (const uint8_t *)marked_item, strlen(marked_item));
    assert_true(item_seq > 0);
    uint8_t sealed[512], opened[512], ad[64];
    sqlite3 *db = store_fixture_raw_open(f->path);
    size_t sealed_len =
        raw_blob(db, "SELECT body FROM items WHERE seq = ?1", item_seq, sealed, sizeof sealed);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_int_equal(sealed_len, 24 + strlen(marked_item) + 16);

    static const struct {
        int64_t seq_delta, publish_delta;
        uint32_t index;
        int flip_key;
        int opens;
    } rows[] = {
        {0, 0, 3, 0, 1}, {1, 0, 3, 0, 0}, {0, 1, 3, 0, 0}, {0, 0, 2, 0, 0}, {0, 0, 3, 1, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint8_t key[STORE_KEY_BYTES];
        memcpy(key, test_key, sizeof key);
        key[0] ^= (uint8_t)rows[i].flip_key;
        size_t ad_len = item_ad(ad, item_seq + rows[i].seq_delta,
                                publish_id + rows[i].publish_delta, rows[i].index);
        unsigned long long opened_len = 0;
        int rc = crypto_aead_xchacha20poly1305_ietf_decrypt(
            opened, &opened_len, NULL, sealed + 24, sealed_len - 24, ad, ad_len, sealed, key);
        if ((rc == 0) != rows[i].opens)
            fail_msg("row %zu: decrypt gave %d", i, rc);
        if (rc == 0) {
            assert_int_equal(opened_len, strlen(marked_item));
            assert_memory_equal(opened, marked_item, opened_len);
        }
    }
}

enum tamper {
    TAMPER_NONE,
    TAMPER_SWAP,
    TAMPER_RECIPIENT,
    TAMPER_ITEM_SEQ,
    TAMPER_FLIP,
    TAMPER_CUT,
    TAMPER_SEQ
};

/* Open the sealed body of the mailbox row starting at first_seq in the
 * file at path with key, read past the store's own code but for the row's
 * associated data (store_mailbox_row_ad of its clear columns as they are
 * in the file): 0 with the body in out (cap bytes, *len its length), -1
 * when it does not authenticate. Fails the test when there is no such row. */
static int raw_row_open(const char *path, const uint8_t key[STORE_KEY_BYTES], int64_t first_seq,
                        uint8_t *out, size_t cap, size_t *len)
{
    sqlite3 *db = store_fixture_raw_open(path);
    sqlite3_stmt *row = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT n, recipient, publish_id, first_item_seq, sender,"
                                        " sender_partner, message_id, accepted_at, rules, items,"
                                        " case_id, is_case_event, body FROM mailbox"
                                        " WHERE first_seq = ?1",
                                        -1, &row, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_bind_int64(row, 1, first_seq), SQLITE_OK);
    if (sqlite3_step(row) != SQLITE_ROW)
        fail_msg("no mailbox row %lld in %s", (long long)first_seq, path);
    mailbox_row_clear_t c = {
        .first_seq = first_seq,
        .n = (uint32_t)sqlite3_column_int64(row, 0),
        .recipient = (const char *)sqlite3_column_text(row, 1),
        .publish_id = sqlite3_column_int64(row, 2),
        .first_item_seq = sqlite3_column_int64(row, 3),
        .sender = (const char *)sqlite3_column_text(row, 4),
        .sender_partner = (const char *)sqlite3_column_text(row, 5),
        .message_id = sqlite3_column_blob(row, 6),
        .accepted_at = sqlite3_column_int64(row, 7),
        .rules = (const char *)sqlite3_column_text(row, 8),
        .rules_len = (size_t)sqlite3_column_bytes(row, 8),
        .items = sqlite3_column_blob(row, 9),
        .case_id = (const char *)sqlite3_column_text(row, 10),
        .is_case_event = sqlite3_column_int64(row, 11) != 0,
    };
    store_seal_ad_t ad;
    assert_int_equal(store_mailbox_row_ad(&ad, &c), 0);
    const uint8_t *sealed = sqlite3_column_blob(row, 12);
    size_t sealed_len = (size_t)sqlite3_column_bytes(row, 12);
    assert_true(sealed_len >= 40 && sealed_len - 40 <= cap);
    unsigned long long opened = 0;
    int rc =
        crypto_aead_xchacha20poly1305_ietf_decrypt(out, &opened, NULL, sealed + 24, sealed_len - 24,
                                                   ad.bytes, ad.len, sealed, key) == 0
            ? 0
            : -1;
    *len = (size_t)opened;
    assert_int_equal(sqlite3_finalize(row), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return rc;
}

/* Flip one bit of the sealed body of the mailbox row starting at seq, at
 * offset `at`. */
static void raw_flip_body_byte(const char *path, int64_t seq, size_t at)
{
    uint8_t body[512];
    sqlite3 *db = store_fixture_raw_open(path);
    size_t len =
        raw_blob(db, "SELECT body FROM mailbox WHERE first_seq = ?1", seq, body, sizeof body);
    assert_true(at < len);
    body[at] ^= 0x01;
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "UPDATE mailbox SET body = ?1 WHERE first_seq = ?2", -1,
                                        &stmt, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_bind_blob(stmt, 1, body, (int)len, SQLITE_STATIC), SQLITE_OK);
    assert_int_equal(sqlite3_bind_int64(stmt, 2, seq), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_DONE);
    assert_int_equal(sqlite3_finalize(stmt), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void tamper(const char *path, enum tamper how, int64_t a, int64_t b)
{
    char sql[512];
    switch (how) {
    case TAMPER_NONE:
        return;
    case TAMPER_SWAP:
        snprintf(sql, sizeof sql,
                 "UPDATE mailbox SET body = CASE first_seq"
                 " WHEN %lld THEN (SELECT body FROM mailbox WHERE first_seq = %lld)"
                 " ELSE (SELECT body FROM mailbox WHERE first_seq = %lld) END"
                 " WHERE first_seq IN (%lld, %lld)",
                 (long long)a, (long long)b, (long long)a, (long long)a, (long long)b);
        break;
    case TAMPER_RECIPIENT: /* a's row moved into b's recipient's mailbox */
        snprintf(sql, sizeof sql,
                 "UPDATE mailbox SET recipient = (SELECT recipient FROM mailbox"
                 " WHERE first_seq = %lld) WHERE first_seq = %lld",
                 (long long)b, (long long)a);
        break;
    case TAMPER_ITEM_SEQ:
        snprintf(sql, sizeof sql,
                 "UPDATE mailbox SET first_item_seq = first_item_seq + 1 WHERE first_seq = %lld",
                 (long long)a);
        break;
    case TAMPER_FLIP:
        raw_flip_body_byte(path, a, 30);
        return;
    case TAMPER_CUT:
        snprintf(sql, sizeof sql,
                 "UPDATE mailbox SET body = substr(body, 1, length(body) - 1)"
                 " WHERE first_seq = %lld",
                 (long long)a);
        break;
    case TAMPER_SEQ: /* the row renumbered past every other */
        snprintf(sql, sizeof sql,
                 "UPDATE mailbox SET first_seq = first_seq + 1000 WHERE first_seq = %lld",
                 (long long)a);
        break;
    }
    store_fixture_raw_exec(path, sql);
}

#define SET_ASIDE_AT 1750000123LL

/* Set aside recipient's row holding seq (store_mailbox_row_set_aside: the
 * row goes whole) and, when it went, copy delivery seq of it out as the
 * trail's entry for it is written from (store_set_aside_get), with the
 * row's reason. The rows of this file hold one delivery each, so the row
 * is seq's alone: checked. The result of the set aside. */
static int set_aside(store_t *store, const char *recipient, uint64_t seq, int64_t now,
                     store_set_aside_t *x)
{
    store_mailbox_aside_t aside;
    int moved = store_mailbox_row_set_aside(store, recipient, seq, now, &aside);
    if (moved != 1)
        return moved;
    assert_int_equal(aside.first_seq, seq);
    assert_int_equal(aside.last_seq, seq);
    assert_int_equal(aside.n_set_aside, 1);
    assert_int_equal(store_set_aside_get(store, seq, x), 1);
    assert_string_equal(x->reason, aside.reason);
    return moved;
}

static void test_tampered_rows_do_not_authenticate(void **state)
{
    fixture_t *f = *state;
    static const struct {
        enum tamper how;
        int fails; /* the scan of a's recipient fails */
    } rows[] = {
        {TAMPER_NONE, 0}, {TAMPER_SWAP, 1}, {TAMPER_RECIPIENT, 1}, {TAMPER_ITEM_SEQ, 1},
        {TAMPER_FLIP, 1}, {TAMPER_CUT, 1},  {TAMPER_SEQ, 1},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char first[64], second[64];
        snprintf(first, sizeof first, "politie/rij-%zu", i);
        snprintf(second, sizeof second, "riec/rij-%zu", i);
        assert_int_equal(store_begin(f->store), 0);
        int64_t a =
            deliver_bytes(f->store, first, 100 + 2 * (unsigned)i, "item a", 0xa, 1800000000, NULL);
        /* a second item, so that item_seq + 1 names a real item too */
        int64_t b =
            deliver_bytes(f->store, second, 101 + 2 * (unsigned)i, "item b", 0xb, 1800000000, NULL);
        assert_int_equal(store_commit(f->store), 0);
        tamper(f->path, rows[i].how, a, b);

        const char *mailbox = rows[i].how == TAMPER_RECIPIENT ? second : first;
        body_seen_t seen = {.n = 0};
        int visited = store_mailbox_scan(f->store, mailbox, 0, 10, collect_body, &seen);
        store_set_aside_t x;
        if (!rows[i].fails) {
            assert_int_equal(visited, 1);
            assert_string_equal(seen.text, "item a");
            assert_int_equal(seen.fields, 0xa);
            /* a row that opens is never set aside */
            assert_int_equal(store_begin(f->store), 0);
            assert_int_equal(set_aside(f->store, mailbox, (uint64_t)a, SET_ASIDE_AT, &x), 0);
            assert_int_equal(store_commit(f->store), 0);
            assert_int_equal(store_mailbox_count(f->store, mailbox), 1);
            continue;
        }
        if (visited != -1)
            fail_msg("row %zu: a tampered row was read (%d): \"%s\"", i, visited, seen.text);
        assert_int_equal(seen.n, 0); /* not a byte of garbage handed out */
        assert_non_null(strstr(store_errmsg(f->store), "does not authenticate"));
        assert_false(store_last_error_is_unavailable(f->store));

        /* the scan names the row; set aside, it leaves the mailbox and its
         * count with its columns as they were, and the mailbox reads on */
        int64_t unreadable = rows[i].how == TAMPER_SEQ ? a + 1000 : a;
        assert_int_equal(store_scan_unreadable(f->store), (uint64_t)unreadable);
        char was[4096], copied[4096];
        raw_row_quoted(f->path, "mailbox", unreadable, was, sizeof was);
        int64_t waiting = store_mailbox_count(f->store, mailbox);
        assert_int_equal(set_aside(f->store, mailbox, (uint64_t)unreadable, SET_ASIDE_AT, &x),
                         -1); /* outside a transaction */
        assert_int_equal(store_begin(f->store), 0);
        assert_int_equal(
            set_aside(f->store, "riec/een-ander", (uint64_t)unreadable, SET_ASIDE_AT, &x),
            0); /* another's mailbox has no such row */
        assert_int_equal(set_aside(f->store, mailbox, (uint64_t)unreadable, SET_ASIDE_AT, &x), 1);
        assert_int_equal(store_commit(f->store), 0);
        assert_int_equal(x.row.view.seq, (uint64_t)unreadable);
        assert_string_equal(x.row.view.recipient, mailbox);
        assert_true(x.row.view.set_aside);
        if (strstr(x.reason, "does not authenticate") == NULL)
            fail_msg("row %zu: reason %s", i, x.reason);
        raw_row_quoted(f->path, "mailbox_set_aside", unreadable, copied, sizeof copied);
        assert_string_equal(copied, was);
        char sql[512];
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM mailbox_set_aside WHERE first_seq = %lld"
                 " AND set_aside_at = %lld AND reason = '%s' AND expires_at <= 1800000000",
                 (long long)unreadable, (long long)SET_ASIDE_AT, x.reason);
        assert_int_equal(raw_int(f->path, sql), 1);
        snprintf(sql, sizeof sql, "SELECT count(*) FROM mailbox WHERE first_seq = %lld",
                 (long long)unreadable);
        assert_int_equal(raw_int(f->path, sql), 0);
        assert_int_equal(store_mailbox_count(f->store, mailbox), waiting - 1);
        seen.n = 0;
        visited = store_mailbox_scan(f->store, mailbox, 0, 10, collect_body, &seen);
        assert_int_equal(visited, rows[i].how == TAMPER_RECIPIENT ? 1 : 0);
        if (visited == 1)
            assert_string_equal(seen.text, "item b");
        assert_int_equal(store_scan_unreadable(f->store), 0);
    }
}

/* What store_mailbox_list handed out, copied. */
typedef struct listed_seen {
    size_t n, stop_after;
    uint64_t seq[16];
    int set_aside[16];
    char sender[16][64];
    int has_id[16];
    char reason[16][128];
    int64_t queued_at[16], expires_at[16], set_aside_at[16];
} listed_seen_t;

static int collect_listed(const store_listed_t *d, void *arg)
{
    listed_seen_t *seen = arg;
    assert_true(seen->n < 16);
    size_t i = seen->n++;
    seen->seq[i] = d->seq;
    seen->set_aside[i] = d->set_aside;
    snprintf(seen->sender[i], sizeof seen->sender[i], "%s", d->sender ? d->sender : "(null)");
    seen->has_id[i] = d->message_id != NULL;
    snprintf(seen->reason[i], sizeof seen->reason[i], "%s", d->reason ? d->reason : "(null)");
    seen->queued_at[i] = d->queued_at;
    seen->expires_at[i] = d->expires_at;
    seen->set_aside_at[i] = d->set_aside_at;
    assert_null(d->case_id);
    assert_false(d->is_case_event);
    assert_int_equal(d->event_seq, 0);
    return seen->stop_after != 0 && seen->n >= seen->stop_after;
}

/* The query plans of a mailbox listing: the waiting rows through the
 * (recipient, first_seq) index without a sort, the rows set aside through
 * theirs without a sort, a case event's entry through the trail's
 * delivery_seq index: a page costs its rows, however many wait. */
static void test_mailbox_list_plans(void **state)
{
    fixture_t *f = *state;
    static const struct {
        enum mailbox_stmt_id id;
        const char *uses, *never;
    } rows[] = {
        {MB_QUERY_LIST_WAITING, "USING INDEX mailbox_by_recipient (recipient=? AND first_seq>?)",
         "TEMP B-TREE"},
        {MB_QUERY_LIST_SET_ASIDE,
         "USING INDEX mailbox_set_aside_by_recipient (recipient=? AND first_seq>?)", "TEMP B-TREE"},
        {MB_QUERY_LIST_EVENT, "USING INDEX audit_by_delivery (delivery_seq=?)", "SCAN audit"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        sqlite3_stmt *prepared = store_mailbox_stmt(f->store, rows[i].id);
        assert_non_null(prepared);
        char plan[1024];
        store_fixture_plan(f->path, sqlite3_sql(prepared), plan, sizeof plan);
        if (strstr(plan, rows[i].uses) == NULL || strstr(plan, rows[i].never) != NULL)
            fail_msg("row %zu: plan \"%s\": wanted %s, never %s", i, plan, rows[i].uses,
                     rows[i].never);
    }
}

/* One recipient's waiting deliveries and those set aside, merged in seq
 * order, paged with after and limit, others' rows never; a row set aside
 * with damaged columns reads as far as it can. */
static void test_mailbox_list(void **state)
{
    fixture_t *f = *state;
    enum { N = 5 };
    int64_t seqs[N];
    assert_int_equal(store_begin(f->store), 0);
    for (unsigned i = 0; i < N; i++) {
        seqs[i] = deliver_new(f->store, POLITIE, 10 + i);
        (void)deliver_new(f->store, RIEC, 100 + i); /* someone else's, in between */
    }
    assert_int_equal(store_commit(f->store), 0);
    /* the second is set aside (its envelope altered), and one of riec's */
    char sql[256];
    snprintf(sql, sizeof sql,
             "UPDATE mailbox SET sender_partner = 'geen' WHERE first_seq IN (%lld, %lld)",
             (long long)seqs[1], (long long)seqs[1] + 1);
    store_fixture_raw_exec(f->path, sql);
    store_set_aside_t x;
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(set_aside(f->store, POLITIE, (uint64_t)seqs[1], SET_ASIDE_AT, &x), 1);
    assert_int_equal(set_aside(f->store, RIEC, (uint64_t)seqs[1] + 1, SET_ASIDE_AT, &x), 1);
    assert_int_equal(store_commit(f->store), 0);

    listed_seen_t seen = {0};
    assert_int_equal(store_mailbox_list(f->store, POLITIE, 0, 100, collect_listed, &seen), N);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(seen.seq[i], (uint64_t)seqs[i]);
        assert_int_equal(seen.set_aside[i], i == 1);
        assert_string_equal(seen.sender[i], WOCO);
        assert_true(seen.has_id[i]);
        assert_int_equal(seen.queued_at[i], 1700000000 + 10 + (int64_t)i);
        assert_int_equal(seen.expires_at[i], seen.queued_at[i] + 365 * 86400);
    }
    assert_int_equal(seen.set_aside_at[1], SET_ASIDE_AT);
    assert_non_null(strstr(seen.reason[1], "does not authenticate"));
    assert_string_equal(seen.reason[0], "(null)");

    static const struct {
        int after; /* index into seqs, or -1 for 0 */
        size_t limit, stop_after;
        int visited, first;
    } rows[] = {
        {-1, 2, 0, 2, 0}, /* the one set aside within the page */
        {0, 1, 0, 1, 1},  /* a page of the one set aside alone */
        {1, 2, 0, 2, 2},  {3, 100, 0, 1, 4},  {4, 100, 0, 0, 0},
        {-1, 0, 0, 0, 0}, {-1, 100, 2, 2, 0}, /* the callback stops */
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        listed_seen_t page = {.stop_after = rows[r].stop_after};
        uint64_t after = rows[r].after < 0 ? 0 : (uint64_t)seqs[rows[r].after];
        int visited =
            store_mailbox_list(f->store, POLITIE, after, rows[r].limit, collect_listed, &page);
        if (visited != rows[r].visited || page.n != (size_t)visited)
            fail_msg("row %zu: visited %d (callback %zu), want %d", r, visited, page.n,
                     rows[r].visited);
        for (int k = 0; k < visited; k++)
            assert_int_equal(page.seq[k], (uint64_t)seqs[rows[r].first + k]);
    }
    listed_seen_t none = {0};
    assert_int_equal(store_mailbox_list(f->store, "om/officier", 0, 100, collect_listed, &none), 0);
    assert_int_equal(store_mailbox_list(f->store, POLITIE, UINT64_MAX, 100, collect_listed, &none),
                     0);
    assert_int_equal(store_mailbox_list(f->store, NULL, 0, 100, collect_listed, &none), -1);
    assert_int_equal(store_mailbox_list(f->store, POLITIE, 0, 100, NULL, NULL), -1);

    /* a row set aside keeps whatever its columns held: read as far as it goes */
    snprintf(sql, sizeof sql,
             "UPDATE mailbox_set_aside SET sender = 7, message_id = 'kapot',"
             " accepted_at = 'gisteren', reason = x'00ff' WHERE first_seq = %lld",
             (long long)seqs[1]);
    store_fixture_raw_exec(f->path, sql);
    listed_seen_t damaged = {0};
    assert_int_equal(
        store_mailbox_list(f->store, POLITIE, (uint64_t)seqs[0], 1, collect_listed, &damaged), 1);
    assert_int_equal(damaged.seq[0], (uint64_t)seqs[1]);
    assert_string_equal(damaged.sender[0], "(null)");
    assert_false(damaged.has_id[0]);
    assert_int_equal(damaged.queued_at[0], 0);
    assert_string_equal(damaged.reason[0], "(null)");
}

/* A rekey's record (store_rekey_recorded): *arg set refuses it; otherwise
 * it notes the counts it was given. */
static store_rekey_counts_t *rekey_record_seen;

static int rekey_record(store_t *store, const store_rekey_counts_t *counts, void *arg)
{
    (void)store;
    if (*(const int *)arg)
        return -1;
    if (rekey_record_seen != NULL)
        *rekey_record_seen = *counts;
    return 0;
}

/* A delivery by reference: the mask is what the row seals, the content is
 * the item's own body; a row cannot switch between the two kinds, a case
 * delivery cannot be one, and a rekey re-seals the mask. */
typedef struct ref_seen {
    char text[64];
    uint32_t fields;
    int by_ref;
    size_t n;
} ref_seen_t;

static int collect_ref(const store_delivery_t *d, void *arg)
{
    ref_seen_t *seen = arg;
    assert_true(d->body_len < sizeof seen->text);
    memcpy(seen->text, d->body, d->body_len);
    seen->text[d->body_len] = '\0';
    seen->fields = d->fields;
    seen->by_ref = d->by_ref;
    seen->n++;
    return 0;
}

static int64_t deliver_ref(store_t *store, const char *recipient, unsigned n, const char *item_text,
                           uint32_t fields, const char *case_id)
{
    int64_t accepted_at = 1700000000 + n;
    int64_t publish_id = publish(store, WOCO, n, accepted_at);
    assert_true(publish_id > 0);
    int64_t item_seq =
        store_item_add(store, publish_id, 0, (const uint8_t *)item_text, strlen(item_text));
    assert_true(item_seq > 0);
    delivery_spec_t spec;
    delivery_spec(&spec, recipient, WOCO, "woco-servatius", n, accepted_at, item_seq, 0);
    spec.d.by_ref = 1;
    spec.d.fields = fields;
    spec.d.body = NULL; /* ignored by reference */
    spec.d.body_len = 0;
    spec.d.case_id = case_id;
    return store_delivery_add(store, &spec.d);
}

static void test_delivery_by_reference(void **state)
{
    fixture_t *f = *state;
    static const uint32_t masks[] = {0, 1, 0x2a5, 0xffffffffu};
    assert_int_equal(store_begin(f->store), 0);
    int64_t seqs[4];
    for (size_t i = 0; i < 4; i++) {
        char text[32];
        snprintf(text, sizeof text, "item by reference %zu", i);
        seqs[i] = deliver_ref(f->store, POLITIE, 500 + (unsigned)i, text, masks[i], NULL);
        if (seqs[i] <= 0)
            fail_msg("row %zu: %s", i, store_errmsg(f->store));
    }
    /* a case's delivery is never by reference */
    assert_int_equal(deliver_ref(f->store, RIEC, 520, "case item", 1, "C-00000001"), -1);
    assert_non_null(strstr(store_errmsg(f->store), "only for a signal"));
    assert_int_equal(store_commit(f->store), 0);

    for (size_t i = 0; i < 4; i++) {
        ref_seen_t seen = {.n = 0};
        char want[32];
        snprintf(want, sizeof want, "item by reference %zu", i);
        assert_int_equal(
            store_mailbox_scan(f->store, POLITIE, (uint64_t)seqs[i] - 1, 1, collect_ref, &seen), 1);
        assert_string_equal(seen.text, want);
        assert_int_equal(seen.fields, masks[i]);
        assert_int_equal(seen.by_ref, 1);
    }
    /* a rekey whose record fails changes nothing; one whose record is
     * written re-seals the masks under the new key, and they still open */
    uint8_t new_key[STORE_KEY_BYTES];
    randombytes_buf(new_key, sizeof new_key);
    store_rekey_counts_t counts, seen_counts = {0, 0};
    int refuse = 1;
    assert_int_equal(store_rekey_recorded(f->store, new_key, &counts, rekey_record, &refuse), -1);
    assert_int_equal(counts.mailbox_rows, 0);
    ref_seen_t still = {.n = 0};
    assert_int_equal(store_mailbox_scan(f->store, POLITIE, 0, 10, collect_ref, &still), 4);
    refuse = 0;
    rekey_record_seen = &seen_counts;
    assert_int_equal(store_rekey_recorded(f->store, new_key, &counts, rekey_record, &refuse), 0);
    rekey_record_seen = NULL;
    assert_int_equal(seen_counts.mailbox_rows, counts.mailbox_rows);
    assert_true(counts.mailbox_rows >= 4);
    ref_seen_t after = {.n = 0};
    assert_int_equal(store_mailbox_scan(f->store, POLITIE, 0, 10, collect_ref, &after), 4);
    assert_int_equal(after.fields, masks[3]);
    sodium_memzero(new_key, sizeof new_key);

    /* a signal's row turned into a case's (its masks read as a case body)
     * no longer authenticates */
    char case_id[SCHAKEL_CASE_ID_LEN + 1], sql[160];
    case_new(f->store, case_id);
    snprintf(sql, sizeof sql, "UPDATE mailbox SET case_id = '%s' WHERE first_seq = %lld", case_id,
             (long long)seqs[2]);
    store_fixture_raw_exec(f->path, sql);
    ref_seen_t bad = {.n = 0};
    assert_int_equal(store_mailbox_scan(f->store, POLITIE, (uint64_t)seqs[1], 1, collect_ref, &bad),
                     -1);
    assert_int_equal(bad.n, 0);
    assert_non_null(strstr(store_errmsg(f->store), "does not authenticate"));
}

/* Retention: each item ends at the latest expiry of its deliveries, each
 * publish at the latest of its items', however the deliveries of several
 * items and publishes follow one another, across transactions, and after
 * a rollback (the store raises a publish once per transaction where it
 * can; what that must not change is the result). The expected values are
 * the maximum over what was committed, computed here. */
enum { RT_ITEMS = 5, RT_STEPS = 12 };

typedef struct retention_step {
    int txn;       /* 0: no transaction (autocommit); else the transaction's number */
    int rollback;  /* this transaction is rolled back after its steps */
    int item;      /* 0..2 of publish A, 3..4 of publish B */
    int64_t later; /* expires_at = the publish's accepted_at + later */
} retention_step_t;

static void check_retention_rows(fixture_t *f, const retention_step_t *steps, size_t n,
                                 unsigned base, const char *what)
{
    static const int publish_of[RT_ITEMS] = {0, 0, 0, 1, 1};
    static const uint32_t index_of[RT_ITEMS] = {0, 1, 2, 0, 1};
    /* Two senders, one message id: a publish is the pair. */
    static const char *const sender[2] = {WOCO, GEMEENTE};
    static const char *const partner[2] = {"woco-servatius", "gemeente"};
    int64_t accepted_at[2] = {1700000000 + base, 1700000000 + base + 1};
    int64_t publish_id[2], item_seq[RT_ITEMS];
    assert_int_equal(store_begin(f->store), 0);
    for (int p = 0; p < 2; p++) {
        publish_id[p] = publish(f->store, sender[p], base, accepted_at[p]);
        assert_true(publish_id[p] > 0);
    }
    for (int i = 0; i < RT_ITEMS; i++) {
        item_seq[i] = item(f->store, publish_id[publish_of[i]], index_of[i]);
        assert_true(item_seq[i] > 0);
    }
    assert_int_equal(store_commit(f->store), 0);
    char sql[128];
    int64_t want_item[RT_ITEMS], want_publish[2];
    for (int i = 0; i < RT_ITEMS; i++) {
        snprintf(sql, sizeof sql, "SELECT expires_at FROM items WHERE seq = %lld",
                 (long long)item_seq[i]);
        want_item[i] = raw_int(f->path, sql);
    }
    for (int p = 0; p < 2; p++) {
        snprintf(sql, sizeof sql, "SELECT expires_at FROM publishes WHERE id = %lld",
                 (long long)publish_id[p]);
        want_publish[p] = raw_int(f->path, sql);
    }
    for (size_t k = 0; k < n; k++) {
        const retention_step_t *st = &steps[k];
        int first = k == 0 || steps[k - 1].txn != st->txn || st->txn == 0;
        int last = k + 1 == n || steps[k + 1].txn != st->txn || st->txn == 0;
        if (first && st->txn != 0)
            assert_int_equal(store_begin(f->store), 0);
        int p = publish_of[st->item];
        delivery_spec_t spec;
        delivery_spec(&spec, k % 2 ? POLITIE : RIEC, sender[p], partner[p], base, accepted_at[p],
                      item_seq[st->item], index_of[st->item]);
        spec.d.expires_at = accepted_at[p] + st->later;
        if (store_delivery_add(f->store, &spec.d) <= 0)
            fail_msg("%s, step %zu: %s", what, k, store_errmsg(f->store));
        if (last && st->txn != 0)
            assert_int_equal(st->rollback ? store_rollback(f->store) : store_commit(f->store), 0);
        if (st->rollback)
            continue; /* what was rolled back raises nothing */
        if (spec.d.expires_at > want_item[st->item])
            want_item[st->item] = spec.d.expires_at;
        if (spec.d.expires_at > want_publish[p])
            want_publish[p] = spec.d.expires_at;
    }
    for (int i = 0; i < RT_ITEMS; i++) {
        snprintf(sql, sizeof sql, "SELECT expires_at FROM items WHERE seq = %lld",
                 (long long)item_seq[i]);
        int64_t got = raw_int(f->path, sql);
        if (got != want_item[i])
            fail_msg("%s: item %d ends at %lld, want %lld", what, i, (long long)got,
                     (long long)want_item[i]);
    }
    for (int p = 0; p < 2; p++) {
        snprintf(sql, sizeof sql, "SELECT expires_at FROM publishes WHERE id = %lld",
                 (long long)publish_id[p]);
        int64_t got = raw_int(f->path, sql);
        if (got != want_publish[p])
            fail_msg("%s: publish %c ends at %lld, want %lld", what, "AB"[p], (long long)got,
                     (long long)want_publish[p]);
    }
}

static void test_retention_raised_per_item_and_publish(void **state)
{
    fixture_t *f = *state;
    static const struct {
        const char *what;
        retention_step_t steps[RT_STEPS];
        size_t n;
    } rows[] = {
        {"one transaction, rising and falling",
         {{1, 0, 0, 300},
          {1, 0, 0, 500},
          {1, 0, 1, 200},
          {1, 0, 2, 400},
          {1, 0, 3, 100},
          {1, 0, 1, 600},
          {1, 0, 4, 700},
          {1, 0, 2, 50}},
         8},
        {"publishes interleaved",
         {{1, 0, 0, 100}, {1, 0, 3, 900}, {1, 0, 1, 200}, {1, 0, 4, 50}, {1, 0, 2, 300}},
         5},
        {"a later transaction, lower then higher",
         {{1, 0, 0, 800}, {2, 0, 1, 300}, {2, 0, 2, 900}, {3, 0, 0, 100}},
         4},
        {"after a rollback",
         {{1, 1, 0, 900},
          {1, 1, 1, 950},
          {2, 0, 1, 400},
          {2, 0, 2, 300},
          {3, 1, 3, 800},
          {4, 0, 4, 200}},
         6},
        {"without a transaction",
         {{0, 0, 0, 300}, {0, 0, 1, 200}, {0, 0, 2, 500}, {0, 0, 3, 100}, {0, 0, 0, 50}},
         5},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++)
        check_retention_rows(f, rows[r].steps, rows[r].n, 700 + 10 * (unsigned)r, rows[r].what);
}

/* The scan's hint (store_mailbox_scan_hinted): an item the caller says it
 * has comes without its body, everything else as before; the delivery's
 * own sealed mask is still checked, and a row whose item is gone is still
 * an error. */
typedef struct hint_state {
    int64_t have[4]; /* item seqs the caller "has"; 0 ends the list */
    size_t asked;    /* have_item calls */
    size_t n;        /* rows seen */
    uint64_t item_seq[8];
    int body_null[8];
    uint32_t fields[8];
    char text[8][32];
} hint_state_t;

static int hint_have(uint64_t item_seq, void *arg)
{
    hint_state_t *h = arg;
    h->asked++;
    for (size_t i = 0; i < 4 && h->have[i] != 0; i++)
        if ((uint64_t)h->have[i] == item_seq)
            return 1;
    return 0;
}

static int hint_collect(const store_delivery_t *d, void *arg)
{
    hint_state_t *h = arg;
    assert_true(h->n < 8);
    h->item_seq[h->n] = d->item_seq;
    h->body_null[h->n] = d->body == NULL;
    h->fields[h->n] = d->fields;
    if (d->body != NULL) {
        assert_true(d->body_len < sizeof h->text[0]);
        memcpy(h->text[h->n], d->body, d->body_len);
        h->text[h->n][d->body_len] = '\0';
    } else {
        assert_int_equal(d->body_len, 0);
        h->text[h->n][0] = '\0';
    }
    h->n++;
    return 0;
}

static int64_t item_of_delivery(const char *path, int64_t seq)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT first_item_seq FROM mailbox WHERE first_seq = %lld AND n = 1",
             (long long)seq);
    return raw_int(path, sql);
}

static void test_scan_hint_skips_only_items_the_caller_has(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(store_begin(f->store), 0);
    int64_t first = deliver_ref(f->store, POLITIE, 600, "first item", 0x11, NULL);
    int64_t second = deliver_ref(f->store, POLITIE, 601, "second item", 0x22, NULL);
    /* a case's delivery carries its own content: never by reference */
    char case_id[SCHAKEL_CASE_ID_LEN + 1];
    case_new(f->store, case_id);
    int64_t plain = deliver_case(f->store, POLITIE, 602, case_id, "plain body");
    assert_true(first > 0 && second > 0 && plain > 0);
    assert_int_equal(store_commit(f->store), 0);
    int64_t item_first = item_of_delivery(f->path, first);
    int64_t item_second = item_of_delivery(f->path, second);
    static const struct {
        int have_first, have_second, no_callback;
    } rows[] = {{0, 0, 0}, {1, 0, 0}, {0, 1, 0}, {1, 1, 0}, {0, 0, 1}};
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        hint_state_t h = {.n = 0};
        size_t k = 0;
        if (rows[r].have_first)
            h.have[k++] = item_first;
        if (rows[r].have_second)
            h.have[k++] = item_second;
        int visited = store_mailbox_scan_hinted(
            f->store, POLITIE, 0, 10, rows[r].no_callback ? NULL : hint_have, hint_collect, &h);
        assert_int_equal(visited, 3);
        /* asked about each delivery by reference, never about a plain one */
        assert_int_equal(h.asked, rows[r].no_callback ? 0 : 2);
        assert_int_equal(h.body_null[0], rows[r].have_first);
        assert_int_equal(h.body_null[1], rows[r].have_second);
        assert_int_equal(h.body_null[2], 0);
        assert_string_equal(h.text[0], rows[r].have_first ? "" : "first item");
        assert_string_equal(h.text[1], rows[r].have_second ? "" : "second item");
        assert_string_equal(h.text[2], "plain body");
        assert_int_equal(h.fields[0], 0x11); /* the mask is opened either way */
        assert_int_equal(h.fields[1], 0x22);
        assert_int_equal(h.item_seq[0], (uint64_t)item_first);
        assert_int_equal(h.item_seq[1], (uint64_t)item_second);
    }

    /* the delivery's own sealed mask still authenticates, hint or not */
    raw_flip_body_byte(f->path, first, 30);
    hint_state_t tampered = {.have = {item_first, item_second}};
    assert_int_equal(
        store_mailbox_scan_hinted(f->store, POLITIE, 0, 10, hint_have, hint_collect, &tampered),
        -1);
    assert_int_equal(tampered.n, 0);
    assert_non_null(strstr(store_errmsg(f->store), "does not authenticate"));

    /* a row whose item is gone is an error when the caller does not have
     * it (one the caller has is not read: the rows' scan looks an item up
     * only for its bytes) */
    char sql[128];
    snprintf(sql, sizeof sql, "DELETE FROM items WHERE seq = %lld", (long long)item_second);
    store_fixture_raw_exec(f->path, sql);
    hint_state_t gone = {.have = {item_first}};
    assert_int_equal(store_mailbox_scan_hinted(f->store, POLITIE, (uint64_t)first, 10, hint_have,
                                               hint_collect, &gone),
                     -1);
    assert_int_equal(gone.n, 0);
    assert_non_null(strstr(store_errmsg(f->store), "item is gone"));
}

/* The scan's vouch (store_mailbox_scan_vouched): a row the caller vouches
 * for is neither opened nor its item read, and comes with the mask the
 * caller gives; the caller is asked only about deliveries by reference,
 * with the row's own columns; a row it does not vouch for is opened and
 * authenticated as always. */
typedef struct vouch_state {
    hint_state_t h;
    int64_t vouch_seq; /* the row vouched for; 0: none */
    uint32_t mask;     /* the mask given for it */
    size_t asked;
    char recipient[64]; /* of the last row asked about */
} vouch_state_t;

static int vouch_have(uint64_t item_seq, void *arg)
{
    return hint_have(item_seq, &((vouch_state_t *)arg)->h);
}

static int vouch_collect(const store_delivery_t *d, void *arg)
{
    return hint_collect(d, &((vouch_state_t *)arg)->h);
}

static int vouch_for(const store_delivery_t *d, uint32_t *fields, void *arg)
{
    vouch_state_t *v = arg;
    v->asked++;
    assert_true(d->by_ref);
    assert_null(d->body);
    snprintf(v->recipient, sizeof v->recipient, "%s", d->recipient);
    if (v->vouch_seq == 0 || d->seq != (uint64_t)v->vouch_seq)
        return 0;
    *fields = v->mask;
    return 1;
}

static void test_scan_vouch_skips_only_rows_vouched_for(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(store_begin(f->store), 0);
    int64_t first = deliver_ref(f->store, POLITIE, 610, "first item", 0x11, NULL);
    int64_t second = deliver_ref(f->store, POLITIE, 611, "second item", 0x22, NULL);
    /* a case's delivery carries its own content: never by reference */
    char case_id[SCHAKEL_CASE_ID_LEN + 1];
    case_new(f->store, case_id);
    int64_t plain = deliver_case(f->store, POLITIE, 612, case_id, "plain body");
    assert_true(first > 0 && second > 0 && plain > 0);
    assert_int_equal(store_commit(f->store), 0);

    /* vouched for none: as the hinted scan */
    vouch_state_t none = {.vouch_seq = 0};
    store_scan_hints_t hints = {.have_item = vouch_have, .vouch = vouch_for};
    assert_int_equal(
        store_mailbox_scan_vouched(f->store, POLITIE, 0, 10, &hints, vouch_collect, &none), 3);
    assert_int_equal(none.asked, 2);
    assert_string_equal(none.recipient, POLITIE);
    assert_int_equal(none.h.asked, 2);
    assert_string_equal(none.h.text[0], "first item");
    assert_int_equal(none.h.fields[0], 0x11);
    assert_int_equal(none.h.fields[1], 0x22);
    assert_string_equal(none.h.text[2], "plain body");

    /* the first vouched for: its mask is the caller's, nothing opened, its
     * item neither read nor asked about */
    vouch_state_t one = {.vouch_seq = first, .mask = 0x33};
    assert_int_equal(
        store_mailbox_scan_vouched(f->store, POLITIE, 0, 10, &hints, vouch_collect, &one), 3);
    assert_int_equal(one.asked, 2);
    assert_int_equal(one.h.asked, 1); /* the second's item only */
    assert_int_equal(one.h.body_null[0], 1);
    assert_int_equal(one.h.fields[0], 0x33);
    assert_string_equal(one.h.text[1], "second item");
    assert_int_equal(one.h.fields[1], 0x22);

    /* its sealed mask altered: the row vouched for is not opened, the others are */
    raw_flip_body_byte(f->path, first, 30);
    vouch_state_t still = {.vouch_seq = first, .mask = 0x33};
    assert_int_equal(
        store_mailbox_scan_vouched(f->store, POLITIE, 0, 10, &hints, vouch_collect, &still), 3);
    assert_int_equal(still.h.fields[0], 0x33);
    vouch_state_t other = {.vouch_seq = second, .mask = 0x22};
    assert_int_equal(
        store_mailbox_scan_vouched(f->store, POLITIE, 0, 10, &hints, vouch_collect, &other), -1);
    assert_int_equal(other.h.n, 0);
    assert_non_null(strstr(store_errmsg(f->store), "does not authenticate"));
    assert_int_equal(store_scan_unreadable(f->store), (uint64_t)first);
    vouch_state_t no_hints = {.vouch_seq = first};
    assert_int_equal(
        store_mailbox_scan_vouched(f->store, POLITIE, 0, 10, NULL, vouch_collect, &no_hints), -1);
    assert_int_equal(no_hints.asked, 0);
}

typedef struct set_aside_expired {
    uint64_t seq[4];
    int set_aside[4];
    size_t n;
} set_aside_expired_t;

static void collect_set_aside_expired(const store_expired_t *e, void *arg)
{
    set_aside_expired_t *seen = arg;
    if (seen->n < 4) {
        seen->seq[seen->n] = e->seq;
        seen->set_aside[seen->n] = e->set_aside;
    }
    seen->n++;
}

/* An item whose sealed content no longer opens: each delivery by
 * reference to it is set aside as its recipient's scan reaches it (the
 * recipient's later deliveries read on); the item stays while a row set
 * aside names it, even past its own expiry; the rows go at their
 * expires_at with tombstones (fn told set_aside), and the item after
 * them. */
static void test_unreadable_item_is_set_aside_and_expires(void **state)
{
    fixture_t *f = *state;
    const char *riec = "riec/analist";
    assert_int_equal(store_begin(f->store), 0);
    int64_t first = deliver_ref(f->store, POLITIE, 720, "shared item", 0x3, NULL);
    assert_int_equal(store_commit(f->store), 0);
    int64_t item_seq = item_of_delivery(f->path, first);
    delivery_spec_t spec;
    delivery_spec(&spec, riec, WOCO, "woco-servatius", 720, 1700000720, item_seq, 0);
    spec.d.by_ref = 1;
    spec.d.fields = 0x1;
    assert_int_equal(store_begin(f->store), 0);
    int64_t second = store_delivery_add(f->store, &spec.d);
    int64_t later =
        deliver_bytes(f->store, POLITIE, 721, "later item", BODY_MASK, 1800000000, NULL);
    assert_true(second > 0 && later > 0);
    assert_int_equal(store_commit(f->store), 0);
    char sql[192];
    snprintf(sql, sizeof sql,
             "UPDATE items SET body = substr(body, 1, length(body) - 1) WHERE seq = %lld",
             (long long)item_seq);
    store_fixture_raw_exec(f->path, sql);

    const struct {
        const char *recipient;
        int64_t seq;
        int after; /* rows the scan reads once it is set aside */
    } rows[] = {{POLITIE, first, 1}, {riec, second, 0}};
    for (size_t i = 0; i < 2; i++) {
        body_seen_t seen = {.n = 0};
        assert_int_equal(
            store_mailbox_scan(f->store, rows[i].recipient, 0, 10, collect_body, &seen), -1);
        assert_int_equal(store_scan_unreadable(f->store), (uint64_t)rows[i].seq);
        store_set_aside_t x;
        assert_int_equal(store_begin(f->store), 0);
        assert_int_equal(
            set_aside(f->store, rows[i].recipient, (uint64_t)rows[i].seq, SET_ASIDE_AT, &x), 1);
        assert_int_equal(store_commit(f->store), 0);
        if (strstr(x.reason, "body of item does not authenticate") == NULL)
            fail_msg("row %zu: reason %s", i, x.reason);
        assert_int_equal(x.row.view.item_seq, (uint64_t)item_seq);
        assert_int_equal(
            store_mailbox_scan(f->store, rows[i].recipient, 0, 10, collect_body, &seen),
            rows[i].after);
        if (rows[i].after)
            assert_string_equal(seen.text, "later item");
    }
    assert_int_equal(store_set_aside_count(f->store), 2);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM items WHERE seq = %lld", (long long)item_seq);
    assert_int_equal(raw_int(f->path, sql), 1);

    /* due itself, the item stays while the rows set aside name it */
    snprintf(sql, sizeof sql, "UPDATE items SET expires_at = 1 WHERE seq = %lld",
             (long long)item_seq);
    store_fixture_raw_exec(f->path, sql);
    set_aside_expired_t told = {.n = 0};
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_expire(f->store, 1000, 10, collect_set_aside_expired, &told), 0);
    assert_int_equal(store_commit(f->store), 0);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM items WHERE seq = %lld", (long long)item_seq);
    assert_int_equal(raw_int(f->path, sql), 1);

    /* at their own expires_at: tombstones, fn told, the item after them */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(
        store_expire(f->store, spec.d.expires_at, 10, collect_set_aside_expired, &told),
        4); /* two rows set aside, their item and its publish */
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(told.n, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(told.seq[i], (uint64_t)rows[i].seq);
        assert_true(told.set_aside[i]);
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM tombstones WHERE seq = %lld AND recipient = '%s'"
                 " AND expired_at = %lld",
                 (long long)rows[i].seq, rows[i].recipient, (long long)spec.d.expires_at);
        assert_int_equal(raw_int(f->path, sql), 1);
    }
    assert_int_equal(store_set_aside_count(f->store), 0);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM items WHERE seq = %lld", (long long)item_seq);
    assert_int_equal(raw_int(f->path, sql), 0);
    assert_int_equal(store_mailbox_count(f->store, POLITIE), 1); /* the later one waits on */
}

static void test_wrong_key_refused_at_open(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(store_begin(f->store), 0);
    int64_t seq = deliver_bytes(f->store, POLITIE, 1, "item", BODY_MASK, 1800000000, NULL);
    assert_int_equal(store_commit(f->store), 0);
    store_close(&f->store);

    uint8_t other[STORE_KEY_BYTES], one_bit[STORE_KEY_BYTES];
    randombytes_buf(other, sizeof other);
    memcpy(one_bit, test_key, sizeof one_bit);
    one_bit[31] ^= 0x80;
    static const struct {
        int which; /* 0 the right key, 1 another key, 2 one bit off */
        int opens;
    } rows[] = {{1, 0}, {2, 0}, {0, 1}, {1, 0}, {0, 1}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const uint8_t *key = rows[i].which == 0 ? test_key : rows[i].which == 1 ? other : one_bit;
        char err[512] = "";
        store_t *store = open_with(f->path, key, err, sizeof err);
        if ((store != NULL) != rows[i].opens)
            fail_msg("row %zu: open %s (%s)", i, store ? "succeeded" : "failed", err);
        if (store == NULL) {
            assert_non_null(strstr(err, "the store key does not open this store"));
            continue;
        }
        /* A refused key changed nothing: the data is all there. */
        body_seen_t seen = {.n = 0};
        assert_int_equal(store_mailbox_scan(store, POLITIE, 0, 10, collect_body, &seen), 1);
        assert_string_equal(seen.text, "item");
        assert_int_equal(seen.fields, BODY_MASK);
        assert_int_equal(store_delivery_last_seq(store), seq);
        store_close(&store);
    }
    f->store = store_fixture_open(f->path, test_key);
}

/* ------------------------------------------------------------------ retention */

#define NOW 1750000000LL

/* A row damaged in a column no broker writes so (a body that is an empty
 * text, an integer column holding a text or a real) is set aside as one
 * that does not authenticate, not a failure of the scan. Its expires_at
 * may be the damage itself: the row set aside keeps it only as far as its
 * item's retention (the longest of its deliveries') and the longest a
 * policy may set from now, and one that is no integer is due at once. */
static void test_damaged_rows_set_aside_with_a_bounded_retention(void **state)
{
    fixture_t *f = *state;
    const int64_t until = 1800000000, far = 9000000000LL;
    static const struct {
        const char *set;    /* the delivery's columns, altered */
        int item_far;       /* its item's and publish's expires_at altered to far as well */
        const char *reason; /* part of the reason */
        int64_t kept;       /* the expires_at set aside: 0 until, 1 set_aside_at, 2 the cap */
    } rows[] = {
        {"body = ''", 0, "is missing", 0},
        {"body = 42", 0, "does not authenticate", 0},
        {"items = 'x'", 0, "damaged row", 0},
        {"accepted_at = 1700000000.5", 0, "damaged row", 0},
        /* expires_at is not bound (it follows acks and expiry), but one
         * later than the row's deliveries' own, or no integer, would hide
         * the row from the sweep: damage, whatever else was altered */
        {"expires_at = 9000000000, sender = 'woco-servatius/ander'", 0, "damaged row", 0},
        {"expires_at = 9000000000, sender = 'woco-servatius/ander'", 1, "damaged row", 2},
        {"expires_at = 'never', sender = 'woco-servatius/ander'", 0, "damaged row", 1},
        {"expires_at = x'00', sender = 'woco-servatius/ander'", 0, "damaged row", 1},
        {"expires_at = 1800000000.5, sender = 'woco-servatius/ander'", 0, "damaged row", 1},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char who[64], sql[256];
        int64_t item_seq = 0;
        snprintf(who, sizeof who, "politie/beschadigd-%zu", i);
        assert_int_equal(store_begin(f->store), 0);
        int64_t seq =
            deliver_bytes(f->store, who, 300 + (unsigned)i, "item", BODY_MASK, until, &item_seq);
        assert_int_equal(store_commit(f->store), 0);
        snprintf(sql, sizeof sql, "UPDATE mailbox SET %s WHERE first_seq = %lld", rows[i].set,
                 (long long)seq);
        sqlite3 *db = store_fixture_raw_open(f->path);
        store_fixture_db_exec(db, "PRAGMA ignore_check_constraints = ON");
        store_fixture_db_exec(db, sql);
        assert_int_equal(sqlite3_close(db), SQLITE_OK);
        if (rows[i].item_far) {
            snprintf(sql, sizeof sql,
                     "UPDATE items SET expires_at = %lld WHERE seq = %lld;"
                     "UPDATE publishes SET expires_at = %lld"
                     " WHERE id = (SELECT publish_id FROM items WHERE seq = %lld)",
                     (long long)far, (long long)item_seq, (long long)far, (long long)item_seq);
            store_fixture_raw_exec(f->path, sql);
        }
        body_seen_t seen = {.n = 0};
        if (store_mailbox_scan(f->store, who, 0, 10, collect_body, &seen) != -1 ||
            store_scan_unreadable(f->store) != (uint64_t)seq)
            fail_msg("row %zu (%s): the scan did not name the row: %s", i, rows[i].set,
                     store_errmsg(f->store));
        store_set_aside_t x;
        assert_int_equal(store_begin(f->store), 0);
        assert_int_equal(set_aside(f->store, who, (uint64_t)seq, SET_ASIDE_AT, &x), 1);
        assert_int_equal(store_commit(f->store), 0);
        if (strstr(x.reason, rows[i].reason) == NULL)
            fail_msg("row %zu (%s): reason %s", i, rows[i].set, x.reason);
        int64_t kept = rows[i].kept == 0   ? until
                       : rows[i].kept == 1 ? SET_ASIDE_AT
                                           : SET_ASIDE_AT + SCHAKEL_MAX_RETENTION_S;
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM mailbox_set_aside WHERE first_seq = %lld"
                 " AND typeof(expires_at) = 'integer' AND expires_at = %lld",
                 (long long)seq, (long long)kept);
        if (raw_int(f->path, sql) != 1)
            fail_msg("row %zu (%s): not kept until %lld", i, rows[i].set, (long long)kept);
        assert_int_equal(x.row.view.expires_at, kept);
    }
}

/* The set-aside table keeps no types: an expires_at altered there into no
 * integer in range (NULL, a text, a blob, a real past any integer) is due
 * at once, with a tombstone saying now; the others wait. */
static void test_set_aside_expiry_that_is_no_number_is_due(void **state)
{
    fixture_t *f = *state;
    static const char *const values[] = {"NULL", "'never'", "x'01'", "1e300", "1800000000"};
    enum { VALUES = sizeof values / sizeof values[0] };
    int64_t seq[VALUES];
    for (size_t i = 0; i < VALUES; i++) {
        char who[64], sql[512];
        snprintf(who, sizeof who, "politie/geen-getal-%zu", i);
        assert_int_equal(store_begin(f->store), 0);
        seq[i] =
            deliver_bytes(f->store, who, 400 + (unsigned)i, "item", BODY_MASK, 1800000000, NULL);
        assert_int_equal(store_commit(f->store), 0);
        snprintf(sql, sizeof sql,
                 "INSERT INTO mailbox_set_aside SELECT *, %lld, 'by hand' FROM mailbox"
                 " WHERE first_seq = %lld; DELETE FROM mailbox WHERE first_seq = %lld;"
                 "UPDATE mailbox_set_aside SET expires_at = %s WHERE first_seq = %lld",
                 (long long)SET_ASIDE_AT, (long long)seq[i], (long long)seq[i], values[i],
                 (long long)seq[i]);
        store_fixture_raw_exec(f->path, sql);
    }
    set_aside_expired_t told = {.n = 0};
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_expire(f->store, NOW, 100, collect_set_aside_expired, &told),
                     VALUES - 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(told.n, VALUES - 1);
    for (size_t i = 0; i < VALUES; i++) {
        char sql[160];
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM tombstones WHERE seq = %lld AND expires_at = %lld",
                 (long long)seq[i], (long long)NOW);
        assert_int_equal(raw_int(f->path, sql), i < VALUES - 1 ? 1 : 0);
    }
    assert_int_equal(store_set_aside_count(f->store), 1);
}

typedef struct twice_seen {
    uint64_t seq[4];
    int before[4];
    size_t n;
} twice_seen_t;

static void collect_twice(const store_expired_t *e, void *arg)
{
    twice_seen_t *seen = arg;
    if (seen->n < 4) {
        seen->seq[seen->n] = e->seq;
        seen->before[seen->n] = e->tombstoned_before;
    }
    seen->n++;
}

/* A delivery whose seq has a tombstone already (one put back from a
 * backup after it had expired, waiting or set aside) expires all the
 * same: the first tombstone is kept, none is added, fn is told so, and
 * the rest of the sweep goes on; it never fails every sweep after it. */
static void test_expiry_of_a_seq_with_a_tombstone(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(store_begin(f->store), 0);
    int64_t again = deliver_bytes(f->store, POLITIE, 500, "item", BODY_MASK, NOW - 30, NULL);
    int64_t aside = deliver_bytes(f->store, "riec/analist", 501, "item", BODY_MASK, NOW - 20, NULL);
    int64_t plain = deliver_bytes(f->store, POLITIE, 502, "item", BODY_MASK, NOW - 10, NULL);
    assert_int_equal(store_commit(f->store), 0);
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO tombstones SELECT first_seq, 'the first', first_item_seq,"
             " 'woco-ondermijning', '9f2c0d4e', expires_at, 1 FROM mailbox"
             " WHERE first_seq IN (%lld, %lld);"
             "INSERT INTO mailbox_set_aside SELECT *, 1, 'by hand' FROM mailbox"
             " WHERE first_seq = %lld; DELETE FROM mailbox WHERE first_seq = %lld",
             (long long)again, (long long)aside, (long long)aside, (long long)aside);
    store_fixture_raw_exec(f->path, sql);
    twice_seen_t seen = {.n = 0};
    assert_int_equal(store_begin(f->store), 0);
    assert_true(store_expire(f->store, NOW, 100, collect_twice, &seen) >= 3);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(seen.n, 3);
    const int64_t order[] = {again, plain, aside}; /* waiting ones first */
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(seen.seq[i], (uint64_t)order[i]);
        assert_int_equal(seen.before[i], order[i] != plain);
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM tombstones WHERE seq = %lld AND recipient %s 'the first'",
                 (long long)order[i], order[i] != plain ? "=" : "<>");
        assert_int_equal(raw_int(f->path, sql), 1);
    }
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM mailbox"), 0);
    assert_int_equal(store_set_aside_count(f->store), 0);
}

typedef struct expired_seen {
    uint64_t seq[MAX_SEEN];
    int64_t expires_at[MAX_SEEN];
    char recipient[MAX_SEEN][64];
    size_t n;
} expired_seen_t;

static void collect_expired(const store_expired_t *e, void *arg)
{
    expired_seen_t *seen = arg;
    assert_string_equal(e->rule_id, "woco-ondermijning");
    assert_string_equal(e->rule_hash, "9f2c0d4e");
    if (seen->n < MAX_SEEN) {
        seen->seq[seen->n] = e->seq;
        seen->expires_at[seen->n] = e->expires_at;
        snprintf(seen->recipient[seen->n], sizeof seen->recipient[0], "%s", e->recipient);
    }
    seen->n++;
}

static void test_expire_removes_due_deliveries_with_tombstones(void **state)
{
    fixture_t *f = *state;
    static const struct {
        const char *recipient;
        int64_t expires_at;
        int due;
    } rows[] = {
        {POLITIE, NOW - 3600, 1},
        {RIEC, NOW, 1}, /* due at its second */
        {POLITIE, NOW + 1, 0},
        {"om/nooit-terug", NOW - 86400, 1}, /* a partner that never came back */
        {RIEC, NOW + 365 * 86400LL, 0},
    };
    enum { N = sizeof rows / sizeof rows[0] };
    int64_t seqs[N];
    assert_int_equal(store_begin(f->store), 0);
    for (size_t i = 0; i < N; i++)
        seqs[i] = deliver_bytes(f->store, rows[i].recipient, 1 + (unsigned)i, "item", BODY_MASK,
                                rows[i].expires_at, NULL);
    assert_int_equal(store_commit(f->store), 0);

    /* Rows that must fail or do nothing: no transaction, limit 0. */
    assert_int_equal(store_expire(f->store, NOW, 10, collect_expired, NULL), -1);
    assert_non_null(strstr(store_errmsg(f->store), "transaction"));
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_expire(f->store, NOW, 0, NULL, NULL), 0);

    expired_seen_t seen = {.n = 0};
    int removed = store_expire(f->store, NOW, 10, collect_expired, &seen);
    assert_int_equal(store_commit(f->store), 0);
    size_t due = 0;
    for (size_t i = 0; i < N; i++)
        due += (size_t)rows[i].due;
    assert_int_equal(seen.n, due);
    /* Each due delivery, its item and its publish (one of each per row). */
    assert_int_equal(removed, 3 * (int)due);
    for (size_t i = 0; i < N; i++) {
        int told = 0;
        for (size_t k = 0; k < seen.n; k++)
            if (seen.seq[k] == (uint64_t)seqs[i]) {
                told = 1;
                assert_int_equal(seen.expires_at[k], rows[i].expires_at);
                assert_string_equal(seen.recipient[k], rows[i].recipient);
            }
        char sql[128];
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM tombstones WHERE seq = %lld"
                 " AND expired_at = %lld",
                 (long long)seqs[i], NOW);
        int64_t tombstones = raw_int(f->path, sql);
        snprintf(sql, sizeof sql, "SELECT count(*) FROM mailbox WHERE first_seq = %lld",
                 (long long)seqs[i]);
        int64_t left = raw_int(f->path, sql);
        if (told != rows[i].due || tombstones != rows[i].due || left != !rows[i].due)
            fail_msg("row %zu: told %d, tombstones %lld, left %lld", i, told, (long long)tombstones,
                     (long long)left);
    }
    /* A tombstone holds no content, and the mailboxes agree. */
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM pragma_table_info('tombstones')"
                                      " WHERE name = 'body'"),
                     0);
    assert_int_equal(store_mailbox_count(f->store, POLITIE), 1);
    assert_int_equal(store_mailbox_count(f->store, RIEC), 1);
    assert_int_equal(store_mailbox_count(f->store, "om/nooit-terug"), 0);
    /* Nothing more is due now. */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_expire(f->store, NOW, 10, collect_expired, &seen), 0);
    assert_int_equal(store_commit(f->store), 0);
}

static void test_expire_items_and_publishes_once_unreferenced(void **state)
{
    fixture_t *f = *state;
    const int64_t accepted_at = NOW - 1000;
    const int64_t t1 = NOW, t2 = NOW + 1000;
    /* Publish 1: item 0 to politie (t1) and riec (t2), item 1 to nobody.
     * Publish 2: one item to politie (t1), acked at once. */
    assert_int_equal(store_begin(f->store), 0);
    int64_t p1 = publish(f->store, WOCO, 1, accepted_at);
    int64_t a = item(f->store, p1, 0), b = item(f->store, p1, 1);
    int64_t p2 = publish(f->store, WOCO, 2, accepted_at);
    int64_t c = item(f->store, p2, 0);
    assert_true(a > 0 && b > 0 && c > 0);
    struct {
        const char *to;
        int64_t item_seq;
        unsigned n;
        int64_t expires_at;
    } plan[] = {{POLITIE, a, 1, t1}, {RIEC, a, 1, t2}, {POLITIE, c, 2, t1}};
    int64_t acked = 0;
    for (size_t i = 0; i < 3; i++) {
        delivery_spec_t spec;
        delivery_spec(&spec, plan[i].to, WOCO, "woco-servatius", plan[i].n, accepted_at,
                      plan[i].item_seq, 0);
        spec.d.expires_at = plan[i].expires_at;
        acked = store_delivery_add(f->store, &spec.d);
        assert_true(acked > 0);
    }
    assert_int_equal(store_delivery_ack(f->store, POLITIE, (uint64_t)acked), 1);
    assert_int_equal(store_commit(f->store), 0);

    static const struct {
        const char *setup_sql; /* raw change before the sweep, or NULL */
        int64_t now;
        int64_t deliveries, items, publishes, tombstones; /* left afterwards */
        int p1_known, p2_known;
    } rows[] = {
        /* before anything is due */
        {NULL, NOW - 1001, 2, 3, 2, 0, 1, 1},
        /* item 1 (nobody's) is due at accepted_at */
        {NULL, NOW - 1000, 2, 2, 2, 0, 1, 1},
        /* politie's copy of item 0 expires; publish 2's item and publish go */
        {NULL, NOW, 1, 1, 1, 1, 1, 0},
        /* item 0 forced due while riec still holds it: kept, no error */
        {"UPDATE items SET expires_at = 0", NOW, 1, 1, 1, 1, 1, 0},
        /* riec's copy expires; then the item, then the publish */
        {NULL, NOW + 1000, 0, 0, 0, 2, 0, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        if (rows[i].setup_sql != NULL)
            store_fixture_raw_exec(f->path, rows[i].setup_sql);
        assert_int_equal(store_begin(f->store), 0);
        if (store_expire(f->store, rows[i].now, 100, NULL, NULL) < 0)
            fail_msg("row %zu: %s", i, store_errmsg(f->store));
        assert_int_equal(store_commit(f->store), 0);
        int64_t got[4] = {raw_int(f->path, "SELECT count(*) FROM mailbox"),
                          raw_int(f->path, "SELECT count(*) FROM items"),
                          raw_int(f->path, "SELECT count(*) FROM publishes"),
                          raw_int(f->path, "SELECT count(*) FROM tombstones")};
        int64_t want[4] = {rows[i].deliveries, rows[i].items, rows[i].publishes,
                           rows[i].tombstones};
        for (int k = 0; k < 4; k++)
            if (got[k] != want[k])
                fail_msg("row %zu: count %d is %lld, want %lld", i, k, (long long)got[k],
                         (long long)want[k]);
        assert_int_equal(publish_known(f->store, WOCO, 1), rows[i].p1_known);
        assert_int_equal(publish_known(f->store, WOCO, 2), rows[i].p2_known);
    }
}

enum removal { REMOVE_BY_EXPIRY, REMOVE_BY_ACK };

/* The first bytes of a sealed body: nonce and ciphertext, unique to it. */
static void sealed_prefix(const char *path, const char *sql, int64_t seq, uint8_t out[40])
{
    uint8_t sealed[512];
    sqlite3 *db = store_fixture_raw_open(path);
    size_t len = raw_blob(db, sql, seq, sealed, sizeof sealed);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_true(len >= 40);
    memcpy(out, sealed, 40);
}

static void test_removed_bodies_gone_from_file(void **state)
{
    fixture_t *f = *state;
    static const struct {
        enum removal how;
    } rows[] = {{REMOVE_BY_EXPIRY}, {REMOVE_BY_ACK}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int64_t item_seq = 0;
        assert_int_equal(store_begin(f->store), 0);
        int64_t seq = deliver_bytes(f->store, POLITIE, 10 + (unsigned)i, marked_item, BODY_MASK,
                                    NOW - 1, &item_seq);
        assert_int_equal(store_commit(f->store), 0);
        uint8_t delivery_bytes[40], item_bytes[40];
        sealed_prefix(f->path, "SELECT body FROM mailbox WHERE first_seq = ?1", seq,
                      delivery_bytes);
        sealed_prefix(f->path, "SELECT body FROM items WHERE seq = ?1", item_seq, item_bytes);
        /* The search finds them while they are stored... */
        assert_true(store_files_contain(f->path, delivery_bytes, sizeof delivery_bytes));
        assert_int_equal(store_checkpoint(f->store), 0);
        assert_true(store_files_contain(f->path, delivery_bytes, sizeof delivery_bytes));
        assert_true(store_files_contain(f->path, item_bytes, sizeof item_bytes));

        assert_int_equal(store_begin(f->store), 0);
        if (rows[i].how == REMOVE_BY_ACK)
            assert_int_equal(store_delivery_ack(f->store, POLITIE, (uint64_t)seq), 1);
        assert_true(store_expire(f->store, NOW, 100, NULL, NULL) > 0);
        assert_int_equal(store_commit(f->store), 0);
        assert_int_equal(store_checkpoint(f->store), 0);
        /* ...and nowhere once removed and checkpointed. */
        char wal[256];
        snprintf(wal, sizeof wal, "%s-wal", f->path);
        assert_int_equal(file_size(wal), 0);
        if (store_files_contain(f->path, delivery_bytes, sizeof delivery_bytes) ||
            store_files_contain(f->path, item_bytes, sizeof item_bytes))
            fail_msg("row %zu: removed ciphertext still in the file", i);
    }
    /* Not inside a transaction. */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_checkpoint(f->store), -1);
    assert_int_equal(store_rollback(f->store), 0);
}

static void test_checkpoint_refusals(void **state)
{
    fixture_t *f = *state;
    enum obstacle { NONE, OWN_TRANSACTION, READER };
    static const struct {
        enum obstacle obstacle;
        int result;
        int unavailable;
    } rows[] = {{NONE, 0, 0}, {OWN_TRANSACTION, -1, 0}, {READER, -1, 1}, {NONE, 0, 0}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        assert_int_equal(store_begin(f->store), 0);
        (void)deliver_new(f->store, POLITIE, 1 + (unsigned)i);
        assert_int_equal(store_commit(f->store), 0);
        sqlite3 *reader = NULL;
        if (rows[i].obstacle == OWN_TRANSACTION)
            assert_int_equal(store_begin(f->store), 0);
        if (rows[i].obstacle == READER) {
            /* An operator's backup holding a read snapshot of the WAL. */
            reader = store_fixture_raw_open(f->path);
            assert_int_equal(
                sqlite3_exec(reader, "BEGIN; SELECT count(*) FROM mailbox;", NULL, NULL, NULL),
                SQLITE_OK);
        }
        int result = store_checkpoint(f->store);
        if (result != rows[i].result ||
            (result != 0 && store_last_error_is_unavailable(f->store) != rows[i].unavailable))
            fail_msg("row %zu: checkpoint gave %d (%s)", i, result, store_errmsg(f->store));
        if (reader != NULL) {
            assert_int_equal(sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
            assert_int_equal(sqlite3_close(reader), SQLITE_OK);
        }
        assert_int_equal(store_rollback(f->store), 0);
    }
}

static void test_expire_bounded_by_limit(void **state)
{
    fixture_t *f = *state;
    enum { N = 10, LIMIT = 3 };
    int64_t seqs[N];
    assert_int_equal(store_begin(f->store), 0);
    /* Inserted in an order unlike their expiry order. */
    for (unsigned i = 0; i < N; i++) {
        unsigned rank = (i * 7) % N;
        seqs[rank] = deliver_bytes(f->store, POLITIE, 1 + i, "item", BODY_MASK,
                                   NOW - 100 + (int64_t)rank, NULL);
    }
    assert_int_equal(store_commit(f->store), 0);

    size_t total = 0, calls = 0;
    for (;;) {
        expired_seen_t seen = {.n = 0};
        assert_int_equal(store_begin(f->store), 0);
        int removed = store_expire(f->store, NOW, LIMIT, collect_expired, &seen);
        assert_int_equal(store_commit(f->store), 0);
        assert_true(removed >= 0 && removed <= 3 * LIMIT);
        assert_true(seen.n <= LIMIT);
        /* Earliest expiry first. */
        for (size_t k = 0; k < seen.n; k++)
            assert_int_equal(seen.seq[k], (uint64_t)seqs[total + k]);
        total += seen.n;
        if (removed == 0)
            break;
        assert_true(++calls <= N); /* it does come to an end */
    }
    assert_int_equal(total, N);
    assert_int_equal(calls, (N + LIMIT - 1) / LIMIT);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM items"), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM publishes"), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM tombstones"), N);
}

static void test_expiry_uses_indexes(void **state)
{
    fixture_t *f = *state;
    static const struct {
        const char *table, *columns;
    } rows[] = {
        {"mailbox", "(expires_at)"},           {"mailbox", "(publish_id)"},
        {"mailbox", "(recipient, first_seq)"}, {"items", "(expires_at)"},
        {"publishes", "(expires_at)"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char sql[256];
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = '%s'"
                 " AND sql LIKE '%%%s'",
                 rows[i].table, rows[i].columns);
        if (raw_int(f->path, sql) != 1)
            fail_msg("row %zu: no index on %s %s", i, rows[i].table, rows[i].columns);
    }
}

typedef struct expire_reentry {
    store_t *store;
    int count_result;
    int expire_result;
} expire_reentry_t;

static void expire_reenter(const store_expired_t *e, void *arg)
{
    expire_reentry_t *r = arg;
    r->count_result = (int)store_mailbox_count(r->store, e->recipient);
    r->expire_result = store_expire(r->store, NOW, 1, NULL, NULL);
}

static void test_expire_callback_cannot_reenter(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(store_begin(f->store), 0);
    (void)deliver_bytes(f->store, POLITIE, 1, "item", BODY_MASK, NOW - 1, NULL);
    expire_reentry_t r = {.store = f->store};
    assert_int_equal(store_expire(f->store, NOW, 10, expire_reenter, &r), 3);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(r.count_result, -1);
    assert_int_equal(r.expire_result, -1);
}

/* ------------------------------------------------------------------ restarts and failures */

static void test_idempotency_survives_reopen(void **state)
{
    fixture_t *f = *state;
    const uint8_t accepted[] = {0x0a, 0x10, 0x11, 0x12, 0x13, 0x00, 0x7f};
    uint8_t id[16], hash[32];
    fill(id, sizeof id, 4, 1);
    fill(hash, sizeof hash, 4, 2);
    assert_int_equal(store_begin(f->store), 0);
    int64_t publish_id = publish(f->store, WOCO, 4, 1700000004);
    assert_true(publish_id > 0);
    assert_int_equal(store_publish_set_reply(f->store, publish_id, accepted, sizeof accepted), 0);
    assert_int_equal(store_commit(f->store), 0);

    for (int round = 0; round < 2; round++) {
        reopen(f);
        uint8_t *reply = NULL;
        size_t reply_len = 0;
        int same = 0;
        assert_int_equal(store_publish_find(f->store, WOCO, id, hash, &same, &reply, &reply_len),
                         1);
        assert_int_equal(same, 1); /* the content tag's key survives a reopen */
        assert_int_equal(reply_len, sizeof accepted);
        assert_memory_equal(reply, accepted, sizeof accepted);
        free(reply);
        /* The same id is still taken. */
        assert_int_equal(publish(f->store, WOCO, 4, 1700000004), -1);
        assert_int_equal(publish_known(f->store, WOCO, 5), 0);
    }
}

/* Write publish n with `items` items of 16 KiB; returns 0 when every write
 * succeeded, -1 at the first failure. */
static int write_big_publish(store_t *store, unsigned n, unsigned items)
{
    static uint8_t big[16 * 1024];
    int64_t publish_id = publish(store, WOCO, n, 1700000000 + n);
    if (publish_id <= 0)
        return -1;
    for (uint32_t i = 0; i < items; i++) {
        fill(big, sizeof big, i, 8);
        if (store_item_add(store, publish_id, i, big, sizeof big) <= 0)
            return -1;
    }
    return 0;
}

/* Write `count` small publishes from number n on; 0, or -1 at the first failure. */
static int write_many_publishes(store_t *store, unsigned n, unsigned count)
{
    for (unsigned i = 0; i < count; i++)
        if (publish(store, GEMEENTE, n + i, 1700000000) <= 0)
            return -1;
    return 0;
}

enum full_write { FULL_BIG_ITEMS, FULL_MANY_PUBLISHES };

static int full_write(store_t *store, enum full_write what)
{
    return what == FULL_BIG_ITEMS ? write_big_publish(store, 2, 16)
                                  : write_many_publishes(store, 1000, 200);
}

static void test_full_store_fails_closed_and_recovers(void **state)
{
    fixture_t *f = *state;
    /* Big items fail inside a multi-row statement, which SQLite undoes
     * alone; small single-row inserts make SQLite roll back the whole
     * transaction by itself. Both must end the same way. */
    static const struct {
        enum full_write what;
    } rows[] = {{FULL_BIG_ITEMS}, {FULL_MANY_PUBLISHES}};
    int rolled_back_by_sqlite = 0;
    assert_int_equal(store_begin(f->store), 0);
    int64_t last = deliver_new(f->store, POLITIE, 1);
    assert_int_equal(store_commit(f->store), 0);
    int64_t unlimited = store_test_limit_pages(f->store, 0);
    assert_true(unlimited > 0);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int64_t items_before = raw_int(f->path, "SELECT count(*) FROM items");
        int64_t publishes_before = raw_int(f->path, "SELECT count(*) FROM publishes");
        int64_t limit = store_test_limit_pages(f->store, 1); /* SQLite keeps the current size */
        assert_true(limit > 0 && limit < unlimited);

        /* The disk is full: a write fails, the failure is "unavailable". */
        assert_int_equal(store_begin(f->store), 0);
        assert_int_equal(full_write(f->store, rows[i].what), -1);
        assert_true(store_last_error_is_unavailable(f->store));
        assert_non_null(strstr(store_errmsg(f->store), "full"));
        /* A caller that commits anyway after SQLite's own rollback is
         * refused, and told why: still "unavailable". */
        if (!store_in_transaction(f->store)) {
            rolled_back_by_sqlite++;
            /* Nor may a caller begin afresh and commit that: writes of the
             * lost transaction would look done. */
            assert_int_equal(store_begin(f->store), -1);
            assert_non_null(strstr(store_errmsg(f->store), "roll back before writing again"));
            assert_int_equal(store_commit(f->store), -1);
            assert_true(store_last_error_is_unavailable(f->store));
            assert_non_null(strstr(store_errmsg(f->store), "rolled back"));
        }
        /* The caller fails the turn: nothing of it is kept. */
        assert_int_equal(store_rollback(f->store), 0);
        assert_false(store_in_transaction(f->store));
        assert_int_equal(raw_int(f->path, "SELECT count(*) FROM items"), items_before);
        assert_int_equal(raw_int(f->path, "SELECT count(*) FROM publishes"), publishes_before);
        /* The partners' sums dropped what the rolled-back turn added. */
        char problem[200] = "";
        assert_int_equal(store_partner_bytes_verify(f->store, problem, sizeof problem), 0);
        /* Reading what is stored goes on meanwhile. */
        seen_t seen = {.recipient = POLITIE};
        assert_int_equal(store_mailbox_scan(f->store, POLITIE, 0, 10, collect, &seen), (int)i + 1);

        /* Space is back: the same writes commit, seqs move on. */
        assert_true(store_test_limit_pages(f->store, unlimited) >= unlimited);
        assert_int_equal(store_begin(f->store), 0);
        assert_int_equal(full_write(f->store, rows[i].what), 0);
        int64_t next = deliver_new(f->store, POLITIE, 10 + (unsigned)i);
        assert_int_equal(store_commit(f->store), 0);
        assert_int_equal(store_partner_bytes_verify(f->store, problem, sizeof problem), 0);
        assert_true(next > last);
        last = next;
    }
    /* SQLite's own rollback was met at least once (so that path is tested). */
    assert_true(rolled_back_by_sqlite >= 1);
    reopen(f);
    assert_int_equal(publish_known(f->store, WOCO, 2), 1);
    assert_int_equal(publish_known(f->store, GEMEENTE, 1199), 1);
    assert_int_equal(store_mailbox_count(f->store, POLITIE), 3);
}

static void test_failure_classification(void **state)
{
    fixture_t *f = *state;
    int64_t seq = deliver_new(f->store, POLITIE, 1);
    assert_true(seq > 0);
    enum cause { DUPLICATE, MISMATCH, NO_TRANSACTION, MISSING, FULL };
    static const struct {
        enum cause cause;
        int unavailable;
    } rows[] = {
        {DUPLICATE, 0}, {MISMATCH, 0}, {NO_TRANSACTION, 0}, {MISSING, 0},
        {FULL, 1},      {MISMATCH, 0}, /* a later refusal is not still "unavailable" */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        delivery_spec_t spec;
        int rc = 0;
        switch (rows[i].cause) {
        case DUPLICATE:
            rc = (int)publish(f->store, WOCO, 1, 1700000001);
            break;
        case MISMATCH:
            delivery_spec(&spec, RIEC, WOCO, "woco-servatius", 1, 1700000001, 1, 0);
            spec.d.accepted_at++;
            rc = (int)store_delivery_add(f->store, &spec.d);
            break;
        case NO_TRANSACTION:
            rc = store_commit(f->store);
            break;
        case MISSING:
            rc = store_mailbox_count(f->store, NULL) < 0 ? -1 : 0;
            break;
        case FULL:
            assert_true(store_test_limit_pages(f->store, 1) > 0);
            rc = write_big_publish(f->store, 9, 16);
            assert_true(store_test_limit_pages(f->store, 1 << 30) > 1);
            break;
        }
        assert_int_equal(rc, -1);
        if (store_last_error_is_unavailable(f->store) != rows[i].unavailable)
            fail_msg("row %zu: \"%s\" classified wrongly", i, store_errmsg(f->store));
    }
    assert_false(store_last_error_is_unavailable(NULL));
}

static void test_v1_store_migrates_only_when_empty(void **state)
{
    fixture_t *f = *state;
    static const struct {
        int with_data;
        int opens;
    } rows[] = {{0, 1}, {1, 0}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char path[256], err[512] = "";
        char name[32];
        snprintf(name, sizeof name, "v1-%zu.db", i);
        fixture_path(f, name, path, sizeof path);
        sqlite3 *db = NULL;
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_close(db), SQLITE_OK);
        store_fixture_raw_exec(path, "CREATE TABLE publishes (id INTEGER PRIMARY KEY);"
                                     "CREATE TABLE items (seq INTEGER PRIMARY KEY, body BLOB);"
                                     "CREATE TABLE deliveries (seq INTEGER PRIMARY KEY, body BLOB);"
                                     "PRAGMA user_version = 1;");
        if (rows[i].with_data)
            store_fixture_raw_exec(path, "INSERT INTO publishes VALUES (1)");
        store_t *store = open_with(path, test_key, err, sizeof err);
        if ((store != NULL) != rows[i].opens)
            fail_msg("row %zu: open gave %p (%s)", i, (void *)store, err);
        if (store == NULL) {
            assert_non_null(strstr(err, "unsealed"));
            assert_int_equal(raw_user_version(path), 1); /* left as it was */
            continue;
        }
        assert_true(deliver_new(store, POLITIE, 1) > 0);
        store_close(&store);
        assert_true(raw_user_version(path) > 1);
    }
}

/* ------------------------------------------------------------------ key rotation */

#define REKEY_PUBLISHES 4
#define REKEY_ITEMS_PER_PUBLISH 3
#define REKEY_ITEMS (REKEY_PUBLISHES * REKEY_ITEMS_PER_PUBLISH)
#define REKEY_DELIVERIES 24 /* item k goes to k % 3 + 1 recipients, each a row of its own */
#define REKEY_BODY_MAX 20000

/* Empty, tiny, in-page and overflow-page bodies. */
static const size_t rekey_body_sizes[] = {0, 1, 57, 300, 4096, REKEY_BODY_MAX};
static const char *const rekey_recipients[] = {POLITIE, RIEC, "om/officier"};

/* What a rekey test stored: body k of a table is rekey_body(k, table).
 * Delivery d is a signal's by reference with mask rekey_mask(d) when d is
 * even, a case's with content rekey_body(d, REKEY_DELIVERY_BODY) when odd
 * (every size once in each twelve). */
typedef struct rekey_data {
    size_t items, deliveries;
    int64_t item_seq[REKEY_ITEMS];
    int64_t delivery_seq[REKEY_DELIVERIES];
    size_t delivery_item[REKEY_DELIVERIES];
    const char *recipient[REKEY_DELIVERIES];
    char case_id[SCHAKEL_CASE_ID_LEN + 1];
} rekey_data_t;

enum rekey_table { REKEY_ITEM_BODY, REKEY_DELIVERY_BODY };

static size_t rekey_body(uint8_t *out, size_t k, enum rekey_table table)
{
    size_t len = rekey_body_sizes[table == REKEY_ITEM_BODY ? k % 6 : (k / 2) % 6];
    fill(out, len, (unsigned)k, table == REKEY_ITEM_BODY ? 0x11 : 0x22);
    return len;
}

static uint32_t rekey_mask(size_t d)
{
    return 0x5a5a0000u | (uint32_t)d;
}

static void rekey_fill(store_t *store, rekey_data_t *data)
{
    static uint8_t body[REKEY_BODY_MAX];
    memset(data, 0, sizeof *data);
    assert_int_equal(store_begin(store), 0);
    case_new(store, data->case_id);
    for (unsigned p = 0; p < REKEY_PUBLISHES; p++) {
        int64_t accepted_at = 1700000050 + p;
        int64_t publish_id = publish(store, WOCO, 50 + p, accepted_at);
        assert_true(publish_id > 0);
        for (uint32_t i = 0; i < REKEY_ITEMS_PER_PUBLISH; i++) {
            size_t k = data->items++;
            size_t len = rekey_body(body, k, REKEY_ITEM_BODY);
            int64_t item_seq = store_item_add(store, publish_id, i, body, len);
            assert_true(item_seq > 0);
            data->item_seq[k] = item_seq;
            for (size_t r = 0; r <= k % 3; r++) {
                size_t d = data->deliveries++;
                delivery_spec_t spec;
                data->recipient[d] = rekey_recipients[(k + r) % 3];
                data->delivery_item[d] = k;
                delivery_spec(&spec, data->recipient[d], WOCO, "woco-servatius", 50 + p,
                              accepted_at, item_seq, i);
                spec.d.fields = rekey_mask(d);
                if (d % 2 == 1) {
                    delivery_spec_case(&spec, data->case_id, 0);
                    spec.d.body = body;
                    spec.d.body_len = rekey_body(body, d, REKEY_DELIVERY_BODY);
                }
                data->delivery_seq[d] = store_delivery_add(store, &spec.d);
                if (data->delivery_seq[d] <= 0)
                    fail_msg("delivery %zu: %s", d, store_errmsg(store));
            }
        }
    }
    assert_int_equal(store_commit(store), 0);
    assert_int_equal(data->items, REKEY_ITEMS);
    assert_int_equal(data->deliveries, REKEY_DELIVERIES);
}

/* Index of seq among the stored ones; fails the test for an unknown seq. */
static size_t rekey_index(const int64_t *seqs, size_t n, int64_t seq)
{
    for (size_t k = 0; k < n; k++)
        if (seqs[k] == seq)
            return k;
    fail_msg("seq %lld was not stored by the test", (long long)seq);
    return 0;
}

/* body is what the test stored as the sealed body of item seq, or of
 * the mailbox row of delivery seq (a signal's mask, 4 bytes little-endian,
 * or a case's content). */
static void rekey_expect(const rekey_data_t *data, enum rekey_table table, int64_t seq,
                         const uint8_t *body, size_t len)
{
    static uint8_t expected[REKEY_BODY_MAX];
    size_t k = table == REKEY_ITEM_BODY ? rekey_index(data->item_seq, data->items, seq)
                                        : rekey_index(data->delivery_seq, data->deliveries, seq);
    size_t expected_len = 0;
    if (table == REKEY_DELIVERY_BODY && k % 2 == 0) {
        uint32_t mask = rekey_mask(k);
        for (expected_len = 0; expected_len < 4; expected_len++)
            expected[expected_len] = (uint8_t)(mask >> (8 * expected_len));
    } else {
        expected_len = rekey_body(expected, k, table);
    }
    if (len != expected_len || (len > 0 && memcmp(body, expected, len) != 0))
        fail_msg("%s %lld: body differs (%zu bytes, want %zu)",
                 table == REKEY_ITEM_BODY ? "item" : "mailbox row", (long long)seq, len,
                 expected_len);
}

typedef struct rekey_seen {
    const rekey_data_t *data;
    size_t n;
} rekey_seen_t;

/* A signal's delivery comes with its mask and its item's bytes, a case's
 * with its own content. */
static int rekey_check_delivery(const store_delivery_t *d, void *arg)
{
    rekey_seen_t *seen = arg;
    size_t k = rekey_index(seen->data->delivery_seq, seen->data->deliveries, (int64_t)d->seq);
    assert_string_equal(d->recipient, seen->data->recipient[k]);
    if (k % 2 == 0) {
        assert_int_equal(d->fields, rekey_mask(k));
        assert_null(d->case_id);
        size_t item = seen->data->delivery_item[k];
        rekey_expect(seen->data, REKEY_ITEM_BODY, seen->data->item_seq[item], d->body, d->body_len);
    } else {
        assert_non_null(d->case_id);
        rekey_expect(seen->data, REKEY_DELIVERY_BODY, (int64_t)d->seq, d->body, d->body_len);
    }
    seen->n++;
    return 0;
}

/* Every delivery comes out of its mailbox through the store, as stored. */
static void rekey_check_mailboxes(store_t *store, const rekey_data_t *data)
{
    rekey_seen_t seen = {.data = data};
    for (size_t r = 0; r < sizeof rekey_recipients / sizeof rekey_recipients[0]; r++)
        if (store_mailbox_scan(store, rekey_recipients[r], 0, 1000, rekey_check_delivery, &seen) <
            0)
            fail_msg("scan of %s: %s", rekey_recipients[r], store_errmsg(store));
    assert_int_equal(seen.n, data->deliveries);
}

/* How many item and mailbox row bodies in the file open under key, with
 * the documented associated data, read past the store's own code (a row's
 * associated data apart: raw_row_open). Each one that opens must hold
 * what was stored. */
static size_t raw_bodies_opening(const char *path, const uint8_t key[STORE_KEY_BYTES],
                                 const rekey_data_t *data)
{
    static const char *const sql[] = {[REKEY_ITEM_BODY] =
                                          "SELECT seq, publish_id, item_index, body FROM items",
                                      [REKEY_DELIVERY_BODY] = "SELECT first_seq FROM mailbox"};
    static uint8_t opened[REKEY_BODY_MAX];
    size_t count = 0;
    sqlite3 *db = store_fixture_raw_open(path);
    for (int table = REKEY_ITEM_BODY; table <= REKEY_DELIVERY_BODY; table++) {
        sqlite3_stmt *stmt = NULL;
        assert_int_equal(sqlite3_prepare_v2(db, sql[table], -1, &stmt, NULL), SQLITE_OK);
        while (sqlite3_step(stmt) == SQLITE_ROW) {
            uint8_t ad[128];
            int64_t seq = sqlite3_column_int64(stmt, 0), second = sqlite3_column_int64(stmt, 1);
            if (table == REKEY_DELIVERY_BODY) {
                size_t len = 0;
                if (raw_row_open(path, key, seq, opened, sizeof opened, &len) != 0)
                    continue;
                rekey_expect(data, REKEY_DELIVERY_BODY, seq, opened, len);
                count++;
                continue;
            }
            size_t ad_len = item_ad(ad, seq, second, (uint32_t)sqlite3_column_int64(stmt, 2));
            const uint8_t *sealed = sqlite3_column_blob(stmt, 3);
            size_t sealed_len = (size_t)sqlite3_column_bytes(stmt, 3);
            assert_true(sealed_len >= 40 && sealed_len - 40 <= sizeof opened);
            unsigned long long opened_len = 0;
            if (crypto_aead_xchacha20poly1305_ietf_decrypt(opened, &opened_len, NULL, sealed + 24,
                                                           sealed_len - 24, ad, ad_len, sealed,
                                                           key) != 0)
                continue;
            rekey_expect(data, (enum rekey_table)table, seq, opened, (size_t)opened_len);
            count++;
        }
        assert_int_equal(sqlite3_finalize(stmt), SQLITE_OK);
    }
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return count;
}

/* Which key the file is under: every body opens under `opens`, none under
 * `refused`. */
static void rekey_check_file(const char *path, const uint8_t opens[STORE_KEY_BYTES],
                             const uint8_t refused[STORE_KEY_BYTES], const rekey_data_t *data)
{
    assert_int_equal(raw_bodies_opening(path, opens, data), REKEY_ITEMS + REKEY_DELIVERIES);
    assert_int_equal(raw_bodies_opening(path, refused, data), 0);
}

/* The BLAKE2b-256 digest of each mailbox row's sealed body, in first_seq
 * order, into digests (REKEY_DELIVERIES of them): how many rows. */
static size_t raw_row_body_digests(const char *path, uint8_t digests[][32])
{
    sqlite3 *db = store_fixture_raw_open(path);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT body FROM mailbox ORDER BY first_seq", -1, &stmt, NULL),
        SQLITE_OK);
    size_t n = 0;
    while (sqlite3_step(stmt) == SQLITE_ROW) {
        assert_true(n < REKEY_DELIVERIES);
        assert_int_equal(crypto_generichash(digests[n++], 32, sqlite3_column_blob(stmt, 0),
                                            (size_t)sqlite3_column_bytes(stmt, 0), NULL, 0),
                         0);
    }
    assert_int_equal(sqlite3_finalize(stmt), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return n;
}

/* Open with each key: only `opens` is accepted; the others are refused by
 * the key check, changing nothing. Returns the store opened with `opens`. */
static store_t *rekey_open_only(const char *path, const uint8_t opens[STORE_KEY_BYTES],
                                const uint8_t refused[STORE_KEY_BYTES])
{
    uint8_t one_bit[STORE_KEY_BYTES];
    memcpy(one_bit, opens, sizeof one_bit);
    one_bit[7] ^= 0x04;
    const struct {
        const uint8_t *key;
        int opens;
    } rows[] = {{refused, 0}, {one_bit, 0}, {opens, 1}};
    store_t *store = NULL;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char err[512] = "";
        store = open_with(path, rows[i].key, err, sizeof err);
        if ((store != NULL) != rows[i].opens)
            fail_msg("row %zu: open %s (%s)", i, store ? "succeeded" : "failed", err);
        if (store == NULL)
            assert_non_null(strstr(err, "the store key does not open this store"));
    }
    return store;
}

static void test_rekey_reseals_every_body(void **state)
{
    fixture_t *f = *state;
    rekey_data_t data;
    uint8_t new_key[STORE_KEY_BYTES], old_sealed[64];
    randombytes_buf(new_key, sizeof new_key);
    rekey_fill(f->store, &data);
    rekey_check_file(f->path, test_key, new_key, &data);
    sqlite3 *db = store_fixture_raw_open(f->path);
    int64_t big_item = data.item_seq[5]; /* REKEY_BODY_MAX bytes, on overflow pages */
    uint8_t *whole = malloc(REKEY_BODY_MAX + 40);
    assert_non_null(whole);
    assert_int_equal(
        raw_blob(db, "SELECT body FROM items WHERE seq = ?1", big_item, whole, REKEY_BODY_MAX + 40),
        REKEY_BODY_MAX + 40);
    memcpy(old_sealed, whole + REKEY_BODY_MAX - 24, sizeof old_sealed); /* from its last page */
    free(whole);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    static uint8_t rows_before[REKEY_DELIVERIES][32], rows_after[REKEY_DELIVERIES][32];
    assert_int_equal(raw_row_body_digests(f->path, rows_before), REKEY_DELIVERIES);

    store_rekey_counts_t counts = {99, 99};
    assert_int_equal(store_rekey(f->store, new_key, &counts), 0);
    assert_int_equal(counts.items, REKEY_ITEMS);
    assert_int_equal(counts.mailbox_rows, REKEY_DELIVERIES); /* rows: one delivery each here */
    /* every row's body sealed again (a fresh nonce), none left as it was */
    assert_int_equal(raw_row_body_digests(f->path, rows_after), REKEY_DELIVERIES);
    for (size_t r = 0; r < REKEY_DELIVERIES; r++)
        if (memcmp(rows_before[r], rows_after[r], 32) == 0)
            fail_msg("mailbox row %zu kept its sealed body", r);
    /* The same handle goes on under the new key... */
    rekey_check_mailboxes(f->store, &data);
    rekey_check_file(f->path, new_key, test_key, &data);
    /* ...and has let go of SQLite's exclusive lock: a reader reads. */
    char err[512] = "";
    store_t *other = store_open_reader(f->path, NULL, err, sizeof err);
    if (other == NULL)
        fail_msg("reader after rekey: %s", err);
    store_audit_tail_t tail;
    assert_int_equal(store_audit_tail(other, &tail), 0);
    store_close(&other);
    /* Once the WAL is checkpointed, the old ciphertext is gone from the files. */
    assert_true(store_files_contain(f->path, old_sealed, sizeof old_sealed));
    assert_int_equal(store_checkpoint(f->store), 0);
    assert_false(store_files_contain(f->path, old_sealed, sizeof old_sealed));

    int64_t last_seq = store_delivery_last_seq(f->store);
    store_close(&f->store);
    f->store = rekey_open_only(f->path, new_key, test_key);
    rekey_check_mailboxes(f->store, &data);
    assert_int_equal(store_delivery_last_seq(f->store), last_seq);
    /* New writes are sealed under the new key and read back. */
    assert_int_equal(store_begin(f->store), 0);
    body_seen_t seen = {.n = 0};
    (void)deliver_bytes(f->store, "brandweer/meldkamer", 90, "after rekey", BODY_MASK, NOW, NULL);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(
        store_mailbox_scan(f->store, "brandweer/meldkamer", 0, 10, collect_body, &seen), 1);
    assert_string_equal(seen.text, "after rekey");
}

/* Open the sealed evidence of the publish with message id `id` from the
 * file with `key`, as store.h documents its layout, taking `sender` for
 * its sender: 0 with root || signature in out, -1 when it does not
 * authenticate. */
static int evidence_open(const char *path, const uint8_t *key, const char *sender,
                         const uint8_t id[16], uint8_t out[96])
{
    static const char tag[] = "schakel-store-publish-evidence-v1";
    uint8_t sealed[200], ad[sizeof tag + 16 + 64];
    size_t ad_len = 0;
    memcpy(ad, tag, sizeof tag); /* with its NUL */
    ad_len += sizeof tag;
    memcpy(ad + ad_len, id, 16);
    ad_len += 16;
    memcpy(ad + ad_len, sender, strlen(sender));
    ad_len += strlen(sender);
    sqlite3 *db = store_fixture_raw_open(path);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT evidence FROM publishes WHERE message_id = ?1",
                                        -1, &stmt, NULL),
                     SQLITE_OK);
    sqlite3_bind_blob(stmt, 1, id, 16, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    size_t len = (size_t)sqlite3_column_bytes(stmt, 0);
    assert_int_equal(len, 24 + 96 + 16);
    memcpy(sealed, sqlite3_column_blob(stmt, 0), len);
    sqlite3_finalize(stmt);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    unsigned long long out_len = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(out, &out_len, NULL, sealed + 24, len - 24, ad,
                                                   ad_len, sealed, key) != 0)
        return -1;
    assert_int_equal(out_len, 96);
    return 0;
}

/* A store from before schema 8 kept a publish's signature, signed root and
 * content hash in clear, from which a copy of the store could confirm a
 * guessed content. Opening it seals the evidence, keys the hash and drops
 * the clear columns, and nothing of them is left in the files; a repeat is
 * still told from other content, new publishes are stored the same way,
 * and a rekey re-seals the evidence. */
static void test_evidence_in_clear_is_sealed_at_open(void **state)
{
    fixture_t *f = *state;
    uint8_t id[16], hash[32], sig[64], root[32], other[32], opened[96];
    fill(id, sizeof id, 31, 1);
    fill(hash, sizeof hash, 31, 2);
    fill(sig, sizeof sig, 31, 3);
    fill(root, sizeof root, 31, 4);
    store_close(&f->store);
    store_fixture_back_to_12(f->path, test_key, NULL);
    sqlite3 *db = store_fixture_raw_open(f->path);
    store_fixture_db_exec(db, STORE_FIXTURE_PUBLISHES_BEFORE_8 "PRAGMA user_version = 7;");
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO publishes (sender, message_id, content_hash,"
                                        " signature, root, accepted_at, expires_at)"
                                        " VALUES (?1, ?2, ?3, ?4, ?5, 1700000000, 1700000000)",
                                        -1, &stmt, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(stmt, 1, WOCO, -1, SQLITE_STATIC);
    sqlite3_bind_blob(stmt, 2, id, sizeof id, SQLITE_STATIC);
    sqlite3_bind_blob(stmt, 3, hash, sizeof hash, SQLITE_STATIC);
    sqlite3_bind_blob(stmt, 4, sig, sizeof sig, SQLITE_STATIC);
    sqlite3_bind_blob(stmt, 5, root, sizeof root, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(stmt), SQLITE_DONE);
    sqlite3_finalize(stmt);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_true(store_files_contain(f->path, sig, sizeof sig));

    reopen(f); /* migrates */
    int64_t ms = -1;
    assert_int_equal(store_migrated_from(f->store, &ms), 7);
    assert_true(ms >= 0);
    store_close(&f->store);
    db = store_fixture_raw_open(f->path);
    assert_int_equal(store_fixture_db_int(db, "PRAGMA user_version"), store_schema_version());
    assert_int_equal(store_fixture_db_int(db, "SELECT count(*) FROM pragma_table_info('publishes')"
                                              " WHERE name IN ('signature', 'root')"),
                     0);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_false(store_files_contain(f->path, sig, sizeof sig));
    assert_false(store_files_contain(f->path, root, sizeof root));
    assert_false(store_files_contain(f->path, hash, sizeof hash));
    assert_int_equal(evidence_open(f->path, test_key, WOCO, id, opened), 0);
    assert_memory_equal(opened, root, sizeof root);
    assert_memory_equal(opened + 32, sig, sizeof sig);

    f->store = store_fixture_open(f->path, test_key);
    int same = -1;
    memcpy(other, hash, sizeof other);
    other[31] ^= 0x80;
    assert_int_equal(store_publish_find(f->store, WOCO, id, hash, &same, NULL, NULL), 1);
    assert_int_equal(same, 1);
    assert_int_equal(store_publish_find(f->store, WOCO, id, other, &same, NULL, NULL), 1);
    assert_int_equal(same, 0);

    /* a new publish: the same, from the start */
    uint8_t id2[16], hash2[32], sig2[64], root2[32];
    fill(id2, sizeof id2, 32, 1);
    fill(hash2, sizeof hash2, 32, 2);
    fill(sig2, sizeof sig2, 32, 3);
    fill(root2, sizeof root2, 32, 4);
    assert_true(store_publish_add(f->store, WOCO, id2, hash2, sig2, root2, 1700000001) > 0);
    assert_int_equal(store_publish_find(f->store, WOCO, id2, hash2, &same, NULL, NULL), 1);
    assert_int_equal(same, 1);
    store_close(&f->store);
    assert_false(store_files_contain(f->path, sig2, sizeof sig2));
    assert_false(store_files_contain(f->path, hash2, sizeof hash2));
    assert_int_equal(evidence_open(f->path, test_key, WOCO, id2, opened), 0);
    assert_memory_equal(opened + 32, sig2, sizeof sig2);
    assert_int_equal(evidence_open(f->path, test_key, GEMEENTE, id2, opened), -1); /* bound */

    /* a rekey re-seals it; the content tags stay valid */
    uint8_t new_key[STORE_KEY_BYTES];
    randombytes_buf(new_key, sizeof new_key);
    f->store = store_fixture_open(f->path, test_key);
    store_rekey_counts_t counts;
    assert_int_equal(store_rekey(f->store, new_key, &counts), 0);
    assert_int_equal(store_publish_find(f->store, WOCO, id, hash, &same, NULL, NULL), 1);
    assert_int_equal(same, 1);
    store_close(&f->store);
    assert_int_equal(evidence_open(f->path, new_key, WOCO, id, opened), 0);
    assert_memory_equal(opened + 32, sig, sizeof sig);
    assert_int_equal(evidence_open(f->path, test_key, WOCO, id2, opened), -1);
    assert_int_equal(evidence_open(f->path, new_key, WOCO, id2, opened), 0);
    f->store = store_fixture_open(f->path, new_key);
}

static unsigned progress_calls;
static uint64_t progress_done;

static unsigned progress_steps; /* calls of steps other than the sealing */

static unsigned progress_bytes; /* the sum of schema 11, asked once before its walk */

static void count_progress(const char *step, uint64_t done)
{
    if (strstr(step, "bytes per partner") != NULL) {
        progress_bytes++;
        return;
    }
    if (strstr(step, "evidence") == NULL) {
        progress_steps++;
        return;
    }
    progress_calls++;
    progress_done = done;
}

/* A broker of schema 7 stopped uncleanly: its WAL still holds pages with
 * publishes' signatures in clear. The opening that migrates reports its
 * progress every 10,000 rows, and leaves no clear signature in the files
 * while the store is open (the WAL truncated, the file checkpointed). */
static void test_evidence_migration_reports_and_leaves_no_old_wal(void **state)
{
    fixture_t *f = *state;
    uint8_t sig[64];
    fill(sig, sizeof sig, 41, 3);
    char hex[129], sql[1024];
    sodium_bin2hex(hex, sizeof hex, sig, sizeof sig);
    snprintf(sql, sizeof sql,
             "INSERT INTO publishes (sender, message_id, content_hash, signature, root,"
             " accepted_at, expires_at) VALUES ('" WOCO "', randomblob(16), randomblob(32),"
             " x'%s', randomblob(32), 1700000000, 1700000000)",
             hex);
    store_close(&f->store);
    store_fixture_back_to_12(f->path, test_key, NULL);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) { /* writes, then exits without closing: the WAL stays */
        sqlite3 *db = NULL;
        if (sqlite3_open(f->path, &db) != SQLITE_OK ||
            sqlite3_exec(db,
                         STORE_FIXTURE_PUBLISHES_BEFORE_8
                         "PRAGMA user_version = 7; PRAGMA wal_autocheckpoint = 0;"
                         "INSERT INTO publishes (sender, message_id, content_hash, signature,"
                         " root, accepted_at, expires_at)"
                         " WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
                         " WHERE i < 20000)"
                         " SELECT '" WOCO "', randomblob(16), randomblob(32), randomblob(64),"
                         " randomblob(32), 1700000000, 1700000000 FROM n",
                         NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
            _exit(1);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(store_files_contain(f->path, sig, sizeof sig));

    progress_calls = progress_steps = progress_bytes = 0;
    store_set_progress(count_progress);
    f->store = store_fixture_open(f->path, test_key);
    store_set_progress(NULL);
    assert_int_equal(progress_calls, 2);
    assert_int_equal(progress_done, 20000);
    assert_int_equal(progress_steps, 2); /* before the columns go, and the WAL */
    assert_int_equal(progress_bytes, 1);
    assert_false(store_files_contain(f->path, sig, sizeof sig));
}

typedef struct rekey_reentry {
    store_t *store;
    const uint8_t *key;
    store_rekey_counts_t *counts;
    int result;
} rekey_reentry_t;

static int rekey_reenter(const store_delivery_t *d, void *arg)
{
    rekey_reentry_t *r = arg;
    (void)d;
    r->result = store_rekey(r->store, r->key, r->counts);
    return 1;
}

static void test_rekey_refusals(void **state)
{
    fixture_t *f = *state;
    enum cause { IN_TRANSACTION, NO_KEY, IN_CALLBACK, OPEN_ELSEWHERE, NONE };
    static const struct {
        enum cause cause;
        const char *message;
        int unavailable;
    } rows[] = {
        {IN_TRANSACTION, "a transaction is open", 0},
        {NO_KEY, "no new key", 0},
        {IN_CALLBACK, "called from inside a store callback", 0},
        {OPEN_ELSEWHERE, "the store is open elsewhere (stop schakeld first)", 1},
        {NONE, NULL, 0}, /* and then it works */
    };
    rekey_data_t data;
    uint8_t new_key[STORE_KEY_BYTES];
    randombytes_buf(new_key, sizeof new_key);
    rekey_fill(f->store, &data);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        store_rekey_counts_t counts = {99, 99};
        store_t *other = NULL;
        char err[512] = "";
        store_audit_tail_t tail;
        rekey_reentry_t reentry = {.store = f->store, .key = new_key, .counts = &counts};
        int rc = 0;
        switch (rows[i].cause) {
        case IN_TRANSACTION:
            assert_int_equal(store_begin(f->store), 0);
            rc = store_rekey(f->store, new_key, &counts);
            assert_true(store_in_transaction(f->store)); /* the caller's, left alone */
            assert_int_equal(store_rollback(f->store), 0);
            break;
        case NO_KEY:
            rc = store_rekey(f->store, NULL, &counts);
            break;
        case IN_CALLBACK:
            assert_int_equal(store_mailbox_scan(f->store, POLITIE, 0, 10, rekey_reenter, &reentry),
                             1);
            rc = reentry.result;
            break;
        case OPEN_ELSEWHERE: /* an offline reader of the trail, say (a second
                              * writer cannot open it at all: store_lock) */
            other = store_open_reader(f->path, NULL, err, sizeof err);
            assert_non_null(other);
            assert_int_equal(store_audit_tail(other, &tail), 0);
            rc = store_rekey(f->store, new_key, &counts);
            store_close(&other);
            break;
        case NONE:
            rc = store_rekey(f->store, new_key, &counts);
            break;
        }
        if (rows[i].message == NULL) {
            assert_int_equal(rc, 0);
            assert_int_equal(counts.items + counts.mailbox_rows, REKEY_ITEMS + REKEY_DELIVERIES);
            continue;
        }
        if (rc != -1)
            fail_msg("row %zu: rekey was not refused", i);
        assert_int_equal(counts.items + counts.mailbox_rows, 0);
        if (strstr(store_errmsg(f->store), rows[i].message) == NULL)
            fail_msg("row %zu: \"%s\"", i, store_errmsg(f->store));
        assert_int_equal(store_last_error_is_unavailable(f->store), rows[i].unavailable);
        if (rows[i].cause == OPEN_ELSEWHERE) {
            /* As store.h says: close the refused handle (SQLite keeps a
             * pending lock on it); the store opens again at once. */
            store_close(&f->store);
            f->store = store_fixture_open(f->path, test_key);
        }
        /* Refused means untouched: the file and the handle are under the old key. */
        rekey_check_file(f->path, test_key, new_key, &data);
        rekey_check_mailboxes(f->store, &data);
    }
    rekey_check_file(f->path, new_key, test_key, &data);
    assert_int_equal(store_rekey(NULL, new_key, NULL), -1);
}

/* Make the next writes fail as on a full disk: a file size limit lets the
 * WAL (emptied first) take no more than one page. SIGXFSZ is ignored, so
 * the write fails with EFBIG instead of ending the test. */
typedef struct file_limit {
    struct rlimit saved;
    void (*saved_handler)(int);
} file_limit_t;

static void file_limit_set(file_limit_t *limit, rlim_t bytes)
{
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &limit->saved), 0);
    struct rlimit small = limit->saved;
    assert_true(limit->saved.rlim_max == RLIM_INFINITY || limit->saved.rlim_max > bytes);
    small.rlim_cur = bytes;
    limit->saved_handler = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
}

static void file_limit_clear(file_limit_t *limit)
{
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &limit->saved), 0);
    (void)signal(SIGXFSZ, limit->saved_handler);
}

static void test_rekey_failure_keeps_old_key(void **state)
{
    fixture_t *f = *state;
    enum cause { TAMPERED_ROW, DISK_FULL };
    static const struct {
        enum cause cause;
        const char *message;
        int unavailable;
    } rows[] = {
        /* a delivery halfway: every item and some deliveries were re-sealed */
        {TAMPERED_ROW, "does not authenticate", 0},
        /* the WAL cannot grow: the commit (or a spill before it) fails.
         * (store_test_limit_pages cannot cause this: a re-sealed body is
         * as long as before and SQLite rewrites it in place, so the
         * database needs no new page; the WAL does.) */
        {DISK_FULL, "I/O error", 1},
    };
    rekey_data_t data;
    rekey_fill(f->store, &data);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint8_t new_key[STORE_KEY_BYTES];
        randombytes_buf(new_key, sizeof new_key);
        store_rekey_counts_t counts = {99, 99};
        file_limit_t limit;
        int64_t tampered = data.delivery_seq[REKEY_DELIVERIES / 2];
        int rc = 0;
        switch (rows[i].cause) {
        case TAMPERED_ROW:
            raw_flip_body_byte(f->path, tampered, 30);
            rc = store_rekey(f->store, new_key, &counts);
            raw_flip_body_byte(f->path, tampered, 30); /* and back */
            break;
        case DISK_FULL:
            assert_int_equal(store_checkpoint(f->store), 0);
            file_limit_set(&limit, 8192);
            rc = store_rekey(f->store, new_key, &counts);
            file_limit_clear(&limit);
            break;
        }
        if (rc != -1)
            fail_msg("row %zu: rekey succeeded", i);
        assert_int_equal(counts.items + counts.mailbox_rows, 0);
        if (strstr(store_errmsg(f->store), rows[i].message) == NULL)
            fail_msg("row %zu: \"%s\"", i, store_errmsg(f->store));
        if (store_last_error_is_unavailable(f->store) != rows[i].unavailable)
            fail_msg("row %zu: \"%s\" classified wrongly", i, store_errmsg(f->store));
        assert_false(store_in_transaction(f->store));
        /* Nothing changed: the handle still reads with the old key, the file
         * is all under it, and only the old key opens the store. */
        rekey_check_mailboxes(f->store, &data);
        rekey_check_file(f->path, test_key, new_key, &data);
        store_close(&f->store);
        f->store = rekey_open_only(f->path, test_key, new_key);
        rekey_check_mailboxes(f->store, &data);
    }
}

/* The pending count per recipient is kept in memory (every Heartbeat asks
 * it): after each step it must equal what SQL counts, inside a transaction
 * (its own changes included), after a rollback, and across every way a
 * delivery comes and goes. */
static void expect_count(fixture_t *f, const char *recipient, int64_t want, const char *step)
{
    int64_t got = store_mailbox_count(f->store, recipient);
    if (got != want)
        fail_msg("%s: store_mailbox_count(%s) = %lld, want %lld", step, recipient, (long long)got,
                 (long long)want);
    if (store_in_transaction(f->store))
        return; /* another connection sees only what is committed */
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT coalesce(sum(pending), 0) FROM mailbox WHERE recipient = '%s'", recipient);
    int64_t raw = raw_int(f->path, sql);
    if (raw != want)
        fail_msg("%s: SQL counts %lld for %s, want %lld", step, (long long)raw, recipient,
                 (long long)want);
}

static void test_pending_count_follows_every_change(void **state)
{
    fixture_t *f = *state;
    expect_count(f, POLITIE, 0, "learnt empty");
    assert_int_equal(store_begin(f->store), 0);
    for (unsigned n = 1; n <= 3; n++)
        assert_true(deliver_new(f->store, POLITIE, 40 + n) > 0);
    expect_count(f, POLITIE, 3, "three added, in the transaction");
    assert_int_equal(store_rollback(f->store), 0);
    expect_count(f, POLITIE, 0, "rolled back");

    assert_int_equal(store_begin(f->store), 0);
    int64_t a = deliver_new(f->store, POLITIE, 44);
    int64_t b = deliver_new(f->store, POLITIE, 45);
    assert_true(deliver_new(f->store, RIEC, 46) > 0); /* a recipient not yet learnt */
    assert_int_equal(store_commit(f->store), 0);
    expect_count(f, POLITIE, 2, "two committed");
    expect_count(f, RIEC, 1, "learnt after its change");

    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_delivery_ack(f->store, POLITIE, (uint64_t)a), 1);
    assert_int_equal(store_delivery_ack(f->store, RIEC, (uint64_t)b), 0); /* not RIEC's */
    expect_count(f, POLITIE, 1, "acked, in the transaction");
    expect_count(f, RIEC, 1, "someone else's ack changes nothing");
    assert_int_equal(store_commit_unsynced(f->store), 0);
    expect_count(f, POLITIE, 1, "ack committed unsynced");

    /* expiry and revocation remove through the same path */
    assert_int_equal(store_begin(f->store), 0);
    /* due at 1700000100; the others (deliver_new) a year after 1700000044 */
    const int64_t sweep_at = 1700000200;
    assert_true(deliver_bytes(f->store, POLITIE, 47, "item", BODY_MASK, 1700000100, NULL) > 0);
    assert_int_equal(store_commit(f->store), 0);
    expect_count(f, POLITIE, 2, "one more, already due");
    assert_int_equal(store_begin(f->store), 0);
    assert_true(store_expire(f->store, sweep_at, 10, NULL, NULL) > 0);
    assert_int_equal(store_commit(f->store), 0);
    expect_count(f, POLITIE, 1, "expired");
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_delivery_revoke(f->store, POLITIE, (uint64_t)b, sweep_at, NULL, NULL),
                     1);
    expect_count(f, POLITIE, 0, "revoked, in the transaction");
    assert_int_equal(store_rollback(f->store), 0);
    expect_count(f, POLITIE, 1, "revocation rolled back");

    /* an ack outside a transaction is refused (its row is written at a
     * commit), and changes nothing; in a transaction of its own it counts */
    assert_int_equal(store_delivery_ack(f->store, POLITIE, (uint64_t)b), -1);
    expect_count(f, POLITIE, 1, "an ack without a transaction refused");
    assert_int_equal(ack_alone(f->store, POLITIE, (uint64_t)b), 1);
    expect_count(f, POLITIE, 0, "acked in a transaction of its own");
    reopen(f); /* a new handle learns from SQL again */
    expect_count(f, POLITIE, 0, "after reopening");
    expect_count(f, RIEC, 1, "after reopening");
}

/* A checkpoint after a commit syncs the WAL and the file; one of those
 * failing poisons the handle like a failed commit sync (SQLite's own
 * automatic checkpoint would have dropped the error). The commit itself
 * was synced before the checkpoint: it stands (0), and is there when the
 * store is opened again. The checkpoint's syncs are the last ones of a
 * commit: a commit like the one before counts them, then the next fails
 * from its last-but-one sync (the checkpoint's WAL) or its last (the
 * database file) on. */
static int commit_counting_syncs(fixture_t *f, unsigned n, int fail_from, int *syncs)
{
    assert_int_equal(store_begin(f->store), 0);
    assert_true(publish(f->store, WOCO, n, 1700000000) > 0);
    int calls = fdatasync_calls;
    fdatasync_fail_next = fail_from;
    int rc = store_commit(f->store);
    fdatasync_fail_next = 0;
    *syncs = fdatasync_calls - calls;
    return rc;
}

static void test_failed_checkpoint_sync_poisons_the_handle(void **state)
{
    fixture_t *f = *state;
    static const int from_last[] = {1, 0}; /* the checkpoint's WAL sync, its file sync */
    for (size_t i = 0; i < sizeof from_last / sizeof from_last[0]; i++) {
        store_test_checkpoint_frames(f->store, 1); /* every commit checkpoints */
        int syncs = 0, failing = 0;
        assert_int_equal(commit_counting_syncs(f, 90 + 3 * (unsigned)i, 0, &syncs), 0);
        assert_int_equal(commit_counting_syncs(f, 91 + 3 * (unsigned)i, 0, &syncs), 0);
        assert_false(store_sync_failed(f->store));
        if (syncs < 3)
            fail_msg("row %zu: a commit with a checkpoint made %d syncs", i, syncs);
        int rc = commit_counting_syncs(f, 92 + 3 * (unsigned)i, syncs - from_last[i], &failing);
        if (failing < syncs - from_last[i])
            fail_msg("row %zu: the failing commit stopped after %d syncs, before the checkpoint's",
                     i, failing);
        if (rc != 0 || !store_sync_failed(f->store))
            fail_msg("row %zu: the checkpoint's sync %d of %d failed: the commit returned %d "
                     "(poisoned: %d)",
                     i, syncs - from_last[i], syncs, rc, store_sync_failed(f->store));
        assert_non_null(strstr(store_errmsg(f->store), "checkpointing the WAL failed"));
        assert_int_equal(store_begin(f->store), -1); /* refused from now on */
        reopen(f);
        assert_int_equal(publish_known(f->store, WOCO, 92 + 3 * (unsigned)i), 1);
    }
}

/* The expiry's TRUNCATE checkpoint failing on the disk (the file may not
 * grow, or a sync fails) is final like every other checkpoint: the handle
 * refuses everything after, and what was committed is all there. */
static void test_truncate_failure_is_final(void **state)
{
    fixture_t *f = *state;
    enum cause { FILE_FULL, SYNC_FAILS };
    static const enum cause rows[] = {FILE_FULL, SYNC_FAILS};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        unsigned first = 200 + 100 * (unsigned)i, n = 40;
        /* pages the database file does not have yet */
        assert_int_equal(store_begin(f->store), 0);
        for (unsigned k = 0; k < n; k++)
            assert_true(deliver_new(f->store, POLITIE, first + k) > 0);
        assert_int_equal(store_commit(f->store), 0);
        struct stat st;
        assert_int_equal(stat(f->path, &st), 0);
        file_limit_t limit;
        if (rows[i] == FILE_FULL)
            file_limit_set(&limit, (rlim_t)st.st_size);
        else
            fdatasync_fail_next = 1;
        int rc = store_checkpoint(f->store);
        if (rows[i] == FILE_FULL)
            file_limit_clear(&limit);
        else
            fdatasync_fail_next = 0;
        if (rc != -1 || !store_sync_failed(f->store))
            fail_msg("row %zu: the checkpoint gave %d (poisoned: %d): %s", i, rc,
                     store_sync_failed(f->store), store_errmsg(f->store));
        assert_non_null(strstr(store_errmsg(f->store), "checkpointing the WAL"));
        assert_int_equal(store_begin(f->store), -1); /* refused from now on */
        assert_int_equal(store_checkpoint(f->store), -1);
        reopen(f);
        for (unsigned k = 0; k < n; k++)
            assert_int_equal(publish_known(f->store, WOCO, first + k), 1);
    }
}

/* A rekey whose commit cannot be synced says so (-2) and goes on under the
 * new key: the store holds it as far as SQLite knows. */
static void test_rekey_sync_failure_reports_new_key(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(store_begin(f->store), 0);
    assert_true(deliver_new(f->store, POLITIE, 70) > 0);
    assert_int_equal(store_commit(f->store), 0);
    uint8_t new_key[STORE_KEY_BYTES];
    randombytes_buf(new_key, sizeof new_key);
    fdatasync_fail_next = 1;
    assert_int_equal(store_rekey(f->store, new_key, NULL), -2);
    fdatasync_fail_next = 0;
    assert_true(store_sync_failed(f->store));
    store_close(&f->store);
    char err[512] = "";
    f->store = open_with(f->path, new_key, err, sizeof err);
    if (f->store == NULL)
        fail_msg("the new key does not open the store after the failed sync: %s", err);
    assert_int_equal(store_mailbox_count(f->store, POLITIE), 1);
    store_close(&f->store);
    assert_null(open_with(f->path, test_key, err, sizeof err)); /* the old one no longer */
    sodium_memzero(new_key, sizeof new_key);
    f->store = NULL;
}

/* After SQLite rolled a transaction back by itself (the disk is full), the
 * changes it had counted never happened: a count learnt before the
 * caller's rollback must not take them into account. */
static void test_count_after_sqlite_rolled_back(void **state)
{
    fixture_t *f = *state;
    int64_t unlimited = store_test_limit_pages(f->store, 0);
    assert_true(unlimited > 0);
    assert_int_equal(store_begin(f->store), 0);
    assert_true(deliver_new(f->store, RIEC, 80) > 0); /* RIEC's count not learnt yet */
    assert_true(deliver_new(f->store, RIEC, 81) > 0);
    (void)store_test_limit_pages(f->store, 1);
    /* more than the free pages a new store has (the tables its schema steps
     * dropped) can take */
    assert_int_equal(write_many_publishes(f->store, 1000, 4000), -1);
    if (store_in_transaction(f->store))
        fail_msg("SQLite kept the transaction; this test needs it rolled back by SQLite");
    assert_int_equal(store_mailbox_count(f->store, RIEC), 0);
    assert_int_equal(store_rollback(f->store), 0);
    (void)store_test_limit_pages(f->store, unlimited);
    assert_int_equal(store_mailbox_count(f->store, RIEC), 0);
    assert_int_equal(
        raw_int(f->path, "SELECT count(*) FROM mailbox WHERE recipient = 'riec/analist'"), 0);
}

/* A publish of n_items items by WOCO (number n): its id, item seqs in
 * item_seq. */
static int64_t row_publish(store_t *store, unsigned n, size_t n_items, int64_t *item_seq)
{
    int64_t publish_id = publish(store, WOCO, n, 1700000000 + n);
    assert_true(publish_id > 0);
    for (size_t i = 0; i < n_items; i++) {
        item_seq[i] = item(store, publish_id, (uint32_t)i);
        assert_true(item_seq[i] > 0);
    }
    return publish_id;
}

/* A row of recipient: entries k of items[k] (seq item_seq[items[k]],
 * index items[k]) under slots[k] of rules; its first seq. */
static int64_t row_add(store_t *store, const char *recipient, unsigned n, const int64_t *item_seq,
                       const uint32_t *items, const uint32_t *slots, size_t count,
                       const store_mailbox_rule_t *rules, size_t n_rules)
{
    store_mailbox_entry_t entries[8];
    uint8_t id[16];
    fill(id, sizeof id, n, 1);
    assert_true(count <= 8);
    for (size_t k = 0; k < count; k++)
        entries[k] = (store_mailbox_entry_t){(uint64_t)item_seq[items[k]], items[k], slots[k]};
    int64_t first = store_delivery_seqs_reserve(store, count);
    assert_true(first > 0);
    store_mailbox_row_t row = {.first_seq = (uint64_t)first,
                               .recipient = recipient,
                               .sender = WOCO,
                               .sender_partner = "woco-servatius",
                               .message_id = id,
                               .accepted_at = 1700000000 + n,
                               .entries = entries,
                               .n = count,
                               .rules = rules,
                               .n_rules = n_rules};
    if (store_mailbox_row_add(store, &row) != 0)
        fail_msg("row of %s: %s", recipient, store_errmsg(store));
    return first;
}

/* ------------------------------------------------------------------ envelopes */

/* The kinds of waiting delivery whose envelope the seal binds. */
enum envelope_kind { ENV_BODY, ENV_REF, ENV_CASE, ENV_CASE_EVENT, ENV_KINDS };
static const char *const envelope_kind_name[ENV_KINDS] = {"signal by body", "signal by reference",
                                                          "case delivery", "case event"};

/* A case for the case kinds, made in the caller's transaction. */
static void envelope_case(store_t *store, char case_id[SCHAKEL_CASE_ID_LEN + 1])
{
    if (store_case_create(store, "zorg-en-veiligheid", "woco-servatius", "casus", NOW, case_id) !=
        0)
        fail_msg("store_case_create: %s", store_errmsg(store));
}

/* A publish by WOCO (number n) with one item, delivered to recipient as
 * `kind` (in case case_id for the case kinds). Returns the seq. */
static int64_t envelope_delivery(store_t *store, enum envelope_kind kind, const char *recipient,
                                 unsigned n, const char *case_id)
{
    int64_t accepted_at = 1700000000 + n;
    int64_t publish_id = publish(store, WOCO, n, accepted_at);
    assert_true(publish_id > 0);
    int64_t item_seq = item(store, publish_id, 0);
    assert_true(item_seq > 0);
    delivery_spec_t spec;
    delivery_spec(&spec, recipient, WOCO, "woco-servatius", n, accepted_at, item_seq, 0);
    spec.d.fields = 0x15u;
    if (kind >= ENV_CASE)
        delivery_spec_case(&spec, case_id, kind == ENV_CASE_EVENT);
    int64_t seq = store_delivery_add(store, &spec.d);
    if (seq <= 0)
        fail_msg("%s: store_delivery_add: %s", envelope_kind_name[kind], store_errmsg(store));
    return seq;
}

typedef struct envelope_seen {
    uint64_t seq;
    int64_t expires_at;
    char purpose[64];
    size_t body_len;
    size_t n;
} envelope_seen_t;

static int collect_envelope(const store_delivery_t *d, void *arg)
{
    envelope_seen_t *seen = arg;
    seen->seq = d->seq;
    seen->expires_at = d->expires_at;
    snprintf(seen->purpose, sizeof seen->purpose, "%s", d->purpose);
    seen->body_len = d->body_len;
    seen->n++;
    return 0;
}

/* recipient's mailbox holds exactly delivery seq, and it opens. */
static void envelope_expect_opens(store_t *store, const char *recipient, int64_t seq,
                                  envelope_seen_t *seen, const char *what)
{
    memset(seen, 0, sizeof *seen);
    int visited = store_mailbox_scan(store, recipient, 0, 10, collect_envelope, seen);
    if (visited != 1 || seen->seq != (uint64_t)seq || seen->body_len == 0)
        fail_msg("%s: scan of %s gave %d (%s)", what, recipient, visited,
                 visited < 0 ? store_errmsg(store) : "");
}

/* recipient's mailbox cannot be read: its delivery does not authenticate,
 * and nothing of it is handed out. */
static void envelope_expect_refused(store_t *store, const char *recipient, const char *what)
{
    envelope_seen_t seen = {.n = 0};
    int visited = store_mailbox_scan(store, recipient, 0, 10, collect_envelope, &seen);
    if (visited != -1 || seen.n != 0)
        fail_msg("%s: a changed envelope was read (%d, purpose \"%s\")", what, visited,
                 seen.purpose);
    if (strstr(store_errmsg(store), "does not authenticate") == NULL)
        fail_msg("%s: %s", what, store_errmsg(store));
    assert_false(store_last_error_is_unavailable(store));
}

/* A rule line's field as the rules column holds it (a netstring), in SQL. */
#define NETSTRING(literal) "(length(" literal ") || ':' || " literal " || ',')"
#define ENVELOPE_PURPOSE "'Aanpak ondermijning'"
#define ENVELOPE_BASIS_TEXT "Convenant RIEC Limburg 2023, art. 6"
#define ENVELOPE_BASIS "'" ENVELOPE_BASIS_TEXT "'"
/* The purpose in a row's rule line changed (bound: the row no longer opens). */
#define ENVELOPE_PURPOSE_SET                                                                       \
    "rules = replace(rules, " NETSTRING(ENVELOPE_PURPOSE) ", " NETSTRING("'Marketing'") ")"

/* Each column of a mailbox row a Deliver frame is built from, changed in
 * the file while its delivery waits (and bytes moved from one text to the
 * next, which only the length prefixes tell apart): every one the seal
 * binds makes the row fail to authenticate; expires_at (the row's
 * earliest expiry, for the index: each delivery's own is in its bound
 * rule line) is not bound, and moved earlier (as acks leave it) the row
 * still opens (later is damage: test_store_mailbox). */
static const struct envelope_change {
    const char *what;
    const char *set; /* NULL: left as it is */
    int bound;
} envelope_changes[] = {
    {"nothing", NULL, 0},
    {"sender", "sender = 'woco-servatius/andere'", 1},
    {"sender_partner", "sender_partner = 'gemeente'", 1},
    {"message_id", "message_id = zeroblob(16)", 1},
    {"publish_id", "publish_id = publish_id + 1", 1},
    {"first_item_seq", "first_item_seq = first_item_seq + 1", 1},
    {"the item index in items", "items = x'01000000'", 1},
    {"accepted_at", "accepted_at = accepted_at - 1", 1},
    {"the rule id",
     "rules = replace(rules, " NETSTRING("'woco-ondermijning'") ", " NETSTRING("'woco-alles'") ")",
     1},
    {"the rule hash",
     "rules = replace(rules, " NETSTRING("'9f2c0d4e'") ", " NETSTRING("'00000000'") ")", 1},
    {"the purpose", ENVELOPE_PURPOSE_SET, 1},
    {"the legal basis",
     "rules = replace(rules, " NETSTRING(ENVELOPE_BASIS) ", " NETSTRING("'Toestemming'") ")", 1},
    {"the rule line's expiry",
     "rules = replace(rules, ':' || expires_at || ',', ':' || (expires_at + 86400) || ',')", 1},
    {"a byte from sender to sender_partner",
     "sender = substr(sender, 1, length(sender) - 1),"
     " sender_partner = substr(sender, -1) || sender_partner",
     1},
    {"a byte from purpose to legal basis",
     "rules = replace(rules, " NETSTRING(ENVELOPE_PURPOSE) " || " NETSTRING(
         ENVELOPE_BASIS) ", (length(" ENVELOPE_PURPOSE ") - 1) || ':' || substr(" ENVELOPE_PURPOSE
                         ", 1, length(" ENVELOPE_PURPOSE ") - 1) || ',' || (length(" ENVELOPE_BASIS
                         ") + 1) || ':' || substr(" ENVELOPE_PURPOSE ", -1) || " ENVELOPE_BASIS
                         " || ',')",
     1},
    {"expires_at (not bound), earlier", "expires_at = expires_at - 86400", 0},
};
#define ENVELOPE_CHANGES (sizeof envelope_changes / sizeof envelope_changes[0])

static void test_envelope_bound_to_seal(void **state)
{
    fixture_t *f = *state;
    static const store_mailbox_rule_t rule = {"woco-ondermijning",      "9f2c0d4e",
                                              "Aanpak ondermijning",    ENVELOPE_BASIS_TEXT,
                                              1700000000 + 365 * 86400, 0x15u};
    static const uint32_t items[2] = {0, 1}, slots[2] = {0, 0};
    char case_id[SCHAKEL_CASE_ID_LEN + 1], recipient[ENV_KINDS][ENVELOPE_CHANGES][48];
    int64_t seq[ENV_KINDS][ENVELOPE_CHANGES], item_seqs[2];
    assert_int_equal(store_begin(f->store), 0);
    envelope_case(f->store, case_id);
    for (int k = 0; k < ENV_KINDS; k++)
        for (size_t c = 0; c < ENVELOPE_CHANGES; c++) {
            snprintf(recipient[k][c], sizeof recipient[k][c], "politie/env-%d-%zu", k, c);
            seq[k][c] = envelope_delivery(f->store, (enum envelope_kind)k, recipient[k][c],
                                          300 + 20 * (unsigned)k + (unsigned)c, case_id);
        }
    /* and a row of two deliveries, for done and pending */
    (void)row_publish(f->store, 399, 2, item_seqs);
    int64_t pair = row_add(f->store, "politie/env-rij", 399, item_seqs, items, slots, 2, &rule, 1);
    assert_int_equal(store_commit(f->store), 0);
    for (int k = 0; k < ENV_KINDS; k++)
        for (size_t c = 0; c < ENVELOPE_CHANGES; c++) {
            if (envelope_changes[c].set == NULL)
                continue;
            char sql[1024];
            snprintf(sql, sizeof sql, "UPDATE mailbox SET %s WHERE first_seq = %lld",
                     envelope_changes[c].set, (long long)seq[k][c]);
            store_fixture_raw_exec(f->path, sql);
        }
    for (int k = 0; k < ENV_KINDS; k++)
        for (size_t c = 0; c < ENVELOPE_CHANGES; c++) {
            char what[128];
            snprintf(what, sizeof what, "%s, %s changed", envelope_kind_name[k],
                     envelope_changes[c].what);
            envelope_seen_t seen;
            if (!envelope_changes[c].bound) {
                envelope_expect_opens(f->store, recipient[k][c], seq[k][c], &seen, what);
                assert_string_equal(seen.purpose, "Aanpak ondermijning");
            } else {
                envelope_expect_refused(f->store, recipient[k][c], what);
            }
        }
    /* done and pending are not bound either: a delivery marked done in the
     * file is withheld, the other still opens (docs/design/mailbox.md 3.6) */
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE mailbox SET done = x'01', pending = 1 WHERE first_seq = %lld",
             (long long)pair);
    store_fixture_raw_exec(f->path, sql);
    envelope_seen_t seen;
    envelope_expect_opens(f->store, "politie/env-rij", pair + 1, &seen, "done and pending changed");
}

/* A rekey re-seals every kind under the new key with its envelope; a
 * case's close (and a reopen) sets its deliveries' expiry and re-seals
 * them, so they still open, telling the new expiry; a case delivery whose
 * envelope was changed takes the new expiry too but keeps its body, and
 * stays unreadable, without holding up the close. */
static void test_envelope_kept_by_rekey_and_case_close(void **state)
{
    fixture_t *f = *state;
    char case_id[SCHAKEL_CASE_ID_LEN + 1], other_case[SCHAKEL_CASE_ID_LEN + 1], who[ENV_KINDS][48];
    int64_t seq[ENV_KINDS];
    assert_int_equal(store_begin(f->store), 0);
    envelope_case(f->store, case_id);
    envelope_case(f->store, other_case);
    for (int k = 0; k < ENV_KINDS; k++) {
        snprintf(who[k], sizeof who[k], "riec/kind-%d", k);
        seq[k] =
            envelope_delivery(f->store, (enum envelope_kind)k, who[k], 400 + (unsigned)k, case_id);
    }
    /* three of the other case's (two to one recipient: the close walks
     * them by recipient and seq), one of them changed in the file below */
    int64_t whole = envelope_delivery(f->store, ENV_CASE_EVENT, "om/heel", 410, other_case);
    int64_t changed = envelope_delivery(f->store, ENV_CASE_EVENT, "om/gewijzigd", 411, other_case);
    int64_t whole_too = envelope_delivery(f->store, ENV_CASE, "om/heel", 412, other_case);
    assert_int_equal(store_commit(f->store), 0);

    uint8_t new_key[STORE_KEY_BYTES], body[256];
    size_t len = 0;
    randombytes_buf(new_key, sizeof new_key);
    store_rekey_counts_t counts;
    assert_int_equal(store_rekey(f->store, new_key, &counts), 0);
    assert_int_equal(counts.mailbox_rows, ENV_KINDS + 3);
    envelope_seen_t seen;
    for (int k = 0; k < ENV_KINDS; k++) {
        envelope_expect_opens(f->store, who[k], seq[k], &seen, envelope_kind_name[k]);
        assert_int_equal(raw_row_open(f->path, new_key, seq[k], body, sizeof body, &len), 0);
        assert_int_equal(raw_row_open(f->path, test_key, seq[k], body, sizeof body, &len), -1);
    }

    /* the close: the case's deliveries tell the new expiry, the signals
     * keep theirs */
    const int64_t closed_until = NOW + 30 * 86400, open_until = STORE_CASE_OPEN_EXPIRY;
    const int64_t expiries[] = {closed_until, open_until}; /* a close, a reopen */
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(store_begin(f->store), 0);
        assert_int_equal(store_case_set_expiry(f->store, case_id, expiries[i]), 0);
        assert_int_equal(store_commit(f->store), 0);
        for (int k = 0; k < ENV_KINDS; k++) {
            envelope_expect_opens(f->store, who[k], seq[k], &seen, envelope_kind_name[k]);
            if (k >= ENV_CASE)
                assert_int_equal(seen.expires_at, expiries[i]);
            else
                assert_int_equal(seen.expires_at, 1700000000 + 400 + k + 365 * 86400);
            assert_int_equal(raw_row_open(f->path, new_key, seq[k], body, sizeof body, &len), 0);
        }
    }

    /* a changed one: counted, named, and left as unreadable as it was */
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE mailbox SET " ENVELOPE_PURPOSE_SET " WHERE first_seq = %lld",
             (long long)changed);
    store_fixture_raw_exec(f->path, sql);
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_case_set_expiry(f->store, other_case, closed_until), 1);
    char named[64];
    snprintf(named, sizeof named, "body of mailbox row %lld does not", (long long)changed);
    assert_non_null(strstr(store_errmsg(f->store), named));
    assert_int_equal(store_commit(f->store), 0);
    for (int64_t after = whole - 1; after < whole_too; after = (int64_t)seen.seq) {
        memset(&seen, 0, sizeof seen);
        assert_int_equal(
            store_mailbox_scan(f->store, "om/heel", (uint64_t)after, 1, collect_envelope, &seen),
            1);
        assert_int_equal(seen.expires_at, closed_until);
    }
    assert_int_equal(seen.seq, whole_too);
    envelope_expect_refused(f->store, "om/gewijzigd", "the other case's changed delivery");
    /* its rule lines kept, its expires_at only ever moves earlier (the
     * close's, later, would hide it from the sweep) */
    snprintf(sql, sizeof sql, "SELECT expires_at FROM mailbox WHERE first_seq = %lld",
             (long long)changed);
    assert_int_equal(raw_int(f->path, sql), 1700000411 + 365 * 86400);
    /* put back as it was sealed, it opens again: its body and its rule
     * line were kept */
    snprintf(sql, sizeof sql,
             "UPDATE mailbox SET rules = replace(rules, " NETSTRING("'Marketing'") ", " NETSTRING(
                 ENVELOPE_PURPOSE) ") WHERE first_seq = %lld",
             (long long)changed);
    store_fixture_raw_exec(f->path, sql);
    envelope_expect_opens(f->store, "om/gewijzigd", changed, &seen, "put back");
    assert_int_equal(seen.expires_at, 1700000411 + 365 * 86400);
    sodium_memzero(new_key, sizeof new_key);
}

static int count_delivery_rows(const store_delivery_t *d, void *arg)
{
    (void)d;
    (*(size_t *)arg)++;
    return 0;
}

static unsigned envelope_progress_calls;
static uint64_t envelope_progress_done;

static void count_envelope_progress(const char *step, uint64_t done)
{
    if (strstr(step, "with their envelopes") == NULL)
        return; /* another step's (the move into mailbox rows after it) */
    envelope_progress_calls++;
    envelope_progress_done = done;
}

/* A store of schema 8 as such a broker left it (every delivery sealed
 * without its envelope): the opening re-seals each under the current
 * layout, reporting every 10,000 rows; the old layout opens none of them
 * any more. One that does not open under the old layout, or whose body is
 * an empty text, is set aside, its columns as they were, and stays named
 * for its opener to record (store_set_aside_unrecorded: no
 * delivery.set_aside entry names it, at this opening or the next) until
 * an entry does; the rest is migrated all the same. */
static void test_envelope_migration_from_schema_8(void **state)
{
    fixture_t *f = *state;
    enum { MANY = 20000 };
    char case_id[SCHAKEL_CASE_ID_LEN + 1], who[ENV_KINDS][48];
    int64_t seq[ENV_KINDS];
    assert_int_equal(store_begin(f->store), 0);
    envelope_case(f->store, case_id);
    for (int k = 0; k < ENV_KINDS; k++) {
        snprintf(who[k], sizeof who[k], "riec/oud-%d", k);
        seq[k] =
            envelope_delivery(f->store, (enum envelope_kind)k, who[k], 500 + (unsigned)k, case_id);
    }
    int64_t publish_id = publish(f->store, WOCO, 600, 1700000600);
    int64_t item_seq = item(f->store, publish_id, 0);
    for (unsigned i = 0; i < MANY - ENV_KINDS; i++) {
        delivery_spec_t spec;
        delivery_spec(&spec, POLITIE, WOCO, "woco-servatius", 600, 1700000600, item_seq, 0);
        spec.d.by_ref = 1;
        spec.d.fields = i;
        assert_true(store_delivery_add(f->store, &spec.d) > 0);
    }
    assert_int_equal(store_commit(f->store), 0);
    store_close(&f->store);
    store_fixture_back_to_12(f->path, test_key, NULL);
    assert_int_equal(store_fixture_deliveries_before_9(f->path, test_key), MANY);
    store_fixture_raw_exec(f->path, "PRAGMA user_version = 8");
    uint8_t body[256];
    size_t len = 0;
    assert_int_equal(store_fixture_delivery_open(f->path, test_key, seq[ENV_CASE],
                                                 STORE_FIXTURE_LAYOUT_ENVELOPE, body, sizeof body,
                                                 &len),
                     -1);

    /* one that does not open under the old layout: set aside, as it is
     * (each column it had, in the mailbox_set_aside row it becomes) */
    char sql[512], was[4096], copied[4096];
    snprintf(sql, sizeof sql, "UPDATE deliveries SET recipient = 'om/parket' WHERE seq = %lld",
             (long long)seq[ENV_REF]);
    store_fixture_raw_exec(f->path, sql);
    raw_delivery_quoted(f->path, "deliveries", "seq", "item_seq", seq[ENV_REF], was, sizeof was);
    /* and one whose body is an empty text: damage, not out of memory */
    snprintf(sql, sizeof sql, "UPDATE deliveries SET body = '' WHERE seq = %lld",
             (long long)seq[ENV_CASE_EVENT]);
    store_fixture_raw_exec(f->path, sql);

    envelope_progress_calls = 0;
    store_set_progress(count_envelope_progress);
    f->store = store_fixture_open(f->path, test_key);
    store_set_progress(NULL);
    assert_int_equal(envelope_progress_calls, 2);
    assert_int_equal(envelope_progress_done, MANY);
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), store_schema_version());
    raw_delivery_quoted(f->path, "mailbox_set_aside", "first_seq", "first_item_seq", seq[ENV_REF],
                        copied, sizeof copied);
    assert_string_equal(copied, was);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM mailbox WHERE first_seq = %lld",
             (long long)seq[ENV_REF]);
    assert_int_equal(raw_int(f->path, sql), 0);
    uint64_t unrecorded[4];
    int64_t lower = seq[ENV_REF] < seq[ENV_CASE_EVENT] ? seq[ENV_REF] : seq[ENV_CASE_EVENT];
    int64_t higher = seq[ENV_REF] ^ seq[ENV_CASE_EVENT] ^ lower;
    assert_int_equal(store_set_aside_unrecorded(f->store, 0, unrecorded, 4), 2);
    assert_int_equal(unrecorded[0], (uint64_t)lower);
    assert_int_equal(unrecorded[1], (uint64_t)higher);
    assert_int_equal(store_set_aside_unrecorded(f->store, 0, unrecorded, 1), 1);
    assert_int_equal(store_set_aside_unrecorded(f->store, (uint64_t)lower, unrecorded, 4), 1);
    assert_int_equal(unrecorded[0], (uint64_t)higher);
    assert_int_equal(store_set_aside_unrecorded(f->store, (uint64_t)higher, unrecorded, 4), 0);
    assert_int_equal(store_set_aside_unrecorded(f->store, 0, unrecorded, 0), -1);
    store_set_aside_t aside;
    assert_int_equal(store_set_aside_get(f->store, (uint64_t)seq[ENV_BODY], &aside), 0);
    assert_int_equal(store_set_aside_get(f->store, (uint64_t)seq[ENV_REF], &aside), 1);
    assert_int_equal(aside.row.view.seq, seq[ENV_REF]);
    assert_string_equal(aside.row.view.recipient, "om/parket");
    assert_string_equal(aside.row.view.rule_id, "woco-ondermijning");
    if (strstr(aside.reason, "does not authenticate") == NULL ||
        strstr(aside.reason, "schema 8") == NULL)
        fail_msg("reason: %s", aside.reason);
    assert_int_equal(store_set_aside_get(f->store, (uint64_t)seq[ENV_CASE_EVENT], &aside), 1);
    if (strstr(aside.reason, "is missing") == NULL)
        fail_msg("reason: %s", aside.reason);
    assert_int_equal(store_set_aside_count(f->store), 2);
    assert_int_equal(store_mailbox_count(f->store, "om/parket"), 0);
    /* still unrecorded at the next opening; an entry naming one ends it
     * (stand-ins: the trail's own entries are test_audit's) */
    reopen(f);
    assert_int_equal(store_set_aside_unrecorded(f->store, 0, unrecorded, 4), 2);
    snprintf(sql, sizeof sql,
             "INSERT INTO audit (seq, at, event, delivery_seq, hash) VALUES"
             " (1000, 0, 'delivery.expired', %lld, zeroblob(32)),"
             " (1001, 0, 'delivery.set_aside', %lld, zeroblob(32))",
             (long long)lower, (long long)higher);
    store_fixture_raw_exec(f->path, sql);
    assert_int_equal(store_set_aside_unrecorded(f->store, 0, unrecorded, 4), 1);
    assert_int_equal(unrecorded[0], (uint64_t)lower);
    envelope_seen_t seen;
    for (int k = 0; k < ENV_KINDS; k++) {
        if (k == ENV_REF || k == ENV_CASE_EVENT)
            continue; /* set aside */
        envelope_expect_opens(f->store, who[k], seq[k], &seen, envelope_kind_name[k]);
        assert_int_equal(raw_row_open(f->path, test_key, seq[k], body, sizeof body, &len), 0);
    }
    len = 0;
    assert_int_equal(store_mailbox_scan(f->store, POLITIE, 0, MANY, count_delivery_rows, &len),
                     MANY - ENV_KINDS);
    assert_int_equal(len, MANY - ENV_KINDS);
    /* the envelope is bound from now on */
    snprintf(sql, sizeof sql, "UPDATE mailbox SET %s WHERE first_seq = %lld", ENVELOPE_PURPOSE_SET,
             (long long)seq[ENV_BODY]);
    store_fixture_raw_exec(f->path, sql);
    envelope_expect_refused(f->store, who[ENV_BODY], "changed after the migration");
}

/* ------------------------------------------------------------------ a store of schema 12 */

/* One delivery as a scan hands it out, every field copied. */
typedef struct v12_view {
    uint64_t seq, item_seq;
    uint8_t message_id[16];
    uint32_t item_index, fields;
    char recipient[64], sender[64], sender_partner[64], rule_id[64], rule_hash[72], purpose[64],
        legal_basis[64], case_id[16];
    int64_t accepted_at, expires_at;
    uint8_t body[64];
    size_t body_len;
    int is_case_event, by_ref, in_case;
} v12_view_t;

typedef struct v12_views {
    v12_view_t v[16];
    size_t n;
} v12_views_t;

static void v12_copy_text(char *out, size_t cap, const char *text)
{
    assert_non_null(text);
    assert_true(strlen(text) < cap);
    strcpy(out, text);
}

static int v12_view_collect(const store_delivery_t *d, void *arg)
{
    v12_views_t *views = arg;
    assert_true(views->n < sizeof views->v / sizeof views->v[0]);
    v12_view_t *v = &views->v[views->n++];
    memset(v, 0, sizeof *v);
    v->seq = d->seq;
    v->item_seq = d->item_seq;
    memcpy(v->message_id, d->message_id, sizeof v->message_id);
    v->item_index = d->item_index;
    v->fields = d->fields;
    v12_copy_text(v->recipient, sizeof v->recipient, d->recipient);
    v12_copy_text(v->sender, sizeof v->sender, d->sender);
    v12_copy_text(v->sender_partner, sizeof v->sender_partner, d->sender_partner);
    v12_copy_text(v->rule_id, sizeof v->rule_id, d->rule_id);
    v12_copy_text(v->rule_hash, sizeof v->rule_hash, d->rule_hash);
    v12_copy_text(v->purpose, sizeof v->purpose, d->purpose);
    v12_copy_text(v->legal_basis, sizeof v->legal_basis, d->legal_basis);
    v->in_case = d->case_id != NULL;
    if (v->in_case)
        v12_copy_text(v->case_id, sizeof v->case_id, d->case_id);
    v->accepted_at = d->accepted_at;
    v->expires_at = d->expires_at;
    assert_true(d->body_len <= sizeof v->body);
    if (d->body_len > 0)
        memcpy(v->body, d->body, d->body_len);
    v->body_len = d->body_len;
    v->is_case_event = d->is_case_event;
    v->by_ref = d->by_ref;
    return 0;
}

static const char *const v12_recipients[] = {POLITIE, RIEC, "om/parket"};

/* Every pending delivery of v12_recipients, as the push would see them. */
static void v12_scan_all(store_t *store, v12_views_t *views)
{
    views->n = 0;
    for (size_t r = 0; r < sizeof v12_recipients / sizeof v12_recipients[0]; r++)
        if (store_mailbox_scan(store, v12_recipients[r], 0, 16, v12_view_collect, views) < 0)
            fail_msg("scan of %s: %s", v12_recipients[r], store_errmsg(store));
}

/* Two views of one delivery agree, field by field. */
static void v12_view_expect(const v12_view_t *got, const v12_view_t *want)
{
    assert_int_equal(got->seq, want->seq);
    assert_string_equal(got->recipient, want->recipient);
    assert_int_equal(got->item_seq, want->item_seq);
    assert_memory_equal(got->message_id, want->message_id, sizeof got->message_id);
    assert_int_equal(got->item_index, want->item_index);
    assert_string_equal(got->sender, want->sender);
    assert_string_equal(got->sender_partner, want->sender_partner);
    assert_string_equal(got->rule_id, want->rule_id);
    assert_string_equal(got->rule_hash, want->rule_hash);
    assert_string_equal(got->purpose, want->purpose);
    assert_string_equal(got->legal_basis, want->legal_basis);
    assert_int_equal(got->accepted_at, want->accepted_at);
    assert_int_equal(got->expires_at, want->expires_at);
    assert_int_equal(got->in_case, want->in_case);
    assert_string_equal(got->case_id, want->case_id);
    assert_int_equal(got->is_case_event, want->is_case_event);
    assert_int_equal(got->by_ref, want->by_ref);
    assert_int_equal(got->fields, want->fields);
    assert_int_equal(got->body_len, want->body_len);
    assert_memory_equal(got->body, want->body, got->body_len);
}

/* A store of today's API taken back to schema 12 (store_fixture_v12.c)
 * and opened again: every waiting delivery of rows of several deliveries
 * under several rules (one of them acked), of a row of one, of a case's
 * delivery and event scans as it did, field by field; the set-aside row's
 * delivery that was not acked is set aside as before, with its reason;
 * the seqs go on past the highest handed out. In the schema-12 form each
 * delivery is a row of deliveries whose body opens under the layout
 * store.h documents, holding its mask or its case body. */
static void test_back_to_schema_12_and_migrated_again(void **state)
{
    fixture_t *f = *state;
    static const store_mailbox_rule_t rules[2] = {
        {"woco-ondermijning", "9f2c0d4e", "Aanpak ondermijning",
         "Convenant RIEC Limburg 2023, art. 6", 1700000800 + 365 * 86400, 0x15u},
        {"woco-zorg", "77aa0b1c", "Zorg en veiligheid", "Wet verplichte ggz, art. 8:32",
         1700000800 + 30 * 86400, 0x03u},
    };
    static const uint32_t four[4] = {0, 1, 2, 3}, slots4[4] = {0, 1, 0, 1};
    static const uint32_t two[2] = {1, 3}, slots2[2] = {1, 1};
    char case_id[SCHAKEL_CASE_ID_LEN + 1];
    int64_t items[4], aside_items[2];
    assert_int_equal(store_begin(f->store), 0);
    case_new(f->store, case_id);
    (void)row_publish(f->store, 800, 4, items);
    int64_t politie = row_add(f->store, POLITIE, 800, items, four, slots4, 4, rules, 2);
    (void)row_add(f->store, RIEC, 800, items, two, slots2, 2, rules, 2);
    (void)deliver_new(f->store, POLITIE, 801);
    (void)deliver_case(f->store, RIEC, 802, case_id, "het dossier van de casus");
    (void)envelope_delivery(f->store, ENV_CASE_EVENT, "om/parket", 803, case_id);
    (void)row_publish(f->store, 804, 2, aside_items);
    int64_t aside = row_add(f->store, "om/afgezet", 804, aside_items, four, slots4, 2, rules, 2);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(ack_alone(f->store, POLITIE, (uint64_t)politie + 1), 1);
    assert_int_equal(ack_alone(f->store, "om/afgezet", (uint64_t)aside + 1), 1);
    raw_flip_body_byte(f->path, aside, 30);
    store_mailbox_aside_t moved;
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(
        store_mailbox_row_set_aside(f->store, "om/afgezet", (uint64_t)aside, SET_ASIDE_AT, &moved),
        1);
    assert_int_equal(store_commit(f->store), 0);
    store_set_aside_t aside_was;
    assert_int_equal(store_set_aside_get(f->store, (uint64_t)aside, &aside_was), 1);

    v12_views_t before, after;
    v12_scan_all(f->store, &before);
    assert_int_equal(before.n, 3 + 1 + 2 + 1 + 1);
    const char *high_sql = "SELECT value FROM meta WHERE name = 'delivery_seq_high'";
    int64_t high = raw_int(f->path, high_sql);
    store_close(&f->store);

    store_fixture_v12_t written;
    store_fixture_back_to_12(f->path, test_key, &written);
    assert_int_equal(written.deliveries, before.n);
    assert_int_equal(written.set_aside, 1);
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), 12);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sqlite_master"
                                      " WHERE name LIKE 'mailbox%'"),
                     0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM deliveries"), (int64_t)before.n);
    assert_int_equal(raw_int(f->path, "SELECT seq FROM sqlite_sequence WHERE name = 'deliveries'"),
                     high);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM deliveries_set_aside WHERE seq = %lld AND set_aside_at = %lld"
             " AND by_ref = 1 AND rule_id = 'woco-ondermijning'",
             (long long)aside, SET_ASIDE_AT);
    assert_int_equal(raw_int(f->path, sql), 1);
    for (size_t i = 0; i < before.n; i++) {
        const v12_view_t *v = &before.v[i];
        uint8_t body[64], mask[4] = {(uint8_t)v->fields, (uint8_t)(v->fields >> 8),
                                     (uint8_t)(v->fields >> 16), (uint8_t)(v->fields >> 24)};
        size_t len = 0;
        assert_int_equal(store_fixture_delivery_open(f->path, test_key, (int64_t)v->seq,
                                                     STORE_FIXTURE_LAYOUT_ENVELOPE, body,
                                                     sizeof body, &len),
                         0);
        if (v->in_case) {
            assert_int_equal(len, v->body_len);
            assert_memory_equal(body, v->body, len);
        } else {
            assert_int_equal(len, sizeof mask);
            assert_memory_equal(body, mask, sizeof mask);
        }
    }

    f->store = store_fixture_open(f->path, test_key);
    assert_int_equal(store_migrated_from(f->store, NULL), 12);
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), 13);
    v12_scan_all(f->store, &after);
    assert_int_equal(after.n, before.n);
    for (size_t i = 0; i < before.n; i++)
        v12_view_expect(&after.v[i], &before.v[i]);
    store_set_aside_t aside_now;
    assert_int_equal(store_set_aside_get(f->store, (uint64_t)aside, &aside_now), 1);
    assert_int_equal(aside_now.row.view.seq, aside_was.row.view.seq);
    assert_string_equal(aside_now.row.view.recipient, aside_was.row.view.recipient);
    assert_int_equal(aside_now.row.view.item_seq, aside_was.row.view.item_seq);
    assert_string_equal(aside_now.row.view.rule_id, aside_was.row.view.rule_id);
    assert_string_equal(aside_now.row.view.rule_hash, aside_was.row.view.rule_hash);
    assert_int_equal(aside_now.row.view.expires_at, aside_was.row.view.expires_at);
    assert_string_equal(aside_now.reason, aside_was.reason);
    assert_int_equal(store_set_aside_get(f->store, (uint64_t)aside + 1, &aside_now), 0);
    assert_int_equal(store_set_aside_count(f->store), 1);
    assert_true(deliver_new(f->store, POLITIE, 805) > high);
}

/* ------------------------------------------------------------------ store epoch */

/* The store's epoch as it is in the file (in clear in meta). */
static size_t raw_epoch(const char *path, uint8_t *out, size_t cap)
{
    sqlite3 *db = store_fixture_raw_open(path);
    size_t len =
        raw_blob(db, "SELECT value FROM meta WHERE name = 'store_epoch' AND ?1 = 0", 0, out, cap);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return len;
}

/* Made with the store, 16 bytes in clear in meta; kept by a reopen and a
 * rekey; new after store_epoch_renew once committed (the handle reports
 * it at once, a reopen too); a store without one (from before epochs)
 * gets one at its first open, which a reopen keeps; one that is not 16
 * bytes refuses the open. */
static void test_store_epoch_made_kept_renewed(void **state)
{
    fixture_t *f = *state;
    uint8_t first[16], again[16], was[16], now[16], in_file[32], zero[16] = {0};
    store_epoch(f->store, first);
    assert_memory_not_equal(first, zero, 16);
    assert_int_equal(raw_epoch(f->path, in_file, sizeof in_file), 16);
    assert_memory_equal(in_file, first, 16);
    reopen(f);
    store_epoch(f->store, again);
    assert_memory_equal(again, first, 16);

    uint8_t new_key[STORE_KEY_BYTES];
    randombytes_buf(new_key, sizeof new_key);
    assert_int_equal(store_rekey(f->store, new_key, NULL), 0);
    store_epoch(f->store, again);
    assert_memory_equal(again, first, 16);
    store_close(&f->store);
    f->store = store_fixture_open(f->path, new_key);
    store_epoch(f->store, again);
    assert_memory_equal(again, first, 16);

    assert_int_equal(store_epoch_renew(f->store, NULL, was, now), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_memory_equal(was, first, 16);
    assert_memory_not_equal(now, first, 16);
    store_epoch(f->store, again);
    assert_memory_equal(again, now, 16);
    store_close(&f->store);
    f->store = store_fixture_open(f->path, new_key);
    store_epoch(f->store, again);
    assert_memory_equal(again, now, 16);
    store_close(&f->store);

    /* a store from before epochs */
    store_fixture_raw_exec(f->path, "DELETE FROM meta WHERE name = 'store_epoch'");
    f->store = store_fixture_open(f->path, new_key);
    store_epoch(f->store, first);
    assert_memory_not_equal(first, now, 16);
    assert_int_equal(raw_epoch(f->path, in_file, sizeof in_file), 16);
    assert_memory_equal(in_file, first, 16);
    store_close(&f->store);
    f->store = store_fixture_open(f->path, new_key);
    store_epoch(f->store, again);
    assert_memory_equal(again, first, 16);
    store_close(&f->store);

    /* a damaged one: refused, and left as it is */
    store_fixture_raw_exec(f->path, "UPDATE meta SET value = x'0102' WHERE name = 'store_epoch'");
    char err[512] = "";
    assert_null(open_with(f->path, new_key, err, sizeof err));
    assert_non_null(strstr(err, "store epoch"));
    assert_int_equal(raw_epoch(f->path, in_file, sizeof in_file), 2);
    store_fixture_raw_exec(f->path, "UPDATE meta SET value = x'"
                                    "00112233445566778899aabbccddeeff"
                                    "' WHERE name = 'store_epoch'");
    f->store = store_fixture_open(f->path, new_key);
}

/* The floor seq as it is in the file: its length (0: no row). */
static size_t raw_floor(const char *path, uint8_t out[8])
{
    sqlite3 *db = store_fixture_raw_open(path);
    sqlite3_stmt *stmt = NULL;
    size_t len = 0;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT value FROM meta WHERE name = 'store_epoch_floor'",
                                        -1, &stmt, NULL),
                     SQLITE_OK);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        len = (size_t)sqlite3_column_bytes(stmt, 0);
        assert_int_equal(len, 8);
        memcpy(out, sqlite3_column_blob(stmt, 0), 8);
    } else {
        assert_int_equal(rc, SQLITE_DONE);
    }
    assert_int_equal(sqlite3_finalize(stmt), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return len;
}

static void expect_floor(const store_t *store, int known, uint64_t floor)
{
    uint64_t got = 77;
    assert_int_equal(store_epoch_floor(store, &got), known);
    assert_int_equal(got, known ? floor : 0);
}

/* The epoch's floor seq: 0 for a store made new (in meta, 8 bytes
 * big-endian); the one store_epoch_renew is given, in its transaction
 * (gone with a rollback), kept by a reopen and a rekey; unknown (no row)
 * when it is given none, and for a store whose epoch was renewed by a
 * broker from before floors; a store without an epoch gets floor 0 with
 * it. A floor above INT64_MAX is refused; a row that is not 8 bytes of a
 * seq refuses the open. */
static void test_store_epoch_floor(void **state)
{
    fixture_t *f = *state;
    uint8_t was[16], now[16], raw[8];
    static const uint8_t zero[8] = {0};
    static const uint8_t big_endian[8] = {0, 0, 0, 0, 0x3b, 0x9a, 0xca, 0x2a};
    expect_floor(f->store, 1, 0);
    assert_int_equal(raw_floor(f->path, raw), 8);
    assert_memory_equal(raw, zero, 8);

    uint64_t floor = 1000000042, too_big = (uint64_t)INT64_MAX + 1;
    assert_int_equal(store_epoch_renew(f->store, &too_big, was, now), -1);
    assert_non_null(strstr(store_errmsg(f->store), "floor"));
    store_rollback(f->store);
    assert_int_equal(store_epoch_renew(f->store, &floor, was, now), 0);
    expect_floor(f->store, 1, floor);
    store_rollback(f->store);
    reopen(f);
    expect_floor(f->store, 1, 0);
    assert_int_equal(store_epoch_renew(f->store, &floor, was, now), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(raw_floor(f->path, raw), 8);
    assert_memory_equal(raw, big_endian, 8);
    reopen(f);
    expect_floor(f->store, 1, floor);
    uint8_t new_key[STORE_KEY_BYTES];
    randombytes_buf(new_key, sizeof new_key);
    assert_int_equal(store_rekey(f->store, new_key, NULL), 0);
    expect_floor(f->store, 1, floor);
    store_close(&f->store);
    f->store = store_fixture_open(f->path, new_key);
    expect_floor(f->store, 1, floor);

    /* unknown: no row */
    assert_int_equal(store_epoch_renew(f->store, NULL, was, now), 0);
    assert_int_equal(store_commit(f->store), 0);
    expect_floor(f->store, 0, 0);
    assert_int_equal(raw_floor(f->path, raw), 0);
    store_close(&f->store);
    f->store = store_fixture_open(f->path, new_key);
    expect_floor(f->store, 0, 0);
    store_close(&f->store);

    /* a store from before epochs gets floor 0 with its epoch */
    store_fixture_raw_exec(f->path, "DELETE FROM meta WHERE name = 'store_epoch'");
    f->store = store_fixture_open(f->path, new_key);
    expect_floor(f->store, 1, 0);
    store_close(&f->store);
    /* one with an epoch and no floor (renewed before floors): unknown */
    store_fixture_raw_exec(f->path, "DELETE FROM meta WHERE name = 'store_epoch_floor'");
    f->store = store_fixture_open(f->path, new_key);
    expect_floor(f->store, 0, 0);
    store_close(&f->store);

    /* damaged rows: refused, and left as they are */
    static const char *const damaged[] = {"x'010203'", "x'8000000000000001'",
                                          "x'000000000000000001'"};
    for (size_t i = 0; i < sizeof damaged / sizeof damaged[0]; i++) {
        char sql[160], err[512] = "";
        snprintf(sql, sizeof sql,
                 "INSERT OR REPLACE INTO meta (name, value) VALUES ('store_epoch_floor', %s)",
                 damaged[i]);
        store_fixture_raw_exec(f->path, sql);
        assert_null(open_with(f->path, new_key, err, sizeof err));
        if (strstr(err, "store epoch floor") == NULL)
            fail_msg("row %zu: %s", i, err);
    }
    store_fixture_raw_exec(f->path, "UPDATE meta SET value = x'0000000000000007' WHERE name = "
                                    "'store_epoch_floor'");
    f->store = store_fixture_open(f->path, new_key);
    expect_floor(f->store, 1, 7);
}

/* ------------------------------------------------------------------ partners' bytes */

#define SEALED_ITEM (48 + 40) /* item()'s body, sealed */

static void assert_bytes_verified(fixture_t *f)
{
    char problem[200] = "";
    int rc = store_partner_bytes_verify(f->store, problem, sizeof problem);
    if (rc != 0)
        fail_msg("partner bytes: %d %s (%s)", rc, problem, store_errmsg(f->store));
}

/* The sealed bytes of each sender partner's items: followed on every
 * insert, counted only once committed, dropped by a rollback, taken out
 * by retention, read back at an open, and made by the migration from
 * schema 10 with a walk of the items; the verify finds a sum that drifted. */
static void test_partner_bytes_followed(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(store_partner_bytes(f->store, "gemeente"), 0);
    /* A turn that rolls back leaves nothing counted. */
    assert_int_equal(store_begin(f->store), 0);
    int64_t p1 = publish(f->store, GEMEENTE, 1, 100);
    assert_true(item(f->store, p1, 0) > 0);
    assert_int_equal(store_partner_bytes(f->store, "gemeente"), SEALED_ITEM); /* its own turn */
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(store_partner_bytes(f->store, "gemeente"), 0);
    assert_bytes_verified(f);
    /* Committed: two partners, counted apart. */
    assert_int_equal(store_begin(f->store), 0);
    p1 = publish(f->store, GEMEENTE, 1, 100);
    assert_true(item(f->store, p1, 0) > 0 && item(f->store, p1, 1) > 0);
    int64_t p2 = publish(f->store, WOCO, 2, 100);
    assert_true(item(f->store, p2, 0) > 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(store_partner_bytes(f->store, "gemeente"), 2 * SEALED_ITEM);
    assert_int_equal(store_partner_bytes(f->store, "woco-servatius"), SEALED_ITEM);
    assert_int_equal(store_sealed_len(48), SEALED_ITEM);
    assert_bytes_verified(f);
    /* An item written outside a transaction (to a publish of an earlier
     * one: its sender read back) counts at once. */
    int64_t p3 = publish(f->store, POLITIE, 3, 100);
    assert_true(item(f->store, p3, 0) > 0);
    assert_int_equal(store_partner_bytes(f->store, "politie"), SEALED_ITEM);
    assert_bytes_verified(f);
    /* Read back at an open, from stored_bytes. */
    reopen(f);
    assert_int_equal(store_partner_bytes(f->store, "gemeente"), 2 * SEALED_ITEM);
    assert_int_equal(store_partner_bytes(f->store, "politie"), SEALED_ITEM);
    assert_bytes_verified(f);
    /* A sum changed outside the broker is found. */
    store_fixture_raw_exec(f->path,
                           "UPDATE stored_bytes SET bytes = bytes + 1 WHERE partner = 'gemeente'");
    char problem[200] = "";
    assert_int_equal(store_partner_bytes_verify(f->store, problem, sizeof problem), 1);
    assert_non_null(strstr(problem, "gemeente"));
    /* The migration from schema 10 sums the items, whatever the table said. */
    store_close(&f->store);
    store_fixture_back_to_12(f->path, test_key, NULL);
    store_fixture_raw_exec(f->path, "DROP TABLE stored_bytes; PRAGMA user_version = 10;");
    f->store = store_fixture_open(f->path, test_key);
    assert_int_equal(store_partner_bytes(f->store, "gemeente"), 2 * SEALED_ITEM);
    assert_bytes_verified(f);
    /* Retention takes the items out of their partners' sums, in its turn. */
    assert_int_equal(store_begin(f->store), 0);
    assert_true(store_expire(f->store, 1000, 100, NULL, NULL) >= 4);
    assert_int_equal(store_partner_bytes(f->store, "gemeente"), 0);
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(store_partner_bytes(f->store, "gemeente"), 2 * SEALED_ITEM);
    assert_int_equal(store_begin(f->store), 0);
    assert_true(store_expire(f->store, 1000, 100, NULL, NULL) >= 4);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(store_partner_bytes(f->store, "gemeente"), 0);
    assert_int_equal(store_partner_bytes(f->store, "woco-servatius"), 0);
    assert_int_equal(store_partner_bytes(f->store, "politie"), 0);
    assert_bytes_verified(f);
    reopen(f);
    assert_int_equal(store_partner_bytes(f->store, "gemeente"), 0);
    assert_bytes_verified(f);
}

/* The room left: the file system's, plus the store's free pages while
 * the file system keeps the WAL's reserve (test_space crosses it). */
static void test_space_measured(void **state)
{
    fixture_t *f = *state;
    store_space_t space;
    assert_int_equal(store_space(f->store, &space), 0);
    assert_true(space.fs_free_bytes > 0);
    if (space.fs_free_bytes >= (uint64_t)SCHAKEL_STORE_WAL_RESERVE_BYTES)
        assert_int_equal(space.free_bytes, space.fs_free_bytes + space.freelist_bytes);
    else
        assert_int_equal(space.free_bytes, space.fs_free_bytes);
}

/* The migration to schema 11 walks every item once and tells the
 * progress hook as it goes (every 10,000 items, and once before), so that
 * schakeld keeps asking systemd for start-up time through a walk of
 * millions; the sums it writes are exact. */
static unsigned bytes_progress_calls;
static uint64_t bytes_progress_done;

static void count_bytes_progress(const char *step, uint64_t done)
{
    if (strstr(step, "bytes per partner") == NULL)
        return;
    bytes_progress_calls++;
    bytes_progress_done = done;
}

static void test_bytes_migration_reports_progress(void **state)
{
    fixture_t *f = *state;
    int64_t p1 = publish(f->store, GEMEENTE, 1, 100);
    int64_t p2 = publish(f->store, WOCO, 2, 100);
    assert_true(p1 > 0 && p2 > 0);
    store_close(&f->store);
    store_fixture_back_to_12(f->path, test_key, NULL);
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO items (publish_id, item_index, body, expires_at)"
             " WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 24999)"
             " SELECT CASE WHEN i %% 5 = 0 THEN %lld ELSE %lld END, i, zeroblob(1 + i %% 7), 100"
             " FROM n;"
             "DROP TABLE stored_bytes; PRAGMA user_version = 10;",
             (long long)p2, (long long)p1);
    store_fixture_raw_exec(f->path, sql);
    snprintf(sql, sizeof sql, "SELECT sum(length(body)) FROM items WHERE publish_id = %lld",
             (long long)p1);
    int64_t gemeente = raw_int(f->path, sql);
    snprintf(sql, sizeof sql, "SELECT sum(length(body)) FROM items WHERE publish_id = %lld",
             (long long)p2);
    int64_t woco = raw_int(f->path, sql);
    bytes_progress_calls = 0;
    bytes_progress_done = 0;
    store_set_progress(count_bytes_progress);
    f->store = store_fixture_open(f->path, test_key);
    store_set_progress(NULL);
    assert_int_equal(bytes_progress_calls, 3); /* before, at 10,000 and 20,000 */
    assert_int_equal(bytes_progress_done, 20000);
    assert_bytes_verified(f);
    assert_int_equal(store_partner_bytes(f->store, "gemeente"), gemeente);
    assert_int_equal(store_partner_bytes(f->store, "woco-servatius"), woco);
    assert_true(gemeente > 0 && woco > 0);
}

/* The highest delivery seq handed out is meta's delivery_seq_high
 * (schema 12): written before a delivery added on its own, once at the
 * commit of a transaction that added some, not at all by one rolled back;
 * the counters start past it when nothing else remembers the seqs (every
 * delivery acked, sqlite_sequence set back), a restore's move writes it,
 * a file's counters read it, and a value that is no integer refuses the
 * open. */
static void test_delivery_seq_high_kept_in_meta(void **state)
{
    fixture_t *f = *state;
    const char *high_sql = "SELECT value FROM meta WHERE name = 'delivery_seq_high'";
    assert_int_equal(raw_int(f->path, high_sql), 0); /* a new store's */
    int64_t alone = deliver_new(f->store, POLITIE, 1);
    assert_int_equal(raw_int(f->path, high_sql), alone);
    /* In a transaction: nothing until the commit, then the last seq. */
    assert_int_equal(store_begin(f->store), 0);
    int64_t last = 0;
    for (unsigned i = 2; i <= 4; i++)
        last = deliver_new(f->store, POLITIE, i);
    assert_int_equal(raw_int(f->path, high_sql), alone);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(raw_int(f->path, high_sql), last);
    /* Rolled back: the mark stays (those seqs stay taken in memory). */
    assert_int_equal(store_begin(f->store), 0);
    int64_t lost = deliver_new(f->store, POLITIE, 5);
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(raw_int(f->path, high_sql), last);
    /* A turn without deliveries leaves it as it is. */
    assert_int_equal(store_begin(f->store), 0);
    assert_true(publish(f->store, WOCO, 6, 1700000006) > 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(raw_int(f->path, high_sql), last);
    /* Every delivery acked and sqlite_sequence set back: the mark alone
     * keeps the next seq past every one handed out and committed. */
    for (int64_t seq = alone; seq <= last; seq++)
        assert_int_equal(ack_alone(f->store, POLITIE, (uint64_t)seq), 1);
    store_close(&f->store);
    store_fixture_raw_exec(f->path, "UPDATE sqlite_sequence SET seq = 0 WHERE name = 'deliveries'");
    f->store = store_fixture_open(f->path, test_key);
    int64_t next = deliver_new(f->store, POLITIE, 7);
    assert_int_equal(next, last + 1);
    assert_true(lost > last); /* never committed: handed out again after the reopen */
    /* A restore's move writes it; a file's counters read it. */
    store_counters_t after, of_file;
    char err[256] = "";
    assert_int_equal(store_counters_move(f->store, 1000, 10, NULL, NULL, &after), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(after.next_delivery_seq, (uint64_t)next + 1 + 1000);
    assert_int_equal(raw_int(f->path, high_sql), (int64_t)after.next_delivery_seq - 1);
    store_close(&f->store);
    store_fixture_raw_exec(f->path,
                           "UPDATE meta SET value = 5000000 WHERE name = 'delivery_seq_high'");
    if (store_counters_of_file(f->path, &of_file, err, sizeof err) != 0)
        fail_msg("counters of the file: %s", err);
    assert_int_equal(of_file.next_delivery_seq, 5000001);
    f->store = store_fixture_open(f->path, test_key);
    assert_int_equal(deliver_new(f->store, POLITIE, 8), 5000001);
    store_close(&f->store);
    /* No integer: refused by the open and by the file's counters. */
    store_fixture_raw_exec(f->path,
                           "UPDATE meta SET value = x'00ff' WHERE name = 'delivery_seq_high'");
    char open_err[256] = "";
    assert_null(store_open(f->path, test_key, STORE_OPEN_EXISTING, open_err, sizeof open_err));
    if (strstr(open_err, "sequence numbers out of range") == NULL)
        fail_msg("open: %s", open_err);
    assert_int_equal(store_counters_of_file(f->path, &of_file, err, sizeof err), -1);
    assert_non_null(strstr(err, "a counter out of range"));
    store_fixture_raw_exec(f->path,
                           "UPDATE meta SET value = 5000001 WHERE name = 'delivery_seq_high'");
    f->store = store_fixture_open(f->path, test_key);
}

/* The migration to schema 12 sets delivery_seq_high from the highest of
 * sqlite_sequence and every seq a table holds (here a tombstone's, then
 * sqlite_sequence's), and never lowers a value the row had (a store set
 * back by hand). */
static void test_delivery_seq_high_migrated_from_schema_11(void **state)
{
    fixture_t *f = *state;
    const char *high_sql = "SELECT value FROM meta WHERE name = 'delivery_seq_high'";
    int64_t seq = deliver_new(f->store, POLITIE, 1);
    store_close(&f->store);
    static const struct {
        const char *sql;
        int64_t high;
    } rows[] = {
        {STORE_FIXTURE_ACKS_BEFORE_12 "INSERT INTO tombstones VALUES"
                                      " (700, 'x', 1, 'r', 'h', 0, 0);",
         700},
        {STORE_FIXTURE_ACKS_BEFORE_12 "UPDATE sqlite_sequence SET seq = 900"
                                      " WHERE name = 'deliveries';",
         900},
        /* set back by hand: audit_ack_ranges and the mark are still there */
        {"UPDATE meta SET value = 1200 WHERE name = 'delivery_seq_high';", 1200},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char sql[1024];
        snprintf(sql, sizeof sql, "%s PRAGMA user_version = 11;", rows[i].sql);
        store_fixture_back_to_12(f->path, test_key, NULL);
        store_fixture_raw_exec(f->path, sql);
        f->store = store_fixture_open(f->path, test_key);
        assert_int_equal(store_migrated_from(f->store, NULL), 11);
        assert_int_equal(raw_int(f->path, "PRAGMA user_version"), store_schema_version());
        assert_int_equal(raw_int(f->path, high_sql), rows[i].high);
        int64_t next = deliver_new(f->store, POLITIE, 2 + (unsigned)i);
        if (next != rows[i].high + 1)
            fail_msg("row %zu: next seq %lld, want %lld", i, (long long)next,
                     (long long)rows[i].high + 1);
        assert_true(next > seq);
        store_close(&f->store);
    }
    f->store = store_fixture_open(f->path, test_key);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    randombytes_buf(test_key, sizeof test_key);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_creates_wal_private_versioned_file, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_reopen_keeps_data, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_delivery_by_reference, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_envelope_bound_to_seal, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_envelope_kept_by_rekey_and_case_close, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_envelope_migration_from_schema_8, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_back_to_schema_12_and_migrated_again, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_partner_bytes_followed, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_bytes_migration_reports_progress, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_space_measured, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_delivery_seq_high_kept_in_meta, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_delivery_seq_high_migrated_from_schema_11, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_scan_hint_skips_only_items_the_caller_has, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_scan_vouch_skips_only_rows_vouched_for, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_commit_syncs_unsynced_does_not, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync_poisons_the_handle, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_item_memo_after_rollback, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_retention_raised_per_item_and_publish, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_pending_count_follows_every_change, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_failed_checkpoint_sync_poisons_the_handle, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_rekey_sync_failure_reports_new_key, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_count_after_sqlite_rolled_back, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_open_refuses, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_open_makes_no_store_by_accident, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_too_new_store_left_untouched, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_publish_find_before_and_after_add, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_publish_add_duplicates_and_bad_input, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_item_seqs_increase, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_delivery_fields_round_trip, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_deliveries_in_order_per_recipient, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_scan_after_seq_and_limit, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_ack, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_count, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_mailbox_list, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_mailbox_list_plans, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_seq_never_reused, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_page_size_of_new_and_existing_stores, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_item_added_with_its_publish, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_publish_added_with_retention, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_delivery_add_refuses_mismatch, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_delivery_seqs_reserved, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_scan_callback_cannot_reenter, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_begin_idempotent_and_commit, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_rollback_leaves_nothing, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_close_without_commit_loses_transaction, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_crash_without_commit, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_bodies_sealed_in_file, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_item_body_sealed_to_its_row, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_damaged_rows_set_aside_with_a_bounded_retention, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_set_aside_expiry_that_is_no_number_is_due, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_expiry_of_a_seq_with_a_tombstone, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_unreadable_item_is_set_aside_and_expires, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_tampered_rows_do_not_authenticate, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_wrong_key_refused_at_open, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_expire_removes_due_deliveries_with_tombstones, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_expire_items_and_publishes_once_unreferenced, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_removed_bodies_gone_from_file, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_refusals, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_truncate_failure_is_final, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_expire_bounded_by_limit, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_expiry_uses_indexes, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_expire_callback_cannot_reenter, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_idempotency_survives_reopen, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_full_store_fails_closed_and_recovers, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_failure_classification, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_v1_store_migrates_only_when_empty, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_rekey_reseals_every_body, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_evidence_in_clear_is_sealed_at_open, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_evidence_migration_reports_and_leaves_no_old_wal,
                                        setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_rekey_refusals, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_rekey_failure_keeps_old_key, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_store_epoch_floor, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_store_epoch_made_kept_renewed, setup,
                                        store_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
