/*
 * store_seal.c — bodies sealed at rest (items, deliveries, case titles and
 * case events): the store key in guarded memory, the associated data that
 * binds a ciphertext to its row, sealing and opening, the key check, the
 * audit trail's subject key and tags, and store_rekey (store.h). Trusts
 * nothing read from the file: a body is handed out only once its tag
 * verifies. Errors are -1 with store_errmsg set, as everywhere in the store.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"
#include "store_mailbox.h"

/* A sealed body: nonce || ciphertext || tag. */
#define STORE_NONCE_BYTES crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define STORE_SEAL_OVERHEAD (STORE_NONCE_BYTES + crypto_aead_xchacha20poly1305_ietf_ABYTES)
_Static_assert(STORE_KEY_BYTES == crypto_aead_xchacha20poly1305_ietf_KEYBYTES,
               "the store key is an XChaCha20-Poly1305 key");

/* Associated data (store.h documents the layout). Each domain tag ends in
 * its NUL, so no tag is a prefix of another's data. The recipient is the
 * last field, so its length needs no prefix. */
static const char ad_item_tag[] = "schakel-store-item-v1";
/* Deliveries since schema 9: the envelope bound too. New tags, so that a
 * body sealed under one layout can never open under the other. */
static const char ad_delivery_tag[] = "schakel-store-delivery-v2";
/* A delivery by reference: its sealed body is the 4-byte field mask. */
static const char ad_delivery_ref_tag[] = "schakel-store-delivery-ref-v2";
static const char ad_case_delivery_tag[] = "schakel-store-case-delivery-v2";
/* Deliveries up to schema 8, read only by the migration. */
static const char ad_delivery_v1_tag[] = "schakel-store-delivery-v1";
static const char ad_delivery_ref_v1_tag[] = "schakel-store-delivery-ref-v1";
static const char ad_case_delivery_v1_tag[] = "schakel-store-case-delivery-v1";
static const char ad_case_tag[] = "schakel-store-case-v1";
static const char ad_case_event_tag[] = "schakel-store-case-event-v1";
static const char ad_keycheck_tag[] = "schakel-store-keycheck";
static const char ad_subject_key_tag[] = "schakel-store-audit-subject-key";
/* A publish's evidence: its signed root and signature, sealed; bound to the
 * message id and the sender (last). */
static const char ad_evidence_tag[] = "schakel-store-publish-evidence-v1";
/* Prefix of a publish's content tag: BLAKE2b-256 keyed with the subject
 * key over this (with its NUL) and the content hash. */
static const char content_tag_domain[] = "schakel-store-content-v1";
/* Prefix of a subject tag's input: BLAKE2b-256 keyed with the subject key
 * over this (with its NUL) and the pseudonym. */
static const char subject_tag_domain[] = "schakel-audit-subject-v1";
/* The longest delivery layout without its recipient. */
#define AD_CASE_DELIVERY_HEAD                                                                      \
    (sizeof ad_case_delivery_tag + 8 + 8 + 1 + SCHAKEL_CASE_ID_LEN + STORE_SEAL_ENVELOPE_BYTES)
_Static_assert(STORE_SEAL_AD_MAX == AD_CASE_DELIVERY_HEAD + SCHAKEL_MAX_PRINCIPAL_LEN,
               "store_seal_ad_t holds the longest associated data");
_Static_assert(
    AD_CASE_DELIVERY_HEAD >= sizeof ad_delivery_tag + 8 + 8 + STORE_SEAL_ENVELOPE_BYTES &&
        AD_CASE_DELIVERY_HEAD >= sizeof ad_delivery_ref_tag + 8 + 8 + STORE_SEAL_ENVELOPE_BYTES &&
        AD_CASE_DELIVERY_HEAD >= sizeof ad_case_delivery_v1_tag + 8 + 8 + 1 + SCHAKEL_CASE_ID_LEN &&
        AD_CASE_DELIVERY_HEAD >= sizeof ad_delivery_ref_v1_tag + 8 + 8 &&
        STORE_SEAL_AD_MAX >= sizeof ad_case_event_tag + SCHAKEL_CASE_ID_LEN + 8 &&
        STORE_SEAL_AD_MAX >= sizeof ad_evidence_tag + 16 + SCHAKEL_MAX_PRINCIPAL_LEN,
    "the case delivery layout is the longest");

/* The key check: this text, sealed under the store key at creation. */
static const char keycheck_text[] = "schakel store key check, version 1";

/* An empty body is sealed from here: libsodium is never handed NULL. */
static const uint8_t empty_bytes[1];

/* ------------------------------------------------------------------ key memory */

/* Long-term secrets live in guarded, locked pages; sanitizer builds use
 * plain allocation, which ASan understands. */
static uint8_t *secret_alloc(size_t len)
{
#ifdef SCHAKEL_PLAIN_ALLOC
    return malloc(len);
#else
    return sodium_malloc(len);
#endif
}

static void secret_free(uint8_t *secret, size_t len)
{
    if (secret == NULL)
        return;
#ifdef SCHAKEL_PLAIN_ALLOC
    sodium_memzero(secret, len);
    free(secret);
#else
    (void)len;
    sodium_free(secret); /* wipes before freeing */
#endif
}

