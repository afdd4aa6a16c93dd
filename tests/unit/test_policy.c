/*
 * test_policy.c — the policy loader and decisions (broker/policy.c).
 *
 * Broken policies from tests/data/policy/bad-*.yaml must fail with the
 * right FILE:LINE; a good policy must load; decisions are checked against
 * a table of rows that must allow or deny; rule hashes must be stable and
 * change with any content; a 10,000-rule policy must decide exactly as a
 * naive scan of its rules does. Keys are generated at run time into a
 * mkdtemp() folder, which is removed afterwards. Run from the repo root.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

static const char *const key_names[] = {
    "gemeente-meldingen",  "gemeente-jdevries", "politie-bvh",
    "politie-analist",     "politie-beheer",    "woco-meldingen",
    "brandweer-meldkamer", "riec-analist",      NULL};

typedef struct fixture {
    char dir[64];
} fixture_t;

/* ------------------------------------------------------------------ helpers */

static void remove_tree(const char *path)
{
    struct stat st;
    /* a symbolic link is removed, never followed (some point at "." or a
     * loop) */
    DIR *d = lstat(path, &st) == 0 && S_ISDIR(st.st_mode) ? opendir(path) : NULL;
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char child[PATH_MAX];
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
    snprintf(f->dir, sizeof f->dir, "/tmp/schakel-test-policy-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char path[256], err[256];
    snprintf(path, sizeof path, "%s/keys", f->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    for (size_t i = 0; key_names[i]; i++) {
        snprintf(path, sizeof path, "%s/keys/%s", f->dir, key_names[i]);
        int rc = keys_generate(path, err, sizeof err);
        if (rc != 0)
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
    if (len)
        *len = n;
    return buf;
}

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(text, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
    /* whatever the umask: a policy others may write is refused */
    assert_int_equal(chmod(path, 0644), 0);
}

/* Copy tests/data/policy/NAME into the fixture folder (next to keys/) and
 * load it from there. */
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
    policy_t *p = load_data_file(f, "good.yaml", err, sizeof err);
    if (p == NULL)
        fail_msg("good.yaml: %s", err);
    return p;
}

/* ------------------------------------------------------------------ broken files */

typedef struct bad_row {
    const char *file;
    const char *where; /* "bad-x.yaml:17:" */
    const char *what;  /* a substring of the message */
} bad_row_t;

static const bad_row_t bad_rows[] = {
    {"bad-version.yaml", "bad-version.yaml:2:", "unsupported policy version \"2\""},
    {"bad-unknown-key.yaml", "bad-unknown-key.yaml:22:", "unknown key \"purpsoe\""},
    {"bad-unknown-top-key.yaml", "bad-unknown-top-key.yaml:25:", "unknown key \"defaults\""},
    {"bad-unknown-partner.yaml",
     "bad-unknown-partner.yaml:20:", "to names unknown partner \"poltie\""},
    {"bad-duplicate-rule.yaml",
     "bad-duplicate-rule.yaml:25:", "duplicate rule id \"r1\" (first at line 16)"},
    {"bad-duplicate-partner.yaml",
     "bad-duplicate-partner.yaml:8:", "duplicate partner id \"gemeente\" (first at line 4)"},
    {"bad-duplicate-principal.yaml", "bad-duplicate-principal.yaml:15:",
     "duplicate principal id \"gemeente/meldingen\" (first at line 9)"},
    {"bad-same-key.yaml", "bad-same-key.yaml:15:", "same key as the one at line 9"},
    {"bad-principal-partner.yaml",
     "bad-principal-partner.yaml:15:", "belongs to unknown partner \"ggd\""},
    {"bad-principal-id.yaml", "bad-principal-id.yaml:12:", "is not \"partner/name\""},
    {"bad-partner-id.yaml", "bad-partner-id.yaml:6:", "partner id \"Politie\" is not an id token"},
    {"bad-role.yaml", "bad-role.yaml:13:", "unknown role \"admin\""},
    {"bad-key-z85.yaml", "bad-key-z85.yaml:14:", "not a Z85 Ed25519 public key"},
    {"bad-key-both.yaml", "bad-key-both.yaml:12:", "exactly one of key and key_file"},
    {"bad-key-none.yaml", "bad-key-none.yaml:12:", "exactly one of key and key_file"},
    {"bad-key-file-missing.yaml", "bad-key-file-missing.yaml:14:", "does-not-exist.pub"},
    {"bad-theme.yaml", "bad-theme.yaml:19:", "\"fietsdiefstal\" in themes is not a theme"},
    {"bad-star-mixed.yaml", "bad-star-mixed.yaml:19:", "\"*\" in themes must stand alone"},
    {"bad-area.yaml", "bad-area.yaml:22:", "\"GM935\" in areas is not a CBS area code"},
    {"bad-kind.yaml", "bad-kind.yaml:19:", "\"Hennep\" in kinds is not a kind token"},
    {"bad-field.yaml", "bad-field.yaml:23:", "unknown field \"bsn\""},
    {"bad-field-twice.yaml", "bad-field-twice.yaml:23:", "field \"area\" appears twice"},
    {"bad-purpose-empty.yaml", "bad-purpose-empty.yaml:21:", "purpose must not be empty"},
    {"bad-legal-basis-missing.yaml",
     "bad-legal-basis-missing.yaml:16:", "missing key \"legal_basis\""},
    {"bad-retention-unit.yaml", "bad-retention-unit.yaml:24:", "retention \"6w\" is not"},
    {"bad-retention-cap.yaml", "bad-retention-cap.yaml:24:", "exceeds the cap of 30 years"},
    {"bad-retention-zero.yaml", "bad-retention-zero.yaml:24:", "retention \"0d\" is not"},
    {"bad-retention-missing.yaml", "bad-retention-missing.yaml:16:", "missing key \"retention\""},
    {"bad-operator-in-rule.yaml",
     "bad-operator-in-rule.yaml:19:", "operators never send or receive"},
    {"bad-duplicate-from.yaml",
     "bad-duplicate-from.yaml:17:", "partner \"gemeente\" appears twice in from"},
    {"bad-duplicate-area.yaml",
     "bad-duplicate-area.yaml:23:", "\"GM0935\" appears twice in areas (first at line 21)"},
    {"bad-duplicate-key.yaml",
     "bad-duplicate-key.yaml:24:", "duplicate key \"to\" (first at line 18)"},
    {"bad-wrong-type.yaml",
     "bad-wrong-type.yaml:17:", "from: expected a list, found a single value"},
    {"bad-bool.yaml",
     "bad-bool.yaml:25:", "require_case_ref must be true or false, not \"sometimes\""},
    {"bad-alias.yaml", "bad-alias.yaml:20:", "anchors (&name) are not allowed"},
    {"bad-syntax.yaml", "bad-syntax.yaml:20:", "flow sequence (started at line 19)"},
    {"bad-tab.yaml", "bad-tab.yaml:20:", "YAML syntax"},
    {"bad-two-documents.yaml", "bad-two-documents.yaml:25:", "only one YAML document"},
    {"bad-control-char.yaml", "bad-control-char.yaml:21:", "control character 0x1b"},
    {"bad-missing-partners.yaml", "bad-missing-partners.yaml:2:", "missing key \"partners\""},
    {"bad-not-mapping.yaml", "bad-not-mapping.yaml:2:", "a policy is a mapping"},
    {"bad-empty.yaml", "bad-empty.yaml:1:", "the policy is empty"},
    {"bad-rule-id.yaml", "bad-rule-id.yaml:16:", "rule id \"Regel 1\" is not an id token"},
    {"bad-to-roles-unknown.yaml", "bad-to-roles-unknown.yaml:19:",
     "rule \"r1\": to_roles: \"beheerder\" is not a role (system or caseworker)"},
    {"bad-to-roles-twice.yaml",
     "bad-to-roles-twice.yaml:19:", "rule \"r1\": to_roles: \"caseworker\" appears twice"},
    {"bad-empty-list.yaml", "bad-empty-list.yaml:19:", "themes: must not be an empty list"},
    {"bad-empty-string.yaml", "bad-empty-string.yaml:21:", "purpose: must not be empty"},
    {"bad-version-word.yaml", "bad-version-word.yaml:2:", "unsupported policy version \"one\""},
    {"bad-version-1-5.yaml",
     "bad-version-1-5.yaml:2:", "unsupported policy version \"1.5\" (this broker reads version 1)"},
    {"bad-version-1e0.yaml", "bad-version-1e0.yaml:2:", "unsupported policy version \"1e0\""},
    {"bad-version-1_0.yaml", "bad-version-1_0.yaml:2:", "unsupported policy version \"1_0\""},
    {"bad-version-0-9.yaml", "bad-version-0-9.yaml:2:", "unsupported policy version \"0.9\""},
    {"bad-version-01.yaml", "bad-version-01.yaml:2:", "unsupported policy version \"01\""},
    /* A tag: libcyaml ignores it, so the value would load as its text. */
    {"bad-version-tag-int.yaml", "bad-version-tag-int.yaml:2:",
     "tags (!!int) are not allowed: values are read as written, whatever a tag says; remove it"},
    {"bad-version-tag-str.yaml", "bad-version-tag-str.yaml:2:", "tags (!!str) are not allowed"},
    {"bad-version-tag-local.yaml", "bad-version-tag-local.yaml:2:", "tags (!v1) are not allowed"},
    {"bad-tag-list.yaml", "bad-tag-list.yaml:20:", "tags (!!seq) are not allowed"},
    /* Raw bytes libyaml's reader refuses: the line they are on, not 1. */
    {"bad-raw-control.yaml", "bad-raw-control.yaml:22:", "control character 0x1b (raw"},
    {"bad-raw-control-crlf.yaml", "bad-raw-control-crlf.yaml:21:", "control character 0x1b"},
    {"bad-raw-nul.yaml", "bad-raw-nul.yaml:22:", "control character 0x00"},
    {"bad-not-utf8.yaml", "bad-not-utf8.yaml:22:", "not UTF-8: invalid leading UTF-8 octet 0xff"},
    {"bad-utf16le.yaml",
     "bad-utf16le.yaml:1:", "the file is UTF-16LE (byte order mark FF FE), not UTF-8"},
    {"bad-utf16be.yaml",
     "bad-utf16be.yaml:1:", "the file is UTF-16BE (byte order mark FE FF), not UTF-8"},
    {"bad-utf16le-nobom.yaml", "bad-utf16le-nobom.yaml:1:",
     "the file is UTF-16LE (NUL bytes in its first character), not UTF-8"},
    {"bad-utf32le.yaml",
     "bad-utf32le.yaml:1:", "the file is UTF-32LE (byte order mark FF FE 00 00), not UTF-8"},
    {"bad-key-not-plain.yaml",
     "bad-key-not-plain.yaml:25:", "a mapping key must be a plain string"},
};

static void test_bad_policies(void **state)
{
    const fixture_t *f = *state;
    int failures = 0;
    for (size_t i = 0; i < sizeof bad_rows / sizeof bad_rows[0]; i++) {
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

/* Every bad-*.yaml in the data folder has a row, so none is forgotten. */
static void test_bad_files_all_listed(void **state)
{
    (void)state;
    DIR *d = opendir(DATA_DIR);
    assert_non_null(d);
    struct dirent *e;
    int unlisted = 0;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "bad-", 4) != 0)
            continue;
        int found = 0;
        for (size_t i = 0; i < sizeof bad_rows / sizeof bad_rows[0]; i++)
            found |= strcmp(bad_rows[i].file, e->d_name) == 0;
        if (!found) {
            print_error("%s has no row in bad_rows\n", e->d_name);
            unlisted++;
        }
    }
    closedir(d);
    assert_int_equal(unlisted, 0);
}

/* ------------------------------------------------------------------ good policy */

static void test_good_policy(void **state)
{
    const fixture_t *f = *state;
    policy_t *p = load_good(f);
    assert_int_equal(policy_partner_count(p), 6);
    assert_int_equal(policy_principal_count(p), 8);
    assert_int_equal(policy_rule_count(p), 7);
    assert_string_equal(policy_partner_at(p, 0)->id, "gemeente");
    assert_string_equal(policy_partner_at(p, 0)->name, "Gemeente Maastricht");
    assert_string_equal(policy_partner_at(p, 5)->name, "om"); /* no name: the id */
    assert_null(policy_partner_at(p, 6));

    const policy_rule_t *r = policy_rule_at(p, 0);
    assert_string_equal(r->id, "woco-ondermijning");
    assert_int_equal(r->line, 42);
    assert_int_equal(r->retention_s, 365LL * 86400);
    assert_string_equal(r->purpose, "Aanpak ondermijning (convenant RIEC art. 4)");
    assert_int_equal(r->fields, FIELD_AREA | FIELD_ADDRESS | FIELD_SUBJECT | FIELD_GROUNDS |
                                    FIELD_SEVERITY | FIELD_OBSERVED_AT | FIELD_SUMMARY |
                                    FIELD_SOURCE_REF);
    assert_int_equal(r->require_case_ref, 0);
    r = policy_rule_at(p, 3);
    assert_string_equal(r->id, "politie-casus");
    assert_int_equal(r->retention_s, 2 * 365LL * 86400);
    assert_int_equal(r->require_case_ref, 1);
    assert_int_equal(policy_rule_at(p, 5)->retention_s, 12 * 3600);
    assert_int_equal(policy_rule_at(p, 5)->fields, FIELD_AREA | FIELD_RECIPIENTS);
    assert_int_equal(policy_rule_at(p, 6)->fields, 0);
    assert_null(policy_rule_at(p, 7));
    for (size_t i = 0; i < policy_rule_count(p); i++) {
        const char *hex = policy_rule_at(p, i)->hash_hex;
        assert_int_equal(strlen(hex), 64);
        assert_int_equal(strspn(hex, "0123456789abcdef"), 64);
    }

    /* policy_hash_hex is BLAKE2b-256 of the file's bytes. */
    size_t len;
    char *text = read_all(DATA_DIR "/good.yaml", &len);
    uint8_t digest[32];
    char hex[65];
    crypto_generichash(digest, sizeof digest, (const uint8_t *)text, len, NULL, 0);
    syntax_hex(digest, sizeof digest, hex);
    assert_string_equal(policy_hash_hex(p), hex);
    free(text);

    assert_string_equal(policy_role_name(ROLE_SYSTEM), "system");
    assert_string_equal(policy_role_name(ROLE_CASEWORKER), "caseworker");
    assert_string_equal(policy_role_name(ROLE_OPERATOR), "operator");
    assert_string_equal(policy_role_name(ROLE_NONE), "none");
    policy_destroy(&p);
    assert_null(p);
    policy_destroy(&p); /* idempotent */
}

/* ------------------------------------------------------------------ principals */

static void test_principal_lookups(void **state)
{
    const fixture_t *f = *state;
    policy_t *p = load_good(f);
    static const struct {
        const char *key;
        const char *id;
        role_t role;
        const char *partner;
    } rows[] = {
        {"gemeente-meldingen", "gemeente/meldingen", ROLE_SYSTEM, "gemeente"},
        {"gemeente-jdevries", "gemeente/j.devries", ROLE_CASEWORKER, "gemeente"},
        {"politie-bvh", "politie/bvh-koppeling", ROLE_SYSTEM, "politie"},
        {"politie-beheer", "politie/beheer", ROLE_OPERATOR, "politie"},
        {"riec-analist", "riec/analist", ROLE_CASEWORKER, "riec"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char path[256], err[256];
        uint8_t sign_pk[32], curve_pk[32];
        snprintf(path, sizeof path, "%s/keys/%s.pub", f->dir, rows[i].key);
        assert_int_equal(keys_load_public(path, sign_pk, err, sizeof err), 0);
        assert_int_equal(keys_sign_pk_to_curve(sign_pk, curve_pk), 0);
        const policy_principal_t *by_key = policy_principal_by_curve_key(p, curve_pk);
        assert_non_null(by_key);
        assert_string_equal(by_key->id, rows[i].id);
        assert_int_equal(by_key->role, rows[i].role);
        assert_string_equal(by_key->partner->id, rows[i].partner);
        assert_memory_equal(by_key->sign_pk, sign_pk, 32);
        assert_ptr_equal(policy_principal_by_id(p, rows[i].id), by_key);
        assert_ptr_equal(policy_partner_by_id(p, rows[i].partner), by_key->partner);
    }
    uint8_t stranger[32];
    randombytes_buf(stranger, sizeof stranger);
    assert_null(policy_principal_by_curve_key(p, stranger));
    assert_null(policy_principal_by_id(p, "politie/nobody"));
    assert_null(policy_principal_by_id(p, "politie"));
    assert_null(policy_principal_by_id(p, NULL));
    assert_null(policy_partner_by_id(p, "ggd"));
    assert_null(policy_partner_by_id(p, NULL));
    assert_non_null(policy_partner_by_id(p, "om"));
    policy_destroy(&p);
}

static void test_recipients(void **state)
{
    const fixture_t *f = *state;
    policy_t *p = load_good(f);
    const policy_principal_t *out[8];
    const policy_partner_t *gemeente = policy_partner_by_id(p, "gemeente");
    const policy_partner_t *politie = policy_partner_by_id(p, "politie");
    /* politie-overlast: to_roles [caseworker] -> only the caseworker */
    const policy_rule_t *overlast = policy_rule_at(p, 4);
    assert_int_equal(policy_recipients(p, overlast, gemeente, out, 8), 1);
    assert_string_equal(out[0]->id, "gemeente/j.devries");
    /* woco-ondermijning to politie: system and caseworker, never the operator */
    const policy_rule_t *woco = policy_rule_at(p, 0);
    assert_int_equal(policy_recipients(p, woco, politie, out, 8), 2);
    assert_string_equal(out[0]->id, "politie/bvh-koppeling");
    assert_string_equal(out[1]->id, "politie/analist");
    assert_int_equal(policy_recipients(p, woco, politie, out, 1), 1);
    /* a partner the rule does not deliver to */
    assert_int_equal(policy_recipients(p, woco, gemeente, out, 8), 0);
    /* a rule from elsewhere */
    policy_rule_t foreign = *woco;
    assert_int_equal(policy_recipients(p, &foreign, politie, out, 8), 0);
    assert_int_equal(policy_recipients(p, NULL, politie, out, 8), 0);
    policy_destroy(&p);
}

/* ------------------------------------------------------------------ decisions */

typedef struct decision_row {
    const char *name;
    const char *sender;
    const char *kind, *theme, *area;
    int has_case_ref;
    const char *recipients[4];
    verdict_t verdict;
    const char *grants[4]; /* "partner=rule", in the order granted */
    uint32_t first_fields; /* the first grant's field mask */
    const char *reason;    /* substring of the deny reason */
} decision_row_t;

#define WOCO_FIELDS                                                                                \
    (FIELD_AREA | FIELD_ADDRESS | FIELD_SUBJECT | FIELD_GROUNDS | FIELD_SEVERITY |                 \
     FIELD_OBSERVED_AT | FIELD_SUMMARY | FIELD_SOURCE_REF)

/* clang-format off */
static const decision_row_t decision_rows[] = {
    {"woco to all entitled",
     "woco-servatius/meldingen", "hennep", "ondermijning", "GM0935", 0, {NULL},
     VERDICT_ALLOW,
     {"gemeente=woco-wonen-gemeente", "politie=woco-ondermijning", "riec=woco-ondermijning"},
     FIELD_AREA, NULL},
    {"district within municipality",
     "woco-servatius/meldingen", "hennep", "ondermijning", "WK093501", 0, {NULL},
     VERDICT_ALLOW,
     {"gemeente=woco-wonen-gemeente", "politie=woco-ondermijning", "riec=woco-ondermijning"},
     FIELD_AREA, NULL},
    {"other municipality: only the '*' rule",
     "woco-servatius/meldingen", "hennep", "ondermijning", "BU09170101", 0, {NULL},
     VERDICT_ALLOW, {"gemeente=woco-wonen-gemeente", "politie=woco-wonen-gemeente"},
     FIELD_AREA, NULL},
    {"wrong theme",
     "woco-servatius/meldingen", "hennep", "drugs", "GM0935", 0, {NULL},
     VERDICT_DENY, {NULL},
     0, "no rule lets woco-servatius (woco-servatius/meldingen) send signal kind \"hennep\" "
        "theme \"drugs\" in area GM0935 to any partner"},
    {"named recipient",
     "woco-servatius/meldingen", "hennep", "ondermijning", "GM0935", 0, {"politie", NULL},
     VERDICT_ALLOW, {"politie=woco-ondermijning"},
     WOCO_FIELDS, NULL},
    {"named recipients in the order named",
     "woco-servatius/meldingen", "hennep", "ondermijning", "GM0935", 0,
     {"riec", "gemeente", "riec", NULL},
     VERDICT_ALLOW, {"riec=woco-ondermijning", "gemeente=woco-wonen-gemeente"},
     WOCO_FIELDS, NULL},
    {"one named recipient not allowed: whole deny",
     "woco-servatius/meldingen", "hennep", "ondermijning", "GM0935", 0,
     {"politie", "brandweer", NULL},
     VERDICT_DENY, {NULL},
     0, "theme \"ondermijning\" in area GM0935 to brandweer"},
    {"unknown named partner",
     "woco-servatius/meldingen", "hennep", "ondermijning", "GM0935", 0, {"politie", "ggd", NULL},
     VERDICT_DENY, {NULL},
     0, "unknown partner \"ggd\""},
    {"sender's own partner only by rule",
     "woco-servatius/meldingen", "hennep", "ondermijning", "GM0935", 0, {"woco-servatius", NULL},
     VERDICT_DENY, {NULL},
     0, "to woco-servatius"},
    {"brandweer kind in list, neighbourhood in district",
     "brandweer/meldkamer", "brandmelding", "brandveiligheid", "BU09350199", 0, {NULL},
     VERDICT_ALLOW, {"gemeente=brandweer-brandveiligheid"},
     FIELD_AREA | FIELD_ADDRESS | FIELD_SEVERITY | FIELD_OBSERVED_AT, NULL},
    {"brandweer neighbourhood listed itself",
     "brandweer/meldkamer", "inspectie", "brandveiligheid", "BU09350201", 0, {NULL},
     VERDICT_ALLOW, {"gemeente=brandweer-brandveiligheid"},
     FIELD_AREA | FIELD_ADDRESS | FIELD_SEVERITY | FIELD_OBSERVED_AT, NULL},
    {"wrong area prefix",
     "brandweer/meldkamer", "brandmelding", "brandveiligheid", "WK093502", 0, {NULL},
     VERDICT_DENY, {NULL},
     0, "in area WK093502 to any partner"},
    {"municipality is wider than the district rule",
     "brandweer/meldkamer", "brandmelding", "brandveiligheid", "GM0935", 0, {NULL},
     VERDICT_DENY, {NULL},
     0, "in area GM0935"},
    {"wrong kind",
     "brandweer/meldkamer", "hennep", "brandveiligheid", "WK093501", 0, {NULL},
     VERDICT_DENY, {NULL},
     0, "kind \"hennep\""},
    {"require_case_ref without case_ref",
     "politie/analist", "zorgmelding", "zorg", "GM0935", 0, {NULL},
     VERDICT_DENY, {NULL},
     0, "(rule \"politie-casus\" requires case_ref)"},
    {"require_case_ref with case_ref; om has no principals",
     "politie/analist", "zorgmelding", "zorg", "GM0935", 1, {NULL},
     VERDICT_ALLOW, {"gemeente=politie-casus"},
     FIELD_AREA | FIELD_SUBJECT | FIELD_GROUNDS | FIELD_CASE_REF | FIELD_SUMMARY, NULL},
    {"named partner without principals",
     "politie/analist", "zorgmelding", "zorg", "GM0935", 1, {"om", NULL},
     VERDICT_DENY, {NULL},
     0, "to om (rule \"politie-casus\" matches, but om has no principal with a role "
        "it delivers to)"},
    {"wrong role",
     "politie/bvh-koppeling", "zorgmelding", "zorg", "GM0935", 1, {NULL},
     VERDICT_DENY, {NULL},
     0, "no rule lets politie (politie/bvh-koppeling)"},
    {"operator sender",
     "politie/beheer", "zorgmelding", "zorg", "GM0935", 1, {NULL},
     VERDICT_DENY, {NULL},
     0, "operators never send"},
    {"'*' theme rule first in file order",
     "politie/analist", "overlast-melding", "overlast", "GM0935", 1, {NULL},
     VERDICT_ALLOW, {"gemeente=politie-casus"},
     FIELD_AREA | FIELD_SUBJECT | FIELD_GROUNDS | FIELD_CASE_REF | FIELD_SUMMARY, NULL},
    {"later theme rule when the '*' rule does not match",
     "politie/analist", "overlast-melding", "overlast", "GM0935", 0, {NULL},
     VERDICT_ALLOW, {"gemeente=politie-overlast"},
     FIELD_AREA | FIELD_SUMMARY, NULL},
    {"system sender, theme rule",
     "politie/bvh-koppeling", "overlast-melding", "overlast", "GM1680", 0, {NULL},
     VERDICT_ALLOW, {"gemeente=politie-overlast"},
     FIELD_AREA | FIELD_SUMMARY, NULL},
    {"own partner by rule",
     "gemeente/meldingen", "zorgmelding", "zorg", "WK093501", 0, {NULL},
     VERDICT_ALLOW, {"gemeente=gemeente-zorg", "politie=gemeente-zorg"},
     FIELD_AREA | FIELD_RECIPIENTS, NULL},
    {"from_roles excludes caseworker",
     "gemeente/j.devries", "zorgmelding", "zorg", "GM0935", 0, {NULL},
     VERDICT_DENY, {NULL},
     0, "no rule lets gemeente (gemeente/j.devries)"},
    {"empty field list",
     "riec/analist", "analyse", "drugs", "GM0917", 0, {NULL},
     VERDICT_ALLOW, {"politie=riec-alles"},
     0, NULL},
    {"theme not in the vocabulary",
     "riec/analist", "analyse", "fietsdiefstal", "GM0917", 0, {NULL},
     VERDICT_DENY, {NULL},
     0, "theme \"fietsdiefstal\""},
};
/* clang-format on */

static void check_decision(const policy_t *p, const decision_row_t *row)
{
    const policy_principal_t *sender = policy_principal_by_id(p, row->sender);
    if (sender == NULL)
        fail_msg("%s: no principal %s", row->name, row->sender);
    size_t n_recipients = 0;
    while (n_recipients < 4 && row->recipients[n_recipients])
        n_recipients++;
    policy_signal_facts_t facts = {.kind = row->kind,
                                   .theme = row->theme,
                                   .area = row->area,
                                   .has_case_ref = row->has_case_ref,
                                   .recipients = row->recipients,
                                   .n_recipients = n_recipients};
    policy_decision_t d;
    verdict_t v = policy_decide_signal(p, sender, &facts, &d);
    if (v != row->verdict || d.verdict != row->verdict)
        fail_msg("%s: verdict %d, expected %d (reason: %s)", row->name, v, row->verdict, d.reason);
    if (v == VERDICT_DENY) {
        assert_int_equal(d.n_grants, 0);
        if (strstr(d.reason, row->reason) == NULL)
            fail_msg("%s: reason \"%s\" lacks \"%s\"", row->name, d.reason, row->reason);
        return;
    }
    size_t expected = 0;
    while (expected < 4 && row->grants[expected])
        expected++;
    if (d.n_grants != expected)
        fail_msg("%s: %zu grants, expected %zu", row->name, d.n_grants, expected);
    for (size_t i = 0; i < expected; i++) {
        char got[160];
        snprintf(got, sizeof got, "%s=%s", d.grants[i].partner->id, d.grants[i].rule->id);
        if (strcmp(got, row->grants[i]) != 0)
            fail_msg("%s: grant %zu is %s, expected %s", row->name, i, got, row->grants[i]);
    }
    if (d.grants[0].rule->fields != row->first_fields)
        fail_msg("%s: fields 0x%x, expected 0x%x", row->name, d.grants[0].rule->fields,
                 row->first_fields);
}

static void test_decisions(void **state)
{
    const fixture_t *f = *state;
    policy_t *p = load_good(f);
    for (size_t i = 0; i < sizeof decision_rows / sizeof decision_rows[0]; i++)
        check_decision(p, &decision_rows[i]);
    policy_destroy(&p);
}

static void test_decision_bad_arguments(void **state)
{
    const fixture_t *f = *state;
    policy_t *p = load_good(f);
    policy_t *other = load_good(f);
    policy_decision_t d;
    policy_signal_facts_t facts = {.kind = "k", .theme = "zorg", .area = "GM0935"};
    const policy_principal_t *sender = policy_principal_by_id(p, "gemeente/meldingen");
    /* a principal of another policy object is not trusted */
    const policy_principal_t *stranger = policy_principal_by_id(other, "gemeente/meldingen");
    assert_int_equal(policy_decide_signal(p, stranger, &facts, &d), VERDICT_DENY);
    assert_int_equal(policy_decide_signal(p, NULL, &facts, &d), VERDICT_DENY);
    assert_int_equal(policy_decide_signal(NULL, sender, &facts, &d), VERDICT_DENY);
    assert_int_equal(policy_decide_signal(p, sender, NULL, &d), VERDICT_DENY);
    assert_int_equal(policy_decide_signal(p, sender, &facts, NULL), VERDICT_DENY);
    facts.area = NULL;
    assert_int_equal(policy_decide_signal(p, sender, &facts, &d), VERDICT_DENY);
    assert_int_equal(d.n_grants, 0);
    facts.area = "GM0935";
    assert_int_equal(policy_decide_signal(p, sender, &facts, &d), VERDICT_ALLOW);
    policy_destroy(&other);
    policy_destroy(&p);
}

/* ------------------------------------------------------------------ rule hash */

static const char *const hash_head =
    "version: 1\n"
    "partners:\n"
    "  - {id: gemeente}\n"
    "  - {id: politie}\n"
    "  - {id: riec}\n"
    "principals:\n"
    "  - {id: gemeente/meldingen, role: system, key_file: keys/gemeente-meldingen.pub}\n"
    "rules:\n";

static const char *const hash_base = "  - id: r1\n"
                                     "    from: [gemeente]\n"
                                     "    to: [politie, riec]\n"
                                     "    themes: [zorg, overlast]\n"
                                     "    areas: [GM0935]\n"
                                     "    purpose: \"Zorg en veiligheid\"\n"
                                     "    legal_basis: \"Wmo 2015\"\n"
                                     "    fields: [area, summary]\n"
                                     "    retention: 365d\n";

typedef struct hash_row {
    const char *name;
    const char *rule;
    int same; /* 1: same content as hash_base, 0: a change */
} hash_row_t;

static const hash_row_t hash_rows[] = {
    {"identical",
     "  - id: r1\n    from: [gemeente]\n    to: [politie, riec]\n"
     "    themes: [zorg, overlast]\n    areas: [GM0935]\n"
     "    purpose: \"Zorg en veiligheid\"\n    legal_basis: \"Wmo 2015\"\n"
     "    fields: [area, summary]\n    retention: 365d\n",
     1},
    {"other layout, key order, quoting, explicit defaults",
     "  - legal_basis: 'Wmo 2015'\n    retention: 1y\n    id: r1\n"
     "    to:\n      - politie\n      - riec\n    from: [\"gemeente\"]\n"
     "    from_roles: [system, caseworker]\n    to_roles: [system, caseworker]\n"
     "    kinds: [\"*\"]\n    require_case_ref: false\n"
     "    themes: [zorg, overlast]   # comment\n    areas: [GM0935]\n"
     "    purpose: Zorg en veiligheid\n    fields: [area, summary]\n",
     1},
    {"retention in hours",
     "  - id: r1\n    from: [gemeente]\n    to: [politie, riec]\n"
     "    themes: [zorg, overlast]\n    areas: [GM0935]\n"
     "    purpose: \"Zorg en veiligheid\"\n    legal_basis: \"Wmo 2015\"\n"
     "    fields: [area, summary]\n    retention: 8760h\n",
     1},
    {"retention in seconds",
     "  - id: r1\n    from: [gemeente]\n    to: [politie, riec]\n"
     "    themes: [zorg, overlast]\n    areas: [GM0935]\n"
     "    purpose: \"Zorg en veiligheid\"\n    legal_basis: \"Wmo 2015\"\n"
     "    fields: [area, summary]\n    retention: 31536000s\n",
     1},
    {"id",
     "  - id: r2\n    from: [gemeente]\n    to: [politie, riec]\n"
     "    themes: [zorg, overlast]\n    areas: [GM0935]\n"
     "    purpose: \"Zorg en veiligheid\"\n    legal_basis: \"Wmo 2015\"\n"
     "    fields: [area, summary]\n    retention: 365d\n",
     0},
    {"to",
     "  - id: r1\n    from: [gemeente]\n    to: [politie]\n"
     "    themes: [zorg, overlast]\n    areas: [GM0935]\n"
     "    purpose: \"Zorg en veiligheid\"\n    legal_basis: \"Wmo 2015\"\n"
     "    fields: [area, summary]\n    retention: 365d\n",
     0},
    {"from_roles",
     "  - id: r1\n    from: [gemeente]\n    from_roles: [system]\n"
     "    to: [politie, riec]\n    themes: [zorg, overlast]\n    areas: [GM0935]\n"
     "    purpose: \"Zorg en veiligheid\"\n    legal_basis: \"Wmo 2015\"\n"
     "    fields: [area, summary]\n    retention: 365d\n",
     0},
    {"to_roles",
     "  - id: r1\n    from: [gemeente]\n    to_roles: [caseworker]\n"
     "    to: [politie, riec]\n    themes: [zorg, overlast]\n    areas: [GM0935]\n"
     "    purpose: \"Zorg en veiligheid\"\n    legal_basis: \"Wmo 2015\"\n"
     "    fields: [area, summary]\n    retention: 365d\n",
     0},
    {"kinds",
     "  - id: r1\n    from: [gemeente]\n    kinds: [melding]\n"
     "    to: [politie, riec]\n    themes: [zorg, overlast]\n    areas: [GM0935]\n"
     "    purpose: \"Zorg en veiligheid\"\n    legal_basis: \"Wmo 2015\"\n"
     "    fields: [area, summary]\n    retention: 365d\n",
     0},
    {"themes",
     "  - id: r1\n    from: [gemeente]\n    to: [politie, riec]\n"
     "    themes: [zorg]\n    areas: [GM0935]\n"
     "    purpose: \"Zorg en veiligheid\"\n    legal_basis: \"Wmo 2015\"\n"
     "    fields: [area, summary]\n    retention: 365d\n",
     0},
    {"areas",
     "  - id: r1\n    from: [gemeente]\n    to: [politie, riec]\n"
     "    themes: [zorg, overlast]\n    areas: [GM0917]\n"
     "    purpose: \"Zorg en veiligheid\"\n    legal_basis: \"Wmo 2015\"\n"
     "    fields: [area, summary]\n    retention: 365d\n",
     0},
    {"purpose",
     "  - id: r1\n    from: [gemeente]\n    to: [politie, riec]\n"
     "    themes: [zorg, overlast]\n    areas: [GM0935]\n"
     "    purpose: \"Zorg en veiligheid.\"\n    legal_basis: \"Wmo 2015\"\n"
     "    fields: [area, summary]\n    retention: 365d\n",
     0},
    {"legal_basis",
     "  - id: r1\n    from: [gemeente]\n    to: [politie, riec]\n"
     "    themes: [zorg, overlast]\n    areas: [GM0935]\n"
     "    purpose: \"Zorg en veiligheid\"\n    legal_basis: \"Wmo 2016\"\n"
     "    fields: [area, summary]\n    retention: 365d\n",
     0},
    {"fields",
     "  - id: r1\n    from: [gemeente]\n    to: [politie, riec]\n"
     "    themes: [zorg, overlast]\n    areas: [GM0935]\n"
     "    purpose: \"Zorg en veiligheid\"\n    legal_basis: \"Wmo 2015\"\n"
     "    fields: [area, summary, subject]\n    retention: 365d\n",
     0},
    {"retention",
     "  - id: r1\n    from: [gemeente]\n    to: [politie, riec]\n"
     "    themes: [zorg, overlast]\n    areas: [GM0935]\n"
     "    purpose: \"Zorg en veiligheid\"\n    legal_basis: \"Wmo 2015\"\n"
     "    fields: [area, summary]\n    retention: 364d\n",
     0},
    {"require_case_ref",
     "  - id: r1\n    from: [gemeente]\n    to: [politie, riec]\n"
     "    themes: [zorg, overlast]\n    areas: [GM0935]\n"
     "    purpose: \"Zorg en veiligheid\"\n    legal_basis: \"Wmo 2015\"\n"
     "    fields: [area, summary]\n    retention: 365d\n"
     "    require_case_ref: true\n",
     0},
    {"text moved between purpose and legal_basis",
     "  - id: r1\n    from: [gemeente]\n    to: [politie, riec]\n"
     "    themes: [zorg, overlast]\n    areas: [GM0935]\n"
     "    purpose: \"Zorg en veiligheidWmo\"\n    legal_basis: \" 2015\"\n"
     "    fields: [area, summary]\n    retention: 365d\n",
     0},
    /* the same bytes split differently between list items */
    {"kinds split one way",
     "  - id: r1\n    from: [gemeente]\n    kinds: [melding-a, b]\n"
     "    to: [politie, riec]\n    themes: [zorg, overlast]\n"
     "    areas: [GM0935]\n    purpose: \"Zorg en veiligheid\"\n"
     "    legal_basis: \"Wmo 2015\"\n    fields: [area, summary]\n"
     "    retention: 365d\n",
     0},
    {"kinds split another way",
     "  - id: r1\n    from: [gemeente]\n    kinds: [melding-, ab]\n"
     "    to: [politie, riec]\n    themes: [zorg, overlast]\n"
     "    areas: [GM0935]\n    purpose: \"Zorg en veiligheid\"\n"
     "    legal_basis: \"Wmo 2015\"\n    fields: [area, summary]\n"
     "    retention: 365d\n",
     0},
    {"list order",
     "  - id: r1\n    from: [gemeente]\n    to: [riec, politie]\n"
     "    themes: [zorg, overlast]\n    areas: [GM0935]\n"
     "    purpose: \"Zorg en veiligheid\"\n    legal_basis: \"Wmo 2015\"\n"
     "    fields: [area, summary]\n    retention: 365d\n",
     0},
};

static void rule_hash_of(const fixture_t *f, const char *rule, char out[65])
{
    char text[4096], err[512] = "";
    snprintf(text, sizeof text, "%s%s", hash_head, rule);
    policy_t *p = load_text(f, "hash.yaml", text, err, sizeof err);
    if (p == NULL)
        fail_msg("hash policy: %s", err);
    assert_int_equal(policy_rule_count(p), 1);
    memcpy(out, policy_rule_at(p, 0)->hash_hex, 65);
    policy_destroy(&p);
}

/* The canonical form of docs/POLICY.md "Rule hash", written out for
 * hash_base: u32 big-endian lengths and counts, fields in fixed order,
 * defaults for absent keys, retention in seconds. */
static void canon_u32(crypto_generichash_state *st, uint32_t v)
{
    uint8_t be[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    crypto_generichash_update(st, be, sizeof be);
}

static void canon_text(crypto_generichash_state *st, const char *text)
{
    canon_u32(st, (uint32_t)strlen(text));
    crypto_generichash_update(st, (const uint8_t *)text, strlen(text));
}

static void canon_field(crypto_generichash_state *st, const char *name, const char *const *values,
                        uint32_t n)
{
    canon_text(st, name);
    canon_u32(st, n);
    for (uint32_t i = 0; i < n; i++)
        canon_text(st, values[i]);
}

static void canonical_base_hash(char hex[65])
{
    static const char *const id[] = {"r1"}, *const from[] = {"gemeente"},
                             *const roles[] = {"system", "caseworker"},
                             *const to[] = {"politie", "riec"}, *const kinds[] = {"*"},
                             *const themes[] = {"zorg", "overlast"}, *const areas[] = {"GM0935"},
                             *const purpose[] = {"Zorg en veiligheid"},
                             *const legal[] = {"Wmo 2015"}, *const fields[] = {"area", "summary"},
                             *const retention[] = {"31536000"}, *const flag[] = {"false"};
    crypto_generichash_state st;
    uint8_t digest[32];
    crypto_generichash_init(&st, NULL, 0, sizeof digest);
    crypto_generichash_update(&st, (const uint8_t *)"schakel-rule-v1", 15);
    canon_field(&st, "id", id, 1);
    canon_field(&st, "from", from, 1);
    canon_field(&st, "from_roles", roles, 2);
    canon_field(&st, "to", to, 2);
    canon_field(&st, "to_roles", roles, 2);
    canon_field(&st, "kinds", kinds, 1);
    canon_field(&st, "themes", themes, 2);
    canon_field(&st, "areas", areas, 1);
    canon_field(&st, "purpose", purpose, 1);
    canon_field(&st, "legal_basis", legal, 1);
    canon_field(&st, "fields", fields, 2);
    canon_field(&st, "retention", retention, 1);
    canon_field(&st, "require_case_ref", flag, 1);
    crypto_generichash_final(&st, digest, sizeof digest);
    syntax_hex(digest, sizeof digest, hex);
}

static void test_rule_hash(void **state)
{
    const fixture_t *f = *state;
    char base[65], again[65], documented[65];
    rule_hash_of(f, hash_base, base);
    rule_hash_of(f, hash_base, again);
    assert_string_equal(base, again);
    canonical_base_hash(documented);
    assert_string_equal(base, documented);
    char seen[sizeof hash_rows / sizeof hash_rows[0]][65];
    for (size_t i = 0; i < sizeof hash_rows / sizeof hash_rows[0]; i++) {
        rule_hash_of(f, hash_rows[i].rule, seen[i]);
        int same = strcmp(seen[i], base) == 0;
        if (same != hash_rows[i].same)
            fail_msg("%s: hash %s the base", hash_rows[i].name, same ? "equals" : "differs from");
        /* every change gives a hash no other change gave */
        for (size_t j = 0; j < i && !hash_rows[i].same; j++)
            if (!hash_rows[j].same && strcmp(seen[i], seen[j]) == 0)
                fail_msg("%s and %s: same hash", hash_rows[i].name, hash_rows[j].name);
    }
    /* Another rule in the file does not change this rule's hash. */
    char text[4096], err[512] = "";
    snprintf(text, sizeof text, "%s%s%s", hash_head, hash_base,
             "  - id: r9\n    from: [riec]\n    to: [gemeente]\n    themes: [\"*\"]\n"
             "    areas: [\"*\"]\n    purpose: p\n    legal_basis: l\n    fields: []\n"
             "    retention: 1d\n");
    policy_t *p = load_text(f, "hash2.yaml", text, err, sizeof err);
    if (p == NULL)
        fail_msg("%s", err);
    assert_string_equal(policy_rule_at(p, 0)->hash_hex, base);
    assert_string_not_equal(policy_rule_at(p, 1)->hash_hex, base);
    policy_destroy(&p);
}

/* ------------------------------------------------------------------ memory loader */

static void test_load_buffer(void **state)
{
    (void)state;
    char err[512];
    uint8_t pk[32], sk[64];
    char z85[41];
    crypto_sign_keypair(pk, sk);
    sodium_memzero(sk, sizeof sk);
    keys_public_z85(pk, z85);
    char text[2048];
    snprintf(text, sizeof text,
             "version: 1\npartners: [{id: a}, {id: b}]\n"
             "principals:\n  - {id: a/x, role: system, key: \"%s\"}\n"
             "rules:\n  - {id: r, from: [a], to: [b], themes: [zorg], areas: [\"*\"],\n"
             "     purpose: p, legal_basis: l, fields: [], retention: 1m}\n",
             z85);
    policy_t *p =
        policy_load_buffer("mem", (const uint8_t *)text, strlen(text), NULL, err, sizeof err);
    if (p == NULL)
        fail_msg("%s", err);
    assert_int_equal(policy_rule_at(p, 0)->retention_s, 60);
    assert_int_equal(policy_rule_at(p, 0)->line, 6);
    assert_memory_equal(policy_principal_at(p, 0)->sign_pk, pk, 32);
    policy_destroy(&p);

    /* key_file without a base folder is refused: memory input opens no files */
    const char *with_file = "version: 1\npartners: [{id: a}]\n"
                            "principals:\n  - id: a/x\n    role: system\n"
                            "    key_file: /etc/passwd\nrules: []\n";
    p = policy_load_buffer("mem", (const uint8_t *)with_file, strlen(with_file), NULL, err,
                           sizeof err);
    assert_null(p);
    assert_non_null(strstr(err, "mem:6: key_file is not allowed"));

    /* over the size cap */
    size_t big = SCHAKEL_MAX_POLICY_BYTES + 1;
    uint8_t *huge = calloc(big, 1);
    assert_non_null(huge);
    memset(huge, '#', big);
    p = policy_load_buffer("mem", huge, big, NULL, err, sizeof err);
    assert_null(p);
    assert_non_null(strstr(err, "larger than"));
    free(huge);

    /* one principal more than a partner may have; the error names its line */
    size_t cap = 128 * 1024, used = 0;
    char *many = malloc(cap);
    assert_non_null(many);
    used += (size_t)snprintf(many, cap, "version: 1\npartners: [{id: a}]\nprincipals:\n");
    for (unsigned i = 0; i <= SCHAKEL_MAX_PRINCIPALS_PER_PARTNER; i++) {
        crypto_sign_keypair(pk, sk);
        sodium_memzero(sk, sizeof sk);
        keys_public_z85(pk, z85);
        used += (size_t)snprintf(many + used, cap - used,
                                 "  - {id: a/p%u, role: system, key: \"%s\"}\n", i, z85);
    }
    used += (size_t)snprintf(many + used, cap - used, "rules: []\n");
    assert_true(used < cap);
    p = policy_load_buffer("mem", (const uint8_t *)many, used, NULL, err, sizeof err);
    assert_null(p);
    char where[64];
    snprintf(where, sizeof where, "mem:%u: partner \"a\" has more than",
             4 + SCHAKEL_MAX_PRINCIPALS_PER_PARTNER);
    if (strstr(err, where) == NULL)
        fail_msg("got \"%s\", expected \"%s\"", err, where);
    free(many);

    /* nesting bomb */
    char deep[4096];
    memset(deep, '[', sizeof deep - 1);
    deep[sizeof deep - 1] = '\0';
    p = policy_load_buffer("mem", (const uint8_t *)deep, strlen(deep), NULL, err, sizeof err);
    assert_null(p);
    assert_non_null(strstr(err, "nesting deeper"));
}

static void test_load_file_errors(void **state)
{
    const fixture_t *f = *state;
    char err[512], path[256];
    snprintf(path, sizeof path, "%s/none.yaml", f->dir);
    assert_null(policy_load(path, err, sizeof err));
    assert_non_null(strstr(err, "none.yaml: cannot open"));
    assert_null(policy_load(f->dir, err, sizeof err)); /* a folder */
    assert_non_null(strstr(err, "not a regular file"));
    assert_null(policy_load(NULL, err, sizeof err));
}

/* A policy given as a pipe (schakelctl policy check <(cat policy.yaml)
 * names /dev/fd/63): its /proc link's text "pipe:[N]" is no name, so it is
 * said for what it is, not followed as a relative name ("cannot open: No
 * such file or directory"). */
static void test_load_pipe_is_not_a_file(void **state)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    const char *text = "version: 1\n";
    assert_int_equal(write(fds[1], text, strlen(text)), (ssize_t)strlen(text));
    char err[512], path[64], pipe_text[64];
    struct stat st;
    assert_int_equal(fstat(fds[0], &st), 0);
    snprintf(pipe_text, sizeof pipe_text, "not a file on disk but pipe:[%llu]",
             (unsigned long long)st.st_ino);
    const char *folders[] = {"/proc/self/fd", "/dev/fd"};
    for (size_t i = 0; i < sizeof folders / sizeof folders[0]; i++) {
        snprintf(path, sizeof path, "%s/%d", folders[i], fds[0]);
        assert_null(policy_load(path, err, sizeof err));
        if (strstr(err, pipe_text) == NULL ||
            strstr(err, "(a pipe or process substitution): give the policy file's own path") ==
                NULL ||
            strncmp(err, path, strlen(path)) != 0)
            fail_msg("%s: got \"%s\"", path, err);
    }
    char buf[16];
    assert_int_equal(read(fds[0], buf, sizeof buf), (ssize_t)strlen(text)); /* nothing read */
    close(fds[0]);
    close(fds[1]);
    /* a file's fd link names the file ("/proc/self" a pid, the fd an
     * absolute path): followed, and the file read */
    const fixture_t *f = *state;
    char file[256];
    snprintf(file, sizeof file, "%s/p.yaml", f->dir);
    int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "x: 1\n", 5), 5);
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    assert_null(policy_load(path, err, sizeof err));
    if (strstr(err, ":1: unknown key \"x\"") == NULL)
        fail_msg("%s: got \"%s\"", path, err);
    close(fd);
}

