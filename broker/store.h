/*
 * store.h — the broker's durable state, behind one narrow interface.
 *
 * Owns every byte on disk: publishes (for idempotency and as signed
 * evidence), items, per-recipient mailboxes of deliveries, tombstones of
 * expired deliveries, and cases (their members and events). The default
 * backend is SQLite in WAL mode; store_commit syncs the WAL before it
 * returns, so a commit that returns 0 is on disk (store_commit_unsynced
 * does not wait). Callers group many operations into one transaction per
 * loop turn (store_begin .. store_commit). Nothing outside store.c,
 * store_delivery.c, store_count.c, store_schema.c, store_expire.c,
 * store_seal.c, store_migrate.c, store_audit.c, store_case.c and
 * store_sync.c (joined by store_internal.h) knows SQL, so a later backend
 * (PostgreSQL) replaces those files only. Errors are returned (-1) with a
 * message retrievable by store_errmsg; the caller decides.
 *
 * Sealed at rest. Every body (an item's signed bytes, a delivery's filtered
 * Signal or CaseEvent, a case's title, a case event) is stored as
 * nonce(24) || XChaCha20-Poly1305-IETF ciphertext+tag under the 32-byte
 * store key. The associated data names the row, so a body moved to another
 * row, or a row whose bound columns are edited, does not authenticate (all
 * integers big-endian; a case id is its SCHAKEL_CASE_ID_LEN bytes):
 *   item:     "schakel-store-item-v1\0"     || seq(8) || publish_id(8) || item_index(4)
 *   delivery: "schakel-store-delivery-v2\0" || seq(8) || item_seq(8) || envelope(32) ||
 *             recipient (bytes, no NUL)
 *   delivery by reference (its body the rule's field mask, 4 bytes little-endian):
 *             "schakel-store-delivery-ref-v2\0" || seq(8) || item_seq(8) || envelope(32) ||
 *             recipient
 *   case delivery (a delivery with a case id):
 *             "schakel-store-case-delivery-v2\0" || seq(8) || item_seq(8) ||
 *             is_case_event(1: 0 or 1) || case_id || envelope(32) || recipient
 *   where envelope is the BLAKE2b-256 (unkeyed) of what the Deliver frame
 *   tells the recipient besides the body, each text as len(4) || bytes:
 *             sender || sender_partner || message_id(16) || item_index(4) ||
 *             accepted_at(8) || rule_id || rule_hash || purpose || legal_basis ||
 *             expires_at(8)
 *   so that none of it can be altered in the file while the delivery waits
 *   (a case's close, which sets its deliveries' expires_at, seals them
 *   again). Schema 8 and before sealed deliveries under the "-v1" tags of
 *   the same layouts without the envelope; the opening that migrates a
 *   store to schema 9 seals each again.
 *   case title: "schakel-store-case-v1\0"   || case_id
 *   case event: "schakel-store-case-event-v1\0" || case_id || event_seq(8)
 *   publish evidence (root(32) || signature(64)):
 *               "schakel-store-publish-evidence-v1\0" || message_id(16) || sender
 * A body that does not authenticate is an error for the call that reads it,
 * never handed out. A publish's content hash is stored as a tag keyed with
 * the subject key (store_content_tag): the root and signature in clear, or
 * an unkeyed hash, would let a copy of the store confirm guessed contents
 * (a templated signal's few unknown fields) offline. What stays in clear,
 * because routing and idempotency need it: principal ids (sender,
 * recipient, sender partner), message ids, item indexes and seqs, rule id
 * and rule hash, purpose and legal basis (policy text, not personal data),
 * timestamps (accepted_at, expires_at, expired_at), the stored Accepted reply (message id, item
 * seqs, recipient counts), and of a case its id, type, lead partner, state, times, member partners
 * with their states and membership rules, and its event seqs. In clear, but a waiting delivery's
 * are bound to its sealed body (the envelope above). The audit trail (below) is metadata
 * in clear as well, with the data subject named only by a keyed tag (store_subject_tag), never by
 * its pseudonym.
 *
 * Sequence numbers (item seq, delivery seq) are increasing and never reused,
 * not even after the rows are acked or expired, but they are not dense: a
 * write that was rolled back leaves a gap.
 */
#ifndef SCHAKEL_STORE_H
#define SCHAKEL_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "durations.h"
#include "schakel_limits.h"

#define STORE_KEY_BYTES 32u

typedef struct store store_t;

/* What store_open does where there is no store. The zero value, which a
 * forgotten or zeroed mode has, makes none: a broker that started on a new,
 * empty store because its volume was not mounted would hand out seqs from
 * 1 again (recipients that deduplicate by Deliver.seq drop the new
 * deliveries) and begin a second audit trail, without a word. */
typedef enum store_open_mode {
    STORE_OPEN_EXISTING = 0, /* the store must be there (store_presence) and be a Schakel store */
    STORE_OPEN_CREATE = 1,   /* a new store: refused where a file (or a -wal) is already there */
} store_open_mode_t;

/* Whether a store is at path, from its files alone (nothing is opened or
 * created). STORE_FILE_MISSING also when path is an empty file (0 bytes:
 * SQLite would take it for an empty database), and STORE_FILE_WAL_ONLY
 * when the file is missing or empty while PATH-wal is there: that WAL
 * belongs to a store that is gone, and a new store laid under it would
 * take its pages. Every case but STORE_FILE_PRESENT leaves one line in err
 * naming the path and what is (not) there: "PATH: No such file or
 * directory", "PATH is an empty file", "..., but PATH-wal is there (N
 * bytes)", or why it cannot tell (STORE_FILE_UNKNOWN: a stat error, not a
 * regular file). */
typedef enum store_file_state {
    STORE_FILE_UNKNOWN = -1,
    STORE_FILE_MISSING = 0,
    STORE_FILE_WAL_ONLY = 1,
    STORE_FILE_PRESENT = 2,
} store_file_state_t;
store_file_state_t store_presence(const char *path, char *err, size_t errlen);

/* Process-wide settings of the storage library, once, before the first
 * store is opened and before other threads start: SQLite keeps no memory
 * statistics (nothing reads them, and each of its allocations would take a
 * global mutex to count them). Optional: stores work without it. */
void store_global_init(void);

/* A long step of store_open (a schema migration that rewrites or reads every row
 * of a table) calls fn now and then with what it does and the rows done so
 * far, so that a supervisor can be told the start is still going (schakeld
 * extends its systemd start timeout). Process-wide; NULL for none. */
typedef void (*store_progress_fn)(const char *step, uint64_t done);
void store_set_progress(store_progress_fn fn);

/* Open the store at path, apply the schema (migrating an older one) and
 * check the key. seal_key (STORE_KEY_BYTES, from keys_load_symmetric) is
 * copied into sodium_malloc memory (plain malloc under SCHAKEL_PLAIN_ALLOC)
 * and wiped on close; the caller wipes its own copy.
 * STORE_OPEN_EXISTING refuses, before it creates or writes anything (the
 * lock file included), a path store_presence does not find PRESENT (err:
 * its line, then "no store to open: only schakeld --init makes one"), and
 * a file without a Schakel schema (user_version 0: another database, or a
 * store made in place by an older schakeld --init that was interrupted).
 * STORE_OPEN_CREATE makes the file (O_EXCL, mode 0600: it holds personal
 * data) and gives it the current schema and the sealed key check (for
 * schakeld --init, at a temporary path: init.h), refusing a path where a
 * file or a -wal
 * is already there ("PATH: File exists"), so that it never opens, let
 * alone changes, a store that exists. An open with another key than the
 * one the store was made with fails with "the store key does not open
 * this store (wrong store key file?)" and writes nothing. A store whose
 * schema version is newer than this code knows is refused. Returns NULL
 * with err filled on failure. */
store_t *store_open(const char *path, const uint8_t seal_key[STORE_KEY_BYTES],
                    store_open_mode_t mode, char *err, size_t errlen);

/* The schema version this code writes and understands (PRAGMA
 * user_version): an open store is at it, having been migrated to it if it
 * was older. */
int store_schema_version(void);

/* The schema version the store was at before store_open migrated it, and
 * in *ms (may be NULL) how long the migration's transaction took; 0 when
 * this open migrated nothing (the store was current, or made new by
 * STORE_OPEN_CREATE). Safe on NULL (0). */
int store_migrated_from(const store_t *store, int64_t *ms);

/* The lock store_open holds (an exclusive flock on PATH.lock, with the
 * holder's pid in it), for an offline command that replaces a store's
 * files before anything opens them (schakeld --restored). Returns the
 * lock's fd (close it to release the lock), or -1 with err: "PATH: in use
 * by another process (pid N): one schakeld per store; stop it first". */
int store_lock_take(const char *path, char *err, size_t errlen);

/* Roll back an open transaction, wipe the key and free; *store = NULL.
 * Safe on NULL and on *store == NULL. */
void store_close(store_t **store);
const char *store_errmsg(const store_t *store);

