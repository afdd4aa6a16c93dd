/*
 * store_mailbox.c — the mailbox as rows of one publish and recipient
 * (store_mailbox.h, docs/design/mailbox.md section 3): the table, adding a
 * row with its facts checked, scanning a recipient's deliveries out of its
 * rows, acks marked in memory and written once per row before the commit,
 * and the removal of one delivery. Trusts its caller for id syntax and
 * nothing read back from the file: the clear columns are parsed with every
 * length checked, and a row is handed out only once its seal, which binds
 * them, opens (or the caller vouches for what it wrote). Errors: -1 with
 * store_errmsg set.
 */
#include <inttypes.h>
#include <limits.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schakel_limits.h"
#include "store_internal.h"
#include "store_mailbox.h"

/* ------------------------------------------------------------------ schema */

/* first_seq is the rowid: seqs are unique broker-wide, so the row of a
 * seq is the recipient's row with the greatest first_seq at most the seq
 * (one descent of mailbox_by_recipient), and the seq is the row's when it
 * is below first_seq + n. done is a bitmap of n bits (bit i: seq
 * first_seq + i acked or removed), NULL while none is; pending counts the
 * others. expires_at is the earliest expiry among the row's deliveries
 * (each one's own is in its rule line), for the expiry's index. */
static const char mailbox_schema_sql[] =
    "CREATE TABLE mailbox ("
    "  first_seq INTEGER PRIMARY KEY CHECK (first_seq > 0),"
    "  recipient TEXT NOT NULL,"
    "  n INTEGER NOT NULL CHECK (n BETWEEN 1 AND 1024),"
    "  pending INTEGER NOT NULL CHECK (pending BETWEEN 1 AND n),"
    "  publish_id INTEGER NOT NULL REFERENCES publishes(id),"
    "  first_item_seq INTEGER NOT NULL,"
    "  sender TEXT NOT NULL,"
    "  sender_partner TEXT NOT NULL,"
    "  message_id BLOB NOT NULL CHECK (length(message_id) = 16),"
    "  accepted_at INTEGER NOT NULL,"
    "  rules TEXT NOT NULL,"
    "  items BLOB NOT NULL CHECK (length(items) = 4 * n),"
    "  expires_at INTEGER NOT NULL,"
    "  body BLOB NOT NULL,"
    "  done BLOB,"
    "  case_id TEXT REFERENCES cases(case_id),"
    "  is_case_event INTEGER NOT NULL DEFAULT 0"
    "   CHECK (is_case_event IN (0, 1) AND (case_id IS NOT NULL OR is_case_event = 0))"
    ");"
    "CREATE INDEX mailbox_by_recipient ON mailbox (recipient, first_seq);"
    "CREATE INDEX mailbox_by_expiry ON mailbox (expires_at);"
    "CREATE INDEX mailbox_by_publish ON mailbox (publish_id);"
    "CREATE INDEX mailbox_by_case ON mailbox (case_id, recipient) WHERE case_id IS NOT NULL;";

int store_mailbox_schema(store_t *store)
{
    if (store_enter(store, "mailbox schema") != 0)
        return -1;
    return store_exec_fixed(store, mailbox_schema_sql, "mailbox schema");
}

/* ------------------------------------------------------------------ statements */

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
    MB_STMT_COUNT
};

static const char *const mailbox_sql[MB_STMT_COUNT] = {
    [MB_ADD] = "INSERT INTO mailbox (first_seq, recipient, n, pending, publish_id, first_item_seq,"
               " sender, sender_partner, message_id, accepted_at, rules, items, expires_at, body,"
               " case_id, is_case_event)"
               " VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    /* The end of the row starting last at or before ?1 (the new row's
     * last seq): rows never overlap, so it is the only one that can. */
    [MB_SEQS_TAKEN] = "SELECT first_seq + n FROM mailbox WHERE first_seq <= ?1"
                      " ORDER BY first_seq DESC LIMIT 1",
    [MB_ITEMS] = "SELECT seq, publish_id, item_index, expires_at FROM items"
                 " WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq",
    [MB_PUBLISH] =
        "SELECT sender, message_id, accepted_at, expires_at FROM publishes WHERE id = ?1",
    [MB_ITEM_RAISE] = "UPDATE items SET expires_at = ?2 WHERE seq = ?1 AND expires_at < ?2",
    [MB_PUBLISH_RAISE] = "UPDATE publishes SET expires_at = ?2 WHERE id = ?1 AND expires_at < ?2",
    /* From the row holding the seq after the cursor: the subquery is one
     * descent, run once; the rows then come in first_seq order. */
    [MB_SCAN] = "SELECT first_seq, n, done, first_item_seq, publish_id, sender, sender_partner,"
                " message_id, accepted_at, rules, items, body, case_id, is_case_event"
                " FROM mailbox WHERE recipient = ?1 AND first_seq >= coalesce((SELECT first_seq"
                " FROM mailbox WHERE recipient = ?1 AND first_seq <= ?2"
                " ORDER BY first_seq DESC LIMIT 1), 0) ORDER BY first_seq",
    [MB_SCAN_ITEM] = "SELECT body, publish_id FROM items WHERE seq = ?1",
    [MB_FIND] = "SELECT first_seq, n, done, pending, first_item_seq, rules, items FROM mailbox"
                " WHERE recipient = ?1 AND first_seq <= ?2 ORDER BY first_seq DESC LIMIT 1",
    [MB_UPDATE] = "UPDATE mailbox SET done = ?2, pending = ?3 WHERE first_seq = ?1",
    [MB_DELETE] = "DELETE FROM mailbox WHERE first_seq = ?1",
    [MB_PENDING] = "SELECT coalesce(sum(pending), 0) FROM mailbox WHERE recipient = ?1",
};

/* Columns of MB_SCAN and MB_FIND. */
enum scan_col {
    SC_FIRST_SEQ,
    SC_N,
    SC_DONE,
    SC_FIRST_ITEM_SEQ,
    SC_PUBLISH_ID,
    SC_SENDER,
    SC_SENDER_PARTNER,
    SC_MESSAGE_ID,
    SC_ACCEPTED_AT,
    SC_RULES,
    SC_ITEMS,
    SC_BODY,
    SC_CASE_ID,
    SC_IS_CASE_EVENT
};
enum find_col { FC_FIRST_SEQ, FC_N, FC_DONE, FC_PENDING, FC_FIRST_ITEM_SEQ, FC_RULES, FC_ITEMS };

/* One row touched by this transaction's acks and removals: its bitmap and
 * pending count as they will be written (store_mailbox_flush). */
