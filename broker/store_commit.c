/*
 * store_commit.c — the store's transactions: begin, commit (synced, or
 * unsynced for a turn that can do without), rollback, the WAL hook and the
 * in-place checkpoints it plans, and the sync failure that ends commits
 * for good. Trusts its caller to group a loop turn into one transaction.
 * Errors are -1 with store_errmsg set; a lost commit is told as such.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "store_internal.h"

/* Cost of each: one lock change; COMMIT also writes the WAL, and
 * store_commit syncs it (one fsync), which is why callers group a loop turn
 * into one. */

int store_begin(store_t *store)
{
    if (store_enter(store, "begin") != 0)
        return -1;
    if (!sqlite3_get_autocommit(store->db))
        return 0;
    if (store->txn_open) {
        /* SQLite rolled our transaction back by itself (I/O error, disk
         * full): beginning a fresh one here would let the caller's commit
         * report writes of the lost one as done. The caller must roll back
         * (store_rollback) before anything else is written. */
        store_refuse(store, "begin",
                     "the open transaction was rolled back after a storage error; roll back "
                     "before writing again");
        return -1;
    }
    store->txn_lost_rc = 0;
    if (store_stmt_run(store, store->stmt[STMT_BEGIN], "begin") != 0)
        return -1;
    store->txn_open = 1;
    store->txn_case_num = store->next_case_num;
    store->txn_serial++;       /* a new transaction: the cached audit tail is stale */
    store->audit_mismatch = 0; /* its reads say again */
    return 0;
}

/* The open transaction ends without its writes (rolled back, lost or
 * refused): what it counted goes with them. The item and delivery seqs it
 * took stay taken (a gap in 63 bits costs nothing); the case number it
 * took is the next open's again, since case ids are eight digits and the
 * last of them must not be lost to a failed commit. Nothing outside the
 * store saw that number: the turn's answers say it failed. */
static void txn_counters_drop(store_t *store)
{
    store_count_rollback(store);
    store_bytes_rollback(store);
    store->delivery_high_due = 0;
    store_mailbox_drop(store);
    if (store->txn_case_num > 0)
        store->next_case_num = store->txn_case_num;
    store->txn_case_num = 0;
}

/* The transaction is gone without a COMMIT or ROLLBACK from us: SQLite
 * rolled it back by itself (after an I/O or full-disk error), or none was
 * begun. Saying 0 would let the caller acknowledge writes that are gone. */
static int commit_lost(store_t *store)
{
    int lost_rc = store->txn_open ? store->txn_lost_rc : 0;
    store_refuse(store, "commit",
                 lost_rc != 0 ? "the transaction was rolled back after a storage error"
                              : "no transaction is open (rolled back?)");
    store->last_rc = lost_rc;
    store->txn_open = 0;
    store->txn_lost_rc = 0;
    return -1;
}

static int commit_now(store_t *store)
{
    store->commit_wrote = 0; /* the WAL hook says otherwise */
    /* A round asked for or running while this commit appends could copy
     * its frames before the plan below looks (store_checkpoint.c): only a
     * commit made beside an idle thread may ask for the next round. */
    store->commit_beside_round = !store_checkpointer_idle(store);
    if (sqlite3_get_autocommit(store->db)) {
        txn_counters_drop(store);
        return commit_lost(store);
    }
    /* The turn's changes of the partners' sums go into stored_bytes, its
     * acks marked in mailbox rows into those rows, and the highest
     * delivery seq it handed out into delivery_seq_high, in the same
     * transaction: they commit with the rest or not at all. */
    if (store_mailbox_flush(store) == 0 && store_bytes_flush(store) == 0 &&
        store_delivery_high_flush(store) == 0 &&
        store_stmt_run(store, store->stmt[STMT_COMMIT], "commit") == 0) {
        store->txn_open = 0;
        store->txn_case_num = 0;
        store_count_commit(store);
        store_bytes_commit(store);
        store_audit_committed(store);
        store_mailbox_committed(store);
        return 0;
    }
    txn_counters_drop(store);
    /* SQLite syncs inside COMMIT too (the WAL's header, when the WAL starts
     * over): a failed sync there is as final as one of ours. */
    int failed_rc = sqlite3_extended_errcode(store->db);
    /* Leave no half-state behind: the caller treats all of it as lost. */
    if (!sqlite3_get_autocommit(store->db)) {
        char kept[STORE_ERRMSG_LEN];
        int kept_rc = store->last_rc;
        memcpy(kept, store->errmsg, sizeof kept);
        (void)store_stmt_run(store, store->stmt[STMT_ROLLBACK], "rollback after failed commit");
        memcpy(store->errmsg, kept, sizeof kept);
        store->last_rc = kept_rc;
    }
    store->txn_open = 0;
    if (failed_rc == SQLITE_IOERR_FSYNC || failed_rc == SQLITE_IOERR_DIR_FSYNC)
        store_io_failed(store, failed_rc, "syncing the WAL inside the commit");
    return -1;
}

