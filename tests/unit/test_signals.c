/*
 * test_signals.c — the daemon's signals as requests: SIGHUP is one reload
 * however often it came, SIGTERM and SIGINT a stop that stays asked, SIGPIPE
 * and SIGXFSZ do nothing, and each request makes the eventfd the loop polls
 * readable, so that a poll begun after it returns at once (the signal that
 * lands between the loop's look at the flags and its zmq_poll). raise()
 * runs the handler before it returns: nothing here waits on time.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "signals.h"

/* Only a broken wake-up makes a poll wait this long. */
#define NEVER_MS 10000

static int installed(void **state)
{
    (void)state;
    char err[256];
    if (signals_install(err, sizeof err) != 0)
        fail_msg("%s", err);
    return 0;
}

/* What a poll on the eventfd alone says at once (timeout 0): 1 readable. */
static int wake_readable_now(void)
{
    struct pollfd p = {.fd = signals_wake_fd(), .events = POLLIN};
    int n = poll(&p, 1, 0);
    assert_true(n >= 0);
    return n == 1 && (p.revents & POLLIN);
}

static void test_reload_is_taken_once(void **state)
{
    (void)state;
    assert_true(signals_wake_fd() >= 0);
    signals_wake_drain();
    assert_int_equal(signals_reload_take(), 0);
    assert_false(wake_readable_now());
    assert_int_equal(raise(SIGHUP), 0);
    assert_int_equal(raise(SIGHUP), 0);
    assert_true(wake_readable_now());
    assert_int_equal(signals_reload_take(), 1); /* two SIGHUPs: one reload */
    assert_int_equal(signals_reload_take(), 0);
    signals_wake_drain();
    assert_false(wake_readable_now());
    assert_false(signals_stop_requested());
}

/* The loop's case: the flags were looked at, then the signal came, then
 * the poll began. It must not wait its timeout. */
static void test_signal_before_the_poll_ends_it_at_once(void **state)
{
    (void)state;
    signals_wake_drain();
    assert_int_equal(raise(SIGHUP), 0);
    struct pollfd p = {.fd = signals_wake_fd(), .events = POLLIN};
    assert_int_equal(poll(&p, 1, NEVER_MS), 1);
    assert_true(p.revents & POLLIN);
    signals_wake_drain();
    assert_int_equal(signals_reload_take(), 1);
}

static void test_ignored_signals_do_nothing(void **state)
{
    (void)state;
    signals_wake_drain();
    assert_int_equal(raise(SIGPIPE), 0);
    assert_int_equal(raise(SIGXFSZ), 0);
    assert_false(wake_readable_now());
    assert_int_equal(signals_reload_take(), 0);
    assert_false(signals_stop_requested());
}

/* Last: a stop stays asked. The handler keeps errno as it was. */
static void test_stop_stays_asked(void **state)
{
    (void)state;
    signals_wake_drain();
    errno = ERANGE;
    assert_int_equal(raise(SIGINT), 0);
    assert_int_equal(errno, ERANGE);
    assert_true(signals_stop_requested());
    assert_true(wake_readable_now());
    signals_wake_drain();
    assert_int_equal(raise(SIGTERM), 0);
    assert_true(wake_readable_now());
    signals_wake_drain();
    assert_true(signals_stop_requested());
    assert_int_equal(signals_reload_take(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reload_is_taken_once),
        cmocka_unit_test(test_signal_before_the_poll_ends_it_at_once),
        cmocka_unit_test(test_ignored_signals_do_nothing),
        cmocka_unit_test(test_stop_stays_asked),
    };
    return cmocka_run_group_tests_name("unit: signals", tests, installed, NULL);
}
