/*
 * wire_signal.c — a decoded Signal's fields checked (docs/PROTOCOL.md
 * section 5): identity, address, person, free texts, severity and time,
 * recipients, and the text and address checks wire_case.c shares. Trusts
 * nothing in the Signal; every refusal returns -1 with a wire_error_t that
 * names the field and the rule broken, never the field's contents.
 */
#include "wire.h"

#include <string.h>

#include "schakel_limits.h"
#include "syntax.h"
#include "wire_internal.h"

/* 8 bytes of printable ASCII (0x20..0x7E): no high bit in the word, none
 * after taking 0x20 from every byte (a byte below 0x20 borrows, which sets
 * one) and none after taking 0x01 from every byte of word ^ 0x7F.. (a DEL
 * turns 0 and borrows). Exact: a word that fails is read byte by byte. */
static int word_is_printable_ascii(const unsigned char *bytes)
{
    const uint64_t ones = UINT64_C(0x0101010101010101), highs = UINT64_C(0x8080808080808080);
    uint64_t word;
    memcpy(&word, bytes, sizeof word); /* any alignment; the test is byte-order free */
    return ((word | (word - 0x20 * ones) | ((word ^ 0x7F * ones) - ones)) & highs) == 0;
}

/* C0 controls, DEL and the C1 range U+0080..U+009F (0xC2 0x80..0x9F in
 * UTF-8). Free text reaches caseworkers' terminals: an ESC sequence in it
 * could rewrite what they see. Cost: a word test per 8 bytes of plain
 * text; 8 bytes one at a time where a word holds anything else. */
static int has_control(const char *text, size_t len, int allow_line_breaks)
{
    const unsigned char *bytes = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        if (len - i >= 8 && word_is_printable_ascii(bytes + i)) {
            i += 8;
            continue;
        }
        size_t end = len - i >= 8 ? i + 8 : len;
        for (; i < end; i++) {
            unsigned char c = bytes[i];
            if (allow_line_breaks && (c == '\t' || c == '\n' || c == '\r'))
                continue;
            if (c < 0x20 || c == 0x7F)
                return 1;
            if (c == 0xC2 && i + 1 < len && bytes[i + 1] >= 0x80 && bytes[i + 1] <= 0x9F)
                return 1;
        }
    }
    return 0;
}

/* A present string: not empty, within max_len bytes, UTF-8, and of its class. */
int wire_check_text(const char *value, const char *name, size_t max_len, enum wire_text_class cls,
                    Schakel__Reason reason, wire_error_t *err)
{
    size_t len = strlen(value);
    if (len == 0) {
        wire_error_set(err, reason, "%s is present but empty", name);
        return -1;
    }
    if (len > max_len) {
        wire_error_set(err, reason, "%s is %zu bytes; at most %zu are allowed", name, len, max_len);
        return -1;
    }
    if (!syntax_is_utf8((const uint8_t *)value, len)) {
        wire_error_set(err, reason, "%s is not valid UTF-8", name);
        return -1;
    }
    if (cls != WIRE_TEXT_TOKEN && has_control(value, len, cls == WIRE_TEXT_PROSE)) {
        wire_error_set(err, reason, "%s contains a control character", name);
        return -1;
    }
    return 0;
}

/* A mandatory token-like field: present, text-checked, then its syntax. */
static int check_token(const char *value, const char *name, size_t max_len,
                       int (*is_valid)(const char *), Schakel__Reason reason, const char *rule,
                       wire_error_t *err)
{
    if (value == NULL) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "signal has no %s", name);
        return -1;
    }
    if (wire_check_text(value, name, max_len, WIRE_TEXT_TOKEN, reason, err) < 0)
        return -1;
    if (!is_valid(value)) {
        wire_error_set(err, reason, "%s %s", name, rule);
        return -1;
    }
    return 0;
}

