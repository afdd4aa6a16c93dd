/* test_session.c — sessions and receivers: identity, takeover, expiry. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "session.h"

/* Linked with -Wl,--wrap=malloc (Makefile: UNIT_LDFLAGS_test_session):
 * the next malloc of session.c or table.c fails while fail_malloc is set. */
void *__real_malloc(size_t size);
void *__wrap_malloc(size_t size);
static int fail_malloc;

void *__wrap_malloc(size_t size)
{
    if (fail_malloc) {
        fail_malloc = 0;
        return NULL;
    }
    return __real_malloc(size);
}

static const uint8_t rid_a[5] = {0, 'a', 'a', 'a', 'a'};
static const uint8_t rid_b[5] = {0, 'b', 'b', 'b', 'b'};
static int over;

static void test_identity_is_the_principal(void **state)
{
    (void)state;
    sessions_t *s = sessions_new();
    session_t *one = sessions_touch(s, rid_a, 5, "politie/bvh", "K", 1000, 16, &over);
    assert_non_null(one);
    assert_ptr_equal(sessions_touch(s, rid_a, 5, "politie/bvh", "K", 2000, 16, &over), one);
    assert_int_equal(one->last_seen_ms, 2000);
    /* The same routing id with another authenticated principal is another
     * session: the routing id is client-chosen and proves nothing. */
    receiver_t *r = sessions_receive(s, one, 10);
    assert_non_null(r);
    session_t *two = sessions_touch(s, rid_a, 5, "gemeente/meldingen", "K", 3000, 16, &over);
    assert_non_null(two);
    assert_string_equal(two->principal, "gemeente/meldingen");
    assert_null(r->session); /* the old principal's receiver lost its session */
    assert_int_equal(sessions_count(s), 1);
    /* The same routing id and principal with another key: a new session. */
    session_t *three = sessions_touch(s, rid_a, 5, "gemeente/meldingen", "OTHER", 3000, 16, &over);
    assert_non_null(three);
    assert_string_equal(three->key, "OTHER");
    assert_int_equal(sessions_count(s), 1);
    /* Refused inputs. */
    assert_null(sessions_touch(s, rid_a, 0, "x/y", "K", 0, 16, &over));
    sessions_destroy(&s);
    assert_null(s);
}

static void test_receiver_takeover_restarts_inflight(void **state)
{
    (void)state;
    sessions_t *s = sessions_new();
    session_t *first = sessions_touch(s, rid_a, 5, "om/parket", "K", 0, 16, &over);
    receiver_t *r = sessions_receive(s, first, 8);
    r->inflight = 5;
    r->cursor = 42;
    r->highest_sent = 42;
    /* Resizing the window on the same session keeps what is in flight. */
    assert_ptr_equal(sessions_receive(s, first, 16), r);
    assert_int_equal(r->inflight, 5);
    assert_int_equal(r->window, 16);
    /* A new session takes over: everything unacked goes out again. */
    session_t *second = sessions_touch(s, rid_b, 5, "om/parket", "K", 0, 16, &over);
    assert_ptr_equal(sessions_receive(s, second, 8), r);
    assert_ptr_equal(r->session, second);
    assert_int_equal(r->inflight, 0);
    assert_int_equal(r->cursor, 0);
    assert_int_equal(r->highest_sent, 42); /* so resent ones are flagged */
    assert_int_equal(r->dirty, 1);
    sessions_destroy(&s);
}

/* A Flow given back after a revocation: the session receives unless a
 * later Flow of another session receives (then it is that one's claim
 * and takes over when it ends), everything unacked sent again. */
