/*
 * store_fixture.c — the folders, store handles, raw SQLite connections and
 * group keys that the store and audit unit tests share (store_fixture.h).
 * It trusts only the test that calls it: every failure fails that cmocka
 * test (fail_msg / assert_*), except store_fixture_make_dir, which returns -1.
 */
#include <dirent.h>
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

#include "store_fixture.h"

void store_fixture_remove_tree(const char *dir)
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

int store_fixture_make_dir(char *dir, size_t dirlen, const char *name)
{
    int n = snprintf(dir, dirlen, "/tmp/%s-XXXXXX", name);
    if (n <= 0 || (size_t)n >= dirlen)
        return -1;
    return mkdtemp(dir) == NULL ? -1 : 0;
}

static store_t *fixture_open_mode(const char *path, const uint8_t key[STORE_KEY_BYTES],
                                  store_open_mode_t mode)
{
    char err[512] = "";
    store_t *store = store_open(path, key, mode, err, sizeof err);
    if (store == NULL)
        fail_msg("store_open(%s, %s): %s", path, mode == STORE_OPEN_CREATE ? "create" : "existing",
                 err);
    return store;
}

store_t *store_fixture_open(const char *path, const uint8_t key[STORE_KEY_BYTES])
{
    return fixture_open_mode(path, key, STORE_OPEN_EXISTING);
}

store_t *store_fixture_create(const char *path, const uint8_t key[STORE_KEY_BYTES])
{
    return fixture_open_mode(path, key, STORE_OPEN_CREATE);
}

store_t *store_fixture_open_reader(const char *path, const uint8_t *key)
{
    char err[512] = "";
    store_t *store = store_open_reader(path, key, err, sizeof err);
    if (store == NULL)
        fail_msg("store_open_reader(%s): %s", path, err);
    return store;
}

store_fixture_t *store_fixture_new(const char *name, const uint8_t key[STORE_KEY_BYTES])
{
    store_fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(store_fixture_make_dir(f->dir, sizeof f->dir, name), 0);
    int n = snprintf(f->path, sizeof f->path, "%s/store.db", f->dir);
    assert_true(n > 0 && (size_t)n < sizeof f->path);
    f->store = store_fixture_create(f->path, key);
    return f;
}

void store_fixture_destroy(store_fixture_t **fixture)
{
    if (fixture == NULL || *fixture == NULL)
        return;
    store_fixture_t *f = *fixture;
    store_close(&f->store);
    store_fixture_remove_tree(f->dir);
    free(f);
    *fixture = NULL;
}

int store_fixture_teardown(void **state)
{
    store_fixture_t *f = *state;
    store_fixture_destroy(&f);
    *state = NULL;
    return 0;
}

static sqlite3 *raw_open_flags(const char *path, int flags)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, flags, NULL), SQLITE_OK);
    return db;
}

sqlite3 *store_fixture_raw_open(const char *path)
{
    return raw_open_flags(path, SQLITE_OPEN_READWRITE);
}

sqlite3 *store_fixture_raw_open_or_create(const char *path)
{
    return raw_open_flags(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
}

void store_fixture_raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = store_fixture_raw_open(path);
    char *message = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &message) != SQLITE_OK)
        fail_msg("raw %s: %s", sql, message);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

void store_fixture_db_exec(sqlite3 *db, const char *sql)
{
    char *message = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &message) != SQLITE_OK)
        fail_msg("%s: %s", sql, message);
}

int64_t store_fixture_db_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    int64_t value = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    return value;
}

keypair_t *store_fixture_make_key(const char *dir, const char *name)
{
    char base[128], path[160], err[256];
    snprintf(base, sizeof base, "%s/%s", dir, name);
    if (keys_generate(base, err, sizeof err) != 0)
        fail_msg("keys_generate: %s", err);
    snprintf(path, sizeof path, "%s.key", base);
    keypair_t *kp = keys_load_secret(path, err, sizeof err);
    if (kp == NULL)
        fail_msg("keys_load_secret: %s", err);
    return kp;
}

void store_fixture_group_keys(char *group_dir, size_t group_dir_len, const char *name,
                              uint8_t store_key[STORE_KEY_BYTES], keypair_t **broker_key)
{
    assert_int_equal(keys_init(), 0);
    randombytes_buf(store_key, STORE_KEY_BYTES);
    assert_int_equal(store_fixture_make_dir(group_dir, group_dir_len, name), 0);
    *broker_key = store_fixture_make_key(group_dir, "broker");
}

