/*
 * audit.h — the audit trail: a hash chain of entries in the store, signed
 * checkpoints, offline verification, the data-subject export.
 *
 * Entries are metadata (ids, principals, rules, reason codes, the subject's
 * pseudonym), never contents, stored in clear by store_audit.c so that
 * verification needs only the store file and the broker's public key. Each
 * entry's hash is BLAKE2b-256 over the previous entry's hash and the
 * entry's canonical bytes; every SCHAKEL_AUDIT_CHECKPOINT_ENTRIES entries,
 * or when entries are SCHAKEL_AUDIT_CHECKPOINT_IVL_S old, the broker signs
 * a checkpoint (seq, hash, time) with its Ed25519 key. docs/OPERATIONS.md
 * "Audit trail" specifies both encodings byte by byte.
 *
 * Writers (record.c) append inside the broker's turn transaction, so an
 * entry commits with the action it records or neither does.
 */
#ifndef SCHAKEL_AUDIT_H
#define SCHAKEL_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "keys.h"
#include "store.h"

/* Domain tags of the two encodings (ASCII, no NUL in the encoded bytes). */
#define AUDIT_ENTRY_DOMAIN "schakel-audit-v1"
#define AUDIT_CHECKPOINT_DOMAIN "schakel-audit-checkpoint-v1"

/* Bytes a checkpoint signature covers: domain || seq(8) || hash(32) || at(8). */
#define AUDIT_CHECKPOINT_SIGNED_BYTES (sizeof AUDIT_CHECKPOINT_DOMAIN - 1 + 8 + 32 + 8)

/* Tags of a field in the canonical encoding. */
#define AUDIT_TAG_ABSENT 0x00
#define AUDIT_TAG_TEXT 0x01
#define AUDIT_TAG_INTEGER 0x02
/* A late field (store_audit_fields' encoded_if_present), present: this tag,
 * its field number (one byte, its enum store_audit_field value), then the
 * field as any other (AUDIT_TAG_TEXT || len || bytes). */
#define AUDIT_TAG_LATE 0x03

/* ------------------------------------------------------------------ entries */

/* An entry with only its event set (borrowed); seq, at and hash are set by
 * audit_append. */
void audit_entry_init(store_audit_entry_t *entry, const char *event);

/* Set a text field (borrowed; NULL leaves it absent) or an integer field.
 * Setting a field of the other type is a bug and aborts. */
void audit_set_text(store_audit_entry_t *entry, enum store_audit_field field, const char *text);
void audit_set_int(store_audit_entry_t *entry, enum store_audit_field field, int64_t value);

/* The canonical bytes of an entry following prev (docs/OPERATIONS.md):
 * AUDIT_ENTRY_DOMAIN || prev(32) || seq(u64 BE) || at(i64 BE) || each of
 * the first 21 fields in enum order as 0x00 (absent), 0x01 || len(u32 BE)
 * || UTF-8 bytes (text) or 0x02 || value(i64 BE) (integer); then each late
 * field (store_audit_fields' encoded_if_present: delivery_seqs,
 * deliveries) only when present, as 0x03 || its field number (one byte)
 * || 0x01 || len(u32 BE) || bytes. Entries written before the late fields
 * keep their bytes, and two late fields cannot trade places. Writes at
 * most outlen bytes to out (may be NULL with outlen 0) and returns the
 * full length, so a caller can size its buffer with a first call. */
size_t audit_entry_encode(const uint8_t prev[STORE_AUDIT_HASH_BYTES],
                          const store_audit_entry_t *entry, uint8_t *out, size_t outlen);

/* BLAKE2b-256 of the canonical bytes, without building them in memory.
 * The first entry's prev is 32 zero bytes. */
void audit_entry_hash(const uint8_t prev[STORE_AUDIT_HASH_BYTES], const store_audit_entry_t *entry,
                      uint8_t hash[STORE_AUDIT_HASH_BYTES]);

/* The bytes a checkpoint's Ed25519 signature covers:
 * AUDIT_CHECKPOINT_DOMAIN || seq(u64 BE) || hash(32) || at(i64 BE). */
void audit_checkpoint_signed_bytes(uint64_t seq, const uint8_t hash[STORE_AUDIT_HASH_BYTES],
                                   int64_t at, uint8_t out[AUDIT_CHECKPOINT_SIGNED_BYTES]);

