/*
 * test_inflight.c — publishes in flight (schakel_publish_send and
 * schakel_publish_wait) against a real schakeld: publishes sent back to
 * back are each answered, in send order, and delivered once in publish
 * order; a refusal among them concerns its own publish only; a broker
 * killed with publishes unanswered answers every one of them after its
 * restart and stores none twice. Waits are on answers, receives and
 * backlog queries, each bounded.
 */
#include "harness.h"

#include <stdio.h>
#include <string.h>

#define MAX_ITEMS 8

/* Distinct texts per publish and item, so that a delivery shows which
 * item of which publish it is. */
static char refs[SCHAKEL_MAX_IN_FLIGHT][MAX_ITEMS][40];
static char summaries[SCHAKEL_MAX_IN_FLIGHT][MAX_ITEMS][96];
static uint8_t ids[SCHAKEL_MAX_IN_FLIGHT][16];
static schakel_publish_answer_t answers[SCHAKEL_MAX_IN_FLIGHT];

/* The signals of publish p of a test tagged `tag`: police signals for the
 * public prosecutor (rule politie-ondermijning-om). */
static void batch_signals(const char *tag, size_t p, size_t n, schakel_signal_t *signals)
{
    for (size_t i = 0; i < n; i++) {
        unsigned publish = (unsigned)p, item = (unsigned)i;
        snprintf(refs[p][i], sizeof refs[p][i], "INF-%.8s-%02u-%u", tag, publish, item);
        snprintf(summaries[p][i], sizeof summaries[p][i], "Publicatie %u, melding %u (%.16s)",
                 publish, item, tag);
        signals[i] = h_police_signal(refs[p][i]);
        signals[i].summary = summaries[p][i];
    }
}

/* Send publishes first..last-1 of n signals each, without waiting;
 * publish `denied` (if in range) gets an item no rule allows at index 1. */
static void send_batches(schakel_client_t *client, const char *tag, size_t first, size_t last,
                         size_t n, size_t denied)
{
    for (size_t p = first; p < last; p++) {
        schakel_signal_t signals[MAX_ITEMS];
        batch_signals(tag, p, n, signals);
        if (p == denied)
            signals[1].theme = "woonfraude"; /* no rule lets politie send it to anyone */
        schakel_status_t st = schakel_publish_send(client, NULL, signals, n, NULL, ids[p]);
        if (st != SCHAKEL_OK)
            fail_msg("send %zu: %s: %s", p, schakel_strerror(st), schakel_last_error(client)->text);
        assert_int_equal(schakel_publishes_in_flight(client), p + 1);
    }
}

/* Wait for the next answer (id NULL) or one by id; it must be handed out,
 * for publish p. */
static void collect(schakel_client_t *client, size_t p, int by_id)
{
    schakel_status_t st =
        schakel_publish_wait(client, by_id ? ids[p] : NULL, &answers[p], H_TIMEOUT_MS);
    if (st != SCHAKEL_OK)
        fail_msg("answer %zu: %s: %s", p, schakel_strerror(st), schakel_last_error(client)->text);
    if (memcmp(answers[p].message_id, ids[p], 16) != 0)
        fail_msg("answer %zu names another publish", p);
}

/* Answer p accepted all n items, each queued for one mailbox (om's), with
 * item seqs above *last_seq, in item order; *last_seq moves on. */
static void check_accepted(size_t p, size_t n, uint64_t *last_seq)
{
    const schakel_publish_answer_t *a = &answers[p];
    if (a->status != SCHAKEL_OK)
        fail_msg("publish %zu: %s %s: %s", p, schakel_strerror(a->status), a->error.reason_name,
                 a->error.text);
    assert_int_equal(a->n, n);
    for (size_t i = 0; i < n; i++) {
        if (a->results[i].seq <= *last_seq)
            fail_msg("publish %zu item %zu: seq %llu after %llu", p, i,
                     (unsigned long long)a->results[i].seq, (unsigned long long)*last_seq);
        assert_int_equal(a->results[i].recipients, 1);
        *last_seq = a->results[i].seq;
    }
}

/* om receives the items of the accepted publishes (those not `skipped`)
 * among 0..count-1, each once, in publish and item order, with the seq
 * its publisher was told; acked one by one, the mailbox is then empty. */
static void receive_all(schakel_client_t *om, size_t count, size_t n, size_t skipped)
{
    for (size_t p = 0; p < count; p++) {
        if (p == skipped)
            continue;
        for (size_t i = 0; i < n; i++) {
            schakel_delivery_t *d = h_receive(om);
            if (memcmp(d->message_id, ids[p], 16) != 0 || d->item_index != i)
                fail_msg("delivery %llu: item %u of another publish, want item %zu of publish %zu "
                         "(source_ref %s)",
                         (unsigned long long)d->seq, d->item_index, i, p,
                         d->source_ref ? d->source_ref : "-");
            assert_int_equal(d->item_seq, answers[p].results[i].seq);
            assert_string_equal(d->source_ref, refs[p][i]);
            assert_string_equal(d->summary, summaries[p][i]);
            assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
            schakel_delivery_free(&d);
        }
    }
    schakel_delivery_t *extra = NULL;
    schakel_status_t st = schakel_receive(om, &extra, 300);
    if (st != SCHAKEL_ERR_TIMEOUT)
        fail_msg("one delivery too many: %s (item seq %llu)", schakel_strerror(st),
                 extra ? (unsigned long long)extra->item_seq : 0ULL);
    assert_int_equal(h_backlog(om), 0);
}

/* 16 publishes of 8 signals sent back to back from one client, then every
 * answer collected: all accepted, seqs increasing in send order; om gets
 * every item once, in publish order. */
