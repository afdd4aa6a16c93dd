/*
 * test_backup.c — the backup of docs/OPERATIONS.md ("Backups"), read from
 * the document and run through /bin/sh as written, while a partner
 * publishes at a steady rate into a store of some tens of MiB: it finishes
 * within a bound (a copy made in steps that each commit can start over
 * never would), the file is mode 0600 under the usual umask 022, and the
 * copy restores with `schakeld --restored` ("Restoring a backup") holding
 * every publish accepted before the backup began and none sent after it
 * ended.
 *
 * The publisher is a thread with a client of its own; it never calls
 * cmocka (its failures would jump out of the wrong thread): it records
 * what it saw and the main thread checks it once the thread is joined.
 * Every loop is bounded in count and time; the main thread waits on a
 * condition variable with a deadline, never on a sleep.
 */
/* pthread_condattr_setclock, glob */
#define _GNU_SOURCE

#include "harness.h"

#include <errno.h>
#include <glob.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

/* The store the backup copies: FILL_PUBLISHES publishes of FILL_ITEMS
 * items with a summary of FILL_SUMMARY bytes each, some 30 MiB with what
 * the broker keeps beside them. */
#define FILL_PUBLISHES 150
#define FILL_ITEMS 100
#define FILL_SUMMARY 1990
#define FILL_IN_FLIGHT 16

/* The steady traffic: a publish every TICK_MS, at most TICK_MAX of them,
 * for at most TICK_DEADLINE_MS; the backup starts once TICK_BEFORE were
 * accepted. */
#define TICK_MS 5
#define TICK_MAX 20000
#define TICK_DEADLINE_MS 120000
#define TICK_BEFORE 20
#define TICK_ATTEMPTS 5 /* a publish answered UNAVAILABLE is sent again */

/* The bound on the backup itself (the copy of a few tens of MiB takes well
 * under a second; a copy that starts over with each commit never ends). */
#define BACKUP_BOUND_MS 15000

static int64_t backup_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A file's size, 0 if it does not exist. */
static long long backup_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : 0;
}

/* ------------------------------------------------------------------ the publisher */

typedef struct tick {
    uint8_t id[16];
    int64_t observed_at; /* of its signal, for a repeat of the same content */
    int64_t sent_ms;     /* when its first copy was sent */
    int64_t accepted_ms; /* when its Accepted arrived; 0: never */
} tick_t;

typedef struct ticker {
    h_env_t *env;
    schakel_client_t *client; /* the thread's own */
    tick_t *ticks;            /* TICK_MAX */
    size_t n_ticks;           /* sent; read by the main thread under lock */
    size_t accepted;          /* under lock */
    atomic_int stop;
    char problem[1024]; /* the first thing that went wrong ("" if nothing) */
    pthread_mutex_t lock;
    pthread_cond_t progress; /* signalled at every Accepted and at the end */
    int ended;               /* under lock */
} ticker_t;

static void ticker_problem(ticker_t *t, const char *what, const schakel_error_t *e)
{
    pthread_mutex_lock(&t->lock);
    if (t->problem[0] == '\0')
        snprintf(t->problem, sizeof t->problem, "publish %zu: %s: %s %s", t->n_ticks, what,
                 e != NULL ? e->reason_name : "", e != NULL ? e->text : "");
    pthread_mutex_unlock(&t->lock);
}

/* One publish, sent again under its id while the broker answers
 * UNAVAILABLE (at most TICK_ATTEMPTS copies). 0 when accepted. */
static int ticker_publish(ticker_t *t, tick_t *tick, const char *ref)
{
    schakel_signal_t s = h_police_signal(ref);
    s.observed_at = tick->observed_at;
    for (int attempt = 0; attempt < TICK_ATTEMPTS; attempt++) {
        schakel_item_result_t result;
        int duplicate = 0;
        schakel_status_t st = schakel_publish(t->client, NULL, &s, 1, tick->id, NULL, &result,
                                              &duplicate, H_TIMEOUT_MS);
        if (st == SCHAKEL_OK)
            return 0;
        const schakel_error_t *e = schakel_last_error(t->client);
        if (st != SCHAKEL_ERR_REFUSED || strcmp(e->reason_name, "UNAVAILABLE") != 0) {
            ticker_problem(t, schakel_strerror(st), e);
            return -1;
        }
    }
    ticker_problem(t, "answered UNAVAILABLE every time", NULL);
    return -1;
}

