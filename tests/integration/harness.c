/*
 * harness.c — runs a real schakeld for integration tests and talks to it
 * through libschakel and the schakel CLI.
 *
 * Owns the test folder (keys, policy, config, store, broker log) and the
 * broker and CLI processes it starts; it ends only those PIDs. Trusts the
 * programs under test for nothing: every wait is bounded (poll on pipes and
 * process descriptors, never sleep), and every failure ends the cmocka test
 * with a message and the broker's log.
 */
/* asprintf, nftw */
#define _GNU_SOURCE

#include "harness.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <link.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include <sqlite3.h>

#include "keys.h"
#include "store_v12_schema.h"

extern char **environ;

/* ------------------------------------------------------------------ data */

struct h_principal_def {
    const char *id;
    int registered;
};

/* Every principal an env generates a key for. */
static const struct h_principal_def h_principals[] = {
    {H_GEMEENTE, 1},        {H_OPERATOR, 1},  {H_POLITIE, 1},         {H_OM, 1},
    {H_VEILIGHEIDSHUIS, 1}, {H_RIEC, 1},      {H_RIEC_CASEWORKER, 1}, {H_WOCO_MAASOEVER, 1},
    {H_WOCO_JEKERDAL, 1},   {H_BRANDWEER, 1}, {H_UNREGISTERED, 0},
};

const char *const h_receiving_principals[] = {
    H_GEMEENTE,
    H_POLITIE,
    H_OM,
    H_VEILIGHEIDSHUIS,
    H_RIEC,
    H_RIEC_CASEWORKER,
    H_WOCO_MAASOEVER,
    H_WOCO_JEKERDAL,
    H_BRANDWEER,
    NULL,
};

const char h_policy_header[] = "version: 1\n"
                               "partners:\n"
                               "  - id: gemeente\n"
                               "    name: Gemeente Maastricht\n"
                               "  - id: politie\n"
                               "    name: Politie Eenheid Limburg\n"
                               "  - id: om\n"
                               "    name: Openbaar Ministerie, parket Limburg\n"
                               "  - id: veiligheidshuis\n"
                               "    name: Veiligheidshuis Maastricht-Heuvelland\n"
                               "  - id: riec\n"
                               "    name: RIEC Limburg\n"
                               "  - id: woco-maasoever\n"
                               "    name: Woonstichting Maasoever\n"
                               "  - id: woco-jekerdal\n"
                               "    name: Wooncorporatie Jekerdal\n"
                               "  - id: brandweer\n"
                               "    name: Brandweer Zuid-Limburg\n"
                               "principals:\n"
                               "  - id: gemeente/meldingen\n"
                               "    role: system\n"
                               "    key_file: keys/gemeente-meldingen.pub\n"
                               "  - id: gemeente/beheer\n"
                               "    role: operator\n"
                               "    key_file: keys/gemeente-beheer.pub\n"
                               "  - id: politie/bvh-koppeling\n"
                               "    role: system\n"
                               "    key_file: keys/politie-bvh-koppeling.pub\n"
                               "  - id: om/parket\n"
                               "    role: system\n"
                               "    key_file: keys/om-parket.pub\n"
                               "  - id: veiligheidshuis/coordinatie\n"
                               "    role: caseworker\n"
                               "    key_file: keys/veiligheidshuis-coordinatie.pub\n"
                               "  - id: riec/analyse\n"
                               "    role: system\n"
                               "    key_file: keys/riec-analyse.pub\n"
                               "  - id: riec/m.janssen\n"
                               "    role: caseworker\n"
                               "    key_file: keys/riec-m.janssen.pub\n"
                               "  - id: woco-maasoever/meldingen\n"
                               "    role: system\n"
                               "    key_file: keys/woco-maasoever-meldingen.pub\n"
                               "  - id: woco-jekerdal/meldingen\n"
                               "    role: system\n"
                               "    key_file: keys/woco-jekerdal-meldingen.pub\n"
                               "  - id: brandweer/meldkamer\n"
                               "    role: system\n"
                               "    key_file: keys/brandweer-meldkamer.pub\n";

/* Field lists differ per recipient on purpose: the tests check that each
 * recipient sees exactly its rule's fields. */
const char h_default_rules[] =
    "rules:\n"
    "  - id: woco-ondermijning-politie\n"
    "    from: [woco-maasoever, woco-jekerdal]\n"
    "    to: [politie]\n"
    "    kinds: [\"*\"]\n"
    "    themes: [ondermijning]\n"
    "    areas: [GM0935]\n"
    "    purpose: \"Opsporing van ondermijnende criminaliteit\"\n"
    "    legal_basis: \"Convenant RIEC Limburg, art. 5; Wpg art. 16 lid 1\"\n"
    "    fields: [area, address, subject, grounds, case_ref, severity, observed_at, summary, "
    "source_ref]\n"
    "    retention: 365d\n"
    "  - id: woco-ondermijning-riec\n"
    "    from: [woco-maasoever, woco-jekerdal]\n"
    "    to: [riec]\n"
    "    themes: [ondermijning]\n"
    "    areas: [GM0935]\n"
    "    purpose: \"Integrale analyse van ondermijning\"\n"
    "    legal_basis: \"Convenant RIEC Limburg, art. 5\"\n"
    "    fields: [area, address, subject, grounds, severity, observed_at, summary]\n"
    "    retention: 730d\n"
    "  - id: woco-ondermijning-gemeente\n"
    "    from: [woco-maasoever, woco-jekerdal]\n"
    "    to: [gemeente]\n"
    "    themes: [ondermijning]\n"
    "    areas: [GM0935]\n"
    "    purpose: \"Bestuurlijke aanpak van ondermijning\"\n"
    "    legal_basis: \"Convenant RIEC Limburg, art. 6; Opiumwet art. 13b\"\n"
    "    fields: [area, address, severity, observed_at, summary]\n"
    "    retention: 180d\n"
    "  - id: brandweer-brandveiligheid\n"
    "    from: [brandweer]\n"
    "    to: [gemeente, woco-maasoever, woco-jekerdal]\n"
    "    themes: [brandveiligheid]\n"
    "    areas: [GM0935]\n"
    "    purpose: \"Toezicht op brandveiligheid van woningen\"\n"
    "    legal_basis: \"Wet veiligheidsregio's art. 10\"\n"
    "    fields: [area, address, severity, observed_at, summary, source_ref]\n"
    "    retention: 365d\n"
    "  - id: politie-woninginbraak-gemeente\n"
    "    from: [politie]\n"
    "    to: [gemeente]\n"
    "    kinds: [inbraakreeks]\n"
    "    themes: [woninginbraak]\n"
    "    areas: [GM0935]\n"
    "    purpose: \"Gebiedsgerichte preventie van woninginbraak\"\n"
    "    legal_basis: \"Wpg art. 19 lid 1\"\n"
    "    fields: [area, severity, observed_at, summary]\n"
    "    retention: 90d\n"
    "  - id: politie-ondermijning-om\n"
    "    from: [politie]\n"
    "    to: [om]\n"
    "    themes: [ondermijning]\n"
    "    areas: [\"*\"]\n"
    "    purpose: \"Strafrechtelijke beoordeling\"\n"
    "    legal_basis: \"Wpg art. 16 lid 1 sub a\"\n"
    "    fields: [area, address, subject, grounds, case_ref, severity, observed_at, summary, "
    "source_ref]\n"
    "    retention: 1825d\n"
    "  - id: politie-zorg-veiligheidshuis\n"
    "    from: [politie]\n"
    "    to: [veiligheidshuis]\n"
    "    themes: [zorg, huiselijk-geweld]\n"
    "    areas: [GM0935]\n"
    "    purpose: \"Persoonsgerichte aanpak in het Veiligheidshuis\"\n"
    "    legal_basis: \"Convenant Veiligheidshuis Maastricht-Heuvelland, art. 7; Wpg art. 20\"\n"
    "    fields: [area, subject, grounds, case_ref, severity, observed_at, summary]\n"
    "    retention: 365d\n"
    "    require_case_ref: true\n";

/* ------------------------------------------------------------------ small helpers */

static int h_write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    size_t done = 0;
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

/* Milliseconds on the monotonic clock. */
static int64_t h_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int h_remaining_ms(int64_t deadline)
{
    int64_t left = deadline - h_now_ms();
    return left < 0 ? 0 : (int)left;
}

static int h_pidfd_open(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* Wait for pid (with its pidfd) to exit within timeout_ms. Returns the
 * waitpid status, or -1 if it is still running after the bound. */
static int h_wait_exit(pid_t pid, int pidfd, int timeout_ms)
{
    int64_t deadline = h_now_ms() + timeout_ms;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid && WIFSTOPPED(status)) {
            /* a ptrace-stop: a loop the harness traced and could not let go
             * (it said why); stopped, it ends at nothing but SIGKILL */
            fprintf(stderr, "harness: broker %d is stopped under ptrace; killing it\n", (int)pid);
            (void)kill(pid, SIGKILL);
            continue;
        }
        if (r == pid)
            return status;
        if (r < 0 && errno != EINTR)
            return -1;
        if (pidfd < 0 || h_remaining_ms(deadline) == 0)
            return -1;
        struct pollfd p = {.fd = pidfd, .events = POLLIN};
        if (poll(&p, 1, h_remaining_ms(deadline)) < 0 && errno != EINTR)
            return -1;
    }
}

static int h_status_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

static void h_key_base(const h_env_t *env, const char *principal, char *out, size_t outlen)
{
    char name[160];
    snprintf(name, sizeof name, "%s", principal);
    for (char *p = name; *p; p++)
        if (*p == '/')
            *p = '-';
    snprintf(out, outlen, "%s/keys/%s", env->dir, name);
}

const char *h_key_file(const h_env_t *env, const char *principal)
{
    static char buffers[4][256];
    static unsigned next;
    char *out = buffers[next++ % 4];
    char base[240];
    h_key_base(env, principal, base, sizeof base);
    snprintf(out, 256, "%s.key", base);
    return out;
}

const char *h_pub_file(const h_env_t *env, const char *principal)
{
    static char buffers[4][256];
    static unsigned next;
    char *out = buffers[next++ % 4];
    char base[240];
    h_key_base(env, principal, base, sizeof base);
    snprintf(out, 256, "%s.pub", base);
    return out;
}

static const char *h_program_path(const char *override_var, const char *name, char *buf,
                                  size_t buflen)
{
    const char *explicit_path = getenv(override_var);
    if (explicit_path && *explicit_path)
        return explicit_path;
    const char *build = getenv("BUILD");
    snprintf(buf, buflen, "%s/%s", build && *build ? build : "build", name);
    return buf;
}

const char *h_schakeld_path(void)
{
    static char buf[PATH_MAX];
    return h_program_path("SCHAKELD", "schakeld", buf, sizeof buf);
}

const char *h_schakel_path(void)
{
    static char buf[PATH_MAX];
    return h_program_path("SCHAKEL", "schakel", buf, sizeof buf);
}

/* ------------------------------------------------------------------ env */

static h_env_t *h_env_create(const char *rules_yaml)
{
    if (keys_init() != 0)
        fail_msg("keys_init failed");
    h_env_t *env = calloc(1, sizeof *env);
    assert_non_null(env);
    env->broker_pidfd = -1;
    snprintf(env->dir, sizeof env->dir, "/tmp/schakel-it-XXXXXX");
    if (!mkdtemp(env->dir))
        fail_msg("mkdtemp: %s", strerror(errno));
    snprintf(env->config_path, sizeof env->config_path, "%s/schakeld.yaml", env->dir);
    snprintf(env->policy_path, sizeof env->policy_path, "%s/policy.yaml", env->dir);
    snprintf(env->store_path, sizeof env->store_path, "%s/store.db", env->dir);
    snprintf(env->log_path, sizeof env->log_path, "%s/schakeld.log", env->dir);
    snprintf(env->broker_pub, sizeof env->broker_pub, "%s/keys/broker.pub", env->dir);

    char path[256];
    snprintf(path, sizeof path, "%s/keys", env->dir);
    if (mkdir(path, 0700) != 0)
        fail_msg("mkdir %s: %s", path, strerror(errno));

    char err[256];
    snprintf(path, sizeof path, "%s/keys/broker", env->dir);
    if (keys_generate(path, err, sizeof err) != 0)
        fail_msg("keys_generate %s: %s", path, err);
    for (size_t i = 0; i < sizeof h_principals / sizeof h_principals[0]; i++) {
        h_key_base(env, h_principals[i].id, path, sizeof path);
        if (keys_generate(path, err, sizeof err) != 0)
            fail_msg("keys_generate %s: %s", path, err);
    }

    h_env_write_policy(env, "%s%s", h_policy_header, rules_yaml);
    const char *config = "# schakeld configuration of one integration test\n"
                         "listen: tcp://127.0.0.1:*\n"
                         "key_file: keys/broker.key\n"
                         "store_key_file: keys/store.key\n"
                         "policy: policy.yaml\n"
                         "store: store.db\n";
    if (h_write_file(env->config_path, config, 0644) != 0)
        fail_msg("write %s: %s", env->config_path, strerror(errno));
    /* The store key and an empty store, made once as an operator makes
     * them: schakeld never creates a store when it starts. */
    h_cli_result_t res;
    if (h_run_schakeld(&res, "--init", "--config", env->config_path, NULL) != 0)
        fail_msg("schakeld --init --config %s: exit %d: %s", env->config_path, res.status, res.err);
    h_cli_result_free(&res);
    return env;
}

h_env_t *h_env_new(void)
{
    return h_env_create(h_default_rules);
}

h_env_t *h_env_new_with_rules(const char *rules_yaml)
{
    return h_env_create(rules_yaml);
}

void h_env_write_policy(h_env_t *env, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = NULL;
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (n < 0)
        fail_msg("policy text: out of memory");
    int rc = h_write_file(env->policy_path, text, 0644);
    free(text);
    if (rc != 0)
        fail_msg("write %s: %s", env->policy_path, strerror(errno));
}

static int h_remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (type == FTW_DP)
        return rmdir(path);
    return unlink(path);
}

