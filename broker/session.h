/*
 * session.h — who is connected, and who is receiving with how much credit.
 *
 * A session is one client connection as the ROUTER sees it (its routing id)
 * bound to the principal the ZAP handler authenticated. A receiver is the
 * per-principal delivery state: the session that asked to receive (Flow),
 * its window, what is in flight, and how far the mailbox has been pushed.
 * One principal has at most one receiving session: a newer Flow takes over,
 * and everything unacked is sent again to it (unless the broker lets it
 * stand by instead: sessions_stand_by). When the receiving session
 * ends, receiving goes back to the principal's session that sent Flow most
 * recently before it, if one is still there. State is in memory only; the
 * mailbox itself is in the store, so losing this state loses nothing.
 */
#ifndef SCHAKEL_SESSION_H
#define SCHAKEL_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "schakel_limits.h"
#include "sendq.h"

#define SESSION_ROUTING_MAX 256

typedef struct session {
    uint8_t routing_id[SESSION_ROUTING_MAX];
    size_t routing_len;
    char principal[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    char key[41]; /* Z85 of the CURVE key the connection authenticated with */
    int fd;       /* the connection's socket (ZMQ_SRCFD), -1 until the caller sets it */
    int64_t last_seen_ms;
    uint64_t flow_order;  /* when it last sent Flow (a counter of Flows); 0: never */
    uint32_t flow_window; /* the window of that Flow */
    sendq_t *queue;       /* bytes owed to it, queued and not yet taken by libzmq (sendq.h),
                           * within its principal's count (sendq_shared_bytes) */
} session_t;

typedef struct receiver {
    char principal[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    session_t *session;    /* receiving session, NULL when none */
    uint32_t window;       /* max deliveries in flight */
    uint32_t inflight;     /* sent in this session, not yet acked */
    uint64_t cursor;       /* highest seq sent in this session */
    uint64_t highest_sent; /* highest seq ever sent since start: redelivery flag */
    int dirty;             /* mailbox may have something to push */
    int64_t progress_ms;   /* last ack, takeover, or first send into an empty window */
} receiver_t;

typedef struct sessions sessions_t;

sessions_t *sessions_new(void);
void sessions_destroy(sessions_t **sessions);

/* The session for a routing id, created (or re-bound) for `principal`
 * authenticated with CURVE key `key` (Z85). A routing id that arrives with
 * another principal or key than before gets a fresh session: identity is
 * the ZAP User-Id, never the routing id. A new session is refused (NULL,
 * *over_limit set) when the principal already has max_per_principal
 * sessions. NULL on OOM or bad arguments (*over_limit 0). */
session_t *sessions_touch(sessions_t *s, const uint8_t *routing_id, size_t len,
                          const char *principal, const char *key, int64_t now_ms,
                          unsigned max_per_principal, int *over_limit);

/* Rate limit: 1 if `principal` may publish now at `rate` publishes per
 * second (a token bucket holding at most one second's worth), 0 if not. */
int sessions_allow_publish(sessions_t *s, const char *principal, int64_t now_ms, uint32_t rate);
/* Handshakes: 1 if `principal` may complete one more now, at most
 * `per_minute` a minute (a token bucket holding a minute's worth: a burst
 * of per_minute, then one every 60 / per_minute seconds), 0 if not. */
int sessions_allow_handshake(sessions_t *s, const char *principal, int64_t now_ms,
                             uint32_t per_minute);
/* Unknown acks (acked seqs not pending in the principal's mailbox): 1 if
 * `principal` may send an Ack now, at most `per_second` such seqs a
 * second (a token bucket holding a second's worth), 0 if its bucket is
 * empty (or out of memory). Nothing is taken: the Ack's unknown seqs are
 * only known once looked up, and sessions_count_unknown_acks takes them
 * then (the bucket may go below 0 by one Ack's worth). */
int sessions_allow_unknown_acks(sessions_t *s, const char *principal, int64_t now_ms,
                                uint32_t per_second);
void sessions_count_unknown_acks(sessions_t *s, const char *principal, size_t n);
/* Case opens: CASE_OPEN_ALLOWED if `principal` may open one more case
 * now, at most `per_hour` an hour, and its partner `partner` too, at most
 * `partner_per_hour` an hour for all its principals together (each a token
 * bucket holding an hour's worth: a burst of that many, then one every
 * 3600 / N seconds); then a token is taken from both, and kept only if
 * the turn commits (sessions_case_opens_settle). CASE_OPEN_DENIED when the
 * principal has none left (or out of memory), CASE_OPEN_DENIED_PARTNER when
 * only its partner has none left: nothing taken. */
typedef enum case_open_verdict {
    CASE_OPEN_DENIED = 0,
    CASE_OPEN_DENIED_PARTNER,
    CASE_OPEN_ALLOWED,
} case_open_verdict_t;
case_open_verdict_t sessions_allow_case_open(sessions_t *s, const char *principal,
                                             const char *partner, int64_t now_ms, uint32_t per_hour,
                                             uint32_t partner_per_hour);
/* The turn ends: the case opens allowed since the last call keep their
 * tokens if it committed, and give them back if it rolled back (nothing
 * of them was stored, so they used up nothing). */
void sessions_case_opens_settle(sessions_t *s, int committed);

/* Make `session` its principal's receiver with `window`. If it already is,
 * only the window changes; otherwise in-flight state restarts so that every
 * unacked delivery is sent again. Returns the receiver, NULL on OOM. */
receiver_t *sessions_receive(sessions_t *s, session_t *session, uint32_t window);

/* A Flow of `session` that does not take receiving from the session that
 * has it: `session` waits with `window` as a claim (7.8), the one that
 * receives when the receiving session ends; the receiving session keeps
 * the principal's latest Flow. Nothing is sent again. With no session
 * receiving, or `session` receiving, the same as sessions_receive.
 * Returns the receiver, NULL on OOM. */
receiver_t *sessions_stand_by(sessions_t *s, session_t *session, uint32_t window);

/* How many sessions of `principal` hold a claim to receive (sent Flow, or
 * got one back): the receiving one and those waiting. O(1). */
unsigned sessions_claims(const sessions_t *s, const char *principal);

/* Give `session` back the Flow (its order among the principal's Flows, and
 * its window) that a session of its connection held when a revocation
 * dropped it, the key being registered again: it receives unless another
 * session's Flow came after that one (then it waits as that session's
 * claim would, 7.8), everything unacked sent again. Returns the receiver,
 * NULL on OOM. */
receiver_t *sessions_restore_flow(sessions_t *s, session_t *session, uint64_t order,
                                  uint32_t window);

/* The Flow of the last session sessions_touch ended at the cap to make
 * room (a claim: such a session is never receiving), for the broker to
 * keep with its connection (conns_keep_flow), which may stay open and give
 * it back with its next frame: 1 with the session's socket, Flow order and
 * window, handed out once; 0 when none (or the session had sent no Flow). */
int sessions_take_evicted_claim(sessions_t *s, int *fd, uint64_t *order, uint32_t *window);

/* The receiver state of a principal, or NULL. */
receiver_t *sessions_receiver(sessions_t *s, const char *principal);

/* Forget a session (gone, timed out, unroutable). If it was receiving,
 * receiving goes to the principal's other session with the latest Flow
 * (its window; everything unacked is sent again), or stops until a new
 * Flow when none of the others sent one. */
void sessions_drop(sessions_t *s, session_t *session);

/* Drop every session silent for longer than timeout_ms, except receiving
 * ones and those whose connection still owes bytes (see session.c).
 * Returns how many. */
size_t sessions_expire(sessions_t *s, int64_t now_ms, int64_t timeout_ms);

/* Drop every session for which `gone` returns non-zero (after a policy
 * reload: principal removed, or key replaced). Never fails: without memory
 * for its list it drops one at a time. Returns how many. */
size_t sessions_drop_where(sessions_t *s, int (*gone)(const session_t *session, void *arg),
                           void *arg);

/* Drop the sessions of connection socket `fd` (closed, or given to a new
 * connection). Allocates nothing. Returns how many. */
size_t sessions_drop_fd(sessions_t *s, int fd);

/* Count one refused frame of `principal` (broker_reject does, for every
 * refusal). Out of memory loses the count, nothing else. */
void sessions_count_refusal(sessions_t *s, const char *principal);

/* What the broker knows of a principal since it started, for operators. */
typedef struct sessions_principal_stats {
    unsigned sessions;      /* live sessions now (see sessions_expire) */
    unsigned long refusals; /* frames refused */
    int64_t last_seen_ms;   /* monotonic time of its last frame; 0: none */
} sessions_principal_stats_t;

/* Fill *out for `principal`; returns 1 if it was seen since start, 0 if not
 * (*out zeroed). O(1). */
int sessions_principal_stats(const sessions_t *s, const char *principal,
                             sessions_principal_stats_t *out);

/* After a rolled-back turn: acks, expiries and drops of that turn are
 * undone on disk but were already counted in memory. Every receiver starts
 * again at its oldest unacked delivery (those sent before are flagged as
 * redeliveries), so nothing is stuck behind a window that looks full or a
 * cursor that is past rows still pending. */
void sessions_restart_receivers(sessions_t *s);

/* Iterate receivers (cursor starts at 0); NULL at the end. */
receiver_t *sessions_next_receiver(sessions_t *s, size_t *cursor);
/* Iterate sessions (cursor starts at 0); NULL at the end. None may be
 * added or dropped meanwhile. */
session_t *sessions_next(sessions_t *s, size_t *cursor);
size_t sessions_count(const sessions_t *s);

#endif
