/*
 * audit.c — the audit trail's chain (see audit.h): entries and their
 * canonical encoding, BLAKE2b chaining on append, Ed25519 checkpoints, and
 * the check of the tail at start. audit_verify.c verifies a whole trail,
 * audit_render.c renders entries and the data-subject export. Trusts the
 * store for rows and nothing in them: the tail check recomputes every hash
 * and checks the signature. Errors are -1 with the store's message (or
 * err) filled.
 */
#include "audit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "schakel_limits.h"
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
    /* floor_s may be any value (a damaged entry): compared first, so that
     * the difference cannot overflow */
    if (!accept_clock && floor_s > wall_s && floor_s - wall_s > WALLCLOCK_BEHIND_S) {
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
