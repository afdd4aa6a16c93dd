/*
 * test_policy_case.c — case types of the policy (broker/policy_case.c).
 *
 * Broken case types from tests/data/policy/case-bad-*.yaml must fail with
 * the right FILE:LINE; tests/data/policy/case-good.yaml must load; who may
 * open, act for the lead, be a member under which rule, receive, and see
 * which field is checked against tables with rows that must deny; hashes
 * follow the documented canonical form, stay put when only the writing
 * changes and change with any content. Keys are generated at run time into
 * a mkdtemp() folder, which is removed afterwards. Run from the repo root.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "keys.h"
#include "policy.h"
#include "syntax.h"

#define DATA_DIR "tests/data/policy"
#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))
#define YEAR (365LL * 86400)
#define ALL_SIGNAL_FIELDS                                                                          \
    (FIELD_AREA | FIELD_ADDRESS | FIELD_SUBJECT | FIELD_GROUNDS | FIELD_CASE_REF |                 \
     FIELD_SEVERITY | FIELD_OBSERVED_AT | FIELD_SUMMARY | FIELD_SOURCE_REF | FIELD_RECIPIENTS)

static const char *const key_names[] = {"gemeente-meldingen",
                                        "gemeente-jdevries",
                                        "politie-bvh",
                                        "politie-analist",
                                        "politie-beheer",
                                        "om-parket",
                                        "riec-analist",
                                        "riec-koppeling",
                                        "woco-meldingen",
                                        "brandweer-meldkamer",
                                        "vh-procescoordinator",
                                        "vh-coordinatie",
                                        NULL};

typedef struct fixture {
    char dir[64];
} fixture_t;

/* ------------------------------------------------------------------ helpers */

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char child[512];
            snprintf(child, sizeof child, "%s/%s", path, e->d_name);
            remove_tree(child);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int fixture_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(keys_init(), 0);
    snprintf(f->dir, sizeof f->dir, "/tmp/schakel-test-policy-case-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char path[256], err[256];
    snprintf(path, sizeof path, "%s/keys", f->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    for (size_t i = 0; key_names[i]; i++) {
        snprintf(path, sizeof path, "%s/keys/%s", f->dir, key_names[i]);
        if (keys_generate(path, err, sizeof err) != 0)
            fail_msg("keys_generate %s: %s", path, err);
    }
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    fixture_t *f = *state;
    remove_tree(f->dir);
    free(f);
    return 0;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        fail_msg("cannot open %s (run the tests from the repository root): %s", path,
                 strerror(errno));
    char *buf = malloc(SCHAKEL_MAX_POLICY_BYTES + 1);
    assert_non_null(buf);
    size_t n = fread(buf, 1, SCHAKEL_MAX_POLICY_BYTES, fp);
    fclose(fp);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(text, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

/* Copy tests/data/policy/NAME next to the fixture's keys/ and load it. */
static policy_t *load_data_file(const fixture_t *f, const char *name, char *err, size_t errlen)
{
    char src[256], dst[256];
    size_t len;
    snprintf(src, sizeof src, "%s/%s", DATA_DIR, name);
    snprintf(dst, sizeof dst, "%s/%s", f->dir, name);
    char *text = read_all(src, &len);
    write_file(dst, text, len);
    free(text);
    return policy_load(dst, err, errlen);
}

static policy_t *load_text(const fixture_t *f, const char *name, const char *text, char *err,
                           size_t errlen)
{
    char dst[256];
    snprintf(dst, sizeof dst, "%s/%s", f->dir, name);
    write_file(dst, text, strlen(text));
    return policy_load(dst, err, errlen);
}

static policy_t *load_good(const fixture_t *f)
{
    char err[512] = "";
    policy_t *p = load_data_file(f, "case-good.yaml", err, sizeof err);
    if (p == NULL)
        fail_msg("case-good.yaml: %s", err);
    return p;
}

static const policy_case_type_t *type_of(const policy_t *p, const char *id)
{
    const policy_case_type_t *t = policy_case_type_by_id(p, id);
    if (t == NULL)
        fail_msg("no case type \"%s\"", id);
    return t;
}

static const policy_principal_t *principal_of(const policy_t *p, const char *id)
{
    const policy_principal_t *pr = policy_principal_by_id(p, id);
    if (pr == NULL)
        fail_msg("no principal \"%s\"", id);
    return pr;
}

static const policy_partner_t *partner_of(const policy_t *p, const char *id)
{
    const policy_partner_t *partner = policy_partner_by_id(p, id);
    if (partner == NULL)
        fail_msg("no partner \"%s\"", id);
    return partner;
}

static const policy_case_member_rule_t *member_rule_of(const policy_t *p, const char *id)
{
    const policy_case_member_rule_t *r = policy_case_member_rule_by_id(p, id);
    if (r == NULL)
        fail_msg("no membership rule \"%s\"", id);
    return r;
}

/* ------------------------------------------------------------------ broken files */

typedef struct bad_row {
    const char *file;
    const char *where; /* "case-bad-x.yaml:17:" */
    const char *what;  /* a substring of the message */
} bad_row_t;

/* clang-format off */
static const bad_row_t bad_rows[] = {
    {"case-bad-unknown-member-key.yaml", "case-bad-unknown-member-key.yaml:36:",
     "unknown key \"felds\""},
    {"case-bad-unknown-type-key.yaml", "case-bad-unknown-type-key.yaml:38:",
     "unknown key \"retention\""},
    {"case-bad-lead-unknown.yaml", "case-bad-lead-unknown.yaml:30:",
     "case type \"ondermijning-adres\": lead names unknown partner \"rieck\""},
    {"case-bad-lead-twice.yaml", "case-bad-lead-twice.yaml:30:",
     "partner \"riec\" appears twice in lead"},
    {"case-bad-member-unknown-partner.yaml", "case-bad-member-unknown-partner.yaml:33:",
     "membership rule \"ondermijning-politie\": partners names unknown partner \"ggd\""},
    {"case-bad-duplicate-type.yaml", "case-bad-duplicate-type.yaml:38:",
     "duplicate case type id \"ondermijning-adres\" (first at line 27)"},
    {"case-bad-duplicate-member.yaml", "case-bad-duplicate-member.yaml:43:",
     "duplicate membership rule id \"ondermijning-politie\" (first at line 32)"},
    {"case-bad-member-is-rule.yaml", "case-bad-member-is-rule.yaml:32:",
     "membership rule id \"politie-riec\" is also the id of the rule at line 17"},
    {"case-bad-member-is-lead-rule.yaml", "case-bad-member-is-lead-rule.yaml:43:",
     "membership rule id \"ondermijning-adres.lead\" is the id of the lead rule of case type "
     "\"ondermijning-adres\" (line 27)"},
    {"case-bad-rule-is-lead-rule.yaml", "case-bad-rule-is-lead-rule.yaml:27:",
     "case type \"ondermijning-adres\": the id of its lead rule, \"ondermijning-adres.lead\", is "
     "also the id of the rule at line 17"},
    {"case-bad-on-behalf-unknown.yaml", "case-bad-on-behalf-unknown.yaml:31:",
     "on_behalf names unknown principal \"riec/procescoordinator\""},
    {"case-bad-on-behalf-operator.yaml", "case-bad-on-behalf-operator.yaml:32:",
     "on_behalf: \"politie/beheer\" is an operator"},
    {"case-bad-on-behalf-twice.yaml", "case-bad-on-behalf-twice.yaml:33:",
     "principal \"riec/analist\" appears twice in on_behalf"},
    {"case-bad-retention.yaml", "case-bad-retention.yaml:37:",
     "retention_after_close \"6w\" is not a positive number"},
    {"case-bad-retention-cap.yaml", "case-bad-retention-cap.yaml:37:",
     "retention_after_close \"31y\" exceeds the cap of 30 years"},
    {"case-bad-retention-missing.yaml", "case-bad-retention-missing.yaml:27:",
     "missing key \"retention_after_close\""},
    {"case-bad-field-name.yaml", "case-bad-field-name.yaml:36:",
     "\"Subject\" in fields is not a field name"},
    {"case-bad-field-star.yaml", "case-bad-field-star.yaml:36:",
     "\"*\" in fields must stand alone"},
    {"case-bad-field-twice.yaml", "case-bad-field-twice.yaml:39:",
     "\"text\" appears twice in fields (first at line 37)"},
    {"case-bad-signal-field.yaml", "case-bad-signal-field.yaml:37:",
     "unknown signal field \"bsn\" in signal_fields"},
    {"case-bad-signal-field-twice.yaml", "case-bad-signal-field-twice.yaml:37:",
     "signal field \"area\" appears twice"},
    {"case-bad-only-lead-member.yaml", "case-bad-only-lead-member.yaml:33:",
     "partner \"riec\" is the only lead of case type \"ondermijning-adres\" and always a member "
     "under \"ondermijning-adres.lead\""},
    {"case-bad-partner-two-rules.yaml", "case-bad-partner-two-rules.yaml:38:",
     "membership rule \"ondermijning-om\": partner \"om\" is already a member of case type "
     "\"ondermijning-adres\" under membership rule \"ondermijning-politie\" (line 32)"},
    {"case-bad-reopen.yaml", "case-bad-reopen.yaml:38:",
     "reopen must be true or false, not \"sometimes\""},
    {"case-bad-lead-roles.yaml", "case-bad-lead-roles.yaml:31:",
     "lead_roles: \"operator\" cannot be used: operators never take part in cases"},
    {"case-bad-roles.yaml", "case-bad-roles.yaml:34:",
     "membership rule \"ondermijning-politie\": roles: \"admin\" is not a role"},
    {"case-bad-roles-twice.yaml", "case-bad-roles-twice.yaml:34:",
     "membership rule \"ondermijning-politie\": roles: \"system\" appears twice"},
    {"case-bad-signal-field-star.yaml", "case-bad-signal-field-star.yaml:35:",
     "membership rule \"ondermijning-politie\": \"*\" in signal_fields must stand alone"},
    {"case-bad-type-id.yaml", "case-bad-type-id.yaml:27:",
     "case type id \"Ondermijning-adres\" is not an id token"},
    {"case-bad-type-id-long.yaml", "case-bad-type-id-long.yaml:27:",
     "is longer than 59 bytes"},
    {"case-bad-member-id.yaml", "case-bad-member-id.yaml:32:",
     "membership rule id \"ondermijning politie\" is not an id token"},
    {"case-bad-purpose-empty.yaml", "case-bad-purpose-empty.yaml:28:",
     "case type \"ondermijning-adres\": purpose must not be empty"},
    {"case-bad-legal-basis-missing.yaml", "case-bad-legal-basis-missing.yaml:32:",
     "missing key \"legal_basis\""},
    {"case-bad-members-missing.yaml", "case-bad-members-missing.yaml:27:",
     "missing key \"members\""},
    {"case-bad-members-not-list.yaml", "case-bad-members-not-list.yaml:31:",
     "members: expected a list, found a single value"},
    {"case-bad-not-list.yaml", "case-bad-not-list.yaml:26:",
     "case_types: expected a list, found a single value"},
};
/* clang-format on */

static void test_bad_case_types(void **state)
{
    const fixture_t *f = *state;
    int failures = 0;
    for (size_t i = 0; i < COUNT_OF(bad_rows); i++) {
        const bad_row_t *row = &bad_rows[i];
        char err[512] = "";
        policy_t *p = load_data_file(f, row->file, err, sizeof err);
        if (p != NULL) {
            print_error("%s: loaded, but must fail\n", row->file);
            policy_destroy(&p);
            failures++;
            continue;
        }
        if (strstr(err, row->where) == NULL || strstr(err, row->what) == NULL) {
            print_error("%s:\n  got      %s\n  expected %s ... %s\n", row->file, err, row->where,
                        row->what);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
}

/* Every case-bad-*.yaml in the data folder has a row, so none is forgotten. */
static void test_bad_files_all_listed(void **state)
{
    (void)state;
    DIR *d = opendir(DATA_DIR);
    assert_non_null(d);
    struct dirent *e;
    int unlisted = 0, seen = 0;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "case-bad-", 9) != 0)
            continue;
        seen++;
        int found = 0;
        for (size_t i = 0; i < COUNT_OF(bad_rows); i++)
            found |= strcmp(bad_rows[i].file, e->d_name) == 0;
        if (!found) {
            print_error("%s has no row in bad_rows\n", e->d_name);
            unlisted++;
        }
    }
    closedir(d);
    assert_int_equal(unlisted, 0);
    assert_int_equal(seen, COUNT_OF(bad_rows));
}

/* ------------------------------------------------------------------ good policy */

static void test_good_case_types(void **state)
{
    const fixture_t *f = *state;
    policy_t *p = load_good(f);
    assert_int_equal(policy_case_type_count(p), 3);
    static const struct {
        const char *id;
        unsigned line;
        int64_t retention;
        int reopen;
        const char *purpose;
    } types[] = {
        {"ondermijning-adres", 62, 2 * YEAR, 1, "Gezamenlijke aanpak ondermijning op een adres"},
        {"zorg-veiligheid", 88, YEAR, 0, "Complexe casus zorg en veiligheid"},
        {"overlast-straat", 109, 90 * 86400LL, 0, "Overlast in een straat"},
    };
    for (size_t i = 0; i < COUNT_OF(types); i++) {
        const policy_case_type_t *t = policy_case_type_at(p, i);
        assert_non_null(t);
        assert_string_equal(t->id, types[i].id);
        assert_int_equal(t->line, types[i].line);
        assert_int_equal(t->retention_after_close_s, types[i].retention);
        assert_int_equal(t->reopen_allowed, types[i].reopen);
        assert_string_equal(t->purpose, types[i].purpose);
        assert_ptr_equal(policy_case_type_by_id(p, types[i].id), t);
        assert_int_equal(strlen(t->hash_hex), 64);
        assert_int_equal(strspn(t->hash_hex, "0123456789abcdef"), 64);
    }
    assert_null(policy_case_type_at(p, 3));
    assert_null(policy_case_type_by_id(p, "onbekend"));
    assert_null(policy_case_type_by_id(p, "ondermijning-adres.lead"));
    assert_null(policy_case_type_by_id(p, NULL));
    assert_string_equal(type_of(p, "zorg-veiligheid")->legal_basis,
                        "Convenant Veiligheidshuis 2022, art. 7");

    static const struct {
        const char *id, *type;
        int is_lead;
        unsigned line;
        const char *purpose;
    } rules[] = {
        {"ondermijning-adres.lead", "ondermijning-adres", 1, 62,
         "Gezamenlijke aanpak ondermijning op een adres"},
        {"ondermijning-politie", "ondermijning-adres", 0, 67, "Opsporing en vervolging"},
        {"ondermijning-gemeente", "ondermijning-adres", 0, 74,
         "Bestuurlijke aanpak (Opiumwet art. 13b)"},
        {"ondermijning-woco", "ondermijning-adres", 0, 81, "Huurrechtelijke maatregelen"},
        {"zorg-veiligheid.lead", "zorg-veiligheid", 1, 88, "Complexe casus zorg en veiligheid"},
        {"zorg-gemeente", "zorg-veiligheid", 0, 96, "Regie op zorg"},
        {"zorg-politie", "zorg-veiligheid", 0, 102, "Persoonsgerichte aanpak"},
        {"overlast-straat.lead", "overlast-straat", 1, 109, "Overlast in een straat"},
    };
    for (size_t i = 0; i < COUNT_OF(rules); i++) {
        const policy_case_member_rule_t *r = member_rule_of(p, rules[i].id);
        assert_string_equal(r->id, rules[i].id);
        assert_ptr_equal(r->case_type, type_of(p, rules[i].type));
        assert_int_equal(r->is_lead, rules[i].is_lead);
        assert_int_equal(r->line, rules[i].line);
        assert_string_equal(r->purpose, rules[i].purpose);
        assert_int_equal(strlen(r->hash_hex), 64);
        /* every hash differs from every other, the case types' included */
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(member_rule_of(p, rules[j].id)->hash_hex, r->hash_hex);
        for (size_t k = 0; k < policy_case_type_count(p); k++)
            assert_string_not_equal(policy_case_type_at(p, k)->hash_hex, r->hash_hex);
        /* membership rules and signal rules are separate name spaces to look up */
        assert_null(policy_rule_by_id(p, rules[i].id));
    }
    assert_string_equal(member_rule_of(p, "zorg-politie")->legal_basis, "Wpg art. 20");
    assert_non_null(policy_rule_by_id(p, "woco-ondermijning"));
    assert_null(policy_case_member_rule_by_id(p, "woco-ondermijning"));
    assert_null(policy_case_member_rule_by_id(p, "ondermijning"));
    assert_null(policy_case_member_rule_by_id(p, NULL));
    assert_null(policy_case_member_rule_by_id(NULL, "zorg-politie"));
    policy_destroy(&p);
    assert_null(p);
}

/* A policy without case_types stays valid and answers every case question
 * with a denial. */
static void test_policy_without_case_types(void **state)
{
    const fixture_t *f = *state;
    char err[512] = "", reason[256];
    policy_t *p = load_data_file(f, "good.yaml", err, sizeof err);
    if (p == NULL)
        fail_msg("good.yaml: %s", err);
    assert_int_equal(policy_case_type_count(p), 0);
    assert_null(policy_case_type_at(p, 0));
    assert_null(policy_case_type_by_id(p, "ondermijning-adres"));
    assert_null(policy_case_member_rule_by_id(p, "woco-ondermijning"));
    const policy_principal_t *riec = principal_of(p, "riec/analist");
    assert_int_equal(policy_case_may_open(p, NULL, riec, reason, sizeof reason), VERDICT_DENY);
    assert_non_null(strstr(reason, "not a case type of the current policy"));
    assert_int_equal(policy_case_may_act_for(p, NULL, riec, riec->partner), VERDICT_DENY);
    assert_null(policy_case_membership(p, NULL, riec->partner, riec->partner));
    assert_int_equal(policy_case_member_reaches(p, NULL, riec), 0);
    assert_int_equal(policy_case_member_sees(NULL, "text"), 0);
    assert_int_equal(policy_case_member_signal_fields(NULL), 0);
    assert_int_equal(policy_case_type_count(NULL), 0);
    policy_destroy(&p);
}

/* ------------------------------------------------------------------ decisions */

typedef struct open_row {
    const char *type, *opener;
    verdict_t verdict;
    const char *reason; /* substring on deny */
} open_row_t;

/* clang-format off */
static const open_row_t open_rows[] = {
    {"ondermijning-adres", "riec/analist", VERDICT_ALLOW, NULL},
    {"ondermijning-adres", "riec/koppeling", VERDICT_ALLOW, NULL},
    {"ondermijning-adres", "politie/analist", VERDICT_DENY,
     "politie (politie/analist) may not open a case of type \"ondermijning-adres\": politie is "
     "not one of its lead partners"},
    {"ondermijning-adres", "brandweer/meldkamer", VERDICT_DENY, "brandweer is not one of its lead"},
    {"ondermijning-adres", "politie/beheer", VERDICT_DENY,
     "politie/beheer is an operator; operators never take part in cases"},
    {"zorg-veiligheid", "veiligheidshuis/procescoordinator", VERDICT_ALLOW, NULL},
    {"zorg-veiligheid", "gemeente/j.devries", VERDICT_ALLOW, NULL}, /* the second lead partner */
    {"zorg-veiligheid", "veiligheidshuis/coordinatie", VERDICT_DENY,
     "role system is not in its lead_roles"},
    {"zorg-veiligheid", "gemeente/meldingen", VERDICT_DENY, "role system is not in its lead_roles"},
    {"zorg-veiligheid", "riec/analist", VERDICT_DENY, "riec is not one of its lead partners"},
    {"overlast-straat", "gemeente/meldingen", VERDICT_ALLOW, NULL},
    {"overlast-straat", "gemeente/j.devries", VERDICT_ALLOW, NULL},
    {"overlast-straat", "riec/analist", VERDICT_DENY, "riec is not one of its lead partners"},
};
/* clang-format on */

static void test_may_open(void **state)
{
    const fixture_t *f = *state;
    policy_t *p = load_good(f);
    for (size_t i = 0; i < COUNT_OF(open_rows); i++) {
        const open_row_t *row = &open_rows[i];
        char reason[256] = "stale";
        verdict_t got = policy_case_may_open(p, type_of(p, row->type), principal_of(p, row->opener),
                                             reason, sizeof reason);
        if (got != row->verdict)
            fail_msg("%s opens %s: got %s (%s)", row->opener, row->type,
                     got == VERDICT_ALLOW ? "allow" : "deny", reason);
        if (row->verdict == VERDICT_ALLOW && reason[0] != '\0')
            fail_msg("%s opens %s: allowed with a reason \"%s\"", row->opener, row->type, reason);
        if (row->verdict == VERDICT_DENY && strstr(reason, row->reason) == NULL)
            fail_msg("%s opens %s:\n  got      %s\n  expected %s", row->opener, row->type, reason,
                     row->reason);
        /* without a reason buffer the verdict is the same */
        assert_int_equal(
            policy_case_may_open(p, type_of(p, row->type), principal_of(p, row->opener), NULL, 0),
            row->verdict);
    }
    policy_destroy(&p);
}

typedef struct act_row {
    const char *type, *actor, *lead;
    verdict_t verdict;
} act_row_t;

static const act_row_t act_rows[] = {
    {"zorg-veiligheid", "veiligheidshuis/procescoordinator", "gemeente", VERDICT_ALLOW},
    {"zorg-veiligheid", "veiligheidshuis/procescoordinator", "veiligheidshuis", VERDICT_ALLOW},
    /* not a lead partner of the type */
    {"zorg-veiligheid", "veiligheidshuis/procescoordinator", "politie", VERDICT_DENY},
    /* not listed in on_behalf */
    {"zorg-veiligheid", "veiligheidshuis/coordinatie", "gemeente", VERDICT_DENY},
    {"zorg-veiligheid", "gemeente/j.devries", "gemeente", VERDICT_DENY},
    {"zorg-veiligheid", "politie/analist", "gemeente", VERDICT_DENY},
    /* the case type has no on_behalf at all */
    {"ondermijning-adres", "veiligheidshuis/procescoordinator", "riec", VERDICT_DENY},
    {"ondermijning-adres", "riec/analist", "riec", VERDICT_DENY},
    {"overlast-straat", "veiligheidshuis/procescoordinator", "gemeente", VERDICT_DENY},
};

static void test_may_act_for(void **state)
{
    const fixture_t *f = *state;
    policy_t *p = load_good(f);
    for (size_t i = 0; i < COUNT_OF(act_rows); i++) {
        const act_row_t *row = &act_rows[i];
        verdict_t got = policy_case_may_act_for(
            p, type_of(p, row->type), principal_of(p, row->actor), partner_of(p, row->lead));
        if (got != row->verdict)
            fail_msg("%s acts for %s in %s: got %s", row->actor, row->lead, row->type,
                     got == VERDICT_ALLOW ? "allow" : "deny");
    }
    const policy_case_type_t *zorg = type_of(p, "zorg-veiligheid");
    const policy_principal_t *coordinator = principal_of(p, "veiligheidshuis/procescoordinator");
    assert_int_equal(policy_case_may_act_for(p, zorg, coordinator, NULL), VERDICT_DENY);
    assert_int_equal(policy_case_may_act_for(p, zorg, NULL, partner_of(p, "gemeente")),
                     VERDICT_DENY);
    assert_int_equal(policy_case_may_act_for(NULL, zorg, coordinator, partner_of(p, "gemeente")),
                     VERDICT_DENY);
    policy_destroy(&p);
}

typedef struct membership_row {
    const char *type, *partner, *lead;
    const char *rule; /* NULL: no membership */
} membership_row_t;

static const membership_row_t membership_rows[] = {
    {"ondermijning-adres", "riec", "riec", "ondermijning-adres.lead"},
    {"ondermijning-adres", "politie", "riec", "ondermijning-politie"},
    {"ondermijning-adres", "om", "riec", "ondermijning-politie"},
    {"ondermijning-adres", "gemeente", "riec", "ondermijning-gemeente"},
    {"ondermijning-adres", "woco-maasoever", "riec", "ondermijning-woco"},
    {"ondermijning-adres", "woco-jekerdal", "riec", "ondermijning-woco"},
    {"ondermijning-adres", "brandweer", "riec", NULL},
    {"ondermijning-adres", "veiligheidshuis", "riec", NULL},
    /* a lead that the type does not allow gets no lead rule */
    {"ondermijning-adres", "politie", "politie", NULL},
    {"ondermijning-adres", "riec", "politie", NULL},
    {"zorg-veiligheid", "veiligheidshuis", "veiligheidshuis", "zorg-veiligheid.lead"},
    {"zorg-veiligheid", "gemeente", "gemeente", "zorg-veiligheid.lead"},
    /* a lead partner that does not lead this case is a member by its own rule, or not at all */
    {"zorg-veiligheid", "gemeente", "veiligheidshuis", "zorg-gemeente"},
    {"zorg-veiligheid", "veiligheidshuis", "gemeente", NULL},
    {"zorg-veiligheid", "politie", "gemeente", "zorg-politie"},
    {"zorg-veiligheid", "riec", "gemeente", NULL},
    {"zorg-veiligheid", "brandweer", "veiligheidshuis", NULL},
    {"overlast-straat", "gemeente", "gemeente", "overlast-straat.lead"},
    {"overlast-straat", "politie", "gemeente", NULL},
};

static void test_membership(void **state)
{
    const fixture_t *f = *state;
    policy_t *p = load_good(f);
    for (size_t i = 0; i < COUNT_OF(membership_rows); i++) {
        const membership_row_t *row = &membership_rows[i];
        const policy_case_member_rule_t *got = policy_case_membership(
            p, type_of(p, row->type), partner_of(p, row->partner), partner_of(p, row->lead));
        const char *got_id = got ? got->id : "(none)", *want = row->rule ? row->rule : "(none)";
        if (strcmp(got_id, want) != 0)
            fail_msg("%s in %s led by %s: got %s, expected %s", row->partner, row->type, row->lead,
                     got_id, want);
        if (got != NULL)
            assert_ptr_equal(got, member_rule_of(p, row->rule));
    }
    const policy_case_type_t *t = type_of(p, "ondermijning-adres");
    assert_null(policy_case_membership(p, t, NULL, partner_of(p, "riec")));
    assert_null(policy_case_membership(p, t, partner_of(p, "politie"), NULL));
    assert_null(policy_case_membership(NULL, t, partner_of(p, "politie"), partner_of(p, "riec")));
    policy_destroy(&p);
}

typedef struct reach_row {
    const char *rule, *principal;
    int reaches;
} reach_row_t;

static const reach_row_t reach_rows[] = {
    {"ondermijning-politie", "politie/bvh-koppeling", 1},
    {"ondermijning-politie", "politie/analist", 1},
    {"ondermijning-politie", "om/parket", 1},
    {"ondermijning-politie", "politie/beheer", 0}, /* operators never */
    {"ondermijning-politie", "riec/analist", 0},   /* partner not in the rule */
    {"ondermijning-gemeente", "gemeente/j.devries", 1},
    {"ondermijning-gemeente", "gemeente/meldingen", 0}, /* role not in roles */
    {"ondermijning-woco", "woco-maasoever/meldingen", 1},
    {"ondermijning-woco", "brandweer/meldkamer", 0},
    {"ondermijning-adres.lead", "riec/analist", 1},
    {"ondermijning-adres.lead", "riec/koppeling", 1},
    {"ondermijning-adres.lead", "politie/analist", 0},
    {"zorg-veiligheid.lead", "veiligheidshuis/procescoordinator", 1},
    {"zorg-veiligheid.lead", "veiligheidshuis/coordinatie", 0}, /* lead_roles: caseworker */
    {"zorg-veiligheid.lead", "gemeente/j.devries", 1},
    {"zorg-politie", "politie/analist", 1},
    {"zorg-politie", "politie/bvh-koppeling", 0},
    {"zorg-gemeente", "gemeente/meldingen", 1},
};

static void test_member_reaches(void **state)
{
    const fixture_t *f = *state;
    policy_t *p = load_good(f);
    for (size_t i = 0; i < COUNT_OF(reach_rows); i++) {
        const reach_row_t *row = &reach_rows[i];
        int got = policy_case_member_reaches(p, member_rule_of(p, row->rule),
                                             principal_of(p, row->principal));
        if (got != row->reaches)
            fail_msg("%s under %s: got %d, expected %d", row->principal, row->rule, got,
                     row->reaches);
    }
    assert_int_equal(policy_case_member_reaches(p, member_rule_of(p, "zorg-politie"), NULL), 0);
    policy_destroy(&p);
}

typedef struct sees_row {
    const char *rule, *name;
    int sees;
} sees_row_t;

static const sees_row_t sees_rows[] = {
    {"ondermijning-politie", "text", 1},
    {"ondermijning-politie", "subject", 1},
    {"ondermijning-politie", "address", 1},
    {"ondermijning-politie", "attachments", 1},
    {"ondermijning-politie", "financieel", 1},
    {"ondermijning-politie", "strafrechtelijk", 0},
    {"ondermijning-gemeente", "text", 1},
    {"ondermijning-gemeente", "address", 1},
    {"ondermijning-gemeente", "subject", 0},
    {"ondermijning-gemeente", "financieel", 0},
    {"ondermijning-gemeente", "attachments", 0},
    {"ondermijning-woco", "address", 1},
    {"ondermijning-woco", "subject", 0},
    {"ondermijning-adres.lead", "subject", 1},
    {"ondermijning-adres.lead", "financieel", 1},
    {"ondermijning-adres.lead", "strafrechtelijk", 1},
    {"ondermijning-adres.lead", "Not a token", 0},
    {"ondermijning-adres.lead", "", 0},
    {"zorg-gemeente", "zorgplan", 1}, /* fields ["*"] */
    {"zorg-politie", "text", 1},
    {"zorg-politie", "address", 0},
    {"overlast-straat.lead", "attachments", 1},
};

static void test_member_sees(void **state)
{
    const fixture_t *f = *state;
    policy_t *p = load_good(f);
    for (size_t i = 0; i < COUNT_OF(sees_rows); i++) {
        const sees_row_t *row = &sees_rows[i];
        int got = policy_case_member_sees(member_rule_of(p, row->rule), row->name);
        if (got != row->sees)
            fail_msg("%s sees \"%s\": got %d, expected %d", row->rule, row->name, got, row->sees);
    }
    assert_int_equal(policy_case_member_sees(member_rule_of(p, "zorg-politie"), NULL), 0);

    static const struct {
        const char *rule;
        uint32_t fields;
    } signal_rows[] = {
        {"ondermijning-politie",
         FIELD_AREA | FIELD_ADDRESS | FIELD_SUBJECT | FIELD_GROUNDS | FIELD_SUMMARY},
        {"ondermijning-gemeente", FIELD_AREA | FIELD_ADDRESS},
        {"ondermijning-woco", 0},
        {"ondermijning-adres.lead", ALL_SIGNAL_FIELDS},
        {"zorg-gemeente", ALL_SIGNAL_FIELDS},
        {"zorg-politie", 0},
    };
    for (size_t i = 0; i < COUNT_OF(signal_rows); i++) {
        uint32_t got = policy_case_member_signal_fields(member_rule_of(p, signal_rows[i].rule));
        if (got != signal_rows[i].fields)
            fail_msg("%s signal fields: got %#x, expected %#x", signal_rows[i].rule, got,
                     signal_rows[i].fields);
    }
    policy_destroy(&p);
}

/* Pointers that are not the policy's own (a copy, or from another load of
 * the same file, as after a reload) are refused. */
static void test_foreign_pointers(void **state)
{
    const fixture_t *f = *state;
    policy_t *p = load_good(f), *other = load_good(f);
    const policy_case_type_t *t = type_of(p, "ondermijning-adres");
    const policy_principal_t *riec = principal_of(p, "riec/analist");
    const policy_partner_t *politie = partner_of(p, "politie"), *lead = partner_of(p, "riec");
    policy_case_type_t copy = *t;
    assert_int_equal(policy_case_may_open(p, &copy, riec, NULL, 0), VERDICT_DENY);
    assert_int_equal(policy_case_may_open(p, t, riec, NULL, 0), VERDICT_ALLOW);
    assert_int_equal(policy_case_may_open(other, t, riec, NULL, 0), VERDICT_DENY);
    assert_int_equal(policy_case_may_open(p, type_of(other, "ondermijning-adres"),
                                          principal_of(other, "riec/analist"), NULL, 0),
                     VERDICT_DENY);
    assert_null(policy_case_membership(other, t, politie, lead));
    assert_null(policy_case_membership(p, t, partner_of(other, "politie"), lead));
    const policy_case_member_rule_t *rule = member_rule_of(p, "ondermijning-politie");
    const policy_principal_t *analist = principal_of(p, "politie/analist");
    assert_int_equal(policy_case_member_reaches(p, rule, analist), 1);
    assert_int_equal(policy_case_member_reaches(other, rule, analist), 0);
    policy_case_member_rule_t rule_copy = *rule;
    assert_int_equal(policy_case_member_reaches(p, &rule_copy, analist), 0);
    /* the same file gives the same hashes */
    assert_string_equal(type_of(other, "ondermijning-adres")->hash_hex, t->hash_hex);
    assert_string_equal(member_rule_of(other, "ondermijning-politie")->hash_hex, rule->hash_hex);
    policy_destroy(&other);
    policy_destroy(&p);
}

/* ------------------------------------------------------------------ hashes */

static const char hash_head[] = "version: 1\n"
                                "partners: [{id: gemeente}, {id: politie}, {id: om}, {id: riec}]\n"
                                "principals:\n"
                                "  - id: riec/analist\n"
                                "    role: caseworker\n"
                                "    key_file: keys/riec-analist.pub\n"
                                "  - id: riec/koppeling\n"
                                "    role: system\n"
                                "    key_file: keys/riec-koppeling.pub\n"
                                "rules: []\n"
                                "case_types:\n";

static const char hash_base[] = "  - id: t1\n"
                                "    purpose: \"Aanpak\"\n"
                                "    legal_basis: \"Convenant\"\n"
                                "    lead: [riec]\n"
                                "    members:\n"
                                "      - id: m1\n"
                                "        partners: [politie, om]\n"
                                "        purpose: \"Opsporing\"\n"
                                "        legal_basis: \"Wpg\"\n"
                                "        fields: [text, address]\n"
                                "        signal_fields: [area]\n"
                                "    retention_after_close: 2y\n";

typedef struct hash_row {
    const char *name;
    const char *text; /* replaces hash_base */
    int type_same, member_same, lead_same;
} hash_row_t;

/* clang-format off */
static const hash_row_t hash_rows[] = {
    /* the same content, written differently */
    {"flow style",
     "  - {id: t1, purpose: Aanpak, legal_basis: Convenant, lead: [riec], members: [\n"
     "      {id: m1, partners: [politie, om], purpose: Opsporing, legal_basis: Wpg,\n"
     "       fields: [text, address], signal_fields: [area]}], retention_after_close: 2y}\n",
     1, 1, 1},
    {"key order, comments, quoting",
     "  - retention_after_close: \"2y\"   # two years\n"
     "    members:\n"
     "      - signal_fields: [\"area\"]\n"
     "        fields: [\"text\", address]\n"
     "        legal_basis: 'Wpg'\n"
     "        purpose: Opsporing\n"
     "        partners: [politie, om]\n"
     "        id: m1\n"
     "    lead: [\"riec\"]\n"
     "    legal_basis: Convenant\n"
     "    purpose: Aanpak\n"
     "    id: t1\n",
     1, 1, 1},
    {"defaults written out",
     "  - id: t1\n    purpose: \"Aanpak\"\n    legal_basis: \"Convenant\"\n    lead: [riec]\n"
     "    lead_roles: [system, caseworker]\n    on_behalf: []\n    members:\n"
     "      - id: m1\n        partners: [politie, om]\n        roles: [system, caseworker]\n"
     "        purpose: \"Opsporing\"\n        legal_basis: \"Wpg\"\n"
     "        fields: [text, address]\n        signal_fields: [area]\n"
     "    retention_after_close: 730d\n    reopen: false\n",
     1, 1, 1},
    /* changes of the case type */
    {"type id",
     "  - id: t2\n    purpose: \"Aanpak\"\n    legal_basis: \"Convenant\"\n    lead: [riec]\n"
     "    members:\n      - id: m1\n        partners: [politie, om]\n"
     "        purpose: \"Opsporing\"\n        legal_basis: \"Wpg\"\n"
     "        fields: [text, address]\n        signal_fields: [area]\n"
     "    retention_after_close: 2y\n",
     0, 0, 0},
    {"type purpose",
     "  - id: t1\n    purpose: \"Aanpak!\"\n    legal_basis: \"Convenant\"\n    lead: [riec]\n"
     "    members:\n      - id: m1\n        partners: [politie, om]\n"
     "        purpose: \"Opsporing\"\n        legal_basis: \"Wpg\"\n"
     "        fields: [text, address]\n        signal_fields: [area]\n"
     "    retention_after_close: 2y\n",
     0, 1, 0},
    {"type legal_basis",
     "  - id: t1\n    purpose: \"Aanpak\"\n    legal_basis: \"Convenant 2\"\n    lead: [riec]\n"
     "    members:\n      - id: m1\n        partners: [politie, om]\n"
     "        purpose: \"Opsporing\"\n        legal_basis: \"Wpg\"\n"
     "        fields: [text, address]\n        signal_fields: [area]\n"
     "    retention_after_close: 2y\n",
     0, 1, 0},
    {"lead",
     "  - id: t1\n    purpose: \"Aanpak\"\n    legal_basis: \"Convenant\"\n    lead: [riec, gemeente]\n"
     "    members:\n      - id: m1\n        partners: [politie, om]\n"
     "        purpose: \"Opsporing\"\n        legal_basis: \"Wpg\"\n"
     "        fields: [text, address]\n        signal_fields: [area]\n"
     "    retention_after_close: 2y\n",
     0, 1, 0},
    {"lead_roles",
     "  - id: t1\n    purpose: \"Aanpak\"\n    legal_basis: \"Convenant\"\n    lead: [riec]\n"
     "    lead_roles: [caseworker]\n"
     "    members:\n      - id: m1\n        partners: [politie, om]\n"
     "        purpose: \"Opsporing\"\n        legal_basis: \"Wpg\"\n"
     "        fields: [text, address]\n        signal_fields: [area]\n"
     "    retention_after_close: 2y\n",
     0, 1, 0},
    {"on_behalf",
     "  - id: t1\n    purpose: \"Aanpak\"\n    legal_basis: \"Convenant\"\n    lead: [riec]\n"
     "    on_behalf: [riec/koppeling]\n"
     "    members:\n      - id: m1\n        partners: [politie, om]\n"
     "        purpose: \"Opsporing\"\n        legal_basis: \"Wpg\"\n"
     "        fields: [text, address]\n        signal_fields: [area]\n"
     "    retention_after_close: 2y\n",
     0, 1, 1},
    {"retention_after_close",
     "  - id: t1\n    purpose: \"Aanpak\"\n    legal_basis: \"Convenant\"\n    lead: [riec]\n"
     "    members:\n      - id: m1\n        partners: [politie, om]\n"
     "        purpose: \"Opsporing\"\n        legal_basis: \"Wpg\"\n"
     "        fields: [text, address]\n        signal_fields: [area]\n"
     "    retention_after_close: 729d\n",
     0, 0, 0},
    {"reopen",
     "  - id: t1\n    purpose: \"Aanpak\"\n    legal_basis: \"Convenant\"\n    lead: [riec]\n"
     "    members:\n      - id: m1\n        partners: [politie, om]\n"
     "        purpose: \"Opsporing\"\n        legal_basis: \"Wpg\"\n"
     "        fields: [text, address]\n        signal_fields: [area]\n"
     "    retention_after_close: 2y\n    reopen: true\n",
     0, 1, 1},
    /* changes of the membership rule */
    {"member id",
     "  - id: t1\n    purpose: \"Aanpak\"\n    legal_basis: \"Convenant\"\n    lead: [riec]\n"
     "    members:\n      - id: m2\n        partners: [politie, om]\n"
     "        purpose: \"Opsporing\"\n        legal_basis: \"Wpg\"\n"
     "        fields: [text, address]\n        signal_fields: [area]\n"
     "    retention_after_close: 2y\n",
     0, 0, 1},
    {"member partners",
     "  - id: t1\n    purpose: \"Aanpak\"\n    legal_basis: \"Convenant\"\n    lead: [riec]\n"
     "    members:\n      - id: m1\n        partners: [politie]\n"
     "        purpose: \"Opsporing\"\n        legal_basis: \"Wpg\"\n"
     "        fields: [text, address]\n        signal_fields: [area]\n"
     "    retention_after_close: 2y\n",
     0, 0, 1},
    {"member partners order",
     "  - id: t1\n    purpose: \"Aanpak\"\n    legal_basis: \"Convenant\"\n    lead: [riec]\n"
     "    members:\n      - id: m1\n        partners: [om, politie]\n"
     "        purpose: \"Opsporing\"\n        legal_basis: \"Wpg\"\n"
     "        fields: [text, address]\n        signal_fields: [area]\n"
     "    retention_after_close: 2y\n",
     0, 0, 1},
    {"member roles",
     "  - id: t1\n    purpose: \"Aanpak\"\n    legal_basis: \"Convenant\"\n    lead: [riec]\n"
     "    members:\n      - id: m1\n        partners: [politie, om]\n        roles: [system]\n"
     "        purpose: \"Opsporing\"\n        legal_basis: \"Wpg\"\n"
     "        fields: [text, address]\n        signal_fields: [area]\n"
     "    retention_after_close: 2y\n",
     0, 0, 1},
    {"member purpose",
     "  - id: t1\n    purpose: \"Aanpak\"\n    legal_basis: \"Convenant\"\n    lead: [riec]\n"
     "    members:\n      - id: m1\n        partners: [politie, om]\n"
     "        purpose: \"Opsporing.\"\n        legal_basis: \"Wpg\"\n"
     "        fields: [text, address]\n        signal_fields: [area]\n"
     "    retention_after_close: 2y\n",
     0, 0, 1},
    {"member legal_basis",
     "  - id: t1\n    purpose: \"Aanpak\"\n    legal_basis: \"Convenant\"\n    lead: [riec]\n"
     "    members:\n      - id: m1\n        partners: [politie, om]\n"
     "        purpose: \"Opsporing\"\n        legal_basis: \"Wpg art. 16\"\n"
     "        fields: [text, address]\n        signal_fields: [area]\n"
     "    retention_after_close: 2y\n",
     0, 0, 1},
    {"member fields",
     "  - id: t1\n    purpose: \"Aanpak\"\n    legal_basis: \"Convenant\"\n    lead: [riec]\n"
     "    members:\n      - id: m1\n        partners: [politie, om]\n"
     "        purpose: \"Opsporing\"\n        legal_basis: \"Wpg\"\n"
     "        fields: [text, address, subject]\n        signal_fields: [area]\n"
     "    retention_after_close: 2y\n",
     0, 0, 1},
    {"member fields all",
     "  - id: t1\n    purpose: \"Aanpak\"\n    legal_basis: \"Convenant\"\n    lead: [riec]\n"
     "    members:\n      - id: m1\n        partners: [politie, om]\n"
     "        purpose: \"Opsporing\"\n        legal_basis: \"Wpg\"\n"
     "        fields: [\"*\"]\n        signal_fields: [area]\n"
     "    retention_after_close: 2y\n",
     0, 0, 1},
    {"member signal_fields",
     "  - id: t1\n    purpose: \"Aanpak\"\n    legal_basis: \"Convenant\"\n    lead: [riec]\n"
     "    members:\n      - id: m1\n        partners: [politie, om]\n"
     "        purpose: \"Opsporing\"\n        legal_basis: \"Wpg\"\n"
     "        fields: [text, address]\n"
     "    retention_after_close: 2y\n",
     0, 0, 1},
    /* the same bytes moved from one field to the next */
    {"text moved between member purpose and legal_basis",
     "  - id: t1\n    purpose: \"Aanpak\"\n    legal_basis: \"Convenant\"\n    lead: [riec]\n"
     "    members:\n      - id: m1\n        partners: [politie, om]\n"
     "        purpose: \"OpsporingW\"\n        legal_basis: \"pg\"\n"
     "        fields: [text, address]\n        signal_fields: [area]\n"
     "    retention_after_close: 2y\n",
     0, 0, 1},
};
/* clang-format on */

typedef struct hashes {
    char type[65], member[65], lead[65];
} hashes_t;

static void hashes_of(const fixture_t *f, const char *case_type, hashes_t *out)
{
    char text[4096], err[512] = "";
    snprintf(text, sizeof text, "%s%s", hash_head, case_type);
    policy_t *p = load_text(f, "hash.yaml", text, err, sizeof err);
    if (p == NULL)
        fail_msg("hash policy: %s", err);
    assert_int_equal(policy_case_type_count(p), 1);
    const policy_case_type_t *t = policy_case_type_at(p, 0);
    const policy_case_member_rule_t *lead = policy_case_membership(
        p, t, policy_partner_by_id(p, "riec"), policy_partner_by_id(p, "riec"));
    const policy_case_member_rule_t *member = policy_case_membership(
        p, t, policy_partner_by_id(p, "politie"), policy_partner_by_id(p, "riec"));
    assert_non_null(lead);
    assert_non_null(member);
    memcpy(out->type, t->hash_hex, 65);
    memcpy(out->member, member->hash_hex, 65);
    memcpy(out->lead, lead->hash_hex, 65);
    policy_destroy(&p);
}

/* The canonical forms of docs/POLICY.md "Case type hashes", written out
 * for hash_base. */
static void canon_u32(crypto_generichash_state *st, uint32_t v)
{
    uint8_t be[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    crypto_generichash_update(st, be, sizeof be);
}

static void canon_field(crypto_generichash_state *st, const char *name, const char *const *values,
                        uint32_t n)
{
    canon_u32(st, (uint32_t)strlen(name));
    crypto_generichash_update(st, (const uint8_t *)name, strlen(name));
    canon_u32(st, n);
    for (uint32_t i = 0; i < n; i++) {
        canon_u32(st, (uint32_t)strlen(values[i]));
        crypto_generichash_update(st, (const uint8_t *)values[i], strlen(values[i]));
    }
}

static void canon_one(crypto_generichash_state *st, const char *name, const char *value)
{
    const char *values[1] = {value};
    canon_field(st, name, values, 1);
}

static void canon_final(crypto_generichash_state *st, char hex[65])
{
    uint8_t digest[32];
    crypto_generichash_final(st, digest, sizeof digest);
    syntax_hex(digest, sizeof digest, hex);
}

static void canonical_base_hashes(hashes_t *out)
{
    static const char *const roles[] = {"system", "caseworker"}, *const any[] = {"*"},
                             *const partners[] = {"politie", "om"}, *const lead[] = {"riec"},
                             *const fields[] = {"text", "address"}, *const signal[] = {"area"};
    const char *seconds = "63072000"; /* 2y */
    crypto_generichash_state st;

    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, (const uint8_t *)"schakel-case-member-v1", 22);
    canon_one(&st, "case_type", "t1");
    canon_one(&st, "id", "m1");
    canon_field(&st, "partners", partners, 2);
    canon_field(&st, "roles", roles, 2);
    canon_one(&st, "purpose", "Opsporing");
    canon_one(&st, "legal_basis", "Wpg");
    canon_field(&st, "fields", fields, 2);
    canon_field(&st, "signal_fields", signal, 1);
    canon_one(&st, "retention_after_close", seconds);
    canon_final(&st, out->member);

    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, (const uint8_t *)"schakel-case-member-v1", 22);
    canon_one(&st, "case_type", "t1");
    canon_one(&st, "id", "t1.lead");
    canon_field(&st, "partners", lead, 1);
    canon_field(&st, "roles", roles, 2);
    canon_one(&st, "purpose", "Aanpak");
    canon_one(&st, "legal_basis", "Convenant");
    canon_field(&st, "fields", any, 1);
    canon_field(&st, "signal_fields", any, 1);
    canon_one(&st, "retention_after_close", seconds);
    canon_final(&st, out->lead);

    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, (const uint8_t *)"schakel-case-type-v1", 20);
    canon_one(&st, "id", "t1");
    canon_one(&st, "purpose", "Aanpak");
    canon_one(&st, "legal_basis", "Convenant");
    canon_field(&st, "lead", lead, 1);
    canon_field(&st, "lead_roles", roles, 2);
    canon_field(&st, "on_behalf", NULL, 0);
    canon_one(&st, "retention_after_close", seconds);
    canon_one(&st, "reopen", "false");
    const char *members[1] = {out->member};
    canon_field(&st, "members", members, 1);
    canon_final(&st, out->type);
}

