/*
 * conns.c — the router's connections by socket (see conns.h).
 *
 * Trusts the socket numbers of libzmq's connection events, and nothing a
 * client sends: a socket is shut down only while the kernel still names it
 * with the cookie read at its accept event.
 */
#include "conns.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONNS_MAX_FD (1 << 24)

enum { CONN_UNKNOWN = 0, CONN_OPEN, CONN_CLOSED };

typedef struct conn {
    uint64_t cookie;    /* SO_COOKIE at the accept event; 0: unknown, never shut down */
    uint64_t address;   /* hash of the peer's address (not its port) */
    uint64_t principal; /* hash of the principal it served frames of; 0: none yet */
    uint64_t key;       /* hash of the key (Z85) those frames were authenticated with */
    int64_t used_ms;    /* the accept, then the last frame served or seen receiving */
    uint8_t state;
    uint8_t shut;    /* shut down by conns_close_idle, its close event not yet seen */
    uint8_t revoked; /* its key was revoked at used_ms: closed idle_ms later */
    uint8_t claim;   /* a session on it holds a Flow: until the next pass (conns_claimed) */
    uint32_t flow_window; /* the Flow kept with it when its session ended ... */
    uint64_t flow_order;  /* ... and its order among the principal's Flows; 0: none */
    uint64_t taken;       /* wire bytes of the messages the broker took from it */
    int64_t read_snap;    /* bytes libzmq had read from it at the pass's snapshot */
    int64_t commands;     /* at most this many bytes read from it were no frames ... */
    int64_t commands_ms;  /* ... as of this time (conns_held_check) */
    uint8_t snapped;      /* read_snap is the pass's (conns_held_snapshot) */
    uint64_t taken_since; /* messages the broker took from it since the snapshot */
    uint64_t routing;     /* hash of the routing id last taken from it; 0: none */
    uint64_t routing_prev; /* the same of the connection closed on its number before */
} conn_t;

struct conns {
    conn_t *by_fd;
    size_t len;
    size_t open;
    int64_t snapshot_ms;  /* the pass's snapshot; 0: none waits for its check */
    uint64_t most_since;  /* messages the broker took since it from one connection, at most */
    size_t kept_flows; /* entries with a flow_order (only open ones have one) */
};

/* Set or clear (order 0) the Flow kept with a connection: the one place
 * flow_order changes, so that kept_flows counts the entries with one. */
static void conn_set_flow(conns_t *c, conn_t *conn, uint64_t order, uint32_t window)
{
    if (conn->flow_order != 0)
        c->kept_flows--;
    if (order != 0)
        c->kept_flows++;
    conn->flow_order = order;
    conn->flow_window = window;
}

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

/* FNV-1a over bytes: principals and keys are the policy's, addresses the
 * kernel's; a collision would only count two of them together. Never 0,
 * which means "none". */
static uint64_t conns_hash(const void *data, size_t len)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ ((const unsigned char *)data)[i]) * 0x100000001b3u;
    return h != 0 ? h : 1;
}

uint64_t conns_identity_hash(const char *text)
{
    return conns_hash(text, strlen(text));
}

/* The peer's address without its port: the connections of one client
 * host (or one NAT) share it. */
static uint64_t peer_address(int fd)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    memset(&addr, 0, sizeof addr);
    if (getpeername(fd, (struct sockaddr *)&addr, &len) != 0)
        return 1;
    if (addr.ss_family == AF_INET)
        return conns_hash(&((struct sockaddr_in *)&addr)->sin_addr, sizeof(struct in_addr));
    if (addr.ss_family == AF_INET6)
        return conns_hash(&((struct sockaddr_in6 *)&addr)->sin6_addr, sizeof(struct in6_addr));
    return 1; /* another family (a test's socketpair): one address */
}

