/*
 * store_fixture.h — fixtures shared by the unit tests of the store and of
 * the audit trail: a mkdtemp() folder under /tmp holding a store, opening a
 * store or a reader, raw SQLite handles on a store's file, and the keys a
 * test group signs with. Every helper fails the running cmocka test on error,
 * except store_fixture_make_dir, which returns -1 for setups that must not.
 */
#ifndef SCHAKEL_TESTS_STORE_FIXTURE_H
#define SCHAKEL_TESTS_STORE_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "keys.h"
#include "store.h"
#include "store_v12_schema.h"

/* A test's own folder and the store opened at path (dir/store.db). */
typedef struct store_fixture {
    char dir[64];
    char path[128];
    store_t *store;
} store_fixture_t;

/* Removes the plain files in dir, then dir itself. Best effort: a missing
 * folder or a file that cannot be removed is passed over (a teardown must
 * not fail the test it cleans up after). Not recursive. */
void store_fixture_remove_tree(const char *dir);

/* Creates a fresh folder "/tmp/<name>-XXXXXX" with mkdtemp() and writes its
 * path into dir (dirlen bytes). Returns 0, or -1 if the name does not fit
 * or mkdtemp fails; it fails no test, so a setup may report it instead. */
int store_fixture_make_dir(char *dir, size_t dirlen, const char *name);

/* store_open(path, key) of the store at path (STORE_OPEN_EXISTING), failing
 * the test with the store's message if it cannot open. The returned handle
 * is the caller's (store_close). */
store_t *store_fixture_open(const char *path, const uint8_t key[STORE_KEY_BYTES]);

/* The same for a new store at path (STORE_OPEN_CREATE: nothing may be
 * there yet). */
store_t *store_fixture_create(const char *path, const uint8_t key[STORE_KEY_BYTES]);

/* store_open_reader(path, key), key may be NULL (a keyless reader), failing
 * the test with the store's message if it cannot open. The handle is the
 * caller's (store_close). */
store_t *store_fixture_open_reader(const char *path, const uint8_t *key);

/* A new fixture: a folder made by store_fixture_make_dir(name) and a new
 * store made in it with key. Fails the test if any step fails. The fixture is
 * the caller's: release it with store_fixture_destroy. */
store_fixture_t *store_fixture_new(const char *name, const uint8_t key[STORE_KEY_BYTES]);

/* Closes the fixture's store, removes its folder, frees it and sets *fixture
 * to NULL. Safe on NULL and on *fixture == NULL. */
void store_fixture_destroy(store_fixture_t **fixture);

/* A cmocka teardown: store_fixture_destroy on the fixture in *state (as
 * left there by a setup that stored store_fixture_new's result). Returns 0. */
int store_fixture_teardown(void **state);

/* A raw read-write SQLite connection to the existing file at path, behind the
 * store's back; fails the test if the file cannot be opened (it is never
 * created). The handle is the caller's (sqlite3_close). */
sqlite3 *store_fixture_raw_open(const char *path);

/* The query plan of sql on the file at path (a connection of its own), the
 * detail of each step joined by " | " into out. Fails the test when sql
 * does not prepare. */
void store_fixture_plan(const char *path, const char *sql, char *out, size_t outlen);

/* As store_fixture_raw_open, but creates the file if it does not exist (as
 * sqlite3_open does). */
sqlite3 *store_fixture_raw_open_or_create(const char *path);

/* Runs sql (one or more statements) on a raw connection to the existing
 * file at path, then closes it; fails the test on any SQLite error. */
void store_fixture_raw_exec(const char *path, const char *sql);

/* Runs sql (one or more statements) on db; fails the test with SQLite's
 * message if any statement fails. */
void store_fixture_db_exec(sqlite3 *db, const char *sql);

/* The first column of the first row that sql yields on db, as an integer;
 * fails the test if sql does not prepare or yields no row. */
int64_t store_fixture_db_int(sqlite3 *db, const char *sql);

/* SQL that gives the publishes table of a current store the shape it had
 * before schema 8 (evidence in clear): the sealed evidence column gone, a
 * signature and a root column (zeros in rows already there). Run it with
 * the rest of a downgrade, before setting the older user_version. */
#define STORE_FIXTURE_PUBLISHES_BEFORE_8                                                           \
    "ALTER TABLE publishes DROP COLUMN evidence;"                                                  \
    "ALTER TABLE publishes ADD COLUMN signature BLOB NOT NULL DEFAULT x'"                          \
    "0000000000000000000000000000000000000000000000000000000000000000"                             \
    "0000000000000000000000000000000000000000000000000000000000000000'"                            \
    " CHECK (length(signature) = 64);"                                                             \
    "ALTER TABLE publishes ADD COLUMN root BLOB NOT NULL DEFAULT x'"                               \
    "0000000000000000000000000000000000000000000000000000000000000000'"                            \
    " CHECK (length(root) = 32);"