/* A policy deep in folders (a path of about 4,000 bytes) with an error on
 * its line 2: the message shows the name by its end, then the line and
 * the reason (review: 1,024 bytes of path filled it, line and reason
 * cut off). */
static void test_long_path_error_keeps_line_and_reason(void **state)
{
    const fixture_t *f = *state;
    char path[PATH_MAX], part[201];
    memset(part, 'd', 200);
    part[200] = '\0';
    int used = snprintf(path, sizeof path, "%s", f->dir);
    while (used + 202 + 16 < PATH_MAX - 64) {
        used += snprintf(path + used, sizeof path - (size_t)used, "/%s", part);
        assert_int_equal(mkdir(path, 0755), 0);
    }
    snprintf(path + used, sizeof path - (size_t)used, "/p.yaml");
    FILE *file = fopen(path, "w");
    assert_non_null(file);
    fputs("version: 1\npartners: [\n", file);
    assert_int_equal(fclose(file), 0);
    char err[1024] = "";
    assert_null(policy_load(path, err, sizeof err));
    if (strncmp(err, "...", 3) != 0 || strstr(err, "/p.yaml:") == NULL ||
        strstr(err, "YAML syntax") == NULL)
        fail_msg("a long path's error: \"%s\"", err);
    unlink(path);
    while (used > (int)strlen(f->dir)) {
        path[used] = '\0';
        assert_int_equal(rmdir(path), 0);
        used -= 201;
    }
}

