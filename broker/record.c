/*
 * record.c — decisions recorded as key=value events and as audit entries
 * (see record.h): the helpers every record_*.c file writes entries with,
 * publishes and refusals, and the turn's acks and queued deliveries, kept
 * until its end (b->acks) to be recorded as one entry per recipient and
 * per item. The others: record_removed.c (expiries, revocations,
 * set-asides), record_case.c (case events and views), record_broker.c
 * (handshakes, reloads, operators, start, stop, a turn's settle),
 * record_carry.c (entries carried to a commit).
 *
 * Records ids and metadata only, never contents. Trusts its callers: every
 * id passed here was validated by the wire module or comes from the policy;
 * free texts (refusal texts, policy errors, operator details) are cleaned
 * to printable UTF-8 before they are kept. A failure to write an entry (or
 * to keep an ack) fails the turn: the action is then not committed (fail
 * closed).
 */
#include "record.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "broker.h"
#include "growarray.h"
#include "log.h"
#include "record_internal.h"
#include "storefile.h"
#include "syntax.h"
#include "wire.h"

/* ------------------------------------------------------------------ helpers */

/* At most one audit.tail_mismatch line a minute after the first. */
#define RECORD_MISMATCH_SAID_EVERY_MS 60000

int64_t record_now(const broker_t *b)
{
    return b->now_s > 0 ? b->now_s : (int64_t)time(NULL);
}

/* The first refusal of a tail rewritten outside the broker leaves
 * STORE.audit-mismatch beside the store (storefile.h): a later start
 * knows only the file, and would chain and sign that tail if it chains
 * from the last checkpoint. The mark holds the anchor (the broker's own
 * last entry) and what was found; b->tail_mismatch_mark says where it is,
 * or why it could not be written. */
static void record_mark_mismatch(broker_t *b, const char *expect, uint64_t stored,
                                 const uint8_t stored_hash[STORE_AUDIT_HASH_BYTES])
{
    char text[512], hex[2 * STORE_AUDIT_HASH_BYTES + 1], err[4096];
    if (b->store_path == NULL)
        return;
    syntax_hex(stored_hash, STORE_AUDIT_HASH_BYTES, hex);
    snprintf(text, sizeof text,
             "# schakeld found the audit trail's last entries written outside it "
             "(audit.tail_mismatch); no start or --rekey while this file is here (--restored "
             "of a backup keeps it with this store): docs/OPERATIONS.md, \"When audit verify "
             "fails\"\n"
             "expect=%s\nfound=%llu:%s\nat=%lld\n",
             expect, (unsigned long long)stored, hex, (long long)record_now(b));
    int rc = storefile_mark_mismatch(b->store_path, text, b->tail_mismatch_mark,
                                     sizeof b->tail_mismatch_mark, err, sizeof err);
    if (rc < 0)
        snprintf(b->tail_mismatch_mark, sizeof b->tail_mismatch_mark, "%s", err);
    b->tail_mismatch_marked = rc >= 0;
}

/* A write of the trail failed: said as event (audit.write_failed,
 * audit.checkpoint_failed) with why, or, when the stored tail is not the
 * one this broker last committed (store.h store_audit_tail_guard), as
 * audit.tail_mismatch with both seqs and the anchor to verify with: in
 * full at the first (which writes the mark), then at most once a minute
 * with the count of refusals since the line before (the periodic
 * checkpoint alone tries every second). */
void record_write_failed(broker_t *b, const char *event, const char *entry, const char *why)
{
    uint64_t stored = 0, committed = 0;
    uint8_t hash[STORE_AUDIT_HASH_BYTES], stored_hash[STORE_AUDIT_HASH_BYTES];
    if (!store_audit_tail_mismatch(b->store, &stored, stored_hash, &committed, hash)) {
        log_event(LOG_ERROR, event, "entry", entry, "error", why, NULL);
        return;
    }
    char stored_text[24], committed_text[24], refused_text[24];
    char expect[24 + 2 * STORE_AUDIT_HASH_BYTES + 2], hex[2 * STORE_AUDIT_HASH_BYTES + 1];
    syntax_hex(hash, sizeof hash, hex);
    snprintf(expect, sizeof expect, "%llu:%s", (unsigned long long)committed, hex);
    if (b->tail_mismatch_said &&
        b->now_ms - b->tail_mismatch_said_ms < RECORD_MISMATCH_SAID_EVERY_MS) {
        b->tail_mismatch_unsaid++;
        return;
    }
    if (!b->tail_mismatch_marked) /* the first time, or again a minute after it failed */
        record_mark_mismatch(b, expect, stored, stored_hash);
    snprintf(stored_text, sizeof stored_text, "%llu", (unsigned long long)stored);
    snprintf(committed_text, sizeof committed_text, "%llu", (unsigned long long)committed);
    snprintf(refused_text, sizeof refused_text, "%llu",
             (unsigned long long)b->tail_mismatch_unsaid + 1);
    const char *effect =
        b->tail_mismatch_marked
            ? "nothing is appended or signed: every action that needs an entry is refused; no "
              "start on this store while the mark is there"
            : "nothing is appended or signed: every action that needs an entry is refused; the "
              "mark could not be written: do not start the broker on this store again before "
              "audit verify with this anchor";
    const char *mark_key = b->tail_mismatch_marked ? "mark" : "mark_failed";
    if (!b->tail_mismatch_said)
        log_event(LOG_ERROR, "audit.tail_mismatch", "stored_seq", stored_text, "committed_seq",
                  committed_text, "expect", expect, "entry", entry, mark_key, b->tail_mismatch_mark,
                  "effect", effect, NULL);
    else
        log_event(LOG_ERROR, "audit.tail_mismatch", "stored_seq", stored_text, "committed_seq",
                  committed_text, "expect", expect, "entry", entry, "refused", refused_text,
                  mark_key, b->tail_mismatch_mark, "effect", effect, NULL);
    b->tail_mismatch_said = 1;
    b->tail_mismatch_said_ms = b->now_ms;
    b->tail_mismatch_unsaid = 0;
}

