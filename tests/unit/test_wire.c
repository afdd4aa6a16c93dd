/*
 * test_wire.c — tests of the frame codec (common/wire.c).
 *
 * Table-driven: signal fields one at a time (validated as a struct and
 * again after a pack/decode round trip), raw frames and raw signal bytes
 * written in hex, publish and ack shapes, the decode budget, the hash tree
 * against a root computed here by hand, the signed bytes, and round trips.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "schakel_limits.h"
#include "wire.h"
#include "wire_internal.h"

#define NOW INT64_C(1700000000)
#define R(name) SCHAKEL__REASON__##name

/* ------------------------------------------------------------------ helpers */

struct bytes {
    uint8_t *data;
    size_t len;
    size_t cap;
};

static void bytes_put(struct bytes *b, const void *data, size_t len)
{
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + len)
            cap *= 2;
        b->data = realloc(b->data, cap);
        assert_non_null(b->data);
        b->cap = cap;
    }
    if (len > 0)
        memcpy(b->data + b->len, data, len);
    b->len += len;
}

static void bytes_varint(struct bytes *b, uint64_t value)
{
    do {
        uint8_t byte = (uint8_t)(value & 0x7F);
        value >>= 7;
        if (value != 0)
            byte |= 0x80;
        bytes_put(b, &byte, 1);
    } while (value != 0);
}

static void bytes_key(struct bytes *b, uint32_t field, unsigned wire_type)
{
    bytes_varint(b, (uint64_t)field << 3 | wire_type);
}

static void bytes_field(struct bytes *b, uint32_t field, const void *data, size_t len)
{
    bytes_key(b, field, 2);
    bytes_varint(b, len);
    bytes_put(b, data, len);
}

/* "08 01 b2 01 00" -> bytes; whitespace between pairs is ignored. */
static void bytes_hex(struct bytes *b, const char *hex)
{
    while (*hex != '\0') {
        if (*hex == ' ') {
            hex++;
            continue;
        }
        unsigned value;
        assert_int_equal(sscanf(hex, "%2x", &value), 1);
        uint8_t byte = (uint8_t)value;
        bytes_put(b, &byte, 1);
        hex += 2;
    }
}

static void bytes_free(struct bytes *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

static void expect_error(const char *row, const wire_error_t *err, Schakel__Reason reason,
                         const char *fragment)
{
    if (err->reason != reason)
        fail_msg("%s: reason %s (\"%s\"), want %s", row, wire_reason_name(err->reason), err->text,
                 wire_reason_name(reason));
    if (reason == R(REASON_NONE)) {
        if (err->text[0] != '\0')
            fail_msg("%s: success with text \"%s\"", row, err->text);
        return;
    }
    if (err->text[0] == '\0')
        fail_msg("%s: refusal without a text", row);
    if (fragment != NULL && strstr(err->text, fragment) == NULL)
        fail_msg("%s: text \"%s\" lacks \"%s\"", row, err->text, fragment);
}

/* ------------------------------------------------------- signal field table */

enum signal_field {
    F_NONE,
    F_SENDER,
    F_KIND,
    F_THEME,
    F_AREA,
    F_ADDRESS, /* value NULL removes the whole address */
    F_POSTCODE,
    F_HOUSE_NUMBER, /* number; -1 = absent */
    F_ADDITION,
    F_SUBJECT,
    F_GROUNDS,
    F_CASE_REF,
    F_SEVERITY,    /* number; -1 = absent */
    F_OBSERVED_AT, /* number = offset from NOW */
    F_OBSERVED_ABSENT,
    F_SUMMARY,
    F_SOURCE_REF,
    F_RECIPIENTS,      /* value: comma-separated list */
    F_RECIPIENT_COUNT, /* number distinct valid ids */
};

struct signal_row {
    const char *name;
    enum signal_field field;
    const char *value; /* NULL: field absent */
    size_t repeat;     /* >0: value repeated this many times */
    int64_t number;
    Schakel__Reason reason;
    const char *fragment; /* expected in the error text */
};

#define OK R(REASON_NONE)

static const struct signal_row signal_rows[] = {
    {"full signal", F_NONE, NULL, 0, 0, OK, NULL},
    /* sender */
    {"sender absent", F_SENDER, NULL, 0, 0, R(INVALID_MESSAGE), "no sender"},
    {"sender woco", F_SENDER, "woco-servatius/meldingen", 0, 0, OK, NULL},
    {"sender without name", F_SENDER, "politie", 0, 0, R(INVALID_FIELD), "sender"},
    {"sender with capital", F_SENDER, "Politie/bvh", 0, 0, R(INVALID_FIELD), "principal id"},
    {"sender two slashes", F_SENDER, "politie/bvh/x", 0, 0, R(INVALID_FIELD), "sender"},
    {"sender empty", F_SENDER, "", 0, 0, R(INVALID_FIELD), "empty"},
    {"sender too long", F_SENDER, "a", 130, 0, R(INVALID_FIELD), "at most 129"},
    {"sender bad utf-8", F_SENDER, "politie/\xff", 0, 0, R(INVALID_FIELD), "UTF-8"},
    /* kind */
    {"kind absent", F_KIND, NULL, 0, 0, R(INVALID_MESSAGE), "no kind"},
    {"kind capital", F_KIND, "Hennep", 0, 0, R(INVALID_FIELD), "kind"},
    {"kind space", F_KIND, "hennep kwekerij", 0, 0, R(INVALID_FIELD), "kind"},
    {"kind 64 long", F_KIND, "k", 64, 0, OK, NULL},
    {"kind 65 long", F_KIND, "k", 65, 0, R(INVALID_FIELD), "at most 64"},
    /* theme */
    {"theme absent", F_THEME, NULL, 0, 0, R(INVALID_MESSAGE), "no theme"},
    {"theme unknown", F_THEME, "fietsendiefstal", 0, 0, R(INVALID_THEME), "vocabulary"},
    {"theme capital", F_THEME, "Ondermijning", 0, 0, R(INVALID_THEME), "vocabulary"},
    {"theme empty", F_THEME, "", 0, 0, R(INVALID_THEME), "empty"},
    {"theme zorg", F_THEME, "zorg", 0, 0, OK, NULL},
    {"theme huiselijk-geweld", F_THEME, "huiselijk-geweld", 0, 0, OK, NULL},
    /* area */
    {"area absent", F_AREA, NULL, 0, 0, R(INVALID_MESSAGE), "no area"},
    {"area GM", F_AREA, "GM0935", 0, 0, OK, NULL},
    {"area WK", F_AREA, "WK093501", 0, 0, OK, NULL},
    {"area WK letters", F_AREA, "WK0363AF", 0, 0, OK, NULL},
    {"area BU", F_AREA, "BU09350101", 0, 0, OK, NULL},
    {"area BU letters", F_AREA, "BU0363AF09", 0, 0, OK, NULL},
    {"area GM short", F_AREA, "GM935", 0, 0, R(INVALID_AREA), "CBS code"},
    {"area GM long", F_AREA, "GM09351", 0, 0, R(INVALID_AREA), "CBS code"},
    {"area GM letter", F_AREA, "GM093A", 0, 0, R(INVALID_AREA), "CBS code"},
    {"area WK short", F_AREA, "WK09350", 0, 0, R(INVALID_AREA), "CBS code"},
    {"area BU short", F_AREA, "BU0935010", 0, 0, R(INVALID_AREA), "CBS code"},
    {"area BU long", F_AREA, "BU093501011", 0, 0, R(INVALID_AREA), "CBS code"},
    {"area BU letter in municipality", F_AREA, "BUA9350101", 0, 0, R(INVALID_AREA), "CBS"},
    {"area BU lower case", F_AREA, "BU0935ab01", 0, 0, R(INVALID_AREA), "CBS code"},
    {"area lower prefix", F_AREA, "gm0935", 0, 0, R(INVALID_AREA), "CBS code"},
    {"area unknown prefix", F_AREA, "XX0935", 0, 0, R(INVALID_AREA), "CBS code"},
    {"area with space", F_AREA, "GM 0935", 0, 0, R(INVALID_AREA), "CBS code"},
    {"area empty", F_AREA, "", 0, 0, R(INVALID_AREA), "empty"},
    /* address */
    {"address absent", F_ADDRESS, NULL, 0, 0, OK, NULL},
    {"postcode absent", F_POSTCODE, NULL, 0, 0, R(INVALID_POSTCODE), "no postcode"},
    {"postcode 9999ZZ", F_POSTCODE, "9999ZZ", 0, 0, OK, NULL},
    {"postcode 1000AA", F_POSTCODE, "1000AA", 0, 0, OK, NULL},
    {"postcode leading zero", F_POSTCODE, "0123AB", 0, 0, R(INVALID_POSTCODE), "postcode"},
    {"postcode SA", F_POSTCODE, "1234SA", 0, 0, R(INVALID_POSTCODE), "postcode"},
    {"postcode SD", F_POSTCODE, "1234SD", 0, 0, R(INVALID_POSTCODE), "postcode"},
    {"postcode SS", F_POSTCODE, "1234SS", 0, 0, R(INVALID_POSTCODE), "postcode"},
    {"postcode with space", F_POSTCODE, "1234 AB", 0, 0, R(INVALID_POSTCODE), "postcode"},
    {"postcode lower case", F_POSTCODE, "1234ab", 0, 0, R(INVALID_POSTCODE), "postcode"},
    {"postcode three digits", F_POSTCODE, "123AB", 0, 0, R(INVALID_POSTCODE), "postcode"},
    {"postcode five digits", F_POSTCODE, "12345A", 0, 0, R(INVALID_POSTCODE), "postcode"},
    {"postcode empty", F_POSTCODE, "", 0, 0, R(INVALID_POSTCODE), "empty"},
    {"house number absent", F_HOUSE_NUMBER, NULL, 0, -1, R(INVALID_FIELD), "house_number"},
    {"house number 0", F_HOUSE_NUMBER, NULL, 0, 0, R(INVALID_FIELD), "house_number"},
    {"house number 1", F_HOUSE_NUMBER, NULL, 0, 1, OK, NULL},
    {"house number 99999", F_HOUSE_NUMBER, NULL, 0, 99999, OK, NULL},
    {"house number 100000", F_HOUSE_NUMBER, NULL, 0, 100000, R(INVALID_FIELD), "1..99999"},
    {"addition absent", F_ADDITION, NULL, 0, 0, OK, NULL},
    {"addition 'bis 2-a'", F_ADDITION, "bis 2-a", 0, 0, OK, NULL},
    {"addition 8 long", F_ADDITION, "A", 8, 0, OK, NULL},
    {"addition 9 long", F_ADDITION, "A", 9, 0, R(INVALID_FIELD), "at most 8"},
    {"addition slash", F_ADDITION, "A/B", 0, 0, R(INVALID_FIELD), "addition"},
    {"addition accent", F_ADDITION, "\xc3\xa9", 0, 0, R(INVALID_FIELD), "addition"},
    {"addition empty", F_ADDITION, "", 0, 0, R(INVALID_FIELD), "empty"},
    /* subject and grounds */
    {"subject absent", F_SUBJECT, NULL, 0, 0, OK, NULL},
    {"subject BSN", F_SUBJECT, "123456782", 0, 0, R(INVALID_FIELD), "never a BSN"},
    {"subject short", F_SUBJECT, "psn:12", 0, 0, R(INVALID_FIELD), "pseudonym"},
    {"subject space", F_SUBJECT, "psn 4f9a2c77", 0, 0, R(INVALID_FIELD), "pseudonym"},
    {"subject 64 long", F_SUBJECT, "p", 64, 0, OK, NULL},
    {"subject 65 long", F_SUBJECT, "p", 65, 0, R(INVALID_FIELD), "at most 64"},
    {"subject empty", F_SUBJECT, "", 0, 0, R(INVALID_FIELD), "empty"},
    {"grounds absent with subject", F_GROUNDS, NULL, 0, 0, R(MISSING_GROUNDS), "grounds"},
    {"grounds empty with subject", F_GROUNDS, "", 0, 0, R(MISSING_GROUNDS), "grounds"},
    {"grounds 2000 long", F_GROUNDS, "g", 2000, 0, OK, NULL},
    {"grounds 2001 long", F_GROUNDS, "g", 2001, 0, R(INVALID_FIELD), "at most 2000"},
    {"grounds escape", F_GROUNDS, "kleur \x1b[31mrood", 0, 0, R(INVALID_FIELD), "control"},
    {"grounds bad utf-8", F_GROUNDS, "geur\xc0\xaf", 0, 0, R(INVALID_FIELD), "UTF-8"},
    /* references */
    {"case_ref absent", F_CASE_REF, NULL, 0, 0, OK, NULL},
    {"case_ref 128", F_CASE_REF, "c", 128, 0, OK, NULL},
    {"case_ref 129", F_CASE_REF, "c", 129, 0, R(INVALID_FIELD), "at most 128"},
    {"case_ref tab", F_CASE_REF, "RIEC\t17", 0, 0, R(INVALID_FIELD), "control"},
    {"case_ref C1 control", F_CASE_REF,
     "RIEC\xc2\x9b"
     "17",
     0, 0, R(INVALID_FIELD), "control"},
    {"source_ref accent", F_SOURCE_REF, "ref-\xc3\xa9t\xc3\xa9", 0, 0, OK, NULL},
    {"source_ref newline", F_SOURCE_REF, "BVH\n2024", 0, 0, R(INVALID_FIELD), "control"},
    {"source_ref DEL", F_SOURCE_REF, "BVH\x7f", 0, 0, R(INVALID_FIELD), "control"},
    {"source_ref 129", F_SOURCE_REF, "s", 129, 0, R(INVALID_FIELD), "at most 128"},
    {"source_ref empty", F_SOURCE_REF, "", 0, 0, R(INVALID_FIELD), "empty"},
    /* summary */
    {"summary absent", F_SUMMARY, NULL, 0, 0, OK, NULL},
    {"summary 2000", F_SUMMARY, "s", 2000, 0, OK, NULL},
    {"summary 2001", F_SUMMARY, "s", 2001, 0, R(INVALID_FIELD), "at most 2000"},
    {"summary 1000 two-byte chars", F_SUMMARY, "\xc3\xa9", 1000, 0, OK, NULL},
    {"summary 1001 two-byte chars", F_SUMMARY, "\xc3\xa9", 1001, 0, R(INVALID_FIELD), "2002"},
    {"summary tab and CRLF", F_SUMMARY, "a\tb\r\nc", 0, 0, OK, NULL},
    {"summary bell", F_SUMMARY, "geluid\x07", 0, 0, R(INVALID_FIELD), "control"},
    {"summary invalid byte", F_SUMMARY, "melding \xff", 0, 0, R(INVALID_FIELD), "UTF-8"},
    {"summary surrogate", F_SUMMARY, "x\xed\xa0\x80", 0, 0, R(INVALID_FIELD), "UTF-8"},
    {"summary truncated", F_SUMMARY, "x\xe2\x82", 0, 0, R(INVALID_FIELD), "UTF-8"},
    {"summary beyond U+10FFFF", F_SUMMARY, "\xf4\x90\x80\x80", 0, 0, R(INVALID_FIELD), "UTF-8"},
    {"summary 4-byte char", F_SUMMARY, "\xf0\x9f\x9a\xa8 brand", 0, 0, OK, NULL},
    /* severity and time */
    {"severity absent", F_SEVERITY, NULL, 0, -1, OK, NULL},
    {"severity unspecified", F_SEVERITY, NULL, 0, 0, R(INVALID_FIELD), "severity"},
    {"severity low", F_SEVERITY, NULL, 0, 1, OK, NULL},
    {"severity critical", F_SEVERITY, NULL, 0, 4, OK, NULL},
    {"severity 5", F_SEVERITY, NULL, 0, 5, R(INVALID_FIELD), "severity"},
    {"observed_at absent", F_OBSERVED_ABSENT, NULL, 0, 0, OK, NULL},
    {"observed_at now", F_OBSERVED_AT, NULL, 0, 0, OK, NULL},
    {"observed_at skew edge", F_OBSERVED_AT, NULL, 0, SCHAKEL_MAX_FUTURE_SKEW_S, OK, NULL},
    {"observed_at too far ahead", F_OBSERVED_AT, NULL, 0, SCHAKEL_MAX_FUTURE_SKEW_S + 1,
     R(INVALID_FIELD), "observed_at"},
    {"observed_at oldest", F_OBSERVED_AT, NULL, 0, -SCHAKEL_MAX_PAST_S, OK, NULL},
    {"observed_at too old", F_OBSERVED_AT, NULL, 0, -SCHAKEL_MAX_PAST_S - 1, R(INVALID_FIELD),
     "observed_at"},
    {"observed_at epoch", F_OBSERVED_AT, NULL, 0, -NOW, R(INVALID_FIELD), "observed_at"},
    /* recipients */
    {"recipients none", F_RECIPIENTS, "", 0, 0, OK, NULL},
    {"recipients one", F_RECIPIENTS, "politie", 0, 0, OK, NULL},
    {"recipients 16", F_RECIPIENT_COUNT, NULL, 0, 16, OK, NULL},
    {"recipients 17", F_RECIPIENT_COUNT, NULL, 0, 17, R(INVALID_FIELD), "at most 16"},
    {"recipient capital", F_RECIPIENTS, "politie,Riec", 0, 0, R(INVALID_FIELD), "recipients[1]"},
    {"recipient principal", F_RECIPIENTS, "politie/bvh", 0, 0, R(INVALID_FIELD), "partner id"},
    {"recipient empty", F_RECIPIENTS, "politie,", 0, 0, R(INVALID_FIELD), "recipients[1]"},
    {"recipient repeated", F_RECIPIENTS, "politie,riec,politie", 0, 0, R(INVALID_FIELD),
     "recipients[2] repeats recipients[0]"},
};

struct signal_fixture {
    Schakel__Signal signal;
    Schakel__Address address;
    char *recipients[SCHAKEL_MAX_RECIPIENTS + 4];
    char recipient_text[SCHAKEL_MAX_RECIPIENTS + 4][16];
    char list[128];
    char value[8192];
};

static void fixture_init(struct signal_fixture *f)
{
    static char sender[] = "politie/bvh-koppeling", kind[] = "hennepkwekerij",
                theme[] = "ondermijning", area[] = "BU09350101", postcode[] = "6211AB",
                addition[] = "A", subject[] = "psn:4f9a2c77",
                grounds[] = "Stroomverbruik viermaal normaal; geurmelding buren",
                case_ref[] = "RIEC-2024-017", summary[] = "Vermoedelijke kwekerij\nop zolder",
                source_ref[] = "BVH 2024/123456", riec[] = "riec", gemeente[] = "gemeente";
    memset(f, 0, sizeof *f);
    schakel__signal__init(&f->signal);
    schakel__address__init(&f->address);
    f->address.postcode = postcode;
    f->address.has_house_number = 1;
    f->address.house_number = 12;
    f->address.addition = addition;
    f->signal.sender = sender;
    f->signal.kind = kind;
    f->signal.theme = theme;
    f->signal.area = area;
    f->signal.address = &f->address;
    f->signal.subject = subject;
    f->signal.grounds = grounds;
    f->signal.case_ref = case_ref;
    f->signal.has_severity = 1;
    f->signal.severity = SCHAKEL__SEVERITY__SEVERITY_HIGH;
    f->signal.has_observed_at = 1;
    f->signal.observed_at = NOW - 3600;
    f->signal.summary = summary;
    f->signal.source_ref = source_ref;
    f->recipients[0] = riec;
    f->recipients[1] = gemeente;
    f->signal.recipients = f->recipients;
    f->signal.n_recipients = 2;
}

static char *row_value(struct signal_fixture *f, const struct signal_row *row)
{
    if (row->value == NULL)
        return NULL;
    size_t unit = strlen(row->value), count = row->repeat ? row->repeat : 1;
    assert_true(unit * count < sizeof f->value);
    for (size_t i = 0; i < count; i++)
        memcpy(f->value + i * unit, row->value, unit);
    f->value[unit * count] = '\0';
    return f->value;
}

static void set_recipient_list(struct signal_fixture *f, const char *list)
{
    f->signal.n_recipients = 0;
    if (list[0] == '\0')
        return;
    snprintf(f->list, sizeof f->list, "%s", list);
    char *start = f->list;
    for (;;) {
        char *comma = strchr(start, ',');
        if (comma != NULL)
            *comma = '\0';
        f->recipients[f->signal.n_recipients++] = start;
        if (comma == NULL)
            break;
        start = comma + 1;
    }
}

/* Where a row's string value goes; NULL for the fields that are not strings. */
static char **string_slot(struct signal_fixture *f, enum signal_field field)
{
    Schakel__Signal *s = &f->signal;
    char **slots[] = {
        [F_SENDER] = &s->sender,
        [F_KIND] = &s->kind,
        [F_THEME] = &s->theme,
        [F_AREA] = &s->area,
        [F_POSTCODE] = &f->address.postcode,
        [F_ADDITION] = &f->address.addition,
        [F_SUBJECT] = &s->subject,
        [F_GROUNDS] = &s->grounds,
        [F_CASE_REF] = &s->case_ref,
        [F_SUMMARY] = &s->summary,
        [F_SOURCE_REF] = &s->source_ref,
    };
    return (size_t)field < sizeof slots / sizeof slots[0] ? slots[field] : NULL;
}

static void apply_row(struct signal_fixture *f, const struct signal_row *row)
{
    Schakel__Signal *s = &f->signal;
    char **slot = string_slot(f, row->field);
    if (slot != NULL) {
        *slot = row_value(f, row);
        return;
    }
    switch (row->field) {
    case F_ADDRESS:
        s->address = NULL;
        break;
    case F_HOUSE_NUMBER:
        f->address.has_house_number = row->number >= 0;
        f->address.house_number = row->number >= 0 ? (uint32_t)row->number : 0;
        break;
    case F_SEVERITY:
        s->has_severity = row->number >= 0;
        s->severity = (Schakel__Severity)(row->number >= 0 ? row->number : 0);
        break;
    case F_OBSERVED_AT:
        s->observed_at = NOW + row->number;
        break;
    case F_OBSERVED_ABSENT:
        s->has_observed_at = 0;
        break;
    case F_RECIPIENTS:
        row_value(f, row);
        set_recipient_list(f, row->value);
        break;
    case F_RECIPIENT_COUNT:
        for (int64_t i = 0; i < row->number; i++) {
            snprintf(f->recipient_text[i], sizeof f->recipient_text[i], "partner-%d", (int)i);
            f->recipients[i] = f->recipient_text[i];
        }
        s->n_recipients = (size_t)row->number;
        break;
    default: /* F_NONE: the full signal as it is */
        break;
    }
}

/* The text names the field and the rule, never what the sender wrote. */
static void expect_no_echo(const struct signal_row *row, const wire_error_t *err,
                           const struct signal_fixture *f)
{
    if (row->value == NULL || row->reason == OK || strlen(f->value) < 4)
        return;
    if (strstr(err->text, f->value) != NULL)
        fail_msg("%s: text \"%s\" echoes the value", row->name, err->text);
}

static void test_signal_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof signal_rows / sizeof signal_rows[0]; i++) {
        const struct signal_row *row = &signal_rows[i];
        struct signal_fixture f;
        fixture_init(&f);
        apply_row(&f, row);

        wire_error_t err;
        memset(&err, 0x5a, sizeof err);
        int rc = wire_validate_signal(&f.signal, NOW, &err);
        expect_error(row->name, &err, row->reason, row->fragment);
        if (rc != (row->reason == OK ? 0 : -1))
            fail_msg("%s: validate returned %d", row->name, rc);
        expect_no_echo(row, &err, &f);

        /* Same verdict once packed and decoded from bytes. */
        size_t len = 0;
        uint8_t *buf = wire_encode_signal(&f.signal, &len);
        assert_non_null(buf);
        wire_error_t decode_err;
        Schakel__Signal *decoded = wire_decode_signal(buf, len, NOW, &decode_err);
        expect_error(row->name, &decode_err, row->reason, row->fragment);
        expect_no_echo(row, &decode_err, &f);
        assert_true((decoded != NULL) == (row->reason == OK));
        wire_signal_free(&decoded);
        assert_null(decoded);
        free(buf);
    }
}

