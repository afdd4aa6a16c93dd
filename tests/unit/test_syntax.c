/* test_syntax.c — the syntax predicates, table-driven, with rows that must fail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int got = syntax_is_utf8((const uint8_t *)rows[i].bytes, rows[i].len);
        if (got != rows[i].valid)
            fail_msg("utf8 row %zu expected %d", i, rows[i].valid);
    }
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_area_codes), cmocka_unit_test(test_area_prefixes),
        cmocka_unit_test(test_postcodes),  cmocka_unit_test(test_themes),
        cmocka_unit_test(test_ids),        cmocka_unit_test(test_pseudonyms),
        cmocka_unit_test(test_utf8),       cmocka_unit_test(test_hex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