/* Make the committed WAL frames durable: the store runs with synchronous =
 * NORMAL (store_schema_configure), under which a WAL commit does not sync,
 * so a synced commit syncs the WAL itself, through SQLite's own handle of
 * the file. One sync covers every frame before it, the unsynced commits'
 * among them. Checkpoints sync the WAL and the database file by themselves. */
int store_wal_sync(store_t *store)
{
    sqlite3_file *wal = NULL;
    int rc = sqlite3_file_control(store->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal);
    if (rc == SQLITE_OK && (wal == NULL || wal->pMethods == NULL))
        rc = SQLITE_IOERR_FSYNC; /* after a commit in WAL mode its file is open */
    if (rc == SQLITE_OK) {
        int64_t start = durations_now_ns();
        rc = wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL);
        durations_add(&store->loop_sync_durations, durations_now_ns() - start);
    }
    if (rc == SQLITE_OK) {
        store->loop_syncs++; /* covers every commit so far (store_loop_syncs) */
        return 0;
    }
    store_io_failed(store, rc, "syncing the WAL");
    return -1;
}

/* The commit is visible but perhaps not on disk, and after a failed fsync
 * the kernel may call the same pages clean: no later sync can be trusted to
 * cover them. The handle refuses everything from now on; only reopening is
 * safe. */
void store_io_failed(store_t *store, int rc, const char *what)
{
    store->sync_failed = 1;
    store->last_rc = rc;
    snprintf(store->errmsg, sizeof store->errmsg,
             "commit: %s failed (%s); the store must be opened again", what, sqlite3_errstr(rc));
}

/* Counts the WAL's frames after each commit, in place of SQLite's automatic
 * checkpoint, which runs inside COMMIT and drops a failed sync of its own
 * (store_open turns it off by installing this hook). A WAL that started
 * over holds this commit's frames only (SQLite restarts it at the first
 * frame a transaction writes, when every frame before was copied); the
 * frames this commit wrote come from the connection's count of pages
 * written. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void)name;
    store_t *store = arg;
    int written = 0, high = 0;
    if (sqlite3_db_status(db, SQLITE_DBSTATUS_CACHE_WRITE, &written, &high, 0) == SQLITE_OK) {
        /* unsigned: the count wraps after 2^32 pages, the difference not */
        unsigned by_this = (unsigned)written - store->cache_writes;
        store->cache_writes = (unsigned)written;
        if (frames >= 0 && (unsigned)frames <= by_this)
            store->wal_generation++; /* the WAL started over */
        else if (frames < store->wal_frames)
            store->wal_generation++;
    } else if (frames < store->wal_frames) {
        store->wal_generation++;
    }
    store->wal_frames = frames;
    store->commit_wrote = 1;
    if (frames > store->wal_frames_peak)
        store->wal_frames_peak = frames;
    return SQLITE_OK;
}

static int checkpoint_threshold(const store_t *store)
{
    return store->checkpoint_frames > 0 ? store->checkpoint_frames : STORE_CHECKPOINT_FRAMES;
}

