/*
 * test_import.c — `schakel import` against a real schakeld: JSON lines and
 * CSV files arrive at their recipient exactly once and as written; refused
 * lines are listed with their line numbers and reason codes while the rest
 * is accepted; a CSV header with an unknown column refuses the file before
 * anything is sent; a rerun publishes nothing twice (after completion,
 * after an interruption, with a lost journal entry, with no journal at
 * all); a changed file needs --restart; progress lines appear on a
 * non-terminal stderr. After the broker's store is restored from a backup
 * (its store epoch is new), a rerun publishes again the batches accepted
 * after the backup was taken and skips those from before it, also those
 * the broker had forgotten on purpose (they are not delivered again),
 * across two restores too; with the floor unknown (--without-floor) it
 * publishes the file again and warns, as it does for a journal from
 * before item seqs. An import during the restore journals the restored
 * store's epoch before any batch that store answered, and says to run it
 * again; after a further restore, of a backup of that store, the rerun
 * brings every line to its recipient once. A broker restart keeps the
 * epoch and a rerun skips as before. A broker that cannot be asked at the end of a run (stopped
 * after the last Accepted) gets a warning.
 * Message ids are keyed with a secret derived from the sender's key: a
 * recipient whose rule withholds the address cannot confirm a guessed
 * house number by hashing candidate lines (a one-row CSV with --batch 1, a
 * one-line feed); the ids are the same with the same key and other with
 * another, which a rerun of a journal written with the old key says (and
 * publishes an unjournalled batch again); a journal begun by a schakel
 * from before keyed ids goes on with its unkeyed ids, nothing twice, also
 * through --restart of a header a power loss cut short. --restart keeps
 * the journal's batch size; another is refused unless --new-batch, which
 * sends every line again.
 *
 * The CLI runs as a child process (harness); its files live in the test's
 * mkdtemp folder. Deliveries are identified by source_ref "L<line>". The
 * one import held sync by sync runs with syncgate.so preloaded, no other
 * program.
 */
#define _GNU_SOURCE /* pipe2 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "keys.h"
#include "schakel_limits.h"

#define T_PATH 256
#define T_EXIT_USAGE 2
#define T_EXIT_REFUSED 3
#define T_EXIT_INTERRUPTED 5

/* ------------------------------------------------------------------ text and files */

typedef struct text {
    char *s;
    size_t len, cap;
} text_t;

