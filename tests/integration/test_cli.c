/*
 * test_cli.c — the `schakel` command-line tool against a real schakeld:
 * exit codes (0 ok, 2 usage, 3 refused, 4 unreachable or unauthenticated),
 * what it prints, and that what it publishes arrives as given.
 *
 * The CLI runs as a child process with SCHAKEL_BROKER, SCHAKEL_BROKER_KEY and
 * SCHAKEL_KEY set by the harness; its output is read from pipes.
 */
#include "harness.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* The value of "key" in one compact JSON line (the CLI prints JSON_COMPACT
 * objects): a string (escapes other than \" and \\ are not needed by these
 * tests) or a bare number/literal. Returns 0 with out filled, -1 if absent. */
static int json_value(const char *line, const char *key, char *out, size_t outlen)
{
    char pattern[80];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *p = strstr(line, pattern);
    if (!p)
        return -1;
    p += strlen(pattern);
    size_t used = 0;
    if (*p == '"') {
        for (p++; *p && *p != '"'; p++) {
            if (*p == '\\' && p[1])
                p++;
            if (used + 1 < outlen)
                out[used++] = *p;
        }
    } else {
        while (*p && *p != ',' && *p != '}' && used + 1 < outlen)
            out[used++] = *p++;
    }
    out[used] = '\0';
    return 0;
}

/* Split text into lines in place; returns the count (at most max). */
static size_t split_lines(char *text, char **lines, size_t max)
{
    size_t n = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line && n < max;
         line = strtok_r(NULL, "\n", &save))
        lines[n++] = line;
    return n;
}

static void expect_exit(const h_cli_result_t *res, int code, const char *what)
{
    if (res->status != code)
        fail_msg("%s: exit %d, expected %d\nstdout: %s\nstderr: %s", what, res->status, code,
                 res->out, res->err);
}

/* `schakel publish` with options: exit 0, "accepted seq=N recipients=N", and
 * the recipients receive exactly what the options said. */
static void test_cli_publish_accepted_and_delivered_as_given(void **state)
{
    h_env_t *env = *state;
    char observed[32];
    int64_t observed_at = (int64_t)time(NULL) - 1800;
    snprintf(observed, sizeof observed, "%lld", (long long)observed_at);
    h_cli_result_t res;
    h_run_cli(env, H_WOCO_JEKERDAL, &res, "publish", "--kind", "hennepkwekerij", "--theme",
              "ondermijning", "--area", "BU09350101", "--postcode", "6211AB", "--house-number",
              "12", "--subject", "PSN-1c4e88aa07", "--grounds",
              "Ramen afgeplakt, ventilatiegeluid dag en nacht", "--severity", "high",
              "--observed-at", observed, "--summary", "Signaal hennepteelt", "--source-ref",
              "JD-2024-77", "--to", "politie", "--to", "gemeente", NULL);
    expect_exit(&res, 0, "publish");
    unsigned long long seq = 0;
    unsigned recipients = 0;
    if (sscanf(res.out, "accepted seq=%llu recipients=%u", &seq, &recipients) != 2)
        fail_msg("unexpected publish output: %s", res.out);
    assert_true(seq > 0);
    assert_int_equal(recipients, 2);
    h_cli_result_free(&res);

    schakel_signal_t as_given = {.kind = "hennepkwekerij",
                                 .theme = "ondermijning",
                                 .area = "BU09350101",
                                 .postcode = "6211AB",
                                 .house_number = 12,
                                 .subject = "PSN-1c4e88aa07",
                                 .grounds = "Ramen afgeplakt, ventilatiegeluid dag en nacht",
                                 .severity = SCHAKEL_SEVERITY_HIGH,
                                 .observed_at = observed_at,
                                 .summary = "Signaal hennepteelt",
                                 .source_ref = "JD-2024-77"};
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_delivery_t *d = h_receive(politie);
    assert_int_equal(d->item_seq, seq);
    assert_string_equal(d->sender, H_WOCO_JEKERDAL);
    h_assert_delivery_fields(d, &as_given,
                             H_F_AREA | H_F_ADDRESS | H_F_SUBJECT | H_F_GROUNDS | H_F_SEVERITY |
                                 H_F_OBSERVED_AT | H_F_SUMMARY | H_F_SOURCE_REF);
    assert_int_equal(schakel_ack(politie, d->seq), SCHAKEL_OK);
    schakel_delivery_free(&d);
    schakel_close(&politie);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), 1);
    /* riec is entitled but was not named with --to */
    assert_int_equal(h_backlog_of(env, H_RIEC), 0);
    h_done(env);
}

