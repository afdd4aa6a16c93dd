/*
 * yamlguard.c — the pieces the broker's YAML loaders share (see yamlguard.h).
 *
 * Trusts nothing in the bytes it reads or walks, nor who may write a file
 * it reads (the file, every folder on its path and each link are checked
 * as opened: fileguard.h); trusts its callers' schemas. Every error is
 * written as "NAME:LINE: message" (or "NAME: message") and returned as -1
 * (YAMLGUARD_NOMEM when only memory was lacking); nothing is printed,
 * libcyaml's own log included.
 */
#include "yamlguard.h"

#include "fileguard.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ errors */

/* The longest file name an error shows whole; longer ones by their end. */
#define YAMLGUARD_SHOWN_NAME 256

int yamlguard_vfail(const yamlguard_report_t *report, unsigned line, const char *fmt, va_list args)
{
    char message[512];
    vsnprintf(message, sizeof message, fmt, args);
    if (report->err == NULL || report->errlen == 0)
        return -1;
    /* A long name shown by its end (from a '/' when one is near), so that
     * the line and the reason fit in err (a path of 4,000 bytes filled it). */
    const char *name = report->name, *dots = "";
    size_t len = strlen(name);
    if (len > YAMLGUARD_SHOWN_NAME) {
        name += len - YAMLGUARD_SHOWN_NAME;
        const char *slash = strchr(name, '/');
        if (slash != NULL && slash - name < 64)
            name = slash;
        dots = "...";
    }
    if (line > 0)
        snprintf(report->err, report->errlen, "%s%s:%u: %s", dots, name, line, message);
    else
        snprintf(report->err, report->errlen, "%s%s: %s", dots, name, message);
    return -1;
}

int yamlguard_fail(const yamlguard_report_t *report, unsigned line, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    int rc = yamlguard_vfail(report, line, fmt, args);
    va_end(args);
    return rc;
}

/* ------------------------------------------------------------------ reading */

/* The file as opened by fileguard_open (every folder on its path and
 * each link checked there): refused unless a regular file that only root
 * or the reader may change (its owner can rewrite it whatever its mode;
 * group or others may not write it). Returns the fd, or -1 (the file
 * closed) with the message written. */
