/*
 * test_metrics.c — schakeld's HTTP metrics: /metrics is valid Prometheus
 * text (checked by promtool, Debian's prometheus package), its counters
 * move by exactly what the test does, /healthz and /readyz answer (also
 * beside clients that trickle their requests on many connections), no
 * content, subject or principal ever shows, and a bad metrics_listen stops
 * the broker at start-up. While the broker starts and once its stop begins
 * /metrics is 503 and /readyz says why; its signals are requests from the
 * start on, and one that lands before the loop's poll is not left waiting.
 * Those tests step the broker with syncgate.so and pollgate.so (preloaded
 * into their brokers alone), never with sleeps.
 *
 * Counters are read after two Heartbeat round trips of a connected client:
 * the broker publishes its snapshot at the end of each loop turn, and the
 * second reply is sent in a later turn than anything the test did before,
 * so the snapshot already holds it. Gauges refreshed on a timer (connected
 * principals, backlog) are awaited, bounded, with round trips in between.
 */
#define _GNU_SOURCE /* pipe2 */

#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "schakel.pb-c.h"

#define SUBJECT "PSN-5e1f0c93d2"
#define SUMMARY "Samenvatting die nooit in metrics mag staan 7421"
#define GROUNDS "Verhuurder meldt onverklaarbare contante betalingen"

/* ------------------------------------------------------------ HTTP */

typedef struct http_reply {
    int status;
    char *head; /* status line and headers */
    char *body;
} http_reply_t;

