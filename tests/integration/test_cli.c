/*
 * test_cli.c — the `schakel` command-line tool against a real schakeld:
 * exit codes (0 ok, 2 usage, 3 refused, 4 unreachable or unauthenticated),
 * what it prints, the cause it names for every usage error (checked before
 * anything is sent), and that what it publishes arrives as given.
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

/* Split text into lines in place; returns the count (at most max). */
static size_t split_lines(char *text, char **lines, size_t max)
{
    size_t n = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line && n < max;
         line = strtok_r(NULL, "\n", &save))
        lines[n++] = line;
    return n;
}

/* An endpoint on a loopback port that nobody listens on, into out;
 * returns the port's descriptor for h_closed_port_release. */
static int nowhere_endpoint(char *out, size_t outlen)
{
    int port = 0;
    int port_fd = h_closed_port(&port);
    snprintf(out, outlen, "tcp://127.0.0.1:%d", port);
    return port_fd;
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
    h_expect_exit(&res, 0, "publish");
    unsigned long long seq = 0;
    unsigned recipients = 0;
    if (sscanf(res.out, "accepted seq=%llu recipients=%u", &seq, &recipients) != 2)
        fail_msg("unexpected publish output: %s", res.out);
    assert_true(seq > 0);
    assert_int_equal(recipients, 2);
    h_cli_result_free(&res);

    schakel_signal_t as_given = h_signal_cannabis();
    as_given.severity = SCHAKEL_SEVERITY_HIGH;
    as_given.observed_at = observed_at;
    as_given.source_ref = "JD-2024-77";
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
        h_expect_exit(&res, 0, "publish --json");
        char value[64];
        assert_int_equal(h_json_find(res.out, "message_id", value, sizeof value), 0);
        assert_string_equal(value, id);
        assert_int_equal(h_json_find(res.out, "duplicate", value, sizeof value), 0);
        assert_string_equal(value, round == 0 ? "false" : "true");
        assert_int_equal(h_json_find(res.out, "seq", value, sizeof value), 0);
        seqs[round] = strtoull(value, NULL, 10);
        assert_int_equal(h_json_find(res.out, "recipients", value, sizeof value), 0);
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
    h_expect_exit(&res, 0, "publish batch from stdin");
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
        /* a seq not pending in our mailbox */
        {H_POLITIE, {"ack", "424242", NULL}, "UNKNOWN_DELIVERY"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        h_cli_result_t res;
        h_run_cli_argv(env, rows[i].principal, NULL, rows[i].args, &res);
        h_expect_exit(&res, 3, rows[i].reason);
        if (!strstr(res.err, rows[i].reason))
            fail_msg("row %zu: stderr does not name %s: %s", i, rows[i].reason, res.err);
        assert_null(strstr(res.out, "accepted"));
        h_cli_result_free(&res);
    }
    h_assert_nobody_else(env, NULL);
    h_done(env);
}

/* Cannot reach or authenticate: exit 4, and stderr says which. */
static void test_cli_unreachable_or_unknown_key_exits_4(void **state)
{
    h_env_t *env = *state;
    char nowhere[64];
    int port_fd = nowhere_endpoint(nowhere, sizeof nowhere);
    /* h_key_file returns one static buffer: each row keeps its own copy. */
    char missing_key[160], unregistered_key[160], operator_key[160];
    snprintf(missing_key, sizeof missing_key, "%s/keys/bestaat-niet.key", env->dir);
    snprintf(unregistered_key, sizeof unregistered_key, "%s", h_key_file(env, H_UNREGISTERED));
    snprintf(operator_key, sizeof operator_key, "%s", h_key_file(env, H_OPERATOR));
    char missing_says[200];
    snprintf(missing_says, sizeof missing_says, "cannot open key file %s", missing_key);
    const struct {
        const char *what;
        h_cli_target_t target;
        const char *says;
    } rows[] = {
        {"nobody listens",
         {.endpoint = nowhere},
         "no TCP connection: broker down or wrong address"},
        {"unregistered key", {.key_file = unregistered_key}, "refused our key (status 400)"},
        {"operator key on the partner endpoint",
         {.key_file = operator_key},
         "refused our key (status 400)"},
        {"key file missing", {.key_file = missing_key}, missing_says},
    };
    const char *const args[] = {"whoami", "--connect-timeout", "2", NULL};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        h_cli_result_t res;
        h_run_cli_argv(env, H_POLITIE, &rows[i].target, args, &res);
        h_expect_exit(&res, 4, rows[i].what);
        if (strstr(res.err, rows[i].says) == NULL)
            fail_msg("%s: \"%s\" not on stderr:\n%s", rows[i].what, rows[i].says, res.err);
        assert_null(strstr(res.out, "principal="));
        h_cli_result_free(&res);
    }
    h_closed_port_release(port_fd);
    /* The broker is unaffected. */
    h_cli_result_t res;
    h_run_cli(env, H_POLITIE, &res, "whoami", NULL);
    h_expect_exit(&res, 0, "whoami after the refusals");
    h_cli_result_free(&res);
    h_done(env);
}

/* ------------------------------------------------------------------ usage errors */

/* One command line that must be refused before anything is sent: its exit
 * status and a fragment of stderr that names the cause. Exit 0 marks a
 * control: a valid command line of the same shape, run against the env's
 * broker, so that the table shows its other rows fail for their own reason. */
typedef struct usage_row {
    const char *args[16];
    const char *stdin_text; /* NULL: /dev/null */
    int exit_code;
    const char *says; /* on stderr; for a control on stdout (NULL: not checked) */
} usage_row_t;

/* "schakel ARGS..." into out, cut to its size, for failure messages. */
static void describe_args(const char *const *args, char *out, size_t outlen)
{
    size_t used = (size_t)snprintf(out, outlen, "schakel");
    for (size_t i = 0; args[i] != NULL && used < outlen; i++)
        used += (size_t)snprintf(out + used, outlen - used, " %.40s", args[i]);
}

