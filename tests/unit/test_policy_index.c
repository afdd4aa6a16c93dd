/*
 * test_policy_index.c — the decision index (broker/policy.c, built in
 * broker/policy_index.c). A decision reads only the buckets of its signal's
 * keys; it must decide exactly as a plain scan over every rule in file
 * order (docs/POLICY.md section 5), which this file writes out itself.
 * Policies and signals are generated from fixed seeds, one row of the
 * shape table at a time, and every decision is compared with the scan:
 * verdict, grants (partner and rule, in order) and the deny reason, byte
 * for byte; again after the index is rebuilt with smaller budgets, which
 * list rules under "*". A hand-written table pins the cases the index
 * could get wrong. Policies are loaded from memory: no files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "keys.h"
#include "policy.h"
#include "policy_internal.h"
#include "splitmix.h"
#include "syntax.h"
#include "text_build.h"

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_PARTNERS 64
#define PER_PARTNER 3 /* principals of one partner, at most */
#define MAX_PRINCIPALS (MAX_PARTNERS * PER_PARTNER)
#define MAX_RULES 400
#define MAX_LIST 16
#define TOKEN_LEN 24
#define RULE_THEMES 6 /* rules pick their themes among the first few: they meet */

/* ------------------------------------------------------------------ random */

static int rng_pct(uint64_t *state, int percent)
{
    return rng_below(state, 100) < percent;
}

static int rng_between(uint64_t *state, int lo, int hi)
{
    return lo + rng_below(state, hi - lo + 1);
}

/* ------------------------------------------------------------------ keys */

/* One distinct Ed25519 public key (Z85) per principal slot, from fixed seeds. */
static char key_pool[MAX_PRINCIPALS][41];

static int keys_setup(void **state)
{
    (void)state;
    assert_int_equal(keys_init(), 0);
    for (int i = 0; i < MAX_PRINCIPALS; i++) {
        uint8_t seed[crypto_sign_SEEDBYTES] = {0}, pk[crypto_sign_PUBLICKEYBYTES],
                sk[crypto_sign_SECRETKEYBYTES];
        seed[0] = (uint8_t)i;
        seed[1] = (uint8_t)(i >> 8);
        seed[2] = 0x5c;
        crypto_sign_seed_keypair(pk, sk, seed);
        sodium_memzero(sk, sizeof sk);
        keys_public_z85(pk, key_pool[i]);
    }
    return 0;
}

/* ------------------------------------------------------------------ the model */

/* A rule as generated: what the YAML says, and what the scan reads. */
typedef struct model_rule {
    uint64_t from, to;
    unsigned from_roles, to_roles; /* defaults filled in */
    bool write_from_roles, write_to_roles;
    int n_kinds; /* 0: any kind ("*", or the key left out) */
    bool omit_kinds;
    char kinds[MAX_LIST][TOKEN_LEN];
    int n_themes; /* 0: "*" */
    int themes[3];
    int n_areas; /* 0: "*" */
    char areas[MAX_LIST][TOKEN_LEN];
    bool case_ref;
} model_rule_t;

typedef struct model {
    int n_partners;
    unsigned roles[MAX_PARTNERS]; /* roles of each partner's principals */
    int n_principals;
    int principal_partner[MAX_PRINCIPALS];
    role_t principal_role[MAX_PRINCIPALS];
    int n_rules;
    model_rule_t rules[MAX_RULES];
} model_t;

/* The signal facts of one decision, with their own storage. */
typedef struct signal_case {
    int sender; /* principal index */
    char kind[TOKEN_LEN], theme[TOKEN_LEN], area[TOKEN_LEN];
    int has_case_ref, has_subject;
    char recipient_ids[4][TOKEN_LEN];
    const char *recipients[4];
    size_t n_recipients;
} signal_case_t;

/* What the scan decides. */
typedef struct ref_decision {
    verdict_t verdict;
    size_t n_grants;
    int grant_partner[MAX_PARTNERS];
    int grant_rule[MAX_PARTNERS];
    char reason[256];
    bool contested;                        /* a granted partner had a later matching rule too */
    bool star_beat_keyed, keyed_beat_star; /* ... one with kinds "*", the other not */
} ref_decision_t;

static const char *const municipalities[] = {"0935", "0917", "0928", "1883", "0003", "0882",
                                             "0888", "1640", "0363", "0014", "0034", "0599",
                                             "0344", "0518", "0796", "9999"};
static const char *const districts[] = {"01", "02", "0A"};
static const char *const neighbourhoods[] = {"01", "02"};

/* ------------------------------------------------------------------ the scan */

static int ref_level(const char *code)
{
    if (strncmp(code, "GM", 2) == 0)
        return 0;
    if (strncmp(code, "WK", 2) == 0)
        return 1;
    if (strncmp(code, "BU", 2) == 0)
        return 2;
    return -1;
}

/* docs/POLICY.md "Areas": the area is at the entry's level or below it and
 * its positions start with the entry's. */
static bool ref_covers(const char *entry, const char *area)
{
    int le = ref_level(entry), la = ref_level(area);
    if (le < 0 || la < le)
        return false;
    size_t n = strlen(entry) - 2;
    return strlen(area) - 2 >= n && memcmp(area + 2, entry + 2, n) == 0;
}

/* Candidate (from, theme) and match (from_roles, kinds, areas); case_ref
 * is the caller's. */