uint8_t *store_seal_key_new(const uint8_t key[STORE_KEY_BYTES])
{
    uint8_t *copy = secret_alloc(STORE_KEY_BYTES);
    if (copy != NULL)
        memcpy(copy, key, STORE_KEY_BYTES);
    return copy;
}

/* Make room for len bytes. The old contents are wiped, not copied: every
 * user overwrites the buffer whole. */
int store_scratch_reserve(store_scratch_t *s, size_t len)
{
    if (len <= s->cap && s->bytes != NULL)
        return 0;
    uint8_t *bigger = malloc(len > 0 ? len : 1);
    if (bigger == NULL)
        return -1;
    if (s->bytes != NULL) {
        sodium_memzero(s->bytes, s->cap);
        free(s->bytes);
    }
    s->bytes = bigger;
    s->cap = len > 0 ? len : 1;
    return 0;
}

static void scratch_free(store_scratch_t *s)
{
    if (s->bytes != NULL)
        sodium_memzero(s->bytes, s->cap);
    free(s->bytes);
    s->bytes = NULL;
    s->cap = 0;
}

void store_seal_free(store_t *store)
{
    secret_free(store->seal_key, STORE_KEY_BYTES);
    store->seal_key = NULL;
    secret_free(store->subject_key, STORE_KEY_BYTES);
    store->subject_key = NULL;
    scratch_free(&store->sealed);
    scratch_free(&store->opened);
    scratch_free(&store->case_row);
}

/* ------------------------------------------------------------------ associated data */

static void ad_put(store_seal_ad_t *ad, const void *bytes, size_t len)
{
    memcpy(ad->bytes + ad->len, bytes, len);
    ad->len += len;
}

static void ad_put_be(store_seal_ad_t *ad, uint64_t value, size_t width)
{
    for (size_t i = 0; i < width; i++)
        ad->bytes[ad->len + i] = (uint8_t)(value >> (8 * (width - 1 - i)));
    ad->len += width;
}

void store_seal_ad_item(store_seal_ad_t *ad, int64_t seq, int64_t publish_id, uint32_t item_index)
{
    ad->len = 0;
    ad_put(ad, ad_item_tag, sizeof ad_item_tag);
    ad_put_be(ad, (uint64_t)seq, 8);
    ad_put_be(ad, (uint64_t)publish_id, 8);
    ad_put_be(ad, item_index, 4);
}

/* A case id has a fixed length, so fields after it need no prefix. */
static int case_id_fits(const char *case_id)
{
    return case_id != NULL && strlen(case_id) == SCHAKEL_CASE_ID_LEN;
}

/* The tags of a delivery's layouts: by reference, a signal's body, a
 * case's. */
static const char *const ad_delivery_tags_v1[3] = {ad_delivery_ref_v1_tag, ad_delivery_v1_tag,
                                                   ad_case_delivery_v1_tag};
static const char *const ad_delivery_tags[3] = {ad_delivery_ref_tag, ad_delivery_tag,
                                                ad_case_delivery_tag};

/* A delivery's associated data in either layout: its tag (with its NUL),
 * seq, item seq, for a case whether it is an event and the case id, the
 * envelope's digest (NULL: the layout before schema 9 has none), and the
 * recipient last. */
static int ad_delivery(store_seal_ad_t *ad, int64_t seq, const store_delivery_t *d,
                       const char *const tags[3], const uint8_t *envelope)
{
    size_t recipient_len = strlen(d->recipient);
    if (recipient_len > SCHAKEL_MAX_PRINCIPAL_LEN ||
        (d->case_id != NULL && !case_id_fits(d->case_id)) || (d->by_ref && d->case_id != NULL))
        return -1;
    const char *tag = d->by_ref ? tags[0] : d->case_id == NULL ? tags[1] : tags[2];
    ad->len = 0;
    ad_put(ad, tag, strlen(tag) + 1);
    ad_put_be(ad, (uint64_t)seq, 8);
    ad_put_be(ad, d->item_seq, 8);
    if (d->case_id != NULL) {
        ad_put_be(ad, d->is_case_event ? 1u : 0u, 1);
        ad_put(ad, d->case_id, SCHAKEL_CASE_ID_LEN);
    }
    if (envelope != NULL)
        ad_put(ad, envelope, STORE_SEAL_ENVELOPE_BYTES);
    ad_put(ad, d->recipient, recipient_len);
    return 0;
}

int store_seal_ad_delivery_v1(store_seal_ad_t *ad, int64_t seq, const store_delivery_t *d)
{
    return ad_delivery(ad, seq, d, ad_delivery_tags_v1, NULL);
}

/* One text of the envelope: its length (4 bytes), then its bytes. */
static int envelope_text(crypto_generichash_state *state, const char *text)
{
    size_t len = strlen(text);
    if (len > UINT32_MAX)
        return -1;
    uint8_t prefix[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                         (uint8_t)len};
    crypto_generichash_update(state, prefix, sizeof prefix);
    crypto_generichash_update(state, (const uint8_t *)text, len);
    return 0;
}

