/*
 * wire.c — the frame codec: size check, budgeted unpack, checks of the
 * decoded tree and of the raw string bytes, frame bodies, decoding signals
 * (wire_signal.c checks their fields), and packing; wire_sign.c makes the
 * publish hash tree and signed bytes.
 *
 * Trusts nothing it decodes; trusts protobuf-c only to parse the wire format
 * within the byte budget it is given. Every refusal returns NULL or -1 with a
 * wire_error_t holding a Schakel__Reason and a text that names the field and
 * the rule broken, never the field's contents.
 */
#include "wire.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "schakel_limits.h"
#include "wire_internal.h"

/* Our schema nests at most Frame > Accepted > ItemAccepted; anything deeper
 * than this is a broken descriptor, not a peer's doing. */
#define WIRE_MAX_DEPTH 8

/* ------------------------------------------------------------------ errors */

/* Clears reason and text; item_index is the caller's (see wire.h). */
/* The limits in force: the compiled caps unless the broker lowered them. */
wire_limits_t wire_limits = {
    .max_frame_bytes = SCHAKEL_MAX_FRAME_BYTES,
    .max_items = SCHAKEL_MAX_ITEMS,
    .max_summary_len = SCHAKEL_MAX_SUMMARY_LEN,
    .max_grounds_len = SCHAKEL_MAX_GROUNDS_LEN,
};

static uint32_t capped(uint32_t value, uint32_t cap)
{
    return value == 0 || value > cap ? cap : value;
}

void wire_set_limits(const wire_limits_t *wanted)
{
    wire_limits.max_frame_bytes = capped(wanted->max_frame_bytes, SCHAKEL_MAX_FRAME_BYTES);
    wire_limits.max_items = capped(wanted->max_items, SCHAKEL_MAX_ITEMS);
    wire_limits.max_summary_len = capped(wanted->max_summary_len, SCHAKEL_MAX_SUMMARY_LEN);
    wire_limits.max_grounds_len = capped(wanted->max_grounds_len, SCHAKEL_MAX_GROUNDS_LEN);
}

wire_limits_t wire_get_limits(void)
{
    return wire_limits;
}

void wire_error_reset(wire_error_t *err)
{
    if (err == NULL)
        return;
    err->reason = SCHAKEL__REASON__REASON_NONE;
    err->text[0] = '\0';
}

void wire_error_set(wire_error_t *err, Schakel__Reason reason, const char *format, ...)
{
    if (err == NULL)
        return;
    va_list args;
    va_start(args, format);
    err->reason = reason;
    vsnprintf(err->text, sizeof err->text, format, args);
    va_end(args);
}

/* ------------------------------------------------------- budgeted allocator */

/* Decoded messages hold plaintext (a Publish's items, a Delivery's
 * signal): every block carries its size in front, so that freeing wipes it
 * before it goes back to malloc. */
typedef union wiped_block {
    size_t size;
    max_align_t align;
} wiped_block_t;

void *wire_wiped_alloc(size_t size)
{
    if (size > SIZE_MAX - sizeof(wiped_block_t))
        return NULL;
    wiped_block_t *block = malloc(sizeof *block + size);
    if (block == NULL)
        return NULL;
    block->size = size;
    return block + 1;
}

void wire_wiped_free(void *pointer)
{
    if (pointer == NULL)
        return;
    wiped_block_t *block = (wiped_block_t *)pointer - 1;
    sodium_memzero(pointer, block->size);
    free(block);
}

void wire_free_text(char *text)
{
    if (text == NULL)
        return;
    sodium_memzero(text, strlen(text));
    free(text);
}

static void *wiped_alloc(void *allocator_data, size_t size)
{
    (void)allocator_data;
    return wire_wiped_alloc(size);
}

static void wiped_free(void *allocator_data, void *pointer)
{
    (void)allocator_data;
    wire_wiped_free(pointer);
}

static ProtobufCAllocator wiped_allocator = {wiped_alloc, wiped_free, NULL};

ProtobufCAllocator *wire_wiped_allocator(void)
{
    return &wiped_allocator;
}

