/*
 * restore.c — schakeld --restored BACKUP (restore.h).
 *
 * Owns the order of the file operations that put a backup in place of the
 * store, and the "store.restored" audit entry. Trusts the backup only as
 * far as store_open checks it (a Schakel store under this store key).
 * Errors: -1 with a message naming the file and what to do.
 */
#define _GNU_SOURCE
#include "restore.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"

/* Removes path; a file that is not there is fine. */
static int remove_if_there(const char *path, char *err, size_t errlen)
{
    if (unlink(path) == 0 || errno == ENOENT)
        return 0;
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
}

static int side_path(char *out, size_t outlen, const char *path, const char *suffix)
{
    return snprintf(out, outlen, "%s%s", path, suffix) < (int)outlen ? 0 : -1;
}

/* Removes the files SQLite and store_open keep beside a store file. */
static int remove_sides(const char *path, int with_lock, char *err, size_t errlen)
{
    static const char *const suffix[] = {"-wal", "-shm", ".lock"};
    char side[PATH_MAX];
    for (size_t i = 0; i < (with_lock ? 3u : 2u); i++)
        if (side_path(side, sizeof side, path, suffix[i]) != 0 ||
            remove_if_there(side, err, errlen) != 0)
            return -1;
    return 0;
}

/* A new file of mode 0600 with the bytes of from, synced. */
static int copy_file(const char *from, const char *to, char *err, size_t errlen)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        snprintf(err, errlen, "the backup %s: %s", from, strerror(errno));
        return -1;
    }
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (out < 0) {
        snprintf(err, errlen, "%s: %s", to, strerror(errno));
        close(in);
        return -1;
    }
    char buf[65536];
    ssize_t got;
    int failed = 0;
    while (!failed && (got = read(in, buf, sizeof buf)) != 0) {
        if (got < 0) {
            failed = errno != EINTR;
            if (failed)
                snprintf(err, errlen, "the backup %s: %s", from, strerror(errno));
            continue;
        }
        for (ssize_t done = 0; !failed && done < got;) {
            ssize_t put = write(out, buf + done, (size_t)(got - done));
            if (put < 0 && errno != EINTR) {
                snprintf(err, errlen, "%s: %s", to, strerror(errno));
                failed = 1;
            }
            done += put > 0 ? put : 0;
        }
    }
    if (!failed && fsync(out) != 0) {
        snprintf(err, errlen, "%s: sync: %s", to, strerror(errno));
        failed = 1;
    }
    close(in);
    if (close(out) != 0 && !failed) {
        snprintf(err, errlen, "%s: %s", to, strerror(errno));
        failed = 1;
    }
    return failed ? -1 : 0;
}

/* Syncs the folder of path, so that a rename in it is on disk. */
static int sync_folder_of(const char *path, char *err, size_t errlen)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        snprintf(dir, sizeof dir, ".");
    else if (snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path) >= (int)sizeof dir)
        return snprintf(err, errlen, "%s: path too long", path), -1;
    if (dir[0] == '\0')
        snprintf(dir, sizeof dir, "/");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int failed = fd < 0 || fsync(fd) != 0;
    if (failed)
        snprintf(err, errlen, "%s: sync: %s", dir, strerror(errno));
    if (fd >= 0)
        close(fd);
    return failed ? -1 : 0;
}

static int last_entry_fn(const store_audit_entry_t *entry, void *arg)
{
    restore_report_t *r = arg;
    r->trail_seq = entry->seq;
    r->trail_at = entry->at;
    return 0;
}

/* In the copy: counters moved and the entry written, in one synced
 * transaction; then its WAL copied into it, so that the file alone is the
 * whole store. */