static bool ref_matches(const model_rule_t *r, int partner, role_t role, const signal_case_t *s)
{
    if (!(r->from >> partner & 1) || !(r->from_roles & (unsigned)role))
        return false;
    bool theme = r->n_themes == 0, kind = r->n_kinds == 0, area = r->n_areas == 0;
    for (int i = 0; i < r->n_themes; i++)
        theme |= strcmp(syntax_themes[r->themes[i]], s->theme) == 0;
    for (int i = 0; i < r->n_kinds; i++)
        kind |= strcmp(r->kinds[i], s->kind) == 0;
    for (int i = 0; i < r->n_areas; i++)
        area |= ref_covers(r->areas[i], s->area);
    return theme && kind && area;
}

static void ref_deny_no_rule(const model_t *m, const signal_case_t *s, int target, const int *needs,
                             const int *no_receiver, ref_decision_t *out)
{
    char hint[160] = "", sender_id[TOKEN_LEN], partner_id[TOKEN_LEN] = "", target_id[TOKEN_LEN];
    int partner = m->principal_partner[s->sender];
    snprintf(sender_id, sizeof sender_id, "p%d/n%d", partner, s->sender);
    for (int k = target < 0 ? 0 : target; k < m->n_partners; k++) {
        snprintf(partner_id, sizeof partner_id, "p%d", k);
        if (needs[k] >= 0)
            snprintf(hint, sizeof hint, " (rule \"r%d\" requires case_ref)", needs[k]);
        else if (no_receiver[k] >= 0)
            snprintf(hint, sizeof hint,
                     " (rule \"r%d\" matches, but %s has no principal with a role it delivers to)",
                     no_receiver[k], partner_id);
        if (target >= 0 || hint[0] != '\0')
            break;
    }
    snprintf(target_id, sizeof target_id, "p%d", target);
    /* cut at the size of policy_decision_t.reason, as the broker's is */
    int n = snprintf(
        out->reason, sizeof out->reason,
        "no rule lets p%d (%s) send signal kind \"%s\" theme \"%s\" in area %s to %s%s", partner,
        sender_id, s->kind, s->theme, s->area, target < 0 ? "any partner" : target_id, hint);
    assert_true(n > 0);
    out->verdict = VERDICT_DENY;
    out->n_grants = 0;
}

/* Partner index of a recipient id "pN" of this model, or -1. */
static int ref_partner(const model_t *m, const char *id)
{
    if (id == NULL || id[0] != 'p' || id[1] < '0' || id[1] > '9')
        return -1;
    char *end = NULL;
    long k = strtol(id + 1, &end, 10);
    char canonical[TOKEN_LEN];
    snprintf(canonical, sizeof canonical, "p%ld", k);
    return *end == '\0' && k < m->n_partners && strcmp(canonical, id) == 0 ? (int)k : -1;
}

/* Per partner, the first rule in file order that entitles it, that would
 * but for case_ref, and that matches but reaches no principal of it. */
static void ref_first_rules(const model_t *m, const signal_case_t *s, int *first, int *needs,
                            int *no_receiver, ref_decision_t *out)
{
    int partner = m->principal_partner[s->sender];
    role_t role = m->principal_role[s->sender];
    for (int k = 0; k < MAX_PARTNERS; k++)
        first[k] = needs[k] = no_receiver[k] = -1;
    for (int i = 0; i < m->n_rules; i++) {
        const model_rule_t *r = &m->rules[i];
        if (!ref_matches(r, partner, role, s))
            continue;
        for (int k = 0; k < m->n_partners; k++) {
            if (!(r->to >> k & 1))
                continue;
            if (!(m->roles[k] & r->to_roles & (ROLE_SYSTEM | ROLE_CASEWORKER))) {
                no_receiver[k] = no_receiver[k] < 0 ? i : no_receiver[k];
            } else if (r->case_ref && !s->has_case_ref) {
                needs[k] = needs[k] < 0 ? i : needs[k];
            } else if (first[k] < 0) {
                first[k] = i;
            } else {
                bool star_first = m->rules[first[k]].n_kinds == 0, star_later = r->n_kinds == 0;
                out->contested = true;
                out->star_beat_keyed |= star_first && !star_later;
                out->keyed_beat_star |= !star_first && star_later;
            }
        }
    }
}

static void ref_decide(const model_t *m, const signal_case_t *s, ref_decision_t *out)
{
    memset(out, 0, sizeof *out);
    if (m->principal_role[s->sender] == ROLE_OPERATOR) {
        snprintf(out->reason, sizeof out->reason,
                 "p%d/n%d is an operator; operators never send signals",
                 m->principal_partner[s->sender], s->sender);
        return;
    }
    int named[4];
    for (size_t i = 0; i < s->n_recipients; i++) {
        named[i] = ref_partner(m, s->recipients[i]);
        if (named[i] < 0) {
            snprintf(out->reason, sizeof out->reason, "unknown partner \"%.64s\" in recipients",
                     s->recipients[i] ? s->recipients[i] : "");
            return;
        }
    }
    int first[MAX_PARTNERS], needs[MAX_PARTNERS], no_receiver[MAX_PARTNERS];
    ref_first_rules(m, s, first, needs, no_receiver, out);
    uint64_t listed = 0;
    for (size_t i = 0; i < s->n_recipients; i++) {
        int k = named[i];
        if (first[k] < 0) {
            ref_deny_no_rule(m, s, k, needs, no_receiver, out);
            return;
        }
        if (!(listed >> k & 1)) {
            out->grant_partner[out->n_grants] = k;
            out->grant_rule[out->n_grants++] = first[k];
        }
        listed |= UINT64_C(1) << k;
    }
    for (int k = 0; s->n_recipients == 0 && k < m->n_partners; k++) {
        if (first[k] >= 0) {
            out->grant_partner[out->n_grants] = k;
            out->grant_rule[out->n_grants++] = first[k];
        }
    }
    if (out->n_grants == 0) {
        ref_deny_no_rule(m, s, -1, needs, no_receiver, out);
        return;
    }
    out->verdict = VERDICT_ALLOW;
}

