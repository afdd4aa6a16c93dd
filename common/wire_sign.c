/*
 * wire_sign.c — what a publish's signature covers: the BLAKE2b hash tree
 * over its items, the signed bytes (a fixed prefix, message id and root),
 * and the publish hash kept as its idempotency key. Pure functions of
 * their input; they check nothing and cannot fail (docs/PROTOCOL.md).
 */
#include "wire.h"

#include <string.h>

#include <sodium.h>

#define WIRE_HASH_BYTES 32u
static const char signed_prefix[16] = {'s', 'c', 'h', 'a', 'k', 'e', 'l', '-',
                                       'p', 'u', 'b', 'l', 'i', 's', 'h', '1'};

static void hash_leaf(const ProtobufCBinaryData *item, uint8_t out[WIRE_HASH_BYTES])
{
    static const uint8_t leaf_tag = 0x00;
    crypto_generichash_state state;
    crypto_generichash_init(&state, NULL, 0, WIRE_HASH_BYTES);
    crypto_generichash_update(&state, &leaf_tag, 1);
    if (item->len > 0)
        crypto_generichash_update(&state, item->data, item->len);
    crypto_generichash_final(&state, out, WIRE_HASH_BYTES);
}

/* RFC 6962 shape: the left subtree holds the largest power of two strictly
 * below n items. Recursion depth is log2(n), at most 8 for 256 items. */
static void hash_subtree(const ProtobufCBinaryData *items, size_t n, uint8_t out[WIRE_HASH_BYTES])
{
    if (n == 1) {
        hash_leaf(items, out);
        return;
    }
    size_t split = 1;
    while (split * 2 < n)
        split *= 2;
    static const uint8_t node_tag = 0x01;
    uint8_t left[WIRE_HASH_BYTES], right[WIRE_HASH_BYTES];
    hash_subtree(items, split, left);
    hash_subtree(items + split, n - split, right);
    crypto_generichash_state state;
    crypto_generichash_init(&state, NULL, 0, WIRE_HASH_BYTES);
    crypto_generichash_update(&state, &node_tag, 1);
    crypto_generichash_update(&state, left, sizeof left);
    crypto_generichash_update(&state, right, sizeof right);
    crypto_generichash_final(&state, out, WIRE_HASH_BYTES);
}

void wire_items_root(const ProtobufCBinaryData *items, size_t n, uint8_t root[32])
{
    /* n == 0 breaks the contract; answer as RFC 6962 does for an empty
     * tree (the hash of nothing) rather than read out of bounds. */
    if (n == 0) {
        crypto_generichash(root, WIRE_HASH_BYTES, NULL, 0, NULL, 0);
        return;
    }
    hash_subtree(items, n, root);
}

void wire_signed_bytes(const uint8_t message_id[16], const uint8_t root[32], uint8_t out[64])
{
    memcpy(out, signed_prefix, sizeof signed_prefix);
    memcpy(out + sizeof signed_prefix, message_id, SCHAKEL_MESSAGE_ID_BYTES);
    memcpy(out + sizeof signed_prefix + SCHAKEL_MESSAGE_ID_BYTES, root, WIRE_HASH_BYTES);
}

/* Defined for publishes that passed wire_decode_frame; a message id of the
 * wrong length is zero-padded or cut, which only such a publish avoids. */
void wire_publish_hash_signed(const uint8_t signed_bytes[64], const ProtobufCBinaryData *signature,
                              uint8_t out[32])
{
    crypto_generichash_state state;
    crypto_generichash_init(&state, NULL, 0, WIRE_HASH_BYTES);
    crypto_generichash_update(&state, signed_bytes, 64);
    if (signature->len > 0)
        crypto_generichash_update(&state, signature->data, signature->len);
    crypto_generichash_final(&state, out, WIRE_HASH_BYTES);
}

void wire_publish_hash(const Schakel__Publish *publish, uint8_t out[32])
{
    uint8_t message_id[SCHAKEL_MESSAGE_ID_BYTES] = {0};
    uint8_t root[WIRE_HASH_BYTES], signed_bytes[64];
    size_t id_len =
        publish->message_id.len < sizeof message_id ? publish->message_id.len : sizeof message_id;
    if (id_len > 0)
        memcpy(message_id, publish->message_id.data, id_len);
    wire_items_root(publish->items, publish->n_items, root);
    wire_signed_bytes(message_id, root, signed_bytes);
    wire_publish_hash_signed(signed_bytes, &publish->signature, out);
}
