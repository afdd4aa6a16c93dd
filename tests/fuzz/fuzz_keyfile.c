/*
 * fuzz_keyfile.c — libFuzzer harness for the key file readers of keys.c
 * (keys_load_secret, keys_load_public, keys_load_symmetric). The input is
 * written to a mode 0600 file in a per-process mkdtemp() folder under /tmp
 * (removed at exit) and loaded three ways. A refusal must carry a
 * terminated error text; the three readers share one line syntax, so they
 * must agree on what they accept and on the 32 bytes it holds. Crashes,
 * sanitizer reports, leaks and disagreements (abort) are the findings.
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
    unlink(fuzz_keyfile_path);
    rmdir(fuzz_keyfile_dir);
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

/* Replace the file's content with the input; 0600 so that the secret
 * readers get past their mode check and reach the parser. */
static void fuzz_keyfile_write(const uint8_t *data, size_t size)
{
    int fd = open(fuzz_keyfile_path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 || fchmod(fd, 0600) != 0) {
        perror("fuzz_keyfile: open");
        abort();
    }
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(fd, data + done, size - done);
        if (n <= 0) {
            perror("fuzz_keyfile: write");
            abort();
        }
        done += (size_t)n;
    }
    if (close(fd) != 0)
        abort();
}

/* A refusal names its cause in a terminated, non-empty text. */
static void fuzz_keyfile_check_refusal(const char *err, size_t errlen)
{
    if (memchr(err, '\0', errlen) == NULL || err[0] == '\0')
        abort();
}

/* A loaded pair must be whole: the public half re-encodes and parses back
 * to itself, and a signature made with it verifies. */
static void fuzz_keyfile_check_pair(const keypair_t *kp)
{
    static const uint8_t msg[] = "schakel-fuzz";
    uint8_t sig[64], again[32], curve[32];
    char z85[41];
    keys_public_z85(kp->sign_pk, z85);
    if (keys_parse_public_z85(z85, again) != 0 || memcmp(again, kp->sign_pk, 32) != 0 ||
        keys_sign_pk_to_curve(kp->sign_pk, curve) != 0 || memcmp(curve, kp->curve_pk, 32) != 0 ||
        keys_sign(kp, msg, sizeof msg, sig) != 0 || keys_verify(kp->sign_pk, msg, sizeof msg, sig) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    uint8_t symmetric[32], public_key[32], seed[32];
    fuzz_keyfile_setup();
    fuzz_keyfile_write(data, size);

    memset(err, 'x', sizeof err);
    int sym_rc = keys_load_symmetric(fuzz_keyfile_path, symmetric, err, sizeof err);
    if (sym_rc != 0)
        fuzz_keyfile_check_refusal(err, sizeof err);

    memset(err, 'x', sizeof err);
    keypair_t *kp = keys_load_secret(fuzz_keyfile_path, err, sizeof err);
    if (kp == NULL) {
        fuzz_keyfile_check_refusal(err, sizeof err);
        if (sym_rc == 0)
            abort(); /* same line syntax: a seed the symmetric reader took */
    } else {
        fuzz_keyfile_check_pair(kp);
        if (sym_rc != 0 || crypto_sign_ed25519_sk_to_seed(seed, kp->sign_sk) != 0 ||
            memcmp(seed, symmetric, 32) != 0)
            abort(); /* both readers must see the same 32 bytes */
        keys_destroy(&kp);
        if (kp != NULL)
            abort();
    }

    memset(err, 'x', sizeof err);
    if (keys_load_public(fuzz_keyfile_path, public_key, err, sizeof err) == 0) {
        uint8_t curve[32];
        if (sym_rc != 0 || memcmp(public_key, symmetric, 32) != 0 ||
            keys_sign_pk_to_curve(public_key, curve) != 0)
            abort(); /* a public key is the same line, plus a curve point check */
    } else {
        fuzz_keyfile_check_refusal(err, sizeof err);
    }
    sodium_memzero(symmetric, sizeof symmetric);
    sodium_memzero(seed, sizeof seed);
    return 0;
}
