/*
 * policy_internal.h — the loaded policy's layout, shared by the loader
 * (policy_load.c builds it, policy_index.c its decision index), the runtime (policy.c answers
 * lookups and decisions from it) and the case types (policy_case.c builds and answers both for
 * them). Private to those files; not installed, not for other modules, which see only policy.h.
 */
#ifndef SCHAKEL_POLICY_INTERNAL_H
#define SCHAKEL_POLICY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "policy.h"

_Static_assert(SCHAKEL_MAX_PARTNERS <= 64, "partner sets are 64-bit masks");

/* "Not found" for index lookups. */
#define NO_INDEX ((size_t)-1)

typedef struct rule_entry {
    policy_rule_t pub;      /* what the API hands out; first member */
    size_t index;           /* file order */
    uint64_t from_partners; /* bit i = partner index i */
    uint64_t to_partners;   /* as written */
    uint64_t to_reachable;  /* to_partners with a principal that to_roles admits */
    unsigned from_roles;
    unsigned to_roles;
    uint64_t themes; /* bit i = syntax_themes[i]; unused when any_theme */
    bool any_theme, any_kind, any_area;
    char *const *kinds;
    size_t n_kinds;
    char *const *areas;
    size_t n_areas;
    /* Built with the decision index (policy_index_build), for matching
     * without string scans: */
    const uint32_t *kind_ids;         /* n_kinds interned kinds, ascending; NULL when any_kind */
    const struct area_ref *area_refs; /* n_areas areas by municipality; NULL when any_area */
} rule_entry_t;

/* One `areas` entry of a rule with its municipality (the 4 digits after
 * GM/WK/BU, 0..9999): an entry can cover a signal's area only when both
 * name the same municipality. */
typedef struct area_ref {
    uint32_t municipality;
    const char *prefix; /* as written */
} area_ref_t;

/* Interned names: open addressing over a power-of-two table, linear
 * probing, load at most one half. */
typedef struct name_table {
    const char **names; /* by id */
    uint32_t n_names;
    uint32_t *slots; /* 0: empty; else id + 1 */
    unsigned bits;   /* log2 of the slot count */
} name_table_t;

/* The decision index (docs/POLICY.md "How a decision is made", Cost).
 * A bucket key is (sender partner, theme slot, kind slot, municipality
 * slot); each slot is a value or "*". A rule is listed, once per key, under
 * every partner of its `from` x every theme of its `themes` (or "*") x
 * every kind of its `kinds` (or "*") x every municipality its `areas` name
 * (or "*"). A decision reads the at most 8 buckets its signal's keys and
 * "*" give, merged in file order, and then checks each rule it finds in
 * full: the index only has to list a superset of the matching rules in
 * file order, so a rule may be listed under "*" for its kinds or areas
 * instead (it then costs a check in more decisions, never a wrong one).
 * That is what bounds the index's size: a rule whose kinds x
 * municipalities exceed POLICY_INDEX_RULE_FANOUT, and the widest rules
 * once the keyed entries exceed the budget, are listed under "*". */
typedef struct rule_index {
    uint64_t *keys;  /* per bucket */
    uint32_t *start; /* n_buckets + 1 offsets into rules */
    uint32_t *rules; /* rule indexes, file order within a bucket */
    uint32_t *slots; /* 0: empty; else bucket + 1 */
    unsigned bits;   /* log2 of the slot count */
    uint8_t *shapes; /* per (partner, theme slot): bit kind? + 2 * municipality? set when
                      * some bucket of that shape exists, so absent ones cost no lookup */
    size_t n_buckets;
    size_t n_entries;      /* all of rules[] */
    size_t n_keyed;        /* entries in buckets with a kind or a municipality */
    size_t n_capped;       /* rules listed under "*" beyond what they say: fan-out */
    size_t n_over_budget;  /* ... and: the budget */
    uint32_t *kind_ids;    /* pool behind rule_entry_t.kind_ids */
    area_ref_t *area_refs; /* pool behind rule_entry_t.area_refs */
} rule_index_t;

/* Keys of kinds x municipalities one rule may add per (partner, theme). */
#define POLICY_INDEX_RULE_FANOUT 64u
/* Entries in buckets keyed by a kind or a municipality, over all rules:
 * 4 MiB of entries and at most ~28 MiB of buckets in the worst case. */
