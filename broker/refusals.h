/*
 * refusals.h — how many refusals the audit trail takes in full. A refused
 * handshake costs its sender nothing (any key will do), and a refused
 * request (an Ack of 1,024 unknown seqs, a flood of refused publishes)
 * costs a partner little; each was an entry of its own, so one client
 * could grow the append-only trail by megabytes a second and fill the
 * disk for everyone. Per window of REFUSALS_WINDOW_S seconds the trail
 * takes a number of full entries per key (the peer address of a
 * handshake, the principal of a request), and a number in all; the
 * others are counted, and summed up in one entry when the window ends
 * (which keys, how many each). A plain value: the broker's loop thread
 * owns it.
 */
#ifndef SCHAKEL_REFUSALS_H
#define SCHAKEL_REFUSALS_H

#include <stddef.h>
#include <stdint.h>

#define REFUSALS_WINDOW_S 60
#define REFUSALS_PER_PEER 10u                /* handshakes: full entries per peer address */
#define REFUSALS_PER_WINDOW 120u             /* ... and in all */
#define REFUSALS_REQUESTS_PER_PRINCIPAL 600u /* requests: full entries per principal */
#define REFUSALS_REQUESTS_PER_WINDOW 6000u   /* ... and in all */
#define REFUSALS_UNDELIVERABLE_PER_PRINCIPAL 10u /* reply.undeliverable: lines per principal */
#define REFUSALS_UNDELIVERABLE_PER_WINDOW 100u   /* ... and in all */
#define REFUSALS_ACKS_LIMITED_PER_PRINCIPAL 1u   /* ack.rate_limited: lines per principal */
#define REFUSALS_ACKS_LIMITED_PER_WINDOW 64u     /* ... and in all */
#define REFUSALS_PEERS 64u     /* keys counted one by one in a window; others in a total */
#define REFUSALS_PEER_LEN 160u /* a key longer than this is cut (principal ids fit) */

/* What a refusals_t counts: its limits, and the word for its keys in the
 * summary. A refusals_t without one counts handshakes (peers, 10, 120). */
typedef struct refusals_kind {
    const char *keys; /* "peers", "principals" */
    uint32_t per_key;
    uint32_t per_window;
} refusals_kind_t;

extern const refusals_kind_t refusals_requests; /* principals, 600, 6000 */
/* Answers the broker could not queue (reply.undeliverable): logged in full
 * 10 per principal and 100 in all per window, the rest summed up. */
extern const refusals_kind_t refusals_undeliverable; /* principals, 10, 100 */
/* Acks refused for their principal's unknown seqs (ack.rate_limited):
 * logged in full once per principal and 64 in all per window, the rest
 * summed up. */
extern const refusals_kind_t refusals_acks_limited; /* principals, 1, 64 */

typedef struct refusals_peer {
    char peer[REFUSALS_PEER_LEN + 1];
    uint32_t recorded;
    uint64_t counted; /* refused, not recorded in full */
} refusals_peer_t;

typedef struct refusals {
    const refusals_kind_t *kind; /* NULL: handshakes; kept across windows */
    int64_t window_start_s;      /* 0: no window open */
    uint32_t recorded;          /* full entries in this window */
    uint64_t counted;           /* not recorded in full, in this window */
    uint64_t counted_elsewhere; /* of those, from peers beyond REFUSALS_PEERS */
    refusals_peer_t peers[REFUSALS_PEERS];
    size_t n_peers;
} refusals_t;

/* A refusal from `peer` (an address or a principal; NULL or "" count as
 * "-") at now_s: 1 when it gets a full entry, 0 when it is only counted. A
 * key beyond the table of REFUSALS_PEERS still gets full entries while the
 * window's total allows. A window that has ended must be summed up first
 * (refusals_summary). */
int refusals_take(refusals_t *r, const char *peer, int64_t now_s);

/* When the window has ended by now_s (or `force`, at a stop) and refusals
 * were counted in it: the summary's text into out ("suppressed=N
 * window_s=60 since=T peers=ADDR:N,ADDR:N[,others:N]", "principals="
 * for requests, cut to outlen on a key boundary) and the number counted,
 * and the window closes (its kind stays). 0 (out
 * untouched) when there is nothing to sum up; an ended window with
 * nothing counted just closes. */
uint64_t refusals_summary(refusals_t *r, int64_t now_s, int force, char *out, size_t outlen);

/* A summary that did not reach the trail (its write failed, or its turn
 * was rolled back): what it counted goes back into r, to be summed up
 * again. `summed` is r as it was before refusals_summary. */
void refusals_put_back(refusals_t *r, const refusals_t *summed);

#endif
