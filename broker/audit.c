/*
 * audit.c — the audit trail's chain and its readers (see audit.h): the
 * canonical encoding, BLAKE2b chaining on append, Ed25519 checkpoints,
 * offline verification, the data-subject export and one-entry renderings.
 * Trusts the store for rows and nothing in them: verification recomputes
 * every hash and checks every signature, and renderings escape every
 * string. Errors are -1 with the store's message (or err) filled.
 */
#include "audit.h"
#include "plural.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "schakel_limits.h"
#include "growarray.h"
#include "syntax.h"
#include "wallclock.h"

/* ------------------------------------------------------------------ entries */

void audit_entry_init(store_audit_entry_t *entry, const char *event)
{
    memset(entry, 0, sizeof *entry);
    audit_set_text(entry, STORE_AUDIT_EVENT, event);
}

void audit_set_text(store_audit_entry_t *entry, enum store_audit_field field, const char *text)
{
    if (store_audit_fields[field].is_integer)
        abort(); /* a bug in the caller: the encoding would change meaning */
    entry->field[field].present = text != NULL;
    entry->field[field].text = text;
}

void audit_set_int(store_audit_entry_t *entry, enum store_audit_field field, int64_t value)
{
    if (!store_audit_fields[field].is_integer)
        abort();
    entry->field[field].present = 1;
    entry->field[field].text = NULL;
    entry->field[field].number = value;
}

/* ------------------------------------------------------------------ encoding */

/* The encoding is produced once, by encode_walk, into a sink: a buffer
 * (audit_entry_encode) or a hash state (audit_entry_hash). One writer of
 * the format, so the bytes hashed are the bytes documented and tested. */
typedef void (*sink_fn)(void *sink, const uint8_t *bytes, size_t len);

static void put_be64(sink_fn sink, void *arg, uint64_t value)
{
    uint8_t be[8];
    for (int i = 0; i < 8; i++)
        be[i] = (uint8_t)(value >> (56 - 8 * i));
    sink(arg, be, sizeof be);
}

static void put_be32(sink_fn sink, void *arg, uint32_t value)
{
    uint8_t be[4] = {(uint8_t)(value >> 24), (uint8_t)(value >> 16), (uint8_t)(value >> 8),
                     (uint8_t)value};
    sink(arg, be, sizeof be);
}

static void encode_walk(const uint8_t prev[STORE_AUDIT_HASH_BYTES], const store_audit_entry_t *e,
                        sink_fn sink, void *arg)
{
    static const uint8_t tag_absent = AUDIT_TAG_ABSENT, tag_text = AUDIT_TAG_TEXT,
                         tag_integer = AUDIT_TAG_INTEGER;
    _Static_assert(STORE_AUDIT_FIELD_COUNT <= 256, "a late field's number is one byte");
    sink(arg, (const uint8_t *)AUDIT_ENTRY_DOMAIN, sizeof AUDIT_ENTRY_DOMAIN - 1);
    sink(arg, prev, STORE_AUDIT_HASH_BYTES);
    put_be64(sink, arg, e->seq);
    put_be64(sink, arg, (uint64_t)e->at);
    for (int i = 0; i < STORE_AUDIT_FIELD_COUNT; i++) {
        const store_audit_value_t *v = &e->field[i];
        if (!v->present) {
            /* A field added later is left out when absent, so that entries
             * written before it existed hash as they did. */
            if (!store_audit_fields[i].encoded_if_present)
                sink(arg, &tag_absent, 1);
            continue;
        }
        if (store_audit_fields[i].encoded_if_present) {
            /* Present, it is named by its number: without it, a list moved
             * from one late column to another would hash the same. */
            const uint8_t late[2] = {AUDIT_TAG_LATE, (uint8_t)i};
            sink(arg, late, sizeof late);
        }
        if (store_audit_fields[i].is_integer) {
            sink(arg, &tag_integer, 1);
            put_be64(sink, arg, (uint64_t)v->number);
        } else {
            const char *text = v->text != NULL ? v->text : "";
            size_t len = strlen(text);
            sink(arg, &tag_text, 1);
            /* Texts are at most SCHAKEL_AUDIT_MAX_TEXT_LEN bytes when
             * written; a longer one read back still encodes exactly. */
            put_be32(sink, arg, len > UINT32_MAX ? UINT32_MAX : (uint32_t)len);
            sink(arg, (const uint8_t *)text, len > UINT32_MAX ? UINT32_MAX : len);
        }
    }
}

typedef struct buffer_sink {
    uint8_t *out;
    size_t cap, len;
} buffer_sink_t;

static void buffer_sink(void *arg, const uint8_t *bytes, size_t len)
{
    buffer_sink_t *b = arg;
    if (b->len < b->cap)
        memcpy(b->out + b->len, bytes, b->cap - b->len < len ? b->cap - b->len : len);
    b->len += len;
}

static void hash_sink(void *arg, const uint8_t *bytes, size_t len)
{
    crypto_generichash_update(arg, bytes, len);
}

size_t audit_entry_encode(const uint8_t prev[STORE_AUDIT_HASH_BYTES],
                          const store_audit_entry_t *entry, uint8_t *out, size_t outlen)
{
    buffer_sink_t b = {.out = out, .cap = out != NULL ? outlen : 0, .len = 0};
    encode_walk(prev, entry, buffer_sink, &b);
    return b.len;
}

void audit_entry_hash(const uint8_t prev[STORE_AUDIT_HASH_BYTES], const store_audit_entry_t *entry,
                      uint8_t hash[STORE_AUDIT_HASH_BYTES])
{
    crypto_generichash_state state;
    crypto_generichash_init(&state, NULL, 0, STORE_AUDIT_HASH_BYTES);
    encode_walk(prev, entry, hash_sink, &state);
    crypto_generichash_final(&state, hash, STORE_AUDIT_HASH_BYTES);
}

void audit_checkpoint_signed_bytes(uint64_t seq, const uint8_t hash[STORE_AUDIT_HASH_BYTES],
                                   int64_t at, uint8_t out[AUDIT_CHECKPOINT_SIGNED_BYTES])
{
    buffer_sink_t b = {.out = out, .cap = AUDIT_CHECKPOINT_SIGNED_BYTES, .len = 0};
    buffer_sink(&b, (const uint8_t *)AUDIT_CHECKPOINT_DOMAIN, sizeof AUDIT_CHECKPOINT_DOMAIN - 1);
    put_be64(buffer_sink, &b, seq);
    buffer_sink(&b, hash, STORE_AUDIT_HASH_BYTES);
    put_be64(buffer_sink, &b, (uint64_t)at);
}

/* ------------------------------------------------------------------ writing */

/* Sign (seq, hash, now) and insert it, in the open transaction. */
static int checkpoint_write(store_t *store, const keypair_t *key, int64_t now, uint64_t seq,
                            const uint8_t hash[STORE_AUDIT_HASH_BYTES])
{
    store_audit_checkpoint_t cp;
    uint8_t signed_bytes[AUDIT_CHECKPOINT_SIGNED_BYTES];
    memset(&cp, 0, sizeof cp);
    cp.seq = seq;
    cp.at = now;
    memcpy(cp.hash, hash, STORE_AUDIT_HASH_BYTES);
    memcpy(cp.key, key->sign_pk, sizeof cp.key);
    audit_checkpoint_signed_bytes(seq, hash, now, signed_bytes);
    /* Ed25519 signing with a loaded key does not fail in libsodium; if it
     * ever did, the turn fails like any write (its message is the store's
     * last, which may be stale). */
    if (keys_sign(key, signed_bytes, sizeof signed_bytes, cp.signature) != 0)
        return -1;
    return store_audit_checkpoint_add(store, &cp);
}

int audit_append(store_t *store, const keypair_t *key, int64_t now, store_audit_entry_t *entry)
{
    store_audit_tail_t tail;
    if (entry == NULL || store_begin(store) != 0 || store_audit_tail(store, &tail) != 0)
        return -1;
    entry->seq = tail.seq + 1;
    entry->at = now;
    audit_entry_hash(tail.hash, entry, entry->hash);
    if (store_audit_append(store, entry) != 0)
        return -1;
    if (key != NULL && entry->seq - tail.checkpoint_seq >= SCHAKEL_AUDIT_CHECKPOINT_ENTRIES)
        return checkpoint_write(store, key, now, entry->seq, entry->hash);
    return 0;
}

