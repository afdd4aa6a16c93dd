/*
 * metrics.c — the broker's numbers and health, reported outward (metrics.h).
 *
 * Owns the HTTP endpoint (libmicrohttpd on a thread of its own, with a
 * deadline per connection: metrics_http.c), the snapshot it serves, the
 * accept-to-deliver latency record and the watchdog ping.
 * Trusts nothing an HTTP client sends: only GET/HEAD of three fixed paths
 * are answered, from a copy taken under the mutex. Errors: metrics_new
 * returns NULL with a message; at run time a failed gauge query is logged
 * and the gauge is left out rather than reported wrong.
 */
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <microhttpd.h>
#include <systemd/sd-daemon.h>

#include "broker.h"
#include "log.h"
#include "metrics_http.h"

#define METRICS_RING 65536u              /* recently accepted items, for ms latency */
#define METRICS_SESSIONS_REFRESH_MS 1000 /* connected principals */
#define METRICS_STORE_REFRESH_MS 5000    /* backlog per partner, store size */
#define METRICS_STALE_MS 5000            /* /healthz fails when the loop is quieter */

/* Upper bounds (seconds) of the latency buckets: from a loop turn on an
 * idle broker (milliseconds) up to a partner offline for a day. */
static const double latency_bounds[METRICS_LATENCY_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,   1,
    2.5,   5,      10,    30,   60,    300,  900, 3600, 21600, 86400};
static const char *const latency_bound_text[METRICS_LATENCY_BUCKETS] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",   "1",
    "2.5",   "5",      "10",    "30",   "60",    "300",  "900", "3600", "21600", "86400"};

typedef struct metrics_partner {
    char id[SCHAKEL_MAX_ID_LEN + 1];
    uint64_t backlog;   /* unacked deliveries to its principals */
    uint64_t connected; /* its principals with at least one session */
    int64_t stored;     /* sealed bytes of its items in the store (its share's count) */
} metrics_partner_t;

/* Everything the HTTP thread may show: a plain copy, no pointers. */
typedef struct metrics_snapshot {
    int serving;     /* the loop runs: key, policy, store and self-check are done */
    int stopping;    /* the stop path runs: the loop turns no more (metrics_stopping) */
    int store_ok;    /* the last turn that wrote to the store committed */
    int tail_mismatch; /* the trail's tail was written outside the broker (store.h) */
    int64_t turn_ms; /* monotonic time of the loop's last turn */
    broker_stats_t stats;
    uint64_t auth_failures, handshakes_throttled;
    uint64_t sessions, connections; /* connections: open TCP connections of the router */
    int64_t clock_offset_ms;        /* system clock minus the broker's, while not followed */
    uint64_t checkpoint_rounds, checkpoints_in_place,
        checkpoints_forced; /* store_checkpoint_counts */
    char policy_hash[65];
    size_t n_partners;
    metrics_partner_t partners[SCHAKEL_MAX_PARTNERS];
    int backlog_known;
    int64_t store_bytes;                           /* -1: unknown */
    int64_t set_aside_rows;                        /* deliveries_set_aside; -1: unknown */
    int64_t case_ids_left;                         /* store_case_ids_left */
    int space_known;                               /* the store's room was measured */
    uint64_t free_bytes, min_free_bytes;           /* the room left, and the floor */
    uint64_t floor_refused, share_refused;         /* space.h's counters */
    uint64_t max_partner_stored;                   /* each partner's share */
    int reload_failed;                             /* the last reload was refused (b->reload) */
    int64_t reload_at; /* Unix seconds of the last reload, or of the start */
    int start_fails;   /* the files on disk would not start the broker */
    uint64_t latency[METRICS_LATENCY_BUCKETS + 1]; /* per bucket, the last is +Inf */
    uint64_t latency_count;
    double latency_sum;
    durations_t wal_syncs; /* every fsync of the WAL: on the loop and on the sync thread */
    durations_t turns;     /* loop turns that wrote to the store, from their first frame */
    metrics_http_cuts_t http_cuts; /* the HTTP thread's own, set in its copy (metrics_answer) */
} metrics_snapshot_t;

typedef struct metrics_accept {
    uint64_t item_seq;
    int64_t accepted_ms;
} metrics_accept_t;

struct metrics {
    /* Loop side: only the broker thread touches these. */
    broker_stats_t turn_start;
    int64_t turn_start_ns;
    int64_t watchdog_ivl_ms; /* 0: systemd asked for no watchdog */
    int64_t next_watchdog_ms;
    int64_t next_sessions_ms, next_store_ms;
    metrics_snapshot_t local;
    metrics_accept_t *ring; /* NULL without an HTTP endpoint */
    size_t ring_start, ring_count;
    char *store_path;
    char version[64];
    /* Shared with the HTTP thread, under lock. */
    pthread_mutex_t lock;
    metrics_snapshot_t shared;
    /* Set before the thread starts, constant after. */
    metrics_http_t *http;
    char address[64];
    int loopback;
};

