/*
 * deliver.c — mailboxes to receivers: the push, the items the publish path
 * keeps for it, and whether the policy still allows a waiting delivery
 * (deliver_ack.c: Flow, acks, and what else ends a delivery).
 *
 * A delivery leaves a mailbox only on the recipient's ack. The push reads
 * at most `window - inflight` rows per receiver per turn from the store, so
 * memory does not grow with a backlog: a queue waits on disk. Sends never
 * block: a full peer queue (EAGAIN) leaves the rest for a later turn, an
 * unroutable peer (EHOSTUNREACH) ends its session. Trusts the store and the
 * session table; each delivery is checked against the policy as it is
 * pushed (a withheld delivery is revoked). A receiver
 * whose connection, or whose principal's connections together, owe their
 * bound waits as for a full peer queue (sendq.h). The
 * push's plaintext (decoded items, reduced copies, frames) is wiped when it
 * is released. What a pass opens from the store does not outlive the pass;
 * what the publish path keeps for the push (deliver_kept_t: at most
 * DELIVER_KEPT_ITEMS items) lives until pushed, evicted or 2 s old (the
 * loop wakes for that: deliver_kept_wait_ms).
 */
#include "broker.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <zmq.h>

#include "case.h"
#include "log.h"
#include "record.h"

/*
 * The push goes in rounds: each receiver with something to push gets up to
 * PUSH_ROUND deliveries, then the next one, until none has more. An item
 * queued for several recipients usually stands at the same place in each
 * mailbox, so one round pushes the same items to each of them in turn, and
 * the content of a delivery by reference (the item's signed Signal reduced
 * to the rule's fields) comes from one decoding of the item, and is packed
 * once per field mask, not once per recipient: the push cache below holds
 * both for the pass.
 */
#define PUSH_ROUND 16u

/* Reductions kept per item: one per rule (field mask) that reaches it;
 * a further mask replaces the last one. */
#define PUSH_CACHE_MASKS 4u

typedef struct push_reduction {
    uint32_t fields;
    uint8_t *bytes; /* malloc'd serialized Signal, plaintext: wiped on release */
    size_t len;
} push_reduction_t;

typedef struct push_cached_item {
    uint64_t item_seq;       /* 0: empty (item seqs start at 1) */
    Schakel__Signal *signal; /* the item decoded (wire_wiped_allocator), or NULL */
    size_t n;
    push_reduction_t reduced[PUSH_CACHE_MASKS];
} push_cached_item_t;

/* Direct-mapped by item seq: the items of one round are mostly consecutive
 * seqs, which map to different slots. Lives only for one pass
 * (deliver_push_all wipes it at the end): no plaintext outlives the pass. */
typedef struct push_cache {
    push_cached_item_t slots[PUSH_ROUND];
} push_cache_t;

static void push_reduction_release(push_reduction_t *reduction)
{
    sodium_memzero(reduction->bytes, reduction->len);
    free(reduction->bytes);
    reduction->bytes = NULL;
    reduction->len = 0;
}

static void push_slot_clear(push_cached_item_t *slot)
{
    for (size_t i = 0; i < slot->n; i++)
        push_reduction_release(&slot->reduced[i]);
    if (slot->signal != NULL)
        schakel__signal__free_unpacked(slot->signal, wire_wiped_allocator());
    slot->signal = NULL;
    slot->n = 0;
    slot->item_seq = 0;
}

/* ------------------------------------------------ items kept from publish */

/*
 * The publish path has every item decoded in memory a moment before its
 * deliveries are pushed; opening it again from the store (decryption and
 * unpack, ~20,000 instructions) is what this cache saves. Each entry holds
 * the item reduced to its deliveries' field masks, made from the Signal the
 * publish path decoded from the very bytes it stored: the same bytes
 * publish_signal_for_recipient makes from the store's copy.
 *
 * Item seqs are handed out before the commit, so an entry is pending until
 * its turn's commit succeeded (deliver_kept_settle), and a rolled-back turn
 * wipes its entries: a seq given again to another item can never find the
 * rolled-back content. Direct-mapped by item seq over DELIVER_KEPT_ITEMS
 * slots: at most 2048 items' plaintext, DELIVER_KEPT_BYTES of it in all. A
 * slot taken stays with its item
 * until the item's last delivery is pushed or it is DELIVER_KEPT_MAX_AGE_MS
 * old, and a newer item whose seq maps to it is not kept: a mailbox is
 * pushed in seq order, so the oldest items are the ones the push needs
 * next (measured: under bulk load a newer item evicting an older one left
 * half the deliveries to the store, the evicted entries made for nothing).
 */
