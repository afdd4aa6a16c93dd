/*
 * store_internal.h — the store's private layout, shared by store.c
 * (statements, publishes and items), store_open.c (opening and closing),
 * store_commit.c (transactions), store_delivery.c (the
 * mailboxes), store_count.c (pending counts in memory), store_schema.c
 * (schema, migrations, connection checks, counters), store_expire.c
 * (retention, checkpoints), store_seal.c (sealing bodies, the key check,
 * key memory, the audit subject key, rekeying), store_migrate.c (the
 * migration steps done in C), store_audit*.c (the audit trail's rows and
 * its keyless reader) and store_case.c (cases, their members and events).
 * Private to those files: every other module sees store.h only, and
 * nothing outside them knows SQL.
 */
#ifndef SCHAKEL_STORE_INTERNAL_H
#define SCHAKEL_STORE_INTERNAL_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "schakel_limits.h"
#include "store.h"

#define STORE_ERRMSG_LEN 512

/* How long a statement waits for a lock held by another process (an
 * operator's backup, say) before failing. The broker is the only writer in
 * normal operation, so this is only ever waited in exceptional cases; it
 * blocks the event loop while it lasts, hence short. store_checkpoint lifts
 * it for its duration and puts it back. */
#define STORE_BUSY_TIMEOUT_MS 2000
#define STORE_MESSAGE_ID_BYTES 16 /* a publish's message id */
#define STORE_CASE_NUM_MAX SCHAKEL_CASE_NUM_MAX /* the highest case number: "C-" and 8 digits */

/* Statements prepared once at open (store.c lists their SQL). */
enum stmt_id {
    STMT_BEGIN,
    STMT_COMMIT,
    STMT_ROLLBACK,
    STMT_PUBLISH_FIND,
    STMT_PUBLISH_ADD,
    STMT_PUBLISH_SET_REPLY,
    STMT_ITEM_ADD,
    STMT_ITEM_ADD_KNOWN,
    STMT_TOMBSTONE_ADD,
    STMT_EXPIRE_CASE_EVENTS,
    STMT_DELIVERY_CASE_KNOWN,
    STMT_DELIVERY_CASE_ITEM,
    STMT_PUBLISH_SENDER,
    STMT_STORED_BYTES_ADD,
    STMT_DELIVERY_HIGH_SET,
    STMT_COUNT
};

/* Audit statements, prepared at their first use by store_audit.c (their
 * SQL is there) and finalized by store_close; a reader opened with
 * store_open_reader prepares only these. */
enum store_audit_stmt_id {
    AUDIT_STMT_TAIL,
    AUDIT_STMT_CHECKPOINT_TAIL,
    AUDIT_STMT_APPEND,
    AUDIT_STMT_CHECKPOINT_ADD,
    AUDIT_STMT_SCAN,
    AUDIT_STMT_SCAN_SUBJECT,
    AUDIT_STMT_SCAN_DELIVERY,
    AUDIT_STMT_CHECKPOINT_SCAN,
    AUDIT_STMT_ACKED_ADD, /* schema 12: audit_ack_ranges (6 to 11: audit_acks) */
    AUDIT_STMT_SCAN_ACKED,
    AUDIT_STMT_ACKED_LOOKUP,
    AUDIT_STMT_ACKED_COUNT,
    AUDIT_STMT_SAVEPOINT, /* an acked entry and its index rows, or neither */
    AUDIT_STMT_RELEASE,
    AUDIT_STMT_ROLLBACK_TO,
    AUDIT_STMT_COUNT
};

/* Case statements, prepared at their first use by store_case.c (their SQL
 * is there) and finalized by store_close, so that the routing files
 * (store.c, store_expire.c) need nothing of store_case.c. The sweep's
 * case statements (STMT_EXPIRE_CASE_EVENTS, STMT_EXPIRE_CASES) are
 * routing statements: store_expire runs them every turn. */
enum store_case_stmt_id {
    CASE_STMT_CREATE,
    CASE_STMT_GET,
    CASE_STMT_SET_CLOSED,
    CASE_STMT_MEMBER_FACTS,
    CASE_STMT_MEMBER_INSERT,
    CASE_STMT_MEMBER_UPDATE,
    CASE_STMT_MEMBER_GET,
    CASE_STMT_MEMBERS,
    CASE_STMT_EVENT_ADD,
    CASE_STMT_EVENTS,
    CASE_STMT_OF_PARTNER,
    CASE_STMT_LINK_FACTS,
    CASE_STMT_ITEM_LINK,
    CASE_STMT_ITEM_GET,
    CASE_STMT_OPEN_KINDS,
    CASE_STMT_COUNT
};

