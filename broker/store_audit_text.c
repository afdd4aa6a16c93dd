/*
 * store_audit_text.c — the text of the audit trail's two list columns:
 * delivery_seqs (an acked entry's ascending seqs, "7,9,12") and deliveries
 * (a queued entry's rules and recipients, docs/OPERATIONS.md). Trusts no
 * byte: each list is read once, in place, and anything not canonical
 * parses as no list (0). Knows no SQL; store_audit.c and audit.c call it.
 */
#include <string.h>

#include "store_internal.h"
#include "syntax.h"

/* ------------------------------------------------------------------ seq lists */

size_t store_audit_seqs_parse(const char *text, uint64_t *seqs, size_t max)
{
    size_t n = 0;
    uint64_t last = 0;
    const char *p = text;
    if (p == NULL)
        return 0;
    for (;;) {
        uint64_t value = 0;
        if (*p < '1' || *p > '9') /* no empty item, sign, space or leading zero */
            return 0;
        while (*p >= '0' && *p <= '9') {
            uint64_t digit = (uint64_t)(*p++ - '0');
            if (value > ((uint64_t)INT64_MAX - digit) / 10)
                return 0;
            value = value * 10 + digit;
        }
        if (value <= last || n == STORE_AUDIT_MAX_ACKED_SEQS)
            return 0;
        if (seqs != NULL && n < max)
            seqs[n] = value;
        n++;
        last = value;
        if (*p == '\0')
            return n;
        if (*p++ != ',')
            return 0;
    }
}

size_t store_audit_seqs_run(const uint64_t *seqs, size_t n, size_t i)
{
    size_t end = i + 1;
    while (end < n && seqs[end] == seqs[end - 1] + 1)
        end++;
    return end;
}

/* ------------------------------------------------------------------ deliveries */

/* A canonical decimal in 0..INT64_MAX (no sign, no leading zero) ending at
 * `end`; *p moves past it. Returns 0, or -1. */
static int parse_decimal(const char **p, char end, uint64_t *value)
{
    const char *q = *p;
    uint64_t v = 0;
    if (*q < '0' || *q > '9' || (*q == '0' && q[1] >= '0' && q[1] <= '9'))
        return -1;
    while (*q >= '0' && *q <= '9') {
        uint64_t digit = (uint64_t)(*q++ - '0');
        if (v > ((uint64_t)INT64_MAX - digit) / 10)
            return -1;
        v = v * 10 + digit;
    }
    if (*q != end)
        return -1;
    *p = q + 1;
    *value = v;
    return 0;
}

/* The checks below read each byte once, in place, and stop at the first
 * that does not belong (a NUL included), so that checking a list costs a
 * pass over it. */

