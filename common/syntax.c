/*
 * syntax.c — syntax of Schakel's identifiers and codes (see syntax.h).
 *
 * Pure functions over untrusted strings: no allocation, no state, NULL is
 * always invalid. These are the single definition of what a theme, an area
 * code, a postcode or an id looks like; nothing else re-implements them.
 */
#include "syntax.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schakel_limits.h"

const char *const syntax_themes[] = {
    "ondermijning",
    "overlast",
    "woninginbraak",
    "zakkenrollerij",
    "voertuigcriminaliteit",
    "brandveiligheid",
    "woonfraude",
    "zorg",
    "mensenhandel",
    "drugs",
    "jeugdcriminaliteit",
    "radicalisering",
    "huiselijk-geweld",
    "geweld",
    NULL,
};

int syntax_is_theme(const char *theme)
{
    if (theme == NULL)
        return 0;
    for (size_t i = 0; syntax_themes[i] != NULL; i++)
        if (strcmp(theme, syntax_themes[i]) == 0)
            return 1;
    return 0;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_upper_alnum(char c)
{
    return is_digit(c) || (c >= 'A' && c <= 'Z');
}

/* CBS code body after the two-letter prefix: 4 digits (municipality), then
 * `extra` positions of [0-9A-Z] (district, neighbourhood). */
static int cbs_body_ok(const char *body, size_t extra, size_t len)
{
    if (len < 4 || len > 4 + extra)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (i < 4 ? !is_digit(body[i]) : !is_upper_alnum(body[i]))
            return 0;
    }
    return 1;
}

static size_t cbs_extra_for(const char *code)
{
    if (strncmp(code, "GM", 2) == 0)
        return 0;
    if (strncmp(code, "WK", 2) == 0)
        return 2;
    if (strncmp(code, "BU", 2) == 0)
        return 4;
    return (size_t)-1;
}

int syntax_is_area_code(const char *area)
{
    if (area == NULL || strlen(area) < 2)
        return 0;
    size_t extra = cbs_extra_for(area);
    if (extra == (size_t)-1)
        return 0;
    size_t len = strlen(area + 2);
    return len == 4 + extra && cbs_body_ok(area + 2, extra, len);
}

/* A rule's area prefix: a whole code, or a code cut short after the
 * municipality (GM0935, WK0935, BU0935) or after the district (BU093501). */
int syntax_is_area_prefix(const char *prefix)
{
    if (prefix == NULL)
        return 0;
    if (strcmp(prefix, "*") == 0)
        return 1;
    if (strlen(prefix) < 2)
        return 0;
    size_t extra = cbs_extra_for(prefix);
    if (extra == (size_t)-1)
        return 0;
    size_t len = strlen(prefix + 2);
    if (len % 2 != 0)
        return 0;
    return cbs_body_ok(prefix + 2, extra, len);
}

int syntax_is_postcode(const char *postcode)
{
    if (postcode == NULL || strlen(postcode) != 6)
        return 0;
    if (postcode[0] < '1' || postcode[0] > '9')
        return 0;
    for (int i = 1; i < 4; i++)
        if (!is_digit(postcode[i]))
            return 0;
    for (int i = 4; i < 6; i++)
        if (postcode[i] < 'A' || postcode[i] > 'Z')
            return 0;
    /* PostNL never issues SA, SD or SS (historical connotations). */
    const char *letters = postcode + 4;
    return strcmp(letters, "SA") != 0 && strcmp(letters, "SD") != 0 && strcmp(letters, "SS") != 0;
}

static int is_token_char(char c)
{
    return (c >= 'a' && c <= 'z') || is_digit(c) || c == '.' || c == '_' || c == '-';
}

/* Length of the id token at s, stopping at NUL or `stop`; 0 if invalid. */
static size_t token_len(const char *s, char stop)
{
    size_t n = 0;
    if (!((s[0] >= 'a' && s[0] <= 'z') || is_digit(s[0])))
        return 0;
    while (s[n] != '\0' && s[n] != stop) {
        if (!is_token_char(s[n]) || n >= SCHAKEL_MAX_ID_LEN)
            return 0;
        n++;
    }
    return n;
}

int syntax_is_id_token(const char *id)
{
    if (id == NULL)
        return 0;
    size_t n = token_len(id, '\0');
    return n > 0 && id[n] == '\0';
}

int syntax_is_principal_id(const char *id)
{
    if (id == NULL)
        return 0;
    size_t partner = token_len(id, '/');
    if (partner == 0 || id[partner] != '/')
        return 0;
    return syntax_is_id_token(id + partner + 1);
}

int syntax_is_pseudonym(const char *subject)
{
    if (subject == NULL)
        return 0;
    size_t len = strlen(subject);
    if (len < SCHAKEL_MIN_SUBJECT_LEN || len > SCHAKEL_MAX_SUBJECT_LEN)
        return 0;
    int all_digits = 1;
    for (size_t i = 0; i < len; i++) {
        char c = subject[i];
        int ok = is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' ||
                 c == '_' || c == ':' || c == '-';
        if (!ok)
            return 0;
        if (!is_digit(c))
            all_digits = 0;
    }
    /* A string of digits only could be a BSN (or another national number):
     * a pseudonym always carries at least one non-digit. */
    return !all_digits;
}