/* ------------------------------------------------------------------ delivery layouts */

/* A delivery row's columns, in this order, for the layouts below. */
#define FIXTURE_DELIVERY_SQL                                                                       \
    "SELECT seq, item_seq, recipient, case_id, is_case_event, by_ref, sender, sender_partner,"     \
    " message_id, item_index, accepted_at, rule_id, rule_hash, purpose, legal_basis,"              \
    " expires_at, body FROM deliveries"
enum { FX_BODY = 16 };

static void put_be(uint8_t *out, size_t *len, uint64_t value, size_t width)
{
    for (size_t i = 0; i < width; i++)
        out[(*len)++] = (uint8_t)(value >> (8 * (width - 1 - i)));
}

static void put_text(uint8_t *out, size_t *len, const char *text, int with_length)
{
    size_t n = strlen(text);
    if (with_length)
        put_be(out, len, n, 4);
    memcpy(out + *len, text, n);
    *len += n;
}

/* The envelope's encoding (store.h), built whole and hashed in one call. */
static void fixture_envelope(sqlite3_stmt *row, uint8_t digest[32])
{
    uint8_t enc[2048];
    size_t len = 0;
    put_text(enc, &len, (const char *)sqlite3_column_text(row, 6), 1);
    put_text(enc, &len, (const char *)sqlite3_column_text(row, 7), 1);
    assert_int_equal(sqlite3_column_bytes(row, 8), 16);
    memcpy(enc + len, sqlite3_column_blob(row, 8), 16);
    len += 16;
    put_be(enc, &len, (uint64_t)sqlite3_column_int64(row, 9), 4);
    put_be(enc, &len, (uint64_t)sqlite3_column_int64(row, 10), 8);
    for (int col = 11; col <= 14; col++)
        put_text(enc, &len, (const char *)sqlite3_column_text(row, col), 1);
    put_be(enc, &len, (uint64_t)sqlite3_column_int64(row, 15), 8);
    assert_int_equal(crypto_generichash(digest, 32, enc, len, NULL, 0), 0);
}

static size_t fixture_delivery_ad(sqlite3_stmt *row, enum store_fixture_layout layout,
                                  uint8_t ad[512])
{
    const char *case_id = (const char *)sqlite3_column_text(row, 3);
    int by_ref = sqlite3_column_int64(row, 5) != 0;
    char tag[64];
    size_t len = 0;
    snprintf(tag, sizeof tag, "schakel-store-%sdelivery-%sv%d", case_id != NULL ? "case-" : "",
             by_ref ? "ref-" : "", (int)layout);
    memcpy(ad, tag, strlen(tag) + 1); /* with its NUL */
    len = strlen(tag) + 1;
    put_be(ad, &len, (uint64_t)sqlite3_column_int64(row, 0), 8);
    put_be(ad, &len, (uint64_t)sqlite3_column_int64(row, 1), 8);
    if (case_id != NULL) {
        put_be(ad, &len, sqlite3_column_int64(row, 4) != 0, 1);
        put_text(ad, &len, case_id, 0);
    }
    if (layout == STORE_FIXTURE_LAYOUT_ENVELOPE) {
        fixture_envelope(row, ad + len);
        len += 32;
    }
    put_text(ad, &len, (const char *)sqlite3_column_text(row, 2), 0);
    return len;
}

static int fixture_open_row(sqlite3_stmt *row, const uint8_t *key, enum store_fixture_layout layout,
                            uint8_t *out, size_t cap, size_t *len)
{
    uint8_t ad[512];
    size_t ad_len = fixture_delivery_ad(row, layout, ad);
    const uint8_t *sealed = sqlite3_column_blob(row, FX_BODY);
    size_t sealed_len = (size_t)sqlite3_column_bytes(row, FX_BODY);
    assert_true(sealed_len >= 40 && sealed_len - 40 <= cap);
    unsigned long long opened = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(out, &opened, NULL, sealed + 24, sealed_len - 24,
                                                   ad, ad_len, sealed, key) != 0)
        return -1;
    *len = (size_t)opened;
    return 0;
}

