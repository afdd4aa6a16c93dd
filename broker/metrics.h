/*
 * metrics.h — what the broker reports outward: Prometheus metrics, health
 * and readiness over HTTP, accept-to-deliver latency, the systemd watchdog.
 *
 * The HTTP endpoint (libmicrohttpd, in its own thread) is off unless the
 * config sets `metrics_listen`; a connection to it lives at most 3 s from
 * its accept, however slowly it sends (metrics_http.h). The watchdog runs
 * whenever systemd asks for it. The broker loop is the only writer: once
 * per turn it copies counters and gauges into a snapshot under a mutex,
 * and the HTTP thread renders
 * that copy only, never broker state. Metrics name partners and reason
 * codes, never principals, subjects or any content.
 */
#ifndef SCHAKEL_METRICS_H
#define SCHAKEL_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct broker;

typedef struct metrics metrics_t;

/* Refusals are counted per reason code; Schakel__Reason values are below
 * this (a larger one is counted in the total only). */
#define METRICS_REASON_SLOTS 32

/* Buckets of schakel_accept_to_deliver_seconds, without +Inf. */
#define METRICS_LATENCY_BUCKETS 20

/* Start the metrics state. listen: NULL (no HTTP endpoint; the watchdog
 * and the counters still work) or "HOST:PORT" with HOST an IPv4 literal or
 * a bracketed IPv6 literal ("127.0.0.1:9750", "[::1]:0"); port 0 binds a
 * free port. Only that address is bound. store_path names the SQLite file
 * whose size (with its -wal file) is reported. version goes into
 * schakel_build_info. Returns NULL with err filled (bad address, cannot
 * bind, out of memory). */
metrics_t *metrics_new(const char *listen, const char *store_path, const char *version, char *err,
                       size_t errlen);

/* Stop the HTTP thread (waits for it) and free; *m = NULL. Safe on NULL. */
void metrics_destroy(metrics_t **m);

/* The bound HTTP address ("127.0.0.1:40123", "[::1]:9750"), or NULL when
 * no endpoint was asked for. Borrowed; valid until metrics_destroy. */
const char *metrics_address(const metrics_t *m);

/* 1 if the address is a loopback address (127.0.0.0/8 or ::1). */
int metrics_address_is_loopback(const metrics_t *m);

/* ------------------------------------------------------------ broker loop */

/* Count one refusal (the total and its reason) in b->stats. */
void metrics_refused(struct broker *b, int reason);

/* Item item_seq was accepted in the turn that began at now_ms (monotonic):
 * its first deliveries are timed from then with millisecond precision.
 * Remembers the last 65536 items; older ones, and those accepted before a
 * restart, are timed from their stored accepted_at (whole seconds). */
void metrics_item_accepted(metrics_t *m, uint64_t item_seq, int64_t now_ms);

/* A delivery of item_seq (accepted at accepted_at_s, in the broker's time)
 * was sent for the first time by this process, at now_ms (the broker's
 * time, wallclock.h): observe its accept-to-deliver latency.
 * Redeliveries are not observed. */
void metrics_first_send(metrics_t *m, uint64_t item_seq, int64_t accepted_at_s, int64_t now_ms);

/* The broker serves: start-up and self-check are done. Call it before
 * readiness is announced (READY line, sd_notify), so that /healthz and
 * /readyz agree with it from then on; it also arms the watchdog if systemd
 * asked for one. broker_run must follow. Until then /healthz, /readyz and
 * /metrics answer 503 "starting": nothing the store or the policy holds is
 * exported before it is known. */
void metrics_serving(struct broker *b);

/* The broker stops: from now on /readyz answers 503 "stopping", /healthz
 * 200 "stopping", /metrics 503 (the loop turns no more); systemd is told
 * STOPPING=1. Call it before the stop path's work (its last commit and
 * checkpoint, which may wait for the disk). Before metrics_serving (a stop
 * asked during start-up) too. */
void metrics_stopping(struct broker *b);

/* How a loop turn ended, for metrics_turn_end. */
#define METRICS_TURN_IDLE 0         /* nothing was written to the store */
#define METRICS_TURN_COMMITTED 1    /* the turn's writes were committed */
#define METRICS_TURN_ROLLED_BACK -1 /* the turn's writes were rolled back */

/* Around each loop turn. A rolled-back turn accepted and acked nothing:
 * b->stats.accepted, .duplicates and .acked go back to their values at
 * metrics_turn_begin. metrics_turn_end then pings the watchdog when due
 * and publishes the snapshot the HTTP thread serves; /readyz follows the
 * outcome of the last turn that wrote. Gauges that need the store (backlog
 * per partner, store size) are refreshed at most every 5 s, connected
 * principals at most every second (and both at once after a policy
 * change). */
void metrics_turn_begin(struct broker *b);
void metrics_turn_end(struct broker *b, int outcome);

/* The longest the loop may sleep in zmq_poll: max_ms, or less so that a
 * short watchdog interval is still met. */
int metrics_poll_timeout_ms(const struct broker *b, int max_ms);

#endif
