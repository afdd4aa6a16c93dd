/*
 * case_state.h — the state machine of a case: who may do what, when.
 *
 * A pure function of facts the caller has gathered (the case's state, the
 * acting partner's membership, whether it acts for the lead, the partner a
 * command concerns) to a verdict: allowed, with the membership change and
 * the case's closed flag after the command, or refused with the exact
 * reason code and text the partner is told. It reads no store and no
 * policy; the caller asks the policy (may open, may act for, membership
 * rule) and passes the answers in. Default deny: a zeroed result refuses.
 */
#ifndef SCHAKEL_CASE_STATE_H
#define SCHAKEL_CASE_STATE_H

#include <stddef.h>

#include "policy.h"
#include "schakel.pb-c.h"
#include "schakel_limits.h"

/* The commands of a case. CaseLeave is LEAVE when it names no partner or
 * the actor's own (or, acting for the lead, the lead), REMOVE otherwise. */
typedef enum case_command {
    CASE_CMD_NONE = 0,
    CASE_CMD_OPEN,
    CASE_CMD_INVITE,
    CASE_CMD_ACCEPT,
    CASE_CMD_DECLINE,
    CASE_CMD_LEAVE,
    CASE_CMD_REMOVE,
    CASE_CMD_NOTE,
    CASE_CMD_ATTACH,
    CASE_CMD_LINK,
    CASE_CMD_CLOSE,
    CASE_CMD_REOPEN,
    CASE_CMD_COUNT
} case_command_t;

/* A partner's standing in one case; the values are the store's letters
 * (store_case_member_set). NONE: never invited. */
typedef enum case_member_state {
    CASE_MEMBER_NONE = 0,
    CASE_MEMBER_INVITED = 'i',
    CASE_MEMBER_MEMBER = 'm',
    CASE_MEMBER_DECLINED = 'd',
    CASE_MEMBER_LEFT = 'l',
} case_member_state_t;

/* Whether the command acts for the lead partner (CaseCommand.on_behalf_of). */
typedef enum case_on_behalf {
    CASE_ON_BEHALF_NONE = 0, /* the actor acts for its own partner */
    CASE_ON_BEHALF_DENIED,   /* it names a partner it may not act for (or not the lead) */
    CASE_ON_BEHALF_ALLOWED,  /* it names the lead, and a rule lets it act for it */
} case_on_behalf_t;

/* What the state machine looks at. Strings are borrowed and only used in
 * texts (and compared: actor_partner, lead, target). */
typedef struct case_facts {
    case_command_t command;
    const char *case_id; /* NULL for OPEN */
    const char *case_type;
    const char *lead; /* lead partner (OPEN: the partner that will lead) */
    int closed;
    int reopen_allowed; /* the case type's `reopen` */
    const char *actor_partner;
    case_member_state_t actor_state; /* the actor's own partner in the case */
    int actor_reached;               /* the membership rule of the actor's own partner (in the
                                        policy in force) reaches the actor principal; 0: the
                                        actor sees nothing through its own partner, lead or not */
    case_on_behalf_t on_behalf;
    const char *on_behalf_of; /* the partner named, when on_behalf != NONE */
    const char *target;       /* INVITE, REMOVE: the partner concerned */
    case_member_state_t target_state;
    int target_has_rule; /* INVITE: a membership rule lets target be a member */
    size_t n_members;    /* INVITE: partners invited or member now, lead included */
} case_facts_t;

/* The outcome. On ALLOW: `partner` (borrowed from the facts, or NULL when
 * no membership changes) takes `new_state`, and the case is closed after
 * the command iff closed_after. On DENY: reason and text, to be sent as
 * they are. */
typedef struct case_transition {
    verdict_t verdict;
    Schakel__Reason reason;
    char text[SCHAKEL_MAX_REJECT_TEXT];
    const char *partner;
    case_member_state_t new_state;
    int closed_after;
} case_transition_t;

/* Decide one command. Rules (docs/PROTOCOL.md "Cases"):
 *  - A partner that is neither the lead nor invited nor a member, and does
 *    not act for the lead, gets NOT_FOUND with the text of an unknown id
 *    (case_state_not_found_text): it learns nothing. Then a refused
 *    on_behalf_of is NOT_PERMITTED ("may not act for P in case type T").
 *  - OPEN: allowed (the policy decides who may open; the caller asks it).
 *  - INVITE: the lead (or who acts for it) only; CASE_CLOSED when closed;
 *    NOT_PERMITTED when the target is the lead, a member or invited, or
 *    the case has SCHAKEL_MAX_CASE_MEMBERS; POLICY_DENIED naming the case
 *    type when no membership rule admits the target.
 *  - ACCEPT / DECLINE: an invited partner only; CASE_CLOSED when closed.
 *  - LEAVE: a member that is not the lead; REMOVE: the lead removes a
 *    member or withdraws an invitation; CASE_CLOSED when closed.
 *  - NOTE / ATTACH / LINK: members (the lead is one); CASE_CLOSED when closed.
 *  - CLOSE: the lead; CASE_CLOSED when already closed.
 *  - REOPEN: the lead; NOT_PERMITTED unless closed and the type allows it.
 * Returns out->verdict. Pure; safe on any facts (a NULL string prints "-"). */
verdict_t case_state_decide(const case_facts_t *facts, case_transition_t *out);

/* The one answer for a case that does not exist and for one the asker may
 * not see: "no case C-00000042 that you can see". */
void case_state_not_found_text(const char *case_id, char *out, size_t outlen);

/* "open", "invite", ... "reopen"; "none" for anything else. */
const char *case_command_name(case_command_t command);

#endif
