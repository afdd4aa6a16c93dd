/*
 * publish.c — the publish path: signature, validation, policy, store, reply.
 *
 * Order matters and is the design: the signature is verified before any
 * item is decoded; every item is validated and decided, then the store's
 * bounds asked (space.h), before anything is written; a publish is
 * refused as a whole (nothing stored) or stored whole
 * in the turn's transaction, and its Accepted waits for the commit.
 * Trusts: the frame was decoded by wire_decode_frame (sizes, counts, id and
 * signature lengths checked); the sender principal comes from ZAP.
 */
#include "broker.h"
#include "plural.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "growarray.h"
#include "log.h"
#include "record.h"
#include "store_mailbox.h"

/* One item after validation and decision. */
typedef struct item_plan {
    Schakel__Signal *signal;
    policy_decision_t decision;
} item_plan_t;

static void plans_free(item_plan_t *plans, size_t n)
{
    for (size_t i = 0; i < n; i++)
        wire_signal_free(&plans[i].signal);
    free(plans);
}

/* A shallow copy: it borrows the original's strings and is only packed,
 * never freed deeply. */
uint8_t *publish_signal_for_recipient(const Schakel__Signal *s, uint32_t fields, size_t *len)
{
    Schakel__Signal copy = SCHAKEL__SIGNAL__INIT;
    copy.sender = s->sender;
    copy.kind = s->kind;
    copy.theme = s->theme;
    if (fields & FIELD_AREA)
        copy.area = s->area;
    if (fields & FIELD_ADDRESS)
        copy.address = s->address;
    if (fields & FIELD_SUBJECT)
        copy.subject = s->subject;
    if (fields & FIELD_GROUNDS)
        copy.grounds = s->grounds;
    if (fields & FIELD_CASE_REF)
        copy.case_ref = s->case_ref;
    if (fields & FIELD_SEVERITY) {
        copy.has_severity = s->has_severity;
        copy.severity = s->severity;
    }
    if (fields & FIELD_OBSERVED_AT) {
        copy.has_observed_at = s->has_observed_at;
        copy.observed_at = s->observed_at;
    }
    if (fields & FIELD_SUMMARY)
        copy.summary = s->summary;
    if (fields & FIELD_SOURCE_REF)
        copy.source_ref = s->source_ref;
    if (fields & FIELD_RECIPIENTS) {
        copy.n_recipients = s->n_recipients;
        copy.recipients = s->recipients;
    }
    return wire_encode_signal(&copy, len);
}

/* Validate and decide every item. Returns 0, or -1 after queueing the
 * refusal. */
static int plan_items(broker_t *b, const session_t *session, const policy_principal_t *sender,
                      const Schakel__Publish *publish, item_plan_t *plans)
{
    const uint8_t *id = publish->message_id.data;
    char text[SCHAKEL_MAX_REJECT_TEXT];
    for (size_t i = 0; i < publish->n_items; i++) {
        wire_error_t err = {0};
        item_plan_t *plan = &plans[i];
        plan->signal =
            wire_decode_signal(publish->items[i].data, publish->items[i].len, b->now_s, &err);
        if (plan->signal == NULL) {
            broker_reject(b, session, err.reason, err.text, id, (int)i, 0);
            return -1;
        }
        if (strcmp(plan->signal->sender, sender->id) != 0) {
            snprintf(text, sizeof text,
                     "item %zu names sender %s but this connection is authenticated as %s", i,
                     plan->signal->sender, sender->id);
            broker_reject(b, session, SCHAKEL__REASON__SENDER_MISMATCH, text, id, (int)i, 0);
            return -1;
        }
        const Schakel__Signal *s = plan->signal;
        policy_signal_facts_t facts =
            publish_signal_facts(s, (const char *const *)s->recipients, s->n_recipients);
        if (policy_decide_signal(b->policy, sender, &facts, &plan->decision) != VERDICT_ALLOW) {
            broker_reject(b, session, SCHAKEL__REASON__POLICY_DENIED, plan->decision.reason, id,
                          (int)i, 0);
            return -1;
        }
    }
    return 0;
}

