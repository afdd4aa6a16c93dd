/* test_syntax.c — the syntax predicates, table-driven, with rows that must fail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "syntax.h"

typedef struct row {
    const char *input;
    int valid;
} row_t;

static void check_rows(int (*pred)(const char *), const row_t *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int got = pred(rows[i].input) ? 1 : 0;
        if (got != rows[i].valid)
            fail_msg("row %zu: \"%s\" expected %s", i, rows[i].input ? rows[i].input : "(null)",
                     rows[i].valid ? "valid" : "invalid");
    }
}

static void test_area_codes(void **state)
{
    (void)state;
    static const row_t rows[] = {
        {"GM0935", 1},     {"WK093501", 1},    {"BU09350101", 1},
        {"BU0363AF09", 1}, {"WK0363AF", 1},    {"GM093", 0},
        {"GM09350", 0},    {"gm0935", 0},      {"BU093501", 0},
        {"BU0935010", 0},  {"BU093501011", 0}, {"BU09A50101", 0},
        {"WK0935a1", 0},   {"XX0935", 0},      {"", 0},
        {NULL, 0},         {"GM0935 ", 0},     {"BU0935010\n", 0},
    };
    check_rows(syntax_is_area_code, rows, sizeof rows / sizeof rows[0]);
}

static void test_area_prefixes(void **state)
{
    (void)state;
    static const row_t rows[] = {
        {"*", 1},        {"GM0935", 1},     {"WK0935", 1},  {"WK093501", 1}, {"BU0935", 1},
        {"BU093501", 1}, {"BU09350101", 1}, {"BU09350", 0}, {"GM09", 0},     {"WK09350101", 0},
        {"**", 0},       {"", 0},           {NULL, 0},
    };
    check_rows(syntax_is_area_prefix, rows, sizeof rows / sizeof rows[0]);
}

static void test_postcodes(void **state)
{
    (void)state;
    static const row_t rows[] = {
        {"6211AB", 1}, {"1012JS", 1}, {"9999ZZ", 1},  {"0123AB", 0}, {"1234SA", 0},
        {"1234SD", 0}, {"1234SS", 0}, {"1234 AB", 0}, {"1234ab", 0}, {"123AB", 0},
        {"12345A", 0}, {"", 0},       {NULL, 0},
    };
    check_rows(syntax_is_postcode, rows, sizeof rows / sizeof rows[0]);
}

static void test_themes(void **state)
{
    (void)state;
    static const row_t rows[] = {
        {"ondermijning", 1}, {"brandveiligheid", 1}, {"woninginbraak", 1}, {"zorg", 1},
        {"Ondermijning", 0}, {"ondermijning ", 0},   {"terrorisme", 0},    {"", 0},
        {NULL, 0},
    };
    check_rows(syntax_is_theme, rows, sizeof rows / sizeof rows[0]);
}

static void test_ids(void **state)
{
    (void)state;
    static const row_t tokens[] = {
        {"gemeente", 1},
        {"woco-maasoever", 1},
        {"a", 1},
        {"9", 1},
        {"x.y_z-1", 1},
        {"-x", 0},
        {"Gemeente", 0},
        {"a b", 0},
        {"", 0},
        {"a/b", 0},
        {NULL, 0},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0}, /* 65 */
    };
    check_rows(syntax_is_id_token, tokens, sizeof tokens / sizeof tokens[0]);
    static const row_t principals[] = {
        {"politie/bvh-koppeling", 1},
        {"om/parket", 1},
        {"politie", 0},
        {"/x", 0},
        {"politie/", 0},
        {"a/b/c", 0},
        {"Politie/x", 0},
        {NULL, 0},
    };
    check_rows(syntax_is_principal_id, principals, sizeof principals / sizeof principals[0]);
}

static void test_pseudonyms(void **state)
{
    (void)state;
    static const row_t rows[] = {
        {"PSN-7f3a9c21", 1}, {"ps:abcdefgh", 1},   {"123456782", 0}, {"12345678", 0},
        {"short", 0},        {"has space 123", 0}, {"", 0},          {NULL, 0},
    };
    check_rows(syntax_is_pseudonym, rows, sizeof rows / sizeof rows[0]);
}

typedef struct utf8_row {
    const char *bytes;
    size_t len;
    int valid;
} utf8_row_t;

static void check_utf8_rows(const utf8_row_t *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int got = syntax_is_utf8((const uint8_t *)rows[i].bytes, rows[i].len);
        if (got != rows[i].valid)
            fail_msg("utf8 row %zu expected %d", i, rows[i].valid);
    }
}

