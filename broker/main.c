/*
 * main.c — schakeld: command line, configuration, signals, readiness, and
 * the offline commands (--rekey, --restored; --init is init.c).
 *
 * Reads the config file and command-line overrides, builds the broker,
 * runs the start-up self-check and only then announces readiness (a READY
 * line on --ready-fd, and sd_notify under systemd). Any start-up failure
 * is one clear line on stderr and exit status 1; usage errors exit 2.
 */
#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <systemd/sd-daemon.h>

#include "audit.h"
#include "plural.h"
#include "broker.h"
#include "config.h"
#include "coredump.h"
#include "init.h"
#include "log.h"
#include "record.h"
#include "restore.h"
#include "signals.h"
#include "storefile.h"
#include "syntax.h"

#ifndef SCHAKEL_VERSION
#define SCHAKEL_VERSION "0.1.0"
#endif

typedef struct options {
    const char *config;
    const char *listen;
    const char *policy;
    const char *store;
    const char *key;
    const char *store_key;
    const char *ack_timeout;
    const char *publish_rate;
    const char *max_connections;
    const char *sets[16]; /* --set KEY=VALUE, any config key */
    size_t n_sets;
    int init;
    int check;                 /* --check: would these files start a broker? */
    int rekey;                 /* --rekey */
    int without_floor;         /* --without-floor, with --restored */
    int accept_clock;          /* --accept-clock: a system clock behind the trail */
    const char *restored;      /* --restored BACKUP */
    const char *new_store_key; /* --new-store-key */
    int ready_fd;
    log_level_t log_level;
} options_t;

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: schakeld --config FILE [--listen ENDPOINT] [--policy FILE] [--store FILE]\n"
        "                [--key FILE] [--store-key FILE] [--ack-timeout DURATION]\n"
        "                [--ready-fd N] [--log-level debug|info|warn|error] [--accept-clock]\n"
        "       schakeld --check --config FILE [the start's other options]\n"
        "       schakeld --init --config FILE | --init --store-key FILE [--store FILE]\n"
        "       schakeld --rekey --config FILE [--store-key OLDFILE] --new-store-key FILE\n"
        "                (broker stopped)\n"
        "       schakeld --rekey --store FILE --store-key FILE --new-store-key FILE [--key FILE]\n"
        "       schakeld --restored BACKUP [--without-floor] --config FILE [--store-key FILE]\n"
        "                (broker stopped)\n"
        "       schakeld --version\n"
        "\n"
        "  --config FILE     broker config (YAML: listen, key_file, policy, store,\n"
        "                    store_key_file, ack_timeout, metrics_listen, admin_listen,\n"
        "                    sync_thread, and the limits of docs/OPERATIONS.md)\n"
        "  --check           load the config and the policy it names as a start\n"
        "                    would, apply nothing, and exit: 0 if they load, else 1\n"
        "                    with FILE:LINE (systemctl reload runs it first)\n"
        "  --init            create the store key file (mode 0600) and, with a store\n"
        "                    path, an empty store, each where none is, and exit\n"
        "  --store-key FILE  the store's sealing key file\n"
        "  --rekey           re-seal the store under --new-store-key (made with --init)\n"
        "  --restored BACKUP put a backup in place of the store, its seqs and case\n"
        "                    numbers moved past the lost state's, and record it\n"
        "  --without-floor   restore although no store is in place (or it cannot be\n"
        "                    read) to show how far the lost state counted\n"
        "  --ack-timeout D   resend in-flight deliveries unacked this long (e.g. 60s, 2m)\n"
        "  --max-publish-rate N   publishes per second per principal (default 1000)\n"
        "  --max-connections N    connections per principal (default 64)\n"
        "  --set KEY=VALUE   any config key, e.g. --set max_items_per_publish=64\n"
        "  --listen EP       ZMQ endpoint, e.g. tcp://127.0.0.1:7450 (tcp://127.0.0.1:* = any "
        "port)\n"
        "  --policy FILE     access policy (YAML); SIGHUP reloads it\n"
        "  --store FILE      SQLite store\n"
        "  --key FILE        the broker's secret key file (mode 0600)\n"
        "  --accept-clock    start (or --rekey, --restored) although the system clock is\n"
        "                    more than 10 minutes behind the audit trail's last entry\n"
        "                    (a trail stamped by a clock that ran ahead)\n"
        "  --ready-fd N      when serving, write \"READY <endpoint>\\n\" to fd N and close it\n"
        "                    (after \"METRICS <host:port>\\n\" when metrics_listen is set)\n");
}

static int parse_level(const char *s, log_level_t *level)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            *level = (log_level_t)i;
            return 0;
        }
    }
    return -1;
}

/* Options that take a value (the others: --version, --help, --init,
 * --check, --rekey, --without-floor, --accept-clock). */
static int takes_value(const char *a)
{
    static const char *const names[] = {"--config",          "--listen",      "--policy",
                                        "--store",           "--key",         "--store-key",
                                        "--new-store-key",   "--ack-timeout", "--max-publish-rate",
                                        "--max-connections", "--set",         "--ready-fd",
                                        "--log-level",       "--restored"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(a, names[i]) == 0)
            return 1;
    return 0;
}

