/*
 * store_mailbox_row.c — a mailbox row's clear columns and its seal: the
 * rule lines (written, and parsed from untrusted bytes with every length
 * checked) and the associated data that binds the row's columns to its
 * sealed body (store_mailbox_internal.h). Pure functions of their input
 * but for memory: -1 for damage, -2 when memory runs out, as each says.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "schakel_limits.h"
#include "store_mailbox_internal.h"

/* ------------------------------------------------------------------ the row's clear columns */

/* The rule lines (the rules column): per slot five netstrings, "<len>:<bytes>,"
 * each: expires_at in decimal, rule id, rule hash, purpose, legal basis.
 * Purpose and legal basis may hold any text, newlines included: a length
 * says where each ends. TEXT, valid UTF-8 as its fields are. */
#define RULE_FIELDS 5

/* The decimal digits of value into out (at least 20 bytes, no NUL); how
 * many. By hand: snprintf cost more than the rest of a row's encoding. */
static size_t decimal_put(char *out, uint64_t value)
{
    char digits[20];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value > 0);
    for (size_t i = 0; i < n; i++)
        out[i] = digits[n - 1 - i];
    return n;
}

/* "<len>:<text>," at out + *used; cap must leave room (the caller counts
 * 24 bytes besides the text). */
static void netstring_put(char *out, size_t *used, const char *text, size_t len)
{
    *used += decimal_put(out + *used, len);
    out[(*used)++] = ':';
    memcpy(out + *used, text, len);
    *used += len;
    out[(*used)++] = ',';
}

/* The rule lines of rules[0 .. n_rules), malloc'd into *text (its length
 * in *len, NUL-terminated). -1 when memory runs out. */
int store_mailbox_rules_encode(const store_mailbox_rule_t *rules, size_t n_rules, char **text,
                               size_t *len)
{
    size_t cap = 1;
    for (size_t i = 0; i < n_rules; i++)
        cap += 5 * 24 + 24 + strlen(rules[i].rule_id) + strlen(rules[i].rule_hash) +
               strlen(rules[i].purpose) + strlen(rules[i].legal_basis);
    char *out = malloc(cap);
    if (out == NULL)
        return -1;
    size_t used = 0;
    for (size_t i = 0; i < n_rules; i++) {
        char expiry[24];
        int64_t e = rules[i].expires_at;
        size_t w = 0;
        if (e < 0)
            expiry[w++] = '-';
        w += decimal_put(expiry + w, e < 0 ? 0 - (uint64_t)e : (uint64_t)e);
        const char *fields[RULE_FIELDS] = {expiry, rules[i].rule_id, rules[i].rule_hash,
                                           rules[i].purpose, rules[i].legal_basis};
        for (int f = 0; f < RULE_FIELDS; f++)
            netstring_put(out, &used, fields[f], f == 0 ? w : strlen(fields[f]));
    }
    out[used] = '\0';
    *text = out;
    *len = used;
    return 0;
}

void store_mailbox_rules_free(mailbox_rules_t *r)
{
    free(r->buf);
    free(r->slots);
    *r = (mailbox_rules_t){NULL, NULL, 0, 0};
}

/* Room for more slots, up to max. */
static int slots_grow(mailbox_rules_t *r, size_t max)
{
    size_t cap = r->cap_slots == 0 ? 4 : 2 * r->cap_slots;
    cap = cap < max ? cap : max;
    mailbox_rule_slot_t *grown = realloc(r->slots, cap * sizeof *grown);
    if (grown == NULL)
        return -1;
    r->slots = grown;
    r->cap_slots = cap;
    return 0;
}

/* The netstring at *pos of buf (len bytes): its field's start, NUL
 * terminated in place. NULL when it is not one, or holds a NUL. */
static char *netstring_take(char *buf, size_t len, size_t *pos)
{
    size_t p = *pos, field_len = 0, digits = 0;
    while (p < len && buf[p] >= '0' && buf[p] <= '9' && digits < 10) {
        field_len = field_len * 10 + (size_t)(buf[p] - '0');
        p++;
        digits++;
    }
    if (digits == 0 || p >= len || buf[p] != ':' || (digits > 1 && buf[*pos] == '0'))
        return NULL;
    p++;
    if (field_len >= len - p || buf[p + field_len] != ',' || memchr(buf + p, '\0', field_len))
        return NULL;
    char *field = buf + p;
    field[field_len] = '\0';
    *pos = p + field_len + 1;
    return field;
}