static void test_many_in_flight(void **state)
{
    enum { PUBLISHES = 16 };
    h_env_t *env = *state;
    schakel_client_t *om = h_connect(env, H_OM);
    assert_int_equal(schakel_subscribe(om, 0), SCHAKEL_OK);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    send_batches(politie, "reeks", 0, PUBLISHES, MAX_ITEMS, SIZE_MAX);
    uint64_t last_seq = 0;
    for (size_t p = 0; p < PUBLISHES; p++) {
        collect(politie, p, 0);
        check_accepted(p, MAX_ITEMS, &last_seq);
        assert_int_equal(answers[p].duplicate, 0);
        assert_int_equal(schakel_publishes_in_flight(politie), PUBLISHES - p - 1);
    }
    receive_all(om, PUBLISHES, MAX_ITEMS, SIZE_MAX);
    const char *const only_om[] = {H_OM, NULL};
    h_assert_nobody_else(env, only_om);
    schakel_close(&politie);
    schakel_close(&om);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

/* A publish with an item no rule allows, among accepted ones in flight:
 * it alone is refused, naming that item; nothing of it is delivered, the
 * others are. The last answer is waited for first, by id. */
static void test_refusal_among_in_flight(void **state)
{
    enum { PUBLISHES = 5, ITEMS = 3, DENIED = 2 };
    h_env_t *env = *state;
    schakel_client_t *om = h_connect(env, H_OM);
    assert_int_equal(schakel_subscribe(om, 0), SCHAKEL_OK);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    send_batches(politie, "weigering", 0, PUBLISHES, ITEMS, DENIED);
    collect(politie, PUBLISHES - 1, 1);
    assert_int_equal(schakel_publishes_in_flight(politie), PUBLISHES - 1);
    uint64_t last_seq = 0;
    for (size_t p = 0; p < PUBLISHES - 1; p++) {
        collect(politie, p, 0);
        if (p == DENIED) {
            const schakel_publish_answer_t *a = &answers[p];
            if (a->status != SCHAKEL_ERR_REFUSED)
                fail_msg("publish %zu: status %s, want refused", p, schakel_strerror(a->status));
            assert_int_equal(a->error.status, SCHAKEL_ERR_REFUSED);
            assert_string_equal(a->error.reason_name, "POLICY_DENIED");
            assert_int_equal(a->error.item_index, 1);
            assert_int_equal(a->n, ITEMS);
            continue;
        }
        check_accepted(p, ITEMS, &last_seq);
    }
    check_accepted(PUBLISHES - 1, ITEMS, &last_seq);
    assert_int_equal(schakel_publishes_in_flight(politie), 0);
    receive_all(om, PUBLISHES, ITEMS, DENIED);
    const char *const only_om[] = {H_OM, NULL};
    h_assert_nobody_else(env, only_om);
    schakel_close(&politie);
    schakel_close(&om);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

/* The broker is killed while publishes are in flight: the first half
 * committed (their answers unread), the second half sent to a broker that
 * no longer reads. After the restart every publish is answered, accepted
 * (the first half possibly as duplicates, the second half new), and om
 * gets each item exactly once. */
static void test_broker_killed_with_publishes_in_flight(void **state)
{
    enum { PUBLISHES = 16, COMMITTED = 8 };
    h_env_t *env = *state;
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *om = h_connect(env, H_OM); /* no Flow: only asks for its backlog */
    send_batches(politie, "crash", 0, COMMITTED, MAX_ITEMS, SIZE_MAX);
    /* the first half is committed once om's mailbox holds all its items;
     * politie reads nothing meanwhile: its answers wait in its socket */
    int64_t tries = 0;
    uint64_t backlog = 0;
    while ((backlog = h_backlog(om)) < COMMITTED * MAX_ITEMS && ++tries < 10000)
        continue;
    assert_int_equal(backlog, COMMITTED * MAX_ITEMS);
    schakel_close(&om);
    h_broker_pause(env);
    send_batches(politie, "crash", COMMITTED, PUBLISHES, MAX_ITEMS, SIZE_MAX);
    char endpoint[sizeof env->endpoint], problem[256] = "";
    snprintf(endpoint, sizeof endpoint, "%s", env->endpoint);
    h_broker_kill9(env);
    assert_int_equal(schakel_publishes_in_flight(politie), PUBLISHES);
    int started = -1;
    for (int attempt = 1; attempt <= H_RESTART_ATTEMPTS && started != 0; attempt++)
        started = h_broker_try_start_at(env, endpoint, problem, sizeof problem);
    if (started != 0)
        fail_msg("restart on %s: %s", endpoint, problem);

    uint64_t last_seq = 0;
    for (size_t p = 0; p < PUBLISHES; p++) {
        collect(politie, p, 0);
        check_accepted(p, MAX_ITEMS, &last_seq);
        /* never seen by the broker before the kill: new, not a duplicate */
        if (p >= COMMITTED && answers[p].duplicate)
            fail_msg("publish %zu, sent to a stopped broker, answered as a duplicate", p);
    }
    assert_int_equal(schakel_publishes_in_flight(politie), 0);
    om = h_connect(env, H_OM);
    assert_int_equal(schakel_subscribe(om, 0), SCHAKEL_OK);
    receive_all(om, PUBLISHES, MAX_ITEMS, SIZE_MAX);
    const char *const only_om[] = {H_OM, NULL};
    h_assert_nobody_else(env, only_om);
    schakel_close(&politie);
    schakel_close(&om);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_many_in_flight, h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_refusal_among_in_flight, h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_broker_killed_with_publishes_in_flight, h_setup_broker,
                                        h_teardown),
    };
    return cmocka_run_group_tests_name("integration: publishes in flight", tests, NULL, NULL);
}
