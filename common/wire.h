/*
 * wire.h — the frame codec: the only code that touches raw frames.
 *
 * Decoding checks sizes before protobuf-c sees a byte, unpacks with an
 * allocator that enforces a per-frame byte budget, refuses unknown fields
 * and unknown versions, and validates every field of a Signal (lengths,
 * UTF-8, no NUL, theme vocabulary, CBS area syntax, postcode syntax, time
 * window) and of a CaseCommand (wire_case.c). The rest of the broker and
 * the client library only ever see validated structures. Every refusal
 * carries a Schakel__Reason and a specific human-readable text. Safe on
 * untrusted input.
 */
#ifndef SCHAKEL_WIRE_H
#define SCHAKEL_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "schakel.pb-c.h"
#include "schakel_limits.h"
#include "syntax.h"

typedef struct wire_error {
    Schakel__Reason reason; /* REASON_NONE when no error */
    int item_index;         /* item at fault, -1 for the frame as a whole */
    char text[256];         /* specific, safe to show to the sender; no contents */
    /* Set by wire_decode_frame when a refused frame was a Publish with a
     * well-formed message id, so that the Rejected can name it. */
    int has_message_id;
    uint8_t message_id[SCHAKEL_MESSAGE_ID_BYTES];
    /* Set by the frame decoders when a refused frame of version 1 parsed
     * as a Deliver with a seq (not 0): the delivery a client could not
     * read, which the broker counts in flight until it is acked. */
    uint64_t deliver_seq;
} wire_error_t;

/* Limits a process may lower below the compiled caps of schakel_limits.h
 * (the broker does, from its config). */
typedef struct wire_limits {
    uint32_t max_frame_bytes; /* <= SCHAKEL_MAX_FRAME_BYTES */
    uint32_t max_items;       /* <= SCHAKEL_MAX_ITEMS */
    uint32_t max_summary_len; /* <= SCHAKEL_MAX_SUMMARY_LEN */
    uint32_t max_grounds_len; /* <= SCHAKEL_MAX_GROUNDS_LEN */
} wire_limits_t;

/* Set this process's limits. A field of 0, or above its cap, keeps the cap.
 * Call before decoding starts (not thread-safe against a running decode). */
void wire_set_limits(const wire_limits_t *limits);
/* The limits in force. */
wire_limits_t wire_get_limits(void);

/* Decode one frame received from a peer. Checks len <= SCHAKEL_MAX_FRAME_BYTES
 * (FRAME_TOO_LARGE), unpacks with a budgeted allocator (INVALID_MESSAGE),
 * refuses unknown fields anywhere in the tree (INVALID_MESSAGE), a version
 * other than SCHAKEL_PROTOCOL_VERSION (UNSUPPORTED_VERSION) and a frame
 * without a body (INVALID_MESSAGE). For a Publish it also checks message id
 * length, item count (TOO_MANY_ITEMS), item sizes and signature length; for
 * an Ack the count of seqs; for a CasePublish command id length, a command
 * present and a 64-byte signature; for a CaseQuery the case id's syntax;
 * for a Deliver exactly one of signal and case_event; for a CaseView each
 * case's id and each event's case id, event_seq and kind. Items and case
 * commands are NOT unpacked here (see wire_decode_signal,
 * wire_decode_case_command). Also refused anywhere in the frame: an enum value
 * the schema does not name, and a string that is not UTF-8 or holds a NUL
 * byte (both INVALID_FIELD; strings are checked on their wire bytes).
 * Returns the frame (free with wire_frame_free) or NULL with err filled;
 * err->item_index is set (-1 unless an item is at fault) and, for a refused
 * Publish whose message id is 16 bytes (or CasePublish whose command id is),
 * err->has_message_id/message_id. */
Schakel__Frame *wire_decode_frame(const uint8_t *buf, size_t len, wire_error_t *err);

/* wire_decode_frame for a client reading what the broker sends: a larger
 * decode budget (SCHAKEL_DECODE_BROKER_BUDGET_BYTES: a full page of a case
 * view, 256 KiB of many small events, decodes to several times its size),
 * and a Rejected reason code this code does not know is kept (codes are
 * only ever appended; PROTOCOL.md 8: a client treats one it does not know
 * as a refusal that is not retryable), and so are fields it does not know
 * (ignored: fields are only ever added, PROTOCOL.md 1.3), except where the
 * frame's body should be: a frame with no body this code knows is refused.
 * Everything else is checked as wire_decode_frame checks it. A refused
 * frame that does not unpack, or is over the size limit, still names the
 * delivery in err->deliver_seq when its raw bytes hold one
 * (wire_peek_deliver_seq; not for INTERNAL_ERROR, which is kept to be
 * decoded again). */