/* Append one entry in the turn's transaction; on failure log it and fail
 * the turn. */
int record_append_now(broker_t *b, store_audit_entry_t *entry)
{
    /* Every write of the broker comes with its audit entry: any entry but
     * an ack's makes the turn's commit a synced one, whoever wrote it. */
    const char *event = entry->field[STORE_AUDIT_EVENT].text;
    if (event == NULL || strcmp(event, "delivery.acked") != 0)
        b->turn_acks_only = 0;
    if (audit_append(b->store, b->key, record_now(b), entry) == 0)
        return 0;
    record_write_failed(b, "audit.write_failed", entry->field[STORE_AUDIT_EVENT].text,
                        store_errmsg(b->store));
    broker_fail_turn(b);
    return -1;
}

/* A copy of free text fit to keep: printable, valid UTF-8 (other bytes and
 * control characters become '?'), cut at SCHAKEL_AUDIT_MAX_TEXT_LEN bytes
 * on a character boundary. */
const char *record_clean(const char *text, char *out, size_t outlen)
{
    size_t n = 0;
    if (text == NULL)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)text; *p != '\0' && n + 5 < outlen;) {
        size_t len = *p < 0x80 ? 1 : *p >= 0xF0 ? 4 : *p >= 0xE0 ? 3 : *p >= 0xC0 ? 2 : 0;
        size_t have = strnlen((const char *)p, len > 0 ? len : 1);
        if (len == 0 || have < len || !syntax_is_utf8(p, len) || *p < 0x20 || *p == 0x7F) {
            out[n++] = '?';
            p++;
            continue;
        }
        memcpy(out + n, p, len);
        n += len;
        p += len;
    }
    out[n] = '\0';
    return out;
}

/* "sender,kind,theme" and the names of the mask's fields, in POLICY.md's
 * words; returns the length (cut to fit outlen, which the callers' 160
 * bytes always do). */
size_t record_field_names(uint32_t mask, char *out, size_t outlen)
{
    static const struct {
        uint32_t field;
        const char *name;
        size_t len;
    } names[] = {
        {FIELD_AREA, ",area", 5},
        {FIELD_ADDRESS, ",address", 8},
        {FIELD_SUBJECT, ",subject", 8},
        {FIELD_GROUNDS, ",grounds", 8},
        {FIELD_CASE_REF, ",case_ref", 9},
        {FIELD_SEVERITY, ",severity", 9},
        {FIELD_OBSERVED_AT, ",observed_at", 12},
        {FIELD_SUMMARY, ",summary", 8},
        {FIELD_SOURCE_REF, ",source_ref", 11},
        {FIELD_RECIPIENTS, ",recipients", 11},
    };
    static const char always[] = "sender,kind,theme";
    size_t used = sizeof always - 1;
    if (outlen == 0)
        return 0;
    if (used >= outlen)
        used = outlen - 1;
    memcpy(out, always, used);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((mask & names[i].field) && used + names[i].len < outlen) {
            memcpy(out + used, names[i].name, names[i].len);
            used += names[i].len;
        }
    out[used] = '\0';
    return used;
}

/* ------------------------------------------------------------------ lines said at commit */

static void line_say(const line_said_t *t)
{
    log_event(LOG_INFO, t->event, t->key[0], t->val[0], t->key[1], t->val[1], t->key[2], t->val[2],
              t->key[3], t->val[3], t->key[4], t->val[4], NULL);
}

/* Kept for the turn's end; a line that cannot wait (no memory for it) is
 * said at once. */
void record_line_say_at_commit(broker_t *b, const line_said_t *t)
{
    struct record_acks *a = b->acks;
    if (a == NULL && (a = b->acks = calloc(1, sizeof *b->acks)) == NULL) {
        line_say(t);
        return;
    }
    if (a->n_lines == a->cap_lines) {
        size_t cap = a->cap_lines != 0 ? 2 * a->cap_lines : 16;
        line_said_t *grown = realloc(a->lines, cap * sizeof *grown);
        if (grown == NULL) {
            line_say(t);
            return;
        }
        a->lines = grown;
        a->cap_lines = cap;
    }
    a->lines[a->n_lines++] = *t;
}