static void http_reply_free(http_reply_t *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

static http_reply_t http_request_within(const char *address, const char *method, const char *path,
                                        int timeout_ms);

/* One HTTP/1.0 request; the server closes the connection after the reply.
 * Every wait is bounded by H_TIMEOUT_MS. */
static http_reply_t http_request(const char *address, const char *method, const char *path)
{
    return http_request_within(address, method, path, H_TIMEOUT_MS);
}

static http_reply_t http_request_within(const char *address, const char *method, const char *path,
                                        int timeout_ms)
{
    int fd = h_connect_tcp(address);
    char request[256];
    int n = snprintf(request, sizeof request, "%s %s HTTP/1.0\r\nHost: %s\r\n\r\n", method, path,
                     address);
    assert_int_equal(write(fd, request, (size_t)n), n);
    char *text = h_read_to_close(fd, timeout_ms);
    close(fd);
    if (text == NULL)
        fail_msg("no complete HTTP reply to %s %s within %d ms", method, path, timeout_ms);
    http_reply_t r = {0};
    char *split = strstr(text, "\r\n\r\n");
    if (split == NULL || sscanf(text, "HTTP/1.%*d %d", &r.status) != 1)
        fail_msg("not an HTTP reply: \"%.200s\"", text);
    *split = '\0';
    r.body = strdup(split + 4);
    r.head = text;
    assert_non_null(r.body);
    return r;
}

static char *http_get_ok(const char *address, const char *path)
{
    http_reply_t r = http_request(address, "GET", path);
    if (r.status != 200)
        fail_msg("GET %s: status %d: %s", path, r.status, r.body);
    char *body = r.body;
    r.body = NULL;
    http_reply_free(&r);
    return body;
}

/* ------------------------------------------------------------ samples */

/* The value of one series, written exactly as the text format has it
 * (`name` or `name{label="value"}`); -1 if it is absent. */
static double series_value(const char *text, const char *series)
{
    size_t len = strlen(series);
    for (const char *line = text; *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : "") {
        if (strncmp(line, series, len) == 0 && line[len] == ' ')
            return strtod(line + len + 1, NULL);
    }
    return -1;
}

static char *refusal_series(const char *reason)
{
    static char series[128];
    snprintf(series, sizeof series, "schakel_refusals_total{reason=\"%s\"}", reason);
    return series;
}

/* See the file comment: after two round trips the snapshot holds all that
 * the broker did for this test before. */
static void settle(schakel_client_t *client)
{
    (void)h_backlog(client);
    (void)h_backlog(client);
}

/* Wait (bounded) until a timer-refreshed gauge reads `expected`. */
static void await_gauge(const char *address, schakel_client_t *client, const char *series,
                        double expected)
{
    int64_t deadline = (int64_t)time(NULL) + H_TIMEOUT_MS / 1000;
    char *text = NULL;
    while ((int64_t)time(NULL) <= deadline) {
        free(text);
        text = http_get_ok(address, "/metrics");
        if (series_value(text, series) == expected) {
            free(text);
            return;
        }
        (void)h_backlog(client); /* a round trip: lets the broker turn */
    }
    fail_msg("%s never became %g:\n%s", series, expected, text);
}

/* ------------------------------------------------------------ promtool */

/* Run argv (a program on the PATH) with in_path on stdin, its stdout and
 * stderr into report; its exit status, 127 when it could not be run, or
 * -1 when it was killed after h_cli_timeout_ms(). */
static int run_tool(h_env_t *env, char *const *argv, const char *in_path, char *report,
                    size_t report_len)
{
    char out_path[160];
    const char *program = strrchr(argv[0], '/') != NULL ? strrchr(argv[0], '/') + 1 : argv[0];
    snprintf(out_path, sizeof out_path, "%s/%s.out", env->dir, program);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int in = open(in_path, O_RDONLY), out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
            _exit(126);
        execvp(argv[0], argv);
        _exit(127);
    }
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    assert_true(pidfd >= 0);
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    int ready;
    do
        ready = poll(&p, 1, h_cli_timeout_ms());
    while (ready < 0 && errno == EINTR);
    if (ready <= 0)
        kill(pid, SIGKILL);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    close(pidfd);
    report[0] = '\0';
    FILE *f = fopen(out_path, "r");
    if (f != NULL) {
        size_t got = fread(report, 1, report_len - 1, f);
        report[got] = '\0';
        fclose(f);
    }
    if (ready <= 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* text into DIR/metrics.txt; its path into path. */
static void write_metrics_text(h_env_t *env, const char *text, char *path, size_t path_len)
{
    snprintf(path, path_len, "%s/metrics.txt", env->dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* `promtool check metrics` with text on stdin: 0 when it parses and lints
 * clean. Bounded by h_cli_timeout_ms(). */
static void assert_promtool_accepts(h_env_t *env, const char *text)
{
    char in_path[160], report[2048];
    char *const argv[] = {"promtool", "check", "metrics", NULL};
    write_metrics_text(env, text, in_path, sizeof in_path);
    int status = run_tool(env, argv, in_path, report, sizeof report);
    if (status < 0)
        fail_msg("promtool did not finish within %d ms", h_cli_timeout_ms());
    if (status == 127)
        fail_msg("promtool is not installed: run `make deps` (Debian package prometheus)");
    if (status != 0)
        fail_msg("promtool check metrics refused /metrics (status %d): %s\n--- text:\n%s", status,
                 report, text);
}

/* ------------------------------------------------------------ signals */

/* politie -> om under politie-ondermijning-om, with a subject and a
 * summary that must never reach /metrics. */
static schakel_signal_t police_signal(void)
{
    schakel_signal_t s = {
        .kind = "witwassen",
        .theme = "ondermijning",
        .area = "GM0935",
        .subject = SUBJECT,
        .grounds = GROUNDS,
        .severity = SCHAKEL_SEVERITY_HIGH,
        .observed_at = (int64_t)time(NULL) - 60,
        .summary = SUMMARY,
    };
    return s;
}

/* No rule lets politie send woninginbraak of this kind to anyone. */
static schakel_signal_t denied_signal(void)
{
    schakel_signal_t s = police_signal();
    s.theme = "woninginbraak";
    s.subject = NULL;
    s.grounds = NULL;
    return s;
}

/* ------------------------------------------------------------ tests */

static void assert_every_reason_listed_at_zero(const char *text)
{
    const ProtobufCEnumDescriptor *reasons = &schakel__reason__descriptor;
    for (unsigned i = 0; i < reasons->n_values; i++) {
        double value = series_value(text, refusal_series(reasons->values[i].name));
        if (reasons->values[i].value == 0)
            assert_true(value < 0); /* REASON_NONE is never sent */
        else if (value != 0)
            fail_msg("%s is %g before any request, not 0", reasons->values[i].name, value);
    }
}

static void test_health_and_readiness(void **state)
{
    h_env_t *env = *state;
    char address[64];
    h_broker_start_metrics(env, NULL, address, sizeof address);
    assert_int_equal(strncmp(address, "127.0.0.1:", 10), 0);

    static const struct {
        const char *method, *path;
        int status;
        const char *body; /* a piece of it */
    } rows[] = {
        {"GET", "/healthz", 200, "ok"}, {"GET", "/readyz", 200, "ready"},
        {"HEAD", "/readyz", 200, ""},   {"GET", "/metrics", 200, "schakel_up 1\n"},
        {"GET", "/", 404, "not found"}, {"GET", "/metrics/../etc/passwd", 404, "not found"},
        {"POST", "/metrics", 405, ""},  {"DELETE", "/readyz", 405, ""},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        http_reply_t r = http_request(address, rows[i].method, rows[i].path);
        if (r.status != rows[i].status || strstr(r.body, rows[i].body) == NULL)
            fail_msg("%s %s: status %d body \"%.200s\", expected %d with \"%s\"", rows[i].method,
                     rows[i].path, r.status, r.body, rows[i].status, rows[i].body);
        if (strcmp(rows[i].method, "HEAD") == 0)
            assert_string_equal(r.body, "");
        http_reply_free(&r);
    }
    http_reply_t r = http_request(address, "GET", "/metrics");
    assert_non_null(strstr(r.head, "text/plain; version=0.0.4"));
    assert_promtool_accepts(env, r.body);
    assert_every_reason_listed_at_zero(r.body);
    http_reply_free(&r);

    /* readiness stops with the broker */
    assert_int_equal(h_broker_stop(env), 0);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)atoi(strchr(address, ':') + 1))};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    assert_int_not_equal(connect(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    close(fd);
    h_done(env);
}

/* A trail written outside the running broker (an entry appended to it by
 * another connection): the refused publish is INTERNAL_ERROR, and /readyz
 * says why, not that commits fail UNAVAILABLE. (schakelctl status cannot
 * say it: an operator's admission needs an entry too.) */
static void test_readiness_under_a_tail_mismatch(void **state)
{
    h_env_t *env = *state;
    char address[64];
    h_broker_start_metrics(env, NULL, address, sizeof address);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = police_signal();
    h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    h_store_exec(env, "INSERT INTO audit (seq, at, event, hash) SELECT max(seq) + 1, max(at),"
                      " 'request.refused', randomblob(32) FROM audit");
    h_publish_refused(politie, NULL, &s, "INTERNAL_ERROR");
    settle(politie);
    http_reply_t r = http_request(address, "GET", "/readyz");
    if (r.status != 503 ||
        strstr(r.body, "written outside the broker (audit.tail_mismatch)") == NULL ||
        strstr(r.body, "INTERNAL_ERROR") == NULL)
        fail_msg("/readyz: %d \"%s\"", r.status, r.body);
    http_reply_free(&r);
    schakel_close(&politie);
    h_done(env);
}

typedef struct counts {
    double accepted, denied, deliveries, redeliveries, acks, auth_failures, latency_count;
} counts_t;

static counts_t read_counts(const char *address)
{
    char *text = http_get_ok(address, "/metrics");
    counts_t c = {
        .accepted = series_value(text, "schakel_publishes_accepted_total"),
        .denied = series_value(text, refusal_series("POLICY_DENIED")),
        .deliveries = series_value(text, "schakel_deliveries_total"),
        .redeliveries = series_value(text, "schakel_redeliveries_total"),
        .acks = series_value(text, "schakel_acks_total"),
        .auth_failures = series_value(text, "schakel_auth_failures_total"),
        .latency_count = series_value(text, "schakel_accept_to_deliver_seconds_count"),
    };
    free(text);
    return c;
}

static void assert_counts_equal(const char *when, counts_t got, counts_t expected)
{
    if (memcmp(&got, &expected, sizeof got) != 0)
        fail_msg("%s: accepted %g/%g denied %g/%g deliveries %g/%g redeliveries %g/%g acks "
                 "%g/%g auth failures %g/%g latency count %g/%g (got/expected)",
                 when, got.accepted, expected.accepted, got.denied, expected.denied, got.deliveries,
                 expected.deliveries, got.redeliveries, expected.redeliveries, got.acks,
                 expected.acks, got.auth_failures, expected.auth_failures, got.latency_count,
                 expected.latency_count);
}

static void assert_counts(const char *address, const char *when, counts_t expected)
{
    assert_counts_equal(when, read_counts(address), expected);
}

/* The latency histogram after `observed` first sends, all of them made
 * within the test's bound: cumulative buckets, +Inf equal to the count. */
static void assert_latency_histogram(const char *address, double observed)
{
    char *text = http_get_ok(address, "/metrics");
    static const char *const bounds[] = {"0.001", "0.01", "0.1", "1", "10", "60", "86400", "+Inf"};
    double previous = 0;
    char series[128];
    for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++) {
        snprintf(series, sizeof series, "schakel_accept_to_deliver_seconds_bucket{le=\"%s\"}",
                 bounds[i]);
        double value = series_value(text, series);
        if (value < previous || value > observed)
            fail_msg("%s = %g (previous bucket %g, observed %g)", series, value, previous,
                     observed);
        previous = value;
    }
    assert_true(previous == observed);
    assert_true(series_value(text, "schakel_accept_to_deliver_seconds_bucket{le=\"60\"}") ==
                observed);
    double sum = series_value(text, "schakel_accept_to_deliver_seconds_sum");
    assert_true(sum >= 0 && sum < observed * 60);
    free(text);
}

/* ------------------------------------------------------------ tricklers */

/* docs/OPERATIONS.md (Metrics): a connection to the endpoint lives at most
 * this long from its accept; at most this many wait for their request at
 * once, a new one beyond closing the oldest. */
#define METRICS_DEADLINE_MS 3000
#define METRICS_CONNECTIONS 64

/* More tricklers than the endpoint serves at once, and more than twice as
 * many (past that libmicrohttpd stops accepting, and the rest wait in the
 * listen backlog), each sending a byte of its request every
 * TRICKLE_EVERY_MS (well inside libmicrohttpd's own 3 s inactivity
 * timeout, which the bytes keep resetting). */
enum { TRICKLERS = 2 * METRICS_CONNECTIONS + 32, TRICKLE_EVERY_MS = 400, TRICKLE_SLACK_MS = 3000 };

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The test holds TRICKLERS sockets and the broker as many: make sure the
 * open-file limit allows them (raising the soft limit up to the hard one
 * if need be; the broker started after this inherits it). The shipped
 * unit sets LimitNOFILE=65536. */
static void ensure_open_files(rlim_t needed)
{
    struct rlimit limit;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &limit), 0);
    if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < needed) {
        if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < needed)
            fail_msg("RLIMIT_NOFILE allows %llu open files (hard limit), this test needs %llu",
                     (unsigned long long)limit.rlim_max, (unsigned long long)needed);
        limit.rlim_cur = needed;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &limit), 0);
    }
}

