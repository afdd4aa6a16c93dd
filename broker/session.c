/*
 * session.c — connection and receiver state (see session.h).
 *
 * Trusts only what the broker loop passes in: principal ids come from the
 * ZAP User-Id. Routing ids are client-chosen bytes and only ever used as
 * opaque hash keys. Out-of-memory is returned as NULL.
 */
#include "session.h"

#include <stdlib.h>
#include <string.h>

#include "table.h"

/* A token bucket: `capacity` tokens at most, `capacity` more every
 * period_ms, spread evenly. It starts full. */
typedef struct bucket {
    double tokens;
    int64_t refill_ms; /* when tokens was last topped up */
    uint32_t capacity; /* as the last top-up was told */
    int started;
} bucket_t;

/* Top the bucket up to now_ms. */
static void bucket_fill(bucket_t *b, int64_t now_ms, uint32_t capacity, int64_t period_ms)
{
    b->capacity = capacity;
    if (!b->started) {
        b->tokens = capacity;
        b->refill_ms = now_ms;
        b->started = 1;
    } else if (now_ms > b->refill_ms) {
        b->tokens += (double)(now_ms - b->refill_ms) * capacity / (double)period_ms;
        if (b->tokens > capacity)
            b->tokens = capacity;
        b->refill_ms = now_ms;
    }
}

/* 1 and one token taken when the bucket holds one at now_ms, else 0. */
static int bucket_take(bucket_t *b, int64_t now_ms, uint32_t capacity, int64_t period_ms)
{
    bucket_fill(b, now_ms, capacity, period_ms);
    if (b->tokens < 1.0)
        return 0;
    b->tokens -= 1.0;
    return 1;
}

/* A token taken is given back (never past the capacity). */
static void bucket_return(bucket_t *b)
{
    b->tokens += 1.0;
    if (b->tokens > b->capacity)
        b->tokens = b->capacity;
}

/* Per-principal accounting: how many sessions it has, its publish,
 * handshake, case-open and unknown-ack buckets, and the bytes its
 * connections owe together. Kept while the broker runs (one small entry
 * per principal ever seen, bounded by the policy's principals): a session
 * that expires or is dropped resets none of it. */
