/*
 * test_policy_warn.c — the rules that never decide and the on_behalf
 * entries never used (broker/policy_warn.c, docs/POLICY.md 5 "Rules that
 * never decide"). A table of pairs of rules pins each condition, with the
 * near misses that must not be reported; generated policies are compared
 * with a plain pairwise scan this file writes out itself (strings, no
 * index), every finding is checked against a decision, and the cost at
 * 10,000 rules is bounded by the check's own count of steps. Policies are
 * loaded from memory: no files.
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
#include <time.h>

#include <sodium.h>

#include "keys.h"
#include "policy.h"
#include "policy_internal.h"
#include "splitmix.h"
#include "syntax.h"
#include "text_build.h"

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))
#define N_KEYS 200

static char key_pool[N_KEYS][41];

static int keys_setup(void **state)
{
    (void)state;
    assert_int_equal(keys_init(), 0);
    for (int i = 0; i < N_KEYS; i++) {
        uint8_t seed[crypto_sign_SEEDBYTES] = {0}, pk[crypto_sign_PUBLICKEYBYTES],
                sk[crypto_sign_SECRETKEYBYTES];
        seed[0] = (uint8_t)i;
        seed[1] = 0x77;
        crypto_sign_seed_keypair(pk, sk, seed);
        sodium_memzero(sk, sizeof sk);
        keys_public_z85(pk, key_pool[i]);
    }
    return 0;
}

/* ------------------------------------------------------------------ text */

static unsigned text_lines(const text_t *t)
{
    unsigned n = 0;
    for (size_t i = 0; i < t->len; i++)
        n += t->p[i] == '\n';
    return n;
}

static policy_t *load_text(const text_t *t)
{
    char err[512] = "";
    policy_t *p = policy_load_buffer("test", (const uint8_t *)t->p, t->len, NULL, err, sizeof err);
    if (p == NULL)
        fail_msg("%s", err);
    return p;
}

/* All warnings, one line each, joined by '\n'. */
static void warnings_text(const policy_t *p, char *out, size_t len)
{
    out[0] = '\0';
    for (size_t i = 0; i < policy_warning_count(p); i++) {
        char line[1024];
        policy_warning_format(p, i, line, sizeof line);
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%s%s", i ? "\n" : "", line);
    }
}

/* ------------------------------------------------------------------ the table */

/* Partners a, b and c have a system and a caseworker principal; d only a
 * caseworker; e only a system principal; a also an operator. */
static void pinned_head(text_t *t)
{
    text_add(t, "version: 1\npartners: [{id: a}, {id: b}, {id: c}, {id: d}, {id: e}]\n"
                "principals:\n");
    static const char *const principals[][2] = {
        {"a/s", "system"},      {"a/cw", "caseworker"}, {"b/s", "system"},
        {"b/cw", "caseworker"}, {"c/s", "system"},      {"c/cw", "caseworker"},
        {"d/cw", "caseworker"}, {"e/s", "system"},      {"a/op", "operator"}};
    for (size_t i = 0; i < COUNT_OF(principals); i++)
        text_add(t, "  - {id: %s, role: %s, key: \"%s\"}\n", principals[i][0], principals[i][1],
                 key_pool[i]);
    text_add(t, "rules:\n");
}

#define TERMS "purpose: x, legal_basis: x, fields: [], retention: 30d"
#define ALL_THEMES                                                                                 \
    "[ondermijning, overlast, woninginbraak, zakkenrollerij, voertuigcriminaliteit, "              \
    "brandveiligheid, woonfraude, zorg, mensenhandel, drugs, jeugdcriminaliteit, "                 \
    "radicalisering, huiselijk-geweld, geweld]"

/* Each row: rules (one per line, ids r1, r2, ...), and the warnings they
 * give, "@N" standing for the line of rule rN. */
typedef struct pinned_row {
    const char *name;
    const char *rules[4];
    const char *expect; /* "" when none */
} pinned_row_t;

