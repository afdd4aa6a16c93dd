/*
 * record_broker.c — the entries of what the broker does on its own
 * account (see record.h): handshakes admitted and refused, policy reloads,
 * operator actions, its start and stop, the summaries of refusals only
 * counted, and what every turn's commit or rollback settles. Trusts the
 * ZAP handler and the policy for ids; peers, operators' details and policy
 * errors are cleaned. A failure to write an entry fails the turn, or is -1
 * for an entry committed at once (a reload's: the old policy stays); a
 * refused operator request's entry is carried (record_carry.c).
 */
#include <inttypes.h>
#include <stdio.h>

#include "audit.h"
#include "broker.h"
#include "log.h"
#include "record.h"
#include "record_internal.h"
#include "syntax.h"

/* ------------------------------------------------------------------ helpers */

/* Append and commit at once (actions that are not part of a turn). Acks
 * kept for the turn's end are recorded first: nothing commits a removed
 * delivery without its entry. */
static int record_append_commit(broker_t *b, store_audit_entry_t *entry)
{
    if (b->turn_failed) {
        if (!b->quiet_audit_failure)
            log_event(LOG_ERROR, "audit.write_failed", "entry",
                      entry->field[STORE_AUDIT_EVENT].text, "error",
                      "the current turn already failed", NULL);
        return -1;
    }
    if (record_queue_flush(b) != 0 || record_acks_flush(b) != 0)
        return -1;
    if (audit_append(b->store, b->key, record_now(b), entry) == 0 && store_commit(b->store) == 0)
        return 0;
    if (!b->quiet_audit_failure)
        record_write_failed(b, "audit.write_failed", entry->field[STORE_AUDIT_EVENT].text,
                            store_errmsg(b->store));
    store_rollback(b->store);
    return -1;
}

/* An id that names a principal is the actor; anything else (a signal
 * name) goes into the detail. */
static const char *record_actor(const char *requested_by)
{
    return requested_by != NULL && syntax_is_principal_id(requested_by) ? requested_by : NULL;
}

/* ------------------------------------------------------------------ handshakes */

int record_auth(void *broker, const zap_decision_t *d)
{
    broker_t *b = broker;
    char peer[128], domain[64], detail[160];
    store_audit_entry_t e;
    record_clean(d->peer, peer, sizeof peer);
    record_clean(d->domain, domain, sizeof domain);
    if (!d->admitted && !d->again && !refusals_take(&b->refusals, peer, record_now(b))) {
        /* counted for the window's summary (record_refusals_summary) */
        log_event(LOG_DEBUG, "auth.refused", "reason", d->why, "curve_key", d->key_z85, "peer",
                  peer, "domain", domain, "recorded", "counted", NULL);
        return 1;
    }
    if (d->again)
        ; /* logged when first recorded */
    else if (d->admitted)
        log_event(LOG_INFO, "auth.admitted", "principal", d->principal, "curve_key", d->key_z85,
                  "peer", peer, "domain", domain, NULL);
    else
        log_event(LOG_WARN, "auth.refused", "reason", d->why, "curve_key", d->key_z85, "peer", peer,
                  "domain", domain, d->unrecorded ? "principal" : NULL, d->principal, NULL);
    snprintf(detail, sizeof detail, "domain=%s", domain[0] != '\0' ? domain : "-");
    audit_entry_init(&e, d->admitted ? "auth.admitted" : "auth.refused");
    /* an admission refused after all names whom the key would have admitted */
    audit_set_text(&e, STORE_AUDIT_ACTOR, d->admitted || d->unrecorded ? d->principal : NULL);
    audit_set_text(&e, STORE_AUDIT_PEER, peer);
    audit_set_text(&e, STORE_AUDIT_CURVE_KEY, d->key_z85);
    if (!d->admitted)
        audit_set_text(&e, STORE_AUDIT_REASON, d->why);
    audit_set_text(&e, STORE_AUDIT_DETAIL, detail);
    if (!d->again && !d->unrecorded)
        return record_append(b, &e);
    /* its turn was rolled back: carried until the trail holds it */
    record_carry_owed(b, &e);
    return 0;
}

