/*
 * fuzz_case_command.c — libFuzzer harness for wire_decode_case_command, the
 * parser and validator of every signed case command. An accepted command
 * must survive a pack/decode round trip; a refusal must carry a reason.
 * Crashes, sanitizer reports and leaks are the findings.
 */
#include <stdint.h>
#include <stdlib.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wire_error_t err;
    Schakel__CaseCommand *command = wire_decode_case_command(data, size, &err);
    if (command == NULL) {
        if (err.reason == SCHAKEL__REASON__REASON_NONE)
            abort();
        return 0;
    }
    size_t len = 0;
    uint8_t *packed = wire_encode_case_command(command, &len);
    Schakel__CaseCommand *again = packed ? wire_decode_case_command(packed, len, &err) : NULL;
    if (again == NULL)
        abort(); /* what we accepted and re-encoded must be accepted again */
    wire_case_command_free(&again);
    free(packed);
    wire_case_command_free(&command);
    return 0;
}
