/*
 * test_pending.c — the admin endpoint's `pending` and `schakelctl pending`
 * against a real schakeld with admin_listen on a random loopback port:
 * a principal's signals and case events listed oldest first with the
 * state the broker knows each in (waiting, in flight, set aside,
 * withheld by a reload not yet recorded, revoked, expired and not yet
 * swept), paging with after= and
 * limit=, acknowledged deliveries gone, never any content, and every
 * refusal (through schakelctl and as raw admin requests), after which the
 * broker runs on with nothing lost.
 *
 * schakelctl runs as a child process; raw requests go over a CURVE DEALER
 * of the test's own. No sleeps: every wait is on a reply, a process or the
 * log, with a bound.
 */
#include "harness.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#include "keys.h"
#include "wire.h"

static const char *const ADMIN_ON[] = {"--set", "admin_listen=tcp://127.0.0.1:*", NULL};

static int setup_admin_broker(void **state)
{
    h_env_t *env = h_env_new();
    h_broker_start_with(env, ADMIN_ON);
    *state = env;
    return 0;
}

/* The politie rule to om kept 2 s (H_RULE_SHORT_TO_OM) alone. */
static const char short_retention_rules[] =
    "rules:\n" H_RULE_SHORT_TO_OM("politie-kort-om", "politie");

static int setup_admin_broker_short_retention(void **state)
{
    h_env_t *env = h_env_new_with_rules(short_retention_rules);
    h_broker_start_with(env, ADMIN_ON);
    *state = env;
    return 0;
}

static int setup_admin_broker_with_cases(void **state)
{
    h_env_t *env = h_env_new_with_cases();
    h_broker_start_with(env, ADMIN_ON);
    *state = env;
    return 0;
}

/* ------------------------------------------------------------------ small helpers */

static void expect_no_text(const char *text, const char *needle, const char *what)
{
    if (strstr(text, needle) != NULL)
        fail_msg("%s: \"%s\" must not be in:\n%s", what, needle, text);
}

static void expect_member(const char *from, const char *key, const char *value)
{
    char got[256];
    h_json_get(from, key, got, sizeof got);
    if (strcmp(got, value) != 0)
        fail_msg("\"%s\" is %s, expected %s, in %.600s", key, got, value, from);
}

/* The row of delivery seq in a pending document; fails if not listed. */
static const char *row_of(const char *doc, uint64_t seq)
{
    char anchor[48];
    snprintf(anchor, sizeof anchor, "{\"seq\":%" PRIu64 ",", seq);
    const char *at = strstr(doc, anchor);
    if (at == NULL)
        fail_msg("delivery %" PRIu64 " is not listed in %.800s", seq, doc);
    return at;
}

static size_t rows_in(const char *doc)
{
    size_t n = 0;
    for (const char *p = strstr(doc, "{\"seq\":"); p; p = strstr(p + 1, "{\"seq\":"))
        n++;
    return n;
}

static int ctl(h_env_t *env, h_cli_result_t *res, const char *const *args)
{
    char admin[128];
    h_admin_endpoint(env, admin, sizeof admin);
    return h_run_ctl_argv(env, admin, h_key_file(env, H_OPERATOR), args, res);
}

/* `schakelctl pending PRINCIPAL --json` with the options in `extra`
 * (NULL-terminated, may be NULL); fails unless it exits 0. Returns its
 * stdout (caller frees). */
