/*
 * test_case_state.c — the case state machine (broker/case_state.c).
 *
 * One row per (case state x actor's standing x acting for the lead or not x
 * command) that matters, with the exact reason and text of every refusal
 * and the membership change of every allowed command; then a sweep over
 * every combination in which the actor may not see the case, which must
 * all answer exactly what an unknown case id gets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "case_state.h"

#define CASE_ID "C-00000042"
#define CASE_TYPE "ondermijning-adres"
#define LEAD "riec"
#define MEMBER_PARTNER "politie"
#define HELPER_PARTNER "veiligheidshuis" /* acts for the lead where a rule allows it */
#define TARGET "gemeente"

#define NF "no case " CASE_ID " that you can see"
#define CLOSED_TEXT "case " CASE_ID " is closed"
#define NO_ACT "may not act for " LEAD " in case type " CASE_TYPE

/* Who acts: 'L' a principal of the lead partner; otherwise a principal of
 * another partner whose standing is the letter (n none, i, m, d, l) —
 * MEMBER_PARTNER, or HELPER_PARTNER when acting for the lead. */
typedef struct row {
    const char *name;
    case_command_t command;
    int closed;
    int reopen_allowed;
    char actor;
    case_on_behalf_t on_behalf;
    char target;     /* 'L' the lead, else the target's standing (n i m d l); 0: none */
    int target_rule; /* INVITE: a membership rule admits the target */
    size_t n_members;
    Schakel__Reason reason; /* REASON_NONE: allowed */
    const char *text;       /* refusal: the exact text */
    const char *partner;    /* allowed: whose standing changes (NULL: nobody's) */
    char new_state;
    int closed_after;
} row_t;

#define OK SCHAKEL__REASON__REASON_NONE
#define NOT_FOUND SCHAKEL__REASON__NOT_FOUND
#define NOT_PERMITTED SCHAKEL__REASON__NOT_PERMITTED
#define IS_CLOSED SCHAKEL__REASON__CASE_CLOSED
#define DENIED SCHAKEL__REASON__POLICY_DENIED
#define BEHALF_NONE CASE_ON_BEHALF_NONE
#define BEHALF_DENIED CASE_ON_BEHALF_DENIED
#define BEHALF_OK CASE_ON_BEHALF_ALLOWED

