/*
 * record.h — the one place where the broker records what it decided.
 *
 * Every acceptance, refusal, delivery, ack, expiry, authentication
 * decision, policy reload and operator action goes through here. Each
 * writes a key=value log line and an entry of the audit trail (audit.h) in
 * the turn's open transaction (begun here if none is), so the entry
 * commits with the action or neither does. When the entry cannot be
 * written the function fails the turn (broker_fail_turn) and returns -1:
 * the turn is rolled back instead of committed, publishes of the turn are
 * refused (UNAVAILABLE on a storage condition), acks and expiries do not
 * happen, admissions are not granted. An entry of what stands whatever
 * becomes of its turn (a refusal, a view withheld) is carried instead
 * (record_admin_refused): kept until the trail holds it, its failure
 * failing nothing. Ids and metadata only, never
 * contents. Trusts its callers: strings come from the wire module
 * (validated) or the policy; free texts are cleaned before they are kept.
 */
#ifndef SCHAKEL_RECORD_H
#define SCHAKEL_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "keys.h"
#include "schakel.pb-c.h"
#include "store.h"
#include "zap.h"

struct broker;

int record_accepted(struct broker *b, const char *sender, const uint8_t message_id[16],
                    size_t n_items, size_t n_deliveries, int duplicate);

/* A refusal: the principal, the publish's message id (NULL when the
 * request was no publish), the item at fault (-1: the whole request), the
 * reason code and its text. A refusal never names a rule: the policy has
 * no deny rules, so what decided is the absence of an allowing one. */
int record_refused(struct broker *b, const char *principal, const uint8_t *message_id,
                   Schakel__Reason reason, const char *text, int item_index);
/* A refusal beyond the limits of refusals.h (broker_reject asks
 * refusals_take first): only logged (the same line, with recorded=counted);
 * record_turn_end writes the window's summary ("request.refused_summary",
 * which principals, how many each) when it ends, record_stopped at a
 * stop. */
void record_refused_counted(const char *principal, const uint8_t *message_id,
                            Schakel__Reason reason, const char *text, int item_index);
/* The entry of record_refused without its log line, in the turn's
 * transaction (a refusal the limits of refusals.h let through unlogged). */
int record_refused_entry(struct broker *b, const char *principal, const uint8_t *message_id,
                         Schakel__Reason reason, const char *text, int item_index);
/* The same entry (with record_refused's log line when `logged`), for a
 * refusal made or written again after its turn was rolled back (a
 * refusal whose entry went with the turn, a publish whose acceptance
 * did): carried as record_admin_refused's is, but not written into the
 * next turn's transaction: a settle writes it in a transaction of its
 * own, after the pause a failed write starts (the rollback was one). */
void record_refused_carried(struct broker *b, const char *principal, const uint8_t *message_id,
                            Schakel__Reason reason, const char *text, int item_index, int logged);

/* One delivery queued to a recipient under a rule: what the data-subject
 * export needs. */
typedef struct record_delivery {
    const char *sender;
    const char *recipient;
    const char *recipient_partner;
    uint64_t seq; /* mailbox seq */
    uint64_t item_seq;
    const uint8_t *message_id; /* 16 bytes */
    uint32_t item_index;
    const char *kind;
    const char *theme;
    const char *subject; /* the signal's pseudonym, NULL when it names none */
    /* its audit tag (store_subject_tag) when the caller has it already (an
     * item's deliveries share it), else NULL: record_queued computes it */
    const char *subject_tag;
    const char *rule_id;
    const char *rule_hash;
    const char *purpose;
    const char *legal_basis;
    uint32_t fields; /* the rule's enum signal_field mask: what the recipient gets */
    int64_t expires_at;
} record_delivery_t;
/* Kept, not written: the deliveries of one item (same item_seq, sender,
 * message id, item index, kind, theme and subject) become one
 * "delivery.queued" entry listing them (deliveries, store.h), written when
 * a delivery of another item arrives, before any other entry, and at
 * record_turn_end; more than STORE_AUDIT_MAX_QUEUED_DELIVERIES make an
 * entry per that many. Returns 0, or -1 with the turn failed (a turn that
 * failed before, ids too long to keep, out of memory, or a kept entry that
 * could not be written); the delivery must then not be committed. */
int record_queued(struct broker *b, const record_delivery_t *delivery);

/* A delivery sent (or sent again) to a receiving session: a log line only.
 * Sends happen after the commit and cannot wait for another one without a
 * second fsync per turn; what was delivered under which rule is the
 * queued entry, and receipt is the ack entry. */
void record_delivered(const char *recipient, uint64_t seq, int redelivery);

