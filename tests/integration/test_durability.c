/*
 * test_durability.c — nothing accepted is lost, nothing is delivered twice
 * as new: offline recipients, idempotent republish, kill -9 and restart,
 * redelivery of unacked deliveries, flow-control windows.
 *
 * Every test runs its own schakeld; crashes are real SIGKILLs of that
 * process, restarts reuse its store file.
 */
#include "harness.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

/* 6. om is offline while signals for it are accepted; on connect it
 * receives all of them, in publish order. */
static void test_offline_recipient_receives_everything_in_order(void **state)
{
    h_env_t *env = *state;
    enum { N = 6 };
    char refs[N][32];
    uint8_t ids[N][16];
    uint64_t seqs[N];
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    for (int i = 0; i < N; i++) {
        snprintf(refs[i], sizeof refs[i], "BVH-2024-%05d", 7100 + i);
        schakel_signal_t s = h_police_signal(refs[i]);
        uint32_t recipients = 0;
        seqs[i] = h_publish_ok(politie, &s, NULL, ids[i], &recipients, NULL);
        assert_int_equal(recipients, 1);
        if (i > 0)
            assert_true(seqs[i] > seqs[i - 1]);
    }
    schakel_close(&politie);
    assert_int_equal(h_backlog_of(env, H_OM), N);

    schakel_client_t *om = h_connect(env, H_OM);
    uint64_t last_seq = 0;
    for (int i = 0; i < N; i++) {
        schakel_delivery_t *d = h_receive(om);
        if (memcmp(d->message_id, ids[i], 16) != 0)
            fail_msg("delivery %d is not the publish made %d-th (source_ref %s)", i, i,
                     d->source_ref ? d->source_ref : "-");
        assert_true(d->seq > last_seq);
        last_seq = d->seq;
        assert_int_equal(d->item_seq, seqs[i]);
        assert_string_equal(d->source_ref, refs[i]);
        assert_string_equal(d->sender, H_POLITIE);
        assert_string_equal(d->rule_id, "politie-ondermijning-om");
        assert_int_equal(d->redelivery, 0);
        assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
        schakel_delivery_free(&d);
    }
    assert_int_equal(h_backlog(om), 0);
    schakel_close(&om);
    h_done(env);
}

/* 7. The same message id with the same content is answered with the
 * original Accepted and stored once; with other content it is a conflict. */
static void test_idempotent_republish_and_duplicate_conflict(void **state)
{
    h_env_t *env = *state;
    uint8_t id[16];
    randombytes_buf(id, sizeof id);
    schakel_signal_t s = h_police_signal("BVH-2024-08001");

    schakel_client_t *politie = h_connect(env, H_POLITIE);
    uint32_t recipients = 0, recipients_again = 0;
    int duplicate = -1;
    uint8_t id_back[16];
    uint64_t seq = h_publish_ok(politie, &s, id, id_back, &recipients, &duplicate);
    assert_memory_equal(id_back, id, 16);
    assert_int_equal(duplicate, 0);
    assert_int_equal(recipients, 1);

    /* A retry on the same connection, and one on a new connection as after
     * a lost answer. */
    for (int round = 0; round < 2; round++) {
        uint64_t seq_again = h_publish_ok(politie, &s, id, NULL, &recipients_again, &duplicate);
        assert_int_equal(duplicate, 1);
        assert_int_equal(seq_again, seq);
        assert_int_equal(recipients_again, recipients);
        schakel_close(&politie);
        politie = h_connect(env, H_POLITIE);
    }

    schakel_signal_t other = s;
    other.summary = "Andere inhoud onder hetzelfde berichtnummer";
    schakel_status_t st =
        schakel_publish(politie, NULL, &other, 1, id, NULL, NULL, NULL, H_TIMEOUT_MS);
    assert_int_equal(st, SCHAKEL_ERR_REFUSED);
    assert_string_equal(schakel_last_error(politie)->reason_name, "DUPLICATE_CONFLICT");
    schakel_close(&politie);

    /* Exactly one copy, with the original content. */
    schakel_client_t *om = h_connect(env, H_OM);
    assert_int_equal(h_backlog(om), 1);
    schakel_delivery_t *d = h_receive(om);
    assert_int_equal(d->item_seq, seq);
    assert_string_equal(d->summary, s.summary);
    assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
    schakel_delivery_free(&d);
    assert_int_equal(h_backlog(om), 0);
    schakel_close(&om);
    h_assert_nobody_else(env, NULL);
    h_done(env);
}

