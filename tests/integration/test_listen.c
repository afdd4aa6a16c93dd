/*
 * test_listen.c — `schakel listen` acks only what its output holds: a
 * regular file is synced before the acks (a failed sync acks nothing), a
 * delivery that could not be written whole (a full disk: RLIMIT_FSIZE) is
 * cut back out of the file, O_APPEND files included, and not acked; a
 * closed pipe is an error with a message, not a death by SIGPIPE; the
 * human lines carry the message id and item index.
 *
 * Every program of this binary runs with syncgate.so preloaded; only the
 * CLI runs that name SCHAKEL_TEST_SYNC_FAIL in their environment see its
 * fdatasync fail (with EIO, and a line on its stderr), never a broker.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BATCH 5

static void expect_exit(const h_cli_result_t *res, int code, const char *what)
{
    if (res->status != code)
        fail_msg("%s: exit %d, expected %d\nstdout: %s\nstderr: %s", what, res->status, code,
                 res->out, res->err);
}

static void expect_err(const h_cli_result_t *res, const char *needle, const char *what)
{
    if (strstr(res->err, needle) == NULL)
        fail_msg("%s: stderr lacks \"%s\":\n%s", what, needle, res->err);
}

/* One publish of BATCH signals from the Maasoever housing corporation
 * under message_id (the municipality and the police receive them); their
 * item seqs into item_seqs (may be NULL). */
static void publish_batch(h_env_t *env, const uint8_t message_id[16], uint64_t *item_seqs)
{
    schakel_signal_t signals[BATCH];
    char refs[BATCH][24];
    for (int i = 0; i < BATCH; i++) {
        snprintf(refs[i], sizeof refs[i], "WM-2024-%04d", 700 + i);
        signals[i] = (schakel_signal_t){.kind = "hennepkwekerij",
                                        .theme = "ondermijning",
                                        .area = "BU09350101",
                                        .postcode = "6211AB",
                                        .house_number = (uint32_t)(20 + i),
                                        .summary = "Vermoedelijke hennepkwekerij",
                                        .source_ref = refs[i]};
    }
    schakel_item_result_t results[BATCH];
    schakel_client_t *woco = h_connect(env, H_WOCO_MAASOEVER);
    schakel_status_t status =
        schakel_publish(woco, NULL, signals, BATCH, message_id, NULL, results, NULL, H_TIMEOUT_MS);
    if (status != SCHAKEL_OK)
        fail_msg("publish: %s: %s", schakel_strerror(status), schakel_last_error(woco)->text);
    for (int i = 0; item_seqs != NULL && i < BATCH; i++)
        item_seqs[i] = results[i].seq;
    schakel_close(&woco);
}

/* Run `schakel listen` as the municipality with args (NULL-terminated),
 * stdout the descriptor out (-1: a pipe read into res->out), the file-size
 * limit (0: none) and one more variable (NULL: none). */
static int run_listen(h_env_t *env, int out, rlim_t file_limit, const char *extra_env,
                      const char *const *args, h_cli_result_t *res)
{
    const h_cli_target_t target = {
        .stdout_fd = out >= 0 ? &out : NULL, .file_limit = file_limit, .extra_env = extra_env};
    return h_run_cli_argv(env, H_GEMEENTE, &target, args, res);
}

/* The file's bytes (NUL-terminated); free it. */
static char *file_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("%s: %s", path, strerror(errno));
    char *text = NULL;
    size_t cap = 0, len = 0, n;
    do {
        if (cap - len < 4097) {
            cap = cap ? 2 * cap : 8192;
            text = realloc(text, cap);
            assert_non_null(text);
        }
        n = fread(text + len, 1, cap - len - 1, f);
        len += n;
    } while (n > 0);
    fclose(f);
    text[len] = '\0';
    return text;
}

static off_t file_size(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        fail_msg("stat %s: %s", path, strerror(errno));
    return st.st_size;
}

/* Open path for writing as the shell's `>` (O_TRUNC) or `>>` (O_APPEND)
 * would; fails the test on error. */
static int open_output(const char *path, int append)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0600);
    if (fd < 0)
        fail_msg("open %s: %s", path, strerror(errno));
    return fd;
}

