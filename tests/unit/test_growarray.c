/* test_growarray.c — an array's growth step: the first size, doubling only
 * when full, the elements kept. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "growarray.h"

static void test_first_then_doubled(void **state)
{
    (void)state;
    uint32_t *items = NULL;
    size_t cap = 0, n = 0;
    assert_int_equal(growarray_room((void **)&items, &cap, n, sizeof *items, 4), 0);
    assert_non_null(items);
    assert_int_equal(cap, 4);
    for (; n < 100; n++) {
        assert_int_equal(growarray_room((void **)&items, &cap, n, sizeof *items, 4), 0);
        assert_true(n < cap);
        items[n] = (uint32_t)n * 7u;
    }
    assert_int_equal(cap, 128); /* 4, 8, ..., 128: doubled only when full */
    for (size_t i = 0; i < n; i++)
        assert_int_equal(items[i], (uint32_t)i * 7u);
    uint32_t *before = items;
    assert_int_equal(growarray_room((void **)&items, &cap, 101, sizeof *items, 4), 0);
    assert_ptr_equal(items, before); /* room left: untouched */
    assert_int_equal(cap, 128);
    free(items);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_then_doubled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
