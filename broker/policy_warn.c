/*
 * policy_warn.c — what a valid policy says that can never take effect
 * (docs/POLICY.md section 5, "Rules that never decide", and section 12):
 * a rule that an earlier rule always decides first for a partner of its
 * `to`, and an on_behalf entry naming a principal of a case type's only
 * lead partner. Found once per load, after the decision index is built;
 * reported as warnings (policy.h), never a refusal. Trusts the policy the
 * loader validated; returns no errors; dies on out-of-memory.
 */
#include "policy_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ findings */

static void *grow(void *old, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return old;
    size_t room = *cap ? *cap : 16;
    while (room < need)
        room *= 2;
    void *p = realloc(old, room * size);
    if (p == NULL)
        abort(); /* the daemon may die on out-of-memory (STYLE.md) */
    *cap = room;
    return p;
}

typedef struct warn_build {
    policy_t *p;
    size_t cap_warnings, cap_pairs;
} warn_build_t;

static warning_entry_t *warn_add(warn_build_t *wb, policy_warning_kind_t kind, size_t subject)
{
    policy_t *p = wb->p;
    p->warnings = grow(p->warnings, &wb->cap_warnings, p->n_warnings + 1, sizeof *p->warnings);
    warning_entry_t *w = &p->warnings[p->n_warnings++];
    *w = (warning_entry_t){.kind = kind, .subject = (uint32_t)subject};
    return w;
}

static void pair_add(warn_build_t *wb, size_t by, uint64_t partners)
{
    policy_t *p = wb->p;
    p->shadow_pairs =
        grow(p->shadow_pairs, &wb->cap_pairs, p->n_shadow_pairs + 1, sizeof *p->shadow_pairs);
    p->shadow_pairs[p->n_shadow_pairs++] =
        (shadow_pair_t){.by = (uint32_t)by, .partners = partners};
}

/* ------------------------------------------------------------------ coverage */

/* Every kind of `later` is one of `earlier` (both ascending interned ids).
 * Adds the entries it reads to *work. */
static bool kinds_cover(const rule_entry_t *earlier, const rule_entry_t *later, uint64_t *work)
{
    if (earlier->any_kind)
        return true;
    if (later->any_kind)
        return false; /* kinds are an open vocabulary: no list names them all */
    size_t at = 0, k = 0;
    bool covered = true;
    for (; k < later->n_kinds && covered; k++) {
        while (at < earlier->n_kinds && earlier->kind_ids[at] < later->kind_ids[k])
            at++;
        covered = at < earlier->n_kinds && earlier->kind_ids[at] == later->kind_ids[k];
    }
    *work += at + k;
    return covered;
}

/* Every area `later` covers, `earlier` covers: each entry of later lies
 * within an entry of earlier of its municipality (area_refs are sorted by
 * municipality). "*" covers every municipality; 1024 entries cannot. */
static bool areas_cover(const rule_entry_t *earlier, const rule_entry_t *later, uint64_t *work)
{
    if (earlier->any_area)
        return true;
    if (later->any_area)
        return false;
    size_t at = 0;
    bool covered = true;
    for (size_t k = 0; k < later->n_areas && covered; k++) {
        const area_ref_t *want = &later->area_refs[k];
        while (at < earlier->n_areas && earlier->area_refs[at].municipality < want->municipality)
            at++;
        covered = false;
        size_t e = at;
        for (; e < earlier->n_areas && !covered &&
               earlier->area_refs[e].municipality == want->municipality;
             e++)
            covered = policy_area_within(want->prefix, earlier->area_refs[e].prefix);
        *work += 1 + e - at;
    }
    *work += at;
    return covered;
}

/* `earlier` matches every signal `later` matches (POLICY.md 5, step 4):
 * senders, themes, kinds, areas, and case_ref. Whom it entitles is the
 * caller's. A signal's theme is always one of the vocabulary, so themes
 * listing them all cover "*". */
static bool rule_covers(const policy_t *p, const rule_entry_t *earlier, const rule_entry_t *later,
                        uint64_t *work)
{
    uint64_t all_themes = (UINT64_C(1) << p->n_themes) - 1;
    uint64_t later_themes = later->any_theme ? all_themes : later->themes;
    return (later->from_partners & ~earlier->from_partners) == 0 &&
           (later->from_roles & ~earlier->from_roles) == 0 &&
           (earlier->any_theme || (later_themes & ~earlier->themes) == 0) &&
           (!earlier->pub.require_case_ref || later->pub.require_case_ref) &&
           kinds_cover(earlier, later, work) && areas_cover(earlier, later, work);
}

/* ------------------------------------------------------------------ rules */

/* The earlier rules that decide first for partners of rule `i`'s `to`:
 * only rules listed under its first sender partner, its lowest theme (or
 * "*"), its first kind (or "*") and its first municipality (or "*") can
 * cover it, and those are the index buckets of that signal: at most 8,
 * merged in file order, read only up to i. For each partner, the first
 * covering rule that entitles it (to_reachable: a principal of the partner
 * whose role its to_roles admit) is recorded. Returns 0, or -1 once the
 * budget of work is spent (rule i not checked whole): a rule looked at
 * is one step, and so is each entry of kinds and areas read comparing. */