static void test_signal_every_theme(void **state)
{
    (void)state;
    size_t count = 0;
    for (size_t i = 0; syntax_themes[i] != NULL; i++, count++) {
        struct signal_fixture f;
        fixture_init(&f);
        char theme[SCHAKEL_MAX_ID_LEN + 1];
        snprintf(theme, sizeof theme, "%s", syntax_themes[i]);
        f.signal.theme = theme;
        wire_error_t err;
        if (wire_validate_signal(&f.signal, NOW, &err) != 0)
            fail_msg("theme %s refused: %s", syntax_themes[i], err.text);
    }
    assert_int_equal(count, 14);
}

/* The clock bounds saturate instead of overflowing. */
static void test_signal_clock_extremes(void **state)
{
    (void)state;
    static const struct {
        int64_t now, observed_at;
        int valid;
    } rows[] = {
        {INT64_MAX, INT64_MAX, 1},         {INT64_MAX, INT64_MIN, 0},
        {INT64_MIN, INT64_MIN, 1},         {INT64_MIN, INT64_MAX, 0},
        {0, SCHAKEL_MAX_FUTURE_SKEW_S, 1}, {0, -SCHAKEL_MAX_PAST_S - 1, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct signal_fixture f;
        fixture_init(&f);
        f.signal.observed_at = rows[i].observed_at;
        wire_error_t err;
        int rc = wire_validate_signal(&f.signal, rows[i].now, &err);
        if (rc != (rows[i].valid ? 0 : -1))
            fail_msg("clock row %zu: rc %d (%s)", i, rc, err.text);
    }
}

static void test_signal_validate_null(void **state)
{
    (void)state;
    wire_error_t err;
    assert_int_equal(wire_validate_signal(NULL, NOW, &err), -1);
    assert_int_equal(err.reason, R(INVALID_MESSAGE));
    struct signal_fixture f;
    fixture_init(&f);
    f.signal.recipients = NULL;
    assert_int_equal(wire_validate_signal(&f.signal, NOW, &err), -1);
    expect_error("recipients array missing", &err, R(INVALID_FIELD), "recipients[0]");
}

/* decode_signal leaves item_index to the caller (wire.h). */
static void test_signal_item_index_untouched(void **state)
{
    (void)state;
    wire_error_t err;
    err.item_index = 7;
    assert_null(wire_decode_signal((const uint8_t *)"\xff", 1, NOW, &err));
    assert_int_equal(err.item_index, 7);
}

/* --------------------------------------------------- raw signal bytes table */

struct raw_signal_row {
    const char *name;
    int with_base; /* prefix the bytes of a minimal valid signal */
    const char *hex;
    Schakel__Reason reason;
    const char *fragment;
};

/* Field keys: 3 theme 0x1a, 5 address 0x2a, 9 severity 0x48, 11 summary
 * 0x5a, 13 recipients 0x6a. A singular field given twice is refused (what
 * was checked and signed must be unambiguous). */
static const struct raw_signal_row raw_signal_rows[] = {
    {"minimal", 1, "", OK, NULL},
    {"severity 2", 1, "48 02", OK, NULL},
    {"summary e-acute", 1, "5a 02 c3 a9", OK, NULL},
    {"theme repeated", 1, "1a 04 7a 6f 72 67", R(INVALID_MESSAGE),
     "Signal.theme is given more than once"},
    {"recipients repeated (a repeated field)", 1, "6a 04 72 69 65 63 6a 04 6f 6d 2d 78", OK, NULL},
    {"summary with NUL", 1, "5a 07 61 62 63 00 64 65 66", R(INVALID_FIELD),
     "Signal.summary contains a NUL byte"},
    {"theme with NUL after a valid theme", 1, "1a 0e 6f 6e 64 65 72 6d 69 6a 6e 69 6e 67 00 78",
     R(INVALID_MESSAGE), "Signal.theme is given more than once"},
    {"recipient with NUL", 1, "6a 03 61 00 62", R(INVALID_FIELD), "Signal.recipients"},
    {"postcode with NUL", 1, "2a 0a 0a 06 36 32 31 31 41 00 10 0c", R(INVALID_FIELD),
     "Address.postcode contains a NUL byte"},
    {"summary invalid byte", 1, "5a 01 ff", R(INVALID_FIELD), "Signal.summary is not valid UTF-8"},
    {"summary overlong slash", 1, "5a 02 c0 af", R(INVALID_FIELD), "not valid UTF-8"},
    {"summary surrogate", 1, "5a 03 ed a0 80", R(INVALID_FIELD), "not valid UTF-8"},
    {"unknown varint field 99", 1, "98 06 01", R(INVALID_MESSAGE),
     "Signal carries unknown field 99"},
    {"unknown string field 14", 1, "72 01 41", R(INVALID_MESSAGE), "unknown field 14"},
    {"unknown field in address", 1, "2a 0c 0a 06 36 32 31 31 41 42 10 0c 48 01", R(INVALID_MESSAGE),
     "Address carries unknown field 9"},
    {"severity 9", 1, "48 09", R(INVALID_FIELD), "Signal.severity has the unknown value 9"},
    {"severity -1", 1, "48 ff ff ff ff ff ff ff ff ff 01", R(INVALID_FIELD), "severity"},
    {"theme as varint", 1, "18 01", R(INVALID_MESSAGE), "not a valid"},
    {"truncated string", 1, "5a 05 61", R(INVALID_MESSAGE), "not a valid"},
    {"group start", 1, "0b", R(INVALID_MESSAGE), NULL},
    {"varint never ends", 1, "48 ff ff ff ff ff ff ff ff ff ff ff", R(INVALID_MESSAGE), NULL},
    {"empty item", 0, "", R(INVALID_MESSAGE), "empty"},
    {"garbage", 0, "ff ff ff", R(INVALID_MESSAGE), NULL},
    {"kind only", 0, "12 01 61", R(INVALID_MESSAGE), "no sender"},
};

static void minimal_signal_bytes(struct bytes *b)
{
    bytes_field(b, 1, "gemeente/meldingen", 18);
    bytes_field(b, 2, "overlast-melding", 16);
    bytes_field(b, 3, "overlast", 8);
    bytes_field(b, 4, "GM0935", 6);
}

static void test_raw_signal_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof raw_signal_rows / sizeof raw_signal_rows[0]; i++) {
        const struct raw_signal_row *row = &raw_signal_rows[i];
        struct bytes b = {0};
        if (row->with_base)
            minimal_signal_bytes(&b);
        bytes_hex(&b, row->hex);
        /* An exact-size copy, so that any read past the end is caught. */
        uint8_t *exact = malloc(b.len ? b.len : 1);
        assert_non_null(exact);
        if (b.len)
            memcpy(exact, b.data, b.len);
        wire_error_t err;
        Schakel__Signal *signal = wire_decode_signal(exact, b.len, NOW, &err);
        expect_error(row->name, &err, row->reason, row->fragment);
        assert_true((signal != NULL) == (row->reason == OK));
        wire_signal_free(&signal);
        free(exact);
        bytes_free(&b);
    }
}

static void test_signal_item_size(void **state)
{
    (void)state;
    static const struct {
        size_t len;
        Schakel__Reason reason;
    } rows[] = {
        {SCHAKEL_MAX_ITEM_BYTES, OK},
        {SCHAKEL_MAX_ITEM_BYTES + 1, R(INVALID_FIELD)},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        /* A minimal signal whose summary fills the item to the byte; the
         * summary is over its own limit, so the exact-size item fails the
         * summary rule, and the larger one the size rule. */
        struct bytes b = {0};
        minimal_signal_bytes(&b);
        size_t room = rows[i].len - b.len - 4; /* key + 3-byte length */
        char *summary = malloc(room);
        assert_non_null(summary);
        memset(summary, 's', room);
        bytes_key(&b, 11, 2);
        uint8_t length[3] = {(uint8_t)(room | 0x80), (uint8_t)((room >> 7) | 0x80),
                             (uint8_t)(room >> 14)};
        bytes_put(&b, length, 3);
        bytes_put(&b, summary, room);
        assert_int_equal(b.len, rows[i].len);
        wire_error_t err;
        Schakel__Signal *signal = wire_decode_signal(b.data, b.len, NOW, &err);
        assert_null(signal);
        if (rows[i].reason == OK)
            expect_error("item at limit", &err, R(INVALID_FIELD), "summary is");
        else
            expect_error("item over limit", &err, R(INVALID_FIELD), "item is 32769 bytes");
        free(summary);
        bytes_free(&b);
    }
}

/* ------------------------------------------------------------ raw frames */

struct raw_frame_row {
    const char *name;
    const char *hex;
    Schakel__Reason reason;
    const char *fragment;
    Schakel__Frame__BodyCase body;
};

#define ZERO16 "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
#define CASE42 "43 2d 30 30 30 30 30 30 34 32" /* "C-00000042" */

/* Frame keys: 1 version 0x08; bodies 16 publish 0x82 01, 17 accepted
 * 0x8a 01, 18 rejected 0x92 01, 19 deliver 0x9a 01, 20 ack 0xa2 01, 21
 * flow 0xaa 01, 22 heartbeat 0xb2 01. */
