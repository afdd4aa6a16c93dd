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
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "audit.h"
#include "owner.h"
#include "record.h"
#include "storefile.h"
#include "syntax.h"

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

static int last_entry_fn(const store_audit_entry_t *entry, void *arg)
{
    restore_report_t *r = arg;
    r->trail_seq = entry->seq;
    r->trail_at = entry->at;
    return 0;
}

/* In the copy: counters moved, a new store epoch with its floor (the
 * backup's highest item seq before the move; unknown when the counters
 * could not go past the replaced store's, whose seqs may then be handed
 * out again) and the entry written, in one synced transaction; then its
 * WAL copied into it, so that the file alone is the whole store. */
static int restore_prepare(store_t *copy, const keypair_t *key, const store_counters_t *floor,
                           unsigned flags, restore_report_t *r, char *why, size_t whylen)
{
    store_audit_tail_t tail;
    int64_t now = 0;
    if (audit_offline_time(copy, (flags & RESTORE_ACCEPT_CLOCK) != 0, &now, why, whylen) != 0)
        return -1;
    if (store_audit_tail(copy, &tail) != 0 ||
        (tail.seq > 0 && store_audit_scan(copy, tail.seq - 1, 1, last_entry_fn, r) < 0) ||
        store_counters_move(copy, RESTORE_SEQ_MARGIN, RESTORE_CASE_MARGIN, floor, &r->was,
                            &r->now) != 0)
        return -1;
    r->epoch_floor_known = r->has_floor;
    r->epoch_floor = r->was.next_item_seq - 1; /* the counter is at least 1 */
    if (store_epoch_renew(copy, r->epoch_floor_known ? &r->epoch_floor : NULL, r->epoch_was,
                          r->epoch_now) != 0)
        return -1;
    char detail[384], ended[32] = "none", epoch[2 * SCHAKEL_STORE_EPOCH_BYTES + 1],
                      epoch_was[sizeof epoch], epoch_floor[24] = "unknown";
    if (r->epoch_floor_known)
        snprintf(epoch_floor, sizeof epoch_floor, "%llu", (unsigned long long)r->epoch_floor);
    syntax_hex(r->epoch_now, sizeof r->epoch_now, epoch);
    syntax_hex(r->epoch_was, sizeof r->epoch_was, epoch_was);
    if (r->trail_seq > 0) {
        time_t at = (time_t)r->trail_at;
        struct tm tm;
        strftime(ended, sizeof ended, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&at, &tm));
    }
    snprintf(detail, sizeof detail,
             "trail_ended=%llu@%s items_from=%llu deliveries_from=%llu cases_from=C-%08llu "
             "store_epoch=%s store_epoch_was=%s store_epoch_floor=%s",
             (unsigned long long)r->trail_seq, ended, (unsigned long long)r->now.next_item_seq,
             (unsigned long long)r->now.next_delivery_seq, (unsigned long long)r->now.next_case_num,
             epoch, epoch_was, epoch_floor);
    /* A backup of an older schema was migrated when it was opened: the
     * rows that set aside are recorded first, as a broker's start does. */
    if ((r->set_aside_recorded = record_set_aside_offline(copy, key, now)) < 0)
        return -1;
    store_audit_entry_t e;
    audit_entry_init(&e, "store.restored");
    audit_set_text(&e, STORE_AUDIT_REASON, "restored from a backup");
    audit_set_text(&e, STORE_AUDIT_DETAIL, detail);
    if (audit_append(copy, key, now, &e) != 0 || audit_checkpoint(copy, key, now, 1) < 0 ||
        store_commit(copy) != 0) {
        store_rollback(copy);
        return -1;
    }
    r->entry_seq = e.seq;
    return store_checkpoint(copy);
}

/* The copy, made ready; closed either way. A backup taken as files (a
 * snapshot of the store and its WAL) has its -wal beside it: it is copied
 * too, and SQLite recovers it into the copy when it opens it. */
static int restore_make_copy(const char *copy_path, const char *backup_path,
                             const uint8_t store_key[STORE_KEY_BYTES], const keypair_t *key,
                             const store_counters_t *floor, unsigned flags, restore_report_t *r,
                             char *err, size_t errlen)
{
    char open_err[768], backup_wal[PATH_MAX], copy_wal[PATH_MAX], why[512] = "";
    struct stat st;
    if (copy_file(backup_path, copy_path, err, errlen) != 0)
        return -1;
    if (storefile_side(backup_wal, sizeof backup_wal, backup_path, "-wal") != 0 ||
        storefile_side(copy_wal, sizeof copy_wal, copy_path, "-wal") != 0)
        return snprintf(err, errlen, "%s: path too long", backup_path), -1;
    if (stat(backup_wal, &st) == 0 && st.st_size > 0 &&
        copy_file(backup_wal, copy_wal, err, errlen) != 0)
        return -1;
    store_t *copy =
        store_open(copy_path, store_key, STORE_OPEN_EXISTING, open_err, sizeof open_err);
    if (copy == NULL) {
        snprintf(err, errlen, "the backup %s: %s", backup_path, open_err);
        return -1;
    }
    int rc = restore_prepare(copy, key, floor, flags, r, why, sizeof why);
    if (rc != 0)
        snprintf(err, errlen, "the backup %s: %s (the store is unchanged)", backup_path,
                 why[0] != '\0' ? why : store_errmsg(copy));
    store_close(&copy);
    return rc;
}

