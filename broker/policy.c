/*
 * policy.c — loads, validates and indexes the access policy; decides who may
 * receive a signal (docs/POLICY.md).
 *
 * Trusts nothing in the policy text: it is size-capped and read once, walked
 * by libyaml to map entries to lines (anchors, aliases, deep nesting,
 * duplicate keys and control characters refused), loaded by libcyaml against
 * a strict schema, then checked field by field. Every load error is
 * "FILE:LINE: message". Decisions deny unless a rule allows.
 */
#include "policy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cyaml/cyaml.h>
#include <sodium.h>
#include <yaml.h>

#include "keys.h"
#include "syntax.h"

_Static_assert(SCHAKEL_MAX_PARTNERS <= 64, "partner sets are 64-bit masks");

#define ROLES_DEFAULT (ROLE_SYSTEM | ROLE_CASEWORKER)
#define NO_INDEX ((size_t)-1)

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
    unsigned version;
    doc_partner_t *partners;
    unsigned partners_count;
    doc_principal_t *principals;
    unsigned principals_count;
    doc_rule_t *rules;
    unsigned rules_count;
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
    CYAML_FIELD_UINT("version", CYAML_FLAG_DEFAULT, doc_policy_t, version),
    CYAML_FIELD_SEQUENCE("partners", CYAML_FLAG_POINTER, doc_policy_t, partners, &schema_partner, 1,
                         SCHAKEL_MAX_PARTNERS),
    CYAML_FIELD_SEQUENCE("principals", CYAML_FLAG_POINTER, doc_policy_t, principals,
                         &schema_principal, 0, SCHAKEL_MAX_PRINCIPALS),
    CYAML_FIELD_SEQUENCE("rules", CYAML_FLAG_POINTER, doc_policy_t, rules, &schema_rule, 0,
                         SCHAKEL_MAX_RULES),
    CYAML_FIELD_END};

static const cyaml_schema_value_t schema_policy = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, doc_policy_t, schema_policy_fields)};
#undef OPT

/* ------------------------------------------------------------------ types */

typedef struct rule_entry {
    policy_rule_t pub;      /* what the API hands out; first member */
    size_t index;           /* file order */
    uint64_t from_partners; /* bit i = partner index i */
    uint64_t to_partners;   /* as written */
    uint64_t to_reachable;  /* to_partners with a principal that to_roles admits */
    unsigned from_roles;
    unsigned to_roles;
    uint64_t themes; /* bit i = syntax_themes[i]; unused when any_theme */
    bool any_theme, any_kind, any_area;
    char *const *kinds;
    size_t n_kinds;
    char *const *areas;
    size_t n_areas;
} rule_entry_t;

struct policy {
    doc_policy_t *doc; /* owns every string the structures below point to */
    char hash_hex[65];
    policy_partner_t *partners;
    size_t n_partners;
    const policy_partner_t **partners_by_id;
    unsigned partner_roles[SCHAKEL_MAX_PARTNERS]; /* roles present per partner */
    policy_principal_t *principals;
    size_t n_principals;
    const policy_principal_t **principals_by_id;
    const policy_principal_t **principals_by_curve;
    uint32_t *partner_members_start; /* n_partners + 1 offsets into partner_members */
    uint32_t *partner_members;       /* principal indexes grouped by partner */
    rule_entry_t *rules;
    size_t n_rules;
    size_t n_themes;      /* theme slots per partner: n_themes + 1 ("*" last) */
    uint32_t *slot_start; /* n_partners * (n_themes + 1) + 1 offsets into slot_rules */
    uint32_t *slot_rules; /* rule indexes, file order within a slot */
};

/* ------------------------------------------------------------------ load context */

/* Line map: one node per YAML value, in document order, with the line of
 * the value (for a mapping value: the line of its key). libcyaml cannot say
 * on which line a semantically wrong value sits, so this is how every
 * error finds its line. */
typedef struct linemap_node {
    uint32_t line;
    uint32_t parent;
    uint32_t first_child;
    uint32_t last_child;
    uint32_t next_sibling;
    uint32_t key; /* 1 + offset of the key text in the key pool; 0 if none */
    uint32_t n_children;
    uint8_t kind; /* LINEMAP_SCALAR, LINEMAP_SEQUENCE, LINEMAP_MAPPING */
} linemap_node_t;

enum { LINEMAP_SCALAR = 0, LINEMAP_SEQUENCE = 1, LINEMAP_MAPPING = 2 };