static const struct raw_frame_row raw_frame_rows[] = {
    {"heartbeat", "08 01 b2 01 00", OK, NULL, SCHAKEL__FRAME__BODY_HEARTBEAT},
    {"heartbeat with time", "08 01 b2 01 03 08 e8 07", OK, NULL, SCHAKEL__FRAME__BODY_HEARTBEAT},
    /* store_epoch (7, 0x3a): empty asks for it, 16 bytes answer */
    {"heartbeat asking for the store epoch", "08 01 b2 01 02 3a 00", OK, NULL,
     SCHAKEL__FRAME__BODY_HEARTBEAT},
    {"heartbeat with a store epoch", "08 01 b2 01 12 3a 10 " ZERO16, OK, NULL,
     SCHAKEL__FRAME__BODY_HEARTBEAT},
    /* store_epoch_floor (8, 0x40), with the epoch: 1000 */
    {"heartbeat with a store epoch and its floor", "08 01 b2 01 15 3a 10 " ZERO16 " 40 e8 07", OK,
     NULL, SCHAKEL__FRAME__BODY_HEARTBEAT},
    {"heartbeat answer of PROTOCOL 4.9 with its floor",
     "08 01 b2 01 1d 08 c8 d3 ea b6 b7 33 3a 10 5d 0c 3e 8a 91 f2 4b 77 65 a0 c1 d2 e3 f4 07 18 40 "
     "c4 d5 2c",
     OK, NULL, SCHAKEL__FRAME__BODY_HEARTBEAT},
    {"heartbeat store epoch of 1 byte", "08 01 b2 01 03 3a 01 00", R(INVALID_FIELD),
     "store_epoch is 1 bytes", 0},
    {"heartbeat store epoch of 17 bytes", "08 01 b2 01 13 3a 11 " ZERO16 " 00", R(INVALID_FIELD),
     "store_epoch is 17 bytes", 0},
    /* heartbeat_id (9, 0x4a): any bytes up to 16, echoed in the answer */
    {"heartbeat with an empty heartbeat_id", "08 01 b2 01 02 4a 00", OK, NULL,
     SCHAKEL__FRAME__BODY_HEARTBEAT},
    {"heartbeat with a heartbeat_id of 16 bytes", "08 01 b2 01 12 4a 10 " ZERO16, OK, NULL,
     SCHAKEL__FRAME__BODY_HEARTBEAT},
    {"heartbeat with a heartbeat_id of 17 bytes", "08 01 b2 01 13 4a 11 " ZERO16 " 00",
     R(INVALID_FIELD), "heartbeat_id is 17 bytes; at most 16", 0},
    {"version after body", "b2 01 00 08 01", OK, NULL, SCHAKEL__FRAME__BODY_HEARTBEAT},
    {"flow window 0", "08 01 aa 01 02 08 00", OK, NULL, SCHAKEL__FRAME__BODY_FLOW},
    {"flow window 64", "08 01 aa 01 02 08 40", OK, NULL, SCHAKEL__FRAME__BODY_FLOW},
    {"ack one seq", "08 01 a2 01 02 08 05", OK, NULL, SCHAKEL__FRAME__BODY_ACK},
    {"ack packed seqs", "08 01 a2 01 05 0a 03 01 02 03", OK, NULL, SCHAKEL__FRAME__BODY_ACK},
    {"rejected", "08 01 92 01 02 10 08", OK, NULL, SCHAKEL__FRAME__BODY_REJECTED},
    {"deliver", "08 01 9a 01 05 08 05 62 01 00", OK, NULL, SCHAKEL__FRAME__BODY_DELIVER},
    {"accepted", "08 01 8a 01 16 0a 10 " ZERO16 " 12 02 08 01", OK, NULL,
     SCHAKEL__FRAME__BODY_ACCEPTED},
    {"two bodies", "08 01 aa 01 02 08 40 b2 01 00", R(INVALID_MESSAGE),
     "more than one of its alternatives", 0},
    {"version twice", "08 01 08 01 b2 01 00", R(INVALID_MESSAGE),
     "Frame.version is given more than once", 0},
    {"empty frame", "", R(INVALID_MESSAGE), "empty", 0},
    {"garbage", "ff ff ff ff", R(INVALID_MESSAGE), "not a valid Schakel Frame", 0},
    {"truncated", "08 01 b2 01 05 12", R(INVALID_MESSAGE), "not a valid", 0},
    {"version as string", "0a 01 31 b2 01 00", R(INVALID_MESSAGE), "not a valid", 0},
    {"group", "08 01 0b", R(INVALID_MESSAGE), NULL, 0},
    {"version absent", "b2 01 00", R(UNSUPPORTED_VERSION), "version 1 is spoken", 0},
    {"version 0", "08 00 b2 01 00", R(UNSUPPORTED_VERSION), "version 0 is not supported", 0},
    {"version 2", "08 02 b2 01 00", R(UNSUPPORTED_VERSION), "version 1 is spoken", 0},
    {"version 2 with unknown field", "08 02 b2 01 00 98 06 01", R(UNSUPPORTED_VERSION), NULL, 0},
    {"no body", "08 01", R(INVALID_MESSAGE), "no body", 0},
    {"unknown field in frame", "08 01 b2 01 00 98 06 01", R(INVALID_MESSAGE),
     "Frame carries unknown field 99", 0},
    {"unknown body 35", "08 01 9a 02 00", R(INVALID_MESSAGE), "Frame carries unknown field 35", 0},
    {"unknown field in heartbeat", "08 01 b2 01 02 58 01", R(INVALID_MESSAGE),
     "Heartbeat carries unknown field 11", 0},
    {"unknown field in publish", "08 01 82 01 02 38 01", R(INVALID_MESSAGE),
     "Publish carries unknown field 7", 0},
    {"unknown field in item accepted", "08 01 8a 01 16 0a 10 " ZERO16 " 12 02 28 01",
     R(INVALID_MESSAGE), "ItemAccepted carries unknown field 5", 0},
    {"flow without window", "08 01 aa 01 00", R(INVALID_MESSAGE), "no window", 0},
    {"ack without seqs", "08 01 a2 01 00", R(INVALID_MESSAGE), "no seqs", 0},
    {"ack seq 0", "08 01 a2 01 04 08 05 08 00", R(INVALID_FIELD), "seqs[1] is 0", 0},
    {"rejected reason 99", "08 01 92 01 02 10 63", R(INVALID_FIELD),
     "Rejected.reason has the unknown value 99", 0},
    {"rejected reason 20 (NOT_FOUND)", "08 01 92 01 02 10 14", OK, NULL,
     SCHAKEL__FRAME__BODY_REJECTED},
    {"rejected reason 21 (CASE_CLOSED)", "08 01 92 01 02 10 15", OK, NULL,
     SCHAKEL__FRAME__BODY_REJECTED},
    {"rejected reason 24 (CASE_IDS_EXHAUSTED)", "08 01 92 01 02 10 18", OK, NULL,
     SCHAKEL__FRAME__BODY_REJECTED},
    {"rejected reason 25", "08 01 92 01 02 10 19", R(INVALID_FIELD), "unknown value 25", 0},
    {"rejected reason none", "08 01 92 01 02 10 00", R(INVALID_MESSAGE), "no reason", 0},
    {"rejected without reason", "08 01 92 01 00", R(INVALID_MESSAGE), "no reason", 0},
    {"rejected text not UTF-8", "08 01 92 01 05 10 08 1a 01 ff", R(INVALID_FIELD),
     "Rejected.text is not valid UTF-8", 0},
    {"heartbeat principal with NUL", "08 01 b2 01 05 12 03 61 00 62", R(INVALID_FIELD),
     "Heartbeat.principal contains a NUL byte", 0},
    {"deliver without seq", "08 01 9a 01 03 62 01 00", R(INVALID_MESSAGE), "no seq", 0},
    {"deliver with seq 0", "08 01 9a 01 05 08 00 62 01 00", R(INVALID_MESSAGE),
     "seq is 0; seqs start at 1", 0},
    {"deliver without signal", "08 01 9a 01 02 08 05", R(INVALID_MESSAGE), "no signal", 0},
    {"accepted without id", "08 01 8a 01 04 12 02 08 01", R(INVALID_MESSAGE), "no message_id", 0},
    {"accepted short id", "08 01 8a 01 03 0a 01 00", R(INVALID_FIELD), "is 1 bytes", 0},
    {"accepted with case id", "08 01 8a 01 22 0a 10 " ZERO16 " 12 02 08 01 22 0a " CASE42, OK, NULL,
     SCHAKEL__FRAME__BODY_ACCEPTED},
    /* Deliver: a signal or a case event (field 15, 0x7a), exactly one */
    {"deliver with case event", "08 01 9a 01 05 08 05 7a 01 00", OK, NULL,
     SCHAKEL__FRAME__BODY_DELIVER},
    {"deliver with signal and case event", "08 01 9a 01 08 08 05 62 01 00 7a 01 00",
     R(INVALID_MESSAGE), "both a signal and a case_event", 0},
    {"deliver with neither", "08 01 9a 01 02 08 05", R(INVALID_MESSAGE),
     "no signal and no case_event", 0},
    /* CasePublish (body 32, 0x82 02) without a usable command id: nothing to name */
    {"case_publish without command id", "08 01 82 02 05 12 01 00 1a 00", R(INVALID_MESSAGE),
     "case_publish has no command_id", 0},
    {"case_publish short command id", "08 01 82 02 03 0a 01 00", R(INVALID_FIELD),
     "case_publish command_id is 1 bytes", 0},
    {"case_publish empty", "08 01 82 02 00", R(INVALID_MESSAGE), "no command_id", 0},
    {"case_publish unknown field", "08 01 82 02 02 20 01", R(INVALID_MESSAGE),
     "CasePublish carries unknown field 4", 0},
    /* CaseQuery (body 33, 0x8a 02) */
    {"case_query list", "08 01 8a 02 02 08 07", OK, NULL, SCHAKEL__FRAME__BODY_CASE_QUERY},
    {"case_query empty", "08 01 8a 02 00", OK, NULL, SCHAKEL__FRAME__BODY_CASE_QUERY},
    {"case_query one case", "08 01 8a 02 0e 08 07 12 0a " CASE42, OK, NULL,
     SCHAKEL__FRAME__BODY_CASE_QUERY},
    {"case_query bad case id", "08 01 8a 02 05 12 03 43 2d 34", R(INVALID_FIELD), "not a case id",
     0},
    {"case_query case id lower case", "08 01 8a 02 0c 12 0a 63 2d 30 30 30 30 30 30 34 32",
     R(INVALID_FIELD), "not a case id", 0},
    {"case_query case id twice", "08 01 8a 02 18 12 0a " CASE42 " 12 0a " CASE42,
     R(INVALID_MESSAGE), "CaseQuery.case_id is given more than once", 0},
    {"case_query next page of a timeline", "08 01 8a 02 0e 12 0a " CASE42 " 18 05", OK, NULL,
     SCHAKEL__FRAME__BODY_CASE_QUERY},
    {"case_query next page of the list", "08 01 8a 02 0c 22 0a " CASE42, OK, NULL,
     SCHAKEL__FRAME__BODY_CASE_QUERY},
    {"case_query after_event_seq without case", "08 01 8a 02 02 18 05", R(INVALID_FIELD),
     "after_event_seq pages a timeline", 0},
    {"case_query after_case_id with a case", "08 01 8a 02 18 12 0a " CASE42 " 22 0a " CASE42,
     R(INVALID_FIELD), "after_case_id pages the list", 0},
    {"case_query bad after_case_id", "08 01 8a 02 05 22 03 43 2d 34", R(INVALID_FIELD),
     "after_case_id is not a case id", 0},
    /* CaseView (body 34, 0x92 02): cases 2, events 3 */
    {"case_view empty", "08 01 92 02 02 08 07", OK, NULL, SCHAKEL__FRAME__BODY_CASE_VIEW},
    {"case_view more", "08 01 92 02 02 20 01", OK, NULL, SCHAKEL__FRAME__BODY_CASE_VIEW},
    {"case_view case and event",
     "08 01 92 02 20 12 0c 0a 0a " CASE42 " 1a 10 0a 0a " CASE42 " 18 01 20 01", OK, NULL,
     SCHAKEL__FRAME__BODY_CASE_VIEW},
    {"case_view case without id", "08 01 92 02 02 12 00", R(INVALID_MESSAGE),
     "cases[0] has no valid case_id", 0},
    {"case_view event without seq", "08 01 92 02 10 1a 0e 0a 0a " CASE42 " 20 01",
     R(INVALID_MESSAGE), "event has no event_seq", 0},
    {"case_view event kind none", "08 01 92 02 12 1a 10 0a 0a " CASE42 " 18 01 20 00",
     R(INVALID_MESSAGE), "event has no kind", 0},
    {"case_view event kind 11", "08 01 92 02 12 1a 10 0a 0a " CASE42 " 18 01 20 0b",
     R(INVALID_FIELD), "CaseEvent.kind has the unknown value 11", 0},
    {"case_view event text NUL", "08 01 92 02 16 1a 14 0a 0a " CASE42 " 18 01 20 06 5a 02 61 00",
     R(INVALID_FIELD), "CaseEvent.text contains a NUL byte", 0},
};

static void test_raw_frame_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof raw_frame_rows / sizeof raw_frame_rows[0]; i++) {
        const struct raw_frame_row *row = &raw_frame_rows[i];
        struct bytes b = {0};
        bytes_hex(&b, row->hex);
        uint8_t *exact = malloc(b.len ? b.len : 1);
        assert_non_null(exact);
        if (b.len)
            memcpy(exact, b.data, b.len);
        wire_error_t err;
        memset(&err, 0x5a, sizeof err);
        Schakel__Frame *frame = wire_decode_frame(exact, b.len, &err);
        expect_error(row->name, &err, row->reason, row->fragment);
        assert_int_equal(err.item_index, -1);
        assert_int_equal(err.has_message_id, 0);
        if (row->reason == OK) {
            assert_non_null(frame);
            if (frame->body_case != row->body)
                fail_msg("%s: body %d, want %d", row->name, frame->body_case, row->body);
        } else {
            assert_null(frame);
        }
        wire_frame_free(&frame);
        assert_null(frame);
        free(exact);
        bytes_free(&b);
    }
}

/* ---------------------------------------------------------- publish table */

struct publish_row {
    const char *name;
    int id_len; /* -1 absent */
    size_t n_items;
    size_t item_len;
    int odd_index; /* item with another length, -1 none */
    size_t odd_len;
    int sig_len; /* -1 absent */
    Schakel__Reason reason;
    int item_index;
    int names_id;
    const char *fragment;
};

static const struct publish_row publish_rows[] = {
    {"one item", 16, 1, 40, -1, 0, 64, OK, -1, 0, NULL},
    {"256 items", 16, 256, 20, -1, 0, 64, OK, -1, 0, NULL},
    {"item at size limit", 16, 3, 40, 1, SCHAKEL_MAX_ITEM_BYTES, 64, OK, -1, 0, NULL},
    {"no message id", -1, 1, 40, -1, 0, 64, R(INVALID_MESSAGE), -1, 0, "no message_id"},
    {"empty message id", 0, 1, 40, -1, 0, 64, R(INVALID_FIELD), -1, 0, "is 0 bytes"},
    {"15-byte message id", 15, 1, 40, -1, 0, 64, R(INVALID_FIELD), -1, 0, "exactly 16"},
    {"17-byte message id", 17, 1, 40, -1, 0, 64, R(INVALID_FIELD), -1, 0, "is 17 bytes"},
    {"no items", 16, 0, 0, -1, 0, 64, R(INVALID_MESSAGE), -1, 1, "no items"},
    {"257 items", 16, 257, 20, -1, 0, 64, R(TOO_MANY_ITEMS), -1, 1, "at most 256"},
    {"empty item 2", 16, 4, 40, 2, 0, 64, R(INVALID_MESSAGE), 2, 1, "item 2 is 0 bytes"},
    {"item 0 too large", 16, 2, 40, 0, SCHAKEL_MAX_ITEM_BYTES + 1, 64, R(INVALID_FIELD), 0, 1,
     "1..32768"},
    {"no signature", 16, 1, 40, -1, 0, -1, R(BAD_SIGNATURE), -1, 1, "no signature"},
    {"empty signature", 16, 1, 40, -1, 0, 0, R(BAD_SIGNATURE), -1, 1, "not 64 bytes"},
    {"63-byte signature", 16, 1, 40, -1, 0, 63, R(BAD_SIGNATURE), -1, 1, "not 64 bytes"},
    {"65-byte signature", 16, 1, 40, -1, 0, 65, R(BAD_SIGNATURE), -1, 1, "not 64 bytes"},
};

static void build_publish(const struct publish_row *row, struct bytes *out, uint8_t id[16])
{
    uint8_t filler[SCHAKEL_MAX_ITEM_BYTES + 1];
    memset(filler, 0x0a, sizeof filler);
    randombytes_buf(id, 16);
    struct bytes publish = {0};
    if (row->id_len >= 0) {
        uint8_t long_id[32];
        memset(long_id, 0x77, sizeof long_id);
        memcpy(long_id, id, 16);
        bytes_field(&publish, 1, long_id, (size_t)row->id_len);
    }
    for (size_t i = 0; i < row->n_items; i++)
        bytes_field(&publish, 2, filler, (int)i == row->odd_index ? row->odd_len : row->item_len);
    if (row->sig_len >= 0)
        bytes_field(&publish, 3, filler, (size_t)row->sig_len);
    bytes_hex(out, "08 01");
    bytes_field(out, 16, publish.data, publish.len);
    bytes_free(&publish);
}

