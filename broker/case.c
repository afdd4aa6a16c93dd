/*
 * case.c — signed case commands in the broker loop (see case.h).
 *
 * The order is publish.c's: rate limit, signature, idempotency, decoding,
 * actor check, whether the actor can see the case at all (its partner's
 * member row, before the case's own), then the state machine and the
 * policy, then the store's bounds (space.h: the floor and the actor's
 * partner's share, for a command that adds content, so that a command
 * refused for good is told so first); nothing is written before all of
 * that has passed. Then, in the
 * turn's transaction: the signed command as evidence (publishes/items),
 * the case's new state, its event (unfiltered, sealed) and one delivery
 * per member principal with the event reduced to its membership rule;
 * the Accepted waits for the commit. Trusts the wire module's validation,
 * ZAP's identity, the store's authenticated bodies and the policy in
 * force. Refusals: RATE_LIMITED, BAD_SIGNATURE, DUPLICATE_CONFLICT, the
 * wire module's, SENDER_MISMATCH, POLICY_DENIED, NOT_PERMITTED,
 * NOT_FOUND, CASE_CLOSED, for an open CASE_IDS_EXHAUSTED or RATE_LIMITED
 * (case_ids.c), and below the floor UNAVAILABLE, at the share
 * RATE_LIMITED; a store failure fails the turn (UNAVAILABLE or
 * INTERNAL_ERROR).
 */
#include "case.h"
#include "plural.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "case_internal.h"
#include "case_state.h"
#include "log.h"
#include "record.h"

/* A withdrawn delivery as the store told it, copied for its audit entry
 * (the store's strings end with its callback). */
