/*
 * case_event.c — the pieces of cases that commands and queries share
 * (case_internal.h): member rows, whether an asker can see a case at all,
 * events reduced to a membership rule, events read one at a time, and
 * whether a principal received a signal.
 * Trusts the store's authenticated bodies (they were validated before
 * they were stored) and the policy in force. Errors: -1, out of memory or
 * a store failure; nothing here refuses a partner.
 */
#include "case_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "case_state.h"
#include "growarray.h"
#include "record.h"

/* ------------------------------------------------------------------ members */

static int case_members_collect(const char *partner, char state, const char *rule_id,
                                const char *rule_hash, void *arg)
{
    case_members_t *m = arg;
    if (growarray_room((void **)&m->rows, &m->cap, m->n, sizeof *m->rows, 16) != 0) {
        m->cap = SIZE_MAX; /* marks the failure for case_members_load */
        return 1;
    }
    case_member_t *row = &m->rows[m->n++];
    snprintf(row->partner, sizeof row->partner, "%s", partner);
    row->state = state;
    snprintf(row->rule_id, sizeof row->rule_id, "%s", rule_id != NULL ? rule_id : "");
    snprintf(row->rule_hash, sizeof row->rule_hash, "%s", rule_hash != NULL ? rule_hash : "");
    return 0;
}

int case_members_load(store_t *store, const char *case_id, case_members_t *m)
{
    memset(m, 0, sizeof *m);
    int visited = store_case_members(store, case_id, case_members_collect, m);
    if (visited < 0 || m->cap == SIZE_MAX) {
        case_members_free(m);
        return -1;
    }
    return 0;
}

void case_members_free(case_members_t *m)
{
    free(m->rows);
    memset(m, 0, sizeof *m);
}

const case_member_t *case_members_find(const case_members_t *m, const char *partner)
{
    for (size_t i = 0; partner != NULL && i < m->n; i++)
        if (strcmp(m->rows[i].partner, partner) == 0)
            return &m->rows[i];
    return NULL;
}

/* 1 when the partner's row in the case is a member's (or, unless
 * member_only, an invitation), 0 when not or none, -1 on a store error. */
static int case_row_active(store_t *store, const char *case_id, const char *partner,
                           int member_only)
{
    char state = 0;
    int found = store_case_member_get(store, case_id, partner, &state);
    if (found <= 0)
        return found;
    return state == CASE_MEMBER_MEMBER || (!member_only && state == CASE_MEMBER_INVITED);
}

/* Acting for the lead needs policy_case_may_act_for for the case's type:
 * without the case row, for any type. O(case types log on_behalf). */
static int case_may_act_for_some_type(const policy_t *policy, const policy_principal_t *actor,
                                      const policy_partner_t *partner)
{
    for (size_t i = 0; i < policy_case_type_count(policy); i++)
        if (policy_case_may_act_for(policy, policy_case_type_at(policy, i), actor, partner) ==
            VERDICT_ALLOW)
            return 1;
    return 0;
}

int case_may_be_visible(broker_t *b, const policy_principal_t *asker, const char *case_id,
                        const char *on_behalf_of)
{
    int own = case_row_active(b->store, case_id, asker->partner->id, 0);
    if (own != 0 || on_behalf_of == NULL || strcmp(on_behalf_of, asker->partner->id) == 0)
        return own;
    const policy_partner_t *lead = policy_partner_by_id(b->policy, on_behalf_of);
    if (lead == NULL || !case_may_act_for_some_type(b->policy, asker, lead))
        return 0;
    return case_row_active(b->store, case_id, lead->id, 1);
}

/* ------------------------------------------------------------------ filtering */

/* Room for "text", every note field name, "attachments", "subject" and
 * "address", comma-separated. */
#define CASE_SEEN_BYTES (SCHAKEL_MAX_NOTE_FIELDS * (SCHAKEL_MAX_ID_LEN + 1) + 64)

static void seen_add(char *seen, const char *name)
{
    size_t used = strlen(seen);
    snprintf(seen + used, CASE_SEEN_BYTES - used, "%s%s", used ? "," : "", name);
}

/* The FIELD_* bits of the fields a signal has (it may already be reduced
 * to what the partner that linked it saw). */
static uint32_t case_signal_present(const Schakel__Signal *s)
{
    return (s->area != NULL ? FIELD_AREA : 0u) | (s->address != NULL ? FIELD_ADDRESS : 0u) |
           (s->subject != NULL ? FIELD_SUBJECT : 0u) | (s->grounds != NULL ? FIELD_GROUNDS : 0u) |
           (s->case_ref != NULL ? FIELD_CASE_REF : 0u) | (s->has_severity ? FIELD_SEVERITY : 0u) |
           (s->has_observed_at ? FIELD_OBSERVED_AT : 0u) |
           (s->summary != NULL ? FIELD_SUMMARY : 0u) |
           (s->source_ref != NULL ? FIELD_SOURCE_REF : 0u) |
           (s->n_recipients > 0 ? FIELD_RECIPIENTS : 0u);
}

