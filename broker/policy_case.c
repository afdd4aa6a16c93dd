/*
 * policy_case.c — case types of the access policy (docs/POLICY.md "Case
 * types"): their schema, validation with file:line errors, content hashes,
 * the implicit "<type>.lead" membership rules, and the decisions about
 * cases: who may open, who may act for the lead, who may be a member under
 * which rule and what it sees. Trusts what policy_load.c built before it
 * (partners, principals, rules) and nothing in the document; load errors
 * are "FILE:LINE: message", decisions deny unless a case type allows.
 */
#include "policy_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cyaml/cyaml.h>

#include "linemap.h"
#include "syntax.h"
#include "yamlguard.h"

#define ROLES_DEFAULT (ROLE_SYSTEM | ROLE_CASEWORKER)
#define LEAD_SUFFIX ".lead"
/* A case type id leaves room for LEAD_SUFFIX within an id token. */
#define CASE_TYPE_ID_MAX (SCHAKEL_MAX_ID_LEN - (sizeof LEAD_SUFFIX - 1))
#define MAX_CASE_FIELDS 64u /* entries in a membership rule's fields */
#define MAX_ON_BEHALF 256u  /* principals in one case type's on_behalf */

/* ------------------------------------------------------------------ schema */

#define OPT CYAML_FLAG_OPTIONAL
static const cyaml_schema_value_t schema_case_token = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 1, SCHAKEL_MAX_ID_LEN)};
static const cyaml_schema_value_t schema_case_principal = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 1, SCHAKEL_MAX_PRINCIPAL_LEN)};

static const cyaml_schema_field_t schema_case_member_fields[] = {
    CYAML_FIELD_STRING_PTR("id", CYAML_FLAG_POINTER, doc_case_member_t, id, 1, SCHAKEL_MAX_ID_LEN),
    CYAML_FIELD_SEQUENCE("partners", CYAML_FLAG_POINTER, doc_case_member_t, partners,
                         &schema_case_token, 1, SCHAKEL_MAX_PARTNERS),
    CYAML_FIELD_SEQUENCE("roles", CYAML_FLAG_POINTER | OPT, doc_case_member_t, roles,
                         &schema_case_token, 1, 3),
    CYAML_FIELD_STRING_PTR("purpose", CYAML_FLAG_POINTER, doc_case_member_t, purpose, 1,
                           SCHAKEL_MAX_POLICY_TEXT_LEN),
    CYAML_FIELD_STRING_PTR("legal_basis", CYAML_FLAG_POINTER, doc_case_member_t, legal_basis, 1,
                           SCHAKEL_MAX_POLICY_TEXT_LEN),
    CYAML_FIELD_SEQUENCE("fields", CYAML_FLAG_POINTER, doc_case_member_t, fields,
                         &schema_case_token, 0, MAX_CASE_FIELDS),
    CYAML_FIELD_SEQUENCE("signal_fields", CYAML_FLAG_POINTER | OPT, doc_case_member_t,
                         signal_fields, &schema_case_token, 0, 16),
    CYAML_FIELD_END};

static const cyaml_schema_value_t schema_case_member = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, doc_case_member_t, schema_case_member_fields)};

static const cyaml_schema_field_t schema_case_type_fields[] = {
    CYAML_FIELD_STRING_PTR("id", CYAML_FLAG_POINTER, doc_case_type_t, id, 1, SCHAKEL_MAX_ID_LEN),
    CYAML_FIELD_STRING_PTR("purpose", CYAML_FLAG_POINTER, doc_case_type_t, purpose, 1,
                           SCHAKEL_MAX_POLICY_TEXT_LEN),
    CYAML_FIELD_STRING_PTR("legal_basis", CYAML_FLAG_POINTER, doc_case_type_t, legal_basis, 1,
                           SCHAKEL_MAX_POLICY_TEXT_LEN),
    CYAML_FIELD_SEQUENCE("lead", CYAML_FLAG_POINTER, doc_case_type_t, lead, &schema_case_token, 1,
                         SCHAKEL_MAX_PARTNERS),
    CYAML_FIELD_SEQUENCE("lead_roles", CYAML_FLAG_POINTER | OPT, doc_case_type_t, lead_roles,
                         &schema_case_token, 1, 3),
    CYAML_FIELD_SEQUENCE("on_behalf", CYAML_FLAG_POINTER | OPT, doc_case_type_t, on_behalf,
                         &schema_case_principal, 0, MAX_ON_BEHALF),
    CYAML_FIELD_SEQUENCE("members", CYAML_FLAG_POINTER, doc_case_type_t, members,
                         &schema_case_member, 0, SCHAKEL_MAX_PARTNERS),
    CYAML_FIELD_STRING_PTR("retention_after_close", CYAML_FLAG_POINTER, doc_case_type_t,
                           retention_after_close, 1, 16),
    CYAML_FIELD_STRING_PTR("reopen", CYAML_FLAG_POINTER | OPT, doc_case_type_t, reopen, 1, 64),
    CYAML_FIELD_END};