/* What the push needs to know of an item's deliveries to keep it
 * (deliver_keep_published): their distinct field masks (one more than
 * DELIVER_KEPT_MASKS means too many to keep), and whether any recipient
 * receives now. */
typedef struct item_masks {
    uint32_t masks[DELIVER_KEPT_MASKS + 1];
    size_t n;
    int online;
} item_masks_t;

static void item_masks_add(item_masks_t *m, uint32_t fields)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->masks[i] == fields)
            return;
    if (m->n <= DELIVER_KEPT_MASKS)
        m->masks[m->n++] = fields;
}

/*
 * A publish's deliveries and their seqs. Every item is decided before
 * anything is written (plan_items); the deliveries that follow from the
 * decisions are listed once, then numbered recipient by recipient: the
 * recipient whose first delivery comes first in the publish (item by item,
 * grant by grant, principal by principal) gets the first seqs, one per
 * delivery in item order, the next recipient the seqs after those, and so
 * on. Each mailbox so holds a publish's deliveries under consecutive seqs
 * (one mailbox row each: store_rows), in item order; seqs stay
 * broker-wide, unique and increasing within a mailbox. They are recorded
 * item by item, each item's in seq order, so that its "delivery.queued"
 * entry lists them ascending and the entries come in item order; the rows
 * are written once every item is. Cost: linear in the publish's
 * deliveries (a hash of its recipients, two passes), plus a sort of each
 * item's own few; memory: the array of them, at most SCHAKEL_MAX_ITEMS
 * items times the principals their grants reach, and a scratch of about
 * 40 bytes per delivery.
 */
typedef struct publish_delivery {
    const policy_principal_t *to;
    uint64_t seq;
    uint32_t item;  /* index in the publish */
    uint32_t grant; /* index in the item's decision */
} publish_delivery_t;

typedef struct publish_deliveries {
    publish_delivery_t *all;
    size_t n, cap;
    /* item i's deliveries are all[item_start[i] .. item_start[i + 1]) */
    size_t item_start[SCHAKEL_MAX_ITEMS + 1];
    /* deliveries_number's scratch, allocated with the list (n of each;
     * slots a power of two above 2n): a delivery's recipient group, then
     * (store_rows) its place in seq order; each group's next seq; the
     * hash of recipients to groups */
    uint32_t *group;
    uint64_t *next_seq;
    uint64_t first_seq;
    const policy_principal_t **slot_to;
    uint32_t *slot_group;
    size_t n_slots;
} publish_deliveries_t;

/* List the deliveries of every item: for every granted partner, every
 * principal the rule delivers to. 0, or -1 out of memory. */
static int deliveries_list(const broker_t *b, const Schakel__Publish *publish,
                           const item_plan_t *plans, publish_deliveries_t *list)
{
    for (size_t i = 0; i < publish->n_items; i++) {
        list->item_start[i] = list->n;
        for (size_t g = 0; g < plans[i].decision.n_grants; g++) {
            const policy_grant_t *grant = &plans[i].decision.grants[g];
            const policy_principal_t *to[SCHAKEL_MAX_PRINCIPALS_PER_PARTNER];
            size_t n_to = policy_recipients(b->policy, grant->rule, grant->partner, to,
                                            SCHAKEL_MAX_PRINCIPALS_PER_PARTNER);
            for (size_t r = 0; r < n_to; r++) {
                if (growarray_room((void **)&list->all, &list->cap, list->n, sizeof *list->all,
                                   64) != 0)
                    return -1;
                /* at most SCHAKEL_MAX_ITEMS * SCHAKEL_MAX_PARTNERS *
                 * SCHAKEL_MAX_PRINCIPALS_PER_PARTNER: fits */
                list->all[list->n] =
                    (publish_delivery_t){.to = to[r], .item = (uint32_t)i, .grant = (uint32_t)g};
                list->n++;
            }
        }
    }
    list->item_start[publish->n_items] = list->n;
    if (list->n == 0)
        return 0;
    size_t slots = 16;
    while (slots < 2 * list->n)
        slots *= 2;
    list->group = malloc(list->n * sizeof *list->group);
    list->next_seq = malloc(list->n * sizeof *list->next_seq);
    list->slot_to = malloc(slots * sizeof *list->slot_to);
    list->slot_group = malloc(slots * sizeof *list->slot_group);
    list->n_slots = slots;
    return list->group != NULL && list->next_seq != NULL && list->slot_to != NULL &&
                   list->slot_group != NULL
               ? 0
               : -1;
}