static int rule_check(warn_build_t *wb, size_t i, uint64_t budget)
{
    policy_t *p = wb->p;
    const rule_entry_t *later = &p->rules[i];
    size_t theme = later->any_theme ? 0 : (size_t)__builtin_ctzll(later->themes);
    uint32_t kind = later->any_kind ? POLICY_NO_ID : later->kind_ids[0];
    uint32_t place = later->any_area ? POLICY_NO_ID : later->area_refs[0].municipality;
    const uint32_t *begin[8], *end[8];
    size_t n = policy_index_candidates(p, (size_t)__builtin_ctzll(later->from_partners), theme,
                                       kind, place, begin, end);
    uint64_t open = later->to_partners, found = 0;
    size_t first_pair = p->n_shadow_pairs;
    while (n > 0 && open != 0) {
        size_t first = 0;
        for (size_t j = 1; j < n; j++)
            if (*begin[j] < *begin[first])
                first = j;
        size_t at = *begin[first];
        if (at >= i)
            break; /* the lowest of every bucket: no earlier rule is left */
        if (p->shadow_work >= budget) {
            p->n_shadow_pairs = first_pair;
            return -1;
        }
        p->shadow_work++;
        const rule_entry_t *earlier = &p->rules[at];
        uint64_t gain = earlier->to_reachable & open;
        if (gain != 0) {
            if (rule_covers(p, earlier, later, &p->shadow_work)) {
                pair_add(wb, at, gain);
                open &= ~gain;
                found |= gain;
            }
        }
        if (++begin[first] == end[first]) {
            n--;
            begin[first] = begin[n];
            end[first] = end[n];
        }
    }
    if (found != 0) {
        warning_entry_t *w = warn_add(
            wb, open == 0 ? POLICY_WARNING_RULE_NEVER_APPLIES : POLICY_WARNING_RULE_SHADOWED, i);
        w->partners = found;
        w->first_pair = (uint32_t)first_pair;
        w->n_pairs = (uint32_t)(p->n_shadow_pairs - first_pair);
    }
    return 0;
}

/* ------------------------------------------------------------------ case types */

/* A principal of a case type's only lead partner acts as that partner
 * itself (its role must be in lead_roles), never on its behalf: the case
 * commands take on_behalf_of naming the actor's own partner as no claim,
 * and policy_case_may_act_for lets it act only for a lead partner. */
static void case_types_check(warn_build_t *wb)
{
    policy_t *p = wb->p;
    for (size_t i = 0; i < p->n_case_types; i++) {
        const case_type_entry_t *t = &p->case_types[i];
        if (__builtin_popcountll(t->lead_partners) != 1)
            continue;
        size_t lead = (size_t)__builtin_ctzll(t->lead_partners);
        /* on_behalf is sorted by principal index: file order of principals */
        for (size_t k = 0; k < t->n_on_behalf; k++) {
            if (p->principals[t->on_behalf[k]].partner->index != lead)
                continue;
            warning_entry_t *w = warn_add(wb, POLICY_WARNING_ON_BEHALF_UNUSED, i);
            w->principal = t->on_behalf[k];
        }
    }
}

void policy_warnings_free(policy_t *p)
{
    free(p->warnings);
    free(p->shadow_pairs);
    p->warnings = NULL;
    p->shadow_pairs = NULL;
    p->n_warnings = p->n_shadow_pairs = 0;
    p->shadow_work = 0;
}

void policy_warnings_build(policy_t *p, uint64_t budget)
{
    policy_warnings_free(p);
    warn_build_t wb = {.p = p};
    for (size_t i = 0; i < p->n_rules; i++) {
        if (rule_check(&wb, i, budget) != 0) {
            warn_add(&wb, POLICY_WARNING_CHECK_STOPPED, i);
            break;
        }
    }
    case_types_check(&wb);
}

/* ------------------------------------------------------------------ answers */

size_t policy_warning_count(const policy_t *policy)
{
    return policy ? policy->n_warnings : 0;
}

uint64_t policy_warning_work(const policy_t *policy)
{
    return policy ? policy->shadow_work : 0;
}

int policy_warning_at(const policy_t *policy, size_t i, policy_warning_t *out)
{
    memset(out, 0, sizeof *out);
    if (policy == NULL || i >= policy->n_warnings)
        return -1;
    const warning_entry_t *w = &policy->warnings[i];
    out->kind = w->kind;
    switch (w->kind) {
    case POLICY_WARNING_RULE_SHADOWED:
    case POLICY_WARNING_RULE_NEVER_APPLIES:
        out->partners = w->partners;
        out->n_by = w->n_pairs;
        out->rule = &policy->rules[w->subject].pub;
        break;
    case POLICY_WARNING_CHECK_STOPPED:
        out->rule = &policy->rules[w->subject].pub;
        break;
    case POLICY_WARNING_ON_BEHALF_UNUSED:
        out->case_type = &policy->case_types[w->subject].pub;
        out->principal = &policy->principals[w->principal];
        break;
    case POLICY_WARNING_NONE:
        break;
    }
    return 0;
}

