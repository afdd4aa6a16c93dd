/* test_sumtable.c — sums changed in transactions: committed, dropped, listed,
 * bounded, and the list of changes holding every entry as the table grows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sumtable.h"

static sumtable_entry_t *entry_of(sumtable_t *sums, const char *name)
{
    return sumtable_entry(sums, name, strlen(name));
}

/* A transaction's changes count once it commits; a rollback drops them;
 * only the moved entries are on its list, each once. */
static void test_commit_and_rollback(void **state)
{
    (void)state;
    sumtable_t *sums = sumtable_new(16);
    assert_non_null(sums);
    sumtable_entry_t *a = entry_of(sums, "gemeente");
    sumtable_entry_t *b = entry_of(sums, "politie");
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_equal(entry_of(sums, "gemeente"), a); /* found, not made again */
    assert_string_equal(a->name, "gemeente");
    assert_int_equal(a->committed + a->delta + a->known + a->moved, 0);
    assert_false(sumtable_moved(sums));

    sumtable_change(sums, a, 5);
    sumtable_change(sums, a, 2);
    sumtable_change(sums, b, 0); /* nothing to list */
    assert_true(sumtable_moved(sums));
    size_t cursor = 0;
    assert_ptr_equal(sumtable_next_moved(sums, &cursor), a);
    assert_null(sumtable_next_moved(sums, &cursor));
    sumtable_end(sums, 1);
    assert_int_equal(a->committed, 7);
    assert_int_equal(a->delta, 0);
    assert_false(sumtable_moved(sums));

    sumtable_change(sums, a, -3);
    sumtable_change(sums, b, 4);
    assert_int_equal(a->committed + a->delta, 4);
    sumtable_end(sums, 0);
    assert_int_equal(a->committed, 7);
    assert_int_equal(b->committed, 0);
    assert_int_equal(a->delta + b->delta, 0);
    cursor = 0;
    assert_null(sumtable_next_moved(sums, &cursor));
    sumtable_destroy(&sums);
    assert_null(sums);
    sumtable_destroy(&sums); /* idempotent */
}

/* A name is its bytes: a prefix is another name. */
static void test_names_by_length(void **state)
{
    (void)state;
    sumtable_t *sums = sumtable_new(16);
    sumtable_entry_t *whole = sumtable_entry(sums, "politie/ketel", 13);
    sumtable_entry_t *partner = sumtable_entry(sums, "politie/ketel", 7);
    assert_non_null(whole);
    assert_non_null(partner);
    assert_ptr_not_equal(whole, partner);
    assert_string_equal(partner->name, "politie");
    assert_ptr_equal(sumtable_find(sums, "politie", 7), partner);
    assert_null(sumtable_find(sums, "polit", 5));
    assert_null(sumtable_find(NULL, "politie", 7));
    sumtable_destroy(&sums);
}

/* No entry beyond the bound; those made stay; every entry iterated once. */
static void test_bound_and_iteration(void **state)
{
    (void)state;
    enum { BOUND = 300 };
    sumtable_t *sums = sumtable_new(BOUND);
    char name[32];
    for (int i = 0; i < BOUND; i++) {
        snprintf(name, sizeof name, "p%d", i);
        sumtable_entry_t *e = entry_of(sums, name);
        assert_non_null(e);
        e->committed = i;
    }
    assert_null(entry_of(sums, "one-too-many"));
    assert_non_null(entry_of(sums, "p7")); /* a known one is still found */
    size_t cursor = 0, seen = 0;
    int64_t total = 0;
    const sumtable_entry_t *e;
    while ((e = sumtable_next(sums, &cursor)) != NULL) {
        seen++;
        total += e->committed;
    }
    assert_int_equal(seen, BOUND);
    assert_int_equal(total, (int64_t)BOUND * (BOUND - 1) / 2);
    cursor = 0;
    assert_null(sumtable_next(NULL, &cursor));
    sumtable_destroy(&sums);
}

/* Every entry moved in one transaction, made while it is open (the table
 * grows meanwhile): all are listed and committed. */
static void test_every_entry_moved(void **state)
{
    (void)state;
    enum { N = 1000 };
    sumtable_t *sums = sumtable_new(N);
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "r%d", i);
        sumtable_entry_t *e = entry_of(sums, name);
        assert_non_null(e);
        sumtable_change(sums, e, i + 1);
    }
    size_t cursor = 0, listed = 0;
    while (sumtable_next_moved(sums, &cursor) != NULL)
        listed++;
    assert_int_equal(listed, N);
    sumtable_end(sums, 1);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "r%d", i);
        const sumtable_entry_t *e = sumtable_find(sums, name, strlen(name));
        assert_non_null(e);
        assert_int_equal(e->committed, i + 1);
        assert_int_equal(e->delta, 0);
    }
    sumtable_destroy(&sums);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit_and_rollback),
        cmocka_unit_test(test_names_by_length),
        cmocka_unit_test(test_bound_and_iteration),
        cmocka_unit_test(test_every_entry_moved),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
