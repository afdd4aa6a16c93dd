/*
 * test_wallclock.c — the broker's time of day: started from the system
 * clock (not behind the trail, unless accepted), following it while the
 * two agree, not following a step of more than WALLCLOCK_STEP_S either
 * way until they agree again, and never going back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "wallclock.h"

#define DAY_S 86400
#define T0_MS 1795000000000LL /* a time of day in 2026, in ms */
#define BOOT0_MS 5000LL

static void test_start(void **state)
{
    (void)state;
    static const struct {
        int64_t wall_ms, floor_s;
        int accept, ok;
        int64_t now_s;
    } rows[] = {
        {T0_MS, 0, 0, 1, T0_MS / 1000},                      /* a new store */
        {T0_MS, T0_MS / 1000 - DAY_S, 0, 1, T0_MS / 1000},   /* the trail is older */
        {T0_MS, T0_MS / 1000 + 30, 0, 1, T0_MS / 1000 + 30}, /* behind a little */
        {T0_MS, T0_MS / 1000 + WALLCLOCK_BEHIND_S, 0, 1, T0_MS / 1000 + WALLCLOCK_BEHIND_S},
        {T0_MS, T0_MS / 1000 + WALLCLOCK_BEHIND_S + 1, 0, 0, 0}, /* refused */
        {T0_MS, T0_MS / 1000 + 400 * DAY_S, 0, 0, 0},
        {T0_MS, T0_MS / 1000 + 400 * DAY_S, 1, 1, T0_MS / 1000}, /* --accept-clock */
        {T0_MS, T0_MS / 1000 + 30, 1, 1, T0_MS / 1000},
        /* a damaged trail's time, before any clock or past every one: no
         * comparison overflows */
        {T0_MS, INT64_MIN, 0, 1, T0_MS / 1000},
        {T0_MS, INT64_MAX, 0, 0, 0},
        {T0_MS, INT64_MAX, 1, 1, T0_MS / 1000},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        wallclock_t c;
        char err[512] = "";
        int rc = wallclock_start(&c, rows[i].wall_ms, BOOT0_MS, rows[i].floor_s, rows[i].accept,
                                 err, sizeof err);
        if ((rc == 0) != rows[i].ok)
            fail_msg("row %zu: rc %d (%s)", i, rc, err);
        if (!rows[i].ok) {
            if (strstr(err, "behind the last entry of the audit trail") == NULL ||
                strstr(err, "--accept-clock") == NULL)
                fail_msg("row %zu: \"%s\" does not say why and what to do", i, err);
            continue;
        }
        assert_int_equal(c.now_s, rows[i].now_s);
        assert_int_equal(wallclock_update(&c, rows[i].wall_ms, BOOT0_MS, NULL), rows[i].now_s);
    }
}

/* One step of the run: both clocks moved by so much from the start, and
 * what the broker's time and the change must be. */
typedef struct step {
    int64_t wall_ms, boot_ms; /* from T0_MS and BOOT0_MS */
    int64_t now_s;            /* from T0_MS / 1000 */
    wallclock_change_t change;
} step_t;

static void run_steps(const char *name, const step_t *steps, size_t n)
{
    wallclock_t c;
    char err[256];
    assert_int_equal(wallclock_start(&c, T0_MS, BOOT0_MS, 0, 0, err, sizeof err), 0);
    for (size_t i = 0; i < n; i++) {
        wallclock_change_t change = WALLCLOCK_SAME;
        int64_t now =
            wallclock_update(&c, T0_MS + steps[i].wall_ms, BOOT0_MS + steps[i].boot_ms, &change);
        if (now != T0_MS / 1000 + steps[i].now_s || change != steps[i].change)
            fail_msg("%s, step %zu: time +%lld s, change %d; expected +%lld s, change %d", name, i,
                     (long long)(now - T0_MS / 1000), (int)change, (long long)steps[i].now_s,
                     (int)steps[i].change);
    }
}

static void test_follows_while_agreeing(void **state)
{
    (void)state;
    static const step_t steps[] = {
        {1000, 1000, 1, WALLCLOCK_SAME},
        {2500, 2000, 2, WALLCLOCK_SAME},   /* slewed ahead: followed */
        {62000, 3000, 62, WALLCLOCK_SAME}, /* a step of 59 s: followed */
        {63000, 4000, 63, WALLCLOCK_SAME},
        {30000, 5000, 63, WALLCLOCK_SAME},  /* 34 s back: followed, but held */
        {64500, 39500, 64, WALLCLOCK_SAME}, /* caught up */
    };
    run_steps("agreeing", steps, sizeof steps / sizeof steps[0]);
}