static const row_t rows[] = {
    /* ---- open: the policy decides who may open; here only acting-for */
    {"open by a lead partner", CASE_CMD_OPEN, 0, 0, 'L', BEHALF_NONE, 0, 0, 0, OK, NULL, LEAD, 'm',
     0},
    {"open for the lead", CASE_CMD_OPEN, 0, 0, 'n', BEHALF_OK, 0, 0, 0, OK, NULL, LEAD, 'm', 0},
    {"open for a lead no rule lets it act for", CASE_CMD_OPEN, 0, 0, 'n', BEHALF_DENIED, 0, 0, 0,
     NOT_PERMITTED, NO_ACT, NULL, 0, 0},

    /* ---- invite */
    {"lead invites a new partner", CASE_CMD_INVITE, 0, 0, 'L', BEHALF_NONE, 'n', 1, 2, OK, NULL,
     TARGET, 'i', 0},
    {"lead invites again a partner that declined", CASE_CMD_INVITE, 0, 0, 'L', BEHALF_NONE, 'd', 1,
     2, OK, NULL, TARGET, 'i', 0},
    {"lead invites again a partner that left", CASE_CMD_INVITE, 0, 0, 'L', BEHALF_NONE, 'l', 1, 2,
     OK, NULL, TARGET, 'i', 0},
    {"invite for the lead", CASE_CMD_INVITE, 0, 0, 'n', BEHALF_OK, 'n', 1, 2, OK, NULL, TARGET, 'i',
     0},
    {"invite with the 63rd partner", CASE_CMD_INVITE, 0, 0, 'L', BEHALF_NONE, 'n', 1, 63, OK, NULL,
     TARGET, 'i', 0},
    {"a member that is not the lead invites", CASE_CMD_INVITE, 0, 0, 'm', BEHALF_NONE, 'n', 1, 2,
     NOT_PERMITTED, "only the lead partner riec invites partners to case " CASE_ID, NULL, 0, 0},
    {"an invited partner invites", CASE_CMD_INVITE, 0, 0, 'i', BEHALF_NONE, 'n', 1, 2,
     NOT_PERMITTED, "only the lead partner riec invites partners to case " CASE_ID, NULL, 0, 0},
    {"lead invites into a closed case", CASE_CMD_INVITE, 1, 0, 'L', BEHALF_NONE, 'n', 1, 2,
     IS_CLOSED, CLOSED_TEXT, NULL, 0, 1},
    {"lead invites a member", CASE_CMD_INVITE, 0, 0, 'L', BEHALF_NONE, 'm', 1, 2, NOT_PERMITTED,
     TARGET " is already a member of case " CASE_ID, NULL, 0, 0},
    {"lead invites an invited partner", CASE_CMD_INVITE, 0, 0, 'L', BEHALF_NONE, 'i', 1, 2,
     NOT_PERMITTED, TARGET " is already invited to case " CASE_ID, NULL, 0, 0},
    {"lead invites itself", CASE_CMD_INVITE, 0, 0, 'L', BEHALF_NONE, 'L', 1, 2, NOT_PERMITTED,
     LEAD " is already a member of case " CASE_ID, NULL, 0, 0},
    {"lead invites a partner no rule admits", CASE_CMD_INVITE, 0, 0, 'L', BEHALF_NONE, 'n', 0, 2,
     DENIED, "no rule lets " TARGET " be a member of a case of type " CASE_TYPE, NULL, 0, 0},
    {"for the lead, a partner no rule admits", CASE_CMD_INVITE, 0, 0, 'n', BEHALF_OK, 'n', 0, 2,
     DENIED, "no rule lets " TARGET " be a member of a case of type " CASE_TYPE, NULL, 0, 0},
    {"invite into a full case", CASE_CMD_INVITE, 0, 0, 'L', BEHALF_NONE, 'n', 1, 64, NOT_PERMITTED,
     "case " CASE_ID " already has 64 partners, the most a case may have", NULL, 0, 0},
    {"a member invites for a lead it may not act for", CASE_CMD_INVITE, 0, 0, 'm', BEHALF_DENIED,
     'n', 1, 2, NOT_PERMITTED, NO_ACT, NULL, 0, 0},
    {"a stranger invites for a lead it may not act for", CASE_CMD_INVITE, 0, 0, 'n', BEHALF_DENIED,
     'n', 1, 2, NOT_FOUND, NF, NULL, 0, 0},
    {"a stranger invites", CASE_CMD_INVITE, 0, 0, 'n', BEHALF_NONE, 'n', 1, 2, NOT_FOUND, NF, NULL,
     0, 0},

    /* ---- accept / decline */
    {"invited partner accepts", CASE_CMD_ACCEPT, 0, 0, 'i', BEHALF_NONE, 0, 0, 0, OK, NULL,
     MEMBER_PARTNER, 'm', 0},
    {"invited partner accepts, case closed", CASE_CMD_ACCEPT, 1, 0, 'i', BEHALF_NONE, 0, 0, 0,
     IS_CLOSED, CLOSED_TEXT, NULL, 0, 1},
    {"member accepts", CASE_CMD_ACCEPT, 0, 0, 'm', BEHALF_NONE, 0, 0, 0, NOT_PERMITTED,
     MEMBER_PARTNER " is already a member of case " CASE_ID "; only an invited partner accepts",
     NULL, 0, 0},
    {"lead accepts", CASE_CMD_ACCEPT, 0, 0, 'L', BEHALF_NONE, 0, 0, 0, NOT_PERMITTED,
     LEAD " is already a member of case " CASE_ID "; only an invited partner accepts", NULL, 0, 0},
    {"accept for the lead", CASE_CMD_ACCEPT, 0, 0, 'n', BEHALF_OK, 0, 0, 0, NOT_PERMITTED,
     LEAD " is already a member of case " CASE_ID "; only an invited partner accepts", NULL, 0, 0},
    {"a partner that declined accepts", CASE_CMD_ACCEPT, 0, 0, 'd', BEHALF_NONE, 0, 0, 0, NOT_FOUND,
     NF, NULL, 0, 0},
    {"a partner that left accepts", CASE_CMD_ACCEPT, 0, 0, 'l', BEHALF_NONE, 0, 0, 0, NOT_FOUND, NF,
     NULL, 0, 0},
    {"invited partner declines", CASE_CMD_DECLINE, 0, 0, 'i', BEHALF_NONE, 0, 0, 0, OK, NULL,
     MEMBER_PARTNER, 'd', 0},
    {"invited partner declines, case closed", CASE_CMD_DECLINE, 1, 0, 'i', BEHALF_NONE, 0, 0, 0,
     IS_CLOSED, CLOSED_TEXT, NULL, 0, 1},
    {"member declines", CASE_CMD_DECLINE, 0, 0, 'm', BEHALF_NONE, 0, 0, 0, NOT_PERMITTED,
     MEMBER_PARTNER " is already a member of case " CASE_ID "; only an invited partner declines",
     NULL, 0, 0},
    {"lead declines", CASE_CMD_DECLINE, 0, 0, 'L', BEHALF_NONE, 0, 0, 0, NOT_PERMITTED,
     LEAD " is already a member of case " CASE_ID "; only an invited partner declines", NULL, 0, 0},
    {"a stranger declines", CASE_CMD_DECLINE, 0, 0, 'n', BEHALF_NONE, 0, 0, 0, NOT_FOUND, NF, NULL,
     0, 0},

    /* ---- leave (own partner) */
    {"member leaves", CASE_CMD_LEAVE, 0, 0, 'm', BEHALF_NONE, 0, 0, 0, OK, NULL, MEMBER_PARTNER,
     'l', 0},
    {"member leaves a closed case", CASE_CMD_LEAVE, 1, 0, 'm', BEHALF_NONE, 0, 0, 0, IS_CLOSED,
     CLOSED_TEXT, NULL, 0, 1},
    {"lead leaves", CASE_CMD_LEAVE, 0, 0, 'L', BEHALF_NONE, 0, 0, 0, NOT_PERMITTED,
     "the lead partner riec cannot leave case " CASE_ID "; close the case instead", NULL, 0, 0},
    {"the lead leaves, by one acting for it", CASE_CMD_LEAVE, 0, 0, 'n', BEHALF_OK, 0, 0, 0,
     NOT_PERMITTED, "the lead partner riec cannot leave case " CASE_ID "; close the case instead",
     NULL, 0, 0},
    {"invited partner leaves", CASE_CMD_LEAVE, 0, 0, 'i', BEHALF_NONE, 0, 0, 0, NOT_PERMITTED,
     MEMBER_PARTNER " is invited to case " CASE_ID ", not a member: decline the invitation instead",
     NULL, 0, 0},
    {"a partner that left leaves again", CASE_CMD_LEAVE, 0, 0, 'l', BEHALF_NONE, 0, 0, 0, NOT_FOUND,
     NF, NULL, 0, 0},
    {"a stranger leaves", CASE_CMD_LEAVE, 0, 0, 'n', BEHALF_NONE, 0, 0, 0, NOT_FOUND, NF, NULL, 0,
     0},

    /* ---- remove (the lead, CaseLeave{partner}) */
    {"lead removes a member", CASE_CMD_REMOVE, 0, 0, 'L', BEHALF_NONE, 'm', 0, 0, OK, NULL, TARGET,
     'l', 0},
    {"lead withdraws an invitation", CASE_CMD_REMOVE, 0, 0, 'L', BEHALF_NONE, 'i', 0, 0, OK, NULL,
     TARGET, 'l', 0},
    {"remove for the lead", CASE_CMD_REMOVE, 0, 0, 'n', BEHALF_OK, 'm', 0, 0, OK, NULL, TARGET, 'l',
     0},
    {"lead removes a partner that declined", CASE_CMD_REMOVE, 0, 0, 'L', BEHALF_NONE, 'd', 0, 0,
     NOT_PERMITTED, TARGET " is neither a member of nor invited to case " CASE_ID, NULL, 0, 0},
    {"lead removes a partner that left", CASE_CMD_REMOVE, 0, 0, 'L', BEHALF_NONE, 'l', 0, 0,
     NOT_PERMITTED, TARGET " is neither a member of nor invited to case " CASE_ID, NULL, 0, 0},
    {"lead removes a stranger", CASE_CMD_REMOVE, 0, 0, 'L', BEHALF_NONE, 'n', 0, 0, NOT_PERMITTED,
     TARGET " is neither a member of nor invited to case " CASE_ID, NULL, 0, 0},
    {"remove the lead, for the lead", CASE_CMD_REMOVE, 0, 0, 'n', BEHALF_OK, 'L', 0, 0,
     NOT_PERMITTED, "the lead partner riec cannot leave case " CASE_ID "; close the case instead",
     NULL, 0, 0},
    {"a member removes another", CASE_CMD_REMOVE, 0, 0, 'm', BEHALF_NONE, 'm', 0, 0, NOT_PERMITTED,
     "only the lead partner riec removes partners from case " CASE_ID, NULL, 0, 0},
    {"lead removes from a closed case", CASE_CMD_REMOVE, 1, 0, 'L', BEHALF_NONE, 'm', 0, 0,
     IS_CLOSED, CLOSED_TEXT, NULL, 0, 1},
    {"a stranger removes", CASE_CMD_REMOVE, 0, 0, 'n', BEHALF_NONE, 'm', 0, 0, NOT_FOUND, NF, NULL,
     0, 0},

    /* ---- note, attach, link */
    {"member notes", CASE_CMD_NOTE, 0, 0, 'm', BEHALF_NONE, 0, 0, 0, OK, NULL, NULL, 0, 0},
    {"lead notes", CASE_CMD_NOTE, 0, 0, 'L', BEHALF_NONE, 0, 0, 0, OK, NULL, NULL, 0, 0},
    {"a note for the lead", CASE_CMD_NOTE, 0, 0, 'n', BEHALF_OK, 0, 0, 0, OK, NULL, NULL, 0, 0},
    {"invited partner notes", CASE_CMD_NOTE, 0, 0, 'i', BEHALF_NONE, 0, 0, 0, NOT_PERMITTED,
     MEMBER_PARTNER " is invited to case " CASE_ID
                    " but not a member yet: accept the invitation first",
     NULL, 0, 0},
    {"member notes on a closed case", CASE_CMD_NOTE, 1, 0, 'm', BEHALF_NONE, 0, 0, 0, IS_CLOSED,
     CLOSED_TEXT, NULL, 0, 1},
    {"lead notes on a closed case", CASE_CMD_NOTE, 1, 1, 'L', BEHALF_NONE, 0, 0, 0, IS_CLOSED,
     CLOSED_TEXT, NULL, 0, 1},
    {"a note for the lead on a closed case", CASE_CMD_NOTE, 1, 0, 'n', BEHALF_OK, 0, 0, 0,
     IS_CLOSED, CLOSED_TEXT, NULL, 0, 1},
    {"a partner that left notes", CASE_CMD_NOTE, 0, 0, 'l', BEHALF_NONE, 0, 0, 0, NOT_FOUND, NF,
     NULL, 0, 0},
    {"a partner that declined notes", CASE_CMD_NOTE, 0, 0, 'd', BEHALF_NONE, 0, 0, 0, NOT_FOUND, NF,
     NULL, 0, 0},
    {"a stranger notes", CASE_CMD_NOTE, 0, 0, 'n', BEHALF_NONE, 0, 0, 0, NOT_FOUND, NF, NULL, 0, 0},
    {"a stranger notes on a closed case", CASE_CMD_NOTE, 1, 0, 'n', BEHALF_NONE, 0, 0, 0, NOT_FOUND,
     NF, NULL, 0, 1},
    {"a member notes for a lead it may not act for", CASE_CMD_NOTE, 0, 0, 'm', BEHALF_DENIED, 0, 0,
     0, NOT_PERMITTED, NO_ACT, NULL, 0, 0},
    {"member attaches", CASE_CMD_ATTACH, 0, 0, 'm', BEHALF_NONE, 0, 0, 0, OK, NULL, NULL, 0, 0},
    {"invited partner attaches", CASE_CMD_ATTACH, 0, 0, 'i', BEHALF_NONE, 0, 0, 0, NOT_PERMITTED,
     MEMBER_PARTNER " is invited to case " CASE_ID
                    " but not a member yet: accept the invitation first",
     NULL, 0, 0},
    {"member attaches to a closed case", CASE_CMD_ATTACH, 1, 0, 'm', BEHALF_NONE, 0, 0, 0,
     IS_CLOSED, CLOSED_TEXT, NULL, 0, 1},
    {"a stranger attaches", CASE_CMD_ATTACH, 0, 0, 'n', BEHALF_NONE, 0, 0, 0, NOT_FOUND, NF, NULL,
     0, 0},
    {"member links a signal", CASE_CMD_LINK, 0, 0, 'm', BEHALF_NONE, 0, 0, 0, OK, NULL, NULL, 0, 0},
    {"lead links a signal", CASE_CMD_LINK, 0, 0, 'L', BEHALF_NONE, 0, 0, 0, OK, NULL, NULL, 0, 0},
    {"invited partner links a signal", CASE_CMD_LINK, 0, 0, 'i', BEHALF_NONE, 0, 0, 0,
     NOT_PERMITTED,
     MEMBER_PARTNER " is invited to case " CASE_ID
                    " but not a member yet: accept the invitation first",
     NULL, 0, 0},
    {"member links to a closed case", CASE_CMD_LINK, 1, 0, 'm', BEHALF_NONE, 0, 0, 0, IS_CLOSED,
     CLOSED_TEXT, NULL, 0, 1},
    {"a partner that left links", CASE_CMD_LINK, 0, 0, 'l', BEHALF_NONE, 0, 0, 0, NOT_FOUND, NF,
     NULL, 0, 0},

    /* ---- close */
    {"lead closes", CASE_CMD_CLOSE, 0, 0, 'L', BEHALF_NONE, 0, 0, 0, OK, NULL, NULL, 0, 1},
    {"close for the lead", CASE_CMD_CLOSE, 0, 0, 'n', BEHALF_OK, 0, 0, 0, OK, NULL, NULL, 0, 1},
    {"member closes", CASE_CMD_CLOSE, 0, 0, 'm', BEHALF_NONE, 0, 0, 0, NOT_PERMITTED,
     "only the lead partner riec closes case " CASE_ID, NULL, 0, 0},
    {"invited partner closes", CASE_CMD_CLOSE, 0, 0, 'i', BEHALF_NONE, 0, 0, 0, NOT_PERMITTED,
     "only the lead partner riec closes case " CASE_ID, NULL, 0, 0},
    {"lead closes a closed case", CASE_CMD_CLOSE, 1, 1, 'L', BEHALF_NONE, 0, 0, 0, IS_CLOSED,
     "case " CASE_ID " is already closed", NULL, 0, 1},
    {"a stranger closes", CASE_CMD_CLOSE, 0, 0, 'n', BEHALF_NONE, 0, 0, 0, NOT_FOUND, NF, NULL, 0,
     0},
    {"a stranger closes for a lead it may not act for", CASE_CMD_CLOSE, 0, 0, 'n', BEHALF_DENIED, 0,
     0, 0, NOT_FOUND, NF, NULL, 0, 0},

    /* ---- reopen */
    {"lead reopens", CASE_CMD_REOPEN, 1, 1, 'L', BEHALF_NONE, 0, 0, 0, OK, NULL, NULL, 0, 0},
    {"reopen for the lead", CASE_CMD_REOPEN, 1, 1, 'n', BEHALF_OK, 0, 0, 0, OK, NULL, NULL, 0, 0},
    {"lead reopens, type does not allow it", CASE_CMD_REOPEN, 1, 0, 'L', BEHALF_NONE, 0, 0, 0,
     NOT_PERMITTED, "case type " CASE_TYPE " does not allow reopening a closed case", NULL, 0, 1},
    {"lead reopens an open case", CASE_CMD_REOPEN, 0, 1, 'L', BEHALF_NONE, 0, 0, 0, NOT_PERMITTED,
     "case " CASE_ID " is open; only a closed case is reopened", NULL, 0, 0},
    {"member reopens", CASE_CMD_REOPEN, 1, 1, 'm', BEHALF_NONE, 0, 0, 0, NOT_PERMITTED,
     "only the lead partner riec reopens case " CASE_ID, NULL, 0, 1},
    {"a stranger reopens", CASE_CMD_REOPEN, 1, 1, 'n', BEHALF_NONE, 0, 0, 0, NOT_FOUND, NF, NULL, 0,
     1},
    {"a partner that left reopens", CASE_CMD_REOPEN, 1, 1, 'l', BEHALF_NONE, 0, 0, 0, NOT_FOUND, NF,
     NULL, 0, 1},
};