typedef struct linemap {
    linemap_node_t *nodes; /* nodes[0] is the stream, its child the document */
    size_t n_nodes, cap_nodes;
    char *pool;
    size_t pool_len, pool_cap;
} linemap_t;

typedef struct load_ctx {
    const char *name;
    const char *base_dir;
    char *err;
    size_t errlen;
    linemap_t map;
} load_ctx_t;

static int load_fail(load_ctx_t *ctx, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes "NAME:LINE: message" (LINE 0: "NAME: message"); returns -1. */
static int load_fail(load_ctx_t *ctx, unsigned line, const char *fmt, ...)
{
    char message[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    if (ctx->err == NULL || ctx->errlen == 0)
        return -1;
    if (line > 0)
        snprintf(ctx->err, ctx->errlen, "%s:%u: %s", ctx->name, line, message);
    else
        snprintf(ctx->err, ctx->errlen, "%s: %s", ctx->name, message);
    return -1;
}

/* ------------------------------------------------------------------ line map */

#define LINEMAP_MAX_DEPTH 16
#define LINEMAP_MAX_KEYS 64    /* keys in one mapping; the schema has at most 13 */
#define LINEMAP_MAX_KEY_LEN 64 /* bytes of one mapping key */

typedef struct linemap_frame {
    uint32_t node;
    bool is_mapping;
    bool expect_key;
    uint32_t pending_key;
    uint32_t key_line;
} linemap_frame_t;

typedef struct linemap_builder {
    linemap_frame_t stack[LINEMAP_MAX_DEPTH];
    size_t depth;
    unsigned documents;
} linemap_builder_t;

static const char *linemap_key_text(const linemap_t *map, uint32_t node)
{
    return map->nodes[node].key ? map->pool + map->nodes[node].key - 1 : NULL;
}

static uint32_t linemap_new_node(linemap_t *map, uint32_t parent, uint32_t line, uint32_t key,
                                 int kind)
{
    if (map->n_nodes == map->cap_nodes) {
        size_t cap = map->cap_nodes ? map->cap_nodes * 2 : 1024;
        linemap_node_t *nodes = realloc(map->nodes, cap * sizeof *nodes);
        if (nodes == NULL)
            return 0;
        map->nodes = nodes;
        map->cap_nodes = cap;
    }
    uint32_t id = (uint32_t)map->n_nodes++;
    map->nodes[id] =
        (linemap_node_t){.line = line, .parent = parent, .key = key, .kind = (uint8_t)kind};
    if (id == 0)
        return id;
    linemap_node_t *p = &map->nodes[parent];
    if (p->last_child)
        map->nodes[p->last_child].next_sibling = id;
    else
        p->first_child = id;
    p->last_child = id;
    p->n_children++;
    return id;
}

static uint32_t linemap_pool_add(linemap_t *map, const char *text, size_t len)
{
    if (map->pool_len + len + 1 > map->pool_cap) {
        size_t cap = map->pool_cap ? map->pool_cap * 2 : 4096;
        while (cap < map->pool_len + len + 1)
            cap *= 2;
        char *pool = realloc(map->pool, cap);
        if (pool == NULL)
            return 0;
        map->pool = pool;
        map->pool_cap = cap;
    }
    memcpy(map->pool + map->pool_len, text, len);
    map->pool[map->pool_len + len] = '\0';
    uint32_t key = (uint32_t)map->pool_len + 1;
    map->pool_len += len + 1;
    return key;
}

/* A key in key position of the mapping on top of the stack. */
static int linemap_key(load_ctx_t *ctx, linemap_frame_t *top, unsigned line, const char *text,
                       size_t len)
{
    linemap_t *map = &ctx->map;
    if (len > LINEMAP_MAX_KEY_LEN)
        return load_fail(ctx, line, "mapping key longer than %u bytes", LINEMAP_MAX_KEY_LEN);
    if (map->nodes[top->node].n_children >= LINEMAP_MAX_KEYS)
        return load_fail(ctx, line, "more than %u keys in one mapping", LINEMAP_MAX_KEYS);
    for (uint32_t c = map->nodes[top->node].first_child; c; c = map->nodes[c].next_sibling) {
        const char *seen = linemap_key_text(map, c);
        if (seen && strlen(seen) == len && memcmp(seen, text, len) == 0)
            return load_fail(ctx, line, "duplicate key \"%.*s\" (first at line %u)", (int)len, text,
                             map->nodes[c].line);
    }
    top->pending_key = linemap_pool_add(map, text, len);
    if (top->pending_key == 0)
        return load_fail(ctx, line, "out of memory");
    top->key_line = line;
    top->expect_key = false;
    return 0;
}

static int linemap_value(load_ctx_t *ctx, linemap_builder_t *b, unsigned line, int kind,
                         const char *text, size_t len)
{
    linemap_frame_t *top = b->depth ? &b->stack[b->depth - 1] : NULL;
    if (top && top->is_mapping && top->expect_key) {
        if (kind != LINEMAP_SCALAR)
            return load_fail(ctx, line, "a mapping key must be a plain string");
        return linemap_key(ctx, top, line, text, len);
    }
    uint32_t parent = top ? top->node : 0;
    uint32_t key = 0;
    if (top && top->is_mapping) {
        key = top->pending_key;
        line = top->key_line;
        top->expect_key = true;
    }
    uint32_t node = linemap_new_node(&ctx->map, parent, line, key, kind);
    if (node == 0)
        return load_fail(ctx, line, "out of memory");
    if (kind == LINEMAP_SCALAR)
        return 0;
    if (b->depth == LINEMAP_MAX_DEPTH)
        return load_fail(ctx, line, "nesting deeper than %d levels", LINEMAP_MAX_DEPTH);
    b->stack[b->depth++] = (linemap_frame_t){
        .node = node, .is_mapping = kind == LINEMAP_MAPPING, .expect_key = kind == LINEMAP_MAPPING};
    return 0;
}

/* Strings may hold tabs and line breaks, no other control characters and
 * no NUL (a C string would silently end there). */
static int linemap_check_scalar(load_ctx_t *ctx, unsigned line, const unsigned char *text,
                                size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = text[i];
        if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7f)
            return load_fail(ctx, line, "control character 0x%02x in a string", c);
    }
    return 0;
}

