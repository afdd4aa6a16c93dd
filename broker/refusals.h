/*
 * refusals.h — how many refused handshakes the audit trail takes in full.
 * A refused handshake costs its sender nothing (any key will do), and each
 * was an entry of its own: one client could grow the append-only trail by
 * megabytes a second. Per window of REFUSALS_WINDOW_S seconds the trail
 * takes REFUSALS_PER_PEER full entries per peer address, and at most
 * REFUSALS_PER_WINDOW in all; the others are counted, and summed up in one
 * entry when the window ends (which peers, how many each). A plain value:
 * the broker's loop thread owns it.
 */
#ifndef SCHAKEL_REFUSALS_H
#define SCHAKEL_REFUSALS_H

#include <stddef.h>
#include <stdint.h>

#define REFUSALS_WINDOW_S 60
#define REFUSALS_PER_PEER 10u
#define REFUSALS_PER_WINDOW 120u
#define REFUSALS_PEERS 64u    /* peers counted one by one in a window; others in a total */
#define REFUSALS_PEER_LEN 63u /* a peer address longer than this is cut */

typedef struct refusals_peer {
    char peer[REFUSALS_PEER_LEN + 1];
    uint32_t recorded;
    uint64_t counted; /* refused, not recorded in full */
} refusals_peer_t;

typedef struct refusals {
    int64_t window_start_s;     /* 0: no window open */
    uint32_t recorded;          /* full entries in this window */
    uint64_t counted;           /* not recorded in full, in this window */
    uint64_t counted_elsewhere; /* of those, from peers beyond REFUSALS_PEERS */
    refusals_peer_t peers[REFUSALS_PEERS];
    size_t n_peers;
} refusals_t;

/* A refusal from `peer` (an address; NULL or "" count as "-") at now_s:
 * 1 when it gets a full entry, 0 when it is only counted. A window that
 * has ended must be summed up first (refusals_summary). */
int refusals_take(refusals_t *r, const char *peer, int64_t now_s);

/* When the window has ended by now_s (or `force`, at a stop) and refusals
 * were counted in it: the summary's text into out ("suppressed=N
 * window_s=60 since=T peers=ADDR:N,ADDR:N[,others:N]", cut to outlen on a
 * peer boundary) and the number counted, and the window closes. 0 (out
 * untouched) when there is nothing to sum up; an ended window with
 * nothing counted just closes. */
uint64_t refusals_summary(refusals_t *r, int64_t now_s, int force, char *out, size_t outlen);

/* A summary that did not reach the trail (its write failed, or its turn
 * was rolled back): what it counted goes back into r, to be summed up
 * again. `summed` is r as it was before refusals_summary. */
void refusals_put_back(refusals_t *r, const refusals_t *summed);

#endif
