/*
 * test_store_sync.c — unit tests of broker/store_sync.c (the syncer thread)
 * against real SQLite stores in a mkdtemp() folder under /tmp.
 *
 * The syncs of the syncer's thread go through tests/unit/sync_gate.c,
 * which counts them, can fail them with EIO, and can hold them at a gate
 * that the test opens, so a sync "in progress" is a state the test controls
 * instead of a race it hopes to win. Every wait is bounded (poll, timed
 * condition waits); nothing sleeps.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>
#include <sqlite3.h>

#include "store.h"
#include "store_fixture.h"
#include "store_internal.h" /* only to give a handle an in-memory database */
#include "sync_gate.h"

#define BOUND_MS SYNC_GATE_BOUND_MS
/* A negative check ("has not happened yet") waits this long. It can only
 * pass falsely (the event might have come later), never fail falsely. */
#define NEGATIVE_MS 200

typedef struct fixture {
    char dir[64];
    char path[128];
    char wal[160];
    store_t *store;
    store_syncer_t *syncer;
} fixture_t;

static uint8_t test_key[STORE_KEY_BYTES];

/* ------------------------------------------------------------ fixture */

/* A fresh store file `name` in the fixture's folder (closing the last). */
static void store_fresh(fixture_t *f, const char *name)
{
    store_syncer_stop(&f->syncer);
    store_close(&f->store);
    int n = snprintf(f->path, sizeof f->path, "%s/%s", f->dir, name);
    assert_true(n > 0 && (size_t)n < sizeof f->path);
    n = snprintf(f->wal, sizeof f->wal, "%s-wal", f->path);
    assert_true(n > 0 && (size_t)n < sizeof f->wal);
    f->store = store_fixture_create(f->path, test_key);
    struct stat st;
    if (stat(f->wal, &st) != 0)
        fail_msg("an opened store has no WAL file %s: %s", f->wal, strerror(errno));
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    if (store_fixture_make_dir(f->dir, sizeof f->dir, "schakel-store-sync") != 0) {
        free(f);
        return -1;
    }
    sync_gate_reset();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    sync_gate_close(0); /* a failed test may leave the thread held */
    sync_gate_fail(0);
    store_syncer_stop(&f->syncer);
    store_close(&f->store);
    store_fixture_remove_tree(f->dir);
    free(f);
    return 0;
}

static store_syncer_t *start_ok(fixture_t *f)
{
    char err[256] = "";
    store_syncer_t *s = store_syncer_start(f->store, err, sizeof err);
    if (s == NULL)
        fail_msg("store_syncer_start: %s", err);
    return s;
}

/* poll the syncer's eventfd: 1 readable, 0 not within timeout_ms. */
static int event_ready(const store_syncer_t *s, int timeout_ms)
{
    struct pollfd p = {.fd = store_syncer_fd(s), .events = POLLIN};
    int rc = poll(&p, 1, timeout_ms);
    assert_true(rc >= 0);
    return rc > 0 && (p.revents & POLLIN) != 0;
}

/* ------------------------------------------------------------ tests */

/* Tickets increase; wait returns once its ticket is synced, at once for a
 * ticket synced before (even while a later sync is held), and never
 * reports more than was requested; collect sees what wait saw. */
