/*
 * bench_import.c — `schakel import` of a bulk feed: a JSON-lines file of N
 * signals (default 100,000) imported by the real CLI into a real broker,
 * lines per second; then a rerun of the finished file, which must publish
 * nothing (its time, and that the recipient's mailbox did not grow).
 *
 * Owns a temporary folder under /tmp (keys, policy, config, store, the
 * feed, the CLI's journal and output) and the schakeld and schakel
 * processes it starts there; it ends only those PIDs. Trusts the CLI's
 * summary only as far as the broker confirms it: the recipient's backlog
 * must equal the accepted count. Bounded by a deadline. Exit status: 0
 * when the run completed and the counts agree, 1 otherwise, 2 on usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "schakel.h"
#include "support.h"

#define IMPORT_DEFAULT_COUNT 100000u
#define IMPORT_MAX_COUNT 50000000u
#define IMPORT_START_TIMEOUT_MS 15000
#define IMPORT_CALL_TIMEOUT_MS 30000
#define IMPORT_STOP_TIMEOUT_MS 60000
#define IMPORT_PUBLISHER "bron/import"
#define IMPORT_RECIPIENT "ontvanger/systeem"

extern char **environ;

typedef struct import_options {
    uint64_t count;
    double deadline_s; /* 0: derived from count */
    const char *json_path;
    const char *log_level;
    int keep;
} import_options_t;

typedef struct import_run_result {
    int exit_status; /* the CLI's, 128+signal, or -1 */
    double seconds;
    uint64_t accepted, refused, already;
    int summary_read;
} import_run_result_t;

typedef struct import_bench {
    import_options_t opt;
    bench_env_t env;
    int64_t deadline_ms;
    char feed[BENCH_PATH_MAX];
    long long feed_bytes;
    import_run_result_t first, rerun;
    int64_t backlog_after_first, backlog_after_rerun;
    int completed;
} import_bench_t;

/* ------------------------------------------------------------------ options */

static void import_usage(FILE *out)
{
    fprintf(out,
            "usage: bench_import [--count N] [--deadline SECONDS] [--json FILE]\n"
            "                    [--broker-log-level L] [--keep]\n"
            "\n"
            "  --count N            lines in the feed (default %u)\n"
            "  --deadline SECONDS   bound of the whole run (default 60 + 600 per million)\n"
            "  --json FILE          results (default tests/bench/results/import.json)\n"
            "  --broker-log-level L schakeld's log level (default warn)\n"
            "  --keep               keep the temporary folder and name it\n",
            IMPORT_DEFAULT_COUNT);
}

/* Returns 0 to run, 1 for --help, 2 on a usage error. */
static int import_parse_args(int argc, char **argv, import_options_t *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (strcmp(a, "--help") == 0)
            return 1;
        if (strcmp(a, "--keep") == 0) {
            o->keep = 1;
            continue;
        }
        if (value == NULL) {
            fprintf(stderr, "bench_import: %s wants a value\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--count") == 0) {
            errno = 0;
            unsigned long long n = strtoull(value, &end, 10);
            if (errno != 0 || *end != '\0' || n == 0 || n > IMPORT_MAX_COUNT) {
                fprintf(stderr, "bench_import: --count wants 1..%u\n", IMPORT_MAX_COUNT);
                return 2;
            }
            o->count = n;
        } else if (strcmp(a, "--deadline") == 0) {
            o->deadline_s = strtod(value, &end);
            if (*end != '\0' || o->deadline_s <= 0) {
                fprintf(stderr, "bench_import: --deadline wants seconds\n");
                return 2;
            }
        } else if (strcmp(a, "--json") == 0) {
            o->json_path = value;
        } else if (strcmp(a, "--broker-log-level") == 0) {
            o->log_level = value;
        } else {
            fprintf(stderr, "bench_import: unknown option %s\n", a);
            return 2;
        }
    }
    if (o->deadline_s == 0)
        o->deadline_s = 60.0 + 600.0 * (double)o->count / 1e6;
    return 0;
}

/* ------------------------------------------------------------------ the feed */

