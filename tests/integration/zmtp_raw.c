/*
 * zmtp_raw.c — a CurveZMQ client of its own, for tests (see zmtp_raw.h).
 *
 * Trusts the broker it talks to no more than needed to read its frames:
 * sizes are checked before anything is read into a buffer, and a box that
 * does not open ends the test.
 */
#define _GNU_SOURCE
#include "zmtp_raw.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "keys.h"

#define ZMTP_MORE 0x01
#define ZMTP_LONG 0x02
#define ZMTP_COMMAND 0x04
#define ZMTP_RAW_MAX_IN (2u * 1024u * 1024u) /* the broker sends 256 KiB at most */

struct zmtp_raw {
    int fd;
    uint8_t cn_pk[32], cn_sk[32]; /* our short-term key pair */
    uint8_t server_short[32];     /* S' */
    uint8_t shared[crypto_box_BEFORENMBYTES];
    uint64_t nonce; /* our next short nonce */
    uint64_t sent;
    int closed;
    int ended; /* zmtp_raw_end: nothing more is written, PONGs neither */
};

static int64_t zmtp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void zmtp_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t zmtp_get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* Write all of buf: 0, or -1 once the connection is gone. A write blocked
 * for H_TIMEOUT_MS (SO_SNDTIMEO) fails the
 * test: the broker stopped reading, which is not a close. */
static int zmtp_write(zmtp_raw_t *raw, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = send(raw->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            fail_msg("zmtp_raw: a send stayed blocked for %d ms (the broker does not read)",
                     H_TIMEOUT_MS);
        if (n <= 0) {
            raw->closed = 1;
            return -1;
        }
        p += n;
        len -= (size_t)n;
        raw->sent += (uint64_t)n;
    }
    return 0;
}

/* Read exactly len bytes within the deadline: 1, 0 on timeout (nothing
 * consumed only if nothing had come), -1 when the connection closed. */
