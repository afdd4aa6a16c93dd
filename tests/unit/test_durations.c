/*
 * test_durations.c — the durations histogram: which bucket a duration
 * falls in (a bound is inclusive, as Prometheus's `le`), the count and
 * sum, merging, and that the bounds and their texts agree.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "durations.h"

static void test_bucket_of_each_duration(void **state)
{
    (void)state;
    static const struct {
        int64_t ns;
        unsigned bucket;
    } rows[] = {
        {-5, 0},                       /* a clock that stepped back counts as 0 */
        {0, 0},           {100000, 0}, /* 0.1 ms: on the first bound */
        {100001, 1},      {250000, 1},    {250001, 2},
        {1000000, 3},     {1000001, 4}, /* 1 ms */
        {99999999, 9},    {100000000, 9}, {100000001, 10},
        {5000000000, 14}, /* 5 s: the last bound */
        {5000000001, 15}, /* above: +Inf only */
        {INT64_MAX, 15},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        durations_t d = {0};
        durations_add(&d, rows[i].ns);
        for (unsigned b = 0; b <= DURATIONS_BUCKETS; b++)
            if (d.bucket[b] != (b == rows[i].bucket))
                fail_msg("%lld ns: bucket %u holds %llu, expected the duration in bucket %u",
                         (long long)rows[i].ns, b, (unsigned long long)d.bucket[b], rows[i].bucket);
        assert_int_equal(d.count, 1);
    }
}

static void test_count_sum_and_merge(void **state)
{
    (void)state;
    durations_t a = {0}, b = {0};
    durations_add(&a, 2000000);   /* 2 ms */
    durations_add(&a, 30000000);  /* 30 ms */
    durations_add(&b, 700000000); /* 0.7 s */
    assert_int_equal(a.count, 2);
    assert_true(a.sum_s > 0.031999 && a.sum_s < 0.032001);
    durations_merge(&a, &b);
    assert_int_equal(a.count, 3);
    assert_true(a.sum_s > 0.731999 && a.sum_s < 0.732001);
    assert_int_equal(a.bucket[4], 1);  /* le 0.0025 */
    assert_int_equal(a.bucket[8], 1);  /* le 0.05 */
    assert_int_equal(a.bucket[12], 1); /* le 1 */
    assert_int_equal(b.count, 1);      /* merge leaves its source */
}

static void test_bounds_rise_and_match_their_texts(void **state)
{
    (void)state;
    for (unsigned i = 0; i < DURATIONS_BUCKETS; i++) {
        if (i > 0 && !(durations_bounds[i] > durations_bounds[i - 1]))
            fail_msg("bound %u (%g) does not rise", i, durations_bounds[i]);
        if (strtod(durations_bound_text[i], NULL) != durations_bounds[i])
            fail_msg("bound %u: text %s, value %g", i, durations_bound_text[i],
                     durations_bounds[i]);
    }
}

static void test_clock_is_monotonic(void **state)
{
    (void)state;
    int64_t before = durations_now_ns();
    int64_t after = durations_now_ns();
    assert_true(before > 0);
    assert_true(after >= before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_of_each_duration),
        cmocka_unit_test(test_count_sum_and_merge),
        cmocka_unit_test(test_bounds_rise_and_match_their_texts),
        cmocka_unit_test(test_clock_is_monotonic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
