/*
 * test_audit.c — the audit trail of a real schakeld, read back with the
 * real `schakelctl audit`.
 *
 * A broker on a random loopback port serves publishes with and without a
 * subject, deliveries and acks, a refused publish, a handshake with an
 * unknown key and a policy reload; then `schakelctl audit verify` must call
 * the trail intact with the counts the file holds, name the entry an
 * attacker altered or removed in a copy, and `schakelctl audit subject`
 * must export exactly the subject's entries. A second test makes the
 * trail refuse entries (a trigger planted in the live store, as a full
 * audit path would) and checks that publishes, acks and handshakes are
 * refused with nothing half-done, and work again once entries can be
 * written. A third plants a row of the acked-delivery index for a delivery
 * not yet acked: verify names it, the ack fails with a log line naming the
 * cause, and the documented repair lets it through. Waits are on replies,
 * process exits and log lines, each bounded.
 */
#define _GNU_SOURCE /* pidfd via syscall */

#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>

#include "keys.h"

extern char **environ;

#define SUBJECT_A "audit-subj-A1"
#define SUBJECT_B "audit-subj-B2"
#define CTL_EXIT_BROKEN 3 /* audit_cmd.h: the trail is broken */

/* ------------------------------------------------------------------ schakelctl */

static const char *ctl_path(void)
{
    static char path[512];
    const char *env = getenv("SCHAKELCTL");
    if (env != NULL && env[0] != '\0')
        return env;
    const char *build = getenv("BUILD");
    snprintf(path, sizeof path, "%s/schakelctl", build != NULL && build[0] ? build : "build");
    return path;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("open %s: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t n;
    while ((n = fread(text + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 1024) {
            cap *= 2;
            text = realloc(text, cap);
            assert_non_null(text);
        }
    }
    text[len] = '\0';
    fclose(f);
    return text;
}

/* Run schakelctl with the arguments (NULL-terminated) to its end, stdout
 * and stderr into files of the env's folder, bounded by h_cli_timeout_ms().
 * Fills res (free with h_cli_result_free); returns the exit status. */
static int ctl_run(h_env_t *env, h_cli_result_t *res, ...)
{
    char *argv[16];
    char out_path[192], err_path[192];
    va_list ap;
    int argc = 0;
    /* posix_spawn takes char *const[]; the strings are not written to. */
    static char path[512];
    snprintf(path, sizeof path, "%s", ctl_path());
    argv[argc++] = path;
    va_start(ap, res);
    char *a;
    while ((a = va_arg(ap, char *)) != NULL && argc < 15)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    snprintf(out_path, sizeof out_path, "%s/ctl.out", env->dir);
    snprintf(err_path, sizeof err_path, "%s/ctl.err", env->dir);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&actions, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0)
        fail_msg("cannot run %s: %s", argv[0], strerror(rc));
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    assert_true(pidfd >= 0);
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    if (poll(&p, 1, h_cli_timeout_ms()) != 1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(pidfd);
        fail_msg("%s %s did not finish within %d ms", argv[0], argv[1], h_cli_timeout_ms());
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    close(pidfd);
    res->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    res->out = slurp(out_path);
    res->err = slurp(err_path);
    return res->status;
}

/* ------------------------------------------------------------------ the store, read raw */

static sqlite3 *db_open(const char *path, int writable)
{
    sqlite3 *db = NULL;
    int flags = writable ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY;
    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK)
        fail_msg("open %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_busy_timeout(db, H_TIMEOUT_MS);
    return db;
}

static void db_exec(sqlite3 *db, const char *sql)
{
    char *message = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &message) != SQLITE_OK)
        fail_msg("%s: %s", sql, message);
}

static void file_hash_hex(const char *path, char hex[65])
{
    char *text = slurp(path);
    uint8_t digest[32];
    crypto_generichash(digest, sizeof digest, (const uint8_t *)text, strlen(text), NULL, 0);
    free(text);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
}

/* ------------------------------------------------------------------ signals */

static schakel_signal_t ondermijning(const char *subject, const char *ref)
{
    schakel_signal_t s = {
        .kind = "witwassen",
        .theme = "ondermijning",
        .area = "GM0935",
        .subject = subject,
        .grounds = subject != NULL ? "Contante betalingen boven de meldgrens, herhaald" : NULL,
        .severity = SCHAKEL_SEVERITY_MEDIUM,
        .summary = "Patroon van contante stortingen",
        .source_ref = ref,
    };
    return s;
}

/* Receive n deliveries; ack those whose message id is in ack_ids, all in
 * one Ack frame (one turn of the broker: one "delivery.acked" entry).
 * Their seqs go to acked_seqs, ascending (the caller has room for n_ack). */
static void receive_and_ack(schakel_client_t *om, size_t n, uint8_t (*ack_ids)[16], size_t n_ack,
                            uint64_t *acked_seqs)
{
    size_t n_acked = 0;
    for (size_t i = 0; i < n; i++) {
        schakel_delivery_t *d = h_receive(om);
        for (size_t k = 0; k < n_ack; k++)
            if (memcmp(d->message_id, ack_ids[k], 16) == 0) {
                assert_true(n_acked < n_ack);
                size_t at = n_acked++;
                while (at > 0 && acked_seqs[at - 1] > d->seq) {
                    acked_seqs[at] = acked_seqs[at - 1];
                    at--;
                }
                acked_seqs[at] = d->seq;
            }
        schakel_delivery_free(&d);
    }
    assert_int_equal(n_acked, n_ack);
    assert_int_equal(schakel_ack_many(om, acked_seqs, n_acked), SCHAKEL_OK);
}

/* ------------------------------------------------------------------ the trail of a broker */

/* Count "{"seq":" at the start of each exported entry. */
static size_t export_entries(const char *json, const char *event)
{
    size_t n = 0;
    for (const char *p = json; (p = strstr(p, "{\"seq\":")) != NULL; p++) {
        const char *end = strchr(p, '}');
        char needle[64];
        snprintf(needle, sizeof needle, "\"event\":\"%s\"", event != NULL ? event : "");
        if (event == NULL ||
            (end != NULL && memmem(p, (size_t)(end - p), needle, strlen(needle)) != NULL))
            n++;
    }
    return n;
}

/* What exercise_broker did, for the checks. */
typedef struct exercised {
    char id_hex[4][33]; /* A1, A2 (subject A), B1 (subject B), N1 (no subject) */
    uint64_t acked[2];  /* om's seqs of A1 and B1, ascending: acked in one frame */
    uint32_t recipients_a;
    char old_hash[65], new_hash[65]; /* the policy before and after the reload */
} exercised_t;

static void hex16(const uint8_t id[16], char out[33])
{
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", id[i]);
}

/* The actions whose entries the trail must hold. */
static void exercise_broker(h_env_t *env, exercised_t *x)
{
    uint32_t *recipients_a = &x->recipients_a;
    char *old_hash = x->old_hash, *new_hash = x->new_hash;
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *om = h_connect(env, H_OM);
    assert_int_equal(schakel_subscribe(om, 0), SCHAKEL_OK);
    uint8_t ids[4][16];
    uint32_t recipients = 0;
    *recipients_a = 0;
    schakel_signal_t a1 = ondermijning(SUBJECT_A, "BVH-AUDIT-1"),
                     a2 = ondermijning(SUBJECT_A, "BVH-AUDIT-2"),
                     b1 = ondermijning(SUBJECT_B, "BVH-AUDIT-3"),
                     n1 = ondermijning(NULL, "BVH-AUDIT-4");
    h_publish_ok(politie, &a1, NULL, ids[0], &recipients, NULL);
    *recipients_a += recipients;
    h_publish_ok(politie, &a2, NULL, ids[1], &recipients, NULL);
    *recipients_a += recipients;
    h_publish_ok(politie, &b1, NULL, ids[2], NULL, NULL);
    h_publish_ok(politie, &n1, NULL, ids[3], NULL, NULL);
    assert_true(*recipients_a >= 2);
    for (int i = 0; i < 4; i++)
        hex16(ids[i], x->id_hex[i]);
    /* om acks A's first and B's signal; A's second stays in its mailbox. */
    uint8_t acked[2][16];
    memcpy(acked[0], ids[0], 16);
    memcpy(acked[1], ids[2], 16);
    receive_and_ack(om, 4, acked, 2, x->acked);
    assert_int_equal(h_backlog(om), 2);

    schakel_signal_t denied = ondermijning(NULL, "BVH-AUDIT-5");
    denied.theme = "overlast";
    h_publish_refused(politie, NULL, &denied, "POLICY_DENIED");

    schakel_client_t *stranger = NULL;
    schakel_error_t err;
    assert_int_equal(h_try_connect(env, h_key_file(env, H_UNREGISTERED), &stranger, &err),
                     SCHAKEL_ERR_AUTH);

    file_hash_hex(env->policy_path, old_hash);
    FILE *policy = fopen(env->policy_path, "a");
    assert_non_null(policy);
    fputs("# reloaded by test_audit\n", policy);
    assert_int_equal(fclose(policy), 0);
    file_hash_hex(env->policy_path, new_hash);
    assert_int_equal(h_broker_reload(env), 1);
    schakel_close(&om);
    schakel_close(&politie);
}

/* The subject tag of the deliveries of one publish: all equal; "" for
 * none. */
static void tag_of(const h_env_t *env, const char *id_hex, char tag[65])
{
    sqlite3 *db = db_open(env->store_path, 0);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT DISTINCT coalesce(subject_tag, '') FROM audit"
                                        " WHERE event = 'delivery.queued' AND message_id = ?1",
                                        -1, &stmt, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(stmt, 1, id_hex, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    snprintf(tag, 65, "%s", (const char *)sqlite3_column_text(stmt, 0));
    assert_int_equal(sqlite3_step(stmt), SQLITE_DONE); /* one tag per publish */
    sqlite3_finalize(stmt);
    sqlite3_close(db);
}

/* The pseudonym is sealed content: in no store file in clear. */
static void assert_nowhere_in_clear(const h_env_t *env, const char *text)
{
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char path[192];
        snprintf(path, sizeof path, "%s%s", env->store_path, suffixes[i]);
        FILE *f = fopen(path, "rb");
        if (f == NULL)
            continue;
        size_t cap = 1 << 20, len = 0, n;
        char *data = malloc(cap);
        assert_non_null(data);
        while ((n = fread(data + len, 1, cap - len, f)) > 0)
            if ((len += n) == cap) {
                data = realloc(data, cap *= 2);
                assert_non_null(data);
            }
        fclose(f);
        if (memmem(data, len, text, strlen(text)) != NULL)
            fail_msg("\"%s\" is in clear in %s", text, path);
        free(data);
    }
}

