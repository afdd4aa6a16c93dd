/*
 * test_deliver.c — the items the publish path keeps for the push
 * (deliver_kept_t in broker/deliver.c): usable only after their turn
 * committed, wiped by a rollback, bounded in number, bytes and age, wiped when
 * the last delivery owed was pushed or the cache is cleared, and
 * byte-identical to what the push makes from the store's copy of the item.
 *
 * Each item is a real signal, encoded as a publisher would, decoded as the
 * publish path decodes it (wire_decode_signal), and compared with the
 * reduction of the store's copy (a plain unpack, as the push does).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "broker.h"

#define NOW_S 1764000000
#define ALL_FIELDS                                                                                 \
    (FIELD_AREA | FIELD_ADDRESS | FIELD_SUBJECT | FIELD_GROUNDS | FIELD_CASE_REF |                 \
     FIELD_SEVERITY | FIELD_OBSERVED_AT | FIELD_SUMMARY | FIELD_SOURCE_REF | FIELD_RECIPIENTS)

/* One signal item with every field set; `summary` tells items apart. */
typedef struct test_item {
    uint8_t *bytes; /* as published and stored */
    size_t len;
    Schakel__Signal *decoded; /* as the publish path decodes it */
} test_item_t;

static void item_make(test_item_t *item, const char *summary)
{
    char *recipients[] = {"politie", "om"};
    Schakel__Signal signal = SCHAKEL__SIGNAL__INIT;
    Schakel__Address address = SCHAKEL__ADDRESS__INIT;
    signal.sender = "woco-maasoever/meldingen";
    signal.kind = "hennepkwekerij";
    signal.theme = "ondermijning";
    signal.area = "BU09350101";
    address.postcode = "6211AB";
    address.has_house_number = 1;
    address.house_number = 12;
    signal.address = &address;
    signal.subject = "pseudo-7f3a9c";
    signal.grounds = "Stroomverbruik verdubbeld, ramen afgeplakt";
    signal.case_ref = "RIEC-2026-0042";
    signal.has_severity = 1;
    signal.severity = SCHAKEL__SEVERITY__SEVERITY_HIGH;
    signal.has_observed_at = 1;
    signal.observed_at = NOW_S - 3600;
    signal.summary = (char *)(uintptr_t)summary;
    signal.source_ref = "WOCO-2026-118";
    signal.n_recipients = 2;
    signal.recipients = recipients;
    item->bytes = wire_encode_signal(&signal, &item->len);
    assert_non_null(item->bytes);
    wire_error_t err = {0};
    item->decoded = wire_decode_signal(item->bytes, item->len, NOW_S, &err);
    if (item->decoded == NULL)
        fail_msg("the test signal does not validate: %s", err.text);
}

static void item_free(test_item_t *item)
{
    wire_signal_free(&item->decoded);
    free(item->bytes);
    item->bytes = NULL;
}

/* What the push makes from the store's copy: the stored bytes unpacked and
 * reduced to `fields`. malloc'd. */
static uint8_t *store_reduction(const test_item_t *item, uint32_t fields, size_t *len)
{
    Schakel__Signal *stored = schakel__signal__unpack(NULL, item->len, item->bytes);
    assert_non_null(stored);
    uint8_t *bytes = publish_signal_for_recipient(stored, fields, len);
    schakel__signal__free_unpacked(stored, NULL);
    assert_non_null(bytes);
    return bytes;
}

/* ------------------------------------------------------------ same bytes */

/* Masks kept together (at most DELIVER_KEPT_MASKS), and masks asked for:
 * one kept must come back byte for byte as the store's reduction; one not
 * kept must not come back at all. */
static const struct mask_row {
    const char *name;
    uint32_t kept[DELIVER_KEPT_MASKS];
    size_t n_kept;
    uint32_t asked;
    int expect_content;
} mask_rows[] = {
    {"nothing but sender, kind and theme", {0}, 1, 0, 1},
    {"everything", {ALL_FIELDS}, 1, ALL_FIELDS, 1},
    {"area only", {FIELD_AREA}, 1, FIELD_AREA, 1},
    {"address and subject", {FIELD_ADDRESS | FIELD_SUBJECT}, 1, FIELD_ADDRESS | FIELD_SUBJECT, 1},
    {"second of three",
     {FIELD_AREA, FIELD_SEVERITY | FIELD_OBSERVED_AT, FIELD_SUMMARY},
     3,
     FIELD_SEVERITY | FIELD_OBSERVED_AT,
     1},
    {"fourth of four",
     {FIELD_AREA, FIELD_GROUNDS, FIELD_CASE_REF, FIELD_SOURCE_REF | FIELD_RECIPIENTS},
     4,
     FIELD_SOURCE_REF | FIELD_RECIPIENTS,
     1},
    {"the same mask twice", {FIELD_SUMMARY, FIELD_SUMMARY}, 2, FIELD_SUMMARY, 1},
    /* must not come back */
    {"a mask not kept", {FIELD_AREA}, 1, FIELD_AREA | FIELD_SUMMARY, 0},
    {"no mask kept but the narrowest", {0}, 1, ALL_FIELDS, 0},
};

