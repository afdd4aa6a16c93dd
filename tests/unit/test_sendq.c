/*
 * test_sendq.c — a connection's count of queued bytes (broker/sendq.c):
 * up and down, never below 0, full for the push at
 * SCHAKEL_MAX_QUEUED_PUSH_BYTES and for answers at SCHAKEL_MAX_QUEUED_BYTES, and freed
 * by whichever holder lets go last, on the thread that does (libzmq's
 * I/O thread frees frames: here another thread counts down and releases
 * while this one does the same); a watched connection's frames freed
 * after it closed, or after its fd went to another socket, counted
 * dropped, and those freed while it is open not.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "schakel_limits.h"
#include "sendq.h"

static void test_counts_up_and_down(void **state)
{
    (void)state;
    sendq_t *q = sendq_new();
    assert_non_null(q);
    assert_int_equal(sendq_bytes(q), 0);
    assert_false(sendq_full(q));
    sendq_add(q, 1000, 0);
    sendq_add(q, 24, 0);
    assert_int_equal(sendq_bytes(q), 1024);
    sendq_sub(q, 1000, 0);
    assert_int_equal(sendq_bytes(q), 24);
    sendq_sub(q, 100, 0); /* more than counted: a defect, floored, never wrapped to full */
    assert_int_equal(sendq_bytes(q), 0);
    assert_false(sendq_full(q));
    sendq_add(q, SCHAKEL_MAX_QUEUED_PUSH_BYTES - 1, 0);
    assert_false(sendq_push_full(q));
    sendq_add(q, 1, 0);
    assert_true(sendq_push_full(q));
    assert_false(sendq_full(q));
    sendq_add(q, SCHAKEL_MAX_QUEUED_BYTES - SCHAKEL_MAX_QUEUED_PUSH_BYTES - 1, 0);
    assert_false(sendq_full(q));
    sendq_add(q, 1, 0);
    assert_true(sendq_full(q));
    sendq_sub(q, 1, 0);
    assert_false(sendq_full(q));
    assert_true(sendq_push_full(q));
    sendq_release(&q);
    assert_null(q);
}

/* A delivery's bytes are counted in all and apart: an answer's are not
 * among them (an ack timeout waits for deliveries only). */
static void test_deliveries_counted_apart(void **state)
{
    (void)state;
    sendq_t *q = sendq_new();
    assert_non_null(q);
    sendq_add(q, 37, 0); /* a Heartbeat's answer */
    assert_int_equal(sendq_push_bytes(q), 0);
    sendq_add(q, 1000, 1); /* a delivery */
    assert_int_equal(sendq_bytes(q), 1037);
    assert_int_equal(sendq_push_bytes(q), 1000);
    sendq_sub(q, 1000, 1);
    assert_int_equal(sendq_push_bytes(q), 0);
    assert_int_equal(sendq_bytes(q), 37);
    sendq_sub(q, 37, 0);
    sendq_sub(q, 5, 1); /* floored apart too */
    assert_int_equal(sendq_push_bytes(q), 0);
    assert_int_equal(sendq_push_bytes(NULL), 0);
    sendq_release(&q);
}

static void test_null_is_empty(void **state)
{
    (void)state;
    sendq_t *q = NULL;
    sendq_add(NULL, 5, 0);
    sendq_sub(NULL, 5, 0);
    assert_null(sendq_hold(NULL));
    assert_int_equal(sendq_bytes(NULL), 0);
    assert_false(sendq_full(NULL));
    assert_false(sendq_push_full(NULL));
    sendq_release(&q);
    sendq_release(NULL);
}

/* Two connections of one principal: each counts its own, and the
 * principal's count sums both (deliveries apart too); a connection's
 * frames stay counted in it after the connection's count is let go, and
 * the principal's count lives as long as one holds it. */
static void test_counted_within_the_principal(void **state)
{
    (void)state;
    sendq_t *principal = sendq_new();
    assert_non_null(principal);
    sendq_t *one = sendq_new_within(principal), *two = sendq_new_within(principal);
    assert_non_null(one);
    assert_non_null(two);
    sendq_add(one, 1000, 1);
    sendq_add(two, 24, 0);
    assert_int_equal(sendq_bytes(one), 1000);
    assert_int_equal(sendq_bytes(two), 24);
    assert_int_equal(sendq_bytes(principal), 1024);
    assert_int_equal(sendq_push_bytes(principal), 1000);
    assert_int_equal(sendq_shared_bytes(one), 1024);
    assert_int_equal(sendq_shared_bytes(two), 1024);
    assert_int_equal(sendq_shared_bytes(principal), 0); /* within none */
    assert_int_equal(sendq_shared_bytes(NULL), 0);
    sendq_t *frame = sendq_hold(one);
    sendq_release(&one);       /* its session ends, a frame of it is still in libzmq */
    sendq_release(&principal); /* and so does the principal's state (a stop) */
    sendq_t *fresh = sendq_new_within(NULL);
    assert_int_equal(sendq_shared_bytes(fresh), 0);
    sendq_release(&fresh);
    assert_int_equal(sendq_shared_bytes(two), 1024);
    sendq_sub(frame, 1000, 1); /* libzmq frees it */
    assert_int_equal(sendq_shared_bytes(two), 24);
    sendq_release(&frame); /* ASan: nothing leaked, nothing used after free */
    sendq_sub(two, 24, 0);
    assert_int_equal(sendq_shared_bytes(two), 0);
    sendq_release(&two);
}

