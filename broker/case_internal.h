/*
 * case_internal.h — what the case files share. Implemented in case_event.c,
 * for the commands (case.c, case_plan.c, case_deliver.c) and case_view.c
 * (queries, push checks): a case's member rows, whether an asker can see a
 * case at all, an event reduced to a membership rule, reading events one
 * at a time, and whether a partner received a signal. Then the command
 * being carried out (case_cmd_t) and what its three files share. Private
 * to the case files.
 */
#ifndef SCHAKEL_CASE_INTERNAL_H
#define SCHAKEL_CASE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "broker.h"
#include "case_state.h"

/* One member row of a case, copied out of the store. */
typedef struct case_member {
    char partner[SCHAKEL_MAX_ID_LEN + 1];
    char state; /* 'i', 'm', 'd', 'l' (case_member_state_t) */
    char rule_id[SCHAKEL_MAX_ID_LEN + 1];
    char rule_hash[65];
} case_member_t;

typedef struct case_members {
    case_member_t *rows; /* malloc'd */
    size_t n, cap;
} case_members_t;

/* Every member row of the case, in the order they were added. Returns 0,
 * or -1 (store error or out of memory; *m is then empty). */
int case_members_load(store_t *store, const char *case_id, case_members_t *m);
void case_members_free(case_members_t *m);
/* The row of a partner, or NULL. */
const case_member_t *case_members_find(const case_members_t *m, const char *partner);

/* Whether `asker` can possibly see case `case_id`, decided before anything
 * of the case itself is read: its partner has a row in the case as a
 * member or invited, or (a command's on_behalf_of, NULL: none) it names
 * another partner that the policy lets it act for in some case type and
 * that is a member. The lead qualifies by its own row: it is a member's
 * from the open on and no command changes it (case_state.c refuses the
 * lead's leave, removal, invitation and answers). A necessary condition
 * of case_state_decide's visibility and of a view's, never more: whoever
 * passes gets the full decision. Reads one (case_id, partner) index entry
 * per partner asked about, never the case row, so a case the asker cannot
 * see costs what an id never used costs, and no damage of its row shows.
 * Returns 1 (maybe: decide), 0 (no: NOT_FOUND), -1 on a store error. */
int case_may_be_visible(broker_t *b, const policy_principal_t *asker, const char *case_id,
                        const char *on_behalf_of);

/* An event reduced to what one membership rule lets its members see. */
typedef struct case_filtered {
    uint8_t *body; /* the packed CaseEvent, malloc'd */
    size_t len;
    char *seen;          /* the content fields kept ("text,financieel,..."), for the audit */
    const char *subject; /* the pseudonym it shows (borrowed from the event), or NULL */
    int has_signal;      /* it carries the linked signal, with these of its fields: */
    uint32_t signal_fields; /* FIELD_* bits (sender, kind and theme always go along) */
} case_filtered_t;

/* Reduce `full` for members under `rule`: the note text and close/reopen
 * reasons only with "text", each note field only by its name, the
 * attachment only with "attachments" (and without_bytes: listed with empty
 * content, for a CaseView with no room for them; a real attachment is
 * never empty), the opened case's subject and address only by
 * those names, a linked signal (`linked`: full->signal decoded; NULL
 * drops it) only with the rule's signal fields (named in has_signal and
 * signal_fields, not in seen: the audit entry spells them out). Ids, kind,
 * actor, times, members, title and area always pass. Returns 0, or -1 out
 * of memory. */
int case_event_filter(const Schakel__CaseEvent *full, const Schakel__Signal *linked,
                      const policy_case_member_rule_t *rule, int without_bytes,
                      case_filtered_t *out);
void case_filtered_free(case_filtered_t *f);

/* "case.opened", "case.invited", ... for the audit trail and the logs. */
const char *case_event_name(Schakel__CaseEventKind kind);

/* One event read from the store (a store_case_event_fn that copies the
 * first event it is given and stops). */
typedef struct case_event_copy {
    uint8_t *bytes; /* malloc'd; NULL when none was given */
    size_t len;
    uint64_t event_seq;
    int failed; /* out of memory */
} case_event_copy_t;
int case_event_copy_one(uint64_t event_seq, const uint8_t *event, size_t len, void *arg);
void case_event_copy_free(case_event_copy_t *copy);

/* The pseudonym the case was opened with (its first event), into out; ""
 * when it names none or has no events yet. Everything the trail records
 * about the case carries its tag (a linked signal's link and its
 * deliveries carry the signal's own, and a view showing it an entry
 * more), so that a data-subject export finds the case's commands,
 * deliveries and views. Returns 0, or -1 (store error, out of memory, an
 * event that does not decode). */
int case_subject_load(store_t *store, const char *case_id, char out[SCHAKEL_MAX_SUBJECT_LEN + 1]);

/* Whether `principal` was given the signal item_seq and still holds it: a
 * delivery of it was queued to the principal (its "delivery.queued" entry
 * in the audit trail), its retention has not ended (expires_at after
 * b->now_s), and it was acked, or it waits and the policy would still send
 * it (deliver_pending_check: not one revoked, set aside, or withheld by a
 * reload). 1 with *fields the signal fields that delivery carried (FIELD_*
 * bits, as recorded when it was decided), 0 no, -1 on a store error.
 * Cost: O(log entries) probes (see case_event.c), then two index lookups. */
int case_principal_received(broker_t *b, uint64_t item_seq, const char *principal,
                            uint32_t *fields);

/* ------------------------------------------------------------------ a command
 * What case.c (the handler, storing), case_plan.c (planning) and
 * case_deliver.c (the event and its deliveries) share. */

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
static inline const char *case_subject(const case_cmd_t *x)
{
    if (x->command == CASE_CMD_OPEN)
        return x->cmd->open->subject;
    return x->case_subject[0] != '\0' ? x->case_subject : NULL;
}

/* Refuse the command: a Rejected for its session (broker_reject). */
static inline void case_refuse(case_cmd_t *x, Schakel__Reason reason, const char *text)
{
    broker_reject(x->b, x->session, reason, text, x->id, -1, 0);
}

/* case_plan.c: an open (the case type, who leads, whether the opener may),
 * or a command on an existing case (visibility, the case, its members and
 * subject, the state machine, a link's signal). Each returns 0, -1 after
 * queueing the refusal, and case_plan_existing -2 on a store error. */
int case_plan_open(case_cmd_t *x);
int case_plan_existing(case_cmd_t *x);

/* case_deliver.c: the command's event built, stored and queued to the
 * members (a joiner's history first); a partner's waiting deliveries of
 * the case withdrawn, each on the trail. Each returns 0, or -1 on a store
 * or record failure (the caller fails the turn). */
int case_store_event(case_cmd_t *x, Schakel__CaseEvent *ev, char **members);
int case_drop_partner(case_cmd_t *x, const char *partner_id);

#endif