static const char import_policy[] =
    "# policy of the import benchmark: bron imports, ontvanger receives\n"
    "version: 1\n"
    "partners:\n"
    "  - id: bron\n"
    "    name: Bench importing partner\n"
    "  - id: ontvanger\n"
    "    name: Bench recipient partner\n"
    "principals:\n"
    "  - id: " IMPORT_PUBLISHER "\n    role: system\n    key_file: keys/bron-import.pub\n"
    "  - id: " IMPORT_RECIPIENT "\n    role: system\n    key_file: keys/ontvanger-systeem.pub\n"
    "rules:\n"
    "  - id: bench-import\n"
    "    from: [bron]\n"
    "    to: [ontvanger]\n"
    "    kinds: [bench-melding]\n"
    "    themes: [overlast]\n"
    "    areas: [\"*\"]\n"
    "    purpose: \"Benchmark: a bulk feed\"\n"
    "    legal_basis: \"None: synthetic test data\"\n"
    "    fields: [area, address, severity, observed_at, summary, source_ref]\n"
    "    retention: 365d\n";

/* N lines of a nightly export, each a different signal (~330 bytes). */
static int import_write_feed(import_bench_t *b)
{
    static const char *const severities[] = {"low", "medium", "high", "critical"};
    snprintf(b->feed, sizeof b->feed, "%s/feed.jsonl", b->env.dir);
    FILE *f = fopen(b->feed, "w");
    if (f == NULL) {
        bench_problem(&b->env, "cannot write %s: %s", b->feed, strerror(errno));
        return -1;
    }
    long long observed = (long long)time(NULL) - 86400;
    for (uint64_t i = 1; i <= b->opt.count; i++)
        fprintf(f,
                "{\"kind\":\"bench-melding\",\"theme\":\"overlast\",\"area\":\"BU0935%04u\","
                "\"address\":{\"postcode\":\"6211AB\",\"house_number\":%u},\"severity\":\"%s\","
                "\"observed_at\":%lld,\"summary\":\"Melding %" PRIu64
                " uit de nachtelijke export: geluidsoverlast en samenscholing bij de ingang, "
                "meerdere buurtbewoners melden het\",\"source_ref\":\"EXP-%" PRIu64 "\"}\n",
                (unsigned)(i % 100) + 100, (unsigned)(i % 99999) + 1, severities[i % 4],
                observed + (long long)(i % 3600), i, i);
    if (fclose(f) != 0) {
        bench_problem(&b->env, "cannot write %s", b->feed);
        return -1;
    }
    b->feed_bytes = bench_file_size(b->feed);
    return 0;
}

/* ------------------------------------------------------------------ running the CLI */

static const char *import_schakel_path(void)
{
    static char buf[PATH_MAX];
    const char *explicit_path = getenv("SCHAKEL");
    if (explicit_path != NULL && *explicit_path != '\0')
        return explicit_path;
    const char *build = getenv("BUILD");
    snprintf(buf, sizeof buf, "%s/schakel", build != NULL && *build != '\0' ? build : "build");
    return buf;
}

/* The environment of the CLI: ours, with the broker, its key and ours. */
static char **import_cli_env(const import_bench_t *b, char *storage, size_t len)
{
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **envp = calloc(n + 4, sizeof *envp);
    if (envp == NULL)
        return NULL;
    size_t used = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "SCHAKEL_", 8) != 0)
            envp[used++] = environ[i];
    char key[BENCH_PATH_MAX];
    bench_key_base(&b->env, IMPORT_PUBLISHER, key, sizeof key);
    int w = snprintf(storage, len, "SCHAKEL_BROKER=%s%cSCHAKEL_BROKER_KEY=%s%cSCHAKEL_KEY=%s.key",
                     b->env.endpoint, '\0', b->env.broker_pub, '\0', key);
    if (w < 0 || (size_t)w >= len) {
        free(envp);
        return NULL;
    }
    char *next = storage;
    for (int i = 0; i < 3; i++) { /* the three NUL-separated settings */
        envp[used++] = next;
        next += strlen(next) + 1;
    }
    envp[used] = NULL;
    return envp;
}

/* Wait for our child (by its pidfd) until the deadline; kill it then. */
static int import_wait_child(import_bench_t *b, pid_t pid, int pidfd)
{
    int status = -1;
    struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
    for (;;) {
        int64_t left = b->deadline_ms - bench_now_ms();
        if (left <= 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            bench_problem(&b->env, "schakel import did not finish before the deadline");
            return -1;
        }
        int r = poll(&pfd, 1, (int)(left > INT_MAX ? INT_MAX : left));
        if (r < 0 && errno != EINTR)
            break;
        if (r > 0)
            break;
    }
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Read "accepted N, refused N, already accepted N" from the CLI's stdout. */
static void import_read_summary(const char *path, import_run_result_t *r)
{
    FILE *f = fopen(path, "r");
    char line[256];
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        unsigned long long a, x, y;
        if (sscanf(line, "accepted %llu, refused %llu, already accepted %llu", &a, &x, &y) == 3) {
            r->accepted = a;
            r->refused = x;
            r->already = y;
            r->summary_read = 1;
        }
    }
    if (f != NULL)
        fclose(f);
}

