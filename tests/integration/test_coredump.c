/*
 * test_coredump.c — a running schakeld, schakel or schakelctl cannot be
 * dumped: its core file size limit is 0, soft and hard, and it is not
 * dumpable, so neither a crash nor another process of its user copies its
 * memory (its keys, libzmq's copy of the CURVE secret key, signal
 * plaintext) to disk. Where either setting cannot be made, the program
 * refuses to run.
 *
 * Each program starts with a core limit above 0 (the test raises its own
 * soft limit first, and the program inherits it), so what it has once it
 * runs is its own doing. Dumpable or not is read as it matters: whether a
 * process of the program's user without CAP_SYS_PTRACE may follow its
 * /proc/PID/exe, a ptrace access check as for /proc/PID/mem. Run as root,
 * the kernel also wants the prober to hold every capability the program
 * holds, so the test leaves CAP_SYS_PTRACE out of the capabilities its
 * children can have. The CLIs are probed while they are known to be past
 * their start: `schakel listen` once it has printed a delivery, and
 * `schakelctl status` once it has connected to an admin endpoint the test
 * holds (and never answers). A refusal is brought about with a seccomp
 * filter in the program's child that makes the setting's system call fail.
 * Every wait is bounded.
 */
/* prlimit */
#define _GNU_SOURCE

#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

extern char **environ;

/* What the probe child reports in its exit status. */
enum probe_outcome {
    PROBE_READ = 0,   /* the link could be read: the process is dumpable */
    PROBE_DENIED = 1, /* EACCES or EPERM: not dumpable */
    PROBE_OTHER = 2,  /* another error (the process is gone, /proc missing) */
    PROBE_CAPS = 3,   /* CAP_SYS_PTRACE could not be dropped */
};

/* Drop CAP_SYS_PTRACE from this thread's effective and permitted sets
 * (root has it, and it overrides the dumpable flag). Async-signal-safe.
 * Returns 0 or -1. */
static int drop_ptrace_capability(void)
{
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct caps[_LINUX_CAPABILITY_U32S_3];
    if (syscall(SYS_capget, &header, caps) != 0)
        return -1;
    caps[CAP_TO_INDEX(CAP_SYS_PTRACE)].effective &= ~CAP_TO_MASK(CAP_SYS_PTRACE);
    caps[CAP_TO_INDEX(CAP_SYS_PTRACE)].permitted &= ~CAP_TO_MASK(CAP_SYS_PTRACE);
    return syscall(SYS_capset, &header, caps) == 0 ? 0 : -1;
}

/* Fail unless the processes this test starts can never hold
 * CAP_SYS_PTRACE: as root, leave it out of the bounding set (for good, for
 * this test process); as another user there is nothing to leave out. */
static void bound_out_ptrace(void)
{
    if (geteuid() != 0)
        return;
    if (prctl(PR_CAPBSET_DROP, CAP_SYS_PTRACE, 0, 0, 0) != 0)
        fail_msg("cannot leave CAP_SYS_PTRACE out of the bounding set: %s", strerror(errno));
}

/* Bounded wait for a child; fails the test if it does not end in time. */
static int await_child(pid_t child, const char *what)
{
    int pidfd = (int)syscall(SYS_pidfd_open, child, 0);
    if (pidfd < 0)
        fail_msg("pidfd_open: %s", strerror(errno));
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    int ready = poll(&p, 1, H_TIMEOUT_MS);
    close(pidfd);
    int status = 0;
    if (ready != 1) {
        kill(child, SIGKILL);
        (void)waitpid(child, NULL, 0);
        fail_msg("%s did not end within %d ms", what, H_TIMEOUT_MS);
    }
    if (waitpid(child, &status, 0) != child)
        fail_msg("waitpid of %s: %s", what, strerror(errno));
    return status;
}

/* Whether a process of our user without CAP_SYS_PTRACE may follow pid's
 * /proc/PID/exe (enum probe_outcome). */