static void assert_trail_holds(const h_env_t *env, const exercised_t *x)
{
    uint32_t recipients_a = x->recipients_a;
    const char *old_hash = x->old_hash, *new_hash = x->new_hash;
    char tag_a1[65], tag_a2[65], tag_b1[65], tag_n1[65];
    char key_z85[41], detail[256];
    uint8_t sign_pk[32], curve_pk[32];
    char err[256];
    /* The stranger's handshake: its CURVE key, from 127.0.0.1, refused. */
    assert_int_equal(keys_load_public(h_pub_file(env, H_UNREGISTERED), sign_pk, err, sizeof err),
                     0);
    assert_int_equal(keys_sign_pk_to_curve(sign_pk, curve_pk), 0);
    keys_public_z85(curve_pk, key_z85);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'auth.refused'"
                                 " AND curve_key = ?1 AND peer = '127.0.0.1' AND actor IS NULL",
                                 key_z85),
                     1);
    snprintf(detail, sizeof detail, "old_policy=%s new_policy=%s requested_by=SIGHUP", old_hash,
             new_hash);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'policy.reloaded'"
                                 " AND detail = ?1",
                                 detail),
                     1);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'publish.refused'"
                                 " AND actor = ?1 AND reason = 'POLICY_DENIED'"
                                 " AND rule_id IS NULL",
                                 H_POLITIE),
                     1);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'publish.accepted'"
                                 " AND actor = ?1",
                                 H_POLITIE),
                     4);
    /* A's deliveries name A by one keyed tag, B's by another, N's by none;
     * the pseudonyms themselves are nowhere on disk. */
    tag_of(env, x->id_hex[0], tag_a1);
    tag_of(env, x->id_hex[1], tag_a2);
    tag_of(env, x->id_hex[2], tag_b1);
    tag_of(env, x->id_hex[3], tag_n1);
    assert_int_equal(strlen(tag_a1), 64);
    assert_string_equal(tag_a1, tag_a2);
    assert_int_equal(strlen(tag_b1), 64);
    assert_string_not_equal(tag_a1, tag_b1);
    assert_string_equal(tag_n1, "");
    assert_nowhere_in_clear(env, SUBJECT_A);
    assert_nowhere_in_clear(env, SUBJECT_B);
    /* A's deliveries carry what a data-subject request needs: one queued
     * entry per item (A1, A2) listing its deliveries with their rule, and
     * none of the per-delivery columns. */
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'delivery.queued'"
                                 " AND subject_tag = ?1 AND recipient IS NULL"
                                 " AND delivery_seq IS NULL AND rule_id IS NULL"
                                 " AND actor = 'politie/bvh-koppeling'"
                                 " AND kind = 'witwassen' AND theme = 'ondermijning'"
                                 " AND deliveries LIKE 'rule politie-ondermijning-om %subject%'"
                                 " AND deliveries LIKE '% om/parket' || char(10) || '%'",
                                 tag_a1),
                     2);
    /* ... and as many delivery lines as there were deliveries (lines that
     * do not start with "rule "). */
    assert_int_equal(h_store_int(env,
                                 "SELECT sum((length(deliveries) - length(replace(deliveries,"
                                 " char(10), ''))) - 1 - (length(deliveries) -"
                                 " length(replace(deliveries, char(10) || 'rule ', ''))) / 6)"
                                 " FROM audit WHERE event = 'delivery.queued' AND subject_tag = ?1",
                                 tag_a1),
                     recipients_a);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'delivery.queued'"
                                 " AND deliveries IS NULL",
                                 NULL),
                     0);
    /* One Ack frame, one turn: one entry listing both seqs, ascending, and
     * indexed; no entry of the shape before schema 6. */
    char seqs[64];
    snprintf(seqs, sizeof seqs, "%llu,%llu", (unsigned long long)x->acked[0],
             (unsigned long long)x->acked[1]);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'delivery.acked'"
                                 " AND actor = 'om/parket' AND recipient = 'om/parket'"
                                 " AND delivery_seqs = ?1 AND delivery_seq IS NULL",
                                 seqs),
                     1);
    assert_int_equal(
        h_store_int(env, "SELECT count(*) FROM audit WHERE event = 'delivery.acked'", NULL), 1);
    assert_int_equal(h_store_int(env,
                                 "SELECT sum(k.last_seq - k.first_seq + 1) FROM audit_ack_ranges k"
                                 " JOIN audit a ON a.seq = k.audit_seq WHERE a.delivery_seqs = ?1",
                                 seqs),
                     2);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event IN"
                                 " ('broker.started', 'broker.stopped')",
                                 NULL),
                     2);
    /* No contents: the summary and grounds are nowhere in the trail. */
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE detail LIKE '%contante%'"
                                 " OR reason LIKE '%contante%'",
                                 NULL),
                     0);
}

static void test_trail_of_a_broker_verifies_and_exports(void **state)
{
    h_env_t *env = *state;
    h_cli_result_t res = {0};
    exercised_t x;
    char expected[160], store_key[192];
    exercise_broker(env, &x);
    assert_int_equal(h_broker_stop(env), 0); /* a clean stop certifies everything */
    assert_trail_holds(env, &x);

    int64_t entries = h_store_int(env, "SELECT count(*) FROM audit", NULL);
    int64_t checkpoints = h_store_int(env, "SELECT count(*) FROM audit_checkpoints", NULL);
    assert_int_equal(h_store_int(env, "SELECT max(seq) FROM audit_checkpoints", NULL), entries);
    if (ctl_run(env, &res, "audit", "verify", "--store", env->store_path, "--broker-key",
                env->broker_pub, NULL) != 0)
        fail_msg("verify: %d\n%s%s", res.status, res.out, res.err);
    snprintf(expected, sizeof expected, "audit trail intact: %lld entries, %lld checkpoint%s",
             (long long)entries, (long long)checkpoints, checkpoints == 1 ? "" : "s");
    if (strstr(res.out, expected) == NULL)
        fail_msg("verify said:\n%s\nexpected: %s", res.out, expected);
    if (strstr(res.out, "acked-delivery index agrees with the entries: 2 acked deliveries") == NULL)
        fail_msg("verify said nothing of the index:\n%s", res.out);
    h_cli_result_free(&res);

    /* The export of A: A's deliveries, the ack of the one that was acked,
     * nothing of B. */
    snprintf(store_key, sizeof store_key, "%s/keys/store.key", env->dir);
    if (ctl_run(env, &res, "audit", "subject", SUBJECT_A, "--store", env->store_path, "--store-key",
                store_key, NULL) != 0)
        fail_msg("subject: %d\n%s", res.status, res.err);
    assert_int_equal(export_entries(res.out, "delivery.queued"), 2); /* A1, A2 */
    assert_int_equal(export_entries(res.out, "delivery.acked"), 1);
    assert_int_equal(export_entries(res.out, NULL), 3);
    assert_null(strstr(res.out, SUBJECT_B));
    assert_non_null(strstr(res.out, "\"subject\":\"" SUBJECT_A "\""));
    assert_null(strstr(res.out, "auth."));
    assert_non_null(strstr(res.out, "\"legal_basis\":\"Wpg art. 16 lid 1 sub a\""));
    /* The ack entry lists A1's and B1's seqs (A1 was published first): A's
     * export shows A1's, and that one other was withheld. */
    snprintf(expected, sizeof expected, "\"delivery_seqs\":\"%llu\",\"delivery_seqs_withheld\":1,",
             (unsigned long long)x.acked[0]);
    if (strstr(res.out, expected) == NULL)
        fail_msg("the export lacks %s:\n%s", expected, res.out);
    h_cli_result_free(&res);
    if (ctl_run(env, &res, "audit", "subject", SUBJECT_B, "--store", env->store_path, "--store-key",
                store_key, NULL) != 0)
        fail_msg("subject: %d\n%s", res.status, res.err);
    assert_int_equal(export_entries(res.out, "delivery.acked"), 1);
    snprintf(expected, sizeof expected, "\"delivery_seqs\":\"%llu\",\"delivery_seqs_withheld\":1,",
             (unsigned long long)x.acked[1]);
    if (strstr(res.out, expected) == NULL)
        fail_msg("the export lacks %s:\n%s", expected, res.out);
    h_cli_result_free(&res);

    /* tail: metadata only, subjects withheld. */
    char from[24];
    snprintf(from, sizeof from, "%lld",
             (long long)h_store_int(env, "SELECT min(seq) FROM audit WHERE subject_tag IS NOT NULL",
                                    NULL));
    assert_int_equal(ctl_run(env, &res, "audit", "tail", "--store", env->store_path, "--from", from,
                             "--count", "1", NULL),
                     0);
    assert_non_null(strstr(res.out, "event=delivery.queued"));
    assert_non_null(strstr(res.out, "subject_tag=withheld"));
    h_cli_result_free(&res);
    /* The acked entry with its whole list, as a line and as JSON. */
    snprintf(
        from, sizeof from, "%lld",
        (long long)h_store_int(env, "SELECT seq FROM audit WHERE event = 'delivery.acked'", NULL));
    char list[64];
    snprintf(list, sizeof list, "%llu,%llu", (unsigned long long)x.acked[0],
             (unsigned long long)x.acked[1]);
    for (int json = 0; json < 2; json++) {
        assert_int_equal(ctl_run(env, &res, "audit", "tail", "--store", env->store_path, "--from",
                                 from, "--count", "1", json ? "--json" : "--no-follow", NULL),
                         0);
        if (json)
            snprintf(expected, sizeof expected,
                     "\"event\":\"delivery.acked\",\"actor\":\"om/parket\","
                     "\"recipient\":\"om/parket\",\"delivery_seqs\":\"%s\"",
                     list);
        else
            snprintf(expected, sizeof expected,
                     "event=delivery.acked actor=om/parket recipient=om/parket delivery_seqs=%s",
                     list);
        if (strstr(res.out, expected) == NULL)
            fail_msg("tail said:\n%s\nexpected: %s", res.out, expected);
        h_cli_result_free(&res);
    }
    h_done(env);
}