static void text_add(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_add(text_t *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    assert_true(need >= 0);
    if (t->len + (size_t)need + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->len + (size_t)need + 1)
            cap *= 2;
        t->s = realloc(t->s, cap);
        assert_non_null(t->s);
        t->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    t->len += (size_t)need;
}

static void write_file(const char *path, const char *bytes, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        fail_msg("cannot write %s", path);
    assert_int_equal(fwrite(bytes, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* The whole file, NUL-terminated (NULL if it does not exist). */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    text_t t = {0};
    char buf[4096];
    size_t got;
    text_add(&t, "%s", "");
    while ((got = fread(buf, 1, sizeof buf, f)) > 0)
        text_add(&t, "%.*s", (int)got, buf);
    fclose(f);
    return t.s;
}

static void path_in(const h_env_t *env, const char *name, char *out)
{
    snprintf(out, T_PATH, "%s/%s", env->dir, name);
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* The summary line: "accepted N, refused N, already accepted N". */
static void expect_summary(const h_cli_result_t *res, unsigned long accepted, unsigned long refused,
                           unsigned long already)
{
    char want[128];
    snprintf(want, sizeof want, "accepted %lu, refused %lu, already accepted %lu\n", accepted,
             refused, already);
    if (strstr(res->out, want) == NULL)
        fail_msg("expected \"%.*s\" on stdout\nstdout: %s\nstderr: %s", (int)strlen(want) - 1, want,
                 res->out, res->err);
}

/* Run `schakel import` as principal with the arguments after FILE. */
static int run_import(h_env_t *env, const char *principal, const char *file, h_cli_result_t *res,
                      const char *const *extra)
{
    const char *args[24] = {"import"};
    size_t n = 1;
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
        assert_true(n < 22);
        args[n++] = extra[i];
    }
    args[n++] = file;
    args[n] = NULL;
    return h_run_cli_argv(env, principal, NULL, args, res);
}

/* ------------------------------------------------------------------ signals of the files */

static const char *const severities[] = {"low", "medium", "high", "critical"};

/* One JSON line of politie about ondermijning of the kind for line n. */
static void json_line_of(text_t *t, long n, int64_t observed, const char *kind)
{
    text_add(t,
             "{\"kind\":\"%s\",\"theme\":\"ondermijning\",\"area\":\"BU09350101\","
             "\"address\":{\"postcode\":\"6211AB\",\"house_number\":%ld},\"severity\":\"%s\","
             "\"observed_at\":%lld,\"summary\":\"Melding %ld: \\\"contant\\\" geld, caf\\u00e9\","
             "\"source_ref\":\"L%ld\"}\n",
             kind, n % 99999 + 1, severities[n % 4], (long long)observed, n, n);
}

/* One JSON line of politie about ondermijning (entitled: om) for line n. */
static void json_line(text_t *t, long n, int64_t observed)
{
    json_line_of(t, n, observed, "witwassen");
}

/* Content check of a delivery of json_line(n). */
static void check_json_line(const schakel_delivery_t *d, long n, int64_t observed)
{
    char summary[128];
    snprintf(summary, sizeof summary, "Melding %ld: \"contant\" geld, caf\xc3\xa9", n);
    assert_string_equal(d->sender, H_POLITIE);
    assert_string_equal(d->kind, "witwassen");
    assert_string_equal(d->theme, "ondermijning");
    assert_non_null(d->area);
    assert_string_equal(d->area, "BU09350101");
    assert_non_null(d->postcode);
    assert_string_equal(d->postcode, "6211AB");
    assert_int_equal(d->house_number, n % 99999 + 1);
    assert_int_equal(d->severity, n % 4 + 1);
    assert_int_equal(d->observed_at, observed);
    assert_non_null(d->summary);
    assert_string_equal(d->summary, summary);
}

typedef void (*check_fn)(const schakel_delivery_t *d, long n, void *ctx);

/* Receive exactly `expected` deliveries as principal, each with source_ref
 * "L<n>" for an n in 1..max_line marked in `want` and none twice; check
 * each (check may be NULL); ack them; then the mailbox must be empty. */
static void drain_lines(h_env_t *env, const char *principal, const unsigned char *want,
                        long max_line, check_fn check, void *ctx)
{
    size_t expected = 0;
    for (long n = 1; n <= max_line; n++)
        expected += want[n] != 0;
    unsigned char *seen = calloc((size_t)max_line + 1, 1);
    assert_non_null(seen);
    schakel_client_t *client = h_connect(env, principal);
    for (size_t i = 0; i < expected; i++) {
        schakel_delivery_t *d = h_receive(client);
        long n = 0;
        if (d->source_ref == NULL || sscanf(d->source_ref, "L%ld", &n) != 1 || n < 1 ||
            n > max_line)
            fail_msg("delivery %zu has source_ref %s", i, d->source_ref ? d->source_ref : "(none)");
        if (!want[n])
            fail_msg("line %ld was delivered but should not have been", n);
        if (seen[n])
            fail_msg("line %ld was delivered twice", n);
        seen[n] = 1;
        if (check)
            check(d, n, ctx);
        assert_int_equal(schakel_ack(client, d->seq), SCHAKEL_OK);
        schakel_delivery_free(&d);
    }
    assert_int_equal(h_backlog(client), 0); /* nothing more: no line twice */
    schakel_close(&client);
    free(seen);
}

static void check_json_cb(const schakel_delivery_t *d, long n, void *ctx)
{
    check_json_line(d, n, *(const int64_t *)ctx);
}

/* A JSON-lines file of politie signals for lines 1..n. */
static void write_json_file(const char *path, long n, int64_t observed)
{
    text_t t = {0};
    for (long i = 1; i <= n; i++)
        json_line(&t, i, observed);
    write_file(path, t.s, t.len);
    free(t.s);
}

static unsigned char *all_lines(long n)
{
    unsigned char *want = malloc((size_t)n + 1);
    assert_non_null(want);
    memset(want, 1, (size_t)n + 1);
    want[0] = 0;
    return want;
}

/* ------------------------------------------------------------------ tests */

/* 600 JSON lines in batches of 256: each received once by om, as written;
 * the journal and an empty refusals file are left beside the file. */
static void test_import_json_lines_arrive_once_as_written(void **state)
{
    h_env_t *env = *state;
    char file[T_PATH], journal[T_PATH], refused[T_PATH];
    path_in(env, "feed.jsonl", file);
    path_in(env, "feed.jsonl.import-state", journal);
    path_in(env, "feed.jsonl.refused", refused);
    int64_t observed = (int64_t)time(NULL) - 3600;
    write_json_file(file, 600, observed);

    h_cli_result_t res;
    run_import(env, H_POLITIE, file, &res, (const char *const[]){"--quiet", NULL});
    h_expect_exit(&res, 0, "import");
    expect_summary(&res, 600, 0, 0);
    h_cli_result_free(&res);
    assert_true(file_exists(journal));
    char *refusals = read_file(refused);
    assert_non_null(refusals);
    assert_string_equal(refusals, "");
    free(refusals);

    unsigned char *want = all_lines(600);
    drain_lines(env, H_OM, want, 600, check_json_cb, &observed);
    free(want);
    const char *const only_om[] = {H_OM, NULL};
    h_assert_nobody_else(env, only_om);
    h_done(env);
}

/* CSV: header with every kind of column, CRLF line ends, quoted fields with
 * commas, doubled quotes and line breaks, empty cells, blank lines,
 * recipients "politie;riec". Politie receives each record once as written,
 * riec as many, gemeente (entitled but not named) nothing. */
#define CSV_RECORDS 300

static void csv_expected_summary(long k, char *out, size_t len)
{
    if (k % 3 == 0)
        snprintf(out, len, "Regel %ld, met \"aanhalingstekens\"\nen een tweede regel", k);
    else
        snprintf(out, len, "Regel %ld zonder bijzonderheden", k);
}

static void check_csv_cb(const schakel_delivery_t *d, long k, void *ctx)
{
    int64_t observed = *(const int64_t *)ctx;
    char summary[160];
    csv_expected_summary(k, summary, sizeof summary);
    assert_string_equal(d->sender, H_WOCO_JEKERDAL);
    assert_string_equal(d->kind, "hennepkwekerij");
    assert_string_equal(d->theme, "ondermijning");
    assert_non_null(d->summary);
    assert_string_equal(d->summary, summary);
    assert_non_null(d->postcode);
    assert_string_equal(d->postcode, "6221CD");
    assert_int_equal(d->house_number, k);
    if (k % 2)
        assert_string_equal(d->addition, "bis");
    else
        assert_null(d->addition);
    assert_int_equal(d->severity, k % 5 == 0 ? 0 : SCHAKEL_SEVERITY_MEDIUM);
    assert_int_equal(d->observed_at, observed);
}

static void test_import_csv_arrives_once_as_written(void **state)
{
    h_env_t *env = *state;
    char file[T_PATH];
    path_in(env, "feed.csv", file);
    int64_t observed = (int64_t)time(NULL) - 7200;
    text_t t = {0};
    text_add(&t, "source_ref,kind,theme,area,postcode,house_number,addition,summary,"
                 "recipients,severity,observed_at\r\n");
    for (long k = 1; k <= CSV_RECORDS; k++) {
        if (k % 50 == 0)
            text_add(&t, "\r\n"); /* a blank line: skipped */
        text_add(&t, "L%ld,hennepkwekerij,ondermijning,GM0935,6221CD,%ld,%s,", k, k,
                 k % 2 ? "bis" : "");
        if (k % 3 == 0)
            text_add(&t, "\"Regel %ld, met \"\"aanhalingstekens\"\"\nen een tweede regel\"", k);
        else
            text_add(&t, "Regel %ld zonder bijzonderheden", k);
        text_add(&t, ",\"politie;riec\",%s,%lld\r\n", k % 5 == 0 ? "" : "medium",
                 (long long)observed);
    }
    write_file(file, t.s, t.len);
    free(t.s);

    h_cli_result_t res;
    run_import(env, H_WOCO_JEKERDAL, file, &res, (const char *const[]){"--batch", "64", NULL});
    h_expect_exit(&res, 0, "import csv");
    expect_summary(&res, CSV_RECORDS, 0, 0);
    h_cli_result_free(&res);

    unsigned char *want = all_lines(CSV_RECORDS);
    drain_lines(env, H_POLITIE, want, CSV_RECORDS, check_csv_cb, &observed);
    free(want);
    assert_int_equal(h_backlog_of(env, H_RIEC), CSV_RECORDS);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), 0);
    h_done(env);
}

/* A valid line (ondermijning, to om) with source_ref L<n>. */
#define OK_LINE(n)                                                                                 \
    "{\"kind\":\"witwassen\",\"theme\":\"ondermijning\",\"area\":\"GM0935\",\"source_ref\":\"L" #n \
    "\"}"
#define CONFLICT_ID "5c1e0a7b9d3f42e68a0b1c2d3e4f5a6b"
#define OWN_ID "0123456789abcdef0123456789abcdef"

/* Lines that must be refused, with their reason codes, between lines that
 * must be accepted; --batch 4 puts three refusals in one batch. */
static const struct {
    const char *line;
    const char *reason; /* NULL: accepted; "" : blank, neither */
} bad_rows[] = {
    {OK_LINE(1), NULL},
    {OK_LINE(2), NULL},
    {"{\"kind\":\"witwassen\",", "LOCAL_INVALID"},
    {OK_LINE(4), NULL},
    {"   ", ""},
    {"{\"kind\":\"inbraakreeks\",\"theme\":\"woninginbraak\",\"area\":\"GM0001\","
     "\"source_ref\":\"L6\"}",
     "POLICY_DENIED"},
    {OK_LINE(7), NULL},
    {"{\"kind\":\"witwassen\",\"theme\":\"ondermijning\",\"area\":\"GM0935\","
     "\"address\":{\"postcode\":\"6211 AB\",\"house_number\":3},\"source_ref\":\"L8\"}",
     "INVALID_POSTCODE"},
    {"{\"kind\":\"witwassen\",\"theme\":\"inbraak\",\"area\":\"GM0935\",\"source_ref\":\"L9\"}",
     "INVALID_THEME"},
    {OK_LINE(10), NULL},
    {"{\"kind\":\"witwassen\",\"theme\":\"ondermijning\",\"area\":\"GM0935\",\"summery\":\"x\"}",
     "LOCAL_INVALID"},
    {"{\"kind\":\"witwassen\",\"theme\":\"ondermijning\",\"area\":\"GM0935\","
     "\"source_ref\":\"L12\",\"message_id\":\"" CONFLICT_ID "\"}",
     "DUPLICATE_CONFLICT"},
    {"{\"kind\":\"witwassen\",\"theme\":\"ondermijning\",\"area\":\"GM0935\","
     "\"subject\":\"PSN-1c4e88aa07\",\"source_ref\":\"L13\"}",
     "MISSING_GROUNDS"},
    {"{\"kind\":\"witwassen\",\"theme\":\"ondermijning\",\"area\":\"GM0935\","
     "\"source_ref\":\"L14\",\"message_id\":\"" OWN_ID "\"}",
     NULL},
    {OK_LINE(15), NULL},
    {"{\"kind\":\"witwassen\",\"theme\":\"ondermijning\",\"area\":\"GM0935\","
     "\"message_id\":\"12ab\",\"source_ref\":\"L16\"}",
     "LOCAL_INVALID"},
    {OK_LINE(17), NULL},
};
#define BAD_ROWS (sizeof bad_rows / sizeof bad_rows[0])

/* The refusals file must list exactly the rows with a reason, in order. */
static void expect_refusals_file(const char *path, size_t *n_refused)
{
    char *text = read_file(path);
    assert_non_null(text);
    char *save = NULL, *line = strtok_r(text, "\n", &save);
    size_t count = 0;
    for (size_t i = 0; i < BAD_ROWS; i++) {
        if (bad_rows[i].reason == NULL || bad_rows[i].reason[0] == '\0')
            continue;
        char want[96];
        snprintf(want, sizeof want, "line %zu: %s: ", i + 1, bad_rows[i].reason);
        if (line == NULL || strncmp(line, want, strlen(want)) != 0)
            fail_msg("refusals file: expected \"%s...\", found \"%s\"", want,
                     line ? line : "(end)");
        count++;
        line = strtok_r(NULL, "\n", &save);
    }
    if (line != NULL)
        fail_msg("refusals file has more lines than expected: %s", line);
    free(text);
    *n_refused = count;
}

static void test_import_bad_lines_refused_by_line_rest_accepted(void **state)
{
    h_env_t *env = *state;
    char file[T_PATH], refused[T_PATH];
    path_in(env, "mixed.jsonl", file);
    path_in(env, "mixed.refused", refused);

    /* the id of line 12 was used before for another signal */
    uint8_t conflict_id[16];
    for (int i = 0; i < 16; i++) {
        unsigned byte;
        sscanf(CONFLICT_ID + 2 * i, "%2x", &byte);
        conflict_id[i] = (uint8_t)byte;
    }
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t earlier = {
        .kind = "witwassen", .theme = "ondermijning", .area = "GM0935", .source_ref = "L0"};
    h_publish_ok(politie, &earlier, conflict_id, NULL, NULL, NULL);
    schakel_close(&politie);
    schakel_client_t *om = h_connect(env, H_OM);
    schakel_delivery_t *d = h_receive(om);
    assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
    schakel_delivery_free(&d);
    assert_int_equal(h_backlog(om), 0);
    schakel_close(&om);

    text_t t = {0};
    size_t n_accepted = 0;
    unsigned char want[BAD_ROWS + 1] = {0};
    for (size_t i = 0; i < BAD_ROWS; i++) {
        text_add(&t, "%s\n", bad_rows[i].line);
        if (bad_rows[i].reason == NULL) {
            want[i + 1] = 1;
            n_accepted++;
        }
    }
    write_file(file, t.s, t.len);
    free(t.s);

    const char *const args[] = {"--batch", "4", "--refusals", refused, NULL};
    h_cli_result_t res;
    for (int round = 0; round < 2; round++) {
        run_import(env, H_POLITIE, file, &res, args);
        h_expect_exit(&res, T_EXIT_REFUSED, round == 0 ? "import" : "rerun");
        size_t n_refused = 0;
        expect_refusals_file(refused, &n_refused);
        if (round == 0)
            expect_summary(&res, n_accepted, n_refused, 0);
        else /* the rerun sends nothing and says so */
            expect_summary(&res, 0, n_refused, n_accepted);
        char count[64];
        snprintf(count, sizeof count, "%zu lines refused", n_refused);
        if (!strstr(res.err, count))
            fail_msg("stderr does not say \"%s\": %s", count, res.err);
        h_cli_result_free(&res);
        if (round == 0)
            drain_lines(env, H_OM, want, BAD_ROWS, NULL, NULL);
        else
            assert_int_equal(h_backlog_of(env, H_OM), 0);
    }
    h_assert_nobody_else(env, NULL);
    h_done(env);
}

/* The key of the message ids a principal's imports derive, as the man
 * page gives it: crypto_kdf from the seed of its key file (the first 32
 * bytes of libsodium's secret key), context "schkimpt", subkey 1. */
static void import_id_key(const char *key_file, uint8_t key[32])
{
    char err[256];
    keypair_t *pair = keys_load_secret(key_file, err, sizeof err);
    if (pair == NULL)
        fail_msg("cannot load %s: %s", key_file, err);
    assert_int_equal(crypto_kdf_derive_from_key(key, 32, 1, "schkimpt", pair->sign_sk), 0);
    keys_destroy(&pair);
}

/* The id the man page gives for a publish of politie of these lines (line
 * i numbered first + i, the ones in `sent`, all with NULL): BLAKE2b-128
 * keyed with the id key over "schakel-import2" NUL (key NULL: unkeyed,
 * over "schakel-import1" NUL, as a journal of unkeyed ids has them), the
 * sender NUL, and per line its number (8 bytes, little-endian) and the
 * BLAKE2b-256 of its bytes. */
static void expected_id_bytes(const uint8_t *key, const char *const *lines, const int *sent,
                              size_t n, long first, uint8_t id[16])
{
    static const char domain_v1[] = "schakel-import1", domain_keyed[] = "schakel-import2";
    crypto_generichash_state state;
    crypto_generichash_init(&state, key, key != NULL ? 32 : 0, 16);
    if (key != NULL)
        crypto_generichash_update(&state, (const unsigned char *)domain_keyed, sizeof domain_keyed);
    else
        crypto_generichash_update(&state, (const unsigned char *)domain_v1, sizeof domain_v1);
    crypto_generichash_update(&state, (const unsigned char *)H_POLITIE, sizeof H_POLITIE);
    for (size_t i = 0; i < n; i++) {
        if (sent != NULL && !sent[i])
            continue;
        uint8_t number[8] = {0}, digest[32];
        uint64_t line = (uint64_t)first + i;
        for (int b = 0; b < 8; b++)
            number[b] = (uint8_t)(line >> (8 * b));
        crypto_generichash(digest, sizeof digest, (const unsigned char *)lines[i], strlen(lines[i]),
                           NULL, 0);
        crypto_generichash_update(&state, number, sizeof number);
        crypto_generichash_update(&state, digest, sizeof digest);
    }
    crypto_generichash_final(&state, id, 16);
}

static void id_hex(const uint8_t id[16], char hex[33])
{
    for (size_t i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", id[i]);
}

/* The same in hex, for lines numbered from 1. */
static void expected_id(const uint8_t *key, const char *const *lines, const int *sent, size_t n,
                        char hex[33])
{
    uint8_t id[16];
    expected_id_bytes(key, lines, sent, n, 1, id);
    id_hex(id, hex);
}

/* When the broker refuses one line of a publish, the rest goes out under
 * the publish's own id: the id of the lines of the batch, as the man page
 * gives it (keyed with politie's id key), in every run. So a rerun without the journal, after the
 * refused line became one the policy allows, sends the whole batch under
 * that id again, and the broker, which stored the rest under it, refuses
 * it as a conflict: nothing is delivered twice. */
static void test_import_rest_of_a_refused_publish_keeps_its_id(void **state)
{
    h_env_t *env = *state;
    static const char *const lines[] = {
        "{\"kind\":\"witwassen\",\"theme\":\"ondermijning\",\"area\":\"GM0935\","
        "\"source_ref\":\"L1\"}",
        "{\"kind\":\"witwassen\",\"theme\":\"overlast\",\"area\":\"GM0935\","
        "\"source_ref\":\"L2\"}",
        "{\"kind\":\"witwassen\",\"theme\":\"ondermijning\",\"area\":\"GM0935\","
        "\"source_ref\":\"L3\"}",
    };
    char file[T_PATH], refused[T_PATH], journal[T_PATH], whole[33], needle[200];
    path_in(env, "rest.jsonl", file);
    path_in(env, "rest.refused", refused);
    path_in(env, "rest.jsonl.import-state", journal);
    text_t t = {0};
    for (size_t i = 0; i < 3; i++)
        text_add(&t, "%s\n", lines[i]);
    write_file(file, t.s, t.len);
    free(t.s);
    const int all[] = {1, 1, 1};
    uint8_t key[32];
    import_id_key(h_key_file(env, H_POLITIE), key);
    expected_id(key, lines, all, 3, whole);

    long offset = h_log_offset(env);
    const char *const args[] = {"--batch", "3", "--in-flight", "1", "--refusals", refused, NULL};
    h_cli_result_t res;
    run_import(env, H_POLITIE, file, &res, args);
    h_expect_exit(&res, T_EXIT_REFUSED, "import");
    expect_summary(&res, 2, 1, 0);
    h_cli_result_free(&res);
    char *list = read_file(refused);
    assert_non_null(list);
    if (strstr(list, "line 2: POLICY_DENIED") == NULL || strstr(list, "line 3") != NULL)
        fail_msg("the refusals file names the wrong lines: %s", list);
    free(list);
    snprintf(needle, sizeof needle,
             "event=request.refused principal=%s message_id=%s reason=POLICY_DENIED item=1",
             H_POLITIE, whole);
    if (h_await_log(env, offset, needle, H_TIMEOUT_MS) != 0)
        fail_msg("the whole publish was not refused under its id: no \"%s\"", needle);
    snprintf(needle, sizeof needle, "event=publish.accepted principal=%s message_id=%s items=2",
             H_POLITIE, whole);
    if (h_await_log(env, offset, needle, H_TIMEOUT_MS) != 0)
        fail_msg("the rest was not accepted under the publish's id: no \"%s\"", needle);
    unsigned char want[4] = {0, 1, 0, 1};
    drain_lines(env, H_OM, want, 3, NULL, NULL);

    /* line 2 is allowed now; the journal is lost: nothing comes twice */
    h_env_write_policy(env,
                       "%s%s  - id: politie-overlast-om\n    from: [politie]\n    to: [om]\n"
                       "    themes: [overlast]\n    areas: [\"*\"]\n    purpose: \"Toets\"\n"
                       "    legal_basis: \"Toets\"\n    fields: [area, source_ref]\n"
                       "    retention: 30d\n",
                       h_policy_header, h_default_rules);
    assert_int_equal(h_broker_reload(env), 1);
    assert_int_equal(unlink(journal), 0);
    run_import(env, H_POLITIE, file, &res, args);
    h_expect_exit(&res, T_EXIT_REFUSED, "rerun without the journal");
    expect_summary(&res, 0, 3, 0);
    h_cli_result_free(&res);
    list = read_file(refused);
    assert_non_null(list);
    for (int line = 1; line <= 3; line++) {
        char what[64];
        snprintf(what, sizeof what, "line %d: DUPLICATE_CONFLICT", line);
        if (strstr(list, what) == NULL)
            fail_msg("the rerun's refusals lack \"%s\": %s", what, list);
    }
    free(list);
    assert_int_equal(h_backlog_of(env, H_OM), 0);
    h_done(env);
}

/* A physical line longer than a record may be (256 KiB) is refused by its
 * line number without being kept whole, and the lines after it pass: in
 * JSON lines, and in CSV where the cut line's quotes cannot be followed. */
static void test_import_overlong_line_refused_rest_accepted(void **state)
{
    h_env_t *env = *state;
    static const struct {
        const char *name;
        const char *header; /* NULL: JSON lines */
        const char *first, *last;
        const char *long_start, *long_end;
    } rows[] = {
        {"long.jsonl", NULL, OK_LINE(1), OK_LINE(3),
         "{\"kind\":\"witwassen\",\"theme\":\"ondermijning\",\"summary\":\"", "\"}"},
        {"long.csv", "source_ref,kind,theme,area,summary", "L2,witwassen,ondermijning,GM0935,kort",
         "L4,witwassen,ondermijning,GM0935,kort", "L3,witwassen,ondermijning,GM0935,\"", "\""},
    };
    enum { LONG_BYTES = 300 * 1024 };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char file[T_PATH], refused[T_PATH], name[48];
        path_in(env, rows[i].name, file);
        snprintf(name, sizeof name, "%s.refused", rows[i].name);
        path_in(env, name, refused);
        text_t t = {0};
        if (rows[i].header != NULL)
            text_add(&t, "%s\n", rows[i].header);
        text_add(&t, "%s\n%s", rows[i].first, rows[i].long_start);
        for (int k = 0; k < LONG_BYTES / 64; k++)
            text_add(&t, "%s", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        text_add(&t, "%s\n%s\n", rows[i].long_end, rows[i].last);
        write_file(file, t.s, t.len);
        free(t.s);

        const char *const args[] = {"--refusals", refused, NULL};
        h_cli_result_t res;
        run_import(env, H_POLITIE, file, &res, args);
        h_expect_exit(&res, T_EXIT_REFUSED, rows[i].name);
        expect_summary(&res, 2, 1, 0);
        h_cli_result_free(&res);
        char *text = read_file(refused);
        assert_non_null(text);
        long want_line = rows[i].header != NULL ? 3 : 2;
        char want[64];
        snprintf(want, sizeof want, "line %ld: LOCAL_INVALID: ", want_line);
        if (strncmp(text, want, strlen(want)) != 0 || strstr(text, "longer than") == NULL ||
            strchr(text, '\n') != text + strlen(text) - 1)
            fail_msg("%s: refusals file \"%.200s\", want one line \"%s... longer than ...\"",
                     rows[i].name, text, want);
        free(text);
        assert_int_equal(h_backlog_of(env, H_OM), 2 * (i + 1));
    }
    h_done(env);
}

/* A CSV record refused for its length inside a quoted field that runs over
 * several lines: the lines of that field never become records of their
 * own (one looks like a valid record here), and the record after it
 * passes. Rows: a cut line (longer than a record may be) in the field, and
 * lines each short enough that only their sum is too long. */
static void test_import_csv_long_quoted_field_stays_one_record(void **state)
{
    h_env_t *env = *state;
    static const struct {
        const char *name;
        int chunks;      /* lines of filler in the field before the fake record */
        int chunk_bytes; /* each */
    } rows[] = {{"cut.csv", 1, 300 * 1024}, {"sum.csv", 2, 150 * 1024}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char file[T_PATH], refused[T_PATH], name[48];
        path_in(env, rows[i].name, file);
        snprintf(name, sizeof name, "%s.refused", rows[i].name);
        path_in(env, name, refused);
        text_t t = {0};
        text_add(&t, "source_ref,kind,theme,area,summary\n");
        text_add(&t, "L2,witwassen,ondermijning,GM0935,kort\n");
        text_add(&t, "L3,witwassen,ondermijning,GM0935,\"begin");
        for (int c = 0; c < rows[i].chunks; c++) {
            text_add(&t, "\n");
            for (int k = 0; k < rows[i].chunk_bytes / 64; k++)
                text_add(&t, "%s",
                         "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde,");
        }
        /* inside the quotes: a line that would be a valid record on its own */
        text_add(&t, "\nL9,witwassen,ondermijning,GM0935,nep\nend\"\n");
        text_add(&t, "L10,witwassen,ondermijning,GM0935,kort\n");
        write_file(file, t.s, t.len);
        free(t.s);

        const char *const args[] = {"--refusals", refused, NULL};
        h_cli_result_t res;
        run_import(env, H_POLITIE, file, &res, args);
        h_expect_exit(&res, T_EXIT_REFUSED, rows[i].name);
        expect_summary(&res, 2, 1, 0);
        h_cli_result_free(&res);
        char *text = read_file(refused);
        assert_non_null(text);
        if (strncmp(text, "line 3: LOCAL_INVALID: ", 23) != 0 ||
            strstr(text, "longer than") == NULL || strchr(text, '\n') != text + strlen(text) - 1)
            fail_msg("%s: refusals \"%.200s\", want one line 3 ... longer than", rows[i].name,
                     text);
        free(text);
        /* what arrives: L2 and L10 of each file, never L9 */
        schakel_client_t *om = h_connect(env, H_OM);
        for (int k = 0; k < 2; k++) {
            schakel_delivery_t *d = h_receive(om);
            if (d->source_ref == NULL ||
                (strcmp(d->source_ref, "L2") != 0 && strcmp(d->source_ref, "L10") != 0))
                fail_msg("%s: delivered %s", rows[i].name, d->source_ref ? d->source_ref : "-");
            assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
            schakel_delivery_free(&d);
        }
        assert_int_equal(h_backlog(om), 0);
        schakel_close(&om);
    }
    h_done(env);
}

/* CSV records that must be refused before anything is sent, and one that
 * the broker refuses, between records that must pass. */
static const struct {
    const char *record;
    const char *reason;
} csv_rows[] = {
    {"L2,witwassen,ondermijning,GM0935,,", NULL},
    {"L3,wit\"wassen,ondermijning,GM0935,,", "LOCAL_INVALID"},
    {"L4,\"witwassen\"x,ondermijning,GM0935,,", "LOCAL_INVALID"},
    {"L5,witwassen,ondermijning,GM0935,", "LOCAL_INVALID"},
    {"L6,witwassen,ondermijning,GM0935,12a,", "LOCAL_INVALID"},
    {"L7,witwassen,ondermijning,GM0935,,om;", "LOCAL_INVALID"},
    {"\"L8\",\"witwassen\",\"ondermijning\",\"GM0935\",\"\",\"om\"", NULL},
    {"L9,witwassen,ondermijning,GM9999X,,", "INVALID_AREA"},
    {"L10,witwassen,ondermijning,GM0935,,", NULL},
    {"L11,\"witwassen,ondermijning,GM0935,,", "LOCAL_INVALID"}, /* open to the end */
};
#define CSV_ROWS (sizeof csv_rows / sizeof csv_rows[0])

static void test_import_csv_bad_records_refused_by_line(void **state)
{
    h_env_t *env = *state;
    char file[T_PATH], refused[T_PATH];
    path_in(env, "records.csv", file);
    path_in(env, "records.csv.refused", refused);
    text_t t = {0};
    text_add(&t, "source_ref,kind,theme,area,house_number,recipients\n");
    unsigned char want[CSV_ROWS + 2] = {0};
    size_t n_ok = 0, n_bad = 0;
    for (size_t i = 0; i < CSV_ROWS; i++) {
        text_add(&t, "%s\n", csv_rows[i].record);
        if (csv_rows[i].reason == NULL) {
            want[i + 2] = 1;
            n_ok++;
        } else {
            n_bad++;
        }
    }
    write_file(file, t.s, t.len);
    free(t.s);
    h_cli_result_t res;
    run_import(env, H_POLITIE, file, &res, (const char *const[]){"--batch", "3", NULL});
    h_expect_exit(&res, T_EXIT_REFUSED, "import csv with bad records");
    expect_summary(&res, n_ok, n_bad, 0);
    h_cli_result_free(&res);
    char *text = read_file(refused);
    assert_non_null(text);
    char *save = NULL, *line = strtok_r(text, "\n", &save);
    for (size_t i = 0; i < CSV_ROWS; i++) {
        if (csv_rows[i].reason == NULL)
            continue;
        char prefix[96];
        snprintf(prefix, sizeof prefix, "line %zu: %s: ", i + 2, csv_rows[i].reason);
        if (line == NULL || strncmp(line, prefix, strlen(prefix)) != 0)
            fail_msg("refusals: expected \"%s...\", found \"%s\"", prefix, line ? line : "(end)");
        line = strtok_r(NULL, "\n", &save);
    }
    assert_null(line);
    free(text);
    drain_lines(env, H_OM, want, CSV_ROWS + 1, NULL, NULL);
    h_done(env);
}

/* A header the import does not take refuses the whole file: exit 2, the
 * column named, nothing sent, no journal. The last row must pass. */
static void test_import_csv_bad_header_refuses_file(void **state)
{
    h_env_t *env = *state;
    static const struct {
        const char *header;
        int status;
        const char *says;
    } rows[] = {
        {"kind,theme,area,postcod", 2, "unknown column \"postcod\""},
        {"kind,theme,area,Summary", 2, "unknown column \"Summary\""},
        {"kind,,theme,area", 2, "unknown column \"\""},
        {"kind,theme,area,kind", 2, "column \"kind\" is named twice"},
        {"kind,the\"me,area", 2, "not valid CSV"},
        {"kind,theme,area", 0, NULL},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char file[T_PATH], journal[T_PATH + 16], name[32];
        snprintf(name, sizeof name, "header-%zu.csv", i);
        path_in(env, name, file);
        snprintf(journal, sizeof journal, "%s.import-state", file);
        text_t t = {0};
        text_add(&t, "%s\nwitwassen,ondermijning,GM0935\n", rows[i].header);
        write_file(file, t.s, t.len);
        free(t.s);
        h_cli_result_t res;
        run_import(env, H_POLITIE, file, &res, NULL);
        h_expect_exit(&res, rows[i].status, rows[i].header);
        if (rows[i].says != NULL) {
            if (!strstr(res.err, rows[i].says))
                fail_msg("row %zu: stderr does not say %s: %s", i, rows[i].says, res.err);
            assert_false(file_exists(journal));
            assert_int_equal(h_backlog_of(env, H_OM), 0);
        } else {
            expect_summary(&res, 1, 0, 0);
            assert_int_equal(h_backlog_of(env, H_OM), 1);
        }
        h_cli_result_free(&res);
    }
    h_done(env);
}

/* A finished file run again publishes nothing: with its journal, and with
 * the journal gone too (the ids come from the file, and the broker answers
 * each batch as a duplicate). */
static void test_import_rerun_after_completion_publishes_nothing(void **state)
{
    h_env_t *env = *state;
    char file[T_PATH], journal[T_PATH];
    path_in(env, "done.jsonl", file);
    path_in(env, "done.jsonl.import-state", journal);
    int64_t observed = (int64_t)time(NULL) - 600;
    write_json_file(file, 300, observed);
    const char *const args[] = {"--batch", "100", NULL};
    h_cli_result_t res;
    run_import(env, H_POLITIE, file, &res, args);
    h_expect_exit(&res, 0, "import");
    expect_summary(&res, 300, 0, 0);
    h_cli_result_free(&res);
    unsigned char *want = all_lines(300);
    drain_lines(env, H_OM, want, 300, check_json_cb, &observed);
    free(want);

    for (int round = 0; round < 2; round++) {
        if (round == 1)
            assert_int_equal(unlink(journal), 0);
        run_import(env, H_POLITIE, file, &res, args);
        h_expect_exit(&res, 0, round == 0 ? "rerun with journal" : "rerun without journal");
        expect_summary(&res, 0, 0, 300);
        h_cli_result_free(&res);
        assert_int_equal(h_backlog_of(env, H_OM), 0);
    }
    h_done(env);
}

/* Remove the journal's last "D" entry: a crash after the broker accepted a
 * batch and before the journal said so. */
static void drop_last_done_entry(const char *journal)
{
    char *text = read_file(journal);
    assert_non_null(text);
    size_t len = strlen(text);
    assert_true(len > 0 && text[len - 1] == '\n');
    char *last = NULL;
    for (char *p = text; (p = strstr(p, "\nD ")) != NULL; p++)
        last = p + 1;
    assert_non_null(last);
    assert_non_null(strchr(last, '\n'));
    assert_true(strchr(last, '\n') == text + len - 1); /* it was the last line */
    write_file(journal, text, (size_t)(last - text));
    free(text);
}

/* Interrupted after 3 batches (SIGINT, handled between batches), a crash's
 * lost journal entry, a rerun: every line arrives exactly once, the refused
 * one never. */
static void test_import_interrupted_then_rerun_exactly_once(void **state)
{
    h_env_t *env = *state;
    char file[T_PATH], journal[T_PATH];
    path_in(env, "big.jsonl", file);
    path_in(env, "big.jsonl.import-state", journal);
    int64_t observed = (int64_t)time(NULL) - 900;
    text_t t = {0};
    for (long n = 1; n <= 600; n++) {
        if (n == 250) /* refused by the policy, in the third batch */
            text_add(&t, "{\"kind\":\"inbraakreeks\",\"theme\":\"woninginbraak\","
                         "\"area\":\"GM0001\",\"source_ref\":\"L250\"}\n");
        else
            json_line(&t, n, observed);
    }
    write_file(file, t.s, t.len);
    free(t.s);

    h_cli_result_t res;
    run_import(
        env, H_POLITIE, file, &res,
        (const char *const[]){"--batch", "100", "--test-interrupt-after-batches", "3", NULL});
    h_expect_exit(&res, T_EXIT_INTERRUPTED, "interrupted import");
    expect_summary(&res, 299, 1, 0);
    if (!strstr(res.err, "interrupted"))
        fail_msg("stderr does not say it was interrupted: %s", res.err);
    h_cli_result_free(&res);
    assert_int_equal(h_backlog_of(env, H_OM), 299);

    drop_last_done_entry(journal);
    run_import(env, H_POLITIE, file, &res, (const char *const[]){"--batch", "100", NULL});
    h_expect_exit(&res, T_EXIT_REFUSED, "rerun");
    /* 200 journalled + 99 answered as duplicates; 300 new; line 250 refused */
    expect_summary(&res, 300, 1, 299);
    h_cli_result_free(&res);

    unsigned char *want = all_lines(600);
    want[250] = 0;
    drain_lines(env, H_OM, want, 600, check_json_cb, &observed);
    free(want);
    h_done(env);
}

/* A file changed after its import: refused without --restart (nothing
 * sent); with it, the unchanged batches are answered as duplicates and
 * only the new line is published. A resume with another --batch too. */
static void test_import_changed_file_needs_restart(void **state)
{
    h_env_t *env = *state;
    char file[T_PATH];
    path_in(env, "grows.jsonl", file);
    int64_t observed = (int64_t)time(NULL) - 300;
    write_json_file(file, 20, observed);
    h_cli_result_t res;
    run_import(env, H_POLITIE, file, &res, (const char *const[]){"--batch", "10", NULL});
    h_expect_exit(&res, 0, "import");
    h_cli_result_free(&res);
    unsigned char *want = all_lines(21);
    want[21] = 0;
    drain_lines(env, H_OM, want, 21, check_json_cb, &observed);

    run_import(env, H_POLITIE, file, &res, (const char *const[]){"--batch", "5", NULL});
    h_expect_exit(&res, 2, "resume with another --batch");
    if (!strstr(res.err, "--batch 10"))
        fail_msg("stderr does not name the journal's batch size: %s", res.err);
    h_cli_result_free(&res);

    text_t t = {0};
    json_line(&t, 21, observed);
    int fd = open(file, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, t.s, t.len), (ssize_t)t.len);
    close(fd);
    free(t.s);

    run_import(env, H_POLITIE, file, &res, (const char *const[]){"--batch", "10", NULL});
    h_expect_exit(&res, 2, "changed file");
    if (!strstr(res.err, "--restart"))
        fail_msg("stderr does not point to --restart: %s", res.err);
    h_cli_result_free(&res);
    assert_int_equal(h_backlog_of(env, H_OM), 0);

    run_import(env, H_POLITIE, file, &res,
               (const char *const[]){"--batch", "10", "--restart", NULL});
    h_expect_exit(&res, 0, "restart");
    expect_summary(&res, 1, 0, 20);
    h_cli_result_free(&res);
    memset(want, 0, 22);
    want[21] = 1;
    drain_lines(env, H_OM, want, 21, check_json_cb, &observed);
    free(want);
    h_done(env);
}

/* On a stderr that is not a terminal: plain progress lines (the final one
 * at least) and never a bar; --quiet: none. */
static void test_import_progress_plain_when_not_a_terminal(void **state)
{
    h_env_t *env = *state;
    static const struct {
        int quiet;
        int progress;
    } rows[] = {{0, 1}, {1, 0}};
    /* One clock reading for all rows: two readings a second apart would
     * give both files the same lines. */
    int64_t observed = (int64_t)time(NULL) - 60;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char file[T_PATH], name[32];
        snprintf(name, sizeof name, "progress-%zu.jsonl", i);
        path_in(env, name, file);
        /* other signals in each file: the same lines would be the same batch */
        write_json_file(file, 10, observed - (int64_t)i);
        h_cli_result_t res;
        run_import(env, H_POLITIE, file, &res,
                   rows[i].quiet ? (const char *const[]){"--quiet", NULL} : NULL);
        h_expect_exit(&res, 0, "import");
        int shown = strstr(res.err, "schakel: import: 10/10 lines (100%)") != NULL;
        if (shown != rows[i].progress)
            fail_msg("row %zu: progress %s expected; stderr: %s", i,
                     rows[i].progress ? "lines" : "nothing", res.err);
        assert_null(strchr(res.err, '\r'));
        assert_null(strstr(res.err, "\033["));
        h_cli_result_free(&res);
    }
    assert_int_equal(h_backlog_of(env, H_OM), 20);
    h_done(env);
}

