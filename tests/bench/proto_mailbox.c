/*
 * proto_mailbox.c — a prototype that measures mailbox schemas in SQLite
 * alone, before any of them is built into the broker (docs/design/mailbox.md).
 *
 * It makes a store in a temporary folder under the broker's settings
 * (pages of 8 KiB, WAL, synchronous = NORMAL, foreign keys, secure_delete,
 * temp_store = MEMORY, no memory statistics, no mutexes; checkpoints off
 * the measured phases as the broker's checkpoint thread takes them), with
 * the publishes and items the broker writes, and one of these mailboxes:
 *
 *   today  the deliveries table of schema 11 (a rowid table with
 *          AUTOINCREMENT and the indexes by recipient, expiry, item and
 *          case) and audit_acks, one row per acked seq;
 *   batch  one row per publish and recipient: the seqs of its deliveries
 *          are consecutive (first_seq .. first_seq + n - 1), the item of
 *          each and its rule in a list, acked ones in a bitmap;
 *   slim   one WITHOUT ROWID row per delivery keyed (recipient, seq),
 *          written with multi-row INSERTs, its envelope in a row per
 *          publish and recipient;
 *   log    slim's rows, acked through a watermark per recipient (and a
 *          list of seqs acked above it), removed by range.
 *
 * batch, slim and log keep audit_acks as ranges of seqs (one row per run
 * of consecutive seqs an ack frame acked). Bodies are random bytes of the
 * sealed sizes: sealing and the envelope's hash are libsodium's, not
 * measured here (the design document adds them from the broker's
 * profile). The workload: publishes of --batch items at fan-out 3, one
 * commit each; each recipient's mailbox scanned in rounds of 16 as the
 * push does; acks in frames of up to --ack-group seqs, each frame its own
 * commit, in order or interleaved (even positions, then odd, each frame
 * shuffled). Every phase is a function of its own, so that
 * `valgrind --tool=callgrind` and callgrind_annotate --inclusive=yes give
 * its instructions; the program prints wall times per phase.
 *
 * A measurement, not a test: never part of `make test` or `make bench`.
 */
#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROTO_RECIPIENTS 3
#define PROTO_ITEM_BYTES (1024 + 40) /* a sealed 1 KiB signal */
#define PROTO_MASK_BYTES (4 + 40)    /* a sealed field mask */
#define PROTO_PUSH_ROUND 16          /* deliveries per receiver per round (deliver.c) */
#define PROTO_MAX_BATCH 256
#define PROTO_MAX_ACK_GROUP 1024
#define PROTO_MULTI_ROWS 64 /* rows per multi-row INSERT (slim, log) */
#define PROTO_CHECKPOINT_FRAMES 1000

#define NOINLINE __attribute__((noinline))

enum schema { SCHEMA_NONE, SCHEMA_TODAY, SCHEMA_BATCH, SCHEMA_SLIM, SCHEMA_LOG };
static const char *const schema_names[] = {"none", "today", "batch", "slim", "log"};

static const char *const recipients[PROTO_RECIPIENTS] = {
    "politie/signalen-ontvangst", "zorg/wijkteam-centrum", "woningcorp/meldpunt-overlast"};
static const char *const rule_ids[PROTO_RECIPIENTS] = {
    "gemeente-naar-politie", "gemeente-naar-zorg", "gemeente-naar-woningcorp"};
static const char *const sender = "gemeente/meldingen";
static const char *const sender_partner = "gemeente";
static const char *const purpose = "Signalering van overlast en onveiligheid in de wijk";
static const char *const legal_basis = "Gemeentewet art. 172; Wet politiegegevens art. 8";
static const char *const rule_hash =
    "3f1c9a0b7d2e4f6081a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708";

/* ------------------------------------------------------------------ schemas */

/* publishes and items as schema 11 has them (store_schema.c), and cases
 * for the deliveries' foreign key */
static const char *const sql_common =
    "CREATE TABLE publishes (id INTEGER PRIMARY KEY, sender TEXT NOT NULL,"
    " message_id BLOB NOT NULL CHECK (length(message_id) = 16),"
    " content_hash BLOB NOT NULL CHECK (length(content_hash) = 32), evidence BLOB,"
    " accepted_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, reply BLOB,"
    " UNIQUE (sender, message_id));"
    "CREATE INDEX publishes_by_expiry ON publishes (expires_at);"
    "CREATE TABLE items (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " publish_id INTEGER NOT NULL REFERENCES publishes(id),"
    " item_index INTEGER NOT NULL CHECK (item_index >= 0), expires_at INTEGER NOT NULL,"
    " body BLOB NOT NULL, UNIQUE (publish_id, item_index));"
    "CREATE INDEX items_by_expiry ON items (expires_at);"
    "CREATE TABLE cases (num INTEGER PRIMARY KEY AUTOINCREMENT, case_id TEXT NOT NULL UNIQUE);";

static const char *const sql_today =
    "CREATE TABLE deliveries (seq INTEGER PRIMARY KEY AUTOINCREMENT, recipient TEXT NOT NULL,"
    " item_seq INTEGER NOT NULL REFERENCES items(seq), sender TEXT NOT NULL,"
    " sender_partner TEXT NOT NULL, message_id BLOB NOT NULL CHECK (length(message_id) = 16),"
    " item_index INTEGER NOT NULL, accepted_at INTEGER NOT NULL, rule_id TEXT NOT NULL,"
    " rule_hash TEXT NOT NULL, purpose TEXT NOT NULL, legal_basis TEXT NOT NULL,"
    " expires_at INTEGER NOT NULL, body BLOB NOT NULL,"
    " case_id TEXT REFERENCES cases(case_id),"
    " is_case_event INTEGER NOT NULL DEFAULT 0 CHECK (is_case_event IN (0, 1)),"
    " by_ref INTEGER NOT NULL DEFAULT 0"
    "  CHECK (by_ref IN (0, 1) AND (by_ref = 0 OR case_id IS NULL)));"
    "CREATE INDEX deliveries_by_recipient ON deliveries (recipient, seq);"
    "CREATE INDEX deliveries_by_expiry ON deliveries (expires_at);"
    "CREATE INDEX deliveries_by_item ON deliveries (item_seq);"
    "CREATE INDEX deliveries_by_case ON deliveries (case_id, recipient) WHERE case_id IS NOT NULL;"
    "CREATE TABLE audit_acks (delivery_seq INTEGER PRIMARY KEY CHECK (delivery_seq > 0),"
    " audit_seq INTEGER NOT NULL CHECK (audit_seq > 0));";