static void test_restored_flow(void **state)
{
    (void)state;
    static const uint8_t rid_c[5] = {0, 'c', 'c', 'c', 'c'};
    sessions_t *s = sessions_new();
    session_t *first = sessions_touch(s, rid_a, 5, "om/parket", "K", 0, 16, &over);
    receiver_t *r = sessions_receive(s, first, 8);
    uint64_t order = first->flow_order;
    sessions_drop(s, first); /* revoked */
    assert_null(r->session);
    /* nobody received since: the restored one receives */
    session_t *back = sessions_touch(s, rid_a, 5, "om/parket", "K", 0, 16, &over);
    r->inflight = 3;
    r->cursor = 40;
    assert_ptr_equal(sessions_restore_flow(s, back, order, 8), r);
    assert_ptr_equal(r->session, back);
    assert_int_equal(back->flow_order, order);
    assert_int_equal(back->flow_window, 8);
    assert_int_equal(r->window, 8);
    assert_int_equal(r->inflight, 0);
    assert_int_equal(r->cursor, 0);
    assert_int_equal(r->dirty, 1);

    /* revoked again; another connection sends Flow meanwhile */
    sessions_drop(s, back);
    session_t *later = sessions_touch(s, rid_b, 5, "om/parket", "K", 0, 16, &over);
    assert_ptr_equal(sessions_receive(s, later, 4), r);
    r->inflight = 2;
    r->dirty = 0;
    back = sessions_touch(s, rid_a, 5, "om/parket", "K", 0, 16, &over);
    assert_ptr_equal(sessions_restore_flow(s, back, order, 8), r);
    assert_ptr_equal(r->session, later); /* the later Flow keeps receiving */
    assert_int_equal(r->window, 4);
    assert_int_equal(r->inflight, 2);
    assert_int_equal(r->dirty, 0);
    sessions_drop(s, later); /* ... until it ends: the restored claim takes over */
    assert_ptr_equal(r->session, back);
    assert_int_equal(r->window, 8);

    /* a restored Flow later than the receiving session's: it takes over */
    session_t *c = sessions_touch(s, rid_c, 5, "om/parket", "K", 0, 16, &over);
    assert_ptr_equal(sessions_restore_flow(s, c, order + 100, 2), r);
    assert_ptr_equal(r->session, c);
    /* a principal without receiver state gets one */
    session_t *other = sessions_touch(s, rid_b, 5, "politie/bvh", "K", 0, 16, &over);
    receiver_t *pr = sessions_restore_flow(s, other, 5, 16);
    assert_non_null(pr);
    assert_ptr_equal(pr, sessions_receiver(s, "politie/bvh"));
    assert_ptr_equal(pr->session, other);
    sessions_destroy(&s);
}

static void test_expiry(void **state)
{
    (void)state;
    sessions_t *s = sessions_new();
    static const uint8_t rid_c[5] = {0, 'c', 'c', 'c', 'c'};
    session_t *receiving = sessions_touch(s, rid_a, 5, "om/parket", "K", 0, 16, &over);
    sessions_touch(s, rid_b, 5, "riec/analyse", "K", 15000, 16, &over);
    sessions_touch(s, rid_c, 5, "politie/bvh", "K", 0, 16, &over);
    receiver_t *r = sessions_receive(s, receiving, 8);
    /* The silent publisher goes; the silent receiver stays (quiet is not
     * dead); the recent one stays. */
    assert_int_equal(sessions_expire(s, 20000, 10000), 1);
    assert_int_equal(sessions_count(s), 2);
    assert_ptr_equal(r->session, receiving);
    assert_null(sessions_receiver(s, "politie/bvh"));
    /* Once it no longer receives (another connection took over), it can go. */
    session_t *newer = sessions_touch(s, rid_c, 5, "om/parket", "K", 20000, 16, &over);
    assert_ptr_equal(sessions_receive(s, newer, 8), r);
    assert_int_equal(sessions_expire(s, 20000, 10000), 1);
    assert_int_equal(sessions_count(s), 2);
    assert_ptr_equal(r->session, newer);
    sessions_destroy(&s);
}

/* What a principal's connections owe is counted in one count of the
 * principal, which no expiry or drop of a session resets; a session whose
 * connection still owes bytes does not expire (its next frame would make
 * a session counted from 0 on the same connection). */
static void test_owed_bytes_outlive_sessions(void **state)
{
    (void)state;
    sessions_t *s = sessions_new();
    session_t *one = sessions_touch(s, rid_a, 5, "om/parket", "K", 0, 16, &over);
    session_t *two = sessions_touch(s, rid_b, 5, "om/parket", "K", 0, 16, &over);
    session_t *other =
        sessions_touch(s, (const uint8_t *)"\0cccc", 5, "riec/analyse", "K", 0, 16, &over);
    assert_non_null(one);
    assert_non_null(two);
    assert_non_null(other);
    sendq_t *frame = sendq_hold(one->queue); /* a frame of it in libzmq */
    sendq_add(frame, 3000, 0);
    sendq_add(two->queue, 500, 1);
    assert_int_equal(sendq_shared_bytes(one->queue), 3500);
    assert_int_equal(sendq_shared_bytes(two->queue), 3500);
    assert_int_equal(sendq_shared_bytes(other->queue), 0); /* another principal's */
    /* silent for the timeout: the one whose connection owes nothing goes
     * (the other principal's), those still owed stay */
    assert_int_equal(sessions_expire(s, 20000, 10000), 1);
    assert_int_equal(sessions_count(s), 2);
    sendq_sub(two->queue, 500, 1);
    assert_int_equal(sessions_expire(s, 20000, 10000), 1); /* two owes nothing now */
    assert_int_equal(sessions_count(s), 1);
    /* dropped all the same (its connection closed, or at the cap): a new
     * session of the principal starts with what the principal is owed */
    sessions_drop(s, one);
    session_t *again = sessions_touch(s, rid_a, 5, "om/parket", "K", 20000, 16, &over);
    assert_non_null(again);
    assert_int_equal(sendq_bytes(again->queue), 0);
    assert_int_equal(sendq_shared_bytes(again->queue), 3000);
    sendq_sub(frame, 3000, 0);
    assert_int_equal(sendq_shared_bytes(again->queue), 0);
    sendq_release(&frame);
    sessions_destroy(&s);
}