/* ------------------------------------------------------------------ the shapes */

/* One row: how the policies and signals of a run are drawn. */
typedef struct shape_row {
    const char *name;
    uint64_t seed;
    int policies, signals; /* signals per policy */
    int partners_min, partners_max;
    int rules_min, rules_max;
    int kind_pool, municipality_pool; /* distinct kinds and municipalities rules draw from */
    int star_kinds, omit_kinds, star_themes, star_areas, wide; /* percent of rules */
    int case_ref;                                              /* percent of rules */
} shape_row_t;

/* clang-format off */
static const shape_row_t shape_rows[] = {
    {"small, dense", 11, 60, 250, 2, 5, 0, 30, 4, 2, 25, 5, 15, 15, 0, 20},
    {"medium", 12, 30, 300, 4, 16, 50, 300, 8, 4, 25, 5, 10, 10, 3, 10},
    {"64 partners", 13, 8, 400, 64, 64, 200, 400, 10, 6, 30, 5, 10, 5, 2, 10},
    {"wide rules over the fan-out cap", 14, 20, 250, 3, 8, 20, 80, 16, 16, 10, 0, 10, 5, 40, 10},
    {"no '*' at all: keyed buckets only", 15, 20, 250, 3, 10, 20, 150, 6, 4, 0, 0, 0, 0, 0, 15},
    {"'*' everywhere: '*' buckets only", 16, 20, 250, 3, 10, 20, 150, 6, 4, 100, 0, 100, 100, 0, 15},
    {"one municipality: kinds decide", 17, 20, 250, 3, 10, 50, 200, 12, 1, 20, 5, 10, 0, 0, 10},
};
/* clang-format on */

static uint64_t gen_partner_set(uint64_t *rng, int n_partners)
{
    uint64_t set = 0;
    int n = rng_between(rng, 1, n_partners < 3 ? n_partners : 3);
    while (__builtin_popcountll(set) < n)
        set |= UINT64_C(1) << rng_below(rng, n_partners);
    return set;
}

static unsigned gen_roles(uint64_t *rng, bool *written)
{
    static const unsigned choices[] = {ROLE_SYSTEM, ROLE_CASEWORKER, ROLE_SYSTEM | ROLE_CASEWORKER};
    *written = rng_pct(rng, 30);
    return *written ? choices[rng_below(rng, 3)] : ROLE_SYSTEM | ROLE_CASEWORKER;
}

/* A rule's area entry in municipality m: any level, cut short or whole. */
static void gen_area_entry(uint64_t *rng, const char *m, char out[TOKEN_LEN])
{
    const char *d = districts[rng_below(rng, (int)COUNT_OF(districts))];
    const char *b = neighbourhoods[rng_below(rng, (int)COUNT_OF(neighbourhoods))];
    switch (rng_below(rng, 6)) {
    case 0:
        snprintf(out, TOKEN_LEN, "GM%s", m);
        break;
    case 1:
        snprintf(out, TOKEN_LEN, "WK%s", m);
        break;
    case 2:
        snprintf(out, TOKEN_LEN, "WK%s%s", m, d);
        break;
    case 3:
        snprintf(out, TOKEN_LEN, "BU%s", m);
        break;
    case 4:
        snprintf(out, TOKEN_LEN, "BU%s%s", m, d);
        break;
    default:
        snprintf(out, TOKEN_LEN, "BU%s%s%s", m, d, b);
        break;
    }
}

static bool list_has(const char (*items)[TOKEN_LEN], int n, const char *item)
{
    for (int i = 0; i < n; i++)
        if (strcmp(items[i], item) == 0)
            return true;
    return false;
}

static void gen_kinds(uint64_t *rng, const shape_row_t *row, bool wide, model_rule_t *r)
{
    r->omit_kinds = !wide && rng_pct(rng, row->omit_kinds);
    if (r->omit_kinds || (!wide && rng_pct(rng, row->star_kinds)))
        return;
    int want = wide ? rng_between(rng, 9, 14) : rng_between(rng, 1, 4);
    want = want > row->kind_pool ? row->kind_pool : want;
    while (r->n_kinds < want) {
        char kind[TOKEN_LEN];
        snprintf(kind, sizeof kind, "k%d", rng_below(rng, row->kind_pool));
        if (!list_has((const char(*)[TOKEN_LEN])r->kinds, r->n_kinds, kind))
            snprintf(r->kinds[r->n_kinds++], TOKEN_LEN, "%s", kind);
    }
}

static void gen_areas(uint64_t *rng, const shape_row_t *row, bool wide, model_rule_t *r)
{
    if (!wide && rng_pct(rng, row->star_areas))
        return;
    int want = wide ? rng_between(rng, 8, 12) : rng_between(rng, 1, 4);
    for (int tries = 0; r->n_areas < want && tries < 200; tries++) {
        char entry[TOKEN_LEN];
        /* wide rules spread over municipalities; the others stay in a few */
        int m = wide ? r->n_areas % row->municipality_pool : rng_below(rng, row->municipality_pool);
        gen_area_entry(rng, municipalities[m], entry);
        if (!list_has((const char(*)[TOKEN_LEN])r->areas, r->n_areas, entry))
            snprintf(r->areas[r->n_areas++], TOKEN_LEN, "%s", entry);
    }
}