static void test_kept_content_is_the_stores_reduction(void **state)
{
    (void)state;
    test_item_t item;
    item_make(&item, "Twee keer per week vrachtverkeer 's nachts");
    for (size_t r = 0; r < sizeof mask_rows / sizeof mask_rows[0]; r++) {
        const struct mask_row *row = &mask_rows[r];
        deliver_kept_t *kept = deliver_kept_new();
        assert_non_null(kept);
        assert_int_equal(deliver_kept_add(kept, 41, item.decoded, row->kept, row->n_kept, 3, 0), 1);
        deliver_kept_settle(kept, 1);
        size_t len = 0;
        const uint8_t *content = deliver_kept_content(kept, 41, row->asked, &len);
        if (!row->expect_content) {
            if (content != NULL)
                fail_msg("%s: content for a mask that was not kept", row->name);
        } else {
            if (content == NULL)
                fail_msg("%s: no content for a kept mask", row->name);
            size_t want_len = 0;
            uint8_t *want = store_reduction(&item, row->asked, &want_len);
            if (len != want_len || memcmp(content, want, len) != 0)
                fail_msg("%s: kept content (%zu bytes) differs from the store's (%zu bytes)",
                         row->name, len, want_len);
            free(want);
        }
        deliver_kept_destroy(&kept);
        assert_null(kept);
    }
    item_free(&item);
}

/* ------------------------------------------------------------ commit, rollback */

/* A script of one seq's life over turns. Items: 'A' and 'B' are kept (one
 * mask), 'X' is an item that is not kept (more masks than an entry holds).
 * Steps: "kA" keep A, "kB", "kX", "c" the turn commits, "r" it rolls back. */
static const struct turn_row {
    const char *name;
    const char *steps;
    char expect; /* 'A', 'B' or '-' (nothing usable) */
} turn_rows[] = {
    {"committed: usable", "kA c", 'A'},
    {"open turn: not usable yet", "kA", '-'},
    {"rolled back: gone", "kA r", '-'},
    {"rolled back, then a turn commits without it", "kA r c", '-'},
    {"rolled back, the seq stored again for an item not kept", "kA r kX c", '-'},
    {"rolled back, the seq stored again for another item", "kA r kB c", 'B'},
    {"committed, then kept again in a turn that rolls back", "kA c kB r", '-'},
    {"kept twice in one committed turn", "kA kB c", 'B'},
    {"a rolled-back turn after the commit leaves it", "kA c r", 'A'},
};

static void turn_run(deliver_kept_t *kept, const char *steps, const test_item_t *a,
                     const test_item_t *b)
{
    static const uint32_t one[] = {FIELD_AREA | FIELD_SUMMARY};
    static const uint32_t too_many[DELIVER_KEPT_MASKS + 1] = {0, FIELD_AREA, FIELD_ADDRESS,
                                                              FIELD_SUBJECT, FIELD_SUMMARY};
    for (const char *s = steps; *s != '\0'; s++) {
        switch (*s) {
        case 'k':
            s++;
            if (*s == 'X')
                assert_int_equal(
                    deliver_kept_add(kept, 7, a->decoded, too_many, DELIVER_KEPT_MASKS + 1, 3, 0),
                    0);
            else
                assert_int_equal(
                    deliver_kept_add(kept, 7, (*s == 'A' ? a : b)->decoded, one, 1, 3, 0), 1);
            break;
        case 'c':
        case 'r':
            deliver_kept_settle(kept, *s == 'c');
            break;
        default:
            break;
        }
    }
}

static void test_kept_usable_only_after_commit(void **state)
{
    (void)state;
    test_item_t a, b;
    item_make(&a, "Rolled back: never stored");
    item_make(&b, "Committed under the same seq");
    const uint32_t fields = FIELD_AREA | FIELD_SUMMARY;
    for (size_t r = 0; r < sizeof turn_rows / sizeof turn_rows[0]; r++) {
        const struct turn_row *row = &turn_rows[r];
        deliver_kept_t *kept = deliver_kept_new();
        assert_non_null(kept);
        turn_run(kept, row->steps, &a, &b);
        size_t len = 0;
        const uint8_t *content = deliver_kept_content(kept, 7, fields, &len);
        if (row->expect == '-') {
            if (content != NULL)
                fail_msg("%s (%s): an entry is usable", row->name, row->steps);
        } else {
            if (content == NULL)
                fail_msg("%s (%s): no usable entry", row->name, row->steps);
            size_t want_len = 0;
            uint8_t *want = store_reduction(row->expect == 'A' ? &a : &b, fields, &want_len);
            if (len != want_len || memcmp(content, want, len) != 0)
                fail_msg("%s (%s): the entry is not item %c's content", row->name, row->steps,
                         row->expect);
            free(want);
        }
        deliver_kept_destroy(&kept);
    }
    item_free(&a);
    item_free(&b);
}

/* ------------------------------------------------------------ bounds */

static const uint32_t bound_mask[] = {FIELD_AREA};

/* Keep and commit items first..last (owed deliveries each) at now_ms. */
static void keep_committed(deliver_kept_t *kept, const test_item_t *item, uint64_t first,
                           uint64_t last, uint32_t owed, int64_t now_ms)
{
    for (uint64_t seq = first; seq <= last; seq++)
        assert_int_equal(deliver_kept_add(kept, seq, item->decoded, bound_mask, 1, owed, now_ms),
                         1);
    deliver_kept_settle(kept, 1);
}

