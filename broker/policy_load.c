/*
 * policy_load.c — reads and validates the access policy (policy.h,
 * docs/POLICY.md); policy_index.c indexes it, policy_warn.c finds what in
 * it can never take effect, policy.c answers questions about the result.
 *
 * Trusts nothing in the policy text: it is size-capped and read once, walked
 * by libyaml to map entries to lines (linemap.c: anchors, aliases, deep
 * nesting, duplicate keys and control characters refused), loaded by
 * libcyaml against a strict schema, then checked field by field. Every load
 * error is "FILE:LINE: message"; the daemon may die on out-of-memory.
 */
#include "policy_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cyaml/cyaml.h>
#include <sodium.h>

#include "keys.h"
#include "linemap.h"
#include "syntax.h"
#include "yamlguard.h"

#define ROLES_DEFAULT (ROLE_SYSTEM | ROLE_CASEWORKER)

/* The loader's "none" is also linemap_where's "stop descending here". */
_Static_assert(NO_INDEX == LINEMAP_NO_INDEX, "one value for no index");

/* ------------------------------------------------------------------ schema */

/* The document as libcyaml loads it. Sequence counts follow the
 * `<member>_count` naming that CYAML_FIELD_SEQUENCE expects. */
typedef struct doc_partner {
    char *id;
    char *name;
} doc_partner_t;

typedef struct doc_principal {
    char *id;
    char *role;
    char *key;
    char *key_file;
} doc_principal_t;

typedef struct doc_rule {
    char *id;
    char **from;
    unsigned from_count;
    char **from_roles;
    unsigned from_roles_count;
    char **to;
    unsigned to_count;
    char **to_roles;
    unsigned to_roles_count;
    char **kinds;
    unsigned kinds_count;
    char **themes;
    unsigned themes_count;
    char **areas;
    unsigned areas_count;
    char *purpose;
    char *legal_basis;
    char **fields;
    unsigned fields_count;
    char *retention;
    char *require_case_ref; /* "true" or "false": libcyaml's bool takes any word for true */
} doc_rule_t;

typedef struct doc_policy {
    char *version; /* as written: a number type would take 1.5, 1e0 or 1_0 for 1 */
    doc_partner_t *partners;
    unsigned partners_count;
    doc_principal_t *principals;
    unsigned principals_count;
    doc_rule_t *rules;
    unsigned rules_count;
    doc_case_type_t *case_types;
    unsigned case_types_count;
} doc_policy_t;

#define OPT CYAML_FLAG_OPTIONAL
static const cyaml_schema_value_t schema_token = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 1, SCHAKEL_MAX_ID_LEN)};
static const cyaml_schema_value_t schema_area = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 1, 16)};

static const cyaml_schema_field_t schema_partner_fields[] = {
    CYAML_FIELD_STRING_PTR("id", CYAML_FLAG_POINTER, doc_partner_t, id, 1, SCHAKEL_MAX_ID_LEN),
    CYAML_FIELD_STRING_PTR("name", CYAML_FLAG_POINTER | OPT, doc_partner_t, name, 1,
                           SCHAKEL_MAX_POLICY_TEXT_LEN),
    CYAML_FIELD_END};

static const cyaml_schema_field_t schema_principal_fields[] = {
    CYAML_FIELD_STRING_PTR("id", CYAML_FLAG_POINTER, doc_principal_t, id, 1,
                           SCHAKEL_MAX_PRINCIPAL_LEN),
    CYAML_FIELD_STRING_PTR("role", CYAML_FLAG_POINTER, doc_principal_t, role, 1, 32),
    CYAML_FIELD_STRING_PTR("key", CYAML_FLAG_POINTER | OPT, doc_principal_t, key, 1, 64),
    CYAML_FIELD_STRING_PTR("key_file", CYAML_FLAG_POINTER | OPT, doc_principal_t, key_file, 1,
                           4096),
    CYAML_FIELD_END};

