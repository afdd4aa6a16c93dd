/*
 * zap.c — the ZAP handler: admits registered keys only (see zap.h).
 *
 * Trusts nothing in a request but the CURVE key libzmq itself authenticated:
 * the identity frame and the routing id are client-chosen and ignored.
 * A malformed request is answered 400 (or dropped when it cannot even be
 * answered) and logged; the broker carries on. Replies wait for the
 * turn's commit (zap_flush): an admission is granted only once its audit
 * entry is on disk.
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
/* The ROUTER's envelope before a request: the pipe's routing id and the
 * empty delimiter of libzmq's REQ-style ZAP client. */
#define ZAP_ENVELOPE 2

typedef struct zap_part {
    size_t len;
    char data[ZAP_PART_MAX + 1]; /* NUL-terminated copy, truncated parts are flagged */
    int truncated;
} zap_part_t;

/* A reply waiting for the turn's commit. */
typedef struct zap_pending {
    zap_part_t routing_id;
    zap_part_t request_id;
    int admitted;
    const char *why; /* refused: a static reason text */
    char user_id[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    char key_z85[41];
    zap_part_t peer, domain; /* to record a refusal again after a rollback */
    int counted;             /* a refusal only counted: nothing to record again */
    int retry;               /* refused for now (throttled): answered 300, not 400 */
} zap_pending_t;

struct zap {
    void *socket; /* ROUTER */
    zap_counts_t counts;
    zap_pending_t *pending; /* decided this turn, answered by zap_flush */
    size_t n_pending, cap_pending;
};

zap_t *zap_new(void *ctx, char *err, size_t errlen)
{
    zap_t *zap = calloc(1, sizeof *zap);
    if (zap == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    zap->socket = zmq_socket(ctx, ZMQ_ROUTER);
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
    free((*zap)->pending);
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

/* Never blocks: a pipe whose handshake went away meanwhile is unknown to
 * the ROUTER and the reply is dropped (not MANDATORY), which is right. */
static int zap_reply(void *socket, const zap_part_t *routing_id, const zap_part_t *request_id,
                     const char *status, const char *text, const char *user_id, const char *key_z85)
{
    uint8_t metadata[64];
    size_t metadata_len = key_z85 != NULL ? zap_metadata(key_z85, metadata) : 0;
    int rc = 0, more = ZMQ_SNDMORE | ZMQ_DONTWAIT;
    rc |= zmq_send(socket, routing_id->data, routing_id->len, more) < 0;
    rc |= zmq_send(socket, "", 0, more) < 0;
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
static const policy_principal_t *zap_decide(const policy_t *policy, const zap_part_t *parts, int n,
                                            const char **why)
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
    int admin = strcmp(parts[2].data, ZAP_DOMAIN_ADMIN) == 0;
    if (!admin && strcmp(parts[2].data, ZAP_DOMAIN_PARTNERS) != 0) {
        *why = "unknown ZAP domain";
        return NULL;
    }
    const policy_principal_t *p =
        policy_principal_by_curve_key(policy, (const uint8_t *)parts[6].data);
    if (p == NULL) {
        *why = "key not registered";
        return NULL;
    }
    /* Operators monitor and never see signals; partners never administer. */
    if (!admin && p->role == ROLE_OPERATOR) {
        *why = "operator keys may not use the partner endpoint";
        return NULL;
    }
    if (admin && p->role != ROLE_OPERATOR) {
        *why = "only operator keys may use the admin endpoint";
        return NULL;
    }
    return p;
}

/* Queue the reply to one request for zap_flush. Returns 0, or -1 when out
 * of memory (the request then goes unanswered; the client's handshake
 * times out and it tries again). */
static int zap_queue(zap_t *zap, const zap_part_t *routing_id, const zap_part_t *request_id,
                     const policy_principal_t *p, const zap_decision_t *decision)
{
    if (zap->n_pending == zap->cap_pending) {
        size_t cap = zap->cap_pending ? zap->cap_pending * 2 : 16;
        zap_pending_t *grown = realloc(zap->pending, cap * sizeof *grown);
        if (grown == NULL)
            return -1;
        zap->pending = grown;
        zap->cap_pending = cap;
    }
    zap_pending_t *r = &zap->pending[zap->n_pending++];
    memset(r, 0, sizeof *r);
    r->routing_id = *routing_id;
    r->request_id = *request_id;
    r->admitted = p != NULL;
    r->why = decision->why;
    if (p != NULL)
        snprintf(r->user_id, sizeof r->user_id, "%s", p->id);
    snprintf(r->key_z85, sizeof r->key_z85, "%s", decision->key_z85);
    r->peer.len = (size_t)snprintf(r->peer.data, sizeof r->peer.data, "%s", decision->peer);
    r->domain.len = (size_t)snprintf(r->domain.data, sizeof r->domain.data, "%s", decision->domain);
    return 0;
}

/* Decide, count, record and queue one request (parts without envelope). */
static void zap_decide_one(zap_t *zap, const policy_t *policy, const policy_t *narrowing,
                           const zap_part_t *routing_id, const zap_part_t *parts, int n,
                           zap_record_fn record, zap_allow_fn allow, void *arg)
{
    const char *why = NULL;
    const policy_principal_t *p = zap_decide(policy, parts, n, &why);
    if (p != NULL && narrowing != NULL) {
        /* the reload not recorded yet must admit the same principal too */
        const policy_principal_t *q = zap_decide(narrowing, parts, n, &why);
        if (q == NULL || strcmp(q->id, p->id) != 0) {
            p = NULL;
            why = "key revoked by a policy reload (not yet recorded)";
        }
    }
    /* A registered key cannot open connections without end: each costs a
     * socket and an admission entry in the trail. */
    int retry = 0;
    if (p != NULL && allow != NULL && !allow(arg, p->id)) {
        p = NULL;
        why = ZAP_WHY_THROTTLED;
        retry = 1;
        zap->counts.throttled++;
    }
    char key_z85[41] = "-";
    if (n == 7 && parts[6].len == 32)
        keys_public_z85((const uint8_t *)parts[6].data, key_z85);
    zap_decision_t decision = {
        .admitted = p != NULL,
        .principal = p != NULL ? p->id : NULL,
        .key_z85 = key_z85,
        .peer = n >= 4 ? parts[3].data : "-",
        .domain = n >= 3 ? parts[2].data : "-",
        .why = why,
    };
    if (p != NULL)
        zap->counts.admitted++;
    else
        zap->counts.refused++;
    /* A reply must carry the request id; with fewer than two parts there is
     * nothing to answer it with, and it is answered with an empty one. An
     * unanswered request admits nobody, so it is not recorded as decided. */
    zap_part_t empty = {0};
    if (zap_queue(zap, routing_id, n >= 2 ? &parts[1] : &empty, p, &decision) != 0) {
        log_event(LOG_ERROR, "zap.unanswered", "why", "out of memory", NULL);
        return;
    }
    zap->pending[zap->n_pending - 1].retry = retry;
    /* a failure fails the turn: see zap_flush */
    if (record != NULL && record(arg, &decision) == 1)
        zap->pending[zap->n_pending - 1].counted = 1;
}

int zap_handle(zap_t *zap, const policy_t *policy, const policy_t *narrowing, zap_record_fn record,
               zap_allow_fn allow, void *arg)
{
    int handled = 0;
    while (handled < (int)SCHAKEL_MAX_BATCH) {
        zap_part_t frames[ZAP_ENVELOPE + ZAP_MAX_PARTS];
        int n = zap_receive(zap->socket, frames, ZAP_ENVELOPE + ZAP_MAX_PARTS);
        if (n == 0)
            break;
        if (n < 0)
            return -1;
        handled++;
        if (n > ZAP_ENVELOPE + ZAP_MAX_PARTS)
            n = ZAP_ENVELOPE + ZAP_MAX_PARTS;
        /* Only libzmq itself connects here; without the envelope there is
         * no way to answer, and nothing to admit. */
        if (n < ZAP_ENVELOPE || frames[0].truncated || frames[1].len != 0) {
            log_event(LOG_ERROR, "zap.malformed", "why", "no routing envelope", NULL);
            continue;
        }
        zap_decide_one(zap, policy, narrowing, &frames[0], frames + ZAP_ENVELOPE, n - ZAP_ENVELOPE,
                       record, allow, arg);
    }
    return handled;
}

/* After the rollback of its turn: a refusal's record made again, or an
 * admission's made a refusal (it is answered 300). */
static void zap_record_again(const zap_pending_t *r, zap_record_fn record, void *arg)
{
    zap_decision_t decision = {
        .admitted = 0,
        .principal = r->admitted ? r->user_id : NULL,
        .key_z85 = r->key_z85,
        .peer = r->peer.data,
        .domain = r->domain.data,
        .why = r->admitted ? ZAP_WHY_UNRECORDED : r->why,
        .again = !r->admitted,
        .unrecorded = r->admitted,
    };
    (void)record(arg, &decision); /* carried until the trail holds it (record.c) */
}

void zap_flush(zap_t *zap, int committed, zap_record_fn record, void *arg)
{
    if (zap == NULL)
        return;
    for (size_t i = 0; i < zap->n_pending; i++) {
        const zap_pending_t *r = &zap->pending[i];
        int admit = r->admitted && committed;
        if (!r->counted && !committed && record != NULL)
            zap_record_again(r, record, arg);
        const char *status = admit ? "200" : r->admitted || r->retry ? "300" : "400";
        const char *text = admit ? "OK" : r->admitted ? ZAP_WHY_UNRECORDED : r->why;
        if (zap_reply(zap->socket, &r->routing_id, &r->request_id, status, text,
                      admit ? r->user_id : "", admit ? r->key_z85 : NULL) != 0)
            log_event(LOG_WARN, "zap.reply_failed", "error", zmq_strerror(zmq_errno()), NULL);
    }
    zap->n_pending = 0;
}

int zap_has_pending(const zap_t *zap)
{
    return zap != NULL && zap->n_pending > 0;
}