/* ------------------------------------------------------------------ writing */

/* Append an entry in the store's open transaction (store_begin is called
 * if none is open): sets its seq (the tail's + 1), at (= now) and hash,
 * inserts it, and when SCHAKEL_AUDIT_CHECKPOINT_ENTRIES entries wait since
 * the last checkpoint, signs and inserts one with key (no checkpoint when
 * key is NULL). Returns 0, or -1 with store_errmsg set: the caller must
 * then not commit the action (it rolls the transaction back). Cost: one
 * BLAKE2b over the entry, one insert; an Ed25519 signature every
 * SCHAKEL_AUDIT_CHECKPOINT_ENTRIES entries. */
int audit_append(store_t *store, const keypair_t *key, int64_t now, store_audit_entry_t *entry);

/* An entry an offline command writes (schakeld --rekey, --restored), in
 * the store's open transaction: appended and, with key, certified at once
 * by a checkpoint at its seq. Without a key it is refused (-1, why filled,
 * nothing appended) when it would leave SCHAKEL_AUDIT_CHECKPOINT_ENTRIES
 * entries without a checkpoint: audit_verify reads such a stretch as
 * checkpoints removed, and no later checkpoint mends it. Returns 0, or -1
 * (why filled: the refusal, or the store's error). */
int audit_append_offline(store_t *store, const keypair_t *key, int64_t now,
                         store_audit_entry_t *entry, char *why, size_t whylen);

/* The time of the trail's last entry (by seq) in *at, 0 for an empty
 * trail. Returns 0, or -1 (store_errmsg says why). */
int audit_trail_last_at(store_t *store, int64_t *at);

/* The time an offline command stamps its entry with: the system clock,
 * not before the trail's last entry, as the broker's own time
 * (wallclock.h). A clock more than WALLCLOCK_BEHIND_S behind that entry
 * is refused (-1, why says by how much and what to do) unless
 * accept_clock, which takes the clock as it is. Returns 0 with *now. */
int audit_offline_time(store_t *store, int accept_clock, int64_t *now, char *why, size_t whylen);

/* Sign and insert a checkpoint for the last entry if one is due: when
 * entries wait since the last checkpoint and either force is set, or
 * SCHAKEL_AUDIT_CHECKPOINT_ENTRIES of them wait, or the last checkpoint is
 * SCHAKEL_AUDIT_CHECKPOINT_IVL_S old (or there is none). Opens a
 * transaction only when one is due. Returns 1 when one was written, 0 when
 * none was due, -1 on error (store_errmsg). */
int audit_checkpoint(store_t *store, const keypair_t *key, int64_t now, int force);

/* The trail's tail as the broker left it, checked before anything is
 * chained to it or signed (a broker's start, schakeld --rekey and
 * --restored): the last checkpoint's signature under the key it names,
 * that the entry at its seq has the hash it certifies, and the chain
 * recomputed from there to the last entry (fewer than
 * SCHAKEL_AUDIT_CHECKPOINT_ENTRIES entries: more is checkpoints removed).
 * What it cannot see: a tail re-chained consistently after the last
 * checkpoint, and whether the key that signed is one of the broker's
 * (audit_verify, with the keys and an anchor, sees both): a trail changed
 * before the last checkpoint, re-chained and that checkpoint signed again
 * under another key, passes. So, when own_key is given and the last
 * checkpoint is signed under another key, other (may be NULL) says so:
 * its seq and key (other->seq 0: signed under own_key, or no checkpoint).
 * A rotation of the broker key leaves the last checkpoint under the old
 * key once. Returns 0 when the tail chains; 1 when it does not, why naming
 * the first entry that does not chain; -1 when the store could not be
 * read (why). Cost: one Ed25519 verification and at most
 * SCHAKEL_AUDIT_CHECKPOINT_ENTRIES BLAKE2b hashes, rows read in one scan. */
typedef struct audit_tail_signer {
    uint64_t seq;    /* the last checkpoint, when under another key than own_key; else 0 */
    uint8_t key[32]; /* the key it names */
} audit_tail_signer_t;
int audit_tail_check(store_t *store, const uint8_t own_key[32], audit_tail_signer_t *other,
                     char *why, size_t whylen);

/* ------------------------------------------------------------------ verifying */

/* A hash the auditor remembers from an earlier verification (an anchor):
 * the trail must still hold this hash at this seq, which catches a trail
 * that was cut back, or rewritten, after the last checkpoint. */
