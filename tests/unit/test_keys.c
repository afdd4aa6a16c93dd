/* test_keys.c — key files: generate, load, refuse what must be refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "keys.h"

static char dir[64];

static int setup(void **state)
{
    (void)state;
    if (keys_init() != 0)
        return -1;
    strcpy(dir, "/tmp/schakel-keys-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void path(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", dir, name);
}

static void write_file(const char *name, const char *text, mode_t mode)
{
    char p[256];
    path(p, sizeof p, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(p, mode), 0);
}

/* The first lines the writers put in a secret and a store key file. */
#define SECRET KEYS_SECRET_HEADER "\n"
#define STORE KEYS_STORE_HEADER "\n"

static void test_generate_and_load(void **state)
{
    (void)state;
    char base[256], key[300], pub[300], err[256];
    path(base, sizeof base, "alice");
    assert_int_equal(keys_generate(base, err, sizeof err), 0);
    snprintf(key, sizeof key, "%s.key", base);
    snprintf(pub, sizeof pub, "%s.pub", base);
    struct stat st;
    assert_int_equal(stat(key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    keypair_t *kp = keys_load_secret(key, err, sizeof err);
    assert_non_null(kp);
    uint8_t pk[32];
    assert_int_equal(keys_load_public(pub, pk, err, sizeof err), 0);
    assert_memory_equal(pk, kp->sign_pk, 32);

    /* The CURVE pair is the Ed25519 pair converted. */
    uint8_t curve_pk[32], derived[32];
    assert_int_equal(keys_sign_pk_to_curve(pk, curve_pk), 0);
    assert_memory_equal(curve_pk, kp->curve_pk, 32);
    assert_int_equal(crypto_scalarmult_base(derived, kp->curve_sk), 0);
    assert_memory_equal(derived, kp->curve_pk, 32);

    /* Sign and verify; a changed byte or another key fails. */
    uint8_t msg[5] = "hello", sig[64];
    assert_int_equal(keys_sign(kp, msg, sizeof msg, sig), 0);
    assert_int_equal(keys_verify(pk, msg, sizeof msg, sig), 0);
    msg[0] ^= 1;
    assert_int_equal(keys_verify(pk, msg, sizeof msg, sig), -1);

    /* A derived secret is crypto_kdf from the seed; no pair, no output or
     * a length outside 16..64 derives nothing. */
    uint8_t seed[32], want[32], got[64];
    assert_int_equal(crypto_sign_ed25519_sk_to_seed(seed, kp->sign_sk), 0);
    assert_int_equal(crypto_kdf_derive_from_key(want, sizeof want, 7, "testctx1", seed), 0);
    assert_int_equal(keys_derive(kp, "testctx1", 7, got, 32), 0);
    assert_memory_equal(got, want, 32);
    assert_memory_not_equal(got, seed, 32);
    assert_int_equal(keys_derive(NULL, "testctx1", 7, got, 32), -1);
    assert_int_equal(keys_derive(kp, "testctx1", 7, NULL, 32), -1);
    assert_int_equal(keys_derive(kp, "testctx1", 7, got, 15), -1);
    assert_int_equal(keys_derive(kp, "testctx1", 7, got, 65), -1);
    sodium_memzero(seed, sizeof seed);
    keys_destroy(&kp);
    assert_null(kp);
    keys_destroy(&kp); /* idempotent */

    /* Never overwrites an existing key. */
    assert_int_equal(keys_generate(base, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot create"));

    /* A keygen killed between its two files left the .key alone: the next
     * one writes its .pub from it, and the key stays what it was. */
    assert_int_equal(unlink(pub), 0);
    assert_int_equal(keys_generate(base, err, sizeof err), 0);
    uint8_t again[32];
    assert_int_equal(keys_load_public(pub, again, err, sizeof err), 0);
    assert_memory_equal(again, pk, 32);
    kp = keys_load_secret(key, err, sizeof err);
    assert_non_null(kp);
    assert_memory_equal(kp->sign_pk, pk, 32);
    keys_destroy(&kp);
    assert_int_equal(stat(pub, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    /* with both there, still nothing replaced */
    assert_int_equal(keys_generate(base, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot create"));
}

typedef struct bad_key {
    const char *name;
    const char *text;
    mode_t mode;
    const char *expect;
} bad_key_t;

static void test_refused_secret_files(void **state)
{
    (void)state;
    static const bad_key_t rows[] = {
        {"open.key", SECRET "0000000000000000000000000000000000000000\n", 0644, "group or others"},
        {"group.key", SECRET "0000000000000000000000000000000000000000\n", 0640, "group or others"},
        {"short.key", SECRET "abc\n", 0600, "not a Z85"},
        {"long.key", SECRET "00000000000000000000000000000000000000000000\n", 0600, "not a Z85"},
        {"bad.key", SECRET "000000000000000000000000000000000000000\"\n", 0600, "not a Z85"},
        {"empty.key", SECRET "# only a comment\n\n", 0600, "holds no key"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char p[256], err[256] = "";
        write_file(rows[i].name, rows[i].text, rows[i].mode);
        path(p, sizeof p, rows[i].name);
        keypair_t *kp = keys_load_secret(p, err, sizeof err);
        if (kp != NULL || strstr(err, rows[i].expect) == NULL)
            fail_msg("%s: expected refusal with \"%s\", got \"%s\"", rows[i].name, rows[i].expect,
                     err);
    }
    /* a file far larger than a key file, and a line far longer than a key */
    static char big[5000], long_line[302];
    memset(big, '#', sizeof big - 1);
    memset(long_line, '0', sizeof long_line - 2);
    long_line[sizeof long_line - 2] = '\n';
    const bad_key_t sized[] = {
        {"big.key", big, 0600, "is larger than 4096 bytes: not a key file"},
        {"longline.key", long_line, 0600, "key line has 300 characters, expected 40"},
    };
    for (size_t i = 0; i < sizeof sized / sizeof sized[0]; i++) {
        char p[256], err[256] = "";
        write_file(sized[i].name, sized[i].text, sized[i].mode);
        path(p, sizeof p, sized[i].name);
        if (keys_load_secret(p, err, sizeof err) != NULL || strstr(err, sized[i].expect) == NULL)
            fail_msg("%s: expected refusal with \"%s\", got \"%s\"", sized[i].name, sized[i].expect,
                     err);
    }
    char err[256];
    char missing[256];
    path(missing, sizeof missing, "missing.key");
    assert_null(keys_load_secret(missing, err, sizeof err));
    assert_non_null(strstr(err, "cannot open"));
    assert_null(keys_load_secret(dir, err, sizeof err)); /* a directory */
}

/* A key file given as a pipe or a socket (/dev/fd/N, /proc/self/fd/N):
 * the /proc link at its end is refused as a link, and said for what it
 * stands for, not as "Too many levels of symbolic links". */
static void test_key_file_not_on_disk(void **state)
{
    (void)state;
    int pipe_fds[2], socket_fds[2];
    assert_int_equal(pipe(pipe_fds), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, socket_fds), 0);
    const struct {
        int fd;
        const char *folder, *kind, *what;
    } rows[] = {
        {pipe_fds[0], "/proc/self/fd", "pipe:[", "(a pipe or process substitution)"},
        {pipe_fds[0], "/dev/fd", "pipe:[", "(a pipe or process substitution)"},
        {socket_fds[0], "/dev/fd", "socket:[", "(a socket)"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char p[64], err[512] = "", expect[128];
        uint8_t pk[32];
        snprintf(p, sizeof p, "%s/%d", rows[i].folder, rows[i].fd);
        snprintf(expect, sizeof expect, "key file %s: not a file on disk but %s", p, rows[i].kind);
        assert_null(keys_load_secret(p, err, sizeof err));
        if (strstr(err, expect) == NULL || strstr(err, rows[i].what) == NULL ||
            strstr(err, "give the key file's own path") == NULL)
            fail_msg("secret %s: got \"%s\"", p, err);
        assert_int_equal(keys_load_public(p, pk, err, sizeof err), -1);
        if (strstr(err, expect) == NULL)
            fail_msg("public %s: got \"%s\"", p, err);
    }
    for (int i = 0; i < 2; i++) {
        close(pipe_fds[i]);
        close(socket_fds[i]);
    }
}

/* Who may own a key file: a secret one (a .key file, a store key) the user
 * that reads it, or root; a file of another user is refused, whatever its
 * mode, with its owner and the reader named; a .pub file likewise (its
 * owner may rewrite it whatever its mode). Giving a file to another user needs root: run as another
 * user, test_key_files_of_another_user is reported skipped, never passed. */
enum key_kind { KEY_SECRET, KEY_SYMMETRIC, KEY_PUBLIC };

typedef struct owner_row {
    const char *name;
    enum key_kind kind;
    int other_owner; /* 1: chowned to another uid (needs root); 0: ours */
    mode_t mode;
    int loads; /* 1: accepted; 0: refused for its owner */
} owner_row_t;

static const owner_row_t owner_rows[] = {
    {"own.key", KEY_SECRET, 0, 0600, 1},
    {"own-readonly.key", KEY_SECRET, 0, 0400, 1},
    {"own-store.key", KEY_SYMMETRIC, 0, 0600, 1},
    {"own-public.pub", KEY_PUBLIC, 0, 0644, 1},
    {"other.key", KEY_SECRET, 1, 0600, 0},
    {"other-readonly.key", KEY_SECRET, 1, 0400, 0},
    {"other-store.key", KEY_SYMMETRIC, 1, 0600, 0},
    {"other-open.key", KEY_SECRET, 1, 0644, 0}, /* the owner is named first */
    {"other-public.pub", KEY_PUBLIC, 1, 0644, 0},
};

/* Another uid than ours, for chown. */
static uid_t other_uid(void)
{
    return geteuid() == 65534 ? 65533 : 65534;
}

/* Write the row's file (a valid key of its kind) and load it: 0 or -1. */
static int owner_row_load(const owner_row_t *row, char *err, size_t errlen)
{
    char p[256];
    path(p, sizeof p, row->name);
    if (row->kind == KEY_PUBLIC) {
        char base[256];
        path(base, sizeof base, row->name);
        base[strlen(base) - strlen(".pub")] = '\0';
        assert_int_equal(keys_generate(base, err, errlen), 0);
    } else {
        write_file(row->name,
                   row->kind == KEY_SECRET ? SECRET "0000000000000000000000000000000000000000\n"
                                           : STORE "0000000000000000000000000000000000000000\n",
                   0600);
    }
    if (row->other_owner)
        assert_int_equal(chown(p, other_uid(), (gid_t)-1), 0);
    assert_int_equal(chmod(p, row->mode), 0);
    err[0] = '\0';
    if (row->kind == KEY_SECRET) {
        keypair_t *kp = keys_load_secret(p, err, errlen);
        int rc = kp != NULL ? 0 : -1;
        keys_destroy(&kp);
        return rc;
    }
    uint8_t key[32];
    return row->kind == KEY_SYMMETRIC ? keys_load_symmetric(p, key, err, errlen)
                                      : keys_load_public(p, key, err, errlen);
}

static void owner_rows_check(int other_owner)
{
    char want_owner[96], want_reader[96];
    snprintf(want_owner, sizeof want_owner, "belongs to uid %u", (unsigned)other_uid());
    snprintf(want_reader, sizeof want_reader, "chown it to uid %u", (unsigned)geteuid());
    for (size_t i = 0; i < sizeof owner_rows / sizeof owner_rows[0]; i++) {
        const owner_row_t *row = &owner_rows[i];
        char err[512];
        if (row->other_owner != other_owner)
            continue;
        /* a .pub is to be root's: the service user only reads it */
        const char *fix = row->kind == KEY_PUBLIC ? "run: chown root" : want_reader;
        int rc = owner_row_load(row, err, sizeof err);
        if (row->loads && rc != 0)
            fail_msg("%s: refused: %s", row->name, err);
        if (!row->loads && (rc == 0 || strstr(err, row->name) == NULL ||
                            strstr(err, want_owner) == NULL || strstr(err, fix) == NULL))
            fail_msg("%s: expected a refusal naming it, \"%s\" and \"%s\", got %s \"%s\"",
                     row->name, want_owner, fix, rc == 0 ? "accepted" : "refused", err);
    }
}

static void test_key_files_of_our_own_user(void **state)
{
    (void)state;
    owner_rows_check(0);
}

static void test_key_files_of_another_user(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        fprintf(stderr, "test_keys: giving a key file to another user needs root; the rows "
                        "other.key, other-readonly.key, other-store.key, other-open.key and "
                        "other-public.pub are skipped\n");
        skip();
    }
    owner_rows_check(1);
}

/* A FIFO in place of a key file is refused at once, never waited on (a
 * blocking open would hang a broker reloading its policy). alarm() bounds
 * the test so that a regression fails instead of hanging. */
static void test_fifo_is_refused_without_blocking(void **state)
{
    (void)state;
    char p[256], err[256];
    uint8_t pk[32];
    path(p, sizeof p, "fifo.pub");
    assert_int_equal(mkfifo(p, 0600), 0);
    alarm(10);
    assert_int_equal(keys_load_public(p, pk, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a regular file"));
    assert_null(keys_load_secret(p, err, sizeof err));
    assert_non_null(strstr(err, "not a regular file"));
    alarm(0);
}

static void test_public_keys(void **state)
{
    (void)state;
    uint8_t pk[32], sk[64], back[32];
    char z85[41], err[256];
    crypto_sign_keypair(pk, sk);
    keys_public_z85(pk, z85);
    assert_int_equal(strlen(z85), 40);
    assert_int_equal(keys_parse_public_z85(z85, back), 0);
    assert_memory_equal(pk, back, 32);
    assert_int_equal(keys_parse_public_z85("tooshort", back), -1);
    assert_int_equal(keys_parse_public_z85(NULL, back), -1);
    write_file("junk.pub", KEYS_PUBLIC_HEADER "\nnot a key at all, not a key at all, xx\n", 0644);
    char p[256];
    path(p, sizeof p, "junk.pub");
    assert_int_equal(keys_load_public(p, back, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a Z85"));
}

static void test_symmetric_keys(void **state)
{
    (void)state;
    char p[256], err[256];
    uint8_t key[32], again[32];
    path(p, sizeof p, "store.key");
    assert_int_equal(keys_write_symmetric(p, err, sizeof err), 0);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(keys_load_symmetric(p, key, err, sizeof err), 0);
    assert_int_equal(keys_load_symmetric(p, again, err, sizeof err), 0);
    assert_memory_equal(key, again, 32);
    /* never overwritten; refused when readable by others or malformed */
    assert_int_equal(keys_write_symmetric(p, err, sizeof err), -1);
    assert_int_equal(chmod(p, 0640), 0);
    assert_int_equal(keys_load_symmetric(p, key, err, sizeof err), -1);
    assert_non_null(strstr(err, "group or others"));
    write_file("short.sym", STORE "abc\n", 0600);
    path(p, sizeof p, "short.sym");
    assert_int_equal(keys_load_symmetric(p, key, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a Z85 key"));
}

/* The names in dir that begin with prefix: how many, and the size of the
 * last one found. */
static int count_named(const char *prefix, off_t *size)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int found = 0;
    for (struct dirent *ent; (ent = readdir(d)) != NULL;) {
        if (strncmp(ent->d_name, prefix, strlen(prefix)) != 0)
            continue;
        char p[512];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, ent->d_name);
        if (size != NULL && lstat(p, &st) == 0)
            *size = st.st_size;
        found++;
    }
    closedir(d);
    return found;
}

/* Run the write of a key file (symmetric at base, or a pair at base.key
 * and base.pub) in a child under a file size limit of `limit` bytes: the
 * write stops there and SIGXFSZ kills the child at its next write, as a
 * crash or a power cut would stop it half-way. */
static void killed_while_writing(const char *base, int pair, rlim_t limit)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char err[256];
        struct rlimit r;
        signal(SIGXFSZ, SIG_DFL);
        if (getrlimit(RLIMIT_FSIZE, &r) != 0)
            _exit(3);
        r.rlim_cur = limit;
        if (setrlimit(RLIMIT_FSIZE, &r) != 0)
            _exit(3);
        int rc = pair ? keys_generate(base, err, sizeof err)
                      : keys_write_symmetric(base, err, sizeof err);
        _exit(rc == 0 ? 0 : 4);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGXFSZ)
        fail_msg("writing %s under a file size limit of %llu bytes ended with status %d, not "
                 "killed by SIGXFSZ",
                 base, (unsigned long long)limit, status);
}

/* A write of a key file that is killed (at its first write, or half-way)
 * leaves no file at the key's path, only its temporary
 * (PATH.partial-XXXXXXXX, the part it wrote), which is never taken for
 * the key; the next write makes the key
 * and removes that temporary, but leaves one another write holds (its
 * flock) and every other name: a symbolic link, a name that is not such a
 * temporary's. A pair likewise leaves neither its .key nor its .pub. */
static void test_interrupted_write_leaves_no_key(void **state)
{
    (void)state;
    char p[256], err[256], held[300], link_name[300], target[300];
    uint8_t key[32];
    path(p, sizeof p, "cut.key");
    /* killed at its first write, then half-way (the first one's temporary
     * removed by the second) */
    static const rlim_t limits[] = {0, 60};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        killed_while_writing(p, 0, limits[i]);
        if (access(p, F_OK) == 0)
            fail_msg("the write killed at byte %llu left %s", (unsigned long long)limits[i], p);
        off_t size = -1;
        assert_int_equal(count_named("cut.key.partial-", &size), 1);
        assert_int_equal(size, (off_t)limits[i]);
    }

    /* beside it: one held by another write, a link, and look-alikes */
    snprintf(held, sizeof held, "%s.partial-0000abcd", p);
    int held_fd = open(held, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    assert_true(held_fd >= 0);
    assert_int_equal(flock(held_fd, LOCK_EX | LOCK_NB), 0);
    path(target, sizeof target, "linked-target");
    write_file("linked-target", "not a temporary\n", 0600);
    snprintf(link_name, sizeof link_name, "%s.partial-00000001", p);
    assert_int_equal(symlink(target, link_name), 0);
    static const char *const others[] = {"cut.key.partial-0000abcz", "cut.key.partial-0000abcd0",
                                         "cut.key.partial-0000ABCD", "cut.key.partial-000abcd"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        write_file(others[i], "another file\n", 0600);

    assert_int_equal(keys_write_symmetric(p, err, sizeof err), 0);
    assert_int_equal(keys_load_symmetric(p, key, err, sizeof err), 0);
    /* the killed one gone; the held one, the link, its target, the others left */
    assert_int_equal(count_named("cut.key.partial-", NULL),
                     2 + (int)(sizeof others / sizeof others[0]));
    assert_int_equal(access(held, F_OK), 0);
    struct stat st;
    assert_int_equal(lstat(link_name, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    assert_int_equal(access(target, F_OK), 0);
    /* released, it goes with the next write (which refuses the key there) */
    assert_int_equal(close(held_fd), 0);
    assert_int_equal(keys_write_symmetric(p, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot create"));
    assert_non_null(strstr(err, "File exists"));
    if (access(held, F_OK) == 0)
        fail_msg("%s, no longer held, is still there", held);
    assert_int_equal(count_named("cut.key.partial-", NULL),
                     1 + (int)(sizeof others / sizeof others[0]));

    /* a pair killed while its secret key is written: neither file */
    char base[200], pub[256];
    path(base, sizeof base, "cut-pair");
    snprintf(p, sizeof p, "%s.key", base);
    snprintf(pub, sizeof pub, "%s.pub", base);
    killed_while_writing(base, 1, 40);
    if (access(p, F_OK) == 0 || access(pub, F_OK) == 0)
        fail_msg("the killed keys_generate left %s or %s", p, pub);
    assert_int_equal(count_named("cut-pair.key.partial-", NULL), 1);
    assert_int_equal(keys_generate(base, err, sizeof err), 0);
    assert_int_equal(count_named("cut-pair.key.partial-", NULL), 0);
    keypair_t *kp = keys_load_secret(p, err, sizeof err);
    assert_non_null(kp);
    assert_int_equal(keys_load_public(pub, key, err, sizeof err), 0);
    assert_memory_equal(key, kp->sign_pk, 32);
    keys_destroy(&kp);
    sodium_memzero(key, sizeof key);
}

/* The three readers, by the kind of file each wants. */
enum reader { READ_SECRET, READ_PUBLIC, READ_STORE };

static int load_as(enum reader reader, const char *p, char *err, size_t errlen)
{
    err[0] = '\0';
    if (reader == READ_SECRET) {
        keypair_t *kp = keys_load_secret(p, err, errlen);
        int rc = kp != NULL ? 0 : -1;
        keys_destroy(&kp);
        return rc;
    }
    uint8_t key[32];
    int rc = reader == READ_PUBLIC ? keys_load_public(p, key, err, errlen)
                                   : keys_load_symmetric(p, key, err, errlen);
    sodium_memzero(key, sizeof key);
    return rc;
}

static const char *const reader_names[] = {"keys_load_secret", "keys_load_public",
                                           "keys_load_symmetric"};

/* A key file of one kind given to the reader of another is refused for
 * its kind, which its first line names, with the file to name instead;
 * never with advice to chmod or chown it (a .pub named as the broker's
 * secret key was answered "run: chmod 600", and after that chmod its
 * public text was taken as the seed). A file without that line is not
 * taken as any kind. */
typedef struct kind_row {
    const char *file; /* in the folder "kinds" */
    enum reader reader;
    const char *expect; /* NULL: loads; else a part of the refusal */
    const char *beside; /* NULL, or the file the refusal names instead, "(FOLDER/beside)" */
} kind_row_t;

static const kind_row_t kind_rows[] = {
    {"pair.key", READ_SECRET, NULL, NULL},
    {"pair.key", READ_PUBLIC,
     "pair.key is a secret key file (its first line says so), not a public key: name the .pub "
     "file keygen wrote beside it",
     "pair.pub"},
    {"pair.key", READ_STORE,
     "pair.key is a secret key file (its first line says so), not a store key: the store key is "
     "the file schakeld --init made (store_key_file)",
     NULL},
    {"pair.pub", READ_PUBLIC, NULL, NULL},
    {"pair.pub", READ_SECRET,
     "pair.pub is a public key file (its first line says so), not a secret key: the secret key "
     "is the .key file keygen wrote beside it",
     "pair.key"},
    {"pair.pub", READ_STORE,
     "pair.pub is a public key file (its first line says so), not a store key", NULL},
    /* the same .pub after the chmod 600 the old refusal advised */
    {"pair-600.pub", READ_SECRET, "pair-600.pub is a public key file (its first line says so)",
     NULL},
    {"copied-pub.key", READ_SECRET,
     "copied-pub.key is a public key file (its first line says so), not a secret key: name the "
     ".key file keygen wrote",
     NULL},
    {"store.key", READ_STORE, NULL, NULL},
    {"store.key", READ_SECRET,
     "store.key is a store key file (its first line says so), not a secret key", NULL},
    {"store.key", READ_PUBLIC,
     "store.key is a store key file (its first line says so), not a public key", NULL},
    /* without the line: a public key's text, mode 0600; as a .pub, a
     * seed's text (taken as a public key 1 seed in 16) */
    {"bare.key", READ_PUBLIC,
     "bare.key does not say it is a public key: its first line is not \"# Schakel public key "
     "...\"",
     NULL},
    {"seed.pub", READ_PUBLIC, "seed.pub does not say it is a public key", NULL},
    {"other-comment.pub", READ_PUBLIC, "other-comment.pub does not say it is a public key", NULL},
    {"bare.key", READ_SECRET,
     "bare.key does not say it is a secret key: its first line is not \"# Schakel secret key ...\"",
     NULL},
    {"bare.key", READ_STORE,
     "bare.key does not say it is a store key: its first line is not \"# Schakel store sealing key "
     "...\"",
     NULL},
    /* another comment first: the line must be the first (the public
     * reader would take it for its text, 1 seed in 16 a point) */
    {"other-comment.key", READ_STORE, "other-comment.key does not say it is a store key", NULL},
    {"other-comment.key", READ_SECRET, "other-comment.key does not say it is a secret key", NULL},
    {"blank-first.key", READ_SECRET, "blank-first.key does not say it is a secret key", NULL},
    {"blank-first.key", READ_STORE, "blank-first.key does not say it is a store key", NULL},
    /* trimmed as a key line is: CR LF, leading blanks */
    {"crlf.key", READ_SECRET, NULL, NULL},
    {"crlf.key", READ_PUBLIC, "crlf.key is a secret key file", NULL},
};

static void test_key_kinds(void **state)
{
    (void)state;
    char base[256], p[300], err[1024], text[256], pub_text[256];
    assert_int_equal(mkdir(strcat(strcpy(p, dir), "/kinds"), 0700), 0);
    path(base, sizeof base, "kinds/pair");
    assert_int_equal(keys_generate(base, err, sizeof err), 0);
    path(p, sizeof p, "kinds/store.key");
    assert_int_equal(keys_write_symmetric(p, err, sizeof err), 0);
    keypair_t *kp = keys_load_secret(strcat(strcpy(p, base), ".key"), err, sizeof err);
    assert_non_null(kp);
    char pk_z85[41], seed_z85[41];
    uint8_t seed[32];
    keys_public_z85(kp->sign_pk, pk_z85);
    assert_int_equal(crypto_sign_ed25519_sk_to_seed(seed, kp->sign_sk), 0);
    keys_public_z85(seed, seed_z85);
    keys_destroy(&kp);
    snprintf(pub_text, sizeof pub_text, "%s\n%s\n", KEYS_PUBLIC_HEADER, pk_z85);
    write_file("kinds/pair-600.pub", pub_text, 0600);
    write_file("kinds/copied-pub.key", pub_text, 0600);
    snprintf(text, sizeof text, "%s\n", pk_z85);
    write_file("kinds/bare.key", text, 0600);
    snprintf(text, sizeof text, "%s\n", seed_z85);
    write_file("kinds/seed.pub", text, 0644);
    snprintf(text, sizeof text, "# partner's key\n%s\n%s\n", KEYS_PUBLIC_HEADER, pk_z85);
    write_file("kinds/other-comment.pub", text, 0644);
    snprintf(text, sizeof text, "# my key\n%s\n%s\n", KEYS_SECRET_HEADER, seed_z85);
    write_file("kinds/other-comment.key", text, 0600);
    snprintf(text, sizeof text, "\n%s\n%s\n", KEYS_SECRET_HEADER, seed_z85);
    write_file("kinds/blank-first.key", text, 0600);
    snprintf(text, sizeof text, "  %s\r\n%s\r\n", KEYS_SECRET_HEADER, seed_z85);
    write_file("kinds/crlf.key", text, 0600);
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(seed_z85, sizeof seed_z85);
    sodium_memzero(text, sizeof text);

    char folder[256];
    path(folder, sizeof folder, "kinds");
    for (size_t i = 0; i < sizeof kind_rows / sizeof kind_rows[0]; i++) {
        const kind_row_t *row = &kind_rows[i];
        char file[600], too[600] = "";
        snprintf(file, sizeof file, "%s/%s", folder, row->file);
        int rc = load_as(row->reader, file, err, sizeof err);
        if (row->expect == NULL) {
            if (rc != 0)
                fail_msg("%s by %s: refused: %s", row->file, reader_names[row->reader], err);
            continue;
        }
        if (row->beside != NULL)
            snprintf(too, sizeof too, "(%s/%s)", folder, row->beside);
        if (rc == 0 || strstr(err, row->expect) == NULL || strstr(err, too) == NULL ||
            strstr(err, "chmod") != NULL || strstr(err, "chown") != NULL)
            fail_msg("%s by %s: expected a refusal with \"%s\" and \"%s\", no chmod or chown, "
                     "got %s \"%s\"",
                     row->file, reader_names[row->reader], row->expect, too,
                     rc == 0 ? "accepted" : "refused", err);
    }
}

/* A public key file group or others may write is refused: whoever may
 * write it chooses who connects with that key. The refusal says chmod
 * go-w, never chmod 600 (a .pub is to be read). */
static void test_public_key_modes(void **state)
{
    (void)state;
    static const struct {
        mode_t mode;
        int loads;
    } rows[] = {{0644, 1}, {0444, 1}, {0600, 1}, {0640, 1}, {0664, 0},
                {0646, 0}, {0666, 0}, {0620, 0}, {0602, 0}};
    char base[256], p[300], err[512], want[128];
    assert_int_equal(mkdir(strcat(strcpy(p, dir), "/modes"), 0700), 0);
    path(base, sizeof base, "modes/partner");
    assert_int_equal(keys_generate(base, err, sizeof err), 0);
    snprintf(p, sizeof p, "%s.pub", base);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint8_t pk[32];
        assert_int_equal(chmod(p, rows[i].mode), 0);
        err[0] = '\0';
        int rc = keys_load_public(p, pk, err, sizeof err);
        snprintf(want, sizeof want, "may be written by group or others (mode %03o)",
                 (unsigned)rows[i].mode);
        if (rows[i].loads && rc != 0)
            fail_msg("mode %03o: refused: %s", (unsigned)rows[i].mode, err);
        if (!rows[i].loads &&
            (rc == 0 || strstr(err, p) == NULL || strstr(err, want) == NULL ||
             strstr(err, "run: chmod go-w") == NULL || strstr(err, "chmod 600") != NULL))
            fail_msg("mode %03o: expected a refusal with \"%s\" and chmod go-w, got %s \"%s\"",
                     (unsigned)rows[i].mode, want, rc == 0 ? "accepted" : "refused", err);
    }
}

/* A key file in a folder group or others may write is refused, whatever
 * its kind (they can put another key under its name), unless the folder
 * is sticky (the file must then be ours or root's, as anywhere); a key is
 * not written into such a folder either. Files of another user need root to make: run as
 * another user, those rows are reported, not passed. */
static void test_key_folders(void **state)
{
    (void)state;
    static const struct {
        mode_t mode;
        int other_owner;
        int loads;
    } rows[] = {
        {0700, 0, 1},  {0750, 0, 1}, {0755, 0, 1},  {0500, 0, 1},  {01777, 0, 1},
        {01770, 0, 1}, {0770, 0, 0}, {0777, 0, 0},  {0757, 0, 0},  {0730, 0, 0},
        {0703, 0, 0},  {0700, 1, 0}, {01777, 1, 0}, {01770, 1, 0}, {0777, 1, 0},
    };
    static const char *const files[] = {"k.key", "k.pub", "store.key"};
    static const enum reader readers[] = {READ_SECRET, READ_PUBLIC, READ_STORE};
    char folder[256], base[300], p[300], err[1024], want[800];
    int skipped = 0;
    path(folder, sizeof folder, "folders");
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        if (rows[i].other_owner && geteuid() != 0) {
            skipped++;
            continue;
        }
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", folder);
        assert_int_equal(system(cmd), 0);
        assert_int_equal(mkdir(folder, 0700), 0);
        snprintf(base, sizeof base, "%s/k", folder);
        assert_int_equal(keys_generate(base, err, sizeof err), 0);
        snprintf(p, sizeof p, "%s/store.key", folder);
        assert_int_equal(keys_write_symmetric(p, err, sizeof err), 0);
        for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
            snprintf(p, sizeof p, "%s/%s", folder, files[f]);
            if (rows[i].other_owner)
                assert_int_equal(chown(p, other_uid(), (gid_t)-1), 0);
        }
        assert_int_equal(chmod(folder, rows[i].mode), 0);
        for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
            snprintf(p, sizeof p, "%s/%s", folder, files[f]);
            /* a secret key of another user is refused for its owner
             * before its folder is looked at: only its .pub shows the
             * folder rule on its own */
            if (rows[i].other_owner && readers[f] != READ_PUBLIC)
                continue;
            int rc = load_as(readers[f], p, err, sizeof err);
            if (rows[i].other_owner && ((rows[i].mode & S_ISVTX) != 0 || (rows[i].mode & 022) == 0))
                snprintf(want, sizeof want, "public key file %s belongs to uid %u (", p,
                         (unsigned)other_uid());
            else
                snprintf(want, sizeof want,
                         "is in a folder group or others may write (%s, mode %04o): they can put "
                         "another key in its place; run: chmod go-w %s",
                         folder, (unsigned)rows[i].mode, folder);
            if (rows[i].loads && rc != 0)
                fail_msg("%s in a folder of mode %04o%s: refused: %s", files[f],
                         (unsigned)rows[i].mode, rows[i].other_owner ? ", another's" : "", err);
            if (!rows[i].loads && (rc == 0 || strstr(err, p) == NULL || strstr(err, want) == NULL))
                fail_msg("%s in a folder of mode %04o%s: expected a refusal with \"%s\", got %s "
                         "\"%s\"",
                         files[f], (unsigned)rows[i].mode, rows[i].other_owner ? ", another's" : "",
                         want, rc == 0 ? "accepted" : "refused", err);
        }
        /* nothing new is written where it would be refused */
        if (rows[i].other_owner || (rows[i].mode & 0200) == 0)
            continue;
        snprintf(base, sizeof base, "%s/new", folder);
        snprintf(p, sizeof p, "%s/new-store.key", folder);
        int pair_rc = keys_generate(base, err, sizeof err);
        if ((pair_rc == 0) != rows[i].loads)
            fail_msg("keys_generate in a folder of mode %04o: %s \"%s\"", (unsigned)rows[i].mode,
                     pair_rc == 0 ? "written" : "refused", err);
        if (pair_rc != 0 && strstr(err, "is in a folder group or others may write") == NULL)
            fail_msg("keys_generate in a folder of mode %04o: refused for another cause: %s",
                     (unsigned)rows[i].mode, err);
        int store_rc = keys_write_symmetric(p, err, sizeof err);
        if ((store_rc == 0) != rows[i].loads)
            fail_msg("keys_write_symmetric in a folder of mode %04o: %s \"%s\"",
                     (unsigned)rows[i].mode, store_rc == 0 ? "written" : "refused", err);
        if (!rows[i].loads) {
            DIR *d = opendir(folder);
            assert_non_null(d);
            int names = 0;
            for (struct dirent *ent; (ent = readdir(d)) != NULL;)
                names += ent->d_name[0] != '.';
            closedir(d);
            if (names != 3)
                fail_msg("a refused write in a folder of mode %04o left %d names, not 3",
                         (unsigned)rows[i].mode, names);
        }
    }
    assert_int_equal(chmod(folder, 0700), 0);
    if (skipped > 0) {
        fprintf(stderr,
                "test_keys: giving a key file to another user needs root; %d rows of "
                "test_key_folders are skipped\n",
                skipped);
        skip();
    }
}

/* Every folder on a key file's path counts, not only its own: whoever may
 * write a folder above, or owns one, can rename the keys folder away and
 * put one of their own in its place. The tree DIR/path/outer/inner holds
 * a pair and a store key; each row sets the two folders' modes and owners
 * and says what a load and a write answer. Rows with another user's folder
 * need root: run as another user, they are reported skipped. */
enum path_fault { PATH_OK, OUTER_OPEN, OUTER_OWNER, INNER_OWNER };

typedef struct path_row {
    mode_t outer_mode;
    int outer_other; /* 1: outer belongs to other_uid() (needs root) */
    mode_t inner_mode;
    int inner_other;
    enum path_fault fault;
} path_row_t;

static const path_row_t path_rows[] = {
    {0755, 0, 0700, 0, PATH_OK},     {01777, 0, 0700, 0, PATH_OK},
    {0711, 0, 0711, 0, PATH_OK},     {0777, 0, 0700, 0, OUTER_OPEN},
    {0775, 0, 0755, 0, OUTER_OPEN},  {0757, 0, 0700, 0, OUTER_OPEN},
    {0755, 1, 0700, 0, OUTER_OWNER}, {01777, 1, 0700, 0, OUTER_OWNER},
    {0755, 0, 0755, 1, INNER_OWNER}, {01777, 0, 0755, 1, INNER_OWNER},
};

/* What a refusal for row's fault must say (path: the file refused). */
static void path_row_want(const path_row_t *row, const char *file, const char *outer,
                          const char *inner, char *want, size_t wantlen)
{
    if (row->fault == OUTER_OPEN)
        snprintf(want, wantlen,
                 "key file %s: group or others may write the folder %s above it (mode %04o), so "
                 "they can put another key in its place: run: chmod go-w %s",
                 file, outer, (unsigned)row->outer_mode, outer);
    else if (row->fault == OUTER_OWNER)
        snprintf(want, wantlen, "key file %s: the folder %s above it belongs to uid %u (", file,
                 outer, (unsigned)other_uid());
    else
        snprintf(want, wantlen, "key file %s: its folder %s belongs to uid %u (", file, inner,
                 (unsigned)other_uid());
}

static void path_tree_set(const char *outer, const char *inner, const path_row_t *row)
{
    assert_int_equal(chown(outer, row->outer_other ? other_uid() : geteuid(), (gid_t)-1), 0);
    assert_int_equal(chown(inner, row->inner_other ? other_uid() : geteuid(), (gid_t)-1), 0);
    assert_int_equal(chmod(outer, row->outer_mode), 0);
    assert_int_equal(chmod(inner, row->inner_mode), 0);
}

static void test_key_path_folders(void **state)
{
    (void)state;
    static const char *const files[] = {"k.key", "k.pub", "store.key"};
    static const enum reader readers[] = {READ_SECRET, READ_PUBLIC, READ_STORE};
    char top[256], outer[320], inner[384], p[512], err[1024], want[1024];
    int skipped = 0;
    path(top, sizeof top, "path");
    assert_int_equal(mkdir(top, 0755), 0);
    snprintf(outer, sizeof outer, "%s/outer", top);
    snprintf(inner, sizeof inner, "%s/inner", outer);
    assert_int_equal(mkdir(outer, 0700), 0);
    assert_int_equal(mkdir(inner, 0700), 0);
    snprintf(p, sizeof p, "%s/k", inner);
    assert_int_equal(keys_generate(p, err, sizeof err), 0);
    snprintf(p, sizeof p, "%s/store.key", inner);
    assert_int_equal(keys_write_symmetric(p, err, sizeof err), 0);
    for (size_t i = 0; i < sizeof path_rows / sizeof path_rows[0]; i++) {
        const path_row_t *row = &path_rows[i];
        if ((row->outer_other || row->inner_other) && geteuid() != 0) {
            skipped++;
            continue;
        }
        path_tree_set(outer, inner, row);
        for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
            snprintf(p, sizeof p, "%s/%s", inner, files[f]);
            int rc = load_as(readers[f], p, err, sizeof err);
            if (row->fault == PATH_OK) {
                if (rc != 0)
                    fail_msg("row %zu, %s: refused: %s", i, files[f], err);
                continue;
            }
            path_row_want(row, p, outer, inner, want, sizeof want);
            if (rc == 0 || strstr(err, want) == NULL)
                fail_msg("row %zu, %s: expected a refusal with \"%s\", got %s \"%s\"", i, files[f],
                         want, rc == 0 ? "accepted" : "refused", err);
        }
        /* nothing is written where it would be refused (as root: the rows
         * with another's folder are writable to root) */
        if (row->fault == PATH_OK || (row->inner_mode & 0200) == 0)
            continue;
        snprintf(p, sizeof p, "%s/new", inner);
        char named[512];
        snprintf(named, sizeof named, "%s/new.key", inner);
        path_row_want(row, named, outer, inner, want, sizeof want);
        if (keys_generate(p, err, sizeof err) == 0 || strstr(err, "cannot create") != NULL ||
            strstr(err, want) == NULL)
            fail_msg("row %zu: keys_generate: expected a refusal with \"%s\", got \"%s\"", i, want,
                     err);
        struct stat st;
        assert_int_equal(lstat(named, &st), -1);
    }
    /* back to ours, for the teardown */
    path_tree_set(outer, inner, &path_rows[0]);
    if (skipped > 0) {
        fprintf(stderr,
                "test_keys: giving a folder to another user needs root; %d rows of "
                "test_key_path_folders are skipped\n",
                skipped);
        skip();
    }
}

/* A symbolic link in a key file's folder part is followed one name at a
 * time, and the folders its target passes are held to the same rule; a
 * relative name starts in the working folder, and the folders above it
 * count. */
static void test_key_path_links_and_working_folder(void **state)
{
    (void)state;
    char top[256], outer[320], inner[384], link[320], p[512], err[1024], want[1024];
    uint8_t pk[32];
    path(top, sizeof top, "via");
    assert_int_equal(mkdir(top, 0755), 0);
    snprintf(outer, sizeof outer, "%s/outer", top);
    snprintf(inner, sizeof inner, "%s/inner", outer);
    assert_int_equal(mkdir(outer, 0755), 0);
    assert_int_equal(mkdir(inner, 0700), 0);
    snprintf(p, sizeof p, "%s/k", inner);
    assert_int_equal(keys_generate(p, err, sizeof err), 0);
    snprintf(link, sizeof link, "%s/keys", top);
    assert_int_equal(symlink("outer/inner", link), 0);
    snprintf(p, sizeof p, "%s/keys/k.pub", top);
    if (keys_load_public(p, pk, err, sizeof err) != 0)
        fail_msg("through a link to a safe folder: %s", err);

    assert_int_equal(chmod(outer, 0777), 0);
    assert_int_equal(keys_load_public(p, pk, err, sizeof err), -1);
    snprintf(want, sizeof want,
             "key file %s: group or others may write the folder %s above it (mode 0777)", p, outer);
    if (strstr(err, want) == NULL)
        fail_msg("through a link into an open folder: expected \"%s\", got \"%s\"", want, err);

    /* the working folder is inner, under the open folder */
    int here = open(".", O_RDONLY | O_DIRECTORY);
    assert_true(here >= 0);
    assert_int_equal(chdir(inner), 0);
    int rc = keys_load_public("k.pub", pk, err, sizeof err);
    assert_int_equal(fchdir(here), 0);
    snprintf(want, sizeof want,
             "key file k.pub: group or others may write the folder %s above it (mode 0777)", outer);
    if (rc == 0 || strstr(err, want) == NULL)
        fail_msg("a relative name below an open folder: expected \"%s\", got %s \"%s\"", want,
                 rc == 0 ? "accepted" : "refused", err);
    assert_int_equal(chmod(outer, 0755), 0);
    assert_int_equal(chdir(inner), 0);
    rc = keys_load_public("k.pub", pk, err, sizeof err);
    assert_int_equal(fchdir(here), 0);
    close(here);
    if (rc != 0)
        fail_msg("a relative name below safe folders: %s", err);
}

/* The loaders need to search a key's folder, not to list it: a folder of
 * mode 0711 (or 0311, its owner's own) is taken. Root may list any
 * folder, so as root the load runs in a child that becomes another user,
 * whose key is the .key and store key (its own) and the .pub (root's). */
static int load_all_three(const char *folder, char *err, size_t errlen)
{
    static const char *const files[] = {"k.key", "k.pub", "store.key"};
    static const enum reader readers[] = {READ_SECRET, READ_PUBLIC, READ_STORE};
    for (size_t f = 0; f < 3; f++) {
        char p[400];
        snprintf(p, sizeof p, "%s/%s", folder, files[f]);
        if (load_as(readers[f], p, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static void test_key_folder_search_only(void **state)
{
    (void)state;
    char folder[256], p[400], err[1024];
    path(folder, sizeof folder, "search-only");
    assert_int_equal(mkdir(folder, 0700), 0);
    snprintf(p, sizeof p, "%s/k", folder);
    assert_int_equal(keys_generate(p, err, sizeof err), 0);
    snprintf(p, sizeof p, "%s/store.key", folder);
    assert_int_equal(keys_write_symmetric(p, err, sizeof err), 0);
    if (geteuid() != 0) {
        assert_int_equal(chmod(folder, 0311), 0);
        int rc = load_all_three(folder, err, sizeof err);
        assert_int_equal(chmod(folder, 0700), 0);
        if (rc != 0)
            fail_msg("a folder of mode 0311, our own: %s", err);
        return;
    }
    /* the child's keys are its own; the test folder above is opened to
     * search for it */
    uid_t user = other_uid();
    static const char *const own[] = {"k.key", "store.key"};
    for (size_t f = 0; f < 2; f++) {
        snprintf(p, sizeof p, "%s/%s", folder, own[f]);
        assert_int_equal(chown(p, user, (gid_t)-1), 0);
    }
    struct stat top;
    assert_int_equal(stat(dir, &top), 0);
    assert_int_equal(chmod(dir, 0711), 0);
    assert_int_equal(chmod(folder, 0711), 0);
    int pipe_fd[2];
    assert_int_equal(pipe(pipe_fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pipe_fd[0]);
        int rc = setgid(user) == 0 && setuid(user) == 0 && geteuid() == user ? 0 : -1;
        if (rc != 0)
            snprintf(err, sizeof err, "cannot become uid %u", (unsigned)user);
        else if (open(folder, O_RDONLY | O_DIRECTORY) >= 0)
            snprintf(err, sizeof err, "uid %u may list %s: the test proves nothing", (unsigned)user,
                     folder);
        else
            rc = load_all_three(folder, err, sizeof err);
        if (rc == 0)
            err[0] = '\0';
        ssize_t n = write(pipe_fd[1], err, strlen(err));
        _exit(n < 0 ? 2 : rc == 0 ? 0 : 1);
    }
    close(pipe_fd[1]);
    char child_err[1024] = "";
    ssize_t n = read(pipe_fd[0], child_err, sizeof child_err - 1);
    close(pipe_fd[0]);
    child_err[n > 0 ? n : 0] = '\0';
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(chmod(dir, top.st_mode & 07777), 0);
    assert_int_equal(chmod(folder, 0700), 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("uid %u reading keys in a folder of mode 0711: %s", (unsigned)user, child_err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_and_load),
        cmocka_unit_test(test_refused_secret_files),
        cmocka_unit_test(test_key_file_not_on_disk),
        cmocka_unit_test(test_public_keys),
        cmocka_unit_test(test_symmetric_keys),
        cmocka_unit_test(test_interrupted_write_leaves_no_key),
        cmocka_unit_test(test_fifo_is_refused_without_blocking),
        cmocka_unit_test(test_key_files_of_our_own_user),
        cmocka_unit_test(test_key_files_of_another_user),
        cmocka_unit_test(test_key_kinds),
        cmocka_unit_test(test_public_key_modes),
        cmocka_unit_test(test_key_folders),
        cmocka_unit_test(test_key_path_folders),
        cmocka_unit_test(test_key_path_links_and_working_folder),
        cmocka_unit_test(test_key_folder_search_only),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