/* The turn's lines said if it committed, forgotten if not. */
void record_line_settle(broker_t *b, int committed)
{
    if (b->acks == NULL)
        return;
    for (size_t i = 0; committed && i < b->acks->n_lines; i++)
        line_say(&b->acks->lines[i]);
    b->acks->n_lines = 0;
}

/* ------------------------------------------------------------------ publishes */

int record_accepted(broker_t *b, const char *sender, const uint8_t message_id[16], size_t n_items,
                    size_t n_deliveries, int duplicate)
{
    char id_hex[33], detail[64];
    store_audit_entry_t e;
    line_said_t line = {.event = duplicate ? "publish.duplicate" : "publish.accepted",
                        .key = {"principal", "message_id", "items", "deliveries", NULL}};
    syntax_hex(message_id, 16, id_hex);
    snprintf(line.val[0], sizeof line.val[0], "%s", sender);
    snprintf(line.val[1], sizeof line.val[1], "%s", id_hex);
    snprintf(line.val[2], sizeof line.val[2], "%zu", n_items);
    snprintf(line.val[3], sizeof line.val[3], "%zu", n_deliveries);
    record_line_say_at_commit(b, &line);
    snprintf(detail, sizeof detail, "items=%zu deliveries=%zu", n_items, n_deliveries);
    audit_entry_init(&e, line.event);
    audit_set_text(&e, STORE_AUDIT_ACTOR, sender);
    audit_set_text(&e, STORE_AUDIT_MESSAGE_ID, id_hex);
    audit_set_text(&e, STORE_AUDIT_DETAIL, detail);
    return record_append(b, &e);
}

/* The log line of a refusal; one only counted (refusals.h) ends
 * recorded=counted. */
static void record_refused_log(const char *principal, const uint8_t *message_id,
                               Schakel__Reason reason, const char *text, int item_index,
                               int counted)
{
    char id_hex[33] = "-", item[16];
    if (message_id != NULL)
        syntax_hex(message_id, 16, id_hex);
    snprintf(item, sizeof item, "%d", item_index);
    log_event(LOG_WARN, "request.refused", "principal", principal, "message_id", id_hex, "reason",
              wire_reason_name(reason), "item", item, "text", text, counted ? "recorded" : NULL,
              "counted", NULL);
}

int record_refused(broker_t *b, const char *principal, const uint8_t *message_id,
                   Schakel__Reason reason, const char *text, int item_index)
{
    record_refused_log(principal, message_id, reason, text, item_index, 0);
    return record_refused_entry(b, principal, message_id, reason, text, item_index);
}

void record_refused_counted(const char *principal, const uint8_t *message_id,
                            Schakel__Reason reason, const char *text, int item_index)
{
    record_refused_log(principal, message_id, reason, text, item_index, 1);
}

/* The texts a refusal's entry points into. */
typedef struct record_refusal_texts {
    char id_hex[33], clean[SCHAKEL_MAX_REJECT_TEXT + 8];
} record_refusal_texts_t;

static void record_refused_build(store_audit_entry_t *e, record_refusal_texts_t *t,
                                 const char *principal, const uint8_t *message_id,
                                 Schakel__Reason reason, const char *text, int item_index)
{
    audit_entry_init(e, message_id != NULL ? "publish.refused" : "request.refused");
    audit_set_text(e, STORE_AUDIT_ACTOR, principal);
    record_set_message_id(e, message_id, t->id_hex);
    if (item_index >= 0)
        audit_set_int(e, STORE_AUDIT_ITEM_INDEX, item_index);
    audit_set_text(e, STORE_AUDIT_REASON, wire_reason_name(reason));
    audit_set_text(e, STORE_AUDIT_DETAIL, record_clean(text, t->clean, sizeof t->clean));
}

int record_refused_entry(broker_t *b, const char *principal, const uint8_t *message_id,
                         Schakel__Reason reason, const char *text, int item_index)
{
    record_refusal_texts_t t;
    store_audit_entry_t e;
    record_refused_build(&e, &t, principal, message_id, reason, text, item_index);
    return record_append(b, &e);
}

void record_refused_carried(broker_t *b, const char *principal, const uint8_t *message_id,
                            Schakel__Reason reason, const char *text, int item_index, int logged)
{
    record_refusal_texts_t t;
    store_audit_entry_t e;
    if (logged)
        record_refused_log(principal, message_id, reason, text, item_index, 0);
    record_refused_build(&e, &t, principal, message_id, reason, text, item_index);
    record_carry_owed(b, &e);
}

/* ------------------------------------------------------------------ deliveries */

/* The subject's tag (store_subject_tag); -1 fails the turn. */
int record_subject_tag(broker_t *b, const char *pseudonym, const char *event,
                       char tag[STORE_SUBJECT_TAG_LEN + 1])
{
    if (store_subject_tag(b->store, pseudonym, tag) == 0)
        return 0;
    log_event(LOG_ERROR, "audit.write_failed", "entry", event, "error", store_errmsg(b->store),
              NULL);
    broker_fail_turn(b);
    return -1;
}

