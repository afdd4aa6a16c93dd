/*
 * test_audit.c — unit tests of broker/audit.c and broker/store_audit.c
 * against real SQLite files.
 *
 * The canonical encoding is checked against bytes this file builds from
 * the documented layout (docs/OPERATIONS.md), not from the code under test.
 * Trails are built through audit_append, then attacked the way someone
 * holding the file would (a raw SQLite connection with the triggers and
 * CHECK constraints out of the way), and verified through a keyless
 * read-only opening, as `schakelctl audit verify` does. A full disk is
 * simulated by a page limit. Each test has its own mkdtemp() folder.
 */
#define _GNU_SOURCE /* memmem */
#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>
#include <sqlite3.h>

#include "audit.h"
#include "keys.h"
#include "schakel_limits.h"
#include "store.h"
#include "store_fixture.h"

#define BASE_TIME 1700000000
#define TRAIL_ENTRIES 2500u /* checkpoints at 1000 and 2000; 2001..2500 not yet certified */
#define SUBJECT_A "subj-A-0001"
#define SUBJECT_B "subj-B-0002"
#define HASH64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* ------------------------------------------------------------------ freed memory */

/* malloc, realloc and free of the code under test are wrapped (-Wl,--wrap):
 * while watched_text is set, every block this thread allocates is zeroed
 * whole (so that every byte of it is defined to a memory checker) and
 * remembered, and each of those is searched for the text when it is freed,
 * or moved by realloc: a subject's pseudonym must be wiped before its
 * memory goes back. Blocks from before the watch are not searched. */
void *__real_malloc(size_t size);
void *__real_realloc(void *block, size_t size);
void __real_free(void *block);
void *__wrap_malloc(size_t size);
void *__wrap_realloc(void *block, size_t size);
void __wrap_free(void *block);

#define WATCH_SLOTS 4096u
static _Thread_local const char *watched_text;
static _Thread_local size_t watched_hits;
static _Thread_local void *watched[WATCH_SLOTS];
static _Thread_local size_t n_watched;
static _Thread_local int watch_overflow;

static void watch_add(void *block)
{
    if (block == NULL || watched_text == NULL)
        return;
    memset(block, 0, malloc_usable_size(block));
    if (n_watched == WATCH_SLOTS)
        watch_overflow = 1;
    else
        watched[n_watched++] = block;
}

/* Forget a remembered block, searching it first; 1 if it held the text. */
static int watch_drop(void *block)
{
    for (size_t i = n_watched; i-- > 0;) {
        if (watched[i] != block)
            continue;
        watched[i] = watched[--n_watched];
        return watched_text != NULL &&
               memmem(block, malloc_usable_size(block), watched_text, strlen(watched_text)) != NULL;
    }
    return 0;
}

void *__wrap_malloc(size_t size)
{
    void *block = __real_malloc(size);
    watch_add(block);
    return block;
}

void *__wrap_realloc(void *block, size_t size)
{
    size_t i = 0;
    while (i < n_watched && watched[i] != block)
        i++;
    if (block == NULL || i == n_watched)
        return block == NULL ? __wrap_malloc(size) : __real_realloc(block, size);
    /* a remembered block moves always: its old place is searched */
    void *moved = __wrap_malloc(size);
    if (moved == NULL)
        return NULL;
    size_t old = malloc_usable_size(block);
    memcpy(moved, block, old < size ? old : size);
    if (watch_drop(block))
        watched_hits++;
    __real_free(block);
    return moved;
}

void __wrap_free(void *block)
{
    if (block != NULL && watch_drop(block))
        watched_hits++;
    __real_free(block);
}

/* ------------------------------------------------------------------ files and keys */

static char group_dir[64];      /* keys and the template trail, for the whole run */
static char template_path[128]; /* a closed store holding the TRAIL_ENTRIES trail */
static keypair_t *broker_key;   /* signs the template's checkpoints */
static keypair_t *other_key;    /* a key that is not the broker's */
static uint8_t store_key[STORE_KEY_BYTES];
static uint8_t template_last_hash[STORE_AUDIT_HASH_BYTES];

typedef store_fixture_t fixture_t;

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    assert_int_equal(fclose(in), 0);
    assert_int_equal(fclose(out), 0);
}

static int setup(void **state)
{
    *state = store_fixture_new("schakel-audit", store_key);
    return 0;
}

/* ------------------------------------------------------------------ raw SQLite */

static int raw_exec_fails(sqlite3 *db, const char *sql, const char *expected)
{
    char *message = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &message);
    int failed = rc != SQLITE_OK && message != NULL && strstr(message, expected) != NULL;
    sqlite3_free(message);
    return failed;
}

/* A connection of someone who holds the file: nothing in the schema stops
 * them (the triggers are dropped, CHECK constraints ignored). */
static sqlite3 *attacker_open(const char *path)
{
    sqlite3 *db = store_fixture_raw_open_or_create(path);
    store_fixture_db_exec(
        db, "DROP TRIGGER audit_append_only_update; DROP TRIGGER audit_append_only_delete;"
            "DROP TRIGGER audit_checkpoints_append_only_update;"
            "DROP TRIGGER audit_checkpoints_append_only_delete;"
            "PRAGMA ignore_check_constraints = ON;");
    return db;
}

static void raw_set_blob(sqlite3 *db, const char *sql, const uint8_t *blob, size_t len, int64_t seq)
{
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_bind_blob(stmt, 1, blob, (int)len, SQLITE_TRANSIENT), SQLITE_OK);
    assert_int_equal(sqlite3_bind_int64(stmt, 2, seq), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_DONE);
    sqlite3_finalize(stmt);
}

/* ------------------------------------------------------------------ building trails */

/* The tags of SUBJECT_A and SUBJECT_B in the store being built (each
 * store has its own subject key). */
static char tag_a[STORE_SUBJECT_TAG_LEN + 1], tag_b[STORE_SUBJECT_TAG_LEN + 1];

/* The entry a trail holds at seq i: a queued delivery (every 5th, about
 * subject A or B), its ack (the next), and refusals. Strings live in
 * static buffers until the next call. */
static void trail_entry(uint64_t i, store_audit_entry_t *e)
{
    static char detail[64];
    if (i % 5 == 0) {
        audit_entry_init(e, "delivery.queued");
        audit_set_text(e, STORE_AUDIT_ACTOR, "politie/bvh-koppeling");
        audit_set_text(e, STORE_AUDIT_RECIPIENT, "om/parket");
        audit_set_text(e, STORE_AUDIT_RECIPIENT_PARTNER, "om");
        audit_set_int(e, STORE_AUDIT_DELIVERY_SEQ, (int64_t)i);
        audit_set_text(e, STORE_AUDIT_SUBJECT_TAG, i % 10 == 0 ? tag_a : tag_b);
        audit_set_text(e, STORE_AUDIT_RULE_ID, "politie-om");
        audit_set_text(e, STORE_AUDIT_PURPOSE, "Strafrechtelijke beoordeling");
        audit_set_text(e, STORE_AUDIT_LEGAL_BASIS, "Wpg art. 16");
    } else if (i % 5 == 1) {
        audit_entry_init(e, "delivery.acked");
        audit_set_text(e, STORE_AUDIT_ACTOR, "om/parket");
        audit_set_int(e, STORE_AUDIT_DELIVERY_SEQ, (int64_t)(i - 1));
    } else {
        snprintf(detail, sizeof detail, "refusal number %llu", (unsigned long long)i);
        audit_entry_init(e, "request.refused");
        audit_set_text(e, STORE_AUDIT_ACTOR, "riec/analyse");
        audit_set_text(e, STORE_AUDIT_REASON, "INVALID_FIELD");
        audit_set_text(e, STORE_AUDIT_DETAIL, detail);
    }
}

/* Append entries from..to (seqs, as the trail grows) in one transaction. */
static void trail_append(store_t *store, const keypair_t *key, uint64_t from, uint64_t to)
{
    assert_int_equal(store_subject_tag(store, SUBJECT_A, tag_a), 0);
    assert_int_equal(store_subject_tag(store, SUBJECT_B, tag_b), 0);
    for (uint64_t i = from; i <= to; i++) {
        store_audit_entry_t e;
        trail_entry(i, &e);
        if (audit_append(store, key, BASE_TIME + (int64_t)i / 100, &e) != 0)
            fail_msg("append %llu: %s", (unsigned long long)i, store_errmsg(store));
        assert_int_equal(e.seq, i);
    }
    assert_int_equal(store_commit(store), 0);
}

static void verify_path(const char *path, const keypair_t *const *keys, size_t n_keys,
                        const audit_anchor_t *anchor, audit_verify_report_t *report)
{
    uint8_t pks[4][32];
    assert_true(n_keys <= 4);
    for (size_t i = 0; i < n_keys; i++)
        memcpy(pks[i], keys[i]->sign_pk, 32);
    store_t *reader = store_fixture_open_reader(path, NULL);
    if (audit_verify(reader, (const uint8_t(*)[32])pks, n_keys, anchor, report) != 0)
        fail_msg("audit_verify could not read %s: %s", path, report->problem);
    store_close(&reader);
}

static int group_setup(void **state)
{
    (void)state;
    store_fixture_group_keys(group_dir, sizeof group_dir, "schakel-audit-keys", store_key,
                             &broker_key);
    other_key = store_fixture_make_key(group_dir, "other");
    snprintf(template_path, sizeof template_path, "%s/template.db", group_dir);
    store_t *store = store_fixture_create(template_path, store_key);
    trail_append(store, broker_key, 1, TRAIL_ENTRIES);
    store_audit_tail_t tail;
    assert_int_equal(store_audit_tail(store, &tail), 0);
    memcpy(template_last_hash, tail.hash, sizeof tail.hash);
    store_close(&store); /* the last connection: the WAL is folded into the file */
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    keys_destroy(&broker_key);
    keys_destroy(&other_key);
    store_fixture_remove_tree(group_dir);
    return 0;
}

/* ------------------------------------------------------------------ the documented encoding */

typedef struct bytes {
    uint8_t data[1024];
    size_t len;
} bytes_t;

static void put(bytes_t *b, const void *p, size_t n)
{
    assert_true(b->len + n <= sizeof b->data);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put_be(bytes_t *b, uint64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        uint8_t byte = (uint8_t)(v >> (8 * i));
        put(b, &byte, 1);
    }
}

static void put_text_field(bytes_t *b, const char *text)
{
    uint8_t tag = 0x01;
    put(b, &tag, 1);
    put_be(b, strlen(text), 4);
    put(b, text, strlen(text));
}

static void put_int_field(bytes_t *b, int64_t value)
{
    uint8_t tag = 0x02;
    put(b, &tag, 1);
    put_be(b, (uint64_t)value, 8);
}

/* A late field, present: 0x03, its field number, then the text field. */
static void put_late_text(bytes_t *b, uint8_t number, const char *text)
{
    uint8_t tag[2] = {0x03, number};
    put(b, tag, sizeof tag);
    put_text_field(b, text);
}

static void put_absent(bytes_t *b, int n)
{
    static const uint8_t tag = 0x00;
    for (int i = 0; i < n; i++)
        put(b, &tag, 1);
}

/* The field order docs/OPERATIONS.md gives: a reordering of the enum would
 * change every hash, so it must show here first. */
static void test_field_order_is_the_documented_one(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int is_integer;
    } documented[] = {
        {"event", 0},         {"actor", 0},       {"peer", 0},
        {"curve_key", 0},     {"recipient", 0},   {"recipient_partner", 0},
        {"message_id", 0},    {"item_index", 1},  {"item_seq", 1},
        {"delivery_seq", 1},  {"kind", 0},        {"theme", 0},
        {"subject_tag", 0},   {"rule_id", 0},     {"rule_hash", 0},
        {"purpose", 0},       {"legal_basis", 0}, {"fields", 0},
        {"expires_at", 1},    {"reason", 0},      {"detail", 0},
        {"delivery_seqs", 0}, /* schema 6: encoded only when present */
        {"deliveries", 0},    /* schema 7: encoded only when present */
    };
    assert_int_equal(sizeof documented / sizeof documented[0], STORE_AUDIT_FIELD_COUNT);
    for (size_t i = 0; i < STORE_AUDIT_FIELD_COUNT; i++) {
        if (strcmp(store_audit_fields[i].name, documented[i].name) != 0 ||
            store_audit_fields[i].is_integer != documented[i].is_integer)
            fail_msg("field %zu is %s, the documentation says %s", i, store_audit_fields[i].name,
                     documented[i].name);
        /* Only the fields after the first 21 may be left out. */
        if (store_audit_fields[i].encoded_if_present != (i >= 21))
            fail_msg("field %zu (%s): encoded_if_present is %d", i, store_audit_fields[i].name,
                     store_audit_fields[i].encoded_if_present);
    }
}

static void test_entry_encoding_is_the_documented_one(void **state)
{
    (void)state;
    uint8_t prev[32], expected_hash[32], hash[32], out[1024];
    memset(prev, 0xAB, sizeof prev);
    store_audit_entry_t e;
    audit_entry_init(&e, "delivery.queued");
    audit_set_text(&e, STORE_AUDIT_ACTOR, "politie/bvh-koppeling");
    audit_set_int(&e, STORE_AUDIT_ITEM_INDEX, 3);
    audit_set_text(&e, STORE_AUDIT_SUBJECT_TAG, "ABCD-1234");
    audit_set_int(&e, STORE_AUDIT_EXPIRES_AT, -5); /* two's complement, big-endian */
    audit_set_text(&e, STORE_AUDIT_DETAIL, "");    /* present but empty: not absent */
    e.seq = 7;
    e.at = BASE_TIME;

    bytes_t b = {.len = 0};
    put(&b, "schakel-audit-v1", 16);
    put(&b, prev, 32);
    put_be(&b, 7, 8);
    put_be(&b, BASE_TIME, 8);
    put_text_field(&b, "delivery.queued");       /* event */
    put_text_field(&b, "politie/bvh-koppeling"); /* actor */
    put_absent(&b, 5);                           /* peer .. message_id */
    put_int_field(&b, 3);                        /* item_index */
    put_absent(&b, 4);                           /* item_seq, delivery_seq, kind, theme */
    put_text_field(&b, "ABCD-1234");             /* subject */
    put_absent(&b, 5);                           /* rule_id .. fields */
    put_int_field(&b, -5);                       /* expires_at */
    put_absent(&b, 1);                           /* reason */
    put_text_field(&b, "");                      /* detail */

    size_t len = audit_entry_encode(prev, &e, out, sizeof out);
    assert_int_equal(len, b.len);
    assert_memory_equal(out, b.data, b.len);
    /* A short buffer gets a prefix and the full length. */
    assert_int_equal(audit_entry_encode(prev, &e, out, 10), b.len);
    assert_int_equal(audit_entry_encode(prev, &e, NULL, 0), b.len);

    crypto_generichash(expected_hash, sizeof expected_hash, b.data, b.len, NULL, 0);
    audit_entry_hash(prev, &e, hash);
    assert_memory_equal(hash, expected_hash, 32);

    /* An acked entry of schema 6: the 21 fields as ever, then delivery_seqs
     * as one more text field, there because it is present. */
    audit_entry_init(&e, "delivery.acked");
    audit_set_text(&e, STORE_AUDIT_ACTOR, "om/parket");
    audit_set_text(&e, STORE_AUDIT_RECIPIENT, "om/parket");
    audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, "7,9,12");
    e.seq = 8;
    e.at = BASE_TIME + 1;
    bytes_t acked = {.len = 0};
    put(&acked, "schakel-audit-v1", 16);
    put(&acked, prev, 32);
    put_be(&acked, 8, 8);
    put_be(&acked, BASE_TIME + 1, 8);
    put_text_field(&acked, "delivery.acked"); /* event */
    put_text_field(&acked, "om/parket");      /* actor */
    put_absent(&acked, 2);                    /* peer, curve_key */
    put_text_field(&acked, "om/parket");      /* recipient */
    put_absent(&acked, 16);                   /* recipient_partner .. detail */
    put_late_text(&acked, 21, "7,9,12");      /* delivery_seqs */
    len = audit_entry_encode(prev, &e, out, sizeof out);
    assert_int_equal(len, acked.len);
    assert_memory_equal(out, acked.data, acked.len);
    crypto_generichash(expected_hash, sizeof expected_hash, acked.data, acked.len, NULL, 0);
    audit_entry_hash(prev, &e, hash);
    assert_memory_equal(hash, expected_hash, 32);

    /* A queued entry of schema 7: deliveries, field 22. */
    static const char listed[] = "rule r " HASH64 " 0 sender 0: 0:\n20 0 om/parket\n";
    audit_entry_init(&e, "delivery.queued");
    audit_set_text(&e, STORE_AUDIT_ACTOR, "politie/bvh-koppeling");
    audit_set_text(&e, STORE_AUDIT_DELIVERIES, listed);
    e.seq = 9;
    e.at = BASE_TIME + 2;
    bytes_t queued = {.len = 0};
    put(&queued, "schakel-audit-v1", 16);
    put(&queued, prev, 32);
    put_be(&queued, 9, 8);
    put_be(&queued, BASE_TIME + 2, 8);
    put_text_field(&queued, "delivery.queued");       /* event */
    put_text_field(&queued, "politie/bvh-koppeling"); /* actor */
    put_absent(&queued, 19);                          /* peer .. detail */
    put_late_text(&queued, 22, listed);               /* deliveries */
    len = audit_entry_encode(prev, &e, out, sizeof out);
    assert_int_equal(len, queued.len);
    assert_memory_equal(out, queued.data, queued.len);
}

