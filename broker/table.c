/*
 * table.c — open-addressing hash table (see table.h).
 *
 * Hash: 64-bit FNV-1a, salted per process from libsodium so that a client
 * choosing keys (routing ids) cannot aim for collisions. Memory errors are
 * returned, never fatal.
 */
#include "table.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define TABLE_START 64

typedef struct slot {
    uint8_t *key; /* NULL = empty */
    size_t len;
    uint64_t hash;
    void *value;
} slot_t;

struct table {
    slot_t *slots;
    size_t capacity; /* power of two */
    size_t count;
};

static uint64_t table_salt;

static uint64_t table_hash(const void *key, size_t len)
{
    if (table_salt == 0)
        table_salt = ((uint64_t)randombytes_random() << 32 | randombytes_random()) | 1;
    uint64_t h = 14695981039346656037ULL ^ table_salt;
    const uint8_t *p = key;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

table_t *table_new(void)
{
    table_t *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->slots = calloc(TABLE_START, sizeof *t->slots);
    if (t->slots == NULL) {
        free(t);
        return NULL;
    }
    t->capacity = TABLE_START;
    return t;
}

void table_destroy(table_t **table)
{
    if (table == NULL || *table == NULL)
        return;
    for (size_t i = 0; i < (*table)->capacity; i++)
        free((*table)->slots[i].key);
    free((*table)->slots);
    free(*table);
    *table = NULL;
}

static size_t table_find(const table_t *t, const void *key, size_t len, uint64_t hash)
{
    size_t mask = t->capacity - 1;
    size_t i = hash & mask;
    while (t->slots[i].key != NULL) {
        const slot_t *s = &t->slots[i];
        if (s->hash == hash && s->len == len && memcmp(s->key, key, len) == 0)
            return i;
        i = (i + 1) & mask;
    }
    return i; /* the empty slot where it would go */
}

void *table_get(const table_t *t, const void *key, size_t len)
{
    size_t i = table_find(t, key, len, table_hash(key, len));
    return t->slots[i].key != NULL ? t->slots[i].value : NULL;
}

static int table_grow(table_t *t)
{
    size_t capacity = t->capacity * 2;
    slot_t *slots = calloc(capacity, sizeof *slots);
    if (slots == NULL)
        return -1;
    for (size_t i = 0; i < t->capacity; i++) {
        if (t->slots[i].key == NULL)
            continue;
        size_t j = t->slots[i].hash & (capacity - 1);
        while (slots[j].key != NULL)
            j = (j + 1) & (capacity - 1);
        slots[j] = t->slots[i];
    }
    free(t->slots);
    t->slots = slots;
    t->capacity = capacity;
    return 0;
}

int table_put(table_t *t, const void *key, size_t len, void *value)
{
    if ((t->count + 1) * 2 > t->capacity && table_grow(t) != 0)
        return -1;
    uint64_t hash = table_hash(key, len);
    size_t i = table_find(t, key, len, hash);
    if (t->slots[i].key != NULL) {
        t->slots[i].value = value;
        return 0;
    }
    uint8_t *copy = malloc(len > 0 ? len : 1);
    if (copy == NULL)
        return -1;
    memcpy(copy, key, len);
    t->slots[i] = (slot_t){.key = copy, .len = len, .hash = hash, .value = value};
    t->count++;
    return 0;
}

void *table_remove(table_t *t, const void *key, size_t len)
{
    size_t mask = t->capacity - 1;
    size_t i = table_find(t, key, len, table_hash(key, len));
    if (t->slots[i].key == NULL)
        return NULL;
    void *value = t->slots[i].value;
    free(t->slots[i].key);
    t->slots[i].key = NULL;
    t->count--;
    /* Backward shift: move later members of the probe run into the hole. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; t->slots[j].key != NULL; j = (j + 1) & mask) {
        size_t home = t->slots[j].hash & mask;
        /* j may move to hole only if its home is not in (hole, j] cyclically */
        int in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!in_range) {
            t->slots[hole] = t->slots[j];
            t->slots[j].key = NULL;
            hole = j;
        }
    }
    return value;
}

size_t table_count(const table_t *t)
{
    return t->count;
}

void *table_next(const table_t *t, size_t *cursor)
{
    while (*cursor < t->capacity) {
        size_t i = (*cursor)++;
        if (t->slots[i].key != NULL)
            return t->slots[i].value;
    }
    return NULL;
}