static int check_identity(const Schakel__Signal *signal, wire_error_t *err)
{
    if (check_token(signal->sender, "sender", SCHAKEL_MAX_PRINCIPAL_LEN, syntax_is_principal_id,
                    SCHAKEL__REASON__INVALID_FIELD, "is not a principal id (partner/name)",
                    err) < 0)
        return -1;
    if (check_token(signal->kind, "kind", SCHAKEL_MAX_ID_LEN, syntax_is_id_token,
                    SCHAKEL__REASON__INVALID_FIELD,
                    "is not a kind token ([a-z0-9][a-z0-9._-]{0,63})", err) < 0)
        return -1;
    if (check_token(signal->theme, "theme", SCHAKEL_MAX_ID_LEN, syntax_is_theme,
                    SCHAKEL__REASON__INVALID_THEME, "is not in the theme vocabulary", err) < 0)
        return -1;
    return check_token(signal->area, "area", SCHAKEL_MAX_ID_LEN, syntax_is_area_code,
                       SCHAKEL__REASON__INVALID_AREA,
                       "is not a CBS code (GM + 4 digits, WK + 6 or BU + 8 positions)", err);
}

static int is_addition_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == ' ' ||
           c == '-';
}

int wire_check_address(const Schakel__Address *address, wire_error_t *err)
{
    if (address->postcode == NULL) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_POSTCODE, "address has no postcode");
        return -1;
    }
    if (wire_check_text(address->postcode, "address.postcode", SCHAKEL_MAX_ID_LEN, WIRE_TEXT_TOKEN,
                        SCHAKEL__REASON__INVALID_POSTCODE, err) < 0)
        return -1;
    if (!syntax_is_postcode(address->postcode)) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_POSTCODE,
                       "address.postcode is not a Dutch postcode (1234AB: no space, capitals, "
                       "not SA/SD/SS)");
        return -1;
    }
    if (!address->has_house_number || address->house_number < 1 ||
        address->house_number > SCHAKEL_MAX_HOUSE_NUMBER) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD, "address.house_number must be 1..%u",
                       SCHAKEL_MAX_HOUSE_NUMBER);
        return -1;
    }
    if (address->addition == NULL)
        return 0;
    if (wire_check_text(address->addition, "address.addition", SCHAKEL_MAX_ADDITION_LEN,
                        WIRE_TEXT_TOKEN, SCHAKEL__REASON__INVALID_FIELD, err) < 0)
        return -1;
    for (const char *c = address->addition; *c != '\0'; c++) {
        if (!is_addition_char(*c)) {
            wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                           "address.addition may hold only letters, digits, space and '-'");
            return -1;
        }
    }
    return 0;
}

/* WGS: a signal about a person names a pseudonym and states its grounds. */
static int check_person(const Schakel__Signal *signal, wire_error_t *err)
{
    if (signal->subject != NULL) {
        if (wire_check_text(signal->subject, "subject", SCHAKEL_MAX_SUBJECT_LEN, WIRE_TEXT_TOKEN,
                            SCHAKEL__REASON__INVALID_FIELD, err) < 0)
            return -1;
        if (!syntax_is_pseudonym(signal->subject)) {
            wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                           "subject must be a pseudonym, never a BSN (%u..%u of [A-Za-z0-9._:-], "
                           "not all digits)",
                           SCHAKEL_MIN_SUBJECT_LEN, SCHAKEL_MAX_SUBJECT_LEN);
            return -1;
        }
        if (signal->grounds == NULL) {
            wire_error_set(err, SCHAKEL__REASON__MISSING_GROUNDS,
                           "a signal about a person (subject) must state its grounds");
            return -1;
        }
    }
    if (signal->grounds == NULL)
        return 0;
    if (signal->subject != NULL && signal->grounds[0] == '\0') {
        wire_error_set(
            err, SCHAKEL__REASON__MISSING_GROUNDS,
            "a signal about a person (subject) must state its grounds; grounds is empty");
        return -1;
    }
    return wire_check_text(signal->grounds, "grounds", wire_limits.max_grounds_len, WIRE_TEXT_PROSE,
                           SCHAKEL__REASON__INVALID_FIELD, err);
}

