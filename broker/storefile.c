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