/* audit_acks as ranges: (first_seq, last_seq) -> the acked entry */
static const char *const sql_ack_ranges =
    "CREATE TABLE audit_ack_ranges (first_seq INTEGER PRIMARY KEY CHECK (first_seq > 0),"
    " last_seq INTEGER NOT NULL, audit_seq INTEGER NOT NULL CHECK (audit_seq > 0));"
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;"
    "INSERT INTO meta VALUES ('delivery_seq_high', 0);";

/* first_seq is the rowid: seqs are unique broker-wide, so a seq's row is
 * the one with the greatest first_seq at most the seq (and its recipient) */
static const char *const sql_batch =
    "CREATE TABLE mailbox (first_seq INTEGER PRIMARY KEY, recipient TEXT NOT NULL,"
    " n INTEGER NOT NULL CHECK (n BETWEEN 1 AND 1024), pending INTEGER NOT NULL,"
    " publish_id INTEGER NOT NULL REFERENCES publishes(id), first_item_seq INTEGER NOT NULL,"
    " sender TEXT NOT NULL, sender_partner TEXT NOT NULL, message_id BLOB NOT NULL,"
    " accepted_at INTEGER NOT NULL, rules TEXT NOT NULL, items BLOB NOT NULL,"
    " expires_at INTEGER NOT NULL, masks BLOB NOT NULL, done BLOB,"
    " case_id TEXT REFERENCES cases(case_id), is_case_event INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX mailbox_by_recipient ON mailbox (recipient, first_seq);"
    "CREATE INDEX mailbox_by_expiry ON mailbox (expires_at);"
    "CREATE INDEX mailbox_by_publish ON mailbox (publish_id);"
    "CREATE INDEX mailbox_by_case ON mailbox (case_id, recipient) WHERE case_id IS NOT NULL;";

/* slim and log: a row per delivery, its envelope per publish and recipient */
static const char *const sql_slim =
    "CREATE TABLE envelopes (first_seq INTEGER PRIMARY KEY, recipient TEXT NOT NULL,"
    " last_seq INTEGER NOT NULL, pending INTEGER NOT NULL,"
    " publish_id INTEGER NOT NULL REFERENCES publishes(id), sender TEXT NOT NULL,"
    " sender_partner TEXT NOT NULL, message_id BLOB NOT NULL, accepted_at INTEGER NOT NULL,"
    " rules TEXT NOT NULL, expires_at INTEGER NOT NULL,"
    " case_id TEXT REFERENCES cases(case_id));"
    "CREATE INDEX envelopes_by_expiry ON envelopes (expires_at);"
    "CREATE INDEX envelopes_by_publish ON envelopes (publish_id);"
    "CREATE TABLE mailbox_rows (recipient TEXT NOT NULL, seq INTEGER NOT NULL,"
    " item_seq INTEGER NOT NULL, envelope INTEGER NOT NULL, body BLOB NOT NULL,"
    " PRIMARY KEY (recipient, seq)) WITHOUT ROWID;"
    "CREATE TABLE watermarks (recipient TEXT PRIMARY KEY, acked_through INTEGER NOT NULL,"
    " acked_above BLOB) WITHOUT ROWID;";

/* ------------------------------------------------------------------ state */

typedef struct pending_seq {
    int64_t seq;
    int64_t item_seq;
} pending_seq_t;

typedef struct recipient_state {
    int64_t cursor;     /* the push's: the last seq scanned */
    int64_t cursor_row; /* batch: first_seq of the row holding the cursor (0: none) */
    int64_t *unacked;   /* scanned, not acked yet, in seq order */
    size_t n_unacked, cap_unacked;
    int64_t watermark; /* log: acked through */
    int64_t *above;    /* log: acked above the watermark, ascending */
    size_t n_above, cap_above;
    int64_t pending; /* deliveries waiting */
} recipient_state_t;

typedef struct proto {
    enum schema schema;
    sqlite3 *db;
    int batch, ack_group, interleave, sync;
    long publishes;
    int64_t next_item_seq, next_delivery_seq, next_audit_seq, now;
    sqlite3_stmt *begin, *commit, *publish_add, *item_add;
    sqlite3_stmt *today_add, *today_scan, *today_ack, *acks_add;
    sqlite3_stmt *batch_add, *batch_scan, *batch_find, *batch_update, *batch_delete;
    sqlite3_stmt *item_get, *ranges_add, *seq_high;
    sqlite3_stmt *env_add, *rows_add[PROTO_MULTI_ROWS + 1], *rows_scan, *env_get, *rows_ack;
    sqlite3_stmt *env_find, *env_update, *env_delete, *rows_range_delete, *watermark_set;
    recipient_state_t r[PROTO_RECIPIENTS];
    uint8_t item_body[PROTO_ITEM_BYTES], mask[PROTO_MASK_BYTES], message_id[16];
    uint64_t rng;
    int wal_frames;
    /* counts */
    long deliveries, scanned, acked, checkpoints, row_updates, row_deletes, range_rows;
    double t_items, t_mailbox, t_commit, t_scan, t_ack, t_checkpoint;
    volatile uint64_t sink; /* column values read, so that no read is optimised away */
} proto_t;

static void die(proto_t *p, const char *what)
{
    fprintf(stderr, "proto_mailbox: %s: %s\n", what, p->db ? sqlite3_errmsg(p->db) : "");
    exit(1);
}

static uint64_t rng_next(proto_t *p)
{
    p->rng ^= p->rng << 13;
    p->rng ^= p->rng >> 7;
    p->rng ^= p->rng << 17;
    return p->rng;
}

static void fill_random(proto_t *p, uint8_t *bytes, size_t len)
{
    for (size_t i = 0; i < len; i++)
        bytes[i] = (uint8_t)rng_next(p);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static sqlite3_stmt *prepare(proto_t *p, const char *sql)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v3(p->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL) != SQLITE_OK)
        die(p, sql);
    return stmt;
}