static int last_at_fn(const store_audit_entry_t *entry, void *arg)
{
    *(int64_t *)arg = entry->at;
    return 0;
}

int audit_trail_last_at(store_t *store, int64_t *at)
{
    store_audit_tail_t tail;
    *at = 0;
    if (store_audit_tail(store, &tail) != 0 ||
        (tail.seq > 0 && store_audit_scan(store, tail.seq - 1, 1, last_at_fn, at) < 0))
        return -1;
    return 0;
}

int audit_offline_time(store_t *store, int accept_clock, int64_t *now, char *why, size_t whylen)
{
    int64_t floor_s = 0, wall_s = (int64_t)time(NULL);
    if (audit_trail_last_at(store, &floor_s) != 0) {
        snprintf(why, whylen, "cannot read the audit trail's last entry: %s", store_errmsg(store));
        return -1;
    }
    if (!accept_clock && floor_s - wall_s > WALLCLOCK_BEHIND_S) {
        snprintf(why, whylen,
                 "the system clock is %lld s behind the last entry of the audit trail: set the "
                 "clock right (timedatectl, NTP) and run this again; if the trail's time is the "
                 "wrong one (a clock that ran ahead), add --accept-clock",
                 (long long)(floor_s - wall_s));
        return -1;
    }
    *now = !accept_clock && wall_s < floor_s ? floor_s : wall_s;
    return 0;
}

int audit_append_offline(store_t *store, const keypair_t *key, int64_t now,
                         store_audit_entry_t *entry, char *why, size_t whylen)
{
    store_audit_tail_t tail;
    if (store_begin(store) != 0 || store_audit_tail(store, &tail) != 0) {
        snprintf(why, whylen, "%s", store_errmsg(store));
        return -1;
    }
    if (key == NULL && tail.seq + 1 - tail.checkpoint_seq >= SCHAKEL_AUDIT_CHECKPOINT_ENTRIES) {
        snprintf(why, whylen,
                 "the audit trail ends in %llu entries without a checkpoint, and one more "
                 "unsigned would make them too many: give the broker key so that it is signed",
                 (unsigned long long)(tail.seq - tail.checkpoint_seq));
        return -1;
    }
    if (audit_append(store, key, now, entry) != 0 ||
        (key != NULL && audit_checkpoint(store, key, now, 1) < 0)) {
        snprintf(why, whylen, "%s", store_errmsg(store));
        return -1;
    }
    return 0;
}

static int checkpoint_due(const store_audit_tail_t *tail, int64_t now, int force)
{
    if (tail->seq <= tail->checkpoint_seq)
        return 0; /* nothing new to certify */
    return force || tail->seq - tail->checkpoint_seq >= SCHAKEL_AUDIT_CHECKPOINT_ENTRIES ||
           now - tail->checkpoint_at >= SCHAKEL_AUDIT_CHECKPOINT_IVL_S;
}

int audit_checkpoint(store_t *store, const keypair_t *key, int64_t now, int force)
{
    store_audit_tail_t tail;
    if (key == NULL || store_audit_tail(store, &tail) != 0)
        return -1;
    if (!checkpoint_due(&tail, now, force))
        return 0;
    /* Read again inside the transaction: it is the tail that commits. */
    if (store_begin(store) != 0 || store_audit_tail(store, &tail) != 0)
        return -1;
    if (!checkpoint_due(&tail, now, force))
        return 0;
    return checkpoint_write(store, key, now, tail.seq, tail.hash) == 0 ? 1 : -1;
}

/* ------------------------------------------------------------------ the tail at start */

typedef struct tail_check {
    uint8_t prev[STORE_AUDIT_HASH_BYTES];
    uint64_t expected; /* the seq the next entry must have */
    uint64_t broken;   /* the first entry that does not chain (0: none yet) */
    const char *problem;
    store_audit_checkpoint_t cp;
    int have_cp;
} tail_check_t;

static int tail_check_checkpoint(const store_audit_checkpoint_t *cp, void *arg)
{
    tail_check_t *tc = arg;
    tc->cp = *cp;
    tc->cp.damage = cp->damage != NULL ? "damaged" : NULL; /* the row's string ends here */
    tc->have_cp = 1;
    return 1;
}

/* The checkpoint's own entry: its stored hash must be the one it certifies. */
static int tail_check_certified(const store_audit_entry_t *e, void *arg)
{
    tail_check_t *tc = arg;
    if (e->seq != tc->expected || e->damage != NULL ||
        sodium_memcmp(e->hash, tc->cp.hash, STORE_AUDIT_HASH_BYTES) != 0) {
        tc->broken = tc->expected;
        tc->problem = "it is not the entry the last checkpoint certifies";
        return 1;
    }
    memcpy(tc->prev, e->hash, STORE_AUDIT_HASH_BYTES);
    tc->expected = e->seq + 1;
    return 1;
}

static int tail_check_entry(const store_audit_entry_t *e, void *arg)
{
    tail_check_t *tc = arg;
    uint8_t recomputed[STORE_AUDIT_HASH_BYTES];
    if (e->seq != tc->expected) {
        tc->problem = "it is missing";
    } else if (e->damage != NULL) {
        tc->problem = "its row is damaged";
    } else {
        audit_entry_hash(tc->prev, e, recomputed);
        if (sodium_memcmp(recomputed, e->hash, STORE_AUDIT_HASH_BYTES) != 0)
            tc->problem = "its hash is not the one its fields and the entry before it give";
        else if (store_audit_shape_problem(e) != NULL)
            tc->problem = "it is of a shape the broker does not write";
    }
    if (tc->problem != NULL) {
        tc->broken = tc->expected;
        return 1;
    }
    memcpy(tc->prev, recomputed, STORE_AUDIT_HASH_BYTES);
    tc->expected = e->seq + 1;
    return 0;
}

int audit_tail_check(store_t *store, const uint8_t own_key[32], audit_tail_signer_t *other,
                     char *why, size_t whylen)
{
    store_audit_tail_t tail;
    tail_check_t tc;
    memset(&tc, 0, sizeof tc);
    if (other != NULL)
        memset(other, 0, sizeof *other);
    if (store_audit_tail(store, &tail) != 0) {
        snprintf(why, whylen, "cannot read the audit trail's tail: %s", store_errmsg(store));
        return -1;
    }
    tc.expected = 1;
    if (tail.checkpoint_seq > tail.seq) {
        snprintf(why, whylen,
                 "the audit trail ends at entry %llu, but a checkpoint certifies entry %llu: "
                 "entries from %llu on were removed",
                 (unsigned long long)tail.seq, (unsigned long long)tail.checkpoint_seq,
                 (unsigned long long)tail.seq + 1);
        return 1;
    }
    if (tail.seq - tail.checkpoint_seq >= SCHAKEL_AUDIT_CHECKPOINT_ENTRIES) {
        snprintf(why, whylen,
                 "entry %llu of the audit trail is %u entries after its last checkpoint (seq "
                 "%llu), but the broker signs one at least every %u: checkpoints were removed",
                 (unsigned long long)(tail.checkpoint_seq + SCHAKEL_AUDIT_CHECKPOINT_ENTRIES),
                 (unsigned)SCHAKEL_AUDIT_CHECKPOINT_ENTRIES,
                 (unsigned long long)tail.checkpoint_seq,
                 (unsigned)SCHAKEL_AUDIT_CHECKPOINT_ENTRIES);
        return 1;
    }
    if (tail.checkpoint_seq > 0) {
        uint64_t cs = tail.checkpoint_seq;
        uint8_t signed_bytes[AUDIT_CHECKPOINT_SIGNED_BYTES];
        tc.expected = cs;
        if (store_audit_checkpoint_scan(store, cs - 1, cs, tail_check_checkpoint, &tc) < 0 ||
            store_audit_scan(store, cs - 1, 1, tail_check_certified, &tc) < 0) {
            snprintf(why, whylen, "cannot read the audit trail's tail: %s", store_errmsg(store));
            return -1;
        }
        if (tc.have_cp && tc.cp.damage == NULL)
            audit_checkpoint_signed_bytes(tc.cp.seq, tc.cp.hash, tc.cp.at, signed_bytes);
        if (!tc.have_cp || tc.cp.damage != NULL ||
            keys_verify(tc.cp.key, signed_bytes, sizeof signed_bytes, tc.cp.signature) != 0) {
            snprintf(why, whylen,
                     "the audit trail's last checkpoint (seq %llu) does not verify under the key "
                     "it names",
                     (unsigned long long)cs);
            return 1;
        }
        if (tc.broken == 0 && tc.expected == cs) {
            tc.broken = cs;
            tc.problem = "it is missing";
        }
        /* Said, not refused: the broker knows only its own key, and a
         * rotation leaves the last checkpoint under the old one. */
        if (own_key != NULL && other != NULL &&
            sodium_memcmp(tc.cp.key, own_key, sizeof tc.cp.key) != 0) {
            other->seq = cs;
            memcpy(other->key, tc.cp.key, sizeof other->key);
        }
    }
    /* At most SCHAKEL_AUDIT_CHECKPOINT_ENTRIES - 1 entries: one batch. */
    if (tc.broken == 0 && store_audit_scan(store, tc.expected - 1, SCHAKEL_AUDIT_CHECKPOINT_ENTRIES,
                                           tail_check_entry, &tc) < 0) {
        snprintf(why, whylen, "cannot read the audit trail's tail: %s", store_errmsg(store));
        return -1;
    }
    if (tc.broken == 0 && tc.expected != tail.seq + 1) {
        tc.broken = tc.expected;
        tc.problem = "it is missing";
    }
    if (tc.broken == 0)
        return 0;
    snprintf(why, whylen,
             "the audit trail does not chain from its last checkpoint (seq %llu) to its last "
             "entry (seq %llu): entry %llu does not chain (%s)",
             (unsigned long long)tail.checkpoint_seq, (unsigned long long)tail.seq,
             (unsigned long long)tc.broken, tc.problem);
    return 1;
}

