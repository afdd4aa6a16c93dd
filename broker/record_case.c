/*
 * record_case.c — the entries of case commands and views (see record.h):
 * an event of a case, a case delivery, a case viewed, listed or withheld,
 * each with its log line (a command's said once its turn commits). Trusts
 * its callers (case.c) for validated ids; subjects are recorded by their
 * tag only. A failure to write an entry fails the turn (-1); a withheld
 * view's entry is carried (record_carry.c) and fails nothing.
 */
#include <stdio.h>

#include "audit.h"
#include "broker.h"
#include "log.h"
#include "record.h"
#include "record_internal.h"
#include "wire.h"

/* ------------------------------------------------------------------ cases */

/* "case_id=C-.. case_type=T lead=P" and the optional parts that are set. */
static void record_case_detail(const record_case_t *c, char *out, size_t outlen)
{
    size_t used =
        (size_t)snprintf(out, outlen, "case_id=%s case_type=%s lead=%s event_seq=%llu", c->case_id,
                         c->case_type, c->lead, (unsigned long long)c->event_seq);
    if (used < outlen && c->on_behalf_of != NULL)
        used += (size_t)snprintf(out + used, outlen - used, " on_behalf_of=%s", c->on_behalf_of);
    if (used < outlen && c->partner != NULL)
        used += (size_t)snprintf(out + used, outlen - used, " partner=%s", c->partner);
    if (used < outlen && c->linked_item_seq != 0)
        used += (size_t)snprintf(out + used, outlen - used, " linked_item_seq=%llu",
                                 (unsigned long long)c->linked_item_seq);
    if (used < outlen && c->n_fields != 0)
        used += (size_t)snprintf(out + used, outlen - used, " note_fields=%zu", c->n_fields);
    if (used < outlen && c->dropped != 0)
        used += (size_t)snprintf(out + used, outlen - used, " dropped=%zu", c->dropped);
    if (used < outlen)
        snprintf(out + used, outlen - used, " deliveries=%zu", c->deliveries);
}

/* A case event is said when its turn commits (record_turn_settle), not
 * before: an open rolled back names an id the next open gets, and a
 * command rolled back was not carried out. Cost: one copy of ids per
 * command. */
static void case_say_at_commit(broker_t *b, const record_case_t *c)
{
    line_said_t t = {.event = c->event,
                     .key = {"actor", "on_behalf_of", "case_id", "partner", "item_seq"}};
    snprintf(t.val[0], sizeof t.val[0], "%s", c->actor);
    snprintf(t.val[1], sizeof t.val[1], "%s", c->on_behalf_of != NULL ? c->on_behalf_of : "-");
    snprintf(t.val[2], sizeof t.val[2], "%s", c->case_id);
    snprintf(t.val[3], sizeof t.val[3], "%s", c->partner != NULL ? c->partner : "-");
    snprintf(t.val[4], sizeof t.val[4], "%llu", (unsigned long long)c->item_seq);
    record_line_say_at_commit(b, &t);
}

int record_case(broker_t *b, const record_case_t *c)
{
    char detail[512], id_hex[33], tag[STORE_SUBJECT_TAG_LEN + 1];
    store_audit_entry_t e;
    record_case_detail(c, detail, sizeof detail);
    if (c->subject != NULL && record_subject_tag(b, c->subject, c->event, tag) != 0)
        return -1;
    audit_entry_init(&e, c->event);
    audit_set_text(&e, STORE_AUDIT_ACTOR, c->actor);
    record_set_message_id(&e, c->command_id, id_hex);
    audit_set_int(&e, STORE_AUDIT_ITEM_SEQ, (int64_t)c->item_seq);
    audit_set_text(&e, STORE_AUDIT_SUBJECT_TAG, c->subject != NULL ? tag : NULL);
    audit_set_text(&e, STORE_AUDIT_RULE_ID, c->rule_id);
    audit_set_text(&e, STORE_AUDIT_RULE_HASH, c->rule_hash);
    if (c->expires_at != 0)
        audit_set_int(&e, STORE_AUDIT_EXPIRES_AT, c->expires_at);
    audit_set_text(&e, STORE_AUDIT_DETAIL, detail);
    if (record_append(b, &e) != 0)
        return -1;
    case_say_at_commit(b, c);
    return 0;
}