/* On a terminal the progress is one line redrawn in place: a bar, lines
 * done/total, percent, rate and ETA, ending at 100% with a line break, and
 * no plain progress lines. */
static void test_import_progress_bar_on_a_terminal(void **state)
{
    h_env_t *env = *state;
    char file[T_PATH];
    path_in(env, "tty.jsonl", file);
    write_json_file(file, 12, (int64_t)time(NULL) - 90);
    const char *const args[] = {"import", file, NULL};
    h_cli_target_t target = {.stderr_tty = 1};
    h_cli_result_t res;
    h_run_cli_argv(env, H_POLITIE, &target, args, &res);
    h_expect_exit(&res, 0, "import on a terminal");
    static const char *const must[] = {
        "\r\033[K[########################] 12/12 100% ", /* the last redraw */
        " lines/s ETA 0:00",
    };
    for (size_t i = 0; i < sizeof must / sizeof must[0]; i++)
        if (strstr(res.err, must[i]) == NULL)
            fail_msg("row %zu: the terminal shows no \"%s\": \"%s\"", i, must[i], res.err);
    if (strstr(res.err, "schakel: import: 12/12 lines") != NULL)
        fail_msg("a plain progress line on a terminal: \"%s\"", res.err);
    h_cli_result_free(&res);
    assert_int_equal(h_backlog_of(env, H_OM), 12);
    h_done(env);
}

