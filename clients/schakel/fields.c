/*
 * fields.c — text forms of the signal fields that are not plain strings:
 * severity names and times (Unix seconds or ISO-8601 UTC). Pure functions,
 * safe on any input; a text they do not accept returns -1, never a guess.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *const fields_severities[] = {NULL, "low", "medium", "high", "critical"};

int fields_parse_severity(const char *text, int *severity)
{
    long long number;
    if (text == NULL)
        return -1;
    for (int i = SCHAKEL_SEVERITY_LOW; i <= SCHAKEL_SEVERITY_CRITICAL; i++) {
        if (strcmp(text, fields_severities[i]) == 0) {
            *severity = i;
            return 0;
        }
    }
    if (cli_parse_number(text, SCHAKEL_SEVERITY_LOW, SCHAKEL_SEVERITY_CRITICAL, &number) == 0) {
        *severity = (int)number;
        return 0;
    }
    return -1;
}

const char *fields_severity_name(int severity)
{
    if (severity < SCHAKEL_SEVERITY_LOW || severity > SCHAKEL_SEVERITY_CRITICAL)
        return NULL;
    return fields_severities[severity];
}

/* Read exactly `width` digits at *p, advancing it. Returns the value or -1. */
static int fields_digits(const char **p, int width)
{
    int value = 0;
    for (int i = 0; i < width; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return -1;
        value = value * 10 + (c - '0');
    }
    *p += width;
    return value;
}

/* "YYYY-MM-DDTHH:MM:SS" followed by "Z" or "+00:00"; fractions refused. A
 * date that does not exist (31 February) is refused by the round trip. */
static int fields_parse_iso(const char *text, int64_t *unix_seconds)
{
    const char *p = text;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int year = fields_digits(&p, 4);
    if (year < 1970 || *p++ != '-')
        return -1;
    int month = fields_digits(&p, 2);
    if (month < 1 || *p++ != '-')
        return -1;
    int day = fields_digits(&p, 2);
    if (day < 1 || (*p != 'T' && *p != 't'))
        return -1;
    p++;
    int hour = fields_digits(&p, 2);
    if (hour < 0 || *p++ != ':')
        return -1;
    int minute = fields_digits(&p, 2);
    if (minute < 0 || *p++ != ':')
        return -1;
    int second = fields_digits(&p, 2);
    if (second < 0 || (strcmp(p, "Z") != 0 && strcmp(p, "z") != 0 && strcmp(p, "+00:00") != 0))
        return -1;
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = minute;
    tm.tm_sec = second;
    time_t t = timegm(&tm);
    struct tm check;
    if (t == (time_t)-1 || gmtime_r(&t, &check) == NULL || check.tm_year != year - 1900 ||
        check.tm_mon != month - 1 || check.tm_mday != day || check.tm_hour != hour ||
        check.tm_min != minute || check.tm_sec != second)
        return -1;
    *unix_seconds = (int64_t)t;
    return 0;
}

int fields_parse_time(const char *text, int64_t *unix_seconds)
{
    long long number;
    if (text == NULL)
        return -1;
    if (cli_parse_number(text, 1, INT64_MAX, &number) == 0) {
        *unix_seconds = number;
        return 0;
    }
    return fields_parse_iso(text, unix_seconds);
}

void fields_format_time(int64_t unix_seconds, char *out, size_t outlen)
{
    time_t t = (time_t)unix_seconds;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, outlen, "%lld", (long long)unix_seconds);
}
