/*
 * test_conns.c — the router's connections by socket (broker/conns.c):
 * which close, which are shut down (no frame since the handshake, or over
 * their principal's cap and quiet), and that a socket
 * number taken by a newer connection is never shut down on an old one's
 * account; what libzmq holds of messages never completed, by the bytes
 * read from a socket and taken from it. Real sockets (socketpair, and
 * loopback TCP for TCP_INFO), so that shutdown(2), the kernel's cookies and
 * counts are the real ones.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <linux/sockios.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conns.h"

typedef struct pair {
    int ours;   /* the broker's side, as libzmq would hold it */
    int client; /* the other end */
} pair_t;

static pair_t pair_open(void)
{
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    return (pair_t){fds[0], fds[1]};
}

static void pair_close(pair_t *p)
{
    if (p->ours >= 0)
        close(p->ours);
    if (p->client >= 0)
        close(p->client);
    p->ours = p->client = -1;
}

/* 1 when the client's end sees its peer shut down (end of file). */
static int client_sees_shutdown(const pair_t *p)
{
    struct pollfd item = {.fd = p->client, .events = POLLIN};
    if (poll(&item, 1, 0) != 1)
        return 0;
    char c;
    return recv(p->client, &c, 1, MSG_DONTWAIT) == 0;
}

/* No silent connection allowed: each is closed once older than idle_ms. */
static const conns_limits_t limits = {
    .idle_ms = 500, .max_silent = 0, .quiet_ms = 100, .max_per_principal = 2};

/* A connection that served no frame since its handshake is shut down once
 * idle_ms has passed (once, until its close event); one that served a
 * frame is kept, however long it is quiet, while its principal is within
 * its cap. */
static void test_connections_without_a_frame_are_shut_down(void **state)
{
    (void)state;
    assert_true(conns_cookies_supported()); /* every check below needs them */
    conns_t *c = conns_new();
    assert_non_null(c);
    pair_t silent = pair_open(), used = pair_open();
    conns_opened(c, silent.ours, 1000);
    conns_opened(c, used.ours, 1000);
    conns_used(c, used.ours, 1001, "politie/bvh", "K1");
    assert_int_equal(conns_open_count(c), 2);
    assert_int_equal(conns_close_idle(c, 1500, &limits), 0); /* exactly the limit: not yet */
    assert_int_equal(conns_close_idle(c, 1501, &limits), 1);
    assert_true(client_sees_shutdown(&silent));
    assert_false(client_sees_shutdown(&used));
    assert_int_equal(conns_close_idle(c, 9000000, &limits), 0); /* once; the used one stays */
    assert_false(client_sees_shutdown(&used));
    conns_closed(c, silent.ours);
    conns_closed(c, used.ours);
    assert_int_equal(conns_open_count(c), 0);
    assert_true(conns_is_closed(c, silent.ours));
    pair_close(&silent);
    pair_close(&used);
    conns_destroy(&c);
    assert_null(c);
}

/* Over its cap, a principal's least recently used connections are shut
 * down once quiet for quiet_ms; its most recent ones, other principals'
 * and a connection seen receiving (used now) stay. */
static void test_connections_over_the_cap_are_shut_down(void **state)
{
    (void)state;
    conns_t *c = conns_new();
    enum { N = 5 };
    pair_t p[N];
    for (size_t i = 0; i < N; i++) {
        p[i] = pair_open();
        conns_opened(c, p[i].ours, 0);
    }
    /* politie: p0 (oldest), p1, p2, p3 (newest); om: p4, older than all */
    conns_used(c, p[4].ours, 5, "om/parket", "K1");
    conns_used(c, p[0].ours, 10, "politie/bvh", "K1");
    conns_used(c, p[1].ours, 20, "politie/bvh", "K1");
    conns_used(c, p[2].ours, 1000, "politie/bvh", "K1");
    conns_used(c, p[3].ours, 1001, "politie/bvh", "K1");
    /* p0 and p1 are beyond the two most recent but quiet only since 10/20 */
    assert_int_equal(conns_close_idle(c, 100, &limits), 0);
    assert_int_equal(conns_close_idle(c, 115, &limits), 1); /* p0: quiet 105 ms */
    assert_true(client_sees_shutdown(&p[0]));
    assert_false(client_sees_shutdown(&p[1]));
    /* p1 receives: used now, it ranks first; p2 is now beyond the cap,
     * and quiet long enough */
    conns_used(c, p[1].ours, 1200, "politie/bvh", "K1");
    assert_int_equal(conns_close_idle(c, 1200, &limits), 1);
    assert_true(client_sees_shutdown(&p[2]));
    for (size_t i = 1; i < N; i++)
        if (i != 2)
            assert_false(client_sees_shutdown(&p[i]));
    assert_int_equal(conns_close_idle(c, 5000, &limits), 0);
    for (size_t i = 0; i < N; i++)
        pair_close(&p[i]);
    conns_destroy(&c);
}