/* clang-format off */
static const pinned_row_t pinned_rows[] = {
    {"shadowed: wider in theme, kind and area, to the same partner",
     {"{id: r1, from: [a], to: [b], themes: [\"*\"], areas: [GM0935], " TERMS "}",
      "{id: r2, from: [a], to: [b], kinds: [k1], themes: [zorg], areas: [WK093501], " TERMS "}"},
     "rule \"r2\" (line @2) never applies: rule \"r1\" (line @1) matches every signal it matches "
     "and decides first for every partner of its to"},
    {"partly shadowed: one partner of two",
     {"{id: r1, from: [a], to: [b], themes: [zorg], areas: [\"*\"], " TERMS "}",
      "{id: r2, from: [a], to: [b, c], themes: [zorg], areas: [GM0935], " TERMS "}"},
     "rule \"r2\" (line @2) never decides for b: rule \"r1\" (line @1) matches every signal it "
     "matches"},
    {"two earlier rules, one partner each",
     {"{id: r1, from: [a, c], to: [b], themes: [zorg], areas: [GM0935], " TERMS "}",
      "{id: r2, from: [a], to: [c, e], kinds: [k1, k2], themes: [zorg, drugs], areas: [GM0935], "
      TERMS "}",
      "{id: r3, from: [a], to: [b, c], kinds: [k1], themes: [zorg], areas: [BU09350101], "
      TERMS "}"},
     "rule \"r3\" (line @3) never applies: rule \"r1\" (line @1) matches every signal it matches "
     "and decides first for b, rule \"r2\" (line @2) for c"},
    {"the same rule twice",
     {"{id: r1, from: [a], to: [b], themes: [zorg], areas: [GM0935], " TERMS "}",
      "{id: r2, from: [a], to: [b], themes: [zorg], areas: [GM0935], " TERMS "}"},
     "rule \"r2\" (line @2) never applies: rule \"r1\" (line @1) matches every signal it matches "
     "and decides first for every partner of its to"},
    {"the narrower rule first: both decide",
     {"{id: r1, from: [a], to: [b], kinds: [k1], themes: [zorg], areas: [WK093501], " TERMS "}",
      "{id: r2, from: [a], to: [b], themes: [\"*\"], areas: [GM0935], " TERMS "}"},
     ""},
    {"near miss: the earlier rule's area is narrower",
     {"{id: r1, from: [a], to: [b], themes: [zorg], areas: [WK093501], " TERMS "}",
      "{id: r2, from: [a], to: [b], themes: [zorg], areas: [GM0935], " TERMS "}"},
     ""},
    {"near miss: a district prefix does not cover its municipality",
     {"{id: r1, from: [a], to: [b], themes: [zorg], areas: [WK0935], " TERMS "}",
      "{id: r2, from: [a], to: [b], themes: [zorg], areas: [GM0935], " TERMS "}"},
     ""},
    {"near miss: one area of two in another municipality",
     {"{id: r1, from: [a], to: [b], themes: [zorg], areas: [GM0935], " TERMS "}",
      "{id: r2, from: [a], to: [b], themes: [zorg], areas: [WK093501, GM0917], " TERMS "}"},
     ""},
    {"areas: the municipality covers a neighbourhood prefix",
     {"{id: r1, from: [a], to: [b], themes: [zorg], areas: [GM0917, GM0935], " TERMS "}",
      "{id: r2, from: [a], to: [b], themes: [zorg], areas: [BU0935, WK091701], " TERMS "}"},
     "rule \"r2\" (line @2) never applies: rule \"r1\" (line @1) matches every signal it matches "
     "and decides first for every partner of its to"},
    {"near miss: a kind not covered",
     {"{id: r1, from: [a], to: [b], kinds: [k1], themes: [zorg], areas: [GM0935], " TERMS "}",
      "{id: r2, from: [a], to: [b], kinds: [k1, k2], themes: [zorg], areas: [GM0935], " TERMS "}"},
     ""},
    {"near miss: kinds \"*\" (left out) after a list of kinds",
     {"{id: r1, from: [a], to: [b], kinds: [k1, k2], themes: [zorg], areas: [GM0935], " TERMS "}",
      "{id: r2, from: [a], to: [b], themes: [zorg], areas: [GM0935], " TERMS "}"},
     ""},
    {"near miss: the earlier rule requires case_ref",
     {"{id: r1, from: [a], to: [b], themes: [zorg], areas: [GM0935], require_case_ref: true, "
      TERMS "}",
      "{id: r2, from: [a], to: [b], themes: [zorg], areas: [GM0935], " TERMS "}"},
     ""},
    {"the later rule requires case_ref, the earlier not",
     {"{id: r1, from: [a], to: [b], themes: [zorg], areas: [GM0935], " TERMS "}",
      "{id: r2, from: [a], to: [b], themes: [zorg], areas: [GM0935], require_case_ref: true, "
      TERMS "}"},
     "rule \"r2\" (line @2) never applies: rule \"r1\" (line @1) matches every signal it matches "
     "and decides first for every partner of its to"},
    {"near miss: a sender role not covered",
     {"{id: r1, from: [a], from_roles: [system], to: [b], themes: [zorg], areas: [GM0935], "
      TERMS "}",
      "{id: r2, from: [a], to: [b], themes: [zorg], areas: [GM0935], " TERMS "}"},
     ""},
    {"near miss: a sender partner not covered",
     {"{id: r1, from: [a], to: [b], themes: [zorg], areas: [GM0935], " TERMS "}",
      "{id: r2, from: [a, c], to: [b], themes: [zorg], areas: [GM0935], " TERMS "}"},
     ""},
    {"near miss: a theme not covered",
     {"{id: r1, from: [a], to: [b], themes: [zorg], areas: [GM0935], " TERMS "}",
      "{id: r2, from: [a], to: [b], themes: [zorg, drugs], areas: [GM0935], " TERMS "}"},
     ""},
    {"every theme of the vocabulary covers \"*\"",
     {"{id: r1, from: [a], to: [b], themes: " ALL_THEMES ", areas: [GM0935], " TERMS "}",
      "{id: r2, from: [a], to: [b], themes: [\"*\"], areas: [GM0935], " TERMS "}"},
     "rule \"r2\" (line @2) never applies: rule \"r1\" (line @1) matches every signal it matches "
     "and decides first for every partner of its to"},
    {"near miss: a recipient role not covered, d has no system principal",
     {"{id: r1, from: [a], to: [d], to_roles: [system], themes: [zorg], areas: [GM0935], "
      TERMS "}",
      "{id: r2, from: [a], to: [d], themes: [zorg], areas: [GM0935], " TERMS "}"},
     ""},
    {"to_roles of the earlier rule admit one of b's principals: it decides for b",
     {"{id: r1, from: [a], to: [b], to_roles: [system], themes: [zorg], areas: [GM0935], "
      TERMS "}",
      "{id: r2, from: [a], to: [b], to_roles: [caseworker], themes: [zorg], areas: [GM0935], "
      TERMS "}"},
     "rule \"r2\" (line @2) never applies: rule \"r1\" (line @1) matches every signal it matches "
     "and decides first for every partner of its to"},
    {"the later rule reaches no principal of d, the earlier one does",
     {"{id: r1, from: [a], to: [d], themes: [zorg], areas: [GM0935], " TERMS "}",
      "{id: r2, from: [a], to: [d, b], to_roles: [system], themes: [zorg], areas: [GM0935], "
      TERMS "}"},
     "rule \"r2\" (line @2) never decides for d: rule \"r1\" (line @1) matches every signal it "
     "matches"},
    {"the earliest covering rule is named, not a later one",
     {"{id: r1, from: [a], to: [b], themes: [\"*\"], areas: [\"*\"], " TERMS "}",
      "{id: r2, from: [a], to: [b], themes: [zorg], areas: [GM0935], " TERMS "}",
      "{id: r3, from: [a], to: [b], themes: [zorg], areas: [WK093501], " TERMS "}"},
     "rule \"r2\" (line @2) never applies: rule \"r1\" (line @1) matches every signal it matches "
     "and decides first for every partner of its to\n"
     "rule \"r3\" (line @3) never applies: rule \"r1\" (line @1) matches every signal it matches "
     "and decides first for every partner of its to"},
};
/* clang-format on */