/* An attacker's copy: one entry altered, or one removed. */
static void test_verify_names_the_entry_changed_in_a_copy(void **state)
{
    h_env_t *env = *state;
    exercised_t x;
    exercise_broker(env, &x);
    assert_int_equal(h_broker_stop(env), 0);
    int64_t target =
        h_store_int(env, "SELECT min(seq) FROM audit WHERE subject_tag IS NOT NULL", NULL);
    enum { ALTERED, REMOVED, SWAPPED, INDEX_ROW_REMOVED, N_ATTACKS };
    for (int attack = 0; attack < N_ATTACKS; attack++) {
        char copy[192], sql[512], expected[64];
        h_cli_result_t res = {0};
        long long t = (long long)target;
        snprintf(copy, sizeof copy, "%s/copy-%d.db", env->dir, attack);
        h_copy_file(env->store_path, copy);
        sqlite3 *db = db_open(copy, 1);
        db_exec(db, "DROP TRIGGER audit_append_only_update; DROP TRIGGER audit_append_only_delete;"
                    "DROP TRIGGER audit_ack_ranges_append_only_delete");
        if (attack == INDEX_ROW_REMOVED)
            snprintf(sql, sizeof sql,
                     "DELETE FROM audit_ack_ranges WHERE first_seq <= %llu AND last_seq >= %llu",
                     (unsigned long long)x.acked[0], (unsigned long long)x.acked[0]);
        else if (attack == ALTERED)
            snprintf(sql, sizeof sql,
                     "UPDATE audit SET recipient = 'riec/analyse', recipient_partner = 'riec'"
                     " WHERE seq = %lld",
                     t);
        else if (attack == REMOVED)
            snprintf(sql, sizeof sql, "DELETE FROM audit WHERE seq = %lld", t);
        else
            snprintf(sql, sizeof sql,
                     "UPDATE audit SET seq = 999999 WHERE seq = %lld;"
                     "UPDATE audit SET seq = %lld WHERE seq = %lld;"
                     "UPDATE audit SET seq = %lld WHERE seq = 999999",
                     t, t, t + 1, t + 1);
        db_exec(db, sql);
        sqlite3_close(db);
        ctl_run(env, &res, "audit", "verify", "--store", copy, "--broker-key", env->broker_pub,
                NULL);
        if (attack == INDEX_ROW_REMOVED) /* the chain holds; the index does not */
            snprintf(expected, sizeof expected, "index DISAGREES with the entries");
        else
            snprintf(expected, sizeof expected, "BROKEN at entry %lld:", t);
        if (res.status != CTL_EXIT_BROKEN || strstr(res.out, expected) == NULL)
            fail_msg("attack %d: exit %d, output:\n%s%s\nexpected \"%s\"", attack, res.status,
                     res.out, res.err, expected);
        h_cli_result_free(&res);
        unlink(copy);
    }
    /* The original is untouched and intact. */
    h_cli_result_t res = {0};
    assert_int_equal(ctl_run(env, &res, "audit", "verify", "--store", env->store_path,
                             "--broker-key", env->broker_pub, NULL),
                     0);
    h_cli_result_free(&res);
    h_done(env);
}

/* ------------------------------------------------------------------ fail closed */

/* Make the live trail refuse entries of one event, as a full audit path
 * would refuse them all (the broker's connection sees the schema change at
 * its next statement). */
static void trail_refuse(h_env_t *env, const char *event)
{
    char sql[256];
    sqlite3 *db = db_open(env->store_path, 1);
    snprintf(sql, sizeof sql,
             "CREATE TRIGGER test_refuse BEFORE INSERT ON audit WHEN NEW.event = '%s'"
             " BEGIN SELECT RAISE(ABORT, 'the audit path is full'); END",
             event);
    db_exec(db, sql);
    sqlite3_close(db);
}

static void trail_accept(h_env_t *env)
{
    sqlite3 *db = db_open(env->store_path, 1);
    db_exec(db, "DROP TRIGGER test_refuse");
    sqlite3_close(db);
}

/* trail_refuse for the events of `list` ("'a', 'b'"). */
static void trail_refuse_events(h_env_t *env, const char *list)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "CREATE TRIGGER test_refuse BEFORE INSERT ON audit WHEN NEW.event IN (%s)"
             " BEGIN SELECT RAISE(ABORT, 'the audit path is full'); END",
             list);
    h_store_exec(env, sql);
}

/* Wait until the log holds `n` lines with needle from offset on. */
static void await_lines(const h_env_t *env, long offset, const char *needle, int n)
{
    if (h_await_log_lines(env, offset, needle, n, H_TIMEOUT_MS) != 0) {
        h_dump_log(env);
        fail_msg("%d lines with \"%s\" in the log, not %d", h_log_count(env, offset, needle),
                 needle, n);
    }
}

/* Stop the broker; the trail then verifies. */
static void stop_and_verify(h_env_t *env)
{
    assert_int_equal(h_broker_stop(env), 0);
    h_cli_result_t res = {0};
    if (ctl_run(env, &res, "audit", "verify", "--store", env->store_path, "--broker-key",
                env->broker_pub, NULL) != 0)
        fail_msg("verify: %d\n%s%s", res.status, res.out, res.err);
    h_cli_result_free(&res);
}

/* Refused handshakes cost their sender nothing: the trail takes ten from
 * one address in full per minute, and sums up the rest in one entry (at
 * the latest when the broker stops), so a stranger trying keys cannot
 * grow it without bound. */
static void test_refused_handshakes_are_summed_up(void **state)
{
    h_env_t *env = *state;
    enum { TRIES = 30 };
    for (int i = 0; i < TRIES; i++) {
        schakel_client_t *stranger = NULL;
        schakel_error_t err;
        assert_int_equal(h_try_connect(env, h_key_file(env, H_UNREGISTERED), &stranger, &err),
                         SCHAKEL_ERR_AUTH);
    }
    assert_int_equal(h_broker_stop(env), 0);
    /* ten in full from 127.0.0.1, the start-up self-check's probe the first */
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'auth.refused'"
                                 " AND peer = '127.0.0.1'",
                                 NULL),
                     10);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'auth.refused'"
                                 " AND peer <> '127.0.0.1'",
                                 NULL),
                     0);
    /* the others in one summary, written before broker.stopped */
    assert_int_equal(
        h_store_int(env, "SELECT count(*) FROM audit WHERE event = 'auth.refused_summary'", NULL),
        1);
    int64_t counted = h_store_int(env,
                                  "SELECT CAST(substr(detail, 12) AS INTEGER) FROM audit"
                                  " WHERE event = 'auth.refused_summary'",
                                  NULL);
    assert_true(counted >= TRIES - 9); /* libzmq may try a refused handshake more than once */
    char peers[64];
    snprintf(peers, sizeof peers, "%% peers=127.0.0.1:%lld", (long long)counted);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'auth.refused_summary'"
                                 " AND detail LIKE ?1 AND seq < (SELECT seq FROM audit"
                                 " WHERE event = 'broker.stopped')",
                                 peers),
                     1);
    h_done(env);
}

/* Refused requests cost a partner little (an Ack of one unknown seq is a
 * few bytes): the trail takes 600 of one principal's in full per minute
 * and sums up the rest (at the latest when the broker stops), while
 * another principal's are still recorded; every refusal is answered all
 * the same. */
static void test_refused_requests_are_summed_up(void **state)
{
    h_env_t *env = *state;
    enum { UNKNOWN = 800, FULL = 600 };
    schakel_client_t *om = h_connect(env, H_OM);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    for (uint64_t i = 0; i < UNKNOWN; i++) /* no such delivery: one refusal each */
        assert_int_equal(schakel_ack(om, 1000000000000ull + i), SCHAKEL_OK);
    assert_int_equal(h_backlog(om), 0); /* its answer follows every refusal */
    assert_int_equal(schakel_ack(politie, 1000000000000ull), SCHAKEL_OK);
    assert_int_equal(h_backlog(politie), 0);
    schakel_close(&politie);
    schakel_close(&om);
    assert_int_equal(h_broker_stop(env), 0);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'request.refused'"
                                 " AND actor = '" H_OM "' AND reason = 'UNKNOWN_DELIVERY'",
                                 NULL),
                     FULL);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'request.refused'"
                                 " AND actor = '" H_POLITIE "'",
                                 NULL),
                     1);
    char summary[96];
    snprintf(summary, sizeof summary, "suppressed=%d %% principals=" H_OM ":%d", UNKNOWN - FULL,
             UNKNOWN - FULL);
    assert_int_equal(
        h_store_int(env,
                    "SELECT count(*) FROM audit WHERE event = 'request.refused_summary'"
                    " AND detail LIKE ?1 AND seq < (SELECT seq FROM audit"
                    " WHERE event = 'broker.stopped')",
                    summary),
        1);
    h_done(env);
}