const policy_rule_t *policy_warning_by(const policy_t *policy, size_t i, size_t j,
                                       uint64_t *partners)
{
    if (partners != NULL)
        *partners = 0;
    if (policy == NULL || i >= policy->n_warnings)
        return NULL;
    const warning_entry_t *w = &policy->warnings[i];
    if ((w->kind != POLICY_WARNING_RULE_SHADOWED && w->kind != POLICY_WARNING_RULE_NEVER_APPLIES) ||
        j >= w->n_pairs)
        return NULL;
    const shadow_pair_t *pair = &policy->shadow_pairs[w->first_pair + j];
    if (partners != NULL)
        *partners = pair->partners;
    return &policy->rules[pair->by].pub;
}

/* A line written into a caller's buffer, cut with "..." when too long. */
typedef struct line_out {
    char *buf;
    size_t len, at;
    bool cut;
} line_out_t;

static void line_add(line_out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void line_add(line_out_t *o, const char *fmt, ...)
{
    if (o->cut)
        return;
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(o->buf + o->at, o->len - o->at, fmt, args);
    va_end(args);
    if (n >= 0 && (size_t)n < o->len - o->at) {
        o->at += (size_t)n;
        return;
    }
    o->cut = true;
    o->at = o->len - 1;
    if (o->len > 4)
        memcpy(o->buf + o->len - 4, "...", 4);
}

static void line_partners(line_out_t *o, const policy_t *p, uint64_t partners)
{
    for (uint64_t m = partners; m; m &= m - 1)
        line_add(o, "%s%s", m == partners ? "" : ", ", p->partners[__builtin_ctzll(m)].id);
}

static void line_rule(line_out_t *o, const rule_entry_t *r)
{
    line_add(o, "rule \"%s\" (line %u)", r->pub.id, r->pub.line);
}

/* `rule "x" (line 40) never decides for om[, ...]: rule "y" (line 12)
 * matches every signal it matches[ and decides first for om, rule "z"
 * (line 20) for riec]`; "never applies" when it is every partner. */
static void line_shadowed(line_out_t *o, const policy_t *p, const warning_entry_t *w)
{
    line_rule(o, &p->rules[w->subject]);
    if (w->kind == POLICY_WARNING_RULE_NEVER_APPLIES) {
        line_add(o, " never applies: ");
    } else {
        line_add(o, " never decides for ");
        line_partners(o, p, w->partners);
        line_add(o, ": ");
    }
    const shadow_pair_t *pairs = &p->shadow_pairs[w->first_pair];
    line_rule(o, &p->rules[pairs[0].by]);
    line_add(o, " matches every signal it matches");
    if (w->n_pairs == 1) {
        if (w->kind == POLICY_WARNING_RULE_NEVER_APPLIES)
            line_add(o, " and decides first for every partner of its to");
        return;
    }
    line_add(o, " and decides first for ");
    for (uint32_t j = 0; j < w->n_pairs; j++) {
        if (j > 0) {
            line_add(o, ", ");
            line_rule(o, &p->rules[pairs[j].by]);
            line_add(o, " for ");
        }
        line_partners(o, p, pairs[j].partners);
    }
}

size_t policy_warning_format(const policy_t *policy, size_t i, char *buf, size_t len)
{
    if (buf == NULL || len == 0)
        return 0;
    buf[0] = '\0';
    if (policy == NULL || i >= policy->n_warnings)
        return 0;
    line_out_t o = {.buf = buf, .len = len};
    const warning_entry_t *w = &policy->warnings[i];
    switch (w->kind) {
    case POLICY_WARNING_RULE_SHADOWED:
    case POLICY_WARNING_RULE_NEVER_APPLIES:
        line_shadowed(&o, policy, w);
        break;
    case POLICY_WARNING_CHECK_STOPPED:
        line_add(&o, "the check for rules that never decide stopped after %llu steps: ",
                 (unsigned long long)policy->shadow_work);
        line_rule(&o, &policy->rules[w->subject]);
        line_add(&o, " and the rules after it were not checked");
        break;
    case POLICY_WARNING_ON_BEHALF_UNUSED: {
        const case_type_entry_t *t = &policy->case_types[w->subject];
        const policy_principal_t *pr = &policy->principals[w->principal];
        line_add(&o,
                 "case type \"%s\" (line %u): on_behalf entry \"%s\" is never used: %s is the "
                 "type's only lead partner, and its principals act as the lead itself (under "
                 "lead_roles), never on its behalf",
                 t->pub.id, t->pub.line, pr->id, pr->partner->id);
        break;
    }
    case POLICY_WARNING_NONE:
        break;
    }
    return o.at;
}
