/*
 * deliver_ack.c — what receivers send back and what ends a delivery but its
 * push: Flow (the window, last Flow wins within the cap), Ack (checked
 * against the caller's own mailbox and the policy, rate-limited when
 * unknown), the push's revocations and set-asides, expiry and ack timeouts.
 * Trusts the store and the session table. A store failure fails the turn.
 */
#include "broker.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "record.h"
#include "store_mailbox.h"

/* The principal's claims to receive with a Flow of `session`: its
 * sessions that hold one, this one if it held none, and the Flows kept
 * with connections whose session ended (conns_kept_claims). Counted only
 * past `enough` (O(connections) when some Flow is kept). */
static size_t flow_claims(broker_t *b, const session_t *session, size_t enough)
{
    size_t claims = sessions_claims(b->sessions, session->principal) + (session->flow_order == 0);
    if (claims > enough)
        return claims;
    return claims + conns_kept_claims(b->conns, session->principal);
}

/* Last Flow wins (PROTOCOL.md 7.8), within the cap: a Flow that would
 * take receiving from another session while the principal's claims, this
 * one's included, are more than max_connections waits as a standby. Such
 * a principal is over its cap, and the broker closes its least recently
 * used standbys (conns.h); their clients reconnect and send Flow again,
 * and if each of those took receiving, receiving would move at every
 * close, with everything unacked sent again each time. */
static int flow_stands_by(broker_t *b, const session_t *session)
{
    const receiver_t *r = sessions_receiver(b->sessions, session->principal);
    if (r == NULL || r->session == NULL || r->session == session)
        return 0;
    return flow_claims(b, session, b->max_connections) > b->max_connections;
}

void deliver_flow(broker_t *b, session_t *session, const Schakel__Flow *flow)
{
    if (broker_connection_closed(b, session->fd)) {
        /* read after its connection closed: receiving stays where it is
         * (a live connection of the principal), not on a dead one that a
         * later connection could take the routing id of */
        log_event(LOG_INFO, "flow.after_close", "principal", session->principal, NULL);
        return;
    }
    uint32_t window = flow->window;
    if (window == 0)
        window = SCHAKEL_DEFAULT_WINDOW;
    if (window > b->max_window)
        window = b->max_window;
    if (flow_stands_by(b, session)) {
        if (sessions_stand_by(b->sessions, session, window) == NULL) {
            log_event(LOG_ERROR, "flow.refused", "principal", session->principal, "why",
                      "out of memory", NULL);
            return;
        }
        char cap[16];
        snprintf(cap, sizeof cap, "%u", (unsigned)b->max_connections);
        log_event(LOG_INFO, "flow.standby", "principal", session->principal, "cap", cap, NULL);
        return; /* a claim leaves the receiver's ack clock alone */
    }
    receiver_t *r = sessions_receive(b->sessions, session, window);
    if (r != NULL)
        r->progress_ms = b->now_ms;
    else
        log_event(LOG_ERROR, "flow.refused", "principal", session->principal, "why",
                  "out of memory", NULL);
}

static void on_revoked(const store_expired_t *e, void *arg)
{
    store_expired_copy_set(arg, e);
}

/* A delivery the push queued for revocation in this turn was never sent:
 * it holds no slot in the window. */
int deliver_revocation_queued(const broker_t *b, const char *recipient, uint64_t seq)
{
    for (size_t i = 0; i < b->n_revocations; i++)
        if (b->revocations[i].seq == seq && strcmp(b->revocations[i].recipient, recipient) == 0)
            return 1;
    return 0;
}

record_sent_t deliver_sent(const broker_t *b, const char *recipient, uint64_t seq)
{
    for (size_t i = 0; i < b->n_revocations; i++)
        if (b->revocations[i].seq == seq && strcmp(b->revocations[i].recipient, recipient) == 0)
            return b->revocations[i].sent;
    const receiver_t *r = sessions_receiver(b->sessions, recipient);
    if (r != NULL && seq <= r->highest_sent)
        return RECORD_SENT_YES;
    return seq <= b->seq_at_start ? RECORD_SENT_UNKNOWN : RECORD_SENT_NO;
}