static int usable(const deliver_kept_t *kept, uint64_t seq)
{
    size_t len = 0;
    return deliver_kept_content(kept, seq, FIELD_AREA, &len) != NULL;
}

/* The last recipient owed takes the entry with it; earlier ones do not. */
static void test_kept_wiped_after_last_push(void **state)
{
    (void)state;
    test_item_t item;
    item_make(&item, "Three recipients");
    deliver_kept_t *kept = deliver_kept_new();
    keep_committed(kept, &item, 5, 5, 3, 0);
    for (int pushed = 1; pushed <= 3; pushed++) {
        deliver_kept_pushed(kept, 5);
        if (pushed < 3 && !usable(kept, 5))
            fail_msg("gone after %d of 3 pushes", pushed);
    }
    assert_false(usable(kept, 5));
    assert_int_equal(deliver_kept_count(kept), 0);
    deliver_kept_pushed(kept, 5); /* a redelivery later finds nothing: harmless */
    assert_int_equal(deliver_kept_count(kept), 0);
    deliver_kept_destroy(&kept);
    item_free(&item);
}

/* At most DELIVER_KEPT_ITEMS entries: an item whose slot holds an older
 * one the push has yet to reach is not kept; once that one is pushed to
 * its last recipient (or aged out), the slot takes the next. */
static void test_kept_bounded_in_number(void **state)
{
    (void)state;
    test_item_t item;
    item_make(&item, "Many");
    deliver_kept_t *kept = deliver_kept_new();
    const uint64_t extra = 10, last = DELIVER_KEPT_ITEMS + extra;
    keep_committed(kept, &item, 1, DELIVER_KEPT_ITEMS, 2, 0);
    for (uint64_t seq = DELIVER_KEPT_ITEMS + 1; seq <= last; seq++)
        assert_int_equal(deliver_kept_add(kept, seq, item.decoded, bound_mask, 1, 2, 0), 0);
    deliver_kept_settle(kept, 1);
    assert_int_equal(deliver_kept_count(kept), DELIVER_KEPT_ITEMS);
    for (uint64_t seq = 1; seq <= last; seq++)
        if (usable(kept, seq) != (seq <= DELIVER_KEPT_ITEMS))
            fail_msg("item %llu is %s", (unsigned long long)seq,
                     seq <= DELIVER_KEPT_ITEMS ? "gone, though older than the refused ones"
                                               : "kept beyond the bound");
    /* item 1 pushed to both its recipients: its slot is free for the next */
    deliver_kept_pushed(kept, 1);
    assert_int_equal(deliver_kept_add(kept, last + 1, item.decoded, bound_mask, 1, 2, 0), 0);
    deliver_kept_pushed(kept, 1);
    keep_committed(kept, &item, DELIVER_KEPT_ITEMS + 1, DELIVER_KEPT_ITEMS + 1, 2, 0);
    assert_true(usable(kept, DELIVER_KEPT_ITEMS + 1));
    assert_false(usable(kept, 1));
    assert_int_equal(deliver_kept_count(kept), DELIVER_KEPT_ITEMS);
    /* many times the bound in one turn: still bounded, and all settle */
    deliver_kept_clear(kept);
    for (uint64_t seq = 1; seq <= 4 * DELIVER_KEPT_ITEMS; seq++)
        (void)deliver_kept_add(kept, seq, item.decoded, bound_mask, 1, 2, 0);
    assert_int_equal(deliver_kept_count(kept), DELIVER_KEPT_ITEMS);
    deliver_kept_settle(kept, 1);
    assert_true(usable(kept, DELIVER_KEPT_ITEMS));
    assert_false(usable(kept, DELIVER_KEPT_ITEMS + 1));
    deliver_kept_destroy(&kept);
    item_free(&item);
}

/* At most DELIVER_KEPT_BYTES of reduced copies, however large the items:
 * signals with the longest summary, each kept in four reductions that all
 * carry it, fill the bytes long before the number; the item that would go
 * over is not kept, and one that fits once an entry is wiped is. */