static int zmtp_read(zmtp_raw_t *raw, void *buf, size_t len, int64_t deadline)
{
    uint8_t *p = buf;
    while (len > 0) {
        int64_t left = deadline - zmtp_now_ms();
        struct pollfd pfd = {.fd = raw->fd, .events = POLLIN};
        int rc = poll(&pfd, 1, left > 0 ? (int)left : 0);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc == 0)
            return 0;
        ssize_t n = recv(raw->fd, p, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            raw->closed = 1;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 1;
}

static int zmtp_write_frame(zmtp_raw_t *raw, uint8_t flags, const uint8_t *body, size_t len)
{
    uint8_t head[9];
    size_t head_len;
    if (len > 255) {
        head[0] = flags | ZMTP_LONG;
        zmtp_put_u64(head + 1, len);
        head_len = 9;
    } else {
        head[0] = flags;
        head[1] = (uint8_t)len;
        head_len = 2;
    }
    return zmtp_write(raw, head, head_len) == 0 && zmtp_write(raw, body, len) == 0 ? 0 : -1;
}

/* The next ZMTP frame (malloc'd body): 1, 0 on timeout, -1 closed. */
static int zmtp_read_frame(zmtp_raw_t *raw, uint8_t *flags, uint8_t **body, size_t *len,
                           int64_t deadline)
{
    uint8_t head[9];
    int rc = zmtp_read(raw, head, 2, deadline);
    if (rc <= 0)
        return rc;
    uint64_t size = head[1];
    if (head[0] & ZMTP_LONG) {
        /* the rest of a frame that began is read whatever the deadline */
        if (zmtp_read(raw, head + 2, 7, zmtp_now_ms() + H_TIMEOUT_MS) <= 0)
            return -1;
        size = zmtp_get_u64(head + 1);
    }
    if (size > ZMTP_RAW_MAX_IN)
        fail_msg("zmtp_raw: the broker sent a frame of %llu bytes", (unsigned long long)size);
    *flags = head[0];
    *len = (size_t)size;
    *body = malloc(size > 0 ? size : 1);
    assert_non_null(*body);
    if (size > 0 && zmtp_read(raw, *body, size, zmtp_now_ms() + H_TIMEOUT_MS) <= 0) {
        free(*body);
        *body = NULL;
        return -1;
    }
    return 1;
}

/* Box `plain` for the broker as a MESSAGE command (flags: ZMTP MORE 0x01,
 * COMMAND 0x02 inside the box) and send it. */
static int zmtp_send_message(zmtp_raw_t *raw, uint8_t inner_flags, const void *data, size_t len)
{
    size_t body_len = 16 + crypto_box_MACBYTES + 1 + len;
    uint8_t *plain = malloc(1 + len), *body = malloc(body_len);
    assert_non_null(plain);
    assert_non_null(body);
    plain[0] = inner_flags;
    if (len > 0)
        memcpy(plain + 1, data, len);
    uint8_t nonce[crypto_box_NONCEBYTES];
    memcpy(nonce, "CurveZMQMESSAGEC", 16);
    zmtp_put_u64(nonce + 16, raw->nonce++);
    memcpy(body, "\x07MESSAGE", 8);
    memcpy(body + 8, nonce + 16, 8);
    if (crypto_box_easy_afternm(body + 16, plain, 1 + len, nonce, raw->shared) != 0)
        fail_msg("zmtp_raw: crypto_box failed");
    int rc = zmtp_write_frame(raw, 0, body, body_len);
    free(plain);
    free(body);
    return rc;
}

/* A MESSAGE from the broker opened: its inner flags and plaintext. */
static void zmtp_open_message(zmtp_raw_t *raw, const uint8_t *body, size_t len, uint8_t *flags,
                              uint8_t **out, size_t *out_len)
{
    if (len < 16 + crypto_box_MACBYTES + 1 || memcmp(body, "\x07MESSAGE", 8) != 0)
        fail_msg("zmtp_raw: the broker sent a frame that is no MESSAGE (%zu bytes)", len);
    uint8_t nonce[crypto_box_NONCEBYTES];
    memcpy(nonce, "CurveZMQMESSAGES", 16);
    memcpy(nonce + 16, body + 8, 8);
    size_t plain_len = len - 16 - crypto_box_MACBYTES;
    uint8_t *plain = malloc(plain_len);
    assert_non_null(plain);
    if (crypto_box_open_easy_afternm(plain, body + 16, len - 16, nonce, raw->shared) != 0)
        fail_msg("zmtp_raw: a MESSAGE from the broker does not open");
    *flags = plain[0];
    *out_len = plain_len - 1;
    *out = malloc(*out_len > 0 ? *out_len : 1);
    assert_non_null(*out);
    memcpy(*out, plain + 1, *out_len);
    free(plain);
}

/* A command from the broker: a PING is answered PONG (with its context),
 * anything else ignored. */
static int zmtp_command(zmtp_raw_t *raw, const uint8_t *cmd, size_t len)
{
    if (len >= 7 && memcmp(cmd, "\x04PING", 5) == 0 && !raw->ended) {
        uint8_t pong[5 + 16];
        size_t context = len - 7 > 16 ? 16 : len - 7;
        memcpy(pong, "\x04PONG", 5);
        memcpy(pong + 5, cmd + 7, context);
        return zmtp_send_message(raw, 0x02, pong, 5 + context);
    }
    return 0;
}

int zmtp_raw_recv(zmtp_raw_t *raw, uint8_t **out, size_t *len, int timeout_ms)
{
    int64_t deadline = zmtp_now_ms() + timeout_ms;
    for (;;) {
        if (raw->closed)
            return -1;
        uint8_t flags, inner, *body = NULL, *plain = NULL;
        size_t body_len, plain_len;
        int rc = zmtp_read_frame(raw, &flags, &body, &body_len, deadline);
        if (rc <= 0)
            return rc;
        zmtp_open_message(raw, body, body_len, &inner, &plain, &plain_len);
        free(body);
        if (inner & 0x02) {
            rc = zmtp_command(raw, plain, plain_len);
            free(plain);
            if (rc != 0)
                return -1;
            continue;
        }
        *out = plain;
        *len = plain_len;
        return 1;
    }
}

/* PINGs that arrived meanwhile, answered without waiting; any message of
 * the broker dropped (the tests that send parts expect none). */
static int zmtp_answer_pending(zmtp_raw_t *raw)
{
    for (;;) {
        struct pollfd pfd = {.fd = raw->fd, .events = POLLIN};
        if (poll(&pfd, 1, 0) <= 0)
            return raw->closed ? -1 : 0;
        uint8_t *msg = NULL;
        size_t len;
        int rc = zmtp_raw_recv(raw, &msg, &len, 0);
        free(msg);
        if (rc < 0)
            return -1;
        if (rc == 0)
            return 0;
    }
}

int zmtp_raw_send(zmtp_raw_t *raw, const void *data, size_t len, int more)
{
    if (raw->closed || zmtp_answer_pending(raw) != 0)
        return -1;
    return zmtp_send_message(raw, more ? 0x01 : 0x00, data, len);
}

int zmtp_raw_closed(zmtp_raw_t *raw, int timeout_ms)
{
    int64_t deadline = zmtp_now_ms() + timeout_ms;
    while (!raw->closed) {
        int64_t left = deadline - zmtp_now_ms();
        if (left <= 0)
            return 0;
        uint8_t *msg = NULL;
        size_t len;
        (void)zmtp_raw_recv(raw, &msg, &len, (int)left);
        free(msg);
    }
    return 1;
}

int zmtp_raw_delivered(zmtp_raw_t *raw, int timeout_ms)
{
    const struct timespec millisecond = {0, 1000000};
    int64_t deadline = zmtp_now_ms() + timeout_ms;
    for (;;) {
        int unacked = 0;
        if (ioctl(raw->fd, SIOCOUTQ, &unacked) != 0)
            fail_msg("zmtp_raw: SIOCOUTQ: %s", strerror(errno));
        if (unacked == 0)
            return 0;
        if (zmtp_now_ms() >= deadline)
            return -1;
        nanosleep(&millisecond, NULL); /* the kernel's ACK has no event to wait on */
    }
}

void zmtp_raw_end(zmtp_raw_t *raw)
{
    if (shutdown(raw->fd, SHUT_WR) != 0)
        fail_msg("zmtp_raw: shutdown: %s", strerror(errno));
    raw->ended = 1; /* a PONG now would fail as if the broker had closed */
}

uint64_t zmtp_raw_sent_bytes(const zmtp_raw_t *raw)
{
    return raw->sent;
}

/* A TCP connection to the endpoint "tcp://HOST:PORT". */
static int zmtp_tcp_connect(const char *endpoint)
{
    char host[128];
    const char *colon = strrchr(endpoint, ':');
    if (strncmp(endpoint, "tcp://", 6) != 0 || colon == NULL ||
        (size_t)(colon - endpoint - 6) >= sizeof host)
        fail_msg("zmtp_raw: endpoint %s is not tcp://HOST:PORT", endpoint);
    memcpy(host, endpoint + 6, (size_t)(colon - endpoint - 6));
    host[colon - endpoint - 6] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || ai == NULL)
        fail_msg("zmtp_raw: cannot resolve %s", endpoint);
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0)
        fail_msg("zmtp_raw: connect to %s: %s", endpoint, strerror(errno));
    freeaddrinfo(ai);
    struct timeval tv = {.tv_sec = H_TIMEOUT_MS / 1000};
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