enum kept_state { KEPT_EMPTY = 0, KEPT_PENDING, KEPT_LIVE };

typedef struct kept_item {
    uint64_t item_seq;
    enum kept_state state;
    int listed;    /* in pending[] of the open turn */
    uint32_t owed; /* deliveries not pushed from it yet */
    int64_t kept_ms;
    size_t n;
    push_reduction_t reduced[DELIVER_KEPT_MASKS];
    deliver_kept_envelope_t envelope; /* n 0: none, every row is opened */
} kept_item_t;

struct deliver_kept {
    kept_item_t slots[DELIVER_KEPT_ITEMS];
    uint32_t pending[DELIVER_KEPT_ITEMS]; /* slots of the open turn's entries */
    size_t n_pending;
    size_t n_held;
    size_t bytes_held;     /* of the entries' reductions: at most DELIVER_KEPT_BYTES */
    int64_t next_sweep_ms; /* no usable entry is due before this */
};

deliver_kept_t *deliver_kept_new(void)
{
    deliver_kept_t *kept = calloc(1, sizeof *kept);
    if (kept != NULL)
        kept->next_sweep_ms = INT64_MAX;
    return kept;
}

static void kept_wipe(deliver_kept_t *kept, kept_item_t *slot)
{
    if (slot->state == KEPT_EMPTY)
        return;
    for (size_t i = 0; i < slot->n; i++) {
        kept->bytes_held -= slot->reduced[i].len;
        push_reduction_release(&slot->reduced[i]);
    }
    slot->n = 0;
    slot->envelope.n = 0;
    slot->item_seq = 0;
    slot->owed = 0;
    slot->state = KEPT_EMPTY;
    kept->n_held--;
}

void deliver_kept_clear(deliver_kept_t *kept)
{
    if (kept == NULL)
        return;
    for (size_t i = 0; i < DELIVER_KEPT_ITEMS; i++) {
        kept_wipe(kept, &kept->slots[i]);
        kept->slots[i].listed = 0;
    }
    kept->n_pending = 0;
    kept->next_sweep_ms = INT64_MAX;
}

void deliver_kept_destroy(deliver_kept_t **kept)
{
    if (kept == NULL || *kept == NULL)
        return;
    deliver_kept_clear(*kept);
    free(*kept);
    *kept = NULL;
}

static void kept_reduce_release(kept_item_t *slot)
{
    for (size_t i = 0; i < slot->n; i++)
        push_reduction_release(&slot->reduced[i]);
    slot->n = 0;
}

/* Reduce signal to each distinct mask into slot, within what the cache may
 * still hold (`room` bytes). 0, or -1 (nothing kept: out of memory or out
 * of room). */
static int kept_reduce(kept_item_t *slot, const Schakel__Signal *signal, const uint32_t *masks,
                       size_t n_masks, size_t room)
{
    size_t bytes = 0;
    for (size_t m = 0; m < n_masks; m++) {
        size_t i = 0;
        while (i < slot->n && slot->reduced[i].fields != masks[m])
            i++;
        if (i < slot->n)
            continue; /* the same mask twice */
        size_t len = 0;
        uint8_t *reduced = publish_signal_for_recipient(signal, masks[m], &len);
        if (reduced == NULL) {
            kept_reduce_release(slot);
            return -1;
        }
        slot->reduced[slot->n++] = (push_reduction_t){masks[m], reduced, len};
        bytes += len;
        if (bytes > room) {
            kept_reduce_release(slot);
            return -1;
        }
    }
    return 0;
}

