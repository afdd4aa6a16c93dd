/*
 * bench_policy.c — the cost of one policy decision with 10, 100, 1,000 and
 * 10,000 rules, measured in-process with the broker's own policy code
 * (policy_load, policy_decide_signal), and the load time of each policy.
 *
 * Owns a temporary folder under /tmp with the generated policy files
 * (deterministic for a seed). Trusts the policy code only to be the code
 * the broker runs: every decision of the fixed set is checked against its
 * expected verdict at every size before it is timed. Exit status: 0 when
 * every size loaded and decided as expected, 1 otherwise, 2 on usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "keys.h"
#include "policy.h"
#include "support.h"
#include "syntax.h"

#define POLICY_MAX_SIZES 4
#define POLICY_MIN_RULES 8 /* the anchor rules the decisions hit */
#define POLICY_MIN_PARTNERS 4
#define POLICY_RULES_PER_PARTNER 10
#define POLICY_ROUNDS 5 /* interleaved over the sizes; the median is reported */
#define POLICY_DEFAULT_MIN_TIME_S 0.5
#define POLICY_MIN_DECISIONS 200000u /* per size, over all rounds */
#define POLICY_ROUND_CAP_S 10.0      /* one round of one size at most (a deadline) */
#define POLICY_SINGLE_REPEATS 40000u /* the per-decision pass: repeats of each decision */
#define POLICY_RATIO_TARGET 1.5
#define POLICY_DEFAULT_SEED 20240607u

static const unsigned policy_bench_default_sizes[POLICY_MAX_SIZES] = {10, 100, 1000, 10000};

/* The four partners of the anchor rules; present at every size. */
enum { GEMEENTE, POLITIE, WOCO, RIEC, ANCHOR_PARTNERS };
static const char *const policy_bench_anchor_partners[ANCHOR_PARTNERS] = {
    "gemeente-maastricht", "politie-limburg", "woco-servatius", "riec-limburg"};

/* Kinds of partners the other partner ids are made of ("ggd-07"). */
static const char *const policy_bench_partner_kinds[] = {
    "gemeente",     "politie",         "woco",      "zorg",      "ggd",      "om",
    "reclassering", "veiligheidshuis", "brandweer", "jeugdzorg", "wijkteam", "belastingdienst"};

/* Signal kinds: the anchors' kinds are among them, so filler rules with
 * a kind list compete with the anchors. */
static const char *const policy_bench_kinds[] = {
    "melding-overlast",   "adrescontrole",  "bevinding",       "zorgmelding",   "analyse",
    "woonfraude-signaal", "brandmelding",   "hennepkwekerij",  "signaal",       "huisbezoek",
    "inschrijving",       "ontruiming",     "sluiting",        "waarschuwing",  "verwijzing",
    "zorgmijding",        "inbraakpatroon", "voertuigsignaal", "drugsoverlast", "meldpunt"};

/* CBS municipality codes of the region every generated partner works in.
 * The denied decisions name an area outside it (GM0363). */
static const char *const policy_bench_municipalities[] = {
    "0882", "0888", "0889", "0893", "0899", "0907", "0917", "0928", "0935", "0938", "0944",
    "0946", "0957", "0962", "0965", "0971", "0981", "0983", "0984", "0986", "0988", "0994",
    "1507", "1640", "1641", "1669", "1711", "1729", "1883", "1894", "1903"};

static const char *const policy_bench_retentions[] = {"30d", "90d", "180d", "365d", "2y", "5y"};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

/* The anchor rules, the same at every size, spread through the file. */
static const char *const policy_bench_anchor_rules[POLICY_MIN_RULES] = {
    "    from: [woco-servatius]\n    to: [politie-limburg, riec-limburg]\n"
    "    kinds: [\"*\"]\n    themes: [ondermijning]\n    areas: [GM0935]\n",
    "    from: [gemeente-maastricht]\n    from_roles: [system]\n    to: [politie-limburg]\n"
    "    kinds: [melding-overlast, adrescontrole]\n    themes: [overlast, drugs]\n"
    "    areas: [GM0935, GM0917]\n",
    "    from: [politie-limburg]\n    to: [gemeente-maastricht, riec-limburg]\n"
    "    kinds: [bevinding]\n    themes: [ondermijning, drugs, mensenhandel]\n"
    "    areas: [WK093501, WK093502, GM0917]\n",
    "    from: [gemeente-maastricht, woco-servatius]\n    to: [woco-servatius]\n"
    "    kinds: [zorgmelding]\n    themes: [zorg, huiselijk-geweld]\n    areas: [\"*\"]\n",
    "    from: [riec-limburg]\n    to: [politie-limburg, gemeente-maastricht]\n"
    "    kinds: [analyse]\n    themes: [\"*\"]\n    areas: [GM0935, GM0917, GM0928]\n",
    "    from: [woco-servatius]\n    to: [politie-limburg]\n    kinds: [woonfraude-signaal]\n"
    "    themes: [woonfraude]\n    areas: [BU09350101, BU09350102]\n    require_case_ref: true\n",
    "    from: [politie-limburg]\n    to: [woco-servatius]\n    to_roles: [caseworker]\n"
    "    kinds: [brandmelding]\n    themes: [brandveiligheid]\n    areas: [GM0935]\n",
    "    from: [gemeente-maastricht]\n    to: [riec-limburg]\n    kinds: [\"*\"]\n"
    "    themes: [radicalisering, jeugdcriminaliteit]\n    areas: [GM0935]\n",
};

/* One decision of the fixed set: what a publish of one signal asks. */
typedef struct decision_case {
    int partner; /* anchor partner index */
    int caseworker;
    const char *kind, *theme, *area;
    int has_case_ref;
    const char *recipients[2];
    size_t n_recipients;
    verdict_t expect;
} decision_case_t;