/* An answered delivery's slot in the window is free, if the current
 * receiving session was sent it, whichever connection of this principal
 * answers. */
static void ack_frees_slot(receiver_t *receiver, uint64_t seq)
{
    if (receiver != NULL && receiver->session != NULL && seq <= receiver->cursor &&
        receiver->inflight > 0) {
        receiver->inflight--;
        receiver->dirty = 1;
    }
}

/* The ack of a delivery the policy in force withholds: revoked, as the
 * push would revoke it (delivery.revoked). 0, or -1 when the turn failed. */
static int ack_revokes(broker_t *b, receiver_t *receiver, const char *recipient, uint64_t seq)
{
    int queued = deliver_revocation_queued(b, recipient, seq);
    record_sent_t sent = deliver_sent(b, recipient, seq);
    store_expired_copy_t copy;
    int rc = store_delivery_revoke(b->store, recipient, seq, b->now_s, on_revoked, &copy);
    if (rc < 0) {
        log_event(LOG_ERROR, "store.revoke_failed", "error", store_errmsg(b->store), NULL);
        broker_fail_turn(b);
        return -1;
    }
    if (rc == 1 && record_revoked(b, &copy.view, sent) != 0)
        return -1; /* the turn fails (recorded by record.c) */
    if (rc == 1 && !queued)
        ack_frees_slot(receiver, seq); /* sent before the policy changed */
    return 0;
}

/* The one refusal of an Ack's seqs that were not pending: how many, the
 * first of them as Rejected.seq, and as many more as the text holds
 * (PROTOCOL.md 4.7). One per Ack frame, not one per seq: an Ack of 1,024
 * unknown seqs made 1,024 answers, audit entries and log lines. */
static void ack_refuse_unknown(broker_t *b, session_t *session, const Schakel__Ack *ack,
                               const uint64_t *unknown, size_t n_listed, size_t n_unknown)
{
    char text[SCHAKEL_MAX_REJECT_TEXT];
    int len;
    if (n_unknown == 1) /* the text every refused seq had before, one each */
        len = snprintf(text, sizeof text,
                       "sequence %llu is not a pending delivery in your mailbox (unknown, "
                       "already acked, or not yours)",
                       (unsigned long long)unknown[0]);
    else
        len = snprintf(text, sizeof text,
                       "%zu of the %zu acknowledged sequences are not pending deliveries in your "
                       "mailbox (unknown, already acked, or not yours):",
                       n_unknown, ack->n_seqs);
    size_t used = len > 0 && (size_t)len < sizeof text ? (size_t)len : sizeof text - 1;
    size_t listed = n_unknown == 1 ? 1 : 0;
    for (; listed < n_listed; listed++) {
        char one[24];
        int n = snprintf(one, sizeof one, " %llu", (unsigned long long)unknown[listed]);
        /* room for this one and, if more follow, for " ..." */
        size_t after = listed + 1 < n_unknown ? 4 : 0;
        if (n <= 0 || used + (size_t)n + after >= sizeof text)
            break;
        memcpy(text + used, one, (size_t)n + 1);
        used += (size_t)n;
    }
    if (listed < n_unknown && used + 4 < sizeof text)
        memcpy(text + used, " ...", 5);
    broker_reject(b, session, SCHAKEL__REASON__UNKNOWN_DELIVERY, text, NULL, -1, unknown[0]);
}

/* An Ack refused whole because its principal sent more seqs that were not
 * pending than max_unknown_acks_per_second allows: nothing looked up,
 * nothing acknowledged. One line per principal a minute, the rest summed
 * up (deliver_acks_limited_summary): a client could send such Acks by the
 * thousand a second, and each would have been a line. */