static void test_actions_fail_closed_without_their_entries(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *om = h_connect(env, H_OM);
    assert_int_equal(schakel_subscribe(om, 0), SCHAKEL_OK);
    schakel_signal_t s = ondermijning(SUBJECT_A, "BVH-AUDIT-10");
    uint8_t id[16], refused_id[16];
    h_publish_ok(politie, &s, NULL, id, NULL, NULL);
    schakel_delivery_t *d = h_receive(om);
    uint64_t seq = d->seq;
    schakel_delivery_free(&d);

    /* A publish whose deliveries cannot be recorded is refused, whole. */
    trail_refuse(env, "delivery.queued");
    randombytes_buf(refused_id, sizeof refused_id);
    schakel_signal_t s2 = ondermijning(SUBJECT_A, "BVH-AUDIT-11");
    assert_int_equal(
        schakel_publish(politie, NULL, &s2, 1, refused_id, NULL, NULL, NULL, H_TIMEOUT_MS),
        SCHAKEL_ERR_REFUSED);
    assert_int_equal(h_store_int(env, "SELECT count(*) FROM publishes", NULL), 1);
    assert_int_equal(h_backlog(om), 1);

    /* An ack that cannot be recorded does not happen. */
    trail_accept(env);
    trail_refuse(env, "delivery.acked");
    assert_int_equal(schakel_ack(om, seq), SCHAKEL_OK); /* acks get no answer */
    /* The Heartbeat's answer comes after the ack's turn ended (it may count
     * that turn's uncommitted state): then the store still has it. */
    (void)h_backlog(om);
    assert_int_equal(h_mailbox_holds(env, (int64_t)seq), 1);

    /* An admission that cannot be recorded is not granted. */
    trail_accept(env);
    trail_refuse(env, "auth.admitted");
    schakel_client_t *late = NULL;
    schakel_error_t err;
    schakel_status_t st =
        schakel_connect(&late, env->endpoint, env->broker_pub, h_key_file(env, H_RIEC), 2000, &err);
    if (st == SCHAKEL_OK)
        fail_msg("a handshake was admitted while its admission could not be recorded");
    schakel_close(&late);

    /* Entries can be written again: everything works, and nothing of the
     * refused publish was kept (its id is new, not a duplicate). */
    trail_accept(env);
    int duplicate = -1;
    h_publish_ok(politie, &s2, refused_id, NULL, NULL, &duplicate);
    assert_int_equal(duplicate, 0);
    assert_int_equal(schakel_ack(om, seq), SCHAKEL_OK);
    assert_int_equal(h_backlog(om), 1); /* the ack went, the new delivery waits */
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_close(&riec);
    schakel_close(&om);
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0);

    /* The refusals are on record, the refused actions are not; the trail
     * is intact. */
    char hex[33];
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", refused_id[i]);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'publish.accepted'"
                                 " AND message_id = ?1",
                                 hex),
                     1); /* the retry, not the refused one */
    assert_true(h_store_int(env,
                            "SELECT count(*) FROM audit WHERE event = 'publish.refused'"
                            " AND message_id = ?1",
                            hex) >= 1);
    assert_int_equal(
        h_store_int(env, "SELECT count(*) FROM audit WHERE event = 'delivery.acked'", NULL), 1);
    h_cli_result_t res = {0};
    if (ctl_run(env, &res, "audit", "verify", "--store", env->store_path, "--broker-key",
                env->broker_pub, NULL) != 0)
        fail_msg("verify: %d\n%s%s", res.status, res.out, res.err);
    h_cli_result_free(&res);
    h_done(env);
}

/* ------------------------------------------------------------------ carried entries */

/* A partner's refusal stands whatever becomes of its turn. A publish the
 * policy refuses whose entry the store refuses (its turn rolls back, and
 * the entry's writes after it are refused too), and a publish refused
 * because its turn rolled back (its deliveries could not be recorded),
 * whose refusal the store refuses as well, are each on the trail once
 * the store takes them (review: written again once, into the next turn,
 * and lost when that rolled back too); the chain verifies. */
static void test_partner_refusals_carried_until_recorded(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    uint8_t denied_id[16], failed_id[16];
    char denied_hex[33], failed_hex[33];
    randombytes_buf(denied_id, sizeof denied_id);
    randombytes_buf(failed_id, sizeof failed_id);
    hex16(denied_id, denied_hex);
    hex16(failed_id, failed_hex);
    long offset = h_log_offset(env);
    trail_refuse_events(env, "'publish.refused', 'delivery.queued'");
    schakel_signal_t denied = ondermijning(NULL, "BVH-AUDIT-20");
    denied.theme = "overlast";
    assert_int_equal(
        schakel_publish(politie, NULL, &denied, 1, denied_id, NULL, NULL, NULL, H_TIMEOUT_MS),
        SCHAKEL_ERR_REFUSED);
    assert_string_equal(schakel_last_error(politie)->reason_name, "POLICY_DENIED");
    schakel_signal_t failed = ondermijning(SUBJECT_A, "BVH-AUDIT-21");
    assert_int_equal(
        schakel_publish(politie, NULL, &failed, 1, failed_id, NULL, NULL, NULL, H_TIMEOUT_MS),
        SCHAKEL_ERR_REFUSED);
    /* the first in its turn, then both at a settle a second after, in a
     * transaction of their own: refused each time */
    await_lines(env, offset, "event=audit.write_failed entry=publish.refused", 2);
    assert_int_equal(
        h_store_int(env, "SELECT count(*) FROM audit WHERE event = 'publish.refused'", NULL), 0);
    trail_accept(env);
    await_lines(env, offset, "event=audit.recorded_late entry=publish.refused", 2);
    static const char sql[] = "SELECT count(*) FROM audit WHERE event = 'publish.refused' AND"
                              " message_id = ?1 AND actor = '" H_POLITIE "'";
    assert_int_equal(h_store_int(env, sql, denied_hex), 1);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'publish.refused' AND"
                                 " message_id = ?1 AND reason = 'POLICY_DENIED'",
                                 denied_hex),
                     1);
    assert_int_equal(h_store_int(env, sql, failed_hex), 1);
    schakel_close(&politie);
    stop_and_verify(env);
    assert_int_equal(h_store_int(env, sql, denied_hex), 1); /* none again at the stop */
    assert_int_equal(h_store_int(env, sql, failed_hex), 1);
    assert_int_equal(h_log_count(env, offset, "event=audit.not_recorded"), 0);
    h_done(env);
}

/* A refused handshake whose entry the store refuses in its turn and after
 * is recorded once the store takes it; a registered key whose admission
 * cannot be recorded is refused after all (answered 300), and that is
 * recorded too (review: it got no entry at all): an auth.refused entry
 * naming its principal for each such refusal the log names, at the
 * latest before broker.stopped. */
static void test_handshake_refusals_carried_until_recorded(void **state)
{
    h_env_t *env = *state;
    char key_z85[41], err_text[256];
    uint8_t sign_pk[32], curve_pk[32];
    assert_int_equal(
        keys_load_public(h_pub_file(env, H_UNREGISTERED), sign_pk, err_text, sizeof err_text), 0);
    assert_int_equal(keys_sign_pk_to_curve(sign_pk, curve_pk), 0);
    keys_public_z85(curve_pk, key_z85);
    long offset = h_log_offset(env);
    trail_refuse_events(env, "'auth.refused', 'auth.admitted'");
    schakel_client_t *client = NULL;
    schakel_error_t err;
    assert_int_equal(h_try_connect(env, h_key_file(env, H_UNREGISTERED), &client, &err),
                     SCHAKEL_ERR_AUTH);
    if (schakel_connect(&client, env->endpoint, env->broker_pub, h_key_file(env, H_RIEC), 2000,
                        &err) == SCHAKEL_OK)
        fail_msg("a handshake was admitted while its admission could not be recorded");
    schakel_close(&client);
    /* the stranger's in its turn, then at a settle, in a transaction of its own */
    await_lines(env, offset, "event=audit.write_failed entry=auth.refused", 2);
    trail_accept(env);
    if (h_await_log(env, offset, "event=audit.recorded_late entry=auth.refused", H_TIMEOUT_MS) != 0)
        fail_msg("no refused handshake was recorded once the store took it");
    stop_and_verify(env);
    int stranger = h_log_count_both(env, offset, "event=auth.refused ", key_z85);
    int riec = h_log_count_both(env, offset, "event=auth.refused ", "principal=" H_RIEC);
    assert_true(stranger >= 1);
    assert_true(riec >= 1);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'auth.refused' AND"
                                 " curve_key = ?1 AND actor IS NULL",
                                 key_z85),
                     stranger);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'auth.refused' AND"
                                 " actor = '" H_RIEC "' AND reason = ?1",
                                 "the audit trail could not record this admission; try again"),
                     riec);
    assert_int_equal(h_log_count(env, offset, "event=audit.not_recorded"), 0);
    h_done(env);
}

/* A refused reload whose entry cannot be committed is carried, and
 * recorded once the store takes it (review: it was lost). */
static void test_reload_refusal_carried_until_recorded(void **state)
{
    h_env_t *env = *state;
    trail_refuse(env, "policy.reload_refused");
    h_env_write_policy(env, "version: 9\n");
    long offset = h_log_offset(env);
    assert_int_equal(h_broker_reload(env), 0);
    /* its own commit, then the settle's try */
    await_lines(env, offset, "event=audit.write_failed entry=policy.reload_refused", 2);
    trail_accept(env);
    if (h_await_log(env, offset, "event=audit.recorded_late entry=policy.reload_refused",
                    H_TIMEOUT_MS) != 0)
        fail_msg("the refused reload was not recorded once the store took it");
    static const char sql[] = "SELECT count(*) FROM audit WHERE event = 'policy.reload_refused'"
                              " AND reason LIKE ?1 AND detail LIKE '%requested_by=SIGHUP%'";
    assert_int_equal(h_store_int(env, sql, "%missing key%"), 1);
    stop_and_verify(env);
    assert_int_equal(h_store_int(env, sql, "%missing key%"), 1);
    h_done(env);
}

/* ------------------------------------------------------------------ a stray index row */

/* A row of the acked-delivery index written into the live store for a delivery not yet
 * acked: verify names it while the broker runs; the ack's turn fails with
 * a log line that says why, and the delivery stays; after the repair of
 * docs/OPERATIONS.md the ack is recorded and the trail verifies. */