static void exec(proto_t *p, const char *sql)
{
    if (sqlite3_exec(p->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        die(p, sql);
}

static void run(proto_t *p, sqlite3_stmt *stmt, const char *what)
{
    if (sqlite3_step(stmt) != SQLITE_DONE)
        die(p, what);
    sqlite3_reset(stmt);
}

static void bind_text(sqlite3_stmt *stmt, int i, const char *text)
{
    sqlite3_bind_text(stmt, i, text, -1, SQLITE_STATIC);
}

static void bind_blob(sqlite3_stmt *stmt, int i, const void *bytes, size_t len)
{
    sqlite3_bind_blob(stmt, i, bytes, (int)len, SQLITE_STATIC);
}

static void push_seq(int64_t **list, size_t *n, size_t *cap, int64_t seq)
{
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 1024;
        *list = realloc(*list, *cap * sizeof **list);
        if (*list == NULL) {
            fprintf(stderr, "proto_mailbox: out of memory\n");
            exit(1);
        }
    }
    (*list)[(*n)++] = seq;
}

/* ------------------------------------------------------------------ the store */

/* The broker's checkpoint runs on a thread of its own: here it runs
 * between phases, in a function of its own, and is reported apart. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void)db;
    (void)name;
    ((proto_t *)arg)->wal_frames = frames;
    return SQLITE_OK;
}

static NOINLINE void phase_checkpoint(proto_t *p)
{
    if (p->wal_frames < PROTO_CHECKPOINT_FRAMES)
        return;
    double t = now_s();
    if (sqlite3_wal_checkpoint_v2(p->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL) != SQLITE_OK)
        die(p, "checkpoint");
    p->wal_frames = 0;
    p->checkpoints++;
    p->t_checkpoint += now_s() - t;
}

static void store_open(proto_t *p, const char *path)
{
    if (sqlite3_open_v2(path, &p->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK)
        die(p, "open");
    sqlite3_db_config(p->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
    exec(p, "PRAGMA page_size = 8192; PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;"
            " PRAGMA secure_delete = ON; PRAGMA temp_store = MEMORY;"
            " PRAGMA wal_autocheckpoint = 0;");
    exec(p, p->sync ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
    sqlite3_wal_hook(p->db, wal_hook, p);
    exec(p, "BEGIN");
    exec(p, sql_common);
    if (p->schema == SCHEMA_TODAY)
        exec(p, sql_today);
    if (p->schema == SCHEMA_BATCH)
        exec(p, sql_batch);
    if (p->schema == SCHEMA_SLIM || p->schema == SCHEMA_LOG)
        exec(p, sql_slim);
    if (p->schema >= SCHEMA_BATCH)
        exec(p, sql_ack_ranges);
    exec(p, "COMMIT");

    p->begin = prepare(p, "BEGIN IMMEDIATE");
    p->commit = prepare(p, "COMMIT");
    p->publish_add = prepare(p, "INSERT INTO publishes (id, sender, message_id, content_hash,"
                                " evidence, accepted_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5,"
                                " ?6, ?7)");
    p->item_add = prepare(p, "INSERT INTO items (seq, publish_id, item_index, expires_at, body)"
                             " VALUES (?1, ?2, ?3, ?4, ?5)");
    p->item_get = prepare(p, "SELECT body, publish_id FROM items WHERE seq = ?1");
    if (p->schema == SCHEMA_TODAY) {
        p->today_add = prepare(
            p, "INSERT INTO deliveries (seq, recipient, item_seq, sender, sender_partner,"
               " message_id, item_index, accepted_at, rule_id, rule_hash, purpose, legal_basis,"
               " expires_at, body, case_id, is_case_event, by_ref)"
               " VALUES (?14, ?1, ?9, ?10, ?2, ?11, ?12, ?13, ?3, ?4, ?5, ?6, ?7, ?8, ?15, ?16,"
               " ?17)");
        p->today_scan = prepare(
            p, "SELECT d.seq, d.recipient, d.item_seq, d.message_id, d.item_index, d.sender,"
               " d.sender_partner, d.rule_id, d.rule_hash, d.purpose, d.legal_basis,"
               " d.accepted_at, d.expires_at, d.body, d.case_id, d.is_case_event, d.by_ref,"
               " i.body, i.publish_id"
               " FROM deliveries AS d LEFT JOIN items AS i ON d.by_ref = 1 AND i.seq = d.item_seq"
               " WHERE d.recipient = ?1 AND d.seq > ?2 ORDER BY d.seq LIMIT ?3");
        p->today_ack = prepare(p, "DELETE FROM deliveries WHERE seq = ?1 AND recipient = ?2");
        p->acks_add =
            prepare(p, "INSERT INTO audit_acks (delivery_seq, audit_seq) VALUES (?1, ?2)");
    }
    if (p->schema >= SCHEMA_BATCH) {
        p->ranges_add = prepare(p, "INSERT INTO audit_ack_ranges (first_seq, last_seq, audit_seq)"
                                   " VALUES (?1, ?2, ?3)");
        p->seq_high = prepare(p, "UPDATE meta SET value = ?1 WHERE name = 'delivery_seq_high'");
    }
    if (p->schema == SCHEMA_BATCH) {
        p->batch_add = prepare(
            p, "INSERT INTO mailbox (first_seq, recipient, n, pending, publish_id,"
               " first_item_seq, sender, sender_partner, message_id, accepted_at, rules, items,"
               " expires_at, masks) VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,"
               " ?12, ?13)");
        p->batch_scan = prepare(
            p, "SELECT first_seq, n, done, first_item_seq, publish_id, sender, sender_partner,"
               " message_id, accepted_at, rules, items, expires_at, masks, case_id,"
               " is_case_event FROM mailbox WHERE recipient = ?1 AND first_seq >= ?2"
               " ORDER BY first_seq LIMIT ?3");
        p->batch_find = prepare(p, "SELECT first_seq, n, done, pending FROM mailbox"
                                   " WHERE recipient = ?1 AND first_seq <= ?2"
                                   " ORDER BY first_seq DESC LIMIT 1");
        p->batch_update =
            prepare(p, "UPDATE mailbox SET done = ?2, pending = ?3 WHERE first_seq = ?1");
        p->batch_delete = prepare(p, "DELETE FROM mailbox WHERE first_seq = ?1");
    }
    if (p->schema == SCHEMA_SLIM || p->schema == SCHEMA_LOG) {
        p->env_add =
            prepare(p, "INSERT INTO envelopes (first_seq, recipient, last_seq, pending, publish_id,"
                       " sender, sender_partner, message_id, accepted_at, rules, expires_at)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)");
        char sql[16384];
        for (int n = 1; n <= PROTO_MULTI_ROWS; n++) {
            size_t used = (size_t)snprintf(sql, sizeof sql,
                                           "INSERT INTO mailbox_rows (recipient, seq, item_seq,"
                                           " envelope, body) VALUES ");
            for (int i = 0; i < n; i++)
                used += (size_t)snprintf(sql + used, sizeof sql - used, "%s(?1, ?%d, ?%d, ?2, ?%d)",
                                         i ? ", " : "", 3 + 3 * i, 4 + 3 * i, 5 + 3 * i);
            p->rows_add[n] = prepare(p, sql);
        }
        p->rows_scan = prepare(p, "SELECT seq, item_seq, envelope, body FROM mailbox_rows"
                                  " WHERE recipient = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3");
        p->env_get = prepare(p, "SELECT sender, sender_partner, message_id, accepted_at, rules,"
                                " expires_at, case_id FROM envelopes WHERE first_seq = ?1");
        p->rows_ack = prepare(p, "DELETE FROM mailbox_rows WHERE recipient = ?1 AND seq = ?2");
        p->env_find = prepare(p, "SELECT first_seq, last_seq, pending FROM envelopes"
                                 " WHERE first_seq <= ?1 ORDER BY first_seq DESC LIMIT 1");
        p->env_update = prepare(p, "UPDATE envelopes SET pending = ?2 WHERE first_seq = ?1");
        p->env_delete = prepare(p, "DELETE FROM envelopes WHERE first_seq = ?1");
        p->rows_range_delete = prepare(p, "DELETE FROM mailbox_rows WHERE recipient = ?1"
                                          " AND seq > ?2 AND seq <= ?3");
        p->watermark_set = prepare(p, "INSERT INTO watermarks (recipient, acked_through,"
                                      " acked_above) VALUES (?1, ?2, ?3) ON CONFLICT (recipient)"
                                      " DO UPDATE SET acked_through = excluded.acked_through,"
                                      " acked_above = excluded.acked_above");
    }
}

/* ------------------------------------------------------------------ publish */

/* The publish row and its items: the same in every schema. */
static NOINLINE void phase_items(proto_t *p, int64_t publish_id, int64_t first_item_seq)
{
    uint8_t hash[32], evidence[96 + 40];
    fill_random(p, p->message_id, sizeof p->message_id);
    fill_random(p, hash, sizeof hash);
    fill_random(p, evidence, sizeof evidence);
    sqlite3_stmt *s = p->publish_add;
    sqlite3_bind_int64(s, 1, publish_id);
    bind_text(s, 2, sender);
    bind_blob(s, 3, p->message_id, sizeof p->message_id);
    bind_blob(s, 4, hash, sizeof hash);
    bind_blob(s, 5, evidence, sizeof evidence);
    sqlite3_bind_int64(s, 6, p->now);
    sqlite3_bind_int64(s, 7, p->now + 86400);
    run(p, s, "publish add");
    for (int i = 0; i < p->batch; i++) {
        p->item_body[i % 64] ^= (uint8_t)rng_next(p); /* not the same bytes twice */
        s = p->item_add;
        sqlite3_bind_int64(s, 1, first_item_seq + i);
        sqlite3_bind_int64(s, 2, publish_id);
        sqlite3_bind_int64(s, 3, i);
        sqlite3_bind_int64(s, 4, p->now + 86400);
        bind_blob(s, 5, p->item_body, sizeof p->item_body);
        run(p, s, "item add");
    }
}

/* today: a row per delivery, item by item (the publish path's order) */
static NOINLINE void write_today(proto_t *p, int64_t first_item_seq)
{
    sqlite3_stmt *s = p->today_add;
    for (int i = 0; i < p->batch; i++) {
        for (int r = 0; r < PROTO_RECIPIENTS; r++) {
            p->mask[(size_t)i % PROTO_MASK_BYTES] ^= (uint8_t)rng_next(p);
            bind_text(s, 1, recipients[r]);
            bind_text(s, 2, sender_partner);
            bind_text(s, 3, rule_ids[r]);
            bind_text(s, 4, rule_hash);
            bind_text(s, 5, purpose);
            bind_text(s, 6, legal_basis);
            sqlite3_bind_int64(s, 7, p->now + 86400);
            bind_blob(s, 8, p->mask, sizeof p->mask);
            sqlite3_bind_int64(s, 9, first_item_seq + i);
            bind_text(s, 10, sender);
            bind_blob(s, 11, p->message_id, sizeof p->message_id);
            sqlite3_bind_int64(s, 12, i);
            sqlite3_bind_int64(s, 13, p->now);
            sqlite3_bind_int64(s, 14, p->next_delivery_seq++);
            sqlite3_bind_null(s, 15);
            sqlite3_bind_int64(s, 16, 0);
            sqlite3_bind_int64(s, 17, 1);
            run(p, s, "delivery add");
            p->r[r].pending++;
            p->deliveries++;
        }
    }
}

/* The rule line of a row: id, hash, expires_at, fields, purpose, legal
 * basis (what the queued entry's rule line holds). */
static int rule_line(char *out, size_t len, int r, int64_t expires_at)
{
    return snprintf(out, len, "rule %s %s %" PRId64 " 0x3f %zu:%s %zu:%s\n", rule_ids[r], rule_hash,
                    expires_at, strlen(purpose), purpose, strlen(legal_basis), legal_basis);
}

/* batch: a row per recipient, its seqs consecutive */
static NOINLINE void write_batch(proto_t *p, int64_t publish_id, int64_t first_item_seq)
{
    char rules[512];
    uint8_t items[2 * PROTO_MAX_BATCH];
    sqlite3_stmt *s = p->batch_add;
    for (int r = 0; r < PROTO_RECIPIENTS; r++) {
        int64_t first = p->next_delivery_seq;
        int rules_len = rule_line(rules, sizeof rules, r, p->now + 86400);
        for (int i = 0; i < p->batch; i++) {
            items[2 * i] = (uint8_t)i; /* the item index, as a delta from the row's first */
            items[2 * i + 1] = 0;      /* its rule's slot */
        }
        p->mask[r] ^= (uint8_t)rng_next(p);
        sqlite3_bind_int64(s, 1, first);
        bind_text(s, 2, recipients[r]);
        sqlite3_bind_int64(s, 3, p->batch);
        sqlite3_bind_int64(s, 4, publish_id);
        sqlite3_bind_int64(s, 5, first_item_seq);
        bind_text(s, 6, sender);
        bind_text(s, 7, sender_partner);
        bind_blob(s, 8, p->message_id, sizeof p->message_id);
        sqlite3_bind_int64(s, 9, p->now);
        sqlite3_bind_text(s, 10, rules, rules_len, SQLITE_STATIC);
        bind_blob(s, 11, items, 2 * (size_t)p->batch);
        sqlite3_bind_int64(s, 12, p->now + 86400);
        bind_blob(s, 13, p->mask, sizeof p->mask);
        run(p, s, "mailbox add");
        p->next_delivery_seq += p->batch;
        p->r[r].pending += p->batch;
        p->deliveries += p->batch;
    }
    sqlite3_bind_int64(p->seq_high, 1, p->next_delivery_seq - 1);
    run(p, p->seq_high, "seq high");
}

/* slim and log: an envelope per recipient, its rows in multi-row INSERTs */
static NOINLINE void write_slim(proto_t *p, int64_t publish_id, int64_t first_item_seq)
{
    char rules[512];
    for (int r = 0; r < PROTO_RECIPIENTS; r++) {
        int64_t first = p->next_delivery_seq;
        int rules_len = rule_line(rules, sizeof rules, r, p->now + 86400);
        sqlite3_stmt *s = p->env_add;
        sqlite3_bind_int64(s, 1, first);
        bind_text(s, 2, recipients[r]);
        sqlite3_bind_int64(s, 3, first + p->batch - 1);
        sqlite3_bind_int64(s, 4, p->batch);
        sqlite3_bind_int64(s, 5, publish_id);
        bind_text(s, 6, sender);
        bind_text(s, 7, sender_partner);
        bind_blob(s, 8, p->message_id, sizeof p->message_id);
        sqlite3_bind_int64(s, 9, p->now);
        sqlite3_bind_text(s, 10, rules, rules_len, SQLITE_STATIC);
        sqlite3_bind_int64(s, 11, p->now + 86400);
        run(p, s, "envelope add");
        static uint8_t masks[PROTO_MULTI_ROWS][PROTO_MASK_BYTES];
        for (int done = 0; done < p->batch;) {
            int n = p->batch - done < PROTO_MULTI_ROWS ? p->batch - done : PROTO_MULTI_ROWS;
            s = p->rows_add[n];
            bind_text(s, 1, recipients[r]);
            sqlite3_bind_int64(s, 2, first);
            for (int i = 0; i < n; i++) {
                memcpy(masks[i], p->mask, PROTO_MASK_BYTES);
                masks[i][0] ^= (uint8_t)rng_next(p);
                sqlite3_bind_int64(s, 3 + 3 * i, first + done + i);
                sqlite3_bind_int64(s, 4 + 3 * i, first_item_seq + done + i);
                bind_blob(s, 5 + 3 * i, masks[i], PROTO_MASK_BYTES);
            }
            run(p, s, "rows add");
            done += n;
        }
        p->next_delivery_seq += p->batch;
        p->r[r].pending += p->batch;
        p->deliveries += p->batch;
    }
    sqlite3_bind_int64(p->seq_high, 1, p->next_delivery_seq - 1);
    run(p, p->seq_high, "seq high");
}

/* The commits of publishes and of Acks, apart. */
static NOINLINE void commit_publish(proto_t *p)
{
    run(p, p->commit, "commit");
}

static NOINLINE void commit_ack(proto_t *p)
{
    run(p, p->commit, "commit");
}

static void publish_one(proto_t *p, int64_t publish_id)
{
    double t = now_s();
    int64_t first_item_seq = p->next_item_seq;
    run(p, p->begin, "begin");
    phase_items(p, publish_id, first_item_seq);
    p->next_item_seq += p->batch;
    double t_items = now_s();
    p->t_items += t_items - t;
    if (p->schema == SCHEMA_TODAY)
        write_today(p, first_item_seq);
    else if (p->schema == SCHEMA_BATCH)
        write_batch(p, publish_id, first_item_seq);
    else if (p->schema != SCHEMA_NONE)
        write_slim(p, publish_id, first_item_seq);
    double t_mailbox = now_s();
    p->t_mailbox += t_mailbox - t_items;
    commit_publish(p);
    p->t_commit += now_s() - t_mailbox;
}

/* ------------------------------------------------------------------ scan */

/* The item's sealed bytes, as the scan's LEFT JOIN brings them (today)
 * or a lookup by item seq (the others). */
static void item_read(proto_t *p, int64_t item_seq)
{
    sqlite3_stmt *s = p->item_get;
    sqlite3_bind_int64(s, 1, item_seq);
    if (sqlite3_step(s) != SQLITE_ROW)
        die(p, "item get");
    p->sink += (uint64_t)sqlite3_column_bytes(s, 0) + (uint64_t)sqlite3_column_int64(s, 1);
    sqlite3_reset(s);
}

/* Every column of the current row, as the push reads them. */
static void columns_read(proto_t *p, sqlite3_stmt *s)
{
    int n = sqlite3_column_count(s);
    for (int c = 0; c < n; c++) {
        switch (sqlite3_column_type(s, c)) {
        case SQLITE_INTEGER:
            p->sink += (uint64_t)sqlite3_column_int64(s, c);
            break;
        case SQLITE_TEXT:
            p->sink += (uint64_t)sqlite3_column_bytes(s, c) + *sqlite3_column_text(s, c);
            break;
        case SQLITE_BLOB:
            p->sink += (uint64_t)sqlite3_column_bytes(s, c);
            p->sink += sqlite3_column_blob(s, c) != NULL;
            break;
        default:
            break;
        }
    }
}

static void scanned(proto_t *p, recipient_state_t *rs, int64_t seq)
{
    push_seq(&rs->unacked, &rs->n_unacked, &rs->cap_unacked, seq);
    rs->cursor = seq;
    p->scanned++;
}

/* One round: up to PROTO_PUSH_ROUND deliveries after the cursor. */
static NOINLINE int scan_round_today(proto_t *p, int r)
{
    recipient_state_t *rs = &p->r[r];
    sqlite3_stmt *s = p->today_scan;
    bind_text(s, 1, recipients[r]);
    sqlite3_bind_int64(s, 2, rs->cursor);
    sqlite3_bind_int64(s, 3, PROTO_PUSH_ROUND);
    int n = 0;
    while (sqlite3_step(s) == SQLITE_ROW) {
        columns_read(p, s);
        scanned(p, rs, sqlite3_column_int64(s, 0));
        n++;
    }
    sqlite3_reset(s);
    return n;
}

/* bit i of a row's done bitmap */
static int done_bit(const uint8_t *done, int len, int i)
{
    return done != NULL && i / 8 < len && (done[i / 8] >> (i % 8)) & 1;
}

/* batch: the rows from the one holding the cursor, each delivery after
 * the cursor and not done; the row is read again in each round, as a push
 * that keeps nothing between rounds would. */
static NOINLINE int scan_round_batch(proto_t *p, int r)
{
    recipient_state_t *rs = &p->r[r];
    sqlite3_stmt *s = p->batch_scan;
    bind_text(s, 1, recipients[r]);
    sqlite3_bind_int64(s, 2, rs->cursor_row);
    sqlite3_bind_int64(s, 3, PROTO_PUSH_ROUND);
    int n = 0;
    while (n < PROTO_PUSH_ROUND && sqlite3_step(s) == SQLITE_ROW) {
        columns_read(p, s);
        int64_t first = sqlite3_column_int64(s, 0);
        int count = (int)sqlite3_column_int64(s, 1);
        const uint8_t *done = sqlite3_column_blob(s, 2);
        int done_len = sqlite3_column_bytes(s, 2);
        int64_t first_item = sqlite3_column_int64(s, 3);
        const uint8_t *items = sqlite3_column_blob(s, 10);
        for (int i = 0; i < count && n < PROTO_PUSH_ROUND; i++) {
            int64_t seq = first + i;
            if (seq <= rs->cursor || done_bit(done, done_len, i))
                continue;
            item_read(p, first_item + items[2 * i]);
            rs->cursor_row = first;
            scanned(p, rs, seq);
            n++;
        }
    }
    sqlite3_reset(s);
    return n;
}

/* slim and log: the rows after the cursor; the envelope read when it
 * changes; a seq log has acked above its watermark is passed over */
static NOINLINE int scan_round_slim(proto_t *p, int r, int64_t *envelope_read)
{
    recipient_state_t *rs = &p->r[r];
    sqlite3_stmt *s = p->rows_scan;
    bind_text(s, 1, recipients[r]);
    sqlite3_bind_int64(s, 2, rs->cursor);
    sqlite3_bind_int64(s, 3, PROTO_PUSH_ROUND);
    int n = 0;
    while (sqlite3_step(s) == SQLITE_ROW) {
        columns_read(p, s);
        int64_t seq = sqlite3_column_int64(s, 0), envelope = sqlite3_column_int64(s, 2);
        if (envelope != *envelope_read) {
            sqlite3_bind_int64(p->env_get, 1, envelope);
            if (sqlite3_step(p->env_get) != SQLITE_ROW)
                die(p, "envelope get");
            columns_read(p, p->env_get);
            sqlite3_reset(p->env_get);
            *envelope_read = envelope;
        }
        int acked_above = 0;
        for (size_t i = 0; i < rs->n_above && !acked_above; i++)
            acked_above = rs->above[i] == seq;
        n++;
        if (acked_above) {
            rs->cursor = seq;
            continue;
        }
        item_read(p, sqlite3_column_int64(s, 1));
        scanned(p, rs, seq);
    }
    sqlite3_reset(s);
    return n;
}

static NOINLINE void phase_scan(proto_t *p)
{
    double t = now_s();
    for (int r = 0; r < PROTO_RECIPIENTS; r++) {
        int64_t envelope_read = 0;
        for (;;) {
            int n = p->schema == SCHEMA_TODAY   ? scan_round_today(p, r)
                    : p->schema == SCHEMA_BATCH ? scan_round_batch(p, r)
                                                : scan_round_slim(p, r, &envelope_read);
            if (n < PROTO_PUSH_ROUND)
                break;
        }
    }
    p->t_scan += now_s() - t;
}

/* ------------------------------------------------------------------ acks */

static int seq_compare(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* audit_acks: a row per seq (today) */
static NOINLINE void audit_acks_rows(proto_t *p, const int64_t *seqs, size_t n, int64_t audit_seq)
{
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_int64(p->acks_add, 1, seqs[i]);
        sqlite3_bind_int64(p->acks_add, 2, audit_seq);
        run(p, p->acks_add, "audit_acks add");
    }
}

/* audit_ack_ranges: a row per run of consecutive seqs the frame acked
 * (the acked entry lists its seqs ascending: the runs are read off it) */
static NOINLINE void audit_acks_ranges(proto_t *p, const int64_t *seqs, size_t n, int64_t audit_seq)
{
    int64_t sorted[PROTO_MAX_ACK_GROUP];
    memcpy(sorted, seqs, n * sizeof *seqs);
    qsort(sorted, n, sizeof *sorted, seq_compare);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && sorted[j + 1] == sorted[j] + 1)
            j++;
        sqlite3_bind_int64(p->ranges_add, 1, sorted[i]);
        sqlite3_bind_int64(p->ranges_add, 2, sorted[j]);
        sqlite3_bind_int64(p->ranges_add, 3, audit_seq);
        run(p, p->ranges_add, "audit range add");
        p->range_rows++;
        i = j + 1;
    }
}

