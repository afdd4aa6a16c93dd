/*
 * metrics_http.c — libmicrohttpd run on a thread of ours, with a deadline
 * on each connection (metrics_http.h).
 *
 * libmicrohttpd runs in "external" mode (epoll, no thread of its own) so
 * that between its rounds this file can close the connections it would
 * keep. Every callback runs on that one thread. A connection is only ever
 * shut down here (shutdown(2): libmicrohttpd then reads its end, closes it
 * and calls MHD_CONNECTION_NOTIFY_CLOSED), never closed, so its descriptor
 * cannot be reused under libmicrohttpd. Trusts nothing a client sends;
 * errors only at start.
 */
#include "metrics_http.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define METRICS_HTTP_TIMEOUT_S 3u        /* inactivity, libmicrohttpd's own: a backstop */
#define METRICS_HTTP_MEMORY (32u * 1024) /* a request's headers: larger ones get 431 */

/* One connection, between MHD_CONNECTION_NOTIFY_STARTED and _CLOSED. */
typedef struct metrics_http_conn {
    metrics_http_t *server;
    int used;
    int fd;              /* libmicrohttpd's: only shut down here */
    int64_t accepted_ms; /* monotonic */
    int answered;        /* its request was read whole */
    int cut;             /* shut down; libmicrohttpd closes it in a round */
} metrics_http_conn_t;

struct metrics_http {
    struct MHD_Daemon *daemon;
    int epoll_fd; /* libmicrohttpd's */
    int wake_fd;  /* eventfd: a write stops the thread; -1: none */
    pthread_t thread;
    int thread_started;
    unsigned port;
    /* The thread's own from its start. */
    metrics_http_conn_t conns[METRICS_HTTP_OPEN_MAX];
    metrics_http_cuts_t cuts;
};

static int64_t metrics_http_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void metrics_http_notify(void *cls, struct MHD_Connection *connection, void **socket_context,
                                enum MHD_ConnectionNotificationCode code)
{
    metrics_http_t *h = cls;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        metrics_http_conn_t *c = *socket_context;
        if (c != NULL)
            memset(c, 0, sizeof *c);
        *socket_context = NULL;
        return;
    }
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    *socket_context = NULL;
    for (size_t i = 0; info != NULL && i < METRICS_HTTP_OPEN_MAX; i++) {
        metrics_http_conn_t *c = &h->conns[i];
        if (c->used)
            continue;
        *c = (metrics_http_conn_t){
            .server = h, .used = 1, .fd = info->connect_fd, .accepted_ms = metrics_http_now_ms()};
        *socket_context = c;
        return;
    }
    /* Defensive: libmicrohttpd holds at most METRICS_HTTP_OPEN_MAX, and
     * knows each one's socket. Untracked, it would have no deadline. */
    if (info != NULL)
        shutdown(info->connect_fd, SHUT_RDWR);
}

static metrics_http_conn_t *metrics_http_conn_of(struct MHD_Connection *connection)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info != NULL ? info->socket_context : NULL;
}

void metrics_http_answered(struct MHD_Connection *connection)
{
    metrics_http_conn_t *c = metrics_http_conn_of(connection);
    if (c != NULL)
        c->answered = 1;
}

metrics_http_cuts_t metrics_http_cut_counts(struct MHD_Connection *connection)
{
    const metrics_http_conn_t *c = metrics_http_conn_of(connection);
    return c != NULL ? c->server->cuts : (metrics_http_cuts_t){0};
}

static void metrics_http_cut(metrics_http_conn_t *c)
{
    shutdown(c->fd, SHUT_RDWR);
    c->cut = 1;
}

/* After each round: cut every connection past its deadline, then, while
 * more than METRICS_HTTP_CONNECTIONS are left, the oldest that has not sent
 * its request whole (a scraper's comes with its connect: the oldest
 * waiting are the slow). O(METRICS_HTTP_OPEN_MAX) a pass. Returns the
 * milliseconds until the next deadline, or -1 if none is open. */
static int metrics_http_sweep(metrics_http_t *h)
{
    int64_t now = metrics_http_now_ms(), next = -1;
    size_t left = 0;
    for (size_t i = 0; i < METRICS_HTTP_OPEN_MAX; i++) {
        metrics_http_conn_t *c = &h->conns[i];
        if (!c->used || c->cut)
            continue;
        if (now - c->accepted_ms >= METRICS_HTTP_DEADLINE_MS) {
            metrics_http_cut(c);
            h->cuts.deadline++;
        } else
            left++;
    }
    while (left > METRICS_HTTP_CONNECTIONS) {
        metrics_http_conn_t *oldest = NULL;
        for (size_t i = 0; i < METRICS_HTTP_OPEN_MAX; i++) {
            metrics_http_conn_t *c = &h->conns[i];
            if (c->used && !c->cut && !c->answered &&
                (oldest == NULL || c->accepted_ms < oldest->accepted_ms))
                oldest = c;
        }
        if (oldest == NULL)
            break; /* all are being answered: they end by themselves */
        metrics_http_cut(oldest);
        h->cuts.crowded++;
        left--;
    }
    for (size_t i = 0; i < METRICS_HTTP_OPEN_MAX; i++) {
        const metrics_http_conn_t *c = &h->conns[i];
        if (c->used && !c->cut && (next < 0 || c->accepted_ms + METRICS_HTTP_DEADLINE_MS < next))
            next = c->accepted_ms + METRICS_HTTP_DEADLINE_MS;
    }
    return next < 0 ? -1 : (int)(next > now ? next - now : 0);
}