/* A UTF-8 byte order mark is taken (libyaml skips it); the policy hash is
 * over the file's bytes, the mark included. version 1 may be quoted. */
static void test_utf8_bom_and_quoted_version(void **state)
{
    const fixture_t *f = *state;
    size_t len;
    char *text = read_all(DATA_DIR "/good.yaml", &len);
    char *marked = malloc(len + 4);
    assert_non_null(marked);
    memcpy(marked, "\xef\xbb\xbf", 3);
    memcpy(marked + 3, text, len + 1);
    char err[512] = "";
    policy_t *p = load_text(f, "bom.yaml", marked, err, sizeof err);
    if (p == NULL)
        fail_msg("a policy with a UTF-8 byte order mark: %s", err);
    assert_int_equal(policy_rule_count(p), 7);
    uint8_t digest[32];
    char hex[65];
    crypto_generichash(digest, sizeof digest, (const uint8_t *)marked, len + 3, NULL, 0);
    syntax_hex(digest, sizeof digest, hex);
    assert_string_equal(policy_hash_hex(p), hex);
    policy_destroy(&p);

    char *quoted = strstr(text, "\nversion: 1\n");
    assert_non_null(quoted);
    char *with_quotes = malloc(len + 3);
    assert_non_null(with_quotes);
    size_t head = (size_t)(quoted - text) + 10;
    memcpy(with_quotes, text, head);
    memcpy(with_quotes + head, "\"1\"", 3);
    memcpy(with_quotes + head + 3, text + head + 1, len - head);
    p = load_text(f, "quoted.yaml", with_quotes, err, sizeof err);
    if (p == NULL)
        fail_msg("version \"1\": %s", err);
    policy_destroy(&p);
    free(with_quotes);
    free(marked);
    free(text);
}

