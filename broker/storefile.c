/*
 * storefile.c — the files beside a store (storefile.h).
 *
 * Trusts the paths it is given (from the broker's configuration and the
 * store path's folder); touches only the files named. A mark's bytes are
 * not trusted: only its SEQ:HASH lines, checked for their form, are taken
 * from it. Errors: -1 with a
 * message naming the file, errno kept for the caller where it matters
 * (storefile_place).
 */
#define _GNU_SOURCE /* renameat2, RENAME_NOREPLACE */
#include "storefile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int storefile_side(char *out, size_t outlen, const char *path, const char *suffix)
{
    return snprintf(out, outlen, "%s%s", path, suffix) < (int)outlen ? 0 : -1;
}

int storefile_remove(const char *path, char *err, size_t errlen)
{
    if (unlink(path) == 0 || errno == ENOENT)
        return 0;
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
}

int storefile_remove_sides(const char *path, int with_lock, char *err, size_t errlen)
{
    static const char *const suffix[] = {"-wal", "-shm", ".lock"};
    char side[PATH_MAX];
    for (size_t i = 0; i < (with_lock ? 3u : 2u); i++) {
        if (storefile_side(side, sizeof side, path, suffix[i]) != 0) {
            snprintf(err, errlen, "%s: path too long", path);
            return -1;
        }
        if (storefile_remove(side, err, errlen) != 0)
            return -1;
    }
    return 0;
}

/* fsync of what open(path, flags) gives. */
static int sync_opened(const char *path, int flags, char *err, size_t errlen)
{
    int fd = open(path, flags | O_CLOEXEC);
    int failed = fd < 0 || fsync(fd) != 0;
    if (failed)
        snprintf(err, errlen, "%.400s: sync: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    return failed ? -1 : 0;
}

int storefile_sync(const char *path, char *err, size_t errlen)
{
    return sync_opened(path, O_RDONLY | O_NOFOLLOW, err, errlen);
}

int storefile_sync_folder(const char *path, char *err, size_t errlen)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        snprintf(dir, sizeof dir, ".");
    else if (snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path) >= (int)sizeof dir)
        return snprintf(err, errlen, "%s: path too long", path), -1;
    if (dir[0] == '\0')
        snprintf(dir, sizeof dir, "/");
    return sync_opened(dir, O_RDONLY | O_DIRECTORY, err, errlen);
}

int storefile_place(const char *from, const char *to, char *err, size_t errlen)
{
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    /* EINVAL: the file system has no RENAME_NOREPLACE (ENOSYS: the kernel
     * has no renameat2); link() refuses a name that is there just as well */
    if ((errno == EINVAL || errno == ENOSYS) && link(from, to) == 0) {
        (void)unlink(from); /* if it stays, a second name of the file (storefile.h) */
        return 0;
    }
    int saved = errno;
    snprintf(err, errlen, "%s: %s", to, strerror(saved));
    errno = saved;
    return -1;
}

int storefile_tighten(const char *path, mode_t *was, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    *was = st.st_mode & 07777;
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) == 0)
        return 0;
    if (chmod(path, 0600) == 0)
        return 1;
    int saved = errno;
    uid_t self = geteuid();
    char run[PATH_MAX * 2 + 80];
    if (st.st_uid != self)
        snprintf(run, sizeof run,
                 "it belongs to uid %u, not to uid %u that runs schakeld: run, as root, chown %u "
                 "%s && chmod 600 %s",
                 (unsigned)st.st_uid, (unsigned)self, (unsigned)self, path, path);
    else
        snprintf(run, sizeof run, "run: chmod 600 %s", path);
    snprintf(err, errlen,
             "%s has mode %04o (group or others may read it) and cannot be made 0600: %s; %s", path,
             (unsigned)*was, strerror(saved), run);
    return -1;
}

/* The mark's path: beside the store's file itself (a store path that is
 * a symbolic link, or reached through one, names the same mark as the
 * file's own path), or beside the path as given when it cannot be
 * resolved (no store there). */
static int mismatch_path(char *mark, size_t len, const char *store_path)
{
    char real[PATH_MAX];
    if (storefile_real(real, sizeof real, store_path) != 0)
        return -1;
    return storefile_side(mark, len, real, STOREFILE_MISMATCH_SUFFIX);
}