/* A growable buffer for one body on its way in (sealed) or out (opened). */
typedef struct store_scratch {
    uint8_t *bytes;
    size_t cap;
} store_scratch_t;

struct store {
    sqlite3 *db;
    int lock_fd; /* PATH.lock, held (flock) while the handle is open: one writer per store */
    sqlite3_stmt *stmt[STMT_COUNT];
    uint8_t *seal_key; /* STORE_KEY_BYTES, sodium_malloc'd (store_seal.c) */
    /* Nonces: a counter, then a random part drawn once per handle
     * (store_seal.c), instead of a system call per sealed body. */
    uint8_t nonce_random[16];
    uint64_t nonce_counter; /* 0: the random part is not drawn yet */
    uint8_t *subject_key;   /* the audit's subject key, likewise (store_seal.c); NULL: none */
    int64_t next_item_seq;  /* never reused: see the schema comment in store_schema.c */
    int64_t next_delivery_seq;
    /* The delivery seqs store_delivery_seqs_reserve set aside last:
     * [reserved_first, reserved_end), for the transaction reserved_serial. */
    int64_t reserved_first, reserved_end;
    uint64_t reserved_serial;
    int delivery_high_due;    /* the open transaction added deliveries: delivery_seq_high is due */
    int64_t next_case_num;    /* the number in the next case id, likewise never reused */
    int64_t txn_case_num;     /* next_case_num when store_begin began the open transaction,
                               * put back when it rolls back (0: none to put back) */
    uint8_t epoch[SCHAKEL_STORE_EPOCH_BYTES]; /* the store epoch (store_schema.c) */
    uint64_t epoch_floor;                     /* its floor seq, when epoch_floor_known */
    int epoch_floor_known;
    store_scratch_t sealed;   /* ciphertext only */
    store_scratch_t opened;   /* plaintext: wiped after each use */
    store_scratch_t case_row; /* store_case_get's strings (title: plaintext), wiped on
                               * reuse and by store_case_forget */
    int in_callback;          /* inside a scan or expiry callback */
    int txn_open;             /* store_begin began one; commit/rollback not yet called */
    int sync_failed;          /* a WAL sync failed: every call refused (store_sync_failed) */
    uint64_t loop_syncs;      /* WAL syncs made on this thread (store_wal_sync) that succeeded */
    durations_t loop_sync_durations; /* how long each store_wal_sync took */
    int wal_frames;           /* frames in the WAL after the last commit (store_commit.c's hook) */
    int checkpoint_frames;    /* checkpoint after a commit from this many; 0: the default */
    struct store_checkpointer *checkpointer; /* store_checkpoint.c; NULL: the loop checkpoints */
    uint64_t wal_generation; /* times the WAL started over (as far as the hook saw) */
    int evidence_migrated;   /* this open sealed evidence held in clear (schema 8) */
    long migrated_from;      /* the schema this open migrated from (0: it migrated none) */
    int64_t migrated_ms;     /* how long that took (the schema's transaction) */
    /* Set aside (store_mailbox_row_set_aside): the last scan stopped at this
     * row, unreadable (0: it did not). */
    uint64_t scan_unreadable_seq;
    int body_unauthentic;    /* the last store_seal_column(_named) failed to authenticate */
    unsigned cache_writes;   /* SQLITE_DBSTATUS_CACHE_WRITE at the last commit */
    int commit_wrote;        /* the last commit appended frames (the hook ran) */
    int commit_beside_round; /* ... while a round was asked for or ran */
    void (*test_after_commit)(store_t *store, void *arg); /* store_test_after_commit */
    void *test_after_commit_arg;
    uint64_t checkpoint_requests; /* rounds the loop asked for */
    int wal_frames_peak;          /* the most frames seen since store_test_wal_frames_peak */
    /* In the generation checkpoint_marks_generation: no checkpoint before
     * the WAL holds retry_frames (one in place left frames behind), no
     * round asked for before request_frames (one was asked for). */
    int checkpoint_retry_frames, checkpoint_request_frames;
    uint64_t checkpoint_marks_generation;
    uint64_t checkpoints_finished, checkpoints_forced; /* in place, by the loop */
    uint64_t checkpoints_busy;   /* ... that found another checkpoint running */
    struct sumtable *counts;     /* pending deliveries per recipient (store_count.c) */
    struct sumtable *bytes;      /* items' bytes per sender partner (store_bytes.c) */
    int last_rc;                 /* SQLite code of the last failure; 0 if not SQLite's */
    int txn_lost_rc;             /* the failure after which SQLite rolled back by itself */
    char errmsg[STORE_ERRMSG_LEN];
    sqlite3_stmt *audit_stmt[AUDIT_STMT_COUNT]; /* store_audit.c */
    int audit_reader;                           /* opened by store_open_reader: audit reads only */
    uint64_t txn_serial;        /* transactions store_begin began, for the audit tail cache */
    uint64_t audit_tail_serial; /* the txn_serial audit_tail was read in; 0: none */
    store_audit_tail_t audit_tail;
    /* The running broker's guard (store_audit_tail_guard): the tail as of
     * its last commit through this handle, which every read of the stored
     * tail not served from the cache must find; and the last such read
     * that did not (audit_mismatch, with the seq it found), and whether
     * any read did since the guard began (audit_mismatch_seen: a tail put
     * back afterwards is refused as well, until the next guard). */
    int audit_guarded;
    uint64_t audit_committed_seq;
    uint8_t audit_committed_hash[STORE_AUDIT_HASH_BYTES];
    int audit_mismatch;
    int audit_mismatch_seen;
    uint64_t audit_mismatch_seq;
    uint8_t audit_mismatch_hash[STORE_AUDIT_HASH_BYTES];
    /* The publish store_publish_add added in transaction publish_serial,
     * as written: its items are added without reading it back (store.c). */
    uint64_t publish_serial;
    int64_t added_publish_id, added_accepted_at, added_expires_at;
    char added_sender[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    uint8_t added_message_id[16];
    sqlite3_stmt *case_stmt[CASE_STMT_COUNT]; /* store_case.c */
    struct store_mailbox *mailbox;            /* store_mailbox.c: its statements and acks marked */
};

/* ---------------------------------------------- store.c, store_open.c, store_commit.c */

/* Record a failure of SQLite's ("what: sqlite's message", with its code
 * for store_last_error_is_unavailable) or a refusal of ours ("what: why",
 * never unavailable). */
void store_fail(store_t *store, const char *what);
void store_refuse(store_t *store, const char *what, const char *why);

/* The check at every entry point: -1 for a NULL store, and for a call from
 * inside a scan or expiry callback (errmsg set). */
int store_enter(store_t *store, const char *what);

/* Statement helpers. The bind_ functions bind without copying (the data
 * must outlive the step) and return 0 or -1 with the failure recorded;
 * an empty blob binds as an empty blob, never as NULL. store_stmt_run steps
 * a statement that yields no rows and resets it (0 or -1). store_stmt_finish
 * resets and clears the bindings; it reports nothing new. */
int store_bind_text(store_t *store, sqlite3_stmt *stmt, int param, const char *text);
int store_bind_bytes(store_t *store, sqlite3_stmt *stmt, int param, const uint8_t *bytes,
                     size_t len);
int store_bind_int64(store_t *store, sqlite3_stmt *stmt, int param, int64_t value);
int store_stmt_run(store_t *store, sqlite3_stmt *stmt, const char *what);
void store_stmt_finish(sqlite3_stmt *stmt);

/* Columns of the current row, borrowed until the statement steps again.
 * NULL for an SQL NULL or when SQLite runs out of memory; a zero-length
 * blob is a non-NULL pointer with *len 0. */
const char *store_column_text(sqlite3_stmt *stmt, int col);
const uint8_t *store_column_bytes(sqlite3_stmt *stmt, int col, size_t *len);

/* Run fixed SQL text (never built from input); 0, or -1 with the failure
 * recorded as "what: message". */
int store_exec_fixed(store_t *store, const char *sql, const char *what);

/* Prepare every statement of store.c's table, once at open (store_open.c);
 * 0, or -1 with the failure recorded. */
int store_statements_prepare(store_t *store);

/* The next seq from a counter (store->next_item_seq, next_delivery_seq), or
 * -1 when it is exhausted. The caller moves the counter on once its insert
 * succeeded; after a rollback it has moved on all the same (a gap). */
int64_t store_seq_peek(store_t *store, const int64_t *counter, const char *what);

/* Sync the WAL after a COMMIT (the store runs with synchronous = NORMAL):
 * what store_commit does after its COMMIT, for the few commits made with
 * plain SQL (a rekey). 0, or -1 with the handle refusing every later call
 * (store_sync_failed). */
int store_wal_sync(store_t *store);

/* An I/O error while making a commit durable (a sync, a checkpoint): the
 * handle refuses every later call (store_sync_failed); errmsg names what. */
void store_io_failed(store_t *store, int rc, const char *what);

/* Install the WAL hook that replaces SQLite's automatic checkpoint (whose
 * failures COMMIT does not report): store_commit.c checkpoints after commits
 * itself, and checks the result. Called once at open. */
void store_wal_hook_install(store_t *store);

/* WAL frames (pages) after which a commit checkpoints: SQLite's default. */
#define STORE_CHECKPOINT_FRAMES 1000
/* With a checkpointer: from this many times STORE_CHECKPOINT_FRAMES the
 * loop checkpoints in place (the thread has fallen behind, or the WAL
 * could not start over because a commit came before every frame was
 * copied), which bounds the WAL. */
#define STORE_CHECKPOINT_HARD_FACTOR 4
/* With a checkpointer: the loop finishes a WAL in place once a round of
 * the thread has left at most this many frames uncopied. */
#define STORE_CHECKPOINT_FINISH_FRAMES 64

/* ------------------------------------------------------------------ checkpointer */

/* A checkpoint result after which the store cannot be trusted: an I/O
 * error, a full disk, a corrupt or foreign file (store_commit.c). */
int store_checkpoint_failure_is_final(int rc);

/* store_checkpoint.c, on the loop thread, with a checkpointer running.
 * _poll: 1 when the thread is idle, with *copied the frames the WAL had
 * copied at the end of its last round if that round was of this
 * generation of the WAL (else -1); 0 while a round is asked for or runs;
 * -1 when a round failed (the store is then poisoned: store_io_failed).
 * _request: a round, for this generation of the WAL. */
int store_checkpointer_poll(store_t *store, uint64_t generation, int *copied);
/* 1 when there is no checkpointer, or its thread neither runs a round nor
 * has one asked for. */
int store_checkpointer_idle(store_t *store);
void store_checkpointer_request(store_t *store, uint64_t generation);
/* Cancels a round asked for; -1 while one runs (the caller's own
 * checkpoint must wait for a later turn: the loop does not wait on a
 * disk), 0 when the thread is idle or there is none. */
int store_checkpointer_quiesce(store_t *store);

/* ------------------------------------------------------------------ deliveries */

/* The columns of a delivery row, in this order, as store_delivery_row reads
 * them: the mailbox scan (its item's columns after them), rekey, a case's
 * new retention and the schema-9 migration select them so. */
#define STORE_DELIVERY_COLUMNS                                                                     \
    "seq, recipient, item_seq, message_id, item_index, sender, sender_partner, rule_id,"           \
    " rule_hash, purpose, legal_basis, accepted_at, expires_at, body, case_id, is_case_event,"     \
    " by_ref"
enum store_delivery_col {
    DCOL_SEQ,
    DCOL_RECIPIENT,
    DCOL_ITEM_SEQ,
    DCOL_MESSAGE_ID,
    DCOL_ITEM_INDEX,
    DCOL_SENDER,
    DCOL_SENDER_PARTNER,
    DCOL_RULE_ID,
    DCOL_RULE_HASH,
    DCOL_PURPOSE,
    DCOL_LEGAL_BASIS,
    DCOL_ACCEPTED_AT,
    DCOL_EXPIRES_AT,
    DCOL_BODY,
    DCOL_CASE_ID,
    DCOL_IS_CASE_EVENT,
    DCOL_BY_REF,
    DCOL_COUNT
};

/* Fill d from the current row of stmt (STORE_DELIVERY_COLUMNS first): every
 * field but body, body_len and fields (NULL, 0, 0). Strings and the message
 * id borrow the row (valid until stmt steps or is reset). Safe on any file
 * content: -1, errmsg untouched (the caller names the row), for a row no
 * broker writes (a missing column, an integer column of another type, a
 * message id not of 16 bytes, an item index beyond 32 bits, a case event
 * without a case) or when SQLite runs
 * out of memory. */
int store_delivery_row(sqlite3_stmt *stmt, store_delivery_t *d);

/* ------------------------------------------------------------------ counts */

/* Pending deliveries per recipient, in memory (store_count.c). Every insert
 * (+1) and removal (-1) of a delivery is reported with store_count_change;
 * inside a transaction it counts only once store_count_commit runs, and
 * store_count_rollback drops it. store_count_get returns 1 with the count
 * when it is known, 0 when SQL must count it (then store_count_learn). */
void store_count_change(store_t *store, const char *recipient, int64_t change);
int store_count_get(store_t *store, const char *recipient, int64_t *count);
void store_count_learn(store_t *store, const char *recipient, int64_t sql_count);
void store_count_commit(store_t *store);
void store_count_rollback(store_t *store);
void store_count_free(store_t *store);

/* Bytes of items per sender partner, in memory and in stored_bytes
 * (store_bytes.c). Every insert (+ its sealed length) and removal (-) of
 * an item is reported with store_bytes_change, naming the sender
 * principal (the partner is the part before its '/'); inside a
 * transaction it counts only once store_bytes_commit runs, and
 * store_bytes_rollback drops it; outside one the row is written at once
 * (-1 when that fails). store_bytes_flush writes the open transaction's
 * changes into stored_bytes, just before its COMMIT (-1: the commit must
 * not go on). store_bytes_load reads the table at open. */
int store_bytes_change(store_t *store, const char *sender, int64_t change);
int store_bytes_flush(store_t *store);
void store_bytes_commit(store_t *store);
void store_bytes_rollback(store_t *store);
int store_bytes_load(store_t *store);
/* The migration to schema 11: fill the empty stored_bytes with the
 * items' sums, walking every item once and telling store_progress every
 * 10,000 (and once before). 0, or -1 (store_errmsg). */
int store_bytes_migrate(store_t *store);
void store_bytes_free(store_t *store);

/* The items' bytes per sender partner as SQL sums them (partner, bytes):
 * store_partner_bytes_verify compares the sums with it (the migration
 * sums the same in C, store_bytes_migrate). A walk of every item. */
#define STORE_BYTES_SUM_SQL                                                                        \
    "SELECT CASE WHEN instr(p.sender, '/') > 0"                                                    \
    " THEN substr(p.sender, 1, instr(p.sender, '/') - 1) ELSE p.sender END AS partner,"            \
    " sum(length(i.body)) AS bytes FROM items AS i JOIN publishes AS p ON p.id = i.publish_id"     \
    " GROUP BY 1"

/* 0 when rc (a SQLite result code) is SQLITE_OK, else -1 with the failure
 * recorded by store_fail under what. */
int store_check_rc(store_t *store, int rc, const char *what);

/* One-off statements of fixed SQL text (PRAGMAs, schema queries), prepared
 * and finalized on each call; sql doubles as the "what" of a failure.
 * store_pragma_text copies the first column of the first row as text into
 * out (truncated to outlen); no row is an error. store_query_int64 reads
 * that value as a decimal integer ("not a number" otherwise).
 * store_pragma_set steps through any rows and ignores them. Each returns 0
 * or -1 with the failure recorded. */
int store_pragma_text(store_t *store, const char *sql, char *out, size_t outlen);
int store_query_int64(store_t *store, const char *sql, int64_t *out);
int store_pragma_set(store_t *store, const char *sql);

/* ------------------------------------------------------------------ store_schema.c */

/* store_open calls these in this order, each returning 0 or -1 with errmsg
 * set. */

/* Connection settings (busy timeout, defensive mode); then, before anything
 * is written, a refusal of a schema newer than this code; then the PRAGMAs
 * every store runs under (WAL, synchronous=NORMAL with store_commit.c syncing
 * the WAL at each store_commit, foreign keys, secure_delete, statement
 * journals in memory), each read back since SQLite ignores what it cannot
 * do. */
int store_schema_configure(store_t *store);

/* Run the missing migration steps, the key check (store_seal_keycheck)
 * and the store epoch (made for a store that has none, then loaded into
 * store->epoch with its floor) in one immediate transaction: the store ends at the
 * current version, or unchanged. */
int store_schema_apply(store_t *store);

/* store_counters.c: set next_item_seq, next_delivery_seq and
 * next_case_num past every one ever used (sqlite_sequence, meta's
 * delivery_seq_high, the tables), so none is reused after deletes. */
int store_counters_load(store_t *store);

/* For store_open_reader: the store's schema version is at least
 * min_version and not newer than this code knows. 0, or -1 with errmsg. */
int store_schema_check_readable(store_t *store, long min_version);

/* The schema version that added the audit trail. */
#define STORE_SCHEMA_AUDIT_VERSION 3
/* The schema version that added cases. */
#define STORE_SCHEMA_CASES_VERSION 4
/* The schema version that sealed a publish's evidence. */
#define STORE_SCHEMA_EVIDENCE_VERSION 8
/* The schema version that bound a delivery's envelope to its seal. */
#define STORE_SCHEMA_ENVELOPE_VERSION 9
/* The schema that sums the items' bytes per partner (stored_bytes): its
 * step walks every item (store_bytes_migrate). */
#define STORE_SCHEMA_BYTES_VERSION 11
/* The schema that indexes acked deliveries by runs (audit_ack_ranges):
 * its step walks audit_acks (store_audit_ranges_migrate), and keeps the
 * highest delivery seq handed out in meta (delivery_seq_high). */
#define STORE_SCHEMA_ACK_RANGES_VERSION 12
/* The schema that keeps mailboxes as rows of one publish and recipient
 * (mailbox, mailbox_set_aside: store_mailbox.h): its step moves every
 * delivery over, after the older steps' walks of deliveries. */
#define STORE_SCHEMA_MAILBOX_VERSION 13

/* The highest delivery seq handed out, in meta (delivery_seq_high, an
 * integer, since schema 12; the counters read it, store_schema.c).
 * store_delivery_high_write sets it to high in whatever transaction is
 * open. store_delivery_high_flush writes it once for the open
 * transaction's deliveries (next_delivery_seq - 1), just before its
 * COMMIT, when one was added (-1: the commit must not go on). */
/* One of the bounded DELETEs of due rows (store_expire's case events; the
 * mailbox's publishes and cases): stmt takes now as ?1 and the limit as
 * ?2. The number removed, or -1. */
int store_expire_bounded(store_t *store, sqlite3_stmt *stmt, int64_t now, size_t limit,
                         const char *what);

int store_delivery_high_write(store_t *store, int64_t high);
int store_delivery_high_flush(store_t *store);

/* The migration to schema 12: fill audit_ack_ranges from audit_acks, a row
 * per run of consecutive seqs of one entry, then drop audit_acks, telling
 * store_progress every 10,000 rows (and once before). 0, or -1
 * (store_errmsg). */
int store_audit_ranges_migrate(store_t *store);
/* A case event's seq is in its sealed body and, in clear, in the detail
 * of its delivery.queued entry ("case_id=C-00000042 event_seq=3"), found
 * through the trail's partial index on delivery_seq, O(log n). */
#define STORE_LIST_EVENT_SQL                                                                       \
    "SELECT detail FROM audit WHERE delivery_seq = ?1 AND event = 'delivery.queued'"               \
    " ORDER BY seq LIMIT 1"

/* The schema version that added deliveries_set_aside. */
#define STORE_SCHEMA_SET_ASIDE_VERSION 10

/* ------------------------------------------------------------------ store_expire.c */


/* ------------------------------------------------------------------ set aside */

/* Copy delivery ?1 (whatever its columns hold) into deliveries_set_aside
 * with set_aside_at ?2 and reason ?3; DELETE FROM deliveries then removes
 * it (STMT_DELIVERY_REMOVE). Every column comes over as it is but
 * expires_at, which may be the very damage (a retention of centuries, or
 * no number at all would keep the row, its item and its case for ever):
 * it is bounded by what the broker can trust, its item's retention (raised
 * to its longest delivery's as each was queued) and ?4 (?2 plus the
 * longest retention a policy may set); one that is not an integer is due
 * at once (?2). The columns are STORE_DELIVERY_COLUMNS' in their order. */
#define STORE_SET_ASIDE_MOVE_SQL                                                                   \
    "INSERT INTO deliveries_set_aside (" STORE_DELIVERY_COLUMNS ", set_aside_at, reason)"          \
    " SELECT d.seq, d.recipient, d.item_seq, d.message_id, d.item_index, d.sender,"                \
    " d.sender_partner, d.rule_id, d.rule_hash, d.purpose, d.legal_basis, d.accepted_at,"          \
    " CASE WHEN typeof(d.expires_at) = 'integer' THEN min(d.expires_at, ?4,"                       \
    " coalesce((SELECT i.expires_at FROM items AS i WHERE i.seq = d.item_seq"                      \
    " AND typeof(i.expires_at) = 'integer'), ?4)) ELSE ?2 END,"                                    \
    " d.body, d.case_id, d.is_case_event, d.by_ref, ?2, ?3 FROM deliveries AS d WHERE d.seq = ?1"
#define STORE_DELIVERY_REMOVE_SQL "DELETE FROM deliveries WHERE seq = ?1"

/* Move the delivery seq into deliveries_set_aside with `move`
 * (STORE_SET_ASIDE_MOVE_SQL) and out of deliveries with `remove`
 * (STORE_DELIVERY_REMOVE_SQL): the prepared ones, or the migration's own
 * (it runs before statements_prepare). Counts are the caller's. 0, or -1
 * with errmsg set (a move of a row that is not there included). */
int store_set_aside_move(store_t *store, sqlite3_stmt *move, sqlite3_stmt *remove, int64_t seq,
                         int64_t now, const char *reason);

/* ------------------------------------------------------------------ store_mailbox.c */

/* The acks and removals this transaction marked in mailbox rows, written
 * once per row (store_mailbox.h): _flush just before the COMMIT (-1: the
 * commit must not go on), _drop when the transaction ends without one.
 * _free at close, with the module's statements. */
int store_mailbox_flush(store_t *store);
void store_mailbox_drop(store_t *store);
/* After a COMMIT succeeded: what the transaction moved that outlives it
 * (the expiry sweeps' places, store_mailbox_sweep_at). */
void store_mailbox_committed(store_t *store);
void store_mailbox_free(store_t *store);

/* ------------------------------------------------------------------ store_migrate.c */

/* Inside the open schema transaction, once the keys are loaded: seal the
 * evidence of publishes stored before it was sealed (their signature and
 * root in clear), tag their content hashes, and drop the clear columns
 * (schema 8). 0, or -1 with errmsg set. */
int store_migrate_evidence(store_t *store);

/* Likewise: seal every delivery again, from the layout of schema 8 and
 * before (which bound no envelope) to the current one (schema 9). A row
 * that does not open under the old layout, or reads damaged, is set aside
 * (deliveries_set_aside, made by step 9 -> 10 before this runs), for
 * whoever opened the store to record (store_set_aside_unrecorded). 0, or
 * -1 with errmsg set. */
int store_migrate_deliveries(store_t *store);

/* ------------------------------------------------------------------ store_seal.c */

/* The associated data of one sealed body (store.h documents the layouts).
 * Big enough for the longest: the case delivery tag with its NUL, two
 * seqs, the event flag, a case id, the envelope's digest and a recipient
 * of SCHAKEL_MAX_PRINCIPAL_LEN bytes. */
#define STORE_SEAL_ENVELOPE_BYTES 32
#define STORE_SEAL_AD_MAX                                                                          \
    (sizeof "schakel-store-case-delivery-v2" + 8 + 8 + 1 + SCHAKEL_CASE_ID_LEN +                   \
     STORE_SEAL_ENVELOPE_BYTES + SCHAKEL_MAX_PRINCIPAL_LEN)

typedef struct store_seal_ad {
    uint8_t bytes[STORE_SEAL_AD_MAX];
    size_t len;
} store_seal_ad_t;

void store_seal_ad_item(store_seal_ad_t *ad, int64_t seq, int64_t publish_id, uint32_t item_index);
/* Delivery seq as d describes it (seq itself is not read from d): a
 * signal's (d->case_id NULL: the "delivery" layout, or "delivery by
 * reference" with d->by_ref) or a case's (the "case delivery" layout),
 * each binding the envelope d is sent with (sender, sender partner,
 * message id, item index, accepted_at, rule id and hash, purpose, legal
 * basis, expires_at) by its BLAKE2b-256 digest. -1 (ad unusable) for a
 * recipient longer than any principal id can be, a case id that is not
 * SCHAKEL_CASE_ID_LEN bytes, a case delivery by reference, or a text
 * beyond 4 GiB. Cost: one BLAKE2b pass over about 200 bytes. */
int store_seal_ad_delivery(store_seal_ad_t *ad, int64_t seq, const store_delivery_t *d);
/* The same delivery under the layout of schema 8 and before, which bound
 * no envelope ("-v1" tags): only the migration reads it. */
int store_seal_ad_delivery_v1(store_seal_ad_t *ad, int64_t seq, const store_delivery_t *d);
/* A case's title and a case's event; -1 for a case id that is not
 * SCHAKEL_CASE_ID_LEN bytes. */
int store_seal_ad_case(store_seal_ad_t *ad, const char *case_id);
int store_seal_ad_case_event(store_seal_ad_t *ad, const char *case_id, uint64_t event_seq);

/* A publish's evidence (its signed root and signature), bound to its
 * message id and sender; -1 for a sender longer than any principal id. */
int store_seal_ad_evidence(store_seal_ad_t *ad, const uint8_t message_id[16], const char *sender);

/* The tag under which a publish's content hash is stored: BLAKE2b-256
 * keyed with the subject key (which a rekey keeps), so that a copy of the
 * store cannot confirm a guessed content; equal hashes give equal tags, so
 * repeats are still told apart. 0, or -1 without the store key. */
int store_content_tag(store_t *store, const uint8_t hash[32], uint8_t tag[32]);

/* Re-seal the body in column col of the current row of `row`: opened
 * under `from`, sealed under `to` with a fresh nonce, and bound to param
 * of `update` (the sealed bytes stay in store->sealed until the next seal,
 * as for store_seal_bind). 0; 1 when the body does not authenticate under
 * `from` or is missing (nothing bound; errmsg names the row: "body of
 * <what> <seq> ..."); -1 on any other error (errmsg set). The plaintext is
 * wiped. */
int store_seal_reseal(store_t *store, sqlite3_stmt *row, int col, const char *what, int64_t seq,
                      const store_seal_ad_t *from, const store_seal_ad_t *to, sqlite3_stmt *update,
                      int param);

/* Tell the hook store_set_progress installed (if any) that a long step of
 * store_open is still going: `done` rows of `step` so far. */
void store_progress(const char *step, uint64_t done);

/* Make room for len bytes in s (contents wiped, not kept); 0, or -1 when
 * out of memory. */
int store_scratch_reserve(store_scratch_t *s, size_t len);

/* A copy of key in guarded memory (plain malloc under SCHAKEL_PLAIN_ALLOC),
 * or NULL when out of memory. Freed, wiped, by store_seal_free. */
uint8_t *store_seal_key_new(const uint8_t key[STORE_KEY_BYTES]);

/* Wipe and free the store's key and both body buffers. Safe on a store
 * whose key or buffers were never allocated. */
void store_seal_free(store_t *store);

/* Seal body under the store key with a fresh nonce and bind the sealed
 * bytes to param. They stay in store->sealed until the next seal, after the
 * statement has run. 0, or -1 with errmsg set. */
int store_seal_bind(store_t *store, sqlite3_stmt *stmt, int param, const store_seal_ad_t *ad,
                    const uint8_t *body, size_t len);

/* Read and open the sealed body in column col of the delivery with this
 * seq. *body points into store->opened, valid until the next body is
 * opened; the caller wipes it. -1 when it does not authenticate ("body of
 * delivery N does not authenticate: ...") or is missing ("damaged row:
 * body of delivery N is missing (not a blob)"), body_unauthentic set for
 * both, or when memory runs out. */
int store_seal_column(store_t *store, sqlite3_stmt *stmt, int col, int64_t seq,
                      const store_seal_ad_t *ad, const uint8_t **body, size_t *len);

/* The same for any sealed column: the error names the row as
 * "body of <what> does not authenticate: ...". */
int store_seal_column_named(store_t *store, sqlite3_stmt *stmt, int col, const char *what,
                            const store_seal_ad_t *ad, const uint8_t **body, size_t *len);

/* Inside the open schema transaction: check that the store key opens the
 * store's sealed key check, or record one for a new store. -1 with
 * "store key: the store key does not open this store (wrong store key
 * file?)" for another key. */
int store_seal_keycheck(store_t *store);

/* Load the audit trail's subject key from meta into store->subject_key
 * (guarded memory), or with create set make one for a store that has none
 * (inside the open schema transaction). -1 with errmsg set. */
int store_seal_subject_key(store_t *store, int create);

/* A commit went through: the guarded tail (store_audit_tail_guard) moves
 * to the tail this transaction read and wrote, if it read one (store_audit.c). */
void store_audit_committed(store_t *store);

#endif
