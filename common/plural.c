/*
 * plural.c — the noun for a count (see plural.h). Pure; no failure.
 */
#include "plural.h"

const char *plural(unsigned long long count, const char *one, const char *many)
{
    return count == 1 ? one : many;
}
