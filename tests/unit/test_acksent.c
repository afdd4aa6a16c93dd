/*
 * test_acksent.c — libschakel's record of the Acks it sent
 * (clients/libschakel/acksent.c): a RATE_LIMITED refusal makes the Ack it
 * names owed again after 1 s, 2 s and 4 s, and a fourth forgets it; an
 * answer to a later request settles what was sent before it; the table is
 * bounded, oldest first out.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "acksent.h"

#define T0 1000000

static void keep(acksent_t *t, uint64_t order, uint64_t first_seq)
{
    uint8_t *frame = malloc(8);
    assert_non_null(frame);
    memcpy(frame, &first_seq, 8);
    acksent_keep(t, order, first_seq, frame, 8);
}

/* Refused, owed, sent again, refused again: the pauses double, the
 * fourth refusal gives up, and nothing is due before its time. */
static void test_refused_owed_again_bounded(void **state)
{
    (void)state;
    acksent_t t = {0};
    static const struct {
        int64_t pause;  /* after this refusal; 0: given up */
        int owed_again; /* acksent_refused's result */
    } rows[] = {
        {1000, 1},
        {2000, 1},
        {4000, 1},
        {0, 0},
    };
    uint64_t order = 10;
    int64_t now = T0;
    keep(&t, order, 7);
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        assert_int_equal(acksent_refused(&t, 7, now), rows[r].owed_again);
        if (!rows[r].owed_again) {
            assert_int_equal(t.count, 0);
            assert_int_equal(acksent_next_due(&t), -1);
            break;
        }
        assert_int_equal(acksent_next_due(&t), now + rows[r].pause);
        assert_null(acksent_due(&t, now + rows[r].pause - 1));
        /* owed, not on the wire: a refusal naming it again is not its */
        assert_int_equal(acksent_refused(&t, 7, now), 0);
        assert_int_equal(t.count, 1);
        acksent_entry_t *due = acksent_due(&t, now + rows[r].pause);
        assert_non_null(due);
        assert_int_equal(due->frame_len, 8);
        acksent_resent(&t, due, ++order);
        assert_int_equal(acksent_next_due(&t), -1);
        now += rows[r].pause;
    }
}

/* Answers come in order: an answer to request N settles the Acks sent
 * before it that are on the wire, not an owed one nor a later one; a
 * refusal settles those sent before the Ack it names. */
static void test_settle_in_order(void **state)
{
    (void)state;
    acksent_t t = {0};
    keep(&t, 1, 100);
    keep(&t, 3, 200);
    keep(&t, 5, 300);
    keep(&t, 7, 400);
    assert_int_equal(acksent_refused(&t, 200, T0), 1); /* 1 settled by it */
    assert_int_equal(t.count, 3);
    assert_int_equal(t.entries[0].first_seq, 200);
    acksent_settle_before(&t, 6); /* 5 settled; 200 owed stays; 7 still on the wire */
    assert_int_equal(t.count, 2);
    assert_int_equal(t.entries[0].first_seq, 200);
    assert_int_equal(t.entries[1].first_seq, 400);
    assert_int_equal(acksent_refused(&t, 999, T0), 0); /* names none kept */
    assert_int_equal(t.count, 2);
    acksent_settle_before(&t, 100);
    assert_int_equal(t.count, 1);
    assert_int_equal(t.entries[0].first_seq, 200);
    acksent_clear(&t);
    assert_int_equal(t.count, 0);
}

/* Two Acks naming the same seq first: the refusal is the older one's. */
static void test_same_first_seq(void **state)
{
    (void)state;
    acksent_t t = {0};
    keep(&t, 1, 50);
    keep(&t, 2, 50);
    assert_int_equal(acksent_refused(&t, 50, T0), 1);
    assert_int_equal(t.entries[0].order, 1);
    assert_int_not_equal(t.entries[0].resend_at, 0);
    assert_int_equal(t.entries[1].resend_at, 0);
    assert_int_equal(acksent_refused(&t, 50, T0), 1); /* now the second's */
    assert_int_not_equal(t.entries[1].resend_at, 0);
    acksent_clear(&t);
}

/* Full: the oldest is forgotten for the newest. */
static void test_bounded(void **state)
{
    (void)state;
    acksent_t t = {0};
    for (uint64_t i = 1; i <= ACKSENT_MAX + 3; i++)
        keep(&t, i, 1000 + i);
    assert_int_equal(t.count, ACKSENT_MAX);
    assert_int_equal(t.entries[0].first_seq, 1004);
    assert_int_equal(t.entries[ACKSENT_MAX - 1].first_seq, 1000 + ACKSENT_MAX + 3);
    assert_int_equal(acksent_refused(&t, 1002, T0), 0);
    acksent_clear(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused_owed_again_bounded),
        cmocka_unit_test(test_settle_in_order),
        cmocka_unit_test(test_same_first_seq),
        cmocka_unit_test(test_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
