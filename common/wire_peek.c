/*
 * wire_peek.c — the seq of a Deliver read from its raw protobuf bytes,
 * for a frame that does not decode as a whole (a field the unpacker
 * refuses, a frame over the size limit or the decode budget): the client
 * can still name the delivery it cannot read (PROTOCOL.md 7.11). Reads the
 * frame's top level (Frame.version = 1, varint; Frame.deliver = 19,
 * length-delimited) and the Deliver's fields up to its seq (1, varint),
 * and trusts nothing else. Safe on untrusted input: every length is checked
 * against the buffer; returns 0 when the bytes do not allow a seq.
 */
#include "wire.h"

enum {
    PEEK_VARINT = 0,
    PEEK_FIXED64 = 1,
    PEEK_LENGTH = 2,
    PEEK_FIXED32 = 5,
    PEEK_FRAME_VERSION = 1,
    PEEK_FRAME_DELIVER = 19,
    PEEK_FIRST_BODY = 16, /* Frame's body fields are 16 and up */
    PEEK_DELIVER_SEQ = 1,
};

/* A varint at *pos (at most 10 bytes, the last below 2); -1 if cut or
 * too long. */
static int peek_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *out)
{
    uint64_t value = 0;
    for (unsigned shift = 0, n = 0; n < 10 && *pos < len; n++, shift += 7) {
        uint8_t byte = buf[(*pos)++];
        if (n == 9 && byte > 1)
            return -1;
        value |= (uint64_t)(byte & 0x7f) << shift;
        if ((byte & 0x80) == 0) {
            *out = value;
            return 0;
        }
    }
    return -1;
}

/* One field's tag and, for a varint, its value; a length-delimited one's
 * bytes as [*start, *pos); others skipped. -1 if the bytes do not hold a
 * whole field (groups, wire types 6 and 7 and field 0 included). */
static int peek_field(const uint8_t *buf, size_t len, size_t *pos, uint32_t *field, unsigned *type,
                      uint64_t *value, size_t *start)
{
    uint64_t tag = 0, length = 0;
    if (peek_varint(buf, len, pos, &tag) != 0 || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
        return -1;
    *field = (uint32_t)(tag >> 3);
    *type = (unsigned)(tag & 7);
    switch (*type) {
    case PEEK_VARINT:
        return peek_varint(buf, len, pos, value);
    case PEEK_FIXED64:
    case PEEK_FIXED32: {
        size_t size = *type == PEEK_FIXED64 ? 8 : 4;
        if (len - *pos < size)
            return -1;
        *pos += size;
        return 0;
    }
    case PEEK_LENGTH:
        if (peek_varint(buf, len, pos, &length) != 0 || length > len - *pos)
            return -1;
        *start = *pos;
        *pos += (size_t)length;
        return 0;
    default:
        return -1;
    }
}

/* The Deliver's seq: its first field as protobuf-c writes it, read up to
 * the first field that does not parse (what comes after need not). */
static uint64_t peek_deliver_seq(const uint8_t *buf, size_t len)
{
    size_t pos = 0, start = 0;
    uint64_t seq = 0, value = 0;
    uint32_t field = 0;
    unsigned type = 0;
    while (pos < len && peek_field(buf, len, &pos, &field, &type, &value, &start) == 0) {
        if (field == PEEK_DELIVER_SEQ && type != PEEK_VARINT)
            return 0; /* a seq that is no varint: none to trust */
        if (field == PEEK_DELIVER_SEQ)
            seq = value;
    }
    return seq;
}

uint64_t wire_peek_deliver_seq(const uint8_t *buf, size_t len)
{
    size_t pos = 0, start = 0, deliver_start = 0, deliver_end = 0;
    uint64_t value = 0, version = 0;
    uint32_t field = 0;
    unsigned type = 0, delivers = 0;
    if (buf == NULL)
        return 0;
    /* the top level whole: one body, a Deliver, and version 1 */
    while (pos < len) {
        if (peek_field(buf, len, &pos, &field, &type, &value, &start) != 0)
            return 0;
        if (field == PEEK_FRAME_VERSION && type == PEEK_VARINT)
            version = value;
        else if (field == PEEK_FRAME_VERSION)
            return 0;
        else if (field == PEEK_FRAME_DELIVER && type == PEEK_LENGTH && delivers++ == 0) {
            deliver_start = start;
            deliver_end = pos;
        } else if (field >= PEEK_FIRST_BODY)
            return 0; /* another body, or a second Deliver */
    }
    if (version != SCHAKEL_PROTOCOL_VERSION || delivers != 1)
        return 0;
    return peek_deliver_seq(buf + deliver_start, deliver_end - deliver_start);
}