static int is_token_byte(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

/* An id token (syntax_is_id_token: [a-z0-9][a-z0-9._-]{0,63}) followed by
 * `end`; *p moves past `end`. */
static int parse_token(const char **p, char end, const char **word, size_t *len)
{
    const char *q = *p;
    if (!((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9')))
        return -1;
    while (is_token_byte(*q))
        q++;
    if (*q != end || (size_t)(q - *p) > SCHAKEL_MAX_ID_LEN)
        return -1;
    *word = *p;
    *len = (size_t)(q - *p);
    *p = q + 1;
    return 0;
}

/* A principal id (syntax_is_principal_id: token "/" token) followed by
 * `end`; *p moves past `end`, *partner_len is the first token's length. */
static int parse_principal(const char **p, char end, const char **word, size_t *len,
                           size_t *partner_len)
{
    const char *q = *p, *name = NULL;
    size_t name_len = 0;
    if (parse_token(&q, '/', word, partner_len) != 0 || parse_token(&q, end, &name, &name_len) != 0)
        return -1;
    *len = (size_t)(q - 1 - *p);
    *p = q;
    return 0;
}

/* 64 lower-case hex digits followed by `end`. */
static int parse_hash(const char **p, char end, const char **hash)
{
    const char *q = *p;
    for (int i = 0; i < 64; i++, q++)
        if (!((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f')))
            return -1;
    if (*q != end)
        return -1;
    *hash = *p;
    *p = q + 1;
    return 0;
}

/* Field names ([a-z_]+ joined by single commas) followed by `end`. */
static int parse_fields(const char **p, char end, const char **fields, size_t *len)
{
    const char *q = *p;
    for (;;) {
        const char *word = q;
        while ((*q >= 'a' && *q <= 'z') || *q == '_')
            q++;
        if (q == word)
            return -1;
        if (*q != ',')
            break;
        q++;
    }
    if (*q != end)
        return -1;
    *fields = *p;
    *len = (size_t)(q - *p);
    *p = q + 1;
    return 0;
}

/* n bytes at s: no NUL, valid UTF-8. ASCII (the usual case) is checked a
 * byte at a time here; from the first byte above 0x7F, syntax_is_utf8
 * checks the rest (it stops at nothing, so the NUL check comes first). */
static int counted_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == 0)
            return 0;
        if (c >= 0x80)
            return strnlen(s + i, n - i) == n - i && syntax_is_utf8((const uint8_t *)s + i, n - i);
    }
    return 1;
}

/* LEN ":" bytes, followed by `end`: valid UTF-8 without NUL. Reads no
 * byte past a NUL: counted_ok stops at one first. */
static int parse_counted(const char **p, char end, const char **text, size_t *len)
{
    uint64_t n = 0;
    if (parse_decimal(p, ':', &n) != 0 || n > SCHAKEL_AUDIT_MAX_TEXT_LEN ||
        !counted_ok(*p, (size_t)n) || (*p)[n] != end)
        return -1;
    *text = *p;
    *len = (size_t)n;
    *p += n + 1;
    return 0;
}

/* One rule line at *p into d (its rule part); *p moves past its LF. */
static int parse_rule_line(const char **p, store_audit_delivery_t *d)
{
    const char *q = *p;
    uint64_t expires = 0;
    if (strncmp(q, "rule ", 5) != 0)
        return -1;
    q += 5;
    if (parse_token(&q, ' ', &d->rule_id, &d->rule_id_len) != 0 ||
        parse_hash(&q, ' ', &d->rule_hash) != 0 || parse_decimal(&q, ' ', &expires) != 0 ||
        parse_fields(&q, ' ', &d->fields, &d->fields_len) != 0 ||
        parse_counted(&q, ' ', &d->purpose, &d->purpose_len) != 0 ||
        parse_counted(&q, '\n', &d->legal_basis, &d->legal_basis_len) != 0)
        return -1;
    d->expires_at = (int64_t)expires;
    *p = q;
    return 0;
}

/* The walk of store_audit_deliveries_parse: with fn NULL it only checks.
 * Returns the number of deliveries, or 0. */
static size_t deliveries_walk(const char *text, store_audit_delivery_fn fn, void *arg)
{
    uint32_t rule_at[STORE_AUDIT_MAX_QUEUED_DELIVERIES + 1];
    size_t n_rules = 0, n = 0, used = 0;
    uint64_t last = 0;
    const char *p = text;
    if (text == NULL ||
        strnlen(text, STORE_AUDIT_MAX_DELIVERIES_TEXT + 1) > STORE_AUDIT_MAX_DELIVERIES_TEXT)
        return 0;
    while (*p == 'r') { /* the rules, each once */
        store_audit_delivery_t d;
        if (n_rules == STORE_AUDIT_MAX_QUEUED_DELIVERIES)
            return 0;
        rule_at[n_rules] = (uint32_t)(p - text);
        if (parse_rule_line(&p, &d) != 0)
            return 0;
        size_t len = (size_t)(p - text) - rule_at[n_rules];
        for (size_t i = 0; i < n_rules; i++)
            if (rule_at[i + 1] - rule_at[i] == len &&
                memcmp(text + rule_at[i], text + rule_at[n_rules], len) == 0)
                return 0;
        rule_at[++n_rules] = (uint32_t)(p - text);
    }
    while (*p != '\0') { /* the deliveries, ascending; rules in order of first use */
        store_audit_delivery_t d;
        uint64_t seq = 0, rule = 0;
        memset(&d, 0, sizeof d);
        if (n == STORE_AUDIT_MAX_QUEUED_DELIVERIES || parse_decimal(&p, ' ', &seq) != 0 ||
            seq <= last || parse_decimal(&p, ' ', &rule) != 0 || rule > used || rule >= n_rules ||
            parse_principal(&p, '\n', &d.recipient, &d.recipient_len, &d.recipient_partner_len) !=
                0)
            return 0;
        used += rule == used;
        last = seq;
        n++;
        if (fn != NULL) {
            const char *r = text + rule_at[rule];
            (void)parse_rule_line(&r, &d);
            d.seq = seq;
            if (fn(&d, arg) != 0)
                return n;
        }
    }
    return n > 0 && used == n_rules ? n : 0;
}

size_t store_audit_deliveries_parse(const char *text, store_audit_delivery_fn fn, void *arg)
{
    size_t n = deliveries_walk(text, NULL, NULL);
    if (n == 0 || fn == NULL)
        return n;
    (void)deliveries_walk(text, fn, arg);
    return n;
}