/* The two late fields are adjacent at the end: the same text in one or in
 * the other must encode (and hash) differently, or a rewrite could move a
 * list from one column to the other unnoticed. */
static void test_late_fields_cannot_trade_places(void **state)
{
    (void)state;
    static const char *const texts[] = {"20,77", "7", "", "rule x\n"};
    static const char *const events[] = {"delivery.acked", "delivery.queued"};
    uint8_t prev[32], one[32], other[32];
    memset(prev, 0x5A, sizeof prev);
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++)
        for (size_t v = 0; v < 2; v++) {
            store_audit_entry_t a, b;
            audit_entry_init(&a, events[v]);
            audit_set_text(&a, STORE_AUDIT_RECIPIENT, "om/parket");
            b = a;
            audit_set_text(&a, STORE_AUDIT_DELIVERY_SEQS, texts[t]);
            audit_set_text(&b, STORE_AUDIT_DELIVERIES, texts[t]);
            a.seq = b.seq = 3;
            a.at = b.at = BASE_TIME;
            audit_entry_hash(prev, &a, one);
            audit_entry_hash(prev, &b, other);
            if (memcmp(one, other, 32) == 0)
                fail_msg("\"%s\" hashes the same in delivery_seqs and deliveries", texts[t]);
            /* and neither hashes as the entry without a list */
            store_audit_entry_t none = a;
            none.field[STORE_AUDIT_DELIVERY_SEQS].present = 0;
            audit_entry_hash(prev, &none, other);
            assert_memory_not_equal(one, other, 32);
        }
}

static void test_checkpoint_bytes_are_the_documented_ones(void **state)
{
    (void)state;
    uint8_t hash[32], out[AUDIT_CHECKPOINT_SIGNED_BYTES];
    for (size_t i = 0; i < sizeof hash; i++)
        hash[i] = (uint8_t)i;
    bytes_t b = {.len = 0};
    put(&b, "schakel-audit-checkpoint-v1", 27);
    put_be(&b, 1000, 8);
    put(&b, hash, 32);
    put_be(&b, BASE_TIME + 60, 8);
    assert_int_equal(sizeof out, b.len);
    audit_checkpoint_signed_bytes(1000, hash, BASE_TIME + 60, out);
    assert_memory_equal(out, b.data, b.len);
}

enum mutation {
    MUT_NONE,
    MUT_SEQ,
    MUT_AT,
    MUT_PREV,
    MUT_EVENT,
    MUT_TEXT_TO_OTHER_FIELD,
    MUT_ABSENT_TO_EMPTY,
    MUT_ABSENT_TO_ZERO,
    MUT_INTEGER,
    MUT_BOUNDARY,
    MUT_SEQS_ADDED,
    MUT_SEQS_CHANGED,
    MUT_SEQS_EMPTY,
};

static void mutated(enum mutation m, store_audit_entry_t *e, uint8_t prev[32])
{
    memset(prev, 0, 32);
    audit_entry_init(e, "publish.refused");
    audit_set_text(e, STORE_AUDIT_ACTOR, "ab");
    audit_set_text(e, STORE_AUDIT_RECIPIENT, "c");
    audit_set_int(e, STORE_AUDIT_ITEM_INDEX, 1);
    e->seq = 5;
    e->at = BASE_TIME;
    switch (m) {
    case MUT_NONE:
        break;
    case MUT_SEQ:
        e->seq = 6;
        break;
    case MUT_AT:
        e->at = BASE_TIME + 1;
        break;
    case MUT_PREV:
        prev[31] = 1;
        break;
    case MUT_EVENT:
        audit_set_text(e, STORE_AUDIT_EVENT, "publish.accepted");
        break;
    case MUT_TEXT_TO_OTHER_FIELD:
        audit_set_text(e, STORE_AUDIT_ACTOR, NULL);
        audit_set_text(e, STORE_AUDIT_PEER, "ab");
        break;
    case MUT_ABSENT_TO_EMPTY:
        audit_set_text(e, STORE_AUDIT_DETAIL, "");
        break;
    case MUT_ABSENT_TO_ZERO:
        audit_set_int(e, STORE_AUDIT_ITEM_SEQ, 0);
        break;
    case MUT_INTEGER:
        audit_set_int(e, STORE_AUDIT_ITEM_INDEX, 2);
        break;
    case MUT_BOUNDARY: /* "ab"+"c" and "a"+"bc": the length prefixes tell them apart */
        audit_set_text(e, STORE_AUDIT_ACTOR, "a");
        audit_set_text(e, STORE_AUDIT_RECIPIENT, "bc");
        break;
    case MUT_SEQS_ADDED: /* a field left out when absent still counts when present */
        audit_set_text(e, STORE_AUDIT_DELIVERY_SEQS, "1,2");
        break;
    case MUT_SEQS_CHANGED:
        audit_set_text(e, STORE_AUDIT_DELIVERY_SEQS, "1,3");
        break;
    case MUT_SEQS_EMPTY:
        audit_set_text(e, STORE_AUDIT_DELIVERY_SEQS, "");
        break;
    }
}

static void test_every_change_changes_the_hash(void **state)
{
    (void)state;
    static const struct {
        enum mutation m;
        int same; /* 1: must hash equal to the base */
    } rows[] = {
        {MUT_NONE, 1},
        {MUT_SEQ, 0},
        {MUT_AT, 0},
        {MUT_PREV, 0},
        {MUT_EVENT, 0},
        {MUT_TEXT_TO_OTHER_FIELD, 0},
        {MUT_ABSENT_TO_EMPTY, 0},
        {MUT_ABSENT_TO_ZERO, 0},
        {MUT_INTEGER, 0},
        {MUT_BOUNDARY, 0},
        {MUT_SEQS_ADDED, 0},
        {MUT_SEQS_CHANGED, 0},
        {MUT_SEQS_EMPTY, 0},
    };
    uint8_t prev[32], base[32], hash[32], seqs_12[32];
    store_audit_entry_t e;
    mutated(MUT_NONE, &e, prev);
    audit_entry_hash(prev, &e, base);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        mutated(rows[i].m, &e, prev);
        audit_entry_hash(prev, &e, hash);
        if ((memcmp(hash, base, 32) == 0) != rows[i].same)
            fail_msg("row %zu: the hash %s", i, rows[i].same ? "changed" : "did not change");
    }
    /* The lists themselves differ in their hash too. */
    mutated(MUT_SEQS_ADDED, &e, prev);
    audit_entry_hash(prev, &e, seqs_12);
    mutated(MUT_SEQS_CHANGED, &e, prev);
    audit_entry_hash(prev, &e, hash);
    assert_memory_not_equal(hash, seqs_12, 32);
}

/* The one spelling of a seq list (store_audit_seqs_parse). */
static void test_seq_lists_have_one_spelling(void **state)
{
    (void)state;
    static char longest[STORE_AUDIT_MAX_ACKED_SEQS * 8], too_many[sizeof longest + 16];
    size_t used = 0;
    for (unsigned i = 1; i <= STORE_AUDIT_MAX_ACKED_SEQS; i++)
        used += (size_t)snprintf(longest + used, sizeof longest - used, "%s%u", i > 1 ? "," : "",
                                 i * 3);
    snprintf(too_many, sizeof too_many, "%s,%u", longest, (STORE_AUDIT_MAX_ACKED_SEQS + 1) * 3);
    static const struct {
        const char *text;
        size_t n;       /* 0: refused */
        uint64_t first; /* the first and the last seq */
        uint64_t last;
    } rows[] = {
        {"7", 1, 7, 7},
        {"7,9,12", 3, 7, 12},
        {"1,9223372036854775807", 2, 1, 9223372036854775807ull},
        {"", 0, 0, 0},
        {",7", 0, 0, 0},
        {"7,", 0, 0, 0},
        {"7,,9", 0, 0, 0},
        {"7, 9", 0, 0, 0},
        {" 7", 0, 0, 0},
        {"9,7", 0, 0, 0}, /* descending */
        {"7,7", 0, 0, 0}, /* twice */
        {"07", 0, 0, 0},  /* a leading zero: a second spelling */
        {"0", 0, 0, 0},   /* no seq 0 */
        {"-7", 0, 0, 0},
        {"+7", 0, 0, 0},
        {"9223372036854775808", 0, 0, 0},     /* above INT64_MAX */
        {"99999999999999999999999", 0, 0, 0}, /* overflows */
        {"7;9", 0, 0, 0},
        {"7-9", 0, 0, 0},
        {"0x7", 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint64_t seqs[4] = {0};
        size_t n = store_audit_seqs_parse(rows[i].text, seqs, 4);
        if (n != rows[i].n)
            fail_msg("row %zu \"%s\": %zu seqs, expected %zu", i, rows[i].text, n, rows[i].n);
        if (n > 0 && (seqs[0] != rows[i].first || seqs[n - 1] != rows[i].last))
            fail_msg("row %zu: seqs %llu..%llu", i, (unsigned long long)seqs[0],
                     (unsigned long long)seqs[n - 1]);
    }
    assert_int_equal(store_audit_seqs_parse(NULL, NULL, 0), 0);
    /* Counting without keeping; the bound of one entry. */
    assert_int_equal(store_audit_seqs_parse(longest, NULL, 0), STORE_AUDIT_MAX_ACKED_SEQS);
    assert_int_equal(store_audit_seqs_parse(too_many, NULL, 0), 0);
}

/* ------------------------------------------------------------------ chain and checkpoints */

typedef struct chain_check {
    uint8_t prev[32];
    uint64_t expected;
    int broken;
} chain_check_t;

static int chain_link(const store_audit_entry_t *e, void *arg)
{
    chain_check_t *c = arg;
    uint8_t hash[32];
    audit_entry_hash(c->prev, e, hash);
    if (e->seq != c->expected || e->damage != NULL || memcmp(hash, e->hash, 32) != 0)
        c->broken = 1;
    memcpy(c->prev, e->hash, 32);
    c->expected++;
    return 0;
}

typedef struct checkpoints_seen {
    store_audit_checkpoint_t cp[8];
    size_t n;
} checkpoints_seen_t;

static int checkpoint_collect(const store_audit_checkpoint_t *cp, void *arg)
{
    checkpoints_seen_t *seen = arg;
    if (seen->n < 8)
        seen->cp[seen->n] = *cp;
    seen->n++;
    return 0;
}

static void test_chain_links_each_entry_to_the_last(void **state)
{
    fixture_t *f = *state;
    trail_append(f->store, broker_key, 1, 40);
    /* A second transaction continues the chain from the committed tail. */
    trail_append(f->store, broker_key, 41, 60);
    chain_check_t c = {.expected = 1};
    assert_int_equal(store_audit_scan(f->store, 0, 1000, chain_link, &c), 60);
    assert_false(c.broken);
    assert_int_equal(c.expected, 61);
    store_audit_tail_t tail;
    assert_int_equal(store_audit_tail(f->store, &tail), 0);
    assert_int_equal(tail.seq, 60);
    assert_memory_equal(tail.hash, c.prev, 32);
}

static void test_checkpoints_every_n_entries_and_when_due(void **state)
{
    fixture_t *f = *state;
    const uint64_t n = SCHAKEL_AUDIT_CHECKPOINT_ENTRIES;
    const int64_t t = SCHAKEL_AUDIT_CHECKPOINT_IVL_S;
    trail_append(f->store, broker_key, 1, n + 5);
    checkpoints_seen_t seen = {.n = 0};
    assert_int_equal(store_audit_checkpoint_scan(f->store, 0, INT64_MAX, checkpoint_collect, &seen),
                     1);
    assert_int_equal(seen.cp[0].seq, n);
    assert_memory_equal(seen.cp[0].key, broker_key->sign_pk, 32);
    uint8_t signed_bytes[AUDIT_CHECKPOINT_SIGNED_BYTES];
    audit_checkpoint_signed_bytes(seen.cp[0].seq, seen.cp[0].hash, seen.cp[0].at, signed_bytes);
    assert_int_equal(
        keys_verify(broker_key->sign_pk, signed_bytes, sizeof signed_bytes, seen.cp[0].signature),
        0);

    /* Five entries wait; the last checkpoint is recent: none due yet. */
    int64_t cp_at = seen.cp[0].at;
    assert_int_equal(audit_checkpoint(f->store, broker_key, cp_at + t - 1, 0), 0);
    assert_int_equal(store_in_transaction(f->store), 0); /* nothing due opens nothing */
    /* T seconds on, they are certified; then nothing is due, even forced. */
    assert_int_equal(audit_checkpoint(f->store, broker_key, cp_at + t, 0), 1);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(audit_checkpoint(f->store, broker_key, cp_at + 10 * t, 1), 0);
    /* One more entry and a forced checkpoint (a clean shutdown). */
    trail_append(f->store, broker_key, n + 6, n + 6);
    assert_int_equal(audit_checkpoint(f->store, broker_key, cp_at + t, 1), 1);
    assert_int_equal(store_commit(f->store), 0);
    seen.n = 0;
    assert_int_equal(store_audit_checkpoint_scan(f->store, 0, INT64_MAX, checkpoint_collect, &seen),
                     3);
    assert_int_equal(seen.cp[1].seq, n + 5);
    assert_int_equal(seen.cp[2].seq, n + 6);
    /* Without a key no checkpoint can be signed. */
    assert_int_equal(audit_checkpoint(f->store, NULL, cp_at + 100 * t, 1), -1);
}

/* ------------------------------------------------------------------ verification */

static void test_verify_reports_an_intact_trail(void **state)
{
    (void)state;
    audit_verify_report_t r;
    const keypair_t *keys[] = {broker_key};
    verify_path(template_path, keys, 1, NULL, &r);
    assert_true(r.intact);
    assert_int_equal(r.entries, TRAIL_ENTRIES);
    assert_int_equal(r.checkpoints, TRAIL_ENTRIES / SCHAKEL_AUDIT_CHECKPOINT_ENTRIES);
    assert_int_equal(r.last_seq, TRAIL_ENTRIES);
    assert_int_equal(r.last_checkpoint_seq, 2 * SCHAKEL_AUDIT_CHECKPOINT_ENTRIES);
    assert_memory_equal(r.last_hash, template_last_hash, 32);

    /* The anchor of this run holds; a wrong one does not. */
    audit_anchor_t anchor = {.seq = TRAIL_ENTRIES};
    memcpy(anchor.hash, template_last_hash, 32);
    verify_path(template_path, keys, 1, &anchor, &r);
    assert_true(r.intact);
    anchor.hash[0] ^= 1;
    verify_path(template_path, keys, 1, &anchor, &r);
    assert_false(r.intact);
    assert_int_equal(r.broken_seq, TRAIL_ENTRIES);

    /* Another key did not sign these checkpoints; both keys (a rotation) do. */
    const keypair_t *other[] = {other_key};
    verify_path(template_path, other, 1, NULL, &r);
    assert_false(r.intact);
    assert_int_equal(r.broken_seq, SCHAKEL_AUDIT_CHECKPOINT_ENTRIES);
    assert_non_null(strstr(r.problem, "not a broker key"));
    const keypair_t *both[] = {other_key, broker_key};
    verify_path(template_path, both, 2, NULL, &r);
    assert_true(r.intact);
}

/* A broker appending while an auditor verifies: every verification of the
 * running store is intact (it reads one snapshot: a checkpoint committed
 * after the entries were read, or entries after the checkpoints were,
 * must not look like a cut or a removed checkpoint). A verification starts
 * once per VERIFY_STRIDE commits, so the reads overlap the appends all
 * along the trail while their number stays bounded (a verification of a
 * long trail is slow where threads take turns, as under valgrind). */
enum { VERIFY_STRIDE = 16 };

typedef struct appender {
    store_t *store;
    uint64_t last;
    pthread_mutex_t lock;
    pthread_cond_t committed;
    unsigned commits; /* under lock */
    bool done;        /* under lock */
    char error[256];
} appender_t;

static void *appender_run(void *arg)
{
    appender_t *a = arg;
    for (uint64_t seq = 1; seq <= a->last && a->error[0] == '\0'; seq += 7) {
        for (uint64_t i = seq; i < seq + 7 && i <= a->last; i++) {
            store_audit_entry_t e;
            trail_entry(i, &e);
            if (audit_append(a->store, broker_key, BASE_TIME + (int64_t)i / 100, &e) != 0)
                snprintf(a->error, sizeof a->error, "append %llu: %s", (unsigned long long)i,
                         store_errmsg(a->store));
        }
        if (a->error[0] == '\0' && store_commit(a->store) != 0)
            snprintf(a->error, sizeof a->error, "commit: %s", store_errmsg(a->store));
        pthread_mutex_lock(&a->lock);
        a->commits++;
        pthread_cond_signal(&a->committed);
        pthread_mutex_unlock(&a->lock);
    }
    pthread_mutex_lock(&a->lock);
    a->done = true;
    pthread_cond_signal(&a->committed);
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

/* Waits until VERIFY_STRIDE commits followed the last verification's
 * start, or the appender finished; true while it still appends. */
static bool appender_wait_stride(appender_t *a, unsigned *seen)
{
    pthread_mutex_lock(&a->lock);
    while (!a->done && a->commits < *seen + VERIFY_STRIDE)
        pthread_cond_wait(&a->committed, &a->lock);
    bool running = !a->done;
    *seen = a->commits;
    pthread_mutex_unlock(&a->lock);
    return running;
}

static void test_verify_beside_a_writer(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(store_subject_tag(f->store, SUBJECT_A, tag_a), 0);
    assert_int_equal(store_subject_tag(f->store, SUBJECT_B, tag_b), 0);
    appender_t a = {.store = f->store, .last = 6 * SCHAKEL_AUDIT_CHECKPOINT_ENTRIES};
    assert_int_equal(pthread_mutex_init(&a.lock, NULL), 0);
    assert_int_equal(pthread_cond_init(&a.committed, NULL), 0);
    store_t *reader = store_fixture_open_reader(f->path, NULL);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, appender_run, &a), 0);
    unsigned verified = 0, seen = 0;
    while (appender_wait_stride(&a, &seen)) {
        audit_verify_report_t r;
        if (audit_verify(reader, (const uint8_t(*)[32])broker_key->sign_pk, 1, NULL, &r) != 0)
            fail_msg("verify %u could not read: %s", verified, r.problem);
        if (!r.intact)
            fail_msg("verify %u of the running store: broken at %llu: %s", verified,
                     (unsigned long long)r.broken_seq, r.problem);
        verified++;
    }
    assert_int_equal(pthread_join(thread, NULL), 0);
    if (a.error[0] != '\0')
        fail_msg("%s", a.error);
    audit_verify_report_t r;
    assert_int_equal(audit_verify(reader, (const uint8_t(*)[32])broker_key->sign_pk, 1, NULL, &r),
                     0);
    assert_true(r.intact);
    assert_int_equal(r.entries, a.last);
    /* Every stride the appender passed started a verification, unless the
     * appender outran the reader; at least one ran on the running store. */
    assert_true(verified > 0);
    pthread_cond_destroy(&a.committed);
    pthread_mutex_destroy(&a.lock);
    store_close(&reader);
}

