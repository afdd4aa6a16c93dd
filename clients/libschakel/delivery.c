/*
 * delivery.c — a broker's Deliver frames inside libschakel: the bounded queue
 * of received frames (and of Delivers the frame codec refused, by seq), and
 * their decoding into the caller's schakel_delivery_t
 * (a signal here, a case event through caseview.c).
 *
 * Owns the queued frames and each delivery's memory. Trusts nothing of the
 * broker's bytes: the signal is unpacked under a byte budget, kind and theme
 * are required, strings must be UTF-8, severity in range. Returns
 * SCHAKEL_ERR_PROTOCOL or SCHAKEL_ERR_NOMEM with a text, never aborts.
 */
#include "delivery.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caseview.h"
#include "schakel_limits.h"
#include "syntax.h"

/* ------------------------------------------------------------------ queue */

int delivery_queue_init(delivery_queue_t *q, size_t capacity)
{
    memset(q, 0, sizeof *q);
    q->slots = calloc(capacity, sizeof *q->slots);
    if (q->slots == NULL)
        return -1;
    q->capacity = capacity;
    return 0;
}

void delivery_queue_destroy(delivery_queue_t *q)
{
    while (q->count > 0)
        delivery_queue_drop_front(q);
    free(q->slots);
    q->slots = NULL;
    q->capacity = 0;
}

int delivery_queue_full(const delivery_queue_t *q)
{
    return q->count >= q->capacity;
}

static delivery_slot_t *delivery_queue_slot(const delivery_queue_t *q, size_t position)
{
    return &q->slots[(q->head + position) % q->capacity];
}

static void delivery_slot_clear(delivery_slot_t *slot)
{
    wire_frame_free(&slot->frame);
    free(slot->unreadable);
    memset(slot, 0, sizeof *slot);
}

/* Put what `fill` holds in the slot of its seq, or in a new one. */
static int delivery_queue_put(delivery_queue_t *q, const delivery_slot_t *fill)
{
    for (size_t i = 0; i < q->count; i++) {
        delivery_slot_t *slot = delivery_queue_slot(q, i);
        if (slot->seq == fill->seq) {
            delivery_slot_clear(slot);
            *slot = *fill;
            return 0;
        }
    }
    if (delivery_queue_full(q))
        return -1;
    *delivery_queue_slot(q, q->count) = *fill;
    q->count++;
    return 0;
}

int delivery_queue_push(delivery_queue_t *q, Schakel__Frame *frame)
{
    delivery_slot_t fill = {.frame = frame, .seq = frame->deliver->seq};
    return delivery_queue_put(q, &fill);
}

int delivery_queue_push_unreadable(delivery_queue_t *q, uint64_t seq, const char *text)
{
    delivery_slot_t fill = {.seq = seq, .unreadable = strdup(text)};
    if (fill.unreadable == NULL)
        return -1;
    if (delivery_queue_put(q, &fill) != 0) {
        free(fill.unreadable);
        return -1;
    }
    return 0;
}

const delivery_slot_t *delivery_queue_peek(const delivery_queue_t *q)
{
    return q->count > 0 ? delivery_queue_slot(q, 0) : NULL;
}

void delivery_queue_drop_front(delivery_queue_t *q)
{
    if (q->count == 0)
        return;
    delivery_slot_clear(delivery_queue_slot(q, 0));
    q->head = (q->head + 1) % q->capacity;
    q->count--;
}

void delivery_queue_forget(delivery_queue_t *q, uint64_t seq)
{
    size_t kept = 0;
    for (size_t i = 0; i < q->count; i++) {
        delivery_slot_t *from = delivery_queue_slot(q, i);
        if (from->seq == seq) {
            delivery_slot_clear(from);
            continue;
        }
        delivery_slot_t *to = delivery_queue_slot(q, kept);
        if (to != from) {
            *to = *from;
            memset(from, 0, sizeof *from);
        }
        kept++;
    }
    q->count = kept;
}

/* ------------------------------------------------------------------ decoding */

/* A byte budget for unpacking a delivered signal: protobuf-c has no limit.
 * An allocation refused for the budget means a hostile or broken signal
 * (PROTOCOL); one refused by malloc means we are short of memory (NOMEM),
 * and the same Deliver may decode fine later. */
typedef struct delivery_budget {
    size_t used;
    int out_of_memory;
} delivery_budget_t;

