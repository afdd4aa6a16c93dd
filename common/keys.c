/*
 * keys.c — principal key files: generate, load, convert, sign (see keys.h).
 *
 * Trusts nothing in a key file: type, size, syntax, the kind its first line
 * names, owner, mode and folder are checked before a byte is used. Secret
 * material lives in sodium_malloc memory (plain malloc under
 * SCHAKEL_PLAIN_ALLOC, for sanitizer builds) and every temporary copy is
 * wiped on every path. Errors are returned as text for the caller.
 */
#define _GNU_SOURCE /* renameat2, RENAME_NOREPLACE */
#include "keys.h"

#include "fileguard.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>
#include <zmq.h>

#define KEY_FILE_MAX_BYTES 4096

static void *secret_alloc(size_t len)
{
#ifdef SCHAKEL_PLAIN_ALLOC
    return malloc(len);
#else
    return sodium_malloc(len);
#endif
}

static void secret_free(void *p, size_t len)
{
    if (p == NULL)
        return;
    sodium_memzero(p, len);
#ifdef SCHAKEL_PLAIN_ALLOC
    free(p);
#else
    (void)len;
    sodium_free(p);
#endif
}

int keys_init(void)
{
    return sodium_init() < 0 ? -1 : 0;
}

void keys_public_z85(const uint8_t pk[32], char out[41])
{
    /* 32 bytes is a multiple of 4, so zmq_z85_encode cannot fail. */
    if (zmq_z85_encode(out, pk, 32) == NULL)
        out[0] = '\0';
}

int keys_sign_pk_to_curve(const uint8_t sign_pk[32], uint8_t curve_pk[32])
{
    return crypto_sign_ed25519_pk_to_curve25519(curve_pk, sign_pk) == 0 ? 0 : -1;
}

int keys_parse_public_z85(const char *z85, uint8_t sign_pk[32])
{
    uint8_t curve[32];
    if (z85 == NULL || strlen(z85) != KEYS_Z85_LEN)
        return -1;
    if (zmq_z85_decode(sign_pk, z85) == NULL)
        return -1;
    /* Refuse points that are not valid Ed25519 public keys. */
    if (keys_sign_pk_to_curve(sign_pk, curve) != 0)
        return -1;
    return 0;
}

/* A secret key file must belong to the user that reads it (the effective
 * uid), or to root, which can read and replace every file anyway: a file
 * another user owns is a key that user can read, or swap for one of its
 * own, whatever its mode says. Run as root, a program therefore takes only
 * root's key files (run it as the key's user instead, as the service user
 * for the broker's keys). Returns 0, or -1 with err filled. */
static int check_secret_owner(const char *path, const struct stat *st, char *err, size_t errlen)
{
    uid_t self = geteuid();
    if (st->st_uid == self || st->st_uid == 0)
        return 0;
    char owner[64], reader[128] = "root";
    fileguard_user_name(st->st_uid, owner, sizeof owner);
    if (self != 0) {
        char name[64];
        fileguard_user_name(self, name, sizeof name);
        snprintf(reader, sizeof reader, "uid %u (%s) reading it, nor to root", (unsigned)self,
                 name);
    }
    snprintf(err, errlen,
             "secret key file %s belongs to uid %u (%s), not to %s: its owner can read or "
             "replace it; run as uid %u (the program that uses it), or chown it to uid %u",
             path, (unsigned)st->st_uid, owner, reader, (unsigned)st->st_uid, (unsigned)self);
    return -1;
}

/* A key file's kind, as its first line names it (KEYS_*_HEADER in keys.h,
 * the line every writer puts there). A secret key's text and a public
 * key's look the same, 40 Z85 characters: only that line tells a .pub
 * named as a secret key (whose text would be taken as a seed anyone can
 * read) from a .key. */
typedef enum key_kind {
    KIND_UNSTATED = 0, /* no header: another comment, or the key line first */
    KIND_SECRET,
    KIND_PUBLIC,
    KIND_STORE,
} key_kind_t;