static void envelope_int(crypto_generichash_state *state, uint64_t value, size_t width)
{
    uint8_t bytes[8];
    for (size_t i = 0; i < width; i++)
        bytes[i] = (uint8_t)(value >> (8 * (width - 1 - i)));
    crypto_generichash_update(state, bytes, width);
}

/* The digest of the envelope a delivery is sent with, in a fixed order,
 * each text with its length and each integer at a fixed width, so that no
 * two envelopes encode alike (store.h). */
static int envelope_digest(const store_delivery_t *d, uint8_t digest[STORE_SEAL_ENVELOPE_BYTES])
{
    crypto_generichash_state state;
    crypto_generichash_init(&state, NULL, 0, STORE_SEAL_ENVELOPE_BYTES);
    int failed =
        envelope_text(&state, d->sender) != 0 || envelope_text(&state, d->sender_partner) != 0;
    crypto_generichash_update(&state, d->message_id, 16);
    envelope_int(&state, d->item_index, 4);
    envelope_int(&state, (uint64_t)d->accepted_at, 8);
    failed = failed || envelope_text(&state, d->rule_id) != 0 ||
             envelope_text(&state, d->rule_hash) != 0 || envelope_text(&state, d->purpose) != 0 ||
             envelope_text(&state, d->legal_basis) != 0;
    envelope_int(&state, (uint64_t)d->expires_at, 8);
    crypto_generichash_final(&state, digest, STORE_SEAL_ENVELOPE_BYTES);
    return failed ? -1 : 0;
}

/* A signal's delivery and one by reference have tags of their own, so a
 * row cannot switch between a body and a field mask unnoticed; a case's
 * delivery also binds its case and whether it is an event, so a row cannot
 * be moved into another case or turned into a signal unnoticed; each binds
 * the envelope the recipient is told, so none of it can be changed
 * unnoticed while the delivery waits. */
int store_seal_ad_delivery(store_seal_ad_t *ad, int64_t seq, const store_delivery_t *d)
{
    uint8_t envelope[STORE_SEAL_ENVELOPE_BYTES];
    if (envelope_digest(d, envelope) != 0)
        return -1;
    return ad_delivery(ad, seq, d, ad_delivery_tags, envelope);
}

int store_seal_ad_case(store_seal_ad_t *ad, const char *case_id)
{
    if (!case_id_fits(case_id))
        return -1;
    ad->len = 0;
    ad_put(ad, ad_case_tag, sizeof ad_case_tag);
    ad_put(ad, case_id, SCHAKEL_CASE_ID_LEN);
    return 0;
}

int store_seal_ad_case_event(store_seal_ad_t *ad, const char *case_id, uint64_t event_seq)
{
    if (!case_id_fits(case_id))
        return -1;
    ad->len = 0;
    ad_put(ad, ad_case_event_tag, sizeof ad_case_event_tag);
    ad_put(ad, case_id, SCHAKEL_CASE_ID_LEN);
    ad_put_be(ad, event_seq, 8);
    return 0;
}

int store_seal_ad_evidence(store_seal_ad_t *ad, const uint8_t message_id[16], const char *sender)
{
    size_t sender_len = strlen(sender);
    if (sender_len > SCHAKEL_MAX_PRINCIPAL_LEN)
        return -1;
    ad->len = 0;
    ad_put(ad, ad_evidence_tag, sizeof ad_evidence_tag);
    ad_put(ad, message_id, 16);
    ad_put(ad, sender, sender_len);
    return 0;
}

static void ad_keycheck(store_seal_ad_t *ad)
{
    ad->len = 0;
    ad_put(ad, ad_keycheck_tag, sizeof ad_keycheck_tag);
}

/* ------------------------------------------------------------------ seal and open */

/* A fresh nonce: a 64-bit counter, then 128 random bits drawn once per
 * store handle. Unique for as long as random 128-bit draws do not collide
 * (never, in practice), like a random 192-bit nonce, without a getrandom
 * call per body. The random part is the same in every body one handle
 * seals (it tells that two rows were written by the same run of the
 * broker, as their seqs do); the counter comes first, so that no aligned
 * 16 bytes of a sealed body repeat those of another. */
static void next_nonce(store_t *store, uint8_t nonce[STORE_NONCE_BYTES])
{
    _Static_assert(STORE_NONCE_BYTES == sizeof store->nonce_random + 8, "counter + random part");
    if (store->nonce_counter == 0) {
        randombytes_buf(store->nonce_random, sizeof store->nonce_random);
        store->nonce_counter = 1;
    }
    uint64_t c = store->nonce_counter++;
    for (size_t i = 0; i < 8; i++)
        nonce[i] = (uint8_t)(c >> (8 * i));
    memcpy(nonce + 8, store->nonce_random, sizeof store->nonce_random);
}

/* Seal body into store->sealed under key with a fresh nonce. Returns the
 * sealed length, 0 on failure (a sealed body is never empty). */
