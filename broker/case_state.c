/*
 * case_state.c — the state machine of a case (see case_state.h).
 *
 * Owns the order in which a command is judged: first whether the actor may
 * see the case at all (NOT_FOUND, worded as for an unknown id), then its
 * authority (who acts for whom, who leads), then the case's state (closed),
 * then the partner the command concerns. Pure: trusts nothing but its
 * facts, touches no store. Refusals carry NOT_FOUND, NOT_PERMITTED,
 * CASE_CLOSED or POLICY_DENIED.
 */
#include "case_state.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const command_names[CASE_CMD_COUNT] = {
    [CASE_CMD_NONE] = "none",     [CASE_CMD_OPEN] = "open",       [CASE_CMD_INVITE] = "invite",
    [CASE_CMD_ACCEPT] = "accept", [CASE_CMD_DECLINE] = "decline", [CASE_CMD_LEAVE] = "leave",
    [CASE_CMD_REMOVE] = "remove", [CASE_CMD_NOTE] = "note",       [CASE_CMD_ATTACH] = "attach",
    [CASE_CMD_LINK] = "link",     [CASE_CMD_CLOSE] = "close",     [CASE_CMD_REOPEN] = "reopen",
};

const char *case_command_name(case_command_t command)
{
    if ((int)command < 0 || command >= CASE_CMD_COUNT)
        return "none";
    return command_names[command];
}

static const char *or_dash(const char *s)
{
    return s != NULL ? s : "-";
}