void conns_opened(conns_t *c, int fd, int64_t now_ms)
{
    conn_t *conn = conns_slot(c, fd);
    if (conn == NULL)
        return; /* untracked: never shut down */
    if (conn->state != CONN_OPEN)
        c->open++;
    conn_set_flow(c, conn, 0, 0); /* nothing kept of an earlier one on the number */
    conn->state = CONN_OPEN;
    conn->cookie = socket_cookie(fd);
    conn->address = peer_address(fd);
    conn->principal = 0;
    conn->key = 0;
    conn->used_ms = now_ms;
    conn->shut = 0;
    conn->revoked = 0;
    conn->claim = 0;
    conn->taken = 0;
    conn->commands = 0; /* the handshake counts as held until the first pass */
    conn->commands_ms = now_ms;
    conn->snapped = 0;
    conn->taken_since = 0;
    conn->routing_prev = conn->routing; /* 0 for a number not used before */
    conn->routing = 0;
}

void conns_closed(conns_t *c, int fd)
{
    conn_t *conn = conns_slot(c, fd);
    if (conn == NULL)
        return; /* unmarked: a frame's session ends at the next event on its socket */
    if (conn->state == CONN_OPEN)
        c->open--;
    conn_set_flow(c, conn, 0, 0);
    conn->state = CONN_CLOSED;
    conn->cookie = 0;
    conn->shut = 0;
    conn->revoked = 0;
    conn->claim = 0;
    conn->snapped = 0;
}

int conns_is_closed(const conns_t *c, int fd)
{
    const conn_t *conn = conns_find(c, fd);
    return conn != NULL && conn->state == CONN_CLOSED;
}

