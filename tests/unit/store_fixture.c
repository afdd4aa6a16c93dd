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
