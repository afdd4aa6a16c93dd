/*
 * conns.h — the router's TCP connections, by socket, as its connection
 * events report them: which are open, which closed (and were not given to
 * a new connection since), and since when each has been of no use.
 *
 * libzmq has no call that closes one peer of a ROUTER, and the session
 * cap (session.h) only counts connections that sent a frame in the last
 * second: a client with a valid key could open connections and leave them
 * silent, or keep many alive with a frame now and then, until the broker
 * runs out of file descriptors. The broker therefore closes (a) silent
 * connections (no frame served since they connected) beyond an allowance
 * for all (max_silent), shared fairly among peer addresses (each keeps its
 * oldest, up to a share that fits the allowance), once each is older than
 * idle_ms; (b) the least recently used connections of a principal that
 * holds more than its cap of connections that served frames, once each
 * has been quiet for quiet_ms, those that hold no claim to receive before
 * its standbys (a standby's client reconnects and sends Flow again, which
 * would move the principal's receiving to it); (c) a connection that
 * served frames with a key a reload revoked, idle_ms after the
 * revocation. A client that reconnected by itself while its program made
 * no call (libschakel sends only from within a call) holds a silent
 * connection: the allowance keeps it, and one host that opens many cannot
 * push out the others'. Closing is
 * shutdown(2) on libzmq's own socket (the descriptor stays libzmq's):
 * libzmq sees the peer gone and closes it as usual.
 *
 * A socket number is reused by the next connection once libzmq closed it,
 * and the close event may still be on its way: a connection is known by
 * the kernel's cookie of its socket (SO_COOKIE), read when its accept
 * event is handled, and is shut down only if its socket still has that
 * cookie just before. (libzmq's I/O thread may close it between that check
 * and the shutdown, and another thread open a socket with its number:
 * microseconds, at worst one dropped connection that reconnects.) A socket
 * whose cookie cannot be read is never shut down.
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
/* The connection on `fd` served a frame of `principal`, authenticated
 * with `key` (Z85), or is its receiving connection, at now_ms. */
void conns_used(conns_t *conns, int fd, int64_t now_ms, const char *principal, const char *key);
/* The key of the connection on `fd` was revoked at now_ms (its frames
 * are refused from now on): (c). */
void conns_revoked(conns_t *conns, int fd, int64_t now_ms);

/* A revocation dropped the session of the connection on `fd`, which held
 * a Flow (its order among the principal's Flows, and its window): kept
 * with the connection, for as long as it stays open, so that the session
 * its next frame opens once the key is registered again receives as
 * before (conns_take_flow), with no word from the client. */
void conns_keep_flow(conns_t *conns, int fd, uint64_t order, uint32_t window);
/* The Flow kept for the connection on `fd`, handed out once: 1 with
 * *order and *window set, 0 when none is kept. */
int conns_take_flow(conns_t *conns, int fd, uint64_t *order, uint32_t *window);

/* The connection on `fd` holds a claim to receive: a session on it sent
 * Flow (it receives, or waits to take over). The mark lasts until the
 * next conns_close_idle, which keeps such connections before those of
 * their principal that hold none, and then forgets it: the broker marks
 * them again before each pass (a claim ends with its session). A Flow
 * kept for the connection (conns_keep_flow) counts as a claim without a
 * mark. Unknown or closed sockets are ignored. */
void conns_claimed(conns_t *conns, int fd);

/* The Flows kept for open, unrevoked connections of `principal`
 * (conns_keep_flow): claims to receive whose session ended while their
 * connection stays open. O(connections) when any Flow is kept, else O(1). */
size_t conns_kept_claims(const conns_t *conns, const char *principal);

/* A principal and a key, as conns_identity_hash gives them. */
typedef struct conns_identity {
    uint64_t principal, key;
} conns_identity_t;
uint64_t conns_identity_hash(const char *text);
/* qsort/bsearch order of conns_identity_t. */
int conns_identity_order(const void *a, const void *b);
/* After a reload: every connection that served frames with a principal
 * and key not among the n `registered` ones (sorted here) is revoked at
 * now_ms. Returns how many. */
size_t conns_revoke_unregistered(conns_t *conns, int64_t now_ms, conns_identity_t *registered,
                                 size_t n);

typedef struct conns_limits {
    int64_t idle_ms;          /* (a), (c): older than this since connecting, or revoked */
    size_t max_silent;        /* (a): silent connections kept in all */
    int64_t quiet_ms;         /* (b): quiet this long, over its principal's cap */
    size_t max_per_principal; /* (b): connections that served frames, per principal */
} conns_limits_t;

/* Shut down the connections (a), (b) and (c) of the header comment, once
 * each (their close events follow), and forget the marks of
 * conns_claimed. Returns how many were shut down. */
size_t conns_close_idle(conns_t *conns, int64_t now_ms, const conns_limits_t *limits);

