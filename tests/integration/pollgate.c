/*
 * pollgate.c — a shim for schakeld (LD_PRELOAD, tests only) that takes the
 * timeout out of its loop's wait.
 *
 * Wraps poll(2), which zmq_poll calls. While the file named by
 * SCHAKEL_TEST_POLL_GATE exists, a poll of the process's main thread (the
 * broker loop) with a timeout above 0 waits without one: only a ready
 * descriptor or a signal ends it. A loop that would see something only at
 * its next timeout then never sees it, so a test finds it out by the
 * broker not going on at all, not by how long it took. Each such poll
 * writes one line to stderr when it begins. Other threads' polls and
 * polls of timeout 0 go through unchanged. Trusts its environment.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The shim's own entry point; the process calls it in place of libc's. */
int poll(struct pollfd *fds, nfds_t nfds, int timeout);

typedef int (*poll_fn_t)(struct pollfd *, nfds_t, int);

static poll_fn_t real_poll;

/* Looked up once, at load, before any thread of the process runs. */
__attribute__((constructor)) static void pollgate_init(void)
{
    void *sym = dlsym(RTLD_NEXT, "poll");
    memcpy(&real_poll, &sym, sizeof real_poll); /* POSIX: a data pointer holds a function's */
}

static int pollgate_open(void)
{
    const char *path = getenv("SCHAKEL_TEST_POLL_GATE");
    return path != NULL && path[0] != '\0' && access(path, F_OK) == 0;
}

int poll(struct pollfd *fds, nfds_t nfds, int timeout)
{
    if (timeout > 0 && syscall(SYS_gettid) == getpid() && pollgate_open()) {
        static const char line[] = "event=pollgate.untimed\n";
        if (write(2, line, sizeof line - 1) < 0) {
            /* the log is gone: the test sees no line and fails on its own */
        }
        timeout = -1;
    }
    return real_poll(fds, nfds, timeout);
}