/* A byte read, or the end of the connection: 1 once it has ended (EOF or
 * reset), 0 while it is open. */
static int drained_to_end(int fd, char *buf, size_t cap, size_t *used)
{
    char scratch[512];
    for (;;) {
        char *into = buf != NULL && *used < cap ? buf + *used : scratch;
        size_t room = buf != NULL && *used < cap ? cap - *used : sizeof scratch;
        ssize_t got = recv(fd, into, room, MSG_DONTWAIT);
        if (got > 0) {
            if (into != scratch)
                *used += (size_t)got;
            continue;
        }
        if (got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            return 1;
        return 0;
    }
}

/* Tricklers on more connections than the endpoint serves at once: a
 * scraper (HTTP/1.1, which the endpoint answers and closes) gets its
 * /healthz before any trickler is old enough for the deadline, so room was
 * made by closing the oldest; and the broker closes every trickler, the
 * last within the deadline (plus slack) of the start, however they go on
 * trickling. Both counted in schakel_metrics_connections_cut_total. */
static void test_tricklers_are_cut(void **state)
{
    h_env_t *env = *state;
    ensure_open_files(2 * TRICKLERS + 256);
    char metrics[64];
    h_broker_start_metrics(env, NULL, metrics, sizeof metrics);
    int fds[TRICKLERS], open_count = TRICKLERS;
    int64_t start = mono_ms();
    for (int i = 0; i < TRICKLERS; i++) {
        fds[i] = h_connect_tcp(metrics);
        static const char head[] = "GET /metrics HTTP/1.1\r\nX-Slow: ";
        assert_int_equal(send(fds[i], head, sizeof head - 1, MSG_NOSIGNAL),
                         (ssize_t)(sizeof head - 1));
    }
    int scraper = h_connect_tcp(metrics);
    char request[128], reply[4096];
    int n = snprintf(request, sizeof request, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", metrics);
    assert_int_equal(send(scraper, request, (size_t)n, MSG_NOSIGNAL), n);
    size_t reply_len = 0;
    int64_t answered_at = -1, last_cut_at = -1, next_trickle = start + TRICKLE_EVERY_MS;
    int64_t give_up = start + METRICS_DEADLINE_MS + TRICKLE_SLACK_MS;
    struct pollfd p[TRICKLERS + 1];
    int64_t now;
    while ((now = mono_ms()) < give_up && (answered_at < 0 || open_count > 0)) {
        if (now >= next_trickle) {
            for (int i = 0; i < TRICKLERS; i++)
                if (fds[i] >= 0)
                    (void)send(fds[i], "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT); /* a cut one: EPIPE */
            next_trickle += TRICKLE_EVERY_MS;
        }
        int wait_ms = (int)((next_trickle < give_up ? next_trickle : give_up) - now);
        p[0] = (struct pollfd){.fd = answered_at < 0 ? scraper : -1, .events = POLLIN};
        for (int i = 0; i < TRICKLERS; i++)
            p[i + 1] = (struct pollfd){.fd = fds[i], .events = POLLIN};
        if (poll(p, TRICKLERS + 1, wait_ms > 0 ? wait_ms : 0) < 0)
            assert_int_equal(errno, EINTR);
        if (p[0].revents != 0 && drained_to_end(scraper, reply, sizeof reply - 1, &reply_len))
            answered_at = mono_ms();
        for (int i = 0; i < TRICKLERS; i++) {
            if (p[i + 1].revents != 0 && drained_to_end(fds[i], NULL, 0, NULL)) {
                close(fds[i]);
                fds[i] = -1;
                open_count--;
                last_cut_at = mono_ms();
            }
        }
    }
    for (int i = 0; i < TRICKLERS; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    close(scraper);
    reply[reply_len] = '\0';
    int status = 0;
    if (answered_at < 0 || sscanf(reply, "HTTP/1.1 %d", &status) != 1 || status != 200 ||
        strstr(reply, "\r\n\r\nok\n") == NULL)
        fail_msg("beside %d tricklers, no whole answer to /healthz (and its close) within %d ms: "
                 "\"%.300s\"",
                 TRICKLERS, METRICS_DEADLINE_MS + TRICKLE_SLACK_MS, reply);
    if (answered_at - start >= METRICS_DEADLINE_MS)
        fail_msg("/healthz was answered after %lld ms, not before the first trickler reached "
                 "the %d ms deadline: no room was made by closing the oldest",
                 (long long)(answered_at - start), METRICS_DEADLINE_MS);
    if (open_count > 0)
        fail_msg("%d of %d tricklers still open %d ms after they connected", open_count, TRICKLERS,
                 METRICS_DEADLINE_MS + TRICKLE_SLACK_MS);
    print_message("tricklers: /healthz after %lld ms, the last trickler closed after %lld ms\n",
                  (long long)(answered_at - start), (long long)(last_cut_at - start));

    /* each trickler cut once, by the broker: at least those beyond the
     * slots made room, the others at the deadline */
    char *text = http_get_ok(metrics, "/metrics");
    double crowded = series_value(text, "schakel_metrics_connections_cut_total{why=\"crowded\"}");
    double deadline = series_value(text, "schakel_metrics_connections_cut_total{why=\"deadline\"}");
    free(text);
    if (crowded < TRICKLERS - METRICS_CONNECTIONS || crowded + deadline != TRICKLERS)
        fail_msg("connections cut: %g crowded, %g at the deadline; expected %d in all, at "
                 "least %d crowded",
                 crowded, deadline, TRICKLERS, TRICKLERS - METRICS_CONNECTIONS);
    h_done(env);
}

static void test_counters_follow_traffic(void **state)
{
    h_env_t *env = *state;
    char address[64];
    h_broker_start_metrics(env, NULL, address, sizeof address);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    settle(politie);
    counts_t expect = read_counts(address);
    assert_true(expect.auth_failures >= 1); /* the start-up self-check's probe */
    assert_true(expect.accepted == 0 && expect.deliveries == 0 && expect.latency_count == 0);

    /* one accepted publish, one refused */
    schakel_signal_t s = police_signal();
    h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    schakel_signal_t denied = denied_signal();
    h_publish_refused(politie, NULL, &denied, "POLICY_DENIED");
    settle(politie);
    expect.accepted += 1;
    expect.denied += 1;
    assert_counts(address, "after one accepted and one refused publish", expect);
    await_gauge(address, politie, "schakel_backlog{partner=\"om\"}", 1);

    /* om receives (a first send: timed) and acks */
    schakel_client_t *om = h_connect(env, H_OM);
    await_gauge(address, om, "schakel_connected_principals{partner=\"om\"}", 1);
    await_gauge(address, om, "schakel_connected_principals{partner=\"politie\"}", 1);
    schakel_delivery_t *d = h_receive(om);
    assert_false(d->redelivery);
    assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
    schakel_delivery_free(&d);
    settle(om);
    expect.deliveries += 1;
    expect.acks += 1;
    expect.latency_count += 1;
    assert_counts(address, "after one delivery and its ack", expect);
    assert_latency_histogram(address, 1);
    await_gauge(address, om, "schakel_backlog{partner=\"om\"}", 0);

    /* a second one is received, not acked, and comes again after a
     * reconnect: a redelivery, not timed again */
    h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    d = h_receive(om);
    uint64_t seq = d->seq;
    schakel_delivery_free(&d);
    schakel_close(&om);
    om = h_connect(env, H_OM);
    d = h_receive(om);
    assert_int_equal(d->seq, seq);
    assert_true(d->redelivery);
    assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
    schakel_delivery_free(&d);
    settle(om);
    expect.accepted += 1;
    expect.deliveries += 2;
    expect.redeliveries += 1;
    expect.acks += 1;
    expect.latency_count += 1;
    assert_counts(address, "after a redelivery", expect);
    assert_latency_histogram(address, 2);

    /* an unknown key fails its handshake: counted (libzmq may retry) */
    schakel_client_t *stranger = NULL;
    schakel_error_t err;
    assert_int_not_equal(h_try_connect(env, h_key_file(env, H_UNREGISTERED), &stranger, &err),
                         SCHAKEL_OK);
    settle(politie);
    counts_t now = read_counts(address);
    assert_true(now.auth_failures >= expect.auth_failures + 1);
    expect.auth_failures = now.auth_failures; /* the rest must not have moved */
    assert_counts_equal("after a refused handshake", now, expect);

    /* nothing of the contents, no subject, no principal ever shows */
    char *text = http_get_ok(address, "/metrics");
    static const char *const secrets[] = {SUBJECT,         SUMMARY,     GROUNDS, "witwassen",
                                          "bvh-koppeling", "om/parket", "GM0935"};
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
        if (strstr(text, secrets[i]) != NULL)
            fail_msg("/metrics shows \"%s\":\n%s", secrets[i], text);
    assert_true(series_value(text, "schakel_sessions") >= 2);
    /* the system clock agrees with the broker's (a step: test_clock) */
    if (strstr(text, "\nschakel_clock_step_seconds 0.000\n") == NULL)
        fail_msg("/metrics has no schakel_clock_step_seconds of 0:\n%s", text);
    assert_promtool_accepts(env, text);
    free(text);

    schakel_close(&om);
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

/* Every turn that writes commits with an fsync, except a turn of acks
 * only: publishes move the synced count, acks (one per turn here) the
 * unsynced one. A turn that also ran the once-a-second housekeeping is
 * synced, so of the acks at least one, not all, must come out unsynced. */
static double counter_now(const char *address, const char *series)
{
    char *text = http_get_ok(address, "/metrics");
    double v = series_value(text, series);
    free(text);
    if (v < 0)
        fail_msg("/metrics has no %s", series);
    return v;
}

static void test_ack_turns_commit_without_fsync(void **state)
{
    h_env_t *env = *state;
    enum { ROUNDS = 6 };
    static const char synced[] = "schakel_store_commits_synced_total";
    static const char unsynced[] = "schakel_store_commits_unsynced_total";
    char address[64];
    h_broker_start_metrics(env, NULL, address, sizeof address);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *om = h_connect(env, H_OM);
    settle(politie);
    settle(om);
    double synced0 = counter_now(address, synced), unsynced0 = counter_now(address, unsynced);

    schakel_signal_t s = police_signal();
    for (int i = 0; i < ROUNDS; i++)
        h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    settle(politie);
    double synced1 = counter_now(address, synced);
    if (synced1 < synced0 + ROUNDS)
        fail_msg("%d publishes moved %s by %g", ROUNDS, synced, synced1 - synced0);
    assert_true(counter_now(address, unsynced) == unsynced0); /* no ack yet */

    for (int i = 0; i < ROUNDS; i++) {
        schakel_delivery_t *d = h_receive(om);
        assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
        schakel_delivery_free(&d);
        settle(om); /* the ack's turn is over before the next one is sent */
    }
    assert_int_equal(h_backlog(om), 0);
    double unsynced1 = counter_now(address, unsynced);
    if (unsynced1 < unsynced0 + 1 || unsynced1 > unsynced0 + ROUNDS)
        fail_msg("%d acks, one per turn, moved %s by %g", ROUNDS, unsynced, unsynced1 - unsynced0);
    schakel_close(&om);
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

/* A histogram of durations.h in /metrics: every bucket present, cumulative,
 * its +Inf equal to its count, its sum within what the count allows.
 * Returns the count. */
static double durations_count(const char *text, const char *name)
{
    static const char *const bounds[] = {"0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
                                         "0.01",   "0.025",   "0.05",   "0.1",   "0.25",   "0.5",
                                         "1",      "2.5",     "5",      "+Inf"};
    char series[160];
    double previous = 0;
    for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++) {
        snprintf(series, sizeof series, "%s_bucket{le=\"%s\"}", name, bounds[i]);
        double value = series_value(text, series);
        if (value < previous)
            fail_msg("%s = %g, below the bucket before it (%g)", series, value, previous);
        previous = value;
    }
    snprintf(series, sizeof series, "%s_count", name);
    double count = series_value(text, series);
    snprintf(series, sizeof series, "%s_sum", name);
    double sum = series_value(text, series);
    if (count != previous || sum < 0 || (count == 0 && sum != 0))
        fail_msg("%s: count %g, +Inf bucket %g, sum %g", name, count, previous, sum);
    return count;
}

/* Each publish is a turn that writes and a commit whose WAL is synced
 * before its Accepted (on the loop or the sync thread): both histograms
 * count at least one per publish, and both are well formed. */
static void test_sync_and_turn_durations(void **state)
{
    h_env_t *env = *state;
    enum { ROUNDS = 6 };
    static const char syncs[] = "schakel_store_wal_sync_seconds";
    static const char turns[] = "schakel_loop_turn_seconds";
    char address[64];
    h_broker_start_metrics(env, NULL, address, sizeof address);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    settle(politie);
    char *text = http_get_ok(address, "/metrics");
    double syncs0 = durations_count(text, syncs), turns0 = durations_count(text, turns);
    free(text);

    schakel_signal_t s = police_signal();
    for (int i = 0; i < ROUNDS; i++)
        h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    settle(politie);
    text = http_get_ok(address, "/metrics");
    double syncs1 = durations_count(text, syncs), turns1 = durations_count(text, turns);
    free(text);
    if (syncs1 < syncs0 + ROUNDS || turns1 < turns0 + ROUNDS)
        fail_msg("%d publishes moved %s_count by %g and %s_count by %g", ROUNDS, syncs,
                 syncs1 - syncs0, turns, turns1 - turns0);
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

/* Publishes that fill the WAL past its checkpoint threshold (1,000
 * frames; a publish turn writes a dozen or more) make the checkpoint
 * thread copy it: its rounds are counted. A round runs beside the loop,
 * so the test takes turns (each refreshes the counters) until one is
 * counted or the bound passes. */
static void test_checkpoint_rounds_counted(void **state)
{
    h_env_t *env = *state;
    enum { PUBLISHES = 250 };
    static const char rounds_series[] = "schakel_store_checkpoint_rounds_total";
    static const char in_place_series[] = "schakel_store_checkpoints_in_place_total";
    char address[64];
    h_broker_start_metrics(env, NULL, address, sizeof address);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    settle(politie);
    assert_true(counter_now(address, rounds_series) == 0);
    assert_true(counter_now(address, in_place_series) == 0);
    schakel_signal_t s = police_signal();
    for (int i = 0; i < PUBLISHES; i++)
        h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    int64_t deadline = (int64_t)time(NULL) + H_TIMEOUT_MS / 1000;
    double rounds = 0;
    while ((rounds = counter_now(address, rounds_series)) < 1 && (int64_t)time(NULL) <= deadline)
        settle(politie);
    if (rounds < 1)
        fail_msg("%d publishes, and no checkpoint round within %d ms", PUBLISHES, H_TIMEOUT_MS);
    /* listed (counter_now fails the test if not) */
    (void)counter_now(address, in_place_series);
    (void)counter_now(address, "schakel_store_checkpoints_forced_total");
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

/* One signal for om/parket, committed; the broker is stopped after it
 * and its delivery (the one waiting in its row) returned. */
static h_waiting_t set_aside_one_waiting(h_env_t *env)
{
    char address[64];
    h_broker_start_metrics(env, NULL, address, sizeof address);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = h_police_signal("BVH-2024-13001");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    schakel_close(&politie);
    h_waiting_t waiting;
    assert_int_equal(h_mailbox_waiting(env, H_OM, &waiting, 1), 1);
    assert_int_equal(h_broker_stop(env), 0);
    return waiting;
}

/* A delivery set aside by the push counts once in
 * schakel_deliveries_set_aside_total, however many pushes follow, and is
 * held in schakel_deliveries_set_aside until it goes. */
static void test_set_aside_counted(void **state)
{
    h_env_t *env = *state;
    static const char total[] = "schakel_deliveries_set_aside_total";
    static const char held[] = "schakel_deliveries_set_aside";
    h_waiting_t waiting = set_aside_one_waiting(env);
    h_mailbox_rule_set(env, waiting.first_seq, H_RULE_LEGAL_BASIS, "geen");
    char address[64];
    h_broker_start_metrics(env, NULL, address, sizeof address);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    settle(politie);
    assert_true(counter_now(address, total) == 0);
    await_gauge(address, politie, held, 0);
    schakel_client_t *om = h_connect(env, H_OM);
    assert_int_equal(schakel_subscribe(om, 0), SCHAKEL_OK);
    for (int i = 0; i < 3; i++) {
        char ref[32];
        snprintf(ref, sizeof ref, "BVH-2024-%05d", 13002 + i);
        schakel_signal_t s = h_police_signal(ref);
        (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
        schakel_delivery_t *d = h_receive(om);
        assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
        schakel_delivery_free(&d);
    }
    settle(om);
    assert_true(counter_now(address, total) == 1);
    await_gauge(address, om, held, 1);
    schakel_close(&om);
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

/* The schema-9 migration sets aside a delivery that does not open under
 * the layout of schema 8 (here: every one sealed since, in a store set
 * back to 8, its mailbox row made a row of deliveries again); the broker
 * records each at its start, as the push would: one log line, one audit
 * entry, counted; the schema-13 step keeps it set aside, as a row. */
static void test_set_aside_by_migration_recorded(void **state)
{
    h_env_t *env = *state;
    int64_t seq = set_aside_one_waiting(env).seq;
    assert_int_equal(h_store_rewind_mailbox(env, 8), 1);
    long offset = h_log_offset(env);
    char address[64], sql[256];
    h_broker_start_metrics(env, NULL, address, sizeof address);
    schakel_client_t *om = h_connect(env, H_OM);
    settle(om);
    assert_true(counter_now(address, "schakel_deliveries_set_aside_total") == 1);
    assert_int_equal(h_backlog(om), 0);
    char line[96];
    snprintf(line, sizeof line, "event=delivery.set_aside recipient=%s seq=%lld ", H_OM,
             (long long)seq);
    assert_int_equal(h_log_count(env, offset, line), 1);
    assert_int_equal(h_log_count(env, offset, "under the layout of schema 8"), 1);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM audit WHERE event = 'delivery.set_aside' AND delivery_seq = %lld"
             " AND recipient = ?1",
             (long long)seq);
    assert_int_equal(h_store_int(env, sql, H_OM), 1);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM mailbox_set_aside WHERE first_seq = %lld AND n = 1"
             " AND recipient = ?1 AND reason LIKE '%%under the layout of schema 8%%'",
             (long long)seq);
    assert_int_equal(h_store_int(env, sql, H_OM), 1);
    assert_int_equal(h_store_int(env, "SELECT count(*) FROM mailbox_set_aside", NULL), 1);
    assert_int_equal(h_store_int(env, "SELECT count(*) FROM mailbox", NULL), 0);
    schakel_close(&om);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

/* A broker asked for metrics it cannot serve does not start. */
static void test_bad_metrics_listen_is_refused(void **state)
{
    h_env_t *env = *state;
    int port = 0;
    int taken = h_closed_port(&port);
    char busy[64], busy_error[96];
    snprintf(busy, sizeof busy, "metrics_listen=127.0.0.1:%d", port);
    snprintf(busy_error, sizeof busy_error, "cannot serve metrics on 127.0.0.1:%d", port);
    const struct {
        const char *set;
        int status;
        const char *error;
    } rows[] = {
        {"metrics_listen=localhost:9750", 2, "must name an IPv4 address or a bracketed IPv6"},
        {"metrics_listen=127.0.0.1", 2, "must be HOST:PORT"},
        {"metrics_listen=127.0.0.1:65536", 2, "must be HOST:PORT"},
        {"metrics_listen=127.0.0.1:-1", 2, "must be HOST:PORT"},
        {"metrics_listen=[::1:9750", 2, "must name an IPv4 address or a bracketed IPv6"},
        {"metrics_listen=:9750", 2, "must be HOST:PORT"},
        {busy, 1, busy_error},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        h_cli_result_t res;
        int status = h_run_schakeld(&res, "--config", env->config_path, "--store", env->store_path,
                                    "--set", rows[i].set, NULL);
        if (status != rows[i].status || strstr(res.err, rows[i].error) == NULL)
            fail_msg("--set %s: status %d, stderr \"%s\"; expected %d with \"%s\"", rows[i].set,
                     status, res.err, rows[i].status, rows[i].error);
        h_cli_result_free(&res);
    }
    h_closed_port_release(taken);
    h_done(env);
}

/* ------------------------------------------------------------ case ids */

static int setup_cases_env(void **state)
{
    *state = h_env_new_with_cases();
    return 0;
}

static const schakel_case_open_t STREET_CASE = {
    .case_type = "ondermijning-adres",
    .area = "BU09350101",
    .title = "Kerkstraat",
};

/* The case counter of the stopped store's: `last` handed out already. */
static void set_last_case_num(const h_env_t *env, long long last)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "INSERT INTO sqlite_sequence (name, seq) SELECT 'cases', 0 WHERE NOT EXISTS"
             " (SELECT 1 FROM sqlite_sequence WHERE name = 'cases');"
             "UPDATE sqlite_sequence SET seq = %lld WHERE name = 'cases'",
             last);
    h_store_exec(env, sql);
}

static double metric_now(const char *address, schakel_client_t *client, const char *series)
{
    settle(client);
    char *text = http_get_ok(address, "/metrics");
    double value = series_value(text, series);
    free(text);
    return value;
}

/* A store with two case ids left: the gauge counts them down, the broker
 * warns once (case.ids_low at the start, not again at each open) and says
 * once that none is left; then every open is refused CASE_IDS_EXHAUSTED
 * (counted, on the trail, nothing stored), while signals and commands on
 * existing cases go on. */
static void test_case_ids_run_out(void **state)
{
    h_env_t *env = *state;
    static const char ids_left[] = "schakel_case_ids_left";
    set_last_case_num(env, 99999997);
    char address[64], id[SCHAKEL_CASE_ID_SIZE];
    h_broker_start_metrics(env, NULL, address, sizeof address);
    if (h_await_log(env, 0, "event=case.ids_low left=2 of=99999999", 0) != 0)
        fail_msg("the start does not warn that two case ids are left");
    schakel_client_t *riec = h_connect(env, H_RIEC);
    assert_true(metric_now(address, riec, ids_left) == 2);
    assert_int_equal(schakel_case_open(riec, &STREET_CASE, NULL, id, NULL, H_TIMEOUT_MS),
                     SCHAKEL_OK);
    assert_string_equal(id, "C-99999998");
    assert_true(metric_now(address, riec, ids_left) == 1);
    assert_int_equal(schakel_case_open(riec, &STREET_CASE, NULL, id, NULL, H_TIMEOUT_MS),
                     SCHAKEL_OK);
    assert_string_equal(id, "C-99999999");
    assert_true(metric_now(address, riec, ids_left) == 0);
    if (h_await_log(env, 0, "level=error event=case.ids_exhausted", 0) != 0)
        fail_msg("the last id used is not logged");

    for (int i = 0; i < 2; i++) {
        uint8_t command_id[16];
        randombytes_buf(command_id, sizeof command_id);
        const schakel_case_options_t o = {.command_id = command_id};
        schakel_status_t st = schakel_case_open(riec, &STREET_CASE, &o, id, NULL, H_TIMEOUT_MS);
        const schakel_error_t *e = schakel_last_error(riec);
        if (st != SCHAKEL_ERR_REFUSED || e->reason != 24 ||
            strcmp(e->reason_name, "CASE_IDS_EXHAUSTED") != 0 ||
            strstr(e->text, "every case id of this broker") == NULL)
            fail_msg("an open with no id left: %s %s: %s", schakel_strerror(st), e->reason_name,
                     e->text);
        char hex[33], sql[256];
        sodium_bin2hex(hex, sizeof hex, command_id, sizeof command_id);
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM audit WHERE event = 'publish.refused' AND message_id = "
                 "'%s' AND reason = 'CASE_IDS_EXHAUSTED'",
                 hex);
        assert_int_equal(h_store_int(env, sql, NULL), 1);
        snprintf(sql, sizeof sql, "SELECT count(*) FROM publishes WHERE message_id = x'%s'", hex);
        assert_int_equal(h_store_int(env, sql, NULL), 0);
    }
    assert_true(metric_now(address, riec, refusal_series("CASE_IDS_EXHAUSTED")) == 2);
    assert_int_equal(h_store_int(env, "SELECT count(*) FROM cases", NULL), 2);
    assert_int_equal(h_log_count(env, 0, "event=case.ids_low "), 1);
    assert_int_equal(h_log_count(env, 0, "event=case.ids_exhausted "), 1);
    /* what does not need a new id goes on */
    assert_int_equal(
        schakel_case_note(riec, "C-99999998", "Nog steeds", NULL, 0, NULL, NULL, H_TIMEOUT_MS),
        SCHAKEL_OK);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = police_signal();
    h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    schakel_close(&politie);
    schakel_close(&riec);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

/* What the last reload found: refused or not and when, and whether the
 * config on disk (or the policy it names) would start the broker; the
 * alert rules of deploy/prometheus fire on both. */
static void test_reload_outcome_exported(void **state)
{
    h_env_t *env = *state;
    static const char failed[] = "schakel_policy_reload_failed",
                      at[] = "schakel_policy_last_reload_timestamp_seconds",
                      start_fails[] = "schakel_config_would_not_start";
    double before_start = (double)time(NULL);
    char address[64];
    h_broker_start_metrics(env, NULL, address, sizeof address);
    schakel_client_t *brandweer = h_connect(env, H_BRANDWEER);
    assert_true(metric_now(address, brandweer, failed) == 0);
    assert_true(metric_now(address, brandweer, start_fails) == 0);
    assert_true(metric_now(address, brandweer, at) >= before_start);

    /* refused: both */
    h_env_write_policy(env, "%srules: [\n  - id: x\n", h_policy_header);
    double before_reload = (double)time(NULL);
    assert_int_equal(h_broker_reload(env), 0);
    assert_true(metric_now(address, brandweer, failed) == 1);
    assert_true(metric_now(address, brandweer, start_fails) == 1);
    assert_true(metric_now(address, brandweer, at) >= before_reload);

    /* taken: neither */
    h_env_write_policy(env, "%s%s", h_policy_header, h_default_rules);
    assert_int_equal(h_broker_reload(env), 1);
    assert_true(metric_now(address, brandweer, failed) == 0);
    assert_true(metric_now(address, brandweer, start_fails) == 0);

    /* taken, but the config would not start the broker */
    FILE *f = fopen(env->config_path, "a");
    assert_non_null(f);
    assert_true(fputs("polcy: shadow.yaml\n", f) >= 0);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(h_broker_reload(env), 1);
    assert_true(metric_now(address, brandweer, failed) == 0);
    assert_true(metric_now(address, brandweer, start_fails) == 1);
    char *text = http_get_ok(address, "/metrics");
    assert_promtool_accepts(env, text);
    free(text);
    schakel_close(&brandweer);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

/* ------------------------------------------------------------ start and stop */

/* The broker of a start or stop test: syncgate.so and pollgate.so preloaded
 * into it alone (built next to this binary), with their gate files in the
 * env's folder, none there at first. */
typedef struct gated {
    char sync_gate[160], poll_gate[160];
    char preload[2 * PATH_MAX + 200];
    char sync_var[200], poll_var[200];
    const char *vars[4];
} gated_t;

static void gated_init(gated_t *g, const h_env_t *env)
{
    char sync[2 * PATH_MAX + 96], poll_shim[2 * PATH_MAX + 96], err[PATH_MAX + 128];
    if (h_shim_preload("syncgate.so", sync, sizeof sync, err, sizeof err) != 0 ||
        h_shim_preload("pollgate.so", poll_shim, sizeof poll_shim, err, sizeof err) != 0)
        fail_msg("%s", err);
    /* each is LD_PRELOAD=[the ASan runtime:]SHIM: the first, then the second shim */
    const char *second = strrchr(poll_shim, ':');
    second = second != NULL ? second + 1 : poll_shim + strlen("LD_PRELOAD=");
    if (snprintf(g->preload, sizeof g->preload, "%s:%s", sync, second) >= (int)sizeof g->preload)
        fail_msg("the shims' paths are too long");
    snprintf(g->sync_gate, sizeof g->sync_gate, "%s/sync-gate", env->dir);
    snprintf(g->poll_gate, sizeof g->poll_gate, "%s/poll-gate", env->dir);
    snprintf(g->sync_var, sizeof g->sync_var, "SCHAKEL_TEST_SYNC_GATE=%s", g->sync_gate);
    snprintf(g->poll_var, sizeof g->poll_var, "SCHAKEL_TEST_POLL_GATE=%s", g->poll_gate);
    g->vars[0] = g->preload;
    g->vars[1] = g->sync_var;
    g->vars[2] = g->poll_var;
    g->vars[3] = NULL;
}

/* Write a gate file: "" holds every sync (or, for the poll gate, takes
 * the timeout out of every poll of the loop); "N" lets the first N syncs
 * pass and holds the later ones. */
static void gate_set(const char *path, const char *text)
{
    char tmp[200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, path), 0); /* the shim reads it whole or not at all */
}

static void gate_remove(const char *path)
{
    if (unlink(path) != 0 && errno != ENOENT)
        fail_msg("remove %s: %s", path, strerror(errno));
}

static void await_log_line(h_env_t *env, long offset, const char *needle)
{
    if (h_await_log(env, offset, needle, H_TIMEOUT_MS) != 0)
        fail_msg("the broker logged no \"%s\" within %d ms", needle, H_TIMEOUT_MS);
}

/* A loopback port of our choosing for metrics_listen, to scrape before the
 * broker's METRICS line: bound (SO_REUSEADDR, as libmicrohttpd binds) and
 * not listening, so that no other bind to port 0 is given it while the
 * broker has not bound it yet, and a connection to it is refused until
 * the broker listens. Keep the socket until the broker is gone. */
static int reserve_port(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET};
    socklen_t len = sizeof addr;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0)
        fail_msg("a loopback port: %s", strerror(errno));
    *port = ntohs(addr.sin_port);
    return fd;
}

/* 1 when something listens on the address, 0 when the connection is
 * refused. */
static int listening(const char *address)
{
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)atoi(strrchr(address, ':') + 1))};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    int rc = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    int why = errno;
    close(fd);
    if (rc != 0 && why != ECONNREFUSED)
        fail_msg("connect %s: %s", address, strerror(why));
    return rc == 0;
}

/* Step a start begun with the sync gate at "0" (offset: the log's size
 * before it) from sync to sync, letting one more pass each time, until
 * the metrics endpoint listens; the start then waits in a sync, before
 * READY. Returns how many syncs passed. */
static int start_until_listening(h_env_t *env, const gated_t *g, const char *address, long offset)
{
    for (int passed = 0; passed < 64; passed++) {
        if (passed > 0) {
            char count[16];
            snprintf(count, sizeof count, "%d", passed);
            offset = h_log_offset(env);
            gate_set(g->sync_gate, count);
        }
        await_log_line(env, offset, "event=syncgate.held");
        if (listening(address))
            return passed;
    }
    fail_msg("the metrics endpoint did not listen within the start's first 64 syncs");
    return -1;
}

/* Read the ready fd to its end (bounded): what the broker wrote on it. */
static void ready_fd_text(int fd, char *text, size_t cap)
{
    size_t used = 0;
    int64_t deadline = mono_ms() + H_START_TIMEOUT_MS;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int left = (int)(deadline - mono_ms());
        if (left <= 0)
            fail_msg("the ready fd was not closed within %d ms", H_START_TIMEOUT_MS);
        int n = poll(&p, 1, left);
        if (n < 0 && errno == EINTR)
            continue;
        assert_true(n >= 0);
        if (n == 0)
            continue;
        ssize_t got = read(fd, text + used, cap - 1 - used);
        if (got < 0 && errno == EINTR)
            continue;
        assert_true(got >= 0);
        if (got == 0 || used + (size_t)got == cap - 1) {
            used += (size_t)got;
            break;
        }
        used += (size_t)got;
    }
    text[used] = '\0';
}