static void deliveries_free(publish_deliveries_t *list)
{
    free(list->all);
    free(list->group);
    free(list->next_seq);
    free(list->slot_to);
    free(list->slot_group);
}

static int cmp_u64(uint64_t a, uint64_t b)
{
    return (a > b) - (a < b);
}

static int by_seq(const void *a, const void *b)
{
    const publish_delivery_t *x = a, *y = b;
    return cmp_u64(x->seq, y->seq);
}

/* The group of recipient `to` (numbered in order of first appearance),
 * added when new; *n_groups counts them. Open addressing: the table has
 * room for twice the deliveries, so it never fills. */
static uint32_t recipient_group(publish_deliveries_t *list, const policy_principal_t *to,
                                uint32_t *n_groups)
{
    size_t mask = list->n_slots - 1;
    size_t h = (size_t)(((uintptr_t)to >> 4) * UINT64_C(0x9E3779B97F4A7C15) >> 32) & mask;
    while (list->slot_to[h] != NULL && list->slot_to[h] != to)
        h = (h + 1) & mask;
    if (list->slot_to[h] == NULL) {
        list->slot_to[h] = to;
        list->slot_group[h] = *n_groups;
        list->next_seq[(*n_groups)++] = 0;
    }
    return list->slot_group[h];
}

/* Put all[from .. to) in seq order: an insertion sort, as an item has a
 * delivery per recipient its rules reach (a few); a sort for many. */
static void item_sort_by_seq(publish_delivery_t *all, size_t from, size_t to)
{
    if (to - from > 32) {
        qsort(all + from, to - from, sizeof *all, by_seq);
        return;
    }
    for (size_t k = from + 1; k < to; k++) {
        publish_delivery_t d = all[k];
        size_t j = k;
        for (; j > from && all[j - 1].seq > d.seq; j--)
            all[j] = all[j - 1];
        all[j] = d;
    }
}

/* Give the listed deliveries the seqs first_seq .. first_seq + n - 1,
 * recipient by recipient, in order of each recipient's first delivery in
 * the publish, and each recipient's in their order in it (item by item);
 * afterwards each item's deliveries are in seq order (item_start still
 * holds). */
static void deliveries_number(publish_deliveries_t *list, size_t n_items, uint64_t first_seq)
{
    publish_delivery_t *all = list->all;
    uint32_t n_groups = 0;
    if (list->n == 0)
        return;
    list->first_seq = first_seq;
    memset(list->slot_to, 0, list->n_slots * sizeof *list->slot_to);
    for (size_t k = 0; k < list->n; k++) {
        list->group[k] = recipient_group(list, all[k].to, &n_groups);
        list->next_seq[list->group[k]]++; /* counted first, the seqs below */
    }
    uint64_t seq = first_seq;
    for (uint32_t g = 0; g < n_groups; g++) {
        uint64_t count = list->next_seq[g];
        list->next_seq[g] = seq;
        seq += count;
    }
    for (size_t k = 0; k < list->n; k++)
        all[k].seq = list->next_seq[list->group[k]]++;
    for (size_t i = 0; i < n_items; i++)
        item_sort_by_seq(all, list->item_start[i], list->item_start[i + 1]);
}