/* Unknown acks: an Ack may go while the bucket holds a token; its unknown
 * seqs are taken after (below 0 by one Ack's worth), and the bucket fills
 * at the rate, a second's worth at most; a principal's bucket is its own. */
static void test_unknown_ack_rate(void **state)
{
    (void)state;
    sessions_t *s = sessions_new();
    assert_int_equal(sessions_allow_unknown_acks(s, "om/parket", 1000, 100), 1);
    sessions_count_unknown_acks(s, "om/parket", 60);
    assert_int_equal(sessions_allow_unknown_acks(s, "om/parket", 1000, 100), 1);
    sessions_count_unknown_acks(s, "om/parket", 1024); /* one Ack of 1,024: 40 - 1024 */
    assert_int_equal(sessions_allow_unknown_acks(s, "om/parket", 1000, 100), 0);
    assert_int_equal(sessions_allow_unknown_acks(s, "riec/analyse", 1000, 100), 1);
    /* 984 in debt at 100 a second: 9.85 s to one token */
    assert_int_equal(sessions_allow_unknown_acks(s, "om/parket", 10840, 100), 0);
    assert_int_equal(sessions_allow_unknown_acks(s, "om/parket", 10850, 100), 1);
    /* never more than a second's worth saved */
    assert_int_equal(sessions_allow_unknown_acks(s, "om/parket", 3600000, 100), 1);
    sessions_count_unknown_acks(s, "om/parket", 100);
    assert_int_equal(sessions_allow_unknown_acks(s, "om/parket", 3600000, 100), 0);
    /* a drop or expiry of its sessions does not fill it */
    session_t *one = sessions_touch(s, rid_a, 5, "om/parket", "K", 3600000, 16, &over);
    sessions_drop(s, one);
    assert_int_equal(sessions_allow_unknown_acks(s, "om/parket", 3600000, 100), 0);
    sessions_count_unknown_acks(s, "nobody/seen", 5); /* never seen: nothing to count */
    sessions_destroy(&s);
}

static int is_riec(const session_t *session, void *arg)
{
    (void)arg;
    return strncmp(session->principal, "riec/", 5) == 0;
}

static void test_drop_where(void **state)
{
    (void)state;
    sessions_t *s = sessions_new();
    sessions_touch(s, rid_a, 5, "om/parket", "K", 0, 16, &over);
    sessions_touch(s, rid_b, 5, "riec/analyse", "K", 0, 16, &over);
    assert_int_equal(sessions_drop_where(s, is_riec, NULL), 1);
    assert_int_equal(sessions_count(s), 1);
    sessions_destroy(&s);
}

/* Without memory for its list, a revocation still drops every session it
 * names: one at a time. */
static void test_drop_where_without_memory(void **state)
{
    (void)state;
    static const uint8_t rid_c[5] = {0, 'c', 'c', 'c', 'c'};
    sessions_t *s = sessions_new();
    sessions_touch(s, rid_a, 5, "riec/analyse", "K", 0, 16, &over);
    sessions_touch(s, rid_b, 5, "om/parket", "K", 0, 16, &over);
    sessions_touch(s, rid_c, 5, "riec/analyse", "K2", 0, 16, &over);
    fail_malloc = 1;
    assert_int_equal(sessions_drop_where(s, is_riec, NULL), 2);
    assert_int_equal(fail_malloc, 0); /* the list's malloc was the one failed */
    assert_int_equal(sessions_count(s), 1);
    sessions_destroy(&s);
}