#define POLICY_INDEX_BUDGET ((size_t)1 << 20)
/* "No such kind / municipality": only "*" buckets apply. */
#define POLICY_NO_ID UINT32_MAX

struct doc_policy; /* the document as libcyaml loaded it (policy_load.c) */

/* case_types as libcyaml loads them; the schema is policy_case.c's,
 * policy_load.c puts it under the top-level key `case_types`. */
typedef struct doc_case_member {
    char *id;
    char **partners;
    unsigned partners_count;
    char **roles;
    unsigned roles_count;
    char *purpose;
    char *legal_basis;
    char **fields;
    unsigned fields_count;
    char **signal_fields;
    unsigned signal_fields_count;
} doc_case_member_t;

typedef struct doc_case_type {
    char *id;
    char *purpose;
    char *legal_basis;
    char **lead;
    unsigned lead_count;
    char **lead_roles;
    unsigned lead_roles_count;
    char **on_behalf;
    unsigned on_behalf_count;
    doc_case_member_t *members;
    unsigned members_count;
    char *retention_after_close;
    char *reopen; /* "true" or "false", checked like require_case_ref */
} doc_case_type_t;

struct cyaml_schema_value;
extern const struct cyaml_schema_value policy_case_type_schema; /* one case_types entry */

/* A membership rule as the runtime needs it. */
typedef struct case_member_entry {
    policy_case_member_rule_t pub; /* what the API hands out; first member */
    uint64_t partners;             /* bit i = partner index i; lead rule: the lead partners */
    unsigned roles;                /* role_t bits, default filled in */
    bool all_fields;               /* fields ["*"], and the lead rule */
    const char **fields_sorted;    /* fields by strcmp, for policy_case_member_sees */
    size_t n_fields;
    uint32_t signal_fields; /* enum signal_field mask */
} case_member_entry_t;

typedef struct case_type_entry {
    policy_case_type_t pub; /* first member */
    uint64_t lead_partners;
    unsigned lead_roles;
    uint32_t *on_behalf; /* principal indexes, sorted, for bsearch */
    size_t n_on_behalf;
    size_t first_member; /* into policy.case_members: the lead rule, then the members */
    size_t n_members;    /* written members, lead rule not counted */
    uint8_t member_of[SCHAKEL_MAX_PARTNERS]; /* 1 + member index per partner, 0 = none */
} case_type_entry_t;

/* One finding of policy_warn.c (policy.h policy_warning_t): its kind, the
 * rule or case type it is about, and for a rule that never decides, its
 * pairs (the earlier rules deciding first) in policy.shadow_pairs. */
typedef struct warning_entry {
    policy_warning_kind_t kind;
    uint32_t subject;    /* rule index; ON_BEHALF_UNUSED: case type index */
    uint32_t principal;  /* ON_BEHALF_UNUSED: principal index */
    uint64_t partners;   /* RULE_*: the partners of its `to` it never decides for */
    uint32_t first_pair; /* RULE_*: into policy.shadow_pairs, by earlier rule */
    uint32_t n_pairs;
} warning_entry_t;

/* An earlier rule that matches every signal a later one matches and
 * decides first for these partners of the later rule's `to`. */
typedef struct shadow_pair {
    uint32_t by; /* rule index */
    uint64_t partners;
} shadow_pair_t;

/* Steps the check for rules that never decide may take at one load
 * (POLICY.md 5, "Rules that never decide"): a rule looked at, or an entry
 * of kinds or areas read comparing two. Past it the check stops and says
 * so (POLICY_WARNING_CHECK_STOPPED): no policy makes a load slow. */
#define POLICY_SHADOW_BUDGET ((uint64_t)1 << 26)

