/*
 * fuzz_keyfile.c — libFuzzer harness for the key file readers of keys.c
 * (keys_load_secret, keys_load_public, keys_load_symmetric). The input is
 * written to a mode 0600 file in a per-process mkdtemp() folder under /tmp
 * (removed at exit) and loaded three ways. A refusal must carry a
 * terminated error text. Each reader takes only its kind of file, named
 * by the first line (a file without one by none of them), so at most one
 * of them takes an input. The three share one line syntax: the input
 * below each kind's first line, loaded by that kind's reader, must be
 * taken alike and give the same 32 bytes. Crashes, sanitizer reports,
 * leaks and broken promises (abort, with the promise named on stderr) are
 * the findings.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_keyfile_dir[64];
static char fuzz_keyfile_path[96];

static void fuzz_keyfile_cleanup(void)
{
    if (fuzz_keyfile_path[0] != '\0')
        unlink(fuzz_keyfile_path);
    if (fuzz_keyfile_dir[0] != '\0')
        rmdir(fuzz_keyfile_dir);
}

/* A finding: say which promise broke, leave no file behind, and abort so
 * that libFuzzer and the replay both stop on this input. */
static void fuzz_keyfile_fail(const char *what)
{
    fprintf(stderr, "fuzz_keyfile: %s\n", what);
    fuzz_keyfile_cleanup();
    abort();
}

/* The folder is made once per process: libFuzzer calls the harness
 * millions of times, and a fresh folder per input would only measure mkdir. */
static void fuzz_keyfile_setup(void)
{
    if (fuzz_keyfile_dir[0] != '\0')
        return;
    snprintf(fuzz_keyfile_dir, sizeof fuzz_keyfile_dir, "/tmp/schakel-fuzz-keyfile-XXXXXX");
    if (keys_init() != 0 || mkdtemp(fuzz_keyfile_dir) == NULL) {
        perror("fuzz_keyfile: setup");
        abort();
    }
    snprintf(fuzz_keyfile_path, sizeof fuzz_keyfile_path, "%s/input.key", fuzz_keyfile_dir);
    atexit(fuzz_keyfile_cleanup);
}

/* Write all of data to fd, or fail. */
static void fuzz_keyfile_write_all(int fd, const uint8_t *data, size_t size)
{
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(fd, data + done, size - done);
        if (n <= 0)
            fuzz_keyfile_fail("cannot write the input file");
        done += (size_t)n;
    }
}

/* Replace the file's content with first_line (NULL: none) and a newline,
 * then the input; 0600 in a 0700 folder, so that the secret readers get
 * past their mode and folder checks and reach the parser. */
static void fuzz_keyfile_write(const char *first_line, const uint8_t *data, size_t size)
{
    int fd = open(fuzz_keyfile_path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 || fchmod(fd, 0600) != 0)
        fuzz_keyfile_fail("cannot create the input file");
    if (first_line != NULL) {
        fuzz_keyfile_write_all(fd, (const uint8_t *)first_line, strlen(first_line));
        fuzz_keyfile_write_all(fd, (const uint8_t *)"\n", 1);
    }
    fuzz_keyfile_write_all(fd, data, size);
    if (close(fd) != 0)
        fuzz_keyfile_fail("cannot write the input file");
}

/* A refusal names its cause in a terminated, non-empty text. */
static void fuzz_keyfile_check_refusal(const char *err, size_t errlen)
{
    if (memchr(err, '\0', errlen) == NULL || err[0] == '\0')
        fuzz_keyfile_fail("a refusal without a terminated error text");
}

/* A loaded pair must be whole: the public half re-encodes and parses back
 * to itself, its X25519 half matches, and a signature made with it verifies. */
static void fuzz_keyfile_check_pair(const keypair_t *kp)
{
    static const uint8_t msg[] = "schakel-fuzz";
    uint8_t sig[64], again[32], curve[32];
    char z85[41];
    keys_public_z85(kp->sign_pk, z85);
    if (keys_parse_public_z85(z85, again) != 0 || memcmp(again, kp->sign_pk, 32) != 0)
        fuzz_keyfile_fail("the public key of a loaded pair does not parse back to itself");
    if (keys_sign_pk_to_curve(kp->sign_pk, curve) != 0 || memcmp(curve, kp->curve_pk, 32) != 0)
        fuzz_keyfile_fail("the X25519 key of a loaded pair does not match its Ed25519 key");
    if (keys_sign(kp, msg, sizeof msg, sig) != 0 ||
        keys_verify(kp->sign_pk, msg, sizeof msg, sig) != 0)
        fuzz_keyfile_fail("a loaded pair cannot make a signature that verifies");
}