static void test_kept_bounded_in_bytes(void **state)
{
    (void)state;
    char summary[SCHAKEL_MAX_SUMMARY_LEN + 1];
    memset(summary, 'x', SCHAKEL_MAX_SUMMARY_LEN);
    summary[SCHAKEL_MAX_SUMMARY_LEN] = '\0';
    test_item_t item;
    item_make(&item, summary);
    static const uint32_t four[DELIVER_KEPT_MASKS] = {FIELD_SUMMARY, FIELD_SUMMARY | FIELD_AREA,
                                                      FIELD_SUMMARY | FIELD_GROUNDS, ALL_FIELDS};
    size_t entry = 0;
    for (size_t m = 0; m < DELIVER_KEPT_MASKS; m++) {
        size_t len = 0;
        free(store_reduction(&item, four[m], &len));
        entry += len;
    }
    const size_t fit = DELIVER_KEPT_BYTES / entry;
    assert_true(fit < DELIVER_KEPT_ITEMS); /* else this test measures the number */
    deliver_kept_t *kept = deliver_kept_new();
    for (uint64_t seq = 1; seq <= fit; seq++)
        if (deliver_kept_add(kept, seq, item.decoded, four, DELIVER_KEPT_MASKS, 1, 0) != 1)
            fail_msg("item %llu of %zu that fit not kept", (unsigned long long)seq, fit);
    assert_int_equal(deliver_kept_bytes(kept), fit * entry);
    assert_int_equal(deliver_kept_add(kept, fit + 1, item.decoded, four, DELIVER_KEPT_MASKS, 1, 0),
                     0);
    deliver_kept_settle(kept, 1);
    assert_int_equal(deliver_kept_count(kept), fit);
    size_t len = 0;
    assert_non_null(deliver_kept_content(kept, fit, FIELD_SUMMARY, &len));
    assert_null(deliver_kept_content(kept, fit + 1, FIELD_SUMMARY, &len));
    /* item 1 pushed to its one recipient: its bytes are free again */
    deliver_kept_pushed(kept, 1);
    assert_int_equal(deliver_kept_add(kept, fit + 1, item.decoded, four, DELIVER_KEPT_MASKS, 1, 0),
                     1);
    deliver_kept_settle(kept, 1);
    assert_non_null(deliver_kept_content(kept, fit + 1, FIELD_SUMMARY, &len));
    assert_int_equal(deliver_kept_bytes(kept), fit * entry);
    assert_true(deliver_kept_bytes(kept) <= DELIVER_KEPT_BYTES);
    deliver_kept_clear(kept);
    assert_int_equal(deliver_kept_bytes(kept), 0);
    deliver_kept_destroy(&kept);
    item_free(&item);
}

/* Older than DELIVER_KEPT_MAX_AGE_MS at a sweep: gone; younger ones stay. */
static void test_kept_bounded_in_age(void **state)
{
    (void)state;
    test_item_t item;
    item_make(&item, "Waiting");
    deliver_kept_t *kept = deliver_kept_new();
    assert_int_equal(deliver_kept_wait_ms(kept, 0, 1000), 1000); /* nothing kept */
    keep_committed(kept, &item, 1, 1, 3, 1000);
    keep_committed(kept, &item, 2, 2, 3, 1500);
    /* the loop waits for frames no longer than until the next entry is due
     * (wait: the longest wait allowed at now_ms, of at most 1000 ms) */
    static const struct {
        int64_t now_ms;
        int first, second, wait;
    } sweeps[] = {
        {1000 + DELIVER_KEPT_MAX_AGE_MS - 1, 1, 1, 1},
        {1000 + DELIVER_KEPT_MAX_AGE_MS, 0, 1, 500},
        {1500 + DELIVER_KEPT_MAX_AGE_MS - 1, 0, 1, 1},
        {1500 + DELIVER_KEPT_MAX_AGE_MS, 0, 0, 1000},
    };
    assert_int_equal(deliver_kept_wait_ms(kept, 0, 1000), 1000);
    assert_int_equal(deliver_kept_wait_ms(kept, 1000 + DELIVER_KEPT_MAX_AGE_MS - 300, 1000), 300);
    assert_int_equal(deliver_kept_wait_ms(kept, 1000 + DELIVER_KEPT_MAX_AGE_MS + 5, 1000), 0);
    for (size_t i = 0; i < sizeof sweeps / sizeof sweeps[0]; i++) {
        deliver_kept_sweep(kept, sweeps[i].now_ms);
        if (usable(kept, 1) != sweeps[i].first || usable(kept, 2) != sweeps[i].second)
            fail_msg("sweep at %lld ms: item 1 %s, item 2 %s", (long long)sweeps[i].now_ms,
                     usable(kept, 1) ? "kept" : "gone", usable(kept, 2) ? "kept" : "gone");
        int wait = deliver_kept_wait_ms(kept, sweeps[i].now_ms, 1000);
        if (wait != sweeps[i].wait)
            fail_msg("after the sweep at %lld ms the loop may wait %d ms, want %d",
                     (long long)sweeps[i].now_ms, wait, sweeps[i].wait);
    }
    assert_int_equal(deliver_kept_count(kept), 0);
    deliver_kept_destroy(&kept);
    item_free(&item);
}

/* What is never kept, and clearing (broker stop, policy reload). */
static void test_kept_refusals_and_clear(void **state)
{
    (void)state;
    test_item_t item;
    item_make(&item, "Refused");
    deliver_kept_t *kept = deliver_kept_new();
    assert_int_equal(deliver_kept_add(kept, 0, item.decoded, bound_mask, 1, 3, 0), 0);
    assert_int_equal(deliver_kept_add(kept, 3, item.decoded, bound_mask, 1, 0, 0), 0);
    assert_int_equal(deliver_kept_add(kept, 3, item.decoded, bound_mask, 0, 3, 0), 0);
    assert_int_equal(deliver_kept_add(kept, 3, NULL, bound_mask, 1, 3, 0), 0);
    assert_int_equal(deliver_kept_count(kept), 0);
    keep_committed(kept, &item, 1, 3, 3, 0);
    assert_int_equal(deliver_kept_add(kept, 4, item.decoded, bound_mask, 1, 3, 0), 1);
    assert_int_equal(deliver_kept_count(kept), 4);
    deliver_kept_clear(kept);
    assert_int_equal(deliver_kept_count(kept), 0);
    deliver_kept_settle(kept, 1); /* the cleared pending entry does not come back */
    assert_false(usable(kept, 4));
    assert_int_equal(deliver_kept_count(kept), 0);
    deliver_kept_destroy(&kept);
    deliver_kept_destroy(&kept); /* idempotent */
    deliver_kept_settle(NULL, 1);
    deliver_kept_sweep(NULL, 0);
    deliver_kept_clear(NULL);
    item_free(&item);
}

