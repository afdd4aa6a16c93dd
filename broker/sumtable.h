/*
 * sumtable.h — running sums by name that change inside transactions: for
 * each name a committed value and the open transaction's delta, and the
 * list of the names the transaction moved, so that its end (commit or
 * rollback) costs only those. The pending deliveries per recipient
 * (store_count.c) and the items' bytes per partner (store_bytes.c) are
 * kept in one each. Knows nothing of SQL: its callers say when a
 * transaction ends. Private to the broker.
 */
#ifndef SCHAKEL_SUMTABLE_H
#define SCHAKEL_SUMTABLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct sumtable_entry {
    int64_t committed;
    int64_t delta; /* in the open transaction */
    int known;     /* the caller's (store_count.c: committed was learnt); 0 when made */
    int moved;     /* on the list of the open transaction's changes */
    char name[];   /* the name, NUL-terminated */
} sumtable_entry_t;

typedef struct sumtable sumtable_t;

/* An empty table that makes at most max_entries entries; NULL when out of
 * memory. */
sumtable_t *sumtable_new(size_t max_entries);
/* Frees the table and its entries; NULLs *sums; NULL-safe. */
void sumtable_destroy(sumtable_t **sums);

/* The entry of name[0..len) (borrowed, valid until the table is
 * destroyed), or NULL when it has none; sums may be NULL. */
sumtable_entry_t *sumtable_find(const sumtable_t *sums, const char *name, size_t len);
/* The same, made (zeroed) when missing; NULL when out of memory or at the
 * table's bound (the caller then does not follow the name). */
sumtable_entry_t *sumtable_entry(sumtable_t *sums, const char *name, size_t len);

/* Add change to the entry's delta, listing it among the open
 * transaction's changes (never fails: the list has room for every entry).
 * A change of 0 lists nothing. */
void sumtable_change(sumtable_t *sums, sumtable_entry_t *entry, int64_t change);
/* Whether the open transaction changed any entry; sums may be NULL. */
int sumtable_moved(const sumtable_t *sums);
/* End of the transaction: each changed entry's delta is added to its
 * committed value (committed != 0) or dropped, and the list emptied. */
void sumtable_end(sumtable_t *sums, int committed);

/* Iterate, in no order: start with *cursor = 0; the next entry, or NULL
 * at the end. sumtable_next gives every entry, sumtable_next_moved those
 * the open transaction changed. The table must not be changed meanwhile;
 * sums may be NULL. */
sumtable_entry_t *sumtable_next(const sumtable_t *sums, size_t *cursor);
sumtable_entry_t *sumtable_next_moved(const sumtable_t *sums, size_t *cursor);

#endif