/* A delivery acked by its recipient (its delete is in the turn's
 * transaction). Kept until the turn ends: record_turn_end writes one
 * "delivery.acked" entry per recipient listing the turn's acked seqs
 * (more only past STORE_AUDIT_MAX_ACKED_SEQS seqs, an entry per that many,
 * written as each fills). Returns 0, or -1 with the turn failed: out of
 * memory, an entry that could not be written, or a turn that failed
 * before; the ack must then not be counted. */
int record_acked(struct broker *b, const char *recipient, uint64_t seq);

/* Whether recipient acked delivery seq in this turn, its entry not
 * written yet (record_acked keeps it until the turn ends): 1 or 0. Cost:
 * a walk of the recipient's kept seqs, at most STORE_AUDIT_MAX_ACKED_SEQS. */
int record_acked_in_turn(const struct broker *b, const char *recipient, uint64_t seq);

/* A delivery's retention ended: its body is gone, a tombstone stays. */
int record_expired(struct broker *b, const store_expired_t *expired);

/* What the broker knows, as it withdraws or sets aside a delivery, of
 * whether it was ever pushed: only this run's pushes are known (a
 * receiver's highest seq sent, in memory), so one that waited since
 * before the start is unknown unless this run sent it. A zeroed value
 * claims nothing. */
typedef enum record_sent {
    RECORD_SENT_UNKNOWN = 0, /* waiting since before the start: an earlier run may have sent it */
    RECORD_SENT_NO,          /* queued since the start, and this run never sent it */
    RECORD_SENT_YES,         /* this run sent it (handed to a connection), unacked */
} record_sent_t;

/* A waiting delivery the policy in force no longer allows was removed,
 * unacked (sent or not, as `sent` says: detail sent=yes|no|unknown): its
 * body is gone, a tombstone stays. */
int record_revoked(struct broker *b, const store_expired_t *revoked, record_sent_t sent);

/* The same "delivery.revoked" entry, for another reason `why` (a partner
 * that left a case or was removed from it takes its waiting deliveries
 * of the case along; a principal the policy no longer has, its
 * mailbox). */
int record_withdrawn(struct broker *b, const store_expired_t *withdrawn, const char *why,
                     record_sent_t sent);

/* A waiting delivery was set aside (store_delivery_set_aside): a
 * "delivery.set_aside" entry (recipient, item and delivery seq, rule id
 * and hash, reason; detail sent=yes|no|unknown as `sent` says, as a
 * revocation's: the recipient may hold one sent and never acked) in the
 * turn's transaction, the counter schakel_deliveries_set_aside_total (set
 * back if the turn rolls back) and a log line at error level once the
 * turn commits (record_turn_settle): said once however often a turn
 * fails. 0, or -1 with the turn failed. */
int record_set_aside(struct broker *b, const store_set_aside_t *set_aside, record_sent_t sent);

/* The rows set aside that the trail does not name yet (the schema-9
 * migration's, of this start or of an earlier opening that could not
 * record them: store_set_aside_unrecorded), each recorded as
 * record_set_aside does (sent=unknown: they waited since before the
 * start), committed a batch at a time. 0, or -1 (logged, rolled back:
 * those left are found again at the next start). */
int record_set_aside_unrecorded(struct broker *b);

/* Each delivery of the set-aside row from first_seq to last_seq that was
 * not done (store_mailbox_row_set_aside_get) recorded as record_set_aside
 * does, inside the open turn, sent as deliver_sent says of the recipient
 * its row names (unknown when that does not read). Every set-aside is
 * recorded so, a row set aside again after an operator put it back
 * included: the trail then names its seqs twice. 0, or -1 with the turn
 * failed (logged). */
int record_set_aside_seqs(struct broker *b, uint64_t first_seq, uint64_t last_seq);

/* The same for the rows a store call of this turn set aside on its own,
 * because it could not read them (an expiry: store_mailbox_row_expire; a
 * case's drop), taken from the store's list of them
 * (store_mailbox_row_set_aside_take). 0, or -1 with the turn failed
 * (logged). */
int record_set_aside_in_turn(struct broker *b);

/* The same offline (schakeld --rekey, --restored: no broker, no counter),
 * in the store's open transaction, which the caller commits: each row's
 * log line, and its entry appended with audit_append at `now` (key signs
 * the checkpoints it makes; NULL: none). Returns how many were recorded,
 * or -1 with store_errmsg set (nothing to commit). */
int64_t record_set_aside_offline(store_t *store, const keypair_t *key, int64_t now);