static const cyaml_schema_field_t schema_rule_fields[] = {
    CYAML_FIELD_STRING_PTR("id", CYAML_FLAG_POINTER, doc_rule_t, id, 1, SCHAKEL_MAX_ID_LEN),
    CYAML_FIELD_SEQUENCE("from", CYAML_FLAG_POINTER, doc_rule_t, from, &schema_token, 1,
                         SCHAKEL_MAX_PARTNERS),
    CYAML_FIELD_SEQUENCE("from_roles", CYAML_FLAG_POINTER | OPT, doc_rule_t, from_roles,
                         &schema_token, 1, 3),
    CYAML_FIELD_SEQUENCE("to", CYAML_FLAG_POINTER, doc_rule_t, to, &schema_token, 1,
                         SCHAKEL_MAX_PARTNERS),
    CYAML_FIELD_SEQUENCE("to_roles", CYAML_FLAG_POINTER | OPT, doc_rule_t, to_roles, &schema_token,
                         1, 3),
    CYAML_FIELD_SEQUENCE("kinds", CYAML_FLAG_POINTER | OPT, doc_rule_t, kinds, &schema_token, 1,
                         SCHAKEL_MAX_RULE_LIST),
    CYAML_FIELD_SEQUENCE("themes", CYAML_FLAG_POINTER, doc_rule_t, themes, &schema_token, 1, 64),
    CYAML_FIELD_SEQUENCE("areas", CYAML_FLAG_POINTER, doc_rule_t, areas, &schema_area, 1,
                         SCHAKEL_MAX_RULE_LIST),
    CYAML_FIELD_STRING_PTR("purpose", CYAML_FLAG_POINTER, doc_rule_t, purpose, 1,
                           SCHAKEL_MAX_POLICY_TEXT_LEN),
    CYAML_FIELD_STRING_PTR("legal_basis", CYAML_FLAG_POINTER, doc_rule_t, legal_basis, 1,
                           SCHAKEL_MAX_POLICY_TEXT_LEN),
    CYAML_FIELD_SEQUENCE("fields", CYAML_FLAG_POINTER, doc_rule_t, fields, &schema_token, 0, 16),
    CYAML_FIELD_STRING_PTR("retention", CYAML_FLAG_POINTER, doc_rule_t, retention, 1, 16),
    CYAML_FIELD_STRING_PTR("require_case_ref", CYAML_FLAG_POINTER | OPT, doc_rule_t,
                           require_case_ref, 1, 64),
    CYAML_FIELD_END};

static const cyaml_schema_value_t schema_partner = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, doc_partner_t, schema_partner_fields)};
static const cyaml_schema_value_t schema_principal = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, doc_principal_t, schema_principal_fields)};
static const cyaml_schema_value_t schema_rule = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, doc_rule_t, schema_rule_fields)};

static const cyaml_schema_field_t schema_policy_fields[] = {
    CYAML_FIELD_STRING_PTR("version", CYAML_FLAG_POINTER, doc_policy_t, version, 1, 32),
    CYAML_FIELD_SEQUENCE("partners", CYAML_FLAG_POINTER, doc_policy_t, partners, &schema_partner, 1,
                         SCHAKEL_MAX_PARTNERS),
    CYAML_FIELD_SEQUENCE("principals", CYAML_FLAG_POINTER, doc_policy_t, principals,
                         &schema_principal, 0, SCHAKEL_MAX_PRINCIPALS),
    CYAML_FIELD_SEQUENCE("rules", CYAML_FLAG_POINTER, doc_policy_t, rules, &schema_rule, 0,
                         SCHAKEL_MAX_RULES),
    CYAML_FIELD_SEQUENCE("case_types", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, doc_policy_t,
                         case_types, &policy_case_type_schema, 0, SCHAKEL_MAX_CASE_TYPES),
    CYAML_FIELD_END};

static const cyaml_schema_value_t schema_policy = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, doc_policy_t, schema_policy_fields)};
#undef OPT

/* ------------------------------------------------------------------ load context */

typedef struct load_ctx {
    yamlguard_report_t report; /* "NAME:LINE: message" into the caller's err */
    const char *base_dir;
    linemap_t map;
} load_ctx_t;

