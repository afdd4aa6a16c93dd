/*
 * case_internal.h — what case.c (commands) and case_view.c (queries,
 * push checks) share, implemented in case_event.c: a case's member rows,
 * whether an asker can see a case at all, an event reduced to a
 * membership rule, reading events one at a time, and whether a partner
 * received a signal. Private to those three files.
 */
#ifndef SCHAKEL_CASE_INTERNAL_H
#define SCHAKEL_CASE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "broker.h"

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

#endif
