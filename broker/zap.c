/*
 * zap.c — the ZAP handler: admits registered keys only (see zap.h).
 *
 * Trusts nothing in a request but the CURVE key libzmq itself authenticated:
 * the identity frame and the routing id are client-chosen and ignored.
 * A malformed request is answered 400 (or dropped when it cannot even be
 * answered) and logged; the broker carries on.
 */
#include "zap.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "keys.h"
#include "log.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_MAX_PARTS 8
#define ZAP_PART_MAX 256

struct zap {
    void *socket;
    zap_counts_t counts;
};

zap_t *zap_new(void *ctx, char *err, size_t errlen)
{
    zap_t *zap = calloc(1, sizeof *zap);
    if (zap == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    zap->socket = zmq_socket(ctx, ZMQ_REP);
    int linger = 0;
    if (zap->socket == NULL || zmq_setsockopt(zap->socket, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_bind(zap->socket, ZAP_ENDPOINT) != 0) {
        snprintf(err, errlen, "cannot bind the ZAP handler on %s: %s", ZAP_ENDPOINT,
                 zmq_strerror(zmq_errno()));
        zap_destroy(&zap);
        return NULL;
    }
    return zap;
}

void zap_destroy(zap_t **zap)
{
    if (zap == NULL || *zap == NULL)
        return;
    if ((*zap)->socket != NULL)
        zmq_close((*zap)->socket);
    free(*zap);
    *zap = NULL;
}

void *zap_socket(zap_t *zap)
{
    return zap->socket;
}

zap_counts_t zap_counts(const zap_t *zap)
{
    return zap->counts;
}

typedef struct zap_part {
    size_t len;
    char data[ZAP_PART_MAX + 1]; /* NUL-terminated copy, truncated parts are flagged */
    int truncated;
} zap_part_t;

/* Receive all parts of one request (non-blocking). Returns the count of
 * parts, 0 when nothing is pending, -1 on error. Extra parts are drained. */
static int zap_receive(void *socket, zap_part_t *parts, int max)
{
    int n = 0;
    int more = 1;
    while (more) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, socket, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(&msg);
            return (n == 0 && zmq_errno() == EAGAIN) ? 0 : -1;
        }
        if (n < max) {
            size_t len = zmq_msg_size(&msg);
            parts[n].truncated = len > ZAP_PART_MAX;
            parts[n].len = len > ZAP_PART_MAX ? ZAP_PART_MAX : len;
            memcpy(parts[n].data, zmq_msg_data(&msg), parts[n].len);
            parts[n].data[parts[n].len] = '\0';
        }
        n++;
        more = zmq_msg_more(&msg);
        zmq_msg_close(&msg);
    }
    return n;
}

/* ZAP metadata (ZMTP property list): one property naming the admitted
 * CURVE key, so that every frame can be checked against the key the
 * current policy registers for its principal (see broker.c). */
static size_t zap_metadata(const char *key_z85, uint8_t *out)
{
    static const char name[] = ZAP_PROPERTY_KEY;
    size_t name_len = sizeof name - 1, value_len = strlen(key_z85);
    out[0] = (uint8_t)name_len;
    memcpy(out + 1, name, name_len);
    out[1 + name_len] = 0;
    out[2 + name_len] = 0;
    out[3 + name_len] = 0;
    out[4 + name_len] = (uint8_t)value_len;
    memcpy(out + 5 + name_len, key_z85, value_len);
    return 5 + name_len + value_len;
}

static int zap_reply(void *socket, const zap_part_t *request_id, const char *status,
                     const char *text, const char *user_id, const char *key_z85)
{
    uint8_t metadata[64];
    size_t metadata_len = key_z85 != NULL ? zap_metadata(key_z85, metadata) : 0;
    int rc = 0;
    rc |= zmq_send(socket, "1.0", 3, ZMQ_SNDMORE) < 0;
    rc |= zmq_send(socket, request_id->data, request_id->len, ZMQ_SNDMORE) < 0;
    rc |= zmq_send(socket, status, strlen(status), ZMQ_SNDMORE) < 0;
    rc |= zmq_send(socket, text, strlen(text), ZMQ_SNDMORE) < 0;
    rc |= zmq_send(socket, user_id, strlen(user_id), ZMQ_SNDMORE) < 0;
    rc |= zmq_send(socket, metadata, metadata_len, 0) < 0;
    return rc ? -1 : 0;
}

/* Decide one well-formed CURVE request. Returns the admitted principal or
 * NULL with *why set. */
static const policy_principal_t *zap_decide(const policy_t *policy, const zap_part_t *parts,
                                            int n, const char **why)
{
    /* version, request id, domain, address, identity, mechanism, credentials */
    if (n != 7 || strcmp(parts[0].data, "1.0") != 0) {
        *why = "malformed ZAP request";
        return NULL;
    }
    if (strcmp(parts[5].data, "CURVE") != 0 || parts[6].len != 32 || parts[6].truncated) {
        *why = "mechanism is not CURVE";
        return NULL;
    }
    if (strcmp(parts[2].data, ZAP_DOMAIN_PARTNERS) != 0) {
        *why = "unknown ZAP domain";
        return NULL;
    }
    const policy_principal_t *p =
        policy_principal_by_curve_key(policy, (const uint8_t *)parts[6].data);
    if (p == NULL) {
        *why = "key not registered";
        return NULL;
    }
    if (p->role == ROLE_OPERATOR) {
        *why = "operator keys may not use the partner endpoint";
        return NULL;
    }
    return p;
}

int zap_handle(zap_t *zap, const policy_t *policy)
{
    int answered = 0;
    for (;;) {
        zap_part_t parts[ZAP_MAX_PARTS];
        int n = zap_receive(zap->socket, parts, ZAP_MAX_PARTS);
        if (n == 0)
            return answered;
        if (n < 0)
            return -1;
        if (n > ZAP_MAX_PARTS)
            n = ZAP_MAX_PARTS;
        const char *why = NULL;
        const policy_principal_t *p = zap_decide(policy, parts, n, &why);
        char key_z85[41] = "-";
        if (n == 7 && parts[6].len == 32)
            keys_public_z85((const uint8_t *)parts[6].data, key_z85);
        const char *address = n >= 4 ? parts[3].data : "-";
        if (p != NULL) {
            zap->counts.admitted++;
            log_event(LOG_INFO, "auth.admitted", "principal", p->id, "curve_key", key_z85,
                      "peer", address, NULL);
        } else {
            zap->counts.refused++;
            log_event(LOG_WARN, "auth.refused", "reason", why, "curve_key", key_z85, "peer",
                      address, NULL);
        }
        /* A reply must carry the request id; with fewer than two parts there
         * is nothing to answer, and REP needs a reply before the next request. */
        zap_part_t empty = {0};
        const zap_part_t *request_id = n >= 2 ? &parts[1] : &empty;
        if (zap_reply(zap->socket, request_id, p ? "200" : "400", p ? "OK" : why,
                      p ? p->id : "", p ? key_z85 : NULL) != 0)
            return -1;
        answered++;
    }
}