/* Tampering, each on its own copy of the template. */
enum tamper {
    T_FIELD_ALTERED,
    T_INTEGER_ALTERED,
    T_FIELD_REMOVED,
    T_FIELD_ADDED,
    T_ALTERED_WITH_ITS_HASH,
    T_ENTRY_DELETED,
    T_FIRST_ENTRY_DELETED,
    T_TWO_ENTRIES_SWAPPED,
    T_CHECKPOINT_TIME,
    T_CHECKPOINT_HASH,
    T_CHECKPOINT_MOVED,
    T_CHECKPOINT_OTHER_KEY,
    T_CHAIN_REWRITTEN,
    T_TAIL_CUT_PAST_CHECKPOINT,
    T_TAIL_CUT_AFTER_CHECKPOINT,
    T_TAIL_CUT_ANCHORED,
    T_HASH_SHORT,
    T_TEXT_AS_BLOB,
    T_CHECKPOINTS_DELETED_REWRITTEN,
    T_CHECKPOINTS_DELETED_ENTRY_REMOVED,
    T_LAST_CHECKPOINT_DELETED,
    T_ENTRY_OFF_CHAIN,
};

typedef struct rehash_state {
    uint8_t prev[32];
    uint8_t hash[32];
    int found;
} rehash_state_t;

static int rehash_one(const store_audit_entry_t *e, void *arg)
{
    rehash_state_t *st = arg;
    audit_entry_hash(st->prev, e, st->hash);
    st->found = 1;
    return 1;
}

static int stored_hash(const store_audit_entry_t *e, void *arg)
{
    memcpy(arg, e->hash, 32);
    return 1;
}

/* Recompute and store the hashes of entries from..last, as an attacker
 * without the broker key would after an edit. */
static void rehash_from(const char *path, sqlite3 *db, uint64_t from, uint64_t last)
{
    store_t *reader = store_fixture_open_reader(path, NULL);
    rehash_state_t st;
    memset(&st, 0, sizeof st);
    if (from > 1)
        assert_int_equal(store_audit_scan(reader, from - 2, 1, stored_hash, st.prev), 1);
    for (uint64_t seq = from; seq <= last; seq++) {
        st.found = 0;
        assert_true(store_audit_scan(reader, seq - 1, 1, rehash_one, &st) >= 0);
        assert_true(st.found);
        raw_set_blob(db, "UPDATE audit SET hash = ?1 WHERE seq = ?2", st.hash, 32, (int64_t)seq);
        memcpy(st.prev, st.hash, 32);
    }
    store_close(&reader);
}

static void resign_checkpoint(sqlite3 *db, uint64_t seq, const keypair_t *key)
{
    sqlite3_stmt *stmt = NULL;
    uint8_t hash[32], sig[64], signed_bytes[AUDIT_CHECKPOINT_SIGNED_BYTES];
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT hash, at FROM audit_checkpoints WHERE seq = ?1",
                                        -1, &stmt, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(stmt, 1, (int64_t)seq);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    memcpy(hash, sqlite3_column_blob(stmt, 0), 32);
    int64_t at = sqlite3_column_int64(stmt, 1);
    sqlite3_finalize(stmt);
    audit_checkpoint_signed_bytes(seq, hash, at, signed_bytes);
    assert_int_equal(keys_sign(key, signed_bytes, sizeof signed_bytes, sig), 0);
    raw_set_blob(db, "UPDATE audit_checkpoints SET key = ?1 WHERE seq = ?2", key->sign_pk, 32,
                 (int64_t)seq);
    raw_set_blob(db, "UPDATE audit_checkpoints SET signature = ?1 WHERE seq = ?2", sig, 64,
                 (int64_t)seq);
}

static void tamper(const char *path, enum tamper t)
{
    sqlite3 *db = attacker_open(path);
    switch (t) {
    case T_FIELD_ALTERED:
        store_fixture_db_exec(db, "UPDATE audit SET detail = 'forged' WHERE seq = 1502");
        break;
    case T_INTEGER_ALTERED:
        store_fixture_db_exec(db,
                              "UPDATE audit SET delivery_seq = delivery_seq + 1 WHERE seq = 1500");
        break;
    case T_FIELD_REMOVED:
        store_fixture_db_exec(db, "UPDATE audit SET subject_tag = NULL WHERE seq = 1500");
        break;
    case T_FIELD_ADDED:
        store_fixture_db_exec(db, "UPDATE audit SET kind = 'witwassen' WHERE seq = 1500");
        break;
    case T_ALTERED_WITH_ITS_HASH:
        store_fixture_db_exec(db, "UPDATE audit SET recipient = 'riec/analyse' WHERE seq = 1500");
        rehash_from(path, db, 1500, 1500);
        break;
    case T_ENTRY_DELETED:
        store_fixture_db_exec(db, "DELETE FROM audit WHERE seq = 1500");
        break;
    case T_FIRST_ENTRY_DELETED:
        store_fixture_db_exec(db, "DELETE FROM audit WHERE seq = 1");
        break;
    case T_TWO_ENTRIES_SWAPPED:
        store_fixture_db_exec(db, "UPDATE audit SET seq = 999999 WHERE seq = 1500;"
                                  "UPDATE audit SET seq = 1500 WHERE seq = 1501;"
                                  "UPDATE audit SET seq = 1501 WHERE seq = 999999;");
        break;
    case T_CHECKPOINT_TIME:
        store_fixture_db_exec(db, "UPDATE audit_checkpoints SET at = at + 1 WHERE seq = 1000");
        break;
    case T_CHECKPOINT_HASH:
        store_fixture_db_exec(
            db, "UPDATE audit_checkpoints SET hash = (SELECT hash FROM audit WHERE seq = 999)"
                " WHERE seq = 1000");
        break;
    case T_CHECKPOINT_MOVED:
        store_fixture_db_exec(db, "UPDATE audit_checkpoints SET seq = 999 WHERE seq = 1000");
        break;
    case T_CHECKPOINT_OTHER_KEY:
        resign_checkpoint(db, 1000, other_key);
        break;
    case T_CHAIN_REWRITTEN:
        store_fixture_db_exec(db, "UPDATE audit SET detail = 'forged' WHERE seq = 1502");
        rehash_from(path, db, 1502, TRAIL_ENTRIES);
        break;
    case T_TAIL_CUT_PAST_CHECKPOINT:
        store_fixture_db_exec(db, "DELETE FROM audit WHERE seq > 1800");
        break;
    case T_TAIL_CUT_AFTER_CHECKPOINT:
    case T_TAIL_CUT_ANCHORED:
        store_fixture_db_exec(db, "DELETE FROM audit WHERE seq > 2200");
        break;
    case T_HASH_SHORT:
        store_fixture_db_exec(db, "UPDATE audit SET hash = substr(hash, 1, 31) WHERE seq = 1500");
        break;
    case T_TEXT_AS_BLOB:
        store_fixture_db_exec(db, "UPDATE audit SET detail = x'41004243' WHERE seq = 1502");
        break;
    case T_CHECKPOINTS_DELETED_REWRITTEN:
        store_fixture_db_exec(db, "DELETE FROM audit_checkpoints;"
                                  "UPDATE audit SET detail = 'forged' WHERE seq = 1502");
        rehash_from(path, db, 1502, TRAIL_ENTRIES);
        break;
    case T_CHECKPOINTS_DELETED_ENTRY_REMOVED:
        store_fixture_db_exec(db,
                              "DELETE FROM audit_checkpoints; DELETE FROM audit WHERE seq = 1500;"
                              "UPDATE audit SET seq = seq - 1 WHERE seq > 1500");
        rehash_from(path, db, 1500, TRAIL_ENTRIES - 1);
        break;
    case T_LAST_CHECKPOINT_DELETED:
        store_fixture_db_exec(db, "DELETE FROM audit_checkpoints WHERE seq = 2000");
        break;
    case T_ENTRY_OFF_CHAIN: /* a forged entry for a real subject, outside the chain */
        store_fixture_db_exec(db,
                              "INSERT INTO audit (seq, at, event, actor, recipient, subject_tag,"
                              " hash) SELECT 0, at, event, actor, 'woco-forged/meldingen',"
                              " subject_tag, zeroblob(32) FROM audit WHERE seq = 1500");
        break;
    }
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void export_of(store_t *store, const char *subject, char **json);

static void test_verify_names_the_first_broken_place(void **state)
{
    fixture_t *f = *state;
    static const struct {
        enum tamper t;
        uint64_t broken_seq; /* 0: still intact (what verify cannot see) */
        const char *problem;
        uint64_t entries; /* verified */
    } rows[] = {
        {T_FIELD_ALTERED, 1502, "does not match its hash", 1501},
        {T_INTEGER_ALTERED, 1500, "does not match its hash", 1499},
        {T_FIELD_REMOVED, 1500, "does not match its hash", 1499},
        {T_FIELD_ADDED, 1500, "does not match its hash", 1499},
        {T_ALTERED_WITH_ITS_HASH, 1501, "before it was rewritten", 1500},
        {T_ENTRY_DELETED, 1500, "entry 1500 is missing", 1499},
        {T_FIRST_ENTRY_DELETED, 1, "entry 1 is missing", 0},
        {T_TWO_ENTRIES_SWAPPED, 1500, "does not match its hash", 1499},
        {T_CHECKPOINT_TIME, 1000, "checkpoint at seq 1000 does not verify", 999},
        {T_CHECKPOINT_HASH, 1000, "checkpoint at seq 1000 does not verify", 999},
        {T_CHECKPOINT_MOVED, 999, "checkpoint at seq 999 does not verify", 998},
        {T_CHECKPOINT_OTHER_KEY, 1000, "not a broker key", 999},
        {T_CHAIN_REWRITTEN, 1001, "entries 1001..2000 were rewritten", 1000},
        {T_TAIL_CUT_PAST_CHECKPOINT, 1801, "entries from 1801 on were removed", 1800},
        {T_TAIL_CUT_AFTER_CHECKPOINT, 0, NULL, 2200},
        {T_TAIL_CUT_ANCHORED, 2201, "the anchor names entry 2500", 2200},
        {T_HASH_SHORT, 1500, "entry 1500 is damaged", 1499},
        {T_TEXT_AS_BLOB, 1502, "entry 1502 is damaged", 1501},
        {T_CHECKPOINTS_DELETED_REWRITTEN, 1000, "checkpoints were removed", 999},
        {T_CHECKPOINTS_DELETED_ENTRY_REMOVED, 1000, "checkpoints were removed", 999},
        {T_LAST_CHECKPOINT_DELETED, 2000, "after the last checkpoint (seq 1000)", 1999},
        {T_ENTRY_OFF_CHAIN, TRAIL_ENTRIES + 1, "1 audit row(s) outside the chain", TRAIL_ENTRIES},
    };
    const keypair_t *keys[] = {broker_key};
    audit_anchor_t anchor = {.seq = TRAIL_ENTRIES};
    memcpy(anchor.hash, template_last_hash, 32);
    store_close(&f->store);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char path[160];
        audit_verify_report_t r;
        snprintf(path, sizeof path, "%s/tampered-%zu.db", f->dir, i);
        copy_file(template_path, path);
        tamper(path, rows[i].t);
        verify_path(path, keys, 1, rows[i].t == T_TAIL_CUT_ANCHORED ? &anchor : NULL, &r);
        if (rows[i].broken_seq == 0) {
            if (!r.intact)
                fail_msg("row %zu: reported broken at %llu: %s", i,
                         (unsigned long long)r.broken_seq, r.problem);
        } else if (r.intact || r.broken_seq != rows[i].broken_seq ||
                   strstr(r.problem, rows[i].problem) == NULL) {
            fail_msg("row %zu: intact=%d broken_seq=%llu \"%s\"; expected %llu \"%s\"", i, r.intact,
                     (unsigned long long)r.broken_seq, r.problem,
                     (unsigned long long)rows[i].broken_seq, rows[i].problem);
        }
        if (r.entries != rows[i].entries)
            fail_msg("row %zu: %llu entries verified, expected %llu", i,
                     (unsigned long long)r.entries, (unsigned long long)rows[i].entries);
        if (rows[i].t == T_ENTRY_OFF_CHAIN) { /* nor does the export show it */
            store_t *reader = store_fixture_open_reader(path, store_key);
            char *json = NULL;
            export_of(reader, SUBJECT_A, &json);
            assert_non_null(strstr(json, "\"recipient\":\"om/parket\""));
            assert_null(strstr(json, "woco-forged"));
            free(json);
            store_close(&reader);
        }
        unlink(path);
    }
}

/* A rotation of the broker key at entry 1000: the template's checkpoint
 * 1000 re-signed by the old key stays, 2000 is signed by the new one
 * (other_key). Keys given oldest first verify; in the other order they do
 * not; a key listed again covers a return to it. And the attack the rule
 * stops: with the old key (from a compromised host), rewrite entries the
 * new key certified and re-sign their checkpoint with it. */