static void ack_rate_limited(broker_t *b, const session_t *session, const Schakel__Ack *ack)
{
    char text[SCHAKEL_MAX_REJECT_TEXT], rate[16];
    snprintf(text, sizeof text,
             "more than %u acknowledged sequences a second that are not pending in your mailbox "
             "(max_unknown_acks_per_second); nothing of this Ack was acknowledged: send it "
             "again later, and ack only what you were delivered",
             b->unknown_ack_rate);
    /* no store work was done: the turn may take other frames instead */
    b->turn_work -= ack->n_seqs < b->turn_work ? (uint32_t)ack->n_seqs : b->turn_work;
    b->stats.acks_rate_limited++;
    broker_reject_unlogged(b, session, SCHAKEL__REASON__RATE_LIMITED, text,
                           ack->n_seqs > 0 ? ack->seqs[0] : 0);
    deliver_acks_limited_summary(b, 0);
    snprintf(rate, sizeof rate, "%u", b->unknown_ack_rate);
    if (refusals_take(&b->acks_limited, session->principal,
                      b->now_s > 0 ? b->now_s : (int64_t)time(NULL)))
        log_event(LOG_WARN, "ack.rate_limited", "principal", session->principal,
                  "max_unknown_acks_per_second", rate, NULL);
}

void deliver_acks_limited_summary(broker_t *b, int force)
{
    char summary[1024];
    int64_t now_s = b->now_s > 0 ? b->now_s : (int64_t)time(NULL);
    if (refusals_summary(&b->acks_limited, now_s, force, summary, sizeof summary) > 0)
        log_event(LOG_WARN, "ack.rate_limited_summary", "detail", summary, NULL);
}

void deliver_ack(broker_t *b, session_t *session, const Schakel__Ack *ack)
{
    if (!sessions_allow_unknown_acks(b->sessions, session->principal, b->now_ms,
                                     b->unknown_ack_rate)) {
        ack_rate_limited(b, session, ack);
        return;
    }
    receiver_t *receiver = sessions_receiver(b->sessions, session->principal);
    /* the seqs not pending, in the Ack's order; wire.c caps n_seqs at
     * SCHAKEL_MAX_ACKS, and only the first few are named */
    uint64_t unknown[32]; /* more than a Rejected's text can name */
    size_t n_unknown = 0, listed_max = sizeof unknown / sizeof unknown[0];
    /* of them, those with no pending row: a withheld or revoked one is a
     * delivery the recipient may well have had (pushed before a restart
     * or a reload), whose ack is no abuse and costs no more than another */
    size_t n_rationed = 0;
    if (store_begin(b->store) != 0) {
        broker_fail_turn(b);
        return;
    }
    for (size_t i = 0; i < ack->n_seqs; i++) {
        uint64_t seq = ack->seqs[i];
        /* Decided under the policy in force, with no reload pending: the
         * policy allows it (the cost of every ack in the steady state).
         * Sent to this principal by this process (pushes go in seq order,
         * so a pending row at or below the highest seq sent was sent,
         * except one the push passed over to be revoked, which waits in
         * b->revocations for the next turn): it has the delivery, and its
         * ack is recorded as what it is, whatever the policy says now. */
        int sent = receiver != NULL && seq <= receiver->highest_sent &&
                   !deliver_revocation_queued(b, session->principal, seq);
        int pending = sent || (seq > b->seq_at_policy && b->policy_pending == NULL)
                          ? DELIVER_ALLOWED
                          : deliver_pending_check(b, session->principal, seq);
        int rc = pending == DELIVER_ALLOWED ? store_delivery_ack(b->store, session->principal, seq)
                 : pending < 0              ? -1
                                            : 0;
        if (rc < 0) {
            log_event(LOG_ERROR, "store.ack_failed", "error", store_errmsg(b->store), NULL);
            broker_fail_turn(b);
            return;
        }
        if (pending == DELIVER_REVOKED && ack_revokes(b, receiver, session->principal, seq) != 0)
            return;
        if (rc == 0) {
            /* withheld ones too: the policy no longer lets the recipient
             * learn that they were there */
            if (n_unknown < listed_max)
                unknown[n_unknown] = seq;
            n_unknown++;
            n_rationed += pending != DELIVER_REVOKED && pending != DELIVER_HELD;
            continue;
        }
        if (record_acked(b, session->principal, seq) != 0)
            return; /* the turn fails: this ack and the turn's others do not happen */
        b->stats.acked++;
        ack_frees_slot(receiver, seq);
        if (receiver != NULL)
            receiver->progress_ms = b->now_ms;
    }
    if (n_unknown > 0) {
        sessions_count_unknown_acks(b->sessions, session->principal, n_rationed);
        ack_refuse_unknown(b, session, ack, unknown,
                           n_unknown < listed_max ? n_unknown : listed_max, n_unknown);
    }
}