static void gen_rule(uint64_t *rng, const shape_row_t *row, const model_t *m, model_rule_t *r)
{
    memset(r, 0, sizeof *r);
    bool wide = rng_pct(rng, row->wide);
    r->from = gen_partner_set(rng, m->n_partners);
    r->to = gen_partner_set(rng, m->n_partners);
    r->from_roles = gen_roles(rng, &r->write_from_roles);
    r->to_roles = gen_roles(rng, &r->write_to_roles);
    gen_kinds(rng, row, wide, r);
    if (!rng_pct(rng, row->star_themes)) {
        int want = rng_between(rng, 1, 3);
        while (r->n_themes < want) {
            int t = rng_below(rng, RULE_THEMES), dup = 0;
            for (int i = 0; i < r->n_themes; i++)
                dup |= r->themes[i] == t;
            if (!dup)
                r->themes[r->n_themes++] = t;
        }
    }
    gen_areas(rng, row, wide, r);
    r->case_ref = rng_pct(rng, row->case_ref);
}

static void gen_model(uint64_t *rng, const shape_row_t *row, model_t *m)
{
    memset(m, 0, sizeof *m);
    m->n_partners = rng_between(rng, row->partners_min, row->partners_max);
    for (int k = 0; k < m->n_partners; k++) {
        /* some partners have no principal, some only an operator */
        int n = rng_below(rng, PER_PARTNER + 1);
        for (int i = 0; i < n; i++) {
            int roll = rng_below(rng, 100);
            role_t role = roll < 45 ? ROLE_SYSTEM : roll < 80 ? ROLE_CASEWORKER : ROLE_OPERATOR;
            m->principal_partner[m->n_principals] = k;
            m->principal_role[m->n_principals++] = role;
            m->roles[k] |= (unsigned)role;
        }
    }
    if (m->n_principals == 0) { /* someone has to send */
        m->principal_partner[0] = 0;
        m->principal_role[0] = ROLE_SYSTEM;
        m->roles[0] = ROLE_SYSTEM;
        m->n_principals = 1;
    }
    m->n_rules = rng_between(rng, row->rules_min, row->rules_max);
    for (int i = 0; i < m->n_rules; i++)
        gen_rule(rng, row, m, &m->rules[i]);
}

/* ------------------------------------------------------------------ YAML */

static void text_partners(text_t *t, const char *key, uint64_t set)
{
    text_add(t, "    %s: [", key);
    const char *sep = "";
    for (int k = 0; k < MAX_PARTNERS; k++) {
        if (set >> k & 1) {
            text_add(t, "%sp%d", sep, k);
            sep = ", ";
        }
    }
    text_add(t, "]\n");
}

static void text_roles(text_t *t, const char *key, unsigned roles)
{
    text_add(t, "    %s: [%s%s%s]\n", key, roles & ROLE_SYSTEM ? "system" : "",
             roles == (ROLE_SYSTEM | ROLE_CASEWORKER) ? ", " : "",
             roles & ROLE_CASEWORKER ? "caseworker" : "");
}

static void text_list(text_t *t, const char *key, const char (*items)[TOKEN_LEN], int n)
{
    text_add(t, "    %s: [", key);
    for (int i = 0; i < n; i++)
        text_add(t, "%s%s", i ? ", " : "", items[i]);
    text_add(t, "%s]\n", n == 0 ? "\"*\"" : "");
}

static void text_rule(text_t *t, int i, const model_rule_t *r)
{
    text_add(t, "  - id: r%d\n", i);
    text_partners(t, "from", r->from);
    if (r->write_from_roles)
        text_roles(t, "from_roles", r->from_roles);
    text_partners(t, "to", r->to);
    if (r->write_to_roles)
        text_roles(t, "to_roles", r->to_roles);
    if (!r->omit_kinds)
        text_list(t, "kinds", r->kinds, r->n_kinds);
    text_add(t, "    themes: [");
    for (int k = 0; k < r->n_themes; k++)
        text_add(t, "%s%s", k ? ", " : "", syntax_themes[r->themes[k]]);
    text_add(t, "%s]\n", r->n_themes == 0 ? "\"*\"" : "");
    text_list(t, "areas", r->areas, r->n_areas);
    text_add(t, "    purpose: \"test\"\n    legal_basis: \"test\"\n    fields: [area]\n"
                "    retention: 30d\n");
    if (r->case_ref)
        text_add(t, "    require_case_ref: true\n");
}

static char *model_text(const model_t *m, size_t *len)
{
    text_t t = {0};
    text_add(&t, "version: 1\npartners:\n");
    for (int k = 0; k < m->n_partners; k++)
        text_add(&t, "  - {id: p%d}\n", k);
    text_add(&t, "principals:%s\n", m->n_principals ? "" : " []");
    static const char *const role_names[] = {"", "system", "caseworker", "", "operator"};
    for (int i = 0; i < m->n_principals; i++)
        text_add(&t, "  - {id: p%d/n%d, role: %s, key: \"%s\"}\n", m->principal_partner[i], i,
                 role_names[m->principal_role[i]], key_pool[i]);
    text_add(&t, "rules:%s\n", m->n_rules ? "" : " []");
    for (int i = 0; i < m->n_rules; i++)
        text_rule(&t, i, &m->rules[i]);
    *len = t.len;
    return t.p;
}

