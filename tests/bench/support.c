/*
 * support.c — what every bench shares to set up and drive a run (see
 * support.h; measuring and reporting are in support_measure.c): clocks,
 * signals, deadlines and options, the temporary folder with keys, policy and
 * config, the one schakeld started there (ended by its PID only), sized
 * signals and retried publishes. Trusts the broker for nothing but its
 * READY line; reports failures as -1 with env->problem set.
 */
/* mkdtemp, nftw, pipe2, program_invocation_short_name */
#define _GNU_SOURCE

#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "keys.h"
#include "schakel_limits.h"
#include "wire.h"

extern char **environ;

/* Guards every env->problem: benches record problems from several threads. */
static pthread_mutex_t bench_problem_lock = PTHREAD_MUTEX_INITIALIZER;

/* ------------------------------------------------------------------ clocks */

int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t bench_now_ms(void)
{
    return bench_now_ns() / 1000000;
}

double bench_now_s(void)
{
    return (double)bench_now_ns() / 1e9;
}

void bench_sleep_until_ns(int64_t at_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(at_ns / 1000000000),
                          .tv_nsec = (long)(at_ns % 1000000000)};
    while (bench_now_ns() < at_ns)
        if (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != EINTR)
            break;
}

/* ------------------------------------------------------------------ run control */

static volatile sig_atomic_t bench_signalled;

static void bench_on_signal(int sig)
{
    (void)sig;
    bench_signalled = 1;
}

void bench_catch_signals(int ignore_sigpipe)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = bench_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    if (ignore_sigpipe)
        sigaction(SIGPIPE, &sa, NULL);
}

int bench_interrupted(void)
{
    return bench_signalled != 0;
}

int bench_call_timeout(int64_t deadline_ms, int cap_ms)
{
    int64_t left = deadline_ms - bench_now_ms();
    if (left <= 0)
        return 0;
    return left < cap_ms ? (int)left : cap_ms;
}

double bench_loadavg(void)
{
    double load = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f != NULL) {
        if (fscanf(f, "%lf", &load) != 1)
            load = -1;
        fclose(f);
    }
    return load;
}

double bench_mib(long kib)
{
    return (double)kib / 1024.0;
}

/* ------------------------------------------------------------------ options */

int bench_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* "0" or R,R,... (at most BENCH_MAX_RATES), each in [min, max]: 0 or -1. */
static int bench_parse_rates(const char *text, uint64_t min, uint64_t max, bench_rates_t *out)
{
    char buf[128];
    if (strlen(text) >= sizeof buf)
        return -1;
    snprintf(buf, sizeof buf, "%s", text);
    out->n = 0;
    if (strcmp(buf, "0") == 0)
        return 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        uint64_t v = 0;
        if (out->n >= BENCH_MAX_RATES || bench_parse_u64(tok, min, max, &v) != 0)
            return -1;
        out->rate[out->n++] = (unsigned)v;
    }
    return out->n > 0 ? 0 : -1;
}

/* One option's value into its target: 0, or -1 when out of range. */
static int bench_option_set(const bench_option_t *o, const char *value)
{
    uint64_t v = 0;
    if (o->kind == BENCH_OPT_TEXT) {
        *(const char **)o->target = value;
        return 0;
    }
    if (o->kind == BENCH_OPT_RATES)
        return bench_parse_rates(value, o->min, o->max, o->target);
    if (o->kind == BENCH_OPT_CUSTOM)
        return o->parse(value, o->target);
    if (bench_parse_u64(value, o->min, o->max, &v) != 0)
        return -1;
    if (o->kind == BENCH_OPT_U64)
        *(uint64_t *)o->target = v;
    else if (o->kind == BENCH_OPT_UNSIGNED)
        *(unsigned *)o->target = (unsigned)v;
    else
        *(double *)o->target = (double)v;
    return 0;
}