static size_t seal_under(store_t *store, const uint8_t *key, const store_seal_ad_t *ad,
                         const uint8_t *body, size_t len)
{
    if (len > SIZE_MAX - STORE_SEAL_OVERHEAD ||
        store_scratch_reserve(&store->sealed, len + STORE_SEAL_OVERHEAD) != 0) {
        store_refuse(store, "seal body", "out of memory");
        return 0;
    }
    uint8_t *nonce = store->sealed.bytes;
    unsigned long long sealed_len = 0;
    next_nonce(store, nonce);
    /* Cannot fail for a message this size (libsodium aborts beyond 256 GiB). */
    (void)crypto_aead_xchacha20poly1305_ietf_encrypt(nonce + STORE_NONCE_BYTES, &sealed_len,
                                                     len > 0 ? body : empty_bytes, len, ad->bytes,
                                                     ad->len, NULL, nonce, key);
    return STORE_NONCE_BYTES + (size_t)sealed_len;
}

/* Open a sealed body into store->opened under the store key. Returns 0;
 * -1 when it does not authenticate (errmsg untouched: the caller names the
 * row); -2 when memory runs out (errmsg set). Nothing is decrypted unless
 * the tag verifies. */
static int body_open(store_t *store, const store_seal_ad_t *ad, const uint8_t *sealed,
                     size_t sealed_len, const uint8_t **body, size_t *len)
{
    if (sealed_len < STORE_SEAL_OVERHEAD)
        return -1;
    if (store_scratch_reserve(&store->opened, sealed_len - STORE_SEAL_OVERHEAD) != 0) {
        store_refuse(store, "open body", "out of memory");
        return -2;
    }
    unsigned long long opened_len = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
            store->opened.bytes, &opened_len, NULL, sealed + STORE_NONCE_BYTES,
            sealed_len - STORE_NONCE_BYTES, ad->bytes, ad->len, sealed, store->seal_key) != 0)
        return -1;
    *body = store->opened.bytes;
    *len = (size_t)opened_len;
    return 0;
}

int store_seal_bind(store_t *store, sqlite3_stmt *stmt, int param, const store_seal_ad_t *ad,
                    const uint8_t *body, size_t len)
{
    size_t sealed_len = seal_under(store, store->seal_key, ad, body, len);
    if (sealed_len == 0)
        return -1;
    return store_bind_bytes(store, stmt, param, store->sealed.bytes, sealed_len);
}

/* The sealed bytes in column col of the row `what` (with its seq, or -1
 * when what names it). The broker writes a blob there: NULL, or an empty
 * value of another type ('' included), is the row's damage, said in
 * errmsg with body_unauthentic set, not a failure of memory; any other
 * value is opened as its bytes, and does not authenticate. NULL with
 * errmsg set when there are none. */
static const uint8_t *column_sealed(store_t *store, sqlite3_stmt *stmt, int col, const char *what,
                                    int64_t seq, size_t *len)
{
    *len = 0;
    int type = sqlite3_column_type(stmt, col);
    if (type == SQLITE_NULL || (type != SQLITE_BLOB && sqlite3_column_bytes(stmt, col) == 0)) {
        store->last_rc = 0;
        if (seq >= 0)
            snprintf(store->errmsg, sizeof store->errmsg,
                     "damaged row: body of %s %lld is missing (not a blob)", what, (long long)seq);
        else
            snprintf(store->errmsg, sizeof store->errmsg,
                     "damaged row: body of %s is missing (not a blob)", what);
        store->body_unauthentic = 1;
        return NULL;
    }
    const uint8_t *sealed = store_column_bytes(stmt, col, len);
    if (sealed == NULL) {
        store_refuse(store, "read body", "out of memory");
        store->body_unauthentic = 0;
    }
    return sealed;
}

/* Read and open the body in column col of the row `what` (item, delivery)
 * with this seq. */
static int column_open(store_t *store, sqlite3_stmt *stmt, int col, const char *what, int64_t seq,
                       const store_seal_ad_t *ad, const uint8_t **body, size_t *len)
{
    size_t sealed_len = 0;
    const uint8_t *sealed = column_sealed(store, stmt, col, what, seq, &sealed_len);
    if (sealed == NULL)
        return -1;
    int rc = body_open(store, ad, sealed, sealed_len, body, len);
    store->body_unauthentic = rc == -1;
    if (rc == -1) {
        store->last_rc = 0;
        snprintf(store->errmsg, sizeof store->errmsg,
                 "body of %s %lld does not authenticate: store key wrong or row tampered", what,
                 (long long)seq);
    }
    return rc == 0 ? 0 : -1;
}

int store_seal_column(store_t *store, sqlite3_stmt *stmt, int col, int64_t seq,
                      const store_seal_ad_t *ad, const uint8_t **body, size_t *len)
{
    return column_open(store, stmt, col, "delivery", seq, ad, body, len);
}

