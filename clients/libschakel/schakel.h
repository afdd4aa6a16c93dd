/*
 * schakel.h — libschakel, the C client library of Schakel.
 *
 * Connects a partner system or caseworker tool to schakeld over CurveZMQ,
 * publishes signed signals (one or a batch), receives deliveries (signals
 * and case events) with a timeout and acknowledges them (one or a batch),
 * and works on cases: open, invite, accept, decline, leave, note, attach,
 * close, reopen, link a signal, list, show. The library never aborts
 * or exits its host program: every failure is returned as an error code with
 * a specific text.
 * Not thread-safe: use one schakel_client per thread.
 * Its manual is libschakel(3) (docs/man/libschakel.3), which says every
 * contract below too: a change here changes it there (tests/docs/test_man.py
 * checks that its prototypes and types are these).
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

/* The broker's reason codes (docs/PROTOCOL.md 8): schakel_error_t.reason of
 * a SCHAKEL_ERR_REFUSED. Branch on these, never on the text. A newer broker
 * may send a code not listed here: treat it as not to be retried. */
typedef enum schakel_reason {
    SCHAKEL_REASON_NONE = 0,
    SCHAKEL_REASON_INVALID_MESSAGE = 1,
    SCHAKEL_REASON_FRAME_TOO_LARGE = 2,
    SCHAKEL_REASON_TOO_MANY_FRAMES = 3,
    SCHAKEL_REASON_UNSUPPORTED_VERSION = 4,
    SCHAKEL_REASON_SENDER_MISMATCH = 5,
    SCHAKEL_REASON_BAD_SIGNATURE = 6,
    SCHAKEL_REASON_DUPLICATE_CONFLICT = 7,
    SCHAKEL_REASON_POLICY_DENIED = 8,
    SCHAKEL_REASON_INVALID_THEME = 9,
    SCHAKEL_REASON_INVALID_AREA = 10,
    SCHAKEL_REASON_INVALID_POSTCODE = 11,
    SCHAKEL_REASON_INVALID_FIELD = 12,
    SCHAKEL_REASON_MISSING_GROUNDS = 13,
    SCHAKEL_REASON_TOO_MANY_ITEMS = 14,
    SCHAKEL_REASON_NOT_PERMITTED = 15,
    SCHAKEL_REASON_UNKNOWN_DELIVERY = 16,
    SCHAKEL_REASON_UNEXPECTED_BODY = 17,
    SCHAKEL_REASON_INTERNAL_ERROR = 18,
    SCHAKEL_REASON_RATE_LIMITED = 19,
    SCHAKEL_REASON_NOT_FOUND = 20,
    SCHAKEL_REASON_CASE_CLOSED = 21,
    SCHAKEL_REASON_TOO_MANY_CONNECTIONS = 22,
    SCHAKEL_REASON_UNAVAILABLE = 23,
    SCHAKEL_REASON_CASE_IDS_EXHAUSTED = 24,
} schakel_reason_t;

/* Details of the last failure of a client (or of connect). */
typedef struct schakel_error {
    schakel_status_t status;
    int reason;           /* a schakel_reason_t when REFUSED, else 0 (docs/PROTOCOL.md 8) */
    char reason_name[32]; /* "POLICY_DENIED", or "" */
    int item_index;       /* item at fault when REFUSED, -1 for the whole publish */
    char text[512];
} schakel_error_t;

typedef struct schakel_client schakel_client_t;

/* Connect to the broker at endpoint ("tcp://127.0.0.1:7450"), pinning its
 * public key (broker_pub_file: a .pub file), authenticating with our secret
 * key file. Waits up to timeout_ms for the CURVE handshake and the answer
 * to a first Heartbeat (who the broker took us for): returns
 * SCHAKEL_ERR_AUTH if the broker refused our key, SCHAKEL_ERR_CONNECT if
 * either did not complete; also SCHAKEL_ERR_USAGE, _KEY, _REFUSED (that
 * Heartbeat refused), _PROTOCOL, _NOMEM, _INTERNAL (libschakel(3)). On
 * success *out is a new client (close it with schakel_close). err may be
 * NULL. */
