/*
 * harness.h — the integration-test harness: a real schakeld on a random
 * loopback port, driven by the real client library and the real CLI.
 *
 * Every helper that can fail ends the running cmocka test with a message
 * that says what went wrong (and prints the broker's log), so tests read as
 * the scenario they check. Nothing here waits by sleeping: it waits on pipes,
 * process descriptors, replies and backlog queries, each with a bound.
 */
#ifndef SCHAKEL_TEST_HARNESS_H
#define SCHAKEL_TEST_HARNESS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <setjmp.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <cmocka.h>

#include "schakel.h"

/* The fixed principals of every test environment: one system principal per
 * partner, a RIEC caseworker, an operator, and one key that the policy does
 * not know. Key files live in DIR/keys/<partner>-<name>.{key,pub}. */
#define H_GEMEENTE "gemeente/meldingen"
#define H_POLITIE "politie/bvh-koppeling"
#define H_OM "om/parket"
#define H_VEILIGHEIDSHUIS "veiligheidshuis/coordinatie"
#define H_RIEC "riec/analyse"
#define H_RIEC_CASEWORKER "riec/m.janssen"
#define H_WOCO_MAASOEVER "woco-maasoever/meldingen"
#define H_WOCO_JEKERDAL "woco-jekerdal/meldingen"
#define H_BRANDWEER "brandweer/meldkamer"
#define H_OPERATOR "gemeente/beheer"
#define H_UNREGISTERED "woco-maasoever/onbekend" /* key generated, not in the policy */

/* Every registered principal that can receive signals, for "nobody else got
 * it" checks; NULL-terminated. */
extern const char *const h_receiving_principals[];

/* SCHAKEL_TEST_TIME_FACTOR (an integer 1..20; 1 when unset or out of
 * range): how much slower the broker runs under a slow tool such as
 * valgrind (make check-valgrind sets it), to stretch waits by. */
int h_time_factor(void);

/* Bounds of every wait (milliseconds), stretched by h_time_factor(): a
 * wait on a broker, a client call, a log line (H_TIMEOUT_MS), and a
 * broker's start up to its READY line (H_START_TIMEOUT_MS). Only a
 * failing test waits this long. */
#define H_TIMEOUT_BASE_MS 10000
#define H_TIMEOUT_MS (H_TIMEOUT_BASE_MS * h_time_factor())
#define H_START_TIMEOUT_BASE_MS 15000
#define H_START_TIMEOUT_MS (H_START_TIMEOUT_BASE_MS * h_time_factor())
/* The deadline of a one-shot tool run (h_run_schakeld, h_run_sh,
 * h_run_ctl, h_run_cli and the like): h_cli_timeout_ms(), which is
 * H_CLI_TIMEOUT_MS times h_time_factor(), so that a tool slowed down as
 * much as the broker is (valgrind) is not killed half-way. */
#define H_CLI_TIMEOUT_MS 30000
int h_cli_timeout_ms(void);

/* The partners and principals block of a policy (version, partners,
 * principals with key_file: keys/...). Tests append their own `rules:`. */
extern const char h_policy_header[];
/* The rules of the default test policy (see harness.c for the full text). */
extern const char h_default_rules[];

/* Two rules for tests of how long the store keeps things, as items of a
 * `rules:` list (string literals, to be put together with others): from
 * the partner from_partner, ondermijning in any area, to om kept 2 s
 * (H_RULE_SHORT_TO_OM) or to riec kept 365 d (H_RULE_LONG_TO_RIEC). */
#define H_RULE_SHORT_TO_OM(id, from_partner)                                                       \
    "  - id: " id "\n"                                                                             \
    "    from: [" from_partner "]\n"                                                               \
    "    to: [om]\n"                                                                               \
    "    themes: [ondermijning]\n"                                                                 \
    "    areas: [\"*\"]\n"                                                                         \
    "    purpose: \"Kortstondige afstemming met het parket\"\n"                                    \
    "    legal_basis: \"Wpg art. 16 lid 1 sub a\"\n"                                               \
    "    fields: [area, severity, summary, source_ref]\n"                                          \
    "    retention: 2s\n"
#define H_RULE_LONG_TO_RIEC(id, from_partner)                                                      \
    "  - id: " id "\n"                                                                             \
    "    from: [" from_partner "]\n"                                                               \
    "    to: [riec]\n"                                                                             \
    "    themes: [ondermijning]\n"                                                                 \
    "    areas: [\"*\"]\n"                                                                         \
    "    purpose: \"Integrale analyse van ondermijning\"\n"                                        \
    "    legal_basis: \"Convenant RIEC Limburg, art. 5\"\n"                                        \
    "    fields: [area, severity, summary, source_ref]\n"                                          \
    "    retention: 365d\n"