static void rotated_copy(const char *path, int forged)
{
    copy_file(template_path, path);
    sqlite3 *db = attacker_open(path);
    if (forged) {
        store_fixture_db_exec(db, "UPDATE audit SET recipient = 'riec/analyse' WHERE seq = 1500");
        rehash_from(path, db, 1500, TRAIL_ENTRIES);
        store_fixture_db_exec(db, "UPDATE audit_checkpoints SET hash ="
                                  " (SELECT hash FROM audit WHERE seq = 2000) WHERE seq = 2000");
    }
    resign_checkpoint(db, 2000, forged ? broker_key : other_key);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_verify_keys_in_rotation_order(void **state)
{
    fixture_t *f = *state;
    char path[160];
    audit_verify_report_t r;
    store_close(&f->store);
    snprintf(path, sizeof path, "%s/rotated.db", f->dir);
    rotated_copy(path, 0);
    const keypair_t *old_first[] = {broker_key, other_key};
    verify_path(path, old_first, 2, NULL, &r);
    assert_true(r.intact);
    assert_int_equal(r.checkpoints, 2);
    const keypair_t *new_first[] = {other_key, broker_key};
    verify_path(path, new_first, 2, NULL, &r);
    assert_false(r.intact);
    assert_int_equal(r.broken_seq, 2000);
    assert_non_null(
        strstr(r.problem, "comes before the key that signed checkpoints since seq 1000"));
    const keypair_t *returned[] = {other_key, broker_key, other_key};
    verify_path(path, returned, 3, NULL, &r);
    assert_true(r.intact);
    unlink(path);

    rotated_copy(path, 1);
    const keypair_t *only_old[] = {broker_key};
    verify_path(path, only_old, 1, NULL, &r); /* what the forger hopes for */
    assert_true(r.intact);
    /* a checkpoint by the new key before it: the forged one is refused
     * (the copy's guards are gone already) */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    resign_checkpoint(db, 1000, other_key);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    verify_path(path, old_first, 2, NULL, &r);
    assert_false(r.intact);
    assert_int_equal(r.broken_seq, 2000);
    assert_non_null(strstr(r.problem, "a retired key re-signed the trail"));
    unlink(path);
}

/* An offline command's entry (schakeld --rekey): unsigned while the
 * stretch without a checkpoint allows one more; refused when it would
 * reach SCHAKEL_AUDIT_CHECKPOINT_ENTRIES (verify would call that removed
 * checkpoints, for good); with the broker key, certified at once. */
static void test_offline_entry_keeps_the_trail_verifiable(void **state)
{
    fixture_t *f = *state;
    const uint64_t n = SCHAKEL_AUDIT_CHECKPOINT_ENTRIES;
    trail_append(f->store, NULL, 1, n - 2); /* a broker that died before its checkpoint */
    char why[512];
    store_audit_entry_t e;
    audit_entry_init(&e, "store.rekeyed");
    assert_int_equal(audit_append_offline(f->store, NULL, BASE_TIME + 20, &e, why, sizeof why), 0);
    assert_int_equal(e.seq, n - 1);
    assert_int_equal(store_commit(f->store), 0);
    audit_entry_init(&e, "store.rekeyed");
    assert_int_equal(audit_append_offline(f->store, NULL, BASE_TIME + 21, &e, why, sizeof why), -1);
    assert_non_null(strstr(why, "ends in 999 entries without a checkpoint"));
    store_rollback(f->store);
    audit_entry_init(&e, "store.rekeyed");
    assert_int_equal(
        audit_append_offline(f->store, broker_key, BASE_TIME + 22, &e, why, sizeof why), 0);
    assert_int_equal(store_commit(f->store), 0);
    store_audit_tail_t tail;
    assert_int_equal(store_audit_tail(f->store, &tail), 0);
    assert_int_equal(tail.seq, n);
    assert_int_equal(tail.checkpoint_seq, n);
    audit_verify_report_t r;
    const keypair_t *keys[] = {broker_key};
    store_close(&f->store);
    verify_path(f->path, keys, 1, NULL, &r);
    assert_true(r.intact);
    assert_int_equal(r.entries, n);
}

/* ------------------------------------------------------------------ fail closed */

static void fill(uint8_t *out, size_t len, uint8_t salt)
{
    for (size_t i = 0; i < len; i++)
        out[i] = (uint8_t)(i * 7u + salt);
}

/* The action of a turn (a publish with one item) and its record, as the
 * broker writes them; returns audit_append's result. */
static int action_with_record(store_t *store, uint8_t salt, size_t detail_len)
{
    uint8_t id[16], hash[32], sig[64], root[32], item[40];
    static char detail[SCHAKEL_AUDIT_MAX_TEXT_LEN + 1];
    fill(id, sizeof id, salt);
    fill(hash, sizeof hash, salt);
    fill(sig, sizeof sig, salt);
    fill(root, sizeof root, salt);
    fill(item, sizeof item, salt);
    assert_int_equal(store_begin(store), 0);
    int64_t publish_id =
        store_publish_add(store, "politie/bvh-koppeling", id, hash, sig, root, BASE_TIME);
    assert_true(publish_id > 0);
    assert_true(store_item_add(store, publish_id, 0, item, sizeof item) > 0);
    memset(detail, 'x', detail_len);
    detail[detail_len] = '\0';
    store_audit_entry_t e;
    audit_entry_init(&e, "publish.accepted");
    audit_set_text(&e, STORE_AUDIT_ACTOR, "politie/bvh-koppeling");
    audit_set_text(&e, STORE_AUDIT_DETAIL, detail);
    return audit_append(store, broker_key, BASE_TIME, &e);
}

static int publish_stored(store_t *store, uint8_t salt)
{
    uint8_t id[16];
    fill(id, sizeof id, salt);
    return store_publish_find(store, "politie/bvh-koppeling", id, NULL, NULL, NULL, NULL);
}

static void test_full_storage_refuses_the_action_and_keeps_nothing(void **state)
{
    fixture_t *f = *state;
    /* A new store's file holds the free pages of the tables its schema
     * made and dropped (the deliveries', schema 13); a new page must grow
     * the file for the limit below to refuse it, so none is left free. */
    store_close(&f->store);
    store_fixture_raw_exec(f->path, "VACUUM");
    sqlite3 *db = store_fixture_raw_open(f->path);
    assert_int_equal(store_fixture_db_int(db, "PRAGMA freelist_count"), 0);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    f->store = store_fixture_open(f->path, store_key);
    trail_append(f->store, broker_key, 1, 3);
    assert_int_equal(action_with_record(f->store, 1, 10), 0);
    assert_int_equal(store_commit(f->store), 0);
    /* Two long records: the trail's last page is nearly full (pages of 4
     * or 8 KiB; store_schema.c), and the next long record needs a new one. */
    for (uint8_t salt = 3; salt <= 4; salt++) {
        assert_int_equal(action_with_record(f->store, salt, SCHAKEL_AUDIT_MAX_TEXT_LEN * 3 / 4), 0);
        assert_int_equal(store_commit(f->store), 0);
    }

    /* The action's rows fit; the record (a new page) does not. */
    assert_int_equal(store_begin(f->store), 0);
    assert_true(store_test_limit_pages(f->store, 1) > 0); /* = the current size */
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(action_with_record(f->store, 2, SCHAKEL_AUDIT_MAX_TEXT_LEN), -1);
    assert_int_equal(store_last_error_is_unavailable(f->store), 1); /* UNAVAILABLE to publishers */
    assert_non_null(strstr(store_errmsg(f->store), "full"));
    assert_int_equal(store_rollback(f->store), 0); /* what the broker does with the turn */

    /* Nothing of the refused action or its record remains. */
    assert_int_equal(publish_stored(f->store, 2), 0);
    assert_int_equal(publish_stored(f->store, 1), 1);
    store_audit_tail_t tail;
    assert_int_equal(store_audit_tail(f->store, &tail), 0);
    assert_int_equal(tail.seq, 6);

    /* Space again: the chain goes on from the committed tail, intact. */
    assert_true(store_test_limit_pages(f->store, 1 << 20) > 0);
    assert_int_equal(action_with_record(f->store, 2, SCHAKEL_AUDIT_MAX_TEXT_LEN), 0);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(publish_stored(f->store, 2), 1);
    store_close(&f->store);
    audit_verify_report_t r;
    const keypair_t *keys[] = {broker_key};
    verify_path(f->path, keys, 1, NULL, &r);
    assert_true(r.intact);
    assert_int_equal(r.entries, 7);
}

static void test_append_refuses_bad_entries(void **state)
{
    fixture_t *f = *state;
    static char long_text[SCHAKEL_AUDIT_MAX_TEXT_LEN + 2], max_text[SCHAKEL_AUDIT_MAX_TEXT_LEN + 1];
    memset(long_text, 'a', SCHAKEL_AUDIT_MAX_TEXT_LEN + 1);
    memset(max_text, 'a', SCHAKEL_AUDIT_MAX_TEXT_LEN);
    enum { NO_EVENT, NOT_UTF8, TOO_LONG, INTEGER_AS_TEXT, LONGEST };
    static const struct {
        int kind;
        int ok;
    } rows[] = {{NO_EVENT, 0}, {NOT_UTF8, 0}, {TOO_LONG, 0}, {INTEGER_AS_TEXT, 0}, {LONGEST, 1}};
    uint64_t written = 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        store_audit_entry_t e;
        audit_entry_init(&e, "request.refused");
        switch (rows[i].kind) {
        case NO_EVENT:
            e.field[STORE_AUDIT_EVENT].present = 0;
            break;
        case NOT_UTF8:
            audit_set_text(&e, STORE_AUDIT_DETAIL, "caf\xe9");
            break;
        case TOO_LONG:
            audit_set_text(&e, STORE_AUDIT_DETAIL, long_text);
            break;
        case INTEGER_AS_TEXT:
            e.field[STORE_AUDIT_ITEM_INDEX].present = 1;
            e.field[STORE_AUDIT_ITEM_INDEX].text = "3";
            break;
        case LONGEST:
            audit_set_text(&e, STORE_AUDIT_DETAIL, max_text);
            break;
        }
        int rc = audit_append(f->store, broker_key, BASE_TIME, &e);
        if ((rc == 0) != rows[i].ok)
            fail_msg("row %zu: append returned %d (%s)", i, rc, store_errmsg(f->store));
        written += rows[i].ok;
        store_audit_tail_t tail;
        assert_int_equal(store_audit_tail(f->store, &tail), 0);
        assert_int_equal(tail.seq, written); /* a refused entry leaves no trace */
    }
    assert_int_equal(store_commit(f->store), 0);

    /* The store's own checks, below audit_append. */
    store_audit_entry_t e;
    audit_entry_init(&e, "request.refused");
    e.seq = 5;                                              /* not the tail + 1 */
    assert_int_equal(store_audit_append(f->store, &e), -1); /* no transaction */
    assert_non_null(strstr(store_errmsg(f->store), "no transaction"));
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(store_audit_append(f->store, &e), -1);
    assert_non_null(strstr(store_errmsg(f->store), "does not follow"));
    store_audit_checkpoint_t cp;
    memset(&cp, 0, sizeof cp);
    cp.seq = written + 1; /* no such entry */
    assert_int_equal(store_audit_checkpoint_add(f->store, &cp), -1);
    assert_int_equal(store_rollback(f->store), 0);
}

static void test_trail_is_append_only_in_the_schema(void **state)
{
    fixture_t *f = *state;
    trail_append(f->store, broker_key, 1, SCHAKEL_AUDIT_CHECKPOINT_ENTRIES);
    sqlite3 *db = store_fixture_raw_open_or_create(f->path);
    static const char *const refused[] = {
        "UPDATE audit SET detail = 'x' WHERE seq = 1",
        "DELETE FROM audit WHERE seq = 2",
        "UPDATE audit_checkpoints SET at = 0",
        "DELETE FROM audit_checkpoints",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (!raw_exec_fails(db, refused[i], "append-only"))
            fail_msg("row %zu: \"%s\" was not refused", i, refused[i]);
    assert_int_equal(store_fixture_db_int(db, "SELECT count(*) FROM audit"),
                     SCHAKEL_AUDIT_CHECKPOINT_ENTRIES);
    /* The subject and delivery lookups use their partial indexes. */
    static const struct {
        const char *sql, *index;
    } plans[] = {
        {"EXPLAIN QUERY PLAN SELECT seq FROM audit WHERE subject_tag = 'x' ORDER BY seq",
         "audit_by_subject"},
        {"EXPLAIN QUERY PLAN SELECT seq FROM audit WHERE delivery_seq = 5 ORDER BY seq",
         "audit_by_delivery"},
    };
    for (size_t i = 0; i < sizeof plans / sizeof plans[0]; i++) {
        sqlite3_stmt *stmt = NULL;
        int used = 0;
        assert_int_equal(sqlite3_prepare_v2(db, plans[i].sql, -1, &stmt, NULL), SQLITE_OK);
        while (sqlite3_step(stmt) == SQLITE_ROW)
            used |= strstr((const char *)sqlite3_column_text(stmt, 3), plans[i].index) != NULL;
        sqlite3_finalize(stmt);
        if (!used)
            fail_msg("row %zu: the plan does not use %s", i, plans[i].index);
    }
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* ------------------------------------------------------------------ reader */

/* Subjects are recorded as keyed tags: per store, not the pseudonym, the
 * same before and after the store key is rotated. */
static void test_subject_tag_is_keyed_per_store_and_survives_rekey(void **state)
{
    fixture_t *f = *state;
    char tag[STORE_SUBJECT_TAG_LEN + 1], again[STORE_SUBJECT_TAG_LEN + 1],
        other_tag[STORE_SUBJECT_TAG_LEN + 1], path[160], err[512];
    uint8_t new_key[STORE_KEY_BYTES];
    assert_int_equal(store_subject_tag(f->store, SUBJECT_A, tag), 0);
    assert_int_equal(strlen(tag), STORE_SUBJECT_TAG_LEN);
    assert_int_equal(strspn(tag, "0123456789abcdef"), STORE_SUBJECT_TAG_LEN);
    assert_int_equal(store_subject_tag(f->store, SUBJECT_B, other_tag), 0);
    assert_string_not_equal(tag, other_tag);
    assert_int_equal(store_subject_tag(f->store, SUBJECT_A, again), 0);
    assert_string_equal(tag, again);

    snprintf(path, sizeof path, "%s/other.db", f->dir);
    store_t *other =
        store_fixture_create(path, store_key); /* same store key, its own subject key */
    assert_int_equal(store_subject_tag(other, SUBJECT_A, other_tag), 0);
    assert_string_not_equal(tag, other_tag);
    store_close(&other);

    randombytes_buf(new_key, sizeof new_key);
    store_rekey_counts_t counts;
    assert_int_equal(store_rekey(f->store, new_key, &counts), 0);
    assert_int_equal(store_subject_tag(f->store, SUBJECT_A, again), 0);
    assert_string_equal(tag, again);
    store_close(&f->store);

    /* Readers: with the new key the same tag; keyless none; the old key is
     * refused. */
    store_t *reader = store_open_reader(f->path, new_key, err, sizeof err);
    assert_non_null(reader);
    assert_int_equal(store_subject_tag(reader, SUBJECT_A, again), 0);
    assert_string_equal(tag, again);
    store_close(&reader);
    reader = store_fixture_open_reader(f->path, NULL);
    assert_int_equal(store_subject_tag(reader, SUBJECT_A, again), -1);
    store_close(&reader);
    assert_null(store_open_reader(f->path, store_key, err, sizeof err));
    assert_non_null(strstr(err, "does not open this store"));
    f->store = store_open(f->path, new_key, STORE_OPEN_EXISTING, err, sizeof err);
    assert_non_null(f->store);
    assert_int_equal(store_subject_tag(f->store, SUBJECT_A, again), 0);
    assert_string_equal(tag, again);
}

static void test_reader_is_keyless_read_only_and_picky(void **state)
{
    fixture_t *f = *state;
    char path[160], err[512];
    trail_append(f->store, broker_key, 1, 3);

    store_t *reader = store_fixture_open_reader(f->path, NULL); /* while the writer holds it open */
    store_audit_tail_t tail;
    assert_int_equal(store_audit_tail(reader, &tail), 0);
    assert_int_equal(tail.seq, 3);
    assert_int_equal(store_begin(reader), -1);
    assert_non_null(strstr(store_errmsg(reader), "read-only"));
    assert_int_equal(store_mailbox_count(reader, "om/parket"), -1);
    store_audit_entry_t e;
    audit_entry_init(&e, "request.refused");
    assert_int_equal(audit_append(reader, NULL, BASE_TIME, &e), -1);
    assert_int_equal(store_audit_tail(reader, &tail), 0);
    assert_int_equal(tail.seq, 3);
    store_close(&reader);

    /* Files that are no store with a trail. */
    snprintf(path, sizeof path, "%s/old.db", f->dir);
    sqlite3 *db = store_fixture_raw_open_or_create(path);
    store_fixture_db_exec(db, "CREATE TABLE t (x); PRAGMA user_version = 2;");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    static const struct {
        const char *name, *expected;
    } rows[] = {
        {"missing.db", "unable to open"},
        {"old.db", "predates"},
        {"empty.db", "not a Schakel store"},
    };
    snprintf(path, sizeof path, "%s/empty.db", f->dir);
    fclose(fopen(path, "w"));
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", f->dir, rows[i].name);
        err[0] = '\0';
        reader = store_open_reader(path, NULL, err, sizeof err);
        if (reader != NULL || strstr(err, rows[i].expected) == NULL)
            fail_msg("row %zu: %s opened, or error \"%s\" lacks \"%s\"", i, rows[i].name, err,
                     rows[i].expected);
        store_close(&reader);
    }
}

/* ------------------------------------------------------------------ subject export */

/* The seqs of the entries in an export, in order (each entry object starts
 * with its seq). */
static size_t export_seqs(const char *json, uint64_t *out, size_t max)
{
    size_t n = 0;
    for (const char *p = json; (p = strstr(p, "{\"seq\":")) != NULL; p++) {
        if (n < max)
            out[n] = strtoull(p + 7, NULL, 10);
        n++;
    }
    return n;
}

/* The export's time is the caller's (the broker's, guarded against clock
 * steps), not the system clock's: one fixed here, and checked. */
#define EXPORT_AT 1764000000
#define EXPORT_AT_TEXT "\"exported_at\":\"2025-11-24T16:00:00Z\""

/* The export in steps as bounded, as the broker reads and writes it over
 * its turns; the number of steps in *steps. */
static char *export_in_steps(store_t *store, const char *subject,
                             const audit_export_bounds_t *bounds, unsigned *steps)
{
    char err[256];
    audit_export_t *ex = audit_export_begin(store, subject, EXPORT_AT, 0, err, sizeof err);
    if (ex == NULL)
        fail_msg("export of %s in steps: %s", subject, err);
    int rc;
    *steps = 1;
    while ((rc = audit_export_step(ex, store, bounds, err, sizeof err)) == 0)
        (*steps)++;
    if (rc != 1)
        fail_msg("export of %s in steps: %s", subject, err);
    char *json = audit_export_document(ex, NULL);
    assert_non_null(json);
    audit_export_destroy(&ex);
    assert_null(ex);
    return json;
}

/* Each export of these tests is also read and written in steps of several
 * sizes: the same document, byte for byte, whatever the steps. */
static void export_of(store_t *store, const char *subject, char **json)
{
    char err[256];
    static const audit_export_bounds_t sizes[] = {{1, 1, 1}, {2, 3, 400}, {7, 2, 4096}};
    if (audit_subject_export(store, subject, EXPORT_AT, json, err, sizeof err) != 0)
        fail_msg("export of %s: %s", subject, err);
    if (strstr(*json, EXPORT_AT_TEXT) == NULL)
        fail_msg("export of %s is not stamped " EXPORT_AT_TEXT ": %.200s", subject, *json);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned steps = 0;
        char *stepped = export_in_steps(store, subject, &sizes[i], &steps);
        if (strcmp(stepped, *json) != 0)
            fail_msg("export of %s in steps of %zu entries, %zu deliveries, %zu bytes differs:"
                     "\n%s\nin one go:\n%s",
                     subject, sizes[i].entries, sizes[i].deliveries, sizes[i].bytes, stepped,
                     *json);
        sodium_memzero(stepped, strlen(stepped)); /* as the caller's own: it names the subject */
        free(stepped);
    }
}