static int yamlguard_check_file(const yamlguard_report_t *report, const char *what,
                                fileguard_file_t *file)
{
    char shown[PATH_MAX + NAME_MAX + 2];
    struct stat st;
    int rc = 0;
    uid_t self = geteuid();
    if (strcmp(file->dir, ".") == 0)
        snprintf(shown, sizeof shown, "%s", file->name);
    else
        snprintf(shown, sizeof shown, "%s%s%s", file->dir, strcmp(file->dir, "/") == 0 ? "" : "/",
                 file->name);
    if (fstat(file->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = yamlguard_fail(report, 0, "not a regular file");
    } else if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        rc = yamlguard_fail(report, 0,
                            "group or others may write this %s file (mode %03o): run: chmod go-w "
                            "%s",
                            what, (unsigned)(st.st_mode & 0777), shown);
    } else if (st.st_uid != 0 && st.st_uid != self) {
        char owner[64], reader[64];
        fileguard_user_name(st.st_uid, owner, sizeof owner);
        fileguard_user_name(self, reader, sizeof reader);
        rc = yamlguard_fail(report, 0,
                            "this %s file belongs to uid %u (%s), not to root or uid %u (%s, the "
                            "reader), so its owner can change it whatever its mode: run: chown "
                            "root %s",
                            what, (unsigned)st.st_uid, owner, (unsigned)self, reader, shown);
    }
    int fd = file->fd;
    file->fd = -1;
    fileguard_close(file);
    if (rc != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A config or policy the reader may not open: mostly one copied or made
 * by root without the broker's group (cp without -p), which root's own
 * checks read and the broker, run as its own user, cannot. Says who reads
 * and how the files of "First install" are made readable to it. */
static int yamlguard_unreadable(const yamlguard_report_t *report, const char *what)
{
    char reader[64], group[64];
    struct group entry, *found = NULL;
    char buf[1024];
    uid_t self = geteuid();
    fileguard_user_name(self, reader, sizeof reader);
    if (getgrgid_r(getegid(), &entry, buf, sizeof buf, &found) == 0 && found != NULL)
        snprintf(group, sizeof group, "%s", found->gr_name);
    else
        snprintf(group, sizeof group, "%u", (unsigned)getegid());
    return yamlguard_fail(report, 0,
                          "cannot open: %s: uid %u (%s, the reader) may not read this %s or "
                          "search a folder above it: give its group read access, as "
                          "docs/OPERATIONS.md (First install) makes it: chgrp %s %s && chmod "
                          "0640 %s (a copy made by root with cp, not cp -p, is root's group)",
                          strerror(EACCES), (unsigned)self, reader, what, group, report->name,
                          report->name);
}

/* Open report->name for reading as yamlguard_read_file describes
 * (fileguard_open, links at the end followed too). Returns the fd, or -1
 * with the message written. */
static int yamlguard_open(const yamlguard_report_t *report, const char *what)
{
    fileguard_file_t file;
    fileguard_problem_t problem;
    if (fileguard_open(report->name, FILEGUARD_FOLLOW_LAST, FILEGUARD_MAX_LINKS, &file, &problem) !=
        0) {
        if (problem.fault == FILEGUARD_SYSTEM && problem.sys_errno == EISDIR)
            return yamlguard_fail(report, 0, "not a regular file"); /* a name ending in '/' */
        if (problem.fault == FILEGUARD_SYSTEM && problem.sys_errno == EACCES)
            return yamlguard_unreadable(report, what);
        char why[PATH_MAX + 512];
        fileguard_describe(&problem, what, why, sizeof why);
        return yamlguard_fail(report, 0, "%s", why);
    }
    return yamlguard_check_file(report, what, &file);
}

/* Read at most max_bytes + 1 bytes: one more tells us the file is too large
 * without trusting st_size. */
int yamlguard_read_file(const yamlguard_report_t *report, const char *what, size_t max_bytes,
                        uint8_t **buf, size_t *len)
{
    int fd = yamlguard_open(report, what);
    if (fd < 0)
        return -1;
    size_t cap = max_bytes + 1, used = 0;
    uint8_t *data = malloc(cap);
    if (data == NULL) {
        close(fd);
        yamlguard_fail(report, 0, "out of memory");
        return YAMLGUARD_NOMEM;
    }
    while (used < cap) {
        ssize_t n = read(fd, data + used, cap - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int saved = errno;
            free(data);
            close(fd);
            return yamlguard_fail(report, 0, "cannot read: %s", strerror(saved));
        }
        if (n == 0)
            break;
        used += (size_t)n;
    }
    close(fd);
    if (used > max_bytes) {
        free(data);
        return yamlguard_fail(report, 0, "%s is larger than %zu bytes", what, max_bytes);
    }
    *buf = data;
    *len = used;
    return 0;
}

/* ------------------------------------------------------------------ libyaml walk */

/* libyaml's line of a position: 1 + the line breaks before offset, as its
 * scanner counts them (CR LF, CR, LF, and NEL, LS and PS in UTF-8). */
static unsigned yamlguard_line_at(const uint8_t *buf, size_t len, size_t offset)
{
    unsigned line = 1;
    if (offset > len)
        offset = len;
    for (size_t i = 0; i < offset; i++) {
        if (buf[i] == '\r' && i + 1 < offset && buf[i + 1] == '\n')
            i++;
        if (buf[i] == '\n' || buf[i] == '\r')
            line++;
        else if (buf[i] == 0xc2 && i + 1 < offset && buf[i + 1] == 0x85 && ++i)
            line++;
        else if (buf[i] == 0xe2 && i + 2 < offset && buf[i + 1] == 0x80 &&
                 (buf[i + 2] == 0xa8 || buf[i + 2] == 0xa9) && (i += 2))
            line++;
    }
    return line;
}

/* A reader error (a byte sequence that is not UTF-8, or a character YAML
 * does not allow raw) is found before any token, so libyaml leaves its
 * problem_mark at the start; its problem_offset is where the bytes are. */
static int yamlguard_reader_error(const yamlguard_report_t *report, const yaml_parser_t *parser,
                                  const uint8_t *buf, size_t len)
{
    unsigned line = yamlguard_line_at(buf, len, parser->problem_offset);
    const char *problem = parser->problem ? parser->problem : "error";
    int value = parser->problem_value;
    if (strcmp(problem, "control characters are not allowed") == 0)
        return yamlguard_fail(report, line,
                              value <= 0xff ? "control character 0x%02x (raw control characters "
                                              "other than tab and line breaks are not allowed)"
                                            : "character U+%04X is not allowed in YAML",
                              (unsigned)value);
    if (value >= 0 && strstr(problem, "UTF-8") != NULL)
        return yamlguard_fail(report, line, "not UTF-8: %s 0x%02x (the file must be UTF-8)",
                              problem, (unsigned)value);
    return yamlguard_fail(report, line, "not UTF-8: %s (the file must be UTF-8)", problem);
}

static int yamlguard_syntax_error(const yamlguard_report_t *report, const yaml_parser_t *parser,
                                  const uint8_t *buf, size_t len, unsigned options)
{
    if (parser->error == YAML_READER_ERROR)
        return yamlguard_reader_error(report, parser, buf, len);
    char context[160] = "";
    if ((options & YAMLGUARD_SYNTAX_CONTEXT) && parser->context)
        snprintf(context, sizeof context, " %s (started at line %u)", parser->context,
                 (unsigned)parser->context_mark.line + 1);
    return yamlguard_fail(report, (unsigned)parser->problem_mark.line + 1, "YAML syntax: %s%s",
                          parser->problem ? parser->problem : "error", context);
}

/* YAML 1.2 (5.2) tells the encoding from a byte order mark or, without
 * one, from where the NUL bytes of the first ASCII character fall; libyaml
 * reads UTF-16 after its marks. Only UTF-8 is taken, with or without its
 * mark (EF BB BF, which libyaml skips): a policy's hash is over its bytes,
 * and one text must not load from two encodings. NULL: none of these. */
static const char *yamlguard_encoding(const uint8_t *b, size_t len, const char **why)
{
    static const struct {
        uint8_t bytes[4];
        size_t n;
        const char *name, *why;
    } marks[] = {
        {{0, 0, 0xfe, 0xff}, 4, "UTF-32BE", "byte order mark 00 00 FE FF"},
        {{0xff, 0xfe, 0, 0}, 4, "UTF-32LE", "byte order mark FF FE 00 00"},
        {{0xfe, 0xff}, 2, "UTF-16BE", "byte order mark FE FF"},
        {{0xff, 0xfe}, 2, "UTF-16LE", "byte order mark FF FE"},
    };
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        if (len >= marks[i].n && memcmp(b, marks[i].bytes, marks[i].n) == 0) {
            *why = marks[i].why;
            return marks[i].name;
        }
    }
    *why = "NUL bytes in its first character";
    if (len >= 4 && b[0] == 0 && b[1] == 0 && b[2] == 0)
        return "UTF-32BE";
    if (len >= 4 && b[1] == 0 && b[2] == 0 && b[3] == 0)
        return "UTF-32LE";
    if (len >= 2 && b[0] == 0)
        return "UTF-16BE";
    if (len >= 2 && b[1] == 0)
        return "UTF-16LE";
    return NULL;
}

/* The tag written on a node (`!!int 1`, `!local x`), or NULL: libyaml
 * gives none for an untagged one. */
static const yaml_char_t *yamlguard_tag_of(const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return ev->data.scalar.tag;
    case YAML_SEQUENCE_START_EVENT:
        return ev->data.sequence_start.tag;
    case YAML_MAPPING_START_EVENT:
        return ev->data.mapping_start.tag;
    default:
        return NULL;
    }
}

