/*
 * test_listen.c — `schakel listen` acks only what its output holds: a
 * regular file is synced before the acks (a failed sync acks nothing), a
 * delivery that could not be written whole (a full disk: RLIMIT_FSIZE) is
 * cut back out of the file, O_APPEND files included, and not acked; a
 * closed pipe is an error with a message, not a death by SIGPIPE; the
 * human lines carry the message id and item index. Before anything is
 * received, a file's partial last line is ended with a newline (and said),
 * and a file without a name is refused; its folder is synced before the
 * first ack. A SIGINT while a write waits in a full pipe finishes that
 * line and stops; a second signal stops at once.
 *
 * Every program of this binary runs with syncgate.so preloaded; only the
 * CLI runs that name SCHAKEL_TEST_SYNC_FAIL (or _FAIL_FOLDER) in their
 * environment see its fdatasync or fsync fail (with EIO, and a line on
 * its stderr), never a broker.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BATCH 5

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
    h_expect_exit(&res, 1, "listen into a file whose sync fails");
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
    h_expect_exit(&res, 0, "listen into a pipe");
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
    int err_fd; /* > 0: the tool's stderr (the sync gate's lines), else read into res.err */
    char gate_env[200], fail_env[200];
    h_cli_result_t res;
} held_listen_t;

static void *held_listen_run(void *arg)
{
    held_listen_t *h = arg;
    static const char *const drain[] = {"listen", "--json", "--drain", "--timeout", "20", NULL};
    const h_cli_target_t target = {.stdout_fd = &h->fd,
                                   .stderr_fd = h->err_fd > 0 ? &h->err_fd : NULL,
                                   .extra_env = h->gate_env,
                                   .extra_env2 = h->fail_env};
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
    char path[160], gate_path[160], fail_path[160], err_path[160];
    snprintf(path, sizeof path, "%s/inbox.jsonl", env->dir);
    snprintf(gate_path, sizeof gate_path, "%s/sync-gate", env->dir);
    snprintf(fail_path, sizeof fail_path, "%s/sync-fail", env->dir);
    snprintf(err_path, sizeof err_path, "%s/listen.err", env->dir);
    const char *earlier = "{\"seq\":1,\"earlier\":true}\n";
    const char *other = "{\"seq\":2,\"other_writer\":true}\n";
    write_file(path, earlier);
    write_file(gate_path, "");

    held_listen_t h = {.env = env, .fd = open_output(path, 1), .err_fd = open_output(err_path, 1)};
    snprintf(h.gate_env, sizeof h.gate_env, "SCHAKEL_TEST_SYNC_GATE=%s", gate_path);
    snprintf(h.fail_env, sizeof h.fail_env, "SCHAKEL_TEST_SYNC_FAIL=%s", fail_path);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, held_listen_run, &h), 0);
    /* listen has written its lines and waits in its sync (the gate says
     * so on its stderr): the other writer's line comes after all of them;
     * looked for every 10 ms, bounded */
    const struct timespec pause = {0, 10 * 1000 * 1000};
    int held = 0;
    for (int i = 0; i < H_TIMEOUT_MS / 10 && !held; i++) {
        char *said = file_text(err_path);
        held = strstr(said, "event=syncgate.held") != NULL;
        free(said);
        if (!held)
            nanosleep(&pause, NULL);
    }
    if (!held)
        fail_msg("listen did not reach its sync within %d ms", H_TIMEOUT_MS);
    int other_fd = open_output(path, 1);
    assert_int_equal(write(other_fd, other, strlen(other)), (ssize_t)strlen(other));
    assert_int_equal(fsync(other_fd), 0);
    close(other_fd);
    write_file(fail_path, "");
    unlink(gate_path);
    pthread_join(thread, NULL);
    close(h.fd);
    close(h.err_fd);

    char *said = file_text(err_path);
    free(h.res.err);
    h.res.err = said; /* freed with the result */
    h_expect_exit(&h.res, 1, "listen whose sync fails after another writer appended");
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

/* The output file deleted, or renamed away (a reader taking the inbox by
 * renaming a new file over it), while listen waits in its sync: the
 * deliveries are in a file the partner no longer has under its name, so
 * nothing is acked, listen says why and exits 1; they come again. */