/* Run the CLI and check its exit status, that `says` is on stderr (stdout
 * for exit 0), and that nothing was accepted by a run that failed. */
static void expect_run(h_env_t *env, const char *principal, const h_cli_target_t *target,
                       const char *const *args, int code, const char *says, const char *what)
{
    h_cli_result_t res;
    h_run_cli_argv(env, principal, target, args, &res);
    h_expect_exit(&res, code, what);
    const char *text = code == 0 ? res.out : res.err;
    if (says != NULL && strstr(text, says) == NULL)
        fail_msg("%s: \"%s\" not on %s:\n%s", what, says, code == 0 ? "stdout" : "stderr", text);
    if (code != 0 && strstr(res.out, "accepted") != NULL)
        fail_msg("%s: something was accepted:\n%s", what, res.out);
    h_cli_result_free(&res);
}

/* Run a table as `principal`: the rows that must fail against a port that
 * nobody listens on (a row that wrongly gets as far as connecting ends with
 * exit 4 and reaches no broker), the controls against the env's broker.
 * extra_env: one variable more for each run ("NAME=value"), or NULL. */
static void run_usage_rows(h_env_t *env, const char *principal, const usage_row_t *rows, size_t n,
                           const char *extra_env)
{
    char nowhere[64];
    int port_fd = nowhere_endpoint(nowhere, sizeof nowhere);
    for (size_t i = 0; i < n; i++) {
        h_cli_target_t target = {.endpoint = rows[i].exit_code == 0 ? NULL : nowhere,
                                 .stdin_text = rows[i].stdin_text,
                                 .extra_env = extra_env};
        char what[200];
        int len = snprintf(what, sizeof what, "row %zu: ", i);
        describe_args(rows[i].args, what + len, sizeof what - (size_t)len);
        expect_run(env, principal, &target, rows[i].args, rows[i].exit_code, rows[i].says, what);
    }
    h_closed_port_release(port_fd);
}