/* --json output of publish, a retry with the same --message-id answered as
 * a duplicate, and a batch of JSON lines on stdin. */
static void test_cli_publish_json_duplicate_and_batch(void **state)
{
    h_env_t *env = *state;
    const char *id = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    h_cli_result_t res;
    unsigned long long seqs[2] = {0, 0};
    for (int round = 0; round < 2; round++) {
        h_run_cli(env, H_POLITIE, &res, "publish", "--json", "--message-id", id, "--kind",
                  "inbraakreeks", "--theme", "woninginbraak", "--area", "WK093501", NULL);
        expect_exit(&res, 0, "publish --json");
        char value[64];
        assert_int_equal(json_value(res.out, "message_id", value, sizeof value), 0);
        assert_string_equal(value, id);
        assert_int_equal(json_value(res.out, "duplicate", value, sizeof value), 0);
        assert_string_equal(value, round == 0 ? "false" : "true");
        assert_int_equal(json_value(res.out, "seq", value, sizeof value), 0);
        seqs[round] = strtoull(value, NULL, 10);
        assert_int_equal(json_value(res.out, "recipients", value, sizeof value), 0);
        assert_string_equal(value, "1");
        h_cli_result_free(&res);
    }
    assert_true(seqs[0] > 0);
    assert_int_equal(seqs[1], seqs[0]);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), 1);

    const h_cli_target_t with_stdin = {
        .stdin_text =
            "{\"kind\":\"inbraakreeks\",\"theme\":\"woninginbraak\",\"area\":\"BU09350102\","
            "\"severity\":\"medium\",\"summary\":\"Drie inbraken in een week\"}\n"
            "{\"kind\":\"witwassen\",\"theme\":\"ondermijning\",\"area\":\"GM0935\","
            "\"summary\":\"Contante aankopen\",\"recipients\":[\"om\"]}\n"};
    const char *const args[] = {"publish", "-", NULL};
    h_run_cli_argv(env, H_POLITIE, &with_stdin, args, &res);
    expect_exit(&res, 0, "publish batch from stdin");
    char *lines[8];
    size_t n = split_lines(res.out, lines, 8);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++)
        if (strncmp(lines[i], "accepted seq=", 13) != 0 || !strstr(lines[i], "recipients=1"))
            fail_msg("batch line %zu: %s", i, lines[i]);
    h_cli_result_free(&res);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), 2);
    assert_int_equal(h_backlog_of(env, H_OM), 1);
    h_done(env);
}

/* Refusals: exit 3 and the reason name on stderr; nothing delivered. */
static void test_cli_refused_exits_3_with_reason(void **state)
{
    h_env_t *env = *state;
    static const struct {
        const char *principal;
        const char *args[12];
        const char *reason;
    } rows[] = {
        {H_BRANDWEER,
         {"publish", "--kind", "hennepkwekerij", "--theme", "ondermijning", "--area", "GM0935",
          NULL},
         "POLICY_DENIED"},
        {H_WOCO_MAASOEVER,
         {"publish", "--kind", "hennepkwekerij", "--theme", "ondermijning", "--area", "GM0935",
          "--postcode", "6211SA", "--house-number", "3", NULL},
         "INVALID_POSTCODE"},
        {H_WOCO_MAASOEVER,
         {"publish", "--kind", "hennepkwekerij", "--theme", "ondermijning", "--area", "GM0935",
          "--subject", "PSN-1c4e88aa07", NULL},
         "MISSING_GROUNDS"},
        {H_POLITIE,
         {"publish", "--kind", "inbraakreeks", "--theme", "inbraak", "--area", "GM0935", NULL},
         "INVALID_THEME"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        h_cli_result_t res;
        h_run_cli_argv(env, rows[i].principal, NULL, rows[i].args, &res);
        expect_exit(&res, 3, rows[i].reason);
        if (!strstr(res.err, rows[i].reason))
            fail_msg("row %zu: stderr does not name %s: %s", i, rows[i].reason, res.err);
        assert_null(strstr(res.out, "accepted"));
        h_cli_result_free(&res);
    }
    h_assert_nobody_else(env, NULL);
    h_done(env);
}

/* Cannot reach or authenticate: exit 4. */
static void test_cli_unreachable_or_unknown_key_exits_4(void **state)
{
    h_env_t *env = *state;
    int port = 0;
    int port_fd = h_closed_port(&port);
    char nowhere[64];
    snprintf(nowhere, sizeof nowhere, "tcp://127.0.0.1:%d", port);
    char missing_key[160];
    snprintf(missing_key, sizeof missing_key, "%s/keys/bestaat-niet.key", env->dir);
    const struct {
        const char *what;
        h_cli_target_t target;
    } rows[] = {
        {"nobody listens", {.endpoint = nowhere}},
        {"unregistered key", {.key_file = h_key_file(env, H_UNREGISTERED)}},
        {"operator key on the partner endpoint", {.key_file = h_key_file(env, H_OPERATOR)}},
        {"key file missing", {.key_file = missing_key}},
    };
    const char *const args[] = {"whoami", "--connect-timeout", "2", NULL};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        h_cli_result_t res;
        h_run_cli_argv(env, H_POLITIE, &rows[i].target, args, &res);
        expect_exit(&res, 4, rows[i].what);
        assert_true(res.err[0] != '\0');
        assert_null(strstr(res.out, "principal="));
        h_cli_result_free(&res);
    }
    h_closed_port_release(port_fd);
    /* The broker is unaffected. */
    h_cli_result_t res;
    h_run_cli(env, H_POLITIE, &res, "whoami", NULL);
    expect_exit(&res, 0, "whoami after the refusals");
    h_cli_result_free(&res);
    h_done(env);
}

