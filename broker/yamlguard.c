/*
 * yamlguard.c — the pieces the broker's YAML loaders share (see yamlguard.h).
 *
 * Trusts nothing in the bytes it reads or walks; trusts its callers'
 * schemas. Every error is written as "NAME:LINE: message" (or "NAME:
 * message") and returned as -1 (YAMLGUARD_NOMEM when only memory was
 * lacking); nothing is printed, libcyaml's own log included.
 */
#include "yamlguard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ errors */

int yamlguard_vfail(const yamlguard_report_t *report, unsigned line, const char *fmt, va_list args)
{
    char message[512];
    vsnprintf(message, sizeof message, fmt, args);
    if (report->err == NULL || report->errlen == 0)
        return -1;
    if (line > 0)
        snprintf(report->err, report->errlen, "%s:%u: %s", report->name, line, message);
    else
        snprintf(report->err, report->errlen, "%s: %s", report->name, message);
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

/* Read at most max_bytes + 1 bytes: one more tells us the file is too large
 * without trusting st_size. */
int yamlguard_read_file(const yamlguard_report_t *report, const char *what, size_t max_bytes,
                        uint8_t **buf, size_t *len)
{
    /* O_NONBLOCK: a FIFO must not hang a reload in open(); it is refused
     * below as not a regular file. */
    int fd = open(report->name, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return yamlguard_fail(report, 0, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return yamlguard_fail(report, 0, "not a regular file");
    }
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

static int yamlguard_syntax_error(const yamlguard_report_t *report, const yaml_parser_t *parser,
                                  unsigned options)
{
    char context[160] = "";
    if ((options & YAMLGUARD_SYNTAX_CONTEXT) && parser->context)
        snprintf(context, sizeof context, " %s (started at line %u)", parser->context,
                 (unsigned)parser->context_mark.line + 1);
    return yamlguard_fail(report, (unsigned)parser->problem_mark.line + 1, "YAML syntax: %s%s",
                          parser->problem ? parser->problem : "error", context);
}

int yamlguard_walk(const yamlguard_report_t *report, const uint8_t *buf, size_t len,
                   unsigned options, yamlguard_event_fn on_event, void *ctx)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return yamlguard_fail(report, 0, "cannot initialise the YAML parser");
    yaml_parser_set_input_string(&parser, buf, len);
    int rc = 0;
    unsigned documents = 0;
    for (bool done = false; !done && rc == 0;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = yamlguard_syntax_error(report, &parser, options);
            break;
        }
        unsigned line = (unsigned)ev.start_mark.line + 1;
        done = ev.type == YAML_STREAM_END_EVENT;
        if (ev.type == YAML_ALIAS_EVENT)
            rc = yamlguard_fail(report, line, "aliases (*name) are not allowed");
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

const char *yamlguard_unknown_key(cyaml_err_t rc, const yamlguard_capture_t *cap)
{
    if (rc == CYAML_ERR_INVALID_KEY && strncmp(cap->message, "Unexpected key: ", 16) == 0)
        return cap->message + 16;
    return NULL;
}