/* Over its cap, a principal's connections that hold no claim to receive
 * (no Flow) are shut down before its standbys, however recently used: a
 * standby's client reconnects and sends Flow again, which would move
 * receiving to it. A Flow kept with a connection (conns_keep_flow) is a
 * claim too; a mark (conns_claimed) lasts one pass. Only when its claims
 * alone are over the cap does a standby go, the least recently used. */
static void test_over_the_cap_standbys_go_last(void **state)
{
    (void)state;
    conns_t *c = conns_new();
    enum { N = 6 };
    pair_t p[N];
    for (size_t i = 0; i < N; i++) {
        p[i] = pair_open();
        if (i < N - 1)
            conns_opened(c, p[i].ours, 0);
    }
    /* politie: p0 receives, p1 a standby, p2 a standby whose session ended
     * at the cap (its Flow kept), p3 and p4 busy without a claim */
    conns_used(c, p[1].ours, 10, "politie/bvh", "K1");
    conns_used(c, p[2].ours, 20, "politie/bvh", "K1");
    conns_keep_flow(c, p[2].ours, 5, 8);
    conns_used(c, p[3].ours, 1000, "politie/bvh", "K1");
    conns_used(c, p[4].ours, 900, "politie/bvh", "K1");
    assert_int_equal(conns_kept_claims(c, "politie/bvh"), 1);
    assert_int_equal(conns_kept_claims(c, "om/parket"), 0);
    conns_limits_t three = limits;
    three.max_per_principal = 3;
    conns_used(c, p[0].ours, 1200, "politie/bvh", "K1"); /* receiving: used now */
    conns_claimed(c, p[0].ours);
    conns_claimed(c, p[1].ours);
    assert_int_equal(conns_close_idle(c, 1200, &three), 2);
    assert_true(client_sees_shutdown(&p[3]));
    assert_true(client_sees_shutdown(&p[4]));
    for (size_t i = 0; i < 3; i++)
        assert_false(client_sees_shutdown(&p[i]));
    conns_closed(c, p[3].ours);
    conns_closed(c, p[4].ours);

    /* three claims over a cap of two: the least recently used standby */
    conns_used(c, p[0].ours, 1300, "politie/bvh", "K1");
    conns_claimed(c, p[0].ours);
    conns_claimed(c, p[1].ours);
    assert_int_equal(conns_close_idle(c, 1300, &limits), 1);
    assert_true(client_sees_shutdown(&p[1]));
    assert_false(client_sees_shutdown(&p[0]));
    assert_false(client_sees_shutdown(&p[2]));
    conns_closed(c, p[1].ours);

    /* marks last one pass: p0 unmarked (its session ended) is a connection
     * without a claim, behind p2's kept Flow and less recently used than
     * p5 */
    conns_opened(c, p[5].ours, 1340);
    conns_used(c, p[5].ours, 1350, "politie/bvh", "K1");
    assert_int_equal(conns_close_idle(c, 1500, &limits), 1);
    assert_true(client_sees_shutdown(&p[0]));
    assert_false(client_sees_shutdown(&p[2]));
    assert_false(client_sees_shutdown(&p[5]));

    /* a kept Flow given back, or its connection's key revoked, is no
     * longer one of the principal's kept claims */
    conns_revoked(c, p[2].ours, 1500);
    assert_int_equal(conns_kept_claims(c, "politie/bvh"), 0);
    conns_keep_flow(c, p[5].ours, 9, 8);
    assert_int_equal(conns_kept_claims(c, "politie/bvh"), 1);
    uint64_t order = 0;
    uint32_t window = 0;
    assert_int_equal(conns_take_flow(c, p[5].ours, &order, &window), 1);
    assert_int_equal(conns_kept_claims(c, "politie/bvh"), 0);
    for (size_t i = 0; i < N; i++)
        pair_close(&p[i]);
    conns_destroy(&c);
}