void store_test_checkpoint_frames(store_t *store, int frames)
{
    if (store != NULL)
        store->checkpoint_frames = frames;
}

int store_test_wal_frames_peak(store_t *store)
{
    int peak = store->wal_frames_peak;
    store->wal_frames_peak = store->wal_frames;
    return peak;
}

enum checkpoint_plan { PLAN_NONE, PLAN_FINISH, PLAN_FORCE };

/* After a commit: once the WAL holds the threshold (STORE_CHECKPOINT_FRAMES)
 * it is to be copied into the database. Without a checkpointer that is done
 * here, in place. With one, the thread copies it in rounds while the loop
 * goes on; but the WAL starts over only at a write that finds every frame
 * copied, and under steady load a commit always comes before a round ends.
 * So once a round has left at most STORE_CHECKPOINT_FINISH_FRAMES behind,
 * the loop copies those itself (between its transactions, so nothing comes
 * in between), and the next write starts the WAL over. From
 * STORE_CHECKPOINT_HARD_FACTOR times the threshold the loop checkpoints in
 * place even if no round got that close. The loop never checkpoints in
 * place while a round is asked for or runs, and asks for one only right
 * after a commit that appended frames while the thread was idle
 * (store_checkpoint.c: the WAL-reset race). A checkpoint that could not copy everything (a reader
 * holds part of the WAL) is tried again a threshold later, not at every
 * commit, and a round is asked for again only when the WAL has grown by
 * the finish bound since the last one was. A failed round is not reported
 * here (this commit is made and synced): the next commit is refused
 * (commit_allowed). */
static enum checkpoint_plan checkpoint_plan(store_t *store)
{
    /* A commit that appended nothing (the hook did not run) leaves the
     * counts as they were: nothing to decide, and no round may be asked
     * for on its word (the WAL may be fully copied). Nor may one made while
     * a round was asked for or ran: that round may have copied its frames
     * too. The next commit decides. */
    if (!store->commit_wrote || store->commit_beside_round)
        return PLAN_NONE;
    int threshold = checkpoint_threshold(store);
    if (store->wal_generation != store->checkpoint_marks_generation)
        store->checkpoint_retry_frames = store->checkpoint_request_frames = 0;
    if (store->wal_frames < threshold || store->wal_frames < store->checkpoint_retry_frames)
        return PLAN_NONE;
    if (store->checkpointer == NULL)
        return PLAN_FORCE;
    int copied = -1;
    if (store_checkpointer_poll(store, store->wal_generation, &copied) != 1)
        return PLAN_NONE; /* a round is on its way (or failed: the next commit says so) */
    if (store->wal_frames >= threshold * STORE_CHECKPOINT_HARD_FACTOR)
        return PLAN_FORCE;
    if (copied >= 0 && store->wal_frames - copied <= STORE_CHECKPOINT_FINISH_FRAMES)
        return PLAN_FINISH;
    if (store->wal_frames < store->checkpoint_request_frames)
        return PLAN_NONE; /* a round for a few frames more would cost its syncs for little */
    store_checkpointer_request(store, store->wal_generation);
    store->checkpoint_requests++;
    store->checkpoint_request_frames = store->wal_frames + STORE_CHECKPOINT_FINISH_FRAMES;
    store->checkpoint_marks_generation = store->wal_generation;
    return PLAN_NONE;
}

/* PASSIVE: never waits for a reader. The checkpoint syncs the WAL and the
 * file; an I/O error there poisons the handle like a failed sync. Busy
 * (another checkpoint runs) or held back by a reader: tried again later. */