static void check_pinned(const pinned_row_t *row, size_t budget)
{
    text_t t = {0};
    pinned_head(&t);
    unsigned lines[COUNT_OF(row->rules)] = {0};
    for (size_t i = 0; i < COUNT_OF(row->rules) && row->rules[i] != NULL; i++) {
        lines[i] = text_lines(&t) + 1;
        text_add(&t, "  - %s\n", row->rules[i]);
    }
    policy_t *p = load_text(&t);
    free(t.p);
    policy_index_build(p, budget);
    policy_warnings_build(p, POLICY_SHADOW_BUDGET);
    char expect[4096] = "", got[4096];
    for (const char *c = row->expect; *c; c++) {
        size_t used = strlen(expect);
        if (c[0] == '@' && c[1] >= '1' && c[1] <= '4') {
            snprintf(expect + used, sizeof expect - used, "%u", lines[c[1] - '1']);
            c++;
        } else {
            snprintf(expect + used, sizeof expect - used, "%c", *c);
        }
    }
    warnings_text(p, got, sizeof got);
    if (strcmp(got, expect) != 0)
        fail_msg("%s (index budget %zu):\n got: %s\nwant: %s", row->name, budget, got, expect);
    policy_destroy(&p);
}

static void test_pinned(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT_OF(pinned_rows); i++) {
        check_pinned(&pinned_rows[i], POLICY_INDEX_BUDGET);
        check_pinned(&pinned_rows[i], 0); /* every rule under "*": the same findings */
    }
}