static NOINLINE void ack_today(proto_t *p, int r, const int64_t *seqs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_int64(p->today_ack, 1, seqs[i]);
        bind_text(p->today_ack, 2, recipients[r]);
        run(p, p->today_ack, "ack");
        if (sqlite3_changes(p->db) != 1)
            die(p, "ack of a seq not pending");
    }
}

/* batch: each seq marked in its row's bitmap in memory; at the end of the
 * frame's turn each row touched is updated once, or deleted when done */
typedef struct batch_row {
    int64_t first;
    int n, pending;
    uint8_t done[PROTO_MAX_ACK_GROUP / 8];
} batch_row_t;

static NOINLINE void ack_batch(proto_t *p, int r, const int64_t *seqs, size_t n)
{
    static batch_row_t rows[PROTO_MAX_ACK_GROUP];
    size_t n_rows = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t seq = seqs[i];
        batch_row_t *row = NULL;
        for (size_t k = n_rows; k-- > 0 && row == NULL;)
            if (seq >= rows[k].first && seq < rows[k].first + rows[k].n)
                row = &rows[k];
        if (row == NULL) {
            sqlite3_stmt *s = p->batch_find;
            bind_text(s, 1, recipients[r]);
            sqlite3_bind_int64(s, 2, seq);
            if (sqlite3_step(s) != SQLITE_ROW)
                die(p, "ack: no row");
            row = &rows[n_rows++];
            row->first = sqlite3_column_int64(s, 0);
            row->n = (int)sqlite3_column_int64(s, 1);
            memset(row->done, 0, sizeof row->done);
            if (sqlite3_column_type(s, 2) == SQLITE_BLOB)
                memcpy(row->done, sqlite3_column_blob(s, 2), (size_t)sqlite3_column_bytes(s, 2));
            row->pending = (int)sqlite3_column_int64(s, 3);
            sqlite3_reset(s);
            if (seq >= row->first + row->n)
                die(p, "ack of a seq not pending");
        }
        int bit = (int)(seq - row->first);
        if (done_bit(row->done, (int)sizeof row->done, bit))
            die(p, "ack of a seq acked already");
        row->done[bit / 8] |= (uint8_t)(1u << (bit % 8));
        row->pending--;
    }
    for (size_t k = 0; k < n_rows; k++) {
        if (rows[k].pending == 0) {
            sqlite3_bind_int64(p->batch_delete, 1, rows[k].first);
            run(p, p->batch_delete, "row delete");
            p->row_deletes++;
        } else {
            sqlite3_bind_int64(p->batch_update, 1, rows[k].first);
            bind_blob(p->batch_update, 2, rows[k].done, ((size_t)rows[k].n + 7) / 8);
            sqlite3_bind_int64(p->batch_update, 3, rows[k].pending);
            run(p, p->batch_update, "row update");
            p->row_updates++;
        }
    }
}