/* The pseudonym the export names goes back to the heap only wiped: the
 * document as it grows, and the entries it was made of. */
static void test_subject_export_wipes_what_it_frees(void **state)
{
    fixture_t *f = *state;
    trail_append(f->store, broker_key, 1, 30);
    store_close(&f->store);
    char err[256];
    store_t *reader = store_open_reader(f->path, store_key, err, sizeof err);
    assert_non_null(reader);
    char *json = NULL;
    watched_text = SUBJECT_A;
    watched_hits = 0;
    n_watched = 0;
    export_of(reader, SUBJECT_A, &json);
    assert_true(watch_drop(json)); /* the document holds it: this test can fail */
    watched_text = NULL;
    assert_false(watch_overflow);
    assert_non_null(strstr(json, "\"subject\":\"" SUBJECT_A "\"")); /* else this cannot fail */
    assert_true(strlen(json) > 1024); /* the document grew several times */
    if (watched_hits != 0)
        fail_msg("%zu blocks holding the pseudonym were freed unwiped", watched_hits);
    sodium_memzero(json, strlen(json));
    free(json);
    store_close(&reader);
}

static void test_subject_export_holds_exactly_the_subjects_entries(void **state)
{
    fixture_t *f = *state;
    trail_append(f->store, broker_key, 1, 30);
    /* An export through the broker is itself an entry about the subject. */
    store_audit_entry_t e;
    audit_entry_init(&e, "admin.audit_subject");
    audit_set_text(&e, STORE_AUDIT_ACTOR, "gemeente/beheer");
    audit_set_text(&e, STORE_AUDIT_SUBJECT_TAG, tag_a);
    assert_int_equal(audit_append(f->store, broker_key, BASE_TIME, &e), 0);
    assert_int_equal(store_commit(f->store), 0);

    /* trail_entry: A's deliveries at 10, 20, 30 (acked at 11, 21; 30 is
     * not acked), B's at 5, 15, 25 (acked at 6, 16, 26); the export entry
     * is seq 31. */
    static const struct {
        const char *subject;
        uint64_t seqs[8];
        size_t n;
    } rows[] = {
        {SUBJECT_A, {10, 11, 20, 21, 30, 31}, 6},
        {SUBJECT_B, {5, 6, 15, 16, 25, 26}, 6},
        {"subj-nobody-9", {0}, 0},
    };
    store_close(&f->store);
    char err[256];
    /* The trail names subjects by a keyed tag: no export without the key. */
    store_t *reader = store_fixture_open_reader(f->path, NULL);
    char *json = NULL;
    assert_int_equal(
        audit_subject_export(reader, SUBJECT_A, (int64_t)time(NULL), &json, err, sizeof err), -1);
    assert_non_null(strstr(err, "needs the store key"));
    store_close(&reader);
    reader = store_open_reader(f->path, store_key, err, sizeof err);
    assert_non_null(reader);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char count[32];
        uint64_t seqs[16];
        json = NULL;
        export_of(reader, rows[i].subject, &json);
        size_t n = export_seqs(json, seqs, 16);
        if (n != rows[i].n)
            fail_msg("row %zu: %zu entries exported, expected %zu:\n%s", i, n, rows[i].n, json);
        for (size_t k = 0; k < n; k++)
            if (seqs[k] != rows[i].seqs[k])
                fail_msg("row %zu: entry %zu is seq %llu, expected %llu", i, k,
                         (unsigned long long)seqs[k], (unsigned long long)rows[i].seqs[k]);
        snprintf(count, sizeof count, "\"count\":%zu,", rows[i].n);
        assert_non_null(strstr(json, count));
        assert_non_null(strstr(json, rows[i].subject));
        free(json);
    }
    export_of(reader, SUBJECT_A, &json);
    static const char *const present[] = {
        "\"recipient\":\"om/parket\"",
        "\"recipient_partner\":\"om\"",
        "\"purpose\":\"Strafrechtelijke beoordeling\"",
        "\"legal_basis\":\"Wpg art. 16\"",
        "\"rule_id\":\"politie-om\"",
        "\"event\":\"delivery.acked\"",
    };
    for (size_t i = 0; i < sizeof present / sizeof present[0]; i++)
        if (strstr(json, present[i]) == NULL)
            fail_msg("the export lacks %s", present[i]);
    assert_null(strstr(json, SUBJECT_B));
    assert_null(strstr(json, tag_b));
    assert_non_null(strstr(json, tag_a));
    assert_null(strstr(json, "request.refused"));
    free(json);

    json = NULL;
    assert_int_equal(
        audit_subject_export(reader, "123456789", (int64_t)time(NULL), &json, err, sizeof err), -1);
    assert_null(json);
    assert_int_equal(
        audit_subject_export(reader, "a'b OR 1", (int64_t)time(NULL), &json, err, sizeof err), -1);
    store_close(&reader);
}

/* ------------------------------------------------------------------ acked entries (schema 6) */

/* Entries as the broker writes them, each appended (and not committed). */
static void append_entry(store_t *store, store_audit_entry_t *e)
{
    if (audit_append(store, broker_key, BASE_TIME, e) != 0)
        fail_msg("append %s: %s", e->field[STORE_AUDIT_EVENT].text, store_errmsg(store));
}

static void append_queued(store_t *store, uint64_t delivery, const char *tag)
{
    store_audit_entry_t e;
    audit_entry_init(&e, "delivery.queued");
    audit_set_text(&e, STORE_AUDIT_ACTOR, "politie/bvh-koppeling");
    audit_set_text(&e, STORE_AUDIT_RECIPIENT, "om/parket");
    audit_set_text(&e, STORE_AUDIT_RECIPIENT_PARTNER, "om");
    audit_set_int(&e, STORE_AUDIT_DELIVERY_SEQ, (int64_t)delivery);
    audit_set_text(&e, STORE_AUDIT_SUBJECT_TAG, tag);
    audit_set_text(&e, STORE_AUDIT_RULE_ID, "politie-om");
    append_entry(store, &e);
}

/* A recipient's acks of one turn (schema 6). */
static void append_acked_list(store_t *store, const char *recipient, const char *seqs)
{
    store_audit_entry_t e;
    audit_entry_init(&e, "delivery.acked");
    audit_set_text(&e, STORE_AUDIT_ACTOR, recipient);
    audit_set_text(&e, STORE_AUDIT_RECIPIENT, recipient);
    audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, seqs);
    append_entry(store, &e);
}

/* One ack, as entries before schema 6 recorded it. */
static void append_acked_one(store_t *store, const char *recipient, uint64_t delivery)
{
    store_audit_entry_t e;
    audit_entry_init(&e, "delivery.acked");
    audit_set_text(&e, STORE_AUDIT_ACTOR, recipient);
    audit_set_int(&e, STORE_AUDIT_DELIVERY_SEQ, (int64_t)delivery);
    append_entry(store, &e);
}

static int count_entry(const store_audit_entry_t *e, void *arg)
{
    (void)e;
    (*(size_t *)arg)++;
    return 0;
}

static uint64_t acked_entry_of(store_t *store, uint64_t delivery)
{
    uint64_t entry = 0;
    int rc = store_audit_acked_lookup(store, delivery, &entry);
    assert_true(rc >= 0);
    return rc == 1 ? entry : 0;
}

static void test_acked_entries_are_indexed_with_their_entry(void **state)
{
    fixture_t *f = *state;
    static char long_list[STORE_AUDIT_MAX_ACKED_SEQS * 8], too_long[sizeof long_list + 16];
    size_t used = 0;
    for (unsigned i = 1; i <= STORE_AUDIT_MAX_ACKED_SEQS; i++)
        used += (size_t)snprintf(long_list + used, sizeof long_list - used, "%s%u",
                                 i > 1 ? "," : "", 1000 + i);
    snprintf(too_long, sizeof too_long, "7,%s", long_list); /* one seq too many */
    enum {
        CANONICAL,
        LONGEST,
        TOO_MANY,
        NOT_A_LIST,
        DESCENDING,
        OTHER_EVENT,
        WITH_SEQ,
        ACKED_BEFORE,
        ACKED_INSIDE,
        ACKED_ACROSS_THE_END,
        ACKED_ACROSS_THE_START
    };
    static const struct {
        int kind;
        int ok;
        const char *problem;
    } rows[] = {
        {CANONICAL, 1, NULL},
        {LONGEST, 1, NULL},
        {TOO_MANY, 0, "not a list"},
        {NOT_A_LIST, 0, "not a list"},
        {DESCENDING, 0, "not a list"},
        {OTHER_EVENT, 0, "only a delivery.acked entry"},
        {WITH_SEQ, 0, "not both"},
        /* 12 is in CANONICAL's list, 1001 to 2024 in LONGEST's (one row) */
        {ACKED_BEFORE, 0,
         "the audit_ack_ranges index already names delivery 12 (run schakelctl audit"},
        {ACKED_INSIDE, 0, "the audit_ack_ranges index already names delivery 1500 (run"},
        {ACKED_ACROSS_THE_END, 0, "the audit_ack_ranges index already names delivery 2023 (run"},
        {ACKED_ACROSS_THE_START, 0, "the audit_ack_ranges index already names delivery 1001 (run"},
    };
    uint64_t written = 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        store_audit_entry_t e;
        audit_entry_init(&e, "delivery.acked");
        audit_set_text(&e, STORE_AUDIT_RECIPIENT, "om/parket");
        audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, "7,9,12");
        switch (rows[i].kind) {
        case CANONICAL:
            break;
        case LONGEST:
            audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, long_list);
            break;
        case TOO_MANY:
            audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, too_long);
            break;
        case NOT_A_LIST:
            audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, "7, 9");
            break;
        case DESCENDING:
            audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, "20,15");
            break;
        case OTHER_EVENT:
            audit_set_text(&e, STORE_AUDIT_EVENT, "delivery.expired");
            audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, "30");
            break;
        case WITH_SEQ:
            audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, "31");
            audit_set_int(&e, STORE_AUDIT_DELIVERY_SEQ, 31);
            break;
        case ACKED_BEFORE:
            audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, "11,12,13");
            break;
        case ACKED_INSIDE:
            audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, "20,1500");
            break;
        case ACKED_ACROSS_THE_END:
            audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, "2023,2024,2025");
            break;
        case ACKED_ACROSS_THE_START:
            audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, "999,1000,1001");
            break;
        }
        int rc = audit_append(f->store, broker_key, BASE_TIME, &e);
        if ((rc == 0) != rows[i].ok ||
            (!rows[i].ok && strstr(store_errmsg(f->store), rows[i].problem) == NULL))
            fail_msg("row %zu: append returned %d (%s)", i, rc, store_errmsg(f->store));
        written += rows[i].ok;
        /* A refused entry leaves no trace, neither row nor index rows, and
         * the transaction goes on. */
        store_audit_tail_t tail;
        assert_int_equal(store_audit_tail(f->store, &tail), 0);
        assert_int_equal(tail.seq, written);
        assert_int_equal(store_in_transaction(f->store), 1);
    }
    assert_int_equal(acked_entry_of(f->store, 11), 0); /* ACKED_BEFORE's other seqs: gone */
    assert_int_equal(acked_entry_of(f->store, 13), 0);
    assert_int_equal(acked_entry_of(f->store, 20), 0);
    assert_int_equal(acked_entry_of(f->store, 2025), 0);
    assert_int_equal(acked_entry_of(f->store, 999), 0);
    append_acked_list(f->store, "riec/analyse", "11,13");
    assert_int_equal(store_commit(f->store), 0);

    /* Every listed seq names its entry; nothing else is indexed. */
    static const struct {
        uint64_t delivery, entry;
    } index[] = {
        {7, 1},    {9, 1},  {12, 1}, {1001, 2}, {1500, 2}, {1000 + STORE_AUDIT_MAX_ACKED_SEQS, 2},
        {11, 3},   {13, 3}, {8, 0},  {30, 0},   {31, 0},   {1000, 0},
        {2025, 0}, {6, 0},  {10, 0}, {14, 0}};
    for (size_t i = 0; i < sizeof index / sizeof index[0]; i++)
        if (acked_entry_of(f->store, index[i].delivery) != index[i].entry)
            fail_msg("delivery %llu: indexed to entry %llu, expected %llu",
                     (unsigned long long)index[i].delivery,
                     (unsigned long long)acked_entry_of(f->store, index[i].delivery),
                     (unsigned long long)index[i].entry);
    /* A row per run: 7, 9, 12; 1001 to 2024; 11, 13. */
    uint64_t rows_indexed = 0, first = 0, last = 0, entry = 0;
    assert_int_equal(store_audit_acked_count(f->store, INT64_MAX, &rows_indexed), 1);
    assert_int_equal(rows_indexed, 3 + 1 + 2);
    assert_int_equal(store_audit_acked_count(f->store, 1, &rows_indexed), 1);
    assert_int_equal(rows_indexed, 3);
    assert_int_equal(store_audit_acked_row(f->store, 1777, &first, &last, &entry), 1);
    assert_int_equal(first, 1001);
    assert_int_equal(last, 1000 + STORE_AUDIT_MAX_ACKED_SEQS);
    assert_int_equal(entry, 2);

    /* The index is append-only, and its look-ups are key look-ups. */
    store_close(&f->store);
    sqlite3 *db = store_fixture_raw_open_or_create(f->path);
    assert_true(raw_exec_fails(db, "UPDATE audit_ack_ranges SET audit_seq = 2 WHERE first_seq = 7",
                               "append-only"));
    assert_true(
        raw_exec_fails(db, "DELETE FROM audit_ack_ranges WHERE first_seq = 7", "append-only"));
    assert_true(raw_exec_fails(db, "INSERT INTO audit_ack_ranges VALUES (40, 39, 1)", "CHECK"));
    sqlite3_stmt *stmt = NULL;
    int by_key = 0;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "EXPLAIN QUERY PLAN SELECT seq FROM audit WHERE seq ="
                                        " (SELECT audit_seq FROM (SELECT audit_seq, last_seq"
                                        " FROM audit_ack_ranges WHERE first_seq <= 1500"
                                        " ORDER BY first_seq DESC LIMIT 1)"
                                        " WHERE last_seq >= 1500)",
                                        -1, &stmt, NULL),
                     SQLITE_OK);
    while (sqlite3_step(stmt) == SQLITE_ROW)
        by_key += strstr((const char *)sqlite3_column_text(stmt, 3), "INTEGER PRIMARY KEY") != NULL;
    sqlite3_finalize(stmt);
    assert_int_equal(by_key, 2);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* A trail that mixes both shapes of acked entries: the 40-entry trail of
 * trail_entry (one ack per entry, as before schema 6), then entries of
 * the new shape. */
static void mixed_trail(store_t *store)
{
    trail_append(store, broker_key, 1, 40);
    append_queued(store, 101, tag_a);
    append_queued(store, 102, tag_b);
    append_queued(store, 103, tag_a);
    append_queued(store, 104, tag_b);
    append_queued(store, 105, NULL);
    append_acked_list(store, "om/parket", "101,102,103,105"); /* seq 46 */
    append_acked_one(store, "om/parket", 104);                /* the old shape still verifies */
    append_acked_list(store, "riec/analyse", "2000");         /* seq 48 */
    assert_int_equal(store_commit(store), 0);
}