int deliver_kept_add(deliver_kept_t *kept, uint64_t item_seq, const Schakel__Signal *signal,
                     const uint32_t *masks, size_t n_masks, uint32_t owed, int64_t now_ms)
{
    if (kept == NULL || item_seq == 0)
        return 0;
    size_t index = (size_t)(item_seq % DELIVER_KEPT_ITEMS);
    kept_item_t *slot = &kept->slots[index];
    if (slot->state != KEPT_EMPTY && slot->item_seq != item_seq)
        return 0;          /* an older item the push has yet to reach keeps its slot */
    kept_wipe(kept, slot); /* this seq's entry of a rolled-back turn: gone */
    if (signal == NULL || owed == 0 || n_masks == 0 || n_masks > DELIVER_KEPT_MASKS ||
        kept_reduce(slot, signal, masks, n_masks, DELIVER_KEPT_BYTES - kept->bytes_held) != 0)
        return 0;
    for (size_t i = 0; i < slot->n; i++)
        kept->bytes_held += slot->reduced[i].len;
    slot->item_seq = item_seq;
    slot->state = KEPT_PENDING;
    slot->owed = owed;
    slot->kept_ms = now_ms;
    kept->n_held++;
    if (!slot->listed) { /* each slot at most once: n_pending <= DELIVER_KEPT_ITEMS */
        slot->listed = 1;
        kept->pending[kept->n_pending++] = (uint32_t)index;
    }
    return 1;
}

int deliver_kept_envelope(deliver_kept_t *kept, uint64_t item_seq,
                          const deliver_kept_envelope_t *envelope)
{
    if (kept == NULL || envelope == NULL || envelope->n > DELIVER_KEPT_DELIVERIES)
        return 0;
    kept_item_t *slot = &kept->slots[item_seq % DELIVER_KEPT_ITEMS];
    if (slot->state != KEPT_PENDING || slot->item_seq != item_seq)
        return 0;
    slot->envelope = *envelope;
    return 1;
}

void deliver_kept_settle(deliver_kept_t *kept, int committed)
{
    if (kept == NULL)
        return;
    for (size_t i = 0; i < kept->n_pending; i++) {
        kept_item_t *slot = &kept->slots[kept->pending[i]];
        slot->listed = 0;
        if (slot->state != KEPT_PENDING)
            continue; /* wiped since */
        if (!committed) {
            kept_wipe(kept, slot);
            continue;
        }
        slot->state = KEPT_LIVE;
        if (slot->kept_ms <= INT64_MAX - DELIVER_KEPT_MAX_AGE_MS &&
            slot->kept_ms + DELIVER_KEPT_MAX_AGE_MS < kept->next_sweep_ms)
            kept->next_sweep_ms = slot->kept_ms + DELIVER_KEPT_MAX_AGE_MS;
    }
    kept->n_pending = 0;
}

/* Cost: nothing until the oldest usable entry is due, then one look at
 * every slot. */
void deliver_kept_sweep(deliver_kept_t *kept, int64_t now_ms)
{
    if (kept == NULL || now_ms < kept->next_sweep_ms)
        return;
    int64_t next = INT64_MAX;
    for (size_t i = 0; i < DELIVER_KEPT_ITEMS; i++) {
        kept_item_t *slot = &kept->slots[i];
        if (slot->state != KEPT_LIVE)
            continue;
        if (now_ms - slot->kept_ms >= DELIVER_KEPT_MAX_AGE_MS)
            kept_wipe(kept, slot);
        else if (slot->kept_ms + DELIVER_KEPT_MAX_AGE_MS < next)
            next = slot->kept_ms + DELIVER_KEPT_MAX_AGE_MS;
    }
    kept->next_sweep_ms = next;
}

int deliver_kept_wait_ms(const deliver_kept_t *kept, int64_t now_ms, int max_ms)
{
    if (kept == NULL || kept->next_sweep_ms == INT64_MAX)
        return max_ms;
    if (kept->next_sweep_ms <= now_ms)
        return 0;
    int64_t left = kept->next_sweep_ms - now_ms;
    return left < max_ms ? (int)left : max_ms;
}

static const kept_item_t *kept_live(const deliver_kept_t *kept, uint64_t item_seq)
{
    if (kept == NULL)
        return NULL;
    const kept_item_t *slot = &kept->slots[item_seq % DELIVER_KEPT_ITEMS];
    return slot->state == KEPT_LIVE && slot->item_seq == item_seq ? slot : NULL;
}

