/*
 * test_store_checkpoint.c — unit tests of broker/store_checkpoint.c (the
 * checkpointer thread) and of the checkpoints store.c plans after each
 * commit, against real SQLite stores in a mkdtemp() folder under /tmp.
 *
 * The thread's syncs (a checkpoint syncs the WAL, then the database file)
 * go through tests/unit/sync_gate.c, which can hold them at a gate or fail
 * them; the test's own syncs always pass. A commit here is one row of 12 KB
 * (a few WAL frames) in the store's meta table, with a low checkpoint
 * threshold (store_test_checkpoint_frames). Every wait is bounded; nothing
 * sleeps.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>
#include <sodium.h>
#include <sqlite3.h>

#include "store.h"
#include "store_fixture.h"
#include "store_internal.h" /* the WAL's frame count, and store_exec_fixed */
#include "sync_gate.h"

#define BOUND_MS SYNC_GATE_BOUND_MS
/* A negative check ("has not happened yet") waits this long. It can only
 * pass falsely (the event might have come later), never fail falsely. */
#define NEGATIVE_MS 200
/* The checkpoint threshold of these tests, in frames. */
#define THRESHOLD 32
/* A commit's frames: the row's overflow pages, its leaf, and the b-tree
 * above it, with room to spare. */
#define MAX_COMMIT_FRAMES 12

static uint8_t test_key[STORE_KEY_BYTES];

static int setup(void **state)
{
    sync_gate_reset();
    store_fixture_t *fx = store_fixture_new("schakel-checkpoint", test_key);
    store_test_checkpoint_frames(fx->store, THRESHOLD);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    sync_gate_reset(); /* a failed test may leave the thread held */
    return store_fixture_teardown(state);
}

static void start_ok(store_t *store)
{
    char err[256] = "";
    if (store_checkpointer_start(store, err, sizeof err) != 0)
        fail_msg("store_checkpointer_start: %s", err);
    assert_true(store_checkpointer_running(store));
}

/* One transaction: a row of 12 KB. Returns store_commit's result. */
static int commit_row(store_t *store)
{
    if (store_begin(store) != 0)
        return -1;
    if (store_exec_fixed(store,
                         "INSERT INTO meta (name, value)"
                         " VALUES ('test-' || hex(randomblob(8)), randomblob(12000))",
                         "test row") != 0) {
        (void)store_rollback(store);
        return -1;
    }
    return store_commit(store);
}

static void commit_rows_ok(store_t *store, unsigned n, int *max_frames)
{
    for (unsigned i = 0; i < n; i++) {
        if (commit_row(store) != 0)
            fail_msg("commit %u of %u: %s", i + 1, n, store_errmsg(store));
        if (max_frames != NULL && store->wal_frames > *max_frames)
            *max_frames = store->wal_frames;
    }
}

static uint64_t rounds_of(const store_t *store)
{
    uint64_t rounds = 0, in_place = 0;
    store_checkpoint_counts(store, &rounds, &in_place);
    return rounds;
}

static uint64_t in_place_of(const store_t *store)
{
    uint64_t rounds = 0, in_place = 0;
    store_checkpoint_counts(store, &rounds, &in_place);
    return in_place;
}

static int64_t test_rows(const char *path)
{
    sqlite3 *db = store_fixture_raw_open(path);
    int64_t n = store_fixture_db_int(db, "SELECT count(*) FROM meta WHERE name LIKE 'test-%'");
    sqlite3_close(db);
    return n;
}

static off_t file_size(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        fail_msg("stat %s: %s", path, strerror(errno));
    return st.st_size;
}

/* ------------------------------------------------------------ tests */

/* Without a thread the commit that makes a checkpoint due runs it: the
 * WAL never holds more than the threshold and one commit. */
static void test_in_place_without_a_thread(void **state)
{
    store_fixture_t *fx = *state;
    int max_frames = 0;
    commit_rows_ok(fx->store, 200, &max_frames);
    assert_false(store_checkpointer_running(fx->store));
    assert_true(in_place_of(fx->store) >= 200 * 3 / (THRESHOLD + MAX_COMMIT_FRAMES));
    assert_int_equal(rounds_of(fx->store), 0);
    if (max_frames > THRESHOLD + MAX_COMMIT_FRAMES)
        fail_msg("the WAL held %d frames (threshold %d)", max_frames, THRESHOLD);
    assert_int_equal(sync_gate_count(SYNC_GATE_THREAD_SYNCS), 0);
}

/* With the thread, its rounds copy the WAL and the loop only finishes it:
 * the WAL starts over again and again, stays under four times the
 * threshold, and every row is in the file once the store is closed. */