void conns_used(conns_t *c, int fd, int64_t now_ms, const char *principal, const char *key)
{
    conn_t *conn = conns_find(c, fd);
    if (conn == NULL || conn->state != CONN_OPEN)
        return;
    if (now_ms > conn->used_ms)
        conn->used_ms = now_ms;
    conn->principal = conns_identity_hash(principal);
    conn->key = conns_identity_hash(key);
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

void conns_keep_flow(conns_t *c, int fd, uint64_t order, uint32_t window)
{
    conn_t *conn = conns_find(c, fd);
    if (conn == NULL || conn->state != CONN_OPEN || order == 0)
        return;
    conn_set_flow(c, conn, order, window);
}

int conns_take_flow(conns_t *c, int fd, uint64_t *order, uint32_t *window)
{
    conn_t *conn = conns_find(c, fd);
    if (conn == NULL || conn->state != CONN_OPEN || conn->flow_order == 0)
        return 0;
    *order = conn->flow_order;
    *window = conn->flow_window;
    conn_set_flow(c, conn, 0, 0);
    return 1;
}

void conns_claimed(conns_t *c, int fd)
{
    conn_t *conn = conns_find(c, fd);
    if (conn != NULL && conn->state == CONN_OPEN)
        conn->claim = 1;
}

size_t conns_kept_claims(const conns_t *c, const char *principal)
{
    if (c->kept_flows == 0)
        return 0; /* the usual case: no scan */
    uint64_t id = conns_identity_hash(principal);
    size_t kept = 0;
    for (size_t i = 0; i < c->len; i++) {
        const conn_t *conn = &c->by_fd[i];
        kept += conn->state == CONN_OPEN && conn->flow_order != 0 && !conn->revoked &&
                conn->principal == id;
    }
    return kept;
}

int conns_identity_order(const void *a, const void *b)
{
    const conns_identity_t *x = a, *y = b;
    if (x->principal != y->principal)
        return x->principal < y->principal ? -1 : 1;
    return x->key < y->key ? -1 : x->key > y->key;
}

size_t conns_revoke_unregistered(conns_t *c, int64_t now_ms, conns_identity_t *registered, size_t n)
{
    if (n > 1)
        qsort(registered, n, sizeof *registered, conns_identity_order);
    size_t revoked = 0;
    for (size_t i = 0; i < c->len; i++) {
        conn_t *conn = &c->by_fd[i];
        if (conn->state != CONN_OPEN || conn->principal == 0)
            continue;
        conns_identity_t id = {conn->principal, conn->key};
        if (n > 0 &&
            bsearch(&id, registered, n, sizeof *registered, conns_identity_order) != NULL) {
            conn->revoked = 0; /* a later reload gave the pair back */
            continue;
        }
        if (!conn->revoked) {
            conn->revoked = 1;
            conn->used_ms = now_ms;
            revoked++;
        }
    }
    return revoked;
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
    uint64_t group; /* the principal (served frames), or the peer address (silent) */
    int64_t used_ms;
    size_t fd;
    int claim; /* holds a claim to receive (never for silent ones) */
} conns_ranked_t;

/* By group, then oldest first: a host keeps the silent connections that
 * waited longest. */
static int conns_rank_oldest(const void *a, const void *b)
{
    const conns_ranked_t *x = a, *y = b;
    if (x->group != y->group)
        return x->group < y->group ? -1 : 1;
    if (x->used_ms != y->used_ms)
        return x->used_ms < y->used_ms ? -1 : 1;
    return x->fd < y->fd ? -1 : x->fd > y->fd;
}

/* By group, then those that hold a claim to receive, then most recently
 * used first: a principal keeps its receiving connection (used now) and
 * its standbys, then its busy connections. A standby's client whose
 * connection is closed reconnects and sends Flow again, and the last Flow
 * moves receiving (PROTOCOL.md 7.8): closing standbys while connections
 * that hold no claim stay would move it back and forth, each time sending
 * everything unacked again. */
static int conns_rank_newest(const void *a, const void *b)
{
    const conns_ranked_t *x = a, *y = b;
    if (x->group != y->group)
        return x->group < y->group ? -1 : 1;
    if (x->claim != y->claim)
        return x->claim ? -1 : 1;
    if (x->used_ms != y->used_ms)
        return x->used_ms > y->used_ms ? -1 : 1;
    return x->fd < y->fd ? -1 : x->fd > y->fd;
}

/* Whether the live connection conn is one conns_rank takes: silent (or,
 * !silent, has served frames), not revoked, and (silent) older than
 * older_ms: younger ones cannot be closed yet, and must not shrink the
 * share of those that can (a handshake in progress is silent too). */
static int conns_rankable(const conn_t *conn, int silent, int64_t now_ms, int64_t older_ms)
{
    return conns_live(conn) && !conn->revoked && (conn->principal == 0) == silent &&
           (!silent || now_ms - conn->used_ms > older_ms);
}

/* Those connections, ranked by `order`; NULL when there are none or
 * memory is short. */
static conns_ranked_t *conns_rank(const conns_t *c, int silent, int64_t now_ms, int64_t older_ms,
                                  int (*order)(const void *, const void *), size_t *n_out)
{
    size_t n = 0;
    for (size_t i = 0; i < c->len; i++)
        n += conns_rankable(&c->by_fd[i], silent, now_ms, older_ms);
    *n_out = n;
    conns_ranked_t *ranked = n > 0 ? malloc(n * sizeof *ranked) : NULL;
    if (ranked == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < c->len; i++) {
        const conn_t *conn = &c->by_fd[i];
        if (conns_rankable(conn, silent, now_ms, older_ms))
            ranked[k++] = (conns_ranked_t){silent ? conn->address : conn->principal, conn->used_ms,
                                           i, !silent && (conn->claim || conn->flow_order != 0)};
    }
    if (n > 1)
        qsort(ranked, n, sizeof *ranked, order);
    return ranked;
}

/* Oldest first, whatever the group. */
static int conns_rank_age(const void *a, const void *b)
{
    const conns_ranked_t *x = a, *y = b;
    if (x->used_ms != y->used_ms)
        return x->used_ms < y->used_ms ? -1 : 1;
    return x->fd < y->fd ? -1 : x->fd > y->fd;
}

/* How many silent connections each address may keep: the largest share
 * q with sum over addresses of min(held, q) within max. One host that
 * opens many cannot push out the few of the others. */
static size_t conns_silent_share(const conns_ranked_t *ranked, size_t n, size_t max)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t q = lo + (hi - lo + 1) / 2, kept = 0, run = 0;
        for (size_t i = 0; i < n; i++) {
            run = i > 0 && ranked[i].group == ranked[i - 1].group ? run + 1 : 0;
            kept += run < q;
        }
        if (kept <= max)
            lo = q;
        else
            hi = q - 1;
    }
    return lo;
}

