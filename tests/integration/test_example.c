/*
 * test_example.c — the example program of libschakel(3),
 * docs/examples/publish_and_receive.c, as make built it against an
 * installed libschakel with pkg-config's flags ($BUILD/examples/), run
 * against a real schakeld: it publishes as the police, receives and acks
 * as the public prosecutor, and says so line by line; the mailbox is then
 * empty (asked of the broker, not of the example). A receiver key the
 * policy does not know ends it with the library's words for that, and
 * nothing published. Waits are the example's own bounded calls and the
 * harness's run of it.
 */
#include "harness.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The example and the lib/ folder of the PREFIX it was built against. */
static void example_paths(char *program, size_t program_len, char *libdir, size_t libdir_len)
{
    const char *build = getenv("BUILD");
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/examples", build != NULL && *build ? build : "build");
    char real[PATH_MAX];
    if (realpath(dir, real) == NULL)
        fail_msg("%s: not built (make tests-build builds the examples)", dir);
    snprintf(program, program_len, "%s/publish_and_receive", real);
    snprintf(libdir, libdir_len, "LD_LIBRARY_PATH=%s/prefix/lib", real);
}

/* Run the example: endpoint, broker key, sender's and receiver's keys. */
static int run_example(h_env_t *env, const char *sender, const char *receiver, h_cli_result_t *res)
{
    char program[PATH_MAX + 32], libdir[PATH_MAX + 32], sender_key[PATH_MAX],
        receiver_key[PATH_MAX];
    example_paths(program, sizeof program, libdir, sizeof libdir);
    snprintf(sender_key, sizeof sender_key, "%s", h_key_file(env, sender));
    snprintf(receiver_key, sizeof receiver_key, "%s", h_key_file(env, receiver));
    const char *args[] = {env->endpoint, env->broker_pub, sender_key, receiver_key, NULL};
    return h_run_prepared(program, args, libdir, NULL, NULL, res);
}

/* The next line of text (cut in place), or fail: the example said less. */
static char *next_line(char **cursor, const char *expected)
{
    char *line = *cursor;
    char *end = line != NULL ? strchr(line, '\n') : NULL;
    if (end == NULL)
        fail_msg("the example's output ends where a line like \"%s\" should come", expected);
    *end = '\0';
    *cursor = end + 1;
    return line;
}

static void test_example_publishes_receives_acks(void **state)
{
    h_env_t *env = *state;
    h_cli_result_t res;
    int status = run_example(env, H_POLITIE, H_OM, &res);
    if (status != 0)
        fail_msg("the example exited %d:\n%s%s", status, res.out, res.err);
    char *cursor = res.out;

    char sender[160];
    if (sscanf(next_line(&cursor, "sender=..."), "sender=%159s", sender) != 1)
        fail_msg("no sender line");
    assert_string_equal(sender, H_POLITIE);

    uint64_t item_seq = 0;
    unsigned recipients = 0;
    char id[40] = "", end[2];
    const char *accepted = next_line(&cursor, "accepted seq=...");
    if (sscanf(accepted, "accepted seq=%" SCNu64 " recipients=%u message_id=%32[0-9a-f]%1s",
               &item_seq, &recipients, id, end) != 3)
        fail_msg("not an accepted line (or a duplicate): %s", accepted);
    assert_int_equal(recipients, 1); /* om's mailbox (rule politie-ondermijning-om) */

    uint64_t seq = 0, delivered_item = 0;
    char delivered_id[40] = "", from[160] = "", rule[80] = "";
    const char *received = next_line(&cursor, "received seq=...");
    if (sscanf(received,
               "received seq=%" SCNu64 " item_seq=%" SCNu64
               " message_id=%32[0-9a-f] from=%159s rule=%79s%1s",
               &seq, &delivered_item, delivered_id, from, rule, end) != 5)
        fail_msg("not a first delivery of a signal: %s", received);
    assert_int_equal(delivered_item, item_seq);
    assert_string_equal(delivered_id, id);
    assert_string_equal(from, H_POLITIE);
    assert_string_equal(rule, "politie-ondermijning-om");
    assert_string_equal(next_line(&cursor, "  kind=..."),
                        "  kind=witwassen theme=ondermijning area=GM0935 "
                        "summary=Contante aankoop van drie panden via een stichting");

    char acked[64];
    snprintf(acked, sizeof acked, "acked seq=%" PRIu64, seq);
    assert_string_equal(next_line(&cursor, "acked seq=..."), acked);
    assert_string_equal(next_line(&cursor, "backlog=..."), "backlog=0");
    assert_string_equal(cursor, "");
    assert_string_equal(res.err, "");

    /* The ack reached the broker: om's mailbox is empty, and so is
     * everyone else's. */
    assert_int_equal(h_backlog_of(env, H_OM), 0);
    h_assert_nobody_else(env, NULL);
    h_cli_result_free(&res);
    h_done(env);
}

static void test_example_unknown_key_refused(void **state)
{
    h_env_t *env = *state;
    h_cli_result_t res;
    int status = run_example(env, H_POLITIE, H_UNREGISTERED, &res);
    assert_int_equal(status, 1);
    if (strstr(res.err, "connect (receiver): the broker refused our key: ") == NULL ||
        strstr(res.err, "is this key registered in the policy?") == NULL)
        fail_msg("the example's refusal says: %s", res.err);
    assert_string_equal(res.out, ""); /* it stopped before publishing */
    assert_int_equal(h_backlog_of(env, H_OM), 0);
    h_cli_result_free(&res);
    h_done(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_example_publishes_receives_acks, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_example_unknown_key_refused, h_setup_broker,
                                        h_teardown),
    };
    return cmocka_run_group_tests_name("integration: libschakel(3)'s example", tests, NULL, NULL);
}