static int restore_prepare(store_t *copy, const keypair_t *key, restore_report_t *r)
{
    store_audit_tail_t tail;
    if (store_audit_tail(copy, &tail) != 0 ||
        (tail.seq > 0 && store_audit_scan(copy, tail.seq - 1, 1, last_entry_fn, r) < 0) ||
        store_counters_move(copy, RESTORE_SEQ_MARGIN, RESTORE_CASE_MARGIN, &r->was, &r->now) != 0)
        return -1;
    char detail[256], ended[32] = "none";
    if (r->trail_seq > 0) {
        time_t at = (time_t)r->trail_at;
        struct tm tm;
        strftime(ended, sizeof ended, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&at, &tm));
    }
    snprintf(detail, sizeof detail,
             "trail_ended=%llu@%s items_from=%llu deliveries_from=%llu cases_from=C-%08llu",
             (unsigned long long)r->trail_seq, ended, (unsigned long long)r->now.next_item_seq,
             (unsigned long long)r->now.next_delivery_seq,
             (unsigned long long)r->now.next_case_num);
    store_audit_entry_t e;
    audit_entry_init(&e, "store.restored");
    audit_set_text(&e, STORE_AUDIT_REASON, "restored from a backup");
    audit_set_text(&e, STORE_AUDIT_DETAIL, detail);
    int64_t now = (int64_t)time(NULL);
    if (audit_append(copy, key, now, &e) != 0 || audit_checkpoint(copy, key, now, 1) < 0 ||
        store_commit(copy) != 0) {
        store_rollback(copy);
        return -1;
    }
    r->entry_seq = e.seq;
    return store_checkpoint(copy);
}

/* The copy, made ready; closed either way. */
static int restore_make_copy(const char *copy_path, const char *backup_path,
                             const uint8_t store_key[STORE_KEY_BYTES], const keypair_t *key,
                             restore_report_t *r, char *err, size_t errlen)
{
    char open_err[768];
    if (copy_file(backup_path, copy_path, err, errlen) != 0)
        return -1;
    store_t *copy = store_open(copy_path, store_key, open_err, sizeof open_err);
    if (copy == NULL) {
        snprintf(err, errlen, "the backup %s: %s", backup_path, open_err);
        return -1;
    }
    int rc = restore_prepare(copy, key, r);
    if (rc != 0)
        snprintf(err, errlen, "the backup %s: %s (the store is unchanged)", backup_path,
                 store_errmsg(copy));
    store_close(&copy);
    return rc;
}

/* The backup must be another file than the store it replaces. */
static int restore_check_paths(const char *store_path, const char *backup_path, char *err,
                               size_t errlen)
{
    struct stat b, s;
    if (stat(backup_path, &b) != 0)
        return snprintf(err, errlen, "the backup %s: %s", backup_path, strerror(errno)), -1;
    if (!S_ISREG(b.st_mode))
        return snprintf(err, errlen, "the backup %s: not a regular file", backup_path), -1;
    if (stat(store_path, &s) == 0 && s.st_dev == b.st_dev && s.st_ino == b.st_ino)
        return snprintf(err, errlen, "the backup %s is the store itself", backup_path), -1;
    return 0;
}

int restore_from_backup(const char *store_path, const char *backup_path,
                        const uint8_t store_key[STORE_KEY_BYTES], const keypair_t *key,
                        restore_report_t *report, char *err, size_t errlen)
{
    char copy_path[PATH_MAX];
    memset(report, 0, sizeof *report);
    if (side_path(copy_path, sizeof copy_path, store_path, ".restoring") != 0)
        return snprintf(err, errlen, "%s: path too long", store_path), -1;
    if (restore_check_paths(store_path, backup_path, err, errlen) != 0)
        return -1;
    int lock = store_lock_take(store_path, err, errlen);
    if (lock < 0)
        return -1;
    int rc = -1;
    /* a copy left by an earlier run that stopped half-way goes first */
    if (remove_if_there(copy_path, err, errlen) != 0 ||
        remove_sides(copy_path, 1, err, errlen) != 0)
        goto out;
    if (restore_make_copy(copy_path, backup_path, store_key, key, report, err, errlen) != 0) {
        char ignored[8];
        (void)remove_if_there(copy_path, ignored, sizeof ignored);
        (void)remove_sides(copy_path, 1, ignored, sizeof ignored);
        goto out;
    }
    /* The copy is the whole store now. The old WAL goes before the rename:
     * laid over the backup's pages it would corrupt them. */
    if (remove_sides(copy_path, 1, err, errlen) != 0 ||
        remove_sides(store_path, 0, err, errlen) != 0)
        goto out;
    if (rename(copy_path, store_path) != 0) {
        snprintf(err, errlen, "%s: %s (the restored copy is %s)", store_path, strerror(errno),
                 copy_path);
        goto out;
    }
    rc = sync_folder_of(store_path, err, errlen);
out:
    close(lock);
    return rc;
}