int deliver_kept_vouch(const deliver_kept_t *kept, const policy_t *policy, uint64_t generation,
                       const store_delivery_t *d, uint32_t *fields)
{
    const kept_item_t *slot = kept_live(kept, d->item_seq);
    if (slot == NULL || slot->envelope.n == 0 || slot->envelope.policy != policy ||
        slot->envelope.policy_generation != generation || !d->by_ref || d->is_case_event ||
        d->case_id != NULL)
        return 0;
    const deliver_kept_envelope_t *e = &slot->envelope;
    const deliver_kept_delivery_t *w = NULL;
    for (size_t i = 0; i < e->n && w == NULL; i++)
        if (e->deliveries[i].seq == d->seq)
            w = &e->deliveries[i];
    if (w == NULL)
        return 0;
    const policy_rule_t *rule = w->rule;
    if (d->item_index != e->item_index || d->accepted_at != e->accepted_at ||
        d->expires_at != w->expires_at ||
        sodium_memcmp(d->message_id, e->message_id, SCHAKEL_MESSAGE_ID_BYTES) != 0 ||
        strcmp(d->recipient, w->recipient->id) != 0 || strcmp(d->sender, e->sender->id) != 0 ||
        strcmp(d->sender_partner, e->sender->partner->id) != 0 ||
        strcmp(d->rule_id, rule->id) != 0 || strcmp(d->rule_hash, rule->hash_hex) != 0 ||
        strcmp(d->purpose, rule->purpose) != 0 || strcmp(d->legal_basis, rule->legal_basis) != 0)
        return 0;
    *fields = rule->fields;
    return 1;
}

const uint8_t *deliver_kept_content(const deliver_kept_t *kept, uint64_t item_seq, uint32_t fields,
                                    size_t *len)
{
    const kept_item_t *slot = kept_live(kept, item_seq);
    for (size_t i = 0; slot != NULL && i < slot->n; i++) {
        if (slot->reduced[i].fields == fields) {
            *len = slot->reduced[i].len;
            return slot->reduced[i].bytes;
        }
    }
    return NULL;
}

void deliver_kept_pushed(deliver_kept_t *kept, uint64_t item_seq)
{
    if (kept_live(kept, item_seq) == NULL)
        return;
    kept_item_t *slot = &kept->slots[item_seq % DELIVER_KEPT_ITEMS];
    if (slot->owed <= 1)
        kept_wipe(kept, slot); /* its last recipient has it */
    else
        slot->owed--;
}

/* An entry that cannot serve one of its deliveries (a mask it was not
 * made for): gone, so that the item is opened from the store instead. */
static void kept_forget(deliver_kept_t *kept, uint64_t item_seq)
{
    if (kept_live(kept, item_seq) != NULL)
        kept_wipe(kept, &kept->slots[item_seq % DELIVER_KEPT_ITEMS]);
}

size_t deliver_kept_count(const deliver_kept_t *kept)
{
    return kept != NULL ? kept->n_held : 0;
}

size_t deliver_kept_bytes(const deliver_kept_t *kept)
{
    return kept != NULL ? kept->bytes_held : 0;
}

void deliver_keep_published(broker_t *b, uint64_t item_seq, const Schakel__Signal *signal,
                            const uint32_t *masks, size_t n_masks, size_t owed,
                            const deliver_kept_envelope_t *envelope)
{
    if (owed == 0 || owed > UINT32_MAX)
        return;
    if (b->kept == NULL && (b->kept = deliver_kept_new()) == NULL)
        return; /* out of memory: the push opens it from the store */
    if (deliver_kept_add(b->kept, item_seq, signal, masks, n_masks, (uint32_t)owed, b->now_ms) ==
            1 &&
        envelope != NULL)
        (void)deliver_kept_envelope(b->kept, item_seq, envelope);
}

/* ------------------------------------------------ the pass's own cache */

static void push_cache_clear(push_cache_t *cache)
{
    for (size_t i = 0; i < PUSH_ROUND; i++)
        push_slot_clear(&cache->slots[i]);
}

/* The slot of d's item, its Signal decoded. The item was validated in full
 * when it was accepted, and its sealed bytes authenticated when the store
 * opened them, so a plain unpack suffices; one that no longer decodes is
 * damage (NULL), as is running out of memory. */
static push_cached_item_t *push_cache_item(push_cache_t *cache, const store_delivery_t *d)
{
    push_cached_item_t *slot = &cache->slots[d->item_seq % PUSH_ROUND];
    if (slot->item_seq == d->item_seq && slot->signal != NULL)
        return slot;
    if (d->body == NULL)
        return NULL; /* defensive: the scan skips only items push_cache_has */
    push_slot_clear(slot);
    slot->signal = schakel__signal__unpack(wire_wiped_allocator(), d->body_len, d->body);
    if (slot->signal == NULL)
        return NULL;
    slot->item_seq = d->item_seq;
    return slot;
}