static void test_a_stray_index_row_blocks_its_ack_visibly(void **state)
{
    h_env_t *env = *state;
    char sql[640], needle[160], seq_text[24];
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *om = h_connect(env, H_OM);
    assert_int_equal(schakel_subscribe(om, 0), SCHAKEL_OK);
    schakel_signal_t s = ondermijning(SUBJECT_A, "BVH-AUDIT-20");
    uint8_t id[16];
    h_publish_ok(politie, &s, NULL, id, NULL, NULL);
    schakel_delivery_t *d = h_receive(om);
    unsigned long long seq = (unsigned long long)d->seq;
    schakel_delivery_free(&d);
    snprintf(seq_text, sizeof seq_text, "%llu", seq);

    sqlite3 *db = db_open(env->store_path, 1);
    snprintf(sql, sizeof sql, "INSERT INTO audit_ack_ranges VALUES (%llu, %llu, 999999)", seq, seq);
    db_exec(db, sql);
    sqlite3_close(db);
    h_cli_result_t res = {0};
    int status = ctl_run(env, &res, "audit", "verify", "--store", env->store_path, "--broker-key",
                         env->broker_pub, NULL);
    snprintf(needle, sizeof needle,
             "the index names entry 999999 for delivery %llu, but the trail has no such entry",
             seq);
    if (status != CTL_EXIT_BROKEN ||
        (strstr(res.out, needle) == NULL && strstr(res.err, needle) == NULL))
        fail_msg("verify: %d\n%s%s", status, res.out, res.err);
    h_cli_result_free(&res);

    long offset = h_log_offset(env);
    assert_int_equal(schakel_ack(om, seq), SCHAKEL_OK);
    snprintf(needle, sizeof needle,
             "the audit_ack_ranges index already names delivery %llu (run schakelctl audit verify)",
             seq);
    if (h_await_log(env, offset, needle, H_TIMEOUT_MS) != 0)
        fail_msg("no log line with: %s", needle);
    (void)h_backlog(om); /* answered after the ack's turn */
    assert_int_equal(h_mailbox_holds(env, (int64_t)seq), 1);

    /* The repair of docs/OPERATIONS.md ("An ack that fails for good"). */
    db = db_open(env->store_path, 1);
    snprintf(sql, sizeof sql,
             "BEGIN; DROP TRIGGER audit_ack_ranges_append_only_delete;"
             " DELETE FROM audit_ack_ranges WHERE first_seq = %llu"
             " AND NOT EXISTS (SELECT 1 FROM audit WHERE seq = audit_ack_ranges.audit_seq);"
             " CREATE TRIGGER audit_ack_ranges_append_only_delete BEFORE DELETE ON audit_ack_ranges"
             " BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END; COMMIT;",
             seq);
    db_exec(db, sql);
    sqlite3_close(db);
    assert_int_equal(schakel_ack(om, seq), SCHAKEL_OK);
    assert_int_equal(h_backlog(om), 0);
    schakel_close(&om);
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit_ack_ranges a JOIN audit e"
                                 " ON e.seq = a.audit_seq WHERE a.first_seq <= ?1"
                                 " AND a.last_seq >= ?1 AND e.event = 'delivery.acked'",
                                 seq_text),
                     1);
    if (ctl_run(env, &res, "audit", "verify", "--store", env->store_path, "--broker-key",
                env->broker_pub, NULL) != 0)
        fail_msg("verify after the repair: %d\n%s%s", res.status, res.out, res.err);
    h_cli_result_free(&res);
    h_done(env);
}

/* An item and its publish are written with the retention of their longest
 * delivery: not shorter (the rows must outlive every delivery), not longer
 * (nothing is kept past what a rule allows). woco's signal goes out under
 * three rules of different retention (180, 365 and 730 days), politie's
 * under one (1825 days). */
static void test_items_kept_as_long_as_their_longest_delivery(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *woco = h_connect(env, H_WOCO_MAASOEVER);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t from_woco = ondermijning(NULL, "WOCO-RETENTION-1");
    schakel_signal_t from_politie = ondermijning(NULL, "BVH-RETENTION-1");
    uint32_t recipients = 0, politie_recipients = 0;
    h_publish_ok(woco, &from_woco, NULL, NULL, &recipients, NULL);
    assert_true(recipients >= 3);
    h_publish_ok(politie, &from_politie, NULL, NULL, &politie_recipients, NULL);
    schakel_close(&woco);
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0);

    static const struct {
        const char *sql;
        int64_t want;
    } rows[] = {
        {"SELECT count(*) FROM items", 2},
        {"SELECT count(*) FROM publishes AS p WHERE p.expires_at !="
         " (SELECT max(i.expires_at) FROM items AS i WHERE i.publish_id = p.id)",
         0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int64_t got = h_store_int(env, rows[i].sql, NULL);
        if (got != rows[i].want)
            fail_msg("row %zu: %s gave %lld, want %lld", i, rows[i].sql, (long long)got,
                     (long long)rows[i].want);
    }
    /* Each delivery's retention is its rule's, in its mailbox row's rule
     * line; the rules differ, so a retention taken from the wrong one
     * shows: four retentions, and each item kept exactly as long as the
     * longest of its deliveries. */
    h_waiting_t waiting[16];
    size_t n = h_mailbox_waiting(env, NULL, waiting, 16);
    assert_int_equal(n, recipients + politie_recipients);
    size_t distinct = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < i && waiting[j].expires_at != waiting[i].expires_at)
            j++;
        distinct += j == i;
    }
    assert_int_equal(distinct, 4);
    size_t items_seen = 0;
    for (size_t i = 0; i < n; i++) {
        size_t first = 0;
        while (waiting[first].item_seq != waiting[i].item_seq)
            first++;
        if (first != i)
            continue; /* its item is checked already */
        items_seen++;
        int64_t longest = 0;
        for (size_t j = i; j < n; j++)
            if (waiting[j].item_seq == waiting[i].item_seq && waiting[j].expires_at > longest)
                longest = waiting[j].expires_at;
        char item[24];
        snprintf(item, sizeof item, "%lld", (long long)waiting[i].item_seq);
        assert_int_equal(h_store_int(env, "SELECT expires_at FROM items WHERE seq = ?1", item),
                         longest);
    }
    assert_int_equal(items_seen, 2);
    assert_int_equal(h_store_int(env,
                                 "SELECT (i.expires_at - p.accepted_at) / 86400 FROM items AS i"
                                 " JOIN publishes AS p ON p.id = i.publish_id WHERE p.sender = ?1",
                                 H_WOCO_MAASOEVER),
                     730);
    assert_int_equal(h_store_int(env,
                                 "SELECT (i.expires_at - p.accepted_at) / 86400 FROM items AS i"
                                 " JOIN publishes AS p ON p.id = i.publish_id WHERE p.sender = ?1",
                                 H_POLITIE),
                     1825);
    h_done(env);
}

/* ------------------------------------------------------------------ a tail rewritten outside */

/* The documented encoding (OPERATIONS "The encodings, for an independent
 * verifier"), written again here from the document: what someone holding
 * the file without the broker key can compute. */
static void be_update(crypto_generichash_state *h, uint64_t value, int bytes)
{
    uint8_t be[8];
    for (int i = 0; i < bytes; i++)
        be[i] = (uint8_t)(value >> (8 * (bytes - 1 - i)));
    crypto_generichash_update(h, be, (size_t)bytes);
}

#define ENTRY_COLUMNS                                                                              \
    "seq, at, event, actor, peer, curve_key, recipient, recipient_partner, message_id,"            \
    " item_index, item_seq, delivery_seq, kind, theme, subject_tag, rule_id, rule_hash, purpose,"  \
    " legal_basis, fields, expires_at, reason, detail, delivery_seqs, deliveries"

static void entry_hash(sqlite3_stmt *row, const uint8_t prev[32], uint8_t hash[32])
{
    static const char domain[] = "schakel-audit-v1";
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, 32);
    crypto_generichash_update(&h, (const uint8_t *)domain, sizeof domain - 1);
    crypto_generichash_update(&h, prev, 32);
    be_update(&h, (uint64_t)sqlite3_column_int64(row, 0), 8);
    be_update(&h, (uint64_t)sqlite3_column_int64(row, 1), 8);
    for (int field = 0; field < 23; field++) {
        int col = 2 + field, type = sqlite3_column_type(row, col);
        uint8_t tag = 0x00;
        if (type == SQLITE_NULL) {
            if (field < 21) /* a late field is left out when absent */
                crypto_generichash_update(&h, &tag, 1);
            continue;
        }
        if (field >= 21) {
            const uint8_t late[2] = {0x03, (uint8_t)field};
            crypto_generichash_update(&h, late, 2);
        }
        if (type == SQLITE_INTEGER) {
            tag = 0x02;
            crypto_generichash_update(&h, &tag, 1);
            be_update(&h, (uint64_t)sqlite3_column_int64(row, col), 8);
        } else {
            const uint8_t *text = sqlite3_column_text(row, col);
            size_t len = (size_t)sqlite3_column_bytes(row, col);
            tag = 0x01;
            crypto_generichash_update(&h, &tag, 1);
            be_update(&h, len, 4);
            crypto_generichash_update(&h, text, len);
        }
    }
    crypto_generichash_final(&h, hash, 32);
}

/* Entries from..the end given hashes that chain, as the broker's own do. */
static void rechain_from(sqlite3 *db, int64_t from)
{
    uint8_t prev[32] = {0}, hash[32];
    sqlite3_stmt *read = NULL, *write = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT hash FROM audit WHERE seq = ?1", -1, &read, NULL),
        SQLITE_OK);
    sqlite3_bind_int64(read, 1, from - 1);
    if (sqlite3_step(read) == SQLITE_ROW)
        memcpy(prev, sqlite3_column_blob(read, 0), 32);
    sqlite3_finalize(read);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT " ENTRY_COLUMNS " FROM audit WHERE seq >= ?1"
                                        " ORDER BY seq",
                                        -1, &read, NULL),
                     SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(db, "UPDATE audit SET hash = ?1 WHERE seq = ?2", -1, &write, NULL),
        SQLITE_OK);
    sqlite3_bind_int64(read, 1, from);
    db_exec(db, "BEGIN");
    while (sqlite3_step(read) == SQLITE_ROW) {
        entry_hash(read, prev, hash);
        sqlite3_bind_blob(write, 1, hash, 32, SQLITE_TRANSIENT);
        sqlite3_bind_int64(write, 2, sqlite3_column_int64(read, 0));
        assert_int_equal(sqlite3_step(write), SQLITE_DONE);
        sqlite3_reset(write);
        memcpy(prev, hash, 32);
    }
    sqlite3_finalize(read);
    sqlite3_finalize(write);
    db_exec(db, "COMMIT");
}

