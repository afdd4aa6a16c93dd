/*
 * store_checkpoint.c — the checkpointer: a thread with a connection of its
 * own that copies the WAL's pages into the database file while the loop
 * goes on committing.
 *
 * The loop (store_commit.c, after a commit) asks for a round once the WAL holds
 * the checkpoint threshold; the thread runs a PASSIVE checkpoint, which
 * never waits for the writer and copies every frame committed before it
 * began, up to the oldest reader's snapshot (SQLite syncs the WAL before
 * and the database after, and moves its backfill mark only after both
 * syncs succeeded). The WAL starts over at the first write transaction
 * that finds all of it copied; store_commit.c plans that, and when the loop may
 * checkpoint in place. One rule keeps SQLite's WAL-reset race (SQLite
 * before 3.51.3: a checkpoint that starts while another connection's
 * commit restarts the WAL can later skip frames) out of reach: a round
 * starts only when the loop asks; the loop asks only right after a commit
 * that appended frames while the thread was idle (neither running a round
 * nor asked for one: nothing can have copied those frames yet, so the WAL
 * is not fully copied when the round starts, and no commit can start it
 * over before the round has copied it all); and the loop never checkpoints
 * in place while a round is asked for or runs. So no round ever starts
 * beside a commit that could restart the WAL.
 * A round that fails with an I/O error, a full disk or a corrupt file is
 * final, like a failed sync: the loop poisons the store (store_io_failed)
 * before its next commit, and at stop. Trusts its caller to start and stop
 * it on the loop thread, with the store open.
 */
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "store.h"
#include "store_internal.h"

struct store_checkpointer {
    sqlite3 *db; /* the thread's own connection; touched by the thread only once started */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* the thread: a request or stop */
    pthread_cond_t done; /* store_test_checkpointer_wait: a round ended */
    /* under lock */
    int requested, running, stop, failed, failed_rc;
    uint64_t generation;      /* the WAL's, as the loop counts them, of the request */
    uint64_t done_generation; /* of the last round that copied, and */
    int done_frames;          /* the frames it found copied at its end (0: none) */
    uint64_t rounds;          /* rounds finished that copied (SQLITE_OK) */
    uint64_t attempts;        /* rounds finished, whatever their outcome */
};