static void test_publish_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof publish_rows / sizeof publish_rows[0]; i++) {
        const struct publish_row *row = &publish_rows[i];
        struct bytes b = {0};
        uint8_t id[16];
        build_publish(row, &b, id);
        wire_error_t err;
        Schakel__Frame *frame = wire_decode_frame(b.data, b.len, &err);
        expect_error(row->name, &err, row->reason, row->fragment);
        if (err.item_index != row->item_index)
            fail_msg("%s: item_index %d, want %d", row->name, err.item_index, row->item_index);
        if (row->reason == OK) {
            assert_non_null(frame);
            assert_int_equal(frame->publish->n_items, row->n_items);
            assert_memory_equal(frame->publish->message_id.data, id, 16);
        } else {
            assert_null(frame);
            assert_int_equal(err.has_message_id, row->names_id);
            if (row->names_id)
                assert_memory_equal(err.message_id, id, 16);
        }
        wire_frame_free(&frame);
        bytes_free(&b);
    }
}

static void test_ack_counts(void **state)
{
    (void)state;
    static const struct {
        size_t n_seqs;
        Schakel__Reason reason;
    } rows[] = {
        {1, OK},
        {SCHAKEL_MAX_ACKS, OK},
        {SCHAKEL_MAX_ACKS + 1, R(INVALID_FIELD)},
        {5000, R(INVALID_FIELD)},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct bytes ack = {0}, frame_bytes = {0};
        for (size_t k = 0; k < rows[i].n_seqs; k++) {
            bytes_key(&ack, 1, 0);
            bytes_varint(&ack, k + 1);
        }
        bytes_hex(&frame_bytes, "08 01");
        bytes_field(&frame_bytes, 20, ack.data, ack.len);
        wire_error_t err;
        Schakel__Frame *frame = wire_decode_frame(frame_bytes.data, frame_bytes.len, &err);
        expect_error("ack count", &err, rows[i].reason, rows[i].reason ? "at most 1024" : NULL);
        if (frame != NULL) {
            assert_int_equal(frame->ack->n_seqs, rows[i].n_seqs);
            assert_int_equal(frame->ack->seqs[rows[i].n_seqs - 1], rows[i].n_seqs);
        }
        wire_frame_free(&frame);
        bytes_free(&ack);
        bytes_free(&frame_bytes);
    }
}

/* ------------------------------------------------------- sizes and budget */

static void test_frame_size_limit(void **state)
{
    (void)state;
    /* A Publish of exactly SCHAKEL_MAX_FRAME_BYTES: accepted (and so within
     * the decode budget); one byte more in the last item: refused by size. */
    for (int extra = 0; extra <= 1; extra++) {
        uint8_t filler[SCHAKEL_MAX_ITEM_BYTES];
        memset(filler, 0x0a, sizeof filler);
        size_t last = 700;
        struct bytes b = {0};
        for (int attempt = 0; attempt < 4; attempt++) {
            struct bytes publish = {0};
            bytes_field(&publish, 1, filler, 16);
            for (int i = 0; i < 9; i++)
                bytes_field(&publish, 2, filler, i < 8 ? SCHAKEL_MAX_ITEM_BYTES - 100 : last);
            bytes_field(&publish, 3, filler, 64);
            bytes_free(&b);
            bytes_hex(&b, "08 01");
            bytes_field(&b, 16, publish.data, publish.len);
            bytes_free(&publish);
            if (b.len == SCHAKEL_MAX_FRAME_BYTES + (size_t)extra)
                break;
            last = last + SCHAKEL_MAX_FRAME_BYTES + (size_t)extra - b.len;
        }
        assert_int_equal(b.len, SCHAKEL_MAX_FRAME_BYTES + (size_t)extra);
        wire_error_t err;
        Schakel__Frame *frame = wire_decode_frame(b.data, b.len, &err);
        if (extra == 0) {
            expect_error("frame at limit", &err, OK, NULL);
            assert_non_null(frame);
            assert_int_equal(frame->publish->n_items, 9);
        } else {
            expect_error("frame over limit", &err, R(FRAME_TOO_LARGE), "262145 bytes");
            assert_null(frame);
        }
        wire_frame_free(&frame);
        bytes_free(&b);
    }
    /* The size check comes before parsing: zeros would not parse. */
    uint8_t *zeros = calloc(SCHAKEL_MAX_FRAME_BYTES + 1, 1);
    assert_non_null(zeros);
    wire_error_t err;
    assert_null(wire_decode_frame(zeros, SCHAKEL_MAX_FRAME_BYTES + 1, &err));
    expect_error("zeros over limit", &err, R(FRAME_TOO_LARGE), NULL);
    free(zeros);
}

/* Frames under the size limit whose decoded form would not be: each small
 * field becomes a much larger struct or array slot. */
static void test_decode_budget(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        uint32_t body;
        const char *element_hex; /* repeated inside the body */
        size_t repeat;
        int packed;
    } rows[] = {
        {"packed ack seqs", 20, "01", 200000, 1},
        {"unpacked ack seqs", 20, "08 01", 120000, 0},
        {"empty publish items", 16, "12 00", 120000, 0},
        {"accepted item records", 17, "12 00", 120000, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct bytes element = {0}, body = {0}, inner = {0}, frame_bytes = {0};
        bytes_hex(&element, rows[i].element_hex);
        for (size_t k = 0; k < rows[i].repeat; k++)
            bytes_put(&inner, element.data, element.len);
        if (rows[i].packed)
            bytes_field(&body, 1, inner.data, inner.len);
        else
            bytes_put(&body, inner.data, inner.len);
        bytes_hex(&frame_bytes, "08 01");
        bytes_field(&frame_bytes, rows[i].body, body.data, body.len);
        assert_true(frame_bytes.len <= SCHAKEL_MAX_FRAME_BYTES);
        wire_error_t err;
        Schakel__Frame *frame = wire_decode_frame(frame_bytes.data, frame_bytes.len, &err);
        expect_error(rows[i].name, &err, R(INVALID_MESSAGE), "bytes of memory to decode");
        assert_null(frame);
        bytes_free(&element);
        bytes_free(&body);
        bytes_free(&inner);
        bytes_free(&frame_bytes);
    }
}

/* ------------------------------------------------------------- hash tree */

static void hand_leaf(const uint8_t *item, size_t len, uint8_t out[32])
{
    uint8_t buf[256];
    assert_true(len < sizeof buf);
    buf[0] = 0x00;
    memcpy(buf + 1, item, len);
    crypto_generichash(out, 32, buf, len + 1, NULL, 0);
}

static void hand_node(const uint8_t left[32], const uint8_t right[32], uint8_t out[32])
{
    uint8_t buf[65];
    buf[0] = 0x01;
    memcpy(buf + 1, left, 32);
    memcpy(buf + 33, right, 32);
    crypto_generichash(out, 32, buf, sizeof buf, NULL, 0);
}

static void test_items_root(void **state)
{
    (void)state;
    static const char *const texts[] = {"alpha", "bravo", "charlie", "delta", "echo"};
    uint8_t text_bytes[5][8];
    ProtobufCBinaryData items[5];
    uint8_t leaf[5][32];
    for (int i = 0; i < 5; i++) {
        items[i].len = strlen(texts[i]);
        memcpy(text_bytes[i], texts[i], items[i].len);
        items[i].data = text_bytes[i];
        hand_leaf(items[i].data, items[i].len, leaf[i]);
    }
    uint8_t ab[32], cd[32], abc[32], abcd[32], abcde[32];
    hand_node(leaf[0], leaf[1], ab);
    hand_node(leaf[2], leaf[3], cd);
    hand_node(ab, leaf[2], abc);     /* n = 3: split 2 | 1 */
    hand_node(ab, cd, abcd);         /* n = 4: split 2 | 2 */
    hand_node(abcd, leaf[4], abcde); /* n = 5: split 4 | 1 */
    const struct {
        size_t n;
        const uint8_t *expected;
    } rows[] = {{1, leaf[0]}, {2, ab}, {3, abc}, {4, abcd}, {5, abcde}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint8_t root[32];
        wire_items_root(items, rows[i].n, root);
        if (memcmp(root, rows[i].expected, 32) != 0)
            fail_msg("root of %zu items differs from the hand computation", rows[i].n);
    }
    /* Rows that must differ: order matters, the leaf prefix matters, and a
     * balanced split of 5 (3 | 2) is not the RFC 6962 shape. */
    ProtobufCBinaryData swapped[2] = {items[1], items[0]};
    uint8_t root[32], plain[32], wrong_shape[32], cde[32];
    wire_items_root(swapped, 2, root);
    assert_memory_not_equal(root, ab, 32);
    crypto_generichash(plain, 32, items[0].data, items[0].len, NULL, 0);
    wire_items_root(items, 1, root);
    assert_memory_not_equal(root, plain, 32);
    hand_node(cd, leaf[4], cde);
    hand_node(abc, cde, wrong_shape);
    wire_items_root(items, 5, root);
    assert_memory_not_equal(root, wrong_shape, 32);
}

static void test_signed_bytes_and_hash(void **state)
{
    (void)state;
    uint8_t id[16], root[32], out[64];
    for (int i = 0; i < 16; i++)
        id[i] = (uint8_t)(0xa0 + i);
    for (int i = 0; i < 32; i++)
        root[i] = (uint8_t)i;
    wire_signed_bytes(id, root, out);
    assert_memory_equal(out, "schakel-publish1", 16);
    assert_memory_equal(out + 16, id, 16);
    assert_memory_equal(out + 32, root, 32);

    uint8_t item_bytes[] = "item";
    uint8_t signature[64];
    memset(signature, 0x42, sizeof signature);
    ProtobufCBinaryData item = {4, item_bytes};
    Schakel__Publish publish = SCHAKEL__PUBLISH__INIT;
    publish.has_message_id = 1;
    publish.message_id.data = id;
    publish.message_id.len = 16;
    publish.n_items = 1;
    publish.items = &item;
    publish.has_signature = 1;
    publish.signature.data = signature;
    publish.signature.len = 64;

    uint8_t leaf[32], signed_bytes[64], concatenated[128], expected[32], got[32];
    hand_leaf(item_bytes, 4, leaf);
    memcpy(signed_bytes, "schakel-publish1", 16);
    memcpy(signed_bytes + 16, id, 16);
    memcpy(signed_bytes + 32, leaf, 32);
    memcpy(concatenated, signed_bytes, 64);
    memcpy(concatenated + 64, signature, 64);
    crypto_generichash(expected, 32, concatenated, sizeof concatenated, NULL, 0);
    wire_publish_hash(&publish, got);
    assert_memory_equal(got, expected, 32);
    /* the same from signed bytes the caller already has */
    memset(got, 0, sizeof got);
    wire_publish_hash_signed(signed_bytes, &publish.signature, got);
    assert_memory_equal(got, expected, 32);

    /* A different signature over the same content is a different publish. */
    signature[63] ^= 1;
    wire_publish_hash(&publish, got);
    assert_memory_not_equal(got, expected, 32);
}

/* ------------------------------------------------------------ round trips */

static void test_publish_round_trip(void **state)
{
    (void)state;
    struct signal_fixture f[3];
    uint8_t *packed[3];
    ProtobufCBinaryData items[3];
    for (int i = 0; i < 3; i++) {
        fixture_init(&f[i]);
        f[i].signal.observed_at = NOW - i;
        packed[i] = wire_encode_signal(&f[i].signal, &items[i].len);
        assert_non_null(packed[i]);
        items[i].data = packed[i];
    }
    uint8_t id[16], signature[64];
    randombytes_buf(id, sizeof id);
    randombytes_buf(signature, sizeof signature);
    Schakel__Publish publish = SCHAKEL__PUBLISH__INIT;
    publish.has_message_id = 1;
    publish.message_id = (ProtobufCBinaryData){16, id};
    publish.n_items = 3;
    publish.items = items;
    publish.has_signature = 1;
    publish.signature = (ProtobufCBinaryData){64, signature};
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    frame.body_case = SCHAKEL__FRAME__BODY_PUBLISH;
    frame.publish = &publish;
    assert_false(frame.has_version);

    size_t len = 0;
    uint8_t *buf = wire_encode_frame(&frame, &len);
    assert_non_null(buf);
    assert_true(frame.has_version);
    wire_error_t err;
    Schakel__Frame *decoded = wire_decode_frame(buf, len, &err);
    expect_error("publish round trip", &err, OK, NULL);
    assert_non_null(decoded);
    assert_int_equal(decoded->version, SCHAKEL_PROTOCOL_VERSION);
    assert_int_equal(decoded->body_case, SCHAKEL__FRAME__BODY_PUBLISH);
    assert_memory_equal(decoded->publish->message_id.data, id, 16);
    assert_memory_equal(decoded->publish->signature.data, signature, 64);
    assert_int_equal(decoded->publish->n_items, 3);
    uint8_t root_sent[32], root_received[32], hash_sent[32], hash_received[32];
    wire_items_root(items, 3, root_sent);
    wire_items_root(decoded->publish->items, 3, root_received);
    assert_memory_equal(root_sent, root_received, 32);
    wire_publish_hash(&publish, hash_sent);
    wire_publish_hash(decoded->publish, hash_received);
    assert_memory_equal(hash_sent, hash_received, 32);
    for (int i = 0; i < 3; i++) {
        const ProtobufCBinaryData *item = &decoded->publish->items[i];
        assert_int_equal(item->len, items[i].len);
        Schakel__Signal *signal = wire_decode_signal(item->data, item->len, NOW, &err);
        expect_error("item round trip", &err, OK, NULL);
        assert_string_equal(signal->sender, f[i].signal.sender);
        assert_string_equal(signal->area, f[i].signal.area);
        assert_string_equal(signal->summary, f[i].signal.summary);
        assert_string_equal(signal->address->postcode, "6211AB");
        assert_int_equal(signal->address->house_number, 12);
        assert_int_equal(signal->severity, SCHAKEL__SEVERITY__SEVERITY_HIGH);
        assert_int_equal(signal->observed_at, NOW - i);
        assert_int_equal(signal->n_recipients, 2);
        assert_string_equal(signal->recipients[1], "gemeente");
        wire_signal_free(&signal);
        free(packed[i]);
    }
    wire_frame_free(&decoded);
    free(buf);
}

static void test_small_bodies_round_trip(void **state)
{
    (void)state;
    uint64_t seqs[] = {1, 2, UINT64_MAX};
    Schakel__Ack ack = SCHAKEL__ACK__INIT;
    ack.n_seqs = 3;
    ack.seqs = seqs;
    Schakel__Flow flow = SCHAKEL__FLOW__INIT;
    flow.has_window = 1;
    flow.window = 64;
    char text[] = "theme is not in the theme vocabulary";
    Schakel__Rejected rejected = SCHAKEL__REJECTED__INIT;
    rejected.has_reason = 1;
    rejected.reason = SCHAKEL__REASON__INVALID_THEME;
    rejected.text = text;
    rejected.has_item_index = 1;
    rejected.item_index = -1;

    Schakel__Frame frames[3] = {SCHAKEL__FRAME__INIT, SCHAKEL__FRAME__INIT, SCHAKEL__FRAME__INIT};
    frames[0].body_case = SCHAKEL__FRAME__BODY_ACK;
    frames[0].ack = &ack;
    frames[1].body_case = SCHAKEL__FRAME__BODY_FLOW;
    frames[1].flow = &flow;
    frames[2].body_case = SCHAKEL__FRAME__BODY_REJECTED;
    frames[2].rejected = &rejected;
    frames[2].version = 9; /* overwritten by the encoder */
    for (int i = 0; i < 3; i++) {
        size_t len = 0;
        uint8_t *buf = wire_encode_frame(&frames[i], &len);
        assert_non_null(buf);
        wire_error_t err;
        Schakel__Frame *decoded = wire_decode_frame(buf, len, &err);
        expect_error("small body round trip", &err, OK, NULL);
        assert_int_equal(decoded->body_case, frames[i].body_case);
        if (i == 0)
            assert_memory_equal(decoded->ack->seqs, seqs, sizeof seqs);
        if (i == 1)
            assert_int_equal(decoded->flow->window, 64);
        if (i == 2) {
            assert_int_equal(decoded->rejected->reason, SCHAKEL__REASON__INVALID_THEME);
            assert_string_equal(decoded->rejected->text, text);
            assert_int_equal(decoded->rejected->item_index, -1);
        }
        wire_frame_free(&decoded);
        free(buf);
    }
}

static void test_encode_null(void **state)
{
    (void)state;
    size_t len = 99;
    assert_null(wire_encode_frame(NULL, &len));
    assert_null(wire_encode_signal(NULL, &len));
    Schakel__Frame *frame = NULL;
    wire_frame_free(&frame);
    wire_frame_free(NULL);
    Schakel__Signal *signal = NULL;
    wire_signal_free(&signal);
    wire_signal_free(NULL);
}

/* ------------------------------------------------------------ case ids, media types */