/* ------------------------------------------------------------------ per-turn state */

#define RECORD_ACKERS_KEPT 16u
#define RECORD_ACKER_FIRST_CAP 64u

/* The fields text of a rule at most ("sender,kind,theme" and every name of
 * record_field_names), and a rule line's head: "rule " id SP hash SP
 * expires_at SP fields SP. */
#define RECORD_FIELDS_TEXT 160u
#define RECORD_QRULE_HEAD                                                                          \
    (5u + SCHAKEL_MAX_ID_LEN + 1u + 64u + 1u + 20u + 1u + RECORD_FIELDS_TEXT + 1u)

/*
 * An item's deliveries are kept, not recorded, until a delivery of another
 * item arrives, another entry is written, or the turn ends: then one
 * "delivery.queued" entry records them all. Its common fields (actor =
 * sender, message_id, item_index, item_seq, kind, theme, subject_tag) are
 * columns; each delivery's seq, recipient and rule (id, hash, purpose,
 * legal basis, fields, expires_at) are in its deliveries column
 * (store_audit_deliveries_parse), a rule written once however many of
 * the item's deliveries it covers. An entry lists at most
 * STORE_AUDIT_MAX_QUEUED_DELIVERIES deliveries (and
 * STORE_AUDIT_MAX_DELIVERIES_TEXT bytes): an item with more gets an entry
 * per that many. Memory: the deliveries of one item (at most one per
 * principal of the policy), their distinct rules, and the text.
 */
typedef struct record_qrule {
    char id[SCHAKEL_MAX_ID_LEN + 1];
    char hash[65];
    uint32_t fields;
    int64_t expires_at;
    char purpose[SCHAKEL_AUDIT_MAX_TEXT_LEN + 1];
    char legal_basis[SCHAKEL_AUDIT_MAX_TEXT_LEN + 1];
    /* the rule line up to the purpose's length: "rule ID HASH EXPIRES FIELDS " */
    char head[RECORD_QRULE_HEAD];
    size_t head_len, purpose_len, legal_basis_len;
} record_qrule_t;

