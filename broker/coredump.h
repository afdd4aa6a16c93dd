/*
 * coredump.h — schakeld leaves no core dump and no memory to read.
 *
 * The broker holds its secret keys (also libzmq's own heap copy of the
 * CURVE secret key, out of the broker's reach) and signal plaintext in
 * memory; a core dump would write them to disk. coredump_disable is the
 * first thing schakeld does, before any key is read: it sets the core file
 * size limit to 0 (soft and hard) and makes the process not dumpable.
 */
#ifndef SCHAKEL_COREDUMP_H
#define SCHAKEL_COREDUMP_H

#include <stddef.h>

/* RLIMIT_CORE 0 (soft and hard, so that nothing in the process can raise
 * it again) and PR_SET_DUMPABLE 0: the kernel then writes no core file,
 * and a handler behind a piped core_pattern (systemd-coredump) is told the
 * limit is 0 and keeps nothing; ptrace and /proc/PID/mem, environ, fd and
 * the like are closed to processes of the same user without
 * CAP_SYS_PTRACE. The limit is left alone when it is already 0 (under the
 * unit's LimitCORE=0 no setrlimit is needed, which its system-call filter
 * may refuse). Call it before any thread starts: both settings are the
 * whole process's. Returns 0, or -1 with err filled (the caller refuses to
 * start: a broker that could dump its keys must not run). */
int coredump_disable(char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