static void check_same(const char *row, const char *what, const char *got, const char *base,
                       int same)
{
    if ((strcmp(got, base) == 0) != same)
        fail_msg("%s: %s hash %s the base", row, what, same ? "differs from" : "equals");
}

static void test_case_hashes(void **state)
{
    const fixture_t *f = *state;
    hashes_t base, again, documented;
    hashes_of(f, hash_base, &base);
    hashes_of(f, hash_base, &again);
    assert_memory_equal(&base, &again, sizeof base);
    canonical_base_hashes(&documented);
    assert_string_equal(base.member, documented.member);
    assert_string_equal(base.lead, documented.lead);
    assert_string_equal(base.type, documented.type);

    hashes_t seen[COUNT_OF(hash_rows)];
    for (size_t i = 0; i < COUNT_OF(hash_rows); i++) {
        const hash_row_t *row = &hash_rows[i];
        hashes_of(f, row->text, &seen[i]);
        check_same(row->name, "case type", seen[i].type, base.type, row->type_same);
        check_same(row->name, "membership rule", seen[i].member, base.member, row->member_same);
        check_same(row->name, "lead rule", seen[i].lead, base.lead, row->lead_same);
        /* every change of the type gives a hash no other change gave */
        for (size_t j = 0; j < i && !row->type_same; j++)
            if (!hash_rows[j].type_same && strcmp(seen[i].type, seen[j].type) == 0)
                fail_msg("%s and %s: same case type hash", row->name, hash_rows[j].name);
    }

    /* Another case type in the file changes nothing of this one. */
    char text[4096], err[512] = "";
    snprintf(text, sizeof text, "%s%s%s", hash_head, hash_base,
             "  - {id: t9, purpose: p, legal_basis: l, lead: [gemeente], members: [],\n"
             "     retention_after_close: 1d}\n");
    policy_t *p = load_text(f, "hash2.yaml", text, err, sizeof err);
    if (p == NULL)
        fail_msg("%s", err);
    assert_string_equal(policy_case_type_at(p, 0)->hash_hex, base.type);
    assert_string_equal(member_rule_of(p, "m1")->hash_hex, base.member);
    assert_string_equal(member_rule_of(p, "t1.lead")->hash_hex, base.lead);
    assert_string_not_equal(policy_case_type_at(p, 1)->hash_hex, base.type);
    policy_destroy(&p);
}

