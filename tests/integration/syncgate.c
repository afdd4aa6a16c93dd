/*
 * syncgate.c — a fault-injection shim for schakeld (LD_PRELOAD, tests only).
 *
 * Wraps fdatasync and fsync. While the file named by SCHAKEL_TEST_SYNC_FAIL
 * exists, each call fails with EIO without syncing; while the file named by
 * SCHAKEL_TEST_SYNC_FAIL_FOLDER exists, each call on a folder does. While
 * the file named by SCHAKEL_TEST_SYNC_GATE exists, each call waits (looking
 * every millisecond) and then syncs, or fails if the fail file exists by
 * then; when the gate file holds a number N, the process's first N calls
 * pass it and the later ones wait, so that a test lets one held call go on
 * by writing the next number (a program stepped from sync to sync). Each
 * held or failed call writes one line to stderr (the broker's log in the
 * harness, a tool's stderr), so a test can see a program reach a sync.
 * Trusts the environment it is given; never fails otherwise.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The shim's own entry points; the process calls them in place of libc's. */
int fdatasync(int fd);
int fsync(int fd);

static int syncgate_exists(const char *variable)
{
    const char *path = getenv(variable);
    return path != NULL && path[0] != '\0' && access(path, F_OK) == 0;
}

/* Whether the gate holds the call numbered `call` (1, 2, ...): its file
 * exists and holds no number of calls that may pass, or a smaller one. */
static int syncgate_closed(unsigned long call)
{
    const char *path = getenv("SCHAKEL_TEST_SYNC_GATE");
    if (path == NULL || path[0] == '\0')
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char text[32];
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    text[n > 0 ? n : 0] = '\0';
    return call > strtoul(text, NULL, 10);
}

/* One write per line, so that lines of several threads do not mix. */
static void syncgate_note(const char *event, const char *call, int fd)
{
    char line[128];
    int n = snprintf(line, sizeof line, "event=%s call=%s fd=%d\n", event, call, fd);
    if (n > 0 && (size_t)n < sizeof line && write(2, line, (size_t)n) < 0) {
        /* the log is gone: the test sees no line and fails on its own */
    }
}

/* 0: go on and sync; -1: fail this call (errno EIO). */
static int syncgate_pass(const char *call, int fd)
{
    static _Atomic unsigned long calls;
    unsigned long number = atomic_fetch_add(&calls, 1) + 1;
    int saved = errno;
    struct stat st;
    if (syncgate_exists("SCHAKEL_TEST_SYNC_FAIL") ||
        (syncgate_exists("SCHAKEL_TEST_SYNC_FAIL_FOLDER") && fstat(fd, &st) == 0 &&
         S_ISDIR(st.st_mode))) {
        syncgate_note("syncgate.failed", call, fd);
        errno = EIO;
        return -1;
    }
    if (syncgate_closed(number)) {
        syncgate_note("syncgate.held", call, fd);
        const struct timespec millisecond = {0, 1000000};
        while (syncgate_closed(number))
            nanosleep(&millisecond, NULL);
        syncgate_note("syncgate.released", call, fd);
        if (syncgate_exists("SCHAKEL_TEST_SYNC_FAIL")) { /* held, then failed */
            syncgate_note("syncgate.failed", call, fd);
            errno = EIO;
            return -1;
        }
    }
    errno = saved;
    return 0;
}

typedef int (*sync_fn_t)(int);

static sync_fn_t syncgate_next(const char *name)
{
    sync_fn_t next = NULL;
    void *sym = dlsym(RTLD_NEXT, name);
    memcpy(&next, &sym, sizeof next); /* POSIX: a data pointer holds a function's address */
    return next;
}

static sync_fn_t real_fdatasync, real_fsync;

/* Looked up once, at load, before any thread of the process runs. */
__attribute__((constructor)) static void syncgate_init(void)
{
    real_fdatasync = syncgate_next("fdatasync");
    real_fsync = syncgate_next("fsync");
}

static int syncgate_call(sync_fn_t real, const char *call, int fd)
{
    if (syncgate_pass(call, fd) != 0)
        return -1;
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real(fd);
}

int fdatasync(int fd)
{
    return syncgate_call(real_fdatasync, "fdatasync", fd);
}

int fsync(int fd)
{
    return syncgate_call(real_fsync, "fsync", fd);
}