/* True (1) when the last failure is a storage condition that may pass by
 * itself: disk full, I/O error, read-only file, cannot open, busy. The
 * broker refuses publishes with UNAVAILABLE then and tries again next turn;
 * the store is usable for the next transaction once the condition is gone.
 * 0 for every other failure (refused input, damaged or tampered data, a
 * wrong key), and for a NULL store. */
int store_last_error_is_unavailable(const store_t *store);

/* Transactions. store_begin is idempotent within an open transaction
 * (returns 0 and does nothing), so callers may call it before each write.
 * store_in_transaction tells whether one is open. store_rollback is safe
 * without one. store_commit without an open transaction fails (-1): SQLite
 * rolls a transaction back by itself after some I/O errors, and that must
 * never look committed (the failure that caused it is what
 * store_last_error_is_unavailable then classifies). A failed commit rolls
 * back: nothing of it is kept. */
int store_begin(store_t *store);
int store_commit(store_t *store);
/* store_commit returns once the transaction is on disk (the WAL synced).
 * store_commit_unsynced does not wait for the disk: the transaction is
 * committed (visible, and kept across a crash of the process), but its WAL
 * frames are synced only by the next store_commit (or checkpoint), which
 * syncs all before it; a power failure in between may lose it, never
 * anything committed later. For turns whose loss is harmless and claimed to
 * no one (acks: the deliveries are simply sent again, flagged redelivery).
 * A store_commit whose sync fails returns -1 with the transaction
 * committed but not known to be durable (see store_sync_failed). */
int store_commit_unsynced(store_t *store);

/* The syncer (store_sync.c): a thread that syncs the WAL while the loop
 * goes on. The loop commits a turn with store_commit_unsynced, then asks
 * store_syncer_request for a ticket; once store_syncer_collect (or _wait)
 * reports a synced ticket >= that one, the turn is on disk and its answers
 * may go out. A sync covers every commit made before its request.
 * A failed sync is final: collect and wait return -1 from then on, and the
 * store handle is poisoned (store_sync_failed), as for a failed sync in
 * store_commit. Loop thread only; one syncer per store. */
typedef struct store_syncer store_syncer_t;
/* NULL with err filled when the store has no WAL file to sync (an
 * in-memory store) or the thread cannot start: the caller then commits
 * with store_commit. */
store_syncer_t *store_syncer_start(store_t *store, char *err, size_t errlen);
/* Readable (an eventfd, for poll) after each finished sync. */
int store_syncer_fd(const store_syncer_t *syncer);
/* A ticket for every commit made so far; the thread starts a sync. */
uint64_t store_syncer_request(store_syncer_t *syncer);
/* Non-blocking: *synced = the highest ticket known durable; -1 if a sync
 * failed. */
int store_syncer_collect(store_syncer_t *syncer, uint64_t *synced);
/* Blocks until ticket is durable (or a sync failed: -1). */
int store_syncer_wait(store_syncer_t *syncer, uint64_t ticket, uint64_t *synced);
/* Stops the thread (a sync in progress finishes first); requests not yet
 * synced stay unsynced. */
void store_syncer_stop(store_syncer_t **syncer);
/* How long the thread's fdatasync calls took so far, for /metrics. */
void store_syncer_durations(store_syncer_t *syncer, durations_t *out);
/* The checkpointer (store_checkpoint.c): a thread with a connection of
 * its own that copies the WAL into the database file (PASSIVE
 * checkpoints) while the loop goes on, instead of a checkpoint in the
 * commit that made one due; the loop only finishes the last few frames
 * (store_commit.c, checkpoint_plan). A round that fails with an I/O error (or
 * finds the file corrupt) poisons the store: the next commit is refused
 * and rolled back (store_sync_failed), as after a failed sync. -1 with err
 * filled for a store without a file (in memory) or when the thread cannot
 * start: the loop then checkpoints in place as before. Loop thread only;
 * store_close stops it. */
typedef struct store_checkpointer store_checkpointer_t;
int store_checkpointer_start(store_t *store, char *err, size_t errlen);
/* Waits for a round in progress; the loop checkpoints in place from then
 * on. -1 (and the store poisoned) when a round had failed. */
int store_checkpointer_stop(store_t *store);
int store_checkpointer_running(const store_t *store);
/* -1 (and the store poisoned, store_sync_failed) once a round failed; 0
 * otherwise, or without a checkpointer. For the loop's turn: a failure is
 * found within a turn even when nothing commits. */
int store_checkpointer_check(store_t *store);
typedef struct store_checkpoint_counts {
    uint64_t thread_rounds;     /* the thread's rounds that copied (while it runs) */
    uint64_t thread_attempts;   /* ... and those that found another checkpoint busy */
    uint64_t finished_in_place; /* the loop finished a WAL the thread had nearly copied */
    uint64_t forced_in_place;   /* the loop checkpointed past the limit (or without a thread) */
    uint64_t busy_in_place;     /* the loop's tries that found another checkpoint running */
    uint64_t requests;          /* rounds the loop asked the thread for */
} store_checkpoint_counts_t;
void store_checkpoint_counts(const store_t *store, store_checkpoint_counts_t *counts);
/* For tests: wait until the thread has finished `attempts` rounds in all
 * (or failed), at most until `until` (CLOCK_REALTIME); the attempts
 * finished. */
uint64_t store_test_checkpointer_wait(store_t *store, uint64_t attempts, struct timespec until);
/* For tests: fn runs inside every store_commit, after the COMMIT and its
 * sync and before the checkpoint is planned (NULL: nothing). */
void store_test_after_commit(store_t *store, void (*fn)(store_t *store, void *arg), void *arg);
/* For tests: the most frames the WAL held after a commit since the last
 * call (the first call: since the store was opened). */
int store_test_wal_frames_peak(store_t *store);
/* The highest delivery seq handed out by this handle (or read at open). */
uint64_t store_delivery_high(const store_t *store);
/* WAL syncs made on the calling (loop) thread that succeeded: store_commit,
 * and store_commit_unsynced when a checkpoint is due. A commit made before
 * the count rose is on disk. */
uint64_t store_loop_syncs(const store_t *store);
/* How long the WAL syncs on the calling (loop) thread took (store_wal_sync,
 * successful or not), for /metrics. */
void store_loop_sync_durations(const store_t *store, durations_t *out);
/* 1 after a store_commit whose WAL sync failed: the transaction is visible
 * but perhaps not on disk, and every later call on this handle fails. The
 * broker stops (systemd starts it again); SQLite then recovers what is
 * really on disk. */
int store_sync_failed(const store_t *store);
/* Roll the open transaction back (none open: 0). The next case number
 * goes back to where the transaction found it (store_case_create). */
int store_rollback(store_t *store);
int store_in_transaction(const store_t *store);
/* 1 when a transaction we began was rolled back by SQLite itself (after an
 * I/O or full-disk error) and not yet closed with store_commit (which then
 * fails) or store_rollback. */
int store_transaction_lost(const store_t *store);

/* A publish seen before: returns 1 if (sender, message_id) is known, with
 * *same_content set to whether content_hash (the repeat's) is the stored
 * publish's, and the stored Accepted frame bytes (malloc'd, caller frees);
 * 0 if not; -1 on error. content_hash (then same_content is untouched),
 * same_content, accepted and accepted_len may be NULL; *accepted is NULL
 * (len 0) when no reply has been attached yet. Publishes are kept until
 * their retention ends (see store_expire), across restarts; a repeat after
 * that is a new publish. */
int store_publish_find(store_t *store, const char *sender, const uint8_t message_id[16],
                       const uint8_t content_hash[32], int *same_content, uint8_t **accepted,
                       size_t *accepted_len);

/* Record a publish: sender, id, content hash (stored as a keyed tag, so a
 * copy of the store cannot confirm a guessed content), and the signed root
 * and signature (evidence, sealed like a body, bound to the sender and
 * message id). Its retention starts at accepted_at and is raised by every
 * delivery of its items. Returns the publish's row id (>0) or -1. */
int64_t store_publish_add(store_t *store, const char *sender, const uint8_t message_id[16],
                          const uint8_t content_hash[32], const uint8_t signature[64],
                          const uint8_t root[32], int64_t accepted_at);

/* store_publish_add, with the publish's retention starting at retain_until
 * when that is later than accepted_at: the caller that knows how long its
 * items' deliveries will keep it saves their raising it. */
int64_t store_publish_add_retained(store_t *store, const char *sender, const uint8_t message_id[16],
                                   const uint8_t content_hash[32], const uint8_t signature[64],
                                   const uint8_t root[32], int64_t accepted_at,
                                   int64_t retain_until);

/* Attach the Accepted frame bytes that answer this publish (sent again for a
 * repeat). Stored in clear: it must hold ids and seqs only. Returns 0 or -1. */
int store_publish_set_reply(store_t *store, int64_t publish_id, const uint8_t *accepted,
                            size_t len);

/* Store one signed item (its exact bytes, sealed, as evidence). Its
 * retention starts at the publish's accepted_at and is raised by each of its
 * deliveries. Returns the item's broker sequence number (>0) or -1. */