typedef struct case_drop {
    uint64_t seq, item_seq;
    int64_t expires_at;
    char recipient[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    char rule_id[SCHAKEL_MAX_ID_LEN + 1];
    char rule_hash[65];
} case_drop_t;

/* One command being carried out. */
typedef struct case_cmd {
    broker_t *b;
    const session_t *session;
    const policy_principal_t *actor;
    const Schakel__CasePublish *publish;
    const Schakel__CaseCommand *cmd;
    const uint8_t *id; /* command id, 16 bytes */
    case_command_t command;
    const policy_case_type_t *type;
    const policy_partner_t *lead;
    const char *acted_for; /* the lead partner, when the actor acts for it */
    const char *effective; /* the partner that acts: acted_for or the actor's own */
    char case_id[SCHAKEL_CASE_ID_LEN + 1];
    char case_type[SCHAKEL_MAX_ID_LEN + 1]; /* as the store names them: the facts and */
    char lead_id[SCHAKEL_MAX_ID_LEN + 1];   /* the transition may point here */
    int closed;
    uint64_t last_event_seq;
    case_members_t members; /* rows before the command */
    case_transition_t t;
    const char *target;                              /* invite, remove: the partner concerned */
    const policy_case_member_rule_t *concerned_rule; /* rule of the partner whose
                                                        standing changes, or the actor's */
    Schakel__Signal *linked; /* link: the signal (decoded from its stored item) */
    uint8_t *linked_body;
    size_t linked_len;
    uint8_t root[32], hash[32];
    int64_t item_seq;
    uint64_t event_seq;
    int64_t expires_at;
    size_t queued, dropped;
    case_drop_t *drops; /* the deliveries a leave or removal withdrew, to record */
    size_t n_drops, cap_drops;
    int drops_lost; /* one could not be kept (out of memory): the turn fails */
    char case_subject[SCHAKEL_MAX_SUBJECT_LEN + 1]; /* an existing case's pseudonym, or "" */
} case_cmd_t;

/* The pseudonym the case is about: the one it is opened with, or the one
 * its opened event names; NULL when none. */
static const char *case_subject(const case_cmd_t *x)
{
    if (x->command == CASE_CMD_OPEN)
        return x->cmd->open->subject;
    return x->case_subject[0] != '\0' ? x->case_subject : NULL;
}

static void case_cmd_free(case_cmd_t *x)
{
    free(x->drops);
    sodium_memzero(x->case_subject, sizeof x->case_subject);
    case_members_free(&x->members);
    if (x->linked != NULL)
        schakel__signal__free_unpacked(x->linked, wire_wiped_allocator());
    if (x->linked_body != NULL) {
        sodium_memzero(x->linked_body, x->linked_len);
        free(x->linked_body);
    }
}

static void case_refuse(case_cmd_t *x, Schakel__Reason reason, const char *text)
{
    broker_reject(x->b, x->session, reason, text, x->id, -1, 0);
}

static void case_refuse_not_found(case_cmd_t *x)
{
    char text[SCHAKEL_MAX_REJECT_TEXT];
    case_state_not_found_text(x->cmd->case_id, text, sizeof text);
    case_refuse(x, SCHAKEL__REASON__NOT_FOUND, text);
}

static case_command_t case_command_of(const Schakel__CaseCommand *cmd)
{
    switch (cmd->op_case) {
    case SCHAKEL__CASE_COMMAND__OP_OPEN:
        return CASE_CMD_OPEN;
    case SCHAKEL__CASE_COMMAND__OP_INVITE:
        return CASE_CMD_INVITE;
    case SCHAKEL__CASE_COMMAND__OP_ACCEPT:
        return CASE_CMD_ACCEPT;
    case SCHAKEL__CASE_COMMAND__OP_DECLINE:
        return CASE_CMD_DECLINE;
    case SCHAKEL__CASE_COMMAND__OP_LEAVE:
        return CASE_CMD_LEAVE;
    case SCHAKEL__CASE_COMMAND__OP_NOTE:
        return CASE_CMD_NOTE;
    case SCHAKEL__CASE_COMMAND__OP_ATTACH:
        return CASE_CMD_ATTACH;
    case SCHAKEL__CASE_COMMAND__OP_CLOSE:
        return CASE_CMD_CLOSE;
    case SCHAKEL__CASE_COMMAND__OP_REOPEN:
        return CASE_CMD_REOPEN;
    case SCHAKEL__CASE_COMMAND__OP_LINK_SIGNAL:
        return CASE_CMD_LINK;
    default:
        return CASE_CMD_NONE;
    }
}

/* ------------------------------------------------------------------ planning */

/* Open: the case type, who leads, and whether the opener may. Returns 0,
 * or -1 after queueing the refusal. */
static int case_plan_open(case_cmd_t *x)
{
    broker_t *b = x->b;
    const Schakel__CaseOpen *open = x->cmd->open;
    char text[SCHAKEL_MAX_REJECT_TEXT];
    x->type = policy_case_type_by_id(b->policy, open->case_type);
    if (x->type == NULL) {
        snprintf(text, sizeof text, "case type %s is not in the policy", open->case_type);
        case_refuse(x, SCHAKEL__REASON__POLICY_DENIED, text);
        return -1;
    }
    case_facts_t f = {.command = CASE_CMD_OPEN,
                      .case_type = x->type->id,
                      .actor_partner = x->actor->partner->id,
                      .actor_reached = 1};
    const char *claim = x->cmd->on_behalf_of;
    if (claim != NULL && strcmp(claim, x->actor->partner->id) != 0) {
        x->lead = policy_partner_by_id(b->policy, claim);
        int allowed = x->lead != NULL && policy_case_may_act_for(b->policy, x->type, x->actor,
                                                                 x->lead) == VERDICT_ALLOW;
        f.on_behalf = allowed ? CASE_ON_BEHALF_ALLOWED : CASE_ON_BEHALF_DENIED;
        f.on_behalf_of = claim;
        f.lead = claim;
    } else {
        x->lead = x->actor->partner;
        f.lead = x->lead->id;
        if (policy_case_may_open(b->policy, x->type, x->actor, text, sizeof text) !=
            VERDICT_ALLOW) {
            case_refuse(x, SCHAKEL__REASON__POLICY_DENIED, text);
            return -1;
        }
    }
    if (case_state_decide(&f, &x->t) != VERDICT_ALLOW) {
        case_refuse(x, x->t.reason, x->t.text);
        return -1;
    }
    x->concerned_rule = policy_case_membership(b->policy, x->type, x->lead, x->lead);
    if (x->concerned_rule == NULL) { /* may_open and may_act_for say it leads */
        snprintf(text, sizeof text, "no rule lets %s lead a case of type %s", x->lead->id,
                 x->type->id);
        case_refuse(x, SCHAKEL__REASON__POLICY_DENIED, text);
        return -1;
    }
    x->acted_for = f.on_behalf == CASE_ON_BEHALF_ALLOWED ? x->lead->id : NULL;
    x->effective = x->lead->id;
    return 0;
}

/* The membership rule of a partner (by id) in this case, or NULL. */
static const policy_case_member_rule_t *case_rule_of(const case_cmd_t *x, const char *partner_id)
{
    const policy_partner_t *partner = policy_partner_by_id(x->b->policy, partner_id);
    if (partner == NULL || x->type == NULL || x->lead == NULL)
        return NULL;
    return policy_case_membership(x->b->policy, x->type, partner, x->lead);
}

/* Whether the command acts for the lead, from on_behalf_of. */
static case_on_behalf_t case_on_behalf(const case_cmd_t *x, const store_case_t *c)
{
    const char *claim = x->cmd->on_behalf_of;
    if (claim == NULL || strcmp(claim, x->actor->partner->id) == 0)
        return CASE_ON_BEHALF_NONE;
    if (x->type == NULL || x->lead == NULL || strcmp(claim, c->lead) != 0 ||
        policy_case_may_act_for(x->b->policy, x->type, x->actor, x->lead) != VERDICT_ALLOW)
        return CASE_ON_BEHALF_DENIED;
    return CASE_ON_BEHALF_ALLOWED;
}

static size_t case_count_active(const case_members_t *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->n; i++)
        n += m->rows[i].state == CASE_MEMBER_INVITED || m->rows[i].state == CASE_MEMBER_MEMBER;
    return n;
}