/* A file of `len` bytes of `fill` in the env's folder; its path in out. */
static void write_filled(const h_env_t *env, const char *name, size_t len, char fill, char *out,
                         size_t outlen)
{
    snprintf(out, outlen, "%s/%s", env->dir, name);
    char *bytes = malloc(len);
    assert_non_null(bytes);
    memset(bytes, fill, len);
    FILE *f = fopen(out, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    free(bytes);
}

/* Usage errors of every command but case: exit 2 and the cause named on
 * stderr, before anything is sent; the controls are accepted. */
static void test_cli_usage_errors_exit_2(void **state)
{
    h_env_t *env = *state;
    char feed[128], key_a[128], key_b[128], key_c[128], long_path[4100];
    snprintf(feed, sizeof feed, "%s/feed.jsonl", env->dir);
    snprintf(key_a, sizeof key_a, "%s/keys/sleutel-a", env->dir);
    snprintf(key_b, sizeof key_b, "%s/keys/sleutel-b", env->dir);
    snprintf(key_c, sizeof key_c, "%s/keys/sleutel-c", env->dir);
    /* Longer than a path with ".import-state" added may be. */
    memset(long_path, 'p', sizeof long_path - 1);
    long_path[sizeof long_path - 1] = '\0';
    const usage_row_t rows[] = {
        {{NULL}, NULL, 2, "no command given"},
        {{"verstuur", NULL}, NULL, 2, "unknown command 'verstuur'"},
        /* publish, from options */
        {{"publish", "--kind", "x", "--theme", "ondermijning", "--area", "GM0935", "--to",
          "gemeente", NULL},
         NULL,
         0,
         "accepted seq="},
        {{"publish", "--no-such-option", NULL}, NULL, 2, "unknown option '--no-such-option'"},
        {{"publish", "--theme", "overlast", "--kind", NULL}, NULL, 2, "--kind needs a value"},
        /* options getopt_long refuses, each named with its own reason */
        {{"publish", "--json=1", NULL}, NULL, 2, "--json takes no value"},
        {{"publish", "--bogus=2", NULL}, NULL, 2, "unknown option '--bogus'"},
        {{"publish", "--theme", "overlast", "-xq", NULL}, NULL, 2, "unknown option '-x'"},
        {{"publish", "--sum", NULL}, NULL, 2, "--summary needs a value"},
        {{"publish", "--theme", "overlast", "--severity", "enorm", NULL},
         NULL,
         2,
         "--severity wants low, medium, high or critical, not 'enorm'"},
        {{"publish", "--theme", "overlast", "--house-number", "twaalf", NULL},
         NULL,
         2,
         "--house-number wants a number from 1 to"},
        {{"publish", "--theme", "overlast", "--observed-at", "gisteren", NULL},
         NULL,
         2,
         "--observed-at wants Unix seconds or ISO-8601 UTC"},
        {{"publish", "--theme", "overlast", "--timeout", "0", NULL},
         NULL,
         2,
         "--timeout wants whole seconds from 1 to 3600, not '0'"},
        {{"publish", "--theme", "overlast", "--message-id", "abc", NULL},
         NULL,
         2,
         "a message id is 32 hex digits, not 'abc'"},
        {{"publish", "--theme", "overlast", "extra", NULL}, NULL, 2, "unexpected argument 'extra'"},
        {{"publish", "-", "-", NULL}, NULL, 2, "unexpected argument '-'"},
        {{"publish", "--theme", "overlast", "-", NULL},
         NULL,
         2,
         "give signal options or '-' (JSON on stdin), not both"},
        /* whoami */
        {{"whoami", NULL}, NULL, 0, "principal=woco-maasoever/meldingen"},
        {{"whoami", "extra", NULL}, NULL, 2, "whoami takes no arguments ('extra')"},
        {{"whoami", "--verbose", NULL}, NULL, 2, "unknown option '--verbose'"},
        {{"whoami", "--broker", NULL}, NULL, 2, "--broker needs a value"},
        {{"whoami", "--broker-k", NULL}, NULL, 2, "--broker-key needs a value"},
        {{"whoami", "--br", "tcp://127.0.0.1:1", NULL},
         NULL,
         2,
         "option '--br' is ambiguous (--broker, --broker-key)"},
        {{"whoami", "--help=1", NULL}, NULL, 2, "--help takes no value"},
        {{"whoami", "-x", NULL}, NULL, 2, "unknown option '-x'"},
        {{"whoami", "-xq", NULL}, NULL, 2, "unknown option '-x'"},
        /* an empty --opt= is the option's value, checked as before */
        {{"whoami", "--connect-timeout=", NULL},
         NULL,
         2,
         "--connect-timeout wants whole seconds from 1 to 86400, not ''"},
        {{"whoami", "--connect-timeout", "0", NULL},
         NULL,
         2,
         "--connect-timeout wants whole seconds from 1 to 86400, not '0'"},
        {{"whoami", "--connect-timeout", "5s", NULL}, NULL, 2, "not '5s'"},
        /* listen */
        {{"listen", "--drain", "--timeout", "10", NULL}, NULL, 0, NULL},
        {{"listen", "--count", "-1", NULL}, NULL, 2, "--count wants a positive number, not '-1'"},
        {{"listen", "--count", NULL}, NULL, 2, "--count needs a value"},
        {{"listen", "--follow", NULL}, NULL, 2, "unknown option '--follow'"},
        {{"listen", "--drain=yes", NULL}, NULL, 2, "--drain takes no value"},
        {{"listen", "--json", "-qx", NULL}, NULL, 2, "unknown option '-q'"},
        {{"listen", "--count=", NULL}, NULL, 2, "--count wants a positive number, not ''"},
        {{"listen", "now", NULL}, NULL, 2, "listen takes no arguments ('now')"},
        {{"listen", "--timeout", "0", NULL},
         NULL,
         2,
         "--timeout wants whole seconds from 1 to 31536000, not '0'"},
        {{"listen", "--window", "0", NULL},
         NULL,
         2,
         "--window wants a number from 1 to 1024, not '0'"},
        {{"listen", "--ack-undecodable=1", NULL}, NULL, 2, "--ack-undecodable takes no value"},
        /* ack */
        {{"ack", NULL}, NULL, 2, "ack wants the seqs to acknowledge"},
        {{"ack", "7", "x", NULL}, NULL, 2, "a seq is a positive number, not 'x'"},
        {{"ack", "0", NULL}, NULL, 2, "a seq is a positive number, not '0'"},
        {{"ack", "--force", "7", NULL}, NULL, 2, "unknown option '--force'"},
        /* inbox */
        {{"inbox", NULL}, NULL, 0, "waiting=0"},
        {{"inbox", "--all", NULL}, NULL, 2, "unknown option '--all'"},
        {{"inbox", "--key", NULL}, NULL, 2, "--key needs a value"},
        {{"inbox", "--json=true", NULL}, NULL, 2, "--json takes no value"},
        {{"inbox", "--json", "-vq", NULL}, NULL, 2, "unknown option '-v'"},
        {{"inbox", "now", NULL}, NULL, 2, "inbox takes no arguments ('now')"},
        /* keygen (paths in the env's folder, should one be written after all) */
        {{"keygen", NULL}, NULL, 2, "keygen wants exactly one NAME"},
        {{"keygen", key_a, key_b, NULL}, NULL, 2, "keygen wants exactly one NAME"},
        {{"keygen", "--force", NULL}, NULL, 2, "unknown option '--force'"},
        {{"keygen", "--help=1", NULL}, NULL, 2, "--help takes no value"},
        {{"keygen", "-xq", key_a, NULL}, NULL, 2, "unknown option '-x'"},
        {{"keygen", "--", "-x", NULL}, NULL, 2, "keygen wants exactly one NAME"},
        {{"keygen", "", NULL}, NULL, 2, "keygen wants exactly one NAME"},
        /* import */
        {{"import", NULL}, NULL, 2, "no FILE given"},
        {{"import", feed, "extra", NULL}, NULL, 2, "one FILE at a time, not also 'extra'"},
        {{"import", "-", NULL}, NULL, 2, "give a file, not stdin"},
        {{"import", long_path, NULL}, NULL, 2, "the file's path is too long"},
        {{"import", "--resume", feed, NULL}, NULL, 2, "unknown option '--resume'"},
        {{"import", "--state", NULL}, NULL, 2, "--state needs a value"},
        {{"import", "--stat", NULL}, NULL, 2, "--state needs a value"},
        {{"import", "--quiet=1", feed, NULL}, NULL, 2, "--quiet takes no value"},
        {{"import", "-qv", feed, NULL}, NULL, 2, "unknown option '-q'"},
        {{"import", "--batch", "0", feed, NULL},
         NULL,
         2,
         "--batch wants a number from 1 to 256, not '0'"},
        {{"import", "--timeout", "0", feed, NULL},
         NULL,
         2,
         "--timeout wants whole seconds from 1 to 3600, not '0'"},
        {{"import", "--in-flight", "17", feed, NULL},
         NULL,
         2,
         "--in-flight wants a number from 1 to 16, not '17'"},
        {{"import", "--test-interrupt-after-batches", "nooit", feed, NULL},
         NULL,
         2,
         "--test-interrupt-after-batches wants a number"},
    };
    run_usage_rows(env, H_WOCO_MAASOEVER, rows, sizeof rows / sizeof rows[0], NULL);

    /* With POSIXLY_CORRECT set getopt alone stops at the first argument:
     * an option after keygen's NAME counts all the same. */
    const usage_row_t posixly_rows[] = {
        {{"keygen", key_a, "--help", NULL}, NULL, 0, "usage: schakel keygen NAME"},
        {{"keygen", key_a, "--force", NULL}, NULL, 2, "unknown option '--force'"},
        {{"keygen", key_a, "-xq", NULL}, NULL, 2, "unknown option '-x'"},
        {{"keygen", "--", "-x", NULL}, NULL, 2, "keygen wants exactly one NAME"},
        {{"keygen", "--", key_c, NULL}, NULL, 0, NULL},
    };
    run_usage_rows(env, H_WOCO_MAASOEVER, posixly_rows,
                   sizeof posixly_rows / sizeof posixly_rows[0], "POSIXLY_CORRECT=1");

    char nowhere[64];
    int port_fd = nowhere_endpoint(nowhere, sizeof nowhere);
    const h_cli_target_t closed = {.endpoint = nowhere};
    /* One --to more than a signal may name. */
    static const char *const to_base[] = {"publish", "--theme", "overlast"};
    const char *to_args[3 + 2 * 17 + 1];
    h_repeated_option(to_args, to_base, 3, "--to", "politie", 17);
    expect_run(env, H_WOCO_MAASOEVER, &closed, to_args, 2, "at most 16 --to partners", "17 --to");

    /* Settings missing: usage errors too, each named. */
    const struct {
        const char *principal; /* NULL: SCHAKEL_KEY unset */
        h_cli_target_t target;
        const char *says;
    } settings[] = {
        {H_POLITIE, {.endpoint = ""}, "no broker endpoint: give --broker or set SCHAKEL_BROKER"},
        {H_POLITIE,
         {.endpoint = nowhere, .broker_pub = ""},
         "no broker key: give --broker-key or set SCHAKEL_BROKER_KEY"},
        {NULL, {.endpoint = nowhere}, "no key of ours: give --key or set SCHAKEL_KEY"},
    };
    const char *const whoami[] = {"whoami", NULL};
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++)
        expect_run(env, settings[i].principal, &settings[i].target, whoami, 2, settings[i].says,
                   settings[i].says);
    h_closed_port_release(port_fd);

    /* Of the controls that reached the broker only the publish moved
     * anything: one signal, for the municipality. */
    static const char *const municipality[] = {H_GEMEENTE, NULL};
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), 1);
    h_assert_nobody_else(env, municipality);
    char written[160];
    snprintf(written, sizeof written, "%s.key", key_a);
    struct stat st;
    assert_int_not_equal(stat(written, &st), 0);
    h_done(env);
}