#undef OPT

const cyaml_schema_value_t policy_case_type_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, doc_case_type_t, schema_case_type_fields)};

/* ------------------------------------------------------------------ helpers */

/* The single signal field called `name`, or 0. */
static uint32_t signal_field_by_name(const char *name)
{
    for (unsigned bit = 0; bit < 32; bit++) {
        const char *known = policy_field_name(UINT32_C(1) << bit);
        if (known != NULL && strcmp(known, name) == 0)
            return UINT32_C(1) << bit;
    }
    return 0;
}

static uint32_t signal_fields_all(void)
{
    uint32_t all = 0;
    for (unsigned bit = 0; bit < 32; bit++)
        if (policy_field_name(UINT32_C(1) << bit) != NULL)
            all |= UINT32_C(1) << bit;
    return all;
}

static int cmp_case_type_id(const void *a, const void *b)
{
    const case_type_entry_t *const *ta = a, *const *tb = b;
    int c = strcmp((*ta)->pub.id, (*tb)->pub.id);
    return c ? c : (*ta < *tb ? -1 : *ta > *tb);
}

static int cmp_case_member_id(const void *a, const void *b)
{
    const case_member_entry_t *const *ma = a, *const *mb = b;
    int c = strcmp((*ma)->pub.id, (*mb)->pub.id);
    return c ? c : (*ma < *mb ? -1 : *ma > *mb);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------------ lines */

typedef struct case_ctx {
    policy_t *p;
    const yamlguard_report_t *report;
    const linemap_t *map;
    const doc_case_type_t *doc; /* the case type being built */
    case_type_entry_t *type;
    uint32_t node; /* its entry in the line map; 0 if unknown */
} case_ctx_t;

static int case_fail(const case_ctx_t *cc, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int case_fail(const case_ctx_t *cc, unsigned line, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    yamlguard_vfail(cc->report, line ? line : 1, fmt, args);
    va_end(args);
    return -1;
}

static uint32_t map_child_at(const linemap_t *map, uint32_t node, size_t i)
{
    uint32_t child = node ? map->nodes[node].first_child : 0;
    while (child != 0 && i-- > 0)
        child = map->nodes[child].next_sibling;
    return child;
}

/* The deepest line of node[key][item] that exists (item NO_INDEX: the key's). */
static unsigned map_line(const linemap_t *map, uint32_t node, const char *key, size_t item)
{
    if (node == 0)
        return 0;
    unsigned line = map->nodes[node].line;
    uint32_t value = key ? linemap_child_by_key(map, node, key) : 0;
    if (value == 0)
        return line;
    line = map->nodes[value].line;
    uint32_t entry = item != NO_INDEX ? map_child_at(map, value, item) : 0;
    return entry ? map->nodes[entry].line : line;
}

static uint32_t type_node(const linemap_t *map, size_t i)
{
    if (map->n_nodes < 2)
        return 0;
    uint32_t types = linemap_child_by_key(map, map->nodes[0].first_child, "case_types");
    return map_child_at(map, types, i);
}

static unsigned type_line(const case_ctx_t *cc, const char *key, size_t item)
{
    return map_line(cc->map, cc->node, key, item);
}

static uint32_t member_node(const case_ctx_t *cc, size_t j)
{
    uint32_t members = cc->node ? linemap_child_by_key(cc->map, cc->node, "members") : 0;
    return map_child_at(cc->map, members, j);
}

static unsigned member_line(const case_ctx_t *cc, size_t j, const char *key, size_t item)
{
    uint32_t node = member_node(cc, j);
    return node ? map_line(cc->map, node, key, item) : type_line(cc, "members", j);
}

/* ------------------------------------------------------------------ checks */

/* purpose and legal_basis: not only blanks, valid UTF-8. `what` names the
 * owner ("case type \"x\""). */
static int case_texts(const case_ctx_t *cc, const char *what, const char *purpose,
                      const char *legal_basis, unsigned purpose_line, unsigned legal_line)
{
    const char *keys[2] = {"purpose", "legal_basis"};
    const char *values[2] = {purpose, legal_basis};
    unsigned lines[2] = {purpose_line, legal_line};
    for (int k = 0; k < 2; k++) {
        if (strspn(values[k], " \t\n") == strlen(values[k]))
            return case_fail(cc, lines[k], "%s: %s must not be empty", what, keys[k]);
        if (!syntax_is_utf8((const uint8_t *)values[k], strlen(values[k])))
            return case_fail(cc, lines[k], "%s: %s is not valid UTF-8", what, keys[k]);
    }
    return 0;
}

/* A list of partner ids into a mask; lines[i] is the line of entry i. */
typedef unsigned (*line_fn)(const case_ctx_t *cc, size_t owner, const char *key, size_t item);

static unsigned type_line_fn(const case_ctx_t *cc, size_t owner, const char *key, size_t item)
{
    (void)owner;
    return type_line(cc, key, item);
}

static int case_partners(const case_ctx_t *cc, const char *what, line_fn where, size_t owner,
                         const char *key, char *const *ids, size_t n, uint64_t *mask)
{
    *mask = 0;
    for (size_t i = 0; i < n; i++) {
        const policy_partner_t *partner = policy_partner_by_id(cc->p, ids[i]);
        if (partner == NULL)
            return case_fail(cc, where(cc, owner, key, i), "%s: %s names unknown partner \"%s\"",
                             what, key, ids[i]);
        uint64_t bit = UINT64_C(1) << partner->index;
        if (*mask & bit)
            return case_fail(cc, where(cc, owner, key, i), "%s: partner \"%s\" appears twice in %s",
                             what, ids[i], key);
        *mask |= bit;
    }
    return 0;
}

static int case_roles(const case_ctx_t *cc, const char *what, line_fn where, size_t owner,
                      const char *key, char *const *names, size_t n, unsigned *mask)
{
    *mask = n ? 0 : ROLES_DEFAULT;
    for (size_t i = 0; i < n; i++) {
        role_t role = policy_role_parse(names[i]);
        const char *problem = NULL;
        if (role == ROLE_NONE)
            problem = "is not a role (system or caseworker)";
        else if (role == ROLE_OPERATOR)
            problem = "cannot be used: operators never take part in cases";
        else if (*mask & (unsigned)role)
            problem = "appears twice";
        if (problem)
            return case_fail(cc, where(cc, owner, key, i), "%s: %s: \"%s\" %s", what, key, names[i],
                             problem);
        *mask |= (unsigned)role;
    }
    return 0;
}

static int case_retention(case_ctx_t *cc)
{
    const char *text = cc->doc->retention_after_close;
    unsigned line = type_line(cc, "retention_after_close", NO_INDEX);
    int rc = policy_retention_parse(text, &cc->type->pub.retention_after_close_s);
    if (rc == -2)
        return case_fail(cc, line,
                         "case type \"%s\": retention_after_close \"%s\" exceeds the cap of 30 "
                         "years",
                         cc->doc->id, text);
    if (rc != 0)
        return case_fail(cc, line,
                         "case type \"%s\": retention_after_close \"%.16s\" is not a positive "
                         "number followed by s, m, h, d or y (e.g. 2y)",
                         cc->doc->id, text);
    const char *reopen = cc->doc->reopen;
    if (reopen && strcmp(reopen, "true") != 0 && strcmp(reopen, "false") != 0)
        return case_fail(cc, type_line(cc, "reopen", NO_INDEX),
                         "case type \"%s\": reopen must be true or false, not \"%s\"", cc->doc->id,
                         reopen);
    cc->type->pub.reopen_allowed = reopen && strcmp(reopen, "true") == 0;
    return 0;
}

static int case_on_behalf(case_ctx_t *cc)
{
    const doc_case_type_t *d = cc->doc;
    case_type_entry_t *t = cc->type;
    t->n_on_behalf = d->on_behalf_count;
    t->on_behalf = policy_xcalloc(d->on_behalf_count, sizeof *t->on_behalf);
    for (size_t i = 0; i < d->on_behalf_count; i++) {
        const policy_principal_t *pr = policy_principal_by_id(cc->p, d->on_behalf[i]);
        unsigned line = type_line(cc, "on_behalf", i);
        if (pr == NULL)
            return case_fail(cc, line, "case type \"%s\": on_behalf names unknown principal \"%s\"",
                             d->id, d->on_behalf[i]);
        if (pr->role == ROLE_OPERATOR)
            return case_fail(cc, line,
                             "case type \"%s\": on_behalf: \"%s\" is an operator; operators "
                             "never take part in cases",
                             d->id, pr->id);
        t->on_behalf[i] = (uint32_t)(pr - cc->p->principals);
    }
    qsort(t->on_behalf, t->n_on_behalf, sizeof *t->on_behalf, cmp_u32);
    for (size_t i = 1; i < t->n_on_behalf; i++) {
        if (t->on_behalf[i - 1] != t->on_behalf[i])
            continue;
        const char *id = cc->p->principals[t->on_behalf[i]].id;
        size_t later = 0;
        for (size_t k = 0, seen = 0; k < d->on_behalf_count; k++)
            if (strcmp(d->on_behalf[k], id) == 0 && seen++ == 1)
                later = k;
        return case_fail(cc, type_line(cc, "on_behalf", later),
                         "case type \"%s\": principal \"%s\" appears twice in on_behalf", d->id,
                         id);
    }
    return 0;
}

/* ------------------------------------------------------------------ membership rules */

static unsigned member_line_fn(const case_ctx_t *cc, size_t owner, const char *key, size_t item)
{
    return member_line(cc, owner, key, item);
}

/* fields: "*" alone, or id tokens, each once; kept sorted for lookups. */
static int member_fields(const case_ctx_t *cc, size_t j, const char *what, case_member_entry_t *m)
{
    const doc_case_member_t *d = &cc->doc->members[j];
    size_t n = d->fields_count;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(d->fields[i], "*") == 0) {
            if (n != 1)
                return case_fail(cc, member_line(cc, j, "fields", i),
                                 "%s: \"*\" in fields must stand alone", what);
            m->all_fields = true;
        } else if (!syntax_is_id_token(d->fields[i])) {
            return case_fail(cc, member_line(cc, j, "fields", i),
                             "%s: \"%.64s\" in fields is not a field name (an id token such as "
                             "text, subject, address, attachments, or \"*\")",
                             what, d->fields[i]);
        }
    }
    char *const **slots = policy_sorted_slots(d->fields, n);
    m->fields_sorted = policy_xcalloc(n, sizeof *m->fields_sorted);
    m->n_fields = n;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        m->fields_sorted[i] = *slots[i];
        if (rc == 0 && i > 0 && strcmp(*slots[i - 1], *slots[i]) == 0)
            rc = case_fail(cc, member_line(cc, j, "fields", (size_t)(slots[i] - d->fields)),
                           "%s: \"%s\" appears twice in fields (first at line %u)", what, *slots[i],
                           member_line(cc, j, "fields", (size_t)(slots[i - 1] - d->fields)));
    }
    free(slots);
    return rc;
}

