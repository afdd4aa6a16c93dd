/*
 * coredump.c — no core dump of schakeld, schakel or schakelctl (see
 * coredump.h).
 *
 * Owns the process's RLIMIT_CORE and its dumpable flag; trusts the kernel
 * to apply them. Fails closed: an error here is returned for the program
 * to refuse to run, never ignored.
 */
#include "coredump.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

int coredump_disable(const char *program, char *err, size_t errlen)
{
    struct rlimit limit;
    if (getrlimit(RLIMIT_CORE, &limit) != 0) {
        snprintf(err, errlen, "cannot read the core file size limit: %s", strerror(errno));
        return -1;
    }
    if (limit.rlim_cur != 0 || limit.rlim_max != 0) {
        const struct rlimit none = {0, 0};
        if (setrlimit(RLIMIT_CORE, &none) != 0) {
            snprintf(err, errlen,
                     "cannot set the core file size limit to 0 (%s); start %s with it "
                     "at 0 (LimitCORE=0 in its unit, ulimit -c 0 in a shell)",
                     strerror(errno), program);
            return -1;
        }
    }
    /* Not dumpable: no core file at all (fs.suid_dumpable 0, the kernel's
     * default), and no ptrace or /proc/PID/mem by the same user. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        snprintf(err, errlen, "cannot make the process not dumpable: %s", strerror(errno));
        return -1;
    }
    /* defensive: read back what the kernel holds */
    if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 || getrlimit(RLIMIT_CORE, &limit) != 0 ||
        limit.rlim_cur != 0 || limit.rlim_max != 0) {
        snprintf(err, errlen,
                 "the process is still dumpable, or its core file size limit "
                 "is not 0");
        return -1;
    }
    return 0;
}