/* Queue one item's deliveries (numbered, in seq order), record each, and
 * note what the push needs to keep the item. Returns the number queued, or
 * -1 on a store error. */
static long store_deliveries(broker_t *b, const policy_principal_t *sender,
                             const Schakel__Publish *publish, size_t index, int64_t item_seq,
                             const item_plan_t *plan, const publish_delivery_t *deliveries,
                             size_t n, item_masks_t *masks, deliver_kept_envelope_t *written)
{
    written->policy = b->policy;
    written->policy_generation = b->policy_generation;
    written->sender = sender;
    memcpy(written->message_id, publish->message_id.data, SCHAKEL_MESSAGE_ID_BYTES);
    written->item_index = (uint32_t)index;
    written->accepted_at = b->now_s;
    written->n = 0;
    /* One subject tag for all of the item's deliveries. */
    char tag[STORE_SUBJECT_TAG_LEN + 1];
    if (plan->signal->subject != NULL &&
        store_subject_tag(b->store, plan->signal->subject, tag) != 0)
        return -1;
    for (size_t k = 0; k < n; k++) {
        const policy_rule_t *rule = plan->decision.grants[deliveries[k].grant].rule;
        const policy_principal_t *to = deliveries[k].to;
        item_masks_add(masks, rule->fields);
        store_delivery_t d = {
            .seq = deliveries[k].seq,
            .recipient = to->id,
            .item_seq = (uint64_t)item_seq,
            .message_id = publish->message_id.data,
            .item_index = (uint32_t)index,
            .sender = sender->id,
            .sender_partner = sender->partner->id,
            .rule_id = rule->id,
            .rule_hash = rule->hash_hex,
            .purpose = rule->purpose,
            .legal_basis = rule->legal_basis,
            .accepted_at = b->now_s,
            .expires_at = b->now_s + rule->retention_s,
            .by_ref = 1, /* the item's bytes, reduced to the rule's fields at push */
            .fields = rule->fields,
        };
        if (written->n < DELIVER_KEPT_DELIVERIES)
            written->deliveries[written->n++] =
                (deliver_kept_delivery_t){d.seq, to, rule, d.expires_at};
        record_delivery_t rd = {
            .sender = sender->id,
            .recipient = to->id,
            .recipient_partner = to->partner->id,
            .seq = d.seq,
            .item_seq = (uint64_t)item_seq,
            .message_id = publish->message_id.data,
            .item_index = (uint32_t)index,
            .kind = plan->signal->kind,
            .theme = plan->signal->theme,
            .subject = plan->signal->subject,
            .subject_tag = plan->signal->subject != NULL ? tag : NULL,
            .rule_id = rule->id,
            .rule_hash = rule->hash_hex,
            .purpose = rule->purpose,
            .legal_basis = rule->legal_basis,
            .fields = rule->fields,
            .expires_at = d.expires_at,
        };
        if (record_queued(b, &rd) != 0)
            return -1;
        receiver_t *receiver = sessions_receiver(b->sessions, to->id);
        if (receiver != NULL) {
            receiver->dirty = 1;
            masks->online |= receiver->session != NULL;
        }
    }
    return (long)n;
}

/* How long the item's deliveries will keep it: the latest expiry of the
 * rules that deliver it to anyone; 0 when none does. Written with the item
 * and its publish (store_item_add_retained, store_publish_add_retained), so
 * that its deliveries need not raise them. */
static int64_t item_retention(const broker_t *b, const item_plan_t *plan,
                              const publish_delivery_t *deliveries, size_t n)
{
    int64_t until = 0;
    for (size_t k = 0; k < n; k++) {
        const policy_rule_t *rule = plan->decision.grants[deliveries[k].grant].rule;
        if (b->now_s + rule->retention_s > until)
            until = b->now_s + rule->retention_s;
    }
    return until;
}