/* The backup must be another file than the store it replaces, and than
 * the copy this makes of it. */
static int restore_check_paths(const char *store_path, const char *copy_path,
                               const char *backup_path, char *err, size_t errlen)
{
    struct stat b, s;
    if (stat(backup_path, &b) != 0)
        return snprintf(err, errlen, "the backup %s: %s", backup_path, strerror(errno)), -1;
    if (!S_ISREG(b.st_mode))
        return snprintf(err, errlen, "the backup %s: not a regular file", backup_path), -1;
    if (stat(store_path, &s) == 0 && s.st_dev == b.st_dev && s.st_ino == b.st_ino)
        return snprintf(err, errlen, "the backup %s is the store itself", backup_path), -1;
    if (stat(copy_path, &s) == 0 && s.st_dev == b.st_dev && s.st_ino == b.st_ino)
        return snprintf(err, errlen,
                        "the backup %s is the copy an earlier restore left: copy it elsewhere "
                        "first (it is replaced by the new copy)",
                        backup_path),
               -1;
    return 0;
}

/* The store being replaced may have handed out more than the backup knows
 * (it ran after the backup was taken; or a broker ran on an earlier
 * restore of this same backup): its counters, read without its key, are a
 * floor. Returns 0 with the whole floor; 1 when there is none, or none for
 * the case numbers (a store that is not there or cannot be read), with
 * what is missing in r->floor_note. */
static int restore_floor(const char *store_path, store_counters_t *floor, restore_report_t *r)
{
    char why[256];
    if (access(store_path, F_OK) != 0) {
        snprintf(r->floor_note, sizeof r->floor_note, "no store at %.200s", store_path);
        return 1;
    }
    int rc = store_counters_of_file(store_path, floor, why, sizeof why);
    if (rc < 0) {
        snprintf(r->floor_note, sizeof r->floor_note,
                 "the store being replaced cannot be read (%.200s)", why);
        return 1;
    }
    r->has_floor = 1;
    if (rc == 1) {
        snprintf(r->floor_note, sizeof r->floor_note,
                 "the case counter of the store being replaced cannot be read (%.200s)", why);
        return 1;
    }
    return 0;
}

/* Without the whole floor nothing shows how far the lost state counted:
 * refused unless the operator says to go on without it. */
static int restore_floor_refusal(const restore_report_t *r, char *err, size_t errlen)
{
    snprintf(err, errlen,
             "%s: nothing shows how far the lost store counted; if this backup was restored "
             "before and a broker served on that restore, its seqs and case ids would be handed "
             "out again, and recipients that deduplicate by seq would drop new deliveries. Put "
             "the lost store file back in place first (a volume not mounted?), so that it is "
             "the floor; if it is truly gone, restore the newest backup made after any earlier "
             "restore of it, with --without-floor (docs/OPERATIONS.md, \"Restoring a backup\"). "
             "Nothing was changed",
             r->floor_note);
    return -1;
}

/* The old store's WAL copied into it before anything moves, so that the
 * store file alone is whole and the WAL empty: an interruption between
 * setting the WAL aside and the rename then leaves a whole old store.
 * When it cannot be (a reader holds the WAL, a damaged store), the WAL is
 * set aside as it is, and the report says so. */
static void restore_fold_old_wal(const char *store_path, restore_report_t *r)
{
    sqlite3 *db = NULL;
    int log = -1, copied = -2, rc = SQLITE_OK;
    if (access(store_path, F_OK) != 0)
        return;
    rc = sqlite3_open_v2(store_path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK) {
        (void)sqlite3_busy_timeout(db, 2000);
        /* a statement first: a connection learns that the file is in WAL
         * mode only once it reads it (the checkpoint alone does nothing) */
        rc = sqlite3_exec(db, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, &log, &copied);
    if (rc != SQLITE_OK || log != copied)
        snprintf(r->fold_note, sizeof r->fold_note,
                 "the old store's WAL could not be copied into it (%s): it was set aside as it "
                 "is, and an interruption before the rename would have needed the command run "
                 "again",
                 rc != SQLITE_OK ? (db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc))
                                 : "frames left");
    sqlite3_close(db);
}