static void checkpoint_in_place(store_t *store, enum checkpoint_plan plan)
{
    int log = 0, copied = 0;
    int rc = sqlite3_wal_checkpoint_v2(store->db, "main", SQLITE_CHECKPOINT_PASSIVE, &log, &copied);
    if (store_checkpoint_failure_is_final(rc)) {
        /* The commit before it is made and synced: it stands. The handle
         * refuses everything after, and the loop stops at the end of the
         * turn (store_sync_failed). */
        store_io_failed(store, rc, "checkpointing the WAL");
        return;
    }
    if (rc != SQLITE_OK) { /* SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM: a threshold later */
        store->checkpoints_busy++;
        store->checkpoint_retry_frames = store->wal_frames + checkpoint_threshold(store);
        store->checkpoint_marks_generation = store->wal_generation;
        return;
    }
    if (plan == PLAN_FINISH)
        store->checkpoints_finished++;
    else
        store->checkpoints_forced++;
    if (copied < log) { /* a reader holds the rest: not again before a threshold more */
        store->checkpoint_retry_frames = store->wal_frames + checkpoint_threshold(store);
        store->checkpoint_marks_generation = store->wal_generation;
    }
}

int store_checkpoint_failure_is_final(int rc)
{
    int primary = rc & 0xff;
    return primary == SQLITE_IOERR || primary == SQLITE_FULL || primary == SQLITE_CORRUPT ||
           primary == SQLITE_NOTADB;
}

/* The transaction is dropped without a word to the caller's error: what
 * refused it (a failed round) is in errmsg already. */
static void commit_abandon(store_t *store)
{
    txn_counters_drop(store);
    store->txn_open = 0;
    if (!sqlite3_get_autocommit(store->db))
        (void)sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
}

void store_wal_hook_install(store_t *store)
{
    (void)sqlite3_wal_hook(store->db, wal_hook, store);
}

int store_sync_failed(const store_t *store)
{
    return store != NULL && store->sync_failed;
}

/* A round of the checkpoint thread that failed refuses the commit: nothing
 * of the transaction is kept, and the handle is poisoned from then on. */
static int commit_allowed(store_t *store)
{
    if (store_checkpointer_check(store) == 0)
        return 0;
    commit_abandon(store);
    return -1;
}

int store_commit(store_t *store)
{
    if (store_enter(store, "commit") != 0 || commit_allowed(store) != 0)
        return -1;
    if (commit_now(store) != 0 || store_wal_sync(store) != 0)
        return -1;
    if (store->test_after_commit != NULL)
        store->test_after_commit(store, store->test_after_commit_arg);
    enum checkpoint_plan plan = checkpoint_plan(store);
    if (plan != PLAN_NONE)
        checkpoint_in_place(store, plan);
    return 0;
}

void store_test_after_commit(store_t *store, void (*fn)(store_t *store, void *arg), void *arg)
{
    store->test_after_commit = fn;
    store->test_after_commit_arg = arg;
}

/* A WAL due for a checkpoint in place is synced and checkpointed here too,
 * so that a long run of unsynced commits (a drain of acks) cannot grow it. */
int store_commit_unsynced(store_t *store)
{
    if (store_enter(store, "commit") != 0 || commit_allowed(store) != 0)
        return -1;
    if (commit_now(store) != 0)
        return -1;
    enum checkpoint_plan plan = checkpoint_plan(store);
    if (plan == PLAN_NONE)
        return 0; /* the thread's rounds sync the WAL themselves */
    if (store_wal_sync(store) != 0)
        return -1;
    checkpoint_in_place(store, plan);
    return 0;
}

int store_rollback(store_t *store)
{
    if (store_enter(store, "rollback") != 0)
        return -1;
    txn_counters_drop(store); /* what the transaction counted is rolled back */
    store->txn_open = 0;
    if (sqlite3_get_autocommit(store->db))
        return 0;
    return store_stmt_run(store, store->stmt[STMT_ROLLBACK], "rollback");
}

int store_transaction_lost(const store_t *store)
{
    return store != NULL && store->db != NULL && store->txn_open &&
           sqlite3_get_autocommit(store->db);
}

int store_in_transaction(const store_t *store)
{
    if (store == NULL || store->db == NULL)
        return 0;
    return !sqlite3_get_autocommit(store->db);
}