/* ------------------------------------------------------------------ verifying */

typedef struct verify_state {
    const uint8_t (*keys)[32];
    size_t n_keys;
    const audit_anchor_t *anchor;
    audit_verify_report_t *report;
    uint8_t prev[STORE_AUDIT_HASH_BYTES]; /* the recomputed hash of the last entry */
    uint64_t expected;                    /* the seq the next entry must have */
    uint64_t certified;                   /* seq of the last checkpoint that matched */
    size_t key_floor;     /* index of the key that signed it: later ones need this or a later key */
    uint64_t floor_seq;   /* the first checkpoint signed by keys[key_floor] (0: none yet) */
    store_audit_checkpoint_t *cps;        /* this batch's checkpoints, in seq order */
    size_t n_cps, cap_cps, next_cp;
    int out_of_memory;
    /* The acked-delivery index check: (delivery seq, entry seq) pairs the
     * entries listed since the last look-up round, at most
     * VERIFY_ACKED_PAIRS (the scan pauses to look them up). */
    uint64_t (*acked)[2];
    size_t n_acked;
    int acked_pause;
} verify_state_t;

#define VERIFY_ACKED_PAIRS 65536u /* 1 MiB of pairs */

static void verify_broken(verify_state_t *st, uint64_t seq, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void verify_broken(verify_state_t *st, uint64_t seq, const char *fmt, ...)
{
    va_list ap;
    st->report->intact = 0;
    st->report->broken_seq = seq;
    /* What comes before the first broken place is what was verified. */
    st->report->entries = seq - 1;
    va_start(ap, fmt);
    vsnprintf(st->report->problem, sizeof st->report->problem, fmt, ap);
    va_end(ap);
}

static int verify_collect_checkpoint(const store_audit_checkpoint_t *cp, void *arg)
{
    verify_state_t *st = arg;
    if (st->n_cps == st->cap_cps) {
        size_t cap = st->cap_cps ? st->cap_cps * 2 : 16;
        store_audit_checkpoint_t *grown = realloc(st->cps, cap * sizeof *grown);
        if (grown == NULL) {
            st->out_of_memory = 1;
            return 1;
        }
        st->cps = grown;
        st->cap_cps = cap;
    }
    st->cps[st->n_cps] = *cp;
    st->cps[st->n_cps].damage = cp->damage != NULL ? "a column is missing or of the wrong size"
                                                   : NULL; /* the row's string ends with the call */
    st->n_cps++;
    return 0;
}

/* The index of key among the given keys, oldest first: the first match at
 * or after the key of the last verified checkpoint (a key listed twice
 * covers a return to it). -1 when it was not given at all; -2 when only an
 * older key than that checkpoint's matches. */
static long verify_key_index(const verify_state_t *st, const uint8_t key[32])
{
    long older = -1;
    for (size_t i = 0; i < st->n_keys; i++) {
        if (sodium_memcmp(st->keys[i], key, 32) != 0)
            continue;
        if (i >= st->key_floor)
            return (long)i;
        older = -2;
    }
    return older;
}

/* The key of a checkpoint: given, and not older than the one before it.
 * After a rotation the old key signs nothing more; one that does (a
 * retired, perhaps leaked, key re-signing what the new key certified) is
 * refused. Returns 0, or -1 reported. */
static int verify_checkpoint_key(verify_state_t *st, const store_audit_checkpoint_t *cp)
{
    char z85[41];
    long index = verify_key_index(st, cp->key);
    keys_public_z85(cp->key, z85);
    if (index == -1) {
        verify_broken(st, cp->seq,
                      "the checkpoint at seq %llu is signed by key %s, which is not a broker key "
                      "given for the verification",
                      (unsigned long long)cp->seq, z85);
        return -1;
    }
    if (index == -2) {
        verify_broken(st, cp->seq,
                      "the checkpoint at seq %llu is signed by key %s, which comes before the key "
                      "that signed checkpoints since seq %llu: after a rotation the old key signs "
                      "nothing, so a retired key re-signed the trail (or the keys were not given "
                      "oldest first)",
                      (unsigned long long)cp->seq, z85, (unsigned long long)st->floor_seq);
        return -1;
    }
    if (st->floor_seq == 0 || (size_t)index != st->key_floor)
        st->floor_seq = cp->seq;
    st->key_floor = (size_t)index;
    return 0;
}

/* Check one checkpoint against the recomputed hash of its entry. Returns 0
 * when it holds, -1 when the trail is broken (reported). */
static int verify_checkpoint(verify_state_t *st, const store_audit_checkpoint_t *cp,
                             const uint8_t recomputed[STORE_AUDIT_HASH_BYTES])
{
    uint8_t signed_bytes[AUDIT_CHECKPOINT_SIGNED_BYTES];
    if (cp->damage != NULL) {
        verify_broken(st, cp->seq, "the checkpoint at seq %llu is damaged: %s",
                      (unsigned long long)cp->seq, cp->damage);
        return -1;
    }
    if (verify_checkpoint_key(st, cp) != 0)
        return -1;
    audit_checkpoint_signed_bytes(cp->seq, cp->hash, cp->at, signed_bytes);
    if (keys_verify(cp->key, signed_bytes, sizeof signed_bytes, cp->signature) != 0) {
        verify_broken(st, cp->seq,
                      "the checkpoint at seq %llu does not verify: its seq, hash or time was "
                      "altered, or its signature",
                      (unsigned long long)cp->seq);
        return -1;
    }
    if (sodium_memcmp(cp->hash, recomputed, STORE_AUDIT_HASH_BYTES) != 0) {
        verify_broken(st, st->certified + 1,
                      "the signed checkpoint at seq %llu certifies another hash than the trail "
                      "holds: entries %llu..%llu were rewritten (with their hashes recomputed)",
                      (unsigned long long)cp->seq, (unsigned long long)st->certified + 1,
                      (unsigned long long)cp->seq);
        return -1;
    }
    st->certified = cp->seq;
    st->report->checkpoints++;
    st->report->last_checkpoint_seq = cp->seq;
    st->report->last_checkpoint_at = cp->at;
    memcpy(st->report->last_checkpoint_hash, cp->hash, STORE_AUDIT_HASH_BYTES);
    return 0;
}

/* The entry's own checks: its place, its row, its hash. */
static int verify_entry_itself(verify_state_t *st, const store_audit_entry_t *e,
                               uint8_t recomputed[STORE_AUDIT_HASH_BYTES])
{
    unsigned long long seq = (unsigned long long)e->seq;
    if (e->seq != st->expected) {
        if (e->seq > st->expected)
            verify_broken(st, st->expected,
                          "entry %llu is missing (removed): the trail goes on at seq %llu",
                          (unsigned long long)st->expected, seq);
        else
            verify_broken(st, st->expected,
                          "an entry with seq %llu stands where entry %llu "
                          "belongs",
                          seq, (unsigned long long)st->expected);
        return -1;
    }
    if (e->damage != NULL) {
        verify_broken(st, e->seq, "entry %llu is damaged: %s", seq, e->damage);
        return -1;
    }
    audit_entry_hash(st->prev, e, recomputed);
    if (sodium_memcmp(recomputed, e->hash, STORE_AUDIT_HASH_BYTES) != 0) {
        verify_broken(st, e->seq,
                      "entry %llu does not match its hash: it was altered or moved here, or the "
                      "entry before it was rewritten together with its hash",
                      seq);
        return -1;
    }
    /* The store refuses to write another shape: one can only be hashed in
     * by someone rewriting the chain (a list moved to another column, a
     * list on another event, a list not in its one spelling). */
    const char *shape = store_audit_shape_problem(e);
    if (shape != NULL) {
        verify_broken(st, e->seq, "entry %llu is of a shape the broker does not write: %s", seq,
                      shape);
        return -1;
    }
    if (st->anchor != NULL && st->anchor->seq == e->seq &&
        sodium_memcmp(st->anchor->hash, recomputed, STORE_AUDIT_HASH_BYTES) != 0) {
        verify_broken(st, e->seq,
                      "entry %llu does not have the anchor's hash: the trail up to it was "
                      "rewritten since the anchor was taken",
                      seq);
        return -1;
    }
    return 0;
}

/* The first way the acked-delivery index disagrees with the entries. */
static void verify_index_problem(verify_state_t *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void verify_index_problem(verify_state_t *st, const char *fmt, ...)
{
    va_list ap;
    if (!st->report->index_intact)
        return;
    st->report->index_intact = 0;
    va_start(ap, fmt);
    vsnprintf(st->report->index_problem, sizeof st->report->index_problem, fmt, ap);
    va_end(ap);
}

/* An acked entry's seqs, into the pairs the next look-up round checks.
 * Returns 1 when the scan should pause for that round. */
static int verify_collect_acked(verify_state_t *st, const store_audit_entry_t *e)
{
    const store_audit_value_t *v = &e->field[STORE_AUDIT_DELIVERY_SEQS];
    uint64_t seqs[STORE_AUDIT_MAX_ACKED_SEQS];
    if (!v->present)
        return 0;
    size_t n = store_audit_seqs_parse(v->text, seqs, STORE_AUDIT_MAX_ACKED_SEQS);
    if (n == 0) {
        verify_index_problem(st, "entry %llu lists delivery_seqs that are not a seq list",
                             (unsigned long long)e->seq);
        return 0;
    }
    if (st->acked == NULL && (st->acked = malloc(VERIFY_ACKED_PAIRS * sizeof *st->acked)) == NULL) {
        st->out_of_memory = 1;
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        st->acked[st->n_acked][0] = seqs[i];
        st->acked[st->n_acked++][1] = e->seq;
    }
    st->report->acked_seqs += n;
    return st->n_acked + STORE_AUDIT_MAX_ACKED_SEQS > VERIFY_ACKED_PAIRS;
}

static int verify_entry(const store_audit_entry_t *e, void *arg)
{
    verify_state_t *st = arg;
    uint8_t recomputed[STORE_AUDIT_HASH_BYTES];
    if (verify_entry_itself(st, e, recomputed) != 0)
        return 1;
    while (st->next_cp < st->n_cps && st->cps[st->next_cp].seq <= e->seq) {
        if (verify_checkpoint(st, &st->cps[st->next_cp++], recomputed) != 0)
            return 1;
    }
    /* The broker signs a checkpoint in the transaction of every
     * SCHAKEL_AUDIT_CHECKPOINT_ENTRIES-th entry after the last one (and
     * more often by time): a longer stretch means checkpoints were removed,
     * and with them what would show a rewritten chain. */
    if (e->seq - st->report->last_checkpoint_seq >= SCHAKEL_AUDIT_CHECKPOINT_ENTRIES) {
        verify_broken(st, e->seq,
                      "entry %llu is %llu entries after the last checkpoint (seq %llu), but the "
                      "broker signs one at least every %u entries: checkpoints were removed",
                      (unsigned long long)e->seq,
                      (unsigned long long)(e->seq - st->report->last_checkpoint_seq),
                      (unsigned long long)st->report->last_checkpoint_seq,
                      (unsigned)SCHAKEL_AUDIT_CHECKPOINT_ENTRIES);
        return 1;
    }
    memcpy(st->prev, recomputed, STORE_AUDIT_HASH_BYTES);
    st->expected = e->seq + 1;
    st->report->entries++;
    st->report->last_seq = e->seq;
    memcpy(st->report->last_hash, recomputed, STORE_AUDIT_HASH_BYTES);
    st->acked_pause = verify_collect_acked(st, e);
    return st->acked_pause;
}

/* A look-up round: the index must name, for each delivery an entry lists,
 * that entry. Returns 0, or -1 on a read error. */
static int verify_acked_round(store_t *store, verify_state_t *st)
{
    for (size_t i = 0; i < st->n_acked && st->report->index_intact; i++) {
        uint64_t delivery = st->acked[i][0], listed_by = st->acked[i][1], named = 0;
        int rc = store_audit_acked_lookup(store, delivery, &named);
        if (rc < 0)
            return -1;
        if (rc == 0)
            verify_index_problem(st,
                                 "entry %llu lists delivery %llu as acked, but the index does not "
                                 "name it",
                                 (unsigned long long)listed_by, (unsigned long long)delivery);
        else if (named != listed_by)
            verify_index_problem(st,
                                 "entry %llu lists delivery %llu as acked, but the index names "
                                 "entry %llu for it",
                                 (unsigned long long)listed_by, (unsigned long long)delivery,
                                 (unsigned long long)named);
    }
    st->n_acked = 0;
    return 0;
}

/* After an intact chain: the index holds no row beyond those the entries
 * list (each listed one was looked up). Rows for entries after the last
 * one verified (a live broker goes on writing) are not counted, but a row
 * naming an entry that does not exist is named: it would make the ack of
 * its delivery fail for good. */
static int verify_index_end(store_t *store, verify_state_t *st)
{
    uint64_t rows = 0, delivery = 0, entry = 0;
    int rc = store_audit_acked_count(store, st->report->last_seq, &rows);
    if (rc <= 0)
        return rc; /* -1, or 0: a store from before the index */
    st->report->index_checked = 1;
    if (rows != st->report->acked_seqs)
        verify_index_problem(st,
                             "the index holds %llu %s for entries up to %llu, but those "
                             "entries list %llu acked %s",
                             (unsigned long long)rows, plural(rows, "row", "rows"),
                             (unsigned long long)st->report->last_seq,
                             (unsigned long long)st->report->acked_seqs,
                             plural(st->report->acked_seqs, "delivery", "deliveries"));
    rc = store_audit_acked_stray(store, st->report->last_seq, &delivery, &entry);
    if (rc < 0)
        return -1;
    if (rc > 0)
        verify_index_problem(st,
                             "the index names entry %llu for delivery %llu, but the trail has "
                             "no such entry (an ack of delivery %llu would fail)",
                             (unsigned long long)entry, (unsigned long long)delivery,
                             (unsigned long long)delivery);
    return 0;
}

static int verify_first_checkpoint(const store_audit_checkpoint_t *cp, void *arg)
{
    *(uint64_t *)arg = cp->seq;
    return 1;
}

/* After the last entry: nothing may be certified or anchored beyond it. */
static int verify_end(store_t *store, verify_state_t *st)
{
    uint64_t beyond = 0, last = st->expected - 1;
    if (store_audit_checkpoint_scan(store, last, INT64_MAX, verify_first_checkpoint, &beyond) < 0)
        return -1;
    if (beyond != 0)
        verify_broken(st, last + 1,
                      "a checkpoint certifies entry %llu, but the trail ends at seq %llu: "
                      "entries from %llu on were removed",
                      (unsigned long long)beyond, (unsigned long long)last,
                      (unsigned long long)last + 1);
    else if (st->anchor != NULL && st->anchor->seq > last)
        verify_broken(st, last + 1,
                      "the anchor names entry %llu, but the trail ends at seq %llu: entries from "
                      "%llu on were removed",
                      (unsigned long long)st->anchor->seq, (unsigned long long)last,
                      (unsigned long long)last + 1);
    if (!st->report->intact)
        return 0;
    uint64_t off_chain = 0;
    if (store_audit_off_chain(store, &off_chain) != 0)
        return -1;
    if (off_chain > 0)
        verify_broken(st, last + 1,
                      "the file holds %llu audit row(s) outside the chain (seq below 1): the "
                      "broker writes none, so they were put there by other means",
                      (unsigned long long)off_chain);
    return 0;
}

/* After an intact chain: SQLite's indexes of the trail's tables. The
 * chain is read by seq (the rowid) alone, so an index rebuilt outside the
 * broker, its definition put back, changes no hash; but the export reads
 * through it. Returns 0, or -1 on a read error. */
static int verify_tables(store_t *store, audit_verify_report_t *report)
{
    if (store_audit_integrity(store, report->tables_problem, sizeof report->tables_problem,
                              &report->tables_problems) != 0)
        return -1;
    report->tables_checked = 1;
    report->tables_intact = report->tables_problems == 0;
    return 0;
}

/* One batch: its checkpoints, then its entries. Returns the entries read,
 * or -1 on a read error. */
static int verify_batch(store_t *store, verify_state_t *st)
{
    uint64_t after = st->expected - 1;
    st->n_cps = st->next_cp = 0;
    if (store_audit_checkpoint_scan(store, after, after + SCHAKEL_AUDIT_VERIFY_BATCH,
                                    verify_collect_checkpoint, st) < 0)
        return -1;
    if (st->out_of_memory)
        return -1;
    st->acked_pause = 0;
    int n = store_audit_scan(store, after, SCHAKEL_AUDIT_VERIFY_BATCH, verify_entry, st);
    if (n < 0 || st->out_of_memory || verify_acked_round(store, st) != 0)
        return -1;
    return n;
}

int audit_verify(store_t *store, const uint8_t (*keys)[32], size_t n_keys,
                 const audit_anchor_t *anchor, audit_verify_report_t *report)
{
    verify_state_t st;
    if (report == NULL)
        return -1;
    memset(report, 0, sizeof *report);
    memset(&st, 0, sizeof st);
    report->intact = 1;
    report->index_intact = 1;
    st.keys = keys;
    st.n_keys = keys != NULL ? n_keys : 0;
    st.anchor = anchor;
    st.report = report;
    st.expected = 1;
    /* One snapshot for all of it: a running broker commits entries and
     * checkpoints meanwhile, and a checkpoint read before the entries it
     * certifies would look like a trail cut back. */
    int snapshot = store_audit_snapshot_begin(store);
    int result = snapshot < 0 ? -1 : 0;
    for (; result == 0;) {
        int n = verify_batch(store, &st);
        if (n < 0) {
            result = -1;
            break;
        }
        if (!report->intact || ((size_t)n < SCHAKEL_AUDIT_VERIFY_BATCH && !st.acked_pause))
            break;
    }
    if (result == 0 && report->intact &&
        (verify_end(store, &st) != 0 || (report->intact && verify_index_end(store, &st) != 0) ||
         (report->intact && verify_tables(store, report) != 0)))
        result = -1;
    if (result != 0) {
        report->intact = 0;
        snprintf(report->problem, sizeof report->problem, "cannot read the trail: %s",
                 st.out_of_memory ? "out of memory" : store_errmsg(store));
    }
    store_audit_snapshot_end(store, snapshot);
    free(st.cps);
    free(st.acked);
    return result;
}

/* ------------------------------------------------------------------ text buffers */

typedef struct text_buf {
    char *data;
    size_t len, cap;
    int out_of_memory;
} text_buf_t;

static void buf_put(text_buf_t *b, const char *s, size_t n)
{
    if (b->out_of_memory)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        /* not realloc: the text names a subject, and the old block is
         * wiped before it goes back to the heap */
        char *grown = malloc(cap);
        if (grown == NULL) {
            b->out_of_memory = 1;
            return;
        }
        if (b->data != NULL) {
            memcpy(grown, b->data, b->len + 1);
            sodium_memzero(b->data, b->cap);
            free(b->data);
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_puts(text_buf_t *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

static void buf_printf(text_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void buf_printf(text_buf_t *b, const char *fmt, ...)
{
    char small[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof small)
        buf_put(b, small, (size_t)n);
    else
        b->out_of_memory = 1; /* only short numbers are formatted this way */
}

/* Give the text away (NULL if memory ran out). */
static char *buf_take(text_buf_t *b)
{
    if (b->out_of_memory || b->data == NULL) {
        if (b->data != NULL)
            sodium_memzero(b->data, b->cap);
        free(b->data);
        return b->out_of_memory ? NULL : strdup("");
    }
    return b->data;
}

/* A JSON string. Text that is not valid UTF-8 (only a tampered row can
 * hold that) has each byte above 0x7F replaced by U+FFFD, so the output is
 * always valid JSON. */
static void buf_json_string(text_buf_t *b, const char *s)
{
    size_t len = strlen(s);
    int utf8 = syntax_is_utf8((const uint8_t *)s, len);
    buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            buf_put(b, esc, 2);
        } else if (*p < 0x20 || *p == 0x7F) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            buf_put(b, esc, 6);
        } else if (utf8 && *p == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F) {
            /* C1 controls (U+0080..U+009F): terminals act on them too */
            snprintf(esc, sizeof esc, "\\u%04x", p[1]);
            buf_put(b, esc, 6);
            p++;
        } else if (*p >= 0x80 && !utf8) {
            buf_puts(b, "\\ufffd");
        } else {
            buf_put(b, (const char *)p, 1);
        }
    }
    buf_puts(b, "\"");
}

/* A key=value value, quoted when it is empty or holds a space, quote or
 * '='. Control characters (C0, DEL and the C1 range) and, in text that is
 * not UTF-8, every byte above 0x7F are escaped as \xHH, so that a hostile
 * value can neither forge a line nor drive a terminal. */
static void buf_line_value(text_buf_t *b, const char *s)
{
    size_t len = strlen(s);
    int utf8 = syntax_is_utf8((const uint8_t *)s, len);
    int quote = len == 0 || strpbrk(s, " \"=") != NULL;
    if (quote)
        buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        char esc[12];
        int c1 = utf8 && p[0] == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F;
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            buf_put(b, esc, 2);
        } else if (*p < 0x20 || *p == 0x7F || (*p >= 0x80 && !utf8) || c1) {
            int n = c1 ? snprintf(esc, sizeof esc, "\\x%02x\\x%02x", p[0], p[1])
                       : snprintf(esc, sizeof esc, "\\x%02x", *p);
            buf_put(b, esc, (size_t)n);
            p += c1;
        } else {
            buf_put(b, (const char *)p, 1);
        }
    }
    if (quote)
        buf_puts(b, "\"");
}

void audit_format_time(int64_t at, char *out, size_t outlen)
{
    struct tm tm;
    time_t t = (time_t)at;
    if (outlen == 0)
        return;
    if (gmtime_r(&t, &tm) == NULL || strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, outlen, "%lld", (long long)at);
}

/* ------------------------------------------------------------------ renderings */

static const char *shown_text(const store_audit_entry_t *e, int i, int withhold_subject)
{
    if (i == STORE_AUDIT_SUBJECT_TAG && withhold_subject)
        return "withheld";
    return e->field[i].text != NULL ? e->field[i].text : "";
}

/* A span of a deliveries text (at most SCHAKEL_AUDIT_MAX_TEXT_LEN bytes:
 * the parser's bound) as a JSON string. */
static void buf_json_span(text_buf_t *b, const char *s, size_t len)
{
    char copy[SCHAKEL_AUDIT_MAX_TEXT_LEN + 1];
    if (len > SCHAKEL_AUDIT_MAX_TEXT_LEN)
        len = SCHAKEL_AUDIT_MAX_TEXT_LEN;
    memcpy(copy, s, len);
    copy[len] = '\0';
    buf_json_string(b, copy);
}

/* One delivery of a queued entry's list, as the object of
 * "deliveries_listed" (the names of the single-delivery columns). */
static int json_listed(const store_audit_delivery_t *d, void *arg)
{
    text_buf_t *b = arg;
    buf_printf(b, "%s{\"delivery_seq\":%llu,\"recipient\":",
               b->data != NULL && b->len > 0 && b->data[b->len - 1] == '}' ? "," : "",
               (unsigned long long)d->seq);
    buf_json_span(b, d->recipient, d->recipient_len);
    buf_puts(b, ",\"recipient_partner\":");
    buf_json_span(b, d->recipient, d->recipient_partner_len);
    buf_puts(b, ",\"rule_id\":");
    buf_json_span(b, d->rule_id, d->rule_id_len);
    buf_puts(b, ",\"rule_hash\":");
    buf_json_span(b, d->rule_hash, 64);
    buf_puts(b, ",\"purpose\":");
    buf_json_span(b, d->purpose, d->purpose_len);
    buf_puts(b, ",\"legal_basis\":");
    buf_json_span(b, d->legal_basis, d->legal_basis_len);
    buf_puts(b, ",\"fields\":");
    buf_json_span(b, d->fields, d->fields_len);
    buf_printf(b, ",\"expires_at\":%lld}", (long long)d->expires_at);
    return 0;
}

/* A queued entry's deliveries, parsed: "deliveries_listed":[{...},...]
 * (nothing when the text is not a canonical list: verify names that). */
static void buf_listed(text_buf_t *b, const store_audit_entry_t *e)
{
    const store_audit_value_t *v = &e->field[STORE_AUDIT_DELIVERIES];
    if (!v->present || store_audit_deliveries_parse(v->text, NULL, NULL) == 0)
        return;
    buf_puts(b, ",\"deliveries_listed\":[");
    (void)store_audit_deliveries_parse(v->text, json_listed, b);
    buf_puts(b, "]");
}

/* audit_entry_json, and for the export the count of seqs left out of an
 * acked entry's delivery_seqs (shown when not 0). */
static char *entry_json(const store_audit_entry_t *e, int withhold_subject, size_t seqs_withheld)
{
    text_buf_t b = {0};
    char time_text[32], hash_hex[2 * STORE_AUDIT_HASH_BYTES + 1];
    audit_format_time(e->at, time_text, sizeof time_text);
    buf_printf(&b, "{\"seq\":%llu,\"at\":%lld,\"time\":", (unsigned long long)e->seq,
               (long long)e->at);
    buf_json_string(&b, time_text);
    for (int i = 0; i < STORE_AUDIT_FIELD_COUNT; i++) {
        if (!e->field[i].present)
            continue;
        buf_puts(&b, ",");
        buf_json_string(&b, store_audit_fields[i].name);
        buf_puts(&b, ":");
        if (store_audit_fields[i].is_integer)
            buf_printf(&b, "%lld", (long long)e->field[i].number);
        else
            buf_json_string(&b, shown_text(e, i, withhold_subject));
    }
    if (seqs_withheld > 0)
        buf_printf(&b, ",\"delivery_seqs_withheld\":%zu", seqs_withheld);
    buf_listed(&b, e);
    syntax_hex(e->hash, STORE_AUDIT_HASH_BYTES, hash_hex);
    buf_puts(&b, ",\"hash\":");
    buf_json_string(&b, hash_hex);
    if (e->damage != NULL) {
        buf_puts(&b, ",\"damage\":");
        buf_json_string(&b, e->damage);
    }
    buf_puts(&b, "}");
    return buf_take(&b);
}

char *audit_entry_json(const store_audit_entry_t *e, int withhold_subject)
{
    return entry_json(e, withhold_subject, 0);
}

char *audit_entry_line(const store_audit_entry_t *e, int withhold_subject)
{
    text_buf_t b = {0};
    char time_text[32];
    audit_format_time(e->at, time_text, sizeof time_text);
    buf_printf(&b, "seq=%llu time=", (unsigned long long)e->seq);
    buf_line_value(&b, time_text);
    for (int i = 0; i < STORE_AUDIT_FIELD_COUNT; i++) {
        if (!e->field[i].present)
            continue;
        buf_puts(&b, " ");
        buf_puts(&b, store_audit_fields[i].name);
        buf_puts(&b, "=");
        if (store_audit_fields[i].is_integer)
            buf_printf(&b, "%lld", (long long)e->field[i].number);
        else
            buf_line_value(&b, shown_text(e, i, withhold_subject));
    }
    if (e->damage != NULL) {
        buf_puts(&b, " damage=");
        buf_line_value(&b, e->damage);
    }
    return buf_take(&b);
}

/* ------------------------------------------------------------------ subject export */

typedef struct export_item {
    uint64_t seq;
    int marker; /* 1: a stand-in for an entry not shown (export_add_acked) */
    char *json;
} export_item_t;

typedef struct export_state {
    export_item_t *items;
    size_t n_items, cap_items;
    uint64_t *deliveries; /* delivery seqs of the subject's deliveries (sorted once all known) */
    size_t n_deliveries, cap_deliveries;
    uint64_t *acked; /* seqs of the entries export_add_acked has seen, ascending */
    size_t n_acked, cap_acked;
    const char *tag;   /* the subject's tag: what the subject index was asked for */
    uint64_t delivery; /* the delivery the delivery index is being asked for */
    uint64_t last_seq; /* the last entry the subject index gave */
    size_t n_subject_items; /* of items, the subject index's (ascending seqs): all of them
                               once the deliveries are read */
    size_t bytes;      /* of the renderings kept */
    size_t max_bytes;  /* 0: no bound */
    int out_of_memory;
    int too_large; /* the renderings passed max_bytes */
} export_state_t;

/* The text of an acked entry's delivery_seqs as the export shows it: the
 * subject's own seqs, each up to 19 digits and a comma. */
#define EXPORT_SEQS_TEXT (STORE_AUDIT_MAX_ACKED_SEQS * 20u + 1u)

/* Room for one more in a list of the export (16 at first). */
static int grow(void **array, size_t *cap, size_t n, size_t size)
{
    return growarray_room(array, cap, n, size, 16);
}

/* Keep an entry's rendering (json is taken; NULL: out of memory). */
static int export_keep(export_state_t *st, uint64_t seq, char *json, int marker)
{
    size_t len = json != NULL ? strlen(json) : 0;
    if (json != NULL && st->max_bytes > 0 && len + 2 > st->max_bytes - st->bytes) {
        sodium_memzero(json, len);
        free(json);
        st->too_large = 1;
        return 1;
    }
    if (json == NULL ||
        grow((void **)&st->items, &st->cap_items, st->n_items, sizeof *st->items) != 0) {
        if (json != NULL) /* an entry about the subject */
            sodium_memzero(json, len);
        free(json);
        st->out_of_memory = 1;
        return 1;
    }
    st->items[st->n_items].seq = seq;
    st->items[st->n_items].marker = marker;
    st->items[st->n_items++].json = json;
    st->bytes += len + 2; /* and the ",\n" before it in the document */
    return 0;
}

static int export_add(const store_audit_entry_t *e, void *arg)
{
    return export_keep(arg, e->seq, audit_entry_json(e, 0), 0);
}

static int seq_order(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int export_is_subjects(const export_state_t *st, uint64_t seq)
{
    return bsearch(&seq, st->deliveries, st->n_deliveries, sizeof seq, seq_order) != NULL;
}

/* Whether the entry at seq was seen before (it lists several of the
 * subject's deliveries: each finds it); notes it if not. -1 when out of
 * memory. */
static int export_acked_seen(export_state_t *st, uint64_t seq)
{
    size_t lo = 0, hi = st->n_acked;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (st->acked[mid] == seq)
            return 1;
        if (st->acked[mid] < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (grow((void **)&st->acked, &st->cap_acked, st->n_acked, sizeof *st->acked) != 0) {
        st->out_of_memory = 1;
        return -1;
    }
    memmove(st->acked + lo + 1, st->acked + lo, (st->n_acked - lo) * sizeof *st->acked);
    st->acked[lo] = seq;
    st->n_acked++;
    return 0;
}

/* An entry an index led to that is not what the index was asked for:
 * shown only as its seq and why, never its fields, which may be anyone's;
 * verify names what is wrong with it. */
static int export_add_unreadable(export_state_t *st, uint64_t seq, const char *why)
{
    text_buf_t b = {0};
    buf_printf(&b, "{\"seq\":%llu,\"unreadable\":", (unsigned long long)seq);
    buf_json_string(&b, why);
    buf_puts(&b, "}");
    return export_keep(st, seq, buf_take(&b), 1);
}

/* An acked entry found through the acked-delivery index: one recipient's
 * acks of one turn, rendered once however many of the subject's
 * deliveries it lists. It is shown with only the subject's deliveries in
 * delivery_seqs, and the number of the others ("delivery_seqs_withheld"):
 * the recipient's other deliveries are not the subject's to see. An entry
 * that is not a delivery.acked entry, or lists none of them (the index
 * disagrees: verify names it), is left out; an unreadable one is marked. */
static int export_add_acked(const store_audit_entry_t *e, void *arg)
{
    export_state_t *st = arg;
    uint64_t seqs[STORE_AUDIT_MAX_ACKED_SEQS];
    char shown[EXPORT_SEQS_TEXT];
    const store_audit_value_t *event = &e->field[STORE_AUDIT_EVENT];
    const store_audit_value_t *v = &e->field[STORE_AUDIT_DELIVERY_SEQS];
    int seen = export_acked_seen(st, e->seq);
    if (seen != 0)
        return seen < 0;
    if (e->damage == NULL &&
        (!event->present || event->text == NULL || strcmp(event->text, "delivery.acked") != 0))
        return 0; /* another entry (another subject's, perhaps): never shown */
    size_t n = v->present && e->damage == NULL
                   ? store_audit_seqs_parse(v->text, seqs, STORE_AUDIT_MAX_ACKED_SEQS)
                   : 0;
    if (n == 0)
        return export_add_unreadable(st, e->seq,
                                     "the acked-delivery index names this entry for one of the "
                                     "subject's deliveries, but it is not a readable "
                                     "delivery.acked entry (run schakelctl audit verify)") != 0;
    size_t used = 0, kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (!export_is_subjects(st, seqs[i]))
            continue;
        if (kept++ > 0)
            shown[used++] = ',';
        used += syntax_decimal_digits(seqs[i], shown + used); /* as the lists spell seqs */
    }
    shown[used] = '\0';
    if (kept == 0)
        return 0;
    store_audit_entry_t copy = *e;
    copy.field[STORE_AUDIT_DELIVERY_SEQS].text = shown;
    return export_keep(st, e->seq, entry_json(&copy, 0, n - kept), 0);
}

static int export_note_delivery(export_state_t *st, uint64_t seq)
{
    if (grow((void **)&st->deliveries, &st->cap_deliveries, st->n_deliveries,
             sizeof *st->deliveries) != 0) {
        st->out_of_memory = 1;
        return 1;
    }
    st->deliveries[st->n_deliveries++] = seq;
    return 0;
}

static int export_note_listed(const store_audit_delivery_t *d, void *arg)
{
    return export_note_delivery(arg, d->seq);
}

/* A subject's entry, and the deliveries it names: in delivery_seq (an
 * entry of one delivery) or in deliveries (a queued entry of schema 7,
 * all deliveries of the subject's item). The subject index is SQLite's,
 * trusted by the query for what it holds: a row whose own subject_tag is
 * not the subject's (an index rebuilt outside the broker) is another
 * subject's entry, marked unreadable and never shown. */
static int export_add_subject_entry(const store_audit_entry_t *e, void *arg)
{
    export_state_t *st = arg;
    const store_audit_value_t *tag = &e->field[STORE_AUDIT_SUBJECT_TAG];
    const store_audit_value_t *delivery = &e->field[STORE_AUDIT_DELIVERY_SEQ];
    const store_audit_value_t *listed = &e->field[STORE_AUDIT_DELIVERIES];
    st->last_seq = e->seq;
    if (!tag->present || tag->text == NULL || strcmp(tag->text, st->tag) != 0)
        return export_add_unreadable(st, e->seq,
                                     "the subject index names this entry for the subject, but "
                                     "the entry names another subject or none: the index was "
                                     "altered (run schakelctl audit verify)") != 0;
    if (delivery->present && delivery->number > 0 && e->damage == NULL &&
        export_note_delivery(st, (uint64_t)delivery->number) != 0)
        return 1;
    if (listed->present && e->damage == NULL) {
        (void)store_audit_deliveries_parse(listed->text, export_note_listed, st);
        if (st->out_of_memory)
            return 1;
    }
    return export_add(e, arg);
}

static int export_item_seq_order(const void *key, const void *item)
{
    uint64_t seq = *(const uint64_t *)key, other = ((const export_item_t *)item)->seq;
    return (seq > other) - (seq < other);
}

/* Whether the subject index gave the entry at seq already: a queued entry
 * of a case event names the subject and its one delivery, and both
 * indexes find it. Its items are in seq order (the index is read so). */
static int export_read_by_subject(const export_state_t *st, uint64_t seq)
{
    return bsearch(&seq, st->items, st->n_subject_items, sizeof *st->items,
                   export_item_seq_order) != NULL;
}

/* An entry of one of the subject's deliveries (an expiry, a revocation, a
 * set-aside, an ack or queued entry of an older schema), found through
 * the delivery index, which is checked as the subject index is. One the
 * subject index gave is kept once, so that the byte bound counts it once
 * (the document would show it once all the same). */
static int export_add_delivery_entry(const store_audit_entry_t *e, void *arg)
{
    export_state_t *st = arg;
    const store_audit_value_t *delivery = &e->field[STORE_AUDIT_DELIVERY_SEQ];
    if (export_read_by_subject(st, e->seq))
        return 0;
    if (!delivery->present || delivery->number < 0 || (uint64_t)delivery->number != st->delivery)
        return export_add_unreadable(st, e->seq,
                                     "the delivery index names this entry for one of the "
                                     "subject's deliveries, but the entry names another "
                                     "delivery or none: the index was altered (run schakelctl "
                                     "audit verify)") != 0;
    return export_add(e, arg);
}

/* By seq; of two renderings of one entry, the entry before a stand-in
 * (the first of a seq is the one shown). */
static int export_item_order(const void *a, const void *b)
{
    const export_item_t *x = a, *y = b;
    if (x->seq != y->seq)
        return (x->seq > y->seq) - (x->seq < y->seq);
    return (x->marker > y->marker) - (x->marker < y->marker);
}

static void export_free(export_state_t *st)
{
    for (size_t i = 0; i < st->n_items; i++) {
        if (st->items[i].json != NULL) /* what was recorded about the subject */
            sodium_memzero(st->items[i].json, strlen(st->items[i].json));
        free(st->items[i].json);
    }
    free(st->items);
    free(st->deliveries);
    free(st->acked);
}

/* ------------------------------------------------------------------ the export in steps */

enum export_phase { EXPORT_SUBJECT = 0, EXPORT_DELIVERIES, EXPORT_WRITE, EXPORT_DONE };

struct audit_export {
    export_state_t st;
    enum export_phase phase;
    uint64_t cut;         /* the last committed entry when the export began */
    int64_t began_s;      /* the document's "exported_at" */
    size_t next_delivery; /* of st.deliveries, in EXPORT_DELIVERIES */
    size_t next_item;     /* of st.items (sorted), in EXPORT_WRITE */
    size_t count;         /* entries in the document */
    size_t shown;         /* of them written so far */
    text_buf_t doc;       /* the document, allocated whole when the writing begins */
    char pseudonym[SCHAKEL_MAX_SUBJECT_LEN + 1];
    char tag[STORE_SUBJECT_TAG_LEN + 1];
};

audit_export_t *audit_export_begin(store_t *store, const char *pseudonym, int64_t now_s,
                                   size_t max_bytes, char *err, size_t errlen)
{
    if (pseudonym == NULL || !syntax_is_pseudonym(pseudonym) ||
        strlen(pseudonym) > SCHAKEL_MAX_SUBJECT_LEN) {
        snprintf(err, errlen, "not a pseudonym (8..64 of A-Z a-z 0-9 . _ : -, not all digits)");
        return NULL;
    }
    audit_export_t *ex = calloc(1, sizeof *ex);
    if (ex == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    strcpy(ex->pseudonym, pseudonym);
    if (store_subject_tag(store, pseudonym, ex->tag) != 0 ||
        store_audit_committed_seq(store, &ex->cut) != 0) {
        snprintf(err, errlen, "%s", store_errmsg(store));
        audit_export_destroy(&ex);
        return NULL;
    }
    ex->began_s = now_s;
    ex->st.tag = ex->tag;
    ex->st.max_bytes = max_bytes;
    return ex;
}

uint64_t audit_export_cut(const audit_export_t *ex)
{
    return ex->cut;
}

int audit_export_too_large(const audit_export_t *ex)
{
    return ex != NULL && ex->st.too_large;
}

/* The subject's deliveries, each once and in order, once all are known. */
static void export_deliveries_settle(export_state_t *st)
{
    if (st->n_deliveries <= 1)
        return;
    size_t unique = 1;
    qsort(st->deliveries, st->n_deliveries, sizeof *st->deliveries, seq_order);
    for (size_t i = 1; i < st->n_deliveries; i++)
        if (st->deliveries[i] != st->deliveries[unique - 1])
            st->deliveries[unique++] = st->deliveries[i];
    st->n_deliveries = unique;
}

/* Per delivery: its own entries (expired, revoked, a queued entry
 * recorded before schema 7, an ack recorded before schema 6) and the
 * acked entry that lists it, each up to the cut. */
static int export_step_deliveries(audit_export_t *ex, store_t *store, size_t max_deliveries)
{
    export_state_t *st = &ex->st;
    int rc = 0;
    for (size_t n = 0; rc >= 0 && !st->out_of_memory && !st->too_large && n < max_deliveries &&
                       ex->next_delivery < st->n_deliveries;
         n++, ex->next_delivery++) {
        st->delivery = st->deliveries[ex->next_delivery];
        rc = store_audit_scan_delivery(store, st->delivery, ex->cut, export_add_delivery_entry, st);
        if (rc >= 0 && !st->out_of_memory && !st->too_large)
            rc = store_audit_scan_acked(store, st->delivery, ex->cut, export_add_acked, st);
    }
    if (rc >= 0 && ex->next_delivery >= st->n_deliveries)
        ex->phase = EXPORT_WRITE;
    return rc < 0 ? -1 : 0;
}

/* An item not shown twice: of two renderings of one seq, the first. */
static int export_item_shown(const export_state_t *st, size_t i)
{
    return i == 0 || st->items[i].seq != st->items[i - 1].seq;
}

static void export_item_wipe(export_item_t *item)
{
    if (item->json != NULL) /* what was recorded about the subject */
        sodium_memzero(item->json, strlen(item->json));
    free(item->json);
    item->json = NULL;
}

/* The writing begins: the entries in seq order, each once (a delivery's
 * own entry is found both by subject and by delivery seq), counted; the
 * document allocated whole, and its head written. */
static void export_write_begin(audit_export_t *ex)
{
    export_state_t *st = &ex->st;
    text_buf_t head = {0};
    char began[32];
    size_t bytes = 0;
    if (st->n_items > 1)
        qsort(st->items, st->n_items, sizeof *st->items, export_item_order);
    for (size_t i = 0; i < st->n_items; i++)
        if (export_item_shown(st, i)) {
            ex->count++;
            bytes += strlen(st->items[i].json) + 2;
        }
    audit_format_time(ex->began_s, began, sizeof began);
    buf_puts(&head, "{\"subject\":");
    buf_json_string(&head, ex->pseudonym);
    buf_puts(&head, ",\"subject_tag\":");
    buf_json_string(&head, ex->tag);
    buf_puts(&head, ",\"exported_at\":");
    buf_json_string(&head, began);
    buf_printf(&head, ",\"count\":%zu,\"entries\":[", ex->count);
    if (!head.out_of_memory) {
        ex->doc.cap = head.len + bytes + sizeof "\n]}\n";
        ex->doc.data = malloc(ex->doc.cap);
        if (ex->doc.data != NULL) {
            ex->doc.data[0] = '\0';
            buf_put(&ex->doc, head.data, head.len);
        }
    }
    ex->doc.out_of_memory = head.out_of_memory || ex->doc.data == NULL;
    char *wiped = buf_take(&head);
    if (wiped != NULL)
        sodium_memzero(wiped, strlen(wiped));
    free(wiped);
}

/* Up to max_bytes of the entries onto the document (at least one), each
 * rendering wiped and freed once written. */
static void export_write_step(audit_export_t *ex, size_t max_bytes)
{
    export_state_t *st = &ex->st;
    if (ex->doc.data == NULL && !ex->doc.out_of_memory)
        export_write_begin(ex);
    size_t written = 0;
    while (!ex->doc.out_of_memory && ex->next_item < st->n_items && written < max_bytes) {
        size_t i = ex->next_item++;
        if (export_item_shown(st, i)) {
            size_t len = strlen(st->items[i].json);
            buf_puts(&ex->doc, ex->shown++ ? ",\n" : "\n");
            buf_put(&ex->doc, st->items[i].json, len);
            written += len;
        }
        export_item_wipe(&st->items[i]);
    }
    if (!ex->doc.out_of_memory && ex->next_item >= st->n_items) {
        buf_puts(&ex->doc, "\n]}\n");
        ex->phase = EXPORT_DONE;
    }
    st->out_of_memory |= ex->doc.out_of_memory;
}

int audit_export_step(audit_export_t *ex, store_t *store, const audit_export_bounds_t *bounds,
                      char *err, size_t errlen)
{
    static const audit_export_bounds_t unbounded = {SIZE_MAX, SIZE_MAX, SIZE_MAX};
    export_state_t *st = &ex->st;
    int rc = 0;
    if (bounds == NULL)
        bounds = &unbounded;
    if (ex->phase == EXPORT_SUBJECT) {
        rc = store_audit_scan_subject(store, ex->tag, st->last_seq, ex->cut, bounds->entries,
                                      export_add_subject_entry, st);
        if (rc >= 0 && (size_t)rc < bounds->entries) {
            st->n_subject_items = st->n_items;
            export_deliveries_settle(st);
            ex->phase = EXPORT_DELIVERIES;
        }
    } else if (ex->phase == EXPORT_DELIVERIES) {
        rc = export_step_deliveries(ex, store, bounds->deliveries);
    } else if (ex->phase == EXPORT_WRITE) {
        export_write_step(ex, bounds->bytes);
    }
    if (rc < 0 || st->out_of_memory || st->too_large) {
        if (st->too_large)
            snprintf(err, errlen, "the export would be larger than %zu bytes", st->max_bytes);
        else
            snprintf(err, errlen, "%s", rc < 0 ? store_errmsg(store) : "out of memory");
        return -1;
    }
    return ex->phase == EXPORT_DONE;
}

char *audit_export_document(audit_export_t *ex, size_t *count)
{
    if (ex->phase != EXPORT_DONE || ex->doc.data == NULL)
        return NULL;
    char *doc = ex->doc.data;
    memset(&ex->doc, 0, sizeof ex->doc);
    if (count != NULL)
        *count = ex->count;
    return doc;
}

void audit_export_destroy(audit_export_t **exp)
{
    if (exp == NULL || *exp == NULL)
        return;
    audit_export_t *ex = *exp;
    export_free(&ex->st);
    if (ex->doc.data != NULL)
        sodium_memzero(ex->doc.data, ex->doc.cap);
    free(ex->doc.data);
    sodium_memzero(ex, sizeof *ex); /* the pseudonym and its tag */
    free(ex);
    *exp = NULL;
}

int audit_subject_export(store_t *store, const char *pseudonym, int64_t now_s, char **json_out,
                         char *err, size_t errlen)
{
    if (json_out == NULL) {
        snprintf(err, errlen, "no place for the export");
        return -1;
    }
    *json_out = NULL;
    audit_export_t *ex = audit_export_begin(store, pseudonym, now_s, 0, err, errlen);
    int rc = ex != NULL ? 0 : -1;
    while (rc == 0)
        rc = audit_export_step(ex, store, NULL, err, errlen);
    if (rc == 1)
        *json_out = audit_export_document(ex, NULL);
    audit_export_destroy(&ex);
    return *json_out != NULL ? 0 : -1;
}
