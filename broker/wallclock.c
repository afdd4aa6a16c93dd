/*
 * wallclock.c — the broker's time of day (wallclock.h).
 *
 * Owns the rule of when the system clock is followed; trusts the caller's
 * readings of the clocks. No errors but the refusal at start.
 */
#include "wallclock.h"

#include <stdio.h>

static int64_t floor_div_1000(int64_t ms)
{
    return ms >= 0 ? ms / 1000 : -((999 - ms) / 1000);
}

int wallclock_start(wallclock_t *c, int64_t wall_ms, int64_t boot_ms, int64_t floor_s,
                    int accept_behind, char *err, size_t errlen)
{
    int64_t wall_s = floor_div_1000(wall_ms);
    /* floor_s from the trail may be any value: compared first, so that the
     * difference cannot overflow */
    if (floor_s > wall_s && floor_s - wall_s > WALLCLOCK_BEHIND_S && !accept_behind) {
        snprintf(err, errlen,
                 "the system clock is %lld s behind the last entry of the audit trail: set the "
                 "clock right (timedatectl, NTP) and start again; if the trail's time is the "
                 "wrong one (a clock that ran ahead), start once with --accept-clock",
                 (long long)(floor_s - wall_s));
        return -1;
    }
    /* A clock a little behind the trail is followed; the time holds at the
     * trail's last entry until the clock passes it. */
    c->base_wall_ms = wall_ms;
    c->base_boot_ms = boot_ms;
    c->now_ms = !accept_behind && wall_s < floor_s ? floor_s * 1000 : wall_ms;
    c->now_s = floor_div_1000(c->now_ms);
    c->offset_ms = 0;
    c->stepped = 0;
    return 0;
}

int64_t wallclock_update(wallclock_t *c, int64_t wall_ms, int64_t boot_ms,
                         wallclock_change_t *change)
{
    wallclock_change_t what = WALLCLOCK_SAME;
    int64_t expected_ms = c->base_wall_ms + (boot_ms - c->base_boot_ms);
    int64_t offset_ms = wall_ms - expected_ms;
    int64_t ahead_ms = (int64_t)WALLCLOCK_STEP_S * 1000,
            back_ms = (int64_t)WALLCLOCK_BEHIND_S * 1000;
    if (offset_ms >= -back_ms && offset_ms <= ahead_ms) {
        /* agreed, or a step back the time can wait out: follow the system
         * clock (its time holds until the clock has passed it again) */
        c->base_wall_ms = wall_ms;
        c->base_boot_ms = boot_ms;
        expected_ms = wall_ms;
        c->offset_ms = offset_ms < -ahead_ms ? offset_ms : 0;
        if (c->stepped)
            what = WALLCLOCK_AGREES;
        else if (offset_ms < -ahead_ms)
            what = WALLCLOCK_HELD;
        c->stepped = 0;
    } else {
        c->offset_ms = offset_ms;
        if (!c->stepped)
            what = WALLCLOCK_STEPPED;
        c->stepped = 1;
    }
    if (expected_ms > c->now_ms)
        c->now_ms = expected_ms;
    c->now_s = floor_div_1000(c->now_ms);
    if (change != NULL)
        *change = what;
    return c->now_s;
}
