/*
 * log.c — key=value event lines on stderr (see log.h).
 *
 * Trusts nothing in the values: every byte outside printable ASCII is
 * escaped as \xHH and quotes/backslashes are escaped, so one event is always
 * exactly one line. Failures to write are ignored: logging never stops the
 * broker.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static log_level_t min_level = LOG_INFO;

void log_set_level(log_level_t level)
{
    min_level = level;
}

static void write_value(FILE *out, const char *value)
{
    if (value == NULL) {
        fputc('-', out);
        return;
    }
    int quote = value[0] == '\0' || strpbrk(value, " \"=") != NULL;
    if (quote)
        fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)value; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7F)
            fprintf(out, "\\x%02x", *p);
        else
            fputc(*p, out);
    }
    if (quote)
        fputc('"', out);
}

void log_event(log_level_t level, const char *event, ...)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    if (level < min_level)
        return;
    struct timespec now;
    struct tm tm;
    char stamp[32];
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);

    flockfile(stderr);
    fprintf(stderr, "ts=%s.%03ldZ level=%s event=", stamp, now.tv_nsec / 1000000L,
            names[level]);
    write_value(stderr, event);
    va_list ap;
    va_start(ap, event);
    for (;;) {
        const char *key = va_arg(ap, const char *);
        if (key == NULL)
            break;
        const char *value = va_arg(ap, const char *);
        fputc(' ', stderr);
        fputs(key, stderr);
        fputc('=', stderr);
        write_value(stderr, value);
    }
    va_end(ap);
    fputc('\n', stderr);
    funlockfile(stderr);
    fflush(stderr);
}