static int member_signal_fields(const case_ctx_t *cc, size_t j, const char *what,
                                case_member_entry_t *m)
{
    const doc_case_member_t *d = &cc->doc->members[j];
    for (size_t i = 0; i < d->signal_fields_count; i++) {
        const char *name = d->signal_fields[i];
        unsigned line = member_line(cc, j, "signal_fields", i);
        uint32_t field = strcmp(name, "*") == 0 ? signal_fields_all() : signal_field_by_name(name);
        if (field == 0)
            return case_fail(cc, line,
                             "%s: unknown signal field \"%.64s\" in signal_fields (area, address, "
                             "subject, grounds, case_ref, severity, observed_at, summary, "
                             "source_ref, recipients, or \"*\")",
                             what, name);
        if (strcmp(name, "*") == 0 && d->signal_fields_count != 1)
            return case_fail(cc, line, "%s: \"*\" in signal_fields must stand alone", what);
        if (m->signal_fields & field)
            return case_fail(cc, line, "%s: signal field \"%s\" appears twice", what, name);
        m->signal_fields |= field;
    }
    return 0;
}

/* No partner belongs to two membership rules of one case type, and the
 * only lead partner needs none: it is always a member under the lead rule. */
static int member_partners_free(const case_ctx_t *cc, size_t j, const char *what)
{
    const doc_case_member_t *d = &cc->doc->members[j];
    case_type_entry_t *t = cc->type;
    for (size_t i = 0; i < d->partners_count; i++) {
        const policy_partner_t *partner = policy_partner_by_id(cc->p, d->partners[i]);
        unsigned line = member_line(cc, j, "partners", i);
        if (t->lead_partners == UINT64_C(1) << partner->index)
            return case_fail(cc, line,
                             "%s: partner \"%s\" is the only lead of case type \"%s\" and always "
                             "a member under \"%s" LEAD_SUFFIX "\"",
                             what, partner->id, cc->doc->id, cc->doc->id);
        uint8_t other = t->member_of[partner->index];
        if (other != 0) {
            const case_member_entry_t *o = &cc->p->case_members[t->first_member + other];
            return case_fail(cc, line,
                             "%s: partner \"%s\" is already a member of case type \"%s\" under "
                             "membership rule \"%s\" (line %u)",
                             what, partner->id, cc->doc->id, o->pub.id, o->pub.line);
        }
        t->member_of[partner->index] = (uint8_t)(j + 1);
    }
    return 0;
}