/* keys_load_secret: 0 and the seed, or -1. */
static int fuzz_keyfile_secret(uint8_t seed[32])
{
    char err[256];
    memset(err, 'x', sizeof err);
    keypair_t *kp = keys_load_secret(fuzz_keyfile_path, err, sizeof err);
    if (kp == NULL) {
        fuzz_keyfile_check_refusal(err, sizeof err);
        return -1;
    }
    fuzz_keyfile_check_pair(kp);
    if (crypto_sign_ed25519_sk_to_seed(seed, kp->sign_sk) != 0)
        fuzz_keyfile_fail("a loaded pair has no seed");
    keys_destroy(&kp);
    if (kp != NULL)
        fuzz_keyfile_fail("keys_destroy left the pointer set");
    return 0;
}

/* keys_load_public: 0 and a key that is a curve point, or -1. */
static int fuzz_keyfile_public(uint8_t public_key[32])
{
    char err[256];
    uint8_t curve[32];
    memset(err, 'x', sizeof err);
    if (keys_load_public(fuzz_keyfile_path, public_key, err, sizeof err) != 0) {
        fuzz_keyfile_check_refusal(err, sizeof err);
        return -1;
    }
    if (keys_sign_pk_to_curve(public_key, curve) != 0)
        fuzz_keyfile_fail("the public reader took a key that is not a curve point");
    return 0;
}

/* keys_load_symmetric: 0 and the key, or -1. */
static int fuzz_keyfile_symmetric(uint8_t key[32])
{
    char err[256];
    memset(err, 'x', sizeof err);
    if (keys_load_symmetric(fuzz_keyfile_path, key, err, sizeof err) != 0) {
        fuzz_keyfile_check_refusal(err, sizeof err);
        return -1;
    }
    return 0;
}

/* Whether the input's first line, its leading blanks skipped as the
 * readers skip them, begins with one of the kinds' prefixes. */
static int fuzz_keyfile_names_a_kind(const uint8_t *data, size_t size)
{
    static const char *const prefixes[] = {KEYS_SECRET_PREFIX, KEYS_PUBLIC_PREFIX,
                                           KEYS_STORE_PREFIX};
    size_t at = 0;
    while (at < size && (data[at] == ' ' || data[at] == '\t'))
        at++;
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        size_t len = strlen(prefixes[i]);
        if (size - at >= len && memcmp(data + at, prefixes[i], len) == 0)
            return 1;
    }
    return 0;
}

/* Each kind's first line, padded with blanks (trimmed when read) to one
 * length, so that the size cap meets the three alike. */
#define FUZZ_KEYFILE_PAD "%-28s"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t secret[32], public_key[32], symmetric[32];
    char secret_line[64], public_line[64], store_line[64];
    fuzz_keyfile_setup();

    /* the input as it is: at most one reader takes it */
    fuzz_keyfile_write(NULL, data, size);
    int taken = (fuzz_keyfile_secret(secret) == 0) + (fuzz_keyfile_public(public_key) == 0) +
                (fuzz_keyfile_symmetric(symmetric) == 0);
    if (taken > 1)
        fuzz_keyfile_fail("more than one reader took the same file");
    if (taken == 1 && !fuzz_keyfile_names_a_kind(data, size))
        fuzz_keyfile_fail("a reader took a file whose first line names no kind");

    /* below each kind's first line: the same verdict and bytes */
    snprintf(secret_line, sizeof secret_line, FUZZ_KEYFILE_PAD, KEYS_SECRET_PREFIX);
    snprintf(public_line, sizeof public_line, FUZZ_KEYFILE_PAD, KEYS_PUBLIC_PREFIX);
    snprintf(store_line, sizeof store_line, FUZZ_KEYFILE_PAD, KEYS_STORE_PREFIX);
    if (strlen(secret_line) != strlen(store_line) || strlen(public_line) != strlen(store_line))
        fuzz_keyfile_fail("the padded first lines differ in length");
    fuzz_keyfile_write(store_line, data, size);
    int sym_rc = fuzz_keyfile_symmetric(symmetric);
    fuzz_keyfile_write(secret_line, data, size);
    int secret_rc = fuzz_keyfile_secret(secret);
    fuzz_keyfile_write(public_line, data, size);
    int public_rc = fuzz_keyfile_public(public_key);
    if (secret_rc != sym_rc)
        fuzz_keyfile_fail("the secret and symmetric readers disagree on a line");
    if (secret_rc == 0 && memcmp(secret, symmetric, 32) != 0)
        fuzz_keyfile_fail("the secret and symmetric readers decoded different bytes");
    if (public_rc == 0 && (sym_rc != 0 || memcmp(public_key, symmetric, 32) != 0))
        fuzz_keyfile_fail("the public reader took a line or bytes the symmetric reader did not");
    sodium_memzero(secret, sizeof secret);
    sodium_memzero(symmetric, sizeof symmetric);
    return 0;
}