schakel_status_t schakel_connect(schakel_client_t **out, const char *endpoint,
                                 const char *broker_pub_file, const char *key_file, int timeout_ms,
                                 schakel_error_t *err);

/* Close and free; sets *client to NULL; safe on NULL. Unacked deliveries
 * stay in the broker's mailbox and are sent again on the next connect. */
void schakel_close(schakel_client_t **client);

/* Our own principal as the broker authenticated it, after a round trip
 * (Heartbeat). Copies into principal/partner/role (each at least 130
 * bytes, or NULL: not copied). */
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
    const char *postcode; /* with house_number: the address */
    uint32_t house_number;
    const char *addition;
    const char *subject; /* pseudonym */
    const char *grounds;
    const char *case_ref;
    int severity;        /* enum schakel_severity */
    int64_t observed_at; /* Unix seconds; 0 = absent */
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
 * Retrying with the same message_id after a timeout is safe. So is sending
 * other signals under an id already sent (the rest of a batch after the
 * broker refused one of its items): an answer to an earlier copy given up
 * on is that copy's, never this one's (answers come in the order of the
 * requests, and a Heartbeat sent first settles a copy whose answer never
 * comes); the broker refuses the rest DUPLICATE_CONFLICT only if a copy
 * under that id was accepted with other content. A signal that
 * encodes to more than 32 KiB, or a batch that does not fit in one frame
 * (256 KiB less 33 bytes of CurveZMQ framing), is refused with
 * SCHAKEL_ERR_USAGE before anything is sent; so is a publish while
 * SCHAKEL_MAX_IN_FLIGHT publishes are in flight, or while one with this
 * message id is (schakel_publish_send, below). */
schakel_status_t schakel_publish(schakel_client_t *client, const char *sender,
                                 const schakel_signal_t *signals, size_t n,
                                 const uint8_t *message_id, uint8_t id_out[16],
                                 schakel_item_result_t *results, int *duplicate, int timeout_ms);

/* ------------------------------------------------------------------ publishes in flight
 * A bulk publisher need not wait for each Accepted before it sends the next
 * publish (docs/PROTOCOL.md 7.2): schakel_publish_send signs and sends one
 * and returns; schakel_publish_wait hands out the answers. Up to
 * SCHAKEL_MAX_IN_FLIGHT publishes may be in flight on one client; each is
 * kept, as sent, until its answer is handed out, and is sent again after a
 * reconnect (the broker answers a repeated message id with the original
 * answer). schakel_publish, schakel_receive and the case calls may be used
 * meanwhile: they keep every answer that arrives for a publish in flight. */
#define SCHAKEL_MAX_IN_FLIGHT 32

/* The broker's answer to one publish in flight. */
typedef struct schakel_publish_answer {
    uint8_t message_id[16];
    schakel_status_t status;            /* SCHAKEL_OK: accepted; SCHAKEL_ERR_REFUSED: see error;
                                         * SCHAKEL_ERR_PROTOCOL: the answer did not fit the publish */
    schakel_error_t error;              /* when status is not SCHAKEL_OK (also the last error) */
    size_t n;                           /* items of the publish */
    int duplicate;                      /* accepted before (a repeated message id) */
    schakel_item_result_t results[256]; /* the first n, when accepted */
} schakel_publish_answer_t;

/* Sign and send one publish like schakel_publish, without waiting for its
 * answer. Returns SCHAKEL_OK once it is handed to the connection (or, when
 * publishes to be sent again after a reconnect could not go yet, queued
 * behind them: it never overtakes them); SCHAKEL_ERR_USAGE (nothing sent)
 * for the arguments schakel_publish refuses, when SCHAKEL_MAX_IN_FLIGHT
 * publishes are in flight, or when a publish with this message id is in
 * flight; SCHAKEL_ERR_NOMEM, SCHAKEL_ERR_TIMEOUT when the send queue to an
 * unreachable broker is full, SCHAKEL_ERR_AUTH when the broker refused our
 * key at a reconnect, SCHAKEL_ERR_CONNECT or SCHAKEL_ERR_INTERNAL when the
 * connection could not be made again (nothing in flight then). A
 * publish sent while the broker is away waits in the connection's queue
 * and goes out once, when it is back. */