/* ------------------------------------------------------------------ policy */

int record_policy_reloaded(broker_t *b, const char *requested_by, const char *old_hash,
                           const char *new_hash)
{
    char detail[256], by[80];
    store_audit_entry_t e;
    snprintf(detail, sizeof detail, "old_policy=%s new_policy=%s requested_by=%s", old_hash,
             new_hash, record_clean(requested_by != NULL ? requested_by : "-", by, sizeof by));
    audit_entry_init(&e, "policy.reloaded");
    audit_set_text(&e, STORE_AUDIT_ACTOR, record_actor(requested_by));
    audit_set_text(&e, STORE_AUDIT_DETAIL, detail);
    return record_append_commit(b, &e);
}

int record_policy_refused(broker_t *b, const char *requested_by, const char *kept_hash,
                          const char *error)
{
    char detail[256], by[80], why[1024];
    store_audit_entry_t e;
    snprintf(detail, sizeof detail, "kept_policy=%s requested_by=%s", kept_hash,
             record_clean(requested_by != NULL ? requested_by : "-", by, sizeof by));
    audit_entry_init(&e, "policy.reload_refused");
    audit_set_text(&e, STORE_AUDIT_ACTOR, record_actor(requested_by));
    audit_set_text(&e, STORE_AUDIT_REASON, record_clean(error, why, sizeof why));
    audit_set_text(&e, STORE_AUDIT_DETAIL, detail);
    /* Committed at once, as a successful reload is: the refusal is on the
     * record when it is reported, not only after the next turn. One that
     * cannot commit now is carried: the reload was refused all the same. */
    if (record_append_commit(b, &e) == 0)
        return 0;
    record_carry_owed(b, &e);
    return -1;
}

/* ------------------------------------------------------------------ operators */

int record_admin(broker_t *b, const char *operator_principal, const char *action,
                 const char *details)
{
    char event[96], clean[SCHAKEL_AUDIT_MAX_TEXT_LEN + 1];
    store_audit_entry_t e;
    if (action == NULL || !syntax_is_id_token(action)) {
        log_event(LOG_ERROR, "audit.write_failed", "entry", "admin", "error",
                  "the action is not an id token", NULL);
        broker_fail_turn(b);
        return -1;
    }
    snprintf(event, sizeof event, "admin.%s", action);
    log_event(LOG_INFO, "admin.action", "operator", operator_principal, "action", action, NULL);
    audit_entry_init(&e, event);
    audit_set_text(&e, STORE_AUDIT_ACTOR, operator_principal);
    audit_set_text(&e, STORE_AUDIT_DETAIL, record_clean(details, clean, sizeof clean));
    return record_append(b, &e);
}

int record_admin_refused(broker_t *b, const char *operator_principal, const char *details)
{
    store_audit_entry_t e;
    log_event(LOG_INFO, "admin.action", "operator", operator_principal, "action", "refused", NULL);
    audit_entry_init(&e, "admin.refused");
    audit_set_text(&e, STORE_AUDIT_ACTOR, operator_principal);
    audit_set_text(&e, STORE_AUDIT_DETAIL, details);
    return record_carry(b, &e);
}

int record_subject_export(broker_t *b, const char *operator_principal, const char *pseudonym,
                          uint64_t request_id, size_t entries)
{
    char detail[72], tag[STORE_SUBJECT_TAG_LEN + 1];
    store_audit_entry_t e;
    if (record_subject_tag(b, pseudonym, "admin.audit_subject", tag) != 0)
        return -1;
    snprintf(detail, sizeof detail, "request_id=%" PRIu64 " entries=%zu", request_id, entries);
    audit_entry_init(&e, "admin.audit_subject");
    audit_set_text(&e, STORE_AUDIT_ACTOR, operator_principal);
    audit_set_text(&e, STORE_AUDIT_SUBJECT_TAG, tag);
    audit_set_text(&e, STORE_AUDIT_DETAIL, detail);
    return record_append(b, &e);
}