/* ------------------------------------------------------------------ memory and limits */

static void test_load_buffer_case_types(void **state)
{
    (void)state;
    char err[512] = "";
    const char *text = "version: 1\npartners: [{id: a}, {id: b}]\nprincipals: []\nrules: []\n"
                       "case_types:\n"
                       "  - {id: t, purpose: p, legal_basis: l, lead: [a], members: [\n"
                       "      {id: t-b, partners: [b], purpose: p, legal_basis: l, fields: []}],\n"
                       "     retention_after_close: 30s}\n";
    policy_t *p =
        policy_load_buffer("mem", (const uint8_t *)text, strlen(text), NULL, err, sizeof err);
    if (p == NULL)
        fail_msg("%s", err);
    const policy_case_type_t *t = type_of(p, "t");
    assert_int_equal(t->retention_after_close_s, 30);
    assert_int_equal(t->line, 6);
    const policy_case_member_rule_t *r = member_rule_of(p, "t-b");
    assert_int_equal(r->line, 7);
    assert_int_equal(policy_case_member_sees(r, "text"), 0); /* fields: [] sees nothing */
    assert_int_equal(policy_case_member_signal_fields(r), 0);
    policy_destroy(&p);
}

/* SCHAKEL_MAX_CASE_TYPES case types load and are each found by id (the
 * index is sorted, the file is not); one more is refused. */