static int same(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

void case_state_not_found_text(const char *case_id, char *out, size_t outlen)
{
    snprintf(out, outlen, "no case %s that you can see", or_dash(case_id));
}

static verdict_t refuse(case_transition_t *out, Schakel__Reason reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static verdict_t refuse(case_transition_t *out, Schakel__Reason reason, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->text, sizeof out->text, fmt, ap);
    va_end(ap);
    out->verdict = VERDICT_DENY;
    out->reason = reason;
    out->partner = NULL;
    out->new_state = CASE_MEMBER_NONE;
    return VERDICT_DENY;
}

static verdict_t allow(case_transition_t *out, const char *partner, case_member_state_t new_state,
                       int closed_after)
{
    out->verdict = VERDICT_ALLOW;
    out->reason = SCHAKEL__REASON__REASON_NONE;
    out->text[0] = '\0';
    out->partner = partner;
    out->new_state = new_state;
    out->closed_after = closed_after;
    return VERDICT_ALLOW;
}

static verdict_t refuse_closed(case_transition_t *out, const case_facts_t *f)
{
    return refuse(out, SCHAKEL__REASON__CASE_CLOSED, "case %s is closed", or_dash(f->case_id));
}

static verdict_t refuse_not_lead(case_transition_t *out, const case_facts_t *f, const char *what)
{
    return refuse(out, SCHAKEL__REASON__NOT_PERMITTED, "only the lead partner %s %s case %s",
                  or_dash(f->lead), what, or_dash(f->case_id));
}

/* Acting for the lead makes the lead the acting partner; otherwise it is
 * the actor's own partner. */
typedef struct acting {
    const char *partner;
    case_member_state_t state;
    int is_lead;
} acting_t;

static acting_t acting_of(const case_facts_t *f)
{
    acting_t a;
    if (f->on_behalf == CASE_ON_BEHALF_ALLOWED) {
        a.partner = f->lead;
        a.state = CASE_MEMBER_MEMBER; /* the lead is always a member */
        a.is_lead = 1;
    } else if (!f->actor_reached) {
        a.partner = f->actor_partner;
        a.is_lead = 0;
        a.state = CASE_MEMBER_NONE;
    } else {
        a.partner = f->actor_partner;
        a.is_lead = same(f->actor_partner, f->lead);
        a.state = a.is_lead ? CASE_MEMBER_MEMBER : f->actor_state;
    }
    return a;
}

static verdict_t decide_open(const case_facts_t *f, case_transition_t *out)
{
    if (f->on_behalf == CASE_ON_BEHALF_DENIED)
        return refuse(out, SCHAKEL__REASON__NOT_PERMITTED, "may not act for %s in case type %s",
                      or_dash(f->on_behalf_of), or_dash(f->case_type));
    return allow(out, f->on_behalf == CASE_ON_BEHALF_ALLOWED ? f->lead : f->actor_partner,
                 CASE_MEMBER_MEMBER, 0);
}

static verdict_t decide_invite(const case_facts_t *f, const acting_t *a, case_transition_t *out)
{
    if (!a->is_lead)
        return refuse_not_lead(out, f, "invites partners to");
    if (f->closed)
        return refuse_closed(out, f);
    if (same(f->target, f->lead) || f->target_state == CASE_MEMBER_MEMBER)
        return refuse(out, SCHAKEL__REASON__NOT_PERMITTED, "%s is already a member of case %s",
                      or_dash(f->target), or_dash(f->case_id));
    if (f->target_state == CASE_MEMBER_INVITED)
        return refuse(out, SCHAKEL__REASON__NOT_PERMITTED, "%s is already invited to case %s",
                      or_dash(f->target), or_dash(f->case_id));
    if (!f->target_has_rule)
        return refuse(out, SCHAKEL__REASON__POLICY_DENIED,
                      "no rule lets %s be a member of a case of type %s", or_dash(f->target),
                      or_dash(f->case_type));
    if (f->n_members >= SCHAKEL_MAX_CASE_MEMBERS)
        return refuse(out, SCHAKEL__REASON__NOT_PERMITTED,
                      "case %s already has %u partners, the most a case may have",
                      or_dash(f->case_id), SCHAKEL_MAX_CASE_MEMBERS);
    return allow(out, f->target, CASE_MEMBER_INVITED, 0);
}

static verdict_t decide_answer(const case_facts_t *f, const acting_t *a, case_transition_t *out)
{
    if (a->state != CASE_MEMBER_INVITED)
        return refuse(out, SCHAKEL__REASON__NOT_PERMITTED,
                      "%s is already a member of case %s; only an invited partner %ss",
                      or_dash(a->partner), or_dash(f->case_id), case_command_name(f->command));
    if (f->closed)
        return refuse_closed(out, f);
    return allow(out, a->partner,
                 f->command == CASE_CMD_ACCEPT ? CASE_MEMBER_MEMBER : CASE_MEMBER_DECLINED, 0);
}

static verdict_t decide_leave(const case_facts_t *f, const acting_t *a, case_transition_t *out)
{
    if (a->is_lead)
        return refuse(out, SCHAKEL__REASON__NOT_PERMITTED,
                      "the lead partner %s cannot leave case %s; close the case instead",
                      or_dash(f->lead), or_dash(f->case_id));
    if (a->state == CASE_MEMBER_INVITED)
        return refuse(out, SCHAKEL__REASON__NOT_PERMITTED,
                      "%s is invited to case %s, not a member: decline the invitation instead",
                      or_dash(a->partner), or_dash(f->case_id));
    if (f->closed)
        return refuse_closed(out, f);
    return allow(out, a->partner, CASE_MEMBER_LEFT, 0);
}

static verdict_t decide_remove(const case_facts_t *f, const acting_t *a, case_transition_t *out)
{
    if (!a->is_lead)
        return refuse_not_lead(out, f, "removes partners from");
    if (same(f->target, f->lead))
        return refuse(out, SCHAKEL__REASON__NOT_PERMITTED,
                      "the lead partner %s cannot leave case %s; close the case instead",
                      or_dash(f->lead), or_dash(f->case_id));
    if (f->target_state != CASE_MEMBER_MEMBER && f->target_state != CASE_MEMBER_INVITED)
        return refuse(out, SCHAKEL__REASON__NOT_PERMITTED,
                      "%s is neither a member of nor invited to case %s", or_dash(f->target),
                      or_dash(f->case_id));
    if (f->closed)
        return refuse_closed(out, f);
    return allow(out, f->target, CASE_MEMBER_LEFT, 0);
}

static verdict_t decide_contribution(const case_facts_t *f, const acting_t *a,
                                     case_transition_t *out)
{
    if (a->state != CASE_MEMBER_MEMBER)
        return refuse(out, SCHAKEL__REASON__NOT_PERMITTED,
                      "%s is invited to case %s but not a member yet: accept the invitation first",
                      or_dash(a->partner), or_dash(f->case_id));
    if (f->closed)
        return refuse_closed(out, f);
    return allow(out, NULL, CASE_MEMBER_NONE, 0);
}

static verdict_t decide_close(const case_facts_t *f, const acting_t *a, case_transition_t *out)
{
    if (!a->is_lead)
        return refuse_not_lead(out, f, "closes");
    if (f->closed)
        return refuse(out, SCHAKEL__REASON__CASE_CLOSED, "case %s is already closed",
                      or_dash(f->case_id));
    return allow(out, NULL, CASE_MEMBER_NONE, 1);
}

static verdict_t decide_reopen(const case_facts_t *f, const acting_t *a, case_transition_t *out)
{
    if (!a->is_lead)
        return refuse_not_lead(out, f, "reopens");
    if (!f->closed)
        return refuse(out, SCHAKEL__REASON__NOT_PERMITTED,
                      "case %s is open; only a closed case "
                      "is reopened",
                      or_dash(f->case_id));
    if (!f->reopen_allowed)
        return refuse(out, SCHAKEL__REASON__NOT_PERMITTED,
                      "case type %s does not allow reopening a closed case", or_dash(f->case_type));
    return allow(out, NULL, CASE_MEMBER_NONE, 0);
}

verdict_t case_state_decide(const case_facts_t *f, case_transition_t *out)
{
    memset(out, 0, sizeof *out);
    out->verdict = VERDICT_DENY;
    out->reason = SCHAKEL__REASON__INTERNAL_ERROR;
    if (f->command == CASE_CMD_OPEN)
        return decide_open(f, out);
    out->closed_after = f->closed;
    acting_t a = acting_of(f);
    int visible = a.is_lead || a.state == CASE_MEMBER_INVITED || a.state == CASE_MEMBER_MEMBER;
    if (f->on_behalf == CASE_ON_BEHALF_DENIED) {
        /* Visible through its own partner only; naming another partner
         * must not reveal whether the case exists. */
        int own_visible = f->actor_reached && (same(f->actor_partner, f->lead) ||
                                               f->actor_state == CASE_MEMBER_INVITED ||
                                               f->actor_state == CASE_MEMBER_MEMBER);
        if (!own_visible)
            visible = 0;
        else
            return refuse(out, SCHAKEL__REASON__NOT_PERMITTED, "may not act for %s in case type %s",
                          or_dash(f->on_behalf_of), or_dash(f->case_type));
    }
    if (!visible) {
        char text[SCHAKEL_MAX_REJECT_TEXT];
        case_state_not_found_text(f->case_id, text, sizeof text);
        return refuse(out, SCHAKEL__REASON__NOT_FOUND, "%s", text);
    }
    switch (f->command) {
    case CASE_CMD_INVITE:
        return decide_invite(f, &a, out);
    case CASE_CMD_ACCEPT:
    case CASE_CMD_DECLINE:
        return decide_answer(f, &a, out);
    case CASE_CMD_LEAVE:
        return decide_leave(f, &a, out);
    case CASE_CMD_REMOVE:
        return decide_remove(f, &a, out);
    case CASE_CMD_NOTE:
    case CASE_CMD_ATTACH:
    case CASE_CMD_LINK:
        return decide_contribution(f, &a, out);
    case CASE_CMD_CLOSE:
        return decide_close(f, &a, out);
    case CASE_CMD_REOPEN:
        return decide_reopen(f, &a, out);
    default:
        return refuse(out, SCHAKEL__REASON__INTERNAL_ERROR, "unknown case command");
    }
}
