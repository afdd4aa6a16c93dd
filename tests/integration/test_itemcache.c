/*
 * test_itemcache.c — the push takes a published item from memory
 * (deliver_kept_t): what a recipient online is pushed that way equals what
 * the store gives after a restart, and a turn that is rolled back (its
 * commit fails) leaves nothing of its items to be pushed: the next publish
 * is delivered with its own content.
 *
 * A real schakeld; the rollback comes from a file-size limit on the broker
 * (EFBIG on the store's writes), as in test_storage. Waits are on replies
 * and receives, each bounded.
 */
#include "harness.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static schakel_signal_t cache_signal(const char *summary, const char *source_ref)
{
    schakel_signal_t s = h_police_signal(source_ref);
    s.summary = summary;
    return s;
}

/* The same delivery pushed from memory and, after a crash, from the store:
 * the same fields with the same values, the store's being the reference. */
static void test_pushed_from_memory_equals_the_store(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *om = h_connect(env, H_OM);
    assert_int_equal(schakel_subscribe(om, 0), SCHAKEL_OK);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = cache_signal("Contante aankoop van drie panden", "BVH-KEPT-0001");
    uint8_t id[16];
    uint64_t item_seq = h_publish_ok(politie, &s, NULL, id, NULL, NULL);
    schakel_delivery_t *from_memory = h_receive(om);
    assert_memory_equal(from_memory->message_id, id, 16);
    assert_int_equal(from_memory->item_seq, item_seq);
    assert_int_equal(from_memory->redelivery, 0);

    char problem[256];
    if (h_broker_crash_restart(env, problem, sizeof problem) != 0)
        fail_msg("restart: %s", problem);
    schakel_delivery_t *from_store = h_receive(om);
    assert_int_equal(from_store->seq, from_memory->seq);
    assert_int_equal(from_store->redelivery, 1);
    unsigned fields = h_delivery_fields(from_store);
    assert_true((fields & H_F_SUMMARY) && (fields & H_F_SOURCE_REF) && (fields & H_F_AREA));
    h_assert_delivery_fields(from_store, &s, fields);
    h_assert_delivery_fields(from_memory, &s, fields);
    assert_string_equal(from_memory->rule_id, from_store->rule_id);
    assert_int_equal(schakel_ack(om, from_store->seq), SCHAKEL_OK);
    schakel_delivery_free(&from_memory);
    schakel_delivery_free(&from_store);
    schakel_close(&politie);
    schakel_close(&om);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

enum { CACHE_MAX_TRIES = 80 };

/* Publishes to a recipient online, whose items the publish path keeps,
 * in turns whose commit fails; then, with the disk writable again, one
 * more. Each delivery must carry its own publish's content, and nothing
 * of a refused publish may ever be delivered. */
static void test_rolled_back_turn_leaves_nothing_to_push(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *om = h_connect(env, H_OM);
    assert_int_equal(schakel_subscribe(om, 0), SCHAKEL_OK);
    schakel_client_t *politie = h_connect(env, H_POLITIE);

    /* One delivered first: om is a receiver, its items are kept. */
    schakel_signal_t first = cache_signal("Eerste, vastgelegd", "BVH-KEPT-0100");
    uint8_t first_id[16];
    h_publish_ok(politie, &first, NULL, first_id, NULL, NULL);
    schakel_delivery_t *d = h_receive(om);
    assert_memory_equal(d->message_id, first_id, 16);
    assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
    schakel_delivery_free(&d);

    struct rlimit old;
    rlim_t lowered = h_broker_file_limit_lower(env, &old);

    /* Until a few publishes were refused (their turns rolled back). */
    static char summaries[CACHE_MAX_TRIES][64], refs[CACHE_MAX_TRIES][32];
    static uint8_t ids[CACHE_MAX_TRIES][16];
    static int accepted[CACHE_MAX_TRIES];
    int n = 0, refused = 0;
    for (; n < CACHE_MAX_TRIES && refused < 3; n++) {
        snprintf(summaries[n], sizeof summaries[n], "Poging %d onder een vol bestand", n);
        snprintf(refs[n], sizeof refs[n], "BVH-KEPT-%04d", 200 + n);
        schakel_signal_t s = cache_signal(summaries[n], refs[n]);
        schakel_item_result_t result = {0};
        int duplicate = -1;
        schakel_status_t st =
            schakel_publish(politie, NULL, &s, 1, NULL, ids[n], &result, &duplicate, H_TIMEOUT_MS);
        accepted[n] = st == SCHAKEL_OK;
        if (st != SCHAKEL_OK) {
            const schakel_error_t *e = schakel_last_error(politie);
            if (st != SCHAKEL_ERR_REFUSED || strcmp(e->reason_name, "UNAVAILABLE") != 0)
                fail_msg("publish %d: %s %s: %s; expected UNAVAILABLE", n, schakel_strerror(st),
                         e->reason_name, e->text);
            refused++;
        }
    }
    if (refused == 0)
        fail_msg("no publish was refused under RLIMIT_FSIZE %lld", (long long)lowered);
    h_broker_file_limit_restore(env, &old);

    schakel_signal_t after = cache_signal("Na het terugdraaien, vastgelegd", "BVH-KEPT-0999");
    uint8_t after_id[16];
    uint64_t after_seq = h_publish_ok(politie, &after, NULL, after_id, NULL, NULL);

    /* Every delivery until the last publish's: its own content. */
    for (int seen_after = 0; !seen_after;) {
        d = h_receive(om);
        if (memcmp(d->message_id, after_id, 16) == 0) {
            seen_after = 1;
            assert_int_equal(d->item_seq, after_seq);
            h_assert_delivery_fields(d, &after, h_delivery_fields(d));
            assert_string_equal(d->summary, after.summary);
        } else if (memcmp(d->message_id, first_id, 16) == 0) {
            /* om's ack of the first one went in a turn that was rolled
             * back (it arrived with a refused publish): sent again, as a
             * redelivery, with its own content */
            assert_true(d->redelivery);
            assert_string_equal(d->summary, first.summary);
        } else {
            int i = 0;
            while (i < n && memcmp(d->message_id, ids[i], 16) != 0)
                i++;
            if (i == n)
                fail_msg("om got a delivery (item %llu) of no publish of this test",
                         (unsigned long long)d->item_seq);
            if (!accepted[i])
                fail_msg("a refused publish (%d) was delivered as item %llu", i,
                         (unsigned long long)d->item_seq);
            if (d->summary == NULL || strcmp(d->summary, summaries[i]) != 0)
                fail_msg("publish %d was delivered with summary \"%s\"", i,
                         d->summary ? d->summary : "(none)");
        }
        assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
        schakel_delivery_free(&d);
    }
    assert_int_equal(h_backlog(om), 0);
    schakel_close(&politie);
    schakel_close(&om);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pushed_from_memory_equals_the_store, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_rolled_back_turn_leaves_nothing_to_push,
                                        h_setup_broker, h_teardown),
    };
    return cmocka_run_group_tests_name("integration: item cache", tests, NULL, NULL);
}