/* A tag is refused wherever it is: libcyaml ignores tags, so a value
 * would load as its text whatever the tag says (`version: !!int 1` as the
 * string "1", `!!binary` text undecoded), and a reader of the file would
 * take it to mean what it does not. The tag is shown as written where
 * libyaml expanded it (tag:yaml.org,2002:int is !!int). */
static int yamlguard_tag_refusal(const yamlguard_report_t *report, unsigned line, const char *tag)
{
    static const char core[] = "tag:yaml.org,2002:";
    char shown[64];
    if (strncmp(tag, core, sizeof core - 1) == 0)
        snprintf(shown, sizeof shown, "!!%s", tag + sizeof core - 1);
    else
        snprintf(shown, sizeof shown, "%s", tag);
    for (char *c = shown; *c != '\0'; c++)
        if (*c < 0x21 || *c > 0x7e)
            *c = '?';
    return yamlguard_fail(report, line,
                          "tags (%s) are not allowed: values are read as written, whatever a tag "
                          "says; remove it",
                          shown);
}

int yamlguard_walk(const yamlguard_report_t *report, const uint8_t *buf, size_t len,
                   unsigned options, yamlguard_event_fn on_event, void *ctx)
{
    const char *why = NULL;
    const char *encoding = yamlguard_encoding(buf, len, &why);
    if (encoding != NULL)
        return yamlguard_fail(report, 1,
                              "the file is %s (%s), not UTF-8: convert it, e.g. iconv -f %s -t "
                              "UTF-8",
                              encoding, why, encoding);
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return yamlguard_fail(report, 0, "cannot initialise the YAML parser");
    yaml_parser_set_input_string(&parser, buf, len);
    int rc = 0;
    unsigned documents = 0;
    for (bool done = false; !done && rc == 0;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = yamlguard_syntax_error(report, &parser, buf, len, options);
            break;
        }
        unsigned line = (unsigned)ev.start_mark.line + 1;
        done = ev.type == YAML_STREAM_END_EVENT;
        const yaml_char_t *tag = yamlguard_tag_of(&ev);
        if (ev.type == YAML_ALIAS_EVENT)
            rc = yamlguard_fail(report, line, "aliases (*name) are not allowed");
        else if (tag != NULL)
            rc = yamlguard_tag_refusal(report, line, (const char *)tag);
        else if (ev.type == YAML_DOCUMENT_START_EVENT && ++documents > 1)
            rc = yamlguard_fail(report, line, "only one YAML document is allowed");
        else if (ev.type != YAML_DOCUMENT_START_EVENT)
            rc = on_event(ctx, &ev, line);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    return rc;
}