/* A ZAP decision (a zap_record_fn; arg is the broker). The admission is
 * granted only if the turn that holds this entry commits (zap_flush); a
 * refusal rolled back with its turn is recorded again (decision->again:
 * no second log line), and an admission rolled back is recorded as the
 * refusal it became (decision->unrecorded: actor the principal, reason
 * ZAP_WHY_UNRECORDED), both carried as record_refused_carried's is. A
 * refusal beyond the limits of refusals.h is only counted (returns 1):
 * record_turn_end writes the window's summary ("auth.refused_summary")
 * when it ends, record_stopped at a stop. */
int record_auth(void *broker, const zap_decision_t *decision);

/* A policy reload took effect: old and new policy hash; requested_by is
 * an operator principal or a word such as "SIGHUP". Unlike the others this
 * commits at once (a reload is not part of a turn) and returns 0 only when
 * the entry is on disk: the caller swaps the policy only then. */
int record_policy_reloaded(struct broker *b, const char *requested_by, const char *old_hash,
                           const char *new_hash);
/* A reload that was refused (the old policy stays): why, and the kept
 * hash. Committed at once (0); an entry that cannot commit now (-1) is
 * carried as record_refused_carried's is. */
int record_policy_refused(struct broker *b, const char *requested_by, const char *kept_hash,
                          const char *error);

/* An operator action (the admin endpoint): event "admin.<action>" (action
 * an id token, e.g. "reload", "status"), the operator principal, and
 * details (metadata only; cleaned). In the turn's transaction: execute the
 * action only after that turn committed. */
int record_admin(struct broker *b, const char *operator_principal, const char *action,
                 const char *details);

/* A refused operator request: event "admin.refused", the operator (or the
 * principal a dropped request came from) and details as for record_admin.
 * The refusal stands whether or not it is recorded, so its entry is
 * carried: written now in the open transaction, and again after each
 * turn's end that does not find it on the trail (record_turn_settle), in
 * the order the entries were carried, until one finds it committed; one
 * written in a later second than it was carried ends its detail with
 * " decided_at=T". At a stop it goes into broker.stopped's transaction
 * (record_stopped), and one still owed when record_release runs is logged
 * (audit.not_recorded). Its write failing does not fail the turn (it is
 * logged, audit.write_failed, and tried again). At most
 * SCHAKEL_AUDIT_MAX_CARRIED entries are carried at a time, of every kind
 * (record_refused_carried, record_auth's again, record_case_view_withheld,
 * record_policy_refused's), of which partners' entries take at most all
 * but SCHAKEL_AUDIT_CARRIED_RESERVED, and one actor's at most
 * SCHAKEL_AUDIT_MAX_CARRIED_PER_ACTOR; past that one is written once
 * (audit.not_carried, counted: schakel_audit_entries_not_carried_total).
 * The log line admin.action is written at once. 0 when written now, else
 * -1. */
int record_admin_refused(struct broker *b, const char *operator_principal, const char *details);

/* A data-subject export through the broker (audit_export_*, admin.c): event
 * "admin.audit_subject" naming the pseudonym (by its tag), so that the
 * export itself shows in the subject's next export, and the request it
 * answers (detail "request_id=N entries=M"): the request has its own
 * entry, "admin.audit-subject", written as it was read (record_admin), and
 * its admin.action log line; this one is what was handed out, and logs
 * nothing. In the turn's transaction: hand the export out only after that
 * turn committed. */
int record_subject_export(struct broker *b, const char *operator_principal, const char *pseudonym,
                          uint64_t request_id, size_t entries);

/* One case command carried out (docs/PROTOCOL.md "Cases"): event
 * "case.opened", "case.invited", "case.joined", "case.declined",
 * "case.left" (left or removed), "case.note", "case.attachment",
 * "case.closed", "case.reopened" or "case.signal_linked". Ids and
 * metadata only: never note text, field values, attachment bytes or the
 * title. The actor, and for whom it acted, are both named. */
typedef struct record_case {
    const char *event;
    const char *actor;        /* the principal that acted */
    const char *on_behalf_of; /* the lead partner it acted for, or NULL */
    const char *case_id;
    const char *case_type;
    const char *lead;          /* lead partner */
    const char *partner;       /* invited, joined, declined, left or removed partner; NULL */
    const uint8_t *command_id; /* 16 bytes */
    uint64_t item_seq;         /* the signed command's item (its evidence) */
    uint64_t event_seq;
    const char *rule_id; /* the membership rule concerned, else the case type */
    const char *rule_hash;
    const char *subject;      /* opened with a pseudonym: recorded as its tag */
    uint64_t linked_item_seq; /* signal_linked: the signal's item */
    size_t n_fields;          /* note: structured fields (their count only) */
    size_t deliveries;        /* mailboxes the event was queued for */
    size_t dropped;           /* left, removed: waiting deliveries withdrawn from it */
    int64_t expires_at;       /* closed: when the case's contents expire; else 0 */
} record_case_t;
int record_case(struct broker *b, const record_case_t *c);

