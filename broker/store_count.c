/*
 * store_count.c — pending deliveries per recipient, kept in memory, so that
 * store_mailbox_count (every Heartbeat) is O(1) instead of a count over the
 * recipient's part of the index (a third of a second at 1,000,000 waiting).
 *
 * A recipient's count is learnt once from SQL, then followed: every insert
 * and removal of a delivery goes through store.c and store_expire.c, which
 * report it here. Changes inside a transaction are kept apart (delta) and
 * become the committed count only when the transaction commits; a rollback
 * drops them. Owns its table; trusts its callers to report every change.
 */
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

/* Recipients are principals (at most SCHAKEL_MAX_PRINCIPALS in a policy);
 * the table stops learning new ones beyond this and counts them in SQL. */
#define COUNT_MAX_ENTRIES 65536u

typedef struct count_entry {
    char *recipient; /* NULL: a free slot */
    int64_t committed;
    int64_t delta; /* in the open transaction */
    int known;     /* committed was learnt; else only delta is followed */
    int dirty;     /* on the dirty list */
} count_entry_t;

struct store_counts {
    count_entry_t *slots;
    size_t cap, used; /* cap: a power of two */
    size_t *dirty;    /* slot indices with a delta */
    size_t n_dirty, dirty_cap;
};

static void count_end(store_t *store, int committed);

static uint64_t count_hash(const char *s)
{
    uint64_t h = 1469598103934665603u; /* FNV-1a */
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    return h;
}

static count_entry_t *count_find(store_counts_t *c, const char *recipient)
{
    if (c == NULL || c->cap == 0)
        return NULL;
    for (size_t i = (size_t)count_hash(recipient) & (c->cap - 1);; i = (i + 1) & (c->cap - 1)) {
        if (c->slots[i].recipient == NULL)
            return NULL;
        if (strcmp(c->slots[i].recipient, recipient) == 0)
            return &c->slots[i];
    }
}

/* Double the table (rebuilding the dirty list). 0 or -1 (memory). */
static int count_grow(store_counts_t *c)
{
    size_t cap = c->cap == 0 ? 64 : c->cap * 2;
    count_entry_t *slots = calloc(cap, sizeof *slots);
    size_t *dirty = malloc(cap * sizeof *dirty);
    if (slots == NULL || dirty == NULL) {
        free(slots);
        free(dirty);
        return -1;
    }
    size_t n_dirty = 0;
    for (size_t k = 0; k < c->cap; k++) {
        if (c->slots[k].recipient == NULL)
            continue;
        size_t i = (size_t)count_hash(c->slots[k].recipient) & (cap - 1);
        while (slots[i].recipient != NULL)
            i = (i + 1) & (cap - 1);
        slots[i] = c->slots[k];
        if (slots[i].dirty)
            dirty[n_dirty++] = i;
    }
    free(c->slots);
    free(c->dirty);
    c->slots = slots;
    c->dirty = dirty;
    c->cap = c->dirty_cap = cap;
    c->n_dirty = n_dirty;
    return 0;
}

/* The recipient's entry, made if needed; NULL when memory or the table's
 * bound runs out (the count is then not cached for it). */
static count_entry_t *count_entry(store_t *store, const char *recipient)
{
    if (store->counts == NULL && (store->counts = calloc(1, sizeof *store->counts)) == NULL)
        return NULL;
    store_counts_t *c = store->counts;
    count_entry_t *e = count_find(c, recipient);
    if (e != NULL)
        return e;
    if (c->used >= COUNT_MAX_ENTRIES)
        return NULL;
    if ((c->used + 1) * 2 > c->cap && count_grow(c) != 0)
        return NULL;
    char *copy = strdup(recipient);
    if (copy == NULL)
        return NULL;
    size_t i = (size_t)count_hash(recipient) & (c->cap - 1);
    while (c->slots[i].recipient != NULL)
        i = (i + 1) & (c->cap - 1);
    c->slots[i] = (count_entry_t){.recipient = copy};
    c->used++;
    return &c->slots[i];
}

/* Changes of a transaction that SQLite rolled back by itself (after an I/O
 * error or a full disk) are still listed until the caller's rollback: they
 * never happened, so drop them before anything reads or adds to a count. */
static void count_drop_lost(store_t *store)
{
    if (store->counts != NULL && store->counts->n_dirty > 0 && sqlite3_get_autocommit(store->db))
        count_end(store, 0);
}

void store_count_change(store_t *store, const char *recipient, int64_t change)
{
    count_drop_lost(store);
    count_entry_t *e = count_entry(store, recipient);
    if (e == NULL) {
        /* Not followed: forget what was known, SQL counts it next time. */
        count_entry_t *known = count_find(store->counts, recipient);
        if (known != NULL)
            known->known = 0;
        return;
    }
    if (sqlite3_get_autocommit(store->db)) { /* committed on its own */
        e->committed += change;
        return;
    }
    e->delta += change;
    if (!e->dirty) {
        store_counts_t *c = store->counts;
        c->dirty[c->n_dirty++] = (size_t)(e - c->slots); /* dirty_cap == cap >= used */
        e->dirty = 1;
    }
}

int store_count_get(store_t *store, const char *recipient, int64_t *count)
{
    count_drop_lost(store);
    count_entry_t *e = count_find(store->counts, recipient);
    if (e == NULL || !e->known)
        return 0;
    *count = e->committed + e->delta;
    return 1;
}

void store_count_learn(store_t *store, const char *recipient, int64_t sql_count)
{
    count_drop_lost(store);
    count_entry_t *e = count_entry(store, recipient);
    if (e == NULL)
        return;
    /* SQL sees the open transaction's own changes: take them out again. */
    e->committed = sql_count - e->delta;
    e->known = 1;
}

/* End of a transaction: its changes become committed, or are dropped. */
static void count_end(store_t *store, int committed)
{
    store_counts_t *c = store->counts;
    if (c == NULL)
        return;
    for (size_t k = 0; k < c->n_dirty; k++) {
        count_entry_t *e = &c->slots[c->dirty[k]];
        if (committed)
            e->committed += e->delta;
        e->delta = 0;
        e->dirty = 0;
    }
    c->n_dirty = 0;
}

void store_count_commit(store_t *store)
{
    count_end(store, 1);
}

void store_count_rollback(store_t *store)
{
    count_end(store, 0);
}

void store_count_free(store_t *store)
{
    store_counts_t *c = store->counts;
    if (c == NULL)
        return;
    for (size_t k = 0; k < c->cap; k++)
        free(c->slots[k].recipient);
    free(c->slots);
    free(c->dirty);
    free(c);
    store->counts = NULL;
}
