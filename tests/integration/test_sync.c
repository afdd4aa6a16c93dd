/*
 * test_sync.c — the broker answers and delivers a publish only after the
 * sync that covers its commit, while its loop goes on; a failed sync stops
 * it, and the publish is accepted once after a restart.
 *
 * Every broker of this program runs with syncgate.so preloaded (built next
 * to this binary): while the gate file exists its fdatasync/fsync wait, and
 * while the fail file exists they fail with EIO; each held or failed call is
 * a line in the broker's log, which the tests wait for (inotify, bounded).
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>

/* A negative check ("nothing arrived yet") waits this long. It can only
 * pass falsely (the answer might have come later, or the check looked too
 * early), never fail falsely: each is made while a sync is known to be
 * held, and the positive check after the gate opens bounds the rest. */
#define NEGATIVE_MS 300

static char shim_dir[64];
static char gate_path[128];
static char fail_path[128];

/* ------------------------------------------------------------ the shim */

/* Every broker of this program gets the shim, and the paths of its two
 * files. Returns 0, or -1 with a message. */
static int shim_prepare(void)
{
    char err[PATH_MAX + 128];
    if (h_preload_shim("syncgate.so", err, sizeof err) != 0) {
        fprintf(stderr, "test_sync: %s\n", err);
        return -1;
    }
    snprintf(shim_dir, sizeof shim_dir, "/tmp/schakel-syncgate-XXXXXX");
    if (mkdtemp(shim_dir) == NULL) {
        fprintf(stderr, "test_sync: mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    snprintf(gate_path, sizeof gate_path, "%s/gate", shim_dir);
    snprintf(fail_path, sizeof fail_path, "%s/fail", shim_dir);
    if (setenv("SCHAKEL_TEST_SYNC_GATE", gate_path, 1) != 0 ||
        setenv("SCHAKEL_TEST_SYNC_FAIL", fail_path, 1) != 0) {
        fprintf(stderr, "test_sync: setenv: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

static void shim_file(const char *path, int present)
{
    if (present) {
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
            fail_msg("create %s: %s", path, strerror(errno));
        close(fd);
    } else if (unlink(path) != 0 && errno != ENOENT) {
        fail_msg("remove %s: %s", path, strerror(errno));
    }
}

/* The default (sync_thread: busy): a turn's fsync goes to the sync thread
 * only while more frames wait, so a lone publish here is synced in place. */
static int sync_in_loop; /* the broker of this test syncs a lone turn in place */

static int sync_setup(void **state)
{
    sync_in_loop = 1;
    unlink(gate_path);
    unlink(fail_path);
    return h_setup_broker(state);
}

/* sync_thread: always: every turn's fsync on the sync thread, so that a
 * held sync leaves the loop free whatever waits. */
static int sync_setup_always(void **state)
{
    static const char *const extra[] = {"--set", "sync_thread=always", NULL};
    sync_in_loop = 0;
    unlink(gate_path);
    unlink(fail_path);
    h_setup_env(state);
    h_broker_start_with(*state, extra);
    return 0;
}

static int sync_teardown(void **state)
{
    unlink(gate_path); /* a failed test may leave a sync held */
    unlink(fail_path);
    return h_teardown(state);
}

/* ------------------------------------------------------------ a publish on a thread */

typedef struct publisher {
    schakel_client_t *client;
    schakel_signal_t signal;
    uint8_t message_id[16];
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int done;
    schakel_status_t status;
    schakel_item_result_t result;
    int duplicate;
    char text[512]; /* the answer's text when refused */
} publisher_t;

static void *publisher_main(void *arg)
{
    publisher_t *p = arg;
    schakel_item_result_t result = {0};
    int duplicate = -1;
    schakel_status_t st = schakel_publish(p->client, NULL, &p->signal, 1, p->message_id, NULL,
                                          &result, &duplicate, H_TIMEOUT_MS);
    pthread_mutex_lock(&p->lock);
    p->status = st;
    snprintf(p->text, sizeof p->text, "%s", schakel_last_error(p->client)->text);
    p->result = result;
    p->duplicate = duplicate;
    p->done = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Heap-allocated and freed only after its thread is joined: a test that
 * fails while the publish runs leaks it rather than free it under the
 * thread. */
static publisher_t *publisher_start(schakel_client_t *client, const schakel_signal_t *signal)
{
    publisher_t *p = calloc(1, sizeof *p);
    assert_non_null(p);
    p->client = client;
    p->signal = *signal;
    randombytes_buf(p->message_id, sizeof p->message_id);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cv, NULL);
    assert_int_equal(pthread_create(&p->thread, NULL, publisher_main, p), 0);
    return p;
}

/* A wait for a call made on a thread with H_TIMEOUT_MS (a publish, a view)
 * that may end only by that timeout: an answer its key's revocation drops
 * never comes. The call's deadline began when the thread asked, before
 * the test's wait, but it ends a little after it (the client's wake-up,
 * its return, the lock), and on a loaded machine that can be more than
 * the test's head start: a wait of H_TIMEOUT_MS from later lost that race
 * now and then. This one outlasts the call; only a call that overruns its
 * own timeout by H_TIMEOUT_MS fails it. */
#define CALL_END_MS (2 * H_TIMEOUT_MS)

/* 1 once *done is set under lock (within timeout_ms), else 0. */
static int call_await(pthread_mutex_t *lock, pthread_cond_t *cv, const int *done, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(lock);
    int rc = 0;
    while (!*done && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(cv, lock, &until);
    int was_done = *done;
    pthread_mutex_unlock(lock);
    return was_done;
}

/* 1 once the publish returned (within timeout_ms), else 0. */
static int publisher_await(publisher_t *p, int timeout_ms)
{
    return call_await(&p->lock, &p->cv, &p->done, timeout_ms);
}

static void publisher_join(publisher_t **pp)
{
    publisher_t *p = *pp;
    pthread_join(p->thread, NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->lock);
    free(p);
    *pp = NULL;
}

static void receive_expect(schakel_client_t *client, const uint8_t message_id[16], const char *what)
{
    schakel_delivery_t *d = h_receive(client);
    if (memcmp(d->message_id, message_id, 16) != 0)
        fail_msg("%s: a delivery of another publish (source_ref %s)", what,
                 d->source_ref != NULL ? d->source_ref : "-");
    assert_int_equal(schakel_ack(client, d->seq), SCHAKEL_OK);
    schakel_delivery_free(&d);
}

static void receive_nothing(schakel_client_t *client, const char *why)
{
    schakel_delivery_t *d = NULL;
    schakel_status_t st = schakel_receive(client, &d, NEGATIVE_MS);
    if (st != SCHAKEL_ERR_TIMEOUT) {
        shim_file(gate_path, 0);
        fail_msg("%s: receive gave %s (source_ref %s)", why, schakel_strerror(st),
                 d != NULL && d->source_ref != NULL ? d->source_ref : "-");
    }
}

static void await_log(h_env_t *env, long offset, const char *needle)
{
    if (h_await_log(env, offset, needle, H_TIMEOUT_MS) != 0) {
        shim_file(gate_path, 0);
        fail_msg("the broker logged no \"%s\" within %d ms", needle, H_TIMEOUT_MS);
    }
}

/* ------------------------------------------------------------ tests */

/* A publish made while the sync is held is neither Accepted nor delivered;
 * once the sync returns, both come. The warm-up publish shows the recipient
 * subscribed, so that "nothing delivered" means something. */
static void test_accepted_and_delivered_only_after_sync(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *om = h_connect(env, H_OM);
    assert_int_equal(schakel_subscribe(om, 0), SCHAKEL_OK);
    uint8_t warm_id[16];
    schakel_signal_t warm = h_police_signal("BVH-SYNC-0001");
    (void)h_publish_ok(politie, &warm, NULL, warm_id, NULL, NULL);
    receive_expect(om, warm_id, "warm-up");

    long offset = h_log_offset(env);
    shim_file(gate_path, 1);
    schakel_signal_t held = h_police_signal("BVH-SYNC-0002");
    publisher_t *p = publisher_start(politie, &held);
    /* with every client connected and idle, the sync that starts now is
     * the one that covers the publish's commit */
    await_log(env, offset, "event=syncgate.held");
    if (publisher_await(p, NEGATIVE_MS)) {
        shim_file(gate_path, 0);
        fail_msg("the publish returned (%s) while its sync was held", schakel_strerror(p->status));
    }
    receive_nothing(om, "a delivery while the sync of its commit was held");
    int early = publisher_await(p, 0);
    shim_file(gate_path, 0);
    if (early)
        fail_msg("the publish returned (%s) while its sync was held", schakel_strerror(p->status));

    assert_true(publisher_await(p, H_TIMEOUT_MS));
    if (p->status != SCHAKEL_OK)
        fail_msg("publish after the sync: %s (%s)", schakel_strerror(p->status),
                 schakel_last_error(politie)->text);
    assert_int_equal(p->duplicate, 0);
    assert_int_equal(p->result.recipients, 1);
    await_log(env, offset, "event=syncgate.released");
    receive_expect(om, p->message_id, "after the sync");
    publisher_join(&p);
    schakel_close(&om);
    schakel_close(&politie);
    h_done(env);
}

/* While one turn's sync is held the loop goes on: an ack is taken, and a
 * delivery already on disk, held back only by the window, is pushed. The
 * held publish is not delivered, and answers keep their turn order: a
 * Heartbeat asked now is answered only after that publish's Accepted (its
 * backlog would count the unsynced delivery). */
static void test_loop_goes_on_while_a_sync_is_held(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *om = h_connect(env, H_OM);
    schakel_client_t *gemeente = h_connect(env, H_GEMEENTE);
    assert_int_equal(schakel_subscribe(om, 1), SCHAKEL_OK);
    uint8_t first_id[16], second_id[16];
    schakel_signal_t first = h_police_signal("BVH-SYNC-0101");
    schakel_signal_t second = h_police_signal("BVH-SYNC-0102");
    (void)h_publish_ok(politie, &first, NULL, first_id, NULL, NULL);
    (void)h_publish_ok(politie, &second, NULL, second_id, NULL, NULL);
    schakel_delivery_t *d = h_receive(om);
    assert_memory_equal(d->message_id, first_id, 16);
    receive_nothing(om, "a second delivery with a window of one");

    long offset = h_log_offset(env);
    shim_file(gate_path, 1);
    schakel_signal_t third = h_police_signal("BVH-SYNC-0103");
    publisher_t *p = publisher_start(politie, &third);
    await_log(env, offset, "event=syncgate.held");

    /* the ack opens the window: the second publish, synced long ago, comes */
    assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
    schakel_delivery_free(&d);
    receive_expect(om, second_id, "a synced delivery while another sync is held");
    receive_nothing(om, "the held publish's delivery");
    uint64_t backlog = UINT64_MAX;
    schakel_status_t st = schakel_backlog(gemeente, &backlog, NEGATIVE_MS);
    int early = publisher_await(p, 0);
    shim_file(gate_path, 0);
    if (st != SCHAKEL_ERR_TIMEOUT)
        fail_msg("a Heartbeat was answered (%s) before the held turn's answers",
                 schakel_strerror(st));
    if (early)
        fail_msg("the publish returned (%s) while its sync was held", schakel_strerror(p->status));

    assert_true(publisher_await(p, H_TIMEOUT_MS));
    assert_int_equal(p->status, SCHAKEL_OK);
    receive_expect(om, p->message_id, "after the sync");
    assert_int_equal(h_backlog(gemeente), 0);
    assert_int_equal(h_backlog(om), 0);
    publisher_join(&p);
    schakel_close(&gemeente);
    schakel_close(&om);
    schakel_close(&politie);
    h_done(env);
}

/* An answer held for its sync does not go out to a key a reload revoked
 * meanwhile (review: the Accepted, decided before the reload, went out
 * after it; a CaseView would carry case contents). The reload is made
 * pending (the store write-locked by the test, so that the reload needs
 * no sync of its own: what a pending reload revokes is revoked at once),
 * and the held sync is let go only once the broker has said so. */
static void test_held_answer_to_a_revoked_key_is_dropped(void **state)
{
    static const char politie_block[] = "  - id: politie/bvh-koppeling\n"
                                        "    role: system\n"
                                        "    key_file: keys/politie-bvh-koppeling.pub\n";
    h_env_t *env = *state;
    const char *at = strstr(h_policy_header, politie_block);
    assert_non_null(at);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *om = h_connect(env, H_OM);

    long offset = h_log_offset(env);
    shim_file(gate_path, 1);
    schakel_signal_t held = h_police_signal("BVH-SYNC-0301");
    publisher_t *p = publisher_start(politie, &held);
    await_log(env, offset, "event=syncgate.held");

    sqlite3 *lock = NULL;
    assert_int_equal(sqlite3_open(env->store_path, &lock), SQLITE_OK);
    assert_int_equal(sqlite3_exec(lock, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    h_env_write_policy(env, "%.*s%s%s", (int)(at - h_policy_header), h_policy_header,
                       at + strlen(politie_block), h_default_rules);
    long reload_offset = h_log_offset(env);
    int reloaded = h_broker_reload(env);
    int early = publisher_await(p, 0);
    shim_file(gate_path, 0);
    if (reloaded != 0 || h_log_count(env, reload_offset, "cannot record the reload") != 1)
        fail_msg("the reload was not left pending by the locked store");
    if (early)
        fail_msg("the publish returned (%s) while its sync was held", schakel_strerror(p->status));

    await_log(env, offset, "event=syncgate.released");
    await_log(env, reload_offset,
              "event=reply.undeliverable principal=" H_POLITIE
              " why=\"its key was revoked by a reload after it was decided\"");
    assert_true(publisher_await(p, CALL_END_MS)); /* dropped: it ends by its timeout */
    if (p->status == SCHAKEL_OK)
        fail_msg("the held Accepted reached a key the reload revoked");
    assert_int_equal(sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(lock);
    await_log(env, reload_offset, "event=policy.reloaded ");
    /* stored all the same (its commit was synced), and delivered */
    receive_expect(om, p->message_id, "the publish whose answer was dropped");
    publisher_join(&p);
    schakel_close(&om);
    schakel_close(&politie);
    h_done(env);
}

/* ------------------------------------------------------------ a case view held across a reload */

/* sync_thread: always, with the case types of the harness. */
static int sync_setup_cases(void **state)
{
    static const char *const extra[] = {"--set", "sync_thread=always", NULL};
    sync_in_loop = 0;
    unlink(gate_path);
    unlink(fail_path);
    h_env_t *env = h_env_new_with_cases();
    h_broker_start_with(env, extra);
    *state = env;
    return 0;
}

/* A view of one case (case_id set) or of the list, asked on a thread. */
typedef struct viewer {
    schakel_client_t *client;
    char case_id[SCHAKEL_CASE_ID_SIZE]; /* "": the list */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int done;
    schakel_status_t status;
    char reason[32]; /* the refusal's reason name */
    char text[512];  /* and its text */
    schakel_case_view_t *view;
    schakel_case_list_t *list;
} viewer_t;

static void *viewer_main(void *arg)
{
    viewer_t *v = arg;
    schakel_case_view_t *view = NULL;
    schakel_case_list_t *list = NULL;
    schakel_status_t st = v->case_id[0] != '\0'
                              ? schakel_case_show(v->client, v->case_id, &view, H_TIMEOUT_MS)
                              : schakel_case_list(v->client, &list, H_TIMEOUT_MS);
    pthread_mutex_lock(&v->lock);
    v->status = st;
    snprintf(v->reason, sizeof v->reason, "%s", schakel_last_error(v->client)->reason_name);
    snprintf(v->text, sizeof v->text, "%s", schakel_last_error(v->client)->text);
    v->view = view;
    v->list = list;
    v->done = 1;
    pthread_cond_broadcast(&v->cv);
    pthread_mutex_unlock(&v->lock);
    return NULL;
}

static void viewer_join(viewer_t **vp)
{
    viewer_t *v = *vp;
    pthread_join(v->thread, NULL);
    pthread_cond_destroy(&v->cv);
    pthread_mutex_destroy(&v->lock);
    schakel_case_view_free(&v->view);
    schakel_case_list_free(&v->list);
    free(v);
    *vp = NULL;
}

/* `text` with `what` (which must occur) replaced by `with`; the caller
 * frees it. */
static char *text_with(const char *text, const char *what, const char *with)
{
    const char *at = strstr(text, what);
    if (at == NULL)
        fail_msg("the policy text lacks \"%s\"", what);
    size_t len = strlen(text) - strlen(what) + strlen(with);
    char *out = malloc(len + 1);
    assert_non_null(out);
    snprintf(out, len + 1, "%.*s%s%s", (int)(at - text), text, with, at + strlen(what));
    return out;
}

/* The case types with gemeente out of every membership rule (its key
 * stays: it is still a principal of the policy). */
static char *case_types_without_gemeente(void)
{
    char *first =
        text_with(h_case_types, "        partners: [gemeente]\n", "        partners: [om]\n");
    char *both =
        text_with(first, "        partners: [politie, om]\n", "        partners: [politie]\n");
    free(first);
    return both;
}

/* `client` asks for case `id` (NULL: the list) while the sync of the
 * view's turn is held; meanwhile the policy becomes `policy`, and a
 * reload applies it. The held sync is let go once the reload waits for
 * the sync of its own record, so that the reload is in force when the
 * view's turn is released (the loop releases it, and is in the reload
 * until then). Returns the viewer, answered (or given up on by its
 * client). */
static viewer_t *view_across_policy(h_env_t *env, schakel_client_t *client, const char *id,
                                    const char *policy)
{
    viewer_t *v = calloc(1, sizeof *v);
    assert_non_null(v);
    v->client = client;
    snprintf(v->case_id, sizeof v->case_id, "%s", id != NULL ? id : "");
    pthread_mutex_init(&v->lock, NULL);
    pthread_cond_init(&v->cv, NULL);
    long offset = h_log_offset(env);
    shim_file(gate_path, 1);
    assert_int_equal(pthread_create(&v->thread, NULL, viewer_main, v), 0);
    await_log(env, offset, id != NULL ? "event=case.viewed " : "event=case.listed ");
    await_log(env, offset, "event=syncgate.held");

    h_env_write_policy(env, "%s", policy);
    long reload_offset = h_log_offset(env);
    if (kill(env->broker_pid, SIGHUP) != 0) {
        shim_file(gate_path, 0);
        fail_msg("kill: %s", strerror(errno));
    }
    await_log(env, reload_offset, "event=syncgate.held");
    int early = call_await(&v->lock, &v->cv, &v->done, 0);
    shim_file(gate_path, 0);
    if (early)
        fail_msg("the view was answered (%s) while its sync was held", schakel_strerror(v->status));
    await_log(env, reload_offset, "event=policy.reloaded ");
    /* a view to a revoked key is dropped: it ends by its own timeout */
    assert_true(call_await(&v->lock, &v->cv, &v->done, CALL_END_MS));
    return v;
}

/* view_across_policy with the default rules followed by `case_types`. */
static viewer_t *view_across_reload(h_env_t *env, schakel_client_t *client, const char *id,
                                    const char *case_types)
{
    size_t len = strlen(h_policy_header) + strlen(h_default_rules) + strlen(case_types) + 1;
    char *policy = malloc(len);
    assert_non_null(policy);
    snprintf(policy, len, "%s%s%s", h_policy_header, h_default_rules, case_types);
    viewer_t *v = view_across_policy(env, client, id, policy);
    free(policy);
    return v;
}

static void must_be(schakel_client_t *c, schakel_status_t st, const char *what)
{
    if (st != SCHAKEL_OK)
        fail_msg("%s: %s (%s %s)", what, schakel_strerror(st), schakel_last_error(c)->reason_name,
                 schakel_last_error(c)->text);
}

/* riec opens `open` as case id, and gemeente joins it. */
static void gemeente_joins(schakel_client_t *riec, schakel_client_t *gemeente,
                           const schakel_case_open_t *open, char id[SCHAKEL_CASE_ID_SIZE])
{
    must_be(riec, schakel_case_open(riec, open, NULL, id, NULL, H_TIMEOUT_MS), "open");
    must_be(riec, schakel_case_invite(riec, id, "gemeente", NULL, NULL, H_TIMEOUT_MS), "invite");
    must_be(gemeente, schakel_case_accept(gemeente, id, NULL, NULL, H_TIMEOUT_MS), "accept");
}

static void expect_refused(const viewer_t *v, const char *reason, const char *text,
                           const char *what)
{
    if (v->status != SCHAKEL_ERR_REFUSED)
        fail_msg("%s: %s, not refused %s", what, schakel_strerror(v->status), reason);
    if (strcmp(v->reason, reason) != 0 || strstr(v->text, text) == NULL)
        fail_msg("%s: refused %s \"%s\", not %s \"%s\"", what, v->reason, v->text, reason, text);
}

/* The value of note field `name` in the view's events, or NULL. */
static const char *view_field(const schakel_case_view_t *view, const char *name)
{
    for (size_t i = 0; i < view->n_events; i++)
        for (size_t j = 0; j < view->events[i].n_fields; j++)
            if (strcmp(view->events[i].fields[j].name, name) == 0)
                return view->events[i].fields[j].value;
    return NULL;
}

/* Entries `event` of the trail by gemeente with this reason. */
static int64_t withheld_entries(const h_env_t *env, const char *event, const char *reason)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM audit WHERE event = '%s' AND actor = '" H_GEMEENTE
             "' AND reason = ?1",
             event);
    return h_store_int(env, sql, reason);
}

/* case.view_withheld entries tagged with the subject of the case.viewed
 * entry before them of the same principal (as the view's entries were). */
static int64_t withheld_tagged_as_viewed(const h_env_t *env)
{
    return h_store_int(env,
                       "SELECT count(*) FROM audit w WHERE w.event = 'case.view_withheld' AND "
                       "w.subject_tag IS NOT NULL AND w.subject_tag = (SELECT v.subject_tag FROM "
                       "audit v WHERE v.event = 'case.viewed' AND v.seq < w.seq AND v.actor = "
                       "w.actor ORDER BY v.seq DESC LIMIT 1) AND w.detail LIKE ?1",
                       "case_id=%");
}

/* A CaseView held for its sync is decided again as it leaves after a
 * reload that kept the asker's key (review: a view decided under the old
 * policy left after the new one was in force, showing what the reload had
 * just withdrawn). A reload that leaves the asker's membership rule as it
 * was lets it go; one that narrows the rule's fields withholds it ("ask
 * again", UNAVAILABLE: libschakel asks again within the call, and the view
 * shows the narrower fields); one that takes the partner out of the case
 * type's members answers what a read under the new policy gets, NOT_FOUND.
 * A list is withheld likewise. Each withheld view is on the trail next to
 * its case.viewed (or case.listed) entry. */
static void test_held_view_is_decided_again_after_a_reload(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *gemeente = h_connect(env, H_GEMEENTE);
    static const schakel_case_open_t open = {
        .case_type = "ondermijning-adres",
        .area = "BU09350101",
        .subject = "PSN-7f3a9c2e41",
        .postcode = "6211AB",
        .house_number = 12,
        .title = "Hennepkwekerij en contante betalingen",
    };
    static const schakel_note_field_t fields[] = {{"bestuurlijk", "Sluiting per 1 maart"}};
    char id[SCHAKEL_CASE_ID_SIZE];
    gemeente_joins(riec, gemeente, &open, id);
    must_be(
        riec,
        schakel_case_note(riec, id, "Bestuurlijke rapportage", fields, 1, NULL, NULL, H_TIMEOUT_MS),
        "note");

    /* another case type's purpose changes: gemeente's rule is the same */
    char *unrelated = text_with(h_case_types, "in een straat\"", "in een straat of wijk\"");
    viewer_t *v = view_across_reload(env, gemeente, id, unrelated);
    free(unrelated);
    must_be(gemeente, v->status, "a view across a reload that left its rule as it was");
    assert_string_equal(v->view->summary.case_id, id);
    assert_non_null(view_field(v->view, "bestuurlijk"));
    viewer_join(&v);

    /* gemeente's rule shows fewer fields: withheld, and asked again within
     * the call */
    char *narrower = text_with(h_case_types, "        fields: [text, address, bestuurlijk]\n",
                               "        fields: [text]\n");
    long offset = h_log_offset(env);
    v = view_across_reload(env, gemeente, id, narrower);
    must_be(gemeente, v->status, "a view across a reload that narrowed it, asked again");
    if (view_field(v->view, "bestuurlijk") != NULL)
        fail_msg("asked again, the view still shows a field the reload withdrew");
    viewer_join(&v);
    await_log(env, offset, "event=case.view_withheld principal=" H_GEMEENTE " case_id=");
    assert_int_equal(h_log_count_both(env, offset, "event=case.view_withheld", "UNAVAILABLE"), 1);

    /* gemeente may be a member no more: what a read now gets */
    char *without = case_types_without_gemeente();
    v = view_across_reload(env, gemeente, id, without);
    char not_found[64];
    snprintf(not_found, sizeof not_found, "no case %s that you can see", id);
    expect_refused(v, "NOT_FOUND", not_found, "a view across a reload that removed the member");
    viewer_join(&v);

    /* the list likewise, once gemeente is back */
    h_env_write_policy(env, "%s%s%s", h_policy_header, h_default_rules, narrower);
    assert_int_equal(h_broker_reload(env), 1);
    offset = h_log_offset(env);
    v = view_across_reload(env, gemeente, NULL, without);
    must_be(gemeente, v->status, "a list across a reload that removed it, asked again");
    assert_int_equal(v->list->n_cases, 0);
    viewer_join(&v);
    await_log(env, offset, "event=case.list_withheld principal=" H_GEMEENTE);
    assert_int_equal(h_log_count_both(env, offset, "event=case.list_withheld", "UNAVAILABLE"), 1);
    free(without);
    free(narrower);

    /* the trail: each withheld view after its entry, the case's subject
     * tagged as on case.viewed */
    assert_int_equal(withheld_entries(env, "case.view_withheld", "UNAVAILABLE"), 1);
    assert_int_equal(withheld_entries(env, "case.view_withheld", "NOT_FOUND"), 1);
    assert_int_equal(withheld_entries(env, "case.list_withheld", "UNAVAILABLE"), 1);
    assert_int_equal(withheld_tagged_as_viewed(env), 2);
    schakel_close(&gemeente);
    schakel_close(&riec);
    h_done(env);
}

/* gemeente joins a case the RIEC opens (its id in id); the policy text
 * with gemeente/meldingen taken out, for a reload to revoke its key
 * (caller frees). */
static char *gemeente_in_a_case_then_revoked(schakel_client_t *riec, schakel_client_t *gemeente,
                                             char id[SCHAKEL_CASE_ID_SIZE])
{
    static const char gemeente_block[] = "  - id: gemeente/meldingen\n"
                                         "    role: system\n"
                                         "    key_file: keys/gemeente-meldingen.pub\n";
    static const schakel_case_open_t open = {
        .case_type = "ondermijning-adres",
        .area = "BU09350101",
        .subject = "PSN-7f3a9c2e41",
        .title = "Leegstaand pand",
    };
    gemeente_joins(riec, gemeente, &open, id);
    char *header = text_with(h_policy_header, gemeente_block, "");
    size_t len = strlen(header) + strlen(h_default_rules) + strlen(h_case_types) + 1;
    char *policy = malloc(len);
    assert_non_null(policy);
    snprintf(policy, len, "%s%s%s", header, h_default_rules, h_case_types);
    free(header);
    return policy;
}

/* A CaseView held for its sync whose asker's key a reload then removed
 * is dropped (reply.undeliverable), and the trail says so next to its
 * case.viewed entry: a case.view_withheld with NOT_PERMITTED (review: the
 * view's entry said shown, and the data-subject export with it). */
static void test_held_view_to_a_revoked_key_is_withheld(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *gemeente = h_connect(env, H_GEMEENTE);
    char id[SCHAKEL_CASE_ID_SIZE];
    char *policy = gemeente_in_a_case_then_revoked(riec, gemeente, id);
    long offset = h_log_offset(env);
    viewer_t *v = view_across_policy(env, gemeente, id, policy);
    free(policy);
    if (v->status == SCHAKEL_OK)
        fail_msg("the held view reached a key the reload revoked");
    viewer_join(&v);
    await_log(env, offset,
              "event=reply.undeliverable principal=" H_GEMEENTE
              " why=\"its key was revoked by a reload after it was decided\"");
    assert_int_equal(withheld_entries(env, "case.view_withheld", "NOT_PERMITTED"), 1);
    assert_int_equal(withheld_tagged_as_viewed(env), 1);
    schakel_close(&gemeente);
    schakel_close(&riec);
    h_done(env);
}

/* The same, while the store refuses case.view_withheld entries: as the
 * view is dropped, and at the settles after it (review: the entry was
 * written once, into the next turn's transaction, and lost when that
 * rolled back; the trail said the view was shown). Once the store takes
 * it, it is on the trail, once, next to the view's case.viewed entry. */
static void test_withheld_view_carried_until_recorded(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *gemeente = h_connect(env, H_GEMEENTE);
    char id[SCHAKEL_CASE_ID_SIZE];
    char *policy = gemeente_in_a_case_then_revoked(riec, gemeente, id);
    h_store_exec(env, "CREATE TRIGGER test_refuse BEFORE INSERT ON audit WHEN NEW.event ="
                      " 'case.view_withheld' BEGIN SELECT RAISE(ABORT, 'the audit path is full');"
                      " END");
    long offset = h_log_offset(env);
    viewer_t *v = view_across_policy(env, gemeente, id, policy);
    free(policy);
    if (v->status == SCHAKEL_OK)
        fail_msg("the held view reached a key the reload revoked");
    viewer_join(&v);
    /* refused as the view left, and again at a settle after it */
    await_log(env, offset, "event=case.view_withheld principal=" H_GEMEENTE " case_id=");
    if (h_await_log_lines(env, offset, "event=audit.write_failed entry=case.view_withheld", 2,
                          H_TIMEOUT_MS) != 0) {
        h_dump_log(env);
        fail_msg("the withheld view's entry was not refused as it left and after");
    }
    assert_int_equal(withheld_entries(env, "case.view_withheld", "NOT_PERMITTED"), 0);
    h_store_exec(env, "DROP TRIGGER test_refuse");
    await_log(env, offset, "event=audit.recorded_late entry=case.view_withheld");
    assert_int_equal(withheld_entries(env, "case.view_withheld", "NOT_PERMITTED"), 1);
    assert_int_equal(withheld_tagged_as_viewed(env), 1);
    schakel_close(&gemeente);
    schakel_close(&riec);
    assert_int_equal(h_broker_stop(env), 0);
    assert_int_equal(withheld_entries(env, "case.view_withheld", "NOT_PERMITTED"), 1);
    assert_int_equal(h_log_count(env, offset, "event=audit.not_recorded"), 0);
    h_done(env);
}

/* While a reload waits to be recorded (the store write-locked by the
 * test), what it withdraws is withdrawn from a view asked meanwhile as
 * from the push: a case the partner may no longer see is NOT_FOUND, its
 * list "ask again" (both refused before anything is recorded, so the
 * refusal is not the one for a view that cannot be recorded). libschakel
 * asks for the list again within the call: once the store is let go and
 * the reload recorded, it is answered, and holds no case. */
static void test_view_under_a_pending_reload(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *gemeente = h_connect(env, H_GEMEENTE);
    static const schakel_case_open_t open = {
        .case_type = "ondermijning-adres",
        .area = "BU09350101",
        .title = "Leegstaand pand",
    };
    char id[SCHAKEL_CASE_ID_SIZE];
    gemeente_joins(riec, gemeente, &open, id);

    sqlite3 *lock = NULL;
    assert_int_equal(sqlite3_open(env->store_path, &lock), SQLITE_OK);
    assert_int_equal(sqlite3_exec(lock, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    char *without = case_types_without_gemeente();
    h_env_write_policy(env, "%s%s%s", h_policy_header, h_default_rules, without);
    free(without);
    long reload_offset = h_log_offset(env);
    if (h_broker_reload(env) != 0 ||
        h_log_count(env, reload_offset, "cannot record the reload") != 1)
        fail_msg("the reload was not left pending by the locked store");

    char not_found[64];
    snprintf(not_found, sizeof not_found, "no case %s that you can see", id);
    schakel_case_view_t *view = NULL;
    schakel_status_t st = schakel_case_show(gemeente, id, &view, H_TIMEOUT_MS);
    const schakel_error_t *e = schakel_last_error(gemeente);
    if (st != SCHAKEL_ERR_REFUSED || strcmp(e->reason_name, "NOT_FOUND") != 0 ||
        strcmp(e->text, not_found) != 0)
        fail_msg("a view under a pending reload that removed the member: %s (%s \"%s\")",
                 schakel_strerror(st), e->reason_name, e->text);
    viewer_t *v = calloc(1, sizeof *v);
    assert_non_null(v);
    v->client = gemeente; /* case_id "": the list */
    pthread_mutex_init(&v->lock, NULL);
    pthread_cond_init(&v->cv, NULL);
    long list_offset = h_log_offset(env);
    assert_int_equal(pthread_create(&v->thread, NULL, viewer_main, v), 0);
    await_log(env, list_offset,
              "reason=UNAVAILABLE item=-1 text=\"a policy reload not yet recorded changes what "
              "this view may show; ask again\"");
    assert_int_equal(sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(lock);
    assert_true(call_await(&v->lock, &v->cv, &v->done, H_TIMEOUT_MS));
    must_be(gemeente, v->status, "the list under a pending reload, asked again once recorded");
    assert_int_equal(v->list->n_cases, 0);
    viewer_join(&v);
    await_log(env, reload_offset, "event=policy.reloaded ");
    schakel_close(&gemeente);
    schakel_close(&riec);
    h_done(env);
}

/* A sync that fails stops the broker (exit 1, store.sync_failed), and
 * never answers Accepted: on the sync thread it drops the turn's answers,
 * in the loop it answers that the publish may have been stored (never that
 * nothing was: the commit is in the WAL). Restarted on a sound disk, the
 * client's own resend of the same message id is accepted, and the store
 * holds the publish once. */
static void test_failed_sync_stops_and_retry_is_accepted_once(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    char endpoint[sizeof env->endpoint];
    snprintf(endpoint, sizeof endpoint, "%s", env->endpoint);

    long offset = h_log_offset(env);
    shim_file(fail_path, 1);
    schakel_signal_t s = h_police_signal("BVH-SYNC-0201");
    publisher_t *p = publisher_start(politie, &s);
    int code = h_broker_await_exit(env, H_TIMEOUT_MS);
    int early = publisher_await(p, 0);
    shim_file(fail_path, 0);
    if (code != 1)
        fail_msg("after a failed sync the broker %s (exit %d)",
                 code == -1 ? "still runs" : "exited otherwise", code);
    await_log(env, offset, "event=syncgate.failed");
    await_log(env, offset, "syncing the WAL"); /* store.sync_failed or .commit_failed */
    if (sync_in_loop && !early) /* the loop answers before it stops: that answer comes */
        early = publisher_await(p, H_TIMEOUT_MS / 2);
    if (early && p->status == SCHAKEL_OK)
        fail_msg("a publish whose sync failed was Accepted");
    if (sync_in_loop && (!early || p->status != SCHAKEL_ERR_REFUSED))
        fail_msg("the loop's failed sync was not answered as such (status %d)",
                 early ? (int)p->status : 0);
    if (early && p->status == SCHAKEL_ERR_REFUSED && !strstr(p->text, "may have been stored"))
        fail_msg("a publish whose sync failed was answered \"%s\"", p->text);

    char problem[256];
    if (h_broker_try_start_at(env, endpoint, problem, sizeof problem) != 0)
        fail_msg("restart: %s", problem);
    /* the library sends the publish again on its new connection; if it had
     * given up before the restart, the test retries with the same id */
    uint64_t seq;
    if (publisher_await(p, H_TIMEOUT_MS) && p->status == SCHAKEL_OK) {
        seq = p->result.seq;
    } else {
        assert_true(publisher_await(p, H_TIMEOUT_MS));
        seq = h_publish_ok(politie, &s, p->message_id, NULL, NULL, NULL);
    }
    int duplicate = -1;
    assert_int_equal(h_publish_ok(politie, &s, p->message_id, NULL, NULL, &duplicate), seq);
    assert_int_equal(duplicate, 1);
    assert_int_equal(h_backlog_of(env, H_OM), 1);
    schakel_client_t *om = h_connect(env, H_OM);
    receive_expect(om, p->message_id, "after the restart");
    receive_nothing(om, "the publish a second time");
    publisher_join(&p);
    schakel_close(&om);
    schakel_close(&politie);
    h_done(env);
}

int main(void)
{
    if (sodium_init() < 0 || shim_prepare() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_accepted_and_delivered_only_after_sync, sync_setup,
                                        sync_teardown),
        cmocka_unit_test_setup_teardown(test_accepted_and_delivered_only_after_sync,
                                        sync_setup_always, sync_teardown),
        cmocka_unit_test_setup_teardown(test_loop_goes_on_while_a_sync_is_held, sync_setup_always,
                                        sync_teardown),
        cmocka_unit_test_setup_teardown(test_held_answer_to_a_revoked_key_is_dropped,
                                        sync_setup_always, sync_teardown),
        cmocka_unit_test_setup_teardown(test_held_view_is_decided_again_after_a_reload,
                                        sync_setup_cases, sync_teardown),
        cmocka_unit_test_setup_teardown(test_held_view_to_a_revoked_key_is_withheld,
                                        sync_setup_cases, sync_teardown),
        cmocka_unit_test_setup_teardown(test_withheld_view_carried_until_recorded, sync_setup_cases,
                                        sync_teardown),
        cmocka_unit_test_setup_teardown(test_view_under_a_pending_reload, sync_setup_cases,
                                        sync_teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync_stops_and_retry_is_accepted_once,
                                        sync_setup_always, sync_teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync_stops_and_retry_is_accepted_once,
                                        sync_setup, sync_teardown),
    };
    int rc = cmocka_run_group_tests_name("integration: sync", tests, NULL, NULL);
    unlink(gate_path);
    unlink(fail_path);
    rmdir(shim_dir);
    return rc;
}