static void test_tickets_wait_and_collect(void **state)
{
    fixture_t *f = *state;
    store_fresh(f, "tickets.db");
    f->syncer = start_ok(f);
    uint64_t synced = 99;
    assert_int_equal(store_syncer_collect(f->syncer, &synced), 0);
    assert_int_equal(synced, 0); /* nothing asked, nothing synced */
    durations_t took;
    store_syncer_durations(f->syncer, &took);
    assert_int_equal(took.count, 0);

    uint64_t tickets[4];
    for (size_t i = 0; i < 3; i++) {
        tickets[i] = store_syncer_request(f->syncer);
        if (i > 0 && tickets[i] <= tickets[i - 1])
            fail_msg("ticket %zu (%llu) does not follow %llu", i, (unsigned long long)tickets[i],
                     (unsigned long long)tickets[i - 1]);
    }
    assert_int_equal(store_syncer_wait(f->syncer, tickets[2], &synced), 0);
    assert_int_equal(synced, tickets[2]); /* covered, and never beyond the last request */
    assert_int_equal(store_syncer_collect(f->syncer, &synced), 0);
    assert_int_equal(synced, tickets[2]);

    /* the next sync is held: tickets synced before are still answered */
    unsigned held = sync_gate_count(SYNC_GATE_HELD_TOTAL);
    sync_gate_close(1);
    tickets[3] = store_syncer_request(f->syncer);
    assert_true(tickets[3] > tickets[2]);
    sync_gate_await_held(held + 1);
    for (size_t i = 0; i < 3; i++) {
        synced = 0;
        assert_int_equal(store_syncer_wait(f->syncer, tickets[i], &synced), 0);
        assert_int_equal(synced, tickets[2]);
    }
    assert_int_equal(store_syncer_collect(f->syncer, &synced), 0);
    assert_int_equal(synced, tickets[2]); /* a sync in progress covers nothing yet */
    /* a ticket never handed out is not waited for (it would never come) */
    assert_int_equal(store_syncer_wait(f->syncer, tickets[3] + 1, &synced), 0);
    assert_int_equal(synced, tickets[2]);

    sync_gate_close(0);
    assert_int_equal(store_syncer_wait(f->syncer, tickets[3], &synced), 0);
    assert_int_equal(synced, tickets[3]);
    assert_false(store_sync_failed(f->store));
    /* each fdatasync the thread made is timed: the first three tickets took
     * one or more, the held one one more */
    store_syncer_durations(f->syncer, &took);
    if (took.count < 2 || took.count > 4)
        fail_msg("4 tickets, the last alone: %llu syncs timed", (unsigned long long)took.count);
    assert_true(took.sum_s > 0);
    sync_gate_assert_never_expired();
}

/* The eventfd becomes readable after a sync, collect then reports it and
 * empties the eventfd; rows ask for 1, 2 and 9 syncs in a row. */
static void test_eventfd_after_each_sync(void **state)
{
    fixture_t *f = *state;
    static const unsigned rows[] = {1, 2, 9};
    store_fresh(f, "eventfd.db");
    f->syncer = start_ok(f);
    assert_true(store_syncer_fd(f->syncer) >= 0);
    assert_int_equal(store_syncer_fd(NULL), -1);
    assert_int_equal(event_ready(f->syncer, 0), 0); /* no sync yet */
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        uint64_t last = 0, synced = 0, before = 0;
        assert_int_equal(store_syncer_collect(f->syncer, &before), 0);
        for (unsigned i = 0; i < rows[r]; i++)
            last = store_syncer_request(f->syncer);
        unsigned looks = 0;
        while (synced < last) {
            if (!event_ready(f->syncer, BOUND_MS))
                fail_msg("row %zu: no event within %d ms with ticket %llu unsynced", r, BOUND_MS,
                         (unsigned long long)last);
            assert_int_equal(store_syncer_collect(f->syncer, &synced), 0);
            if (synced <= before || synced > last)
                fail_msg("row %zu: an event, but synced %llu (before %llu, last ticket %llu)", r,
                         (unsigned long long)synced, (unsigned long long)before,
                         (unsigned long long)last);
            before = synced;
            looks++;
        }
        assert_true(looks <= rows[r]);                  /* never an event without progress */
        assert_int_equal(event_ready(f->syncer, 0), 0); /* collect emptied it */
    }
}

/* Requests made while a sync runs are covered by one more sync, not one
 * each; synced never exceeds what was requested. */