/* Where needle first occurs in the broker log, or -1. */
static long log_position(const h_env_t *env, const char *needle)
{
    FILE *f = fopen(env->log_path, "r");
    assert_non_null(f);
    char line[2048];
    long at = -1, offset = 0;
    while (at < 0 && fgets(line, sizeof line, f) != NULL) {
        if (strstr(line, needle) != NULL)
            at = offset;
        offset += (long)strlen(line);
    }
    fclose(f);
    return at;
}

static void expect_answer(const char *address, const char *path, int status, const char *piece)
{
    http_reply_t r = http_request(address, "GET", path);
    if (r.status != status || strstr(r.body, piece) == NULL)
        fail_msg("GET %s: %d \"%.300s\", expected %d with \"%s\"", path, r.status, r.body, status,
                 piece);
    http_reply_free(&r);
}

/* While the broker starts (the HTTP thread runs from the store's opening),
 * nothing store- or policy-derived is exported before it is known (review:
 * a scrape 71 ms into a start read schakel_up 1, schakel_case_ids_left 0
 * and an empty policy hash while /readyz was 503): /metrics is 503
 * "starting", a failed scrape. A SIGHUP then is a reload once serving
 * (review: it ended the broker, by signal 1, before READY). */
static void test_start_up_exports_nothing_yet(void **state)
{
    h_env_t *env = *state;
    gated_t g;
    gated_init(&g, env);
    int port = 0, reserved = reserve_port(&port);
    char address[64], listen_opt[96];
    snprintf(address, sizeof address, "127.0.0.1:%d", port);
    snprintf(listen_opt, sizeof listen_opt, "metrics_listen=%s", address);
    const char *const extra[] = {"--set", listen_opt, NULL};
    long start = h_log_offset(env);
    gate_set(g.sync_gate, "0");
    int ready_fd = h_broker_spawn(env, extra, g.vars);
    (void)start_until_listening(env, &g, address, start);

    http_reply_t r = http_request(address, "GET", "/metrics");
    if (r.status != 503 || strstr(r.body, "starting") == NULL || strstr(r.body, "schakel_") != NULL)
        fail_msg("/metrics while starting: %d \"%.300s\"", r.status, r.body);
    http_reply_free(&r);
    expect_answer(address, "/readyz", 503, "starting");
    expect_answer(address, "/healthz", 503, "starting");
    r = http_request(address, "HEAD", "/metrics");
    assert_int_equal(r.status, 503);
    http_reply_free(&r);

    long offset = h_log_offset(env);
    assert_int_equal(kill(env->broker_pid, SIGHUP), 0);
    gate_remove(g.sync_gate);
    char metrics[64], problem[256];
    if (h_broker_await_ready_metrics(env, ready_fd, metrics, sizeof metrics, problem,
                                     sizeof problem) != 0)
        fail_msg("after a SIGHUP during its start: %s", problem);
    close(ready_fd);
    assert_string_equal(metrics, address);
    await_log_line(env, offset, "event=policy.reloaded ");
    assert_int_equal(h_log_count_both(env, offset, "event=policy.reloaded ", "by=SIGHUP"), 1);
    assert_true(log_position(env, "event=broker.ready ") <
                log_position(env, "event=policy.reloaded "));
    char *text = http_get_ok(address, "/metrics");
    assert_true(series_value(text, "schakel_up") == 1);
    assert_true(series_value(text, "schakel_case_ids_left") > 0);
    free(text);
    expect_answer(address, "/readyz", 200, "ready");
    assert_int_equal(h_broker_stop(env), 0);
    close(reserved);
    h_done(env);
}

