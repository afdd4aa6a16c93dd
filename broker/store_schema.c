/*
 * store_schema.c — the store's schema: its version, the migration steps and
 * their prechecks, the connection settings and PRAGMAs every store runs
 * under, and the store epoch (the seq counters read at open are
 * store_counters.c's). Trusts store.c for an open connection and nothing
 * in the file: a newer or negative version or a PRAGMA SQLite ignored
 * refuses the open. Errors are -1 with store_errmsg set, as everywhere in
 * the store.
 */
#include <sodium.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "store_internal.h"
#include "store_mailbox.h"

/* The schema version this code writes and understands (PRAGMA user_version).
 * A store with a higher version was written by a newer schakeld: refused. */
#define STORE_SCHEMA_VERSION 13

/* The page size of a new store (store_schema_configure). */
#define STORE_PAGE_BYTES_TEXT "8192"

/*
 * Schema migrations: step i takes a store from user_version i to i + 1 and
 * ends by setting user_version. store_open runs the missing steps in one
 * transaction, so a store is at one version or the next, never between. A
 * step may have a precheck that refuses a store it cannot migrate.
 *
 * Why deliveries repeat sender, sender_partner, message_id, item_index and
 * accepted_at instead of joining items and publishes at scan time: the
 * mailbox scan is the hot path (every reconnect, every credit refill) and
 * this way it is a single range over the (recipient, seq) index plus one
 * rowid lookup per row, in one table. A delivery row is also what the
 * recipient was given, under which rule and purpose (copied at decision
 * time, since policies change), so it stands on its own as a record.
 * store_delivery_add copies the fields from the item's own rows and refuses
 * a caller whose values disagree, so the copies cannot drift.
 *
 * Seqs: items and deliveries get explicit seqs from counters kept in memory
 * (the associated data of a body names its seq, so the seq must be known
 * before the insert). AUTOINCREMENT keeps sqlite_sequence at the highest
 * item seq ever inserted, and meta's delivery_seq_high (since schema 12;
 * sqlite_sequence before) at the highest delivery seq, from which the
 * counters start at open, so a seq is never reused even after the highest
 * delivery was acked or expired: an Ack for an old seq can never remove a
 * newer delivery.
 *
 * Retention: deliveries carry their rule's expires_at; a trigger raises the
 * item's and the publish's expires_at to the latest of their deliveries
 * (they start at the publish's accepted_at). Expiry walks the expires_at
 * indexes; the index on deliveries.item_seq serves both the "still
 * referenced?" test and the foreign-key check when an item is deleted (for
 * publishes, the UNIQUE (publish_id, item_index) index does). Tombstones
 * record expired deliveries without content and without foreign keys: what
 * they name is gone.
 *
 * Sealed columns: items.body, deliveries.body, publishes.evidence (the
 * signed root and the signature, since version 8), cases.title,
 * case_events.body and meta.value of the key check and the subject key
 * (the store epoch's and its floor seq's are in clear: every client is told them). A
 * publish's content hash is stored as a keyed tag (store_content_tag).
 * Every other column is in clear because routing or idempotency needs it
 * (store.h lists them); tombstones hold no content.
 *
 * Step 1 -> 2 seals bodies. Version 1 stored them in clear and cannot be
 * sealed in SQL, so the step takes only an empty version-1 store (there
 * were never deployed ones) and refuses one that holds publishes.
 *
 * Step 2 -> 3 adds the audit trail (store_audit.c, audit.c): entries with
 * explicit seqs (dense from 1; audit.c assigns them in the transaction,
 * so a rolled-back seq is used again: its entry never existed), each with
 * its chain hash, and signed checkpoints. Metadata only, in clear, so that
 * it can be verified without the store key; the subject appears only as a
 * keyed tag (store_subject_tag), as it is sealed content. Partial indexes
 * on subject_tag (the data-subject export) and on delivery_seq (a delivery's ack and
 * expiry) hold only the rows that have one. Triggers refuse UPDATE and
 * DELETE: nothing in the broker rewrites history, and a bug that tried
 * would fail rather than break the chain.
 *
 * Step 3 -> 4 adds cases (store_case.c). A case's number (the digits of
 * its id "C-00000042") is explicit, from a counter like the seqs, because
 * the sealed title's associated data names the id; AUTOINCREMENT keeps
 * numbers from being reused. Members are a rowid table so that the member
 * list comes out in the order partners were added (the lead first);
 * (partner, case_id) serves "my cases". Events are rows of the case's
 * timeline, sealed, UNIQUE (case_id, event_seq) giving both the order and
 * the lookup; a trigger keeps cases.last_event_seq at the last one, in the
 * same statement. Deliveries gain case_id (NULL for signals, a foreign
 * key, so no delivery names a case that is gone) and is_case_event, with a
 * partial index on (case_id, recipient) that holds only case deliveries
 * (leaving members' deliveries are dropped through it; a case's expiry
 * updates through it). case_items ties the items of a case's commands to
 * it, filled by a trigger from case deliveries (and store_case_item_link),
 * so that a close can set their retention too; a second trigger raises
 * such an item and its publish to the case's expiry. Every case table
 * cascades from cases, so the sweep removes a case with one DELETE once
 * its events and deliveries are gone.
 *
 * Step 4 -> 5 adds deliveries by reference (by_ref = 1, signals only):
 * the row's sealed body is then the 4-byte field mask of the deciding rule,
 * and the content is the item's own sealed bytes reduced to that mask when
 * it is pushed. An item is thus written once whatever its fan-out, instead
 * of once more per recipient. Existing rows keep their bodies (by_ref 0).
 * The two triggers on inserted deliveries go: store.c raises an item's
 * (and its publish's) retention once for all its deliveries in a
 * transaction instead of twice per delivery, and ties a case delivery's
 * item to its case itself. A delivery is then one single-row INSERT, for
 * which SQLite keeps no statement journal (an undo copy of every page the
 * statement touches, which cost more than the insert).
 *
 * Step 5 -> 6 makes one "delivery.acked" entry record many acks: a
 * recipient's acks of one turn go into one entry whose new column
 * delivery_seqs lists them ("7,9,12", store_audit_seqs_parse), instead of
 * an entry per seq in delivery_seq. The column is nullable and encoded
 * only when present, so every entry written before hashes as it did.
 * audit_acks (by runs in audit_ack_ranges since step 12) maps each
 * listed seq to its entry (the data-subject export's lookup, O(log n));
 * it is derived from the entries, written in the same
 * transaction, append-only like them, and audit_verify checks that the
 * two agree. Entries written before keep delivery_seq, found through
 * audit_by_delivery as before; new acked entries leave it empty, so they
 * cost no row in that index.
 *
 * Step 6 -> 7 makes one "delivery.queued" entry record all deliveries of
 * one item: the new column deliveries lists them with their rules
 * (store_audit_deliveries_parse), and the entry leaves the per-delivery
 * columns (recipient, delivery_seq, rule, purpose, ...) empty. Nullable and
 * encoded only when present, so every entry written before hashes as it
 * did. No index by delivery seq: the subject export finds a queued entry
 * by its subject tag and reads the seqs from the list, and nothing else
 * looks a queued entry up by delivery.
 *
 * Step 7 -> 8 seals a publish's signature and signed root and keys its
 * content hash (store_migrate_evidence, in C once the keys are
 * loaded).
 *
 * Step 8 -> 9 binds a delivery's envelope (sender, sender partner, message
 * id, item index, accepted_at, rule id and hash, purpose, legal basis,
 * expires_at: what the Deliver frame tells the recipient) to its sealed
 * body: the associated data takes the envelope's BLAKE2b-256 digest,
 * under new tags (store.h). No column changes; every waiting delivery is
 * re-sealed in C (store_migrate_deliveries), and one that does not
 * open under the old layout is set aside (step 10). A case's close, which
 * sets its deliveries' expires_at, re-seals them since (store_case.c).
 *
 * Step 9 -> 10 adds deliveries_set_aside: a waiting delivery that does not
 * authenticate (its body, its envelope, or its item's content: damage or
 * tampering outside the broker) is moved there, columns untouched but an
 * expires_at bounded by its item's (STORE_SET_ASIDE_MOVE_SQL), with
 * set_aside_at and reason, so that it no longer holds up its recipient's
 * mailbox (store_delivery_set_aside). The columns keep no type or
 * constraint (declared without type, SQLite keeps each value as it
 * comes, so the bytes are the row's own) and no foreign key, as
 * tombstones: the item and the case a row names stay while it does
 * (the expiry of items and cases waits for it), and it goes at its
 * expires_at with a tombstone. seq is the delivery's and stays unique
 * among every delivery (the counters read this table too).
 *
 * Step 11 -> 12 makes the acked-delivery index ranges: audit_ack_ranges
 * has a row per run of consecutive seqs in an entry's delivery_seqs
 * (first_seq, last_seq -> the entry), so an entry that acks a batch in
 * order costs one index row instead of one per seq. A seq's row is the
 * one with the greatest first_seq at most the seq, if its last_seq
 * reaches it: one descent. The rows never overlap (store_audit_append
 * refuses a seq indexed before; audit_verify checks it). The rows of
 * audit_acks become ranges in C (store_audit_ranges_migrate, for its
 * progress reports), then the table goes. The same step moves the
 * highest delivery seq handed out from sqlite_sequence to meta
 * (delivery_seq_high, an integer), written once per transaction that adds
 * deliveries, at its commit (store_delivery_high_flush), since a range of
 * seqs written in one row (docs/design/mailbox.md) cannot keep
 * AUTOINCREMENT's mark; it starts at the highest of sqlite_sequence and
 * every seq a table holds, and never goes lower than a value the row had
 * (a store whose version was set back by hand has one).
 */
