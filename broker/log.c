/*
 * log.c — key=value event lines on stderr (see log.h).
 *
 * Trusts nothing in the values: every byte outside printable ASCII is
 * escaped as \xHH and quotes/backslashes are escaped, so one event is always
 * exactly one line, written with a single write(2). Failures to write are
 * ignored: logging never stops the broker.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4000 /* under PIPE_BUF: one atomic write to a pipe */

static log_level_t min_level = LOG_INFO;

void log_set_level(log_level_t level)
{
    min_level = level;
}

int log_enabled(log_level_t level)
{
    return level >= min_level;
}

/* A line under construction; it is written with one write(2), so that a
 * reader of the log never sees half a line. Longer lines are cut with a
 * marker rather than split. */
typedef struct line {
    char text[LOG_LINE_MAX];
    size_t len;
    int cut;
} line_t;

static void put(line_t *l, const char *s, size_t n)
{
    if (l->len + n > sizeof l->text - 16) {
        l->cut = 1;
        return;
    }
    memcpy(l->text + l->len, s, n);
    l->len += n;
}

static void put_str(line_t *l, const char *s)
{
    put(l, s, strlen(s));
}

static void put_value(line_t *l, const char *value)
{
    if (value == NULL) {
        put_str(l, "-");
        return;
    }
    int quote = value[0] == '\0' || strpbrk(value, " \"=") != NULL;
    if (quote)
        put_str(l, "\"");
    for (const unsigned char *p = (const unsigned char *)value; *p != '\0' && !l->cut; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            put(l, esc, 2);
        } else if (*p < 0x20 || *p >= 0x7F) {
            snprintf(esc, sizeof esc, "\\x%02x", *p);
            put(l, esc, 4);
        } else {
            put(l, (const char *)p, 1);
        }
    }
    if (quote)
        put_str(l, "\"");
}

void log_event(log_level_t level, const char *event, ...)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    if (level < min_level)
        return;
    struct timespec now;
    struct tm tm;
    char stamp[64];
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", now.tv_nsec / 1000000L);

    line_t l = {.len = 0, .cut = 0};
    put_str(&l, "ts=");
    put_str(&l, stamp);
    put_str(&l, " level=");
    put_str(&l, names[level]);
    put_str(&l, " event=");
    put_value(&l, event);
    va_list ap;
    va_start(ap, event);
    for (;;) {
        const char *key = va_arg(ap, const char *);
        if (key == NULL)
            break;
        const char *value = va_arg(ap, const char *);
        put_str(&l, " ");
        put_str(&l, key);
        put_str(&l, "=");
        put_value(&l, value);
    }
    va_end(ap);
    if (l.cut) {
        memcpy(l.text + l.len, " cut=true", 9);
        l.len += 9;
    }
    l.text[l.len++] = '\n';
    /* Logging never stops the broker: a failed write is dropped. */
    ssize_t written = write(STDERR_FILENO, l.text, l.len);
    (void)written;
}