void h_dump_log(const h_env_t *env)
{
    FILE *f = fopen(env->log_path, "r");
    if (!f) {
        fprintf(stderr, "--- no broker log at %s\n", env->log_path);
        return;
    }
    /* The tail is what explains a failure; keep the output bounded. */
    const long max_bytes = 16384;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        if (size > max_bytes)
            fseek(f, size - max_bytes, SEEK_SET);
        else
            rewind(f);
    }
    fprintf(stderr, "--- broker log %s (tail) ---\n", env->log_path);
    char line[1024];
    while (fgets(line, sizeof line, f))
        fputs(line, stderr);
    fprintf(stderr, "--- end of broker log ---\n");
    fclose(f);
}

void h_env_free(h_env_t **envp)
{
    if (!envp || !*envp)
        return;
    h_env_t *env = *envp;
    if (env->broker_pid > 0 && getenv("SCHAKEL_TEST_COVERAGE") != NULL) {
        /* A coverage build writes its counts at exit, which SIGKILL skips:
         * the broker is stopped as systemd stops it (woken first, should a
         * row have left it paused). */
        (void)kill(env->broker_pid, SIGCONT);
        (void)h_broker_stop(env);
    }
    if (env->broker_pid > 0)
        h_broker_kill9(env);
    if (!env->completed)
        h_dump_log(env);
    if (getenv("SCHAKEL_TEST_KEEP"))
        fprintf(stderr, "keeping %s\n", env->dir);
    else
        nftw(env->dir, h_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(env);
    *envp = NULL;
}

void h_done(h_env_t *env)
{
    env->completed = 1;
}

/* ------------------------------------------------------------------ broker process */

/* In the child between fork and exec: only async-signal-safe calls. */
static void h_exec_broker_env(const char *program, char *const argv[], char *const envp[],
                              int ready_w, int log_fd)
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
    execve(program, argv, envp);
    _exit(127);
}

static void h_exec_broker(const char *program, char *const argv[], int ready_w, int log_fd)
{
    h_exec_broker_env(program, argv, environ, ready_w, log_fd);
}

/* Read the READY line from the pipe, watching the process. Returns 0 with
 * the endpoint filled, or -1 with why in problem. */
static int h_await_ready(h_env_t *env, int ready_r, char *problem, size_t problem_len)
{
    char line[256];
    size_t used = 0;
    int64_t deadline = h_now_ms() + H_START_TIMEOUT_MS;
    for (;;) {
        struct pollfd p[2] = {{.fd = ready_r, .events = POLLIN},
                              {.fd = env->broker_pidfd, .events = POLLIN}};
        int left = h_remaining_ms(deadline);
        if (left == 0) {
            snprintf(problem, problem_len, "no READY line within %d ms", H_START_TIMEOUT_MS);
            return -1;
        }
        int n = poll(p, 2, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(problem, problem_len, "poll: %s", strerror(errno));
            return -1;
        }
        if (p[0].revents) {
            ssize_t got = read(ready_r, line + used, sizeof line - 1 - used);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0) {
                snprintf(problem, problem_len, "ready fd closed without a READY line");
                return -1;
            }
            used += (size_t)got;
            line[used] = '\0';
            char *nl = strchr(line, '\n');
            if (nl) {
                *nl = '\0';
                break;
            }
            if (used == sizeof line - 1) {
                snprintf(problem, problem_len, "ready line too long");
                return -1;
            }
        } else if (p[1].revents) {
            snprintf(problem, problem_len, "schakeld exited before it was ready");
            return -1;
        }
    }
    const char *prefix = "READY tcp://127.0.0.1:";
    const char *port = line + strlen(prefix);
    if (strncmp(line, prefix, strlen(prefix)) != 0 || *port == '\0' ||
        strspn(port, "0123456789") != strlen(port) || atoi(port) <= 0 || atoi(port) > 65535) {
        snprintf(problem, problem_len, "unexpected ready line \"%.120s\"", line);
        return -1;
    }
    snprintf(env->endpoint, sizeof env->endpoint, "%.64s", line + strlen("READY "));
    return 0;
}

void h_broker_start(h_env_t *env)
{
    h_broker_start_at(env, "tcp://127.0.0.1:*");
}

void h_broker_start_at(h_env_t *env, const char *listen)
{
    assert_int_equal(env->broker_pid, 0);
    char problem[256];
    if (h_broker_try_start_at(env, listen, problem, sizeof problem) != 0) {
        h_dump_log(env);
        fail_msg("%s", problem);
    }
}

int h_broker_try_start_at(h_env_t *env, const char *listen, char *problem, size_t problem_len)
{
    const char *program = h_schakeld_path();
    if (env->broker_pid != 0) {
        snprintf(problem, problem_len, "a broker (pid %ld) is still running",
                 (long)env->broker_pid);
        return -1;
    }
    if (access(program, X_OK) != 0) {
        snprintf(problem, problem_len, "%s is not an executable (%s); build it or set SCHAKELD",
                 program, strerror(errno));
        return -1;
    }

    int log_fd = open(env->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        snprintf(problem, problem_len, "open %s: %s", env->log_path, strerror(errno));
        return -1;
    }
    env->starts++;
    dprintf(log_fd, "=== harness: start %u of %s\n", env->starts, program);

    int pipefd[2];
    if (pipe(pipefd) != 0) {
        snprintf(problem, problem_len, "pipe: %s", strerror(errno));
        close(log_fd);
        return -1;
    }
    fcntl(pipefd[0], F_SETFD, FD_CLOEXEC);
    fcntl(pipefd[1], F_SETFD, FD_CLOEXEC);

    char *const argv[] = {(char *)(uintptr_t)program,
                          "--config",
                          env->config_path,
                          "--listen",
                          (char *)(uintptr_t)listen,
                          "--store",
                          env->store_path,
                          "--ready-fd",
                          "3",
                          NULL};
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(problem, problem_len, "fork: %s", strerror(errno));
        close(pipefd[0]);
        close(pipefd[1]);
        close(log_fd);
        return -1;
    }
    if (pid == 0)
        h_exec_broker(program, argv, pipefd[1], log_fd);
    close(pipefd[1]);
    close(log_fd);
    env->broker_pid = pid;
    env->broker_pidfd = h_pidfd_open(pid);
    if (env->broker_pidfd < 0) {
        snprintf(problem, problem_len, "pidfd_open: %s", strerror(errno));
        close(pipefd[0]);
        h_broker_kill9(env);
        return -1;
    }

    char why[200];
    int rc = h_await_ready(env, pipefd[0], why, sizeof why);
    close(pipefd[0]);
    if (rc != 0) {
        h_broker_kill9(env);
        snprintf(problem, problem_len, "schakeld did not start: %s", why);
        return -1;
    }
    if (strcmp(listen, "tcp://127.0.0.1:*") != 0 && strcmp(listen, env->endpoint) != 0) {
        snprintf(problem, problem_len, "schakeld asked to listen on %.100s reported READY %.100s",
                 listen, env->endpoint);
        h_broker_kill9(env);
        return -1;
    }
    return 0;
}

int h_broker_crash_restart(h_env_t *env, char *problem, size_t problem_len)
{
    if (env->broker_pid <= 0 || env->endpoint[0] == '\0') {
        snprintf(problem, problem_len, "no broker is running to crash");
        return -1;
    }
    char endpoint[sizeof env->endpoint];
    snprintf(endpoint, sizeof endpoint, "%s", env->endpoint);
    h_broker_kill9(env);
    /* While the port is free, a client reconnecting to it can, rarely, be
     * given that very port as its own source port (a TCP self-connect) and
     * hold it until its handshake fails; a second attempt finds it free. */
    for (int attempt = 1; attempt <= H_RESTART_ATTEMPTS; attempt++) {
        if (h_broker_try_start_at(env, endpoint, problem, problem_len) == 0)
            return 0;
        fprintf(stderr, "harness: restart %d of %d on %s failed: %s\n", attempt, H_RESTART_ATTEMPTS,
                endpoint, problem);
    }
    return -1;
}

static void h_broker_forget(h_env_t *env)
{
    if (env->broker_pidfd >= 0)
        close(env->broker_pidfd);
    env->broker_pidfd = -1;
    env->broker_pid = 0;
    env->endpoint[0] = '\0';
}

/* Note the ptrace-stop waitpid reported for the traced loop: the signal
 * it holds back (none for an interrupt's stop, PTRACE_EVENT_STOP), which
 * goes on with it when it is continued or let go. */
static void h_loop_note_stop(h_env_t *env, int status)
{
    env->loop_stopped = 1;
    env->loop_stop_signal = status >> 16 == PTRACE_EVENT_STOP ? 0 : WSTOPSIG(status);
}

/* Let the traced loop go, whatever it is doing. PTRACE_DETACH works only
 * on a tracee in a ptrace-stop (ESRCH while it runs: between the seize
 * and its stop, or after a PTRACE_CONT), and one left traced stays in a
 * signal-delivery-stop at the next signal, SIGTERM included, for a tracer
 * that no longer waits. So a running one is stopped first (PTRACE_INTERRUPT:
 * the loop was seized) and its stop waited for; a signal it stopped for
 * instead is handed on with the detach. Returns 0; -1 with why said (the
 * loop may still be traced), or 1 if the broker ended meanwhile (reaped
 * here: the env forgets it). */
static int h_loop_let_go(h_env_t *env, char *why, size_t whylen)
{
    pid_t pid = env->broker_pid;
    while (!env->loop_stopped) {
        if (ptrace(PTRACE_INTERRUPT, pid, NULL, NULL) != 0) {
            snprintf(why, whylen, "PTRACE_INTERRUPT of schakeld's loop (pid %ld): %s", (long)pid,
                     strerror(errno));
            return -1;
        }
        int status = 0;
        pid_t got;
        while ((got = waitpid(pid, &status, __WALL)) < 0 && errno == EINTR)
            ;
        if (got != pid) {
            snprintf(why, whylen, "waitpid for schakeld's loop (pid %ld) to stop: %s", (long)pid,
                     strerror(errno));
            return -1;
        }
        if (!WIFSTOPPED(status)) {
            snprintf(why, whylen, "schakeld (pid %ld) ended while its loop was traced (status %d)",
                     (long)pid, status);
            env->loop_paused = 0;
            h_broker_forget(env);
            return 1;
        }
        h_loop_note_stop(env, status);
    }
    if (ptrace(PTRACE_DETACH, pid, NULL, (void *)(intptr_t)env->loop_stop_signal) != 0) {
        snprintf(why, whylen, "PTRACE_DETACH of schakeld's stopped loop (pid %ld): %s", (long)pid,
                 strerror(errno));
        return -1;
    }
    env->loop_paused = env->loop_stopped = env->loop_stop_signal = 0;
    return 0;
}

/* A loop that h_broker_pause_loop traced goes on (a test that failed
 * before h_broker_resume_loop), so that signals reach it. */
static void h_broker_release_loop(h_env_t *env)
{
    char why[256];
    if (env->loop_paused && env->broker_pid > 0 && h_loop_let_go(env, why, sizeof why) != 0)
        fprintf(stderr, "harness: %s\n", why);
    env->loop_paused = 0;
}

int h_broker_stop(h_env_t *env)
{
    assert_true(env->broker_pid > 0);
    h_broker_release_loop(env);
    if (env->broker_pid <= 0)
        return -1; /* it ended while traced, and was reaped then */
    kill(env->broker_pid, SIGTERM);
    int status = h_wait_exit(env->broker_pid, env->broker_pidfd, H_TIMEOUT_MS);
    int code;
    if (status == -1) {
        fprintf(stderr, "harness: schakeld (pid %ld) ignored SIGTERM for %d ms; killing it\n",
                (long)env->broker_pid, H_TIMEOUT_MS);
        kill(env->broker_pid, SIGKILL);
        (void)h_wait_exit(env->broker_pid, env->broker_pidfd, H_TIMEOUT_MS);
        code = -1;
    } else {
        code = h_status_code(status);
    }
    h_broker_forget(env);
    return code;
}

int h_broker_await_exit(h_env_t *env, int timeout_ms)
{
    assert_true(env->broker_pid > 0);
    int status = h_wait_exit(env->broker_pid, env->broker_pidfd, timeout_ms);
    if (status == -1)
        return -1; /* still running: the caller decides */
    h_broker_forget(env);
    return h_status_code(status);
}

long h_log_offset(const h_env_t *env)
{
    struct stat st;
    return stat(env->log_path, &st) == 0 ? (long)st.st_size : 0;
}

/* Why an offset can fall inside a line: log.c writes each event line with
 * one write(2), but a write to a regular file reaches it a page at a time
 * (the kernel copies the data into the page cache page by page and grows
 * the file's size after each), so a size taken while the broker writes a
 * line that crosses a 4 KiB page ends inside it. Not every writer of the
 * log is log.c either: the broker's stdout (stdio, flushed in blocks),
 * sanitizer reports and the libraries' own stderr share the file. The
 * rule: a line belongs to where it began. */
FILE *h_log_open_at(const h_env_t *env, long offset)
{
    FILE *f = fopen(env->log_path, "r");
    if (f == NULL || offset <= 0)
        return f;
    int c = EOF;
    if (fseek(f, offset - 1, SEEK_SET) == 0)
        do
            c = getc(f);
        while (c != EOF && c != '\n');
    if (c == EOF) {
        fclose(f);
        return NULL;
    }
    return f;
}

/* Search whole lines of the log from offset (as h_log_open_at) for one that
 * holds needle. Returns 1 found, with *after (may be NULL) the offset just
 * past that line; 0 not (yet). */
static int h_log_find(const h_env_t *env, long offset, const char *needle, long *after)
{
    FILE *f = h_log_open_at(env, offset);
    if (f == NULL)
        return 0;
    int found = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    /* only whole lines: the broker may be writing the last one */
    while (!found && (len = getline(&line, &cap, f)) > 0 && line[len - 1] == '\n')
        found = strstr(line, needle) != NULL;
    if (found && after != NULL)
        *after = ftell(f);
    free(line);
    fclose(f);
    return found;
}

int h_log_count(const h_env_t *env, long offset, const char *needle)
{
    return h_log_count_both(env, offset, needle, NULL);
}

