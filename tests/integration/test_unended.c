/*
 * test_unended.c — multipart messages that never end: a client of its own
 * ZMTP code (zmtp_raw) sends parts with the MORE flag and never the last.
 * libzmq keeps such parts in the broker until the last comes; the broker
 * finds the bytes it holds and shuts the connection down (conns.h).
 *
 * Parts of 256 KiB and parts of 0 or 1 byte are cut within the bound and a
 * second or two of sending, the broker's memory stays bounded, and other
 * clients publish and receive meanwhile. Nothing a well-behaved client does
 * is cut: a complete multipart message larger than the bound (answered
 * TOO_MANY_FRAMES), bulk publishes near the frame limit to a broker that
 * is busy and reads them late, an idle connection with ZMTP heartbeats.
 * "Not cut" is asserted after a check that did cut another connection
 * (so a check ran over the connection asserted on). Every wait is bounded;
 * the sender's pacing waits for the connection's close, never sleeps.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "schakel.pb-c.h"
#include "schakel_limits.h"
#include "zmtp_raw.h"

/* The principal that sends parts without end. */
#define HOSTILE H_WOCO_MAASOEVER

#define MIB (1024u * 1024u)
/* A part of the first test: the largest frame the broker serves. */
#define BIG_PART SCHAKEL_MAX_FRAME_BYTES
/* The sending bounds: 400 parts of 256 KiB (100 MiB), a million small ones
 * (35 MiB on the wire, 190 MiB or more in the broker), or 30 s. */
#define BIG_PARTS_MAX 400u
#define SMALL_PARTS_MAX 1000000u
#define SEND_MAX_MS 30000
/* How fast parts are sent: 12.5 MiB a second of 256 KiB parts, 1 MiB a
 * second of small ones (in bursts). */
#define BIG_PACE (25u * MIB / 2u)
#define SMALL_PACE (1u * MIB)
/* A connection must be cut once the broker holds the bound of it and what
 * two seconds (two checks) of sending add; under valgrind the pace is
 * h_time_factor() times slower, the seconds as many times more. */
#define CUT_MARGIN(pace) (SCHAKEL_HELD_BOUND_BYTES + 2u * (pace))
/* How much the broker may grow by the cut: the bytes sent by then, once
 * for 256 KiB parts, 18 times for small ones (150 to 600 bytes in the
 * broker for 35 or 36 on the wire, measured: libzmq's 64-byte message, its
 * share of the queue's chunks and of the read buffers, and what the
 * allocator does not give back), and 16 MiB for the other clients'
 * publishes; three times that under AddressSanitizer, whose allocator adds
 * its redzones and keeps what is freed for a while (libzmq's read buffers),
 * and not checked under valgrind (SCHAKEL_TEST_TIME_FACTOR above 1), which
 * keeps memory of its own for all the broker's.
 * Without the cut, the sending bounds grow it by 100 MiB (400 parts of 256
 * KiB) and by 190 MiB or more (a million small parts): measured. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_SCALE 3u
#else
#define RSS_SCALE 1u
#endif
#define RSS_GROWTH_MAX_KIB(pace, per_byte)                                                         \
    (RSS_SCALE * ((per_byte)*CUT_MARGIN(pace) / 1024u + 16u * 1024u))

static int64_t unended_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A Heartbeat frame, packed (malloc'd). */
static uint8_t *heartbeat_frame(size_t *len)
{
    Schakel__Heartbeat hb = SCHAKEL__HEARTBEAT__INIT;
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    frame.has_version = 1;
    frame.version = SCHAKEL_PROTOCOL_VERSION;
    frame.body_case = SCHAKEL__FRAME__BODY_HEARTBEAT;
    frame.heartbeat = &hb;
    *len = schakel__frame__get_packed_size(&frame);
    uint8_t *out = malloc(*len);
    assert_non_null(out);
    schakel__frame__pack(&frame, out);
    return out;
}

