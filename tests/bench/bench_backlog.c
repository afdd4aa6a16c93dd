/*
 * bench_backlog.c — N signals queued for a partner that is not connected:
 * the broker's memory while the backlog waits, and the drain on reconnect.
 *
 * Owns a temporary folder under /tmp (keys, policy, config, store, broker
 * log) and the one schakeld it starts there on a run-time loopback port; it
 * ends only that PID. Trusts nothing the broker sends: every delivery is
 * checked against what the broker accepted, in publish order. Bounded by a
 * deadline. Exit status: 0 when the run completed and the backlog drained
 * in order, 1 otherwise (deadline, broker failure, wrong drain), 2 on usage.
 */
/* mkdtemp, nftw, pipe2 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "keys.h"
#include "schakel.h"
#include "schakel_limits.h"
#include "wire.h"

extern char **environ;

#define BACKLOG_DEFAULT_COUNT 1000000u
#define BACKLOG_MAX_COUNT 100000000u
/* One serialized Signal: "about 1 KiB", and still 256 of them fit one frame. */
#define BACKLOG_DEFAULT_ITEM_BYTES 1000u
#define BACKLOG_MIN_ITEM_BYTES 200u
#define BACKLOG_MAX_PUBLISHERS 2u
#define BACKLOG_RSS_LIMIT_KIB (100L * 1024L) /* the bound: 100 MiB */
#define BACKLOG_DRAIN_TARGET 20000.0         /* deliveries/s, the target of a later issue */
#define BACKLOG_SAMPLE_MS 50                 /* RSS sampling interval */
#define BACKLOG_MILESTONES 10                /* RSS samples at every 10% of each phase */
#define BACKLOG_MAX_SAMPLES (4 * BACKLOG_MILESTONES + 8)
#define BACKLOG_START_TIMEOUT_MS 15000
#define BACKLOG_STOP_TIMEOUT_MS 60000  /* SIGTERM includes a WAL checkpoint */
#define BACKLOG_CALL_TIMEOUT_MS 60000  /* one publish, connect or backlog query at most */
#define BACKLOG_SILENCE_LIMIT_MS 30000 /* no delivery this long while some are owed: give up */
#define BACKLOG_PUBLISH_ATTEMPTS 3
#define BACKLOG_REF_BYTES 32
#define BACKLOG_FRAME_OVERHEAD 128u /* Frame version, Publish header, message id, signature */
#define BACKLOG_RECIPIENT "ontvanger/systeem"

static const char *const backlog_publisher_ids[BACKLOG_MAX_PUBLISHERS] = {"bron/publisher-1",
                                                                          "bron/publisher-2"};

static const char backlog_summary_words[] =
    "Bij herhaling overlast en vermoedelijke hennepteelt gemeld op dit adres; "
    "buurtbewoners noemen stankoverlast, verduisterde ramen en veel bezoek in de nacht. ";

static volatile sig_atomic_t backlog_interrupted;

/* ------------------------------------------------------------------ types */

typedef struct backlog_options {
    uint64_t count;
    unsigned publishers;
    unsigned window;
    unsigned item_bytes;
    double deadline_s; /* 0: derived from count */
    const char *json_path;
    const char *log_level;
    int keep;
} backlog_options_t;

typedef struct proc_mem {
    long rss_kib, hwm_kib, anon_kib, file_kib, shmem_kib;
} proc_mem_t;

enum backlog_phase { PHASE_START, PHASE_PUBLISH, PHASE_QUEUED, PHASE_DRAIN, PHASE_DONE, PHASE_N };

static const char *const backlog_phase_names[PHASE_N] = {"start", "publish", "queued", "drain",
                                                         "done"};

typedef struct mem_sample {
    int phase;
    uint64_t progress; /* items accepted (publish) or delivered (drain) */
    double at_s;       /* since the bench started */
    proc_mem_t mem;
} mem_sample_t;

/* One accepted item, as the publisher learnt it from Accepted. */
typedef struct expected_item {
    uint64_t item_seq;
    uint8_t message_id[SCHAKEL_MESSAGE_ID_BYTES];
    uint32_t item_index;
    uint32_t publisher; /* 1-based, as in source_ref */
    uint64_t counter;   /* the publisher's running item number, as in source_ref */
} expected_item_t;

typedef struct backlog_results {
    int completed; /* every phase ran to its end */
    /* publish */
    uint64_t published, publishes;
    double publish_s;
    proc_mem_t queued;
    double rss_growth_per_msg, anon_growth_per_msg; /* bytes per queued message */
    int growth_known;
    long long store_bytes, wal_bytes, shm_bytes, log_bytes, store_bytes_drained;
    double cpu_publish_s, cpu_drain_s;
    /* drain */
    int drain_ran;
    double connect_ms, first_delivery_ms, drain_s, drain_rate;
    uint64_t delivered, distinct, out_of_order, seq_not_increasing, duplicates, unknown,
        content_errors, missing;
    int64_t backlog_before, backlog_after; /* -1: not known */
    proc_mem_t drained;
    long drain_peak_rss_kib, publish_peak_rss_kib;
    int broker_exit;
    int in_order;
} backlog_results_t;

typedef struct bench {
    backlog_options_t opt;
    int64_t started_ms, deadline_ms;
    char dir[64];
    char config_path[128], policy_path[128], store_path[128], log_path[128], broker_pub[128];
    pid_t broker_pid;
    int broker_pidfd;
    char endpoint[128];
    /* every item is this signal with its own source_ref */
    size_t item_bytes, batch, summary_len;
    char summary[SCHAKEL_MAX_SUMMARY_LEN + 1];
    int64_t observed_at;
    /* shared with the publisher and sampler threads */
    atomic_uint_fast64_t accepted;
    atomic_uint_fast64_t drained;
    atomic_int phase;
    atomic_int stop; /* deadline, interrupt or failure: every loop winds down */
    atomic_int sampler_run;
    pthread_t sampler;
    int sampler_started;
    pthread_mutex_t lock; /* guards samples, peaks and problem */
    mem_sample_t samples[BACKLOG_MAX_SAMPLES];
    size_t n_samples;
    long peak_rss_kib[PHASE_N];
    char problem[512]; /* the first thing that went wrong */
    /* the accepted items in publish (item seq) order */
    expected_item_t *expected;
    uint64_t n_expected;
    backlog_results_t res;
} bench_t;

typedef struct publisher {
    bench_t *bench;
    unsigned number; /* 1-based */
    const char *principal;
    schakel_client_t *client;
    uint64_t count;           /* items this publisher sends */
    expected_item_t *records; /* filled in accept order */
    uint64_t n_records, publishes;
    pthread_t thread;
    int started;
} publisher_t;

/* Progress of the drain check. */
typedef struct drain_state {
    uint8_t *seen;      /* one bit per expected item */
    int64_t last_index; /* publish-order position of the previous new item, -1 at first */
    uint64_t last_seq;
} drain_state_t;

/* ------------------------------------------------------------------ small helpers */