/* A SIGTERM while the broker starts stops it cleanly once the start's
 * steps are done: no READY, exit status 0, and the trail ends with
 * broker.stopped (review: the signal's default action ended it). */
static void test_stop_during_start_up_is_clean(void **state)
{
    h_env_t *env = *state;
    gated_t g;
    gated_init(&g, env);
    const char *const extra[] = {"--set", "metrics_listen=127.0.0.1:0", NULL};
    long offset = h_log_offset(env);
    gate_set(g.sync_gate, "0");
    int ready_fd = h_broker_spawn(env, extra, g.vars);
    await_log_line(env, offset, "event=syncgate.held");
    assert_int_equal(kill(env->broker_pid, SIGTERM), 0);
    gate_remove(g.sync_gate);
    char said[512];
    ready_fd_text(ready_fd, said, sizeof said);
    close(ready_fd);
    int code = h_broker_await_exit(env, H_TIMEOUT_MS);
    if (code != 0)
        fail_msg("a SIGTERM during the start: exit %d, ready fd \"%s\"", code, said);
    if (strstr(said, "READY") != NULL)
        fail_msg("a broker stopped during its start said \"%s\"", said);
    assert_int_equal(h_log_count(env, offset, "event=broker.ready "), 0);
    assert_int_equal(h_log_count(env, offset, "event=broker.stopping"), 1);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'broker.stopped' AND "
                                 "seq = (SELECT max(seq) FROM audit)",
                                 NULL),
                     1);
    h_done(env);
}

