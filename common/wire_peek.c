/*
 * wire_peek.c — the seq of a Deliver read from its raw protobuf bytes,
 * for a frame that does not decode as a whole (a field the unpacker
 * refuses, a frame over the size limit or the decode budget): the client
 * can still name the delivery it cannot read (PROTOCOL.md 7.11). Reads the
 * frame's top level (Frame.version = 1, varint; Frame.deliver = 19,
 * length-delimited) and the Deliver's fields, for its seq (1, varint),
 * and trusts nothing else. Safe on untrusted input: every length is checked
 * against the buffer; returns 0 when the bytes do not allow one seq that
 * every decoder would read alike.
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

/* What reading a field or a varint found: the whole of it; bytes that
 * end inside it (nothing can follow it then); or bytes that are no field
 * (a field 0, a group, wire type 6 or 7, a varint over 10 bytes): what
 * follows them has no place a decoder must agree on. */
enum peek_result { PEEK_WHOLE = 0, PEEK_CUT = 1, PEEK_BAD = -1 };

/* A varint at *pos (at most 10 bytes, the last below 2). */
static enum peek_result peek_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *out)
{
    uint64_t value = 0;
    for (unsigned shift = 0, n = 0; n < 10; n++, shift += 7) {
        if (*pos >= len)
            return PEEK_CUT;
        uint8_t byte = buf[(*pos)++];
        if (n == 9 && byte > 1)
            return PEEK_BAD;
        value |= (uint64_t)(byte & 0x7f) << shift;
        if ((byte & 0x80) == 0) {
            *out = value;
            return PEEK_WHOLE;
        }
    }
    return PEEK_BAD;
}

/* One field's tag and, for a varint, its value; a length-delimited one's
 * bytes as [*start, *pos); others skipped. *field is set as soon as the
 * tag is read, so a field cut short is known by its number. */
static enum peek_result peek_field(const uint8_t *buf, size_t len, size_t *pos, uint32_t *field,
                                   unsigned *type, uint64_t *value, size_t *start)
{
    uint64_t tag = 0, length = 0;
    enum peek_result read = peek_varint(buf, len, pos, &tag);
    if (read != PEEK_WHOLE)
        return read;
    if ((tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
        return PEEK_BAD;
    *field = (uint32_t)(tag >> 3);
    *type = (unsigned)(tag & 7);
    switch (*type) {
    case PEEK_VARINT:
        return peek_varint(buf, len, pos, value);
    case PEEK_FIXED64:
    case PEEK_FIXED32: {
        size_t size = *type == PEEK_FIXED64 ? 8 : 4;
        if (len - *pos < size)
            return PEEK_CUT;
        *pos += size;
        return PEEK_WHOLE;
    }
    case PEEK_LENGTH:
        read = peek_varint(buf, len, pos, &length);
        if (read != PEEK_WHOLE)
            return read;
        if (length > len - *pos)
            return PEEK_CUT;
        *start = *pos;
        *pos += (size_t)length;
        return PEEK_WHOLE;
    default:
        return PEEK_BAD;
    }
}

/* The Deliver's seq, when its bytes name one and only one: every field
 * read to the end (the last may run past it, as nothing can follow),
 * field 1 among them once, whole, a varint. protobuf-c keeps the last of
 * a seq given twice, a reader that stops at the first keeps that one: a
 * seq named twice names none. So does a field that is no field (a field
 * 0, a group): a decoder that skips it could find a second seq after
 * it. */
static uint64_t peek_deliver_seq(const uint8_t *buf, size_t len)
{
    size_t pos = 0, start = 0;
    uint64_t seq = 0, value = 0;
    unsigned type = 0, seqs = 0;
    while (pos < len) {
        uint32_t field = 0;
        enum peek_result read = peek_field(buf, len, &pos, &field, &type, &value, &start);
        if (field == PEEK_DELIVER_SEQ && (seqs++ > 0 || type != PEEK_VARINT || read != PEEK_WHOLE))
            return 0; /* named twice, or not as a whole varint: none to trust */
        if (read == PEEK_CUT)
            break;
        if (read == PEEK_BAD)
            return 0;
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
        if (peek_field(buf, len, &pos, &field, &type, &value, &start) != PEEK_WHOLE)
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