/* Encode the Accepted frame of a publish. */
static uint8_t *encode_accepted(const uint8_t *message_id, const Schakel__ItemAccepted *items,
                                size_t n, int duplicate, size_t *len)
{
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    Schakel__Accepted accepted = SCHAKEL__ACCEPTED__INIT;
    Schakel__ItemAccepted *ptrs[SCHAKEL_MAX_ITEMS];
    for (size_t i = 0; i < n; i++)
        ptrs[i] = (Schakel__ItemAccepted *)(uintptr_t)&items[i];
    accepted.has_message_id = 1;
    accepted.message_id.data = (uint8_t *)(uintptr_t)message_id;
    accepted.message_id.len = SCHAKEL_MESSAGE_ID_BYTES;
    accepted.n_items = n;
    accepted.items = ptrs;
    accepted.has_duplicate = duplicate != 0;
    accepted.duplicate = duplicate != 0;
    frame.body_case = SCHAKEL__FRAME__BODY_ACCEPTED;
    frame.accepted = &accepted;
    return wire_encode_frame(&frame, len);
}

/* store_publish's failure that is not the store's: store_errmsg still
 * holds whatever the store last said, so it must not be logged for it. */
#define PUBLISH_OUT_OF_MEMORY (-2)

/* Queue the publish's deliveries as mailbox rows (store_mailbox.h), one per
 * recipient, its deliveries the consecutive seqs deliveries_number gave it,
 * each delivery's rule a slot of the row (a rule once per row). The items
 * are stored already (item_seqs, by index). Reuses list->group.
 * 0, -1 on a store error (store_errmsg), or PUBLISH_OUT_OF_MEMORY (no row
 * written). Cost: one pass over the publish's deliveries and one row
 * insert per recipient; finding a rule's slot is linear in the row's
 * slots, of which a publish has as many as distinct rules reach the
 * recipient (a few). */
static int store_rows(broker_t *b, const policy_principal_t *sender,
                      const Schakel__Publish *publish, const item_plan_t *plans,
                      const int64_t *item_seqs, publish_deliveries_t *list)
{
    if (list->n == 0)
        return 0;
    uint32_t *at = list->group; /* at[seq - first_seq]: that delivery's place in list */
    for (size_t k = 0; k < list->n; k++)
        at[list->all[k].seq - list->first_seq] = (uint32_t)k;
    store_mailbox_entry_t *entries = malloc(list->n * sizeof *entries);
    store_mailbox_rule_t *rules = malloc(list->n * sizeof *rules);
    const policy_rule_t **slot_rule = malloc(list->n * sizeof *slot_rule);
    int rc = entries != NULL && rules != NULL && slot_rule != NULL ? 0 : PUBLISH_OUT_OF_MEMORY;
    for (size_t start = 0; rc == 0 && start < list->n;) {
        const policy_principal_t *to = list->all[at[start]].to;
        size_t n = 0, n_rules = 0;
        while (start + n < list->n && list->all[at[start + n]].to == to) {
            const publish_delivery_t *pd = &list->all[at[start + n]];
            const policy_rule_t *rule = plans[pd->item].decision.grants[pd->grant].rule;
            size_t slot = 0;
            while (slot < n_rules && slot_rule[slot] != rule)
                slot++;
            if (slot == n_rules) {
                slot_rule[n_rules] = rule;
                rules[n_rules++] = (store_mailbox_rule_t){
                    .rule_id = rule->id,
                    .rule_hash = rule->hash_hex,
                    .purpose = rule->purpose,
                    .legal_basis = rule->legal_basis,
                    .expires_at = b->now_s + rule->retention_s,
                    .fields = rule->fields,
                };
            }
            entries[n++] = (store_mailbox_entry_t){
                .item_seq = (uint64_t)item_seqs[pd->item],
                .item_index = pd->item,
                .rule_slot = (uint32_t)slot,
            };
        }
        store_mailbox_row_t row = {
            .first_seq = list->all[at[start]].seq,
            .recipient = to->id,
            .sender = sender->id,
            .sender_partner = sender->partner->id,
            .message_id = publish->message_id.data,
            .accepted_at = b->now_s,
            .entries = entries,
            .n = n,
            .rules = rules,
            .n_rules = n_rules,
        };
        rc = store_mailbox_row_add(b->store, &row);
        start += n;
    }
    free(entries);
    free(rules);
    free(slot_rule);
    return rc;
}