Schakel__Frame *wire_decode_broker_frame(const uint8_t *buf, size_t len, wire_error_t *err);
void wire_frame_free(Schakel__Frame **frame);

/* The seq of a Deliver in a frame's raw bytes, 0 if they hold none that
 * can be trusted: the top level must parse whole, carry version 1 and one
 * body, a Deliver, whose fields must parse to its end (the last may be cut
 * short by it); its seq is field 1, a varint, given once. For a frame the
 * decoder refused (wire_peek.c). Safe on untrusted input. */
uint64_t wire_peek_deliver_seq(const uint8_t *buf, size_t len);

/* Unpack one item as a Signal (budgeted, unknown fields refused) and
 * validate it with wire_validate_signal. Returns the signal (free with
 * wire_signal_free) or NULL with err filled (err->item_index is NOT set). */
Schakel__Signal *wire_decode_signal(const uint8_t *buf, size_t len, int64_t now, wire_error_t *err);
void wire_signal_free(Schakel__Signal **signal);

/* A protobuf-c allocator whose blocks are wiped when freed, for messages
 * that hold plaintext (decoded items, case events): unpack and free with
 * it. Every message the wire_decode_* functions return is allocated the
 * same way, so wire_frame_free and wire_signal_free wipe too. */
ProtobufCAllocator *wire_wiped_allocator(void);

/* One block of that kind: wire_wiped_free wipes it (its size is kept in
 * front of it) and frees it; NULL is a no-op. For a budgeted allocator of
 * one's own whose blocks hold plaintext. */
void *wire_wiped_alloc(size_t size);
void wire_wiped_free(void *pointer);

/* Wipe a NUL-terminated string (a decoded text copied out), then free it;
 * NULL is a no-op. */
void wire_free_text(char *text);

/* Scan the wire bytes of a message protobuf-c has unpacked (descriptor its
 * type) for what protobuf-c lets through: a string with a NUL byte (cut
 * short in the C string) or not valid UTF-8 (INVALID_FIELD), a
 * single-valued field given twice, of which it keeps the last
 * (INVALID_MESSAGE). Fields the descriptor does not know are passed over.
 * Returns 0, or -1 with err filled (naming the message and field). Safe on
 * untrusted input. */
int wire_scan_strings(const uint8_t *buf, size_t len, const ProtobufCMessageDescriptor *descriptor,
                      wire_error_t *err);

/* Unpack a Signal as a recipient gets it (Deliver.signal, CaseEvent.signal):
 * reduced to a rule's fields, so only sender, kind and theme are required
 * (INVALID_MESSAGE); budgeted, unknown fields refused (INVALID_MESSAGE),
 * strings UTF-8 without NUL and enum values known (INVALID_FIELD). The
 * publishing rules of wire_validate_signal (area mandatory, the time
 * window) are NOT applied. Returns the signal (free with wire_signal_free)
 * or NULL with err filled. Safe on untrusted input. */
Schakel__Signal *wire_decode_delivered_signal(const uint8_t *buf, size_t len, wire_error_t *err);

/* Validate a Signal against the rules of docs/PROTOCOL.md "Signal": sender,
 * kind, theme and area are mandatory; theme in the vocabulary
 * (INVALID_THEME); area a CBS code (INVALID_AREA); postcode 1234AB without
 * SA/SD/SS (INVALID_POSTCODE); subject a pseudonym, never BSN-like, and then
 * grounds mandatory (MISSING_GROUNDS); observed_at within the accepted window
 * around now (INVALID_FIELD); every string valid UTF-8, no NUL, within its
 * limit; recipients syntactically partner ids, at most SCHAKEL_MAX_RECIPIENTS.
 * Returns 0, or -1 with err filled. */
int wire_validate_signal(const Schakel__Signal *signal, int64_t now, wire_error_t *err);

/* Root of the BLAKE2b-256 hash tree over items (docs/PROTOCOL.md "Signing"):
 * leaf = H(0x00 || item), node = H(0x01 || left || right), split at the
 * largest power of two below n. n >= 1. */
void wire_items_root(const ProtobufCBinaryData *items, size_t n, uint8_t root[32]);

/* The 64 bytes an Ed25519 publish signature covers:
 * "schakel-publish1" (16 ASCII bytes) || message_id (16) || root (32). */