size_t deliver_check_ack_timeouts(broker_t *b)
{
    size_t restarted = 0, cursor = 0;
    receiver_t *r;
    while ((r = sessions_next_receiver(b->sessions, &cursor)) != NULL) {
        if (r->session == NULL || r->inflight == 0 ||
            b->now_ms - r->progress_ms < b->ack_timeout_ms)
            continue;
        char inflight[24];
        snprintf(inflight, sizeof inflight, "%u", r->inflight);
        size_t queued = sendq_push_bytes(r->session->queue);
        if (queued > 0) {
            /* Not all of its deliveries have left the broker (libzmq holds
             * frames the connection has not taken): what is still here
             * cannot have been lost on the way, and sent again it would
             * only queue behind itself, a window more at every timeout of
             * a client that reads nothing. The clock starts again instead;
             * the connection stays, and what it owes goes out as it reads.
             * Answers to its own requests do not count: a client that
             * keeps asking would hold back its redelivery for ever. */
            char bytes[24];
            snprintf(bytes, sizeof bytes, "%zu", queued);
            log_event(LOG_WARN, "delivery.ack_timeout_deferred", "recipient", r->principal,
                      "inflight", inflight, "queued_bytes", bytes, NULL);
            b->stats.ack_timeouts_deferred++;
            r->progress_ms = b->now_ms;
            continue;
        }
        /* Nothing acked for the whole timeout: whatever is in flight may be
         * lost on the way (or the recipient dropped it). Start again at the
         * oldest unacked delivery; what was sent before is flagged. */
        log_event(LOG_WARN, "delivery.ack_timeout", "recipient", r->principal, "inflight", inflight,
                  NULL);
        r->cursor = 0;
        r->inflight = 0;
        r->dirty = 1;
        r->progress_ms = b->now_ms;
        restarted++;
    }
    return restarted;
}

/* Expiries and revocations are told inside a store callback, where the
 * store must not be written to: each is copied (store_expired_copy_t) and
 * recorded (an audit entry) once the store call has returned, in the same
 * transaction. */
/* store_expire tells at most its limit, but for a row set aside, which
 * goes whole: the last may pass the limit by a row's deliveries less one. */
#define EXPIRY_BATCH_ROOM (SCHAKEL_EXPIRY_BATCH + STORE_MAILBOX_MAX_N)
typedef struct expiry_batch {
    broker_t *broker;
    store_expired_copy_t copies[EXPIRY_BATCH_ROOM];
    size_t n;
    int overflow;
} expiry_batch_t;

static void on_expired(const store_expired_t *e, void *arg)
{
    expiry_batch_t *batch = arg;
    broker_t *b = batch->broker;
    if (batch->n < EXPIRY_BATCH_ROOM)
        store_expired_copy_set(&batch->copies[batch->n++], e);
    else
        batch->overflow = 1; /* more than store_expire tells: a bug */
    /* An expired delivery in flight will never be acked: free its slot
     * (one set aside was never sent: it holds none; nor does one the push
     * passed over to revoke, whose revocation waits for this turn's
     * deliver_revoke). */
    receiver_t *r = e->set_aside ? NULL : sessions_receiver(b->sessions, e->recipient);
    if (r != NULL && r->session != NULL && e->seq <= r->cursor && r->inflight > 0 &&
        !deliver_revocation_queued(b, e->recipient, e->seq)) {
        r->inflight--;
        r->dirty = 1;
    }
}

