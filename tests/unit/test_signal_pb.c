/*
 * test_signal_pb.c — a schakel_signal_t as the protobuf Signal
 * (clients/libschakel/signal_pb.c): for signals with no field, every
 * field, each field alone and all but each one, the size `schakel import`
 * predicts (signal_pb_packed_size) is the length of what libschakel sends
 * (signal_pb_encode), and the bytes decode to the signal's own values,
 * field by field as this test lists them. The row with every field set
 * must set every field of Signal and Address (a field the proto gains
 * fails here until the mapping and this test carry it); the row with none
 * sets none.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "signal_pb.h"

/* The signal's fields, and the sender signal_pb_* is given beside it. */
enum field {
    F_SENDER,
    F_KIND,
    F_THEME,
    F_AREA,
    F_POSTCODE,
    F_HOUSE_NUMBER,
    F_ADDITION,
    F_SUBJECT,
    F_GROUNDS,
    F_CASE_REF,
    F_SEVERITY,
    F_OBSERVED_AT,
    F_SUMMARY,
    F_SOURCE_REF,
    F_RECIPIENTS,
    F_COUNT
};
#define ALL_FIELDS ((1u << F_COUNT) - 1u)

static const char *const field_names[F_COUNT] = {
    "sender",       "kind",        "theme",   "area",       "postcode",
    "house_number", "addition",    "subject", "grounds",    "case_ref",
    "severity",     "observed_at", "summary", "source_ref", "recipients"};

static const char *const two_recipients[] = {"gemeente-amsterdam", "politie"};

/* A summary of 300 bytes: its length takes two bytes of varint. */
static char long_summary[301];

/* The signal with the fields of `mask` set to values of their own. */
static void sample(unsigned mask, schakel_signal_t *s, const char **sender)
{
    memset(s, 0, sizeof *s);
#define SET(field, member, value)                                                                  \
    if (mask & (1u << (field)))                                                                    \
    s->member = (value)
    *sender = (mask & (1u << F_SENDER)) ? "politie/bvh-koppeling" : NULL;
    SET(F_KIND, kind, "hennepkwekerij");
    SET(F_THEME, theme, "ondermijning");
    SET(F_AREA, area, "GM0363");
    SET(F_POSTCODE, postcode, "1012AB");
    SET(F_HOUSE_NUMBER, house_number, 12);
    SET(F_ADDITION, addition, "huis");
    SET(F_SUBJECT, subject, "ps-7f3a9c");
    SET(F_GROUNDS, grounds, "stroomverbruik drie keer het gemiddelde");
    SET(F_CASE_REF, case_ref, "ZAAK-2026-0042");
    SET(F_SEVERITY, severity, SCHAKEL_SEVERITY_HIGH);
    SET(F_OBSERVED_AT, observed_at, INT64_C(1700000000));
    SET(F_SUMMARY, summary, "melding van buren");
    SET(F_SOURCE_REF, source_ref, "BVH-2026-123");
    if (mask & (1u << F_RECIPIENTS)) {
        s->recipients = two_recipients;
        s->n_recipients = 2;
    }
#undef SET
}

static void row_fail(const char *row, const char *what)
{
    print_error("row %s: %s\n", row, what);
    fail();
}

static void same_text(const char *row, const char *field, const char *got, const char *want)
{
    if ((got == NULL) != (want == NULL) || (want != NULL && strcmp(got, want) != 0)) {
        print_error("row %s: %s is \"%s\", not \"%s\"\n", row, field, got ? got : "(absent)",
                    want ? want : "(absent)");
        fail();
    }
}

/* A field of a decoded message is there: set, or at least one value. */
static int field_present(const ProtobufCMessage *message, const ProtobufCFieldDescriptor *field)
{
    const char *base = (const char *)message;
    if (field->label == PROTOBUF_C_LABEL_REPEATED)
        return *(const size_t *)(const void *)(base + field->quantifier_offset) > 0;
    if (field->type == PROTOBUF_C_TYPE_STRING || field->type == PROTOBUF_C_TYPE_MESSAGE)
        return *(void *const *)(const void *)(base + field->offset) != NULL;
    return *(const protobuf_c_boolean *)(const void *)(base + field->quantifier_offset);
}

/* Fields of the message present: every one (want 1) or none (want 0). */
static void fields_present(const char *row, const ProtobufCMessage *message, int want)
{
    const ProtobufCMessageDescriptor *descriptor = message->descriptor;
    for (unsigned i = 0; i < descriptor->n_fields; i++) {
        if (field_present(message, &descriptor->fields[i]) != want) {
            print_error("row %s: %s.%s is %s\n", row, descriptor->short_name,
                        descriptor->fields[i].name, want ? "absent" : "present");
            fail();
        }
    }
}

/* The Signal as the broker reads it holds the signal's values, and only
 * those: NULL strings and zero numbers absent, the address there when any
 * of its parts is. */