/* A connection's close ends its sessions, and only those. */
static void test_drop_fd(void **state)
{
    (void)state;
    static const uint8_t rid_c[5] = {0, 'c', 'c', 'c', 'c'};
    sessions_t *s = sessions_new();
    session_t *a = sessions_touch(s, rid_a, 5, "om/parket", "K", 0, 16, &over);
    session_t *b = sessions_touch(s, rid_b, 5, "om/parket", "K", 0, 16, &over);
    session_t *c = sessions_touch(s, rid_c, 5, "riec/analyse", "K", 0, 16, &over);
    a->fd = 7;
    b->fd = 8;
    c->fd = 7; /* a stale session of an earlier connection on the same socket */
    assert_int_equal(sessions_drop_fd(s, 9), 0);
    assert_int_equal(sessions_drop_fd(s, 7), 2);
    assert_int_equal(sessions_count(s), 1);
    assert_int_equal(sessions_drop_fd(s, 7), 0);
    assert_int_equal(sessions_drop_fd(s, 8), 1);
    assert_int_equal(sessions_count(s), 0);
    sessions_destroy(&s);
}

/* When the receiving session ends, receiving goes back to the principal's
 * session with the latest Flow before it, with that Flow's window, and
 * everything unacked goes out again; a session that never sent Flow does
 * not receive. */
static void test_receiving_goes_back_when_its_session_ends(void **state)
{
    (void)state;
    static const uint8_t rid_c[5] = {0, 'c', 'c', 'c', 'c'};
    static const uint8_t rid_d[5] = {0, 'd', 'd', 'd', 'd'};
    sessions_t *s = sessions_new();
    session_t *a = sessions_touch(s, rid_a, 5, "om/parket", "K", 0, 16, &over);
    session_t *b = sessions_touch(s, rid_b, 5, "om/parket", "K", 0, 16, &over);
    session_t *c = sessions_touch(s, rid_c, 5, "om/parket", "K", 0, 16, &over);
    session_t *other = sessions_touch(s, rid_d, 5, "riec/analyse", "K", 0, 16, &over);
    assert_non_null(sessions_receive(s, other, 99));
    receiver_t *r = sessions_receive(s, a, 4);
    assert_non_null(sessions_receive(s, b, 8));
    assert_ptr_equal(sessions_receive(s, c, 16), r);
    assert_ptr_equal(sessions_receive(s, b, 32), r); /* b's Flow is now the later one */
    assert_ptr_equal(r->session, b);
    r->inflight = 5;
    r->cursor = 42;
    r->dirty = 0;
    sessions_drop(s, b);
    assert_ptr_equal(r->session, c); /* not a: c's Flow came after a's */
    assert_int_equal(r->window, 16);
    assert_int_equal(r->inflight, 0);
    assert_int_equal(r->cursor, 0);
    assert_int_equal(r->dirty, 1);
    /* a session that is not receiving ends: nothing moves */
    sessions_drop(s, a);
    assert_ptr_equal(r->session, c);
    /* the last one with a Flow ends: a session without one does not get it */
    static const uint8_t rid_e[5] = {0, 'e', 'e', 'e', 'e'};
    assert_non_null(sessions_touch(s, rid_e, 5, "om/parket", "K", 0, 16, &over));
    sessions_drop(s, c);
    assert_null(r->session);
    assert_int_equal(r->inflight, 0);
    /* the other principal's receiving was never touched */
    assert_ptr_equal(sessions_receiver(s, "riec/analyse")->session, other);
    sessions_destroy(&s);
}

/* At the cap, a quiet session that never sent Flow makes room before an
 * older one that did: that one may take receiving back. */
static void test_cap_keeps_a_claim_to_receive(void **state)
{
    (void)state;
    static const uint8_t rid_c[5] = {0, 'c', 'c', 'c', 'c'};
    static const uint8_t rid_d[5] = {0, 'd', 'd', 'd', 'd'};
    sessions_t *s = sessions_new();
    session_t *a = sessions_touch(s, rid_a, 5, "om/parket", "K", 0, 3, &over);
    session_t *b = sessions_touch(s, rid_b, 5, "om/parket", "K", 0, 3, &over);
    assert_non_null(sessions_touch(s, rid_c, 5, "om/parket", "K", 1, 3, &over));
    receiver_t *r = sessions_receive(s, a, 4);
    assert_ptr_equal(sessions_receive(s, b, 8), r); /* b takes over; a keeps its claim */
    int64_t later = SCHAKEL_SESSION_ACTIVE_MS + 10;
    assert_non_null(sessions_touch(s, rid_d, 5, "om/parket", "K", later, 3, &over));
    assert_int_equal(sessions_count(s), 3);
    assert_ptr_equal(sessions_touch(s, rid_a, 5, "om/parket", "K", later, 3, &over), a);
    sessions_drop(s, b);
    assert_ptr_equal(r->session, a);
    assert_int_equal(r->window, 4);
    sessions_destroy(&s);
}

