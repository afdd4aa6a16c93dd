/*
 * zap.h — the ZAP handler (RFC 27): who may complete a CURVE handshake.
 *
 * Runs in the broker's thread and context; the broker polls zap_socket()
 * and calls zap_handle() when it is readable. Admits only keys registered in
 * the current policy whose role fits the domain (operators on the admin
 * domain only, everyone else on the partner domain only), and answers with the
 * principal id as User-Id. Every decision is recorded (log line and audit
 * entry, record.c) with key and peer address, and answered only after the
 * turn that recorded it commits. Unknown mechanisms, domains and malformed
 * requests are refused.
 */
#ifndef SCHAKEL_ZAP_H
#define SCHAKEL_ZAP_H

#include "policy.h"
#include "schakel_limits.h"

/* ZAP domain of the partner endpoint (signals): system and caseworker
 * keys only. */
#define ZAP_DOMAIN_PARTNERS "schakel"

/* ZAP domain of the admin endpoint (admin.h): operator keys only. */
#define ZAP_DOMAIN_ADMIN "admin"

/* Message property set on every admitted connection: the Z85 of the CURVE
 * key it authenticated with. */
#define ZAP_PROPERTY_KEY "X-Curve-Key"

typedef struct zap zap_t;

/* Bind the handler in ctx; must happen before any CURVE server socket binds.
 * Returns NULL with err filled on failure. */
zap_t *zap_new(void *ctx, char *err, size_t errlen);
void zap_destroy(zap_t **zap);
void *zap_socket(zap_t *zap);

/* Counters since start, for the self-check and status. */
typedef struct zap_counts {
    unsigned long admitted;
    unsigned long refused;   /* every refusal, the throttled ones too */
    unsigned long throttled; /* registered keys refused for now: too many handshakes */
} zap_counts_t;
zap_counts_t zap_counts(const zap_t *zap);

/* One decision, for the record (record.c). Borrowed: valid during the
 * call only. */
typedef struct zap_decision {
    int admitted;
    const char *principal; /* admitted: the principal id; refused: NULL */
    const char *key_z85;   /* the CURVE key in Z85; "-" when the request had none */
    const char *peer;      /* the peer's address as libzmq reports it */
    const char *domain;    /* the ZAP domain; "-" when the request had none */
    const char *why;       /* refused: the reason */
    int again;             /* recorded once already, in a turn that was rolled back */
    /* an admission whose record was rolled back with its turn, refused
     * after all (answered 300): principal names whom it would have
     * admitted, why is ZAP_WHY_UNRECORDED */
    int unrecorded;
} zap_decision_t;

/* Records a decision (an audit entry in the turn's transaction). Returns 0
 * when recorded, 1 when a refusal was only counted (nothing written, so
 * nothing to record again after a rollback), or -1; either way the reply
 * waits for zap_flush, which grants an admission only when the turn that
 * holds its record committed. */
typedef int (*zap_record_fn)(void *arg, const zap_decision_t *decision);

/* Whether `principal`, admitted by the policy, may complete one more
 * handshake now (1) or has made too many of late (0). Each call that
 * returns 1 counts one handshake. */
typedef int (*zap_allow_fn)(void *arg, const char *principal);

/* The reason a throttled handshake is refused with (and recorded). */
#define ZAP_WHY_THROTTLED                                                                          \
    "too many handshakes by this principal (max_handshakes_per_minute): try again later"

/* The reason an admission whose record was rolled back is refused with
 * after all (answered 300, and recorded so). */
#define ZAP_WHY_UNRECORDED "the audit trail could not record this admission; try again"

/* Read up to SCHAKEL_MAX_BATCH pending ZAP requests (non-blocking), decide
 * each under `policy` (and, when `narrowing` is not NULL, under it too: a
 * reload not yet recorded admits nobody the policy in force would not,
 * and refuses whom it revokes), then ask allow(arg, ...) (may be NULL)
 * whether the principal may make one more handshake now, record the
 * decision with record(arg, ...) (may be NULL) and queue its reply:
 * nothing is answered yet. Returns the number read, or -1 on a socket
 * error. The handler is a ROUTER, so that replies can wait for the commit
 * while further requests are read (RFC 27's REQ client speaks to it
 * through the empty delimiter frame). */
int zap_handle(zap_t *zap, const policy_t *policy, const policy_t *narrowing, zap_record_fn record,
               zap_allow_fn allow, void *arg);

/* After the turn's commit: send every queued reply. Refusals go as they
 * are (400), a throttled handshake as a temporary failure (300: libzmq
 * closes the connection without an ERROR and the client's libzmq tries
 * again after its reconnect interval); when the turn was rolled back
 * (committed == 0) their records went with it and are made again with
 * record (again set; record.c carries them until the trail holds them).
 * An admission goes as 200 when committed is set; otherwise its record was
 * rolled back and it is answered 300 (temporary failure), and recorded as
 * refused after all with record (unrecorded set): libzmq then closes that
 * connection without an ERROR, and the client reconnects and tries again.
 * Safe on NULL. */
void zap_flush(zap_t *zap, int committed, zap_record_fn record, void *arg);

/* 1 when zap_handle queued replies that wait for zap_flush. Safe on NULL. */
int zap_has_pending(const zap_t *zap);

#endif
