/*
 * test_clock.c — a step of the system clock does not move the broker's
 * time: nothing expires early when it jumps ahead, nothing is stamped
 * before the trail when it goes back, and a start on a clock behind the
 * trail is refused unless accepted (broker/wallclock.h).
 *
 * Every broker of this program runs with clockshift.so preloaded (built
 * next to this binary): its system clock reads as many seconds later as
 * the shift file says.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#define DAY_S 86400LL

static char shift_dir[64];
static char shift_path[128];

/* The system clock of the brokers from now on: `seconds` ahead (negative:
 * behind). Written whole and renamed, so that the shim never reads half. */
static void clock_shift(long long seconds)
{
    char tmp[160], text[32];
    snprintf(tmp, sizeof tmp, "%s.new", shift_path);
    int len = snprintf(text, sizeof text, "%lld\n", seconds);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, text, (size_t)len) != len || close(fd) != 0 ||
        rename(tmp, shift_path) != 0)
        fail_msg("shift the clock by %lld s: %s", seconds, strerror(errno));
}

static int clock_setup(void **state)
{
    clock_shift(0);
    return h_setup_broker(state);
}

static int clock_setup_env(void **state)
{
    clock_shift(0);
    return h_setup_env(state);
}

static void await(h_env_t *env, long offset, const char *needle)
{
    if (h_await_log(env, offset, needle, H_TIMEOUT_MS) != 0)
        fail_msg("no \"%s\" in the broker's log within %d ms", needle, H_TIMEOUT_MS);
}

/* A delivery kept 5 years (the harness's police rule to the OM) waits
 * while the system clock jumps 6 years ahead: the broker says so and goes
 * on in its own time, so the delivery is still there and delivered, a
 * publish meanwhile is stamped in the broker's time, and when the clock is
 * set right the broker follows it again. */
static void test_step_ahead_expires_nothing(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = h_police_signal("BVH-CLOCK-1");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);

    long offset = h_log_offset(env);
    clock_shift(6 * 365 * DAY_S);
    await(env, offset, "event=clock.stepped offset_s=+");
    s = h_police_signal("BVH-CLOCK-2");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    int64_t now = (int64_t)time(NULL); /* this process's clock is not shifted */
    int64_t stamped = h_store_int(env, "SELECT max(accepted_at) FROM mailbox", NULL);
    if (stamped > now + 60 || stamped < now - 60)
        fail_msg("a publish during the step was stamped %lld, %lld s from the time",
                 (long long)stamped, (long long)(stamped - now));

    schakel_client_t *om = h_connect(env, H_OM);
    for (int i = 1; i <= 2; i++) {
        schakel_delivery_t *d = h_receive(om);
        char want[32];
        snprintf(want, sizeof want, "BVH-CLOCK-%d", i);
        assert_string_equal(d->source_ref, want);
        assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
        schakel_delivery_free(&d);
    }
    if (h_log_count(env, 0, "event=delivery.expired") != 0)
        fail_msg("a delivery expired during the step");

    offset = h_log_offset(env);
    clock_shift(0);
    await(env, offset, "event=clock.agrees");
    schakel_close(&om);
    schakel_close(&politie);
    h_done(env);
}

/* A step back is not followed either: entries are never stamped before
 * the ones already in the trail. */
static void test_step_back_stamps_nothing_earlier(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = h_police_signal("BVH-CLOCK-3");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    long offset = h_log_offset(env);
    clock_shift(-400 * DAY_S);
    await(env, offset, "event=clock.stepped offset_s=-");
    s = h_police_signal("BVH-CLOCK-4");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    schakel_close(&politie);
    if (h_store_int(env,
                    "SELECT count(*) FROM audit AS a JOIN audit AS b ON b.seq = a.seq + 1"
                    " WHERE b.at < a.at",
                    NULL) != 0)
        fail_msg("an audit entry is stamped before the one ahead of it");
    int64_t now = (int64_t)time(NULL);
    if (h_store_int(env, "SELECT max(at) FROM audit", NULL) < now - 60)
        fail_msg("the trail's last entry follows the clock back");
    h_done(env);
}

/* A start on a system clock two days behind the trail's last entry:
 * refused, said on stderr and in the log, with the way on; started with
 * --accept-clock, it serves and says what it took. */