/* A principal its own partner's membership rule does not reach (a role
 * the rule leaves out) sees nothing of the case through its partner, lead
 * or member; acting for the lead is a different matter. */
static const row_t unreached_rows[] = {
    {"unreached principal of the lead notes", CASE_CMD_NOTE, 0, 0, 'L', BEHALF_NONE, 0, 0, 0,
     NOT_FOUND, NF, NULL, 0, 0},
    {"unreached principal of a member notes", CASE_CMD_NOTE, 0, 0, 'm', BEHALF_NONE, 0, 0, 0,
     NOT_FOUND, NF, NULL, 0, 0},
    {"unreached principal of the lead closes", CASE_CMD_CLOSE, 0, 0, 'L', BEHALF_NONE, 0, 0, 0,
     NOT_FOUND, NF, NULL, 0, 0},
    {"unreached principal of an invited partner accepts", CASE_CMD_ACCEPT, 0, 0, 'i', BEHALF_NONE,
     0, 0, 0, NOT_FOUND, NF, NULL, 0, 0},
    {"unreached member, for a lead it may not act for", CASE_CMD_NOTE, 0, 0, 'm', BEHALF_DENIED, 0,
     0, 0, NOT_FOUND, NF, NULL, 0, 0},
    {"unreached principal, for the lead", CASE_CMD_NOTE, 0, 0, 'n', BEHALF_OK, 0, 0, 0, OK, NULL,
     NULL, 0, 0},
};