int store_fixture_delivery_open(const char *path, const uint8_t key[STORE_KEY_BYTES], int64_t seq,
                                enum store_fixture_layout layout, uint8_t *out, size_t cap,
                                size_t *len)
{
    sqlite3 *db = store_fixture_raw_open(path);
    sqlite3_stmt *row = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, FIXTURE_DELIVERY_SQL " WHERE seq = ?1", -1, &row, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_bind_int64(row, 1, seq), SQLITE_OK);
    if (sqlite3_step(row) != SQLITE_ROW)
        fail_msg("no delivery %lld in %s", (long long)seq, path);
    int rc = fixture_open_row(row, key, layout, out, cap, len);
    sqlite3_finalize(row);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return rc;
}

/* The row of delivery seq in db, for the layouts above; fails the test
 * when there is none. The statement is the caller's. */
static sqlite3_stmt *fixture_delivery_row(sqlite3 *db, int64_t seq)
{
    sqlite3_stmt *row = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, FIXTURE_DELIVERY_SQL " WHERE seq = ?1", -1, &row, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_bind_int64(row, 1, seq), SQLITE_OK);
    if (sqlite3_step(row) != SQLITE_ROW)
        fail_msg("no delivery %lld", (long long)seq);
    return row;
}

void store_fixture_delivery_put(sqlite3 *db, const uint8_t key[STORE_KEY_BYTES],
                                const store_delivery_t *d)
{
    sqlite3_stmt *insert = NULL, *update = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db,
                           "INSERT INTO deliveries (seq, recipient, item_seq, sender,"
                           " sender_partner, message_id, item_index, accepted_at, rule_id,"
                           " rule_hash, purpose, legal_basis, expires_at, body, case_id,"
                           " is_case_event, by_ref) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
                           " ?10, ?11, ?12, ?13, x'', ?14, ?15, ?16)",
                           -1, &insert, NULL),
        SQLITE_OK);
    const char *texts[] = {d->recipient, d->sender,  d->sender_partner, d->rule_id,
                           d->rule_hash, d->purpose, d->legal_basis};
    static const int text_params[] = {2, 4, 5, 9, 10, 11, 12};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        assert_int_equal(sqlite3_bind_text(insert, text_params[i], texts[i], -1, SQLITE_STATIC),
                         SQLITE_OK);
    assert_int_equal(sqlite3_bind_int64(insert, 1, (int64_t)d->seq), SQLITE_OK);
    assert_int_equal(sqlite3_bind_int64(insert, 3, (int64_t)d->item_seq), SQLITE_OK);
    assert_int_equal(sqlite3_bind_blob(insert, 6, d->message_id, 16, SQLITE_STATIC), SQLITE_OK);
    assert_int_equal(sqlite3_bind_int64(insert, 7, d->item_index), SQLITE_OK);
    assert_int_equal(sqlite3_bind_int64(insert, 8, d->accepted_at), SQLITE_OK);
    assert_int_equal(sqlite3_bind_int64(insert, 13, d->expires_at), SQLITE_OK);
    assert_int_equal(sqlite3_bind_text(insert, 14, d->case_id, -1, SQLITE_STATIC), SQLITE_OK);
    assert_int_equal(sqlite3_bind_int64(insert, 15, d->is_case_event), SQLITE_OK);
    assert_int_equal(sqlite3_bind_int64(insert, 16, d->by_ref), SQLITE_OK);
    if (sqlite3_step(insert) != SQLITE_DONE)
        fail_msg("delivery %llu: %s", (unsigned long long)d->seq, sqlite3_errmsg(db));
    sqlite3_finalize(insert);

    /* sealed over the row as written, as the broker's seal reads it */
    uint8_t mask[4] = {(uint8_t)d->fields, (uint8_t)(d->fields >> 8), (uint8_t)(d->fields >> 16),
                       (uint8_t)(d->fields >> 24)};
    const uint8_t *body = d->by_ref ? mask : d->body;
    size_t body_len = d->by_ref ? sizeof mask : d->body_len;
    static uint8_t sealed[65536 + 40];
    assert_true(body_len <= 65536);
    uint8_t ad[512];
    sqlite3_stmt *row = fixture_delivery_row(db, (int64_t)d->seq);
    size_t ad_len = fixture_delivery_ad(row, STORE_FIXTURE_LAYOUT_ENVELOPE, ad);
    sqlite3_finalize(row);
    unsigned long long sealed_len = 0;
    randombytes_buf(sealed, 24);
    crypto_aead_xchacha20poly1305_ietf_encrypt(sealed + 24, &sealed_len, body, body_len, ad, ad_len,
                                               NULL, sealed, key);
    assert_int_equal(
        sqlite3_prepare_v2(db, "UPDATE deliveries SET body = ?2 WHERE seq = ?1", -1, &update, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_bind_int64(update, 1, (int64_t)d->seq), SQLITE_OK);
    assert_int_equal(sqlite3_bind_blob(update, 2, sealed, (int)(24 + sealed_len), SQLITE_STATIC),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(update), SQLITE_DONE);
    sqlite3_finalize(update);
}