int case_event_filter(const Schakel__CaseEvent *full, const Schakel__Signal *linked,
                      const policy_case_member_rule_t *rule, int without_bytes,
                      case_filtered_t *out)
{
    Schakel__CaseEvent copy = *full;
    Schakel__NoteField *kept[SCHAKEL_MAX_NOTE_FIELDS];
    Schakel__CaseAttach attachment;
    uint8_t *signal = NULL;
    memset(out, 0, sizeof *out);
    if ((out->seen = calloc(1, CASE_SEEN_BYTES)) == NULL)
        return -1;
    if (copy.text != NULL && !policy_case_member_sees(rule, "text"))
        copy.text = NULL;
    else if (copy.text != NULL)
        seen_add(out->seen, "text");
    copy.n_fields = 0;
    copy.fields = kept;
    /* at most SCHAKEL_MAX_NOTE_FIELDS: the command was validated */
    for (size_t i = 0; i < full->n_fields && i < SCHAKEL_MAX_NOTE_FIELDS; i++) {
        if (!policy_case_member_sees(rule, full->fields[i]->name))
            continue;
        kept[copy.n_fields++] = full->fields[i];
        seen_add(out->seen, full->fields[i]->name);
    }
    if (copy.attachment != NULL && !policy_case_member_sees(rule, "attachments")) {
        copy.attachment = NULL;
    } else if (copy.attachment != NULL) {
        seen_add(out->seen, "attachments");
        if (without_bytes) {
            /* listed, bytes left out: empty content, which a real attachment never has */
            attachment = *full->attachment;
            attachment.has_content = 1;
            attachment.content.data = NULL;
            attachment.content.len = 0;
            copy.attachment = &attachment;
        }
    }
    if (copy.subject != NULL && !policy_case_member_sees(rule, "subject"))
        copy.subject = NULL;
    else if (copy.subject != NULL)
        seen_add(out->seen, "subject");
    if (copy.address != NULL && !policy_case_member_sees(rule, "address"))
        copy.address = NULL;
    else if (copy.address != NULL)
        seen_add(out->seen, "address");
    out->subject = copy.subject;
    copy.has_signal = 0;
    copy.signal.data = NULL;
    copy.signal.len = 0;
    if (full->has_signal && linked != NULL) {
        uint32_t mask = policy_case_member_signal_fields(rule);
        size_t len = 0;
        if ((signal = publish_signal_for_recipient(linked, mask, &len)) == NULL) {
            case_filtered_free(out);
            return -1;
        }
        copy.has_signal = 1;
        copy.signal.data = signal;
        copy.signal.len = len;
        out->has_signal = 1;
        out->signal_fields = mask & case_signal_present(linked);
        if ((mask & FIELD_SUBJECT) && linked->subject != NULL)
            out->subject = linked->subject;
    }
    out->body = wire_encode_case_event(&copy, &out->len);
    if (signal != NULL) {
        sodium_memzero(signal, copy.signal.len);
        free(signal);
    }
    if (out->body == NULL) {
        case_filtered_free(out);
        return -1;
    }
    return 0;
}

void case_filtered_free(case_filtered_t *f)
{
    if (f->body != NULL) {
        sodium_memzero(f->body, f->len);
        free(f->body);
    }
    free(f->seen);
    memset(f, 0, sizeof *f);
}

const char *case_event_name(Schakel__CaseEventKind kind)
{
    switch (kind) {
    case SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_OPENED:
        return "case.opened";
    case SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_INVITED:
        return "case.invited";
    case SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_JOINED:
        return "case.joined";
    case SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_DECLINED:
        return "case.declined";
    case SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_LEFT:
        return "case.left";
    case SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_NOTE:
        return "case.note";
    case SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_ATTACHMENT:
        return "case.attachment";
    case SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_CLOSED:
        return "case.closed";
    case SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_REOPENED:
        return "case.reopened";
    case SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_SIGNAL_LINKED:
        return "case.signal_linked";
    default:
        return "case.event";
    }
}

/* ------------------------------------------------------------------ reading events */

int case_event_copy_one(uint64_t event_seq, const uint8_t *event, size_t len, void *arg)
{
    case_event_copy_t *copy = arg;
    copy->bytes = malloc(len > 0 ? len : 1);
    if (copy->bytes == NULL) {
        copy->failed = 1;
        return 1;
    }
    memcpy(copy->bytes, event, len);
    copy->len = len;
    copy->event_seq = event_seq;
    return 1; /* one at a time: the caller makes store calls per event */
}