/* 1 when this kernel names sockets with cookies (SO_COOKIE, Linux 4.12
 * and later); without them no connection is ever shut down. */
int conns_cookies_supported(void);

/* Connections open now (accepted, not closed), for the operators. */
size_t conns_open_count(const conns_t *conns);

/*
 * Multipart messages that never end. libzmq 4.3 keeps the parts of a
 * message in the connection's pipe until its last part arrives, and caps
 * neither their number nor their bytes in all (ZMQ_MAXMSGSIZE caps one
 * part, the HWM counts whole messages): a client with its own ZMTP code
 * that never sends the last part grows the broker without end. (libzmq's
 * own sending keeps an unfinished message in the client: nothing of it is
 * on the wire before its last part.) The broker cannot see such parts, but
 * it can see their bytes: what libzmq has read from the socket (TCP_INFO
 * tcpi_bytes_received less the socket's receive queue, SIOCINQ), less the
 * wire bytes of the frames the broker took from the connection
 * (conns_took), less the bytes that are neither (the handshake and ZMTP
 * commands: PINGs and PONGs), is what libzmq holds of messages not yet
 * complete.
 *
 * A pass (about once a second, O(connections) and six system calls per
 * connection): conns_held_snapshot reads what libzmq has read from each
 * socket; once the broker has read every message the router holds (none
 * waits in any pipe: every message complete at the snapshot has been
 * taken), conns_held_check compares. The comparison only ever finds less
 * than is held: frames read after the snapshot count as taken, and the
 * bytes that are no frames are bounded from above, never guessed low: at
 * most SCHAKEL_HELD_COMMAND_BYTES_PER_S a second since the last pass,
 * and never more than the connection's whole excess read just after it
 * (so a long life does not add up an allowance), nor than
 * SCHAKEL_HELD_COMMAND_MAX_BYTES (so a connection that holds unfinished
 * parts, dripping them slower than the allowance grows, is cut too). What libzmq holds of a
 * well-behaved client is then at most the frame it is reading (1 MiB) and
 * one read batch (8 KiB); a connection found to hold more than the bound
 * is shut down (conns_shut: libzmq closes it and frees its parts).
 */

/* The bytes a frame of `len` bytes takes on the wire from a CURVE client:
 * the ZMTP frame header (2 bytes, or 9 above 255), "\x07MESSAGE", the
 * nonce, the box's MAC and its flags byte. */
uint64_t conns_frame_wire_bytes(size_t len);
/* The broker took a message of `wire_bytes` (conns_frame_wire_bytes of
 * each part, summed) from the connection on `fd`, under the router's
 * routing id `routing` (routing_len bytes; NULL: not known). A message
 * under the routing id last taken from the connection that closed on the
 * same socket number before this one opened is that one's, still queued
 * in the router: not counted for this one, whose unfinished parts it
 * would hide from the check. O(routing_len). */
void conns_took(conns_t *conns, int fd, const void *routing, size_t routing_len,
                uint64_t wire_bytes);
/* The pass's first half: what libzmq has read from each open connection,
 * at now_ms. Call it with every connection event drained. */
void conns_held_snapshot(conns_t *conns, int64_t now_ms);
/* 1 while a snapshot waits for its check. */
int conns_held_pending(const conns_t *conns);
/* 1 when the broker has taken, since the snapshot, twice `per_connection`
 * messages from one connection: the router queues at most per_connection
 * (its RCVHWM, and one more) of each connection, and reads them
 * fair-queued, one of each connection that has one in turn, so that every
 * message that waited at the snapshot has been taken, even on a router
 * that is never empty (a busy broker). Twice, as a connection's queue that
 * fills is only seen by the router at its next look at its commands. The
 * other way to know it: the router holds no message (ZMQ_EVENTS), which
 * the broker asks. */
int conns_held_settled(const conns_t *conns, size_t per_connection);

typedef struct conns_held_limits {
    uint64_t bound;               /* held bytes past which a connection is shut down */
    uint64_t command_bytes_per_s; /* ZMTP command bytes a connection may send a second */
    uint64_t command_bytes_max;   /* the most that allowance may reach; 0: no cap */
} conns_held_limits_t;
/* A connection shut down: its socket (open until libzmq closes it), its
 * peer's address ("unknown" when it could not be read), the bytes held. */
typedef void (*conns_held_cut_fn)(void *arg, int fd, const char *peer, uint64_t held);
/* The pass's second half, once the broker has read every message the
 * router held since the snapshot: shuts down each connection that holds
 * more than limits->bound bytes of unfinished messages, calling cut for
 * each. Returns how many. */
size_t conns_held_check(conns_t *conns, int64_t now_ms, const conns_held_limits_t *limits,
                        conns_held_cut_fn cut, void *arg);

#endif
