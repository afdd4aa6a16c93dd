/*
 * conns.h — the router's TCP connections, by socket, as its connection
 * events report them: which are open, which closed (and were not given to
 * a new connection since), and since when each has been of no use.
 *
 * libzmq has no call that closes one peer of a ROUTER, and its per
 * principal limit can only count connections that send frames: a client
 * with a valid key could open connections and send nothing on them until
 * the broker runs out of file descriptors. The broker therefore closes a
 * connection that has served no frame for a while and is not receiving:
 * it shuts the socket down (shutdown(2), the descriptor stays libzmq's),
 * libzmq sees the peer gone and closes it as usual. A socket number is
 * reused by the next connection once libzmq closed it, and the close event
 * may still be on its way: a connection is known by the kernel's cookie of
 * its socket (SO_COOKIE), read when its accept event is handled, and is
 * shut down only while its socket still has that cookie. A socket whose
 * cookie cannot be read is never shut down.
 *
 * A plain table owned by the broker's loop thread. Out of memory leaves a
 * socket untracked: it is never shut down, and never taken for closed.
 */
#ifndef SCHAKEL_CONNS_H
#define SCHAKEL_CONNS_H

#include <stddef.h>
#include <stdint.h>

typedef struct conns conns_t;

conns_t *conns_new(void);
void conns_destroy(conns_t **conns);

/* Accept event: socket `fd` is a new connection, in use from now_ms. */
void conns_opened(conns_t *conns, int fd, int64_t now_ms);
/* Close event: socket `fd` closed, until a new connection gets it. */
void conns_closed(conns_t *conns, int fd);
/* 1 when `fd` closed and no connection was accepted on it since. */
int conns_is_closed(const conns_t *conns, int fd);
/* The connection on `fd` served a frame, or is receiving, at now_ms. */
void conns_used(conns_t *conns, int fd, int64_t now_ms);

/* Shut down every open connection unused for longer than idle_ms (once
 * each; its close event follows). Returns how many were shut down. */
size_t conns_close_idle(conns_t *conns, int64_t now_ms, int64_t idle_ms);

/* Connections open now (accepted, not closed), for the operators. */
size_t conns_open_count(const conns_t *conns);

#endif
