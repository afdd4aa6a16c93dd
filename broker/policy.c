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

/* ------------------------------------------------------------------ index lookups */

uint32_t policy_name_find(const name_table_t *t, const char *name)
{
    if (name == NULL || t->slots == NULL)
        return POLICY_NO_ID;
    size_t mask = ((size_t)1 << t->bits) - 1;
    for (size_t at = policy_hash_slot(policy_hash_text(name), t->bits);; at = (at + 1) & mask) {
        uint32_t id = t->slots[at];
        if (id == 0)
            return POLICY_NO_ID;
        if (strcmp(t->names[id - 1], name) == 0)
            return id - 1;
    }
}

/* The bucket of `key` in the index: sets *begin and *end to its rule
 * indexes and returns 1, or returns 0 when there is none. Up to 8 per
 * decision: inline. */
static inline int index_find(const rule_index_t *index, uint64_t key, const uint32_t **begin,
                             const uint32_t **end)
{
    size_t mask = ((size_t)1 << index->bits) - 1;
    for (size_t at = policy_hash_slot(key, index->bits);; at = (at + 1) & mask) {
        uint32_t bucket = index->slots[at];
        if (bucket == 0)
            return 0;
        if (index->keys[bucket - 1] == key) {
            *begin = index->rules + index->start[bucket - 1];
            *end = index->rules + index->start[bucket];
            return 1;
        }
    }
}

/* ------------------------------------------------------------------ matching */

/* What a decision looks up once per signal: the keys of the index. */
typedef struct signal_keys {
    size_t theme;          /* index in syntax_themes, or NO_INDEX */
    uint32_t kind;         /* interned kind, or POLICY_NO_ID: no rule names it */
    uint32_t municipality; /* of the area, or POLICY_NO_ID */
} signal_keys_t;

/* kind_ids is ascending: a binary search. */
static bool rule_has_kind(const rule_entry_t *r, uint32_t kind)
{
    size_t lo = 0, hi = r->n_kinds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->kind_ids[mid] < kind)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < r->n_kinds && r->kind_ids[lo] == kind;
}

/* Only entries of the signal's municipality can cover its area (an entry
 * has 4 digits after its letters, and policy_area_within compares them all), so
 * only those are compared; area_refs is sorted by municipality. */
static bool rule_covers_area(const rule_entry_t *r, uint32_t municipality, const char *area)
{
    size_t lo = 0, hi = r->n_areas;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->area_refs[mid].municipality < municipality)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < r->n_areas && r->area_refs[lo].municipality == municipality; lo++)
        if (policy_area_within(area, r->area_refs[lo].prefix))
            return true;
    return false;
}

/* The rule's from_roles, kinds and areas admit the signal (case_ref is
 * the caller's). Interned kinds compare as the strings do: a kind no rule
 * names has no id and matches only "*". */
static bool rule_matches(const rule_entry_t *r, const policy_principal_t *sender,
                         const signal_keys_t *keys, const policy_signal_facts_t *facts)
{
    if (!(r->from_roles & (unsigned)sender->role))
        return false;
    if (!r->any_kind && (keys->kind == POLICY_NO_ID || !rule_has_kind(r, keys->kind)))
        return false;
    if (!r->any_area && (keys->municipality == POLICY_NO_ID ||
                         !rule_covers_area(r, keys->municipality, facts->area)))
        return false;
    return true;
}

/* The arrays are valid only where their mask has the partner's bit: no
 * clearing of 1.5 KiB per decision. */
typedef struct decide_state {
    uint64_t wanted, granted;
    uint8_t named[SCHAKEL_MAX_RECIPIENTS]; /* partner index of recipients[i], the first ones */
    const rule_entry_t *by_partner[SCHAKEL_MAX_PARTNERS]; /* where granted */
    /* For the deny reason: the first rule that would have matched but for
     * case_ref, and the first that matched but reaches no principal of
     * that partner. */
    uint64_t has_needs_case_ref, has_no_receiver;
    const rule_entry_t *needs_case_ref[SCHAKEL_MAX_PARTNERS];
    const rule_entry_t *no_receiver[SCHAKEL_MAX_PARTNERS];
} decide_state_t;

static void decide_consider(decide_state_t *s, const rule_entry_t *r,
                            const policy_principal_t *sender, const signal_keys_t *keys,
                            const policy_signal_facts_t *facts)
{
    uint64_t open = s->wanted & ~s->granted;
    uint64_t gain = r->to_reachable & open, unreachable = r->to_partners & ~r->to_reachable & open;
    if ((gain | unreachable) == 0 || !rule_matches(r, sender, keys, facts))
        return;
    for (uint64_t m = unreachable & ~s->has_no_receiver; m; m &= m - 1)
        s->no_receiver[__builtin_ctzll(m)] = r;
    s->has_no_receiver |= unreachable;
    if (r->pub.require_case_ref && !facts->has_case_ref) {
        for (uint64_t m = gain & ~s->has_needs_case_ref; m; m &= m - 1)
            s->needs_case_ref[__builtin_ctzll(m)] = r;
        s->has_needs_case_ref |= gain;
        return;
    }
    for (uint64_t m = gain; m; m &= m - 1)
        s->by_partner[__builtin_ctzll(m)] = r;
    s->granted |= gain;
}