static int probe_readable(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/exe", (long)pid);
    pid_t child = fork();
    if (child < 0)
        fail_msg("fork: %s", strerror(errno));
    if (child == 0) { /* async-signal-safe calls only */
        char target[PATH_MAX];
        if (drop_ptrace_capability() != 0)
            _exit(PROBE_CAPS);
        if (readlink(path, target, sizeof target) >= 0)
            _exit(PROBE_READ);
        _exit(errno == EACCES || errno == EPERM ? PROBE_DENIED : PROBE_OTHER);
    }
    int status = await_child(child, "the probe");
    if (!WIFEXITED(status))
        fail_msg("the probe of %s ended abnormally (status %d)", path, status);
    return WEXITSTATUS(status);
}

/* A dumpable process like the broker but for the flag: of our user,
 * without CAP_SYS_PTRACE, waiting until *release is closed. Returned once
 * it has dropped the capability (it says so on a pipe): before, it would
 * hold one the probe does not, and the kernel would deny the probe for
 * that. */
static pid_t start_dumpable_reference(int *release)
{
    int pipefd[2], ready[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0 || pipe2(ready, O_CLOEXEC) != 0)
        fail_msg("pipe: %s", strerror(errno));
    pid_t child = fork();
    if (child < 0)
        fail_msg("fork: %s", strerror(errno));
    if (child == 0) {
        char byte = 1;
        close(pipefd[1]);
        close(ready[0]);
        if (drop_ptrace_capability() != 0)
            _exit(PROBE_CAPS);
        if (write(ready[1], &byte, 1) != 1)
            _exit(PROBE_OTHER);
        while (read(pipefd[0], &byte, 1) < 0 && errno == EINTR)
            ;
        _exit(0);
    }
    close(pipefd[0]);
    close(ready[1]);
    char byte;
    struct pollfd p = {.fd = ready[0], .events = POLLIN};
    int dropped = poll(&p, 1, H_TIMEOUT_MS) == 1 && read(ready[0], &byte, 1) == 1;
    close(ready[0]);
    if (!dropped) {
        close(pipefd[1]);
        int status = await_child(child, "the dumpable reference process");
        fail_msg("the dumpable reference process did not drop CAP_SYS_PTRACE (status %d)", status);
    }
    *release = pipefd[1];
    return child;
}

/* Fail unless the probe tells a dumpable process: it follows
 * /proc/PID/exe of one of our user and capabilities, so that a denial
 * later is the program's doing, not the probe's. */
static void assert_probe_sees_dumpable(void)
{
    int release = -1;
    pid_t reference = start_dumpable_reference(&release);
    int seen = probe_readable(reference);
    close(release);
    (void)await_child(reference, "the dumpable reference process");
    if (seen != PROBE_READ)
        fail_msg("the probe cannot follow /proc/PID/exe of a dumpable process of this user "
                 "(outcome %d): it cannot tell a dumpable process here",
                 seen);
}

/* Fail unless the running process pid (program, for the message) is not
 * dumpable. */
static void assert_not_dumpable(pid_t pid, const char *program)
{
    int outcome = probe_readable(pid);
    if (outcome != PROBE_DENIED)
        fail_msg("a process of %s's user without CAP_SYS_PTRACE %s its /proc/%ld/exe (outcome "
                 "%d): %s is dumpable",
                 program, outcome == PROBE_READ ? "followed" : "could not probe", (long)pid,
                 outcome, program);
}

/* Fail unless the running process pid has a core limit of 0, soft and
 * hard, having started with started_with. */
static void assert_core_limit_zero(pid_t pid, const char *program, rlim_t started_with)
{
    struct rlimit limit;
    if (prlimit(pid, RLIMIT_CORE, NULL, &limit) != 0)
        fail_msg("prlimit of %s: %s", program, strerror(errno));
    if (limit.rlim_cur != 0 || limit.rlim_max != 0)
        fail_msg("%s (started with a core limit of %llu) has a core limit of %llu, hard %llu: "
                 "want 0 and 0",
                 program, (unsigned long long)started_with, (unsigned long long)limit.rlim_cur,
                 (unsigned long long)limit.rlim_max);
}