/* A signal line politie may publish (rule politie-inbraak-gemeente). */
#define STDIN_OK "{\"kind\":\"inbraakreeks\",\"theme\":\"woninginbraak\",\"area\":\"WK093501\"}\n"
#define STDIN_ID_A "\"message_id\":\"0f1e2d3c4b5a69788796a5b4c3d2e1f0\""
#define STDIN_ID_B "\"message_id\":\"a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\""

/* `publish` from stdin: each way a batch can be wrong is refused with the
 * line and the member that is wrong, before anything is sent; a valid
 * batch of the same shape is accepted. */
static void test_cli_publish_stdin_errors(void **state)
{
    h_env_t *env = *state;
    /* One signal more than a publish carries, and a line over 1 MiB. */
    size_t ok_len = strlen(STDIN_OK);
    char *too_many = malloc(257 * ok_len + 1);
    assert_non_null(too_many);
    for (size_t i = 0; i < 257; i++)
        memcpy(too_many + i * ok_len, STDIN_OK, ok_len);
    too_many[257 * ok_len] = '\0';
    size_t long_len = 1024 * 1024 + 16;
    char *long_line = malloc(long_len + 1);
    assert_non_null(long_line);
    memset(long_line, ' ', long_len);
    memcpy(long_line, STDIN_OK, ok_len - 1); /* valid JSON, padded with blanks */
    long_line[long_len - 1] = '\n';
    long_line[long_len] = '\0';

    const usage_row_t rows[] = {
        {{"publish", "-", NULL}, STDIN_OK, 0, "accepted seq="},
        {{"publish", "-", NULL}, "{\"kind\":\"inbraakreeks\",\n", 2, "stdin line 1: not JSON"},
        {{"publish", NULL},
         "{\"kind\":\"a\",\"kind\":\"b\"}\n",
         2,
         "stdin line 1: not JSON: duplicate object key"},
        {{"publish", "-", NULL}, "[\"inbraakreeks\"]\n", 2, "stdin line 1: expected a JSON object"},
        {{"publish", "-", NULL},
         STDIN_OK "{\"kind\":7}\n",
         2,
         "stdin line 2: \"kind\" must be a string"},
        {{"publish", "-", NULL}, "{\"theme\":[\"overlast\"]}\n", 2, "\"theme\" must be a string"},
        {{"publish", "-", NULL},
         "{\"kind\":\"x\",\"soort\":\"y\"}\n",
         2,
         "stdin line 1: unknown member \"soort\""},
        {{"publish", "-", NULL},
         "{\"address\":\"Markt 1, 6211AB\"}\n",
         2,
         "\"address\" must be an object {postcode, house_number, addition}"},
        {{"publish", "-", NULL},
         "{\"address\":{\"postcode\":\"6211AB\",\"huisnummer\":12}}\n",
         2,
         "unknown member \"address.huisnummer\""},
        {{"publish", "-", NULL},
         "{\"address\":{\"postcode\":6211}}\n",
         2,
         "\"postcode\" must be a string"},
        {{"publish", "-", NULL},
         "{\"address\":{\"house_number\":\"12\"}}\n",
         2,
         "\"address.house_number\" must be a number from 1 to"},
        {{"publish", "-", NULL},
         "{\"address\":{\"house_number\":0}}\n",
         2,
         "\"address.house_number\" must be a number from 1 to"},
        {{"publish", "-", NULL},
         "{\"severity\":\"enorm\"}\n",
         2,
         "\"severity\" must be low, medium, high, critical or 1..4"},
        {{"publish", "-", NULL},
         "{\"severity\":5}\n",
         2,
         "\"severity\" must be low, medium, high, critical or 1..4"},
        {{"publish", "-", NULL},
         "{\"observed_at\":\"gisteren\"}\n",
         2,
         "\"observed_at\" must be Unix seconds or ISO-8601 UTC"},
        {{"publish", "-", NULL},
         "{\"observed_at\":-5}\n",
         2,
         "\"observed_at\" must be Unix seconds or ISO-8601 UTC"},
        {{"publish", "-", NULL},
         "{\"recipients\":\"om\"}\n",
         2,
         "\"recipients\" must be an array of partner ids"},
        {{"publish", "-", NULL},
         "{\"recipients\":[\"om\",7]}\n",
         2,
         "\"recipients\"[1] must be a string"},
        {{"publish", "-", NULL}, "{\"message_id\":42}\n", 2, "\"message_id\" must be a string"},
        {{"publish", "-", NULL},
         "{\"kind\":\"a\"," STDIN_ID_A "}\n{\"kind\":\"b\"," STDIN_ID_B "}\n",
         2,
         "stdin line 2: message_id differs from an earlier one; a batch has one message id"},
        {{"publish", "-", NULL},
         "{\"kind\":\"a\",\"message_id\":\"xyz\"}\n",
         2,
         "a message id is 32 hex digits, not 'xyz'"},
        {{"publish", "-", NULL},
         too_many,
         2,
         "more than 256 signals on stdin: one publish carries at most 256"},
        {{"publish", "-", NULL}, long_line, 2, "stdin line 1 is longer than 1048576 bytes"},
        {{"publish", "-", NULL}, "", 2, "no signals: give signal options or JSON on stdin"},
        {{"publish", NULL}, "\n   \n\t\n", 2, "no signals: give signal options or JSON on stdin"},
        {{"publish", "-", NULL}, NULL, 2, "no signals"},
    };
    run_usage_rows(env, H_POLITIE, rows, sizeof rows / sizeof rows[0], NULL);
    free(too_many);
    free(long_line);
    /* The control's one signal, and nothing of the refused batches. */
    static const char *const municipality[] = {H_GEMEENTE, NULL};
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), 1);
    h_assert_nobody_else(env, municipality);
    h_done(env);
}

