/*
 * case.h — cases in the broker loop: signed case commands and case queries.
 *
 * case.c carries out a CasePublish (a signed CaseCommand) as publish.c does
 * a Publish: rate limit, signature, idempotency by (actor, command id),
 * validation, the state machine (case_state.h) and the policy's case types,
 * then the command's evidence, the case's new state, its event and one
 * delivery per member principal (filtered by its membership rule) in the
 * turn's transaction; the Accepted waits for the commit. It also answers a
 * CaseQuery with a CaseView. Every refusal goes through broker_reject with
 * its reason code, and nothing of a refused command is stored.
 */
#ifndef SCHAKEL_CASE_H
#define SCHAKEL_CASE_H

#include "broker.h"

/* Carry out one case command from `actor` (the authenticated principal).
 * Trusts: the frame was decoded by wire_decode_frame. Queues Accepted or
 * Rejected; a store failure fails the turn (nothing of it is committed). */
void case_publish_handle(broker_t *b, session_t *session, const policy_principal_t *actor,
                         const Schakel__CasePublish *publish);

/* Answer a CaseQuery: without case_id the cases the asker's partner is a
 * member of or invited to; with one, that case and its timeline as the
 * asker's membership rule lets it see it (an invited partner: the case
 * without its timeline). A case the asker may not see is NOT_FOUND, worded
 * as for an id that does not exist. Every answer shown is on the audit
 * trail in the same turn ("case.listed", or "case.viewed": one tagged with
 * the case's subject and one per other subject of linked signals shown);
 * one that cannot be recorded is refused instead. */
void case_query_handle(broker_t *b, session_t *session, const policy_principal_t *asker,
                       const Schakel__CaseQuery *query);

/* What a CaseView was decided on (case_view.c): the asker's partner, the
 * case (or the list), the membership rule of each (case type, lead) it
 * shows, and what its entries recorded. Freed and wiped (it names
 * pseudonyms) by case_view_check_free, which is idempotent. */
typedef struct case_view_check case_view_check_t;
void case_view_check_free(case_view_check_t **check);

/* A CaseView decided under an older policy is leaving (held for the sync
 * of its turn, or answered in the turn of an operator's reload): decided
 * again under the policy in force and a reload not yet recorded, if any
 * (what it withdraws is withdrawn at once, as for deliveries). 1: it may
 * leave as it is; each (case type, lead) it shows still reaches the
 * asker's principal, of the same partner, and for one case under the same
 * membership rule, same id and content hash, which decides every field it
 * shows. 0: it may not; *reason and text (of textlen bytes) are the
 * refusal the asker gets instead: for one case that no rule lets the
 * asker see any more, NOT_FOUND worded as for an unknown id (what a read
 * now gets); else UNAVAILABLE, "ask again" (asked again, the view is
 * decided under the new policy). The withholding is counted, logged and
 * recorded (record_case_view_withheld: the view's entries said shown).
 * Trusts check (made by case_view.c). */
int case_view_decide_again(broker_t *b, const char *principal, const case_view_check_t *check,
                           Schakel__Reason *reason, char *text, size_t textlen);

/* A CaseView recorded as shown was not sent after all (decided again and
 * refused, or dropped because a reload revoked the asker's key): one
 * case.view_withheld entry against each of its case.viewed entries (or a
 * case.list_withheld), with `reason` (record_case_view_withheld). */
void case_view_withheld(broker_t *b, const char *principal, const case_view_check_t *check,
                        Schakel__Reason reason);

/* 1 after queueing CASE_IDS_EXHAUSTED (and case_ids_watch) when no case id
 * is left, else 0: case.c asks it of an allowed open before the store's
 * bounds, so that an open refused for good is told so, not to retry. */
int case_ids_exhausted_refuses(broker_t *b, const session_t *session, const uint8_t *command_id);

/* Before a case open is stored (its command allowed): 1 when it may go
 * on, 0 after queueing its refusal, CASE_IDS_EXHAUSTED when no case id is
 * left (then case_ids_watch), else RATE_LIMITED when `actor` has used its
 * case-open budget (b->case_opens_per_hour) or its partner has
 * (b->case_opens_per_hour_per_partner): a token of each taken when it goes
 * on, given back if the turn rolls back (sessions_case_opens_settle). */
int case_ids_admit_open(broker_t *b, const session_t *session, const policy_principal_t *actor,
                        const uint8_t *command_id);

/* At start, after each case open and at each open refused for want of an
 * id: when fewer than SCHAKEL_CASE_IDS_LOW case ids are left, log
 * case.ids_low (WARN, how many), or case.ids_exhausted (ERROR) once none
 * is; each at once when the state begins, then at most once an hour
 * (now_ms: the monotonic clock). */
void case_ids_watch(broker_t *b, int64_t now_ms);

/* At start and after a reload: open cases whose case type or lead partner
 * the policy in force does not have any more, or whose lead is no longer
 * one of its type's lead partners, can be closed by nobody (their
 * retention does not start). Each such (type, lead) is logged as
 * "cases.unreachable" with how many and why; returns how many cases in
 * all, or -1 when the store could not be read (logged). */
long case_check_reachable(broker_t *b);

/* For the push (deliver.c): the membership rule a waiting case delivery
 * was queued under still exists in `policy` (the one in force, or a reload
 * not yet recorded), in that very version (id and content hash), and
 * still reaches `recipient` (a principal of that policy, or NULL). */
int case_delivery_still_allowed(const policy_t *policy, const store_delivery_t *d,
                                const policy_principal_t *recipient);

#endif