static case_member_state_t standing(char letter)
{
    switch (letter) {
    case 'i':
        return CASE_MEMBER_INVITED;
    case 'm':
    case 'L':
        return CASE_MEMBER_MEMBER;
    case 'd':
        return CASE_MEMBER_DECLINED;
    case 'l':
        return CASE_MEMBER_LEFT;
    default:
        return CASE_MEMBER_NONE;
    }
}

static case_facts_t facts_of(const row_t *r, int reached)
{
    case_facts_t f = {
        .command = r->command,
        .case_id = r->command == CASE_CMD_OPEN ? NULL : CASE_ID,
        .case_type = CASE_TYPE,
        .lead = LEAD,
        .closed = r->closed,
        .reopen_allowed = r->reopen_allowed,
        .on_behalf = r->on_behalf,
        .on_behalf_of = r->on_behalf != BEHALF_NONE ? LEAD : NULL,
        .target_has_rule = r->target_rule,
        .n_members = r->n_members,
        .actor_reached = reached,
    };
    if (r->actor == 'L') {
        f.actor_partner = LEAD;
        f.actor_state = CASE_MEMBER_MEMBER;
    } else {
        f.actor_partner =
            r->on_behalf != BEHALF_NONE && r->actor == 'n' ? HELPER_PARTNER : MEMBER_PARTNER;
        f.actor_state = standing(r->actor);
    }
    if (r->target == 'L') {
        f.target = LEAD;
        f.target_state = CASE_MEMBER_MEMBER;
    } else if (r->target != 0) {
        f.target = TARGET;
        f.target_state = standing(r->target);
    }
    return f;
}

