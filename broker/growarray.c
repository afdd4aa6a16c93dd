/*
 * growarray.c — an array's growth step (see growarray.h). Trusts its
 * callers for a cap that doubles without overflow (their lists are
 * bounded far below it).
 */
#include "growarray.h"

#include <stdlib.h>

int growarray_room(void **array, size_t *cap, size_t n, size_t size, size_t first)
{
    if (n < *cap)
        return 0;
    size_t grown_cap = *cap ? *cap * 2 : first;
    void *grown = realloc(*array, grown_cap * size);
    if (grown == NULL)
        return -1;
    *array = grown;
    *cap = grown_cap;
    return 0;
}