static void check_values(const char *row, const schakel_signal_t *s, const char *sender,
                         const Schakel__Signal *out)
{
    same_text(row, "sender", out->sender, sender);
    same_text(row, "kind", out->kind, s->kind);
    same_text(row, "theme", out->theme, s->theme);
    same_text(row, "area", out->area, s->area);
    same_text(row, "subject", out->subject, s->subject);
    same_text(row, "grounds", out->grounds, s->grounds);
    same_text(row, "case_ref", out->case_ref, s->case_ref);
    same_text(row, "summary", out->summary, s->summary);
    same_text(row, "source_ref", out->source_ref, s->source_ref);
    if (out->has_severity != (s->severity != SCHAKEL_SEVERITY_UNSPECIFIED) ||
        (out->has_severity && (int)out->severity != s->severity))
        row_fail(row, "severity is not the signal's");
    if (out->has_observed_at != (s->observed_at != 0) ||
        (out->has_observed_at && out->observed_at != s->observed_at))
        row_fail(row, "observed_at is not the signal's");
    int has_address = s->postcode != NULL || s->house_number != 0 || s->addition != NULL;
    if ((out->address != NULL) != has_address)
        row_fail(row, has_address ? "the address is missing" : "an address is there");
    if (out->address != NULL) {
        same_text(row, "address.postcode", out->address->postcode, s->postcode);
        same_text(row, "address.addition", out->address->addition, s->addition);
        if (out->address->has_house_number != (s->house_number != 0) ||
            out->address->house_number != s->house_number)
            row_fail(row, "address.house_number is not the signal's");
    }
    size_t n_recipients = s->recipients != NULL ? s->n_recipients : 0;
    if (out->n_recipients != n_recipients)
        row_fail(row, "recipients are not the signal's");
    for (size_t i = 0; i < n_recipients; i++)
        same_text(row, "recipients[]", out->recipients[i], s->recipients[i]);
}

/* Encode the signal as libschakel sends it: the predicted size is its
 * length, and it decodes to the signal's values. The decoded Signal is
 * the caller's (free with schakel__signal__free_unpacked). */
static Schakel__Signal *check_signal(const char *row, const schakel_signal_t *s, const char *sender)
{
    size_t len = 0;
    uint8_t *packed = signal_pb_encode(s, sender, &len);
    if (packed == NULL)
        row_fail(row, "not encoded");
    size_t predicted = signal_pb_packed_size(s, sender);
    if (predicted != len) {
        print_error("row %s: %zu bytes predicted, %zu encoded\n", row, predicted, len);
        fail();
    }
    Schakel__Signal *out = schakel__signal__unpack(NULL, len, packed);
    free(packed);
    if (out == NULL)
        row_fail(row, "does not decode");
    check_values(row, s, sender, out);
    return out;
}

static void test_signal_pb_every_field_and_none(void **state)
{
    (void)state;
    schakel_signal_t s;
    const char *sender;
    sample(ALL_FIELDS, &s, &sender);
    Schakel__Signal *out = check_signal("every field", &s, sender);
    fields_present("every field", &out->base, 1);
    fields_present("every field", &out->address->base, 1);
    schakel__signal__free_unpacked(out, NULL);

    sample(0, &s, &sender);
    out = check_signal("no field", &s, sender);
    fields_present("no field", &out->base, 0);
    assert_int_equal(signal_pb_packed_size(&s, sender), 0);
    schakel__signal__free_unpacked(out, NULL);
}

/* Each field alone, and every field but that one. */
static void test_signal_pb_each_field(void **state)
{
    (void)state;
    for (unsigned f = 0; f < F_COUNT; f++) {
        for (int alone = 0; alone <= 1; alone++) {
            char row[64];
            snprintf(row, sizeof row, "%s %s", alone ? "only" : "all but", field_names[f]);
            schakel_signal_t s;
            const char *sender;
            sample(alone ? 1u << f : ALL_FIELDS & ~(1u << f), &s, &sender);
            schakel__signal__free_unpacked(check_signal(row, &s, sender), NULL);
        }
    }
}

/* Values at the edges of "absent" and of the varints' lengths. */
static void test_signal_pb_edges(void **state)
{
    (void)state;
    memset(long_summary, 's', sizeof long_summary - 1);
    static const char *const none[] = {NULL};
    static const struct {
        const char *name;
        schakel_signal_t signal;
        const char *sender;
    } rows[] = {
        {"empty strings are there",
         {.kind = "",
          .theme = "",
          .area = "",
          .postcode = "",
          .addition = "",
          .subject = "",
          .grounds = "",
          .case_ref = "",
          .summary = "",
          .source_ref = ""},
         ""},
        {"a recipient list of none", {.kind = "k", .recipients = none, .n_recipients = 0}, "p"},
        {"the largest house number, negative time, critical",
         {.house_number = UINT32_MAX, .observed_at = -1, .severity = SCHAKEL_SEVERITY_CRITICAL},
         "p"},
        {"a summary whose length takes two bytes", {.summary = long_summary}, "p"},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++)
        schakel__signal__free_unpacked(check_signal(rows[r].name, &rows[r].signal, rows[r].sender),
                                       NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signal_pb_every_field_and_none),
        cmocka_unit_test(test_signal_pb_each_field),
        cmocka_unit_test(test_signal_pb_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
