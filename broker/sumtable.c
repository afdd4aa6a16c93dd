/*
 * sumtable.c — running sums by name, committed and in the open
 * transaction (see sumtable.h). The names are found through table.c; each
 * entry is one allocation that does not move, so the list of the
 * transaction's changes holds pointers, and has room for every entry, so
 * that a change never fails. Memory errors are returned, never fatal.
 */
#include "sumtable.h"

#include <stdlib.h>
#include <string.h>

#include "table.h"

struct sumtable {
    table_t *by_name; /* name -> sumtable_entry_t (the table's own) */
    size_t max_entries;
    sumtable_entry_t **moved;  /* the open transaction's changes */
    size_t n_moved, moved_cap; /* moved_cap >= the number of entries */
};

sumtable_t *sumtable_new(size_t max_entries)
{
    sumtable_t *sums = calloc(1, sizeof *sums);
    if (sums == NULL)
        return NULL;
    if ((sums->by_name = table_new()) == NULL) {
        free(sums);
        return NULL;
    }
    sums->max_entries = max_entries;
    return sums;
}

void sumtable_destroy(sumtable_t **sums)
{
    if (sums == NULL || *sums == NULL)
        return;
    size_t cursor = 0;
    sumtable_entry_t *entry;
    while ((entry = table_next((*sums)->by_name, &cursor)) != NULL)
        free(entry);
    table_destroy(&(*sums)->by_name);
    free((*sums)->moved);
    free(*sums);
    *sums = NULL;
}

sumtable_entry_t *sumtable_find(const sumtable_t *sums, const char *name, size_t len)
{
    return sums != NULL ? table_get(sums->by_name, name, len) : NULL;
}

sumtable_entry_t *sumtable_entry(sumtable_t *sums, const char *name, size_t len)
{
    sumtable_entry_t *entry = sumtable_find(sums, name, len);
    if (entry != NULL)
        return entry;
    size_t count = table_count(sums->by_name);
    if (count >= sums->max_entries)
        return NULL;
    if (count + 1 > sums->moved_cap) { /* room on the list for the new one */
        size_t cap = sums->moved_cap == 0 ? 16 : sums->moved_cap * 2;
        sumtable_entry_t **moved = realloc(sums->moved, cap * sizeof *moved);
        if (moved == NULL)
            return NULL;
        sums->moved = moved;
        sums->moved_cap = cap;
    }
    entry = calloc(1, sizeof *entry + len + 1);
    if (entry == NULL)
        return NULL;
    memcpy(entry->name, name, len);
    entry->name[len] = '\0';
    if (table_put(sums->by_name, name, len, entry) != 0) {
        free(entry);
        return NULL;
    }
    return entry;
}

void sumtable_change(sumtable_t *sums, sumtable_entry_t *entry, int64_t change)
{
    entry->delta += change;
    if (!entry->moved && change != 0) {
        sums->moved[sums->n_moved++] = entry; /* moved_cap >= entries */
        entry->moved = 1;
    }
}

int sumtable_moved(const sumtable_t *sums)
{
    return sums != NULL && sums->n_moved > 0;
}

void sumtable_end(sumtable_t *sums, int committed)
{
    if (sums == NULL)
        return;
    for (size_t k = 0; k < sums->n_moved; k++) {
        sumtable_entry_t *entry = sums->moved[k];
        if (committed)
            entry->committed += entry->delta;
        entry->delta = 0;
        entry->moved = 0;
    }
    sums->n_moved = 0;
}

sumtable_entry_t *sumtable_next(const sumtable_t *sums, size_t *cursor)
{
    return sums != NULL ? table_next(sums->by_name, cursor) : NULL;
}

sumtable_entry_t *sumtable_next_moved(const sumtable_t *sums, size_t *cursor)
{
    if (sums == NULL || *cursor >= sums->n_moved)
        return NULL;
    return sums->moved[(*cursor)++];
}