void case_event_copy_free(case_event_copy_t *copy)
{
    if (copy->bytes != NULL) {
        sodium_memzero(copy->bytes, copy->len);
        free(copy->bytes);
    }
    memset(copy, 0, sizeof *copy);
}

/* The opened event is the case's first (event seq 1) and names its
 * subject, if any. */
int case_subject_load(store_t *store, const char *case_id, char out[SCHAKEL_MAX_SUBJECT_LEN + 1])
{
    case_event_copy_t copy = {0};
    out[0] = '\0';
    int visited = store_case_events(store, case_id, 0, case_event_copy_one, &copy);
    if (visited < 0 || copy.failed) {
        case_event_copy_free(&copy);
        return -1;
    }
    if (copy.bytes == NULL || copy.event_seq != 1) {
        case_event_copy_free(&copy);
        return 0; /* no events (yet): a case being opened */
    }
    Schakel__CaseEvent *ev =
        schakel__case_event__unpack(wire_wiped_allocator(), copy.len, copy.bytes);
    case_event_copy_free(&copy);
    if (ev == NULL)
        return -1;
    if (ev->kind == SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_OPENED && ev->subject != NULL &&
        strlen(ev->subject) <= SCHAKEL_MAX_SUBJECT_LEN)
        strcpy(out, ev->subject);
    schakel__case_event__free_unpacked(ev, wire_wiped_allocator());
    return 0;
}

/* ------------------------------------------------------------------ received signals */

/*
 * Whether a partner received a signal is on the audit trail only: acked
 * deliveries leave the store, their "delivery.queued" entries stay. The
 * trail has no index on item_seq, but its "delivery.queued" entries come
 * in non-decreasing item_seq order: an item and the entries of its
 * deliveries are written together, in one transaction, after every item
 * before it (items and case commands alike; a rolled-back turn leaves no
 * entries; record.c keeps an item's deliveries only until another entry
 * is written, so its one entry stays in that order). So a binary search over entry seqs finds the
 * first entry of the item in O(log n) probes, each reading forward to the next queued entry. Should
 * the order ever not hold, the search can only miss an entry, and the link is refused: it never
 * admits a signal that was not received.
 */

static int case_is_queued(const store_audit_entry_t *e)
{
    const store_audit_value_t *event = &e->field[STORE_AUDIT_EVENT];
    return e->damage == NULL && event->present && strcmp(event->text, "delivery.queued") == 0 &&
           e->field[STORE_AUDIT_ITEM_SEQ].present;
}

typedef struct case_probe {
    uint64_t want;         /* item_seq looked for */
    const char *principal; /* final scan: recipient looked for */
    int64_t now_s;         /* final scan: its delivery's retention must not have ended */
    int found;             /* probe: a queued entry was seen; final: a match */
    int done;              /* final scan: past the item */
    uint64_t item_seq;     /* probe: that entry's item_seq */
    uint64_t delivery_seq; /* final: the match's delivery */
    uint32_t fields;       /* final: the signal fields it was given (FIELD_* bits) */
} case_probe_t;

/* The FIELD_* bits of a delivery's recorded fields ("sender,kind,theme,
 * area,..."): the names of POLICY.md section 6; sender, kind, theme and
 * any other word give none. */
static uint32_t case_fields_mask(const char *text, size_t len)
{
    uint32_t mask = 0;
    for (size_t at = 0; at < len;) {
        const char *comma = memchr(text + at, ',', len - at);
        size_t end = comma != NULL ? (size_t)(comma - text) : len;
        for (unsigned bit = 0; bit < 32; bit++) {
            const char *name = policy_field_name(UINT32_C(1) << bit);
            if (name != NULL && strlen(name) == end - at && memcmp(name, text + at, end - at) == 0)
                mask |= UINT32_C(1) << bit;
        }
        at = end + 1;
    }
    return mask;
}

static int case_probe_next_queued(const store_audit_entry_t *e, void *arg)
{
    case_probe_t *p = arg;
    if (!case_is_queued(e))
        return 0;
    p->found = 1;
    p->item_seq = (uint64_t)e->field[STORE_AUDIT_ITEM_SEQ].number;
    return 1;
}

/* A delivery of a queued entry's list to the principal looked for, within
 * its retention. */
static int case_probe_listed(const store_audit_delivery_t *d, void *arg)
{
    case_probe_t *p = arg;
    if (d->recipient_len == strlen(p->principal) &&
        memcmp(d->recipient, p->principal, d->recipient_len) == 0 && d->expires_at > p->now_s) {
        p->found = 1;
        p->delivery_seq = d->seq;
        p->fields = case_fields_mask(d->fields, d->fields_len);
    }
    return p->found;
}