struct policy {
    struct doc_policy *doc; /* owns every string the structures below point to */
    char hash_hex[65];
    policy_partner_t *partners;
    size_t n_partners;
    const policy_partner_t **partners_by_id;
    unsigned partner_roles[SCHAKEL_MAX_PARTNERS]; /* roles present per partner */
    policy_principal_t *principals;
    size_t n_principals;
    const policy_principal_t **principals_by_id;
    const policy_principal_t **principals_by_curve;
    uint32_t *partner_members_start; /* n_partners + 1 offsets into partner_members */
    uint32_t *partner_members;       /* principal indexes grouped by partner */
    rule_entry_t *rules;
    size_t n_rules;
    const rule_entry_t **rules_by_id; /* sorted by id, for policy_rule_by_id */
    size_t n_themes;                  /* theme slots per partner: n_themes + 1 ("*" last) */
    name_table_t themes;              /* syntax_themes, id = position */
    name_table_t kinds;               /* every kind a rule names, interned */
    name_table_t partner_ids;         /* partner ids by hash, for decisions */
    rule_index_t index;               /* candidate rules of a decision */
    case_type_entry_t *case_types;    /* file order */
    size_t n_case_types;
    const case_type_entry_t **case_types_by_id;
    case_member_entry_t *case_members; /* per type: its lead rule, then its members */
    size_t n_case_members;
    const case_member_entry_t **case_members_by_id;
    warning_entry_t *warnings; /* policy_warn.c, in file order of their subject */
    size_t n_warnings;
    shadow_pair_t *shadow_pairs;
    size_t n_shadow_pairs;
    uint64_t shadow_work; /* steps of policy_warn.c's check: its cost (policy_warning_work) */
};

/* The role a policy writes as `name` ("system", "caseworker", "operator"),
 * or ROLE_NONE. */
role_t policy_role_parse(const char *name);

/* Position of `theme` in syntax_themes, or NO_INDEX (also for NULL). */
size_t policy_theme_index(const char *theme);

/* One field of a canonical form for content hashes (docs/POLICY.md
 * "Rule hash"): u32 name length, name, u32 value count, then each value as
 * u32 length and bytes, lengths big-endian. */
void policy_hash_field(crypto_generichash_state *st, const char *name, const char *const *values,
                       size_t n);

/* Retention "N" + s/m/h/d/y as rules write it: 0 and *seconds, -1 for bad
 * syntax, -2 over SCHAKEL_MAX_RETENTION_S. */
int policy_retention_parse(const char *text, int64_t *seconds);

struct linemap;
struct yamlguard_report;

/* Validate and index the document's case types (policy_case.c) into p,
 * after partners, principals and rules are built. Returns 0, or -1 with
 * "NAME:LINE: message" written through report. */
int policy_case_types_build(policy_t *p, const doc_case_type_t *types, size_t n,
                            const struct yamlguard_report *report, const struct linemap *map);

/* calloc that never returns NULL (at least one element): the loader may
 * abort on out-of-memory (STYLE.md). Shared by the policy's builders. */
void *policy_xcalloc(size_t n, size_t size);

/* Pointers to items[0..n), sorted by their strings, ties by position (a
 * string's copies stand together, the first first): a new array
 * (policy_xcalloc) the caller frees. */
char *const **policy_sorted_slots(char *const *items, size_t n);

/* Free what policy_case_types_build allocated (not the document). */
void policy_case_types_free(policy_t *p);

/* (Re)build p's decision index, interned kinds, theme and partner-id tables from
 * its rules (policy_index.c), with at most `budget` keyed entries
 * (POLICY_INDEX_BUDGET when loading; tests pass less to exercise the
 * fallback). Decisions are the same for every budget; only their cost
 * differs. Dies on out-of-memory. */
void policy_index_build(policy_t *p, size_t budget);

/* Free what policy_index_build allocated; idempotent. */
void policy_index_free(policy_t *p);

/* Find what p (loaded and indexed) says that can never take effect
 * (policy_warn.c): rules that never decide for a partner of their `to`,
 * compared pairwise in at most `budget` steps (POLICY_SHADOW_BUDGET
 * when loading; tests pass less), and on_behalf entries never used.
 * Replaces earlier findings. Dies on out-of-memory. */
void policy_warnings_build(policy_t *p, uint64_t budget);

/* Free what policy_warnings_build allocated; idempotent. */
void policy_warnings_free(policy_t *p);

/* The index buckets a signal of sender partner `partner` with these keys
 * reads (theme NO_INDEX, kind or municipality POLICY_NO_ID: only "*"), at
 * most 8; each lists rule indexes ascending. A rule is in at most one of
 * them. Returns their count. */