/* The structured answer behind one line, and a line cut short. */
static void test_warning_at(void **state)
{
    (void)state;
    text_t t = {0};
    pinned_head(&t);
    text_add(&t, "  - %s\n  - %s\n  - %s\n",
             "{id: r1, from: [a], to: [b], themes: [zorg], areas: [GM0935], " TERMS "}",
             "{id: r2, from: [a], to: [c], themes: [zorg], areas: [GM0935], " TERMS "}",
             "{id: r3, from: [a], to: [b, c, e], themes: [zorg], areas: [GM0935], " TERMS "}");
    policy_t *p = load_text(&t);
    free(t.p);
    assert_int_equal(policy_warning_count(p), 1);
    policy_warning_t w;
    assert_int_equal(policy_warning_at(p, 0, &w), 0);
    assert_int_equal(w.kind, POLICY_WARNING_RULE_SHADOWED);
    assert_string_equal(w.rule->id, "r3");
    uint64_t b = UINT64_C(1) << policy_partner_by_id(p, "b")->index;
    uint64_t c = UINT64_C(1) << policy_partner_by_id(p, "c")->index;
    assert_true(w.partners == (b | c));
    assert_int_equal(w.n_by, 2);
    uint64_t partners = 0;
    assert_string_equal(policy_warning_by(p, 0, 0, &partners)->id, "r1");
    assert_true(partners == b);
    assert_string_equal(policy_warning_by(p, 0, 1, &partners)->id, "r2");
    assert_true(partners == c);
    assert_null(policy_warning_by(p, 0, 2, &partners));
    assert_int_equal(policy_warning_at(p, 1, &w), -1);
    char line[40];
    size_t n = policy_warning_format(p, 0, line, sizeof line);
    assert_int_equal(n, sizeof line - 1);
    assert_string_equal(line, "rule \"r3\" (line 16) never decides fo...");
    assert_int_equal(policy_warning_format(p, 1, line, sizeof line), 0);
    assert_string_equal(line, "");
    policy_destroy(&p);
}

/* The budget: past it the check stops, names the first rule it did not
 * check, and keeps what it found before. */
static void test_budget(void **state)
{
    (void)state;
    text_t t = {0};
    pinned_head(&t);
    for (int i = 1; i <= 6; i++)
        text_add(&t,
                 "  - {id: r%d, from: [a], to: [b], themes: [zorg], areas: [\"*\"], " TERMS "}\n",
                 i);
    policy_t *p = load_text(&t);
    free(t.p);
    assert_int_equal(policy_warning_count(p), 5);
    policy_warnings_build(p, 2); /* r2 takes one step (no lists to compare), r3 another */
    char got[2048];
    warnings_text(p, got, sizeof got);
    assert_string_equal(got,
                        "rule \"r2\" (line 15) never applies: rule \"r1\" (line 14) matches "
                        "every signal it matches and decides first for every partner of its "
                        "to\nrule \"r3\" (line 16) never applies: rule \"r1\" (line 14) "
                        "matches every signal it matches and decides first for every partner "
                        "of its to\nthe check for rules that never decide stopped after 2 "
                        "steps: rule \"r4\" (line 17) and the rules after it were not checked");
    policy_warning_t w;
    assert_int_equal(policy_warning_at(p, 2, &w), 0);
    assert_int_equal(w.kind, POLICY_WARNING_CHECK_STOPPED);
    assert_string_equal(w.rule->id, "r4");
    policy_destroy(&p);
}

/* on_behalf: a principal of the only lead partner is never used; with two
 * lead partners it acts for the other. Membership rules cannot shadow:
 * a partner is listed once per case type (the loader refuses a second). */
static void test_on_behalf(void **state)
{
    (void)state;
    text_t t = {0};
    pinned_head(&t);
    text_add(&t,
             "  []\ncase_types:\n"
             "  - {id: alleen, purpose: x, legal_basis: x, lead: [a], on_behalf: [b/s, a/cw],\n"
             "     members: [], retention_after_close: 1y}\n"
             "  - {id: samen, purpose: x, legal_basis: x, lead: [a, b], on_behalf: [b/s, a/cw],\n"
             "     members: [], retention_after_close: 1y}\n");
    /* "rules:\n  []" is an empty list */
    policy_t *p = load_text(&t);
    free(t.p);
    char got[2048];
    warnings_text(p, got, sizeof got);
    assert_string_equal(got, "case type \"alleen\" (line 16): on_behalf entry \"a/cw\" is never "
                             "used: a is the type's only lead partner, and its principals act as "
                             "the lead itself (under lead_roles), never on its behalf");
    policy_warning_t w;
    assert_int_equal(policy_warning_at(p, 0, &w), 0);
    assert_int_equal(w.kind, POLICY_WARNING_ON_BEHALF_UNUSED);
    assert_string_equal(w.case_type->id, "alleen");
    assert_string_equal(w.principal->id, "a/cw");
    /* and the case code agrees: a/cw may not act for a, b/s may */
    const policy_case_type_t *alleen = policy_case_type_by_id(p, "alleen");
    const policy_partner_t *a = policy_partner_by_id(p, "a");
    assert_int_equal(policy_case_may_act_for(p, alleen, policy_principal_by_id(p, "b/s"), a),
                     VERDICT_ALLOW);
    policy_destroy(&p);
}