/* A standby (a Flow, another session receiving) ended at the cap to make
 * room hands its claim to the broker, once, for its connection to get back
 * (sessions_restore_flow) in its place: behind the receiving session's,
 * and receiving when that one ends. A session without a Flow leaves none. */
static void test_cap_hands_over_an_ended_claim(void **state)
{
    (void)state;
    static const uint8_t rid_c[5] = {0, 'c', 'c', 'c', 'c'};
    sessions_t *s = sessions_new();
    int fd = -1;
    uint64_t order = 0;
    uint32_t window = 0;
    session_t *standby = sessions_touch(s, rid_a, 5, "om/parket", "K", 0, 2, &over);
    standby->fd = 7;
    receiver_t *r = sessions_receive(s, standby, 4);
    uint64_t standby_order = standby->flow_order;
    session_t *active = sessions_touch(s, rid_b, 5, "om/parket", "K", 0, 2, &over);
    active->fd = 8;
    assert_ptr_equal(sessions_receive(s, active, 8), r);
    assert_int_equal(sessions_take_evicted_claim(s, &fd, &order, &window), 0);
    int64_t later = SCHAKEL_SESSION_ACTIVE_MS + 10;
    session_t *third = sessions_touch(s, rid_c, 5, "om/parket", "K", later, 2, &over);
    assert_non_null(third);
    third->fd = 9;
    assert_int_equal(sessions_take_evicted_claim(s, &fd, &order, &window), 1);
    assert_int_equal(fd, 7);
    assert_int_equal(order, standby_order);
    assert_int_equal(window, 4);
    assert_int_equal(sessions_take_evicted_claim(s, &fd, &order, &window), 0); /* once */
    assert_ptr_equal(r->session, active);

    /* the standby's connection comes back (the third's quiet session makes
     * room, leaving no claim) and gets its claim: behind the active one */
    int64_t quiet = 2 * later;
    session_t *back = sessions_touch(s, rid_a, 5, "om/parket", "K", quiet, 2, &over);
    assert_non_null(back);
    assert_int_equal(sessions_take_evicted_claim(s, &fd, &order, &window), 0);
    assert_ptr_equal(sessions_restore_flow(s, back, standby_order, 4), r);
    assert_ptr_equal(r->session, active);
    sessions_drop(s, active);
    assert_ptr_equal(r->session, back);
    assert_int_equal(r->window, 4);
    sessions_destroy(&s);
}

/* A Flow that stands by (over the principal's cap of claims) leaves
 * receiving where it is: same session, window, in-flight state, nothing
 * sent again; the receiving session keeps the latest Flow, so that a
 * claim given back later waits behind it, and the one standing by takes
 * over when it ends. With nobody receiving it receives. Claims are
 * counted per principal as Flows come and sessions end. */
static void test_stand_by_leaves_receiving_alone(void **state)
{
    (void)state;
    static const uint8_t rid_c[5] = {0, 'c', 'c', 'c', 'c'};
    static const uint8_t rid_d[5] = {0, 'd', 'd', 'd', 'd'};
    sessions_t *s = sessions_new();
    session_t *a = sessions_touch(s, rid_a, 5, "om/parket", "K", 0, 16, &over);
    session_t *b = sessions_touch(s, rid_b, 5, "om/parket", "K", 0, 16, &over);
    session_t *c = sessions_touch(s, rid_c, 5, "om/parket", "K", 0, 16, &over);
    assert_int_equal(sessions_claims(s, "om/parket"), 0);
    receiver_t *r = sessions_stand_by(s, a, 4); /* nobody receives: it does */
    assert_non_null(r);
    assert_ptr_equal(r->session, a);
    uint64_t a_order = a->flow_order;
    assert_ptr_equal(sessions_receive(s, b, 8), r);
    assert_int_equal(sessions_claims(s, "om/parket"), 2);
    r->inflight = 3;
    r->cursor = 42;
    r->dirty = 0;
    assert_ptr_equal(sessions_stand_by(s, c, 16), r);
    assert_ptr_equal(r->session, b);
    assert_int_equal(r->window, 8);
    assert_int_equal(r->inflight, 3);
    assert_int_equal(r->cursor, 42);
    assert_int_equal(r->dirty, 0);
    assert_true(c->flow_order > 0);
    assert_true(b->flow_order > c->flow_order);
    assert_int_equal(sessions_claims(s, "om/parket"), 3);
    assert_ptr_equal(sessions_stand_by(s, b, 9), r); /* the receiving one: its window */
    assert_int_equal(r->window, 9);
    assert_int_equal(sessions_claims(s, "om/parket"), 3);

    /* c's claim ends with its session (ended at the cap, its connection
     * open) and comes back with its next frame: it waits behind b, though
     * c's Flow was read after b's */
    uint64_t c_order = c->flow_order;
    sessions_drop(s, c);
    assert_int_equal(sessions_claims(s, "om/parket"), 2);
    session_t *back = sessions_touch(s, rid_d, 5, "om/parket", "K", 0, 16, &over);
    assert_int_equal(sessions_claims(s, "om/parket"), 2); /* no Flow yet */
    assert_ptr_equal(sessions_restore_flow(s, back, c_order, 16), r);
    assert_ptr_equal(r->session, b);
    assert_int_equal(r->inflight, 3);
    assert_int_equal(sessions_claims(s, "om/parket"), 3);

    /* b ends: the latest of the others, c's claim (not a's), receives
     * with its window, everything unacked sent again */
    sessions_drop(s, b);
    assert_ptr_equal(r->session, back);
    assert_true(a_order < back->flow_order);
    assert_int_equal(r->window, 16);
    assert_int_equal(r->inflight, 0);
    assert_int_equal(r->cursor, 0);
    assert_int_equal(sessions_claims(s, "om/parket"), 2);
    sessions_drop(s, a);
    assert_int_equal(sessions_claims(s, "om/parket"), 1);
    assert_int_equal(sessions_claims(s, "riec/analyse"), 0);
    sessions_destroy(&s);
}