static void test_utf8(void **state)
{
    (void)state;
    static const utf8_row_t rows[] = {
        {"plain", 5, 1},
        {"caf\xc3\xa9", 5, 1},
        {"\xe2\x82\xac", 3, 1},     /* euro sign */
        {"\xf0\x9f\x98\x80", 4, 1}, /* emoji */
        {"a\0b", 3, 0},             /* embedded NUL */
        {"\xc3", 1, 0},             /* truncated */
        {"\xc0\xaf", 2, 0},         /* overlong */
        {"\xed\xa0\x80", 3, 0},     /* surrogate */
        {"\xf4\x90\x80\x80", 4, 0}, /* above U+10FFFF */
        {"\xff", 1, 0},
        {"\x80", 1, 0}, /* lone continuation */
        {"", 0, 1},
        {"\x7f", 1, 1},
        {"\xc2\x80", 2, 1},                        /* U+0080, the smallest of two bytes */
        {"\xdf\xbf", 2, 1},                        /* U+07FF */
        {"\xe0\xa0\x80", 3, 1},                    /* U+0800 */
        {"\xef\xbf\xbf", 3, 1},                    /* U+FFFF */
        {"\xf0\x90\x80\x80", 4, 1},                /* U+10000 */
        {"\xf4\x8f\xbf\xbf", 4, 1},                /* U+10FFFF, the largest */
        {"\xed\x9f\xbf", 3, 1},                    /* U+D7FF, just below the surrogates */
        {"\xee\x80\x80", 3, 1},                    /* U+E000, just above them */
        {"\xc1\xbf", 2, 0},                        /* overlong U+007F */
        {"\xe0\x80\xaf", 3, 0},                    /* overlong '/' in three bytes */
        {"\xe0\x9f\xbf", 3, 0},                    /* overlong U+07FF */
        {"\xf0\x80\x80\xaf", 4, 0},                /* overlong '/' in four bytes */
        {"\xf0\x8f\xbf\xbf", 4, 0},                /* overlong U+FFFF */
        {"\xed\xbf\xbf", 3, 0},                    /* U+DFFF, the last surrogate */
        {"\xf5\x80\x80\x80", 4, 0},                /* lead byte beyond U+10FFFF */
        {"\xf8\x88\x80\x80\x80", 5, 0},            /* five bytes */
        {"\xc3\x28", 2, 0},                        /* continuation missing */
        {"\xe2\x82\x28", 3, 0},                    /* third byte not a continuation */
        {"abcdefgh\xe2\x82", 10, 0},               /* truncated after a full word */
        {"abcdefgh\xf0\x9f\x98", 11, 0},           /* truncated emoji at the end */
        {"abcdefghijklmno\xc3", 16, 0},            /* last byte of the second word */
        {"abcdefghijklmnop\xc3\xa9", 18, 1},       /* non-ASCII right after two words */
        {"abcdefgh\xc3\xa9ijklmnop", 18, 1},       /* non-ASCII between runs */
        {"abcdefg\xc3\xa9hijklmnop", 18, 1},       /* a sequence across a word boundary */
        {"abcdefg\xf0\x9f\x98\x80hijklmn", 18, 1}, /* four bytes across a boundary */
        {"abcdefgh\x80ijklmnop", 17, 0},           /* lone continuation after a word */
        {"abcdefgh\xff", 9, 0},
        {"abcdefghijklmnop\x7f", 17, 1},
    };
    check_utf8_rows(rows, sizeof rows / sizeof rows[0]);
}

/* A NUL anywhere, in runs that the word test reads 8 bytes at a time. */
static void test_utf8_nul_everywhere(void **state)
{
    (void)state;
    uint8_t text[40];
    for (size_t len = 1; len <= sizeof text; len++) {
        for (size_t at = 0; at < len; at++) {
            memset(text, 'a', sizeof text);
            assert_true(syntax_is_utf8(text, len));
            text[at] = 0;
            if (syntax_is_utf8(text, len))
                fail_msg("a NUL at %zu of %zu bytes was accepted", at, len);
            text[at] = 0x80; /* a lone continuation byte at the same place */
            if (syntax_is_utf8(text, len))
                fail_msg("0x80 at %zu of %zu bytes was accepted", at, len);
        }
    }
}

/* The reference: RFC 3629's table of well-formed sequences, byte ranges
 * per position, written as plainly as it reads there. */
static int reference_is_utf8(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        uint8_t lo = 0x80, hi = 0xBF; /* range of the second byte */
        size_t n;
        if (c >= 0x01 && c <= 0x7F)
            n = 1;
        else if (c >= 0xC2 && c <= 0xDF)
            n = 2;
        else if (c == 0xE0)
            n = 3, lo = 0xA0;
        else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
            n = 3;
        else if (c == 0xED)
            n = 3, hi = 0x9F;
        else if (c == 0xF0)
            n = 4, lo = 0x90;
        else if (c >= 0xF1 && c <= 0xF3)
            n = 4;
        else if (c == 0xF4)
            n = 4, hi = 0x8F;
        else
            return 0;
        if (len - i < n)
            return 0;
        for (size_t k = 1; k < n; k++) {
            uint8_t b = s[i + k];
            if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF))
                return 0;
        }
        i += n;
    }
    return 1;
}

