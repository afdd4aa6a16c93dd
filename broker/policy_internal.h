/*
 * policy_internal.h — the loaded policy's layout, shared by the loader
 * (policy_load.c builds it) and the runtime (policy.c answers lookups and
 * decisions from it). Private to those two files; not installed, not for
 * other modules, which see only policy.h.
 */
#ifndef SCHAKEL_POLICY_INTERNAL_H
#define SCHAKEL_POLICY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
} rule_entry_t;

struct doc_policy; /* the document as libcyaml loaded it (policy_load.c) */

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
    size_t n_themes;      /* theme slots per partner: n_themes + 1 ("*" last) */
    uint32_t *slot_start; /* n_partners * (n_themes + 1) + 1 offsets into slot_rules */
    uint32_t *slot_rules; /* rule indexes, file order within a slot */
};

/* The role a policy writes as `name` ("system", "caseworker", "operator"),
 * or ROLE_NONE. */
role_t policy_role_parse(const char *name);

/* Position of `theme` in syntax_themes, or NO_INDEX (also for NULL). */
size_t policy_theme_index(const char *theme);

#endif
