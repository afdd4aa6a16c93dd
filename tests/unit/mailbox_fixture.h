/*
 * mailbox_fixture.h — what the unit tests of the mailbox rows
 * (test_store_mailbox*.c) share: the names and times they speak of, a
 * store in its own folder under a key random per run, reads and writes
 * on its file behind the store's back, publishes of numbered items, and
 * rows of them under two rule lines. Every helper fails the running
 * cmocka test on error.
 */
#ifndef SCHAKEL_TESTS_MAILBOX_FIXTURE_H
#define SCHAKEL_TESTS_MAILBOX_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"
#include "store_fixture.h"
#include "store_mailbox.h"

#define SENDER "gemeente/meldingen"
#define PARTNER "gemeente"
#define POLITIE "politie/signalen"
#define ZORG "zorg/wijkteam"
#define NOW 1750000000LL
#define DAY 86400LL

typedef store_fixture_t fixture_t;

/* The store key of every test of the run (mailbox_fixture_init). */
extern uint8_t mailbox_fixture_key[STORE_KEY_BYTES];

/* sodium_init() and a random mailbox_fixture_key, for main() before the
 * tests run. Returns 0, or -1 if libsodium does not start. */
int mailbox_fixture_init(void);

/* A cmocka setup's work: a fixture (store_fixture_new(name), under
 * mailbox_fixture_key) with the mailbox tables made, into *state (the
 * teardown's: store_fixture_teardown). Returns 0. */
int mailbox_fixture_setup(void **state, const char *name);

/* Close the fixture's store and open it again (what it learnt in memory,
 * learnt again from the file). */
void mailbox_fixture_reopen(fixture_t *f);

/* The first column of the first row of sql, on a raw connection to the
 * file at path, as an integer. */
int64_t mailbox_fixture_raw_int(const char *path, const char *sql);

/* The same of the SQL fmt makes (at most 255 bytes). */
__attribute__((format(printf, 2, 3))) int64_t mailbox_fixture_raw_intf(const char *path,
                                                                       const char *fmt, ...);

/* The SQL fmt makes (at most 511 bytes) run on a raw connection to the
 * file at path (store_fixture_raw_exec). */
__attribute__((format(printf, 2, 3))) void mailbox_fixture_raw_execf(const char *path,
                                                                     const char *fmt, ...);

/* A publish of n_items items (at most 8), its id message_id[0] = tag. */
typedef struct mailbox_published {
    uint8_t message_id[16];
    int64_t publish_id;
    int64_t item_seq[8];
    size_t n_items;
} mailbox_published_t;

/* Item k's bytes: "item <k> of publish <publish id>", into out (len bytes). */
void mailbox_fixture_item_text(const mailbox_published_t *p, size_t k, char *out, size_t len);

/* Publish n_items items (mailbox_fixture_item_text) from SENDER at NOW,
 * inside the open transaction, into *p. */
void mailbox_fixture_publish(store_t *store, uint8_t tag, size_t n_items, mailbox_published_t *p);

/* Two rule lines: a short one (fields 0x3, due at NOW + DAY) and a long
 * one (fields 0x5, due at NOW + 30 days, a purpose with a newline and a
 * comma in it). */
extern const store_mailbox_rule_t mailbox_fixture_two_rules[2];

/* A row of p's items items[0 .. n) for recipient at first_seq, entry k
 * under slot slots[k] of mailbox_fixture_two_rules, its entries written
 * into entries (n of them: the row points there). */
store_mailbox_row_t mailbox_fixture_row_of(const mailbox_published_t *p, const char *recipient,
                                           uint64_t first_seq, const size_t *items,
                                           const uint32_t *slots, size_t n,
                                           store_mailbox_entry_t *entries);

/* The usual start: one publish of 4 items (tag 1); POLITIE gets items
 * 0..3 under slots 0,1,0,1 at seqs first .. first+3 (its row due at
 * NOW + DAY), ZORG items 1 and 3 under slot 1 at first+4, first+5 (due
 * at NOW + 30 days). Committed. Returns first. */
int64_t mailbox_fixture_two_rows(fixture_t *f, mailbox_published_t *p);

#endif