/* protobuf-c has no size or depth limit of its own. Each unpack gets an
 * allocator whose allocator_data is this struct on the caller's stack; it
 * counts the bytes live during that one unpack (protobuf-c's temporaries,
 * such as the 1 KiB table it takes for each message of more than 16
 * fields, count while they live, and go when freed) and refuses past the
 * limit, which makes the unpack fail: the count is the peak use. The blocks
 * are wiped blocks that carry their size, so freeing a tree later needs no
 * budget state: one shared allocator frees every tree. */
struct decode_budget {
    size_t used;
    size_t limit;
    int exceeded;
    int out_of_memory;
};

static void *budget_alloc(void *allocator_data, size_t size)
{
    struct decode_budget *budget = allocator_data;
    if (size > budget->limit - budget->used) {
        budget->exceeded = 1;
        return NULL;
    }
    void *block = wire_wiped_alloc(size);
    if (block == NULL) {
        budget->out_of_memory = 1;
        return NULL;
    }
    budget->used += size;
    return block;
}

static void budget_free(void *allocator_data, void *pointer)
{
    struct decode_budget *budget = allocator_data;
    if (budget != NULL && pointer != NULL) {
        size_t size = ((const wiped_block_t *)pointer - 1)->size;
        budget->used -= size <= budget->used ? size : budget->used;
    }
    wire_wiped_free(pointer);
}

/* Freeing never allocates; an alloc through this allocator is a bug. */
static void *release_alloc(void *allocator_data, size_t size)
{
    (void)allocator_data;
    (void)size;
    return NULL;
}

static ProtobufCAllocator release_allocator = {release_alloc, budget_free, NULL};

static ProtobufCMessage *unpack_budgeted(const ProtobufCMessageDescriptor *descriptor,
                                         const uint8_t *buf, size_t len, const char *what,
                                         size_t limit, wire_error_t *err)
{
    struct decode_budget budget = {0, limit, 0, 0};
    ProtobufCAllocator allocator = {budget_alloc, budget_free, &budget};
    ProtobufCMessage *message = protobuf_c_message_unpack(descriptor, &allocator, len, buf);
    if (message != NULL)
        return message;
    if (budget.exceeded)
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE,
                       "%s needs more than %zu bytes of memory to decode", what, limit);
    else if (budget.out_of_memory)
        wire_error_set(err, SCHAKEL__REASON__INTERNAL_ERROR, "out of memory while decoding %s",
                       what);
    else
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "%s is not a valid Schakel %s", what,
                       descriptor->short_name);
    return NULL;
}

/* ------------------------------------------------- decoded tree: fields, enums */

static int field_is_present(const ProtobufCMessage *message, const ProtobufCFieldDescriptor *field)
{
    const char *base = (const char *)message;
    if (field->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        return *(const uint32_t *)(const void *)(base + field->quantifier_offset) == field->id;
    if (field->label == PROTOBUF_C_LABEL_REQUIRED)
        return 1;
    if (field->type == PROTOBUF_C_TYPE_STRING || field->type == PROTOBUF_C_TYPE_MESSAGE)
        return *(void *const *)(const void *)(base + field->offset) != NULL;
    return *(const protobuf_c_boolean *)(const void *)(base + field->quantifier_offset);
}

/* tree_check's flags: a frame from the broker may carry a reason code this
 * code does not know yet (codes are only ever appended: PROTOCOL.md 8),
 * and fields it does not know (fields are only ever added: PROTOCOL.md 1.3). */
#define TREE_ANY_REASON 1u
#define TREE_ANY_FIELD 2u

static int tree_check(const ProtobufCMessage *message, int depth, unsigned flags,
                      wire_error_t *err);

/* Enum values protobuf-c accepted without knowing them, and nested messages. */
static int field_check(const ProtobufCMessage *message, const ProtobufCFieldDescriptor *field,
                       int depth, unsigned flags, wire_error_t *err)
{
    const char *base = (const char *)message;
    const void *values = base + field->offset;
    size_t count = 1;
    if (field->label == PROTOBUF_C_LABEL_REPEATED) {
        count = *(const size_t *)(const void *)(base + field->quantifier_offset);
        values = *(const void *const *)values;
    } else if (!field_is_present(message, field)) {
        return 0;
    }
    for (size_t i = 0; i < count; i++) {
        if (field->type == PROTOBUF_C_TYPE_ENUM) {
            int value = ((const int *)values)[i];
            if ((flags & TREE_ANY_REASON) && field->descriptor == &schakel__reason__descriptor)
                continue;
            if (protobuf_c_enum_descriptor_get_value(field->descriptor, value) == NULL) {
                wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                               "%s.%s has the unknown value %d", message->descriptor->short_name,
                               field->name, value);
                return -1;
            }
        } else if (field->type == PROTOBUF_C_TYPE_MESSAGE) {
            const ProtobufCMessage *nested = ((const ProtobufCMessage *const *)values)[i];
            if (nested != NULL && tree_check(nested, depth + 1, flags, err) < 0)
                return -1;
        }
    }
    return 0;
}

