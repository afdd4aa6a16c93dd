/*
 * schakel.h — libschakel, the C client library of Schakel.
 *
 * Connects a partner system or caseworker tool to schakeld over CurveZMQ,
 * publishes signed signals (one or a batch), receives deliveries with a
 * timeout and acknowledges them (one or a batch). The library never aborts
 * or exits its host program: every failure is returned as an error code with
 * a specific text.
 * Not thread-safe: use one schakel_client per thread.
 */
#ifndef SCHAKEL_CLIENT_H
#define SCHAKEL_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes of every function below. */
typedef enum schakel_status {
    SCHAKEL_OK = 0,
    SCHAKEL_ERR_USAGE = -1,    /* bad argument from the caller */
    SCHAKEL_ERR_KEY = -2,      /* key file missing, unreadable, too open or malformed */
    SCHAKEL_ERR_CONNECT = -3,  /* broker unreachable, or handshake did not complete */
    SCHAKEL_ERR_AUTH = -4,     /* broker refused our key at the handshake */
    SCHAKEL_ERR_TIMEOUT = -5,  /* no answer / nothing received within the timeout */
    SCHAKEL_ERR_REFUSED = -6,  /* broker answered Rejected: see reason and text */
    SCHAKEL_ERR_PROTOCOL = -7, /* broker sent something malformed or unexpected */
    SCHAKEL_ERR_NOMEM = -8,
    SCHAKEL_ERR_INTERNAL = -9,
} schakel_status_t;

/* Details of the last failure of a client (or of connect). */
typedef struct schakel_error {
    schakel_status_t status;
    int reason;           /* broker reason code (Schakel__Reason) when REFUSED, else 0 */
    char reason_name[32]; /* "POLICY_DENIED", or "" */
    int item_index;       /* item at fault when REFUSED, -1 for the whole publish */
    char text[512];
} schakel_error_t;

typedef struct schakel_client schakel_client_t;

/* Connect to the broker at endpoint ("tcp://127.0.0.1:7450"), pinning its
 * public key (broker_pub_file: a .pub file), authenticating with our secret
 * key file. Waits up to timeout_ms for the CURVE handshake: returns
 * SCHAKEL_ERR_AUTH if the broker refused our key, SCHAKEL_ERR_CONNECT if it
 * did not complete. On success *out is a new client (close it with
 * schakel_close). err may be NULL. */
schakel_status_t schakel_connect(schakel_client_t **out, const char *endpoint,
                                 const char *broker_pub_file, const char *key_file,
                                 int timeout_ms, schakel_error_t *err);

/* Close and free; sets *client to NULL; safe on NULL. Unacked deliveries
 * stay in the broker's mailbox and are sent again on the next connect. */
void schakel_close(schakel_client_t **client);

/* Our own principal as the broker authenticated it, after a round trip
 * (Heartbeat). Copies into principal/partner/role (each at least 130
 * bytes). */
schakel_status_t schakel_whoami(schakel_client_t *client, char *principal, char *partner,
                                char *role, int timeout_ms);

/* Severity values, as in the protocol. */
enum schakel_severity {
    SCHAKEL_SEVERITY_UNSPECIFIED = 0,
    SCHAKEL_SEVERITY_LOW = 1,
    SCHAKEL_SEVERITY_MEDIUM = 2,
    SCHAKEL_SEVERITY_HIGH = 3,
    SCHAKEL_SEVERITY_CRITICAL = 4,
};

/* A signal. NULL strings and zero numbers are "absent". The sender is filled
 * in by the library from the key file's principal (see schakel_publish). */
typedef struct schakel_signal {
    const char *kind;
    const char *theme;
    const char *area;
    const char *postcode;     /* with house_number: the address */
    uint32_t house_number;
    const char *addition;
    const char *subject;      /* pseudonym */
    const char *grounds;
    const char *case_ref;
    int severity;             /* enum schakel_severity */
    int64_t observed_at;      /* Unix seconds; 0 = absent */
    const char *summary;
    const char *source_ref;
    const char *const *recipients; /* partner ids; NULL/0 = everyone a rule entitles */
    size_t n_recipients;
} schakel_signal_t;

/* Per-item outcome of an accepted publish. */
typedef struct schakel_item_result {
    uint64_t seq;        /* broker sequence number */
    uint32_t recipients; /* mailboxes it was queued for */
} schakel_item_result_t;

