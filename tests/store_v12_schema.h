/*
 * store_v12_schema.h — the deliveries tables a store of schema 12 held,
 * as SQL text for the tests (unit and integration) that take a current
 * store back to a schema before 13, which dropped them for the mailbox
 * rows. Each is the shape broker/store_schema.c's steps left: run on a
 * file that has no such table yet.
 */
#ifndef SCHAKEL_TESTS_STORE_V12_SCHEMA_H
#define SCHAKEL_TESTS_STORE_V12_SCHEMA_H

/* deliveries as schemas 5 to 12 hold it: made by step 1 -> 2 with its
 * indexes, its case columns and index added by 3 -> 4, by_ref by 4 -> 5
 * (written here in the one CREATE those ALTERs leave; the two triggers of
 * 3 -> 4, dropped by 4 -> 5, left out). */
#define STORE_V12_DELIVERIES_SQL                                                                   \
    "CREATE TABLE deliveries ("                                                                    \
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"                                                     \
    "  recipient TEXT NOT NULL,"                                                                   \
    "  item_seq INTEGER NOT NULL REFERENCES items(seq),"                                           \
    "  sender TEXT NOT NULL,"                                                                      \
    "  sender_partner TEXT NOT NULL,"                                                              \
    "  message_id BLOB NOT NULL CHECK (length(message_id) = 16),"                                  \
    "  item_index INTEGER NOT NULL,"                                                               \
    "  accepted_at INTEGER NOT NULL,"                                                              \
    "  rule_id TEXT NOT NULL,"                                                                     \
    "  rule_hash TEXT NOT NULL,"                                                                   \
    "  purpose TEXT NOT NULL,"                                                                     \
    "  legal_basis TEXT NOT NULL,"                                                                 \
    "  expires_at INTEGER NOT NULL,"                                                               \
    "  body BLOB NOT NULL,"                                                                        \
    "  case_id TEXT REFERENCES cases(case_id),"                                                    \
    "  is_case_event INTEGER NOT NULL DEFAULT 0 CHECK (is_case_event IN (0, 1)),"                  \
    "  by_ref INTEGER NOT NULL DEFAULT 0"                                                          \
    "  CHECK (by_ref IN (0, 1) AND (by_ref = 0 OR case_id IS NULL)));"                             \
    "CREATE INDEX deliveries_by_recipient ON deliveries (recipient, seq);"                         \
    "CREATE INDEX deliveries_by_expiry ON deliveries (expires_at);"                                \
    "CREATE INDEX deliveries_by_item ON deliveries (item_seq);"                                    \
    "CREATE INDEX deliveries_by_case ON deliveries (case_id, recipient)"                           \
    "  WHERE case_id IS NOT NULL;"

/* deliveries_set_aside as schemas 10 to 12 hold it (step 9 -> 10): the
 * columns of deliveries without type or constraint, then when and why. */
#define STORE_V12_DELIVERIES_SET_ASIDE_SQL                                                         \
    "CREATE TABLE deliveries_set_aside ("                                                          \
    "  seq INTEGER PRIMARY KEY,"                                                                   \
    "  recipient, item_seq, message_id, item_index, sender, sender_partner, rule_id,"              \
    "  rule_hash, purpose, legal_basis, accepted_at, expires_at, body, case_id,"                   \
    "  is_case_event, by_ref,"                                                                     \
    "  set_aside_at INTEGER NOT NULL,"                                                             \
    "  reason TEXT NOT NULL);"                                                                     \
    "CREATE INDEX deliveries_set_aside_by_expiry ON deliveries_set_aside (expires_at);"            \
    "CREATE INDEX deliveries_set_aside_by_item ON deliveries_set_aside (item_seq);"                \
    "CREATE INDEX deliveries_set_aside_by_case ON deliveries_set_aside (case_id)"                  \
    "  WHERE case_id IS NOT NULL;"

/* Both, as schemas 10 to 12 hold them. */
#define STORE_V12_TABLES_SQL STORE_V12_DELIVERIES_SQL STORE_V12_DELIVERIES_SET_ASIDE_SQL

#endif