static void test_requests_coalesce(void **state)
{
    fixture_t *f = *state;
    static const struct {
        unsigned while_held;
        unsigned syncs;
    } rows[] = {{0, 1}, {1, 2}, {7, 2}, {40, 2}};
    store_fresh(f, "coalesce.db");
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        f->syncer = start_ok(f);
        unsigned syncs = sync_gate_count(SYNC_GATE_THREAD_SYNCS),
                 held = sync_gate_count(SYNC_GATE_HELD_TOTAL);
        sync_gate_close(1);
        uint64_t first = store_syncer_request(f->syncer), last = first, synced = 0;
        sync_gate_await_held(held + 1);
        for (unsigned i = 0; i < rows[r].while_held; i++) {
            last = store_syncer_request(f->syncer);
            assert_int_equal(store_syncer_collect(f->syncer, &synced), 0);
            if (synced != 0)
                fail_msg("row %zu: synced %llu while the first sync is still held", r,
                         (unsigned long long)synced);
        }
        sync_gate_close(0);
        assert_int_equal(store_syncer_wait(f->syncer, last, &synced), 0);
        if (synced != last)
            fail_msg("row %zu: synced %llu, last ticket %llu", r, (unsigned long long)synced,
                     (unsigned long long)last);
        store_syncer_stop(&f->syncer); /* joins: no sync is still counting */
        assert_null(f->syncer);
        unsigned made = sync_gate_count(SYNC_GATE_THREAD_SYNCS) - syncs;
        if (made != rows[r].syncs)
            fail_msg("row %zu: %u request(s) made %u sync(s), expected %u", r,
                     1 + rows[r].while_held, made, rows[r].syncs);
    }
    sync_gate_assert_never_expired();
}

enum fault { FAULT_FDATASYNC_EIO, FAULT_WAL_RENAMED_OVER, FAULT_WAL_UNLINKED_AND_CREATED };

static void copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(in >= 0 && out >= 0);
    char buf[8192];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        assert_int_equal(write(out, buf, (size_t)n), n);
    assert_int_equal(n, 0);
    close(in);
    close(out);
}

static void fault_apply(fixture_t *f, enum fault fault)
{
    char copy[192];
    switch (fault) {
    case FAULT_FDATASYNC_EIO:
        sync_gate_fail(1);
        break;
    case FAULT_WAL_RENAMED_OVER:
        snprintf(copy, sizeof copy, "%s.copy", f->wal);
        copy_file(f->wal, copy);
        assert_int_equal(rename(copy, f->wal), 0);
        break;
    case FAULT_WAL_UNLINKED_AND_CREATED: {
        assert_int_equal(unlink(f->wal), 0);
        int fd = open(f->wal, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        close(fd);
        break;
    }
    }
}

/* A failed sync (EIO, or a WAL that is no longer the file the syncer
 * opened) is final: the eventfd wakes the loop, collect and wait return -1
 * from then on (for tickets synced before too), and the store handle is
 * poisoned. Before the fault every row syncs fine. */
static void test_failed_sync_is_final(void **state)
{
    fixture_t *f = *state;
    static const struct {
        enum fault fault;
        const char *db;
        const char *message;
    } rows[] = {
        {FAULT_FDATASYNC_EIO, "eio.db", "fdatasync of the WAL"},
        {FAULT_WAL_RENAMED_OVER, "renamed.db", "the WAL file was replaced under the broker"},
        {FAULT_WAL_UNLINKED_AND_CREATED, "recreated.db",
         "the WAL file was replaced under the broker"},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        store_fresh(f, rows[r].db);
        f->syncer = start_ok(f);
        uint64_t synced = 0, good = store_syncer_request(f->syncer);
        assert_int_equal(store_syncer_wait(f->syncer, good, &synced), 0);
        assert_int_equal(synced, good);
        assert_int_equal(store_syncer_collect(f->syncer, &synced), 0);
        assert_false(store_sync_failed(f->store));

        fault_apply(f, rows[r].fault);
        uint64_t bad = store_syncer_request(f->syncer);
        if (!event_ready(f->syncer, BOUND_MS))
            fail_msg("row %zu: no event within %d ms after a failing sync", r, BOUND_MS);
        if (store_syncer_collect(f->syncer, &synced) != -1)
            fail_msg("row %zu: collect after a failed sync returned 0 (synced %llu)", r,
                     (unsigned long long)synced);
        assert_true(synced < bad); /* the failed sync covers nothing */
        assert_true(store_sync_failed(f->store));
        if (strstr(store_errmsg(f->store), rows[r].message) == NULL)
            fail_msg("row %zu: store_errmsg \"%s\" does not say \"%s\"", r, store_errmsg(f->store),
                     rows[r].message);
        sync_gate_fail(0); /* the disk is fine again: the failure stays all the same */
        assert_int_equal(store_syncer_wait(f->syncer, bad, &synced), -1);
        assert_int_equal(store_syncer_wait(f->syncer, good, &synced), -1);
        uint64_t later = store_syncer_request(f->syncer);
        assert_true(later > bad);
        assert_int_equal(store_syncer_wait(f->syncer, later, &synced), -1);
        assert_int_equal(store_syncer_collect(f->syncer, &synced), -1);
        assert_int_equal(store_begin(f->store), -1); /* the handle refuses everything */
        store_syncer_stop(&f->syncer);
    }
}

typedef struct stopper {
    store_syncer_t **syncer;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int done;
} stopper_t;

static void *stopper_main(void *arg)
{
    stopper_t *st = arg;
    store_syncer_stop(st->syncer);
    pthread_mutex_lock(&st->lock);
    st->done = 1;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->lock);
    return NULL;
}