static const struct {
    key_kind_t kind;
    const char *prefix; /* the first line begins so */
    const char *what;   /* "key file PATH is WHAT" */
    const char *as;     /* "..., not AS" */
} key_kinds[] = {
    {KIND_SECRET, KEYS_SECRET_PREFIX, "a secret key file", "a secret key"},
    {KIND_PUBLIC, KEYS_PUBLIC_PREFIX, "a public key file", "a public key"},
    {KIND_STORE, KEYS_STORE_PREFIX, "a store key file", "a store key"},
};

static size_t key_kind_index(key_kind_t kind)
{
    for (size_t i = 0; i < sizeof key_kinds / sizeof key_kinds[0]; i++)
        if (key_kinds[i].kind == kind)
            return i;
    abort(); /* a kind without a row is a bug */
}

/* The kind the first line of text (already trimmed) names. */
static key_kind_t key_kind_of(const char *first_line)
{
    for (size_t i = 0; i < sizeof key_kinds / sizeof key_kinds[0]; i++)
        if (strncmp(first_line, key_kinds[i].prefix, strlen(key_kinds[i].prefix)) == 0)
            return key_kinds[i].kind;
    return KIND_UNSTATED;
}

/* path's folder as text ("." for a bare name, "/" for one in the root), or
 * -1 when it does not fit. */
static int parent_dir_name(const char *path, char *dir, size_t dirlen)
{
    const char *slash = strrchr(path, '/');
    size_t len = slash == NULL ? 1 : slash == path ? 1 : (size_t)(slash - path);
    if (len >= dirlen)
        return -1;
    if (slash == NULL)
        dir[0] = '.';
    else
        memcpy(dir, path, len);
    dir[len] = '\0';
    return 0;
}