/* slim and log: the envelopes touched count down once per turn, and go
 * with their last delivery */
typedef struct env_row {
    int64_t first, last;
    int pending;
} env_row_t;

static void envelopes_count_down(proto_t *p, const int64_t *seqs, size_t n)
{
    static env_row_t envs[PROTO_MAX_ACK_GROUP];
    size_t n_envs = 0;
    for (size_t i = 0; i < n; i++) {
        env_row_t *env = NULL;
        for (size_t k = n_envs; k-- > 0 && env == NULL;)
            if (seqs[i] >= envs[k].first && seqs[i] <= envs[k].last)
                env = &envs[k];
        if (env == NULL) {
            sqlite3_bind_int64(p->env_find, 1, seqs[i]);
            if (sqlite3_step(p->env_find) != SQLITE_ROW)
                die(p, "ack: no envelope");
            env = &envs[n_envs++];
            env->first = sqlite3_column_int64(p->env_find, 0);
            env->last = sqlite3_column_int64(p->env_find, 1);
            env->pending = (int)sqlite3_column_int64(p->env_find, 2);
            sqlite3_reset(p->env_find);
        }
        env->pending--;
    }
    for (size_t k = 0; k < n_envs; k++) {
        sqlite3_stmt *s = envs[k].pending == 0 ? p->env_delete : p->env_update;
        sqlite3_bind_int64(s, 1, envs[k].first);
        if (envs[k].pending > 0)
            sqlite3_bind_int64(s, 2, envs[k].pending);
        run(p, s, "envelope count");
        if (envs[k].pending == 0)
            p->row_deletes++;
        else
            p->row_updates++;
    }
}

