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

/* libc's function of that name into *real (a function pointer of size
 * bytes); -1 with ENOSYS when there is none. */
static int statvfsgate_real(const char *name, void *real, size_t size)
{
    void *sym = dlsym(RTLD_NEXT, name);
    if (sym == NULL) {
        errno = ENOSYS;
        return -1;
    }
    memcpy(real, &sym, size); /* POSIX: a data pointer holds a function's address */
    return 0;
}

/* The free blocks of unit bytes the gate file says, or -1 when it says
 * nothing. */
static long long statvfsgate_blocks(unsigned long unit)
{
    long long bytes = statvfsgate_bytes();
    return bytes >= 0 ? (long long)((unsigned long long)bytes / (unit != 0 ? unit : 1)) : -1;
}

/* One wrapper: libc's answer, then the gate's room. statvfs and statvfs64
 * differ only in their types, which a function cannot take. */
#define STATVFSGATE_WRAPPER(name, stat_type, blocks_type)                                          \
    int name(const char *path, stat_type *buf)                                                     \
    {                                                                                              \
        int (*real)(const char *, stat_type *) = NULL;                                             \
        if (statvfsgate_real(#name, &real, sizeof real) != 0)                                      \
            return -1;                                                                             \
        int rc = real(path, buf);                                                                  \
        long long blocks = rc == 0 ? statvfsgate_blocks(buf->f_frsize) : -1;                       \
        if (blocks >= 0)                                                                           \
            buf->f_bavail = buf->f_bfree = (blocks_type)blocks;                                    \
        return rc;                                                                                 \
    }

STATVFSGATE_WRAPPER(statvfs, struct statvfs, fsblkcnt_t)
STATVFSGATE_WRAPPER(statvfs64, struct statvfs64, fsblkcnt64_t)