/* Returns 0 to run, 1 to exit 0 (--version/--help), 2 on usage error. */
static int parse_args(int argc, char **argv, options_t *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--version") == 0) {
            printf("schakeld %s (protocol %u)\n", SCHAKEL_VERSION, SCHAKEL_PROTOCOL_VERSION);
            return 1;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        }
        if (strcmp(a, "--init") == 0) {
            o->init = 1;
            continue;
        }
        if (strcmp(a, "--rekey") == 0) {
            o->rekey = 1;
            continue;
        }
        if (strcmp(a, "--check") == 0) {
            o->check = 1;
            continue;
        }
        if (strcmp(a, "--without-floor") == 0) {
            o->without_floor = 1;
            continue;
        }
        if (strcmp(a, "--accept-clock") == 0) {
            o->accept_clock = 1;
            continue;
        }
        if (!takes_value(a)) {
            fprintf(stderr, "schakeld: unknown option %s (see schakeld --help)\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "schakeld: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--config") == 0)
            o->config = v;
        else if (strcmp(a, "--listen") == 0)
            o->listen = v;
        else if (strcmp(a, "--policy") == 0)
            o->policy = v;
        else if (strcmp(a, "--store") == 0)
            o->store = v;
        else if (strcmp(a, "--key") == 0)
            o->key = v;
        else if (strcmp(a, "--store-key") == 0)
            o->store_key = v;
        else if (strcmp(a, "--new-store-key") == 0)
            o->new_store_key = v;
        else if (strcmp(a, "--restored") == 0)
            o->restored = v;
        else if (strcmp(a, "--ack-timeout") == 0)
            o->ack_timeout = v;
        else if (strcmp(a, "--max-publish-rate") == 0)
            o->publish_rate = v;
        else if (strcmp(a, "--max-connections") == 0)
            o->max_connections = v;
        else if (strcmp(a, "--set") == 0) {
            if (o->n_sets == sizeof o->sets / sizeof o->sets[0] || strchr(v, '=') == NULL) {
                fprintf(stderr, "schakeld: --set takes KEY=VALUE (at most 16 times)\n");
                return 2;
            }
            o->sets[o->n_sets++] = v;
        } else if (strcmp(a, "--ready-fd") == 0) {
            char *end = NULL;
            long fd = strtol(v, &end, 10);
            if (end == v || *end != '\0' || fd < 0 || fd > 1024) {
                fprintf(stderr, "schakeld: --ready-fd needs a file descriptor number\n");
                return 2;
            }
            o->ready_fd = (int)fd;
        } else if (strcmp(a, "--log-level") == 0) {
            if (parse_level(v, &o->log_level) != 0) {
                fprintf(stderr, "schakeld: --log-level is one of debug, info, warn, error\n");
                return 2;
            }
        }
    }
    if ((o->new_store_key != NULL) != o->rekey || (o->rekey && o->init)) {
        fprintf(stderr, "schakeld: --rekey goes with --new-store-key, and not with --init\n");
        return 2;
    }
    if (o->restored != NULL && (o->init || o->rekey)) {
        fprintf(stderr, "schakeld: --restored goes with neither --init nor --rekey\n");
        return 2;
    }
    if (o->check && (o->init || o->rekey || o->restored != NULL)) {
        fprintf(stderr, "schakeld: --check goes with neither --init, --rekey nor --restored\n");
        return 2;
    }
    if (o->without_floor && o->restored == NULL) {
        fprintf(stderr, "schakeld: --without-floor goes with --restored only\n");
        return 2;
    }
    return 0;
}

/* With metrics on, a "METRICS <host:port>" line comes first: READY is the
 * last line, after which the fd is closed. */
static void announce_ready(int fd, const char *endpoint, const char *metrics)
{
    if (fd >= 0) {
        char line[400];
        int n = snprintf(line, sizeof line, "%s%s%sREADY %s\n", metrics ? "METRICS " : "",
                         metrics ? metrics : "", metrics ? "\n" : "", endpoint);
        if (write(fd, line, (size_t)n) != n)
            log_event(LOG_WARN, "ready_fd.write_failed", "error", strerror(errno), NULL);
        close(fd);
    }
    sd_notify(0, "READY=1");
}

/* Serving from now on: /healthz and /readyz say so first, then the log
 * and the READY line (and sd_notify). */
static void serve(broker_t *b, int ready_fd)
{
    metrics_serving(b); /* before READY: /readyz must agree with it */
    const char *metrics = metrics_address(b->metrics);
    if (metrics != NULL && !metrics_address_is_loopback(b->metrics))
        log_event(LOG_WARN, "metrics.not_loopback", "address", metrics, "why",
                  "metrics_listen names a non-loopback address; /metrics is unauthenticated", NULL);
    char schema[16];
    snprintf(schema, sizeof schema, "%d", store_schema_version());
    log_event(LOG_INFO, "broker.ready", "endpoint", b->endpoint, "policy",
              policy_hash_hex(b->policy), "version", SCHAKEL_VERSION, "schema", schema, "metrics",
              metrics, "admin", b->admin != NULL ? admin_endpoint(b->admin) : NULL, NULL);
    announce_ready(ready_fd, b->endpoint, metrics);
}