/* The broker's next frame on raw, decoded; it must have the given body. */
static Schakel__Frame *raw_expect(zmtp_raw_t *raw, const char *what, Schakel__Frame__BodyCase body)
{
    uint8_t *msg = NULL;
    size_t len = 0;
    int rc = zmtp_raw_recv(raw, &msg, &len, H_TIMEOUT_MS);
    if (rc != 1)
        fail_msg("%s: %s", what, rc == 0 ? "no answer in time" : "the connection was closed");
    Schakel__Frame *f = schakel__frame__unpack(NULL, len, msg);
    free(msg);
    if (f == NULL || f->body_case != body)
        fail_msg("%s: the answer is not the frame expected (body %d)", what,
                 f ? (int)f->body_case : -1);
    return f;
}

/* A Heartbeat round trip on raw's connection, answered for `principal`. */
static void raw_heartbeat(zmtp_raw_t *raw, const char *principal, const char *what)
{
    size_t len;
    uint8_t *frame = heartbeat_frame(&len);
    if (zmtp_raw_send(raw, frame, len, 0) != 0)
        fail_msg("%s: the connection was closed", what);
    free(frame);
    Schakel__Frame *f = raw_expect(raw, what, SCHAKEL__FRAME__BODY_HEARTBEAT);
    if (f->heartbeat->principal == NULL || strcmp(f->heartbeat->principal, principal) != 0)
        fail_msg("%s: the heartbeat's answer names another principal", what);
    schakel__frame__free_unpacked(f, NULL);
}

/* A police signal published by politie and received (and acked) by om:
 * the bystanders, on their own connections. */
static void bystanders_exchange(schakel_client_t *politie, schakel_client_t *om, const char *ref)
{
    schakel_signal_t signal = h_police_signal(ref);
    (void)h_publish_ok(politie, &signal, NULL, NULL, NULL, NULL);
    schakel_delivery_t *d = h_receive(om);
    if (d->source_ref == NULL || strcmp(d->source_ref, ref) != 0)
        fail_msg("om received %s, expected %s", d->source_ref ? d->source_ref : "(none)", ref);
    assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
    schakel_delivery_free(&d);
}

typedef struct unended_run {
    uint64_t parts;   /* parts sent before the connection was found closed */
    uint64_t bytes;   /* their bytes on the wire (the handshake not counted) */
    long rss_max_kib; /* the broker's largest VmRSS seen meanwhile */
    int cut;          /* the broker closed the connection */
} unended_run_t;

/* Send parts of part_len bytes (MORE set on every one) at `pace` bytes a
 * second in bursts of `burst`, up to max_parts or SEND_MAX_MS, until the broker
 * closes the connection; between bursts the bystanders exchange a signal
 * (when given) and the broker's memory is read. */
static unended_run_t send_unended(h_env_t *env, zmtp_raw_t *raw, size_t part_len, size_t burst,
                                  uint64_t max_parts, uint64_t pace, schakel_client_t *politie,
                                  schakel_client_t *om)
{
    static uint8_t part[BIG_PART];
    memset(part, 'p', sizeof part);
    unended_run_t run = {.rss_max_kib = h_broker_status_kib(env, "RssAnon")};
    uint64_t sent_before = zmtp_raw_sent_bytes(raw);
    int64_t start = unended_now_ms();
    unsigned exchanges = 0;
    pace /= (uint64_t)h_time_factor(); /* a broker under valgrind reads slower */
    while (!run.cut && run.parts < max_parts && unended_now_ms() - start < SEND_MAX_MS) {
        for (size_t i = 0; i < burst && run.parts < max_parts; i++) {
            /* the parts alternate between part_len and part_len + 1 bytes */
            if (zmtp_raw_send(raw, part, part_len + (run.parts & 1), 1) != 0) {
                run.cut = 1;
                break;
            }
            run.parts++;
        }
        run.bytes = zmtp_raw_sent_bytes(raw) - sent_before;
        long rss = h_broker_status_kib(env, "RssAnon");
        if (rss > run.rss_max_kib)
            run.rss_max_kib = rss;
        if (politie != NULL && !run.cut) {
            char ref[32];
            snprintf(ref, sizeof ref, "BVH-%u", ++exchanges);
            bystanders_exchange(politie, om, ref);
        }
        /* the pace: wait for the close until the bytes sent are due */
        int64_t due = start + (int64_t)(run.bytes * 1000u / pace);
        int64_t wait = due - unended_now_ms();
        if (!run.cut && wait > 0)
            run.cut = zmtp_raw_closed(raw, (int)wait);
    }
    if (!run.cut) /* the last burst's bytes: one more check to come */
        run.cut = zmtp_raw_closed(raw, 3000 * h_time_factor());
    return run;
}