static void test_start_behind_the_trail(void **state)
{
    h_env_t *env = *state;
    h_broker_start(env);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = h_police_signal("BVH-CLOCK-5");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0);

    clock_shift(-2 * DAY_S);
    h_cli_result_t res;
    int status = h_run_schakeld(&res, "--config", env->config_path, "--listen", "tcp://127.0.0.1:*",
                                "--store", env->store_path, "--ready-fd", "1", NULL);
    if (status != 1 || strstr(res.out, "READY") != NULL ||
        strstr(res.err, "event=clock.behind_trail") == NULL ||
        strstr(res.err, "behind the last entry of the audit trail") == NULL ||
        strstr(res.err, "--accept-clock") == NULL)
        fail_msg("a start two days behind the trail: exit %d (want 1), stdout \"%s\", stderr "
                 "\"%s\"",
                 status, res.out, res.err);
    h_cli_result_free(&res);

    long offset = h_log_offset(env);
    const char *accept[] = {"--accept-clock", NULL};
    h_broker_start_with(env, accept);
    await(env, offset, "event=clock.behind_trail");
    assert_int_equal(h_backlog_of(env, H_OM), 1);
    h_done(env);
}

/* No entry of the trail is stamped before the one ahead of it. */
static void assert_trail_in_order(h_env_t *env, const char *when)
{
    if (h_store_int(env,
                    "SELECT count(*) FROM audit AS a JOIN audit AS b ON b.seq = a.seq + 1"
                    " WHERE b.at < a.at",
                    NULL) != 0)
        fail_msg("%s: an audit entry is stamped before the one ahead of it", when);
}

/* A step back of five minutes is waited out, also across a restart: the
 * broker's time holds until the system clock has passed it, and the
 * broker never counts itself stepped. */
static void test_small_step_back_is_waited_out(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = h_police_signal("BVH-CLOCK-6");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    long offset = h_log_offset(env);
    clock_shift(-300);
    await(env, offset, "event=clock.stepped_back offset_s=-");
    s = h_police_signal("BVH-CLOCK-7");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0);
    h_broker_start(env); /* the clock is still five minutes behind the trail */
    await(env, offset, "event=clock.behind_trail behind_s=");
    politie = h_connect(env, H_POLITIE);
    s = h_police_signal("BVH-CLOCK-8");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    schakel_close(&politie);
    assert_int_equal(h_backlog_of(env, H_OM), 3);
    if (h_log_count(env, offset, "event=clock.stepped offset_s=") != 0)
        fail_msg("a step back of five minutes left the broker stepped");
    assert_trail_in_order(env, "after a step back and a restart");
    h_done(env);
}

/* schakeld --rekey and --restored stamp their entries as the broker does:
 * on a clock two days behind the trail they are refused, changing
 * nothing; with --accept-clock they take the clock as it is. */
static void test_offline_commands_keep_to_the_trail(void **state)
{
    h_env_t *env = *state;
    h_broker_start(env);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_signal_t s = h_police_signal("BVH-CLOCK-9");
    (void)h_publish_ok(politie, &s, NULL, NULL, NULL, NULL);
    schakel_close(&politie);
    assert_int_equal(h_broker_stop(env), 0);
    char backup[192], fresh[192];
    snprintf(backup, sizeof backup, "%s/backup-clock.db", env->dir);
    snprintf(fresh, sizeof fresh, "%s/keys/store-2.key", env->dir);
    h_copy_file(env->store_path, backup);
    h_cli_result_t res;
    assert_int_equal(h_run_schakeld(&res, "--init", "--store-key", fresh, NULL), 0);
    h_cli_result_free(&res);
    int64_t entries = h_store_int(env, "SELECT count(*) FROM audit", NULL);

    clock_shift(-2 * DAY_S);
    static const char *const behind = "behind the last entry of the audit trail";
    int status = h_run_schakeld(&res, "--config", env->config_path, "--rekey", "--new-store-key",
                                fresh, NULL);
    if (status != 1 || strstr(res.err, behind) == NULL ||
        strstr(res.err, "--accept-clock") == NULL || strstr(res.err, "unchanged") == NULL)
        fail_msg("--rekey two days behind the trail: exit %d, stderr \"%s\"", status, res.err);
    h_cli_result_free(&res);
    status = h_run_schakeld(&res, "--restored", backup, "--config", env->config_path, NULL);
    if (status != 1 || strstr(res.err, behind) == NULL ||
        strstr(res.err, "the store is unchanged") == NULL)
        fail_msg("--restored two days behind the trail: exit %d, stderr \"%s\"", status, res.err);
    h_cli_result_free(&res);
    assert_int_equal(h_store_int(env, "SELECT count(*) FROM audit", NULL), entries);

    status = h_run_schakeld(&res, "--restored", backup, "--accept-clock", "--config",
                            env->config_path, NULL);
    if (status != 0)
        fail_msg("--restored --accept-clock: exit %d, stderr \"%s\"", status, res.err);
    h_cli_result_free(&res);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM audit WHERE event = 'store.restored'"
                                 " AND at < strftime('%s', 'now') - 86400",
                                 NULL),
                     1);
    h_done(env);
}