/* Silent connections within the allowance stay however old (a client
 * that reconnected by itself while its program made no call); beyond it
 * the newest old enough go, the oldest stay. */
static void test_silent_allowance_keeps_the_oldest(void **state)
{
    (void)state;
    const conns_limits_t allow2 = {
        .idle_ms = 500, .max_silent = 2, .quiet_ms = 100, .max_per_principal = 2};
    conns_t *c = conns_new();
    enum { N = 4 };
    pair_t p[N];
    const int64_t opened[N] = {100, 200, 300, 900};
    for (size_t i = 0; i < N; i++) {
        p[i] = pair_open();
        conns_opened(c, p[i].ours, opened[i]);
    }
    /* p2 is beyond the allowance (ranked after p0, p1) but not old yet;
     * p3 younger still */
    assert_int_equal(conns_close_idle(c, 800, &allow2), 0);
    assert_int_equal(conns_close_idle(c, 801, &allow2), 1);
    assert_true(client_sees_shutdown(&p[2]));
    assert_int_equal(conns_close_idle(c, 1401, &allow2), 1);
    assert_true(client_sees_shutdown(&p[3]));
    assert_int_equal(conns_close_idle(c, 9000000, &allow2), 0);
    assert_false(client_sees_shutdown(&p[0]));
    assert_false(client_sees_shutdown(&p[1]));
    for (size_t i = 0; i < N; i++)
        pair_close(&p[i]);
    conns_destroy(&c);
}

/* A revoked key's connection is closed idle_ms after the revocation
 * (its refusals go out meanwhile), whatever the allowance and cap; a
 * reload that gives the key back makes it a used connection again. */
static void test_revoked_connections_are_closed(void **state)
{
    (void)state;
    const conns_limits_t roomy = {
        .idle_ms = 500, .max_silent = 100, .quiet_ms = 100, .max_per_principal = 100};
    conns_t *c = conns_new();
    pair_t revoked = pair_open(), restored = pair_open();
    conns_opened(c, revoked.ours, 0);
    conns_opened(c, restored.ours, 0);
    conns_used(c, revoked.ours, 10, "politie/bvh", "K1");
    conns_used(c, restored.ours, 10, "om/parket", "K1");
    conns_revoked(c, revoked.ours, 1000);
    conns_revoked(c, revoked.ours, 1400); /* once: from the first */
    conns_revoked(c, restored.ours, 1000);
    conns_used(c, restored.ours, 1200, "om/parket", "K1");
    assert_int_equal(conns_close_idle(c, 1500, &roomy), 0);
    assert_int_equal(conns_close_idle(c, 1501, &roomy), 1);
    assert_true(client_sees_shutdown(&revoked));
    assert_int_equal(conns_close_idle(c, 9000000, &roomy), 0);
    assert_false(client_sees_shutdown(&restored));
    pair_close(&revoked);
    pair_close(&restored);
    conns_destroy(&c);
}

/* The Flow a revocation dropped is kept with its connection while it is
 * open, handed out once, and forgotten when the socket closes or a new
 * connection gets its number; none is kept for a session without one. */
static void test_flow_kept_for_its_connection(void **state)
{
    (void)state;
    conns_t *c = conns_new();
    pair_t p = pair_open();
    uint64_t order = 0;
    uint32_t window = 0;
    assert_int_equal(conns_take_flow(c, p.ours, &order, &window), 0); /* unknown socket */
    conns_keep_flow(c, p.ours, 7, 64);
    assert_int_equal(conns_take_flow(c, p.ours, &order, &window), 0); /* not accepted yet */
    conns_opened(c, p.ours, 0);
    conns_keep_flow(c, p.ours, 0, 64); /* no Flow: nothing kept */
    assert_int_equal(conns_take_flow(c, p.ours, &order, &window), 0);
    conns_keep_flow(c, p.ours, 7, 64);
    assert_int_equal(conns_take_flow(c, p.ours, &order, &window), 1);
    assert_int_equal(order, 7);
    assert_int_equal(window, 64);
    assert_int_equal(conns_take_flow(c, p.ours, &order, &window), 0); /* once */
    conns_keep_flow(c, p.ours, 9, 8);
    conns_closed(c, p.ours);
    assert_int_equal(conns_take_flow(c, p.ours, &order, &window), 0);
    conns_opened(c, p.ours, 0);
    assert_int_equal(conns_take_flow(c, p.ours, &order, &window), 0);
    conns_keep_flow(c, p.ours, 9, 8);
    conns_opened(c, p.ours, 100); /* a new connection on the number, its close unseen */
    assert_int_equal(conns_take_flow(c, p.ours, &order, &window), 0);
    conns_keep_flow(c, -1, 9, 8); /* out of range: ignored */
    assert_int_equal(conns_take_flow(c, -1, &order, &window), 0);
    pair_close(&p);
    conns_destroy(&c);
}

