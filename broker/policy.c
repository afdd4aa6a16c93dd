/*
 * policy.c — answers questions about a loaded policy: lookups by id and by
 * key, role names, recipients of a grant, and who may receive a signal
 * (docs/POLICY.md). Loading and validation are policy_load.c.
 *
 * Trusts the policy (validated and indexed by the loader); trusts nothing
 * else: pointers are checked to belong to the policy. Decisions deny unless
 * a rule allows, with the reason in the decision.
 */
#include "policy_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "syntax.h"

/* ------------------------------------------------------------------ vocabulary */

static const struct {
    const char *name;
    role_t role;
} role_names[] = {
    {"system", ROLE_SYSTEM}, {"caseworker", ROLE_CASEWORKER}, {"operator", ROLE_OPERATOR}};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

role_t policy_role_parse(const char *name)
{
    for (size_t i = 0; i < COUNT_OF(role_names); i++)
        if (strcmp(name, role_names[i].name) == 0)
            return role_names[i].role;
    return ROLE_NONE;
}

const char *policy_role_name(role_t role)
{
    for (size_t i = 0; i < COUNT_OF(role_names); i++)
        if (role == role_names[i].role)
            return role_names[i].name;
    return "none";
}

size_t policy_theme_index(const char *theme)
{
    for (size_t i = 0; theme && syntax_themes[i] != NULL; i++)
        if (strcmp(theme, syntax_themes[i]) == 0)
            return i;
    return NO_INDEX;
}

/* ------------------------------------------------------------------ lookups */

/* Lookups are binary searches over the sorted pointer arrays the loader
 * built; ids and keys are unique there, so at most one entry matches. */

static int partner_by_id_cmp(const void *id, const void *entry)
{
    const policy_partner_t *const *partner = entry;
    return strcmp(id, (*partner)->id);
}

static int principal_by_id_cmp(const void *id, const void *entry)
{
    const policy_principal_t *const *principal = entry;
    return strcmp(id, (*principal)->id);
}

static int principal_by_curve_cmp(const void *curve_pk, const void *entry)
{
    const policy_principal_t *const *principal = entry;
    return memcmp(curve_pk, (*principal)->curve_pk, 32);
}

const policy_partner_t *policy_partner_by_id(const policy_t *policy, const char *id)
{
    if (policy == NULL || id == NULL || policy->n_partners == 0)
        return NULL;
    const policy_partner_t *const *found =
        bsearch(id, policy->partners_by_id, policy->n_partners, sizeof *policy->partners_by_id,
                partner_by_id_cmp);
    return found ? *found : NULL;
}

const policy_principal_t *policy_principal_by_id(const policy_t *policy, const char *id)
{
    if (policy == NULL || id == NULL || policy->n_principals == 0)
        return NULL;
    const policy_principal_t *const *found =
        bsearch(id, policy->principals_by_id, policy->n_principals,
                sizeof *policy->principals_by_id, principal_by_id_cmp);
    return found ? *found : NULL;
}

const policy_principal_t *policy_principal_by_curve_key(const policy_t *policy,
                                                        const uint8_t curve_pk[32])
{
    if (policy == NULL || curve_pk == NULL || policy->n_principals == 0)
        return NULL;
    const policy_principal_t *const *found =
        bsearch(curve_pk, policy->principals_by_curve, policy->n_principals,
                sizeof *policy->principals_by_curve, principal_by_curve_cmp);
    return found ? *found : NULL;
}

/* ------------------------------------------------------------------ accessors */

const char *policy_hash_hex(const policy_t *policy)
{
    return policy ? policy->hash_hex : "";
}

size_t policy_partner_count(const policy_t *policy)
{
    return policy ? policy->n_partners : 0;
}

const policy_partner_t *policy_partner_at(const policy_t *policy, size_t index)
{
    return policy && index < policy->n_partners ? &policy->partners[index] : NULL;
}

size_t policy_principal_count(const policy_t *policy)
{
    return policy ? policy->n_principals : 0;
}

const policy_principal_t *policy_principal_at(const policy_t *policy, size_t index)
{
    return policy && index < policy->n_principals ? &policy->principals[index] : NULL;
}