static void test_listen_file_gone_from_its_name_acks_nothing(void **state)
{
    h_env_t *env = *state;
    publish_batch(env, NULL, NULL);
    for (int replaced = 0; replaced < 2; replaced++) {
        char path[160], gate_path[160], other[160];
        snprintf(path, sizeof path, "%s/inbox-%d.jsonl", env->dir, replaced);
        snprintf(gate_path, sizeof gate_path, "%s/sync-gate", env->dir);
        snprintf(other, sizeof other, "%s/fresh.jsonl", env->dir);
        write_file(path, "");
        write_file(gate_path, "");
        held_listen_t h = {.env = env, .fd = open_output(path, 1)};
        snprintf(h.gate_env, sizeof h.gate_env, "SCHAKEL_TEST_SYNC_GATE=%s", gate_path);
        snprintf(h.fail_env, sizeof h.fail_env, "SCHAKEL_TEST_SYNC_FAIL=%s/no-such-file", env->dir);
        pthread_t thread;
        assert_int_equal(pthread_create(&thread, NULL, held_listen_run, &h), 0);
        /* listen has written (a line at least) and waits in its sync; bounded */
        const struct timespec pause = {0, 10 * 1000 * 1000};
        for (int i = 0; i < H_TIMEOUT_MS / 10 && file_size(path) <= 0; i++)
            nanosleep(&pause, NULL);
        if (replaced) {
            write_file(other, "");
            assert_int_equal(rename(other, path), 0);
        } else {
            assert_int_equal(unlink(path), 0);
        }
        unlink(gate_path);
        pthread_join(thread, NULL);
        close(h.fd);
        h_expect_exit(&h.res, 1,
                      replaced ? "listen whose file was renamed over"
                               : "listen whose file was deleted");
        expect_err(&h.res, "was deleted or renamed away while listen ran", "the file gone");
        expect_err(&h.res, "not acknowledged", "the file gone");
        h_cli_result_free(&h.res);
        assert_int_equal(h_backlog_of(env, H_GEMEENTE), BATCH);
    }
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
    h_expect_exit(&res, 1, "listen into a full file");
    expect_err(&res, "cannot write to standard output (File too large)", "the full file");
    expect_err(&res, "not acknowledged", "the full file");
    h_cli_result_free(&res);
    assert_int_equal(file_size(plain), 0);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), BATCH);

    /* `>>`, full 100 bytes past what it held. */
    fd = open_output(appended, 1);
    run_listen(env, fd, (rlim_t)earlier_len + 100, NULL, drain, &res);
    close(fd);
    h_expect_exit(&res, 1, "listen appending to a full file");
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
    h_expect_exit(&res, 0, "listen --count 1");
    h_cli_result_free(&res);
    off_t line = file_size(appended) - (off_t)earlier_len;
    assert_true(line > 200);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), BATCH - 1);

    /* Room for one line and a half: one is written and acked, the next cut. */
    fd = open_output(plain, 0);
    run_listen(env, fd, (rlim_t)(line + line / 2), NULL, drain, &res);
    close(fd);
    h_expect_exit(&res, 1, "listen into a file full after one line");
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
    h_expect_exit(&res, 1, "listen appending to a file full after one line");
    h_cli_result_free(&res);
    assert_int_equal(file_size(appended), size + line);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), BATCH - 3);

    /* With room: the rest, and every item once in the two files. */
    fd = open_output(appended, 1);
    run_listen(env, fd, 0, NULL, drain, &res);
    close(fd);
    h_expect_exit(&res, 0, "listen with room");
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
    h_expect_exit(&res, 1, "listen into a closed pipe");
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
    h_expect_exit(&res, 0, "listen");
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
    h_expect_exit(&res, 0, "listen --json");
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

/* ------------------------------------------------ what listen checks first */

/* A file that ends in a partial line (a delivery being written when the
 * system went down) gets a newline before the first delivery, and the
 * fragment's offset and length are said: every line but the fragment's is
 * one JSON object that parses; the fragment stays as it was, a line of its
 * own. A file that ends in a newline is left as it is, and nothing is
 * said. */