/* A field from a newer broker: ignored by a client unless it stands where
 * the frame's body should be (a body this code does not know). */
static int unknown_tolerated(const ProtobufCMessage *message, unsigned flags)
{
    if (!(flags & TREE_ANY_FIELD))
        return 0;
    if (message->descriptor != &schakel__frame__descriptor)
        return 1;
    return ((const Schakel__Frame *)(const void *)message)->body_case !=
           SCHAKEL__FRAME__BODY__NOT_SET;
}

/* Unknown fields are refused, never forwarded: protobuf-c would keep them
 * and pack them again into whatever we relay. A client reading the broker
 * (TREE_ANY_FIELD) ignores them instead (PROTOCOL.md 1.3): it relays
 * nothing of a broker frame, and a delivered signal is decoded on its own,
 * with unknown fields refused. */
static int tree_check(const ProtobufCMessage *message, int depth, unsigned flags, wire_error_t *err)
{
    const ProtobufCMessageDescriptor *descriptor = message->descriptor;
    if (depth > WIRE_MAX_DEPTH) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "%s is nested too deeply",
                       descriptor->short_name);
        return -1;
    }
    if (message->n_unknown_fields > 0 && !unknown_tolerated(message, flags)) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "%s carries unknown field %u",
                       descriptor->short_name, (unsigned)message->unknown_fields[0].tag);
        return -1;
    }
    for (unsigned i = 0; i < descriptor->n_fields; i++)
        if (field_check(message, &descriptor->fields[i], depth, flags, err) < 0)
            return -1;
    return 0;
}

/* --------------------------------------------------- raw bytes: strings, repeats */

/* protobuf-c copies a wire string into a NUL-terminated buffer and keeps no
 * length, so an embedded NUL would silently cut the string short (and what
 * the broker checked would differ from what it stored and signed). We
 * therefore walk the raw bytes once more, after protobuf-c accepted them,
 * and check every known string field's exact wire bytes with
 * syntax_is_utf8 (which refuses NUL). Nested messages are walked with their
 * own descriptor; bytes fields (items, Deliver.signal) are not entered. */
struct wire_reader {
    const uint8_t *bytes;
    size_t len;
    size_t pos;
};

static int reader_varint(struct wire_reader *reader, uint64_t *value)
{
    uint64_t result = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (reader->pos >= reader->len)
            return -1;
        uint8_t byte = reader->bytes[reader->pos++];
        result |= (uint64_t)(byte & 0x7F) << shift;
        if ((byte & 0x80) == 0) {
            *value = result;
            return 0;
        }
    }
    return -1;
}

static int reader_skip(struct wire_reader *reader, uint64_t count)
{
    if (count > reader->len - reader->pos)
        return -1;
    reader->pos += (size_t)count;
    return 0;
}

static int scan_strings(const uint8_t *bytes, size_t len,
                        const ProtobufCMessageDescriptor *descriptor, int depth, wire_error_t *err);