/* Usage errors: exit 2, a message on stderr, nothing sent. */
static void test_cli_usage_errors_exit_2(void **state)
{
    h_env_t *env = *state;
    static const struct {
        const char *args[8];
    } rows[] = {
        {{NULL}},
        {{"verstuur", NULL}},
        {{"publish", "--kind", "x", "--theme", "ondermijning", "--area", "GM0935", NULL}},
        {{"publish", "--no-such-option", NULL}},
        {{"publish", "--theme", "overlast", "--severity", "enorm", NULL}},
        {{"publish", "--theme", "overlast", "--house-number", "twaalf", NULL}},
        {{"publish", "--theme", "overlast", "--message-id", "abc", NULL}},
        {{"whoami", "extra", NULL}},
        {{"listen", "--count", "-1", NULL}},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        /* Row 2 is the one valid command line: it must be accepted, so that
         * the table proves the other rows fail for their own reason. */
        int expected = i == 2 ? 0 : 2;
        h_cli_result_t res;
        h_run_cli_argv(env, H_WOCO_MAASOEVER, NULL, rows[i].args, &res);
        char what[64];
        snprintf(what, sizeof what, "usage row %zu (%s)", i,
                 rows[i].args[0] ? rows[i].args[0] : "no command");
        expect_exit(&res, expected, what);
        if (expected == 2)
            assert_true(res.err[0] != '\0');
        h_cli_result_free(&res);
    }
    /* No broker configured at all is a usage error too. */
    const h_cli_target_t no_broker = {.endpoint = ""};
    const char *const args[] = {"whoami", NULL};
    h_cli_result_t res;
    h_run_cli_argv(env, H_POLITIE, &no_broker, args, &res);
    expect_exit(&res, 2, "whoami without SCHAKEL_BROKER");
    assert_non_null(strstr(res.err, "SCHAKEL_BROKER"));
    h_cli_result_free(&res);
    h_done(env);
}

/* `schakel listen --json --drain` prints every delivery as one JSON line,
 * acks them, and exits 0 once the mailbox is empty. */