static void test_many_case_types(void **state)
{
    (void)state;
    size_t cap = 256 * 1024;
    char *text = malloc(cap), err[512] = "";
    assert_non_null(text);
    for (unsigned extra = 0; extra < 2; extra++) {
        unsigned n = SCHAKEL_MAX_CASE_TYPES + extra;
        size_t used = (size_t)snprintf(text, cap,
                                       "version: 1\npartners: [{id: a}, {id: b}]\n"
                                       "principals: []\nrules: []\ncase_types:\n");
        for (unsigned i = 0; i < n; i++)
            used += (size_t)snprintf(
                text + used, cap - used,
                "  - {id: t%u, purpose: p, legal_basis: l, lead: [a], members: [{id: m%u, "
                "partners: [b], purpose: p, legal_basis: l, fields: [f%u]}], "
                "retention_after_close: %ud}\n",
                (i * 7919u) % n, i, i, 1 + i % 365);
        assert_true(used < cap);
        policy_t *p = policy_load_buffer("mem", (const uint8_t *)text, used, NULL, err, sizeof err);
        if (extra) {
            assert_null(p);
            assert_non_null(strstr(err, "more than 1000 entries"));
            continue;
        }
        if (p == NULL)
            fail_msg("%s", err);
        assert_int_equal(policy_case_type_count(p), n);
        for (unsigned i = 0; i < n; i++) {
            char id[32], field[32];
            snprintf(id, sizeof id, "t%u", (i * 7919u) % n);
            assert_ptr_equal(policy_case_type_by_id(p, id), policy_case_type_at(p, i));
            snprintf(id, sizeof id, "m%u", i);
            const policy_case_member_rule_t *r = member_rule_of(p, id);
            assert_ptr_equal(r->case_type, policy_case_type_at(p, i));
            snprintf(field, sizeof field, "f%u", i);
            assert_int_equal(policy_case_member_sees(r, field), 1);
            snprintf(field, sizeof field, "f%u", i + 1);
            assert_int_equal(policy_case_member_sees(r, field), 0);
        }
        assert_null(policy_case_type_by_id(p, "t1000"));
        policy_destroy(&p);
    }
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_case_types, fixture_setup, fixture_teardown),
        cmocka_unit_test(test_bad_files_all_listed),
        cmocka_unit_test_setup_teardown(test_good_case_types, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_policy_without_case_types, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_may_open, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_may_act_for, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_membership, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_member_reaches, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_member_sees, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_foreign_pointers, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_case_hashes, fixture_setup, fixture_teardown),
        cmocka_unit_test(test_load_buffer_case_types),
        cmocka_unit_test(test_many_case_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