static NOINLINE void ack_slim(proto_t *p, int r, const int64_t *seqs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_int64(p->rows_ack, 2, seqs[i]);
        bind_text(p->rows_ack, 1, recipients[r]);
        run(p, p->rows_ack, "ack");
        if (sqlite3_changes(p->db) != 1)
            die(p, "ack of a seq not pending");
    }
    envelopes_count_down(p, seqs, n);
}

/* log: the acks join the set above the watermark; the watermark moves up
 * over the mailbox's rows while each is acked (one walk of its range of
 * the primary key); the rows below it go in one range DELETE, and the
 * watermark row is written once per turn */
static NOINLINE void ack_log(proto_t *p, int r, const int64_t *seqs, size_t n)
{
    recipient_state_t *rs = &p->r[r];
    for (size_t i = 0; i < n; i++)
        push_seq(&rs->above, &rs->n_above, &rs->cap_above, seqs[i]);
    qsort(rs->above, rs->n_above, sizeof *rs->above, seq_compare);
    int64_t from = rs->watermark, mark = from;
    size_t k = 0;
    sqlite3_stmt *s = p->rows_scan;
    bind_text(s, 1, recipients[r]);
    sqlite3_bind_int64(s, 2, from);
    sqlite3_bind_int64(s, 3, (int64_t)rs->n_above);
    while (k < rs->n_above && sqlite3_step(s) == SQLITE_ROW &&
           sqlite3_column_int64(s, 0) == rs->above[k])
        mark = rs->above[k++];
    sqlite3_reset(s);
    if (k > 0) {
        s = p->rows_range_delete;
        bind_text(s, 1, recipients[r]);
        sqlite3_bind_int64(s, 2, from);
        sqlite3_bind_int64(s, 3, mark);
        run(p, s, "range delete");
        if (sqlite3_changes(p->db) != (int)k)
            die(p, "range delete removed another count than acked");
        memmove(rs->above, rs->above + k, (rs->n_above - k) * sizeof *rs->above);
        rs->n_above -= k;
        rs->watermark = mark;
    }
    s = p->watermark_set;
    bind_text(s, 1, recipients[r]);
    sqlite3_bind_int64(s, 2, rs->watermark);
    if (rs->n_above > 0)
        bind_blob(s, 3, rs->above, rs->n_above * sizeof *rs->above);
    else
        sqlite3_bind_null(s, 3);
    run(p, s, "watermark");
    envelopes_count_down(p, seqs, n);
}