static const decision_case_t policy_bench_decisions[] = {
    {WOCO, 0, "hennepkwekerij", "ondermijning", "BU09350101", 0, {NULL}, 0, VERDICT_ALLOW},
    {GEMEENTE, 0, "melding-overlast", "overlast", "WK093501", 0, {NULL}, 0, VERDICT_ALLOW},
    {GEMEENTE, 0, "adrescontrole", "drugs", "GM0917", 0, {NULL}, 0, VERDICT_ALLOW},
    {POLITIE, 0, "bevinding", "mensenhandel", "BU09350105", 0, {NULL}, 0, VERDICT_ALLOW},
    {POLITIE, 0, "bevinding", "ondermijning", "GM0917", 0, {"riec-limburg"}, 1, VERDICT_ALLOW},
    {GEMEENTE, 1, "zorgmelding", "huiselijk-geweld", "BU09170003", 0, {NULL}, 0, VERDICT_ALLOW},
    {WOCO, 0, "zorgmelding", "zorg", "GM0928", 0, {NULL}, 0, VERDICT_ALLOW},
    {RIEC, 0, "analyse", "geweld", "WK092801", 0, {NULL}, 0, VERDICT_ALLOW},
    {WOCO, 0, "woonfraude-signaal", "woonfraude", "BU09350101", 1, {NULL}, 0, VERDICT_ALLOW},
    {POLITIE,
     1,
     "brandmelding",
     "brandveiligheid",
     "WK093503",
     0,
     {"woco-servatius"},
     1,
     VERDICT_ALLOW},
    {GEMEENTE, 0, "signaal", "radicalisering", "GM0935", 0, {"riec-limburg"}, 1, VERDICT_ALLOW},
    {RIEC,
     0,
     "analyse",
     "ondermijning",
     "GM0935",
     0,
     {"politie-limburg", "gemeente-maastricht"},
     2,
     VERDICT_ALLOW},
    /* outside the region: no rule at any size */
    {GEMEENTE, 0, "melding-overlast", "overlast", "GM0363", 0, {NULL}, 0, VERDICT_DENY},
    {WOCO, 0, "woonfraude-signaal", "woonfraude", "BU03630101", 0, {NULL}, 0, VERDICT_DENY},
    {POLITIE, 0, "bevinding", "ondermijning", "GM0363", 0, {"riec-limburg"}, 1, VERDICT_DENY},
    {RIEC, 0, "analyse", "drugs", "GM0363", 0, {"woco-servatius"}, 1, VERDICT_DENY},
};

#define POLICY_N_DECISIONS COUNT_OF(policy_bench_decisions)

typedef struct policy_bench_options {
    unsigned sizes[POLICY_MAX_SIZES];
    size_t n_sizes;
    uint64_t fixed_decisions; /* > 0: exactly this many per size, no rounds (callgrind) */
    double min_time_s;
    uint64_t seed;
    const char *json_path;
    int keep;
} policy_bench_options_t;

/* One policy size: its file, the loaded policy and what was measured. */
typedef struct size_run {
    unsigned rules, partners, principals;
    char path[BENCH_PATH_MAX];
    long long bytes;
    policy_t *policy;
    double load_ms;
    long load_rss_kib;   /* this process's RSS growth over the load */
    size_t warnings;     /* rules that never decide, ... (policy_warning_count) */
    uint64_t check_work; /* the steps of that check, part of the load (policy_warning_work) */
    const policy_principal_t *senders[POLICY_N_DECISIONS];
    double round_ns[POLICY_ROUNDS];
    size_t n_rounds;
    uint64_t decisions; /* timed, over all rounds */
    double ns;          /* median of the rounds */
    double ns_min;      /* the best round */
    double single_ns[POLICY_N_DECISIONS];
    double ns_allow, ns_deny;
    double candidates; /* mean rules with the sender's partner in from and the theme or "*" */
    unsigned candidates_max;
    int ok; /* loaded, and every decision had its expected verdict */
} size_run_t;

typedef struct bench {
    policy_bench_options_t opt;
    bench_env_t env; /* the folder of the policy files, and the first problem */
    size_run_t runs[POLICY_MAX_SIZES];
    policy_signal_facts_t facts[POLICY_N_DECISIONS];
    uint64_t sink; /* keeps every decision's result alive */
    int completed;
} bench_t;

/* A growing text: the generated policy. */
typedef struct text {
    char *p;
    size_t len, cap;
    int failed;
} text_t;

static void text_add(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_add(text_t *t, const char *fmt, ...)
{
    for (int attempt = 0; attempt < 2 && !t->failed; attempt++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p != NULL ? t->p + t->len : NULL, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = 1;
        } else if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        } else {
            size_t cap = (t->cap + (size_t)n + 1) * 2;
            char *grown = realloc(t->p, cap);
            if (grown == NULL)
                t->failed = 1;
            else {
                t->p = grown;
                t->cap = cap;
            }
        }
    }
}

/* ------------------------------------------------------------------ generator */

