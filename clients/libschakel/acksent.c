/*
 * acksent.c — the client's record of its Acks (acksent.h): those whose
 * refusal may still come, and those refused RATE_LIMITED, owed again
 * after a pause. Bounded by ACKSENT_MAX, so every lookup is a short scan.
 * Owns each entry's frame. Allocates nothing, so it never fails.
 */
#include "acksent.h"

#include <stdlib.h>
#include <string.h>

static void acksent_remove(acksent_t *table, size_t at)
{
    free(table->entries[at].frame);
    table->count--;
    memmove(&table->entries[at], &table->entries[at + 1],
            (table->count - at) * sizeof table->entries[0]);
}

void acksent_keep(acksent_t *table, uint64_t order, uint64_t first_seq, uint8_t *frame,
                  size_t frame_len)
{
    if (table->count == ACKSENT_MAX)
        acksent_remove(table, 0);
    table->entries[table->count++] = (acksent_entry_t){order, first_seq, frame, frame_len, 0, 0};
}

void acksent_settle_before(acksent_t *table, uint64_t order)
{
    size_t keep = 0;
    for (size_t i = 0; i < table->count; i++) {
        if (table->entries[i].resend_at == 0 && table->entries[i].order < order)
            free(table->entries[i].frame);
        else
            table->entries[keep++] = table->entries[i];
    }
    table->count = keep;
}

int acksent_refused(acksent_t *table, uint64_t first_seq, int64_t now_ms)
{
    size_t at = 0;
    while (at < table->count &&
           (table->entries[at].resend_at != 0 || table->entries[at].first_seq != first_seq))
        at++;
    if (at == table->count)
        return 0;
    acksent_settle_before(table, table->entries[at].order);
    for (at = 0; table->entries[at].resend_at != 0 || table->entries[at].first_seq != first_seq;)
        at++; /* there still: settling keeps it (not before itself) */
    acksent_entry_t *entry = &table->entries[at];
    if (entry->refusals >= ACKSENT_RESENDS) {
        acksent_remove(table, at);
        return 0;
    }
    entry->resend_at = now_ms + ((int64_t)ACKSENT_PAUSE_MS << entry->refusals);
    entry->refusals++;
    return 1;
}

acksent_entry_t *acksent_due(acksent_t *table, int64_t now_ms)
{
    for (size_t i = 0; i < table->count; i++)
        if (table->entries[i].resend_at != 0 && table->entries[i].resend_at <= now_ms)
            return &table->entries[i];
    return NULL;
}

void acksent_resent(acksent_t *table, acksent_entry_t *entry, uint64_t order)
{
    acksent_entry_t moved = *entry;
    size_t at = (size_t)(entry - table->entries);
    memmove(&table->entries[at], &table->entries[at + 1],
            (table->count - at - 1) * sizeof table->entries[0]);
    moved.order = order;
    moved.resend_at = 0;
    table->entries[table->count - 1] = moved;
}

int64_t acksent_next_due(const acksent_t *table)
{
    int64_t next = -1;
    for (size_t i = 0; i < table->count; i++) {
        int64_t at = table->entries[i].resend_at;
        if (at != 0 && (next < 0 || at < next))
            next = at;
    }
    return next;
}

void acksent_clear(acksent_t *table)
{
    for (size_t i = 0; i < table->count; i++)
        free(table->entries[i].frame);
    table->count = 0;
}