static void *ticker_run(void *arg)
{
    ticker_t *t = arg;
    int64_t deadline = backup_now_ms() + TICK_DEADLINE_MS * h_time_factor();
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (size_t i = 0; i < TICK_MAX && !atomic_load(&t->stop); i++) {
        if (backup_now_ms() > deadline) {
            ticker_problem(t, "still publishing at the deadline", NULL);
            break;
        }
        tick_t *tick = &t->ticks[i];
        char ref[40];
        snprintf(ref, sizeof ref, "BVH-TICK-%zu", i);
        randombytes_buf(tick->id, sizeof tick->id);
        tick->observed_at = (int64_t)time(NULL) - 7200;
        tick->sent_ms = backup_now_ms();
        pthread_mutex_lock(&t->lock);
        t->n_ticks = i + 1;
        pthread_mutex_unlock(&t->lock);
        if (ticker_publish(t, tick, ref) != 0)
            break;
        pthread_mutex_lock(&t->lock);
        tick->accepted_ms = backup_now_ms();
        t->accepted++;
        pthread_cond_signal(&t->progress);
        pthread_mutex_unlock(&t->lock);
        /* the rate: one publish per TICK_MS (a pace, not a wait for
         * anything; a late publish goes at once) */
        next.tv_nsec += TICK_MS * 1000000L;
        if (next.tv_nsec >= 1000000000L) {
            next.tv_sec++;
            next.tv_nsec -= 1000000000L;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
            ;
    }
    pthread_mutex_lock(&t->lock);
    t->ended = 1;
    pthread_cond_signal(&t->progress);
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

/* Wait (bounded) until the ticker has `count` publishes accepted, or has
 * ended. Returns how many it has. */
static size_t ticker_await(ticker_t *t, size_t count, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    pthread_mutex_lock(&t->lock);
    while (t->accepted < count && !t->ended)
        if (pthread_cond_timedwait(&t->progress, &t->lock, &until) == ETIMEDOUT)
            break;
    size_t accepted = t->accepted;
    pthread_mutex_unlock(&t->lock);
    return accepted;
}

static void ticker_start(ticker_t *t, pthread_t *thread)
{
    pthread_condattr_t attr;
    assert_int_equal(pthread_condattr_init(&attr), 0);
    assert_int_equal(pthread_condattr_setclock(&attr, CLOCK_MONOTONIC), 0);
    assert_int_equal(pthread_cond_init(&t->progress, &attr), 0);
    pthread_condattr_destroy(&attr);
    assert_int_equal(pthread_mutex_init(&t->lock, NULL), 0);
    t->ticks = calloc(TICK_MAX, sizeof *t->ticks);
    assert_non_null(t->ticks);
    t->client = h_connect(t->env, H_POLITIE);
    assert_int_equal(pthread_create(thread, NULL, ticker_run, t), 0);
}

static void ticker_stop(ticker_t *t, pthread_t thread)
{
    atomic_store(&t->stop, 1);
    assert_int_equal(pthread_join(thread, NULL), 0);
    schakel_close(&t->client);
    pthread_cond_destroy(&t->progress);
    pthread_mutex_destroy(&t->lock);
}

/* ------------------------------------------------------------------ the store */

/* FILL_PUBLISHES (fewer under a slow broker) publishes of FILL_ITEMS
 * signals with long summaries, FILL_IN_FLIGHT at a time. */
static void backup_fill_store(h_env_t *env)
{
    static char summary[FILL_SUMMARY + 1];
    static schakel_signal_t items[FILL_ITEMS];
    memset(summary, 'x', FILL_SUMMARY);
    for (size_t i = 0; i < FILL_ITEMS; i++) {
        items[i] = h_police_signal("BVH-FILL");
        items[i].summary = summary;
    }
    schakel_client_t *client = h_connect(env, H_POLITIE);
    size_t total = FILL_PUBLISHES / (size_t)h_time_factor(), sent = 0, answered = 0;
    while (answered < total) {
        while (sent < total && sent - answered < FILL_IN_FLIGHT) {
            schakel_status_t st = schakel_publish_send(client, NULL, items, FILL_ITEMS, NULL, NULL);
            if (st != SCHAKEL_OK)
                fail_msg("fill publish %zu: %s (%s)", sent, schakel_strerror(st),
                         schakel_last_error(client)->text);
            sent++;
        }
        static schakel_publish_answer_t answer;
        schakel_status_t st = schakel_publish_wait(client, NULL, &answer, H_TIMEOUT_MS);
        if (st != SCHAKEL_OK || answer.status != SCHAKEL_OK)
            fail_msg("fill publish %zu not accepted: %s %s %s", answered,
                     schakel_strerror(st != SCHAKEL_OK ? st : answer.status),
                     answer.error.reason_name, answer.error.text);
        answered++;
    }
    schakel_close(&client);
}

/* 1 if the store file holds the publish of politie with this id. */
static int backup_store_holds(const h_env_t *env, const uint8_t id[16])
{
    char hex[33];
    sodium_bin2hex(hex, sizeof hex, id, 16);
    for (char *c = hex; *c; c++)
        *c = (char)(*c >= 'a' ? *c - 'a' + 'A' : *c);
    return (int)h_store_int(env,
                            "SELECT count(*) FROM publishes WHERE sender = "
                            "'politie/bvh-koppeling' AND hex(message_id) = ?1",
                            hex);
}

/* ------------------------------------------------------------------ the test */

static void test_documented_backup_under_traffic(void **state)
{
    h_env_t *env = *state;
    char folder[192], command[2048], pattern[256];
    snprintf(folder, sizeof folder, "%s/backup", env->dir);
    assert_int_equal(mkdir(folder, 0700), 0);
    h_backup_command(env, folder, command, sizeof command);

    h_broker_start(env);
    backup_fill_store(env);
    long long stored = backup_file_size(env->store_path);
    char wal[192];
    snprintf(wal, sizeof wal, "%s-wal", env->store_path);
    stored += backup_file_size(wal);

    ticker_t t = {.env = env};
    pthread_t thread;
    ticker_start(&t, &thread);
    if (ticker_await(&t, TICK_BEFORE, H_TIMEOUT_MS) < TICK_BEFORE) {
        ticker_stop(&t, thread);
        fail_msg("the publisher did not get %d publishes accepted: %s", TICK_BEFORE, t.problem);
    }
    /* the backup, under the usual umask (the command must set its own) */
    mode_t umask_before = umask(022);
    int64_t began = backup_now_ms();
    h_cli_result_t res;
    int status = h_run_sh(command, &res);
    int64_t ended = backup_now_ms();
    umask(umask_before);
    /* a few more publishes after it, then the publisher stops */
    size_t accepted_by_end = ticker_await(&t, 0, 0);
    (void)ticker_await(&t, accepted_by_end + 5, H_TIMEOUT_MS);
    ticker_stop(&t, thread);
    fprintf(stderr,
            "test_backup: store %lld bytes (with its WAL); the backup took %lld ms; %zu "
            "publishes accepted, %zu by the time the backup ended\n",
            stored, (long long)(ended - began), t.accepted, accepted_by_end);
    if (status == -1)
        fail_msg("the backup command \"%s\" did not finish within %d ms under traffic, and was "
                 "killed",
                 command, h_cli_timeout_ms());
    if (status != 0 || res.err[0] != '\0')
        fail_msg("the backup command \"%s\" exited %d: %s%s", command, status, res.out, res.err);
    h_cli_result_free(&res);
    if (ended - began > BACKUP_BOUND_MS)
        fail_msg("the backup took %lld ms under traffic (bound %d ms)", (long long)(ended - began),
                 BACKUP_BOUND_MS);
    if (t.problem[0] != '\0')
        fail_msg("the publisher: %s", t.problem);

    /* one file, 0600 */
    snprintf(pattern, sizeof pattern, "%s/*", folder);
    glob_t found;
    if (glob(pattern, 0, NULL, &found) != 0 || found.gl_pathc != 1)
        fail_msg("the backup folder holds %zu files, want the backup alone", found.gl_pathc);
    char backup[256];
    snprintf(backup, sizeof backup, "%s", found.gl_pathv[0]);
    globfree(&found);
    struct stat st;
    assert_int_equal(stat(backup, &st), 0);
    if ((st.st_mode & 0777) != 0600)
        fail_msg("the backup %s has mode %03o under umask 022: want 0600", backup,
                 (unsigned)(st.st_mode & 0777));

    /* restored as documented, it holds what was accepted before the backup
     * began, and nothing sent after it ended */
    assert_int_equal(h_broker_stop(env), 0);
    status = h_run_schakeld(&res, "--restored", backup, "--config", env->config_path, NULL);
    /* a backup of this build's schema is not migrated, nor said to be */
    if (status != 0 || strstr(res.out, "restored") == NULL || strstr(res.out, "migrated") != NULL)
        fail_msg("--restored %s: exit %d: %s%s", backup, status, res.out, res.err);
    h_cli_result_free(&res);
    size_t before = 0, after = 0;
    for (size_t i = 0; i < t.n_ticks; i++) {
        const tick_t *tick = &t.ticks[i];
        int held = backup_store_holds(env, tick->id);
        if (tick->accepted_ms != 0 && tick->accepted_ms <= began) {
            before++;
            if (!held)
                fail_msg("publish %zu, accepted %lld ms before the backup began, is not in the "
                         "restored store",
                         i, (long long)(began - tick->accepted_ms));
        } else if (tick->sent_ms > ended) {
            after++;
            if (held)
                fail_msg("publish %zu, sent %lld ms after the backup ended, is in the restored "
                         "store",
                         i, (long long)(tick->sent_ms - ended));
        }
    }
    fprintf(
        stderr,
        "test_backup: %zu publishes accepted before the backup began, %zu sent after it ended\n",
        before, after);
    assert_true(before >= TICK_BEFORE);
    assert_true(after >= 1);
    /* the restored store serves: the last publish accepted before the
     * backup is answered as a repeat, a new one is accepted */
    h_broker_start(env);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = h_police_signal(NULL);
    char ref[40];
    snprintf(ref, sizeof ref, "BVH-TICK-%zu", before - 1);
    s.source_ref = ref;
    s.observed_at = t.ticks[before - 1].observed_at;
    int duplicate = 0;
    (void)h_publish_ok(politie, &s, t.ticks[before - 1].id, NULL, NULL, &duplicate);
    assert_int_equal(duplicate, 1);
    s = h_police_signal("BVH-AFTER-RESTORE");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, &duplicate);
    assert_int_equal(duplicate, 0);
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0);
    free(t.ticks);
    h_done(env);
}