static int member_build(case_ctx_t *cc, size_t j)
{
    const doc_case_member_t *d = &cc->doc->members[j];
    case_member_entry_t *m = &cc->p->case_members[cc->type->first_member + 1 + j];
    m->pub = (policy_case_member_rule_t){.id = d->id,
                                         .purpose = d->purpose,
                                         .legal_basis = d->legal_basis,
                                         .case_type = &cc->type->pub,
                                         .line = member_line(cc, j, NULL, NO_INDEX)};
    if (!syntax_is_id_token(d->id))
        return case_fail(cc, member_line(cc, j, "id", NO_INDEX),
                         "membership rule id \"%.64s\" is not an id token "
                         "([a-z0-9][a-z0-9._-]{0,63})",
                         d->id);
    char what[96];
    snprintf(what, sizeof what, "membership rule \"%s\"", d->id);
    if (case_partners(cc, what, member_line_fn, j, "partners", d->partners, d->partners_count,
                      &m->partners) != 0 ||
        member_partners_free(cc, j, what) != 0 ||
        case_roles(cc, what, member_line_fn, j, "roles", d->roles, d->roles_count, &m->roles) !=
            0 ||
        case_texts(cc, what, d->purpose, d->legal_basis, member_line(cc, j, "purpose", NO_INDEX),
                   member_line(cc, j, "legal_basis", NO_INDEX)) != 0 ||
        member_fields(cc, j, what, m) != 0 || member_signal_fields(cc, j, what, m) != 0)
        return -1;
    const policy_rule_t *taken = policy_rule_by_id(cc->p, d->id);
    if (taken != NULL)
        return case_fail(cc, member_line(cc, j, "id", NO_INDEX),
                         "membership rule id \"%s\" is also the id of the rule at line %u (ids "
                         "are unique among rules and membership rules)",
                         d->id, taken->line);
    return 0;
}