/* Read one command frame of the handshake, which must begin with name. */
static uint8_t *zmtp_expect_command(zmtp_raw_t *raw, const char *name, size_t *len)
{
    uint8_t flags, *body = NULL;
    if (zmtp_read_frame(raw, &flags, &body, len, zmtp_now_ms() + H_TIMEOUT_MS) != 1)
        fail_msg("zmtp_raw: no %s from the broker (refused, or closed)", name + 1);
    if (!(flags & ZMTP_COMMAND) || *len < strlen(name) || memcmp(body, name, strlen(name)) != 0)
        fail_msg("zmtp_raw: expected %s, got a frame of %zu bytes%s%.*s", name + 1, *len,
                 *len > 1 && body[0] < *len ? ": " : "", *len > 1 && body[0] < *len ? body[0] : 0,
                 (const char *)body + 1);
    return body;
}

/* HELLO, WELCOME, INITIATE, READY (RFC 26), as the long-term key pair
 * `key` to the broker's long-term X25519 key server_pk. */
static void zmtp_handshake(zmtp_raw_t *raw, const keypair_t *key, const uint8_t server_pk[32])
{
    uint8_t greeting[64] = {0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 3, 0};
    memcpy(greeting + 12, "CURVE", 5);
    uint8_t theirs[64];
    if (zmtp_write(raw, greeting, sizeof greeting) != 0 ||
        zmtp_read(raw, theirs, sizeof theirs, zmtp_now_ms() + H_TIMEOUT_MS) != 1 ||
        theirs[0] != 0xff || theirs[10] != 3 || memcmp(theirs + 12, "CURVE", 6) != 0)
        fail_msg("zmtp_raw: no ZMTP 3 CURVE greeting from the broker");
    crypto_box_keypair(raw->cn_pk, raw->cn_sk);
    raw->nonce = 1;

    uint8_t hello[200] = {0}, nonce[crypto_box_NONCEBYTES], zeros[64] = {0};
    memcpy(hello, "\x05HELLO\x01\x00", 8);
    memcpy(hello + 80, raw->cn_pk, 32);
    memcpy(nonce, "CurveZMQHELLO---", 16);
    zmtp_put_u64(nonce + 16, raw->nonce++);
    memcpy(hello + 112, nonce + 16, 8);
    if (crypto_box_easy(hello + 120, zeros, sizeof zeros, nonce, server_pk, raw->cn_sk) != 0 ||
        zmtp_write_frame(raw, ZMTP_COMMAND, hello, sizeof hello) != 0)
        fail_msg("zmtp_raw: HELLO not sent");

    size_t len;
    uint8_t *welcome = zmtp_expect_command(raw, "\x07WELCOME", &len), plain[128];
    memcpy(nonce, "WELCOME-", 8);
    if (len != 168)
        fail_msg("zmtp_raw: WELCOME of %zu bytes", len);
    memcpy(nonce + 8, welcome + 8, 16);
    if (crypto_box_open_easy(plain, welcome + 24, 144, nonce, server_pk, raw->cn_sk) != 0)
        fail_msg("zmtp_raw: WELCOME does not open");
    free(welcome);
    memcpy(raw->server_short, plain, 32);
    const uint8_t *cookie = plain + 32;

    uint8_t vouch_plain[64], vouch[16 + 80];
    memcpy(vouch_plain, raw->cn_pk, 32);
    memcpy(vouch_plain + 32, server_pk, 32);
    memcpy(nonce, "VOUCH---", 8);
    randombytes_buf(nonce + 8, 16);
    memcpy(vouch, nonce + 8, 16);
    if (crypto_box_easy(vouch + 16, vouch_plain, sizeof vouch_plain, nonce, raw->server_short,
                        key->curve_sk) != 0)
        fail_msg("zmtp_raw: vouch");
    static const uint8_t metadata[] = "\x0bSocket-Type\x00\x00\x00\x06"
                                      "DEALER";
    uint8_t initiate_plain[32 + sizeof vouch + sizeof metadata - 1];
    memcpy(initiate_plain, key->curve_pk, 32);
    memcpy(initiate_plain + 32, vouch, sizeof vouch);
    memcpy(initiate_plain + 32 + sizeof vouch, metadata, sizeof metadata - 1);
    uint8_t initiate[9 + 96 + 8 + crypto_box_MACBYTES + sizeof initiate_plain];
    memcpy(initiate, "\x08INITIATE", 9);
    memcpy(initiate + 9, cookie, 96);
    memcpy(nonce, "CurveZMQINITIATE", 16);
    zmtp_put_u64(nonce + 16, raw->nonce++);
    memcpy(initiate + 105, nonce + 16, 8);
    if (crypto_box_easy(initiate + 113, initiate_plain, sizeof initiate_plain, nonce,
                        raw->server_short, raw->cn_sk) != 0 ||
        zmtp_write_frame(raw, ZMTP_COMMAND, initiate, sizeof initiate) != 0)
        fail_msg("zmtp_raw: INITIATE not sent");
    uint8_t *ready = zmtp_expect_command(raw, "\x05READY", &len);
    free(ready);
    if (crypto_box_beforenm(raw->shared, raw->server_short, raw->cn_sk) != 0)
        fail_msg("zmtp_raw: no shared key");
}

