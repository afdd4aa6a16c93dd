/*
 * store_mailbox_internal.h — what the mailbox's files share (store_mailbox.c:
 * the table, adding rows, acks and removals; store_mailbox_row.c: a row's
 * clear columns and its seal's associated data; store_mailbox_scan.c: the
 * scan). Private to them: the rest of the store sees store_mailbox.h and
 * the hooks in store_internal.h.
 */
#ifndef SCHAKEL_STORE_MAILBOX_INTERNAL_H
#define SCHAKEL_STORE_MAILBOX_INTERNAL_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "store_internal.h"
#include "store_mailbox.h"

/* The mailbox's statements (store_mailbox.c lists their SQL), prepared at
 * first use and finalized by store_close. */
enum mailbox_stmt_id {
    MB_ADD,
    MB_SEQS_TAKEN,
    MB_ITEMS,
    MB_PUBLISH,
    MB_ITEM_RAISE,
    MB_PUBLISH_RAISE,
    MB_SCAN,
    MB_SCAN_ITEM,
    MB_FIND,
    MB_UPDATE,
    MB_DELETE,
    MB_PENDING,
    MB_EXPIRE_NEXT,
    MB_REWRITE,
    /* store_mailbox_aside.c */
    MB_ASIDE_FIND,
    MB_ASIDE_MOVE,
    MB_ASIDE_ROW,
    MB_ASIDE_ROWS,
    MB_ASIDE_RECORDED,
    MB_ASIDE_DUE_UNTYPED,
    MB_ASIDE_DUE,
    MB_ASIDE_REMOVE,
    /* store_mailbox_case.c: a member leaves, a case closes or reopens,
     * what expiry may take */
    MB_CASE_DROP_ROWS,
    MB_CASE_EXPIRY_CASE,
    MB_CASE_EXPIRY_EVENTS,
    MB_CASE_ROW_NEXT,
    MB_CASE_ROW_SET,
    MB_CASE_ITEM_NEXT,
    MB_CASE_ITEM_SET,
    MB_CASE_EXPIRY_SET_ASIDE,
    MB_CASE_EXPIRY_PUBLISHES,
    MB_PUBLISH_ROWS,
    MB_PUBLISH_SET_ASIDE_ROWS,
    MB_EXPIRE_ITEM_NEXT,
    MB_EXPIRE_ITEM_DELETE,
    MB_EXPIRE_PUBLISHES,
    MB_EXPIRE_CASES,
    MB_EXPIRE_PUBLISHES_END,
    MB_EXPIRE_CASES_END,
    /* store_mailbox_query.c */
    MB_QUERY_RULE,
    MB_QUERY_LIST_WAITING,
    MB_QUERY_LIST_SET_ASIDE,
    MB_QUERY_LIST_EVENT,
    MB_QUERY_NEXT_RECIPIENT,
    MB_QUERY_OLDEST,
    MB_QUERY_BACKLOG,
    MB_QUERY_LAST_SEQ,
    MB_STMT_COUNT
};

/* Statement id, prepared; NULL with the failure recorded (the table
 * missing among others). */
sqlite3_stmt *store_mailbox_stmt(store_t *store, enum mailbox_stmt_id id);

/* The tombstone of a delivery removed (expired, revoked, dropped, or a
 * set-aside one expired): e->tombstoned_before set when its seq had one
 * already (that one is kept, as store_expire keeps it). what names the
 * caller in errors. 0 or -1. */
int store_mailbox_tombstone(store_t *store, store_expired_t *e, int64_t now, const char *what);

/* The done bitmap of the row starting at first_seq as this transaction's
 * acks and removals left it, or NULL when it marked none of the row. */
const uint8_t *store_mailbox_marked(store_t *store, int64_t first_seq);

/* Forget the mark of the row starting at first_seq, for a caller that has
 * just written or moved the row itself with the bitmap store_mailbox_marked
 * gave (a set-aside): the flush then leaves the row alone. The counts keep
 * the changes the mark made; nothing when the row has no mark. */