/* Signal deliveries name a theme; case deliveries do not. A queued entry
 * names its one delivery's recipient and expiry in recipient and
 * expires_at (before schema 7), or lists its deliveries (all of one item)
 * in deliveries. */
static int case_probe_match(const store_audit_entry_t *e, void *arg)
{
    case_probe_t *p = arg;
    if (!case_is_queued(e))
        return 0;
    uint64_t item_seq = (uint64_t)e->field[STORE_AUDIT_ITEM_SEQ].number;
    if (item_seq > p->want) {
        p->done = 1;
        return 1;
    }
    const store_audit_value_t *to = &e->field[STORE_AUDIT_RECIPIENT];
    const store_audit_value_t *expires = &e->field[STORE_AUDIT_EXPIRES_AT];
    const store_audit_value_t *listed = &e->field[STORE_AUDIT_DELIVERIES];
    if (item_seq != p->want || !e->field[STORE_AUDIT_THEME].present)
        return 0;
    const store_audit_value_t *seq = &e->field[STORE_AUDIT_DELIVERY_SEQ];
    const store_audit_value_t *fields = &e->field[STORE_AUDIT_FIELDS];
    if (to->present && strcmp(to->text, p->principal) == 0 && expires->present &&
        expires->number > p->now_s && seq->present && seq->number > 0 && fields->present) {
        p->found = 1;
        p->delivery_seq = (uint64_t)seq->number;
        p->fields = case_fields_mask(fields->text, strlen(fields->text));
    } else if (listed->present)
        (void)store_audit_deliveries_parse(listed->text, case_probe_listed, p);
    return p->found;
}

/* The item_seq of the first queued entry after entry `after` (p->found
 * unset when there is none before `end`). Returns 0 or -1. */
static int case_next_queued(store_t *store, uint64_t after, uint64_t end, case_probe_t *p)
{
    while (after < end && !p->found) {
        int visited =
            store_audit_scan(store, after, SCHAKEL_AUDIT_VERIFY_BATCH, case_probe_next_queued, p);
        if (visited < 0)
            return -1;
        if (visited == 0)
            break;
        after += (uint64_t)visited;
    }
    return 0;
}

/* An entry of its own that records the ack of a delivery (before schema
 * 6; later acks are found through the acked-delivery index). */
static int case_probe_acked(const store_audit_entry_t *e, void *arg)
{
    const store_audit_value_t *event = &e->field[STORE_AUDIT_EVENT];
    int *acked = arg;
    *acked = e->damage == NULL && event->present && strcmp(event->text, "delivery.acked") == 0;
    return *acked;
}

/* Whether the principal still holds delivery_seq: it acked it, or it
 * waits and the push would still send it. Not when it was revoked, set
 * aside or withheld by a reload not yet recorded. 1, 0, or -1. */
static int case_still_given(broker_t *b, const char *principal, uint64_t delivery_seq)
{
    int pending = deliver_pending_check(b, principal, delivery_seq);
    if (pending < 0)
        return -1;
    if (pending != DELIVER_NOT_PENDING)
        return pending == DELIVER_ALLOWED;
    if (record_acked_in_turn(b, principal, delivery_seq))
        return 1; /* acked earlier in this turn: its entry is written at its end */
    uint64_t entry = 0;
    int acked = store_audit_acked_lookup(b->store, delivery_seq, &entry);
    if (acked != 0)
        return acked;
    if (store_audit_scan_delivery(b->store, delivery_seq, UINT64_MAX, case_probe_acked, &acked) < 0)
        return -1;
    return acked;
}

int case_principal_received(broker_t *b, uint64_t item_seq, const char *principal, uint32_t *fields)
{
    store_audit_tail_t tail;
    if (item_seq == 0 || store_audit_tail(b->store, &tail) != 0)
        return item_seq == 0 ? 0 : -1;
    /* smallest position whose next queued entry is of this item or later */
    uint64_t lo = 0, hi = tail.seq;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        case_probe_t p = {.want = item_seq};
        if (case_next_queued(b->store, mid, tail.seq, &p) != 0)
            return -1;
        if (!p.found || p.item_seq >= item_seq)
            hi = mid;
        else
            lo = mid + 1;
    }
    case_probe_t p = {.want = item_seq, .principal = principal, .now_s = b->now_s};
    int stop = 0;
    while (!stop) {
        int visited =
            store_audit_scan(b->store, lo, SCHAKEL_AUDIT_VERIFY_BATCH, case_probe_match, &p);
        if (visited < 0)
            return -1;
        stop = visited == 0 || p.found || p.done;
        lo += (uint64_t)visited;
    }
    if (!p.found)
        return 0;
    int given = case_still_given(b, principal, p.delivery_seq);
    if (given == 1)
        *fields = p.fields;
    return given;
}