/* ------------------------------------------------------------------ signals */

static void gen_signal_area(uint64_t *rng, const shape_row_t *row, char out[TOKEN_LEN])
{
    static const char *const odd[] = {"",       "XX093501", "GM09",     "gm0935", "BU0935",
                                      "WK0935", "GM0935X",  "GM 0935",  "*",      "WK09350",
                                      "BU",     "GM0935\t", "BU0935010"};
    if (rng_pct(rng, 8)) {
        snprintf(out, TOKEN_LEN, "%s", odd[rng_below(rng, (int)COUNT_OF(odd))]);
        return;
    }
    /* mostly where the rules are, sometimes one municipality further */
    int pool = row->municipality_pool + 1 < (int)COUNT_OF(municipalities)
                   ? row->municipality_pool + 1
                   : (int)COUNT_OF(municipalities);
    const char *m = municipalities[rng_below(rng, pool)];
    static const char *const more_districts[] = {"01", "02", "0A", "03"};
    static const char *const more_neighbourhoods[] = {"01", "02", "03"};
    const char *d = more_districts[rng_below(rng, (int)COUNT_OF(more_districts))];
    const char *b = more_neighbourhoods[rng_below(rng, (int)COUNT_OF(more_neighbourhoods))];
    int level = rng_below(rng, 3);
    if (level == 0)
        snprintf(out, TOKEN_LEN, "GM%s", m);
    else if (level == 1)
        snprintf(out, TOKEN_LEN, "WK%s%s", m, d);
    else
        snprintf(out, TOKEN_LEN, "BU%s%s%s", m, d, b);
}

static void gen_signal(uint64_t *rng, const shape_row_t *row, const model_t *m, signal_case_t *s)
{
    memset(s, 0, sizeof *s);
    s->sender = rng_below(rng, m->n_principals);
    int roll = rng_below(rng, 100);
    if (roll < 85)
        snprintf(s->kind, sizeof s->kind, "k%d", rng_below(rng, row->kind_pool));
    else
        snprintf(s->kind, sizeof s->kind, "%s", roll < 95 ? "k-unknown" : roll < 98 ? "*" : "");
    size_t n_vocabulary = 0;
    while (syntax_themes[n_vocabulary] != NULL)
        n_vocabulary++;
    roll = rng_below(rng, 100);
    if (roll < 85)
        snprintf(s->theme, sizeof s->theme, "%s", syntax_themes[rng_below(rng, RULE_THEMES)]);
    else if (roll < 95)
        snprintf(s->theme, sizeof s->theme, "%s", syntax_themes[rng_below(rng, (int)n_vocabulary)]);
    else
        snprintf(s->theme, sizeof s->theme, "%s", roll < 98 ? "fietsdiefstal" : "*");
    gen_signal_area(rng, row, s->area);
    s->has_case_ref = rng_pct(rng, 50);
    s->has_subject = rng_pct(rng, 50);
    if (rng_pct(rng, 50)) {
        s->n_recipients = (size_t)rng_between(rng, 1, 4);
        for (size_t i = 0; i < s->n_recipients; i++) {
            int kind = rng_below(rng, 100);
            if (kind < 94)
                snprintf(s->recipient_ids[i], TOKEN_LEN, "p%d", rng_below(rng, m->n_partners));
            else
                snprintf(s->recipient_ids[i], TOKEN_LEN, "%s", kind < 97 ? "nobody" : "p07x");
            s->recipients[i] = s->recipient_ids[i];
        }
        if (rng_pct(rng, 2))
            s->recipients[rng_below(rng, (int)s->n_recipients)] = NULL;
    }
}

/* ------------------------------------------------------------------ comparison */

/* What the run exercised: a cross-check that never denied, never chose
 * between two matching rules or never fell back to "*" proves little. */
typedef struct coverage {
    long decisions, allowed, denied, named_denied, multi_grants;
    long hint_case_ref, hint_no_receiver, contested, star_beat_keyed, keyed_beat_star;
    long capped, over_budget, keyed_entries;
} coverage_t;