static size_t run_rows(const row_t *table, size_t n, int reached)
{
    size_t failures = 0;
    for (size_t i = 0; i < n; i++) {
        const row_t *r = &table[i];
        case_facts_t f = facts_of(r, reached);
        case_transition_t t;
        verdict_t v = case_state_decide(&f, &t);
        int want_allow = r->reason == OK;
        int bad = v != t.verdict || (v == VERDICT_ALLOW) != want_allow;
        if (!bad && want_allow) {
            bad = (r->partner == NULL) != (t.partner == NULL) ||
                  (r->partner != NULL && strcmp(r->partner, t.partner) != 0) ||
                  (r->partner != NULL && (char)t.new_state != r->new_state) ||
                  t.closed_after != r->closed_after || t.reason != OK || t.text[0] != '\0';
        } else if (!bad) {
            bad = t.reason != r->reason || strcmp(t.text, r->text) != 0 || t.partner != NULL;
        }
        if (bad) {
            failures++;
            fprintf(stderr,
                    "row '%s': got %s reason %d text '%s' partner %s state %c closed %d; "
                    "want %s reason %d text '%s' partner %s state %c closed %d\n",
                    r->name, v == VERDICT_ALLOW ? "allow" : "deny", (int)t.reason, t.text,
                    t.partner ? t.partner : "-", t.new_state ? (char)t.new_state : '-',
                    t.closed_after, want_allow ? "allow" : "deny", (int)r->reason,
                    r->text ? r->text : "", r->partner ? r->partner : "-",
                    r->new_state ? r->new_state : '-', r->closed_after);
        }
    }
    return failures;
}