void store_mailbox_unmark(store_t *store, int64_t first_seq);
/* Row first_seq, just set aside by a store call on its own (an expiry's
 * sweep, a case's drop: its caller never saw it), listed for the caller's
 * trail entries (store_mailbox_row_set_aside_take). The list is this
 * transaction's: a commit or a rollback ends it. 0, or -1 (out of memory,
 * refused). */
int store_mailbox_aside_list(store_t *store, int64_t first_seq);

/* The first_seq of the oldest row listed in this transaction and not
 * taken yet, now taken; 0 when there is none. */
int64_t store_mailbox_aside_next(store_t *store);

/* The deliveries this transaction's marks set done and the rows' pending
 * columns still count (the marks are written at the commit): of
 * recipient's rows, or of every row when recipient is NULL. */
int64_t store_mailbox_marked_count(store_t *store, const char *recipient);

/* Where a sweep of due rows goes on: after (expiry, key) in its table's
 * order of expiry (the key: the rowid). The start, (INT64_MIN, 0), when
 * the last step reached the end; else the last row its full window
 * looked at, so that due rows held by something (`limit` or more of them
 * first in that order) do not keep a step from those behind them. */
typedef struct mailbox_sweep_at {
    int64_t expiry, key;
} mailbox_sweep_at_t;
enum mailbox_sweep {
    MAILBOX_SWEEP_ITEMS,
    MAILBOX_SWEEP_PUBLISHES,
    MAILBOX_SWEEP_CASES,
    MAILBOX_SWEEPS
};

/* The place of sweep `which` for the open transaction (as the last commit
 * left it, until this transaction moves it), or NULL (out of memory: the
 * sweep then starts at the start). A transaction rolled back leaves it
 * where it was; store_mailbox_committed keeps a committed one's. */
mailbox_sweep_at_t *store_mailbox_sweep_at(store_t *store, enum mailbox_sweep which);

/* Count one row set aside by this step of the expiry sweep (outside
 * store_mailbox_row_expire: the items' step), for the caller's entries
 * (store_mailbox_expire_set_aside). */
void store_mailbox_expire_aside_count(store_t *store);

/* ------------------------------------------------------------------ store_mailbox_row.c */

/* The rule lines of rules[0 .. n_rules) as the rules column holds them,
 * malloc'd into *text (NUL-terminated, its length in *len). -1 when memory
 * runs out. */
int store_mailbox_rules_encode(const store_mailbox_rule_t *rules, size_t n_rules, char **text,
                               size_t *len);

/* One rule slot as parsed, its strings in the parse's buffer. */
typedef struct mailbox_rule_slot {
    const char *rule_id;
    const char *rule_hash;
    const char *purpose;
    const char *legal_basis;
    int64_t expires_at;
} mailbox_rule_slot_t;

/* The rule lines parsed, from untrusted bytes. */
typedef struct mailbox_rules {
    char *buf;                  /* a copy of the column, each field NUL-terminated in place */
    mailbox_rule_slot_t *slots; /* n_slots of them */
    size_t n_slots, cap_slots;
} mailbox_rules_t;

/* Parse len bytes of the rules column into *out (freed with
 * store_mailbox_rules_free, also after a failure): 0; -1 when they are
 * not rule lines as store_mailbox_rules_encode writes them (damage) or
 * hold more than max_slots; -2 when memory runs out. Safe on any bytes. */
int store_mailbox_rules_parse(const char *text, size_t len, size_t max_slots, mailbox_rules_t *out);
void store_mailbox_rules_free(mailbox_rules_t *r);

/* The clear columns of a row that its seal binds: first_seq, n, the
 * recipient, the case id and whether it is an event in the associated
 * data itself, the others by their BLAKE2b-256 digest. */