/* A backup made before a rotation of the store key ("Rotating the store
 * key" step 5, "Restoring a backup"): the restore under the config's (new)
 * key is refused, with the old key it goes on, the broker then refuses to
 * start under the new key, and a second rekey from the old key to the new
 * one lets it start and serve the backup's waiting delivery. The config's
 * key file is given the new key, as pointing store_key_file at it would. */
static void test_restore_of_a_backup_from_before_a_rekey(void **state)
{
    h_env_t *env = *state;
    char folder[192], command[2048], pattern[256], backup[256];
    char config_key[192], old_key[192], new_key[192];
    snprintf(folder, sizeof folder, "%s/backup", env->dir);
    assert_int_equal(mkdir(folder, 0700), 0);
    h_backup_command(env, folder, command, sizeof command);
    snprintf(config_key, sizeof config_key, "%s/keys/store.key", env->dir);
    snprintf(old_key, sizeof old_key, "%s/keys/store-1.key", env->dir);
    snprintf(new_key, sizeof new_key, "%s/keys/store-2.key", env->dir);

    h_broker_start(env);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = h_police_signal("BVH-BEFORE-REKEY");
    uint8_t id[16];
    (void)h_publish_ok(politie, &s, NULL, id, NULL, NULL);
    schakel_close(&politie);
    h_cli_result_t res;
    int status = h_run_sh(command, &res);
    if (status != 0)
        fail_msg("the backup command exited %d: %s%s", status, res.out, res.err);
    h_cli_result_free(&res);
    snprintf(pattern, sizeof pattern, "%s/*", folder);
    glob_t found;
    if (glob(pattern, 0, NULL, &found) != 0 || found.gl_pathc != 1)
        fail_msg("the backup folder holds %zu files, want the backup alone", found.gl_pathc);
    snprintf(backup, sizeof backup, "%s", found.gl_pathv[0]);
    globfree(&found);

    /* the rotation: the old key kept, the store re-sealed, the config's
     * key the new one */
    assert_int_equal(h_broker_stop(env), 0);
    h_copy_file(config_key, old_key);
    assert_int_equal(chmod(old_key, 0600), 0);
    status = h_run_schakeld(&res, "--init", "--store-key", new_key, NULL);
    if (status != 0)
        fail_msg("--init: exit %d: %s", status, res.err);
    h_cli_result_free(&res);
    status = h_run_schakeld(&res, "--config", env->config_path, "--rekey", "--new-store-key",
                            new_key, NULL);
    if (status != 0 || !strstr(res.out, "re-sealed") || strstr(res.out, "migrated") ||
        !strstr(res.out, "set store_key_file to"))
        fail_msg("--rekey: exit %d: %s%s", status, res.out, res.err);
    h_cli_result_free(&res);
    h_copy_file(new_key, config_key);

    /* the restore: refused under the new key, done with the old one */
    status = h_run_schakeld(&res, "--restored", backup, "--config", env->config_path, NULL);
    if (status == 0 || !strstr(res.err, "the store key does not open this store") ||
        !strstr(res.err, "run the restore with --store-key OLDFILE, then schakeld --rekey"))
        fail_msg("--restored under the new key: exit %d: %s%s", status, res.out, res.err);
    h_cli_result_free(&res);
    status = h_run_schakeld(&res, "--restored", backup, "--config", env->config_path, "--store-key",
                            old_key, NULL);
    if (status != 0 || !strstr(res.out, "restored"))
        fail_msg("--restored with the old key: exit %d: %s%s", status, res.out, res.err);
    h_cli_result_free(&res);
    /* the restored store is under the old key: no start under the new */
    status = h_run_schakeld(&res, "--config", env->config_path, "--listen", "tcp://127.0.0.1:*",
                            "--ready-fd", "1", NULL);
    if (status != 1 || !strstr(res.err, "store key") || strstr(res.out, "READY"))
        fail_msg("a start on the restored store under the new key: exit %d: %s%s", status, res.out,
                 res.err);
    h_cli_result_free(&res);
    /* the second rekey, from the old key to the new one */
    status = h_run_schakeld(&res, "--config", env->config_path, "--store-key", old_key, "--rekey",
                            "--new-store-key", config_key, NULL);
    /* the config names the new key already (the old one was an override):
     * nothing to set */
    if (status != 0 || !strstr(res.out, "re-sealed") ||
        !strstr(res.out, "already: start schakeld as it is") ||
        strstr(res.out, "set store_key_file to"))
        fail_msg("the second --rekey: exit %d: %s%s", status, res.out, res.err);
    h_cli_result_free(&res);

    h_broker_start(env);
    schakel_client_t *om = h_connect(env, H_OM);
    schakel_delivery_t *d = h_receive(om);
    assert_memory_equal(d->message_id, id, 16);
    assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
    schakel_delivery_free(&d);
    schakel_close(&om);
    status = h_run_ctl(env, NULL, NULL, &res, "audit", "verify", "--store", env->store_path,
                       "--broker-key", env->broker_pub, NULL);
    if (status != 0)
        fail_msg("audit verify after the restore and rekey: exit %d: %s%s", status, res.out,
                 res.err);
    h_cli_result_free(&res);
    assert_int_equal(h_broker_stop(env), 0);
    h_done(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_documented_backup_under_traffic, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_restore_of_a_backup_from_before_a_rekey, h_setup_env,
                                        h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