/* The broker refuses a publish as a whole: a rate limit passes with the
 * retries (and says so), a limit that no retry passes stops the import
 * (exit 1, the way out named), an unreachable broker is exit 4. The
 * stopped import had sent its second batch (2 lines, within the limit)
 * before the first one's answer came: the summary counts it accepted. */
static void test_import_whole_publish_refusals(void **state)
{
    h_env_t *env = *state;
    static const struct {
        const char *setting; /* schakeld --set, NULL: no broker at all */
        const char *batch;
        int status;
        const char *says;
        unsigned long accepted;
    } rows[] = {
        {"max_publish_rate=1", "2", 0, "RATE_LIMITED", 6},
        {"max_items_per_publish=2", "4", 1, "TOO_MANY_ITEMS", 2},
        {NULL, "2", 4, "connect", 0},
    };
    int64_t observed = (int64_t)time(NULL) - 1200;
    unsigned long delivered = 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char file[T_PATH], name[32], endpoint[64];
        snprintf(name, sizeof name, "whole-%zu.jsonl", i);
        path_in(env, name, file);
        write_json_file(file, 6, observed - (int64_t)i);
        h_cli_result_t res;
        const char *const args[] = {"import", "--batch", rows[i].batch, file, NULL};
        int closed_fd = -1;
        h_cli_target_t target = {0};
        if (rows[i].setting != NULL) {
            const char *const extra[] = {"--set", rows[i].setting, NULL};
            h_broker_start_with(env, extra);
        } else {
            int port = 0;
            closed_fd = h_closed_port(&port);
            snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port);
            target.endpoint = endpoint;
        }
        h_run_cli_argv(env, H_POLITIE, &target, args, &res);
        h_closed_port_release(closed_fd);
        h_expect_exit(&res, rows[i].status, rows[i].setting ? rows[i].setting : "no broker");
        if (!strstr(res.err, rows[i].says))
            fail_msg("row %zu: stderr does not say %s: %s", i, rows[i].says, res.err);
        if (rows[i].setting != NULL) {
            expect_summary(&res, rows[i].accepted, 0, 0);
            delivered += rows[i].accepted;
            assert_int_equal(h_backlog_of(env, H_OM), delivered);
            assert_int_equal(h_broker_stop(env), 0);
        }
        h_cli_result_free(&res);
    }
    h_done(env);
}

/* Publishes in flight: with --in-flight 8 and batches of 10, line 55 (in
 * the sixth batch) is refused while later batches are already sent. Every
 * other line arrives once; the lines arrive in file order, except the
 * rest of the refused line's publish (51..60: a refused publish stores
 * nothing), sent again after its answer and so after batches that were
 * sent meanwhile. With --in-flight 1
 * everything arrives in file order. */
static void test_import_in_flight_order_and_refusal(void **state)
{
    h_env_t *env = *state;
    static const struct {
        const char *in_flight;
        int strict; /* every line in file order */
    } rows[] = {{"8", 0}, {"1", 1}};
    enum { LINES = 300, REFUSED_LINE = 55, REST_FIRST = 51, REST_LAST = 60 };
    int64_t observed = (int64_t)time(NULL) - 600;
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        char file[T_PATH], name[32];
        snprintf(name, sizeof name, "inflight-%zu.jsonl", r);
        path_in(env, name, file);
        text_t t = {0};
        for (long n = 1; n <= LINES; n++) {
            if (n == REFUSED_LINE) /* no rule lets politie send this */
                text_add(&t,
                         "{\"kind\":\"inbraakreeks\",\"theme\":\"woninginbraak\","
                         "\"area\":\"GM0001\",\"source_ref\":\"L%d\"}\n",
                         REFUSED_LINE);
            else /* other lines in each row: other message ids */
                json_line(&t, n, observed - (int64_t)r);
        }
        write_file(file, t.s, t.len);
        free(t.s);
        h_cli_result_t res;
        run_import(env, H_POLITIE, file, &res,
                   (const char *const[]){"--batch", "10", "--in-flight", rows[r].in_flight, NULL});
        h_expect_exit(&res, T_EXIT_REFUSED, rows[r].in_flight);
        expect_summary(&res, LINES - 1, 1, 0);
        h_cli_result_free(&res);

        schakel_client_t *om = h_connect(env, H_OM);
        long last = 0, last_rest = 0;
        unsigned char seen[LINES + 1] = {0};
        for (int i = 0; i < LINES - 1; i++) {
            schakel_delivery_t *d = h_receive(om);
            long n = 0;
            if (d->source_ref == NULL || sscanf(d->source_ref, "L%ld", &n) != 1 || n < 1 ||
                n > LINES || n == REFUSED_LINE || seen[n])
                fail_msg("in-flight %s: delivery %d is %s", rows[r].in_flight, i,
                         d->source_ref ? d->source_ref : "(none)");
            seen[n] = 1;
            int rest = n >= REST_FIRST && n <= REST_LAST;
            long *prev = rest && !rows[r].strict ? &last_rest : &last;
            if (n <= *prev)
                fail_msg("in-flight %s: line %ld arrived after line %ld", rows[r].in_flight, n,
                         *prev);
            *prev = n;
            assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
            schakel_delivery_free(&d);
        }
        assert_int_equal(h_backlog(om), 0);
        schakel_close(&om);
    }
    h_done(env);
}

/* ------------------------------------------------------------------ restores */

/* A backup of the running broker's store, taken with the command of
 * docs/OPERATIONS.md ("Backups") as it is written there, into DIR/backup;
 * its path into path. */
static void take_backup_into(h_env_t *env, const char *name, char *path)
{
    char folder[T_PATH], command[2048], pattern[T_PATH + 8];
    path_in(env, name, folder);
    assert_int_equal(mkdir(folder, 0700), 0);
    h_backup_command(env, folder, command, sizeof command);
    h_cli_result_t res;
    int status = h_run_sh(command, &res);
    if (status != 0 || res.err[0] != '\0')
        fail_msg("the backup command \"%s\" exited %d: %s%s", command, status, res.out, res.err);
    h_cli_result_free(&res);
    snprintf(pattern, sizeof pattern, "%s/*", folder);
    glob_t found;
    if (glob(pattern, 0, NULL, &found) != 0 || found.gl_pathc != 1)
        fail_msg("the backup folder holds %zu files, want the backup alone", found.gl_pathc);
    snprintf(path, T_PATH, "%s", found.gl_pathv[0]);
    globfree(&found);
}

static void take_backup(h_env_t *env, char *path)
{
    take_backup_into(env, "backup", path);
}

/* schakeld --restored BACKUP, the broker stopped: exit 0, or -1 with the
 * output in problem (never fails the test: a thread may be running). */
static int restore_backup(const h_env_t *env, const char *backup, char *problem, size_t len)
{
    h_cli_result_t res;
    int status = h_run_schakeld(&res, "--restored", backup, "--config", env->config_path, NULL);
    int ok = status == 0 && strstr(res.out, "store epoch now ") != NULL;
    if (!ok)
        snprintf(problem, len, "--restored %s: exit %d: %s%s", backup, status, res.out, res.err);
    h_cli_result_free(&res);
    return ok ? 0 : -1;
}

/* The broker's store epoch, as libschakel gives it to politie. */
static void broker_epoch(h_env_t *env, uint8_t epoch[16])
{
    schakel_client_t *client = h_connect(env, H_POLITIE);
    int known = 0;
    assert_int_equal(schakel_store_epoch(client, epoch, &known, H_TIMEOUT_MS), SCHAKEL_OK);
    assert_int_equal(known, 1);
    schakel_close(&client);
}

/* How many "E" (store epoch) entries the journal holds. */
static int journal_epochs(const char *journal)
{
    char *text = read_file(journal);
    assert_non_null(text);
    int n = strncmp(text, "E ", 2) == 0;
    for (const char *p = text; (p = strstr(p, "\nE ")) != NULL; p++)
        n++;
    free(text);
    return n;
}

static void expect_said(const h_cli_result_t *res, const char *needle, int said, const char *what)
{
    if ((strstr(res->err, needle) != NULL) != said)
        fail_msg("%s: stderr %s \"%s\"\nstdout: %s\nstderr: %s", what,
                 said ? "does not say" : "says", needle, res->out, res->err);
}

#define SAID_RESTORED_SINCE "the broker's store was restored from a backup since"
#define SAID_RESTORED_DURING "the broker's store was restored from a backup during this import"

/* A journal as a schakel from before item seqs wrote it: D lines with
 * FIRST LAST ACCEPTED alone. */
static void journal_drop_seqs(const char *journal)
{
    char *text = read_file(journal);
    assert_non_null(text);
    text_t out = {0};
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        long first, last;
        unsigned long long accepted;
        if (line[0] == 'D' && sscanf(line, "D %ld %ld %llu", &first, &last, &accepted) == 3)
            text_add(&out, "D %ld %ld %llu\n", first, last, accepted);
        else
            text_add(&out, "%s\n", line);
    }
    write_file(journal, out.s, out.len);
    free(out.s);
    free(text);
}

/* The review's case: a is imported, a backup is taken with the documented
 * command, b is imported, the broker is stopped, the backup restored
 * (schakeld --restored) and the broker started. The restored store lost
 * b, and its store epoch is new: a rerun of b says so and publishes b
 * again from line 1 (every batch of b is above the floor: nothing forgotten
 * on purpose is among them, and no warning), and om receives each of its
 * lines once. A rerun of a publishes a again too; the store still has it,
 * so every batch is answered as a repeat and nothing reaches om twice. A
 * rerun of b after that skips it. c, imported before the backup too, has
 * a journal from before item seqs: its rerun publishes it again from line
 * 1 with the warning that forgotten lines are shared again (the store has
 * c: all answered as repeats). */
