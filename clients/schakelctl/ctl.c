/*
 * ctl.c — what every `schakelctl` command shares: the common options and
 * their environment defaults, messages and usage errors, JSON output, and
 * the text forms of times, durations and sizes in the human tables.
 * Prints only to stderr (messages) and stdout (results); never exits.
 */
#include "ctl.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "optreport.h"
#include "syntax.h"

#define CTL_DEFAULT_CONNECT_TIMEOUT_MS 5000
#define CTL_DEFAULT_TIMEOUT_MS 30000
#define CTL_MAX_TIMEOUT_S 86400 /* a day: beyond that a timeout is a typo */

void ctl_options_init(ctl_options_t *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->admin = getenv("SCHAKEL_ADMIN");
    opts->broker_key = getenv("SCHAKEL_BROKER_KEY");
    opts->key = getenv("SCHAKEL_KEY");
    opts->connect_timeout_ms = CTL_DEFAULT_CONNECT_TIMEOUT_MS;
    opts->timeout_ms = CTL_DEFAULT_TIMEOUT_MS;
}

int ctl_parse_number(const char *text, long long min, long long max, long long *out)
{
    /* digits only: strtoll took " 2", "+1" and "-0" */
    return syntax_decimal(text, min, max, out);
}

static int ctl_seconds_option(const char *name, const char *arg, int *ms)
{
    long long seconds;
    if (ctl_parse_number(arg, 1, CTL_MAX_TIMEOUT_S, &seconds) != 0) {
        ctl_say("%s wants whole seconds from 1 to %d, not '%s'", name, CTL_MAX_TIMEOUT_S, arg);
        return -1;
    }
    *ms = (int)seconds * 1000;
    return 1;
}

int ctl_common_option(ctl_options_t *opts, int option, const char *arg)
{
    switch (option) {
    case CTL_OPT_ADMIN:
        opts->admin = arg;
        return 1;
    case CTL_OPT_BROKER_KEY:
        opts->broker_key = arg;
        return 1;
    case CTL_OPT_KEY:
        opts->key = arg;
        return 1;
    case CTL_OPT_CONNECT_TIMEOUT:
        return ctl_seconds_option("--connect-timeout", arg, &opts->connect_timeout_ms);
    case CTL_OPT_TIMEOUT:
        opts->timeout_given = 1;
        return ctl_seconds_option("--timeout", arg, &opts->timeout_ms);
    case CTL_OPT_JSON:
        opts->json = 1;
        return 1;
    case CTL_OPT_HELP:
        opts->help = 1;
        return 1;
    default:
        return 0;
    }
}

void ctl_say(const char *fmt, ...)
{
    va_list args;
    fputs("schakelctl: ", stderr);
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fputc('\n', stderr);
}

int ctl_usage_error(const char *command, const char *fmt, ...)
{
    va_list args;
    fputs("schakelctl: ", stderr);
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    if (command != NULL)
        fprintf(stderr, "\nTry 'schakelctl %s --help'.\n", command);
    else
        fputs("\nTry 'schakelctl --help'.\n", stderr);
    return CTL_EXIT_USAGE;
}

int ctl_option_error(const char *command, int result, const struct option *options, int argc,
                     char *const argv[])
{
    char text[256];
    optreport_describe(result, options, argc, argv, text, sizeof text);
    return ctl_usage_error(command, "%s", text);
}

/* DEL and the C1 controls escaped (syntax_json_escape_controls): jansson
 * writes them raw, and a terminal acts on them. */
int ctl_print_json(const json_t *value)
{
    char *raw = json_dumps(value, JSON_COMPACT);
    char *text = raw != NULL ? syntax_json_escape_controls(raw) : NULL;
    free(raw);
    if (text == NULL)
        return -1;
    int rc = puts(text) == EOF ? -1 : 0;
    free(text);
    if (fflush(stdout) != 0)
        rc = -1;
    return rc;
}

void ctl_format_time(int64_t unix_seconds, char *out, size_t outlen)
{
    struct tm tm;
    time_t t = (time_t)unix_seconds;
    if (unix_seconds <= 0 || gmtime_r(&t, &tm) == NULL ||
        strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, outlen, "-");
}

void ctl_format_duration(int64_t s, char *out, size_t outlen)
{
    if (s < 0)
        s = 0;
    if (s >= 86400)
        snprintf(out, outlen, "%" PRId64 "d %02" PRId64 "h", s / 86400, s % 86400 / 3600);
    else if (s >= 3600)
        snprintf(out, outlen, "%" PRId64 "h %02" PRId64 "m", s / 3600, s % 3600 / 60);
    else if (s >= 60)
        snprintf(out, outlen, "%" PRId64 "m %02" PRId64 "s", s / 60, s % 60);
    else
        snprintf(out, outlen, "%" PRId64 "s", s);
}

void ctl_format_bytes(int64_t bytes, char *out, size_t outlen)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    if (bytes < 1024) {
        snprintf(out, outlen, "%" PRId64 " B", bytes < 0 ? 0 : bytes);
        return;
    }
    double value = (double)bytes / 1024.0;
    size_t unit = 0;
    while (value >= 1024.0 && unit + 1 < sizeof units / sizeof units[0]) {
        value /= 1024.0;
        unit++;
    }
    snprintf(out, outlen, "%.1f %s", value, units[unit]);
}

void ctl_put_safe(FILE *out, const char *text)
{
    const unsigned char *s = (const unsigned char *)(text != NULL ? text : "-");
    for (; *s != '\0'; s++) {
        if (*s < 0x20 || *s == 0x7F) {
            fputc('?', out);
        } else if (s[0] == 0xC2 && s[1] >= 0x80 && s[1] <= 0x9F) {
            fputc('?', out); /* a C1 control in UTF-8 */
            s++;
        } else {
            fputc(*s, out);
        }
    }
}

const char *ctl_json_string(const json_t *object, const char *key, const char *fallback)
{
    const char *value = json_string_value(json_object_get(object, key));
    return value != NULL ? value : fallback;
}

long long ctl_json_int(const json_t *object, const char *key, long long fallback)
{
    const json_t *value = json_object_get(object, key);
    return json_is_integer(value) ? (long long)json_integer_value(value) : fallback;
}

int ctl_json_bool(const json_t *object, const char *key)
{
    return json_is_true(json_object_get(object, key));
}