/* The content fields a case delivery carried: the event's, then a linked
 * signal's as "signal:" and their names (cut to fit; the fields of a
 * case event are far shorter). */
static const char *record_case_fields(const record_case_delivery_t *d, char *out, size_t outlen)
{
    const char *seen = d->fields != NULL ? d->fields : "";
    if (!d->has_signal)
        return d->fields;
    size_t used = (size_t)snprintf(out, outlen, "%s%ssignal:", seen, seen[0] != '\0' ? "," : "");
    if (used < outlen)
        (void)record_field_names(d->signal_fields, out + used, outlen - used);
    return out;
}

int record_case_queued(broker_t *b, const record_case_delivery_t *d)
{
    char seq_s[24], item_s[24], id_hex[33], detail[160], tag[STORE_SUBJECT_TAG_LEN + 1];
    char fields[SCHAKEL_AUDIT_MAX_TEXT_LEN + 1];
    store_audit_entry_t e;
    snprintf(seq_s, sizeof seq_s, "%llu", (unsigned long long)d->seq);
    snprintf(item_s, sizeof item_s, "%llu", (unsigned long long)d->item_seq);
    log_event(LOG_DEBUG, "delivery.queued", "sender", d->actor, "recipient", d->recipient, "seq",
              seq_s, "item_seq", item_s, "case_id", d->case_id, "rule", d->rule_id, "rule_hash",
              d->rule_hash, NULL);
    if (d->subject != NULL && record_subject_tag(b, d->subject, "delivery.queued", tag) != 0)
        return -1;
    snprintf(detail, sizeof detail, "case_id=%s event_seq=%llu", d->case_id,
             (unsigned long long)d->event_seq);
    audit_entry_init(&e, "delivery.queued");
    audit_set_text(&e, STORE_AUDIT_ACTOR, d->actor);
    audit_set_text(&e, STORE_AUDIT_RECIPIENT, d->recipient);
    audit_set_text(&e, STORE_AUDIT_RECIPIENT_PARTNER, d->recipient_partner);
    record_set_message_id(&e, d->command_id, id_hex);
    audit_set_int(&e, STORE_AUDIT_ITEM_INDEX, 0);
    audit_set_int(&e, STORE_AUDIT_ITEM_SEQ, (int64_t)d->item_seq);
    audit_set_int(&e, STORE_AUDIT_DELIVERY_SEQ, (int64_t)d->seq);
    audit_set_text(&e, STORE_AUDIT_KIND, d->event);
    audit_set_text(&e, STORE_AUDIT_SUBJECT_TAG, d->subject != NULL ? tag : NULL);
    audit_set_text(&e, STORE_AUDIT_RULE_ID, d->rule_id);
    audit_set_text(&e, STORE_AUDIT_RULE_HASH, d->rule_hash);
    audit_set_text(&e, STORE_AUDIT_PURPOSE, d->purpose);
    audit_set_text(&e, STORE_AUDIT_LEGAL_BASIS, d->legal_basis);
    audit_set_text(&e, STORE_AUDIT_FIELDS, record_case_fields(d, fields, sizeof fields));
    audit_set_int(&e, STORE_AUDIT_EXPIRES_AT, d->expires_at);
    audit_set_text(&e, STORE_AUDIT_DETAIL, detail);
    return record_append(b, &e);
}

/* A case.viewed entry; signals: how many linked signals about `subject`
 * the view showed, on an entry for a linked signal's subject, else 0. */