/* Run `schakel import --quiet FEED` to its end; time it. */
static int import_run_cli(import_bench_t *b, const char *tag, import_run_result_t *r)
{
    char out_path[BENCH_PATH_MAX], err_path[BENCH_PATH_MAX], storage[3 * BENCH_PATH_MAX + 64];
    snprintf(out_path, sizeof out_path, "%s/%s.out", b->env.dir, tag);
    snprintf(err_path, sizeof err_path, "%s/%s.err", b->env.dir, tag);
    r->exit_status = -1;
    char **envp = import_cli_env(b, storage, sizeof storage);
    int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (envp == NULL || out < 0 || err < 0) {
        bench_problem(&b->env, "cannot prepare the CLI run (%s)", strerror(errno));
        free(envp);
        if (out >= 0)
            close(out);
        if (err >= 0)
            close(err);
        return -1;
    }
    const char *program = import_schakel_path();
    char *const argv[] = {(char *)"schakel", (char *)"import", (char *)"--quiet", b->feed, NULL};
    int64_t start = bench_now_ns();
    pid_t pid = fork();
    if (pid == 0)
        bench_exec_child(program, argv, envp, out, err);
    close(out);
    close(err);
    free(envp);
    int pidfd = pid > 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
    if (pid < 0 || pidfd < 0) {
        bench_problem(&b->env, "cannot start %s: %s", program, strerror(errno));
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        return -1;
    }
    r->exit_status = import_wait_child(b, pid, pidfd);
    r->seconds = (double)(bench_now_ns() - start) / 1e9;
    close(pidfd);
    import_read_summary(out_path, r);
    if (r->exit_status != 0 || !r->summary_read) {
        bench_problem(&b->env, "%s: schakel import exited with %d%s (see %s)", tag, r->exit_status,
                      r->summary_read ? "" : " without a summary", err_path);
        return -1;
    }
    return 0;
}

/* The recipient's backlog, as the broker counts it. */
static int64_t import_backlog(import_bench_t *b)
{
    schakel_client_t *client = NULL;
    uint64_t backlog = 0;
    if (bench_connect(&b->env, IMPORT_RECIPIENT, &client, IMPORT_CALL_TIMEOUT_MS) != 0)
        return -1;
    schakel_status_t st = schakel_backlog(client, &backlog, IMPORT_CALL_TIMEOUT_MS);
    if (st != SCHAKEL_OK)
        bench_problem(&b->env, "backlog query: %s (%s)", schakel_strerror(st),
                      schakel_last_error(client)->text);
    schakel_close(&client);
    return st == SCHAKEL_OK ? (int64_t)backlog : -1;
}

/* ------------------------------------------------------------------ the run */

static void import_run(import_bench_t *b)
{
    const char *principals[] = {IMPORT_PUBLISHER, IMPORT_RECIPIENT};
    if (bench_env_create(&b->env, principals, 2, import_policy, NULL) != 0 ||
        import_write_feed(b) != 0 ||
        bench_broker_start(&b->env, b->opt.log_level, IMPORT_START_TIMEOUT_MS) != 0)
        return;
    if (import_run_cli(b, "import", &b->first) != 0)
        return;
    b->backlog_after_first = import_backlog(b);
    if (b->first.accepted != b->opt.count || b->first.refused != 0 ||
        b->backlog_after_first != (int64_t)b->first.accepted) {
        bench_problem(&b->env,
                      "accepted %" PRIu64 " and refused %" PRIu64 " of %" PRIu64
                      " lines; the recipient's backlog is %" PRId64,
                      b->first.accepted, b->first.refused, b->opt.count, b->backlog_after_first);
        return;
    }
    if (import_run_cli(b, "rerun", &b->rerun) != 0)
        return;
    b->backlog_after_rerun = import_backlog(b);
    if (b->rerun.accepted != 0 || b->rerun.already != b->opt.count ||
        b->backlog_after_rerun != b->backlog_after_first) {
        bench_problem(&b->env,
                      "the rerun accepted %" PRIu64 " (already %" PRIu64
                      "); the backlog went from %" PRId64 " to %" PRId64,
                      b->rerun.accepted, b->rerun.already, b->backlog_after_first,
                      b->backlog_after_rerun);
        return;
    }
    b->completed = 1;
}