static int64_t metrics_clock_ms(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------ address */

/* "HOST:PORT", HOST an IPv4 literal or [IPv6]; no names (nothing to look
 * up at start-up, and what is bound is exactly what was written). */
static int metrics_parse_listen(const char *text, struct sockaddr_storage *addr, socklen_t *len,
                                char *err, size_t errlen)
{
    const char *colon = strrchr(text, ':');
    char host[INET6_ADDRSTRLEN + 2];
    size_t host_len = colon ? (size_t)(colon - text) : 0;
    const char *port = colon ? colon + 1 : "";
    char *end = NULL;
    long port_no = strtol(port, &end, 10);
    memset(addr, 0, sizeof *addr);
    if (host_len == 0 || host_len >= sizeof host || port[0] < '0' || port[0] > '9' ||
        *end != '\0' || port_no > 65535 || strlen(port) > 5) {
        snprintf(err, errlen, "metrics_listen \"%.80s\" is not HOST:PORT (e.g. 127.0.0.1:9750)",
                 text);
        return -1;
    }
    memcpy(host, text, host_len);
    host[host_len] = '\0';
    if (host[0] == '[' && host_len > 2 && host[host_len - 1] == ']') {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)addr;
        host[host_len - 1] = '\0';
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port_no);
        if (inet_pton(AF_INET6, host + 1, &in6->sin6_addr) == 1) {
            *len = sizeof *in6;
            return 0;
        }
    } else {
        struct sockaddr_in *in4 = (struct sockaddr_in *)addr;
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port_no);
        if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
            *len = sizeof *in4;
            return 0;
        }
    }
    snprintf(err, errlen,
             "metrics_listen \"%.80s\": the host must be an IPv4 address or a bracketed IPv6 "
             "address (e.g. 127.0.0.1:9750, [::1]:9750)",
             text);
    return -1;
}

static int metrics_is_loopback(const struct sockaddr_storage *addr)
{
    if (addr->ss_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)addr;
        return (ntohl(in4->sin_addr.s_addr) >> 24) == 127;
    }
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
    return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
}

static void metrics_format_address(const struct sockaddr_storage *addr, unsigned port, char *out,
                                   size_t outlen)
{
    char host[INET6_ADDRSTRLEN];
    if (addr->ss_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, host, sizeof host);
        snprintf(out, outlen, "%s:%u", host, port);
    } else {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, host, sizeof host);
        snprintf(out, outlen, "[%s]:%u", host, port);
    }
}

/* ------------------------------------------------------------ rendering */

/* Label values are partner ids, hex hashes and versions, but escape as the
 * text format demands anyway, so no value can break a line. */
static void metrics_render_label_value(FILE *f, const char *value)
{
    for (const char *c = value; *c; c++) {
        if (*c == '\\')
            fputs("\\\\", f);
        else if (*c == '"')
            fputs("\\\"", f);
        else if (*c == '\n')
            fputs("\\n", f);
        else
            fputc(*c, f);
    }
}

static void metrics_render_head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metrics_render_counter(FILE *f, const char *name, const char *help,
                                   unsigned long long value)
{
    metrics_render_head(f, name, "counter", help);
    fprintf(f, "%s %llu\n", name, value);
}

static void metrics_render_info(FILE *f, const char *name, const char *help, const char *label,
                                const char *value)
{
    metrics_render_head(f, name, "gauge", help);
    fprintf(f, "%s{%s=\"", name, label);
    metrics_render_label_value(f, value);
    fputs("\"} 1\n", f);
}

static void metrics_render_refusals(FILE *f, const metrics_snapshot_t *s)
{
    metrics_render_head(f, "schakel_refusals_total", "counter",
                        "Requests refused (publishes, acks, connections), by reason code.");
    const ProtobufCEnumDescriptor *reasons = &schakel__reason__descriptor;
    for (unsigned i = 0; i < reasons->n_values; i++) {
        int code = reasons->values[i].value;
        if (code <= 0 || code >= METRICS_REASON_SLOTS)
            continue; /* REASON_NONE is never sent */
        fprintf(f, "schakel_refusals_total{reason=\"%s\"} %lu\n", reasons->values[i].name,
                s->stats.refused_by_reason[code]);
    }
}

/* The store's floor and the partners' shares (space.h). */
static void metrics_render_space(FILE *f, const metrics_snapshot_t *s)
{
    if (s->space_known) {
        metrics_render_head(f, "schakel_store_free_bytes", "gauge",
                            "Room the store has left: its file system's free space for "
                            "users other than root, and the store's free pages while the "
                            "file system keeps 64 MiB for the WAL, measured once a second.");
        fprintf(f, "schakel_store_free_bytes %llu\n", (unsigned long long)s->free_bytes);
    }
    metrics_render_head(f, "schakel_store_min_free_bytes", "gauge",
                        "The store's floor (store_min_free_bytes): below it new content is "
                        "refused UNAVAILABLE.");
    fprintf(f, "schakel_store_min_free_bytes %llu\n", (unsigned long long)s->min_free_bytes);
    metrics_render_head(f, "schakel_store_floor_refusals_total", "counter",
                        "Publishes and case commands refused UNAVAILABLE because the store was "
                        "below its floor.");
    fprintf(f, "schakel_store_floor_refusals_total %llu\n", (unsigned long long)s->floor_refused);
    metrics_render_head(f, "schakel_partner_stored_bytes_max", "gauge",
                        "Each partner's share (max_stored_bytes_per_partner): the bytes of "
                        "items it may keep in the store.");
    fprintf(f, "schakel_partner_stored_bytes_max %llu\n",
            (unsigned long long)s->max_partner_stored);
    metrics_render_head(f, "schakel_partner_share_refusals_total", "counter",
                        "Publishes and case commands refused RATE_LIMITED because their "
                        "partner's items in the store were at its share.");
    fprintf(f, "schakel_partner_share_refusals_total %llu\n", (unsigned long long)s->share_refused);
}