static int scan_length_delimited(const uint8_t *bytes, size_t len,
                                 const ProtobufCMessageDescriptor *descriptor,
                                 const ProtobufCFieldDescriptor *field, int depth,
                                 wire_error_t *err)
{
    if (field == NULL)
        return 0; /* unknown: refused by tree_check */
    if (field->type == PROTOBUF_C_TYPE_MESSAGE)
        return scan_strings(bytes, len, field->descriptor, depth + 1, err);
    if (field->type != PROTOBUF_C_TYPE_STRING || syntax_is_utf8(bytes, len))
        return 0;
    wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD, "%s.%s %s", descriptor->short_name,
                   field->name,
                   memchr(bytes, 0, len) != NULL ? "contains a NUL byte" : "is not valid UTF-8");
    return -1;
}

/* A single-valued field must come once, and a oneof must have one member.
 * protobuf-c keeps the last value silently (a Frame with a publish and a
 * heartbeat is a heartbeat; an item with two senders has the second), so
 * what was checked, signed and stored could differ: refuse both. `seen` is
 * a bitmap over field numbers below 128 (all of the schema's). */
static int check_repeat(const ProtobufCMessageDescriptor *descriptor,
                        const ProtobufCFieldDescriptor *field, uint32_t tag, uint64_t seen[2],
                        uint32_t *oneof_tag, wire_error_t *err)
{
    if (field == NULL || field->label == PROTOBUF_C_LABEL_REPEATED || tag >= 128)
        return 0; /* unknown ones are refused by tree_check */
    if (seen[tag / 64] >> (tag % 64) & 1) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "%s.%s is given more than once",
                       descriptor->short_name, field->name);
        return -1;
    }
    seen[tag / 64] |= UINT64_C(1) << (tag % 64);
    if (field->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        if (*oneof_tag != 0 && *oneof_tag != tag) {
            wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE,
                           "%s sets more than one of its alternatives (%s)", descriptor->short_name,
                           descriptor == &schakel__case_command__descriptor
                               ? "a case command carries one operation"
                               : "a frame carries one body");
            return -1;
        }
        *oneof_tag = tag;
    }
    return 0;
}

static int scan_strings(const uint8_t *bytes, size_t len,
                        const ProtobufCMessageDescriptor *descriptor, int depth, wire_error_t *err)
{
    struct wire_reader reader = {bytes, len, 0};
    uint64_t seen[2] = {0, 0};
    uint32_t oneof_tag = 0; /* the schema has at most one oneof per message */
    if (depth > WIRE_MAX_DEPTH) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "%s is nested too deeply",
                       descriptor->short_name);
        return -1;
    }
    while (reader.pos < reader.len) {
        uint64_t key = 0, value = 0;
        int bad = reader_varint(&reader, &key);
        /* looked up once for both checks below (a binary search each) */
        const ProtobufCFieldDescriptor *field =
            !bad && key >> 3 <= UINT32_MAX
                ? protobuf_c_message_descriptor_get_field(descriptor, (unsigned)(key >> 3))
                : NULL;
        if (!bad && key >> 3 <= UINT32_MAX &&
            check_repeat(descriptor, field, (uint32_t)(key >> 3), seen, &oneof_tag, err) < 0)
            return -1;
        switch (bad ? 7u : (unsigned)(key & 7u)) {
        case 0: /* varint */
            bad = reader_varint(&reader, &value);
            break;
        case 1: /* 64-bit */
            bad = reader_skip(&reader, 8);
            break;
        case 5: /* 32-bit */
            bad = reader_skip(&reader, 4);
            break;
        case 2: /* length-delimited */
            bad = reader_varint(&reader, &value) || value > reader.len - reader.pos;
            if (!bad && key >> 3 <= UINT32_MAX &&
                scan_length_delimited(reader.bytes + reader.pos, (size_t)value, descriptor, field,
                                      depth, err) < 0)
                return -1;
            if (!bad)
                reader.pos += (size_t)value;
            break;
        default: /* groups, which protobuf-c refuses too, or a broken key */
            bad = 1;
            break;
        }
        if (bad) {
            /* Defensive: protobuf-c parsed these bytes before we got here. */
            wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "%s is not well-formed protobuf",
                           descriptor->short_name);
            return -1;
        }
    }
    return 0;
}

