/*
 * audit_render.c — the audit trail's entries as text (see audit.h): one
 * entry as JSON or as a log-style line, and the data-subject export, read
 * in steps and written as one document. Trusts the store for rows and
 * nothing in them: every string is escaped. Errors are NULL or -1 (out of
 * memory, or the store's message); an export past its bounds is said so.
 */
#include "audit.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "schakel_limits.h"
#include "growarray.h"
#include "syntax.h"

/* ------------------------------------------------------------------ text buffers */

typedef struct text_buf {
    char *data;
    size_t len, cap;
    int out_of_memory;
} text_buf_t;

static void buf_put(text_buf_t *b, const char *s, size_t n)
{
    if (b->out_of_memory)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        /* not realloc: the text names a subject, and the old block is
         * wiped before it goes back to the heap */
        char *grown = malloc(cap);
        if (grown == NULL) {
            b->out_of_memory = 1;
            return;
        }
        if (b->data != NULL) {
            memcpy(grown, b->data, b->len + 1);
            sodium_memzero(b->data, b->cap);
            free(b->data);
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_puts(text_buf_t *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

static void buf_printf(text_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void buf_printf(text_buf_t *b, const char *fmt, ...)
{
    char small[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof small)
        buf_put(b, small, (size_t)n);
    else
        b->out_of_memory = 1; /* only short numbers are formatted this way */
}

/* Give the text away (NULL if memory ran out). */
static char *buf_take(text_buf_t *b)
{
    if (b->out_of_memory || b->data == NULL) {
        if (b->data != NULL)
            sodium_memzero(b->data, b->cap);
        free(b->data);
        return b->out_of_memory ? NULL : strdup("");
    }
    return b->data;
}

/* A JSON string. Text that is not valid UTF-8 (only a tampered row can
 * hold that) has each byte above 0x7F replaced by U+FFFD, so the output is
 * always valid JSON. */
static void buf_json_string(text_buf_t *b, const char *s)
{
    size_t len = strlen(s);
    int utf8 = syntax_is_utf8((const uint8_t *)s, len);
    buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            buf_put(b, esc, 2);
        } else if (*p < 0x20 || *p == 0x7F) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            buf_put(b, esc, 6);
        } else if (utf8 && *p == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F) {
            /* C1 controls (U+0080..U+009F): terminals act on them too */
            snprintf(esc, sizeof esc, "\\u%04x", p[1]);
            buf_put(b, esc, 6);
            p++;
        } else if (*p >= 0x80 && !utf8) {
            buf_puts(b, "\\ufffd");
        } else {
            buf_put(b, (const char *)p, 1);
        }
    }
    buf_puts(b, "\"");
}

/* A key=value value, quoted when it is empty or holds a space, quote or
 * '='. Control characters (C0, DEL and the C1 range) and, in text that is
 * not UTF-8, every byte above 0x7F are escaped as \xHH, so that a hostile
 * value can neither forge a line nor drive a terminal. */
static void buf_line_value(text_buf_t *b, const char *s)
{
    size_t len = strlen(s);
    int utf8 = syntax_is_utf8((const uint8_t *)s, len);
    int quote = len == 0 || strpbrk(s, " \"=") != NULL;
    if (quote)
        buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        char esc[12];
        int c1 = utf8 && p[0] == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F;
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            buf_put(b, esc, 2);
        } else if (*p < 0x20 || *p == 0x7F || (*p >= 0x80 && !utf8) || c1) {
            int n = c1 ? snprintf(esc, sizeof esc, "\\x%02x\\x%02x", p[0], p[1])
                       : snprintf(esc, sizeof esc, "\\x%02x", *p);
            buf_put(b, esc, (size_t)n);
            p += c1;
        } else {
            buf_put(b, (const char *)p, 1);
        }
    }
    if (quote)
        buf_puts(b, "\"");
}

void audit_format_time(int64_t at, char *out, size_t outlen)
{
    struct tm tm;
    time_t t = (time_t)at;
    if (outlen == 0)
        return;
    if (gmtime_r(&t, &tm) == NULL || strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, outlen, "%lld", (long long)at);
}

/* ------------------------------------------------------------------ renderings */

static const char *shown_text(const store_audit_entry_t *e, int i, int withhold_subject)
{
    if (i == STORE_AUDIT_SUBJECT_TAG && withhold_subject)
        return "withheld";
    return e->field[i].text != NULL ? e->field[i].text : "";
}