static void write_file(const char *path, const char *text)
{
    int fd = open_output(path, 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* Check that text after `skip` bytes is whole delivery lines, each one JSON
 * object of its own (a line glued onto a partial one holds two), and add
 * each line's item_seq to seen (counts per item, indexed by i where
 * item_seqs[i] is the line's). Returns the number of lines. */
static size_t whole_lines(const char *text, size_t skip, const uint64_t *item_seqs, unsigned *seen)
{
    size_t lines = 0;
    const char *p = text + skip;
    while (*p != '\0') {
        const char *end = strchr(p, '\n');
        if (end == NULL)
            fail_msg("the output ends in a partial line: %s", p);
        if (strncmp(p, "{\"seq\":", 7) != 0 || end[-1] != '}')
            fail_msg("not a whole delivery line: %.*s", (int)(end - p), p);
        const char *again = strstr(p + 1, "{\"seq\":");
        if (again != NULL && again < end)
            fail_msg("two deliveries on one line: %.*s", (int)(end - p), p);
        const char *item = strstr(p, "\"item_seq\":");
        if (item == NULL || item > end)
            fail_msg("a delivery line without item_seq: %.*s", (int)(end - p), p);
        unsigned long long item_seq = strtoull(item + 11, NULL, 10);
        int found = 0;
        for (int i = 0; i < BATCH; i++)
            if (item_seqs[i] == item_seq) {
                seen[i]++;
                found = 1;
            }
        if (!found)
            fail_msg("item_seq %llu was not published here", item_seq);
        lines++;
        p = end + 1;
    }
    return lines;
}

/* A failed fdatasync of the output file acks nothing and leaves the file
 * as it was; a pipe is not synced at all, so the same failing fdatasync
 * does not stop a listen into a pipe. */
static void test_listen_failed_sync_acks_nothing(void **state)
{
    h_env_t *env = *state;
    uint64_t item_seqs[BATCH];
    publish_batch(env, NULL, item_seqs);
    char path[160], fail_path[160], fail_env[200];
    snprintf(path, sizeof path, "%s/inbox.jsonl", env->dir);
    snprintf(fail_path, sizeof fail_path, "%s/sync-fail", env->dir);
    snprintf(fail_env, sizeof fail_env, "SCHAKEL_TEST_SYNC_FAIL=%s", fail_path);
    const char *earlier = "{\"seq\":1,\"earlier\":true}\n";
    write_file(path, earlier);
    write_file(fail_path, "");

    static const char *const drain[] = {"listen", "--json", "--drain", "--timeout", "20", NULL};
    h_cli_result_t res;
    int fd = open_output(path, 1);
    run_listen(env, fd, 0, fail_env, drain, &res);
    close(fd);
    expect_exit(&res, 1, "listen into a file whose sync fails");
    expect_err(&res, "event=syncgate.failed call=fdatasync fd=1", "listen's sync of stdout");
    expect_err(&res, "cannot sync standard output (Input/output error)", "the failed sync");
    expect_err(&res, "not acknowledged", "the failed sync");
    h_cli_result_free(&res);
    char *text = file_text(path);
    assert_string_equal(text, earlier);
    free(text);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), BATCH);

    /* Into a pipe: no sync, so the failing one is never reached. */
    run_listen(env, -1, 0, fail_env, drain, &res);
    expect_exit(&res, 0, "listen into a pipe");
    if (strstr(res.err, "syncgate") != NULL)
        fail_msg("listen synced a pipe: %s", res.err);
    unsigned seen[BATCH] = {0};
    assert_int_equal(whole_lines(res.out, 0, item_seqs, seen), BATCH);
    h_cli_result_free(&res);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), 0);
    unlink(fail_path);
    h_done(env);
}

/* A listen into a file another program appends to as well (a second
 * listener into one inbox), held in its sync and then failing it. */
typedef struct held_listen {
    h_env_t *env;
    int fd;
    char gate_env[200], fail_env[200];
    h_cli_result_t res;
} held_listen_t;

static void *held_listen_run(void *arg)
{
    held_listen_t *h = arg;
    static const char *const drain[] = {"listen", "--json", "--drain", "--timeout", "20", NULL};
    const h_cli_target_t target = {
        .stdout_fd = &h->fd, .extra_env = h->gate_env, .extra_env2 = h->fail_env};
    (void)h_run_cli_argv(h->env, H_GEMEENTE, &target, drain, &h->res);
    return NULL;
}

/* A failed sync does not cut away what another program appended to the
 * same file: its line stays, whole; listen's own lines, not acked, stay
 * too (they come again), and it says why it did not cut back. */