static void test_listen_ends_a_partial_last_line(void **state)
{
    h_env_t *env = *state;
    uint64_t item_seqs[BATCH];
    publish_batch(env, NULL, item_seqs);
    char path[160], said[128];
    snprintf(path, sizeof path, "%s/inbox.jsonl", env->dir);
    const char *earlier = "{\"seq\":1,\"earlier\":true}\n";
    const char *fragment = "{\"seq\":2,\"message_id\":\"00112233";
    char prepared[256];
    snprintf(prepared, sizeof prepared, "%s%s", earlier, fragment);
    write_file(path, prepared);
    snprintf(said, sizeof said, "ended in a partial line (offset %zu, %zu bytes)", strlen(earlier),
             strlen(fragment));

    static const char *const drain[] = {"listen", "--json", "--drain", "--timeout", "20", NULL};
    h_cli_result_t res;
    int fd = open_output(path, 1);
    run_listen(env, fd, 0, NULL, drain, &res);
    close(fd);
    h_expect_exit(&res, 0, "listen into a file ending in a partial line");
    expect_err(&res, said, "the partial line");
    h_cli_result_free(&res);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), 0);

    char *text = file_text(path);
    size_t kept = strlen(prepared);
    if (strncmp(text, prepared, kept) != 0 || text[kept] != '\n')
        fail_msg("the fragment is not kept as a line of its own:\n%s", text);
    unsigned seen[BATCH] = {0};
    assert_int_equal(whole_lines(text, kept + 1, item_seqs, seen), BATCH);
    /* as a reader of the file sees it: each line but the fragment parses */
    size_t line = 0;
    for (char *p = text, *end; *p != '\0'; p = end + 1, line++) {
        end = strchr(p, '\n');
        assert_non_null(end);
        json_error_t error;
        json_t *parsed = json_loadb(p, (size_t)(end - p), 0, &error);
        if ((parsed != NULL) != (line != 1))
            fail_msg("line %zu %s: %.*s", line + 1,
                     parsed ? "parses, want the fragment" : error.text, (int)(end - p), p);
        json_decref(parsed);
    }
    assert_int_equal(line, 2 + BATCH);
    free(text);

    /* Ending in a newline now: nothing said, nothing added. */
    off_t size = file_size(path);
    fd = open_output(path, 1);
    run_listen(env, fd, 0, NULL, drain, &res);
    close(fd);
    h_expect_exit(&res, 0, "listen into a file of whole lines");
    if (strstr(res.err, "partial line") != NULL)
        fail_msg("listen saw a partial line in a file of whole lines: %s", res.err);
    h_cli_result_free(&res);
    assert_int_equal(file_size(path), size);
    h_done(env);
}

/* The folder of the output file is synced before the first ack: when that
 * sync fails, nothing is acked, the file is cut back, and the tool says
 * which sync failed (exit 1). With the sync working, all is acked. */
static void test_listen_syncs_the_folder_before_acking(void **state)
{
    h_env_t *env = *state;
    publish_batch(env, NULL, NULL);
    char path[160], fail_path[160], fail_env[200];
    snprintf(path, sizeof path, "%s/inbox.jsonl", env->dir);
    snprintf(fail_path, sizeof fail_path, "%s/sync-fail-folder", env->dir);
    snprintf(fail_env, sizeof fail_env, "SCHAKEL_TEST_SYNC_FAIL_FOLDER=%s", fail_path);
    write_file(fail_path, "");

    static const char *const drain[] = {"listen", "--json", "--drain", "--timeout", "20", NULL};
    h_cli_result_t res;
    int fd = open_output(path, 0);
    run_listen(env, fd, 0, fail_env, drain, &res);
    close(fd);
    h_expect_exit(&res, 1, "listen whose folder sync fails");
    expect_err(&res, "event=syncgate.failed call=fsync", "listen's sync of the folder");
    expect_err(&res, "cannot sync the folder of standard output's file (Input/output error)",
               "the failed folder sync");
    expect_err(&res, "not acknowledged", "the failed folder sync");
    h_cli_result_free(&res);
    assert_int_equal(file_size(path), 0);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), BATCH);

    unlink(fail_path);
    fd = open_output(path, 0);
    run_listen(env, fd, 0, fail_env, drain, &res);
    close(fd);
    h_expect_exit(&res, 0, "listen whose folder sync works");
    h_cli_result_free(&res);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), 0);
    h_done(env);
}

/* A file with no name cannot have its folder synced: one that was deleted
 * (what is written to it is gone once it is closed) and one whose name
 * /proc gives is no longer its name (its other name is unknown to listen)
 * are refused before anything is received (exit 1, nothing acked). */