static int64_t backlog_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double backlog_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void backlog_problem(bench_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Keep the first problem (later ones are usually its consequences) and make
 * every loop stop. */
static void backlog_problem(bench_t *b, const char *fmt, ...)
{
    pthread_mutex_lock(&b->lock);
    if (b->problem[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b->problem, sizeof b->problem, fmt, ap);
        va_end(ap);
        fprintf(stderr, "bench_backlog: %s\n", b->problem);
    }
    pthread_mutex_unlock(&b->lock);
    atomic_store(&b->stop, 1);
}

/* True once the deadline passed or the run was interrupted; says so once. */
static int backlog_out_of_time(bench_t *b)
{
    if (atomic_load(&b->stop))
        return 1;
    if (backlog_interrupted) {
        backlog_problem(b, "interrupted");
        return 1;
    }
    if (backlog_now_ms() >= b->deadline_ms) {
        backlog_problem(b,
                        "deadline of %.0f s reached: %" PRIu64 " of %" PRIu64
                        " items published, %" PRIu64 " drained",
                        b->opt.deadline_s, (uint64_t)atomic_load(&b->accepted), b->opt.count,
                        (uint64_t)atomic_load(&b->drained));
        return 1;
    }
    return 0;
}

/* Timeout for one blocking call: what is left until the deadline, capped. */
static int backlog_call_timeout(const bench_t *b, int cap_ms)
{
    int64_t left = b->deadline_ms - backlog_now_ms();
    if (left <= 0)
        return 0;
    return left < cap_ms ? (int)left : cap_ms;
}

static int backlog_write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            return -1;
        }
        done += (size_t)n;
    }
    return close(fd);
}

static long long backlog_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

static int backlog_remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return type == FTW_DP ? rmdir(path) : unlink(path);
}

/* ------------------------------------------------------------------ options */

static void backlog_usage(FILE *out)
{
    fprintf(out,
            "usage: bench_backlog [--count N] [--publishers 1|2] [--window W] [--item-bytes B]\n"
            "                     [--deadline SECONDS] [--json FILE] [--broker-log-level L] "
            "[--keep]\n"
            "  --count N            signals to queue (default %u)\n"
            "  --publishers P       publisher connections, 1 or 2 (default 2)\n"
            "  --window W           the recipient's Flow window, 1..%u (default %u)\n"
            "  --item-bytes B       serialized size of one signal (default %u)\n"
            "  --deadline S         give up after S seconds (default 60 + 840 per million)\n"
            "  --json FILE          results (default tests/bench/results/backlog.json)\n"
            "  --broker-log-level L schakeld --log-level (default info, as deployed)\n"
            "  --keep               keep the temporary folder (store, log) and name it\n"
            "environment: SCHAKELD (the broker binary), else $BUILD/schakeld, else "
            "build/schakeld\n",
            BACKLOG_DEFAULT_COUNT, SCHAKEL_MAX_WINDOW, SCHAKEL_MAX_WINDOW,
            BACKLOG_DEFAULT_ITEM_BYTES);
}

static int backlog_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Returns 0 to run, 1 for --help, 2 on a usage error. */
static int backlog_parse_args(int argc, char **argv, backlog_options_t *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        uint64_t v = 0;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return 1;
        if (strcmp(a, "--keep") == 0) {
            o->keep = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "bench_backlog: %s needs a value (or is unknown)\n", a);
            return 2;
        }
        const char *value = argv[++i];
        int bad = 0;
        if (strcmp(a, "--count") == 0) {
            bad = backlog_parse_u64(value, 1, BACKLOG_MAX_COUNT, &o->count);
        } else if (strcmp(a, "--publishers") == 0) {
            bad = backlog_parse_u64(value, 1, BACKLOG_MAX_PUBLISHERS, &v);
            o->publishers = (unsigned)v;
        } else if (strcmp(a, "--window") == 0) {
            bad = backlog_parse_u64(value, 1, SCHAKEL_MAX_WINDOW, &v);
            o->window = (unsigned)v;
        } else if (strcmp(a, "--item-bytes") == 0) {
            bad = backlog_parse_u64(value, BACKLOG_MIN_ITEM_BYTES, SCHAKEL_MAX_ITEM_BYTES, &v);
            o->item_bytes = (unsigned)v;
        } else if (strcmp(a, "--deadline") == 0) {
            bad = backlog_parse_u64(value, 1, 86400, &v);
            o->deadline_s = (double)v;
        } else if (strcmp(a, "--json") == 0) {
            o->json_path = value;
        } else if (strcmp(a, "--broker-log-level") == 0) {
            o->log_level = value;
        } else {
            fprintf(stderr, "bench_backlog: unknown option %s\n", a);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "bench_backlog: %s %s is out of range\n", a, value);
            return 2;
        }
    }
    if (o->deadline_s == 0)
        o->deadline_s = 60.0 + 840.0 * (double)o->count / 1e6;
    return 0;
}

/* ------------------------------------------------------------------ environment */