/* The folder that holds path, opened for reading, or -1. */
static int open_parent_dir(const char *path)
{
    char dir[4096];
    if (parent_dir_name(path, dir, sizeof dir) != 0)
        return -1;
    return open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* Open the key file at path (FILEGUARD_FOLDER_ONLY: only its folder, for
 * a file to be written) with fileguard_open: whoever owns a folder on its
 * path, or may write one (not sticky), can put another key in its place,
 * so every folder from "/" down must be root's or the reader's and not
 * writable by group or others unless sticky; a link in its folder part is
 * followed as fileguard.h says, one at its end refused (a key file must be
 * a regular file). Returns 0, or -1 with err filled. */
static int open_key_file(const char *path, unsigned flags, fileguard_file_t *file, char *err,
                         size_t errlen)
{
    fileguard_problem_t problem;
    if (fileguard_open(path, flags, FILEGUARD_KERNEL_LINKS, file, &problem) == 0)
        return 0;
    const char *verb = flags & FILEGUARD_FOLDER_ONLY ? "create" : "open key file";
    if (problem.fault == FILEGUARD_SYSTEM) {
        snprintf(err, errlen, "cannot %s %s: %s", verb, path, strerror(problem.sys_errno));
    } else if (problem.fault == FILEGUARD_FOLDER_OPEN && problem.holds_it) {
        snprintf(err, errlen,
                 "key file %s is in a folder group or others may write (%s, mode %04o): they "
                 "can put another key in its place; run: chmod go-w %s",
                 path, problem.folder, (unsigned)problem.folder_mode, problem.folder);
    } else {
        char why[PATH_MAX + 512];
        fileguard_describe(&problem, "key", why, sizeof why);
        snprintf(err, errlen, "key file %s: %s", path, why);
    }
    return -1;
}

/* Why a file of kind `found` is not the `wanted` one, and which file is. */
static void kind_refusal(const char *path, key_kind_t wanted, key_kind_t found, char *err,
                         size_t errlen)
{
    const char *what = key_kinds[key_kind_index(found)].what;
    const char *as = key_kinds[key_kind_index(wanted)].as;
    size_t len = strlen(path);
    int named_pub = len > 4 && strcmp(path + len - 4, ".pub") == 0;
    int named_key = len > 4 && strcmp(path + len - 4, ".key") == 0;
    if (wanted == KIND_SECRET && found == KIND_PUBLIC && named_pub)
        snprintf(err, errlen,
                 "key file %s is %s (its first line says so), not %s: the secret key is the .key "
                 "file keygen wrote beside it (%.*s.key)",
                 path, what, as, (int)(len - 4), path);
    else if (wanted == KIND_SECRET)
        snprintf(err, errlen,
                 "key file %s is %s (its first line says so), not %s: name the .key file "
                 "keygen wrote",
                 path, what, as);
    else if (wanted == KIND_PUBLIC && found == KIND_SECRET && named_key)
        snprintf(err, errlen,
                 "key file %s is %s (its first line says so), not %s: name the .pub file keygen "
                 "wrote beside it (%.*s.pub)",
                 path, what, as, (int)(len - 4), path);
    else if (wanted == KIND_PUBLIC)
        snprintf(err, errlen,
                 "key file %s is %s (its first line says so), not %s: name the .pub file keygen "
                 "wrote",
                 path, what, as);
    else
        snprintf(err, errlen,
                 "key file %s is %s (its first line says so), not %s: the store key is the file "
                 "schakeld --init made (store_key_file)",
                 path, what, as);
}

/* A file without a header: refused whatever the kind wanted. Read as a
 * secret or store key, a public key's text (a .pub of another tool, or
 * one whose header was lost) would be taken as a secret anyone can read;
 * read as a public key, a seed copied without its line (a .key's text
 * pasted into a .pub) would be taken, about 1 seed in 16 being a point
 * that converts, and the partner's secret handled as public text. */
static void unstated_refusal(const char *path, key_kind_t wanted, char *err, size_t errlen)
{
    if (wanted == KIND_SECRET)
        snprintf(err, errlen,
                 "key file %s does not say it is a secret key: its first line is not \"%s ...\" "
                 "as keygen writes it (a public key's text looks the same as a secret one's); "
                 "name the .key file keygen wrote",
                 path, KEYS_SECRET_PREFIX);
    else if (wanted == KIND_STORE)
        snprintf(err, errlen,
                 "key file %s does not say it is a store key: its first line is not \"%s ...\" "
                 "as schakeld --init writes it; name the file --init made (store_key_file)",
                 path, KEYS_STORE_PREFIX);
    else
        snprintf(err, errlen,
                 "key file %s does not say it is a public key: its first line is not \"%s ...\" "
                 "as keygen writes it (a secret key's seed looks the same as a public key's "
                 "text); if it holds a public key, put the line \"%s\" above it",
                 path, KEYS_PUBLIC_PREFIX, KEYS_PUBLIC_HEADER);
}

/* The checks of a key file's own mode and owner, once its kind is right:
 * a secret (or store) key the reader's or root's with no permission for
 * group or others; a public key not writable by group or others, and the
 * reader's or root's (its owner may rewrite it whatever its mode). */
static int check_key_mode(const char *path, key_kind_t wanted, const struct stat *st, char *err,
                          size_t errlen)
{
    if (wanted != KIND_PUBLIC && check_secret_owner(path, st, err, errlen) != 0)
        return -1;
    if (wanted != KIND_PUBLIC && (st->st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        snprintf(err, errlen,
                 "secret key file %s is accessible by group or others (mode %03o); "
                 "run: chmod 600 %s",
                 path, (unsigned)(st->st_mode & 0777), path);
        return -1;
    }
    if (wanted == KIND_PUBLIC && (st->st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        snprintf(err, errlen,
                 "public key file %s may be written by group or others (mode %03o): they can "
                 "put another key in it; run: chmod go-w %s",
                 path, (unsigned)(st->st_mode & 0777), path);
        return -1;
    }
    uid_t self = geteuid();
    if (wanted == KIND_PUBLIC && st->st_uid != 0 && st->st_uid != self) {
        char owner[64], reader[64];
        fileguard_user_name(st->st_uid, owner, sizeof owner);
        fileguard_user_name(self, reader, sizeof reader);
        snprintf(err, errlen,
                 "public key file %s belongs to uid %u (%s), not to root or uid %u (%s, the "
                 "reader): its owner can put another key in it whatever its mode; run: chown "
                 "root %s",
                 path, (unsigned)st->st_uid, owner, (unsigned)self, reader, path);
        return -1;
    }
    return 0;
}

/* The key line of buf (n bytes, NUL-terminated, cut in place): the first
 * line that is not blank and not a '#' comment, trimmed; *kind is what
 * the file's first line names. Returns 0, or -1 with err filled. */
static int key_line_of(const char *path, char *buf, key_kind_t *kind, char *line, size_t linelen,
                       char *err, size_t errlen)
{
    int first = 1;
    *kind = KIND_UNSTATED;
    for (char *l = buf, *next; l != NULL; l = next) {
        next = strchr(l, '\n');
        if (next != NULL)
            *next++ = '\0';
        while (*l == ' ' || *l == '\t')
            l++;
        size_t len = strlen(l);
        while (len > 0 && (l[len - 1] == '\r' || l[len - 1] == ' ' || l[len - 1] == '\t'))
            l[--len] = '\0';
        if (first)
            *kind = key_kind_of(l);
        first = 0;
        if (len == 0 || l[0] == '#')
            continue;
        if (len >= linelen) {
            snprintf(err, errlen, "key file %s: key line has %zu characters, expected %u", path,
                     len, KEYS_Z85_LEN);
            return -1;
        }
        memcpy(line, l, len + 1);
        return 0;
    }
    snprintf(err, errlen, "key file %s holds no key", path);
    return -1;
}

/* Read the small text key file at path, of kind `wanted`, and return its
 * key line (key_line_of). The file is opened by open_key_file (every
 * folder on its path checked as opened, never followed by the kernel) and
 * checked by fstat of the descriptor read (a name swapped between a check
 * and the read cannot dodge it): a regular file, its kind (before its
 * mode: a public key named as the secret one must not be answered with
 * advice to chmod it), then its mode and owner. */
static int read_key_line(const char *path, key_kind_t wanted, char *line, size_t linelen, char *err,
                         size_t errlen)
{
    char buf[KEY_FILE_MAX_BYTES + 1];
    fileguard_file_t file;
    if (open_key_file(path, 0, &file, err, errlen) != 0)
        return -1;
    int fd = file.fd;
    struct stat st;
    int rc = -1;
    ssize_t n = -1;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "key file %s is not a regular file", path);
        goto out;
    }
    n = read(fd, buf, KEY_FILE_MAX_BYTES + 1);
    if (n < 0) {
        snprintf(err, errlen, "cannot read key file %s: %s", path, strerror(errno));
        goto out;
    }
    if (n > KEY_FILE_MAX_BYTES) {
        snprintf(err, errlen, "key file %s is larger than %d bytes: not a key file", path,
                 KEY_FILE_MAX_BYTES);
        goto out;
    }
    buf[n] = '\0';
    key_kind_t kind;
    if (key_line_of(path, buf, &kind, line, linelen, err, errlen) != 0)
        goto out;
    if (kind != wanted && kind != KIND_UNSTATED)
        kind_refusal(path, wanted, kind, err, errlen);
    else if (kind == KIND_UNSTATED)
        unstated_refusal(path, wanted, err, errlen);
    else if (check_key_mode(path, wanted, &st, err, errlen) == 0)
        rc = 0;
out:
    if (rc != 0)
        sodium_memzero(line, linelen);
    if (n > 0)
        sodium_memzero(buf, (size_t)n);
    fileguard_close(&file);
    return rc;
}

int keys_load_public(const char *path, uint8_t sign_pk[32], char *err, size_t errlen)
{
    char line[64];
    err[0] = '\0';
    if (read_key_line(path, KIND_PUBLIC, line, sizeof line, err, errlen) != 0)
        return -1;
    if (keys_parse_public_z85(line, sign_pk) != 0) {
        snprintf(err, errlen, "key file %s: not a Z85 Ed25519 public key (40 characters)", path);
        return -1;
    }
    return 0;
}

void keys_destroy(keypair_t **kp)
{
    if (kp == NULL || *kp == NULL)
        return;
    secret_free((*kp)->sign_sk, crypto_sign_SECRETKEYBYTES);
    secret_free((*kp)->curve_sk, crypto_scalarmult_curve25519_BYTES);
    free(*kp);
    *kp = NULL;
}

/* Build a keypair from a 32-byte seed. */
static keypair_t *keypair_from_seed(const uint8_t seed[32])
{
    keypair_t *kp = calloc(1, sizeof *kp);
    if (kp == NULL)
        return NULL;
    kp->sign_sk = secret_alloc(crypto_sign_SECRETKEYBYTES);
    kp->curve_sk = secret_alloc(crypto_scalarmult_curve25519_BYTES);
    if (kp->sign_sk == NULL || kp->curve_sk == NULL ||
        crypto_sign_seed_keypair(kp->sign_pk, kp->sign_sk, seed) != 0 ||
        crypto_sign_ed25519_pk_to_curve25519(kp->curve_pk, kp->sign_pk) != 0 ||
        crypto_sign_ed25519_sk_to_curve25519(kp->curve_sk, kp->sign_sk) != 0) {
        keys_destroy(&kp);
        return NULL;
    }
    return kp;
}

keypair_t *keys_load_secret(const char *path, char *err, size_t errlen)
{
    char line[64];
    uint8_t seed[32];
    keypair_t *kp = NULL;
    err[0] = '\0';
    if (read_key_line(path, KIND_SECRET, line, sizeof line, err, errlen) != 0)
        return NULL;
    if (strlen(line) != KEYS_Z85_LEN || zmq_z85_decode(seed, line) == NULL) {
        snprintf(err, errlen, "key file %s: not a Z85 secret key seed (40 characters)", path);
    } else if ((kp = keypair_from_seed(seed)) == NULL) {
        snprintf(err, errlen, "key file %s: cannot derive a key pair (out of memory?)", path);
    }
    sodium_memzero(line, sizeof line);
    sodium_memzero(seed, sizeof seed);
    return kp;
}

/* Sync the folder that holds path, so that a new file's name survives a
 * power cut as its contents do (a store re-sealed under a new key must
 * not outlive the key file's directory entry). */
static int sync_parent_dir(const char *path)
{
    int fd = open_parent_dir(path);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    if (close(fd) != 0)
        rc = -1;
    return rc;
}

/* A key file is written under a temporary name beside it,
 * PATH.partial-XXXXXXXX (eight random hex digits), and given its name only
 * once it is whole and synced: a run killed or cut off by a power loss
 * while it writes leaves no file at PATH, never an empty or partial key
 * that every later run would keep and fail to load. The writer holds an
 * exclusive flock on its temporary until the name is given. */
#define PARTIAL_MARK ".partial-"
#define PARTIAL_DIGITS 8

/* Whether name is base + PARTIAL_MARK + eight hex digits. */
static int is_partial_of(const char *name, const char *base)
{
    size_t base_len = strlen(base), mark_len = strlen(PARTIAL_MARK);
    if (strlen(name) != base_len + mark_len + PARTIAL_DIGITS ||
        strncmp(name, base, base_len) != 0 || strncmp(name + base_len, PARTIAL_MARK, mark_len) != 0)
        return 0;
    for (const char *c = name + base_len + mark_len; *c != '\0'; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return 0;
    return 1;
}

/* Remove the temporaries an interrupted write of path left beside it:
 * files named as write_new_file names them whose flock nobody holds (a
 * held one is another write of the same path, going on: left). Nothing is
 * followed: a symbolic link, a FIFO or a folder of that name is left as
 * it is. Best effort: a temporary never becomes a key by being left, only
 * litter (a part of a key that was never used). */
static void remove_partials(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash == NULL ? path : slash + 1;
    if (base[0] == '\0')
        return;
    int dir_fd = open_parent_dir(path);
    DIR *d = dir_fd < 0 ? NULL : fdopendir(dir_fd);
    if (d == NULL) {
        if (dir_fd >= 0)
            close(dir_fd);
        return;
    }
    for (struct dirent *ent; (ent = readdir(d)) != NULL;) {
        if (!is_partial_of(ent->d_name, base))
            continue;
        int fd = openat(dir_fd, ent->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        struct stat st;
        if (fd < 0)
            continue;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0)
            (void)unlinkat(dir_fd, ent->d_name, 0);
        close(fd);
    }
    closedir(d);
}

/* Give the whole file at temp the name path, never replacing a file
 * there: renameat2 RENAME_NOREPLACE, or on a file system without it
 * link() and unlink(), which refuse an existing name as well. Returns 0,
 * or -1 with errno (EEXIST: a file is at path). */
static int place_new_file(const char *temp, const char *path)
{
    if (renameat2(AT_FDCWD, temp, AT_FDCWD, path, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -1;
    if (link(temp, path) != 0)
        return -1;
    (void)unlink(temp);
    return 0;
}

/* Write all of text to fd (a short write or EINTR goes on). */
static int write_all(int fd, const char *text, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, text, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            errno = EIO; /* defensive: a regular file takes a byte or fails */
        if (n <= 0)
            return -1;
        text += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Write text to a new file at path with the given mode (as open(2) gives
 * it, under the umask), whole or not at all: under a temporary name first
 * (above), synced, then named path unless a file is there (never
 * overwritten: "cannot create PATH: File exists"), and the folder synced.
 * Temporaries an interrupted earlier write left go first. */
static int write_new_file(const char *path, const char *text, mode_t mode, char *err, size_t errlen)
{
    char temp[4096];
    int fd = -1;
    /* a key written where it would be refused is refused now, not at its
     * first use (the file will be the writer's own) */
    fileguard_file_t folder;
    if (open_key_file(path, FILEGUARD_FOLDER_ONLY, &folder, err, errlen) != 0)
        return -1;
    fileguard_close(&folder);
    remove_partials(path);
    for (int tries = 0; fd < 0 && tries < 8; tries++) {
        uint8_t random[PARTIAL_DIGITS / 2];
        randombytes_buf(random, sizeof random);
        if (snprintf(temp, sizeof temp, "%s%s%02x%02x%02x%02x", path, PARTIAL_MARK, random[0],
                     random[1], random[2], random[3]) >= (int)sizeof temp) {
            snprintf(err, errlen, "cannot create %s: path too long", path);
            return -1;
        }
        fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0 && errno != EEXIST)
            break;
        /* held until the name is given (placed before close): another
         * run's remove_partials leaves it. Between the open and the lock
         * such a run may have taken it for a leftover (it holds the lock,
         * or has unlinked it): then another name (review). */
        struct stat st;
        if (fd >= 0 && ((flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) ||
                        (fstat(fd, &st) == 0 && st.st_nlink == 0))) {
            close(fd);
            fd = -1;
            errno = EEXIST;
        }
    }
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    int rc = write_all(fd, text, strlen(text)) == 0 && fsync(fd) == 0 ? 0 : -1;
    int saved = errno;
    if (rc != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(saved));
    } else if (place_new_file(temp, path) != 0) {
        saved = errno;
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(saved));
        rc = -1;
    }
    if (rc != 0)
        (void)unlink(temp);
    if (close(fd) != 0 && rc == 0) {
        saved = errno;
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(saved));
        (void)unlink(path);
        rc = -1;
    }
    if (rc == 0 && sync_parent_dir(path) != 0) {
        saved = errno;
        snprintf(err, errlen, "cannot write %s: syncing its folder: %s", path, strerror(saved));
        (void)unlink(path);
        rc = -1;
    }
    errno = saved;
    return rc;
}

int keys_generate(const char *path_base, char *err, size_t errlen)
{
    char key_path[4096], pub_path[4096];
    char seed_z85[41], pk_z85[41];
    char text[256];
    uint8_t seed[32], pk[32], sk[64];
    int rc = -1;

    err[0] = '\0';
    if (snprintf(key_path, sizeof key_path, "%s.key", path_base) >= (int)sizeof key_path ||
        snprintf(pub_path, sizeof pub_path, "%s.pub", path_base) >= (int)sizeof pub_path) {
        snprintf(err, errlen, "key path too long");
        return -1;
    }
    /* A keygen killed between placing the .key and the .pub left a whole
     * secret key nobody was handed its public half of: this run writes the
     * .pub from it and is done (a rerun could not otherwise get past the
     * .key, which is never replaced). */
    struct stat st;
    if (lstat(key_path, &st) == 0 && S_ISREG(st.st_mode) && lstat(pub_path, &st) != 0 &&
        errno == ENOENT) {
        keypair_t *half = keys_load_secret(key_path, text, sizeof text);
        if (half != NULL) {
            keys_public_z85(half->sign_pk, pk_z85);
            keys_destroy(&half);
            snprintf(text, sizeof text, "%s\n%s\n", KEYS_PUBLIC_HEADER, pk_z85);
            rc = write_new_file(pub_path, text, 0644, err, errlen);
            goto out;
        }
    }
    randombytes_buf(seed, sizeof seed);
    if (crypto_sign_seed_keypair(pk, sk, seed) != 0 || zmq_z85_encode(seed_z85, seed, 32) == NULL)
        goto out;
    keys_public_z85(pk, pk_z85);
    snprintf(text, sizeof text, "%s\n%s\n", KEYS_SECRET_HEADER, seed_z85);
    if (write_new_file(key_path, text, 0600, err, errlen) != 0)
        goto out;
    snprintf(text, sizeof text, "%s\n%s\n", KEYS_PUBLIC_HEADER, pk_z85);
    if (write_new_file(pub_path, text, 0644, err, errlen) != 0) {
        if (unlink(key_path) == 0)
            (void)sync_parent_dir(key_path); /* not back after a power cut */
        goto out;
    }
    rc = 0;
out:
    if (rc != 0 && err[0] == '\0')
        snprintf(err, errlen, "cannot generate a key pair");
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(sk, sizeof sk);
    sodium_memzero(seed_z85, sizeof seed_z85);
    sodium_memzero(text, sizeof text);
    return rc;
}

int keys_sign(const keypair_t *kp, const uint8_t *msg, size_t len, uint8_t sig[64])
{
    if (kp == NULL || kp->sign_sk == NULL)
        return -1;
    return crypto_sign_detached(sig, NULL, msg, len, kp->sign_sk) == 0 ? 0 : -1;
}

int keys_derive(const keypair_t *kp, const char context[8], uint64_t subkey_id, uint8_t *out,
                size_t len)
{
    if (kp == NULL || kp->sign_sk == NULL || out == NULL || len < crypto_kdf_BYTES_MIN ||
        len > crypto_kdf_BYTES_MAX)
        return -1;
    /* libsodium's Ed25519 secret key is seed || public key: the seed, the
     * key file's secret, is the master key; the key itself is never used
     * as the key of a hash */
    _Static_assert(crypto_kdf_KEYBYTES == crypto_sign_SEEDBYTES, "the seed is a kdf master key");
    return crypto_kdf_derive_from_key(out, len, subkey_id, context, kp->sign_sk) == 0 ? 0 : -1;
}

int keys_verify(const uint8_t sign_pk[32], const uint8_t *msg, size_t len, const uint8_t sig[64])
{
    return crypto_sign_verify_detached(sig, msg, len, sign_pk) == 0 ? 0 : -1;
}

int keys_write_symmetric(const char *path, char *err, size_t errlen)
{
    uint8_t key[32];
    char z85[41], text[256];
    err[0] = '\0';
    randombytes_buf(key, sizeof key);
    int rc = -1;
    if (zmq_z85_encode(z85, key, sizeof key) != NULL) {
        snprintf(text, sizeof text, "%s\n%s\n", KEYS_STORE_HEADER, z85);
        rc = write_new_file(path, text, 0600, err, errlen);
    } else {
        snprintf(err, errlen, "cannot encode a key");
    }
    sodium_memzero(key, sizeof key);
    sodium_memzero(z85, sizeof z85);
    sodium_memzero(text, sizeof text);
    return rc;
}

int keys_load_symmetric(const char *path, uint8_t key[32], char *err, size_t errlen)
{
    char line[64];
    err[0] = '\0';
    if (read_key_line(path, KIND_STORE, line, sizeof line, err, errlen) != 0)
        return -1;
    int rc = 0;
    if (strlen(line) != KEYS_Z85_LEN || zmq_z85_decode(key, line) == NULL) {
        snprintf(err, errlen, "key file %s: not a Z85 key (40 characters)", path);
        sodium_memzero(key, 32);
        rc = -1;
    }
    sodium_memzero(line, sizeof line);
    return rc;
}