typedef struct schema_step {
    const char *sql;
    int (*precheck)(store_t *store);
} schema_step_t;

static int schema_v1_is_empty(store_t *store);

static const schema_step_t schema_steps[STORE_SCHEMA_VERSION] = {
    /* 0 -> 1 */
    {"CREATE TABLE IF NOT EXISTS publishes ("
     "  id INTEGER PRIMARY KEY,"
     "  sender TEXT NOT NULL,"
     "  message_id BLOB NOT NULL CHECK (length(message_id) = 16),"
     "  content_hash BLOB NOT NULL CHECK (length(content_hash) = 32),"
     "  signature BLOB NOT NULL CHECK (length(signature) = 64),"
     "  root BLOB NOT NULL CHECK (length(root) = 32),"
     "  accepted_at INTEGER NOT NULL,"
     "  reply BLOB,"
     "  UNIQUE (sender, message_id)"
     ");"
     "CREATE TABLE IF NOT EXISTS items ("
     "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
     "  publish_id INTEGER NOT NULL REFERENCES publishes(id),"
     "  item_index INTEGER NOT NULL CHECK (item_index >= 0),"
     "  body BLOB NOT NULL,"
     "  UNIQUE (publish_id, item_index)"
     ");"
     "CREATE TABLE IF NOT EXISTS deliveries ("
     "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
     "  recipient TEXT NOT NULL,"
     "  item_seq INTEGER NOT NULL REFERENCES items(seq),"
     "  sender TEXT NOT NULL,"
     "  sender_partner TEXT NOT NULL,"
     "  message_id BLOB NOT NULL CHECK (length(message_id) = 16),"
     "  item_index INTEGER NOT NULL,"
     "  accepted_at INTEGER NOT NULL,"
     "  rule_id TEXT NOT NULL,"
     "  rule_hash TEXT NOT NULL,"
     "  purpose TEXT NOT NULL,"
     "  legal_basis TEXT NOT NULL,"
     "  expires_at INTEGER NOT NULL,"
     "  body BLOB NOT NULL"
     ");"
     "CREATE INDEX IF NOT EXISTS deliveries_by_recipient ON deliveries (recipient, seq);"
     "PRAGMA user_version = 1;",
     NULL},
    /* 1 -> 2: sealed bodies, retention, tombstones, the key check */
    {"DROP TABLE deliveries;"
     "DROP TABLE items;"
     "DROP TABLE publishes;"
     "CREATE TABLE meta ("
     "  name TEXT PRIMARY KEY,"
     "  value BLOB NOT NULL"
     ") WITHOUT ROWID;"
     "CREATE TABLE publishes ("
     "  id INTEGER PRIMARY KEY,"
     "  sender TEXT NOT NULL,"
     "  message_id BLOB NOT NULL CHECK (length(message_id) = 16),"
     "  content_hash BLOB NOT NULL CHECK (length(content_hash) = 32),"
     "  signature BLOB NOT NULL CHECK (length(signature) = 64),"
     "  root BLOB NOT NULL CHECK (length(root) = 32),"
     "  accepted_at INTEGER NOT NULL,"
     "  expires_at INTEGER NOT NULL,"
     "  reply BLOB,"
     "  UNIQUE (sender, message_id)"
     ");"
     "CREATE INDEX publishes_by_expiry ON publishes (expires_at);"
     "CREATE TABLE items ("
     "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
     "  publish_id INTEGER NOT NULL REFERENCES publishes(id),"
     "  item_index INTEGER NOT NULL CHECK (item_index >= 0),"
     "  expires_at INTEGER NOT NULL,"
     "  body BLOB NOT NULL,"
     "  UNIQUE (publish_id, item_index)"
     ");"
     "CREATE INDEX items_by_expiry ON items (expires_at);"
     "CREATE TABLE deliveries ("
     "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
     "  recipient TEXT NOT NULL,"
     "  item_seq INTEGER NOT NULL REFERENCES items(seq),"
     "  sender TEXT NOT NULL,"
     "  sender_partner TEXT NOT NULL,"
     "  message_id BLOB NOT NULL CHECK (length(message_id) = 16),"
     "  item_index INTEGER NOT NULL,"
     "  accepted_at INTEGER NOT NULL,"
     "  rule_id TEXT NOT NULL,"
     "  rule_hash TEXT NOT NULL,"
     "  purpose TEXT NOT NULL,"
     "  legal_basis TEXT NOT NULL,"
     "  expires_at INTEGER NOT NULL,"
     "  body BLOB NOT NULL"
     ");"
     "CREATE INDEX deliveries_by_recipient ON deliveries (recipient, seq);"
     "CREATE INDEX deliveries_by_expiry ON deliveries (expires_at);"
     "CREATE INDEX deliveries_by_item ON deliveries (item_seq);"
     "CREATE TRIGGER deliveries_extend_retention AFTER INSERT ON deliveries BEGIN"
     "  UPDATE items SET expires_at = NEW.expires_at"
     "   WHERE seq = NEW.item_seq AND expires_at < NEW.expires_at;"
     "  UPDATE publishes SET expires_at = NEW.expires_at"
     "   WHERE id = (SELECT publish_id FROM items WHERE seq = NEW.item_seq)"
     "   AND expires_at < NEW.expires_at;"
     " END;"
     "CREATE TABLE tombstones ("
     "  seq INTEGER PRIMARY KEY,"
     "  recipient TEXT NOT NULL,"
     "  item_seq INTEGER NOT NULL,"
     "  rule_id TEXT NOT NULL,"
     "  rule_hash TEXT NOT NULL,"
     "  expires_at INTEGER NOT NULL,"
     "  expired_at INTEGER NOT NULL"
     ");"
     "PRAGMA user_version = 2;",
     schema_v1_is_empty},
    /* 2 -> 3: the audit trail (the column order is the encoding's, see
     * store_audit_fields) */
    {"CREATE TABLE audit ("
     "  seq INTEGER PRIMARY KEY CHECK (seq > 0),"
     "  at INTEGER NOT NULL,"
     "  event TEXT NOT NULL,"
     "  actor TEXT,"
     "  peer TEXT,"
     "  curve_key TEXT,"
     "  recipient TEXT,"
     "  recipient_partner TEXT,"
     "  message_id TEXT,"
     "  item_index INTEGER,"
     "  item_seq INTEGER,"
     "  delivery_seq INTEGER,"
     "  kind TEXT,"
     "  theme TEXT,"
     "  subject_tag TEXT,"
     "  rule_id TEXT,"
     "  rule_hash TEXT,"
     "  purpose TEXT,"
     "  legal_basis TEXT,"
     "  fields TEXT,"
     "  expires_at INTEGER,"
     "  reason TEXT,"
     "  detail TEXT,"
     "  hash BLOB NOT NULL CHECK (length(hash) = 32)"
     ");"
     "CREATE INDEX audit_by_subject ON audit (subject_tag) WHERE subject_tag IS NOT NULL;"
     "CREATE INDEX audit_by_delivery ON audit (delivery_seq) WHERE delivery_seq IS NOT NULL;"
     "CREATE TABLE audit_checkpoints ("
     "  seq INTEGER PRIMARY KEY CHECK (seq > 0),"
     "  at INTEGER NOT NULL,"
     "  hash BLOB NOT NULL CHECK (length(hash) = 32),"
     "  key BLOB NOT NULL CHECK (length(key) = 32),"
     "  signature BLOB NOT NULL CHECK (length(signature) = 64)"
     ");"
     "CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit"
     " BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;"
     "CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit"
     " BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;"
     "CREATE TRIGGER audit_checkpoints_append_only_update BEFORE UPDATE ON audit_checkpoints"
     " BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;"
     "CREATE TRIGGER audit_checkpoints_append_only_delete BEFORE DELETE ON audit_checkpoints"
     " BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;"
     "PRAGMA user_version = 3;",
     NULL},
    /* 3 -> 4: cases, their members and events; case deliveries */
    {"CREATE TABLE cases ("
     "  num INTEGER PRIMARY KEY AUTOINCREMENT CHECK (num BETWEEN 1 AND 99999999),"
     "  case_id TEXT NOT NULL UNIQUE CHECK (length(case_id) = 10),"
     "  case_type TEXT NOT NULL,"
     "  lead TEXT NOT NULL,"
     "  title BLOB NOT NULL,"
     "  closed INTEGER NOT NULL DEFAULT 0 CHECK (closed IN (0, 1)),"
     "  opened_at INTEGER NOT NULL,"
     "  closed_at INTEGER NOT NULL DEFAULT 0,"
     "  last_event_seq INTEGER NOT NULL DEFAULT 0 CHECK (last_event_seq >= 0),"
     "  expires_at INTEGER NOT NULL"
     ");"
     "CREATE INDEX cases_by_expiry ON cases (expires_at);"
     "CREATE TABLE case_members ("
     "  id INTEGER PRIMARY KEY,"
     "  case_id TEXT NOT NULL REFERENCES cases(case_id) ON DELETE CASCADE,"
     "  partner TEXT NOT NULL,"
     "  state TEXT NOT NULL CHECK (state IN ('i', 'm', 'd', 'l')),"
     "  rule_id TEXT NOT NULL,"
     "  rule_hash TEXT NOT NULL,"
     "  changed_at INTEGER NOT NULL,"
     "  UNIQUE (case_id, partner)"
     ");"
     "CREATE INDEX case_members_by_partner ON case_members (partner, case_id);"
     "CREATE TABLE case_events ("
     "  id INTEGER PRIMARY KEY,"
     "  case_id TEXT NOT NULL REFERENCES cases(case_id) ON DELETE CASCADE,"
     "  event_seq INTEGER NOT NULL CHECK (event_seq > 0),"
     "  at INTEGER NOT NULL,"
     "  expires_at INTEGER NOT NULL,"
     "  body BLOB NOT NULL,"
     "  UNIQUE (case_id, event_seq)"
     ");"
     "CREATE INDEX case_events_by_expiry ON case_events (expires_at);"
     "CREATE TRIGGER case_events_advance AFTER INSERT ON case_events BEGIN"
     "  UPDATE cases SET last_event_seq = NEW.event_seq WHERE case_id = NEW.case_id;"
     " END;"
     "CREATE TABLE case_items ("
     "  case_id TEXT NOT NULL REFERENCES cases(case_id) ON DELETE CASCADE,"
     "  item_seq INTEGER NOT NULL REFERENCES items(seq) ON DELETE CASCADE,"
     "  PRIMARY KEY (case_id, item_seq)"
     ") WITHOUT ROWID;"
     "CREATE INDEX case_items_by_item ON case_items (item_seq);"
     "CREATE TRIGGER case_items_extend_retention AFTER INSERT ON case_items BEGIN"
     "  UPDATE items SET expires_at = (SELECT expires_at FROM cases WHERE case_id = NEW.case_id)"
     "   WHERE seq = NEW.item_seq"
     "   AND expires_at < (SELECT expires_at FROM cases WHERE case_id = NEW.case_id);"
     "  UPDATE publishes SET expires_at = (SELECT expires_at FROM cases"
     "   WHERE case_id = NEW.case_id)"
     "   WHERE id = (SELECT publish_id FROM items WHERE seq = NEW.item_seq)"
     "   AND expires_at < (SELECT expires_at FROM cases WHERE case_id = NEW.case_id);"
     " END;"
     "ALTER TABLE deliveries ADD COLUMN case_id TEXT REFERENCES cases(case_id);"
     "ALTER TABLE deliveries ADD COLUMN is_case_event INTEGER NOT NULL DEFAULT 0"
     "  CHECK (is_case_event IN (0, 1));"
     "CREATE INDEX deliveries_by_case ON deliveries (case_id, recipient)"
     "  WHERE case_id IS NOT NULL;"
     "CREATE TRIGGER deliveries_case_items AFTER INSERT ON deliveries"
     "  WHEN NEW.case_id IS NOT NULL BEGIN"
     "  INSERT OR IGNORE INTO case_items (case_id, item_seq) VALUES (NEW.case_id, NEW.item_seq);"
     " END;"
     "PRAGMA user_version = 4;",
     NULL},
    /* 4 -> 5: deliveries by reference (the item's bytes, reduced at push) */
    {"ALTER TABLE deliveries ADD COLUMN by_ref INTEGER NOT NULL DEFAULT 0"
     "  CHECK (by_ref IN (0, 1) AND (by_ref = 0 OR case_id IS NULL));"
     "DROP TRIGGER deliveries_extend_retention;"
     "DROP TRIGGER deliveries_case_items;"
     "PRAGMA user_version = 5;",
     NULL},
    /* 5 -> 6: one acked entry per recipient and turn, and its index */
    {"ALTER TABLE audit ADD COLUMN delivery_seqs TEXT;"
     "CREATE TABLE audit_acks ("
     "  delivery_seq INTEGER PRIMARY KEY CHECK (delivery_seq > 0),"
     "  audit_seq INTEGER NOT NULL CHECK (audit_seq > 0)"
     ");"
     "CREATE TRIGGER audit_acks_append_only_update BEFORE UPDATE ON audit_acks"
     " BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;"
     "CREATE TRIGGER audit_acks_append_only_delete BEFORE DELETE ON audit_acks"
     " BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;"
     "PRAGMA user_version = 6;",
     NULL},
    /* 6 -> 7: one queued entry per item, its deliveries in one column */
    {"ALTER TABLE audit ADD COLUMN deliveries TEXT;"
     "PRAGMA user_version = 7;",
     NULL},
    /* 7 -> 8: a publish's evidence sealed and its content hash keyed; the
     * rows and the clear columns are done in C once the keys are loaded
     * (store_migrate_evidence, in the same transaction) */
    {"ALTER TABLE publishes ADD COLUMN evidence BLOB;"
     "PRAGMA user_version = 8;",
     NULL},
    /* 8 -> 9: a delivery's envelope bound to its seal; the rows are
     * re-sealed in C (store_migrate_deliveries, in the same
     * transaction) */
    {"PRAGMA user_version = 9;", NULL},
    /* 9 -> 10: deliveries set aside (the columns of STORE_DELIVERY_COLUMNS
     * in their order, then when and why; no constraint on the copied
     * columns: a row comes over as it was, however damaged; IF NOT
     * EXISTS: a store whose user_version was set back by hand has it) */
    {"CREATE TABLE IF NOT EXISTS deliveries_set_aside ("
     "  seq INTEGER PRIMARY KEY,"
     "  recipient, item_seq, message_id, item_index, sender, sender_partner, rule_id,"
     "  rule_hash, purpose, legal_basis, accepted_at, expires_at, body, case_id,"
     "  is_case_event, by_ref,"
     "  set_aside_at INTEGER NOT NULL,"
     "  reason TEXT NOT NULL"
     ");"
     "CREATE INDEX IF NOT EXISTS deliveries_set_aside_by_expiry ON deliveries_set_aside "
     "(expires_at);"
     "CREATE INDEX IF NOT EXISTS deliveries_set_aside_by_item ON deliveries_set_aside (item_seq);"
     "CREATE INDEX IF NOT EXISTS deliveries_set_aside_by_case ON deliveries_set_aside (case_id)"
     "  WHERE case_id IS NOT NULL;"
     "PRAGMA user_version = 10;",
     NULL},
    /* 10 -> 11: the bytes of items per sender partner, kept with every
     * commit (store_bytes.c), filled once by a walk of the items
     * (store_bytes_migrate, in C for its progress reports, right after) */
    {"CREATE TABLE IF NOT EXISTS stored_bytes ("
     "  partner TEXT PRIMARY KEY,"
     "  bytes INTEGER NOT NULL"
     ") WITHOUT ROWID;"
     "DELETE FROM stored_bytes;"
     "PRAGMA user_version = 11;",
     NULL},
    /* 11 -> 12: the acked-delivery index by runs, filled from audit_acks
     * right after (store_audit_ranges_migrate), and the delivery seq's
     * high-water mark in meta */
    {"CREATE TABLE IF NOT EXISTS audit_ack_ranges ("
     "  first_seq INTEGER PRIMARY KEY CHECK (first_seq > 0),"
     "  last_seq INTEGER NOT NULL CHECK (last_seq >= first_seq),"
     "  audit_seq INTEGER NOT NULL CHECK (audit_seq > 0)"
     ");"
     "CREATE TRIGGER IF NOT EXISTS audit_ack_ranges_append_only_update"
     " BEFORE UPDATE ON audit_ack_ranges"
     " BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;"
     "CREATE TRIGGER IF NOT EXISTS audit_ack_ranges_append_only_delete"
     " BEFORE DELETE ON audit_ack_ranges"
     " BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;"
     "INSERT OR REPLACE INTO meta (name, value) SELECT 'delivery_seq_high', max("
     "  coalesce((SELECT value FROM meta WHERE name = 'delivery_seq_high'"
     "   AND typeof(value) = 'integer'), 0),"
     "  coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'deliveries'), 0),"
     "  coalesce((SELECT max(seq) FROM deliveries), 0),"
     "  coalesce((SELECT max(seq) FROM deliveries_set_aside), 0),"
     "  coalesce((SELECT max(seq) FROM tombstones), 0));"
     "PRAGMA user_version = 12;",
     NULL},
    /* 12 -> 13: the mailbox as rows of one publish and recipient; the
     * tables made and every delivery moved in C once the keys are loaded
     * (store_mailbox_schema, store_mailbox_migrate, in the same
     * transaction, after store_migrate_deliveries has re-sealed an older
     * store's: the older steps' walks read deliveries, which it drops) */
    {"PRAGMA user_version = 13;", NULL},
};