/* The facts of a command on an existing case. */
static void case_facts_fill(case_cmd_t *x, const store_case_t *c, case_facts_t *f)
{
    const case_member_t *own = case_members_find(&x->members, x->actor->partner->id);
    const policy_case_member_rule_t *own_rule = case_rule_of(x, x->actor->partner->id);
    memset(f, 0, sizeof *f);
    f->command = x->command;
    f->case_id = x->case_id;
    f->case_type = c->case_type;
    f->lead = c->lead;
    f->closed = x->closed;
    f->reopen_allowed = x->type != NULL && x->type->reopen_allowed;
    f->actor_partner = x->actor->partner->id;
    f->actor_state = own != NULL ? (case_member_state_t)own->state : CASE_MEMBER_NONE;
    f->actor_reached =
        own_rule != NULL && policy_case_member_reaches(x->b->policy, own_rule, x->actor);
    f->on_behalf = case_on_behalf(x, c);
    f->on_behalf_of = x->cmd->on_behalf_of;
    /* ALLOWED needs the lead in the policy: its id lives as long as the policy */
    x->acted_for = f->on_behalf == CASE_ON_BEHALF_ALLOWED ? x->lead->id : NULL;
    x->effective = x->acted_for != NULL ? x->acted_for : x->actor->partner->id;
    if (x->command == CASE_CMD_LEAVE && x->cmd->leave->partner != NULL &&
        strcmp(x->cmd->leave->partner, x->effective) != 0) {
        x->command = f->command = CASE_CMD_REMOVE;
        x->target = x->cmd->leave->partner;
    } else if (x->command == CASE_CMD_INVITE) {
        x->target = x->cmd->invite->partner;
    }
    if (x->target != NULL) {
        const case_member_t *row = case_members_find(&x->members, x->target);
        const policy_case_member_rule_t *rule = case_rule_of(x, x->target);
        f->target = x->target;
        f->target_state = row != NULL ? (case_member_state_t)row->state : CASE_MEMBER_NONE;
        f->target_has_rule = rule != NULL && !rule->is_lead;
        f->n_members = case_count_active(&x->members);
    }
}

/* What the linking principal may see of the signal under the policy in
 * force: the fields of the rule that would deliver it to its partner now,
 * if that rule reaches the principal itself (its role in the rule's
 * to_roles). 0 with *mask set, or -1 when no rule lets the sender share it
 * with that principal any more (revoked, narrowed, sender gone). */