/* A decimal int64 that is the whole of text. */
static int int64_parse(const char *text, int64_t *value)
{
    const char *p = text;
    int negative = *p == '-';
    if (negative)
        p++;
    if (*p == '\0' || (*p == '0' && p[1] != '\0'))
        return -1;
    uint64_t v = 0, limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || v > (limit - (uint64_t)(*p - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *value = negative ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

/* Parse len bytes of rule lines into *out: 0; -1 when they are not rule
 * lines as store_mailbox_rules_encode writes them (damage) or hold more than max_slots;
 * -2 when memory runs out. */
int store_mailbox_rules_parse(const char *text, size_t len, size_t max_slots, mailbox_rules_t *out)
{
    *out = (mailbox_rules_t){NULL, NULL, 0, 0};
    if (text == NULL || len == 0)
        return -1;
    if ((out->buf = malloc(len + 1)) == NULL)
        return -2;
    memcpy(out->buf, text, len);
    out->buf[len] = '\0';
    size_t pos = 0;
    while (pos < len) {
        char *fields[RULE_FIELDS];
        for (int f = 0; f < RULE_FIELDS; f++)
            if ((fields[f] = netstring_take(out->buf, len, &pos)) == NULL) {
                store_mailbox_rules_free(out);
                return -1;
            }
        mailbox_rule_slot_t slot = {fields[1], fields[2], fields[3], fields[4], 0};
        if (out->n_slots >= max_slots || int64_parse(fields[0], &slot.expires_at) != 0) {
            store_mailbox_rules_free(out);
            return -1;
        }
        if (out->n_slots == out->cap_slots && slots_grow(out, max_slots) != 0) {
            store_mailbox_rules_free(out);
            return -2;
        }
        out->slots[out->n_slots++] = slot;
    }
    return 0;
}

/* ------------------------------------------------------------------ the seal */

/* Associated data of a row's sealed body: a tag of its own for each kind
 * (masks, or a case's body), so neither opens as the other nor as any
 * delivery's; first_seq and n (which seqs), for a case whether it is an
 * event and its case id; the digest of everything else the push sends or
 * decides by (row_digest); the recipient last. */
static const char ad_row_masks_tag[] = "schakel-store-mailbox-masks-v1";
static const char ad_row_case_tag[] = "schakel-store-mailbox-case-v1";
#define ROW_DIGEST_BYTES 32
_Static_assert(STORE_SEAL_AD_MAX >= sizeof ad_row_case_tag + 8 + 4 + 1 + SCHAKEL_CASE_ID_LEN +
                                        ROW_DIGEST_BYTES + SCHAKEL_MAX_PRINCIPAL_LEN,
               "store_seal_ad_t holds a mailbox row's associated data");

static void digest_text(crypto_generichash_state *state, const void *bytes, size_t len)
{
    uint8_t prefix[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                         (uint8_t)len};
    crypto_generichash_update(state, prefix, sizeof prefix);
    crypto_generichash_update(state, bytes, len);
}

static void digest_int(crypto_generichash_state *state, uint64_t value)
{
    uint8_t bytes[8];
    for (int i = 0; i < 8; i++)
        bytes[i] = (uint8_t)(value >> (8 * (7 - i)));
    crypto_generichash_update(state, bytes, sizeof bytes);
}

int store_mailbox_row_ad(store_seal_ad_t *ad, const mailbox_row_clear_t *c)
{
    size_t recipient_len = strlen(c->recipient);
    if (recipient_len > SCHAKEL_MAX_PRINCIPAL_LEN ||
        (c->case_id != NULL && strlen(c->case_id) != SCHAKEL_CASE_ID_LEN) ||
        c->rules_len > UINT32_MAX || strlen(c->sender) > UINT32_MAX ||
        strlen(c->sender_partner) > UINT32_MAX)
        return -1;
    uint8_t digest[ROW_DIGEST_BYTES];
    crypto_generichash_state state;
    crypto_generichash_init(&state, NULL, 0, sizeof digest);
    digest_int(&state, (uint64_t)c->publish_id);
    digest_int(&state, (uint64_t)c->first_item_seq);
    digest_text(&state, c->sender, strlen(c->sender));
    digest_text(&state, c->sender_partner, strlen(c->sender_partner));
    crypto_generichash_update(&state, c->message_id, STORE_MESSAGE_ID_BYTES);
    digest_int(&state, (uint64_t)c->accepted_at);
    digest_text(&state, c->rules, c->rules_len);
    digest_text(&state, c->items, 4 * (size_t)c->n);
    crypto_generichash_final(&state, digest, sizeof digest);

    const char *tag = c->case_id == NULL ? ad_row_masks_tag : ad_row_case_tag;
    uint8_t *p = ad->bytes;
    memcpy(p, tag, strlen(tag) + 1);
    p += strlen(tag) + 1;
    for (int i = 0; i < 8; i++)
        *p++ = (uint8_t)((uint64_t)c->first_seq >> (8 * (7 - i)));
    for (int i = 0; i < 4; i++)
        *p++ = (uint8_t)(c->n >> (8 * (3 - i)));
    if (c->case_id != NULL) {
        *p++ = c->is_case_event ? 1 : 0;
        memcpy(p, c->case_id, SCHAKEL_CASE_ID_LEN);
        p += SCHAKEL_CASE_ID_LEN;
    }
    memcpy(p, digest, sizeof digest);
    p += sizeof digest;
    memcpy(p, c->recipient, recipient_len);
    p += recipient_len;
    ad->len = (size_t)(p - ad->bytes);
    return 0;
}
