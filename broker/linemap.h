/*
 * linemap.h — the line of every value in a YAML document, for loaders whose
 * checks run after libcyaml has loaded the document (policy_load.c).
 *
 * libcyaml cannot say on which line a semantically wrong value sits, so one
 * libyaml pass beforehand records a tree of nodes with their lines, and is
 * also where unsafe or ambiguous YAML is refused. Private to the broker.
 */
#ifndef SCHAKEL_LINEMAP_H
#define SCHAKEL_LINEMAP_H

#include <stddef.h>
#include <stdint.h>

#include "yamlguard.h"

/* One node per YAML value, in document order, with the line of the value
 * (for a mapping value: the line of its key). Node ids are indexes into
 * linemap_t.nodes; 0 is the stream, so 0 also means "none" in the links. */
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

/* "No entry" / "no item" for linemap_where. */
#define LINEMAP_NO_INDEX ((size_t)-1)

/* Walk buf[0..len) once with libyaml (through yamlguard_walk) into map,
 * which must be zeroed. Refuses, with the line, into report: YAML syntax
 * errors (naming the construct and where it started), aliases, anchors, a
 * second document, nesting deeper than 16, mapping keys that are not plain
 * strings, longer than 64 bytes or more than 64 in one mapping, a key twice
 * in one mapping, and control characters in strings other than tab and line
 * break. Returns 0 or -1. Safe on untrusted input; free map with
 * linemap_free either way. */
int linemap_build(linemap_t *map, const yamlguard_report_t *report, const uint8_t *buf, size_t len);

/* Free what the map holds and zero it. */
void linemap_free(linemap_t *map);

/* The child of mapping `node` under `key`, or 0. */
uint32_t linemap_child_by_key(const linemap_t *map, uint32_t node, const char *key);

/* Best line for section[entry].key[item] of the document's top mapping: the
 * deepest of these found. entry/item LINEMAP_NO_INDEX and key or section
 * NULL stop the descent early. 1 for an empty document. */
unsigned linemap_where(const linemap_t *map, const char *section, size_t entry, const char *key,
                       size_t item);

/* Line of the mapping libcyaml was reading when it missed a key: it names
 * the last field it read (`key`, may be empty) and the line of that field's
 * value. */
unsigned linemap_enclosing_mapping(const linemap_t *map, const char *key, unsigned line);

/* Line of the first mapping key `key` at or after `line`, in document
 * order; `line` itself if there is none. */
unsigned linemap_find_key(const linemap_t *map, const char *key, unsigned line);

/* The first mapping key on `line` (borrowed from the map), or NULL: what to
 * name in a message about the value there when libcyaml names no field. */
const char *linemap_key_at(const linemap_t *map, unsigned line);

#endif