static void test_verify_checks_mixed_trails_and_the_index(void **state)
{
    fixture_t *f = *state;
    const keypair_t *keys[] = {broker_key};
    audit_verify_report_t r;
    mixed_trail(f->store);
    store_close(&f->store);
    verify_path(f->path, keys, 1, NULL, &r);
    if (!r.intact || !r.index_checked || !r.index_intact)
        fail_msg("intact=%d index %d/%d: %s %s", r.intact, r.index_checked, r.index_intact,
                 r.problem, r.index_problem);
    assert_int_equal(r.entries, 48);
    assert_int_equal(r.acked_seqs, 5);

    assert_int_equal(r.acked_runs, 3); /* 101 to 103, 105; 2000 */

    enum {
        SEQS_ALTERED,
        SEQS_REMOVED,
        SEQS_WIDENED,
        INDEX_ROW_GONE,
        INDEX_ROW_MOVED,
        INDEX_ROW_EXTRA,
        INDEX_ROW_SWAPPED,
        INDEX_ROW_SHORTENED,
        INDEX_ROW_LENGTHENED,
        INDEX_ROW_SPLIT,
        INDEX_ROWS_OVERLAP,
        INDEX_ROW_STRAY
    };
    static const struct {
        int attack;
        const char *sql;
        uint64_t broken_seq; /* 0: the chain holds */
        const char *problem; /* in problem, or else in index_problem */
    } rows[] = {
        {SEQS_ALTERED, "UPDATE audit SET delivery_seqs = '101,103,105' WHERE seq = 46", 46,
         "does not match its hash"},
        {SEQS_REMOVED, "UPDATE audit SET delivery_seqs = NULL WHERE seq = 46", 46,
         "does not match its hash"},
        {SEQS_WIDENED, "UPDATE audit SET delivery_seqs = '2000,2001' WHERE seq = 48", 48,
         "does not match its hash"},
        {INDEX_ROW_GONE, "DELETE FROM audit_ack_ranges WHERE first_seq = 105", 0,
         "entry 46 lists delivery 105 as acked, but the index does not name it"},
        {INDEX_ROW_MOVED, "UPDATE audit_ack_ranges SET audit_seq = 48 WHERE first_seq = 101", 0,
         "entry 46 lists delivery 101 as acked, but the index names entry 48 for it"},
        {INDEX_ROW_EXTRA, "INSERT INTO audit_ack_ranges VALUES (104, 104, 46)", 0,
         "the index holds 4 rows for entries up to 48, but those entries list 5 acked deliveries "
         "in 3 runs"},
        {INDEX_ROW_SWAPPED,
         "UPDATE audit_ack_ranges SET first_seq = 9999, last_seq = 9999 WHERE first_seq = 2000;"
         "UPDATE audit_ack_ranges SET first_seq = 2000, last_seq = 2000 WHERE first_seq = 105;"
         "UPDATE audit_ack_ranges SET first_seq = 105, last_seq = 105 WHERE first_seq = 9999",
         0, "entry 46 lists delivery 105 as acked, but the index names entry 48"},
        {INDEX_ROW_SHORTENED, "UPDATE audit_ack_ranges SET last_seq = 102 WHERE first_seq = 101", 0,
         "entry 46 lists deliveries 101 to 103 as acked (a run), but the index's row for delivery "
         "101 holds 101 to 102"},
        {INDEX_ROW_LENGTHENED, "UPDATE audit_ack_ranges SET last_seq = 104 WHERE first_seq = 101",
         0, "the index's row for delivery 101 holds 101 to 104"},
        {INDEX_ROW_SPLIT,
         "UPDATE audit_ack_ranges SET last_seq = 101 WHERE first_seq = 101;"
         "INSERT INTO audit_ack_ranges VALUES (102, 103, 46)",
         0, "the index's row for delivery 101 holds 101 to 101"},
        /* past the last entry, where the count does not look */
        {INDEX_ROWS_OVERLAP, "INSERT INTO audit_ack_ranges VALUES (102, 102, 999999)", 0,
         "the index's rows for deliveries 101 to 103 and 102 to 102 overlap (a look-up of "
         "delivery 102 finds only the second)"},
        {INDEX_ROW_STRAY, "INSERT INTO audit_ack_ranges VALUES (21, 21, 999999)", 0,
         "the index names entry 999999 for delivery 21, but the trail has no such entry"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char path[160];
        snprintf(path, sizeof path, "%s/attacked-%zu.db", f->dir, i);
        copy_file(f->path, path);
        sqlite3 *db = attacker_open(path);
        store_fixture_db_exec(db, "DROP TRIGGER audit_ack_ranges_append_only_update;"
                                  "DROP TRIGGER audit_ack_ranges_append_only_delete;");
        store_fixture_db_exec(db, rows[i].sql);
        assert_int_equal(sqlite3_close(db), SQLITE_OK);
        verify_path(path, keys, 1, NULL, &r);
        if (rows[i].broken_seq != 0) {
            if (r.intact || r.broken_seq != rows[i].broken_seq ||
                strstr(r.problem, rows[i].problem) == NULL)
                fail_msg("row %zu: intact=%d at %llu: %s", i, r.intact,
                         (unsigned long long)r.broken_seq, r.problem);
        } else if (!r.intact || !r.index_checked || r.index_intact ||
                   strstr(r.index_problem, rows[i].problem) == NULL) {
            fail_msg("row %zu: intact=%d index %d/%d: \"%s\"", i, r.intact, r.index_checked,
                     r.index_intact, r.index_problem);
        }
        unlink(path);
    }
}

/* A verification that pauses for index look-ups (more listed acks than
 * one round holds) reads on where it stopped. */
static void test_verify_of_many_acked_entries(void **state)
{
    fixture_t *f = *state;
    static char list[STORE_AUDIT_MAX_ACKED_SEQS * 8];
    const unsigned entries = 80; /* 80 x 1024 listed acks: two look-up rounds and more */
    for (unsigned k = 0; k < entries; k++) {
        size_t used = 0;
        for (unsigned i = 0; i < STORE_AUDIT_MAX_ACKED_SEQS; i++)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%u", i > 0 ? "," : "",
                                     1 + k * STORE_AUDIT_MAX_ACKED_SEQS + i);
        append_acked_list(f->store, "om/parket", list);
        append_acked_one(f->store, "riec/analyse", 1000000 + k);
    }
    assert_int_equal(store_commit(f->store), 0);
    store_close(&f->store);
    const keypair_t *keys[] = {broker_key};
    audit_verify_report_t r;
    verify_path(f->path, keys, 1, NULL, &r);
    if (!r.intact || !r.index_checked || !r.index_intact)
        fail_msg("intact=%d index %d/%d: %s %s", r.intact, r.index_checked, r.index_intact,
                 r.problem, r.index_problem);
    assert_int_equal(r.entries, 2 * entries);
    assert_int_equal(r.acked_seqs, (uint64_t)entries * STORE_AUDIT_MAX_ACKED_SEQS);
}

/* Whether the export holds text, and how often. */
static size_t occurrences(const char *json, const char *text)
{
    size_t n = 0;
    for (const char *p = json; (p = strstr(p, text)) != NULL; p += strlen(text))
        n++;
    return n;
}

static void test_export_shows_a_shared_acked_entry_once(void **state)
{
    fixture_t *f = *state;
    char err[256], *json = NULL;
    mixed_trail(f->store);
    store_close(&f->store);
    store_t *reader = store_open_reader(f->path, store_key, err, sizeof err);
    assert_non_null(reader);
    /* A: its trail_entry deliveries (10, 20, 30, 40, acked at 11, 21, 31),
     * 101 and 103 (queued at 41, 43), acked together with B's 102 and an
     * unrelated 105 in entry 46. */
    export_of(reader, SUBJECT_A, &json);
    uint64_t seqs[16];
    static const uint64_t a_seqs[] = {10, 11, 20, 21, 30, 31, 40, 41, 43, 46};
    size_t n = export_seqs(json, seqs, 16);
    assert_int_equal(n, sizeof a_seqs / sizeof a_seqs[0]);
    for (size_t i = 0; i < n; i++)
        if (seqs[i] != a_seqs[i])
            fail_msg("entry %zu is seq %llu, expected %llu:\n%s", i, (unsigned long long)seqs[i],
                     (unsigned long long)a_seqs[i], json);
    assert_int_equal(
        occurrences(json, "\"delivery_seqs\":\"101,103\",\"delivery_seqs_withheld\":2,"), 1);
    assert_null(strstr(json, "\"delivery_seq\":102,")); /* B's */
    assert_null(strstr(json, "\"delivery_seq\":105,")); /* nobody's */
    assert_int_equal(occurrences(json, "\"delivery_seqs\":"), 1);
    free(json);
    /* B: 5, 15, 25, 35 (acked at 6, 16, 26, 36), 102 and 104 (queued at
     * 42, 44), 102 acked in entry 46, 104 in entry 47 (the old shape). */
    export_of(reader, SUBJECT_B, &json);
    static const uint64_t b_seqs[] = {5, 6, 15, 16, 25, 26, 35, 36, 42, 44, 46, 47};
    n = export_seqs(json, seqs, 16);
    assert_int_equal(n, sizeof b_seqs / sizeof b_seqs[0]);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(seqs[i], b_seqs[i]);
    assert_int_equal(occurrences(json, "\"delivery_seqs\":\"102\",\"delivery_seqs_withheld\":3,"),
                     1);
    assert_int_equal(occurrences(json, "\"delivery_seq\":104,"), 2); /* queued, acked */
    free(json);
    store_close(&reader);
}

/* A row of the acked-delivery index for an entry that does not exist (yet): verify names
 * it, and the ack it blocks fails with a message that says why, leaving
 * the rest of the transaction as it was. */
static void test_stray_index_row_is_named_and_explained(void **state)
{
    fixture_t *f = *state;
    const keypair_t *keys[] = {broker_key};
    audit_verify_report_t r;
    mixed_trail(f->store);
    store_close(&f->store);
    /* an insert: no trigger stands in the way */
    sqlite3 *db = store_fixture_raw_open_or_create(f->path);
    store_fixture_db_exec(db, "INSERT INTO audit_ack_ranges VALUES (21, 21, 999999)");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    verify_path(f->path, keys, 1, NULL, &r);
    if (!r.intact || !r.index_checked || r.index_intact ||
        strstr(r.index_problem, "no such entry (an ack of delivery 21 would fail)") == NULL)
        fail_msg("intact=%d index %d/%d: %s", r.intact, r.index_checked, r.index_intact,
                 r.index_problem);

    f->store = store_fixture_open(f->path, store_key);
    store_audit_entry_t e;
    audit_entry_init(&e, "delivery.acked");
    audit_set_text(&e, STORE_AUDIT_RECIPIENT, "om/parket");
    audit_set_text(&e, STORE_AUDIT_DELIVERY_SEQS, "20,21");
    assert_int_equal(audit_append(f->store, broker_key, BASE_TIME, &e), -1);
    if (strstr(store_errmsg(f->store), "the audit_ack_ranges index already names delivery 21 (run "
                                       "schakelctl audit verify)") == NULL)
        fail_msg("append said: %s", store_errmsg(f->store));
    assert_int_equal(store_last_error_is_unavailable(f->store), 0);
    store_audit_tail_t tail;
    assert_int_equal(store_audit_tail(f->store, &tail), 0);
    assert_int_equal(tail.seq, 48);
    assert_int_equal(acked_entry_of(f->store, 20), 0); /* its other row went with it */
    append_acked_list(f->store, "om/parket", "20");
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(acked_entry_of(f->store, 20), 49);
}

/* What the index leads the export to is shown only when it is an acked
 * entry listing the subject's deliveries: another entry is never shown,
 * an unreadable one is marked, not shown. */
static void test_export_shows_only_acked_entries_through_the_index(void **state)
{
    fixture_t *f = *state;
    char err[256], *json = NULL;
    mixed_trail(f->store);
    store_close(&f->store);
    sqlite3 *db = attacker_open(f->path);
    store_fixture_db_exec(db, "DROP TRIGGER audit_ack_ranges_append_only_update;");
    /* A's delivery 101 led to B's queued entry 42; A's 103 to an entry
     * whose list cannot be read. */
    store_fixture_db_exec(db, "UPDATE audit_ack_ranges SET last_seq = 101, audit_seq = 42"
                              " WHERE first_seq = 101;"
                              "INSERT INTO audit_ack_ranges VALUES (102, 103, 46);"
                              "UPDATE audit SET delivery_seqs = '103,101' WHERE seq = 46;");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    store_t *reader = store_open_reader(f->path, store_key, err, sizeof err);
    assert_non_null(reader);
    export_of(reader, SUBJECT_A, &json);
    assert_null(strstr(json, "\"seq\":42,"));
    assert_null(strstr(json, tag_b));
    assert_int_equal(occurrences(json, "{\"seq\":46,\"unreadable\":"), 1);
    assert_int_equal(occurrences(json, "\"seq\":46,"), 1);
    assert_null(strstr(json, "103,101"));
    assert_null(strstr(json, "riec/analyse"));
    free(json);
    store_close(&reader);
}

/* The row of the acked-delivery index that holds delivery, as
 * "first-last:entry", or "none". */
static void acked_row_of(store_t *store, uint64_t delivery, char *out, size_t len)
{
    uint64_t first = 0, last = 0, entry = 0;
    int rc = store_audit_acked_row(store, delivery, &first, &last, &entry);
    assert_true(rc >= 0);
    if (rc == 0)
        snprintf(out, len, "none");
    else
        snprintf(out, len, "%llu-%llu:%llu", (unsigned long long)first, (unsigned long long)last,
                 (unsigned long long)entry);
}

static void expect_acked_row(store_t *store, uint64_t delivery, const char *want)
{
    char row[64];
    acked_row_of(store, delivery, row, sizeof row);
    if (strcmp(row, want) != 0)
        fail_msg("delivery %llu: row %s, want %s", (unsigned long long)delivery, row, want);
}

/* A store of schema 11, whose index holds a row per acked seq: an offline
 * reader verifies it and looks acks up as it is; the broker's opening
 * turns it into a row per run of each entry's seqs (a seq of another
 * entry between two of one entry's ends its run), and a reader left open
 * across the upgrade reads the new rows; both verify alike. */
static void test_schema_11_acked_index_migrates(void **state)
{
    fixture_t *f = *state;
    char err[256];
    const keypair_t *keys[] = {broker_key};
    audit_verify_report_t r;
    append_acked_list(f->store, "om/parket", "7,8,9,12"); /* entry 1 */
    append_acked_list(f->store, "riec/analyse", "10,11"); /* entry 2 */
    append_acked_list(f->store, "om/parket", "13,14,20"); /* entry 3 */
    assert_int_equal(store_commit(f->store), 0);
    store_close(&f->store);
    store_fixture_raw_exec(f->path, STORE_FIXTURE_ACKS_BEFORE_12 STORE_FIXTURE_MAILBOX_BEFORE_13
                           "PRAGMA user_version = 11;");

    verify_path(f->path, keys, 1, NULL, &r);
    if (!r.intact || !r.index_checked || !r.index_intact || r.acked_seqs != 9 || r.acked_runs != 9)
        fail_msg("before: intact=%d index %d/%d %llu/%llu: %s", r.intact, r.index_checked,
                 r.index_intact, (unsigned long long)r.acked_seqs, (unsigned long long)r.acked_runs,
                 r.index_problem);
    store_t *reader = store_open_reader(f->path, store_key, err, sizeof err);
    assert_non_null(reader);
    assert_int_equal(store_audit_acked_index(reader), STORE_AUDIT_ACKED_PER_SEQ);
    expect_acked_row(reader, 8, "8-8:1");
    expect_acked_row(reader, 15, "none");
    size_t found = 0;
    assert_int_equal(store_audit_scan_acked(reader, 11, UINT64_MAX, count_entry, &found), 1);

    f->store = store_fixture_open(f->path, store_key);
    assert_int_equal(store_migrated_from(f->store, NULL), 11);
    sqlite3 *db = store_fixture_raw_open_or_create(f->path);
    assert_int_equal(store_fixture_db_int(db, "SELECT count(*) FROM audit_ack_ranges"), 5);
    assert_int_equal(store_fixture_db_int(db, "SELECT count(*) FROM sqlite_master"
                                              " WHERE name LIKE 'audit_acks%'"),
                     0);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    static const struct {
        uint64_t delivery;
        const char *row;
    } rows[] = {{6, "none"},     {7, "7-9:1"},    {9, "7-9:1"},    {10, "10-11:2"},
                {11, "10-11:2"}, {12, "12-12:1"}, {13, "13-14:3"}, {14, "13-14:3"},
                {15, "none"},    {19, "none"},    {20, "20-20:3"}, {21, "none"}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        expect_acked_row(f->store, rows[i].delivery, rows[i].row);
        expect_acked_row(reader, rows[i].delivery, rows[i].row); /* opened before */
    }
    assert_int_equal(store_audit_acked_index(reader), STORE_AUDIT_ACKED_RANGES);
    found = 0;
    assert_int_equal(store_audit_scan_acked(reader, 11, UINT64_MAX, count_entry, &found), 1);
    store_close(&reader);
    append_acked_list(f->store, "om/parket", "15,16"); /* entry 4: one row */
    assert_int_equal(store_commit(f->store), 0);
    expect_acked_row(f->store, 16, "15-16:4");
    store_close(&f->store);
    verify_path(f->path, keys, 1, NULL, &r);
    if (!r.intact || !r.index_checked || !r.index_intact || r.acked_seqs != 11 || r.acked_runs != 6)
        fail_msg("after: intact=%d index %d/%d %llu/%llu: %s", r.intact, r.index_checked,
                 r.index_intact, (unsigned long long)r.acked_seqs, (unsigned long long)r.acked_runs,
                 r.index_problem);
    f->store = store_fixture_open(f->path, store_key);
}

/* The migration to schema 12 walks audit_acks once and tells the
 * progress hook as it goes (every 10,000 rows, and once before); the
 * runs it writes cover every row, one per run of an entry. */
static unsigned ranges_progress_calls;
static uint64_t ranges_progress_done;

static void count_ranges_progress(const char *step, uint64_t done)
{
    if (strstr(step, "acked deliveries by runs") == NULL)
        return;
    ranges_progress_calls++;
    ranges_progress_done = done;
}

static void test_acked_index_migration_reports_progress(void **state)
{
    fixture_t *f = *state;
    store_close(&f->store);
    /* 25,000 acked seqs, entry 1 + seq / 7: runs of 7 but the first (6)
     * and the last (4) */
    store_fixture_raw_exec(f->path, STORE_FIXTURE_ACKS_BEFORE_12 STORE_FIXTURE_MAILBOX_BEFORE_13
                           "INSERT INTO audit_acks (delivery_seq, audit_seq)"
                           " WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
                           " WHERE i < 25000) SELECT i, 1 + i / 7 FROM n;"
                           "PRAGMA user_version = 11;");
    ranges_progress_calls = 0;
    ranges_progress_done = 0;
    store_set_progress(count_ranges_progress);
    f->store = store_fixture_open(f->path, store_key);
    store_set_progress(NULL);
    assert_int_equal(ranges_progress_calls, 3); /* before, at 10,000 and 20,000 */
    assert_int_equal(ranges_progress_done, 20000);
    sqlite3 *db = store_fixture_raw_open_or_create(f->path);
    assert_int_equal(store_fixture_db_int(db, "SELECT count(*) FROM audit_ack_ranges"), 3572);
    assert_int_equal(
        store_fixture_db_int(db, "SELECT sum(last_seq - first_seq + 1) FROM audit_ack_ranges"),
        25000);
    assert_int_equal(store_fixture_db_int(db, "SELECT count(*) FROM audit_ack_ranges"
                                              " WHERE last_seq - first_seq = 6"
                                              " AND audit_seq = 1 + first_seq / 7"),
                     3570);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    expect_acked_row(f->store, 24999, "24997-25000:3572");
    expect_acked_row(f->store, 1, "1-6:1");
}