static void test_import_rerun_after_restore_publishes_again(void **state)
{
    h_env_t *env = *state;
    char a[T_PATH], b[T_PATH], c[T_PATH], b_journal[T_PATH], c_journal[T_PATH], backup[T_PATH];
    char problem[2048];
    path_in(env, "a.jsonl", a);
    path_in(env, "b.jsonl", b);
    path_in(env, "c.jsonl", c);
    path_in(env, "b.jsonl.import-state", b_journal);
    path_in(env, "c.jsonl.import-state", c_journal);
    int64_t observed_a = (int64_t)time(NULL) - 3000, observed_b = observed_a + 1000;
    int64_t observed_c = observed_a + 500;
    write_json_file(a, 100, observed_a);
    write_json_file(b, 100, observed_b);
    write_json_file(c, 100, observed_c);
    const char *const args[] = {"--batch", "30", "--quiet", NULL};
    unsigned char *want = all_lines(100);
    h_cli_result_t res;

    run_import(env, H_POLITIE, a, &res, args);
    h_expect_exit(&res, 0, "import a");
    expect_summary(&res, 100, 0, 0);
    h_cli_result_free(&res);
    drain_lines(env, H_OM, want, 100, check_json_cb, &observed_a);
    run_import(env, H_POLITIE, c, &res, args);
    h_expect_exit(&res, 0, "import c");
    expect_summary(&res, 100, 0, 0);
    h_cli_result_free(&res);
    drain_lines(env, H_OM, want, 100, check_json_cb, &observed_c);
    journal_drop_seqs(c_journal);
    uint8_t epoch_before[16], epoch_after[16];
    broker_epoch(env, epoch_before);
    take_backup(env, backup);
    run_import(env, H_POLITIE, b, &res, args);
    h_expect_exit(&res, 0, "import b");
    expect_summary(&res, 100, 0, 0);
    h_cli_result_free(&res);

    assert_int_equal(h_broker_stop(env), 0);
    if (restore_backup(env, backup, problem, sizeof problem) != 0)
        fail_msg("%s", problem);
    h_broker_start(env);
    broker_epoch(env, epoch_after);
    assert_memory_not_equal(epoch_before, epoch_after, 16);
    /* the restore's audit entry names both */
    char hex_after[33], hex_before[33], detail[96];
    sodium_bin2hex(hex_after, sizeof hex_after, epoch_after, 16);
    sodium_bin2hex(hex_before, sizeof hex_before, epoch_before, 16);
    snprintf(detail, sizeof detail, "store_epoch=%s store_epoch_was=%s", hex_after, hex_before);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'store.restored'"
                                 " AND instr(detail, ?1) > 0",
                                 detail),
                     1);

    run_import(env, H_POLITIE, b, &res, args);
    h_expect_exit(&res, 0, "rerun of b after the restore");
    expect_summary(&res, 100, 0, 0);
    expect_said(&res, SAID_RESTORED_SINCE, 1, "rerun of b after the restore");
    expect_said(&res, "publishing again from line 1", 1, "rerun of b after the restore");
    expect_said(&res, "warning", 0, "rerun of b after the restore");
    h_cli_result_free(&res);
    drain_lines(env, H_OM, want, 100, check_json_cb, &observed_b);
    assert_int_equal(journal_epochs(b_journal), 2);

    /* a's batches have seqs at most the floor: kept, nothing sent */
    long offset = h_log_offset(env);
    run_import(env, H_POLITIE, a, &res, args);
    h_expect_exit(&res, 0, "rerun of a after the restore");
    expect_summary(&res, 0, 0, 100);
    expect_said(&res, SAID_RESTORED_SINCE, 1, "rerun of a after the restore");
    expect_said(&res, "the 4 batches done before it are kept", 1, "rerun of a after the restore");
    h_cli_result_free(&res);
    assert_int_equal(h_log_count(env, offset, "event=publish."), 0);
    assert_int_equal(h_backlog_of(env, H_OM), 0);

    /* c's batches have no seqs: all published again, answered as repeats */
    run_import(env, H_POLITIE, c, &res, args);
    h_expect_exit(&res, 0, "rerun of c after the restore");
    expect_summary(&res, 0, 0, 100);
    expect_said(&res, "publishing again from line 1", 1, "rerun of c after the restore");
    expect_said(&res, "batches done before it", 0, "rerun of c after the restore");
    expect_said(&res,
                "warning: 4 batches of the journal were recorded by a schakel from before item "
                "seqs",
                1, "rerun of c after the restore");
    expect_said(&res, "are accepted and delivered anew", 1, "rerun of c after the restore");
    h_cli_result_free(&res);
    assert_int_equal(h_backlog_of(env, H_OM), 0);

    offset = h_log_offset(env);
    run_import(env, H_POLITIE, b, &res, args);
    h_expect_exit(&res, 0, "second rerun of b");
    expect_summary(&res, 0, 0, 100);
    expect_said(&res, SAID_RESTORED_SINCE, 0, "second rerun of b");
    h_cli_result_free(&res);
    assert_int_equal(h_log_count(env, offset, "event=publish."), 0);
    free(want);
    h_done(env);
}

/* The broker's store epoch and its floor seq, as libschakel gives them
 * to politie: the floor, or -1 when it is unknown. */
static int64_t broker_floor(h_env_t *env, uint8_t epoch[16])
{
    schakel_client_t *client = h_connect(env, H_POLITIE);
    int known = 0, floor_known = -1;
    uint64_t floor = 77;
    assert_int_equal(
        schakel_store_epoch_floor(client, epoch, &known, &floor, &floor_known, H_TIMEOUT_MS),
        SCHAKEL_OK);
    assert_int_equal(known, 1);
    schakel_close(&client);
    if (!floor_known) {
        assert_int_equal(floor, 0);
        return -1;
    }
    assert_true(floor <= (uint64_t)INT64_MAX);
    return (int64_t)floor;
}

/* om's deliveries under the short rule end within 2 s, politie's records
 * of them with the 1 s idempotency window. */
#define SHORT_RULES                                                                                \
    "rules:\n"                                                                                     \
    "  - id: politie-kort-om\n"                                                                    \
    "    from: [politie]\n"                                                                        \
    "    to: [om]\n"                                                                               \
    "    kinds: [kortstondig]\n"                                                                   \
    "    themes: [ondermijning]\n"                                                                 \
    "    areas: [\"*\"]\n"                                                                         \
    "    purpose: \"Kortstondige afstemming met het parket\"\n"                                    \
    "    legal_basis: \"Wpg art. 16 lid 1 sub a\"\n"                                               \
    "    fields: [area, severity, summary, source_ref]\n"                                          \
    "    retention: 2s\n"                                                                          \
    "  - id: politie-ondermijning-om\n"                                                            \
    "    from: [politie]\n"                                                                        \
    "    to: [om]\n"                                                                               \
    "    kinds: [witwassen]\n"                                                                     \
    "    themes: [ondermijning]\n"                                                                 \
    "    areas: [\"*\"]\n"                                                                         \
    "    purpose: \"Strafrechtelijke beoordeling\"\n"                                              \
    "    legal_basis: \"Wpg art. 16 lid 1 sub a\"\n"                                               \
    "    fields: [area, address, severity, observed_at, summary, source_ref]\n"                    \
    "    retention: 1825d\n"

static int setup_short_rules(void **state)
{
    *state = h_env_new_with_rules(SHORT_RULES);
    return 0;
}

static const char *const short_window[] = {"--set", "idempotency_window=1s", NULL};

/* Wait (bounded) until the store holds no item and no publish record:
 * retention and idempotency window are over for everything published. */
static void await_forgotten(h_env_t *env)
{
    int64_t left = 1;
    for (int tries = 0; tries < H_TIMEOUT_MS / 100 && left != 0; tries++) {
        left = h_store_int(env,
                           "SELECT (SELECT count(*) FROM items) + "
                           "(SELECT count(*) FROM publishes)",
                           NULL);
        if (left != 0) {
            struct timespec pause = {0, 100 * 1000 * 1000};
            nanosleep(&pause, NULL);
        }
    }
    if (left != 0)
        fail_msg("%lld items and publishes are still in the store after %d ms", (long long)left,
                 H_TIMEOUT_MS);
}

static void restore_and_start(h_env_t *env, const char *backup)
{
    char problem[2048];
    assert_int_equal(h_broker_stop(env), 0);
    if (restore_backup(env, backup, problem, sizeof problem) != 0)
        fail_msg("%s", problem);
    h_broker_start_with(env, short_window);
}

/* The defect's case. Lines 1..40 (two batches) go to om under a 2 s
 * retention, and the broker forgets them (retention and idempotency window
 * over); a backup is taken; lines 41..100 are imported after it. The
 * store is restored from the backup: a rerun skips lines 1..40 (their
 * seqs are at most the epoch's floor seq) and publishes 41..100 again,
 * which the restore lost; om receives those once each and none of 1..40.
 * Restored once more from the same backup (of the first epoch, after the
 * second): the journal's 41..100 are of the second epoch, above the
 * floor, and are published again; 1..40 still are not. */
static void test_import_rerun_after_restore_skips_what_was_forgotten(void **state)
{
    h_env_t *env = *state;
    h_broker_start_with(env, short_window);
    char file[T_PATH], journal[T_PATH], backup[T_PATH];
    path_in(env, "forgotten.jsonl", file);
    path_in(env, "forgotten.jsonl.import-state", journal);
    int64_t observed = (int64_t)time(NULL) - 2400;
    text_t t = {0};
    for (long n = 1; n <= 100; n++)
        json_line_of(&t, n, observed, n <= 40 ? "kortstondig" : "witwassen");
    write_file(file, t.s, t.len);
    free(t.s);
    const char *const first_two[] = {"--batch", "20", "--quiet", "--test-interrupt-after-batches",
                                     "2",       NULL};
    const char *const args[] = {"--batch", "20", "--quiet", NULL};
    h_cli_result_t res;
    run_import(env, H_POLITIE, file, &res, first_two);
    h_expect_exit(&res, T_EXIT_INTERRUPTED, "import of lines 1..40");
    expect_summary(&res, 40, 0, 0);
    h_cli_result_free(&res);
    await_forgotten(env);
    uint8_t epoch_first[16], epoch_now[16];
    assert_int_equal(broker_floor(env, epoch_first), 0); /* a store never restored */
    take_backup(env, backup);
    run_import(env, H_POLITIE, file, &res, args);
    h_expect_exit(&res, 0, "import of lines 41..100");
    expect_summary(&res, 60, 0, 40);
    h_cli_result_free(&res);
    unsigned char *want = all_lines(100);
    memset(want + 1, 0, 40);
    drain_lines(env, H_OM, want, 100, check_json_cb, &observed);

    for (int restore = 1; restore <= 2; restore++) {
        restore_and_start(env, backup);
        int64_t floor = broker_floor(env, epoch_now);
        assert_memory_not_equal(epoch_now, epoch_first, 16);
        /* the backup's highest seq: the 40 lines before it, none after */
        if (floor < 40 || floor >= (int64_t)SCHAKEL_RESTORE_SEQ_MARGIN)
            fail_msg("restore %d: floor seq %lld", restore, (long long)floor);
        char detail[64];
        snprintf(detail, sizeof detail, "store_epoch_floor=%lld", (long long)floor);
        assert_int_equal(h_store_int(env,
                                     "SELECT count(*) FROM audit WHERE event = 'store.restored'"
                                     " AND instr(detail, ?1) > 0",
                                     detail),
                         1); /* the backup's trail has not the first restore's entry */
        long offset = h_log_offset(env);
        run_import(env, H_POLITIE, file, &res, args);
        h_expect_exit(&res, 0, "rerun after the restore");
        expect_summary(&res, 60, 0, 40);
        expect_said(&res, SAID_RESTORED_SINCE, 1, "rerun after the restore");
        expect_said(&res, "the 2 batches done before it are kept", 1, "rerun after the restore");
        expect_said(&res, "warning", 0, "rerun after the restore");
        h_cli_result_free(&res);
        assert_int_equal(h_log_count(env, offset, "event=publish.accepted"), 3);
        assert_int_equal(h_log_count(env, offset, "event=publish.duplicate"), 0);
        drain_lines(env, H_OM, want, 100, check_json_cb, &observed);
    }
    assert_int_equal(journal_epochs(journal), 3);
    free(want);
    h_done(env);
}

/* A restore that went on without the replaced store's counters
 * (--without-floor, the store gone): the floor seq is unknown, and a
 * rerun publishes the whole file again as before, saying that lines the
 * broker had forgotten are shared again. */
static void test_import_rerun_with_floor_unknown_warns(void **state)
{
    h_env_t *env = *state;
    char file[T_PATH], journal[T_PATH], backup[T_PATH];
    path_in(env, "nofloor.jsonl", file);
    path_in(env, "nofloor.jsonl.import-state", journal);
    int64_t observed = (int64_t)time(NULL) - 2000;
    write_json_file(file, 100, observed);
    const char *const args[] = {"--batch", "30", "--quiet", NULL};
    h_cli_result_t res;
    run_import(env, H_POLITIE, file, &res, args);
    h_expect_exit(&res, 0, "import");
    expect_summary(&res, 100, 0, 0);
    h_cli_result_free(&res);
    take_backup(env, backup);
    assert_int_equal(h_broker_stop(env), 0);
    static const char *const sides[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char path[T_PATH + 8];
        snprintf(path, sizeof path, "%s%s", env->store_path, sides[i]);
        assert_true(unlink(path) == 0 || errno == ENOENT);
    }
    int status = h_run_schakeld(&res, "--restored", backup, "--without-floor", "--config",
                                env->config_path, NULL);
    if (status != 0 || strstr(res.out, "floor seq unknown") == NULL)
        fail_msg("--restored --without-floor: exit %d: %s%s", status, res.out, res.err);
    h_cli_result_free(&res);
    h_broker_start(env);
    uint8_t epoch[16];
    assert_int_equal(broker_floor(env, epoch), -1);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'store.restored'"
                                 " AND instr(detail, ?1) > 0",
                                 "store_epoch_floor=unknown"),
                     1);

    long offset = h_log_offset(env);
    run_import(env, H_POLITIE, file, &res, args);
    h_expect_exit(&res, 0, "rerun with the floor unknown");
    expect_summary(&res, 0, 0, 100);
    expect_said(&res, SAID_RESTORED_SINCE, 1, "rerun with the floor unknown");
    expect_said(&res, "publishing again from line 1", 1, "rerun with the floor unknown");
    expect_said(&res,
                "warning: the broker does not say which seqs its backup held (a restore without "
                "the counters of the store it replaced",
                1, "rerun with the floor unknown");
    expect_said(&res, "are accepted and delivered anew", 1, "rerun with the floor unknown");
    h_cli_result_free(&res);
    /* every batch sent again, each a repeat */
    assert_int_equal(h_log_count(env, offset, "event=publish.duplicate"), 4);
    /* the E line names no floor: it kept nothing */
    char *text = read_file(journal);
    assert_non_null(text);
    char hex[33], line[40];
    sodium_bin2hex(hex, sizeof hex, epoch, 16);
    snprintf(line, sizeof line, "\nE %s\n", hex);
    assert_non_null(strstr(text, line));
    free(text);
    unsigned char *want = all_lines(100);
    drain_lines(env, H_OM, want, 100, check_json_cb, &observed);
    free(want);
    h_done(env);
}