static void test_case_syntax(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int case_id, media_type;
    } rows[] = {
        {"C-00000042", 1, 0},
        {"C-99999999", 1, 0},
        {"C-00000000", 1, 0},
        {"C-0000042", 0, 0},
        {"C-000000042", 0, 0},
        {"c-00000042", 0, 0},
        {"C_00000042", 0, 0},
        {"C-0000004a", 0, 0},
        {"C-0000 042", 0, 0},
        {"", 0, 0},
        {"application/pdf", 0, 1},
        {"image/svg+xml", 0, 1},
        {"application/vnd.openxmlformats-officedocument.wordprocessingml.document", 0, 1},
        {"text/plain; charset=utf-8", 0, 0},
        {"application/", 0, 0},
        {"/pdf", 0, 0},
        {"application//pdf", 0, 0},
        {"application/pdf/x", 0, 0},
        {"-application/pdf", 0, 0},
        {"application", 0, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        if (syntax_is_case_id(rows[i].text) != rows[i].case_id)
            fail_msg("syntax_is_case_id(\"%s\") != %d", rows[i].text, rows[i].case_id);
        if (syntax_is_media_type(rows[i].text) != rows[i].media_type)
            fail_msg("syntax_is_media_type(\"%s\") != %d", rows[i].text, rows[i].media_type);
    }
    assert_false(syntax_is_case_id(NULL));
    assert_false(syntax_is_media_type(NULL));
    char long_type[300];
    memset(long_type, 'a', sizeof long_type);
    long_type[127] = '/';
    long_type[255] = '\0';
    assert_true(syntax_is_media_type(long_type)); /* 127 / 127 */
    long_type[127] = 'a';
    long_type[128] = '/';
    assert_false(syntax_is_media_type(long_type)); /* a type of 128 */
}

/* ------------------------------------------------------------ case command table */

enum case_op {
    OP_UNSET,
    OP_OPEN,
    OP_INVITE,
    OP_ACCEPT,
    OP_DECLINE,
    OP_LEAVE,
    OP_NOTE,
    OP_ATTACH,
    OP_CLOSE,
    OP_REOPEN,
    OP_LINK,
};

enum case_field {
    C_NONE,
    C_ACTOR,
    C_ON_BEHALF,
    C_CASE_ID,
    C_CASE_TYPE,
    C_AREA,
    C_SUBJECT,
    C_TITLE,
    C_POSTCODE,
    C_HOUSE_NUMBER, /* number; -1 absent */
    C_NO_ADDRESS,
    C_PARTNER, /* invite / leave */
    C_TEXT,    /* note text */
    C_FIELD_NAME,
    C_FIELD_VALUE,
    C_FIELD_COUNT, /* number of distinct valid fields */
    C_ATTACH_NAME,
    C_MEDIA_TYPE,
    C_CONTENT,  /* number: bytes; -1 absent */
    C_REASON,   /* close / reopen */
    C_ITEM_SEQ, /* number; -1 absent */
};

struct case_row {
    const char *name;
    enum case_op op;
    enum case_field field;
    const char *value; /* NULL: field absent */
    size_t repeat;
    int64_t number;
    Schakel__Reason reason;
    const char *fragment;
};

static const struct case_row case_rows[] = {
    /* every operation as the fixture builds it */
    {"open", OP_OPEN, C_NONE, NULL, 0, 0, OK, NULL},
    {"invite", OP_INVITE, C_NONE, NULL, 0, 0, OK, NULL},
    {"accept", OP_ACCEPT, C_NONE, NULL, 0, 0, OK, NULL},
    {"decline", OP_DECLINE, C_NONE, NULL, 0, 0, OK, NULL},
    {"leave", OP_LEAVE, C_NONE, NULL, 0, 0, OK, NULL},
    {"note", OP_NOTE, C_NONE, NULL, 0, 0, OK, NULL},
    {"attach", OP_ATTACH, C_NONE, NULL, 0, 0, OK, NULL},
    {"close", OP_CLOSE, C_NONE, NULL, 0, 0, OK, NULL},
    {"reopen", OP_REOPEN, C_NONE, NULL, 0, 0, OK, NULL},
    {"link", OP_LINK, C_NONE, NULL, 0, 0, OK, NULL},
    {"no operation", OP_UNSET, C_NONE, NULL, 0, 0, R(INVALID_MESSAGE), "names no operation"},
    /* actor and on_behalf_of */
    {"actor absent", OP_NOTE, C_ACTOR, NULL, 0, 0, R(INVALID_MESSAGE), "no actor"},
    {"actor partner only", OP_NOTE, C_ACTOR, "riec", 0, 0, R(INVALID_FIELD), "principal id"},
    {"actor capital", OP_NOTE, C_ACTOR, "RIEC/j.jansen", 0, 0, R(INVALID_FIELD), "principal id"},
    {"actor empty", OP_NOTE, C_ACTOR, "", 0, 0, R(INVALID_FIELD), "empty"},
    {"actor 130 bytes", OP_NOTE, C_ACTOR, "a", 130, 0, R(INVALID_FIELD), "at most 129"},
    {"on behalf absent", OP_NOTE, C_ON_BEHALF, NULL, 0, 0, OK, NULL},
    {"on behalf principal", OP_INVITE, C_ON_BEHALF, "riec/x", 0, 0, R(INVALID_FIELD),
     "on_behalf_of is not a partner id"},
    {"on behalf empty", OP_INVITE, C_ON_BEHALF, "", 0, 0, R(INVALID_FIELD), "empty"},
    /* case_id */
    {"case id absent", OP_NOTE, C_CASE_ID, NULL, 0, 0, R(INVALID_MESSAGE), "no case_id"},
    {"case id seven digits", OP_NOTE, C_CASE_ID, "C-0000042", 0, 0, R(INVALID_FIELD),
     "case_id is not a case id"},
    {"case id lower case", OP_ACCEPT, C_CASE_ID, "c-00000042", 0, 0, R(INVALID_FIELD),
     "not a case id"},
    {"case id given to open", OP_OPEN, C_CASE_ID, "C-00000042", 0, 0, R(INVALID_FIELD),
     "open names no case_id"},
    /* open */
    {"open type absent", OP_OPEN, C_CASE_TYPE, NULL, 0, 0, R(INVALID_MESSAGE), "no open.case_type"},
    {"open type capital", OP_OPEN, C_CASE_TYPE, "Ondermijning", 0, 0, R(INVALID_FIELD),
     "open.case_type is not a case type id"},
    {"open type 65", OP_OPEN, C_CASE_TYPE, "t", 65, 0, R(INVALID_FIELD), "case_type"},
    {"open area absent", OP_OPEN, C_AREA, NULL, 0, 0, R(INVALID_MESSAGE), "no open.area"},
    {"open area wrong", OP_OPEN, C_AREA, "GM935", 0, 0, R(INVALID_AREA), "open.area is not a CBS"},
    {"open area BU letters", OP_OPEN, C_AREA, "BU0363AF09", 0, 0, OK, NULL},
    {"open subject absent", OP_OPEN, C_SUBJECT, NULL, 0, 0, OK, NULL},
    {"open subject BSN", OP_OPEN, C_SUBJECT, "123456782", 0, 0, R(INVALID_FIELD), "never a BSN"},
    {"open subject 65", OP_OPEN, C_SUBJECT, "p", 65, 0, R(INVALID_FIELD), "at most 64"},
    {"open title absent", OP_OPEN, C_TITLE, NULL, 0, 0, OK, NULL},
    {"open title 200", OP_OPEN, C_TITLE, "t", 200, 0, OK, NULL},
    {"open title 201", OP_OPEN, C_TITLE, "t", 201, 0, R(INVALID_FIELD), "open.title is 201 bytes"},
    {"open title newline", OP_OPEN, C_TITLE, "Adres\nMaastricht", 0, 0, R(INVALID_FIELD),
     "control"},
    {"open title empty", OP_OPEN, C_TITLE, "", 0, 0, R(INVALID_FIELD), "empty"},
    {"open without address", OP_OPEN, C_NO_ADDRESS, NULL, 0, 0, OK, NULL},
    {"open postcode SS", OP_OPEN, C_POSTCODE, "6211SS", 0, 0, R(INVALID_POSTCODE), "postcode"},
    {"open postcode absent", OP_OPEN, C_POSTCODE, NULL, 0, 0, R(INVALID_POSTCODE), "no postcode"},
    {"open house number 0", OP_OPEN, C_HOUSE_NUMBER, NULL, 0, 0, R(INVALID_FIELD), "house_number"},
    {"open house number absent", OP_OPEN, C_HOUSE_NUMBER, NULL, 0, -1, R(INVALID_FIELD),
     "house_number"},
    /* invite and leave */
    {"invite partner absent", OP_INVITE, C_PARTNER, NULL, 0, 0, R(INVALID_MESSAGE),
     "no invite.partner"},
    {"invite principal", OP_INVITE, C_PARTNER, "politie/x", 0, 0, R(INVALID_FIELD),
     "invite.partner is not a partner id"},
    {"invite partner 65", OP_INVITE, C_PARTNER, "p", 65, 0, R(INVALID_FIELD), "partner"},
    {"leave self", OP_LEAVE, C_PARTNER, NULL, 0, 0, OK, NULL},
    {"leave partner capital", OP_LEAVE, C_PARTNER, "Politie", 0, 0, R(INVALID_FIELD),
     "leave.partner is not a partner id"},
    /* note */
    {"note text absent, fields present", OP_NOTE, C_TEXT, NULL, 0, 0, OK, NULL},
    {"note neither text nor fields", OP_NOTE, C_FIELD_COUNT, NULL, 0, 0, OK, NULL},
    {"note text 8000", OP_NOTE, C_TEXT, "n", 8000, 0, OK, NULL},
    {"note text 8001", OP_NOTE, C_TEXT, "n", 8001, 0, R(INVALID_FIELD), "note.text is 8001 bytes"},
    {"note text tab and newlines", OP_NOTE, C_TEXT, "a\tb\r\nc", 0, 0, OK, NULL},
    {"note text escape", OP_NOTE, C_TEXT, "\x1b[2J", 0, 0, R(INVALID_FIELD), "control"},
    {"note text C1", OP_NOTE, C_TEXT,
     "x\xc2\x9b"
     "2J",
     0, 0, R(INVALID_FIELD), "control"},
    {"note text bad utf-8", OP_NOTE, C_TEXT, "\xc0\xaf", 0, 0, R(INVALID_FIELD), "UTF-8"},
    {"note text empty", OP_NOTE, C_TEXT, "", 0, 0, R(INVALID_FIELD), "empty"},
    {"note 32 fields", OP_NOTE, C_FIELD_COUNT, NULL, 0, 32, OK, NULL},
    {"note 33 fields", OP_NOTE, C_FIELD_COUNT, NULL, 0, 33, R(INVALID_FIELD),
     "note.fields has 33 entries; at most 32"},
    {"note field name absent", OP_NOTE, C_FIELD_NAME, NULL, 0, 0, R(INVALID_MESSAGE),
     "no note.fields[1].name"},
    {"note field name capital", OP_NOTE, C_FIELD_NAME, "Financieel", 0, 0, R(INVALID_FIELD),
     "note.fields[1].name is not a field name"},
    {"note field name reserved text", OP_NOTE, C_FIELD_NAME, "text", 0, 0, R(INVALID_FIELD),
     "reserved"},
    {"note field name reserved attachments", OP_NOTE, C_FIELD_NAME, "attachments", 0, 0,
     R(INVALID_FIELD), "reserved"},
    {"note field name repeated", OP_NOTE, C_FIELD_NAME, "financieel", 0, 0, R(INVALID_FIELD),
     "note.fields[1].name repeats note.fields[0].name"},
    {"note field name 65", OP_NOTE, C_FIELD_NAME, "f", 65, 0, R(INVALID_FIELD), "fields[1].name"},
    {"note field value absent", OP_NOTE, C_FIELD_VALUE, NULL, 0, 0, R(INVALID_MESSAGE),
     "no note.fields[1].value"},
    {"note field value 2000", OP_NOTE, C_FIELD_VALUE, "v", 2000, 0, OK, NULL},
    {"note field value 2001", OP_NOTE, C_FIELD_VALUE, "v", 2001, 0, R(INVALID_FIELD),
     "note.fields[1].value is 2001 bytes"},
    {"note field value bell", OP_NOTE, C_FIELD_VALUE, "a\x07", 0, 0, R(INVALID_FIELD), "control"},
    {"note field value empty", OP_NOTE, C_FIELD_VALUE, "", 0, 0, R(INVALID_FIELD), "empty"},
    /* attach */
    {"attach name absent", OP_ATTACH, C_ATTACH_NAME, NULL, 0, 0, R(INVALID_MESSAGE),
     "no attach.name"},
    {"attach name 128", OP_ATTACH, C_ATTACH_NAME, "a", 128, 0, OK, NULL},
    {"attach name 129", OP_ATTACH, C_ATTACH_NAME, "a", 129, 0, R(INVALID_FIELD),
     "attach.name is 129 bytes"},
    {"attach name with slash", OP_ATTACH, C_ATTACH_NAME, "../etc/passwd", 0, 0, R(INVALID_FIELD),
     "without a path"},
    {"attach name with backslash", OP_ATTACH, C_ATTACH_NAME, "C:\\rapport.pdf", 0, 0,
     R(INVALID_FIELD), "without a path"},
    {"attach name dot dot", OP_ATTACH, C_ATTACH_NAME, "..", 0, 0, R(INVALID_FIELD),
     "without a path"},
    {"attach name accents and spaces", OP_ATTACH, C_ATTACH_NAME,
     "Proces-verbaal \xc3\xa9\xc3\xa9n.pdf", 0, 0, OK, NULL},
    {"attach name newline", OP_ATTACH, C_ATTACH_NAME, "a\nb.pdf", 0, 0, R(INVALID_FIELD),
     "control"},
    {"attach media type absent", OP_ATTACH, C_MEDIA_TYPE, NULL, 0, 0, R(INVALID_MESSAGE),
     "no attach.media_type"},
    {"attach media type parameters", OP_ATTACH, C_MEDIA_TYPE, "text/plain;charset=utf-8", 0, 0,
     R(INVALID_FIELD), "attach.media_type is not a media type"},
    {"attach media type bare", OP_ATTACH, C_MEDIA_TYPE, "pdf", 0, 0, R(INVALID_FIELD),
     "media type"},
    {"attach content absent", OP_ATTACH, C_CONTENT, NULL, 0, -1, R(INVALID_MESSAGE),
     "no attach.content"},
    {"attach content empty", OP_ATTACH, C_CONTENT, NULL, 0, 0, R(INVALID_FIELD),
     "attach.content is 0 bytes"},
    {"attach content at limit", OP_ATTACH, C_CONTENT, NULL, 0, SCHAKEL_MAX_ATTACHMENT_BYTES, OK,
     NULL},
    {"attach content over limit", OP_ATTACH, C_CONTENT, NULL, 0, SCHAKEL_MAX_ATTACHMENT_BYTES + 1,
     R(INVALID_FIELD), "attach.content is 131073 bytes"},
    /* close, reopen, link */
    {"close reason absent", OP_CLOSE, C_REASON, NULL, 0, 0, R(INVALID_MESSAGE), "no close.reason"},
    {"close reason 1000", OP_CLOSE, C_REASON, "r", 1000, 0, OK, NULL},
    {"close reason 1001", OP_CLOSE, C_REASON, "r", 1001, 0, R(INVALID_FIELD),
     "close.reason is 1001 bytes"},
    {"close reason escape", OP_CLOSE, C_REASON, "\x1b]0;x\x07", 0, 0, R(INVALID_FIELD), "control"},
    {"reopen reason absent", OP_REOPEN, C_REASON, NULL, 0, 0, OK, NULL},
    {"reopen reason 1001", OP_REOPEN, C_REASON, "r", 1001, 0, R(INVALID_FIELD), "reopen.reason"},
    {"link item seq absent", OP_LINK, C_ITEM_SEQ, NULL, 0, -1, R(INVALID_MESSAGE),
     "no link_signal.item_seq"},
    {"link item seq 0", OP_LINK, C_ITEM_SEQ, NULL, 0, 0, R(INVALID_FIELD), "item seqs start at 1"},
    {"link item seq max", OP_LINK, C_ITEM_SEQ, NULL, 0, INT64_MAX, OK, NULL},
};

struct case_fixture {
    Schakel__CaseCommand command;
    Schakel__CaseOpen open;
    Schakel__Address address;
    Schakel__CaseInvite invite;
    Schakel__CaseAnswer answer;
    Schakel__CaseLeave leave;
    Schakel__CaseNote note;
    Schakel__NoteField fields[40];
    Schakel__NoteField *field_pointers[40];
    char field_names[40][16];
    Schakel__CaseAttach attach;
    Schakel__CaseClose close;
    Schakel__CaseReopen reopen;
    Schakel__CaseLinkSignal link;
    uint8_t *content;
    char value[8192];
};

