/*
 * inflight.c — the table of a client's publishes in flight (inflight.h).
 * Bounded by SCHAKEL_MAX_IN_FLIGHT, so every lookup is a short scan. Owns
 * each entry's frame (the signed publish, the caller's own signals) and
 * answer; wipes the frame when it frees it. Trusts its caller for ids.
 */
#include "inflight.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

inflight_entry_t *inflight_find(inflight_t *table, const uint8_t *id)
{
    for (size_t i = 0; i < table->count; i++)
        if (memcmp(table->entries[i].id, id, SCHAKEL_MESSAGE_ID_BYTES) == 0)
            return &table->entries[i];
    return NULL;
}

inflight_entry_t *inflight_oldest_unanswered(inflight_t *table)
{
    for (size_t i = 0; i < table->count; i++)
        if (table->entries[i].answer == NULL && !table->entries[i].resend_owed)
            return &table->entries[i];
    return NULL;
}

inflight_entry_t *inflight_first_answered(inflight_t *table)
{
    for (size_t i = 0; i < table->count; i++)
        if (table->entries[i].answer != NULL)
            return &table->entries[i];
    return NULL;
}

inflight_entry_t *inflight_add(inflight_t *table, const uint8_t id[SCHAKEL_MESSAGE_ID_BYTES],
                               uint8_t *frame, size_t frame_len, size_t n_items)
{
    if (table->count >= SCHAKEL_MAX_IN_FLIGHT)
        return NULL;
    inflight_entry_t *entry = &table->entries[table->count++];
    memset(entry, 0, sizeof *entry);
    memcpy(entry->id, id, SCHAKEL_MESSAGE_ID_BYTES);
    entry->frame = frame;
    entry->frame_len = frame_len;
    entry->n_items = n_items;
    return entry;
}

static void inflight_entry_free(inflight_entry_t *entry)
{
    if (entry->frame != NULL) {
        sodium_memzero(entry->frame, entry->frame_len);
        free(entry->frame);
    }
    wire_frame_free(&entry->answer);
    memset(entry, 0, sizeof *entry);
}

void inflight_remove(inflight_t *table, inflight_entry_t *entry)
{
    size_t at = (size_t)(entry - table->entries);
    if (at >= table->count)
        return;
    inflight_entry_free(entry);
    memmove(&table->entries[at], &table->entries[at + 1],
            (table->count - at - 1) * sizeof table->entries[0]);
    table->count--;
    memset(&table->entries[table->count], 0, sizeof table->entries[0]);
}

void inflight_clear(inflight_t *table)
{
    for (size_t i = 0; i < table->count; i++)
        inflight_entry_free(&table->entries[i]);
    table->count = 0;
}