/* An existing mark made durable before it counts: one a failed attempt
 * left may not have been synced. */
static int mismatch_sync_existing(const char *mark, char *err, size_t errlen)
{
    int fd = open(mark, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        int rc = fsync(fd);
        close(fd);
        if (rc != 0)
            return snprintf(err, errlen, "%s: %s", mark, strerror(errno)), -1;
    }
    return storefile_sync_folder(mark, err, errlen);
}

/* text written whole to tmp (made anew: O_EXCL, 0600), given uid and
 * gid when they differ from the process's, and synced. Returns 0, or -1
 * with errno. */
static int mark_write_tmp(const char *tmp, const char *text, size_t len, uid_t uid, gid_t gid)
{
    (void)unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    size_t done = 0;
    int failed = 0;
    while (done < len && !failed) {
        ssize_t n = write(fd, text + done, len - done);
        if (n > 0)
            done += (size_t)n;
        else if (n < 0 && errno != EINTR)
            failed = 1;
    }
    if (!failed && (uid != geteuid() || gid != getegid()) && fchown(fd, uid, gid) != 0)
        failed = 1;
    if (!failed && fsync(fd) != 0)
        failed = 1;
    int saved = errno;
    if (close(fd) != 0 && !failed) {
        failed = 1;
        saved = errno;
    }
    errno = saved;
    return failed ? -1 : 0;
}

int storefile_mark_mismatch(const char *store_path, const char *text, char *path_out,
                            size_t path_outlen, char *err, size_t errlen)
{
    char mark[PATH_MAX], tmp[PATH_MAX + 8];
    struct stat store;
    if (mismatch_path(mark, sizeof mark, store_path) != 0)
        return snprintf(err, errlen, "%s: path too long", store_path), -1;
    snprintf(path_out, path_outlen, "%s", mark);
    struct stat there;
    if (lstat(mark, &there) == 0)
        return mismatch_sync_existing(mark, err, errlen) == 0 ? 1 : -1;
    /* written whole and synced under another name, then linked into place
     * (which fails if a mark appeared meanwhile): a mark is never seen
     * half-written. The store's owner: a mark owned by root would stay in
     * the way of the schakel user, who must be able to read it (and an
     * operator remove it). */
    snprintf(tmp, sizeof tmp, "%s.tmp", mark);
    if (stat(store_path, &store) != 0) {
        store.st_uid = geteuid();
        store.st_gid = getegid();
    }
    if (mark_write_tmp(tmp, text, strlen(text), store.st_uid, store.st_gid) != 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        (void)unlink(tmp);
        return -1;
    }
    int linked = link(tmp, mark), saved = errno;
    (void)unlink(tmp);
    if (linked != 0 && saved == EEXIST)
        return mismatch_sync_existing(mark, err, errlen) == 0 ? 1 : -1;
    if (linked != 0)
        return snprintf(err, errlen, "%s: %s", mark, strerror(saved)), -1;
    return storefile_sync_folder(mark, err, errlen);
}

/* The anchor the mark holds (its expect= line), or "SEQ:HASH" when it
 * cannot be read: the refusal says the command all the same. */
