/*
 * store_fixture_v12.h — a store of schema 12 made from one of today's, for
 * the tests of the migrations: the deliveries tables as schema 12 held
 * them (one row per delivery, each sealed as a broker of schema 9 to 12
 * sealed it), rebuilt from the mailbox rows a store of schema 13 made with
 * today's API holds. Every failure fails the running cmocka test.
 */
#ifndef SCHAKEL_TESTS_STORE_FIXTURE_V12_H
#define SCHAKEL_TESTS_STORE_FIXTURE_V12_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* What store_fixture_back_to_12 wrote. */
typedef struct store_fixture_v12 {
    size_t deliveries; /* rows of deliveries: the pending deliveries of the mailbox rows */
    size_t
        set_aside; /* rows of deliveries_set_aside: the deliveries of the set-aside rows not done */
} store_fixture_v12_t;

/* Turn the closed schema-13 store at path (under key) into what schema 12
 * held, in one transaction of the store's own connection: `deliveries` and
 * `deliveries_set_aside` made as the schema steps made them
 * (STORE_V12_TABLES_SQL); one deliveries row per pending delivery of each
 * mailbox row (its clear columns from the row, its rule's from the row's
 * rule lines, its body the field mask of its rule slot as 4 bytes
 * little-endian, or a case row's body, written by
 * store_fixture_delivery_put: sealed under the layout of schema 9 to 12,
 * its associated data built apart from the store's code);
 * one deliveries_set_aside row per delivery not done of each set-aside row
 * (its columns likewise, body, expires_at, when and why copied as they
 * are; a row whose rule lines or items do not parse gives one row at its
 * first seq with what it has); sqlite_sequence's row of deliveries at the
 * highest delivery seq handed out, as AUTOINCREMENT left it; the mailbox
 * tables dropped and user_version 12. Every mailbox row must open: a row
 * that does not fails the test. The store is closed again. *out (may be
 * NULL) says how many rows were written. */
void store_fixture_back_to_12(const char *path, const uint8_t key[STORE_KEY_BYTES],
                              store_fixture_v12_t *out);

#endif