static int linemap_event(load_ctx_t *ctx, linemap_builder_t *b, const yaml_event_t *ev)
{
    unsigned line = (unsigned)ev->start_mark.line + 1;
    const yaml_char_t *anchor = NULL;
    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        return load_fail(ctx, line, "aliases (*name) are not allowed");
    case YAML_DOCUMENT_START_EVENT:
        if (++b->documents > 1)
            return load_fail(ctx, line, "only one YAML document is allowed");
        return 0;
    case YAML_SCALAR_EVENT:
        anchor = ev->data.scalar.anchor;
        if (anchor == NULL &&
            linemap_check_scalar(ctx, line, ev->data.scalar.value, ev->data.scalar.length) != 0)
            return -1;
        break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = ev->data.sequence_start.anchor;
        break;
    case YAML_MAPPING_START_EVENT:
        anchor = ev->data.mapping_start.anchor;
        break;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        b->depth--;
        return 0;
    default:
        return 0;
    }
    if (anchor != NULL)
        return load_fail(ctx, line, "anchors (&name) are not allowed");
    if (ev->type == YAML_SCALAR_EVENT)
        return linemap_value(ctx, b, line, LINEMAP_SCALAR, (const char *)ev->data.scalar.value,
                             ev->data.scalar.length);
    return linemap_value(ctx, b, line,
                         ev->type == YAML_SEQUENCE_START_EVENT ? LINEMAP_SEQUENCE : LINEMAP_MAPPING,
                         NULL, 0);
}

/* Walk the document once with libyaml. Also the place where YAML syntax
 * errors are reported, with libyaml's own line. */
static int linemap_build(load_ctx_t *ctx, const uint8_t *buf, size_t len)
{
    yaml_parser_t parser;
    linemap_builder_t builder = {.depth = 0};
    linemap_new_node(&ctx->map, 0, 1, 0, LINEMAP_SEQUENCE); /* the stream: node 0 */
    if (ctx->map.n_nodes != 1)
        return load_fail(ctx, 0, "out of memory");
    if (!yaml_parser_initialize(&parser))
        return load_fail(ctx, 0, "cannot initialise the YAML parser");
    yaml_parser_set_input_string(&parser, buf, len);
    int rc = 0;
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            char context[160] = "";
            if (parser.context)
                snprintf(context, sizeof context, " %s (started at line %u)", parser.context,
                         (unsigned)parser.context_mark.line + 1);
            rc = load_fail(ctx, (unsigned)parser.problem_mark.line + 1, "YAML syntax: %s%s",
                           parser.problem ? parser.problem : "error", context);
            break;
        }
        int done = ev.type == YAML_STREAM_END_EVENT;
        rc = linemap_event(ctx, &builder, &ev);
        yaml_event_delete(&ev);
        if (rc != 0 || done)
            break;
    }
    yaml_parser_delete(&parser);
    return rc;
}

