/*
 * record_removed.c — the entries of deliveries that leave a mailbox
 * unacked (see record.h): expired, revoked by a policy change, withdrawn,
 * or set aside as damaged (at a push, at a start, offline), each with its
 * log line. Trusts nothing in a set-aside row: its texts may be the damage
 * itself and are cleaned before they are kept. A failure to write an entry
 * fails the turn (-1): the removal is then not committed.
 */
#include <stdio.h>
#include <stdlib.h>

#include "audit.h"
#include "broker.h"
#include "log.h"
#include "record.h"
#include "record_internal.h"
#include "store_mailbox.h"

/* The reason of a delivery.expired entry: none for a plain expiry. */
static const char *record_expired_reason(const store_expired_t *x)
{
    if (x->tombstoned_before)
        return x->set_aside ? "set aside: it did not authenticate; its seq had a tombstone"
                              " already (put back after it had expired): none added"
                            : "its seq had a tombstone already (put back after it had expired):"
                              " none added";
    return x->set_aside ? "set aside: it did not authenticate" : NULL;
}

int record_expired(broker_t *b, const store_expired_t *x)
{
    char seq_s[24];
    store_audit_entry_t e;
    snprintf(seq_s, sizeof seq_s, "%llu", (unsigned long long)x->seq);
    char recipient[2 * SCHAKEL_MAX_PRINCIPAL_LEN], rule_id[2 * SCHAKEL_MAX_ID_LEN], rule_hash[160];
    /* a set-aside row's texts may be its damage: cleaned (waiting rows'
     * are the broker's own, and come out the same) */
    record_clean(x->recipient, recipient, sizeof recipient);
    record_clean(x->rule_id, rule_id, sizeof rule_id);
    record_clean(x->rule_hash, rule_hash, sizeof rule_hash);
    /* A seq expired twice (put back from a backup after it had expired):
     * said at warning level, and in the entry's reason */
    if (x->tombstoned_before)
        log_event(LOG_WARN, "delivery.expired", "recipient", recipient, "seq", seq_s, "rule",
                  rule_id, "rule_hash", rule_hash, "set_aside", x->set_aside ? "1" : "0",
                  "tombstone", "had one already: none added", NULL);
    else
        log_event(LOG_INFO, "delivery.expired", "recipient", recipient, "seq", seq_s, "rule",
                  rule_id, "rule_hash", rule_hash, x->set_aside ? "set_aside" : NULL, "1", NULL);
    audit_entry_init(&e, "delivery.expired");
    audit_set_text(&e, STORE_AUDIT_RECIPIENT, recipient);
    audit_set_int(&e, STORE_AUDIT_ITEM_SEQ, (int64_t)x->item_seq);
    audit_set_int(&e, STORE_AUDIT_DELIVERY_SEQ, (int64_t)x->seq);
    audit_set_text(&e, STORE_AUDIT_RULE_ID, rule_id);
    audit_set_text(&e, STORE_AUDIT_RULE_HASH, rule_hash);
    audit_set_int(&e, STORE_AUDIT_EXPIRES_AT, x->expires_at);
    audit_set_text(&e, STORE_AUDIT_REASON, record_expired_reason(x));
    return record_append(b, &e);
}

int record_revoked(broker_t *b, const store_expired_t *x, record_sent_t sent)
{
    return record_withdrawn(b, x, "the policy in force no longer allows it", sent);
}

/* What a revocation's or a set-aside's detail says of sent (sent=...). */
static const char *record_sent_text(record_sent_t sent)
{
    return sent == RECORD_SENT_YES ? "yes" : sent == RECORD_SENT_NO ? "no" : "unknown";
}

int record_withdrawn(broker_t *b, const store_expired_t *x, const char *why, record_sent_t sent)
{
    char seq_s[24];
    store_audit_entry_t e;
    const char *sent_text = record_sent_text(sent);
    char detail[24];
    snprintf(detail, sizeof detail, "sent=%s", sent_text);
    snprintf(seq_s, sizeof seq_s, "%llu", (unsigned long long)x->seq);
    log_event(x->tombstoned_before ? LOG_WARN : LOG_INFO, "delivery.revoked", "recipient",
              x->recipient, "seq", seq_s, "rule", x->rule_id, "rule_hash", x->rule_hash, "sent",
              sent_text, "why", why, x->tombstoned_before ? "tombstone" : NULL,
              "had one already: none added", NULL);
    audit_entry_init(&e, "delivery.revoked");
    audit_set_text(&e, STORE_AUDIT_RECIPIENT, x->recipient);
    audit_set_int(&e, STORE_AUDIT_ITEM_SEQ, (int64_t)x->item_seq);
    audit_set_int(&e, STORE_AUDIT_DELIVERY_SEQ, (int64_t)x->seq);
    audit_set_text(&e, STORE_AUDIT_RULE_ID, x->rule_id);
    audit_set_text(&e, STORE_AUDIT_RULE_HASH, x->rule_hash);
    audit_set_text(&e, STORE_AUDIT_REASON, why);
    audit_set_text(&e, STORE_AUDIT_DETAIL, detail);
    return record_append(b, &e);
}

