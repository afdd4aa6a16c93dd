/*
 * selfcheck.c — at start-up, prove that an unknown key cannot get in.
 *
 * A CURVE server without a working ZAP handler admits anyone who knows its
 * public key (PITFALLS.md). So before serving, the broker connects a probe
 * with a fresh random key to its own endpoint (and to its admin endpoint), services the ZAP handler
 * while it waits, and requires the probe's own monitor to report an
 * authentication failure (not a completed handshake) and the ZAP handler to
 * have refused a key. Anything else refuses start-up. Partners that connect
 * meanwhile are served by the ZAP handler as usual; their frames wait in
 * the ROUTER until the loop starts.
 */
#include "broker.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#define SELFCHECK_MONITOR "inproc://schakel-selfcheck-monitor"
#define SELFCHECK_TIMEOUT_MS 10000

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A loopback address to reach our own endpoint (a wildcard bind reports
 * 0.0.0.0 or [::]). */
static void probe_endpoint(const char *bound, char *out, size_t len)
{
    const char *port = strrchr(bound, ':');
    if (strncmp(bound, "tcp://0.0.0.0:", 14) == 0 && port != NULL)
        snprintf(out, len, "tcp://127.0.0.1%s", port);
    else if (strncmp(bound, "tcp://[::]:", 11) == 0 && port != NULL)
        snprintf(out, len, "tcp://[::1]%s", port);
    else
        snprintf(out, len, "%s", bound);
}

/* Each probe gets its own monitor endpoint: libzmq releases an inproc
 * name only some time after its monitor stopped. */
static void *probe_new(broker_t *b, void **monitor, const char *endpoint)
{
    static unsigned probes;
    char monitor_endpoint[64];
    snprintf(monitor_endpoint, sizeof monitor_endpoint, "%s-%u", SELFCHECK_MONITOR, probes++);
    char pub[41], sec[41], server[41];
    int zero = 0;
    void *probe = zmq_socket(b->ctx, ZMQ_DEALER);
    if (probe == NULL)
        return NULL;
    /* A random key that no policy can contain. */
    if (zmq_curve_keypair(pub, sec) != 0 || zmq_z85_encode(server, b->key->curve_pk, 32) == NULL ||
        zmq_setsockopt(probe, ZMQ_CURVE_SERVERKEY, server, 40) != 0 ||
        zmq_setsockopt(probe, ZMQ_CURVE_PUBLICKEY, pub, 40) != 0 ||
        zmq_setsockopt(probe, ZMQ_CURVE_SECRETKEY, sec, 40) != 0 ||
        zmq_setsockopt(probe, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_socket_monitor(probe, monitor_endpoint, ZMQ_EVENT_ALL) != 0) {
        zmq_close(probe);
        return NULL;
    }
    memset(sec, 0, sizeof sec);
    *monitor = zmq_socket(b->ctx, ZMQ_PAIR);
    if (*monitor == NULL || zmq_setsockopt(*monitor, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_connect(*monitor, monitor_endpoint) != 0 || zmq_connect(probe, endpoint) != 0) {
        if (*monitor != NULL)
            zmq_close(*monitor);
        zmq_close(probe);
        return NULL;
    }
    /* Queued until the handshake succeeds, which it must not. */
    zmq_send(probe, "probe", 5, ZMQ_DONTWAIT);
    return probe;
}

/* Read one monitor event; returns its number, 0 if none. */
static int monitor_event(void *monitor)
{
    zmq_msg_t head, addr;
    zmq_msg_init(&head);
    if (zmq_msg_recv(&head, monitor, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&head);
        return 0;
    }
    uint16_t event = 0;
    if (zmq_msg_size(&head) >= 2)
        memcpy(&event, zmq_msg_data(&head), 2);
    zmq_msg_close(&head);
    zmq_msg_init(&addr);
    zmq_msg_recv(&addr, monitor, 0);
    zmq_msg_close(&addr);
    return event;
}

/* One endpoint (the partner endpoint, or the admin endpoint bound to the
 * same ZAP handler under its own domain) must refuse the probe. */
static int self_check_endpoint(broker_t *b, const char *bound, char *err, size_t errlen)
{
    char endpoint[300];
    void *monitor = NULL;
    probe_endpoint(bound, endpoint, sizeof endpoint);
    zap_counts_t before = zap_counts(b->zap);
    void *probe = probe_new(b, &monitor, endpoint);
    if (probe == NULL) {
        snprintf(err, errlen, "self-check: cannot create the probe: %s", zmq_strerror(zmq_errno()));
        return -1;
    }
    int verdict = 0; /* 1 refused as it must be, -1 admitted */
    int64_t deadline = now_ms() + SELFCHECK_TIMEOUT_MS;
    while (verdict == 0 && now_ms() < deadline) {
        zmq_pollitem_t items[] = {
            {.socket = zap_socket(b->zap), .events = ZMQ_POLLIN},
            {.socket = monitor, .events = ZMQ_POLLIN},
        };
        if (zmq_poll(items, 2, 100) < 0)
            continue;
        if (items[0].revents & ZMQ_POLLIN)
            broker_serve_zap(b);
        int event;
        while (verdict == 0 && (event = monitor_event(monitor)) != 0) {
            if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
                verdict = 1;
            else if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
                verdict = -1;
        }
    }
    zmq_socket_monitor(probe, NULL, 0);
    zmq_close(monitor);
    zmq_close(probe);
    zap_counts_t after = zap_counts(b->zap);
    if (verdict == 1 && after.refused > before.refused)
        return 0;
    if (verdict == -1)
        snprintf(err, errlen,
                 "self-check FAILED: a client with an unknown key was admitted on %s; "
                 "refusing to serve",
                 endpoint);
    else
        snprintf(err, errlen,
                 "self-check failed: no authentication verdict for a probe on %s within %d ms",
                 endpoint, SELFCHECK_TIMEOUT_MS);
    return -1;
}

int broker_self_check(broker_t *b, char *err, size_t errlen)
{
    if (self_check_endpoint(b, b->endpoint, err, errlen) != 0)
        return -1;
    return b->admin != NULL ? self_check_endpoint(b, admin_endpoint(b->admin), err, errlen) : 0;
}
