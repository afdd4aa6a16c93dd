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
#include <string.h>

#include "store_internal.h"
#include "sumtable.h"

/* Recipients are principals (at most SCHAKEL_MAX_PRINCIPALS in a policy);
 * the table stops learning new ones beyond this and counts them in SQL. */
#define COUNT_MAX_ENTRIES 65536u

/* The recipient's entry, made if needed; NULL when memory or the table's
 * bound runs out (the count is then not cached for it). */
static sumtable_entry_t *count_entry(store_t *store, const char *recipient)
{
    if (store->counts == NULL && (store->counts = sumtable_new(COUNT_MAX_ENTRIES)) == NULL)
        return NULL;
    return sumtable_entry(store->counts, recipient, strlen(recipient));
}

/* Changes of a transaction that SQLite rolled back by itself (after an I/O
 * error or a full disk) are still listed until the caller's rollback: they
 * never happened, so drop them before anything reads or adds to a count. */
static void count_drop_lost(store_t *store)
{
    if (sumtable_moved(store->counts) && sqlite3_get_autocommit(store->db))
        sumtable_end(store->counts, 0);
}

void store_count_change(store_t *store, const char *recipient, int64_t change)
{
    count_drop_lost(store);
    sumtable_entry_t *e = count_entry(store, recipient);
    if (e == NULL) {
        /* Not followed: forget what was known, SQL counts it next time. */
        sumtable_entry_t *known = sumtable_find(store->counts, recipient, strlen(recipient));
        if (known != NULL)
            known->known = 0;
        return;
    }
    if (sqlite3_get_autocommit(store->db)) { /* committed on its own */
        e->committed += change;
        return;
    }
    sumtable_change(store->counts, e, change);
}

int store_count_get(store_t *store, const char *recipient, int64_t *count)
{
    count_drop_lost(store);
    const sumtable_entry_t *e = sumtable_find(store->counts, recipient, strlen(recipient));
    if (e == NULL || !e->known)
        return 0;
    *count = e->committed + e->delta;
    return 1;
}

void store_count_learn(store_t *store, const char *recipient, int64_t sql_count)
{
    count_drop_lost(store);
    sumtable_entry_t *e = count_entry(store, recipient);
    if (e == NULL)
        return;
    /* SQL sees the open transaction's own changes: take them out again. */
    e->committed = sql_count - e->delta;
    e->known = 1;
}

void store_count_commit(store_t *store)
{
    sumtable_end(store->counts, 1);
}

void store_count_rollback(store_t *store)
{
    sumtable_end(store->counts, 0);
}

void store_count_free(store_t *store)
{
    sumtable_destroy(&store->counts);
}
