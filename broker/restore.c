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

#include <dirent.h>
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

/* A new file of mode 0600 with the bytes of from, synced; to must not be
 * there (O_EXCL, and not a symbolic link). -1 with err; -2 when nothing
 * was made at to (it could not be created), so that a caller removes only
 * what it made. */
static int copy_file(const char *from, const char *to, char *err, size_t errlen)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        snprintf(err, errlen, "the backup %s: %s", from, strerror(errno));
        return -1;
    }
    int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (out < 0) {
        snprintf(err, errlen, "%s: %s", to, strerror(errno));
        close(in);
        return -2;
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

void restore_case_from(uint64_t next_case_num, char out[16])
{
    if (next_case_num > (uint64_t)SCHAKEL_CASE_NUM_MAX)
        snprintf(out, 16, "none");
    else
        snprintf(out, 16, "C-%08llu", (unsigned long long)next_case_num);
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
    char detail[1024], mark[256] = "replaced_mark=none", ended[32] = "none",
                       epoch[2 * SCHAKEL_STORE_EPOCH_BYTES + 1], epoch_was[sizeof epoch],
                       epoch_floor[24] = "unknown", cases_from[16];
    restore_case_from(r->now.next_case_num, cases_from);
    if (r->epoch_floor_known)
        snprintf(epoch_floor, sizeof epoch_floor, "%llu", (unsigned long long)r->epoch_floor);
    syntax_hex(r->epoch_now, sizeof r->epoch_now, epoch);
    syntax_hex(r->epoch_was, sizeof r->epoch_was, epoch_was);
    if (r->trail_seq > 0) /* a time no date has (a damaged entry) as its number */
        audit_format_time(r->trail_at, ended, sizeof ended);
    if (r->marked)
        snprintf(mark, sizeof mark, "replaced_mark_expect=%s replaced_mark_found=%s",
                 r->mark.expect, r->mark.found);
    const char *kept = strrchr(r->replaced, '/');
    kept = kept != NULL ? kept + 1 : r->replaced;
    snprintf(detail, sizeof detail,
             "trail_ended=%llu@%s items_from=%llu deliveries_from=%llu cases_from=%s "
             "store_epoch=%s store_epoch_was=%s store_epoch_floor=%s replaced_kept=%.200s "
             "replaced_trail_ended=%llu replaced_trail_hash=%s %s",
             (unsigned long long)r->trail_seq, ended, (unsigned long long)r->now.next_item_seq,
             (unsigned long long)r->now.next_delivery_seq, cases_from, epoch, epoch_was,
             epoch_floor, kept[0] != '\0' ? kept : "none",
             (unsigned long long)r->replaced_trail_seq,
             r->replaced_trail_hash[0] != '\0' ? r->replaced_trail_hash : "unknown", mark);
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
        /* A backup from before a rotation of the store key is the usual
         * cause, and the refusal alone does not say what to run. */
        int other_key = strstr(open_err, "does not open this store") != NULL;
        snprintf(err, errlen, "the backup %s: %s%s", backup_path, open_err,
                 other_key ? "; a backup made before a rotation of the store key opens with the "
                             "old key: run the restore with --store-key OLDFILE, then schakeld "
                             "--rekey to the config's store_key_file before the start "
                             "(docs/OPERATIONS.md, \"Restoring a backup\")"
                           : "");
        return -1;
    }
    r->migrated_from = store_migrated_from(copy, NULL);
    /* Nothing is chained or signed onto a tail that does not chain. */
    int chains = audit_tail_check(copy, NULL, NULL, why, sizeof why);
    if (chains != 0) {
        if (chains > 0)
            snprintf(err, errlen,
                     "the backup %s: %s; nothing is chained or signed onto it (the store is "
                     "unchanged): run schakelctl audit verify --store %s (docs/OPERATIONS.md, "
                     "\"When audit verify fails\")",
                     backup_path, why, backup_path);
        else
            snprintf(err, errlen, "the backup %s: %s (the store is unchanged)", backup_path, why);
        store_close(&copy);
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

/* The last entry of the replaced store's audit trail, read without its
 * key (with its WAL): seq and hash, named in the store.restored entry so
 * that the kept file is tied to the restored trail. Left 0 / "" when it
 * cannot be read. */
static void restore_replaced_trail(const char *store_path, restore_report_t *r)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    if (sqlite3_open_v2(store_path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) ==
            SQLITE_OK &&
        sqlite3_busy_timeout(db, 2000) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", -1, &q,
                           NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int64(q, 0) > 0 &&
        sqlite3_column_type(q, 1) == SQLITE_BLOB && sqlite3_column_bytes(q, 1) == 32) {
        r->replaced_trail_seq = (uint64_t)sqlite3_column_int64(q, 0);
        syntax_hex(sqlite3_column_blob(q, 1), 32, r->replaced_trail_hash);
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
}

/* The live store's WAL, moved to from by an interrupted restore, put back
 * as its -wal (synced with the folder): over a -wal of the header alone
 * (32 bytes) or less, which holds no commit (one an open of the store made
 * meanwhile); with commits at both names nothing moves and the restore is
 * refused. Returns 0, or -1 with err. */
static int restore_wal_back(const char *from, const char *live_wal, char *err, size_t errlen)
{
    struct stat e;
    if (lstat(live_wal, &e) == 0 ? e.st_size > 32 : errno != ENOENT)
        return snprintf(err, errlen,
                        "%s is the store's WAL as an interrupted restore set it aside, and %s "
                        "is there too: both may hold commits; keep copies of both, then rename "
                        "the one that belongs to the store to %s and remove the other; nothing "
                        "was changed",
                        from, live_wal, live_wal),
               -1;
    if (rename(from, live_wal) != 0)
        return snprintf(err, errlen,
                        "%s: %s (the store's WAL, set aside by an interrupted restore: rename "
                        "it to %s); nothing was changed",
                        from, strerror(errno), live_wal),
               -1;
    return storefile_sync_folder(live_wal, err, errlen);
}

/* Names of the store's own file left beside it by a restore interrupted
 * between making the kept name and renaming the copy over the store: they
 * are the live store, not a kept one, and go, with the mark made beside
 * such a name (KEPT.audit-mismatch: the store's own mark is still there,
 * and is kept anew). Such a restore may have moved the store's WAL to
 * the name's -wal already, when it could not be copied into the store (a
 * reader held it): that WAL holds the store's last commits, and goes back
 * to the store's -wal first (synced with the folder), over one without a
 * commit; with commits at both names, nothing is removed and the restore
 * is refused. Called before anything reads the store (its counters, its
 * trail): they are in that WAL. Returns 0, or -1 with err. */
static int restore_drop_stale_names(const char *store_path, const char *copy_path, char *err,
                                    size_t errlen)
{
    struct stat st, e;
    char folder[PATH_MAX], prefix[PATH_MAX], path[PATH_MAX], wal[PATH_MAX], real[PATH_MAX],
        live_wal[PATH_MAX + 8], lost[PATH_MAX + 16];
    if (stat(store_path, &st) != 0 ||
        snprintf(folder, sizeof folder, "%s", store_path) >= (int)sizeof folder)
        return 0;
    if (storefile_real(real, sizeof real, store_path) != 0 ||
        storefile_side(live_wal, sizeof live_wal, real, "-wal") != 0 ||
        storefile_side(lost, sizeof lost, real, ".lost-wal") != 0)
        return snprintf(err, errlen, "%s: path too long", store_path), -1;
    /* A run that kept a copy set the store's WAL aside as STORE.lost-wal;
     * its copy of the backup (STORE.restoring) is still there only when it
     * was interrupted before the rename: that WAL is then the live
     * store's own, and goes back. (After the rename it is the kept
     * copy's, and the refusal in restore_name_replaced says so.) */
    if (lstat(lost, &e) == 0 && lstat(copy_path, &e) == 0) {
        if (restore_wal_back(lost, live_wal, err, errlen) != 0)
            return -1;
    }
    char *slash = strrchr(folder, '/');
    const char *base = slash != NULL ? slash + 1 : store_path;
    if (slash != NULL)
        *slash = '\0';
    snprintf(prefix, sizeof prefix, "%s.replaced-", base);
    DIR *d = opendir(slash != NULL ? (folder[0] != '\0' ? folder : "/") : ".");
    if (d == NULL)
        return 0;
    int rc = 0;
    for (struct dirent *ent; rc == 0 && (ent = readdir(d)) != NULL;) {
        if (strncmp(ent->d_name, prefix, strlen(prefix)) != 0 ||
            snprintf(path, sizeof path, "%s/%s", slash != NULL ? folder : ".", ent->d_name) >=
                (int)sizeof path ||
            snprintf(wal, sizeof wal, "%s-wal", path) >= (int)sizeof wal)
            continue;
        if (lstat(path, &e) != 0 || !S_ISREG(e.st_mode) || e.st_dev != st.st_dev ||
            e.st_ino != st.st_ino)
            continue;
        if (lstat(wal, &e) == 0 && restore_wal_back(wal, live_wal, err, errlen) != 0) {
            rc = -1;
            break;
        }
        if (unlink(path) == 0 && strlen(path) + sizeof STOREFILE_MISMATCH_SUFFIX <= sizeof path) {
            strcat(path, STOREFILE_MISMATCH_SUFFIX);
            if (lstat(path, &e) == 0 && S_ISREG(e.st_mode))
                (void)unlink(path);
        }
    }
    closedir(d);
    return rc;
}

/* The store being replaced is kept: its audit trail is the only record of
 * what was accepted, delivered and acknowledged after the backup (who saw
 * a data subject's data). Its name is chosen here, before anything
 * changes: STORE.replaced-YYYYMMDDTHHMMSSZ (the system clock's time: a
 * name only; -2 ... -9 after it when it, its -wal, its -shm or its
 * .audit-mismatch is there);
 * restore_swap makes it just before the rename. The last entry of its
 * trail is read now, for the store.restored entry, and the store's
 * audit-mismatch mark (one that cannot be read refuses; one without a
 * store too). An older restore's set aside WAL (STORE.lost-wal, from a
 * version that set it aside there, or an interrupted copy) is refused: it
 * belongs to a store and would be lost. No store in place: nothing to
 * keep. */
static int restore_name_replaced(const char *store_path, restore_report_t *r, char *err,
                                 size_t errlen)
{
    char real[PATH_MAX], lost[PATH_MAX + 16], first[sizeof r->replaced] = "";
    r->replaced[0] = '\0';
    if (storefile_real(real, sizeof real, store_path) != 0 ||
        storefile_side(lost, sizeof lost, real, ".lost-wal") != 0)
        return snprintf(err, errlen, "%s: path too long", store_path), -1;
    if (access(lost, F_OK) == 0)
        return snprintf(err, errlen,
                        "%s is there: the WAL of a store an earlier restore replaced, set aside "
                        "when that restore was interrupted; rename it to the -wal of the kept "
                        "store it belongs to (STORE.replaced-...-wal), or move it away with that "
                        "store, then run again; nothing was changed",
                        lost),
               -1;
    if ((r->marked = storefile_mismatch_read(store_path, &r->mark, err,
                                             errlen > 32 ? errlen - 32 : errlen)) < 0) {
        size_t len = strlen(err);
        snprintf(err + len, errlen - len, "; nothing was changed");
        return -1;
    }
    if (access(store_path, F_OK) != 0 && r->marked)
        return snprintf(err, errlen,
                        "%s is there, but no store at %s to keep it with: put the store it "
                        "marks back in place, or move the mark away with the copy of that store "
                        "kept as evidence; nothing was changed",
                        r->mark.path, store_path),
               -1;
    if (access(store_path, F_OK) != 0)
        return 0;
    restore_replaced_trail(store_path, r);
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", gmtime_r(&now, &tm));
    for (int n = 1; n <= 9; n++) {
        char suffix[64], side[sizeof r->replaced + sizeof STOREFILE_MISMATCH_SUFFIX];
        if (n == 1)
            snprintf(suffix, sizeof suffix, ".replaced-%s", stamp);
        else
            snprintf(suffix, sizeof suffix, ".replaced-%s-%d", stamp, n);
        if (storefile_side(r->replaced, sizeof r->replaced, store_path, suffix) != 0)
            return snprintf(err, errlen, "%s: path too long", store_path), -1;
        if (n == 1)
            snprintf(first, sizeof first, "%s", r->replaced);
        int taken = access(r->replaced, F_OK) == 0;
        snprintf(side, sizeof side, "%s-wal", r->replaced);
        taken = taken || access(side, F_OK) == 0;
        snprintf(side, sizeof side, "%s-shm", r->replaced);
        taken = taken || access(side, F_OK) == 0;
        snprintf(side, sizeof side, "%s%s", r->replaced, STOREFILE_MISMATCH_SUFFIX);
        taken = taken || access(side, F_OK) == 0;
        if (!taken)
            return 0;
    }
    snprintf(err, errlen,
             "the store being replaced cannot be kept: %s and the nine names after it are "
             "taken; move earlier kept stores away; nothing was changed",
             first);
    r->replaced[0] = '\0';
    return -1;
}

/* The kept store made, after the fold: a second name of the store's file
 * (through a symbolic link store path: of the file it names), or, on a
 * file system without second names (EPERM, EXDEV, EMLINK, ENOTSUP,
 * ENOSYS), a copy of it and of what is left of its WAL, with the store's
 * owner. Returns 0, or -1 with err and nothing left of it. */
static int restore_make_kept(const char *store_path, const char *wal, int had_wal,
                             const file_owner_t *owner, restore_report_t *r, char *err,
                             size_t errlen)
{
    char why[512], kept_wal[sizeof r->replaced + 8];
    snprintf(kept_wal, sizeof kept_wal, "%s-wal", r->replaced);
    if (linkat(AT_FDCWD, store_path, AT_FDCWD, r->replaced, AT_SYMLINK_FOLLOW) == 0) {
        r->replaced_linked = 1;
        return 0;
    }
    if (errno != EPERM && errno != EXDEV && errno != EMLINK && errno != ENOTSUP &&
        errno != ENOSYS) {
        snprintf(err, errlen,
                 "the store being replaced cannot be kept as %s (%s): it holds the record of "
                 "what was accepted, delivered and acknowledged after the backup; nothing was "
                 "changed",
                 r->replaced, strerror(errno));
        return -1;
    }
    r->replaced_linked = 0;
    int made = copy_file(store_path, r->replaced, why, sizeof why), made_wal = 0;
    if (made == 0 && had_wal)
        made_wal = copy_file(wal, kept_wal, why, sizeof why);
    if (made != 0 || made_wal != 0 || owner_give(r->replaced, -1, owner, why, sizeof why) != 0 ||
        (had_wal && owner_give(kept_wal, -1, owner, why, sizeof why) != 0)) {
        char ignored[8];
        if (made != -2) /* only what this made */
            (void)storefile_remove(r->replaced, ignored, sizeof ignored);
        if (made == 0 && had_wal && made_wal != -2)
            (void)storefile_remove(kept_wal, ignored, sizeof ignored);
        snprintf(err, errlen,
                 "the store being replaced cannot be kept as a copy (%.500s): it holds the "
                 "record of what was accepted, delivered and acknowledged after the backup; "
                 "nothing was changed",
                 why);
        return -1;
    }
    return 0;
}

/* Undo restore_make_kept after a failure before the rename: the store is
 * as it was; its second name, or the copy and its -wal, go. */
static void restore_unmake_kept(restore_report_t *r)
{
    char ignored[8], kept_wal[sizeof r->replaced + 8];
    snprintf(kept_wal, sizeof kept_wal, "%s-wal", r->replaced);
    (void)storefile_remove(r->replaced, ignored, sizeof ignored);
    if (!r->replaced_linked)
        (void)storefile_remove(kept_wal, ignored, sizeof ignored);
    if (r->mark_kept[0] != '\0') /* the store keeps its own mark */
        (void)storefile_remove(r->mark_kept, ignored, sizeof ignored);
    r->mark_kept[0] = '\0';
    r->replaced[0] = '\0';
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

/* The replaced store's mark made KEPT.audit-mismatch, once the kept store
 * is there, before anything moves: the mark stays beside the store until
 * the copy has replaced it, so that an interruption never leaves the
 * marked store without its mark. */
static int restore_keep_mark(restore_report_t *r, char *err, size_t errlen)
{
    char why[1024];
    if (storefile_mismatch_keep(&r->mark, r->replaced, r->mark_kept, sizeof r->mark_kept, why,
                                sizeof why) == 0)
        return 0;
    r->mark_kept[0] = '\0';
    snprintf(err, errlen,
             "%s cannot be kept with the store being replaced (%.700s): it records that the "
             "store's audit trail was written outside the broker, and goes with the kept store "
             "as its evidence; nothing was changed",
             r->mark.path, why);
    return -1;
}

/* After the rename: the mark goes from beside the restored store, which
 * it would keep from starting (the kept store has it). A mark beside
 * another file (the store path was a symbolic link: the file it named
 * stays, with its mark) stays. */
static int restore_drop_mark(const char *store_path, const restore_report_t *r, char *err,
                             size_t errlen)
{
    char now[PATH_MAX];
    if (r->mark_kept[0] == '\0' || storefile_mismatch_path(now, sizeof now, store_path) != 0 ||
        strcmp(now, r->mark.path) != 0)
        return 0;
    if (storefile_remove(r->mark.path, err, errlen) != 0) {
        size_t len = strlen(err);
        snprintf(err + len, errlen - len,
                 " (the mark is kept as %.300s as well: remove it beside the restored store)",
                 r->mark_kept);
        return -1;
    }
    return 0;
}

/* Why the copy could not be renamed over the store (error: the rename's
 * errno), into out: where the store's path is a mount point (a file
 * mounted in its place, as a container's volume of that file alone,
 * which Linux refuses to rename over: EBUSY), that, and what to do;
 * else strerror. A store path that is a symbolic link is no such case,
 * wherever the file it names lies: the rename replaces the link itself,
 * in its own folder. */
static void restore_rename_why(int error, const char *store_path, char *out, size_t outlen)
{
    struct statx stx;
    if (statx(AT_FDCWD, store_path, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx) == 0 &&
        (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) != 0 &&
        (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0)
        snprintf(out, outlen,
                 "%s: %s is a mount point (a file mounted in its place, as a container's "
                 "volume of that one file), and the restore puts the backup in place by a "
                 "rename in the store's folder, which cannot replace a mount point: mount the "
                 "folder that holds the store instead of the file (schakeld keeps the store's "
                 "-wal, -shm and lock beside it, in that folder), or run the restore on the "
                 "host that holds the file (docs/OPERATIONS.md, \"Restoring a backup\")",
                 strerror(error), store_path);
    else
        snprintf(out, outlen, "%s", strerror(error));
}

/* The copy in the store's place: the kept store made (restore_make_kept),
 * the old store's WAL moved away first (laid over the backup's pages it
 * would corrupt them): to the kept name's -wal when that is a second name
 * of the file, where it belongs, else (a copy has its own) set aside as
 * STORE.lost-wal; put back if the rename fails, so that a failure leaves
 * the store as it was and no kept store. What fails after the rename
 * leaves the store restored: a warning in the report. */
static int restore_swap(const char *store_path, const char *copy_path, const file_owner_t *owner,
                        restore_report_t *r, char *err, size_t errlen)
{
    char real[PATH_MAX], wal[PATH_MAX + 8], aside[PATH_MAX + 16], shm[PATH_MAX + 8],
        kept_wal[sizeof r->replaced + 8];
    /* SQLite keeps the -wal and -shm beside the file a linked path names */
    if (storefile_real(real, sizeof real, store_path) != 0 ||
        storefile_side(wal, sizeof wal, real, "-wal") != 0 ||
        storefile_side(aside, sizeof aside, real, ".lost-wal") != 0 ||
        storefile_side(shm, sizeof shm, real, "-shm") != 0)
        return snprintf(err, errlen, "%s: path too long", store_path), -1;
    snprintf(kept_wal, sizeof kept_wal, "%s-wal", r->replaced);
    restore_fold_old_wal(store_path, r);
    int had_wal = access(wal, F_OK) == 0;
    int keeping = r->replaced[0] != '\0';
    if (keeping && restore_make_kept(store_path, wal, had_wal, owner, r, err, errlen) != 0) {
        r->replaced[0] = '\0';
        return -1;
    }
    if (keeping && r->marked && restore_keep_mark(r, err, errlen) != 0) {
        restore_unmake_kept(r);
        return -1;
    }
    const char *moved = keeping && r->replaced_linked ? kept_wal : aside;
    if (had_wal && rename(wal, moved) != 0) {
        snprintf(err, errlen, "%s: %s (the store is as it was)", wal, strerror(errno));
        if (keeping)
            restore_unmake_kept(r);
        return -1;
    }
    /* the old store's -shm indexes its WAL, which is gone from beside it:
     * the restored file must not meet it (a reader still holding it would
     * keep it alive); removed before the rename, not after */
    char shm_why[512];
    if (storefile_remove(shm, shm_why, sizeof shm_why) != 0) {
        snprintf(err, errlen, "%s (the store is as it was)", shm_why);
        if (had_wal && rename(moved, wal) != 0)
            snprintf(err, errlen,
                     "%s; and its WAL could not be put back from %s (%s): rename it to %s "
                     "before starting schakeld, or run the restore again",
                     shm_why, moved, strerror(errno), wal);
        else if (keeping)
            restore_unmake_kept(r);
        return -1;
    }
    if (rename(copy_path, store_path) != 0) {
        char rename_why[1024];
        restore_rename_why(errno, store_path, rename_why, sizeof rename_why);
        if (had_wal && rename(moved, wal) != 0) {
            snprintf(err, errlen,
                     "%s: %s; and its WAL could not be put back from %s (%s): rename it to %s "
                     "before starting schakeld, or run the restore again",
                     store_path, rename_why, moved, strerror(errno), wal);
            return -1; /* the kept name stays: it holds that WAL's store */
        }
        snprintf(err, errlen, "%s: %s (the store is as it was)", store_path, rename_why);
        if (keeping)
            restore_unmake_kept(r);
        return -1;
    }
    /* each of these runs whatever the one before it did; the first
     * failure is the warning */
    char why[4][512] = {"", "", "", ""};
    int failed[4] = {had_wal && moved == aside ? storefile_remove(aside, why[0], sizeof why[0]) : 0,
                     storefile_remove(shm, why[1], sizeof why[1]), /* one made meanwhile */
                     restore_drop_mark(store_path, r, why[2], sizeof why[2]),
                     storefile_sync_folder(store_path, why[3], sizeof why[3])};
    for (int i = 0; i < 4; i++)
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
    int rc = -1, copy_ours = 0;
    err[0] = '\0';
    if (restore_drop_stale_names(store_path, copy_path, err, errlen) != 0)
        goto out;
    if (restore_floor(store_path, &floor, report) != 0 && !(flags & RESTORE_WITHOUT_FLOOR)) {
        restore_floor_refusal(report, err, errlen);
        goto out;
    }
    if (restore_name_replaced(store_path, report, err, errlen) != 0)
        goto out;
    /* a copy left by an earlier run that stopped half-way goes first; it
     * stays until here, whatever refuses before: it is what tells the
     * next run that a STORE.lost-wal is the live store's own WAL */
    copy_ours = 1;
    if (owner_give(lock_path, lock, &owner, err, errlen) != 0 ||
        storefile_remove(copy_path, err, errlen) != 0 ||
        storefile_remove_sides(copy_path, 1, err, errlen) != 0)
        goto out;
    if (restore_make_copy(copy_path, backup_real, store_key, key, report->has_floor ? &floor : NULL,
                          flags, report, err, errlen) != 0 ||
        storefile_remove_sides(copy_path, 1, err, errlen) != 0 ||
        owner_give(copy_path, -1, &owner, err, errlen) != 0)
        goto out;
    rc = restore_swap(store_path, copy_path, &owner, report, err, errlen);
out:
    if (rc != 0 && copy_ours) { /* no copy left behind (after the rename there is none) */
        char ignored[8];
        (void)storefile_remove(copy_path, ignored, sizeof ignored);
        (void)storefile_remove_sides(copy_path, 1, ignored, sizeof ignored);
    }
    if (rc != 0)
        report->replaced[0] = '\0';
    close(lock);
    return rc;
}