/* The content of a delivery by reference: the item's signed Signal reduced
 * to the deciding rule's fields, exactly what the publish path would have
 * stored; from the cache, or made and kept there. Borrowed: valid until the
 * cache's next use for another item in the same slot, or the end of the
 * pass. NULL when the item does not decode or memory runs out. */
static const uint8_t *push_cache_content(push_cache_t *cache, const store_delivery_t *d,
                                         size_t *len)
{
    push_cached_item_t *slot = push_cache_item(cache, d);
    if (slot == NULL)
        return NULL;
    for (size_t i = 0; i < slot->n; i++) {
        if (slot->reduced[i].fields == d->fields) {
            *len = slot->reduced[i].len;
            return slot->reduced[i].bytes;
        }
    }
    size_t reduced_len = 0;
    uint8_t *reduced = publish_signal_for_recipient(slot->signal, d->fields, &reduced_len);
    if (reduced == NULL)
        return NULL;
    if (slot->n == PUSH_CACHE_MASKS) /* more rules than kept: the last one goes */
        push_reduction_release(&slot->reduced[--slot->n]);
    slot->reduced[slot->n++] = (push_reduction_t){d->fields, reduced, reduced_len};
    *len = reduced_len;
    return reduced;
}

typedef struct push_state {
    broker_t *broker;
    receiver_t *receiver;
    push_cache_t *cache;
    int stop_errno; /* 0, EAGAIN or EHOSTUNREACH */
    int held;       /* stopped at a delivery whose commit is not synced yet */
    int rescan;     /* stopped at a kept item that lacked the delivery's mask */
} push_state_t;

/* The scan's hint (store_mailbox_scan_hinted): an item kept from its
 * publish, or one this pass decoded already, is not opened again. */
static int push_cache_has(uint64_t item_seq, void *arg)
{
    const push_state_t *st = arg;
    if (kept_live(st->broker->kept, item_seq) != NULL)
        return 1;
    const push_cached_item_t *slot = &st->cache->slots[item_seq % PUSH_ROUND];
    return slot->item_seq == item_seq && slot->signal != NULL;
}

/* The scan's vouch (store_mailbox_scan_vouched): a row the publish path
 * wrote for a kept item, every column as written, is not opened again. */
static int push_vouch(const store_delivery_t *d, uint32_t *fields, void *arg)
{
    const push_state_t *st = arg;
    return deliver_kept_vouch(st->broker->kept, st->broker->policy, st->broker->policy_generation,
                              d, fields);
}

static uint8_t *encode_deliver(const store_delivery_t *d, const uint8_t *content,
                               size_t content_len, int redelivery, size_t *len)
{
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    Schakel__Deliver deliver = SCHAKEL__DELIVER__INIT;
    deliver.has_seq = 1;
    deliver.seq = d->seq;
    deliver.has_message_id = 1;
    deliver.message_id.data = (uint8_t *)(uintptr_t)d->message_id;
    deliver.message_id.len = SCHAKEL_MESSAGE_ID_BYTES;
    deliver.has_item_index = 1;
    deliver.item_index = d->item_index;
    deliver.has_item_seq = 1;
    deliver.item_seq = d->item_seq;
    deliver.sender = (char *)(uintptr_t)d->sender;
    deliver.sender_partner = (char *)(uintptr_t)d->sender_partner;
    deliver.rule_id = (char *)(uintptr_t)d->rule_id;
    deliver.rule_hash = (char *)(uintptr_t)d->rule_hash;
    deliver.purpose = (char *)(uintptr_t)d->purpose;
    deliver.legal_basis = (char *)(uintptr_t)d->legal_basis;
    deliver.has_accepted_at = 1;
    deliver.accepted_at = d->accepted_at;
    deliver.has_expires_at = 1;
    deliver.expires_at = d->expires_at;
    /* a case event (filtered for the member's rule) instead of a signal */
    ProtobufCBinaryData *body = d->is_case_event ? &deliver.case_event : &deliver.signal;
    if (d->is_case_event)
        deliver.has_case_event = 1;
    else
        deliver.has_signal = 1;
    body->data = (uint8_t *)(uintptr_t)content;
    body->len = content_len;
    deliver.has_redelivery = 1;
    deliver.redelivery = redelivery != 0;
    frame.body_case = SCHAKEL__FRAME__BODY_DELIVER;
    frame.deliver = &deliver;
    return wire_encode_frame(&frame, len);
}