/* The texts of a delivery.set_aside entry, cleaned: the row may be the
 * damage itself. The entry points into them. */
typedef struct set_aside_texts {
    char seq[24], recipient[2 * SCHAKEL_MAX_PRINCIPAL_LEN], rule_id[2 * SCHAKEL_MAX_ID_LEN],
        rule_hash[160], reason[2 * STORE_SET_ASIDE_REASON_LEN], detail[24];
    const char *sent; /* static: record_sent_text */
} set_aside_texts_t;

/* A delivery set aside is said once, at error level: an operator has
 * something to look at (docs/OPERATIONS.md). */
static void set_aside_say(const set_aside_texts_t *t)
{
    log_event(LOG_ERROR, "delivery.set_aside", "recipient", t->recipient, "seq", t->seq, "rule",
              t->rule_id, "sent", t->sent, "reason", t->reason, NULL);
}

/* The entry of a delivery set aside, and its texts: its detail says
 * whether this run had sent it (sent=yes|no|unknown, as a revocation's
 * does). */
static void set_aside_entry(const store_set_aside_t *x, record_sent_t sent, set_aside_texts_t *t,
                            store_audit_entry_t *e)
{
    t->sent = record_sent_text(sent);
    snprintf(t->detail, sizeof t->detail, "sent=%s", t->sent);
    snprintf(t->seq, sizeof t->seq, "%llu", (unsigned long long)x->row.view.seq);
    record_clean(x->row.view.recipient, t->recipient, sizeof t->recipient);
    record_clean(x->row.view.rule_id, t->rule_id, sizeof t->rule_id);
    record_clean(x->row.view.rule_hash, t->rule_hash, sizeof t->rule_hash);
    record_clean(x->reason, t->reason, sizeof t->reason);
    audit_entry_init(e, "delivery.set_aside");
    audit_set_text(e, STORE_AUDIT_RECIPIENT, t->recipient);
    audit_set_int(e, STORE_AUDIT_ITEM_SEQ, (int64_t)x->row.view.item_seq);
    audit_set_int(e, STORE_AUDIT_DELIVERY_SEQ, (int64_t)x->row.view.seq);
    audit_set_text(e, STORE_AUDIT_RULE_ID, t->rule_id);
    audit_set_text(e, STORE_AUDIT_RULE_HASH, t->rule_hash);
    audit_set_text(e, STORE_AUDIT_REASON, t->reason);
    audit_set_text(e, STORE_AUDIT_DETAIL, t->detail);
}

/* Said when the turn commits (record_turn_settle), not before: a turn
 * rolled back is set aside again by the next push, and said then. A line
 * that cannot wait (no memory for it) is said at once. */
static void set_aside_say_at_commit(broker_t *b, const set_aside_texts_t *t)
{
    struct record_acks *a = b->acks;
    if (a == NULL && (a = b->acks = calloc(1, sizeof *b->acks)) == NULL) {
        set_aside_say(t);
        return;
    }
    if (a->said == NULL)
        a->said = calloc(SCHAKEL_SET_ASIDE_BATCH, sizeof *a->said);
    if (a->said == NULL || a->n_said == SCHAKEL_SET_ASIDE_BATCH) {
        set_aside_say(t);
        return;
    }
    a->said[a->n_said++] = *t;
}

/* The turn's set-asides said if it committed, forgotten if not. */
void record_set_aside_settle(broker_t *b, int committed)
{
    if (b->acks == NULL)
        return;
    for (size_t i = 0; committed && i < b->acks->n_said; i++)
        set_aside_say(&b->acks->said[i]);
    b->acks->n_said = 0;
}

int record_set_aside(broker_t *b, const store_set_aside_t *x, record_sent_t sent)
{
    set_aside_texts_t t;
    store_audit_entry_t e;
    set_aside_entry(x, sent, &t, &e);
    if (record_append(b, &e) != 0)
        return -1;
    b->stats.set_aside++;
    set_aside_say_at_commit(b, &t);
    return 0;
}

/* How many seqs one round of store_set_aside_unrecorded reads. */
#define RECORD_SET_ASIDE_BATCH 64