static void differ_check(const uint8_t *s, size_t len, const char *what, uint64_t n)
{
    int want = reference_is_utf8(s, len), got = syntax_is_utf8(s, len);
    if (got != want)
        fail_msg("%s %llu (%zu bytes): syntax_is_utf8 %d, the reference %d", what,
                 (unsigned long long)n, len, got, want);
}

/* Every 1- and 2-byte input, and every 2-byte input placed at each
 * position of an ASCII run (so that the word test meets it at every lane). */
static void test_utf8_against_reference_short(void **state)
{
    (void)state;
    uint8_t text[24];
    for (unsigned v = 0; v < 65536; v++) {
        text[0] = (uint8_t)(v >> 8);
        text[1] = (uint8_t)v;
        differ_check(text, 1, "one byte", v);
        differ_check(text, 2, "two bytes", v);
        for (size_t at = 0; at + 2 <= sizeof text; at += 3) {
            memset(text, 'x', sizeof text);
            text[at] = (uint8_t)(v >> 8);
            text[at + 1] = (uint8_t)v;
            differ_check(text, sizeof text, "two bytes in a run", v);
            differ_check(text, at + 2, "two bytes at the end of a run", v);
        }
    }
    /* Lead bytes of three and four bytes with every second byte and the
     * edges of the continuation range after it. */
    static const uint8_t edges[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90,
                                    0x9F, 0xA0, 0xBF, 0xC0, 0xFF};
    uint64_t n = 0;
    for (unsigned lead = 0xC0; lead <= 0xFF; lead++)
        for (unsigned second = 0; second < 256; second++)
            for (size_t a = 0; a < sizeof edges; a++)
                for (size_t b = 0; b < sizeof edges; b++, n++) {
                    uint8_t seq[4] = {(uint8_t)lead, (uint8_t)second, edges[a], edges[b]};
                    for (size_t len = 1; len <= 4; len++)
                        differ_check(seq, len, "sequence", n);
                }
}

/* xorshift64*: reproducible, and nothing here needs better. */
static uint64_t next_random(uint64_t *x)
{
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    return *x * UINT64_C(2685821657736338717);
}

/* Random texts built from pieces that matter: ASCII runs, valid
 * sequences of every length, broken ones, NULs, random bytes; each also
 * checked at every start offset within a word. */
static void test_utf8_against_reference_random(void **state)
{
    (void)state;
    static const char *const pieces[] = {
        "a",
        "abcdefg",
        "abcdefghijklmnop",
        "\xc3\xa9",
        "\xe2\x82\xac",
        "\xf0\x9f\x98\x80",
        "\xf4\x8f\xbf\xbf",
        "\xed\x9f\xbf",
        "\xc0\xaf",
        "\xed\xa0\x80",
        "\xf4\x90\x80\x80",
        "\xe0\x9f\xbf",
        "\xc3",
        "\xe2\x82",
        "\x80",
        "\xbf",
        "\xfe",
        "\x7f",
        " \t\r\n",
    };
    const size_t n_pieces = sizeof pieces / sizeof pieces[0];
    uint64_t x = UINT64_C(0x9e3779b97f4a7c15);
    uint8_t text[8 + 96];
    size_t valid = 0, invalid = 0;
    for (uint64_t round = 0; round < 200000; round++) {
        size_t len = 0, target = (size_t)(next_random(&x) % 80);
        while (len < target) {
            uint64_t r = next_random(&x);
            if (r % 16 == 0) {
                text[8 + len++] = (uint8_t)(r >> 8); /* any byte, NUL included */
                continue;
            }
            const char *piece = pieces[(r >> 4) % n_pieces];
            size_t piece_len = strlen(piece);
            if (len + piece_len > sizeof text - 8)
                break;
            memcpy(text + 8 + len, piece, piece_len);
            len += piece_len;
        }
        size_t offset = (size_t)(round % 8);
        memmove(text + offset, text + 8, len);
        differ_check(text + offset, len, "random text", round);
        if (reference_is_utf8(text + offset, len))
            valid++;
        else
            invalid++;
    }
    /* Both outcomes must have been tried often, or the test tells little. */
    assert_true(valid > 10000);
    assert_true(invalid > 10000);
}