/* Store the publish, its items and the deliveries of list (deliveries_list;
 * numbered here, in the transaction), and queue the Accepted. Returns 0,
 * -1 on a store error, or PUBLISH_OUT_OF_MEMORY when the mailbox rows
 * or the Accepted could not be put together: the caller then fails the
 * whole turn, so that no half-written publish is ever committed. */
static int store_publish(broker_t *b, const session_t *session, const policy_principal_t *sender,
                         const Schakel__Publish *publish, const uint8_t hash[32],
                         const uint8_t root[32], const item_plan_t *plans,
                         publish_deliveries_t *list)
{
    Schakel__ItemAccepted results[SCHAKEL_MAX_ITEMS];
    int64_t retain[SCHAKEL_MAX_ITEMS], item_seqs[SCHAKEL_MAX_ITEMS], publish_retain = 0;
    const uint8_t *id = publish->message_id.data;
    long deliveries = 0;
    for (size_t i = 0; i < publish->n_items; i++) {
        retain[i] = item_retention(b, &plans[i], list->all + list->item_start[i],
                                   list->item_start[i + 1] - list->item_start[i]);
        if (retain[i] > publish_retain)
            publish_retain = retain[i];
    }
    /* the idempotency record outlives a short retention, or none */
    if (publish_retain < b->now_s + b->idempotency_s)
        publish_retain = b->now_s + b->idempotency_s;
    if (store_begin(b->store) != 0)
        return -1;
    int64_t publish_id = store_publish_add_retained(
        b->store, sender->id, id, hash, publish->signature.data, root, b->now_s, publish_retain);
    if (publish_id < 0)
        return -1;
    if (list->n > 0) {
        int64_t first_seq = store_delivery_seqs_reserve(b->store, list->n);
        if (first_seq < 0)
            return -1;
        deliveries_number(list, publish->n_items, (uint64_t)first_seq);
    }
    for (size_t i = 0; i < publish->n_items; i++) {
        int64_t item_seq =
            store_item_add_retained(b->store, publish_id, (uint32_t)i, publish->items[i].data,
                                    publish->items[i].len, retain[i]);
        if (item_seq < 0)
            return -1;
        metrics_item_accepted(b->metrics, (uint64_t)item_seq, b->now_ms);
        item_masks_t masks = {.n = 0, .online = 0};
        deliver_kept_envelope_t written;
        long queued = store_deliveries(
            b, sender, publish, i, item_seq, &plans[i], list->all + list->item_start[i],
            list->item_start[i + 1] - list->item_start[i], &masks, &written);
        if (queued < 0)
            return -1;
        /* Decoded from the bytes just stored: the push takes it from here
         * once the turn commits (a recipient away would not be pushed it
         * soon enough to be worth keeping). */
        if (masks.online)
            deliver_keep_published(b, (uint64_t)item_seq, plans[i].signal, masks.masks, masks.n,
                                   (size_t)queued, &written);
        schakel__item_accepted__init(&results[i]);
        results[i].has_seq = 1;
        results[i].seq = (uint64_t)item_seq;
        results[i].has_recipients = 1;
        results[i].recipients = (uint32_t)queued;
        deliveries += queued;
        item_seqs[i] = item_seq;
    }
    int rows = store_rows(b, sender, publish, plans, item_seqs, list);
    if (rows != 0)
        return rows;
    size_t len = 0;
    uint8_t *frame = encode_accepted(id, results, publish->n_items, 0, &len);
    if (frame == NULL)
        return PUBLISH_OUT_OF_MEMORY;
    if (store_publish_set_reply(b->store, publish_id, frame, len) != 0) {
        free(frame);
        return -1;
    }
    /* Recorded before the reply is queued: an acceptance that cannot be
     * recorded is not given. */
    if (record_accepted(b, sender->id, id, publish->n_items, (size_t)deliveries, 0) != 0) {
        free(frame);
        return -1;
    }
    if (broker_queue_reply(b, session, frame, len, id) != 0)
        return -1;
    b->stats.accepted++;
    return 0;
}