static void *delivery_budget_alloc(void *data, size_t size)
{
    delivery_budget_t *budget = data;
    if (size > SCHAKEL_DECODE_BUDGET_BYTES - budget->used)
        return NULL;
    void *block = wire_wiped_alloc(size > 0 ? size : 1); /* the signal: wiped when freed */
    if (block == NULL) {
        budget->out_of_memory = 1;
        return NULL;
    }
    budget->used += size;
    return block;
}

static void delivery_budget_free(void *data, void *ptr)
{
    (void)data;
    wire_wiped_free(ptr);
}

/* A decoded string handed over to the delivery: the block protobuf-c
 * unpacked it into (a wire_wiped_alloc block, under the decoding
 * allocators of wire.c and below) becomes the delivery's, and its old owner
 * forgets it. No copy, no allocation: nothing of this can fail. */
static char *delivery_take(char **from)
{
    char *text = *from;
    *from = NULL;
    return text;
}

/* Copy a string into a block of the delivery's kind after checking its
 * UTF-8 (a case event's actor, which stays the event's). Returns 0, -1 for
 * bad text, -2 for no memory. */
static int delivery_copy_text(const char *in, char **out)
{
    *out = NULL;
    if (in == NULL)
        return 0;
    size_t len = strlen(in);
    if (!syntax_is_utf8((const uint8_t *)in, len))
        return -1;
    *out = wire_wiped_alloc(len + 1);
    if (*out == NULL)
        return -2;
    memcpy(*out, in, len + 1);
    return 0;
}

/* The signal's texts, as pairs of where they are and where they go. */
#define DELIVERY_SIGNAL_TEXTS 10u

static size_t delivery_signal_texts(schakel_delivery_t *d, Schakel__Signal *s,
                                    char **from[DELIVERY_SIGNAL_TEXTS],
                                    char **to[DELIVERY_SIGNAL_TEXTS])
{
    char **pairs[][2] = {
        {&s->kind, &d->kind},       {&s->theme, &d->theme},           {&s->area, &d->area},
        {&s->subject, &d->subject}, {&s->grounds, &d->grounds},       {&s->case_ref, &d->case_ref},
        {&s->summary, &d->summary}, {&s->source_ref, &d->source_ref}, {NULL, &d->postcode},
        {NULL, &d->addition},
    };
    if (s->address != NULL) {
        pairs[8][0] = &s->address->postcode;
        pairs[9][0] = &s->address->addition;
    }
    size_t n = 0;
    for (size_t i = 0; i < DELIVERY_SIGNAL_TEXTS; i++)
        if (pairs[i][0] != NULL) {
            from[n] = pairs[i][0];
            to[n++] = pairs[i][1];
        }
    return n;
}

/* Check what the signal part of a delivery must be beyond its strings
 * (wire_scan_strings): severity in range, at most SCHAKEL_MAX_RECIPIENTS.
 * Returns 0 or -1; takes nothing. */
static int delivery_check_signal(const Schakel__Signal *s)
{
    if (s->has_severity && ((int)s->severity < SCHAKEL_SEVERITY_UNSPECIFIED ||
                            (int)s->severity > SCHAKEL_SEVERITY_CRITICAL))
        return -1;
    return s->n_recipients > SCHAKEL_MAX_RECIPIENTS ? -1 : 0;
}

/* Fill the signal part of a checked delivery, taking the signal's texts
 * and its recipient list (the rest of the signal is freed by the caller). */
static void delivery_take_signal(schakel_delivery_t *d, Schakel__Signal *s)
{
    char **from[DELIVERY_SIGNAL_TEXTS], **to[DELIVERY_SIGNAL_TEXTS];
    size_t n = delivery_signal_texts(d, s, from, to);
    for (size_t i = 0; i < n; i++)
        *to[i] = delivery_take(from[i]);
    if (s->address != NULL && s->address->has_house_number)
        d->house_number = s->address->house_number;
    if (s->has_severity)
        d->severity = (int)s->severity;
    if (s->has_observed_at)
        d->observed_at = s->observed_at;
    if (s->n_recipients > 0) {
        d->recipients = s->recipients;
        d->n_recipients = s->n_recipients;
        s->recipients = NULL;
        s->n_recipients = 0;
    }
}

