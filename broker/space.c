/*
 * space.c — the store's free-space floor and each partner's share
 * (space.h). Owns the verdict of the last measure and its log lines;
 * the store measures (store_space) and keeps the partners' sums
 * (store_partner_bytes); publish.c and case.c ask before they store.
 * A measure that fails is logged and keeps the last verdict: a statvfs
 * or PRAGMA that fails once does not stop the programme.
 */
#include "space.h"

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "broker.h"
#include "log.h"

#define SPACE_MEASURE_MS 1000 /* at most one statvfs and PRAGMA a second */
#define SPACE_LOG_MS 60000    /* a crossing the same way is said once a minute at most */

enum { SPACE_SAID_NOTHING, SPACE_SAID_BELOW, SPACE_SAID_ABOVE };

static int64_t space_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void space_init(space_t *space, uint64_t min_free, uint64_t max_partner)
{
    *space = (space_t){
        .min_free = min_free > 0 ? min_free : (uint64_t)SCHAKEL_DEFAULT_STORE_MIN_FREE_BYTES,
        .max_partner =
            max_partner > 0 ? max_partner : (uint64_t)SCHAKEL_DEFAULT_PARTNER_STORED_BYTES,
    };
}

static void space_say(space_t *s, int64_t now)
{
    char free_text[24], floor_text[24], refused[24], flips[24];
    snprintf(free_text, sizeof free_text, "%" PRIu64, s->last.free_bytes);
    snprintf(floor_text, sizeof floor_text, "%" PRIu64, s->min_free);
    snprintf(flips, sizeof flips, "%" PRIu64, s->flips);
    if (s->below) {
        log_event(LOG_WARN, "store.below_floor", "free_bytes", free_text, "min_free_bytes",
                  floor_text, "crossings", flips, "effect",
                  "new content (publishes, case commands that add content) is refused "
                  "UNAVAILABLE until the store has room again; acks, queries and retention go "
                  "on: free disk space, or have recipients drain their mailboxes",
                  NULL);
        s->floor_refused_since = 0;
    } else {
        snprintf(refused, sizeof refused, "%" PRIu64, s->floor_refused_since);
        log_event(LOG_INFO, "store.above_floor", "free_bytes", free_text, "min_free_bytes",
                  floor_text, "crossings", flips, "refused", refused, NULL);
    }
    s->logged = s->below ? SPACE_SAID_BELOW : SPACE_SAID_ABOVE;
    s->logged_ms[s->logged] = now;
    s->flips = 0;
    s->pending = 0;
}

/* Say the verdict when it is not what the log last said: at once, unless
 * the same was said less than a minute ago (a store hovering at its
 * floor); then once that minute is over. The first verdict is said only
 * when it is below. */
static void space_tell(space_t *s, int64_t now)
{
    int verdict = s->below ? SPACE_SAID_BELOW : SPACE_SAID_ABOVE;
    if (s->logged == verdict) {
        s->pending = 0;
        return;
    }
    if (s->logged == SPACE_SAID_NOTHING && !s->below)
        return; /* above from the start: nothing to say */
    if (s->logged_ms[verdict] != 0 && now - s->logged_ms[verdict] < SPACE_LOG_MS) {
        s->pending = 1;
        return;
    }
    space_say(s, now);
}

void space_measure(broker_t *b, int force)
{
    space_t *s = &b->space;
    int64_t now = space_now_ms();
    if (!force && now < s->next_measure_ms) {
        if (s->pending)
            space_tell(s, now);
        return;
    }
    s->next_measure_ms = now + SPACE_MEASURE_MS;
    store_space_t measured;
    if (store_space(b->store, &measured) != 0) {
        if (!s->measure_failed || now - s->failed_logged_ms >= SPACE_LOG_MS) {
            log_event(LOG_WARN, "store.space_unknown", "error", store_errmsg(b->store), "effect",
                      s->below ? "the store counts as below its floor, as last measured"
                               : "the store counts as above its floor, as last measured",
                      NULL);
            s->failed_logged_ms = now;
        }
        s->measure_failed = 1;
        return;
    }
    s->measure_failed = 0;
    s->last = measured;
    s->known = 1;
    int below = measured.free_bytes < s->min_free;
    if (below != s->below)
        s->flips++;
    s->below = below;
    space_tell(s, now);
}

int space_floor_refuses(broker_t *b, char *why, size_t len)
{
    space_t *s = &b->space;
    if (!s->below)
        return 0;
    s->floor_refused++;
    s->floor_refused_since++;
    snprintf(why, len,
             "the store's disk is below its floor (%" PRIu64 " bytes free, store_min_free_bytes "
             "%" PRIu64 "); nothing was stored: send it again later with the same message id",
             s->last.free_bytes, s->min_free);
    return 1;
}

int space_share_refuses(broker_t *b, const char *partner, uint64_t incoming, char *why, size_t len)
{
    space_t *s = &b->space;
    int64_t held = store_partner_bytes(b->store, partner);
    uint64_t stored = held > 0 ? (uint64_t)held : 0;
    if (stored <= s->max_partner && incoming <= s->max_partner - stored)
        return 0;
    s->share_refused++;
    snprintf(why, len,
             "partner %s has %" PRIu64 " bytes of items stored, at its share "
             "(max_stored_bytes_per_partner %" PRIu64 "); nothing was stored: send it again "
             "once retention has freed room",
             partner, stored, s->max_partner);
    return 1;
}