static void case_fixture_init(struct case_fixture *f, enum case_op op)
{
    static char actor[] = "riec/j.jansen", lead[] = "riec", case_id[] = "C-00000042",
                type[] = "ondermijning-adres", area[] = "BU09350101", subject[] = "psn:4f9a2c77",
                title[] = "Hennepteelt Brusselsestraat", postcode[] = "6211AB",
                politie[] = "politie", text[] = "Bezoek afgelegd;\nniemand thuis.",
                financieel[] = "financieel", bedrag[] = "EUR 12.000 contant",
                strafrechtelijk[] = "strafrechtelijk", antecedenten[] = "geen",
                file_name[] = "proces-verbaal.pdf", media_type[] = "application/pdf",
                reason[] = "Pand ontruimd; afspraken nagekomen";
    static uint8_t pdf[] = "%PDF-1.7 ...";
    memset(f, 0, sizeof *f);
    schakel__case_command__init(&f->command);
    f->command.actor = actor;
    f->command.on_behalf_of = lead;
    f->command.case_id = op == OP_OPEN ? NULL : case_id;
    switch (op) {
    case OP_OPEN:
        schakel__case_open__init(&f->open);
        schakel__address__init(&f->address);
        f->address.postcode = postcode;
        f->address.has_house_number = 1;
        f->address.house_number = 12;
        f->open.case_type = type;
        f->open.area = area;
        f->open.subject = subject;
        f->open.title = title;
        f->open.address = &f->address;
        f->command.op_case = SCHAKEL__CASE_COMMAND__OP_OPEN;
        f->command.open = &f->open;
        break;
    case OP_INVITE:
        schakel__case_invite__init(&f->invite);
        f->invite.partner = politie;
        f->command.op_case = SCHAKEL__CASE_COMMAND__OP_INVITE;
        f->command.invite = &f->invite;
        break;
    case OP_ACCEPT:
    case OP_DECLINE:
        schakel__case_answer__init(&f->answer);
        f->command.on_behalf_of = NULL;
        f->command.op_case =
            op == OP_ACCEPT ? SCHAKEL__CASE_COMMAND__OP_ACCEPT : SCHAKEL__CASE_COMMAND__OP_DECLINE;
        if (op == OP_ACCEPT)
            f->command.accept = &f->answer;
        else
            f->command.decline = &f->answer;
        break;
    case OP_LEAVE:
        schakel__case_leave__init(&f->leave);
        f->leave.partner = politie;
        f->command.op_case = SCHAKEL__CASE_COMMAND__OP_LEAVE;
        f->command.leave = &f->leave;
        break;
    case OP_NOTE:
        schakel__case_note__init(&f->note);
        for (size_t i = 0; i < 40; i++) {
            schakel__note_field__init(&f->fields[i]);
            f->field_pointers[i] = &f->fields[i];
        }
        f->fields[0].name = financieel;
        f->fields[0].value = bedrag;
        f->fields[1].name = strafrechtelijk;
        f->fields[1].value = antecedenten;
        f->note.text = text;
        f->note.fields = f->field_pointers;
        f->note.n_fields = 2;
        f->command.op_case = SCHAKEL__CASE_COMMAND__OP_NOTE;
        f->command.note = &f->note;
        break;
    case OP_ATTACH:
        schakel__case_attach__init(&f->attach);
        f->attach.name = file_name;
        f->attach.media_type = media_type;
        f->attach.has_content = 1;
        f->attach.content.data = pdf;
        f->attach.content.len = sizeof pdf - 1;
        f->command.op_case = SCHAKEL__CASE_COMMAND__OP_ATTACH;
        f->command.attach = &f->attach;
        break;
    case OP_CLOSE:
        schakel__case_close__init(&f->close);
        f->close.reason = reason;
        f->command.op_case = SCHAKEL__CASE_COMMAND__OP_CLOSE;
        f->command.close = &f->close;
        break;
    case OP_REOPEN:
        schakel__case_reopen__init(&f->reopen);
        f->reopen.reason = reason;
        f->command.op_case = SCHAKEL__CASE_COMMAND__OP_REOPEN;
        f->command.reopen = &f->reopen;
        break;
    case OP_LINK:
        schakel__case_link_signal__init(&f->link);
        f->link.has_item_seq = 1;
        f->link.item_seq = 55;
        f->command.op_case = SCHAKEL__CASE_COMMAND__OP_LINK_SIGNAL;
        f->command.link_signal = &f->link;
        break;
    case OP_UNSET:
        break;
    }
}

static char *case_row_value(struct case_fixture *f, const struct case_row *row)
{
    if (row->value == NULL)
        return NULL;
    size_t unit = strlen(row->value), count = row->repeat ? row->repeat : 1;
    assert_true(unit * count < sizeof f->value);
    for (size_t i = 0; i < count; i++)
        memcpy(f->value + i * unit, row->value, unit);
    f->value[unit * count] = '\0';
    return f->value;
}

static char **case_string_slot(struct case_fixture *f, enum case_field field)
{
    char **slots[] = {
        [C_ACTOR] = &f->command.actor,
        [C_ON_BEHALF] = &f->command.on_behalf_of,
        [C_CASE_ID] = &f->command.case_id,
        [C_CASE_TYPE] = &f->open.case_type,
        [C_AREA] = &f->open.area,
        [C_SUBJECT] = &f->open.subject,
        [C_TITLE] = &f->open.title,
        [C_POSTCODE] = &f->address.postcode,
        [C_TEXT] = &f->note.text,
        [C_FIELD_NAME] = &f->fields[1].name,
        [C_FIELD_VALUE] = &f->fields[1].value,
        [C_ATTACH_NAME] = &f->attach.name,
        [C_MEDIA_TYPE] = &f->attach.media_type,
    };
    return (size_t)field < sizeof slots / sizeof slots[0] ? slots[field] : NULL;
}

static void case_apply_row(struct case_fixture *f, const struct case_row *row)
{
    char **slot = case_string_slot(f, row->field);
    if (slot != NULL) {
        *slot = case_row_value(f, row);
        return;
    }
    switch (row->field) {
    case C_PARTNER:
        if (row->op == OP_INVITE)
            f->invite.partner = case_row_value(f, row);
        else
            f->leave.partner = case_row_value(f, row);
        break;
    case C_HOUSE_NUMBER:
        f->address.has_house_number = row->number >= 0;
        f->address.house_number = row->number >= 0 ? (uint32_t)row->number : 0;
        break;
    case C_NO_ADDRESS:
        f->open.address = NULL;
        break;
    case C_FIELD_COUNT:
        /* 0 fields: the note keeps its text */
        for (int64_t i = 0; i < row->number; i++) {
            snprintf(f->field_names[i], sizeof f->field_names[i], "veld-%d", (int)i);
            f->fields[i].name = f->field_names[i];
            f->fields[i].value = f->field_names[i];
        }
        f->note.n_fields = (size_t)row->number;
        break;
    case C_CONTENT:
        f->attach.has_content = row->number >= 0;
        f->content = calloc(1, row->number > 0 ? (size_t)row->number : 1);
        assert_non_null(f->content);
        f->attach.content.data = f->content;
        f->attach.content.len = row->number > 0 ? (size_t)row->number : 0;
        break;
    case C_REASON:
        if (row->op == OP_CLOSE)
            f->close.reason = case_row_value(f, row);
        else
            f->reopen.reason = case_row_value(f, row);
        break;
    case C_ITEM_SEQ:
        f->link.has_item_seq = row->number >= 0;
        f->link.item_seq = row->number >= 0 ? (uint64_t)row->number : 0;
        break;
    default: /* C_NONE */
        break;
    }
}

static void test_case_command_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof case_rows / sizeof case_rows[0]; i++) {
        const struct case_row *row = &case_rows[i];
        struct case_fixture f;
        case_fixture_init(&f, row->op);
        case_apply_row(&f, row);

        wire_error_t err;
        memset(&err, 0x5a, sizeof err);
        int rc = wire_validate_case_command(&f.command, &err);
        expect_error(row->name, &err, row->reason, row->fragment);
        if (rc != (row->reason == OK ? 0 : -1))
            fail_msg("%s: validate returned %d", row->name, rc);
        if (row->value != NULL && row->reason != OK && strlen(f.value) >= 6 &&
            strstr(err.text, f.value) != NULL && row->field != C_FIELD_NAME)
            fail_msg("%s: text \"%s\" echoes the value", row->name, err.text);

        /* the same verdict from the packed bytes */
        size_t len = 0;
        uint8_t *buf = wire_encode_case_command(&f.command, &len);
        assert_non_null(buf);
        wire_error_t decode_err;
        memset(&decode_err, 0x5a, sizeof decode_err);
        Schakel__CaseCommand *decoded = wire_decode_case_command(buf, len, &decode_err);
        expect_error(row->name, &decode_err, row->reason, row->fragment);
        assert_true((decoded != NULL) == (row->reason == OK));
        if (decoded != NULL) {
            assert_int_equal(decoded->op_case, f.command.op_case);
            assert_string_equal(decoded->actor, f.command.actor);
        }
        wire_case_command_free(&decoded);
        assert_null(decoded);
        free(buf);
        free(f.content);
    }
}

/* ------------------------------------------------------- raw case commands */

struct raw_case_row {
    const char *name;
    const char *hex;
    Schakel__Reason reason;
    const char *fragment;
};

/* CaseCommand keys: 1 actor 0x0a, 3 case_id 0x1a, 11 invite 0x5a, 12
 * accept 0x62, 13 decline 0x6a, 15 note 0x7a, 16 attach 0x82 01. */
#define ACTOR_AB "0a 03 61 2f 62" /* actor "a/b" */
#define CASE_ID_42 "1a 0a " CASE42

static const struct raw_case_row raw_case_rows[] = {
    {"accept", ACTOR_AB " " CASE_ID_42 " 62 00", OK, NULL},
    {"accept and decline", ACTOR_AB " " CASE_ID_42 " 62 00 6a 00", R(INVALID_MESSAGE),
     "a case command carries one operation"},
    {"accept twice", ACTOR_AB " " CASE_ID_42 " 62 00 62 00", R(INVALID_MESSAGE),
     "CaseCommand.accept is given more than once"},
    {"actor twice", ACTOR_AB " " ACTOR_AB " " CASE_ID_42 " 62 00", R(INVALID_MESSAGE),
     "CaseCommand.actor is given more than once"},
    {"unknown field 9", ACTOR_AB " " CASE_ID_42 " 62 00 48 01", R(INVALID_MESSAGE),
     "CaseCommand carries unknown field 9"},
    {"unknown field in invite", ACTOR_AB " " CASE_ID_42 " 5a 02 10 01", R(INVALID_MESSAGE),
     "CaseInvite carries unknown field 2"},
    {"unknown field in answer", ACTOR_AB " " CASE_ID_42 " 62 02 08 01", R(INVALID_MESSAGE),
     "CaseAnswer carries unknown field 1"},
    {"actor with NUL", "0a 03 61 00 62 " CASE_ID_42 " 62 00", R(INVALID_FIELD),
     "CaseCommand.actor contains a NUL byte"},
    {"note text invalid", ACTOR_AB " " CASE_ID_42 " 7a 03 0a 01 ff", R(INVALID_FIELD),
     "CaseNote.text is not valid UTF-8"},
    {"note field name NUL", ACTOR_AB " " CASE_ID_42 " 7a 07 12 05 0a 03 61 00 62", R(INVALID_FIELD),
     "NoteField.name contains a NUL byte"},
    {"attach content any bytes",
     ACTOR_AB " " CASE_ID_42 " 82 01 0d 0a 01 61 12 03 61 2f 62 1a 03 00 ff 00", OK, NULL},
    {"no operation", ACTOR_AB " " CASE_ID_42, R(INVALID_MESSAGE), "names no operation"},
    {"garbage", "ff ff", R(INVALID_MESSAGE), "not a valid Schakel CaseCommand"},
    {"empty", "", R(INVALID_MESSAGE), "case command is empty"},
};

static void test_raw_case_command_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof raw_case_rows / sizeof raw_case_rows[0]; i++) {
        const struct raw_case_row *row = &raw_case_rows[i];
        struct bytes b = {0};
        bytes_hex(&b, row->hex);
        uint8_t *exact = malloc(b.len ? b.len : 1);
        assert_non_null(exact);
        if (b.len)
            memcpy(exact, b.data, b.len);
        wire_error_t err;
        Schakel__CaseCommand *command = wire_decode_case_command(exact, b.len, &err);
        expect_error(row->name, &err, row->reason, row->fragment);
        assert_true((command != NULL) == (row->reason == OK));
        wire_case_command_free(&command);
        free(exact);
        bytes_free(&b);
    }
    wire_case_command_free(NULL);
    wire_error_t err;
    assert_int_equal(wire_validate_case_command(NULL, &err), -1);
    assert_int_equal(err.reason, R(INVALID_MESSAGE));
    /* larger than any frame */
    static uint8_t huge[SCHAKEL_MAX_FRAME_BYTES + 1];
    assert_null(wire_decode_case_command(huge, sizeof huge, &err));
    expect_error("case command over the frame limit", &err, R(INVALID_FIELD), "at most 262144");
}

/* ---------------------------------------------------------- raw case events */

/* CaseEvent keys: 1 case_id 0x0a, 3 event_seq 0x18, 4 kind 0x20, 11 text
 * 0x5a, 12 fields 0x62, 30 unknown 0xf0 01. */
static const struct raw_case_row raw_event_rows[] = {
    {"note event", "0a 0a " CASE42 " 18 03 20 06 5a 02 68 69", OK, NULL},
    {"opened event", "0a 0a " CASE42 " 18 01 20 01", OK, NULL},
    {"no kind", "0a 0a " CASE42 " 18 01", R(INVALID_MESSAGE), "case event has no kind"},
    {"kind none", "0a 0a " CASE42 " 18 01 20 00", R(INVALID_MESSAGE), "has no kind"},
    {"kind 99", "0a 0a " CASE42 " 18 01 20 63", R(INVALID_FIELD),
     "CaseEvent.kind has the unknown value 99"},
    {"no event seq", "0a 0a " CASE42 " 20 01", R(INVALID_MESSAGE), "no event_seq"},
    {"event seq 0", "0a 0a " CASE42 " 18 00 20 01", R(INVALID_MESSAGE), "no event_seq"},
    {"no case id", "18 01 20 01", R(INVALID_MESSAGE), "no valid case_id"},
    {"bad case id", "0a 03 43 2d 31 18 01 20 01", R(INVALID_MESSAGE), "no valid case_id"},
    {"unknown field 30", "0a 0a " CASE42 " 18 01 20 01 f0 01 01", R(INVALID_MESSAGE),
     "CaseEvent carries unknown field 30"},
    {"text with NUL", "0a 0a " CASE42 " 18 01 20 06 5a 02 61 00", R(INVALID_FIELD),
     "CaseEvent.text contains a NUL byte"},
    {"field value invalid", "0a 0a " CASE42 " 18 01 20 06 62 05 0a 01 61 12 00 62 03 12 01 ff",
     R(INVALID_FIELD), "NoteField.value is not valid UTF-8"},
    {"empty", "", R(INVALID_MESSAGE), "case event is empty"},
};

static void test_raw_case_event_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof raw_event_rows / sizeof raw_event_rows[0]; i++) {
        const struct raw_case_row *row = &raw_event_rows[i];
        struct bytes b = {0};
        bytes_hex(&b, row->hex);
        uint8_t *exact = malloc(b.len ? b.len : 1);
        assert_non_null(exact);
        if (b.len)
            memcpy(exact, b.data, b.len);
        wire_error_t err;
        Schakel__CaseEvent *event = wire_decode_case_event(exact, b.len, &err);
        expect_error(row->name, &err, row->reason, row->fragment);
        assert_true((event != NULL) == (row->reason == OK));
        if (event != NULL)
            assert_string_equal(event->case_id, "C-00000042");
        wire_case_event_free(&event);
        free(exact);
        bytes_free(&b);
    }
    wire_case_event_free(NULL);
}

/* A CaseEvent packed and decoded again is the same event. */
static void test_case_event_round_trip(void **state)
{
    (void)state;
    static char case_id[] = "C-00000007", type[] = "zorg-persoon", actor[] = "vhh/coordinator",
                lead[] = "veiligheidshuis", riec[] = "riec", name[] = "zorg", value[] = "ja";
    char *members[] = {lead, riec};
    Schakel__NoteField field = SCHAKEL__NOTE_FIELD__INIT;
    Schakel__NoteField *fields[] = {&field};
    Schakel__CaseEvent event = SCHAKEL__CASE_EVENT__INIT;
    field.name = name;
    field.value = value;
    event.case_id = case_id;
    event.case_type = type;
    event.has_event_seq = event.has_kind = event.has_at = 1;
    event.event_seq = 3;
    event.kind = SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_NOTE;
    event.at = NOW;
    event.actor = actor;
    event.on_behalf_of = lead;
    event.lead = lead;
    event.members = members;
    event.n_members = 2;
    event.fields = fields;
    event.n_fields = 1;
    size_t len = 0;
    uint8_t *buf = wire_encode_case_event(&event, &len);
    assert_non_null(buf);
    wire_error_t err;
    Schakel__CaseEvent *decoded = wire_decode_case_event(buf, len, &err);
    expect_error("event round trip", &err, OK, NULL);
    assert_non_null(decoded);
    assert_string_equal(decoded->case_type, type);
    assert_int_equal(decoded->event_seq, 3);
    assert_int_equal(decoded->kind, SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_NOTE);
    assert_int_equal(decoded->n_members, 2);
    assert_string_equal(decoded->members[1], riec);
    assert_int_equal(decoded->n_fields, 1);
    assert_string_equal(decoded->fields[0]->value, value);
    assert_null(decoded->text);
    wire_case_event_free(&decoded);
    free(buf);
    size_t ignored = 0;
    assert_null(wire_encode_case_event(NULL, &ignored));
    assert_null(wire_encode_case_command(NULL, &ignored));
}