/* A repeat whose first answer cannot be read (a damaged row) cannot be
 * told from a new publish: it is refused, the log says why, nothing is
 * stored twice, and once the row is whole the repeat gets the original
 * answer. */
static void test_unreadable_first_answer_refuses_the_repeat(void **state)
{
    h_env_t *env = *state;
    uint8_t id[16];
    randombytes_buf(id, sizeof id);
    schakel_signal_t s = h_police_signal("BVH-2024-08002");
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    uint64_t seq = h_publish_ok(politie, &s, id, NULL, NULL, NULL);

    char hex[33], where[128];
    sodium_bin2hex(hex, sizeof hex, id, sizeof id);
    snprintf(where, sizeof where, "sender = '" H_POLITIE "' AND message_id = x'%s'", hex);
    h_damage_t damage;
    h_damage_row(env, &damage, "publishes", "content_hash", where);
    long offset = h_log_offset(env);
    assert_int_equal(schakel_publish(politie, NULL, &s, 1, id, NULL, NULL, NULL, H_TIMEOUT_MS),
                     SCHAKEL_ERR_REFUSED);
    const schakel_error_t *e = schakel_last_error(politie);
    assert_string_equal(e->reason_name, "INTERNAL_ERROR");
    assert_non_null(strstr(e->text, "the broker could not read its store; publish again"));
    if (h_await_log(env, offset, "event=store.read_failed ", 0) != 0 ||
        h_await_log(env, offset, "stored content hash is damaged", 0) != 0)
        fail_msg("the log does not say why the first answer could not be read");
    h_damage_repair(env, &damage);

    int duplicate = -1;
    assert_int_equal(h_publish_ok(politie, &s, id, NULL, NULL, &duplicate), seq);
    assert_int_equal(duplicate, 1);
    schakel_close(&politie);
    schakel_client_t *om = h_connect(env, H_OM);
    assert_int_equal(h_backlog(om), 1); /* one copy */
    schakel_close(&om);
    h_done(env);
}

/* 8. Accepted means on disk: a broker killed right after Accepted, before
 * the recipient connects, delivers after a restart on the same store, and
 * still knows the message id. */
static void test_accepted_survives_kill9(void **state)
{
    h_env_t *env = *state;
    schakel_signal_t s = h_police_signal("BVH-2024-09001");
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    uint8_t id[16];
    uint32_t recipients = 0;
    uint64_t seq = h_publish_ok(politie, &s, NULL, id, &recipients, NULL);
    assert_int_equal(recipients, 1);
    schakel_close(&politie);

    h_broker_kill9(env);
    h_broker_start(env);

    schakel_client_t *om = h_connect(env, H_OM);
    assert_int_equal(h_backlog(om), 1);
    schakel_delivery_t *d = h_receive(om);
    assert_memory_equal(d->message_id, id, 16);
    assert_int_equal(d->item_seq, seq);
    assert_string_equal(d->source_ref, s.source_ref);
    assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
    schakel_delivery_free(&d);
    assert_int_equal(h_backlog(om), 0);
    schakel_close(&om);

    /* Idempotency survives the crash too. */
    politie = h_connect(env, H_POLITIE);
    int duplicate = -1;
    assert_int_equal(h_publish_ok(politie, &s, id, NULL, NULL, &duplicate), seq);
    assert_int_equal(duplicate, 1);
    schakel_close(&politie);
    assert_int_equal(h_backlog_of(env, H_OM), 0);
    h_done(env);
}

/* Publish n police signals for om; returns nothing, fails on refusal. */
static void publish_for_om(h_env_t *env, int n, uint64_t *seqs)
{
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    for (int i = 0; i < n; i++) {
        char ref[32];
        snprintf(ref, sizeof ref, "BVH-2024-%05d", 9500 + i);
        schakel_signal_t s = h_police_signal(ref);
        uint64_t seq = h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
        if (seqs)
            seqs[i] = seq;
    }
    schakel_close(&politie);
}