int64_t store_item_add(store_t *store, int64_t publish_id, uint32_t item_index, const uint8_t *item,
                       size_t len);

/* store_item_add, with the item's retention starting at retain_until when
 * that is later than the publish's accepted_at: the caller that knows how
 * long the item's deliveries will keep it saves their raising it. For the
 * publish added in the same transaction, the item is written without
 * reading the publish back, and so are its deliveries' checks (the facts
 * are the ones store_publish_add wrote). */
int64_t store_item_add_retained(store_t *store, int64_t publish_id, uint32_t item_index,
                                const uint8_t *item, size_t len, int64_t retain_until);

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
    int64_t expires_at;  /* the rule's retention ends here; store_expire removes it then */
    const uint8_t *body; /* serialized, filtered Signal or CaseEvent (sealed at rest) */
    size_t body_len;
    /* NULL for a signal. Set: the delivery belongs to this case (which must
     * exist); with is_case_event the body is the CaseEvent filtered for the
     * recipient's membership rule, and item_seq names the case command's
     * item (its evidence). Its item then lives as long as the case (see
     * store_case_item_link). */
    const char *case_id;
    int is_case_event; /* 0 or 1; 1 needs case_id */
    /* 1: a signal's delivery by reference (case_id NULL): its content is
     * the item's own signed Signal reduced to `fields` (policy FIELD_* bits)
     * when it is pushed, so an item's bytes are stored once whatever its
     * fan-out. On add, body is then ignored and the mask is what is sealed;
     * a scan hands out the item's opened bytes as body and the mask in
     * fields, and the caller reduces them. 0: body is the content. */
    int by_ref;
    uint32_t fields;
} store_delivery_t;

/* Queue a delivery into a recipient's mailbox. Reads every field of d except
 * seq; raises the retention of the item and its publish to d->expires_at.
 * Refuses is_case_event without case_id, a case id of the wrong length and
 * an unknown case. Returns the new seq (>0) or -1. */
int64_t store_delivery_add(store_t *store, const store_delivery_t *d);

/* Set aside n (>= 1) consecutive delivery seqs in the open transaction, for
 * deliveries whose seqs the caller hands out itself (a publish's, recipient
 * by recipient: publish.c). Returns the first, or -1 (no transaction open,
 * n 0, seqs exhausted). The counter moves past them at once: a seq set aside
 * and never added is a gap, as one rolled back is. Replaces the previous
 * reservation. */
int64_t store_delivery_seqs_reserve(store_t *store, uint64_t n);

/* store_delivery_add at d->seq, which must be one of the last reservation's
 * and the transaction the same; the table refuses a seq added twice (-1).
 * Returns d->seq, or -1. */
int64_t store_delivery_add_reserved(store_t *store, const store_delivery_t *d);

/* Call fn for up to `limit` deliveries of `recipient` with seq > after_seq,
 * in seq order. The delivery passed to fn is only valid during the call
 * (its body is wiped when fn returns). fn returns 0 to continue, non-zero to
 * stop. Returns the number visited or -1; a body that does not authenticate
 * (wrong key, tampered row: any column its seal binds, the envelope
 * included) stops the scan with -1 and the message "body of mailbox row N
 * does not authenticate: ..." (or "damaged row: ..."), and
 * store_scan_unreadable names the row (store_mailbox_row_set_aside; the
 * mailbox is kept as rows of one publish and recipient:
 * store_mailbox.h). fn must not call store functions:
 * the scan's statement is live, and they return -1. */
typedef int (*store_delivery_fn)(const store_delivery_t *d, void *arg);
int store_mailbox_scan(store_t *store, const char *recipient, uint64_t after_seq, size_t limit,
                       store_delivery_fn fn, void *arg);

/* store_mailbox_scan with a hint, for a caller that keeps item content
 * (deliver.c): have_item(item_seq, arg) returning non-zero says the caller
 * holds the content of that item already, taken from an earlier row of the
 * same pass with no store write in between, or from the publish that
 * stored that item, after its commit. A delivery by reference to such an
 * item then comes with body NULL, body_len 0 and its fields set: the
 * item's body is not read and not opened again. Everything else is as for
 * store_mailbox_scan: the delivery's own sealed body (its field mask) is
 * opened and authenticated for every row, a row whose item is gone is an
 * error, and a body that does not authenticate stops the scan with -1.
 * have_item NULL: exactly store_mailbox_scan. have_item must not call
 * store functions. */
typedef int (*store_have_item_fn)(uint64_t item_seq, void *arg);
int store_mailbox_scan_hinted(store_t *store, const char *recipient, uint64_t after_seq,
                              size_t limit, store_have_item_fn have_item, store_delivery_fn fn,
                              void *arg);

/* store_mailbox_scan_hinted for a caller that also keeps what it wrote
 * (deliver.c): vouch(d, &fields, arg) is asked for each delivery by
 * reference once its row's columns are read (d as fn would get it, body
 * NULL), and returns non-zero only when the caller wrote this very
 * delivery in this process, after its commit, and every column of d is
 * what it wrote (seq, recipient, item, and the whole envelope the seal
 * binds): then *fields is the field mask it sealed, and the row is
 * neither opened nor its envelope hashed; its item is not read (as for
 * have_item). A row it does not vouch for is opened and authenticated as
 * always, so an altered row still stops the scan. hints NULL, or both
 * NULL: exactly store_mailbox_scan. Neither may call store functions. */
typedef int (*store_vouch_fn)(const store_delivery_t *d, uint32_t *fields, void *arg);
typedef struct store_scan_hints {
    store_have_item_fn have_item;
    store_vouch_fn vouch;
} store_scan_hints_t;
int store_mailbox_scan_vouched(store_t *store, const char *recipient, uint64_t after_seq,
                               size_t limit, const store_scan_hints_t *hints, store_delivery_fn fn,
                               void *arg);

/* Count a recipient's pending (unacked) deliveries; -1 on error. */
int64_t store_mailbox_count(store_t *store, const char *recipient);

/* ------------------------------------------------------------------ space */

/* The bytes an item of len bytes takes in the store as sealed (the
 * partners' sums below count these). */
size_t store_sealed_len(size_t len);

/* The sealed bytes of the items a sender partner (all its principals) has
 * in the store, with the open transaction's own (0 for a partner with
 * none). Kept in memory, exact: learnt at open from the stored_bytes
 * table, followed on every item added and removed, changes of a
 * transaction counted once it commits (a rollback drops them). Cost: one
 * hash lookup. */
int64_t store_partner_bytes(store_t *store, const char *partner);

/* Outside a transaction: the sums in memory against stored_bytes and
 * against the items themselves (a walk of every item). 0 when all agree,
 * 1 when not (problem names the first partner that differs), -1 on error.
 * For tests and diagnosis. */
int store_partner_bytes_verify(store_t *store, char *problem, size_t len);

/* Room the store has left: what the file system has for the store file's
 * folder for users other than root (statvfs f_bavail * f_frsize; disk
 * quotas are not counted) plus the store's free pages (SQLite's freelist,
 * reused before the file grows), these only while the file system has
 * SCHAKEL_STORE_WAL_RESERVE_BYTES: the WAL, a file of its own, grows into
 * the file system's blocks, never into free pages. Cost: a statvfs and a
 * PRAGMA; the caller measures once a second, not per publish. 0 with the
 * three, or -1 (store_errmsg). */
typedef struct store_space {
    uint64_t free_bytes;     /* fs_free_bytes, + freelist_bytes from the reserve up */
    uint64_t fs_free_bytes;  /* the file system's */
    uint64_t freelist_bytes; /* the store's free pages */
} store_space_t;
int store_space(store_t *store, store_space_t *space);

/* The first recipient after `after` ("" for the first of all), in byte
 * order, with a pending delivery, into out (outlen bytes; an id that does
 * not fit is an error). 1 when there is one, 0 when none is left, -1 on
 * error. Cost: one descent of the mailboxes' recipient index, so walking
 * every recipient costs O(recipients * log n), not O(deliveries). */
int store_mailbox_next_recipient(store_t *store, const char *after, char *out, size_t outlen);

/* The seqs of up to `limit` pending deliveries of recipient, oldest first,
 * into seqs. Returns how many, or -1. Cost: O(log n + limit). */
int store_mailbox_oldest(store_t *store, const char *recipient, uint64_t *seqs, size_t limit);

/* Pending (unacked) deliveries in every mailbox together; -1 on error.
 * O(pending deliveries): for operators' status, not for the routing path. */
int64_t store_backlog_total(store_t *store);

/* The highest seq of any pending delivery (0 when none), -1 on error. */
int64_t store_delivery_last_seq(store_t *store);

/* Mark an acked delivery done, inside a transaction only: its mailbox row
 * is written (updated, or deleted with its last pending delivery) once at
 * the commit (store_mailbox_row_ack). Returns 1 when marked, 0 when the
 * recipient has no such pending delivery (unknown, already acked, or
 * someone else's), -1 on error. Seqs are never reused. */
int store_delivery_ack(store_t *store, const char *recipient, uint64_t seq);