static double import_rate(const import_bench_t *b)
{
    return b->first.seconds > 0 ? (double)b->first.accepted / b->first.seconds : 0;
}

static void import_print_table(const import_bench_t *b)
{
    printf("bench_import: %s\n", b->completed ? "completed" : "did not complete");
    printf("  %-34s %" PRIu64 " (%lld bytes)\n", "lines in the feed", b->opt.count, b->feed_bytes);
    printf("  %-34s %.3f s\n", "import", b->first.seconds);
    printf("  %-34s %.0f\n", "lines/s", import_rate(b));
    printf("  %-34s %" PRIu64 ", %" PRIu64 "\n", "accepted, refused", b->first.accepted,
           b->first.refused);
    printf("  %-34s %.3f s (accepted %" PRIu64 ", already %" PRIu64 ")\n",
           "rerun of the finished file", b->rerun.seconds, b->rerun.accepted, b->rerun.already);
    if (b->env.problem[0] != '\0')
        printf("  %-34s %s\n", "problem", b->env.problem);
}

static int import_write_json(const import_bench_t *b)
{
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", b->opt.json_path);
    char *slash = strrchr(parent, '/');
    if (slash != NULL) {
        *slash = '\0';
        (void)mkdir(parent, 0755); /* the results folder; its parent must exist */
    }
    FILE *f = fopen(b->opt.json_path, "w");
    if (f == NULL) {
        fprintf(stderr, "bench_import: cannot write %s: %s\n", b->opt.json_path, strerror(errno));
        return -1;
    }
    fprintf(f, "{\n  \"bench\": \"import\",\n  \"completed\": %s,\n",
            b->completed ? "true" : "false");
    fprintf(f, "  \"lines\": %" PRIu64 ",\n  \"feed_bytes\": %lld,\n", b->opt.count, b->feed_bytes);
    fprintf(f, "  \"import_s\": %.3f,\n  \"import_lines_per_s\": %.1f,\n", b->first.seconds,
            import_rate(b));
    fprintf(f, "  \"accepted\": %" PRIu64 ",\n  \"refused\": %" PRIu64 ",\n", b->first.accepted,
            b->first.refused);
    fprintf(f, "  \"import_exit\": %d,\n  \"backlog_after_import\": %" PRId64 ",\n",
            b->first.exit_status, b->backlog_after_first);
    fprintf(f, "  \"rerun_s\": %.3f,\n  \"rerun_accepted\": %" PRIu64 ",\n", b->rerun.seconds,
            b->rerun.accepted);
    fprintf(f, "  \"rerun_already_accepted\": %" PRIu64 ",\n  \"rerun_exit\": %d,\n",
            b->rerun.already, b->rerun.exit_status);
    fprintf(f, "  \"backlog_after_rerun\": %" PRId64 ",\n  \"problem\": ", b->backlog_after_rerun);
    bench_json_string(f, b->env.problem);
    fprintf(f, "\n}\n");
    return fclose(f);
}

int main(int argc, char **argv)
{
    import_bench_t *b = calloc(1, sizeof *b);
    if (b == NULL)
        return 1;
    b->opt = (import_options_t){.count = IMPORT_DEFAULT_COUNT,
                                .json_path = "tests/bench/results/import.json",
                                .log_level = "warn"};
    int rc = import_parse_args(argc, argv, &b->opt);
    if (rc != 0) {
        import_usage(rc == 1 ? stdout : stderr);
        free(b);
        return rc == 1 ? 0 : 2;
    }
    b->env.broker_pidfd = -1;
    b->backlog_after_first = b->backlog_after_rerun = -1;
    b->deadline_ms = bench_now_ms() + (int64_t)(b->opt.deadline_s * 1000.0);
    printf("bench_import: %" PRIu64 " lines, deadline %.0f s\n", b->opt.count, b->opt.deadline_s);
    fflush(stdout);
    import_run(b);
    if (b->env.broker_pid > 0)
        (void)bench_broker_stop(&b->env, IMPORT_STOP_TIMEOUT_MS);
    import_print_table(b);
    int json_rc = import_write_json(b);
    bench_env_remove(&b->env, b->opt.keep);
    int ok = b->completed && json_rc == 0;
    free(b);
    return ok ? 0 : 1;
}