static void check_one(const policy_t *p, const model_t *m, const signal_case_t *s,
                      const char *where, coverage_t *cov)
{
    ref_decision_t want;
    ref_decide(m, s, &want);
    policy_signal_facts_t facts = {.kind = s->kind,
                                   .theme = s->theme,
                                   .area = s->area,
                                   .has_subject = s->has_subject,
                                   .has_case_ref = s->has_case_ref,
                                   .recipients = s->recipients,
                                   .n_recipients = s->n_recipients};
    policy_decision_t got;
    verdict_t v = policy_decide_signal(p, policy_principal_at(p, (size_t)s->sender), &facts, &got);
    if (v != want.verdict || got.verdict != want.verdict || strcmp(got.reason, want.reason) != 0 ||
        got.n_grants != want.n_grants)
        fail_msg("%s: p%d/n%d kind \"%s\" theme \"%s\" area \"%s\" case_ref %d, %zu named: "
                 "verdict %d (\"%s\", %zu grants), the scan says %d (\"%s\", %zu grants)",
                 where, m->principal_partner[s->sender], s->sender, s->kind, s->theme, s->area,
                 s->has_case_ref, s->n_recipients, v, got.reason, got.n_grants, want.verdict,
                 want.reason, want.n_grants);
    for (size_t g = 0; g < want.n_grants; g++) {
        if (got.grants[g].partner != policy_partner_at(p, (size_t)want.grant_partner[g]) ||
            got.grants[g].rule != policy_rule_at(p, (size_t)want.grant_rule[g]))
            fail_msg("%s: p%d/n%d kind \"%s\" theme \"%s\" area \"%s\": grant %zu is %s=%s, "
                     "the scan says p%d=r%d",
                     where, m->principal_partner[s->sender], s->sender, s->kind, s->theme, s->area,
                     g, got.grants[g].partner->id, got.grants[g].rule->id, want.grant_partner[g],
                     want.grant_rule[g]);
    }
    cov->decisions++;
    cov->allowed += v == VERDICT_ALLOW;
    cov->denied += v == VERDICT_DENY;
    cov->named_denied += v == VERDICT_DENY && s->n_recipients > 0 && strstr(want.reason, "to p");
    cov->multi_grants += want.n_grants >= 2;
    cov->hint_case_ref += strstr(want.reason, "requires case_ref") != NULL;
    cov->hint_no_receiver += strstr(want.reason, "has no principal") != NULL;
    cov->contested += want.contested;
    cov->star_beat_keyed += want.star_beat_keyed;
    cov->keyed_beat_star += want.keyed_beat_star;
}

static void check_row(const shape_row_t *row, coverage_t *cov)
{
    uint64_t rng = row->seed;
    model_t *m = calloc(1, sizeof *m);
    signal_case_t *signals = calloc((size_t)row->signals, sizeof *signals);
    assert_non_null(m);
    assert_non_null(signals);
    for (int n = 0; n < row->policies; n++) {
        gen_model(&rng, row, m);
        size_t len = 0;
        char *text = model_text(m, &len), err[512] = "";
        policy_t *p = policy_load_buffer("gen", (const uint8_t *)text, len, NULL, err, sizeof err);
        if (p == NULL)
            fail_msg("%s, policy %d does not load: %s\n%s", row->name, n, err, text);
        free(text);
        assert_int_equal(policy_rule_count(p), (size_t)m->n_rules);
        for (int i = 0; i < row->signals; i++)
            gen_signal(&rng, row, m, &signals[i]);
        cov->capped += (long)p->index.n_capped;
        cov->keyed_entries += (long)p->index.n_keyed;
        /* the budget the broker loads with, none (all under "*"), and a third */
        size_t keyed = p->index.n_keyed, budgets[3] = {POLICY_INDEX_BUDGET, 0, keyed / 3};
        for (int b = 0; b < 3; b++) {
            char where[160];
            snprintf(where, sizeof where, "%s, policy %d, budget %zu", row->name, n, budgets[b]);
            if (b > 0) {
                policy_index_build(p, budgets[b]);
                assert_true(p->index.n_keyed <= budgets[b]);
                cov->over_budget += (long)p->index.n_over_budget;
            }
            for (int i = 0; i < row->signals; i++)
                check_one(p, m, &signals[i], where, cov);
        }
        policy_destroy(&p);
    }
    free(signals);
    free(m);
}

static void test_index_against_scan(void **state)
{
    (void)state;
    coverage_t total = {0};
    for (size_t r = 0; r < COUNT_OF(shape_rows); r++) {
        coverage_t cov = {0};
        check_row(&shape_rows[r], &cov);
        /* every row decides both ways */
        print_message("%s: %ld allowed, %ld denied\n", shape_rows[r].name, cov.allowed, cov.denied);
        if (cov.allowed < 50 || cov.denied < 50)
            fail_msg("%s: %ld allowed, %ld denied: the row does not exercise both",
                     shape_rows[r].name, cov.allowed, cov.denied);
        total.decisions += cov.decisions;
        total.named_denied += cov.named_denied;
        total.multi_grants += cov.multi_grants;
        total.hint_case_ref += cov.hint_case_ref;
        total.hint_no_receiver += cov.hint_no_receiver;
        total.contested += cov.contested;
        total.star_beat_keyed += cov.star_beat_keyed;
        total.keyed_beat_star += cov.keyed_beat_star;
        total.capped += cov.capped;
        total.over_budget += cov.over_budget;
        total.keyed_entries += cov.keyed_entries;
    }
    print_message("%ld decisions; %ld named denied, %ld multi-grant, hints %ld case_ref %ld "
                  "no receiver, %ld contested (%ld '*' kind first, %ld keyed first), %ld capped, "
                  "%ld over budget, %ld keyed entries\n",
                  total.decisions, total.named_denied, total.multi_grants, total.hint_case_ref,
                  total.hint_no_receiver, total.contested, total.star_beat_keyed,
                  total.keyed_beat_star, total.capped, total.over_budget, total.keyed_entries);
    /* and over all rows, every way a decision can come out */
    assert_true(total.decisions > 100000);
    assert_true(total.named_denied > 100);
    assert_true(total.multi_grants > 100);
    assert_true(total.hint_case_ref > 50);
    assert_true(total.hint_no_receiver > 50);
    assert_true(total.contested > 100);
    assert_true(total.star_beat_keyed > 50);
    assert_true(total.keyed_beat_star > 50);
    assert_true(total.capped > 20);       /* rules over POLICY_INDEX_RULE_FANOUT */
    assert_true(total.over_budget > 100); /* rules the smaller budgets put under "*" */
    assert_true(total.keyed_entries > 10000);
}

/* ------------------------------------------------------------------ pinned cases */