/* ------------------------------------------------------------------ hashes */

static void hash_list(crypto_generichash_state *st, const char *name, char *const *values, size_t n,
                      const char *const *if_absent, size_t n_absent)
{
    if (values == NULL)
        policy_hash_field(st, name, if_absent, n_absent);
    else
        policy_hash_field(st, name, (const char *const *)values, n);
}

static void hash_one(crypto_generichash_state *st, const char *name, const char *value)
{
    const char *values[1] = {value};
    policy_hash_field(st, name, values, 1);
}

static void hash_done(crypto_generichash_state *st, char hex[65])
{
    uint8_t digest[32];
    crypto_generichash_final(st, digest, sizeof digest);
    syntax_hex(digest, sizeof digest, hex);
}

static const char *const default_roles[] = {"system", "caseworker"};
static const char *const any[] = {"*"};

/* docs/POLICY.md "Case type and membership rule hashes". A written
 * membership rule is d; the lead rule is d == NULL. */
static void member_hash(const doc_case_type_t *t, const doc_case_member_t *d,
                        case_member_entry_t *m, const char *seconds)
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, (const uint8_t *)"schakel-case-member-v1", 22);
    hash_one(&st, "case_type", t->id);
    hash_one(&st, "id", m->pub.id);
    if (d != NULL) {
        hash_list(&st, "partners", d->partners, d->partners_count, NULL, 0);
        hash_list(&st, "roles", d->roles, d->roles_count, default_roles, 2);
        hash_one(&st, "purpose", d->purpose);
        hash_one(&st, "legal_basis", d->legal_basis);
        hash_list(&st, "fields", d->fields, d->fields_count, NULL, 0);
        hash_list(&st, "signal_fields", d->signal_fields, d->signal_fields_count, NULL, 0);
    } else {
        hash_list(&st, "partners", t->lead, t->lead_count, NULL, 0);
        hash_list(&st, "roles", t->lead_roles, t->lead_roles_count, default_roles, 2);
        hash_one(&st, "purpose", t->purpose);
        hash_one(&st, "legal_basis", t->legal_basis);
        policy_hash_field(&st, "fields", any, 1);
        policy_hash_field(&st, "signal_fields", any, 1);
    }
    hash_one(&st, "retention_after_close", seconds);
    hash_done(&st, m->pub.hash_hex);
}

static void type_hashes(const policy_t *p, const doc_case_type_t *d, case_type_entry_t *t)
{
    char seconds[24];
    snprintf(seconds, sizeof seconds, "%lld", (long long)t->pub.retention_after_close_s);
    for (size_t j = 0; j <= t->n_members; j++)
        member_hash(d, j ? &d->members[j - 1] : NULL, &p->case_members[t->first_member + j],
                    seconds);
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, (const uint8_t *)"schakel-case-type-v1", 20);
    hash_one(&st, "id", d->id);
    hash_one(&st, "purpose", d->purpose);
    hash_one(&st, "legal_basis", d->legal_basis);
    hash_list(&st, "lead", d->lead, d->lead_count, NULL, 0);
    hash_list(&st, "lead_roles", d->lead_roles, d->lead_roles_count, default_roles, 2);
    hash_list(&st, "on_behalf", d->on_behalf, d->on_behalf_count, NULL, 0);
    hash_one(&st, "retention_after_close", seconds);
    hash_one(&st, "reopen", t->pub.reopen_allowed ? "true" : "false");
    const char **member_hashes = policy_xcalloc(t->n_members, sizeof *member_hashes);
    for (size_t j = 0; j < t->n_members; j++)
        member_hashes[j] = p->case_members[t->first_member + 1 + j].pub.hash_hex;
    policy_hash_field(&st, "members", member_hashes, t->n_members);
    free(member_hashes);
    hash_done(&st, t->pub.hash_hex);
}

/* ------------------------------------------------------------------ case types */

