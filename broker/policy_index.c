/*
 * policy_index.c — builds a loaded policy's decision index (policy_internal.h
 * rule_index_t): kinds interned, areas by municipality, and rules bucketed by
 * sender partner, theme, kind and municipality within POLICY_INDEX_RULE_FANOUT
 * and the budget. Trusts the rules policy_load.c validated: a bad value there
 * is a broken invariant and aborts. Returns no errors; dies on out-of-memory.
 */
#include "policy_internal.h"

#include <stdlib.h>
#include <string.h>

#include "syntax.h"

/* Smallest table (at least 16 slots) that keeps n entries at most half full. */
static unsigned table_bits(size_t n)
{
    unsigned bits = 4;
    while (((size_t)1 << bits) < 2 * n)
        bits++;
    return bits;
}

static void *xrealloc(void *old, size_t n, size_t size)
{
    if (n != 0 && size > SIZE_MAX / n)
        abort();
    void *p = realloc(old, n ? n * size : 1);
    if (p == NULL)
        abort(); /* the daemon may die on out-of-memory (STYLE.md) */
    return p;
}

static void names_insert(name_table_t *t, uint32_t id)
{
    size_t mask = ((size_t)1 << t->bits) - 1;
    size_t at = policy_hash_slot(policy_hash_text(t->names[id]), t->bits);
    while (t->slots[at] != 0)
        at = (at + 1) & mask;
    t->slots[at] = id + 1;
}

/* A table with room for `room` names over names[0..n), which are
 * distinct; takes names. */
static void names_build(name_table_t *t, const char **names, uint32_t n, size_t room)
{
    t->names = names;
    t->n_names = n;
    t->bits = table_bits(room);
    t->slots = policy_xcalloc((size_t)1 << t->bits, sizeof *t->slots);
    for (uint32_t id = 0; id < n; id++)
        names_insert(t, id);
}