/* The connection was cut past the bound and within its margin at `pace`,
 * the broker grown by at most per_byte times the margin (and room). */
static void expect_cut(const unended_run_t *run, long rss_before_kib, uint64_t pace,
                       uint64_t per_byte, const char *what)
{
    long growth = run->rss_max_kib - rss_before_kib;
    print_message("%s: %llu parts, %llu bytes sent; the broker grew by %ld KiB\n", what,
                  (unsigned long long)run->parts, (unsigned long long)run->bytes, growth);
    if (!run->cut)
        fail_msg("%s: not cut after %llu parts (%llu bytes)", what, (unsigned long long)run->parts,
                 (unsigned long long)run->bytes);
    if (run->bytes > CUT_MARGIN(pace))
        fail_msg("%s: cut only after %llu bytes (bound %u and two seconds' sending)", what,
                 (unsigned long long)run->bytes, (unsigned)CUT_MARGIN(pace));
    if (run->bytes <= SCHAKEL_HELD_BOUND_BYTES)
        fail_msg("%s: cut after %llu bytes, within the bound", what,
                 (unsigned long long)run->bytes);
    /* valgrind's own memory for what it watches is no broker's: not bounded */
    if (h_time_factor() == 1 && growth > (long)RSS_GROWTH_MAX_KIB(pace, per_byte))
        fail_msg("%s: the broker grew by %ld KiB (at most %llu)", what, growth,
                 (unsigned long long)RSS_GROWTH_MAX_KIB(pace, per_byte));
}

/* ---------------------------------------------------------------- tests */

static void test_unended_large_parts_are_cut(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *politie = h_connect(env, H_POLITIE), *om = h_connect(env, H_OM);
    assert_int_equal(schakel_subscribe(om, 8), SCHAKEL_OK);
    bystanders_exchange(politie, om, "BVH-0");
    zmtp_raw_t *raw = zmtp_raw_connect(env, HOSTILE);
    raw_heartbeat(raw, HOSTILE, "a frame before the parts"); /* the connection served one */
    long offset = h_log_offset(env), rss_before = h_broker_status_kib(env, "RssAnon");

    unended_run_t run =
        send_unended(env, raw, BIG_PART - 1, 1, BIG_PARTS_MAX, BIG_PACE, politie, om);
    expect_cut(&run, rss_before, BIG_PACE, 1, "parts of 256 KiB");
    if (h_await_log(env, offset,
                    "event=connection.cut_unfinished peer=127.0.0.1 principal=" HOSTILE,
                    H_TIMEOUT_MS) != 0)
        fail_msg("no connection.cut_unfinished line naming %s", HOSTILE);
    assert_int_equal(h_log_count(env, offset, "event=connection.cut_unfinished"), 1);
    zmtp_raw_close(&raw);

    /* the bystanders go on; the principal cut connects again and is served */
    bystanders_exchange(politie, om, "BVH-after");
    raw = zmtp_raw_connect(env, HOSTILE);
    raw_heartbeat(raw, HOSTILE, "after the cut");
    uint64_t made = 0;
    assert_int_equal(schakel_connections_made(politie, &made), SCHAKEL_OK);
    assert_int_equal(made, 1);
    assert_int_equal(schakel_connections_made(om, &made), SCHAKEL_OK);
    assert_int_equal(made, 1);
    zmtp_raw_close(&raw);
    schakel_close(&politie);
    schakel_close(&om);
    h_done(env);
}

