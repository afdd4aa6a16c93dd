/*
 * client_internal.h — what the connection (client.c, client_wait.c,
 * client_frames.c, client_request.c) offers the other files of
 * libschakel: case.c sends
 * its requests and reads the answers through it. Internal (not installed,
 * not exported from the .so).
 */
#ifndef SCHAKEL_CLIENT_INTERNAL_H
#define SCHAKEL_CLIENT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "schakel.h"
#include "schakel_limits.h"
#include "wire.h"

/* Milliseconds of the monotonic clock (for deadlines). */
int64_t client_now_ms(void);

/* Record a failure as the client's last error and return its status. */
schakel_status_t client_fail(schakel_client_t *client, schakel_status_t status, const char *fmt,
                             ...) __attribute__((format(printf, 3, 4)));

/* Copy a broker Rejected into err: reason code, its name, item, and the
 * broker's own text (prefixed by `what` when given). */
void client_error_rejected(schakel_error_t *err, const Schakel__Rejected *rejected,
                           const char *what);

/* Make a Rejected the client's last error (status SCHAKEL_ERR_REFUSED). */
void client_refused(schakel_client_t *client, const Schakel__Rejected *rejected);

/* The principal the broker authenticated us as (learnt at connect). */
const char *client_principal(const schakel_client_t *client);

/* Ed25519 signature of len bytes with our key. Returns 0 or -1. */
int client_sign(schakel_client_t *client, const uint8_t *bytes, size_t len,
                uint8_t signature[SCHAKEL_SIGNATURE_BYTES]);

/* Send one encoded request frame and wait up to timeout_ms (> 0) for its
 * answer: with message_id (16 bytes, a CasePublish's command id) the
 * Accepted or Rejected naming it; without (NULL), the CaseView naming
 * request_id, or a Rejected naming no id (a refused query). After a
 * reconnect the request is sent again (both are safe to repeat).
 * Deliveries that arrive meanwhile are queued. Returns SCHAKEL_OK with
 * *answer set (free with wire_frame_free), or an error with the last error
 * filled (`what` names the request in texts); a request over the frame
 * limit is SCHAKEL_ERR_USAGE, nothing sent. */
schakel_status_t client_exchange(schakel_client_t *client, const uint8_t *request, size_t len,
                                 const uint8_t *message_id, uint64_t request_id, const char *what,
                                 int timeout_ms, Schakel__Frame **answer);

/* Wait pause_ms (> 0) without asking anything, reading what the broker
 * sends meanwhile as any wait does (deliveries are queued, late answers
 * paired, owed frames sent). Returns SCHAKEL_OK once the time is over, or
 * the error that ended it (SCHAKEL_ERR_PROTOCOL for a garbled frame,
 * SCHAKEL_ERR_NOMEM, SCHAKEL_ERR_AUTH), with the last error filled. */
schakel_status_t client_pause(schakel_client_t *client, int pause_ms);

/* protobuf-c declares message strings and bytes non-const; packing only
 * reads them, so lending it the caller's const data is safe. */
char *client_lend(const char *text);
uint8_t *client_lend_bytes(const uint8_t *bytes);

#endif