/* The rule that decided a pending delivery, as its row names it. */
typedef struct store_delivery_rule {
    char rule_id[SCHAKEL_MAX_ID_LEN + 1];
    char rule_hash[65];
    /* a case's delivery: its case ("" for a signal's); rule_id then
     * names a membership rule */
    char case_id[SCHAKEL_CASE_ID_LEN + 1];
} store_delivery_rule_t;

/* The rule of recipient's pending delivery seq, for the check an ack
 * makes that the policy still allows it (deliver.c). The columns are
 * read in clear, not authenticated: a row altered outside the broker is
 * found by the push, which opens every row before it sends it. 1 with
 * *out filled; 0 when recipient has no such pending delivery (or its
 * rule or case does not fit *out: no honest row); -1 on error. Cost: one rowid
 * lookup, O(log n). */
int store_delivery_rule(store_t *store, const char *recipient, uint64_t seq,
                        store_delivery_rule_t *out);

/* ------------------------------------------------------------------ retention */

/* One expired delivery, as recorded in its tombstone. Borrowed: valid only
 * during the callback. */
typedef struct store_expired {
    uint64_t seq;
    const char *recipient;
    uint64_t item_seq;
    const char *rule_id;
    const char *rule_hash;
    int64_t expires_at;
    int set_aside; /* of a row of mailbox_set_aside (never sent), not a waiting one */
    /* Its seq had a tombstone already (a row put back from a backup after
     * it had expired): that one is kept, no second one is added. */
    int tombstoned_before;
} store_expired_t;

typedef void (*store_expired_fn)(const store_expired_t *e, void *arg);

/* A store_expired_t kept past its callback: its strings are the
 * statement's and go once it is reset, so a caller that records the
 * removal after the store call returned (an audit entry, which writes to
 * the store) copies it here first. */