int bench_parse_options(int argc, char **argv, const bench_option_t *options, size_t n)
{
    const char *me = program_invocation_short_name;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const bench_option_t *o = NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return 1;
        for (size_t k = 0; k < n && o == NULL; k++)
            if (strcmp(a, options[k].name) == 0)
                o = &options[k];
        if (o != NULL && o->kind == BENCH_OPT_FLAG) {
            *(int *)o->target = (int)o->min;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: %s needs a value (or is unknown)\n", me, a);
            return 2;
        }
        const char *value = argv[++i];
        if (o == NULL) {
            fprintf(stderr, "%s: unknown option %s\n", me, a);
            return 2;
        }
        if (bench_option_set(o, value) != 0) {
            fprintf(stderr, "%s: %s %s is out of range\n", me, a, value);
            return 2;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ files */

void bench_problem(bench_env_t *env, const char *fmt, ...)
{
    pthread_mutex_lock(&bench_problem_lock);
    if (env->problem[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(env->problem, sizeof env->problem, fmt, ap);
        va_end(ap);
        fprintf(stderr, "%s: %s\n", program_invocation_short_name, env->problem);
    }
    pthread_mutex_unlock(&bench_problem_lock);
    atomic_store(&env->stop, 1);
}

long long bench_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

int bench_write_file(const char *path, const char *text, unsigned mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, (mode_t)mode);
    if (fd < 0)
        return -1;
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int saved = errno;
            close(fd);
            errno = n == 0 ? EIO : saved;
            return -1;
        }
        done += (size_t)n;
    }
    return close(fd);
}

static int bench_remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return type == FTW_DP ? rmdir(path) : unlink(path);
}

/* ------------------------------------------------------------------ environment */

/* The key files' name of a principal: '/' as '-'. */
static void bench_key_name(const char *principal, char name[SCHAKEL_MAX_PRINCIPAL_LEN + 1])
{
    snprintf(name, SCHAKEL_MAX_PRINCIPAL_LEN + 1, "%s", principal);
    for (char *p = name; *p != '\0'; p++)
        if (*p == '/')
            *p = '-';
}