size_t store_fixture_deliveries_before_9(const char *path, const uint8_t key[STORE_KEY_BYTES])
{
    sqlite3 *db = store_fixture_raw_open(path);
    sqlite3_stmt *seqs = NULL, *row = NULL, *update = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT seq FROM deliveries ORDER BY seq", -1, &seqs, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, FIXTURE_DELIVERY_SQL " WHERE seq = ?1", -1, &row, NULL),
                     SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(db, "UPDATE deliveries SET body = ?2 WHERE seq = ?1", -1, &update, NULL),
        SQLITE_OK);
    /* the seqs first: no SELECT is pending while a row is rewritten */
    size_t n = 0, cap = 0;
    int64_t *all = NULL;
    while (sqlite3_step(seqs) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap > 0 ? 2 * cap : 64;
            all = realloc(all, cap * sizeof *all);
            assert_non_null(all);
        }
        all[n++] = sqlite3_column_int64(seqs, 0);
    }
    sqlite3_finalize(seqs);
    store_fixture_db_exec(db, "BEGIN");
    for (size_t i = 0; i < n; i++) {
        static uint8_t body[65536], sealed[65536 + 40];
        uint8_t ad[512];
        size_t len = 0;
        assert_int_equal(sqlite3_bind_int64(row, 1, all[i]), SQLITE_OK);
        assert_int_equal(sqlite3_step(row), SQLITE_ROW);
        if (fixture_open_row(row, key, STORE_FIXTURE_LAYOUT_ENVELOPE, body, sizeof body, &len) != 0)
            fail_msg("delivery %lld does not open under the current layout", (long long)all[i]);
        size_t ad_len = fixture_delivery_ad(row, STORE_FIXTURE_LAYOUT_BEFORE_9, ad);
        assert_int_equal(sqlite3_reset(row), SQLITE_OK);
        unsigned long long sealed_len = 0;
        randombytes_buf(sealed, 24);
        crypto_aead_xchacha20poly1305_ietf_encrypt(sealed + 24, &sealed_len, body, len, ad, ad_len,
                                                   NULL, sealed, key);
        assert_int_equal(sqlite3_bind_int64(update, 1, all[i]), SQLITE_OK);
        assert_int_equal(
            sqlite3_bind_blob(update, 2, sealed, (int)(24 + sealed_len), SQLITE_STATIC), SQLITE_OK);
        assert_int_equal(sqlite3_step(update), SQLITE_DONE);
        assert_int_equal(sqlite3_reset(update), SQLITE_OK);
    }
    store_fixture_db_exec(db, "COMMIT");
    free(all);
    sqlite3_finalize(row);
    sqlite3_finalize(update);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return n;
}

void store_fixture_plan(const char *path, const char *sql, char *out, size_t outlen)
{
    char eqp[4096];
    snprintf(eqp, sizeof eqp, "EXPLAIN QUERY PLAN %s", sql);
    sqlite3 *db = store_fixture_raw_open(path);
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, eqp, -1, &stmt, NULL) != SQLITE_OK)
        fail_msg("plan of %s: %s", sql, sqlite3_errmsg(db));
    out[0] = '\0';
    while (sqlite3_step(stmt) == SQLITE_ROW) {
        size_t used = strlen(out);
        snprintf(out + used, outlen - used, "%s | ", (const char *)sqlite3_column_text(stmt, 3));
    }
    assert_int_equal(sqlite3_finalize(stmt), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}
