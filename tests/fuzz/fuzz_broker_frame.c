/*
 * fuzz_broker_frame.c — libFuzzer harness for what a client makes of a
 * frame from the broker: wire_decode_broker_frame (its larger budget, a
 * reason code it does not know kept), then libschakel's own decoding of
 * what it hands to the application: a Deliver into a schakel_delivery_t
 * (the signal or case event bytes inside it unpacked again, under their
 * budget), and a CaseView's cases and events copied out. Crashes,
 * sanitizer reports and leaks are the findings; a refusal must carry a
 * reason and a terminated text.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "caseview.h"
#include "delivery.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_case_view(const Schakel__CaseView *view)
{
    for (size_t i = 0; i < view->n_cases; i++) {
        schakel_case_summary_t summary;
        memset(&summary, 0, sizeof summary);
        (void)caseview_copy_summary(&summary, view->cases[i]);
        caseview_clear_summary(&summary);
    }
    for (size_t i = 0; i < view->n_events; i++) {
        schakel_case_event_t event;
        memset(&event, 0, sizeof event);
        (void)caseview_copy_event(&event, view->events[i]);
        caseview_clear_event(&event);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wire_error_t err;
    Schakel__Frame *frame = wire_decode_broker_frame(data, size, &err);
    if (frame == NULL) {
        if (err.reason == SCHAKEL__REASON__REASON_NONE ||
            memchr(err.text, 0, sizeof err.text) == NULL)
            abort(); /* a refusal must carry a reason and a terminated text */
        return 0;
    }
    if (frame->body_case == SCHAKEL__FRAME__BODY_DELIVER) {
        schakel_delivery_t *delivery = NULL;
        char text[256] = "";
        schakel_status_t status = delivery_decode(frame->deliver, &delivery, text, sizeof text);
        if ((status == SCHAKEL_OK) != (delivery != NULL) || memchr(text, 0, sizeof text) == NULL)
            abort(); /* a delivery exactly when it says so, and a terminated text */
        schakel_delivery_free(&delivery);
    } else if (frame->body_case == SCHAKEL__FRAME__BODY_CASE_VIEW) {
        fuzz_case_view(frame->case_view);
    }
    size_t len = 0;
    uint8_t *packed = wire_encode_frame(frame, &len);
    if (packed == NULL || len == 0)
        abort();
    free(packed);
    wire_frame_free(&frame);
    return 0;
}