zmtp_raw_t *zmtp_raw_connect(const h_env_t *env, const char *principal)
{
    return zmtp_raw_connect_to(env, env->endpoint, principal);
}

zmtp_raw_t *zmtp_raw_connect_to(const h_env_t *env, const char *endpoint, const char *principal)
{
    char err[256];
    uint8_t server_sign[32], server_pk[32];
    keypair_t *key = keys_load_secret(h_key_file(env, principal), err, sizeof err);
    if (key == NULL)
        fail_msg("zmtp_raw: %s: %s", principal, err);
    if (keys_load_public(env->broker_pub, server_sign, err, sizeof err) != 0 ||
        keys_sign_pk_to_curve(server_sign, server_pk) != 0)
        fail_msg("zmtp_raw: the broker's key: %s", err);
    zmtp_raw_t *raw = calloc(1, sizeof *raw);
    assert_non_null(raw);
    raw->fd = zmtp_tcp_connect(endpoint);
    zmtp_handshake(raw, key, server_pk);
    keys_destroy(&key);
    return raw;
}

void zmtp_raw_close(zmtp_raw_t **rawp)
{
    zmtp_raw_t *raw = *rawp;
    if (raw == NULL)
        return;
    close(raw->fd);
    sodium_memzero(raw, sizeof *raw);
    free(raw);
    *rawp = NULL;
}