int h_log_count_both(const h_env_t *env, long offset, const char *needle, const char *also)
{
    FILE *f = h_log_open_at(env, offset);
    if (f == NULL) {
        assert_int_equal(access(env->log_path, F_OK), 0);
        return 0; /* the line the offset falls inside has not ended */
    }
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, f) > 0)
        n += strstr(line, needle) != NULL && (also == NULL || strstr(line, also) != NULL);
    free(line);
    fclose(f);
    return n;
}

/* h_await_log, with *after the offset just past the line found. */
static int h_await_log_after(const h_env_t *env, long offset, const char *needle, int timeout_ms,
                             long *after)
{
    int watch_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (watch_fd < 0 || inotify_add_watch(watch_fd, env->log_path, IN_MODIFY) < 0)
        fail_msg("inotify on %s: %s", env->log_path, strerror(errno));
    int64_t deadline = h_now_ms() + timeout_ms;
    int found;
    /* Check after arming the watch, so that a line written in between is
     * seen either by the search or as an event. */
    while (!(found = h_log_find(env, offset, needle, after)) && h_remaining_ms(deadline) > 0) {
        struct pollfd p = {.fd = watch_fd, .events = POLLIN};
        if (poll(&p, 1, h_remaining_ms(deadline)) > 0) {
            char events[4096];
            while (read(watch_fd, events, sizeof events) > 0)
                ;
        }
    }
    close(watch_fd);
    return found ? 0 : -1;
}

int h_await_log(const h_env_t *env, long offset, const char *needle, int timeout_ms)
{
    return h_await_log_after(env, offset, needle, timeout_ms, NULL);
}

int h_await_log_lines(const h_env_t *env, long offset, const char *needle, int n, int timeout_ms)
{
    long from = offset;
    for (int seen = 0; seen < n; seen++)
        if (h_await_log_after(env, from, needle, timeout_ms, &from) != 0)
            return -1;
    return 0;
}

int h_broker_reload(h_env_t *env)
{
    assert_true(env->broker_pid > 0);
    long offset = h_log_offset(env);
    kill(env->broker_pid, SIGHUP);
    if (h_await_log(env, offset, "event=policy.", H_TIMEOUT_MS) != 0) {
        h_dump_log(env);
        fail_msg("schakeld logged no policy reload outcome within %d ms", H_TIMEOUT_MS);
    }
    if (h_log_find(env, offset, "event=policy.reloaded ", NULL))
        return 1;
    if (h_log_find(env, offset, "event=policy.reload_refused ", NULL))
        return 0;
    h_dump_log(env);
    fail_msg("schakeld logged a policy event that is neither reloaded nor reload_refused");
    return -1;
}

static off_t h_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : 0;
}

rlim_t h_broker_file_limit_lower(h_env_t *env, struct rlimit *saved)
{
    char wal[PATH_MAX];
    snprintf(wal, sizeof wal, "%s-wal", env->store_path);
    off_t largest = h_file_size(env->store_path);
    if (h_file_size(wal) > largest)
        largest = h_file_size(wal);
    if (prlimit(env->broker_pid, RLIMIT_FSIZE, NULL, saved) != 0)
        fail_msg("prlimit: %s", strerror(errno));
    struct rlimit lowered = *saved;
    lowered.rlim_cur = (rlim_t)largest + 64 * 1024;
    if (prlimit(env->broker_pid, RLIMIT_FSIZE, &lowered, NULL) != 0)
        fail_msg("prlimit: %s", strerror(errno));
    return lowered.rlim_cur;
}

void h_broker_file_limit_restore(h_env_t *env, const struct rlimit *saved)
{
    if (prlimit(env->broker_pid, RLIMIT_FSIZE, saved, NULL) != 0)
        fail_msg("prlimit: %s", strerror(errno));
}

void h_broker_kill9(h_env_t *env)
{
    if (env->broker_pid <= 0)
        return;
    h_broker_release_loop(env);
    if (env->broker_pid <= 0)
        return; /* it ended while traced, and was reaped then */
    kill(env->broker_pid, SIGKILL);
    if (h_wait_exit(env->broker_pid, env->broker_pidfd, H_TIMEOUT_MS) == -1)
        fprintf(stderr, "harness: schakeld (pid %ld) did not die after SIGKILL\n",
                (long)env->broker_pid);
    h_broker_forget(env);
}

void h_broker_pause(h_env_t *env)
{
    assert_true(env->broker_pid > 0);
    if (kill(env->broker_pid, SIGSTOP) != 0)
        fail_msg("SIGSTOP: %s", strerror(errno));
    siginfo_t info;
    memset(&info, 0, sizeof info);
    /* WNOWAIT: the state stays for the harness, which waits for the exit */
    while (waitid(P_PID, (id_t)env->broker_pid, &info, WSTOPPED | WEXITED | WNOWAIT) != 0)
        if (errno != EINTR)
            fail_msg("waitid: %s", strerror(errno));
    if (info.si_code != CLD_STOPPED)
        fail_msg("the broker ended instead of stopping (si_code %d)", info.si_code);
}

void h_broker_resume(h_env_t *env)
{
    assert_true(env->broker_pid > 0);
    if (kill(env->broker_pid, SIGCONT) != 0)
        fail_msg("SIGCONT: %s", strerror(errno));
}

/* The system call thread tid of pid sleeps in (or was stopped in), read
 * from its /proc syscall file, which the kernel fills only for a thread
 * that is off the CPU in one sleep or stop throughout; -1 when it runs
 * ("running"), runs its own code ("-1 ..."), or has ended. */
static long h_thread_syscall(pid_t pid, pid_t tid)
{
    char path[64], text[64] = "";
    snprintf(path, sizeof path, "/proc/%ld/task/%ld/syscall", (long)pid, (long)tid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    int read_ok = fgets(text, sizeof text, f) != NULL;
    fclose(f);
    char *end = NULL;
    long nr = read_ok ? strtol(text, &end, 10) : -1;
    return read_ok && end != text ? nr : -1;
}

static int h_syscall_is_poll(long nr)
{
    return nr >= 0 && (0
#ifdef SYS_poll
                       || nr == SYS_poll
#endif
                       || nr == SYS_ppoll);
}

static int h_syscall_is_epoll_wait(long nr)
{
    return nr >= 0 && (0
#ifdef SYS_epoll_wait
                       || nr == SYS_epoll_wait
#endif
#ifdef SYS_epoll_pwait2
                       || nr == SYS_epoll_pwait2
#endif
                       || nr == SYS_epoll_pwait);
}

/* The traced loop, stopped, goes on with the signal its stop held back. */
static void h_loop_continue(h_env_t *env)
{
    if (ptrace(PTRACE_CONT, env->broker_pid, NULL, (void *)(intptr_t)env->loop_stop_signal) != 0)
        fail_msg("PTRACE_CONT: %s", strerror(errno));
    env->loop_stopped = env->loop_stop_signal = 0;
}

/* Wait for the traced loop's next stop (an interrupt, or a signal on its
 * way, which is delivered: the interrupt still waits). */
static void h_loop_await_stop(h_env_t *env)
{
    pid_t pid = env->broker_pid;
    for (int round = 0; round < 100; round++) { /* a signal a round */
        int status = 0;
        pid_t got;
        while ((got = waitpid(pid, &status, __WALL)) < 0 && errno == EINTR)
            ;
        if (got != pid)
            fail_msg("waitpid: %s", strerror(errno));
        if (!WIFSTOPPED(status)) {
            env->loop_paused = 0;
            h_broker_forget(env); /* reaped here */
            fail_msg("the broker ended while its loop was being stopped (status %d)", status);
        }
        h_loop_note_stop(env, status);
        if (status >> 16 == PTRACE_EVENT_STOP)
            return;
        h_loop_continue(env);
    }
    fail_msg("the broker's loop took 100 signals and did not stop");
}

int h_broker_trace_loop(h_env_t *env)
{
    assert_true(env->broker_pid > 0 && !env->loop_paused);
    pid_t pid = env->broker_pid; /* its main thread: the loop */
    if (ptrace(PTRACE_SEIZE, pid, NULL, NULL) != 0) {
        if (errno == EPERM) {
            fprintf(stderr, "harness: tracing schakeld is not permitted here (it is not dumpable: "
                            "that takes CAP_SYS_PTRACE); its loop cannot be stopped alone\n");
            return -1;
        }
        fail_msg("PTRACE_SEIZE: %s", strerror(errno));
    }
    env->loop_paused = 1;
    env->loop_stopped = env->loop_stop_signal = 0; /* seized, it runs on */
    return 0;
}

/* The loop is stopped where it waits for work (zmq_poll), never inside a
 * turn: there it may hold a lock (the allocator's, a libzmq mailbox's)
 * that libzmq's I/O threads then wait for. */
int h_broker_pause_loop(h_env_t *env)
{
    if (h_broker_trace_loop(env) != 0)
        return -1;
    pid_t pid = env->broker_pid;
    const struct timespec millisecond = {0, 1000000};
    int64_t deadline = h_now_ms() + H_TIMEOUT_MS;
    for (;;) {
        /* the kernel has no event for a thread's going to sleep */
        while (!h_syscall_is_poll(h_thread_syscall(pid, pid))) {
            if (h_now_ms() >= deadline)
                fail_msg("the broker's loop did not wait in poll within %d ms", H_TIMEOUT_MS);
            nanosleep(&millisecond, NULL);
        }
        if (ptrace(PTRACE_INTERRUPT, pid, NULL, NULL) != 0)
            fail_msg("PTRACE_INTERRUPT: %s", strerror(errno));
        h_loop_await_stop(env);
        if (h_syscall_is_poll(h_thread_syscall(pid, pid)))
            return 0;
        /* it had woken to a turn meanwhile: it goes on to its next wait */
        h_loop_continue(env);
        if (h_now_ms() >= deadline)
            fail_msg("the broker's loop was never stopped in poll within %d ms", H_TIMEOUT_MS);
    }
}

void h_broker_resume_loop(h_env_t *env)
{
    assert_true(env->broker_pid > 0 && env->loop_paused);
    char why[256];
    if (h_loop_let_go(env, why, sizeof why) != 0)
        fail_msg("harness: cannot let schakeld's loop go: %s", why);
}

int h_broker_await_io_idle(const h_env_t *env, int timeout_ms)
{
    assert_true(env->broker_pid > 0 && env->loop_paused);
    return h_await_io_idle_of(env->broker_pid, timeout_ms);
}

int h_await_io_idle_of(pid_t pid, int timeout_ms)
{
    const struct timespec millisecond = {0, 1000000};
    int64_t deadline = h_now_ms() + timeout_ms;
    char tasks[64];
    snprintf(tasks, sizeof tasks, "/proc/%ld/task", (long)pid);
    for (;;) {
        DIR *dir = opendir(tasks);
        if (dir == NULL)
            fail_msg("%s: %s", tasks, strerror(errno));
        int io_threads = 0, busy = 0;
        struct dirent *entry;
        while ((entry = readdir(dir)) != NULL) {
            char path[sizeof tasks + sizeof "//comm" + NAME_MAX], name[32] = "";
            if (entry->d_name[0] == '.')
                continue;
            snprintf(path, sizeof path, "%s/%s/comm", tasks, entry->d_name);
            FILE *f = fopen(path, "r");
            if (f == NULL)
                continue;
            if (fgets(name, sizeof name, f) == NULL)
                name[0] = '\0';
            fclose(f);
            if (strncmp(name, "ZMQbg/IO/", 9) != 0)
                continue;
            io_threads++;
            busy += !h_syscall_is_epoll_wait(
                h_thread_syscall(pid, (pid_t)strtol(entry->d_name, NULL, 10)));
        }
        closedir(dir);
        if (io_threads == 0)
            fail_msg("process %ld has no libzmq I/O thread (ZMQbg/IO/N) to wait for", (long)pid);
        if (busy == 0)
            return 0;
        if (h_now_ms() >= deadline)
            return -1;
        nanosleep(&millisecond, NULL); /* a thread's going to sleep is no event to wait on */
    }
}

/* ------------------------------------------------------------------ client helpers */

schakel_status_t h_try_connect(h_env_t *env, const char *key_file, schakel_client_t **out,
                               schakel_error_t *err)
{
    memset(err, 0, sizeof *err);
    *out = NULL;
    return schakel_connect(out, env->endpoint, env->broker_pub, key_file, H_TIMEOUT_MS, err);
}

schakel_client_t *h_connect(h_env_t *env, const char *principal)
{
    assert_true(env->endpoint[0] != '\0');
    schakel_client_t *client = NULL;
    schakel_error_t err;
    schakel_status_t st = h_try_connect(env, h_key_file(env, principal), &client, &err);
    if (st != SCHAKEL_OK || !client)
        fail_msg("connect as %s to %s: %s (%s)", principal, env->endpoint, schakel_strerror(st),
                 err.text);
    return client;
}

schakel_signal_t h_police_signal(const char *source_ref)
{
    schakel_signal_t s = {
        .kind = "witwassen",
        .theme = "ondermijning",
        .area = "GM0935",
        .severity = SCHAKEL_SEVERITY_HIGH,
        .observed_at = (int64_t)time(NULL) - 7200,
        .summary = "Contante aankoop van drie panden via een stichting",
        .source_ref = source_ref,
    };
    return s;
}

schakel_signal_t h_signal_cannabis(void)
{
    schakel_signal_t s = {.kind = "hennepkwekerij",
                          .theme = "ondermijning",
                          .area = "BU09350101",
                          .postcode = "6211AB",
                          .house_number = 12,
                          .subject = "PSN-1c4e88aa07",
                          .grounds = "Ramen afgeplakt, ventilatiegeluid dag en nacht",
                          .summary = "Signaal hennepteelt"};
    return s;
}

uint64_t h_publish_ok(schakel_client_t *client, const schakel_signal_t *signal,
                      const uint8_t *message_id, uint8_t id_out[16], uint32_t *recipients,
                      int *duplicate)
{
    schakel_item_result_t result = {0};
    int dup = -1;
    schakel_status_t st =
        schakel_publish(client, NULL, signal, 1, message_id, id_out, &result, &dup, H_TIMEOUT_MS);
    if (st != SCHAKEL_OK) {
        const schakel_error_t *e = schakel_last_error(client);
        fail_msg("publish %s/%s refused: %s %s: %s", signal->kind, signal->theme,
                 schakel_strerror(st), e->reason_name, e->text);
    }
    assert_true(dup == 0 || dup == 1);
    assert_true(result.seq > 0);
    if (recipients)
        *recipients = result.recipients;
    if (duplicate)
        *duplicate = dup;
    return result.seq;
}

const schakel_error_t *h_publish_refused(schakel_client_t *client, const char *sender,
                                         const schakel_signal_t *signal, const char *reason_name)
{
    schakel_item_result_t result = {0};
    schakel_status_t st =
        schakel_publish(client, sender, signal, 1, NULL, NULL, &result, NULL, H_TIMEOUT_MS);
    const schakel_error_t *e = schakel_last_error(client);
    if (st != SCHAKEL_ERR_REFUSED)
        fail_msg("publish %s/%s: expected refusal %s, got %s (seq %llu, %s)", signal->kind,
                 signal->theme, reason_name, schakel_strerror(st), (unsigned long long)result.seq,
                 e->text);
    if (strcmp(e->reason_name, reason_name) != 0)
        fail_msg("publish %s/%s: expected reason %s, got %s (%s)", signal->kind, signal->theme,
                 reason_name, e->reason_name, e->text);
    assert_int_equal(e->status, SCHAKEL_ERR_REFUSED);
    assert_true(e->text[0] != '\0');
    return e;
}

schakel_delivery_t *h_receive(schakel_client_t *client)
{
    schakel_delivery_t *d = NULL;
    schakel_status_t st = schakel_receive(client, &d, H_TIMEOUT_MS);
    if (st != SCHAKEL_OK || !d)
        fail_msg("receive: %s (%s)", schakel_strerror(st), schakel_last_error(client)->text);
    return d;
}

uint64_t h_backlog(schakel_client_t *client)
{
    uint64_t backlog = UINT64_MAX;
    schakel_status_t st = schakel_backlog(client, &backlog, H_TIMEOUT_MS);
    if (st != SCHAKEL_OK)
        fail_msg("backlog: %s (%s)", schakel_strerror(st), schakel_last_error(client)->text);
    assert_true(backlog != UINT64_MAX);
    return backlog;
}

uint64_t h_backlog_of(h_env_t *env, const char *principal)
{
    schakel_client_t *client = h_connect(env, principal);
    uint64_t backlog = h_backlog(client);
    schakel_close(&client);
    assert_null(client);
    return backlog;
}

static int h_listed(const char *principal, const char *const *list)
{
    for (size_t i = 0; list && list[i]; i++)
        if (strcmp(list[i], principal) == 0)
            return 1;
    return 0;
}

void h_assert_nobody_else(h_env_t *env, const char *const *except)
{
    for (size_t i = 0; h_receiving_principals[i]; i++) {
        const char *p = h_receiving_principals[i];
        if (h_listed(p, except))
            continue;
        uint64_t backlog = h_backlog_of(env, p);
        if (backlog != 0)
            fail_msg("%s has %llu deliveries in its mailbox; it should have none", p,
                     (unsigned long long)backlog);
    }
}

/* ------------------------------------------------------------------ delivery fields */

unsigned h_delivery_fields(const schakel_delivery_t *d)
{
    unsigned mask = 0;
    if (d->area)
        mask |= H_F_AREA;
    if (d->postcode || d->house_number || d->addition)
        mask |= H_F_ADDRESS;
    if (d->subject)
        mask |= H_F_SUBJECT;
    if (d->grounds)
        mask |= H_F_GROUNDS;
    if (d->case_ref)
        mask |= H_F_CASE_REF;
    if (d->severity)
        mask |= H_F_SEVERITY;
    if (d->observed_at)
        mask |= H_F_OBSERVED_AT;
    if (d->summary)
        mask |= H_F_SUMMARY;
    if (d->source_ref)
        mask |= H_F_SOURCE_REF;
    if (d->n_recipients)
        mask |= H_F_RECIPIENTS;
    return mask;
}

void h_field_names(unsigned mask, char *out, size_t outlen)
{
    static const char *const names[] = {"area",       "address",   "subject",     "grounds",
                                        "case_ref",   "severity",  "observed_at", "summary",
                                        "source_ref", "recipients"};
    size_t used = 0;
    out[0] = '\0';
    for (unsigned bit = 0; bit < sizeof names / sizeof names[0]; bit++) {
        if (!(mask & (1u << bit)))
            continue;
        int n = snprintf(out + used, outlen - used, "%s%s", used ? "," : "", names[bit]);
        if (n < 0 || (size_t)n >= outlen - used)
            return;
        used += (size_t)n;
    }
}

static void h_assert_same_text(const char *what, const char *got, const char *sent)
{
    if (!got || !sent || strcmp(got, sent) != 0)
        fail_msg("delivered %s \"%s\" differs from the published \"%s\"", what,
                 got ? got : "(absent)", sent ? sent : "(absent)");
}

void h_assert_delivery_fields(const schakel_delivery_t *d, const schakel_signal_t *sent,
                              unsigned expected)
{
    h_assert_same_text("kind", d->kind, sent->kind);
    h_assert_same_text("theme", d->theme, sent->theme);
    assert_non_null(d->sender);
    assert_non_null(d->sender_partner);
    if (!d->rule_id || !*d->rule_id || !d->purpose || !*d->purpose || !d->legal_basis ||
        !*d->legal_basis || !d->rule_hash || strlen(d->rule_hash) != 64)
        fail_msg("delivery %llu lacks rule_id/rule_hash/purpose/legal_basis",
                 (unsigned long long)d->seq);
    unsigned got = h_delivery_fields(d);
    if (got != expected) {
        char got_names[160], want_names[160];
        h_field_names(got, got_names, sizeof got_names);
        h_field_names(expected, want_names, sizeof want_names);
        fail_msg("delivery %llu under rule %s carries fields [%s], the rule allows [%s]",
                 (unsigned long long)d->seq, d->rule_id, got_names, want_names);
    }
    if (got & H_F_AREA)
        h_assert_same_text("area", d->area, sent->area);
    if (got & H_F_ADDRESS) {
        h_assert_same_text("postcode", d->postcode, sent->postcode);
        assert_int_equal(d->house_number, sent->house_number);
    }
    if (got & H_F_SUBJECT)
        h_assert_same_text("subject", d->subject, sent->subject);
    if (got & H_F_GROUNDS)
        h_assert_same_text("grounds", d->grounds, sent->grounds);
    if (got & H_F_CASE_REF)
        h_assert_same_text("case_ref", d->case_ref, sent->case_ref);
    if (got & H_F_SEVERITY)
        assert_int_equal(d->severity, sent->severity);
    if (got & H_F_OBSERVED_AT)
        assert_int_equal(d->observed_at, sent->observed_at);
    if (got & H_F_SUMMARY)
        h_assert_same_text("summary", d->summary, sent->summary);
    if (got & H_F_SOURCE_REF)
        h_assert_same_text("source_ref", d->source_ref, sent->source_ref);
    assert_true(d->expires_at > d->accepted_at);
    assert_true(d->accepted_at > 0);
}

/* ------------------------------------------------------------------ CLI */

/* envp for the CLI: ours without SCHAKEL_*, plus the three variables and
 * extra ("NAME=value", or NULL). */
static char **h_cli_envp(const char *endpoint, const char *broker_pub, const char *key_file,
                         const char *extra, const char *extra2)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = calloc(n + 6, sizeof *envp);
    assert_non_null(envp);
    size_t used = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "SCHAKEL_", 8) != 0)
            envp[used++] = strdup(environ[i]);
    if (endpoint && asprintf(&envp[used++], "SCHAKEL_BROKER=%s", endpoint) < 0)
        fail_msg("out of memory");
    if (broker_pub && asprintf(&envp[used++], "SCHAKEL_BROKER_KEY=%s", broker_pub) < 0)
        fail_msg("out of memory");
    if (key_file && asprintf(&envp[used++], "SCHAKEL_KEY=%s", key_file) < 0)
        fail_msg("out of memory");
    if (extra && (envp[used++] = strdup(extra)) == NULL)
        fail_msg("out of memory");
    if (extra2 && (envp[used++] = strdup(extra2)) == NULL)
        fail_msg("out of memory");
    envp[used] = NULL;
    return envp;
}