/* One Ack frame of recipient r, its own turn and commit. */
static void ack_frame(proto_t *p, int r, const int64_t *seqs, size_t n)
{
    run(p, p->begin, "begin");
    int64_t audit_seq = ++p->next_audit_seq;
    if (p->schema == SCHEMA_TODAY) {
        ack_today(p, r, seqs, n);
        audit_acks_rows(p, seqs, n, audit_seq);
    } else {
        if (p->schema == SCHEMA_BATCH)
            ack_batch(p, r, seqs, n);
        else if (p->schema == SCHEMA_SLIM)
            ack_slim(p, r, seqs, n);
        else
            ack_log(p, r, seqs, n);
        audit_acks_ranges(p, seqs, n, audit_seq);
    }
    commit_ack(p);
    p->r[r].pending -= (int64_t)n;
    p->acked += (long)n;
}

static void shuffle(proto_t *p, int64_t *seqs, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rng_next(p) % i);
        int64_t t = seqs[i - 1];
        seqs[i - 1] = seqs[j];
        seqs[j] = t;
    }
}

/* Ack what was scanned, in frames of ack_group (all of it when `all`). */
static NOINLINE void phase_ack(proto_t *p, int all)
{
    if (p->schema == SCHEMA_NONE)
        return;
    double t = now_s();
    for (int r = 0; r < PROTO_RECIPIENTS; r++) {
        recipient_state_t *rs = &p->r[r];
        size_t taken = 0;
        while (rs->n_unacked - taken >= (size_t)p->ack_group || (all && taken < rs->n_unacked)) {
            size_t n = rs->n_unacked - taken;
            if (n > (size_t)p->ack_group)
                n = (size_t)p->ack_group;
            int64_t group[PROTO_MAX_ACK_GROUP];
            memcpy(group, rs->unacked + taken, n * sizeof *group);
            taken += n;
            if (!p->interleave) {
                ack_frame(p, r, group, n);
                continue;
            }
            /* the even positions in one frame, the odd in the next, each
             * in a shuffled order */
            int64_t half[PROTO_MAX_ACK_GROUP];
            for (int parity = 0; parity < 2; parity++) {
                size_t h = 0;
                for (size_t i = (size_t)parity; i < n; i += 2)
                    half[h++] = group[i];
                shuffle(p, half, h);
                if (h > 0)
                    ack_frame(p, r, half, h);
            }
        }
        memmove(rs->unacked, rs->unacked + taken, (rs->n_unacked - taken) * sizeof *rs->unacked);
        rs->n_unacked -= taken;
    }
    p->t_ack += now_s() - t;
}