/* ------------------------------------------------------------------ version */

static int schema_version(store_t *store, long *version)
{
    int64_t value = 0;
    if (store_query_int64(store, "PRAGMA user_version", &value) != 0)
        return -1;
    *version = (long)value;
    return 0;
}

/* reader: 1 for store_open_reader, whose caller is not schakeld
 * (schakelctl audit), which the text must not name as the program. */
static int schema_check_not_newer(store_t *store, long version, int reader)
{
    if (version <= STORE_SCHEMA_VERSION)
        return 0;
    snprintf(store->errmsg, sizeof store->errmsg,
             "store schema version %ld is newer than this %s understands (%d); %s", version,
             reader ? "program" : "schakeld", STORE_SCHEMA_VERSION,
             reader ? "read it with the release that wrote it, or a newer one"
                    : "run the schakeld that wrote it, or a newer one");
    return -1;
}

static int schema_v1_is_empty(store_t *store)
{
    int64_t publishes = 0;
    if (store_query_int64(store, "SELECT EXISTS (SELECT 1 FROM publishes)", &publishes) != 0)
        return -1;
    if (publishes == 0)
        return 0;
    store_refuse(store, "schema migration",
                 "this version-1 store holds unsealed bodies and cannot be sealed in place; "
                 "move it aside and let schakeld create a new store");
    return -1;
}

