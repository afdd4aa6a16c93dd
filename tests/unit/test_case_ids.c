/*
 * test_case_ids.c — unit tests of broker/case_ids.c: the admission of a
 * case open (no id left, the principal's and the partner's budget) and
 * what it logs, with a real store near its last case id, real sessions
 * and the broker's clock given by the test (no waiting an hour). The
 * refusals go to a stand-in for broker_reject that keeps the last one;
 * log lines are read from stderr, sent to a file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "case.h"
#include "schakel_limits.h"
#include "session.h"
#include "store.h"
#include "store_fixture.h"

#define HOUR_MS (3600 * 1000LL)
#define START_MS 5000LL

static uint8_t test_key[STORE_KEY_BYTES];

/* The refusals broker_reject was asked for: how many, and the last. */
static struct {
    int n;
    Schakel__Reason reason;
    char text[SCHAKEL_MAX_REJECT_TEXT];
} rejected;

void broker_reject(broker_t *b, const session_t *session, Schakel__Reason reason, const char *text,
                   const uint8_t *message_id, int item_index, uint64_t seq)
{
    (void)b, (void)session, (void)message_id, (void)item_index, (void)seq;
    rejected.n++;
    rejected.reason = reason;
    snprintf(rejected.text, sizeof rejected.text, "%s", text);
}

typedef struct fixture {
    store_fixture_t *store;
    broker_t *b;
    FILE *log; /* stderr goes here */
    int stderr_saved;
    policy_partner_t riec, politie;
    policy_principal_t riec_a, riec_b, politie_a;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->store = store_fixture_new("schakel-case-ids", test_key);
    f->b = calloc(1, sizeof *f->b);
    assert_non_null(f->b);
    f->b->store = f->store->store;
    f->b->sessions = sessions_new();
    assert_non_null(f->b->sessions);
    f->b->now_ms = START_MS;
    f->b->case_opens_per_hour = 2;
    f->b->case_opens_per_hour_per_partner = 3;
    f->riec = (policy_partner_t){.id = "riec"};
    f->politie = (policy_partner_t){.id = "politie"};
    f->riec_a = (policy_principal_t){.id = "riec/a", .partner = &f->riec};
    f->riec_b = (policy_principal_t){.id = "riec/b", .partner = &f->riec};
    f->politie_a = (policy_principal_t){.id = "politie/a", .partner = &f->politie};
    f->log = tmpfile();
    assert_non_null(f->log);
    fflush(stderr);
    f->stderr_saved = dup(STDERR_FILENO);
    assert_true(dup2(fileno(f->log), STDERR_FILENO) >= 0);
    memset(&rejected, 0, sizeof rejected);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    fflush(stderr);
    dup2(f->stderr_saved, STDERR_FILENO);
    close(f->stderr_saved);
    fclose(f->log);
    sessions_destroy(&f->b->sessions);
    free(f->b);
    store_fixture_destroy(&f->store);
    free(f);
    return 0;
}

/* Lines logged so far that contain `what`. */
static int log_count(fixture_t *f, const char *what)
{
    fflush(stderr);
    rewind(f->log);
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f->log) != NULL)
        n += strstr(line, what) != NULL;
    fseek(f->log, 0, SEEK_END);
    return n;
}

/* The store's counter moved so that `left` case ids are left (0: none). */
static void leave_ids(fixture_t *f, int64_t left)
{
    store_counters_t floor = {1, 1, (uint64_t)(SCHAKEL_CASE_NUM_MAX + 1 - left - 5)}, after;
    assert_int_equal(store_counters_move(f->b->store, 10, 5, &floor, NULL, &after), 0);
    assert_int_equal(store_commit(f->b->store), 0);
    assert_int_equal(store_case_ids_left(f->b->store), left);
}

static int admit(fixture_t *f, const policy_principal_t *actor)
{
    static const uint8_t command_id[16] = {1};
    return case_ids_admit_open(f->b, NULL, actor, command_id);
}

/* None left: each open refused CASE_IDS_EXHAUSTED, taking no budget;
 * case.ids_exhausted said at once, not again within the hour however many
 * opens are tried, and again an hour on while they are. */