/* (a): of the silent connections older than idle_ms, each address keeps
 * its oldest up to the share; the slots the share leaves of the allowance
 * go to the oldest of the rest, whatever their address (more addresses
 * than the allowance: a share of 0), and the others are shut down. Without
 * memory, nothing now. */
static size_t conns_close_silent(conns_t *c, int64_t now_ms, const conns_limits_t *lim)
{
    size_t n = 0;
    conns_ranked_t *ranked = conns_rank(c, 1, now_ms, lim->idle_ms, conns_rank_oldest, &n);
    if (ranked == NULL || n <= lim->max_silent) {
        free(ranked);
        return 0;
    }
    size_t share = conns_silent_share(ranked, n, lim->max_silent), kept = 0, beyond = 0;
    uint64_t group = 0;
    for (size_t i = 0, rank = 0; i < n; i++) {
        rank = i > 0 && ranked[i].group == group ? rank + 1 : 0;
        group = ranked[i].group;
        if (rank < share)
            kept++;
        else
            ranked[beyond++] = ranked[i]; /* beyond <= i: nothing unread is overwritten */
    }
    if (beyond > 1)
        qsort(ranked, beyond, sizeof *ranked, conns_rank_age);
    size_t shut = 0;
    for (size_t i = lim->max_silent - kept; i < beyond; i++)
        shut += (size_t)conns_shut(c, ranked[i].fd);
    free(ranked);
    return shut;
}

/* (b): beyond a principal's `max_per_principal` connections, those that
 * hold a claim first and then the most recently used, those quiet for
 * quiet_ms. Without memory, nothing now. */
static size_t conns_close_over_cap(conns_t *c, int64_t now_ms, const conns_limits_t *lim)
{
    size_t n = 0;
    conns_ranked_t *ranked = conns_rank(c, 0, now_ms, 0, conns_rank_newest, &n);
    if (ranked == NULL || n <= lim->max_per_principal) {
        free(ranked);
        return 0;
    }
    size_t shut = 0, rank = 0;
    for (size_t i = 0; i < n; i++) {
        rank = i > 0 && ranked[i].group == ranked[i - 1].group ? rank + 1 : 0;
        if (rank >= lim->max_per_principal && now_ms - ranked[i].used_ms > lim->quiet_ms)
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
    shut += conns_close_silent(c, now_ms, lim);
    shut += conns_close_over_cap(c, now_ms, lim);
    for (size_t i = 0; i < c->len; i++)
        c->by_fd[i].claim = 0; /* marked again before the next pass */
    return shut;
}

size_t conns_open_count(const conns_t *c)
{
    return c->open;
}

/* ------------------------------------------------- unfinished messages */

uint64_t conns_frame_wire_bytes(size_t len)
{
    uint64_t body = (uint64_t)len + 33; /* "\x07MESSAGE", nonce, MAC, flags */
    return body + (body <= 255 ? 2 : 9);
}

void conns_took(conns_t *c, int fd, const void *routing, size_t routing_len, uint64_t wire_bytes)
{
    conn_t *conn = conns_find(c, fd);
    if (conn == NULL || conn->state != CONN_OPEN)
        return;
    if (routing != NULL) {
        uint64_t id = conns_hash(routing, routing_len);
        if (id == conn->routing_prev)
            return; /* the closed connection's, not this one's */
        conn->routing = id;
    }
    conn->taken += wire_bytes;
    if (++conn->taken_since > c->most_since)
        c->most_since = conn->taken_since;
}

/* What libzmq has read from the socket on fd, while it still is the
 * connection accepted there: the kernel's count of bytes received less
 * those still in its receive queue, two calls apart. Bytes that arrive
 * between them count in the second only: read first (`low`), the count
 * received finds at most what libzmq has read; read second, at least. -1
 * when it cannot be read (no TCP, a kernel before 4.1, another socket on
 * the number). */
static int64_t conns_read_bytes(const conn_t *conn, int fd, int low)
{
    struct tcp_info info;
    socklen_t len = sizeof info;
    int queued = 0;
    memset(&info, 0, sizeof info);
    if (socket_cookie(fd) != conn->cookie || (!low && ioctl(fd, SIOCINQ, &queued) != 0) ||
        getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof info.tcpi_bytes_received ||
        (low && ioctl(fd, SIOCINQ, &queued) != 0) || queued < 0 ||
        info.tcpi_bytes_received > (uint64_t)INT64_MAX)
        return -1;
    return (int64_t)info.tcpi_bytes_received - queued;
}

void conns_held_snapshot(conns_t *c, int64_t now_ms)
{
    c->most_since = 0;
    for (size_t i = 0; i < c->len; i++) {
        conn_t *conn = &c->by_fd[i];
        conn->snapped = 0;
        conn->taken_since = 0;
        if (!conns_live(conn))
            continue;
        conn->read_snap = conns_read_bytes(conn, (int)i, 1);
        conn->snapped = conn->read_snap >= 0;
    }
    c->snapshot_ms = now_ms > 0 ? now_ms : 1;
}

int conns_held_pending(const conns_t *c)
{
    return c->snapshot_ms != 0;
}

int conns_held_settled(const conns_t *c, size_t per_connection)
{
    return c->snapshot_ms != 0 && c->most_since >= 2 * (uint64_t)per_connection;
}

/* The peer's address as text: "unknown" when it cannot be read. */
static void peer_text(int fd, char *out, socklen_t len)
{
    struct sockaddr_storage addr;
    socklen_t addr_len = sizeof addr;
    memset(&addr, 0, sizeof addr);
    const char *text = NULL;
    if (getpeername(fd, (struct sockaddr *)&addr, &addr_len) == 0) {
        if (addr.ss_family == AF_INET)
            text = inet_ntop(AF_INET, &((struct sockaddr_in *)&addr)->sin_addr, out, len);
        else if (addr.ss_family == AF_INET6)
            text = inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&addr)->sin6_addr, out, len);
    }
    if (text == NULL)
        snprintf(out, len, "unknown");
}