static void test_unended_small_parts_are_cut(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *politie = h_connect(env, H_POLITIE), *om = h_connect(env, H_OM);
    assert_int_equal(schakel_subscribe(om, 8), SCHAKEL_OK);
    zmtp_raw_t *raw = zmtp_raw_connect(env, HOSTILE); /* no frame before: a silent connection */
    long offset = h_log_offset(env), rss_before = h_broker_status_kib(env, "RssAnon");

    /* parts of 0 and 1 byte: 35 and 36 on the wire, in bursts of 8,192 */
    unended_run_t run = send_unended(env, raw, 0, 8192, SMALL_PARTS_MAX, SMALL_PACE, politie, om);
    expect_cut(&run, rss_before, SMALL_PACE, 18, "parts of 0 and 1 byte");
    if (h_await_log(env, offset, "event=connection.cut_unfinished peer=127.0.0.1 principal=unknown",
                    H_TIMEOUT_MS) != 0)
        fail_msg("no connection.cut_unfinished line for a connection that served no frame");
    zmtp_raw_close(&raw);
    bystanders_exchange(politie, om, "BVH-after");
    schakel_close(&politie);
    schakel_close(&om);
    h_done(env);
}

/* Another connection sends parts of 256 KiB (which cost the broker no more
 * than their bytes) until it is cut: a check ran, over every connection
 * open before it began. Its line is the n-th cut since
 * the log's offset, and no other comes with it. */
static void witness_cut(h_env_t *env, long offset, int n, const char *what)
{
    zmtp_raw_t *witness = zmtp_raw_connect(env, H_WOCO_JEKERDAL);
    unended_run_t run =
        send_unended(env, witness, BIG_PART - 1, 1, BIG_PARTS_MAX, BIG_PACE, NULL, NULL);
    if (!run.cut)
        fail_msg("%s: the witness was not cut", what);
    zmtp_raw_close(&witness);
    /* the line follows the shutdown */
    if (h_await_log_lines(env, offset, "event=connection.cut_unfinished", n, H_TIMEOUT_MS) != 0)
        fail_msg("%s: no connection.cut_unfinished line for the witness", what);
    if (h_log_count(env, offset, "event=connection.cut_unfinished") != n)
        fail_msg("%s: another connection was cut with the witness", what);
}

static void test_complete_multipart_is_refused_not_cut(void **state)
{
    h_env_t *env = *state;
    zmtp_raw_t *raw = zmtp_raw_connect(env, HOSTILE);
    raw_heartbeat(raw, HOSTILE, "before the multipart message");
    /* 24 parts of 256 KiB: a message of 6 MiB, larger than the bound, whole */
    static uint8_t part[BIG_PART];
    memset(part, 'm', sizeof part);
    const unsigned n = 24;
    for (unsigned i = 0; i < n; i++)
        if (zmtp_raw_send(raw, part, sizeof part - 64, i + 1 < n) != 0)
            fail_msg("the connection was closed at part %u", i);
    Schakel__Frame *f = raw_expect(raw, "the multipart message", SCHAKEL__FRAME__BODY_REJECTED);
    assert_true(f->rejected->has_reason);
    assert_int_equal(f->rejected->reason, SCHAKEL__REASON__TOO_MANY_FRAMES);
    schakel__frame__free_unpacked(f, NULL);
    long offset = h_log_offset(env);

    witness_cut(env, offset, 1, "after a complete multipart message");
    raw_heartbeat(raw, HOSTILE, "after a check");
    assert_int_equal(zmtp_raw_closed(raw, 0), 0);
    zmtp_raw_close(&raw);
    h_done(env);
}

/* Publishes of 256 signals near the frame limit, SCHAKEL_MAX_IN_FLIGHT at a
 * time from each of four clients: libzmq reads them into the broker's
 * queues faster than the broker handles them (each a turn's worth of
 * items), so the checks meet connections whose bytes were read and whose
 * frames wait. None is cut, every publish is accepted on the connection it
 * was sent on. */
#define BULK_CLIENTS 4
#define BULK_ROUNDS 2

