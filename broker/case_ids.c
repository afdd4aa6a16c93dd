/*
 * case_ids.c — the finite space of case ids (case.h).
 *
 * Owns what stands between one partner and every partner's case ids: each
 * principal's and each partner's case-open budget, the refusal once none
 * is left, and the warning before that. Trusts the caller's principal (the
 * ZAP identity, its partner from the policy) and the store's counter.
 * Refusals: RATE_LIMITED (a budget), CASE_IDS_EXHAUSTED; nothing is stored
 * for either.
 */
#include "case.h"
#include "plural.h"

#include <stdio.h>

#include "log.h"

/* case.ids_low / case.ids_exhausted are said again at most this often
 * while the state lasts (the first time at once). */
#define CASE_IDS_LOG_MS (3600 * 1000)

int case_ids_exhausted_refuses(broker_t *b, const session_t *session, const uint8_t *command_id)
{
    if (store_case_ids_left(b->store) != 0)
        return 0;
    broker_reject(b, session, SCHAKEL__REASON__CASE_IDS_EXHAUSTED,
                  "every case id of this broker (C-00000001 to C-99999999) is used: no case "
                  "can be opened; commands on existing cases and signals go on",
                  command_id, -1, 0);
    /* said again at most hourly while opens are tried */
    case_ids_watch(b, b->now_ms);
    return 1;
}

int case_ids_admit_open(broker_t *b, const session_t *session, const policy_principal_t *actor,
                        const uint8_t *command_id)
{
    /* Exhaustion first: an open that cannot succeed costs no budget. */
    if (case_ids_exhausted_refuses(b, session, command_id))
        return 0;
    case_open_verdict_t verdict =
        sessions_allow_case_open(b->sessions, actor->id, actor->partner->id, b->now_ms,
                                 b->case_opens_per_hour, b->case_opens_per_hour_per_partner);
    if (verdict != CASE_OPEN_ALLOWED) {
        char text[SCHAKEL_MAX_REJECT_TEXT];
        if (verdict == CASE_OPEN_DENIED_PARTNER)
            snprintf(text, sizeof text,
                     "more than %u %s per hour from the principals of partner %s "
                     "together (its case-open budget); retry later with the same command id",
                     b->case_opens_per_hour_per_partner,
                     plural(b->case_opens_per_hour_per_partner, "case open", "case opens"),
                     actor->partner->id);
        else
            snprintf(text, sizeof text,
                     "more than %u %s per hour from this principal (its case-open "
                     "budget); retry later with the same command id",
                     b->case_opens_per_hour,
                     plural(b->case_opens_per_hour, "case open", "case opens"));
        broker_reject(b, session, SCHAKEL__REASON__RATE_LIMITED, text, command_id, -1, 0);
        return 0;
    }
    return 1;
}

void case_ids_watch(broker_t *b, int64_t now_ms)
{
    int64_t left = store_case_ids_left(b->store);
    int state = left == 0 ? 2 : left < SCHAKEL_CASE_IDS_LOW ? 1 : 0;
    if (state == 0 ||
        (state == b->case_ids_logged && now_ms - b->case_ids_logged_ms < CASE_IDS_LOG_MS))
        return;
    b->case_ids_logged = state;
    b->case_ids_logged_ms = now_ms;
    if (state == 2) {
        log_event(LOG_ERROR, "case.ids_exhausted", "effect",
                  "every case open is refused CASE_IDS_EXHAUSTED; signals and commands on "
                  "existing cases go on",
                  NULL);
        return;
    }
    char n[24], of[24];
    snprintf(n, sizeof n, "%lld", (long long)left);
    snprintf(of, sizeof of, "%lld", (long long)SCHAKEL_CASE_NUM_MAX);
    log_event(LOG_WARN, "case.ids_low", "left", n, "of", of, "effect",
              "once none is left, every case open is refused CASE_IDS_EXHAUSTED", NULL);
}