/* The threads of a serving broker are named (top -H, core dumps,
 * sanitizer reports). */
static void assert_threads_named(pid_t pid)
{
    static const char *const names[] = {"schakel-sync", "schakel-ckpt", "schakel-metrics"};
    char tasks[64], found[256] = "";
    snprintf(tasks, sizeof tasks, "/proc/%ld/task", (long)pid);
    DIR *dir = opendir(tasks);
    assert_non_null(dir);
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        char path[sizeof tasks + sizeof e->d_name + 8], name[32] = "";
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s/comm", tasks, e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue; /* a thread that ended meanwhile */
        if (fgets(name, sizeof name, f) != NULL) {
            name[strcspn(name, "\n")] = '\0';
            size_t used = strlen(found);
            snprintf(found + used, sizeof found - used, "[%s]", name);
        }
        fclose(f);
    }
    closedir(dir);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char want[40];
        snprintf(want, sizeof want, "[%s]", names[i]);
        if (strstr(found, want) == NULL)
            fail_msg("no thread named %s among %s", names[i], found);
    }
}

/* A broker with both gates, started with metrics on a free port and
 * ready (its /metrics address in address), its loop idle after a round
 * trip. */
static void gated_broker_ready(h_env_t *env, gated_t *g, char *address, size_t address_len)
{
    gated_init(g, env);
    const char *const extra[] = {"--set", "metrics_listen=127.0.0.1:0", NULL};
    int ready_fd = h_broker_spawn(env, extra, g->vars);
    char problem[256];
    if (h_broker_await_ready_metrics(env, ready_fd, address, address_len, problem,
                                     sizeof problem) != 0)
        fail_msg("%s", problem);
    close(ready_fd);
    (void)h_backlog_of(env, H_OM); /* a round trip: the loop runs, idle */
}

