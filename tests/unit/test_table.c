/* test_table.c — the hash table under insert/remove churn, against a model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "table.h"

#define N_KEYS 2000

static void test_put_get_remove(void **state)
{
    (void)state;
    table_t *t = table_new();
    assert_non_null(t);
    int values[N_KEYS];
    char key[32];
    for (int i = 0; i < N_KEYS; i++) {
        values[i] = i;
        int len = snprintf(key, sizeof key, "key-%d", i);
        assert_int_equal(table_put(t, key, (size_t)len, &values[i]), 0);
    }
    assert_int_equal(table_count(t), N_KEYS);
    /* Remove every third key, then check all: removed ones absent, others
     * still found (backward shift must not lose probe-run members). */
    for (int i = 0; i < N_KEYS; i += 3) {
        int len = snprintf(key, sizeof key, "key-%d", i);
        assert_ptr_equal(table_remove(t, key, (size_t)len), &values[i]);
    }
    for (int i = 0; i < N_KEYS; i++) {
        int len = snprintf(key, sizeof key, "key-%d", i);
        int *v = table_get(t, key, (size_t)len);
        if (i % 3 == 0)
            assert_null(v);
        else
            assert_ptr_equal(v, &values[i]);
    }
    assert_int_equal(table_count(t), N_KEYS - (N_KEYS + 2) / 3);
    /* Replace keeps the count. */
    int other = -1;
    assert_int_equal(table_put(t, "key-1", 5, &other), 0);
    assert_ptr_equal(table_get(t, "key-1", 5), &other);
    assert_int_equal(table_count(t), N_KEYS - (N_KEYS + 2) / 3);
    /* Iteration visits each value exactly once. */
    size_t cursor = 0, seen = 0;
    while (table_next(t, &cursor) != NULL)
        seen++;
    assert_int_equal(seen, table_count(t));
    assert_null(table_remove(t, "absent", 6));
    table_destroy(&t);
    assert_null(t);
    table_destroy(&t);
}

static void test_binary_keys(void **state)
{
    (void)state;
    table_t *t = table_new();
    int a = 1, b = 2;
    uint8_t k1[5] = {0, 1, 2, 3, 4}, k2[5] = {0, 1, 2, 3, 5};
    assert_int_equal(table_put(t, k1, 5, &a), 0);
    assert_int_equal(table_put(t, k2, 5, &b), 0);
    assert_ptr_equal(table_get(t, k1, 5), &a);
    assert_ptr_equal(table_get(t, k2, 5), &b);
    assert_null(table_get(t, k1, 4)); /* a prefix is another key */
    table_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_remove),
        cmocka_unit_test(test_binary_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