/* `case` command lines and the files they read: each refused with its
 * cause before anything is sent (exit 2, or 1 when a file cannot be read);
 * `case list` is the control. */
static void test_cli_case_usage_errors(void **state)
{
    h_env_t *env = *state;
    char big_note[128], nul_note[128], big_attachment[128], folder[128], missing[128];
    write_filled(env, "notitie-groot.txt", 8001, 'n', big_note, sizeof big_note);
    write_filled(env, "notitie-nul.txt", 16, '\0', nul_note, sizeof nul_note);
    write_filled(env, "bijlage-groot.bin", 128 * 1024 + 1, 'b', big_attachment,
                 sizeof big_attachment);
    snprintf(folder, sizeof folder, "%s/map", env->dir);
    assert_int_equal(mkdir(folder, 0700), 0);
    snprintf(missing, sizeof missing, "%s/bestaat-niet.txt", env->dir);
    char missing_note[200], missing_attachment[200], folder_note[200], folder_attachment[200];
    snprintf(missing_note, sizeof missing_note,
             "cannot read note text '%s': No such file or directory", missing);
    snprintf(missing_attachment, sizeof missing_attachment,
             "cannot read attachment '%s': No such file or directory", missing);
    snprintf(folder_note, sizeof folder_note, "cannot read note text '%s'", folder);
    snprintf(folder_attachment, sizeof folder_attachment, "cannot read attachment '%s'", folder);
    char *big_stdin = malloc(8002);
    assert_non_null(big_stdin);
    memset(big_stdin, 'n', 8001);
    big_stdin[8001] = '\0';

    const char *c = "C-00000001";
    const usage_row_t rows[] = {
        {{"case", "list", NULL}, NULL, 0, NULL},
        {{"case", NULL}, NULL, 2, "no case command given"},
        {{"case", "sluit", c, NULL}, NULL, 2, "unknown case command 'sluit'"},
        {{"case", "list", "extra", NULL}, NULL, 2, "'case list' takes 0 arguments, not 1"},
        {{"case", "show", NULL}, NULL, 2, "'case show' takes 1 argument, not 0"},
        {{"case", "note", "--text", "x", NULL}, NULL, 2, "'case note' takes 1 argument, not 0"},
        {{"case", "invite", c, NULL}, NULL, 2, "'case invite' takes 2 arguments, not 1"},
        {{"case", "show", "42", NULL}, NULL, 2, "'42' is not a case id: C- and 8 digits"},
        {{"case", "link", c, "zeven", NULL},
         NULL,
         2,
         "link wants the item_seq of a signal we received, not 'zeven'"},
        {{"case", "link", c, "0", NULL}, NULL, 2, "not '0'"},
        {{"case", "note", c, "--text", "a", "--text-file", nul_note, NULL},
         NULL,
         2,
         "give --text or --text-file, not both"},
        {{"case", "note", c, "--text-file", missing, NULL}, NULL, 2, missing_note},
        {{"case", "note", c, "--text-file", folder, NULL}, NULL, 1, folder_note},
        {{"case", "note", c, "--text-file", big_note, NULL},
         NULL,
         2,
         "is larger than 8000 bytes, the most a case takes"},
        {{"case", "note", c, "--text-file", "-", NULL},
         big_stdin,
         2,
         "note text '-' is larger than 8000 bytes"},
        {{"case", "note", c, "--text-file", nul_note, NULL}, NULL, 2, "holds a NUL byte"},
        {{"case", "attach", c, missing, NULL}, NULL, 2, missing_attachment},
        {{"case", "attach", c, folder, NULL}, NULL, 1, folder_attachment},
        {{"case", "attach", c, big_attachment, NULL},
         NULL,
         2,
         "is larger than 131072 bytes, the most a case takes"},
        {{"case", "show", c, "--text", "x", NULL},
         NULL,
         2,
         "'case show' does not take that option"},
        {{"case", "note", c, "--field", "zonder-waarde", NULL},
         NULL,
         2,
         "--field wants NAME=VALUE, not 'zonder-waarde'"},
        {{"case", "note", c, "--field", "=waarde", NULL},
         NULL,
         2,
         "--field wants NAME=VALUE, not '=waarde'"},
        {{"case", "open", "--type", "ondermijning-adres", "--area", "GM0935", "--house-number",
          "nul", NULL},
         NULL,
         2,
         "--house-number wants a number from 1 to"},
        {{"case", "accept", c, "--command-id", "abc", NULL},
         NULL,
         2,
         "a command id is 32 hex digits, not 'abc'"},
        {{"case", "list", "--timeout", "0", NULL},
         NULL,
         2,
         "--timeout wants whole seconds from 1 to 3600, not '0'"},
        {{"case", "note", c, "--text", NULL}, NULL, 2, "--text needs a value"},
        {{"case", "list", "--all", NULL}, NULL, 2, "unknown option '--all'"},
        {{"case", "list", "--json=1", NULL}, NULL, 2, "--json takes no value"},
        {{"case", "show", c, "-xq", NULL}, NULL, 2, "unknown option '-x'"},
        {{"case", "note", c, "--tex", "x", NULL},
         NULL,
         2,
         "option '--tex' is ambiguous (--text, --text-file)"},
        {{"case", "note", c, "--text-f", NULL}, NULL, 2, "--text-file needs a value"},
        {{"case", "list", "--timeout=", NULL},
         NULL,
         2,
         "--timeout wants whole seconds from 1 to 3600, not ''"},
    };
    run_usage_rows(env, H_RIEC_CASEWORKER, rows, sizeof rows / sizeof rows[0], NULL);

    /* With POSIXLY_CORRECT set getopt alone stops at the first argument:
     * the options after CASE count all the same. */
    const usage_row_t posixly_rows[] = {
        {{"case", "list", "--json", NULL}, NULL, 0, NULL},
        {{"case", "show", c, "-xq", NULL}, NULL, 2, "unknown option '-x'"},
        {{"case", "note", c, "--text-f", NULL}, NULL, 2, "--text-file needs a value"},
        {{"case", "accept", c, "--command-id", "abc", NULL}, NULL, 2, "32 hex digits, not 'abc'"},
        {{"case", "link", c, "--", "-3", NULL}, NULL, 2, "a signal we received, not '-3'"},
    };
    run_usage_rows(env, H_RIEC_CASEWORKER, posixly_rows,
                   sizeof posixly_rows / sizeof posixly_rows[0], "POSIXLY_CORRECT=1");
    free(big_stdin);

    /* One --field more than a note takes. */
    char nowhere[64];
    int port_fd = nowhere_endpoint(nowhere, sizeof nowhere);
    const h_cli_target_t closed = {.endpoint = nowhere};
    static const char *const note_base[] = {"case", "note", "C-00000001"};
    const char *field_args[3 + 2 * 33 + 1];
    h_repeated_option(field_args, note_base, 3, "--field", "bestuurlijk=ja", 33);
    expect_run(env, H_RIEC_CASEWORKER, &closed, field_args, 2, "a note has at most 32 fields",
               "33 --field");
    h_closed_port_release(port_fd);
    h_assert_nobody_else(env, NULL);
    h_done(env);
}