int wire_scan_strings(const uint8_t *buf, size_t len, const ProtobufCMessageDescriptor *descriptor,
                      wire_error_t *err)
{
    wire_error_reset(err);
    return scan_strings(buf, len, descriptor, 0, err);
}

ProtobufCMessage *wire_unpack_checked(const ProtobufCMessageDescriptor *descriptor,
                                      const uint8_t *buf, size_t len, const char *what,
                                      wire_error_t *err)
{
    ProtobufCMessage *message =
        unpack_budgeted(descriptor, buf, len, what, SCHAKEL_DECODE_BUDGET_BYTES, err);
    if (message == NULL)
        return NULL;
    if (tree_check(message, 0, 0, err) < 0 || scan_strings(buf, len, descriptor, 0, err) < 0) {
        wire_message_free(message);
        return NULL;
    }
    return message;
}

void wire_message_free(ProtobufCMessage *message)
{
    if (message != NULL)
        protobuf_c_message_free_unpacked(message, &release_allocator);
}

/* --------------------------------------------------------------- frame bodies */

/* A 16-byte id: Publish.message_id, Accepted.message_id, CasePublish.command_id. */
int wire_check_id_field(const ProtobufCBinaryData *id, protobuf_c_boolean present, const char *body,
                        const char *field, wire_error_t *err)
{
    if (!present) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "%s has no %s", body, field);
        return -1;
    }
    if (id->len != SCHAKEL_MESSAGE_ID_BYTES) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                       "%s %s is %zu bytes; it must be exactly %u", body, field, id->len,
                       SCHAKEL_MESSAGE_ID_BYTES);
        return -1;
    }
    return 0;
}

static int check_message_id(const ProtobufCBinaryData *message_id, protobuf_c_boolean present,
                            const char *body, wire_error_t *err)
{
    return wire_check_id_field(message_id, present, body, "message_id", err);
}

static int check_publish(const Schakel__Publish *publish, wire_error_t *err)
{
    if (check_message_id(&publish->message_id, publish->has_message_id, "publish", err) < 0)
        return -1;
    if (publish->n_items == 0) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "publish carries no items");
        return -1;
    }
    if (publish->n_items > wire_limits.max_items) {
        wire_error_set(err, SCHAKEL__REASON__TOO_MANY_ITEMS,
                       "publish carries %zu items; at most %u are allowed", publish->n_items,
                       wire_limits.max_items);
        return -1;
    }
    for (size_t i = 0; i < publish->n_items; i++) {
        size_t item_len = publish->items[i].len;
        if (item_len == 0 || item_len > SCHAKEL_MAX_ITEM_BYTES) {
            if (err != NULL)
                err->item_index = (int)i;
            wire_error_set(err,
                           item_len == 0 ? SCHAKEL__REASON__INVALID_MESSAGE
                                         : SCHAKEL__REASON__INVALID_FIELD,
                           "item %zu is %zu bytes; an item must be 1..%u bytes", i, item_len,
                           SCHAKEL_MAX_ITEM_BYTES);
            return -1;
        }
    }
    if (!publish->has_signature || publish->signature.len != SCHAKEL_SIGNATURE_BYTES) {
        wire_error_set(err, SCHAKEL__REASON__BAD_SIGNATURE,
                       publish->has_signature ? "publish signature is not %u bytes"
                                              : "publish carries no signature (%u bytes expected)",
                       SCHAKEL_SIGNATURE_BYTES);
        return -1;
    }
    return 0;
}

/* Any refusal of a Publish should name its id, if it has a usable one, so
 * that a client with several publishes in flight knows which was refused. */