/* What the broker reports of its own time follows its time, not the
 * stepped system clock: `schakelctl status` (started_at, uptime_s, the
 * policy's loaded_at after a reload) and the `exported_at` of a subject
 * export. */
static void test_reports_in_the_brokers_time(void **state)
{
    static const char *const admin_on[] = {"--set", "admin_listen=tcp://127.0.0.1:*", NULL};
    h_env_t *env = *state;
    h_broker_start_with(env, admin_on);
    char admin[128];
    h_admin_endpoint(env, admin, sizeof admin);
    long offset = h_log_offset(env);
    clock_shift(6 * 365 * DAY_S);
    await(env, offset, "event=clock.stepped offset_s=+");
    int64_t now = (int64_t)time(NULL); /* this process's clock is not shifted */

    h_cli_result_t res;
    if (h_run_ctl(env, admin, H_OPERATOR, &res, "reload", NULL) != 0)
        fail_msg("schakelctl reload: exit %d, stderr \"%s\"", res.status, res.err);
    h_cli_result_free(&res);
    if (h_run_ctl(env, admin, H_OPERATOR, &res, "status", "--json", NULL) != 0)
        fail_msg("schakelctl status: exit %d, stderr \"%s\"", res.status, res.err);
    const char *started = strstr(res.out, "\"started_at\":");
    const char *uptime = strstr(res.out, "\"uptime_s\":");
    const char *loaded = strstr(res.out, "\"loaded_at\":");
    if (started == NULL || uptime == NULL || loaded == NULL)
        fail_msg("schakelctl status names no started_at, uptime_s or loaded_at: %s", res.out);
    long long started_at = strtoll(started + strlen("\"started_at\":"), NULL, 10);
    long long uptime_s = strtoll(uptime + strlen("\"uptime_s\":"), NULL, 10);
    long long loaded_at = strtoll(loaded + strlen("\"loaded_at\":"), NULL, 10);
    if (started_at > now + 60 || started_at < now - 3600 || uptime_s < 0 || uptime_s > 3600 ||
        loaded_at > now + 60 || loaded_at < started_at)
        fail_msg("during a step of 6 years, after a reload: started_at %lld (now %lld), "
                 "uptime_s %lld, policy loaded_at %lld",
                 started_at, (long long)now, uptime_s, loaded_at);
    h_cli_result_free(&res);

    char year[16], want[64];
    struct tm tm;
    time_t t = (time_t)now;
    strftime(year, sizeof year, "%Y", gmtime_r(&t, &tm));
    snprintf(want, sizeof want, "\"exported_at\":\"%s-", year);
    if (h_run_ctl(env, admin, H_OPERATOR, &res, "audit", "subject", "PSN-1c4e88aa07", NULL) != 0)
        fail_msg("schakelctl audit subject: exit %d, stderr \"%s\"", res.status, res.err);
    if (strstr(res.out, want) == NULL)
        fail_msg("the export during a step of 6 years is not stamped in %s: %.300s", year, res.out);
    h_cli_result_free(&res);
    clock_shift(0);
    h_done(env);
}

int main(void)
{
    char err[PATH_MAX + 128];
    if (sodium_init() < 0)
        return 1;
    if (h_preload_shim("clockshift.so", err, sizeof err) != 0) {
        fprintf(stderr, "test_clock: %s\n", err);
        return 1;
    }
    snprintf(shift_dir, sizeof shift_dir, "/tmp/schakel-clockshift-XXXXXX");
    if (mkdtemp(shift_dir) == NULL) {
        fprintf(stderr, "test_clock: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    snprintf(shift_path, sizeof shift_path, "%s/shift", shift_dir);
    if (setenv("SCHAKEL_TEST_CLOCK_SHIFT", shift_path, 1) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_step_ahead_expires_nothing, clock_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_step_back_stamps_nothing_earlier, clock_setup,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_start_behind_the_trail, clock_setup_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_small_step_back_is_waited_out, clock_setup,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_reports_in_the_brokers_time, clock_setup_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_offline_commands_keep_to_the_trail, clock_setup_env,
                                        h_teardown),
    };
    int rc = cmocka_run_group_tests_name("integration: clock", tests, NULL, NULL);
    unlink(shift_path);
    rmdir(shift_dir);
    return rc;
}