/* ------------------------------------------------ vouching for written rows */

/* The policy objects a publish wrote two deliveries of one item with. */
static policy_partner_t vouch_partner_woco = {.id = "woco-maasoever"};
static policy_partner_t vouch_partner_politie = {.id = "politie"};
static policy_principal_t vouch_sender = {.id = "woco-maasoever/meldingen",
                                          .partner = &vouch_partner_woco};
static policy_principal_t vouch_to_a = {.id = "politie/bvh-koppeling",
                                        .partner = &vouch_partner_politie};
static policy_principal_t vouch_to_b = {.id = "politie/wijkteam",
                                        .partner = &vouch_partner_politie};
static policy_rule_t vouch_rule = {
    .id = "woco-naar-politie",
    .hash_hex = "5f2c0b7d9a1e4c3f8b6a2d0e7c9f1a3b5d7e9f0a2c4b6d8e0f1a3c5e7b9d1f3a",
    .purpose = "Ondermijning tegengaan",
    .legal_basis = "Convenant RIEC art. 4",
    .fields = FIELD_AREA | FIELD_SEVERITY};
static const uint8_t vouch_message_id[SCHAKEL_MESSAGE_ID_BYTES] = {
    0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07, 0x18, 0x29, 0x3a, 0x4b, 0x5c, 0x6d, 0x7e, 0x8f, 0x90};

/* Two stand-ins for policies: vouching compares only their addresses. */
static int vouch_policy_in_force, vouch_policy_reloaded;
#define VOUCH_POLICY ((const policy_t *)(const void *)&vouch_policy_in_force)
#define VOUCH_GENERATION 7u
#define VOUCH_OTHER_POLICY ((const policy_t *)(const void *)&vouch_policy_reloaded)

static deliver_kept_envelope_t vouch_envelope(void)
{
    deliver_kept_envelope_t e = {.policy = VOUCH_POLICY,
                                 .policy_generation = VOUCH_GENERATION,
                                 .sender = &vouch_sender,
                                 .item_index = 2,
                                 .accepted_at = NOW_S,
                                 .n = 2};
    memcpy(e.message_id, vouch_message_id, sizeof e.message_id);
    e.deliveries[0] = (deliver_kept_delivery_t){101, &vouch_to_a, &vouch_rule, NOW_S + 86400};
    e.deliveries[1] = (deliver_kept_delivery_t){102, &vouch_to_b, &vouch_rule, NOW_S + 86400};
    return e;
}

/* Delivery 102 as the scan reads it back: every column as written. Its
 * texts are copies, as the row's are. */
typedef struct vouch_row {
    char recipient[64], sender[64], sender_partner[32], rule_id[32], rule_hash[65];
    char purpose[64], legal_basis[64], case_id[16];
    uint8_t message_id[SCHAKEL_MESSAGE_ID_BYTES];
    store_delivery_t d;
} vouch_row_t;

static void vouch_row_make(vouch_row_t *row)
{
    snprintf(row->recipient, sizeof row->recipient, "%s", vouch_to_b.id);
    snprintf(row->sender, sizeof row->sender, "%s", vouch_sender.id);
    snprintf(row->sender_partner, sizeof row->sender_partner, "%s", vouch_partner_woco.id);
    snprintf(row->rule_id, sizeof row->rule_id, "%s", vouch_rule.id);
    snprintf(row->rule_hash, sizeof row->rule_hash, "%s", vouch_rule.hash_hex);
    snprintf(row->purpose, sizeof row->purpose, "%s", vouch_rule.purpose);
    snprintf(row->legal_basis, sizeof row->legal_basis, "%s", vouch_rule.legal_basis);
    memcpy(row->message_id, vouch_message_id, sizeof row->message_id);
    row->d = (store_delivery_t){.seq = 102,
                                .item_seq = 9,
                                .item_index = 2,
                                .recipient = row->recipient,
                                .message_id = row->message_id,
                                .sender = row->sender,
                                .sender_partner = row->sender_partner,
                                .rule_id = row->rule_id,
                                .rule_hash = row->rule_hash,
                                .purpose = row->purpose,
                                .legal_basis = row->legal_basis,
                                .accepted_at = NOW_S,
                                .expires_at = NOW_S + 86400,
                                .by_ref = 1};
}

/* Each way a row can differ from what was written, one at a time. */
enum vouch_change {
    VOUCH_AS_WRITTEN,
    VOUCH_SEQ_NOT_WRITTEN,
    VOUCH_OTHER_DELIVERY_RECIPIENT,
    VOUCH_ITEM_INDEX,
    VOUCH_ACCEPTED_AT,
    VOUCH_EXPIRES_AT,
    VOUCH_MESSAGE_ID,
    VOUCH_SENDER,
    VOUCH_SENDER_PARTNER,
    VOUCH_RULE_ID,
    VOUCH_RULE_HASH,
    VOUCH_PURPOSE,
    VOUCH_LEGAL_BASIS,
    VOUCH_TEXT_BYTE_MOVED,
    VOUCH_CASE_ID,
    VOUCH_CASE_EVENT,
    VOUCH_NOT_BY_REF,
    VOUCH_OTHER_ITEM,
    VOUCH_CHANGES
};