static void metrics_render_partners(FILE *f, const metrics_snapshot_t *s)
{
    metrics_render_head(f, "schakel_connected_principals", "gauge",
                        "Principals of a partner with at least one session.");
    for (size_t i = 0; i < s->n_partners; i++) {
        fputs("schakel_connected_principals{partner=\"", f);
        metrics_render_label_value(f, s->partners[i].id);
        fprintf(f, "\"} %llu\n", (unsigned long long)s->partners[i].connected);
    }
    metrics_render_head(f, "schakel_partner_stored_bytes", "gauge",
                        "Sealed bytes of the items (signals and case commands) a partner's "
                        "principals stored that the store keeps (counted against "
                        "max_stored_bytes_per_partner).");
    for (size_t i = 0; i < s->n_partners; i++) {
        fputs("schakel_partner_stored_bytes{partner=\"", f);
        metrics_render_label_value(f, s->partners[i].id);
        fprintf(f, "\"} %lld\n", (long long)s->partners[i].stored);
    }
    if (!s->backlog_known)
        return; /* not counted yet, or the store could not be read: absent, not wrong */
    metrics_render_head(f, "schakel_backlog", "gauge",
                        "Deliveries waiting for a partner's ack (in its principals' mailboxes).");
    for (size_t i = 0; i < s->n_partners; i++) {
        fputs("schakel_backlog{partner=\"", f);
        metrics_render_label_value(f, s->partners[i].id);
        fprintf(f, "\"} %llu\n", (unsigned long long)s->partners[i].backlog);
    }
}

static void metrics_render_latency(FILE *f, const metrics_snapshot_t *s)
{
    static const char name[] = "schakel_accept_to_deliver_seconds";
    metrics_render_head(f, name, "histogram",
                        "From the loop turn that accepted an item to the first send of each of its "
                        "deliveries.");
    unsigned long long cumulative = 0;
    for (size_t i = 0; i < METRICS_LATENCY_BUCKETS; i++) {
        cumulative += s->latency[i];
        fprintf(f, "%s_bucket{le=\"%s\"} %llu\n", name, latency_bound_text[i], cumulative);
    }
    fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)s->latency_count);
    fprintf(f, "%s_sum %.6f\n%s_count %llu\n", name, s->latency_sum, name,
            (unsigned long long)s->latency_count);
}

static void metrics_render_durations(FILE *f, const char *name, const char *help,
                                     const durations_t *d)
{
    metrics_render_head(f, name, "histogram", help);
    unsigned long long cumulative = 0;
    for (size_t i = 0; i < DURATIONS_BUCKETS; i++) {
        cumulative += d->bucket[i];
        fprintf(f, "%s_bucket{le=\"%s\"} %llu\n", name, durations_bound_text[i], cumulative);
    }
    fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)d->count);
    fprintf(f, "%s_sum %.6f\n%s_count %llu\n", name, d->sum_s, name, (unsigned long long)d->count);
}

static void metrics_render_gauges(FILE *f, const metrics_snapshot_t *s)
{
    metrics_render_head(f, "schakel_up", "gauge", "1 while the broker serves.");
    fputs("schakel_up 1\n", f);
    metrics_render_head(f, "schakel_sessions", "gauge", "Client connections that sent a frame.");
    fprintf(f, "schakel_sessions %llu\n", (unsigned long long)s->sessions);
    metrics_render_head(f, "schakel_connections", "gauge",
                        "Client connections open (accepted and not closed), with a session or "
                        "without one.");
    fprintf(f, "schakel_connections %llu\n", (unsigned long long)s->connections);
    metrics_render_head(f, "schakel_clock_step_seconds", "gauge",
                        "How far the system clock stepped away from the broker's time and is "
                        "not followed (0 while they agree).");
    fprintf(f, "schakel_clock_step_seconds %.3f\n", (double)s->clock_offset_ms / 1000.0);
    if (s->set_aside_rows >= 0) {
        metrics_render_head(f, "schakel_deliveries_set_aside", "gauge",
                            "Deliveries held set aside (they do not authenticate) until their "
                            "retention ends or an operator puts them back.");
        fprintf(f, "schakel_deliveries_set_aside %lld\n", (long long)s->set_aside_rows);
    }
    metrics_render_head(f, "schakel_case_ids_left", "gauge",
                        "Case ids this broker can still hand out (of 99,999,999); at 0 every "
                        "case open is refused CASE_IDS_EXHAUSTED.");
    fprintf(f, "schakel_case_ids_left %lld\n", (long long)s->case_ids_left);
    metrics_render_space(f, s);
    if (s->store_bytes >= 0) {
        metrics_render_head(f, "schakel_store_bytes", "gauge",
                            "Size of the store on disk: the database and its write-ahead log.");
        fprintf(f, "schakel_store_bytes %lld\n", (long long)s->store_bytes);
    }
}