typedef struct principal_state {
    char principal[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    unsigned sessions;
    unsigned claims;        /* of those, the ones that sent Flow (flow_order > 0) */
    unsigned long refusals; /* frames of it refused since start (operators' statistics) */
    int64_t last_seen_ms;   /* last frame of any of its sessions; 0: none yet */
    bucket_t publishes;     /* publishes it may make now */
    bucket_t handshakes;    /* handshakes it may complete now */
    bucket_t case_opens;    /* cases it may open now */
    bucket_t unknown_acks;  /* acked seqs not pending it may send now (may go below 0) */
    sendq_t *owed;          /* what all its sessions' connections owe (sendq_new_within) */
} principal_state_t;

/* Per-partner accounting: the case-open bucket all its principals share.
 * Kept while the broker runs (one per partner ever seen, bounded by the
 * policy's partners). */
typedef struct partner_state {
    char partner[SCHAKEL_MAX_ID_LEN + 1];
    bucket_t case_opens; /* cases its principals may open now, together */
} partner_state_t;

/* A case open's two tokens, taken in the current turn: given back if the
 * turn rolls back (sessions_case_opens_settle). The states live as long as
 * the sessions. */
typedef struct case_open_taken {
    principal_state_t *principal;
    partner_state_t *partner;
} case_open_taken_t;

static int is_receiving(sessions_t *s, const session_t *session);

struct sessions {
    table_t *by_routing; /* routing id -> session_t */
    table_t *receivers;  /* principal id -> receiver_t */
    table_t *principals; /* principal id -> principal_state_t */
    table_t *partners;   /* partner id -> partner_state_t */
    case_open_taken_t *opens_taken; /* this turn's case opens (their tokens) */
    size_t n_opens_taken, cap_opens_taken;
    uint64_t flows;      /* Flows so far: the order of session_t.flow_order */
    /* The claim of the last session evict_idle ended, until taken */
    int evicted_fd;
    uint64_t evicted_order;
    uint32_t evicted_window;
};

static principal_state_t *principal_state(sessions_t *s, const char *principal)
{
    principal_state_t *p = table_get(s->principals, principal, strlen(principal));
    if (p != NULL)
        return p;
    p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    strcpy(p->principal, principal);
    p->owed = sendq_new();
    if (p->owed == NULL || table_put(s->principals, p->principal, strlen(p->principal), p) != 0) {
        sendq_release(&p->owed);
        free(p);
        return NULL;
    }
    return p;
}

int sessions_allow_publish(sessions_t *s, const char *principal, int64_t now_ms, uint32_t rate)
{
    principal_state_t *p = principal_state(s, principal);
    /* out of memory: refusing is the safe side; at most one second's worth saved */
    return p != NULL && bucket_take(&p->publishes, now_ms, rate, 1000);
}

static partner_state_t *partner_state(sessions_t *s, const char *partner)
{
    partner_state_t *q = table_get(s->partners, partner, strlen(partner));
    if (q != NULL || strlen(partner) > SCHAKEL_MAX_ID_LEN)
        return q;
    q = calloc(1, sizeof *q);
    if (q == NULL)
        return NULL;
    strcpy(q->partner, partner);
    if (table_put(s->partners, q->partner, strlen(q->partner), q) != 0) {
        free(q);
        return NULL;
    }
    return q;
}

/* Room for one more of the turn's case opens: 0, or -1 (out of memory). */
static int opens_taken_reserve(sessions_t *s)
{
    if (s->n_opens_taken < s->cap_opens_taken)
        return 0;
    size_t cap = s->cap_opens_taken > 0 ? 2 * s->cap_opens_taken : 16;
    case_open_taken_t *grown = realloc(s->opens_taken, cap * sizeof *grown);
    if (grown == NULL)
        return -1;
    s->opens_taken = grown;
    s->cap_opens_taken = cap;
    return 0;
}

case_open_verdict_t sessions_allow_case_open(sessions_t *s, const char *principal,
                                             const char *partner, int64_t now_ms, uint32_t per_hour,
                                             uint32_t partner_per_hour)
{
    const int64_t hour_ms = 3600 * 1000;
    principal_state_t *p = principal_state(s, principal);
    partner_state_t *q = partner_state(s, partner);
    /* out of memory: refusing is the safe side */
    if (p == NULL || q == NULL || opens_taken_reserve(s) != 0)
        return CASE_OPEN_DENIED;
    /* both, or neither: a refusal takes no token */
    bucket_fill(&p->case_opens, now_ms, per_hour, hour_ms);
    bucket_fill(&q->case_opens, now_ms, partner_per_hour, hour_ms);
    if (p->case_opens.tokens < 1.0)
        return CASE_OPEN_DENIED;
    if (q->case_opens.tokens < 1.0)
        return CASE_OPEN_DENIED_PARTNER;
    p->case_opens.tokens -= 1.0;
    q->case_opens.tokens -= 1.0;
    s->opens_taken[s->n_opens_taken++] = (case_open_taken_t){p, q};
    return CASE_OPEN_ALLOWED;
}

void sessions_case_opens_settle(sessions_t *s, int committed)
{
    if (s == NULL)
        return;
    if (!committed)
        for (size_t k = 0; k < s->n_opens_taken; k++) {
            bucket_return(&s->opens_taken[k].principal->case_opens);
            bucket_return(&s->opens_taken[k].partner->case_opens);
        }
    s->n_opens_taken = 0;
}

int sessions_allow_handshake(sessions_t *s, const char *principal, int64_t now_ms,
                             uint32_t per_minute)
{
    principal_state_t *p = principal_state(s, principal);
    return p != NULL && bucket_take(&p->handshakes, now_ms, per_minute, 60 * 1000);
}

int sessions_allow_unknown_acks(sessions_t *s, const char *principal, int64_t now_ms,
                                uint32_t per_second)
{
    principal_state_t *p = principal_state(s, principal);
    if (p == NULL)
        return 0; /* out of memory: refusing is the safe side */
    bucket_fill(&p->unknown_acks, now_ms, per_second, 1000);
    return p->unknown_acks.tokens >= 1.0;
}

void sessions_count_unknown_acks(sessions_t *s, const char *principal, size_t n)
{
    principal_state_t *p = table_get(s->principals, principal, strlen(principal));
    /* below 0 by at most one Ack's seqs (sessions_allow_unknown_acks saw
     * a token first): a debt the refill pays back before the next Ack */
    if (p != NULL && p->unknown_acks.started)
        p->unknown_acks.tokens -= (double)n;
}

sessions_t *sessions_new(void)
{
    sessions_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->by_routing = table_new();
    s->receivers = table_new();
    s->principals = table_new();
    s->partners = table_new();
    if (s->by_routing == NULL || s->receivers == NULL || s->principals == NULL ||
        s->partners == NULL) {
        sessions_destroy(&s);
        return NULL;
    }
    return s;
}

void sessions_destroy(sessions_t **sp)
{
    if (sp == NULL || *sp == NULL)
        return;
    sessions_t *s = *sp;
    size_t cursor = 0;
    void *v;
    if (s->by_routing != NULL)
        while ((v = table_next(s->by_routing, &cursor)) != NULL) {
            sendq_release(&((session_t *)v)->queue);
            free(v);
        }
    cursor = 0;
    if (s->receivers != NULL)
        while ((v = table_next(s->receivers, &cursor)) != NULL)
            free(v);
    cursor = 0;
    if (s->principals != NULL)
        while ((v = table_next(s->principals, &cursor)) != NULL) {
            sendq_release(&((principal_state_t *)v)->owed); /* frames in libzmq hold theirs */
            free(v);
        }
    cursor = 0;
    if (s->partners != NULL)
        while ((v = table_next(s->partners, &cursor)) != NULL)
            free(v);
    table_destroy(&s->by_routing);
    table_destroy(&s->receivers);
    table_destroy(&s->principals);
    table_destroy(&s->partners);
    free(s->opens_taken);
    free(s);
    *sp = NULL;
}

/* The principal's session other than `except` that sent Flow most
 * recently, or NULL. O(sessions); only when a receiving session ends. */
static session_t *latest_flow(sessions_t *s, const char *principal, const session_t *except)
{
    session_t *best = NULL, *session;
    size_t cursor = 0;
    while ((session = table_next(s->by_routing, &cursor)) != NULL)
        if (session != except && session->flow_order > 0 &&
            strcmp(session->principal, principal) == 0 &&
            (best == NULL || session->flow_order > best->flow_order))
            best = session;
    return best;
}

/* `session` ends. If it was receiving, receiving goes back to the session
 * that asked for it before (a connection that sent Flow and then closed
 * must not leave a live one that sent Flow too without deliveries, in
 * whichever order the broker read the two Flows and the close); what was in
 * flight to the old one is sent again. */
static void receiver_detach(sessions_t *s, const session_t *session)
{
    receiver_t *r = table_get(s->receivers, session->principal, strlen(session->principal));
    if (r == NULL || r->session != session)
        return;
    session_t *next = latest_flow(s, session->principal, session);
    r->session = next;
    r->inflight = 0;
    r->cursor = 0;
    if (next != NULL) {
        r->window = next->flow_window;
        r->dirty = 1;
    }
}

void sessions_drop(sessions_t *s, session_t *session)
{
    principal_state_t *p = table_get(s->principals, session->principal, strlen(session->principal));
    if (p != NULL && p->sessions > 0)
        p->sessions--;
    if (p != NULL && p->claims > 0 && session->flow_order > 0)
        p->claims--;
    receiver_detach(s, session);
    table_remove(s->by_routing, session->routing_id, session->routing_len);
    sendq_release(&session->queue); /* frames still in libzmq hold their own */
    free(session);
}

/* At the cap: a client that reconnected leaves its old session behind
 * (libzmq does not tell a ROUTER who left), so the least recently seen
 * session of the principal that is not receiving and has been quiet for
 * SCHAKEL_SESSION_ACTIVE_MS makes room; one that never sent Flow before one
 * that did (that one may take receiving back, session.h). Only when all
 * are in use is a new one refused. O(sessions), on this path only. */
static int evict_idle(sessions_t *s, const char *principal, int64_t now_ms)
{
    session_t *oldest = NULL, *session;
    size_t cursor = 0;
    while ((session = table_next(s->by_routing, &cursor)) != NULL) {
        if (strcmp(session->principal, principal) != 0 || is_receiving(s, session) ||
            now_ms - session->last_seen_ms < SCHAKEL_SESSION_ACTIVE_MS)
            continue;
        int claims = session->flow_order > 0, oldest_claims = oldest && oldest->flow_order > 0;
        if (oldest == NULL || claims < oldest_claims ||
            (claims == oldest_claims && session->last_seen_ms < oldest->last_seen_ms))
            oldest = session;
    }
    if (oldest == NULL)
        return 0;
    if (oldest->flow_order > 0 && oldest->fd >= 0) { /* its connection may stay open */
        s->evicted_fd = oldest->fd;
        s->evicted_order = oldest->flow_order;
        s->evicted_window = oldest->flow_window;
    }
    sessions_drop(s, oldest);
    return 1;
}

session_t *sessions_touch(sessions_t *s, const uint8_t *routing_id, size_t len,
                          const char *principal, const char *key, int64_t now_ms,
                          unsigned max_per_principal, int *over_limit)
{
    *over_limit = 0;
    if (len == 0 || len > SESSION_ROUTING_MAX || strlen(principal) > SCHAKEL_MAX_PRINCIPAL_LEN ||
        strlen(key) >= sizeof((session_t *)0)->key)
        return NULL;
    session_t *session = table_get(s->by_routing, routing_id, len);
    if (session != NULL &&
        (strcmp(session->principal, principal) != 0 || strcmp(session->key, key) != 0)) {
        sessions_drop(s, session);
        session = NULL;
    }
    if (session == NULL) {
        principal_state_t *p = principal_state(s, principal);
        if (p == NULL)
            return NULL;
        if (p->sessions >= max_per_principal && !evict_idle(s, principal, now_ms)) {
            *over_limit = 1;
            return NULL;
        }
        session = calloc(1, sizeof *session);
        if (session == NULL)
            return NULL;
        session->queue = sendq_new_within(p->owed);
        if (session->queue == NULL) {
            free(session);
            return NULL;
        }
        memcpy(session->routing_id, routing_id, len);
        session->routing_len = len;
        session->fd = -1;
        strcpy(session->principal, principal);
        strcpy(session->key, key);
        if (table_put(s->by_routing, routing_id, len, session) != 0) {
            sendq_release(&session->queue);
            free(session);
            return NULL;
        }
        p->sessions++;
    }
    session->last_seen_ms = now_ms;
    principal_state_t *seen = table_get(s->principals, principal, strlen(principal));
    if (seen != NULL)
        seen->last_seen_ms = now_ms;
    return session;
}

void sessions_count_refusal(sessions_t *s, const char *principal)
{
    principal_state_t *p = principal_state(s, principal);
    if (p != NULL)
        p->refusals++;
}

int sessions_principal_stats(const sessions_t *s, const char *principal,
                             sessions_principal_stats_t *out)
{
    memset(out, 0, sizeof *out);
    const principal_state_t *p = table_get(s->principals, principal, strlen(principal));
    if (p == NULL)
        return 0;
    out->sessions = p->sessions;
    out->refusals = p->refusals;
    out->last_seen_ms = p->last_seen_ms;
    return 1;
}

receiver_t *sessions_receiver(sessions_t *s, const char *principal)
{
    return table_get(s->receivers, principal, strlen(principal));
}

/* The receiver state of the session's principal, made if it has none;
 * NULL on OOM. */
static receiver_t *receiver_of(sessions_t *s, const session_t *session)
{
    receiver_t *r = sessions_receiver(s, session->principal);
    if (r != NULL)
        return r;
    r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    strcpy(r->principal, session->principal);
    if (table_put(s->receivers, r->principal, strlen(r->principal), r) != 0) {
        free(r);
        return NULL;
    }
    return r;
}

/* `session` receives with `window`. A new receiving connection: whatever
 * was in flight to the old one may never have arrived, so the push
 * restarts at the oldest unacked; the same one only changes its window. */
static void receiver_take(receiver_t *r, session_t *session, uint32_t window)
{
    if (r->session != session) {
        r->session = session;
        r->inflight = 0;
        r->cursor = 0;
    }
    r->window = window;
    r->dirty = 1;
}

/* `session` sends a Flow of `order` (> 0) with `window`: counted among its
 * principal's claims if it held none. */
static void claim_set(sessions_t *s, session_t *session, uint64_t order, uint32_t window)
{
    principal_state_t *p = table_get(s->principals, session->principal, strlen(session->principal));
    if (p != NULL && session->flow_order == 0)
        p->claims++;
    session->flow_order = order;
    session->flow_window = window;
}

receiver_t *sessions_restore_flow(sessions_t *s, session_t *session, uint64_t order,
                                  uint32_t window)
{
    receiver_t *r = receiver_of(s, session);
    if (r == NULL)
        return NULL;
    claim_set(s, session, order, window);
    if (r->session != NULL && r->session != session && r->session->flow_order > order)
        return r; /* a Flow read since receives: this one waits as a claim */
    receiver_take(r, session, window);
    return r;
}

receiver_t *sessions_receive(sessions_t *s, session_t *session, uint32_t window)
{
    receiver_t *r = receiver_of(s, session);
    if (r == NULL)
        return NULL;
    claim_set(s, session, ++s->flows, window);
    receiver_take(r, session, window);
    return r;
}

receiver_t *sessions_stand_by(sessions_t *s, session_t *session, uint32_t window)
{
    receiver_t *r = receiver_of(s, session);
    if (r == NULL)
        return NULL;
    if (r->session == NULL || r->session == session)
        return sessions_receive(s, session, window);
    claim_set(s, session, ++s->flows, window);
    /* The receiving session keeps the latest Flow: the one that takes
     * over when it ends is the latest of the others (this one, now), and
     * a claim given back later (sessions_restore_flow) waits behind it. */
    r->session->flow_order = ++s->flows;
    return r;
}

unsigned sessions_claims(const sessions_t *s, const char *principal)
{
    const principal_state_t *p = table_get(s->principals, principal, strlen(principal));
    return p != NULL ? p->claims : 0;
}

/* A receiving session is never expired for silence: a quiet recipient
 * with nothing to receive is not a dead one. Nor is a session whose
 * connection still owes bytes (libzmq holds frames of it that it has not
 * taken): its next frame would make a session with a count at 0, and a
 * connection that lets its session expire again and again could be owed
 * the per-connection bound each time. It goes once they have left, or
 * with its connection's close. Dead peers are found by ZMTP
 * heartbeats, after which libzmq drops the pipe and the next send is
 * unroutable (deliver.c ends the session then). */
static int is_receiving(sessions_t *s, const session_t *session)
{
    const receiver_t *r = table_get(s->receivers, session->principal, strlen(session->principal));
    return r != NULL && r->session == session;
}

size_t sessions_expire(sessions_t *s, int64_t now_ms, int64_t timeout_ms)
{
    /* The table must not change during an iteration: mark in one pass,
     * drop in a second. O(sessions) per call, whatever expires. */
    size_t n = table_count(s->by_routing), marked = 0, cursor = 0;
    session_t **gone = n > 0 ? malloc(n * sizeof *gone) : NULL;
    if (gone == NULL)
        return 0; /* out of memory: try again next time */
    session_t *session;
    while ((session = table_next(s->by_routing, &cursor)) != NULL && marked < n) {
        if (now_ms - session->last_seen_ms > timeout_ms && !is_receiving(s, session) &&
            sendq_bytes(session->queue) == 0)
            gone[marked++] = session;
    }
    for (size_t i = 0; i < marked; i++)
        sessions_drop(s, gone[i]);
    free(gone);
    return marked;
}

/* Drop the sessions `gone` names one at a time, the scan starting over
 * after each drop (the table must not change during an iteration): no
 * allocation, O(sessions) per session dropped. */
static size_t drop_each(sessions_t *s, int (*gone)(const session_t *session, void *arg), void *arg)
{
    size_t dropped = 0;
    for (;;) {
        size_t cursor = 0;
        session_t *session;
        while ((session = table_next(s->by_routing, &cursor)) != NULL && !gone(session, arg))
            ;
        if (session == NULL)
            return dropped;
        sessions_drop(s, session);
        dropped++;
    }
}

size_t sessions_drop_where(sessions_t *s, int (*gone)(const session_t *session, void *arg),
                           void *arg)
{
    /* Mark in one pass, drop in a second: O(sessions) per reload, however
     * many go. Without memory for the list, a revocation must still not be
     * skipped: one at a time. */
    size_t n = table_count(s->by_routing), marked = 0, cursor = 0;
    session_t **doomed = n > 0 ? malloc(n * sizeof *doomed) : NULL;
    if (doomed == NULL)
        return drop_each(s, gone, arg);
    session_t *session;
    while ((session = table_next(s->by_routing, &cursor)) != NULL && marked < n)
        if (gone(session, arg))
            doomed[marked++] = session;
    for (size_t i = 0; i < marked; i++)
        sessions_drop(s, doomed[i]);
    free(doomed);
    return marked;
}

static int session_on_fd(const session_t *session, void *arg)
{
    return session->fd == *(const int *)arg;
}

size_t sessions_drop_fd(sessions_t *s, int fd)
{
    return drop_each(s, session_on_fd, &fd); /* usually one session, often none */
}

int sessions_take_evicted_claim(sessions_t *s, int *fd, uint64_t *order, uint32_t *window)
{
    if (s->evicted_order == 0)
        return 0;
    *fd = s->evicted_fd;
    *order = s->evicted_order;
    *window = s->evicted_window;
    s->evicted_order = 0;
    return 1;
}

receiver_t *sessions_next_receiver(sessions_t *s, size_t *cursor)
{
    return table_next(s->receivers, cursor);
}

session_t *sessions_next(sessions_t *s, size_t *cursor)
{
    return table_next(s->by_routing, cursor);
}

size_t sessions_count(const sessions_t *s)
{
    return table_count(s->by_routing);
}

void sessions_restart_receivers(sessions_t *s)
{
    size_t cursor = 0;
    receiver_t *r;
    while ((r = table_next(s->receivers, &cursor)) != NULL) {
        if (r->session == NULL)
            continue;
        r->cursor = 0;
        r->inflight = 0;
        r->dirty = 1;
    }
}
