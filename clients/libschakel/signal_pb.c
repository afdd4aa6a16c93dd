/*
 * signal_pb.c — a schakel_signal_t as the protobuf Signal (signal_pb.h).
 * Every field of the mapping is written once, in signal_pb_fill; the size
 * and the encoding both go through it, so they cannot disagree. Trusts its
 * caller for NUL-terminated strings and a recipient list of n_recipients;
 * refuses nothing (the values are the broker's to check).
 */
#include "signal_pb.h"

/* protobuf-c declares message strings as char *; packing only reads them,
 * so lending it the caller's const strings is safe. The union avoids a
 * cast that would hide a real const violation elsewhere. */
static char *signal_pb_lend(const char *text)
{
    union {
        const char *borrowed;
        char *lent;
    } u;
    u.borrowed = text;
    return u.lent;
}

static char **signal_pb_lend_list(const char *const *texts)
{
    union {
        const char *const *borrowed;
        char **lent;
    } u;
    u.borrowed = texts;
    return u.lent;
}

void signal_pb_fill(Schakel__Signal *signal, Schakel__Address *address, const schakel_signal_t *in,
                    const char *sender)
{
    schakel__signal__init(signal);
    schakel__address__init(address);
    signal->sender = signal_pb_lend(sender);
    signal->kind = signal_pb_lend(in->kind);
    signal->theme = signal_pb_lend(in->theme);
    signal->area = signal_pb_lend(in->area);
    if (in->postcode != NULL || in->house_number != 0 || in->addition != NULL) {
        address->postcode = signal_pb_lend(in->postcode);
        address->has_house_number = in->house_number != 0;
        address->house_number = in->house_number;
        address->addition = signal_pb_lend(in->addition);
        signal->address = address;
    }
    signal->subject = signal_pb_lend(in->subject);
    signal->grounds = signal_pb_lend(in->grounds);
    signal->case_ref = signal_pb_lend(in->case_ref);
    signal->has_severity = in->severity != SCHAKEL_SEVERITY_UNSPECIFIED;
    signal->severity = (Schakel__Severity)in->severity;
    signal->has_observed_at = in->observed_at != 0;
    signal->observed_at = in->observed_at;
    signal->summary = signal_pb_lend(in->summary);
    signal->source_ref = signal_pb_lend(in->source_ref);
    if (in->recipients != NULL) {
        signal->n_recipients = in->n_recipients;
        signal->recipients = signal_pb_lend_list(in->recipients);
    }
}

size_t signal_pb_packed_size(const schakel_signal_t *in, const char *sender)
{
    Schakel__Signal signal;
    Schakel__Address address;
    signal_pb_fill(&signal, &address, in, sender);
    return schakel__signal__get_packed_size(&signal);
}

uint8_t *signal_pb_encode(const schakel_signal_t *in, const char *sender, size_t *len)
{
    Schakel__Signal signal;
    Schakel__Address address;
    signal_pb_fill(&signal, &address, in, sender);
    return wire_encode_signal(&signal, len);
}