/* A span of a deliveries text (at most SCHAKEL_AUDIT_MAX_TEXT_LEN bytes:
 * the parser's bound) as a JSON string. */
static void buf_json_span(text_buf_t *b, const char *s, size_t len)
{
    char copy[SCHAKEL_AUDIT_MAX_TEXT_LEN + 1];
    if (len > SCHAKEL_AUDIT_MAX_TEXT_LEN)
        len = SCHAKEL_AUDIT_MAX_TEXT_LEN;
    memcpy(copy, s, len);
    copy[len] = '\0';
    buf_json_string(b, copy);
}

/* One delivery of a queued entry's list, as the object of
 * "deliveries_listed" (the names of the single-delivery columns). */
static int json_listed(const store_audit_delivery_t *d, void *arg)
{
    text_buf_t *b = arg;
    buf_printf(b, "%s{\"delivery_seq\":%llu,\"recipient\":",
               b->data != NULL && b->len > 0 && b->data[b->len - 1] == '}' ? "," : "",
               (unsigned long long)d->seq);
    buf_json_span(b, d->recipient, d->recipient_len);
    buf_puts(b, ",\"recipient_partner\":");
    buf_json_span(b, d->recipient, d->recipient_partner_len);
    buf_puts(b, ",\"rule_id\":");
    buf_json_span(b, d->rule_id, d->rule_id_len);
    buf_puts(b, ",\"rule_hash\":");
    buf_json_span(b, d->rule_hash, 64);
    buf_puts(b, ",\"purpose\":");
    buf_json_span(b, d->purpose, d->purpose_len);
    buf_puts(b, ",\"legal_basis\":");
    buf_json_span(b, d->legal_basis, d->legal_basis_len);
    buf_puts(b, ",\"fields\":");
    buf_json_span(b, d->fields, d->fields_len);
    buf_printf(b, ",\"expires_at\":%lld}", (long long)d->expires_at);
    return 0;
}

/* A queued entry's deliveries, parsed: "deliveries_listed":[{...},...]
 * (nothing when the text is not a canonical list: verify names that). */
static void buf_listed(text_buf_t *b, const store_audit_entry_t *e)
{
    const store_audit_value_t *v = &e->field[STORE_AUDIT_DELIVERIES];
    if (!v->present || store_audit_deliveries_parse(v->text, NULL, NULL) == 0)
        return;
    buf_puts(b, ",\"deliveries_listed\":[");
    (void)store_audit_deliveries_parse(v->text, json_listed, b);
    buf_puts(b, "]");
}

/* audit_entry_json, and for the export the count of seqs left out of an
 * acked entry's delivery_seqs (shown when not 0). */
static char *entry_json(const store_audit_entry_t *e, int withhold_subject, size_t seqs_withheld)
{
    text_buf_t b = {0};
    char time_text[32], hash_hex[2 * STORE_AUDIT_HASH_BYTES + 1];
    audit_format_time(e->at, time_text, sizeof time_text);
    buf_printf(&b, "{\"seq\":%llu,\"at\":%lld,\"time\":", (unsigned long long)e->seq,
               (long long)e->at);
    buf_json_string(&b, time_text);
    for (int i = 0; i < STORE_AUDIT_FIELD_COUNT; i++) {
        if (!e->field[i].present)
            continue;
        buf_puts(&b, ",");
        buf_json_string(&b, store_audit_fields[i].name);
        buf_puts(&b, ":");
        if (store_audit_fields[i].is_integer)
            buf_printf(&b, "%lld", (long long)e->field[i].number);
        else
            buf_json_string(&b, shown_text(e, i, withhold_subject));
    }
    if (seqs_withheld > 0)
        buf_printf(&b, ",\"delivery_seqs_withheld\":%zu", seqs_withheld);
    buf_listed(&b, e);
    syntax_hex(e->hash, STORE_AUDIT_HASH_BYTES, hash_hex);
    buf_puts(&b, ",\"hash\":");
    buf_json_string(&b, hash_hex);
    if (e->damage != NULL) {
        buf_puts(&b, ",\"damage\":");
        buf_json_string(&b, e->damage);
    }
    buf_puts(&b, "}");
    return buf_take(&b);
}