typedef struct record_qdelivery {
    uint64_t seq;
    uint32_t rule;
    size_t recipient_len;
    char recipient[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
} record_qdelivery_t;

typedef struct record_queue {
    /* the item: set while n > 0 */
    char sender[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    uint8_t message_id[SCHAKEL_MESSAGE_ID_BYTES];
    int has_message_id;
    uint32_t item_index;
    uint64_t item_seq;
    char kind[SCHAKEL_MAX_ID_LEN + 1];
    char theme[SCHAKEL_MAX_ID_LEN + 1];
    char subject_tag[STORE_SUBJECT_TAG_LEN + 1]; /* "" when none */
    record_qdelivery_t *deliveries;
    size_t n, cap;
    record_qrule_t *rules;
    size_t n_rules, cap_rules;
    size_t text_bytes; /* the text these make, an upper bound */
    char *text;
    size_t text_cap;
} record_queue_t;

#define RECORD_QUEUE_RULES_KEPT 8u
#define RECORD_QUEUE_FIRST_CAP 16u
/* A rule line's bytes beyond its texts, and a delivery line's, at most. */
#define RECORD_QRULE_LINE (RECORD_QRULE_HEAD + 2u * 6u + 2u)
#define RECORD_QDELIVERY_LINE (20u + 5u + SCHAKEL_MAX_PRINCIPAL_LEN + 2u)

static int record_text_fits(const char *text, size_t size)
{
    return text != NULL && strnlen(text, size) < size;
}

/* A delivery that cannot be kept fails the turn. */
static int record_queue_failed(broker_t *b, const char *why)
{
    record_write_failed(b, "audit.write_failed", "delivery.queued", why);
    broker_fail_turn(b);
    return -1;
}

/* Whether d is of the item the queue holds. */
static int record_queue_same_item(const record_queue_t *q, const record_delivery_t *d,
                                  const char *tag)
{
    return q->item_seq == d->item_seq && q->item_index == d->item_index &&
           strcmp(q->sender, d->sender) == 0 && strcmp(q->kind, d->kind) == 0 &&
           strcmp(q->theme, d->theme) == 0 && strcmp(q->subject_tag, tag) == 0 &&
           q->has_message_id == (d->message_id != NULL) &&
           (d->message_id == NULL ||
            memcmp(q->message_id, d->message_id, SCHAKEL_MESSAGE_ID_BYTES) == 0);
}

static void record_queue_start(record_queue_t *q, const record_delivery_t *d, const char *tag)
{
    memcpy(q->sender, d->sender, strlen(d->sender) + 1);
    q->has_message_id = d->message_id != NULL;
    if (d->message_id != NULL)
        memcpy(q->message_id, d->message_id, SCHAKEL_MESSAGE_ID_BYTES);
    q->item_index = d->item_index;
    q->item_seq = d->item_seq;
    memcpy(q->kind, d->kind, strlen(d->kind) + 1);
    memcpy(q->theme, d->theme, strlen(d->theme) + 1);
    memcpy(q->subject_tag, tag, strlen(tag) + 1);
    q->text_bytes = 0;
}

static int record_qrule_is(const record_qrule_t *r, const record_delivery_t *d)
{
    return r->fields == d->fields && r->expires_at == d->expires_at &&
           strcmp(r->hash, d->rule_hash) == 0 && strcmp(r->id, d->rule_id) == 0 &&
           strcmp(r->purpose, d->purpose != NULL ? d->purpose : "") == 0 &&
           strcmp(r->legal_basis, d->legal_basis != NULL ? d->legal_basis : "") == 0;
}

/* Append bytes at out[*used] (the caller sized out for them). */
static void record_put(char *out, size_t *used, const char *bytes, size_t len)
{
    memcpy(out + *used, bytes, len);
    *used += len;
}

/* value in decimal, without sign or leading zeros (the lists' spelling). */
static void record_put_decimal(char *out, size_t *used, uint64_t value)
{
    *used += syntax_decimal_digits(value, out + *used);
}

/* The rule line's head, made once per rule: the part of the line that
 * does not depend on its texts. */
static void record_qrule_head(record_qrule_t *r, size_t id_len, size_t hash_len)
{
    char fields[RECORD_FIELDS_TEXT];
    size_t used = 0, fields_len = record_field_names(r->fields, fields, sizeof fields);
    record_put(r->head, &used, "rule ", 5);
    record_put(r->head, &used, r->id, id_len);
    r->head[used++] = ' ';
    record_put(r->head, &used, r->hash, hash_len);
    r->head[used++] = ' ';
    record_put_decimal(r->head, &used, (uint64_t)r->expires_at); /* 0 .. INT64_MAX: policy.c */
    r->head[used++] = ' ';
    record_put(r->head, &used, fields, fields_len);
    r->head[used++] = ' ';
    r->head_len = used;
}

/* The queue's number for d's rule, added if new; -1 when out of memory. */
static long record_queue_rule(record_queue_t *q, const record_delivery_t *d)
{
    if (q->n > 0 && record_qrule_is(&q->rules[q->deliveries[q->n - 1].rule], d))
        return (long)q->deliveries[q->n - 1].rule;
    for (size_t i = 0; i < q->n_rules; i++)
        if (record_qrule_is(&q->rules[i], d))
            return (long)i;
    if (growarray_room((void **)&q->rules, &q->cap_rules, q->n_rules, sizeof *q->rules, 4) != 0)
        return -1;
    record_qrule_t *r = &q->rules[q->n_rules];
    size_t id_len = strlen(d->rule_id), hash_len = strlen(d->rule_hash);
    memcpy(r->id, d->rule_id, id_len + 1);
    memcpy(r->hash, d->rule_hash, hash_len + 1);
    r->fields = d->fields;
    r->expires_at = d->expires_at;
    /* record_queue_valid bounded both texts */
    r->purpose_len = d->purpose != NULL ? strlen(d->purpose) : 0;
    r->legal_basis_len = d->legal_basis != NULL ? strlen(d->legal_basis) : 0;
    memcpy(r->purpose, d->purpose != NULL ? d->purpose : "", r->purpose_len + 1);
    memcpy(r->legal_basis, d->legal_basis != NULL ? d->legal_basis : "", r->legal_basis_len + 1);
    record_qrule_head(r, id_len, hash_len);
    q->text_bytes += RECORD_QRULE_LINE + r->purpose_len + r->legal_basis_len;
    return (long)q->n_rules++;
}

/* The deliveries text (store_audit_deliveries_parse): rules in the order
 * of their first use (the order they were added), then the deliveries.
 * Built by copying (text_bytes bounds it: RECORD_QRULE_LINE and
 * RECORD_QDELIVERY_LINE count every byte but the texts'), no formatting
 * per field. */
static const char *record_queue_text(record_queue_t *q)
{
    size_t used = 0, need = q->text_bytes + 1;
    if (need > q->text_cap) {
        char *grown = realloc(q->text, need);
        if (grown == NULL)
            return NULL;
        q->text = grown;
        q->text_cap = need;
    }
    char *out = q->text;
    for (size_t i = 0; i < q->n_rules; i++) {
        const record_qrule_t *r = &q->rules[i];
        record_put(out, &used, r->head, r->head_len);
        record_put_decimal(out, &used, r->purpose_len);
        out[used++] = ':';
        record_put(out, &used, r->purpose, r->purpose_len);
        out[used++] = ' ';
        record_put_decimal(out, &used, r->legal_basis_len);
        out[used++] = ':';
        record_put(out, &used, r->legal_basis, r->legal_basis_len);
        out[used++] = '\n';
    }
    for (size_t i = 0; i < q->n; i++) {
        const record_qdelivery_t *d = &q->deliveries[i];
        record_put_decimal(out, &used, d->seq);
        out[used++] = ' ';
        record_put_decimal(out, &used, d->rule);
        out[used++] = ' ';
        record_put(out, &used, d->recipient, d->recipient_len);
        out[used++] = '\n';
    }
    out[used] = '\0';
    return out;
}

/* Forget the kept deliveries (recorded, or rolled back with their turn). */
static void record_queue_clear(record_queue_t *q)
{
    if (q == NULL)
        return;
    q->n = 0;
    q->n_rules = 0;
    q->text_bytes = 0;
    if (q->cap_rules > RECORD_QUEUE_RULES_KEPT) { /* a rare item with many rules */
        free(q->rules);
        q->rules = NULL;
        q->cap_rules = 0;
    }
}

/* One entry for the kept deliveries, if any; the queue is empty afterwards.
 * On failure the turn has failed. */
int record_queue_flush(broker_t *b)
{
    record_queue_t *q = b->acks != NULL ? b->acks->queue : NULL;
    char id_hex[2 * SCHAKEL_MESSAGE_ID_BYTES + 1];
    store_audit_entry_t e;
    if (q == NULL || q->n == 0)
        return 0;
    const char *text = record_queue_text(q);
    if (text == NULL) {
        record_queue_clear(q);
        return record_queue_failed(b, "out of memory");
    }
    audit_entry_init(&e, "delivery.queued");
    audit_set_text(&e, STORE_AUDIT_ACTOR, q->sender);
    record_set_message_id(&e, q->has_message_id ? q->message_id : NULL, id_hex);
    audit_set_int(&e, STORE_AUDIT_ITEM_INDEX, q->item_index);
    audit_set_int(&e, STORE_AUDIT_ITEM_SEQ, (int64_t)q->item_seq);
    audit_set_text(&e, STORE_AUDIT_KIND, q->kind);
    audit_set_text(&e, STORE_AUDIT_THEME, q->theme);
    audit_set_text(&e, STORE_AUDIT_SUBJECT_TAG, q->subject_tag[0] != '\0' ? q->subject_tag : NULL);
    audit_set_text(&e, STORE_AUDIT_DELIVERIES, text);
    record_queue_clear(q);
    return record_append_now(b, &e);
}

static int record_queue_valid(const record_delivery_t *d)
{
    return record_text_fits(d->sender, SCHAKEL_MAX_PRINCIPAL_LEN + 1) &&
           record_text_fits(d->recipient, SCHAKEL_MAX_PRINCIPAL_LEN + 1) &&
           record_text_fits(d->kind, SCHAKEL_MAX_ID_LEN + 1) &&
           record_text_fits(d->theme, SCHAKEL_MAX_ID_LEN + 1) &&
           record_text_fits(d->rule_id, SCHAKEL_MAX_ID_LEN + 1) &&
           record_text_fits(d->rule_hash, 65) &&
           (d->purpose == NULL ||
            strnlen(d->purpose, SCHAKEL_AUDIT_MAX_TEXT_LEN + 1) <= SCHAKEL_AUDIT_MAX_TEXT_LEN) &&
           (d->legal_basis == NULL ||
            strnlen(d->legal_basis, SCHAKEL_AUDIT_MAX_TEXT_LEN + 1) <= SCHAKEL_AUDIT_MAX_TEXT_LEN);
}

/* Room for d in the kept entry: the same item, a later seq, below the
 * bounds (a new rule's texts counted). */
static int record_queue_room(const record_queue_t *q, const record_delivery_t *d, const char *tag)
{
    size_t texts = (d->purpose != NULL ? strlen(d->purpose) : 0) +
                   (d->legal_basis != NULL ? strlen(d->legal_basis) : 0);
    return q->n > 0 && q->n < STORE_AUDIT_MAX_QUEUED_DELIVERIES &&
           d->seq > q->deliveries[q->n - 1].seq && record_queue_same_item(q, d, tag) &&
           q->text_bytes + RECORD_QRULE_LINE + texts + RECORD_QDELIVERY_LINE <
               STORE_AUDIT_MAX_DELIVERIES_TEXT;
}

int record_queued(broker_t *b, const record_delivery_t *d)
{
    char seq_s[24], item_s[24], tag[STORE_SUBJECT_TAG_LEN + 1];
    if (log_enabled(LOG_DEBUG)) {
        snprintf(seq_s, sizeof seq_s, "%llu", (unsigned long long)d->seq);
        snprintf(item_s, sizeof item_s, "%llu", (unsigned long long)d->item_seq);
        log_event(LOG_DEBUG, "delivery.queued", "sender", d->sender, "recipient", d->recipient,
                  "seq", seq_s, "item_seq", item_s, "rule", d->rule_id, "rule_hash", d->rule_hash,
                  NULL);
    }
    if (b->turn_failed)
        return -1; /* rolled back: neither this delivery nor its record will be */
    if (!record_queue_valid(d))
        return record_queue_failed(b, "a delivery's ids are missing or too long");
    tag[0] = '\0';
    if (d->subject != NULL) {
        if (d->subject_tag != NULL)
            snprintf(tag, sizeof tag, "%s", d->subject_tag);
        else if (record_subject_tag(b, d->subject, "delivery.queued", tag) != 0)
            return -1;
    }
    if (b->acks == NULL && (b->acks = calloc(1, sizeof *b->acks)) == NULL)
        return record_queue_failed(b, "out of memory");
    if (b->acks->queue == NULL && (b->acks->queue = calloc(1, sizeof *b->acks->queue)) == NULL)
        return record_queue_failed(b, "out of memory");
    record_queue_t *q = b->acks->queue;
    if (!record_queue_room(q, d, tag)) {
        if (record_queue_flush(b) != 0)
            return -1;
        record_queue_start(q, d, tag);
    }
    if (growarray_room((void **)&q->deliveries, &q->cap, q->n, sizeof *q->deliveries,
                       RECORD_QUEUE_FIRST_CAP) != 0)
        return record_queue_failed(b, "out of memory");
    long rule = record_queue_rule(q, d);
    if (rule < 0)
        return record_queue_failed(b, "out of memory");
    record_qdelivery_t *kept = &q->deliveries[q->n++];
    kept->seq = d->seq;
    kept->rule = (uint32_t)rule;
    kept->recipient_len = strlen(d->recipient);
    memcpy(kept->recipient, d->recipient, kept->recipient_len + 1);
    q->text_bytes += RECORD_QDELIVERY_LINE;
    return 0;
}

void record_delivered(const char *recipient, uint64_t seq, int redelivery)
{
    char seq_s[24];
    if (!log_enabled(LOG_DEBUG))
        return;
    snprintf(seq_s, sizeof seq_s, "%llu", (unsigned long long)seq);
    log_event(LOG_DEBUG, "delivery.sent", "recipient", recipient, "seq", seq_s, "redelivery",
              redelivery ? "true" : "false", NULL);
}

/* ------------------------------------------------------------------ acks */

/*
 * An ack is kept, not recorded, until its turn ends: record_turn_end then
 * writes one "delivery.acked" entry per recipient that acked in the turn,
 * listing its seqs (delivery_seqs, canonical: ascending, "7,9,12"), into
 * the turn's transaction before its commit, so the deletes commit with
 * their record or not at all. An entry lists at most
 * STORE_AUDIT_MAX_ACKED_SEQS (a receiver's largest window): a recipient
 * that acks more in one turn gets an entry per that many, each written as
 * it fills. Memory: per recipient that acked in the turn, an array that
 * grows with its acks up to that bound; arrays are kept for the next turns
 * (those of the first RECORD_ACKERS_KEPT recipients).
 */

/* An ack that cannot be kept fails the turn: it then does not happen. */
static int record_acks_failed(broker_t *b, const char *why)
{
    record_write_failed(b, "audit.write_failed", "delivery.acked", why);
    broker_fail_turn(b);
    return -1;
}

/* The recipient's acker of this turn, made if need be; NULL when out of
 * memory. */
static record_acker_t *record_acker_for(struct record_acks *acks, const char *recipient)
{
    if (acks->last < acks->n_active && strcmp(acks->ackers[acks->last].recipient, recipient) == 0)
        return &acks->ackers[acks->last];
    for (size_t i = 0; i < acks->n_active; i++)
        if (strcmp(acks->ackers[i].recipient, recipient) == 0)
            return &acks->ackers[acks->last = i];
    if (acks->n_active == acks->n_ackers) {
        if (acks->n_ackers == acks->cap_ackers) {
            size_t cap = acks->cap_ackers ? acks->cap_ackers * 2 : 4;
            record_acker_t *grown = realloc(acks->ackers, cap * sizeof *grown);
            if (grown == NULL)
                return NULL;
            acks->ackers = grown;
            acks->cap_ackers = cap;
        }
        memset(&acks->ackers[acks->n_ackers++], 0, sizeof *acks->ackers);
    }
    record_acker_t *a = &acks->ackers[acks->last = acks->n_active++];
    memcpy(a->recipient, recipient, strlen(recipient) + 1);
    a->n = 0;
    return a;
}

static int record_seq_order(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, c = *(const uint64_t *)y;
    return (a > c) - (a < c);
}

/* delivery_seqs of the acker's seqs: sorted, each once (a seq is acked
 * once anyway: the second ack of it finds no delivery). The text holds up
 * to STORE_AUDIT_MAX_ACKED_SEQS seqs of at most 20 digits and a comma. */
static const char *record_acker_text(struct record_acks *acks, record_acker_t *a)
{
    size_t used = 0;
    if (a->n > 1)
        qsort(a->seqs, a->n, sizeof *a->seqs, record_seq_order);
    for (size_t i = 0; i < a->n; i++) {
        if (i > 0 && a->seqs[i] == a->seqs[i - 1])
            continue;
        if (used > 0)
            acks->text[used++] = ',';
        record_put_decimal(acks->text, &used, a->seqs[i]);
    }
    acks->text[used] = '\0';
    return acks->text;
}

/* One entry for the acker's seqs; the acker is empty afterwards. */
static int record_acker_write(broker_t *b, record_acker_t *a)
{
    store_audit_entry_t e;
    audit_entry_init(&e, "delivery.acked");
    audit_set_text(&e, STORE_AUDIT_ACTOR, a->recipient);
    audit_set_text(&e, STORE_AUDIT_RECIPIENT, a->recipient);
    audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, record_acker_text(b->acks, a));
    a->n = 0;
    return record_append(b, &e);
}

/* Forget the turn's acks (recorded, or rolled back with their turn). */
static void record_acks_clear(struct record_acks *acks)
{
    if (acks == NULL)
        return;
    for (size_t i = 0; i < acks->n_active; i++)
        acks->ackers[i].n = 0;
    acks->n_active = 0;
    acks->last = 0;
    while (acks->n_ackers > RECORD_ACKERS_KEPT)
        free(acks->ackers[--acks->n_ackers].seqs);
}

/* Record the turn's acks: an entry per recipient. On failure the turn has
 * failed (record_append); the acks are forgotten either way. */
int record_acks_flush(broker_t *b)
{
    struct record_acks *acks = b->acks;
    int rc = 0;
    if (acks == NULL)
        return 0;
    for (size_t i = 0; rc == 0 && i < acks->n_active; i++)
        if (acks->ackers[i].n > 0)
            rc = record_acker_write(b, &acks->ackers[i]);
    record_acks_clear(acks);
    return rc;
}

int record_acked_in_turn(const broker_t *b, const char *recipient, uint64_t seq)
{
    const struct record_acks *acks = b->acks;
    for (size_t i = 0; acks != NULL && i < acks->n_active; i++) {
        const record_acker_t *a = &acks->ackers[i];
        if (strcmp(a->recipient, recipient) != 0)
            continue;
        for (size_t k = 0; k < a->n; k++)
            if (a->seqs[k] == seq)
                return 1;
    }
    return 0;
}

int record_acked(broker_t *b, const char *recipient, uint64_t seq)
{
    char seq_s[24];
    if (log_enabled(LOG_DEBUG)) {
        snprintf(seq_s, sizeof seq_s, "%llu", (unsigned long long)seq);
        log_event(LOG_DEBUG, "delivery.acked", "recipient", recipient, "seq", seq_s, NULL);
    }
    if (b->turn_failed)
        return -1; /* rolled back: neither this ack nor its record will be */
    if (recipient == NULL || strlen(recipient) > SCHAKEL_MAX_PRINCIPAL_LEN)
        return record_acks_failed(b, "the recipient is no principal id");
    if (b->acks == NULL && (b->acks = calloc(1, sizeof *b->acks)) == NULL)
        return record_acks_failed(b, "out of memory");
    record_acker_t *a = record_acker_for(b->acks, recipient);
    if (a == NULL)
        return record_acks_failed(b, "out of memory");
    if (a->n == a->cap) { /* below the bound: a full list was written and emptied */
        size_t cap = a->cap ? a->cap * 2 : RECORD_ACKER_FIRST_CAP;
        if (cap > STORE_AUDIT_MAX_ACKED_SEQS)
            cap = STORE_AUDIT_MAX_ACKED_SEQS;
        uint64_t *grown = realloc(a->seqs, cap * sizeof *grown);
        if (grown == NULL)
            return record_acks_failed(b, "out of memory");
        a->seqs = grown;
        a->cap = cap;
    }
    a->seqs[a->n++] = seq;
    /* A full list is recorded at once; the recipient's next acks start
     * another entry. */
    return a->n == STORE_AUDIT_MAX_ACKED_SEQS ? record_acker_write(b, a) : 0;
}

/* ------------------------------------------------------------------ the turn's end */

void record_turn_end(broker_t *b)
{
    if (b->turn_failed) {
        /* rolled back anyway, acks and deliveries included; the next turn
         * checks again */
        record_acks_clear(b->acks);
        record_queue_clear(b->acks != NULL ? b->acks->queue : NULL);
        return;
    }
    if (record_queue_flush(b) != 0 || record_acks_flush(b) != 0) {
        record_acks_clear(b->acks);
        return; /* the turn failed: its acks roll back with it */
    }
    if (record_refusals_summary(b, 0) != 0)
        return; /* the turn failed (logged) */
    int rc = audit_checkpoint(b->store, b->key, record_now(b), 0);
    if (rc < 0) {
        record_write_failed(b, "audit.checkpoint_failed", "checkpoint", store_errmsg(b->store));
        broker_fail_turn(b);
    } else if (rc > 0) {
        b->turn_acks_only = 0; /* a signed checkpoint is committed with an fsync */
    }
}

void record_release(broker_t *b)
{
    if (b == NULL || b->acks == NULL)
        return;
    record_carried_release(b);
    for (size_t i = 0; i < b->acks->n_ackers; i++)
        free(b->acks->ackers[i].seqs);
    free(b->acks->ackers);
    free(b->acks->said);
    free(b->acks->lines);
    if (b->acks->queue != NULL) {
        free(b->acks->queue->deliveries);
        free(b->acks->queue->rules);
        free(b->acks->queue->text);
        free(b->acks->queue);
    }
    free(b->acks);
    b->acks = NULL;
}