/* The policy in force still allows this delivery: its rule, in the very
 * version that decided it (same id and content hash), still delivers to
 * this principal. A reload that removes or changes the rule, or the
 * recipient, stops what waits in mailboxes too. */
static int allowed_under(const policy_t *policy, const store_delivery_t *d, const char *recipient)
{
    if (d->case_id != NULL) /* under a membership rule of a case type */
        return case_delivery_still_allowed(policy, d, policy_principal_by_id(policy, recipient));
    const policy_rule_t *rule = policy_rule_by_id(policy, d->rule_id);
    if (rule == NULL || strcmp(rule->hash_hex, d->rule_hash) != 0)
        return 0;
    return policy_rule_reaches(policy, rule, policy_principal_by_id(policy, recipient));
}

/* allowed_under, for a delivery known by its rule alone. */
static int rule_allows(const policy_t *policy, const store_delivery_rule_t *rule,
                       const char *recipient)
{
    store_delivery_t d = {
        .rule_id = rule->rule_id,
        .rule_hash = rule->rule_hash,
        .case_id = rule->case_id[0] != '\0' ? rule->case_id : NULL,
    };
    return allowed_under(policy, &d, recipient);
}

int deliver_pending_check(broker_t *b, const char *recipient, uint64_t seq)
{
    store_delivery_rule_t rule;
    int found = store_delivery_rule(b->store, recipient, seq, &rule);
    if (found <= 0)
        return found < 0 ? -1 : DELIVER_NOT_PENDING;
    if (!rule_allows(b->policy, &rule, recipient))
        return DELIVER_REVOKED;
    if (b->policy_pending != NULL && !rule_allows(b->policy_pending, &rule, recipient))
        return DELIVER_HELD;
    return DELIVER_ALLOWED;
}

static int still_allowed(const broker_t *b, const store_delivery_t *d, const char *recipient)
{
    return allowed_under(b->policy, d, recipient);
}

int deliver_decision(const broker_t *b, const char *recipient, uint64_t seq, const char *rule_id,
                     const char *rule_hash, const char *case_id)
{
    if (rule_id == NULL || rule_hash == NULL)
        return DELIVER_REVOKED; /* a damaged row: no rule allows it */
    const store_delivery_t d = {.rule_id = rule_id, .rule_hash = rule_hash, .case_id = case_id};
    if (deliver_revocation_queued(b, recipient, seq))
        return DELIVER_REVOKED;
    /* as the push asks (push_one): a reload not yet recorded first, whose
     * refusal holds the delivery, neither sent nor revoked */
    if (b->policy_pending != NULL && !allowed_under(b->policy_pending, &d, recipient))
        return DELIVER_HELD;
    if (!allowed_under(b->policy, &d, recipient))
        return DELIVER_REVOKED;
    return DELIVER_ALLOWED;
}

/* Send one delivery's frame. Returns 0, or 1 to stop the scan with
 * st->stop_errno set. */
static int push_send(push_state_t *st, const store_delivery_t *d, int redelivery)
{
    receiver_t *r = st->receiver;
    deliver_kept_t *kept = st->broker->kept;
    if (sendq_push_full(r->session->queue)) {
        /* The connection has not taken what it was sent (sendq.h): the
         * rest waits here, as for a full libzmq queue, and goes on in a
         * later turn once it reads (each of its acks makes one). At half
         * the bound its queries are held at: a receiver that reads is
         * never refused a view for its deliveries. */
        st->broker->stats.pushes_held++;
        st->stop_errno = EAGAIN;
        return 1;
    }
    size_t shared = sendq_shared_bytes(r->session->queue);
    if (shared > 0 && shared >= st->broker->max_principal_queued / 2) {
        /* The same for what all connections of the principal owe together
         * (max_queued_bytes_per_principal): a principal that takes
         * receiving to one connection after another, each left unread,
         * would be owed a push bound by each. Its push waits, here alone;
         * the other principals' go on. */
        st->broker->stats.principal_pushes_held++;
        st->stop_errno = EAGAIN;
        return 1;
    }
    size_t len = 0, content_len = d->body_len;
    const uint8_t *content = d->body;
    int from_kept = 0;
    if (d->by_ref) {
        content = deliver_kept_content(kept, d->item_seq, d->fields, &content_len);
        from_kept = content != NULL;
        if (!from_kept && kept_live(kept, d->item_seq) != NULL) {
            kept_forget(kept, d->item_seq); /* the scan skipped the item for it */
            st->rescan = 1;
            return 1;
        }
        if (!from_kept)
            content = push_cache_content(st->cache, d, &content_len);
    }
    if (content == NULL) {
        log_event(LOG_ERROR, "delivery.unreadable", "recipient", r->principal, "why",
                  "the item of a delivery by reference does not decode", NULL);
        st->stop_errno = EAGAIN; /* stays dirty; an operator sees the log */
        return 1;
    }
    uint8_t *frame = encode_deliver(d, content, content_len, redelivery, &len);
    if (frame == NULL) {
        st->stop_errno = EAGAIN; /* out of memory: try again next turn */
        return 1;
    }
    int rc = broker_send(st->broker, r->session->queue, 1, r->session->routing_id,
                         r->session->routing_len, frame, len);
    sodium_memzero(frame, len); /* the filtered signal in clear */
    free(frame);
    if (rc != 0) {
        st->stop_errno = zmq_errno();
        return 1;
    }
    if (from_kept)
        deliver_kept_pushed(kept, d->item_seq);
    return 0;
}

