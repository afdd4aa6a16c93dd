/*
 * store_open.c — a store's file opened and closed: whether it is there, the
 * writer's lock, a new file made owner-only and checked, the statements
 * prepared, and everything freed at close (an open transaction abandoned as
 * in a crash). Trusts no file it finds: one that is not a store is refused.
 * Errors: NULL from store_open with the reason in err, -1 elsewhere.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_internal.h"

static void open_error(char *err, size_t errlen, const char *what, const char *why)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: %s", what, why);
}

/* A new store file, owner-only: it holds personal data (SQLite gives its
 * -wal and -shm files the mode of the database file). O_EXCL: a file
 * that is there, whatever it holds, is never taken for a new store. */
static int file_create_new(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        open_error(err, errlen, path, strerror(errno));
        return -1;
    }
    if (close(fd) != 0) {
        open_error(err, errlen, path, strerror(errno));
        return -1;
    }
    return 0;
}

store_file_state_t store_presence(const char *path, char *err, size_t errlen)
{
    char said[PATH_MAX + 160], wal[PATH_MAX];
    struct stat st;
    store_file_state_t state = STORE_FILE_MISSING;
    if (path == NULL || path[0] == '\0') {
        open_error(err, errlen, "store", "no store path");
        return STORE_FILE_UNKNOWN;
    }
    int found = stat(path, &st) == 0;
    int stat_errno = found ? 0 : errno;
    if (found && S_ISREG(st.st_mode) && st.st_size > 0)
        return STORE_FILE_PRESENT;
    if ((found && !S_ISREG(st.st_mode)) || (!found && stat_errno != ENOENT)) {
        open_error(err, errlen, path, found ? "not a regular file" : strerror(stat_errno));
        return STORE_FILE_UNKNOWN;
    }
    if (snprintf(wal, sizeof wal, "%s-wal", path) >= (int)sizeof wal) {
        open_error(err, errlen, path, "the path is too long");
        return STORE_FILE_UNKNOWN;
    }
    if (found)
        snprintf(said, sizeof said, "%s is an empty file", path);
    else
        snprintf(said, sizeof said, "%s: %s", path, strerror(stat_errno));
    if (stat(wal, &st) == 0) {
        size_t used = strlen(said);
        snprintf(said + used, sizeof said - used,
                 ", but %s is there (%lld bytes): the write-ahead log of a store that is gone", wal,
                 (long long)st.st_size);
        state = STORE_FILE_WAL_ONLY;
    }
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", said);
    return state;
}

/* One process writes a store: a second broker on the same file would hand
 * out the same seqs (each keeps its counters in memory), deliver twice
 * without the redelivery flag and write a second chain into the trail.
 * An exclusive flock on PATH.lock, held as long as the handle is open
 * (the kernel releases it when the process ends, however it ends), with
 * the holder's pid in the file for the message. Returns the lock's fd, or
 * -1 with err. */
int store_lock_take(const char *path, char *err, size_t errlen)
{
    char lock_path[PATH_MAX];
    if (snprintf(lock_path, sizeof lock_path, "%s.lock", path) >= (int)sizeof lock_path) {
        open_error(err, errlen, path, "the path is too long");
        return -1;
    }
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        open_error(err, errlen, lock_path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int saved = errno;
        char holder[24] = "";
        ssize_t got = pread(fd, holder, sizeof holder - 1, 0);
        holder[got > 0 ? (size_t)got : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        if (saved == EWOULDBLOCK)
            snprintf(err, errlen,
                     "%s: in use by another process (pid %s): one schakeld per store; stop it "
                     "first",
                     path, holder[0] != '\0' ? holder : "unknown");
        else
            open_error(err, errlen, lock_path, strerror(saved));
        close(fd);
        return -1;
    }
    char pid[24];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        /* the lock holds without the pid; only the message would lack it */
    }
    return fd;
}

static store_t *store_new(const uint8_t seal_key[STORE_KEY_BYTES])
{
    store_t *store = calloc(1, sizeof *store);
    if (store == NULL)
        return NULL;
    store->lock_fd = -1;
    if ((store->seal_key = store_seal_key_new(seal_key)) == NULL) {
        free(store);
        return NULL;
    }
    return store;
}

/* Where a store must be there: a path without one, said before anything
 * is created (not even the lock file). */
static int store_require_present(const char *path, char *err, size_t errlen)
{
    store_file_state_t state = store_presence(path, err, errlen);
    if (state == STORE_FILE_PRESENT)
        return 0;
    if (state != STORE_FILE_UNKNOWN && err != NULL && errlen > 0) {
        size_t used = strnlen(err, errlen);
        snprintf(err + used, errlen - used, ": no store to open (only schakeld --init makes one)");
    }
    return -1;
}

/* Where a new store is to be made: nothing there, not even the -wal of a
 * store that is gone (SQLite would lay its pages over the new file). */
static int store_make_file(const char *path, char *err, size_t errlen)
{
    if (store_presence(path, err, errlen) == STORE_FILE_WAL_ONLY) {
        size_t used = strnlen(err, errlen);
        snprintf(err + used, errlen - used, "; no new store is made under it");
        return -1;
    }
    return file_create_new(path, err, errlen);
}

/* A file that is there but has no Schakel schema (user_version 0: another
 * database, or a store made in place by an --init of an older schakeld
 * that was interrupted) is refused where a
 * store must exist, before anything is written to it: giving it the
 * schema here would start an empty store as silently as creating one. */
