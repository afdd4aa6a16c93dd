/*
 * caseview.h — cases as libschakel hands them out: the broker's
 * CaseSummary and CaseEvent messages copied into the public
 * schakel_case_summary_t / schakel_case_event_t, and freed again. Used by
 * delivery.c (Deliver.case_event) and case.c (CaseView). Internal.
 */
#ifndef SCHAKEL_CASEVIEW_H
#define SCHAKEL_CASEVIEW_H

#include <stddef.h>
#include <stdint.h>

#include "schakel.h"
#include "wire.h"

/* Results of the copy functions. */
enum caseview_copy {
    CASEVIEW_OK = 0,
    CASEVIEW_BAD = -1,   /* the broker sent something we cannot accept */
    CASEVIEW_NOMEM = -2, /* an allocation failed */
};

/* Fill *out (zeroed by the caller) from a summary that passed
 * wire_decode_frame. case_type, lead and state ("open"/"closed") are
 * required; my_state "invited" sets invited (absent or "member" = member).
 * On failure *out holds what was copied: clear it. */
int caseview_copy_summary(schakel_case_summary_t *out, const Schakel__CaseSummary *in);
void caseview_clear_summary(schakel_case_summary_t *summary);

/* Fill *out (zeroed by the caller) from an event that passed
 * wire_decode_frame or wire_decode_case_event: strings copied, fields,
 * attachment bytes, and a linked signal unpacked (budgeted; sender, kind
 * and theme required). On failure *out holds what was copied: clear it. */
int caseview_copy_event(schakel_case_event_t *out, const Schakel__CaseEvent *in);
void caseview_clear_event(schakel_case_event_t *event);

/* Decode Deliver.case_event bytes into a new event (free with
 * caseview_event_free). Returns SCHAKEL_OK, SCHAKEL_ERR_PROTOCOL (text
 * says why) or SCHAKEL_ERR_NOMEM. */
schakel_status_t caseview_decode_event(const uint8_t *bytes, size_t len, schakel_case_event_t **out,
                                       char *text, size_t textlen);
void caseview_event_free(schakel_case_event_t **event);

#endif
