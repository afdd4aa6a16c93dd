/*
 * admin.h — the admin endpoint: operators ask the running broker questions
 * (status, partners, rules) and ask it to reload its policy.
 *
 * A second CURVE ROUTER in the broker's context, with ZAP domain "admin":
 * the ZAP handler admits only principals with role operator there (and
 * never on the partner endpoint). The broker's loop polls its socket; every
 * request is read, checked and recorded during the turn, and executed and
 * answered only after the turn's commit (so a request whose record cannot
 * be committed is refused, not executed). The data-subject export alone
 * runs on over later turns, a bounded step each (admin_export_step). The wire format (AdminRequest,
 * AdminResponse with a JSON document) is docs/PROTOCOL.md section 11.
 */
#ifndef SCHAKEL_ADMIN_H
#define SCHAKEL_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "keys.h"

typedef struct admin admin_t;
struct broker;

/* Bind the admin ROUTER on `listen` (a tcp:// endpoint) in ctx with the
 * broker's key; the ZAP handler must already be bound in ctx. store_path
 * names the store file, for its size in `status`. An operator's connection
 * that answers no ZMTP heartbeat for heartbeat_timeout_ms is closed (and
 * an export it was reading dropped). Returns NULL with err filled on
 * failure. */
admin_t *admin_new(void *ctx, const keypair_t *key, const char *listen, const char *store_path,
                   int heartbeat_timeout_ms, char *err, size_t errlen);

/* Close the socket, drop unanswered requests, free; *admin = NULL. Safe on
 * NULL and on *admin == NULL. */
void admin_destroy(admin_t **admin);

/* The socket, for the broker's zmq_poll. */
void *admin_socket(admin_t *admin);

/* The endpoint actually bound (a port chosen for "tcp://HOST:*"). */
const char *admin_endpoint(const admin_t *admin);

/* Read up to SCHAKEL_ADMIN_BATCH pending requests (non-blocking), check the
 * caller's identity (ZAP User-Id, still an operator with the same key under
 * the current policy) and the frame, and record each. Nothing is executed
 * or answered yet. Returns the number read, or -1 on a socket error. */
int admin_receive(admin_t *admin, struct broker *b);

/* After the turn's commit: execute what admin_receive accepted and answer
 * every request read this turn. committed == 0 (the turn was rolled back,
 * and with it the requests' records) refuses each request unexecuted. */
void admin_after_commit(admin_t *admin, struct broker *b, int committed);

/* 1 when admin_receive read requests that wait for admin_after_commit.
 * Safe on NULL. */
int admin_has_pending(const admin_t *admin);

/* The data-subject export (audit-subject), one at a time, read in steps
 * over loop turns from the turn after its request's commit, up to the
 * trail's last committed entry then (audit.h audit_export_begin).
 * admin_export_step: in the turn, before its commit: one step (at most
 * SCHAKEL_EXPORT_STEP_ENTRIES entries or SCHAKEL_EXPORT_STEP_DELIVERIES
 * deliveries); an export whose operator's connection closed (any event on
 * its socket from the reading of its request on) is dropped (wiped,
 * nothing recorded); one whose key is no longer an operator's ends
 * unanswered but for why; the last step writes the export's record, and
 * admin_after_commit hands the document out only if that commit went
 * through, in chunks over the turns while its operator owes under
 * SCHAKEL_EXPORT_MAX_OWED_BYTES; the export ends once its last chunk has
 * left libzmq. admin_export_wait_ms: how long the loop may wait for the
 * export (-1: none runs; 0 while it reads, or sends with room;
 * SCHAKEL_EXPORT_SEND_WAIT_MS while its operator owes the bound or libzmq
 * holds the last chunks). admin_stop: at the broker's stop, an unfinished
 * export is answered that it was stopped, and wiped. admin_stop_drain:
 * the stop's last step, once the store is done with: one going out goes
 * on going out until its operator has it and closes the connection, or
 * its connection closes otherwise, or for at most SCHAKEL_ADMIN_STOP_MAX_MS
 * (blocks meanwhile), or until a second stop signal (signals_stop_repeated,
 * its poll woken by the signals' eventfd); one whose operator's key a
 * reload took out ends first. admin_export_abandon: an export still going out when the broker
 * ends without that (a storage failure) is said undelivered; called by
 * admin_destroy. Each is safe on NULL. */
void admin_export_step(admin_t *admin, struct broker *b);
int admin_export_wait_ms(const admin_t *admin);
void admin_stop(admin_t *admin, const struct broker *b);
void admin_stop_drain(admin_t *admin, const struct broker *b);
void admin_export_abandon(admin_t *admin);

/* A retention in seconds as a policy writes it, in the largest unit that
 * divides it exactly: 31536000 -> "1y", 7776000 -> "90d", 90 -> "90s".
 * out holds at least 24 bytes. */
void admin_retention_text(int64_t seconds, char *out, size_t outlen);

#endif