static void vouch_row_change(vouch_row_t *row, enum vouch_change change)
{
    store_delivery_t *d = &row->d;
    switch (change) {
    case VOUCH_AS_WRITTEN:
    case VOUCH_CHANGES:
        break;
    case VOUCH_SEQ_NOT_WRITTEN:
        d->seq = 103;
        break;
    case VOUCH_OTHER_DELIVERY_RECIPIENT: /* 102's row naming 101's recipient */
        snprintf(row->recipient, sizeof row->recipient, "%s", vouch_to_a.id);
        break;
    case VOUCH_ITEM_INDEX:
        d->item_index = 3;
        break;
    case VOUCH_ACCEPTED_AT:
        d->accepted_at--;
        break;
    case VOUCH_EXPIRES_AT:
        d->expires_at += 86400 * 365;
        break;
    case VOUCH_MESSAGE_ID:
        row->message_id[15] ^= 1;
        break;
    case VOUCH_SENDER:
        row->sender[0] = 'W';
        break;
    case VOUCH_SENDER_PARTNER:
        snprintf(row->sender_partner, sizeof row->sender_partner, "gemeente");
        break;
    case VOUCH_RULE_ID:
        snprintf(row->rule_id, sizeof row->rule_id, "woco-naar-om");
        break;
    case VOUCH_RULE_HASH:
        row->rule_hash[63] = row->rule_hash[63] == 'a' ? 'b' : 'a';
        break;
    case VOUCH_PURPOSE:
        snprintf(row->purpose, sizeof row->purpose, "Alles");
        break;
    case VOUCH_LEGAL_BASIS:
        snprintf(row->legal_basis, sizeof row->legal_basis, "Geen");
        break;
    case VOUCH_TEXT_BYTE_MOVED: /* "... tegengaan" + "Convenant" -> "... tegengaanC" + "onvenant" */
        snprintf(row->purpose, sizeof row->purpose, "%sC", vouch_rule.purpose);
        snprintf(row->legal_basis, sizeof row->legal_basis, "%s", vouch_rule.legal_basis + 1);
        break;
    case VOUCH_CASE_ID:
        snprintf(row->case_id, sizeof row->case_id, "Z-0001");
        d->case_id = row->case_id;
        break;
    case VOUCH_CASE_EVENT:
        d->is_case_event = 1;
        break;
    case VOUCH_NOT_BY_REF:
        d->by_ref = 0;
        break;
    case VOUCH_OTHER_ITEM:
        d->item_seq = 9 + DELIVER_KEPT_ITEMS; /* the same slot */
        break;
    }
}

/* deliver_kept_vouch: only a row that is exactly what the publish path
 * wrote, for a usable entry under the same policy, is vouched for, with
 * the mask it sealed; any column changed, and the row is opened. */
static void test_kept_vouches_only_for_rows_as_written(void **state)
{
    (void)state;
    test_item_t item;
    item_make(&item, "Vouched");
    deliver_kept_t *kept = deliver_kept_new();
    deliver_kept_envelope_t e = vouch_envelope();
    uint32_t masks[] = {vouch_rule.fields};
    for (int change = VOUCH_AS_WRITTEN; change < VOUCH_CHANGES; change++) {
        vouch_row_t row;
        vouch_row_make(&row);
        vouch_row_change(&row, (enum vouch_change)change);
        assert_int_equal(deliver_kept_add(kept, 9, item.decoded, masks, 1, 2, 0), 1);
        assert_int_equal(deliver_kept_envelope(kept, 9, &e), 1);
        uint32_t fields = 0xdead;
        /* pending: its turn has not committed */
        assert_int_equal(deliver_kept_vouch(kept, VOUCH_POLICY, VOUCH_GENERATION, &row.d, &fields),
                         0);
        deliver_kept_settle(kept, 1);
        int vouched = deliver_kept_vouch(kept, VOUCH_POLICY, VOUCH_GENERATION, &row.d, &fields);
        if (vouched != (change == VOUCH_AS_WRITTEN))
            fail_msg("change %d: vouched %d", change, vouched);
        assert_int_equal(fields, change == VOUCH_AS_WRITTEN ? vouch_rule.fields : 0xdead);
        /* under another policy, never; nor under a later one at the same
         * address (another generation) */
        assert_int_equal(
            deliver_kept_vouch(kept, VOUCH_OTHER_POLICY, VOUCH_GENERATION, &row.d, &fields), 0);
        assert_int_equal(
            deliver_kept_vouch(kept, VOUCH_POLICY, VOUCH_GENERATION + 1, &row.d, &fields), 0);
        deliver_kept_clear(kept);
        assert_int_equal(deliver_kept_vouch(kept, VOUCH_POLICY, VOUCH_GENERATION, &row.d, &fields),
                         0);
    }

    /* an entry without an envelope, or whose turn rolled back, vouches for nothing */
    vouch_row_t row;
    vouch_row_make(&row);
    uint32_t fields = 0;
    assert_int_equal(deliver_kept_add(kept, 9, item.decoded, masks, 1, 2, 0), 1);
    deliver_kept_settle(kept, 1);
    assert_int_equal(deliver_kept_vouch(kept, VOUCH_POLICY, VOUCH_GENERATION, &row.d, &fields), 0);
    assert_int_equal(deliver_kept_envelope(kept, 9, &e), 0); /* only while pending */
    deliver_kept_clear(kept);
    assert_int_equal(deliver_kept_add(kept, 9, item.decoded, masks, 1, 2, 0), 1);
    assert_int_equal(deliver_kept_envelope(kept, 9, &e), 1);
    deliver_kept_settle(kept, 0);
    assert_int_equal(deliver_kept_vouch(kept, VOUCH_POLICY, VOUCH_GENERATION, &row.d, &fields), 0);
    assert_int_equal(deliver_kept_envelope(kept, 10, &e), 0); /* no such entry */
    e.n = DELIVER_KEPT_DELIVERIES + 1;
    assert_int_equal(deliver_kept_envelope(kept, 9, &e), 0);
    assert_int_equal(deliver_kept_vouch(NULL, VOUCH_POLICY, VOUCH_GENERATION, &row.d, &fields), 0);
    deliver_kept_destroy(&kept);
    item_free(&item);
}