static void note_message_id(const Schakel__Frame *frame, wire_error_t *err)
{
    const ProtobufCBinaryData *id = NULL;
    if (err == NULL)
        return;
    if (frame->body_case == SCHAKEL__FRAME__BODY_PUBLISH && frame->publish->has_message_id)
        id = &frame->publish->message_id;
    /* A case command is refused under its command id, as a publish under its message id. */
    if (frame->body_case == SCHAKEL__FRAME__BODY_CASE_PUBLISH &&
        frame->case_publish->has_command_id)
        id = &frame->case_publish->command_id;
    if (id != NULL && id->len == SCHAKEL_MESSAGE_ID_BYTES) {
        err->has_message_id = 1;
        memcpy(err->message_id, id->data, SCHAKEL_MESSAGE_ID_BYTES);
    }
}

/* A Deliver refused here is still a delivery the broker counts in flight:
 * its seq lets the client say which one it could not read (and ack it, if
 * it decides to drop it). Only from a frame of our version: in another,
 * field 1 of the body need not be a seq. */
static void note_deliver_seq(const Schakel__Frame *frame, wire_error_t *err)
{
    if (err != NULL && frame->has_version && frame->version == SCHAKEL_PROTOCOL_VERSION &&
        frame->body_case == SCHAKEL__FRAME__BODY_DELIVER && frame->deliver->has_seq)
        err->deliver_seq = frame->deliver->seq;
}

static int check_ack(const Schakel__Ack *ack, wire_error_t *err)
{
    if (ack->n_seqs == 0) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "ack names no seqs");
        return -1;
    }
    if (ack->n_seqs > SCHAKEL_MAX_ACKS) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                       "ack names %zu seqs; at most %u are allowed", ack->n_seqs, SCHAKEL_MAX_ACKS);
        return -1;
    }
    for (size_t i = 0; i < ack->n_seqs; i++) {
        if (ack->seqs[i] == 0) {
            wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                           "ack seqs[%zu] is 0; seqs start at 1", i);
            return -1;
        }
    }
    return 0;
}

/* A client asks for the store epoch with an empty one; the broker answers
 * with its 16 bytes (libschakel wants exactly those in an answer). A
 * heartbeat_id is the client's own bytes, echoed: bounded both ways. */
static int check_heartbeat(const Schakel__Heartbeat *heartbeat, wire_error_t *err)
{
    if (heartbeat->has_heartbeat_id &&
        heartbeat->heartbeat_id.len > SCHAKEL_MAX_HEARTBEAT_ID_BYTES) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                       "heartbeat heartbeat_id is %zu bytes; at most %u are allowed",
                       heartbeat->heartbeat_id.len, SCHAKEL_MAX_HEARTBEAT_ID_BYTES);
        return -1;
    }
    if (heartbeat->has_store_epoch && heartbeat->store_epoch.len != 0 &&
        heartbeat->store_epoch.len != SCHAKEL_STORE_EPOCH_BYTES) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                       "heartbeat store_epoch is %zu bytes; it is empty (asking for it) or %u",
                       heartbeat->store_epoch.len, SCHAKEL_STORE_EPOCH_BYTES);
        return -1;
    }
    return 0;
}

/* Bodies only the broker sends: the client library relies on these. */
static int check_broker_bodies(const Schakel__Frame *frame, wire_error_t *err)
{
    switch (frame->body_case) {
    case SCHAKEL__FRAME__BODY_ACCEPTED:
        return check_message_id(&frame->accepted->message_id, frame->accepted->has_message_id,
                                "accepted", err);
    case SCHAKEL__FRAME__BODY_REJECTED:
        if (!frame->rejected->has_reason ||
            frame->rejected->reason == SCHAKEL__REASON__REASON_NONE) {
            wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "rejected carries no reason");
            return -1;
        }
        return 0;
    case SCHAKEL__FRAME__BODY_DELIVER:
        if (!frame->deliver->has_seq || frame->deliver->seq == 0) {
            wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE,
                           frame->deliver->has_seq ? "deliver seq is 0; seqs start at 1"
                                                   : "deliver carries no seq");
            return -1;
        }
        /* A delivery is a signal or a case event, never both. */
        if (frame->deliver->has_signal == frame->deliver->has_case_event) {
            wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE,
                           frame->deliver->has_signal
                               ? "deliver carries both a signal and a case_event"
                               : "deliver carries no signal and no case_event");
            return -1;
        }
        return 0;
    case SCHAKEL__FRAME__BODY_CASE_VIEW:
        return wire_check_case_view(frame->case_view, err);
    default:
        return 0;
    }
}

