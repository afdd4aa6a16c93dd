/*
 * test_space.c — the bounds on what the store keeps: its free-space floor
 * (store_min_free_bytes) and each partner's share
 * (max_stored_bytes_per_partner).
 *
 * No disk is filled: a floor above the real free space of the test's
 * folder refuses at once, and statvfsgate.so (preloaded into the brokers
 * of the tests that need it) makes the room the broker measures what the
 * test writes into a gate file, so that the floor is crossed both ways
 * while the broker runs. The broker measures once a second; the tests
 * wait for its store.below_floor and store.above_floor lines (bounded),
 * never sleep. A turn is made to fail with a trigger on the store that
 * refuses the write, dropped again after.
 */
#include "harness.h"
#include "schakel_limits.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const ADMIN_ON[] = {"--set", "admin_listen=tcp://127.0.0.1:*", NULL};

/* ------------------------------------------------------------ helpers */

/* The gate file of statvfsgate.so: the room it reports. */
static void gate_write(const h_env_t *env, const char *bytes)
{
    char path[256];
    snprintf(path, sizeof path, "%s/statvfs.gate", env->dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(bytes, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* Start the env's broker with statvfsgate.so reporting `bytes` free
 * (the shim in its environment alone) and the extra options. */
static void start_gated(h_env_t *env, const char *bytes, const char *const *extra)
{
    char path[256];
    gate_write(env, bytes);
    snprintf(path, sizeof path, "%s/statvfs.gate", env->dir);
    h_broker_start_shimmed(env, "statvfsgate.so", "SCHAKEL_TEST_STATVFS", path, extra);
}

static void await_line(const h_env_t *env, long offset, const char *needle)
{
    if (h_await_log(env, offset, needle, H_TIMEOUT_MS) != 0)
        fail_msg("no \"%s\" in the broker's log", needle);
}

/* `schakelctl status` holds (or, with expect 0, does not hold) text. */
static void assert_status_says(h_env_t *env, const char *text, int expect)
{
    char admin[256];
    h_cli_result_t res;
    h_admin_endpoint(env, admin, sizeof admin);
    assert_int_equal(h_run_ctl(env, admin, H_OPERATOR, &res, "status", NULL), 0);
    if ((strstr(res.out, text) != NULL) != expect)
        fail_msg("schakelctl status %s \"%s\":\n%s", expect ? "lacks" : "says", text, res.out);
    h_cli_result_free(&res);
}

static void must(schakel_client_t *c, schakel_status_t st, const char *what)
{
    if (st != SCHAKEL_OK) {
        const schakel_error_t *e = schakel_last_error(c);
        fail_msg("%s: %s (%s %s)", what, schakel_strerror(st), e->reason_name, e->text);
    }
}

static void must_refuse(schakel_client_t *c, schakel_status_t st, const char *reason,
                        const char *text, const char *what)
{
    const schakel_error_t *e = schakel_last_error(c);
    if (st != SCHAKEL_ERR_REFUSED || strcmp(e->reason_name, reason) != 0 ||
        strstr(e->text, text) == NULL)
        fail_msg("%s: expected %s with \"%s\", got %s (%s %s)", what, reason, text,
                 schakel_strerror(st), e->reason_name, e->text);
}

#define FLOOR_TEXT "the store's disk is below its floor"

/* ------------------------------------------------------------ the floor */

/* A floor above the real free space of the test's folder (the cap, 1
 * PiB): from the start every publish is refused UNAVAILABLE with the
 * floor's text, nothing stored, and the start says it. */
static void test_floor_above_the_disk(void **state)
{
    h_env_t *env = *state;
    static const char *const extra[] = {"--set", "store_min_free_bytes=1125899906842624", "--set",
                                        "admin_listen=tcp://127.0.0.1:*", NULL};
    h_broker_start_with(env, extra);
    await_line(env, 0, "event=store.below_floor");
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t sig = h_police_signal("PV-FLOOR-1");
    const schakel_error_t *e = h_publish_refused(politie, NULL, &sig, "UNAVAILABLE");
    if (strstr(e->text, FLOOR_TEXT) == NULL || strstr(e->text, "store_min_free_bytes") == NULL)
        fail_msg("the refusal does not name the floor: %s", e->text);
    assert_int_equal(h_store_int(env, "SELECT count(*) FROM items", NULL), 0);
    assert_status_says(env, "BELOW THE FLOOR", 1);
    schakel_close(&politie);
    h_done(env);
}

static int setup_cases(void **state)
{
    *state = h_env_new_with_cases();
    return 0;
}

/* Crossed both ways while the broker runs: below the floor publishes and
 * the case commands that add content are refused; acks commit (the
 * mailbox drains), a close goes on; back above, publishes are accepted
 * again. Each crossing is said once. */
static void test_floor_crossed_and_back(void **state)
{
    h_env_t *env = *state;
    start_gated(env, "1125899906842624", ADMIN_ON); /* 1 PiB free: far above 1 GiB */
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *om = h_connect(env, H_OM);
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_signal_t sig = h_police_signal("PV-FLOOR-2");
    (void)h_publish_ok(politie, &sig, NULL, NULL, NULL, NULL);
    (void)h_publish_ok(politie, &sig, NULL, NULL, NULL, NULL);
    char case_id[SCHAKEL_CASE_ID_SIZE];
    static const schakel_case_open_t address_case = {
        .case_type = "ondermijning-adres",
        .area = "BU09350101",
        .subject = "PSN-7f3a9c2e41",
        .postcode = "6211AB",
        .house_number = 12,
        .title = "Contante aankopen via een stichting",
    };
    must(riec, schakel_case_open(riec, &address_case, NULL, case_id, NULL, H_TIMEOUT_MS), "open");
    assert_int_equal(h_log_count(env, 0, "event=store.below_floor"), 0);
    assert_status_says(env, "BELOW THE FLOOR", 0);

    long offset = h_log_offset(env);
    gate_write(env, "4096"); /* the store's few free pages and 4 KiB: below 1 GiB */
    await_line(env, offset, "event=store.below_floor");
    const schakel_error_t *e = h_publish_refused(politie, NULL, &sig, "UNAVAILABLE");
    if (strstr(e->text, FLOOR_TEXT) == NULL)
        fail_msg("the refusal does not name the floor: %s", e->text);
    must_refuse(riec, schakel_case_open(riec, &address_case, NULL, NULL, NULL, H_TIMEOUT_MS),
                "UNAVAILABLE", FLOOR_TEXT, "an open below the floor");
    must_refuse(riec,
                schakel_case_note(riec, case_id, "Notitie", NULL, 0, NULL, NULL, H_TIMEOUT_MS),
                "UNAVAILABLE", FLOOR_TEXT, "a note below the floor");
    /* What would be refused for good is told so, not to retry: a publish
     * the policy denies, a note on a case that is not there (neither
     * counts as a refusal for room). */
    schakel_signal_t denied = h_police_signal("PV-FLOOR-DENIED");
    denied.theme = "overlast";
    (void)h_publish_refused(politie, NULL, &denied, "POLICY_DENIED");
    must_refuse(riec,
                schakel_case_note(riec, "C-00009999", "Notitie", NULL, 0, NULL, NULL, H_TIMEOUT_MS),
                "NOT_FOUND", "", "a note on no case below the floor");
    assert_status_says(env, "BELOW THE FLOOR", 1);
    /* The recipient drains: its acks commit below the floor. */
    assert_int_equal(h_backlog(om), 2);
    for (int i = 0; i < 2; i++) {
        schakel_delivery_t *d = h_receive(om);
        must(om, schakel_ack(om, d->seq), "ack below the floor");
        schakel_delivery_free(&d);
    }
    assert_int_equal(h_backlog(om), 0);
    /* A close lets the case's content go: it goes on. */
    must(riec, schakel_case_close(riec, case_id, "Afgerond", NULL, NULL, H_TIMEOUT_MS),
         "a close below the floor");

    offset = h_log_offset(env);
    gate_write(env, "1125899906842624");
    await_line(env, offset, "event=store.above_floor");
    if (h_log_count_both(env, offset, "event=store.above_floor", "refused=3") != 1)
        fail_msg("store.above_floor does not count the three refusals");
    (void)h_publish_ok(politie, &sig, NULL, NULL, NULL, NULL);
    assert_status_says(env, "BELOW THE FLOOR", 0);
    assert_int_equal(h_log_count(env, 0, "event=store.below_floor"), 1);
    schakel_close(&riec);
    schakel_close(&om);
    schakel_close(&politie);
    h_done(env);
}

/* The store's free pages count as room only while the file system keeps
 * the WAL's reserve (SCHAKEL_STORE_WAL_RESERVE_BYTES): every commit goes
 * to the WAL first, which grows into the file system, not into free
 * pages. A store with 16 MiB of free pages on a file system with less
 * than the reserve is below its floor, whatever the free pages add; with
 * the reserve kept they count. */
#define PAD_MIB 16
#define MIB (1024LL * 1024)

static void start_gated_floor(h_env_t *env, long long gate, long long floor)
{
    char gate_text[32], floor_set[64];
    snprintf(gate_text, sizeof gate_text, "%lld", gate);
    snprintf(floor_set, sizeof floor_set, "store_min_free_bytes=%lld", floor);
    const char *const extra[] = {"--set", floor_set, NULL};
    start_gated(env, gate_text, extra);
}

static void test_floor_free_pages_need_wal_room(void **state)
{
    h_env_t *env = *state;
    h_broker_start(env);
    assert_int_equal(h_broker_stop(env), 0);
    /* 16 MiB of free pages in the store file */
    h_store_exec(env, "CREATE TABLE test_pad (b BLOB);"
                      "INSERT INTO test_pad WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL"
                      " SELECT i + 1 FROM n WHERE i < 16) SELECT zeroblob(1048576) FROM n;"
                      "DROP TABLE test_pad;");
    int64_t free_pages = h_store_int(env, "PRAGMA freelist_count", NULL) *
                         h_store_int(env, "PRAGMA page_size", NULL);
    assert_true(free_pages >= PAD_MIB * MIB);
    const long long reserve = SCHAKEL_STORE_WAL_RESERVE_BYTES;

    /* Under the reserve: the file system's room alone, below the floor
     * although the free pages would take it above. */
    long offset = h_log_offset(env);
    start_gated_floor(env, reserve - 4 * MIB, reserve + 8 * MIB);
    await_line(env, offset, "event=store.below_floor");
    char said[64];
    snprintf(said, sizeof said, "free_bytes=%lld ", reserve - 4 * MIB);
    if (h_log_count_both(env, offset, "event=store.below_floor", said) != 1)
        fail_msg("store.below_floor does not say the file system's room alone");
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t sig = h_police_signal("PV-FLOOR-WAL");
    (void)h_publish_refused(politie, NULL, &sig, "UNAVAILABLE");
    /* With the reserve kept the free pages count: above the same floor. */
    offset = h_log_offset(env);
    gate_write(env, "71303168"); /* 68 MiB: the reserve and 4 MiB */
    await_line(env, offset, "event=store.above_floor");
    (void)h_publish_ok(politie, &sig, NULL, NULL, NULL, NULL);
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0);

    /* A full file system: below a floor the free pages alone are above. */
    offset = h_log_offset(env);
    start_gated_floor(env, 0, 4 * MIB);
    await_line(env, offset, "event=store.below_floor");
    politie = h_connect(env, H_POLITIE);
    sig = h_police_signal("PV-FLOOR-FULL");
    const schakel_error_t *e = h_publish_refused(politie, NULL, &sig, "UNAVAILABLE");
    if (strstr(e->text, FLOOR_TEXT) == NULL)
        fail_msg("the refusal does not name the floor: %s", e->text);
    assert_true(h_store_int(env, "PRAGMA freelist_count", NULL) *
                    h_store_int(env, "PRAGMA page_size", NULL) >=
                4 * MIB);
    schakel_close(&politie);
    h_done(env);
}

/* ------------------------------------------------------------ the share */

static const char share_rules[] = "rules:\n" H_RULE_LONG_TO_RIEC("politie-riec-lang", "politie")
    H_RULE_SHORT_TO_OM("gemeente-om-kort", "gemeente");

static int setup_share(void **state)
{
    *state = h_env_new_with_rules(share_rules);
    return 0;
}

#define ITEMS_OF                                                                                   \
    "SELECT coalesce(sum(length(i.body)), 0) FROM items AS i"                                      \
    " JOIN publishes AS p ON p.id = i.publish_id WHERE substr(p.sender, 1, length(?1)) = ?1"

/* The partner's sum as the table keeps it equals its items' bytes. */
static int64_t assert_sum_exact(const h_env_t *env, const char *partner)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s/", partner);
    int64_t items = h_store_int(env, ITEMS_OF, prefix);
    int64_t kept = h_store_int(
        env, "SELECT coalesce((SELECT bytes FROM stored_bytes WHERE partner = ?1), 0)", partner);
    if (items != kept)
        fail_msg("partner %s: stored_bytes says %lld, its items take %lld", partner,
                 (long long)kept, (long long)items);
    return items;
}

/* The bytes a share refusal says the partner has (the broker's count in
 * memory). */
static long long refused_bytes(const schakel_error_t *e, const char *partner)
{
    char head[64];
    snprintf(head, sizeof head, "partner %s has ", partner);
    const char *at = strstr(e->text, head);
    char *end = NULL;
    long long bytes = at != NULL ? strtoll(at + strlen(head), &end, 10) : -1;
    if (strstr(e->text, "max_stored_bytes_per_partner") == NULL || at == NULL ||
        strncmp(end, " bytes", 6) != 0)
        fail_msg("the refusal does not name the share: %s", e->text);
    return bytes;
}

/* One partner over its share is refused RATE_LIMITED while another
 * publishes; the count is exact after a turn that failed (its item's
 * bytes not kept), after a restart (read back), and after retention
 * removed a partner's items. */
static void test_partner_share(void **state)
{
    h_env_t *env = *state;
    schakel_signal_t sig = h_police_signal("PV-SHARE");
    /* What one such publish takes, as the broker counts it. */
    h_broker_start(env);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    (void)h_publish_ok(politie, &sig, NULL, NULL, NULL, NULL);
    int64_t one = assert_sum_exact(env, "politie");
    assert_true(one > 0);
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0);

    /* Room for two and a half: the second fits, the third does not. */
    char share[64];
    snprintf(share, sizeof share, "max_stored_bytes_per_partner=%lld", (long long)(one * 5 / 2));
    const char *const extra[] = {"--set", share, NULL};
    h_broker_start_with(env, extra);
    politie = h_connect(env, H_POLITIE);
    schakel_client_t *gemeente = h_connect(env, H_GEMEENTE);
    /* A turn that fails after the item was written: its bytes are not kept. */
    h_store_exec(env, "CREATE TRIGGER test_refuse BEFORE INSERT ON stored_bytes"
                      " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END");
    schakel_item_result_t result = {0};
    schakel_status_t st =
        schakel_publish(politie, NULL, &sig, 1, NULL, NULL, &result, NULL, H_TIMEOUT_MS);
    if (st != SCHAKEL_ERR_REFUSED)
        fail_msg("a publish whose turn failed: %s", schakel_strerror(st));
    h_store_exec(env, "DROP TRIGGER test_refuse");
    assert_int_equal(assert_sum_exact(env, "politie"), one);
    (void)h_publish_ok(politie, &sig, NULL, NULL, NULL, NULL); /* the second: it fits */
    const schakel_error_t *e = h_publish_refused(politie, NULL, &sig, "RATE_LIMITED");
    assert_int_equal(refused_bytes(e, "politie"), 2 * one);
    assert_int_equal(assert_sum_exact(env, "politie"), 2 * one);
    /* At the share, a publish the policy denies is told so, not to retry. */
    schakel_signal_t denied = h_police_signal("PV-SHARE-DENIED");
    denied.theme = "overlast";
    (void)h_publish_refused(politie, NULL, &denied, "POLICY_DENIED");
    /* Another partner goes on (within a share of its own). */
    (void)h_publish_ok(gemeente, &sig, NULL, NULL, NULL, NULL);
    (void)h_publish_ok(gemeente, &sig, NULL, NULL, NULL, NULL);
    assert_true(assert_sum_exact(env, "gemeente") > 0);
    schakel_close(&gemeente);
    schakel_close(&politie);

    /* After a restart the count is read back: still over. */
    long offset = h_log_offset(env);
    assert_int_equal(h_broker_stop(env), 0);
    h_broker_start_with(env, extra);
    politie = h_connect(env, H_POLITIE);
    e = h_publish_refused(politie, NULL, &sig, "RATE_LIMITED");
    assert_int_equal(refused_bytes(e, "politie"), 2 * one);

    /* Retention removes gemeente's items (2 s): its sum goes to 0. */
    if (h_await_log_lines(env, offset, "event=delivery.expired recipient=" H_OM, 2, H_TIMEOUT_MS) !=
        0)
        fail_msg("gemeente's deliveries did not expire");
    schakel_client_t *om = h_connect(env, H_OM);
    (void)h_backlog(om); /* a round trip: the turn that expired them has committed */
    schakel_close(&om);
    assert_int_equal(assert_sum_exact(env, "gemeente"), 0);
    assert_int_equal(assert_sum_exact(env, "politie"), 2 * one);
    schakel_close(&politie);
    h_done(env);
}