/* A TCP listener on 127.0.0.1, on a port the kernel picks. */
static int loopback_listener(void)
{
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in at = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_true(listener >= 0);
    assert_int_equal(bind(listener, (struct sockaddr *)&at, sizeof at), 0);
    assert_int_equal(listen(listener, 16), 0);
    return listener;
}

/* A TCP connection from `from` (a loopback address) to `listener`: the
 * accepted side is the broker's. */
static pair_t tcp_pair(int listener, const char *from)
{
    struct sockaddr_in to;
    socklen_t len = sizeof to;
    assert_int_equal(getsockname(listener, (struct sockaddr *)&to, &len), 0);
    int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in src = {.sin_family = AF_INET};
    assert_int_equal(inet_pton(AF_INET, from, &src.sin_addr), 1);
    assert_int_equal(bind(client, (struct sockaddr *)&src, sizeof src), 0);
    assert_int_equal(connect(client, (struct sockaddr *)&to, sizeof to), 0);
    int ours = accept(listener, NULL, NULL);
    assert_true(ours >= 0);
    return (pair_t){ours, client};
}

/* One host that opens many silent connections cannot push out another
 * host's newer few: the allowance (3) is shared, each address keeping
 * its oldest up to the share that fits. */
static void test_silent_allowance_is_shared_by_address(void **state)
{
    (void)state;
    const conns_limits_t allow3 = {
        .idle_ms = 500, .max_silent = 3, .quiet_ms = 100, .max_per_principal = 2};
    int listener = loopback_listener();
    conns_t *c = conns_new();
    enum { N = 5 };
    pair_t p[N];
    /* one host opens four connections, then another host one, newer */
    for (size_t i = 0; i < N; i++) {
        p[i] = tcp_pair(listener, i < 4 ? "127.0.0.3" : "127.0.0.2");
        conns_opened(c, p[i].ours, (int64_t)(100 + 100 * i));
    }
    /* share 2: 127.0.0.2 keeps its one, 127.0.0.3 its two oldest */
    assert_int_equal(conns_close_idle(c, 10000, &allow3), 2);
    assert_false(client_sees_shutdown(&p[0]));
    assert_false(client_sees_shutdown(&p[1]));
    assert_true(client_sees_shutdown(&p[2]));
    assert_true(client_sees_shutdown(&p[3]));
    assert_false(client_sees_shutdown(&p[4]));
    for (size_t i = 0; i < N; i++)
        pair_close(&p[i]);
    close(listener);
    conns_destroy(&c);
}

/* More addresses than the allowance (3): the share is 0, and the slots go
 * to the oldest whatever their address; connections younger than idle_ms
 * (a handshake in progress) neither count nor are closed. */
static void test_silent_allowance_with_many_addresses(void **state)
{
    (void)state;
    const conns_limits_t allow3 = {
        .idle_ms = 500, .max_silent = 3, .quiet_ms = 100, .max_per_principal = 2};
    int listener = loopback_listener();
    conns_t *c = conns_new();
    enum { N = 6 };
    static const char *const from[N] = {"127.0.0.2", "127.0.0.3", "127.0.0.4",
                                        "127.0.0.5", "127.0.0.6", "127.0.0.7"};
    static const int64_t opened[N] = {400, 100, 300, 200, 9800, 9900};
    pair_t p[N];
    for (size_t i = 0; i < N; i++) {
        p[i] = tcp_pair(listener, from[i]);
        conns_opened(c, p[i].ours, opened[i]);
    }
    /* four old ones on four addresses: the three oldest stay; the two
     * young ones are neither counted nor closed */
    assert_int_equal(conns_close_idle(c, 10000, &allow3), 1);
    assert_true(client_sees_shutdown(&p[0]));
    for (size_t i = 1; i < N; i++)
        assert_false(client_sees_shutdown(&p[i]));
    for (size_t i = 0; i < N; i++)
        pair_close(&p[i]);
    close(listener);
    conns_destroy(&c);
}