schakel_status_t schakel_publish_send(schakel_client_t *client, const char *sender,
                                      const schakel_signal_t *signals, size_t n,
                                      const uint8_t *message_id, uint8_t id_out[16]);

/* Wait up to timeout_ms (>= 0) for the answer to a publish in flight: the
 * one with message_id, or with NULL the publish answered first (answers
 * come in the order the publishes were sent). SCHAKEL_OK: *answer is
 * filled and that publish is no longer in flight (answer->status says
 * whether it was accepted). SCHAKEL_ERR_TIMEOUT: no such answer yet; every
 * publish stays in flight. SCHAKEL_ERR_USAGE: answer NULL, timeout_ms
 * negative, or no publish (with that id) in flight. Other errors (SCHAKEL_ERR_AUTH, _PROTOCOL, _NOMEM) as
 * schakel_receive; the publishes stay in flight. Deliveries that arrive
 * meanwhile are kept for schakel_receive. */
schakel_status_t schakel_publish_wait(schakel_client_t *client, const uint8_t *message_id,
                                      schakel_publish_answer_t *answer, int timeout_ms);

/* Publishes in flight: sent by schakel_publish_send, answer not yet handed
 * out. */
size_t schakel_publishes_in_flight(const schakel_client_t *client);

/* Stop waiting for a publish in flight (the caller gave up on it): its
 * answer, if one comes, is dropped. Returns SCHAKEL_ERR_USAGE when
 * message_id is NULL or no publish with that id is in flight. The broker may still accept it;
 * sending it again with the same message id is safe. */
schakel_status_t schakel_publish_forget(schakel_client_t *client, const uint8_t *message_id);

/* A received delivery; owned by the caller, free with schakel_delivery_free.
 * Its strings, its recipients array and its case_event belong to the
 * delivery: they are the blocks its frame was unpacked into, not separate
 * malloc blocks, and are wiped and freed only by schakel_delivery_free. An
 * application reads them (or copies what it keeps past the free), and never
 * passes one to free() or realloc(), nor sets a field to memory of its own. */
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
    /* A delivery is a signal or a case event. For a case event is_case_event
     * is 1, case_event is set (owned by the delivery), the signal fields
     * above are absent, message_id is the command id and sender the actor;
     * rule_id .. legal_basis are those of our membership rule. */
    int is_case_event;
    struct schakel_case_event *case_event;
} schakel_delivery_t;

/* Start receiving with a window of deliveries in flight (0 = default). Called
 * implicitly by the first schakel_receive. If the Flow cannot be sent now
 * (an error is returned), it stays owed and the next call that waits for
 * the broker sends it. */
schakel_status_t schakel_subscribe(schakel_client_t *client, unsigned window);

/* Wait up to timeout_ms for the next delivery (0: take only what has come;
 * negative: wait without limit). Returns SCHAKEL_OK with *out
 * set, SCHAKEL_ERR_TIMEOUT when nothing arrived (waiting without limit:
 * when a signal the program catches interrupted the wait, as read(2)
 * returns EINTR; one that comes while the call is not asleep in its poll
 * does not end it: bound a stop with a timeout; a wait with a timeout
 * goes on to it). Keeps the connection alive
 * (heartbeats, re-subscribe after a broker restart) while waiting. Returns
 * SCHAKEL_ERR_REFUSED (the reason in the last error) when the broker
 * refuses this connection as a whole while it waits: NOT_PERMITTED (the
 * key was revoked or replaced by a policy reload) or TOO_MANY_CONNECTIONS;
 * nothing more will be delivered on it. Returns SCHAKEL_ERR_PROTOCOL for a
 * malformed frame, or for a delivery that cannot be read (see
 * schakel_undecodable_seq): that one is handed out no more and not acked;
 * the next call goes on with the deliveries behind it. */
schakel_status_t schakel_receive(schakel_client_t *client, schakel_delivery_t **out,
                                 int timeout_ms);

