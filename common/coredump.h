/*
 * coredump.h — schakeld, schakel and schakelctl leave no core dump and no
 * memory to read.
 *
 * Each holds secret keys (the broker's, a partner's or an operator's
 * signing and CURVE secrets; libzmq keeps heap copies of the CURVE secret
 * key out of the program's reach) and signal plaintext in memory; a core
 * dump would write them to disk. coredump_disable is the first thing each
 * program's main does, before any key is read: it sets the core file size
 * limit to 0 (soft and hard) and makes the process not dumpable.
 *
 * Not part of libschakel (the Makefile keeps it out of the library): a
 * host program that links the library decides its own core policy.
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
 * may refuse). program ("schakeld", "schakel", "schakelctl") names the
 * program in the advice of a refusal. Call it before any thread starts:
 * both settings are the whole process's. Returns 0, or -1 with err filled
 * (the caller refuses to run: a program that could dump its keys must
 * not). */
int coredump_disable(const char *program, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