static int check_free_texts(const Schakel__Signal *signal, wire_error_t *err)
{
    const Schakel__Reason reason = SCHAKEL__REASON__INVALID_FIELD;
    if (signal->case_ref != NULL &&
        wire_check_text(signal->case_ref, "case_ref", SCHAKEL_MAX_REF_LEN, WIRE_TEXT_PRINTABLE,
                        reason, err) < 0)
        return -1;
    if (signal->source_ref != NULL &&
        wire_check_text(signal->source_ref, "source_ref", SCHAKEL_MAX_REF_LEN, WIRE_TEXT_PRINTABLE,
                        reason, err) < 0)
        return -1;
    if (signal->summary != NULL &&
        wire_check_text(signal->summary, "summary", wire_limits.max_summary_len, WIRE_TEXT_PROSE,
                        reason, err) < 0)
        return -1;
    return 0;
}

static int check_severity_and_time(const Schakel__Signal *signal, int64_t now, wire_error_t *err)
{
    if (signal->has_severity && (signal->severity < SCHAKEL__SEVERITY__SEVERITY_LOW ||
                                 signal->severity > SCHAKEL__SEVERITY__SEVERITY_CRITICAL)) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                       "severity must be 1 (low) .. 4 (critical) when present");
        return -1;
    }
    if (!signal->has_observed_at)
        return 0;
    /* Bounds saturate instead of overflowing for a clock near the ends. */
    int64_t earliest = now < INT64_MIN + SCHAKEL_MAX_PAST_S ? INT64_MIN : now - SCHAKEL_MAX_PAST_S;
    int64_t latest =
        now > INT64_MAX - SCHAKEL_MAX_FUTURE_SKEW_S ? INT64_MAX : now + SCHAKEL_MAX_FUTURE_SKEW_S;
    if (signal->observed_at < earliest || signal->observed_at > latest) {
        wire_error_set(
            err, SCHAKEL__REASON__INVALID_FIELD,
            "observed_at must lie between %lld s before and %d s after the broker's clock",
            (long long)SCHAKEL_MAX_PAST_S, SCHAKEL_MAX_FUTURE_SKEW_S);
        return -1;
    }
    return 0;
}

/* n <= SCHAKEL_MAX_RECIPIENTS, so the pairwise duplicate check is cheap. */
static int check_recipients(const Schakel__Signal *signal, wire_error_t *err)
{
    if (signal->n_recipients > SCHAKEL_MAX_RECIPIENTS) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                       "signal names %zu recipients; at most %u are allowed", signal->n_recipients,
                       SCHAKEL_MAX_RECIPIENTS);
        return -1;
    }
    for (size_t i = 0; i < signal->n_recipients; i++) {
        /* Defensive: only a struct built by hand can lack the array. */
        const char *recipient = signal->recipients != NULL ? signal->recipients[i] : NULL;
        if (recipient == NULL || !syntax_is_id_token(recipient)) {
            wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                           "recipients[%zu] is not a partner id", i);
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(recipient, signal->recipients[j]) == 0) {
                wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                               "recipients[%zu] repeats recipients[%zu]", i, j);
                return -1;
            }
        }
    }
    return 0;
}

int wire_validate_signal(const Schakel__Signal *signal, int64_t now, wire_error_t *err)
{
    wire_error_reset(err);
    if (signal == NULL) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "no signal");
        return -1;
    }
    if (check_identity(signal, err) < 0)
        return -1;
    if (signal->address != NULL && wire_check_address(signal->address, err) < 0)
        return -1;
    if (check_person(signal, err) < 0 || check_free_texts(signal, err) < 0 ||
        check_severity_and_time(signal, now, err) < 0 || check_recipients(signal, err) < 0)
        return -1;
    return 0;
}