static void test_listen_refuses_a_file_without_a_name(void **state)
{
    h_env_t *env = *state;
    publish_batch(env, NULL, NULL);
    char path[160], other[160];
    snprintf(path, sizeof path, "%s/inbox.jsonl", env->dir);
    snprintf(other, sizeof other, "%s/inbox-other-name.jsonl", env->dir);
    static const char *const drain[] = {"listen", "--json", "--drain", "--timeout", "20", NULL};
    h_cli_result_t res;

    int fd = open_output(path, 0);
    assert_int_equal(unlink(path), 0);
    run_listen(env, fd, 0, NULL, drain, &res);
    close(fd);
    h_expect_exit(&res, 1, "listen into a deleted file");
    expect_err(&res, "standard output is a file that was deleted", "the deleted file");
    expect_err(&res, "nothing received", "the deleted file");
    h_cli_result_free(&res);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), BATCH);

    fd = open_output(path, 0);
    assert_int_equal(link(path, other), 0);
    assert_int_equal(unlink(path), 0);
    run_listen(env, fd, 0, NULL, drain, &res);
    close(fd);
    h_expect_exit(&res, 1, "listen into a file known by another name");
    expect_err(&res, "is not found under its name", "the file known by another name");
    expect_err(&res, "nothing received", "the file known by another name");
    h_cli_result_free(&res);
    assert_int_equal(file_size(other), 0);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), BATCH);
    h_done(env);
}

/* ------------------------------------------------ a stop while a pipe is full */

/* A listen whose stdout is a pipe the test holds, run in a thread; its
 * process id comes through pid_pipe. */
typedef struct piped_listen {
    h_env_t *env;
    int out_fd, pid_fd;
    h_cli_result_t res;
} piped_listen_t;

static void *piped_listen_run(void *arg)
{
    piped_listen_t *p = arg;
    static const char *const drain[] = {"listen", "--drain", "--timeout", "20", NULL};
    const h_cli_target_t target = {.stdout_fd = &p->out_fd, .pid_fd = &p->pid_fd};
    (void)h_run_cli_argv(p->env, H_GEMEENTE, &target, drain, &p->res);
    return NULL;
}

/* The first line of /proc/PID/<name> into line, or -1 (errno) when it
 * cannot be read: the process is gone, or it may not be looked at. */
static int proc_line(pid_t pid, const char *name, const char *prefix, char *line, size_t len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/%s", (long)pid, name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    int found = -1;
    while (fgets(line, (int)len, f) != NULL)
        if (prefix == NULL || strncmp(line, prefix, strlen(prefix)) == 0) {
            found = 0;
            break;
        }
    if (found != 0)
        errno = ENOENT;
    fclose(f);
    return found;
}

/* Wait (bounded, looking every millisecond: the state of another process
 * has no event to wait on) until pid's main thread is in the system call
 * nr on descriptor 1. Returns 0, or -1 when /proc/PID/syscall cannot be
 * read (errno: EACCES without CAP_SYS_PTRACE, the CLI not being dumpable). */
static int await_in_syscall(pid_t pid, long nr, const char *what)
{
    char want[48], line[256];
    snprintf(want, sizeof want, "%ld 0x1 ", nr);
    const struct timespec millisecond = {0, 1000000};
    for (int waited = 0; waited < H_TIMEOUT_MS; waited++) {
        if (proc_line(pid, "syscall", NULL, line, sizeof line) != 0)
            return -1;
        if (strncmp(line, want, strlen(want)) == 0)
            return 0;
        nanosleep(&millisecond, NULL);
    }
    fail_msg("%s: not in system call %ld on descriptor 1 within %d ms (last: %s)", what, nr,
             H_TIMEOUT_MS, line);
    return -1;
}

/* Wait (bounded, as await_in_syscall) until signo is no longer pending for
 * pid (taken by its handler), or pid is gone. */
static void await_signal_taken(pid_t pid, int signo)
{
    char line[256];
    const unsigned long long bit = 1ull << (signo - 1);
    const struct timespec millisecond = {0, 1000000};
    for (int waited = 0; waited < H_TIMEOUT_MS; waited++) {
        int pending = 0;
        static const char *const fields[] = {"SigPnd:", "ShdPnd:"};
        for (size_t i = 0; i < 2; i++) {
            if (proc_line(pid, "status", fields[i], line, sizeof line) != 0)
                return; /* gone */
            pending |= (strtoull(line + strlen(fields[i]), NULL, 16) & bit) != 0;
        }
        if (!pending)
            return;
        nanosleep(&millisecond, NULL);
    }
    fail_msg("signal %d still pending for %ld after %d ms", signo, (long)pid, H_TIMEOUT_MS);
}