/* ------------------------------------------------------------------ generated */

#define GEN_PARTNERS 8
#define GEN_KINDS 4
#define MAX_GEN_LIST 3

typedef struct gen_rule {
    uint64_t from, to;
    unsigned from_roles, to_roles;
    int n_kinds; /* 0: "*" */
    int kinds[MAX_GEN_LIST];
    int n_themes; /* 0: "*" */
    int themes[MAX_GEN_LIST];
    int n_areas; /* 0: "*" */
    char areas[MAX_GEN_LIST][16];
    bool case_ref;
} gen_rule_t;

typedef struct gen {
    int n_partners;
    unsigned roles[GEN_PARTNERS * 8]; /* roles of each partner's principals */
    int n_rules;
    gen_rule_t *rules;
} gen_t;

static uint64_t gen_partner_set(uint64_t *state, int n_partners, int most)
{
    uint64_t set = 0;
    int n = 1 + rng_below(state, most);
    for (int i = 0; i < n; i++)
        set |= UINT64_C(1) << rng_below(state, n_partners);
    return set;
}

static unsigned gen_roles(uint64_t *state)
{
    static const unsigned choice[] = {ROLE_SYSTEM | ROLE_CASEWORKER, ROLE_SYSTEM | ROLE_CASEWORKER,
                                      ROLE_SYSTEM, ROLE_CASEWORKER};
    return choice[rng_below(state, 4)];
}

/* A small vocabulary, so that rules often cover one another. */
static void gen_area(uint64_t *state, char out[16])
{
    static const char *const municipalities[] = {"0935", "0917"};
    const char *m = municipalities[rng_below(state, 2)];
    switch (rng_below(state, 5)) {
    case 0:
    case 1:
        snprintf(out, 16, "GM%s", m);
        break;
    case 2:
        snprintf(out, 16, "WK%s", m);
        break;
    case 3:
        snprintf(out, 16, "WK%s0%d", m, 1 + rng_below(state, 2));
        break;
    default:
        snprintf(out, 16, "BU%s0%d0%d", m, 1 + rng_below(state, 2), 1 + rng_below(state, 2));
    }
}

/* n distinct values below `of`, ascending. */
static int gen_pick(uint64_t *state, int most, int of, int *out)
{
    uint64_t set = 0;
    int n = 1 + rng_below(state, most);
    for (int i = 0; i < n; i++)
        set |= UINT64_C(1) << rng_below(state, of);
    int k = 0;
    for (int v = 0; v < of; v++)
        if (set >> v & 1)
            out[k++] = v;
    return k;
}

static void gen_rule(uint64_t *state, const gen_t *g, gen_rule_t *r, int themes)
{
    memset(r, 0, sizeof *r);
    r->from = gen_partner_set(state, g->n_partners, 2);
    r->to = gen_partner_set(state, g->n_partners, 3);
    r->from_roles = gen_roles(state);
    r->to_roles = gen_roles(state);
    r->n_kinds = rng_below(state, 3) == 0 ? 0 : gen_pick(state, MAX_GEN_LIST, GEN_KINDS, r->kinds);
    r->n_themes = rng_below(state, 4) == 0 ? 0 : gen_pick(state, 2, themes, r->themes);
    r->n_areas = 0;
    if (rng_below(state, 4) != 0) {
        int n = 1 + rng_below(state, MAX_GEN_LIST);
        for (int i = 0; i < n; i++) {
            gen_area(state, r->areas[r->n_areas]);
            bool dup = false;
            for (int j = 0; j < r->n_areas; j++)
                dup |= strcmp(r->areas[j], r->areas[r->n_areas]) == 0;
            r->n_areas += !dup;
        }
    }
    r->case_ref = rng_below(state, 6) == 0;
}

static void gen_write_set(text_t *t, const char *key, uint64_t set)
{
    text_add(t, "%s: [", key);
    const char *sep = "";
    for (int k = 0; k < 64; k++)
        if (set >> k & 1) {
            text_add(t, "%sp%d", sep, k);
            sep = ", ";
        }
    text_add(t, "], ");
}

static void gen_write_roles(text_t *t, const char *key, unsigned roles)
{
    if (roles == (ROLE_SYSTEM | ROLE_CASEWORKER))
        return;
    text_add(t, "%s: [%s], ", key, roles == ROLE_SYSTEM ? "system" : "caseworker");
}