/* A broker that is not dumpable: a process of its user cannot follow its
 * /proc/PID/exe (nor read its memory). */
static void test_broker_is_not_dumpable(void **state)
{
    h_env_t *env = *state;
    bound_out_ptrace();
    assert_probe_sees_dumpable();
    h_broker_start(env);
    assert_not_dumpable(env->broker_pid, "the broker");
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

/* A broker started with a core limit above 0 lowers it to 0, soft and
 * hard. Skipped (and reported so) where the hard limit is already 0: no
 * broker could be given a limit to lower. */
static void test_broker_core_limit_is_zero(void **state)
{
    h_env_t *env = *state;
    struct rlimit own;
    assert_int_equal(getrlimit(RLIMIT_CORE, &own), 0);
    if (own.rlim_max == 0) {
        fprintf(stderr, "test_coredump: the hard core limit here is 0, so no broker can be "
                        "started with a limit to lower: skipped\n");
        skip();
    }
    struct rlimit raised = {own.rlim_max, own.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_CORE, &raised), 0); /* the broker inherits it */
    char problem[256];
    int started = h_broker_try_start_at(env, "tcp://127.0.0.1:*", problem, sizeof problem);
    assert_int_equal(setrlimit(RLIMIT_CORE, &own), 0);
    if (started != 0) {
        h_dump_log(env);
        fail_msg("%s", problem);
    }
    assert_core_limit_zero(env->broker_pid, "the broker", raised.rlim_cur);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

/* ------------------------------------------------------------ the CLIs */

/* Our soft core limit raised to the hard one (for a child to inherit);
 * *saved the limits to put back. Returns the raised limit: 0 where the
 * hard limit is 0, which no child can then be started above. */
static rlim_t raise_core_limit(struct rlimit *saved)
{
    assert_int_equal(getrlimit(RLIMIT_CORE, saved), 0);
    struct rlimit raised = {saved->rlim_max, saved->rlim_max};
    assert_int_equal(setrlimit(RLIMIT_CORE, &raised), 0);
    if (raised.rlim_cur == 0)
        fprintf(stderr, "test_coredump: the hard core limit here is 0: the CLI's own limit is "
                        "not checked, only that it is not dumpable\n");
    return raised.rlim_cur;
}

/* A CLI started in the background: stdin /dev/null, stdout to a pipe whose
 * read end is *out, stderr ours; in our environment without SCHAKEL_*,
 * with vars ("NAME=value", NULL-terminated) added. */
static pid_t spawn_cli(const char *program, const char *const *args, const char *const *vars,
                       int *out)
{
    size_t n_env = 0, n_vars = 0, n_args = 0;
    while (environ[n_env] != NULL)
        n_env++;
    while (vars[n_vars] != NULL)
        n_vars++;
    while (args[n_args] != NULL)
        n_args++;
    char **envp = calloc(n_env + n_vars + 1, sizeof *envp);
    char **argv = calloc(n_args + 2, sizeof *argv);
    assert_non_null(envp);
    assert_non_null(argv);
    size_t used = 0;
    for (size_t i = 0; i < n_env; i++)
        if (strncmp(environ[i], "SCHAKEL_", 8) != 0)
            envp[used++] = environ[i];
    /* execve takes char *const[]; the strings are not written to */
    for (size_t i = 0; i < n_vars; i++)
        envp[used++] = (char *)(uintptr_t)vars[i];
    argv[0] = (char *)(uintptr_t)program;
    for (size_t i = 0; i < n_args; i++)
        argv[i + 1] = (char *)(uintptr_t)args[i];
    int pipefd[2];
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0 || pipe2(pipefd, O_CLOEXEC) != 0)
        fail_msg("/dev/null or pipe: %s", strerror(errno));
    pid_t child = fork();
    if (child < 0)
        fail_msg("fork: %s", strerror(errno));
    if (child == 0) { /* async-signal-safe calls only */
        if (dup2(devnull, 0) < 0 || dup2(pipefd[1], 1) < 0)
            _exit(126);
        syscall(SYS_close_range, 3u, ~0u, 0u);
        execve(program, argv, envp);
        _exit(127);
    }
    close(devnull);
    close(pipefd[1]);
    free(envp);
    free(argv);
    *out = pipefd[0];
    return child;
}

