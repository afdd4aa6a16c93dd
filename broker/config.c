/*
 * config.c — loads the broker's configuration file (see config.h).
 *
 * Trusts nothing in the file: it is size-capped and read once, walked by
 * libyaml for syntax errors and the lines of its keys (aliases and a second
 * document refused), then loaded by libcyaml against a strict schema; the
 * shared pieces are yamlguard.c. Errors come back as "FILE:LINE: message";
 * nothing is printed.
 */
#include "config.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cyaml/cyaml.h>
#include <errno.h>
#include <stdint.h>

#include <yaml.h>

#include "schakel_limits.h"
#include "yamlguard.h"

#define CONFIG_MAX_BYTES (64u * 1024u)
#define CONFIG_MAX_VALUE 4096u

typedef struct config_doc {
    char *listen;
    char *key_file;
    char *policy;
    char *store;
    char *store_key_file;
    char *ack_timeout;
    char *max_publish_rate;
    char *max_connections;
    char *max_frame_bytes;
    char *max_items;
    char *max_summary;
    char *max_grounds;
    char *max_window;
    char *metrics_listen;
    char *admin_listen;
    char *sync_thread;
    char *max_handshakes;
    char *idle_timeout;
    char *admin_heartbeat_timeout;
    char *max_silent;
    char *idempotency_window;
    char *max_case_opens;
    char *max_case_opens_partner;
    char *max_principal_queued;
    char *max_unknown_acks;
    char *store_min_free;
    char *max_partner_stored;
} config_doc_t;