/* A store written before schema 6 (its tables as step 5 left them): read
 * as it is by an offline reader, then migrated by the broker's opening,
 * after which both shapes verify and export together. */
static void test_store_from_before_acked_lists_migrates(void **state)
{
    fixture_t *f = *state;
    char err[256], *json = NULL;
    const keypair_t *keys[] = {broker_key};
    audit_verify_report_t r;
    trail_append(f->store, broker_key, 1, 30);
    store_close(&f->store);
    sqlite3 *db = store_fixture_raw_open_or_create(f->path);
    store_fixture_db_exec(
        db, STORE_FIXTURE_ACKS_BEFORE_12 STORE_FIXTURE_MAILBOX_BEFORE_13
        "DROP TABLE deliveries_set_aside;" /* schema 10's */
        "DROP TRIGGER audit_acks_append_only_update;"
        "DROP TRIGGER audit_acks_append_only_delete;"
        "DROP TABLE audit_acks;"
        "ALTER TABLE audit DROP COLUMN delivery_seqs;"
        "ALTER TABLE audit DROP COLUMN deliveries;" STORE_FIXTURE_PUBLISHES_BEFORE_8
        "PRAGMA user_version = 5;");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);

    /* Offline readers take it as version 5. */
    verify_path(f->path, keys, 1, NULL, &r);
    assert_true(r.intact);
    assert_int_equal(r.entries, 30);
    assert_false(r.index_checked);
    store_t *reader = store_open_reader(f->path, store_key, err, sizeof err);
    assert_non_null(reader);
    export_of(reader, SUBJECT_A, &json);
    assert_int_equal(occurrences(json, "\"event\":\"delivery.acked\""), 2); /* 11, 21 */
    free(json);
    size_t found = 0;
    assert_int_equal(store_audit_scan_acked(reader, 10, UINT64_MAX, count_entry, &found), 0);
    assert_int_equal(found, 0);
    uint64_t indexed = 0, entry = 0;
    assert_int_equal(store_audit_acked_count(reader, INT64_MAX, &indexed), 0); /* no index */
    assert_int_equal(store_audit_acked_lookup(reader, 10, &entry), 0);
    store_close(&reader);

    /* A reader that stays open (a tail) across the upgrade. */
    store_t *early = store_fixture_open_reader(f->path, NULL);
    size_t scanned = 0;
    assert_int_equal(store_audit_scan(early, 0, 100, count_entry, &scanned), 30);

    /* The broker's opening migrates it; the old acks stay where they were. */
    f->store = store_fixture_open(f->path, store_key);
    db = store_fixture_raw_open_or_create(f->path);
    assert_int_equal(store_fixture_db_int(db, "PRAGMA user_version"), store_schema_version());
    assert_int_equal(store_fixture_db_int(db, "SELECT count(*) FROM audit_ack_ranges"), 0);
    assert_int_equal(
        store_fixture_db_int(db, "SELECT count(*) FROM audit WHERE delivery_seqs IS NOT NULL"), 0);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_int_equal(store_subject_tag(f->store, SUBJECT_A, tag_a), 0);
    append_queued(f->store, 500, tag_a);
    append_acked_list(f->store, "om/parket", "30,500"); /* 30: A's, queued before */
    assert_int_equal(store_commit(f->store), 0);
    store_close(&f->store);
    verify_path(f->path, keys, 1, NULL, &r);
    assert_true(r.intact);
    assert_true(r.index_checked);
    assert_true(r.index_intact);
    assert_int_equal(r.entries, 32);
    assert_int_equal(r.acked_seqs, 2);
    /* The reader opened before the upgrade reads the new column too. */
    uint8_t pk[1][32];
    memcpy(pk[0], broker_key->sign_pk, 32);
    assert_int_equal(audit_verify(early, (const uint8_t(*)[32])pk, 1, NULL, &r), 0);
    if (!r.intact || !r.index_checked || r.acked_seqs != 2)
        fail_msg("the early reader: intact=%d index=%d acked=%llu: %s", r.intact, r.index_checked,
                 (unsigned long long)r.acked_seqs, r.problem);
    store_close(&early);
    reader = store_open_reader(f->path, store_key, err, sizeof err);
    assert_non_null(reader);
    export_of(reader, SUBJECT_A, &json);
    uint64_t seqs[16];
    static const uint64_t a_seqs[] = {10, 11, 20, 21, 30, 31, 32};
    size_t n = export_seqs(json, seqs, 16);
    assert_int_equal(n, sizeof a_seqs / sizeof a_seqs[0]);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(seqs[i], a_seqs[i]);
    assert_int_equal(occurrences(json, "\"delivery_seqs\":\"30,500\""), 1);
    free(json);
    store_close(&reader);
}

/* ------------------------------------------------------------------ renderings */

/* An export read in steps is cut where the trail's committed entries
 * ended when it began (the guarded handle's, whatever its open
 * transaction holds): entries about the subject appended meanwhile, its
 * own or an ack of one of its deliveries, are the next export's. */
static void test_export_in_steps_is_cut_where_it_began(void **state)
{
    fixture_t *f = *state;
    char err[256];
    trail_append(f->store, broker_key, 1, 30);
    char *before = NULL;
    export_of(f->store, SUBJECT_A, &before);
    assert_int_equal(store_audit_tail_guard(f->store), 0);
    append_queued(f->store, 40, tag_a); /* seq 31, not committed yet */
    static const audit_export_bounds_t one = {1, 1, 1};
    audit_export_t *ex = audit_export_begin(f->store, SUBJECT_A, EXPORT_AT, 0, err, sizeof err);
    assert_non_null(ex);
    assert_int_equal(audit_export_cut(ex), 30);
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(audit_export_step(ex, f->store, &one, err, sizeof err), 0);
    append_queued(f->store, 41, tag_a);             /* seq 32 */
    append_acked_list(f->store, "om/parket", "30"); /* seq 33: A's delivery at 30 acked */
    assert_int_equal(store_commit(f->store), 0);
    int rc;
    while ((rc = audit_export_step(ex, f->store, &one, err, sizeof err)) == 0)
        ;
    assert_int_equal(rc, 1);
    size_t count = 0;
    char *during = audit_export_document(ex, &count);
    audit_export_destroy(&ex);
    assert_non_null(during);
    assert_string_equal(during, before);
    assert_int_equal(count, 5); /* 10, 11, 20, 21, 30 */
    char *after = NULL;
    uint64_t seqs[16];
    export_of(f->store, SUBJECT_A, &after);
    assert_int_equal(export_seqs(after, seqs, 16), 8); /* and 31, 32, 33 */
    assert_int_equal(seqs[7], 33);
    free(before);
    free(during);
    free(after);
}

/* An export whose renderings would pass max_bytes ends there, and says so:
 * the broker's answer could not carry it. */
static void test_export_in_steps_is_bounded_in_bytes(void **state)
{
    fixture_t *f = *state;
    char err[256] = "";
    trail_append(f->store, broker_key, 1, 30);
    static const struct {
        size_t max_bytes;
        int too_large;
    } rows[] = {{200, 1}, {1024 * 1024, 0}, {0, 0}};
    static const audit_export_bounds_t two = {2, 2, 2};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        audit_export_t *ex =
            audit_export_begin(f->store, SUBJECT_A, EXPORT_AT, rows[i].max_bytes, err, sizeof err);
        assert_non_null(ex);
        int rc;
        while ((rc = audit_export_step(ex, f->store, &two, err, sizeof err)) == 0)
            ;
        assert_int_equal(rc, rows[i].too_large ? -1 : 1);
        assert_int_equal(audit_export_too_large(ex), rows[i].too_large);
        if (rows[i].too_large)
            assert_non_null(strstr(err, "larger than 200 bytes"));
        audit_export_destroy(&ex);
    }
    /* not a pseudonym: no export begins */
    assert_null(audit_export_begin(f->store, "123456789", EXPORT_AT, 0, err, sizeof err));
    assert_non_null(strstr(err, "not a pseudonym"));
}

/* A queued entry of a case event names the subject and its delivery, and
 * both indexes find it (the trail's queued entries at 10, 20, 30 have
 * that shape): the byte bound counts it once, as the document shows it
 * once. The bound the document's entries take to the byte is enough, one
 * byte less is not, and the document is the unbounded one. */
static void test_export_counts_an_entry_both_indexes_find_once(void **state)
{
    fixture_t *f = *state;
    char err[256] = "";
    trail_append(f->store, broker_key, 1, 30);
    char *whole = NULL;
    export_of(f->store, SUBJECT_A, &whole);
    /* each entry counts its rendering and the ",\n" before it: the text
     * from the "[" to the "\n]}" and one byte */
    const char *open = strstr(whole, "\"entries\":[");
    const char *close = strstr(whole, "\n]}\n");
    assert_non_null(open);
    assert_non_null(close);
    size_t needed = (size_t)(close - (open + strlen("\"entries\":["))) + 1;
    static const audit_export_bounds_t two = {2, 2, 2};
    for (size_t less = 0; less <= 1; less++) {
        audit_export_t *ex =
            audit_export_begin(f->store, SUBJECT_A, EXPORT_AT, needed - less, err, sizeof err);
        assert_non_null(ex);
        int rc;
        while ((rc = audit_export_step(ex, f->store, &two, err, sizeof err)) == 0)
            ;
        if (rc != (less ? -1 : 1))
            fail_msg("a bound of %zu bytes for %zu: %s", needed - less, needed,
                     rc < 0 ? err : "enough");
        if (!less) {
            size_t count = 0;
            char *json = audit_export_document(ex, &count);
            assert_non_null(json);
            assert_string_equal(json, whole);
            assert_int_equal(count, 5); /* 10, 11, 20, 21, 30 */
            free(json);
        }
        audit_export_destroy(&ex);
    }
    free(whole);
}