static int case_link_entitlement(broker_t *b, const Schakel__Signal *s,
                                 const policy_principal_t *linker, uint32_t *mask)
{
    const policy_principal_t *sender = policy_principal_by_id(b->policy, s->sender);
    if (sender == NULL)
        return -1;
    const char *const to[] = {linker->partner->id};
    policy_signal_facts_t facts = {
        .kind = s->kind,
        .theme = s->theme,
        .area = s->area,
        .has_subject = s->subject != NULL,
        .has_case_ref = s->case_ref != NULL,
        .recipients = to,
        .n_recipients = 1,
    };
    policy_decision_t decision;
    if (policy_decide_signal(b->policy, sender, &facts, &decision) != VERDICT_ALLOW ||
        decision.n_grants != 1 || !policy_rule_reaches(b->policy, decision.grants[0].rule, linker))
        return -1;
    *mask = decision.grants[0].rule->fields;
    return 0;
}

/* Replace the linked signal by the copy the receiving partner may see: the
 * case event stores this copy, so members (now, in history, in views) never
 * get more than the linking partner itself was entitled to. */
static int case_link_cap(case_cmd_t *x, uint32_t mask)
{
    size_t len = 0;
    uint8_t *capped = publish_signal_for_recipient(x->linked, mask, &len);
    if (capped == NULL)
        return -1;
    schakel__signal__free_unpacked(x->linked, wire_wiped_allocator());
    sodium_memzero(x->linked_body, x->linked_len);
    free(x->linked_body);
    x->linked_body = capped;
    x->linked_len = len;
    x->linked = schakel__signal__unpack(wire_wiped_allocator(), len, capped);
    return x->linked != NULL ? 0 : -1;
}

/* The actor itself received the signal (a delivery of it was queued to
 * the actor's principal, its retention has not ended, and it was acked or
 * still waits allowed: not revoked), and the policy in force still lets
 * the sender share it with that principal; the case gets only the fields
 * that delivery carried and the rule in force still gives. A principal
 * links only what it was given: not what another principal of its partner
 * got (a rule's to_roles), nor, acting for the lead, what the lead got,
 * nor fields a later version of the rule adds. */
static int case_plan_link(case_cmd_t *x)
{
    broker_t *b = x->b;
    uint64_t item_seq = x->cmd->link_signal->item_seq;
    char text[SCHAKEL_MAX_REJECT_TEXT];
    uint32_t given = 0; /* the fields of the actor's own delivery */
    int received = case_principal_received(b, item_seq, x->actor->id, &given);
    int found = received == 1 ? store_item_get(b->store, item_seq, &x->linked_body, &x->linked_len)
                              : received;
    if (found < 0)
        return -2;
    if (found == 1)
        x->linked = schakel__signal__unpack(wire_wiped_allocator(), x->linked_len, x->linked_body);
    uint32_t mask = 0;
    if (x->linked != NULL && case_link_entitlement(b, x->linked, x->actor, &mask) == 0) {
        if (case_link_cap(x, mask & given) != 0)
            return -2;
    } else if (x->linked != NULL) {
        /* no longer entitled: the same answer as never received */
        schakel__signal__free_unpacked(x->linked, wire_wiped_allocator());
        x->linked = NULL;
    }
    if (found == 0 || x->linked == NULL) {
        snprintf(text, sizeof text, "no signal with item seq %llu that %s received",
                 (unsigned long long)item_seq, x->actor->id);
        case_refuse(x, SCHAKEL__REASON__NOT_FOUND, text);
        return -1;
    }
    return 0;
}

/* A command on an existing case. Returns 0, -1 after queueing the refusal,
 * -2 on a store error. */