/* Wait on libmicrohttpd's epoll descriptor and the stop eventfd, no longer
 * than libmicrohttpd asks and than the next deadline; run a round; sweep. */
static void *metrics_http_run(void *arg)
{
    metrics_http_t *h = arg;
    int wait_ms = -1; /* the next deadline's */
    /* named for top -H, core dumps and sanitizer reports (15 bytes at most) */
    (void)prctl(PR_SET_NAME, "schakel-metrics", 0, 0, 0);
    for (;;) {
        MHD_UNSIGNED_LONG_LONG mhd_ms = 0;
        if (MHD_get_timeout(h->daemon, &mhd_ms) == MHD_YES &&
            (wait_ms < 0 || mhd_ms < (MHD_UNSIGNED_LONG_LONG)wait_ms))
            wait_ms = mhd_ms < METRICS_HTTP_DEADLINE_MS ? (int)mhd_ms : METRICS_HTTP_DEADLINE_MS;
        struct pollfd fds[2] = {{.fd = h->epoll_fd, .events = POLLIN},
                                {.fd = h->wake_fd, .events = POLLIN}};
        /* Signals are blocked on this thread and the descriptors are ours:
         * a failure (ENOMEM) is taken as a timeout. */
        (void)poll(fds, 2, wait_ms);
        if (fds[1].revents != 0)
            return NULL;
        MHD_run(h->daemon);
        wait_ms = metrics_http_sweep(h);
    }
}

/* The thread inherits our signal mask: block everything while it is
 * created, so SIGTERM and SIGHUP always reach the broker thread (whose
 * zmq_poll must see EINTR). */
static int metrics_http_start_thread(metrics_http_t *h)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&h->thread, NULL, metrics_http_run, h);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    h->thread_started = rc == 0;
    return rc;
}

metrics_http_t *metrics_http_start(const struct sockaddr *addr, MHD_AccessHandlerCallback answer,
                                   void *cls, char *err, size_t errlen)
{
    metrics_http_t *h = calloc(1, sizeof *h);
    if (h == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->wake_fd = -1;
    unsigned flags = MHD_USE_EPOLL; /* no thread of libmicrohttpd's: metrics_http_run */
    if (addr->sa_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    errno = 0;
    h->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, answer, cls, MHD_OPTION_SOCK_ADDR, addr, MHD_OPTION_CONNECTION_LIMIT,
        METRICS_HTTP_OPEN_MAX, MHD_OPTION_CONNECTION_TIMEOUT, METRICS_HTTP_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)METRICS_HTTP_MEMORY,
        MHD_OPTION_NOTIFY_CONNECTION, metrics_http_notify, h, MHD_OPTION_END);
    if (h->daemon == NULL) {
        snprintf(err, errlen, "%s", errno ? strerror(errno) : "libmicrohttpd failed to start");
        metrics_http_stop(&h);
        return NULL;
    }
    const union MHD_DaemonInfo *port = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    const union MHD_DaemonInfo *epoll = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    h->port = port != NULL ? port->port : 0;
    h->epoll_fd = epoll != NULL ? epoll->epoll_fd : -1;
    int rc = 0;
    if (h->port == 0 || h->epoll_fd < 0)
        snprintf(err, errlen, "libmicrohttpd reports no port or no epoll descriptor");
    else if ((h->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
    else if ((rc = metrics_http_start_thread(h)) != 0)
        snprintf(err, errlen, "cannot start its thread: %s", strerror(rc));
    if (!h->thread_started) {
        metrics_http_stop(&h);
        return NULL;
    }
    return h;
}

void metrics_http_stop(metrics_http_t **hp)
{
    if (hp == NULL || *hp == NULL)
        return;
    metrics_http_t *h = *hp;
    if (h->thread_started) {
        uint64_t one = 1;
        if (write(h->wake_fd, &one, sizeof one) != (ssize_t)sizeof one)
            abort(); /* an eventfd written once cannot be full */
        pthread_join(h->thread, NULL);
    }
    if (h->daemon != NULL)
        MHD_stop_daemon(h->daemon); /* closes every connection */
    if (h->wake_fd >= 0)
        close(h->wake_fd);
    free(h);
    *hp = NULL;
}

unsigned metrics_http_port(const metrics_http_t *h)
{
    return h->port;
}
