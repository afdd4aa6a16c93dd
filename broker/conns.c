/*
 * conns.c — the router's connections by socket (see conns.h).
 *
 * Trusts the socket numbers of libzmq's connection events, and nothing a
 * client sends: a socket is shut down only while the kernel still names it
 * with the cookie read at its accept event.
 */
#include "conns.h"

#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>

#define CONNS_MAX_FD (1 << 24)

enum { CONN_UNKNOWN = 0, CONN_OPEN, CONN_CLOSED };

typedef struct conn {
    uint64_t cookie; /* SO_COOKIE at the accept event; 0: unknown, never shut down */
    int64_t used_ms; /* last frame served, or last seen receiving */
    uint8_t state;
    uint8_t shut; /* shut down by conns_close_idle, its close event not yet seen */
} conn_t;

struct conns {
    conn_t *by_fd;
    size_t len;
    size_t open;
};

conns_t *conns_new(void)
{
    return calloc(1, sizeof(conns_t));
}

void conns_destroy(conns_t **conns)
{
    if (conns == NULL || *conns == NULL)
        return;
    free((*conns)->by_fd);
    free(*conns);
    *conns = NULL;
}

/* The entry of `fd`, the table grown to hold it; NULL when fd is out of
 * range or memory is short. */
static conn_t *conns_slot(conns_t *c, int fd)
{
    if (fd < 0 || fd >= CONNS_MAX_FD)
        return NULL;
    size_t i = (size_t)fd;
    if (i >= c->len) {
        size_t len = i + 1 > 2 * c->len ? i + 1 : 2 * c->len;
        conn_t *grown = realloc(c->by_fd, len * sizeof *grown);
        if (grown == NULL)
            return NULL;
        memset(grown + c->len, 0, (len - c->len) * sizeof *grown);
        c->by_fd = grown;
        c->len = len;
    }
    return &c->by_fd[i];
}

static conn_t *conns_find(const conns_t *c, int fd)
{
    return fd >= 0 && (size_t)fd < c->len ? &c->by_fd[fd] : NULL;
}

static uint64_t socket_cookie(int fd)
{
    uint64_t cookie = 0;
    socklen_t len = sizeof cookie;
    if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) != 0 || len != sizeof cookie)
        return 0;
    return cookie;
}

void conns_opened(conns_t *c, int fd, int64_t now_ms)
{
    conn_t *conn = conns_slot(c, fd);
    if (conn == NULL)
        return; /* untracked: never shut down */
    if (conn->state != CONN_OPEN)
        c->open++;
    conn->state = CONN_OPEN;
    conn->cookie = socket_cookie(fd);
    conn->used_ms = now_ms;
    conn->shut = 0;
}

void conns_closed(conns_t *c, int fd)
{
    conn_t *conn = conns_slot(c, fd);
    if (conn == NULL)
        return; /* unmarked: a frame's session ends at the next event on its socket */
    if (conn->state == CONN_OPEN)
        c->open--;
    conn->state = CONN_CLOSED;
    conn->cookie = 0;
    conn->shut = 0;
}

int conns_is_closed(const conns_t *c, int fd)
{
    const conn_t *conn = conns_find(c, fd);
    return conn != NULL && conn->state == CONN_CLOSED;
}

void conns_used(conns_t *c, int fd, int64_t now_ms)
{
    conn_t *conn = conns_find(c, fd);
    if (conn != NULL && conn->state == CONN_OPEN && now_ms > conn->used_ms)
        conn->used_ms = now_ms;
}

size_t conns_close_idle(conns_t *c, int64_t now_ms, int64_t idle_ms)
{
    size_t shut = 0;
    for (size_t i = 0; i < c->len; i++) {
        conn_t *conn = &c->by_fd[i];
        if (conn->state != CONN_OPEN || conn->shut || conn->cookie == 0 ||
            now_ms - conn->used_ms <= idle_ms)
            continue;
        /* Still the socket of that accept event: not closed and reused by
         * a connection whose events are yet to be read. */
        if (socket_cookie((int)i) != conn->cookie)
            continue;
        if (shutdown((int)i, SHUT_RDWR) == 0) {
            conn->shut = 1;
            shut++;
        }
    }
    return shut;
}

size_t conns_open_count(const conns_t *c)
{
    return c->open;
}