/* a: the sender; b: system and caseworker; c: system; d: only an operator. */
static const char *const pinned_rules =
    "rules:\n"
    "  - {id: r0, from: [a], to: [b], kinds: [\"*\"], themes: [zorg], areas: [GM0935],\n"
    "     purpose: x, legal_basis: x, fields: [area], retention: 30d}\n"
    "  - {id: r1, from: [a], to: [b, c], kinds: [k1], themes: [zorg], areas: [GM0935],\n"
    "     purpose: x, legal_basis: x, fields: [], retention: 30d}\n"
    "  - {id: r2, from: [a], to: [c], kinds: [k1], themes: [\"*\"], areas: [\"*\"],\n"
    "     purpose: x, legal_basis: x, fields: [], retention: 30d}\n"
    "  - {id: r3, from: [a], to: [b], kinds: [k2], themes: [overlast], areas: [WK093501],\n"
    "     purpose: x, legal_basis: x, fields: [], retention: 30d, require_case_ref: true}\n"
    "  - {id: r4, from: [a], to: [d], kinds: [\"*\"], themes: [\"*\"], areas: [BU0917],\n"
    "     purpose: x, legal_basis: x, fields: [], retention: 30d}\n"
    "  - {id: r5, from: [a], to: [b], kinds: [k2], themes: [drugs],\n"
    "     areas: [GM0917, BU09350102], purpose: x, legal_basis: x, fields: [], retention: 30d}\n"
    "  - {id: r6, from: [a], from_roles: [caseworker], to: [c], themes: [zorg],\n"
    "     areas: [WK0935], purpose: x, legal_basis: x, fields: [], retention: 30d}\n";

typedef struct pinned_row {
    const char *name;
    const char *sender, *kind, *theme, *area;
    int has_case_ref;
    const char *recipients[3];
    const char *grants; /* "b=r0 c=r1", in order; NULL: deny */
    const char *reason; /* on deny: the whole reason */
} pinned_row_t;

/* clang-format off */
static const pinned_row_t pinned_rows[] = {
    {"'*' kind first in file order beats the keyed later rule", "a/s", "k1", "zorg", "GM0935", 0,
     {NULL}, "b=r0 c=r1", NULL},
    {"district within the municipality entries", "a/s", "k1", "zorg", "WK093501", 0,
     {NULL}, "b=r0 c=r1", NULL},
    {"named recipients in the order named", "a/s", "k1", "zorg", "GM0935", 0,
     {"c", "b", "c"}, "c=r1 b=r0", NULL},
    {"other theme: the '*' theme and area rule", "a/s", "k1", "drugs", "GM0935", 0,
     {NULL}, "c=r2", NULL},
    {"area that is no CBS code: only areas '*'", "a/s", "k1", "zorg", "XX093501", 0,
     {NULL}, "c=r2", NULL},
    {"kind no rule names: only kinds '*'", "a/s", "k9", "zorg", "GM0935", 0,
     {NULL}, "b=r0", NULL},
    {"entry of the second municipality listed", "a/s", "k2", "drugs", "BU09350102", 0,
     {NULL}, "b=r5", NULL},
    {"neighbour of the listed neighbourhood", "a/s", "k2", "drugs", "BU09350103", 0,
     {NULL}, NULL,
     "no rule lets a (a/s) send signal kind \"k2\" theme \"drugs\" in area BU09350103 to any "
     "partner"},
    {"municipality wider than the neighbourhood entry", "a/s", "k2", "zorg", "GM0917", 0,
     {NULL}, NULL,
     "no rule lets a (a/s) send signal kind \"k2\" theme \"zorg\" in area GM0917 to any partner"},
    {"matching rule reaches no principal", "a/s", "k2", "zorg", "BU09170101", 0,
     {NULL}, NULL,
     "no rule lets a (a/s) send signal kind \"k2\" theme \"zorg\" in area BU09170101 to any "
     "partner (rule \"r4\" matches, but d has no principal with a role it delivers to)"},
    {"case_ref missing", "a/s", "k2", "overlast", "WK093501", 0,
     {NULL}, NULL,
     "no rule lets a (a/s) send signal kind \"k2\" theme \"overlast\" in area WK093501 to any "
     "partner (rule \"r3\" requires case_ref)"},
    {"case_ref present", "a/s", "k2", "overlast", "WK093501", 1,
     {NULL}, "b=r3", NULL},
    {"named partner no rule allows", "a/s", "k2", "zorg", "WK093501", 0,
     {"b", "c"}, NULL,
     "no rule lets a (a/s) send signal kind \"k2\" theme \"zorg\" in area WK093501 to c"},
    {"kinds left out: any kind, caseworker only", "a/cw", "k7", "zorg", "BU09350101", 0,
     {NULL}, "b=r0 c=r6", NULL},
    {"WK prefix does not cover the municipality", "a/cw", "k7", "zorg", "GM0917", 0,
     {NULL}, NULL,
     "no rule lets a (a/cw) send signal kind \"k7\" theme \"zorg\" in area GM0917 to any partner"},
};
/* clang-format on */