/* The numbers of the envelope. */
static void delivery_envelope_numbers(schakel_delivery_t *d, const Schakel__Deliver *in)
{
    d->seq = in->seq;
    /* a case event names the command that caused it, when the broker says */
    if (in->has_message_id)
        memcpy(d->message_id, in->message_id.data, SCHAKEL_MESSAGE_ID_BYTES);
    d->item_index = in->has_item_index ? in->item_index : 0;
    d->item_seq = in->has_item_seq ? in->item_seq : 0;
    d->redelivery = in->has_redelivery && in->redelivery;
    d->accepted_at = in->has_accepted_at ? in->accepted_at : 0;
    d->expires_at = in->has_expires_at ? in->expires_at : 0;
}

/* Take the envelope's texts but the sender (the caller's) from the Deliver.
 * They are not checked again: wire_decode_broker_frame checked the exact
 * wire bytes of every string of the frame, the Deliver's included
 * (scan_strings: UTF-8, no NUL), before the frame was queued. */
static void delivery_take_envelope(schakel_delivery_t *d, Schakel__Deliver *in)
{
    d->sender_partner = delivery_take(&in->sender_partner);
    d->rule_id = delivery_take(&in->rule_id);
    d->rule_hash = delivery_take(&in->rule_hash);
    d->purpose = delivery_take(&in->purpose);
    d->legal_basis = delivery_take(&in->legal_basis);
    delivery_envelope_numbers(d, in);
}

/* A Deliver of a case event: the event decoded by caseview.c, the
 * envelope as for a signal. */
static schakel_status_t delivery_decode_case_event(Schakel__Deliver *in, schakel_delivery_t **out,
                                                   char *text, size_t textlen)
{
    char why[200];
    if (!in->has_seq || (in->has_message_id && in->message_id.len != SCHAKEL_MESSAGE_ID_BYTES)) {
        snprintf(text, textlen, "delivery seq=%llu lacks a seq or has a malformed message id",
                 (unsigned long long)in->seq);
        return SCHAKEL_ERR_PROTOCOL;
    }
    schakel_case_event_t *event = NULL;
    schakel_status_t status =
        caseview_decode_event(in->case_event.data, in->case_event.len, &event, why, sizeof why);
    if (status != SCHAKEL_OK) {
        snprintf(text, textlen, "delivery seq=%llu: %s", (unsigned long long)in->seq, why);
        return status;
    }
    schakel_delivery_t *d = calloc(1, sizeof *d);
    int rc = d == NULL ? -2 : 0;
    /* the sender: the envelope's, else the event's actor (a copy) */
    if (d != NULL && in->sender == NULL)
        rc = delivery_copy_text(event->actor, &d->sender);
    if (rc == 0) { /* nothing below allocates: the frame gives up its texts */
        d->is_case_event = 1;
        d->case_event = event;
        event = NULL;
        if (d->sender == NULL)
            d->sender = delivery_take(&in->sender);
        delivery_take_envelope(d, in);
    }
    caseview_event_free(&event);
    if (rc != 0) {
        schakel_delivery_free(&d);
        snprintf(text, textlen, "%s decoding delivery seq=%llu",
                 rc == -2 ? "out of memory" : "a field that is not valid UTF-8",
                 (unsigned long long)in->seq);
        return rc == -2 ? SCHAKEL_ERR_NOMEM : SCHAKEL_ERR_PROTOCOL;
    }
    *out = d;
    return SCHAKEL_OK;
}

/* The signal inside a Deliver was reduced to the deciding rule's fields, so
 * wire_decode_signal (which demands area and checks the time window against
 * our clock) is not used: the signal is unpacked under the byte budget and
 * only kind and theme, which every rule keeps, are required. Unknown fields a
 * newer broker may add are ignored. Once everything is checked and the
 * delivery allocated, it takes the texts of the signal and of the envelope
 * as they were unpacked (delivery_take): a Deliver that fails for memory is
 * left whole, to be decoded again. */