static int case_plan_existing(case_cmd_t *x)
{
    broker_t *b = x->b;
    /* Whom the case cannot show itself to is refused before its row is
     * read (and its title unsealed): as fast as for an id never used, and
     * NOT_FOUND even when that row is damaged. */
    int visible = case_may_be_visible(b, x->actor, x->cmd->case_id, x->cmd->on_behalf_of);
    if (visible < 0)
        return -2;
    if (visible == 0) {
        case_refuse_not_found(x);
        return -1;
    }
    store_case_t c;
    int found = store_case_get(b->store, x->cmd->case_id, &c);
    if (found < 0)
        return -2;
    /* A case past its retention is gone, even before the sweep removed its
     * rows: it can be neither seen nor reopened. */
    if (found == 0 || c.expires_at <= b->now_s) {
        case_refuse_not_found(x);
        return -1;
    }
    snprintf(x->case_id, sizeof x->case_id, "%s", c.case_id);
    x->closed = c.closed;
    x->last_event_seq = c.last_event_seq;
    x->type = policy_case_type_by_id(b->policy, c.case_type);
    x->lead = policy_partner_by_id(b->policy, c.lead);
    /* c's strings live until the next store call */
    case_facts_t f;
    snprintf(x->case_type, sizeof x->case_type, "%s", c.case_type);
    snprintf(x->lead_id, sizeof x->lead_id, "%s", c.lead);
    c.case_type = x->case_type;
    c.lead = x->lead_id;
    if (case_members_load(b->store, x->case_id, &x->members) != 0 ||
        case_subject_load(b->store, x->case_id, x->case_subject) != 0)
        return -2;
    case_facts_fill(x, &c, &f);
    if (case_state_decide(&f, &x->t) != VERDICT_ALLOW) {
        case_refuse(x, x->t.reason, x->t.text);
        return -1;
    }
    /* Allowed: then the policy in force has the type and the lead. */
    x->concerned_rule = case_rule_of(x, x->t.partner != NULL ? x->t.partner : x->effective);
    if (x->command == CASE_CMD_LINK)
        return case_plan_link(x);
    return 0;
}

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
 * slot in the receiver's window. The delivery is kept for its audit entry,
 * written once the store call has returned (a callback must not write). */