void bench_key_base(const bench_env_t *env, const char *principal, char *out, size_t len)
{
    char name[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    bench_key_name(principal, name);
    snprintf(out, len, "%s/keys/%s", env->dir, name);
}

char *bench_policy_pair(const char *comment, const char *const *principals, size_t n,
                        const char *rule_id, const char *purpose)
{
    size_t cap = 2048 + n * (2 * SCHAKEL_MAX_PRINCIPAL_LEN + 64), used = 0;
    char *text = malloc(cap), name[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    if (text == NULL)
        return NULL;
    used += (size_t)snprintf(text, cap,
                             "# %s\nversion: 1\npartners:\n  - id: bron\n"
                             "    name: Bench publisher partner\n  - id: ontvanger\n"
                             "    name: Bench recipient partner\nprincipals:\n",
                             comment);
    for (size_t i = 0; i < n && used < cap; i++) {
        bench_key_name(principals[i], name);
        used += (size_t)snprintf(text + used, cap - used,
                                 "  - id: %s\n    role: system\n    key_file: keys/%s.pub\n",
                                 principals[i], name);
    }
    if (used < cap)
        used += (size_t)snprintf(
            text + used, cap - used,
            "rules:\n  - id: %s\n    from: [bron]\n    to: [ontvanger]\n"
            "    kinds: [bench-signaal]\n    themes: [overlast]\n    areas: [\"*\"]\n"
            "    purpose: \"%s\"\n    legal_basis: \"None: synthetic test data\"\n"
            "    fields: [area, address, subject, grounds, severity, observed_at, summary, "
            "source_ref]\n    retention: 365d\n",
            rule_id, purpose);
    if (used >= cap) {
        free(text);
        return NULL;
    }
    return text;
}

static int bench_make_key(bench_env_t *env, const char *principal)
{
    char base[BENCH_PATH_MAX], err[256];
    bench_key_base(env, principal, base, sizeof base);
    if (keys_generate(base, err, sizeof err) != 0) {
        bench_problem(env, "keys_generate %s: %s", base, err);
        return -1;
    }
    return 0;
}

static int bench_write_config(bench_env_t *env, const char *config_extra)
{
    static const char head[] = "# schakeld configuration of one benchmark\n"
                               "listen: tcp://127.0.0.1:*\n"
                               "key_file: keys/broker.key\n"
                               "store_key_file: keys/store.key\n"
                               "policy: policy.yaml\n"
                               "store: store.db\n";
    size_t extra = config_extra != NULL ? strlen(config_extra) : 0;
    char *text = malloc(sizeof head + extra + 2);
    if (text == NULL)
        return -1;
    memcpy(text, head, sizeof head);
    if (extra > 0) {
        memcpy(text + sizeof head - 1, config_extra, extra + 1);
        if (config_extra[extra - 1] != '\n')
            strcat(text, "\n");
    }
    int rc = bench_write_file(env->config_path, text, 0644);
    free(text);
    return rc;
}

/* The store key and the empty store, as an operator makes them once
 * (schakeld --init --config): the broker never creates its store. What
 * it says goes to the broker log. */
static int bench_init_store(bench_env_t *env)
{
    const char *program = bench_schakeld_path();
    char *const argv[] = {(char *)(uintptr_t)program, "--init", "--config", env->config_path, NULL};
    int log_fd = open(env->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        bench_problem(env, "open %s: %s", env->log_path, strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0)
        bench_exec_child(program, argv, environ, log_fd, log_fd);
    close(log_fd);
    int status = 0;
    while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (pid < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        bench_problem(env, "%s --init --config %s failed (see %s)", program, env->config_path,
                      env->log_path);
        return -1;
    }
    return 0;
}

int bench_env_create(bench_env_t *env, const char *const *principals, size_t n,
                     const char *policy_text, const char *config_extra)
{
    char path[BENCH_PATH_MAX];
    env->broker_pid = 0;
    env->broker_pidfd = -1;
    if (keys_init() != 0) {
        bench_problem(env, "libsodium failed to initialise");
        return -1;
    }
    snprintf(env->dir, sizeof env->dir, "/tmp/schakel-bench-XXXXXX");
    if (mkdtemp(env->dir) == NULL) {
        bench_problem(env, "mkdtemp: %s", strerror(errno));
        env->dir[0] = '\0';
        return -1;
    }
    snprintf(env->config_path, sizeof env->config_path, "%s/schakeld.yaml", env->dir);
    snprintf(env->policy_path, sizeof env->policy_path, "%s/policy.yaml", env->dir);
    snprintf(env->store_path, sizeof env->store_path, "%s/store.db", env->dir);
    snprintf(env->log_path, sizeof env->log_path, "%s/schakeld.log", env->dir);
    snprintf(env->broker_pub, sizeof env->broker_pub, "%s/keys/broker.pub", env->dir);
    snprintf(path, sizeof path, "%s/keys", env->dir);
    if (mkdir(path, 0700) != 0) {
        bench_problem(env, "mkdir %s: %s", path, strerror(errno));
        return -1;
    }
    if (bench_make_key(env, "broker") != 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (bench_make_key(env, principals[i]) != 0)
            return -1;
    if (bench_write_file(env->policy_path, policy_text, 0644) != 0 ||
        bench_write_config(env, config_extra) != 0) {
        bench_problem(env, "cannot write the policy or config in %s: %s", env->dir,
                      strerror(errno));
        return -1;
    }
    return bench_init_store(env);
}

void bench_env_remove(bench_env_t *env, int keep)
{
    if (env->broker_pid > 0)
        (void)bench_broker_stop(env, 60000);
    if (env->dir[0] == '\0')
        return;
    if (keep)
        fprintf(stderr, "%s: keeping %s\n", program_invocation_short_name, env->dir);
    else
        nftw(env->dir, bench_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    env->dir[0] = '\0';
}

/* ------------------------------------------------------------------ broker process */

const char *bench_schakeld_path(void)
{
    static char buf[PATH_MAX];
    const char *explicit_path = getenv("SCHAKELD");
    if (explicit_path != NULL && *explicit_path != '\0')
        return explicit_path;
    const char *build = getenv("BUILD");
    snprintf(buf, sizeof buf, "%s/schakeld", build != NULL && *build != '\0' ? build : "build");
    return buf;
}

void bench_exec_child(const char *program, char *const argv[], char *const envp[], int out, int err)
{
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
        _exit(126);
    execve(program, argv, envp);
    _exit(127);
}

/* In the child between fork and exec: async-signal-safe calls only. */
static void bench_exec_broker(const char *program, char *const argv[], int ready_w, int log_fd)
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

/* Wait for our broker to exit within timeout_ms. Returns its waitpid
 * status, or -1 while it still runs. */
static int bench_wait_exit(const bench_env_t *env, int timeout_ms)
{
    int64_t deadline = bench_now_ms() + timeout_ms;
    for (;;) {
        int status;
        pid_t r = waitpid(env->broker_pid, &status, WNOHANG);
        if (r == env->broker_pid)
            return status;
        if (r < 0 && errno != EINTR)
            return -1;
        int64_t left = deadline - bench_now_ms();
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = env->broker_pidfd, .events = POLLIN};
        if (env->broker_pidfd >= 0)
            (void)poll(&p, 1, (int)left);
        else /* no pidfd (old kernel): look again shortly */
            (void)poll(NULL, 0, left < 20 ? (int)left : 20);
    }
}

/* Drop a complete "METRICS host:port" line at the start of the buffer (a
 * broker run with metrics_listen, as by a SCHAKELD wrapper, says it before
 * READY). Returns the bytes left. */
static size_t bench_skip_metrics_line(char *line, size_t used)
{
    char *end = strchr(line, '\n');
    if (end == NULL || strncmp(line, "METRICS ", 8) != 0)
        return used;
    size_t dropped = (size_t)(end + 1 - line);
    memmove(line, end + 1, used - dropped + 1);
    return used - dropped;
}

/* Read the READY line from the pipe, watching the process. */
static int bench_await_ready(bench_env_t *env, int ready_r, int timeout_ms)
{
    char line[256] = "";
    size_t used = 0;
    int64_t deadline = bench_now_ms() + timeout_ms;
    while ((used = bench_skip_metrics_line(line, used)), strchr(line, '\n') == NULL) {
        int64_t left = deadline - bench_now_ms();
        struct pollfd p[2] = {{.fd = ready_r, .events = POLLIN},
                              {.fd = env->broker_pidfd, .events = POLLIN}};
        if (left <= 0 || used == sizeof line - 1) {
            bench_problem(env, "schakeld gave no READY line within %d ms (see %s)", timeout_ms,
                          env->log_path);
            return -1;
        }
        if (poll(p, 2, (int)left) < 0 && errno != EINTR)
            return -1;
        if (p[0].revents) {
            ssize_t got = read(ready_r, line + used, sizeof line - 1 - used);
            if (got <= 0) {
                bench_problem(env, "schakeld closed its ready fd without a READY line (see %s)",
                              env->log_path);
                return -1;
            }
            used += (size_t)got;
        } else if (p[1].revents) {
            bench_problem(env, "schakeld exited before it was ready (see %s)", env->log_path);
            return -1;
        }
        line[used] = '\0';
    }
    *strchr(line, '\n') = '\0';
    if (strncmp(line, "READY tcp://127.0.0.1:", 22) != 0) {
        bench_problem(env, "unexpected ready line \"%.100s\"", line);
        return -1;
    }
    snprintf(env->endpoint, sizeof env->endpoint, "%.100s", line + 6);
    return 0;
}

/* Fork and exec schakeld with the READY pipe's write end as fd 3. */
static pid_t bench_spawn_broker(bench_env_t *env, const char *program, const char *log_level,
                                int ready_w, int log_fd)
{
    char *const argv[] = {(char *)(uintptr_t)program,
                          "--config",
                          env->config_path,
                          "--log-level",
                          (char *)(uintptr_t)log_level,
                          "--ready-fd",
                          "3",
                          NULL};
    pid_t pid = fork();
    if (pid == 0)
        bench_exec_broker(program, argv, ready_w, log_fd);
    return pid;
}

int bench_broker_start(bench_env_t *env, const char *log_level, int timeout_ms)
{
    const char *program = bench_schakeld_path();
    if (env->broker_pid > 0) {
        bench_problem(env, "a broker (pid %ld) runs already", (long)env->broker_pid);
        return -1;
    }
    if (access(program, X_OK) != 0) {
        bench_problem(env, "%s is not an executable (%s); run make, or set SCHAKELD", program,
                      strerror(errno));
        return -1;
    }
    int log_fd = open(env->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    int pipefd[2];
    if (log_fd < 0 || pipe2(pipefd, O_CLOEXEC) != 0) {
        bench_problem(env, "cannot open the broker log or a pipe: %s", strerror(errno));
        if (log_fd >= 0)
            close(log_fd);
        return -1;
    }
    int64_t t0 = bench_now_ns();
    pid_t pid = bench_spawn_broker(env, program, log_level, pipefd[1], log_fd);
    close(pipefd[1]);
    close(log_fd);
    if (pid < 0) {
        close(pipefd[0]);
        bench_problem(env, "fork: %s", strerror(errno));
        return -1;
    }
    env->broker_pid = pid;
    env->broker_pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    int rc = bench_await_ready(env, pipefd[0], timeout_ms);
    env->ready_s = (double)(bench_now_ns() - t0) / 1e9;
    close(pipefd[0]);
    if (rc != 0)
        (void)bench_broker_stop(env, 10000);
    return rc;
}

int bench_broker_stop(bench_env_t *env, int timeout_ms)
{
    if (env->broker_pid <= 0)
        return -1;
    kill(env->broker_pid, SIGTERM);
    int status = bench_wait_exit(env, timeout_ms);
    int code = -1;
    if (status == -1) {
        fprintf(stderr, "%s: schakeld (pid %ld) ignored SIGTERM; killing it\n",
                program_invocation_short_name, (long)env->broker_pid);
        kill(env->broker_pid, SIGKILL);
        (void)bench_wait_exit(env, timeout_ms > 10000 ? timeout_ms : 10000);
    } else if (WIFEXITED(status)) {
        code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        code = 128 + WTERMSIG(status);
    }
    if (env->broker_pidfd >= 0)
        close(env->broker_pidfd);
    env->broker_pidfd = -1;
    env->broker_pid = 0;
    return code;
}

int bench_connect(bench_env_t *env, const char *principal, schakel_client_t **out, int timeout_ms)
{
    char base[BENCH_PATH_MAX], key[BENCH_PATH_MAX + 8];
    schakel_error_t err;
    memset(&err, 0, sizeof err);
    bench_key_base(env, principal, base, sizeof base);
    snprintf(key, sizeof key, "%s.key", base);
    schakel_status_t st =
        timeout_ms > 0 ? schakel_connect(out, env->endpoint, env->broker_pub, key, timeout_ms, &err)
                       : SCHAKEL_ERR_TIMEOUT;
    if (st != SCHAKEL_OK) {
        bench_problem(env, "connect as %s to %s: %s (%s)", principal, env->endpoint,
                      schakel_strerror(st), timeout_ms > 0 ? err.text : "no time left");
        return -1;
    }
    return 0;
}

int bench_broker_gone(const bench_env_t *env)
{
    if (env->broker_pid <= 0)
        return 1;
    if (env->broker_pidfd < 0)
        return kill(env->broker_pid, 0) != 0;
    struct pollfd p = {.fd = env->broker_pidfd, .events = POLLIN};
    return poll(&p, 1, 0) > 0;
}

void bench_broker_pause(const bench_env_t *env, int ms)
{
    struct pollfd p = {.fd = env->broker_pidfd, .events = POLLIN};
    if (env->broker_pidfd >= 0)
        (void)poll(&p, 1, ms);
    else
        (void)poll(NULL, 0, ms);
}

/* ------------------------------------------------------------------ signals */

static char *bench_lend(const char *text)
{
    return (char *)(uintptr_t)text; /* packed only, never written */
}

void bench_signal_init(schakel_signal_t *s, const char *kind, const char *grounds, int severity,
                       int64_t observed_at, const char *summary, const char *source_ref)
{
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->theme = "overlast";
    s->area = "BU09350101";
    s->postcode = "6211AB";
    s->house_number = 12;
    s->subject = "pseudo:bench-0001";
    s->grounds = grounds;
    s->severity = severity;
    s->observed_at = observed_at;
    s->summary = summary;
    s->source_ref = source_ref;
}

/* Serialized size of one item as libschakel encodes it (the same fields);
 * 0 when it cannot be encoded. */
static size_t bench_signal_bytes(const schakel_signal_t *in, const char *sender)
{
    Schakel__Signal s = SCHAKEL__SIGNAL__INIT;
    Schakel__Address address = SCHAKEL__ADDRESS__INIT;
    s.sender = bench_lend(sender);
    s.kind = bench_lend(in->kind);
    s.theme = bench_lend(in->theme);
    s.area = bench_lend(in->area);
    address.postcode = bench_lend(in->postcode);
    address.has_house_number = 1;
    address.house_number = in->house_number;
    s.address = &address;
    s.subject = bench_lend(in->subject);
    s.grounds = bench_lend(in->grounds);
    s.has_severity = 1;
    s.severity = (Schakel__Severity)in->severity;
    s.has_observed_at = 1;
    s.observed_at = in->observed_at;
    s.summary = bench_lend(in->summary);
    s.source_ref = bench_lend(in->source_ref);
    size_t len = 0;
    uint8_t *bytes = wire_encode_signal(&s, &len);
    free(bytes);
    return bytes != NULL ? len : 0;
}

size_t bench_signal_pad(schakel_signal_t *s, const char *sender, const char *words, char *summary,
                        size_t target, size_t *summary_len)
{
    size_t n_words = strlen(words), best = 0, best_size = 0;
    s->summary = summary;
    for (size_t len = 0; len <= SCHAKEL_MAX_SUMMARY_LEN; len++) {
        if (len > 0)
            summary[len - 1] = words[(len - 1) % n_words];
        summary[len] = '\0';
        size_t size = bench_signal_bytes(s, sender);
        if (size == 0 || size > target)
            break;
        best = len;
        best_size = size;
    }
    summary[best] = '\0';
    *summary_len = best;
    return best_size;
}

size_t bench_batch_items(size_t item_bytes, size_t overhead)
{
    /* an item is a length-delimited field: tag, varint length, bytes */
    size_t per_item = 1 + (item_bytes < 128 ? 1 : item_bytes < 16384 ? 2 : 3) + item_bytes;
    size_t batch = SCHAKEL_MAX_ITEMS;
    while (batch > 1 && batch * per_item + overhead > SCHAKEL_MAX_FRAME_BYTES)
        batch--;
    return batch;
}

schakel_status_t bench_publish_retry(schakel_client_t *client, const schakel_signal_t *signals,
                                     size_t n, const uint8_t *id, schakel_item_result_t *results,
                                     int attempts, int64_t deadline_ms, int cap_ms,
                                     atomic_int *stop)
{
    schakel_status_t st = SCHAKEL_ERR_TIMEOUT;
    for (int attempt = 0; attempt < attempts; attempt++) {
        int timeout = bench_call_timeout(deadline_ms, cap_ms);
        if (timeout == 0 || bench_interrupted() || (stop != NULL && atomic_load(stop)))
            break;
        st = schakel_publish(client, NULL, signals, n, id, NULL, results, NULL, timeout);
        const schakel_error_t *e = schakel_last_error(client);
        if (st == SCHAKEL_OK ||
            !(st == SCHAKEL_ERR_TIMEOUT ||
              (st == SCHAKEL_ERR_REFUSED && (e->reason == SCHAKEL__REASON__INTERNAL_ERROR ||
                                             e->reason == SCHAKEL__REASON__UNAVAILABLE))))
            break;
    }
    return st;
}