/* Everything fd gives until its end (bounded), NUL-terminated; free it. */
static char *read_to_end(int fd, size_t *len_out)
{
    size_t cap = 16384, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, h_cli_timeout_ms()) != 1)
            fail_msg("the pipe did not end within %d ms", h_cli_timeout_ms());
        if (cap - len < 4097) {
            cap *= 2;
            text = realloc(text, cap);
            assert_non_null(text);
        }
        ssize_t n = read(fd, text + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    text[len] = '\0';
    *len_out = len;
    return text;
}

/* Send signo to the process of pidfd: 0, or -1 when it has ended. */
static int signal_listen(int pidfd, int signo)
{
    return (int)syscall(SYS_pidfd_send_signal, pidfd, signo, NULL, 0);
}

/* Start listen into a pipe of one page that the test has filled: its first
 * write waits, nothing of it in the pipe. Returns once listen waits in that
 * write: its process id, a pidfd of it in *pidfd (signalled by that, never
 * by a number another process may have taken), the pipe's read end in
 * *read_end; skipped when the test may not see where listen waits. */
static pid_t start_blocked_listen(h_env_t *env, piped_listen_t *p, pthread_t *thread, int *pidfd,
                                  int *read_end, size_t *filled)
{
    int out[2], pid_pipe[2];
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    assert_int_equal(pipe2(pid_pipe, O_CLOEXEC), 0);
    long page = sysconf(_SC_PAGESIZE);
    int size = fcntl(out[1], F_SETPIPE_SZ, (int)page);
    if (size < 0)
        fail_msg("F_SETPIPE_SZ: %s", strerror(errno));
    char *filler = malloc((size_t)size);
    assert_non_null(filler);
    memset(filler, 'x', (size_t)size - 1);
    filler[size - 1] = '\n';
    assert_int_equal(write(out[1], filler, (size_t)size), size);
    free(filler);
    *filled = (size_t)size;

    *p = (piped_listen_t){.env = env, .out_fd = out[1], .pid_fd = pid_pipe[1]};
    assert_int_equal(pthread_create(thread, NULL, piped_listen_run, p), 0);
    pid_t pid = 0;
    struct pollfd ready = {.fd = pid_pipe[0], .events = POLLIN};
    if (poll(&ready, 1, H_TIMEOUT_MS) != 1 || read(pid_pipe[0], &pid, sizeof pid) != sizeof pid)
        fail_msg("listen was not started within %d ms", H_TIMEOUT_MS);
    if ((*pidfd = (int)syscall(SYS_pidfd_open, pid, 0)) < 0)
        fail_msg("pidfd_open of listen: %s", strerror(errno));
    close(pid_pipe[0]);
    close(pid_pipe[1]);
    close(out[1]); /* listen holds the write end now */
    *read_end = out[0];
    if (await_in_syscall(pid, SYS_write, "listen writing into the full pipe") != 0) {
        int error = errno;
        close(out[0]); /* listen's write fails (EPIPE) and it ends */
        pthread_join(*thread, NULL);
        close(*pidfd);
        h_cli_result_free(&p->res);
        fprintf(stderr,
                "test_listen: cannot see where listen waits (/proc/%ld/syscall: %s; "
                "CAP_SYS_PTRACE is needed for a process that is not dumpable): skipped\n",
                (long)pid, strerror(error));
        skip();
    }
    int queued = -1;
    assert_int_equal(ioctl(out[0], FIONREAD, &queued), 0);
    assert_int_equal(queued, size); /* nothing of its line went in */
    return pid;
}

/* SIGINT while listen waits in a write into a full pipe: the write goes on
 * once the reader reads, the line is whole, listen stops after it (exit 0)
 * and acks only it. A second signal (SIGTERM after SIGINT) ends it at once
 * by that signal: nothing is acked. */