static void case_on_dropped(const store_expired_t *e, void *arg)
{
    case_cmd_t *x = arg;
    receiver_t *r = sessions_receiver(x->b->sessions, e->recipient);
    if (r != NULL && r->session != NULL && e->seq <= r->cursor && r->inflight > 0) {
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
static int case_drop_partner(case_cmd_t *x, const char *partner_id)
{
    broker_t *b = x->b;
    x->n_drops = 0;
    if (store_case_drop_deliveries_at(b->store, x->case_id, partner_id, b->now_s, case_on_dropped,
                                      x) < 0)
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

/* ------------------------------------------------------------------ storing */

/* The case's retention from now on (store_case_set_expiry). Deliveries of
 * it whose bodies do not authenticate (rows altered in the store) take it
 * too, unsent as before: logged, the command goes on. 0 or -1. */
static int case_set_expiry(case_cmd_t *x, int64_t expires_at)
{
    int unreadable = store_case_set_expiry(x->b->store, x->case_id, expires_at);
    if (unreadable <= 0)
        return unreadable;
    char n[16];
    snprintf(n, sizeof n, "%d", unreadable);
    log_event(LOG_ERROR, "store.read_failed", "case", x->case_id, "deliveries", n, "error",
              store_errmsg(x->b->store), "effect",
              "their retention follows the case; they stay unsent until it ends", NULL);
    return 0;
}

/* The case's new state: membership, closed flag, retention. */
static int case_apply(case_cmd_t *x)
{
    broker_t *b = x->b;
    store_t *s = b->store;
    const policy_case_member_rule_t *rule = x->concerned_rule;
    switch (x->command) {
    case CASE_CMD_OPEN:
    case CASE_CMD_INVITE:
    case CASE_CMD_ACCEPT:
        return store_case_member_set(s, x->case_id, x->t.partner, (char)x->t.new_state,
                                     rule != NULL ? rule->id : NULL,
                                     rule != NULL ? rule->hash_hex : NULL, b->now_s);
    case CASE_CMD_DECLINE:
        return store_case_member_set(s, x->case_id, x->t.partner, (char)x->t.new_state, NULL, NULL,
                                     b->now_s);
    case CASE_CMD_LEAVE:
    case CASE_CMD_REMOVE:
        if (store_case_member_set(s, x->case_id, x->t.partner, (char)x->t.new_state, NULL, NULL,
                                  b->now_s) != 0)
            return -1;
        return case_drop_partner(x, x->t.partner);
    case CASE_CMD_CLOSE:
        return store_case_set_closed(s, x->case_id, 1, b->now_s);
    case CASE_CMD_REOPEN:
        if (store_case_set_closed(s, x->case_id, 0, b->now_s) != 0)
            return -1;
        return case_set_expiry(x, STORE_CASE_OPEN_EXPIRY);
    default:
        return 0;
    }
}

/* The Accepted of a case command. */
static uint8_t *case_encode_accepted(const case_cmd_t *x, size_t *len)
{
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    Schakel__Accepted accepted = SCHAKEL__ACCEPTED__INIT;
    Schakel__ItemAccepted item = SCHAKEL__ITEM_ACCEPTED__INIT;
    Schakel__ItemAccepted *items[1] = {&item};
    item.has_seq = 1;
    item.seq = (uint64_t)x->item_seq;
    item.has_recipients = 1;
    item.recipients = (uint32_t)x->queued;
    accepted.has_message_id = 1;
    accepted.message_id.data = (uint8_t *)(uintptr_t)x->id;
    accepted.message_id.len = SCHAKEL_MESSAGE_ID_BYTES;
    accepted.n_items = 1;
    accepted.items = items;
    accepted.case_id = (char *)(uintptr_t)x->case_id;
    frame.body_case = SCHAKEL__FRAME__BODY_ACCEPTED;
    frame.accepted = &accepted;
    return wire_encode_frame(&frame, len);
}

static int case_record(case_cmd_t *x, const Schakel__CaseEvent *ev)
{
    const policy_case_member_rule_t *rule = x->concerned_rule;
    record_case_t rc = {
        .event = case_event_name(ev->kind),
        .actor = x->actor->id,
        .on_behalf_of = x->acted_for,
        .case_id = x->case_id,
        .case_type = x->type->id,
        .lead = x->lead->id,
        .partner = ev->partner,
        .command_id = x->id,
        .item_seq = (uint64_t)x->item_seq,
        .event_seq = x->event_seq,
        .rule_id = rule != NULL ? rule->id : x->type->id,
        .rule_hash = rule != NULL ? rule->hash_hex : x->type->hash_hex,
        .subject =
            x->linked != NULL && x->linked->subject != NULL ? x->linked->subject : case_subject(x),
        .linked_item_seq = x->command == CASE_CMD_LINK ? x->cmd->link_signal->item_seq : 0,
        .n_fields = x->command == CASE_CMD_NOTE ? x->cmd->note->n_fields : 0,
        .deliveries = x->queued,
        .dropped = x->dropped,
        .expires_at = x->command == CASE_CMD_CLOSE ? x->expires_at : 0,
    };
    return record_case(x->b, &rc);
}

/* The event: built, stored, queued (the history first for a joiner). */
static int case_store_event(case_cmd_t *x, Schakel__CaseEvent *ev, char **members)
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

/* Store the command as evidence, the case's new state, its event and
 * deliveries, and queue the Accepted. Returns 0, or -1 on a store (or
 * record) failure: the caller fails the turn. */
static int case_store(case_cmd_t *x)
{
    broker_t *b = x->b;
    const ProtobufCBinaryData *command = &x->publish->command;
    char *members[SCHAKEL_MAX_PARTNERS + 1];
    Schakel__CaseEvent ev;
    if (store_begin(b->store) != 0)
        return -1;
    if (x->command == CASE_CMD_OPEN &&
        store_case_create(b->store, x->type->id, x->lead->id, x->cmd->open->title, b->now_s,
                          x->case_id) != 0)
        return -1;
    int64_t publish_id = store_publish_add(b->store, x->actor->id, x->id, x->hash,
                                           x->publish->signature.data, x->root, b->now_s);
    if (publish_id < 0)
        return -1;
    x->item_seq = store_item_add(b->store, publish_id, 0, command->data, command->len);
    if (x->item_seq < 0)
        return -1;
    metrics_item_accepted(b->metrics, (uint64_t)x->item_seq, b->now_ms);
    x->expires_at = x->command == CASE_CMD_CLOSE ? b->now_s + x->type->retention_after_close_s
                                                 : STORE_CASE_OPEN_EXPIRY;
    if (case_apply(x) != 0 || case_store_event(x, &ev, members) != 0)
        return -1;
    /* From the close the whole case counts down: rows, events, deliveries,
     * the commands' evidence. */
    if (x->command == CASE_CMD_CLOSE && case_set_expiry(x, x->expires_at) != 0)
        return -1;
    if (x->queued == 0 && store_case_item_link(b->store, x->case_id, (uint64_t)x->item_seq) != 0)
        return -1;
    size_t len = 0;
    uint8_t *frame = case_encode_accepted(x, &len);
    if (frame == NULL || store_publish_set_reply(b->store, publish_id, frame, len) != 0 ||
        case_record(x, &ev) != 0) {
        free(frame);
        return -1;
    }
    if (broker_queue_reply(b, x->session, frame, len, x->id) != 0)
        return -1;
    b->stats.accepted++;
    return 0;
}

/* ------------------------------------------------------------------ the handler */

/* A repeat of a known command id: same content gets the original Accepted
 * (marked duplicate), other content is a conflict. Returns 1 when handled,
 * 0 when the id is new, -1 on a store error. */
static int case_answer_repeat(case_cmd_t *x)
{
    broker_t *b = x->b;
    int same_content = 0;
    uint8_t *reply = NULL;
    size_t reply_len = 0;
    int found = store_publish_find(b->store, x->actor->id, x->id, x->hash, &same_content, &reply,
                                   &reply_len);
    if (found <= 0)
        return found;
    if (!same_content) {
        free(reply);
        case_refuse(x, SCHAKEL__REASON__DUPLICATE_CONFLICT,
                    "this command id was already used by this principal for other content");
        return 1;
    }
    size_t len = 0;
    uint8_t *frame = publish_duplicate_reply(reply, reply_len, &len);
    free(reply);
    if (frame == NULL)
        return -1;
    broker_queue_reply(b, x->session, frame, len, x->id);
    b->stats.duplicates++;
    (void)record_accepted(b, x->actor->id, x->id, 1, 0, 1); /* failing fails the turn */
    return 1;
}

/* Below the store's floor, and at its actor's partner's share (space.h),
 * a command that adds content is refused: an open, invite or accept (an
 * accepted member is sent the case's history), a note, attachment or
 * link, a reopen. One that ends something goes on (close starts the
 * countdown of the case's retention; leave, decline and remove end what
 * is owed to a member): each writes a command and an event of its own,
 * small beside what it lets go, and counted in the share all the same. */
static int case_adds_content(case_command_t command)
{
    switch (command) {
    case CASE_CMD_CLOSE:
    case CASE_CMD_LEAVE:
    case CASE_CMD_DECLINE:
    case CASE_CMD_REMOVE:
        return 0;
    default:
        return 1;
    }
}

/* The store's bounds (space.h), asked once the command is allowed, so that
 * one refused for good is told so: a command that adds content is
 * refused UNAVAILABLE below the floor, RATE_LIMITED when its bytes (kept
 * as evidence, an item of the actor's partner) would take the partner
 * past its share. 1 after queueing the refusal, else 0. */
static int case_bounds_refuse(case_cmd_t *x)
{
    char text[SCHAKEL_MAX_REJECT_TEXT];
    if (!case_adds_content(x->command))
        return 0;
    if (space_floor_refuses(x->b, text, sizeof text)) {
        case_refuse(x, SCHAKEL__REASON__UNAVAILABLE, text);
        return 1;
    }
    if (space_share_refuses(x->b, x->actor->partner->id, store_sealed_len(x->publish->command.len),
                            text, sizeof text)) {
        case_refuse(x, SCHAKEL__REASON__RATE_LIMITED, text);
        return 1;
    }
    return 0;
}

/* Rate limit, signature, idempotency. Returns 1 to go on, 0 when answered
 * (refused or repeated). */
static int case_admit(case_cmd_t *x)
{
    broker_t *b = x->b;
    const Schakel__CasePublish *publish = x->publish;
    uint8_t signed_bytes[64];
    if (!sessions_allow_publish(b->sessions, x->actor->id, b->now_ms, b->publish_rate)) {
        char text[160];
        snprintf(text, sizeof text,
                 "more than %u %s per second from this principal; slow down and retry "
                 "with the same command id",
                 b->publish_rate, plural(b->publish_rate, "publish", "publishes"));
        case_refuse(x, SCHAKEL__REASON__RATE_LIMITED, text);
        return 0;
    }
    ProtobufCBinaryData item = publish->command;
    wire_items_root(&item, 1, x->root);
    wire_signed_bytes(x->id, x->root, signed_bytes);
    if (keys_verify(x->actor->sign_pk, signed_bytes, sizeof signed_bytes,
                    publish->signature.data) != 0) {
        case_refuse(x, SCHAKEL__REASON__BAD_SIGNATURE,
                    "the signature does not verify with the actor's registered key");
        return 0;
    }
    wire_case_publish_hash(publish, x->hash);
    int repeat = case_answer_repeat(x);
    if (repeat < 0) {
        log_event(LOG_ERROR, "store.read_failed", "error", store_errmsg(b->store), NULL);
        case_refuse(x, broker_store_failure_reason(b),
                    "the broker could not read its store; send the command again");
    }
    return repeat == 0;
}

void case_publish_handle(broker_t *b, session_t *session, const policy_principal_t *actor,
                         const Schakel__CasePublish *publish)
{
    case_cmd_t x;
    memset(&x, 0, sizeof x);
    x.b = b;
    x.session = session;
    x.actor = actor;
    x.publish = publish;
    x.id = publish->command_id.data;
    if (!case_admit(&x))
        return;
    wire_error_t err = {0};
    Schakel__CaseCommand *cmd =
        wire_decode_case_command(publish->command.data, publish->command.len, &err);
    if (cmd == NULL) {
        case_refuse(&x, err.reason, err.text);
        return;
    }
    x.cmd = cmd;
    x.command = case_command_of(cmd);
    if (strcmp(cmd->actor, actor->id) != 0) {
        char text[SCHAKEL_MAX_REJECT_TEXT];
        snprintf(text, sizeof text,
                 "the command names actor %s but this connection is authenticated as %s",
                 cmd->actor, actor->id);
        case_refuse(&x, SCHAKEL__REASON__SENDER_MISMATCH, text);
    } else {
        int planned = x.command == CASE_CMD_OPEN ? case_plan_open(&x) : case_plan_existing(&x);
        /* an allowed open: a case id left (a refusal for good comes first) */
        if (planned == 0 && x.command == CASE_CMD_OPEN &&
            case_ids_exhausted_refuses(b, session, x.id))
            planned = -1;
        /* the store's bounds: before anything is stored or budgeted */
        if (planned == 0 && case_bounds_refuse(&x))
            planned = -1;
        /* an allowed open within the bounds: the actor's and its partner's budget */
        if (planned == 0 && x.command == CASE_CMD_OPEN &&
            !case_ids_admit_open(b, session, actor, x.id))
            planned = -1;
        if (planned == -2) {
            log_event(LOG_ERROR, "store.read_failed", "error", store_errmsg(b->store), NULL);
            case_refuse(&x, broker_store_failure_reason(b),
                        "the broker could not read its store; nothing was stored, send the "
                        "command again with the same command id");
        } else if (planned == 0 && case_store(&x) != 0) {
            log_event(LOG_ERROR, "store.write_failed", "error", store_errmsg(b->store), NULL);
            broker_fail_turn(b);
            case_refuse(&x, b->turn_failure,
                        "the broker could not store this case command; nothing was stored, "
                        "send it again with the same command id");
        } else if (planned == 0 && x.command == CASE_CMD_OPEN) {
            case_ids_watch(b, b->now_ms);
        }
    }
    case_cmd_free(&x);
    wire_case_command_free(&cmd);
}
