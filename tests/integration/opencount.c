/*
 * opencount.c — says each time the program opens a file of a given name
 * to read it (LD_PRELOAD, tests only).
 *
 * Wraps openat. When SCHAKEL_TEST_OPENCOUNT names a file (its last name:
 * "policy.yaml"), each call that opens a file of that last name other than
 * with O_PATH (the loaders open the folders on the way, and look at a name
 * before they read it, with O_PATH) writes one line
 * "event=opencount.opened name=NAME" to stderr, which for schakeld is its
 * log: test_reload counts how often a reload reads the policy. Unset:
 * libc's openat, nothing written. Trusts the environment it is given;
 * never fails otherwise.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/types.h>
#include <unistd.h>

/* The shim's own entry point; the process calls it in place of libc's. */
int openat(int dirfd, const char *path, int flags, ...);

typedef int (*openat_fn)(int, const char *, int, ...);

static void opencount_note(const char *name)
{
    char line[512];
    int n = snprintf(line, sizeof line, "event=opencount.opened name=%s\n", name);
    if (n > 0 && (size_t)n < sizeof line && write(2, line, (size_t)n) < 0) {
        /* stderr is gone: the test sees no line and fails on its own */
    }
}

int openat(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    if ((flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE) {
        va_list args;
        va_start(args, flags);
        mode = (mode_t)va_arg(args, int);
        va_end(args);
    }
    openat_fn real = (openat_fn)(uintptr_t)dlsym(RTLD_NEXT, "openat");
    const char *watched = getenv("SCHAKEL_TEST_OPENCOUNT");
    if (watched != NULL && (flags & O_PATH) == 0) {
        const char *slash = strrchr(path, '/');
        if (strcmp(slash != NULL ? slash + 1 : path, watched) == 0)
            opencount_note(watched);
    }
    return real(dirfd, path, flags, mode);
}