/* The value of key=VALUE (after needle) in the first log line after offset
 * that holds needle. */
static void log_value(const h_env_t *env, long offset, const char *needle, const char *key,
                      char *out, size_t outlen)
{
    FILE *log = h_log_open_at(env, offset);
    char *line = NULL;
    size_t cap = 0;
    const char *at = NULL;
    while (at == NULL && log != NULL && getline(&line, &cap, log) > 0)
        at = strstr(line, needle);
    if (log != NULL)
        fclose(log);
    if (at == NULL)
        fail_msg("no log line with %s", needle);
    const char *value = strstr(at, key);
    if (value == NULL)
        fail_msg("the line with %s has no %s", needle, key);
    value += strlen(key);
    size_t len = strcspn(value, " \n");
    snprintf(out, outlen, "%.*s", (int)(len < outlen ? len : outlen - 1), value);
    free(line);
}

/* The text of the deliveries column of entry seq (the caller frees it);
 * its detail column must be empty. */
static char *entry_deliveries(const h_env_t *env, int64_t seq)
{
    sqlite3 *db = db_open(env->store_path, 0);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT deliveries, detail FROM audit WHERE seq = ?1",
                                        -1, &stmt, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(stmt, 1, seq);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    assert_int_equal(sqlite3_column_type(stmt, 1), SQLITE_NULL);
    char *text = strdup((const char *)sqlite3_column_text(stmt, 0));
    assert_non_null(text);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return text;
}

/* Someone holding the file changes a recipient in delivery.queued entry
 * queued and recomputes the chain from it (no checkpoint covers it yet,
 * so verify alone calls the trail intact). */
static void rewrite_queued_entry(const h_env_t *env, int64_t queued)
{
    sqlite3 *db = db_open(env->store_path, 1);
    db_exec(db, "DROP TRIGGER IF EXISTS audit_append_only_update");
    char sql[256];
    snprintf(sql, sizeof sql,
             "UPDATE audit SET deliveries = replace(deliveries, ' om/parket', ' om/elders')"
             " WHERE seq = %lld",
             (long long)queued);
    db_exec(db, sql);
    rechain_from(db, queued);
    sqlite3_close(db);
}

/* Entry queued put back as the broker wrote it (its deliveries column),
 * the chain recomputed from it. */
static void put_back_queued_entry(const h_env_t *env, int64_t queued, const char *deliveries)
{
    sqlite3 *db = db_open(env->store_path, 1);
    sqlite3_stmt *put_back = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "UPDATE audit SET deliveries = ?1 WHERE seq = ?2", -1,
                                        &put_back, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(put_back, 1, deliveries, -1, SQLITE_STATIC);
    sqlite3_bind_int64(put_back, 2, queued);
    assert_int_equal(sqlite3_step(put_back), SQLITE_DONE);
    sqlite3_finalize(put_back);
    rechain_from(db, queued);
    sqlite3_close(db);
}

/* What rewrite_tail_while_running did and found. */
typedef struct rewritten {
    char expect[128];    /* the anchor audit.tail_mismatch named */
    char mark[256];      /* STORE.audit-mismatch */
    int64_t tail;        /* the trail's last seq */
    int64_t queued;      /* the delivery.queued entry rewritten */
    int64_t checkpoints; /* how many checkpoints the store had */
    char *deliveries;    /* that entry's deliveries as the broker wrote them (to free) */
    uint8_t id[16];      /* the message id of the publish refused (BVH-AUDIT-32) */
} rewritten_t;

/* With the broker running: one publish, then someone holding the file
 * rewrites the trail's last entries (a recipient changed, the chain
 * recomputed: no checkpoint covers them yet, so verify alone calls the
 * trail intact). The next publish is refused with nothing stored, the log
 * says audit.tail_mismatch once with both seqs, the anchor and the mark it
 * wrote beside the store (no store.write_failed besides); the broker is
 * stopped, and its stop signs no checkpoint. */
static void rewrite_tail_while_running(h_env_t *env, rewritten_t *w)
{
    h_cli_result_t res = {0};
    char stored[24], committed[24];
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s2 = ondermijning(SUBJECT_A, "BVH-AUDIT-31");
    h_publish_ok(politie, &s2, NULL, NULL, NULL, NULL);
    int64_t checkpoints = w->checkpoints =
        h_store_int(env, "SELECT count(*) FROM audit_checkpoints", NULL);
    int64_t last_checkpoint = h_store_int(env, "SELECT max(seq) FROM audit_checkpoints", NULL);
    int64_t queued = w->queued =
        h_store_int(env, "SELECT max(seq) FROM audit WHERE event = 'delivery.queued'", NULL);
    int64_t tail = w->tail = h_store_int(env, "SELECT max(seq) FROM audit", NULL);
    assert_true(queued > last_checkpoint);
    w->deliveries = entry_deliveries(env, queued);
    char *mark = w->mark, *expect = w->expect;
    snprintf(w->mark, sizeof w->mark, "%s.audit-mismatch", env->store_path);
    assert_int_equal(access(mark, F_OK), -1);

    /* the periodic checkpoint may meet the rewrite before the publish */
    long offset = h_log_offset(env);
    rewrite_queued_entry(env, queued);
    if (ctl_run(env, &res, "audit", "verify", "--store", env->store_path, "--broker-key",
                env->broker_pub, NULL) != 0)
        fail_msg("verify of the re-chained tail: %d\n%s%s", res.status, res.out, res.err);
    h_cli_result_free(&res);

    uint8_t *id = w->id;
    randombytes_buf(w->id, sizeof w->id);
    schakel_signal_t s3 = ondermijning(SUBJECT_A, "BVH-AUDIT-32");
    assert_int_equal(schakel_publish(politie, NULL, &s3, 1, id, NULL, NULL, NULL, H_TIMEOUT_MS),
                     SCHAKEL_ERR_REFUSED);
    if (h_await_log(env, offset, "event=audit.tail_mismatch", H_TIMEOUT_MS) != 0)
        fail_msg("no audit.tail_mismatch in the log");
    log_value(env, offset, "event=audit.tail_mismatch", "stored_seq=", stored, sizeof stored);
    log_value(env, offset, "event=audit.tail_mismatch", "committed_seq=", committed,
              sizeof committed);
    log_value(env, offset, "event=audit.tail_mismatch", "expect=", expect, sizeof w->expect);
    assert_int_equal(strtoll(stored, NULL, 10), tail);
    assert_int_equal(strtoll(committed, NULL, 10), tail);
    char mark_logged[256];
    log_value(env, offset, "event=audit.tail_mismatch", "mark=", mark_logged, sizeof mark_logged);
    assert_string_equal(mark_logged, mark);
    assert_int_equal(h_store_int(env, "SELECT count(*) FROM publishes", NULL), 2);
    assert_int_equal(h_store_int(env, "SELECT max(seq) FROM audit", NULL), tail);
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0); /* its broker.stopped and checkpoint: refused */
    /* said once, within the minute; the refused publish said nothing else */
    assert_int_equal(h_log_count(env, offset, "event=audit.tail_mismatch"), 1);
    assert_int_equal(h_log_count(env, offset, "event=store.write_failed"), 0);
    assert_int_equal(h_store_int(env, "SELECT count(*) FROM audit_checkpoints", NULL), checkpoints);
    assert_int_equal(h_store_int(env, "SELECT max(seq) FROM audit", NULL), tail);
}

/* The review's sequence: the trail's tail rewritten while the broker runs
 * (rewrite_tail_while_running). The broker chains and signs nothing onto
 * that tail, and verify with the anchor names the rewrite. The mark keeps
 * a start (whose own check the re-chained tail passes) and --rekey from
 * chaining or signing onto it; once the tail is the broker's own again,
 * verify with the anchor says so, the mark is removed, and the broker
 * starts. A tail that does not chain keeps the broker from starting. */
