/*
 * keys.h — principal key files: generate, load, convert.
 *
 * Owns the on-disk key formats (docs/PROTOCOL.md "Keys"): NAME.key holds the
 * 32-byte Ed25519 seed in Z85, NAME.pub the 32-byte Ed25519 public key in
 * Z85, each below a first line that names its kind (KEYS_*_HEADER). The
 * CurveZMQ (X25519) pair is derived from the Ed25519 pair, so one file
 * serves signing and transport. Secrets live in sodium_malloc memory and
 * are wiped on every path. Loading trusts nothing in the file: its kind,
 * sizes, syntax, mode, owner and folder are checked; errors are returned
 * as text, never printed.
 */
#ifndef SCHAKEL_KEYS_H
#define SCHAKEL_KEYS_H

#include <stddef.h>
#include <stdint.h>

#define KEYS_PUBLIC_BYTES 32u
#define KEYS_Z85_LEN 40u /* Z85 text of 32 bytes, without NUL */

/* The first line of each kind of key file, as the writers put it there;
 * the readers tell the kinds apart by the line's start (the PREFIX), as a
 * secret key's Z85 text and a public key's look the same. A key file
 * without its line is refused, whatever its kind (docs/PROTOCOL.md 2.2). */
#define KEYS_SECRET_PREFIX "# Schakel secret key"
#define KEYS_PUBLIC_PREFIX "# Schakel public key"
#define KEYS_STORE_PREFIX "# Schakel store sealing key"
#define KEYS_SECRET_HEADER KEYS_SECRET_PREFIX " (Ed25519 seed, Z85). Keep private: mode 0600."
#define KEYS_PUBLIC_HEADER KEYS_PUBLIC_PREFIX " (Ed25519, Z85)"
#define KEYS_STORE_HEADER                                                                          \
    KEYS_STORE_PREFIX " (XChaCha20-Poly1305). Keep it private and backed up: without it the "      \
                      "store is unreadable."

#define KEYS_WARN_UNUSED __attribute__((warn_unused_result))

typedef struct keypair {
    uint8_t sign_pk[32];  /* Ed25519 public key */
    uint8_t curve_pk[32]; /* X25519 public key derived from sign_pk */
    uint8_t *sign_sk;     /* 64 bytes, sodium_malloc (plain malloc in sanitizer builds) */
    uint8_t *curve_sk;    /* 32 bytes, likewise */
} keypair_t;

/* Generate a fresh pair and write PATH_BASE.key (mode 0600, refused if it
 * exists) and PATH_BASE.pub (0644), each with its KEYS_*_HEADER line.
 * Refused before anything is written when a folder on the path is one the
 * loaders refuse (fileguard.h: another user's than root's and the
 * writer's, or one group or others may write that is not sticky). Each
 * file is written whole or not at all: under a temporary name beside it
 * (PATH.partial-XXXXXXXX, eight hex digits, made with the file's mode),
 * synced, then given its name only if none is there (renameat2
 * RENAME_NOREPLACE, or link and unlink), and its folder synced; an
 * interrupted write (a kill, a power cut) leaves no file at PATH, only
 * such a temporary, never read as a key and removed by the next write of
 * PATH (unless another write holds it: flock). A .key left whole without
 * its .pub (a run stopped between the two) gets its .pub written from it,
 * and is kept. Returns 0, or -1 with err filled ("cannot create PATH: File
 * exists" for one that is there); on failure neither file is left. */
int keys_generate(const char *path_base, char *err, size_t errlen) KEYS_WARN_UNUSED;

/* Load a secret key file. Refuses, in this order: a path with a folder
 * that another user than root and the effective uid owns, or that group
 * or others may write and that is not sticky (every folder from "/" down,
 * fileguard.h; a symbolic link in the folder part is followed and held to
 * the same rule); a file that is not a regular file (a symbolic link
 * included), over 4096 bytes or without a key line; one whose first line
 * does not begin with KEYS_SECRET_PREFIX ("... is a public key file (its
 * first line says so), not a secret key: ..." for a .pub; a file without
 * that line: a public key's text looks the same); one that belongs to
 * another user than the effective uid (root's files excepted: see keys.c)
 * or that group or others may access at all; a key line that is not 40
 * Z85 characters. Returns a new keypair (caller destroys it with
 * keys_destroy), or NULL with err filled. */