schakel_status_t delivery_decode(Schakel__Deliver *in, schakel_delivery_t **out, char *text,
                                 size_t textlen)
{
    *out = NULL;
    if (in->has_case_event && !in->has_signal)
        return delivery_decode_case_event(in, out, text, textlen);
    if (!in->has_seq || !in->has_message_id || in->message_id.len != SCHAKEL_MESSAGE_ID_BYTES ||
        !in->has_signal || in->signal.len > SCHAKEL_MAX_ITEM_BYTES) {
        snprintf(text, textlen, "delivery seq=%llu lacks seq, message id or signal",
                 (unsigned long long)in->seq);
        return SCHAKEL_ERR_PROTOCOL;
    }
    delivery_budget_t budget = {0};
    ProtobufCAllocator allocator = {delivery_budget_alloc, delivery_budget_free, &budget};
    Schakel__Signal *signal = schakel__signal__unpack(&allocator, in->signal.len, in->signal.data);
    if (signal == NULL && budget.out_of_memory) {
        snprintf(text, textlen, "out of memory decoding delivery seq=%llu",
                 (unsigned long long)in->seq);
        return SCHAKEL_ERR_NOMEM;
    }
    /* the signal's bytes as they came: every string UTF-8, and none with a
     * NUL, which protobuf-c's C string would cut short and hand on shorter
     * than it was sent (the broker refuses NUL at publish: only a damaged
     * store or a hostile broker sends one) */
    wire_error_t scan = {0};
    if (signal != NULL && wire_scan_strings(in->signal.data, in->signal.len,
                                            &schakel__signal__descriptor, &scan) != 0) {
        schakel__signal__free_unpacked(signal, &allocator);
        snprintf(text, textlen, "delivery seq=%llu: %s", (unsigned long long)in->seq, scan.text);
        return SCHAKEL_ERR_PROTOCOL;
    }
    if (signal == NULL || signal->kind == NULL || signal->theme == NULL ||
        (in->sender == NULL && signal->sender == NULL)) {
        if (signal != NULL)
            schakel__signal__free_unpacked(signal, &allocator);
        snprintf(text, textlen,
                 "delivery seq=%llu: the signal is not a valid Signal with sender, kind and "
                 "theme",
                 (unsigned long long)in->seq);
        return SCHAKEL_ERR_PROTOCOL;
    }
    if (in->sender != NULL && signal->sender != NULL && strcmp(in->sender, signal->sender) != 0) {
        /* the envelope is the broker's word, the signal the sender's own
         * (sealed at rest): a mismatch is a damaged or altered store */
        snprintf(text, textlen,
                 "delivery seq=%llu names sender %.*s, but its signal was sent by %.*s: refused",
                 (unsigned long long)in->seq, SCHAKEL_MAX_PRINCIPAL_LEN, in->sender,
                 SCHAKEL_MAX_PRINCIPAL_LEN, signal->sender);
        schakel__signal__free_unpacked(signal, &allocator);
        return SCHAKEL_ERR_PROTOCOL;
    }
    if (delivery_check_signal(signal) != 0) {
        schakel__signal__free_unpacked(signal, &allocator);
        snprintf(text, textlen,
                 "delivery seq=%llu has a severity out of range or more than %u recipients",
                 (unsigned long long)in->seq, SCHAKEL_MAX_RECIPIENTS);
        return SCHAKEL_ERR_PROTOCOL;
    }
    schakel_delivery_t *d = calloc(1, sizeof *d);
    if (d == NULL) {
        schakel__signal__free_unpacked(signal, &allocator);
        snprintf(text, textlen, "out of memory decoding delivery seq=%llu",
                 (unsigned long long)in->seq);
        return SCHAKEL_ERR_NOMEM;
    }
    d->sender = delivery_take(in->sender != NULL ? &in->sender : &signal->sender);
    delivery_take_envelope(d, in);
    delivery_take_signal(d, signal);
    schakel__signal__free_unpacked(signal, &allocator);
    *out = d;
    return SCHAKEL_OK;
}

void schakel_delivery_free(schakel_delivery_t **delivery)
{
    if (delivery == NULL || *delivery == NULL)
        return;
    schakel_delivery_t *d = *delivery;
    char *texts[] = {d->sender,  d->sender_partner, d->rule_id,  d->rule_hash,
                     d->purpose, d->legal_basis,    d->kind,     d->theme,
                     d->area,    d->postcode,       d->addition, d->subject,
                     d->grounds, d->case_ref,       d->summary,  d->source_ref};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        wire_wiped_free(texts[i]); /* what the broker sent is wiped, as in the broker */
    for (size_t i = 0; d->recipients != NULL && i < d->n_recipients; i++)
        wire_wiped_free(d->recipients[i]);
    wire_wiped_free(d->recipients);
    caseview_event_free(&d->case_event);
    free(d);
    *delivery = NULL;
}
