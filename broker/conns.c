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
#include <unistd.h>

#define CONNS_MAX_FD (1 << 24)

enum { CONN_UNKNOWN = 0, CONN_OPEN, CONN_CLOSED };

typedef struct conn {
    uint64_t cookie;    /* SO_COOKIE at the accept event; 0: unknown, never shut down */
    uint64_t principal; /* hash of the principal it served frames of; 0: none yet */
    int64_t used_ms;    /* the accept, then the last frame served or seen receiving */
    uint8_t state;
    uint8_t shut;    /* shut down by conns_close_idle, its close event not yet seen */
    uint8_t revoked; /* its key was revoked at used_ms: closed idle_ms later */
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

int conns_cookies_supported(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int supported = socket_cookie(fd) != 0;
    close(fd);
    return supported;
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
    conn->principal = 0;
    conn->used_ms = now_ms;
    conn->shut = 0;
    conn->revoked = 0;
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
    conn->revoked = 0;
}

int conns_is_closed(const conns_t *c, int fd)
{
    const conn_t *conn = conns_find(c, fd);
    return conn != NULL && conn->state == CONN_CLOSED;
}

/* FNV-1a: principals are the policy's ids, not chosen by a peer; a
 * collision would only count two principals' connections together. Never
 * 0, which means "no frame served yet". */
static uint64_t conns_principal_hash(const char *principal)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (const unsigned char *p = (const unsigned char *)principal; *p != '\0'; p++)
        h = (h ^ *p) * 0x100000001b3u;
    return h != 0 ? h : 1;
}

void conns_used(conns_t *c, int fd, int64_t now_ms, const char *principal)
{
    conn_t *conn = conns_find(c, fd);
    if (conn == NULL || conn->state != CONN_OPEN)
        return;
    if (now_ms > conn->used_ms)
        conn->used_ms = now_ms;
    conn->principal = conns_principal_hash(principal);
    conn->revoked = 0; /* a reload gave its key back */
}

void conns_revoked(conns_t *c, int fd, int64_t now_ms)
{
    conn_t *conn = conns_find(c, fd);
    if (conn == NULL || conn->state != CONN_OPEN || conn->revoked)
        return;
    conn->revoked = 1;
    conn->used_ms = now_ms;
}

/* Shut down the connection on socket i if it still is the one accepted
 * there (its cookie). Returns 1 when shut down. */
static int conns_shut(conns_t *c, size_t i)
{
    conn_t *conn = &c->by_fd[i];
    if (socket_cookie((int)i) != conn->cookie || shutdown((int)i, SHUT_RDWR) != 0)
        return 0;
    conn->shut = 1;
    return 1;
}

static int conns_live(const conn_t *conn)
{
    return conn->state == CONN_OPEN && !conn->shut && conn->cookie != 0;
}

typedef struct conns_ranked {
    uint64_t principal;
    int64_t used_ms;
    size_t fd;
} conns_ranked_t;

/* By principal (0: the silent ones); the silent oldest first (the
 * allowance keeps those that waited longest), the others most recently
 * used first (their cap keeps the busy ones). */
static int conns_rank_order(const void *a, const void *b)
{
    const conns_ranked_t *x = a, *y = b;
    if (x->principal != y->principal)
        return x->principal < y->principal ? -1 : 1;
    if (x->used_ms != y->used_ms)
        return (x->used_ms < y->used_ms) == (x->principal == 0) ? -1 : 1;
    return x->fd < y->fd ? -1 : x->fd > y->fd;
}

/* (a) and (b): the silent connections beyond the allowance, and each
 * principal's beyond its cap, once unused long enough. Without memory for
 * the ranking, nothing this pass. */
static size_t conns_close_ranked(conns_t *c, int64_t now_ms, const conns_limits_t *lim)
{
    size_t n = 0, silent = 0;
    for (size_t i = 0; i < c->len; i++) {
        const conn_t *conn = &c->by_fd[i];
        if (conns_live(conn) && !conn->revoked) {
            n++;
            silent += conn->principal == 0;
        }
    }
    if (silent <= lim->max_silent && n - silent <= lim->max_per_principal)
        return 0; /* no group can be over its limit */
    conns_ranked_t *ranked = malloc(n * sizeof *ranked);
    if (ranked == NULL)
        return 0;
    size_t k = 0;
    for (size_t i = 0; i < c->len; i++) {
        const conn_t *conn = &c->by_fd[i];
        if (conns_live(conn) && !conn->revoked)
            ranked[k++] = (conns_ranked_t){conn->principal, conn->used_ms, i};
    }
    qsort(ranked, n, sizeof *ranked, conns_rank_order);
    size_t shut = 0, rank = 0;
    for (size_t i = 0; i < n; i++) {
        rank = i > 0 && ranked[i].principal == ranked[i - 1].principal ? rank + 1 : 0;
        int is_silent = ranked[i].principal == 0;
        size_t max = is_silent ? lim->max_silent : lim->max_per_principal;
        int64_t unused = is_silent ? lim->idle_ms : lim->quiet_ms;
        if (rank >= max && now_ms - ranked[i].used_ms > unused)
            shut += (size_t)conns_shut(c, ranked[i].fd);
    }
    free(ranked);
    return shut;
}

size_t conns_close_idle(conns_t *c, int64_t now_ms, const conns_limits_t *lim)
{
    size_t shut = 0;
    for (size_t i = 0; i < c->len; i++) {
        const conn_t *conn = &c->by_fd[i];
        if (conns_live(conn) && conn->revoked && now_ms - conn->used_ms > lim->idle_ms)
            shut += (size_t)conns_shut(c, i);
    }
    return shut + conns_close_ranked(c, now_ms, lim);
}

size_t conns_open_count(const conns_t *c)
{
    return c->open;
}