/* ------------------------------------------------------------------ main */

static void usage(void)
{
    fprintf(stderr, "usage: proto_mailbox --schema none|today|batch|slim|log [--batch N (1..256)]\n"
                    "         [--publishes N] [--ack-group N (1..1024)] [--interleave] [--sync]\n"
                    "         [--dir DIR] [--keep]\n");
    exit(2);
}

static long number(const char *text, long min, long max)
{
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < min || value > max)
        usage();
    return value;
}

int main(int argc, char **argv)
{
    static proto_t proto;
    proto_t *p = &proto;
    const char *dir = NULL;
    int keep = 0;
    p->schema = SCHEMA_TODAY;
    p->batch = 256;
    p->publishes = 0;
    p->ack_group = 256;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--schema") == 0 && v != NULL) {
            int found = 0;
            for (int s = 0; s <= SCHEMA_LOG; s++)
                if (strcmp(v, schema_names[s]) == 0) {
                    p->schema = (enum schema)s;
                    found = 1;
                }
            if (!found)
                usage();
            i++;
        } else if (strcmp(a, "--batch") == 0 && v != NULL) {
            p->batch = (int)number(v, 1, PROTO_MAX_BATCH);
            i++;
        } else if (strcmp(a, "--publishes") == 0 && v != NULL) {
            p->publishes = number(v, 1, 10000000);
            i++;
        } else if (strcmp(a, "--ack-group") == 0 && v != NULL) {
            p->ack_group = (int)number(v, 1, PROTO_MAX_ACK_GROUP);
            i++;
        } else if (strcmp(a, "--dir") == 0 && v != NULL) {
            dir = v;
            i++;
        } else if (strcmp(a, "--interleave") == 0) {
            p->interleave = 1;
        } else if (strcmp(a, "--sync") == 0) {
            p->sync = 1;
        } else if (strcmp(a, "--keep") == 0) {
            keep = 1;
        } else {
            usage();
        }
    }
    if (p->publishes == 0)
        p->publishes = p->batch >= 64 ? 100 : 6000;
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    char folder[4096], path[4200];
    snprintf(folder, sizeof folder, "%s/proto_mailbox.XXXXXX",
             dir != NULL ? dir : (getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp"));
    if (mkdtemp(folder) == NULL) {
        perror("proto_mailbox: mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/store.db", folder);
    p->rng = 0x9e3779b97f4a7c15u;
    fill_random(p, p->item_body, sizeof p->item_body);
    fill_random(p, p->mask, sizeof p->mask);
    p->next_item_seq = 1;
    p->next_delivery_seq = 1;
    p->now = 1767225600;
    store_open(p, path);

    double began = now_s();
    for (long i = 0; i < p->publishes; i++) {
        publish_one(p, i + 1);
        phase_checkpoint(p);
        phase_scan(p);
        phase_ack(p, i + 1 == p->publishes);
        phase_checkpoint(p);
    }
    double wall = now_s() - began;
    for (int r = 0; r < PROTO_RECIPIENTS; r++)
        if (p->schema != SCHEMA_NONE && (p->r[r].pending != 0 || p->r[r].n_unacked != 0))
            die(p, "a mailbox is not empty at the end");
    if (p->schema != SCHEMA_NONE && (p->scanned != p->deliveries || p->acked != p->deliveries))
        die(p, "not every delivery was scanned and acked once");

    struct stat st;
    off_t file_bytes = stat(path, &st) == 0 ? st.st_size : -1;
    long d = p->deliveries > 0 ? p->deliveries : 1;
    printf("schema %s  batch %d  publishes %ld  items %ld  deliveries %ld  ack group %d%s%s\n",
           schema_names[p->schema], p->batch, p->publishes, p->publishes * p->batch, p->deliveries,
           p->ack_group, p->interleave ? " interleaved" : "", p->sync ? " sync" : "");
    printf("wall %.3f s: items %.3f, mailbox writes %.3f, publish commits %.3f, scan %.3f,"
           " acks %.3f, checkpoints %.3f (%ld)\n",
           wall, p->t_items, p->t_mailbox, p->t_commit, p->t_scan, p->t_ack, p->t_checkpoint,
           p->checkpoints);
    printf("per delivery: mailbox writes %.2f us, publish commits %.2f us, scan %.2f us,"
           " acks %.2f us\n",
           p->t_mailbox * 1e6 / (double)d, p->t_commit * 1e6 / (double)d,
           p->t_scan * 1e6 / (double)d, p->t_ack * 1e6 / (double)d);
    printf("row updates %ld, row deletes %ld, audit range rows %ld, file %lld bytes\n",
           p->row_updates, p->row_deletes, p->range_rows, (long long)file_bytes);
    sqlite3_stmt *stmt;
    while ((stmt = sqlite3_next_stmt(p->db, NULL)) != NULL)
        sqlite3_finalize(stmt);
    sqlite3_close(p->db);
    if (!keep) {
        char side[4300];
        unlink(path);
        snprintf(side, sizeof side, "%s-wal", path);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", path);
        unlink(side);
        rmdir(folder);
    } else {
        printf("kept %s\n", folder);
    }
    return 0;
}