static int record_view_entry(broker_t *b, const char *principal, const char *case_id,
                             const char *subject, size_t events, size_t signals)
{
    char detail[96], n[24], linked[24], tag[STORE_SUBJECT_TAG_LEN + 1];
    store_audit_entry_t e;
    snprintf(n, sizeof n, "%zu", events);
    snprintf(linked, sizeof linked, "%zu", signals);
    log_event(LOG_INFO, "case.viewed", "principal", principal, "case_id", case_id, "events", n,
              signals != 0 ? "linked_signals" : NULL, linked, NULL);
    if (subject != NULL && record_subject_tag(b, subject, "case.viewed", tag) != 0)
        return -1;
    if (signals != 0)
        snprintf(detail, sizeof detail, "case_id=%s events=%zu linked_signals=%zu", case_id, events,
                 signals);
    else
        snprintf(detail, sizeof detail, "case_id=%s events=%zu", case_id, events);
    audit_entry_init(&e, "case.viewed");
    audit_set_text(&e, STORE_AUDIT_ACTOR, principal);
    audit_set_text(&e, STORE_AUDIT_SUBJECT_TAG, subject != NULL ? tag : NULL);
    audit_set_text(&e, STORE_AUDIT_DETAIL, detail);
    return record_append(b, &e);
}

int record_case_viewed(broker_t *b, const char *principal, const char *case_id, const char *subject,
                       size_t events)
{
    return record_view_entry(b, principal, case_id, subject, events, 0);
}

int record_case_viewed_signals(broker_t *b, const char *principal, const char *case_id,
                               const char *subject, size_t events, size_t signals)
{
    return record_view_entry(b, principal, case_id, subject, events, signals);
}

int record_case_listed(broker_t *b, const char *principal, size_t cases)
{
    char detail[48], n[24];
    store_audit_entry_t e;
    snprintf(n, sizeof n, "%zu", cases);
    log_event(LOG_INFO, "case.listed", "principal", principal, "cases", n, NULL);
    snprintf(detail, sizeof detail, "cases=%zu", cases);
    audit_entry_init(&e, "case.listed");
    audit_set_text(&e, STORE_AUDIT_ACTOR, principal);
    audit_set_text(&e, STORE_AUDIT_DETAIL, detail);
    return record_append(b, &e);
}

int record_case_view_withheld(broker_t *b, const char *principal, const char *case_id,
                              const char *subject, size_t shown, size_t signals,
                              Schakel__Reason reason)
{
    const char *event = case_id != NULL ? "case.view_withheld" : "case.list_withheld";
    char detail[96], n[24], linked[24], tag[STORE_SUBJECT_TAG_LEN + 1];
    store_audit_entry_t e;
    snprintf(n, sizeof n, "%zu", shown);
    snprintf(linked, sizeof linked, "%zu", signals);
    if (case_id != NULL)
        log_event(LOG_WARN, event, "principal", principal, "case_id", case_id, "events", n,
                  "reason", wire_reason_name(reason), signals != 0 ? "linked_signals" : NULL,
                  linked, NULL);
    else
        log_event(LOG_WARN, event, "principal", principal, "cases", n, "reason",
                  wire_reason_name(reason), NULL);
    if (subject != NULL && record_subject_tag(b, subject, event, tag) != 0)
        return -1;
    if (case_id == NULL)
        snprintf(detail, sizeof detail, "cases=%zu", shown);
    else if (signals != 0)
        snprintf(detail, sizeof detail, "case_id=%s events=%zu linked_signals=%zu", case_id, shown,
                 signals);
    else
        snprintf(detail, sizeof detail, "case_id=%s events=%zu", case_id, shown);
    audit_entry_init(&e, event);
    audit_set_text(&e, STORE_AUDIT_ACTOR, principal);
    audit_set_text(&e, STORE_AUDIT_SUBJECT_TAG, subject != NULL ? tag : NULL);
    audit_set_text(&e, STORE_AUDIT_REASON, wire_reason_name(reason));
    audit_set_text(&e, STORE_AUDIT_DETAIL, detail);
    return record_carry(b, &e);
}