static int push_one(const store_delivery_t *d, void *arg)
{
    push_state_t *st = arg;
    receiver_t *r = st->receiver;
    broker_t *b = st->broker;
    if (d->seq > b->push_limit_seq) {
        st->held = 1; /* committed, not on disk yet: pushed once its sync returns */
        return 1;
    }
    if (d->expires_at <= b->now_s) {
        /* Its retention ended before the sweep reached it (a broker that
         * was down, a backlog the sweep takes a batch per turn): never
         * sent. It counts in the window as if sent, so that the sweep's
         * expiry (on_expired) gives the slot back; due now, so the loop
         * sweeps next turn. */
        b->expiry_due = 1;
        r->cursor = d->seq;
        if (r->inflight++ == 0)
            r->progress_ms = b->now_ms;
        return 0;
    }
    if (b->policy_pending != NULL && !allowed_under(b->policy_pending, d, r->principal)) {
        /* A reload not recorded yet would not allow it: withheld, neither
         * sent nor revoked (that waits for the reload's record), and the
         * rest of this mailbox waits behind it, to keep the order. */
        st->held = 1;
        return 1;
    }
    if (!still_allowed(b, d, r->principal)) {
        if (b->n_revocations == SCHAKEL_REVOKE_BATCH) {
            st->stop_errno = EAGAIN; /* the next turn removes these first */
            return 1;
        }
        revocation_t *v = &b->revocations[b->n_revocations];
        v->sent = deliver_sent(b, r->principal, d->seq); /* before it is queued */
        b->n_revocations++;
        v->seq = d->seq;
        strcpy(v->recipient, r->principal);
        r->cursor = d->seq; /* not sent now; gone after the next commit */
        return 0;
    }
    /* Sent before in this process, or pending since before a restart (a
     * crash forgets what was sent, so those are flagged as possibly sent). */
    int redelivery = d->seq <= r->highest_sent || d->seq <= b->seq_at_start;
    if (push_send(st, d, redelivery) != 0)
        return 1;
    r->cursor = d->seq;
    if (r->inflight++ == 0)
        r->progress_ms = b->now_ms; /* the ack clock starts now */
    if (d->seq > r->highest_sent) {
        r->highest_sent = d->seq;
        metrics_first_send(b->metrics, d->item_seq, d->accepted_at, b->clock.now_ms);
    }
    b->stats.delivered++;
    if (redelivery)
        b->stats.redelivered++;
    record_delivered(r->principal, d->seq, redelivery);
    return 0;
}

/* The scan stopped at a row of r's mailbox that does not authenticate:
 * set aside in the next turn (deliver_set_aside), which the loop runs at
 * once; said there, once. The rows before it in the scan went out. */
static void push_set_aside(broker_t *b, receiver_t *r, uint64_t seq)
{
    for (size_t i = 0; i < b->n_set_asides; i++)
        if (b->set_asides[i].seq == seq)
            return; /* another session of the same principal found it */
    if (b->n_set_asides == SCHAKEL_SET_ASIDE_BATCH)
        return; /* found again by a push after this batch */
    revocation_t *v = &b->set_asides[b->n_set_asides++];
    v->seq = seq;
    snprintf(v->recipient, sizeof v->recipient, "%s", r->principal);
}