static int check_body(const Schakel__Frame *frame, wire_error_t *err)
{
    switch (frame->body_case) {
    case SCHAKEL__FRAME__BODY__NOT_SET:
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "frame carries no body");
        return -1;
    case SCHAKEL__FRAME__BODY_PUBLISH:
        return check_publish(frame->publish, err);
    case SCHAKEL__FRAME__BODY_ACK:
        return check_ack(frame->ack, err);
    case SCHAKEL__FRAME__BODY_FLOW:
        if (!frame->flow->has_window) {
            wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "flow carries no window");
            return -1;
        }
        return 0;
    case SCHAKEL__FRAME__BODY_HEARTBEAT:
        return check_heartbeat(frame->heartbeat, err);
    case SCHAKEL__FRAME__BODY_CASE_PUBLISH:
        return wire_check_case_publish(frame->case_publish, err);
    case SCHAKEL__FRAME__BODY_CASE_QUERY:
        return wire_check_case_query(frame->case_query, err);
    default:
        return check_broker_bodies(frame, err);
    }
}

static int check_version(const Schakel__Frame *frame, wire_error_t *err)
{
    if (!frame->has_version) {
        wire_error_set(err, SCHAKEL__REASON__UNSUPPORTED_VERSION,
                       "frame carries no protocol version; version %u is spoken here",
                       SCHAKEL_PROTOCOL_VERSION);
        return -1;
    }
    if (frame->version != SCHAKEL_PROTOCOL_VERSION) {
        wire_error_set(err, SCHAKEL__REASON__UNSUPPORTED_VERSION,
                       "protocol version %u is not supported; version %u is spoken here",
                       (unsigned)frame->version, SCHAKEL_PROTOCOL_VERSION);
        return -1;
    }
    return 0;
}

/* The frame decoder for both directions: budget and flags differ. */
static Schakel__Frame *decode_frame(const uint8_t *buf, size_t len, size_t budget, unsigned flags,
                                    wire_error_t *err)
{
    wire_error_reset(err);
    if (err != NULL) {
        err->item_index = -1;
        err->has_message_id = 0;
        err->deliver_seq = 0;
    }
    if (len > wire_limits.max_frame_bytes) {
        wire_error_set(err, SCHAKEL__REASON__FRAME_TOO_LARGE,
                       "frame is %zu bytes; at most %u are allowed", len,
                       wire_limits.max_frame_bytes);
        return NULL;
    }
    if (len == 0 || buf == NULL) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "frame is empty");
        return NULL;
    }
    ProtobufCMessage *message =
        unpack_budgeted(&schakel__frame__descriptor, buf, len, "frame", budget, err);
    if (message == NULL)
        return NULL;
    /* Version first: a newer peer's frame may well carry fields we do not
     * know, and "unsupported version" is the useful answer then. */
    Schakel__Frame *frame = (Schakel__Frame *)message;
    note_message_id(frame, err);
    note_deliver_seq(frame, err);
    if (check_version(frame, err) < 0 || tree_check(message, 0, flags, err) < 0 ||
        scan_strings(buf, len, &schakel__frame__descriptor, 0, err) < 0 ||
        check_body(frame, err) < 0) {
        wire_frame_free(&frame);
        return NULL;
    }
    return frame;
}

Schakel__Frame *wire_decode_frame(const uint8_t *buf, size_t len, wire_error_t *err)
{
    return decode_frame(buf, len, SCHAKEL_DECODE_BUDGET_BYTES, 0, err);
}

