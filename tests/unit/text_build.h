/*
 * text_build.h — a growing text for tests that write policies (or other
 * files) line by line: text_add appends printf-style, growing the buffer;
 * the caller frees t->p.
 */
#ifndef SCHAKEL_TEST_TEXT_BUILD_H
#define SCHAKEL_TEST_TEXT_BUILD_H

#include <stddef.h>

typedef struct text {
    char *p;
    size_t len, cap;
} text_t;

/* Append to t (fails the test when out of memory). */
void text_add(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
