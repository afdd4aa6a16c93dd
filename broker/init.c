/*
 * init.c — schakeld --init (init.h).
 *
 * Owns the order in which the key and the store are made and what is said
 * about each. Trusts the paths from the configuration; leaves every file
 * that is there as it is. Errors: a line on stderr naming the file and what
 * to do, and exit status 1.
 */
#include "init.h"

#include <errno.h>
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
#include "storefile.h"

/* Beside the store: the new store while --init makes it. */
#define INIT_TEMP_SUFFIX ".initializing"

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
    if (keys_write_symmetric(key_path, err, sizeof err) != 0) {
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
                    "schakeld: %s holds no Schakel store (schema version 0: another database, or "
                    "what an interrupted --init of an older schakeld left): left as it is; if it "
                    "holds nothing to keep, remove it and run schakeld --init again\n",
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

/* The files an --init that did not finish left beside the store (the new
 * store under its temporary name, its WAL, shared memory and lock) go
 * first; said when there were any. Returns 0, or -1 with err. */
static int init_remove_leftover(const char *temp, char *err, size_t errlen)
{
    static const char *const suffix[] = {"", "-wal", "-shm", ".lock"};
    char side[PATH_MAX];
    int found = 0;
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++)
        if (storefile_side(side, sizeof side, temp, suffix[i]) == 0 && access(side, F_OK) == 0)
            found = 1;
    if (storefile_remove(temp, err, errlen) != 0 ||
        storefile_remove_sides(temp, 1, err, errlen) != 0)
        return -1;
    if (found)
        printf("removed %s, left by an --init that did not finish\n", temp);
    return 0;
}

/* The new store at temp, whole in its one file: made, closed (its WAL
 * copied into it and removed by SQLite), its side files gone, the store's
 * owner given, synced. Returns 0, or -1 with err. */
static int init_make_temp(const char *temp, const char *key_path, const file_owner_t *owner,
                          char *err, size_t errlen)
{
    uint8_t key[STORE_KEY_BYTES];
    char wal[PATH_MAX];
    struct stat st;
    if (keys_load_symmetric(key_path, key, err, errlen) != 0)
        return -1;
    store_t *store = store_open(temp, key, STORE_OPEN_CREATE, err, errlen);
    sodium_memzero(key, sizeof key);
    if (store == NULL)
        return -1;
    store_close(&store);
    if (storefile_side(wal, sizeof wal, temp, "-wal") != 0)
        return snprintf(err, errlen, "%.512s: path too long", temp), -1;
    /* defensive: a WAL with frames would hold part of the new store */
    if (stat(wal, &st) == 0 && st.st_size > 0)
        return snprintf(err, errlen, "%.512s: the new store's WAL was not copied into it", wal), -1;
    if (storefile_remove_sides(temp, 1, err, errlen) != 0 ||
        owner_give(temp, -1, owner, err, errlen) != 0 || storefile_sync(temp, err, errlen) != 0)
        return -1;
    return 0;
}

/* With the store's lock held: nothing at path yet (another --init may
 * have made it meanwhile), the leftover of an interrupted run gone, the
 * new store made at temp and moved to path, never over a file there. */
static int init_store_locked(const char *path, const char *temp, const char *key_path,
                             const file_owner_t *owner, char *err, size_t errlen)
{
    char why[PATH_MAX + 200];
    if (store_presence(path, why, sizeof why) != STORE_FILE_MISSING || access(path, F_OK) == 0)
        return snprintf(err, errlen,
                        "%s (or its -wal) appeared while --init ran: left as it is; run "
                        "schakeld --init again to see what is there",
                        path),
               -1;
    if (init_remove_leftover(temp, err, errlen) != 0)
        return -1;
    if (init_make_temp(temp, key_path, owner, err, errlen) == 0) {
        if (storefile_place(temp, path, err, errlen) == 0)
            return 0;
        if (errno == EEXIST)
            snprintf(err, errlen,
                     "%s appeared while --init made the new store: left as it is, and the new "
                     "store removed",
                     path);
    }
    char ignored[8];
    (void)storefile_remove(temp, ignored, sizeof ignored);
    (void)storefile_remove_sides(temp, 1, ignored, sizeof ignored);
    return -1;
}

/* An empty store at path under the key in key_path, given the owner of
 * its folder, with its lock file. It is made as PATH.initializing beside
 * it and moved into place whole (renameat2 without replacing), so that an
 * interruption leaves no store file without its schema, only the
 * temporary, which the broker never opens and the next --init removes.
 * Returns 0, or -1 (said). */
static int init_store(const char *path, const char *key_path)
{
    char err[1024] = "", temp[PATH_MAX], lock_path[PATH_MAX];
    file_owner_t owner;
    int rc = -1, lock = -1;
    if (storefile_side(temp, sizeof temp, path, INIT_TEMP_SUFFIX) != 0 ||
        storefile_side(lock_path, sizeof lock_path, path, ".lock") != 0)
        snprintf(err, sizeof err, "%s: the path is too long", path);
    else if (owner_of_store(path, &owner, err, sizeof err) != 0 ||
             (lock = store_lock_take(path, err, sizeof err)) < 0 ||
             owner_give(lock_path, lock, &owner, err, sizeof err) != 0)
        ; /* err says which file and why */
    else
        rc = init_store_locked(path, temp, key_path, &owner, err, sizeof err);
    if (lock >= 0)
        close(lock);
    if (rc != 0) {
        fprintf(stderr, "schakeld: cannot create the store: %s\n", err);
        return -1;
    }
    printf("created store %s (empty, mode 0600), sealed under %s\n", path, key_path);
    /* the store is in place; only whether its name is on disk yet is open */
    if (storefile_sync_folder(path, err, sizeof err) != 0)
        fprintf(stderr, "schakeld: warning: the store is made, but: %s\n", err);
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