/* The seq of the delivery that the last failure, a SCHAKEL_ERR_PROTOCOL of
 * schakel_receive, could not read (a signal or case event that does not
 * parse, a field out of range or not UTF-8, an enum value this library
 * does not know, envelope and signal naming other senders; a frame that
 * does not decode at all, or is over the size limit, whose raw bytes
 * still hold a Deliver's seq); 0 when the last error is about no delivery
 * (a frame that is no Deliver, or whose seq cannot be read, or any other
 * failure since). Such a delivery is not acked: the broker counts
 * it in flight, in a slot of the window, and sends it again at its ack
 * timeout (when the principal acked nothing for a while) or to the next
 * receiving connection, until its retention ends. Receive on: the next
 * call hands out what comes after it. Then report it (the seq and the
 * last error's text) and either ack it to drop it (schakel_ack works on
 * any seq) or leave it; but as many of them as the window leave no slot,
 * and nothing more is delivered until some are acked (docs/PROTOCOL.md
 * 7.11). 0 for a NULL client. */
uint64_t schakel_undecodable_seq(const schakel_client_t *client);

/* Acknowledge a delivery: the broker removes it from our mailbox. Does not
 * wait: a refusal (UNKNOWN_DELIVERY; or RATE_LIMITED, nothing of that Ack
 * acknowledged, when the principal acked more seqs that were not pending
 * than the broker's max_unknown_acks_per_second: PROTOCOL.md 4.7) is
 * recorded in the last error by the next call that reads from the broker.
 * An Ack refused RATE_LIMITED is sent again by the library itself, 1 s
 * after the refusal, then 2 s and 4 s after the next ones (three times at
 * most), from within whichever call waits on the broker then (a receive,
 * a publish, schakel_backlog) or the next ack call; a client closed or
 * never waiting meanwhile leaves it, and its deliveries come again,
 * flagged, at the broker's ack timeout. The library keeps the last 64
 * Acks that may still be refused for this. seq 0 is SCHAKEL_ERR_USAGE. Each
 * call sends one Ack frame at once; a receiver of many deliveries acks them
 * together with schakel_ack_many (a frame per delivery cost a receiver
 * about 6,000 instructions more per delivery than frames of 256, in its
 * thread and libzmq's: docs/PERFORMANCE.md, step 19). */
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

/* Ask the broker how many deliveries wait in our mailbox, not yet acked:
 * the answer to this call's own Heartbeat, which counts every ack the
 * broker read before it (the acks sent before this call on the connection
 * it goes out on; one lost with a dropped connection is not, and its
 * delivery comes again). The answer names the Heartbeat it answers
 * (heartbeat_id, docs/PROTOCOL.md 4.9): one to an earlier Heartbeat, also
 * one that came over a lost connection and is read after the reconnect
 * (7.10), does not end this call. A broker from before the field refuses
 * it: the Heartbeat goes again without it, and that broker's answers are
 * taken in order until the next connection. An answer without the field
 * answers only a Heartbeat sent without it (one left from a lost
 * connection to an old broker does not end a Heartbeat that named itself;
 * a broker that took the field without echoing it, which breaks 4.9, is
 * never answered: the call times out). So paired, an earlier answer
 * read after a reconnect can end the call with a count from before the
 * acks: a caller that must know its acks were counted asks again with no
 * reconnect between (schakel_connections_made). */
schakel_status_t schakel_backlog(schakel_client_t *client, uint64_t *backlog, int timeout_ms);

/* Ask the broker for its store epoch (a Heartbeat round trip): 16 bytes
 * naming the history of the broker's store. They stay the same across
 * restarts of the broker, and change when its store is restored from a
 * backup, which loses what the broker accepted after the backup was taken
 * (docs/PROTOCOL.md 4.9, docs/OPERATIONS.md "Restoring a backup"). A
 * client that remembers what the broker accepted (schakel import's
 * journal) compares the epoch with the one it saw then, and when they
 * differ publishes that again under the same message ids: what the broker
 * still has is answered as a duplicate. SCHAKEL_OK with *known = 1 and the
 * 16 bytes in epoch, or *known = 0 and epoch zeroed when the broker names
 * none (one from before store epochs). Otherwise errors as schakel_backlog:
 * SCHAKEL_ERR_USAGE for NULL outputs or a timeout that is not positive,
 * SCHAKEL_ERR_PROTOCOL for an epoch that is not 16 bytes. */
