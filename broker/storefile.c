/*
 * storefile.c — the files beside a store (storefile.h).
 *
 * Trusts the paths it is given (from the broker's configuration and the
 * store path's folder); touches only the files named. Errors: -1 with a
 * message naming the file, errno kept for the caller where it matters
 * (storefile_place).
 */
#define _GNU_SOURCE /* renameat2, RENAME_NOREPLACE */
#include "storefile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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
    const char *base = realpath(store_path, real) != NULL ? real : store_path;
    return storefile_side(mark, len, base, STOREFILE_MISMATCH_SUFFIX);
}

/* An existing mark made durable before it counts: one a failed attempt
 * left may not have been synced. */
static int mismatch_sync_existing(const char *mark, char *err, size_t errlen)
{
    int fd = open(mark, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        int rc = fsync(fd);
        close(fd);
        if (rc != 0)
            return snprintf(err, errlen, "%s: %s", mark, strerror(errno)), -1;
    }
    return storefile_sync_folder(mark, err, errlen);
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
     * half-written */
    snprintf(tmp, sizeof tmp, "%s.tmp", mark);
    (void)unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return snprintf(err, errlen, "%s: %s", tmp, strerror(errno)), -1;
    size_t len = strlen(text), done = 0;
    int failed = 0;
    while (done < len && !failed) {
        ssize_t n = write(fd, text + done, len - done);
        if (n > 0)
            done += (size_t)n;
        else if (n < 0 && errno != EINTR)
            failed = 1;
    }
    /* The store's owner: a mark owned by root would stay in the way of the
     * schakel user, who must be able to read it (and an operator remove it). */
    if (!failed && stat(store_path, &store) == 0 &&
        (store.st_uid != geteuid() || store.st_gid != getegid()) &&
        fchown(fd, store.st_uid, store.st_gid) != 0)
        failed = 1;
    if (!failed && fsync(fd) != 0)
        failed = 1;
    int saved = errno;
    if (close(fd) != 0 && !failed) {
        failed = 1;
        saved = errno;
    }
    if (!failed && link(tmp, mark) != 0) {
        saved = errno;
        failed = 1;
    }
    (void)unlink(tmp);
    if (failed && saved == EEXIST)
        return mismatch_sync_existing(mark, err, errlen) == 0 ? 1 : -1;
    if (failed)
        return snprintf(err, errlen, "%s: %s", mark, strerror(saved)), -1;
    return storefile_sync_folder(mark, err, errlen);
}

/* The anchor the mark holds (its expect= line), or "SEQ:HASH" when it
 * cannot be read: the refusal says the command all the same. */
static void mismatch_anchor(const char *mark, char *anchor, size_t anchorlen)
{
    char text[1024];
    snprintf(anchor, anchorlen, "SEQ:HASH");
    int fd = open(mark, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
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

int storefile_mismatch_refuse(const char *store_path, int restoring, char *err, size_t errlen)
{
    char mark[PATH_MAX], anchor[128];
    struct stat st;
    if (mismatch_path(mark, sizeof mark, store_path) != 0)
        return snprintf(err, errlen, "%s: path too long", store_path), -1;
    if (lstat(mark, &st) != 0 && errno == ENOENT)
        return 0;
    mismatch_anchor(mark, anchor, sizeof anchor);
    if (restoring)
        snprintf(err, errlen,
                 "%s is there: the running broker found the audit trail's last entries written "
                 "outside it (audit.tail_mismatch): run schakelctl audit verify --store %s "
                 "--expect %s (the broker's own last entry, from %s) on a copy kept as evidence; "
                 "the restore would record that store's last entry in the restored trail as "
                 "the broker's: move %s away with that copy, then run --restored again "
                 "(docs/OPERATIONS.md, \"When audit verify fails\")",
                 mark, store_path, anchor, mark, mark);
    else
        snprintf(err, errlen,
                 "%s is there: the running broker found the audit trail's last entries written "
                 "outside it (audit.tail_mismatch), and nothing may be chained or signed onto "
                 "them: run schakelctl audit verify --store %s --expect %s (the broker's own "
                 "last entry, from %s); then restore the last backup that verifies, or, only "
                 "when verify says the trail is intact with that anchor and that it ends there "
                 "(as many entries as the anchor's seq: entries after it are not the broker's), "
                 "remove %s (docs/OPERATIONS.md, \"When audit verify fails\")",
                 mark, store_path, anchor, mark, mark);
    return -1;
}