/* A number an option or argument takes is decimal digits only: each
 * value below, a number strtoll would take ("+2", " 2", "-0") or one past
 * long long, is refused (exit 2, before anything is sent) naming the
 * option and the value; "2" itself is in every option's range. */
static void test_cli_numbers_are_digits_only(void **state)
{
    h_env_t *env = *state;
    char feed[128];
    snprintf(feed, sizeof feed, "%s/feed.jsonl", env->dir);
    static const char *const bad[] = {" 2", "+2",  "-0",  "-2",
                                      "2 ", "\t2", "\n2", "99999999999999999999"};
    const struct {
        const char *principal;
        const char *args[8]; /* the value goes where args has "V" */
        const char *says;    /* followed by ", not 'VALUE'" */
    } options[] = {
        {H_POLITIE,
         {"publish", "--theme", "overlast", "--house-number", "V"},
         "--house-number wants a number from 1 to 99999"},
        {H_POLITIE,
         {"publish", "--theme", "overlast", "--severity", "V"},
         "--severity wants low, medium, high or critical"},
        {H_POLITIE,
         {"publish", "--theme", "overlast", "--observed-at", "V"},
         "--observed-at wants Unix seconds or ISO-8601 UTC like 2026-11-20T14:00:00Z"},
        {H_POLITIE,
         {"publish", "--theme", "overlast", "--timeout", "V"},
         "--timeout wants whole seconds from 1 to 3600"},
        {H_POLITIE,
         {"whoami", "--connect-timeout", "V"},
         "--connect-timeout wants whole seconds from 1 to 86400"},
        {H_POLITIE, {"listen", "--count", "V"}, "--count wants a positive number"},
        {H_POLITIE,
         {"listen", "--timeout", "V"},
         "--timeout wants whole seconds from 1 to 31536000"},
        {H_POLITIE, {"listen", "--window", "V"}, "--window wants a number from 1 to 1024"},
        {H_POLITIE, {"import", "--batch", "V", feed}, "--batch wants a number from 1 to 256"},
        {H_POLITIE,
         {"import", "--timeout", "V", feed},
         "--timeout wants whole seconds from 1 to 3600"},
        {H_POLITIE,
         {"import", "--in-flight", "V", feed},
         "--in-flight wants a number from 1 to 16"},
        {H_POLITIE,
         {"import", "--test-interrupt-after-batches", "V", feed},
         "--test-interrupt-after-batches wants a number from 1 to 2147483647"},
        {H_RIEC_CASEWORKER,
         {"case", "open", "--type", "ondermijning-adres", "--area", "GM0935", "--house-number",
          "V"},
         "--house-number wants a number from 1 to 99999"},
        {H_RIEC_CASEWORKER,
         {"case", "list", "--timeout", "V"},
         "--timeout wants whole seconds from 1 to 3600"},
        {H_RIEC_CASEWORKER,
         {"case", "link", "C-00000001", "--", "V"},
         "link wants the item_seq of a signal we received"},
    };
    char nowhere[64];
    int port_fd = nowhere_endpoint(nowhere, sizeof nowhere);
    const h_cli_target_t closed = {.endpoint = nowhere};
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++) {
        for (size_t j = 0; j < sizeof bad / sizeof bad[0]; j++) {
            const char *args[9] = {NULL};
            for (size_t k = 0; k < 8 && options[i].args[k] != NULL; k++)
                args[k] = strcmp(options[i].args[k], "V") == 0 ? bad[j] : options[i].args[k];
            char says[200], what[200];
            snprintf(says, sizeof says, "%s, not '%s'", options[i].says, bad[j]);
            int len = snprintf(what, sizeof what, "value %zu: ", j);
            describe_args(args, what + len, sizeof what - (size_t)len);
            expect_run(env, options[i].principal, &closed, args, 2, says, what);
        }
    }
    /* The same in a signal's JSON: a time or severity given as a string
     * (bad's values as JSON strings). */
    static const char *const bad_json[] = {
        "\" 2\"", "\"+2\"",   "\"-0\"",   "\"-2\"",
        "\"2 \"", "\"\\t2\"", "\"\\n2\"", "\"99999999999999999999\""};
    static const char *const publish_stdin[] = {"publish", "-", NULL};
    static const struct {
        const char *member, *says;
    } members[] = {
        {"observed_at", "\"observed_at\" must be Unix seconds or ISO-8601 UTC"},
        {"severity", "\"severity\" must be low, medium, high, critical or 1..4"},
    };
    for (size_t i = 0; i < sizeof members / sizeof members[0]; i++) {
        for (size_t j = 0; j < sizeof bad_json / sizeof bad_json[0]; j++) {
            char text[200];
            snprintf(text, sizeof text, "{\"kind\":\"x\",\"%s\":%s}\n", members[i].member,
                     bad_json[j]);
            const h_cli_target_t target = {.endpoint = nowhere, .stdin_text = text};
            expect_run(env, H_POLITIE, &target, publish_stdin, 2, members[i].says, text);
        }
    }
    h_closed_port_release(port_fd);
    h_done(env);
}