schakel_status_t schakel_store_epoch(schakel_client_t *client, uint8_t epoch[16], int *known,
                                     int timeout_ms);

/* schakel_store_epoch, and the epoch's floor seq: the highest item seq of
 * the backup the broker's store was restored from when this epoch began
 * (0 for a store never restored). Every item the broker accepted before
 * that backup was taken has a seq (schakel_item_result_t.seq) no higher,
 * and every item accepted after it, in any epoch, a higher one: a client
 * that recorded the seqs of its publishes need not publish again those
 * with seqs no higher than the floor (the restored store has them, or
 * forgot them on purpose when their retention ended: published again,
 * they would be delivered anew), and publishes again the others
 * (docs/PROTOCOL.md 4.9). *floor_known = 1 with the floor in *floor_seq,
 * or *floor_known = 0 and *floor_seq 0 when the broker names none (the
 * store was restored without the counters of the store it replaced, so
 * seqs may have been handed out twice; a broker from before floors; no
 * epoch): then publish everything again. Errors as schakel_store_epoch
 * (SCHAKEL_ERR_USAGE for any NULL output). */
schakel_status_t schakel_store_epoch_floor(schakel_client_t *client, uint8_t epoch[16], int *known,
                                           uint64_t *floor_seq, int *floor_known, int timeout_ms);

/* How many connections to the broker this client has made so far: CURVE
 * handshakes completed, the first counted (1 once schakel_connect
 * returned). libschakel makes a lost connection again on its own (the
 * broker restarted, or was stopped and its store restored from a backup)
 * and sends again what was in flight: a caller that must know whether an
 * answer came from the broker it asked something of before (schakel
 * import: was the store epoch it asked still that of the store that
 * answered its publishes?) reads the count before asking and again after
 * taking the answers; when it moved, an answer may come from a broker
 * restored since, and it asks again. Connection events that no call has
 * read yet are taken first: a connection that an answer already taken
 * came on is always counted. SCHAKEL_OK with *count set; SCHAKEL_ERR_USAGE
 * for a NULL count; an error a handshake ended in (SCHAKEL_ERR_AUTH: the
 * broker refused our key), *count set all the same. */
schakel_status_t schakel_connections_made(schakel_client_t *client, uint64_t *count);

/* A secret of len bytes (16 to 64) derived from the client's secret key
 * (the Ed25519 seed of its key file) for one purpose: libsodium's
 * crypto_kdf_derive_from_key with context (a NUL-terminated string of
 * exactly 8 characters, naming the purpose; no more than its first 9
 * bytes are read) and subkey_id. The same key file, context and id always
 * give the same bytes; without the key file nobody can compute them, nor
 * learn the key from them. Meant as the key of a keyed hash, e.g. over a
 * publish's content to make its message id (a message id reaches every
 * recipient, whatever fields its rule passes: one derived from the
 * content without a key lets a recipient test guesses of withheld fields;
 * schakel import derives its ids so). A key file replaced by another
 * gives other bytes. The bytes are a secret: wipe them (sodium_memzero)
 * when done. SCHAKEL_OK; SCHAKEL_ERR_USAGE for a NULL client or out, a
 * context of another length, or len outside 16..64; SCHAKEL_ERR_INTERNAL
 * when libsodium cannot derive it (out is wiped then). */
schakel_status_t schakel_derive_secret(schakel_client_t *client, const char *context,
                                       uint64_t subkey_id, uint8_t *out, size_t len);

/* ------------------------------------------------------------------ cases
 * A case (casus) is joint work of several partners, led by one; only its
 * members see it. docs/PROTOCOL.md section 12 gives the rules; every case
 * command is signed like a publish and is idempotent per command id. */

/* Bytes of a buffer for a case id ("C-00000042" and its NUL, with room). */
#define SCHAKEL_CASE_ID_SIZE 16