static void test_renderings_escape_and_withhold(void **state)
{
    (void)state;
    store_audit_entry_t e;
    audit_entry_init(&e, "request.refused");
    e.seq = 12;
    e.at = 0;
    audit_set_text(&e, STORE_AUDIT_DETAIL, "q\" b\\ nl\n tab\t esc\x1b c1\xc2\x85 caf\xc3\xa9");
    audit_set_text(&e, STORE_AUDIT_SUBJECT_TAG, SUBJECT_A);
    audit_set_int(&e, STORE_AUDIT_ITEM_INDEX, -1);
    static const struct {
        int json, withhold;
        const char *expected;
    } rows[] = {
        {1, 0, "\"detail\":\"q\\\" b\\\\ nl\\u000a tab\\u0009 esc\\u001b c1\\u0085 caf\xc3\xa9\""},
        {1, 0, "\"time\":\"1970-01-01T00:00:00Z\""},
        {1, 0, "\"subject_tag\":\"" SUBJECT_A "\""},
        {1, 1, "\"subject_tag\":\"withheld\""},
        {1, 0, "\"item_index\":-1"},
        {0, 0, "detail=\"q\\\" b\\\\ nl\\x0a tab\\x09 esc\\x1b c1\\xc2\\x85 caf\xc3\xa9\""},
        {0, 1, "subject_tag=withheld"},
        {0, 0, "seq=12 time=1970-01-01T00:00:00Z event=request.refused"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char *text = rows[i].json ? audit_entry_json(&e, rows[i].withhold)
                                  : audit_entry_line(&e, rows[i].withhold);
        assert_non_null(text);
        if (strstr(text, rows[i].expected) == NULL)
            fail_msg("row %zu: %s lacks %s", i, text, rows[i].expected);
        if (rows[i].withhold && strstr(text, SUBJECT_A) != NULL)
            fail_msg("row %zu: the subject was not withheld: %s", i, text);
        assert_null(strchr(text, '\n'));
        free(text);
    }
    /* A tampered row may hold bytes that are not UTF-8. */
    audit_set_text(&e, STORE_AUDIT_DETAIL, "bad \xff byte");
    char *json = audit_entry_json(&e, 0), *line = audit_entry_line(&e, 0);
    assert_non_null(strstr(json, "bad \\ufffd byte"));
    assert_non_null(strstr(line, "bad \\xff byte"));
    free(json);
    free(line);
}

/* ------------------------------------------------------------------ the tables' own indexes */

/* An index of the audit table rebuilt by someone who holds the file
 * (definition: what follows "ON audit "), its honest definition then put
 * back into sqlite_schema: no hash changes, the query planner trusts it. */
static void index_rebuilt(const char *path, const char *index, const char *definition)
{
    char sql[512], honest[256];
    sqlite3 *db = store_fixture_raw_open(path);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT sql FROM sqlite_schema WHERE name = ?1", -1, &stmt, NULL),
        SQLITE_OK);
    sqlite3_bind_text(stmt, 1, index, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    snprintf(honest, sizeof honest, "%s", (const char *)sqlite3_column_text(stmt, 0));
    sqlite3_finalize(stmt);
    snprintf(sql, sizeof sql, "DROP INDEX %s; CREATE INDEX %s ON audit %s;", index, index,
             definition);
    store_fixture_db_exec(db, sql);
    store_fixture_db_exec(db, "PRAGMA writable_schema = ON");
    assert_int_equal(sqlite3_prepare_v2(db, "UPDATE sqlite_schema SET sql = ?1 WHERE name = ?2", -1,
                                        &stmt, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(stmt, 1, honest, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, index, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(stmt), SQLITE_DONE);
    sqlite3_finalize(stmt);
    store_fixture_db_exec(db, "PRAGMA writable_schema = OFF");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* The export reads a subject's entries through audit_by_subject and its
 * deliveries' through audit_by_delivery; the chain's walk reads by seq and
 * never meets them. Rebuilt to leave an entry out, verify's table check
 * names it (the chain is intact); rebuilt to file another subject's entry
 * under this one, the export shows only its seq, marked, never its
 * fields. (trail_entry: A's deliveries at 10, 20, 30, acked at 11, 21;
 * B's at 5, 15, 25.) */
static void test_indexes_rebuilt_outside_the_broker(void **state)
{
    fixture_t *f = *state;
    char definition[256];
    trail_append(f->store, broker_key, 1, 30);
    store_close(&f->store);
    static const struct {
        const char *index, *definition; /* TAG_A: A's tag */
        uint64_t seqs[8];               /* A's export */
        size_t n;
        uint64_t marked; /* shown only as unreadable */
        const char *problem;
    } rows[] = {
        {NULL, NULL, {10, 11, 20, 21, 30}, 5, 0, NULL},
        {"audit_by_subject",
         "(subject_tag) WHERE subject_tag IS NOT NULL AND seq <> 20",
         {10, 11, 30},
         3,
         0,
         "row 20 missing from index audit_by_subject"},
        {"audit_by_subject",
         "((CASE WHEN seq = 15 THEN 'TAG_A' ELSE subject_tag END)) WHERE subject_tag IS NOT NULL",
         {10, 11, 15, 20, 21, 30},
         6,
         15,
         "audit_by_subject"},
        {"audit_by_delivery",
         "((CASE WHEN seq = 25 THEN 10 ELSE delivery_seq END)) WHERE delivery_seq IS NOT NULL",
         {10, 11, 20, 21, 25, 30},
         6,
         25,
         "audit_by_delivery"},
        {"audit_by_delivery",
         "(delivery_seq) WHERE delivery_seq IS NOT NULL AND seq <> 21",
         {10, 11, 20, 30},
         4,
         0,
         "row 21 missing from index audit_by_delivery"},
    };
    const keypair_t *keys[] = {broker_key};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char path[160], marker[64], shown[64];
        uint64_t seqs[16];
        audit_verify_report_t r;
        snprintf(path, sizeof path, "%s/indexed-%zu.db", f->dir, i);
        copy_file(f->path, path);
        if (rows[i].index != NULL) {
            const char *at = strstr(rows[i].definition, "TAG_A");
            if (at == NULL)
                snprintf(definition, sizeof definition, "%s", rows[i].definition);
            else
                snprintf(definition, sizeof definition, "%.*s%s%s", (int)(at - rows[i].definition),
                         rows[i].definition, tag_a, at + 5);
            index_rebuilt(path, rows[i].index, definition);
        }
        verify_path(path, keys, 1, NULL, &r);
        if (!r.intact || !r.tables_checked)
            fail_msg("row %zu: intact=%d tables_checked=%d: %s", i, r.intact, r.tables_checked,
                     r.problem);
        if (rows[i].problem == NULL
                ? !r.tables_intact
                : r.tables_intact || strstr(r.tables_problem, rows[i].problem) == NULL)
            fail_msg("row %zu: tables_intact=%d \"%s\", expected \"%s\"", i, r.tables_intact,
                     r.tables_problem, rows[i].problem ? rows[i].problem : "");
        store_t *reader = store_fixture_open_reader(path, store_key);
        char *json = NULL;
        export_of(reader, SUBJECT_A, &json);
        store_close(&reader);
        size_t n = export_seqs(json, seqs, 16);
        if (n != rows[i].n)
            fail_msg("row %zu: %zu entries exported, expected %zu:\n%s", i, n, rows[i].n, json);
        for (size_t k = 0; k < n; k++)
            if (seqs[k] != rows[i].seqs[k])
                fail_msg("row %zu: entry %zu is seq %llu, expected %llu:\n%s", i, k,
                         (unsigned long long)seqs[k], (unsigned long long)rows[i].seqs[k], json);
        assert_null(strstr(json, tag_b)); /* nothing of B's is shown */
        if (rows[i].marked != 0) {
            snprintf(marker, sizeof marker,
                     "{\"seq\":%llu,\"unreadable\":", (unsigned long long)rows[i].marked);
            snprintf(shown, sizeof shown,
                     "{\"seq\":%llu,\"at\":", (unsigned long long)rows[i].marked);
            if (strstr(json, marker) == NULL || strstr(json, shown) != NULL)
                fail_msg("row %zu: entry %llu is not only marked:\n%s", i,
                         (unsigned long long)rows[i].marked, json);
            assert_non_null(strstr(json, "the index was altered (run schakelctl audit verify)"));
        }
        free(json);
        unlink(path);
    }
}

/* ------------------------------------------------------------------ the tail at start */

/* audit_tail_check on copies of the template (checkpoints at 1000 and
 * 2000, entries to 2500), each changed as someone holding the file might:
 * what does not chain from the last checkpoint is named; a tail re-chained
 * consistently after it, or cut back after it, is not (anchors catch those). */
static void test_tail_check_names_what_does_not_chain(void **state)
{
    fixture_t *f = *state;
    static const struct {
        const char *sql;      /* NULL: the template as it is */
        uint64_t rehash_from; /* then hashes recomputed from here to rehash_to */
        uint64_t rehash_to;
        const char *problem; /* NULL: it chains */
    } rows[] = {
        {NULL, 0, 0, NULL},
        {"UPDATE audit SET detail = 'forged' WHERE seq = 2302", 0, 0,
         "entry 2302 does not chain (its hash is not"},
        {"UPDATE audit SET recipient = 'riec/analyse' WHERE seq = 2300", 2300, 2300,
         "entry 2301 does not chain (its hash is not"},
        {"UPDATE audit SET recipient = 'riec/analyse' WHERE seq = 2300", 2300, TRAIL_ENTRIES, NULL},
        {"UPDATE audit SET recipient = 'riec/analyse' WHERE seq = 2000", 2000, TRAIL_ENTRIES,
         "entry 2000 does not chain (it is not the entry the last checkpoint certifies)"},
        {"DELETE FROM audit WHERE seq = 2200", 0, 0, "entry 2200 does not chain (it is missing)"},
        {"DELETE FROM audit WHERE seq > 2200", 0, 0, NULL},
        {"DELETE FROM audit WHERE seq > 1800", 0, 0,
         "ends at entry 1800, but a checkpoint certifies entry 2000"},
        {"DELETE FROM audit_checkpoints WHERE seq = 2000", 0, 0,
         "entry 2000 of the audit trail is 1000 entries after its last checkpoint (seq 1000)"},
        {"UPDATE audit_checkpoints SET at = at + 1 WHERE seq = 2000", 0, 0,
         "last checkpoint (seq 2000) does not verify"},
        {"UPDATE audit SET hash = substr(hash, 1, 31) WHERE seq = 2400", 0, 0,
         "entry 2400 does not chain (its row is damaged)"},
    };
    store_close(&f->store);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char path[160], why[512] = "";
        snprintf(path, sizeof path, "%s/tail-%zu.db", f->dir, i);
        copy_file(template_path, path);
        if (rows[i].sql != NULL) {
            sqlite3 *db = attacker_open(path);
            store_fixture_db_exec(db, rows[i].sql);
            if (rows[i].rehash_from != 0)
                rehash_from(path, db, rows[i].rehash_from, rows[i].rehash_to);
            assert_int_equal(sqlite3_close(db), SQLITE_OK);
        }
        store_t *store = store_fixture_open(path, store_key);
        int rc = audit_tail_check(store, NULL, NULL, why, sizeof why);
        store_close(&store);
        if (rows[i].problem == NULL ? rc != 0 : rc != 1 || strstr(why, rows[i].problem) == NULL)
            fail_msg("row %zu: %d \"%s\", expected \"%s\"", i, rc, why,
                     rows[i].problem ? rows[i].problem : "");
        unlink(path);
    }
    /* A trail without a checkpoint yet chains from entry 1; an empty one. */
    char path[160], why[512] = "";
    snprintf(path, sizeof path, "%s/young.db", f->dir);
    store_t *store = store_fixture_create(path, store_key);
    assert_int_equal(audit_tail_check(store, NULL, NULL, why, sizeof why), 0);
    trail_append(store, NULL, 1, 40);
    assert_int_equal(audit_tail_check(store, NULL, NULL, why, sizeof why), 0);
    store_close(&store);
    store_fixture_raw_exec(path, "DROP TRIGGER audit_append_only_update;"
                                 "UPDATE audit SET detail = 'forged' WHERE seq = 1");
    store = store_fixture_open(path, store_key);
    assert_int_equal(audit_tail_check(store, NULL, NULL, why, sizeof why), 1);
    assert_non_null(strstr(why, "entry 1 does not chain"));
    store_close(&store);
}

/* The forgery the tail check cannot refuse: an entry a genuine checkpoint
 * covers (1500, under 2000) changed, the chain recomputed to the end, and
 * that checkpoint given the new hash and signed again under another key.
 * The check proves the signature, not whose key made it: the tail chains,
 * and the check names the checkpoint and the other key, which the broker
 * logs (audit.checkpoint_other_key). Under the broker's own key, or asked
 * with the key that signed (a rotated broker), it names none. */
static void test_tail_check_names_a_checkpoint_under_another_key(void **state)
{
    fixture_t *f = *state;
    char path[160], why[512] = "";
    audit_tail_signer_t other;
    store_close(&f->store);
    snprintf(path, sizeof path, "%s/other-key.db", f->dir);
    copy_file(template_path, path);
    store_t *store = store_fixture_open(path, store_key);
    assert_int_equal(audit_tail_check(store, broker_key->sign_pk, &other, why, sizeof why), 0);
    assert_int_equal(other.seq, 0);
    store_close(&store);

    sqlite3 *db = attacker_open(path);
    store_fixture_db_exec(db, "UPDATE audit SET recipient = 'riec/analyse' WHERE seq = 1500");
    rehash_from(path, db, 1500, TRAIL_ENTRIES);
    store_fixture_db_exec(db, "UPDATE audit_checkpoints SET hash = (SELECT hash FROM audit WHERE"
                              " seq = 2000) WHERE seq = 2000");
    resign_checkpoint(db, 2000, other_key);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);

    store = store_fixture_open(path, store_key);
    memset(&other, 0xff, sizeof other);
    if (audit_tail_check(store, broker_key->sign_pk, &other, why, sizeof why) != 0)
        fail_msg("the re-signed tail: \"%s\"", why);
    assert_int_equal(other.seq, 2000);
    assert_memory_equal(other.key, other_key->sign_pk, 32);
    assert_int_equal(audit_tail_check(store, other_key->sign_pk, &other, why, sizeof why), 0);
    assert_int_equal(other.seq, 0);
    store_close(&store);
    /* verify with the broker's key names it */
    const keypair_t *keys[] = {broker_key};
    audit_verify_report_t r;
    verify_path(path, keys, 1, NULL, &r);
    assert_false(r.intact);
    unlink(path);
}

/* ------------------------------------------------------------------ the running broker's tail */

static void append_one(store_t *store, const char *detail)
{
    store_audit_entry_t e;
    audit_entry_init(&e, "request.refused");
    audit_set_text(&e, STORE_AUDIT_ACTOR, "riec/analyse");
    audit_set_text(&e, STORE_AUDIT_DETAIL, detail);
    if (audit_append(store, broker_key, BASE_TIME + 1, &e) != 0)
        fail_msg("append: %s", store_errmsg(store));
}

/* The guard holds the handle to the tail it last committed: a rolled-back
 * transaction does not move it (the next one chains as before); a tail
 * rewritten by another connection (the last entry re-appended with a
 * recomputed hash, or the trail cut back) is refused before anything is
 * appended or a checkpoint signed, and said with both seqs. */
static void test_guard_refuses_a_tail_it_did_not_commit(void **state)
{
    fixture_t *f = *state;
    uint64_t stored = 0, committed = 0;
    uint8_t hash[32];
    store_audit_tail_t tail;
    trail_append(f->store, broker_key, 1, 30);
    assert_int_equal(store_audit_tail_guard(f->store), 0);
    assert_int_equal(store_audit_tail_mismatch(f->store, &stored, NULL, &committed, hash), 0);

    append_one(f->store, "rolled back");
    assert_int_equal(store_rollback(f->store), 0);
    append_one(f->store, "committed");
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(audit_checkpoint(f->store, broker_key, BASE_TIME + 2, 1), 1);
    assert_int_equal(store_commit(f->store), 0);
    append_one(f->store, "committed too");
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(store_audit_tail(f->store, &tail), 0);
    assert_int_equal(tail.seq, 32);
    uint8_t own[32];
    memcpy(own, tail.hash, 32);

    /* Entry 32 re-appended by another connection, with another recipient
     * and its hash recomputed: the chain is consistent, verify calls it
     * intact (no checkpoint covers it yet). */
    sqlite3 *db = attacker_open(f->path);
    store_fixture_db_exec(db, "UPDATE audit SET recipient = 'woco/meldingen' WHERE seq = 32");
    rehash_from(f->path, db, 32, 32);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    const keypair_t *keys[] = {broker_key};
    audit_verify_report_t r;
    verify_path(f->path, keys, 1, NULL, &r);
    assert_true(r.intact);

    int64_t checkpoints = 0;
    sqlite3 *raw = store_fixture_raw_open(f->path);
    checkpoints = store_fixture_db_int(raw, "SELECT count(*) FROM audit_checkpoints");
    assert_int_equal(audit_checkpoint(f->store, broker_key, BASE_TIME + 3, 1), -1);
    assert_non_null(strstr(store_errmsg(f->store), "this broker last committed entry 32"));
    assert_int_equal(store_audit_tail_mismatch(f->store, &stored, NULL, &committed, hash), 1);
    assert_int_equal(stored, 32);
    assert_int_equal(committed, 32);
    assert_memory_equal(hash, own, 32);
    store_audit_entry_t e;
    audit_entry_init(&e, "request.refused");
    assert_int_equal(audit_append(f->store, broker_key, BASE_TIME + 3, &e), -1);
    assert_non_null(strstr(store_errmsg(f->store), "ends at entry 32 with another hash"));
    assert_int_equal(store_audit_tail_mismatch(f->store, &stored, NULL, &committed, hash), 1);
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(store_fixture_db_int(raw, "SELECT count(*) FROM audit_checkpoints"),
                     checkpoints);
    assert_int_equal(store_fixture_db_int(raw, "SELECT max(seq) FROM audit"), 32);

    /* Cut back to 31: refused as well, naming both seqs. */
    store_fixture_db_exec(raw, "DELETE FROM audit WHERE seq = 32"); /* its trigger is gone */
    assert_int_equal(audit_checkpoint(f->store, broker_key, BASE_TIME + 3, 1), -1);
    assert_non_null(strstr(store_errmsg(f->store),
                           "ends at entry 31, but this broker last committed entry 32"));
    assert_int_equal(store_audit_tail_mismatch(f->store, &stored, NULL, &committed, hash), 1);
    assert_int_equal(stored, 31);
    assert_int_equal(sqlite3_close(raw), SQLITE_OK);
}

/* A tail put back as the broker committed it, after the guard refused
 * another: still refused (what was done meanwhile only audit verify can
 * tell, and a mark stands against it), naming both, until the guard is
 * taken again (a restart); the found seq and hash stay the rewrite's. */
/* A trail whose last entry is dated before any clock (a damaged entry,
 * at INT64_MIN): an offline command's clock is not behind it, and the
 * comparison does not overflow. */
static void test_offline_time_after_an_entry_before_any_clock(void **state)
{
    fixture_t *f = *state;
    store_audit_entry_t e;
    audit_entry_init(&e, "store.created");
    assert_int_equal(store_begin(f->store), 0);
    assert_int_equal(audit_append(f->store, broker_key, INT64_MIN, &e), 0);
    assert_int_equal(store_commit(f->store), 0);
    int64_t now = 0;
    char why[512] = "";
    if (audit_offline_time(f->store, 0, &now, why, sizeof why) != 0)
        fail_msg("refused after an entry at INT64_MIN: %s", why);
    assert_true(now > 0);
}

static void test_guard_refuses_a_tail_put_back(void **state)
{
    fixture_t *f = *state;
    uint64_t stored = 0, committed = 0;
    uint8_t hash[32], found[32];
    store_audit_tail_t tail;
    trail_append(f->store, broker_key, 1, 30);
    assert_int_equal(store_audit_tail_guard(f->store), 0);
    append_one(f->store, "committed");
    assert_int_equal(store_commit(f->store), 0);

    sqlite3 *db = attacker_open(f->path);
    store_fixture_db_exec(db, "UPDATE audit SET recipient = 'woco/meldingen' WHERE seq = 31");
    rehash_from(f->path, db, 31, 31);
    assert_int_equal(audit_checkpoint(f->store, broker_key, BASE_TIME + 2, 1), -1);
    assert_non_null(strstr(store_errmsg(f->store), "ends at entry 31 with another hash"));
    assert_int_equal(store_audit_tail_mismatch(f->store, &stored, found, &committed, hash), 1);
    assert_int_equal(store_rollback(f->store), 0);

    /* put back: the tail is the committed one again */
    store_fixture_db_exec(db, "UPDATE audit SET recipient = NULL WHERE seq = 31");
    rehash_from(f->path, db, 31, 31);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    store_audit_entry_t e;
    audit_entry_init(&e, "request.refused");
    assert_int_equal(audit_append(f->store, broker_key, BASE_TIME + 3, &e), -1);
    assert_non_null(strstr(store_errmsg(f->store), "last committed entry 31 again"));
    assert_non_null(strstr(store_errmsg(f->store), "written outside the broker since"));
    uint8_t still[32];
    assert_int_equal(store_audit_tail_mismatch(f->store, &stored, still, &committed, hash), 1);
    assert_int_equal(stored, 31);
    assert_int_equal(committed, 31);
    assert_memory_equal(still, found, 32);
    assert_int_equal(store_rollback(f->store), 0);
    assert_int_equal(audit_checkpoint(f->store, broker_key, BASE_TIME + 3, 1), -1);
    assert_int_equal(store_rollback(f->store), 0);
    sqlite3 *raw = store_fixture_raw_open(f->path);
    assert_int_equal(store_fixture_db_int(raw, "SELECT max(seq) FROM audit"), 31);

    /* a new guard (as a restart takes it) starts from the tail as it is */
    assert_int_equal(store_audit_tail_guard(f->store), 0);
    assert_int_equal(store_audit_tail_mismatch(f->store, &stored, NULL, &committed, hash), 0);
    append_one(f->store, "after the restart");
    assert_int_equal(store_commit(f->store), 0);
    assert_int_equal(store_audit_tail(f->store, &tail), 0);
    assert_int_equal(tail.seq, 32);
    assert_int_equal(store_fixture_db_int(raw, "SELECT max(seq) FROM audit"), 32);
    assert_int_equal(sqlite3_close(raw), SQLITE_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_field_order_is_the_documented_one),
        cmocka_unit_test(test_entry_encoding_is_the_documented_one),
        cmocka_unit_test(test_late_fields_cannot_trade_places),
        cmocka_unit_test(test_checkpoint_bytes_are_the_documented_ones),
        cmocka_unit_test(test_every_change_changes_the_hash),
        cmocka_unit_test(test_seq_lists_have_one_spelling),
        cmocka_unit_test_setup_teardown(test_chain_links_each_entry_to_the_last, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_checkpoints_every_n_entries_and_when_due, setup,
                                        store_fixture_teardown),
        cmocka_unit_test(test_verify_reports_an_intact_trail),
        cmocka_unit_test_setup_teardown(test_verify_beside_a_writer, setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_verify_names_the_first_broken_place, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_verify_keys_in_rotation_order, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_offline_entry_keeps_the_trail_verifiable, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_full_storage_refuses_the_action_and_keeps_nothing,
                                        setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_append_refuses_bad_entries, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_trail_is_append_only_in_the_schema, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_subject_tag_is_keyed_per_store_and_survives_rekey,
                                        setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_reader_is_keyless_read_only_and_picky, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_subject_export_wipes_what_it_frees, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_subject_export_holds_exactly_the_subjects_entries,
                                        setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_export_in_steps_is_cut_where_it_began, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_export_counts_an_entry_both_indexes_find_once, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_export_in_steps_is_bounded_in_bytes, setup,
                                        store_fixture_teardown),
        cmocka_unit_test(test_renderings_escape_and_withhold),
        cmocka_unit_test_setup_teardown(test_acked_entries_are_indexed_with_their_entry, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_verify_checks_mixed_trails_and_the_index, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_verify_of_many_acked_entries, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_stray_index_row_is_named_and_explained, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_export_shows_only_acked_entries_through_the_index,
                                        setup, store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_export_shows_a_shared_acked_entry_once, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_store_from_before_acked_lists_migrates, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_schema_11_acked_index_migrates, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_acked_index_migration_reports_progress, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_indexes_rebuilt_outside_the_broker, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_tail_check_names_what_does_not_chain, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_tail_check_names_a_checkpoint_under_another_key, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_guard_refuses_a_tail_put_back, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_offline_time_after_an_entry_before_any_clock, setup,
                                        store_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_guard_refuses_a_tail_it_did_not_commit, setup,
                                        store_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