static void test_cli_listen_json_drain(void **state)
{
    h_env_t *env = *state;
    enum { N = 3 };
    uint64_t item_seqs[N];
    schakel_client_t *woco = h_connect(env, H_WOCO_MAASOEVER);
    for (int i = 0; i < N; i++) {
        char ref[24];
        snprintf(ref, sizeof ref, "WM-2024-%04d", 400 + i);
        schakel_signal_t s = {.kind = "hennepkwekerij",
                              .theme = "ondermijning",
                              .area = "BU09350101",
                              .postcode = "6211AB",
                              .house_number = (uint32_t)(10 + i),
                              .subject = "PSN-7f3a9c2e41",
                              .grounds = "Stroomverbruik viermaal het gemiddelde",
                              .summary = "Vermoedelijke hennepkwekerij",
                              .source_ref = ref};
        item_seqs[i] = h_publish_ok(woco, &s, NULL, NULL, NULL, NULL);
    }
    schakel_close(&woco);

    h_cli_result_t res;
    h_run_cli(env, H_GEMEENTE, &res, "listen", "--json", "--drain", "--timeout", "20", NULL);
    expect_exit(&res, 0, "listen --json --drain");
    char *lines[N + 2];
    size_t n = split_lines(res.out, lines, N + 2);
    assert_int_equal(n, N);
    unsigned long long last_seq = 0;
    for (size_t i = 0; i < n; i++) {
        char value[160];
        assert_true(lines[i][0] == '{');
        assert_int_equal(json_value(lines[i], "sender", value, sizeof value), 0);
        assert_string_equal(value, H_WOCO_MAASOEVER);
        assert_int_equal(json_value(lines[i], "rule_id", value, sizeof value), 0);
        assert_string_equal(value, "woco-ondermijning-gemeente");
        assert_int_equal(json_value(lines[i], "legal_basis", value, sizeof value), 0);
        assert_true(value[0] != '\0');
        assert_int_equal(json_value(lines[i], "theme", value, sizeof value), 0);
        assert_string_equal(value, "ondermijning");
        assert_int_equal(json_value(lines[i], "item_seq", value, sizeof value), 0);
        assert_int_equal(strtoull(value, NULL, 10), item_seqs[i]);
        assert_int_equal(json_value(lines[i], "house_number", value, sizeof value), 0);
        assert_int_equal(atoi(value), 10 + (int)i);
        assert_int_equal(json_value(lines[i], "seq", value, sizeof value), 0);
        unsigned long long seq = strtoull(value, NULL, 10);
        assert_true(seq > last_seq);
        last_seq = seq;
        /* The municipality's rule has no person and no source reference. */
        assert_int_equal(json_value(lines[i], "subject", value, sizeof value), -1);
        assert_int_equal(json_value(lines[i], "grounds", value, sizeof value), -1);
        assert_int_equal(json_value(lines[i], "source_ref", value, sizeof value), -1);
    }
    h_cli_result_free(&res);
    /* Acked: the mailbox is empty and a second drain prints nothing. */
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), 0);
    h_run_cli(env, H_GEMEENTE, &res, "listen", "--json", "--drain", "--timeout", "20", NULL);
    expect_exit(&res, 0, "second drain");
    assert_string_equal(res.out, "");
    h_cli_result_free(&res);
    /* politie's mailbox was not touched by the municipality's drain. */
    assert_int_equal(h_backlog_of(env, H_POLITIE), N);
    h_done(env);
}

/* `schakel whoami`, plain and --json. */
static void test_cli_whoami(void **state)
{
    h_env_t *env = *state;
    h_cli_result_t res;
    h_run_cli(env, H_RIEC_CASEWORKER, &res, "whoami", NULL);
    expect_exit(&res, 0, "whoami");
    assert_string_equal(res.out, "principal=riec/m.janssen partner=riec role=caseworker\n");
    h_cli_result_free(&res);

    h_run_cli(env, H_BRANDWEER, &res, "whoami", "--json", NULL);
    expect_exit(&res, 0, "whoami --json");
    char value[130];
    assert_int_equal(json_value(res.out, "principal", value, sizeof value), 0);
    assert_string_equal(value, H_BRANDWEER);
    assert_int_equal(json_value(res.out, "partner", value, sizeof value), 0);
    assert_string_equal(value, "brandweer");
    assert_int_equal(json_value(res.out, "role", value, sizeof value), 0);
    assert_string_equal(value, "system");
    h_cli_result_free(&res);
    h_done(env);
}

/* `schakel keygen` writes a private key (0600) and a public key whose Z85
 * it prints; it never overwrites a key. */
static void test_cli_keygen(void **state)
{
    h_env_t *env = *state;
    char base[160], key[170], pub[170];
    snprintf(base, sizeof base, "%s/keys/nieuw", env->dir);
    snprintf(key, sizeof key, "%s.key", base);
    snprintf(pub, sizeof pub, "%s.pub", base);
    h_cli_result_t res;
    h_run_cli(env, NULL, &res, "keygen", base, NULL);
    expect_exit(&res, 0, "keygen");
    assert_int_equal(strlen(res.out), 41); /* 40 Z85 characters and a newline */
    struct stat st;
    assert_int_equal(stat(key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    FILE *f = fopen(pub, "r");
    assert_non_null(f);
    char line[128];
    int found = 0;
    while (fgets(line, sizeof line, f))
        if (line[0] != '#' && strcmp(line, res.out) == 0)
            found = 1;
    fclose(f);
    assert_true(found);
    h_cli_result_free(&res);

    h_run_cli(env, NULL, &res, "keygen", base, NULL);
    assert_int_not_equal(res.status, 0);
    assert_true(res.err[0] != '\0');
    h_cli_result_free(&res);
    h_done(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cli_publish_accepted_and_delivered_as_given,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_cli_publish_json_duplicate_and_batch, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_cli_refused_exits_3_with_reason, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_cli_unreachable_or_unknown_key_exits_4, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_cli_usage_errors_exit_2, h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_cli_listen_json_drain, h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_cli_whoami, h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_cli_keygen, h_setup_env, h_teardown),
    };
    return cmocka_run_group_tests_name("integration: cli", tests, NULL, NULL);
}
