/*
 * policy.h — the access policy: partners, principals, rules, case types; and
 * decisions.
 *
 * Loads the YAML policy (docs/POLICY.md) with libcyaml, validates it with
 * file:line errors, and builds indexes so that a decision does not scan all
 * rules. A loaded policy is immutable: a reload builds a new one and swaps
 * it in whole. Decisions are pure functions of a validated signal and the
 * policy. Default deny is in the types: a zeroed decision denies.
 */
#ifndef SCHAKEL_POLICY_H
#define SCHAKEL_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "schakel_limits.h"

typedef enum verdict { VERDICT_DENY = 0, VERDICT_ALLOW = 1 } verdict_t;

typedef enum role { ROLE_NONE = 0, ROLE_SYSTEM = 1, ROLE_CASEWORKER = 2, ROLE_OPERATOR = 4 } role_t;

/* Fields of a Signal a rule may pass to the recipient. sender, kind and
 * theme always pass: they say what the delivery is and who stands behind
 * it. Everything not in a rule's mask is removed before delivery. */
enum signal_field {
    FIELD_AREA = 1u << 0,
    FIELD_ADDRESS = 1u << 1,
    FIELD_SUBJECT = 1u << 2,
    FIELD_GROUNDS = 1u << 3,
    FIELD_CASE_REF = 1u << 4,
    FIELD_SEVERITY = 1u << 5,
    FIELD_OBSERVED_AT = 1u << 6,
    FIELD_SUMMARY = 1u << 7,
    FIELD_SOURCE_REF = 1u << 8,
    FIELD_RECIPIENTS = 1u << 9,
};

typedef struct policy_partner {
    char *id;     /* "gemeente" */
    char *name;   /* display name */
    size_t index; /* position in the policy, 0..n_partners-1 */
} policy_partner_t;

typedef struct policy_principal {
    char *id; /* "politie/bvh-koppeling" */
    const policy_partner_t *partner;
    role_t role;
    uint8_t sign_pk[32];  /* Ed25519 */
    uint8_t curve_pk[32]; /* X25519, what ZAP presents */
} policy_principal_t;

typedef struct policy_rule {
    char *id;
    char hash_hex[65];   /* BLAKE2b-256 over the rule's canonical content */
    char *purpose;       /* doelbinding */
    char *legal_basis;   /* grondslag */
    uint32_t fields;     /* enum signal_field mask */
    int64_t retention_s; /* bewaartermijn in seconds */
    int require_case_ref;
    unsigned line; /* line in the policy file, for explanations */
} policy_rule_t;

/* The facts of a validated signal that decisions look at. */
typedef struct policy_signal_facts {
    const char *kind;
    const char *theme;
    const char *area;
    int has_subject;
    int has_case_ref;
    const char *const *recipients; /* partner ids the sender names; may be empty */
    size_t n_recipients;
} policy_signal_facts_t;

/* One entitled recipient partner and the rule that entitles it. */
typedef struct policy_grant {
    const policy_partner_t *partner;
    const policy_rule_t *rule;
} policy_grant_t;

typedef struct policy_decision {
    verdict_t verdict; /* VERDICT_DENY unless set otherwise */
    size_t n_grants;
    policy_grant_t grants[SCHAKEL_MAX_PARTNERS];
    char reason[256]; /* on deny: for which sender, recipient, kind, theme */
} policy_decision_t;

typedef struct policy policy_t;

/* Load and validate a policy file. Secret material is not involved. Keys are
 * given inline (`key: Z85`) or as `key_file:` relative to the folder of
 * path as given. Refused when group or others may write the file or its
 * folder, or it is not UTF-8 (yamlguard_read_file, yamlguard_walk). On
 * error returns NULL and writes "FILE:LINE: message" (or "FILE: message")
 * into err. */
policy_t *policy_load(const char *path, char *err, size_t errlen);

/* The same from bytes already in memory (at most SCHAKEL_MAX_POLICY_BYTES);
 * `name` is used in messages ("NAME:LINE: ..."). `key_file:` entries are
 * resolved against base_dir; with base_dir NULL they are refused, so that
 * untrusted input never makes the loader open files. Safe on untrusted input. */
policy_t *policy_load_buffer(const char *name, const uint8_t *buf, size_t len, const char *base_dir,
                             char *err, size_t errlen);
void policy_destroy(policy_t **policy);

/* Hex BLAKE2b-256 of the policy file's bytes. */
const char *policy_hash_hex(const policy_t *policy);

const policy_principal_t *policy_principal_by_curve_key(const policy_t *policy,
                                                        const uint8_t curve_pk[32]);
const policy_principal_t *policy_principal_by_id(const policy_t *policy, const char *id);
const policy_partner_t *policy_partner_by_id(const policy_t *policy, const char *id);