static void gen_write(const gen_t *g, text_t *t)
{
    text_add(t, "version: 1\npartners:\n");
    for (int k = 0; k < g->n_partners; k++)
        text_add(t, "  - {id: p%d}\n", k);
    text_add(t, "principals:\n");
    int key = 0;
    for (int k = 0; k < g->n_partners; k++) {
        if (g->roles[k] & ROLE_SYSTEM)
            text_add(t, "  - {id: p%d/s, role: system, key: \"%s\"}\n", k, key_pool[key++]);
        if (g->roles[k] & ROLE_CASEWORKER)
            text_add(t, "  - {id: p%d/cw, role: caseworker, key: \"%s\"}\n", k, key_pool[key++]);
    }
    text_add(t, "rules:\n");
    for (int i = 0; i < g->n_rules; i++) {
        const gen_rule_t *r = &g->rules[i];
        text_add(t, "  - {id: r%d, ", i);
        gen_write_set(t, "from", r->from);
        gen_write_roles(t, "from_roles", r->from_roles);
        gen_write_set(t, "to", r->to);
        gen_write_roles(t, "to_roles", r->to_roles);
        if (r->n_kinds > 0) {
            text_add(t, "kinds: [");
            for (int k = 0; k < r->n_kinds; k++)
                text_add(t, "%sk%d", k ? ", " : "", r->kinds[k]);
            text_add(t, "], ");
        }
        text_add(t, "themes: [");
        for (int k = 0; k < r->n_themes; k++)
            text_add(t, "%s%s", k ? ", " : "", syntax_themes[r->themes[k]]);
        text_add(t, "%s], areas: [", r->n_themes == 0 ? "\"*\"" : "");
        for (int k = 0; k < r->n_areas; k++)
            text_add(t, "%s%s", k ? ", " : "", r->areas[k]);
        text_add(t, "%s], %s%s}\n", r->n_areas == 0 ? "\"*\"" : "",
                 r->case_ref ? "require_case_ref: true, " : "", TERMS);
    }
}

/* The scan: the policy text's own terms, every earlier rule in turn. */
static bool scan_area_within(const char *area, const char *entry)
{
    static const char *const levels[] = {"GM", "WK", "BU"};
    int la = -1, le = -1;
    for (int l = 0; l < 3; l++) {
        la = strncmp(area, levels[l], 2) == 0 ? l : la;
        le = strncmp(entry, levels[l], 2) == 0 ? l : le;
    }
    return la >= le && strncmp(area + 2, entry + 2, strlen(entry + 2)) == 0;
}

static bool scan_list_within(const int *items, int n, const int *of, int n_of)
{
    if (n_of == 0)
        return true;
    if (n == 0)
        return false;
    for (int i = 0; i < n; i++) {
        bool found = false;
        for (int j = 0; j < n_of; j++)
            found |= items[i] == of[j];
        if (!found)
            return false;
    }
    return true;
}

static bool scan_covers(const gen_rule_t *e, const gen_rule_t *l, int n_themes)
{
    if ((l->from & ~e->from) || (l->from_roles & ~e->from_roles) || (e->case_ref && !l->case_ref))
        return false;
    if (!scan_list_within(l->kinds, l->n_kinds, e->kinds, e->n_kinds))
        return false;
    int all[64];
    for (int k = 0; k < n_themes; k++)
        all[k] = k;
    if (!scan_list_within(l->n_themes ? l->themes : all, l->n_themes ? l->n_themes : n_themes,
                          e->themes, e->n_themes))
        return false;
    if (e->n_areas == 0)
        return true;
    if (l->n_areas == 0)
        return false;
    for (int i = 0; i < l->n_areas; i++) {
        bool found = false;
        for (int j = 0; j < e->n_areas; j++)
            found |= scan_area_within(l->areas[i], e->areas[j]);
        if (!found)
            return false;
    }
    return true;
}

/* "r3: r1=p0,p2 r2=p1" per finding, in the order of the warnings. */
static void scan_findings(const gen_t *g, int n_themes, text_t *out)
{
    for (int i = 0; i < g->n_rules; i++) {
        const gen_rule_t *l = &g->rules[i];
        uint64_t open = l->to;
        int by[64];
        for (int k = 0; k < 64; k++)
            by[k] = -1;
        for (int j = 0; j < i && open; j++) {
            const gen_rule_t *e = &g->rules[j];
            uint64_t reach = 0;
            for (int k = 0; k < g->n_partners; k++)
                if ((e->to >> k & 1) && (g->roles[k] & e->to_roles))
                    reach |= UINT64_C(1) << k;
            if ((reach & open) && scan_covers(e, l, n_themes)) {
                for (uint64_t m = reach & open; m; m &= m - 1)
                    by[__builtin_ctzll(m)] = j;
                open &= ~reach;
            }
        }
        if (open == l->to)
            continue;
        text_add(out, "r%d:", i);
        for (int j = 0; j < i; j++) {
            uint64_t mine = 0;
            for (int k = 0; k < 64; k++)
                mine |= (uint64_t)(by[k] == j) << k;
            if (mine == 0)
                continue;
            text_add(out, " r%d=", j);
            for (uint64_t m = mine; m; m &= m - 1)
                text_add(out, "%sp%d", m == mine ? "" : ",", __builtin_ctzll(m));
        }
        text_add(out, "\n");
    }
}