size_t policy_rule_count(const policy_t *policy)
{
    return policy ? policy->n_rules : 0;
}

const policy_rule_t *policy_rule_at(const policy_t *policy, size_t index)
{
    return policy && index < policy->n_rules ? &policy->rules[index].pub : NULL;
}

/* The entry behind a rule pointer, or NULL if it is not one of this policy's. */
static const rule_entry_t *rule_entry_of(const policy_t *p, const policy_rule_t *rule)
{
    uintptr_t at = (uintptr_t)rule, base = (uintptr_t)p->rules;
    if (rule == NULL || p->n_rules == 0 || at < base ||
        at >= base + p->n_rules * sizeof *p->rules || (at - base) % sizeof *p->rules != 0)
        return NULL;
    return &p->rules[(at - base) / sizeof *p->rules];
}

static bool principal_is_ours(const policy_t *p, const policy_principal_t *principal)
{
    uintptr_t at = (uintptr_t)principal, base = (uintptr_t)p->principals;
    return principal != NULL && p->n_principals > 0 && at >= base &&
           at < base + p->n_principals * sizeof *p->principals &&
           (at - base) % sizeof *p->principals == 0;
}

static int cmp_id_rule(const void *key, const void *element)
{
    const rule_entry_t *const *r = element;
    return strcmp(key, (*r)->pub.id);
}

const policy_rule_t *policy_rule_by_id(const policy_t *policy, const char *id)
{
    if (policy == NULL || id == NULL || policy->n_rules == 0)
        return NULL;
    const rule_entry_t *const *found =
        bsearch(id, policy->rules_by_id, policy->n_rules, sizeof *policy->rules_by_id, cmp_id_rule);
    return found != NULL ? &(*found)->pub : NULL;
}

int policy_rule_reaches(const policy_t *policy, const policy_rule_t *rule,
                        const policy_principal_t *principal)
{
    const rule_entry_t *r = rule_entry_of(policy, rule);
    if (r == NULL || principal == NULL || principal->role == ROLE_OPERATOR)
        return 0;
    return (r->to_partners >> principal->partner->index & 1) &&
           (r->to_roles & (unsigned)principal->role) != 0;
}

size_t policy_recipients(const policy_t *policy, const policy_rule_t *rule,
                         const policy_partner_t *partner, const policy_principal_t **out,
                         size_t max)
{
    if (policy == NULL || partner == NULL || out == NULL || partner->index >= policy->n_partners ||
        &policy->partners[partner->index] != partner)
        return 0;
    const rule_entry_t *r = rule_entry_of(policy, rule);
    if (r == NULL || !(r->to_partners >> partner->index & 1))
        return 0;
    size_t n = 0;
    for (uint32_t k = policy->partner_members_start[partner->index];
         k < policy->partner_members_start[partner->index + 1] && n < max; k++) {
        const policy_principal_t *pr = &policy->principals[policy->partner_members[k]];
        if (pr->role != ROLE_OPERATOR && (r->to_roles & (unsigned)pr->role))
            out[n++] = pr;
    }
    return n;
}

/* ------------------------------------------------------------------ decisions */

/* CBS levels GM < WK < BU; an area lies within a prefix when it is at the
 * prefix's level or below and its digits start with the prefix's digits:
 * GM0935 covers WK093501 and BU09350101, WK093501 covers BU09350101. */
static int area_level(const char *code)
{
    if (strncmp(code, "GM", 2) == 0)
        return 0;
    if (strncmp(code, "WK", 2) == 0)
        return 1;
    if (strncmp(code, "BU", 2) == 0)
        return 2;
    return -1;
}

static bool area_within(const char *area, const char *prefix)
{
    int la = area_level(area), lp = area_level(prefix);
    if (la < 0 || lp < 0 || la < lp)
        return false;
    size_t n = strlen(prefix + 2);
    return strncmp(area + 2, prefix + 2, n) == 0;
}

static bool rule_matches(const rule_entry_t *r, const policy_principal_t *sender,
                         const policy_signal_facts_t *facts)
{
    if (!(r->from_roles & (unsigned)sender->role))
        return false;
    if (!r->any_kind) {
        bool found = false;
        for (size_t i = 0; i < r->n_kinds && !found; i++)
            found = strcmp(r->kinds[i], facts->kind) == 0;
        if (!found)
            return false;
    }
    if (!r->any_area) {
        bool found = false;
        for (size_t i = 0; i < r->n_areas && !found; i++)
            found = area_within(facts->area, r->areas[i]);
        if (!found)
            return false;
    }
    return true;
}