static void names_free(name_table_t *t)
{
    free(t->names);
    free(t->slots);
    memset(t, 0, sizeof *t);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_area_ref(const void *a, const void *b)
{
    const area_ref_t *x = a, *y = b;
    if (x->municipality != y->municipality)
        return x->municipality < y->municipality ? -1 : 1;
    return strcmp(x->prefix, y->prefix);
}

/* Interns every kind the rules name (first use gives the id) and fills
 * each rule's kind_ids (ascending) and area_refs (by municipality). */
static void index_intern(policy_t *p)
{
    size_t n_kinds = 0, n_areas = 0;
    for (size_t i = 0; i < p->n_rules; i++) {
        n_kinds += p->rules[i].any_kind ? 0 : p->rules[i].n_kinds;
        n_areas += p->rules[i].any_area ? 0 : p->rules[i].n_areas;
    }
    if (n_kinds >= UINT32_MAX)
        abort(); /* far beyond what a 4 MiB file can name */
    rule_index_t *ix = &p->index;
    ix->kind_ids = policy_xcalloc(n_kinds, sizeof *ix->kind_ids);
    ix->area_refs = policy_xcalloc(n_areas, sizeof *ix->area_refs);
    /* sized for every occurrence first, then rebuilt for the distinct ones */
    name_table_t seen;
    names_build(&seen, policy_xcalloc(n_kinds, sizeof(const char *)), 0, n_kinds);
    uint32_t *kind_at = ix->kind_ids;
    area_ref_t *area_at = ix->area_refs;
    for (size_t i = 0; i < p->n_rules; i++) {
        rule_entry_t *r = &p->rules[i];
        if (!r->any_kind) {
            for (size_t k = 0; k < r->n_kinds; k++) {
                uint32_t id = policy_name_find(&seen, r->kinds[k]);
                if (id == POLICY_NO_ID) {
                    id = seen.n_names++;
                    seen.names[id] = r->kinds[k];
                    names_insert(&seen, id);
                }
                kind_at[k] = id;
            }
            qsort(kind_at, r->n_kinds, sizeof *kind_at, cmp_u32);
            r->kind_ids = kind_at;
            kind_at += r->n_kinds;
        }
        if (!r->any_area) {
            for (size_t k = 0; k < r->n_areas; k++) {
                area_at[k].municipality = policy_area_municipality(r->areas[k]);
                area_at[k].prefix = r->areas[k];
                if (area_at[k].municipality == POLICY_NO_ID)
                    abort(); /* syntax_is_area_prefix let it through: a broken invariant */
            }
            qsort(area_at, r->n_areas, sizeof *area_at, cmp_area_ref);
            r->area_refs = area_at;
            area_at += r->n_areas;
        }
    }
    free(seen.slots);
    names_build(&p->kinds, xrealloc(seen.names, seen.n_names, sizeof *seen.names), seen.n_names,
                seen.n_names);
}

/* How one rule is listed: its kind and municipality keys, 0 = under "*". */
typedef struct index_plan {
    uint32_t kinds, places;
    uint64_t entries; /* buckets the rule is listed in */
} index_plan_t;

static size_t rule_places(const rule_entry_t *r)
{
    size_t n = 0;
    for (size_t k = 0; k < r->n_areas; k++)
        n += k == 0 || r->area_refs[k].municipality != r->area_refs[k - 1].municipality;
    return n;
}

static uint64_t plan_entries(const rule_entry_t *r, const index_plan_t *plan)
{
    uint64_t themes = r->any_theme ? 1 : (uint64_t)__builtin_popcountll(r->themes);
    return (uint64_t)__builtin_popcountll(r->from_partners) * themes *
           (plan->kinds ? plan->kinds : 1) * (plan->places ? plan->places : 1);
}

static int cmp_plan_wider(const void *a, const void *b)
{
    const index_plan_t *const *x = a, *const *y = b;
    if ((*x)->entries != (*y)->entries)
        return (*x)->entries > (*y)->entries ? -1 : 1;
    return *x < *y ? -1 : *x > *y; /* earlier rule first: deterministic */
}

/* Per rule: its keys, capped at POLICY_INDEX_RULE_FANOUT kinds x
 * municipalities (the larger side goes under "*" first); then, while the
 * keyed entries exceed the budget, the widest rules go under "*" whole. */
static index_plan_t *index_plan(policy_t *p, size_t budget, uint64_t *keyed_entries)
{
    index_plan_t *plans = policy_xcalloc(p->n_rules, sizeof *plans);
    uint64_t keyed = 0;
    for (size_t i = 0; i < p->n_rules; i++) {
        const rule_entry_t *r = &p->rules[i];
        index_plan_t *plan = &plans[i];
        plan->kinds = r->any_kind ? 0 : (uint32_t)r->n_kinds;
        plan->places = r->any_area ? 0 : (uint32_t)rule_places(r);
        bool capped = false;
        while ((uint64_t)(plan->kinds ? plan->kinds : 1) * (plan->places ? plan->places : 1) >
               POLICY_INDEX_RULE_FANOUT) {
            if (plan->kinds >= plan->places)
                plan->kinds = 0;
            else
                plan->places = 0;
            capped = true;
        }
        p->index.n_capped += capped;
        plan->entries = plan_entries(r, plan);
        if (plan->kinds || plan->places)
            keyed += plan->entries;
    }
    if (keyed > budget) {
        index_plan_t **widest = policy_xcalloc(p->n_rules, sizeof *widest);
        size_t n = 0;
        for (size_t i = 0; i < p->n_rules; i++)
            if (plans[i].kinds || plans[i].places)
                widest[n++] = &plans[i];
        qsort(widest, n, sizeof *widest, cmp_plan_wider);
        for (size_t k = 0; k < n && keyed > budget; k++) {
            keyed -= widest[k]->entries;
            widest[k]->kinds = widest[k]->places = 0;
            widest[k]->entries = plan_entries(&p->rules[widest[k] - plans], widest[k]);
            p->index.n_over_budget++;
        }
        free(widest);
    }
    *keyed_entries = keyed;
    return plans;
}

/* The bucket of key, added (empty) when absent, where cap (the bucket
 * arrays' room) is given; the table grows past half full. */
static uint32_t index_bucket(rule_index_t *ix, uint64_t key, const size_t *cap)
{
    size_t mask = ((size_t)1 << ix->bits) - 1;
    size_t at = policy_hash_slot(key, ix->bits);
    for (; ix->slots[at] != 0; at = (at + 1) & mask)
        if (ix->keys[ix->slots[at] - 1] == key)
            return ix->slots[at] - 1;
    if (cap == NULL)
        abort(); /* the second pass finds only keys the first one added */
    if (ix->n_buckets == *cap || ix->n_buckets + 1 >= UINT32_MAX)
        abort(); /* the room is an upper bound: the plan's keyed entries + 1 per theme slot */
    uint32_t b = (uint32_t)ix->n_buckets++;
    ix->keys[b] = key;
    ix->start[b + 1] = 0;
    if (2 * ix->n_buckets <= ((size_t)1 << ix->bits)) {
        ix->slots[at] = b + 1;
        return b;
    }
    free(ix->slots); /* past half full: twice the slots, every key again */
    ix->bits++;
    ix->slots = policy_xcalloc((size_t)1 << ix->bits, sizeof *ix->slots);
    mask = ((size_t)1 << ix->bits) - 1;
    for (uint32_t k = 0; k < ix->n_buckets; k++) {
        for (at = policy_hash_slot(ix->keys[k], ix->bits); ix->slots[at] != 0;)
            at = (at + 1) & mask;
        ix->slots[at] = k + 1;
    }
    return b;
}

/* Every key rule i is listed under: pass 0 counts per bucket (adding
 * buckets), pass 1 writes the rule into its buckets' lists. */
static void index_list_rule(policy_t *p, size_t i, const index_plan_t *plan, int pass,
                            uint32_t *fill, const size_t *cap)
{
    const rule_entry_t *r = &p->rules[i];
    rule_index_t *ix = &p->index;
    uint64_t themes = r->any_theme ? UINT64_C(1) << p->n_themes : r->themes;
    size_t n_kinds = plan->kinds ? r->n_kinds : 1, n_places = plan->places ? r->n_areas : 1;
    for (uint64_t from = r->from_partners; from; from &= from - 1) {
        size_t base = (size_t)__builtin_ctzll(from) * (p->n_themes + 1);
        for (uint64_t t = themes; t; t &= t - 1) {
            size_t slot = base + (size_t)__builtin_ctzll(t);
            ix->shapes[slot] |= (uint8_t)(1u << ((plan->kinds ? 1 : 0) + (plan->places ? 2 : 0)));
            for (size_t k = 0; k < n_kinds; k++) {
                uint32_t kind = plan->kinds ? r->kind_ids[k] + 1 : 0;
                for (size_t a = 0; a < n_places; a++) {
                    if (plan->places && a > 0 &&
                        r->area_refs[a].municipality == r->area_refs[a - 1].municipality)
                        continue; /* one entry per municipality */
                    uint32_t place = plan->places ? r->area_refs[a].municipality + 1 : 0;
                    uint32_t b = index_bucket(ix, policy_index_key(slot, kind, place),
                                              pass == 0 ? cap : NULL);
                    if (pass == 0)
                        ix->start[b + 1]++;
                    else
                        ix->rules[ix->start[b] + fill[b]++] = (uint32_t)i;
                }
            }
        }
    }
}

void policy_index_free(policy_t *p)
{
    rule_index_t *ix = &p->index;
    free(ix->keys);
    free(ix->start);
    free(ix->rules);
    free(ix->slots);
    free(ix->shapes);
    free(ix->kind_ids);
    free(ix->area_refs);
    memset(ix, 0, sizeof *ix);
    names_free(&p->themes);
    names_free(&p->kinds);
    names_free(&p->partner_ids);
    for (size_t i = 0; i < p->n_rules; i++) {
        p->rules[i].kind_ids = NULL;
        p->rules[i].area_refs = NULL;
    }
}

void policy_index_build(policy_t *p, size_t budget)
{
    policy_index_free(p);
    const char **partner_ids = policy_xcalloc(p->n_partners, sizeof *partner_ids);
    for (size_t k = 0; k < p->n_partners; k++)
        partner_ids[k] = p->partners[k].id;
    names_build(&p->partner_ids, partner_ids, (uint32_t)p->n_partners, p->n_partners);
    const char **themes = policy_xcalloc(p->n_themes, sizeof *themes);
    for (size_t t = 0; t < p->n_themes; t++)
        themes[t] = syntax_themes[t];
    names_build(&p->themes, themes, (uint32_t)p->n_themes, p->n_themes);
    index_intern(p);
    uint64_t keyed = 0;
    index_plan_t *plans = index_plan(p, budget, &keyed);
    rule_index_t *ix = &p->index;
    /* Keyed buckets are at most the keyed entries; the others one per
     * (partner, theme slot): room for all, given back below. */
    size_t cap = (size_t)keyed + p->n_partners * (p->n_themes + 1);
    ix->keys = policy_xcalloc(cap, sizeof *ix->keys);
    ix->start = policy_xcalloc(cap + 1, sizeof *ix->start);
    ix->bits = table_bits(0);
    ix->slots = policy_xcalloc((size_t)1 << ix->bits, sizeof *ix->slots);
    ix->shapes = policy_xcalloc(p->n_partners * (p->n_themes + 1), sizeof *ix->shapes);
    for (size_t i = 0; i < p->n_rules; i++)
        index_list_rule(p, i, &plans[i], 0, NULL, &cap);
    for (size_t b = 0; b < ix->n_buckets; b++) {
        if (ix->start[b + 1] > UINT32_MAX - ix->start[b])
            abort(); /* offsets are 32-bit; the rule caps keep far below */
        if (policy_index_key_is_keyed(ix->keys[b]))
            ix->n_keyed += ix->start[b + 1]; /* counted as built, not as planned */
        ix->start[b + 1] += ix->start[b];
    }
    ix->n_entries = ix->start[ix->n_buckets];
    ix->keys = xrealloc(ix->keys, ix->n_buckets, sizeof *ix->keys);
    ix->start = xrealloc(ix->start, ix->n_buckets + 1, sizeof *ix->start);
    ix->rules = policy_xcalloc(ix->n_entries, sizeof *ix->rules);
    uint32_t *fill = policy_xcalloc(ix->n_buckets, sizeof *fill);
    for (size_t i = 0; i < p->n_rules; i++)
        index_list_rule(p, i, &plans[i], 1, fill, &cap);
    free(fill);
    free(plans);
}
