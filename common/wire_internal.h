/*
 * wire_internal.h — what the files of the frame codec share among
 * themselves (wire.c: frames, decoding signals; wire_signal.c: a Signal's
 * checks; wire_case.c: case commands and events). Not for the rest of the
 * broker or the clients: they use wire.h only.
 */
#ifndef SCHAKEL_WIRE_INTERNAL_H
#define SCHAKEL_WIRE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

/* What a free-text field may hold besides valid UTF-8 without NUL. */
enum wire_text_class {
    WIRE_TEXT_TOKEN,     /* checked further by a syntax predicate */
    WIRE_TEXT_PRINTABLE, /* no control characters at all (references, titles, names) */
    WIRE_TEXT_PROSE,     /* free text: tab and line breaks allowed, no other controls */
};

/* The limits in force (wire_set_limits): the compiled caps unless the
 * broker lowered them. wire.c checks frames by them, wire_signal.c a
 * Signal's free texts. */
extern wire_limits_t wire_limits;

/* Clear err's reason and text (item_index is the caller's); NULL is fine. */
void wire_error_reset(wire_error_t *err);
/* Set err's reason and printf-formatted text; NULL is fine. */
void wire_error_set(wire_error_t *err, Schakel__Reason reason, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* Unpack buf as `descriptor` under SCHAKEL_DECODE_BUDGET_BYTES, then refuse
 * unknown fields, unknown enum values, singular fields given twice, two
 * members of a oneof, and strings that are not UTF-8 or hold NUL. `what`
 * names the bytes in texts ("case command"). Returns the message (free with
 * wire_message_free) or NULL with err set. Safe on untrusted input. */
ProtobufCMessage *wire_unpack_checked(const ProtobufCMessageDescriptor *descriptor,
                                      const uint8_t *buf, size_t len, const char *what,
                                      wire_error_t *err);
/* Free a message from wire_unpack_checked; NULL is fine. */
void wire_message_free(ProtobufCMessage *message);

/* A present string: not empty, within max_len bytes, UTF-8, of its class;
 * else -1 with `reason` and a text naming `name`. */
int wire_check_text(const char *value, const char *name, size_t max_len, enum wire_text_class cls,
                    Schakel__Reason reason, wire_error_t *err);
/* An Address as docs/PROTOCOL.md section 5.1 defines it (INVALID_POSTCODE,
 * INVALID_FIELD). Returns 0 or -1. */
int wire_check_address(const Schakel__Address *address, wire_error_t *err);

/* A 16-byte id field of `body` named `field` (Publish.message_id,
 * CasePublish.command_id): missing INVALID_MESSAGE, other length
 * INVALID_FIELD. Returns 0 or -1. */
int wire_check_id_field(const ProtobufCBinaryData *id, protobuf_c_boolean present, const char *body,
                        const char *field, wire_error_t *err);

/* The frame-level checks of the case bodies (wire_decode_frame step 7):
 * CasePublish id, command and signature lengths; CaseQuery case id syntax;
 * CaseView case ids and event cores. Return 0 or -1 with err set. */
int wire_check_case_publish(const Schakel__CasePublish *publish, wire_error_t *err);
int wire_check_case_query(const Schakel__CaseQuery *query, wire_error_t *err);
int wire_check_case_view(const Schakel__CaseView *view, wire_error_t *err);

/* What a client relies on in a CaseEvent from the broker: case_id a case
 * id, event_seq >= 1, kind set (else INVALID_MESSAGE, text naming `what`).
 * Every other field may have been filtered out. Returns 0 or -1. */
int wire_check_case_event(const Schakel__CaseEvent *event, const char *what, wire_error_t *err);

/* Pack into a new malloc'd buffer (NULL on allocation failure or NULL input). */
uint8_t *wire_pack_message(const ProtobufCMessage *message, size_t *len);

#endif