uint8_t *publish_duplicate_reply(const uint8_t *reply, size_t reply_len, size_t *len)
{
    wire_error_t err = {0};
    Schakel__Frame *original = reply ? wire_decode_frame(reply, reply_len, &err) : NULL;
    if (original == NULL || original->body_case != SCHAKEL__FRAME__BODY_ACCEPTED) {
        wire_frame_free(&original);
        return NULL;
    }
    original->accepted->has_duplicate = 1;
    original->accepted->duplicate = 1;
    uint8_t *frame = wire_encode_frame(original, len);
    wire_frame_free(&original);
    return frame;
}

/* Bounds on what the store keeps (space.h), asked once every item is
 * valid and allowed, so that a publish refused for good (malformed, denied
 * by the policy) is told so rather than to retry; before anything is
 * stored. A repeat is answered before (answer_repeat): it stores nothing
 * new. 1 after queueing the refusal, else 0. */
static int publish_bounds_refuse(broker_t *b, const session_t *session,
                                 const policy_principal_t *sender, const Schakel__Publish *publish)
{
    const uint8_t *id = publish->message_id.data;
    char text[SCHAKEL_MAX_REJECT_TEXT];
    if (space_floor_refuses(b, text, sizeof text)) {
        broker_reject(b, session, SCHAKEL__REASON__UNAVAILABLE, text, id, -1, 0);
        return 1;
    }
    uint64_t incoming = 0;
    for (size_t i = 0; i < publish->n_items; i++)
        incoming += store_sealed_len(publish->items[i].len);
    if (space_share_refuses(b, sender->partner->id, incoming, text, sizeof text)) {
        broker_reject(b, session, SCHAKEL__REASON__RATE_LIMITED, text, id, -1, 0);
        return 1;
    }
    return 0;
}

/* A repeat of a known message id: same content gets the original Accepted
 * (marked duplicate), other content is a conflict. Returns 1 when handled,
 * 0 when the id is new, -1 on a store error. */
static int answer_repeat(broker_t *b, const session_t *session, const policy_principal_t *sender,
                         const Schakel__Publish *publish, const uint8_t hash[32])
{
    const uint8_t *id = publish->message_id.data;
    int same_content = 0;
    uint8_t *reply = NULL;
    size_t reply_len = 0;
    int found =
        store_publish_find(b->store, sender->id, id, hash, &same_content, &reply, &reply_len);
    if (found < 0)
        log_event(LOG_ERROR, "store.read_failed", "error", store_errmsg(b->store), NULL);
    if (found <= 0)
        return found;
    if (!same_content) {
        free(reply);
        broker_reject(b, session, SCHAKEL__REASON__DUPLICATE_CONFLICT,
                      "this message id was already used by this sender for other content", id, -1,
                      0);
        return 1;
    }
    size_t len = 0;
    uint8_t *frame = publish_duplicate_reply(reply, reply_len, &len);
    free(reply);
    if (frame == NULL)
        return -1;
    /* Passed as an accept: if the original is in this very turn and the turn
     * fails, the repeat must not claim it either. */
    broker_queue_reply(b, session, frame, len, id);
    b->stats.duplicates++;
    (void)record_accepted(b, sender->id, id, publish->n_items, 0, 1); /* failing fails the turn */
    return 1;
}

