/*
 * case_deliver.c — a case command's event and its deliveries: the full
 * event built and stored sealed, then queued to every principal its
 * member partners' rules reach, each partner's copy reduced once to its
 * rule (case_event.c); a joiner's history first; and a leaving or
 * removed partner's waiting deliveries withdrawn, each on the trail.
 * Runs inside the turn's transaction; a store, record or memory failure
 * returns -1 and the caller fails the turn.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "case_internal.h"
#include "record.h"

/* ------------------------------------------------------------------ the event */

static Schakel__CaseEventKind case_event_kind(case_command_t command)
{
    switch (command) {
    case CASE_CMD_OPEN:
        return SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_OPENED;
    case CASE_CMD_INVITE:
        return SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_INVITED;
    case CASE_CMD_ACCEPT:
        return SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_JOINED;
    case CASE_CMD_DECLINE:
        return SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_DECLINED;
    case CASE_CMD_LEAVE:
    case CASE_CMD_REMOVE:
        return SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_LEFT;
    case CASE_CMD_NOTE:
        return SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_NOTE;
    case CASE_CMD_ATTACH:
        return SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_ATTACHMENT;
    case CASE_CMD_CLOSE:
        return SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_CLOSED;
    case CASE_CMD_REOPEN:
        return SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_REOPENED;
    case CASE_CMD_LINK:
        return SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_SIGNAL_LINKED;
    default:
        return SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_NONE;
    }
}

/* A partner's standing after the command. */
static char case_state_after(const case_cmd_t *x, const case_member_t *row)
{
    if (x->t.partner != NULL && strcmp(row->partner, x->t.partner) == 0)
        return (char)x->t.new_state;
    return row->state;
}

/* Member partners after the command, into out (borrowed strings); and the
 * partners that receive the event as a bit mask over partner indexes:
 * the members, and an invited partner its own invitation. */
static size_t case_after(const case_cmd_t *x, char **out, uint64_t *receivers)
{
    size_t n = 0;
    int new_row = x->t.partner != NULL && case_members_find(&x->members, x->t.partner) == NULL;
    *receivers = 0;
    for (size_t i = 0; i <= x->members.n; i++) {
        const char *partner;
        char state;
        if (i < x->members.n) {
            partner = x->members.rows[i].partner;
            state = case_state_after(x, &x->members.rows[i]);
        } else if (new_row) {
            partner = x->t.partner;
            state = (char)x->t.new_state;
        } else {
            break;
        }
        const policy_partner_t *p = policy_partner_by_id(x->b->policy, partner);
        int invited_now = x->command == CASE_CMD_INVITE && state == CASE_MEMBER_INVITED &&
                          x->target != NULL && strcmp(partner, x->target) == 0;
        if (state == CASE_MEMBER_MEMBER && n < SCHAKEL_MAX_PARTNERS)
            out[n++] = (char *)(uintptr_t)partner;
        if (p != NULL && (state == CASE_MEMBER_MEMBER || invited_now))
            *receivers |= UINT64_C(1) << p->index;
    }
    return n;
}

