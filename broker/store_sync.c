/*
 * store_sync.c — the syncer: a thread that makes committed WAL frames
 * durable while the loop goes on with the next turn.
 *
 * The loop commits without waiting for the disk and asks for a sync; the
 * thread runs fdatasync on its own descriptor of the WAL file (a sync of an
 * inode covers every write to it, through any descriptor) and reports the
 * highest request its sync covered. A failed sync is final: the handle is
 * poisoned like a failed sync on the loop (store_io_failed). Trusts its
 * caller to use one syncer per store, from the loop thread only.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store.h"
#include "store_internal.h"

struct store_syncer {
    store_t *store; /* touched on the loop thread only */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;      /* the thread: a request or stop */
    pthread_cond_t synced_cv; /* store_syncer_wait: a sync ended */
    int wal_fd, event_fd;
    char *wal_path;
    dev_t wal_dev;
    ino_t wal_ino;
    /* under lock */
    uint64_t requested, synced;
    durations_t durations; /* of each fdatasync */
    int failed, stop;
    char failure[160];
};

/* The WAL must still be the file the descriptor names: a WAL replaced under
 * a running broker (deleted and made again by another process) would make
 * every later sync cover the wrong file. */
static int syncer_same_file(const store_syncer_t *s)
{
    struct stat now;
    return stat(s->wal_path, &now) == 0 && now.st_dev == s->wal_dev && now.st_ino == s->wal_ino;
}

/* Read by store_io_failed as "commit: <failure> failed (...)". */
static void syncer_failed(store_syncer_t *s, const char *what, int err)
{
    s->failed = 1;
    snprintf(s->failure, sizeof s->failure, "syncing the WAL on the sync thread (%s%s%s)", what,
             err != 0 ? ": " : "", err != 0 ? strerror(err) : "");
}

static void *syncer_main(void *arg)
{
    store_syncer_t *s = arg;
    /* named for top -H, core dumps and sanitizer reports (15 bytes at most) */
    (void)prctl(PR_SET_NAME, "schakel-sync", 0, 0, 0);
    pthread_mutex_lock(&s->lock);
    while (!s->stop) {
        if (s->failed || s->synced == s->requested) {
            pthread_cond_wait(&s->wake, &s->lock);
            continue;
        }
        uint64_t target = s->requested; /* every commit before this request */
        pthread_mutex_unlock(&s->lock);
        int64_t start = durations_now_ns();
        int rc = fdatasync(s->wal_fd), err = errno;
        int64_t took = durations_now_ns() - start;
        int same = rc == 0 && syncer_same_file(s);
        pthread_mutex_lock(&s->lock);
        durations_add(&s->durations, took);
        if (rc != 0)
            syncer_failed(s, "fdatasync of the WAL", err);
        else if (!same)
            syncer_failed(s, "the WAL file was replaced under the broker", 0);
        else
            s->synced = target;
        /* Under the lock, as collect reads it: whoever sees this sync's
         * result has drained its event with it, so an event never comes
         * after the change it reports (it would wake the loop for nothing). */
        uint64_t one = 1;
        if (write(s->event_fd, &one, sizeof one) < 0) {
            /* the counter is full (never, at 2^64 - 2) or the fd is gone:
             * the loop still collects on its next turn */
        }
        pthread_cond_broadcast(&s->synced_cv);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static int syncer_open_wal(store_syncer_t *s, store_t *store, char *err, size_t errlen)
{
    const char *db = sqlite3_db_filename(store->db, "main");
    const char *wal = db != NULL && db[0] != '\0' ? sqlite3_filename_wal(db) : NULL;
    if (wal == NULL || wal[0] == '\0') {
        snprintf(err, errlen, "the store has no WAL file (in memory?)");
        return -1;
    }
    struct stat st;
    s->wal_path = strdup(wal);
    s->wal_fd = s->wal_path != NULL ? open(s->wal_path, O_RDONLY | O_CLOEXEC) : -1;
    if (s->wal_fd < 0 || fstat(s->wal_fd, &st) != 0) {
        snprintf(err, errlen, "cannot open the WAL %s: %s", wal, strerror(errno));
        return -1;
    }
    s->wal_dev = st.st_dev;
    s->wal_ino = st.st_ino;
    return 0;
}

store_syncer_t *store_syncer_start(store_t *store, char *err, size_t errlen)
{
    store_syncer_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->wal_fd = s->event_fd = -1;
    s->store = store;
    if (store == NULL || store->db == NULL) {
        snprintf(err, errlen, "no store");
        goto fail;
    }
    if (syncer_open_wal(s, store, err, errlen) != 0)
        goto fail;
    s->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->event_fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    pthread_cond_init(&s->synced_cv, NULL);
    /* Signals are the loop's (its poll must see EINTR); an fdatasync
     * interrupted by one would look like a failed disk. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&s->thread, NULL, syncer_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the sync thread: %s", strerror(rc));
        pthread_cond_destroy(&s->synced_cv);
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->lock);
        goto fail;
    }
    return s;
fail:
    if (s->event_fd >= 0)
        close(s->event_fd);
    if (s->wal_fd >= 0)
        close(s->wal_fd);
    free(s->wal_path);
    free(s);
    return NULL;
}

int store_syncer_fd(const store_syncer_t *s)
{
    return s != NULL ? s->event_fd : -1;
}

uint64_t store_syncer_request(store_syncer_t *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t ticket = ++s->requested;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    return ticket;
}

/* Called with the lock held; poisons the store on the loop thread. */
static int syncer_report(store_syncer_t *s, uint64_t *synced)
{
    *synced = s->synced;
    if (!s->failed)
        return 0;
    char what[sizeof s->failure];
    memcpy(what, s->failure, sizeof what);
    store_io_failed(s->store, SQLITE_IOERR_FSYNC, what);
    return -1;
}

int store_syncer_collect(store_syncer_t *s, uint64_t *synced)
{
    uint64_t drained;
    pthread_mutex_lock(&s->lock);
    if (read(s->event_fd, &drained, sizeof drained) < 0) {
        /* EAGAIN: nothing new since the last read; the state below is
         * current all the same */
    }
    int rc = syncer_report(s, synced);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int store_syncer_wait(store_syncer_t *s, uint64_t ticket, uint64_t *synced)
{
    pthread_mutex_lock(&s->lock);
    while (!s->failed && s->synced < ticket && ticket <= s->requested)
        pthread_cond_wait(&s->synced_cv, &s->lock);
    int rc = syncer_report(s, synced);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void store_syncer_stop(store_syncer_t **sp)
{
    if (sp == NULL || *sp == NULL)
        return;
    store_syncer_t *s = *sp;
    pthread_mutex_lock(&s->lock);
    s->stop = 1;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->synced_cv);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->lock);
    close(s->event_fd);
    close(s->wal_fd);
    free(s->wal_path);
    free(s);
    *sp = NULL;
}

void store_loop_sync_durations(const store_t *store, durations_t *out)
{
    *out = store->loop_sync_durations;
}

void store_syncer_durations(store_syncer_t *syncer, durations_t *out)
{
    pthread_mutex_lock(&syncer->lock);
    *out = syncer->durations;
    pthread_mutex_unlock(&syncer->lock);
}

uint64_t store_loop_syncs(const store_t *store)
{
    return store != NULL ? store->loop_syncs : 0;
}

uint64_t store_delivery_high(const store_t *store)
{
    return store != NULL && store->next_delivery_seq > 0 ? (uint64_t)store->next_delivery_seq - 1
                                                         : 0;
}