typedef struct audit_anchor {
    uint64_t seq;
    uint8_t hash[STORE_AUDIT_HASH_BYTES];
} audit_anchor_t;

typedef struct audit_verify_report {
    int intact;           /* 1: every check passed */
    uint64_t entries;     /* entries verified: all when intact, else those before broken_seq */
    uint64_t checkpoints; /* checkpoints whose signature and hash were verified */
    uint64_t last_seq;    /* the trail's last entry (intact) */
    uint8_t last_hash[STORE_AUDIT_HASH_BYTES];
    uint64_t last_checkpoint_seq; /* 0 when there is none */
    int64_t last_checkpoint_at;
    uint8_t last_checkpoint_hash[STORE_AUDIT_HASH_BYTES];
    /* When not intact: the seq of the first entry that is broken (missing,
     * altered, moved) or of the checkpoint that fails, and why. */
    uint64_t broken_seq;
    char problem[512];
    /* The acked-delivery index (audit_ack_ranges, a row per run of
     * consecutive seqs in an entry; audit_acks, a row per seq, before
     * schema 12: derived from the entries, what the data-subject export
     * looks acks up in), checked once the chain is intact: index_checked 0
     * for a store from before it. acked_seqs is what the verified entries
     * list, acked_runs in how many runs (as many as seqs before schema
     * 12); index_intact 0 when the index disagrees with them (a row
     * missing, extra, naming another entry, holding other seqs than a run,
     * overlapping another, or naming an entry the trail does not hold),
     * index_problem says where first. It leaves intact as the chain is. */
    int index_checked, index_intact;
    uint64_t acked_seqs, acked_runs;
    char index_problem[256];
    /* SQLite's own indexes of the trail's tables (audit_by_subject,
     * audit_by_delivery: what the export finds a subject's entries
     * through, and the chain's walk by seq never reads), checked by
     * SQLite's integrity_check of each table once the chain is intact:
     * tables_intact 0 when SQLite reports anything (an index rebuilt
     * outside the broker to leave rows out, or to file a row under
     * another subject or delivery); tables_problems counts its messages,
     * tables_problem is the first. It leaves intact as the chain is. */
    int tables_checked, tables_intact;
    uint64_t tables_problems;
    char tables_problem[384];
} audit_verify_report_t;

/* Recompute the chain from entry 1 and check every checkpoint: its
 * signature under one of keys (Ed25519 public keys, oldest first; a
 * checkpoint signed by another key fails, and so does one signed by a key
 * listed before the key of an earlier checkpoint: after a rotation the old
 * key signs nothing more; a key listed again after a later one covers a
 * return to it) and that it certifies the recomputed hash at its seq; and,
 * when anchor is not NULL, the anchor. An entry whose lists
 * break the shape rules (store_audit_shape_problem) breaks the chain
 * though its hash matches: the broker writes no such entry. Stops at the first
 * failure, in seq order. Then, on an intact chain, the acked-delivery
 * index against the entries' seq lists, and the tables' SQLite indexes
 * (store_audit_integrity). Works on a reader
 * (store_open_reader). Returns 0 when the verification ran
 * (report->intact and index_intact say how it ended), -1 when the store
 * could not be read (report->problem says why). Memory is bounded
 * (SCHAKEL_AUDIT_VERIFY_BATCH entries' checkpoints and 1 MiB of listed
 * acks at a time); time is one BLAKE2b per entry, one Ed25519
 * verification per checkpoint, one index look-up per listed run of acks,
 * and SQLite's walk of the tables and their indexes. */
int audit_verify(store_t *store, const uint8_t (*keys)[32], size_t n_keys,
                 const audit_anchor_t *anchor, audit_verify_report_t *report);

/* ------------------------------------------------------------------ reading */

