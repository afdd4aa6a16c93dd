/*
 * signals.h — what the daemon's signals ask of it: SIGTERM and SIGINT a
 * stop, SIGHUP a reload of the policy; SIGPIPE and SIGXFSZ are ignored.
 *
 * The handlers only set a flag and write an eventfd that the broker loop
 * polls beside its sockets, so a signal is seen at the loop's next turn
 * wherever it lands: in zmq_poll (EINTR), before it (the eventfd is
 * readable and the poll returns at once), or during start-up, before the
 * loop exists (the flags wait for its first turn).
 */
#ifndef SCHAKEL_SIGNALS_H
#define SCHAKEL_SIGNALS_H

#include <stddef.h>

/* Open the eventfd, then install the handlers (no SA_RESTART, all signals
 * blocked while one runs). Call once, first thing at a daemon's start,
 * before the store is opened and before any thread starts, so that a
 * signal during start-up is a request, never its default action (SIGHUP
 * would end the process). Not for the one-shot commands (--init, --check,
 * --rekey, --restored), which a signal may end as it ends any tool.
 * Returns 0, or -1 with err filled (no eventfd: nothing installed). */
int signals_install(char *err, size_t errlen);

/* 1 once a stop was asked (SIGTERM, SIGINT, signals_request_stop); it stays
 * asked. */
int signals_stop_requested(void);

/* 1 once a stop was asked a second time (a second SIGTERM or SIGINT, from
 * an operator or systemd, after the one that began the stop): what the
 * stop would still wait for that is not durability (an export going out,
 * admin_stop_drain) ends at once. It stays asked. */
int signals_stop_repeated(void);

/* 1 if a reload was asked since the last call (any number of SIGHUPs is one
 * reload), and forgets it; else 0. */
int signals_reload_take(void);

/* The eventfd the loop polls for POLLIN: readable once a request came after
 * the last signals_wake_drain. -1 before signals_install. Borrowed: it
 * lives as long as the process. */
int signals_wake_fd(void);

/* Empty the eventfd (it never blocks); the loop calls it when its poll found
 * the eventfd readable, before it looks at the flags again. */
void signals_wake_drain(void);

/* What the handlers do; async-signal-safe. */
void signals_request_stop(void);
void signals_request_reload(void);

#endif
