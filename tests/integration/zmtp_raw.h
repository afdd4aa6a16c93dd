/*
 * zmtp_raw.h — a CurveZMQ client of its own for tests that must put on the
 * wire what libzmq never sends: the parts of a multipart message without
 * its last part (libzmq's own sending keeps an unfinished message in the
 * client, and nothing of it reaches the broker before its last part).
 *
 * ZMTP 3.0 with the CURVE mechanism (RFC 23, RFC 26), as a DEALER: the
 * handshake, MESSAGE commands with the MORE flag as the caller asks, and
 * the broker's messages opened, its ZMTP PINGs answered with PONG. One
 * blocking TCP socket; every wait is bounded. Failures end the running
 * cmocka test (the handshake), or are returned (the connection closed).
 */
#ifndef SCHAKEL_TEST_ZMTP_RAW_H
#define SCHAKEL_TEST_ZMTP_RAW_H

#include <stddef.h>
#include <stdint.h>

#include "harness.h"

typedef struct zmtp_raw zmtp_raw_t;

/* Connect to the broker of env as principal (its key file) and finish the
 * handshake; fails the test when it is not admitted within H_TIMEOUT_MS. */
zmtp_raw_t *zmtp_raw_connect(const h_env_t *env, const char *principal);
/* The same, to another endpoint of that broker (its admin endpoint). */
zmtp_raw_t *zmtp_raw_connect_to(const h_env_t *env, const char *endpoint, const char *principal);
void zmtp_raw_close(zmtp_raw_t **raw);

/* Send one part of `len` bytes, with the MORE flag when `more`. Answers
 * the broker's PINGs that arrived meanwhile. 0, or -1 once the broker
 * closed the connection; a send blocked for H_TIMEOUT_MS (times
 * h_time_factor) fails the test. */
int zmtp_raw_send(zmtp_raw_t *raw, const void *data, size_t len, int more);

/* Wait up to timeout_ms for the broker's next message (one frame; its
 * PINGs are answered on the way): 1 with *out (malloc'd, the caller's)
 * and *len, 0 when none came, -1 when the connection closed. */
int zmtp_raw_recv(zmtp_raw_t *raw, uint8_t **out, size_t *len, int timeout_ms);

/* 1 once the broker closed the connection (what arrives meanwhile is read
 * and dropped), within timeout_ms; 0 if it is still open then. */
int zmtp_raw_closed(zmtp_raw_t *raw, int timeout_ms);

/* Wait up to timeout_ms until the broker's kernel has acknowledged every
 * byte sent (none left in our send queue): what was sent is in the
 * broker's receive queue, or read, even while the broker is stopped
 * (h_broker_pause), and libzmq reads it there in one go once it runs. 0,
 * or -1 when bytes are still unacknowledged then. */
int zmtp_raw_delivered(zmtp_raw_t *raw, int timeout_ms);

/* End the connection for writing (shutdown: a FIN behind what was sent),
 * the socket kept open to read: the broker reads what came before, then
 * the end, and closes its side, which zmtp_raw_closed sees. Fails the
 * test if the kernel refuses. */
void zmtp_raw_end(zmtp_raw_t *raw);

/* Bytes written to the socket so far (the handshake included). */
uint64_t zmtp_raw_sent_bytes(const zmtp_raw_t *raw);

#endif