/* 1 once the stopper finished within timeout_ms, else 0. */
static int stopper_await(stopper_t *st, int timeout_ms)
{
    struct timespec until = sync_gate_deadline(timeout_ms);
    pthread_mutex_lock(&st->lock);
    int rc = 0;
    while (!st->done && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&st->cv, &st->lock, &until);
    int done = st->done;
    pthread_mutex_unlock(&st->lock);
    return done;
}

/* store_syncer_stop returns with requests outstanding: none asked, several
 * queued, or a sync held in progress with more queued behind it. A held
 * sync finishes first (stop waits for it), and nothing after it starts. */
static void test_stop_with_requests_outstanding(void **state)
{
    fixture_t *f = *state;
    static const struct {
        unsigned queued;
        int held;
    } rows[] = {{0, 0}, {5, 0}, {0, 1}, {3, 1}};
    store_syncer_stop(NULL); /* safe on NULL and on a NULL syncer */
    store_syncer_t *none = NULL;
    store_syncer_stop(&none);
    store_fresh(f, "stop.db");
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        f->syncer = start_ok(f);
        unsigned held = sync_gate_count(SYNC_GATE_HELD_TOTAL),
                 syncs = sync_gate_count(SYNC_GATE_THREAD_SYNCS);
        if (rows[r].held) {
            sync_gate_close(1);
            (void)store_syncer_request(f->syncer);
            sync_gate_await_held(held + 1);
        }
        for (unsigned i = 0; i < rows[r].queued; i++)
            (void)store_syncer_request(f->syncer);
        stopper_t st = {.syncer = &f->syncer, .done = 0};
        pthread_mutex_init(&st.lock, NULL);
        pthread_cond_init(&st.cv, NULL);
        pthread_t thread;
        assert_int_equal(pthread_create(&thread, NULL, stopper_main, &st), 0);
        if (rows[r].held) {
            if (stopper_await(&st, NEGATIVE_MS)) {
                sync_gate_close(0);
                pthread_join(thread, NULL);
                fail_msg("row %zu: stop returned while a sync was still in progress", r);
            }
            sync_gate_close(0);
        }
        int done = stopper_await(&st, BOUND_MS);
        if (!done) {
            sync_gate_close(0);
            fail_msg("row %zu: store_syncer_stop did not return within %d ms", r, BOUND_MS);
        }
        pthread_join(thread, NULL);
        pthread_cond_destroy(&st.cv);
        pthread_mutex_destroy(&st.lock);
        assert_null(f->syncer);
        assert_int_equal(sync_gate_count(SYNC_GATE_HELD_NOW), 0);
        if (rows[r].held && sync_gate_count(SYNC_GATE_THREAD_SYNCS) - syncs != 1)
            fail_msg("row %zu: %u sync(s) after the held one; a stopped syncer starts none", r,
                     sync_gate_count(SYNC_GATE_THREAD_SYNCS) - syncs - 1);
        assert_false(store_sync_failed(f->store)); /* unsynced is not failed */
    }
    sync_gate_assert_never_expired();
}