static void test_bulk_publishes_to_a_busy_broker_are_not_cut(void **state)
{
    h_env_t *env = *state;
    const char *senders[BULK_CLIENTS] = {H_POLITIE, H_POLITIE, H_WOCO_MAASOEVER, H_WOCO_JEKERDAL};
    schakel_client_t *clients[BULK_CLIENTS];
    for (int c = 0; c < BULK_CLIENTS; c++)
        clients[c] = h_connect(env, senders[c]);
    static char summary[SCHAKEL_MAX_SUMMARY_LEN + 1];
    static schakel_signal_t items[SCHAKEL_MAX_ITEMS];
    /* the longest summary with which 256 signals fit in one frame */
    size_t summary_len = 1200;
    schakel_status_t st = SCHAKEL_ERR_USAGE;
    uint8_t first_id[16];
    while (st == SCHAKEL_ERR_USAGE && summary_len > 100) {
        summary_len -= 20;
        memset(summary, 's', summary_len);
        summary[summary_len] = '\0';
        for (size_t i = 0; i < SCHAKEL_MAX_ITEMS; i++) {
            items[i] = h_police_signal("BVH-BULK");
            items[i].summary = summary;
        }
        st = schakel_publish_send(clients[0], NULL, items, SCHAKEL_MAX_ITEMS, NULL, first_id);
    }
    assert_int_equal(st, SCHAKEL_OK);
    long offset = h_log_offset(env);
    static schakel_publish_answer_t answer;
    for (int round = 0; round < BULK_ROUNDS; round++) {
        for (int c = 0; c < BULK_CLIENTS; c++)
            while (schakel_publishes_in_flight(clients[c]) < SCHAKEL_MAX_IN_FLIGHT) {
                st = schakel_publish_send(clients[c], NULL, items, SCHAKEL_MAX_ITEMS, NULL, NULL);
                if (st != SCHAKEL_OK)
                    fail_msg("bulk publish: %s", schakel_strerror(st));
            }
        for (int c = 0; c < BULK_CLIENTS; c++)
            while (schakel_publishes_in_flight(clients[c]) > 0) {
                st = schakel_publish_wait(clients[c], NULL, &answer, 3 * H_TIMEOUT_MS);
                if (st != SCHAKEL_OK || answer.status != SCHAKEL_OK)
                    fail_msg("bulk publish of client %d not accepted: %s %s", c,
                             schakel_strerror(st != SCHAKEL_OK ? st : answer.status),
                             answer.error.text);
            }
    }
    witness_cut(env, offset, 1, "after the bulk publishes");
    for (int c = 0; c < BULK_CLIENTS; c++) {
        uint64_t made = 0;
        assert_int_equal(schakel_connections_made(clients[c], &made), SCHAKEL_OK);
        if (made != 1)
            fail_msg("bulk client %d connected %llu times", c, (unsigned long long)made);
        schakel_close(&clients[c]);
    }
    h_done(env);
}

/* An idle receiving connection, ZMTP PINGs and PONGs its only traffic for
 * several checks (each witness is cut by one), stays. */
static void test_idle_connection_with_heartbeats_is_not_cut(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *om = h_connect(env, H_OM);
    assert_int_equal(schakel_subscribe(om, 8), SCHAKEL_OK);
    assert_int_equal(h_backlog(om), 0);
    long offset = h_log_offset(env);
    int64_t idle_since = unended_now_ms();
    /* witnesses until the connection has been idle through three heartbeat
     * intervals of the broker and its own */
    int witnesses = 0;
    while (witnesses < 2 ||
           unended_now_ms() - idle_since < 3 * SCHAKEL_ZMTP_HEARTBEAT_IVL_MS + 500) {
        witness_cut(env, offset, ++witnesses, "while om is idle");
    }
    uint64_t made = 0;
    assert_int_equal(h_backlog(om), 0);
    assert_int_equal(schakel_connections_made(om, &made), SCHAKEL_OK);
    assert_int_equal(made, 1);
    schakel_close(&om);
    h_done(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_unended_large_parts_are_cut, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_unended_small_parts_are_cut, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_complete_multipart_is_refused_not_cut, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_bulk_publishes_to_a_busy_broker_are_not_cut,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_idle_connection_with_heartbeats_is_not_cut,
                                        h_setup_broker, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