int store_seal_column_named(store_t *store, sqlite3_stmt *stmt, int col, const char *what,
                            const store_seal_ad_t *ad, const uint8_t **body, size_t *len)
{
    size_t sealed_len = 0;
    const uint8_t *sealed = column_sealed(store, stmt, col, what, -1, &sealed_len);
    if (sealed == NULL)
        return -1;
    int rc = body_open(store, ad, sealed, sealed_len, body, len);
    store->body_unauthentic = rc == -1;
    if (rc == -1) {
        store->last_rc = 0;
        snprintf(store->errmsg, sizeof store->errmsg,
                 "body of %s does not authenticate: store key wrong or row tampered", what);
    }
    return rc == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------ the key check */

/* The sealed key check, read in the open schema transaction. *found = 0 when
 * the store has none yet. */
static int keycheck_read(store_t *store, uint8_t *sealed, size_t cap, size_t *len, int *found)
{
    sqlite3_stmt *stmt = NULL;
    *found = 0;
    if (sqlite3_prepare_v2(store->db, "SELECT value FROM meta WHERE name = 'keycheck'", -1, &stmt,
                           NULL) != SQLITE_OK) {
        store_fail(store, "read the key check");
        return -1;
    }
    int rc = sqlite3_step(stmt), result = 0;
    if (rc == SQLITE_ROW) {
        const uint8_t *value = store_column_bytes(stmt, 0, len);
        if (value == NULL || *len > cap) {
            store_refuse(store, "read the key check", "damaged");
            result = -1;
        } else {
            memcpy(sealed, value, *len);
            *found = 1;
        }
    } else if (rc != SQLITE_DONE) {
        store_fail(store, "read the key check");
        result = -1;
    }
    (void)sqlite3_finalize(stmt); /* repeats the step's code, handled above */
    return result;
}

/* Seal plain under key and the associated data ad, and store it as ?1
 * of sql (an INSERT for a new store, an UPDATE when rekeying), which must
 * change exactly one row: else refused as missing ("the store has no
 * ..."). 0 or -1. */
static int meta_write_sealed(store_t *store, const uint8_t *key, const store_seal_ad_t *ad,
                             const uint8_t *plain, size_t plain_len, const char *sql,
                             const char *what, const char *missing)
{
    sqlite3_stmt *stmt = NULL;
    size_t sealed_len = seal_under(store, key, ad, plain, plain_len);
    if (sealed_len == 0)
        return -1;
    if (sqlite3_prepare_v2(store->db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        store_fail(store, what);
        return -1;
    }
    int result = store_bind_bytes(store, stmt, 1, store->sealed.bytes, sealed_len);
    if (result == 0 && sqlite3_step(stmt) != SQLITE_DONE) {
        store_fail(store, what);
        result = -1;
    }
    if (result == 0 && sqlite3_changes(store->db) != 1) {
        store_refuse(store, what, missing);
        result = -1;
    }
    (void)sqlite3_finalize(stmt);
    return result;
}

/* Seal the key check under key and store it with sql (see
 * meta_write_sealed). */
static int keycheck_write(store_t *store, const uint8_t *key, const char *sql, const char *what)
{
    store_seal_ad_t ad;
    ad_keycheck(&ad);
    return meta_write_sealed(store, key, &ad, (const uint8_t *)keycheck_text, sizeof keycheck_text,
                             sql, what, "the store has no key check");
}

/* A store remembers the key it was created with as a sealed known text: a
 * wrong key file is found at start-up, not at the first delivery. */
int store_seal_keycheck(store_t *store)
{
    uint8_t sealed[sizeof keycheck_text + STORE_SEAL_OVERHEAD];
    size_t sealed_len = 0;
    int found = 0;
    store_seal_ad_t ad;
    ad_keycheck(&ad);
    if (keycheck_read(store, sealed, sizeof sealed, &sealed_len, &found) != 0)
        return -1;
    if (!found)
        return keycheck_write(store, store->seal_key,
                              "INSERT INTO meta (name, value) VALUES ('keycheck', ?1)",
                              "write the key check");
    const uint8_t *text = NULL;
    size_t text_len = 0;
    int ok = body_open(store, &ad, sealed, sealed_len, &text, &text_len) == 0 &&
             text_len == sizeof keycheck_text &&
             sodium_memcmp(text, keycheck_text, sizeof keycheck_text) == 0;
    if (!ok) {
        store_refuse(store, "store key",
                     "the store key does not open this store (wrong store key file?)");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ the subject key */

/*
 * The audit trail records a data subject as a tag: BLAKE2b-256 keyed with
 * this store's subject key over subject_tag_domain and the pseudonym. The
 * pseudonym is sealed content (it must not be on disk in clear), the tag
 * is not reversible without the key, and equal pseudonyms give equal tags,
 * so the subject index still finds them. The key is 32 random bytes made
 * once per store and kept in meta sealed under the store key; a rekey
 * re-seals it, so tags written before a rotation still match after it.
 */

static void ad_subject_key(store_seal_ad_t *ad)
{
    ad->len = 0;
    ad_put(ad, ad_subject_key_tag, sizeof ad_subject_key_tag);
}

/* Seal store->subject_key under key and store it with sql (one row). */
static int subject_key_write(store_t *store, const uint8_t *key, const char *sql, const char *what)
{
    store_seal_ad_t ad;
    ad_subject_key(&ad);
    return meta_write_sealed(store, key, &ad, store->subject_key, STORE_KEY_BYTES, sql, what,
                             "the store has no audit subject key");
}

/* Open the sealed subject key of the current row into store->subject_key. */
static int subject_key_open(store_t *store, sqlite3_stmt *stmt)
{
    size_t sealed_len = 0, len = 0;
    const uint8_t *sealed = store_column_bytes(stmt, 0, &sealed_len), *key = NULL;
    store_seal_ad_t ad;
    ad_subject_key(&ad);
    if (sealed == NULL || body_open(store, &ad, sealed, sealed_len, &key, &len) != 0 ||
        len != STORE_KEY_BYTES) {
        store_refuse(store, "audit subject key", "damaged, or sealed under another key");
        return -1;
    }
    memcpy(store->subject_key, key, STORE_KEY_BYTES);
    sodium_memzero(store->opened.bytes, len);
    return 0;
}

int store_seal_subject_key(store_t *store, int create)
{
    sqlite3_stmt *stmt = NULL;
    if (store->subject_key == NULL &&
        (store->subject_key = secret_alloc(STORE_KEY_BYTES)) == NULL) {
        store_refuse(store, "audit subject key", "out of memory");
        return -1;
    }
    if (sqlite3_prepare_v2(store->db, "SELECT value FROM meta WHERE name = 'audit_subject_key'", -1,
                           &stmt, NULL) != SQLITE_OK) {
        store_fail(store, "read the audit subject key");
        return -1;
    }
    int rc = sqlite3_step(stmt), result = -1;
    if (rc == SQLITE_ROW)
        result = subject_key_open(store, stmt);
    else if (rc != SQLITE_DONE)
        store_fail(store, "read the audit subject key");
    (void)sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE)
        return result;
    if (!create) {
        store_refuse(store, "audit subject key", "this store has none yet (let schakeld open it)");
        return -1;
    }
    randombytes_buf(store->subject_key, STORE_KEY_BYTES);
    return subject_key_write(store, store->seal_key,
                             "INSERT INTO meta (name, value) VALUES ('audit_subject_key', ?1)",
                             "write the audit subject key");
}

int store_subject_tag(store_t *store, const char *pseudonym, char tag[STORE_SUBJECT_TAG_LEN + 1])
{
    uint8_t digest[32];
    crypto_generichash_state state;
    if (store == NULL || pseudonym == NULL || store->subject_key == NULL) {
        if (store != NULL)
            store_refuse(store, "audit subject tag",
                         pseudonym == NULL ? "no pseudonym" : "needs the store key");
        return -1;
    }
    crypto_generichash_init(&state, store->subject_key, STORE_KEY_BYTES, sizeof digest);
    crypto_generichash_update(&state, (const uint8_t *)subject_tag_domain,
                              sizeof subject_tag_domain);
    crypto_generichash_update(&state, (const uint8_t *)pseudonym, strlen(pseudonym));
    crypto_generichash_final(&state, digest, sizeof digest);
    sodium_bin2hex(tag, STORE_SUBJECT_TAG_LEN + 1, digest, sizeof digest);
    return 0;
}

int store_content_tag(store_t *store, const uint8_t hash[32], uint8_t tag[32])
{
    if (store->subject_key == NULL) {
        store_refuse(store, "content tag", "needs the store key");
        return -1;
    }
    crypto_generichash_state state;
    crypto_generichash_init(&state, store->subject_key, STORE_KEY_BYTES, 32);
    crypto_generichash_update(&state, (const uint8_t *)content_tag_domain,
                              sizeof content_tag_domain);
    crypto_generichash_update(&state, hash, 32);
    crypto_generichash_final(&state, tag, 32);
    return 0;
}

/* ------------------------------------------------------------------ deliveries re-sealed */

int store_seal_reseal(store_t *store, sqlite3_stmt *row, int col, const char *what, int64_t seq,
                      const store_seal_ad_t *from, const store_seal_ad_t *to, sqlite3_stmt *update,
                      int param)
{
    size_t sealed_len = 0, len = 0;
    const uint8_t *sealed = column_sealed(store, row, col, what, seq, &sealed_len), *body = NULL;
    if (sealed == NULL)
        return store->body_unauthentic ? 1 : -1;
    int rc = body_open(store, from, sealed, sealed_len, &body, &len);
    if (rc == -1) {
        store->last_rc = 0;
        snprintf(store->errmsg, sizeof store->errmsg,
                 "body of %s %lld does not authenticate: store key wrong or row tampered", what,
                 (long long)seq);
        return 1;
    }
    if (rc != 0)
        return -1;
    sealed_len = seal_under(store, store->seal_key, to, body, len);
    sodium_memzero(store->opened.bytes, len);
    if (sealed_len == 0)
        return -1;
    return store_bind_bytes(store, update, param, store->sealed.bytes, sealed_len);
}

/* ------------------------------------------------------------------ rekeying */

/* One table of sealed bodies, walked once per rekey: the next row after a
 * seq, with the columns its associated data names (body last), and the
 * rewrite of one body. Rare, so prepared per rekey and not kept. */
typedef struct rekey_table {
    const char *what; /* in error texts: "item", "delivery" */
    const char *next_sql;
    const char *update_sql;
    int body_col;
    /* The associated data of the current row; -1 for a damaged row. */
    int (*row_ad)(sqlite3_stmt *row, store_seal_ad_t *ad);
} rekey_table_t;

static int rekey_item_ad(sqlite3_stmt *row, store_seal_ad_t *ad)
{
    int64_t item_index = sqlite3_column_int64(row, 2);
    if (item_index < 0 || item_index > UINT32_MAX)
        return -1;
    store_seal_ad_item(ad, sqlite3_column_int64(row, 0), sqlite3_column_int64(row, 1),
                       (uint32_t)item_index);
    return 0;
}


static int rekey_case_ad(sqlite3_stmt *row, store_seal_ad_t *ad)
{
    return store_seal_ad_case(ad, store_column_text(row, 1));
}

static int rekey_case_event_ad(sqlite3_stmt *row, store_seal_ad_t *ad)
{
    int64_t event_seq = sqlite3_column_int64(row, 2);
    if (event_seq <= 0)
        return -1;
    return store_seal_ad_case_event(ad, store_column_text(row, 1), (uint64_t)event_seq);
}

static int rekey_evidence_ad(sqlite3_stmt *row, store_seal_ad_t *ad)
{
    size_t id_len = 0;
    const uint8_t *message_id = store_column_bytes(row, 1, &id_len);
    const char *sender = store_column_text(row, 2);
    if (message_id == NULL || id_len != 16 || sender == NULL)
        return -1;
    return store_seal_ad_evidence(ad, message_id, sender);
}

static const rekey_table_t rekey_tables[] = {
    {"item",
     "SELECT seq, publish_id, item_index, body FROM items WHERE seq > ?1 ORDER BY seq LIMIT 1",
     "UPDATE items SET body = ?2 WHERE seq = ?1", 3, rekey_item_ad},
    /* Not counted in store_rekey_counts_t (which names items and
     * mailbox rows only), re-sealed all the same. The mailbox rows are
     * store_mailbox_rekey's, after these. */
    {"case title", "SELECT num, case_id, title FROM cases WHERE num > ?1 ORDER BY num LIMIT 1",
     "UPDATE cases SET title = ?2 WHERE num = ?1", 2, rekey_case_ad},
    {"case event",
     "SELECT id, case_id, event_seq, body FROM case_events WHERE id > ?1 ORDER BY id LIMIT 1",
     "UPDATE case_events SET body = ?2 WHERE id = ?1", 3, rekey_case_event_ad},
    {"publish evidence",
     "SELECT id, message_id, sender, evidence FROM publishes WHERE id > ?1 ORDER BY id LIMIT 1",
     "UPDATE publishes SET evidence = ?2 WHERE id = ?1", 3, rekey_evidence_ad},
};
#define REKEY_TABLES (sizeof rekey_tables / sizeof rekey_tables[0])

/* Open the body of the first row after *after_seq under the store key, into
 * store->opened, and set *after_seq to its seq. 1 when a row was opened, 0
 * when none is left, -1 on error. The statement is reset before returning:
 * no SELECT is pending while the table is rewritten (SQLite leaves parts
 * of that case undefined). */
static int rekey_open_next(store_t *store, const rekey_table_t *t, sqlite3_stmt *next,
                           int64_t *after_seq, store_seal_ad_t *ad, size_t *len)
{
    if (store_bind_int64(store, next, 1, *after_seq) != 0) {
        store_stmt_finish(next);
        return -1;
    }
    int rc = sqlite3_step(next), result = -1;
    const uint8_t *body = NULL;
    int64_t seq = rc == SQLITE_ROW ? sqlite3_column_int64(next, 0) : 0;
    if (rc == SQLITE_DONE) {
        result = 0;
    } else if (rc != SQLITE_ROW) {
        store_fail(store, "rekey: read");
    } else if (t->row_ad(next, ad) != 0) {
        store->last_rc = 0;
        snprintf(store->errmsg, sizeof store->errmsg, "rekey: %s %lld: damaged row", t->what,
                 (long long)seq);
    } else if (column_open(store, next, t->body_col, t->what, seq, ad, &body, len) == 0) {
        *after_seq = seq;
        result = 1;
    }
    store_stmt_finish(next);
    return result;
}

/* Re-seal every body of one table: each opened under the store key and
 * sealed under new_key with a fresh nonce and the same associated data.
 * Returns the number of rows, or -1. Memory: one row at a time, however
 * many there are; cost O(n log n), one index descent per row. */
static int64_t rekey_table(store_t *store, const rekey_table_t *t, const uint8_t *new_key)
{
    sqlite3_stmt *next = NULL, *update = NULL;
    int64_t count = 0, after_seq = 0;
    if (sqlite3_prepare_v2(store->db, t->next_sql, -1, &next, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(store->db, t->update_sql, -1, &update, NULL) != SQLITE_OK) {
        store_fail(store, "rekey: prepare");
        count = -1;
    }
    while (count >= 0) {
        store_seal_ad_t ad;
        size_t len = 0;
        int found = rekey_open_next(store, t, next, &after_seq, &ad, &len);
        if (found <= 0) {
            count = found < 0 ? -1 : count;
            break;
        }
        size_t sealed_len = seal_under(store, new_key, &ad, store->opened.bytes, len);
        sodium_memzero(store->opened.bytes, len); /* the plaintext is needed no longer */
        if (sealed_len == 0 || store_bind_int64(store, update, 1, after_seq) != 0 ||
            store_bind_bytes(store, update, 2, store->sealed.bytes, sealed_len) != 0 ||
            store_stmt_run(store, update, "rekey: rewrite body") != 0) {
            store_stmt_finish(update);
            count = -1;
        } else {
            count++;
        }
    }
    (void)sqlite3_finalize(update); /* NULL-safe; repeats codes handled above */
    (void)sqlite3_finalize(next);
    return count;
}

/* The whole rekey as one transaction. BEGIN EXCLUSIVE under
 * locking_mode=EXCLUSIVE takes an exclusive lock on the database file,
 * which SQLite cannot get while another connection has the store open in
 * WAL mode (each holds a shared lock on it while open): a running broker
 * makes the rekey fail with "database is locked" after the busy timeout,
 * and a broker started meanwhile cannot open the store until it is done.
 *
 * One transaction, so the store is never under two keys, which the single
 * key check could not describe. Its cost: every sealed page is written to
 * the WAL before the commit, so a very large store needs about its own size
 * in free disk and holds the lock for the whole pass; acceptable for an
 * operation run with the broker stopped, and a failure anywhere leaves the
 * store exactly as it was. */
static int rekey_transaction(store_t *store, const uint8_t *new_key, store_rekey_counts_t *counts,
                             store_rekey_record_fn record, void *arg)
{
    int64_t done[REKEY_TABLES] = {0};
    if (store_exec_fixed(store, "BEGIN EXCLUSIVE", "rekey: lock the store") != 0) {
        if ((store->last_rc & 0xff) == SQLITE_BUSY) {
            store_refuse(store, "rekey", "the store is open elsewhere (stop schakeld first)");
            store->last_rc = SQLITE_BUSY; /* passes once the other one has closed it */
        }
        return -1;
    }
    /* one of ours, as store_begin opens it: the record's audit entry goes in it */
    store->txn_open = 1;
    store->txn_serial++;
    int failed = 0;
    store_rekey_counts_t rows = {0, 0};
    for (size_t i = 0; i < REKEY_TABLES && !failed; i++)
        failed = (done[i] = rekey_table(store, &rekey_tables[i], new_key)) < 0;
    if (!failed)
        failed = store_mailbox_rekey(store, new_key, &rows) != 0;
    if (!failed)
        failed =
            keycheck_write(store, new_key, "UPDATE meta SET value = ?1 WHERE name = 'keycheck'",
                           "rekey: rewrite the key check") != 0;
    if (!failed && store->subject_key != NULL)
        failed = subject_key_write(store, new_key,
                                   "UPDATE meta SET value = ?1 WHERE name = 'audit_subject_key'",
                                   "rekey: rewrite the audit subject key") != 0;
    if (!failed && record != NULL) {
        store_rekey_counts_t so_far = {(uint64_t)done[0], rows.mailbox_rows};
        failed = record(store, &so_far, arg) != 0;
    }
    if (!failed && sqlite3_get_autocommit(store->db)) {
        store_refuse(store, "rekey", "the transaction was rolled back after a storage error");
        failed = 1;
    }
    if (!failed)
        failed = store_exec_fixed(store, "COMMIT", "rekey: commit") != 0;
    store->txn_open = 0;
    if (!failed && store_wal_sync(store) != 0)
        return -2; /* committed under the new key, but not known to be on disk */
    if (failed) {
        if (!sqlite3_get_autocommit(store->db))
            (void)sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL); /* error already kept */
        return -1;
    }
    counts->items = (uint64_t)done[0];
    counts->mailbox_rows = rows.mailbox_rows;
    return 0;
}

int store_rekey(store_t *store, const uint8_t new_key[STORE_KEY_BYTES],
                store_rekey_counts_t *counts)
{
    return store_rekey_recorded(store, new_key, counts, NULL, NULL);
}

int store_rekey_recorded(store_t *store, const uint8_t new_key[STORE_KEY_BYTES],
                         store_rekey_counts_t *counts, store_rekey_record_fn record, void *arg)
{
    store_rekey_counts_t tally = {0, 0};
    if (counts != NULL)
        *counts = tally;
    if (store_enter(store, "rekey") != 0)
        return -1;
    if (new_key == NULL) {
        store_refuse(store, "rekey", "no new key");
        return -1;
    }
    if (!sqlite3_get_autocommit(store->db)) {
        store_refuse(store, "rekey", "a transaction is open (commit or roll it back first)");
        return -1;
    }
    /* Allocated before anything is written, so that once the commit has
     * succeeded switching keys cannot fail. */
    uint8_t *key = store_seal_key_new(new_key);
    if (key == NULL) {
        store_refuse(store, "rekey", "out of memory");
        return -1;
    }
    int rc = store_exec_fixed(store, "PRAGMA locking_mode = EXCLUSIVE", "rekey: locking mode");
    if (rc == 0)
        rc = rekey_transaction(store, key, &tally, record, arg);
    /* Back to shared locking; the exclusive lock goes with the next read.
     * Neither can fail in a way that matters: at worst the lock is held
     * until the store is closed. */
    (void)sqlite3_exec(store->db, "PRAGMA locking_mode = NORMAL; SELECT count(*) FROM meta", NULL,
                       NULL, NULL);
    if (rc == 0 || rc == -2) { /* -2: committed all the same */
        uint8_t *old_key = store->seal_key;
        store->seal_key = key;
        key = old_key;
        if (counts != NULL)
            *counts = tally;
    }
    secret_free(key, STORE_KEY_BYTES);
    return rc;
}