static int store_check_made(store_t *store)
{
    int64_t version = 0;
    if (store_check_rc(store, sqlite3_busy_timeout(store->db, STORE_BUSY_TIMEOUT_MS),
                       "busy_timeout") != 0 ||
        store_query_int64(store, "PRAGMA user_version", &version) != 0)
        return -1;
    if (version != 0)
        return 0;
    store_refuse(store, "not a Schakel store",
                 "schema version 0 (an empty database, or what an interrupted --init of an "
                 "older schakeld left); no store to open: if it holds nothing to keep, remove it "
                 "and run schakeld --init again (only schakeld --init makes a store)");
    return -1;
}

/* A store this open made and could not finish goes again, with what
 * SQLite kept beside it (the lock file stays: it is any store's). */
static void store_unmake(const char *path)
{
    char side[PATH_MAX];
    (void)unlink(path);
    if (snprintf(side, sizeof side, "%s-wal", path) < (int)sizeof side)
        (void)unlink(side);
    if (snprintf(side, sizeof side, "%s-shm", path) < (int)sizeof side)
        (void)unlink(side);
}

store_t *store_open(const char *path, const uint8_t seal_key[STORE_KEY_BYTES],
                    store_open_mode_t mode, char *err, size_t errlen)
{
    if (path == NULL || path[0] == '\0' || strcmp(path, ":memory:") == 0) {
        open_error(err, errlen, "store", "the store must be a file path");
        return NULL;
    }
    if (seal_key == NULL) {
        open_error(err, errlen, path, "no store key");
        return NULL;
    }
    if (sodium_init() < 0) {
        open_error(err, errlen, path, "libsodium cannot initialise");
        return NULL;
    }
    int creating = mode == STORE_OPEN_CREATE;
    if ((creating ? store_make_file(path, err, errlen)
                  : store_require_present(path, err, errlen)) != 0)
        return NULL;
    int lock_fd = store_lock_take(path, err, errlen);
    store_t *store = lock_fd >= 0 ? store_new(seal_key) : NULL;
    if (store == NULL) {
        if (lock_fd >= 0) {
            close(lock_fd);
            open_error(err, errlen, path, "out of memory");
        }
        if (creating)
            store_unmake(path);
        return NULL;
    }
    store->lock_fd = lock_fd;
    /* One thread uses a store handle at a time: SQLite's own mutexes on
     * every call are not needed (multi-thread mode). The file is there
     * (made above, or checked): SQLite is never asked to create one. */
    int rc = sqlite3_open_v2(path, &store->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        open_error(err, errlen, path,
                   store->db != NULL ? sqlite3_errmsg(store->db) : sqlite3_errstr(rc));
        store_close(&store);
        if (creating)
            store_unmake(path);
        return NULL;
    }
    store_wal_hook_install(store);
    if ((!creating && store_check_made(store) != 0) || store_schema_configure(store) != 0 ||
        store_schema_apply(store) != 0 || store_statements_prepare(store) != 0 ||
        store_counters_load(store) != 0 || store_bytes_load(store) != 0) {
        open_error(err, errlen, path, store->errmsg);
        store_close(&store);
        if (creating)
            store_unmake(path);
        return NULL;
    }
    /* A migration that sealed evidence held in clear: the old pages of a
     * WAL left by an unclean stop, and those the migration wrote after
     * them, go now, not at some later truncating checkpoint. Best effort
     * (a reader may hold the WAL); the database file is clean either way
     * once checkpointed (secure_delete). */
    if (store->evidence_migrated) {
        store_progress("truncating the WAL", 0);
        (void)store_checkpoint(store);
        store->last_rc = 0;
        store->errmsg[0] = '\0';
    }
    return store;
}

static store_progress_fn store_progress_hook;

void store_set_progress(store_progress_fn fn)
{
    store_progress_hook = fn;
}

void store_progress(const char *step, uint64_t done)
{
    if (store_progress_hook != NULL)
        store_progress_hook(step, done);
}

void store_close(store_t **store)
{
    if (store == NULL || *store == NULL)
        return;
    store_t *s = *store;
    store_checkpointer_stop(s); /* its connection goes before the loop's */
    if (s->db != NULL) {
        /* An open transaction is abandoned, exactly as in a crash. */
        if (!sqlite3_get_autocommit(s->db))
            (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        for (int i = 0; i < STMT_COUNT; i++)
            (void)sqlite3_finalize(s->stmt[i]); /* NULL-safe; repeats old errors only */
        for (int i = 0; i < AUDIT_STMT_COUNT; i++)
            (void)sqlite3_finalize(s->audit_stmt[i]);
        for (int i = 0; i < CASE_STMT_COUNT; i++)
            (void)sqlite3_finalize(s->case_stmt[i]);
        store_mailbox_free(s); /* its statements, and its marks */
        /* With every statement finalized this closes at once; close_v2
         * returns SQLITE_OK in every case by design. */
        (void)sqlite3_close_v2(s->db);
    }
    store_seal_free(s);
    store_count_free(s);
    store_bytes_free(s);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* the lock goes with it */
    free(s);
    *store = NULL;
}

const char *store_errmsg(const store_t *store)
{
    if (store == NULL)
        return "no store";
    return store->errmsg;
}

void store_global_init(void)
{
    /* SQLITE_MISUSE once SQLite is initialised: then it keeps counting,
     * which costs time, not correctness. */
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}