static const cyaml_schema_field_t config_schema_fields[] = {
    CYAML_FIELD_STRING_PTR("listen", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, config_doc_t, listen,
                           1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("key_file", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, config_doc_t,
                           key_file, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("policy", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, config_doc_t, policy,
                           1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("store", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, config_doc_t, store,
                           1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("store_key_file", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, config_doc_t,
                           store_key_file, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("ack_timeout", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, config_doc_t,
                           ack_timeout, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("max_publish_rate", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                           config_doc_t, max_publish_rate, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("max_connections_per_principal",
                           CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, config_doc_t, max_connections,
                           1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("max_frame_bytes", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                           config_doc_t, max_frame_bytes, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("max_items_per_publish", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                           config_doc_t, max_items, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("max_summary_length", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                           config_doc_t, max_summary, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("max_grounds_length", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                           config_doc_t, max_grounds, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("max_window", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, config_doc_t,
                           max_window, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("metrics_listen", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, config_doc_t,
                           metrics_listen, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("admin_listen", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, config_doc_t,
                           admin_listen, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("sync_thread", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, config_doc_t,
                           sync_thread, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("max_handshakes_per_minute", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                           config_doc_t, max_handshakes, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("connection_idle_timeout", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                           config_doc_t, idle_timeout, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("admin_heartbeat_timeout", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                           config_doc_t, admin_heartbeat_timeout, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("max_silent_connections", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                           config_doc_t, max_silent, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("idempotency_window", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                           config_doc_t, idempotency_window, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("max_case_opens_per_hour", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                           config_doc_t, max_case_opens, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("max_case_opens_per_hour_per_partner",
                           CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, config_doc_t,
                           max_case_opens_partner, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("max_queued_bytes_per_principal",
                           CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, config_doc_t,
                           max_principal_queued, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("max_unknown_acks_per_second", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                           config_doc_t, max_unknown_acks, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("store_min_free_bytes", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                           config_doc_t, store_min_free, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_STRING_PTR("max_stored_bytes_per_partner", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                           config_doc_t, max_partner_stored, 1, CONFIG_MAX_VALUE),
    CYAML_FIELD_END};

static const cyaml_schema_value_t config_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, config_doc_t, config_schema_fields)};

enum {
    KEY_LISTEN,
    KEY_KEY_FILE,
    KEY_POLICY,
    KEY_STORE,
    KEY_STORE_KEY,
    KEY_ACK_TIMEOUT,
    KEY_PUBLISH_RATE,
    KEY_CONNECTIONS,
    KEY_FRAME_BYTES,
    KEY_ITEMS,
    KEY_SUMMARY,
    KEY_GROUNDS,
    KEY_WINDOW,
    KEY_METRICS_LISTEN,
    KEY_ADMIN_LISTEN,
    KEY_SYNC_THREAD,
    KEY_HANDSHAKES,
    KEY_IDLE_TIMEOUT,
    KEY_SILENT,
    KEY_IDEMPOTENCY,
    KEY_CASE_OPENS,
    KEY_CASE_OPENS_PARTNER,
    KEY_ADMIN_HEARTBEAT,
    KEY_PRINCIPAL_QUEUED,
    KEY_UNKNOWN_ACKS,
    KEY_STORE_MIN_FREE,
    KEY_PARTNER_STORED,
    KEY_COUNT
};
static const char *const config_keys[KEY_COUNT] = {"listen",
                                                   "key_file",
                                                   "policy",
                                                   "store",
                                                   "store_key_file",
                                                   "ack_timeout",
                                                   "max_publish_rate",
                                                   "max_connections_per_principal",
                                                   "max_frame_bytes",
                                                   "max_items_per_publish",
                                                   "max_summary_length",
                                                   "max_grounds_length",
                                                   "max_window",
                                                   "metrics_listen",
                                                   "admin_listen",
                                                   "sync_thread",
                                                   "max_handshakes_per_minute",
                                                   "connection_idle_timeout",
                                                   "max_silent_connections",
                                                   "idempotency_window",
                                                   "max_case_opens_per_hour",
                                                   "max_case_opens_per_hour_per_partner",
                                                   "admin_heartbeat_timeout",
                                                   "max_queued_bytes_per_principal",
                                                   "max_unknown_acks_per_second",
                                                   "store_min_free_bytes",
                                                   "max_stored_bytes_per_partner"};
/* Where an unknown key's message sends the operator for the list (the
 * list itself would not fit a message: 27 keys, some 600 characters). */
#define CONFIG_KEYS_DOC "the keys: schakeld(8), docs/OPERATIONS.md (Configuration, Limits)"
/* Keys the broker cannot run without; the tuning keys have defaults. */
static const bool config_required[KEY_COUNT] = {true,  true,  true,  true,  true,  false, false,
                                                false, false, false, false, false, false, false,
                                                false, false, false, false, false, false, false,
                                                false, false, false, false, false, false};

/* The numeric tuning keys: their upper bound (the compiled cap), or 0 for a
 * key that is not a count. A config can only lower a limit, never raise it
 * past what the code was built and tested for. */
static int64_t config_count_cap(int key)
{
    switch (key) {
    case KEY_PUBLISH_RATE:
        return SCHAKEL_MAX_PUBLISH_RATE;
    case KEY_CONNECTIONS:
        return SCHAKEL_MAX_CONNECTIONS_CAP;
    case KEY_FRAME_BYTES:
        return SCHAKEL_MAX_FRAME_BYTES;
    case KEY_ITEMS:
        return SCHAKEL_MAX_ITEMS;
    case KEY_SUMMARY:
        return SCHAKEL_MAX_SUMMARY_LEN;
    case KEY_GROUNDS:
        return SCHAKEL_MAX_GROUNDS_LEN;
    case KEY_WINDOW:
        return SCHAKEL_MAX_WINDOW;
    case KEY_HANDSHAKES:
        return SCHAKEL_MAX_HANDSHAKES_CAP;
    case KEY_SILENT:
        return SCHAKEL_MAX_SILENT_CAP;
    case KEY_CASE_OPENS:
        return SCHAKEL_MAX_CASE_OPENS_CAP;
    case KEY_CASE_OPENS_PARTNER:
        return SCHAKEL_MAX_CASE_OPENS_PARTNER_CAP;
    case KEY_PRINCIPAL_QUEUED:
        return SCHAKEL_MAX_PRINCIPAL_QUEUED_CAP;
    case KEY_UNKNOWN_ACKS:
        return SCHAKEL_MAX_UNKNOWN_ACK_RATE;
    case KEY_STORE_MIN_FREE:
        return SCHAKEL_MAX_STORE_MIN_FREE_CAP;
    case KEY_PARTNER_STORED:
        return SCHAKEL_MAX_PARTNER_STORED_CAP;
    default:
        return 0;
    }
}

typedef struct config_load_ctx {
    yamlguard_report_t report;    /* name: the config file's path */
    unsigned key_line[KEY_COUNT]; /* line of each top-level key, 0 if absent */
} config_load_ctx_t;

static int config_fail(config_load_ctx_t *ctx, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int config_fail(config_load_ctx_t *ctx, unsigned line, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    yamlguard_vfail(&ctx->report, line, fmt, args);
    va_end(args);
    return -1;
}

/* ------------------------------------------------------------------ libyaml pass */

/* Edit distance between a and b (optimal string alignment: an insertion,
 * a deletion, a change or two neighbours swapped count one each), for
 * names of at most CONFIG_NEAR_MAX bytes; longer ones are never near.
 * O(len(a) * len(b)). */
#define CONFIG_NEAR_MAX 64
static size_t config_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > CONFIG_NEAR_MAX || lb > CONFIG_NEAR_MAX)
        return SIZE_MAX;
    size_t d[CONFIG_NEAR_MAX + 1][CONFIG_NEAR_MAX + 1];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1, best = d[i - 1][j - 1] + cost;
            if (d[i - 1][j] + 1 < best)
                best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

const char *config_closest_key(const char *name)
{
    const char *closest = NULL;
    size_t closest_distance = SIZE_MAX;
    for (int k = 0; name != NULL && k < KEY_COUNT; k++) {
        size_t len = strlen(config_keys[k]);
        /* a slip of a finger or two: one edit in a short key, up to three
         * in the long ones (max_case_opens_per_hour_per_partner) */
        size_t near = len < 5 ? 1 : len < 12 ? 2 : 3;
        size_t distance = config_distance(name, config_keys[k]);
        if (distance <= near && distance < closest_distance) {
            closest = config_keys[k];
            closest_distance = distance;
        }
    }
    return closest;
}

/* "unknown key", with the closest allowed key when one is near; the list
 * is in the docs (a message that listed it would be cut). */
static int config_fail_unknown(config_load_ctx_t *ctx, unsigned line, const char *key)
{
    const char *closest = config_closest_key(key);
    if (closest != NULL)
        return config_fail(ctx, line, "unknown key \"%.64s%s\": did you mean \"%s\"? (%s)", key,
                           strlen(key) > 64 ? "..." : "", closest, CONFIG_KEYS_DOC);
    return config_fail(ctx, line, "unknown key \"%.64s%s\" (%s)", key,
                       strlen(key) > 64 ? "..." : "", CONFIG_KEYS_DOC);
}

/* A top-level key: known, and not seen before. libcyaml would refuse both
 * too, but cannot name the key's own line. */
static int config_scan_key(config_load_ctx_t *ctx, const char *key, unsigned line)
{
    for (int k = 0; k < KEY_COUNT; k++) {
        if (strcmp(key, config_keys[k]) != 0)
            continue;
        if (ctx->key_line[k] != 0)
            return config_fail(ctx, line, "duplicate key \"%s\" (first at line %u)", key,
                               ctx->key_line[k]);
        ctx->key_line[k] = line;
        return 0;
    }
    return config_fail_unknown(ctx, line, key);
}

typedef struct config_scan_state {
    config_load_ctx_t *ctx;
    int depth;
    bool expect_key, root_is_mapping;
    /* a top-level key's value that is a mapping: its keys are looked at
     * (expect_nested_key) for a key indented under another by mistake */
    bool in_nested_mapping, expect_nested_key;
    char top_key[64]; /* the top-level key last seen (a known one) */
} config_scan_state_t;

/* A key inside the mapping given as top_key's value. A config has no
 * nested keys: one that is, or is near, a top-level key was indented
 * under the key above it by mistake (libcyaml would only say that
 * top_key's value is a mapping). Others are left to libcyaml's message. */
static int config_scan_nested_key(config_scan_state_t *scan, const char *key, unsigned line)
{
    const char *closest = config_closest_key(key);
    if (closest == NULL)
        return 0;
    if (strcmp(closest, key) == 0)
        return config_fail(scan->ctx, line,
                           "key \"%s\" is indented under \"%s\": a config is a mapping of "
                           "keys to single values; write it at the top level",
                           key, scan->top_key);
    return config_fail(scan->ctx, line,
                       "key \"%.64s\" is indented under \"%s\": did you mean \"%s\", at the top "
                       "level? (%s)",
                       key, scan->top_key, closest, CONFIG_KEYS_DOC);
}

/* An event yamlguard_walk passes on (it refuses aliases and a second
 * document itself): known top-level keys once each, and their lines; keys
 * indented under one (config_scan_nested_key). */
static int config_scan_event(void *state, const yaml_event_t *ev, unsigned line)
{
    config_scan_state_t *scan = state;
    bool top_value = scan->depth == 1 && !scan->expect_key;
    int rc = 0;
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        /* "\0" in a quoted scalar would cut the C string libcyaml hands
         * over: a path or endpoint would silently mean something shorter. */
        if (memchr(ev->data.scalar.value, '\0', ev->data.scalar.length) != NULL)
            return config_fail(scan->ctx, line, "a value holds a NUL character");
        if (scan->depth == 1 && scan->expect_key && scan->root_is_mapping) {
            rc = config_scan_key(scan->ctx, (const char *)ev->data.scalar.value, line);
            snprintf(scan->top_key, sizeof scan->top_key, "%s",
                     (const char *)ev->data.scalar.value);
        }
        if (scan->depth == 2 && scan->in_nested_mapping) {
            if (scan->expect_nested_key)
                rc = config_scan_nested_key(scan, (const char *)ev->data.scalar.value, line);
            scan->expect_nested_key = !scan->expect_nested_key;
        }
        if (scan->depth == 1)
            scan->expect_key = !scan->expect_key;
        break;
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        if (top_value) {
            scan->expect_key = true;
            scan->in_nested_mapping = scan->root_is_mapping && ev->type == YAML_MAPPING_START_EVENT;
            scan->expect_nested_key = true;
        }
        if (scan->depth == 0)
            scan->root_is_mapping = ev->type == YAML_MAPPING_START_EVENT;
        if (++scan->depth > 8)
            rc = config_fail(scan->ctx, line, "nesting too deep");
        break;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        scan->depth--;
        if (scan->depth == 1)
            scan->in_nested_mapping = false;
        else if (scan->depth == 2)
            scan->expect_nested_key = true; /* a list or mapping was the value */
        break;
    default:
        break;
    }
    return rc;
}

/* One walk over the events: YAML syntax errors with libyaml's line, no
 * aliases, one document, known top-level keys once each, and their lines. */
static int config_scan(config_load_ctx_t *ctx, const uint8_t *buf, size_t len)
{
    config_scan_state_t scan = {.ctx = ctx, .depth = 0, .expect_key = true};
    return yamlguard_walk(&ctx->report, buf, len, 0, config_scan_event, &scan);
}

/* ------------------------------------------------------------------ libcyaml pass */

static int config_parse(config_load_ctx_t *ctx, const uint8_t *buf, size_t len, config_doc_t **out)
{
    yamlguard_capture_t cap;
    cyaml_data_t *data = NULL;
    cyaml_err_t rc = yamlguard_load(buf, len, &config_schema, &data, &cap);
    if (rc == CYAML_OK) {
        *out = data;
        return 0;
    }
    unsigned line = cap.line ? cap.line : 1;
    const char *key = yamlguard_unknown_key(rc, &cap);
    if (key != NULL)
        return config_fail_unknown(ctx, line, key);
    char plain[256];
    yamlguard_explain(cap.message[0] ? cap.message : cyaml_strerror(rc), plain, sizeof plain);
    /* The key whose value libcyaml refused: the field it names, else the
     * top-level key on that line; none when the file is not a mapping. */
    const char *field = cap.field[0] != '\0' ? cap.field : NULL;
    for (int k = 0; k < KEY_COUNT && field == NULL; k++)
        if (ctx->key_line[k] == line)
            field = config_keys[k];
    if (field != NULL)
        return config_fail(ctx, line, "%s: %s", field, plain);
    return config_fail(ctx, line, "%s (a config is a mapping of keys to single values)", plain);
}

/* ------------------------------------------------------------------ values */

int64_t config_limit(const char *value, const char *field)
{
    for (int k = 0; k < KEY_COUNT; k++)
        if (strcmp(field, config_keys[k]) == 0 && config_count_cap(k) > 0)
            return value != NULL ? config_count(value, config_count_cap(k)) : 0;
    return -1;
}

int64_t config_count(const char *value, int64_t max)
{
    char *end = NULL;
    if (value == NULL || value[0] < '1' || value[0] > '9')
        return -1;
    errno = 0;
    long long n = strtoll(value, &end, 10);
    if (errno != 0 || *end != '\0' || n < 1 || n > max)
        return -1;
    return n;
}

int64_t config_duration_ms(const char *value)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    char *end = NULL;
    if (value == NULL || value[0] < '0' || value[0] > '9')
        return -1;
    errno = 0;
    long long n = strtoll(value, &end, 10);
    if (errno != 0 || n <= 0 || n > 100000000)
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].unit) != 0)
            continue;
        int64_t ms = n * units[i].ms;
        return ms >= 1000 && ms <= 24 * 3600000LL ? ms : -1;
    }
    return -1;
}

/* metrics_listen: "HOST:PORT" with an IPv4 or a bracketed IPv6 literal;
 * metrics.c binds exactly that, and no name is looked up. */
static const char *config_hostport_problem(const char *value)
{
    const char *colon = strrchr(value, ':');
    size_t len = colon ? (size_t)(colon - value) : 0;
    char host[64];
    unsigned char addr[16];
    if (len == 0 || len >= sizeof host || colon[1] == '\0' || strlen(colon + 1) > 5 ||
        strspn(colon + 1, "0123456789") != strlen(colon + 1) || atol(colon + 1) > 65535)
        return "must be HOST:PORT, e.g. 127.0.0.1:9750 (port 0: any free port)";
    memcpy(host, value, len);
    host[len] = '\0';
    if (host[0] == '[' && len > 2 && host[len - 1] == ']') {
        host[len - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, addr) == 1)
            return NULL;
    } else if (inet_pton(AF_INET, host, addr) == 1) {
        return NULL;
    }
    return "must name an IPv4 address or a bracketed IPv6 address (127.0.0.1:9750, "
           "[::1]:9750)";
}

/* What is wrong with a count: not a whole number from 1, or over the
 * built-in cap (both named, with the number, in buf). NULL: nothing. */
static const char *config_count_problem(int64_t cap, const char *value, char *buf, size_t buflen)
{
    if (value[0] < '1' || value[0] > '9' || strspn(value, "0123456789") != strlen(value))
        snprintf(buf, buflen,
                 "must be a whole number from 1 to %lld (the built-in limit; "
                 "docs/OPERATIONS.md, Limits)",
                 (long long)cap);
    else if (config_count(value, cap) < 0)
        snprintf(buf, buflen,
                 "is %.24s%s, over the built-in limit of %lld (a config can lower a limit, "
                 "not raise it; docs/OPERATIONS.md, Limits)",
                 value, strlen(value) > 24 ? "..." : "", (long long)cap);
    else
        return NULL;
    return buf;
}

/* What is wrong with value for key, or NULL; buf holds a message that
 * names a number. */
static const char *config_value_problem(int key, const char *value, char *buf, size_t buflen)
{
    if (value == NULL || value[0] == '\0')
        return "must not be empty";
    for (const unsigned char *c = (const unsigned char *)value; *c; c++)
        if (*c < 0x20 || *c == 0x7f)
            return "contains a control character";
    if (config_count_cap(key) > 0)
        return config_count_problem(config_count_cap(key), value, buf, buflen);
    if ((key == KEY_ACK_TIMEOUT || key == KEY_IDLE_TIMEOUT || key == KEY_IDEMPOTENCY ||
         key == KEY_ADMIN_HEARTBEAT) &&
        config_duration_ms(value) < 0)
        return "must be a duration: a whole number with ms, s, m or h (\"60s\"), at least 1s and "
               "at most 24h";
    if (key == KEY_LISTEN || key == KEY_ADMIN_LISTEN) {
        if (strncmp(value, "tcp://", 6) != 0 || value[6] == '\0')
            return "must be a tcp:// endpoint (CURVE over TCP is the only transport)";
        if (strchr(value, ' ') != NULL)
            return "must not contain spaces";
    }
    if (key == KEY_METRICS_LISTEN)
        return config_hostport_problem(value);
    if (key == KEY_SYNC_THREAD && strcmp(value, "busy") != 0 && strcmp(value, "always") != 0)
        return "must be busy (hand a turn's fsync to the sync thread while more frames wait) or "
               "always (every turn's)";
    return NULL;
}

/* Relative paths are relative to the config file's folder. */
static char *config_resolve(const char *config_path, const char *value)
{
    const char *slash = strrchr(config_path, '/');
    if (value[0] == '/' || slash == NULL)
        return strdup(value);
    size_t dir_len = (size_t)(slash - config_path);
    size_t len = dir_len + 1 + strlen(value) + 1;
    char *out = malloc(len);
    if (out == NULL)
        return NULL;
    if (dir_len == 0) /* "/config.yaml": the root folder */
        snprintf(out, len, "/%s", value);
    else
        snprintf(out, len, "%.*s/%s", (int)dir_len, config_path, value);
    return out;
}

static char **config_slot(broker_config_t *cfg, int key)
{
    switch (key) {
    case KEY_LISTEN:
        return &cfg->listen;
    case KEY_KEY_FILE:
        return &cfg->key_file;
    case KEY_POLICY:
        return &cfg->policy_path;
    case KEY_STORE_KEY:
        return &cfg->store_key_path;
    case KEY_ACK_TIMEOUT:
        return &cfg->ack_timeout;
    case KEY_PUBLISH_RATE:
        return &cfg->max_publish_rate;
    case KEY_CONNECTIONS:
        return &cfg->max_connections;
    case KEY_FRAME_BYTES:
        return &cfg->max_frame_bytes;
    case KEY_ITEMS:
        return &cfg->max_items;
    case KEY_SUMMARY:
        return &cfg->max_summary;
    case KEY_GROUNDS:
        return &cfg->max_grounds;
    case KEY_WINDOW:
        return &cfg->max_window;
    case KEY_METRICS_LISTEN:
        return &cfg->metrics_listen;
    case KEY_ADMIN_LISTEN:
        return &cfg->admin_listen;
    case KEY_SYNC_THREAD:
        return &cfg->sync_thread;
    case KEY_HANDSHAKES:
        return &cfg->max_handshakes;
    case KEY_IDLE_TIMEOUT:
        return &cfg->idle_timeout;
    case KEY_SILENT:
        return &cfg->max_silent;
    case KEY_IDEMPOTENCY:
        return &cfg->idempotency_window;
    case KEY_CASE_OPENS:
        return &cfg->max_case_opens;
    case KEY_CASE_OPENS_PARTNER:
        return &cfg->max_case_opens_partner;
    case KEY_ADMIN_HEARTBEAT:
        return &cfg->admin_heartbeat_timeout;
    case KEY_PRINCIPAL_QUEUED:
        return &cfg->max_principal_queued;
    case KEY_UNKNOWN_ACKS:
        return &cfg->max_unknown_acks;
    case KEY_STORE_MIN_FREE:
        return &cfg->store_min_free;
    case KEY_PARTNER_STORED:
        return &cfg->max_partner_stored;
    default:
        return &cfg->store_path;
    }
}

static int config_fill(config_load_ctx_t *ctx, const config_doc_t *doc, broker_config_t *cfg)
{
    const char *values[KEY_COUNT] = {doc->listen,
                                     doc->key_file,
                                     doc->policy,
                                     doc->store,
                                     doc->store_key_file,
                                     doc->ack_timeout,
                                     doc->max_publish_rate,
                                     doc->max_connections,
                                     doc->max_frame_bytes,
                                     doc->max_items,
                                     doc->max_summary,
                                     doc->max_grounds,
                                     doc->max_window,
                                     doc->metrics_listen,
                                     doc->admin_listen,
                                     doc->sync_thread,
                                     doc->max_handshakes,
                                     doc->idle_timeout,
                                     doc->max_silent,
                                     doc->idempotency_window,
                                     doc->max_case_opens,
                                     doc->max_case_opens_partner,
                                     doc->admin_heartbeat_timeout,
                                     doc->max_principal_queued,
                                     doc->max_unknown_acks,
                                     doc->store_min_free,
                                     doc->max_partner_stored};
    for (int k = 0; k < KEY_COUNT; k++) {
        if (values[k] == NULL)
            continue;
        char buf[256];
        const char *problem = config_value_problem(k, values[k], buf, sizeof buf);
        if (problem)
            return config_fail(ctx, ctx->key_line[k], "%s %s", config_keys[k], problem);
        bool is_path = k == KEY_KEY_FILE || k == KEY_POLICY || k == KEY_STORE || k == KEY_STORE_KEY;
        char *v = is_path ? config_resolve(ctx->report.name, values[k]) : strdup(values[k]);
        if (v == NULL)
            return config_fail(ctx, ctx->key_line[k], "out of memory");
        *config_slot(cfg, k) = v;
    }
    return 0;
}

broker_config_t *config_load(const char *path, char *err, size_t errlen)
{
    char dummy[1];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    config_load_ctx_t ctx = {
        .report = {.name = path ? path : "config", .err = err, .errlen = errlen}};
    if (path == NULL) {
        config_fail(&ctx, 0, "no config path");
        return NULL;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    if (yamlguard_read_file(&ctx.report, "config", CONFIG_MAX_BYTES, &buf, &len) != 0)
        return NULL;
    config_doc_t *doc = NULL;
    broker_config_t *cfg = NULL;
    if (config_scan(&ctx, buf, len) == 0 && config_parse(&ctx, buf, len, &doc) == 0) {
        cfg = calloc(1, sizeof *cfg);
        if (cfg == NULL)
            config_fail(&ctx, 0, "out of memory");
        else if (doc != NULL && config_fill(&ctx, doc, cfg) != 0)
            config_destroy(&cfg);
    }
    yamlguard_free(&config_schema, doc);
    free(buf);
    return cfg;
}

void config_destroy(broker_config_t **cfg)
{
    if (cfg == NULL || *cfg == NULL)
        return;
    free((*cfg)->listen);
    free((*cfg)->key_file);
    free((*cfg)->policy_path);
    free((*cfg)->store_path);
    free((*cfg)->store_key_path);
    free((*cfg)->ack_timeout);
    free((*cfg)->max_publish_rate);
    free((*cfg)->max_connections);
    free((*cfg)->max_frame_bytes);
    free((*cfg)->max_items);
    free((*cfg)->max_summary);
    free((*cfg)->max_grounds);
    free((*cfg)->max_window);
    free((*cfg)->metrics_listen);
    free((*cfg)->admin_listen);
    free((*cfg)->sync_thread);
    free((*cfg)->max_handshakes);
    free((*cfg)->idle_timeout);
    free((*cfg)->idempotency_window);
    free((*cfg)->max_silent);
    free((*cfg)->max_case_opens);
    free((*cfg)->max_case_opens_partner);
    free((*cfg)->admin_heartbeat_timeout);
    free((*cfg)->max_principal_queued);
    free((*cfg)->max_unknown_acks);
    free((*cfg)->store_min_free);
    free((*cfg)->max_partner_stored);
    free(*cfg);
    *cfg = NULL;
}

int config_set(broker_config_t *cfg, const char *field, const char *value, char *err, size_t errlen)
{
    char dummy[1];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    int key = -1;
    for (int k = 0; k < KEY_COUNT && field != NULL; k++)
        if (strcmp(field, config_keys[k]) == 0)
            key = k;
    if (cfg == NULL || key < 0) {
        const char *closest = config_closest_key(field);
        if (closest != NULL)
            snprintf(err, errlen, "unknown config field \"%.64s\": did you mean \"%s\"? (%s)",
                     field, closest, CONFIG_KEYS_DOC);
        else
            snprintf(err, errlen, "unknown config field \"%.64s\" (%s)", field ? field : "",
                     CONFIG_KEYS_DOC);
        return -1;
    }
    char buf[256];
    const char *problem = config_value_problem(key, value, buf, sizeof buf);
    if (problem) {
        snprintf(err, errlen, "%s %s", config_keys[key], problem);
        return -1;
    }
    char *copy = strdup(value);
    if (copy == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char **slot = config_slot(cfg, key);
    free(*slot);
    *slot = copy;
    return 0;
}

int config_complete(const broker_config_t *cfg, char *err, size_t errlen)
{
    char dummy[1];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    if (cfg == NULL) {
        snprintf(err, errlen, "no configuration");
        return -1;
    }
    for (int k = 0; k < KEY_COUNT; k++) {
        if (config_required[k] && *config_slot((broker_config_t *)(uintptr_t)cfg, k) == NULL) {
            snprintf(err, errlen, "%s is not set (in the config file or on the command line)",
                     config_keys[k]);
            return -1;
        }
    }
    return 0;
}