/* A broker restart is no restore: the store epoch stays, and a rerun
 * skips the lines its journal has done as before, sending nothing and
 * writing nothing to the journal. */
static void test_import_restart_keeps_epoch_rerun_skips(void **state)
{
    h_env_t *env = *state;
    char file[T_PATH], journal[T_PATH];
    path_in(env, "kept.jsonl", file);
    path_in(env, "kept.jsonl.import-state", journal);
    int64_t observed = (int64_t)time(NULL) - 1200;
    write_json_file(file, 100, observed);
    const char *const args[] = {"--batch", "30", "--quiet", NULL};
    h_cli_result_t res;
    run_import(env, H_POLITIE, file, &res, args);
    h_expect_exit(&res, 0, "import");
    expect_summary(&res, 100, 0, 0);
    h_cli_result_free(&res);
    assert_int_equal(journal_epochs(journal), 1);
    char *written = read_file(journal);
    assert_non_null(written);
    uint8_t epoch_before[16], epoch_after[16];
    broker_epoch(env, epoch_before);

    assert_int_equal(h_broker_stop(env), 0);
    h_broker_start(env);
    broker_epoch(env, epoch_after);
    assert_memory_equal(epoch_before, epoch_after, 16);

    long offset = h_log_offset(env);
    run_import(env, H_POLITIE, file, &res, args);
    h_expect_exit(&res, 0, "rerun after a restart");
    expect_summary(&res, 0, 0, 100);
    expect_said(&res, "restored", 0, "rerun after a restart");
    h_cli_result_free(&res);
    assert_int_equal(h_log_count(env, offset, "event=publish."), 0);
    char *after = read_file(journal);
    assert_non_null(after);
    assert_string_equal(after, written);
    free(after);
    free(written);
    unsigned char *want = all_lines(100);
    drain_lines(env, H_OM, want, 100, check_json_cb, &observed);
    free(want);
    h_done(env);
}

/* An import run in a thread of its own (h_run_cli_argv never fails the
 * test for a program that ran before). */
typedef struct import_job {
    h_env_t *env;
    const char *file;
    const char *const *args;
    h_cli_result_t res;
} import_job_t;

static void *import_job_run(void *arg)
{
    import_job_t *job = arg;
    run_import(job->env, H_POLITIE, job->file, &job->res, job->args);
    return NULL;
}

/* The broker's store is restored while an import runs: the broker is
 * stopped after its first batch, the backup taken before the import put
 * in place, and the broker started on the same endpoint; libschakel makes
 * its connection again and the import goes on into the restored store.
 * Before it journals a batch answered since, it asks the store epoch
 * again, finds another, journals it (an E line: what the backup does not
 * cover is forgotten) and stops, saying to run it again. Then a backup of
 * the restored store is taken and restored in turn (its floor above every
 * seq the first restore's store handed out), and the import run again: it
 * publishes what no store has (the lines the first store accepted after
 * its backup, lost with it) and what the second one has is answered as
 * already accepted; om receives every line once. Journalled under the old
 * epoch, those first lines would have seqs below the second floor and be
 * skipped, never to arrive. */
#define DURING_LINES 600

static void test_import_restored_during_import_run_again(void **state)
{
    h_env_t *env = *state;
    char file[T_PATH], journal[T_PATH], backup[T_PATH], endpoint[sizeof env->endpoint];
    char problem[2048] = "";
    path_in(env, "during.jsonl", file);
    path_in(env, "during.jsonl.import-state", journal);
    int64_t observed = (int64_t)time(NULL) - 1800;
    write_json_file(file, DURING_LINES, observed);
    take_backup(env, backup);
    /* one line a publish, one publish at a time: the import is still
     * sending when the broker stops; a wait for an answer outlasts the
     * restore */
    const char *const args[] = {"--batch",   "1",  "--in-flight", "1",
                                "--timeout", "10", "--quiet",     NULL};
    import_job_t job = {.env = env, .file = file, .args = args};
    long offset = h_log_offset(env);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, import_job_run, &job), 0);
    int stopped = -1;
    if (h_await_log(env, offset, "event=publish.accepted", H_TIMEOUT_MS) != 0) {
        snprintf(problem, sizeof problem, "the import published nothing within %d ms",
                 H_TIMEOUT_MS);
    } else {
        snprintf(endpoint, sizeof endpoint, "%s", env->endpoint);
        stopped = h_broker_stop(env);
        if (stopped != 0)
            snprintf(problem, sizeof problem, "the broker stopped with %d", stopped);
        else if (restore_backup(env, backup, problem, sizeof problem) == 0)
            for (int attempt = 1; attempt <= H_RESTART_ATTEMPTS; attempt++)
                if (h_broker_try_start_at(env, endpoint, problem, sizeof problem) == 0) {
                    problem[0] = '\0';
                    break;
                }
    }
    assert_int_equal(pthread_join(thread, NULL), 0);
    if (problem[0] != '\0') {
        h_cli_result_free(&job.res);
        fail_msg("%s", problem);
    }
    h_expect_exit(&job.res, 1, "import during a restore");
    expect_said(&job.res, SAID_RESTORED_DURING, 1, "import during a restore");
    expect_said(&job.res, "what the restored store answered is not journalled", 1,
                "import during a restore");
    h_cli_result_free(&job.res);
    /* the restored store's epoch is journalled by the run that met it */
    assert_int_equal(journal_epochs(journal), 2);

    /* a backup of the restored store, restored */
    char backup2[T_PATH];
    uint8_t epoch2[16];
    take_backup_into(env, "backup2", backup2);
    assert_int_equal(h_broker_stop(env), 0);
    if (restore_backup(env, backup2, problem, sizeof problem) != 0)
        fail_msg("%s", problem);
    h_broker_start(env);
    if (broker_floor(env, epoch2) < (int64_t)SCHAKEL_RESTORE_SEQ_MARGIN)
        fail_msg("the second restore's floor is below the first restore's seqs");

    h_cli_result_t res;
    run_import(env, H_POLITIE, file, &res, args);
    h_expect_exit(&res, 0, "rerun");
    expect_said(&res, "warning", 0, "rerun");
    unsigned long accepted = 0, refused = 0, already = 0;
    const char *summary = strstr(res.out, "accepted ");
    if (summary == NULL ||
        sscanf(summary, "accepted %lu, refused %lu, already accepted %lu", &accepted, &refused,
               &already) != 3 ||
        refused != 0 || accepted + already != DURING_LINES || accepted == 0)
        fail_msg("rerun: want every line accepted now or before, some now: %s", res.out);
    h_cli_result_free(&res);
    unsigned char *want = all_lines(DURING_LINES);
    drain_lines(env, H_OM, want, DURING_LINES, check_json_cb, &observed);
    free(want);
    h_done(env);
}

/* The broker restarts (no restore) while an import runs: libschakel
 * makes its connection again, the import asks the epoch before it
 * journals the next batch, finds it unchanged and goes on to the end:
 * exit 0, every line accepted once, no word of a restore, one epoch in the
 * journal. */
static void test_import_broker_restart_during_import_goes_on(void **state)
{
    h_env_t *env = *state;
    char file[T_PATH], journal[T_PATH], endpoint[sizeof env->endpoint], problem[2048] = "";
    path_in(env, "restart.jsonl", file);
    path_in(env, "restart.jsonl.import-state", journal);
    int64_t observed = (int64_t)time(NULL) - 1800;
    write_json_file(file, DURING_LINES, observed);
    const char *const args[] = {"--batch",   "1",  "--in-flight", "1",
                                "--timeout", "10", "--quiet",     NULL};
    import_job_t job = {.env = env, .file = file, .args = args};
    long offset = h_log_offset(env);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, import_job_run, &job), 0);
    if (h_await_log(env, offset, "event=publish.accepted", H_TIMEOUT_MS) != 0) {
        snprintf(problem, sizeof problem, "the import published nothing within %d ms",
                 H_TIMEOUT_MS);
    } else {
        snprintf(endpoint, sizeof endpoint, "%s", env->endpoint);
        int stopped = h_broker_stop(env);
        if (stopped != 0)
            snprintf(problem, sizeof problem, "the broker stopped with %d", stopped);
        else
            for (int attempt = 1; attempt <= H_RESTART_ATTEMPTS; attempt++)
                if (h_broker_try_start_at(env, endpoint, problem, sizeof problem) == 0) {
                    problem[0] = '\0';
                    break;
                }
    }
    assert_int_equal(pthread_join(thread, NULL), 0);
    if (problem[0] != '\0') {
        h_cli_result_free(&job.res);
        fail_msg("%s", problem);
    }
    h_expect_exit(&job.res, 0, "import during a restart");
    expect_said(&job.res, "restored", 0, "import during a restart");
    expect_said(&job.res, "made again", 0, "import during a restart");
    unsigned long accepted = 0, refused = 0, already = 0;
    const char *summary = strstr(job.res.out, "accepted ");
    if (summary == NULL ||
        sscanf(summary, "accepted %lu, refused %lu, already accepted %lu", &accepted, &refused,
               &already) != 3 ||
        refused != 0 || accepted + already != DURING_LINES)
        fail_msg("import during a restart: want every line accepted: %s", job.res.out);
    h_cli_result_free(&job.res);
    assert_int_equal(journal_epochs(journal), 1);
    unsigned char *want = all_lines(DURING_LINES);
    drain_lines(env, H_OM, want, DURING_LINES, check_json_cb, &observed);
    free(want);
    h_done(env);
}

/* ------------------------------------------------------------------ the end of a run */

/* The import's journal syncs, stepped one by one through syncgate's gate
 * file (holding a number of syncs that may pass), its stderr read as it
 * runs. */
typedef struct stepped_import {
    h_env_t *env;
    const char *const *args;
    int err_fd, pid_fd;
    char gate_env[T_PATH + 32];
    char preload[2 * PATH_MAX + 96];
    h_cli_result_t res;
} stepped_import_t;

static void *stepped_import_run(void *arg)
{
    stepped_import_t *job = arg;
    const h_cli_target_t target = {.stderr_fd = &job->err_fd,
                                   .pid_fd = &job->pid_fd,
                                   .extra_env = job->gate_env,
                                   .extra_env2 = job->preload};
    (void)h_run_cli_argv(job->env, H_POLITIE, &target, job->args, &job->res);
    return NULL;
}

/* Let `passed` syncs of the held program through the gate (written whole,
 * then renamed in: the shim never reads half a number). */
static void gate_let_pass(const char *gate, unsigned long passed)
{
    char tmp[T_PATH + 8], number[32];
    snprintf(tmp, sizeof tmp, "%s.new", gate);
    int len = snprintf(number, sizeof number, "%lu", passed);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, number, (size_t)len) != len || close(fd) != 0 || rename(tmp, gate) != 0)
        fprintf(stderr, "test_import: gate %s: %s\n", gate, strerror(errno));
}

/* The broker is stopped after the last Accepted of a run and before its
 * end, where import asks whether the store was restored during the run: at
 * the sync of the journal entry of the batch the Accepted answered (the
 * only sync after a publish), where the import is held. It cannot ask:
 * it warns and says to run it again if there was a restore, and exits 0
 * (every line accepted), as schakel(1) says. A rerun against the broker
 * started again finds the epoch unchanged and publishes nothing. */
#define END_LINES 3

static void test_import_end_check_unanswered_warns(void **state)
{
    h_env_t *env = *state;
    char file[T_PATH], gate[T_PATH], problem[512] = "";
    path_in(env, "end.jsonl", file);
    path_in(env, "sync-gate", gate);
    int64_t observed = (int64_t)time(NULL) - 1800;
    write_json_file(file, END_LINES, observed);
    gate_let_pass(gate, 0); /* every sync waits until let through */
    int err_pipe[2], pid_pipe[2];
    assert_int_equal(pipe2(err_pipe, O_CLOEXEC), 0);
    assert_int_equal(pipe2(pid_pipe, O_CLOEXEC), 0);
    const char *const args[] = {"import", "--quiet", "--connect-timeout", "1", file, NULL};
    stepped_import_t job = {.env = env, .args = args, .err_fd = err_pipe[1], .pid_fd = pid_pipe[1]};
    snprintf(job.gate_env, sizeof job.gate_env, "SCHAKEL_TEST_SYNC_GATE=%s", gate);
    if (h_shim_preload("syncgate.so", job.preload, sizeof job.preload, problem, sizeof problem) !=
        0)
        fail_msg("%s", problem);
    long offset = h_log_offset(env);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, stepped_import_run, &job), 0);
    /* once it runs, its stderr is its own: the pipe ends when it ends */
    pid_t pid = 0;
    struct pollfd started = {.fd = pid_pipe[0], .events = POLLIN};
    if (poll(&started, 1, H_TIMEOUT_MS) != 1 || read(pid_pipe[0], &pid, sizeof pid) != sizeof pid)
        snprintf(problem, sizeof problem, "the import was not started within %d ms", H_TIMEOUT_MS);
    close(pid_pipe[0]);
    close(pid_pipe[1]);
    close(err_pipe[1]);

    /* each held sync: before the publish, let it through; after it (the
     * broker logged the Accepted before it answered), stop the broker */
    char err[16384] = "";
    size_t len = 0;
    unsigned long held = 0;
    int stopped = -1;
    while (problem[0] == '\0') {
        struct pollfd p = {.fd = err_pipe[0], .events = POLLIN};
        if (poll(&p, 1, h_cli_timeout_ms()) != 1) {
            snprintf(problem, sizeof problem, "the import said nothing for %d ms after: %.300s",
                     h_cli_timeout_ms(), err);
            break;
        }
        ssize_t n = read(err_pipe[0], err + len, sizeof err - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* the import has ended */
        len += (size_t)n;
        err[len] = '\0';
        unsigned long notes = 0;
        for (const char *q = err; (q = strstr(q, "event=syncgate.held")) != NULL; q++)
            notes++;
        for (; held < notes; held++) {
            if (stopped < 0 && h_log_count(env, offset, "event=publish.accepted") > 0) {
                stopped = h_broker_stop(env);
                gate_let_pass(gate, ULONG_MAX);
            } else {
                gate_let_pass(gate, held + 1);
            }
        }
        if (len == sizeof err - 1) {
            snprintf(problem, sizeof problem, "the import said too much: %.400s", err);
            gate_let_pass(gate, ULONG_MAX);
        }
    }
    if (problem[0] != '\0')
        gate_let_pass(gate, ULONG_MAX);
    assert_int_equal(pthread_join(thread, NULL), 0);
    close(err_pipe[0]);
    if (problem[0] != '\0')
        fail_msg("%s", problem);
    if (stopped != 0)
        fail_msg("the broker was %s (status %d); the import said: %s",
                 stopped < 0 ? "never stopped: no sync of the import came after the Accepted"
                             : "not stopped cleanly",
                 stopped, err);
    if (job.res.status != 0 ||
        strstr(job.res.out, "accepted 3, refused 0, already accepted 0") == NULL ||
        strstr(err, "import: warning: could not ask the broker at the end whether its store was "
                    "restored from a backup during this import") == NULL ||
        strstr(err, "if it was, run the same command again") == NULL)
        fail_msg("an import whose broker stopped before its end: exit %d, want 0 and the "
                 "warning\nstdout: %s\nstderr: %s",
                 job.res.status, job.res.out, err);
    h_cli_result_free(&job.res);

    h_broker_start(env);
    h_cli_result_t res;
    const char *const quiet[] = {"--quiet", NULL};
    run_import(env, H_POLITIE, file, &res, quiet);
    h_expect_exit(&res, 0, "rerun");
    expect_said(&res, SAID_RESTORED_SINCE, 0, "rerun");
    if (strstr(res.out, "accepted 0, refused 0, already accepted 3") == NULL)
        fail_msg("rerun: want every line accepted before: %s", res.out);
    h_cli_result_free(&res);
    unsigned char *want = all_lines(END_LINES);
    drain_lines(env, H_OM, want, END_LINES, check_json_cb, &observed);
    free(want);
    h_done(env);
}