/* What happened in a case (CaseEventKind). */
enum schakel_case_event_kind {
    SCHAKEL_CASE_EVENT_NONE = 0,
    SCHAKEL_CASE_EVENT_OPENED = 1,
    SCHAKEL_CASE_EVENT_INVITED = 2,
    SCHAKEL_CASE_EVENT_JOINED = 3,
    SCHAKEL_CASE_EVENT_DECLINED = 4,
    SCHAKEL_CASE_EVENT_LEFT = 5, /* left, or removed by the lead */
    SCHAKEL_CASE_EVENT_NOTE = 6,
    SCHAKEL_CASE_EVENT_ATTACHMENT = 7,
    SCHAKEL_CASE_EVENT_CLOSED = 8,
    SCHAKEL_CASE_EVENT_REOPENED = 9,
    SCHAKEL_CASE_EVENT_SIGNAL_LINKED = 10,
};

/* Stable lower-case name of an event kind: "opened", "invited", "joined",
 * "declined", "left", "note", "attachment", "closed", "reopened",
 * "signal_linked"; "unknown" otherwise. */
const char *schakel_case_event_kind_name(int kind);

/* Options every case command takes; a NULL pointer means all defaults. */
typedef struct schakel_case_options {
    const char *on_behalf_of;  /* partner id of the lead, when a rule lets us act for it; or NULL */
    const uint8_t *command_id; /* 16 bytes: repeat a command safely; NULL = a random one */
} schakel_case_options_t;

/* What the broker answered to an accepted case command. */
typedef struct schakel_case_result {
    char case_id[SCHAKEL_CASE_ID_SIZE]; /* the case (new for open) */
    uint8_t command_id[16];             /* the id used: retry with it after a timeout */
    uint64_t seq;                       /* broker seq of the case event (as Deliver.item_seq) */
    uint32_t recipients;                /* deliveries queued, a joiner's history included */
    int duplicate;                      /* the broker answered a repeat of this command id */
} schakel_case_result_t;

/* A new case. NULL strings and a zero house number are "absent". */
typedef struct schakel_case_open {
    const char *case_type; /* a case type of the policy, "ondermijning-adres" (mandatory) */
    const char *area;      /* CBS code (mandatory) */
    const char *subject;   /* pseudonym of a person, never a BSN */
    const char *postcode;  /* with house_number: the address */
    uint32_t house_number;
    const char *addition;
    const char *title; /* one line, at most 200 bytes; never the contents of notes */
} schakel_case_open_t;

/* A structured field of a note: name an id token (not text, subject,
 * address, attachments), value free text of at most 2000 bytes. */
typedef struct schakel_note_field {
    const char *name;
    const char *value;
} schakel_note_field_t;

/* Every case command below signs one CaseCommand with our key, with the
 * actor the principal the broker authenticated us as, sends it and waits
 * up to timeout_ms for the answer. SCHAKEL_OK: the command is committed,
 * *result (may be NULL) says which case and event. SCHAKEL_ERR_REFUSED:
 * nothing happened, the reason is in the last error: NOT_FOUND (no case
 * with that id that our partner can see: never a member, declined or
 * left), CASE_CLOSED, POLICY_DENIED (no rule lets that partner be a
 * member of this case type, or lets us open one), NOT_PERMITTED (not the
 * lead, not invited, may not act for that partner, reopen not allowed),
 * INVALID_* (a field). SCHAKEL_ERR_USAGE: a bad argument, found before
 * anything was sent (a case id that is not "C-" + 8 digits, a field over
 * its limit, a command that does not fit in a frame). SCHAKEL_ERR_TIMEOUT:
 * no answer; repeating the call with options->command_id =
 * result->command_id (also filled on timeout when result is non-NULL) is
 * always safe: the broker answers a repeat with the original answer.
 * Deliveries that arrive meanwhile are kept for schakel_receive. */

/* Open a case of a type our partner may lead. The broker assigns its id,
 * written to case_id_out (SCHAKEL_CASE_ID_SIZE bytes, may be NULL). */
schakel_status_t schakel_case_open(schakel_client_t *client, const schakel_case_open_t *open,
                                   const schakel_case_options_t *options,
                                   char case_id_out[SCHAKEL_CASE_ID_SIZE],
                                   schakel_case_result_t *result, int timeout_ms);