static policy_t *pinned_policy(void)
{
    text_t t = {0};
    text_add(&t, "version: 1\npartners: [{id: a}, {id: b}, {id: c}, {id: d}]\nprincipals:\n");
    static const char *const principals[][2] = {{"a/s", "system"}, {"a/cw", "caseworker"},
                                                {"b/s", "system"}, {"b/cw", "caseworker"},
                                                {"c/s", "system"}, {"d/op", "operator"}};
    for (size_t i = 0; i < COUNT_OF(principals); i++)
        text_add(&t, "  - {id: %s, role: %s, key: \"%s\"}\n", principals[i][0], principals[i][1],
                 key_pool[i]);
    text_add(&t, "%s", pinned_rules);
    char err[512] = "";
    policy_t *p = policy_load_buffer("pinned", (const uint8_t *)t.p, t.len, NULL, err, sizeof err);
    if (p == NULL)
        fail_msg("pinned policy: %s", err);
    free(t.p);
    return p;
}

static void check_pinned(const policy_t *p, const pinned_row_t *row, size_t budget)
{
    size_t n = 0;
    while (n < COUNT_OF(row->recipients) && row->recipients[n])
        n++;
    policy_signal_facts_t facts = {.kind = row->kind,
                                   .theme = row->theme,
                                   .area = row->area,
                                   .has_case_ref = row->has_case_ref,
                                   .recipients = row->recipients,
                                   .n_recipients = n};
    policy_decision_t d;
    verdict_t v = policy_decide_signal(p, policy_principal_by_id(p, row->sender), &facts, &d);
    char grants[256] = "";
    for (size_t g = 0; g < d.n_grants; g++) {
        size_t used = strlen(grants);
        snprintf(grants + used, sizeof grants - used, "%s%s=%s", g ? " " : "",
                 d.grants[g].partner->id, d.grants[g].rule->id);
    }
    if (row->grants != NULL && (v != VERDICT_ALLOW || strcmp(grants, row->grants) != 0))
        fail_msg("%s (budget %zu): %s \"%s\", expected %s", row->name, budget,
                 v == VERDICT_ALLOW ? "allowed" : "denied", v == VERDICT_ALLOW ? grants : d.reason,
                 row->grants);
    if (row->grants == NULL && (v != VERDICT_DENY || strcmp(d.reason, row->reason) != 0))
        fail_msg("%s (budget %zu): %s \"%s\", expected the denial \"%s\"", row->name, budget,
                 v == VERDICT_ALLOW ? "allowed" : "denied", v == VERDICT_ALLOW ? grants : d.reason,
                 row->reason);
}

static void test_pinned_decisions(void **state)
{
    (void)state;
    policy_t *p = pinned_policy();
    /* r1 and r3 name kinds and municipalities, r5 two municipalities: keyed */
    assert_true(p->index.n_keyed > 0);
    static const size_t budgets[] = {POLICY_INDEX_BUDGET, 0};
    for (size_t b = 0; b < COUNT_OF(budgets); b++) {
        policy_index_build(p, budgets[b]);
        for (size_t i = 0; i < COUNT_OF(pinned_rows); i++)
            check_pinned(p, &pinned_rows[i], budgets[b]);
    }
    policy_destroy(&p);
}

/* ------------------------------------------------------------------ the bounds */

/* A rule of 16 kinds x 16 municipalities is listed under "*" for its
 * kinds (the fan-out cap), and still decides as written. */
static void test_fan_out_cap(void **state)
{
    (void)state;
    text_t t = {0};
    text_add(&t,
             "version: 1\npartners: [{id: a}, {id: b}]\nprincipals:\n"
             "  - {id: a/s, role: system, key: \"%s\"}\n"
             "  - {id: b/s, role: system, key: \"%s\"}\n"
             "rules:\n  - id: wide\n    from: [a]\n    to: [b]\n    kinds: [",
             key_pool[0], key_pool[1]);
    for (int k = 0; k < 16; k++)
        text_add(&t, "%sk%d", k ? ", " : "", k);
    text_add(&t, "]\n    themes: [zorg]\n    areas: [");
    for (size_t m = 0; m < 16; m++)
        text_add(&t, "%sGM%s", m ? ", " : "", municipalities[m]);
    text_add(&t, "]\n    purpose: x\n    legal_basis: x\n    fields: []\n    retention: 1d\n");
    char err[512] = "";
    policy_t *p = policy_load_buffer("wide", (const uint8_t *)t.p, t.len, NULL, err, sizeof err);
    free(t.p);
    if (p == NULL)
        fail_msg("%s", err);
    assert_int_equal(p->index.n_capped, 1);
    assert_true(p->index.n_keyed <= POLICY_INDEX_RULE_FANOUT);
    static const struct {
        const char *kind, *area;
        verdict_t verdict;
    } rows[] = {{"k0", "GM0935", VERDICT_ALLOW},   {"k15", "BU99990101", VERDICT_ALLOW},
                {"k16", "GM0935", VERDICT_DENY},   {"k3", "GM0772", VERDICT_DENY},
                {"k3", "WK0599A1", VERDICT_ALLOW}, {"K3", "GM0935", VERDICT_DENY}};
    const policy_principal_t *sender = policy_principal_by_id(p, "a/s");
    for (size_t i = 0; i < COUNT_OF(rows); i++) {
        policy_signal_facts_t facts = {.kind = rows[i].kind, .theme = "zorg", .area = rows[i].area};
        policy_decision_t d;
        if (policy_decide_signal(p, sender, &facts, &d) != rows[i].verdict)
            fail_msg("kind %s area %s: %s", rows[i].kind, rows[i].area, d.reason);
    }
    policy_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pinned_decisions),
        cmocka_unit_test(test_fan_out_cap),
        cmocka_unit_test(test_index_against_scan),
    };
    return cmocka_run_group_tests(tests, keys_setup, NULL);
}