keypair_t *keys_load_secret(const char *path, char *err, size_t errlen) KEYS_WARN_UNUSED;

/* Wipe and free; sets *kp to NULL; safe on NULL and on *kp == NULL. */
void keys_destroy(keypair_t **kp);

/* Load a .pub file (Z85 Ed25519 public key, '#' comment lines allowed).
 * Refuses a path keys_load_secret refuses for its folders; a file whose
 * first line names another kind (a secret or store key file: "... is a
 * secret key file (its first line says so), not a public key: ...") or
 * none ("... does not say it is a public key": a seed's text looks the
 * same); a file that group or others may write, or that belongs to
 * another user than root and the effective uid (whoever may change it
 * chooses who holds the key). Returns 0, or -1 with err filled. */
int keys_load_public(const char *path, uint8_t sign_pk[32], char *err,
                     size_t errlen) KEYS_WARN_UNUSED;

/* Parse exactly 40 Z85 characters into a 32-byte Ed25519 public key and check
 * it is a valid curve point (convertible to X25519). Returns 0 or -1. */
int keys_parse_public_z85(const char *z85, uint8_t sign_pk[32]) KEYS_WARN_UNUSED;

/* Write the Z85 text of a 32-byte key into out (41 bytes with NUL). */
void keys_public_z85(const uint8_t pk[32], char out[41]);

/* Ed25519 public key to X25519 (CurveZMQ) public key. Returns 0 or -1. */
int keys_sign_pk_to_curve(const uint8_t sign_pk[32], uint8_t curve_pk[32]) KEYS_WARN_UNUSED;

/* Sign msg with the pair's Ed25519 key into sig (64 bytes). Returns 0 or -1. */
int keys_sign(const keypair_t *kp, const uint8_t *msg, size_t len,
              uint8_t sig[64]) KEYS_WARN_UNUSED;

/* len bytes (crypto_kdf_BYTES_MIN..MAX, 16..64) derived from the pair's
 * secret (its 32-byte Ed25519 seed) with crypto_kdf for one purpose,
 * named by context (8 bytes) and subkey_id: the same key, context and id
 * give the same bytes, and nothing about the seed or another purpose's
 * bytes. out is a secret: the caller wipes it. Returns 0 or -1. */
int keys_derive(const keypair_t *kp, const char context[8], uint64_t subkey_id, uint8_t *out,
                size_t len) KEYS_WARN_UNUSED;

/* Verify an Ed25519 detached signature. Returns 0 when valid, -1 otherwise. */
int keys_verify(const uint8_t sign_pk[32], const uint8_t *msg, size_t len,
                const uint8_t sig[64]) KEYS_WARN_UNUSED;

/* A symmetric secret (the store's sealing key): 32 random bytes in Z85 in
 * a text file of the same layout as a .key file, below KEYS_STORE_HEADER.
 * keys_write_symmetric creates path with mode 0600 and refuses an
 * existing file, written whole or not at all as keys_generate writes its
 * files (and refused in the same folders); keys_load_symmetric refuses a
 * file whose first line does not begin with KEYS_STORE_PREFIX (a secret or
 * public key file named as the store key is named as such), and one
 * whose mode, owner or folder keys_load_secret refuses. Both return 0, or
 * -1 with err filled; key is wiped on failure. */
int keys_write_symmetric(const char *path, char *err, size_t errlen) KEYS_WARN_UNUSED;
int keys_load_symmetric(const char *path, uint8_t key[32], char *err,
                        size_t errlen) KEYS_WARN_UNUSED;

/* sodium_init() once; returns 0 or -1. Every entry point above needs it. */
int keys_init(void) KEYS_WARN_UNUSED;

#endif