/* Invite a partner (partner id, "politie") to a case we lead. */
schakel_status_t schakel_case_invite(schakel_client_t *client, const char *case_id,
                                     const char *partner, const schakel_case_options_t *options,
                                     schakel_case_result_t *result, int timeout_ms);

/* Accept or decline an invitation of our partner. On accept the case's
 * history, as our membership rule lets us see it, is delivered in order. */
schakel_status_t schakel_case_accept(schakel_client_t *client, const char *case_id,
                                     const schakel_case_options_t *options,
                                     schakel_case_result_t *result, int timeout_ms);
schakel_status_t schakel_case_decline(schakel_client_t *client, const char *case_id,
                                      const schakel_case_options_t *options,
                                      schakel_case_result_t *result, int timeout_ms);

/* Leave a case (partner NULL: our own partner), or, as the lead, remove
 * another member partner. Delivery to that partner stops at once. */
schakel_status_t schakel_case_leave(schakel_client_t *client, const char *case_id,
                                    const char *partner, const schakel_case_options_t *options,
                                    schakel_case_result_t *result, int timeout_ms);

/* Add a note: text (NULL = none; at most 8000 bytes) and n_fields
 * structured fields (at most 32; fields may be NULL when n_fields is 0).
 * A note needs text or a field. Each member sees the fields its rule
 * allows. */
schakel_status_t schakel_case_note(schakel_client_t *client, const char *case_id, const char *text,
                                   const schakel_note_field_t *fields, size_t n_fields,
                                   const schakel_case_options_t *options,
                                   schakel_case_result_t *result, int timeout_ms);

/* Attach a document: a file name without a path (at most 128 bytes), a
 * media type ("application/pdf") and 1..131072 bytes of content. */
schakel_status_t schakel_case_attach(schakel_client_t *client, const char *case_id,
                                     const char *name, const char *media_type,
                                     const uint8_t *content, size_t len,
                                     const schakel_case_options_t *options,
                                     schakel_case_result_t *result, int timeout_ms);

/* Close a case we lead (reason mandatory, at most 1000 bytes); reopen a
 * closed one where its case type allows (reason optional, may be NULL). */
schakel_status_t schakel_case_close(schakel_client_t *client, const char *case_id,
                                    const char *reason, const schakel_case_options_t *options,
                                    schakel_case_result_t *result, int timeout_ms);
schakel_status_t schakel_case_reopen(schakel_client_t *client, const char *case_id,
                                     const char *reason, const schakel_case_options_t *options,
                                     schakel_case_result_t *result, int timeout_ms);

/* Link a signal this client's principal itself received, within its
 * retention (its item_seq, as in schakel_delivery_t), to the case: the
 * other members receive it with their rule's signal fields. */
schakel_status_t schakel_case_link(schakel_client_t *client, const char *case_id, uint64_t item_seq,
                                   const schakel_case_options_t *options,
                                   schakel_case_result_t *result, int timeout_ms);

/* A case as a member or invited partner sees it. */
typedef struct schakel_case_summary {
    char case_id[SCHAKEL_CASE_ID_SIZE];
    char *case_type;
    char *lead;  /* lead partner */
    char *title; /* NULL if none */
    int closed;  /* 0 open, 1 closed */
    int invited; /* 1: our partner is invited, not (yet) a member */
    int64_t opened_at;
    char **members; /* member partners */
    size_t n_members;
} schakel_case_summary_t;

/* A field of a note as we may see it. */
typedef struct schakel_case_field {
    char *name;
    char *value;
} schakel_case_field_t;

/* A signal linked to a case, with the fields our rule lets us see; absent
 * fields are NULL / 0. */
typedef struct schakel_linked_signal {
    char *sender, *kind, *theme, *area, *postcode, *addition, *subject, *grounds, *case_ref,
        *summary, *source_ref;
    uint32_t house_number;
    int severity;
    int64_t observed_at;
} schakel_linked_signal_t;

/* One event of a case's timeline, reduced to what our membership rule lets
 * us see: a field the rule does not allow is NULL / 0 / empty. */
