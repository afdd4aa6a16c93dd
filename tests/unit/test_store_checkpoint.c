/*
 * test_store_checkpoint.c — unit tests of broker/store_checkpoint.c (the
 * checkpointer thread) and of the checkpoints store_commit.c plans after each
 * commit, against real SQLite stores in a mkdtemp() folder under /tmp.
 *
 * The thread's syncs (a checkpoint syncs the WAL, then the database file)
 * go through tests/unit/sync_gate.c, which can hold them at a gate or fail
 * them; the test's own syncs always pass. A commit here is rows of 12 KB
 * (a few WAL frames each) in the store's meta table, with a low checkpoint
 * threshold (store_test_checkpoint_frames). Every wait is bounded; nothing
 * sleeps.
 */
#include <dirent.h>
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
#include "store_internal.h" /* the WAL's frame count and plans, store_exec_fixed */
#include "sync_gate.h"

#define BOUND_MS SYNC_GATE_BOUND_MS
/* A negative check ("has not happened yet") waits this long. It can only
 * pass falsely (the event might have come later), never fail falsely. */
#define NEGATIVE_MS 200
/* The checkpoint threshold of these tests, in frames. */
#define THRESHOLD 32
/* A one-row commit's frames: the row's overflow pages, its leaf, and the
 * b-tree above it, with room to spare. */
#define MAX_COMMIT_FRAMES 12
#define LIMIT (THRESHOLD * STORE_CHECKPOINT_HARD_FACTOR)

static uint8_t test_key[STORE_KEY_BYTES];
static int64_t rows_committed; /* by commit_rows since the test began */

