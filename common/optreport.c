/*
 * optreport.c — the message for an option getopt_long refused (see
 * optreport.h).
 *
 * Reads its arguments and getopt's optind and optopt, writes only the
 * caller's buffer; no allocation. argv is untrusted: what is echoed of it
 * is cut to the buffer, and a short option that is not a printable ASCII
 * character is shown as \xNN.
 */
#include "optreport.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

/* The option `name` (len bytes, no "--") names as getopt_long reads it: an
 * exact name, or else the one option whose name it begins. *matches counts
 * the options it names (2 or more: ambiguous). */
static const struct option *optreport_long(const struct option *options, const char *name,
                                           size_t len, size_t *matches)
{
    const struct option *found = NULL;
    *matches = 0;
    for (const struct option *o = options; o->name != NULL; o++) {
        if (strncmp(o->name, name, len) != 0)
            continue;
        if (o->name[len] == '\0') {
            *matches = 1;
            return o;
        }
        found = o;
        ++*matches;
    }
    return *matches == 1 ? found : NULL;
}

/* "option '--br' is ambiguous (--broker, --broker-key)". */
static void optreport_ambiguous(const struct option *options, const char *name, size_t len,
                                char *out, size_t outlen)
{
    size_t used = (size_t)snprintf(out, outlen, "option '--%.*s' is ambiguous (", (int)len, name);
    const char *sep = "";
    for (const struct option *o = options; o->name != NULL && used < outlen; o++)
        if (strncmp(o->name, name, len) == 0) {
            used += (size_t)snprintf(out + used, outlen - used, "%s--%s", sep, o->name);
            sep = ", ";
        }
    if (used < outlen)
        snprintf(out + used, outlen - used, ")");
}

/* A refused long option: arg is "--name" or "--name=value". */
static void optreport_long_error(int result, const struct option *options, const char *arg,
                                 char *out, size_t outlen)
{
    const char *name = arg + 2;
    size_t len = strcspn(name, "=");
    size_t matches = 0;
    const struct option *named = optreport_long(options, name, len, &matches);
    if (named == NULL && matches > 1)
        optreport_ambiguous(options, name, len, out, outlen);
    else if (named == NULL)
        snprintf(out, outlen, "unknown option '--%.*s'", (int)len, name);
    else if (result == ':')
        snprintf(out, outlen, "--%s needs a value", named->name);
    else if (name[len] == '=' && named->has_arg == no_argument)
        snprintf(out, outlen, "--%s takes no value", named->name);
    else
        snprintf(out, outlen, "unknown option '%s'", arg);
}

/* After a refused long option getopt has moved past it, so it is
 * argv[optind - 1]. After a short one that argument is the one before
 * when the refused character was not the last of its cluster: only optopt
 * names a short option for sure. A long option leaves optopt 0 (unknown,
 * ambiguous) or its val. */
static const char *optreport_last(int argc, char *const argv[])
{
    return optind > 0 && optind <= argc ? argv[optind - 1] : NULL;
}

static int optreport_is_long(const char *arg)
{
    return arg != NULL && strncmp(arg, "--", 2) == 0 && arg[2] != '\0';
}

/* The option the long option `last` names, if optopt says getopt refused
 * that one (and not a short option after it, last being its value). */
static const struct option *optreport_named(const struct option *options, const char *last)
{
    size_t matches = 0;
    const struct option *named =
        optreport_long(options, last + 2, strcspn(last + 2, "="), &matches);
    if (named == NULL || named->flag != NULL || optopt == 0 || named->val != optopt)
        return NULL;
    return named;
}

const struct option *optreport_refused_long(int result, const struct option *options, int argc,
                                            char *const argv[])
{
    const char *last = optreport_last(argc, argv);
    if ((result != '?' && result != ':') || !optreport_is_long(last))
        return NULL;
    return optreport_named(options, last);
}

void optreport_describe(int result, const struct option *options, int argc, char *const argv[],
                        char *out, size_t outlen)
{
    if (outlen == 0)
        return;
    const char *last = optreport_last(argc, argv);
    if (optreport_is_long(last) && (optopt == 0 || optreport_named(options, last) != NULL)) {
        optreport_long_error(result, options, last, out, outlen);
        return;
    }
    if ((result != '?' && result != ':') || optopt == 0) { /* an option no handler took: a bug */
        snprintf(out, outlen, "unknown option '%s'", last != NULL ? last : "");
        return;
    }
    unsigned char c = (unsigned char)optopt;
    char shown[8];
    if (c > ' ' && c < 0x7f)
        snprintf(shown, sizeof shown, "-%c", c);
    else
        snprintf(shown, sizeof shown, "-\\x%02x", c);
    if (result == ':')
        snprintf(out, outlen, "%s needs a value", shown);
    else
        snprintf(out, outlen, "unknown option '%s'", shown);
}