typedef struct schakel_case_event {
    char case_id[SCHAKEL_CASE_ID_SIZE];
    char *case_type;
    uint64_t event_seq; /* position in the case's timeline, from 1 */
    int kind;           /* enum schakel_case_event_kind */
    char *actor;        /* principal that acted */
    char *on_behalf_of; /* partner it acted for, if not its own; else NULL */
    int64_t at;         /* Unix seconds */
    char *lead;
    char **members; /* member partners after this event */
    size_t n_members;
    char *partner; /* invited / joined / declined / left partner */
    char *text;    /* note text, close or reopen reason */
    schakel_case_field_t *fields;
    size_t n_fields;
    int has_attachment; /* kind ATTACHMENT and the rule allows attachments */
    char *attachment_name;
    char *attachment_media_type;
    uint8_t *attachment;             /* the document's bytes */
    size_t attachment_len;           /* 0: left out of a case view too large for one frame
                                        (a delivered event always has them) */
    schakel_linked_signal_t *signal; /* kind SIGNAL_LINKED: the signal, or NULL */
    /* kind OPENED: */
    char *title, *subject, *area, *postcode, *addition;
    uint32_t house_number;
} schakel_case_event_t;

/* The cases our partner is a member of or invited to. */
typedef struct schakel_case_list {
    schakel_case_summary_t *cases;
    size_t n_cases;
} schakel_case_list_t;

/* One case and its timeline, in order. */
typedef struct schakel_case_view {
    schakel_case_summary_t summary;
    schakel_case_event_t *events;
    size_t n_events;
} schakel_case_view_t;

/* The cases our partner is a member of or invited to, in the order they
 * were opened; a list larger than one frame is asked for page by page
 * within timeout_ms in all. A page refused UNAVAILABLE ("ask again": a
 * policy reload overtook it, or the broker could not record it,
 * docs/PROTOCOL.md 12.6) is asked again within the call, at most three
 * times a page, after 50, 100 and 200 ms, while timeout_ms leaves time;
 * then the call ends SCHAKEL_ERR_REFUSED with that reason. On SCHAKEL_OK
 * *out is a new list (free with schakel_case_list_free). */
schakel_status_t schakel_case_list(schakel_client_t *client, schakel_case_list_t **out,
                                   int timeout_ms);
void schakel_case_list_free(schakel_case_list_t **list);

/* One case with its whole timeline as our partner may see it (asked for
 * page by page within timeout_ms in all, when it is larger than one frame;
 * the summary is the first page's). A case id that does not exist and a
 * case our partner is not a member of (or invited to) are refused alike:
 * SCHAKEL_ERR_REFUSED, reason NOT_FOUND. A page refused UNAVAILABLE is
 * asked again within the call as schakel_case_list says. On SCHAKEL_OK
 * *out is a new view (free with schakel_case_view_free). */
schakel_status_t schakel_case_show(schakel_client_t *client, const char *case_id,
                                   schakel_case_view_t **out, int timeout_ms);
void schakel_case_view_free(schakel_case_view_t **view);

/* The last error of this client: of its last failure (a call that succeeds
 * leaves it; a refused Ack is recorded there by the call that reads the
 * refusal, which does not fail for it). Never NULL; for a NULL client a
 * static SCHAKEL_ERR_USAGE "no client". */
const schakel_error_t *schakel_last_error(const schakel_client_t *client);

/* Write a new key pair NAME.key (mode 0600) / NAME.pub, never over a file
 * that is there; each written whole under a temporary name beside it
 * (NAME.key.partial-XXXXXXXX) and then renamed, so that an interruption
 * leaves no empty or partial key file (the next keygen of NAME removes
 * such a temporary). A NAME.key left whole without its NAME.pub gets the
 * .pub written from it, and is kept. SCHAKEL_ERR_USAGE for a NULL or empty
 * path_base, SCHAKEL_ERR_KEY for any refusal or failure to write (err's
 * text says which), SCHAKEL_ERR_INTERNAL when libsodium cannot start. */
schakel_status_t schakel_keygen(const char *path_base, schakel_error_t *err);

/* Text of a status code. */
const char *schakel_strerror(schakel_status_t status);

#ifdef __cplusplus
}
#endif

#endif