static int setup(void **state)
{
    sync_gate_reset();
    rows_committed = 0;
    store_fixture_t *fx = store_fixture_new("schakel-checkpoint", test_key);
    /* The schema's frames are not the test's: the store is opened again,
     * on a WAL its close has emptied (the frames of a new store's schema
     * may pass the test's threshold before its first commit). */
    store_close(&fx->store);
    fx->store = store_fixture_open(fx->path, test_key);
    store_test_checkpoint_frames(fx->store, THRESHOLD);
    (void)store_test_wal_frames_peak(fx->store);
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

/* One transaction of `rows` rows of 12 KB. Returns store_commit's result. */
static int commit_rows(store_t *store, unsigned rows)
{
    if (store_begin(store) != 0)
        return -1;
    for (unsigned i = 0; i < rows; i++)
        if (store_exec_fixed(store,
                             "INSERT INTO meta (name, value)"
                             " VALUES ('test-' || hex(randomblob(8)), randomblob(12000))",
                             "test row") != 0) {
            (void)store_rollback(store);
            return -1;
        }
    if (store_commit(store) != 0)
        return -1;
    rows_committed += rows;
    return 0;
}

static void commit_rows_ok(store_t *store, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (commit_rows(store, 1) != 0)
            fail_msg("commit %u of %u: %s", i + 1, n, store_errmsg(store));
}

static store_checkpoint_counts_t counts_of(const store_t *store)
{
    store_checkpoint_counts_t counts;
    store_checkpoint_counts(store, &counts);
    return counts;
}

static uint64_t in_place_of(const store_t *store)
{
    store_checkpoint_counts_t counts = counts_of(store);
    return counts.finished_in_place + counts.forced_in_place;
}

static int64_t test_rows(const char *path)
{
    sqlite3 *db = store_fixture_raw_open(path);
    int64_t n = store_fixture_db_int(db, "SELECT count(*) FROM meta WHERE name LIKE 'test-%'");
    sqlite3_close(db);
    return n;
}

static off_t wal_size(const store_fixture_t *fx)
{
    char wal[192];
    snprintf(wal, sizeof wal, "%s-wal", fx->path);
    struct stat st;
    if (stat(wal, &st) != 0)
        fail_msg("stat %s: %s", wal, strerror(errno));
    return st.st_size;
}

static unsigned task_count(void)
{
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    unsigned n = 0;
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* Commit rows one at a time until a commit asks the thread for a round;
 * then wait until that round holds at the closed gate. The caller closed
 * it. */
static void commit_until_a_round_is_held(store_fixture_t *fx)
{
    unsigned held = sync_gate_count(SYNC_GATE_HELD_TOTAL);
    uint64_t requests = counts_of(fx->store).requests;
    for (unsigned i = 0; i < 4 * THRESHOLD; i++) {
        commit_rows_ok(fx->store, 1);
        if (counts_of(fx->store).requests != requests) {
            sync_gate_await_held(held + 1);
            return;
        }
    }
    fail_msg("no commit asked for a round in %d commits", 4 * THRESHOLD);
}

/* Wait until the thread has run every round asked for: idle. */
static void settle_thread(store_fixture_t *fx)
{
    uint64_t requests = counts_of(fx->store).requests;
    if (store_test_checkpointer_wait(fx->store, requests, sync_gate_deadline(BOUND_MS)) < requests)
        fail_msg("the thread did not run the %llu rounds asked for within %d ms",
                 (unsigned long long)requests, BOUND_MS);
}

/* With the thread idle after each commit, a WAL past the threshold is
 * finished (or forced) and starts over within a few commits. */
static void assert_wal_starts_over(store_fixture_t *fx, const char *when)
{
    for (unsigned i = 0; i < 2 * LIMIT && fx->store->wal_frames < THRESHOLD; i++)
        commit_rows_ok(fx->store, 1);
    uint64_t generation = fx->store->wal_generation;
    for (int i = 0; i < 24 && fx->store->wal_generation == generation; i++) {
        settle_thread(fx);
        commit_rows_ok(fx->store, 1);
    }
    if (fx->store->wal_generation == generation)
        fail_msg("%s: the WAL (%d frames) did not start over in 24 commits with the thread idle",
                 when, fx->store->wal_frames);
}

/* ------------------------------------------------------------ tests */

/* Without a thread the commit that makes a checkpoint due runs it: the
 * WAL never holds more than the threshold and one commit. */
static void test_in_place_without_a_thread(void **state)
{
    store_fixture_t *fx = *state;
    commit_rows_ok(fx->store, 200);
    assert_false(store_checkpointer_running(fx->store));
    store_checkpoint_counts_t c = counts_of(fx->store);
    assert_true(c.forced_in_place >= 200 * 3 / (THRESHOLD + MAX_COMMIT_FRAMES));
    assert_int_equal(c.finished_in_place, 0);
    assert_int_equal(c.thread_attempts, 0);
    int peak = store_test_wal_frames_peak(fx->store);
    if (peak > THRESHOLD + MAX_COMMIT_FRAMES)
        fail_msg("the WAL held %d frames (threshold %d)", peak, THRESHOLD);
    assert_int_equal(sync_gate_count(SYNC_GATE_THREAD_SYNCS), 0);
}

/* A checkpoint of another connection (an operator's tool, against the
 * advice of docs/OPERATIONS.md), held at its first sync while it holds the
 * checkpoint lock. Runs on a thread of its own: the gate holds only syncs
 * of threads other than the test's. */
typedef struct outside_checkpoint {
    const char *path;
    int rc;
} outside_checkpoint_t;

static void *outside_checkpoint_run(void *arg)
{
    outside_checkpoint_t *o = arg;
    sqlite3 *db = NULL; /* no cmocka asserts off the test's thread */
    o->rc = sqlite3_open_v2(o->path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (o->rc == SQLITE_OK)
        o->rc = sqlite3_exec(db, "PRAGMA wal_checkpoint(PASSIVE)", NULL, NULL, NULL);
    sqlite3_close(db);
    return NULL;
}

/* The loop's own checkpoint finds another one running: it counts the try,
 * leaves the WAL as it is, and does not try again before the WAL has grown
 * by a threshold (not at every commit); once the other is gone, the next
 * try copies. */
static void test_in_place_busy_backs_off(void **state)
{
    store_fixture_t *fx = *state;
    commit_rows_ok(fx->store, 2); /* frames for the other one to copy */
    uint64_t done_before = in_place_of(fx->store);
    sync_gate_close(1);
    outside_checkpoint_t outside = {fx->path, -1};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, outside_checkpoint_run, &outside), 0);
    sync_gate_await_held(1); /* it holds the checkpoint lock now */

    while (counts_of(fx->store).busy_in_place == 0) {
        if (fx->store->wal_frames > 2 * THRESHOLD)
            fail_msg("no checkpoint was tried by %d frames (threshold %d)", fx->store->wal_frames,
                     THRESHOLD);
        commit_rows_ok(fx->store, 1);
    }
    int busy_at = fx->store->wal_frames;
    assert_int_equal(in_place_of(fx->store), done_before);
    /* a threshold more, less one commit: no further try */
    while (fx->store->wal_frames + MAX_COMMIT_FRAMES < busy_at + THRESHOLD)
        commit_rows_ok(fx->store, 1);
    store_checkpoint_counts_t c = counts_of(fx->store);
    if (c.busy_in_place != 1 || in_place_of(fx->store) != done_before)
        fail_msg("tried again before a threshold more: %llu busy, %llu done",
                 (unsigned long long)c.busy_in_place,
                 (unsigned long long)(in_place_of(fx->store) - done_before));

    sync_gate_close(0);
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_int_equal(outside.rc, SQLITE_OK);
    while (in_place_of(fx->store) == done_before) {
        if (fx->store->wal_frames > busy_at + THRESHOLD + MAX_COMMIT_FRAMES)
            fail_msg("no checkpoint by %d frames after the busy one at %d", fx->store->wal_frames,
                     busy_at);
        commit_rows_ok(fx->store, 1);
    }
    assert_int_equal(counts_of(fx->store).busy_in_place, 1);
    sync_gate_assert_never_expired();
    store_close(&fx->store);
    assert_int_equal(test_rows(fx->path), rows_committed);
}

/* With the thread, its rounds copy the WAL and the loop only finishes it:
 * the WAL starts over again and again, once the thread is idle it is
 * finished within a few commits, and every row is in the file once the
 * store is closed. (How far the WAL grows meanwhile depends on how fast
 * the thread's syncs are, which this test does not control.) */
static void test_thread_copies_and_the_wal_starts_over(void **state)
{
    store_fixture_t *fx = *state;
    start_ok(fx->store);
    uint64_t generation = fx->store->wal_generation;
    commit_rows_ok(fx->store, 600);
    store_checkpoint_counts_t c = counts_of(fx->store);
    if (c.thread_rounds == 0)
        fail_msg("no round of the thread in 600 commits");
    if (sync_gate_count(SYNC_GATE_THREAD_SYNCS) == 0)
        fail_msg("the thread's rounds synced nothing");
    if (fx->store->wal_generation < generation + 2)
        fail_msg("the WAL started over %llu times in 600 commits (~2,400 frames)",
                 (unsigned long long)(fx->store->wal_generation - generation));
    assert_wal_starts_over(fx, "after 600 commits");
    assert_false(store_sync_failed(fx->store));
    store_close(&fx->store);
    assert_int_equal(test_rows(fx->path), rows_committed);
    fx->store = store_fixture_open(fx->path, test_key);
}

/* The finish, step by step: a round copies what the WAL held when it
 * began; the commits made meanwhile stay behind; once it is done, the next
 * commit copies those few in place (no forced checkpoint), and the commit
 * after it finds the WAL started over. */
static void test_loop_finishes_what_a_round_left(void **state)
{
    store_fixture_t *fx = *state;
    start_ok(fx->store);
    sync_gate_close(1);
    commit_until_a_round_is_held(fx);
    commit_rows_ok(fx->store, 3); /* behind the round: ~15 frames, under the finish bound */
    store_checkpoint_counts_t before = counts_of(fx->store);
    sync_gate_close(0);
    assert_int_equal(store_test_checkpointer_wait(fx->store, 1, sync_gate_deadline(BOUND_MS)), 1);
    assert_int_equal(counts_of(fx->store).thread_rounds, 1);
    int frames = fx->store->wal_frames;
    commit_rows_ok(fx->store, 1);
    store_checkpoint_counts_t after = counts_of(fx->store);
    if (after.finished_in_place != before.finished_in_place + 1)
        fail_msg("the commit after the round did not finish the WAL (%llu finished before, %llu "
                 "after, %d frames)",
                 (unsigned long long)before.finished_in_place,
                 (unsigned long long)after.finished_in_place, frames);
    assert_int_equal(after.forced_in_place, before.forced_in_place);
    commit_rows_ok(fx->store, 1);
    if (fx->store->wal_frames > MAX_COMMIT_FRAMES)
        fail_msg("the WAL did not start over: %d frames", fx->store->wal_frames);
    sync_gate_assert_never_expired();
}

/* A round held in its sync does not hold the loop: commits go on, and the
 * loop checkpoints nothing in place beside it, even past four times the
 * threshold (a complete checkpoint beside a round about to start is what
 * SQLite's WAL-reset race needs); once the round ends, the WAL is finished
 * and starts over. */
static void test_loop_goes_on_while_a_round_is_held(void **state)
{
    store_fixture_t *fx = *state;
    start_ok(fx->store);
    sync_gate_close(1);
    commit_until_a_round_is_held(fx);
    uint64_t in_place = in_place_of(fx->store);
    (void)store_test_wal_frames_peak(fx->store);
    commit_rows_ok(fx->store, 100); /* well past four times the threshold */
    assert_true(store_test_wal_frames_peak(fx->store) > LIMIT);
    assert_int_equal(in_place_of(fx->store), in_place);
    assert_int_equal(counts_of(fx->store).busy_in_place, 0); /* not even tried */
    assert_int_equal(counts_of(fx->store).thread_attempts, 0);

    sync_gate_close(0);
    assert_int_equal(store_test_checkpointer_wait(fx->store, 1, sync_gate_deadline(BOUND_MS)), 1);
    assert_wal_starts_over(fx, "after the held round");
    assert_true(in_place_of(fx->store) > in_place);
    sync_gate_assert_never_expired();
}

/* A round that fails (the WAL's sync, with EIO) is final, as a failed sync
 * of the loop: the next commit is refused and rolled back, the handle
 * refuses everything after, even when the disk is fine again, and what
 * was committed before is all there once the store is opened again. */
static void test_failed_round_is_final(void **state)
{
    store_fixture_t *fx = *state;
    start_ok(fx->store);
    sync_gate_close(1);
    sync_gate_fail(1);
    commit_until_a_round_is_held(fx); /* its first sync ... */
    int64_t committed = test_rows(fx->path);
    sync_gate_close(0); /* ... fails */
    assert_int_equal(store_test_checkpointer_wait(fx->store, 1, sync_gate_deadline(BOUND_MS)), 1);
    sync_gate_fail(0);
    assert_false(store_sync_failed(fx->store)); /* not known to the loop yet */
    assert_int_equal(commit_rows(fx->store, 1), -1);
    assert_true(store_sync_failed(fx->store));
    if (strstr(store_errmsg(fx->store), "checkpoint thread") == NULL)
        fail_msg("store_errmsg \"%s\" does not name the checkpoint thread",
                 store_errmsg(fx->store));
    assert_int_equal(store_begin(fx->store), -1);
    assert_int_equal(counts_of(fx->store).thread_rounds, 0);
    assert_int_equal(store_checkpointer_check(fx->store), -1);
    store_close(&fx->store);
    assert_int_equal(test_rows(fx->path), committed); /* the refused commit is not there */
    fx->store = store_fixture_open(fx->path, test_key);
}

/* A round that fails without a commit after it is still reported: by the
 * loop's check of every turn, and by stop (the broker then exits 1). */
static void test_failure_seen_without_a_commit(void **state)
{
    store_fixture_t *fx = *state;
    for (int by_stop = 0; by_stop <= 1; by_stop++) {
        start_ok(fx->store);
        sync_gate_close(1);
        sync_gate_fail(1);
        commit_until_a_round_is_held(fx);
        sync_gate_close(0);
        assert_int_equal(store_test_checkpointer_wait(fx->store, 1, sync_gate_deadline(BOUND_MS)),
                         1);
        sync_gate_fail(0);
        assert_false(store_sync_failed(fx->store));
        if (by_stop)
            assert_int_equal(store_checkpointer_stop(fx->store), -1);
        else
            assert_int_equal(store_checkpointer_check(fx->store), -1);
        assert_true(store_sync_failed(fx->store));
        store_close(&fx->store);
        fx->store = store_fixture_open(fx->path, test_key);
        store_test_checkpoint_frames(fx->store, THRESHOLD);
    }
}

/* store_checkpoint (TRUNCATE, after an expiry and at a clean stop) does
 * not wait for a round in progress (the loop must not stall on a disk):
 * refused, the store still fine; once the round is done it truncates. */
static void test_truncate_refused_while_a_round_runs(void **state)
{
    store_fixture_t *fx = *state;
    start_ok(fx->store);
    sync_gate_close(1);
    commit_until_a_round_is_held(fx);
    assert_int_equal(store_checkpoint(fx->store), -1);
    if (strstr(store_errmsg(fx->store), "checkpoint thread") == NULL)
        fail_msg("store_errmsg \"%s\" does not name the checkpoint thread",
                 store_errmsg(fx->store));
    assert_false(store_sync_failed(fx->store));
    sync_gate_close(0);
    assert_int_equal(store_test_checkpointer_wait(fx->store, 1, sync_gate_deadline(BOUND_MS)), 1);
    if (store_checkpoint(fx->store) != 0)
        fail_msg("store_checkpoint after the round: %s", store_errmsg(fx->store));
    assert_int_equal(wal_size(fx), 0);
    uint64_t attempts = counts_of(fx->store).thread_attempts;
    commit_rows_ok(fx->store, 100);
    assert_true(counts_of(fx->store).thread_attempts > attempts); /* rounds go on */
    assert_false(store_sync_failed(fx->store));
    sync_gate_assert_never_expired();
}

/* A reader that holds part of the WAL (a backup, an audit tail) keeps any
 * checkpoint from copying past it: the loop then tries again a threshold
 * later instead of at every commit, and once the reader is gone the WAL
 * is finished and starts over. */
static void test_reader_holding_the_wal(void **state)
{
    store_fixture_t *fx = *state;
    start_ok(fx->store);
    commit_rows_ok(fx->store, 20);
    sqlite3 *reader = store_fixture_raw_open(fx->path);
    store_fixture_db_exec(reader, "BEGIN");
    (void)store_fixture_db_int(reader, "SELECT count(*) FROM meta");
    uint64_t in_place = in_place_of(fx->store);
    enum { COMMITS = 200 };
    commit_rows_ok(fx->store, COMMITS);
    uint64_t tries = in_place_of(fx->store) - in_place;
    /* ~4 frames a commit: at most one try per threshold of new frames */
    if (tries > COMMITS * 6 / THRESHOLD + 2)
        fail_msg("%llu checkpoints in place in %d commits while a reader held the WAL",
                 (unsigned long long)tries, COMMITS);
    assert_true(fx->store->wal_frames > LIMIT); /* the reader holds it: it grows */
    store_fixture_db_exec(reader, "COMMIT");
    sqlite3_close(reader);
    assert_wal_starts_over(fx, "after the reader left");
    assert_false(store_sync_failed(fx->store));
}

/* A WAL that started over at a commit that wrote more frames than the old
 * WAL held is still a new WAL: the last round's count belongs to the old
 * one, and the loop does not "finish" the new one in place on its word. */
static void test_restart_seen_after_a_large_commit(void **state)
{
    store_fixture_t *fx = *state;
    start_ok(fx->store);
    sync_gate_close(1);
    commit_until_a_round_is_held(fx); /* nothing committed after its start */
    sync_gate_close(0);
    assert_int_equal(store_test_checkpointer_wait(fx->store, 1, sync_gate_deadline(BOUND_MS)), 1);
    int old = fx->store->wal_frames;
    uint64_t generation = fx->store->wal_generation;
    store_checkpoint_counts_t before = counts_of(fx->store);
    /* more frames than the old WAL, fewer than its count + the finish bound:
     * in one commit a row is its two overflow pages and a share of a leaf
     * (four frames a row only in a commit of its own, page 1 and a leaf
     * each), so some 2.3 frames a row */
    unsigned rows = (unsigned)(old + STORE_CHECKPOINT_FINISH_FRAMES / 2) / 2;
    if (commit_rows(fx->store, rows) != 0)
        fail_msg("a commit of %u rows: %s", rows, store_errmsg(fx->store));
    if (fx->store->wal_frames < old)
        fail_msg("the test's large commit wrote %d frames, fewer than the %d of the old WAL",
                 fx->store->wal_frames, old);
    assert_true(fx->store->wal_generation > generation);
    assert_int_equal(counts_of(fx->store).finished_in_place, before.finished_in_place);
    assert_int_equal(counts_of(fx->store).forced_in_place, before.forced_in_place);
    sync_gate_assert_never_expired();
}

/* A commit that wrote nothing (a turn's housekeeping) appends no frame:
 * it decides nothing, since what the store knows of the WAL is from the
 * last commit that wrote (a TRUNCATE may have copied all of it since: a
 * round asked for then is the WAL-reset race's first step). */
static void test_empty_commit_decides_nothing(void **state)
{
    store_fixture_t *fx = *state;
    start_ok(fx->store);
    sync_gate_close(1);
    commit_until_a_round_is_held(fx);
    commit_rows_ok(fx->store, 20); /* behind the round, more than the finish bound */
    sync_gate_close(0);
    settle_thread(fx);
    store_checkpoint_counts_t before = counts_of(fx->store);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(store_begin(fx->store), 0);
        assert_int_equal(store_commit(fx->store), 0);
    }
    store_checkpoint_counts_t after = counts_of(fx->store);
    assert_int_equal(after.requests, before.requests);
    assert_int_equal(after.finished_in_place, before.finished_in_place);
    assert_int_equal(after.forced_in_place, before.forced_in_place);
    assert_int_equal(after.busy_in_place, before.busy_in_place);
    commit_rows_ok(fx->store, 1); /* one that writes decides again */
    after = counts_of(fx->store);
    assert_true(after.requests + after.finished_in_place + after.forced_in_place >
                before.requests + before.finished_in_place + before.forced_in_place);
    sync_gate_assert_never_expired();
}