/* Once the stop begins, /readyz is 503 "stopping" while the stop path
 * waits for the disk (review: with its sync held it answered 200 "ready"
 * for 3 s, then "stalled"); /healthz 200 "stopping", /metrics 503. */
static void test_readiness_ends_when_the_stop_begins(void **state)
{
    h_env_t *env = *state;
    gated_t g;
    char address[64];
    gated_broker_ready(env, &g, address, sizeof address);
    assert_threads_named(env->broker_pid);
    expect_answer(address, "/readyz", 200, "ready");

    long offset = h_log_offset(env);
    gate_set(g.sync_gate, "");
    assert_int_equal(kill(env->broker_pid, SIGTERM), 0);
    await_log_line(env, offset, "event=broker.stopping");
    await_log_line(env, offset, "event=syncgate.held");
    expect_answer(address, "/readyz", 503, "stopping");
    expect_answer(address, "/healthz", 200, "stopping");
    http_reply_t r = http_request(address, "GET", "/metrics");
    if (r.status != 503 || strstr(r.body, "stopping") == NULL)
        fail_msg("/metrics while stopping: %d \"%.300s\"", r.status, r.body);
    http_reply_free(&r);
    gate_remove(g.sync_gate);
    assert_int_equal(h_broker_await_exit(env, H_TIMEOUT_MS), 0);
    h_done(env);
}