static void test_listen_stop_finishes_the_line_in_a_full_pipe(void **state)
{
    h_env_t *env = *state;
    publish_batch(env, NULL, NULL);
    piped_listen_t p;
    pthread_t thread;
    int read_end, pidfd;
    size_t filled, len;

    pid_t pid = start_blocked_listen(env, &p, &thread, &pidfd, &read_end, &filled);
    assert_int_equal(signal_listen(pidfd, SIGINT), 0);
    await_signal_taken(pid, SIGINT);
    (void)signal_listen(pidfd, SIGTERM); /* checked by its exit status */
    pthread_join(thread, NULL);
    close(pidfd);
    char *text = read_to_end(read_end, &len);
    close(read_end);
    h_expect_exit(&p.res, 128 + SIGTERM, "listen given SIGINT, then SIGTERM");
    h_cli_result_free(&p.res);
    assert_int_equal(len, filled);
    free(text);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), BATCH);

    pid = start_blocked_listen(env, &p, &thread, &pidfd, &read_end, &filled);
    assert_int_equal(signal_listen(pidfd, SIGINT), 0);
    await_signal_taken(pid, SIGINT);
    text = read_to_end(read_end, &len); /* the reader goes on: the line is finished */
    close(read_end);
    pthread_join(thread, NULL);
    close(pidfd);
    h_expect_exit(&p.res, 0, "listen given SIGINT while its write waits");
    h_cli_result_free(&p.res);
    const char *line = text + filled, *end = strchr(line, '\n');
    if (strncmp(line, "seq=", 4) != 0 || end == NULL || end[1] != '\0')
        fail_msg("want one whole delivery line after the filler, got: %s", line);
    free(text);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), BATCH - 1);
    h_done(env);
}

/* ------------------------------------------------ a key revoked while listen runs */

/* A listen that wrote and acked a batch, whose principal is then removed
 * from the policy: its end names the refusal, and its last acks' check
 * says that what waited for the key is withdrawn, not that it comes
 * again (the broker withdraws a removed principal's mailbox). */
static void *revoked_listen_run(void *arg)
{
    piped_listen_t *p = arg;
    static const char *const args[] = {"listen", "--timeout", "60", NULL};
    const h_cli_target_t target = {.stdout_fd = &p->out_fd};
    (void)h_run_cli_argv(p->env, H_GEMEENTE, &target, args, &p->res);
    return NULL;
}

static void test_listen_revoked_says_withdrawn(void **state)
{
    h_env_t *env = *state;
    publish_batch(env, NULL, NULL);
    int out[2];
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    piped_listen_t p = {.env = env, .out_fd = out[1]};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, revoked_listen_run, &p), 0);
    /* the batch's lines, then its acks go out */
    char text[16384];
    size_t len = 0;
    int lines = 0;
    while (lines < BATCH) {
        struct pollfd pfd = {.fd = out[0], .events = POLLIN};
        if (poll(&pfd, 1, h_cli_timeout_ms()) != 1)
            fail_msg("listen printed %d of %d deliveries within %d ms", lines, BATCH,
                     h_cli_timeout_ms());
        ssize_t n = read(out[0], text + len, sizeof text - len - 1);
        if (n <= 0)
            fail_msg("listen's output ended after %d of %d deliveries", lines, BATCH);
        for (ssize_t i = 0; i < n; i++)
            lines += text[len + (size_t)i] == '\n';
        len += (size_t)n;
    }
    const char *line = "  - id: gemeente/meldingen\n    role: system\n"
                       "    key_file: keys/gemeente-meldingen.pub\n";
    const char *at = strstr(h_policy_header, line);
    assert_non_null(at);
    char *without = NULL;
    assert_true(asprintf(&without, "%.*s%s", (int)(at - h_policy_header), h_policy_header,
                         at + strlen(line)) > 0);
    h_env_write_policy(env, "%s%s", without, h_default_rules);
    free(without);
    assert_int_equal(h_broker_reload(env), 1);
    pthread_join(thread, NULL);
    close(out[1]);
    close(out[0]);
    h_expect_exit(&p.res, 3, "listen whose key was revoked");
    expect_err(&p.res, "NOT_PERMITTED", "listen whose key was revoked");
    if (strstr(p.res.err, "come again") != NULL)
        fail_msg("a revoked key's listen says its deliveries come again: %s", p.res.err);
    expect_err(&p.res, "withdrawn, not delivered again", "listen whose key was revoked");
    h_cli_result_free(&p.res);
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
        cmocka_unit_test_setup_teardown(test_listen_file_gone_from_its_name_acks_nothing,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_listen_failed_sync_keeps_another_writers_lines,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_listen_full_disk_cuts_back, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_listen_closed_pipe_is_an_error, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_listen_lines_name_message_id_and_index, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_listen_ends_a_partial_last_line, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_listen_syncs_the_folder_before_acking, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_listen_refuses_a_file_without_a_name, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_listen_stop_finishes_the_line_in_a_full_pipe,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_listen_revoked_says_withdrawn, h_setup_broker,
                                        h_teardown),
    };
    return cmocka_run_group_tests_name("integration: listen", tests, NULL, NULL);
}