/* The round ends between a commit and its plan (the gate opened from
 * inside the commit): that round may have copied the commit's frames, so
 * the commit decides nothing (no finish, no round: asked for on a fully
 * copied WAL, the next commit could start it over beside the round's
 * start); the next commit, made beside an idle thread, decides. */
static void end_the_held_round(store_t *store, void *arg)
{
    (void)arg;
    store_test_after_commit(store, NULL, NULL);
    sync_gate_close(0);
    if (store_test_checkpointer_wait(store, 1, sync_gate_deadline(BOUND_MS)) != 1)
        fail_msg("the held round did not end within %d ms", BOUND_MS);
}

static void test_commit_beside_a_round_decides_nothing(void **state)
{
    store_fixture_t *fx = *state;
    start_ok(fx->store);
    sync_gate_close(1);
    commit_until_a_round_is_held(fx);
    store_checkpoint_counts_t before = counts_of(fx->store);
    store_test_after_commit(fx->store, end_the_held_round, NULL);
    commit_rows_ok(fx->store, 1);
    store_checkpoint_counts_t after = counts_of(fx->store);
    assert_int_equal(after.thread_rounds, 1);
    assert_int_equal(after.requests, before.requests);
    assert_int_equal(after.finished_in_place, before.finished_in_place);
    assert_int_equal(after.forced_in_place, before.forced_in_place);
    commit_rows_ok(fx->store, 1);
    after = counts_of(fx->store);
    assert_true(after.requests + after.finished_in_place + after.forced_in_place >
                before.requests + before.finished_in_place + before.forced_in_place);
    sync_gate_assert_never_expired();
}