enum no_wal { NO_WAL_UNLINKED, NO_WAL_IN_MEMORY, NO_WAL_TEMPORARY };

/* store_syncer_start returns NULL with a message when there is no WAL file
 * to sync, and leaves the store usable (the broker then syncs in place).
 * store_open refuses an in-memory store, so those rows give an opened
 * handle another connection (through store_internal.h) for the call. */
static void test_no_wal_file(void **state)
{
    fixture_t *f = *state;
    static const struct {
        enum no_wal how;
        const char *db;
        const char *message;
    } rows[] = {
        {NO_WAL_UNLINKED, "unlinked.db", "cannot open the WAL"},
        {NO_WAL_IN_MEMORY, "memory.db", "the store has no WAL file"},
        {NO_WAL_TEMPORARY, "temporary.db", "the store has no WAL file"},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        store_fresh(f, rows[r].db);
        char err[256] = "";
        store_syncer_t *s = NULL;
        if (rows[r].how == NO_WAL_UNLINKED) {
            assert_int_equal(unlink(f->wal), 0);
            s = store_syncer_start(f->store, err, sizeof err);
        } else {
            sqlite3 *other = NULL;
            const char *name = rows[r].how == NO_WAL_IN_MEMORY ? ":memory:" : "";
            assert_int_equal(sqlite3_open(name, &other), SQLITE_OK);
            sqlite3 *own = f->store->db;
            f->store->db = other;
            s = store_syncer_start(f->store, err, sizeof err);
            f->store->db = own;
            sqlite3_close(other);
        }
        if (s != NULL) {
            store_syncer_stop(&s);
            fail_msg("row %zu: a syncer started without a WAL file", r);
        }
        if (strstr(err, rows[r].message) == NULL)
            fail_msg("row %zu: message \"%s\" does not say \"%s\"", r, err, rows[r].message);
        assert_false(store_sync_failed(f->store));
        assert_int_equal(store_begin(f->store), 0);
        assert_int_equal(store_commit(f->store), 0); /* synced in place */
    }
    char err[64] = "";
    assert_null(store_syncer_start(NULL, err, sizeof err));
}

typedef struct commit_call {
    store_t *store;
    int rc;
} commit_call_t;

static void *commit_unsynced_main(void *arg)
{
    commit_call_t *c = arg;
    c->rc = store_commit_unsynced(c->store);
    return NULL;
}

/* SQLite syncs inside COMMIT too: the first commit after the WAL was
 * emptied writes and syncs a new WAL header. A failed sync there is final
 * like one of the store's own: the handle refuses everything after it. The
 * commit runs on a thread of its own (the gate fails other threads' syncs
 * only); the test waits for it. */
static void test_failed_sync_inside_commit_is_final(void **state)
{
    fixture_t *f = *state;
    store_fresh(f, "inside.db");
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(sqlite3_exec(f->store->db,
                                  "CREATE TABLE probe (x); INSERT INTO probe VALUES (1)", NULL,
                                  NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(store_checkpoint(f->store),
                     0); /* the WAL is empty: the next commit restarts it */
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(sqlite3_exec(f->store->db, "INSERT INTO probe VALUES (2)", NULL, NULL, NULL),
                     SQLITE_OK);
    sync_gate_fail(1);
    commit_call_t call = {.store = f->store, .rc = 0};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, commit_unsynced_main, &call), 0);
    assert_int_equal(pthread_join(thread, NULL), 0);
    sync_gate_fail(0);
    assert_int_equal(call.rc, -1);
    assert_true(store_sync_failed(f->store));
    if (strstr(store_errmsg(f->store), "syncing the WAL inside the commit") == NULL)
        fail_msg("store_errmsg \"%s\"", store_errmsg(f->store));
    assert_int_equal(store_begin(f->store), -1); /* the handle refuses everything */
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    sync_gate_init();
    randombytes_buf(test_key, sizeof test_key);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tickets_wait_and_collect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eventfd_after_each_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requests_coalesce, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync_is_final, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_with_requests_outstanding, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_wal_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync_inside_commit_is_final, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