size_t policy_index_candidates(const policy_t *p, size_t partner, size_t theme, uint32_t kind,
                               uint32_t municipality, const uint32_t *begin[8],
                               const uint32_t *end[8]);

/* Id of `name` in t, or POLICY_NO_ID (also for NULL). O(1) expected. */
uint32_t policy_name_find(const name_table_t *t, const char *name);

/* Municipality of an area code or prefix: the 4 digits after GM, WK or BU
 * as a number, or POLICY_NO_ID when `area` does not start that way. An
 * area without one lies within no rule's area entry but "*". */
static inline uint32_t policy_area_municipality(const char *area)
{
    if (area == NULL || !((area[0] == 'G' && area[1] == 'M') ||
                          (area[0] == 'W' && area[1] == 'K') || (area[0] == 'B' && area[1] == 'U')))
        return POLICY_NO_ID;
    uint32_t m = 0;
    for (int i = 2; i < 6; i++) {
        if (area[i] < '0' || area[i] > '9')
            return POLICY_NO_ID;
        m = m * 10 + (uint32_t)(area[i] - '0');
    }
    return m;
}

/* CBS levels GM < WK < BU; an area (or an area entry) lies within an
 * entry when it is at the entry's level or below and its digits start
 * with the entry's: GM0935 covers WK093501 and BU09350101, WK093501 covers
 * BU09350101; WK0935 covers WK093501 but not GM0935. */
static inline int policy_area_level(const char *code)
{
    if (code[0] == 'G' && code[1] == 'M')
        return 0;
    if (code[0] == 'W' && code[1] == 'K')
        return 1;
    if (code[0] == 'B' && code[1] == 'U')
        return 2;
    return -1;
}

static inline bool policy_area_within(const char *area, const char *prefix)
{
    int la = policy_area_level(area), lp = policy_area_level(prefix);
    if (la < 0 || lp < 0 || la < lp)
        return false;
    size_t n = strlen(prefix + 2);
    return strncmp(area + 2, prefix + 2, n) == 0;
}

/* Bucket key; kind_slot and municipality_slot are 0 for "*", else the
 * kind id + 1 and the municipality + 1. theme_slot is partner * (n_themes
 * + 1) + theme, with theme n_themes for "*": below 2^10, so the three
 * fit 64 bits (kind ids stay below 2^32 - 1, municipalities below 10^4). */
static inline uint64_t policy_index_key(size_t theme_slot, uint32_t kind_slot,
                                        uint32_t municipality_slot)
{
    return (uint64_t)theme_slot << 46 | (uint64_t)kind_slot << 14 | municipality_slot;
}

/* 1 if the key names a kind or a municipality (not "*" for both). */
static inline int policy_index_key_is_keyed(uint64_t key)
{
    return (key & ((UINT64_C(1) << 46) - 1)) != 0;
}

/* Slot of a hash table of 2^bits slots (bits 1..63) for a 64-bit value:
 * Fibonacci hashing, the product's high bits. */
static inline size_t policy_hash_slot(uint64_t x, unsigned bits)
{
    x ^= x >> 31;
    return (size_t)((x * UINT64_C(0x9E3779B97F4A7C15)) >> (64 - bits));
}

/* Hash of a NUL-terminated string: every byte, 8 per step, the last
 * (partial) word read as the string's last 8 bytes (bytes are read in
 * this machine's order: values never leave the process). */
static inline uint64_t policy_hash_text(const char *s)
{
    const uint64_t mul = UINT64_C(0xff51afd7ed558ccd);
    size_t len = strlen(s);
    uint64_t h = UINT64_C(0x9E3779B97F4A7C15) ^ len, word = 0;
    if (len < 8) {
        for (size_t i = 0; i < len; i++)
            word = word << 8 | (uint8_t)s[i];
        h = (h ^ word) * mul;
        return h ^ (h >> 32);
    }
    for (size_t at = 0; at + 8 < len; at += 8) {
        memcpy(&word, s + at, 8);
        h = (h ^ word) * mul;
        h ^= h >> 32;
    }
    memcpy(&word, s + len - 8, 8);
    h = (h ^ word) * mul;
    return h ^ (h >> 32);
}

#endif