static void lead_rule_make(case_ctx_t *cc)
{
    case_type_entry_t *t = cc->type;
    case_member_entry_t *lead = &cc->p->case_members[t->first_member];
    size_t len = strlen(cc->doc->id) + sizeof LEAD_SUFFIX;
    char *id = policy_xcalloc(len, 1);
    snprintf(id, len, "%s" LEAD_SUFFIX, cc->doc->id);
    lead->pub = (policy_case_member_rule_t){.id = id,
                                            .purpose = cc->doc->purpose,
                                            .legal_basis = cc->doc->legal_basis,
                                            .case_type = &t->pub,
                                            .is_lead = 1,
                                            .line = t->pub.line};
    lead->partners = t->lead_partners;
    lead->roles = t->lead_roles;
    lead->all_fields = true;
    lead->signal_fields = signal_fields_all();
}

static int case_type_head(case_ctx_t *cc)
{
    const doc_case_type_t *d = cc->doc;
    case_type_entry_t *t = cc->type;
    unsigned id_line = type_line(cc, "id", NO_INDEX);
    if (!syntax_is_id_token(d->id))
        return case_fail(cc, id_line,
                         "case type id \"%.64s\" is not an id token ([a-z0-9][a-z0-9._-]{0,63})",
                         d->id);
    if (strlen(d->id) > CASE_TYPE_ID_MAX)
        return case_fail(
            cc, id_line,
            "case type id \"%s\" is longer than %zu bytes (its lead rule \"<id>" LEAD_SUFFIX
            "\" must be an id token too)",
            d->id, (size_t)CASE_TYPE_ID_MAX);
    char what[96];
    snprintf(what, sizeof what, "case type \"%s\"", d->id);
    if (case_texts(cc, what, d->purpose, d->legal_basis, type_line(cc, "purpose", NO_INDEX),
                   type_line(cc, "legal_basis", NO_INDEX)) != 0 ||
        case_partners(cc, what, type_line_fn, 0, "lead", d->lead, d->lead_count,
                      &t->lead_partners) != 0 ||
        case_roles(cc, what, type_line_fn, 0, "lead_roles", d->lead_roles, d->lead_roles_count,
                   &t->lead_roles) != 0 ||
        case_on_behalf(cc) != 0 || case_retention(cc) != 0)
        return -1;
    return 0;
}

static int case_type_build(policy_t *p, const doc_case_type_t *d, size_t i, size_t first_member,
                           const yamlguard_report_t *report, const linemap_t *map)
{
    case_type_entry_t *t = &p->case_types[i];
    case_ctx_t cc = {
        .p = p, .report = report, .map = map, .doc = d, .type = t, .node = type_node(map, i)};
    t->pub.id = d->id;
    t->pub.purpose = d->purpose;
    t->pub.legal_basis = d->legal_basis;
    t->pub.line = cc.node ? map->nodes[cc.node].line : 0;
    t->first_member = first_member;
    t->n_members = d->members_count;
    if (case_type_head(&cc) != 0)
        return -1;
    lead_rule_make(&cc);
    const policy_rule_t *taken = policy_rule_by_id(p, p->case_members[first_member].pub.id);
    if (taken != NULL)
        return case_fail(&cc, type_line(&cc, "id", NO_INDEX),
                         "case type \"%s\": the id of its lead rule, \"%s\", is also the id of "
                         "the rule at line %u",
                         d->id, taken->id, taken->line);
    for (size_t j = 0; j < d->members_count; j++)
        if (member_build(&cc, j) != 0)
            return -1;
    type_hashes(p, d, t);
    return 0;
}

/* Sorted indexes for the by-id lookups; their neighbours are the
 * duplicates. */
static int case_ids_unique(policy_t *p, const yamlguard_report_t *report, const linemap_t *map)
{
    case_ctx_t cc = {.p = p, .report = report, .map = map};
    for (size_t i = 1; i < p->n_case_types; i++) {
        const case_type_entry_t *a = p->case_types_by_id[i - 1], *b = p->case_types_by_id[i];
        if (strcmp(a->pub.id, b->pub.id) == 0) {
            cc.node = type_node(map, (size_t)(b - p->case_types));
            return case_fail(&cc, type_line(&cc, "id", NO_INDEX),
                             "duplicate case type id \"%s\" (first at line %u)", b->pub.id,
                             a->pub.line);
        }
    }
    for (size_t i = 1; i < p->n_case_members; i++) {
        const case_member_entry_t *a = p->case_members_by_id[i - 1], *b = p->case_members_by_id[i];
        if (strcmp(a->pub.id, b->pub.id) != 0)
            continue;
        /* Report at a written rule: a lead rule has no line of its own. */
        const case_member_entry_t *written = b->pub.is_lead ? a : b, *other = written == a ? b : a;
        if (other->pub.is_lead)
            return case_fail(&cc, written->pub.line,
                             "membership rule id \"%s\" is the id of the lead rule of case type "
                             "\"%s\" (line %u)",
                             written->pub.id, other->pub.case_type->id, other->pub.line);
        return case_fail(&cc, written->pub.line,
                         "duplicate membership rule id \"%s\" (first at line %u)", written->pub.id,
                         other->pub.line);
    }
    return 0;
}