static void *checkpointer_main(void *arg)
{
    store_checkpointer_t *c = arg;
    /* named for top -H, core dumps and sanitizer reports (15 bytes at most) */
    (void)prctl(PR_SET_NAME, "schakel-ckpt", 0, 0, 0);
    pthread_mutex_lock(&c->lock);
    while (!c->stop) {
        if (c->failed || !c->requested) {
            pthread_cond_wait(&c->wake, &c->lock);
            continue;
        }
        c->requested = 0;
        c->running = 1;
        uint64_t generation = c->generation;
        pthread_mutex_unlock(&c->lock);
        int log = 0, copied = 0;
        int rc = sqlite3_wal_checkpoint_v2(c->db, "main", SQLITE_CHECKPOINT_PASSIVE, &log, &copied);
        pthread_mutex_lock(&c->lock);
        c->running = 0;
        c->attempts++;
        if (rc == SQLITE_OK) {
            c->rounds++;
            c->done_generation = generation;
            c->done_frames = copied > 0 ? copied : 0;
        } else if (store_checkpoint_failure_is_final(rc)) {
            c->failed = 1;
            c->failed_rc = rc;
        }
        /* else SQLITE_BUSY (another checkpoint runs: the loop's TRUNCATE
         * or an operator's), SQLITE_NOMEM, ...: the next request tries
         * again */
        pthread_cond_broadcast(&c->done);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* The thread's connection: the same file, no automatic checkpoint, the
 * syncs of synchronous = NORMAL (read back: SQLite ignores what it cannot
 * do), and the WAL opened before the thread starts (a checkpoint on a
 * connection that has read nothing yet would have to open it first). */
static int checkpointer_open(store_checkpointer_t *c, store_t *store, char *err, size_t errlen)
{
    const char *path = sqlite3_db_filename(store->db, "main");
    if (path == NULL || path[0] == '\0') {
        snprintf(err, errlen, "the store has no file (in memory?)");
        return -1;
    }
    if (!sqlite3_threadsafe()) {
        snprintf(err, errlen, "SQLite was built without threads");
        return -1;
    }
    int rc = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(c->db, STORE_BUSY_TIMEOUT_MS);
    if (rc == SQLITE_OK)
        rc = sqlite3_wal_autocheckpoint(c->db, 0);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(c->db,
                          "PRAGMA synchronous = NORMAL; PRAGMA cache_size = 16;"
                          " SELECT count(*) FROM sqlite_schema;",
                          NULL, NULL, NULL);
    sqlite3_stmt *check = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(c->db, "PRAGMA synchronous", -1, &check, NULL);
    if (rc == SQLITE_OK && sqlite3_step(check) == SQLITE_ROW && sqlite3_column_int(check, 0) != 1) {
        sqlite3_finalize(check);
        snprintf(err, errlen, "the second connection to %s did not take synchronous = NORMAL",
                 path);
        return -1;
    }
    sqlite3_finalize(check);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open a second connection to %s: %s", path,
                 c->db != NULL ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        return -1;
    }
    return 0;
}

int store_checkpointer_start(store_t *store, char *err, size_t errlen)
{
    if (store == NULL || store->db == NULL) {
        snprintf(err, errlen, "no store");
        return -1;
    }
    if (store->checkpointer != NULL)
        return 0;
    store_checkpointer_t *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (checkpointer_open(c, store, err, errlen) != 0) {
        sqlite3_close(c->db);
        free(c);
        return -1;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->wake, NULL);
    pthread_cond_init(&c->done, NULL);
    /* Signals are the loop's; a checkpoint's syncs must not be interrupted. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&c->thread, NULL, checkpointer_main, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the checkpoint thread: %s", strerror(rc));
        pthread_cond_destroy(&c->done);
        pthread_cond_destroy(&c->wake);
        pthread_mutex_destroy(&c->lock);
        sqlite3_close(c->db);
        free(c);
        return -1;
    }
    store->checkpointer = c;
    return 0;
}

/* Called with the lock held, on the loop thread: a failed round poisons
 * the store (store_io_failed names it). */
static int checkpointer_report(store_t *store, store_checkpointer_t *c)
{
    if (!c->failed)
        return 0;
    if (!store->sync_failed)
        store_io_failed(store, c->failed_rc, "checkpointing the WAL on the checkpoint thread");
    return -1;
}

int store_checkpointer_stop(store_t *store)
{
    if (store == NULL || store->checkpointer == NULL)
        return 0;
    store_checkpointer_t *c = store->checkpointer;
    pthread_mutex_lock(&c->lock);
    c->stop = 1;
    pthread_cond_signal(&c->wake);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);          /* a round in progress finishes first */
    int rc = checkpointer_report(store, c); /* the thread is gone: no lock needed */
    pthread_cond_destroy(&c->done);
    pthread_cond_destroy(&c->wake);
    pthread_mutex_destroy(&c->lock);
    sqlite3_close(c->db);
    free(c);
    store->checkpointer = NULL;
    return rc;
}

int store_checkpointer_poll(store_t *store, uint64_t generation, int *copied)
{
    store_checkpointer_t *c = store->checkpointer;
    *copied = -1;
    pthread_mutex_lock(&c->lock);
    int rc = checkpointer_report(store, c);
    if (rc == 0) {
        rc = !c->running && !c->requested;
        if (rc && c->done_generation == generation && c->done_frames > 0)
            *copied = c->done_frames;
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int store_checkpointer_idle(store_t *store)
{
    store_checkpointer_t *c = store->checkpointer;
    if (c == NULL)
        return 1;
    pthread_mutex_lock(&c->lock);
    int idle = !c->running && !c->requested;
    pthread_mutex_unlock(&c->lock);
    return idle;
}

void store_checkpointer_request(store_t *store, uint64_t generation)
{
    store_checkpointer_t *c = store->checkpointer;
    pthread_mutex_lock(&c->lock);
    if (!c->failed) {
        c->generation = generation;
        c->requested = 1;
        pthread_cond_signal(&c->wake);
    }
    pthread_mutex_unlock(&c->lock);
}

int store_checkpointer_check(store_t *store)
{
    store_checkpointer_t *c = store != NULL ? store->checkpointer : NULL;
    if (c == NULL)
        return 0;
    pthread_mutex_lock(&c->lock);
    int rc = checkpointer_report(store, c);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int store_checkpointer_quiesce(store_t *store)
{
    store_checkpointer_t *c = store != NULL ? store->checkpointer : NULL;
    if (c == NULL)
        return 0;
    pthread_mutex_lock(&c->lock);
    c->requested = 0; /* the loop asks again when it needs one */
    int running = c->running;
    pthread_mutex_unlock(&c->lock);
    return running ? -1 : 0;
}

int store_checkpointer_running(const store_t *store)
{
    return store != NULL && store->checkpointer != NULL;
}

void store_checkpoint_counts(const store_t *store, store_checkpoint_counts_t *counts)
{
    memset(counts, 0, sizeof *counts);
    if (store == NULL)
        return;
    counts->finished_in_place = store->checkpoints_finished;
    counts->forced_in_place = store->checkpoints_forced;
    counts->busy_in_place = store->checkpoints_busy;
    counts->requests = store->checkpoint_requests;
    store_checkpointer_t *c = store->checkpointer;
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    counts->thread_rounds = c->rounds;
    counts->thread_attempts = c->attempts;
    pthread_mutex_unlock(&c->lock);
}

uint64_t store_test_checkpointer_wait(store_t *store, uint64_t attempts, struct timespec until)
{
    store_checkpointer_t *c = store != NULL ? store->checkpointer : NULL;
    if (c == NULL)
        return 0;
    pthread_mutex_lock(&c->lock);
    while (c->attempts < attempts && !c->failed)
        if (pthread_cond_timedwait(&c->done, &c->lock, &until) != 0)
            break;
    uint64_t done = c->attempts;
    pthread_mutex_unlock(&c->lock);
    return done;
}
