/*
 * wallclock.h — the broker's time of day, guarded against clock steps.
 *
 * Retention is counted in the time of day: a delivery expires at its
 * accepted_at plus its rule's retention. Read straight from the system
 * clock, one step of it forward (a wrong NTP server, a host restored from
 * a snapshot, a mistyped `date -s`) would expire at once everything whose
 * retention lies within the step, and one backward would stamp new
 * entries before old ones. So while the broker runs its time advances
 * with CLOCK_BOOTTIME (which counts suspended time too) and follows the
 * system clock while the two agree within WALLCLOCK_STEP_S ahead and
 * WALLCLOCK_BEHIND_S back (a step back within that is waited out: the
 * time holds until the clock has passed it); a larger step is not
 * followed until they agree again, or the broker restarts. It never goes
 * back. At start it takes the system clock, unless that is more than
 * WALLCLOCK_BEHIND_S behind the audit trail's last entry (the floor):
 * then it refuses, unless told to accept the clock; a clock behind it by
 * less is taken, the time holding at the floor until the clock passes it.
 *
 * Pure: the caller reads the clocks and passes them in (milliseconds).
 */
#ifndef SCHAKEL_WALLCLOCK_H
#define SCHAKEL_WALLCLOCK_H

#include <stddef.h>
#include <stdint.h>

#define WALLCLOCK_STEP_S 60
#define WALLCLOCK_BEHIND_S 600

typedef struct wallclock {
    int64_t base_wall_ms; /* the broker's time at base_boot_ms */
    int64_t base_boot_ms;
    int64_t now_ms;    /* the broker's time: never decreases */
    int64_t now_s;     /* now_ms in whole seconds */
    int64_t offset_ms; /* system clock minus the broker's: while not followed, and of
                        * the last step back waited out (else 0) */
    int stepped;       /* the system clock stepped away and is not followed */
} wallclock_t;

/* What an update found. */
typedef enum wallclock_change {
    WALLCLOCK_SAME = 0,
    WALLCLOCK_STEPPED, /* the system clock just stepped away; not followed */
    WALLCLOCK_AGREES,  /* it agrees again and is followed */
    WALLCLOCK_HELD,    /* it stepped back within WALLCLOCK_BEHIND_S: followed, the time holds */
} wallclock_change_t;

/* Start at the system clock wall_ms (boot_ms: CLOCK_BOOTTIME now).
 * floor_s is the latest time the store recorded (0: none). Refused (-1,
 * err says by how much and what to do) when wall_ms is more than
 * WALLCLOCK_BEHIND_S behind floor_s, unless accept_behind; with a clock
 * behind it by less the time starts at floor_s. Returns 0. */
int wallclock_start(wallclock_t *c, int64_t wall_ms, int64_t boot_ms, int64_t floor_s,
                    int accept_behind, char *err, size_t errlen);

/* The broker's time now, in seconds, given both clocks; *change says what
 * changed (may be NULL). */
int64_t wallclock_update(wallclock_t *c, int64_t wall_ms, int64_t boot_ms,
                         wallclock_change_t *change);

#endif