/* A stop asked after the loop looked at its flags and before its zmq_poll
 * began (here: while the loop waits in the sync of a reload's record) ends
 * that poll at once. The poll gate takes the poll's timeout away, so a
 * loop that would see the stop only at its next timeout never stops. */
static void test_signal_before_the_poll_is_seen(void **state)
{
    h_env_t *env = *state;
    gated_t g;
    char address[64];
    gated_broker_ready(env, &g, address, sizeof address);

    long offset = h_log_offset(env);
    gate_set(g.poll_gate, "");
    await_log_line(env, offset, "event=pollgate.untimed");
    gate_set(g.sync_gate, "");
    assert_int_equal(kill(env->broker_pid, SIGHUP), 0); /* EINTR: the loop reloads */
    await_log_line(env, offset, "event=syncgate.held");
    assert_int_equal(kill(env->broker_pid, SIGTERM), 0);
    gate_remove(g.sync_gate);
    int code = h_broker_await_exit(env, H_TIMEOUT_MS);
    gate_remove(g.poll_gate);
    if (code != 0)
        fail_msg("a SIGTERM before the loop's poll: %s",
                 code < 0 ? "the broker did not stop" : "the stop was not clean");
    assert_int_equal(h_log_count(env, offset, "event=policy.reloaded "), 1);
    h_done(env);
}

/* Wait (bounded) until every metric shown only once counted (backlog,
 * store size, deliveries set aside) is in /metrics; its text (caller
 * frees). */
static char *await_every_metric(const char *address, schakel_client_t *client)
{
    static const char *const late[] = {"schakel_backlog{", "schakel_store_bytes ",
                                       "schakel_deliveries_set_aside "};
    int64_t deadline = (int64_t)time(NULL) + H_TIMEOUT_MS / 1000;
    char *text = NULL;
    while ((int64_t)time(NULL) <= deadline) {
        free(text);
        text = http_get_ok(address, "/metrics");
        size_t found = 0;
        for (size_t i = 0; i < sizeof late / sizeof late[0]; i++)
            found += strstr(text, late[i]) != NULL;
        if (found == sizeof late / sizeof late[0])
            return text;
        (void)h_backlog(client); /* a round trip: lets the broker turn */
    }
    fail_msg("not every metric is in /metrics:\n%s", text);
    return NULL;
}

/* The Grafana dashboard, the alert rules (promtool check rules, and their
 * tests) and the metrics table of OPERATIONS name the metrics this broker
 * exports, and each of those has a panel and a row: a metric renamed, or
 * a panel, rule or row naming one that is gone, fails here
 * (tests/integration/check_deploy.py; run from the source tree, as make
 * test runs it). */
static void test_dashboard_alerts_and_docs_name_exported_metrics(void **state)
{
    h_env_t *env = *state;
    char address[64], in_path[160], report[16384];
    h_broker_start_metrics(env, NULL, address, sizeof address);
    schakel_client_t *brandweer = h_connect(env, H_BRANDWEER);
    char *text = await_every_metric(address, brandweer);
    write_metrics_text(env, text, in_path, sizeof in_path);
    free(text);
    schakel_close(&brandweer);
    char *const argv[] = {"/usr/bin/python3", "tests/integration/check_deploy.py", in_path, NULL};
    int status = run_tool(env, argv, in_path, report, sizeof report);
    if (status != 0)
        fail_msg("check_deploy.py (status %d; run from the source tree):\n%s", status, report);
    print_message("%s", strstr(report, "check_deploy:") ? strstr(report, "check_deploy:") : report);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_health_and_readiness, h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_readiness_under_a_tail_mismatch, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_tricklers_are_cut, h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_counters_follow_traffic, h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_ack_turns_commit_without_fsync, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_sync_and_turn_durations, h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_rounds_counted, h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_set_aside_counted, h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_set_aside_by_migration_recorded, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_case_ids_run_out, setup_cases_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_bad_metrics_listen_is_refused, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_reload_outcome_exported, h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_start_up_exports_nothing_yet, h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_stop_during_start_up_is_clean, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_readiness_ends_when_the_stop_begins, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_signal_before_the_poll_is_seen, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_dashboard_alerts_and_docs_name_exported_metrics,
                                        h_setup_env, h_teardown),
    };
    return cmocka_run_group_tests_name("integration: metrics", tests, NULL, NULL);
}