/* `schakel listen --json --drain` prints every delivery as one JSON line,
 * acks them, and exits 0 once the mailbox is empty; `listen --count N`
 * whose --timeout ends first prints and acks what came and exits 1,
 * saying how many of N. */
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
    h_expect_exit(&res, 0, "listen --json --drain");
    char *lines[N + 2];
    size_t n = split_lines(res.out, lines, N + 2);
    assert_int_equal(n, N);
    unsigned long long last_seq = 0;
    for (size_t i = 0; i < n; i++) {
        char value[160];
        assert_true(lines[i][0] == '{');
        assert_int_equal(h_json_find(lines[i], "sender", value, sizeof value), 0);
        assert_string_equal(value, H_WOCO_MAASOEVER);
        assert_int_equal(h_json_find(lines[i], "rule_id", value, sizeof value), 0);
        assert_string_equal(value, "woco-ondermijning-gemeente");
        assert_int_equal(h_json_find(lines[i], "legal_basis", value, sizeof value), 0);
        assert_true(value[0] != '\0');
        assert_int_equal(h_json_find(lines[i], "theme", value, sizeof value), 0);
        assert_string_equal(value, "ondermijning");
        assert_int_equal(h_json_find(lines[i], "item_seq", value, sizeof value), 0);
        assert_int_equal(strtoull(value, NULL, 10), item_seqs[i]);
        assert_int_equal(h_json_find(lines[i], "house_number", value, sizeof value), 0);
        assert_int_equal(atoi(value), 10 + (int)i);
        assert_int_equal(h_json_find(lines[i], "seq", value, sizeof value), 0);
        unsigned long long seq = strtoull(value, NULL, 10);
        assert_true(seq > last_seq);
        last_seq = seq;
        /* The municipality's rule has no person and no source reference. */
        assert_int_equal(h_json_find(lines[i], "subject", value, sizeof value), -1);
        assert_int_equal(h_json_find(lines[i], "grounds", value, sizeof value), -1);
        assert_int_equal(h_json_find(lines[i], "source_ref", value, sizeof value), -1);
    }
    h_cli_result_free(&res);
    /* Acked: the mailbox is empty and a second drain prints nothing. */
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), 0);
    h_run_cli(env, H_GEMEENTE, &res, "listen", "--json", "--drain", "--timeout", "20", NULL);
    h_expect_exit(&res, 0, "second drain");
    assert_string_equal(res.out, "");
    h_cli_result_free(&res);
    /* politie's mailbox was not touched by the municipality's drain. */
    assert_int_equal(h_backlog_of(env, H_POLITIE), N);
    /* --count not reached by --timeout: exit 1, saying how many came;
     * those that came are printed and acked all the same */
    h_run_cli(env, H_POLITIE, &res, "listen", "--json", "--count", "4", "--timeout", "1", NULL);
    h_expect_exit(&res, 1, "listen --count 4 with 3 waiting");
    h_expect_text(res.err, "listen: received 3 of 4 deliveries within 1 s", "listen --count 4");
    assert_int_equal(split_lines(res.out, lines, N + 2), N);
    h_cli_result_free(&res);
    assert_int_equal(h_backlog_of(env, H_POLITIE), 0);
    h_run_cli(env, H_POLITIE, &res, "listen", "--count", "1", "--timeout", "1", NULL);
    h_expect_exit(&res, 1, "listen --count 1 with none waiting");
    h_expect_text(res.err, "listen: received 0 of 1 delivery within 1 s", "listen --count 1");
    assert_string_equal(res.out, "");
    h_cli_result_free(&res);
    h_done(env);
}