static void test_thread_copies_and_the_wal_starts_over(void **state)
{
    store_fixture_t *fx = *state;
    start_ok(fx->store);
    int max_frames = 0;
    commit_rows_ok(fx->store, 600, &max_frames);
    uint64_t rounds = rounds_of(fx->store), in_place = in_place_of(fx->store);
    if (rounds == 0)
        fail_msg("no round of the thread in 600 commits");
    if (sync_gate_count(SYNC_GATE_THREAD_SYNCS) == 0)
        fail_msg("the thread's rounds synced nothing");
    /* 600 commits write ~2,400 frames: the WAL started over many times */
    if (in_place < 600 * 3 / (THRESHOLD * STORE_CHECKPOINT_HARD_FACTOR + MAX_COMMIT_FRAMES))
        fail_msg("the WAL was finished only %llu times", (unsigned long long)in_place);
    if (max_frames > THRESHOLD * STORE_CHECKPOINT_HARD_FACTOR + MAX_COMMIT_FRAMES)
        fail_msg("the WAL held %d frames (bound %d)", max_frames,
                 THRESHOLD * STORE_CHECKPOINT_HARD_FACTOR + MAX_COMMIT_FRAMES);
    char wal_path[192];
    snprintf(wal_path, sizeof wal_path, "%s-wal", fx->path);
    off_t wal = file_size(wal_path);
    off_t bound =
        32 + (off_t)(THRESHOLD * STORE_CHECKPOINT_HARD_FACTOR + MAX_COMMIT_FRAMES) * (4096 + 24);
    if (wal > bound)
        fail_msg("the WAL file grew to %lld bytes (bound %lld)", (long long)wal, (long long)bound);
    assert_false(store_sync_failed(fx->store));
    store_close(&fx->store);
    assert_int_equal(test_rows(fx->path), 600);
    fx->store = store_fixture_open(fx->path, test_key);
}

/* A round held in its sync does not hold the loop: commits go on, the
 * loop's own checkpoint finds the thread's in its way and waits for a
 * later commit (never failing one); once the round ends, the WAL is
 * finished and starts over. */
static void test_loop_goes_on_while_a_round_is_held(void **state)
{
    store_fixture_t *fx = *state;
    start_ok(fx->store);
    sync_gate_close(1);
    unsigned held = sync_gate_count(SYNC_GATE_HELD_TOTAL);
    commit_rows_ok(fx->store, THRESHOLD / 2, NULL); /* at least the threshold: a round */
    sync_gate_await_held(held + 1);
    uint64_t in_place = in_place_of(fx->store);
    int max_frames = 0;
    commit_rows_ok(fx->store, 100, &max_frames); /* well past four times the threshold */
    assert_true(max_frames > THRESHOLD * STORE_CHECKPOINT_HARD_FACTOR);
    assert_int_equal(in_place_of(fx->store), in_place); /* busy: the thread holds it */
    assert_int_equal(rounds_of(fx->store), 0);

    sync_gate_close(0);
    assert_int_equal(store_test_checkpointer_wait(fx->store, 1, BOUND_MS), 1);
    int after = 0;
    commit_rows_ok(fx->store, 200, &after);
    assert_true(in_place_of(fx->store) > in_place);
    /* started over: the last commits found a short WAL */
    if (fx->store->wal_frames > THRESHOLD * STORE_CHECKPOINT_HARD_FACTOR + MAX_COMMIT_FRAMES)
        fail_msg("the WAL still holds %d frames after the round", fx->store->wal_frames);
    sync_gate_assert_never_expired();
}

/* A round that fails (the WAL's sync, with EIO) is final, as a failed sync
 * of the loop: the next commit reports it, and the handle refuses
 * everything after, even when the disk is fine again. */
static void test_failed_round_is_final(void **state)
{
    store_fixture_t *fx = *state;
    start_ok(fx->store);
    sync_gate_close(1);
    sync_gate_fail(1);
    unsigned held = sync_gate_count(SYNC_GATE_HELD_TOTAL);
    commit_rows_ok(fx->store, THRESHOLD / 2, NULL); /* past the threshold, short of 4x */
    sync_gate_await_held(held + 1);                 /* the round's first sync */
    sync_gate_close(0);                             /* ... fails */
    assert_int_equal(store_test_checkpointer_wait(fx->store, 1, BOUND_MS), 1);
    sync_gate_fail(0);
    assert_false(store_sync_failed(fx->store)); /* not known to the loop yet */
    assert_int_equal(commit_row(fx->store), -1);
    assert_true(store_sync_failed(fx->store));
    if (strstr(store_errmsg(fx->store), "checkpoint thread") == NULL)
        fail_msg("store_errmsg \"%s\" does not name the checkpoint thread",
                 store_errmsg(fx->store));
    assert_int_equal(store_begin(fx->store), -1);
    assert_int_equal(rounds_of(fx->store), 1); /* no round after a failure */
}