enum { FRAMES = 100000, FRAME_BYTES = 100 };

/* Frames freed on another thread, as libzmq's I/O thread frees them. */
typedef struct frames {
    sendq_t **held;
    size_t n;
} frames_t;

static void *free_frames(void *arg)
{
    frames_t *frames = arg;
    for (size_t i = 0; i < frames->n; i++) {
        sendq_sub(frames->held[i], FRAME_BYTES, 0);
        sendq_release(&frames->held[i]);
    }
    return NULL;
}

/* Each frame holds the count; the session lets go first, and the frames
 * are freed on two threads at once: the count ends at 0, and the last
 * release frees it (ASan reports a leak or a use after free otherwise). */
static void test_frames_outlive_their_session(void **state)
{
    (void)state;
    static sendq_t *held[FRAMES];
    sendq_t *q = sendq_new();
    assert_non_null(q);
    for (size_t i = 0; i < FRAMES; i++) {
        held[i] = sendq_hold(q);
        sendq_add(q, FRAME_BYTES, 0);
    }
    assert_int_equal(sendq_bytes(q), (size_t)FRAMES * FRAME_BYTES);
    sendq_t *probe = sendq_hold(q);
    sendq_release(&q); /* the session ends */
    frames_t first = {held, FRAMES / 2}, second = {held + FRAMES / 2, FRAMES - FRAMES / 2};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, free_frames, &first), 0);
    free_frames(&second);
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_int_equal(sendq_bytes(probe), 0);
    sendq_release(&probe);
}

/* libzmq frees a frame as it encrypts it for an open connection, or
 * drops it after the connection's fd was closed: the second is counted
 * dropped, also when another socket has taken the fd's number since; an
 * unwatched count never counts one. */
static void test_frames_freed_after_their_connection_closed(void **state)
{
    (void)state;
    int pair[2], other[2];
    struct stat st;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
    assert_int_equal(fstat(pair[0], &st), 0);
    sendq_t *q = sendq_new(), *unwatched = sendq_new();
    assert_non_null(q);
    assert_non_null(unwatched);
    sendq_watch(q, pair[0], &st);
    sendq_add(q, 300, 0);
    sendq_add(unwatched, 300, 0);
    sendq_freed(q, 100, 0); /* taken out while it is open */
    sendq_freed(unwatched, 100, 0);
    assert_int_equal(sendq_bytes(q), 200);
    assert_int_equal(sendq_dropped(q), 0);
    int fd = pair[0];
    assert_int_equal(close(fd), 0);
    sendq_freed(q, 100, 0); /* dropped after it closed */
    sendq_freed(unwatched, 100, 0);
    assert_int_equal(sendq_bytes(q), 100);
    assert_int_equal(sendq_dropped(q), 1);
    /* its number taken by another socket: still not its connection */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, other), 0);
    assert_true(other[0] == fd || other[1] == fd);
    sendq_freed(q, 100, 0);
    sendq_freed(unwatched, 100, 0);
    assert_int_equal(sendq_bytes(q), 0);
    assert_int_equal(sendq_dropped(q), 2);
    assert_int_equal(sendq_dropped(unwatched), 0);
    assert_int_equal(sendq_bytes(unwatched), 0);
    assert_int_equal(sendq_dropped(NULL), 0);
    sendq_freed(NULL, 1, 0); /* safe on NULL */
    sendq_release(&q);
    sendq_release(&unwatched);
    close(pair[1]);
    close(other[0]);
    close(other[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_up_and_down),
        cmocka_unit_test(test_deliveries_counted_apart),
        cmocka_unit_test(test_null_is_empty),
        cmocka_unit_test(test_frames_outlive_their_session),
        cmocka_unit_test(test_counted_within_the_principal),
        cmocka_unit_test(test_frames_freed_after_their_connection_closed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