static void test_step_forward_not_followed(void **state)
{
    (void)state;
    static const step_t steps[] = {
        {10000, 10000, 10, WALLCLOCK_SAME},
        /* +800 days: the broker goes on in its own time */
        {11000 + 800LL * DAY_S * 1000, 11000, 11, WALLCLOCK_STEPPED},
        {12000 + 800LL * DAY_S * 1000, 12000, 12, WALLCLOCK_SAME},
        {3600000 + 800LL * DAY_S * 1000, 3600000, 3600, WALLCLOCK_SAME},
        /* set right again: followed */
        {3601000, 3601000, 3601, WALLCLOCK_AGREES},
        {3602000, 3602000, 3602, WALLCLOCK_SAME},
    };
    run_steps("forward", steps, sizeof steps / sizeof steps[0]);
}

static void test_step_back_not_followed(void **state)
{
    (void)state;
    static const step_t steps[] = {
        {10000, 10000, 10, WALLCLOCK_SAME},
        {11000 - 400LL * DAY_S * 1000, 11000, 11, WALLCLOCK_STEPPED},
        {20000 - 400LL * DAY_S * 1000, 20000, 20, WALLCLOCK_SAME},
        /* a step of its own within the stepped clock changes nothing */
        {90000 - 400LL * DAY_S * 1000, 21000, 21, WALLCLOCK_SAME},
        {22000, 22000, 22, WALLCLOCK_AGREES},
    };
    run_steps("back", steps, sizeof steps / sizeof steps[0]);
}

/* A step back of up to WALLCLOCK_BEHIND_S is followed and waited out: the
 * time holds until the system clock has passed it, and then goes on with
 * it, not stepped. */
static void test_small_step_back_is_waited_out(void **state)
{
    (void)state;
    static const step_t steps[] = {
        {10000, 10000, 10, WALLCLOCK_SAME},
        {11000 - 300000, 11000, 10, WALLCLOCK_HELD}, /* 5 minutes back */
        {200000 - 300000, 200000, 10, WALLCLOCK_SAME},
        {311000 - 300000, 311000, 11, WALLCLOCK_SAME}, /* passed it */
        {400000 - 300000, 400000, 100, WALLCLOCK_SAME},
        /* 601 s back is a step */
        {401000 - 300000 - 601000, 401000, 101, WALLCLOCK_STEPPED},
    };
    run_steps("small step back", steps, sizeof steps / sizeof steps[0]);
}

/* A start on a clock a little behind the trail holds the time at the
 * trail's last entry until the clock passes it, then follows it: never
 * stepped (a restart after a small step back ends in agreement). */
static void test_start_behind_waits_for_the_clock(void **state)
{
    (void)state;
    wallclock_t c;
    char err[256];
    int64_t floor_s = T0_MS / 1000 + 300;
    assert_int_equal(wallclock_start(&c, T0_MS, BOOT0_MS, floor_s, 0, err, sizeof err), 0);
    for (int64_t s = 0; s <= 600; s += 50) {
        wallclock_change_t change = WALLCLOCK_STEPPED;
        int64_t now = wallclock_update(&c, T0_MS + s * 1000, BOOT0_MS + s * 1000, &change);
        int64_t want = s < 300 ? floor_s : T0_MS / 1000 + s;
        if (now != want || change != WALLCLOCK_SAME || c.stepped)
            fail_msg("+%lld s: time %lld (want %lld), change %d, stepped %d", (long long)s,
                     (long long)now, (long long)want, (int)change, c.stepped);
    }
}

/* Time suspended counts (CLOCK_BOOTTIME): a host that slept two hours
 * wakes up agreeing with its system clock. */
static void test_suspend_is_no_step(void **state)
{
    (void)state;
    static const step_t steps[] = {
        {1000, 1000, 1, WALLCLOCK_SAME},
        {7201000, 7201000, 7201, WALLCLOCK_SAME},
    };
    run_steps("suspend", steps, sizeof steps / sizeof steps[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start),
        cmocka_unit_test(test_follows_while_agreeing),
        cmocka_unit_test(test_step_forward_not_followed),
        cmocka_unit_test(test_step_back_not_followed),
        cmocka_unit_test(test_suspend_is_no_step),
        cmocka_unit_test(test_small_step_back_is_waited_out),
        cmocka_unit_test(test_start_behind_waits_for_the_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