/* The rotation's audit entry, in the rekey's own transaction: signed with
 * a checkpoint when the broker key is known (key_file), else unsigned as
 * far as audit_append_offline allows. */
typedef struct rekey_audit {
    const keypair_t *key;       /* NULL: none given */
    int accept_clock;           /* --accept-clock: stamp with a clock behind the trail */
    int64_t set_aside_recorded; /* rows the migration set aside, recorded now */
    int64_t set_aside_held;     /* rows set aside: they stay under the old key */
    char why[512];              /* why the entry could not be written */
} rekey_audit_t;

/* In the rekey's transaction: first the rows the schema migration set
 * aside that the trail does not name yet (this opening's, or one's that
 * could not record them), as a broker's start records them; then the
 * rotation, with how many rows set aside stay sealed under the old key
 * (a rekey does not open them). */
static int rekey_record(store_t *store, const store_rekey_counts_t *counts, void *arg)
{
    rekey_audit_t *audit = arg;
    char detail[128];
    store_audit_entry_t e;
    int64_t now = 0;
    if (audit_offline_time(store, audit->accept_clock, &now, audit->why, sizeof audit->why) != 0)
        return -1;
    if ((audit->set_aside_recorded = record_set_aside_offline(store, audit->key, now)) < 0 ||
        (audit->set_aside_held = store_set_aside_count(store)) < 0) {
        snprintf(audit->why, sizeof audit->why,
                 "cannot record the deliveries the schema migration set aside: %s",
                 store_errmsg(store));
        return -1;
    }
    snprintf(detail, sizeof detail, "items=%llu mailbox_rows=%llu set_aside=%lld",
             (unsigned long long)counts->items, (unsigned long long)counts->mailbox_rows,
             (long long)audit->set_aside_held);
    audit_entry_init(&e, "store.rekeyed");
    audit_set_text(&e, STORE_AUDIT_REASON, "store key rotated (schakeld --rekey)");
    audit_set_text(&e, STORE_AUDIT_DETAIL, detail);
    return audit_append_offline(store, audit->key, now, &e, audit->why, sizeof audit->why);
}

static int rekey_recorded(store_t *store, const uint8_t new_key[STORE_KEY_BYTES],
                          store_rekey_counts_t *counts, const keypair_t *broker_key,
                          rekey_audit_t *audit)
{
    audit->key = broker_key;
    return store_rekey_recorded(store, new_key, counts, rekey_record, audit);
}

/* Before an offline command chains or signs anything: the trail's tail
 * must chain from its last checkpoint (audit_tail_check). Returns 0, or
 * -1 with err filled. */
static int offline_trail_check(store_t *store, const char *store_path, char *err, size_t errlen)
{
    char why[512];
    int rc = audit_tail_check(store, NULL, NULL, why, sizeof why);
    if (rc > 0)
        snprintf(err, errlen,
                 "%s: %s; nothing is chained or signed onto it (the store is unchanged): run "
                 "schakelctl audit verify --store %s (docs/OPERATIONS.md, \"When audit verify "
                 "fails\")",
                 store_path, why, store_path);
    else if (rc < 0)
        snprintf(err, errlen, "%s: %s", store_path, why);
    return rc != 0 ? -1 : 0;
}

/* How far back from the trail's tail a rerun of --rekey looks for the
 * rotation's entry: a rekey that committed ended the trail with it (and
 * the set-aside entries before it), and nothing is written while the
 * broker is stopped. Bounded, so that a store the broker has served
 * since costs no scan of its trail. */
#define REKEY_LOOK_BACK 64u

/* The last store.rekeyed entry a scan saw. */
typedef struct rekey_found {
    uint64_t seq; /* 0: none */
    char detail[128];
} rekey_found_t;

static int rekey_entry_seen(const store_audit_entry_t *entry, void *arg)
{
    rekey_found_t *found = arg;
    const store_audit_value_t *event = &entry->field[STORE_AUDIT_EVENT];
    const store_audit_value_t *detail = &entry->field[STORE_AUDIT_DETAIL];
    if (entry->damage != NULL || !event->present || event->text == NULL ||
        strcmp(event->text, "store.rekeyed") != 0)
        return 0;
    found->seq = entry->seq;
    snprintf(found->detail, sizeof found->detail, "%s",
             detail->present && detail->text != NULL ? detail->text : "");
    return 0;
}

/* What an operator does after a rekey to new_key_path: set store_key_file
 * to it, unless the config file (its own value, not an override such as
 * --store-key OLDFILE after a restore) names that file already. */
static const char *rekey_next_step(const char *config_path, const char *new_key_path, char *out,
                                   size_t outlen)
{
    struct stat configured, fresh;
    char ignored[1024];
    broker_config_t *own =
        config_path != NULL ? config_load(config_path, ignored, sizeof ignored) : NULL;
    int named = own != NULL && own->store_key_path != NULL &&
                stat(own->store_key_path, &configured) == 0 && stat(new_key_path, &fresh) == 0 &&
                configured.st_dev == fresh.st_dev && configured.st_ino == fresh.st_ino;
    if (named)
        snprintf(out, outlen, "store_key_file in %s names %s already: start schakeld as it is",
                 config_path, own->store_key_path);
    else
        snprintf(out, outlen, "set store_key_file to %s before schakeld starts again",
                 new_key_path);
    config_destroy(&own);
    return out;
}

