/*
 * test_limits.c — limits lowered in the broker's config are enforced:
 * items per publish, summary length, frame size and the receive window.
 * Each refusal carries its exact reason, and the broker goes on serving.
 */
#include "harness.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* A police signal for the public prosecutor (rule politie-ondermijning-om). */
static schakel_signal_t police_signal(const char *summary)
{
    schakel_signal_t s = {
        .kind = "witwassen",
        .theme = "ondermijning",
        .area = "GM0935",
        .observed_at = (int64_t)time(NULL) - 60,
        .summary = summary,
    };
    return s;
}

static void test_lowered_limits_are_enforced(void **state)
{
    h_env_t *env = *state;
    const char *const extra[] = {"--set", "max_items_per_publish=2",
                                 "--set", "max_summary_length=12",
                                 "--set", "max_window=2",
                                 NULL};
    h_broker_start_with(env, extra);
    schakel_client_t *politie = h_connect(env, H_POLITIE);

    /* items per publish: 2 pass, 3 are refused as a whole */
    schakel_signal_t batch[3] = {police_signal("een"), police_signal("twee"),
                                 police_signal("drie")};
    uint8_t id[16];
    schakel_item_result_t results[3];
    assert_int_equal(
        schakel_publish(politie, NULL, batch, 2, NULL, id, results, NULL, H_TIMEOUT_MS),
        SCHAKEL_OK);
    assert_int_equal(
        schakel_publish(politie, NULL, batch, 3, NULL, id, results, NULL, H_TIMEOUT_MS),
        SCHAKEL_ERR_REFUSED);
    assert_string_equal(schakel_last_error(politie)->reason_name, "TOO_MANY_ITEMS");

    /* summary length: 12 bytes pass, 13 are refused naming the field */
    schakel_signal_t s = police_signal("twaalf tekst");
    assert_int_equal(schakel_publish(politie, NULL, &s, 1, NULL, id, results, NULL, H_TIMEOUT_MS),
                     SCHAKEL_OK);
    s = police_signal("dertien tekst");
    assert_int_equal(schakel_publish(politie, NULL, &s, 1, NULL, id, results, NULL, H_TIMEOUT_MS),
                     SCHAKEL_ERR_REFUSED);
    assert_string_equal(schakel_last_error(politie)->reason_name, "INVALID_FIELD");
    assert_non_null(strstr(schakel_last_error(politie)->text, "summary"));

    /* the window: om asks for 64 in flight and gets at most 2 */
    schakel_client_t *om = h_connect(env, H_OM);
    assert_int_equal(schakel_subscribe(om, 64), SCHAKEL_OK);
    schakel_delivery_t *first = h_receive(om);
    schakel_delivery_t *second = h_receive(om);
    schakel_delivery_t *third = NULL;
    /* three are waiting (two items + one); the third only comes after an ack */
    assert_int_equal(schakel_receive(om, &third, 1000), SCHAKEL_ERR_TIMEOUT);
    assert_int_equal(schakel_ack(om, first->seq), SCHAKEL_OK);
    third = h_receive(om);
    assert_true(third->seq > second->seq);
    assert_int_equal(schakel_ack(om, second->seq), SCHAKEL_OK);
    assert_int_equal(schakel_ack(om, third->seq), SCHAKEL_OK);
    assert_int_equal(h_backlog(om), 0);
    schakel_delivery_free(&first);
    schakel_delivery_free(&second);
    schakel_delivery_free(&third);
    schakel_close(&om);
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

static void test_limits_above_the_caps_are_refused(void **state)
{
    h_env_t *env = *state;
    static const char *const rows[][2] = {
        {"max_frame_bytes=262145", "max_frame_bytes is 262145, over the built-in limit of 262144"},
        {"max_window=1025", "max_window is 1025, over the built-in limit of 1024"},
        {"max_items_per_publish=0", "max_items_per_publish must be a whole number from 1 to 256"},
        {"max_publish_rate=fast", "max_publish_rate must be a whole number from 1 to 1000000"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *const extra[] = {"--set", rows[i][0], NULL};
        char problem[1024] = "", needle[256];
        long offset = h_log_offset(env);
        int rc = h_broker_try_start_with(env, "tcp://127.0.0.1:*", extra, problem, sizeof problem);
        if (rc == 0)
            fail_msg("the broker started with %s", rows[i][0]);
        /* its one-line refusal names the option, the key and the cap */
        snprintf(needle, sizeof needle, "--set %s: %s", rows[i][0], rows[i][1]);
        if (h_await_log(env, offset, needle, 1000) != 0)
            fail_msg("%s: no refusal naming the key (%s)", rows[i][0], problem);
    }
    h_done(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lowered_limits_are_enforced, h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_limits_above_the_caps_are_refused, h_setup_env,
                                        h_teardown),
    };
    return cmocka_run_group_tests_name("integration: configurable limits", tests, NULL, NULL);
}