/* One case event queued for a member principal under its membership rule
 * ("delivery.queued", as for signals): which rule, what it may see. */
typedef struct record_case_delivery {
    const char *actor;
    const char *recipient;
    const char *recipient_partner;
    uint64_t seq;      /* mailbox seq */
    uint64_t item_seq; /* the command that queued it */
    const uint8_t *command_id;
    const char *case_id;
    uint64_t event_seq;
    const char *event; /* "case.note", ... the event delivered */
    const char *rule_id;
    const char *rule_hash;
    const char *purpose;
    const char *legal_basis;
    const char *fields;  /* names of the event's fields the recipient got, comma-separated */
    int has_signal;      /* a linked signal went along, with the signal_fields (FIELD_*) */
    uint32_t signal_fields; /* of it: recorded as "signal:sender,kind,theme,area,..." */
    const char *subject;    /* the entry's subject (recorded as its tag), or NULL: the event's
                               own (opened, a linked signal's), else the case's, whether or not
                               the recipient's rule shows the pseudonym */
    int64_t expires_at;
} record_case_delivery_t;
int record_case_queued(struct broker *b, const record_case_delivery_t *d);

/* A principal was shown a case's timeline (CaseQuery with a case id);
 * subject: the case's pseudonym (recorded as its tag), or NULL. */
int record_case_viewed(struct broker *b, const char *principal, const char *case_id,
                       const char *subject, size_t events);

/* The same view showed `signals` linked signals about `subject` (another
 * than the case's): a "case.viewed" entry more, tagged with that subject,
 * its detail naming how many ("linked_signals=N"). 0, or -1 (the turn
 * failed). */
int record_case_viewed_signals(struct broker *b, const char *principal, const char *case_id,
                               const char *subject, size_t events, size_t signals);

/* A principal was shown the list of its partner's cases (CaseQuery
 * without a case id), `cases` of them: event "case.listed". The titles
 * are free text, so the list is recorded as a view. 0, or -1 (the turn
 * failed). */
int record_case_listed(struct broker *b, const char *principal, size_t cases);

/* A view recorded as shown (case.viewed, case.listed) was not sent after
 * all: decided again as it left after a reload, the policy then in force
 * did not show it as it was, and the asker got the refusal `reason`
 * instead. Event "case.view_withheld" (case_id set: one per case.viewed
 * entry of the view, with the same subject and counts, the reason) or
 * "case.list_withheld" (case_id NULL: `shown` cases), with a log line.
 * Decided after the view's turn committed, so carried as
 * record_admin_refused's entry is. 0 when written now, else -1 (kept, and
 * tried again; a refused write does not fail the turn). */
int record_case_view_withheld(struct broker *b, const char *principal, const char *case_id,
                              const char *subject, size_t shown, size_t signals,
                              Schakel__Reason reason);

/* The broker starts (its key, the policy hash, the version) and stops (a
 * final entry and a checkpoint over everything, after the carried entries
 * not yet on the trail: record_admin_refused). Both commit at once;
 * 0 or -1 (logged). */
int record_started(struct broker *b);
int record_stopped(struct broker *b);

/* Before each turn's commit (every commit of a turn that may hold acks
 * must come after it): the kept item's "delivery.queued" entry
 * (record_queued), the turn's "delivery.acked" entries (record_acked),
 * then a signed checkpoint when entries have waited
 * SCHAKEL_AUDIT_CHECKPOINT_IVL_S (the count-based one happens on append).
 * On failure the turn fails. A turn that failed before writes nothing and
 * forgets its acks and deliveries (they roll back with it). The entries
 * that commit at once (record_policy_*, record_started, record_stopped)
 * write kept deliveries and acks first, in the same transaction. */
void record_turn_end(struct broker *b);

/* After the turn's commit (committed 1) or rollback (0), before anything
 * else writes: the carried entries (record_admin_refused) found on the
 * trail are forgotten, the others written again in a transaction of their
 * own, committed at once; what the turn's entries summed up but did not commit is
 * kept to be recorded again (the refused handshakes of an
 * "auth.refused_summary"); the log lines of the turn's set-asides are
 * written once it committed. */
void record_turn_settle(struct broker *b, int committed);

/* Free what record.c keeps between calls (b->acks); safe to call twice. */
void record_release(struct broker *b);

#endif