/* ------------------------------------------------------- case publish frames */

struct case_publish_row {
    const char *name;
    int id_len;      /* -1 absent */
    int command_len; /* -1 absent */
    int sig_len;     /* -1 absent */
    Schakel__Reason reason;
    int names_id;
    const char *fragment;
};

static const struct case_publish_row case_publish_rows[] = {
    {"valid", 16, 40, 64, OK, 1, NULL},
    {"command at the largest size a frame holds", 16, 262000, 64, OK, 1, NULL},
    {"no command id", -1, 40, 64, R(INVALID_MESSAGE), 0, "case_publish has no command_id"},
    {"command id 15 bytes", 15, 40, 64, R(INVALID_FIELD), 0, "command_id is 15 bytes"},
    {"command id 17 bytes", 17, 40, 64, R(INVALID_FIELD), 0, "command_id is 17 bytes"},
    {"no command", 16, -1, 64, R(INVALID_MESSAGE), 1, "carries no command"},
    {"empty command", 16, 0, 64, R(INVALID_MESSAGE), 1, "carries no command"},
    {"no signature", 16, 40, -1, R(BAD_SIGNATURE), 1, "carries no signature"},
    {"signature 63 bytes", 16, 40, 63, R(BAD_SIGNATURE), 1, "signature is not 64 bytes"},
    {"signature 65 bytes", 16, 40, 65, R(BAD_SIGNATURE), 1, "signature is not 64 bytes"},
};

static void test_case_publish_table(void **state)
{
    (void)state;
    static uint8_t zeros[262144];
    for (size_t i = 0; i < sizeof case_publish_rows / sizeof case_publish_rows[0]; i++) {
        const struct case_publish_row *row = &case_publish_rows[i];
        uint8_t id[32];
        for (size_t k = 0; k < sizeof id; k++)
            id[k] = (uint8_t)(0xa0 + k);
        struct bytes body = {0}, frame = {0};
        if (row->id_len >= 0)
            bytes_field(&body, 1, id, (size_t)row->id_len);
        if (row->command_len >= 0)
            bytes_field(&body, 2, zeros, (size_t)row->command_len);
        if (row->sig_len >= 0)
            bytes_field(&body, 3, zeros, (size_t)row->sig_len);
        bytes_hex(&frame, "08 01");
        bytes_field(&frame, 32, body.data, body.len);
        wire_error_t err;
        Schakel__Frame *decoded = wire_decode_frame(frame.data, frame.len, &err);
        expect_error(row->name, &err, row->reason, row->fragment);
        assert_int_equal(err.has_message_id, row->names_id);
        if (row->names_id)
            assert_memory_equal(err.message_id, id, 16);
        if (row->reason == OK) {
            assert_non_null(decoded);
            assert_int_equal(decoded->body_case, SCHAKEL__FRAME__BODY_CASE_PUBLISH);
            assert_int_equal(decoded->case_publish->command.len, (size_t)row->command_len);
        } else {
            assert_null(decoded);
        }
        wire_frame_free(&decoded);
        bytes_free(&body);
        bytes_free(&frame);
    }
}

/* A CasePublish signs exactly what a one-item Publish of the command bytes
 * would: same signed bytes, same idempotency hash. */
static void test_case_signed_bytes_and_hash(void **state)
{
    (void)state;
    uint8_t id[16], command[100], signature[64];
    for (size_t i = 0; i < sizeof id; i++)
        id[i] = (uint8_t)i;
    for (size_t i = 0; i < sizeof command; i++)
        command[i] = (uint8_t)(i * 7);
    memset(signature, 0x33, sizeof signature);

    /* the root of one item, by hand: H(0x00 || command) */
    uint8_t leaf_input[1 + sizeof command], root[32], expected[64], got[64];
    leaf_input[0] = 0x00;
    memcpy(leaf_input + 1, command, sizeof command);
    crypto_generichash(root, 32, leaf_input, sizeof leaf_input, NULL, 0);
    memcpy(expected, "schakel-publish1", 16);
    memcpy(expected + 16, id, 16);
    memcpy(expected + 32, root, 32);
    wire_case_signed_bytes(id, command, sizeof command, got);
    assert_memory_equal(got, expected, 64);
    /* one changed byte of the command changes the signed bytes */
    command[50] ^= 1;
    wire_case_signed_bytes(id, command, sizeof command, got);
    assert_memory_not_equal(got, expected, 64);
    command[50] ^= 1;

    Schakel__CasePublish case_publish = SCHAKEL__CASE_PUBLISH__INIT;
    case_publish.has_command_id = case_publish.has_command = case_publish.has_signature = 1;
    case_publish.command_id.data = id;
    case_publish.command_id.len = sizeof id;
    case_publish.command.data = command;
    case_publish.command.len = sizeof command;
    case_publish.signature.data = signature;
    case_publish.signature.len = sizeof signature;
    ProtobufCBinaryData item = {sizeof command, command};
    Schakel__Publish publish = SCHAKEL__PUBLISH__INIT;
    publish.has_message_id = publish.has_signature = 1;
    publish.message_id = case_publish.command_id;
    publish.n_items = 1;
    publish.items = &item;
    publish.signature = case_publish.signature;
    uint8_t case_hash[32], publish_hash[32];
    wire_case_publish_hash(&case_publish, case_hash);
    wire_publish_hash(&publish, publish_hash);
    assert_memory_equal(case_hash, publish_hash, 32);
    signature[0] ^= 1; /* another signature: another content hash */
    wire_case_publish_hash(&case_publish, case_hash);
    assert_memory_not_equal(case_hash, publish_hash, 32);
}

/* The test vector of docs/PROTOCOL.md section 12.3, computed there with
 * Python protobuf and PyNaCl: the same bytes from this codec. */
static void test_case_publish_vector(void **state)
{
    (void)state;
    static const char command_hex[] =
        "0a0c726965632f616e616c6973741a0a432d30303030303034327a2b0a0f42657a6f656b20616667656c6567"
        "6412180a0a66696e616e636965656c120a4555522031322e303030";
    static const char signed_hex[] =
        "736368616b656c2d7075626c69736831000102030405060708090a0b0c0d0e0f2cd22f4c95bd294d5ac8f626"
        "99f556784e0107d50a65c6048f3541c4a68b2089";
    static const char signature_hex[] =
        "414fa7fdb219c6950ccc51cce9d9adef76746103d07b7e1c2f67659f44d5b5debec9a2945490a9d1577db412"
        "72540faf6217f6922b81c82701517495dcafcd04";
    static char actor[] = "riec/analist", case_id[] = "C-00000042", text[] = "Bezoek afgelegd",
                name[] = "financieel", value[] = "EUR 12.000";
    Schakel__NoteField field = SCHAKEL__NOTE_FIELD__INIT;
    Schakel__NoteField *fields[] = {&field};
    Schakel__CaseNote note = SCHAKEL__CASE_NOTE__INIT;
    Schakel__CaseCommand command = SCHAKEL__CASE_COMMAND__INIT;
    field.name = name;
    field.value = value;
    note.text = text;
    note.fields = fields;
    note.n_fields = 1;
    command.actor = actor;
    command.case_id = case_id;
    command.op_case = SCHAKEL__CASE_COMMAND__OP_NOTE;
    command.note = &note;

    size_t len = 0;
    uint8_t *bytes = wire_encode_case_command(&command, &len);
    assert_non_null(bytes);
    char hex[2 * 200 + 1];
    assert_true(len <= 200);
    syntax_hex(bytes, len, hex);
    assert_string_equal(hex, command_hex);

    uint8_t id[16], signed_bytes[64], seed[32], pk[32], sk[64], signature[64];
    for (size_t i = 0; i < sizeof id; i++)
        id[i] = (uint8_t)i;
    wire_case_signed_bytes(id, bytes, len, signed_bytes);
    syntax_hex(signed_bytes, sizeof signed_bytes, hex);
    assert_string_equal(hex, signed_hex);
    memset(seed, 0x01, sizeof seed);
    assert_int_equal(crypto_sign_seed_keypair(pk, sk, seed), 0);
    assert_int_equal(crypto_sign_detached(signature, NULL, signed_bytes, 64, sk), 0);
    syntax_hex(signature, sizeof signature, hex);
    assert_string_equal(hex, signature_hex);

    wire_error_t err;
    Schakel__CaseCommand *decoded = wire_decode_case_command(bytes, len, &err);
    expect_error("vector decodes", &err, OK, NULL);
    assert_string_equal(decoded->note->fields[0]->value, value);
    wire_case_command_free(&decoded);
    free(bytes);
}

/* ---------------------------------------------------------- reason names */

/* The control check of free text against a plain byte loop (C0, DEL, and
 * C1 as 0xC2 0x80..0x9F; tab, newline and return only in prose), over
 * random valid UTF-8 built from pieces at every word offset. */
static int reference_has_control(const char *text, int allow_line_breaks)
{
    const unsigned char *b = (const unsigned char *)text;
    for (size_t i = 0; b[i] != '\0'; i++) {
        if (allow_line_breaks && (b[i] == '\t' || b[i] == '\n' || b[i] == '\r'))
            continue;
        if (b[i] < 0x20 || b[i] == 0x7F || (b[i] == 0xC2 && b[i + 1] >= 0x80 && b[i + 1] <= 0x9F))
            return 1;
    }
    return 0;
}

static uint64_t text_random(uint64_t *x)
{
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    return *x * UINT64_C(2685821657736338717);
}

static void test_text_control_against_reference(void **state)
{
    (void)state;
    static const char *const plain[] = {
        "a",        "Zeer ",    "abcdefghijklmnop", " ~!",      "\xc3\xa9",         "\xe2\x82\xac",
        "\xc2\xa0", "\xc2\xbf", "\xc3\x80",         "\xc3\x82", "\xf0\x9f\x98\x80", "\xc2\xa9",
    };
    static const char *const controls[] = {
        "\xc2\x80", "\xc2\x9f", "\t", "\n", "\r", "\x1b", "\x7f", "\x01", "\x1f",
    };
    uint64_t x = UINT64_C(0x2545f4914f6cdd1d);
    char text[8 + 128];
    size_t counts[2][2] = {{0, 0}, {0, 0}};
    for (uint64_t round = 0; round < 100000; round++) {
        size_t len = 0, target = 1 + (size_t)(text_random(&x) % 100);
        while (len < target) {
            uint64_t r = text_random(&x);
            const char *piece = r % 32 == 0
                                    ? controls[(r >> 8) % (sizeof controls / sizeof controls[0])]
                                    : plain[(r >> 8) % (sizeof plain / sizeof plain[0])];
            size_t piece_len = strlen(piece);
            if (len + piece_len >= sizeof text - 8)
                break;
            memcpy(text + 8 + len, piece, piece_len);
            len += piece_len;
        }
        char *value = text + round % 8;
        memmove(value, text + 8, len);
        value[len] = '\0';
        for (int prose = 0; prose <= 1; prose++) {
            wire_error_t err = {0};
            int want = reference_has_control(value, prose) ? -1 : 0;
            int got = wire_check_text(value, "text", sizeof text,
                                      prose ? WIRE_TEXT_PROSE : WIRE_TEXT_PRINTABLE,
                                      R(INVALID_FIELD), &err);
            if (got != want)
                fail_msg("round %llu, %s: wire_check_text %d, the reference %d",
                         (unsigned long long)round, prose ? "prose" : "printable", got, want);
            counts[prose][got == 0]++;
        }
    }
    for (int prose = 0; prose <= 1; prose++) /* both outcomes, often */
        assert_true(counts[prose][0] > 10000 && counts[prose][1] > 10000);
}

static void test_reason_names(void **state)
{
    (void)state;
    static const char *const names[] = {
        "REASON_NONE",         "INVALID_MESSAGE", "FRAME_TOO_LARGE", "TOO_MANY_FRAMES",
        "UNSUPPORTED_VERSION", "SENDER_MISMATCH", "BAD_SIGNATURE",   "DUPLICATE_CONFLICT",
        "POLICY_DENIED",       "INVALID_THEME",   "INVALID_AREA",    "INVALID_POSTCODE",
        "INVALID_FIELD",       "MISSING_GROUNDS", "TOO_MANY_ITEMS",  "NOT_PERMITTED",
        "UNKNOWN_DELIVERY",    "UNEXPECTED_BODY", "INTERNAL_ERROR",  "RATE_LIMITED",
        "NOT_FOUND",           "CASE_CLOSED",
    };
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
        assert_string_equal(wire_reason_name((Schakel__Reason)i), names[i]);
    assert_string_equal(wire_reason_name((Schakel__Reason)22), "TOO_MANY_CONNECTIONS");
    assert_string_equal(wire_reason_name((Schakel__Reason)23), "UNAVAILABLE");
    assert_string_equal(wire_reason_name((Schakel__Reason)24), "CASE_IDS_EXHAUSTED");
    assert_string_equal(wire_reason_name((Schakel__Reason)25), "UNKNOWN");
    assert_string_equal(wire_reason_name((Schakel__Reason)-1), "UNKNOWN");
}

/* A page of a case view as the broker fills it (up to 256 KiB - 1 KiB of
 * note events, their text filtered out) decodes in a client, with 2, 10
 * and 64 members per event: many small events decode to several times
 * their wire size (each event of more than 16 fields also takes a
 * temporary table while it is read), which the partner-side budget (1
 * MiB) does not hold for the smallest events, and the client's budget for
 * broker frames does. */
static void test_full_case_view_page_decodes(void **state)
{
    (void)state;
    static const size_t members_per_event[] = {2, 10, 64};
    for (size_t row = 0; row < sizeof members_per_event / sizeof members_per_event[0]; row++) {
        size_t n_members = members_per_event[row];
        char **members = calloc(n_members, sizeof *members);
        char names[64][32];
        for (size_t m = 0; m < n_members; m++) {
            snprintf(names[m], sizeof names[m], "woco-%02zu", m);
            members[m] = names[m];
        }
        enum { MAX_EVENTS = 8192 };
        Schakel__CaseEvent *events = calloc(MAX_EVENTS, sizeof *events);
        Schakel__CaseEvent **list = calloc(MAX_EVENTS, sizeof *list);
        assert_non_null(members);
        assert_non_null(events);
        assert_non_null(list);
        Schakel__CaseView view = SCHAKEL__CASE_VIEW__INIT;
        view.has_request_id = 1;
        view.request_id = 7;
        view.events = list;
        Schakel__Frame frame = SCHAKEL__FRAME__INIT;
        frame.body_case = SCHAKEL__FRAME__BODY_CASE_VIEW;
        frame.case_view = &view;
        size_t packed = 0;
        while (view.n_events < MAX_EVENTS) {
            Schakel__CaseEvent *e = &events[view.n_events];
            schakel__case_event__init(e);
            e->case_id = "C-00000042";
            e->case_type = "ondermijning-adres";
            e->has_event_seq = 1;
            e->event_seq = view.n_events + 1;
            e->has_kind = 1;
            e->kind = SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_NOTE;
            e->actor = "riec/analyse";
            e->has_at = 1;
            e->at = 1764000000;
            e->lead = "riec";
            e->n_members = n_members;
            e->members = members;
            list[view.n_events++] = e;
            size_t len = 0;
            uint8_t *bytes = wire_encode_frame(&frame, &len);
            assert_non_null(bytes);
            free(bytes);
            if (len > SCHAKEL_MAX_FRAME_BYTES - 1024) {
                view.n_events--; /* one too many: the page the broker sends */
                break;
            }
            packed = len;
        }
        size_t len = 0;
        uint8_t *bytes = wire_encode_frame(&frame, &len);
        assert_int_equal(len, packed);
        wire_error_t err;
        Schakel__Frame *decoded = wire_decode_broker_frame(bytes, len, &err);
        if (decoded == NULL)
            fail_msg("%zu members: a page of %zu events (%zu bytes): %s", n_members, view.n_events,
                     len, err.text);
        assert_int_equal(decoded->case_view->n_events, view.n_events);
        wire_frame_free(&decoded);
        if (n_members == 2) { /* the partner-side budget does not hold it */
            assert_null(wire_decode_frame(bytes, len, &err));
            assert_non_null(strstr(err.text, "bytes of memory to decode"));
        } else if (n_members == 10) { /* it does, counting what is live: the
                                         temporary table of each event goes */
            decoded = wire_decode_frame(bytes, len, &err);
            if (decoded == NULL)
                fail_msg("10 members, partner budget: %s", err.text);
            wire_frame_free(&decoded);
        }
        free(bytes);
        free(list);
        free(events);
        free(members);
    }
}