static void test_listen_failed_sync_keeps_another_writers_lines(void **state)
{
    h_env_t *env = *state;
    uint64_t item_seqs[BATCH];
    publish_batch(env, NULL, item_seqs);
    char path[160], gate_path[160], fail_path[160];
    snprintf(path, sizeof path, "%s/inbox.jsonl", env->dir);
    snprintf(gate_path, sizeof gate_path, "%s/sync-gate", env->dir);
    snprintf(fail_path, sizeof fail_path, "%s/sync-fail", env->dir);
    const char *earlier = "{\"seq\":1,\"earlier\":true}\n";
    const char *other = "{\"seq\":2,\"other_writer\":true}\n";
    write_file(path, earlier);
    write_file(gate_path, "");

    held_listen_t h = {.env = env, .fd = open_output(path, 1)};
    snprintf(h.gate_env, sizeof h.gate_env, "SCHAKEL_TEST_SYNC_GATE=%s", gate_path);
    snprintf(h.fail_env, sizeof h.fail_env, "SCHAKEL_TEST_SYNC_FAIL=%s", fail_path);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, held_listen_run, &h), 0);
    /* listen has written (a line at least) and waits in its sync; bounded */
    const struct timespec pause = {0, 10 * 1000 * 1000};
    for (int i = 0; i < H_TIMEOUT_MS / 10 && file_size(path) <= (off_t)strlen(earlier); i++)
        nanosleep(&pause, NULL);
    int other_fd = open_output(path, 1);
    assert_int_equal(write(other_fd, other, strlen(other)), (ssize_t)strlen(other));
    assert_int_equal(fsync(other_fd), 0);
    close(other_fd);
    write_file(fail_path, "");
    unlink(gate_path);
    pthread_join(thread, NULL);
    close(h.fd);

    expect_exit(&h.res, 1, "listen whose sync fails after another writer appended");
    expect_err(&h.res, "cannot sync standard output", "the failed sync");
    expect_err(&h.res, "was not cut back", "the file another program wrote to");
    h_cli_result_free(&h.res);
    char *text = file_text(path);
    if (strncmp(text, earlier, strlen(earlier)) != 0 || strstr(text, other) == NULL)
        fail_msg("the other writer's line is gone:\n%s", text);
    free(text);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), BATCH);
    unlink(fail_path);
    h_done(env);
}

/* A full disk (the CLI's RLIMIT_FSIZE) in the middle of a delivery: the
 * file is cut back to the end of the last whole one, in a file opened as
 * `>` and as `>>` (whose offset is 0 until its first write); what was
 * written whole is acked, the cut delivery is not, and comes again. */
static void test_listen_full_disk_cuts_back(void **state)
{
    h_env_t *env = *state;
    uint64_t item_seqs[BATCH];
    publish_batch(env, NULL, item_seqs);
    char plain[160], appended[160];
    snprintf(plain, sizeof plain, "%s/plain.jsonl", env->dir);
    snprintf(appended, sizeof appended, "%s/appended.jsonl", env->dir);
    const char *earlier = "{\"seq\":1,\"earlier\":true}\n";
    const size_t earlier_len = strlen(earlier);
    write_file(appended, earlier);
    static const char *const drain[] = {"listen", "--json", "--drain", "--timeout", "20", NULL};
    static const char *const one[] = {"listen", "--json", "--count", "1", "--timeout", "20", NULL};
    h_cli_result_t res;

    /* `>`, full after 100 bytes: the first delivery is cut back whole. */
    int fd = open_output(plain, 0);
    run_listen(env, fd, 100, NULL, drain, &res);
    close(fd);
    expect_exit(&res, 1, "listen into a full file");
    expect_err(&res, "cannot write to standard output (File too large)", "the full file");
    expect_err(&res, "not acknowledged", "the full file");
    h_cli_result_free(&res);
    assert_int_equal(file_size(plain), 0);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), BATCH);

    /* `>>`, full 100 bytes past what it held. */
    fd = open_output(appended, 1);
    run_listen(env, fd, (rlim_t)earlier_len + 100, NULL, drain, &res);
    close(fd);
    expect_exit(&res, 1, "listen appending to a full file");
    expect_err(&res, "cannot write to standard output (File too large)", "the full >> file");
    h_cli_result_free(&res);
    char *text = file_text(appended);
    assert_string_equal(text, earlier);
    free(text);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), BATCH);

    /* One delivery, to learn the length of a line (the others differ only
     * in a digit or two). */
    fd = open_output(appended, 1);
    run_listen(env, fd, 0, NULL, one, &res);
    close(fd);
    expect_exit(&res, 0, "listen --count 1");
    h_cli_result_free(&res);
    off_t line = file_size(appended) - (off_t)earlier_len;
    assert_true(line > 200);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), BATCH - 1);

    /* Room for one line and a half: one is written and acked, the next cut. */
    fd = open_output(plain, 0);
    run_listen(env, fd, (rlim_t)(line + line / 2), NULL, drain, &res);
    close(fd);
    expect_exit(&res, 1, "listen into a file full after one line");
    expect_err(&res, "cannot write to standard output (File too large)", "full after one line");
    h_cli_result_free(&res);
    unsigned seen[BATCH] = {0};
    char *plain_text = file_text(plain);
    assert_int_equal(whole_lines(plain_text, 0, item_seqs, seen), 1);
    free(plain_text);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), BATCH - 2);

    off_t size = file_size(appended);
    fd = open_output(appended, 1);
    run_listen(env, fd, (rlim_t)(size + line + line / 2), NULL, drain, &res);
    close(fd);
    expect_exit(&res, 1, "listen appending to a file full after one line");
    h_cli_result_free(&res);
    assert_int_equal(file_size(appended), size + line);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), BATCH - 3);

    /* With room: the rest, and every item once in the two files. */
    fd = open_output(appended, 1);
    run_listen(env, fd, 0, NULL, drain, &res);
    close(fd);
    expect_exit(&res, 0, "listen with room");
    h_cli_result_free(&res);
    text = file_text(appended);
    assert_int_equal(strncmp(text, earlier, earlier_len), 0);
    assert_int_equal(whole_lines(text, earlier_len, item_seqs, seen), BATCH - 1);
    free(text);
    for (int i = 0; i < BATCH; i++)
        if (seen[i] != 1)
            fail_msg("item_seq %llu was written %u times", (unsigned long long)item_seqs[i],
                     seen[i]);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), 0);
    h_done(env);
}