/* After a reload, connections that served frames with a principal or key
 * no longer registered are revoked (closed idle_ms later), with a session
 * or not; those still registered, and silent ones, are not. */
static void test_reload_revokes_unregistered_connections(void **state)
{
    (void)state;
    const conns_limits_t roomy = {
        .idle_ms = 500, .max_silent = 100, .quiet_ms = 100, .max_per_principal = 100};
    conns_t *c = conns_new();
    enum { N = 4 };
    pair_t p[N];
    for (size_t i = 0; i < N; i++) {
        p[i] = pair_open();
        conns_opened(c, p[i].ours, 0);
    }
    conns_used(c, p[0].ours, 10, "politie/bvh", "K1"); /* still registered */
    conns_used(c, p[1].ours, 10, "politie/bvh", "K0"); /* an old key of it */
    conns_used(c, p[2].ours, 10, "om/parket", "K2");   /* removed */
    /* p[3] silent */
    conns_identity_t registered[] = {
        {conns_identity_hash("woco/meldingen"), conns_identity_hash("K3")},
        {conns_identity_hash("politie/bvh"), conns_identity_hash("K1")},
    };
    assert_int_equal(conns_revoke_unregistered(c, 1000, registered, 2), 2);
    assert_int_equal(conns_revoke_unregistered(c, 1200, registered, 2), 0); /* once */
    assert_int_equal(conns_close_idle(c, 1500, &roomy), 0);
    assert_int_equal(conns_close_idle(c, 1501, &roomy), 2);
    assert_false(client_sees_shutdown(&p[0]));
    assert_true(client_sees_shutdown(&p[1]));
    assert_true(client_sees_shutdown(&p[2]));
    assert_false(client_sees_shutdown(&p[3]));
    /* a reload that revokes p[0]'s pair, then one that gives it back
     * before it was closed: it stays */
    conns_identity_t none[] = {{conns_identity_hash("woco/meldingen"), conns_identity_hash("K3")}};
    assert_int_equal(conns_revoke_unregistered(c, 2000, none, 1), 1);
    assert_int_equal(conns_revoke_unregistered(c, 2100, registered, 2), 0);
    assert_int_equal(conns_close_idle(c, 9000, &roomy), 0);
    assert_false(client_sees_shutdown(&p[0]));
    assert_int_equal(conns_revoke_unregistered(c, 9000, NULL, 0), 1); /* nobody registered */
    for (size_t i = 0; i < N; i++)
        pair_close(&p[i]);
    conns_destroy(&c);
}

/* A connection's socket closed, and a new connection got its number
 * before the close event was read: the old connection's age must not
 * shut the new one down. */
static void test_reused_socket_number_is_not_shut_down(void **state)
{
    (void)state;
    conns_t *c = conns_new();
    pair_t old = pair_open();
    int number = old.ours;
    conns_opened(c, number, 0);
    close(old.ours); /* libzmq closed it; its event is still on its way */
    old.ours = -1;
    pair_t fresh = pair_open();
    if (fresh.ours != number) { /* take the same number, as the kernel would */
        assert_int_equal(dup2(fresh.ours, number), number);
        close(fresh.ours);
        fresh.ours = number;
    }
    assert_int_equal(conns_close_idle(c, 10000, &limits), 0);
    assert_false(client_sees_shutdown(&fresh));
    /* its events arrive: closed, then accepted anew; then it ages itself */
    conns_closed(c, number);
    assert_true(conns_is_closed(c, number));
    conns_opened(c, number, 20000);
    assert_false(conns_is_closed(c, number));
    assert_int_equal(conns_close_idle(c, 20400, &limits), 0);
    assert_int_equal(conns_close_idle(c, 20600, &limits), 1);
    assert_true(client_sees_shutdown(&fresh));
    pair_close(&old);
    pair_close(&fresh);
    conns_destroy(&c);
}