/* The same from the policy's warnings. */
static void policy_findings(const policy_t *p, text_t *out)
{
    for (size_t i = 0; i < policy_warning_count(p); i++) {
        policy_warning_t w;
        assert_int_equal(policy_warning_at(p, i, &w), 0);
        if (w.kind != POLICY_WARNING_RULE_SHADOWED && w.kind != POLICY_WARNING_RULE_NEVER_APPLIES)
            fail_msg("unexpected warning kind %d", (int)w.kind);
        text_add(out, "%s:", w.rule->id);
        uint64_t partners, all = 0;
        const policy_rule_t *by;
        for (size_t j = 0; (by = policy_warning_by(p, i, j, &partners)) != NULL; j++) {
            text_add(out, " %s=", by->id);
            for (uint64_t m = partners; m; m &= m - 1)
                text_add(out, "%s%s", m == partners ? "" : ",",
                         policy_partner_at(p, (size_t)__builtin_ctzll(m))->id);
            all |= partners;
        }
        assert_true(all == w.partners);
        text_add(out, "\n");
    }
}

/* Every finding holds: a signal the later rule matches, sent to a partner
 * it never decides for, is decided by another rule. */
static void check_findings_decide(const policy_t *p, const gen_t *g)
{
    for (size_t i = 0; i < policy_warning_count(p); i++) {
        policy_warning_t w;
        assert_int_equal(policy_warning_at(p, i, &w), 0);
        const gen_rule_t *l = &g->rules[atoi(w.rule->id + 1)];
        const policy_principal_t *sender = NULL;
        for (int k = 0; k < g->n_partners && sender == NULL; k++) {
            if (!(l->from >> k & 1))
                continue;
            char id[32];
            unsigned role = g->roles[k] & l->from_roles;
            snprintf(id, sizeof id, "p%d/%s", k, (role & ROLE_SYSTEM) ? "s" : "cw");
            sender = role ? policy_principal_by_id(p, id) : NULL;
        }
        if (sender == NULL)
            continue; /* nobody sends under it: nothing to decide */
        char kind[8], area[16];
        snprintf(kind, sizeof kind, l->n_kinds ? "k%d" : "kz", l->n_kinds ? l->kinds[0] : 0);
        snprintf(area, sizeof area, "%s", l->n_areas ? l->areas[0] : "GM0935");
        if (strncmp(area, "WK", 2) == 0 && strlen(area) == 6)
            strcat(area, "01");
        if (strncmp(area, "BU", 2) == 0 && strlen(area) == 6)
            strcat(area, "0101");
        for (uint64_t m = w.partners; m; m &= m - 1) {
            const char *to[1] = {policy_partner_at(p, (size_t)__builtin_ctzll(m))->id};
            policy_signal_facts_t facts = {
                .kind = kind,
                .theme = syntax_themes[l->n_themes ? l->themes[0] : 0],
                .area = area,
                .has_case_ref = l->case_ref,
                .recipients = to,
                .n_recipients = 1,
            };
            policy_decision_t d;
            if (policy_decide_signal(p, sender, &facts, &d) != VERDICT_ALLOW)
                fail_msg("%s to %s: %s", w.rule->id, to[0], d.reason);
            if (d.grants[0].rule == w.rule)
                fail_msg("%s decided for %s, which it never should", w.rule->id, to[0]);
        }
    }
}

static void gen_policy(gen_t *g, uint64_t seed, int n_partners, int n_rules, int themes)
{
    uint64_t state = seed;
    g->n_partners = n_partners;
    for (int k = 0; k < n_partners; k++)
        g->roles[k] = gen_roles(&state);
    g->n_rules = n_rules;
    g->rules = calloc((size_t)n_rules, sizeof *g->rules);
    assert_non_null(g->rules);
    for (int i = 0; i < n_rules; i++)
        gen_rule(&state, g, &g->rules[i], themes);
}

/* Generated policies: the findings are the scan's, with the index as
 * built and with every rule under "*", and each holds in a decision. */