int policy_case_types_build(policy_t *p, const doc_case_type_t *types, size_t n,
                            const yamlguard_report_t *report, const linemap_t *map)
{
    size_t n_members = 0;
    for (size_t i = 0; i < n; i++)
        n_members += 1 + types[i].members_count;
    p->n_case_types = n;
    p->case_types = policy_xcalloc(n, sizeof *p->case_types);
    p->n_case_members = n_members;
    p->case_members = policy_xcalloc(n_members, sizeof *p->case_members);
    p->case_types_by_id = policy_xcalloc(n, sizeof *p->case_types_by_id);
    p->case_members_by_id = policy_xcalloc(n_members, sizeof *p->case_members_by_id);
    for (size_t i = 0, first = 0; i < n; first += 1 + types[i].members_count, i++)
        if (case_type_build(p, &types[i], i, first, report, map) != 0)
            return -1;
    for (size_t i = 0; i < n; i++)
        p->case_types_by_id[i] = &p->case_types[i];
    for (size_t i = 0; i < n_members; i++)
        p->case_members_by_id[i] = &p->case_members[i];
    qsort(p->case_types_by_id, n, sizeof *p->case_types_by_id, cmp_case_type_id);
    qsort(p->case_members_by_id, n_members, sizeof *p->case_members_by_id, cmp_case_member_id);
    return case_ids_unique(p, report, map);
}

void policy_case_types_free(policy_t *p)
{
    for (size_t i = 0; i < p->n_case_types && p->case_types; i++)
        free(p->case_types[i].on_behalf);
    for (size_t i = 0; i < p->n_case_members && p->case_members; i++) {
        if (p->case_members[i].pub.is_lead)
            free(p->case_members[i].pub.id);
        free(p->case_members[i].fields_sorted);
    }
    free(p->case_types);
    free(p->case_types_by_id);
    free(p->case_members);
    free(p->case_members_by_id);
    p->case_types = NULL;
    p->case_types_by_id = NULL;
    p->case_members = NULL;
    p->case_members_by_id = NULL;
    p->n_case_types = p->n_case_members = 0;
}

/* ------------------------------------------------------------------ lookups */

static int cmp_id_case_type(const void *id, const void *entry)
{
    const case_type_entry_t *const *t = entry;
    return strcmp(id, (*t)->pub.id);
}

static int cmp_id_case_member(const void *id, const void *entry)
{
    const case_member_entry_t *const *m = entry;
    return strcmp(id, (*m)->pub.id);
}

const policy_case_type_t *policy_case_type_by_id(const policy_t *policy, const char *id)
{
    if (policy == NULL || id == NULL || policy->n_case_types == 0)
        return NULL;
    const case_type_entry_t *const *found =
        bsearch(id, policy->case_types_by_id, policy->n_case_types,
                sizeof *policy->case_types_by_id, cmp_id_case_type);
    return found ? &(*found)->pub : NULL;
}

const policy_case_member_rule_t *policy_case_member_rule_by_id(const policy_t *policy,
                                                               const char *id)
{
    if (policy == NULL || id == NULL || policy->n_case_members == 0)
        return NULL;
    const case_member_entry_t *const *found =
        bsearch(id, policy->case_members_by_id, policy->n_case_members,
                sizeof *policy->case_members_by_id, cmp_id_case_member);
    return found ? &(*found)->pub : NULL;
}

size_t policy_case_type_count(const policy_t *policy)
{
    return policy ? policy->n_case_types : 0;
}

const policy_case_type_t *policy_case_type_at(const policy_t *policy, size_t i)
{
    return policy && i < policy->n_case_types ? &policy->case_types[i].pub : NULL;
}

/* The entry behind a pointer handed out by this policy, or NULL: callers
 * may hold pointers from a policy that a reload has replaced. */
static const case_type_entry_t *case_type_of(const policy_t *p, const policy_case_type_t *type)
{
    uintptr_t at = (uintptr_t)type, base = (uintptr_t)(p ? p->case_types : NULL);
    if (p == NULL || type == NULL || p->n_case_types == 0 || at < base ||
        at >= base + p->n_case_types * sizeof *p->case_types ||
        (at - base) % sizeof *p->case_types != 0)
        return NULL;
    return &p->case_types[(at - base) / sizeof *p->case_types];
}

static const case_member_entry_t *case_member_of(const policy_t *p,
                                                 const policy_case_member_rule_t *rule)
{
    uintptr_t at = (uintptr_t)rule, base = (uintptr_t)(p ? p->case_members : NULL);
    if (p == NULL || rule == NULL || p->n_case_members == 0 || at < base ||
        at >= base + p->n_case_members * sizeof *p->case_members ||
        (at - base) % sizeof *p->case_members != 0)
        return NULL;
    return &p->case_members[(at - base) / sizeof *p->case_members];
}