/* A delivery received but not acked comes again after a reconnect, marked
 * as a redelivery, and goes away only with an ack. */
static void test_unacked_delivery_is_redelivered_after_reconnect(void **state)
{
    h_env_t *env = *state;
    uint64_t item_seq;
    publish_for_om(env, 1, &item_seq);

    schakel_client_t *om = h_connect(env, H_OM);
    schakel_delivery_t *first = h_receive(om);
    assert_int_equal(first->item_seq, item_seq);
    assert_int_equal(first->redelivery, 0);
    uint64_t mailbox_seq = first->seq;
    schakel_delivery_free(&first);
    schakel_close(&om); /* no ack */

    om = h_connect(env, H_OM);
    assert_int_equal(h_backlog(om), 1);
    schakel_delivery_t *again = h_receive(om);
    assert_int_equal(again->seq, mailbox_seq);
    assert_int_equal(again->item_seq, item_seq);
    assert_int_equal(again->redelivery, 1);
    assert_int_equal(schakel_ack(om, again->seq), SCHAKEL_OK);
    schakel_delivery_free(&again);
    assert_int_equal(h_backlog(om), 0);
    schakel_close(&om);

    /* Acked is final: a new connection gets nothing. */
    assert_int_equal(h_backlog_of(env, H_OM), 0);
    h_done(env);
}

/* An unacked delivery also survives a crash of the broker. */
static void test_unacked_delivery_survives_kill9(void **state)
{
    h_env_t *env = *state;
    uint64_t item_seq;
    publish_for_om(env, 1, &item_seq);
    schakel_client_t *om = h_connect(env, H_OM);
    schakel_delivery_t *first = h_receive(om);
    uint64_t mailbox_seq = first->seq;
    schakel_delivery_free(&first);
    schakel_close(&om);

    h_broker_kill9(env);
    h_broker_start(env);

    om = h_connect(env, H_OM);
    schakel_delivery_t *again = h_receive(om);
    assert_int_equal(again->seq, mailbox_seq);
    assert_int_equal(again->item_seq, item_seq);
    assert_int_equal(again->redelivery, 1);
    assert_int_equal(schakel_ack(om, again->seq), SCHAKEL_OK);
    schakel_delivery_free(&again);
    assert_int_equal(h_backlog(om), 0);
    schakel_close(&om);
    h_done(env);
}

/* SIGTERM stops the broker cleanly (exit 0); acks given before it stay
 * given, unacked deliveries stay owed. */
static void test_clean_stop_keeps_acks_and_backlog(void **state)
{
    h_env_t *env = *state;
    publish_for_om(env, 3, NULL);
    schakel_client_t *om = h_connect(env, H_OM);
    schakel_delivery_t *d = h_receive(om);
    assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
    schakel_delivery_free(&d);
    /* The backlog answer proves the broker processed the ack. */
    assert_int_equal(h_backlog(om), 2);
    schakel_close(&om);

    assert_int_equal(h_broker_stop(env), 0);
    h_broker_start(env);
    assert_int_equal(h_backlog_of(env, H_OM), 2);
    h_done(env);
}

/* A connected receiver keeps receiving across a broker restart on the same
 * endpoint: the library re-subscribes by itself. */
static void test_connected_receiver_survives_broker_restart(void **state)
{
    h_env_t *env = *state;
    publish_for_om(env, 1, NULL);
    schakel_client_t *om = h_connect(env, H_OM);
    schakel_delivery_t *d = h_receive(om);
    assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
    schakel_delivery_free(&d);
    assert_int_equal(h_backlog(om), 0);

    char endpoint[sizeof env->endpoint];
    snprintf(endpoint, sizeof endpoint, "%s", env->endpoint);
    h_broker_kill9(env);
    h_broker_start_at(env, endpoint);

    uint64_t item_seq;
    publish_for_om(env, 1, &item_seq);
    d = h_receive(om); /* same client object, never closed */
    assert_int_equal(d->item_seq, item_seq);
    assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
    schakel_delivery_free(&d);
    assert_int_equal(h_backlog(om), 0);
    schakel_close(&om);
    h_done(env);
}

