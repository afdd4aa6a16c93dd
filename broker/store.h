/*
 * store.h — the broker's durable state, behind one narrow interface.
 *
 * Owns every byte on disk: publishes (for idempotency and as signed
 * evidence), items, and per-recipient mailboxes of deliveries. The default
 * backend is SQLite in WAL mode with synchronous=FULL: a commit that returns
 * 0 is on disk. Callers group many operations into one transaction per loop
 * turn (store_begin .. store_commit). Nothing outside store.c knows SQL, so
 * a later backend (PostgreSQL) replaces this file only. Errors are returned
 * (-1) with a message retrievable by store_errmsg; the caller decides.
 */
#ifndef SCHAKEL_STORE_H
#define SCHAKEL_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct store store_t;

/* Open (creating if needed) the store at path and apply the schema. Returns
 * NULL with err filled on failure. A new file is created mode 0600. A store
 * whose schema version is newer than this code knows is refused. */
store_t *store_open(const char *path, char *err, size_t errlen);
void store_close(store_t **store);
const char *store_errmsg(const store_t *store);

/* Transactions. store_begin is idempotent within an open transaction
 * (returns 0 and does nothing), so callers may call it before each write.
 * store_in_transaction tells whether one is open. store_rollback is safe
 * without one. store_commit without an open transaction fails (-1): SQLite
 * rolls a transaction back by itself after some I/O errors, and that must
 * never look committed. A failed commit rolls back: nothing of it is kept. */
int store_begin(store_t *store);
int store_commit(store_t *store);
int store_rollback(store_t *store);
int store_in_transaction(const store_t *store);

/* A publish seen before: returns 1 and fills content_hash and the stored
 * Accepted frame bytes (malloc'd, caller frees) if (sender, message_id) is
 * known; 0 if not; -1 on error. content_hash, accepted and accepted_len may
 * be NULL; *accepted is NULL (len 0) when no reply has been attached yet. */
int store_publish_find(store_t *store, const char *sender, const uint8_t message_id[16],
                       uint8_t content_hash[32], uint8_t **accepted, size_t *accepted_len);

/* Record a publish: sender, id, content hash, the signature and the signed
 * root (evidence). Returns the publish's row id (>0) or -1. */
int64_t store_publish_add(store_t *store, const char *sender, const uint8_t message_id[16],
                          const uint8_t content_hash[32], const uint8_t signature[64],
                          const uint8_t root[32], int64_t accepted_at);

/* Attach the Accepted frame bytes that answer this publish (sent again for a
 * repeat). Returns 0 or -1. */
int store_publish_set_reply(store_t *store, int64_t publish_id, const uint8_t *accepted,
                            size_t len);

/* Store one signed item (its exact bytes, as evidence). Returns the item's
 * broker sequence number (>0) or -1. */
int64_t store_item_add(store_t *store, int64_t publish_id, uint32_t item_index,
                       const uint8_t *item, size_t len);

typedef struct store_delivery {
    uint64_t seq;          /* mailbox sequence number, increasing per store */
    const char *recipient; /* principal id */
    uint64_t item_seq;
    /* message_id, item_index, sender and accepted_at are the item's publish's;
     * store_delivery_add refuses values that differ from item_seq's rows. */
    const uint8_t *message_id; /* 16 bytes */
    uint32_t item_index;
    const char *sender;
    const char *sender_partner; /* the part of sender before '/' */
    const char *rule_id;
    const char *rule_hash;
    const char *purpose;
    const char *legal_basis;
    int64_t accepted_at;
    int64_t expires_at;
    const uint8_t *body; /* serialized, filtered Signal */
    size_t body_len;
} store_delivery_t;

/* Queue a delivery into a recipient's mailbox. Reads every field of d except
 * seq. Returns the new seq (>0) or -1. */
int64_t store_delivery_add(store_t *store, const store_delivery_t *d);

/* Call fn for up to `limit` deliveries of `recipient` with seq > after_seq,
 * in seq order. The delivery passed to fn is only valid during the call. fn
 * returns 0 to continue, non-zero to stop. Returns the number visited or -1.
 * fn must not call store functions: the scan's statement is live, and they
 * return -1. */
typedef int (*store_delivery_fn)(const store_delivery_t *d, void *arg);
int store_mailbox_scan(store_t *store, const char *recipient, uint64_t after_seq, size_t limit,
                       store_delivery_fn fn, void *arg);

/* Count a recipient's pending (unacked) deliveries; -1 on error. */
int64_t store_mailbox_count(store_t *store, const char *recipient);

/* The highest seq of any pending delivery (0 when none), -1 on error. */
int64_t store_delivery_last_seq(store_t *store);

/* Remove an acked delivery. Returns 1 when removed, 0 when the recipient
 * has no such pending delivery (unknown, already acked, or someone
 * else's), -1 on error. Seqs are never reused. */
int store_delivery_ack(store_t *store, const char *recipient, uint64_t seq);

#endif
