/*
 * admin_json.h — a small JSON writer for the admin endpoint's answers.
 *
 * The broker does not link a JSON library; its answers are few and simple
 * (objects, arrays, strings, integers, booleans), so they are written by
 * this module into one growing buffer. Strings are escaped per RFC 8259:
 * quote, backslash and every control character (C0, DEL and the C1 range)
 * are escaped, and bytes that are not valid UTF-8 become U+FFFD, so the
 * output is always valid UTF-8 JSON whatever the input. Commas and nesting
 * are tracked here; a document is taken only when every container is
 * closed. Allocation failure is sticky: the writer keeps going, writes
 * nothing more, and admin_json_take returns NULL.
 */
#ifndef SCHAKEL_ADMIN_JSON_H
#define SCHAKEL_ADMIN_JSON_H

#include <stddef.h>
#include <stdint.h>

#define ADMIN_JSON_MAX_DEPTH 16

typedef struct admin_json {
    char *buf;
    size_t len, cap;
    int failed;     /* out of memory, or misuse (too deep, unbalanced): the document is lost */
    unsigned depth; /* open containers */
    uint8_t
        has_member[ADMIN_JSON_MAX_DEPTH]; /* per open container: bit 0 not empty, bit 1 object */
    int after_key;                        /* a key was written; its value comes next */
} admin_json_t;

/* An empty writer (no allocation yet). */
void admin_json_init(admin_json_t *json);
/* Free the buffer; the writer may be initialised again. Safe twice. */
void admin_json_free(admin_json_t *json);

void admin_json_object_begin(admin_json_t *json);
void admin_json_object_end(admin_json_t *json);
void admin_json_array_begin(admin_json_t *json);
void admin_json_array_end(admin_json_t *json);

/* A member name inside an object; the next value call writes its value. */
void admin_json_key(admin_json_t *json, const char *key);

/* Values. A NULL string is written as null. */
void admin_json_string(admin_json_t *json, const char *text);
void admin_json_int(admin_json_t *json, int64_t value);
void admin_json_uint(admin_json_t *json, uint64_t value);
void admin_json_bool(admin_json_t *json, int value);
void admin_json_null(admin_json_t *json);

/* key + value in one call. */
void admin_json_member_string(admin_json_t *json, const char *key, const char *text);
void admin_json_member_int(admin_json_t *json, const char *key, int64_t value);
void admin_json_member_uint(admin_json_t *json, const char *key, uint64_t value);
void admin_json_member_bool(admin_json_t *json, const char *key, int value);

/* The finished document (NUL-terminated, *len without the NUL), now the
 * caller's to free(); the writer is left empty. NULL when allocation failed,
 * nothing was written, or a container is still open (the writer is freed
 * then too). */
char *admin_json_take(admin_json_t *json, size_t *len);

#endif