static void backlog_key_base(const bench_t *b, const char *principal, char *out, size_t len)
{
    char name[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    snprintf(name, sizeof name, "%s", principal);
    for (char *p = name; *p != '\0'; p++)
        if (*p == '/')
            *p = '-';
    snprintf(out, len, "%s/keys/%s", b->dir, name);
}

static int backlog_write_policy(bench_t *b)
{
    char text[4096];
    int n = snprintf(
        text, sizeof text,
        "# policy of one backlog benchmark: bron publishes, ontvanger receives (and is away)\n"
        "version: 1\n"
        "partners:\n"
        "  - id: bron\n"
        "    name: Bench publisher partner\n"
        "  - id: ontvanger\n"
        "    name: Bench recipient partner\n"
        "principals:\n"
        "  - id: %s\n    role: system\n    key_file: keys/bron-publisher-1.pub\n"
        "  - id: %s\n    role: system\n    key_file: keys/bron-publisher-2.pub\n"
        "  - id: " BACKLOG_RECIPIENT "\n    role: system\n"
        "    key_file: keys/ontvanger-systeem.pub\n"
        "rules:\n"
        "  - id: bench-backlog\n"
        "    from: [bron]\n"
        "    to: [ontvanger]\n"
        "    kinds: [bench-signaal]\n"
        "    themes: [overlast]\n"
        "    areas: [\"*\"]\n"
        "    purpose: \"Benchmark: a backlog for a partner that is away\"\n"
        "    legal_basis: \"None: synthetic test data\"\n"
        "    fields: [area, address, subject, grounds, severity, observed_at, summary, "
        "source_ref]\n"
        "    retention: 365d\n",
        backlog_publisher_ids[0], backlog_publisher_ids[1]);
    if (n < 0 || (size_t)n >= sizeof text)
        return -1;
    return backlog_write_file(b->policy_path, text, 0644);
}

static int backlog_env_create(bench_t *b)
{
    char path[256], err[256];
    snprintf(b->dir, sizeof b->dir, "/tmp/schakel-bench-XXXXXX");
    if (mkdtemp(b->dir) == NULL) {
        backlog_problem(b, "mkdtemp: %s", strerror(errno));
        b->dir[0] = '\0';
        return -1;
    }
    snprintf(b->config_path, sizeof b->config_path, "%s/schakeld.yaml", b->dir);
    snprintf(b->policy_path, sizeof b->policy_path, "%s/policy.yaml", b->dir);
    snprintf(b->store_path, sizeof b->store_path, "%s/store.db", b->dir);
    snprintf(b->log_path, sizeof b->log_path, "%s/schakeld.log", b->dir);
    snprintf(b->broker_pub, sizeof b->broker_pub, "%s/keys/broker.pub", b->dir);
    snprintf(path, sizeof path, "%s/keys", b->dir);
    if (mkdir(path, 0700) != 0) {
        backlog_problem(b, "mkdir %s: %s", path, strerror(errno));
        return -1;
    }
    const char *principals[] = {"broker", backlog_publisher_ids[0], backlog_publisher_ids[1],
                                BACKLOG_RECIPIENT};
    for (size_t i = 0; i < sizeof principals / sizeof principals[0]; i++) {
        backlog_key_base(b, principals[i], path, sizeof path);
        if (keys_generate(path, err, sizeof err) != 0) {
            backlog_problem(b, "keys_generate %s: %s", path, err);
            return -1;
        }
    }
    snprintf(path, sizeof path, "%s/keys/store.key", b->dir);
    if (keys_write_symmetric(path, "store key of one backlog benchmark", err, sizeof err) != 0) {
        backlog_problem(b, "store key %s: %s", path, err);
        return -1;
    }
    const char *config = "# schakeld configuration of one backlog benchmark\n"
                         "listen: tcp://127.0.0.1:*\n"
                         "key_file: keys/broker.key\n"
                         "store_key_file: keys/store.key\n"
                         "policy: policy.yaml\n"
                         "store: store.db\n";
    if (backlog_write_policy(b) != 0 || backlog_write_file(b->config_path, config, 0644) != 0) {
        backlog_problem(b, "cannot write the policy or config in %s: %s", b->dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ broker process */

static const char *backlog_schakeld_path(void)
{
    static char buf[PATH_MAX];
    const char *explicit_path = getenv("SCHAKELD");
    if (explicit_path != NULL && *explicit_path != '\0')
        return explicit_path;
    const char *build = getenv("BUILD");
    snprintf(buf, sizeof buf, "%s/schakeld", build != NULL && *build != '\0' ? build : "build");
    return buf;
}

/* In the child between fork and exec: async-signal-safe calls only. */
static void backlog_exec_broker(const char *program, char *const argv[], int ready_w, int log_fd)
{
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0)
        _exit(126);
    if (ready_w == 3) {
        if (fcntl(3, F_SETFD, 0) < 0)
            _exit(126);
    } else if (dup2(ready_w, 3) < 0) {
        _exit(126);
    }
    syscall(SYS_close_range, 4u, ~0u, 0u);
    execve(program, argv, environ);
    _exit(127);
}

/* Wait for the child to exit within timeout_ms. Returns its waitpid status,
 * or -1 while it still runs. */
static int backlog_wait_exit(const bench_t *b, int timeout_ms)
{
    int64_t deadline = backlog_now_ms() + timeout_ms;
    for (;;) {
        int status;
        pid_t r = waitpid(b->broker_pid, &status, WNOHANG);
        if (r == b->broker_pid)
            return status;
        if (r < 0 && errno != EINTR)
            return -1;
        int64_t left = deadline - backlog_now_ms();
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = b->broker_pidfd, .events = POLLIN};
        if (b->broker_pidfd >= 0)
            (void)poll(&p, 1, (int)left);
        else /* no pidfd (old kernel): look again shortly */
            (void)poll(NULL, 0, left < 20 ? (int)left : 20);
    }
}

/* Read the READY line from the pipe, watching the process. */
static int backlog_await_ready(bench_t *b, int ready_r)
{
    char line[256] = "";
    size_t used = 0;
    int64_t deadline = backlog_now_ms() + BACKLOG_START_TIMEOUT_MS;
    while (strchr(line, '\n') == NULL) {
        int64_t left = deadline - backlog_now_ms();
        struct pollfd p[2] = {{.fd = ready_r, .events = POLLIN},
                              {.fd = b->broker_pidfd, .events = POLLIN}};
        if (left <= 0 || used == sizeof line - 1) {
            backlog_problem(b, "schakeld gave no READY line within %d ms (see %s)",
                            BACKLOG_START_TIMEOUT_MS, b->log_path);
            return -1;
        }
        if (poll(p, 2, (int)left) < 0 && errno != EINTR)
            return -1;
        if (p[0].revents) {
            ssize_t got = read(ready_r, line + used, sizeof line - 1 - used);
            if (got <= 0) {
                backlog_problem(b, "schakeld closed its ready fd without a READY line (see %s)",
                                b->log_path);
                return -1;
            }
            used += (size_t)got;
        } else if (p[1].revents) {
            backlog_problem(b, "schakeld exited before it was ready (see %s)", b->log_path);
            return -1;
        }
        line[used] = '\0';
    }
    *strchr(line, '\n') = '\0';
    if (strncmp(line, "READY tcp://127.0.0.1:", 22) != 0) {
        backlog_problem(b, "unexpected ready line \"%.100s\"", line);
        return -1;
    }
    snprintf(b->endpoint, sizeof b->endpoint, "%.100s", line + 6);
    return 0;
}

static int backlog_broker_start(bench_t *b)
{
    const char *program = backlog_schakeld_path();
    if (access(program, X_OK) != 0) {
        backlog_problem(b, "%s is not an executable (%s); run make, or set SCHAKELD", program,
                        strerror(errno));
        return -1;
    }
    int log_fd = open(b->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    int pipefd[2];
    if (log_fd < 0 || pipe2(pipefd, O_CLOEXEC) != 0) {
        backlog_problem(b, "cannot open the broker log or a pipe: %s", strerror(errno));
        if (log_fd >= 0)
            close(log_fd);
        return -1;
    }
    char *const argv[] = {(char *)(uintptr_t)program,
                          "--config",
                          b->config_path,
                          "--log-level",
                          (char *)(uintptr_t)b->opt.log_level,
                          "--ready-fd",
                          "3",
                          NULL};
    pid_t pid = fork();
    if (pid == 0)
        backlog_exec_broker(program, argv, pipefd[1], log_fd);
    close(pipefd[1]);
    close(log_fd);
    if (pid < 0) {
        close(pipefd[0]);
        backlog_problem(b, "fork: %s", strerror(errno));
        return -1;
    }
    b->broker_pid = pid;
    b->broker_pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    int rc = backlog_await_ready(b, pipefd[0]);
    close(pipefd[0]);
    return rc;
}

/* SIGTERM our broker (by its PID) and wait; SIGKILL if it does not stop in
 * time. Returns its exit code, 128+signal, or -1. */
static int backlog_broker_stop(bench_t *b)
{
    if (b->broker_pid <= 0)
        return -1;
    kill(b->broker_pid, SIGTERM);
    int status = backlog_wait_exit(b, BACKLOG_STOP_TIMEOUT_MS);
    int code = -1;
    if (status == -1) {
        fprintf(stderr, "bench_backlog: schakeld (pid %ld) ignored SIGTERM; killing it\n",
                (long)b->broker_pid);
        kill(b->broker_pid, SIGKILL);
        (void)backlog_wait_exit(b, BACKLOG_STOP_TIMEOUT_MS);
    } else if (WIFEXITED(status)) {
        code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        code = 128 + WTERMSIG(status);
    }
    if (b->broker_pidfd >= 0)
        close(b->broker_pidfd);
    b->broker_pidfd = -1;
    b->broker_pid = 0;
    return code;
}

/* VmRSS, VmHWM, RssAnon, RssFile, RssShmem of a process, in KiB. */
static int backlog_read_mem(pid_t pid, proc_mem_t *m)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    memset(m, 0, sizeof *m);
    while (fgets(line, sizeof line, f) != NULL) {
        long v = 0;
        if (sscanf(line, "VmRSS: %ld", &v) == 1)
            m->rss_kib = v;
        else if (sscanf(line, "VmHWM: %ld", &v) == 1)
            m->hwm_kib = v;
        else if (sscanf(line, "RssAnon: %ld", &v) == 1)
            m->anon_kib = v;
        else if (sscanf(line, "RssFile: %ld", &v) == 1)
            m->file_kib = v;
        else if (sscanf(line, "RssShmem: %ld", &v) == 1)
            m->shmem_kib = v;
    }
    fclose(f);
    return m->rss_kib > 0 ? 0 : -1;
}

/* User + system CPU seconds of a process so far (/proc/PID/stat fields 14, 15). */
static double backlog_read_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long long utime = 0, stime = 0;
    if (p == NULL || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                            &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* ------------------------------------------------------------------ memory sampler */

static void backlog_add_sample(bench_t *b, int phase, uint64_t progress, const proc_mem_t *m)
{
    pthread_mutex_lock(&b->lock);
    if (b->n_samples < BACKLOG_MAX_SAMPLES)
        b->samples[b->n_samples++] = (mem_sample_t){
            .phase = phase,
            .progress = progress,
            .at_s = (double)(backlog_now_ms() - b->started_ms) / 1000.0,
            .mem = *m,
        };
    pthread_mutex_unlock(&b->lock);
}

/* A sample now, for the record at the end of a phase. */
static int backlog_sample_now(bench_t *b, int phase, uint64_t progress, proc_mem_t *m)
{
    if (backlog_read_mem(b->broker_pid, m) != 0)
        return -1;
    pthread_mutex_lock(&b->lock);
    if (m->rss_kib > b->peak_rss_kib[phase])
        b->peak_rss_kib[phase] = m->rss_kib;
    pthread_mutex_unlock(&b->lock);
    backlog_add_sample(b, phase, progress, m);
    return 0;
}

/* Reads the broker's memory every BACKLOG_SAMPLE_MS: the peak per phase, and
 * one sample each time a phase passes another tenth of its work. */
static void *backlog_sampler_run(void *arg)
{
    bench_t *b = arg;
    uint64_t step = b->opt.count / BACKLOG_MILESTONES > 0 ? b->opt.count / BACKLOG_MILESTONES : 1;
    uint64_t next_publish = step, next_drain = step;
    while (atomic_load(&b->sampler_run)) {
        proc_mem_t m;
        if (backlog_read_mem(b->broker_pid, &m) == 0) {
            int phase = atomic_load(&b->phase);
            uint64_t accepted = atomic_load(&b->accepted), drained = atomic_load(&b->drained);
            pthread_mutex_lock(&b->lock);
            if (m.rss_kib > b->peak_rss_kib[phase])
                b->peak_rss_kib[phase] = m.rss_kib;
            pthread_mutex_unlock(&b->lock);
            if (phase == PHASE_PUBLISH && accepted >= next_publish && accepted < b->opt.count) {
                backlog_add_sample(b, phase, accepted, &m);
                while (next_publish <= accepted)
                    next_publish += step;
            } else if (phase == PHASE_DRAIN && drained >= next_drain && drained < b->opt.count) {
                backlog_add_sample(b, phase, drained, &m);
                while (next_drain <= drained)
                    next_drain += step;
            }
        }
        struct timespec pause = {0, BACKLOG_SAMPLE_MS * 1000000L};
        nanosleep(&pause, NULL); /* a sampling interval, not a synchronisation */
    }
    return NULL;
}

/* ------------------------------------------------------------------ the signal */

static void backlog_fill_signal(const bench_t *b, schakel_signal_t *s, const char *source_ref)
{
    memset(s, 0, sizeof *s);
    s->kind = "bench-signaal";
    s->theme = "overlast";
    s->area = "BU09350101";
    s->postcode = "6211AB";
    s->house_number = 12;
    s->subject = "pseudo:bench-0001";
    s->grounds = "Herhaalde meldingen van buren en een eigen waarneming ter plaatse (benchmark).";
    s->severity = SCHAKEL_SEVERITY_MEDIUM;
    s->observed_at = b->observed_at;
    s->summary = b->summary;
    s->source_ref = source_ref;
}

static char *backlog_lend(const char *text)
{
    return (char *)(uintptr_t)text; /* packed only, never written */
}

/* Serialized size of one item as libschakel encodes it (same fields). */
static size_t backlog_item_size(const schakel_signal_t *in, const char *sender)
{
    Schakel__Signal s = SCHAKEL__SIGNAL__INIT;
    Schakel__Address address = SCHAKEL__ADDRESS__INIT;
    s.sender = backlog_lend(sender);
    s.kind = backlog_lend(in->kind);
    s.theme = backlog_lend(in->theme);
    s.area = backlog_lend(in->area);
    address.postcode = backlog_lend(in->postcode);
    address.has_house_number = 1;
    address.house_number = in->house_number;
    s.address = &address;
    s.subject = backlog_lend(in->subject);
    s.grounds = backlog_lend(in->grounds);
    s.has_severity = 1;
    s.severity = (Schakel__Severity)in->severity;
    s.has_observed_at = 1;
    s.observed_at = in->observed_at;
    s.summary = backlog_lend(in->summary);
    s.source_ref = backlog_lend(in->source_ref);
    size_t len = 0;
    uint8_t *bytes = wire_encode_signal(&s, &len);
    free(bytes);
    return bytes != NULL ? len : 0;
}

static void backlog_format_ref(char *out, unsigned publisher, uint64_t counter)
{
    snprintf(out, BACKLOG_REF_BYTES, "bench:p%u:%012" PRIu64, publisher, counter);
}

/* Choose the summary length that makes every item opt.item_bytes long (or
 * just under), and the batch size that keeps a Publish under the frame
 * limit. */
static int backlog_size_signal(bench_t *b)
{
    char ref[BACKLOG_REF_BYTES];
    schakel_signal_t s;
    size_t words = strlen(backlog_summary_words), best = 0, best_size = 0;
    b->observed_at = (int64_t)time(NULL) - 60;
    backlog_format_ref(ref, 1, 0);
    for (size_t len = 0; len <= SCHAKEL_MAX_SUMMARY_LEN; len++) {
        for (size_t i = 0; i < len; i++)
            b->summary[i] = backlog_summary_words[i % words];
        b->summary[len] = '\0';
        backlog_fill_signal(b, &s, ref);
        size_t size = backlog_item_size(&s, backlog_publisher_ids[0]);
        if (size == 0 || size > b->opt.item_bytes)
            break;
        best = len;
        best_size = size;
    }
    if (best_size == 0) {
        backlog_problem(b, "--item-bytes %u is smaller than a signal without summary",
                        b->opt.item_bytes);
        return -1;
    }
    b->summary[best] = '\0';
    b->summary_len = best;
    b->item_bytes = best_size;
    size_t per_item = 1 + (best_size < 128 ? 1 : best_size < 16384 ? 2 : 3) + best_size;
    b->batch = SCHAKEL_MAX_ITEMS;
    while (b->batch > 1 && b->batch * per_item + BACKLOG_FRAME_OVERHEAD > SCHAKEL_MAX_FRAME_BYTES)
        b->batch--;
    return 0;
}

/* ------------------------------------------------------------------ publishing */

static int backlog_retryable(const schakel_client_t *client, schakel_status_t st)
{
    const schakel_error_t *e = schakel_last_error(client);
    return st == SCHAKEL_ERR_TIMEOUT ||
           (st == SCHAKEL_ERR_REFUSED && (e->reason == SCHAKEL__REASON__INTERNAL_ERROR ||
                                          e->reason == SCHAKEL__REASON__UNAVAILABLE));
}

/* One signed publish of n signals; retried with the same message id (the
 * broker answers a repeat with the original Accepted). */
static schakel_status_t backlog_publish_batch(publisher_t *p, const schakel_signal_t *signals,
                                              size_t n, const uint8_t id[16],
                                              schakel_item_result_t *results)
{
    schakel_status_t st = SCHAKEL_ERR_TIMEOUT;
    for (int attempt = 0; attempt < BACKLOG_PUBLISH_ATTEMPTS; attempt++) {
        int timeout = backlog_call_timeout(p->bench, BACKLOG_CALL_TIMEOUT_MS);
        if (timeout == 0)
            return SCHAKEL_ERR_TIMEOUT;
        st = schakel_publish(p->client, NULL, signals, n, id, NULL, results, NULL, timeout);
        if (st == SCHAKEL_OK || !backlog_retryable(p->client, st))
            break;
    }
    return st;
}

static int backlog_record_batch(publisher_t *p, const uint8_t id[16],
                                const schakel_item_result_t *results, size_t n, uint64_t first)
{
    for (size_t i = 0; i < n; i++) {
        if (results[i].recipients != 1) {
            backlog_problem(p->bench,
                            "item %zu of a publish by %s was queued for %u mailboxes, not 1", i,
                            p->principal, results[i].recipients);
            return -1;
        }
        expected_item_t *e = &p->records[p->n_records++];
        e->item_seq = results[i].seq;
        memcpy(e->message_id, id, SCHAKEL_MESSAGE_ID_BYTES);
        e->item_index = (uint32_t)i;
        e->publisher = p->number;
        e->counter = first + i;
    }
    return 0;
}

static void *backlog_publisher_run(void *arg)
{
    publisher_t *p = arg;
    bench_t *b = p->bench;
    schakel_signal_t signals[SCHAKEL_MAX_ITEMS];
    char refs[SCHAKEL_MAX_ITEMS][BACKLOG_REF_BYTES];
    schakel_item_result_t results[SCHAKEL_MAX_ITEMS];
    uint64_t sent = 0;
    while (sent < p->count && !backlog_out_of_time(b)) {
        size_t n = p->count - sent < b->batch ? (size_t)(p->count - sent) : b->batch;
        for (size_t i = 0; i < n; i++) {
            backlog_format_ref(refs[i], p->number, sent + i);
            backlog_fill_signal(b, &signals[i], refs[i]);
        }
        uint8_t id[SCHAKEL_MESSAGE_ID_BYTES];
        randombytes_buf(id, sizeof id);
        schakel_status_t st = backlog_publish_batch(p, signals, n, id, results);
        if (st != SCHAKEL_OK) {
            const schakel_error_t *e = schakel_last_error(p->client);
            if (!backlog_out_of_time(b))
                backlog_problem(b, "%s: publish after %" PRIu64 " items: %s %s: %s", p->principal,
                                sent, schakel_strerror(st), e->reason_name, e->text);
            break;
        }
        if (backlog_record_batch(p, id, results, n, sent) != 0)
            break;
        sent += n;
        p->publishes++;
        atomic_fetch_add(&b->accepted, n);
    }
    return NULL;
}

static int backlog_connect(bench_t *b, const char *principal, schakel_client_t **out)
{
    char base[256], key[300];
    schakel_error_t err;
    backlog_key_base(b, principal, base, sizeof base);
    snprintf(key, sizeof key, "%s.key", base);
    int timeout = backlog_call_timeout(b, BACKLOG_CALL_TIMEOUT_MS);
    schakel_status_t st = timeout > 0
                              ? schakel_connect(out, b->endpoint, b->broker_pub, key, timeout, &err)
                              : SCHAKEL_ERR_TIMEOUT;
    if (st != SCHAKEL_OK) {
        backlog_problem(b, "connect as %s to %s: %s (%s)", principal, b->endpoint,
                        schakel_strerror(st), timeout > 0 ? err.text : "deadline");
        return -1;
    }
    return 0;
}

static int backlog_compare_items(const void *x, const void *y)
{
    const expected_item_t *a = x, *c = y;
    return a->item_seq < c->item_seq ? -1 : a->item_seq > c->item_seq;
}

/* Every accepted item, in the order the broker accepted it (item seq). */
static int backlog_merge_records(bench_t *b, const publisher_t *pubs)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < b->opt.publishers; i++)
        total += pubs[i].n_records;
    b->expected = calloc(total > 0 ? total : 1, sizeof *b->expected);
    if (b->expected == NULL) {
        backlog_problem(b, "out of memory for %" PRIu64 " expected items", total);
        return -1;
    }
    for (unsigned i = 0; i < b->opt.publishers; i++) {
        memcpy(b->expected + b->n_expected, pubs[i].records,
               pubs[i].n_records * sizeof *pubs[i].records);
        b->n_expected += pubs[i].n_records;
    }
    qsort(b->expected, b->n_expected, sizeof *b->expected, backlog_compare_items);
    for (uint64_t i = 1; i < b->n_expected; i++) {
        if (b->expected[i].item_seq == b->expected[i - 1].item_seq) {
            backlog_problem(b, "the broker accepted two items as seq %" PRIu64,
                            b->expected[i].item_seq);
            return -1;
        }
    }
    return 0;
}

/* The publish phase: connect, publish from every publisher thread, then
 * measure the broker with the backlog queued. */
static int backlog_publish_all(bench_t *b, publisher_t *pubs)
{
    backlog_results_t *r = &b->res;
    for (unsigned i = 0; i < b->opt.publishers; i++) {
        publisher_t *p = &pubs[i];
        *p = (publisher_t){.bench = b, .number = i + 1, .principal = backlog_publisher_ids[i]};
        p->count = b->opt.count / b->opt.publishers + (i < b->opt.count % b->opt.publishers);
        p->records = calloc(p->count > 0 ? p->count : 1, sizeof *p->records);
        if (p->records == NULL || backlog_connect(b, p->principal, &p->client) != 0) {
            if (p->records == NULL)
                backlog_problem(b, "out of memory for the publish records");
            return -1;
        }
    }
    double cpu0 = backlog_read_cpu_s(b->broker_pid);
    double t0 = backlog_now_s();
    atomic_store(&b->phase, PHASE_PUBLISH);
    for (unsigned i = 0; i < b->opt.publishers; i++) {
        if (pthread_create(&pubs[i].thread, NULL, backlog_publisher_run, &pubs[i]) != 0) {
            backlog_problem(b, "cannot start publisher thread %u", i + 1);
            break;
        }
        pubs[i].started = 1;
    }
    for (unsigned i = 0; i < b->opt.publishers; i++) {
        if (pubs[i].started)
            pthread_join(pubs[i].thread, NULL);
        r->published += pubs[i].n_records;
        r->publishes += pubs[i].publishes;
    }
    r->publish_s = backlog_now_s() - t0;
    r->cpu_publish_s = backlog_read_cpu_s(b->broker_pid) - cpu0;
    atomic_store(&b->phase, PHASE_QUEUED);
    (void)backlog_sample_now(b, PHASE_QUEUED, r->published, &r->queued);
    r->store_bytes = backlog_file_size(b->store_path);
    char path[160];
    snprintf(path, sizeof path, "%s-wal", b->store_path);
    r->wal_bytes = backlog_file_size(path);
    snprintf(path, sizeof path, "%s-shm", b->store_path);
    r->shm_bytes = backlog_file_size(path);
    for (unsigned i = 0; i < b->opt.publishers; i++)
        schakel_close(&pubs[i].client);
    if (backlog_merge_records(b, pubs) != 0)
        return -1;
    return r->published == b->opt.count ? 0 : -1;
}

/* ------------------------------------------------------------------ drain */

static const expected_item_t *backlog_find(const bench_t *b, uint64_t item_seq)
{
    expected_item_t key = {.item_seq = item_seq};
    return bsearch(&key, b->expected, b->n_expected, sizeof *b->expected, backlog_compare_items);
}

/* The delivery is the item the broker accepted under this item seq, with
 * the fields the rule lets the recipient see. */
static int backlog_same_item(const bench_t *b, const expected_item_t *e,
                             const schakel_delivery_t *d)
{
    char ref[BACKLOG_REF_BYTES];
    backlog_format_ref(ref, e->publisher, e->counter);
    return memcmp(d->message_id, e->message_id, SCHAKEL_MESSAGE_ID_BYTES) == 0 &&
           d->item_index == e->item_index && d->sender != NULL &&
           strcmp(d->sender, backlog_publisher_ids[e->publisher - 1]) == 0 &&
           d->source_ref != NULL && strcmp(d->source_ref, ref) == 0 && d->summary != NULL &&
           strlen(d->summary) == b->summary_len && d->kind != NULL && d->theme != NULL;
}

static void backlog_note(char *first, size_t len, const char *what, uint64_t seq)
{
    if (first[0] == '\0')
        snprintf(first, len, "%s (delivery seq %" PRIu64 ")", what, seq);
}

static void backlog_check_delivery(bench_t *b, drain_state_t *ds, const schakel_delivery_t *d,
                                   char *first, size_t first_len)
{
    backlog_results_t *r = &b->res;
    r->delivered++;
    if (d->seq <= ds->last_seq) {
        r->seq_not_increasing++;
        backlog_note(first, first_len, "seq did not increase", d->seq);
    } else {
        ds->last_seq = d->seq;
    }
    const expected_item_t *e = backlog_find(b, d->item_seq);
    if (e == NULL) {
        r->unknown++;
        backlog_note(first, first_len, "an item seq the broker never accepted", d->seq);
        return;
    }
    uint64_t index = (uint64_t)(e - b->expected);
    if (!backlog_same_item(b, e, d)) {
        r->content_errors++;
        backlog_note(first, first_len, "delivery differs from the accepted item", d->seq);
    }
    if (ds->seen[index / 8] & (1u << (index % 8))) {
        r->duplicates++;
        backlog_note(first, first_len, "item delivered twice", d->seq);
        return;
    }
    ds->seen[index / 8] |= (uint8_t)(1u << (index % 8));
    r->distinct++;
    if ((int64_t)index != ds->last_index + 1) {
        r->out_of_order++;
        backlog_note(first, first_len, "item out of publish order", d->seq);
    }
    ds->last_index = (int64_t)index;
}

static int backlog_query_backlog(bench_t *b, schakel_client_t *client, int64_t *out)
{
    uint64_t backlog = 0;
    int timeout = backlog_call_timeout(b, BACKLOG_CALL_TIMEOUT_MS);
    schakel_status_t st =
        timeout > 0 ? schakel_backlog(client, &backlog, timeout) : SCHAKEL_ERR_TIMEOUT;
    if (st != SCHAKEL_OK) {
        backlog_problem(b, "backlog query: %s (%s)", schakel_strerror(st),
                        schakel_last_error(client)->text);
        return -1;
    }
    *out = (int64_t)backlog;
    return 0;
}

/* Receive, check and ack until every accepted item arrived. */
static void backlog_receive_all(bench_t *b, schakel_client_t *client, drain_state_t *ds, double t0)
{
    backlog_results_t *r = &b->res;
    char first[200] = "";
    while (r->distinct < b->n_expected && !backlog_out_of_time(b)) {
        schakel_delivery_t *d = NULL;
        int timeout = backlog_call_timeout(b, BACKLOG_SILENCE_LIMIT_MS);
        schakel_status_t st = schakel_receive(client, &d, timeout > 0 ? timeout : 1);
        if (st != SCHAKEL_OK) {
            if (!backlog_out_of_time(b))
                backlog_problem(b, "receive with %" PRIu64 " items still owed: %s (%s)",
                                b->n_expected - r->distinct, schakel_strerror(st),
                                schakel_last_error(client)->text);
            break;
        }
        if (r->delivered == 0)
            r->first_delivery_ms = (backlog_now_s() - t0) * 1000.0;
        backlog_check_delivery(b, ds, d, first, sizeof first);
        st = schakel_ack(client, d->seq);
        schakel_delivery_free(&d);
        if (st != SCHAKEL_OK) {
            backlog_problem(b, "ack: %s (%s)", schakel_strerror(st),
                            schakel_last_error(client)->text);
            break;
        }
        atomic_store(&b->drained, r->distinct);
    }
    if (first[0] != '\0')
        fprintf(stderr, "bench_backlog: first drain problem: %s\n", first);
}

/* The drain phase: connect the recipient, take everything with acks. */
static int backlog_drain(bench_t *b)
{
    backlog_results_t *r = &b->res;
    schakel_client_t *client = NULL;
    drain_state_t ds = {.last_index = -1};
    ds.seen = calloc(b->n_expected / 8 + 1, 1);
    if (ds.seen == NULL) {
        backlog_problem(b, "out of memory for the drain check");
        return -1;
    }
    double c0 = backlog_now_s();
    int rc = backlog_connect(b, BACKLOG_RECIPIENT, &client);
    r->connect_ms = (backlog_now_s() - c0) * 1000.0;
    if (rc == 0)
        rc = backlog_query_backlog(b, client, &r->backlog_before);
    if (rc == 0) {
        r->drain_ran = 1;
        double cpu0 = backlog_read_cpu_s(b->broker_pid);
        atomic_store(&b->phase, PHASE_DRAIN);
        double t0 = backlog_now_s();
        if (schakel_subscribe(client, b->opt.window) != SCHAKEL_OK)
            backlog_problem(b, "subscribe: %s", schakel_last_error(client)->text);
        else
            backlog_receive_all(b, client, &ds, t0);
        r->drain_s = backlog_now_s() - t0;
        r->drain_rate = r->drain_s > 0 ? (double)r->distinct / r->drain_s : 0;
        if (r->distinct == b->n_expected)
            (void)backlog_query_backlog(b, client, &r->backlog_after);
        r->cpu_drain_s = backlog_read_cpu_s(b->broker_pid) - cpu0;
        atomic_store(&b->phase, PHASE_DONE);
        (void)backlog_sample_now(b, PHASE_DONE, r->distinct, &r->drained);
        r->store_bytes_drained = backlog_file_size(b->store_path);
    }
    schakel_close(&client);
    free(ds.seen);
    r->missing = b->n_expected - r->distinct;
    return rc == 0 && r->distinct == b->n_expected ? 0 : -1;
}

/* ------------------------------------------------------------------ report */

static double backlog_mib(long kib)
{
    return (double)kib / 1024.0;
}

/* Bytes of memory per queued message, between the first milestone sample of
 * the publish phase and the sample with the whole backlog queued. */
static void backlog_growth(bench_t *b)
{
    backlog_results_t *r = &b->res;
    const mem_sample_t *from = NULL;
    for (size_t i = 0; i < b->n_samples && from == NULL; i++)
        if (b->samples[i].phase == PHASE_PUBLISH)
            from = &b->samples[i];
    if (from == NULL || r->published <= from->progress || r->queued.rss_kib == 0)
        return;
    double n = (double)(r->published - from->progress);
    r->rss_growth_per_msg = (double)(r->queued.rss_kib - from->mem.rss_kib) * 1024.0 / n;
    r->anon_growth_per_msg = (double)(r->queued.anon_kib - from->mem.anon_kib) * 1024.0 / n;
    r->growth_known = 1;
}

static void backlog_print_table(const bench_t *b)
{
    const backlog_results_t *r = &b->res;
    const char *rule = "------------------------------------------------------------------------"
                       "--------------";
    printf("\nSchakel backlog bench: %" PRIu64 " signals of %zu bytes, %u publisher(s), "
           "batches of %zu, window %u, broker log level %s\n%s\n",
           b->opt.count, b->item_bytes, b->opt.publishers, b->batch, b->opt.window,
           b->opt.log_level, rule);
    printf("%-22s %" PRIu64 " publishes, %" PRIu64 " items in %.1f s: %.1f publishes/s, %.0f "
           "items/s\n",
           "publish", r->publishes, r->published, r->publish_s,
           r->publish_s > 0 ? (double)r->publishes / r->publish_s : 0,
           r->publish_s > 0 ? (double)r->published / r->publish_s : 0);
    printf("%-22s VmRSS %.1f MiB, peak VmHWM %.1f MiB (anon %.1f, file %.1f, shmem %.1f MiB)\n",
           "broker, queued", backlog_mib(r->queued.rss_kib), backlog_mib(r->queued.hwm_kib),
           backlog_mib(r->queued.anon_kib), backlog_mib(r->queued.file_kib),
           backlog_mib(r->queued.shmem_kib));
    if (r->growth_known)
        printf("%-22s %+.2f bytes RSS (%+.2f anon) per queued message\n", "memory per message",
               r->rss_growth_per_msg, r->anon_growth_per_msg);
    printf("%-22s %.1f MiB store, %.1f MiB WAL, %.1f MiB shm; broker log %.1f MiB\n", "on disk",
           (double)r->store_bytes / 1048576.0, (double)r->wal_bytes / 1048576.0,
           (double)r->shm_bytes / 1048576.0, (double)r->log_bytes / 1048576.0);
    if (r->drain_ran) {
        printf("%-22s %.0f ms, backlog reported %" PRId64 "\n", "recipient connect", r->connect_ms,
               r->backlog_before);
        printf("%-22s %" PRIu64 " items in %.1f s: %.0f deliveries/s (first after %.0f ms)\n",
               "drain", r->distinct, r->drain_s, r->drain_rate, r->first_delivery_ms);
        printf("%-22s peak VmRSS %.1f MiB, after %.1f MiB, VmHWM %.1f MiB\n", "broker, drain",
               backlog_mib(r->drain_peak_rss_kib), backlog_mib(r->drained.rss_kib),
               backlog_mib(r->drained.hwm_kib));
        printf("%-22s %" PRIu64 " out of order, %" PRIu64 " seq not increasing, %" PRIu64
               " twice, %" PRIu64 " unknown, %" PRIu64 " altered, %" PRIu64
               " missing; backlog after %" PRId64 "\n",
               "drain check", r->out_of_order, r->seq_not_increasing, r->duplicates, r->unknown,
               r->content_errors, r->missing, r->backlog_after);
    }
    printf("%-22s publish %.1f s, drain %.1f s\n", "broker CPU", r->cpu_publish_s, r->cpu_drain_s);
    printf("%s\n%-42s %-16s %-14s %s\n", rule, "criterion", "value", "target", "result");
    printf("%-42s %-16.1f %-14s %s\n", "broker peak RSS, backlog queued (MiB)",
           backlog_mib(r->queued.hwm_kib), "< 100",
           r->queued.hwm_kib > 0 && r->queued.hwm_kib < BACKLOG_RSS_LIMIT_KIB &&
                   r->published == b->opt.count
               ? "met"
               : "not met");
    printf("%-42s %-16s %-14s %s\n", "backlog drains in order, each item once",
           r->in_order ? "yes" : "no", "yes", r->in_order ? "met" : "not met");
    printf("%-42s %-16.0f %-14s %s\n", "drain rate (deliveries/s)", r->drain_rate, ">= 20000",
           r->in_order && r->drain_rate >= BACKLOG_DRAIN_TARGET ? "met" : "not met");
    if (b->problem[0] != '\0')
        printf("problem: %s\n", b->problem);
    printf("%s\n", rule);
}

static void backlog_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void backlog_json_criteria(FILE *f, const bench_t *b, int rss_met, int rate_met)
{
    const backlog_results_t *r = &b->res;
    fprintf(f, "  \"criteria\": {\n");
    fprintf(f,
            "    \"peak_rss_under_100_mib\": {\"value_kib\": %ld, \"limit_kib\": %ld, "
            "\"met\": %s},\n",
            r->queued.hwm_kib, BACKLOG_RSS_LIMIT_KIB, rss_met ? "true" : "false");
    fprintf(f, "    \"drain_in_order\": {\"met\": %s},\n", r->in_order ? "true" : "false");
    fprintf(f, "    \"drain_rate\": {\"value\": %.1f, \"target\": %.0f, \"met\": %s}\n",
            r->drain_rate, BACKLOG_DRAIN_TARGET, rate_met ? "true" : "false");
    fprintf(f, "  },\n");
}

static void backlog_json_samples(FILE *f, const bench_t *b)
{
    fprintf(f, "  \"samples\": [\n");
    for (size_t i = 0; i < b->n_samples; i++) {
        const mem_sample_t *s = &b->samples[i];
        fprintf(f,
                "    {\"phase\": \"%s\", \"progress\": %" PRIu64 ", \"at_s\": %.2f, "
                "\"rss_kib\": %ld, \"hwm_kib\": %ld, \"anon_kib\": %ld, \"file_kib\": %ld, "
                "\"shmem_kib\": %ld}%s\n",
                backlog_phase_names[s->phase], s->progress, s->at_s, s->mem.rss_kib, s->mem.hwm_kib,
                s->mem.anon_kib, s->mem.file_kib, s->mem.shmem_kib,
                i + 1 < b->n_samples ? "," : "");
    }
    fprintf(f, "  ]\n");
}

/* One scalar per line at the top level, so that run.sh can read it with sed. */
static void backlog_json_scalars(FILE *f, const bench_t *b)
{
    const backlog_results_t *r = &b->res;
    double pub_rate = r->publish_s > 0 ? (double)r->published / r->publish_s : 0;
    double publishes_rate = r->publish_s > 0 ? (double)r->publishes / r->publish_s : 0;
    fprintf(f, "  \"bench\": \"backlog\",\n  \"completed\": %s,\n",
            r->completed ? "true" : "false");
    fprintf(f, "  \"count\": %" PRIu64 ",\n  \"publishers\": %u,\n  \"batch_items\": %zu,\n",
            b->opt.count, b->opt.publishers, b->batch);
    fprintf(f, "  \"item_bytes\": %zu,\n  \"window\": %u,\n  \"broker_log_level\": ", b->item_bytes,
            b->opt.window);
    backlog_json_string(f, b->opt.log_level);
    fprintf(f, ",\n  \"deadline_s\": %.0f,\n", b->opt.deadline_s);
    fprintf(f, "  \"published_items\": %" PRIu64 ",\n  \"publishes\": %" PRIu64 ",\n", r->published,
            r->publishes);
    fprintf(f, "  \"publish_s\": %.3f,\n  \"publishes_per_s\": %.1f,\n", r->publish_s,
            publishes_rate);
    fprintf(f, "  \"publish_items_per_s\": %.1f,\n", pub_rate);
    fprintf(f, "  \"publish_peak_rss_kib\": %ld,\n", r->publish_peak_rss_kib);
    fprintf(f, "  \"queued_rss_kib\": %ld,\n  \"queued_hwm_kib\": %ld,\n", r->queued.rss_kib,
            r->queued.hwm_kib);
    fprintf(f, "  \"queued_anon_kib\": %ld,\n  \"queued_file_kib\": %ld,\n", r->queued.anon_kib,
            r->queued.file_kib);
    fprintf(f, "  \"queued_shmem_kib\": %ld,\n", r->queued.shmem_kib);
    if (r->growth_known)
        fprintf(f,
                "  \"rss_growth_bytes_per_message\": %.3f,\n"
                "  \"anon_growth_bytes_per_message\": %.3f,\n",
                r->rss_growth_per_msg, r->anon_growth_per_msg);
    fprintf(f, "  \"store_bytes\": %lld,\n  \"wal_bytes\": %lld,\n  \"shm_bytes\": %lld,\n",
            r->store_bytes, r->wal_bytes, r->shm_bytes);
    fprintf(f, "  \"store_bytes_after_drain\": %lld,\n  \"broker_log_bytes\": %lld,\n",
            r->store_bytes_drained, r->log_bytes);
    fprintf(f, "  \"connect_ms\": %.1f,\n  \"backlog_before\": %" PRId64 ",\n", r->connect_ms,
            r->backlog_before);
    fprintf(f, "  \"first_delivery_ms\": %.1f,\n  \"drain_s\": %.3f,\n", r->first_delivery_ms,
            r->drain_s);
    fprintf(f, "  \"drain_deliveries_per_s\": %.1f,\n", r->drain_rate);
    fprintf(f, "  \"drain_peak_rss_kib\": %ld,\n  \"drained_rss_kib\": %ld,\n",
            r->drain_peak_rss_kib, r->drained.rss_kib);
    fprintf(f, "  \"drained_hwm_kib\": %ld,\n", r->drained.hwm_kib);
    fprintf(f, "  \"delivered\": %" PRIu64 ",\n  \"distinct\": %" PRIu64 ",\n", r->delivered,
            r->distinct);
    fprintf(f, "  \"out_of_order\": %" PRIu64 ",\n  \"seq_not_increasing\": %" PRIu64 ",\n",
            r->out_of_order, r->seq_not_increasing);
    fprintf(f, "  \"duplicates\": %" PRIu64 ",\n  \"unknown\": %" PRIu64 ",\n", r->duplicates,
            r->unknown);
    fprintf(f, "  \"content_errors\": %" PRIu64 ",\n  \"missing\": %" PRIu64 ",\n",
            r->content_errors, r->missing);
    fprintf(f, "  \"backlog_after\": %" PRId64 ",\n", r->backlog_after);
    fprintf(f, "  \"broker_cpu_publish_s\": %.2f,\n  \"broker_cpu_drain_s\": %.2f,\n",
            r->cpu_publish_s, r->cpu_drain_s);
    fprintf(f, "  \"broker_exit\": %d,\n  \"problem\": ", r->broker_exit);
    backlog_json_string(f, b->problem);
    fprintf(f, ",\n");
}

static int backlog_write_json(const bench_t *b)
{
    const backlog_results_t *r = &b->res;
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", b->opt.json_path);
    char *slash = strrchr(parent, '/');
    if (slash != NULL) {
        *slash = '\0';
        (void)mkdir(parent, 0755); /* the results folder; its parent must exist */
    }
    FILE *f = fopen(b->opt.json_path, "w");
    if (f == NULL) {
        fprintf(stderr, "bench_backlog: cannot write %s: %s\n", b->opt.json_path, strerror(errno));
        return -1;
    }
    int rss_met = r->queued.hwm_kib > 0 && r->queued.hwm_kib < BACKLOG_RSS_LIMIT_KIB &&
                  r->published == b->opt.count;
    int rate_met = r->in_order && r->drain_rate >= BACKLOG_DRAIN_TARGET;
    fprintf(f, "{\n");
    backlog_json_scalars(f, b);
    backlog_json_criteria(f, b, rss_met, rate_met);
    backlog_json_samples(f, b);
    fprintf(f, "}\n");
    return fclose(f);
}

/* ------------------------------------------------------------------ main */

static void backlog_on_signal(int sig)
{
    (void)sig;
    backlog_interrupted = 1;
}

static void backlog_install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = backlog_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

/* Run both phases; the results say how far it got. */
static void backlog_run(bench_t *b)
{
    backlog_results_t *r = &b->res;
    publisher_t pubs[BACKLOG_MAX_PUBLISHERS];
    memset(pubs, 0, sizeof pubs);
    if (backlog_env_create(b) != 0 || backlog_broker_start(b) != 0)
        return;
    atomic_store(&b->sampler_run, 1);
    b->sampler_started = pthread_create(&b->sampler, NULL, backlog_sampler_run, b) == 0;
    int published = backlog_publish_all(b, pubs) == 0;
    for (unsigned i = 0; i < BACKLOG_MAX_PUBLISHERS; i++) {
        schakel_close(&pubs[i].client);
        free(pubs[i].records);
    }
    if (published && backlog_drain(b) == 0)
        r->completed = 1;
    r->in_order = r->completed && r->backlog_before == (int64_t)b->n_expected &&
                  r->backlog_after == 0 && r->out_of_order == 0 && r->seq_not_increasing == 0 &&
                  r->duplicates == 0 && r->unknown == 0 && r->content_errors == 0 &&
                  r->missing == 0;
    if (b->sampler_started) {
        atomic_store(&b->sampler_run, 0);
        pthread_join(b->sampler, NULL);
    }
    r->publish_peak_rss_kib = b->peak_rss_kib[PHASE_PUBLISH];
    r->drain_peak_rss_kib = b->peak_rss_kib[PHASE_DRAIN];
    r->log_bytes = backlog_file_size(b->log_path);
}

int main(int argc, char **argv)
{
    bench_t *b = calloc(1, sizeof *b);
    if (b == NULL)
        return 1;
    b->opt = (backlog_options_t){.count = BACKLOG_DEFAULT_COUNT,
                                 .publishers = BACKLOG_MAX_PUBLISHERS,
                                 .window = SCHAKEL_MAX_WINDOW,
                                 .item_bytes = BACKLOG_DEFAULT_ITEM_BYTES,
                                 .json_path = "tests/bench/results/backlog.json",
                                 .log_level = "info"};
    int rc = backlog_parse_args(argc, argv, &b->opt);
    if (rc != 0) {
        backlog_usage(rc == 1 ? stdout : stderr);
        free(b);
        return rc == 1 ? 0 : 2;
    }
    pthread_mutex_init(&b->lock, NULL);
    b->broker_pidfd = -1;
    b->res.backlog_before = b->res.backlog_after = -1;
    b->res.broker_exit = -1;
    b->started_ms = backlog_now_ms();
    b->deadline_ms = b->started_ms + (int64_t)(b->opt.deadline_s * 1000.0);
    backlog_install_signals();
    if (keys_init() != 0 || backlog_size_signal(b) != 0) {
        fprintf(stderr, "bench_backlog: cannot prepare the signals: %s\n", b->problem);
        free(b);
        return 1;
    }
    printf("bench_backlog: %" PRIu64 " signals of %zu bytes, deadline %.0f s\n", b->opt.count,
           b->item_bytes, b->opt.deadline_s);
    fflush(stdout);
    backlog_run(b);
    if (b->broker_pid > 0)
        b->res.broker_exit = backlog_broker_stop(b);
    backlog_growth(b);
    backlog_print_table(b);
    int json_rc = backlog_write_json(b);
    if (b->dir[0] != '\0' && b->opt.keep)
        fprintf(stderr, "bench_backlog: keeping %s\n", b->dir);
    else if (b->dir[0] != '\0')
        nftw(b->dir, backlog_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    int ok = b->res.completed && b->res.in_order && json_rc == 0;
    free(b->expected);
    pthread_mutex_destroy(&b->lock);
    free(b);
    return ok ? 0 : 1;
}