static void h_free_strv(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

typedef struct h_buf {
    char *data;
    size_t len, cap;
} h_buf_t;

static int h_buf_read(h_buf_t *b, int fd)
{
    if (b->cap - b->len < 4097) {
        size_t cap = b->cap ? b->cap * 2 : 8192;
        char *data = realloc(b->data, cap);
        if (!data)
            return -1;
        b->data = data;
        b->cap = cap;
        b->data[b->len] = '\0';
    }
    ssize_t n = read(fd, b->data + b->len, b->cap - b->len - 1);
    if (n < 0 && errno == EINTR)
        return 1;
    if (n <= 0)
        return 0;
    b->len += (size_t)n;
    b->data[b->len] = '\0';
    return 1;
}

static char *h_buf_take(h_buf_t *b)
{
    if (!b->data)
        return strdup("");
    return b->data;
}

/* How a tool's child is prepared before its exec (NULL fn: not at all). */
typedef struct h_prepare {
    h_child_prepare_fn fn;
    const void *arg;
} h_prepare_t;

/* Child side of a CLI run: stdin, stdout, stderr from the pipes, SIGPIPE
 * at its default (the harness ignores it, and an ignored signal stays so
 * across exec), the file-size limit (0: ours), the preparation, then exec. */
static void h_exec_cli(const char *program, char *const argv[], char *const envp[], int in_r,
                       int out_w, int err_w, rlim_t file_limit, const h_prepare_t *prepare)
{
    if (dup2(in_r, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0)
        _exit(126);
    syscall(SYS_close_range, 3u, ~0u, 0u);
    signal(SIGPIPE, SIG_DFL);
    if (file_limit != 0) {
        const struct rlimit limit = {file_limit, file_limit};
        signal(SIGXFSZ, SIG_IGN);
        if (setrlimit(RLIMIT_FSIZE, &limit) != 0)
            _exit(126);
    }
    if (prepare != NULL && prepare->fn != NULL && prepare->fn(prepare->arg) != 0)
        _exit(125);
    execve(program, argv, envp);
    _exit(127);
}

/* Pump stdin text in and stdout/stderr out until both close or the deadline. */
static int h_cli_pump(int in_w, const char *stdin_text, int out_r, int err_r, h_buf_t *out,
                      h_buf_t *err, int64_t deadline)
{
    size_t in_len = stdin_text ? strlen(stdin_text) : 0, in_done = 0;
    int open_out = out_r >= 0, open_err = err_r >= 0;
    if (in_w >= 0 && in_len == 0) {
        close(in_w);
        in_w = -1;
    }
    while (open_out || open_err) {
        struct pollfd p[3] = {{.fd = open_out ? out_r : -1, .events = POLLIN},
                              {.fd = open_err ? err_r : -1, .events = POLLIN},
                              {.fd = in_w, .events = POLLOUT}};
        int left = h_remaining_ms(deadline);
        if (left == 0)
            break;
        int n = poll(p, 3, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        if (p[0].revents && (open_out = h_buf_read(out, out_r)) < 0)
            return -1;
        if (p[1].revents && (open_err = h_buf_read(err, err_r)) < 0)
            return -1;
        if (in_w >= 0 && p[2].revents) {
            ssize_t w = write(in_w, stdin_text + in_done, in_len - in_done);
            if (w > 0)
                in_done += (size_t)w;
            if (w < 0 && errno != EINTR && errno != EAGAIN)
                in_done = in_len;
            if (in_done == in_len) {
                close(in_w);
                in_w = -1;
            }
        }
    }
    if (in_w >= 0)
        close(in_w);
    return (open_out || open_err) ? -1 : 0;
}

/* A pseudo-terminal pair for a tool's stderr: fds[0] the master (read, as
 * a pipe's read end; EIO after the tool exits reads as the end), fds[1] the
 * terminal the tool writes to. */
static void h_open_pty(int fds[2])
{
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    const char *name = NULL;
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0 ||
        (name = ptsname(master)) == NULL)
        fail_msg("pseudo-terminal: %s", strerror(errno));
    int slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0)
        fail_msg("open %s: %s", name, strerror(errno));
    fds[0] = master;
    fds[1] = slave;
}

/* Run `program` with args (NULL-terminated, without the program name) and
 * envp to its end, stdin_text on stdin (NULL: none), within
 * h_cli_timeout_ms(); fills res (status -1 when it did not finish in time,
 * the process then killed). The one place the harness runs a tool. */
static int h_run_program(const char *program, const char *const *args, char *const *envp,
                         const h_cli_target_t *io, const h_prepare_t *prepare,
                         h_cli_result_t *res)
{
    const h_cli_target_t none = {0};
    if (io == NULL)
        io = &none;
    const char *stdin_text = io->stdin_text;
    int stderr_tty = io->stderr_tty;
    size_t argc = 0;
    while (args[argc])
        argc++;
    char **argv = calloc(argc + 2, sizeof *argv);
    assert_non_null(argv);
    argv[0] = strdup(program);
    for (size_t i = 0; i < argc; i++)
        argv[i + 1] = strdup(args[i]);

    int in[2], out[2] = {-1, -1}, err[2] = {-1, -1};
    if (pipe2(in, O_CLOEXEC) != 0 || (io->stdout_fd == NULL && pipe2(out, O_CLOEXEC) != 0) ||
        (!stderr_tty && io->stderr_fd == NULL && pipe2(err, O_CLOEXEC) != 0))
        fail_msg("pipe: %s", strerror(errno));
    if (stderr_tty && io->stderr_fd == NULL)
        h_open_pty(err);
    /* A tool that exits without reading stdin must not kill us with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    pid_t pid = fork();
    if (pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0)
        h_exec_cli(program, argv, envp, in[0], io->stdout_fd ? *io->stdout_fd : out[1],
                   io->stderr_fd ? *io->stderr_fd : err[1], io->file_limit, prepare);
    close(in[0]);
    if (out[1] >= 0)
        close(out[1]);
    if (err[1] >= 0)
        close(err[1]);
    int pidfd = h_pidfd_open(pid);
    if (io->pid_fd != NULL && write(*io->pid_fd, &pid, sizeof pid) != (ssize_t)sizeof pid)
        fprintf(stderr, "harness: cannot pass on the process id: %s\n", strerror(errno));

    int64_t deadline = h_now_ms() + h_cli_timeout_ms();
    h_buf_t out_buf = {0}, err_buf = {0};
    int pumped = h_cli_pump(in[1], stdin_text, out[0], err[0], &out_buf, &err_buf, deadline);
    if (out[0] >= 0)
        close(out[0]);
    if (err[0] >= 0)
        close(err[0]);
    int status = h_wait_exit(pid, pidfd, h_remaining_ms(deadline) + 1000);
    if (status == -1 || pumped != 0) {
        kill(pid, SIGKILL);
        (void)h_wait_exit(pid, pidfd, H_TIMEOUT_MS);
        res->status = -1;
    } else {
        res->status = h_status_code(status);
    }
    if (pidfd >= 0)
        close(pidfd);
    res->out = h_buf_take(&out_buf);
    res->err = h_buf_take(&err_buf);
    h_free_strv(argv);
    return res->status;
}

int h_run_cli_argv(h_env_t *env, const char *principal, const h_cli_target_t *target,
                   const char *const *args, h_cli_result_t *res)
{
    memset(res, 0, sizeof *res);
    const char *program = h_schakel_path();
    if (access(program, X_OK) != 0)
        fail_msg("%s is not an executable (%s); build it or set SCHAKEL", program, strerror(errno));
    h_cli_target_t t = target ? *target : (h_cli_target_t){0};
    const char *endpoint = t.endpoint ? t.endpoint : env->endpoint;
    const char *broker_pub = t.broker_pub ? t.broker_pub : env->broker_pub;
    const char *key_file = t.key_file ? t.key_file : principal ? h_key_file(env, principal) : NULL;
    char **envp = h_cli_envp(endpoint, broker_pub, key_file, t.extra_env, t.extra_env2);
    h_run_program(program, args, envp, &t, NULL, res);
    h_free_strv(envp);
    return res->status;
}

int h_run_cli(h_env_t *env, const char *principal, h_cli_result_t *res, ...)
{
    const char *args[64];
    size_t n = 0;
    va_list ap;
    va_start(ap, res);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        assert_true(n < sizeof args / sizeof args[0] - 1);
        args[n++] = a;
    }
    va_end(ap);
    args[n] = NULL;
    return h_run_cli_argv(env, principal, NULL, args, res);
}

void h_repeated_option(const char **out, const char *const *args, size_t n_args, const char *option,
                       const char *value, size_t times)
{
    size_t n = 0;
    for (size_t i = 0; i < n_args; i++)
        out[n++] = args[i];
    for (size_t i = 0; i < times; i++) {
        out[n++] = option;
        out[n++] = value;
    }
    out[n] = NULL;
}

void h_cli_result_free(h_cli_result_t *res)
{
    free(res->out);
    free(res->err);
    res->out = res->err = NULL;
}

void h_copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    if (in == NULL || out == NULL)
        fail_msg("copy %s to %s: %s", from, to, strerror(errno));
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            fail_msg("copy %s to %s: %s", from, to, strerror(errno));
    if (ferror(in))
        fail_msg("copy %s: %s", from, strerror(errno));
    fclose(in);
    if (fclose(out) != 0)
        fail_msg("copy to %s: %s", to, strerror(errno));
}

static sqlite3 *h_store_open_at(const char *path, int flags)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK)
        fail_msg("open %s: %s", path, db != NULL ? sqlite3_errmsg(db) : "no memory");
    sqlite3_busy_timeout(db, H_TIMEOUT_MS);
    return db;
}

static sqlite3 *h_store_open(const h_env_t *env, int flags)
{
    return h_store_open_at(env->store_path, flags);
}

/* Run `sql`, which changes one row, on the store beside the broker with
 * blob as ?1, past the schema's CHECK constraints (a damaged disk does
 * not ask them). */
static void h_store_set_blob(const h_env_t *env, const char *sql, const uint8_t *blob, int len)
{
    sqlite3 *db = h_store_open(env, SQLITE_OPEN_READWRITE);
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_exec(db, "PRAGMA ignore_check_constraints = ON", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK ||
        sqlite3_bind_blob(stmt, 1, blob, len, SQLITE_TRANSIENT) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_DONE || sqlite3_changes(db) != 1)
        fail_msg("%s: %s (%d rows)", sql, sqlite3_errmsg(db), sqlite3_changes(db));
    sqlite3_finalize(stmt);
    sqlite3_close(db);
}

void h_damage_row(const h_env_t *env, h_damage_t *d, const char *table, const char *column,
                  const char *where)
{
    char select[256];
    snprintf(select, sizeof select, "SELECT %s FROM %s WHERE %s", column, table, where);
    snprintf(d->update, sizeof d->update, "UPDATE %s SET %s = ?1 WHERE %s", table, column, where);
    sqlite3 *db = h_store_open(env, SQLITE_OPEN_READONLY);
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, select, -1, &stmt, NULL) != SQLITE_OK)
        fail_msg("%s: %s", select, sqlite3_errmsg(db));
    if (sqlite3_step(stmt) != SQLITE_ROW || (d->len = sqlite3_column_bytes(stmt, 0)) < 2)
        fail_msg("%s: no value to damage", select);
    d->saved = malloc((size_t)d->len);
    assert_non_null(d->saved);
    memcpy(d->saved, sqlite3_column_blob(stmt, 0), (size_t)d->len);
    if (sqlite3_step(stmt) != SQLITE_DONE)
        fail_msg("%s: more than one row", select);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    h_store_set_blob(env, d->update, d->saved, d->len - 1);
}

