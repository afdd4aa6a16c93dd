/*
 * admin_json.c — the admin endpoint's JSON writer (see admin_json.h).
 *
 * Trusts nothing in the strings it writes: any byte sequence becomes valid,
 * escaped UTF-8 JSON. Trusts its caller to nest calls properly, but checks
 * it: a key outside an object, a value where a key is due, or closing the
 * wrong container marks the document failed rather than emitting bad JSON.
 */
#include "admin_json.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "syntax.h"

/* has_member[d]: bit 0 set once a value (or key) was written in the
 * container at depth d, bit 1 set when that container is an object. */
static uint32_t json_is_object(const admin_json_t *json, unsigned depth)
{
    return json->has_member[depth] & 2u;
}

void admin_json_init(admin_json_t *json)
{
    memset(json, 0, sizeof *json);
}

void admin_json_free(admin_json_t *json)
{
    free(json->buf);
    admin_json_init(json);
}

static void json_put(admin_json_t *json, const char *bytes, size_t n)
{
    if (json->failed)
        return;
    if (json->cap - json->len <= n) {
        size_t cap = json->cap ? json->cap : 1024;
        while (cap - json->len <= n) {
            if (cap > SIZE_MAX / 2) {
                json->failed = 1;
                return;
            }
            cap *= 2;
        }
        char *grown = realloc(json->buf, cap);
        if (grown == NULL) {
            json->failed = 1;
            return;
        }
        json->buf = grown;
        json->cap = cap;
    }
    memcpy(json->buf + json->len, bytes, n);
    json->len += n;
    json->buf[json->len] = '\0';
}

static void json_put_str(admin_json_t *json, const char *text)
{
    json_put(json, text, strlen(text));
}

/* Before any value: the comma between array elements, and the check that a
 * value inside an object follows its key. */
static void json_before_value(admin_json_t *json)
{
    if (json->depth == 0) {
        if (json->len > 0) /* one top-level value only */
            json->failed = 1;
        return;
    }
    unsigned d = json->depth - 1;
    if (json_is_object(json, d)) {
        if (!json->after_key)
            json->failed = 1;
        json->after_key = 0;
        return;
    }
    if (json->has_member[d] & 1u)
        json_put(json, ",", 1);
    json->has_member[d] |= 1u;
}

static void json_open(admin_json_t *json, char bracket, int is_object)
{
    json_before_value(json);
    if (json->depth >= ADMIN_JSON_MAX_DEPTH) {
        json->failed = 1;
        return;
    }
    json->has_member[json->depth++] = (uint8_t)(is_object ? 2u : 0u);
    json_put(json, &bracket, 1);
}

static void json_close(admin_json_t *json, char bracket, int is_object)
{
    if (json->depth == 0 || json->after_key ||
        (json_is_object(json, json->depth - 1) != 0) != (is_object != 0)) {
        json->failed = 1;
        return;
    }
    json->depth--;
    json_put(json, &bracket, 1);
}

void admin_json_object_begin(admin_json_t *json)
{
    json_open(json, '{', 1);
}

void admin_json_object_end(admin_json_t *json)
{
    json_close(json, '}', 1);
}

void admin_json_array_begin(admin_json_t *json)
{
    json_open(json, '[', 0);
}

void admin_json_array_end(admin_json_t *json)
{
    json_close(json, ']', 0);
}

/* Length of the valid UTF-8 sequence of a non-ASCII character at s, or 0
 * if the bytes there are not one (overlong, surrogate, truncated, stray
 * continuation byte, beyond U+10FFFF). */
static size_t json_utf8_len(const unsigned char *s)
{
    size_t n = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC0 ? 2 : 0;
    for (size_t i = 1; i < n; i++)
        if (s[i] == '\0')
            return 0;
    return n > 0 && syntax_is_utf8(s, n) ? n : 0;
}

static void json_escape(admin_json_t *json, const char *text)
{
    const unsigned char *s = (const unsigned char *)text;
    json_put(json, "\"", 1);
    while (*s != '\0') {
        size_t run = 0;
        /* Printable ASCII other than quote and backslash goes as is. */
        while (s[run] >= 0x20 && s[run] < 0x7F && s[run] != '"' && s[run] != '\\')
            run++;
        if (run > 0) {
            json_put(json, (const char *)s, run);
            s += run;
            continue;
        }
        char esc[8];
        if (*s == '"' || *s == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*s;
            json_put(json, esc, 2);
            s++;
        } else if (*s < 0x20 || *s == 0x7F) {
            snprintf(esc, sizeof esc, "\\u%04x", *s);
            json_put(json, esc, 6);
            s++;
        } else {
            size_t n = json_utf8_len(s);
            if (n == 0) {
                json_put_str(json, "\\ufffd");
                s++;
            } else if (n == 2 && s[0] == 0xC2 && s[1] < 0xA0) {
                /* C1 controls (U+0080..U+009F): escaped, so that a terminal
                 * showing the raw JSON never sees them. */
                snprintf(esc, sizeof esc, "\\u%04x", s[1]);
                json_put(json, esc, 6);
                s += 2;
            } else {
                json_put(json, (const char *)s, n);
                s += n;
            }
        }
    }
    json_put(json, "\"", 1);
}

void admin_json_key(admin_json_t *json, const char *key)
{
    if (json->depth == 0 || !json_is_object(json, json->depth - 1) || json->after_key ||
        key == NULL) {
        json->failed = 1;
        return;
    }
    unsigned d = json->depth - 1;
    if (json->has_member[d] & 1u)
        json_put(json, ",", 1);
    json->has_member[d] |= 1u;
    json_escape(json, key);
    json_put(json, ":", 1);
    json->after_key = 1;
}

void admin_json_string(admin_json_t *json, const char *text)
{
    json_before_value(json);
    if (text == NULL)
        json_put_str(json, "null");
    else
        json_escape(json, text);
}

void admin_json_int(admin_json_t *json, int64_t value)
{
    char digits[24];
    json_before_value(json);
    snprintf(digits, sizeof digits, "%" PRId64, value);
    json_put_str(json, digits);
}

void admin_json_uint(admin_json_t *json, uint64_t value)
{
    char digits[24];
    json_before_value(json);
    snprintf(digits, sizeof digits, "%" PRIu64, value);
    json_put_str(json, digits);
}

void admin_json_bool(admin_json_t *json, int value)
{
    json_before_value(json);
    json_put_str(json, value ? "true" : "false");
}

void admin_json_null(admin_json_t *json)
{
    json_before_value(json);
    json_put_str(json, "null");
}

void admin_json_member_string(admin_json_t *json, const char *key, const char *text)
{
    admin_json_key(json, key);
    admin_json_string(json, text);
}

void admin_json_member_int(admin_json_t *json, const char *key, int64_t value)
{
    admin_json_key(json, key);
    admin_json_int(json, value);
}

void admin_json_member_uint(admin_json_t *json, const char *key, uint64_t value)
{
    admin_json_key(json, key);
    admin_json_uint(json, value);
}

void admin_json_member_bool(admin_json_t *json, const char *key, int value)
{
    admin_json_key(json, key);
    admin_json_bool(json, value);
}

char *admin_json_take(admin_json_t *json, size_t *len)
{
    if (json->failed || json->depth != 0 || json->after_key || json->len == 0) {
        admin_json_free(json);
        return NULL;
    }
    char *out = json->buf;
    if (len != NULL)
        *len = json->len;
    json->buf = NULL;
    admin_json_free(json);
    return out;
}
