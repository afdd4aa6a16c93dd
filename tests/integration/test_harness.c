/*
 * test_harness.c — the harness's own log readers, on a log the test writes
 * itself (no broker): an offset taken inside a line leaves that line to
 * "before", for every reader that takes an offset, whether it looks once,
 * counts or waits. And the deadline of a tool run, which
 * SCHAKEL_TEST_TIME_FACTOR stretches.
 */
/* mkdtemp */
#define _GNU_SOURCE

#include "harness.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A line that was being written when the offset was taken ends with the
 * needle; only a line begun after the offset may match. */
#define NEEDLE "event=delivery.sent recipient=om/parket"
#define CUT_HEAD "ts=1 level=info event=auth.accepted principal=om/parket"
#define CUT_TAIL " then=" NEEDLE "\n"
#define NEW_LINE "ts=2 level=info " NEEDLE " seq=7\n"

/* Append text to the log with one write(2), as the broker does. */
static void log_append(const h_env_t *env, const char *text)
{
    int fd = open(env->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* An environment with only a log, DIR/schakeld.log, empty; h_teardown
 * removes it (and prints the log if the test did not reach h_done). */
static int log_env_setup(void **state)
{
    static const h_env_t blank = {.dir = "/tmp/schakel-harness-XXXXXX", .broker_pidfd = -1};
    h_env_t *env = malloc(sizeof *env);
    assert_non_null(env);
    *env = blank;
    assert_non_null(mkdtemp(env->dir));
    snprintf(env->log_path, sizeof env->log_path, "%s/schakeld.log", env->dir);
    log_append(env, "");
    *state = env;
    return 0;
}

/* The offset falls inside a line whose tail, once written, holds the
 * needle: no reader sees it (a look, a count, a wait of no time, the n-th
 * line); a whole line written after it is found, and counted once. */
static void test_a_line_begun_before_the_offset_is_not_read(void **state)
{
    h_env_t *env = *state;
    log_append(env, "ts=0 level=info event=broker.ready\n" CUT_HEAD);
    long offset = h_log_offset(env);
    assert_int_equal(offset, (long)strlen("ts=0 level=info event=broker.ready\n" CUT_HEAD));
    log_append(env, CUT_TAIL);

    assert_int_equal(h_log_count(env, offset, NEEDLE), 0);
    assert_int_equal(h_log_count_both(env, offset, NEEDLE, "then="), 0);
    assert_int_equal(h_await_log(env, offset, NEEDLE, 0), -1);
    FILE *f = h_log_open_at(env, offset);
    assert_non_null(f);
    assert_int_equal(getc(f), EOF);
    fclose(f);

    log_append(env, NEW_LINE);
    assert_int_equal(h_await_log(env, offset, NEEDLE, H_TIMEOUT_MS), 0);
    assert_int_equal(h_await_log_lines(env, offset, NEEDLE, 1, H_TIMEOUT_MS), 0);
    assert_int_equal(h_await_log_lines(env, offset, NEEDLE, 2, 0), -1);
    assert_int_equal(h_log_count(env, offset, NEEDLE), 1);
    assert_int_equal(h_log_count_both(env, offset, NEEDLE, "then="), 0);
    f = h_log_open_at(env, offset);
    assert_non_null(f);
    char line[256];
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, NEW_LINE);
    fclose(f);
    h_done(env);
}

/* An offset at a line's start (or 0) skips nothing: that line is the
 * first one read. */
static void test_a_line_begun_at_the_offset_is_read(void **state)
{
    h_env_t *env = *state;
    assert_int_equal(h_log_offset(env), 0);
    log_append(env, NEW_LINE);
    assert_int_equal(h_log_count(env, 0, NEEDLE), 1);
    long offset = h_log_offset(env);
    log_append(env, NEW_LINE);
    assert_int_equal(h_await_log(env, offset, NEEDLE, 0), 0);
    assert_int_equal(h_log_count(env, offset, NEEDLE), 1);
    assert_int_equal(h_await_log_lines(env, 0, NEEDLE, 2, 0), 0);
    assert_int_equal(h_await_log_lines(env, 0, NEEDLE, 3, 0), -1);
    h_done(env);
}

/* What the writer thread appends: the cut line's tail, then a new line. */
static void *write_tail_then_line(void *arg)
{
    const h_env_t *env = arg;
    log_append(env, CUT_TAIL);
    log_append(env, NEW_LINE);
    return NULL;
}

/* While the line the offset falls inside has not ended, nothing after the
 * offset can be read yet; a wait goes on through that line's end to the
 * line written after it (whenever the writer gets to either). */
static void test_a_wait_from_inside_a_line_waits_past_its_end(void **state)
{
    h_env_t *env = *state;
    log_append(env, CUT_HEAD);
    long offset = h_log_offset(env);
    assert_null(h_log_open_at(env, offset));
    assert_int_equal(h_log_count(env, offset, NEEDLE), 0);
    assert_int_equal(h_await_log(env, offset, NEEDLE, 0), -1);

    pthread_t writer;
    assert_int_equal(pthread_create(&writer, NULL, write_tail_then_line, env), 0);
    int found = h_await_log(env, offset, NEEDLE, H_TIMEOUT_MS);
    assert_int_equal(pthread_join(writer, NULL), 0);
    assert_int_equal(found, 0);
    assert_int_equal(h_log_count(env, offset, NEEDLE), 1);
    assert_int_equal(h_log_count(env, 0, NEEDLE), 2);
    h_done(env);
}

/* SCHAKEL_TEST_TIME_FACTOR set to factor (NULL: unset). */
static void time_factor_set(const char *factor)
{
    if (factor == NULL)
        assert_int_equal(unsetenv("SCHAKEL_TEST_TIME_FACTOR"), 0);
    else
        assert_int_equal(setenv("SCHAKEL_TEST_TIME_FACTOR", factor, 1), 0);
}

/* A tool run's deadline is H_CLI_TIMEOUT_MS times the factor; a factor
 * that is unset or out of range (1..20) counts as 1. The factor this test
 * was given is put back after each setting tried. */
static void test_the_cli_deadline_scales_with_the_time_factor(void **state)
{
    (void)state;
    const char *given = getenv("SCHAKEL_TEST_TIME_FACTOR");
    char *kept = given != NULL ? strdup(given) : NULL;
    assert_true(given == NULL || kept != NULL);
    static const struct {
        const char *factor;
        int deadline_ms;
    } rows[] = {
        {NULL, H_CLI_TIMEOUT_MS},      {"1", H_CLI_TIMEOUT_MS},    {"3", 3 * H_CLI_TIMEOUT_MS},
        {"20", 20 * H_CLI_TIMEOUT_MS}, {"0", H_CLI_TIMEOUT_MS},    {"21", H_CLI_TIMEOUT_MS},
        {"-3", H_CLI_TIMEOUT_MS},      {"slow", H_CLI_TIMEOUT_MS},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        time_factor_set(rows[i].factor);
        int deadline_ms = h_cli_timeout_ms();
        time_factor_set(kept);
        if (deadline_ms != rows[i].deadline_ms)
            fail_msg("SCHAKEL_TEST_TIME_FACTOR=%s: a tool run's deadline is %d ms, not %d",
                     rows[i].factor ? rows[i].factor : "(unset)", deadline_ms, rows[i].deadline_ms);
    }
    free(kept);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_line_begun_before_the_offset_is_not_read,
                                        log_env_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_a_line_begun_at_the_offset_is_read, log_env_setup,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_a_wait_from_inside_a_line_waits_past_its_end,
                                        log_env_setup, h_teardown),
        cmocka_unit_test(test_the_cli_deadline_scales_with_the_time_factor),
    };
    return cmocka_run_group_tests_name("integration: the harness's log readers and deadlines",
                                       tests, NULL, NULL);
}