/* Everything the trail holds about one data subject, as one JSON object:
 * {"subject": P, "exported_at": TIME, "count": N, "entries": [...]} with
 * the entries that name the pseudonym (deliveries of signals about the
 * subject, with recipient and partner, sender, kind, theme, the fields the
 * recipient got, rule id and hash, purpose, legal basis, time; and earlier
 * exports) and the entries that follow up those deliveries (acks,
 * expiries), in seq order, each once; each as audit_entry_json renders
 * it, but for an acked entry that lists several deliveries: its
 * delivery_seqs then shows only the subject's, and
 * "delivery_seqs_withheld" counts the others. Of the entries the
 * acked-delivery index leads to, only "delivery.acked" entries listing
 * the subject's deliveries are shown; one that cannot be read as such is
 * only marked ({"seq": N, "unreadable": why}), another is left out, so
 * that a tampered index cannot show another subject's entry. pseudonym must be a valid
 * pseudonym (syntax_is_pseudonym). Uses the subject index, then per
 * delivery the delivery and acked-delivery indexes: O(log n) each; reads
 * the trail up to its last committed entry when it begins (a store
 * without a transaction open, or the broker's guarded handle). Reads
 * only; auditing the export is the caller's (record_subject_export in the
 * broker; an offline reader cannot write to the broker's trail). Returns
 * 0 with *json_out malloc'd (caller frees), or -1 with err filled.
 * now_s is the document's "exported_at": the broker's time (its clock
 * guard), or the system clock's offline. */
int audit_subject_export(store_t *store, const char *pseudonym, int64_t now_s, char **json_out,
                         char *err, size_t errlen);

/* The same export in steps, for the broker's loop (admin.c), where one
 * turn must not read, nor write, a subject's whole trail:
 * audit_subject_export is these run to the end at once.
 *
 * audit_export_begin: checks the pseudonym (the text above on error) and
 * cuts the trail at its last committed entry (store_audit_committed_seq):
 * every step reads entries up to that seq only. The trail is append-only,
 * so the steps together read what one read at the cut would have read,
 * whatever is appended meanwhile (an entry about the subject written
 * after the cut is the next export's). now_s is the document's
 * "exported_at": the time the trail was cut. max_bytes bounds the
 * renderings kept (0: no bound). NULL with err filled on error.
 * audit_export_step: reads at most bounds->entries of the subject's
 * entries (the subject index, from where the last step ended); once those
 * are all read, the entries of at most bounds->deliveries of its
 * deliveries (two index look-ups each); once those are, writes about
 * bounds->bytes of the document (the first writing step sorts the
 * renderings: O(n log n)), each rendering wiped and freed once written.
 * bounds NULL: no bounds. Returns 0 while more remains, 1 when the
 * document is whole, -1 with err filled (a store error, out of memory,
 * past max_bytes); after -1 only audit_export_destroy.
 * audit_export_document: after a step returned 1, the document
 * audit_subject_export returns, handed over (the caller wipes and frees
 * it), and in *count (if not NULL) the number of entries in it; NULL
 * before. audit_export_cut: the seq the export stops at.
 * audit_export_too_large: 1 when a step failed because the renderings
 * passed max_bytes. audit_export_destroy: wipes what was read and written
 * (it names the subject) and frees; *ex = NULL; safe on NULL. */
typedef struct audit_export audit_export_t;
typedef struct audit_export_bounds {
    size_t entries;    /* of the subject's entries read in a step */
    size_t deliveries; /* deliveries whose entries are read in a step */
    size_t bytes;      /* of the document written in a step */
} audit_export_bounds_t;
audit_export_t *audit_export_begin(store_t *store, const char *pseudonym, int64_t now_s,
                                   size_t max_bytes, char *err, size_t errlen);
int audit_export_step(audit_export_t *ex, store_t *store, const audit_export_bounds_t *bounds,
                      char *err, size_t errlen);
char *audit_export_document(audit_export_t *ex, size_t *count);
uint64_t audit_export_cut(const audit_export_t *ex);
int audit_export_too_large(const audit_export_t *ex);
void audit_export_destroy(audit_export_t **ex);

/* One entry as a JSON object: "seq", "at" (Unix seconds), "time" (UTC,
 * ISO 8601), "event", every present field under its column name, "hash"
 * (hex), and "damage" for a damaged row. With withhold_subject the
 * pseudonym is replaced by "withheld". malloc'd; NULL when out of memory. */
char *audit_entry_json(const store_audit_entry_t *entry, int withhold_subject);

/* The same as one key=value line (no newline), values quoted as in the
 * broker's log. malloc'd; NULL when out of memory. */
char *audit_entry_line(const store_audit_entry_t *entry, int withhold_subject);

/* "2026-01-31T12:00:00Z" into out (at least 21 bytes). */
void audit_format_time(int64_t at, char *out, size_t outlen);

#endif
