/*
 * init.c — schakeld --init (init.h).
 *
 * Owns the order in which the key and the store are made and what is said
 * about each. Trusts the paths from the configuration; leaves every file
 * that is there as it is. Errors: a line on stderr naming the file and what
 * to do, and exit status 1.
 */
#include "init.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "keys.h"
#include "owner.h"
#include "store.h"

#define INIT_KEY_COMMENT                                                                           \
    "Schakel store sealing key (XChaCha20-Poly1305). Keep it private and backed up: without it "   \
    "the store is unreadable."

/* The key file, made unless it is there and a store is to be made with it
 * (then it is kept). Returns 1 when made, 0 when kept, -1 on failure
 * (said). */
static int init_key(const char *key_path, int for_store)
{
    char err[512];
    if (for_store && access(key_path, F_OK) == 0) {
        printf("store key %s exists: kept\n", key_path);
        return 0;
    }
    if (keys_write_symmetric(key_path, INIT_KEY_COMMENT, err, sizeof err) != 0) {
        fprintf(stderr, "schakeld: %s\n", err);
        return -1;
    }
    printf("created store key %s (mode 0600); back it up apart from the store\n", key_path);
    return 1;
}

/* The schema version (user_version) in the header of the SQLite file at
 * path, read as bytes so that nothing is opened or made beside it; -1
 * when it cannot be told (unreadable, not SQLite, or a -wal beside it,
 * whose commits may have changed it: then the broker's open says). */
static long init_schema_version(const char *path)
{
    static const char magic[] = "SQLite format 3";
    char wal[PATH_MAX + 8];
    struct stat st;
    snprintf(wal, sizeof wal, "%s-wal", path);
    if (stat(wal, &st) == 0 && st.st_size > 0)
        return -1;
    unsigned char header[100];
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    size_t got = fread(header, 1, sizeof header, f);
    fclose(f);
    if (got != sizeof header || memcmp(header, magic, sizeof magic) != 0)
        return -1;
    /* bytes 60..63: the user version, big-endian */
    return (long)(((uint32_t)header[60] << 24) | ((uint32_t)header[61] << 16) |
                  ((uint32_t)header[62] << 8) | header[63]);
}

/* Whether a new store may be made at path: 1 yes, 0 a store is there
 * (left as it is, said on stdout), -1 not (said on stderr). */
static int init_store_wanted(const char *path)
{
    char why[PATH_MAX + 200];
    switch (store_presence(path, why, sizeof why)) {
    case STORE_FILE_PRESENT:
        if (init_schema_version(path) == 0) {
            fprintf(stderr,
                    "schakeld: %s holds no Schakel store (schema version 0: an --init that did "
                    "not finish, or another database): left as it is; if it holds nothing to "
                    "keep, remove it and run schakeld --init again\n",
                    path);
            return -1;
        }
        printf("store %s exists: left as it is\n", path);
        return 0;
    case STORE_FILE_MISSING:
        if (access(path, F_OK) != 0)
            return 1;
        fprintf(stderr,
                "schakeld: %s: left as it is (--init never touches a file that is there); if no "
                "store is to be kept in it, remove it and run schakeld --init again\n",
                why);
        return -1;
    case STORE_FILE_WAL_ONLY:
        fprintf(stderr,
                "schakeld: %s; no new store is made under it: restore a backup "
                "(docs/OPERATIONS.md, \"Restoring a backup\"), or move %s-wal aside (it may hold "
                "the last commits of the lost store) and run schakeld --init again\n",
                why, path);
        return -1;
    case STORE_FILE_UNKNOWN:
        break;
    }
    fprintf(stderr, "schakeld: %s\n", why);
    return -1;
}

/* An empty store at path under the key in key_path, given the owner of
 * its folder, with its lock file. Returns 0, or -1 (said). */
static int init_store(const char *path, const char *key_path)
{
    char err[1024] = "", lock_path[PATH_MAX];
    uint8_t key[STORE_KEY_BYTES];
    file_owner_t owner;
    store_t *store = NULL;
    int rc = -1;
    if (snprintf(lock_path, sizeof lock_path, "%s.lock", path) >= (int)sizeof lock_path)
        snprintf(err, sizeof err, "%s: the path is too long", path);
    else if (owner_of_store(path, &owner, err, sizeof err) != 0 ||
             keys_load_symmetric(key_path, key, err, sizeof err) != 0)
        ; /* err says which file and why */
    else if ((store = store_open(path, key, STORE_OPEN_CREATE, err, sizeof err)) != NULL)
        rc = 0;
    sodium_memzero(key, sizeof key);
    store_close(&store); /* the WAL goes into the file: it alone is the store */
    if (rc == 0 && (owner_give(path, -1, &owner, err, sizeof err) != 0 ||
                    owner_give(lock_path, -1, &owner, err, sizeof err) != 0))
        rc = -1;
    if (rc != 0) {
        fprintf(stderr, "schakeld: cannot create the store: %s\n", err);
        return -1;
    }
    printf("created store %s (empty, mode 0600), sealed under %s\n", path, key_path);
    return 0;
}

int init_command(const char *store_key_path, const char *store_path)
{
    if (store_key_path == NULL) {
        fprintf(stderr, "schakeld: --init needs store_key_file (in --config or --store-key)\n");
        return 2;
    }
    int key_made = init_key(store_key_path, store_path != NULL);
    if (key_made < 0)
        return 1;
    if (store_path == NULL)
        return 0;
    int wanted = init_store_wanted(store_path);
    if (wanted < 0)
        return 1;
    if (wanted == 0) {
        if (key_made)
            return 0;
        fprintf(stderr,
                "schakeld: nothing created: the store key %s and the store %s exist (--init "
                "never overwrites either)\n",
                store_key_path, store_path);
        return 1;
    }
    return init_store(store_path, store_key_path) == 0 ? 0 : 1;
}