/* A Flow read after its connection closed (libzmq keeps what it had
 * received) does not take the principal's receiving: a later connection
 * could take that routing id. The same Flow on an open connection does. */
static void test_flow_of_a_closed_connection_is_ignored(void **state)
{
    (void)state;
    static const uint8_t rid[5] = {0, 1, 2, 3, 4};
    broker_t b;
    memset(&b, 0, sizeof b);
    b.sessions = sessions_new();
    assert_non_null(b.sessions);
    b.max_window = SCHAKEL_MAX_WINDOW;
    int over = 0;
    session_t *session =
        sessions_touch(b.sessions, rid, sizeof rid, "om/parket", "K", 0, 16, &over);
    assert_non_null(session);
    session->fd = 9;
    b.conns = conns_new();
    assert_non_null(b.conns);
    conns_closed(b.conns, 9); /* socket 9 */
    Schakel__Flow flow = SCHAKEL__FLOW__INIT;
    flow.has_window = 1;
    flow.window = 8;
    deliver_flow(&b, session, &flow);
    receiver_t *r = sessions_receiver(b.sessions, "om/parket");
    assert_true(r == NULL || r->session == NULL);
    conns_opened(b.conns, 9, 0); /* a new connection on it */
    deliver_flow(&b, session, &flow);
    r = sessions_receiver(b.sessions, "om/parket");
    assert_non_null(r);
    assert_ptr_equal(r->session, session);
    assert_int_equal(r->window, 8);
    conns_destroy(&b.conns);
    sessions_destroy(&b.sessions);
}

/* A Flow of om over max_connections 2 on connection `fd` (open), as the
 * broker reads one: its session, made on first use. */
static session_t *flow_on(broker_t *b, const uint8_t rid[5], int fd, uint32_t window)
{
    int over = 0;
    session_t *session = sessions_touch(b->sessions, rid, 5, "om/parket", "K", 0, 16, &over);
    assert_non_null(session);
    session->fd = fd;
    conns_opened(b->conns, fd, 0);
    conns_used(b->conns, fd, 0, "om/parket", "K");
    Schakel__Flow flow = SCHAKEL__FLOW__INIT;
    flow.has_window = 1;
    flow.window = window;
    deliver_flow(b, session, &flow);
    return session;
}

/* Last Flow wins while the principal's claims to receive are within its
 * connection cap; a Flow that would make them more (a standby that the
 * cap closed reconnects and sends Flow again) waits as a standby, and
 * receiving stays where it is with nothing sent again. A Flow kept with
 * a connection whose session ended (conns_keep_flow) is a claim too. */
static void test_flow_over_the_cap_of_claims_stands_by(void **state)
{
    (void)state;
    static const uint8_t rid_a[5] = {0, 'a', 'a', 'a', 'a'}, rid_b[5] = {0, 'b', 'b', 'b', 'b'},
                         rid_c[5] = {0, 'c', 'c', 'c', 'c'}, rid_d[5] = {0, 'd', 'd', 'd', 'd'};
    broker_t b;
    memset(&b, 0, sizeof b);
    b.sessions = sessions_new();
    b.conns = conns_new();
    assert_non_null(b.sessions);
    assert_non_null(b.conns);
    b.max_window = SCHAKEL_MAX_WINDOW;
    b.max_connections = 2;
    b.now_ms = 1000;
    session_t *a = flow_on(&b, rid_a, 7, 4);
    receiver_t *r = sessions_receiver(b.sessions, "om/parket");
    assert_non_null(r);
    assert_ptr_equal(r->session, a);
    b.now_ms = 2000;
    session_t *sb = flow_on(&b, rid_b, 8, 8); /* two claims: it takes over */
    assert_ptr_equal(r->session, sb);
    assert_int_equal(r->progress_ms, 2000);
    r->inflight = 2;
    r->cursor = 17;
    b.now_ms = 3000;
    session_t *c = flow_on(&b, rid_c, 9, 16); /* a third: it stands by */
    assert_ptr_equal(r->session, sb);
    assert_int_equal(r->window, 8);
    assert_int_equal(r->inflight, 2);
    assert_int_equal(r->cursor, 17);
    assert_int_equal(r->progress_ms, 2000);
    assert_true(c->flow_order > 0);

    /* a's session ends with its connection open, its Flow kept there; c's
     * ends for good: two sessions' claims and a kept one are still three */
    conns_keep_flow(b.conns, 7, a->flow_order, a->flow_window);
    sessions_drop(b.sessions, a);
    sessions_drop(b.sessions, c);
    conns_closed(b.conns, 9);
    session_t *d = flow_on(&b, rid_d, 10, 32);
    assert_ptr_equal(r->session, sb);
    assert_int_equal(r->inflight, 2);
    /* the kept Flow goes with its connection: d's next Flow takes over */
    conns_closed(b.conns, 7);
    Schakel__Flow flow = SCHAKEL__FLOW__INIT;
    flow.has_window = 1;
    flow.window = 32;
    deliver_flow(&b, d, &flow);
    assert_ptr_equal(r->session, d);
    assert_int_equal(r->window, 32);
    assert_int_equal(r->inflight, 0);
    assert_int_equal(r->cursor, 0);
    conns_destroy(&b.conns);
    sessions_destroy(&b.sessions);
}