void h_damage_repair(const h_env_t *env, h_damage_t *d)
{
    h_store_set_blob(env, d->update, d->saved, d->len);
    free(d->saved);
    d->saved = NULL;
}

int64_t h_store_int(const h_env_t *env, const char *sql, const char *param)
{
    sqlite3 *db = h_store_open(env, SQLITE_OPEN_READONLY);
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    if (param != NULL)
        sqlite3_bind_text(stmt, 1, param, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(stmt) != SQLITE_ROW)
        fail_msg("%s: no row (%s)", sql, sqlite3_errmsg(db));
    int64_t value = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    if (sqlite3_close(db) != SQLITE_OK)
        fail_msg("close %s", env->store_path);
    return value;
}

void h_store_exec(const h_env_t *env, const char *sql)
{
    sqlite3 *db = h_store_open(env, SQLITE_OPEN_READWRITE);
    char *message = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &message) != SQLITE_OK)
        fail_msg("%s: %s", sql, message);
    if (sqlite3_close(db) != SQLITE_OK)
        fail_msg("close %s", env->store_path);
}

/* ---- the mailbox rows */

/* A mailbox row's columns as the helpers below read them (first_seq, n,
 * done, first_item_seq, items, rules, recipient, in that order), checked
 * as far as they use them. */
typedef struct h_row {
    int64_t first_seq, n, first_item_seq;
    const uint8_t *done, *items;
    const char *rules, *recipient;
    size_t rules_len;
} h_row_t;

#define H_ROW_COLUMNS "first_seq, n, done, first_item_seq, items, rules, recipient"

static void h_row_read(sqlite3_stmt *stmt, h_row_t *r)
{
    r->first_seq = sqlite3_column_int64(stmt, 0);
    r->n = sqlite3_column_int64(stmt, 1);
    r->done = sqlite3_column_blob(stmt, 2);
    int done_len = sqlite3_column_bytes(stmt, 2);
    r->first_item_seq = sqlite3_column_int64(stmt, 3);
    r->items = sqlite3_column_blob(stmt, 4);
    int items_len = sqlite3_column_bytes(stmt, 4);
    r->rules = (const char *)sqlite3_column_text(stmt, 5);
    r->rules_len = (size_t)sqlite3_column_bytes(stmt, 5);
    r->recipient = (const char *)sqlite3_column_text(stmt, 6);
    if (r->n < 1 || r->n > 1024 || r->items == NULL || items_len != 4 * r->n ||
        (r->done != NULL && done_len != (r->n + 7) / 8) || r->rules == NULL || r->recipient == NULL)
        fail_msg("mailbox row %lld: not as the broker writes a row", (long long)r->first_seq);
}

static int h_row_done(const h_row_t *r, int64_t i)
{
    return r->done != NULL && ((r->done[i / 8] >> (i % 8)) & 1);
}

/* Entry i's item index (what 0) or rule slot (what 1). */
static unsigned h_row_entry(const h_row_t *r, int64_t i, int what)
{
    const uint8_t *at = r->items + 4 * i + 2 * what;
    return (unsigned)at[0] | (unsigned)at[1] << 8;
}

/* The netstring of the row's rule lines that starts at pos: its bytes at
 * *at, its length in *len; returns where the next starts. Fails the test
 * when none starts there. */
static size_t h_row_netstring_at(const h_row_t *r, size_t pos, const char **at, size_t *len)
{
    size_t n = 0, digits = 0;
    while (pos + digits < r->rules_len && digits < 9 &&
           isdigit((unsigned char)r->rules[pos + digits]))
        n = n * 10 + (size_t)(r->rules[pos + digits++] - '0');
    size_t body = pos + digits + 1;
    if (digits == 0 || body > r->rules_len || r->rules[body - 1] != ':' ||
        r->rules_len - body < n + 1 || r->rules[body + n] != ',')
        fail_msg("mailbox row %lld: its rule lines hold no netstring at byte %zu",
                 (long long)r->first_seq, pos);
    *at = r->rules + body;
    *len = n;
    return body + n + 1;
}

/* The netstring k of the row's rule lines (as h_row_netstring_at). */
static void h_row_netstring(const h_row_t *r, unsigned k, const char **at, size_t *len)
{
    size_t pos = 0;
    for (unsigned i = 0; i <= k; i++)
        pos = h_row_netstring_at(r, pos, at, len);
}

/* Rule field `field` of slot `slot` of the row, as text into out. */
static void h_row_rule(const h_row_t *r, unsigned slot, enum h_rule_field field, char *out,
                       size_t outlen)
{
    const char *at = NULL;
    size_t len = 0;
    h_row_netstring(r, slot * 5 + (unsigned)field, &at, &len);
    if (len >= outlen)
        fail_msg("mailbox row %lld: rule field %d of slot %u is longer than %zu bytes",
                 (long long)r->first_seq, (int)field, slot, outlen - 1);
    memcpy(out, at, len);
    out[len] = '\0';
}

static int64_t h_row_expires_at(const h_row_t *r, unsigned slot)
{
    char text[24], *end = NULL;
    h_row_rule(r, slot, H_RULE_EXPIRES_AT, text, sizeof text);
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0')
        fail_msg("mailbox row %lld: expiry \"%s\" of slot %u is no number", (long long)r->first_seq,
                 text, slot);
    return value;
}

static sqlite3_stmt *h_prepare(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    return stmt;
}

size_t h_mailbox_waiting(const h_env_t *env, const char *recipient, h_waiting_t *out, size_t max)
{
    sqlite3 *db = h_store_open(env, SQLITE_OPEN_READONLY);
    sqlite3_stmt *rows = h_prepare(db, "SELECT " H_ROW_COLUMNS " FROM mailbox"
                                       " WHERE ?1 IS NULL OR recipient = ?1 ORDER BY first_seq");
    if (recipient != NULL)
        sqlite3_bind_text(rows, 1, recipient, -1, SQLITE_TRANSIENT);
    size_t count = 0;
    int rc;
    while ((rc = sqlite3_step(rows)) == SQLITE_ROW) {
        h_row_t r;
        h_row_read(rows, &r);
        for (int64_t i = 0; i < r.n; i++) {
            if (h_row_done(&r, i))
                continue;
            if (count < max) {
                h_waiting_t *w = &out[count];
                unsigned slot = h_row_entry(&r, i, 1);
                w->seq = r.first_seq + i;
                w->first_seq = r.first_seq;
                w->item_seq = r.first_item_seq + (int64_t)h_row_entry(&r, i, 0) -
                              (int64_t)h_row_entry(&r, 0, 0);
                w->expires_at = h_row_expires_at(&r, slot);
                if (strlen(r.recipient) >= sizeof w->recipient)
                    fail_msg("mailbox row %lld: recipient too long", (long long)r.first_seq);
                strcpy(w->recipient, r.recipient);
                h_row_rule(&r, slot, H_RULE_ID, w->rule_id, sizeof w->rule_id);
            }
            count++;
        }
    }
    if (rc != SQLITE_DONE)
        fail_msg("reading the mailbox rows: %s", sqlite3_errmsg(db));
    sqlite3_finalize(rows);
    sqlite3_close(db);
    return count;
}

int h_mailbox_holds(const h_env_t *env, int64_t seq)
{
    sqlite3 *db = h_store_open(env, SQLITE_OPEN_READONLY);
    sqlite3_stmt *row = h_prepare(db, "SELECT " H_ROW_COLUMNS " FROM mailbox WHERE first_seq <= ?1"
                                      " ORDER BY first_seq DESC LIMIT 1");
    sqlite3_bind_int64(row, 1, seq);
    int holds = 0, rc = sqlite3_step(row);
    if (rc == SQLITE_ROW) {
        h_row_t r;
        h_row_read(row, &r);
        holds = seq < r.first_seq + r.n && !h_row_done(&r, seq - r.first_seq);
    } else if (rc != SQLITE_DONE)
        fail_msg("reading the mailbox rows: %s", sqlite3_errmsg(db));
    sqlite3_finalize(row);
    sqlite3_close(db);
    return holds;
}