typedef struct h_env {
    char dir[64];          /* mkdtemp folder under /tmp, removed by h_env_free */
    char config_path[128]; /* DIR/schakeld.yaml */
    char policy_path[128]; /* DIR/policy.yaml */
    char store_path[128];  /* DIR/store.db, made by schakeld --init */
    char log_path[128];    /* DIR/schakeld.log: the broker's stdout and stderr */
    char broker_pub[128];  /* DIR/keys/broker.pub */
    char endpoint[128];    /* from the READY line; "" while no broker runs */
    pid_t broker_pid;      /* 0 while no broker runs */
    int broker_pidfd;      /* -1 while no broker runs */
    unsigned starts;       /* how many times a broker was started here */
    int completed;         /* set by h_done; if unset at h_env_free the log is printed */
    int loop_paused;       /* h_broker_pause_loop traces the broker's main thread */
    int loop_stopped;      /* ... and it is in a ptrace-stop this process has waited for */
    int loop_stop_signal;  /* the signal that stop holds back (0: an interrupt's stop) */
} h_env_t;

/* A new folder with keys for every principal (and the broker), the default
 * policy, a schakeld.yaml, and the store key and an empty store made by
 * `schakeld --init --config` (a broker never creates its store). Fails the
 * test on error. Free with h_env_free. */
h_env_t *h_env_new(void);

/* As h_env_new, with h_policy_header followed by rules_yaml as the policy. */
h_env_t *h_env_new_with_rules(const char *rules_yaml);

/* Replace DIR/policy.yaml with the printf-style text (key files are
 * keys/<partner>-<name>.pub relative to it). Fails the test on error. */