static void test_generated_against_scan(void **state)
{
    (void)state;
    size_t n_themes = 0;
    while (syntax_themes[n_themes] != NULL)
        n_themes++;
    long findings = 0, partial = 0, multi = 0;
    for (uint64_t seed = 1; seed <= 40; seed++) {
        gen_t g;
        /* few themes, so that "*" meets lists; all of them now and then */
        int themes = seed % 5 == 0 ? (int)n_themes : 3;
        gen_policy(&g, seed, GEN_PARTNERS, 200, themes);
        text_t t = {0}, want = {0}, got = {0};
        gen_write(&g, &t);
        policy_t *p = load_text(&t);
        scan_findings(&g, (int)n_themes, &want);
        text_add(&want, "%s", "");
        for (int budget = 0; budget < 2; budget++) {
            if (budget == 1) {
                policy_index_build(p, 0);
                policy_warnings_build(p, POLICY_SHADOW_BUDGET);
            }
            got.len = 0;
            policy_findings(p, &got);
            text_add(&got, "%s", "");
            if (strcmp(got.p, want.p) != 0)
                fail_msg("seed %llu (index budget %s):\n got:\n%s\nwant:\n%s",
                         (unsigned long long)seed, budget ? "0" : "full", got.p, want.p);
        }
        check_findings_decide(p, &g);
        for (size_t i = 0; i < policy_warning_count(p); i++) {
            policy_warning_t w;
            assert_int_equal(policy_warning_at(p, i, &w), 0);
            findings++;
            partial += w.kind == POLICY_WARNING_RULE_SHADOWED;
            multi += w.n_by > 1;
        }
        policy_destroy(&p);
        free(t.p);
        free(want.p);
        free(got.p);
        free(g.rules);
    }
    print_message("%ld findings, %ld partial, %ld by several rules\n", findings, partial, multi);
    assert_true(findings > 500);
    assert_true(partial > 100);
    assert_true(multi > 20);
}

/* The cost at 10,000 rules is bounded by count, not by time: the check
 * reads the index as a decision does, so its steps grow with the rules
 * (a few per rule here), not with their square (50 million pairs). */
static void test_ten_thousand_rules(void **state)
{
    (void)state;
    size_t n_themes = 0;
    while (syntax_themes[n_themes] != NULL)
        n_themes++;
    gen_t g;
    gen_policy(&g, 20240607, 64, 10000, (int)n_themes);
    text_t t = {0};
    gen_write(&g, &t);
    policy_t *p = load_text(&t);
    free(t.p);
    uint64_t work = policy_warning_work(p);
    print_message("10,000 rules: %llu steps, %zu warnings\n", (unsigned long long)work,
                  policy_warning_count(p));
    assert_int_equal(policy_rule_count(p), 10000);
    assert_true(policy_warning_count(p) > 100);
    assert_true(work <= 64 * (uint64_t)10000);
    for (size_t i = 0; i < policy_warning_count(p); i++) {
        policy_warning_t w;
        assert_int_equal(policy_warning_at(p, i, &w), 0);
        assert_int_not_equal(w.kind, POLICY_WARNING_CHECK_STOPPED);
    }
    check_findings_decide(p, &g);
    policy_destroy(&p);
    free(g.rules);
}

/* A policy that defeats the index (every rule under "*" for its 65 kinds,
 * none covering another): the budget stops the check, and the load still
 * says what it could not check. */
static void test_budget_bounds_the_worst(void **state)
{
    (void)state;
    text_t t = {0};
    pinned_head(&t);
    for (int i = 0; i < 1600; i++) {
        text_add(&t, "  - {id: r%d, from: [a], to: [b], themes: [zorg], areas: [\"*\"], kinds: [",
                 i);
        for (int k = 0; k < 65; k++)
            text_add(&t, "%sk%d", k ? ", " : "", i * 65 + k);
        text_add(&t, "], " TERMS "}\n");
    }
    clock_t started = clock();
    policy_t *p = load_text(&t);
    double seconds = (double)(clock() - started) / CLOCKS_PER_SEC;
    free(t.p);
    assert_int_equal(p->index.n_capped, 1600);
    size_t n = policy_warning_count(p);
    assert_int_equal(n, 1);
    policy_warning_t w;
    assert_int_equal(policy_warning_at(p, 0, &w), 0);
    assert_int_equal(w.kind, POLICY_WARNING_CHECK_STOPPED);
    /* one comparison past the budget at most: 1 + 65 + 65 steps */
    assert_true(policy_warning_work(p) >= POLICY_SHADOW_BUDGET);
    assert_true(policy_warning_work(p) <= POLICY_SHADOW_BUDGET + 1 + 2 * 1024);
    print_message("stopped at %s after %llu steps; load %.2f s CPU\n", w.rule->id,
                  (unsigned long long)policy_warning_work(p), seconds);
    policy_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pinned),
        cmocka_unit_test(test_warning_at),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_on_behalf),
        cmocka_unit_test(test_generated_against_scan),
        cmocka_unit_test(test_ten_thousand_rules),
        cmocka_unit_test(test_budget_bounds_the_worst),
    };
    return cmocka_run_group_tests(tests, keys_setup, NULL);
}