/* `schakel whoami`, plain and --json. */
static void test_cli_whoami(void **state)
{
    h_env_t *env = *state;
    h_cli_result_t res;
    h_run_cli(env, H_RIEC_CASEWORKER, &res, "whoami", NULL);
    h_expect_exit(&res, 0, "whoami");
    assert_string_equal(res.out, "principal=riec/m.janssen partner=riec role=caseworker\n");
    h_cli_result_free(&res);

    h_run_cli(env, H_BRANDWEER, &res, "whoami", "--json", NULL);
    h_expect_exit(&res, 0, "whoami --json");
    char value[130];
    assert_int_equal(h_json_find(res.out, "principal", value, sizeof value), 0);
    assert_string_equal(value, H_BRANDWEER);
    assert_int_equal(h_json_find(res.out, "partner", value, sizeof value), 0);
    assert_string_equal(value, "brandweer");
    assert_int_equal(h_json_find(res.out, "role", value, sizeof value), 0);
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
    h_expect_exit(&res, 0, "keygen");
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
    h_expect_exit(&res, 1, "keygen over an existing key");
    if (strstr(res.err, "File exists") == NULL)
        fail_msg("keygen over an existing key: %s", res.err);
    h_cli_result_free(&res);

    /* A folder that is not there is named, with what to do; nothing is
     * written. */
    char missing[200], missing_base[220], says[700];
    snprintf(missing, sizeof missing, "%s/keys/nog-niet", env->dir);
    snprintf(missing_base, sizeof missing_base, "%s/broker", missing);
    snprintf(says, sizeof says,
             "keygen: cannot create %s.key: the folder %s does not exist; create it first",
             missing_base, missing);
    h_run_cli(env, NULL, &res, "keygen", missing_base, NULL);
    h_expect_exit(&res, 1, "keygen into a missing folder");
    if (strstr(res.err, says) == NULL)
        fail_msg("keygen into a missing folder: \"%s\" not on stderr: %s", says, res.err);
    assert_int_equal(stat(missing, &st), -1);
    h_cli_result_free(&res);
    h_done(env);
}

/* A file's bytes (the caller frees them), its length in *len. */
static uint8_t *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    uint8_t *bytes = malloc(4096);
    assert_non_null(bytes);
    *len = fread(bytes, 1, 4096, f);
    assert_int_equal(fclose(f), 0);
    return bytes;
}

/* `schakel case show --save-attachments DIR` writes each attachment as
 * DIR/SEQ-NAME, never over a file already there: a second save of the
 * same case is refused with the file named (exit 1), and leaves it as it
 * was; a folder that is not there is refused the same way. */
static void test_cli_case_show_saves_never_over_a_file(void **state)
{
    h_env_t *env = *state;
    static const schakel_case_open_t street = {
        .case_type = "ondermijning-adres",
        .area = "BU09350101",
        .title = "Kerkstraat",
    };
    static const uint8_t pdf[] = "%PDF-1.4 proces-verbaal (fictief)";
    schakel_client_t *riec = h_connect(env, H_RIEC);
    char id[SCHAKEL_CASE_ID_SIZE];
    schakel_case_result_t r;
    assert_int_equal(schakel_case_open(riec, &street, NULL, id, &r, H_TIMEOUT_MS), SCHAKEL_OK);
    assert_int_equal(schakel_case_attach(riec, id, "pv.pdf", "application/pdf", pdf, sizeof pdf,
                                         NULL, &r, H_TIMEOUT_MS),
                     SCHAKEL_OK);
    schakel_close(&riec);
    char folder[128], saved[192], missing[160], says[256];
    snprintf(folder, sizeof folder, "%s/bijlagen", env->dir);
    assert_int_equal(mkdir(folder, 0700), 0);
    snprintf(saved, sizeof saved, "%s/2-pv.pdf", folder); /* event 2: after the opening */
    h_cli_result_t res;
    h_run_cli(env, H_RIEC, &res, "case", "show", id, "--save-attachments", folder, NULL);
    h_expect_exit(&res, 0, "case show --save-attachments");
    h_cli_result_free(&res);
    size_t len = 0;
    uint8_t *content = read_whole(saved, &len);
    assert_int_equal(len, sizeof pdf);
    assert_memory_equal(content, pdf, sizeof pdf);
    free(content);
    /* again: the file is there */
    h_run_cli(env, H_RIEC, &res, "case", "show", id, "--save-attachments", folder, NULL);
    h_expect_exit(&res, 1, "a second case show --save-attachments");
    snprintf(says, sizeof says, "cannot save %s: File exists", saved);
    h_expect_text(res.err, says, "a second save");
    h_cli_result_free(&res);
    content = read_whole(saved, &len);
    assert_int_equal(len, sizeof pdf);
    free(content);
    /* a folder that is not there */
    snprintf(missing, sizeof missing, "%s/bestaat-niet", env->dir);
    h_run_cli(env, H_RIEC, &res, "case", "show", id, "--save-attachments", missing, NULL);
    h_expect_exit(&res, 1, "case show into a folder not there");
    snprintf(says, sizeof says, "cannot save %s/2-pv.pdf: No such file or directory", missing);
    h_expect_text(res.err, says, "a folder not there");
    h_cli_result_free(&res);
    h_done(env);
}

static int setup_cases_broker(void **state)
{
    h_env_t *env = h_env_new_with_cases();
    h_broker_start(env);
    *state = env;
    return 0;
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
        cmocka_unit_test_setup_teardown(test_cli_publish_stdin_errors, h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_cli_case_usage_errors, h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_cli_case_show_saves_never_over_a_file,
                                        setup_cases_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_cli_numbers_are_digits_only, h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_cli_listen_json_drain, h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_cli_whoami, h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_cli_keygen, h_setup_env, h_teardown),
    };
    return cmocka_run_group_tests_name("integration: cli", tests, NULL, NULL);
}
