/*
 * mailbox_fixture.c — the helpers the unit tests of the mailbox rows
 * share (mailbox_fixture.h): a store with the mailbox tables, raw reads
 * and writes on its file, publishes and rows made through the store's
 * API. Trusts the test that calls it; every failure fails that test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>
#include <sqlite3.h>

#include "mailbox_fixture.h"

uint8_t mailbox_fixture_key[STORE_KEY_BYTES];

int mailbox_fixture_init(void)
{
    if (sodium_init() < 0)
        return -1;
    randombytes_buf(mailbox_fixture_key, sizeof mailbox_fixture_key);
    return 0;
}

int mailbox_fixture_setup(void **state, const char *name)
{
    fixture_t *f = store_fixture_new(name, mailbox_fixture_key);
    if (store_mailbox_schema(f->store) != 0)
        fail_msg("mailbox schema: %s", store_errmsg(f->store));
    *state = f;
    return 0;
}

void mailbox_fixture_reopen(fixture_t *f)
{
    store_close(&f->store);
    f->store = store_fixture_open(f->path, mailbox_fixture_key);
}

int64_t mailbox_fixture_raw_int(const char *path, const char *sql)
{
    sqlite3 *db = store_fixture_raw_open(path);
    int64_t value = store_fixture_db_int(db, sql);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return value;
}

int64_t mailbox_fixture_raw_intf(const char *path, const char *fmt, ...)
{
    char sql[256];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    assert_true(len > 0 && (size_t)len < sizeof sql);
    return mailbox_fixture_raw_int(path, sql);
}

void mailbox_fixture_raw_execf(const char *path, const char *fmt, ...)
{
    char sql[512];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    assert_true(len > 0 && (size_t)len < sizeof sql);
    store_fixture_raw_exec(path, sql);
}

void mailbox_fixture_item_text(const mailbox_published_t *p, size_t k, char *out, size_t len)
{
    snprintf(out, len, "item %u of publish %lld", (unsigned)k, (long long)p->publish_id);
}

void mailbox_fixture_publish(store_t *store, uint8_t tag, size_t n_items, mailbox_published_t *p)
{
    uint8_t hash[32] = {tag}, sig[64] = {tag}, root[32] = {tag};
    assert_true(n_items <= sizeof p->item_seq / sizeof p->item_seq[0]);
    memset(p, 0, sizeof *p);
    p->message_id[0] = tag;
    p->n_items = n_items;
    p->publish_id = store_publish_add(store, SENDER, p->message_id, hash, sig, root, NOW);
    assert_true(p->publish_id > 0);
    for (size_t k = 0; k < n_items; k++) {
        char text[64];
        mailbox_fixture_item_text(p, k, text, sizeof text);
        p->item_seq[k] =
            store_item_add(store, p->publish_id, (uint32_t)k, (const uint8_t *)text, strlen(text));
        assert_true(p->item_seq[k] > 0);
    }
}

const store_mailbox_rule_t mailbox_fixture_two_rules[2] = {
    {"gemeente-naar-politie", "aa11", "Signalering", "Gemeentewet art. 172", NOW + DAY, 0x3},
    {"gemeente-naar-zorg", "bb22", "Zorg, en\nnazorg", "Wmo 2015: art. 5.2", NOW + 30 * DAY, 0x5},
};

store_mailbox_row_t mailbox_fixture_row_of(const mailbox_published_t *p, const char *recipient,
                                           uint64_t first_seq, const size_t *items,
                                           const uint32_t *slots, size_t n,
                                           store_mailbox_entry_t *entries)
{
    for (size_t k = 0; k < n; k++)
        entries[k] =
            (store_mailbox_entry_t){(uint64_t)p->item_seq[items[k]], (uint32_t)items[k], slots[k]};
    return (store_mailbox_row_t){
        .first_seq = first_seq,
        .recipient = recipient,
        .sender = SENDER,
        .sender_partner = PARTNER,
        .message_id = p->message_id,
        .accepted_at = NOW,
        .entries = entries,
        .n = n,
        .rules = mailbox_fixture_two_rules,
        .n_rules = 2,
    };
}

int64_t mailbox_fixture_two_rows(fixture_t *f, mailbox_published_t *p)
{
    store_mailbox_entry_t e1[4], e2[2];
    static const size_t items1[4] = {0, 1, 2, 3}, items2[2] = {1, 3};
    static const uint32_t slots1[4] = {0, 1, 0, 1}, slots2[2] = {1, 1};
    assert_int_equal(store_begin(f->store), 0);
    mailbox_fixture_publish(f->store, 1, 4, p);
    int64_t first = store_delivery_seqs_reserve(f->store, 6);
    assert_true(first > 0);
    store_mailbox_row_t r1 =
        mailbox_fixture_row_of(p, POLITIE, (uint64_t)first, items1, slots1, 4, e1);
    store_mailbox_row_t r2 =
        mailbox_fixture_row_of(p, ZORG, (uint64_t)first + 4, items2, slots2, 2, e2);
    if (store_mailbox_row_add(f->store, &r1) != 0 || store_mailbox_row_add(f->store, &r2) != 0)
        fail_msg("row add: %s", store_errmsg(f->store));
    assert_int_equal(store_commit(f->store), 0);
    return first;
}