/* A publisher that made no call while the broker restarted twice, its
 * socket reconnecting by itself each time, sends its next publish once:
 * the reconnects it reads of afterwards all came before that send. */
static void test_idle_publisher_sends_once_after_reconnects(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    char endpoint[sizeof env->endpoint];
    snprintf(endpoint, sizeof endpoint, "%s", env->endpoint);
    for (int i = 0; i < 2; i++) {
        h_broker_kill9(env);
        long started = h_log_offset(env);
        h_broker_start_at(env, endpoint);
        if (h_await_log(env, started, "event=auth.admitted principal=" H_POLITIE, H_TIMEOUT_MS) !=
            0)
            fail_msg("restart %d: the idle client did not reconnect by itself", i + 1);
    }
    long offset = h_log_offset(env);
    schakel_signal_t s = h_police_signal("BVH-2024-09600");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    (void)h_backlog(politie); /* answered after every copy the broker got */
    int accepted = h_log_count(env, offset, "event=publish.accepted");
    int duplicates = h_log_count(env, offset, "event=publish.duplicate");
    if (accepted != 1 || duplicates != 0)
        fail_msg("one publish after two reconnects: %d accepted, %d duplicate copies", accepted,
                 duplicates);
    schakel_close(&politie);
    h_done(env);
}

/* The broker keeps at most `window` unacked deliveries in flight to a
 * receiver; an ack opens room for the next. */
static void test_flow_window_limits_deliveries_in_flight(void **state)
{
    h_env_t *env = *state;
    enum { QUEUED = 5, WINDOW = 2 };
    uint64_t item_seqs[QUEUED];
    publish_for_om(env, QUEUED, item_seqs);

    schakel_client_t *om = h_connect(env, H_OM);
    assert_int_equal(schakel_subscribe(om, WINDOW), SCHAKEL_OK);
    schakel_delivery_t *held[WINDOW];
    for (int i = 0; i < WINDOW; i++) {
        held[i] = h_receive(om);
        assert_int_equal(held[i]->item_seq, item_seqs[i]);
    }
    /* The window is full: nothing more may arrive until an ack. A failure
     * here can only be a delivery beyond the window. */
    schakel_delivery_t *extra = NULL;
    schakel_status_t st = schakel_receive(om, &extra, 1500);
    if (st != SCHAKEL_ERR_TIMEOUT)
        fail_msg("a delivery beyond the window of %d arrived (status %s)", WINDOW,
                 schakel_strerror(st));
    assert_null(extra);

    assert_int_equal(schakel_ack(om, held[0]->seq), SCHAKEL_OK);
    schakel_delivery_t *next = h_receive(om);
    assert_int_equal(next->item_seq, item_seqs[WINDOW]);
    assert_int_equal(schakel_ack(om, held[1]->seq), SCHAKEL_OK);
    assert_int_equal(schakel_ack(om, next->seq), SCHAKEL_OK);
    schakel_delivery_free(&next);
    for (int i = 0; i < WINDOW; i++)
        schakel_delivery_free(&held[i]);
    for (int i = WINDOW + 1; i < QUEUED; i++) {
        schakel_delivery_t *d = h_receive(om);
        assert_int_equal(d->item_seq, item_seqs[i]);
        assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
        schakel_delivery_free(&d);
    }
    assert_int_equal(h_backlog(om), 0);
    schakel_close(&om);
    h_done(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_offline_recipient_receives_everything_in_order,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_idempotent_republish_and_duplicate_conflict,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_unreadable_first_answer_refuses_the_repeat,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_accepted_survives_kill9, h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_unacked_delivery_is_redelivered_after_reconnect,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_unacked_delivery_survives_kill9, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_clean_stop_keeps_acks_and_backlog, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_connected_receiver_survives_broker_restart,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_idle_publisher_sends_once_after_reconnects,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_flow_window_limits_deliveries_in_flight,
                                        h_setup_broker, h_teardown),
    };
    return cmocka_run_group_tests_name("integration: durability", tests, NULL, NULL);
}