/* Options of import that are refused before anything is read or sent. */
static void test_import_bad_options_refused(void **state)
{
    h_env_t *env = *state;
    static const struct {
        const char *option, *value;
    } rows[] = {
        {"--in-flight", "0"}, {"--in-flight", "17"}, {"--in-flight", "4x"},
        {"--batch", "0"},     {"--batch", "257"},    {"--timeout", "0"},
    };
    char file[T_PATH];
    path_in(env, "options.jsonl", file);
    write_json_file(file, 3, (int64_t)time(NULL));
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        h_cli_result_t res;
        run_import(env, H_POLITIE, file, &res,
                   (const char *const[]){rows[i].option, rows[i].value, NULL});
        h_expect_exit(&res, T_EXIT_USAGE, rows[i].option);
        if (strstr(res.err, rows[i].option) == NULL || strstr(res.err, rows[i].value) == NULL)
            fail_msg("row %zu: stderr does not name %s %s: %s", i, rows[i].option, rows[i].value,
                     res.err);
        h_cli_result_free(&res);
    }
    assert_int_equal(h_backlog_of(env, H_OM), 0);
    h_done(env);
}

/* The journal's folder entry is synced at every open, before anything is
 * published: when that sync fails the import says so and exits 1 having
 * published nothing, a new journal and a resumed one alike. */
static void test_import_journal_folder_sync_failure_publishes_nothing(void **state)
{
    h_env_t *env = *state;
    char file[T_PATH], fail[T_PATH], fail_env[T_PATH + 40], preload[2 * PATH_MAX + 96];
    char problem[512] = "";
    path_in(env, "folder.jsonl", file);
    path_in(env, "sync-fail-folder", fail);
    write_json_file(file, 10, (int64_t)time(NULL) - 1800);
    snprintf(fail_env, sizeof fail_env, "SCHAKEL_TEST_SYNC_FAIL_FOLDER=%s", fail);
    if (h_shim_preload("syncgate.so", preload, sizeof preload, problem, sizeof problem) != 0)
        fail_msg("%s", problem);
    const h_cli_target_t target = {.extra_env = fail_env, .extra_env2 = preload};
    const char *const args[] = {"import", "--quiet", file, NULL};
    long offset = h_log_offset(env);
    for (int run = 0; run < 3; run++) {
        /* runs 0 and 2 fail (a new journal, the finished one); 1 succeeds */
        if (run != 1)
            write_file(fail, "", 0);
        else
            assert_int_equal(unlink(fail), 0);
        h_cli_result_t res;
        (void)h_run_cli_argv(env, H_POLITIE, &target, args, &res);
        if (run == 1) {
            h_expect_exit(&res, 0, "import with the folder synced");
            expect_summary(&res, 10, 0, 0);
        } else {
            h_expect_exit(&res, 1, "import whose journal folder cannot be synced");
            expect_said(&res, "cannot sync the folder", 1, "the failed folder sync");
            expect_said(&res, "event=syncgate.failed call=fsync", 1, "the shim's note");
        }
        h_cli_result_free(&res);
        assert_int_equal(h_log_count(env, offset, "event=publish.accepted"), run == 0 ? 0 : 1);
    }
    h_done(env);
}

/* ------------------------------------------------------------------ message ids and keys */

/* politie's inbraakreeks at 6211AB house as a CSV record or a JSON line
 * (without its line end): gemeente's rule passes area, severity,
 * observed_at and summary, not the address. */
static void burglary_line(int csv, long house, int64_t observed, char *out, size_t len)
{
    if (csv)
        snprintf(out, len,
                 "inbraakreeks,woninginbraak,GM0935,6211AB,%ld,high,%lld,Inbraak in de wijk", house,
                 (long long)observed);
    else
        snprintf(out, len,
                 "{\"kind\":\"inbraakreeks\",\"theme\":\"woninginbraak\",\"area\":\"GM0935\","
                 "\"address\":{\"postcode\":\"6211AB\",\"house_number\":%ld},"
                 "\"severity\":\"high\",\"observed_at\":%lld,\"summary\":\"Inbraak in de wijk\"}",
                 house, (long long)observed);
}

/* A message id reaches every recipient, whatever fields its rule passes.
 * gemeente gets politie's inbraakreeks under a rule without the address;
 * knowing the sender, the fields it was given, the line's number and the
 * file's layout, it tries house numbers 1..2000 (the true one, 137, among
 * them), hashes each candidate line as the unkeyed derivation does, and
 * with its own id key: nothing matches. The id is the one keyed with
 * politie's id key. A one-row CSV with --batch 1 and a one-line JSON feed
 * at the default batch alike. */
static void test_import_ids_let_no_recipient_test_guesses(void **state)
{
    h_env_t *env = *state;
    int64_t observed = (int64_t)time(NULL) - 300;
    uint8_t politie_key[32], gemeente_key[32], id[16];
    import_id_key(h_key_file(env, H_POLITIE), politie_key);
    import_id_key(h_key_file(env, H_GEMEENTE), gemeente_key);
    for (int csv = 1; csv >= 0; csv--) {
        char file[T_PATH], line[512], guess[512];
        path_in(env, csv ? "one.csv" : "one.jsonl", file);
        burglary_line(csv, 137, observed, line, sizeof line);
        text_t t = {0};
        if (csv)
            text_add(&t, "kind,theme,area,postcode,house_number,severity,observed_at,summary\n");
        text_add(&t, "%s\n", line);
        write_file(file, t.s, t.len);
        free(t.s);
        h_cli_result_t res;
        run_import(env, H_POLITIE, file, &res,
                   csv ? (const char *const[]){"--batch", "1", NULL} : NULL);
        h_expect_exit(&res, 0, csv ? "import of one CSV row" : "import of one JSON line");
        expect_summary(&res, 1, 0, 0);
        h_cli_result_free(&res);

        schakel_client_t *gemeente = h_connect(env, H_GEMEENTE);
        schakel_delivery_t *d = h_receive(gemeente);
        assert_string_equal(d->rule_id, "politie-woninginbraak-gemeente");
        assert_null(d->postcode); /* withheld */
        assert_int_equal(d->house_number, 0);
        long number = csv ? 2 : 1; /* the CSV header is line 1 */
        for (long house = 1; house <= 2000; house++) {
            burglary_line(csv, house, observed, guess, sizeof guess);
            const char *const guessed[] = {guess};
            expected_id_bytes(NULL, guessed, NULL, 1, number, id);
            if (memcmp(id, d->message_id, sizeof id) == 0)
                fail_msg("the unkeyed hash of the line confirms house number %ld", house);
            expected_id_bytes(gemeente_key, guessed, NULL, 1, number, id);
            if (memcmp(id, d->message_id, sizeof id) == 0)
                fail_msg("gemeente's own key confirms house number %ld", house);
        }
        const char *const sent[] = {line};
        expected_id_bytes(politie_key, sent, NULL, 1, number, id);
        assert_memory_equal(id, d->message_id, sizeof id);
        assert_int_equal(schakel_ack(gemeente, d->seq), SCHAKEL_OK);
        schakel_delivery_free(&d);
        assert_int_equal(h_backlog(gemeente), 0);
        schakel_close(&gemeente);
    }
    h_done(env);
}

/* Receive n deliveries of one publish as principal (ack them, then none
 * is left): its message id. */
static void receive_publish(h_env_t *env, const char *principal, size_t n, uint8_t id[16])
{
    schakel_client_t *client = h_connect(env, principal);
    for (size_t i = 0; i < n; i++) {
        schakel_delivery_t *d = h_receive(client);
        if (i == 0)
            memcpy(id, d->message_id, 16);
        else
            assert_memory_equal(id, d->message_id, 16);
        assert_int_equal(schakel_ack(client, d->seq), SCHAKEL_OK);
        schakel_delivery_free(&d);
    }
    assert_int_equal(h_backlog(client), 0);
    schakel_close(&client);
}

/* Lines 1..n of json_line, each without its line end (free each). */
static void json_lines_of(long n, int64_t observed, char **lines)
{
    for (long i = 0; i < n; i++) {
        text_t t = {0};
        json_line(&t, i + 1, observed);
        t.s[t.len - 1] = '\0';
        lines[i] = t.s;
    }
}

/* The ids are the same in every run with the same key (a rerun without
 * the journal is answered as a repeat), and other with another key: after
 * politie's key is replaced (a policy reload), a rerun of a batch that was
 * accepted but not journalled (a crash) is refused (exit 2, nothing
 * published, the journal as it was), and so is --restart with the new
 * key; with --new-key it warns that the journal was written with another
 * key and publishes the batch again under the new key's id, so om gets it
 * twice, as schakel(1) says; the journal takes the new key (K), and the
 * next such rerun, without --new-key, is answered as a repeat, without the
 * warning. */
static void test_import_ids_stay_with_the_key(void **state)
{
    h_env_t *env = *state;
    char file[T_PATH], journal[T_PATH], base[T_PATH], new_key[T_PATH + 8], err[256];
    char *lines[3];
    uint8_t old_key[32], newer_key[32], id[16], want[16];
    path_in(env, "keyed.jsonl", file);
    path_in(env, "keyed.jsonl.import-state", journal);
    int64_t observed = (int64_t)time(NULL) - 400;
    write_json_file(file, 3, observed);
    json_lines_of(3, observed, lines);
    const char *const *sent = (const char *const *)lines;
    import_id_key(h_key_file(env, H_POLITIE), old_key);
    h_cli_result_t res;
    run_import(env, H_POLITIE, file, &res, (const char *const[]){"--batch", "3", NULL});
    h_expect_exit(&res, 0, "import");
    expect_summary(&res, 3, 0, 0);
    h_cli_result_free(&res);
    receive_publish(env, H_OM, 3, id);
    expected_id_bytes(old_key, sent, NULL, 3, 1, want);
    assert_memory_equal(id, want, sizeof id);

    assert_int_equal(unlink(journal), 0); /* the same key: the same id */
    run_import(env, H_POLITIE, file, &res, (const char *const[]){"--batch", "3", NULL});
    h_expect_exit(&res, 0, "rerun without the journal");
    expect_summary(&res, 0, 0, 3);
    h_cli_result_free(&res);
    assert_int_equal(h_backlog_of(env, H_OM), 0);

    /* politie's key is replaced; the last batch's D line was lost */
    snprintf(base, sizeof base, "%s/keys/politie-bvh-koppeling-new", env->dir);
    assert_int_equal(keys_generate(base, err, sizeof err), 0);
    snprintf(new_key, sizeof new_key, "%s.key", base);
    const char *old_pub = "keys/politie-bvh-koppeling.pub\n";
    const char *at = strstr(h_policy_header, old_pub);
    assert_non_null(at);
    h_env_write_policy(env, "%.*skeys/politie-bvh-koppeling-new.pub\n%s%s",
                       (int)(at - h_policy_header), h_policy_header, at + strlen(old_pub),
                       h_default_rules);
    assert_int_equal(h_broker_reload(env), 1);
    import_id_key(new_key, newer_key);
    drop_last_done_entry(journal);
    char *before = read_file(journal);
    assert_non_null(before);
    for (int restart = 0; restart < 2; restart++) {
        run_import(env, H_POLITIE, file, &res,
                   (const char *const[]){"--batch", "3", "--key", new_key,
                                         restart ? "--restart" : NULL, NULL});
        h_expect_exit(&res, T_EXIT_USAGE, restart ? "--restart with another key" : "another key");
        expect_said(&res, restart ? "names another key" : "written with another key", 1,
                    "the refusal");
        expect_said(&res, "--new-key", 1, "the way on");
        h_cli_result_free(&res);
        char *after = read_file(journal);
        assert_non_null(after);
        assert_string_equal(after, before);
        free(after);
        assert_int_equal(h_backlog_of(env, H_OM), 0);
    }
    free(before);
    for (int round = 0; round < 2; round++) {
        if (round == 1)
            drop_last_done_entry(journal);
        run_import(env, H_POLITIE, file, &res,
                   (const char *const[]){"--batch", "3", "--key", new_key,
                                         round == 0 ? "--new-key" : NULL, NULL});
        h_expect_exit(&res, 0, round == 0 ? "rerun with another key" : "rerun with it again");
        expect_said(&res, "was written with another key", round == 0, "the key warning");
        if (round == 0)
            expect_summary(&res, 3, 0, 0); /* published again: twice at om */
        else
            expect_summary(&res, 0, 0, 3);
        h_cli_result_free(&res);
        if (round == 0) {
            receive_publish(env, H_OM, 3, id);
            expected_id_bytes(newer_key, sent, NULL, 3, 1, want);
            assert_memory_equal(id, want, sizeof id);
            expected_id_bytes(old_key, sent, NULL, 3, 1, want);
            assert_memory_not_equal(id, want, sizeof id);
        }
        assert_int_equal(h_backlog_of(env, H_OM), 0);
    }
    char *text = read_file(journal);
    assert_non_null(text);
    if (strstr(text, "\nids keyed ") == NULL || strstr(text, "\nK ") == NULL ||
        strstr(strstr(text, "\nK ") + 1, "\nK ") != NULL)
        fail_msg("the journal does not name the keyed ids and the new key once: %s", text);
    free(text);
    for (int i = 0; i < 3; i++)
        free(lines[i]);
    h_done(env);
}