/* After the old key did not open the store: whether the new one does, as
 * after an earlier --rekey that committed and was then killed, or whose
 * words were lost (its commit is the one step that matters, and a kill
 * after it leaves nothing to do). Then it says so on stdout, naming the
 * rotation's entry when it is among the trail's last REKEY_LOOK_BACK, and
 * returns 1; else 0, and the old key's refusal stands. Writes nothing. */
static int rekey_already_done(const char *store_path, const char *key_path, const char *next_step,
                              const uint8_t new_key[STORE_KEY_BYTES], const char *new_key_path,
                              char *err, size_t errlen)
{
    char ignored[1024];
    store_t *store = store_open(store_path, new_key, STORE_OPEN_EXISTING, ignored, sizeof ignored);
    if (store == NULL)
        return 0;
    rekey_found_t found = {0, ""};
    store_audit_tail_t tail;
    if (store_audit_tail(store, &tail) == 0)
        (void)store_audit_scan(store, tail.seq > REKEY_LOOK_BACK ? tail.seq - REKEY_LOOK_BACK : 0,
                               REKEY_LOOK_BACK, rekey_entry_seen, &found);
    int64_t held = store_set_aside_count(store);
    store_close(&store);
    if (found.seq == 0) {
        /* No rotation on record: the keys may be the wrong way round, and
         * an operator rotating away from an exposed key must not be told
         * it happened (review). */
        snprintf(err, errlen,
                 "%s does not open under %s but does under %s (--new-store-key), and no "
                 "store.rekeyed entry is among the trail's last %u: were the two keys given the "
                 "wrong way round? Nothing was changed; the store is sealed under %s (if an "
                 "earlier --rekey to it committed longer ago, set store_key_file to it)",
                 store_path, key_path, new_key_path, REKEY_LOOK_BACK, new_key_path);
        return 0;
    }
    char entry[200];
    snprintf(entry, sizeof entry, " (audit entry %llu, store.rekeyed: %s)",
             (unsigned long long)found.seq, found.detail);
    printf("%s is already sealed under %s, not under %s: an earlier schakeld --rekey "
           "committed%s; nothing was changed\n"
           "%s\n",
           store_path, new_key_path, key_path, entry, next_step);
    if (held > 0)
        printf("%lld %s set aside stay%s sealed under the key before the rotation (%s, if "
               "that was it): keep it while any remains (docs/OPERATIONS.md, \"A delivery that "
               "does not authenticate\")\n",
               (long long)held, plural(held, "delivery", "deliveries"), plural(held, "s", ""),
               key_path);
    return 1;
}

/* schakeld --rekey: re-seal the store under a new key, made beforehand
 * with --init. Run with the broker stopped: store_rekey locks the store
 * and fails while another process has it open. A store that is not there
 * is said before any key file is read. A store the old key does not open
 * but the new one does was re-sealed by an earlier run: said, exit 0
 * (the store is where a finished rekey leaves it; the next step is the
 * same). */