int syntax_is_case_id(const char *case_id)
{
    if (case_id == NULL || strlen(case_id) != SCHAKEL_CASE_ID_LEN)
        return 0;
    if (case_id[0] != 'C' || case_id[1] != '-')
        return 0;
    for (size_t i = 2; i < SCHAKEL_CASE_ID_LEN; i++)
        if (!is_digit(case_id[i]))
            return 0;
    return 1;
}

/* RFC 6838 section 4.2: restricted-name = restricted-name-first
 * *126restricted-name-chars. Returns the name's length, 0 if invalid. */
static size_t media_name_len(const char *s, char stop)
{
    static const char extra[] = "!#$&^_.+-";
    size_t n = 0;
    if (!(is_digit(s[0]) || (s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return 0;
    while (s[n] != '\0' && s[n] != stop) {
        char c = s[n];
        int ok = is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 strchr(extra, c) != NULL;
        if (!ok || n >= 127)
            return 0;
        n++;
    }
    return n;
}

int syntax_is_media_type(const char *media_type)
{
    if (media_type == NULL)
        return 0;
    size_t type = media_name_len(media_type, '/');
    if (type == 0 || media_type[type] != '/')
        return 0;
    const char *subtype = media_type + type + 1;
    size_t sub = media_name_len(subtype, '\0');
    return sub > 0 && subtype[sub] == '\0';
}

/* 8 bytes, each in 0x01..0x7F: no high bit in the word, and none in the
 * word minus 0x01 in every byte (a zero byte borrows, which sets one).
 * Exact, not a heuristic: a word that fails is checked byte by byte. */
static int word_is_plain_ascii(const uint8_t *bytes)
{
    const uint64_t ones = UINT64_C(0x0101010101010101), highs = UINT64_C(0x8080808080808080);
    uint64_t word;
    memcpy(&word, bytes, sizeof word); /* any alignment; the test is byte-order free */
    return ((word | (word - ones)) & highs) == 0;
}

/* Length of the sequence of UTF-8 that starts at bytes[0] with a lead byte
 * of 0x80 or above, 0 if it is not one (truncated by len, overlong, a
 * surrogate, above U+10FFFF, a lone continuation byte). */
static size_t utf8_sequence_len(const uint8_t *bytes, size_t len)
{
    uint8_t c = bytes[0];
    size_t need;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
        need = 1;
        cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        need = 2;
        cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        need = 3;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len <= need)
        return 0;
    for (size_t k = 1; k <= need; k++) {
        if ((bytes[k] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (bytes[k] & 0x3F);
    }
    static const uint32_t min_for_len[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[need] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return need + 1;
}

/* Cost: about one instruction per byte of plain ASCII (8 bytes per word
 * test), which is what almost every text here is; a byte at a time only
 * around bytes of 0x80 and above (and a NUL, which ends it). */
int syntax_is_utf8(const uint8_t *bytes, size_t len)
{
    if (bytes == NULL && len > 0)
        return 0;
    size_t i = 0;
    while (i < len) {
        while (len - i >= 8 && word_is_plain_ascii(bytes + i))
            i += 8;
        /* The word here holds a NUL or a byte of 0x80 and above, or fewer
         * than 8 bytes are left: single bytes of 0x01..0x7F up to it. */
        while (i < len && (uint8_t)(bytes[i] - 1u) < 0x7F)
            i++;
        if (i == len)
            break;
        if (bytes[i] == 0)
            return 0;
        size_t n = utf8_sequence_len(bytes + i, len - i);
        if (n == 0)
            return 0;
        i += n;
    }
    return 1;
}

size_t syntax_decimal_digits(uint64_t value, char *out)
{
    char reversed[20];
    size_t n = 0;
    do {
        reversed[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    for (size_t i = 0; i < n; i++)
        out[i] = reversed[n - 1 - i];
    return n;
}

void syntax_hex(const uint8_t *bytes, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0x0F];
    }
    out[2 * len] = '\0';
}

static int hex_value(char c)
{
    if (is_digit(c))
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int syntax_decimal(const char *text, long long min, long long max, long long *out)
{
    if (text == NULL || text[0] == '\0')
        return -1;
    long long value = 0;
    for (const char *p = text; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        int digit = *p - '0';
        if (value > (LLONG_MAX - digit) / 10)
            return -1;
        value = value * 10 + digit;
    }
    if (value < min || value > max)
        return -1;
    *out = value;
    return 0;
}

int syntax_unhex(const char *hex, uint8_t *bytes, size_t len)
{
    if (hex == NULL || strlen(hex) != 2 * len)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int hi = hex_value(hex[2 * i]);
        int lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        bytes[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

char *syntax_json_escape_controls(const char *json)
{
    size_t len = strlen(json), grow = 0;
    for (const unsigned char *p = (const unsigned char *)json; *p != '\0'; p++) {
        if (*p == 0x7f)
            grow += 5; /* one byte becomes six: \\u007f */
        else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
            grow += 4; /* two become six */
            p++;
        }
    }
    if (grow > SIZE_MAX - 1 - len)
        return NULL;
    char *out = malloc(len + grow + 1);
    if (out == NULL)
        return NULL;
    size_t used = 0;
    for (const unsigned char *p = (const unsigned char *)json; *p != '\0'; p++) {
        if (*p == 0x7f) {
            memcpy(out + used, "\\u007f", 6);
            used += 6;
        } else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
            snprintf(out + used, 7, "\\u00%02x", p[1]);
            used += 6;
            p++;
        } else {
            out[used++] = (char)*p;
        }
    }
    out[used] = '\0';
    return out;
}