/* splitmix64: the same policies for the same seed on every machine. */
static uint64_t policy_bench_next(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static unsigned policy_bench_below(uint64_t *state, unsigned n)
{
    return (unsigned)(policy_bench_next(state) % n);
}

/* Percent chance. */
static int policy_bench_chance(uint64_t *state, unsigned percent)
{
    return policy_bench_below(state, 100) < percent;
}

static unsigned policy_bench_partner_count(unsigned rules)
{
    unsigned n = rules / POLICY_RULES_PER_PARTNER;
    if (n < POLICY_MIN_PARTNERS)
        n = POLICY_MIN_PARTNERS;
    return n > SCHAKEL_MAX_PARTNERS ? SCHAKEL_MAX_PARTNERS : n;
}

static void policy_bench_partner_id(unsigned i, char *out, size_t len)
{
    if (i < ANCHOR_PARTNERS)
        snprintf(out, len, "%s", policy_bench_anchor_partners[i]);
    else
        snprintf(out, len, "%s-%02u",
                 policy_bench_partner_kinds[i % COUNT_OF(policy_bench_partner_kinds)],
                 i / (unsigned)COUNT_OF(policy_bench_partner_kinds) + 1);
}

/* partners: and principals: a system and a caseworker principal for every
 * partner, and one operator; keys from seeds drawn from the generator. */
static void policy_bench_write_parties(text_t *t, unsigned partners, uint64_t *state)
{
    char id[64];
    text_add(t, "version: 1\npartners:\n");
    for (unsigned i = 0; i < partners; i++) {
        policy_bench_partner_id(i, id, sizeof id);
        text_add(t, "  - id: %s\n    name: \"Partner %u (%s)\"\n", id, i + 1, id);
    }
    text_add(t, "principals:\n");
    static const char *const names[] = {"systeem", "medewerker", "beheer"};
    static const char *const roles[] = {"system", "caseworker", "operator"};
    for (unsigned i = 0; i < partners; i++) {
        policy_bench_partner_id(i, id, sizeof id);
        for (unsigned r = 0; r < (i == 0 ? 3u : 2u); r++) {
            uint8_t seed[crypto_sign_SEEDBYTES], pk[crypto_sign_PUBLICKEYBYTES],
                sk[crypto_sign_SECRETKEYBYTES];
            char z85[41];
            for (size_t k = 0; k < sizeof seed; k += 8) {
                uint64_t v = policy_bench_next(state);
                memcpy(seed + k, &v, 8);
            }
            crypto_sign_seed_keypair(pk, sk, seed);
            sodium_memzero(sk, sizeof sk);
            keys_public_z85(pk, z85);
            text_add(t, "  - id: %s/%s\n    role: %s\n    key: \"%s\"\n", id, names[r], roles[r],
                     z85);
        }
    }
}

/* n distinct values below `of` into out. */
static void policy_bench_pick(uint64_t *state, unsigned n, unsigned of, unsigned *out)
{
    for (unsigned i = 0; i < n; i++) {
        int again;
        do {
            out[i] = policy_bench_below(state, of);
            again = 0;
            for (unsigned j = 0; j < i; j++)
                again |= out[j] == out[i];
        } while (again);
    }
}

static void policy_bench_write_partner_list(text_t *t, const char *key, const unsigned *which,
                                            unsigned n)
{
    char id[64];
    text_add(t, "    %s: [", key);
    for (unsigned i = 0; i < n; i++) {
        policy_bench_partner_id(which[i], id, sizeof id);
        text_add(t, "%s%s", i ? ", " : "", id);
    }
    text_add(t, "]\n");
}

/* 1..3 areas of the region: municipalities, some districts and
 * neighbourhoods; never "*", so that the denied decisions (outside the
 * region) stay denied at every size. */
static void policy_bench_write_areas(text_t *t, uint64_t *state)
{
    char areas[3][16];
    unsigned n = 1 + policy_bench_below(state, 3);
    text_add(t, "    areas: [");
    for (unsigned i = 0; i < n; i++) {
        const char *gm = policy_bench_municipalities[policy_bench_below(
            state, COUNT_OF(policy_bench_municipalities))];
        unsigned level = policy_bench_below(state, 10);
        if (level < 7)
            snprintf(areas[i], sizeof areas[i], "GM%s", gm);
        else if (level < 9)
            snprintf(areas[i], sizeof areas[i], "WK%s%02u", gm, 1 + policy_bench_below(state, 12));
        else
            snprintf(areas[i], sizeof areas[i], "BU%s%02u%02u", gm,
                     1 + policy_bench_below(state, 12), 1 + policy_bench_below(state, 9));
        int dup = 0;
        for (unsigned j = 0; j < i; j++)
            dup |= strcmp(areas[j], areas[i]) == 0;
        if (!dup)
            text_add(t, "%s%s", i ? ", " : "", areas[i]);
    }
    text_add(t, "]\n");
}

static void policy_bench_write_kinds_themes(text_t *t, uint64_t *state)
{
    unsigned which[3], n;
    if (policy_bench_chance(state, 30)) {
        text_add(t, "    kinds: [\"*\"]\n");
    } else if (!policy_bench_chance(state, 5)) { /* kinds left out: any kind */
        n = 1 + policy_bench_below(state, 3);
        policy_bench_pick(state, n, COUNT_OF(policy_bench_kinds), which);
        text_add(t, "    kinds: [");
        for (unsigned i = 0; i < n; i++)
            text_add(t, "%s%s", i ? ", " : "", policy_bench_kinds[which[i]]);
        text_add(t, "]\n");
    }
    size_t n_themes = 0;
    while (syntax_themes[n_themes] != NULL)
        n_themes++;
    if (policy_bench_chance(state, 10)) {
        text_add(t, "    themes: [\"*\"]\n");
        return;
    }
    n = 1 + policy_bench_below(state, 2);
    policy_bench_pick(state, n, (unsigned)n_themes, which);
    text_add(t, "    themes: [");
    for (unsigned i = 0; i < n; i++)
        text_add(t, "%s%s", i ? ", " : "", syntax_themes[which[i]]);
    text_add(t, "]\n");
}

/* purpose, legal basis, fields, retention: what every rule must say. Kept
 * short: 10,000 rules must fit the 4 MiB file limit. */
static void policy_bench_write_terms(text_t *t, unsigned number, uint64_t *state)
{
    text_add(t,
             "    purpose: \"Convenant, doel %u\"\n"
             "    legal_basis: \"Convenant VHL 2023, art. %u\"\n"
             "    fields: [",
             number, 1 + policy_bench_below(state, 20));
    int first = 1;
    for (unsigned bit = 0; bit < 10; bit++) {
        const char *name = policy_field_name(1u << bit);
        if (name != NULL && policy_bench_chance(state, 40)) {
            text_add(t, "%s%s", first ? "" : ", ", name);
            first = 0;
        }
    }
    text_add(t, "]\n    retention: %s\n",
             policy_bench_retentions[policy_bench_below(state, COUNT_OF(policy_bench_retentions))]);
}

/* A rule between partners of the region, varied in every dimension. */
static void policy_bench_write_filler(text_t *t, unsigned number, unsigned partners,
                                      uint64_t *state)
{
    unsigned from[3], to[3], all[6];
    unsigned n_from = policy_bench_chance(state, 70) ? 1 : policy_bench_chance(state, 67) ? 2 : 3;
    unsigned n_to = 1 + policy_bench_below(state, 3);
    policy_bench_pick(state, n_from + n_to, partners, all);
    memcpy(from, all, n_from * sizeof *from);
    memcpy(to, all + n_from, n_to * sizeof *to);
    text_add(t, "  - id: regel-%05u\n", number);
    policy_bench_write_partner_list(t, "from", from, n_from);
    if (policy_bench_chance(state, 20))
        text_add(t, "    from_roles: [system]\n");
    policy_bench_write_partner_list(t, "to", to, n_to);
    if (policy_bench_chance(state, 10))
        text_add(t, "    to_roles: [caseworker]\n");
    policy_bench_write_kinds_themes(t, state);
    policy_bench_write_areas(t, state);
    policy_bench_write_terms(t, number, state);
    if (policy_bench_chance(state, 5))
        text_add(t, "    require_case_ref: true\n");
}

/* The whole policy of `rules` rules; the anchors at evenly spread places. */
static int policy_bench_generate(size_run_t *s, uint64_t seed, text_t *t)
{
    uint64_t state = seed ^ ((uint64_t)s->rules << 32);
    s->partners = policy_bench_partner_count(s->rules);
    s->principals = 2 * s->partners + 1;
    text_add(t, "# generated by bench_policy: %u rules, %u partners, seed %" PRIu64 "\n", s->rules,
             s->partners, seed);
    policy_bench_write_parties(t, s->partners, &state);
    text_add(t, "rules:\n");
    unsigned anchor = 0;
    for (unsigned i = 0; i < s->rules; i++) {
        unsigned at = anchor < POLICY_MIN_RULES ? (2 * anchor + 1) * s->rules / 16 : UINT32_MAX;
        if (i == at) {
            text_add(t, "  - id: anker-%u\n%s", anchor + 1, policy_bench_anchor_rules[anchor]);
            policy_bench_write_terms(t, i + 1, &state);
            anchor++;
        } else {
            policy_bench_write_filler(t, i + 1, s->partners, &state);
        }
    }
    return t->failed || anchor != POLICY_MIN_RULES ? -1 : 0;
}

/* ------------------------------------------------------------------ load and check */

/* The facts of every decision of the set; the same at every size. */
static void policy_bench_facts(bench_t *b)
{
    for (size_t i = 0; i < POLICY_N_DECISIONS; i++) {
        const decision_case_t *d = &policy_bench_decisions[i];
        b->facts[i] = (policy_signal_facts_t){
            .kind = d->kind,
            .theme = d->theme,
            .area = d->area,
            .has_subject = 1,
            .has_case_ref = d->has_case_ref,
            .recipients = d->n_recipients > 0 ? d->recipients : NULL,
            .n_recipients = d->n_recipients,
        };
    }
}

/* Rules whose `from` has the sender's partner and whose `themes` have the
 * signal's theme or "*": the candidates docs/POLICY.md section 5 names,
 * the rules a decision may have to look at. Counted outside the timing. */
static unsigned policy_bench_candidates(const policy_t *p, const policy_principal_t *sender,
                                        const char *theme)
{
    size_t t = 0;
    while (syntax_themes[t] != NULL && strcmp(syntax_themes[t], theme) != 0)
        t++;
    unsigned n = 0;
    for (size_t i = 0; i < policy_rule_count(p); i++) {
        policy_rule_scope_t scope;
        if (policy_rule_scope(p, policy_rule_at(p, i), &scope) != 0)
            continue;
        if ((scope.from_partners >> sender->partner->index & 1) &&
            (scope.any_theme || (syntax_themes[t] != NULL && (scope.themes >> t & 1))))
            n++;
    }
    return n;
}

/* Every decision of the set once: its sender must exist and its verdict
 * must be the expected one. */
static int policy_bench_check(bench_t *b, size_run_t *s)
{
    unsigned total = 0;
    for (size_t i = 0; i < POLICY_N_DECISIONS; i++) {
        const decision_case_t *d = &policy_bench_decisions[i];
        char id[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
        snprintf(id, sizeof id, "%s/%s", policy_bench_anchor_partners[d->partner],
                 d->caseworker ? "medewerker" : "systeem");
        s->senders[i] = policy_principal_by_id(s->policy, id);
        if (s->senders[i] == NULL) {
            bench_problem(&b->env, "%u rules: no principal %s", s->rules, id);
            return -1;
        }
        policy_decision_t out;
        verdict_t v = policy_decide_signal(s->policy, s->senders[i], &b->facts[i], &out);
        if (v != d->expect) {
            bench_problem(&b->env, "%u rules: decision %zu (%s, %s, %s) was %s, expected %s: %s",
                          s->rules, i + 1, id, d->kind, d->theme,
                          v == VERDICT_ALLOW ? "allow" : "deny",
                          d->expect == VERDICT_ALLOW ? "allow" : "deny", out.reason);
            return -1;
        }
        unsigned c = policy_bench_candidates(s->policy, s->senders[i], d->theme);
        total += c;
        if (c > s->candidates_max)
            s->candidates_max = c;
    }
    s->candidates = (double)total / (double)POLICY_N_DECISIONS;
    return 0;
}

/* Generate, write and load one size; time the load. */
static int policy_bench_prepare(bench_t *b, size_run_t *s)
{
    text_t t = {0};
    snprintf(s->path, sizeof s->path, "%s/policy-%u.yaml", b->env.dir, s->rules);
    if (policy_bench_generate(s, b->opt.seed, &t) != 0 ||
        bench_write_file(s->path, t.p, 0644) != 0) {
        bench_problem(&b->env, "%u rules: cannot generate or write %s", s->rules, s->path);
        free(t.p);
        return -1;
    }
    s->bytes = (long long)t.len;
    free(t.p);
    char err[512] = "";
    bench_mem_t before, after;
    int have_mem = bench_read_mem(0, &before) == 0;
    int64_t t0 = bench_now_ns();
    s->policy = policy_load(s->path, err, sizeof err);
    s->load_ms = (double)(bench_now_ns() - t0) / 1e6;
    if (have_mem && bench_read_mem(0, &after) == 0)
        s->load_rss_kib = after.rss_kib - before.rss_kib;
    if (s->policy == NULL) {
        bench_problem(&b->env, "%u rules: policy_load refused the generated policy: %s", s->rules,
                      err);
        return -1;
    }
    if (policy_rule_count(s->policy) != s->rules) {
        bench_problem(&b->env, "%u rules: the loaded policy has %zu rules", s->rules,
                      policy_rule_count(s->policy));
        return -1;
    }
    s->warnings = policy_warning_count(s->policy);
    s->check_work = policy_warning_work(s->policy);
    if (policy_bench_check(b, s) != 0)
        return -1;
    s->ok = 1;
    return 0;
}

/* ------------------------------------------------------------------ timing */

/* This thread's CPU time in ns: a decision is pure computation, and CPU
 * time leaves out the time the thread waits for a core on a shared
 * machine, which wall time would count as decision cost. */
static int64_t policy_bench_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* `repeats` passes over the decisions [from, to) of the set. */
static void policy_bench_pass(bench_t *b, const size_run_t *s, size_t from, size_t to,
                              uint64_t repeats)
{
    policy_decision_t out;
    uint64_t sink = 0;
    for (uint64_t r = 0; r < repeats; r++)
        for (size_t i = from; i < to; i++)
            sink += (uint64_t)policy_decide_signal(s->policy, s->senders[i], &b->facts[i], &out) +
                    out.n_grants;
    b->sink += sink;
}

/* Decide the whole set over and over until at least min_s of CPU time and
 * min_n decisions (bounded by POLICY_ROUND_CAP_S of wall time); returns
 * CPU ns per decision. */
static double policy_bench_round(bench_t *b, size_run_t *s, double min_s, uint64_t min_n)
{
    const uint64_t repeats = 64; /* passes between two looks at the clock */
    uint64_t done = 0;
    int64_t wall0 = bench_now_ns(), t0 = policy_bench_cpu_ns(), now = t0;
    while (done < min_n || (double)(now - t0) < min_s * 1e9) {
        policy_bench_pass(b, s, 0, POLICY_N_DECISIONS, repeats);
        done += repeats * POLICY_N_DECISIONS;
        now = policy_bench_cpu_ns();
        if ((double)(bench_now_ns() - wall0) > POLICY_ROUND_CAP_S * 1e9)
            break;
    }
    s->decisions += done;
    return (double)(now - t0) / (double)done;
}

static int policy_bench_compare_double(const void *x, const void *y)
{
    double a = *(const double *)x, c = *(const double *)y;
    return a < c ? -1 : a > c;
}

/* Each decision of the set alone, for the allowed / denied split. */
static void policy_bench_singles(bench_t *b, size_run_t *s)
{
    double allow = 0, deny = 0;
    size_t n_allow = 0, n_deny = 0;
    for (size_t i = 0; i < POLICY_N_DECISIONS; i++) {
        int64_t t0 = policy_bench_cpu_ns();
        policy_bench_pass(b, s, i, i + 1, POLICY_SINGLE_REPEATS);
        s->single_ns[i] = (double)(policy_bench_cpu_ns() - t0) / POLICY_SINGLE_REPEATS;
        if (policy_bench_decisions[i].expect == VERDICT_ALLOW) {
            allow += s->single_ns[i];
            n_allow++;
        } else {
            deny += s->single_ns[i];
            n_deny++;
        }
    }
    s->ns_allow = n_allow ? allow / (double)n_allow : 0;
    s->ns_deny = n_deny ? deny / (double)n_deny : 0;
}

/* Rounds interleaved over the sizes, so that a machine that slows down
 * for a while slows every size alike; the median round per size. */
static void policy_bench_measure(bench_t *b)
{
    size_t n = b->opt.n_sizes;
    if (b->opt.fixed_decisions > 0) {
        for (size_t k = 0; k < n; k++) {
            size_run_t *s = &b->runs[k];
            if (!s->ok)
                continue;
            uint64_t passes = b->opt.fixed_decisions / POLICY_N_DECISIONS;
            size_t rest = (size_t)(b->opt.fixed_decisions % POLICY_N_DECISIONS);
            int64_t t0 = policy_bench_cpu_ns();
            policy_bench_pass(b, s, 0, POLICY_N_DECISIONS, passes);
            policy_bench_pass(b, s, 0, rest, 1);
            s->decisions = b->opt.fixed_decisions;
            s->ns = s->ns_min = (double)(policy_bench_cpu_ns() - t0) / (double)s->decisions;
        }
        return;
    }
    double min_s = b->opt.min_time_s / POLICY_ROUNDS;
    uint64_t min_n = POLICY_MIN_DECISIONS / POLICY_ROUNDS;
    for (size_t k = 0; k < n; k++) /* warm-up: caches, branch predictors, page faults */
        if (b->runs[k].ok)
            (void)policy_bench_round(b, &b->runs[k], min_s / 5, min_n / 5);
    for (size_t k = 0; k < n; k++)
        b->runs[k].decisions = 0;
    for (size_t r = 0; r < POLICY_ROUNDS; r++)
        for (size_t k = 0; k < n; k++) {
            size_run_t *s = &b->runs[k];
            if (s->ok)
                s->round_ns[s->n_rounds++] = policy_bench_round(b, s, min_s, min_n);
        }
    for (size_t k = 0; k < n; k++) {
        size_run_t *s = &b->runs[k];
        if (!s->ok)
            continue;
        double sorted[POLICY_ROUNDS];
        memcpy(sorted, s->round_ns, sizeof sorted);
        qsort(sorted, s->n_rounds, sizeof *sorted, policy_bench_compare_double);
        s->ns = sorted[s->n_rounds / 2];
        s->ns_min = sorted[0];
        policy_bench_singles(b, s);
    }
}

/* ------------------------------------------------------------------ report */

static const size_run_t *policy_bench_find(const bench_t *b, unsigned rules)
{
    for (size_t k = 0; k < b->opt.n_sizes; k++)
        if (b->runs[k].rules == rules && b->runs[k].ok && b->runs[k].ns > 0)
            return &b->runs[k];
    return NULL;
}

/* ns at 10,000 rules over ns at 10; -1 when either was not measured.
 * paired: the median over the rounds of each round's own ratio (the
 * criterion). The two sizes of one round run within a second of each
 * other, so a tenant that slows the machine for a while (and slows the
 * larger policy more: 3.3 MiB against 4 KiB, its cache misses) weighs on
 * both sides of a round's ratio alike; a ratio of medians (or of best
 * rounds) takes its two sides from different moments. The ratio of the
 * medians is reported beside it. */
static double policy_bench_ratio(const bench_t *b, int paired)
{
    const size_run_t *small = policy_bench_find(b, 10), *large = policy_bench_find(b, 10000);
    if (small == NULL || large == NULL)
        return -1;
    if (!paired || small->n_rounds != large->n_rounds || small->n_rounds < 2)
        return large->ns / small->ns;
    double ratios[POLICY_ROUNDS];
    for (size_t r = 0; r < small->n_rounds; r++)
        ratios[r] = large->round_ns[r] / small->round_ns[r];
    qsort(ratios, small->n_rounds, sizeof *ratios, policy_bench_compare_double);
    return ratios[small->n_rounds / 2];
}

static size_t policy_bench_allowed(void)
{
    size_t n = 0;
    for (size_t i = 0; i < POLICY_N_DECISIONS; i++)
        n += policy_bench_decisions[i].expect == VERDICT_ALLOW;
    return n;
}

static void policy_bench_print(const bench_t *b)
{
    const char *rule = "------------------------------------------------------------------------"
                       "----------------------------";
    const size_run_t *base = policy_bench_find(b, b->runs[0].rules);
    printf("\nSchakel policy bench: a set of %zu decisions (%zu allowed, %zu denied), ",
           POLICY_N_DECISIONS, policy_bench_allowed(), POLICY_N_DECISIONS - policy_bench_allowed());
    if (b->opt.fixed_decisions > 0)
        printf("%" PRIu64 " decisions per size, seed %" PRIu64 "\n%s\n", b->opt.fixed_decisions,
               b->opt.seed, rule);
    else
        printf("median of %d interleaved rounds, seed %" PRIu64 "\n%s\n", POLICY_ROUNDS,
               b->opt.seed, rule);
    printf("%-7s %-9s %-11s %-8s %-8s %-12s %-10s %-8s %-8s %-8s %s\n", "rules", "partners",
           "policy KiB", "load ms", "RSS KiB", "candidates", "ns/decide", "best", "allowed",
           "denied", "vs first");
    for (size_t k = 0; k < b->opt.n_sizes; k++) {
        const size_run_t *s = &b->runs[k];
        char cand[32];
        snprintf(cand, sizeof cand, "%.1f (%u)", s->candidates, s->candidates_max);
        if (!s->ok) {
            printf("%-7u %-9u not measured (see the problem below)\n", s->rules, s->partners);
            continue;
        }
        printf("%-7u %-9u %-11.0f %-8.1f %-8ld %-12s %-10.1f %-8.1f %-8.1f %-8.1f %.2f\n", s->rules,
               s->partners, (double)s->bytes / 1024.0, s->load_ms, s->load_rss_kib, cand, s->ns,
               s->ns_min, s->ns_allow, s->ns_deny, base != NULL ? s->ns / base->ns : 0);
    }
    double ratio = policy_bench_ratio(b, 1), median_ratio = policy_bench_ratio(b, 0);
    printf("%s\nthe load's check for rules that never decide (docs/POLICY.md 5): steps, warnings\n",
           rule);
    for (size_t k = 0; k < b->opt.n_sizes; k++)
        if (b->runs[k].ok)
            printf("  %u rules: %" PRIu64 " steps, %zu warnings\n", b->runs[k].rules,
                   b->runs[k].check_work, b->runs[k].warnings);
    printf("%s\ncandidates: rules with the sender's partner in `from` and the signal's theme (or "
           "\"*\") in `themes`,\nper decision of the set, mean (max); they are what a decision "
           "may have to look at.\n%s\n",
           rule, rule);
    printf("%-46s %-10s %-10s %s\n", "criterion", "value", "target", "result");
    if (ratio > 0)
        printf("%-46s %-10.2f %-10s %s\n%-46s %.2f\n", "ns per decision, 10,000 / 10 rules, paired",
               ratio, "<= 1.5", ratio <= POLICY_RATIO_TARGET ? "met" : "not met",
               "(the same of the median rounds)", median_ratio);
    else
        printf("%-46s %-10s %-10s %s\n", "ns per decision, 10,000 / 10 rules, paired", "-",
               "<= 1.5", "not measured");
    if (b->env.problem[0] != '\0')
        printf("problem: %s\n", b->env.problem);
    printf("%s\n", rule);
}

static void policy_bench_json_size(FILE *f, const size_run_t *s)
{
    unsigned n = s->rules;
    fprintf(f, "  \"partners_%u\": %u,\n  \"principals_%u\": %u,\n", n, s->partners, n,
            s->principals);
    fprintf(f, "  \"policy_bytes_%u\": %lld,\n  \"load_ms_%u\": %.3f,\n", n, s->bytes, n,
            s->load_ms);
    fprintf(f, "  \"load_rss_kib_%u\": %ld,\n", n, s->load_rss_kib);
    fprintf(f, "  \"check_steps_%u\": %" PRIu64 ",\n  \"warnings_%u\": %zu,\n", n, s->check_work, n,
            s->warnings);
    fprintf(f, "  \"candidates_mean_%u\": %.2f,\n  \"candidates_max_%u\": %u,\n", n, s->candidates,
            n, s->candidates_max);
    if (!s->ok) {
        fprintf(f, "  \"ns_per_decision_%u\": null,\n", n);
        return;
    }
    fprintf(f, "  \"ns_per_decision_%u\": %.2f,\n  \"ns_best_round_%u\": %.2f,\n", n, s->ns, n,
            s->ns_min);
    if (s->ns_allow > 0)
        fprintf(f, "  \"ns_allowed_%u\": %.2f,\n  \"ns_denied_%u\": %.2f,\n", n, s->ns_allow, n,
                s->ns_deny);
    fprintf(f, "  \"decisions_timed_%u\": %" PRIu64 ",\n", n, s->decisions);
}

static void policy_bench_json_details(FILE *f, const bench_t *b)
{
    fprintf(f, "  \"sizes\": [\n");
    for (size_t k = 0; k < b->opt.n_sizes; k++) {
        const size_run_t *s = &b->runs[k];
        fprintf(f, "    {\"rules\": %u, \"rounds_ns\": [", s->rules);
        for (size_t r = 0; r < s->n_rounds; r++)
            fprintf(f, "%s%.2f", r ? ", " : "", s->round_ns[r]);
        fprintf(f, "], \"per_decision_ns\": [");
        for (size_t i = 0; i < POLICY_N_DECISIONS && s->ns_allow > 0; i++)
            fprintf(f, "%s%.2f", i ? ", " : "", s->single_ns[i]);
        fprintf(f, "]}%s\n", k + 1 < b->opt.n_sizes ? "," : "");
    }
    fprintf(f, "  ]\n");
}

static int policy_bench_write_json(const bench_t *b)
{
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", b->opt.json_path);
    char *slash = strrchr(parent, '/');
    if (slash != NULL) {
        *slash = '\0';
        (void)mkdir(parent, 0755); /* the results folder; its parent must exist */
    }
    FILE *f = fopen(b->opt.json_path, "w");
    if (f == NULL) {
        fprintf(stderr, "bench_policy: cannot write %s: %s\n", b->opt.json_path, strerror(errno));
        return -1;
    }
    double ratio = policy_bench_ratio(b, 1), median_ratio = policy_bench_ratio(b, 0);
    fprintf(f, "{\n  \"bench\": \"policy\",\n  \"completed\": %s,\n",
            b->completed ? "true" : "false");
    fprintf(f, "  \"seed\": %" PRIu64 ",\n  \"decisions_in_set\": %zu,\n", b->opt.seed,
            POLICY_N_DECISIONS);
    fprintf(f, "  \"allowed_in_set\": %zu,\n  \"rounds\": %d,\n", policy_bench_allowed(),
            b->opt.fixed_decisions > 0 ? 1 : POLICY_ROUNDS);
    fprintf(f, "  \"fixed_decisions\": %" PRIu64 ",\n", b->opt.fixed_decisions);
    for (size_t k = 0; k < b->opt.n_sizes; k++)
        policy_bench_json_size(f, &b->runs[k]);
    if (ratio > 0)
        fprintf(f, "  \"ratio_10000_over_10\": %.3f,\n  \"ratio_median_10000_over_10\": %.3f,\n",
                ratio, median_ratio);
    else
        fprintf(f, "  \"ratio_10000_over_10\": null,\n  \"ratio_median_10000_over_10\": null,\n");
    fprintf(f, "  \"problem\": ");
    bench_json_string(f, b->env.problem);
    fprintf(f, ",\n  \"criteria\": {\n    \"ratio_at_most_1_5\": {\"value\": ");
    if (ratio > 0)
        fprintf(f, "%.3f, \"target\": %.1f, \"met\": %s}\n  },\n", ratio, POLICY_RATIO_TARGET,
                ratio <= POLICY_RATIO_TARGET ? "true" : "false");
    else
        fprintf(f, "null, \"target\": %.1f, \"met\": false}\n  },\n", POLICY_RATIO_TARGET);
    policy_bench_json_details(f, b);
    fprintf(f, "}\n");
    return fclose(f);
}

/* ------------------------------------------------------------------ main */

static void policy_bench_usage(FILE *out)
{
    fprintf(out,
            "usage: bench_policy [--rules N]... [--decisions N] [--min-time S] [--seed N]\n"
            "                    [--json FILE] [--keep]\n"
            "  --rules N        a policy of N rules (%u..%u); repeat for several sizes, up to %d\n"
            "                   (default 10, 100, 1000 and 10000)\n"
            "  --decisions N    exactly N decisions per size, one round, no per-decision pass:\n"
            "                   for instruction counts (valgrind --tool=callgrind)\n"
            "  --min-time S     seconds of timing per size, over %d rounds (default %.1f; at\n"
            "                   least %u decisions per size in any case)\n"
            "  --seed N         seed of the generated policies (default %u)\n"
            "  --json FILE      results (default tests/bench/results/policy.json)\n"
            "  --keep           keep the folder with the generated policy files and name it\n",
            POLICY_MIN_RULES, SCHAKEL_MAX_RULES, POLICY_MAX_SIZES, POLICY_ROUNDS,
            POLICY_DEFAULT_MIN_TIME_S, POLICY_MIN_DECISIONS, POLICY_DEFAULT_SEED);
}

static int policy_bench_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* One option with a value; returns 0, -1 when out of range, -2 when unknown. */
static int policy_bench_parse_value(policy_bench_options_t *o, const char *a, const char *value,
                                    int *sizes_given)
{
    uint64_t v = 0;
    if (strcmp(a, "--rules") == 0) {
        if (!*sizes_given)
            o->n_sizes = 0;
        *sizes_given = 1;
        if (o->n_sizes == POLICY_MAX_SIZES ||
            policy_bench_parse_u64(value, POLICY_MIN_RULES, SCHAKEL_MAX_RULES, &v) != 0)
            return -1;
        for (size_t k = 0; k < o->n_sizes; k++)
            if (o->sizes[k] == v)
                return -1;
        o->sizes[o->n_sizes++] = (unsigned)v;
        return 0;
    }
    if (strcmp(a, "--decisions") == 0)
        return policy_bench_parse_u64(value, 1, UINT64_C(1) << 40, &o->fixed_decisions);
    if (strcmp(a, "--seed") == 0)
        return policy_bench_parse_u64(value, 0, UINT64_MAX, &o->seed);
    if (strcmp(a, "--min-time") == 0) {
        char *end = NULL;
        o->min_time_s = strtod(value, &end);
        return end != value && *end == '\0' && o->min_time_s >= 0.01 && o->min_time_s <= 600 ? 0
                                                                                             : -1;
    }
    if (strcmp(a, "--json") == 0) {
        o->json_path = value;
        return 0;
    }
    return -2;
}

/* Returns 0 to run, 1 for --help, 2 on a usage error. */
static int policy_bench_parse_args(int argc, char **argv, policy_bench_options_t *o)
{
    int sizes_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return 1;
        if (strcmp(a, "--keep") == 0) {
            o->keep = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "bench_policy: %s needs a value (or is unknown)\n", a);
            return 2;
        }
        const char *value = argv[++i];
        int rc = policy_bench_parse_value(o, a, value, &sizes_given);
        if (rc == -2) {
            fprintf(stderr, "bench_policy: unknown option %s\n", a);
            return 2;
        }
        if (rc != 0) {
            fprintf(stderr, "bench_policy: %s %s is out of range (or given twice)\n", a, value);
            return 2;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    bench_t *b = calloc(1, sizeof *b);
    if (b == NULL)
        return 1;
    b->opt = (policy_bench_options_t){.min_time_s = POLICY_DEFAULT_MIN_TIME_S,
                                      .seed = POLICY_DEFAULT_SEED,
                                      .json_path = "tests/bench/results/policy.json"};
    memcpy(b->opt.sizes, policy_bench_default_sizes, sizeof b->opt.sizes);
    b->opt.n_sizes = POLICY_MAX_SIZES;
    int rc = policy_bench_parse_args(argc, argv, &b->opt);
    if (rc != 0) {
        policy_bench_usage(rc == 1 ? stdout : stderr);
        free(b);
        return rc == 1 ? 0 : 2;
    }
    b->env.broker_pidfd = -1;
    if (keys_init() != 0) {
        fprintf(stderr, "bench_policy: libsodium failed to initialise\n");
        free(b);
        return 1;
    }
    snprintf(b->env.dir, sizeof b->env.dir, "/tmp/schakel-bench-XXXXXX");
    if (mkdtemp(b->env.dir) == NULL) {
        fprintf(stderr, "bench_policy: mkdtemp: %s\n", strerror(errno));
        free(b);
        return 1;
    }
    policy_bench_facts(b);
    int all_ok = 1;
    for (size_t k = 0; k < b->opt.n_sizes; k++) {
        b->runs[k].rules = b->opt.sizes[k];
        all_ok &= policy_bench_prepare(b, &b->runs[k]) == 0;
        printf("bench_policy: %u rules: %s, %.0f KiB, loaded in %.1f ms\n", b->runs[k].rules,
               b->runs[k].ok ? "generated" : "FAILED", (double)b->runs[k].bytes / 1024.0,
               b->runs[k].load_ms);
        fflush(stdout);
    }
    policy_bench_measure(b);
    b->completed = all_ok;
    policy_bench_print(b);
    int json_rc = policy_bench_write_json(b);
    for (size_t k = 0; k < b->opt.n_sizes; k++)
        policy_destroy(&b->runs[k].policy);
    bench_env_remove(&b->env, b->opt.keep);
    int ok = b->completed && json_rc == 0;
    free(b);
    return ok ? 0 : 1;
}