int store_schema_check_readable(store_t *store, long min_version)
{
    long version = 0;
    if (schema_version(store, &version) != 0 || schema_check_not_newer(store, version, 1) != 0)
        return -1;
    if (version < min_version) {
        snprintf(store->errmsg, sizeof store->errmsg,
                 "store schema version %ld predates what this reader needs (%ld): %s", version,
                 min_version,
                 version == 0 ? "not a Schakel store (or an empty file)"
                              : "let a current schakeld open it once to upgrade it");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ connection */

/* Set a PRAGMA and read it back, since SQLite ignores what it cannot do
 * (foreign_keys in a build without them, WAL on a file system without
 * shared memory) rather than failing. */
static int pragma_require(store_t *store, const char *set_sql, const char *get_sql,
                          const char *expected)
{
    char value[32];
    if (store_pragma_set(store, set_sql) != 0 ||
        store_pragma_text(store, get_sql, value, sizeof value) != 0)
        return -1;
    if (strcmp(value, expected) != 0) {
        snprintf(store->errmsg, sizeof store->errmsg, "%s: got \"%s\", need \"%s\"", get_sql, value,
                 expected);
        return -1;
    }
    return 0;
}

/* Connection settings, then the version check before anything is written
 * (switching to WAL writes the file header), then the rest. A new store
 * gets pages of STORE_PAGE_BYTES_TEXT: measured (docs/PERFORMANCE.md), 8 KiB
 * pages gave 6-16 % more deliveries per second than SQLite's 4 KiB, with
 * half the WAL frames (and pwrite calls) per bulk commit and a smaller
 * file; latency was not worse. The size is fixed once the file has its
 * header: a store made with another keeps it (SQLite ignores the PRAGMA
 * then). secure_delete
 * overwrites removed rows (acked and expired bodies) in the file instead of
 * leaving them in free space. temp_store = MEMORY keeps statement journals
 * (SQLite's undo of one statement inside the turn's transaction, taken for
 * an INSERT that fires triggers) in memory: once one outgrew the default
 * spill size, every later statement of the transaction wrote its pages to a
 * temporary file, which cost more than all the turn's real writes. Their
 * contents are pages of this store (sealed bodies, metadata), never more. */
int store_schema_configure(store_t *store)
{
    long version = 0;
    if (store_check_rc(store, sqlite3_busy_timeout(store->db, STORE_BUSY_TIMEOUT_MS),
                       "busy_timeout") != 0 ||
        store_check_rc(store,
                       sqlite3_db_config(store->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL),
                       "defensive mode") != 0)
        return -1;
    if (schema_version(store, &version) != 0 || schema_check_not_newer(store, version, 0) != 0)
        return -1;
    if (store_pragma_set(store, "PRAGMA page_size = " STORE_PAGE_BYTES_TEXT) != 0 ||
        pragma_require(store, "PRAGMA journal_mode = WAL", "PRAGMA journal_mode", "wal") != 0 ||
        pragma_require(store, "PRAGMA synchronous = NORMAL", "PRAGMA synchronous", "1") != 0 ||
        pragma_require(store, "PRAGMA foreign_keys = ON", "PRAGMA foreign_keys", "1") != 0 ||
        pragma_require(store, "PRAGMA secure_delete = ON", "PRAGMA secure_delete", "1") != 0 ||
        pragma_require(store, "PRAGMA temp_store = MEMORY", "PRAGMA temp_store", "2") != 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------------ the store epoch */

/*
 * The store epoch names the store's history (store.h): 16 random bytes in
 * meta, in clear (every client is told them; they say nothing of what the
 * store holds). A store gets them when it is made, or at its first open
 * after an upgrade when it has none (no schema step: a meta row); a
 * restore replaces them (store_epoch_renew); a rekey and a restart leave
 * them as they are. Beside them, the epoch's floor seq: the highest item
 * seq the backup had handed out when it was taken (every item accepted
 * before it has one as high at most, every item accepted after it, in any
 * epoch, a higher one: see store_counters_move), 8 bytes big-endian, 0 for
 * an epoch made with the store; no row when it is unknown (a restore that
 * went on without the replaced store's counters, a store restored by a
 * broker from before floors).
 */

/* The epoch's row into store->epoch: 1, 0 when there is none, -1 (a row
 * of another length is damage). */
static int epoch_read(store_t *store)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(store->db, "SELECT value FROM meta WHERE name = 'store_epoch'", -1,
                           &stmt, NULL) != SQLITE_OK) {
        store_fail(store, "read the store epoch");
        return -1;
    }
    int rc = sqlite3_step(stmt), result = 0;
    if (rc == SQLITE_ROW) {
        size_t len = 0;
        const uint8_t *value = store_column_bytes(stmt, 0, &len);
        if (value == NULL || len != sizeof store->epoch) {
            store_refuse(store, "store epoch", "damaged (not 16 bytes)");
            result = -1;
        } else {
            memcpy(store->epoch, value, sizeof store->epoch);
            result = 1;
        }
    } else if (rc != SQLITE_DONE) {
        store_fail(store, "read the store epoch");
        result = -1;
    }
    (void)sqlite3_finalize(stmt); /* repeats the step's code, handled above */
    return result;
}

/* Write epoch with sql (an INSERT, or the UPDATE of a restore), which must
 * change exactly one row. */
static int epoch_write(store_t *store, const uint8_t *epoch, const char *sql)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(store->db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        store_fail(store, "write the store epoch");
        return -1;
    }
    int result = store_bind_bytes(store, stmt, 1, epoch, SCHAKEL_STORE_EPOCH_BYTES);
    if (result == 0 && sqlite3_step(stmt) != SQLITE_DONE) {
        store_fail(store, "write the store epoch");
        result = -1;
    }
    if (result == 0 && sqlite3_changes(store->db) != 1) {
        store_refuse(store, "write the store epoch", "the store has no store epoch");
        result = -1;
    }
    (void)sqlite3_finalize(stmt);
    return result;
}

/* The floor's row into store->epoch_floor: 1, 0 when there is none (the
 * floor is unknown), -1 (a row of another length is damage). */
static int epoch_floor_read(store_t *store)
{
    sqlite3_stmt *stmt = NULL;
    store->epoch_floor_known = 0;
    store->epoch_floor = 0;
    if (sqlite3_prepare_v2(store->db, "SELECT value FROM meta WHERE name = 'store_epoch_floor'", -1,
                           &stmt, NULL) != SQLITE_OK) {
        store_fail(store, "read the store epoch's floor");
        return -1;
    }
    int rc = sqlite3_step(stmt), result = 0;
    if (rc == SQLITE_ROW) {
        size_t len = 0;
        const uint8_t *value = store_column_bytes(stmt, 0, &len);
        if (value == NULL || len != 8 || value[0] >= 0x80) {
            store_refuse(store, "store epoch floor", "damaged (not 8 bytes of a seq)");
            result = -1;
        } else {
            for (size_t i = 0; i < 8; i++)
                store->epoch_floor = store->epoch_floor << 8 | value[i];
            store->epoch_floor_known = 1;
            result = 1;
        }
    } else if (rc != SQLITE_DONE) {
        store_fail(store, "read the store epoch's floor");
        result = -1;
    }
    (void)sqlite3_finalize(stmt); /* repeats the step's code, handled above */
    return result;
}

/* Write the floor (NULL: unknown, the row removed). */
static int epoch_floor_write(store_t *store, const uint64_t *floor)
{
    sqlite3_stmt *stmt = NULL;
    const char *sql = floor != NULL ? "INSERT OR REPLACE INTO meta (name, value)"
                                      " VALUES ('store_epoch_floor', ?1)"
                                    : "DELETE FROM meta WHERE name = 'store_epoch_floor'";
    if (sqlite3_prepare_v2(store->db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        store_fail(store, "write the store epoch's floor");
        return -1;
    }
    int result = 0;
    uint8_t value[8]; /* bound without a copy: it lives until the step */
    if (floor != NULL) {
        for (size_t i = 0; i < 8; i++)
            value[i] = (uint8_t)(*floor >> (56 - 8 * i));
        result = store_bind_bytes(store, stmt, 1, value, sizeof value);
    }
    if (result == 0 && sqlite3_step(stmt) != SQLITE_DONE) {
        store_fail(store, "write the store epoch's floor");
        result = -1;
    }
    (void)sqlite3_finalize(stmt);
    if (result == 0) {
        store->epoch_floor_known = floor != NULL;
        store->epoch_floor = floor != NULL ? *floor : 0;
    }
    return result;
}

/* In the open schema transaction: load the epoch and its floor; a store
 * that has no epoch gets one first, with floor 0 (no client knows of an
 * earlier history of it). */
static int epoch_load(store_t *store)
{
    int found = epoch_read(store);
    if (found < 0)
        return -1;
    if (found == 0) {
        uint8_t epoch[SCHAKEL_STORE_EPOCH_BYTES];
        const uint64_t floor = 0;
        randombytes_buf(epoch, sizeof epoch);
        if (epoch_write(store, epoch,
                        "INSERT INTO meta (name, value) VALUES ('store_epoch', ?1)") != 0 ||
            epoch_floor_write(store, &floor) != 0)
            return -1;
        memcpy(store->epoch, epoch, sizeof store->epoch);
    }
    return epoch_floor_read(store) < 0 ? -1 : 0;
}

void store_epoch(const store_t *store, uint8_t epoch[SCHAKEL_STORE_EPOCH_BYTES])
{
    memcpy(epoch, store->epoch, sizeof store->epoch);
}

int store_epoch_floor(const store_t *store, uint64_t *floor)
{
    *floor = store->epoch_floor;
    return store->epoch_floor_known;
}

int store_epoch_renew(store_t *store, const uint64_t *floor, uint8_t was[SCHAKEL_STORE_EPOCH_BYTES],
                      uint8_t now[SCHAKEL_STORE_EPOCH_BYTES])
{
    uint8_t epoch[SCHAKEL_STORE_EPOCH_BYTES];
    if (store_enter(store, "store epoch") != 0 || store_begin(store) != 0)
        return -1;
    if (floor != NULL && *floor > (uint64_t)INT64_MAX) {
        store_refuse(store, "store epoch", "a floor seq out of range");
        return -1;
    }
    randombytes_buf(epoch, sizeof epoch);
    if (epoch_write(store, epoch, "UPDATE meta SET value = ?1 WHERE name = 'store_epoch'") != 0 ||
        epoch_floor_write(store, floor) != 0)
        return -1;
    if (was != NULL)
        memcpy(was, store->epoch, sizeof store->epoch);
    memcpy(store->epoch, epoch, sizeof store->epoch);
    memcpy(now, epoch, sizeof epoch);
    return 0;
}

/* ------------------------------------------------------------------ migration */

/* Bring the schema to STORE_SCHEMA_VERSION and check the key, in one
 * immediate transaction; the version is read again inside it, so two
 * processes opening a new store at once do not both migrate. */
int store_schema_version(void)
{
    return STORE_SCHEMA_VERSION;
}

int store_migrated_from(const store_t *store, int64_t *ms)
{
    if (store == NULL || store->migrated_from <= 0)
        return 0;
    if (ms != NULL)
        *ms = store->migrated_ms;
    return (int)store->migrated_from;
}

static int64_t schema_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int store_schema_apply(store_t *store)
{
    long version = 0;
    int64_t began_ms = schema_now_ms();
    if (store_exec_fixed(store, "BEGIN IMMEDIATE", "schema") != 0)
        return -1;
    if (schema_version(store, &version) != 0 || schema_check_not_newer(store, version, 0) != 0)
        goto fail;
    if (version < 0) {
        store_refuse(store, "schema", "negative user_version: not a Schakel store");
        goto fail;
    }
    for (long step = version; step < STORE_SCHEMA_VERSION; step++) {
        const schema_step_t *s = &schema_steps[step];
        if ((s->precheck != NULL && s->precheck(store) != 0) ||
            store_exec_fixed(store, s->sql, "schema migration") != 0 ||
            (step + 1 == STORE_SCHEMA_BYTES_VERSION && store_bytes_migrate(store) != 0) ||
            (step + 1 == STORE_SCHEMA_ACK_RANGES_VERSION && store_audit_ranges_migrate(store) != 0))
            goto fail;
    }
    if (store_seal_keycheck(store) != 0 || store_seal_subject_key(store, 1) != 0 ||
        (version < STORE_SCHEMA_EVIDENCE_VERSION && store_migrate_evidence(store) != 0) ||
        (version < STORE_SCHEMA_ENVELOPE_VERSION && store_migrate_deliveries(store) != 0) ||
        (version < STORE_SCHEMA_MAILBOX_VERSION &&
         (store_mailbox_schema(store) != 0 || store_mailbox_migrate(store) != 0)) ||
        epoch_load(store) != 0 || store_exec_fixed(store, "COMMIT", "schema") != 0)
        goto fail;
    /* a store made now (version 0: schakeld --init) was not migrated */
    if (version > 0 && version < STORE_SCHEMA_VERSION) {
        store->migrated_from = version;
        store->migrated_ms = schema_now_ms() - began_ms;
    }
    return 0;
fail:
    if (!sqlite3_get_autocommit(store->db))
        (void)sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL); /* error already kept */
    return -1;
}