/* What the last reload found (broker.h reload_report_t). */
static void metrics_render_reload(FILE *f, const metrics_snapshot_t *s)
{
    metrics_render_head(f, "schakel_policy_reload_failed", "gauge",
                        "1 while the last policy reload was refused (its file did not load, or "
                        "its audit entry is still pending): the policy in force is an older one.");
    fprintf(f, "schakel_policy_reload_failed %d\n", s->reload_failed);
    metrics_render_head(f, "schakel_policy_last_reload_timestamp_seconds", "gauge",
                        "When the last policy reload was asked (SIGHUP or schakelctl reload), "
                        "taken or refused; the start's time until one is.");
    fprintf(f, "schakel_policy_last_reload_timestamp_seconds %lld\n", (long long)s->reload_at);
    metrics_render_head(f, "schakel_config_would_not_start", "gauge",
                        "1 while the config file, or the policy it names, as found on disk at "
                        "the last reload would not start the broker: its next start fails.");
    fprintf(f, "schakel_config_would_not_start %d\n", s->start_fails);
}

/* The whole /metrics text (caller frees), or NULL on OOM. */
static char *metrics_render(const metrics_snapshot_t *s, const char *version, size_t *len)
{
    char *text = NULL;
    FILE *f = open_memstream(&text, len);
    if (f == NULL)
        return NULL;
    metrics_render_info(f, "schakel_build_info", "The running schakeld's version.", "version",
                        version);
    metrics_render_info(f, "schakel_policy_info", "Hash (BLAKE2b-256) of the policy in force.",
                        "hash", s->policy_hash);
    metrics_render_gauges(f, s);
    metrics_render_reload(f, s);
    metrics_render_counter(f, "schakel_publishes_accepted_total",
                           "Publishes accepted and committed (repeats not included).",
                           s->stats.accepted);
    metrics_render_counter(f, "schakel_publishes_duplicate_total",
                           "Repeats of an accepted publish, answered with the original Accepted.",
                           s->stats.duplicates);
    metrics_render_refusals(f, s);
    metrics_render_counter(f, "schakel_deliveries_total", "Deliveries sent, redeliveries included.",
                           s->stats.delivered);
    metrics_render_counter(f, "schakel_redeliveries_total",
                           "Deliveries sent flagged as possibly sent before.",
                           s->stats.redelivered);
    metrics_render_counter(f, "schakel_acks_total", "Deliveries acknowledged by their recipient.",
                           s->stats.acked);
    metrics_render_counter(f, "schakel_deliveries_set_aside_total",
                           "Waiting deliveries set aside because they do not authenticate "
                           "(altered or damaged in the store), at the push or by a migration.",
                           s->stats.set_aside);
    metrics_render_head(f, "schakel_audit_entries_carried", "gauge",
                        "Audit entries kept in memory until the trail holds them (refusals and "
                        "withheld views whose transaction was rolled back, or is still open).");
    fprintf(f, "schakel_audit_entries_carried %lu\n", s->stats.audit_carried);
    metrics_render_counter(
        f, "schakel_audit_entries_not_carried_total",
        "Audit entries that could not be carried (SCHAKEL_AUDIT_MAX_CARRIED "
        "were, or a partner's share was, or no memory): written once only, lost if "
        "that write rolled back.",
        s->stats.audit_not_carried);
    metrics_render_counter(f, "schakel_store_commits_synced_total",
                           "Loop turns committed with an fsync of the store's WAL.",
                           s->stats.commits_synced);
    metrics_render_counter(f, "schakel_store_commits_unsynced_total",
                           "Loop turns of acks only, committed without an fsync (the next synced "
                           "commit covers them).",
                           s->stats.commits_unsynced);
    metrics_render_counter(f, "schakel_store_checkpoint_rounds_total",
                           "Rounds of the checkpoint thread copying the WAL into the database.",
                           s->checkpoint_rounds);
    metrics_render_counter(f, "schakel_store_checkpoints_in_place_total",
                           "WAL checkpoints the loop made itself (finishing a WAL the thread "
                           "copied, or past four times the threshold).",
                           s->checkpoints_in_place);
    metrics_render_counter(f, "schakel_store_checkpoints_forced_total",
                           "Of those, the ones past four times the threshold (the thread fell "
                           "behind) or without a checkpoint thread.",
                           s->checkpoints_forced);
    metrics_render_counter(f, "schakel_auth_failures_total",
                           "CURVE handshakes refused by the ZAP handler (the start-up self-check "
                           "probe is one).",
                           s->auth_failures);
    metrics_render_counter(f, "schakel_handshakes_throttled_total",
                           "Of those, handshakes of registered keys refused for now (answered "
                           "300): their principal reached max_handshakes_per_minute.",
                           s->handshakes_throttled);
    metrics_render_counter(f, "schakel_connections_closed_idle_total",
                           "Connections the broker closed: silent ones beyond the allowance, quiet "
                           "ones beyond their principal's cap, and revoked keys'.",
                           s->stats.connections_closed_idle);
    metrics_render_counter(f, "schakel_connections_cut_unfinished_total",
                           "Connections the broker closed because libzmq held more than 2 MiB "
                           "read from them of a multipart message whose last part never came.",
                           s->stats.connections_cut_unfinished);
    metrics_render_counter(f, "schakel_replies_undeliverable_total",
                           "Answers the broker could not queue: the client was gone, or its "
                           "queue full (SNDHWM).",
                           s->stats.replies_undeliverable);
    metrics_render_counter(f, "schakel_queue_full_queries_total",
                           "Case queries answered RATE_LIMITED because the connection already "
                           "owed 4 MiB it had not read.",
                           s->stats.queries_held);
    metrics_render_counter(f, "schakel_queue_full_pushes_total",
                           "Pushes to a receiver stopped because its connection owed 2 MiB it "
                           "had not read (it goes on once the connection reads).",
                           s->stats.pushes_held);
    metrics_render_counter(f, "schakel_principal_queue_full_queries_total",
                           "Case queries answered RATE_LIMITED because the connections of their "
                           "principal together owed max_queued_bytes_per_principal.",
                           s->stats.principal_queries_held);
    metrics_render_counter(f, "schakel_principal_queue_full_pushes_total",
                           "Pushes to a receiver stopped because the connections of its principal "
                           "together owed half of max_queued_bytes_per_principal.",
                           s->stats.principal_pushes_held);
    metrics_render_head(f, "schakel_metrics_connections_cut_total", "counter",
                        "Connections to this endpoint closed before they were done: past the "
                        "deadline from their accept, or the oldest still sending its request "
                        "when too many were.");
    fprintf(f, "schakel_metrics_connections_cut_total{why=\"deadline\"} %llu\n",
            (unsigned long long)s->http_cuts.deadline);
    fprintf(f, "schakel_metrics_connections_cut_total{why=\"crowded\"} %llu\n",
            (unsigned long long)s->http_cuts.crowded);
    metrics_render_counter(
        f, "schakel_acks_rate_limited_total",
        "Acks answered RATE_LIMITED, nothing looked up, because their principal "
        "acked more seqs that were not pending than max_unknown_acks_per_second.",
        s->stats.acks_rate_limited);
    metrics_render_counter(f, "schakel_ack_timeouts_deferred_total",
                           "Ack timeouts that sent nothing again because what was in flight had "
                           "not yet left the broker.",
                           s->stats.ack_timeouts_deferred);
    metrics_render_partners(f, s);
    metrics_render_latency(f, s);
    metrics_render_durations(f, "schakel_store_wal_sync_seconds",
                             "Each fsync of the store's WAL that makes commits durable (on the "
                             "loop or the sync thread): the disk's share of every answer's wait.",
                             &s->wal_syncs);
    metrics_render_durations(f, "schakel_loop_turn_seconds",
                             "Each loop turn that wrote to the store, from its first frame to "
                             "its commit, pushes, checkpoint and housekeeping (a WAL fsync made "
                             "in the loop included).",
                             &s->turns);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* ------------------------------------------------------------ HTTP thread */

static enum MHD_Result metrics_respond(struct MHD_Connection *connection, unsigned status,
                                       const char *content_type, char *body, size_t len)
{
    struct MHD_Response *response =
        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (response == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    /* One request per connection, so that its deadline is the request's and
     * an answered one never sends another (libmicrohttpd 0.9.75 closes after
     * each answer anyway; this does not leave it to the version). */
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONNECTION, "close");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return rc;
}

static enum MHD_Result metrics_respond_text(struct MHD_Connection *connection, unsigned status,
                                            const char *text)
{
    char *body = strdup(text);
    if (body == NULL)
        return MHD_NO;
    return metrics_respond(connection, status, "text/plain; charset=utf-8", body, strlen(body));
}

/* Why /metrics is not answered: the broker does not serve (yet, or any
 * more), so no value is known or kept up (a start's snapshot is zeroed:
 * schakel_case_ids_left 0 would set off SchakelCaseIdsExhausted). The
 * scrape fails as if nothing listened: Prometheus's up is 0 and every
 * series goes stale, so SchakelDown means exactly "does not serve". NULL
 * while serving. */
static const char *metrics_not_serving(const metrics_snapshot_t *s)
{
    if (s->stopping)
        return "stopping: the broker was asked to stop; it serves no more and finishes its last "
               "commit and checkpoint\n";
    if (!s->serving)
        return "starting: the broker does not serve yet\n";
    return NULL;
}

/* /healthz: the loop turned recently. /readyz: also serving (start-up and
 * self-check done, policy loaded, store open) and the store's last write
 * committed. The text says what is wrong. While the stop path runs, the
 * loop turns no more: /readyz is 503 and /healthz 200, both "stopping"
 * (the process is alive and doing what it was asked; the deadline of a
 * stop is its supervisor's, TimeoutStopSec, and a liveness kill would only
 * cut the last checkpoint short). */
static enum MHD_Result metrics_health(struct MHD_Connection *connection,
                                      const metrics_snapshot_t *s, int readiness)
{
    char text[256];
    int64_t quiet_ms = metrics_clock_ms(CLOCK_MONOTONIC) - s->turn_ms;
    unsigned status = MHD_HTTP_SERVICE_UNAVAILABLE;
    const char *not_serving = metrics_not_serving(s);
    if (s->stopping && !readiness) {
        status = MHD_HTTP_OK;
        snprintf(text, sizeof text, "%s", not_serving);
    } else if (not_serving != NULL)
        snprintf(text, sizeof text, "%s", not_serving);
    else if (quiet_ms > METRICS_STALE_MS)
        snprintf(text, sizeof text, "stalled: the broker loop last turned %lld ms ago\n",
                 (long long)quiet_ms);
    else if (readiness && s->tail_mismatch)
        snprintf(text, sizeof text,
                 "not ready: the audit trail was written outside the broker "
                 "(audit.tail_mismatch); every action that needs an entry is refused "
                 "INTERNAL_ERROR, and no start while STORE.audit-mismatch is there\n");
    else if (readiness && !s->store_ok)
        snprintf(text, sizeof text,
                 "not ready: the last store commit failed; publishes are refused UNAVAILABLE\n");
    else {
        status = MHD_HTTP_OK;
        snprintf(text, sizeof text, readiness ? "ready\n" : "ok\n");
    }
    return metrics_respond_text(connection, status, text);
}

static enum MHD_Result metrics_answer(void *cls, struct MHD_Connection *connection, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **request_state)
{
    metrics_t *m = cls;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)request_state;
    metrics_http_answered(connection);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return metrics_respond_text(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    int is_metrics = strcmp(url, "/metrics") == 0;
    int is_health = strcmp(url, "/healthz") == 0, is_ready = strcmp(url, "/readyz") == 0;
    if (!is_metrics && !is_health && !is_ready)
        return metrics_respond_text(connection, MHD_HTTP_NOT_FOUND,
                                    "not found: /metrics, /healthz, /readyz\n");
    metrics_snapshot_t *s = malloc(sizeof *s);
    if (s == NULL)
        return MHD_NO;
    pthread_mutex_lock(&m->lock);
    *s = m->shared;
    pthread_mutex_unlock(&m->lock);
    s->http_cuts = metrics_http_cut_counts(connection);
    enum MHD_Result rc;
    if (is_metrics && metrics_not_serving(s) != NULL) {
        rc = metrics_respond_text(connection, MHD_HTTP_SERVICE_UNAVAILABLE, metrics_not_serving(s));
    } else if (is_metrics) {
        size_t len = 0;
        char *text = metrics_render(s, m->version, &len);
        rc = text == NULL ? MHD_NO
                          : metrics_respond(connection, MHD_HTTP_OK,
                                            "text/plain; version=0.0.4; charset=utf-8", text, len);
    } else {
        rc = metrics_health(connection, s, is_ready);
    }
    free(s);
    return rc;
}

static int metrics_start_http(metrics_t *m, const char *listen, char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    socklen_t addr_len = 0;
    char why[160];
    if (metrics_parse_listen(listen, &addr, &addr_len, err, errlen) != 0)
        return -1;
    m->http = metrics_http_start((struct sockaddr *)&addr, metrics_answer, m, why, sizeof why);
    if (m->http == NULL) {
        snprintf(err, errlen, "cannot serve metrics on %s: %s", listen, why);
        return -1;
    }
    metrics_format_address(&addr, metrics_http_port(m->http), m->address, sizeof m->address);
    m->loopback = metrics_is_loopback(&addr);
    return 0;
}

/* ------------------------------------------------------------ lifetime */

metrics_t *metrics_new(const char *listen, const char *store_path, const char *version, char *err,
                       size_t errlen)
{
    metrics_t *m = calloc(1, sizeof *m);
    if (m == NULL || pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(m->version, sizeof m->version, "%s", version ? version : "unknown");
    m->local.store_bytes = -1;
    m->local.set_aside_rows = -1;
    m->shared = m->local;
    if (listen == NULL)
        return m;
    m->store_path = store_path ? strdup(store_path) : NULL;
    m->ring = calloc(METRICS_RING, sizeof *m->ring);
    if (m->ring == NULL || (store_path != NULL && m->store_path == NULL)) {
        snprintf(err, errlen, "out of memory");
        metrics_destroy(&m);
        return NULL;
    }
    if (metrics_start_http(m, listen, err, errlen) != 0) {
        metrics_destroy(&m);
        return NULL;
    }
    return m;
}

void metrics_destroy(metrics_t **mp)
{
    if (mp == NULL || *mp == NULL)
        return;
    metrics_t *m = *mp;
    metrics_http_stop(&m->http); /* joins the thread: nothing reads m after this */
    pthread_mutex_destroy(&m->lock);
    free(m->ring);
    free(m->store_path);
    free(m);
    *mp = NULL;
}

const char *metrics_address(const metrics_t *m)
{
    return m != NULL && m->http != NULL ? m->address : NULL;
}

int metrics_address_is_loopback(const metrics_t *m)
{
    return m != NULL && m->http != NULL && m->loopback;
}

/* ------------------------------------------------------------ latency */

static metrics_accept_t *metrics_ring_at(metrics_t *m, size_t i)
{
    return &m->ring[(m->ring_start + i) % METRICS_RING];
}

void metrics_item_accepted(metrics_t *m, uint64_t item_seq, int64_t now_ms)
{
    if (m == NULL || m->ring == NULL)
        return;
    /* Seqs increase; a seq at or below the newest belongs to a turn that was
     * rolled back and is being reused: forget the stale entries. */
    while (m->ring_count > 0 && metrics_ring_at(m, m->ring_count - 1)->item_seq >= item_seq)
        m->ring_count--;
    if (m->ring_count == METRICS_RING) {
        m->ring_start = (m->ring_start + 1) % METRICS_RING;
        m->ring_count--;
    }
    *metrics_ring_at(m, m->ring_count) =
        (metrics_accept_t){.item_seq = item_seq, .accepted_ms = now_ms};
    m->ring_count++;
}

/* Binary search over the ring (sorted by item_seq). */
static const metrics_accept_t *metrics_ring_find(metrics_t *m, uint64_t item_seq)
{
    size_t lo = 0, hi = m->ring_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const metrics_accept_t *e = metrics_ring_at(m, mid);
        if (e->item_seq == item_seq)
            return e;
        if (e->item_seq < item_seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

void metrics_first_send(metrics_t *m, uint64_t item_seq, int64_t accepted_at_s, int64_t now_ms)
{
    if (m == NULL || m->ring == NULL)
        return;
    const metrics_accept_t *e = metrics_ring_find(m, item_seq);
    double seconds;
    if (e != NULL)
        seconds = (double)(metrics_clock_ms(CLOCK_MONOTONIC) - e->accepted_ms) / 1000.0;
    else /* whole seconds of the broker's time: high by up to a second */
        seconds = (double)now_ms / 1000.0 - (double)accepted_at_s;
    if (seconds < 0)
        seconds = 0;
    size_t bucket = 0;
    while (bucket < METRICS_LATENCY_BUCKETS && seconds > latency_bounds[bucket])
        bucket++;
    m->local.latency[bucket]++;
    m->local.latency_count++;
    m->local.latency_sum += seconds;
}

/* ------------------------------------------------------------ loop side */

void metrics_refused(broker_t *b, int reason)
{
    b->stats.refused++;
    if (reason > 0 && reason < METRICS_REASON_SLOTS)
        b->stats.refused_by_reason[reason]++;
}

static void metrics_watchdog(metrics_t *m)
{
    if (m->watchdog_ivl_ms <= 0)
        return;
    int64_t now = metrics_clock_ms(CLOCK_MONOTONIC);
    if (now < m->next_watchdog_ms)
        return;
    sd_notify(0, "WATCHDOG=1");
    m->next_watchdog_ms = now + m->watchdog_ivl_ms;
}

void metrics_serving(broker_t *b)
{
    metrics_t *m = b->metrics;
    uint64_t usec = 0;
    /* Ping at half the interval systemd allows, as sd_watchdog_enabled(3)
     * recommends. */
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        m->watchdog_ivl_ms = (int64_t)(usec / 2000);
        if (m->watchdog_ivl_ms < 1)
            m->watchdog_ivl_ms = 1;
    }
    m->local.serving = 1;
    m->local.store_ok = 1;
    metrics_turn_begin(b);
    metrics_turn_end(b, 0);
}

void metrics_stopping(broker_t *b)
{
    metrics_t *m = b->metrics;
    /* systemd: the unit is deactivating, the watchdog pings end here */
    sd_notify(0, "STOPPING=1");
    m->local.stopping = 1;
    pthread_mutex_lock(&m->lock);
    m->shared.stopping = 1;
    pthread_mutex_unlock(&m->lock);
}

int metrics_poll_timeout_ms(const broker_t *b, int max_ms)
{
    const metrics_t *m = b->metrics;
    if (m == NULL || m->watchdog_ivl_ms <= 0)
        return max_ms;
    int64_t left = m->next_watchdog_ms - metrics_clock_ms(CLOCK_MONOTONIC);
    if (left < 0)
        left = 0;
    return left < max_ms ? (int)left : max_ms;
}

void metrics_turn_begin(broker_t *b)
{
    b->metrics->turn_start = b->stats;
    b->metrics->turn_start_ns = durations_now_ns();
}

/* The partner list follows the policy in force; the gauges indexed by it
 * are recounted whenever it changes. */
static int metrics_sync_partners(metrics_t *m, const policy_t *policy)
{
    const char *hash = policy_hash_hex(policy);
    if (strcmp(hash, m->local.policy_hash) == 0)
        return 0;
    snprintf(m->local.policy_hash, sizeof m->local.policy_hash, "%s", hash);
    size_t n = policy_partner_count(policy);
    m->local.n_partners = n < SCHAKEL_MAX_PARTNERS ? n : SCHAKEL_MAX_PARTNERS;
    for (size_t i = 0; i < m->local.n_partners; i++) {
        metrics_partner_t *p = &m->local.partners[i];
        snprintf(p->id, sizeof p->id, "%s", policy_partner_at(policy, i)->id);
        p->backlog = p->connected = 0;
    }
    m->local.backlog_known = 0;
    return 1;
}

/* Principals with at least one session, per partner: O(principals), at
 * most once a second. */
static void metrics_count_connected(metrics_t *m, broker_t *b)
{
    for (size_t i = 0; i < m->local.n_partners; i++)
        m->local.partners[i].connected = 0;
    size_t n = policy_principal_count(b->policy);
    for (size_t i = 0; i < n; i++) {
        const policy_principal_t *p = policy_principal_at(b->policy, i);
        sessions_principal_stats_t seen;
        if (p->partner->index < m->local.n_partners &&
            sessions_principal_stats(b->sessions, p->id, &seen) && seen.sessions > 0)
            m->local.partners[p->partner->index].connected++;
    }
}

static int64_t metrics_file_bytes(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* Backlog per partner: the pending count of each principal (O(1) once the
 * store has learnt it; the first time an indexed count). Runs at most every
 * METRICS_STORE_REFRESH_MS all the same. */
static void metrics_count_store(metrics_t *m, broker_t *b)
{
    uint64_t backlog[SCHAKEL_MAX_PARTNERS] = {0};
    size_t n = policy_principal_count(b->policy);
    for (size_t i = 0; i < n; i++) {
        const policy_principal_t *p = policy_principal_at(b->policy, i);
        if (p->role == ROLE_OPERATOR || p->partner->index >= m->local.n_partners)
            continue; /* operators never receive */
        int64_t count = store_mailbox_count(b->store, p->id);
        if (count < 0) {
            log_event(LOG_WARN, "metrics.backlog_failed", "error", store_errmsg(b->store), NULL);
            m->local.backlog_known = 0;
            return;
        }
        backlog[p->partner->index] += (uint64_t)count;
    }
    for (size_t i = 0; i < m->local.n_partners; i++)
        m->local.partners[i].backlog = backlog[i];
    m->local.backlog_known = 1;
    m->local.set_aside_rows = store_set_aside_count(b->store); /* a table empty but for damage */
    if (m->store_path != NULL) {
        char wal[4096];
        int64_t db = metrics_file_bytes(m->store_path);
        snprintf(wal, sizeof wal, "%s-wal", m->store_path);
        int64_t wal_bytes = metrics_file_bytes(wal);
        m->local.store_bytes = db < 0 ? -1 : db + (wal_bytes > 0 ? wal_bytes : 0);
    }
}

void metrics_turn_end(broker_t *b, int outcome)
{
    metrics_t *m = b->metrics;
    if (outcome == METRICS_TURN_ROLLED_BACK) {
        b->stats.accepted = m->turn_start.accepted;
        b->stats.duplicates = m->turn_start.duplicates;
        b->stats.acked = m->turn_start.acked;
        b->stats.set_aside = m->turn_start.set_aside;
    }
    metrics_watchdog(m);
    if (m->http == NULL)
        return;
    uint64_t stored_seq, committed_seq;
    uint8_t committed_hash[STORE_AUDIT_HASH_BYTES];
    m->local.tail_mismatch =
        store_audit_tail_mismatch(b->store, &stored_seq, NULL, &committed_seq, committed_hash);
    if (outcome != METRICS_TURN_IDLE) {
        m->local.store_ok = outcome == METRICS_TURN_COMMITTED;
        durations_add(&m->local.turns, durations_now_ns() - m->turn_start_ns);
    }
    int64_t now = metrics_clock_ms(CLOCK_MONOTONIC);
    if (metrics_sync_partners(m, b->policy))
        m->next_sessions_ms = m->next_store_ms = 0;
    if (now >= m->next_sessions_ms) {
        metrics_count_connected(m, b);
        m->next_sessions_ms = now + METRICS_SESSIONS_REFRESH_MS;
    }
    if (now >= m->next_store_ms) {
        metrics_count_store(m, b);
        m->next_store_ms = now + METRICS_STORE_REFRESH_MS;
    }
    m->local.turn_ms = now;
    m->local.stats = b->stats;
    store_checkpoint_counts_t counts;
    store_checkpoint_counts(b->store, &counts);
    m->local.checkpoint_rounds = counts.thread_rounds;
    m->local.checkpoints_in_place = counts.finished_in_place + counts.forced_in_place;
    m->local.checkpoints_forced = counts.forced_in_place;
    zap_counts_t auth = zap_counts(b->zap);
    m->local.auth_failures = auth.refused;
    m->local.handshakes_throttled = auth.throttled;
    store_loop_sync_durations(b->store, &m->local.wal_syncs);
    if (b->syncer != NULL) {
        durations_t thread;
        store_syncer_durations(b->syncer, &thread);
        durations_merge(&m->local.wal_syncs, &thread);
    }
    m->local.sessions = sessions_count(b->sessions);
    m->local.connections = b->conns != NULL ? conns_open_count(b->conns) : 0;
    m->local.clock_offset_ms = b->clock.stepped ? b->clock.offset_ms : 0;
    m->local.case_ids_left = store_case_ids_left(b->store); /* O(1) */
    m->local.space_known = b->space.known;
    m->local.free_bytes = b->space.last.free_bytes;
    m->local.min_free_bytes = b->space.min_free;
    m->local.floor_refused = b->space.floor_refused;
    m->local.share_refused = b->space.share_refused;
    m->local.max_partner_stored = b->space.max_partner;
    for (size_t i = 0; i < m->local.n_partners; i++) /* one hash lookup each */
        m->local.partners[i].stored = store_partner_bytes(b->store, m->local.partners[i].id);
    m->local.reload_failed = b->reload.failed;
    m->local.reload_at = b->reload.at > 0 ? b->reload.at : b->started_at;
    m->local.start_fails = b->reload.start_fails;
    pthread_mutex_lock(&m->lock);
    m->shared = m->local;
    pthread_mutex_unlock(&m->lock);
}