/* A reason code appended by a newer broker: kept in a frame from the
 * broker (a refusal the client does not retry), refused from a partner. */
static void test_unknown_reason_from_the_broker(void **state)
{
    (void)state;
    Schakel__Rejected rejected = SCHAKEL__REJECTED__INIT;
    rejected.has_reason = 1;
    rejected.reason = (Schakel__Reason)999;
    rejected.text = "a reason from a newer broker";
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    frame.body_case = SCHAKEL__FRAME__BODY_REJECTED;
    frame.rejected = &rejected;
    size_t len = 0;
    uint8_t *bytes = wire_encode_frame(&frame, &len);
    assert_non_null(bytes);
    wire_error_t err;
    Schakel__Frame *decoded = wire_decode_broker_frame(bytes, len, &err);
    assert_non_null(decoded);
    assert_int_equal((int)decoded->rejected->reason, 999);
    assert_string_equal(wire_reason_name(decoded->rejected->reason), "UNKNOWN");
    wire_frame_free(&decoded);
    assert_null(wire_decode_frame(bytes, len, &err));
    assert_non_null(strstr(err.text, "Rejected.reason has the unknown value 999"));
    free(bytes);
}

/* A Deliver the codec refuses still names its seq (the client reports the
 * delivery it cannot read by it, PROTOCOL.md 7.11); only a Deliver of our
 * version does, and no other body. */
static void test_refused_deliver_names_its_seq(void **state)
{
    (void)state;
    static const uint8_t signal_bytes[] = {0x0a, 0x01, 'x'};
    const struct {
        int both_bodies, bad_text, has_seq;
        uint32_t version;
        uint64_t expected;
    } rows[] = {
        {1, 0, 1, 1, 41}, /* a signal and a case event */
        {0, 1, 1, 1, 41}, /* a text that is not UTF-8 */
        {0, 1, 0, 1, 0},  /* no seq to name */
        {0, 1, 1, 2, 0},  /* another version: its field 1 need not be a seq */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        Schakel__Deliver deliver = SCHAKEL__DELIVER__INIT;
        deliver.has_seq = rows[i].has_seq;
        deliver.seq = 41;
        deliver.purpose = rows[i].bad_text ? "Aanpak \xc3\x28" : "Aanpak";
        deliver.has_signal = 1;
        deliver.signal.data = (uint8_t *)(uintptr_t)signal_bytes;
        deliver.signal.len = sizeof signal_bytes;
        deliver.has_case_event = rows[i].both_bodies;
        deliver.case_event = deliver.signal;
        Schakel__Frame frame = SCHAKEL__FRAME__INIT;
        frame.body_case = SCHAKEL__FRAME__BODY_DELIVER;
        frame.deliver = &deliver;
        frame.has_version = 1;
        frame.version = rows[i].version;
        size_t len = schakel__frame__get_packed_size(&frame);
        uint8_t *bytes = malloc(len);
        assert_non_null(bytes);
        assert_int_equal(schakel__frame__pack(&frame, bytes), len);
        wire_error_t err;
        memset(&err, 0xff, sizeof err);
        assert_null(wire_decode_broker_frame(bytes, len, &err));
        if (err.deliver_seq != rows[i].expected)
            fail_msg("row %zu: deliver_seq %llu (%s)", i, (unsigned long long)err.deliver_seq,
                     err.text);
        free(bytes);
    }
    /* a refused frame of another body names none */
    Schakel__Rejected rejected = SCHAKEL__REJECTED__INIT;
    rejected.has_seq = 1;
    rejected.seq = 41;
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    frame.body_case = SCHAKEL__FRAME__BODY_REJECTED;
    frame.rejected = &rejected;
    size_t len = 0;
    uint8_t *bytes = wire_encode_frame(&frame, &len);
    wire_error_t err;
    memset(&err, 0xff, sizeof err);
    assert_null(wire_decode_broker_frame(bytes, len, &err));
    assert_int_equal(err.deliver_seq, 0);
    free(bytes);
}

/* A Deliver protobuf-c cannot unpack (or that is over the size limit)
 * names its seq still, read from its raw bytes, when they hold one to
 * trust: version 1, one body, a Deliver whose fields all parse (the last
 * may be cut short by its end), and its seq a varint, given once. Each
 * row is refused by the decoder and names what wire_peek_deliver_seq
 * reads. */
static void test_undecodable_deliver_seq_from_raw_bytes(void **state)
{
    (void)state;
    /* Frame: 08 01 = version 1; 9a 01 LEN = field 19 (deliver). Deliver:
     * 08 2a = seq 42; 20 01 = sender (4) as a varint, which protobuf-c
     * refuses; 22 LEN = sender as it should be. */
    const struct {
        const char *what;
        uint8_t bytes[24];
        size_t len;
        uint64_t expected;
    } rows[] = {
        {"a field of the wrong wire type after the seq",
         {0x08, 0x01, 0x9a, 0x01, 0x04, 0x08, 0x2a, 0x20, 0x01},
         9,
         42},
        {"a field cut short after the seq",
         {0x08, 0x01, 0x9a, 0x01, 0x05, 0x08, 0x2a, 0x22, 0x09, 'a'},
         10,
         42},
        {"an unknown top-level field besides",
         {0x28, 0x07, 0x08, 0x01, 0x9a, 0x01, 0x04, 0x08, 0x2a, 0x20, 0x01},
         11,
         42},
        {"a seq of many bytes",
         {0x08, 0x01, 0x9a, 0x01, 0x07, 0x08, 0xff, 0xff, 0xff, 0x0f, 0x20, 0x01},
         12,
         0x1fffffful},
        {"damage before the seq",
         {0x08, 0x01, 0x9a, 0x01, 0x05, 0x22, 0x09, 'a', 0x08, 0x2a},
         10,
         0},
        {"a seq that is no varint",
         {0x08, 0x01, 0x9a, 0x01, 0x05, 0x0a, 0x01, 0x2a, 0x20, 0x01},
         10,
         0},
        {"a seq of 0", {0x08, 0x01, 0x9a, 0x01, 0x04, 0x08, 0x00, 0x20, 0x01}, 9, 0},
        {"a seq of 11 bytes",
         {0x08, 0x01, 0x9a, 0x01, 0x0d, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
          0x7f, 0x20, 0x01},
         18,
         0},
        {"version 2", {0x08, 0x02, 0x9a, 0x01, 0x04, 0x08, 0x2a, 0x20, 0x01}, 9, 0},
        {"no version", {0x9a, 0x01, 0x04, 0x08, 0x2a, 0x20, 0x01}, 7, 0},
        {"a version that is no varint",
         {0x0a, 0x01, 0x01, 0x9a, 0x01, 0x04, 0x08, 0x2a, 0x20, 0x01},
         10,
         0},
        {"a Deliver longer than the frame",
         {0x08, 0x01, 0x9a, 0x01, 0x09, 0x08, 0x2a, 0x20, 0x01},
         9,
         0},
        {"a second body",
         {0x08, 0x01, 0x9a, 0x01, 0x04, 0x08, 0x2a, 0x20, 0x01, 0x8a, 0x01, 0x00},
         12,
         0},
        {"two Delivers",
         {0x08, 0x01, 0x9a, 0x01, 0x02, 0x08, 0x2a, 0x9a, 0x01, 0x02, 0x08, 0x2b, 0x20},
         13,
         0},
        {"a top level that does not parse after it",
         {0x08, 0x01, 0x9a, 0x01, 0x04, 0x08, 0x2a, 0x20, 0x01, 0xff},
         10,
         0},
        {"a group (wire type 3)", {0x08, 0x01, 0x9b, 0x01, 0x08, 0x2a, 0x9c, 0x01}, 8, 0},
        {"a seq after the field that does not decode",
         {0x08, 0x01, 0x9a, 0x01, 0x04, 0x20, 0x01, 0x08, 0x2a},
         9,
         42},
        {"a seq given twice",
         {0x08, 0x01, 0x9a, 0x01, 0x06, 0x08, 0x2a, 0x08, 0x2b, 0x20, 0x01},
         11,
         0},
        {"a seq given twice, the frame unpacked",
         {0x08, 0x01, 0x9a, 0x01, 0x04, 0x08, 0x2a, 0x08, 0x2b},
         9,
         0},
        {"a seq given twice, a field 0 between",
         {0x08, 0x01, 0x9a, 0x01, 0x06, 0x08, 0x2a, 0x00, 0x01, 0x08, 0x2b},
         11,
         0},
        {"a seq given twice, the second cut short",
         {0x08, 0x01, 0x9a, 0x01, 0x04, 0x08, 0x2a, 0x08, 0xff},
         9,
         0},
        {"a seq of 0 given before another",
         {0x08, 0x01, 0x9a, 0x01, 0x06, 0x08, 0x00, 0x08, 0x2a, 0x20, 0x01},
         11,
         0},
        {"a field 0 after the seq", {0x08, 0x01, 0x9a, 0x01, 0x04, 0x08, 0x2a, 0x00, 0x01}, 9, 0},
        {"a group after the seq",
         {0x08, 0x01, 0x9a, 0x01, 0x06, 0x08, 0x2a, 0x4b, 0x4c, 0x08, 0x2b},
         11,
         0},
        {"a field of wire type 7 after the seq",
         {0x08, 0x01, 0x9a, 0x01, 0x05, 0x08, 0x2a, 0x27, 0x08, 0x2b},
         10,
         0},
        {"two Delivers, the frame unpacked",
         {0x08, 0x01, 0x9a, 0x01, 0x02, 0x08, 0x2a, 0x9a, 0x01, 0x02, 0x08, 0x2b},
         12,
         0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        wire_error_t err;
        memset(&err, 0xff, sizeof err);
        Schakel__Frame *frame = wire_decode_broker_frame(rows[i].bytes, rows[i].len, &err);
        if (frame != NULL)
            fail_msg("row %zu (%s): decoded", i, rows[i].what);
        if (err.deliver_seq != rows[i].expected ||
            wire_peek_deliver_seq(rows[i].bytes, rows[i].len) != rows[i].expected)
            fail_msg("row %zu (%s): deliver_seq %llu, peek %llu (%s)", i, rows[i].what,
                     (unsigned long long)err.deliver_seq,
                     (unsigned long long)wire_peek_deliver_seq(rows[i].bytes, rows[i].len),
                     err.text);
    }
    assert_int_equal(wire_peek_deliver_seq(NULL, 0), 0);
    /* a whole Deliver over the size limit: refused unread, named by its seq */
    static const uint8_t signal_bytes[] = {0x0a, 0x01, 'x'};
    Schakel__Deliver deliver = SCHAKEL__DELIVER__INIT;
    deliver.has_seq = deliver.has_signal = 1;
    deliver.seq = 43;
    deliver.signal.data = (uint8_t *)(uintptr_t)signal_bytes;
    deliver.signal.len = sizeof signal_bytes;
    char *purpose = malloc(SCHAKEL_MAX_FRAME_BYTES + 1);
    assert_non_null(purpose);
    memset(purpose, 'a', SCHAKEL_MAX_FRAME_BYTES);
    purpose[SCHAKEL_MAX_FRAME_BYTES] = '\0';
    deliver.purpose = purpose;
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    frame.body_case = SCHAKEL__FRAME__BODY_DELIVER;
    frame.deliver = &deliver;
    frame.has_version = 1;
    frame.version = SCHAKEL_PROTOCOL_VERSION;
    size_t len = schakel__frame__get_packed_size(&frame);
    uint8_t *bytes = malloc(len);
    assert_non_null(bytes);
    assert_int_equal(schakel__frame__pack(&frame, bytes), len);
    wire_error_t err;
    memset(&err, 0xff, sizeof err);
    assert_null(wire_decode_broker_frame(bytes, len, &err));
    assert_int_equal(err.reason, SCHAKEL__REASON__FRAME_TOO_LARGE);
    assert_int_equal(err.deliver_seq, 43);
    free(bytes);
    free(purpose);
}

/* Fields a newer broker added: a client ignores them and keeps the ones
 * it knows (PROTOCOL.md 1.3); a partner's frame with them is refused; a
 * frame whose only body is one this code does not know is refused either
 * way. */
static void test_unknown_fields_from_the_broker(void **state)
{
    (void)state;
    static const struct {
        const char *name, *hex;
        int broker_ok;
        const char *fragment; /* of the refusal, from the broker or else the partner's */
    } rows[] = {
        /* Heartbeat{time 5, field 11 = 1, principal "a"} */
        {"heartbeat field 11", "08 01 b2 01 07 08 05 58 01 12 01 61", 1,
         "Heartbeat carries unknown field 11"},
        /* the same unknown field twice: repeats are counted for known ones */
        {"heartbeat field 11 twice", "08 01 b2 01 09 08 05 58 01 58 01 12 01 61", 1,
         "Heartbeat carries unknown field 11"},
        /* a length-delimited unknown field with bytes that are no UTF-8 */
        {"heartbeat field 10, bytes", "08 01 b2 01 09 08 05 52 02 ff fe 12 01 61", 1,
         "Heartbeat carries unknown field 10"},
        {"frame field 99", "08 01 b2 01 05 08 05 12 01 61 98 06 01", 1,
         "Frame carries unknown field 99"},
        {"item accepted field 5",
         "08 01 8a 01 16 0a 10 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 12 02 28 01", 1,
         "ItemAccepted carries unknown field 5"},
        {"unknown body 35", "08 01 9a 02 00", 0, "Frame carries unknown field 35"},
        {"unknown body 35 and field 99", "08 01 9a 02 00 98 06 01", 0,
         "Frame carries unknown field"},
        /* a known field still checked beside an unknown one */
        {"heartbeat field 11, principal not UTF-8", "08 01 b2 01 07 08 05 58 01 12 01 ff", 0,
         "Heartbeat.principal is not valid UTF-8"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct bytes b = {0};
        bytes_hex(&b, rows[i].hex);
        wire_error_t err;
        Schakel__Frame *frame = wire_decode_broker_frame(b.data, b.len, &err);
        if (rows[i].broker_ok) {
            if (frame == NULL)
                fail_msg("%s: refused from the broker: %s", rows[i].name, err.text);
            if (frame->body_case == SCHAKEL__FRAME__BODY_HEARTBEAT) {
                assert_true(frame->heartbeat->has_time);
                assert_int_equal(frame->heartbeat->time, 5);
                assert_string_equal(frame->heartbeat->principal, "a");
            } else {
                assert_int_equal(frame->body_case, SCHAKEL__FRAME__BODY_ACCEPTED);
                assert_int_equal(frame->accepted->n_items, 1);
            }
            wire_frame_free(&frame);
            assert_null(wire_decode_frame(b.data, b.len, &err));
            assert_int_equal(err.reason, SCHAKEL__REASON__INVALID_MESSAGE);
        } else {
            assert_null(frame);
        }
        if (strstr(err.text, rows[i].fragment) == NULL)
            fail_msg("%s: \"%s\" does not say \"%s\"", rows[i].name, err.text, rows[i].fragment);
        bytes_free(&b);
    }
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signal_table),
        cmocka_unit_test(test_signal_every_theme),
        cmocka_unit_test(test_signal_clock_extremes),
        cmocka_unit_test(test_signal_validate_null),
        cmocka_unit_test(test_signal_item_index_untouched),
        cmocka_unit_test(test_raw_signal_table),
        cmocka_unit_test(test_signal_item_size),
        cmocka_unit_test(test_raw_frame_table),
        cmocka_unit_test(test_unknown_fields_from_the_broker),
        cmocka_unit_test(test_publish_table),
        cmocka_unit_test(test_ack_counts),
        cmocka_unit_test(test_frame_size_limit),
        cmocka_unit_test(test_decode_budget),
        cmocka_unit_test(test_items_root),
        cmocka_unit_test(test_signed_bytes_and_hash),
        cmocka_unit_test(test_publish_round_trip),
        cmocka_unit_test(test_small_bodies_round_trip),
        cmocka_unit_test(test_encode_null),
        cmocka_unit_test(test_reason_names),
        cmocka_unit_test(test_text_control_against_reference),
        cmocka_unit_test(test_case_syntax),
        cmocka_unit_test(test_case_command_table),
        cmocka_unit_test(test_raw_case_command_table),
        cmocka_unit_test(test_raw_case_event_table),
        cmocka_unit_test(test_case_event_round_trip),
        cmocka_unit_test(test_case_publish_table),
        cmocka_unit_test(test_case_signed_bytes_and_hash),
        cmocka_unit_test(test_case_publish_vector),
        cmocka_unit_test(test_full_case_view_page_decodes),
        cmocka_unit_test(test_unknown_reason_from_the_broker),
        cmocka_unit_test(test_refused_deliver_names_its_seq),
        cmocka_unit_test(test_undecodable_deliver_seq_from_raw_bytes),
    };
    return cmocka_run_group_tests_name("wire", tests, NULL, NULL);
}
