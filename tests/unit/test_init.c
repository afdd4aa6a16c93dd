/*
 * test_init.c — schakeld --init's store (init.c): made under a temporary
 * name beside the store path and moved into place only where nothing is
 * there, so that a store that appears while the new one is made is left as
 * it is, byte for byte, and the new one removed; what an interrupted
 * --init left is removed first. (tests/integration/test_storage.c
 * interrupts a real schakeld --init.)
 *
 * Linked with -Wl,--wrap=fsync (Makefile: UNIT_LDFLAGS_test_init): the
 * fsyncs of the broker's own code (the new store's file before the move,
 * the folder after it) go through __wrap_fsync, which makes a file
 * appear at the store path at the first of them, just before the move,
 * when a test asks it to. SQLite's syncs are inside its own library and
 * are not wrapped.
 */
#include <errno.h>
#include <fcntl.h>
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

#include "init.h"
#include "keys.h"
#include "store_fixture.h"

int __real_fsync(int fd);
int __wrap_fsync(int fd);

static const char *appear_at; /* a file appears here at the next fsync (NULL: none) */
static const char appeared[] = "a store that another process made meanwhile";
static unsigned fsyncs; /* the wrapped fsyncs so far */

int __wrap_fsync(int fd)
{
    fsyncs++;
    if (appear_at != NULL) {
        int out = open(appear_at, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (out < 0 || write(out, appeared, sizeof appeared) != (ssize_t)sizeof appeared)
            fail_msg("make %s: %s", appear_at, strerror(errno));
        close(out);
        appear_at = NULL;
    }
    return __real_fsync(fd);
}

typedef struct init_dir {
    char dir[64];
    char key[128];
    char store[128];
} init_dir_t;

/* A folder with a store key in it and no store. */
static int init_setup(void **state)
{
    init_dir_t *d = calloc(1, sizeof *d);
    if (d == NULL || store_fixture_make_dir(d->dir, sizeof d->dir, "schakel-init") != 0)
        return -1;
    snprintf(d->key, sizeof d->key, "%s/store.key", d->dir);
    snprintf(d->store, sizeof d->store, "%s/store.db", d->dir);
    if (init_command(d->key, NULL) != 0)
        return -1;
    *state = d;
    return 0;
}

static int init_teardown(void **state)
{
    init_dir_t *d = *state;
    appear_at = NULL;
    store_fixture_remove_tree(d->dir);
    free(d);
    return 0;
}

/* Fail if a file named PATH.initializing or one of its side files is in
 * the folder. */
static void assert_no_temporary(const init_dir_t *d)
{
    static const char *const suffix[] = {"", "-wal", "-shm", ".lock"};
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
        char path[192];
        snprintf(path, sizeof path, "%s.initializing%s", d->store, suffix[i]);
        if (access(path, F_OK) == 0)
            fail_msg("%s is left", path);
    }
}

/* The store at d->store opens under d->key: a whole Schakel store. */
static void assert_store_opens(const init_dir_t *d)
{
    uint8_t key[STORE_KEY_BYTES];
    char err[256];
    if (keys_load_symmetric(d->key, key, err, sizeof err) != 0)
        fail_msg("%s", err);
    store_t *store = store_fixture_open(d->store, key);
    sodium_memzero(key, sizeof key);
    store_close(&store);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* The store is made, synced by our own code (the wrap sees it), and in
 * place with nothing left beside it but its lock. */
static void test_store_made_beside_and_moved(void **state)
{
    init_dir_t *d = *state;
    fsyncs = 0;
    assert_int_equal(init_command(d->key, d->store), 0);
    if (fsyncs == 0)
        fail_msg("init_command made the store without an fsync of its own: this test's wrap "
                 "cannot reach the moment before the move");
    assert_store_opens(d);
    assert_no_temporary(d);
}

/* A store that appears at the path while --init makes one (another
 * process that does not take the lock) is never replaced: it stays as it
 * is, byte for byte, --init fails naming it, and its new store is gone. */
static void test_store_appearing_meanwhile_is_left_alone(void **state)
{
    init_dir_t *d = *state;
    appear_at = d->store;
    int rc = init_command(d->key, d->store);
    if (appear_at != NULL)
        fail_msg("init_command made no fsync of its own before it was done (exit %d)", rc);
    assert_int_equal(rc, 1);
    char got[sizeof appeared + 8] = "";
    FILE *f = fopen(d->store, "rb");
    assert_non_null(f);
    size_t len = fread(got, 1, sizeof got, f);
    fclose(f);
    if (len != sizeof appeared || memcmp(got, appeared, sizeof appeared) != 0)
        fail_msg("the store that appeared at %s was replaced (%zu bytes now)", d->store, len);
    assert_no_temporary(d);
}

/* What an interrupted --init left (the temporary, half made, and its side
 * files) is removed, and the new store made. */
static void test_leftover_removed_first(void **state)
{
    init_dir_t *d = *state;
    static const char *const suffix[] = {"", "-wal", "-shm", ".lock"};
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
        char path[192];
        snprintf(path, sizeof path, "%s.initializing%s", d->store, suffix[i]);
        write_file(path, "half of a store whose --init was interrupted");
    }
    assert_int_equal(init_command(d->key, d->store), 0);
    assert_store_opens(d);
    assert_no_temporary(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_store_made_beside_and_moved, init_setup,
                                        init_teardown),
        cmocka_unit_test_setup_teardown(test_store_appearing_meanwhile_is_left_alone, init_setup,
                                        init_teardown),
        cmocka_unit_test_setup_teardown(test_leftover_removed_first, init_setup, init_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