static void test_exhausted_said_hourly_while_opens_are_tried(void **state)
{
    fixture_t *f = *state;
    leave_ids(f, 0);
    case_ids_watch(f->b, START_MS); /* the start */
    assert_int_equal(log_count(f, "event=case.ids_exhausted"), 1);
    for (int i = 0; i < 5; i++) {
        f->b->now_ms = START_MS + i * 60000;
        assert_int_equal(admit(f, &f->riec_a), 0);
        assert_int_equal(rejected.reason, SCHAKEL__REASON__CASE_IDS_EXHAUSTED);
    }
    assert_int_equal(rejected.n, 5);
    assert_int_equal(log_count(f, "event=case.ids_exhausted"), 1);
    f->b->now_ms = START_MS + HOUR_MS - 1;
    assert_int_equal(admit(f, &f->riec_a), 0);
    assert_int_equal(log_count(f, "event=case.ids_exhausted"), 1);
    f->b->now_ms = START_MS + HOUR_MS;
    assert_int_equal(admit(f, &f->riec_a), 0);
    assert_int_equal(log_count(f, "level=error event=case.ids_exhausted"), 2);
    f->b->now_ms = START_MS + HOUR_MS + 1;
    assert_int_equal(admit(f, &f->riec_a), 0);
    assert_int_equal(log_count(f, "event=case.ids_exhausted"), 2);
    /* no open tried for hours: nothing said, until the next is */
    f->b->now_ms = START_MS + 5 * HOUR_MS;
    assert_int_equal(log_count(f, "event=case.ids_exhausted"), 2);
    assert_int_equal(admit(f, &f->riec_a), 0);
    assert_int_equal(log_count(f, "event=case.ids_exhausted"), 3);
    /* the refusals took none of riec/a's budget */
    assert_int_equal(sessions_allow_case_open(f->b->sessions, "riec/a", "riec", f->b->now_ms, 2, 3),
                     CASE_OPEN_ALLOWED);
    assert_int_equal(log_count(f, "event=case.ids_low"), 0);
}

/* Few left: case.ids_low at once, then at most once an hour. */
static void test_low_said_hourly(void **state)
{
    fixture_t *f = *state;
    leave_ids(f, 3);
    case_ids_watch(f->b, START_MS);
    assert_int_equal(log_count(f, "event=case.ids_low left=3 of=99999999"), 1);
    case_ids_watch(f->b, START_MS + HOUR_MS - 1);
    assert_int_equal(log_count(f, "event=case.ids_low"), 1);
    case_ids_watch(f->b, START_MS + HOUR_MS);
    assert_int_equal(log_count(f, "event=case.ids_low"), 2);
    assert_int_equal(log_count(f, "event=case.ids_exhausted"), 0);
}

/* The principal's budget and its partner's: both must allow an open; the
 * refusal names which; another partner is unaffected; a turn rolled back
 * gives its opens' tokens back. */
static void test_budgets(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(admit(f, &f->riec_a), 1);
    assert_int_equal(admit(f, &f->riec_a), 1);
    assert_int_equal(admit(f, &f->riec_a), 0);
    assert_int_equal(rejected.reason, SCHAKEL__REASON__RATE_LIMITED);
    assert_non_null(strstr(rejected.text, "more than 2 case opens per hour from this principal"));
    assert_int_equal(admit(f, &f->riec_b), 1);
    assert_int_equal(admit(f, &f->riec_b), 0);
    assert_int_equal(rejected.reason, SCHAKEL__REASON__RATE_LIMITED);
    assert_non_null(strstr(rejected.text,
                           "more than 3 case opens per hour from the principals of partner riec"));
    assert_int_equal(admit(f, &f->politie_a), 1);
    /* the turn rolls back: its opens' tokens are back, the partner's too */
    sessions_case_opens_settle(f->b->sessions, 0);
    assert_int_equal(admit(f, &f->riec_a), 1);
    assert_int_equal(admit(f, &f->riec_a), 1);
    assert_int_equal(admit(f, &f->riec_b), 1);
    sessions_case_opens_settle(f->b->sessions, 1); /* kept */
    assert_int_equal(admit(f, &f->riec_b), 0);
    assert_non_null(strstr(rejected.text, "partner riec"));
    assert_int_equal(rejected.n, 3);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    randombytes_buf(test_key, sizeof test_key);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exhausted_said_hourly_while_opens_are_tried, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_low_said_hourly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_budgets, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