/* One round for one receiver: up to PUSH_ROUND deliveries within its
 * window. Returns 1 when it may have more to push in this pass, 0 when it
 * is done for this pass: its mailbox drained up to the window, its window
 * full (dirty cleared: an ack makes it dirty again), or it stopped (peer
 * queue full, a delivery not synced yet, a store error: it stays dirty and
 * goes on next turn; an unroutable peer: its session is dropped, and the
 * principal's session that asked to receive before it, if any, goes on). */
static int push_round(broker_t *b, receiver_t *r, push_cache_t *cache)
{
    broker_connections_drain(b); /* a closed connection's session ends first */
    if (r->session == NULL || r->inflight >= r->window) {
        r->dirty = 0;
        return 0;
    }
    push_state_t st = {.broker = b, .receiver = r, .cache = cache};
    size_t room = r->window - r->inflight;
    size_t limit = room < PUSH_ROUND ? room : PUSH_ROUND;
    const store_scan_hints_t hints = {.have_item = push_cache_has, .vouch = push_vouch};
    int visited =
        store_mailbox_scan_vouched(b->store, r->principal, r->cursor, limit, &hints, push_one, &st);
    if (visited < 0) {
        uint64_t unreadable = store_scan_unreadable(b->store);
        if (unreadable == 0)
            log_event(LOG_ERROR, "store.scan_failed", "error", store_errmsg(b->store), NULL);
        else
            push_set_aside(b, r, unreadable);
        return 0; /* stays dirty: retried next turn (past a row set aside) */
    }
    if (st.stop_errno == EHOSTUNREACH) {
        log_event(LOG_INFO, "session.gone", "principal", r->principal, NULL);
        sessions_drop(b->sessions, r->session);
        if (r->session == NULL) {
            r->dirty = 0;
            return 0;
        }
        return 1; /* receiving went back to an earlier session of it */
    }
    if (st.rescan)
        return 1; /* again from its cursor, the item opened from the store */
    if (st.stop_errno != 0 || st.held)
        return 0; /* peer queue full, or the rest not synced yet: stays dirty */
    if ((size_t)visited < limit) {
        r->dirty = 0; /* mailbox drained up to the window */
        return 0;
    }
    return 1;
}

/* The receivers of this pass that may have more to push; one loop thread. */
static receiver_t **pass_receivers;
static size_t pass_capacity;

/* Collect the receivers with something to push. Returns how many, or
 * SIZE_MAX when the list cannot grow (then each is pushed whole instead,
 * as it is met). */
static size_t pass_collect(broker_t *b)
{
    size_t cursor = 0, n = 0;
    receiver_t *r;
    while ((r = sessions_next_receiver(b->sessions, &cursor)) != NULL) {
        if (!r->dirty || r->session == NULL)
            continue;
        if (n == pass_capacity) {
            size_t capacity = pass_capacity > 0 ? 2 * pass_capacity : 64;
            receiver_t **bigger = realloc(pass_receivers, capacity * sizeof *bigger);
            if (bigger == NULL)
                return SIZE_MAX;
            pass_receivers = bigger;
            pass_capacity = capacity;
        }
        pass_receivers[n++] = r;
    }
    return n;
}

void deliver_push_all(broker_t *b)
{
    static push_cache_t cache;              /* ~2 KB, not on the stack; one loop thread */
    deliver_kept_sweep(b->kept, b->now_ms); /* once per turn: at most 2 s old */
    /* A round may drop a session but never adds or removes receivers, so
     * the receivers collected stay valid for the whole pass. */
    size_t n = pass_collect(b);
    if (n == SIZE_MAX) { /* out of memory: one receiver after the other */
        size_t cursor = 0;
        receiver_t *r;
        while ((r = sessions_next_receiver(b->sessions, &cursor)) != NULL)
            while (r->dirty && r->session != NULL && push_round(b, r, &cache))
                ;
        n = 0;
    }
    while (n > 0) {
        size_t still = 0;
        for (size_t i = 0; i < n; i++)
            if (push_round(b, pass_receivers[i], &cache))
                pass_receivers[still++] = pass_receivers[i];
        n = still;
    }
    push_cache_clear(&cache);
}

void deliver_policy_changed(broker_t *b)
{
    deliver_kept_clear(b->kept);
    if (b->n_revocations > 0) {
        b->n_revocations = 0;
        sessions_restart_receivers(b->sessions);
    }
}
