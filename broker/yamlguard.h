/*
 * yamlguard.h — what the broker's YAML loaders (config.c, policy_load.c)
 * share: "NAME:LINE: message" errors, a size-capped read of a file only
 * root or its reader may change, a libyaml event walk that refuses text
 * that is not UTF-8, aliases, tags and a second document, and libcyaml
 * loading that captures libcyaml's error message and line instead of
 * printing them. Nothing here knows a schema; the callers bring theirs.
 */
#ifndef SCHAKEL_YAMLGUARD_H
#define SCHAKEL_YAMLGUARD_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cyaml/cyaml.h>
#include <yaml.h>

/* Where a loader's errors go. name is the file (or buffer) name that every
 * message starts with; err may be NULL or errlen 0, then errors are only
 * returned, not written. */
typedef struct yamlguard_report {
    const char *name;
    char *err;
    size_t errlen;
} yamlguard_report_t;

/* Write "NAME:LINE: message" into report->err (line 0: "NAME: message"),
 * truncated to errlen. Always returns -1, so that `return yamlguard_fail(...)`
 * ends a failing check. */
int yamlguard_fail(const yamlguard_report_t *report, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int yamlguard_vfail(const yamlguard_report_t *report, unsigned line, const char *fmt, va_list args)
    __attribute__((format(printf, 3, 0)));

/* yamlguard_read_file returns this when only memory was lacking. */
#define YAMLGUARD_NOMEM (-2)

/* Read the regular file report->name whole, refusing one of more than
 * max_bytes without trusting st_size ("NAME: <what> is larger than N bytes").
 * The file is refused when someone other than root and this program's
 * effective user could change what is read: it is opened by fileguard_open
 * (fileguard.h: every folder from "/" down to it, the working folder's
 * included for a relative name, must be root's or this user's and not
 * writable by group or others unless sticky; symbolic links followed one
 * at a time wherever they are, at most 8, in a sticky folder only this
 * user's or root's), and the file itself must be root's or this user's,
 * and not writable by group or others. Every check is on what was opened,
 * so a swap between the check and the read cannot dodge it. what
 * ("policy", "config") names the file in the messages. On success returns
 * 0 and *buf (caller frees) holding *len bytes. On error returns -1, or
 * YAMLGUARD_NOMEM when an allocation failed, with "NAME: message" in
 * report->err (cannot open, not a regular file, the file's or a folder's
 * or a link's owner or mode with the chown or chmod that mends it, cannot
 * read, out of memory, too large). */
int yamlguard_read_file(const yamlguard_report_t *report, const char *what, size_t max_bytes,
                        uint8_t **buf, size_t *len);

/* yamlguard_walk option: a syntax error also names the construct libyaml
 * was parsing and the line it started on. */
#define YAMLGUARD_SYNTAX_CONTEXT 1u

/* Called for every event the walk does not refuse itself, stream end
 * included; line is the event's 1-based start line. Nonzero stops the walk
 * and is returned by it (the callback writes its own error). */
typedef int (*yamlguard_event_fn)(void *ctx, const yaml_event_t *event, unsigned line);

/* Parse buf[0..len) with libyaml, event by event. Refuses, with the line:
 * text that is not UTF-8 (UTF-16 or UTF-32, told by a byte order mark or
 * by NUL bytes in the first character, at line 1; a UTF-8 byte order mark
 * is fine), bytes that are not UTF-8 and raw control characters (at the
 * line they are on), YAML syntax errors ("YAML syntax: ..."), aliases,
 * tags (`!!int 1`: libcyaml would read the value as its text whatever the
 * tag says) and a second document. Every other event goes to on_event.
 * Returns 0 at the end of the stream, -1 on a refusal (message written),
 * or what on_event returned. Safe on untrusted input; libyaml's memory is
 * freed on every path. */
int yamlguard_walk(const yamlguard_report_t *report, const uint8_t *buf, size_t len,
                   unsigned options, yamlguard_event_fn on_event, void *ctx);

/* Longest mapping field name a capture keeps. */
#define YAMLGUARD_FIELD_MAX 64

/* What libcyaml said about a failed load: its first error message (printable
 * ASCII, without the "Load: " prefix), and from the backtrace that follows,
 * the line of the innermost value and the innermost mapping field named
 * before it ("" if none). line 0: libcyaml named no line. */
typedef struct yamlguard_capture {
    char message[200];
    char field[YAMLGUARD_FIELD_MAX + 1];
    unsigned line;
    bool in_backtrace;
} yamlguard_capture_t;

/* Load buf[0..len) against schema with libcyaml, strictly: unknown keys are
 * errors, aliases refused, nothing printed. cap is reset first and filled on
 * error. Returns libcyaml's result; on CYAML_OK *out is the loaded data (NULL
 * for an empty document), to be freed with yamlguard_free. */
cyaml_err_t yamlguard_load(const uint8_t *buf, size_t len, const cyaml_schema_value_t *schema,
                           cyaml_data_t **out, yamlguard_capture_t *cap);

/* Free data loaded by yamlguard_load with the same schema; NULL is fine. */
void yamlguard_free(const cyaml_schema_value_t *schema, cyaml_data_t *data);

/* libcyaml's error message (a capture's) in the words of the people who
 * write the files: "expected a list, found a single value", "longer than
 * N bytes", "must not be empty", "expected a whole number"...; any other
 * message as it is. Written into out, truncated to outlen. */
void yamlguard_explain(const char *message, char *out, size_t outlen);

/* The key named by libcyaml's "Unexpected key: KEY" error, or NULL when rc
 * and cap describe another error. Borrowed from cap. */
const char *yamlguard_unknown_key(cyaml_err_t rc, const yamlguard_capture_t *cap);

#endif
