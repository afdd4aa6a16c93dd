/*
 * test_coredump.c — a running schakeld cannot be dumped: its core file
 * size limit is 0, soft and hard, and it is not dumpable, so neither a
 * crash nor another process of its user copies its memory (its keys,
 * libzmq's copy of the CURVE secret key, signal plaintext) to disk.
 *
 * The broker starts with a core limit above 0 (the test raises its own
 * soft limit first, and the broker inherits it), so what it has once it
 * serves is its own doing. Dumpable or not is read as it matters: whether
 * a process of the broker's user without CAP_SYS_PTRACE may follow its
 * /proc/PID/exe, a ptrace access check as for /proc/PID/mem. Run as root,
 * the kernel also wants the prober to hold every capability the broker
 * holds, so the test leaves CAP_SYS_PTRACE out of the capabilities its
 * children (the broker among them) can have. Every wait is bounded.
 */
/* prlimit */
#define _GNU_SOURCE

#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

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
 * without CAP_SYS_PTRACE, waiting until *release is closed. */
static pid_t start_dumpable_reference(int *release)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0)
        fail_msg("pipe: %s", strerror(errno));
    pid_t child = fork();
    if (child < 0)
        fail_msg("fork: %s", strerror(errno));
    if (child == 0) {
        char byte;
        close(pipefd[1]);
        if (drop_ptrace_capability() != 0)
            _exit(PROBE_CAPS);
        while (read(pipefd[0], &byte, 1) < 0 && errno == EINTR)
            ;
        _exit(0);
    }
    close(pipefd[0]);
    *release = pipefd[1];
    return child;
}

/* A broker that is not dumpable: a process of its user cannot follow its
 * /proc/PID/exe (nor read its memory). The same probe follows that of a
 * dumpable process of the same user and capabilities, so a denial is the
 * broker's doing, not the probe's. */
static void test_broker_is_not_dumpable(void **state)
{
    h_env_t *env = *state;
    bound_out_ptrace();
    int release = -1;
    pid_t reference = start_dumpable_reference(&release);
    int seen = probe_readable(reference);
    close(release);
    (void)await_child(reference, "the dumpable reference process");
    if (seen != PROBE_READ)
        fail_msg("the probe cannot follow /proc/PID/exe of a dumpable process of this user "
                 "(outcome %d): it cannot tell a dumpable process here",
                 seen);
    h_broker_start(env);
    int broker = probe_readable(env->broker_pid);
    if (broker != PROBE_DENIED)
        fail_msg("a process of the broker's user without CAP_SYS_PTRACE %s the broker's "
                 "/proc/%ld/exe (outcome %d): the broker is dumpable",
                 broker == PROBE_READ ? "followed" : "could not probe", (long)env->broker_pid,
                 broker);
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
    struct rlimit broker;
    if (prlimit(env->broker_pid, RLIMIT_CORE, NULL, &broker) != 0)
        fail_msg("prlimit of the broker: %s", strerror(errno));
    if (broker.rlim_cur != 0 || broker.rlim_max != 0)
        fail_msg("the broker (started with a core limit of %llu) has a core limit of %llu, hard "
                 "%llu: want 0 and 0",
                 (unsigned long long)raised.rlim_cur, (unsigned long long)broker.rlim_cur,
                 (unsigned long long)broker.rlim_max);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_broker_is_not_dumpable, h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_broker_core_limit_is_zero, h_setup_env, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