size_t policy_index_candidates(const policy_t *p, size_t partner, size_t theme, uint32_t kind,
                               uint32_t municipality, const uint32_t *begin[8],
                               const uint32_t *end[8])
{
    size_t base = partner * (p->n_themes + 1);
    /* "*" first; the signal's own second, where it has one */
    size_t n_themes = theme != NO_INDEX ? 2 : 1;
    unsigned n_kinds = kind != POLICY_NO_ID ? 2 : 1;
    unsigned n_places = municipality != POLICY_NO_ID ? 2 : 1;
    size_t themes[2] = {base + p->n_themes, n_themes == 2 ? base + theme : 0};
    uint32_t kinds[2] = {0, n_kinds == 2 ? kind + 1 : 0};
    uint32_t places[2] = {0, n_places == 2 ? municipality + 1 : 0};
    size_t n = 0;
    for (size_t t = 0; t < n_themes; t++) {
        unsigned shapes = p->index.shapes[themes[t]];
        for (unsigned k = 0; k < n_kinds; k++)
            for (unsigned m = 0; m < n_places; m++)
                if (shapes >> (k + 2 * m) & 1)
                    n += (size_t)index_find(&p->index,
                                            policy_index_key(themes[t], kinds[k], places[m]),
                                            &begin[n], &end[n]);
    }
    return n;
}

/* Walk the candidate buckets merged in file order (a rule is in at most
 * one of them: for each of theme, kind and municipality it is listed
 * either under values or under "*"); stop once every wanted partner is
 * granted, after which no rule could change the state. */
static void decide_walk(const policy_t *p, decide_state_t *s, const policy_principal_t *sender,
                        const policy_signal_facts_t *facts)
{
    uint32_t theme = policy_name_find(&p->themes, facts->theme);
    signal_keys_t keys = {.theme = theme == POLICY_NO_ID ? NO_INDEX : theme,
                          .kind = policy_name_find(&p->kinds, facts->kind),
                          .municipality = policy_area_municipality(facts->area)};
    const uint32_t *begin[8], *end[8];
    size_t n = policy_index_candidates(p, sender->partner->index, keys.theme, keys.kind,
                                       keys.municipality, begin, end);
    while (n > 0 && s->granted != s->wanted) {
        size_t first = 0;
        for (size_t j = 1; j < n; j++)
            if (*begin[j] < *begin[first])
                first = j;
        decide_consider(s, &p->rules[*begin[first]], sender, &keys, facts);
        if (++begin[first] == end[first]) {
            n--;
            begin[first] = begin[n];
            end[first] = end[n];
        }
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
 * for "any partner"), with a hint when a rule came close: for "any
 * partner", the first partner in policy order that has one. */
static verdict_t decide_deny_no_rule(const policy_t *p, const decide_state_t *s,
                                     const policy_principal_t *sender,
                                     const policy_signal_facts_t *facts, size_t k,
                                     policy_decision_t *out)
{
    char hint[160] = "";
    uint64_t close = s->has_needs_case_ref | s->has_no_receiver;
    if (k != NO_INDEX)
        close &= UINT64_C(1) << k;
    if (close != 0) {
        size_t i = (size_t)__builtin_ctzll(close);
        if (s->has_needs_case_ref >> i & 1)
            snprintf(hint, sizeof hint, " (rule \"%s\" requires case_ref)",
                     s->needs_case_ref[i]->pub.id);
        else
            snprintf(hint, sizeof hint,
                     " (rule \"%s\" matches, but %s has no principal with a role it delivers to)",
                     s->no_receiver[i]->pub.id, p->partners[i].id);
    }
    return decide_deny(out,
                       "no rule lets %s (%s) send signal kind \"%s\" theme \"%s\" in area %s "
                       "to %s%s",
                       sender->partner->id, sender->id, facts->kind, facts->theme, facts->area,
                       k == NO_INDEX ? "any partner" : p->partners[k].id, hint);
}

/* Partner of a named recipient: the hash of ids, as policy_partner_by_id
 * answers but without a search over the partners. */
static const policy_partner_t *decide_partner(const policy_t *p, const char *id)
{
    uint32_t k = policy_name_find(&p->partner_ids, id);
    return k == POLICY_NO_ID ? NULL : &p->partners[k];
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
        const policy_partner_t *partner = decide_partner(p, facts->recipients[i]);
        if (partner == NULL) {
            decide_deny(out, "unknown partner \"%.64s\" in recipients",
                        facts->recipients[i] ? facts->recipients[i] : "");
            return -1;
        }
        s->wanted |= UINT64_C(1) << partner->index;
        if (i < SCHAKEL_MAX_RECIPIENTS)
            s->named[i] = (uint8_t)partner->index;
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
    s.wanted = s.granted = s.has_needs_case_ref = s.has_no_receiver = 0;
    if (decide_wanted(policy, facts, &s, out) != 0)
        return VERDICT_DENY;
    decide_walk(policy, &s, sender, facts);
    if (facts->n_recipients > 0) {
        /* Named recipients: all or nothing, in the order the sender named them. */
        uint64_t listed = 0;
        for (size_t i = 0; i < facts->n_recipients; i++) {
            const policy_partner_t *partner = i < SCHAKEL_MAX_RECIPIENTS
                                                  ? &policy->partners[s.named[i]]
                                                  : decide_partner(policy, facts->recipients[i]);
            size_t k = partner->index;
            if (!(s.granted >> k & 1))
                return decide_deny_no_rule(policy, &s, sender, facts, k, out);
            if (listed >> k & 1)
                continue; /* named twice: granted once already */
            listed |= UINT64_C(1) << k;
            out->grants[out->n_grants++] = (policy_grant_t){partner, &s.by_partner[k]->pub};
        }
    } else {
        for (uint64_t m = s.granted; m; m &= m - 1) {
            size_t k = (size_t)__builtin_ctzll(m);
            out->grants[out->n_grants++] =
                (policy_grant_t){&policy->partners[k], &s.by_partner[k]->pub};
        }
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