typedef struct mailbox_mark {
    int64_t first_seq;
    uint32_t n;
    uint32_t pending; /* as it will be written */
    uint32_t marked;  /* bits this transaction set: the count's changes */
    char recipient[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    uint8_t done[STORE_MAILBOX_MAX_N / 8];
} mailbox_mark_t;

struct store_mailbox {
    sqlite3_stmt *stmt[MB_STMT_COUNT];
    mailbox_mark_t *marks;
    size_t n_marks, cap_marks;
    uint64_t marks_serial; /* the transaction they were made in */
};

static struct store_mailbox *mailbox_of(store_t *store)
{
    if (store->mailbox == NULL && (store->mailbox = calloc(1, sizeof *store->mailbox)) == NULL)
        store_refuse(store, "mailbox", "out of memory");
    return store->mailbox;
}

/* Prepared at first use, kept until store_close. NULL with the failure
 * recorded (the table missing among others). */
static sqlite3_stmt *mailbox_stmt(store_t *store, enum mailbox_stmt_id id)
{
    struct store_mailbox *m = mailbox_of(store);
    if (m == NULL)
        return NULL;
    if (m->stmt[id] != NULL)
        return m->stmt[id];
    if (sqlite3_prepare_v3(store->db, mailbox_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &m->stmt[id],
                           NULL) != SQLITE_OK) {
        store_fail(store, "mailbox: prepare");
        m->stmt[id] = NULL;
    }
    return m->stmt[id];
}

void store_mailbox_free(store_t *store)
{
    struct store_mailbox *m = store->mailbox;
    if (m == NULL)
        return;
    for (int i = 0; i < MB_STMT_COUNT; i++)
        (void)sqlite3_finalize(m->stmt[i]);
    free(m->marks);
    free(m);
    store->mailbox = NULL;
}

/* ------------------------------------------------------------------ the row's clear columns */

/* The rule lines (the rules column): per slot five netstrings, "<len>:<bytes>,"
 * each: expires_at in decimal, rule id, rule hash, purpose, legal basis.
 * Purpose and legal basis may hold any text, newlines included: a length
 * says where each ends. TEXT, valid UTF-8 as its fields are. */
#define RULE_FIELDS 5

static int netstring_put(char *out, size_t cap, size_t *used, const char *text, size_t len)
{
    int w = snprintf(out + *used, cap - *used, "%zu:", len);
    if (w < 0 || (size_t)w >= cap - *used || len + 1 > cap - *used - (size_t)w)
        return -1;
    *used += (size_t)w;
    memcpy(out + *used, text, len);
    *used += len;
    out[(*used)++] = ',';
    return 0;
}

/* The rule lines of rules[0 .. n_rules), malloc'd into *text (its length
 * in *len, NUL-terminated). -1 when memory runs out. */
static int rules_encode(const store_mailbox_rule_t *rules, size_t n_rules, char **text, size_t *len)
{
    size_t cap = 1;
    for (size_t i = 0; i < n_rules; i++)
        cap += 5 * 24 + 24 + strlen(rules[i].rule_id) + strlen(rules[i].rule_hash) +
               strlen(rules[i].purpose) + strlen(rules[i].legal_basis);
    char *out = malloc(cap);
    if (out == NULL)
        return -1;
    size_t used = 0;
    for (size_t i = 0; i < n_rules; i++) {
        char expiry[24];
        int w = snprintf(expiry, sizeof expiry, "%" PRId64, rules[i].expires_at);
        const char *fields[RULE_FIELDS] = {expiry, rules[i].rule_id, rules[i].rule_hash,
                                           rules[i].purpose, rules[i].legal_basis};
        for (int f = 0; f < RULE_FIELDS; f++)
            if (netstring_put(out, cap, &used, fields[f], f == 0 ? (size_t)w : strlen(fields[f])) !=
                0) {
                free(out);
                return -1; /* cannot happen: cap counts every byte */
            }
    }
    out[used] = '\0';
    *text = out;
    *len = used;
    return 0;
}

/* One rule slot as parsed, its strings in the parse's buffer. */
typedef struct rule_slot {
    const char *rule_id;
    const char *rule_hash;
    const char *purpose;
    const char *legal_basis;
    int64_t expires_at;
} rule_slot_t;

/* The rule lines parsed, from untrusted bytes. */
typedef struct rules_parsed {
    char *buf;          /* a copy of the column, each field's ',' made its NUL */
    rule_slot_t *slots; /* n_slots of them */
    size_t n_slots;
} rules_parsed_t;

static void rules_free(rules_parsed_t *r)
{
    free(r->buf);
    free(r->slots);
    *r = (rules_parsed_t){NULL, NULL, 0};
}

/* The netstring at *pos of buf (len bytes): its field's start, NUL
 * terminated in place. NULL when it is not one, or holds a NUL. */
static char *netstring_take(char *buf, size_t len, size_t *pos)
{
    size_t p = *pos, field_len = 0, digits = 0;
    while (p < len && buf[p] >= '0' && buf[p] <= '9' && digits < 10) {
        field_len = field_len * 10 + (size_t)(buf[p] - '0');
        p++;
        digits++;
    }
    if (digits == 0 || p >= len || buf[p] != ':' || (digits > 1 && buf[*pos] == '0'))
        return NULL;
    p++;
    if (field_len >= len - p || buf[p + field_len] != ',' || memchr(buf + p, '\0', field_len))
        return NULL;
    char *field = buf + p;
    field[field_len] = '\0';
    *pos = p + field_len + 1;
    return field;
}

/* A decimal int64 that is the whole of text. */
static int int64_parse(const char *text, int64_t *value)
{
    const char *p = text;
    int negative = *p == '-';
    if (negative)
        p++;
    if (*p == '\0' || (*p == '0' && p[1] != '\0'))
        return -1;
    uint64_t v = 0, limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || v > (limit - (uint64_t)(*p - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *value = negative ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

/* Parse len bytes of rule lines into *out: 0; -1 when they are not rule
 * lines as rules_encode writes them (damage) or hold more than max_slots;
 * -2 when memory runs out. */
static int rules_parse(const char *text, size_t len, size_t max_slots, rules_parsed_t *out)
{
    *out = (rules_parsed_t){NULL, NULL, 0};
    if (text == NULL || len == 0)
        return -1;
    out->buf = malloc(len + 1);
    out->slots = calloc(max_slots, sizeof *out->slots);
    if (out->buf == NULL || out->slots == NULL) {
        rules_free(out);
        return -2;
    }
    memcpy(out->buf, text, len);
    out->buf[len] = '\0';
    size_t pos = 0;
    while (pos < len) {
        char *fields[RULE_FIELDS];
        for (int f = 0; f < RULE_FIELDS; f++)
            if ((fields[f] = netstring_take(out->buf, len, &pos)) == NULL) {
                rules_free(out);
                return -1;
            }
        rule_slot_t slot = {fields[1], fields[2], fields[3], fields[4], 0};
        if (out->n_slots >= max_slots || int64_parse(fields[0], &slot.expires_at) != 0) {
            rules_free(out);
            return -1;
        }
        out->slots[out->n_slots++] = slot;
    }
    return 0;
}

/* The items column: per delivery 4 bytes, its item's index in the publish
 * and its rule slot, each 16 bits little-endian. Its item seq is the row's
 * first_item_seq moved by the difference of the indexes: the items of a
 * row are numbered as their publish's (store_mailbox_row_add checks it). */
static void item_put(uint8_t *items, size_t i, uint32_t item_index, uint32_t rule_slot)
{
    items[4 * i] = (uint8_t)item_index;
    items[4 * i + 1] = (uint8_t)(item_index >> 8);
    items[4 * i + 2] = (uint8_t)rule_slot;
    items[4 * i + 3] = (uint8_t)(rule_slot >> 8);
}

static uint32_t item_index_at(const uint8_t *items, size_t i)
{
    return (uint32_t)items[4 * i] | (uint32_t)items[4 * i + 1] << 8;
}

static uint32_t rule_slot_at(const uint8_t *items, size_t i)
{
    return (uint32_t)items[4 * i + 2] | (uint32_t)items[4 * i + 3] << 8;
}

static int done_bit(const uint8_t *done, size_t i)
{
    return done != NULL && (done[i / 8] >> (i % 8)) & 1;
}

/* ------------------------------------------------------------------ the seal */

/* Associated data of a row's sealed body: a tag of its own for each kind
 * (masks, or a case's body), so neither opens as the other nor as any
 * delivery's; first_seq and n (which seqs), for a case whether it is an
 * event and its case id; the digest of everything else the push sends or
 * decides by (row_digest); the recipient last. */
static const char ad_row_masks_tag[] = "schakel-store-mailbox-masks-v1";
static const char ad_row_case_tag[] = "schakel-store-mailbox-case-v1";
#define ROW_DIGEST_BYTES 32
_Static_assert(STORE_SEAL_AD_MAX >= sizeof ad_row_case_tag + 8 + 4 + 1 + SCHAKEL_CASE_ID_LEN +
                                        ROW_DIGEST_BYTES + SCHAKEL_MAX_PRINCIPAL_LEN,
               "store_seal_ad_t holds a mailbox row's associated data");

static void digest_text(crypto_generichash_state *state, const void *bytes, size_t len)
{
    uint8_t prefix[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                         (uint8_t)len};
    crypto_generichash_update(state, prefix, sizeof prefix);
    crypto_generichash_update(state, bytes, len);
}

static void digest_int(crypto_generichash_state *state, uint64_t value)
{
    uint8_t bytes[8];
    for (int i = 0; i < 8; i++)
        bytes[i] = (uint8_t)(value >> (8 * (7 - i)));
    crypto_generichash_update(state, bytes, sizeof bytes);
}

/* The clear columns a row's seal binds besides those in its associated
 * data itself, each text and blob with its length (below 4 GiB: the
 * caller checks), each integer at 8 bytes, in a fixed order. */
typedef struct row_clear {
    int64_t first_seq;
    uint32_t n;
    const char *recipient;
    int64_t publish_id, first_item_seq;
    const char *sender, *sender_partner;
    const uint8_t *message_id;
    int64_t accepted_at;
    const char *rules;
    size_t rules_len;
    const uint8_t *items; /* 4 * n bytes */
    const char *case_id;  /* NULL: a signal's row */
    int is_case_event;
} row_clear_t;

static int row_ad(store_seal_ad_t *ad, const row_clear_t *c)
{
    size_t recipient_len = strlen(c->recipient);
    if (recipient_len > SCHAKEL_MAX_PRINCIPAL_LEN ||
        (c->case_id != NULL && strlen(c->case_id) != SCHAKEL_CASE_ID_LEN) ||
        c->rules_len > UINT32_MAX || strlen(c->sender) > UINT32_MAX ||
        strlen(c->sender_partner) > UINT32_MAX)
        return -1;
    uint8_t digest[ROW_DIGEST_BYTES];
    crypto_generichash_state state;
    crypto_generichash_init(&state, NULL, 0, sizeof digest);
    digest_int(&state, (uint64_t)c->publish_id);
    digest_int(&state, (uint64_t)c->first_item_seq);
    digest_text(&state, c->sender, strlen(c->sender));
    digest_text(&state, c->sender_partner, strlen(c->sender_partner));
    crypto_generichash_update(&state, c->message_id, STORE_MESSAGE_ID_BYTES);
    digest_int(&state, (uint64_t)c->accepted_at);
    digest_text(&state, c->rules, c->rules_len);
    digest_text(&state, c->items, 4 * (size_t)c->n);
    crypto_generichash_final(&state, digest, sizeof digest);

    const char *tag = c->case_id == NULL ? ad_row_masks_tag : ad_row_case_tag;
    uint8_t *p = ad->bytes;
    memcpy(p, tag, strlen(tag) + 1);
    p += strlen(tag) + 1;
    for (int i = 0; i < 8; i++)
        *p++ = (uint8_t)((uint64_t)c->first_seq >> (8 * (7 - i)));
    for (int i = 0; i < 4; i++)
        *p++ = (uint8_t)(c->n >> (8 * (3 - i)));
    if (c->case_id != NULL) {
        *p++ = c->is_case_event ? 1 : 0;
        memcpy(p, c->case_id, SCHAKEL_CASE_ID_LEN);
        p += SCHAKEL_CASE_ID_LEN;
    }
    memcpy(p, digest, sizeof digest);
    p += sizeof digest;
    memcpy(p, c->recipient, recipient_len);
    p += recipient_len;
    ad->len = (size_t)(p - ad->bytes);
    return 0;
}

/* ------------------------------------------------------------------ adding a row */

static int sender_in_partner(const char *sender, const char *partner)
{
    size_t n = strlen(partner);
    return n > 0 && strncmp(sender, partner, n) == 0 && sender[n] == '/';
}

static int row_refuse(store_t *store, const char *why)
{
    store_refuse(store, "mailbox_row_add", why);
    return -1;
}

static int row_rules_check(store_t *store, const store_mailbox_row_t *row)
{
    if (row->rules == NULL || row->n_rules == 0 || row->n_rules > row->n)
        return row_refuse(store, "rule lines: 1 to n are required");
    for (size_t i = 0; i < row->n_rules; i++) {
        const store_mailbox_rule_t *r = &row->rules[i];
        if (r->rule_id == NULL || r->rule_hash == NULL || r->purpose == NULL ||
            r->legal_basis == NULL || r->rule_id[0] == '\0' ||
            strlen(r->rule_id) > SCHAKEL_MAX_ID_LEN || strlen(r->rule_hash) > 64)
            return row_refuse(store, "a rule line's id, hash, purpose or legal basis is missing"
                                     " or too long");
    }
    return 0;
}

/* What row_add can check without reading the file. */
static int row_check(store_t *store, const store_mailbox_row_t *row)
{
    if (row == NULL || row->recipient == NULL || row->recipient[0] == '\0' ||
        strlen(row->recipient) > SCHAKEL_MAX_PRINCIPAL_LEN || row->sender == NULL ||
        row->sender_partner == NULL || row->message_id == NULL || row->entries == NULL)
        return row_refuse(store, "a required field is missing");
    if (row->n == 0 || row->n > STORE_MAILBOX_MAX_N)
        return row_refuse(store, "n is out of range (1 to 1024 deliveries a row)");
    if (!sender_in_partner(row->sender, row->sender_partner) ||
        strlen(row->sender) > SCHAKEL_MAX_PRINCIPAL_LEN)
        return row_refuse(store, "sender is not a principal of sender_partner");
    if (row_rules_check(store, row) != 0)
        return -1;
    if (row->case_id != NULL) {
        if (strlen(row->case_id) != SCHAKEL_CASE_ID_LEN)
            return row_refuse(store, "no such case");
        if (row->n != 1 || (row->is_case_event != 0 && row->is_case_event != 1) ||
            (row->body == NULL && row->body_len != 0))
            return row_refuse(store, "a case's row is one delivery with its body");
    } else if (row->is_case_event != 0 || row->body != NULL) {
        return row_refuse(store, "a signal's row has no body of its own (its masks are sealed)");
    }
    int64_t offset = 0;
    for (size_t i = 0; i < row->n; i++) {
        const store_mailbox_entry_t *e = &row->entries[i];
        if (e->rule_slot >= row->n_rules)
            return row_refuse(store, "a rule slot is out of range");
        if (e->item_seq == 0 || e->item_seq > INT64_MAX || e->item_index > UINT16_MAX)
            return row_refuse(store, "no such item");
        int64_t o = (int64_t)e->item_seq - (int64_t)e->item_index;
        if (i > 0 && o != offset)
            return row_refuse(store, "the items of a row are not numbered as their publish's");
        offset = o;
    }
    if (!store->txn_open || sqlite3_get_autocommit(store->db))
        return row_refuse(store, "no transaction open");
    int64_t first = row->first_seq <= (uint64_t)INT64_MAX ? (int64_t)row->first_seq : -1;
    if (store->reserved_serial != store->txn_serial || first < store->reserved_first ||
        first >= store->reserved_end || (int64_t)row->n > store->reserved_end - first)
        return row_refuse(store, "seqs not reserved in this transaction");
    return 0;
}

/* 0 when no row holds any of the row's seqs, else -1 (refused). */
static int row_seqs_free(store_t *store, const store_mailbox_row_t *row)
{
    sqlite3_stmt *stmt = mailbox_stmt(store, MB_SEQS_TAKEN);
    if (stmt == NULL)
        return -1;
    int64_t last = (int64_t)row->first_seq + (int64_t)row->n - 1;
    if (store_bind_int64(store, stmt, 1, last) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    int rc = sqlite3_step(stmt);
    int taken = rc == SQLITE_ROW && sqlite3_column_int64(stmt, 0) > (int64_t)row->first_seq;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        store_fail(store, "mailbox_row_add");
    store_stmt_finish(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return -1;
    return taken ? row_refuse(store, "seqs of another row") : 0;
}

/* The row's items, min_seq .. min_seq + span - 1: read in one range, each
 * of one publish (*publish_id) at the index its seq says; raise[k] in,
 * the latest expiry of item k's deliveries in the row; out, the same where
 * the item's retention falls short of it, else INT64_MIN. 0 or -1. */
static int row_items_check(store_t *store, int64_t min_seq, size_t span, int64_t offset,
                           int64_t *raise, int64_t *publish_id)
{
    sqlite3_stmt *stmt = mailbox_stmt(store, MB_ITEMS);
    if (stmt == NULL)
        return -1;
    if (store_bind_int64(store, stmt, 1, min_seq) != 0 ||
        store_bind_int64(store, stmt, 2, min_seq + (int64_t)span - 1) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    size_t k = 0;
    int rc = SQLITE_DONE, ok = 1;
    while (ok && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(stmt, 0), pid = sqlite3_column_int64(stmt, 1);
        int64_t index = sqlite3_column_int64(stmt, 2), expires_at = sqlite3_column_int64(stmt, 3);
        if (k == 0)
            *publish_id = pid;
        ok = k < span && seq == min_seq + (int64_t)k && pid == *publish_id && seq - index == offset;
        if (ok && expires_at >= raise[k])
            raise[k] = INT64_MIN;
        k++;
    }
    if (ok && rc != SQLITE_DONE)
        store_fail(store, "mailbox_row_add");
    store_stmt_finish(stmt);
    if (ok && rc != SQLITE_DONE)
        return -1;
    if (!ok || k != span)
        return row_refuse(store, "item unknown, or not of one publish at the index given");
    return 0;
}

/* The publish's facts must be the row's; its retention is raised to
 * latest where it falls short. 0 or -1. */
static int row_publish_check(store_t *store, const store_mailbox_row_t *row, int64_t publish_id,
                             int64_t latest)
{
    int64_t expires_at = INT64_MIN;
    int same = 0;
    if (store->publish_serial != 0 && store->publish_serial == store->txn_serial &&
        store->added_publish_id == publish_id) {
        /* added in this transaction: as store_publish_add wrote it */
        same = strcmp(store->added_sender, row->sender) == 0 &&
               memcmp(store->added_message_id, row->message_id, STORE_MESSAGE_ID_BYTES) == 0 &&
               store->added_accepted_at == row->accepted_at;
        expires_at = store->added_expires_at;
    } else {
        sqlite3_stmt *stmt = mailbox_stmt(store, MB_PUBLISH);
        if (stmt == NULL)
            return -1;
        if (store_bind_int64(store, stmt, 1, publish_id) != 0) {
            store_stmt_finish(stmt);
            return -1;
        }
        int rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW) {
            size_t id_len = 0;
            const char *sender = store_column_text(stmt, 0);
            const uint8_t *id = store_column_bytes(stmt, 1, &id_len);
            same = sender != NULL && strcmp(sender, row->sender) == 0 && id != NULL &&
                   id_len == STORE_MESSAGE_ID_BYTES &&
                   memcmp(id, row->message_id, STORE_MESSAGE_ID_BYTES) == 0 &&
                   sqlite3_column_int64(stmt, 2) == row->accepted_at;
            expires_at = sqlite3_column_int64(stmt, 3);
        } else if (rc != SQLITE_DONE) {
            store_fail(store, "mailbox_row_add");
        }
        store_stmt_finish(stmt);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return -1;
    }
    if (!same)
        return row_refuse(store, "the publish's sender, message id or accepted_at differ");
    if (expires_at >= latest)
        return 0;
    sqlite3_stmt *raise = mailbox_stmt(store, MB_PUBLISH_RAISE);
    if (raise == NULL)
        return -1;
    if (store_bind_int64(store, raise, 1, publish_id) != 0 ||
        store_bind_int64(store, raise, 2, latest) != 0) {
        store_stmt_finish(raise);
        return -1;
    }
    return store_stmt_run(store, raise, "mailbox_row_add");
}

static int item_raise(store_t *store, int64_t item_seq, int64_t expires_at)
{
    sqlite3_stmt *stmt = mailbox_stmt(store, MB_ITEM_RAISE);
    if (stmt == NULL)
        return -1;
    if (store_bind_int64(store, stmt, 1, item_seq) != 0 ||
        store_bind_int64(store, stmt, 2, expires_at) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    return store_stmt_run(store, stmt, "mailbox_row_add");
}

/* A case's row: the case must exist, and its item is tied to it. */
static int row_case(store_t *store, const store_mailbox_row_t *row)
{
    sqlite3_stmt *known = store->stmt[STMT_DELIVERY_CASE_KNOWN];
    if (store_bind_text(store, known, 1, row->case_id) != 0) {
        store_stmt_finish(known);
        return -1;
    }
    int rc = sqlite3_step(known);
    store_stmt_finish(known);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        store_fail(store, "mailbox_row_add");
        return -1;
    }
    if (rc == SQLITE_DONE)
        return row_refuse(store, "no such case");
    sqlite3_stmt *link = store->stmt[STMT_DELIVERY_CASE_ITEM];
    if (store_bind_text(store, link, 1, row->case_id) != 0 ||
        store_bind_int64(store, link, 2, (int64_t)row->entries[0].item_seq) != 0) {
        store_stmt_finish(link);
        return -1;
    }
    return store_stmt_run(store, link, "mailbox_row_add");
}

/* Check the row's items and publish against their rows and raise their
 * retention where it falls short; *publish_id and *first_item_seq are
 * the row's. 0 or -1. */
static int row_facts(store_t *store, const store_mailbox_row_t *row, int64_t *publish_id,
                     int64_t *earliest)
{
    int64_t min_seq = INT64_MAX, max_seq = 0, latest = INT64_MIN;
    *earliest = INT64_MAX;
    for (size_t i = 0; i < row->n; i++) {
        int64_t seq = (int64_t)row->entries[i].item_seq;
        min_seq = seq < min_seq ? seq : min_seq;
        max_seq = seq > max_seq ? seq : max_seq;
    }
    if (max_seq - min_seq >= (int64_t)STORE_MAILBOX_MAX_N)
        return row_refuse(store, "the items of a row span more than a row holds");
    size_t span = (size_t)(max_seq - min_seq) + 1;
    int64_t raise[STORE_MAILBOX_MAX_N];
    for (size_t k = 0; k < span; k++)
        raise[k] = INT64_MIN;
    for (size_t i = 0; i < row->n; i++) {
        int64_t expires_at = row->rules[row->entries[i].rule_slot].expires_at;
        size_t k = (size_t)((int64_t)row->entries[i].item_seq - min_seq);
        raise[k] = expires_at > raise[k] ? expires_at : raise[k];
        latest = expires_at > latest ? expires_at : latest;
        *earliest = expires_at < *earliest ? expires_at : *earliest;
    }
    int64_t offset = (int64_t)row->entries[0].item_seq - (int64_t)row->entries[0].item_index;
    if (row_items_check(store, min_seq, span, offset, raise, publish_id) != 0 ||
        row_publish_check(store, row, *publish_id, latest) != 0)
        return -1;
    for (size_t k = 0; k < span; k++)
        if (raise[k] != INT64_MIN && item_raise(store, min_seq + (int64_t)k, raise[k]) != 0)
            return -1;
    return row->case_id != NULL ? row_case(store, row) : 0;
}

/* Bind the row's columns and seal its body (the masks of its rule slots,
 * 4 bytes little-endian each, or the case's body). 0 or -1. */
static int row_bind(store_t *store, sqlite3_stmt *stmt, const store_mailbox_row_t *row,
                    const row_clear_t *c, int64_t earliest)
{
    store_seal_ad_t ad;
    if (row_ad(&ad, c) != 0)
        return row_refuse(store, "a column is too long to seal");
    uint8_t masks[4 * STORE_MAILBOX_MAX_N];
    for (size_t i = 0; i < row->n_rules && row->case_id == NULL; i++) {
        uint32_t f = row->rules[i].fields;
        masks[4 * i] = (uint8_t)f;
        masks[4 * i + 1] = (uint8_t)(f >> 8);
        masks[4 * i + 2] = (uint8_t)(f >> 16);
        masks[4 * i + 3] = (uint8_t)(f >> 24);
    }
    const uint8_t *body = row->case_id == NULL ? masks : row->body;
    size_t body_len = row->case_id == NULL ? 4 * row->n_rules : row->body_len;
    int rc = store_bind_int64(store, stmt, 1, c->first_seq) != 0 ||
             store_bind_text(store, stmt, 2, c->recipient) != 0 ||
             store_bind_int64(store, stmt, 3, (int64_t)c->n) != 0 ||
             store_bind_int64(store, stmt, 4, c->publish_id) != 0 ||
             store_bind_int64(store, stmt, 5, c->first_item_seq) != 0 ||
             store_bind_text(store, stmt, 6, c->sender) != 0 ||
             store_bind_text(store, stmt, 7, c->sender_partner) != 0 ||
             store_bind_bytes(store, stmt, 8, c->message_id, STORE_MESSAGE_ID_BYTES) != 0 ||
             store_bind_int64(store, stmt, 9, c->accepted_at) != 0 ||
             store_bind_text(store, stmt, 10, c->rules) != 0 ||
             store_bind_bytes(store, stmt, 11, c->items, 4 * (size_t)c->n) != 0 ||
             store_bind_int64(store, stmt, 12, earliest) != 0 ||
             store_seal_bind(store, stmt, 13, &ad, body, body_len) != 0 ||
             store_bind_int64(store, stmt, 15, c->is_case_event ? 1 : 0) != 0 ||
             (c->case_id != NULL && store_bind_text(store, stmt, 14, c->case_id) != 0);
    sodium_memzero(masks, sizeof masks);
    return rc ? -1 : 0;
}

int store_mailbox_row_add(store_t *store, const store_mailbox_row_t *row)
{
    if (store_enter(store, "mailbox_row_add") != 0 || row_check(store, row) != 0 ||
        row_seqs_free(store, row) != 0)
        return -1;
    int64_t publish_id = 0, earliest = INT64_MAX;
    if (row_facts(store, row, &publish_id, &earliest) != 0)
        return -1;
    uint8_t items[4 * STORE_MAILBOX_MAX_N];
    for (size_t i = 0; i < row->n; i++)
        item_put(items, i, row->entries[i].item_index, row->entries[i].rule_slot);
    char *rules = NULL;
    size_t rules_len = 0;
    if (rules_encode(row->rules, row->n_rules, &rules, &rules_len) != 0)
        return row_refuse(store, "out of memory");
    row_clear_t c = {
        .first_seq = (int64_t)row->first_seq,
        .n = (uint32_t)row->n,
        .recipient = row->recipient,
        .publish_id = publish_id,
        .first_item_seq = (int64_t)row->entries[0].item_seq,
        .sender = row->sender,
        .sender_partner = row->sender_partner,
        .message_id = row->message_id,
        .accepted_at = row->accepted_at,
        .rules = rules,
        .rules_len = rules_len,
        .items = items,
        .case_id = row->case_id,
        .is_case_event = row->is_case_event,
    };
    sqlite3_stmt *stmt = mailbox_stmt(store, MB_ADD);
    int rc = stmt == NULL ? -1 : row_bind(store, stmt, row, &c, earliest);
    if (rc == 0)
        rc = store_stmt_run(store, stmt, "mailbox_row_add");
    else if (stmt != NULL)
        store_stmt_finish(stmt);
    free(rules);
    if (rc != 0)
        return -1;
    store_count_change(store, row->recipient, (int64_t)row->n);
    return 0;
}

/* ------------------------------------------------------------------ marks */

/* This transaction's marks; older ones (their transaction rolled back, by
 * us or by SQLite) are dropped first. */
static struct store_mailbox *marks_current(store_t *store)
{
    struct store_mailbox *m = store->mailbox;
    if (m != NULL && m->n_marks > 0 &&
        (m->marks_serial != store->txn_serial || !store->txn_open ||
         sqlite3_get_autocommit(store->db)))
        m->n_marks = 0;
    return m;
}

/* The mark of the row starting at first_seq, or NULL. The last touched is
 * looked at first: the seqs of an ack come in order. */
static mailbox_mark_t *mark_of_row(store_t *store, int64_t first_seq)
{
    struct store_mailbox *m = marks_current(store);
    for (size_t k = m != NULL ? m->n_marks : 0; k-- > 0;)
        if (m->marks[k].first_seq == first_seq)
            return &m->marks[k];
    return NULL;
}

/* The mark of recipient's row holding seq, or NULL. */
static mailbox_mark_t *mark_of_seq(store_t *store, const char *recipient, int64_t seq)
{
    struct store_mailbox *m = marks_current(store);
    for (size_t k = m != NULL ? m->n_marks : 0; k-- > 0;) {
        mailbox_mark_t *mark = &m->marks[k];
        if (seq >= mark->first_seq && seq - mark->first_seq < (int64_t)mark->n)
            return strcmp(mark->recipient, recipient) == 0 ? mark : NULL;
    }
    return NULL;
}

static mailbox_mark_t *mark_new(store_t *store)
{
    struct store_mailbox *m = mailbox_of(store);
    if (m == NULL)
        return NULL;
    if (m->n_marks == m->cap_marks) {
        size_t cap = m->cap_marks == 0 ? 8 : 2 * m->cap_marks;
        mailbox_mark_t *grown = realloc(m->marks, cap * sizeof *grown);
        if (grown == NULL) {
            store_refuse(store, "mailbox marks", "out of memory");
            return NULL;
        }
        m->marks = grown;
        m->cap_marks = cap;
    }
    m->marks_serial = store->txn_serial;
    return &m->marks[m->n_marks++];
}

static uint32_t done_count(const uint8_t *done, uint32_t n)
{
    uint32_t count = 0;
    for (uint32_t i = 0; i < n; i++)
        count += (uint32_t)done_bit(done, i);
    return count;
}

/* The current row of MB_FIND as a new mark of recipient's. NULL with the
 * failure (a damaged row is refused). */
static mailbox_mark_t *mark_load(store_t *store, sqlite3_stmt *find, const char *recipient)
{
    int64_t n = sqlite3_column_int64(find, FC_N), pending = sqlite3_column_int64(find, FC_PENDING);
    int done_type = sqlite3_column_type(find, FC_DONE);
    size_t done_len = 0;
    const uint8_t *done =
        done_type == SQLITE_BLOB ? store_column_bytes(find, FC_DONE, &done_len) : NULL;
    if (n < 1 || n > (int64_t)STORE_MAILBOX_MAX_N || pending < 0 || pending > n ||
        (done_type != SQLITE_NULL && (done == NULL || done_len != ((size_t)n + 7) / 8))) {
        store_refuse(store, "mailbox", "damaged row: n, pending or done as no broker writes them");
        return NULL;
    }
    mailbox_mark_t *mark = mark_new(store);
    if (mark == NULL)
        return NULL;
    mark->first_seq = sqlite3_column_int64(find, FC_FIRST_SEQ);
    mark->n = (uint32_t)n;
    memset(mark->done, 0, sizeof mark->done);
    if (done != NULL)
        memcpy(mark->done, done, done_len);
    mark->pending = mark->n - done_count(mark->done, mark->n);
    mark->marked = 0;
    strcpy(mark->recipient, recipient);
    return mark;
}

/* Find recipient's row holding seq with MB_FIND, left on its row (1) for
 * the caller to read and finish; 0 (finished) when there is none; -1. */
static int row_find(store_t *store, const char *recipient, int64_t seq, sqlite3_stmt **out)
{
    sqlite3_stmt *find = mailbox_stmt(store, MB_FIND);
    if (find == NULL)
        return -1;
    if (store_bind_text(store, find, 1, recipient) != 0 ||
        store_bind_int64(store, find, 2, seq) != 0) {
        store_stmt_finish(find);
        return -1;
    }
    int rc = sqlite3_step(find);
    if (rc == SQLITE_ROW &&
        seq - sqlite3_column_int64(find, FC_FIRST_SEQ) < sqlite3_column_int64(find, FC_N)) {
        *out = find;
        return 1;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        store_fail(store, "mailbox: find");
    store_stmt_finish(find);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

/* The checks every marking call makes. 0, or -1 refused. */
static int mark_enter(store_t *store, const char *what, const char *recipient)
{
    if (store_enter(store, what) != 0)
        return -1;
    if (recipient == NULL) {
        store_refuse(store, what, "recipient is required");
        return -1;
    }
    if (!store->txn_open || sqlite3_get_autocommit(store->db)) {
        store_refuse(store, what, "no transaction open");
        return -1;
    }
    return mailbox_of(store) != NULL ? 0 : -1;
}

/* Set the bit of seq in its mark: the mark's pending goes down by one and
 * the recipient's count with it. */
static void mark_done(store_t *store, mailbox_mark_t *mark, int64_t seq)
{
    size_t bit = (size_t)(seq - mark->first_seq);
    mark->done[bit / 8] |= (uint8_t)(1u << (bit % 8));
    mark->pending--;
    mark->marked++;
    store_count_change(store, mark->recipient, -1);
}

/* Cost: a look through this transaction's marks (the last first), and for
 * a row not yet marked one descent of mailbox_by_recipient. The write
 * comes once per row at the commit (store_mailbox_flush). */
int store_mailbox_row_ack(store_t *store, const char *recipient, uint64_t seq)
{
    if (mark_enter(store, "mailbox_row_ack", recipient) != 0)
        return -1;
    if (seq == 0 || seq > INT64_MAX || strlen(recipient) > SCHAKEL_MAX_PRINCIPAL_LEN)
        return 0; /* never a seq, nor a recipient */
    mailbox_mark_t *mark = mark_of_seq(store, recipient, (int64_t)seq);
    if (mark == NULL) {
        sqlite3_stmt *find = NULL;
        int found = row_find(store, recipient, (int64_t)seq, &find);
        if (found <= 0)
            return found;
        mark = mark_load(store, find, recipient);
        store_stmt_finish(find);
        if (mark == NULL)
            return -1;
    }
    if (done_bit(mark->done, (size_t)((int64_t)seq - mark->first_seq)))
        return 0;
    mark_done(store, mark, (int64_t)seq);
    return 1;
}

/* The tombstone of a delivery removed (as store_expire.c leaves one): 0,
 * with *before set when its seq had one already; -1. */
static int tombstone_add(store_t *store, const store_expired_t *e, int64_t now, int *before)
{
    sqlite3_stmt *stmt = store->stmt[STMT_TOMBSTONE_ADD];
    if (store_bind_int64(store, stmt, 1, (int64_t)e->seq) != 0 ||
        store_bind_text(store, stmt, 2, e->recipient) != 0 ||
        store_bind_int64(store, stmt, 3, (int64_t)e->item_seq) != 0 ||
        store_bind_text(store, stmt, 4, e->rule_id) != 0 ||
        store_bind_text(store, stmt, 5, e->rule_hash) != 0 ||
        store_bind_int64(store, stmt, 6, e->expires_at) != 0 ||
        store_bind_int64(store, stmt, 7, now) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    if (store_stmt_run(store, stmt, "mailbox_row_remove: tombstone") != 0)
        return -1;
    *before = sqlite3_changes(store->db) == 0;
    return 0;
}

/* The facts of delivery seq of the current row of MB_FIND, for its
 * tombstone, read in clear (as store_delivery_revoke reads its row):
 * *e's strings point into *rules. 0, or -1 for a damaged row. */
static int removed_facts(store_t *store, sqlite3_stmt *find, const char *recipient, int64_t seq,
                         rules_parsed_t *rules, store_expired_t *e)
{
    int64_t first = sqlite3_column_int64(find, FC_FIRST_SEQ);
    int64_t n = sqlite3_column_int64(find, FC_N);
    size_t items_len = 0, rules_len = 0;
    const uint8_t *items = store_column_bytes(find, FC_ITEMS, &items_len);
    const uint8_t *text = store_column_bytes(find, FC_RULES, &rules_len);
    int parsed = n >= 1 && n <= (int64_t)STORE_MAILBOX_MAX_N && items != NULL &&
                         items_len == 4 * (size_t)n && text != NULL
                     ? rules_parse((const char *)text, rules_len, (size_t)n, rules)
                     : -1;
    if (parsed != 0) {
        store_refuse(store, "mailbox_row_remove",
                     parsed == -2 ? "out of memory" : "damaged row: items or rule lines");
        return -1;
    }
    size_t i = (size_t)(seq - first);
    uint32_t slot = rule_slot_at(items, i);
    int64_t item_seq = sqlite3_column_int64(find, FC_FIRST_ITEM_SEQ) +
                       (int64_t)item_index_at(items, i) - (int64_t)item_index_at(items, 0);
    if (slot >= rules->n_slots || item_seq <= 0) {
        store_refuse(store, "mailbox_row_remove", "damaged row: a rule slot or item out of range");
        return -1;
    }
    *e = (store_expired_t){
        .seq = (uint64_t)seq,
        .recipient = recipient,
        .item_seq = (uint64_t)item_seq,
        .rule_id = rules->slots[slot].rule_id,
        .rule_hash = rules->slots[slot].rule_hash,
        .expires_at = rules->slots[slot].expires_at,
    };
    return 0;
}

/* Cost: as store_mailbox_row_ack, the row's rule lines parsed, and the
 * tombstone's insert, O(log n). */
int store_mailbox_row_remove(store_t *store, const char *recipient, uint64_t seq, int64_t now,
                             store_expired_fn fn, void *arg)
{
    if (mark_enter(store, "mailbox_row_remove", recipient) != 0)
        return -1;
    if (seq == 0 || seq > INT64_MAX || strlen(recipient) > SCHAKEL_MAX_PRINCIPAL_LEN)
        return 0; /* never a seq, nor a recipient */
    sqlite3_stmt *find = NULL;
    int found = row_find(store, recipient, (int64_t)seq, &find);
    if (found <= 0)
        return found;
    mailbox_mark_t *mark = mark_of_row(store, sqlite3_column_int64(find, FC_FIRST_SEQ));
    if (mark == NULL && (mark = mark_load(store, find, recipient)) == NULL) {
        store_stmt_finish(find);
        return -1;
    }
    if (done_bit(mark->done, (size_t)((int64_t)seq - mark->first_seq))) {
        store_stmt_finish(find);
        return 0;
    }
    rules_parsed_t rules;
    store_expired_t e;
    int rc = removed_facts(store, find, recipient, (int64_t)seq, &rules, &e);
    store_stmt_finish(find);
    int before = 0;
    if (rc == 0)
        rc = tombstone_add(store, &e, now, &before);
    if (rc == 0 && fn != NULL) {
        e.tombstoned_before = before;
        store->in_callback = 1;
        fn(&e, arg);
        store->in_callback = 0;
    }
    rules_free(&rules);
    if (rc != 0)
        return -1;
    /* mark_load may have moved the marks: find this row's again */
    mark = mark_of_seq(store, recipient, (int64_t)seq);
    if (mark == NULL) {
        store_refuse(store, "mailbox_row_remove", "the row's mark is gone");
        return -1;
    }
    mark_done(store, mark, (int64_t)seq);
    return 1;
}

/* Cost: per row marked, one update of its done and pending (or its
 * delete, with its index entries), O(log n) each; nothing without marks. */
int store_mailbox_flush(store_t *store)
{
    struct store_mailbox *m = marks_current(store);
    if (m == NULL || m->n_marks == 0)
        return 0;
    int rc = 0;
    for (size_t k = 0; k < m->n_marks && rc == 0; k++) {
        const mailbox_mark_t *mark = &m->marks[k];
        if (mark->marked == 0)
            continue; /* read, nothing set */
        int gone = mark->pending == 0;
        sqlite3_stmt *stmt = mailbox_stmt(store, gone ? MB_DELETE : MB_UPDATE);
        if (stmt == NULL || store_bind_int64(store, stmt, 1, mark->first_seq) != 0 ||
            (!gone && (store_bind_bytes(store, stmt, 2, mark->done, (mark->n + 7) / 8) != 0 ||
                       store_bind_int64(store, stmt, 3, mark->pending) != 0))) {
            if (stmt != NULL)
                store_stmt_finish(stmt);
            rc = -1;
            break;
        }
        rc = store_stmt_run(store, stmt, "mailbox: acks written");
        if (rc == 0 && sqlite3_changes(store->db) != 1) {
            store_refuse(store, "mailbox: acks written", "a row marked is not there");
            rc = -1;
        }
    }
    m->n_marks = 0; /* written, or the commit fails and all of it goes */
    return rc;
}

void store_mailbox_drop(store_t *store)
{
    if (store->mailbox != NULL)
        store->mailbox->n_marks = 0;
}

/* ------------------------------------------------------------------ counts */

int64_t store_mailbox_row_pending(store_t *store, const char *recipient)
{
    if (store_enter(store, "mailbox_row_pending") != 0)
        return -1;
    if (recipient == NULL) {
        store_refuse(store, "mailbox_row_pending", "recipient is required");
        return -1;
    }
    int64_t count = -1;
    if (store_count_get(store, recipient, &count))
        return count;
    sqlite3_stmt *stmt = mailbox_stmt(store, MB_PENDING);
    if (stmt == NULL)
        return -1;
    if (store_bind_text(store, stmt, 1, recipient) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        count = sqlite3_column_int64(stmt, 0);
        /* the marks not yet written are in the count's changes already */
        struct store_mailbox *m = marks_current(store);
        for (size_t k = 0; m != NULL && k < m->n_marks; k++)
            if (strcmp(m->marks[k].recipient, recipient) == 0)
                count -= (int64_t)m->marks[k].marked;
        store_count_learn(store, recipient, count);
    } else {
        store_fail(store, "mailbox_row_pending");
    }
    store_stmt_finish(stmt);
    return count;
}

/* ------------------------------------------------------------------ the scan */

enum { SCAN_FAILED = -1, SCAN_UNREADABLE = -2 };

/* One row of the scan, its clear columns read and checked. */
typedef struct scan_row {
    row_clear_t clear;
    const uint8_t *done; /* n bits, or NULL: none */
    rules_parsed_t rules;
    uint32_t masks[STORE_MAILBOX_MAX_N]; /* once opened: each slot's */
    int opened;                          /* the body opened (masks, or the case body) */
    const uint8_t *case_body;            /* a case's row once opened: in store->opened */
    size_t case_body_len;
} scan_row_t;

static int scan_damaged(store_t *store, const char *why)
{
    store_refuse(store, "mailbox_scan", why);
    return SCAN_UNREADABLE;
}

/* The integer columns the broker writes as integers. */
static int scan_integers_typed(sqlite3_stmt *stmt)
{
    static const int cols[] = {SC_FIRST_SEQ,  SC_N,           SC_FIRST_ITEM_SEQ,
                               SC_PUBLISH_ID, SC_ACCEPTED_AT, SC_IS_CASE_EVENT};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
        if (sqlite3_column_type(stmt, cols[i]) != SQLITE_INTEGER)
            return 0;
    return 1;
}

/* Read the current row of MB_SCAN into *r (strings borrow the row). 0,
 * SCAN_UNREADABLE or SCAN_FAILED. */
static int scan_read(store_t *store, sqlite3_stmt *stmt, const char *recipient, scan_row_t *r)
{
    row_clear_t *c = &r->clear;
    r->rules = (rules_parsed_t){NULL, NULL, 0};
    size_t id_len = 0, rules_len = 0, items_len = 0, done_len = 0;
    int64_t n = sqlite3_column_int64(stmt, SC_N);
    *c = (row_clear_t){
        .first_seq = sqlite3_column_int64(stmt, SC_FIRST_SEQ),
        .recipient = recipient,
        .publish_id = sqlite3_column_int64(stmt, SC_PUBLISH_ID),
        .first_item_seq = sqlite3_column_int64(stmt, SC_FIRST_ITEM_SEQ),
        .sender = store_column_text(stmt, SC_SENDER),
        .sender_partner = store_column_text(stmt, SC_SENDER_PARTNER),
        .message_id = store_column_bytes(stmt, SC_MESSAGE_ID, &id_len),
        .accepted_at = sqlite3_column_int64(stmt, SC_ACCEPTED_AT),
        .rules = (const char *)store_column_bytes(stmt, SC_RULES, &rules_len),
        .items = store_column_bytes(stmt, SC_ITEMS, &items_len),
        .case_id = store_column_text(stmt, SC_CASE_ID),
        .is_case_event = sqlite3_column_int64(stmt, SC_IS_CASE_EVENT) != 0,
    };
    c->rules_len = rules_len;
    int done_type = sqlite3_column_type(stmt, SC_DONE);
    r->done = done_type == SQLITE_BLOB ? store_column_bytes(stmt, SC_DONE, &done_len) : NULL;
    r->opened = 0;
    r->case_body = NULL;
    r->case_body_len = 0;
    if (sqlite3_errcode(store->db) == SQLITE_NOMEM) {
        store_refuse(store, "mailbox_scan", "out of memory");
        return SCAN_FAILED;
    }
    if (!scan_integers_typed(stmt) || n < 1 || n > (int64_t)STORE_MAILBOX_MAX_N ||
        c->first_seq < 1 || c->sender == NULL || c->sender_partner == NULL ||
        c->message_id == NULL || id_len != STORE_MESSAGE_ID_BYTES || c->items == NULL ||
        items_len != 4 * (size_t)n || c->rules == NULL ||
        (done_type != SQLITE_NULL && (r->done == NULL || done_len != ((size_t)n + 7) / 8)) ||
        (c->case_id == NULL && sqlite3_column_type(stmt, SC_CASE_ID) != SQLITE_NULL) ||
        (c->case_id == NULL && c->is_case_event) || (c->case_id != NULL && n != 1))
        return scan_damaged(store, "damaged row: a column no broker writes so");
    c->n = (uint32_t)n;
    int parsed = rules_parse(c->rules, rules_len, (size_t)n, &r->rules);
    if (parsed != 0) {
        if (parsed == -2) {
            store_refuse(store, "mailbox_scan", "out of memory");
            return SCAN_FAILED;
        }
        return scan_damaged(store, "damaged row: rule lines no broker writes so");
    }
    for (uint32_t i = 0; i < c->n; i++)
        if (rule_slot_at(c->items, i) >= r->rules.n_slots ||
            c->first_item_seq + (int64_t)item_index_at(c->items, i) -
                    (int64_t)item_index_at(c->items, 0) <=
                0)
            return scan_damaged(store, "damaged row: a rule slot or item out of range");
    /* this transaction's acks and removals, not yet written */
    const mailbox_mark_t *mark = mark_of_row(store, c->first_seq);
    if (mark != NULL)
        r->done = mark->done;
    return 0;
}

/* Open the row's body once: its masks (4 bytes a slot), or a case's body
 * (left in store->opened). 0, SCAN_UNREADABLE or SCAN_FAILED. */
static int scan_open(store_t *store, sqlite3_stmt *stmt, scan_row_t *r)
{
    if (r->opened)
        return 0;
    store_seal_ad_t ad;
    if (row_ad(&ad, &r->clear) != 0)
        return scan_damaged(store, "damaged row: recipient, case id or a text of a wrong size");
    char what[64];
    snprintf(what, sizeof what, "mailbox row %" PRId64, r->clear.first_seq);
    const uint8_t *body = NULL;
    size_t len = 0;
    if (store_seal_column_named(store, stmt, SC_BODY, what, &ad, &body, &len) != 0)
        return store->body_unauthentic ? SCAN_UNREADABLE : SCAN_FAILED;
    r->opened = 1;
    if (r->clear.case_id != NULL) {
        r->case_body = body;
        r->case_body_len = len;
        return 0;
    }
    if (len != 4 * r->rules.n_slots) {
        sodium_memzero(store->opened.bytes, len);
        return scan_damaged(store, "damaged row: masks of a wrong size");
    }
    for (size_t i = 0; i < r->rules.n_slots; i++)
        r->masks[i] = (uint32_t)body[4 * i] | (uint32_t)body[4 * i + 1] << 8 |
                      (uint32_t)body[4 * i + 2] << 16 | (uint32_t)body[4 * i + 3] << 24;
    sodium_memzero(store->opened.bytes, len);
    return 0;
}

/* The item's opened bytes as d's body (store->opened). 0, SCAN_UNREADABLE
 * (gone, or does not authenticate) or SCAN_FAILED. */
static int scan_item(store_t *store, store_delivery_t *d)
{
    sqlite3_stmt *stmt = mailbox_stmt(store, MB_SCAN_ITEM);
    if (stmt == NULL)
        return SCAN_FAILED;
    if (store_bind_int64(store, stmt, 1, (int64_t)d->item_seq) != 0) {
        store_stmt_finish(stmt);
        return SCAN_FAILED;
    }
    int rc = sqlite3_step(stmt), result = 0;
    if (rc == SQLITE_ROW) {
        store_seal_ad_t ad;
        store_seal_ad_item(&ad, (int64_t)d->item_seq, sqlite3_column_int64(stmt, 1), d->item_index);
        if (store_seal_column_named(store, stmt, 0, "item", &ad, &d->body, &d->body_len) != 0)
            result = store->body_unauthentic ? SCAN_UNREADABLE : SCAN_FAILED;
    } else if (rc == SQLITE_DONE) {
        result = scan_damaged(store, "damaged row: the delivery's item is gone");
    } else {
        store_fail(store, "mailbox_scan: item");
        result = SCAN_FAILED;
    }
    store_stmt_finish(stmt); /* the opened bytes are in store->opened, not the row's */
    return result;
}

/* Delivery i of row r as the push takes it, into *d; its body opened as
 * needed. 0, SCAN_UNREADABLE or SCAN_FAILED. */
static int scan_delivery(store_t *store, sqlite3_stmt *stmt, scan_row_t *r, uint32_t i,
                         const store_scan_hints_t *hints, void *arg, store_delivery_t *d)
{
    const row_clear_t *c = &r->clear;
    const rule_slot_t *slot = &r->rules.slots[rule_slot_at(c->items, i)];
    uint32_t item_index = item_index_at(c->items, i);
    *d = (store_delivery_t){
        .seq = (uint64_t)(c->first_seq + (int64_t)i),
        .recipient = c->recipient,
        .item_seq = (uint64_t)(c->first_item_seq + (int64_t)item_index -
                               (int64_t)item_index_at(c->items, 0)),
        .message_id = c->message_id,
        .item_index = item_index,
        .sender = c->sender,
        .sender_partner = c->sender_partner,
        .rule_id = slot->rule_id,
        .rule_hash = slot->rule_hash,
        .purpose = slot->purpose,
        .legal_basis = slot->legal_basis,
        .accepted_at = c->accepted_at,
        .expires_at = slot->expires_at,
        .case_id = c->case_id,
        .is_case_event = c->is_case_event,
        .by_ref = c->case_id == NULL,
    };
    if (c->case_id != NULL) {
        int opened = scan_open(store, stmt, r);
        d->body = r->case_body;
        d->body_len = r->case_body_len;
        return opened;
    }
    uint32_t fields = 0;
    if (hints->vouch != NULL && hints->vouch(d, &fields, arg)) {
        d->fields = fields; /* the caller wrote this very delivery: nothing to open */
        return 0;
    }
    int opened = scan_open(store, stmt, r);
    if (opened != 0)
        return opened;
    d->fields = r->masks[rule_slot_at(c->items, i)];
    if (hints->have_item != NULL && hints->have_item(d->item_seq, arg))
        return 0;
    return scan_item(store, d);
}

/* Hand out row r's deliveries after after_seq and not done, while
 * *visited < limit. 1 when fn asked to stop, 0 to go on, or the failure. */
static int scan_row_deliveries(store_t *store, sqlite3_stmt *stmt, scan_row_t *r,
                               uint64_t after_seq, size_t limit, const store_scan_hints_t *hints,
                               store_delivery_fn fn, void *arg, int *visited)
{
    for (uint32_t i = 0; i < r->clear.n && (size_t)*visited < limit; i++) {
        if ((uint64_t)(r->clear.first_seq + (int64_t)i) <= after_seq || done_bit(r->done, i))
            continue;
        store_delivery_t d;
        int opened = scan_delivery(store, stmt, r, i, hints, arg, &d);
        if (opened != 0)
            return opened;
        (*visited)++;
        int stop = fn(&d, arg);
        if (d.body != NULL)
            sodium_memzero(store->opened.bytes, d.body_len); /* the plaintext is fn's no longer */
        if (stop != 0)
            return 1;
    }
    return 0;
}

int store_mailbox_row_scan(store_t *store, const char *recipient, uint64_t after_seq, size_t limit,
                           const store_scan_hints_t *hints, store_delivery_fn fn, void *arg)
{
    static const store_scan_hints_t no_hints = {NULL, NULL};
    if (store_enter(store, "mailbox_scan") != 0)
        return -1;
    if (recipient == NULL || fn == NULL) {
        store_refuse(store, "mailbox_scan", "recipient and callback are required");
        return -1;
    }
    if (limit == 0 || after_seq >= INT64_MAX)
        return 0; /* nothing can be visited: no seq exceeds INT64_MAX */
    if (limit > INT_MAX)
        limit = INT_MAX; /* the count returned is an int */
    if (hints == NULL)
        hints = &no_hints;
    sqlite3_stmt *stmt = mailbox_stmt(store, MB_SCAN);
    if (stmt == NULL)
        return -1;
    if (store_bind_text(store, stmt, 1, recipient) != 0 ||
        store_bind_int64(store, stmt, 2, (int64_t)after_seq + 1) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    int visited = 0, result = 0, rc = SQLITE_DONE;
    store->scan_unreadable_seq = 0;
    store->in_callback = 1;
    scan_row_t *r = malloc(sizeof *r);
    if (r == NULL) {
        store_refuse(store, "mailbox_scan", "out of memory");
        result = SCAN_FAILED;
    }
    while (result == 0 && (size_t)visited < limit && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        result = scan_read(store, stmt, recipient, r);
        if (result == 0)
            result =
                scan_row_deliveries(store, stmt, r, after_seq, limit, hints, fn, arg, &visited);
        if (result == SCAN_UNREADABLE && sqlite3_column_int64(stmt, SC_FIRST_SEQ) > 0)
            store->scan_unreadable_seq = (uint64_t)sqlite3_column_int64(stmt, SC_FIRST_SEQ);
        rules_free(&r->rules);
        if (r->opened)
            sodium_memzero(r->masks, sizeof r->masks);
    }
    free(r);
    store->in_callback = 0;
    if (result == 0 && rc != SQLITE_ROW && rc != SQLITE_DONE) {
        store_fail(store, "mailbox_scan");
        result = SCAN_FAILED;
    }
    store_stmt_finish(stmt);
    return result < 0 ? -1 : visited;
}