size_t policy_partner_count(const policy_t *policy);
const policy_partner_t *policy_partner_at(const policy_t *policy, size_t index);
size_t policy_principal_count(const policy_t *policy);
const policy_principal_t *policy_principal_at(const policy_t *policy, size_t index);
size_t policy_rule_count(const policy_t *policy);
const policy_rule_t *policy_rule_at(const policy_t *policy, size_t index);

/* The rule with this id in the policy, or NULL. O(log rules). */
const policy_rule_t *policy_rule_by_id(const policy_t *policy, const char *id);

/* 1 if a delivery under `rule` may go to `principal` (its partner is in the
 * rule's `to` and its role in `to_roles`); 0 otherwise. */
int policy_rule_reaches(const policy_t *policy, const policy_rule_t *rule,
                        const policy_principal_t *principal);

/* Principals of a partner that a delivery under `rule` goes to: every
 * principal of the partner whose role the rule's `to_roles` admits (default:
 * system and caseworker; operators never). Fills out (up to max) and returns
 * the count written, in file order of the principals. */
size_t policy_recipients(const policy_t *policy, const policy_rule_t *rule,
                         const policy_partner_t *partner, const policy_principal_t **out,
                         size_t max);

/* Decide who may receive a signal from `sender`. Without named recipients:
 * ALLOW with one grant per partner some rule entitles (first matching rule
 * in file order per partner), DENY if there is none. With named recipients:
 * ALLOW only if every named partner is entitled (grants for exactly those),
 * else DENY naming the first partner no rule allows. A rule with
 * require_case_ref does not match a signal without case_ref. Operators
 * never send. Cost: hash lookups on (sender partner, theme), then only the
 * rules indexed there; it does not grow with the total number of rules. */
verdict_t policy_decide_signal(const policy_t *policy, const policy_principal_t *sender,
                               const policy_signal_facts_t *facts, policy_decision_t *out);

/* "system", "caseworker", "operator". */
const char *policy_role_name(role_t role);

/* The policy's name of one signal field (a single enum signal_field bit):
 * "area", "address", ...; NULL for anything else. */
const char *policy_field_name(uint32_t field);

/* What a rule matches and whom it reaches, for explanations and listings
 * (schakelctl rules). Borrowed from the policy: valid while it lives. */
typedef struct policy_rule_scope {
    uint64_t from_partners; /* bit i: policy_partner_at(policy, i) */
    uint64_t to_partners;
    unsigned from_roles; /* role_t bits, defaults filled in */
    unsigned to_roles;
    int any_kind, any_theme, any_area; /* "*" (or kinds left out) */
    const char *const *kinds;          /* as written, when !any_kind */
    size_t n_kinds;
    uint64_t themes;          /* bit i: syntax_themes[i], when !any_theme */
    const char *const *areas; /* codes or prefixes as written, when !any_area */
    size_t n_areas;
} policy_rule_scope_t;

/* Fill *out for a rule of this policy. Returns 0, or -1 when rule is not
 * one of the policy's (out zeroed). */
int policy_rule_scope(const policy_t *policy, const policy_rule_t *rule, policy_rule_scope_t *out);

/* ------------------------------------------------------------------ cases */

/* A case type of the policy (docs/POLICY.md "Case types"): who may open and
 * lead a case of this type, who may be a member under which membership
 * rule, how long its contents may be kept after the close. Borrowed from
 * the policy: valid while it lives. */
typedef struct policy_case_type {
    char *id;                        /* id token of at most 59 bytes */
    char hash_hex[65];               /* BLAKE2b-256 over the canonical form, members included */
    char *purpose;                   /* doelbinding */
    char *legal_basis;               /* grondslag */
    int64_t retention_after_close_s; /* bewaartermijn, counted from the close */
    int reopen_allowed;
    unsigned line; /* line in the policy file */
} policy_case_type_t;

/* A membership rule: which partners may be members of cases of one type,
 * for which purpose and on which legal basis, and which fields of the
 * case they see. Every case type also has an implicit one for its lead,
 * "<case_type>.lead", that sees every field. */
typedef struct policy_case_member_rule {
    char *id;          /* unique among signal rules and membership rules */
    char hash_hex[65]; /* BLAKE2b-256 over the canonical form */
    char *purpose;
    char *legal_basis;
    const policy_case_type_t *case_type;
    int is_lead;   /* the implicit <type>.lead rule */
    unsigned line; /* the members entry; for the lead rule the case type's */
} policy_case_member_rule_t;

/* The case type with this id, or NULL. O(log case types). */
const policy_case_type_t *policy_case_type_by_id(const policy_t *policy, const char *id);

/* Case types in file order; _at returns NULL past the end. */
size_t policy_case_type_count(const policy_t *policy);
const policy_case_type_t *policy_case_type_at(const policy_t *policy, size_t i);

/* May `opener` open (and so lead) a case of this type: its partner is in
 * the type's `lead`, its role in `lead_roles` (operators never)? On deny,
 * writes why into reason (may be NULL) naming opener and case type. A type
 * or principal that is not this policy's denies. */
verdict_t policy_case_may_open(const policy_t *policy, const policy_case_type_t *type,
                               const policy_principal_t *opener, char *reason, size_t len);