static void test_connection_cap(void **state)
{
    (void)state;
    sessions_t *s = sessions_new();
    static const uint8_t rid_c[5] = {0, 'c', 'c', 'c', 'c'};
    assert_non_null(sessions_touch(s, rid_a, 5, "politie/bvh", "K", 0, 2, &over));
    assert_non_null(sessions_touch(s, rid_b, 5, "politie/bvh", "K", 0, 2, &over));
    /* an existing session is still found at the cap ... */
    assert_non_null(sessions_touch(s, rid_a, 5, "politie/bvh", "K", 1, 2, &over));
    assert_int_equal(over, 0);
    /* ... a third is refused, and says why */
    assert_null(sessions_touch(s, rid_c, 5, "politie/bvh", "K", 0, 2, &over));
    assert_int_equal(over, 1);
    /* another principal is not affected */
    static const uint8_t rid_d[5] = {0, 'd', 'd', 'd', 'd'};
    assert_non_null(sessions_touch(s, rid_d, 5, "om/parket", "K", 0, 2, &over));
    assert_int_equal(over, 0);
    /* once the old ones are quiet, a reconnecting client's new session
     * takes the place of the least recently seen one (rid_b, seen at 0) */
    int64_t later = SCHAKEL_SESSION_ACTIVE_MS + 10;
    session_t *fresh = sessions_touch(s, rid_c, 5, "politie/bvh", "K", later, 2, &over);
    assert_non_null(fresh);
    assert_int_equal(over, 0);
    assert_int_equal(sessions_count(s), 3);
    /* rid_b is gone: touching it again is a new session, which in turn
     * evicts rid_a (seen at 1), never the receiving one */
    assert_non_null(sessions_receive(s, fresh, 8));
    assert_non_null(sessions_touch(s, rid_b, 5, "politie/bvh", "K", later, 2, &over));
    assert_int_equal(sessions_count(s), 3);
    static const uint8_t rid_e[5] = {0, 'e', 'e', 'e', 'e'};
    /* now both are active (seen at `later`): a third is refused */
    assert_null(sessions_touch(s, rid_e, 5, "politie/bvh", "K", later, 2, &over));
    assert_int_equal(over, 1);
    sessions_destroy(&s);
}

static void test_publish_rate(void **state)
{
    (void)state;
    sessions_t *s = sessions_new();
    /* 10 per second: a full bucket of 10, then refused ... */
    int allowed = 0;
    for (int i = 0; i < 25; i++)
        allowed += sessions_allow_publish(s, "politie/bvh", 1000, 10);
    assert_int_equal(allowed, 10);
    /* ... other principals have their own bucket ... */
    assert_int_equal(sessions_allow_publish(s, "om/parket", 1000, 10), 1);
    /* ... 300 ms later three more, and never more than a second's worth */
    allowed = 0;
    for (int i = 0; i < 10; i++)
        allowed += sessions_allow_publish(s, "politie/bvh", 1300, 10);
    assert_int_equal(allowed, 3);
    allowed = 0;
    for (int i = 0; i < 50; i++)
        allowed += sessions_allow_publish(s, "politie/bvh", 60000, 10);
    assert_int_equal(allowed, 10);
    sessions_destroy(&s);
}

