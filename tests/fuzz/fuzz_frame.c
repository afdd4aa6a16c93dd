/*
 * fuzz_frame.c — libFuzzer harness for wire_decode_frame, the parser of
 * every frame a peer sends. A frame that decodes is also hashed (for a
 * Publish) and encoded again, which must succeed; errors need only be
 * well-formed. Crashes, sanitizer reports and leaks are the findings.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wire_error_t err;
    Schakel__Frame *frame = wire_decode_frame(data, size, &err);
    if (frame == NULL) {
        if (err.reason == SCHAKEL__REASON__REASON_NONE ||
            memchr(err.text, 0, sizeof err.text) == NULL)
            abort(); /* a refusal must carry a reason and a terminated text */
        return 0;
    }
    if (frame->body_case == SCHAKEL__FRAME__BODY_PUBLISH) {
        uint8_t hash[32];
        wire_publish_hash(frame->publish, hash);
    }
    size_t len = 0;
    uint8_t *packed = wire_encode_frame(frame, &len);
    if (packed == NULL || len == 0)
        abort();
    free(packed);
    wire_frame_free(&frame);
    return 0;
}