typedef struct mailbox_row_clear {
    int64_t first_seq;
    uint32_t n;
    const char *recipient;
    int64_t publish_id, first_item_seq;
    const char *sender, *sender_partner;
    const uint8_t *message_id; /* 16 bytes */
    int64_t accepted_at;
    const char *rules;
    size_t rules_len;
    const uint8_t *items; /* 4 * n bytes */
    const char *case_id;  /* NULL: a signal's row */
    int is_case_event;
} mailbox_row_clear_t;

/* The associated data of the row's sealed body: 0, or -1 for a recipient
 * longer than any principal id, a case id not SCHAKEL_CASE_ID_LEN bytes or
 * a text beyond 4 GiB. Cost: one BLAKE2b pass over the clear columns. */
int store_mailbox_row_ad(store_seal_ad_t *ad, const mailbox_row_clear_t *c);

/* The items column: per delivery 4 bytes, its item's index in the publish
 * and its rule slot, each 16 bits little-endian. Its item seq is the row's
 * first_item_seq moved by the difference of the indexes: the items of a
 * row are numbered as their publish's (store_mailbox_row_add checks it). */
static inline void mailbox_item_put(uint8_t *items, size_t i, uint32_t item_index,
                                    uint32_t rule_slot)
{
    items[4 * i] = (uint8_t)item_index;
    items[4 * i + 1] = (uint8_t)(item_index >> 8);
    items[4 * i + 2] = (uint8_t)rule_slot;
    items[4 * i + 3] = (uint8_t)(rule_slot >> 8);
}

static inline uint32_t mailbox_item_index_at(const uint8_t *items, size_t i)
{
    return (uint32_t)items[4 * i] | (uint32_t)items[4 * i + 1] << 8;
}

static inline uint32_t mailbox_rule_slot_at(const uint8_t *items, size_t i)
{
    return (uint32_t)items[4 * i + 2] | (uint32_t)items[4 * i + 3] << 8;
}

/* A row's first_seq and n as the broker writes them (the table's CHECKs,
 * which a file altered outside SQLite may not have kept): its seqs are
 * positive and none overflows. */
static inline int mailbox_span_ok(int64_t first_seq, int64_t n)
{
    return first_seq >= 1 && n >= 1 && n <= (int64_t)STORE_MAILBOX_MAX_N &&
           first_seq <= INT64_MAX - n;
}

/* A row's first_item_seq from which every item seq the items column can
 * make (its indexes are 16 bits) is computed without overflow. */
static inline int mailbox_item_seq_ok(int64_t first_item_seq)
{
    return first_item_seq >= 1 && first_item_seq <= INT64_MAX - 65536;
}

/* Bit i of a done bitmap (NULL: none done). */
static inline int mailbox_done_bit(const uint8_t *done, size_t i)
{
    return done != NULL && (done[i / 8] >> (i % 8)) & 1;
}

/* How many of a row's n deliveries its done bitmap marks. */
static inline uint32_t mailbox_done_count(const uint8_t *done, uint32_t n)
{
    uint32_t count = 0;
    for (uint32_t i = 0; done != NULL && i < n; i++)
        count += (uint32_t)mailbox_done_bit(done, i);
    return count;
}

/* A row's pending column (col of stmt) as every writer leaves it: an
 * integer, the deliveries of its n (in range) its done bitmap (read and
 * of the right size) does not mark, at least one. Every reader refuses a
 * row whose pending says otherwise as damaged, so that the push sets it
 * aside rather than send what no ack, expiry or removal could then
 * write (the seal does not bind pending). */
static inline int mailbox_pending_ok(sqlite3_stmt *stmt, int col, int64_t n, const uint8_t *done)
{
    int64_t pending = sqlite3_column_int64(stmt, col);
    return sqlite3_column_type(stmt, col) == SQLITE_INTEGER && pending >= 1 &&
           pending == n - (int64_t)mailbox_done_count(done, (uint32_t)n);
}

#endif