typedef struct decide_state {
    uint64_t wanted, granted;
    const rule_entry_t *by_partner[SCHAKEL_MAX_PARTNERS];
    /* For the deny reason: a rule that would have matched but for case_ref,
     * and one that matched but reaches no principal of that partner. */
    const rule_entry_t *needs_case_ref[SCHAKEL_MAX_PARTNERS];
    const rule_entry_t *no_receiver[SCHAKEL_MAX_PARTNERS];
} decide_state_t;

static void decide_consider(decide_state_t *s, const rule_entry_t *r,
                            const policy_principal_t *sender, const policy_signal_facts_t *facts)
{
    uint64_t open = s->wanted & ~s->granted;
    uint64_t gain = r->to_reachable & open, unreachable = r->to_partners & ~r->to_reachable & open;
    if ((gain | unreachable) == 0 || !rule_matches(r, sender, facts))
        return;
    for (uint64_t m = unreachable; m; m &= m - 1) {
        size_t k = (size_t)__builtin_ctzll(m);
        if (s->no_receiver[k] == NULL)
            s->no_receiver[k] = r;
    }
    bool blocked = r->pub.require_case_ref && !facts->has_case_ref;
    for (uint64_t m = gain; m; m &= m - 1) {
        size_t k = (size_t)__builtin_ctzll(m);
        if (!blocked) {
            s->by_partner[k] = r;
            s->granted |= UINT64_C(1) << k;
        } else if (s->needs_case_ref[k] == NULL) {
            s->needs_case_ref[k] = r;
        }
    }
}

/* Walk the two candidate lists (sender partner x theme, sender partner x
 * "*") merged in file order; stop once every wanted partner is granted. */
static void decide_walk(const policy_t *p, decide_state_t *s, const policy_principal_t *sender,
                        const policy_signal_facts_t *facts)
{
    size_t slots_per = p->n_themes + 1, base = sender->partner->index * slots_per;
    size_t theme = policy_theme_index(facts->theme);
    size_t a = 0, a_end = 0, b = p->slot_start[base + p->n_themes],
           b_end = p->slot_start[base + p->n_themes + 1];
    if (theme != NO_INDEX) {
        a = p->slot_start[base + theme];
        a_end = p->slot_start[base + theme + 1];
    }
    while ((a < a_end || b < b_end) && s->granted != s->wanted) {
        uint32_t next;
        if (b >= b_end || (a < a_end && p->slot_rules[a] < p->slot_rules[b]))
            next = p->slot_rules[a++];
        else
            next = p->slot_rules[b++];
        decide_consider(s, &p->rules[next], sender, facts);
    }
}

