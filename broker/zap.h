/*
 * zap.h — the ZAP handler (RFC 27): who may complete a CURVE handshake.
 *
 * Runs in the broker's thread and context; the broker polls zap_socket()
 * and calls zap_handle() when it is readable. Admits only keys registered in
 * the current policy whose role fits the domain, and answers with the
 * principal id as User-Id. Every decision is logged with key and peer
 * address. Unknown mechanisms, domains and malformed requests are refused.
 */
#ifndef SCHAKEL_ZAP_H
#define SCHAKEL_ZAP_H

#include "policy.h"

/* ZAP domain of the partner endpoint (signals); later the admin endpoint
 * uses its own. */
#define ZAP_DOMAIN_PARTNERS "schakel"

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
    unsigned long refused;
} zap_counts_t;
zap_counts_t zap_counts(const zap_t *zap);

/* Answer every pending ZAP request (non-blocking) under `policy`. Returns
 * the number answered, or -1 on a socket error. */
int zap_handle(zap_t *zap, const policy_t *policy);

#endif
