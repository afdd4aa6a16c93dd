/*
 * renamegate.c — a file system without RENAME_NOREPLACE, for schakeld
 * --init (LD_PRELOAD, tests only).
 *
 * Wraps renameat2. When SCHAKEL_TEST_RENAMEAT2 is "einval", each call
 * fails with EINVAL, as on a file system that cannot rename without
 * replacing; when it is "einval-appear", a file is first made at the
 * target (O_EXCL, holding RENAMEGATE_APPEARED), as a store another process
 * made meanwhile. Each call it fails writes one line to stderr, so that a
 * test sees the fallback taken. Unset or another value: libc's renameat2.
 * Wraps link and linkat too: when SCHAKEL_TEST_LINK is "eperm", each call
 * fails with EPERM, as on a file system without second names of a file
 * (schakeld --restored keeps the replaced store as a copy then), with a
 * line on stderr likewise; when it is "eacces-mark", only a call whose new
 * name ends in ".audit-mismatch" fails, with EACCES (a mark --restored
 * cannot keep with the replaced store).
 * Wraps rename: when SCHAKEL_TEST_RENAME is "kill-restoring", a rename of
 * a name ending in ".restoring" (schakeld --restored putting the backup
 * in place) kills the process with SIGKILL instead, as a crash or power
 * loss at that step would stop it, with a line on stderr first.
 * Trusts the environment it is given; never fails otherwise.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RENAMEGATE_APPEARED "a store that another process made meanwhile\n"

/* The shim's own entry point; the process calls it in place of libc's. */
int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
              unsigned int flags);

int link(const char *oldpath, const char *newpath);
int rename(const char *oldpath, const char *newpath);
int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags);

typedef int (*renameat2_fn)(int, const char *, int, const char *, unsigned int);
typedef int (*link_fn)(const char *, const char *);
typedef int (*rename_fn)(const char *, const char *);
typedef int (*linkat_fn)(int, const char *, int, const char *, int);

static void renamegate_note(const char *event, const char *path)
{
    char line[512];
    int n = snprintf(line, sizeof line, "event=%s path=%s\n", event, path);
    if (n > 0 && (size_t)n < sizeof line && write(2, line, (size_t)n) < 0) {
        /* stderr is gone: the test sees no line and fails on its own */
    }
}

int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
              unsigned int flags)
{
    const char *mode = getenv("SCHAKEL_TEST_RENAMEAT2");
    if (mode != NULL && strcmp(mode, "einval-appear") == 0) {
        int fd = openat(newdirfd, newpath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            if (write(fd, RENAMEGATE_APPEARED, strlen(RENAMEGATE_APPEARED)) < 0)
                renamegate_note("renamegate.appear_failed", newpath);
            close(fd);
        }
        renamegate_note("renamegate.appeared", newpath);
    }
    if (mode != NULL && strncmp(mode, "einval", 6) == 0) {
        renamegate_note("renamegate.einval", newpath);
        errno = EINVAL;
        return -1;
    }
    renameat2_fn real = NULL;
    void *sym = dlsym(RTLD_NEXT, "renameat2");
    memcpy(&real, &sym, sizeof real); /* POSIX: a data pointer holds a function's address */
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real(olddirfd, oldpath, newdirfd, newpath, flags);
}

/* SCHAKEL_TEST_LINK=eperm, or eacces-mark for a mark's name: the call
 * fails (1) with a line; else 0. */
static int link_refused(const char *newpath)
{
    static const char mark[] = ".audit-mismatch";
    const char *mode = getenv("SCHAKEL_TEST_LINK");
    size_t len = strlen(newpath);
    if (mode != NULL && strcmp(mode, "eacces-mark") == 0 && len >= sizeof mark - 1 &&
        strcmp(newpath + len - (sizeof mark - 1), mark) == 0) {
        renamegate_note("renamegate.link_eacces", newpath);
        errno = EACCES;
        return 1;
    }
    if (mode == NULL || strcmp(mode, "eperm") != 0)
        return 0;
    renamegate_note("renamegate.link_eperm", newpath);
    errno = EPERM;
    return 1;
}

int link(const char *oldpath, const char *newpath)
{
    if (link_refused(newpath))
        return -1;
    link_fn real = NULL;
    void *sym = dlsym(RTLD_NEXT, "link");
    memcpy(&real, &sym, sizeof real);
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real(oldpath, newpath);
}

int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags)
{
    if (link_refused(newpath))
        return -1;
    linkat_fn real = NULL;
    void *sym = dlsym(RTLD_NEXT, "linkat");
    memcpy(&real, &sym, sizeof real);
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real(olddirfd, oldpath, newdirfd, newpath, flags);
}

int rename(const char *oldpath, const char *newpath)
{
    static const char restoring[] = ".restoring";
    const char *mode = getenv("SCHAKEL_TEST_RENAME");
    size_t len = strlen(oldpath);
    if (mode != NULL && strcmp(mode, "kill-restoring") == 0 && len >= sizeof restoring - 1 &&
        strcmp(oldpath + len - (sizeof restoring - 1), restoring) == 0) {
        renamegate_note("renamegate.killed", oldpath);
        raise(SIGKILL);
    }
    rename_fn real = NULL;
    void *sym = dlsym(RTLD_NEXT, "rename");
    memcpy(&real, &sym, sizeof real);
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real(oldpath, newpath);
}