typedef struct truncater {
    store_t *store;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int done, result;
} truncater_t;

static void *truncater_main(void *arg)
{
    truncater_t *t = arg;
    int result = store_checkpoint(t->store);
    pthread_mutex_lock(&t->lock);
    t->done = 1;
    t->result = result;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

static int truncater_await(truncater_t *t, int timeout_ms)
{
    struct timespec until = sync_gate_deadline(timeout_ms);
    pthread_mutex_lock(&t->lock);
    int rc = 0;
    while (!t->done && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&t->cv, &t->lock, &until);
    int done = t->done;
    pthread_mutex_unlock(&t->lock);
    return done;
}

/* store_checkpoint (TRUNCATE, after an expiry and at a clean stop) waits
 * for a round in progress instead of failing on it, and leaves an empty
 * WAL; the thread's rounds go on afterwards. */
static void test_truncate_waits_for_a_round(void **state)
{
    store_fixture_t *fx = *state;
    start_ok(fx->store);
    sync_gate_close(1);
    unsigned held = sync_gate_count(SYNC_GATE_HELD_TOTAL);
    commit_rows_ok(fx->store, THRESHOLD / 2, NULL);
    sync_gate_await_held(held + 1);

    /* The store is the other thread's until it is done; this one only
     * waits and opens the gate. */
    truncater_t t = {.store = fx->store, .done = 0};
    pthread_mutex_init(&t.lock, NULL);
    pthread_cond_init(&t.cv, NULL);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, truncater_main, &t), 0);
    int early = truncater_await(&t, NEGATIVE_MS);
    sync_gate_close(0);
    int done = truncater_await(&t, BOUND_MS);
    pthread_join(thread, NULL);
    pthread_cond_destroy(&t.cv);
    pthread_mutex_destroy(&t.lock);
    if (early)
        fail_msg("store_checkpoint returned %d while the thread's round was held", t.result);
    assert_true(done);
    if (t.result != 0)
        fail_msg("store_checkpoint: %s", store_errmsg(fx->store));
    char wal_path[192];
    snprintf(wal_path, sizeof wal_path, "%s-wal", fx->path);
    assert_int_equal(file_size(wal_path), 0);

    uint64_t rounds = rounds_of(fx->store);
    commit_rows_ok(fx->store, 100, NULL);
    assert_true(rounds_of(fx->store) > rounds);
    assert_false(store_sync_failed(fx->store));
    sync_gate_assert_never_expired();
}

/* Stopping hands the checkpoints back to the loop; starting twice is one
 * thread; a store without a file has no thread to start. */
static void test_stop_start_and_no_file(void **state)
{
    store_fixture_t *fx = *state;
    start_ok(fx->store);
    start_ok(fx->store);
    commit_rows_ok(fx->store, 50, NULL);
    store_checkpointer_stop(fx->store);
    store_checkpointer_stop(fx->store); /* no-op */
    assert_false(store_checkpointer_running(fx->store));
    assert_int_equal(rounds_of(fx->store), 0);
    unsigned syncs = sync_gate_count(SYNC_GATE_THREAD_SYNCS);
    uint64_t in_place = in_place_of(fx->store);
    int max_frames = 0;
    commit_rows_ok(fx->store, 100, &max_frames);
    assert_true(in_place_of(fx->store) > in_place);
    assert_int_equal(sync_gate_count(SYNC_GATE_THREAD_SYNCS), syncs);
    assert_true(max_frames <= THRESHOLD + MAX_COMMIT_FRAMES);

    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open(":memory:", &other), SQLITE_OK);
    sqlite3 *own = fx->store->db;
    fx->store->db = other;
    char err[256] = "";
    int rc = store_checkpointer_start(fx->store, err, sizeof err);
    fx->store->db = own;
    sqlite3_close(other);
    assert_int_equal(rc, -1);
    if (strstr(err, "no file") == NULL)
        fail_msg("message \"%s\" does not say the store has no file", err);
    assert_false(store_checkpointer_running(fx->store));
    assert_int_equal(store_checkpointer_start(NULL, err, sizeof err), -1);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    sync_gate_init();
    randombytes_buf(test_key, sizeof test_key);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_in_place_without_a_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thread_copies_and_the_wal_starts_over, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_loop_goes_on_while_a_round_is_held, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_round_is_final, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncate_waits_for_a_round, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_start_and_no_file, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
