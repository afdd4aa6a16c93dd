/*
 * case_plan.c — planning a case command before anything is written: for
 * an open, the case type, the lead and whether the opener may; for a
 * command on an existing case, whether the actor can see it at all, the
 * case and its members, the state machine's verdict under the policy in
 * force, and for a link the signal the actor itself received, capped to
 * what it may still see. Trusts the wire module's validation and the
 * store's authenticated bodies. Refuses with the reason the partner is
 * told (queued through case_refuse); a store error is -2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "case_internal.h"

/* ------------------------------------------------------------------ planning */

static void case_refuse_not_found(case_cmd_t *x)
{
    char text[SCHAKEL_MAX_REJECT_TEXT];
    case_state_not_found_text(x->cmd->case_id, text, sizeof text);
    case_refuse(x, SCHAKEL__REASON__NOT_FOUND, text);
}

/* Open: the case type, who leads, and whether the opener may. Returns 0,
 * or -1 after queueing the refusal. */
int case_plan_open(case_cmd_t *x)
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
    policy_signal_facts_t facts = publish_signal_facts(s, to, 1);
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
int case_plan_existing(case_cmd_t *x)
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