static void linemap_free(linemap_t *map)
{
    free(map->nodes);
    free(map->pool);
    memset(map, 0, sizeof *map);
}

static uint32_t linemap_child_by_key(const linemap_t *map, uint32_t node, const char *key)
{
    for (uint32_t c = map->nodes[node].first_child; c; c = map->nodes[c].next_sibling) {
        const char *k = linemap_key_text(map, c);
        if (k && strcmp(k, key) == 0)
            return c;
    }
    return 0;
}

static uint32_t linemap_child_at(const linemap_t *map, uint32_t node, size_t index)
{
    uint32_t c = map->nodes[node].first_child;
    while (c && index-- > 0)
        c = map->nodes[c].next_sibling;
    return c;
}

/* Best line for section[entry].key[item]: the deepest of these found.
 * entry/item NO_INDEX and key NULL stop the descent early. */
static unsigned linemap_where(const load_ctx_t *ctx, const char *section, size_t entry,
                              const char *key, size_t item)
{
    const linemap_t *map = &ctx->map;
    if (map->n_nodes < 2)
        return 1;
    uint32_t node = map->nodes[0].first_child;
    unsigned line = map->nodes[node].line;
    uint32_t next = section ? linemap_child_by_key(map, node, section) : 0;
    if (next == 0)
        return line;
    line = map->nodes[next].line;
    if (entry == NO_INDEX || (next = linemap_child_at(map, next, entry)) == 0)
        return line;
    line = map->nodes[next].line;
    if (key == NULL || (next = linemap_child_by_key(map, next, key)) == 0)
        return line;
    line = map->nodes[next].line;
    if (item == NO_INDEX || (next = linemap_child_at(map, next, item)) == 0)
        return line;
    return map->nodes[next].line;
}

/* Line of the mapping libcyaml was reading when it missed a key: it names
 * the last field it read (`key`, may be empty) and the line of that field's
 * value. Nodes are in document order, so their lines never decrease. */
static unsigned linemap_enclosing_mapping(const linemap_t *map, const char *key, unsigned line)
{
    uint32_t at = 0, keyed = 0;
    for (size_t i = 1; i < map->n_nodes && map->nodes[i].line <= line; i++) {
        const char *k = linemap_key_text(map, (uint32_t)i);
        at = (uint32_t)i;
        if (k && key[0] != '\0' && strcmp(k, key) == 0)
            keyed = (uint32_t)i;
    }
    if (keyed)
        at = map->nodes[keyed].parent;
    while (at != 0 && map->nodes[at].kind != LINEMAP_MAPPING)
        at = map->nodes[at].parent;
    return at ? map->nodes[at].line : line;
}

/* First mapping key `key` at or after `line`, in document order. */
static unsigned linemap_find_key(const linemap_t *map, const char *key, unsigned line)
{
    for (size_t i = 1; i < map->n_nodes; i++) {
        const char *k = linemap_key_text(map, (uint32_t)i);
        if (k && map->nodes[i].line >= line && strcmp(k, key) == 0)
            return map->nodes[i].line;
    }
    return line;
}

/* ------------------------------------------------------------------ cyaml */

/* libcyaml reports an error as one message followed by a backtrace whose
 * first entry names the line of the innermost value it was loading. */
typedef struct cyaml_capture {
    char message[200];
    char field[LINEMAP_MAX_KEY_LEN + 1]; /* innermost "in mapping field 'x'" */
    unsigned line;
    bool in_backtrace;
} cyaml_capture_t;

static void policy_cyaml_log(cyaml_log_t level, void *ctx, const char *fmt, va_list args)
    __attribute__((format(printf, 3, 0)));

static void policy_cyaml_log(cyaml_log_t level, void *ctx, const char *fmt, va_list args)
{
    cyaml_capture_t *cap = ctx;
    char text[256];
    if (level < CYAML_LOG_ERROR)
        return;
    vsnprintf(text, sizeof text, fmt, args);
    if (strncmp(text, "Load: Backtrace:", 16) == 0) {
        cap->in_backtrace = true;
        return;
    }
    const char *at = strstr(text, "(line: ");
    if (cap->in_backtrace) {
        if (cap->line == 0 && at) {
            cap->line = (unsigned)strtoul(at + 7, NULL, 10);
            const char *field = strstr(text, "in mapping field '");
            if (field && field < at)
                sscanf(field + 18, "%64[^']", cap->field);
        }
        return;
    }
    if (cap->message[0] != '\0')
        return;
    const char *msg = strncmp(text, "Load: ", 6) == 0 ? text + 6 : text;
    size_t n = 0;
    for (; msg[n] && n + 1 < sizeof cap->message; n++)
        cap->message[n] = (msg[n] >= 0x20 && msg[n] < 0x7f) ? msg[n] : ' ';
    while (n > 0 && cap->message[n - 1] == ' ')
        n--;
    cap->message[n] = '\0';
}