/* Read fd until what it gave holds needle; fails the test if it ends or
 * H_TIMEOUT_MS passes first. */
static void await_output(int fd, const char *needle, const char *what)
{
    char seen[8192];
    size_t len = 0;
    seen[0] = '\0';
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (strstr(seen, needle) == NULL) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long waited = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (waited >= H_TIMEOUT_MS || poll(&p, 1, (int)(H_TIMEOUT_MS - waited)) == 0)
            fail_msg("%s printed no \"%s\" within %d ms (it printed \"%s\")", what, needle,
                     H_TIMEOUT_MS, seen);
        if (len == sizeof seen - 1)
            len = 0; /* only the end matters */
        ssize_t got = read(fd, seen + len, sizeof seen - 1 - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            fail_msg("%s ended its output before \"%s\" (it printed \"%s\")", what, needle, seen);
        len += (size_t)got;
        seen[len] = '\0';
    }
}

/* `schakel listen`, holding a partner's keys and a delivery's plaintext,
 * is not dumpable and has a core limit of 0, soft and hard. */
static void test_schakel_is_not_dumpable(void **state)
{
    h_env_t *env = *state;
    bound_out_ptrace();
    assert_probe_sees_dumpable();
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = h_police_signal("BVH-COREDUMP-1");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    schakel_close(&politie);
    char broker[192], broker_key[192], key[192];
    snprintf(broker, sizeof broker, "SCHAKEL_BROKER=%s", env->endpoint);
    snprintf(broker_key, sizeof broker_key, "SCHAKEL_BROKER_KEY=%s", env->broker_pub);
    snprintf(key, sizeof key, "SCHAKEL_KEY=%s", h_key_file(env, H_OM));
    const char *const vars[] = {broker, broker_key, key, NULL};
    const char *const args[] = {"listen", NULL};
    struct rlimit own;
    rlim_t started = raise_core_limit(&own);
    int out = -1;
    pid_t listener = spawn_cli(h_schakel_path(), args, vars, &out);
    assert_int_equal(setrlimit(RLIMIT_CORE, &own), 0);
    await_output(out, "seq=", "schakel listen"); /* the delivery, printed */
    assert_not_dumpable(listener, "schakel listen");
    if (started > 0)
        assert_core_limit_zero(listener, "schakel listen", started);
    assert_int_equal(kill(listener, SIGTERM), 0);
    int status = await_child(listener, "schakel listen");
    close(out);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("schakel listen ended with status %d on SIGTERM, not exit 0", status);
    h_done(env);
}

/* `schakelctl status`, holding an operator's keys, is not dumpable and has
 * a core limit of 0, soft and hard: probed once it has connected to an
 * admin endpoint the test holds, which never answers. */