/* Handshakes: a minute's worth at once, then one per 60/N seconds; a
 * principal's publishes and handshakes are rationed apart. */
static void test_handshake_rate(void **state)
{
    (void)state;
    sessions_t *s = sessions_new();
    assert_non_null(s);
    int allowed = 0;
    for (int i = 0; i < 10; i++)
        allowed += sessions_allow_handshake(s, "politie/bvh", 5000, 6);
    assert_int_equal(allowed, 6);
    assert_int_equal(sessions_allow_publish(s, "politie/bvh", 5000, 10), 1);
    assert_int_equal(sessions_allow_handshake(s, "om/parket", 5000, 6), 1);
    /* 6 a minute: one more every 10 s */
    assert_int_equal(sessions_allow_handshake(s, "politie/bvh", 14999, 6), 0);
    assert_int_equal(sessions_allow_handshake(s, "politie/bvh", 15000, 6), 1);
    assert_int_equal(sessions_allow_handshake(s, "politie/bvh", 15001, 6), 0);
    /* never more than a minute's worth saved */
    allowed = 0;
    for (int i = 0; i < 20; i++)
        allowed += sessions_allow_handshake(s, "politie/bvh", 3600000, 6);
    assert_int_equal(allowed, 6);
    sessions_destroy(&s);
}

/* One case open of `principal` (of `partner`) at now_ms: 1 if allowed. A
 * partner budget of 1000 an hour is out of the way of the principal's. */
static int open_ok(sessions_t *s, const char *principal, const char *partner, int64_t now_ms,
                   uint32_t per_hour, uint32_t partner_per_hour)
{
    return sessions_allow_case_open(s, principal, partner, now_ms, per_hour, partner_per_hour) ==
           CASE_OPEN_ALLOWED;
}

/* Case opens: an hour's worth at once, then one per 3600/N seconds; a
 * principal's budget is its own, apart from its publishes and from every
 * other principal's. */
static void test_case_open_budget(void **state)
{
    (void)state;
    sessions_t *s = sessions_new();
    assert_non_null(s);
    int allowed = 0;
    for (int i = 0; i < 10; i++)
        allowed += open_ok(s, "riec/coordinator", "riec", 1000, 4, 1000);
    assert_int_equal(allowed, 4);
    assert_int_equal(sessions_allow_case_open(s, "riec/coordinator", "riec", 1000, 4, 1000),
                     CASE_OPEN_DENIED);
    assert_int_equal(sessions_allow_publish(s, "riec/coordinator", 1000, 10), 1);
    assert_int_equal(open_ok(s, "politie/bvh", "politie", 1000, 4, 1000), 1);
    /* 4 an hour: one more every 15 minutes, none before */
    assert_int_equal(open_ok(s, "riec/coordinator", "riec", 1000 + 899999, 4, 1000), 0);
    assert_int_equal(open_ok(s, "riec/coordinator", "riec", 1000 + 900000, 4, 1000), 1);
    assert_int_equal(open_ok(s, "riec/coordinator", "riec", 1000 + 900001, 4, 1000), 0);
    /* never more than an hour's worth saved */
    allowed = 0;
    for (int i = 0; i < 20; i++)
        allowed += open_ok(s, "riec/coordinator", "riec", 48 * 3600000LL, 4, 1000);
    assert_int_equal(allowed, 4);
    sessions_destroy(&s);
}

/* A partner's budget is shared by its principals, each of which also has
 * its own; another partner's is apart. Both must allow an open, and a
 * refusal by either takes no token from the other. */