char *audit_entry_json(const store_audit_entry_t *e, int withhold_subject)
{
    return entry_json(e, withhold_subject, 0);
}

char *audit_entry_line(const store_audit_entry_t *e, int withhold_subject)
{
    text_buf_t b = {0};
    char time_text[32];
    audit_format_time(e->at, time_text, sizeof time_text);
    buf_printf(&b, "seq=%llu time=", (unsigned long long)e->seq);
    buf_line_value(&b, time_text);
    for (int i = 0; i < STORE_AUDIT_FIELD_COUNT; i++) {
        if (!e->field[i].present)
            continue;
        buf_puts(&b, " ");
        buf_puts(&b, store_audit_fields[i].name);
        buf_puts(&b, "=");
        if (store_audit_fields[i].is_integer)
            buf_printf(&b, "%lld", (long long)e->field[i].number);
        else
            buf_line_value(&b, shown_text(e, i, withhold_subject));
    }
    if (e->damage != NULL) {
        buf_puts(&b, " damage=");
        buf_line_value(&b, e->damage);
    }
    return buf_take(&b);
}

/* ------------------------------------------------------------------ subject export */

typedef struct export_item {
    uint64_t seq;
    int marker; /* 1: a stand-in for an entry not shown (export_add_acked) */
    char *json;
} export_item_t;

typedef struct export_state {
    export_item_t *items;
    size_t n_items, cap_items;
    uint64_t *deliveries; /* delivery seqs of the subject's deliveries (sorted once all known) */
    size_t n_deliveries, cap_deliveries;
    uint64_t *acked; /* seqs of the entries export_add_acked has seen, ascending */
    size_t n_acked, cap_acked;
    const char *tag;        /* the subject's tag: what the subject index was asked for */
    uint64_t delivery;      /* the delivery the delivery index is being asked for */
    uint64_t last_seq;      /* the last entry the subject index gave */
    size_t n_subject_items; /* of items, the subject index's (ascending seqs): all of them
                               once the deliveries are read */
    size_t bytes;           /* of the renderings kept */
    size_t max_bytes;       /* 0: no bound */
    int out_of_memory;
    int too_large; /* the renderings passed max_bytes */
} export_state_t;

/* The text of an acked entry's delivery_seqs as the export shows it: the
 * subject's own seqs, each up to 19 digits and a comma. */
#define EXPORT_SEQS_TEXT (STORE_AUDIT_MAX_ACKED_SEQS * 20u + 1u)

/* Room for one more in a list of the export (16 at first). */
static int grow(void **array, size_t *cap, size_t n, size_t size)
{
    return growarray_room(array, cap, n, size, 16);
}

/* Keep an entry's rendering (json is taken; NULL: out of memory). */
static int export_keep(export_state_t *st, uint64_t seq, char *json, int marker)
{
    size_t len = json != NULL ? strlen(json) : 0;
    if (json != NULL && st->max_bytes > 0 && len + 2 > st->max_bytes - st->bytes) {
        sodium_memzero(json, len);
        free(json);
        st->too_large = 1;
        return 1;
    }
    if (json == NULL ||
        grow((void **)&st->items, &st->cap_items, st->n_items, sizeof *st->items) != 0) {
        if (json != NULL) /* an entry about the subject */
            sodium_memzero(json, len);
        free(json);
        st->out_of_memory = 1;
        return 1;
    }
    st->items[st->n_items].seq = seq;
    st->items[st->n_items].marker = marker;
    st->items[st->n_items++].json = json;
    st->bytes += len + 2; /* and the ",\n" before it in the document */
    return 0;
}

static int export_add(const store_audit_entry_t *e, void *arg)
{
    return export_keep(arg, e->seq, audit_entry_json(e, 0), 0);
}