Schakel__Frame *wire_decode_broker_frame(const uint8_t *buf, size_t len, wire_error_t *err)
{
    Schakel__Frame *frame = decode_frame(buf, len, SCHAKEL_DECODE_BROKER_BUDGET_BYTES,
                                         TREE_ANY_REASON | TREE_ANY_FIELD, err);
    /* One that protobuf-c could not unpack (or that is too large to try)
     * may still name its delivery in its raw bytes; one it unpacked names
     * the seq only if the bytes do too: protobuf-c keeps the last of a seq
     * given twice (or of two Delivers), which another reader need not. */
    if (frame == NULL && err != NULL && err->reason != SCHAKEL__REASON__INTERNAL_ERROR)
        err->deliver_seq = wire_peek_deliver_seq(buf, len);
    return frame;
}

void wire_frame_free(Schakel__Frame **frame)
{
    if (frame == NULL || *frame == NULL)
        return;
    schakel__frame__free_unpacked(*frame, &release_allocator);
    *frame = NULL;
}

/* ------------------------------------------------------------------- signals */

Schakel__Signal *wire_decode_signal(const uint8_t *buf, size_t len, int64_t now, wire_error_t *err)
{
    wire_error_reset(err);
    if (len > SCHAKEL_MAX_ITEM_BYTES) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                       "item is %zu bytes; at most %u are allowed", len, SCHAKEL_MAX_ITEM_BYTES);
        return NULL;
    }
    if (len == 0 || buf == NULL) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "item is empty");
        return NULL;
    }
    ProtobufCMessage *message = unpack_budgeted(&schakel__signal__descriptor, buf, len, "item",
                                                SCHAKEL_DECODE_BUDGET_BYTES, err);
    if (message == NULL)
        return NULL;
    Schakel__Signal *signal = (Schakel__Signal *)message;
    if (tree_check(message, 0, 0, err) < 0 ||
        scan_strings(buf, len, &schakel__signal__descriptor, 0, err) < 0 ||
        wire_validate_signal(signal, now, err) < 0) {
        wire_signal_free(&signal);
        return NULL;
    }
    return signal;
}

Schakel__Signal *wire_decode_delivered_signal(const uint8_t *buf, size_t len, wire_error_t *err)
{
    wire_error_reset(err);
    if (len == 0 || buf == NULL || len > SCHAKEL_MAX_ITEM_BYTES) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE,
                       "delivered signal is %zu bytes; it must be 1..%u", len,
                       SCHAKEL_MAX_ITEM_BYTES);
        return NULL;
    }
    ProtobufCMessage *message =
        wire_unpack_checked(&schakel__signal__descriptor, buf, len, "delivered signal", err);
    if (message == NULL)
        return NULL;
    Schakel__Signal *signal = (Schakel__Signal *)message;
    if (signal->sender == NULL || signal->kind == NULL || signal->theme == NULL) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE,
                       "delivered signal lacks sender, kind or theme");
        wire_signal_free(&signal);
    }
    return signal;
}

void wire_signal_free(Schakel__Signal **signal)
{
    if (signal == NULL || *signal == NULL)
        return;
    schakel__signal__free_unpacked(*signal, &release_allocator);
    *signal = NULL;
}

/* -------------------------------------------------------------- encoding */

uint8_t *wire_pack_message(const ProtobufCMessage *message, size_t *len)
{
    if (message == NULL || len == NULL)
        return NULL;
    size_t size = protobuf_c_message_get_packed_size(message);
    uint8_t *buf = malloc(size > 0 ? size : 1);
    if (buf == NULL)
        return NULL;
    *len = protobuf_c_message_pack(message, buf);
    return buf;
}

uint8_t *wire_encode_frame(Schakel__Frame *frame, size_t *len)
{
    if (frame == NULL)
        return NULL;
    frame->has_version = 1;
    frame->version = SCHAKEL_PROTOCOL_VERSION;
    return wire_pack_message(&frame->base, len);
}

uint8_t *wire_encode_signal(const Schakel__Signal *signal, size_t *len)
{
    return signal != NULL ? wire_pack_message(&signal->base, len) : NULL;
}

const char *wire_reason_name(Schakel__Reason reason)
{
    const ProtobufCEnumValue *value =
        protobuf_c_enum_descriptor_get_value(&schakel__reason__descriptor, (int)reason);
    return value != NULL ? value->name : "UNKNOWN";
}
