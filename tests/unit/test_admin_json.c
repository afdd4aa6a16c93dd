/*
 * test_admin_json.c — the admin endpoint's JSON writer: string escaping
 * (quotes, controls, C1, invalid UTF-8), numbers, nesting, and misuse that
 * must lose the document rather than emit bad JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "admin_json.h"
#include "syntax.h"

/* {"s": TEXT} as written. */
static char *string_doc(const char *text)
{
    admin_json_t j;
    admin_json_init(&j);
    admin_json_object_begin(&j);
    admin_json_member_string(&j, "s", text);
    admin_json_object_end(&j);
    return admin_json_take(&j, NULL);
}

static void test_strings_are_escaped(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *out;
    } rows[] = {
        {"plain", "{\"s\":\"plain\"}"},
        {"", "{\"s\":\"\"}"},
        {"say \"hi\"", "{\"s\":\"say \\\"hi\\\"\"}"},
        {"back\\slash", "{\"s\":\"back\\\\slash\"}"},
        {"line\nbreak\ttab\r", "{\"s\":\"line\\u000abreak\\u0009tab\\u000d\"}"},
        {"esc\x1b[2J", "{\"s\":\"esc\\u001b[2J\"}"},
        {"del\x7f", "{\"s\":\"del\\u007f\"}"},
        {"C1 \xc2\x9b here", "{\"s\":\"C1 \\u009b here\"}"},
        {"\xc2\xa0nbsp", "{\"s\":\"\xc2\xa0nbsp\"}"},
        {"één € \xf0\x9f\x98\x80", "{\"s\":\"één € \xf0\x9f\x98\x80\"}"},
        {"bad \xff byte", "{\"s\":\"bad \\ufffd byte\"}"},
        {"stray \x80", "{\"s\":\"stray \\ufffd\"}"},
        {"overlong \xc0\xaf", "{\"s\":\"overlong \\ufffd\\ufffd\"}"},
        {"surrogate \xed\xa0\x80", "{\"s\":\"surrogate \\ufffd\\ufffd\\ufffd\"}"},
        {"cut \xe2\x82", "{\"s\":\"cut \\ufffd\\ufffd\"}"},
        {"/slash/", "{\"s\":\"/slash/\"}"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char *doc = string_doc(rows[i].in);
        assert_non_null(doc);
        if (strcmp(doc, rows[i].out) != 0)
            fail_msg("row %zu: got %s, expected %s", i, doc, rows[i].out);
        assert_true(syntax_is_utf8((const uint8_t *)doc, strlen(doc)));
        free(doc);
    }
}

static void test_values_and_nesting(void **state)
{
    (void)state;
    admin_json_t j;
    admin_json_init(&j);
    admin_json_object_begin(&j);
    admin_json_member_int(&j, "neg", INT64_MIN);
    admin_json_member_uint(&j, "big", UINT64_MAX);
    admin_json_member_bool(&j, "yes", 1);
    admin_json_member_bool(&j, "no", 0);
    admin_json_key(&j, "none");
    admin_json_null(&j);
    admin_json_member_string(&j, "null_string", NULL);
    admin_json_key(&j, "list");
    admin_json_array_begin(&j);
    admin_json_int(&j, 1);
    admin_json_string(&j, "two");
    admin_json_object_begin(&j);
    admin_json_object_end(&j);
    admin_json_array_begin(&j);
    admin_json_array_end(&j);
    admin_json_array_end(&j);
    admin_json_object_end(&j);
    size_t len = 0;
    char *doc = admin_json_take(&j, &len);
    assert_non_null(doc);
    assert_string_equal(doc, "{\"neg\":-9223372036854775808,\"big\":18446744073709551615,"
                             "\"yes\":true,\"no\":false,\"none\":null,\"null_string\":null,"
                             "\"list\":[1,\"two\",{},[]]}");
    assert_int_equal(len, strlen(doc));
    free(doc);
}

/* Each row misuses the writer; the document must be lost (NULL). */
static void misuse_unclosed(admin_json_t *j)
{
    admin_json_object_begin(j);
}
static void misuse_key_in_array(admin_json_t *j)
{
    admin_json_array_begin(j);
    admin_json_key(j, "k");
    admin_json_array_end(j);
}
static void misuse_value_without_key(admin_json_t *j)
{
    admin_json_object_begin(j);
    admin_json_int(j, 1);
    admin_json_object_end(j);
}
static void misuse_key_without_value(admin_json_t *j)
{
    admin_json_object_begin(j);
    admin_json_key(j, "k");
    admin_json_object_end(j);
}
static void misuse_wrong_close(admin_json_t *j)
{
    admin_json_object_begin(j);
    admin_json_array_end(j);
}
static void misuse_two_documents(admin_json_t *j)
{
    admin_json_object_begin(j);
    admin_json_object_end(j);
    admin_json_object_begin(j);
    admin_json_object_end(j);
}
static void misuse_too_deep(admin_json_t *j)
{
    for (int i = 0; i <= ADMIN_JSON_MAX_DEPTH; i++)
        admin_json_array_begin(j);
    for (int i = 0; i <= ADMIN_JSON_MAX_DEPTH; i++)
        admin_json_array_end(j);
}
static void misuse_nothing(admin_json_t *j)
{
    (void)j;
}
static void misuse_null_key(admin_json_t *j)
{
    admin_json_object_begin(j);
    admin_json_key(j, NULL);
    admin_json_null(j);
    admin_json_object_end(j);
}

static void test_misuse_loses_the_document(void **state)
{
    (void)state;
    void (*const rows[])(admin_json_t *) = {
        misuse_unclosed,          misuse_key_in_array, misuse_value_without_key,
        misuse_key_without_value, misuse_wrong_close,  misuse_two_documents,
        misuse_too_deep,          misuse_nothing,      misuse_null_key,
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        admin_json_t j;
        admin_json_init(&j);
        rows[i](&j);
        char *doc = admin_json_take(&j, NULL);
        if (doc != NULL)
            fail_msg("row %zu: misuse gave a document: %s", i, doc);
        assert_null(j.buf);
    }
    /* The deepest nesting allowed is fine. */
    admin_json_t j;
    admin_json_init(&j);
    for (int i = 0; i < ADMIN_JSON_MAX_DEPTH; i++)
        admin_json_array_begin(&j);
    for (int i = 0; i < ADMIN_JSON_MAX_DEPTH; i++)
        admin_json_array_end(&j);
    char *doc = admin_json_take(&j, NULL);
    assert_non_null(doc);
    assert_int_equal(strlen(doc), 2 * ADMIN_JSON_MAX_DEPTH);
    free(doc);
}

/* A long document grows the buffer many times and stays exact. */
static void test_long_document(void **state)
{
    (void)state;
    admin_json_t j;
    admin_json_init(&j);
    admin_json_array_begin(&j);
    for (int i = 0; i < 100000; i++)
        admin_json_string(&j, "abcdefgh");
    admin_json_array_end(&j);
    size_t len = 0;
    char *doc = admin_json_take(&j, &len);
    assert_non_null(doc);
    assert_int_equal(len, 2 + 100000 * 10 + 99999);
    assert_int_equal(doc[len - 1], ']');
    free(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strings_are_escaped),
        cmocka_unit_test(test_values_and_nesting),
        cmocka_unit_test(test_misuse_loses_the_document),
        cmocka_unit_test(test_long_document),
    };
    return cmocka_run_group_tests_name("admin_json", tests, NULL, NULL);
}