static char *pending_json(h_env_t *env, const char *principal, const char *const *extra)
{
    const char *args[12] = {"pending", principal, "--json"};
    size_t n = 3;
    for (size_t i = 0; extra != NULL && extra[i] != NULL && n + 1 < 12; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    h_cli_result_t res;
    ctl(env, &res, args);
    h_expect_exit(&res, 0, "pending");
    char *out = res.out;
    res.out = NULL;
    h_cli_result_free(&res);
    return out;
}

/* `schakelctl pending ARGS...` must exit with code and say `says` on stderr. */
static void pending_fails(h_env_t *env, const char *const *args, int code, const char *says)
{
    h_cli_result_t res;
    ctl(env, &res, args);
    h_expect_exit(&res, code, says);
    h_expect_text(res.err, says, args[1] ? args[1] : "pending");
    h_cli_result_free(&res);
}

static void hex16(const uint8_t id[16], char out[33])
{
    for (size_t i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", id[i]);
}

/* The seqs of recipient's waiting deliveries, oldest first (at most n):
 * those of its mailbox rows not done. */
static size_t waiting_seqs(const h_env_t *env, const char *recipient, int64_t *seqs, size_t n)
{
    h_waiting_t waiting[8];
    assert_true(n <= sizeof waiting / sizeof waiting[0]);
    size_t got = h_mailbox_waiting(env, recipient, waiting, n);
    for (size_t i = 0; i < got && i < n; i++)
        seqs[i] = waiting[i].seq;
    return got < n ? got : n;
}

/* The seq of recipient's one waiting delivery. */
static int64_t only_waiting_seq(const h_env_t *env, const char *recipient)
{
    int64_t seq = 0;
    assert_int_equal(waiting_seqs(env, recipient, &seq, 1), 1);
    assert_int_equal(h_mailbox_waiting(env, recipient, NULL, 0), 1);
    return seq;
}

/* ------------------------------------------------------------------ raw requests */

typedef struct raw_admin {
    void *ctx, *socket;
} raw_admin_t;

/* A DEALER with the operator's key on the admin endpoint. */
static void raw_open(raw_admin_t *c, h_env_t *env)
{
    char text[256], admin[128];
    uint8_t broker_sign[32], broker_curve[32];
    keypair_t *keys = keys_load_secret(h_key_file(env, H_OPERATOR), text, sizeof text);
    assert_non_null(keys);
    assert_int_equal(keys_load_public(env->broker_pub, broker_sign, text, sizeof text), 0);
    assert_int_equal(keys_sign_pk_to_curve(broker_sign, broker_curve), 0);
    int zero = 0;
    c->ctx = zmq_ctx_new();
    c->socket = zmq_socket(c->ctx, ZMQ_DEALER);
    assert_int_equal(zmq_setsockopt(c->socket, ZMQ_CURVE_SERVERKEY, broker_curve, 32) |
                         zmq_setsockopt(c->socket, ZMQ_CURVE_PUBLICKEY, keys->curve_pk, 32) |
                         zmq_setsockopt(c->socket, ZMQ_CURVE_SECRETKEY, keys->curve_sk, 32) |
                         zmq_setsockopt(c->socket, ZMQ_LINGER, &zero, sizeof zero),
                     0);
    keys_destroy(&keys);
    h_admin_endpoint(env, admin, sizeof admin);
    assert_int_equal(zmq_connect(c->socket, admin), 0);
}

static void raw_close(raw_admin_t *c)
{
    zmq_close(c->socket);
    zmq_ctx_term(c->ctx);
}

/* Send `pending` with these args (n of them) and return its answer's
 * first frame, which must be an AdminResponse (caller frees). */
static Schakel__Frame *raw_pending(raw_admin_t *c, uint64_t request_id, const char *const *args,
                                   size_t n)
{
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    Schakel__AdminRequest request = SCHAKEL__ADMIN_REQUEST__INIT;
    request.has_request_id = 1;
    request.request_id = request_id;
    request.command = "pending";
    request.n_args = n;
    request.args = (char **)(uintptr_t)args;
    frame.body_case = SCHAKEL__FRAME__BODY_ADMIN_REQUEST;
    frame.admin_request = &request;
    size_t len = 0;
    uint8_t *bytes = wire_encode_frame(&frame, &len);
    assert_non_null(bytes);
    assert_int_equal(zmq_send(c->socket, bytes, len, 0), (int)len);
    free(bytes);
    zmq_pollitem_t item = {c->socket, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, H_TIMEOUT_MS) != 1)
        fail_msg("no answer to pending within %d ms", H_TIMEOUT_MS);
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    assert_true(zmq_msg_recv(&msg, c->socket, 0) >= 0);
    wire_error_t err;
    Schakel__Frame *answer = wire_decode_frame(zmq_msg_data(&msg), zmq_msg_size(&msg), &err);
    zmq_msg_close(&msg);
    if (answer == NULL)
        fail_msg("undecodable answer: %s", err.text);
    if (answer->body_case != SCHAKEL__FRAME__BODY_ADMIN_RESPONSE)
        fail_msg("pending answered with body %d, not an admin_response", (int)answer->body_case);
    assert_int_equal(answer->admin_response->request_id, request_id);
    return answer;
}

/* The request must be refused (ok false, no document) with `says`. */
static void raw_refused(raw_admin_t *c, uint64_t request_id, const char *const *args, size_t n,
                        const char *says)
{
    Schakel__Frame *answer = raw_pending(c, request_id, args, n);
    const Schakel__AdminResponse *r = answer->admin_response;
    if (r->ok)
        fail_msg("pending with %zu args (%s ...) was answered ok, expected \"%s\"", n,
                 n > 0 ? args[0] : "-", says);
    h_expect_text(r->error, says, "pending refusal");
    assert_true(r->json == NULL || r->json[0] == '\0');
    assert_false(r->has_more && r->more);
    wire_frame_free(&answer);
}

/* ------------------------------------------------------------------ listing */

/* A signal and a case event for riec/analyse, listed oldest first with
 * what the trail shows of them, and nothing of their content. */
static void test_pending_lists_signals_and_case_events(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *jekerdal = h_connect(env, H_WOCO_JEKERDAL);
    schakel_signal_t s = h_signal_cannabis();
    uint8_t id[16];
    char id_hex[33];
    uint64_t item_seq = h_publish_ok(jekerdal, &s, NULL, id, NULL, NULL);
    hex16(id, id_hex);
    schakel_client_t *riec = h_connect(env, H_RIEC);
    static const schakel_case_open_t open = {
        .case_type = "ondermijning-adres",
        .area = "BU09350101",
        .subject = "PSN-7f3a9c2e41",
        .postcode = "6211AB",
        .house_number = 12,
        .title = "Hennepkwekerij en contante betalingen",
    };
    char case_id[SCHAKEL_CASE_ID_SIZE];
    schakel_case_result_t result;
    assert_int_equal(schakel_case_open(riec, &open, NULL, case_id, &result, H_TIMEOUT_MS),
                     SCHAKEL_OK);
    int64_t seqs[3];
    assert_int_equal(waiting_seqs(env, H_RIEC, seqs, 3), 2);

    char *doc = pending_json(env, H_RIEC, NULL);
    expect_member(doc, "principal", H_RIEC);
    expect_member(doc, "partner", "riec");
    /* the trail says whose mailbox the operator looked into */
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'admin.pending' "
                                 "AND detail LIKE '% principal=' || ?1",
                                 H_RIEC),
                     1);
    assert_int_equal(h_json_int(doc, "pending"), 2);
    assert_int_equal(h_json_int(doc, "after"), 0);
    assert_int_equal(h_json_int(doc, "limit"), 100);
    expect_member(doc, "next_after", "null");
    assert_int_equal(rows_in(doc), 2);
    const char *signal = row_of(doc, (uint64_t)seqs[0]);
    const char *event = row_of(doc, (uint64_t)seqs[1]);
    assert_true(signal < event); /* oldest first */
    assert_int_equal(h_json_int(signal, "item_seq"), (long long)item_seq);
    expect_member(signal, "kind", "signal");
    expect_member(signal, "sender", H_WOCO_JEKERDAL);
    expect_member(signal, "message_id", id_hex);
    assert_int_equal(h_json_int(signal, "item_index"), 0);
    expect_member(signal, "case_id", "null");
    expect_member(signal, "event_seq", "null");
    expect_member(signal, "rule_id", "woco-ondermijning-riec");
    long long queued = h_json_int(signal, "queued_at");
    assert_true(queued > 0 && queued <= (long long)time(NULL));
    assert_int_equal(h_json_int(signal, "expires_at"), queued + 730LL * 86400);
    expect_member(signal, "state", "waiting");
    expect_member(signal, "sent", "no");
    expect_member(signal, "set_aside_at", "null");
    expect_member(signal, "reason", "null");
    expect_member(event, "kind", "case_event");
    expect_member(event, "sender", H_RIEC);
    expect_member(event, "case_id", case_id);
    assert_int_equal(h_json_int(event, "event_seq"), 1);
    expect_member(event, "item_index", "null");
    expect_member(event, "state", "waiting");
    /* metadata only: nothing of the signal's or the case's content */
    static const char *const content[] = {"PSN-",       "Ramen afgeplakt", "Signaal hennepteelt",
                                          "BU09350101", "6211AB",          "Hennepkwekerij",
                                          "\"fields\"", "\"title\"",       "\"subject\""};
    for (size_t i = 0; i < sizeof content / sizeof content[0]; i++)
        expect_no_text(doc, content[i], "pending's answer");
    free(doc);

    /* the table says the same, one line per delivery */
    const char *const table[] = {"pending", H_RIEC, NULL};
    h_cli_result_t res;
    ctl(env, &res, table);
    h_expect_exit(&res, 0, "pending table");
    h_expect_text(res.out, "riec/analyse (partner riec): 2 pending", "pending table");
    h_expect_text(res.out, "SEQ", "pending table");
    char cell[64];
    snprintf(cell, sizeof cell, "%s/0", id_hex);
    h_expect_text(res.out, cell, "pending table");
    snprintf(cell, sizeof cell, "%s event 1", case_id);
    h_expect_text(res.out, cell, "pending table");
    h_expect_text(res.out, "case_event", "pending table");
    expect_no_text(res.out, "more:", "pending table");
    expect_no_text(res.out, "Ramen", "pending table");
    h_cli_result_free(&res);
    schakel_close(&riec);
    schakel_close(&jekerdal);
    h_done(env);
}