/* The copy in the store's place: the old store's WAL set aside first (laid
 * over the backup's pages it would corrupt them) and put back if the rename
 * fails, so that a failure leaves the store as it was. What fails after
 * the rename leaves the store restored: a warning in the report. */
static int restore_swap(const char *store_path, const char *copy_path, restore_report_t *r,
                        char *err, size_t errlen)
{
    char wal[PATH_MAX], aside[PATH_MAX], shm[PATH_MAX];
    if (storefile_side(wal, sizeof wal, store_path, "-wal") != 0 ||
        storefile_side(aside, sizeof aside, store_path, ".lost-wal") != 0 ||
        storefile_side(shm, sizeof shm, store_path, "-shm") != 0)
        return snprintf(err, errlen, "%s: path too long", store_path), -1;
    restore_fold_old_wal(store_path, r);
    int had_wal = access(wal, F_OK) == 0;
    if (had_wal && rename(wal, aside) != 0)
        return snprintf(err, errlen, "%s: %s", wal, strerror(errno)), -1;
    if (rename(copy_path, store_path) != 0) {
        int saved = errno;
        if (had_wal && rename(aside, wal) != 0)
            snprintf(err, errlen,
                     "%s: %s; and its WAL could not be put back from %s (%s): rename it to %s "
                     "before starting schakeld, or run the restore again",
                     store_path, strerror(saved), aside, strerror(errno), wal);
        else
            snprintf(err, errlen, "%s: %s (the store is as it was)", store_path, strerror(saved));
        return -1;
    }
    /* each of these runs whatever the one before it did; the first
     * failure is the warning */
    char why[3][512] = {"", "", ""};
    int failed[3] = {storefile_remove(aside, why[0], sizeof why[0]),
                     storefile_remove(shm, why[1], sizeof why[1]),
                     storefile_sync_folder(store_path, why[2], sizeof why[2])};
    for (int i = 0; i < 3; i++)
        if (failed[i] != 0) {
            snprintf(r->warning, sizeof r->warning, "the store is restored, but: %.500s", why[i]);
            break;
        }
    return 0;
}

int restore_from_backup(const char *store_path, const char *backup_path,
                        const uint8_t store_key[STORE_KEY_BYTES], const keypair_t *key,
                        unsigned flags, restore_report_t *report, char *err, size_t errlen)
{
    char copy_path[PATH_MAX], lock_path[PATH_MAX], backup_real[PATH_MAX];
    file_owner_t owner;
    store_counters_t floor;
    memset(report, 0, sizeof *report);
    /* a backup named through a link: its -wal is the file's, beside it */
    if (realpath(backup_path, backup_real) == NULL)
        return snprintf(err, errlen, "the backup %s: %s", backup_path, strerror(errno)), -1;
    if (storefile_side(copy_path, sizeof copy_path, store_path, ".restoring") != 0 ||
        storefile_side(lock_path, sizeof lock_path, store_path, ".lock") != 0)
        return snprintf(err, errlen, "%s: path too long", store_path), -1;
    if (restore_check_paths(store_path, copy_path, backup_real, err, errlen) != 0 ||
        owner_of_store(store_path, &owner, err, errlen) != 0)
        return -1;
    int lock = store_lock_take(store_path, err, errlen);
    if (lock < 0)
        return -1;
    int rc = -1;
    if (restore_floor(store_path, &floor, report) != 0 && !(flags & RESTORE_WITHOUT_FLOOR)) {
        restore_floor_refusal(report, err, errlen);
        goto out;
    }
    /* a copy left by an earlier run that stopped half-way goes first */
    if (owner_give(lock_path, lock, &owner, err, errlen) != 0 ||
        storefile_remove(copy_path, err, errlen) != 0 ||
        storefile_remove_sides(copy_path, 1, err, errlen) != 0)
        goto out;
    if (restore_make_copy(copy_path, backup_real, store_key, key, report->has_floor ? &floor : NULL,
                          flags, report, err, errlen) != 0 ||
        storefile_remove_sides(copy_path, 1, err, errlen) != 0 ||
        owner_give(copy_path, -1, &owner, err, errlen) != 0) {
        char ignored[8];
        (void)storefile_remove(copy_path, ignored, sizeof ignored);
        (void)storefile_remove_sides(copy_path, 1, ignored, sizeof ignored);
        goto out;
    }
    rc = restore_swap(store_path, copy_path, report, err, errlen);
out:
    close(lock);
    return rc;
}