/* After a reload the push decides again: revocations it queued under the
 * old policy are forgotten (the new one may allow those deliveries), and
 * every receiver starts again at its oldest unacked delivery, so that they
 * are looked at once more; without queued revocations nothing restarts. */
static void test_policy_change_forgets_queued_revocations(void **state)
{
    (void)state;
    static const uint8_t rid[5] = {0, 9, 9, 9, 9};
    broker_t b;
    memset(&b, 0, sizeof b);
    b.sessions = sessions_new();
    assert_non_null(b.sessions);
    int over = 0;
    session_t *session =
        sessions_touch(b.sessions, rid, sizeof rid, "om/parket", "K", 0, 16, &over);
    receiver_t *r = sessions_receive(b.sessions, session, 8);
    assert_non_null(r);
    r->cursor = 12;
    r->inflight = 3;
    r->highest_sent = 12;
    r->dirty = 0;
    deliver_policy_changed(&b); /* nothing queued: the push goes on where it is */
    assert_int_equal(r->cursor, 12);
    assert_int_equal(r->inflight, 3);
    b.n_revocations = 2;
    b.revocations[0].seq = 7;
    strcpy(b.revocations[0].recipient, "om/parket");
    b.revocations[1].seq = 9;
    strcpy(b.revocations[1].recipient, "om/parket");
    deliver_policy_changed(&b);
    assert_int_equal(b.n_revocations, 0);
    assert_int_equal(r->cursor, 0);
    assert_int_equal(r->inflight, 0);
    assert_int_equal(r->dirty, 1);
    assert_int_equal(r->highest_sent, 12); /* what comes again is flagged */
    sessions_destroy(&b.sessions);
}

/* A reload frees the policy whose principals and rules the kept
 * envelopes point into, and the next policy may be allocated where an
 * earlier one was (the vouch's address compare cannot tell them apart):
 * deliver_policy_changed wipes every entry, so that no envelope is read
 * after its policy is gone. */
static void test_policy_change_wipes_the_kept_envelopes(void **state)
{
    (void)state;
    test_item_t item;
    item_make(&item, "Reloaded");
    broker_t b;
    memset(&b, 0, sizeof b);
    b.sessions = sessions_new();
    assert_non_null(b.sessions);
    b.kept = deliver_kept_new();
    assert_non_null(b.kept);
    deliver_kept_envelope_t e = vouch_envelope();
    uint32_t masks[] = {vouch_rule.fields};
    assert_int_equal(deliver_kept_add(b.kept, 9, item.decoded, masks, 1, 2, 0), 1);
    assert_int_equal(deliver_kept_envelope(b.kept, 9, &e), 1);
    deliver_kept_settle(b.kept, 1);
    vouch_row_t row;
    vouch_row_make(&row);
    uint32_t fields = 0;
    assert_int_equal(deliver_kept_vouch(b.kept, VOUCH_POLICY, VOUCH_GENERATION, &row.d, &fields),
                     1);
    deliver_policy_changed(&b);
    assert_int_equal(deliver_kept_count(b.kept), 0);
    /* the same address again: nothing is left to vouch with */
    assert_int_equal(deliver_kept_vouch(b.kept, VOUCH_POLICY, VOUCH_GENERATION, &row.d, &fields),
                     0);
    deliver_kept_destroy(&b.kept);
    sessions_destroy(&b.sessions);
    item_free(&item);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kept_content_is_the_stores_reduction),
        cmocka_unit_test(test_kept_usable_only_after_commit),
        cmocka_unit_test(test_kept_wiped_after_last_push),
        cmocka_unit_test(test_kept_bounded_in_number),
        cmocka_unit_test(test_kept_bounded_in_bytes),
        cmocka_unit_test(test_kept_bounded_in_age),
        cmocka_unit_test(test_kept_refusals_and_clear),
        cmocka_unit_test(test_kept_vouches_only_for_rows_as_written),
        cmocka_unit_test(test_flow_of_a_closed_connection_is_ignored),
        cmocka_unit_test(test_flow_over_the_cap_of_claims_stands_by),
        cmocka_unit_test(test_policy_change_forgets_queued_revocations),
        cmocka_unit_test(test_policy_change_wipes_the_kept_envelopes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
