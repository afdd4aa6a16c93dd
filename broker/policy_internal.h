/*
 * policy_internal.h — the loaded policy's layout, shared by the loader
 * (policy_load.c builds it), the runtime (policy.c answers lookups and
 * decisions from it) and the case types (policy_case.c builds and answers
 * both for them). Private to those files; not installed, not for other
 * modules, which see only policy.h.
 */
#ifndef SCHAKEL_POLICY_INTERNAL_H
#define SCHAKEL_POLICY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
} rule_entry_t;

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
    uint32_t *slot_start;             /* n_partners * (n_themes + 1) + 1 offsets into slot_rules */
    uint32_t *slot_rules;             /* rule indexes, file order within a slot */
    case_type_entry_t *case_types;    /* file order */
    size_t n_case_types;
    const case_type_entry_t **case_types_by_id;
    case_member_entry_t *case_members; /* per type: its lead rule, then its members */
    size_t n_case_members;
    const case_member_entry_t **case_members_by_id;
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

/* Free what policy_case_types_build allocated (not the document). */
void policy_case_types_free(policy_t *p);

#endif