/* The header of a journal of politie's JSON import of file with --batch
 * 3, as a schakel from before keyed ids wrote it: no ids line. */
static void write_unkeyed_journal(const char *file, const char *journal)
{
    char hash_hex[65];
    uint8_t hash[32];
    char *bytes = read_file(file);
    assert_non_null(bytes);
    size_t size = strlen(bytes);
    crypto_generichash(hash, sizeof hash, (const unsigned char *)bytes, size, NULL, 0);
    free(bytes);
    for (size_t i = 0; i < sizeof hash; i++)
        snprintf(hash_hex + 2 * i, 3, "%02x", hash[i]);
    text_t t = {0};
    text_add(&t,
             "# journal of `schakel import`: the lines done and refused; see schakel(1)\n"
             "schakel-import-journal 1\nfile %zu %s\nsender %s\nformat json\nbatch 3\n",
             size, hash_hex, H_POLITIE);
    write_file(journal, t.s, t.len);
    free(t.s);
}

/* A journal begun by a schakel from before keyed ids (a header without an
 * ids line) goes on with the unkeyed ids it used, and says so: the batch a
 * run publishes has its unkeyed id, and after a crash that lost that
 * batch's journal entry the rerun sends it again under the same id,
 * answered as a repeat: every line reaches om once. The journal stays one
 * of unkeyed ids. */
static void test_import_unkeyed_journal_keeps_its_ids(void **state)
{
    h_env_t *env = *state;
    char file[T_PATH], journal[T_PATH];
    char *lines[6];
    uint8_t id[16], want[16];
    path_in(env, "older.jsonl", file);
    path_in(env, "older.jsonl.import-state", journal);
    int64_t observed = (int64_t)time(NULL) - 500;
    write_json_file(file, 6, observed);
    json_lines_of(6, observed, lines);
    const char *const *sent = (const char *const *)lines;
    write_unkeyed_journal(file, journal);

    h_cli_result_t res;
    run_import(env, H_POLITIE, file, &res,
               (const char *const[]){"--batch", "3", "--test-interrupt-after-batches", "1", NULL});
    h_expect_exit(&res, T_EXIT_INTERRUPTED, "import resuming an unkeyed journal");
    expect_summary(&res, 3, 0, 0);
    expect_said(&res, "from before keyed message ids", 1, "the unkeyed journal's note");
    h_cli_result_free(&res);
    receive_publish(env, H_OM, 3, id);
    expected_id_bytes(NULL, sent, NULL, 3, 1, want);
    assert_memory_equal(id, want, sizeof id);

    drop_last_done_entry(journal); /* a crash: lines 1..3 go out again */
    run_import(env, H_POLITIE, file, &res, (const char *const[]){"--batch", "3", NULL});
    h_expect_exit(&res, 0, "rerun");
    expect_summary(&res, 3, 0, 3);
    h_cli_result_free(&res);
    receive_publish(env, H_OM, 3, id); /* lines 4..6, and nothing twice */
    expected_id_bytes(NULL, sent + 3, NULL, 3, 4, want);
    assert_memory_equal(id, want, sizeof id);
    char *text = read_file(journal);
    assert_non_null(text);
    if (strstr(text, "\nids ") != NULL || strstr(text, "\nK ") != NULL)
        fail_msg("the unkeyed journal became keyed: %s", text);
    free(text);
    for (int i = 0; i < 6; i++)
        free(lines[i]);
    h_done(env);
}

/* --restart of a journal begun by a schakel from before keyed ids keeps
 * its unkeyed ids: politie imports 6 lines with --batch 3 under such a
 * journal, then a seventh line is appended; the rerun is refused (exit 2:
 * the file changed) and names --restart, which publishes again only the
 * batches that changed: here none (lines 1..3 and 4..6 are answered as
 * repeats), and line 7 is new. om has each of the 7 lines once. The
 * journal stays one of unkeyed ids. */
static void test_import_restart_of_unkeyed_journal_keeps_its_ids(void **state)
{
    h_env_t *env = *state;
    char file[T_PATH], journal[T_PATH];
    path_in(env, "older.jsonl", file);
    path_in(env, "older.jsonl.import-state", journal);
    int64_t observed = (int64_t)time(NULL) - 500;
    write_json_file(file, 6, observed);
    write_unkeyed_journal(file, journal);
    h_cli_result_t res;
    run_import(env, H_POLITIE, file, &res, (const char *const[]){"--batch", "3", NULL});
    h_expect_exit(&res, 0, "import resuming an unkeyed journal");
    expect_summary(&res, 6, 0, 0);
    h_cli_result_free(&res);

    write_json_file(file, 7, observed); /* line 7 appended */
    run_import(env, H_POLITIE, file, &res, (const char *const[]){"--batch", "3", NULL});
    h_expect_exit(&res, T_EXIT_USAGE, "rerun of a file that grew");
    expect_said(&res, "publishes again the lines of every batch that changed", 1,
                "the refusal's way on");
    h_cli_result_free(&res);
    run_import(env, H_POLITIE, file, &res,
               (const char *const[]){"--batch", "3", "--restart", NULL});
    h_expect_exit(&res, 0, "--restart");
    expect_summary(&res, 1, 0, 6);
    expect_said(&res, "from before keyed message ids", 1, "the unkeyed journal's note");
    h_cli_result_free(&res);
    assert_int_equal(h_backlog_of(env, H_OM), 7);
    char *text = read_file(journal);
    assert_non_null(text);
    if (strstr(text, "\nschakel-import-journal 1\n") == NULL || strstr(text, "\nids ") != NULL)
        fail_msg("the restarted journal is not one of unkeyed ids: %s", text);
    free(text);
    h_done(env);
}

/* The reviewer's torn header: politie imports 3 lines with --batch 3 under
 * a journal of unkeyed ids; the file grows to 5 lines, and the journal
 * holds the header of a restart of it written in place and cut by a power
 * loss (its new bytes, the old header's size: one byte short, as the file
 * passed 999 bytes). The rerun is refused (no complete header, nothing
 * sent); --restart keeps the unkeyed ids its first line names, so lines
 * 1..3 are answered as repeats and only 4 and 5 are new: om has 5, not 8. */
static void test_import_restart_of_a_torn_header_keeps_its_ids(void **state)
{
    h_env_t *env = *state;
    char file[T_PATH], journal[T_PATH], grown[T_PATH];
    path_in(env, "torn.jsonl", file);
    path_in(env, "torn.jsonl.import-state", journal);
    path_in(env, "torn.header", grown);
    int64_t observed = (int64_t)time(NULL) - 400;
    write_json_file(file, 3, observed);
    write_unkeyed_journal(file, journal);
    char *old = read_file(journal);
    assert_non_null(old);
    size_t old_header = strlen(old);
    free(old);
    h_cli_result_t res;
    run_import(env, H_POLITIE, file, &res, (const char *const[]){"--batch", "3", NULL});
    h_expect_exit(&res, 0, "import under an unkeyed journal");
    expect_summary(&res, 3, 0, 0);
    h_cli_result_free(&res);
    write_json_file(file, 5, observed);
    write_unkeyed_journal(file, grown);
    char *header = read_file(grown);
    assert_non_null(header);
    assert_true(strlen(header) == old_header + 1);
    write_file(journal, header, old_header);
    free(header);

    run_import(env, H_POLITIE, file, &res, (const char *const[]){"--batch", "3", NULL});
    h_expect_exit(&res, T_EXIT_USAGE, "rerun of a torn header");
    expect_said(&res, "has no complete header: give --restart", 1, "the torn header");
    h_cli_result_free(&res);
    assert_int_equal(h_backlog_of(env, H_OM), 3);
    run_import(env, H_POLITIE, file, &res,
               (const char *const[]){"--batch", "3", "--restart", NULL});
    h_expect_exit(&res, 0, "--restart of a torn header");
    expect_summary(&res, 2, 0, 3);
    expect_said(&res, "from before keyed message ids", 1, "the unkeyed journal's note");
    h_cli_result_free(&res);
    assert_int_equal(h_backlog_of(env, H_OM), 5);
    char *text = read_file(journal);
    assert_non_null(text);
    if (strstr(text, "\nschakel-import-journal 1\n") == NULL || strstr(text, "\nids ") != NULL)
        fail_msg("the restarted journal is not one of unkeyed ids: %s", text);
    free(text);
    h_done(env);
}

/* --restart with another --batch than the journal's: 6 lines imported
 * with --batch 3, interrupted after the first batch; a resume with
 * --batch 2 and --restart --batch 2 are refused (exit 2), naming the 3
 * lines accepted that would reach om twice and --new-batch, the journal
 * left as it was and nothing sent; with --new-batch every line goes out
 * in new batches under new ids, as schakel(1) says: accepted 6, and om
 * has lines 1..3 twice. --restart without --batch then keeps the
 * journal's 2, and every batch is answered as a repeat. */
static void test_import_restart_with_another_batch_needs_new_batch(void **state)
{
    h_env_t *env = *state;
    char file[T_PATH], journal[T_PATH];
    path_in(env, "rebatch.jsonl", file);
    path_in(env, "rebatch.jsonl.import-state", journal);
    write_json_file(file, 6, (int64_t)time(NULL) - 450);
    h_cli_result_t res;
    run_import(env, H_POLITIE, file, &res,
               (const char *const[]){"--batch", "3", "--test-interrupt-after-batches", "1", NULL});
    h_expect_exit(&res, T_EXIT_INTERRUPTED, "interrupted import");
    expect_summary(&res, 3, 0, 0);
    h_cli_result_free(&res);
    assert_int_equal(h_backlog_of(env, H_OM), 3);
    char *before = read_file(journal);
    assert_non_null(before);

    for (int restart = 0; restart < 2; restart++) {
        run_import(env, H_POLITIE, file, &res,
                   (const char *const[]){"--batch", "2", restart ? "--restart" : NULL, NULL});
        h_expect_exit(&res, T_EXIT_USAGE, restart ? "--restart with another --batch" : "resume");
        expect_said(&res,
                    restart ? "--batch 3: --restart with --batch 2 cuts the file into other batches"
                            : "--restart with --batch 2 and --new-batch",
                    1, "the refusal");
        expect_said(&res, "the 3 lines the journal records as accepted", 1, "the refusal");
        expect_said(&res, "reach their recipients twice", 1, "the refusal");
        h_cli_result_free(&res);
        char *after = read_file(journal);
        assert_non_null(after);
        assert_string_equal(after, before);
        free(after);
        assert_int_equal(h_backlog_of(env, H_OM), 3);
    }
    free(before);

    run_import(env, H_POLITIE, file, &res,
               (const char *const[]){"--batch", "2", "--restart", "--new-batch", NULL});
    h_expect_exit(&res, 0, "--restart --new-batch");
    expect_summary(&res, 6, 0, 0);
    h_cli_result_free(&res);
    assert_int_equal(h_backlog_of(env, H_OM), 9);

    run_import(env, H_POLITIE, file, &res, (const char *const[]){"--restart", NULL});
    h_expect_exit(&res, 0, "--restart without --batch");
    expect_summary(&res, 0, 0, 6);
    h_cli_result_free(&res);
    assert_int_equal(h_backlog_of(env, H_OM), 9);
    h_done(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_import_json_lines_arrive_once_as_written,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_import_csv_arrives_once_as_written, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_import_bad_lines_refused_by_line_rest_accepted,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_import_csv_bad_records_refused_by_line, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_import_csv_bad_header_refuses_file, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_import_rerun_after_completion_publishes_nothing,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_import_interrupted_then_rerun_exactly_once,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_import_changed_file_needs_restart, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_import_rest_of_a_refused_publish_keeps_its_id,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_import_overlong_line_refused_rest_accepted,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_import_csv_long_quoted_field_stays_one_record,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_import_progress_plain_when_not_a_terminal,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_import_progress_bar_on_a_terminal, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_import_whole_publish_refusals, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_import_in_flight_order_and_refusal, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_import_bad_options_refused, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_import_rerun_after_restore_publishes_again,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_import_restart_keeps_epoch_rerun_skips, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_import_restored_during_import_run_again,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_import_broker_restart_during_import_goes_on,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_import_rerun_after_restore_skips_what_was_forgotten,
                                        setup_short_rules, h_teardown),
        cmocka_unit_test_setup_teardown(test_import_rerun_with_floor_unknown_warns, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_import_end_check_unanswered_warns, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_import_ids_let_no_recipient_test_guesses,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_import_ids_stay_with_the_key, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_import_unkeyed_journal_keeps_its_ids, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_import_restart_of_unkeyed_journal_keeps_its_ids,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_import_restart_of_a_torn_header_keeps_its_ids,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_import_restart_with_another_batch_needs_new_batch,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_import_journal_folder_sync_failure_publishes_nothing,
                                        h_setup_broker, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