/* ------------------------------------------------------------------ libcyaml */

/* libcyaml logs an error message, then a backtrace whose first entry names
 * the line of the innermost value being loaded. */
static void yamlguard_cyaml_log(cyaml_log_t level, void *ctx, const char *fmt, va_list args)
    __attribute__((format(printf, 3, 0)));

static void yamlguard_cyaml_log(cyaml_log_t level, void *ctx, const char *fmt, va_list args)
{
    yamlguard_capture_t *cap = ctx;
    char text[256];
    if (level < CYAML_LOG_ERROR)
        return;
    vsnprintf(text, sizeof text, fmt, args);
    if (strncmp(text, "Load: Backtrace:", 16) == 0) {
        cap->in_backtrace = true;
        return;
    }
    const char *at = strstr(text, "(line: ");
    if (cap->in_backtrace) {
        if (cap->line == 0 && at) {
            cap->line = (unsigned)strtoul(at + 7, NULL, 10);
            const char *field = strstr(text, "in mapping field '");
            if (field && field < at)
                sscanf(field + 18, "%64[^']", cap->field); /* YAMLGUARD_FIELD_MAX */
        }
        return;
    }
    if (cap->message[0] != '\0')
        return;
    const char *msg = strncmp(text, "Load: ", 6) == 0 ? text + 6 : text;
    size_t n = 0;
    for (; msg[n] && n + 1 < sizeof cap->message; n++)
        cap->message[n] = (msg[n] >= 0x20 && msg[n] < 0x7f) ? msg[n] : ' ';
    while (n > 0 && cap->message[n - 1] == ' ')
        n--;
    cap->message[n] = '\0';
}