void deliver_expire(broker_t *b)
{
    if (store_begin(b->store) != 0) {
        broker_fail_turn(b);
        return;
    }
    static expiry_batch_t batch; /* ~400 KB, not on the stack; one loop thread */
    batch.broker = b;
    batch.n = 0;
    batch.overflow = 0;
    int removed = store_expire(b->store, b->now_s, SCHAKEL_EXPIRY_BATCH, on_expired, &batch);
    if (removed < 0 || batch.overflow) {
        log_event(LOG_ERROR, "store.expire_failed", "error", store_errmsg(b->store), NULL);
        broker_fail_turn(b);
        return;
    }
    for (size_t i = 0; i < batch.n; i++)
        if (record_expired(b, &batch.copies[i].view) != 0)
            return; /* the turn fails: these expiries are rolled back, tried again later */
    /* A damaged row the sweep set aside instead: its entries in this turn
     * (record_set_aside_in_turn takes the rows the sweep listed). */
    if (store_mailbox_expire_set_aside(b->store) > 0 && record_set_aside_in_turn(b) != 0)
        return;
    /* A full batch, or a batch of rows only rewritten with their next
     * expiry, means more may be due: continue next turn, a batch at a
     * time, so that routing never waits for a long sweep. */
    b->expiry_due = (size_t)removed >= SCHAKEL_EXPIRY_BATCH || store_mailbox_expire_more(b->store);
    b->expired_since_checkpoint += (size_t)removed;
}

void deliver_revoke(broker_t *b)
{
    if (b->n_revocations == 0)
        return;
    if (store_begin(b->store) != 0) {
        broker_fail_turn(b);
        return;
    }
    for (size_t i = 0; i < b->n_revocations; i++) {
        const revocation_t *v = &b->revocations[i];
        store_expired_copy_t copy;
        int rc = store_delivery_revoke(b->store, v->recipient, v->seq, b->now_s, on_revoked, &copy);
        if (rc < 0) {
            log_event(LOG_ERROR, "store.revoke_failed", "error", store_errmsg(b->store), NULL);
            broker_fail_turn(b);
            return; /* kept: the push withholds them again after the rollback */
        }
        if (rc == 1 && record_revoked(b, &copy.view, v->sent) != 0)
            return; /* the turn fails (recorded by record.c); kept, as above */
    }
    b->n_revocations = 0;
}

void deliver_set_aside(broker_t *b)
{
    if (b->n_set_asides == 0)
        return;
    size_t n = b->n_set_asides;
    b->n_set_asides = 0; /* a failure: the push finds them again */
    if (store_begin(b->store) != 0) {
        broker_fail_turn(b);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const revocation_t *v = &b->set_asides[i];
        store_mailbox_aside_t row = {0};
        int rc = store_mailbox_row_set_aside(b->store, v->recipient, v->seq, b->now_s, &row);
        if (rc < 0) {
            log_event(LOG_ERROR, "store.set_aside_failed", "error", store_errmsg(b->store), NULL);
            broker_fail_turn(b);
            return;
        }
        /* The row goes whole: an entry for each of its deliveries not done.
         * One the push sent before it met the damage (a vouched one, or one
         * before a delivery whose item does not open) will never be acked
         * (an ack of it is unknown now): its entry says sent=yes (the
         * recipient may hold it), and its slot in the window is freed, as
         * an expiry frees one. */
        for (uint64_t seq = row.first_seq; rc == 1 && seq <= row.last_seq; seq++) {
            store_set_aside_t x;
            int found = store_mailbox_row_set_aside_get(b->store, seq, &x);
            if (found < 0) {
                log_event(LOG_ERROR, "store.set_aside_failed", "error", store_errmsg(b->store),
                          NULL);
                broker_fail_turn(b);
                return;
            }
            if (found == 1 && record_set_aside(b, &x, deliver_sent(b, v->recipient, seq)) != 0)
                return; /* the turn fails (recorded by record.c) */
            if (found == 1)
                deliver_slot_free(b, v->recipient, seq);
        }
        receiver_t *r = sessions_receiver(b->sessions, v->recipient);
        if (r != NULL)
            r->dirty = 1; /* on past it */
    }
}

void deliver_slot_free(broker_t *b, const char *recipient, uint64_t seq)
{
    receiver_t *r = sessions_receiver(b->sessions, recipient);
    if (r == NULL || r->session == NULL || seq > r->cursor || r->inflight == 0 ||
        deliver_revocation_queued(b, recipient, seq))
        return;
    r->inflight--;
    r->dirty = 1;
}