static int load_fail(load_ctx_t *ctx, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes "NAME:LINE: message" (LINE 0: "NAME: message"); returns -1. */
static int load_fail(load_ctx_t *ctx, unsigned line, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    yamlguard_vfail(&ctx->report, line, fmt, args);
    va_end(args);
    return -1;
}

/* ------------------------------------------------------------------ cyaml */

static int doc_load(load_ctx_t *ctx, const uint8_t *buf, size_t len, doc_policy_t **out)
{
    yamlguard_capture_t cap;
    cyaml_data_t *data = NULL;
    cyaml_err_t rc = yamlguard_load(buf, len, &schema_policy, &data, &cap);
    if (rc == CYAML_OK && data == NULL)
        return load_fail(ctx, 1, "the policy is empty");
    if (rc == CYAML_OK) {
        *out = data;
        return 0;
    }
    unsigned line = cap.line ? cap.line : 1;
    const char *key = yamlguard_unknown_key(rc, &cap);
    if (key != NULL)
        return load_fail(ctx, linemap_find_key(&ctx->map, key, line),
                         "unknown key \"%s\" (see docs/POLICY.md for the keys allowed here)", key);
    if (rc == CYAML_ERR_MAPPING_FIELD_MISSING &&
        strncmp(cap.message, "Missing required mapping field: ", 32) == 0)
        return load_fail(ctx, linemap_enclosing_mapping(&ctx->map, cap.field, line),
                         "missing key \"%s\"", cap.message + 32);
    char plain[256];
    yamlguard_explain(cap.message[0] ? cap.message : cyaml_strerror(rc), plain, sizeof plain);
    const char *field = cap.field[0] != '\0' ? cap.field : linemap_key_at(&ctx->map, line);
    if (field != NULL)
        return load_fail(ctx, line, "%s: %s", field, plain);
    return load_fail(ctx, line, "%s", plain);
}

static void doc_free(doc_policy_t *doc)
{
    yamlguard_free(&schema_policy, doc);
}

/* ------------------------------------------------------------------ vocabulary */

static const struct {
    const char *name;
    uint32_t field;
} field_names[] = {
    {"area", FIELD_AREA},
    {"address", FIELD_ADDRESS},
    {"subject", FIELD_SUBJECT},
    {"grounds", FIELD_GROUNDS},
    {"case_ref", FIELD_CASE_REF},
    {"severity", FIELD_SEVERITY},
    {"observed_at", FIELD_OBSERVED_AT},
    {"summary", FIELD_SUMMARY},
    {"source_ref", FIELD_SOURCE_REF},
    {"recipients", FIELD_RECIPIENTS},
};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

const char *policy_field_name(uint32_t field)
{
    for (size_t k = 0; k < COUNT_OF(field_names); k++)
        if (field_names[k].field == field)
            return field_names[k].name;
    return NULL;
}

static size_t theme_count(void)
{
    size_t n = 0;
    while (syntax_themes[n] != NULL)
        n++;
    return n;
}

/* ------------------------------------------------------------------ sorting */

static int cmp_partner_id(const void *a, const void *b)
{
    const policy_partner_t *const *pa = a, *const *pb = b;
    return strcmp((*pa)->id, (*pb)->id);
}

static int cmp_principal_id(const void *a, const void *b)
{
    const policy_principal_t *const *pa = a, *const *pb = b;
    int c = strcmp((*pa)->id, (*pb)->id);
    return c ? c : (*pa < *pb ? -1 : *pa > *pb);
}

static int cmp_principal_curve(const void *a, const void *b)
{
    const policy_principal_t *const *pa = a, *const *pb = b;
    int c = memcmp((*pa)->curve_pk, (*pb)->curve_pk, 32);
    return c ? c : (*pa < *pb ? -1 : *pa > *pb);
}

static int cmp_rule_id(const void *a, const void *b)
{
    const rule_entry_t *const *ra = a, *const *rb = b;
    int c = strcmp((*ra)->pub.id, (*rb)->pub.id);
    return c ? c : (*ra < *rb ? -1 : *ra > *rb);
}

/* Items are pointers into one string array; ties break by position. */
static int cmp_string_slot(const void *a, const void *b)
{
    char *const *const *sa = a, *const *const *sb = b;
    int c = strcmp(**sa, **sb);
    return c ? c : (*sa < *sb ? -1 : *sa > *sb);
}

char *const **policy_sorted_slots(char *const *items, size_t n)
{
    char *const **slots = policy_xcalloc(n, sizeof *slots);
    for (size_t i = 0; i < n; i++)
        slots[i] = &items[i];
    qsort(slots, n, sizeof *slots, cmp_string_slot);
    return slots;
}

/* Position of the later copy of the first duplicate (in sorted order) among
 * items, or NO_INDEX. O(n log n). */
static size_t list_duplicate(char *const *items, size_t n, size_t *first)
{
    if (n < 2)
        return NO_INDEX;
    char *const **slots = policy_sorted_slots(items, n);
    size_t dup = NO_INDEX;
    for (size_t i = 1; i < n && dup == NO_INDEX; i++) {
        if (strcmp(*slots[i - 1], *slots[i]) == 0) {
            *first = (size_t)(slots[i - 1] - items);
            dup = (size_t)(slots[i] - items);
        }
    }
    free(slots);
    return dup;
}

void *policy_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (p == NULL)
        abort(); /* the daemon may die on out-of-memory (STYLE.md) */
    return p;
}

/* ------------------------------------------------------------------ partners */