static int rekey_store(const char *store_path, const char *key_path, const char *new_key_path,
                       const char *broker_key_path, int accept_clock, const char *config_path)
{
    char err[2048] = "";
    rekey_audit_t audit = {NULL, accept_clock, 0, 0, ""};
    keypair_t *broker_key = NULL;
    uint8_t key[STORE_KEY_BYTES], new_key[STORE_KEY_BYTES];
    store_rekey_counts_t counts = {0, 0};
    store_t *store = NULL;
    char next_step[PATH_MAX * 2 + 128];
    int rc = 1, done_before = 0;
    if (store_path == NULL || key_path == NULL) {
        fprintf(stderr, "schakeld: --rekey needs store and store_key_file (--config, or --store "
                        "and --store-key)\n");
        return 2;
    }
    if (store_presence(store_path, err, sizeof err) != STORE_FILE_PRESENT)
        ; /* err names the store and what is (not) there */
    else if (storefile_lost_wal_refuse(store_path, err, sizeof err - 32) != 0 ||
             storefile_mismatch_refuse(store_path, err, sizeof err - 32) != 0 ||
             storefile_links_refuse(store_path, err, sizeof err - 32) != 0)
        strcat(err, "; the store is unchanged"); /* err names the mark or the names */
    else if (keys_load_symmetric(key_path, key, err, sizeof err) != 0 ||
             keys_load_symmetric(new_key_path, new_key, err, sizeof err) != 0 ||
             (broker_key_path != NULL &&
              (broker_key = keys_load_secret(broker_key_path, err, sizeof err)) == NULL))
        ; /* err says which file and why */
    else if (sodium_memcmp(key, new_key, sizeof key) == 0)
        snprintf(err, sizeof err,
                 "%s holds the current store key; make a new one with: "
                 "schakeld --init --store-key NEWFILE",
                 new_key_path);
    else if ((store = store_open(store_path, key, STORE_OPEN_EXISTING, err, sizeof err)) == NULL) {
        /* else err is store_open's, or says no rotation is on record */
        done_before = rekey_already_done(
            store_path, key_path,
            rekey_next_step(config_path, new_key_path, next_step, sizeof next_step), new_key,
            new_key_path, err, sizeof err);
    } else if (offline_trail_check(store, store_path, err, sizeof err) != 0)
        ; /* err names the entry and the command that says more */
    else if ((rc = rekey_recorded(store, new_key, &counts, broker_key, &audit)) == -2)
        snprintf(err, sizeof err,
                 "%s was re-sealed under %s, but syncing it to disk failed (%s): keep BOTH key "
                 "files; check the disk, then start schakeld with %s (with %s if that key is "
                 "refused: the disk may still hold the old state)",
                 store_path, new_key_path, store_errmsg(store), new_key_path, key_path);
    else if (rc != 0)
        snprintf(err, sizeof err, "%s: %s (the store is unchanged, still under %s)", store_path,
                 audit.why[0] != '\0' ? audit.why : store_errmsg(store), key_path);
    if (done_before) {
        rc = 0; /* said */
    } else if (rc != 0) {
        rc = 1;
        fprintf(stderr, "schakeld: %s\n", err);
    } else {
        printf("re-sealed %llu item %s and %llu mailbox %s of %s under %s\n%s\n",
               (unsigned long long)counts.items, plural(counts.items, "body", "bodies"),
               (unsigned long long)counts.mailbox_rows, plural(counts.mailbox_rows, "row", "rows"),
               store_path, new_key_path,
               rekey_next_step(config_path, new_key_path, next_step, sizeof next_step));
        if (store_migrated_from(store, NULL) > 0)
            printf("the store was at schema %d: migrated to %d\n", store_migrated_from(store, NULL),
                   store_schema_version());
        if (audit.set_aside_recorded > 0)
            printf("recorded %lld %s the schema migration set aside (delivery.set_aside)\n",
                   (long long)audit.set_aside_recorded,
                   plural(audit.set_aside_recorded, "delivery", "deliveries"));
        if (audit.set_aside_held > 0)
            printf("%lld %s set aside stay%s sealed under %s: keep that key while any"
                   " remains (docs/OPERATIONS.md, \"A delivery that does not authenticate\")\n",
                   (long long)audit.set_aside_held,
                   plural(audit.set_aside_held, "delivery", "deliveries"),
                   plural(audit.set_aside_held, "s", ""), key_path);
        /* Old ciphertexts leave the WAL; the broker would do it later. */
        if (store_checkpoint(store) != 0)
            fprintf(stderr, "schakeld: warning: %s\n", store_errmsg(store));
    }
    store_close(&store);
    keys_destroy(&broker_key);
    sodium_memzero(key, sizeof key);
    sodium_memzero(new_key, sizeof new_key);
    return rc;
}

/* schakeld --restored BACKUP: the backup in place of the store, with the
 * broker stopped (restore.h). */