/* Publish n signals (1 <= n <= 256) as one signed publish from `sender`
 * (our principal id, e.g. "politie/bvh-koppeling"; NULL = the principal the
 * broker authenticated us as, learnt at connect). message_id: 16 bytes,
 * or NULL for a random one (written back if id_out is non-NULL). Waits up to
 * timeout_ms for Accepted (results: array of n, may be NULL) or Rejected
 * (SCHAKEL_ERR_REFUSED, reason in the client's last error). *duplicate is set
 * when the broker answered a repeat of an accepted id (may be NULL).
 * Retrying with the same message_id after a timeout is safe. A signal that
 * encodes to more than 32 KiB, or a batch that does not fit in one frame
 * (256 KiB less 33 bytes of CurveZMQ framing), is refused with
 * SCHAKEL_ERR_USAGE before anything is sent. */
schakel_status_t schakel_publish(schakel_client_t *client, const char *sender,
                                 const schakel_signal_t *signals, size_t n,
                                 const uint8_t *message_id, uint8_t id_out[16],
                                 schakel_item_result_t *results, int *duplicate, int timeout_ms);

/* A received delivery; owned by the caller, free with schakel_delivery_free. */
typedef struct schakel_delivery {
    uint64_t seq;
    uint8_t message_id[16];
    uint32_t item_index;
    uint64_t item_seq;
    int redelivery;
    char *sender;
    char *sender_partner;
    char *rule_id;
    char *rule_hash;
    char *purpose;
    char *legal_basis;
    int64_t accepted_at;
    int64_t expires_at;
    /* the signal as the rule lets us see it; absent fields are NULL / 0 */
    char *kind, *theme, *area, *postcode, *addition, *subject, *grounds, *case_ref, *summary,
        *source_ref;
    uint32_t house_number;
    int severity;
    int64_t observed_at;
    char **recipients;
    size_t n_recipients;
} schakel_delivery_t;

/* Start receiving with a window of deliveries in flight (0 = default). Called
 * implicitly by the first schakel_receive. If the Flow cannot be sent now
 * (an error is returned), it stays owed and the next call that waits for
 * the broker sends it. */
schakel_status_t schakel_subscribe(schakel_client_t *client, unsigned window);

/* Wait up to timeout_ms for the next delivery. Returns SCHAKEL_OK with *out
 * set, SCHAKEL_ERR_TIMEOUT when nothing arrived. Keeps the connection alive
 * (heartbeats, re-subscribe after a broker restart) while waiting. */
schakel_status_t schakel_receive(schakel_client_t *client, schakel_delivery_t **out,
                                 int timeout_ms);

/* Acknowledge a delivery: the broker removes it from our mailbox. Does not
 * wait: a refusal (UNKNOWN_DELIVERY) is recorded in the last error by the
 * next call that reads from the broker. seq 0 is SCHAKEL_ERR_USAGE. */
schakel_status_t schakel_ack(schakel_client_t *client, uint64_t seq);

/* Acknowledge n deliveries at once (seqs: n seq numbers, none 0; n == 0 is
 * a no-op, seqs may then be NULL). Sent in order as Ack frames of at most
 * 1024 seqs (SCHAKEL_MAX_ACKS) each, without waiting, like schakel_ack.
 * Returns SCHAKEL_ERR_USAGE (nothing sent) for seqs NULL with n > 0 or any
 * seq 0; SCHAKEL_ERR_NOMEM, or SCHAKEL_ERR_TIMEOUT when the send queue to
 * an unreachable broker is full, if a frame could not be sent: the frames
 * before it were sent (the error text says how many seqs), the rest not.
 * Acking a seq again is harmless; the broker then answers UNKNOWN_DELIVERY. */
schakel_status_t schakel_ack_many(schakel_client_t *client, const uint64_t *seqs, size_t n);

void schakel_delivery_free(schakel_delivery_t **delivery);

/* Ask the broker how many deliveries wait in our mailbox, not yet acked
 * (after every ack we sent before this call). */
schakel_status_t schakel_backlog(schakel_client_t *client, uint64_t *backlog, int timeout_ms);

/* The last error of this client (never NULL for a non-NULL client). */
const schakel_error_t *schakel_last_error(const schakel_client_t *client);

/* Write a new key pair NAME.key / NAME.pub. */
schakel_status_t schakel_keygen(const char *path_base, schakel_error_t *err);

/* Text of a status code. */
const char *schakel_strerror(schakel_status_t status);

#ifdef __cplusplus
}
#endif

#endif