typedef struct store_expired_copy {
    store_expired_t view; /* points into the copies below */
    char recipient[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    char rule_id[SCHAKEL_MAX_ID_LEN + 1];
    char rule_hash[65];
} store_expired_copy_t;

void store_expired_copy_set(store_expired_copy_t *copy, const store_expired_t *e);

/* Retention expiry, one bounded step. Inside the caller's open transaction
 * (-1 with an error if none is open): removes up to `limit` deliveries whose
 * expires_at <= now, whether or not their recipient ever came back, each leaving a
 * tombstone (seq, recipient, item_seq, rule id and hash, expires_at,
 * expired_at = now; no content; a seq that has one already keeps it, and
 * fn is told tombstoned_before) and calling fn (may be NULL), waiting ones
 * first, then set-aside ones (set_aside 1; one whose expires_at is no
 * integer in range is due now) within the same limit; then up to
 * `limit` items, and up to `limit` publishes, whose expires_at <= now and
 * that no remaining delivery or item references; then up to `limit` case
 * events whose expires_at <= now (no tombstone: the case's own timeline),
 * and up to `limit` cases whose expires_at <= now and that no remaining
 * event or delivery names, each with its member rows. Bodies are removed, not
 * flagged; with secure_delete their bytes are overwritten in the database
 * file (store_checkpoint clears the WAL). fn runs inside the transaction: a
 * rollback undoes what it was told; it must not call store functions.
 * Returns the number of rows removed (0 = nothing due), or -1.
 * Cost: O(limit * log n) whatever the backlog, so the broker can call it
 * every turn without stalling routing. */
int store_expire(store_t *store, int64_t now, size_t limit, store_expired_fn fn, void *arg);

/* ------------------------------------------------------------------ set aside */

/*
 * A waiting row that does not authenticate (its sealed body, the clear
 * columns its seal binds, or the content of an item a delivery of it
 * refers to: a row altered or damaged outside the broker) cannot be sent,
 * and since a mailbox goes out in seq order it would hold up everything
 * after it for its recipient. It is set aside whole instead
 * (store_mailbox_row_set_aside, store_mailbox.h): each of its deliveries
 * not done is then read per seq below, for its trail entry. A rekey leaves
 * the set-aside rows as they are.
 */
#define STORE_SET_ASIDE_REASON_LEN 256

/* One delivery set aside, copied out of its row (a damaged text that is
 * missing or too long reads as ""). */
typedef struct store_set_aside {
    store_expired_copy_t row; /* seq, recipient, item_seq, rule, expires_at */
    char reason[STORE_SET_ASIDE_REASON_LEN];
} store_set_aside_t;

/* The seq at which the last store_mailbox_scan of this handle stopped
 * because the row does not authenticate or reads damaged (the row's
 * first seq, which store_mailbox_row_set_aside takes), or 0 when the last
 * scan did not stop so
 * (it succeeded, or failed otherwise: out of memory, an SQLite error). */
uint64_t store_scan_unreadable(const store_t *store);


/* Deliveries set aside that no "delivery.set_aside" audit entry names:
 * those a schema migration set aside (9: a row that does not open under
 * the layout of schema 8; 13: one that does not open, or has no row
 * form), at this open or at an earlier one whose opener could not record
 * them, and those an expiry sweep or a purge set aside in a turn whose
 * entries are written before its commit (record_set_aside_in_turn). Whoever opens a store records
 * them before anything else (the broker at its start, schakeld --rekey
 * and --restored): the push records its own set-asides in the same
 * transaction. Up to max of their seqs greater than `after`, in seq
 * order: how many (0: none left), or -1. Safe on any file content. */
int store_set_aside_unrecorded(store_t *store, uint64_t after, uint64_t *seqs, size_t max);

/* Delivery seq of a set-aside row, copied into *out: 1; 0 when no
 * set-aside row holds it not done; -1 on error. */
int store_set_aside_get(store_t *store, uint64_t seq, store_set_aside_t *out);

/* Deliveries set aside (of mailbox_set_aside's rows, those not done); -1
 * on error. O(rows): for metrics and operators, a table that is empty
 * unless something went wrong. */
int64_t store_set_aside_count(store_t *store);

/* One delivery of a mailbox as an operator may see it (store_mailbox_list):
 * the clear columns of its row, never its body. Pointers borrow the row
 * and live during the callback only. A row set aside keeps its columns as
 * they were, damage included: a column that does not hold what the broker
 * writes there reads as NULL or 0. */
typedef struct store_listed {
    uint64_t seq;
    uint64_t item_seq;
    const char *sender;        /* the sending principal */
    const uint8_t *message_id; /* 16 bytes (a case event: its command's id), or NULL */
    uint32_t item_index;
    const char *rule_id; /* the rule (or case membership rule) that decided it */
    const char *rule_hash;
    const char *case_id; /* NULL: a signal's delivery */
    int is_case_event;
    uint64_t event_seq; /* a case event's, as its delivery.queued entry names it; 0: none */
    int64_t queued_at;  /* its row's accepted_at: when the publish or command was taken */
    int64_t expires_at;
    int set_aside; /* 1: of a row of mailbox_set_aside (set_aside_at, reason) */
    int64_t set_aside_at;
    const char *reason;
} store_listed_t;
typedef int (*store_listed_fn)(const store_listed_t *d, void *arg);

/* Call fn for up to `limit` deliveries of `recipient` with seq > after_seq,
 * waiting ones and ones set aside together, in seq order; fn returns
 * non-zero to stop (and must not call store functions). Opens nothing:
 * no body is read. Returns the number visited or -1 (store_errmsg).
 * Cost: one descent of the (recipient, seq) index and a rowid lookup per
 * waiting row; the rows set aside after after_seq are read and tested
 * (no index by recipient: O(rows set aside), none unless something went
 * wrong); per case event one lookup of the trail's delivery_seq index
 * for its event seq; each part stops at `limit` rows. Read-only. */
int store_mailbox_list(store_t *store, const char *recipient, uint64_t after_seq, size_t limit,
                       store_listed_fn fn, void *arg);

/* Remove one pending delivery of `recipient` before its retention ends,
 * because the policy in force no longer allows it: a tombstone (expired_at
 * = now) stays and fn is told, as for an expiry. Inside the caller's
 * transaction. Returns 1 when removed, 0 when it is no longer pending
 * (acked or expired meanwhile), -1 on error. */
int store_delivery_revoke(store_t *store, const char *recipient, uint64_t seq, int64_t now,
                          store_expired_fn fn, void *arg);

/* Checkpoint the WAL into the database file and truncate the WAL, so old
 * page images (expired ciphertext among them) do not linger in the -wal
 * file. Call on clean shutdown and after expiry sweeps now and then; not
 * inside a transaction (-1). Does not wait: while another connection (an
 * operator's backup) reads, it returns -1 at once, classified unavailable;
 * try again later. Returns 0 when the WAL is empty. */
int store_checkpoint(store_t *store);

/* ------------------------------------------------------------------ store epoch */

/* The store epoch names the store's history: 16 random bytes made with the
 * store (schakeld --init; a store from before epochs gets them at its
 * first open), the same for as long as the store goes on from what it
 * accepted (restarts, a rekey), and new after every restore from a backup
 * (store_epoch_renew), which loses what was accepted after the backup.
 * Clients are told it in the Heartbeat answer (docs/PROTOCOL.md 4.9): one
 * that remembers what the broker accepted (an import's journal) compares
 * it. Not secret; kept in clear in meta. */

/* Copy the epoch of the open store into epoch. */
void store_epoch(const store_t *store, uint8_t epoch[SCHAKEL_STORE_EPOCH_BYTES]);

/* The epoch's floor seq: the highest item seq the backup it was restored
 * from had handed out (its counter, forgotten items counted), 0 for an
 * epoch made with the store. Every item accepted before that backup was
 * taken has a seq no higher, every one accepted after it (in any epoch:
 * store_counters_move goes past the replaced store's counters) a higher
 * one, so a client that recorded the seqs of its publishes knows which the
 * restored store has, or forgot on purpose (docs/PROTOCOL.md 4.9). 1 with
 * *floor, or 0 (*floor 0) when it is unknown: a restore that went on
 * without the replaced store's counters, whose seqs may be handed out
 * again, or a store restored by a broker from before floors. */
int store_epoch_floor(const store_t *store, uint64_t *floor);

/* A restore: give the store a new random epoch with the floor seq *floor
 * (NULL: unknown; one above INT64_MAX is refused), in the open
 * transaction (store_begin is called if none is open); the caller
 * commits. *was (may be NULL) gets the old one, *now the new one, which
 * this handle reports at once with its floor (as store_counters_move's
 * counters: a caller that does not commit closes the handle). 0, or -1
 * with store_errmsg. */
int store_epoch_renew(store_t *store, const uint64_t *floor, uint8_t was[SCHAKEL_STORE_EPOCH_BYTES],
                      uint8_t now[SCHAKEL_STORE_EPOCH_BYTES]);

/* ------------------------------------------------------------------ restore */

/* What a restored store hands out next (store_counters_move). */
typedef struct store_counters {
    uint64_t next_item_seq;
    uint64_t next_delivery_seq;
    uint64_t next_case_num;
} store_counters_t;

/* After a backup was put in place (docs/OPERATIONS.md "Restoring a
 * backup"): move the counters of item seqs, delivery seqs and case numbers
 * past anything the lost state after the backup can have handed out, so
 * that no seq or case id is given twice: each next value becomes the
 * larger of what it would have been and *floor (the store being replaced,
 * which may have handed out more: NULL for none), plus seq_margin (items,
 * deliveries) or case_margin (cases), a counter never used before
 * included. In the open transaction (store_begin is called if none is
 * open); the caller commits. Case numbers (eight digits) are capped: when
 * fewer than case_margin are left, the next case number goes past the
 * last (SCHAKEL_CASE_NUM_MAX + 1, none left: opens are refused), never
 * back to one the lost state may have used. Refuses (-1, store_errmsg,
 * nothing changed) when seqs would run out. Fills *before
 * (may be NULL: the store's own next values) and *after. Returns 0 or -1. */
int store_counters_move(store_t *store, uint64_t seq_margin, uint64_t case_margin,
                        const store_counters_t *floor, store_counters_t *before,
                        store_counters_t *after);

/* The next values of a store file's counters, read without its key and
 * without writing (a raw read-only connection: its WAL is read, not
 * changed). 0 with *next; 1 with the seqs in *next but its case counter
 * unreadable (next_case_num 1, err says why); -1 with err (a file that is
 * not a readable store). */
int store_counters_of_file(const char *path, store_counters_t *next, char *err, size_t errlen);

/* ------------------------------------------------------------------ key rotation */

typedef struct store_rekey_counts {
    uint64_t items;      /* item bodies re-sealed */
    uint64_t mailbox_rows; /* mailbox rows re-sealed (each holds one or more deliveries) */
} store_rekey_counts_t;

/* Re-seal the store under new_key (STORE_KEY_BYTES; copied, the caller
 * wipes its own). In one transaction: every item and delivery body (and
 * every case title and case event, which *counts does not count) is
 * opened under the current key and sealed under new_key with a fresh nonce
 * and the same associated data, and the key check is rewritten; after the
 * commit the store uses new_key, and store_open accepts only new_key from
 * then on. On any failure (a body that does not authenticate, a storage
 * error) nothing changes: the store stays under the old key, on disk and
 * in memory. Refused (-1) inside an open transaction and from callbacks.
 * Locks the store exclusively for its duration and fails ("the store is
 * open elsewhere", classified unavailable) after the busy timeout while
 * any other connection has it open, such as a running broker: run it with
 * the broker stopped. After that refusal, close this handle: SQLite keeps
 * a pending lock on it that keeps new connections out until then. Memory
 * is bounded (one row at a time); time and WAL growth are linear in the
 * store's size. Fills *counts (may be NULL; zeros on failure). Returns 0,
 * -1 (nothing changed), or -2 when the commit succeeded but syncing it to
 * disk failed: the store is under new_key as far as SQLite knows (the
 * handle uses it), the disk may still hold the old state, and the handle
 * refuses every later call (store_sync_failed). Old ciphertexts stay in the
 * WAL until store_checkpoint, and in backups made before. */
int store_rekey(store_t *store, const uint8_t new_key[STORE_KEY_BYTES],
                store_rekey_counts_t *counts);

/* store_rekey, and before its commit `record` (if not NULL) is called
 * inside the rekey's transaction with the counts, to write the rotation's
 * audit entry (audit_append works there); non-zero from it rolls the
 * whole rekey back (store_errmsg says why). */
typedef int (*store_rekey_record_fn)(store_t *store, const store_rekey_counts_t *counts, void *arg);
int store_rekey_recorded(store_t *store, const uint8_t new_key[STORE_KEY_BYTES],
                         store_rekey_counts_t *counts, store_rekey_record_fn record, void *arg);

/* ------------------------------------------------------------------ cases */

/*
 * Cases (store_case.c): a case row (id, type, lead partner, sealed title,
 * open or closed, times, the seq of its last event), its member partners
 * with their states and membership rules, and its timeline of events (the
 * full, unfiltered CaseEvent bytes, sealed). What members receive are
 * ordinary mailbox deliveries (store_delivery_add with case_id set), so
 * they are pushed, acked, redelivered and expired like signals.
 *
 * Retention follows the case: while it is open its rows, events and
 * deliveries expire at STORE_CASE_OPEN_EXPIRY (never, in practice); at the
 * close the broker sets closed_at + retention_after_close for all of them
 * (store_case_set_expiry), and store_expire removes them after that.
 *
 * Case ids are "C-" and 8 decimal digits, from a counter that is never
 * reused (not even after the case expired), in order of creation; a
 * rolled-back create leaves a gap. Unless said otherwise the functions
 * below return 0 or -1, refuse a case id that names no case (-1, "no such
 * case"), accept any case_id text (a wrong one is simply not found), and
 * may run outside a transaction (each is one statement). Strings handed to
 * callbacks are borrowed for the call; callbacks must not call store
 * functions (they return -1), as for store_mailbox_scan.
 */

/* expires_at of a case that is open, and of its events and deliveries. */
#define STORE_CASE_OPEN_EXPIRY (INT64_MAX / 2)

typedef struct store_case {
    char case_id[SCHAKEL_CASE_ID_LEN + 1];
    const char *case_type, *lead, *title; /* valid until the next store call */
    int closed;
    int64_t opened_at, closed_at; /* closed_at: 0 while open (and after a reopen) */
    uint64_t last_event_seq;      /* 0 until the first event */
    int64_t expires_at;           /* retention end (STORE_CASE_OPEN_EXPIRY while open) */
} store_case_t;

/* A new case: the next id (written to case_id_out), open, no members and
 * no events, expiring at STORE_CASE_OPEN_EXPIRY. case_type and lead are id
 * tokens of at most SCHAKEL_MAX_ID_LEN bytes (presence and size checked
 * here, syntax by the caller); title may be NULL (empty), at most
 * SCHAKEL_MAX_CASE_TITLE_LEN bytes, and is sealed. -1 once 99999999 ids
 * are used. A create whose transaction rolls back (store_rollback, a
 * failed or lost commit) used no number: the next create gets it. Cost:
 * one insert and two index inserts, O(log n). */
int store_case_create(store_t *store, const char *case_type, const char *lead_partner,
                      const char *title, int64_t now, char case_id_out[SCHAKEL_CASE_ID_LEN + 1]);

/* How many case ids store_case_create can still hand out (0 up to
 * SCHAKEL_CASE_NUM_MAX): the counter as this store holds it, a create not
 * yet committed included. O(1); safe on any open store. */
int64_t store_case_ids_left(const store_t *store);

/* 1 and *out filled when the case exists, 0 when not (any case_id text,
 * NULL excepted), -1 on error (a title that does not authenticate
 * included). out's strings live in the store until the next store call.
 * Cost: one index lookup and the title's decryption. */
int store_case_get(store_t *store, const char *case_id, store_case_t *out);

/* Wipe the strings the last store_case_get (or case listing) left in the
 * store (the title is plaintext): the broker calls it at the end of each
 * turn. Safe on a store that read no case. */
void store_case_forget(store_t *store);

/* Record a close (closed = 1: closed_at = now) or a reopen (closed = 0:
 * closed_at = 0). Records what it is told: the state machine is the
 * caller's. Retention is store_case_set_expiry's. */
int store_case_set_closed(store_t *store, const char *case_id, int closed, int64_t now);

/* Member states: 'i' invited, 'm' member, 'd' declined, 'l' left/removed. */
#define STORE_CASE_INVITED 'i'
#define STORE_CASE_MEMBER 'm'
#define STORE_CASE_DECLINED 'd'
#define STORE_CASE_LEFT 'l'

/* Set partner's state in the case (creating its row), with the membership
 * rule that admits it. rule_id and rule_hash may be NULL for a partner
 * that has a row: its rule stays (declined, left); a new row needs them.
 * Refuses a state not listed above, and an invited or member partner
 * beyond SCHAKEL_MAX_CASE_MEMBERS of them. Records what it is told (the
 * transitions are the caller's). Cost: O(log n + members). */
int store_case_member_set(store_t *store, const char *case_id, const char *partner, char state,
                          const char *rule_id, const char *rule_hash, int64_t now);

/* 1 and *state set when partner has a row in the case, 0 when not (or no
 * such case), -1 on error. */
int store_case_member_get(store_t *store, const char *case_id, const char *partner, char *state);

/* fn for each partner with a row in the case (every state), in the order
 * they were first added; fn returns non-zero to stop. Returns the number
 * visited (0 also for an unknown case) or -1. */
typedef int (*store_case_member_fn)(const char *partner, char state, const char *rule_id,
                                    const char *rule_hash, void *arg);
int store_case_members(store_t *store, const char *case_id, store_case_member_fn fn, void *arg);

/* Append one event: the full, unfiltered CaseEvent bytes (at most
 * SCHAKEL_MAX_FRAME_BYTES), sealed. event_seq must be the case's
 * last_event_seq + 1 (refused otherwise), which it then becomes. The event
 * expires with the case (its current expiry). Cost: O(log n) plus sealing. */
int store_case_event_add(store_t *store, const char *case_id, uint64_t event_seq, int64_t now,
                         const uint8_t *event, size_t len);

/* fn for each event with event_seq > after_event_seq, in order, with the
 * body opened (valid and wiped when fn returns). fn returns non-zero to
 * stop. To make store calls per event, take one at a time: stop after the
 * first and call again from its seq (one index descent each). Returns the
 * number visited (0 for an unknown case) or -1 (a body that does not
 * authenticate: "body of case C-... event N does not authenticate"). */
typedef int (*store_case_event_fn)(uint64_t event_seq, const uint8_t *event, size_t len, void *arg);
int store_case_events(store_t *store, const char *case_id, uint64_t after_event_seq,
                      store_case_event_fn fn, void *arg);

/* fn for each case in which partner is invited or a member (a case it
 * declined or left is not read: its title is not unsealed), in the order
 * of the case ids; my_state is that row's state. c and its
 * strings are valid during the call. Returns the number visited or -1.
 * Cost: O(log n + cases of the partner), one title decryption each. */
typedef int (*store_case_fn)(const store_case_t *c, char my_state, void *arg);
int store_cases_of_partner(store_t *store, const char *partner, store_case_fn fn, void *arg);

/* fn for each (case type, lead partner) that open cases have, with how many
 * (fn returns non-zero to stop). Returns the number visited or -1. Cost: a
 * walk of the cases table. */
typedef int (*store_case_kind_fn)(const char *case_type, const char *lead, uint64_t open_cases,
                                  void *arg);
int store_open_case_kinds(store_t *store, store_case_kind_fn fn, void *arg);

/* Remove every pending delivery of this case to `recipient`: one principal
 * id, or a partner id meaning every principal of that partner, listed in
 * the policy or not (the partner left or was removed), each leaving a tombstone as a
 * revocation does (expired_at = the wall clock). Inside the caller's
 * transaction (-1 without one). Returns the number removed or -1.
 * store_case_drop_deliveries_at is the same with the broker's clock and
 * a callback per removed delivery (as store_delivery_revoke's: it runs in
 * the transaction and must not call store functions), so that the caller
 * can release what it had in flight. A row of the case that does not read
 * (damage: it could be neither removed nor sent) is set aside whole
 * instead, its deliveries named by no entry yet (store_set_aside_unrecorded:
 * the caller records them in the same transaction). Cost: O(k log n) for
 * k removed. */
int store_case_drop_deliveries(store_t *store, const char *case_id, const char *recipient);
int store_case_drop_deliveries_at(store_t *store, const char *case_id, const char *recipient,
                                  int64_t now, store_expired_fn fn, void *arg);

/* Retention from the close: the case row, its events, its pending
 * deliveries and the items and publishes of its commands (see
 * store_case_item_link) all expire at expires_at: closed_at +
 * retention_after_close at a close, STORE_CASE_OPEN_EXPIRY at a reopen.
 * Events and deliveries added later take the case's expiry (events) or
 * their own (deliveries: the caller passes the same). A pending delivery's
 * expiry is part of the envelope its seal binds, so each is opened and
 * sealed again for the new one. One that does not authenticate (a row
 * altered in the file) takes the new expiry but keeps its body as it was:
 * it stays refused wherever it is read, and leaves with the case; the
 * close is not held up by it. Inside the caller's transaction (-1 without
 * one), one outcome. Returns the number of such deliveries (0 when all
 * were re-sealed; errmsg then names the last of them), or -1. Cost:
 * O((events + pending deliveries + commands) log n), and a decryption
 * and an encryption per pending delivery. */
int store_case_set_expiry(store_t *store, const char *case_id, int64_t expires_at);

/* Tie an item (the evidence of a case command) to the case's retention:
 * it and its publish expire with the case, not before. A delivery with
 * case_id does this for its item by itself; call it for a command that
 * queued no delivery, whose item would otherwise expire at its
 * accepted_at. Never shortens the item's retention here (only
 * store_case_set_expiry sets it). Refuses an unknown item. */
int store_case_item_link(store_t *store, const char *case_id, uint64_t item_seq);

/* The opened body of item item_seq (a signed signal, or a case command),
 * for linking a signal to a case: *body is malloc'd (the caller wipes it
 * with sodium_memzero and frees it), *len its length. Whether the asker
 * may have it (a delivery of it reached its partner) is the caller's
 * check. Returns 1, 0 when no such item (expired, never stored), -1 on
 * error (a body that does not authenticate included). Cost: one rowid
 * lookup and a decryption. */
int store_item_get(store_t *store, uint64_t item_seq, uint8_t **body, size_t *len);

/* ------------------------------------------------------------------ audit trail */

/*
 * The audit trail (store_audit.c): append-only rows of metadata, never
 * sealed, so that an auditor can check it with the store file and the
 * broker's public key alone. The store keeps the rows; audit.c computes
 * each entry's chain hash and signs the checkpoints.
 *
 * Fields of an entry, in the order of its canonical encoding
 * (docs/OPERATIONS.md "Audit trail"). Each is absent, text or an integer
 * (store_audit_fields says which and names its column).
 */
enum store_audit_field {
    STORE_AUDIT_EVENT,             /* text, always present: "delivery.queued" */
    STORE_AUDIT_ACTOR,             /* text: the principal who acted */
    STORE_AUDIT_PEER,              /* text: network address (handshakes) */
    STORE_AUDIT_CURVE_KEY,         /* text: Z85 CURVE key (handshakes) */
    STORE_AUDIT_RECIPIENT,         /* text: principal a delivery is for */
    STORE_AUDIT_RECIPIENT_PARTNER, /* text: that principal's partner */
    STORE_AUDIT_MESSAGE_ID,        /* text: hex of the publish's message id */
    STORE_AUDIT_ITEM_INDEX,        /* integer */
    STORE_AUDIT_ITEM_SEQ,          /* integer */
    STORE_AUDIT_DELIVERY_SEQ,      /* integer: mailbox seq */
    STORE_AUDIT_KIND,              /* text */
    STORE_AUDIT_THEME,             /* text */
    STORE_AUDIT_SUBJECT_TAG,       /* text: store_subject_tag of the pseudonym (indexed) */
    STORE_AUDIT_RULE_ID,           /* text */
    STORE_AUDIT_RULE_HASH,         /* text */
    STORE_AUDIT_PURPOSE,           /* text */
    STORE_AUDIT_LEGAL_BASIS,       /* text */
    STORE_AUDIT_FIELDS,            /* text: signal fields the recipient got, comma-separated */
    STORE_AUDIT_EXPIRES_AT,        /* integer: Unix seconds */
    STORE_AUDIT_REASON,            /* text: reason code or cause of a refusal */
    STORE_AUDIT_DETAIL,            /* text: further metadata, key=value words */
    /* text (schema 6): the deliveries a "delivery.acked" entry records, as
     * canonical seq list (store_audit_seqs_parse); encoded only when
     * present, so that entries written before it hash as they did */
    STORE_AUDIT_DELIVERY_SEQS,
    /* text (schema 7): the deliveries a "delivery.queued" entry records, in
     * the canonical form of store_audit_deliveries_parse; encoded only when
     * present, like delivery_seqs */
    STORE_AUDIT_DELIVERIES,
    STORE_AUDIT_FIELD_COUNT
};

typedef struct store_audit_field_info {
    const char *name; /* column name, and the entry's JSON key */
    int is_integer;
    /* A field added after the first 21 (a late field): the canonical
     * encoding leaves it out when absent (instead of an absent tag) and
     * names it by its number when present, so that no two late fields can
     * trade places (audit_entry_encode). */
    int encoded_if_present;
} store_audit_field_info_t;

/* Seqs one "delivery.acked" entry lists at most: a receiver's largest
 * window (SCHAKEL_MAX_WINDOW), so that one recipient's acks of one turn
 * fit one entry whenever it acks only what it was sent. */
#define STORE_AUDIT_MAX_ACKED_SEQS 1024u

/* A seq list as an entry's delivery_seqs holds it: 1 to
 * STORE_AUDIT_MAX_ACKED_SEQS decimal seqs in 1..INT64_MAX, strictly
 * ascending, without leading zeros, separated by single commas ("7,9,12").
 * One spelling per set of seqs, so the hash covers the set. Returns the
 * number of seqs (and the first min(n, max) of them in seqs, which may be
 * NULL), or 0 when text is not such a list. Safe on any input. */
size_t store_audit_seqs_parse(const char *text, uint64_t *seqs, size_t max);

/* The run of consecutive seqs that starts at seqs[i] (i < n, seqs
 * ascending): returns the index just past its last seq. An acked entry's
 * seqs are indexed a row per run (store_audit_append). */
size_t store_audit_seqs_run(const uint64_t *seqs, size_t n, size_t i);

/* Deliveries one "delivery.queued" entry lists at most, and the bytes of
 * its deliveries text at most. */
#define STORE_AUDIT_MAX_QUEUED_DELIVERIES 1024u
#define STORE_AUDIT_MAX_DELIVERIES_TEXT (1024u * 1024u)

/* One delivery of a "delivery.queued" entry's deliveries text. Texts are
 * spans of that text (not NUL-terminated where a length is given);
 * recipient_partner is the part of the recipient before '/'. */
typedef struct store_audit_delivery {
    uint64_t seq;
    const char *recipient;
    size_t recipient_len;
    size_t recipient_partner_len; /* recipient_partner = recipient[0 .. this) */
    const char *rule_id;
    size_t rule_id_len;
    const char *rule_hash; /* 64 lower-case hex digits */
    int64_t expires_at;
    const char *fields;
    size_t fields_len;
    const char *purpose;
    size_t purpose_len;
    const char *legal_basis;
    size_t legal_basis_len;
} store_audit_delivery_t;

/* The deliveries text of a "delivery.queued" entry (docs/OPERATIONS.md
 * "Audit trail"): first the rules, each once, in the order of their first
 * use, one line each:
 *   "rule" SP rule_id SP rule_hash SP expires_at SP fields SP
 *   LEN ":" purpose SP LEN ":" legal_basis LF
 * then the deliveries in strictly ascending seq, one line each:
 *   seq SP rule_number SP recipient LF
 * (rule_number counts the rule lines from 0; LEN is the byte count of the
 * UTF-8 text after the colon; numbers are decimal without leading zeros;
 * fields is a non-empty comma-separated list of [a-z_] words). One spelling
 * per content, so the hash covers the set. At most
 * STORE_AUDIT_MAX_QUEUED_DELIVERIES deliveries and
 * STORE_AUDIT_MAX_DELIVERIES_TEXT bytes. Returns the number of deliveries,
 * after calling fn (which may be NULL; non-zero stops the walk) for each,
 * or 0 when text is not such a list (fn is then not called). Safe on any
 * input. */
typedef int (*store_audit_delivery_fn)(const store_audit_delivery_t *delivery, void *arg);
size_t store_audit_deliveries_parse(const char *text, store_audit_delivery_fn fn, void *arg);

/* Indexed by enum store_audit_field. */
extern const store_audit_field_info_t store_audit_fields[STORE_AUDIT_FIELD_COUNT];

typedef struct store_audit_value {
    int present;
    const char *text; /* text fields: borrowed, NUL-terminated UTF-8 */
    int64_t number;   /* integer fields */
} store_audit_value_t;

#define STORE_AUDIT_HASH_BYTES 32u

/* One entry. seq counts from 1 without gaps (a rolled-back transaction
 * leaves none: its entries never existed); at is Unix seconds. */
typedef struct store_audit_entry {
    uint64_t seq;
    int64_t at;
    store_audit_value_t field[STORE_AUDIT_FIELD_COUNT];
    uint8_t hash[STORE_AUDIT_HASH_BYTES];
    /* Set by the scans on a row that cannot be an honest entry (a field of
     * the wrong type, an embedded NUL, a hash of the wrong size): why. */
    const char *damage;
} store_audit_entry_t;

/* The shape rules of the fields that name an entry's deliveries, which
 * store_audit_append enforces and audit_verify checks on every entry read
 * back (so that a rewritten entry cannot move a list between columns):
 * delivery_seqs only on a "delivery.acked" entry, a canonical seq list,
 * never with delivery_seq; deliveries only on a "delivery.queued" entry,
 * a canonical delivery list, never with the per-delivery fields it
 * replaces; never both. Returns NULL when the entry keeps them (one with
 * neither list always does), else why not (a static string). Cost: one
 * pass over each list. */
const char *store_audit_shape_problem(const store_audit_entry_t *entry);

/* A signed checkpoint: the broker's Ed25519 signature over (seq, hash, at)
 * of the entry with that seq, and the public key it signed with. */
typedef struct store_audit_checkpoint {
    uint64_t seq;
    int64_t at;
    uint8_t hash[STORE_AUDIT_HASH_BYTES];
    uint8_t key[32];
    uint8_t signature[64];
    const char *damage; /* as for entries */
} store_audit_checkpoint_t;

/* Where the trail ends: the last entry (seq 0 and a zero hash when there is
 * none) and the last checkpoint (seq 0, at 0 when there is none). */
typedef struct store_audit_tail {
    uint64_t seq;
    uint8_t hash[STORE_AUDIT_HASH_BYTES];
    uint64_t checkpoint_seq;
    int64_t checkpoint_at;
} store_audit_tail_t;

/* The tail as this connection sees it, this transaction's own entries
 * included. Cost: two index descents, or none when cached (within one
 * transaction begun with store_begin). Returns 0 or -1. */
int store_audit_tail(store_t *store, store_audit_tail_t *tail);

/* The running broker's guard on its trail (it is the trail's only writer
 * while it runs): from this call on, the handle keeps the tail (seq and
 * hash) as of its last successful commit, taken as it is now (call it
 * outside a transaction, once the trail is known to chain: audit.h
 * audit_tail_check) and moved on by each commit whose transaction read
 * the tail, never by a rollback. Every read of the stored tail that the
 * transaction's cache does not serve (the first of each transaction,
 * which comes before its first append and before a checkpoint is signed;
 * any read outside one) is compared with it, a memcmp: another tail (the
 * trail cut back, or its last entries re-appended with recomputed hashes,
 * outside the broker) is refused, -1 with store_errmsg naming both seqs,
 * so that nothing is appended or signed onto it; once one was, so is the
 * committed tail when it is found again (put back outside the broker),
 * until the next call. Returns 0, or -1. */
int store_audit_tail_guard(store_t *store);

/* The seq of the last entry committed: the guard's (store_audit_tail_guard)
 * on the broker's handle, even inside a transaction whose own entries are
 * not committed yet; else the stored tail, outside a transaction only (-1
 * inside one). A reader that stops there sees a trail that no later
 * append changes (entries are append-only: store_schema.c's triggers).
 * Returns 0 with *seq, or -1. */
int store_audit_committed_seq(store_t *store, uint64_t *seq);

/* 1 when the last read of the tail was refused by the guard: the seq the
 * trail ended at and its last entry's hash when it was last found other
 * than committed (stored_hash may be NULL), and
 * the seq and hash this handle last committed; else 0. */
int store_audit_tail_mismatch(const store_t *store, uint64_t *stored_seq,
                              uint8_t stored_hash[STORE_AUDIT_HASH_BYTES], uint64_t *committed_seq,
                              uint8_t committed_hash[STORE_AUDIT_HASH_BYTES]);

/* Inside the caller's open transaction (store_begin; -1 without one):
 * insert one entry whose seq must be the tail's + 1 and whose hash the
 * caller computed (audit.c). Text fields are refused unless valid UTF-8 of
 * at most SCHAKEL_AUDIT_MAX_TEXT_LEN bytes; a text field given an integer,
 * or the other way round, is refused; event is required. delivery_seqs
 * is refused unless it is a canonical seq list (store_audit_seqs_parse) on
 * a "delivery.acked" entry without delivery_seq; its seqs are indexed
 * with the entry, a row per run of consecutive seqs (audit_ack_ranges:
 * first seq, last seq -> entry seq), and a seq indexed before refuses it
 * ("the audit_ack_ranges index already names delivery N (run schakelctl
 * audit verify)"). deliveries is refused unless canonical
 * (store_audit_deliveries_parse) on a "delivery.queued" entry that has none
 * of the per-delivery fields it replaces (recipient, recipient_partner,
 * delivery_seq, rule_id, rule_hash, purpose, legal_basis, fields,
 * expires_at); it is not indexed by delivery seq. A failed insert leaves the transaction
 * without the entry and its index rows. Returns 0 or -1; on a full disk
 * store_last_error_is_unavailable says so. Cost: one table append and up
 * to two index inserts (subject, delivery_seq), O(log n); an acked entry
 * a descent and a small insert per run of its seqs instead, inside a
 * savepoint. */
int store_audit_append(store_t *store, const store_audit_entry_t *entry);

/* Inside the caller's open transaction: insert a checkpoint for an entry
 * that exists (seq <= tail) and comes after the last checkpoint. The
 * signature is not checked here. Returns 0 or -1. */
int store_audit_checkpoint_add(store_t *store, const store_audit_checkpoint_t *checkpoint);

/* Scans. fn is called per row with an entry (or checkpoint) that is valid
 * only during the call; it returns 0 to continue, non-zero to stop; it
 * must not call store functions. A row that reads back damaged is passed
 * with its damage set, not refused: the verifier names it. Each returns the
 * number of rows visited, or -1.
 * store_audit_scan: entries with seq > after_seq in seq order, at most
 * limit. store_audit_scan_subject: entries whose subject is exactly
 * `subject`, with after_seq < seq <= up_to_seq, in seq order, at most
 * limit (the subject index: O(log n + limit)).
 * store_audit_scan_delivery: entries up to up_to_seq that name this
 * delivery seq in delivery_seq, in seq order (index).
 * store_audit_scan_acked: the entry up to up_to_seq whose delivery_seqs
 * lists it, through the acked-delivery index (a descent to the seq's
 * range, a key lookup; none on a store older than schema 6). The bounds
 * let a reader cut the trail where it stood when it began (UINT64_MAX: no
 * bound). store_audit_checkpoint_scan: checkpoints with after_seq < seq
 * <= up_to_seq, in seq order. */
typedef int (*store_audit_fn)(const store_audit_entry_t *entry, void *arg);
typedef int (*store_audit_checkpoint_fn)(const store_audit_checkpoint_t *checkpoint, void *arg);
int store_audit_scan(store_t *store, uint64_t after_seq, size_t limit, store_audit_fn fn,
                     void *arg);
int store_audit_scan_subject(store_t *store, const char *subject, uint64_t after_seq,
                             uint64_t up_to_seq, size_t limit, store_audit_fn fn, void *arg);
int store_audit_scan_delivery(store_t *store, uint64_t delivery_seq, uint64_t up_to_seq,
                              store_audit_fn fn, void *arg);
int store_audit_scan_acked(store_t *store, uint64_t delivery_seq, uint64_t up_to_seq,
                           store_audit_fn fn, void *arg);

/* The acked-delivery index, for audit_verify's check that it agrees with
 * the entries. Since schema 12 it is audit_ack_ranges, a row per run of
 * consecutive seqs in an entry's list (first_seq, last_seq -> the entry),
 * the rows never overlapping; in a store of schema 6 to 11 (an offline
 * reader's) it is audit_acks, read as rows of one seq each.
 * store_audit_acked_index: which of them the store has
 * (STORE_AUDIT_ACKED_*), or -1 on error.
 * store_audit_acked_row: 1 with the row that holds the delivery (its
 * range and the entry it names), 0 when none does, -1 on error (one
 * descent). store_audit_acked_lookup: the same, the entry only.
 * store_audit_acked_count: 1 with *count its rows that name an entry up
 * to up_to_seq (a full walk of the index), 0 when the store predates it
 * (schema < 6; lookups then find nothing), -1 on error. */
enum {
    STORE_AUDIT_ACKED_NONE = 0,    /* schema < 6 */
    STORE_AUDIT_ACKED_PER_SEQ = 1, /* audit_acks, schema 6 to 11 */
    STORE_AUDIT_ACKED_RANGES = 2   /* audit_ack_ranges, schema 12 on */
};
int store_audit_acked_index(store_t *store);
int store_audit_acked_row(store_t *store, uint64_t delivery_seq, uint64_t *first, uint64_t *last,
                          uint64_t *audit_seq);
int store_audit_acked_lookup(store_t *store, uint64_t delivery_seq, uint64_t *audit_seq);
/* Reads from here to store_audit_snapshot_end see one state of the file, whatever
 * a running broker commits meanwhile (a WAL read transaction; it keeps
 * the broker from starting its WAL over until it ends). Returns 1 when it
 * began one, 0 when a transaction was open already (nothing to end), -1
 * on error. store_audit_snapshot_end(store, what the begin returned). */
int store_audit_snapshot_begin(store_t *store);
void store_audit_snapshot_end(store_t *store, int began);

/* Rows of the audit table outside the chain (seq below 1: the broker never
 * writes one; the exports leave them out). 0 with *count, or -1. */
int store_audit_off_chain(store_t *store, uint64_t *count);
/* SQLite's own check of the trail's tables (audit, audit_checkpoints,
 * audit_ack_ranges or, before schema 12, audit_acks) and their indexes
 * (audit_by_subject, audit_by_delivery: what the data-subject export
 * reads through, and what the chain's walk by seq never meets): PRAGMA
 * integrity_check of each table, which also finds an index rebuilt
 * outside the broker to leave rows out or to file them under another
 * value. *problems counts SQLite's messages, problem holds the first
 * (with its table); 0 problems when all is well. Returns 0, or -1 when the
 * check could not run. Cost: a walk of each table, a b-tree look-up per
 * row and index, and a walk of each index: several times a plain walk
 * (some 7 s for 2 million entries, against 0.8 s). */
int store_audit_integrity(store_t *store, char *problem, size_t problem_len, uint64_t *problems);
int store_audit_acked_count(store_t *store, uint64_t up_to_seq, uint64_t *count);
/* A row of the acked-delivery index naming an entry after after_seq that
 * does not exist (written outside the broker: it would make the ack of
 * its deliveries fail for good). 1 with the first such row's first
 * delivery seq and entry seq, 0 when there is none or the store predates
 * the index, -1 on error. Cost: a walk of the index. */
int store_audit_acked_stray(store_t *store, uint64_t after_seq, uint64_t *delivery_seq,
                            uint64_t *audit_seq);
/* Two rows of audit_ack_ranges whose ranges overlap (written outside the
 * broker: a look-up descends to one of them only, and would miss a seq
 * the other holds). 1 with the first such pair in first_seq order
 * (ranges: first and last seq of the one before, then of the other), 0
 * when there is none or the store keeps a row per seq, -1 on error. Cost:
 * a walk of the index. */
int store_audit_acked_overlap(store_t *store, uint64_t ranges[4]);
int store_audit_checkpoint_scan(store_t *store, uint64_t after_seq, uint64_t up_to_seq,
                                store_audit_checkpoint_fn fn, void *arg);

/* Open a store file read-only for offline readers of the audit trail
 * (schakelctl audit): no schema change, no write; only the store_audit_*
 * calls, store_subject_tag and store_close work on it (others fail).
 * seal_key may be NULL (verify and tail need no key); with the store key
 * (checked against the store's key check) store_subject_tag works too.
 * Refuses a file that is not a Schakel store, one older than the audit
 * trail, one newer than this code, and a wrong key. Safe while a broker
 * writes the same file (WAL readers do not block it). Returns NULL with
 * err filled. */
store_t *store_open_reader(const char *path, const uint8_t *seal_key, char *err, size_t errlen);

/* The audit trail's name for a data subject: lower-case hex of BLAKE2b-256
 * keyed with the store's subject key (random per store, kept sealed under
 * the store key, unchanged by store_rekey) over "schakel-audit-subject-v1",
 * a NUL and the pseudonym. The pseudonym is sealed content and never on
 * disk in clear; its tag finds the subject's entries. Needs the store key
 * (-1 on a keyless reader). Returns 0 or -1. */
#define STORE_SUBJECT_TAG_LEN 64u
int store_subject_tag(store_t *store, const char *pseudonym, char tag[STORE_SUBJECT_TAG_LEN + 1]);

/* For tests only: limit the database to max_pages pages on this connection
 * (PRAGMA max_page_count), which makes writes fail with "database or disk is
 * full" as a full disk would. SQLite never sets it below the current size;
 * max_pages <= 0 only reads it. Returns the limit in force, or -1. */
int64_t store_test_limit_pages(store_t *store, int64_t max_pages);

/* For tests: checkpoint after a commit once the WAL holds `frames` frames
 * (STORE_CHECKPOINT_FRAMES unless set; 0 restores it). */
void store_test_checkpoint_frames(store_t *store, int frames);

#endif
