/*
 * broker_internal.h — what the files of the broker's loop share:
 * broker.c (receive, dispatch, the loop), broker_new.c (making and ending
 * a broker), broker_turn.c (a turn's commit and its answers) and
 * broker_reload.c (policy reloads). Private to those four files; the rest
 * of the broker sees broker.h.
 */
#ifndef SCHAKEL_BROKER_INTERNAL_H
#define SCHAKEL_BROKER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "broker.h"

/* ------------------------------------------------------------------ clocks */

/* The clocks all four read. Inline, as they were while one file held
 * them: the loop reads them every turn, and the broker's objects are
 * built -fPIC without LTO, where a function that is not static is not
 * inlined even in its own file. */

/* Milliseconds on clock `which` (CLOCK_MONOTONIC, _REALTIME, _BOOTTIME). */
static inline int64_t broker_clock_ms(clockid_t which)
{
    struct timespec ts;
    clock_gettime(which, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds on CLOCK_MONOTONIC: the loop's own clock (b->now_ms). */
static inline int64_t broker_monotonic_ms(void)
{
    return broker_clock_ms(CLOCK_MONOTONIC);
}

/* ------------------------------------------------------------------ broker_turn.c */

/* Commit the turn and send (or hold behind their sync) the answers it
 * made true. Returns METRICS_TURN_ROLLED_BACK, _COMMITTED or _IDLE. */
int broker_commit_turn(broker_t *b);

/* More frames wait on the router (ZMQ_EVENTS); 0 on an error too. */
int broker_frames_waiting(const broker_t *b);

/* The answers of turns the sync thread has synced since the last look go
 * out (non-blocking); a failed sync drops them and stops the loop. */
void broker_tickets_collect(broker_t *b);

/* Wait for every turn held for its sync, then answer as collect does. */
void broker_tickets_drain(broker_t *b);

/* Drop every held answer unsent (a failed sync, or the broker's end):
 * nothing unsynced may be claimed. */
void broker_tickets_drop(broker_t *b);

/* Free n replies (frames wiped) and the array itself. */
void broker_free_replies(pending_reply_t *replies, size_t n);

/* The summary line of answers that could not be queued in a window that
 * has ended (force: the open one, at a stop), if any were only counted. */
void broker_undeliverable_summary(broker_t *b, int force);

/* ------------------------------------------------------------------ broker_reload.c */

/* A reload pending for its record is tried again, at most once a second
 * (at once after a turn that committed writes). */
void broker_reload_retry(broker_t *b);

/* The session's principal is gone from the policy `arg` (a policy_t),
 * became an operator there, or has another key there. */
int broker_session_revoked(const session_t *session, void *arg);

/* `principal` is gone from `policy`, became an operator, or (key not "")
 * has another key there than `key` (Z85). */
int broker_principal_key_revoked(const policy_t *policy, const char *principal, const char *key);

/* How many operators `policy` registers. */
size_t broker_reload_count_operators(const policy_t *policy);

/* The policy's warnings in the log, the first SCHAKEL_POLICY_WARNINGS_SHOWN
 * of them and how many more. */
void broker_log_policy_warnings(const policy_t *policy);

#endif