static void mismatch_anchor(const char *mark, char *anchor, size_t anchorlen)
{
    char text[1024];
    snprintf(anchor, anchorlen, "SEQ:HASH");
    int fd = open(mark, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return;
    text[n] = '\0';
    const char *line = strstr(text, "\nexpect=");
    if (line == NULL)
        return;
    line += strlen("\nexpect=");
    size_t len = strspn(line, "0123456789:abcdef");
    if (len > 0 && len < anchorlen)
        snprintf(anchor, anchorlen, "%.*s", (int)len, line);
}

int storefile_mismatch_refuse(const char *store_path, char *err, size_t errlen)
{
    char mark[PATH_MAX], anchor[128];
    struct stat st;
    if (mismatch_path(mark, sizeof mark, store_path) != 0)
        return snprintf(err, errlen, "%s: path too long", store_path), -1;
    if (lstat(mark, &st) != 0 && errno == ENOENT)
        return 0;
    mismatch_anchor(mark, anchor, sizeof anchor);
    snprintf(err, errlen,
             "%s is there: the running broker found the audit trail's last entries written "
             "outside it (audit.tail_mismatch), and nothing may be chained or signed onto "
             "them: run schakelctl audit verify --store %s --expect %s (the broker's own "
             "last entry, from %s); then restore the last backup that verifies (schakeld "
             "--restored keeps this store and its mark, and records the anchor), or, only "
             "when verify says the trail is intact with that anchor and that it ends there "
             "(as many entries as the anchor's seq: entries after it are not the broker's), "
             "remove %s (docs/OPERATIONS.md, \"When audit verify fails\")",
             mark, store_path, anchor, mark, mark);
    return -1;
}

int storefile_mismatch_path(char *out, size_t outlen, const char *store_path)
{
    return mismatch_path(out, outlen, store_path);
}

/* SEQ:HASH (decimal, ':', 64 lowercase hex digits) at the start of the
 * line key=, copied to out; -1 when the line is not there or not so. */
static int mark_value(const char *text, const char *key, char *out, size_t outlen)
{
    char line[32];
    snprintf(line, sizeof line, "\n%s=", key);
    const char *at = strstr(text, line);
    if (at == NULL)
        return -1;
    at += strlen(line);
    size_t digits = strspn(at, "0123456789");
    if (digits == 0 || digits > 20 || at[digits] != ':' ||
        strspn(at + digits + 1, "0123456789abcdef") != 64 || at[digits + 65] != '\n' ||
        digits + 66 > outlen)
        return -1;
    snprintf(out, outlen, "%.*s", (int)digits + 65, at);
    return 0;
}

int storefile_mismatch_read(const char *store_path, storefile_mark_t *m, char *err, size_t errlen)
{
    struct stat st;
    memset(m, 0, sizeof *m);
    if (mismatch_path(m->path, sizeof m->path, store_path) != 0)
        return snprintf(err, errlen, "%s: path too long", store_path), -1;
    if (lstat(m->path, &st) != 0 && errno == ENOENT)
        return 0;
    const char *why = NULL;
    int fd = open(m->path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    ssize_t n = -1;
    if (fd < 0 || fstat(fd, &st) != 0)
        why = strerror(errno);
    else if (!S_ISREG(st.st_mode))
        why = "not a regular file";
    else if ((n = read(fd, m->text, sizeof m->text - 1)) < 0)
        why = strerror(errno);
    else if ((size_t)n == sizeof m->text - 1 || (size_t)n != (size_t)st.st_size)
        why = "larger than a mark schakeld writes";
    if (fd >= 0)
        close(fd);
    if (why == NULL && n >= 0) {
        m->len = (size_t)n;
        m->text[m->len] = '\0';
        m->uid = st.st_uid;
        m->gid = st.st_gid;
        if (strlen(m->text) != m->len ||
            mark_value(m->text, "expect", m->expect, sizeof m->expect) != 0 ||
            mark_value(m->text, "found", m->found, sizeof m->found) != 0)
            why = "it holds no expect=SEQ:HASH and found=SEQ:HASH lines as schakeld writes them";
    }
    if (why == NULL)
        return 1;
    snprintf(err, errlen,
             "%s cannot be read (%s): it marks this store as written outside the broker "
             "(audit.tail_mismatch), and a restore records its anchor with the store it keeps; "
             "keep the mark and a copy of the store as evidence, then move the mark away and "
             "run --restored again (docs/OPERATIONS.md, \"When audit verify fails\")",
             m->path, why);
    return -1;
}

int storefile_mismatch_keep(const storefile_mark_t *m, const char *kept, char *kept_mark,
                            size_t kept_marklen, char *err, size_t errlen)
{
    char tmp[PATH_MAX + 8];
    if (storefile_side(kept_mark, kept_marklen, kept, STOREFILE_MISMATCH_SUFFIX) != 0 ||
        snprintf(tmp, sizeof tmp, "%s.tmp", kept_mark) >= (int)sizeof tmp)
        return snprintf(err, errlen, "%s: path too long", kept), -1;
    if (link(m->path, kept_mark) != 0) {
        /* no second names here (as for the kept store: restore.c), or the
         * mark on another file system than the kept store: a copy */
        if (errno != EPERM && errno != EXDEV && errno != EMLINK && errno != ENOTSUP &&
            errno != ENOSYS)
            return snprintf(err, errlen, "%s: %s", kept_mark, strerror(errno)), -1;
        if (mark_write_tmp(tmp, m->text, m->len, m->uid, m->gid) != 0) {
            snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
            (void)unlink(tmp);
            return -1;
        }
        if (storefile_place(tmp, kept_mark, err, errlen) != 0) {
            (void)unlink(tmp);
            return -1;
        }
    }
    if (storefile_sync_folder(kept_mark, err, errlen) != 0) {
        (void)unlink(kept_mark);
        return -1;
    }
    return 0;
}

/* Names the project's own commands may leave of a store's file beside
 * it: an interrupted --restored (its kept name, made just before the
 * rename: restore.c), an --init whose link fallback could not remove
 * its temporary (init.c). */
static const struct {
    const char *suffix;
    int prefix; /* the suffix begins the name's end (a time follows) */
    const char *what;
} own_names[] = {
    {".replaced-", 1,
     "left by a schakeld --restored that was interrupted before it put the backup in place: "
     "run that schakeld --restored again (it puts the store's WAL back if that restore had "
     "moved it to that name's -wal, removes that name and keeps the store as it should), or, "
     "to keep this store as it is, first rename that name's -wal, if there is one, to the "
     "store's -wal (it holds the store's last commits), then remove that name"},
    {".initializing", 0, "left by an interrupted schakeld --init: remove that name"},
};

/* A name in the store's folder that the project's own commands leave
 * (own_names) and that is a name of the same file; its path in out and
 * the index in own_names returned, or -1 when there is none. */
static int links_own_name(const char *store_path, const struct stat *st, char *out, size_t outlen)
{
    char folder[PATH_MAX];
    struct stat e;
    if (snprintf(folder, sizeof folder, "%s", store_path) >= (int)sizeof folder)
        return -1;
    char *slash = strrchr(folder, '/');
    const char *base = slash != NULL ? store_path + (slash - folder) + 1 : store_path;
    if (slash != NULL)
        *slash = '\0';
    const char *dir = slash == NULL ? "." : (folder[0] != '\0' ? folder : "/");
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    size_t base_len = strlen(base);
    int found = -1;
    for (struct dirent *ent; found < 0 && (ent = readdir(d)) != NULL;) {
        if (strncmp(ent->d_name, base, base_len) != 0)
            continue;
        const char *end = ent->d_name + base_len;
        for (size_t i = 0; found < 0 && i < sizeof own_names / sizeof own_names[0]; i++) {
            size_t len = strlen(own_names[i].suffix);
            if ((own_names[i].prefix ? strncmp(end, own_names[i].suffix, len)
                                     : strcmp(end, own_names[i].suffix)) != 0 ||
                snprintf(out, outlen, "%s/%s", slash == NULL ? "." : folder, ent->d_name) >=
                    (int)outlen)
                continue;
            if (lstat(out, &e) == 0 && S_ISREG(e.st_mode) && e.st_dev == st->st_dev &&
                e.st_ino == st->st_ino)
                found = (int)i;
        }
    }
    closedir(d);
    return found;
}

/* store_path as itself a name that own_names leave of another store's
 * file in its folder (STORE.replaced-..., STORE.initializing), which an
 * offline reader may be given: STORE's path in out and the index in
 * own_names returned, or -1 when it is not. */
static int links_own_name_of(const char *store_path, const struct stat *st, char *out,
                             size_t outlen)
{
    const char *slash = strrchr(store_path, '/');
    const char *base = slash != NULL ? slash + 1 : store_path;
    size_t base_len = strlen(base);
    for (size_t i = 0; i < sizeof own_names / sizeof own_names[0]; i++) {
        const char *suffix = own_names[i].suffix, *at = NULL;
        size_t len = strlen(suffix);
        if (own_names[i].prefix) /* the last one: a time follows it */
            for (const char *p = strstr(base, suffix); p != NULL; p = strstr(p + 1, suffix))
                at = p;
        else if (base_len > len && strcmp(base + base_len - len, suffix) == 0)
            at = base + base_len - len;
        struct stat e;
        if (at == NULL || at == base ||
            snprintf(out, outlen, "%.*s", (int)(at - store_path), store_path) >= (int)outlen)
            continue;
        if (stat(out, &e) == 0 && e.st_dev == st->st_dev && e.st_ino == st->st_ino)
            return (int)i;
    }
    return -1;
}

/* The store file's names: 0 one (or no file), 1 another that none of the
 * project's commands left, 2 one that one of them left (own_names, either
 * way round); err says which and what to do for 1 and 2. */
static int links_state(const char *store_path, char *err, size_t errlen)
{
    struct stat st;
    char other[PATH_MAX + 256];
    /* A folder's link count is 2 and more without any hard link: only a
     * file's second name is one. */
    if (stat(store_path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink <= 1)
        return 0; /* not there, or no file: the caller says so */
    int own = links_own_name(store_path, &st, other, sizeof other);
    char real[PATH_MAX];
    if (own < 0 && (own = links_own_name_of(store_path, &st, other, sizeof other)) >= 0) {
        const char *file = storefile_real(real, sizeof real, other) == 0 ? real : other;
        snprintf(err, errlen,
                 "the store file %s has %ju names (link count %ju): %s is another name of the "
                 "store %s, %s (the store's -wal is %s-wal); SQLite names a store's -wal and "
                 "-journal after the name it is opened under, so one store opened under two "
                 "names can be corrupted (docs/OPERATIONS.md, \"Start-up\")",
                 store_path, (uintmax_t)st.st_nlink, (uintmax_t)st.st_nlink, store_path, other,
                 own_names[own].what, file);
        return 2;
    }
    if (storefile_real(real, sizeof real, store_path) != 0)
        snprintf(real, sizeof real, "%s", store_path);
    if (own >= 0)
        snprintf(err, errlen,
                 "the store file %s has %ju names (link count %ju): %s is another name of it, "
                 "%s (the store's -wal is %s-wal); SQLite names a store's -wal and -journal "
                 "after the name it is opened under, so one store opened under two names can "
                 "be corrupted (docs/OPERATIONS.md, \"Start-up\")",
                 store_path, (uintmax_t)st.st_nlink, (uintmax_t)st.st_nlink, other,
                 own_names[own].what, real);
    else
        snprintf(err, errlen,
                 "the store file %s has %ju names (link count %ju): a hard link (ln, cp -l, a "
                 "backup made as a link) is another name of the same file; SQLite names a "
                 "store's -wal and -journal after the name it is opened under, so one store "
                 "opened under two names can be corrupted, and the marks beside this name "
                 "(%s%s) are not beside the other: find the others with find \"$(df "
                 "--output=target %s | tail -n 1)\" -xdev -samefile %s, and remove every name "
                 "but this one (copy a backup made as a link to a file of its own first) "
                 "(docs/OPERATIONS.md, \"Start-up\")",
                 store_path, (uintmax_t)st.st_nlink, (uintmax_t)st.st_nlink, store_path,
                 STOREFILE_MISMATCH_SUFFIX, store_path, store_path);
    return own >= 0 ? 2 : 1;
}

int storefile_links_refuse(const char *store_path, char *err, size_t errlen)
{
    return links_state(store_path, err, errlen) == 0 ? 0 : -1;
}

int storefile_real(char *out, size_t outlen, const char *store_path)
{
    char real[PATH_MAX];
    const char *base = realpath(store_path, real) != NULL ? real : store_path;
    return snprintf(out, outlen, "%s", base) >= (int)outlen ? -1 : 0;
}

int storefile_restore_unfinished(const char *store_path, char *why, size_t whylen)
{
    static const char *const suffix[] = {"", "-wal", "-shm", ".lock"};
    char copy[PATH_MAX], side[PATH_MAX + 8], found[4096] = "";
    struct stat st;
    if (storefile_side(copy, sizeof copy, store_path, ".restoring") != 0)
        return 0;
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
        if (storefile_side(side, sizeof side, copy, suffix[i]) != 0 || lstat(side, &st) != 0)
            continue;
        size_t len = strlen(found);
        int n = snprintf(found + len, sizeof found - len, "%s%s", len > 0 ? ", " : "", side);
        if (n < 0 || (size_t)n >= sizeof found - len)
            break; /* the names said so far do */
    }
    if (found[0] == '\0')
        return 0;
    snprintf(why, whylen,
             "%s: left by a schakeld --restored that was interrupted before it put the backup "
             "in place (its copy of the backup, and that copy's side files); the store %s is "
             "as it was, and the broker serves it: to restore that backup, stop schakeld and "
             "run the same schakeld --restored again; if that restore is abandoned, remove "
             "them (docs/OPERATIONS.md, \"Restoring a backup\")",
             found, store_path);
    return 1;
}

int storefile_lost_wal_refuse(const char *store_path, char *err, size_t errlen)
{
    char real[PATH_MAX], lost[PATH_MAX + 16];
    struct stat st;
    if (storefile_real(real, sizeof real, store_path) != 0 ||
        storefile_side(lost, sizeof lost, real, ".lost-wal") != 0)
        return snprintf(err, errlen, "%s: path too long", store_path), -1;
    if (lstat(lost, &st) == 0) {
        char copy[PATH_MAX + 16];
        if (storefile_side(copy, sizeof copy, store_path, ".restoring") == 0 &&
            lstat(copy, &st) == 0)
            snprintf(err, errlen,
                     "%s is there: the WAL of this store, set aside by a schakeld --restored "
                     "that was interrupted before it put the backup in place (%s is still "
                     "there); its frames are this store's last commits, and a start without "
                     "them would hand out their seqs again: run that schakeld --restored again "
                     "first (it puts the WAL back; docs/OPERATIONS.md, \"Restoring a backup\")",
                     lost, copy);
        else
            snprintf(err, errlen,
                     "%s is there: the WAL of the store a schakeld --restored replaced, set "
                     "aside and left when it was interrupted after it put the backup in place; "
                     "it belongs to the kept copy of that store (STORE.replaced-...): if that "
                     "copy's -wal has the same bytes (cmp), remove %s; otherwise rename it to "
                     "that copy's -wal (docs/OPERATIONS.md, \"Restoring a backup\")",
                     lost, lost);
        return -1;
    }
    if (errno != ENOENT)
        return snprintf(err, errlen, "%s: %s", lost, strerror(errno)), -1;
    /* a -wal beside a store path that is a symbolic link is not the one
     * SQLite reads (beside the file the link names): frames in it would
     * be missed */
    char beside[PATH_MAX + 8], wal[PATH_MAX + 8];
    if (lstat(store_path, &st) == 0 && S_ISLNK(st.st_mode) &&
        storefile_side(beside, sizeof beside, store_path, "-wal") == 0 &&
        storefile_side(wal, sizeof wal, real, "-wal") == 0 && strcmp(beside, wal) != 0 &&
        lstat(beside, &st) == 0 && st.st_size > 32)
        return snprintf(err, errlen,
                        "%s is there, beside the store path %s, which is a symbolic link: "
                        "SQLite reads the -wal beside the file the link names (%s), so the "
                        "frames in it would be missed; if it belongs to the store, move it "
                        "to %s (none must be there), else remove it",
                        beside, store_path, wal, wal),
               -1;
    return 0;
}

int storefile_whole_refuse(const char *store_path, char *err, size_t errlen)
{
    if (storefile_lost_wal_refuse(store_path, err, errlen) != 0)
        return -1;
    int names = links_state(store_path, err, errlen);
    if (names != 1)
        return names == 0 ? 0 : -1;
    struct stat st;
    if (stat(store_path, &st) != 0)
        st.st_nlink = 2;
    snprintf(err, errlen,
             "the store file %s has %ju names (link count %ju): a -wal beside another name "
             "of it is not read, nor what it holds (find the others with find \"$(df "
             "--output=target %s | tail -n 1)\" -xdev -samefile %s)",
             store_path, (uintmax_t)st.st_nlink, (uintmax_t)st.st_nlink, store_path, store_path);
    return 1;
}