/* Stopping hands the checkpoints back to the loop; starting twice starts
 * one thread; a store without a file has no thread to start. */
static void test_stop_start_and_no_file(void **state)
{
    store_fixture_t *fx = *state;
    unsigned tasks = task_count();
    start_ok(fx->store);
    start_ok(fx->store);
    assert_int_equal(task_count(), tasks + 1);
    commit_rows_ok(fx->store, 50);
    assert_int_equal(store_checkpointer_stop(fx->store), 0);
    assert_int_equal(store_checkpointer_stop(fx->store), 0); /* no-op */
    assert_false(store_checkpointer_running(fx->store));
    assert_int_equal(task_count(), tasks);
    unsigned syncs = sync_gate_count(SYNC_GATE_THREAD_SYNCS);
    uint64_t forced = counts_of(fx->store).forced_in_place;
    (void)store_test_wal_frames_peak(fx->store);
    commit_rows_ok(fx->store, 100);
    assert_true(counts_of(fx->store).forced_in_place > forced);
    assert_int_equal(sync_gate_count(SYNC_GATE_THREAD_SYNCS), syncs);
    assert_true(store_test_wal_frames_peak(fx->store) <= LIMIT + MAX_COMMIT_FRAMES);

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
        cmocka_unit_test_setup_teardown(test_in_place_busy_backs_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thread_copies_and_the_wal_starts_over, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_loop_finishes_what_a_round_left, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loop_goes_on_while_a_round_is_held, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_round_is_final, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_seen_without_a_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncate_refused_while_a_round_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_holding_the_wal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_seen_after_a_large_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_commit_decides_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_beside_a_round_decides_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stop_start_and_no_file, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