static int seq_order(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int export_is_subjects(const export_state_t *st, uint64_t seq)
{
    return bsearch(&seq, st->deliveries, st->n_deliveries, sizeof seq, seq_order) != NULL;
}

/* Whether the entry at seq was seen before (it lists several of the
 * subject's deliveries: each finds it); notes it if not. -1 when out of
 * memory. */
static int export_acked_seen(export_state_t *st, uint64_t seq)
{
    size_t lo = 0, hi = st->n_acked;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (st->acked[mid] == seq)
            return 1;
        if (st->acked[mid] < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (grow((void **)&st->acked, &st->cap_acked, st->n_acked, sizeof *st->acked) != 0) {
        st->out_of_memory = 1;
        return -1;
    }
    memmove(st->acked + lo + 1, st->acked + lo, (st->n_acked - lo) * sizeof *st->acked);
    st->acked[lo] = seq;
    st->n_acked++;
    return 0;
}

/* An entry an index led to that is not what the index was asked for:
 * shown only as its seq and why, never its fields, which may be anyone's;
 * verify names what is wrong with it. */
static int export_add_unreadable(export_state_t *st, uint64_t seq, const char *why)
{
    text_buf_t b = {0};
    buf_printf(&b, "{\"seq\":%llu,\"unreadable\":", (unsigned long long)seq);
    buf_json_string(&b, why);
    buf_puts(&b, "}");
    return export_keep(st, seq, buf_take(&b), 1);
}

/* An acked entry found through the acked-delivery index: one recipient's
 * acks of one turn, rendered once however many of the subject's
 * deliveries it lists. It is shown with only the subject's deliveries in
 * delivery_seqs, and the number of the others ("delivery_seqs_withheld"):
 * the recipient's other deliveries are not the subject's to see. An entry
 * that is not a delivery.acked entry, or lists none of them (the index
 * disagrees: verify names it), is left out; an unreadable one is marked. */
static int export_add_acked(const store_audit_entry_t *e, void *arg)
{
    export_state_t *st = arg;
    uint64_t seqs[STORE_AUDIT_MAX_ACKED_SEQS];
    char shown[EXPORT_SEQS_TEXT];
    const store_audit_value_t *event = &e->field[STORE_AUDIT_EVENT];
    const store_audit_value_t *v = &e->field[STORE_AUDIT_DELIVERY_SEQS];
    int seen = export_acked_seen(st, e->seq);
    if (seen != 0)
        return seen < 0;
    if (e->damage == NULL &&
        (!event->present || event->text == NULL || strcmp(event->text, "delivery.acked") != 0))
        return 0; /* another entry (another subject's, perhaps): never shown */
    size_t n = v->present && e->damage == NULL
                   ? store_audit_seqs_parse(v->text, seqs, STORE_AUDIT_MAX_ACKED_SEQS)
                   : 0;
    if (n == 0)
        return export_add_unreadable(st, e->seq,
                                     "the acked-delivery index names this entry for one of the "
                                     "subject's deliveries, but it is not a readable "
                                     "delivery.acked entry (run schakelctl audit verify)") != 0;
    size_t used = 0, kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (!export_is_subjects(st, seqs[i]))
            continue;
        if (kept++ > 0)
            shown[used++] = ',';
        used += syntax_decimal_digits(seqs[i], shown + used); /* as the lists spell seqs */
    }
    shown[used] = '\0';
    if (kept == 0)
        return 0;
    store_audit_entry_t copy = *e;
    copy.field[STORE_AUDIT_DELIVERY_SEQS].text = shown;
    return export_keep(st, e->seq, entry_json(&copy, 0, n - kept), 0);
}

static int export_note_delivery(export_state_t *st, uint64_t seq)
{
    if (grow((void **)&st->deliveries, &st->cap_deliveries, st->n_deliveries,
             sizeof *st->deliveries) != 0) {
        st->out_of_memory = 1;
        return 1;
    }
    st->deliveries[st->n_deliveries++] = seq;
    return 0;
}

static int export_note_listed(const store_audit_delivery_t *d, void *arg)
{
    return export_note_delivery(arg, d->seq);
}

/* A subject's entry, and the deliveries it names: in delivery_seq (an
 * entry of one delivery) or in deliveries (a queued entry of schema 7,
 * all deliveries of the subject's item). The subject index is SQLite's,
 * trusted by the query for what it holds: a row whose own subject_tag is
 * not the subject's (an index rebuilt outside the broker) is another
 * subject's entry, marked unreadable and never shown. */
static int export_add_subject_entry(const store_audit_entry_t *e, void *arg)
{
    export_state_t *st = arg;
    const store_audit_value_t *tag = &e->field[STORE_AUDIT_SUBJECT_TAG];
    const store_audit_value_t *delivery = &e->field[STORE_AUDIT_DELIVERY_SEQ];
    const store_audit_value_t *listed = &e->field[STORE_AUDIT_DELIVERIES];
    st->last_seq = e->seq;
    if (!tag->present || tag->text == NULL || strcmp(tag->text, st->tag) != 0)
        return export_add_unreadable(st, e->seq,
                                     "the subject index names this entry for the subject, but "
                                     "the entry names another subject or none: the index was "
                                     "altered (run schakelctl audit verify)") != 0;
    if (delivery->present && delivery->number > 0 && e->damage == NULL &&
        export_note_delivery(st, (uint64_t)delivery->number) != 0)
        return 1;
    if (listed->present && e->damage == NULL) {
        (void)store_audit_deliveries_parse(listed->text, export_note_listed, st);
        if (st->out_of_memory)
            return 1;
    }
    return export_add(e, arg);
}

static int export_item_seq_order(const void *key, const void *item)
{
    uint64_t seq = *(const uint64_t *)key, other = ((const export_item_t *)item)->seq;
    return (seq > other) - (seq < other);
}

/* Whether the subject index gave the entry at seq already: a queued entry
 * of a case event names the subject and its one delivery, and both
 * indexes find it. Its items are in seq order (the index is read so). */
static int export_read_by_subject(const export_state_t *st, uint64_t seq)
{
    return bsearch(&seq, st->items, st->n_subject_items, sizeof *st->items,
                   export_item_seq_order) != NULL;
}

/* An entry of one of the subject's deliveries (an expiry, a revocation, a
 * set-aside, an ack or queued entry of an older schema), found through
 * the delivery index, which is checked as the subject index is. One the
 * subject index gave is kept once, so that the byte bound counts it once
 * (the document would show it once all the same). */
static int export_add_delivery_entry(const store_audit_entry_t *e, void *arg)
{
    export_state_t *st = arg;
    const store_audit_value_t *delivery = &e->field[STORE_AUDIT_DELIVERY_SEQ];
    if (export_read_by_subject(st, e->seq))
        return 0;
    if (!delivery->present || delivery->number < 0 || (uint64_t)delivery->number != st->delivery)
        return export_add_unreadable(st, e->seq,
                                     "the delivery index names this entry for one of the "
                                     "subject's deliveries, but the entry names another "
                                     "delivery or none: the index was altered (run schakelctl "
                                     "audit verify)") != 0;
    return export_add(e, arg);
}

/* By seq; of two renderings of one entry, the entry before a stand-in
 * (the first of a seq is the one shown). */
static int export_item_order(const void *a, const void *b)
{
    const export_item_t *x = a, *y = b;
    if (x->seq != y->seq)
        return (x->seq > y->seq) - (x->seq < y->seq);
    return (x->marker > y->marker) - (x->marker < y->marker);
}

static void export_free(export_state_t *st)
{
    for (size_t i = 0; i < st->n_items; i++) {
        if (st->items[i].json != NULL) /* what was recorded about the subject */
            sodium_memzero(st->items[i].json, strlen(st->items[i].json));
        free(st->items[i].json);
    }
    free(st->items);
    free(st->deliveries);
    free(st->acked);
}

/* ------------------------------------------------------------------ the export in steps */

enum export_phase { EXPORT_SUBJECT = 0, EXPORT_DELIVERIES, EXPORT_WRITE, EXPORT_DONE };

struct audit_export {
    export_state_t st;
    enum export_phase phase;
    uint64_t cut;         /* the last committed entry when the export began */
    int64_t began_s;      /* the document's "exported_at" */
    size_t next_delivery; /* of st.deliveries, in EXPORT_DELIVERIES */
    size_t next_item;     /* of st.items (sorted), in EXPORT_WRITE */
    size_t count;         /* entries in the document */
    size_t shown;         /* of them written so far */
    text_buf_t doc;       /* the document, allocated whole when the writing begins */
    char pseudonym[SCHAKEL_MAX_SUBJECT_LEN + 1];
    char tag[STORE_SUBJECT_TAG_LEN + 1];
};

audit_export_t *audit_export_begin(store_t *store, const char *pseudonym, int64_t now_s,
                                   size_t max_bytes, char *err, size_t errlen)
{
    if (pseudonym == NULL || !syntax_is_pseudonym(pseudonym) ||
        strlen(pseudonym) > SCHAKEL_MAX_SUBJECT_LEN) {
        snprintf(err, errlen, "not a pseudonym (8..64 of A-Z a-z 0-9 . _ : -, not all digits)");
        return NULL;
    }
    audit_export_t *ex = calloc(1, sizeof *ex);
    if (ex == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    strcpy(ex->pseudonym, pseudonym);
    if (store_subject_tag(store, pseudonym, ex->tag) != 0 ||
        store_audit_committed_seq(store, &ex->cut) != 0) {
        snprintf(err, errlen, "%s", store_errmsg(store));
        audit_export_destroy(&ex);
        return NULL;
    }
    ex->began_s = now_s;
    ex->st.tag = ex->tag;
    ex->st.max_bytes = max_bytes;
    return ex;
}

uint64_t audit_export_cut(const audit_export_t *ex)
{
    return ex->cut;
}

int audit_export_too_large(const audit_export_t *ex)
{
    return ex != NULL && ex->st.too_large;
}

/* The subject's deliveries, each once and in order, once all are known. */
static void export_deliveries_settle(export_state_t *st)
{
    if (st->n_deliveries <= 1)
        return;
    size_t unique = 1;
    qsort(st->deliveries, st->n_deliveries, sizeof *st->deliveries, seq_order);
    for (size_t i = 1; i < st->n_deliveries; i++)
        if (st->deliveries[i] != st->deliveries[unique - 1])
            st->deliveries[unique++] = st->deliveries[i];
    st->n_deliveries = unique;
}

/* Per delivery: its own entries (expired, revoked, a queued entry
 * recorded before schema 7, an ack recorded before schema 6) and the
 * acked entry that lists it, each up to the cut. */
static int export_step_deliveries(audit_export_t *ex, store_t *store, size_t max_deliveries)
{
    export_state_t *st = &ex->st;
    int rc = 0;
    for (size_t n = 0; rc >= 0 && !st->out_of_memory && !st->too_large && n < max_deliveries &&
                       ex->next_delivery < st->n_deliveries;
         n++, ex->next_delivery++) {
        st->delivery = st->deliveries[ex->next_delivery];
        rc = store_audit_scan_delivery(store, st->delivery, ex->cut, export_add_delivery_entry, st);
        if (rc >= 0 && !st->out_of_memory && !st->too_large)
            rc = store_audit_scan_acked(store, st->delivery, ex->cut, export_add_acked, st);
    }
    if (rc >= 0 && ex->next_delivery >= st->n_deliveries)
        ex->phase = EXPORT_WRITE;
    return rc < 0 ? -1 : 0;
}

/* An item not shown twice: of two renderings of one seq, the first. */
static int export_item_shown(const export_state_t *st, size_t i)
{
    return i == 0 || st->items[i].seq != st->items[i - 1].seq;
}

static void export_item_wipe(export_item_t *item)
{
    if (item->json != NULL) /* what was recorded about the subject */
        sodium_memzero(item->json, strlen(item->json));
    free(item->json);
    item->json = NULL;
}

/* The writing begins: the entries in seq order, each once (a delivery's
 * own entry is found both by subject and by delivery seq), counted; the
 * document allocated whole, and its head written. */
static void export_write_begin(audit_export_t *ex)
{
    export_state_t *st = &ex->st;
    text_buf_t head = {0};
    char began[32];
    size_t bytes = 0;
    if (st->n_items > 1)
        qsort(st->items, st->n_items, sizeof *st->items, export_item_order);
    for (size_t i = 0; i < st->n_items; i++)
        if (export_item_shown(st, i)) {
            ex->count++;
            bytes += strlen(st->items[i].json) + 2;
        }
    audit_format_time(ex->began_s, began, sizeof began);
    buf_puts(&head, "{\"subject\":");
    buf_json_string(&head, ex->pseudonym);
    buf_puts(&head, ",\"subject_tag\":");
    buf_json_string(&head, ex->tag);
    buf_puts(&head, ",\"exported_at\":");
    buf_json_string(&head, began);
    buf_printf(&head, ",\"count\":%zu,\"entries\":[", ex->count);
    if (!head.out_of_memory) {
        ex->doc.cap = head.len + bytes + sizeof "\n]}\n";
        ex->doc.data = malloc(ex->doc.cap);
        if (ex->doc.data != NULL) {
            ex->doc.data[0] = '\0';
            buf_put(&ex->doc, head.data, head.len);
        }
    }
    ex->doc.out_of_memory = head.out_of_memory || ex->doc.data == NULL;
    char *wiped = buf_take(&head);
    if (wiped != NULL)
        sodium_memzero(wiped, strlen(wiped));
    free(wiped);
}

/* Up to max_bytes of the entries onto the document (at least one), each
 * rendering wiped and freed once written. */
static void export_write_step(audit_export_t *ex, size_t max_bytes)
{
    export_state_t *st = &ex->st;
    if (ex->doc.data == NULL && !ex->doc.out_of_memory)
        export_write_begin(ex);
    size_t written = 0;
    while (!ex->doc.out_of_memory && ex->next_item < st->n_items && written < max_bytes) {
        size_t i = ex->next_item++;
        if (export_item_shown(st, i)) {
            size_t len = strlen(st->items[i].json);
            buf_puts(&ex->doc, ex->shown++ ? ",\n" : "\n");
            buf_put(&ex->doc, st->items[i].json, len);
            written += len;
        }
        export_item_wipe(&st->items[i]);
    }
    if (!ex->doc.out_of_memory && ex->next_item >= st->n_items) {
        buf_puts(&ex->doc, "\n]}\n");
        ex->phase = EXPORT_DONE;
    }
    st->out_of_memory |= ex->doc.out_of_memory;
}

int audit_export_step(audit_export_t *ex, store_t *store, const audit_export_bounds_t *bounds,
                      char *err, size_t errlen)
{
    static const audit_export_bounds_t unbounded = {SIZE_MAX, SIZE_MAX, SIZE_MAX};
    export_state_t *st = &ex->st;
    int rc = 0;
    if (bounds == NULL)
        bounds = &unbounded;
    if (ex->phase == EXPORT_SUBJECT) {
        rc = store_audit_scan_subject(store, ex->tag, st->last_seq, ex->cut, bounds->entries,
                                      export_add_subject_entry, st);
        if (rc >= 0 && (size_t)rc < bounds->entries) {
            st->n_subject_items = st->n_items;
            export_deliveries_settle(st);
            ex->phase = EXPORT_DELIVERIES;
        }
    } else if (ex->phase == EXPORT_DELIVERIES) {
        rc = export_step_deliveries(ex, store, bounds->deliveries);
    } else if (ex->phase == EXPORT_WRITE) {
        export_write_step(ex, bounds->bytes);
    }
    if (rc < 0 || st->out_of_memory || st->too_large) {
        if (st->too_large)
            snprintf(err, errlen, "the export would be larger than %zu bytes", st->max_bytes);
        else
            snprintf(err, errlen, "%s", rc < 0 ? store_errmsg(store) : "out of memory");
        return -1;
    }
    return ex->phase == EXPORT_DONE;
}

char *audit_export_document(audit_export_t *ex, size_t *count)
{
    if (ex->phase != EXPORT_DONE || ex->doc.data == NULL)
        return NULL;
    char *doc = ex->doc.data;
    memset(&ex->doc, 0, sizeof ex->doc);
    if (count != NULL)
        *count = ex->count;
    return doc;
}

void audit_export_destroy(audit_export_t **exp)
{
    if (exp == NULL || *exp == NULL)
        return;
    audit_export_t *ex = *exp;
    export_free(&ex->st);
    if (ex->doc.data != NULL)
        sodium_memzero(ex->doc.data, ex->doc.cap);
    free(ex->doc.data);
    sodium_memzero(ex, sizeof *ex); /* the pseudonym and its tag */
    free(ex);
    *exp = NULL;
}

int audit_subject_export(store_t *store, const char *pseudonym, int64_t now_s, char **json_out,
                         char *err, size_t errlen)
{
    if (json_out == NULL) {
        snprintf(err, errlen, "no place for the export");
        return -1;
    }
    *json_out = NULL;
    audit_export_t *ex = audit_export_begin(store, pseudonym, now_s, 0, err, errlen);
    int rc = ex != NULL ? 0 : -1;
    while (rc == 0)
        rc = audit_export_step(ex, store, NULL, err, errlen);
    if (rc == 1)
        *json_out = audit_export_document(ex, NULL);
    audit_export_destroy(&ex);
    return *json_out != NULL ? 0 : -1;
}