/* A reader that closed the pipe: exit 1 with a message, not SIGPIPE's
 * status 141, and the delivery that failed is not acked. */
static void test_listen_closed_pipe_is_an_error(void **state)
{
    h_env_t *env = *state;
    publish_batch(env, NULL, NULL);
    int pipe_fds[2];
    assert_int_equal(pipe2(pipe_fds, O_CLOEXEC), 0);
    close(pipe_fds[0]);
    static const char *const drain[] = {"listen", "--drain", "--timeout", "20", NULL};
    h_cli_result_t res;
    run_listen(env, pipe_fds[1], 0, NULL, drain, &res);
    close(pipe_fds[1]);
    expect_exit(&res, 1, "listen into a closed pipe");
    expect_err(&res, "cannot write to standard output (Broken pipe)", "the closed pipe");
    expect_err(&res, "not acknowledged", "the closed pipe");
    h_cli_result_free(&res);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), BATCH);
    h_done(env);
}

/* The human lines, like the JSON ones, name the item by the sender's
 * message id and its index: what identifies it when it comes again under
 * a new seq (a broker restored from a backup, and the item published
 * again). */
static void test_listen_lines_name_message_id_and_index(void **state)
{
    h_env_t *env = *state;
    const uint8_t message_id[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                    0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
    const char *hex = "00112233445566778899aabbccddeeff";
    publish_batch(env, message_id, NULL);
    static const char *const human[] = {"listen", "--drain", "--timeout", "20", NULL};
    h_cli_result_t res;
    run_listen(env, -1, 0, NULL, human, &res);
    expect_exit(&res, 0, "listen");
    const char *p = res.out;
    for (int i = 0; i < BATCH; i++) {
        char ids[128];
        snprintf(ids, sizeof ids, " message_id=%s item_index=%d from=%s ", hex, i,
                 H_WOCO_MAASOEVER);
        const char *end = strchr(p, '\n');
        if (strncmp(p, "seq=", 4) != 0 || end == NULL)
            fail_msg("line %d is not a delivery: %s", i + 1, p);
        const char *found = strstr(p, ids);
        if (found == NULL || found > end)
            fail_msg("line %d lacks \"%s\": %.*s", i + 1, ids, (int)(end - p), p);
        p = end + 1;
    }
    assert_string_equal(p, "");
    h_cli_result_free(&res);

    /* --json names them too: the police's copies. */
    static const char *const json[] = {"listen", "--json", "--drain", "--timeout", "20", NULL};
    h_run_cli_argv(env, H_POLITIE, NULL, json, &res);
    expect_exit(&res, 0, "listen --json");
    p = res.out;
    for (int i = 0; i < BATCH; i++) {
        char ids[128];
        snprintf(ids, sizeof ids, "\"message_id\":\"%s\",\"item_index\":%d,", hex, i);
        const char *end = strchr(p, '\n');
        const char *found = strstr(p, ids);
        if (end == NULL || found == NULL || found > end)
            fail_msg("JSON line %d lacks %s: %s", i + 1, ids, p);
        p = end + 1;
    }
    h_cli_result_free(&res);
    h_done(env);
}

int main(void)
{
    char err[PATH_MAX + 128];
    if (h_preload_shim("syncgate.so", err, sizeof err) != 0) {
        fprintf(stderr, "test_listen: %s\n", err);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_listen_failed_sync_acks_nothing, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_listen_failed_sync_keeps_another_writers_lines,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_listen_full_disk_cuts_back, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_listen_closed_pipe_is_an_error, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_listen_lines_name_message_id_and_index, h_setup_broker,
                                        h_teardown),
    };
    return cmocka_run_group_tests_name("integration: listen", tests, NULL, NULL);
}