static void test_a_tail_rewritten_outside_the_broker(void **state)
{
    h_env_t *env = *state;
    h_cli_result_t res = {0};
    char needle[96];
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s1 = ondermijning(SUBJECT_A, "BVH-AUDIT-30");
    h_publish_ok(politie, &s1, NULL, NULL, NULL, NULL);
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0);
    h_broker_start(env); /* an honest restart: its tail chains */

    rewritten_t w;
    rewrite_tail_while_running(env, &w);
    const char *expect = w.expect, *mark = w.mark;
    int64_t tail = w.tail, queued = w.queued, checkpoints = w.checkpoints;
    char *deliveries = w.deliveries;
    uint8_t *id = w.id;
    schakel_signal_t s3 = ondermijning(SUBJECT_A, "BVH-AUDIT-32");
    char sql[256];
    sqlite3 *db = NULL;
    long offset;
    int status = ctl_run(env, &res, "audit", "verify", "--store", env->store_path, "--broker-key",
                         env->broker_pub, "--expect", expect, NULL);
    snprintf(needle, sizeof needle, "entry %lld does not have the anchor's hash", (long long)tail);
    if (status != CTL_EXIT_BROKEN || strstr(res.out, needle) == NULL)
        fail_msg("verify --expect %s: %d\n%s%s", expect, status, res.out, res.err);
    h_cli_result_free(&res);

    /* The mark: owner-only, with the anchor. The re-chained tail passes
     * the start's own check, so only the mark stops the start (and
     * --rekey), each naming it, the command and what to do (--restored
     * goes: test_a_marked_store_restored_from_a_backup). */
    struct stat st;
    assert_int_equal(stat(mark, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_uid, geteuid());
    char *mark_text = slurp(mark), line[160], command[512];
    snprintf(line, sizeof line, "\nexpect=%s\n", expect);
    assert_non_null(strstr(mark_text, line));
    free(mark_text);
    snprintf(command, sizeof command, "run schakelctl audit verify --store %s --expect %s",
             env->store_path, expect);
    char problem[2048];
    offset = h_log_offset(env);
    if (h_broker_try_start_at(env, "tcp://127.0.0.1:*", problem, sizeof problem) == 0)
        fail_msg("the broker started on a store marked audit-mismatch");
    assert_int_equal(h_log_count(env, offset, "event=audit.tail_mismatch_marked"), 1);
    assert_true(h_log_count(env, offset, command) >= 1);
    assert_true(h_log_count(env, offset, "remove ") >= 1);
    assert_int_equal(h_store_int(env, "SELECT count(*) FROM audit_checkpoints", NULL), checkpoints);
    assert_int_equal(h_store_int(env, "SELECT max(seq) FROM audit", NULL), tail);
    char backup[192], fresh[192];
    snprintf(fresh, sizeof fresh, "%s/keys/store-2.key", env->dir);
    assert_int_equal(h_run_schakeld(&res, "--init", "--store-key", fresh, NULL), 0);
    h_cli_result_free(&res);
    status = h_run_schakeld(&res, "--config", env->config_path, "--rekey", "--new-store-key", fresh,
                            NULL);
    if (status != 1 || strstr(res.err, mark) == NULL || strstr(res.err, command) == NULL ||
        strstr(res.err, "the store is unchanged") == NULL)
        fail_msg("--rekey of a marked store: exit %d, stderr \"%s\"", status, res.err);
    h_cli_result_free(&res);
    /* the store named through a symbolic link has the same mark */
    char alias[192];
    snprintf(alias, sizeof alias, "%s/alias.db", env->dir);
    assert_int_equal(symlink(env->store_path, alias), 0);
    status = h_run_schakeld(&res, "--config", env->config_path, "--store", alias, "--rekey",
                            "--new-store-key", fresh, NULL);
    if (status != 1 || strstr(res.err, mark) == NULL || strstr(res.err, "ends there") == NULL)
        fail_msg("--rekey of a marked store through a link: exit %d, stderr \"%s\"", status,
                 res.err);
    h_cli_result_free(&res);
    assert_int_equal(unlink(alias), 0);
    assert_int_equal(h_store_int(env, "SELECT count(*) FROM audit_checkpoints", NULL), checkpoints);
    assert_int_equal(h_store_int(env, "SELECT max(seq) FROM audit", NULL), tail);

    /* The rewrite undone: verify with the anchor says the trail is the
     * broker's own; the mark may go. */
    put_back_queued_entry(env, queued, deliveries);
    if (ctl_run(env, &res, "audit", "verify", "--store", env->store_path, "--broker-key",
                env->broker_pub, "--expect", expect, NULL) != 0)
        fail_msg("verify --expect %s of the trail put back: %d\n%s%s", expect, res.status, res.out,
                 res.err);
    h_cli_result_free(&res);
    assert_int_equal(unlink(mark), 0);

    /* A tail that does not chain: no start. */
    db = db_open(env->store_path, 1);
    snprintf(sql, sizeof sql, "UPDATE audit SET detail = 'forged' WHERE seq = %lld",
             (long long)queued);
    db_exec(db, sql);
    sqlite3_close(db);
    offset = h_log_offset(env);
    if (h_broker_try_start_at(env, "tcp://127.0.0.1:*", problem, sizeof problem) == 0)
        fail_msg("the broker started on a tail that does not chain");
    snprintf(needle, sizeof needle, "entry %lld does not chain", (long long)queued);
    assert_true(h_log_count(env, offset, needle) >= 1);
    assert_true(h_log_count(env, offset, "run schakelctl audit verify --store") >= 1);

    /* Nor does --rekey or --restored (of a copy as backup) chain or sign
     * anything onto it. */
    snprintf(backup, sizeof backup, "%s/backup-unchained.db", env->dir);
    h_copy_file(env->store_path, backup);
    status = h_run_schakeld(&res, "--config", env->config_path, "--rekey", "--new-store-key", fresh,
                            NULL);
    if (status != 1 || strstr(res.err, needle) == NULL ||
        strstr(res.err, "the store is unchanged") == NULL ||
        strstr(res.err, "schakelctl audit verify --store") == NULL)
        fail_msg("--rekey of a tail that does not chain: exit %d, stderr \"%s\"", status, res.err);
    h_cli_result_free(&res);
    status = h_run_schakeld(&res, "--restored", backup, "--config", env->config_path, NULL);
    if (status != 1 || strstr(res.err, needle) == NULL ||
        strstr(res.err, "the store is unchanged") == NULL)
        fail_msg("--restored of a tail that does not chain: exit %d, stderr \"%s\"", status,
                 res.err);
    h_cli_result_free(&res);
    assert_int_equal(h_store_int(env, "SELECT max(seq) FROM audit", NULL), tail);
    assert_int_equal(h_store_int(env, "SELECT count(*) FROM audit_checkpoints", NULL), checkpoints);

    /* Put back as the broker wrote it, and without the mark: it starts
     * and records again. */
    db = db_open(env->store_path, 1);
    snprintf(sql, sizeof sql, "UPDATE audit SET detail = NULL WHERE seq = %lld", (long long)queued);
    db_exec(db, sql);
    sqlite3_close(db);
    h_broker_start(env);
    politie = h_connect(env, H_POLITIE);
    h_publish_ok(politie, &s3, id, NULL, NULL, NULL);
    schakel_close(&politie);
    assert_true(h_store_int(env, "SELECT max(seq) FROM audit", NULL) > tail);
    free(deliveries);
    h_done(env);
}

/* The rewrite undone while the broker still runs (review: it then chained
 * and signed again, and its own mark stood against those entries): the
 * broker goes on refusing everything that needs an entry until it is
 * restarted; verify with the anchor then finds the trail intact and
 * ending at the anchor, the mark goes, and the broker starts and records. */
static void test_a_tail_put_back_while_the_broker_runs(void **state)
{
    h_env_t *env = *state;
    h_cli_result_t res = {0};
    char expect[128];
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s1 = ondermijning(SUBJECT_A, "BVH-AUDIT-40");
    h_publish_ok(politie, &s1, NULL, NULL, NULL, NULL);
    int64_t queued =
        h_store_int(env, "SELECT max(seq) FROM audit WHERE event = 'delivery.queued'", NULL);
    int64_t tail = h_store_int(env, "SELECT max(seq) FROM audit", NULL);
    int64_t checkpoints = h_store_int(env, "SELECT count(*) FROM audit_checkpoints", NULL);
    char *deliveries = entry_deliveries(env, queued);
    char mark[256];
    snprintf(mark, sizeof mark, "%s.audit-mismatch", env->store_path);

    long offset = h_log_offset(env);
    rewrite_queued_entry(env, queued);
    uint8_t id[16];
    randombytes_buf(id, sizeof id);
    schakel_signal_t s2 = ondermijning(SUBJECT_A, "BVH-AUDIT-41");
    assert_int_equal(schakel_publish(politie, NULL, &s2, 1, id, NULL, NULL, NULL, H_TIMEOUT_MS),
                     SCHAKEL_ERR_REFUSED);
    if (h_await_log(env, offset, "event=audit.tail_mismatch", H_TIMEOUT_MS) != 0)
        fail_msg("no audit.tail_mismatch in the log");
    log_value(env, offset, "event=audit.tail_mismatch", "expect=", expect, sizeof expect);
    assert_int_equal(access(mark, F_OK), 0);

    /* put back as the broker wrote it */
    put_back_queued_entry(env, queued, deliveries);

    /* still refused, nothing appended or signed */
    assert_int_equal(schakel_publish(politie, NULL, &s2, 1, id, NULL, NULL, NULL, H_TIMEOUT_MS),
                     SCHAKEL_ERR_REFUSED);
    schakel_signal_t s3 = ondermijning(SUBJECT_A, "BVH-AUDIT-42");
    assert_int_equal(schakel_publish(politie, NULL, &s3, 1, NULL, NULL, NULL, NULL, H_TIMEOUT_MS),
                     SCHAKEL_ERR_REFUSED);
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0);
    assert_int_equal(h_store_int(env, "SELECT max(seq) FROM audit", NULL), tail);
    assert_int_equal(h_store_int(env, "SELECT count(*) FROM audit_checkpoints", NULL), checkpoints);
    assert_int_equal(h_store_int(env, "SELECT count(*) FROM publishes", NULL), 1);

    /* verify with the anchor: intact, ending at it; the mark may go */
    if (ctl_run(env, &res, "audit", "verify", "--store", env->store_path, "--broker-key",
                env->broker_pub, "--expect", expect, NULL) != 0)
        fail_msg("verify --expect %s of the trail put back: %d\n%s%s", expect, res.status, res.out,
                 res.err);
    char count[48];
    snprintf(count, sizeof count, "%lld entries", (long long)tail);
    if (strstr(res.out, count) == NULL)
        fail_msg("verify does not count %s:\n%s", count, res.out);
    h_cli_result_free(&res);
    assert_int_equal(unlink(mark), 0);
    h_broker_start(env);
    politie = h_connect(env, H_POLITIE);
    h_publish_ok(politie, &s2, id, NULL, NULL, NULL);
    schakel_close(&politie);
    assert_true(h_store_int(env, "SELECT max(seq) FROM audit", NULL) > tail);
    free(deliveries);
    h_done(env);
}

/* The bytes of text written to path anew (mode 0600). */
static void write_text(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(close(fd), 0);
}

/* How many names in env's folder begin with the store file's name and
 * then suffix. */
