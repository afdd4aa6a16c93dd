/*
 * signals.c — the daemon's signal handlers and the eventfd that wakes the
 * broker loop (signals.h).
 *
 * A handler does two async-signal-safe things: set its flag, then write 1
 * to the eventfd (errno kept). The eventfd is opened before the handlers
 * are installed and never closed, so a handler never writes to a
 * descriptor that is gone or reused. Errors: only signals_install, when
 * the eventfd cannot be made.
 */
#include "signals.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Stops asked, counted up to 2 (a second one cuts the stop's last wait
 * short). Only the handlers write it, one at a time (sa_mask) and on the
 * main thread (the broker's threads and libzmq's block every signal); the
 * loop only reads it: the increment is not raced. */
static volatile sig_atomic_t stops_asked;
static volatile sig_atomic_t reload_asked;
/* Set before the handlers are installed, never changed after. */
static volatile sig_atomic_t wake_fd = -1;

/* A write that fails leaves the eventfd as it was: readable already (its
 * counter cannot reach its maximum one at a time), or closed, which it
 * never is. */
static void signals_wake(void)
{
    int saved = errno;
    uint64_t one = 1;
    if (wake_fd >= 0 && write(wake_fd, &one, sizeof one) != (ssize_t)sizeof one) {
        /* see above: nothing left to do in a handler */
    }
    errno = saved;
}

void signals_request_stop(void)
{
    if (stops_asked < 2)
        stops_asked = stops_asked + 1;
    signals_wake();
}

void signals_request_reload(void)
{
    reload_asked = 1;
    signals_wake();
}

static void signals_on_stop(int sig)
{
    (void)sig;
    signals_request_stop();
}

static void signals_on_reload(int sig)
{
    (void)sig;
    signals_request_reload();
}

int signals_install(char *err, size_t errlen)
{
    if (wake_fd < 0) {
        int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (fd < 0) {
            snprintf(err, errlen, "cannot make the eventfd that wakes the loop: %s",
                     strerror(errno));
            return -1;
        }
        wake_fd = fd;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigfillset(&sa.sa_mask); /* one handler at a time: errno is saved once */
    /* No SA_RESTART: a signal in zmq_poll ends it with EINTR. */
    sa.sa_handler = signals_on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = signals_on_reload;
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    /* Over a file-size limit, a write must fail (EFBIG -> the store reports
     * a storage condition, publishes get UNAVAILABLE), not kill us. */
    sigaction(SIGXFSZ, &sa, NULL);
    return 0;
}

int signals_stop_requested(void)
{
    return stops_asked != 0;
}

int signals_stop_repeated(void)
{
    return stops_asked >= 2;
}

/* A SIGHUP between the test and the clear is taken with this reload, which
 * reads the policy file after it. */
int signals_reload_take(void)
{
    if (!reload_asked)
        return 0;
    reload_asked = 0;
    return 1;
}

int signals_wake_fd(void)
{
    return wake_fd;
}

void signals_wake_drain(void)
{
    uint64_t count;
    if (wake_fd >= 0 && read(wake_fd, &count, sizeof count) < 0) {
        /* EAGAIN: already empty */
    }
}
