/*
 * test_refusals.c — which refused handshakes the audit trail takes in full
 * (broker/refusals.c): per peer and per window, the rest counted and summed
 * up once the window ends (or at a stop), peers beyond the table in one
 * total, a summary cut on a peer boundary.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "refusals.h"

#define T0 1764000000

/* n refusals from peer at now: how many got a full entry. */
static unsigned take_n(refusals_t *r, const char *peer, unsigned n, int64_t now)
{
    unsigned full = 0;
    for (unsigned i = 0; i < n; i++)
        full += (unsigned)refusals_take(r, peer, now);
    return full;
}

static void test_per_peer_and_per_window(void **state)
{
    (void)state;
    refusals_t r = {0};
    static const struct {
        const char *peer;
        unsigned n, full; /* refusals made, of which recorded in full */
    } rows[] = {
        {"10.0.0.1", REFUSALS_PER_PEER + 5, REFUSALS_PER_PEER}, /* the rest only counted */
        {"10.0.0.2", 3, 3},                                     /* another peer: its own share */
        {"10.0.0.1", 1, 0},                                     /* still this window */
        {NULL, 2, 2},                                           /* no address: one peer "-" */
        {"", REFUSALS_PER_PEER, REFUSALS_PER_PEER - 2},         /* the same "-" */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        unsigned full = take_n(&r, rows[i].peer, rows[i].n, T0 + (int64_t)i);
        if (full != rows[i].full)
            fail_msg("row %zu: %u of %u recorded, expected %u", i, full, rows[i].n, rows[i].full);
    }
    char text[256];
    /* not before the window ends, unless forced */
    assert_int_equal(refusals_summary(&r, T0 + REFUSALS_WINDOW_S - 1, 0, text, sizeof text), 0);
    assert_int_equal(refusals_summary(&r, T0 + REFUSALS_WINDOW_S, 0, text, sizeof text), 8);
    assert_string_equal(text, "suppressed=8 window_s=60 since=1764000000 peers=10.0.0.1:6,-:2");
    /* the window closed: the next refusals start a new one, recorded again */
    assert_int_equal(take_n(&r, "10.0.0.1", 2, T0 + 100), 2);
    assert_int_equal(refusals_summary(&r, T0 + 100 + REFUSALS_WINDOW_S, 0, text, sizeof text), 0);
    assert_int_equal(r.window_start_s, 0); /* closed with nothing to sum up */
}

static void test_window_total_and_peers_beyond_the_table(void **state)
{
    (void)state;
    refusals_t r = {0};
    char peer[32];
    unsigned full = 0;
    /* every peer new: the window's total bounds the full entries */
    for (unsigned i = 0; i < REFUSALS_PEERS + 10; i++) {
        snprintf(peer, sizeof peer, "192.0.2.%u", i);
        full += take_n(&r, peer, 3, T0);
    }
    assert_int_equal(full, REFUSALS_PER_WINDOW);
    char text[4096];
    uint64_t counted = refusals_summary(&r, T0, 1, text, sizeof text); /* forced: a stop */
    assert_int_equal(counted, 3 * (REFUSALS_PEERS + 10) - REFUSALS_PER_WINDOW);
    assert_non_null(strstr(text, ",others:30")); /* 10 peers beyond the table, 3 each */
    assert_null(strstr(text, "192.0.2.0:"));     /* its 3 were recorded in full */
    assert_non_null(strstr(text, "192.0.2.40:3"));
    /* a short buffer: whole peers only, the rest in "others" */
    refusals_t s = {0};
    take_n(&s, "a.example", REFUSALS_PER_PEER + 4, T0);
    take_n(&s, "b.example", REFUSALS_PER_PEER + 7, T0);
    char small[70];
    assert_int_equal(refusals_summary(&s, T0, 1, small, sizeof small), 11);
    assert_string_equal(small, "suppressed=11 window_s=60 since=1764000000 peers=others:11");
}

/* Refused requests, counted per principal: their own limits and word, a
 * principal beyond the table still recorded while the window's total
 * allows, and the kind kept when the window closes. */
static void test_requests_per_principal(void **state)
{
    (void)state;
    refusals_t r = {.kind = &refusals_requests};
    assert_int_equal(take_n(&r, "politie/bvh-koppeling", REFUSALS_REQUESTS_PER_PRINCIPAL + 40, T0),
                     REFUSALS_REQUESTS_PER_PRINCIPAL);
    char principal[64];
    unsigned full = 0;
    for (unsigned i = 0; i < REFUSALS_PEERS + 20; i++) {
        snprintf(principal, sizeof principal, "woco-%u/meldingen", i);
        full += take_n(&r, principal, 1, T0);
    }
    assert_int_equal(full, REFUSALS_PEERS + 20); /* 20 beyond the table: recorded too */
    full = 0;
    for (unsigned i = 0; i < REFUSALS_REQUESTS_PER_WINDOW; i++) {
        snprintf(principal, sizeof principal, "riec-%u/analyse", i % 4);
        full += take_n(&r, principal, 1, T0);
    }
    /* four more principals' shares, until the window's total is reached */
    assert_int_equal(full, REFUSALS_REQUESTS_PER_WINDOW - REFUSALS_REQUESTS_PER_PRINCIPAL -
                               REFUSALS_PEERS - 20);
    char text[4096];
    uint64_t counted = refusals_summary(&r, T0 + REFUSALS_WINDOW_S, 0, text, sizeof text);
    assert_int_equal(counted, 40 + REFUSALS_REQUESTS_PER_WINDOW - full);
    assert_non_null(strstr(text, " principals=politie/bvh-koppeling:40,"));
    assert_ptr_equal(r.kind, &refusals_requests);
    assert_int_equal(take_n(&r, "politie/bvh-koppeling", 1, T0 + 100), 1);
}

static void test_long_peer_is_cut(void **state)
{
    (void)state;
    refusals_t r = {0};
    char peer[200];
    memset(peer, 'p', sizeof peer - 1);
    peer[sizeof peer - 1] = '\0';
    assert_int_equal(take_n(&r, peer, REFUSALS_PER_PEER + 1, T0), REFUSALS_PER_PEER);
    assert_int_equal(r.n_peers, 1);
    assert_int_equal(strlen(r.peers[0].peer), REFUSALS_PEER_LEN);
    /* a second long address with the same first 160 bytes is the same peer */
    peer[REFUSALS_PEER_LEN + 10] = 'q';
    assert_int_equal(take_n(&r, peer, 1, T0), 0);
    assert_int_equal(r.n_peers, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_per_peer_and_per_window),
        cmocka_unit_test(test_window_total_and_peers_beyond_the_table),
        cmocka_unit_test(test_requests_per_principal),
        cmocka_unit_test(test_long_peer_is_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