/* Strict: unknown keys are errors (libcyaml's default), aliases refused. */
static cyaml_config_t policy_cyaml_config(cyaml_capture_t *cap)
{
    return (cyaml_config_t){
        .log_fn = cap ? policy_cyaml_log : NULL,
        .log_ctx = cap,
        .mem_fn = cyaml_mem,
        .log_level = CYAML_LOG_ERROR,
        .flags = CYAML_CFG_NO_ALIAS,
    };
}

/* libcyaml's wording for policy writers. */
static void doc_explain(const char *message, char *out, size_t outlen)
{
    static const struct {
        const char *cyaml;
        const char *plain;
    } words[] = {{"SEQUENCE_START", "a list"},   {"SEQUENCE", "a list"},
                 {"MAPPING_START", "a mapping"}, {"MAPPING", "a mapping"},
                 {"SCALAR", "a single value"},   {"STRING", "a single value"}};
    char expected[32], found[32];
    unsigned n;
    if (sscanf(message, "Expecting %31[A-Z_], got event: %31[A-Z_]", expected, found) == 2) {
        const char *e = expected, *f = found;
        for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
            if (strcmp(expected, words[i].cyaml) == 0 && e == expected)
                e = words[i].plain;
            if (strcmp(found, words[i].cyaml) == 0 && f == found)
                f = words[i].plain;
        }
        snprintf(out, outlen, "expected %s, found %s", e, f);
    } else if (sscanf(message, "STRING length > %u", &n) == 1) {
        snprintf(out, outlen, "longer than %u bytes", n);
    } else if (sscanf(message, "STRING length < %u", &n) == 1) {
        snprintf(out, outlen, "must not be empty");
    } else if (sscanf(message, "Excessive entries (%u max)", &n) == 1) {
        snprintf(out, outlen, "more than %u entries", n);
    } else if (strncmp(message, "Insufficient entries", 20) == 0) {
        snprintf(out, outlen, "must not be an empty list");
    } else if (strncmp(message, "Invalid uint64_t value", 22) == 0 ||
               strncmp(message, "Invalid UINT value", 18) == 0) {
        snprintf(out, outlen, "expected a whole number");
    } else {
        snprintf(out, outlen, "%s", message);
    }
}

static int doc_load(load_ctx_t *ctx, const uint8_t *buf, size_t len, doc_policy_t **out)
{
    cyaml_capture_t cap = {.line = 0};
    cyaml_config_t config = policy_cyaml_config(&cap);
    cyaml_data_t *data = NULL;
    cyaml_err_t rc = cyaml_load_data(buf, len, &config, &schema_policy, &data, NULL);
    if (rc == CYAML_OK && data == NULL)
        return load_fail(ctx, 1, "the policy is empty");
    if (rc == CYAML_OK) {
        *out = data;
        return 0;
    }
    unsigned line = cap.line ? cap.line : 1;
    if (rc == CYAML_ERR_INVALID_KEY && strncmp(cap.message, "Unexpected key: ", 16) == 0) {
        const char *key = cap.message + 16;
        return load_fail(ctx, linemap_find_key(&ctx->map, key, line),
                         "unknown key \"%s\" (see docs/POLICY.md for the keys allowed here)", key);
    }
    if (rc == CYAML_ERR_MAPPING_FIELD_MISSING &&
        strncmp(cap.message, "Missing required mapping field: ", 32) == 0)
        return load_fail(ctx, linemap_enclosing_mapping(&ctx->map, cap.field, line),
                         "missing key \"%s\"", cap.message + 32);
    char plain[256];
    doc_explain(cap.message[0] ? cap.message : cyaml_strerror(rc), plain, sizeof plain);
    if (cap.field[0] != '\0')
        return load_fail(ctx, line, "%s: %s", cap.field, plain);
    return load_fail(ctx, line, "%s", plain);
}

