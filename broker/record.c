/*
 * record.c — decisions recorded as key=value events and as audit entries
 * (see record.h), and the turn's acks, kept until its end (b->acks) to be
 * recorded as one entry per recipient.
 *
 * Records ids and metadata only, never contents. Trusts its callers: every
 * id passed here was validated by the wire module or comes from the policy;
 * free texts (refusal texts, policy errors, operator details) are cleaned
 * to printable UTF-8 before they are kept. A failure to write an entry (or
 * to keep an ack) fails the turn: the action is then not committed (fail
 * closed). A refused operator request's entry holds back no action: it is
 * carried, kept until the trail holds it (record_admin_refused,
 * record_carry.c).
 */
#include "record.h"

#include <inttypes.h>
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
static int record_append_now(broker_t *b, store_audit_entry_t *entry)
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

static int record_acks_flush(broker_t *b);

/* Any entry but a queued one: the item whose deliveries are kept is
 * written first, so that the trail keeps the order of the actions (an
 * item's queued entry before its publish's accepted entry, queued
 * entries in item order). */
static int record_append(broker_t *b, store_audit_entry_t *entry)
{
    if (record_queue_flush(b) != 0)
        return -1;
    return record_append_now(b, entry);
}

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

static void record_set_message_id(store_audit_entry_t *e, const uint8_t *message_id,
                                  char hex[2 * SCHAKEL_MESSAGE_ID_BYTES + 1])
{
    if (message_id == NULL)
        return;
    syntax_hex(message_id, SCHAKEL_MESSAGE_ID_BYTES, hex);
    audit_set_text(e, STORE_AUDIT_MESSAGE_ID, hex);
}

/* An id that names a principal is the actor; anything else (a signal
 * name) goes into the detail. */
static const char *record_actor(const char *requested_by)
{
    return requested_by != NULL && syntax_is_principal_id(requested_by) ? requested_by : NULL;
}

/* "sender,kind,theme" and the names of the mask's fields, in POLICY.md's
 * words; returns the length (cut to fit outlen, which the callers' 160
 * bytes always do). */
static size_t record_field_names(uint32_t mask, char *out, size_t outlen)
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

/* A log line kept until its turn commits (record_turn_settle): a publish
 * or case command whose turn is rolled back was not carried out, and its
 * line would name what the next one gets. */
typedef struct line_said {
    const char *event;  /* static */
    const char *key[5]; /* static; the first NULL ends the pairs */
    char val[5][SCHAKEL_MAX_PRINCIPAL_LEN + 1];
} line_said_t;

static void line_say(const line_said_t *t)
{
    log_event(LOG_INFO, t->event, t->key[0], t->val[0], t->key[1], t->val[1], t->key[2], t->val[2],
              t->key[3], t->val[3], t->key[4], t->val[4], NULL);
}

/* Kept for the turn's end; a line that cannot wait (no memory for it) is
 * said at once. */
static void line_say_at_commit(broker_t *b, const line_said_t *t)
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
static void line_settle(broker_t *b, int committed)
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
    line_say_at_commit(b, &line);
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
static int record_subject_tag(broker_t *b, const char *pseudonym, const char *event,
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
static int record_acks_flush(broker_t *b)
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

int record_withdrawn(broker_t *b, const store_expired_t *x, const char *why, record_sent_t sent)
{
    char seq_s[24];
    store_audit_entry_t e;
    const char *sent_text = sent == RECORD_SENT_YES  ? "yes"
                            : sent == RECORD_SENT_NO ? "no"
                                                     : "unknown";
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
        rule_hash[160], reason[2 * STORE_SET_ASIDE_REASON_LEN];
} set_aside_texts_t;

/* A delivery set aside is said once, at error level: an operator has
 * something to look at (docs/OPERATIONS.md). */
static void set_aside_say(const set_aside_texts_t *t)
{
    log_event(LOG_ERROR, "delivery.set_aside", "recipient", t->recipient, "seq", t->seq, "rule",
              t->rule_id, "reason", t->reason, NULL);
}

/* The entry of a delivery set aside, and its texts. */
static void set_aside_entry(const store_set_aside_t *x, set_aside_texts_t *t,
                            store_audit_entry_t *e)
{
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
static void set_aside_settle(broker_t *b, int committed)
{
    if (b->acks == NULL)
        return;
    for (size_t i = 0; committed && i < b->acks->n_said; i++)
        set_aside_say(&b->acks->said[i]);
    b->acks->n_said = 0;
}

int record_set_aside(broker_t *b, const store_set_aside_t *x)
{
    set_aside_texts_t t;
    store_audit_entry_t e;
    set_aside_entry(x, &t, &e);
    if (record_append(b, &e) != 0)
        return -1;
    b->stats.set_aside++;
    set_aside_say_at_commit(b, &t);
    return 0;
}

/* How many seqs one round of store_set_aside_unrecorded reads. */
#define RECORD_SET_ASIDE_BATCH 64

int record_set_aside_unrecorded(broker_t *b)
{
    uint64_t seqs[RECORD_SET_ASIDE_BATCH], after = 0;
    int n;
    while ((n = store_set_aside_unrecorded(b->store, after, seqs, RECORD_SET_ASIDE_BATCH)) > 0) {
        for (int i = 0; i < n; i++) {
            store_set_aside_t x;
            int found = store_set_aside_get(b->store, seqs[i], &x);
            if (found < 0)
                goto failed;
            if (found == 1 && record_set_aside(b, &x) != 0) {
                store_rollback(b->store);
                set_aside_settle(b, 0);
                return -1; /* logged by record_append */
            }
        }
        after = seqs[n - 1];
        if (store_commit(b->store) != 0)
            goto failed;
        set_aside_settle(b, 1);
    }
    if (n == 0)
        return 0;
failed:
    record_write_failed(b, "audit.write_failed", "delivery.set_aside", store_errmsg(b->store));
    store_rollback(b->store);
    set_aside_settle(b, 0);
    return -1;
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
            set_aside_entry(&x, &t, &e);
            if (audit_append(store, key, now, &e) != 0)
                return -1;
            set_aside_say(&t); /* an offline command's own output: said at once */
            recorded++;
        }
        after = seqs[n - 1];
    }
    return n < 0 ? -1 : recorded;
}

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
    line_say_at_commit(b, &t);
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
static int record_refusals_summary(broker_t *b, int force)
{
    if (record_refusals_summary_of(b, record_refusals_book(b, 0), force) != 0)
        return -1;
    return record_refusals_summary_of(b, record_refusals_book(b, 1), force);
}

void record_turn_settle(broker_t *b, int committed)
{
    record_carried_settle(b);
    set_aside_settle(b, committed);
    line_settle(b, committed);
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