static int restore_store(const broker_config_t *cfg, const char *backup, unsigned flags)
{
    char err[2048] = "";
    uint8_t store_key[STORE_KEY_BYTES];
    keypair_t *key = NULL;
    restore_report_t r;
    int rc = 1;
    if (cfg->store_path == NULL || cfg->store_key_path == NULL || cfg->key_file == NULL) {
        fprintf(stderr, "schakeld: --restored needs store, store_key_file and key_file "
                        "(--config, or --store, --store-key and --key)\n");
        return 2;
    }
    if (keys_load_symmetric(cfg->store_key_path, store_key, err, sizeof err) == 0 &&
        (key = keys_load_secret(cfg->key_file, err, sizeof err)) != NULL &&
        restore_from_backup(cfg->store_path, backup, store_key, key, flags, &r, err, sizeof err) ==
            0)
        rc = 0;
    sodium_memzero(store_key, sizeof store_key);
    keys_destroy(&key);
    if (rc != 0) {
        fprintf(stderr, "schakeld: %s\n", err);
        return rc;
    }
    char ended[32] = "no entries", epoch[2 * SCHAKEL_STORE_EPOCH_BYTES + 1],
         epoch_was[sizeof epoch], floor[32] = "unknown", cases_now[16], cases_was[16];
    restore_case_from(r.now.next_case_num, cases_now);
    restore_case_from(r.was.next_case_num, cases_was);
    if (r.epoch_floor_known)
        snprintf(floor, sizeof floor, "%llu", (unsigned long long)r.epoch_floor);
    syntax_hex(r.epoch_now, sizeof r.epoch_now, epoch);
    syntax_hex(r.epoch_was, sizeof r.epoch_was, epoch_was);
    if (r.trail_seq > 0) {
        time_t at = (time_t)r.trail_at;
        struct tm tm;
        /* a time no date has (a damaged entry) is said as its number */
        if (gmtime_r(&at, &tm) == NULL ||
            strftime(ended, sizeof ended, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
            snprintf(ended, sizeof ended, "%lld", (long long)r.trail_at);
    }
    printf("restored %s from %s\n"
           "the backup's audit trail ends at entry %llu (%s): what was accepted after it is "
           "lost\n"
           "items now from seq %llu (was %llu), deliveries from %llu (was %llu), cases from "
           "%s (was %s)%s\n"
           "store epoch now %s (was %s), floor seq %s: clients that compare it learn of the "
           "restore (a rerun of schakel import publishes again what it published after the "
           "backup%s)\n"
           "recorded as audit entry %llu (store.restored); take a new anchor with schakelctl "
           "audit verify\n"
           "tell every partner the time of the backup: publish again what was accepted after "
           "it, under the same message ids\n",
           cfg->store_path, backup, (unsigned long long)r.trail_seq, ended,
           (unsigned long long)r.now.next_item_seq, (unsigned long long)r.was.next_item_seq,
           (unsigned long long)r.now.next_delivery_seq, (unsigned long long)r.was.next_delivery_seq,
           cases_now, cases_was, r.has_floor ? ", past the replaced store's too" : "", epoch,
           epoch_was, floor, r.epoch_floor_known ? "" : "; with the floor unknown, its whole file",
           (unsigned long long)r.entry_seq);
    if (r.now.next_case_num > (uint64_t)SCHAKEL_CASE_NUM_MAX)
        printf("note: fewer than %u case ids were left after the backup's: none are left now "
               "(none is handed out again); the broker serves signals and the cases it has, and "
               "refuses every case open CASE_IDS_EXHAUSTED (docs/OPERATIONS.md, Capacity)\n",
               RESTORE_CASE_MARGIN);
    if (r.floor_note[0] != '\0')
        printf("note: %s: %s moved past the backup's alone (--without-floor)\n", r.floor_note,
               r.has_floor ? "case numbers" : "the counters");
    if (r.replaced[0] != '\0') {
        char trail[64] = "its audit trail could not be read";
        if (r.replaced_trail_seq > 0)
            snprintf(trail, sizeof trail, "its audit trail to entry %llu",
                     (unsigned long long)r.replaced_trail_seq);
        printf("the replaced store is kept as %s%s (%s): the record of what was accepted, "
               "delivered and acknowledged after the backup, which the restored store does not "
               "have; keep it as long as partners or data subjects may ask about that time "
               "(schakelctl audit ... --store %s), then remove it\n",
               r.replaced, r.replaced_linked ? "" : " (a copy)", trail, r.replaced);
        if (r.marked)
            printf("its mark %s is kept with it as %s: a running broker found its audit trail's "
                   "last entries written outside it (audit.tail_mismatch); the store.restored "
                   "entry records the broker's own last entry %s and what it found instead, %s "
                   "(schakelctl audit verify --store %s --expect %s)\n",
                   r.mark.path, r.mark_kept, r.mark.expect, r.mark.found, r.replaced,
                   r.mark.expect);
    }
    if (r.fold_note[0] != '\0')
        printf("note: %s\n", r.fold_note);
    if (r.migrated_from > 0)
        printf("the backup was at schema %d: migrated to %d\n", r.migrated_from,
               store_schema_version());
    if (r.set_aside_recorded > 0)
        printf("the backup's schema migration set aside %lld %s it could not re-seal:"
               " recorded (delivery.set_aside); see docs/OPERATIONS.md, \"A delivery that does not"
               " authenticate\"\n",
               (long long)r.set_aside_recorded,
               plural(r.set_aside_recorded, "delivery", "deliveries"));
    if (r.warning[0] != '\0')
        fprintf(stderr, "schakeld: warning: %s\n", r.warning);
    return 0;
}

/* The config a start runs with: the file (if --config), then the
 * command-line options over it, checked as the file is. Returns it
 * (caller frees with config_destroy), or NULL with err filled and
 * *exit_code 1 (the file) or 2 (an option). */
static broker_config_t *config_build(const options_t *o, char *err, size_t errlen, int *exit_code)
{
    *exit_code = 1;
    err[0] = '\0';
    broker_config_t *cfg =
        o->config != NULL ? config_load(o->config, err, errlen) : calloc(1, sizeof *cfg);
    if (cfg == NULL) {
        if (err[0] == '\0')
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const char *overrides[][2] = {{"listen", o->listen},
                                  {"key_file", o->key},
                                  {"policy", o->policy},
                                  {"store", o->store},
                                  {"store_key_file", o->store_key},
                                  {"ack_timeout", o->ack_timeout},
                                  {"max_publish_rate", o->publish_rate},
                                  {"max_connections_per_principal", o->max_connections}};
    *exit_code = 2;
    for (size_t i = 0; i < sizeof overrides / sizeof overrides[0]; i++) {
        if (overrides[i][1] != NULL &&
            config_set(cfg, overrides[i][0], overrides[i][1], err, errlen) != 0) {
            config_destroy(&cfg);
            return NULL;
        }
    }
    for (size_t i = 0; i < o->n_sets; i++) {
        char field[64], why[512];
        const char *eq = strchr(o->sets[i], '=');
        size_t len = (size_t)(eq - o->sets[i]);
        snprintf(field, sizeof field, "%.*s", (int)(len < sizeof field ? len : 0), o->sets[i]);
        if (config_set(cfg, field, eq + 1, why, sizeof why) != 0) {
            snprintf(err, errlen, "--set %s: %s", o->sets[i], why);
            config_destroy(&cfg);
            return NULL;
        }
    }
    return cfg;
}

/* broker_start_check_fn: whether the config, as it is on disk now, would
 * start a broker (config_build, config_complete, with the start's own
 * options over it; nothing applied), and the policy file it names. The
 * running broker asks at every reload, and loads that policy itself. The
 * key files, the store and the endpoints are not tried. */
static int start_check(const void *arg, char *policy_path, size_t path_len, char *err,
                       size_t errlen)
{
    int exit_code;
    broker_config_t *cfg = config_build(arg, err, errlen, &exit_code);
    if (cfg == NULL)
        return -1;
    int rc = config_complete(cfg, err, errlen);
    if (rc == 0 && snprintf(policy_path, path_len, "%s", cfg->policy_path) >= (int)path_len) {
        snprintf(err, errlen, "the policy path is longer than %zu bytes", path_len - 1);
        rc = -1;
    }
    config_destroy(&cfg);
    return rc;
}

/* Whether the config and the policy it names, as they are on disk now,
 * would start a broker: start_check, then the policy loaded as a start
 * loads it. Returns the policy loaded (caller frees), or NULL with
 * "FILE:LINE: message" in err. */
static policy_t *start_files_load(const options_t *o, char *err, size_t errlen)
{
    char policy_path[PATH_MAX];
    if (start_check(o, policy_path, sizeof policy_path, err, errlen) != 0)
        return NULL;
    return policy_load(policy_path, err, errlen);
}

/* `schakeld --check`: exit 0 when the files would start a broker (the
 * policy's warnings, if any, on stderr), 1 with the error (FILE:LINE) on
 * stderr when not. systemctl reload runs it
 * before the SIGHUP (deploy/systemd/schakeld.service), so a policy the
 * broker would refuse fails the reload where the operator sees it. */
static int check_command(const options_t *o)
{
    char err[2048];
    policy_t *policy = start_files_load(o, err, sizeof err);
    if (policy == NULL) {
        fprintf(stderr, "schakeld: %s\n", err);
        return 1;
    }
    printf("config %s loads; policy %s\n", o->config != NULL ? o->config : "(none)",
           policy_hash_hex(policy));
    /* what the broker would log as policy.warning: the policy loads all the same */
    for (size_t i = 0; i < policy_warning_count(policy); i++) {
        char text[SCHAKEL_POLICY_WARNING_LEN];
        policy_warning_format(policy, i, text, sizeof text);
        fprintf(stderr, "schakeld: warning: policy: %s\n", text);
    }
    policy_destroy(&policy);
    return 0;
}

/* A long step of opening the store (a schema migration) is still going:
 * systemd is asked for another minute of start-up from now, and 10 us
 * more for every row done (a step that rewrites a table of that many
 * rows), at every call, so a large store is not killed and rolled back
 * over and over at TimeoutStartSec; the log says how far it is every
 * 100,000 rows. */
static void report_store_progress(const char *step, uint64_t done)
{
    char extend[64];
    snprintf(extend, sizeof extend, "EXTEND_TIMEOUT_USEC=%llu",
             60000000ULL + (unsigned long long)(done < UINT64_MAX / 10 ? done * 10 : 0));
    sd_notify(0, extend);
    if (done == 0 || done % 100000 != 0)
        return;
    char rows[24];
    snprintf(rows, sizeof rows, "%llu", (unsigned long long)done);
    log_event(LOG_INFO, "store.migrating", "step", step, "rows", rows, NULL);
}

int main(int argc, char **argv)
{
    options_t o = {.ready_fd = -1, .log_level = LOG_INFO};
    char why[256];
    /* First, before any key is read and any thread starts (coredump.h). */
    if (coredump_disable("schakeld", why, sizeof why) != 0) {
        fprintf(stderr, "schakeld: %s\n", why);
        return 1;
    }
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    /* A broker's start: its signals are requests from now on, before the
     * store is opened and any thread starts (signals.h). */
    if (!o.init && !o.check && !o.rekey && o.restored == NULL &&
        signals_install(why, sizeof why) != 0) {
        fprintf(stderr, "schakeld: %s\n", why);
        return 1;
    }
    log_set_level(o.log_level);
    store_global_init(); /* before any thread and any store */
    store_set_progress(report_store_progress);
    if (keys_init() != 0) {
        fprintf(stderr, "schakeld: libsodium failed to initialise\n");
        return 1;
    }
    char err[2048] = "";
    broker_config_t *cfg = config_build(&o, err, sizeof err, &rc);
    if (cfg == NULL) {
        fprintf(stderr, "schakeld: %s\n", err);
        return rc;
    }
    if (o.check) {
        config_destroy(&cfg);
        return check_command(&o);
    }
    if (o.init) {
        rc = init_command(cfg->store_key_path, cfg->store_path);
        config_destroy(&cfg);
        return rc;
    }
    if (o.restored != NULL) {
        rc = restore_store(cfg, o.restored,
                           (o.without_floor ? RESTORE_WITHOUT_FLOOR : 0u) |
                               (o.accept_clock ? RESTORE_ACCEPT_CLOCK : 0u));
        config_destroy(&cfg);
        return rc;
    }
    if (o.rekey) {
        rc = rekey_store(cfg->store_path, cfg->store_key_path, o.new_store_key, cfg->key_file,
                         o.accept_clock, o.config);
        config_destroy(&cfg);
        return rc;
    }
    if (config_complete(cfg, err, sizeof err) != 0) {
        fprintf(stderr, "schakeld: %s\n", err);
        config_destroy(&cfg);
        usage(stderr);
        return 2;
    }
    broker_options_t bo = {
        .listen = cfg->listen,
        .key_file = cfg->key_file,
        .policy_path = cfg->policy_path,
        .store_path = cfg->store_path,
        .store_key_path = cfg->store_key_path,
        .ack_timeout_ms = cfg->ack_timeout ? config_duration_ms(cfg->ack_timeout) : 0,
        /* all checked by config_load / config_set: config_limit cannot fail */
        .publish_rate = (uint32_t)config_limit(cfg->max_publish_rate, "max_publish_rate"),
        .max_connections =
            (uint32_t)config_limit(cfg->max_connections, "max_connections_per_principal"),
        .max_handshakes = (uint32_t)config_limit(cfg->max_handshakes, "max_handshakes_per_minute"),
        .case_opens_per_hour =
            (uint32_t)config_limit(cfg->max_case_opens, "max_case_opens_per_hour"),
        .case_opens_per_hour_per_partner = (uint32_t)config_limit(
            cfg->max_case_opens_partner, "max_case_opens_per_hour_per_partner"),
        .max_principal_queued =
            (uint64_t)config_limit(cfg->max_principal_queued, "max_queued_bytes_per_principal"),
        .unknown_ack_rate =
            (uint32_t)config_limit(cfg->max_unknown_acks, "max_unknown_acks_per_second"),
        .store_min_free = (uint64_t)config_limit(cfg->store_min_free, "store_min_free_bytes"),
        .max_partner_stored =
            (uint64_t)config_limit(cfg->max_partner_stored, "max_stored_bytes_per_partner"),
        .idle_timeout_ms = cfg->idle_timeout ? config_duration_ms(cfg->idle_timeout) : 0,
        .max_silent = (uint32_t)config_limit(cfg->max_silent, "max_silent_connections"),
        .max_window = (uint32_t)config_limit(cfg->max_window, "max_window"),
        .accept_clock = o.accept_clock,
        .idempotency_ms = cfg->idempotency_window ? config_duration_ms(cfg->idempotency_window) : 0,
        .metrics_listen = cfg->metrics_listen,
        .admin_listen = cfg->admin_listen,
        .admin_heartbeat_timeout_ms =
            cfg->admin_heartbeat_timeout ? config_duration_ms(cfg->admin_heartbeat_timeout) : 0,
        .sync_always = cfg->sync_thread != NULL && strcmp(cfg->sync_thread, "always") == 0,
        .version = SCHAKEL_VERSION,
        .start_check = start_check,
        .start_check_arg = &o,
    };
    wire_limits_t limits = {
        .max_frame_bytes = (uint32_t)config_limit(cfg->max_frame_bytes, "max_frame_bytes"),
        .max_items = (uint32_t)config_limit(cfg->max_items, "max_items_per_publish"),
        .max_summary_len = (uint32_t)config_limit(cfg->max_summary, "max_summary_length"),
        .max_grounds_len = (uint32_t)config_limit(cfg->max_grounds, "max_grounds_length"),
    };
    wire_set_limits(&limits);
    broker_t *b = broker_new(&bo, err, sizeof err);
    /* the store opened: a restore's leftover beside it is said, not refused */
    char unfinished[8192], copy[PATH_MAX];
    if (b != NULL && storefile_restore_unfinished(cfg->store_path, unfinished, sizeof unfinished) &&
        storefile_side(copy, sizeof copy, cfg->store_path, ".restoring") == 0)
        log_event(LOG_WARN, "store.restore_unfinished", "path", copy, "why", unfinished, NULL);
    config_destroy(&cfg);
    if (b == NULL) {
        fprintf(stderr, "schakeld: %s\n", err);
        return 1;
    }
    if (broker_self_check(b, err, sizeof err) != 0) {
        log_event(LOG_ERROR, "selfcheck.failed", "error", err, NULL);
        fprintf(stderr, "schakeld: %s\n", err);
        broker_destroy(&b);
        return 1;
    }
    /* A stop asked during start-up: the broker never serves, it says no
     * READY (the ready fd closes at the exit) and stops as from its loop. */
    if (!signals_stop_requested())
        serve(b, o.ready_fd);
    rc = broker_run(b);
    sd_notify(0, "STOPPING=1"); /* a fatal error's; a clean stop said it as it began */
    broker_destroy(&b);
    return rc == 0 ? 0 : 1;
}