void h_mailbox_rule_set(const h_env_t *env, int64_t first_seq, enum h_rule_field field,
                        const char *value)
{
    sqlite3 *db = h_store_open(env, SQLITE_OPEN_READWRITE);
    sqlite3_stmt *row = h_prepare(db, "SELECT " H_ROW_COLUMNS " FROM mailbox WHERE first_seq = ?1");
    sqlite3_bind_int64(row, 1, first_seq);
    if (sqlite3_step(row) != SQLITE_ROW)
        fail_msg("no mailbox row %lld (%s)", (long long)first_seq, sqlite3_errmsg(db));
    h_row_t r;
    h_row_read(row, &r);
    size_t cap = r.rules_len + 1, used = 0;
    for (size_t k = 0; k < r.rules_len; k++)
        cap += r.rules[k] == ',' ? strlen(value) + 24 : 0; /* at least one a field */
    char *rules = malloc(cap);
    assert_non_null(rules);
    for (size_t pos = 0, k = 0; pos < r.rules_len; k++) {
        const char *at = NULL;
        size_t len = 0;
        pos = h_row_netstring_at(&r, pos, &at, &len);
        if (k % 5 == (size_t)field) {
            at = value;
            len = strlen(value);
        }
        used += (size_t)snprintf(rules + used, cap - used, "%zu:%.*s,", len, (int)len, at);
    }
    sqlite3_finalize(row);
    sqlite3_stmt *update = h_prepare(db, "UPDATE mailbox SET rules = ?1 WHERE first_seq = ?2");
    sqlite3_bind_text(update, 1, rules, (int)used, SQLITE_TRANSIENT);
    sqlite3_bind_int64(update, 2, first_seq);
    if (sqlite3_step(update) != SQLITE_DONE || sqlite3_changes(db) != 1)
        fail_msg("rule lines of mailbox row %lld: %s", (long long)first_seq, sqlite3_errmsg(db));
    sqlite3_finalize(update);
    free(rules);
    if (sqlite3_close(db) != SQLITE_OK)
        fail_msg("close %s", env->store_path);
}

int64_t h_store_rewind_mailbox_at(const char *path, int version)
{
    if (version < 5 || version > 12)
        fail_msg("h_store_rewind_mailbox: schema %d is not one of 5 .. 12", version);
    sqlite3 *db = h_store_open_at(path, SQLITE_OPEN_READWRITE);
    char *message = NULL;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &message) != SQLITE_OK ||
        sqlite3_exec(db, STORE_V12_DELIVERIES_SQL, NULL, NULL, &message) != SQLITE_OK ||
        (version >= 10 &&
         sqlite3_exec(db, STORE_V12_DELIVERIES_SET_ASIDE_SQL, NULL, NULL, &message) != SQLITE_OK))
        fail_msg("the deliveries tables: %s", message);
    sqlite3_stmt *aside = h_prepare(db, "SELECT count(*) FROM mailbox_set_aside");
    if (sqlite3_step(aside) != SQLITE_ROW || sqlite3_column_int64(aside, 0) != 0)
        fail_msg("h_store_rewind_mailbox takes back no row set aside");
    sqlite3_finalize(aside);
    sqlite3_stmt *rows =
        h_prepare(db, "SELECT " H_ROW_COLUMNS ", sender, sender_partner, message_id, accepted_at,"
                      " body, case_id, is_case_event FROM mailbox ORDER BY first_seq");
    sqlite3_stmt *insert = h_prepare(
        db, "INSERT INTO deliveries (seq, recipient, item_seq, sender, sender_partner, message_id,"
            " item_index, accepted_at, rule_id, rule_hash, purpose, legal_basis, expires_at, body,"
            " case_id, is_case_event, by_ref)"
            " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,"
            " ?15 IS NULL)");
    int64_t moved = 0;
    int rc;
    while ((rc = sqlite3_step(rows)) == SQLITE_ROW) {
        h_row_t r;
        h_row_read(rows, &r);
        for (int64_t i = 0; i < r.n; i++) {
            if (h_row_done(&r, i))
                continue;
            unsigned slot = h_row_entry(&r, i, 1), index = h_row_entry(&r, i, 0);
            char rule[4][512];
            for (int f = H_RULE_ID; f <= H_RULE_LEGAL_BASIS; f++)
                h_row_rule(&r, slot, (enum h_rule_field)f, rule[f - 1], sizeof rule[0]);
            sqlite3_bind_int64(insert, 1, r.first_seq + i);
            sqlite3_bind_text(insert, 2, r.recipient, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(insert, 3,
                               r.first_item_seq + (int64_t)index - (int64_t)h_row_entry(&r, 0, 0));
            sqlite3_bind_value(insert, 4, sqlite3_column_value(rows, 7));
            sqlite3_bind_value(insert, 5, sqlite3_column_value(rows, 8));
            sqlite3_bind_value(insert, 6, sqlite3_column_value(rows, 9));
            sqlite3_bind_int64(insert, 7, index);
            sqlite3_bind_value(insert, 8, sqlite3_column_value(rows, 10));
            for (int f = 0; f < 4; f++)
                sqlite3_bind_text(insert, 9 + f, rule[f], -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(insert, 13, h_row_expires_at(&r, slot));
            sqlite3_bind_value(insert, 14, sqlite3_column_value(rows, 11));
            sqlite3_bind_value(insert, 15, sqlite3_column_value(rows, 12));
            sqlite3_bind_value(insert, 16, sqlite3_column_value(rows, 13));
            if (sqlite3_step(insert) != SQLITE_DONE)
                fail_msg("delivery %lld into deliveries: %s", (long long)(r.first_seq + i),
                         sqlite3_errmsg(db));
            sqlite3_reset(insert);
            moved++;
        }
    }
    if (rc != SQLITE_DONE)
        fail_msg("reading the mailbox rows: %s", sqlite3_errmsg(db));
    sqlite3_finalize(insert);
    sqlite3_finalize(rows);
    char tail[160];
    snprintf(tail, sizeof tail,
             "DROP TABLE mailbox; DROP TABLE mailbox_set_aside; PRAGMA user_version = %d; COMMIT",
             version);
    if (sqlite3_exec(db, tail, NULL, NULL, &message) != SQLITE_OK)
        fail_msg("%s: %s", tail, message);
    if (sqlite3_close(db) != SQLITE_OK)
        fail_msg("close %s", path);
    return moved;
}

int64_t h_store_rewind_mailbox(const h_env_t *env, int version)
{
    return h_store_rewind_mailbox_at(env->store_path, version);
}

int h_closed_port(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail_msg("socket: %s", strerror(errno));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0)
        fail_msg("bind 127.0.0.1:0: %s", strerror(errno));
    *port = ntohs(addr.sin_port);
    return fd;
}

void h_closed_port_release(int fd)
{
    if (fd >= 0)
        close(fd);
}

/* ------------------------------------------------------------------ fixtures */

int h_setup_env(void **state)
{
    *state = h_env_new();
    return 0;
}

int h_setup_broker(void **state)
{
    h_env_t *env = h_env_new();
    *state = env;
    h_broker_start(env);
    return 0;
}

int h_teardown(void **state)
{
    h_env_t *env = *state;
    h_env_free(&env);
    *state = NULL;
    return 0;
}

/* ------------------------------------------------------------------ extra options, one-shot */

/* argv of a broker start: the harness's options, then the caller's extra
 * words (which override them), then the ready fd. Returns 0, or -1 when
 * there are more than H_MAX_EXTRA_ARGS extra words. */
static int h_broker_argv(const h_env_t *env, const char *program, const char *listen,
                         const char *const *extra, char **argv, size_t argv_len)
{
    size_t n_extra = 0;
    while (extra && extra[n_extra])
        n_extra++;
    if (n_extra > H_MAX_EXTRA_ARGS || 10 + n_extra > argv_len)
        return -1;
    size_t argc = 0;
    argv[argc++] = (char *)(uintptr_t)program;
    argv[argc++] = "--config";
    argv[argc++] = (char *)(uintptr_t)env->config_path;
    argv[argc++] = "--listen";
    argv[argc++] = (char *)(uintptr_t)listen;
    argv[argc++] = "--store";
    argv[argc++] = (char *)(uintptr_t)env->store_path;
    for (size_t i = 0; i < n_extra; i++)
        argv[argc++] = (char *)(uintptr_t)extra[i];
    argv[argc++] = "--ready-fd";
    argv[argc++] = "3";
    argv[argc] = NULL;
    return 0;
}

int h_broker_try_start_with(h_env_t *env, const char *listen, const char *const *extra,
                            char *problem, size_t problem_len)
{
    const char *program = h_schakeld_path();
    char *argv[H_MAX_EXTRA_ARGS + 11];
    if (env->broker_pid != 0) {
        snprintf(problem, problem_len, "a broker (pid %ld) is still running",
                 (long)env->broker_pid);
        return -1;
    }
    if (access(program, X_OK) != 0) {
        snprintf(problem, problem_len, "%s is not an executable (%s); build it or set SCHAKELD",
                 program, strerror(errno));
        return -1;
    }
    if (h_broker_argv(env, program, listen, extra, argv, sizeof argv / sizeof argv[0]) != 0) {
        snprintf(problem, problem_len, "more than %d extra schakeld options", H_MAX_EXTRA_ARGS);
        return -1;
    }
    int log_fd = open(env->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        snprintf(problem, problem_len, "open %s: %s", env->log_path, strerror(errno));
        return -1;
    }
    env->starts++;
    dprintf(log_fd, "=== harness: start %u of %s (with extra options)\n", env->starts, program);
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        snprintf(problem, problem_len, "pipe: %s", strerror(errno));
        close(log_fd);
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(problem, problem_len, "fork: %s", strerror(errno));
        close(pipefd[0]);
        close(pipefd[1]);
        close(log_fd);
        return -1;
    }
    if (pid == 0)
        h_exec_broker(program, argv, pipefd[1], log_fd);
    close(pipefd[1]);
    close(log_fd);
    env->broker_pid = pid;
    env->broker_pidfd = h_pidfd_open(pid);
    char why[200];
    int rc = -1;
    if (env->broker_pidfd < 0)
        snprintf(why, sizeof why, "pidfd_open: %s", strerror(errno));
    else
        rc = h_await_ready(env, pipefd[0], why, sizeof why);
    close(pipefd[0]);
    if (rc == 0 && strcmp(listen, "tcp://127.0.0.1:*") != 0 && strcmp(listen, env->endpoint) != 0) {
        snprintf(why, sizeof why, "asked to listen on %.80s it reported READY %.80s", listen,
                 env->endpoint);
        rc = -1;
    }
    if (rc != 0) {
        h_broker_kill9(env);
        snprintf(problem, problem_len, "schakeld did not start: %s", why);
    }
    return rc;
}

/* Our environment with the variables of extra ("NAME=value", NULL-terminated)
 * in place of ours of the same names; the array is the caller's to free
 * (the strings are borrowed). */
static char **h_environ_with(const char *const *extra)
{
    size_t n_ours = 0, n_extra = 0;
    while (environ[n_ours] != NULL)
        n_ours++;
    while (extra != NULL && extra[n_extra] != NULL)
        n_extra++;
    char **envp = calloc(n_ours + n_extra + 1, sizeof *envp);
    assert_non_null(envp);
    size_t n = 0;
    for (size_t i = 0; i < n_ours; i++) {
        int replaced = 0;
        for (size_t j = 0; j < n_extra && !replaced; j++) {
            size_t name_len = strcspn(extra[j], "=");
            replaced = strncmp(environ[i], extra[j], name_len + 1) == 0;
        }
        if (!replaced)
            envp[n++] = environ[i];
    }
    for (size_t j = 0; j < n_extra; j++)
        envp[n++] = (char *)(uintptr_t)extra[j];
    return envp;
}

int h_broker_spawn(h_env_t *env, const char *const *extra, const char *const *env_extra)
{
    const char *program = h_schakeld_path();
    char *argv[H_MAX_EXTRA_ARGS + 11];
    assert_int_equal(env->broker_pid, 0);
    if (access(program, X_OK) != 0)
        fail_msg("%s is not an executable (%s); build it or set SCHAKELD", program,
                 strerror(errno));
    if (h_broker_argv(env, program, "tcp://127.0.0.1:*", extra, argv,
                      sizeof argv / sizeof argv[0]) != 0)
        fail_msg("more than %d extra schakeld options", H_MAX_EXTRA_ARGS);
    int log_fd = open(env->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0)
        fail_msg("open %s: %s", env->log_path, strerror(errno));
    env->starts++;
    dprintf(log_fd, "=== harness: start %u of %s (not awaited)\n", env->starts, program);
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0)
        fail_msg("pipe: %s", strerror(errno));
    char **envp = h_environ_with(env_extra);
    pid_t pid = fork();
    if (pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0)
        h_exec_broker_env(program, argv, envp, pipefd[1], log_fd);
    free(envp);
    close(pipefd[1]);
    close(log_fd);
    env->broker_pid = pid;
    env->broker_pidfd = h_pidfd_open(pid);
    if (env->broker_pidfd < 0) {
        close(pipefd[0]);
        h_broker_kill9(env);
        fail_msg("pidfd_open: %s", strerror(errno));
    }
    return pipefd[0];
}

static int h_asan_runtime_find(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    if (info->dlpi_name != NULL && strstr(info->dlpi_name, "/libasan.so") != NULL) {
        snprintf(arg, PATH_MAX, "%s", info->dlpi_name);
        return 1;
    }
    return 0;
}

int h_shim_preload(const char *name, char *out, size_t outlen, char *err, size_t errlen)
{
    char self[PATH_MAX], shim[PATH_MAX + 64], asan[PATH_MAX] = "";
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return snprintf(err, errlen, "/proc/self/exe: %s", strerror(errno)), -1;
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    snprintf(shim, sizeof shim, "%s/%s", self, name);
    if (access(shim, R_OK) != 0)
        return snprintf(err, errlen, "%s: %s (make builds it with this test)", shim,
                        strerror(errno)),
               -1;
    (void)dl_iterate_phdr(h_asan_runtime_find, asan);
    if (snprintf(out, outlen, "LD_PRELOAD=%s%s%s", asan, asan[0] ? ":" : "", shim) >= (int)outlen)
        return snprintf(err, errlen, "%s: path too long", shim), -1;
    return 0;
}