static void test_case_open_budget_per_partner(void **state)
{
    (void)state;
    sessions_t *s = sessions_new();
    assert_non_null(s);
    /* partner riec: 3 an hour in all; each principal: 2 */
    assert_int_equal(open_ok(s, "riec/a", "riec", 1000, 2, 3), 1);
    assert_int_equal(open_ok(s, "riec/a", "riec", 1000, 2, 3), 1);
    assert_int_equal(sessions_allow_case_open(s, "riec/a", "riec", 1000, 2, 3), CASE_OPEN_DENIED);
    assert_int_equal(open_ok(s, "riec/b", "riec", 1000, 2, 3), 1);
    /* riec/b has one of its own left, but its partner has none */
    assert_int_equal(sessions_allow_case_open(s, "riec/b", "riec", 1000, 2, 3),
                     CASE_OPEN_DENIED_PARTNER);
    assert_int_equal(sessions_allow_case_open(s, "riec/c", "riec", 1000, 2, 3),
                     CASE_OPEN_DENIED_PARTNER);
    /* another partner is unaffected */
    assert_int_equal(open_ok(s, "politie/bvh", "politie", 1000, 2, 3), 1);
    /* the partner's refusals took nothing from riec/c: twenty minutes on
     * (one partner token back) it opens once more */
    assert_int_equal(open_ok(s, "riec/c", "riec", 1000 + 1200000, 2, 3), 1);
    assert_int_equal(sessions_allow_case_open(s, "riec/c", "riec", 1000 + 1200000, 2, 3),
                     CASE_OPEN_DENIED_PARTNER);
    /* a principal's refusal took nothing from its partner */
    assert_int_equal(open_ok(s, "gemeente/a", "gemeente", 1000, 1, 2), 1);
    assert_int_equal(open_ok(s, "gemeente/a", "gemeente", 1000, 1, 2), 0);
    assert_int_equal(open_ok(s, "gemeente/b", "gemeente", 1000, 1, 2), 1);
    assert_int_equal(sessions_allow_case_open(s, "gemeente/c", "gemeente", 1000, 1, 2),
                     CASE_OPEN_DENIED_PARTNER);
    sessions_destroy(&s);
}

/* The tokens of the turn's opens are kept when it commits and given back
 * when it rolls back, the partner's with the principal's; never past an
 * hour's worth. */
static void test_case_open_budget_follows_the_turn(void **state)
{
    (void)state;
    sessions_t *s = sessions_new();
    assert_non_null(s);
    assert_int_equal(open_ok(s, "riec/a", "riec", 1000, 2, 2), 1);
    sessions_case_opens_settle(s, 1); /* committed: used */
    assert_int_equal(open_ok(s, "riec/a", "riec", 1000, 2, 2), 1);
    assert_int_equal(open_ok(s, "riec/a", "riec", 1000, 2, 2), 0);
    sessions_case_opens_settle(s, 0); /* rolled back: the second is back */
    assert_int_equal(open_ok(s, "riec/a", "riec", 1000, 2, 2), 1);
    assert_int_equal(open_ok(s, "riec/a", "riec", 1000, 2, 2), 0);
    sessions_case_opens_settle(s, 1);
    sessions_case_opens_settle(s, 0); /* nothing of this turn: nothing back */
    assert_int_equal(open_ok(s, "riec/b", "riec", 1000, 2, 2), 0); /* the partner's are used */
    /* half an hour on, one partner token: riec/b opens; rolled back, the
     * partner's token is back with riec/b's */
    assert_int_equal(open_ok(s, "riec/b", "riec", 1000 + 1800000, 2, 2), 1);
    assert_int_equal(open_ok(s, "riec/b", "riec", 1000 + 1800000, 2, 2), 0);
    sessions_case_opens_settle(s, 0);
    assert_int_equal(open_ok(s, "riec/b", "riec", 1000 + 1800000, 2, 2), 1);
    /* what comes back never fills a bucket past an hour's worth: a token
     * taken, an hour (full again) and one more taken, both given back */
    assert_int_equal(open_ok(s, "politie/bvh", "politie", 1000, 2, 8), 1);
    assert_int_equal(open_ok(s, "politie/bvh", "politie", 1000 + 3600000, 2, 8), 1);
    sessions_case_opens_settle(s, 0);
    int allowed = 0;
    for (int i = 0; i < 5; i++)
        allowed += open_ok(s, "politie/bvh", "politie", 1000 + 3600000, 2, 8);
    assert_int_equal(allowed, 2);
    sessions_destroy(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_is_the_principal),
        cmocka_unit_test(test_receiver_takeover_restarts_inflight),
        cmocka_unit_test(test_restored_flow),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_drop_where),
        cmocka_unit_test(test_drop_where_without_memory),
        cmocka_unit_test(test_drop_fd),
        cmocka_unit_test(test_receiving_goes_back_when_its_session_ends),
        cmocka_unit_test(test_cap_keeps_a_claim_to_receive),
        cmocka_unit_test(test_cap_hands_over_an_ended_claim),
        cmocka_unit_test(test_stand_by_leaves_receiving_alone),
        cmocka_unit_test(test_connection_cap),
        cmocka_unit_test(test_publish_rate),
        cmocka_unit_test(test_handshake_rate),
        cmocka_unit_test(test_owed_bytes_outlive_sessions),
        cmocka_unit_test(test_unknown_ack_rate),
        cmocka_unit_test(test_case_open_budget),
        cmocka_unit_test(test_case_open_budget_per_partner),
        cmocka_unit_test(test_case_open_budget_follows_the_turn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