static bool principal_of(const policy_t *p, const policy_principal_t *principal)
{
    uintptr_t at = (uintptr_t)principal, base = (uintptr_t)p->principals;
    return principal != NULL && p->n_principals > 0 && at >= base &&
           at < base + p->n_principals * sizeof *p->principals &&
           (at - base) % sizeof *p->principals == 0;
}

static bool partner_of(const policy_t *p, const policy_partner_t *partner)
{
    return partner != NULL && partner->index < p->n_partners &&
           &p->partners[partner->index] == partner;
}

/* ------------------------------------------------------------------ decisions */

static verdict_t case_deny(char *reason, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static verdict_t case_deny(char *reason, size_t len, const char *fmt, ...)
{
    if (reason != NULL && len > 0) {
        va_list args;
        va_start(args, fmt);
        vsnprintf(reason, len, fmt, args);
        va_end(args);
    }
    return VERDICT_DENY;
}

verdict_t policy_case_may_open(const policy_t *policy, const policy_case_type_t *type,
                               const policy_principal_t *opener, char *reason, size_t len)
{
    if (reason != NULL && len > 0)
        reason[0] = '\0';
    const case_type_entry_t *t = case_type_of(policy, type);
    if (t == NULL)
        return case_deny(reason, len, "not a case type of the current policy");
    if (!principal_of(policy, opener))
        return case_deny(reason, len, "opener is not a principal of the current policy");
    if (opener->role == ROLE_OPERATOR)
        return case_deny(reason, len, "%s is an operator; operators never take part in cases",
                         opener->id);
    if (!(t->lead_partners >> opener->partner->index & 1))
        return case_deny(reason, len,
                         "%s (%s) may not open a case of type \"%s\": %s is not one of its lead "
                         "partners",
                         opener->partner->id, opener->id, t->pub.id, opener->partner->id);
    if (!(t->lead_roles & (unsigned)opener->role))
        return case_deny(reason, len,
                         "%s (%s) may not open a case of type \"%s\": role %s is not in its "
                         "lead_roles",
                         opener->partner->id, opener->id, t->pub.id,
                         policy_role_name(opener->role));
    return VERDICT_ALLOW;
}

verdict_t policy_case_may_act_for(const policy_t *policy, const policy_case_type_t *type,
                                  const policy_principal_t *actor,
                                  const policy_partner_t *lead_partner)
{
    const case_type_entry_t *t = case_type_of(policy, type);
    if (t == NULL || !principal_of(policy, actor) || !partner_of(policy, lead_partner) ||
        actor->role == ROLE_OPERATOR || !(t->lead_partners >> lead_partner->index & 1))
        return VERDICT_DENY;
    uint32_t index = (uint32_t)(actor - policy->principals);
    if (t->n_on_behalf == 0 ||
        bsearch(&index, t->on_behalf, t->n_on_behalf, sizeof *t->on_behalf, cmp_u32) == NULL)
        return VERDICT_DENY;
    return VERDICT_ALLOW;
}

const policy_case_member_rule_t *policy_case_membership(const policy_t *policy,
                                                        const policy_case_type_t *type,
                                                        const policy_partner_t *partner,
                                                        const policy_partner_t *lead)
{
    const case_type_entry_t *t = case_type_of(policy, type);
    if (t == NULL || !partner_of(policy, partner) || !partner_of(policy, lead))
        return NULL;
    if (partner == lead)
        return t->lead_partners >> lead->index & 1 ? &policy->case_members[t->first_member].pub
                                                   : NULL;
    uint8_t slot = t->member_of[partner->index];
    return slot ? &policy->case_members[t->first_member + slot].pub : NULL;
}

int policy_case_member_reaches(const policy_t *policy, const policy_case_member_rule_t *rule,
                               const policy_principal_t *principal)
{
    const case_member_entry_t *m = case_member_of(policy, rule);
    if (m == NULL || !principal_of(policy, principal) || principal->role == ROLE_OPERATOR)
        return 0;
    return (m->partners >> principal->partner->index & 1) && (m->roles & (unsigned)principal->role);
}

static int cmp_name_field(const void *name, const void *entry)
{
    const char *const *field = entry;
    return strcmp(name, *field);
}

int policy_case_member_sees(const policy_case_member_rule_t *rule, const char *name)
{
    if (rule == NULL || name == NULL || !syntax_is_id_token(name))
        return 0;
    /* pub is the entry's first member (policy_internal.h) */
    const case_member_entry_t *m = (const case_member_entry_t *)rule;
    if (m->all_fields)
        return 1;
    return m->n_fields > 0 && bsearch(name, m->fields_sorted, m->n_fields, sizeof *m->fields_sorted,
                                      cmp_name_field) != NULL;
}

uint32_t policy_case_member_signal_fields(const policy_case_member_rule_t *rule)
{
    return rule ? ((const case_member_entry_t *)rule)->signal_fields : 0;
}
