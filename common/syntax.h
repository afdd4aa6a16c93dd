/*
 * syntax.h — syntax of the identifiers and codes Schakel handles.
 *
 * Pure predicates over C strings, shared by the frame validator, the policy
 * loader and the client tools: theme vocabulary, CBS area codes, Dutch
 * postcodes, id tokens, principal ids, UTF-8. Each is safe on untrusted
 * input (a NULL pointer is invalid) and costs O(length).
 */
#ifndef SCHAKEL_SYNTAX_H
#define SCHAKEL_SYNTAX_H

#include <stddef.h>
#include <stdint.h>

/* The closed theme vocabulary, NULL-terminated. */
extern const char *const syntax_themes[];

int syntax_is_theme(const char *theme);
/* CBS codes: GM + 4 digits; WK + 4 digits + 2 of [0-9A-Z]; BU + 4 digits + 4 of [0-9A-Z]. */
int syntax_is_area_code(const char *area);
/* A prefix of an area code as rules use it: "GM0935", "WK0935", "BU093501", or "*". */
int syntax_is_area_prefix(const char *prefix);
/* Dutch postcode without space: [1-9][0-9]{3}[A-Z]{2}, letters not SA, SD, SS. */
int syntax_is_postcode(const char *postcode);
/* [a-z0-9][a-z0-9._-]{0,63}: partner ids, rule ids, signal kinds. */
int syntax_is_id_token(const char *id);
/* partner-token "/" name-token: "politie/bvh-koppeling". */
int syntax_is_principal_id(const char *id);
/* Pseudonym: 8..64 of [A-Za-z0-9._:-], not all digits (never a BSN). */
int syntax_is_pseudonym(const char *subject);
/* Case id as the broker assigns it: "C-" + 8 decimal digits ("C-00000042"),
 * SCHAKEL_CASE_ID_LEN bytes. */
int syntax_is_case_id(const char *case_id);
/* Media type without parameters, RFC 6838 restricted names: type "/" subtype,
 * each [A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126} ("application/pdf"). */
int syntax_is_media_type(const char *media_type);
/* len bytes are valid UTF-8 (no overlongs, no surrogates) and contain no NUL. */
int syntax_is_utf8(const uint8_t *bytes, size_t len);

/* A whole decimal number of digits only ("0".."9", at least one; leading
 * zeros allowed), in [min, max] (0 <= min <= max): no sign, no space, no
 * other base. Written to *out only when valid. Returns 0, or -1 (also for
 * a value beyond long long). */
int syntax_decimal(const char *text, long long min, long long max, long long *out);

/* The decimal digits of value into out (room for 20), without sign,
 * leading zeros or NUL, as syntax_decimal reads them; returns how many. */
size_t syntax_decimal_digits(uint64_t value, char *out);

/* Lower-case hex of len bytes into out (2*len+1 bytes, NUL-terminated). */
void syntax_hex(const uint8_t *bytes, size_t len, char *out);
/* Parse 2*len hex digits into bytes; returns 0 or -1. */
int syntax_unhex(const char *hex, uint8_t *bytes, size_t len);

/* A copy of JSON text (UTF-8, as a JSON writer made it) in which DEL and
 * the C1 controls (U+0080..U+009F), which JSON lets strings carry raw and
 * a terminal acts on, are written \u007f and \u0080..\u009f; everything
 * else is unchanged. Returns a malloc'd string, or NULL out of memory. */
char *syntax_json_escape_controls(const char *json);

#endif