int h_preload_shim(const char *name, char *err, size_t errlen)
{
    char preload[2 * PATH_MAX + 96];
    if (h_shim_preload(name, preload, sizeof preload, err, errlen) != 0)
        return -1;
    if (setenv("LD_PRELOAD", preload + strlen("LD_PRELOAD="), 1) != 0)
        return snprintf(err, errlen, "setenv: %s", strerror(errno)), -1;
    return 0;
}

void h_broker_start_with(h_env_t *env, const char *const *extra)
{
    assert_int_equal(env->broker_pid, 0);
    char problem[256];
    if (h_broker_try_start_with(env, "tcp://127.0.0.1:*", extra, problem, sizeof problem) != 0) {
        h_dump_log(env);
        fail_msg("%s", problem);
    }
}

void h_broker_start_shimmed(h_env_t *env, const char *shim, const char *variable, const char *value,
                            const char *const *extra)
{
    char err[2 * PATH_MAX + 200];
    const char *saved = getenv("LD_PRELOAD");
    char *kept = saved != NULL ? strdup(saved) : NULL;
    if (saved != NULL && kept == NULL)
        fail_msg("out of memory");
    if (h_preload_shim(shim, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(setenv(variable, value, 1), 0);
    h_broker_start_with(env, extra);
    unsetenv(variable);
    if (kept != NULL)
        setenv("LD_PRELOAD", kept, 1);
    else
        unsetenv("LD_PRELOAD");
    free(kept);
}

int h_run_schakeld_argv(const char *const *args, h_cli_result_t *res)
{
    memset(res, 0, sizeof *res);
    const char *program = h_schakeld_path();
    if (access(program, X_OK) != 0)
        fail_msg("%s is not an executable (%s); build it or set SCHAKELD", program,
                 strerror(errno));
    return h_run_program(program, args, environ, NULL, NULL, res);
}

int h_run_sh(const char *script, h_cli_result_t *res)
{
    const char *args[] = {"-c", script, NULL};
    memset(res, 0, sizeof *res);
    return h_run_program("/bin/sh", args, environ, NULL, NULL, res);
}

int h_run_prepared(const char *program, const char *const *args, const char *extra_env,
                   h_child_prepare_fn prepare, const void *arg, h_cli_result_t *res)
{
    memset(res, 0, sizeof *res);
    if (access(program, X_OK) != 0)
        fail_msg("%s is not an executable (%s); build it", program, strerror(errno));
    size_t n = 0, name_len = extra_env != NULL ? strcspn(extra_env, "=") + 1 : 0;
    while (environ[n])
        n++;
    char **envp = calloc(n + 2, sizeof *envp);
    assert_non_null(envp);
    size_t used = 0;
    for (size_t i = 0; i < n; i++)
        if (extra_env == NULL || strncmp(environ[i], extra_env, name_len) != 0)
            if ((envp[used++] = strdup(environ[i])) == NULL)
                fail_msg("out of memory");
    if (extra_env != NULL && (envp[used++] = strdup(extra_env)) == NULL)
        fail_msg("out of memory");
    envp[used] = NULL;
    const h_prepare_t how = {prepare, arg};
    h_run_program(program, args, envp, NULL, &how, res);
    h_free_strv(envp);
    return res->status;
}

/* The audit architecture a filter of this build checks for: a system call
 * of another architecture's numbering is let through (not ours to judge). */
#if defined(__x86_64__)
#define H_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define H_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

/* Offsets of an argument's low and high 32 bits in struct seccomp_data. */
#define H_ARG_LOW(a) ((uint32_t)(offsetof(struct seccomp_data, args) + 8u * (a) + H_LOW_AT))
#define H_ARG_HIGH(a) ((uint32_t)(offsetof(struct seccomp_data, args) + 8u * (a) + 4u - H_LOW_AT))
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define H_LOW_AT 0u
#else
#define H_LOW_AT 4u
#endif

int h_prepare_seccomp(const void *arg)
{
#ifndef H_AUDIT_ARCH
    (void)arg;
    errno = ENOSYS;
    return -1;
#else
    const h_seccomp_t *set = arg;
    /* a rule: the number's load and test, two conditions of up to four
     * instructions each, the denial */
    struct sock_filter f[4 + H_SECCOMP_MAX_RULES * 11];
    unsigned len = 0;
    if (set->n > H_SECCOMP_MAX_RULES) {
        errno = E2BIG;
        return -1;
    }
    f[len++] =
        (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    f[len++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, H_AUDIT_ARCH, 1, 0);
    f[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    for (size_t r = 0; r < set->n; r++) {
        const h_syscall_deny_t *rule = &set->rules[r];
        /* the jumps to the next rule (on false, or on true), patched below */
        unsigned miss_jf[3], n_jf = 0, miss_jt[2], n_jt = 0;
        f[len++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                                offsetof(struct seccomp_data, nr));
        miss_jf[n_jf++] = len;
        f[len++] =
            (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)rule->nr, 0, 0);
        for (size_t c = 0; c < 2; c++) {
            const h_arg_cond_t *cond = &rule->cond[c];
            if (cond->test == H_ARG_ANY)
                continue;
            f[len++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, H_ARG_LOW(cond->arg));
            if (cond->test == H_ARG_EQ) {
                miss_jf[n_jf++] = len;
                f[len++] =
                    (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, cond->value, 0, 0);
                continue;
            }
            /* H_ARG_NONZERO: low bits not 0 holds; else the high bits decide */
            f[len++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 2);
            f[len++] =
                (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, H_ARG_HIGH(cond->arg));
            miss_jt[n_jt++] = len;
            f[len++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 0);
        }
        f[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
        for (unsigned i = 0; i < n_jf; i++)
            f[miss_jf[i]].jf = (uint8_t)(len - miss_jf[i] - 1);
        for (unsigned i = 0; i < n_jt; i++)
            f[miss_jt[i]].jt = (uint8_t)(len - miss_jt[i] - 1);
    }
    f[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog prog = {.len = (unsigned short)len, .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) == 0 ? 0 : -1;
#endif
}

int h_run_schakeld(h_cli_result_t *res, ...)
{
    const char *args[64];
    size_t n = 0;
    va_list ap;
    va_start(ap, res);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        assert_true(n < sizeof args / sizeof args[0] - 1);
        args[n++] = a;
    }
    va_end(ap);
    args[n] = NULL;
    return h_run_schakeld_argv(args, res);
}

/* ------------------------------------------------------------------ the documented backup */

static const char h_ops_doc[] = "docs/OPERATIONS.md";
static const char h_doc_store[] = "/var/lib/schakel/store.db";
static const char h_doc_folder[] = "/backup/";

/* Replace the one occurrence of `from` in text (of size len) by `to`;
 * fails the test if there is not exactly one. */
static void h_backup_replace_once(char *text, size_t len, const char *from, const char *to)
{
    char *at = strstr(text, from);
    if (at == NULL || strstr(at + 1, from) != NULL)
        fail_msg("the backup command of %s names %s not exactly once: %s", h_ops_doc, from, text);
    size_t tail = strlen(at + strlen(from));
    if ((size_t)(at - text) + strlen(to) + tail + 1 > len)
        fail_msg("the backup command of %s is too long", h_ops_doc);
    memmove(at + strlen(to), at + strlen(from), tail + 1);
    memcpy(at, to, strlen(to));
}

void h_backup_command(const h_env_t *env, const char *folder, char *out, size_t outlen)
{
    FILE *f = fopen(h_ops_doc, "r");
    if (f == NULL)
        fail_msg("%s: %s (run the test from the source tree)", h_ops_doc, strerror(errno));
    char line[1024];
    int in_section = 0, in_block = 0;
    size_t used = 0;
    out[0] = '\0';
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "## ", 3) == 0) {
            if (in_section)
                break;
            in_section = strcmp(line, "## Backups\n") == 0;
            continue;
        }
        if (!in_section)
            continue;
        if (!in_block) {
            in_block = strcmp(line, "```sh\n") == 0;
            continue;
        }
        if (strcmp(line, "```\n") == 0)
            break;
        if (used + strlen(line) + 1 > outlen)
            fail_msg("the backup command of %s is too long", h_ops_doc);
        memcpy(out + used, line, strlen(line) + 1);
        used += strlen(line);
    }
    fclose(f);
    if (used == 0)
        fail_msg("%s has no ```sh block in its section \"## Backups\"", h_ops_doc);
    char to[256];
    h_backup_replace_once(out, outlen, h_doc_store, env->store_path);
    snprintf(to, sizeof to, "%s/", folder);
    h_backup_replace_once(out, outlen, h_doc_folder, to);
}

/* ------------------------------------------------------------------ metrics */

/* Read the ready fd up to its READY line, which must follow a METRICS
 * line. Returns 0 with env->endpoint and metrics filled, or -1 with why. */
static int h_await_ready_metrics(h_env_t *env, int ready_r, char *metrics, size_t metrics_len,
                                 char *problem, size_t problem_len)
{
    char text[512];
    size_t used = 0;
    char *ready = NULL;
    int64_t deadline = h_now_ms() + H_START_TIMEOUT_MS;
    while (ready == NULL) {
        struct pollfd p[2] = {{.fd = ready_r, .events = POLLIN},
                              {.fd = env->broker_pidfd, .events = POLLIN}};
        int left = h_remaining_ms(deadline);
        if (left == 0) {
            snprintf(problem, problem_len, "no READY line within %d ms", H_START_TIMEOUT_MS);
            return -1;
        }
        int n = poll(p, 2, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(problem, problem_len, "poll: %s", strerror(errno));
            return -1;
        }
        if (p[0].revents) {
            ssize_t got = read(ready_r, text + used, sizeof text - 1 - used);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0) {
                snprintf(problem, problem_len, "ready fd closed without a READY line");
                return -1;
            }
            used += (size_t)got;
            text[used] = '\0';
            char *at = strstr(text, "\nREADY ");
            if (at != NULL && strchr(at + 1, '\n') != NULL)
                ready = at + 1;
            else if (used == sizeof text - 1 || strncmp(text, "READY ", 6) == 0) {
                snprintf(problem, problem_len, "no METRICS line before READY: \"%.120s\"", text);
                return -1;
            }
        } else if (p[1].revents) {
            snprintf(problem, problem_len, "schakeld exited before it was ready");
            return -1;
        }
    }
    *strchr(ready, '\n') = '\0';
    const char *prefix = "READY tcp://127.0.0.1:";
    const char *port = ready + strlen(prefix);
    if (strncmp(ready, prefix, strlen(prefix)) != 0 || *port == '\0' ||
        strspn(port, "0123456789") != strlen(port) || atoi(port) <= 0 || atoi(port) > 65535) {
        snprintf(problem, problem_len, "unexpected ready line \"%.120s\"", ready);
        return -1;
    }
    size_t metrics_text_len = strcspn(text, "\n");
    if (strncmp(text, "METRICS ", 8) != 0 || text + metrics_text_len + 1 != ready ||
        metrics_text_len - 8 == 0 || metrics_text_len - 8 >= metrics_len) {
        snprintf(problem, problem_len, "unexpected lines before READY: \"%.120s\"", text);
        return -1;
    }
    memcpy(metrics, text + 8, metrics_text_len - 8);
    metrics[metrics_text_len - 8] = '\0';
    snprintf(env->endpoint, sizeof env->endpoint, "%.64s", ready + strlen("READY "));
    return 0;
}

int h_broker_await_ready_metrics(h_env_t *env, int ready_fd, char *metrics, size_t metrics_len,
                                 char *problem, size_t problem_len)
{
    return h_await_ready_metrics(env, ready_fd, metrics, metrics_len, problem, problem_len);
}

int h_broker_try_start_metrics(h_env_t *env, const char *const *extra, char *metrics,
                               size_t metrics_len, char *problem, size_t problem_len)
{
    const char *program = h_schakeld_path();
    const char *words[H_MAX_EXTRA_ARGS + 1] = {"--set", "metrics_listen=127.0.0.1:0"};
    size_t n_words = 2;
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
        if (n_words == H_MAX_EXTRA_ARGS) {
            snprintf(problem, problem_len, "more than %d extra schakeld options",
                     H_MAX_EXTRA_ARGS - 2);
            return -1;
        }
        words[n_words++] = extra[i];
    }
    words[n_words] = NULL;
    char *argv[H_MAX_EXTRA_ARGS + 11];
    if (env->broker_pid != 0) {
        snprintf(problem, problem_len, "a broker (pid %ld) is still running",
                 (long)env->broker_pid);
        return -1;
    }
    if (access(program, X_OK) != 0 || h_broker_argv(env, program, "tcp://127.0.0.1:*", words, argv,
                                                    sizeof argv / sizeof argv[0]) != 0) {
        snprintf(problem, problem_len, "%s is not an executable (%s); build it or set SCHAKELD",
                 program, strerror(errno));
        return -1;
    }
    int log_fd = open(env->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    int pipefd[2] = {-1, -1};
    if (log_fd < 0 || pipe2(pipefd, O_CLOEXEC) != 0) {
        snprintf(problem, problem_len, "open %s or pipe: %s", env->log_path, strerror(errno));
        if (log_fd >= 0)
            close(log_fd);
        return -1;
    }
    env->starts++;
    dprintf(log_fd, "=== harness: start %u of %s (with metrics)\n", env->starts, program);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(problem, problem_len, "fork: %s", strerror(errno));
        close(pipefd[0]);
        close(pipefd[1]);
        close(log_fd);
        return -1;
    }
    if (pid == 0)
        h_exec_broker(program, argv, pipefd[1], log_fd);
    close(pipefd[1]);
    close(log_fd);
    env->broker_pid = pid;
    env->broker_pidfd = h_pidfd_open(pid);
    char why[200];
    int rc = -1;
    if (env->broker_pidfd < 0)
        snprintf(why, sizeof why, "pidfd_open: %s", strerror(errno));
    else
        rc = h_await_ready_metrics(env, pipefd[0], metrics, metrics_len, why, sizeof why);
    close(pipefd[0]);
    if (rc != 0) {
        h_broker_kill9(env);
        snprintf(problem, problem_len, "schakeld did not start: %s", why);
    }
    return rc;
}