void h_env_write_policy(h_env_t *env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Stop a broker still running (SIGKILL; SIGTERM first when the variable
 * SCHAKEL_TEST_COVERAGE is set, so that a --coverage build writes its
 * counts), print its log unless h_done was called, remove the folder
 * (kept, and named on stderr, when the variable SCHAKEL_TEST_KEEP is set),
 * free, set *env to NULL. Safe on NULL. */
void h_env_free(h_env_t **env);

/* Mark the test as having reached its end (its log is then not printed). */
void h_done(h_env_t *env);

/* Print the broker's log to stderr (the tail if it is long). */
void h_dump_log(const h_env_t *env);

/* Path of a principal's secret key file (or, with ".pub", its public one);
 * the returned string lives in a static buffer until the next call. */
const char *h_key_file(const h_env_t *env, const char *principal);
const char *h_pub_file(const h_env_t *env, const char *principal);

/* Path of a program: build/schakeld and build/schakel, or $SCHAKELD /
 * $SCHAKEL, or $BUILD/schakeld and $BUILD/schakel. */
const char *h_schakeld_path(void);
const char *h_schakel_path(void);

/* Start schakeld on tcp://127.0.0.1:* with the env's config and store, and
 * wait (bounded) for its READY line; env->endpoint then names the real port.
 * Fails the test (printing the log) if it exits or does not become ready. */
void h_broker_start(h_env_t *env);

/* The same on an explicit endpoint, e.g. the port of a broker that was just
 * killed, so that connected clients find the new one. */
void h_broker_start_at(h_env_t *env, const char *listen);

/* As h_broker_start_at, but nothing fails the test: returns 0, or -1 with
 * the reason in problem (the broker's log is not printed). For callers that
 * must stop their own threads before they fail the test. */
int h_broker_try_start_at(h_env_t *env, const char *listen, char *problem, size_t problem_len);

/* A crash and a restart in place: SIGKILL the running broker, reap it, and
 * start a new one on the same endpoint and store, so that connected clients
 * reconnect to it by themselves (libzmq binds with SO_REUSEADDR). Tries up
 * to H_RESTART_ATTEMPTS starts. Returns 0, or -1 with the reason in problem;
 * never fails the test itself. */
#define H_RESTART_ATTEMPTS 3
int h_broker_crash_restart(h_env_t *env, char *problem, size_t problem_len);

/* SIGTERM and wait (bounded). Returns the exit code, 128+signal if a signal
 * ended it, or -1 if it did not stop in time (it is then killed). */
int h_broker_stop(h_env_t *env);

/* A line of the running broker's /proc/PID/status in KiB: field "VmRSS"
 * (resident), "VmHWM" (its peak) or "RssAnon" (resident, not a mapped
 * file, so not the store's pages). Fails the test when it cannot be read. */
long h_broker_status_kib(const h_env_t *env, const char *field);

/* Wait (bounded) for the running broker to exit by itself, without
 * signalling it. Returns its exit code (128+signal if a signal ended it),
 * the broker then forgotten as after h_broker_stop; or -1 if it still runs
 * after timeout_ms (it is left running). */
int h_broker_await_exit(h_env_t *env, int timeout_ms);

/* Size of the broker log now: the offset the readers below search from.
 * Taken while the broker writes a line, it can fall inside that line
 * (harness.c says how): that line began before it and belongs to
 * "before", so every reader that takes an offset skips the rest of it
 * and reads from the next line on (waits wait for that line's end like
 * any other content; counts count nothing of it). */
long h_log_offset(const h_env_t *env);

/* The broker log opened (for reading) at the first line that begins at or
 * after offset. NULL if there is no log, or the line offset falls inside
 * has not ended yet. The caller closes it. For a test's own log reader. */
FILE *h_log_open_at(const h_env_t *env, long offset);

/* Wait (bounded, on inotify events of the log file) until a whole line
 * containing `needle` appears in the broker log after `offset`. Returns 0,
 * or -1 on timeout. */
int h_await_log(const h_env_t *env, long offset, const char *needle, int timeout_ms);

/* h_await_log for the n-th such line (n >= 1), each waited for at most
 * timeout_ms. Returns 0, or -1 on timeout. */
int h_await_log_lines(const h_env_t *env, long offset, const char *needle, int n, int timeout_ms);

/* Lines of the broker log after `offset` that contain `needle` (a last line
 * still being written counts once it holds needle: it began after offset). */
int h_log_count(const h_env_t *env, long offset, const char *needle);
/* Lines from offset that hold both needle and also (NULL: needle alone). */
int h_log_count_both(const h_env_t *env, long offset, const char *needle, const char *also);

/* Send SIGHUP and wait for the broker to log the outcome of the reload.
 * Returns 1 if it took the new policy ("policy.reloaded"), 0 if it refused
 * it and kept the old one ("policy.reload_refused"); fails the test if
 * neither is logged in time. */
int h_broker_reload(h_env_t *env);

/* SIGKILL and reap: a crash at an arbitrary moment. */
void h_broker_kill9(h_env_t *env);

/* Stop the broker (SIGSTOP) and wait until it is stopped: from then on it
 * reads nothing, so what is sent waits in the sockets. h_broker_resume
 * (SIGCONT) lets it go on; h_broker_kill9 and h_broker_stop also work on a
 * stopped broker. */
void h_broker_pause(h_env_t *env);
void h_broker_resume(h_env_t *env);

/* Stop only the broker's loop, its main thread (ptrace: PTRACE_SEIZE and
 * PTRACE_INTERRUPT), where it waits for work in poll (not inside a turn,
 * where it may hold a lock that the others need), and wait until it is
 * stopped: libzmq's I/O threads go on, reading what the connections send
 * and seeing them end, while nothing of it is handled. Returns 0, or -1
 * when this machine does not let the test trace the broker (schakeld is
 * not dumpable: tracing it takes CAP_SYS_PTRACE), for the caller to skip;
 * any other failure fails the test. h_broker_resume_loop lets the loop go on; h_broker_stop,
 * h_broker_kill9 and h_env_free let it go first. */
int h_broker_pause_loop(h_env_t *env);
void h_broker_resume_loop(h_env_t *env);

/* The harness's own test of letting a traced loop go at any moment: trace
 * the broker's main thread (PTRACE_SEIZE) and leave it running, as
 * h_broker_pause_loop does before its loop stops. h_broker_resume_loop
 * (or a stop of the broker) lets it go. Returns 0, or -1 as
 * h_broker_pause_loop does. */
int h_broker_trace_loop(h_env_t *env);

/* With the loop paused: wait (bounded) until every libzmq I/O thread of
 * the broker ("ZMQbg/IO/N") sleeps in epoll_wait, which it does only
 * with no event and no command left to handle: a connection whose end it
 * has read (its socket closed) has then told the loop's socket so. 0, or
 * -1 if one is still busy after timeout_ms; fails the test if the broker
 * has no such thread. */
int h_broker_await_io_idle(const h_env_t *env, int timeout_ms);

/* The same for any process, this one (getpid()) included, and without
 * the loop paused: what is seen is then a moment's state, which the
 * caller must know to last (nothing left for the threads to do). 0, or
 * -1 if one is still busy after timeout_ms (0: look once); fails the
 * test if the process has no such thread. */
int h_await_io_idle_of(pid_t pid, int timeout_ms);

/* A full disk for the running broker: its file-size limit (RLIMIT_FSIZE,
 * set with prlimit) becomes the size of the store's larger file (the
 * database or its WAL) plus 64 KiB, so that the store's writes soon fail
 * with EFBIG as on a full disk. *saved receives the limit before, for
 * h_broker_file_limit_restore. Returns the new limit; fails the test if
 * prlimit does. */
rlim_t h_broker_file_limit_lower(h_env_t *env, struct rlimit *saved);
void h_broker_file_limit_restore(h_env_t *env, const struct rlimit *saved);

/* Connect as a principal; fails the test if that does not succeed. */
schakel_client_t *h_connect(h_env_t *env, const char *principal);

/* Try to connect with a key file; returns the status, fills err. */
schakel_status_t h_try_connect(h_env_t *env, const char *key_file, schakel_client_t **out,
                               schakel_error_t *err);

/* A police signal for the public prosecutor (rule politie-ondermijning-om
 * of the harness policy), observed two hours ago, with source_ref. */
schakel_signal_t h_police_signal(const char *source_ref);

/* A housing corporation's signal of a cannabis farm (hennepkwekerij,
 * ondermijning) at an address in area BU09350101, about data subject
 * PSN-1c4e88aa07, with grounds and a summary: for the woco-ondermijning-*
 * rules of the harness policy, and for what an export of that subject
 * shows (or must not). */
schakel_signal_t h_signal_cannabis(void);

/* Publish one signal as the connected principal; fails the test unless it is
 * Accepted. Returns the item's broker seq; fills id_out, recipients (may be
 * NULL) and duplicate (may be NULL). */
uint64_t h_publish_ok(schakel_client_t *client, const schakel_signal_t *signal,
                      const uint8_t *message_id, uint8_t id_out[16], uint32_t *recipients,
                      int *duplicate);

/* Publish one signal (sender NULL = as authenticated) expecting a refusal
 * with the named reason ("POLICY_DENIED"); fails the test otherwise. Returns
 * the client's last error (valid until the next call on the client). */
const schakel_error_t *h_publish_refused(schakel_client_t *client, const char *sender,
                                         const schakel_signal_t *signal, const char *reason_name);

/* Receive the next delivery within H_TIMEOUT_MS; fails the test otherwise. */
schakel_delivery_t *h_receive(schakel_client_t *client);

/* The backlog of a connected client; fails the test on error. */
uint64_t h_backlog(schakel_client_t *client);

/* Connect as principal, query the backlog, disconnect: for "who got what"
 * checks that must not disturb the mailbox. */
uint64_t h_backlog_of(h_env_t *env, const char *principal);

/* Assert that every receiving principal not listed in `except`
 * (NULL-terminated, may be NULL) has an empty mailbox. */
void h_assert_nobody_else(h_env_t *env, const char *const *except);

/* Signal fields, as bits, for "exactly these fields arrived" checks. */
enum h_field {
    H_F_AREA = 1u << 0,
    H_F_ADDRESS = 1u << 1, /* postcode and house number */
    H_F_SUBJECT = 1u << 2,
    H_F_GROUNDS = 1u << 3,
    H_F_CASE_REF = 1u << 4,
    H_F_SEVERITY = 1u << 5,
    H_F_OBSERVED_AT = 1u << 6,
    H_F_SUMMARY = 1u << 7,
    H_F_SOURCE_REF = 1u << 8,
    H_F_RECIPIENTS = 1u << 9,
};

/* The fields present in a delivery (sender, kind and theme are not bits:
 * they must always be there, see h_assert_delivery_fields). */
unsigned h_delivery_fields(const schakel_delivery_t *delivery);

/* Assert that a delivery carries exactly `expected` fields, that those equal
 * the published signal's values, that sender/kind/theme are kept, and that
 * rule_id, rule_hash, purpose and legal_basis are present. */
void h_assert_delivery_fields(const schakel_delivery_t *delivery, const schakel_signal_t *sent,
                              unsigned expected);

/* Names of the fields in a mask ("area,address,...") into out. */
void h_field_names(unsigned mask, char *out, size_t outlen);

/* Result of one CLI run. */
typedef struct h_cli_result {
    int status; /* exit code, 128+signal, or -1 when it did not finish in time */
    char *out;  /* its stdout, NUL-terminated */
    char *err;  /* its stderr */
} h_cli_result_t;

/* Where a CLI run points: NULL fields take the env's broker, the env's
 * broker key, the principal's key. */
typedef struct h_cli_target {
    const char *endpoint;
    const char *broker_pub;
    const char *key_file;
    const char *stdin_text; /* NULL: /dev/null */
    int stderr_tty;         /* stderr on a pseudo-terminal (isatty(2) true), read as res->err */
    const char *extra_env;  /* one variable more, "NAME=value" (NULL: none) */
    const char *extra_env2; /* and a second one (NULL: none) */
    const int *stdout_fd;   /* NULL: a pipe read into res->out; else the tool's stdout is this
                               descriptor (a file, a pipe's write end) and res->out is "" */
    rlim_t file_limit;      /* 0: as ours; else the tool's RLIMIT_FSIZE, SIGXFSZ ignored, so
                               that a write past it fails with EFBIG as on a full disk */
    const int *stderr_fd;   /* NULL: as stderr_tty says; else the tool's stderr is this
                               descriptor (a pipe's write end, read by the test while the tool
                               runs) and res->err is "" */
    const int *pid_fd;      /* NULL: none; else the tool's process id (a pid_t) is written to
                               this descriptor (a pipe's write end) once it is started, for a
                               test that signals it while another thread waits for its end */
} h_cli_target_t;

/* Run build/schakel with SCHAKEL_BROKER, SCHAKEL_BROKER_KEY and SCHAKEL_KEY
 * set for `principal` (NULL: SCHAKEL_KEY unset), arguments NULL-terminated,
 * SIGPIPE at its default as a shell leaves it (every tool the harness runs).
 * Returns the exit status (also in res->status); free res with
 * h_cli_result_free. */
int h_run_cli(h_env_t *env, const char *principal, h_cli_result_t *res, ...)
    __attribute__((sentinel));

/* The same with an explicit target and an argv array (NULL-terminated). */
int h_run_cli_argv(h_env_t *env, const char *principal, const h_cli_target_t *target,
                   const char *const *argv, h_cli_result_t *res);

void h_cli_result_free(h_cli_result_t *res);

/* Copy a file's bytes into a new file `to` (a store's copy for a test to
 * change or restore); fails the test on any error. */
void h_copy_file(const char *from, const char *to);

/* SQL on the store file beside the running broker (busy timeout
 * H_TIMEOUT_MS), failing the test on any error: h_store_int returns the
 * one integer a query yields, with up to one text parameter (param NULL:
 * none), read-only; h_store_exec runs statements that yield no rows (a
 * trigger made or dropped: the broker's connection sees it at its next
 * statement). */
int64_t h_store_int(const h_env_t *env, const char *sql, const char *param);
void h_store_exec(const h_env_t *env, const char *sql);

/* A stored value made unreadable as a damaged or tampered row is (one byte
 * short: a sealed body or title no longer authenticates, a content hash
 * has the wrong length), and put back as it was: h_damage_row damages
 * `column` of the one row of `table` that `where` selects (past the
 * schema's CHECK constraints: a damaged disk does not ask them);
 * h_damage_repair writes the saved value back. */
typedef struct h_damage {
    char update[256];
    uint8_t *saved;
    int len;
} h_damage_t;
void h_damage_row(const h_env_t *env, h_damage_t *d, const char *table, const char *column,
                  const char *where);
void h_damage_repair(const h_env_t *env, h_damage_t *d);

/* The mailbox rows of the store beside the broker, read with SQL as their
 * clear columns hold them (docs/design/mailbox.md 3.1; broker/
 * store_mailbox_row.c): row first_seq holds seqs first_seq .. first_seq +
 * n - 1 of one recipient, done marks (bit i of byte i / 8) those acked or
 * removed, items gives each its item index and rule slot (16-bit LE
 * each), rules five netstrings per slot (expires_at, id, hash, purpose,
 * legal basis). A row these cannot read fails the test. */
typedef struct h_waiting {
    int64_t seq;        /* the delivery's */
    int64_t first_seq;  /* its row's */
    int64_t item_seq;   /* first_item_seq + its item index - that of the row's first */
    int64_t expires_at; /* its rule slot's */
    char recipient[160];
    char rule_id[128];
} h_waiting_t;

/* The deliveries waiting (not done) in the rows of recipient (NULL: of
 * every recipient), by seq, the first max into out (may be NULL when max
 * is 0); returns how many wait in all. */
size_t h_mailbox_waiting(const h_env_t *env, const char *recipient, h_waiting_t *out, size_t max);

/* 1 when delivery seq waits in a mailbox row (its row there and its bit
 * not done), else 0. */
int h_mailbox_holds(const h_env_t *env, int64_t seq);

/* The fields of a rule line, in its order. */
enum h_rule_field { H_RULE_EXPIRES_AT, H_RULE_ID, H_RULE_HASH, H_RULE_PURPOSE, H_RULE_LEGAL_BASIS };

/* Rule field `field` of every slot of mailbox row first_seq set to value
 * (its netstring written anew, so that the line still parses): a bound
 * column altered outside the broker, which the row's seal no longer
 * vouches for. */
void h_mailbox_rule_set(const h_env_t *env, int64_t first_seq, enum h_rule_field field,
                        const char *value);

/* The store beside the broker (stopped) taken back to schema `version`
 * (5 .. 12) as far as the mailbox goes: the deliveries tables of that
 * schema made again (deliveries; from schema 10 deliveries_set_aside
 * beside it, empty), every delivery waiting in a mailbox row moved into
 * deliveries with its columns as the row says (by_ref for a signal's),
 * the mailbox tables dropped and user_version set; the rest of the store
 * is the caller's to take back. Each moved row keeps its row's body,
 * sealed under the rows' layout: none opens as a delivery, and the
 * migration sets each aside. A row set aside fails the test (it has no
 * older form here). Returns how many were moved. */
int64_t h_store_rewind_mailbox(const h_env_t *env, int version);

/* The same for the store file at path (a copy beside the store, say). */
int64_t h_store_rewind_mailbox_at(const char *path, int version);

/* A command line: args, then `times` pairs of option and value,
 * NULL-terminated, into out (at least n_args + 2 * times + 1 entries). */
void h_repeated_option(const char **out, const char *const *args, size_t n_args, const char *option,
                       const char *value, size_t times);

/* A loopback TCP port that nobody listens on (bound, not listening, kept
 * until h_closed_port_release), for "broker unreachable" checks. */
int h_closed_port(int *port);
void h_closed_port_release(int fd);

/* cmocka fixtures: an env with the default policy and a running broker, or
 * the env alone. The teardown frees it. */
int h_setup_broker(void **state);
int h_setup_env(void **state);
int h_teardown(void **state);

/* Most extra command-line options (words) h_broker_try_start_with takes. */
#define H_MAX_EXTRA_ARGS 16

/* As h_broker_try_start_at, with extra schakeld options (NULL-terminated
 * words, e.g. {"--ack-timeout", "1s", NULL}; NULL = none) after the
 * harness's own --config/--listen/--store, so they override those and the
 * config file. Returns 0, or -1 with the reason in problem; never fails
 * the test itself. */
int h_broker_try_start_with(h_env_t *env, const char *listen, const char *const *extra,
                            char *problem, size_t problem_len);

/* h_broker_try_start_with on tcp://127.0.0.1:*; fails the test (printing
 * the log) unless the broker becomes ready. */
void h_broker_start_with(h_env_t *env, const char *const *extra);

/* h_broker_start_with with the shim `shim` (as h_preload_shim) and
 * variable=value in the broker's environment alone: this process's
 * LD_PRELOAD is put back and variable unset once it has started, so the
 * other programs the test runs go without them. */
void h_broker_start_shimmed(h_env_t *env, const char *shim, const char *variable, const char *value,
                            const char *const *extra);

/* Preload the shim `name` (a .so built next to the test binary, e.g.
 * "syncgate.so") into every program this process starts from now on:
 * LD_PRELOAD in its environment, after the ASan runtime when this build
 * uses a shared one (ASan must come first; the broker is built like the
 * test). Call once, before any thread. Returns 0, or -1 with err. */
int h_preload_shim(const char *name, char *err, size_t errlen);

/* The same for one tool only: "LD_PRELOAD=..." into out, to give as its
 * extra_env (h_cli_target_t), so that the shim stays out of the other
 * programs the test runs (a shell, sqlite3). Returns 0, or -1 with err. */
int h_shim_preload(const char *name, char *out, size_t outlen, char *err, size_t errlen);

/* Run schakeld (h_schakeld_path) with the arguments (NULL-terminated,
 * without the program name) to its end, stdin /dev/null, within
 * h_cli_timeout_ms(): for one-shot uses (--init) and start-ups that must
 * fail. Returns the exit status (also in res->status; -1 when it did not
 * finish in time and was killed); free res with h_cli_result_free. */
int h_run_schakeld_argv(const char *const *args, h_cli_result_t *res);
int h_run_schakeld(h_cli_result_t *res, ...) __attribute__((sentinel));

/* A preparation of a tool's child process, run just before its exec:
 * async-signal-safe calls only (a system-call filter installed, a
 * capability dropped). A nonzero return ends the child with status 125
 * before the exec. */
typedef int (*h_child_prepare_fn)(const void *arg);

/* Run program (h_schakeld_path(), h_schakel_path(), h_schakelctl_path())
 * as h_run_schakeld_argv runs schakeld, in our environment with extra_env
 * ("NAME=value", in place of our NAME if we have one; NULL: none), and
 * prepare(arg) in its child before the exec (NULL: none). Returns the exit
 * status (also in res->status); free res with h_cli_result_free. */
int h_run_prepared(const char *program, const char *const *args, const char *extra_env,
                   h_child_prepare_fn prepare, const void *arg, h_cli_result_t *res);

/* A system call that the filter of h_prepare_seccomp makes fail with
 * EPERM: number nr (SYS_...), when both conditions hold. A condition looks
 * at argument arg (0..5): H_ARG_EQ compares its low 32 bits with value,
 * H_ARG_NONZERO holds when the whole argument is not 0 (a pointer given);
 * H_ARG_ANY always holds. */
typedef enum h_arg_test { H_ARG_ANY = 0, H_ARG_EQ, H_ARG_NONZERO } h_arg_test_t;
typedef struct h_arg_cond {
    h_arg_test_t test;
    unsigned arg;
    uint32_t value;
} h_arg_cond_t;
typedef struct h_syscall_deny {
    long nr;
    h_arg_cond_t cond[2];
} h_syscall_deny_t;
#define H_SECCOMP_MAX_RULES 8
typedef struct h_seccomp {
    const h_syscall_deny_t *rules;
    size_t n; /* at most H_SECCOMP_MAX_RULES */
} h_seccomp_t;

/* An h_child_prepare_fn: no new privileges, and a seccomp filter that
 * denies what the h_seccomp_t at arg names (EPERM) and lets every other
 * call through, for a refusal a test cannot bring about otherwise (a
 * setrlimit or chmod that fails). -1 (errno ENOSYS) on an architecture the
 * filter does not know. */
int h_prepare_seccomp(const void *arg);

/* Run `/bin/sh -c script` to its end as h_run_schakeld does (our
 * environment and umask, stdin /dev/null, h_cli_timeout_ms()): for a command
 * the documents give as shell text. Returns the exit status (also in
 * res->status, -1 when it did not finish in time and was killed); free res
 * with h_cli_result_free. */
int h_run_sh(const char *script, h_cli_result_t *res);

/* The backup command of docs/OPERATIONS.md (the first ```sh block of its
 * section "## Backups"), read from the document (run the test from the
 * source tree), with the env's store in place of the store it names and
 * folder (no slash at its end) in place of its backup folder, into out;
 * run it with h_run_sh. Fails the test when the document does not name
 * each exactly once, or has no such block. */
void h_backup_command(const h_env_t *env, const char *folder, char *out, size_t outlen);

/* Start schakeld on tcp://127.0.0.1:* with metrics on a free loopback port
 * (--set metrics_listen=127.0.0.1:0) and the extra options (as
 * h_broker_start_with; at most H_MAX_EXTRA_ARGS - 2 words). The ready fd
 * then carries "METRICS <host:port>" before the READY line; the address is
 * copied into metrics ("127.0.0.1:PORT"). Returns 0, or -1 with the reason
 * in problem; never fails the test itself. */
int h_broker_try_start_metrics(h_env_t *env, const char *const *extra, char *metrics,
                               size_t metrics_len, char *problem, size_t problem_len);

/* The same; fails the test (printing the log) unless the broker is ready. */
void h_broker_start_metrics(h_env_t *env, const char *const *extra, char *metrics,
                            size_t metrics_len);

/* Start schakeld as h_broker_start_with does (its options, then extra),
 * with the variables of env_extra ("NAME=value", NULL-terminated; NULL:
 * none) in its environment in place of ours of the same names, and do not
 * wait for it: returns the read end of its ready fd (the caller reads it,
 * e.g. with h_broker_await_ready_metrics, and closes it), with
 * env->broker_pid and env->broker_pidfd set and env->endpoint still "".
 * For a test that acts while the broker starts. Fails the test on error. */
int h_broker_spawn(h_env_t *env, const char *const *extra, const char *const *env_extra);

/* Read the ready fd of a broker started with metrics_listen set up to its
 * READY line, which must follow a METRICS line (bounded by the start's
 * timeout). Returns 0 with env->endpoint and metrics ("HOST:PORT") filled,
 * or -1 with why in problem (the fd closed first: the broker stopped or
 * failed before READY). Closes nothing. */
int h_broker_await_ready_metrics(h_env_t *env, int ready_fd, char *metrics, size_t metrics_len,
                                 char *problem, size_t problem_len);

/* ---- the admin endpoint and schakelctl */

/* Path of schakelctl: build/schakelctl, or $SCHAKELCTL, or $BUILD/schakelctl. */
const char *h_schakelctl_path(void);

/* The admin endpoint the running broker bound (admin_listen set, e.g. with
 * {"--set", "admin_listen=tcp://127.0.0.1:*"}), read from the admin= of its
 * last broker.ready log line, which it writes before its READY line. Fails
 * the test if there is none. */
void h_admin_endpoint(const h_env_t *env, char *out, size_t outlen);

/* Run schakelctl with SCHAKEL_ADMIN=admin (NULL: unset), SCHAKEL_BROKER_KEY
 * the env's broker key and SCHAKEL_KEY=key_file (NULL: unset), stdin
 * /dev/null, arguments NULL-terminated. Returns the exit status (also in
 * res->status, -1 when it did not finish within h_cli_timeout_ms()); free
 * res with h_cli_result_free. */
int h_run_ctl_argv(h_env_t *env, const char *admin, const char *key_file, const char *const *args,
                   h_cli_result_t *res);

/* The same with one variable more in its environment, extra_env
 * ("NAME=value", e.g. "POSIXLY_CORRECT=1"; NULL: none). */
int h_run_ctl_env(h_env_t *env, const char *admin, const char *key_file, const char *extra_env,
                  const char *const *args, h_cli_result_t *res);

/* The same with the key file of `principal` (NULL: SCHAKEL_KEY unset) and
 * the arguments as a NULL-terminated list. */
int h_run_ctl(h_env_t *env, const char *admin, const char *principal, h_cli_result_t *res, ...)
    __attribute__((sentinel));

/* ---- cases */

/* A `case_types:` block for the env's partners (see harness.c), to follow
 * h_default_rules: "ondermijning-adres" led by the RIEC (the Veiligheidshuis
 * coordinator may act for it; politie and om, gemeente, and the housing
 * corporations may be members, each seeing other note fields; reopen
 * allowed; brandweer may not be a member) and "overlast-kort" led by the
 * municipality, whose contents expire two seconds after the close. */
extern const char h_case_types[];

/* As h_env_new, with h_default_rules followed by h_case_types. */
h_env_t *h_env_new_with_cases(void);

/* Run the put-back of a set-aside delivery (docs/OPERATIONS.md, "Putting
 * a set-aside delivery back"), the SQL as it stands there, on the env's
 * store (broker stopped) for delivery seq of item item_seq from the
 * backup file backup; returns what its SELECT changes() said (0 or 1). */
int h_put_back(const h_env_t *env, const char *backup, int64_t seq, int64_t item_seq);

/* ---- JSON as schakelctl --json prints it (compact) */

/* The value of the first "key": at or after `from` (NULL: none): a
 * string's contents (with \" \\ undone), a number or literal, or a flat
 * array's text, into out. Returns 0, or -1 if there is no such key. */
int h_json_find(const char *from, const char *key, char *out, size_t outlen);
/* The same, failing the test if the key is absent. */
void h_json_get(const char *from, const char *key, char *out, size_t outlen);
/* The same, as an integer; fails the test unless it is one. */
long long h_json_int(const char *from, const char *key);

/* ---- plain TCP on loopback */

/* A blocking TCP connection to address ("127.0.0.1:PORT", an IPv4
 * literal), e.g. the broker's metrics endpoint; fails the test if it
 * cannot connect. Returns the descriptor (caller closes). */
int h_connect_tcp(const char *address);

/* Read fd until the peer closes it (an HTTP/1.0 server after its reply),
 * for at most timeout_ms in all. Returns what was read, NUL-terminated
 * (the caller frees it), or NULL if the peer did not close in time. Fails
 * the test on a read error. The caller closes fd. */
char *h_read_to_close(int fd, int timeout_ms);

/* ---- what a command printed */

/* Fail the test (naming what, the status, stdout and stderr) unless the
 * command exited with code. */
void h_expect_exit(const h_cli_result_t *res, int code, const char *what);
/* Fail the test unless needle is in text (NULL: never). */
void h_expect_text(const char *text, const char *needle, const char *what);

#endif