/* The most command bytes the connection can have sent by at_ms, within
 * the allowance's cap. */
static int64_t conns_commands_by(const conn_t *conn, int64_t at_ms, const conns_held_limits_t *lim)
{
    int64_t ms = at_ms > conn->commands_ms ? at_ms - conn->commands_ms : 0;
    int64_t by = conn->commands + ms * (int64_t)lim->command_bytes_per_s / 1000;
    if (lim->command_bytes_max > 0 && by > (int64_t)lim->command_bytes_max)
        by = (int64_t)lim->command_bytes_max;
    return by;
}

size_t conns_held_check(conns_t *c, int64_t now_ms, const conns_held_limits_t *lim,
                        conns_held_cut_fn cut, void *arg)
{
    size_t n = 0;
    int64_t snapshot_ms = c->snapshot_ms;
    c->snapshot_ms = 0;
    for (size_t i = 0; i < c->len; i++) {
        conn_t *conn = &c->by_fd[i];
        if (!conn->snapped)
            continue;
        conn->snapped = 0;
        if (!conns_live(conn))
            continue;
        /* Every message complete at the snapshot was taken since: what
         * was read then, less the taken and the most it can have sent of
         * commands, is at most what libzmq held then of messages not yet
         * complete (taken also counts frames read after the snapshot). */
        int64_t held =
            conn->read_snap - (int64_t)conn->taken - conns_commands_by(conn, snapshot_ms, lim);
        if (held > (int64_t)lim->bound) {
            char peer[INET6_ADDRSTRLEN];
            peer_text((int)i, peer, sizeof peer); /* a socket shut down has no peer */
            if (conns_shut(c, i)) {
                n++;
                if (cut != NULL)
                    cut(arg, (int)i, peer, (uint64_t)held);
                continue;
            }
        }
        /* What was read now and is no frame the broker took bounds the
         * commands from above (it counts everything held as well): a long
         * life does not add up an allowance that an unfinished message
         * could use. */
        int64_t commands = conns_commands_by(conn, now_ms, lim);
        int64_t read_now = conns_read_bytes(conn, (int)i, 0);
        if (read_now >= 0 && read_now - (int64_t)conn->taken < commands)
            commands = read_now - (int64_t)conn->taken;
        conn->commands = commands;
        conn->commands_ms = now_ms;
    }
    return n;
}
