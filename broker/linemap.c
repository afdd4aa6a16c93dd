/*
 * linemap.c — one libyaml pass that maps every YAML value to its line and
 * refuses unsafe or ambiguous YAML (see linemap.h).
 *
 * Trusts nothing in the text: depth, keys per mapping and key length are
 * capped, anchors, aliases, duplicate keys and control characters refused.
 * Errors are "NAME:LINE: message" through yamlguard; returns -1 on any.
 */
#include "linemap.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define LINEMAP_MAX_DEPTH 16
#define LINEMAP_MAX_KEYS 64    /* keys in one mapping; the policy schema has at most 13 */
#define LINEMAP_MAX_KEY_LEN 64 /* bytes of one mapping key */

typedef struct linemap_frame {
    uint32_t node;
    bool is_mapping;
    bool expect_key;
    uint32_t pending_key;
    uint32_t key_line;
} linemap_frame_t;

typedef struct linemap_builder {
    linemap_t *map;
    const yamlguard_report_t *report;
    linemap_frame_t stack[LINEMAP_MAX_DEPTH];
    size_t depth;
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
static int linemap_key(linemap_builder_t *b, linemap_frame_t *top, unsigned line, const char *text,
                       size_t len)
{
    linemap_t *map = b->map;
    if (len > LINEMAP_MAX_KEY_LEN)
        return yamlguard_fail(b->report, line, "mapping key longer than %u bytes",
                              LINEMAP_MAX_KEY_LEN);
    if (map->nodes[top->node].n_children >= LINEMAP_MAX_KEYS)
        return yamlguard_fail(b->report, line, "more than %u keys in one mapping",
                              LINEMAP_MAX_KEYS);
    for (uint32_t c = map->nodes[top->node].first_child; c; c = map->nodes[c].next_sibling) {
        const char *seen = linemap_key_text(map, c);
        if (seen && strlen(seen) == len && memcmp(seen, text, len) == 0)
            return yamlguard_fail(b->report, line, "duplicate key \"%.*s\" (first at line %u)",
                                  (int)len, text, map->nodes[c].line);
    }
    top->pending_key = linemap_pool_add(map, text, len);
    if (top->pending_key == 0)
        return yamlguard_fail(b->report, line, "out of memory");
    top->key_line = line;
    top->expect_key = false;
    return 0;
}

static int linemap_value(linemap_builder_t *b, unsigned line, int kind, const char *text,
                         size_t len)
{
    linemap_frame_t *top = b->depth ? &b->stack[b->depth - 1] : NULL;
    if (top && top->is_mapping && top->expect_key) {
        if (kind != LINEMAP_SCALAR)
            return yamlguard_fail(b->report, line, "a mapping key must be a plain string");
        return linemap_key(b, top, line, text, len);
    }
    uint32_t parent = top ? top->node : 0;
    uint32_t key = 0;
    if (top && top->is_mapping) {
        key = top->pending_key;
        line = top->key_line;
        top->expect_key = true;
    }
    uint32_t node = linemap_new_node(b->map, parent, line, key, kind);
    if (node == 0)
        return yamlguard_fail(b->report, line, "out of memory");
    if (kind == LINEMAP_SCALAR)
        return 0;
    if (b->depth == LINEMAP_MAX_DEPTH)
        return yamlguard_fail(b->report, line, "nesting deeper than %d levels", LINEMAP_MAX_DEPTH);
    b->stack[b->depth++] = (linemap_frame_t){
        .node = node, .is_mapping = kind == LINEMAP_MAPPING, .expect_key = kind == LINEMAP_MAPPING};
    return 0;
}

/* Strings may hold tabs and line breaks, no other control characters and
 * no NUL (a C string would silently end there). */
static int linemap_check_scalar(const yamlguard_report_t *report, unsigned line,
                                const unsigned char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = text[i];
        if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7f)
            return yamlguard_fail(report, line, "control character 0x%02x in a string", c);
    }
    return 0;
}

/* An event yamlguard_walk passes on (aliases and document starts it has
 * handled itself). */
static int linemap_event(void *ctx, const yaml_event_t *ev, unsigned line)
{
    linemap_builder_t *b = ctx;
    const yaml_char_t *anchor = NULL;
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        anchor = ev->data.scalar.anchor;
        if (anchor == NULL && linemap_check_scalar(b->report, line, ev->data.scalar.value,
                                                   ev->data.scalar.length) != 0)
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
        return yamlguard_fail(b->report, line, "anchors (&name) are not allowed");
    if (ev->type == YAML_SCALAR_EVENT)
        return linemap_value(b, line, LINEMAP_SCALAR, (const char *)ev->data.scalar.value,
                             ev->data.scalar.length);
    return linemap_value(b, line,
                         ev->type == YAML_SEQUENCE_START_EVENT ? LINEMAP_SEQUENCE : LINEMAP_MAPPING,
                         NULL, 0);
}

/* Walk the document once with libyaml. Also the place where YAML syntax
 * errors are reported, with libyaml's own line. */
int linemap_build(linemap_t *map, const yamlguard_report_t *report, const uint8_t *buf, size_t len)
{
    linemap_builder_t builder = {.map = map, .report = report, .depth = 0};
    linemap_new_node(map, 0, 1, 0, LINEMAP_SEQUENCE); /* the stream: node 0 */
    if (map->n_nodes != 1)
        return yamlguard_fail(report, 0, "out of memory");
    return yamlguard_walk(report, buf, len, YAMLGUARD_SYNTAX_CONTEXT, linemap_event, &builder);
}

void linemap_free(linemap_t *map)
{
    free(map->nodes);
    free(map->pool);
    memset(map, 0, sizeof *map);
}

uint32_t linemap_child_by_key(const linemap_t *map, uint32_t node, const char *key)
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

/* The deepest of section, entry, key and item found decides the line. */
unsigned linemap_where(const linemap_t *map, const char *section, size_t entry, const char *key,
                       size_t item)
{
    if (map->n_nodes < 2)
        return 1;
    uint32_t node = map->nodes[0].first_child;
    unsigned line = map->nodes[node].line;
    uint32_t next = section ? linemap_child_by_key(map, node, section) : 0;
    if (next == 0)
        return line;
    line = map->nodes[next].line;
    if (entry == LINEMAP_NO_INDEX || (next = linemap_child_at(map, next, entry)) == 0)
        return line;
    line = map->nodes[next].line;
    if (key == NULL || (next = linemap_child_by_key(map, next, key)) == 0)
        return line;
    line = map->nodes[next].line;
    if (item == LINEMAP_NO_INDEX || (next = linemap_child_at(map, next, item)) == 0)
        return line;
    return map->nodes[next].line;
}

/* Nodes are in document order, so their lines never decrease. */
unsigned linemap_enclosing_mapping(const linemap_t *map, const char *key, unsigned line)
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

unsigned linemap_find_key(const linemap_t *map, const char *key, unsigned line)
{
    for (size_t i = 1; i < map->n_nodes; i++) {
        const char *k = linemap_key_text(map, (uint32_t)i);
        if (k && map->nodes[i].line >= line && strcmp(k, key) == 0)
            return map->nodes[i].line;
    }
    return line;
}

const char *linemap_key_at(const linemap_t *map, unsigned line)
{
    for (size_t i = 1; i < map->n_nodes; i++) {
        const char *k = linemap_key_text(map, (uint32_t)i);
        if (k && map->nodes[i].line == line)
            return k;
    }
    return NULL;
}