static void doc_free(doc_policy_t *doc)
{
    if (doc == NULL)
        return;
    cyaml_config_t config = policy_cyaml_config(NULL);
    cyaml_free(&config, &schema_policy, doc, 0);
}

/* ------------------------------------------------------------------ vocabulary */

static const struct {
    const char *name;
    role_t role;
} role_names[] = {
    {"system", ROLE_SYSTEM}, {"caseworker", ROLE_CASEWORKER}, {"operator", ROLE_OPERATOR}};

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

static role_t role_parse(const char *name)
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

static size_t theme_count(void)
{
    size_t n = 0;
    while (syntax_themes[n] != NULL)
        n++;
    return n;
}

static size_t theme_index(const char *theme)
{
    for (size_t i = 0; theme && syntax_themes[i] != NULL; i++)
        if (strcmp(theme, syntax_themes[i]) == 0)
            return i;
    return NO_INDEX;
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

/* Position of the later copy of the first duplicate (in sorted order) among
 * items, or NO_INDEX. O(n log n). */
static size_t list_duplicate(char *const *items, size_t n, size_t *first)
{
    if (n < 2)
        return NO_INDEX;
    char *const **slots = malloc(n * sizeof *slots);
    if (slots == NULL)
        abort(); /* the daemon may die on out-of-memory (STYLE.md) */
    for (size_t i = 0; i < n; i++)
        slots[i] = &items[i];
    qsort(slots, n, sizeof *slots, cmp_string_slot);
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

static void *xcalloc(size_t n, size_t size)
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
    p->partners = xcalloc(p->n_partners, sizeof *p->partners);
    p->partners_by_id = xcalloc(p->n_partners, sizeof *p->partners_by_id);
    for (size_t i = 0; i < p->n_partners; i++) {
        const doc_partner_t *d = &doc->partners[i];
        if (!syntax_is_id_token(d->id))
            return load_fail(ctx, linemap_where(ctx, "partners", i, "id", NO_INDEX),
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
            return load_fail(ctx, linemap_where(ctx, "partners", later->index, "id", NO_INDEX),
                             "duplicate partner id \"%s\" (first at line %u)", later->id,
                             linemap_where(ctx, "partners", earlier->index, "id", NO_INDEX));
        }
    }
    return 0;
}

const policy_partner_t *policy_partner_by_id(const policy_t *policy, const char *id)
{
    if (policy == NULL || id == NULL)
        return NULL;
    size_t lo = 0, hi = policy->n_partners;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(policy->partners_by_id[mid]->id, id);
        if (c == 0)
            return policy->partners_by_id[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ------------------------------------------------------------------ principals */

static int principal_key(load_ctx_t *ctx, size_t i, const doc_principal_t *d, uint8_t pk[32])
{
    if ((d->key == NULL) == (d->key_file == NULL))
        return load_fail(ctx, linemap_where(ctx, "principals", i, NULL, NO_INDEX),
                         "principal \"%s\" needs exactly one of key and key_file", d->id);
    if (d->key != NULL) {
        if (keys_parse_public_z85(d->key, pk) != 0)
            return load_fail(ctx, linemap_where(ctx, "principals", i, "key", NO_INDEX),
                             "key of principal \"%s\" is not a Z85 Ed25519 public key "
                             "(40 characters)",
                             d->id);
        return 0;
    }
    unsigned line = linemap_where(ctx, "principals", i, "key_file", NO_INDEX);
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
    unsigned id_line = linemap_where(ctx, "principals", i, "id", NO_INDEX);
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
    out->role = role_parse(d->role);
    if (out->role == ROLE_NONE)
        return load_fail(ctx, linemap_where(ctx, "principals", i, "role", NO_INDEX),
                         "unknown role \"%.32s\" (system, caseworker or operator)", d->role);
    if (principal_key(ctx, i, d, out->sign_pk) != 0)
        return -1;
    if (keys_sign_pk_to_curve(out->sign_pk, out->curve_pk) != 0)
        return load_fail(ctx, linemap_where(ctx, "principals", i, NULL, NO_INDEX),
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
                ctx, linemap_where(ctx, "principals", later, k ? NULL : "id", NO_INDEX),
                k == 0 ? "duplicate principal id \"%s\" (first at line %u)"
                       : "principal \"%s\" has the same key as the one at line %u",
                b->id, linemap_where(ctx, "principals", first, k ? NULL : "id", NO_INDEX));
        }
    }
    return 0;
}

static int principals_build(load_ctx_t *ctx, policy_t *p)
{
    size_t n = p->n_principals = p->doc->principals_count;
    p->principals = xcalloc(n, sizeof *p->principals);
    p->principals_by_id = xcalloc(n, sizeof *p->principals_by_id);
    p->principals_by_curve = xcalloc(n, sizeof *p->principals_by_curve);
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
    p->partner_members_start = xcalloc(p->n_partners + 1, sizeof *p->partner_members_start);
    p->partner_members = xcalloc(n, sizeof *p->partner_members);
    for (size_t i = 0; i < n; i++) {
        /* The broker delivers to at most this many principals of a partner:
         * refuse more here rather than skip some at delivery. */
        if (++p->partner_members_start[p->principals[i].partner->index + 1] >
            SCHAKEL_MAX_PRINCIPALS_PER_PARTNER)
            return load_fail(ctx, linemap_where(ctx, "principals", i, "id", NO_INDEX),
                             "partner \"%s\" has more than %u principals",
                             p->principals[i].partner->id, SCHAKEL_MAX_PRINCIPALS_PER_PARTNER);
    }
    for (size_t k = 0; k < p->n_partners; k++)
        p->partner_members_start[k + 1] += p->partner_members_start[k];
    uint32_t *fill = xcalloc(p->n_partners, sizeof *fill);
    for (size_t i = 0; i < n; i++) {
        size_t k = p->principals[i].partner->index;
        p->partner_members[p->partner_members_start[k] + fill[k]++] = (uint32_t)i;
    }
    free(fill);
    return 0;
}

const policy_principal_t *policy_principal_by_id(const policy_t *policy, const char *id)
{
    if (policy == NULL || id == NULL)
        return NULL;
    size_t lo = 0, hi = policy->n_principals;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(policy->principals_by_id[mid]->id, id);
        if (c == 0)
            return policy->principals_by_id[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const policy_principal_t *policy_principal_by_curve_key(const policy_t *policy,
                                                        const uint8_t curve_pk[32])
{
    if (policy == NULL || curve_pk == NULL)
        return NULL;
    size_t lo = 0, hi = policy->n_principals;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(policy->principals_by_curve[mid]->curve_pk, curve_pk, 32);
        if (c == 0)
            return policy->principals_by_curve[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ------------------------------------------------------------------ rules */

/* Retention "N" + unit: m(inutes), h(ours), d(ays), y(ears of 365 days).
 * Returns 0, -1 for bad syntax, -2 for a value over the cap. */
static int retention_parse(const char *text, int64_t *seconds)
{
    size_t len = strlen(text);
    if (len < 2 || text[0] < '1' || text[0] > '9')
        return -1;
    int64_t unit;
    switch (text[len - 1]) {
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

typedef struct rule_ctx {
    load_ctx_t *load;
    policy_t *policy;
    size_t index;
    const doc_rule_t *doc;
    rule_entry_t *rule;
} rule_ctx_t;

static unsigned rule_line(const rule_ctx_t *rc, const char *key, size_t item)
{
    return linemap_where(rc->load, "rules", rc->index, key, item);
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
        role_t role = role_parse(names[i]);
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
                         "by m, h, d or y (e.g. 365d)",
                         d->id, d->retention);
    return 0;
}

static uint64_t rule_theme_mask(const doc_rule_t *d)
{
    uint64_t mask = 0;
    for (size_t i = 0; i < d->themes_count; i++) {
        size_t t = theme_index(d->themes[i]);
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
    p->rules = xcalloc(n, sizeof *p->rules);
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
    const rule_entry_t **sorted = xcalloc(n, sizeof *sorted);
    for (size_t i = 0; i < n; i++)
        sorted[i] = &p->rules[i];
    qsort(sorted, n, sizeof *sorted, cmp_rule_id);
    int rc = 0;
    for (size_t i = 1; i < n && rc == 0; i++) {
        if (strcmp(sorted[i - 1]->pub.id, sorted[i]->pub.id) == 0)
            rc = load_fail(ctx, linemap_where(ctx, "rules", sorted[i]->index, "id", NO_INDEX),
                           "duplicate rule id \"%s\" (first at line %u)", sorted[i]->pub.id,
                           sorted[i - 1]->pub.line);
    }
    free(sorted);
    return rc;
}

/* Candidate lists per (sender partner, theme slot): a rule is listed under
 * each partner of its `from` and each of its themes, or under the "*" slot.
 * Built as one offsets array plus one flat array (two passes). */
static void index_build(policy_t *p)
{
    size_t slots_per = p->n_themes + 1, n_slots = p->n_partners * slots_per;
    p->slot_start = xcalloc(n_slots + 1, sizeof *p->slot_start);
    for (int pass = 0; pass < 2; pass++) {
        uint32_t *fill = pass ? xcalloc(n_slots, sizeof *fill) : NULL;
        for (size_t i = 0; i < p->n_rules; i++) {
            const rule_entry_t *r = &p->rules[i];
            uint64_t themes = r->any_theme ? UINT64_C(1) << p->n_themes : r->themes;
            for (uint64_t from = r->from_partners; from; from &= from - 1) {
                size_t k = (size_t)__builtin_ctzll(from);
                for (uint64_t t = themes; t; t &= t - 1) {
                    size_t slot = k * slots_per + (size_t)__builtin_ctzll(t);
                    if (pass == 0)
                        p->slot_start[slot + 1]++;
                    else
                        p->slot_rules[p->slot_start[slot] + fill[slot]++] = (uint32_t)i;
                }
            }
        }
        if (pass == 0) {
            for (size_t s = 0; s < n_slots; s++)
                p->slot_start[s + 1] += p->slot_start[s];
            p->slot_rules = xcalloc(p->slot_start[n_slots], sizeof *p->slot_rules);
        }
        free(fill);
    }
}

/* ------------------------------------------------------------------ load */

policy_t *policy_load_buffer(const char *name, const uint8_t *buf, size_t len, const char *base_dir,
                             char *err, size_t errlen)
{
    load_ctx_t ctx = {
        .name = name ? name : "policy", .base_dir = base_dir, .err = err, .errlen = errlen};
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
    policy_t *p = xcalloc(1, sizeof *p);
    p->n_themes = theme_count();
    if (p->n_themes > 63)
        abort(); /* theme sets are 64-bit masks; the vocabulary is far smaller */
    uint8_t digest[32];
    crypto_generichash(digest, sizeof digest, buf, len, NULL, 0);
    syntax_hex(digest, sizeof digest, p->hash_hex);
    static const uint8_t empty[1] = {0};
    int rc = linemap_build(&ctx, buf ? buf : empty, len);
    if (rc == 0 && ctx.map.n_nodes > 1 && ctx.map.nodes[1].kind != LINEMAP_MAPPING)
        rc = load_fail(&ctx, ctx.map.nodes[1].line,
                       "a policy is a mapping with version, partners, principals and rules");
    if (rc == 0)
        rc = doc_load(&ctx, buf ? buf : empty, len, &p->doc);
    if (rc == 0 && p->doc->version != 1)
        rc = load_fail(&ctx, linemap_where(&ctx, "version", NO_INDEX, NULL, NO_INDEX),
                       "unsupported policy version %u (this broker reads version 1)",
                       p->doc->version);
    if (rc == 0)
        rc = partners_build(&ctx, p);
    if (rc == 0)
        rc = principals_build(&ctx, p);
    if (rc == 0)
        rc = rules_build(&ctx, p);
    if (rc == 0)
        index_build(p);
    linemap_free(&ctx.map);
    if (rc != 0)
        policy_destroy(&p);
    return p;
}

/* Read at most SCHAKEL_MAX_POLICY_BYTES + 1 bytes: one more tells us the
 * file is too large without trusting st_size. */
static uint8_t *policy_read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    size_t cap = SCHAKEL_MAX_POLICY_BYTES + 1, used = 0;
    uint8_t *buf = xcalloc(cap, 1);
    while (used < cap) {
        ssize_t n = read(fd, buf + used, cap - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
            free(buf);
            close(fd);
            return NULL;
        }
        if (n == 0)
            break;
        used += (size_t)n;
    }
    close(fd);
    if (used > SCHAKEL_MAX_POLICY_BYTES) {
        snprintf(err, errlen, "%s: policy is larger than %u bytes", path, SCHAKEL_MAX_POLICY_BYTES);
        free(buf);
        return NULL;
    }
    *len = used;
    return buf;
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
    size_t len = 0;
    uint8_t *buf = policy_read_file(path, &len, err, errlen);
    if (buf == NULL)
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
    doc_free(p->doc);
    free(p->partners);
    free(p->partners_by_id);
    free(p->principals);
    free(p->principals_by_id);
    free(p->principals_by_curve);
    free(p->partner_members_start);
    free(p->partner_members);
    free(p->rules);
    free(p->slot_start);
    free(p->slot_rules);
    free(p);
    *policy = NULL;
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
    size_t theme = theme_index(facts->theme);
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
