/*
 * growarray.h — room for one more element in an array that doubles as it
 * grows: the one growth step the broker's lists share (the audit export,
 * the records of a turn, case members and timelines). Never fatal: a
 * failure is returned and the array left as it was.
 */
#ifndef SCHAKEL_GROWARRAY_H
#define SCHAKEL_GROWARRAY_H

#include <stddef.h>

/* Room in *array (of *cap elements of size bytes; first when it has none)
 * for one more past n: doubled when n has reached *cap. Returns 0, or -1
 * out of memory (*array and *cap unchanged). */
int growarray_room(void **array, size_t *cap, size_t n, size_t size, size_t first);

#endif