void publish_handle(broker_t *b, session_t *session, const policy_principal_t *sender,
                    const Schakel__Publish *publish)
{
    const uint8_t *id = publish->message_id.data;
    uint8_t root[32], signed_bytes[64], hash[32];

    /* First and cheapest: a flood is refused before any signature work. */
    if (!sessions_allow_publish(b->sessions, sender->id, b->now_ms, b->publish_rate)) {
        char text[128];
        snprintf(text, sizeof text,
                 "more than %u %s per second from this principal; slow down and retry "
                 "with the same message id",
                 b->publish_rate, plural(b->publish_rate, "publish", "publishes"));
        broker_reject(b, session, SCHAKEL__REASON__RATE_LIMITED, text, id, -1, 0);
        return;
    }
    wire_items_root(publish->items, publish->n_items, root);
    wire_signed_bytes(id, root, signed_bytes);
    if (keys_verify(sender->sign_pk, signed_bytes, sizeof signed_bytes, publish->signature.data) !=
        0) {
        broker_reject(b, session, SCHAKEL__REASON__BAD_SIGNATURE,
                      "the signature does not verify with the sender's registered key", id, -1, 0);
        return;
    }
    wire_publish_hash_signed(signed_bytes, &publish->signature, hash);
    int repeat = answer_repeat(b, session, sender, publish, hash);
    if (repeat != 0) {
        if (repeat < 0)
            broker_reject(b, session, broker_store_failure_reason(b),
                          "the broker could not read its store; publish again", id, -1, 0);
        return;
    }
    /* Not calloc: a plan is 1.3 KB, mostly the decision's grant table,
     * which policy_decide_signal fills; only the signal must start NULL
     * (plans_free frees every one). */
    item_plan_t *plans = malloc(publish->n_items * sizeof *plans);
    for (size_t i = 0; plans != NULL && i < publish->n_items; i++)
        plans[i].signal = NULL;
    if (plans == NULL) {
        broker_reject(b, session, SCHAKEL__REASON__INTERNAL_ERROR, "out of memory", id, -1, 0);
        return;
    }
    /* Not zeroed whole: item_start is 2 KB that deliveries_list fills. */
    publish_deliveries_t list;
    list.all = NULL;
    list.n = list.cap = 0;
    list.group = NULL;
    list.next_seq = NULL;
    list.slot_to = NULL;
    list.slot_group = NULL;
    int refused = plan_items(b, session, sender, publish, plans) != 0 ||
                  publish_bounds_refuse(b, session, sender, publish);
    int stored = 0;
    if (!refused && deliveries_list(b, publish, plans, &list) != 0) {
        broker_reject(b, session, SCHAKEL__REASON__INTERNAL_ERROR, "out of memory", id, -1, 0);
    } else if (!refused && (stored = store_publish(b, session, sender, publish, hash, root, plans,
                                                   &list)) != 0) {
        uint64_t stored_seq, committed_seq;
        uint8_t committed_hash[STORE_AUDIT_HASH_BYTES];
        /* a tail rewritten outside the broker is said (and counted) as
         * audit.tail_mismatch alone (record.c) */
        if (!store_audit_tail_mismatch(b->store, &stored_seq, NULL, &committed_seq, committed_hash))
            log_event(LOG_ERROR, "store.write_failed", "error",
                      stored == PUBLISH_OUT_OF_MEMORY ? "out of memory" : store_errmsg(b->store),
                      NULL);
        broker_fail_turn(b);
        broker_reject(b, session, b->turn_failure,
                      "the broker could not store this publish; nothing was stored, publish "
                      "again with the same message id",
                      id, -1, 0);
    }
    deliveries_free(&list);
    plans_free(plans, publish->n_items);
}
