/*
 * table.h — a small hash table from byte-string keys to pointers.
 *
 * Open addressing with linear probing and backward-shift deletion, so there
 * are no tombstones and lookups stay O(1) expected under churn (sessions
 * come and go all day). Keys are copied; values are borrowed. The table
 * grows at 50% load; it never shrinks below its start size.
 */
#ifndef SCHAKEL_TABLE_H
#define SCHAKEL_TABLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct table table_t;

table_t *table_new(void);
/* Frees the table and its key copies, not the values. */
void table_destroy(table_t **table);

void *table_get(const table_t *table, const void *key, size_t len);
/* Insert or replace. Returns 0, or -1 when out of memory. */
int table_put(table_t *table, const void *key, size_t len, void *value);
/* Remove; returns the value that was stored, or NULL. */
void *table_remove(table_t *table, const void *key, size_t len);
size_t table_count(const table_t *table);

/* Iterate: start with *cursor = 0; returns the next value or NULL at the end.
 * The table must not be changed during an iteration. */
void *table_next(const table_t *table, size_t *cursor);

#endif