static int names_beside_store(const h_env_t *env, const char *suffix)
{
    char prefix[256];
    const char *base = strrchr(env->store_path, '/');
    snprintf(prefix, sizeof prefix, "%s%s", base != NULL ? base + 1 : env->store_path, suffix);
    DIR *d = opendir(env->dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

/* The remedy for a rewritten trail: the last backup that verifies put in
 * place with --restored, which goes although the store is marked (the
 * marked store is the kept one, the evidence). Its store.restored entry
 * records the mark's anchor (the broker's own last entry) and what it
 * found, the mark goes with the kept store (KEPT.audit-mismatch, the same
 * bytes; none left beside the restored store), and the broker starts on
 * the restored store while the kept one stays marked. A mark that cannot
 * be read refuses the restore with nothing changed. */
static void test_a_marked_store_restored_from_a_backup(void **state)
{
    h_env_t *env = *state;
    h_cli_result_t res = {0};
    char backup[192];
    snprintf(backup, sizeof backup, "%s/backup-before.db", env->dir);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s1 = ondermijning(SUBJECT_A, "BVH-AUDIT-40");
    h_publish_ok(politie, &s1, NULL, NULL, NULL, NULL);
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0);
    h_copy_file(env->store_path, backup); /* the broker stopped: a whole store */
    h_broker_start(env);

    rewritten_t w;
    rewrite_tail_while_running(env, &w);
    free(w.deliveries);
    char *mark_text = slurp(w.mark), found[128];
    const char *at = strstr(mark_text, "\nfound=");
    assert_non_null(at);
    at += strlen("\nfound=");
    snprintf(found, sizeof found, "%.*s", (int)strcspn(at, "\n"), at);
    struct stat st, mark_st;
    assert_int_equal(stat(env->store_path, &st), 0);
    assert_int_equal(stat(w.mark, &mark_st), 0);

    /* a mark that cannot be read: refused, nothing changed */
    char cut[256];
    snprintf(cut, sizeof cut, "# cut short\nexpect=%s\n", w.expect);
    write_text(w.mark, cut);
    int status = h_run_schakeld(&res, "--restored", backup, "--config", env->config_path, NULL);
    if (status != 1 || strstr(res.err, w.mark) == NULL ||
        strstr(res.err, "cannot be read (it holds no expect=SEQ:HASH and found=SEQ:HASH") == NULL ||
        strstr(res.err, "nothing was changed") == NULL)
        fail_msg("--restored with a mark cut short: exit %d, stderr \"%s\"", status, res.err);
    h_cli_result_free(&res);
    struct stat now;
    assert_int_equal(stat(env->store_path, &now), 0);
    assert_int_equal(now.st_ino, st.st_ino);
    assert_int_equal(names_beside_store(env, ".replaced-"), 0);
    assert_int_equal(names_beside_store(env, ".restoring"), 0);
    assert_int_equal(h_store_int(env, "SELECT max(seq) FROM audit", NULL), w.tail);
    write_text(w.mark, mark_text);
    assert_int_equal(stat(w.mark, &mark_st), 0);

    /* the backup restored over the marked store */
    status = h_run_schakeld(&res, "--restored", backup, "--config", env->config_path, NULL);
    const char *kept_at = strstr(res.out, "the replaced store is kept as ");
    if (status != 0 || kept_at == NULL)
        fail_msg("--restored over a marked store: exit %d, stdout \"%s\", stderr \"%s\"", status,
                 res.out, res.err);
    kept_at += strlen("the replaced store is kept as ");
    char kept[256], kept_mark[300], says[1536];
    snprintf(kept, sizeof kept, "%.*s", (int)strcspn(kept_at, " "), kept_at);
    snprintf(kept_mark, sizeof kept_mark, "%s.audit-mismatch", kept);
    snprintf(says, sizeof says,
             "its mark %s is kept with it as %s: a running broker found its audit trail's last "
             "entries written outside it (audit.tail_mismatch); the store.restored entry records "
             "the broker's own last entry %s and what it found instead, %s",
             w.mark, kept_mark, w.expect, found);
    if (strstr(res.out, says) == NULL)
        fail_msg("--restored does not say where the mark went (%s): \"%s\"", says, res.out);
    h_cli_result_free(&res);
    /* the mark beside the kept store (the same file), none beside the
     * restored one; the kept store is the one marked (its own inode) */
    struct stat kept_st, kept_mark_st;
    assert_int_equal(access(w.mark, F_OK), -1);
    assert_int_equal(stat(kept, &kept_st), 0);
    assert_int_equal(kept_st.st_ino, st.st_ino);
    assert_int_equal(stat(kept_mark, &kept_mark_st), 0);
    assert_int_equal(kept_mark_st.st_ino, mark_st.st_ino);
    assert_int_equal(kept_mark_st.st_nlink, 1);
    char *kept_text = slurp(kept_mark);
    assert_string_equal(kept_text, mark_text);
    free(kept_text);
    char names[512];
    snprintf(names, sizeof names, "replaced_mark_expect=%s replaced_mark_found=%s", w.expect,
             found);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'store.restored'"
                                 " AND instr(detail, ?1) > 0",
                                 names),
                     1);
    /* the kept store stays marked: no --rekey of it */
    char fresh[192];
    snprintf(fresh, sizeof fresh, "%s/keys/store-3.key", env->dir);
    assert_int_equal(h_run_schakeld(&res, "--init", "--store-key", fresh, NULL), 0);
    h_cli_result_free(&res);
    status = h_run_schakeld(&res, "--config", env->config_path, "--store", kept, "--rekey",
                            "--new-store-key", fresh, NULL);
    if (status != 1 || strstr(res.err, kept_mark) == NULL)
        fail_msg("--rekey of the kept store: exit %d, stderr \"%s\"", status, res.err);
    h_cli_result_free(&res);

    /* the restored store starts and records */
    h_broker_start(env);
    politie = h_connect(env, H_POLITIE);
    schakel_signal_t s2 = ondermijning(SUBJECT_A, "BVH-AUDIT-41");
    h_publish_ok(politie, &s2, NULL, NULL, NULL, NULL);
    schakel_close(&politie);
    free(mark_text);
    h_done(env);
}

/* The rotation of the broker key as docs/OPERATIONS.md ("Rotating the
 * broker key") tells it: a new pair from `schakel keygen`, the broker
 * stopped and started with it (audit.checkpoint_other_key once, naming
 * both keys); a client pinning the old key exits 4 naming a wrong broker
 * key, one pinning the new one connects; the trail verifies with both
 * keys oldest first, and not with the new alone or newest first. */
static void test_broker_key_rotation_as_documented(void **state)
{
    h_env_t *env = *state;
    char base[192], new_key[200], new_pub[200], old_pub[192], config_key[192];
    snprintf(base, sizeof base, "%s/keys/broker-2", env->dir);
    snprintf(new_key, sizeof new_key, "%s.key", base);
    snprintf(new_pub, sizeof new_pub, "%s.pub", base);
    snprintf(old_pub, sizeof old_pub, "%s/keys/broker-1.pub", env->dir);
    snprintf(config_key, sizeof config_key, "%s/keys/broker.key", env->dir);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = h_police_signal("BVH-BEFORE-ROTATION");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    schakel_close(&politie);

    h_cli_result_t res;
    if (h_run_cli(env, NULL, &res, "keygen", base, NULL) != 0)
        fail_msg("schakel keygen: exit %d: %s", res.status, res.err);
    h_cli_result_free(&res);
    assert_int_equal(h_broker_stop(env), 0);
    h_copy_file(env->broker_pub, old_pub);
    h_copy_file(new_key, config_key); /* as pointing key_file at it */
    long offset = h_log_offset(env);
    h_broker_start(env);
    assert_int_equal(h_await_log(env, offset, "event=audit.checkpoint_other_key ", H_TIMEOUT_MS),
                     0);
    assert_int_equal(h_log_count(env, offset, "event=audit.checkpoint_other_key "), 1);

    /* a client still pinning the old key */
    if (h_run_cli(env, H_POLITIE, &res, "whoami", "--connect-timeout", "1", NULL) != 4 ||
        strstr(res.err, "could not complete a CURVE handshake") == NULL ||
        strstr(res.err, "wrong broker key") == NULL)
        fail_msg("whoami pinning the old broker key: exit %d: %s", res.status, res.err);
    h_cli_result_free(&res);
    h_copy_file(new_pub, env->broker_pub); /* the partner pins the new one */
    politie = h_connect(env, H_POLITIE);
    s = h_police_signal("BVH-AFTER-ROTATION");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0); /* a checkpoint under the new key */

    const struct {
        const char *first, *second;
        int status;
    } rows[] = {
        {old_pub, new_pub, 0},
        {new_pub, NULL, 3},
        {new_pub, old_pub, 3},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int status = ctl_run(env, &res, "audit", "verify", "--store", env->store_path,
                             "--broker-key", rows[i].first,
                             rows[i].second != NULL ? "--broker-key" : NULL, rows[i].second, NULL);
        if (status != rows[i].status)
            fail_msg("verify with keys %zu: exit %d, want %d: %s%s", i, status, rows[i].status,
                     res.out, res.err);
        h_cli_result_free(&res);
    }
    h_done(env);
}

int main(void)
{
    if (access(ctl_path(), X_OK) != 0) {
        fprintf(stderr, "test_audit: %s is not there; build it first (make all)\n", ctl_path());
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_trail_of_a_broker_verifies_and_exports, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_verify_names_the_entry_changed_in_a_copy,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_refused_requests_are_summed_up, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_refused_handshakes_are_summed_up, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_actions_fail_closed_without_their_entries,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_partner_refusals_carried_until_recorded,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_handshake_refusals_carried_until_recorded,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_reload_refusal_carried_until_recorded, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_a_stray_index_row_blocks_its_ack_visibly,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_a_tail_rewritten_outside_the_broker, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_a_marked_store_restored_from_a_backup, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_items_kept_as_long_as_their_longest_delivery,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_broker_key_rotation_as_documented, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_a_tail_put_back_while_the_broker_runs, h_setup_broker,
                                        h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