/* May `actor` act on behalf of `lead_partner` in cases of this type? ALLOW
 * only when actor is listed in the type's `on_behalf` (never an operator)
 * and lead_partner is one of the type's lead partners. A principal of the
 * lead partner acting for itself needs no on_behalf: this answers only
 * whether the acting-for is allowed. */
verdict_t policy_case_may_act_for(const policy_t *policy, const policy_case_type_t *type,
                                  const policy_principal_t *actor,
                                  const policy_partner_t *lead_partner);

/* The membership rule under which `partner` may be a member of a case of
 * this type whose lead partner is `lead`: the implicit lead rule when
 * partner is lead (and lead still one of the type's lead partners), else
 * the type's membership rule that lists partner. NULL: deny. Does not look
 * at principals: membership belongs to the partner. */
const policy_case_member_rule_t *policy_case_membership(const policy_t *policy,
                                                        const policy_case_type_t *type,
                                                        const policy_partner_t *partner,
                                                        const policy_partner_t *lead);

/* 1 if `principal` receives the case deliveries of a member under `rule`:
 * its partner is one the rule lists (the lead rule: the type's lead
 * partners) and its role one of the rule's roles (lead rule: lead_roles);
 * operators never. 0 otherwise, also for a rule or principal from
 * elsewhere. */
int policy_case_member_reaches(const policy_t *policy, const policy_case_member_rule_t *rule,
                               const policy_principal_t *principal);

/* 1 if members under `rule` may see `name`: a reserved name ("text": note
 * text and close/reopen reasons; "subject", "address": of the opened case;
 * "attachments") or a structured note field's name; 0 otherwise (also for
 * NULL). The lead rule and rules with fields ["*"] see every id token.
 * `rule` must come from a lookup of a loaded policy. O(log fields). */
int policy_case_member_sees(const policy_case_member_rule_t *rule, const char *name);

/* The signal fields (enum signal_field mask) members under `rule` see of
 * a signal linked to the case; the lead rule: all. 0 for NULL. */
uint32_t policy_case_member_signal_fields(const policy_case_member_rule_t *rule);

/* The membership rule with this id (lead rules included), or NULL. Signal
 * rules are found by policy_rule_by_id; the two never share an id.
 * O(log rules). */
const policy_case_member_rule_t *policy_case_member_rule_by_id(const policy_t *policy,
                                                               const char *id);

/* ------------------------------------------------------------------ warnings */

/* What a valid policy says that can never take effect (docs/POLICY.md
 * section 5, "Rules that never decide", and section 12): found at every
 * load, reported as warnings; the policy loads all the same. */
typedef enum policy_warning_kind {
    POLICY_WARNING_NONE = 0,
    POLICY_WARNING_RULE_SHADOWED,      /* a rule never decides for some partners of its `to` */
    POLICY_WARNING_RULE_NEVER_APPLIES, /* ... for any of them */
    POLICY_WARNING_ON_BEHALF_UNUSED,   /* on_behalf names a principal of the only lead partner */
    POLICY_WARNING_CHECK_STOPPED,      /* the check's budget ran out: rules left unchecked */
} policy_warning_kind_t;

typedef struct policy_warning {
    policy_warning_kind_t kind;
    const policy_rule_t *rule; /* RULE_*: the rule that never decides; CHECK_STOPPED: the
                                * first rule not checked */
    uint64_t partners;         /* RULE_*: the partners it never decides for (bit i:
                                * policy_partner_at(policy, i)) */
    size_t n_by;               /* RULE_*: the earlier rules deciding first (policy_warning_by) */
    const policy_case_type_t *case_type; /* ON_BEHALF_UNUSED */
    const policy_principal_t *principal; /* ON_BEHALF_UNUSED: the on_behalf entry */
} policy_warning_t;

/* Warnings of the policy, rules in file order, then case types. */
size_t policy_warning_count(const policy_t *policy);

/* Fill *out with warning i. Returns 0, or -1 past the end (out zeroed). */
int policy_warning_at(const policy_t *policy, size_t i, policy_warning_t *out);

/* The j-th earlier rule (in file order) that matches every signal warning
 * i's rule matches and decides first for *partners of it; NULL past the
 * end or for another kind of warning. */
const policy_rule_t *policy_warning_by(const policy_t *policy, size_t i, size_t j,
                                       uint64_t *partners);

/* Warning i as one line for operators, e.g. `rule "x" (line 40) never
 * decides for om: rule "y" (line 12) matches every signal it matches`,
 * into buf (NUL-terminated; a line longer than len ends in "..."). Returns
 * the length written; 0 (buf "") past the end. */
size_t policy_warning_format(const policy_t *policy, size_t i, char *buf, size_t len);

/* The steps the check took at load (a rule looked at, or an entry of
 * kinds or areas read comparing two): its cost, for tests and benchmarks. */
uint64_t policy_warning_work(const policy_t *policy);

#endif