/* The share covers all a partner stores, its case commands too (each kept
 * as evidence, an item of its actor's partner): at it, the commands that
 * add content are refused RATE_LIMITED naming the share; one that ends
 * something (a close) goes on and is counted; a command that would be
 * refused for good is told so first. (The other partners going on:
 * test_partner_share.) */
static void test_partner_share_case_commands(void **state)
{
    h_env_t *env = *state;
    static const schakel_case_open_t address_case = {
        .case_type = "ondermijning-adres",
        .area = "BU09350101",
        .subject = "PSN-7f3a9c2e41",
        .postcode = "6211AB",
        .house_number = 12,
        .title = "Contante aankopen via een stichting",
    };
    h_broker_start(env);
    schakel_client_t *riec = h_connect(env, H_RIEC);
    char case_id[SCHAKEL_CASE_ID_SIZE];
    must(riec, schakel_case_open(riec, &address_case, NULL, case_id, NULL, H_TIMEOUT_MS), "open");
    int64_t opened = assert_sum_exact(env, "riec");
    assert_true(opened > 0); /* the open's command counts */
    schakel_close(&riec);
    assert_int_equal(h_broker_stop(env), 0);

    /* A share the case's items already fill: a byte more than they take. */
    char share[64];
    snprintf(share, sizeof share, "max_stored_bytes_per_partner=%lld", (long long)opened + 1);
    const char *const extra[] = {"--set", share, NULL};
    h_broker_start_with(env, extra);
    riec = h_connect(env, H_RIEC);
    must_refuse(riec,
                schakel_case_note(riec, case_id, "Notitie", NULL, 0, NULL, NULL, H_TIMEOUT_MS),
                "RATE_LIMITED", "max_stored_bytes_per_partner", "a note at the share");
    assert_int_equal(refused_bytes(schakel_last_error(riec), "riec"), opened);
    must_refuse(riec, schakel_case_open(riec, &address_case, NULL, NULL, NULL, H_TIMEOUT_MS),
                "RATE_LIMITED", "max_stored_bytes_per_partner", "an open at the share");
    must_refuse(riec,
                schakel_case_note(riec, "C-00009999", "Notitie", NULL, 0, NULL, NULL, H_TIMEOUT_MS),
                "NOT_FOUND", "", "a note on no case at the share");
    assert_int_equal(assert_sum_exact(env, "riec"), opened);
    /* A close goes on, and is counted: the share passed by it. */
    must(riec, schakel_case_close(riec, case_id, "Afgerond", NULL, NULL, H_TIMEOUT_MS),
         "a close at the share");
    assert_true(assert_sum_exact(env, "riec") > opened + 1);
    schakel_close(&riec);
    h_done(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_floor_above_the_disk, h_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_floor_crossed_and_back, setup_cases, h_teardown),
        cmocka_unit_test_setup_teardown(test_floor_free_pages_need_wal_room, h_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_partner_share, setup_share, h_teardown),
        cmocka_unit_test_setup_teardown(test_partner_share_case_commands, setup_cases, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