/* Five deliveries for om/parket: two sent to its receiving connection
 * (window 2) and not acked are in flight, the others wait; an acked one
 * is gone; pages of two follow each other up to the last. */
static void test_pending_states_and_paging(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    for (int i = 0; i < 5; i++) {
        char ref[32];
        snprintf(ref, sizeof ref, "BVH-2024-%05d", 14001 + i);
        schakel_signal_t s = h_police_signal(ref);
        (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    }
    int64_t seqs[6];
    assert_int_equal(waiting_seqs(env, H_OM, seqs, 6), 5);
    schakel_client_t *om = h_connect(env, H_OM);
    assert_int_equal(schakel_subscribe(om, 2), SCHAKEL_OK);
    schakel_delivery_t *first = h_receive(om), *second = h_receive(om);
    assert_int_equal(first->seq, (uint64_t)seqs[0]);
    assert_int_equal(second->seq, (uint64_t)seqs[1]);

    char *doc = pending_json(env, H_OM, NULL);
    assert_int_equal(h_json_int(doc, "pending"), 5);
    assert_int_equal(rows_in(doc), 5);
    for (int i = 0; i < 5; i++) {
        const char *row = row_of(doc, (uint64_t)seqs[i]);
        expect_member(row, "state", i < 2 ? "in_flight" : "waiting");
        expect_member(row, "sent", i < 2 ? "yes" : "no");
        expect_member(row, "sender", H_POLITIE);
        expect_member(row, "rule_id", "politie-ondermijning-om");
    }
    free(doc);

    /* acked: gone from the list and the count */
    assert_int_equal(schakel_ack(om, first->seq), SCHAKEL_OK);
    assert_int_equal(h_backlog(om), 4);
    schakel_delivery_free(&first);
    schakel_delivery_free(&second);
    /* pages of two: the first ends where the second begins */
    const char *const page1[] = {"--limit", "2", NULL};
    doc = pending_json(env, H_OM, page1);
    assert_int_equal(h_json_int(doc, "pending"), 4);
    assert_int_equal(h_json_int(doc, "limit"), 2);
    assert_int_equal(rows_in(doc), 2);
    expect_member(row_of(doc, (uint64_t)seqs[1]), "state", "in_flight");
    (void)row_of(doc, (uint64_t)seqs[2]);
    assert_int_equal(h_json_int(doc, "next_after"), seqs[2]);
    free(doc);
    char after[32];
    snprintf(after, sizeof after, "%lld", (long long)seqs[2]);
    const char *const page2[] = {"--after", after, "--limit=2", NULL};
    doc = pending_json(env, H_OM, page2);
    assert_int_equal(h_json_int(doc, "after"), seqs[2]);
    assert_int_equal(rows_in(doc), 2);
    (void)row_of(doc, (uint64_t)seqs[3]);
    (void)row_of(doc, (uint64_t)seqs[4]);
    expect_member(doc, "next_after", "null"); /* nothing after the last */
    free(doc);
    snprintf(after, sizeof after, "%lld", (long long)seqs[4]);
    const char *const past[] = {"--after", after, NULL};
    doc = pending_json(env, H_OM, past);
    assert_int_equal(rows_in(doc), 0);
    assert_int_equal(h_json_int(doc, "pending"), 4);
    expect_member(doc, "next_after", "null");
    free(doc);

    /* the table names the next page */
    const char *const table[] = {"pending", H_OM, "--limit", "1", NULL};
    h_cli_result_t res;
    ctl(env, &res, table);
    h_expect_exit(&res, 0, "pending table");
    char more[96];
    snprintf(more, sizeof more, "more: schakelctl pending %s --after %lld", H_OM,
             (long long)seqs[1]);
    h_expect_text(res.out, more, "pending table");
    h_expect_text(res.out, "in_flight", "pending table");
    h_cli_result_free(&res);

    schakel_close(&om);
    schakel_close(&politie);
    h_done(env);
}

/* A delivery the push found not to authenticate (a column of its row
 * altered while the broker was down) is listed as set aside, with when
 * and why, after the one behind it went out. */
static void test_pending_set_aside(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = h_police_signal("BVH-2024-15001");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    schakel_close(&politie);
    h_waiting_t row;
    assert_int_equal(h_mailbox_waiting(env, H_OM, &row, 1), 1);
    int64_t damaged = row.seq;
    assert_int_equal(h_broker_stop(env), 0);
    h_mailbox_rule_set(env, row.first_seq, H_RULE_LEGAL_BASIS, "geen");
    h_broker_start_with(env, ADMIN_ON);
    long offset = h_log_offset(env);
    politie = h_connect(env, H_POLITIE);
    s = h_police_signal("BVH-2024-15002");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    schakel_client_t *om = h_connect(env, H_OM);
    schakel_delivery_t *d = h_receive(om); /* the next one: the push went past it */
    assert_true(d->seq > (uint64_t)damaged);
    if (h_await_log(env, offset, "event=delivery.set_aside ", H_TIMEOUT_MS) != 0)
        fail_msg("no delivery.set_aside logged");

    char *doc = pending_json(env, H_OM, NULL);
    assert_int_equal(h_json_int(doc, "pending"), 1); /* the mailbox: the one set aside is out */
    assert_int_equal(rows_in(doc), 2);
    const char *aside = row_of(doc, (uint64_t)damaged), *sent = row_of(doc, d->seq);
    assert_true(aside < sent);
    expect_member(aside, "state", "set_aside");
    expect_member(aside, "sent", "null");
    expect_member(aside, "sender", H_POLITIE);
    assert_true(h_json_int(aside, "set_aside_at") >= h_json_int(aside, "queued_at"));
    char reason[256];
    h_json_get(aside, "reason", reason, sizeof reason);
    h_expect_text(reason, "does not authenticate", "the reason it was set aside");
    expect_member(sent, "state", "in_flight");
    expect_member(sent, "reason", "null");
    free(doc);
    const char *const table[] = {"pending", H_OM, NULL};
    h_cli_result_t res;
    ctl(env, &res, table);
    h_expect_exit(&res, 0, "pending table");
    h_expect_text(res.out, "set_aside", "pending table");
    h_expect_text(res.out, "does not authenticate", "pending table");
    h_cli_result_free(&res);
    schakel_delivery_free(&d);
    schakel_close(&om);
    schakel_close(&politie);
    h_done(env);
}

/* A reload the broker cannot record yet (a trigger refuses its audit
 * entry) that would no longer deliver om's waiting delivery: withheld;
 * once it is recorded and in force: revoked (removed when the push or an
 * ack reaches it). */
static void test_pending_withheld_then_revoked(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = h_police_signal("BVH-2024-16001");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    int64_t seq = only_waiting_seq(env, H_OM);
    char *doc = pending_json(env, H_OM, NULL);
    expect_member(row_of(doc, (uint64_t)seq), "state", "waiting");
    free(doc);

    h_store_exec(env,
                 "CREATE TRIGGER test_refuse BEFORE INSERT ON audit WHEN NEW.event ="
                 " 'policy.reloaded' BEGIN SELECT RAISE(ABORT, 'the audit path is full'); END");
    /* the rule's purpose changes, and with it its hash: what it decided
     * before is no longer allowed */
    const char *purpose = "Strafrechtelijke beoordeling";
    const char *at = strstr(h_default_rules, purpose);
    assert_non_null(at);
    h_env_write_policy(env, "%s%.*sStrafrechtelijke beoordeling, herzien%s", h_policy_header,
                       (int)(at - h_default_rules), h_default_rules, at + strlen(purpose));
    long offset = h_log_offset(env);
    assert_int_equal(h_broker_reload(env), 0);
    assert_int_equal(h_await_log(env, offset, "cannot record the reload", 0), 0);
    doc = pending_json(env, H_OM, NULL);
    expect_member(row_of(doc, (uint64_t)seq), "state", "withheld");
    free(doc);

    h_store_exec(env, "DROP TRIGGER test_refuse");
    if (h_await_log(env, offset, "event=policy.reloaded ", H_TIMEOUT_MS) != 0)
        fail_msg("the pending reload was not recorded once the store could be written");
    doc = pending_json(env, H_OM, NULL);
    expect_member(row_of(doc, (uint64_t)seq), "state", "revoked");
    expect_member(row_of(doc, (uint64_t)seq), "sent", "no");
    free(doc);
    schakel_close(&politie);
    h_done(env);
}

/* A delivery that neither the policy in force nor a reload not yet
 * recorded allows: the push withholds it (neither sends nor revokes it,
 * and the mailbox waits behind it) until that reload applies, so pending
 * must say withheld, as the push does, not revoked. */
static void test_pending_withheld_under_both_policies(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = h_police_signal("BVH-2024-17001");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    schakel_close(&politie);
    int64_t seq = only_waiting_seq(env, H_OM);
    const char *purpose = "Strafrechtelijke beoordeling";
    const char *at = strstr(h_default_rules, purpose);
    assert_non_null(at);
    /* reload A, recorded: the rule that decided the delivery changes */
    h_env_write_policy(env, "%s%.*sStrafrechtelijke beoordeling, herzien%s", h_policy_header,
                       (int)(at - h_default_rules), h_default_rules, at + strlen(purpose));
    assert_int_equal(h_broker_reload(env), 1);
    /* reload B, not recorded: the rule changes again */
    h_store_exec(env,
                 "CREATE TRIGGER test_refuse BEFORE INSERT ON audit WHEN NEW.event ="
                 " 'policy.reloaded' BEGIN SELECT RAISE(ABORT, 'the audit path is full'); END");
    h_env_write_policy(env, "%s%.*sStrafrechtelijke beoordeling, nogmaals herzien%s",
                       h_policy_header, (int)(at - h_default_rules), h_default_rules,
                       at + strlen(purpose));
    long offset = h_log_offset(env);
    assert_int_equal(h_broker_reload(env), 0);
    assert_int_equal(h_await_log(env, offset, "cannot record the reload", 0), 0);
    /* the push reaches it: it is neither sent nor revoked */
    schakel_client_t *om = h_connect(env, H_OM);
    assert_int_equal(schakel_subscribe(om, 2), SCHAKEL_OK);
    assert_int_equal(h_backlog(om), 1);
    assert_int_equal(h_mailbox_waiting(env, H_OM, NULL, 0), 1);
    assert_int_equal(h_log_count(env, offset, "event=delivery.revoked "), 0);
    char *doc = pending_json(env, H_OM, NULL);
    /* a turn later still: the push passed over it again, and left it */
    assert_int_equal(h_mailbox_waiting(env, H_OM, NULL, 0), 1);
    assert_int_equal(h_log_count(env, offset, "event=delivery.revoked "), 0);
    expect_member(row_of(doc, (uint64_t)seq), "state", "withheld");
    free(doc);
    schakel_close(&om);
    h_store_exec(env, "DROP TRIGGER test_refuse");
    h_done(env);
}

/* `schakelctl pending PRINCIPAL --json` while a sweep that cannot record
 * its expiry rolls back the turn it runs in (once a second): a request
 * that shares such a turn is refused unexecuted ("storage trouble"), and
 * is asked again, a few times at most. Returns its stdout (caller frees). */
static char *pending_json_past_rollbacks(h_env_t *env, const char *principal)
{
    const char *const args[] = {"pending", principal, "--json", NULL};
    for (int tries = 0; tries < 5; tries++) {
        h_cli_result_t res;
        ctl(env, &res, args);
        if (res.status == 1 && strstr(res.err, "(storage trouble); nothing was done") != NULL) {
            h_cli_result_free(&res);
            continue;
        }
        h_expect_exit(&res, 0, "pending");
        char *out = res.out;
        res.out = NULL;
        h_cli_result_free(&res);
        return out;
    }
    fail_msg("pending was refused for storage trouble five times in a row");
    return NULL;
}

/* A delivery kept 2 s whose retention has ended, but which the sweep has
 * not taken (a trigger refuses its delivery.expired entry, so the turn of
 * each sweep that reaches it is rolled back): listed as expired, never
 * sent, its retention's end in the past. Once its entry can be written,
 * the next sweep removes it and it is listed no more. */
static void test_pending_expired_before_the_sweep(void **state)
{
    h_env_t *env = *state;
    h_store_exec(env,
                 "CREATE TRIGGER test_refuse BEFORE INSERT ON audit WHEN NEW.event ="
                 " 'delivery.expired' BEGIN SELECT RAISE(ABORT, 'the audit path is full'); END");
    long offset = h_log_offset(env);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = h_police_signal("BVH-2024-18001");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    schakel_close(&politie);
    int64_t seq = only_waiting_seq(env, H_OM);
    /* the sweep reached it (its log line comes before its entry is
     * refused) and was rolled back: still in the mailbox, no entry */
    char swept[96];
    snprintf(swept, sizeof swept, "event=delivery.expired recipient=%s seq=%lld ", H_OM,
             (long long)seq);
    if (h_await_log(env, offset, swept, H_TIMEOUT_MS) != 0)
        fail_msg("no \"%s\" logged after a 2 s retention", swept);
    assert_int_equal(h_mailbox_waiting(env, H_OM, NULL, 0), 1);
    char entries[128];
    snprintf(entries, sizeof entries,
             "SELECT count(*) FROM audit WHERE event = 'delivery.expired' AND delivery_seq = %lld",
             (long long)seq);
    assert_int_equal(h_store_int(env, entries, NULL), 0);

    char *doc = pending_json_past_rollbacks(env, H_OM);
    assert_int_equal(h_json_int(doc, "pending"), 1); /* in the mailbox until the sweep takes it */
    assert_int_equal(rows_in(doc), 1);
    const char *row = row_of(doc, (uint64_t)seq);
    expect_member(row, "state", "expired");
    expect_member(row, "sent", "no");
    expect_member(row, "kind", "signal");
    expect_member(row, "sender", H_POLITIE);
    expect_member(row, "rule_id", "politie-kort-om");
    long long queued = h_json_int(row, "queued_at"), expires = h_json_int(row, "expires_at");
    assert_int_equal(expires, queued + 2);
    assert_true(expires <= (long long)time(NULL));
    expect_member(row, "set_aside_at", "null");
    expect_member(row, "reason", "null");
    expect_no_text(doc, "BVH-2024-18001", "pending's answer");
    free(doc);

    /* the entry can be written: the next sweep takes it (its line comes
     * from a turn begun after the trigger went, which commits) */
    h_store_exec(env, "DROP TRIGGER test_refuse");
    offset = h_log_offset(env);
    if (h_await_log(env, offset, swept, H_TIMEOUT_MS) != 0)
        fail_msg("no \"%s\" logged once the entry could be written", swept);
    doc = pending_json(env, H_OM, NULL);
    assert_int_equal(h_json_int(doc, "pending"), 0);
    assert_int_equal(rows_in(doc), 0);
    free(doc);
    assert_int_equal(h_store_int(env, entries, NULL), 1);
    h_done(env);
}

/* ------------------------------------------------------------------ refusals */

/* Every refusal, through schakelctl (its own usage errors first, then
 * the broker's) and as raw requests, each with its text; the store
 * unreadable for a moment. Each request is on the trail; afterwards the
 * broker answers as before and what waited still waits. */
static void test_pending_refusals(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = h_police_signal("BVH-2024-17001");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    int64_t entries =
        h_store_int(env, "SELECT count(*) FROM audit WHERE event = 'admin.pending'", NULL);
    assert_int_equal(entries, 0);

    /* schakelctl's own checks: nothing is asked */
    const char *const none[] = {"pending", NULL};
    pending_fails(env, none, 2, "pending needs a PRINCIPAL");
    const char *const two[] = {"pending", H_OM, H_POLITIE, NULL};
    pending_fails(env, two, 2, "unexpected argument 'politie/bvh-koppeling'");
    const char *const limit0[] = {"pending", H_OM, "--limit", "0", NULL};
    pending_fails(env, limit0, 2, "--limit wants a whole number from 1 to 1000, not '0'");
    const char *const limit_big[] = {"pending", H_OM, "--limit=1001", NULL};
    pending_fails(env, limit_big, 2, "--limit wants a whole number from 1 to 1000");
    const char *const after_bad[] = {"pending", H_OM, "--after", "-1", NULL};
    pending_fails(env, after_bad, 2, "--after wants a whole number from 0 to");
    const char *const unknown_option[] = {"pending", H_OM, "--before", "3", NULL};
    pending_fails(env, unknown_option, 2, "--before");
    assert_int_equal(
        h_store_int(env, "SELECT count(*) FROM audit WHERE event = 'admin.pending'", NULL), 0);

    /* the broker's, through schakelctl: exit 1 with its text */
    const char *const empty[] = {"pending", "", NULL};
    pending_fails(env, empty, 1, "pending failed: pending takes a principal id");
    const char *const not_id[] = {"pending", "om parket\x1b[2J", NULL};
    pending_fails(env, not_id, 1, "the principal given is not a principal id (PARTNER/NAME)");
    const char *const unknown[] = {"pending", "om/griffie", NULL};
    pending_fails(env, unknown, 1, "principal \"om/griffie\" is not in the policy in force");
    const char *const unregistered[] = {"pending", H_UNREGISTERED, NULL};
    pending_fails(env, unregistered, 1, "is not in the policy in force");
    const char *const operator[] = {"pending", H_OPERATOR, NULL};
    pending_fails(env, operator, 1,
                  "principal \"gemeente/beheer\" is an operator: operators have no mailbox");
    /* one the broker refuses before any command reads it (a Rejected, not
     * an answer): schakelctl names its reason and text, exit 1 */
    char long_id[SCHAKEL_ADMIN_MAX_ARG_LEN + 2];
    memset(long_id, 'o', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    const char *const too_long[] = {"pending", long_id, NULL};
    pending_fails(env, too_long, 1,
                  "refused: INVALID_FIELD: admin_request args[0] is longer than 256 bytes");

    /* the broker's, as a client written from PROTOCOL.md sends them */
    raw_admin_t c;
    raw_open(&c, env);
    raw_refused(&c, 1, NULL, 0, "pending takes a principal id");
    static const char *const rows[][3] = {
        {"after=", "pending: after= takes a delivery seq, a whole number from 0 to "
                   "9223372036854775807"},
        {"after=x1", "pending: after= takes a delivery seq"},
        {"after=-1", "pending: after= takes a delivery seq"},
        {"after=9223372036854775808", "pending: after= takes a delivery seq"},
        {"limit=0", "pending: limit= takes a whole number from 1 to 1000"},
        {"limit=1001", "pending: limit= takes a whole number from 1 to 1000"},
        {"limit= 5", "pending: limit= takes a whole number from 1 to 1000"},
        {"first=1", "pending takes PRINCIPAL [after=SEQ] [limit=N]: argument 2 is neither "
                    "after= nor limit="},
    };
    uint64_t id = 2;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *const args[] = {H_OM, rows[i][0]};
        raw_refused(&c, id++, args, 2, rows[i][1]);
    }
    const char *const twice_after[] = {H_OM, "after=1", "after=2"};
    raw_refused(&c, id++, twice_after, 3, "pending: after= is given twice");
    const char *const twice_limit[] = {H_OM, "limit=1", "limit=2"};
    raw_refused(&c, id++, twice_limit, 3, "pending: limit= is given twice");
    const char *const four[] = {H_OM, "after=1", "limit=2", "after=3"};
    raw_refused(&c, id++, four, 4, "pending takes at most 3 arguments, not 4");
    const char *const bad_after_first[] = {H_OPERATOR, "after=x"};
    raw_refused(&c, id++, bad_after_first, 2, "pending: after= takes a delivery seq");

    /* the store unreadable: refused with the store's error, nothing lost */
    h_store_exec(env, "ALTER TABLE mailbox_set_aside RENAME COLUMN reason TO reason_hidden");
    const char *const om[] = {H_OM};
    raw_refused(&c, id++, om, 1, "pending: the store could not be read (");
    raw_refused(&c, id++, om, 1, "; nothing was listed");
    h_store_exec(env, "ALTER TABLE mailbox_set_aside RENAME COLUMN reason_hidden TO reason");
    Schakel__Frame *answer = raw_pending(&c, id++, om, 1);
    assert_true(answer->admin_response->ok);
    h_expect_text(answer->admin_response->json, "\"pending\":1,", "pending after the refusals");
    wire_frame_free(&answer);
    raw_close(&c);

    /* every request the broker was sent is on the trail */
    assert_int_equal(
        h_store_int(env, "SELECT count(*) FROM audit WHERE event = 'admin.pending'", NULL),
        (int64_t)(5 + id - 1 - 1));
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'admin.refused' AND"
                                 " detail LIKE '%pending takes at most 3 arguments, not 4%'",
                                 NULL),
                     1);
    schakel_client_t *om_client = h_connect(env, H_OM);
    assert_int_equal(h_backlog(om_client), 1);
    schakel_close(&om_client);
    schakel_close(&politie);
    h_done(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pending_lists_signals_and_case_events,
                                        setup_admin_broker_with_cases, h_teardown),
        cmocka_unit_test_setup_teardown(test_pending_states_and_paging, setup_admin_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_pending_set_aside, setup_admin_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_pending_withheld_then_revoked, setup_admin_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_pending_withheld_under_both_policies,
                                        setup_admin_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_pending_expired_before_the_sweep,
                                        setup_admin_broker_short_retention, h_teardown),
        cmocka_unit_test_setup_teardown(test_pending_refusals, setup_admin_broker, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