/* SQL that gives the acked-delivery index and the delivery counter of a
 * current store the shape they had before schema 12: audit_acks, a row
 * per acked seq (each run of audit_ack_ranges spelled out), append-only,
 * and no delivery_seq_high in meta (sqlite_sequence kept the mark). Run it
 * with the rest of a downgrade, before setting the older user_version. */
#define STORE_FIXTURE_ACKS_BEFORE_12                                                               \
    "CREATE TABLE audit_acks ("                                                                    \
    "  delivery_seq INTEGER PRIMARY KEY CHECK (delivery_seq > 0),"                                 \
    "  audit_seq INTEGER NOT NULL CHECK (audit_seq > 0));"                                         \
    "INSERT INTO audit_acks (delivery_seq, audit_seq)"                                             \
    " WITH RECURSIVE run(seq, last, entry) AS (SELECT first_seq, last_seq, audit_seq"              \
    " FROM audit_ack_ranges UNION ALL SELECT seq + 1, last, entry FROM run WHERE seq < last)"      \
    " SELECT seq, entry FROM run;"                                                                 \
    "CREATE TRIGGER audit_acks_append_only_update BEFORE UPDATE ON audit_acks"                     \
    " BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;"                           \
    "CREATE TRIGGER audit_acks_append_only_delete BEFORE DELETE ON audit_acks"                     \
    " BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;"                           \
    "DROP TRIGGER audit_ack_ranges_append_only_update;"                                            \
    "DROP TRIGGER audit_ack_ranges_append_only_delete;"                                            \
    "DROP TABLE audit_ack_ranges;"                                                                 \
    "DELETE FROM meta WHERE name = 'delivery_seq_high';"

/* SQL that gives the mailbox of a current store the shape it had before
 * schema 13: the deliveries and deliveries_set_aside tables of schema 12
 * (STORE_V12_TABLES_SQL), empty, and no mailbox tables. The mailbox rows go with
 * their tables: a test that needs deliveries writes them after it
 * (store_fixture_delivery_put). Run it with the rest of a downgrade,
 * before setting the older user_version. */
#define STORE_FIXTURE_MAILBOX_BEFORE_13                                                            \
    "DROP TABLE mailbox;"                                                                          \
    "DROP TABLE mailbox_set_aside;" STORE_V12_TABLES_SQL

/* A delivery's associated data as store.h documents it, built here apart
 * from the store's own code: STORE_FIXTURE_LAYOUT_ENVELOPE (schema 9: the
 * envelope's BLAKE2b-256 digest bound) or STORE_FIXTURE_LAYOUT_BEFORE_9
 * (schema 8 and before: none). */
enum store_fixture_layout { STORE_FIXTURE_LAYOUT_BEFORE_9 = 1, STORE_FIXTURE_LAYOUT_ENVELOPE = 2 };

/* Open delivery seq's sealed body in the file at path with key under the
 * associated data `layout` makes of the row's columns as they are now:
 * 0 with the body in out (cap bytes; *len its length), or -1 when it does
 * not authenticate. Fails the test when there is no such row. */
int store_fixture_delivery_open(const char *path, const uint8_t key[STORE_KEY_BYTES], int64_t seq,
                                enum store_fixture_layout layout, uint8_t *out, size_t cap,
                                size_t *len);

/* Write delivery d into the deliveries table of the store file db (of
 * schema 12 or before: STORE_FIXTURE_MAILBOX_BEFORE_13) as a broker of
 * schema 9 to 12 queued it: every column from d, seq d->seq, its body
 * sealed with key under the associated data of
 * STORE_FIXTURE_LAYOUT_ENVELOPE (the little-endian field mask d->fields
 * for a delivery by reference, else d->body). A NULL sender_partner,
 * rule or purpose text is refused by the table, as by the broker. Fails
 * the test on any error. */
void store_fixture_delivery_put(sqlite3 *db, const uint8_t key[STORE_KEY_BYTES],
                                const store_delivery_t *d);

/* Re-seal every delivery of the (closed) store at path from the current
 * layout to the one of schema 8, as a broker of that schema had sealed
 * them. Fails the test if one does not open. Returns how many. Run it
 * with the rest of a downgrade, before setting the older user_version. */
size_t store_fixture_deliveries_before_9(const char *path, const uint8_t key[STORE_KEY_BYTES]);

/* Generates the key pair dir/name.{key,pub} with keys_generate and loads its
 * secret half. Fails the test on any error. The pair is the caller's
 * (keys_destroy). */
keypair_t *store_fixture_make_key(const char *dir, const char *name);

/* What a test group shares: keys_init(), a random store_key, a fresh folder
 * "/tmp/<name>-XXXXXX" in group_dir (group_dir_len bytes) and the broker's
 * key pair made there as "broker" into *broker_key (the caller's: keys_destroy,
 * then store_fixture_remove_tree(group_dir)). Fails the test on any error. */
void store_fixture_group_keys(char *group_dir, size_t group_dir_len, const char *name,
                              uint8_t store_key[STORE_KEY_BYTES], keypair_t **broker_key);

#endif