/* One batch of the deliveries set aside that the trail does not name yet
 * (those after *after), each recorded as record_set_aside does, inside the
 * open transaction: the number looked at (0: none left), -1 when the store
 * failed (not logged) or -2 when an entry could not be written (logged by
 * record_append). */
static int record_unrecorded_batch(broker_t *b, uint64_t *after)
{
    uint64_t seqs[RECORD_SET_ASIDE_BATCH];
    int n = store_set_aside_unrecorded(b->store, *after, seqs, RECORD_SET_ASIDE_BATCH);
    for (int i = 0; i < n; i++) {
        store_set_aside_t x;
        int found = store_set_aside_get(b->store, seqs[i], &x);
        if (found < 0)
            return -1;
        if (found == 1 && record_set_aside(b, &x, RECORD_SENT_UNKNOWN) != 0)
            return -2;
    }
    if (n > 0)
        *after = seqs[n - 1];
    return n;
}

int record_set_aside_unrecorded(broker_t *b)
{
    uint64_t after = 0;
    int n;
    while ((n = record_unrecorded_batch(b, &after)) > 0) {
        if (store_commit(b->store) != 0) {
            n = -1;
            break;
        }
        record_set_aside_settle(b, 1);
    }
    if (n == 0)
        return 0;
    if (n == -1)
        record_write_failed(b, "audit.write_failed", "delivery.set_aside", store_errmsg(b->store));
    store_rollback(b->store);
    record_set_aside_settle(b, 0);
    return -1;
}

/* What this run knows of whether set-aside delivery x was sent, as a
 * revocation's entry says it (deliver_sent) of the recipient its row
 * names; a recipient that does not read names no receiver: unknown. */
static record_sent_t record_set_aside_sent(const broker_t *b, const store_set_aside_t *x)
{
    if (x->row.view.recipient == NULL || x->row.view.recipient[0] == 0)
        return RECORD_SENT_UNKNOWN;
    return deliver_sent(b, x->row.view.recipient, x->row.view.seq);
}

int record_set_aside_seqs(broker_t *b, uint64_t first_seq, uint64_t last_seq)
{
    for (uint64_t seq = first_seq; seq >= first_seq && seq <= last_seq; seq++) {
        store_set_aside_t x;
        int found = store_set_aside_get(b->store, seq, &x);
        if (found < 0) {
            record_write_failed(b, "audit.write_failed", "delivery.set_aside",
                                store_errmsg(b->store));
            broker_fail_turn(b);
            return -1;
        }
        if (found == 1 && record_set_aside(b, &x, record_set_aside_sent(b, &x)) != 0)
            return -1; /* the turn fails (recorded by record_append) */
        /* one the push sent will never be acked now: its window slot */
        if (found == 1 && x.row.view.recipient != NULL && x.row.view.recipient[0] != 0)
            deliver_slot_free(b, x.row.view.recipient, seq);
    }
    return 0;
}

/* Each row a store call of this turn set aside on its own is taken from
 * the store's list (store_mailbox_row_set_aside_take), not found on the
 * trail as one no entry names: a row put back by an operator and set
 * aside again has its seqs named by the entries of its first set-aside,
 * and this one is another event, with its own entries. */
int record_set_aside_in_turn(broker_t *b)
{
    store_mailbox_aside_t row;
    int taken;
    while ((taken = store_mailbox_row_set_aside_take(b->store, &row)) == 1)
        if (record_set_aside_seqs(b, row.first_seq, row.last_seq) != 0)
            return -1;
    if (taken < 0) {
        record_write_failed(b, "audit.write_failed", "delivery.set_aside", store_errmsg(b->store));
        broker_fail_turn(b);
        return -1;
    }
    return 0;
}

int64_t record_set_aside_offline(store_t *store, const keypair_t *key, int64_t now)
{
    uint64_t seqs[RECORD_SET_ASIDE_BATCH], after = 0;
    int64_t recorded = 0;
    int n;
    while ((n = store_set_aside_unrecorded(store, after, seqs, RECORD_SET_ASIDE_BATCH)) > 0) {
        for (int i = 0; i < n; i++) {
            store_set_aside_t x;
            set_aside_texts_t t;
            store_audit_entry_t e;
            int found = store_set_aside_get(store, seqs[i], &x);
            if (found < 0)
                return -1;
            if (found == 0)
                continue;
            set_aside_entry(&x, RECORD_SENT_UNKNOWN, &t, &e); /* no broker: no push known */
            if (audit_append(store, key, now, &e) != 0)
                return -1;
            set_aside_say(&t); /* an offline command's own output: said at once */
            recorded++;
        }
        after = seqs[n - 1];
    }
    return n < 0 ? -1 : recorded;
}