static void test_hex(void **state)
{
    (void)state;
    uint8_t bytes[4] = {0x00, 0xab, 0x10, 0xff}, back[4];
    char hex[9];
    syntax_hex(bytes, 4, hex);
    assert_string_equal(hex, "00ab10ff");
    assert_int_equal(syntax_unhex(hex, back, 4), 0);
    assert_memory_equal(bytes, back, 4);
    assert_int_equal(syntax_unhex("00ab10f", back, 4), -1);
    assert_int_equal(syntax_unhex("00ab10fg", back, 4), -1);
    assert_int_equal(syntax_unhex(NULL, back, 4), -1);
}

/* Digits only, no NUL written past them, the widest value in 20. */
static void test_decimal_digits(void **state)
{
    (void)state;
    static const struct {
        uint64_t value;
        const char *digits;
    } rows[] = {
        {0, "0"}, {7, "7"}, {10, "10"}, {4096, "4096"}, {UINT64_MAX, "18446744073709551615"}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char out[21];
        memset(out, '#', sizeof out);
        size_t n = syntax_decimal_digits(rows[i].value, out);
        assert_int_equal(n, strlen(rows[i].digits));
        assert_memory_equal(out, rows[i].digits, n);
        assert_int_equal(out[n], '#');
    }
}

/* JSON text for a terminal: DEL and C1 controls written as escapes, the
 * rest (other UTF-8, escapes already there) unchanged. */
/* Decimal digits only, in range; *out untouched by a refusal. */
static void test_decimal(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        long long min, max;
        int valid;
        long long value;
    } rows[] = {
        {"2", 1, 10, 1, 2},
        {"1", 1, 10, 1, 1},
        {"10", 1, 10, 1, 10},
        {"007", 1, 10, 1, 7},
        {"0", 0, 10, 1, 0},
        {"9223372036854775807", 1, INT64_MAX, 1, INT64_MAX},
        {"0", 1, 10, 0, 0},
        {"11", 1, 10, 0, 0},
        {"9223372036854775808", 1, INT64_MAX, 0, 0},
        {"99999999999999999999", 1, INT64_MAX, 0, 0},
        {" 2", 1, 10, 0, 0},
        {"2 ", 1, 10, 0, 0},
        {"\t2", 1, 10, 0, 0},
        {"2\n", 1, 10, 0, 0},
        {"+2", 1, 10, 0, 0},
        {"-2", 0, 10, 0, 0},
        {"-0", 0, 10, 0, 0},
        {"+0", 0, 10, 0, 0},
        {"0x2", 0, 10, 0, 0},
        {"1e1", 0, 100, 0, 0},
        {"2.0", 0, 10, 0, 0},
        {"", 0, 10, 0, 0},
        {NULL, 0, 10, 0, 0},
        {"\xd9\xa2", 0, 10, 0, 0}, /* ARABIC-INDIC DIGIT TWO */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        long long value = -42;
        int rc = syntax_decimal(rows[i].text, rows[i].min, rows[i].max, &value);
        if (rc != (rows[i].valid ? 0 : -1) || value != (rows[i].valid ? rows[i].value : -42))
            fail_msg("row %zu: \"%s\" gave %d, %lld", i, rows[i].text ? rows[i].text : "(null)", rc,
                     value);
    }
}

static void test_json_escape_controls(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } rows[] = {
        {"{\"a\":\"plain\"}", "{\"a\":\"plain\"}"},
        {"\"del \x7f\"", "\"del \\u007f\""},
        {"\"csi \xc2\x9b"
         "2J\"",
         "\"csi \\u009b2J\""},
        {"\"nel \xc2\x85 pad \xc2\x80\"", "\"nel \\u0085 pad \\u0080\""},
        {"\"caf\xc3\xa9 \xc2\xa0 \xe2\x82\xac\"", "\"caf\xc3\xa9 \xc2\xa0 \xe2\x82\xac\""},
        {"\"already \\u001b\"", "\"already \\u001b\""},
        {"", ""},
        {"\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f", /* each byte six: the largest growth */
         "\\u007f\\u007f\\u007f\\u007f\\u007f\\u007f\\u007f\\u007f"},
        {"\x7f\xc2\x9b\x7f\xc2\x85\x7f", "\\u007f\\u009b\\u007f\\u0085\\u007f"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char *out = syntax_json_escape_controls(rows[i].in);
        assert_non_null(out);
        if (strcmp(out, rows[i].out) != 0)
            fail_msg("row %zu: [%s], expected [%s]", i, out, rows[i].out);
        free(out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_area_codes),
        cmocka_unit_test(test_area_prefixes),
        cmocka_unit_test(test_postcodes),
        cmocka_unit_test(test_themes),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_pseudonyms),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_utf8_nul_everywhere),
        cmocka_unit_test(test_utf8_against_reference_short),
        cmocka_unit_test(test_utf8_against_reference_random),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_decimal),
        cmocka_unit_test(test_decimal_digits),
        cmocka_unit_test(test_json_escape_controls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