/* A number that is not a socket now (a file took it) is never touched,
 * and numbers never seen or out of range are neither open nor closed. */
static void test_non_sockets_and_unknown_numbers(void **state)
{
    (void)state;
    conns_t *c = conns_new();
    pair_t p = pair_open();
    int number = p.ours;
    conns_opened(c, number, 0);
    int file = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(file >= 0);
    assert_int_equal(dup2(file, number), number); /* the socket is gone; a file has it */
    close(file);
    assert_int_equal(conns_close_idle(c, 10000, &limits), 0);
    assert_false(conns_is_closed(c, 12345));
    assert_false(conns_is_closed(c, -1));
    conns_used(c, 12345, 5, "politie/bvh", "K1"); /* unknown: nothing */
    conns_closed(c, -1);
    conns_opened(c, 1 << 24, 0); /* out of range: untracked */
    assert_int_equal(conns_open_count(c), 1);
    close(number);
    close(p.client);
    conns_destroy(&c);
}

/* ------------------------------------------------- unfinished messages */

/* A loopback TCP connection: conns_held reads TCP_INFO, which a socketpair
 * has not. */
static pair_t tcp_pair_open(void)
{
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    assert_true(listener >= 0);
    assert_int_equal(bind(listener, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(listen(listener, 1), 0);
    assert_int_equal(getsockname(listener, (struct sockaddr *)&addr, &len), 0);
    int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(client, (struct sockaddr *)&addr, sizeof addr), 0);
    int ours = accept(listener, NULL, NULL);
    assert_true(ours >= 0);
    close(listener);
    return (pair_t){ours, client};
}

/* The client sends n bytes; `ours` reads `read` of them, as libzmq would
 * (the rest stays in the socket's receive queue). */
static void tcp_send_read(const pair_t *p, size_t n, size_t read)
{
    static char buf[64 * 1024];
    memset(buf, 'x', sizeof buf);
    for (size_t sent = 0; sent < n;) {
        size_t chunk = n - sent < sizeof buf ? n - sent : sizeof buf;
        ssize_t w = send(p->client, buf, chunk, MSG_NOSIGNAL);
        assert_true(w > 0);
        sent += (size_t)w;
    }
    for (size_t got = 0; got < read;) {
        size_t chunk = read - got < sizeof buf ? read - got : sizeof buf;
        ssize_t r = recv(p->ours, buf, chunk, 0);
        assert_true(r > 0);
        got += (size_t)r;
    }
    /* every byte sent has arrived (the queue holds the rest) */
    for (;;) {
        int queued = 0;
        assert_int_equal(ioctl(p->ours, SIOCINQ, &queued), 0);
        if ((size_t)queued == n - read)
            break;
        struct pollfd item = {.fd = p->ours, .events = POLLIN};
        (void)poll(&item, 1, 10);
    }
}

typedef struct cut_seen {
    int fd[4];
    uint64_t held[4];
    char peer[4][48];
    int n;
} cut_seen_t;

static void cut_note(void *arg, int fd, const char *peer, uint64_t held)
{
    cut_seen_t *seen = arg;
    assert_true(seen->n < 4);
    seen->fd[seen->n] = fd;
    seen->held[seen->n] = held;
    snprintf(seen->peer[seen->n], sizeof seen->peer[0], "%s", peer);
    seen->n++;
}

static void test_frame_wire_bytes(void **state)
{
    (void)state;
    /* measured on the wire from a libzmq 4.3 CURVE client */
    static const struct {
        size_t len;
        uint64_t wire;
    } rows[] = {{0, 35}, {1, 36}, {100, 135}, {222, 257}, {223, 265}, {262144, 262186}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        assert_int_equal(conns_frame_wire_bytes(rows[i].len), rows[i].wire);
}

/* Read and not taken beyond the bound: shut down. Read and taken, or
 * still in the kernel's queue (not read by libzmq), or within the bound:
 * kept. */
static void test_held_bytes_beyond_the_bound_are_cut(void **state)
{
    (void)state;
    conns_t *c = conns_new();
    const conns_held_limits_t lim = {.bound = 30000, .command_bytes_per_s = 0};
    pair_t held = tcp_pair_open(), taken = tcp_pair_open(), queued = tcp_pair_open(),
           within = tcp_pair_open();
    pair_t *all[] = {&held, &taken, &queued, &within};
    for (size_t i = 0; i < 4; i++)
        conns_opened(c, all[i]->ours, 0);
    tcp_send_read(&held, 100000, 100000);
    conns_took(c, held.ours, NULL, 0, 60000);
    tcp_send_read(&taken, 100000, 100000);
    conns_took(c, taken.ours, NULL, 0, 100000);
    tcp_send_read(&queued, 100000, 10000);
    tcp_send_read(&within, 100000, 100000);
    conns_took(c, within.ours, NULL, 0, 70000); /* 30,000 held: not beyond */

    cut_seen_t seen = {.n = 0};
    assert_false(conns_held_pending(c));
    conns_held_snapshot(c, 1000);
    assert_true(conns_held_pending(c));
    assert_int_equal(conns_held_check(c, 1000, &lim, cut_note, &seen), 1);
    assert_false(conns_held_pending(c));
    assert_int_equal(seen.n, 1);
    assert_int_equal(seen.fd[0], held.ours);
    assert_int_equal(seen.held[0], 40000);
    assert_string_equal(seen.peer[0], "127.0.0.1");
    assert_true(client_sees_shutdown(&held));
    for (size_t i = 1; i < 4; i++)
        assert_false(client_sees_shutdown(all[i]));
    /* once shut down, not again */
    conns_held_snapshot(c, 2000);
    assert_int_equal(conns_held_check(c, 2000, &lim, cut_note, &seen), 0);
    for (size_t i = 0; i < 4; i++)
        pair_close(all[i]);
    conns_destroy(&c);
}

/* ZMTP commands may add up to command_bytes_per_s a second; at each check
 * the allowance comes down to what was read and not taken, so that a
 * long life adds up none for an unfinished message to use. */
static void test_command_allowance_does_not_add_up(void **state)
{
    (void)state;
    conns_t *c = conns_new();
    const conns_held_limits_t lim = {.bound = 30000, .command_bytes_per_s = 1000};
    cut_seen_t seen = {.n = 0};
    pair_t young = tcp_pair_open(), old = tcp_pair_open();
    conns_opened(c, young.ours, 0);
    conns_opened(c, old.ours, 0);
    /* 50,000 bytes of commands in 20 s at most: 20,000 allowed, 30,000 held */
    tcp_send_read(&young, 50000, 50000);
    conns_held_snapshot(c, 20000);
    assert_int_equal(conns_held_check(c, 20000, &lim, cut_note, &seen), 0);
    /* a check after 100 s of nothing: the allowance comes down to 0 */
    conns_held_snapshot(c, 100000);
    assert_int_equal(conns_held_check(c, 100000, &lim, cut_note, &seen), 0);
    /* then 40,000 bytes within a second: 39,000 beyond the allowance */
    tcp_send_read(&old, 40000, 40000);
    conns_held_snapshot(c, 101000);
    assert_int_equal(conns_held_check(c, 101000, &lim, cut_note, &seen), 1);
    assert_int_equal(seen.fd[0], old.ours);
    assert_int_equal(seen.held[0], 39000);
    assert_false(client_sees_shutdown(&young));
    pair_close(&young);
    pair_close(&old);
    conns_destroy(&c);
}

/* Messages a connection that closed left queued in the router, taken
 * once another connection has its socket number: not counted for the new
 * one (they would hide what it holds), while its own are. */
static void test_frames_of_a_closed_connection_are_not_the_next_ones(void **state)
{
    (void)state;
    conns_t *c = conns_new();
    const conns_held_limits_t lim = {.bound = 30000, .command_bytes_per_s = 0};
    cut_seen_t seen = {.n = 0};
    pair_t hider = tcp_pair_open(), honest = tcp_pair_open();
    pair_t *all[] = {&hider, &honest};
    for (size_t i = 0; i < 2; i++) {
        conns_opened(c, all[i]->ours, 0);
        conns_took(c, all[i]->ours, "old", 3, 10); /* the earlier connection's */
        conns_closed(c, all[i]->ours);
        conns_opened(c, all[i]->ours, 0);              /* a new one on the number */
        conns_took(c, all[i]->ours, "old", 3, 100000); /* left queued: not its */
        tcp_send_read(all[i], 50000, 50000);
    }
    conns_took(c, honest.ours, "new", 3, 50000); /* its own: all it sent */
    conns_held_snapshot(c, 1000);
    assert_int_equal(conns_held_check(c, 1000, &lim, cut_note, &seen), 1);
    assert_int_equal(seen.fd[0], hider.ours);
    assert_int_equal(seen.held[0], 50000);
    assert_false(client_sees_shutdown(&honest));
    pair_close(&hider);
    pair_close(&honest);
    conns_destroy(&c);
}

/* A connection that holds unfinished parts and drips more no faster than
 * the command allowance grows would never be cut by the rate alone: the
 * allowance's cap ends it at the bound and the cap. */
static void test_slow_drip_is_cut_at_the_cap(void **state)
{
    (void)state;
    conns_t *c = conns_new();
    const conns_held_limits_t lim = {
        .bound = 30000, .command_bytes_per_s = 1000, .command_bytes_max = 5000};
    cut_seen_t seen = {.n = 0};
    pair_t drip = tcp_pair_open();
    conns_opened(c, drip.ours, 0);
    int cut_at = -1;
    for (int s = 1; s <= 100 && cut_at < 0; s++) {
        tcp_send_read(&drip, 1000, 1000); /* a second's worth of the allowance */
        conns_held_snapshot(c, s * 1000);
        if (conns_held_check(c, s * 1000, &lim, cut_note, &seen) == 1)
            cut_at = s;
    }
    /* 1,000 held a second: past 30,000 + 5,000 at the 36th */
    assert_int_equal(cut_at, 36);
    assert_int_equal(seen.held[0], 31000);
    assert_true(client_sees_shutdown(&drip));
    pair_close(&drip);
    conns_destroy(&c);
}

/* The broker has taken twice a connection's queue of messages from one
 * connection since the snapshot: fair-queued, every connection's queue
 * was read meanwhile, and the check may run on a router never empty. A
 * snapshot starts the count again. */
static void test_held_check_settles_by_messages_taken(void **state)
{
    (void)state;
    conns_t *c = conns_new();
    pair_t a = tcp_pair_open(), b = tcp_pair_open();
    conns_opened(c, a.ours, 0);
    conns_opened(c, b.ours, 0);
    assert_false(conns_held_settled(c, 3));
    conns_held_snapshot(c, 1000);
    for (int i = 0; i < 5; i++)
        conns_took(c, a.ours, NULL, 0, 35);
    for (int i = 0; i < 5; i++)
        conns_took(c, b.ours, NULL, 0, 35);
    assert_false(conns_held_settled(c, 3)); /* ten in all, five at most of one */
    conns_took(c, b.ours, NULL, 0, 35);
    assert_true(conns_held_settled(c, 3));
    const conns_held_limits_t lim = {.bound = 30000, .command_bytes_per_s = 0};
    assert_int_equal(conns_held_check(c, 1000, &lim, NULL, NULL), 0);
    conns_held_snapshot(c, 2000);
    assert_false(conns_held_settled(c, 3));
    pair_close(&a);
    pair_close(&b);
    conns_destroy(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connections_without_a_frame_are_shut_down),
        cmocka_unit_test(test_connections_over_the_cap_are_shut_down),
        cmocka_unit_test(test_over_the_cap_standbys_go_last),
        cmocka_unit_test(test_silent_allowance_keeps_the_oldest),
        cmocka_unit_test(test_revoked_connections_are_closed),
        cmocka_unit_test(test_flow_kept_for_its_connection),
        cmocka_unit_test(test_silent_allowance_is_shared_by_address),
        cmocka_unit_test(test_silent_allowance_with_many_addresses),
        cmocka_unit_test(test_reload_revokes_unregistered_connections),
        cmocka_unit_test(test_reused_socket_number_is_not_shut_down),
        cmocka_unit_test(test_non_sockets_and_unknown_numbers),
        cmocka_unit_test(test_frame_wire_bytes),
        cmocka_unit_test(test_held_bytes_beyond_the_bound_are_cut),
        cmocka_unit_test(test_command_allowance_does_not_add_up),
        cmocka_unit_test(test_slow_drip_is_cut_at_the_cap),
        cmocka_unit_test(test_frames_of_a_closed_connection_are_not_the_next_ones),
        cmocka_unit_test(test_held_check_settles_by_messages_taken),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