static int partners_build(load_ctx_t *ctx, policy_t *p)
{
    const doc_policy_t *doc = p->doc;
    p->n_partners = doc->partners_count;
    p->partners = policy_xcalloc(p->n_partners, sizeof *p->partners);
    p->partners_by_id = policy_xcalloc(p->n_partners, sizeof *p->partners_by_id);
    for (size_t i = 0; i < p->n_partners; i++) {
        const doc_partner_t *d = &doc->partners[i];
        if (!syntax_is_id_token(d->id))
            return load_fail(ctx, linemap_where(&ctx->map, "partners", i, "id", NO_INDEX),
                             "partner id \"%.64s\" is not an id token "
                             "([a-z0-9][a-z0-9._-]{0,63})",
                             d->id);
        p->partners[i] =
            (policy_partner_t){.id = d->id, .name = d->name ? d->name : d->id, .index = i};
        p->partners_by_id[i] = &p->partners[i];
    }
    qsort(p->partners_by_id, p->n_partners, sizeof *p->partners_by_id, cmp_partner_id);
    for (size_t i = 1; i < p->n_partners; i++) {
        const policy_partner_t *a = p->partners_by_id[i - 1], *b = p->partners_by_id[i];
        if (strcmp(a->id, b->id) == 0) {
            const policy_partner_t *later = a->index > b->index ? a : b;
            const policy_partner_t *earlier = a->index > b->index ? b : a;
            return load_fail(ctx,
                             linemap_where(&ctx->map, "partners", later->index, "id", NO_INDEX),
                             "duplicate partner id \"%s\" (first at line %u)", later->id,
                             linemap_where(&ctx->map, "partners", earlier->index, "id", NO_INDEX));
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ principals */

static int principal_key(load_ctx_t *ctx, size_t i, const doc_principal_t *d, uint8_t pk[32])
{
    if ((d->key == NULL) == (d->key_file == NULL))
        return load_fail(ctx, linemap_where(&ctx->map, "principals", i, NULL, NO_INDEX),
                         "principal \"%s\" needs exactly one of key and key_file", d->id);
    if (d->key != NULL) {
        if (keys_parse_public_z85(d->key, pk) != 0)
            return load_fail(ctx, linemap_where(&ctx->map, "principals", i, "key", NO_INDEX),
                             "key of principal \"%s\" is not a Z85 Ed25519 public key "
                             "(40 characters)",
                             d->id);
        return 0;
    }
    unsigned line = linemap_where(&ctx->map, "principals", i, "key_file", NO_INDEX);
    if (ctx->base_dir == NULL)
        return load_fail(ctx, line, "key_file is not allowed in a policy loaded from memory");
    char path[4096 + 512], keyerr[512];
    int n = d->key_file[0] == '/'
                ? snprintf(path, sizeof path, "%s", d->key_file)
                : snprintf(path, sizeof path, "%s/%s", ctx->base_dir, d->key_file);
    if (n < 0 || (size_t)n >= sizeof path)
        return load_fail(ctx, line, "key_file path too long");
    if (keys_load_public(path, pk, keyerr, sizeof keyerr) != 0)
        return load_fail(ctx, line, "principal \"%s\": %s", d->id, keyerr);
    return 0;
}

static int principal_build(load_ctx_t *ctx, policy_t *p, size_t i)
{
    const doc_principal_t *d = &p->doc->principals[i];
    policy_principal_t *out = &p->principals[i];
    unsigned id_line = linemap_where(&ctx->map, "principals", i, "id", NO_INDEX);
    if (!syntax_is_principal_id(d->id))
        return load_fail(ctx, id_line,
                         "principal id \"%.130s\" is not \"partner/name\" of two id tokens", d->id);
    char partner_id[SCHAKEL_MAX_ID_LEN + 1];
    size_t plen = (size_t)(strchr(d->id, '/') - d->id);
    if (plen > SCHAKEL_MAX_ID_LEN)
        return load_fail(ctx, id_line, "partner part of \"%s\" is too long", d->id);
    memcpy(partner_id, d->id, plen);
    partner_id[plen] = '\0';
    out->id = d->id;
    out->partner = policy_partner_by_id(p, partner_id);
    if (out->partner == NULL)
        return load_fail(ctx, id_line, "principal \"%s\" belongs to unknown partner \"%s\"", d->id,
                         partner_id);
    out->role = policy_role_parse(d->role);
    if (out->role == ROLE_NONE)
        return load_fail(ctx, linemap_where(&ctx->map, "principals", i, "role", NO_INDEX),
                         "unknown role \"%.32s\" (system, caseworker or operator)", d->role);
    if (principal_key(ctx, i, d, out->sign_pk) != 0)
        return -1;
    if (keys_sign_pk_to_curve(out->sign_pk, out->curve_pk) != 0)
        return load_fail(ctx, linemap_where(&ctx->map, "principals", i, NULL, NO_INDEX),
                         "key of principal \"%s\" is not a valid Ed25519 public key", d->id);
    p->partner_roles[out->partner->index] |= (unsigned)out->role;
    return 0;
}

static int principals_unique(load_ctx_t *ctx, policy_t *p)
{
    const policy_principal_t **sorted[2] = {p->principals_by_id, p->principals_by_curve};
    for (int k = 0; k < 2; k++) {
        for (size_t i = 1; i < p->n_principals; i++) {
            const policy_principal_t *a = sorted[k][i - 1], *b = sorted[k][i];
            bool same =
                k == 0 ? strcmp(a->id, b->id) == 0 : memcmp(a->curve_pk, b->curve_pk, 32) == 0;
            if (!same)
                continue;
            size_t first = (size_t)(a - p->principals), later = (size_t)(b - p->principals);
            return load_fail(
                ctx, linemap_where(&ctx->map, "principals", later, k ? NULL : "id", NO_INDEX),
                k == 0 ? "duplicate principal id \"%s\" (first at line %u)"
                       : "principal \"%s\" has the same key as the one at line %u",
                b->id, linemap_where(&ctx->map, "principals", first, k ? NULL : "id", NO_INDEX));
        }
    }
    return 0;
}

static int principals_build(load_ctx_t *ctx, policy_t *p)
{
    size_t n = p->n_principals = p->doc->principals_count;
    p->principals = policy_xcalloc(n, sizeof *p->principals);
    p->principals_by_id = policy_xcalloc(n, sizeof *p->principals_by_id);
    p->principals_by_curve = policy_xcalloc(n, sizeof *p->principals_by_curve);
    for (size_t i = 0; i < n; i++) {
        if (principal_build(ctx, p, i) != 0)
            return -1;
        p->principals_by_id[i] = p->principals_by_curve[i] = &p->principals[i];
    }
    /* qsort is not stable, so ties compare by address: the earlier entry
     * sorts first and the later one is the duplicate reported. */
    qsort(p->principals_by_id, n, sizeof *p->principals_by_id, cmp_principal_id);
    qsort(p->principals_by_curve, n, sizeof *p->principals_by_curve, cmp_principal_curve);
    if (principals_unique(ctx, p) != 0)
        return -1;
    /* Group members per partner, file order within a partner. */
    p->partner_members_start = policy_xcalloc(p->n_partners + 1, sizeof *p->partner_members_start);
    p->partner_members = policy_xcalloc(n, sizeof *p->partner_members);
    for (size_t i = 0; i < n; i++) {
        /* The broker delivers to at most this many principals of a partner:
         * refuse more here rather than skip some at delivery. */
        if (++p->partner_members_start[p->principals[i].partner->index + 1] >
            SCHAKEL_MAX_PRINCIPALS_PER_PARTNER)
            return load_fail(ctx, linemap_where(&ctx->map, "principals", i, "id", NO_INDEX),
                             "partner \"%s\" has more than %u principals",
                             p->principals[i].partner->id, SCHAKEL_MAX_PRINCIPALS_PER_PARTNER);
    }
    for (size_t k = 0; k < p->n_partners; k++)
        p->partner_members_start[k + 1] += p->partner_members_start[k];
    uint32_t *fill = policy_xcalloc(p->n_partners, sizeof *fill);
    for (size_t i = 0; i < n; i++) {
        size_t k = p->principals[i].partner->index;
        p->partner_members[p->partner_members_start[k] + fill[k]++] = (uint32_t)i;
    }
    free(fill);
    return 0;
}

/* ------------------------------------------------------------------ rules */

/* Retention "N" + unit: s(econds), m(inutes), h(ours), d(ays), y(ears of
 * 365 days). Seconds exist for short-lived data and for tests of expiry.
 * Returns 0, -1 for bad syntax, -2 for a value over the cap. */
static int retention_parse(const char *text, int64_t *seconds)
{
    size_t len = strlen(text);
    if (len < 2 || text[0] < '1' || text[0] > '9')
        return -1;
    int64_t unit;
    switch (text[len - 1]) {
    case 's':
        unit = 1;
        break;
    case 'm':
        unit = 60;
        break;
    case 'h':
        unit = 3600;
        break;
    case 'd':
        unit = 86400;
        break;
    case 'y':
        unit = 365LL * 86400;
        break;
    default:
        return -1;
    }
    int64_t n = 0;
    bool over = false;
    for (size_t i = 0; i + 1 < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return -1;
        /* past the cap already: keep checking the syntax, stop counting */
        if (!over && (n = n * 10 + (text[i] - '0')) > SCHAKEL_MAX_RETENTION_S / unit)
            over = true;
    }
    if (over)
        return -2;
    *seconds = n * unit;
    return 0;
}

int policy_retention_parse(const char *text, int64_t *seconds)
{
    return retention_parse(text, seconds);
}

typedef struct rule_ctx {
    load_ctx_t *load;
    policy_t *policy;
    size_t index;
    const doc_rule_t *doc;
    rule_entry_t *rule;
} rule_ctx_t;

static unsigned rule_line(const rule_ctx_t *rc, const char *key, size_t item)
{
    return linemap_where(&rc->load->map, "rules", rc->index, key, item);
}

static int rule_partners(rule_ctx_t *rc, const char *key, char *const *ids, size_t n,
                         uint64_t *mask)
{
    *mask = 0;
    for (size_t i = 0; i < n; i++) {
        const policy_partner_t *partner = policy_partner_by_id(rc->policy, ids[i]);
        if (partner == NULL)
            return load_fail(rc->load, rule_line(rc, key, i),
                             "rule \"%s\": %s names unknown partner \"%s\"", rc->doc->id, key,
                             ids[i]);
        uint64_t bit = UINT64_C(1) << partner->index;
        if (*mask & bit)
            return load_fail(rc->load, rule_line(rc, key, i),
                             "rule \"%s\": partner \"%s\" appears twice in %s", rc->doc->id, ids[i],
                             key);
        *mask |= bit;
    }
    return 0;
}

static int rule_roles(rule_ctx_t *rc, const char *key, char *const *names, size_t n, unsigned *mask)
{
    *mask = n ? 0 : ROLES_DEFAULT;
    for (size_t i = 0; i < n; i++) {
        role_t role = policy_role_parse(names[i]);
        const char *problem = NULL;
        if (role == ROLE_NONE)
            problem = "is not a role (system or caseworker)";
        else if (role == ROLE_OPERATOR)
            problem = "cannot be used: operators never send or receive signals";
        else if (*mask & (unsigned)role)
            problem = "appears twice";
        if (problem)
            return load_fail(rc->load, rule_line(rc, key, i), "rule \"%s\": %s: \"%s\" %s",
                             rc->doc->id, key, names[i], problem);
        *mask |= (unsigned)role;
    }
    return 0;
}

/* kinds, themes and areas: "*" alone, or entries that `valid` accepts. */
static int rule_pattern_list(rule_ctx_t *rc, const char *key, char *const *items, size_t n,
                             int (*valid)(const char *), const char *what, bool *any)
{
    *any = false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(items[i], "*") == 0) {
            if (n != 1)
                return load_fail(rc->load, rule_line(rc, key, i),
                                 "rule \"%s\": \"*\" in %s must stand alone", rc->doc->id, key);
            *any = true;
        } else if (!valid(items[i])) {
            return load_fail(rc->load, rule_line(rc, key, i),
                             "rule \"%s\": \"%.64s\" in %s is not %s", rc->doc->id, items[i], key,
                             what);
        }
    }
    size_t first = 0, dup = list_duplicate(items, n, &first);
    if (dup != NO_INDEX)
        return load_fail(rc->load, rule_line(rc, key, dup),
                         "rule \"%s\": \"%s\" appears twice in %s (first at line %u)", rc->doc->id,
                         items[dup], key, rule_line(rc, key, first));
    return 0;
}

static int rule_fields(rule_ctx_t *rc)
{
    const doc_rule_t *d = rc->doc;
    uint32_t mask = 0;
    for (size_t i = 0; i < d->fields_count; i++) {
        uint32_t field = 0;
        for (size_t k = 0; k < COUNT_OF(field_names); k++)
            if (strcmp(d->fields[i], field_names[k].name) == 0)
                field = field_names[k].field;
        if (field == 0)
            return load_fail(rc->load, rule_line(rc, "fields", i),
                             "rule \"%s\": unknown field \"%s\" (sender, kind and theme always "
                             "pass; see docs/POLICY.md for the others)",
                             d->id, d->fields[i]);
        if (mask & field)
            return load_fail(rc->load, rule_line(rc, "fields", i),
                             "rule \"%s\": field \"%s\" appears twice", d->id, d->fields[i]);
        mask |= field;
    }
    rc->rule->pub.fields = mask;
    return 0;
}

static int rule_texts(rule_ctx_t *rc)
{
    const doc_rule_t *d = rc->doc;
    const char *keys[2] = {"purpose", "legal_basis"};
    const char *values[2] = {d->purpose, d->legal_basis};
    for (int k = 0; k < 2; k++) {
        if (strspn(values[k], " \t\n") == strlen(values[k]))
            return load_fail(rc->load, rule_line(rc, keys[k], NO_INDEX),
                             "rule \"%s\": %s must not be empty", d->id, keys[k]);
        if (!syntax_is_utf8((const uint8_t *)values[k], strlen(values[k])))
            return load_fail(rc->load, rule_line(rc, keys[k], NO_INDEX),
                             "rule \"%s\": %s is not valid UTF-8", d->id, keys[k]);
    }
    int rc_ret = retention_parse(d->retention, &rc->rule->pub.retention_s);
    if (rc_ret == -2)
        return load_fail(rc->load, rule_line(rc, "retention", NO_INDEX),
                         "rule \"%s\": retention \"%s\" exceeds the cap of 30 years", d->id,
                         d->retention);
    if (rc_ret != 0)
        return load_fail(rc->load, rule_line(rc, "retention", NO_INDEX),
                         "rule \"%s\": retention \"%.16s\" is not a positive number followed "
                         "by s, m, h, d or y (e.g. 365d)",
                         d->id, d->retention);
    return 0;
}

static uint64_t rule_theme_mask(const doc_rule_t *d)
{
    uint64_t mask = 0;
    for (size_t i = 0; i < d->themes_count; i++) {
        size_t t = policy_theme_index(d->themes[i]);
        if (t != NO_INDEX)
            mask |= UINT64_C(1) << t;
    }
    return mask;
}

static int is_kind_token(const char *kind)
{
    return syntax_is_id_token(kind);
}

/* ------------------------------------------------------------------ rule hash */

static void hash_u32(crypto_generichash_state *st, uint32_t v)
{
    uint8_t be[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    crypto_generichash_update(st, be, 4);
}

/* One field of the canonical form: u32 name length, name, u32 value count,
 * then each value as u32 length and bytes (big-endian lengths). */
static void hash_field(crypto_generichash_state *st, const char *name, const char *const *values,
                       size_t n)
{
    hash_u32(st, (uint32_t)strlen(name));
    crypto_generichash_update(st, (const uint8_t *)name, strlen(name));
    hash_u32(st, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        hash_u32(st, (uint32_t)strlen(values[i]));
        crypto_generichash_update(st, (const uint8_t *)values[i], strlen(values[i]));
    }
}

void policy_hash_field(crypto_generichash_state *st, const char *name, const char *const *values,
                       size_t n)
{
    hash_field(st, name, values, n);
}

static void hash_list(crypto_generichash_state *st, const char *name, char *const *values, size_t n,
                      const char *const *if_absent, size_t n_absent)
{
    if (n == 0)
        hash_field(st, name, if_absent, n_absent);
    else
        hash_field(st, name, (const char *const *)values, n);
}

/* docs/POLICY.md "Rule hash": the rule as written, optional keys replaced by
 * their defaults, retention in seconds, in a fixed field order. */
static void rule_hash(const doc_rule_t *d, const rule_entry_t *r, char hex[65])
{
    static const char *const default_roles[] = {"system", "caseworker"};
    static const char *const any[] = {"*"};
    crypto_generichash_state st;
    uint8_t digest[32];
    crypto_generichash_init(&st, NULL, 0, sizeof digest);
    crypto_generichash_update(&st, (const uint8_t *)"schakel-rule-v1", 15);
    const char *id[] = {d->id};
    hash_field(&st, "id", id, 1);
    hash_list(&st, "from", d->from, d->from_count, NULL, 0);
    hash_list(&st, "from_roles", d->from_roles, d->from_roles_count, default_roles, 2);
    hash_list(&st, "to", d->to, d->to_count, NULL, 0);
    hash_list(&st, "to_roles", d->to_roles, d->to_roles_count, default_roles, 2);
    hash_list(&st, "kinds", d->kinds, d->kinds_count, any, 1);
    hash_list(&st, "themes", d->themes, d->themes_count, NULL, 0);
    hash_list(&st, "areas", d->areas, d->areas_count, NULL, 0);
    const char *purpose[] = {d->purpose}, *legal[] = {d->legal_basis};
    hash_field(&st, "purpose", purpose, 1);
    hash_field(&st, "legal_basis", legal, 1);
    hash_list(&st, "fields", d->fields, d->fields_count, NULL, 0);
    char seconds[24];
    snprintf(seconds, sizeof seconds, "%lld", (long long)r->pub.retention_s);
    const char *retention[] = {seconds};
    hash_field(&st, "retention", retention, 1);
    const char *flag[] = {r->pub.require_case_ref ? "true" : "false"};
    hash_field(&st, "require_case_ref", flag, 1);
    crypto_generichash_final(&st, digest, sizeof digest);
    syntax_hex(digest, sizeof digest, hex);
}

/* ------------------------------------------------------------------ rules build */

static int rule_build(load_ctx_t *ctx, policy_t *p, size_t i)
{
    const doc_rule_t *d = &p->doc->rules[i];
    rule_entry_t *r = &p->rules[i];
    rule_ctx_t rc = {.load = ctx, .policy = p, .index = i, .doc = d, .rule = r};
    r->index = i;
    r->pub.id = d->id;
    r->pub.purpose = d->purpose;
    r->pub.legal_basis = d->legal_basis;
    if (!syntax_is_id_token(d->id))
        return load_fail(ctx, rule_line(&rc, "id", NO_INDEX),
                         "rule id \"%.64s\" is not an id token ([a-z0-9][a-z0-9._-]{0,63})", d->id);
    if (rule_partners(&rc, "from", d->from, d->from_count, &r->from_partners) != 0 ||
        rule_partners(&rc, "to", d->to, d->to_count, &r->to_partners) != 0 ||
        rule_roles(&rc, "from_roles", d->from_roles, d->from_roles_count, &r->from_roles) != 0 ||
        rule_roles(&rc, "to_roles", d->to_roles, d->to_roles_count, &r->to_roles) != 0 ||
        rule_pattern_list(&rc, "kinds", d->kinds, d->kinds_count, is_kind_token, "a kind token",
                          &r->any_kind) != 0 ||
        rule_pattern_list(&rc, "themes", d->themes, d->themes_count, syntax_is_theme,
                          "a theme of the vocabulary", &r->any_theme) != 0 ||
        rule_pattern_list(&rc, "areas", d->areas, d->areas_count, syntax_is_area_prefix,
                          "a CBS area code or prefix (GM0935, WK093501, BU0935...)",
                          &r->any_area) != 0 ||
        rule_fields(&rc) != 0 || rule_texts(&rc) != 0)
        return -1;
    if (d->require_case_ref && strcmp(d->require_case_ref, "true") != 0 &&
        strcmp(d->require_case_ref, "false") != 0)
        return load_fail(ctx, rule_line(&rc, "require_case_ref", NO_INDEX),
                         "rule \"%s\": require_case_ref must be true or false, not \"%s\"", d->id,
                         d->require_case_ref);
    r->pub.require_case_ref = d->require_case_ref && strcmp(d->require_case_ref, "true") == 0;
    if (d->kinds_count == 0)
        r->any_kind = true;
    r->kinds = d->kinds;
    r->n_kinds = d->kinds_count;
    r->areas = d->areas;
    r->n_areas = d->areas_count;
    r->themes = rule_theme_mask(d);
    for (size_t k = 0; k < p->n_partners; k++)
        if ((r->to_partners >> k & 1) && (p->partner_roles[k] & r->to_roles))
            r->to_reachable |= UINT64_C(1) << k;
    rule_hash(d, r, r->pub.hash_hex);
    return 0;
}

static int rules_build(load_ctx_t *ctx, policy_t *p)
{
    size_t n = p->n_rules = p->doc->rules_count;
    p->rules = policy_xcalloc(n, sizeof *p->rules);
    const linemap_t *map = &ctx->map;
    uint32_t doc_node = map->n_nodes > 1 ? map->nodes[0].first_child : 0;
    uint32_t entry = doc_node ? linemap_child_by_key(map, doc_node, "rules") : 0;
    entry = entry ? map->nodes[entry].first_child : 0;
    for (size_t i = 0; i < n; i++) {
        if (rule_build(ctx, p, i) != 0)
            return -1;
        p->rules[i].pub.line = entry ? map->nodes[entry].line : 0;
        entry = entry ? map->nodes[entry].next_sibling : 0;
    }
    /* Sorted by id: duplicates are neighbours, and the array stays as the
     * index behind policy_rule_by_id. */
    const rule_entry_t **sorted = policy_xcalloc(n ? n : 1, sizeof *sorted);
    for (size_t i = 0; i < n; i++)
        sorted[i] = &p->rules[i];
    qsort(sorted, n, sizeof *sorted, cmp_rule_id);
    p->rules_by_id = sorted;
    int rc = 0;
    for (size_t i = 1; i < n && rc == 0; i++) {
        if (strcmp(sorted[i - 1]->pub.id, sorted[i]->pub.id) == 0)
            rc = load_fail(ctx, linemap_where(&ctx->map, "rules", sorted[i]->index, "id", NO_INDEX),
                           "duplicate rule id \"%s\" (first at line %u)", sorted[i]->pub.id,
                           sorted[i - 1]->pub.line);
    }
    return rc;
}

/* ------------------------------------------------------------------ load */

policy_t *policy_load_buffer(const char *name, const uint8_t *buf, size_t len, const char *base_dir,
                             char *err, size_t errlen)
{
    load_ctx_t ctx = {.report = {.name = name ? name : "policy", .err = err, .errlen = errlen},
                      .base_dir = base_dir};
    if (err && errlen)
        err[0] = '\0';
    if (buf == NULL && len > 0) {
        load_fail(&ctx, 0, "no input");
        return NULL;
    }
    if (len > SCHAKEL_MAX_POLICY_BYTES) {
        load_fail(&ctx, 0, "policy is larger than %u bytes", SCHAKEL_MAX_POLICY_BYTES);
        return NULL;
    }
    if (keys_init() != 0) {
        load_fail(&ctx, 0, "cannot initialise libsodium");
        return NULL;
    }
    policy_t *p = policy_xcalloc(1, sizeof *p);
    p->n_themes = theme_count();
    if (p->n_themes > 63)
        abort(); /* theme sets are 64-bit masks; the vocabulary is far smaller */
    uint8_t digest[32];
    crypto_generichash(digest, sizeof digest, buf, len, NULL, 0);
    syntax_hex(digest, sizeof digest, p->hash_hex);
    static const uint8_t empty[1] = {0};
    int rc = linemap_build(&ctx.map, &ctx.report, buf ? buf : empty, len);
    if (rc == 0 && ctx.map.n_nodes > 1 && ctx.map.nodes[1].kind != LINEMAP_MAPPING)
        rc = load_fail(&ctx, ctx.map.nodes[1].line,
                       "a policy is a mapping with version, partners, principals and rules");
    if (rc == 0)
        rc = doc_load(&ctx, buf ? buf : empty, len, &p->doc);
    if (rc == 0 && strcmp(p->doc->version, "1") != 0)
        rc = load_fail(&ctx, linemap_where(&ctx.map, "version", NO_INDEX, NULL, NO_INDEX),
                       "unsupported policy version \"%s\" (this broker reads version 1)",
                       p->doc->version);
    if (rc == 0)
        rc = partners_build(&ctx, p);
    if (rc == 0)
        rc = principals_build(&ctx, p);
    if (rc == 0)
        rc = rules_build(&ctx, p);
    if (rc == 0)
        rc = policy_case_types_build(p, p->doc->case_types, p->doc->case_types_count, &ctx.report,
                                     &ctx.map);
    if (rc == 0) {
        policy_index_build(p, POLICY_INDEX_BUDGET);
        policy_warnings_build(p, POLICY_SHADOW_BUDGET);
    }
    linemap_free(&ctx.map);
    if (rc != 0)
        policy_destroy(&p);
    return p;
}

policy_t *policy_load(const char *path, char *err, size_t errlen)
{
    char dummy[1];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    if (path == NULL) {
        snprintf(err, errlen, "no policy path");
        return NULL;
    }
    const yamlguard_report_t report = {.name = path, .err = err, .errlen = errlen};
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = yamlguard_read_file(&report, "policy", SCHAKEL_MAX_POLICY_BYTES, &buf, &len);
    if (rc == YAMLGUARD_NOMEM)
        abort(); /* the daemon may die on out-of-memory (STYLE.md) */
    if (rc != 0)
        return NULL;
    char *dir = strdup(path);
    if (dir == NULL)
        abort();
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        strcpy(dir, ".");
    policy_t *p = policy_load_buffer(path, buf, len, dir, err, errlen);
    free(dir);
    free(buf);
    return p;
}

void policy_destroy(policy_t **policy)
{
    if (policy == NULL || *policy == NULL)
        return;
    policy_t *p = *policy;
    policy_index_free(p); /* first: it clears the rules' pointers into it */
    policy_warnings_free(p);
    doc_free(p->doc);
    free(p->partners);
    free(p->partners_by_id);
    free(p->principals);
    free(p->principals_by_id);
    free(p->principals_by_curve);
    free(p->partner_members_start);
    free(p->partner_members);
    free(p->rules);
    free(p->rules_by_id);
    policy_case_types_free(p);
    free(p);
    *policy = NULL;
}