/* The full event of this command (borrows from the command and from x). */
static void case_event_fill(case_cmd_t *x, Schakel__CaseEvent *ev, char **members, size_t n_members)
{
    const Schakel__CaseCommand *cmd = x->cmd;
    schakel__case_event__init(ev);
    ev->case_id = x->case_id;
    ev->case_type = x->type->id;
    ev->has_event_seq = 1;
    ev->event_seq = x->event_seq;
    ev->has_kind = 1;
    ev->kind = case_event_kind(x->command);
    ev->actor = x->actor->id;
    ev->on_behalf_of = (char *)(uintptr_t)x->acted_for;
    ev->has_at = 1;
    ev->at = x->b->now_s;
    ev->lead = x->lead->id;
    ev->n_members = n_members;
    ev->members = members;
    ev->partner = (char *)(uintptr_t)x->t.partner;
    switch (x->command) {
    case CASE_CMD_OPEN:
        ev->partner = NULL;
        ev->title = cmd->open->title;
        ev->subject = cmd->open->subject;
        ev->address = cmd->open->address;
        ev->area = cmd->open->area;
        break;
    case CASE_CMD_NOTE:
        ev->text = cmd->note->text;
        ev->n_fields = cmd->note->n_fields;
        ev->fields = cmd->note->fields;
        break;
    case CASE_CMD_ATTACH:
        ev->attachment = cmd->attach;
        break;
    case CASE_CMD_CLOSE:
        ev->text = cmd->close->reason;
        break;
    case CASE_CMD_REOPEN:
        ev->text = cmd->reopen->reason;
        break;
    case CASE_CMD_LINK:
        ev->has_signal = 1;
        ev->signal.data = x->linked_body;
        ev->signal.len = x->linked_len;
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------------ deliveries */

/* Per partner of the policy: its rule in this case and the event as it
 * may see it (made once per event, for all its principals). */
typedef struct case_partner_view {
    const policy_case_member_rule_t *rule;
    int looked_up;
    case_filtered_t filtered;
} case_partner_view_t;

/* Whom a delivery of the event is about: the event's own subject (the
 * opened case's, a linked signal's), else the case's; NULL when none.
 * The entry is about that person whether or not the recipient's rule
 * shows the pseudonym (its fields say what it got), so that the person's
 * export finds every partner that received their data. */
static const char *case_event_subject(const case_cmd_t *x, const Schakel__CaseEvent *full,
                                      const Schakel__Signal *linked)
{
    if (full->subject != NULL)
        return full->subject;
    if (linked != NULL && linked->subject != NULL)
        return linked->subject;
    return case_subject(x);
}

/* Queue the event, as `v` holds it for its partner, to one principal
 * (linked: the event's signal, decoded, or NULL). Returns 0, or -1 on a
 * store or record failure. */
static int case_deliver_one(case_cmd_t *x, const policy_principal_t *p,
                            const case_partner_view_t *v, const Schakel__CaseEvent *full,
                            const Schakel__Signal *linked)
{
    broker_t *b = x->b;
    store_delivery_t d = {
        .recipient = p->id,
        .item_seq = (uint64_t)x->item_seq,
        .message_id = x->id,
        .item_index = 0,
        .sender = x->actor->id,
        .sender_partner = x->actor->partner->id,
        .rule_id = v->rule->id,
        .rule_hash = v->rule->hash_hex,
        .purpose = v->rule->purpose,
        .legal_basis = v->rule->legal_basis,
        .accepted_at = b->now_s,
        .expires_at = x->expires_at,
        .body = v->filtered.body,
        .body_len = v->filtered.len,
        .case_id = x->case_id,
        .is_case_event = 1,
    };
    int64_t seq = store_delivery_add(b->store, &d);
    if (seq < 0)
        return -1;
    record_case_delivery_t rd = {
        .actor = x->actor->id,
        .recipient = p->id,
        .recipient_partner = p->partner->id,
        .seq = (uint64_t)seq,
        .item_seq = (uint64_t)x->item_seq,
        .command_id = x->id,
        .case_id = x->case_id,
        .event_seq = full->event_seq,
        .event = case_event_name(full->kind),
        .rule_id = v->rule->id,
        .rule_hash = v->rule->hash_hex,
        .purpose = v->rule->purpose,
        .legal_basis = v->rule->legal_basis,
        .fields = v->filtered.seen,
        .has_signal = v->filtered.has_signal,
        .signal_fields = v->filtered.signal_fields,
        .subject = case_event_subject(x, full, linked),
        .expires_at = x->expires_at,
    };
    if (record_case_queued(b, &rd) != 0)
        return -1;
    receiver_t *receiver = sessions_receiver(b->sessions, p->id);
    if (receiver != NULL)
        receiver->dirty = 1;
    return 0;
}

/* Queue one event (full, decoded) to every principal of the partners in
 * `receivers` that its partner's membership rule reaches, each partner's
 * copy reduced once for all its principals. Cost: one pass over the
 * policy's principals. Returns the number queued, or -1 on a store or
 * record failure. */
static long case_queue_event(case_cmd_t *x, const Schakel__CaseEvent *full, uint64_t receivers)
{
    broker_t *b = x->b;
    case_partner_view_t views[SCHAKEL_MAX_PARTNERS];
    Schakel__Signal *linked = NULL;
    long queued = 0;
    memset(views, 0, sizeof views);
    if (full->has_signal)
        linked =
            schakel__signal__unpack(wire_wiped_allocator(), full->signal.len, full->signal.data);
    for (size_t i = 0; i < policy_principal_count(b->policy) && queued >= 0; i++) {
        const policy_principal_t *p = policy_principal_at(b->policy, i);
        size_t index = p->partner->index;
        if (index >= SCHAKEL_MAX_PARTNERS || !(receivers >> index & 1))
            continue;
        case_partner_view_t *v = &views[index];
        if (!v->looked_up) {
            v->looked_up = 1;
            v->rule = policy_case_membership(b->policy, x->type, p->partner, x->lead);
            if (v->rule != NULL && case_event_filter(full, linked, v->rule, 0, &v->filtered) != 0)
                queued = -1;
        }
        if (queued < 0 || v->rule == NULL || !policy_case_member_reaches(b->policy, v->rule, p))
            continue;
        queued = case_deliver_one(x, p, v, full, linked) == 0 ? queued + 1 : -1;
    }
    for (size_t i = 0; i < SCHAKEL_MAX_PARTNERS; i++)
        case_filtered_free(&views[i].filtered);
    if (linked != NULL)
        schakel__signal__free_unpacked(linked, wire_wiped_allocator());
    return queued;
}

/* The history of the case, in order, for a partner that joins now: every
 * event before this one, each reduced to its rule, except its own
 * invitations (it was sent those when invited). One event in memory at a
 * time. Returns the number queued, or -1. */
static long case_queue_history(case_cmd_t *x, const char *joiner_id, uint64_t joiner)
{
    long queued = 0;
    for (uint64_t seq = 0; seq < x->last_event_seq;) {
        case_event_copy_t copy = {0};
        int visited = store_case_events(x->b->store, x->case_id, seq, case_event_copy_one, &copy);
        if (visited < 0 || copy.failed) {
            case_event_copy_free(&copy);
            return -1;
        }
        if (copy.bytes == NULL)
            break; /* expired meanwhile: nothing further */
        Schakel__CaseEvent *ev =
            schakel__case_event__unpack(wire_wiped_allocator(), copy.len, copy.bytes);
        int own_invitation = ev != NULL &&
                             ev->kind == SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_INVITED &&
                             ev->partner != NULL && strcmp(ev->partner, joiner_id) == 0;
        long n = ev == NULL ? -1 : own_invitation ? 0 : case_queue_event(x, ev, joiner);
        if (ev != NULL)
            schakel__case_event__free_unpacked(ev, wire_wiped_allocator());
        seq = copy.event_seq;
        case_event_copy_free(&copy);
        if (n < 0)
            return -1;
        queued += n;
        if (seq >= x->last_event_seq)
            break;
    }
    return queued;
}

/* An expired-or-dropped delivery in flight will never be acked: free its
 * slot in the receiver's window (not one the push passed over to revoke:
 * it holds none). The delivery is kept for its audit entry, written once
 * the store call has returned (a callback must not write). */
static void case_on_dropped(const store_expired_t *e, void *arg)
{
    case_cmd_t *x = arg;
    receiver_t *r = sessions_receiver(x->b->sessions, e->recipient);
    if (r != NULL && r->session != NULL && e->seq <= r->cursor && r->inflight > 0 &&
        !deliver_revocation_queued(x->b, e->recipient, e->seq)) {
        r->inflight--;
        r->dirty = 1;
    }
    x->dropped++;
    if (x->n_drops == x->cap_drops) {
        size_t cap = x->cap_drops ? 2 * x->cap_drops : 16;
        case_drop_t *grown = realloc(x->drops, cap * sizeof *grown);
        if (grown == NULL) {
            x->drops_lost = 1;
            return;
        }
        x->drops = grown;
        x->cap_drops = cap;
    }
    case_drop_t *d = &x->drops[x->n_drops++];
    d->seq = e->seq;
    d->item_seq = e->item_seq;
    d->expires_at = e->expires_at;
    snprintf(d->recipient, sizeof d->recipient, "%s", e->recipient);
    snprintf(d->rule_id, sizeof d->rule_id, "%s", e->rule_id);
    snprintf(d->rule_hash, sizeof d->rule_hash, "%s", e->rule_hash);
}

/* A partner left or was removed: what waits for any of its principals goes
 * now, also for principals the policy in force does not list (one removed
 * and later re-added must not find the case's events waiting). Each
 * withdrawn delivery gets its own "delivery.revoked" entry, as one the
 * policy no longer allows, so the trail ends every delivery it queued. */
int case_drop_partner(case_cmd_t *x, const char *partner_id)
{
    broker_t *b = x->b;
    x->n_drops = 0;
    if (store_case_drop_deliveries_at(b->store, x->case_id, partner_id, b->now_s, case_on_dropped,
                                      x) < 0)
        return -1;
    /* a row of the case that did not read was set aside whole: its entries */
    if (record_set_aside_in_turn(b) != 0)
        return -1;
    if (x->drops_lost) {
        broker_fail_turn(b);
        return -1;
    }
    char why[SCHAKEL_MAX_ID_LEN + 48];
    snprintf(why, sizeof why, "partner %s %s case %s", partner_id,
             x->command == CASE_CMD_LEAVE ? "left" : "was removed from", x->case_id);
    for (size_t i = 0; i < x->n_drops; i++) {
        const case_drop_t *d = &x->drops[i];
        store_expired_t e = {.seq = d->seq,
                             .recipient = d->recipient,
                             .item_seq = d->item_seq,
                             .rule_id = d->rule_id,
                             .rule_hash = d->rule_hash,
                             .expires_at = d->expires_at};
        if (record_withdrawn(b, &e, why, deliver_sent(b, d->recipient, d->seq)) != 0)
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ the event stored */

/* The event: built, stored, queued (the history first for a joiner). */
int case_store_event(case_cmd_t *x, Schakel__CaseEvent *ev, char **members)
{
    broker_t *b = x->b;
    uint64_t receivers = 0;
    size_t n_members = case_after(x, members, &receivers);
    x->event_seq = x->last_event_seq + 1;
    case_event_fill(x, ev, members, n_members);
    size_t len = 0;
    uint8_t *bytes = wire_encode_case_event(ev, &len);
    if (bytes == NULL)
        return -1;
    int rc = store_case_event_add(b->store, x->case_id, x->event_seq, b->now_s, bytes, len);
    sodium_memzero(bytes, len);
    free(bytes);
    if (rc != 0)
        return -1;
    if (x->command == CASE_CMD_ACCEPT) {
        const policy_partner_t *joiner = policy_partner_by_id(b->policy, x->t.partner);
        long history =
            joiner != NULL ? case_queue_history(x, joiner->id, UINT64_C(1) << joiner->index) : 0;
        if (history < 0)
            return -1;
        x->queued += (size_t)history;
    }
    long queued = case_queue_event(x, ev, receivers);
    if (queued < 0)
        return -1;
    x->queued += (size_t)queued;
    return 0;
}
