/*
 * fuzz_signal.c — libFuzzer harness for wire_decode_signal, the parser and
 * validator of every published item. A signal that is accepted must survive
 * a pack/decode round trip with the same verdict; a refusal must carry a
 * reason. Crashes, sanitizer reports and leaks are the findings.
 */
#include <stdint.h>
#include <stdlib.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A fixed clock, so that a finding replays the same way on any day. */
#define FUZZ_NOW INT64_C(1700000000)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wire_error_t err;
    Schakel__Signal *signal = wire_decode_signal(data, size, FUZZ_NOW, &err);
    if (signal == NULL) {
        if (err.reason == SCHAKEL__REASON__REASON_NONE)
            abort();
        return 0;
    }
    size_t len = 0;
    uint8_t *packed = wire_encode_signal(signal, &len);
    Schakel__Signal *again = packed ? wire_decode_signal(packed, len, FUZZ_NOW, &err) : NULL;
    if (again == NULL)
        abort(); /* what we accepted and re-encoded must be accepted again */
    wire_signal_free(&again);
    free(packed);
    wire_signal_free(&signal);
    return 0;
}