static verdict_t decide_deny(policy_decision_t *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static verdict_t decide_deny(policy_decision_t *out, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(out->reason, sizeof out->reason, fmt, args);
    va_end(args);
    out->verdict = VERDICT_DENY;
    out->n_grants = 0;
    return VERDICT_DENY;
}

/* "no rule lets ..." naming the recipient (partner index k, or NO_INDEX
 * for "any partner"), with a hint when a rule came close. */
static verdict_t decide_deny_no_rule(const policy_t *p, const decide_state_t *s,
                                     const policy_principal_t *sender,
                                     const policy_signal_facts_t *facts, size_t k,
                                     policy_decision_t *out)
{
    char hint[160] = "";
    for (size_t i = k == NO_INDEX ? 0 : k; i < p->n_partners && hint[0] == '\0'; i++) {
        if (s->needs_case_ref[i])
            snprintf(hint, sizeof hint, " (rule \"%s\" requires case_ref)",
                     s->needs_case_ref[i]->pub.id);
        else if (s->no_receiver[i])
            snprintf(hint, sizeof hint,
                     " (rule \"%s\" matches, but %s has no principal with a role it delivers to)",
                     s->no_receiver[i]->pub.id, p->partners[i].id);
        if (k != NO_INDEX)
            break;
    }
    return decide_deny(out,
                       "no rule lets %s (%s) send signal kind \"%s\" theme \"%s\" in area %s "
                       "to %s%s",
                       sender->partner->id, sender->id, facts->kind, facts->theme, facts->area,
                       k == NO_INDEX ? "any partner" : p->partners[k].id, hint);
}

static int decide_wanted(const policy_t *p, const policy_signal_facts_t *facts, decide_state_t *s,
                         policy_decision_t *out)
{
    if (facts->n_recipients == 0) {
        s->wanted = p->n_partners == 64 ? UINT64_MAX : (UINT64_C(1) << p->n_partners) - 1;
        return 0;
    }
    if (facts->recipients == NULL) {
        decide_deny(out, "recipients missing");
        return -1;
    }
    for (size_t i = 0; i < facts->n_recipients; i++) {
        const policy_partner_t *partner = policy_partner_by_id(p, facts->recipients[i]);
        if (partner == NULL) {
            decide_deny(out, "unknown partner \"%.64s\" in recipients",
                        facts->recipients[i] ? facts->recipients[i] : "");
            return -1;
        }
        s->wanted |= UINT64_C(1) << partner->index;
    }
    return 0;
}

verdict_t policy_decide_signal(const policy_t *policy, const policy_principal_t *sender,
                               const policy_signal_facts_t *facts, policy_decision_t *out)
{
    if (out == NULL)
        return VERDICT_DENY;
    memset(out, 0, sizeof *out);
    if (policy == NULL || facts == NULL || !principal_is_ours(policy, sender))
        return decide_deny(out, "sender is not a principal of the current policy");
    if (sender->role == ROLE_OPERATOR)
        return decide_deny(out, "%s is an operator; operators never send signals", sender->id);
    if (facts->kind == NULL || facts->theme == NULL || facts->area == NULL)
        return decide_deny(out, "signal lacks kind, theme or area");
    decide_state_t s;
    memset(&s, 0, sizeof s);
    if (decide_wanted(policy, facts, &s, out) != 0)
        return VERDICT_DENY;
    decide_walk(policy, &s, sender, facts);
    if (facts->n_recipients > 0) {
        /* Named recipients: all or nothing, in the order the sender named them. */
        for (size_t i = 0; i < facts->n_recipients; i++) {
            const policy_partner_t *partner = policy_partner_by_id(policy, facts->recipients[i]);
            size_t k = partner->index;
            if (!(s.granted >> k & 1))
                return decide_deny_no_rule(policy, &s, sender, facts, k, out);
            if (s.by_partner[k] == NULL)
                continue; /* named twice: granted once already */
            out->grants[out->n_grants++] = (policy_grant_t){partner, &s.by_partner[k]->pub};
            s.by_partner[k] = NULL;
        }
    } else {
        for (size_t k = 0; k < policy->n_partners; k++)
            if (s.by_partner[k])
                out->grants[out->n_grants++] =
                    (policy_grant_t){&policy->partners[k], &s.by_partner[k]->pub};
        if (out->n_grants == 0)
            return decide_deny_no_rule(policy, &s, sender, facts, NO_INDEX, out);
    }
    out->verdict = VERDICT_ALLOW;
    return VERDICT_ALLOW;
}

/* ------------------------------------------------------------------ listings */

int policy_rule_scope(const policy_t *policy, const policy_rule_t *rule, policy_rule_scope_t *out)
{
    memset(out, 0, sizeof *out);
    const rule_entry_t *r = policy ? rule_entry_of(policy, rule) : NULL;
    if (r == NULL)
        return -1;
    out->from_partners = r->from_partners;
    out->to_partners = r->to_partners;
    out->from_roles = r->from_roles;
    out->to_roles = r->to_roles;
    out->any_kind = r->any_kind;
    out->any_theme = r->any_theme;
    out->any_area = r->any_area;
    if (!r->any_kind) {
        out->kinds = (const char *const *)r->kinds;
        out->n_kinds = r->n_kinds;
    }
    if (!r->any_theme)
        out->themes = r->themes;
    if (!r->any_area) {
        out->areas = (const char *const *)r->areas;
        out->n_areas = r->n_areas;
    }
    return 0;
}