static void test_rows(void **state)
{
    (void)state;
    assert_int_equal(run_rows(rows, sizeof rows / sizeof rows[0], 1), 0);
    assert_int_equal(run_rows(unreached_rows, sizeof unreached_rows / sizeof unreached_rows[0], 0),
                     0);
}

/* Every command, open or closed, by a partner that never was invited, that
 * declined or that left, acting for nobody or naming a lead it may not act
 * for: exactly the answer for an id that does not exist. */
static void test_outsiders_learn_nothing(void **state)
{
    (void)state;
    static const case_member_state_t outsiders[] = {CASE_MEMBER_NONE, CASE_MEMBER_DECLINED,
                                                    CASE_MEMBER_LEFT};
    static const case_on_behalf_t claims[] = {CASE_ON_BEHALF_NONE, CASE_ON_BEHALF_DENIED};
    char unknown[SCHAKEL_MAX_REJECT_TEXT];
    case_state_not_found_text("C-00000077", unknown, sizeof unknown);
    assert_string_equal(unknown, "no case C-00000077 that you can see");
    size_t checked = 0;
    for (int cmd = CASE_CMD_INVITE; cmd < CASE_CMD_COUNT; cmd++)
        for (int closed = 0; closed <= 1; closed++)
            for (size_t s = 0; s < 3; s++)
                for (size_t c = 0; c < 2; c++)
                    for (int reopen = 0; reopen <= 1; reopen++) {
                        case_facts_t f = {
                            .command = (case_command_t)cmd,
                            .case_id = "C-00000077",
                            .case_type = CASE_TYPE,
                            .lead = LEAD,
                            .closed = closed,
                            .reopen_allowed = reopen,
                            .actor_partner = MEMBER_PARTNER,
                            .actor_state = outsiders[s],
                            .on_behalf = claims[c],
                            .on_behalf_of = claims[c] != CASE_ON_BEHALF_NONE ? LEAD : NULL,
                            .target = TARGET,
                            .target_state = CASE_MEMBER_MEMBER,
                            .target_has_rule = 1,
                            .actor_reached = 1,
                        };
                        case_transition_t t;
                        assert_int_equal(case_state_decide(&f, &t), VERDICT_DENY);
                        assert_int_equal(t.reason, SCHAKEL__REASON__NOT_FOUND);
                        assert_string_equal(t.text, unknown);
                        assert_null(t.partner);
                        checked++;
                    }
    assert_int_equal(checked, (CASE_CMD_COUNT - CASE_CMD_INVITE) * 2 * 3 * 2 * 2);
}

