/*
 * statvfsgate.c — the room a file system reports, set by a test
 * (LD_PRELOAD, tests only), for the broker's free-space floor.
 *
 * Wraps statvfs and statvfs64. When SCHAKEL_TEST_STATVFS names a file
 * that holds a decimal number of bytes, each call reports that many free
 * (f_bavail and f_bfree, in units of the real f_frsize) instead of what
 * the file system has; the file is read at every call, so a test moves
 * the room up and down while the broker runs. Unset, or a file that is
 * missing or holds no number: libc's answer. Trusts the environment it is
 * given; never fails otherwise.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

int statvfs(const char *path, struct statvfs *buf);
int statvfs64(const char *path, struct statvfs64 *buf);

/* The bytes the gate file says, or -1 when it says nothing. */
static long long statvfsgate_bytes(void)
{
    const char *gate = getenv("SCHAKEL_TEST_STATVFS");
    if (gate == NULL || gate[0] == '\0')
        return -1;
    FILE *f = fopen(gate, "re");
    if (f == NULL)
        return -1;
    long long bytes = -1;
    if (fscanf(f, "%lld", &bytes) != 1 || bytes < 0)
        bytes = -1;
    fclose(f);
    return bytes;
}

static void *statvfsgate_next(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

int statvfs(const char *path, struct statvfs *buf)
{
    int (*real)(const char *, struct statvfs *) = NULL;
    void *sym = statvfsgate_next("statvfs");
    memcpy(&real, &sym, sizeof real); /* POSIX: a data pointer holds a function's address */
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    int rc = real(path, buf);
    long long bytes = statvfsgate_bytes();
    if (rc == 0 && bytes >= 0) {
        unsigned long unit = buf->f_frsize != 0 ? buf->f_frsize : 1;
        buf->f_bavail = buf->f_bfree = (fsblkcnt_t)((unsigned long long)bytes / unit);
    }
    return rc;
}

int statvfs64(const char *path, struct statvfs64 *buf)
{
    int (*real)(const char *, struct statvfs64 *) = NULL;
    void *sym = statvfsgate_next("statvfs64");
    memcpy(&real, &sym, sizeof real);
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    int rc = real(path, buf);
    long long bytes = statvfsgate_bytes();
    if (rc == 0 && bytes >= 0) {
        unsigned long unit = buf->f_frsize != 0 ? buf->f_frsize : 1;
        buf->f_bavail = buf->f_bfree = (fsblkcnt64_t)((unsigned long long)bytes / unit);
    }
    return rc;
}