_Static_assert(YAMLGUARD_FIELD_MAX == 64, "the sscanf width above is YAMLGUARD_FIELD_MAX");

/* Strict: unknown keys are errors (libcyaml's default), aliases refused. */
static cyaml_config_t yamlguard_cyaml_config(yamlguard_capture_t *cap)
{
    return (cyaml_config_t){
        .log_fn = cap ? yamlguard_cyaml_log : NULL,
        .log_ctx = cap,
        .mem_fn = cyaml_mem,
        .log_level = CYAML_LOG_ERROR,
        .flags = CYAML_CFG_NO_ALIAS,
    };
}

cyaml_err_t yamlguard_load(const uint8_t *buf, size_t len, const cyaml_schema_value_t *schema,
                           cyaml_data_t **out, yamlguard_capture_t *cap)
{
    memset(cap, 0, sizeof *cap);
    cyaml_config_t config = yamlguard_cyaml_config(cap);
    *out = NULL;
    return cyaml_load_data(buf, len, &config, schema, out, NULL);
}

void yamlguard_free(const cyaml_schema_value_t *schema, cyaml_data_t *data)
{
    if (data == NULL)
        return;
    cyaml_config_t config = yamlguard_cyaml_config(NULL);
    cyaml_free(&config, schema, data, 0);
}

void yamlguard_explain(const char *message, char *out, size_t outlen)
{
    static const struct {
        const char *cyaml;
        const char *plain;
    } words[] = {{"SEQUENCE_START", "a list"},   {"SEQUENCE", "a list"},
                 {"MAPPING_START", "a mapping"}, {"MAPPING", "a mapping"},
                 {"SCALAR", "a single value"},   {"STRING", "a single value"},
                 {"UINT", "a whole number"},     {"INT", "a whole number"}};
    char expected[32], found[32];
    unsigned n;
    if (sscanf(message, "Expecting %31[A-Z_], got event: %31[A-Z_]", expected, found) == 2) {
        const char *e = expected, *f = found;
        for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
            if (strcmp(expected, words[i].cyaml) == 0 && e == expected)
                e = words[i].plain;
            if (strcmp(found, words[i].cyaml) == 0 && f == found)
                f = words[i].plain;
        }
        snprintf(out, outlen, "expected %s, found %s", e, f);
    } else if (sscanf(message, "STRING length > %u", &n) == 1) {
        snprintf(out, outlen, "longer than %u bytes", n);
    } else if (sscanf(message, "STRING length < %u", &n) == 1) {
        snprintf(out, outlen, "must not be empty");
    } else if (sscanf(message, "Excessive entries (%u max)", &n) == 1) {
        snprintf(out, outlen, "more than %u entries", n);
    } else if (strncmp(message, "Insufficient entries", 20) == 0) {
        snprintf(out, outlen, "must not be an empty list");
    } else if (strncmp(message, "Invalid uint64_t value", 22) == 0 ||
               strncmp(message, "Invalid UINT value", 18) == 0) {
        snprintf(out, outlen, "expected a whole number");
    } else {
        snprintf(out, outlen, "%s", message);
    }
}

const char *yamlguard_unknown_key(cyaml_err_t rc, const yamlguard_capture_t *cap)
{
    if (rc == CYAML_ERR_INVALID_KEY && strncmp(cap->message, "Unexpected key: ", 16) == 0)
        return cap->message + 16;
    return NULL;
}