void wire_signed_bytes(const uint8_t message_id[16], const uint8_t root[32], uint8_t out[64]);

/* Content hash of a publish for idempotency: BLAKE2b-256 over the
 * signed bytes and the signature. Same id + same hash = same publish. */
void wire_publish_hash(const Schakel__Publish *publish, uint8_t out[32]);
/* The same from the signed bytes the caller already computed (the publish
 * path has them from the signature check: the item tree is not hashed a
 * second time). */
void wire_publish_hash_signed(const uint8_t signed_bytes[64], const ProtobufCBinaryData *signature,
                              uint8_t out[32]);

/* Pack a frame into a new malloc'd buffer; sets the version field. Returns
 * NULL on allocation failure. Caller frees with free(). */
uint8_t *wire_encode_frame(Schakel__Frame *frame, size_t *len);

/* Pack a Signal into a new malloc'd buffer (NULL on allocation failure). */
uint8_t *wire_encode_signal(const Schakel__Signal *signal, size_t *len);

/* ------------------------------------------------------------------ cases
 * docs/PROTOCOL.md section 12 ("Cases"). Implemented in wire_case.c. */

/* Unpack one CaseCommand (the bytes of CasePublish.command) under the
 * decode budget, refuse unknown fields, a singular field given twice, more
 * than one operation (all INVALID_MESSAGE) and strings that are not UTF-8
 * or hold NUL (INVALID_FIELD), then validate it with
 * wire_validate_case_command. Returns the command (free with
 * wire_case_command_free) or NULL with err filled (err->item_index is NOT
 * set). Safe on untrusted input. Does not compare the actor with anyone:
 * that is the broker's SENDER_MISMATCH. */
Schakel__CaseCommand *wire_decode_case_command(const uint8_t *buf, size_t len, wire_error_t *err);
void wire_case_command_free(Schakel__CaseCommand **command);

/* Validate a CaseCommand: actor a principal id; on_behalf_of, if present, a
 * partner id; exactly one operation; case_id absent for open and a case id
 * ("C-" + 8 digits) for every other operation; every field of the operation
 * within its syntax and the "Cases" limits of schakel_limits.h (note text,
 * note fields and their names and values, attachment name, media type and
 * size, title, reasons), free text without control characters. Reasons:
 * INVALID_MESSAGE (a mandatory field or the operation missing), INVALID_AREA,
 * INVALID_POSTCODE, else INVALID_FIELD naming the field. Returns 0 or -1. */
int wire_validate_case_command(const Schakel__CaseCommand *command, wire_error_t *err);

/* Pack a CaseCommand into a new malloc'd buffer (NULL on allocation failure). */
uint8_t *wire_encode_case_command(const Schakel__CaseCommand *command, size_t *len);

/* The 64 bytes the signature of a CasePublish covers: exactly those of a
 * one-item Publish whose message id is command_id and whose item is the
 * command bytes: "schakel-publish1" || command_id || H(0x00 || command). */
void wire_case_signed_bytes(const uint8_t command_id[16], const uint8_t *command, size_t len,
                            uint8_t out[64]);

/* Content hash of a CasePublish for idempotency, equal to wire_publish_hash
 * of that one-item Publish (same signed bytes and signature). Defined for
 * case publishes that passed wire_decode_frame. */
void wire_case_publish_hash(const Schakel__CasePublish *publish, uint8_t out[32]);

/* Unpack one CaseEvent (Deliver.case_event) as a client receives it: under
 * the decode budget, unknown fields refused (INVALID_MESSAGE), strings
 * UTF-8 without NUL (INVALID_FIELD); case_id a case id, event_seq >= 1 and
 * kind set (INVALID_MESSAGE). Every other field may have been filtered out
 * by the member's rule. Returns the event (free with wire_case_event_free)
 * or NULL with err filled. Safe on untrusted input. */
Schakel__CaseEvent *wire_decode_case_event(const uint8_t *buf, size_t len, wire_error_t *err);
void wire_case_event_free(Schakel__CaseEvent **event);

/* Pack a CaseEvent into a new malloc'd buffer (NULL on allocation failure). */
uint8_t *wire_encode_case_event(const Schakel__CaseEvent *event, size_t *len);

/* Note field names a note may not use: the policy's reserved field names
 * ("text", "subject", "address", "attachments"). 1 if reserved. */
int wire_is_reserved_note_field(const char *name);

/* Stable name of a reason code ("POLICY_DENIED"); "UNKNOWN" if out of range. */
const char *wire_reason_name(Schakel__Reason reason);

#endif