static void test_schakelctl_is_not_dumpable(void **state)
{
    h_env_t *env = *state;
    bound_out_ptrace();
    assert_probe_sees_dumpable();
    int endpoint = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t addr_len = sizeof addr;
    if (endpoint < 0 || bind(endpoint, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(endpoint, 1) != 0 || getsockname(endpoint, (struct sockaddr *)&addr, &addr_len) != 0)
        fail_msg("a loopback endpoint: %s", strerror(errno));
    char admin[64], broker_key[192], key[192];
    snprintf(admin, sizeof admin, "SCHAKEL_ADMIN=tcp://127.0.0.1:%u", ntohs(addr.sin_port));
    snprintf(broker_key, sizeof broker_key, "SCHAKEL_BROKER_KEY=%s", env->broker_pub);
    snprintf(key, sizeof key, "SCHAKEL_KEY=%s", h_key_file(env, H_OPERATOR));
    const char *const vars[] = {admin, broker_key, key, NULL};
    const char *const args[] = {"status", NULL};
    struct rlimit own;
    rlim_t started = raise_core_limit(&own);
    int out = -1;
    pid_t ctl = spawn_cli(h_schakelctl_path(), args, vars, &out);
    assert_int_equal(setrlimit(RLIMIT_CORE, &own), 0);
    struct pollfd p = {.fd = endpoint, .events = POLLIN};
    int conn = poll(&p, 1, H_TIMEOUT_MS) == 1 ? accept4(endpoint, NULL, NULL, SOCK_CLOEXEC) : -1;
    if (conn < 0) {
        kill(ctl, SIGKILL);
        (void)await_child(ctl, "schakelctl status");
        fail_msg("schakelctl status did not connect within %d ms", H_TIMEOUT_MS);
    }
    assert_not_dumpable(ctl, "schakelctl status");
    if (started > 0)
        assert_core_limit_zero(ctl, "schakelctl status", started);
    assert_int_equal(kill(ctl, SIGTERM), 0);
    (void)await_child(ctl, "schakelctl status"); /* ended by the signal: its status says nothing */
    close(conn);
    close(endpoint);
    close(out);
    h_done(env);
}

/* ------------------------------------------------------------ refusals */

/* How a refusal row's program is started: its core limit at the hard
 * limit (raised) or at 0, and the system calls its filter makes fail. */
typedef struct refusal_start {
    int limit_zero;
    h_seccomp_t filter;
} refusal_start_t;

/* An h_child_prepare_fn: the core limit, then the filter. */
static int refusal_prepare(const void *arg)
{
    const refusal_start_t *start = arg;
    struct rlimit limit;
    if (getrlimit(RLIMIT_CORE, &limit) != 0)
        return -1;
    limit.rlim_cur = start->limit_zero ? 0 : limit.rlim_max;
    limit.rlim_max = start->limit_zero ? 0 : limit.rlim_max;
    if (setrlimit(RLIMIT_CORE, &limit) != 0)
        return -1;
    return h_prepare_seccomp(&start->filter);
}

/* Reading RLIMIT_CORE (glibc's getrlimit is prlimit64 without a new limit). */
static const h_syscall_deny_t deny_core_read[] = {
    {SYS_prlimit64, {{H_ARG_EQ, 1, RLIMIT_CORE}, {H_ARG_ANY, 0, 0}}},
#ifdef SYS_getrlimit
    {SYS_getrlimit, {{H_ARG_EQ, 0, RLIMIT_CORE}, {H_ARG_ANY, 0, 0}}},
#endif
};
/* Setting it (prlimit64 with a new limit), reading it still allowed. */
static const h_syscall_deny_t deny_core_set[] = {
    {SYS_prlimit64, {{H_ARG_EQ, 1, RLIMIT_CORE}, {H_ARG_NONZERO, 2, 0}}},
#ifdef SYS_setrlimit
    {SYS_setrlimit, {{H_ARG_EQ, 0, RLIMIT_CORE}, {H_ARG_ANY, 0, 0}}},
#endif
};
static const h_syscall_deny_t deny_dumpable[] = {
    {SYS_prctl, {{H_ARG_EQ, 0, PR_SET_DUMPABLE}, {H_ARG_ANY, 0, 0}}},
};
#define DENY(rules)                                                                                \
    {                                                                                              \
        (rules), sizeof(rules) / sizeof(rules)[0]                                                  \
    }

/* "PROGRAM: " and text into out, with every PROGRAM the program's name. */
static void name_program(char *out, size_t outlen, const char *text, const char *name)
{
    size_t used = (size_t)snprintf(out, outlen, "%s: ", name);
    for (const char *at = text; *at != '\0' && used < outlen - 1;) {
        if (strncmp(at, "PROGRAM", 7) == 0) {
            used += (size_t)snprintf(out + used, outlen - used, "%s", name);
            at += 7;
        } else {
            out[used++] = *at++;
            out[used] = '\0';
        }
    }
}

/* Each program refuses to run, before it does anything (its --help
 * prints nothing), where its core limit cannot be read or set to 0, or
 * where it cannot make itself not dumpable; and runs where the limit
 * cannot be set but is 0 already (LimitCORE=0 under a unit whose
 * system-call filter refuses setrlimit). */
static void test_refused_where_core_dumps_stay_possible(void **state)
{
    h_env_t *env = *state;
    struct rlimit own;
    assert_int_equal(getrlimit(RLIMIT_CORE, &own), 0);
    static const struct {
        refusal_start_t start;
        int status;
        const char *says; /* after "PROGRAM: ", PROGRAM the name; NULL: runs */
    } rows[] = {
        {{0, DENY(deny_core_read)},
         1,
         "cannot read the core file size limit: Operation not "
         "permitted"},
        {{0, DENY(deny_core_set)},
         1,
         "cannot set the core file size limit to 0 (Operation not "
         "permitted); start PROGRAM with it at 0 (LimitCORE=0 in its unit, "
         "ulimit -c 0 in a shell)"},
        {{1, DENY(deny_core_set)}, 0, NULL},
        {{0, DENY(deny_dumpable)},
         1,
         "cannot make the process not dumpable: Operation not "
         "permitted"},
        {{1, DENY(deny_dumpable)},
         1,
         "cannot make the process not dumpable: Operation not "
         "permitted"},
    };
    const char *const programs[] = {h_schakeld_path(), h_schakel_path(), h_schakelctl_path()};
    const char *const args[] = {"--help", NULL};
    /* ASan's runtime sets the soft core limit itself unless told not to,
     * and dies where the filter refuses it that */
    char asan[512];
    const char *asan_before = getenv("ASAN_OPTIONS");
    snprintf(asan, sizeof asan, "ASAN_OPTIONS=%s%sdisable_coredump=0",
             asan_before != NULL ? asan_before : "",
             asan_before != NULL && asan_before[0] != '\0' ? ":" : "");
    for (size_t p = 0; p < sizeof programs / sizeof programs[0]; p++) {
        const char *name =
            strrchr(programs[p], '/') != NULL ? strrchr(programs[p], '/') + 1 : programs[p];
        for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
            if (!rows[r].start.limit_zero && own.rlim_max == 0) {
                fprintf(stderr,
                        "test_coredump: the hard core limit here is 0: row %zu of %s "
                        "not run\n",
                        r, name);
                continue;
            }
            char says[512] = "";
            if (rows[r].says != NULL)
                name_program(says, sizeof says, rows[r].says, name);
            h_cli_result_t res;
            int status =
                h_run_prepared(programs[p], args, asan, refusal_prepare, &rows[r].start, &res);
            if (status == 125)
                fail_msg("row %zu of %s: the child could not set its core limit or install "
                         "the seccomp filter",
                         r, name);
            int ran = strstr(res.out, "usage:") != NULL;
            if (status != rows[r].status ||
                (rows[r].says != NULL && strstr(res.err, says) == NULL) ||
                ran != (rows[r].says == NULL))
                fail_msg("row %zu of %s: exit %d (want %d), stdout \"%s\", stderr \"%s\" "
                         "(want %s)",
                         r, name, status, rows[r].status, res.out, res.err,
                         rows[r].says != NULL ? says : "its usage");
            h_cli_result_free(&res);
        }
    }
    h_done(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_broker_is_not_dumpable, h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_broker_core_limit_is_zero, h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_schakel_is_not_dumpable, h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_schakelctl_is_not_dumpable, h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_refused_where_core_dumps_stay_possible, h_setup_env,
                                        h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