/* The message of loading PATH, which must fail. */
static void load_refused(const char *path, char *err, size_t errlen)
{
    err[0] = '\0';
    policy_t *p = policy_load(path, err, errlen);
    if (p != NULL)
        fail_msg("%s loaded, but must be refused", path);
}

static void expect_contains(const char *err, const char *want)
{
    if (strstr(err, want) == NULL)
        fail_msg("got      %s\nexpected ... %s", err, want);
}

/* A policy file group or others may write, or one in a folder they may
 * write (not sticky), is refused before it is read: whoever may write
 * there decides who may send what. Symbolic links are followed one at a
 * time and the folder of each is held to the same rule. */
static void test_policy_others_may_write(void **state)
{
    const fixture_t *f = *state;
    char err[1024], path[256], want[1024], sub[256], link[256], link2[256];
    size_t len;
    char *text = read_all(DATA_DIR "/good.yaml", &len);
    snprintf(path, sizeof path, "%s/policy.yaml", f->dir);
    write_file(path, text, len);
    policy_t *p = policy_load(path, err, sizeof err);
    if (p == NULL)
        fail_msg("the policy, mode 0644 in a folder of mode 0700: %s", err);
    policy_destroy(&p);

    static const mode_t file_modes[] = {0666, 0664, 0646, 0620, 0602};
    for (size_t i = 0; i < sizeof file_modes / sizeof file_modes[0]; i++) {
        assert_int_equal(chmod(path, file_modes[i]), 0);
        load_refused(path, err, sizeof err);
        snprintf(want, sizeof want,
                 "%s: group or others may write this policy file (mode %03o): run: chmod go-w %s",
                 path, (unsigned)file_modes[i], path);
        assert_string_equal(err, want);
    }
    assert_int_equal(chmod(path, 0640), 0); /* others may read: fine */
    p = policy_load(path, err, sizeof err);
    assert_non_null(p);
    policy_destroy(&p);

    static const mode_t folder_modes[] = {0777, 0770, 0707, 0730};
    for (size_t i = 0; i < sizeof folder_modes / sizeof folder_modes[0]; i++) {
        assert_int_equal(chmod(f->dir, folder_modes[i]), 0);
        load_refused(path, err, sizeof err);
        snprintf(want, sizeof want,
                 "%s: group or others may write its folder %s (mode %04o), so they can put "
                 "another policy in its place",
                 path, f->dir, (unsigned)folder_modes[i]);
        expect_contains(err, want);
    }
    /* sticky, and the file is this user's: only its owner (or root) can
     * replace it */
    assert_int_equal(chmod(f->dir, 01777), 0);
    p = policy_load(path, err, sizeof err);
    if (p == NULL)
        fail_msg("the policy of this user in a sticky folder: %s", err);
    policy_destroy(&p);
    assert_int_equal(chmod(f->dir, 0700), 0);

    /* A link in a safe folder to a policy in an unsafe one, a link in an
     * unsafe folder to a safe policy, and a chain of links all in safe
     * folders (that loads, key_file relative to the first link's folder). */
    snprintf(sub, sizeof sub, "%s/open", f->dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(chmod(sub, 0777), 0);
    snprintf(link, sizeof link, "%s/open/real.yaml", f->dir);
    write_file(link, text, len);
    snprintf(link2, sizeof link2, "%s/via-open.yaml", f->dir);
    assert_int_equal(symlink("open/real.yaml", link2), 0);
    load_refused(link2, err, sizeof err);
    snprintf(want, sizeof want, "%s: group or others may write its folder %s/open (mode 0777)",
             link2, f->dir);
    expect_contains(err, want);
    snprintf(link, sizeof link, "%s/open/link.yaml", f->dir);
    assert_int_equal(symlink("../policy.yaml", link), 0);
    load_refused(link, err, sizeof err);
    expect_contains(err, "so they can put another policy in its place");
    expect_contains(err, "its folder ");
    assert_int_equal(chmod(sub, 0700), 0);
    p = policy_load(link, err, sizeof err); /* keys/ relative to open/: none there */
    assert_null(p);
    expect_contains(err, "cannot open key file");
    snprintf(link, sizeof link, "%s/second.yaml", f->dir);
    assert_int_equal(symlink("via-first.yaml", link), 0);
    snprintf(link2, sizeof link2, "%s/via-first.yaml", f->dir);
    assert_int_equal(symlink("policy.yaml", link2), 0);
    p = policy_load(link, err, sizeof err);
    if (p == NULL)
        fail_msg("a chain of links in a safe folder: %s", err);
    policy_destroy(&p);
    /* a loop ends */
    snprintf(link, sizeof link, "%s/loop-a.yaml", f->dir);
    snprintf(link2, sizeof link2, "%s/loop-b.yaml", f->dir);
    assert_int_equal(symlink("loop-b.yaml", link), 0);
    assert_int_equal(symlink("loop-a.yaml", link2), 0);
    load_refused(link, err, sizeof err);
    expect_contains(err, "cannot open: Too many levels of symbolic links");
    free(text);
}

/* A policy of another user (not root) is refused, in a sticky folder
 * others may write as in one only its owner may: its owner can rewrite
 * it whatever its mode. Needs root to give the file away. */
static void test_policy_sticky_folder_other_owner(void **state)
{
    const fixture_t *f = *state;
    if (geteuid() != 0)
        skip(); /* only root can make a file of another user */
    char err[1024], path[256], want[1024];
    size_t len;
    char *text = read_all(DATA_DIR "/good.yaml", &len);
    snprintf(path, sizeof path, "%s/policy.yaml", f->dir);
    write_file(path, text, len);
    free(text);
    assert_int_equal(chown(path, 4242, 4242), 0);
    static const mode_t folder_modes[] = {01777, 0700};
    for (size_t i = 0; i < sizeof folder_modes / sizeof folder_modes[0]; i++) {
        assert_int_equal(chmod(f->dir, folder_modes[i]), 0);
        load_refused(path, err, sizeof err);
        snprintf(want, sizeof want,
                 "%s: this policy file belongs to uid 4242 (?), not to root or uid 0 (root, the "
                 "reader), so its owner can change it whatever its mode: run: chown root %s",
                 path, path);
        assert_string_equal(err, want);
    }
    assert_int_equal(chmod(f->dir, 01777), 0);
    assert_int_equal(chown(path, 0, 0), 0); /* root's: fine */
    policy_t *p = policy_load(path, err, sizeof err);
    if (p == NULL)
        fail_msg("root's policy in a sticky folder: %s", err);
    policy_destroy(&p);
    assert_int_equal(chmod(f->dir, 0700), 0);
}

/* The layout of a Kubernetes ConfigMap mount under DIR/k8s (mode 0700):
 * policy.yaml -> ..data/policy.yaml, ..data -> ..2026_11_27 (a folder of
 * mode 0755 holding the policy), and a keys link in each to DIR/keys for
 * its key_file entries. */
static void make_configmap(const fixture_t *f, const char *text, size_t len)
{
    char path[256];
    snprintf(path, sizeof path, "%s/k8s", f->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof path, "%s/k8s/..2026_11_27", f->dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/k8s/..2026_11_27/policy.yaml", f->dir);
    write_file(path, text, len);
    snprintf(path, sizeof path, "%s/k8s/..data", f->dir);
    assert_int_equal(symlink("..2026_11_27", path), 0);
    snprintf(path, sizeof path, "%s/k8s/policy.yaml", f->dir);
    assert_int_equal(symlink("..data/policy.yaml", path), 0);
    snprintf(path, sizeof path, "%s/k8s/keys", f->dir);
    assert_int_equal(symlink("../keys", path), 0);
    snprintf(path, sizeof path, "%s/k8s/..2026_11_27/keys", f->dir);
    assert_int_equal(symlink("../../keys", path), 0);
}

static void expect_loads(const char *path, const char *what)
{
    char err[1024];
    policy_t *p = policy_load(path, err, sizeof err);
    if (p == NULL)
        fail_msg("%s: %s", what, err);
    policy_destroy(&p);
}

/* Every folder on the policy's path counts, from "/" down, not only its
 * own: whoever may write a folder above it, or owns one, can rename the
 * policy's folder away and put one of their own in its place. The tree
 * DIR/outer/inner holds the policy (and a link to DIR/keys); a relative
 * name starts in the working folder, whose folders above count too.
 * Folders of another user need root: those parts are skipped otherwise. */
static void test_policy_path_folders(void **state)
{
    const fixture_t *f = *state;
    char err[1024], outer[128], inner[160], path[256], want[1024];
    size_t len;
    char *text = read_all(DATA_DIR "/good.yaml", &len);
    snprintf(outer, sizeof outer, "%s/outer", f->dir);
    snprintf(inner, sizeof inner, "%s/inner", outer);
    assert_int_equal(mkdir(outer, 0755), 0);
    assert_int_equal(mkdir(inner, 0700), 0);
    snprintf(path, sizeof path, "%s/keys", inner);
    assert_int_equal(symlink("../../keys", path), 0);
    snprintf(path, sizeof path, "%s/policy.yaml", inner);
    write_file(path, text, len);
    free(text);
    expect_loads(path, "the policy below safe folders");
    assert_int_equal(chmod(outer, 01777), 0);
    expect_loads(path, "the policy below a sticky folder");

    static const mode_t open_modes[] = {0777, 0775, 0757, 0730};
    for (size_t i = 0; i < sizeof open_modes / sizeof open_modes[0]; i++) {
        assert_int_equal(chmod(outer, open_modes[i]), 0);
        load_refused(path, err, sizeof err);
        snprintf(want, sizeof want,
                 "%s: group or others may write the folder %s above it (mode %04o), so they can "
                 "put another policy in its place: run: chmod go-w %s, or move the policy to a "
                 "folder only its owner may write",
                 path, outer, (unsigned)open_modes[i], outer);
        assert_string_equal(err, want);
    }

    /* a relative name: the working folder is inner */
    int here = open(".", O_RDONLY | O_DIRECTORY);
    assert_true(here >= 0);
    assert_int_equal(chmod(outer, 0777), 0);
    assert_int_equal(chdir(inner), 0);
    err[0] = '\0';
    policy_t *p = policy_load("policy.yaml", err, sizeof err);
    assert_int_equal(fchdir(here), 0);
    if (p != NULL)
        fail_msg("policy.yaml in a working folder below an open one: loaded");
    snprintf(want, sizeof want, "policy.yaml: group or others may write the folder %s above it",
             outer);
    expect_contains(err, want);
    assert_int_equal(chmod(outer, 0755), 0);
    assert_int_equal(chdir(inner), 0);
    p = policy_load("policy.yaml", err, sizeof err);
    assert_int_equal(fchdir(here), 0);
    close(here);
    if (p == NULL)
        fail_msg("policy.yaml in a working folder below safe ones: %s", err);
    policy_destroy(&p);

    if (geteuid() != 0)
        skip(); /* only root can give a folder to another user */
    /* a folder of uid 1234's above, and the policy's own, in a sticky
     * folder and in one only its owner may write */
    static const mode_t outer_modes[] = {0755, 01777};
    for (size_t i = 0; i < sizeof outer_modes / sizeof outer_modes[0]; i++) {
        assert_int_equal(chmod(outer, outer_modes[i]), 0);
        assert_int_equal(chown(inner, 1234, 1234), 0);
        assert_int_equal(chmod(inner, 0755), 0);
        load_refused(path, err, sizeof err);
        snprintf(want, sizeof want,
                 "%s: its folder %s belongs to uid 1234 (?), not to root or uid 0 (root, the "
                 "reader), so its owner can put another policy in its place: run: chown root %s, "
                 "or move the policy to folders only root or the reader own",
                 path, inner, inner);
        assert_string_equal(err, want);
        assert_int_equal(chown(inner, 0, 0), 0);
        assert_int_equal(chown(outer, 1234, 1234), 0);
        load_refused(path, err, sizeof err);
        snprintf(want, sizeof want, "%s: the folder %s above it belongs to uid 1234 (?)", path,
                 outer);
        expect_contains(err, want);
        assert_int_equal(chown(outer, 0, 0), 0);
        expect_loads(path, "root's folders again");
    }
}

/* A symbolic link in the folder part of the name is followed as one at
 * its end is: its folder is checked (a link there is someone else's way
 * to another policy), and the links followed are bounded. The ConfigMap
 * layout loads in a folder only its owner may write, and sticky with
 * links of the reader's own. */
static void test_policy_links_in_folder_part(void **state)
{
    const fixture_t *f = *state;
    char err[1024], path[256], want[1024], k8s[96], link[160], target[160];
    size_t len;
    char *text = read_all(DATA_DIR "/good.yaml", &len);
    make_configmap(f, text, len);
    free(text);
    snprintf(k8s, sizeof k8s, "%s/k8s", f->dir);
    snprintf(path, sizeof path, "%s/policy.yaml", k8s);
    expect_loads(path, "the ConfigMap layout");
    snprintf(path, sizeof path, "%s/..data/policy.yaml", k8s);
    expect_loads(path, "through ..data");
    assert_int_equal(chmod(k8s, 01777), 0);
    snprintf(path, sizeof path, "%s/policy.yaml", k8s);
    expect_loads(path, "the ConfigMap layout, sticky, the reader's links");

    /* not sticky: whoever may write k8s may point ..data elsewhere */
    assert_int_equal(chmod(k8s, 0777), 0);
    snprintf(path, sizeof path, "%s/..data/policy.yaml", k8s);
    load_refused(path, err, sizeof err);
    snprintf(want, sizeof want,
             "%s: group or others may write the folder %s above it (mode 0777), so they can put "
             "another policy in its place: run: chmod go-w %s, or move the policy to a folder "
             "only its owner may write",
             path, k8s, k8s);
    assert_string_equal(err, want);
    assert_int_equal(chmod(k8s, 0700), 0);

    /* an absolute target, a path ending in '/', a loop, a name in a link
     * that is not a folder */
    snprintf(link, sizeof link, "%s/abs", k8s);
    snprintf(target, sizeof target, "%s/..2026_11_27", k8s);
    assert_int_equal(symlink(target, link), 0);
    snprintf(path, sizeof path, "%s/abs/policy.yaml", k8s);
    expect_loads(path, "a link to an absolute folder");
    snprintf(path, sizeof path, "%s/..data/", k8s);
    load_refused(path, err, sizeof err);
    expect_contains(err, ": not a regular file");
    snprintf(link, sizeof link, "%s/loop", k8s);
    assert_int_equal(symlink("loop", link), 0);
    snprintf(path, sizeof path, "%s/loop/policy.yaml", k8s);
    load_refused(path, err, sizeof err);
    expect_contains(err, "cannot open: Too many levels of symbolic links");
    snprintf(path, sizeof path, "%s/policy.yaml/x", k8s);
    load_refused(path, err, sizeof err);
    expect_contains(err, "cannot open: Not a directory");

    /* 8 links in all (7 folder links, then the ConfigMap's policy.yaml
     * and ..data make 9): at most 8 are followed */
    for (int i = 1; i <= 7; i++) {
        snprintf(link, sizeof link, "%s/hop%d", k8s, i);
        snprintf(target, sizeof target, i == 1 ? "." : "hop%d", i - 1);
        assert_int_equal(symlink(target, link), 0);
    }
    snprintf(path, sizeof path, "%s/hop7/..data/policy.yaml", k8s);
    expect_loads(path, "8 links");
    snprintf(path, sizeof path, "%s/hop7/policy.yaml", k8s);
    load_refused(path, err, sizeof err);
    expect_contains(err, "cannot open: Too many levels of symbolic links");
}

/* In a sticky folder others may write, a link in the folder part of the
 * name that belongs to another user (not root) is refused, as a link at
 * its end is: its owner can point it at a policy of their own. The
 * ConfigMap layout with root's links loads. Needs root to give a link
 * away. */
static void test_policy_sticky_link_in_folder_part(void **state)
{
    const fixture_t *f = *state;
    if (geteuid() != 0)
        skip(); /* only root can make a link of another user */
    char err[1024], path[256], want[1024], k8s[96], evil[128];
    size_t len;
    char *text = read_all(DATA_DIR "/good.yaml", &len);
    make_configmap(f, text, len);
    snprintf(k8s, sizeof k8s, "%s/k8s", f->dir);
    assert_int_equal(chmod(k8s, 01777), 0);
    snprintf(path, sizeof path, "%s/policy.yaml", k8s);
    expect_loads(path, "the ConfigMap layout, sticky, root's links");

    /* uid 1234's own folder and policy, and ..data made its link to them */
    snprintf(evil, sizeof evil, "%s/evil", k8s);
    assert_int_equal(mkdir(evil, 0755), 0);
    snprintf(path, sizeof path, "%s/evil/policy.yaml", k8s);
    write_file(path, text, len);
    free(text);
    assert_int_equal(chown(path, 1234, 1234), 0);
    assert_int_equal(chown(evil, 1234, 1234), 0);
    snprintf(path, sizeof path, "%s/..data", k8s);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(symlink("evil", path), 0);
    assert_int_equal(lchown(path, 1234, 1234), 0);
    snprintf(path, sizeof path, "%s/policy.yaml", k8s);
    load_refused(path, err, sizeof err);
    snprintf(want, sizeof want,
             "%s: group or others may write its folder %s (mode 1777, sticky) and the symbolic "
             "link ..data there belongs to uid 1234, not to uid 0 (the reader) or root, so its "
             "owner can put another policy in its place",
             path, k8s);
    expect_contains(err, want);
    snprintf(path, sizeof path, "%s/..data", k8s);
    assert_int_equal(lchown(path, 0, 0), 0); /* root's link: taken, */
    snprintf(path, sizeof path, "%s/policy.yaml", k8s);
    load_refused(path, err, sizeof err); /* but not the folder of 1234's it leads to */
    snprintf(want, sizeof want,
             "%s: its folder %s belongs to uid 1234 (?), not to root or uid 0 (root, the reader), "
             "so its owner can put another policy in its place: run: chown root %s",
             path, evil, evil);
    expect_contains(err, want);
    assert_int_equal(chown(evil, 0, 0), 0);
    snprintf(path, sizeof path, "%s/evil/policy.yaml", k8s);
    assert_int_equal(chown(path, 0, 0), 0);
    snprintf(path, sizeof path, "%s/policy.yaml", k8s);
    expect_loads(path, "root's ..data to root's folder");

    /* the last link uid 1234's */
    assert_int_equal(lchown(path, 1234, 1234), 0);
    load_refused(path, err, sizeof err);
    snprintf(want, sizeof want,
             "%s: group or others may write its folder %s (mode 1777, sticky) "
             "and the symbolic link policy.yaml there belongs to uid 1234",
             path, k8s);
    expect_contains(err, want);
    assert_int_equal(chmod(k8s, 0700), 0);
}

/* ------------------------------------------------------------------ 10,000 rules */

#define BIG_PARTNERS 50
#define BIG_RULES 10000
#define BIG_MUNICIPALITIES 20

typedef struct big_rule {
    int from, to[2], n_to;
    unsigned from_roles, to_roles;
    int theme; /* -1 = "*" */
    int kind;  /* -1 = "*" */
    int area;  /* municipality number, -1 = "*" */
    int case_ref;
} big_rule_t;

static uint64_t big_rng_state = 0x9e3779b97f4a7c15u;

static uint32_t big_rand(uint32_t n)
{
    big_rng_state ^= big_rng_state << 13;
    big_rng_state ^= big_rng_state >> 7;
    big_rng_state ^= big_rng_state << 17;
    return (uint32_t)(big_rng_state % n);
}

static size_t n_vocabulary(void)
{
    size_t n = 0;
    while (syntax_themes[n])
        n++;
    return n;
}

static void big_make_rules(big_rule_t *rules)
{
    size_t themes = n_vocabulary();
    for (int i = 0; i < BIG_RULES; i++) {
        big_rule_t *r = &rules[i];
        r->from = (int)big_rand(BIG_PARTNERS);
        r->to[0] = (int)big_rand(BIG_PARTNERS);
        r->to[1] = (int)big_rand(BIG_PARTNERS);
        r->n_to = r->to[1] == r->to[0] ? 1 : 2;
        r->from_roles = big_rand(4) == 0 ? ROLE_CASEWORKER : ROLE_SYSTEM | ROLE_CASEWORKER;
        r->to_roles = big_rand(5) == 0 ? ROLE_CASEWORKER : ROLE_SYSTEM | ROLE_CASEWORKER;
        r->theme = big_rand(50) == 0 ? -1 : (int)big_rand((uint32_t)themes);
        r->kind = big_rand(3) == 0 ? (int)big_rand(3) : -1;
        r->area = big_rand(20) == 0 ? -1 : (int)big_rand(BIG_MUNICIPALITIES);
        r->case_ref = big_rand(10) == 0;
    }
}

static const char *roles_yaml(unsigned roles)
{
    return roles == ROLE_CASEWORKER ? "[caseworker]" : "[system, caseworker]";
}

/* Even partners have a system and a caseworker principal, odd ones only a
 * system principal (so to_roles [caseworker] reaches nobody there). */
static char *big_policy_text(const big_rule_t *rules)
{
    size_t cap = 8u << 20, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
#define EMIT(...) (len += (size_t)snprintf(text + len, cap - len, __VA_ARGS__))
    EMIT("version: 1\npartners:\n");
    for (int k = 0; k < BIG_PARTNERS; k++)
        EMIT("  - id: p%02d\n", k);
    EMIT("principals:\n");
    for (int k = 0; k < BIG_PARTNERS; k++) {
        for (int role = 0; role < (k % 2 == 0 ? 2 : 1); role++) {
            uint8_t pk[32], sk[64];
            char z85[41];
            crypto_sign_keypair(pk, sk);
            sodium_memzero(sk, sizeof sk);
            keys_public_z85(pk, z85);
            EMIT("  - {id: p%02d/%s, role: %s, key: \"%s\"}\n", k, role ? "cw" : "sys",
                 role ? "caseworker" : "system", z85);
        }
    }
    EMIT("rules:\n");
    for (int i = 0; i < BIG_RULES; i++) {
        const big_rule_t *r = &rules[i];
        EMIT("  - {id: r%d, from: [p%02d], from_roles: %s, to: [p%02d", i, r->from,
             roles_yaml(r->from_roles), r->to[0]);
        if (r->n_to == 2)
            EMIT(", p%02d", r->to[1]);
        EMIT("], to_roles: %s, ", roles_yaml(r->to_roles));
        if (r->kind >= 0)
            EMIT("kinds: [k%d], ", r->kind);
        if (r->theme >= 0)
            EMIT("themes: [%s], ", syntax_themes[r->theme]);
        else
            EMIT("themes: [\"*\"], ");
        if (r->area >= 0)
            EMIT("areas: [GM%04d], ", 1000 + r->area);
        else
            EMIT("areas: [\"*\"], ");
        EMIT("purpose: p, legal_basis: l, fields: [area], retention: 1d, "
             "require_case_ref: %s}\n",
             r->case_ref ? "true" : "false");
    }
#undef EMIT
    assert_true(len < cap);
    return text;
}

/* The naive reference: scan every rule in file order. */
static void big_reference(const big_rule_t *rules, int sender, unsigned role, int kind, int theme,
                          int area, int case_ref, int first_rule[BIG_PARTNERS])
{
    for (int k = 0; k < BIG_PARTNERS; k++)
        first_rule[k] = -1;
    for (int i = 0; i < BIG_RULES; i++) {
        const big_rule_t *r = &rules[i];
        if (r->from != sender || !(r->from_roles & role) || (r->kind >= 0 && r->kind != kind) ||
            (r->theme >= 0 && r->theme != theme) || (r->area >= 0 && r->area != area) ||
            (r->case_ref && !case_ref))
            continue;
        for (int t = 0; t < r->n_to; t++) {
            int to = r->to[t];
            unsigned present = to % 2 == 0 ? ROLE_SYSTEM | ROLE_CASEWORKER : ROLE_SYSTEM;
            if ((r->to_roles & present) && first_rule[to] < 0)
                first_rule[to] = i;
        }
    }
}

static void test_ten_thousand_rules(void **state)
{
    const fixture_t *f = *state;
    big_rule_t *rules = calloc(BIG_RULES, sizeof *rules);
    assert_non_null(rules);
    big_make_rules(rules);
    char *text = big_policy_text(rules);
    char err[512] = "";
    policy_t *p = load_text(f, "big.yaml", text, err, sizeof err);
    free(text);
    if (p == NULL)
        fail_msg("%s", err);
    assert_int_equal(policy_rule_count(p), BIG_RULES);
    assert_int_equal(policy_principal_count(p), BIG_PARTNERS + BIG_PARTNERS / 2);
    /* version, "partners:", partners, "principals:", principals, "rules:", r0 .. r1234 */
    assert_int_equal(policy_rule_at(p, 1234)->line,
                     1 + 1 + BIG_PARTNERS + 1 + (BIG_PARTNERS + BIG_PARTNERS / 2) + 1 + 1234 + 1);
    size_t themes = n_vocabulary();
    int allowed = 0, denied = 0;
    for (int trial = 0; trial < 3000; trial++) {
        int sender = (int)big_rand(BIG_PARTNERS);
        int as_cw = sender % 2 == 0 && big_rand(2);
        int kind = (int)big_rand(4), theme = (int)big_rand((uint32_t)themes);
        int area = (int)big_rand(BIG_MUNICIPALITIES), case_ref = (int)big_rand(2);
        char sender_id[32], kind_s[16], area_s[16];
        snprintf(sender_id, sizeof sender_id, "p%02d/%s", sender, as_cw ? "cw" : "sys");
        snprintf(kind_s, sizeof kind_s, "k%d", kind);
        /* half the signals name a district, which lies within its municipality */
        if (big_rand(2))
            snprintf(area_s, sizeof area_s, "WK%04d%02d", 1000 + area, (int)big_rand(100));
        else
            snprintf(area_s, sizeof area_s, "GM%04d", 1000 + area);
        const policy_principal_t *principal = policy_principal_by_id(p, sender_id);
        assert_non_null(principal);
        policy_signal_facts_t facts = {.kind = kind_s,
                                       .theme = syntax_themes[theme],
                                       .area = area_s,
                                       .has_case_ref = case_ref};
        policy_decision_t d;
        verdict_t v = policy_decide_signal(p, principal, &facts, &d);
        int first_rule[BIG_PARTNERS];
        big_reference(rules, sender, as_cw ? ROLE_CASEWORKER : ROLE_SYSTEM, kind, theme, area,
                      case_ref, first_rule);
        size_t expected = 0;
        for (int k = 0; k < BIG_PARTNERS; k++)
            expected += first_rule[k] >= 0;
        assert_int_equal(v, expected ? VERDICT_ALLOW : VERDICT_DENY);
        assert_int_equal(d.n_grants, expected);
        for (size_t g = 0; g < d.n_grants; g++) {
            int k = (int)d.grants[g].partner->index;
            char rule_id[16];
            snprintf(rule_id, sizeof rule_id, "r%d", first_rule[k]);
            if (first_rule[k] < 0 || strcmp(d.grants[g].rule->id, rule_id) != 0)
                fail_msg("trial %d: %s gets %s, reference says %s", trial, d.grants[g].partner->id,
                         d.grants[g].rule->id, rule_id);
        }
        if (v == VERDICT_ALLOW)
            allowed++;
        else
            denied++;
    }
    /* the table must exercise both outcomes */
    assert_true(allowed > 100);
    assert_true(denied > 100);
    free(rules);
    policy_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_files_all_listed),
        cmocka_unit_test_setup_teardown(test_bad_policies, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_good_policy, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_principal_lookups, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_recipients, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_decisions, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_decision_bad_arguments, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_rule_hash, fixture_setup, fixture_teardown),
        cmocka_unit_test(test_load_buffer),
        cmocka_unit_test_setup_teardown(test_load_file_errors, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_load_pipe_is_not_a_file, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_utf8_bom_and_quoted_version, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_policy_others_may_write, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_policy_sticky_folder_other_owner, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_policy_path_folders, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_policy_links_in_folder_part, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_policy_sticky_link_in_folder_part, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_ten_thousand_rules, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_long_path_error_keeps_line_and_reason, fixture_setup,
                                        fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