/* ------------------------------------------------------------------ the broker itself */

int record_started(broker_t *b)
{
    char key[41], detail[200];
    store_audit_entry_t e;
    keys_public_z85(b->key->sign_pk, key);
    snprintf(detail, sizeof detail, "broker_key=%s policy=%s version=%s", key,
             policy_hash_hex(b->policy), SCHAKEL_VERSION);
    audit_entry_init(&e, "broker.started");
    audit_set_text(&e, STORE_AUDIT_DETAIL, detail);
    return record_append_commit(b, &e);
}

/* The refused handshakes of an ended window (at a stop: of the open one)
 * that were only counted: one "auth.refused_summary" entry. Returns 0 (also
 * when there is none), or -1 with the turn failed. */
/* The refusals of one kind (handshakes or requests) counted in an ended
 * window (at a stop: the open one): one summary entry. */
typedef struct refusals_book {
    refusals_t *open, *summed;
    int *pending;
    const char *event, *reason;
} refusals_book_t;

static refusals_book_t record_refusals_book(broker_t *b, int requests)
{
    if (requests)
        return (refusals_book_t){&b->request_refusals, &b->request_refusals_summed,
                                 &b->request_refusals_summed_pending, "request.refused_summary",
                                 "refused requests counted, not recorded one by one"};
    return (refusals_book_t){&b->refusals, &b->refusals_summed, &b->refusals_summed_pending,
                             "auth.refused_summary",
                             "refused handshakes counted, not recorded one by one"};
}

/* Returns 0 (also when there is none), or -1 with the turn failed. */
static int record_refusals_summary_of(broker_t *b, refusals_book_t book, int force)
{
    char detail[SCHAKEL_AUDIT_MAX_TEXT_LEN + 1];
    *book.summed = *book.open; /* put back if the entry does not commit */
    uint64_t counted = refusals_summary(book.open, record_now(b), force, detail, sizeof detail);
    if (counted == 0)
        return 0;
    char n[24];
    snprintf(n, sizeof n, "%llu", (unsigned long long)counted);
    store_audit_entry_t e;
    audit_entry_init(&e, book.event);
    audit_set_text(&e, STORE_AUDIT_REASON, book.reason);
    audit_set_text(&e, STORE_AUDIT_DETAIL, detail);
    if (record_append_now(b, &e) != 0) {
        refusals_put_back(book.open, book.summed);
        return -1;
    }
    log_event(LOG_WARN, book.event, "counted", n, "detail", detail, NULL);
    *book.pending = 1;
    return 0;
}

/* The summaries of refused handshakes and refused requests that are due. */
int record_refusals_summary(broker_t *b, int force)
{
    if (record_refusals_summary_of(b, record_refusals_book(b, 0), force) != 0)
        return -1;
    return record_refusals_summary_of(b, record_refusals_book(b, 1), force);
}

void record_turn_settle(broker_t *b, int committed)
{
    record_carried_settle(b);
    record_set_aside_settle(b, committed);
    record_line_settle(b, committed);
    for (int requests = 0; requests < 2; requests++) {
        refusals_book_t book = record_refusals_book(b, requests);
        if (!*book.pending)
            continue;
        *book.pending = 0;
        if (!committed) /* the summary went with the turn: summed up again later */
            refusals_put_back(book.open, book.summed);
    }
}

int record_stopped(broker_t *b)
{
    store_audit_entry_t e;
    audit_entry_init(&e, "broker.stopped");
    record_carried_flush(b);
    if (record_queue_flush(b) != 0 || record_acks_flush(b) != 0 ||
        record_refusals_summary(b, 1) != 0 ||
        audit_append(b->store, b->key, record_now(b), &e) != 0 ||
        audit_checkpoint(b->store, b->key, record_now(b), 1) < 0 || store_commit(b->store) != 0) {
        record_write_failed(b, "audit.write_failed", "broker.stopped", store_errmsg(b->store));
        store_rollback(b->store);
        return -1;
    }
    record_carried_stopped(b);
    return 0;
}