/* Members, the lead and who acts for it never get NOT_FOUND: they see the
 * case, and are told why a command is refused. */
static void test_insiders_are_told_why(void **state)
{
    (void)state;
    static const char actors[] = {'L', 'i', 'm'};
    for (int cmd = CASE_CMD_INVITE; cmd < CASE_CMD_COUNT; cmd++)
        for (int closed = 0; closed <= 1; closed++)
            for (size_t a = 0; a < sizeof actors + 1; a++) {
                row_t r = {.command = (case_command_t)cmd,
                           .closed = closed,
                           .actor = a < sizeof actors ? actors[a] : 'n',
                           .on_behalf = a < sizeof actors ? BEHALF_NONE : BEHALF_OK,
                           .target = 'm',
                           .target_rule = 1};
                case_facts_t f = facts_of(&r, 1);
                case_transition_t t;
                case_state_decide(&f, &t);
                if (t.verdict == VERDICT_DENY) {
                    assert_int_not_equal(t.reason, SCHAKEL__REASON__NOT_FOUND);
                    assert_true(t.text[0] != '\0');
                }
            }
}

static void test_zeroed_result_denies(void **state)
{
    (void)state;
    case_transition_t t;
    memset(&t, 0, sizeof t);
    assert_int_equal(t.verdict, VERDICT_DENY);
    case_facts_t f;
    memset(&f, 0, sizeof f); /* CASE_CMD_NONE */
    assert_int_equal(case_state_decide(&f, &t), VERDICT_DENY);
    f.command = CASE_CMD_COUNT;
    f.actor_partner = f.lead = LEAD;
    f.actor_reached = 1;
    assert_int_equal(case_state_decide(&f, &t), VERDICT_DENY);
    assert_int_equal(t.reason, SCHAKEL__REASON__INTERNAL_ERROR);
}

static void test_command_names(void **state)
{
    (void)state;
    static const struct {
        case_command_t command;
        const char *name;
    } names[] = {
        {CASE_CMD_OPEN, "open"},       {CASE_CMD_INVITE, "invite"},  {CASE_CMD_ACCEPT, "accept"},
        {CASE_CMD_DECLINE, "decline"}, {CASE_CMD_LEAVE, "leave"},    {CASE_CMD_REMOVE, "remove"},
        {CASE_CMD_NOTE, "note"},       {CASE_CMD_ATTACH, "attach"},  {CASE_CMD_LINK, "link"},
        {CASE_CMD_CLOSE, "close"},     {CASE_CMD_REOPEN, "reopen"},  {CASE_CMD_NONE, "none"},
        {CASE_CMD_COUNT, "none"},      {(case_command_t)-1, "none"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        assert_string_equal(case_command_name(names[i].command), names[i].name);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_outsiders_learn_nothing),
        cmocka_unit_test(test_insiders_are_told_why),
        cmocka_unit_test(test_zeroed_result_denies),
        cmocka_unit_test(test_command_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