void h_broker_start_metrics(h_env_t *env, const char *const *extra, char *metrics,
                            size_t metrics_len)
{
    assert_int_equal(env->broker_pid, 0);
    char problem[256];
    if (h_broker_try_start_metrics(env, extra, metrics, metrics_len, problem, sizeof problem) !=
        0) {
        h_dump_log(env);
        fail_msg("%s", problem);
    }
}

/* ------------------------------------------------------------------ admin endpoint */

const char *h_schakelctl_path(void)
{
    static char buf[PATH_MAX];
    return h_program_path("SCHAKELCTL", "schakelctl", buf, sizeof buf);
}

void h_admin_endpoint(const h_env_t *env, char *out, size_t outlen)
{
    FILE *f = fopen(env->log_path, "r");
    if (f == NULL)
        fail_msg("open %s: %s", env->log_path, strerror(errno));
    char line[4096];
    out[0] = '\0';
    /* The last start's broker.ready line names it (admin=...). */
    while (fgets(line, sizeof line, f) != NULL) {
        const char *at = strstr(line, " admin=tcp://");
        if (strstr(line, "event=broker.ready ") == NULL || at == NULL)
            continue;
        at += strlen(" admin=");
        snprintf(out, outlen, "%.*s", (int)strcspn(at, " \n"), at);
    }
    fclose(f);
    if (out[0] == '\0') {
        h_dump_log(env);
        fail_msg("the broker log names no admin endpoint (was admin_listen set?)");
    }
}

/* envp for schakelctl: ours without SCHAKEL_*, plus the admin settings
 * and extra ("NAME=value", or NULL). */
static char **h_ctl_envp(const char *admin, const char *broker_pub, const char *key_file,
                         const char *extra)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = calloc(n + 5, sizeof *envp);
    assert_non_null(envp);
    size_t used = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "SCHAKEL_", 8) != 0)
            envp[used++] = strdup(environ[i]);
    if ((admin && asprintf(&envp[used++], "SCHAKEL_ADMIN=%s", admin) < 0) ||
        (broker_pub && asprintf(&envp[used++], "SCHAKEL_BROKER_KEY=%s", broker_pub) < 0) ||
        (key_file && asprintf(&envp[used++], "SCHAKEL_KEY=%s", key_file) < 0) ||
        (extra && (envp[used++] = strdup(extra)) == NULL))
        fail_msg("out of memory");
    envp[used] = NULL;
    return envp;
}

int h_run_ctl_argv(h_env_t *env, const char *admin, const char *key_file, const char *const *args,
                   h_cli_result_t *res)
{
    return h_run_ctl_env(env, admin, key_file, NULL, args, res);
}

int h_run_ctl_env(h_env_t *env, const char *admin, const char *key_file, const char *extra_env,
                  const char *const *args, h_cli_result_t *res)
{
    memset(res, 0, sizeof *res);
    const char *program = h_schakelctl_path();
    if (access(program, X_OK) != 0)
        fail_msg("%s is not an executable (%s); build it or set SCHAKELCTL", program,
                 strerror(errno));
    char **envp = h_ctl_envp(admin, env->broker_pub, key_file, extra_env);
    h_run_program(program, args, envp, NULL, NULL, res);
    h_free_strv(envp);
    return res->status;
}

int h_run_ctl(h_env_t *env, const char *admin, const char *principal, h_cli_result_t *res, ...)
{
    const char *args[64];
    size_t n = 0;
    va_list ap;
    va_start(ap, res);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        assert_true(n < sizeof args / sizeof args[0] - 1);
        args[n++] = a;
    }
    va_end(ap);
    args[n] = NULL;
    return h_run_ctl_argv(env, admin, principal ? h_key_file(env, principal) : NULL, args, res);
}

/* ------------------------------------------------------------------ cases */

/* Note fields differ per membership rule on purpose: the tests check that
 * each member sees exactly its rule's fields. */
const char h_case_types[] =
    "case_types:\n"
    "  - id: ondermijning-adres\n"
    "    purpose: \"Gezamenlijke aanpak ondermijning op een adres\"\n"
    "    legal_basis: \"Convenant RIEC Limburg, art. 7\"\n"
    "    lead: [riec]\n"
    "    on_behalf:\n"
    "      - veiligheidshuis/coordinatie\n"
    "    members:\n"
    "      - id: ondermijning-politie\n"
    "        partners: [politie, om]\n"
    "        purpose: \"Opsporing en vervolging van ondermijning\"\n"
    "        legal_basis: \"Wpg art. 16 lid 1; Convenant RIEC Limburg, art. 7 lid 2\"\n"
    "        fields: [text, subject, address, attachments, financieel, strafrechtelijk]\n"
    "        signal_fields: [area, address, subject, grounds, summary]\n"
    "      - id: ondermijning-gemeente\n"
    "        partners: [gemeente]\n"
    "        purpose: \"Bestuurlijke aanpak (Opiumwet art. 13b)\"\n"
    "        legal_basis: \"Convenant RIEC Limburg, art. 7 lid 3\"\n"
    "        fields: [text, address, bestuurlijk]\n"
    "        signal_fields: [area, address, summary]\n"
    "      - id: ondermijning-woco\n"
    "        partners: [woco-maasoever, woco-jekerdal]\n"
    "        purpose: \"Huurrechtelijke maatregelen\"\n"
    "        legal_basis: \"Convenant RIEC Limburg, art. 7 lid 4\"\n"
    "        fields: [text, address]\n"
    "        signal_fields: [area, address]\n"
    "    retention_after_close: 30d\n"
    "    reopen: true\n"
    "  - id: overlast-kort\n"
    "    purpose: \"Kortlopende aanpak van overlast in een straat\"\n"
    "    legal_basis: \"Gemeentewet art. 172\"\n"
    "    lead: [gemeente]\n"
    "    members:\n"
    "      - id: overlast-politie\n"
    "        partners: [politie]\n"
    "        purpose: \"Handhaving van de openbare orde\"\n"
    "        legal_basis: \"Politiewet 2012, art. 3\"\n"
    "        fields: [text]\n"
    "    retention_after_close: 2s\n";

h_env_t *h_env_new_with_cases(void)
{
    size_t len = strlen(h_default_rules) + strlen(h_case_types) + 1;
    char *rules = malloc(len);
    assert_non_null(rules);
    snprintf(rules, len, "%s%s", h_default_rules, h_case_types);
    h_env_t *env = h_env_new_with_rules(rules);
    free(rules);
    return env;
}

/* ---- the put-back of a set-aside delivery (docs/OPERATIONS.md) */

/* Replace each occurrence of the number `from` (not part of a longer
 * word) in text by `to`; fails the test unless there is one at least. */
static void put_back_replace_number(char *text, size_t len, const char *from, const char *to)
{
    size_t n_from = strlen(from), n_to = strlen(to), found = 0;
    for (char *at = strstr(text, from); at != NULL; at = strstr(at, from)) {
        int alone =
            (at == text || !isalnum((unsigned char)at[-1])) && !isalnum((unsigned char)at[n_from]);
        if (!alone) {
            at += n_from;
            continue;
        }
        size_t tail = strlen(at + n_from);
        if ((size_t)(at - text) + n_to + tail + 1 > len)
            fail_msg("the put-back SQL is too long");
        memmove(at + n_to, at + n_from, tail + 1);
        memcpy(at, to, n_to);
        at += n_to;
        found++;
    }
    if (found == 0)
        fail_msg("the put-back SQL of docs/OPERATIONS.md names no %s", from);
}

/* The SQL of docs/OPERATIONS.md, "Putting a set-aside delivery back", as
 * it stands there (between <<'SQL' and SQL), for delivery seq of item
 * item_seq and the backup file backup. */
static void put_back_sql(const char *backup, int64_t seq, int64_t item_seq, char *out,
                         size_t outlen)
{
    static const char doc[] = "docs/OPERATIONS.md", doc_backup[] = "/backup/schakel-2026-11-20.db";
    FILE *f = fopen(doc, "r");
    if (f == NULL)
        fail_msg("%s: %s (run the test from the source tree)", doc, strerror(errno));
    char line[1024];
    int in_paragraph = 0, in_sql = 0;
    size_t used = 0;
    out[0] = '\0';
    while (fgets(line, sizeof line, f) != NULL) {
        if (!in_paragraph) {
            in_paragraph = strncmp(line, "**Putting a set-aside delivery back.**", 38) == 0;
            continue;
        }
        if (!in_sql) {
            in_sql = strstr(line, "<<'SQL'") != NULL;
            continue;
        }
        if (strcmp(line, "SQL\n") == 0)
            break;
        if (used + strlen(line) + 1 > outlen)
            fail_msg("the put-back SQL of %s is too long", doc);
        memcpy(out + used, line, strlen(line) + 1);
        used += strlen(line);
    }
    fclose(f);
    if (used == 0)
        fail_msg("%s: no <<'SQL' block after \"Putting a set-aside delivery back\"", doc);
    char number[24];
    char *at = strstr(out, doc_backup);
    if (at == NULL || strlen(out) - strlen(doc_backup) + strlen(backup) + 1 > outlen)
        fail_msg("the put-back SQL of %s names no %s", doc, doc_backup);
    memmove(at + strlen(backup), at + strlen(doc_backup), strlen(at + strlen(doc_backup)) + 1);
    memcpy(at, backup, strlen(backup));
    snprintf(number, sizeof number, "%lld", (long long)seq);
    put_back_replace_number(out, outlen, "42", number);
    snprintf(number, sizeof number, "%lld", (long long)item_seq);
    put_back_replace_number(out, outlen, "17", number);
}

static int put_back_changes_said(void *arg, int n, char **values, char **names)
{
    if (n == 1 && strcmp(names[0], "put_back") == 0 && values[0] != NULL)
        *(int *)arg = atoi(values[0]);
    return 0;
}

int h_put_back(const h_env_t *env, const char *backup, int64_t seq, int64_t item_seq)
{
    static char sql[8192];
    put_back_sql(backup, seq, item_seq, sql, sizeof sql);
    sqlite3 *db = NULL;
    char *message = NULL;
    int said = -1;
    if (sqlite3_open_v2(env->store_path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
        sqlite3_exec(db, sql, put_back_changes_said, &said, &message) != SQLITE_OK)
        fail_msg("the documented put-back: %s\n%s", message ? message : sqlite3_errmsg(db), sql);
    sqlite3_close(db);
    if (said != 0 && said != 1)
        fail_msg("the documented put-back said no changes() of 0 or 1: %d", said);
    return said;
}

int h_time_factor(void)
{
    const char *factor = getenv("SCHAKEL_TEST_TIME_FACTOR");
    long n = factor != NULL ? strtol(factor, NULL, 10) : 1;
    return n >= 1 && n <= 20 ? (int)n : 1;
}

int h_cli_timeout_ms(void)
{
    return H_CLI_TIMEOUT_MS * h_time_factor();
}

long h_broker_status_kib(const h_env_t *env, const char *field)
{
    char path[64], line[256];
    size_t len = strlen(field);
    snprintf(path, sizeof path, "/proc/%d/status", (int)env->broker_pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        fail_msg("cannot read %s: %s", path, strerror(errno));
    long kib = -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, field, len) == 0 && line[len] == ':') {
            kib = atol(line + len + 1);
            break;
        }
    fclose(f);
    if (kib <= 0)
        fail_msg("no %s in %s", field, path);
    return kib;
}

/* ---- JSON as schakelctl --json prints it */

int h_json_find(const char *from, const char *key, char *out, size_t outlen)
{
    char pattern[96];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *p = from ? strstr(from, pattern) : NULL;
    if (p == NULL)
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
    } else if (*p == '[') {
        while (*p && *p != ']' && used + 2 < outlen)
            out[used++] = *p++;
        out[used++] = ']';
    } else {
        while (*p && *p != ',' && *p != '}' && used + 1 < outlen)
            out[used++] = *p++;
    }
    out[used] = '\0';
    return 0;
}

void h_json_get(const char *from, const char *key, char *out, size_t outlen)
{
    if (h_json_find(from, key, out, outlen) != 0)
        fail_msg("no \"%s\" in %.400s", key, from ? from : "(null)");
}

long long h_json_int(const char *from, const char *key)
{
    char value[64];
    h_json_get(from, key, value, sizeof value);
    char *end = NULL;
    long long n = strtoll(value, &end, 10);
    if (end == value || *end != '\0')
        fail_msg("\"%s\" is not an integer: %s", key, value);
    return n;
}

/* ---- plain TCP on loopback */

int h_connect_tcp(const char *address)
{
    char host[64];
    const char *colon = strrchr(address, ':');
    assert_non_null(colon);
    assert_true((size_t)(colon - address) < sizeof host);
    snprintf(host, sizeof host, "%.*s", (int)(colon - address), address);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    assert_int_equal(inet_pton(AF_INET, host, &addr.sin_addr), 1);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        fail_msg("connect %s: %s", address, strerror(errno));
    return fd;
}

char *h_read_to_close(int fd, int timeout_ms)
{
    size_t used = 0, cap = 65536;
    char *text = malloc(cap + 1);
    assert_non_null(text);
    int64_t deadline = h_now_ms() + timeout_ms;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ready = poll(&p, 1, h_remaining_ms(deadline));
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0) {
            free(text);
            return NULL;
        }
        if (used == cap) {
            text = realloc(text, (cap *= 2) + 1);
            assert_non_null(text);
        }
        ssize_t got = read(fd, text + used, cap - used);
        if (got < 0 && errno == EINTR)
            continue;
        assert_true(got >= 0);
        if (got == 0)
            break;
        used += (size_t)got;
    }
    text[used] = '\0';
    return text;
}

/* ---- what a command printed */

void h_expect_exit(const h_cli_result_t *res, int code, const char *what)
{
    if (res->status != code)
        fail_msg("%s: exit %d, expected %d\nstdout: %s\nstderr: %s", what, res->status, code,
                 res->out, res->err);
}

void h_expect_text(const char *text, const char *needle, const char *what)
{
    if (text == NULL || strstr(text, needle) == NULL)
        fail_msg("%s: \"%s\" not found in:\n%s", what, needle, text ? text : "(null)");
}
