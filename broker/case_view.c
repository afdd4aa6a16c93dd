/*
 * case_view.c — CaseQuery answered with a CaseView, and the push-time check
 * of waiting case deliveries (see case.h).
 *
 * A partner sees the cases it is a member of or invited to; a member sees
 * a case's timeline reduced to its membership rule, the same reduction its
 * deliveries get. Whoever may not see a case gets NOT_FOUND worded as for
 * an unknown id. A view is one frame: it holds the summaries, or the
 * events in order, that fit in SCHAKEL_MAX_FRAME_BYTES; an attachment
 * whose bytes do not fit is listed with empty content (its bytes came
 * through the mailbox), and what does not fit at all is logged as left
 * out. A list and a view are recorded (case.listed, case.viewed) in the
 * turn that answers, or refused. A view that leaves after a reload (held
 * for its sync) is decided again under the policy then in force, and
 * withheld, refused and recorded so, if that policy would not show it as
 * it is. Trusts the store's bodies and the policy in force.
 */
#include "case.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "case_internal.h"
#include "case_state.h"
#include "growarray.h"
#include "log.h"
#include "record.h"

/* Room kept in a view's frame for the Frame, the CaseView's own fields
 * and the CurveZMQ framing. */
#define CASE_VIEW_MARGIN 1024u

/* A case as its summary names it, copied out of the store. */
typedef struct case_brief {
    char case_id[SCHAKEL_CASE_ID_LEN + 1];
    char case_type[SCHAKEL_MAX_ID_LEN + 1];
    char lead[SCHAKEL_MAX_ID_LEN + 1];
    char *title;
    int closed;
    int64_t opened_at;
    char my_state;
} case_brief_t;

typedef struct case_briefs {
    case_brief_t *rows;
    size_t n, cap;
    int failed;
    const char *after; /* a list page: only cases after this id (NULL: from the first) */
    int64_t now_s;     /* a case past its retention is gone, even before the sweep */
} case_briefs_t;

/* A subject whose linked signals a page shows, and how many of them. */
typedef struct case_linked_subject {
    char subject[SCHAKEL_MAX_SUBJECT_LEN + 1];
    size_t signals;
} case_linked_subject_t;

static int case_brief_set(case_brief_t *brief, const store_case_t *c, char my_state)
{
    snprintf(brief->case_id, sizeof brief->case_id, "%s", c->case_id);
    snprintf(brief->case_type, sizeof brief->case_type, "%s", c->case_type);
    snprintf(brief->lead, sizeof brief->lead, "%s", c->lead);
    brief->title = strdup(c->title != NULL ? c->title : "");
    brief->closed = c->closed;
    brief->opened_at = c->opened_at;
    brief->my_state = my_state;
    return brief->title != NULL ? 0 : -1;
}

static int case_briefs_collect(const store_case_t *c, char my_state, void *arg)
{
    case_briefs_t *list = arg;
    if (my_state != CASE_MEMBER_MEMBER && my_state != CASE_MEMBER_INVITED)
        return 0;
    if (c->expires_at <= list->now_s ||
        (list->after != NULL && strcmp(c->case_id, list->after) <= 0))
        return 0; /* ids are "C-" and 8 digits: their order is the order of opening */
    if (growarray_room((void **)&list->rows, &list->cap, list->n, sizeof *list->rows, 16) != 0) {
        list->failed = 1;
        return 1;
    }
    if (case_brief_set(&list->rows[list->n], c, my_state) != 0) {
        list->failed = 1;
        return 1;
    }
    list->n++;
    return 0;
}

/* A title is free text about people: wiped when freed. */
static void case_title_free(char **title)
{
    if (*title != NULL) {
        sodium_memzero(*title, strlen(*title));
        free(*title);
    }
    *title = NULL;
}

static void case_briefs_free(case_briefs_t *list)
{
    for (size_t i = 0; i < list->n; i++)
        case_title_free(&list->rows[i].title);
    free(list->rows);
    memset(list, 0, sizeof *list);
}

/* The asker's membership rule in a case, when it reaches the asker. */
static const policy_case_member_rule_t *
case_asker_rule(const broker_t *b, const policy_principal_t *asker, const case_brief_t *brief)
{
    const policy_case_type_t *type = policy_case_type_by_id(b->policy, brief->case_type);
    const policy_partner_t *lead = policy_partner_by_id(b->policy, brief->lead);
    const policy_case_member_rule_t *rule =
        type != NULL && lead != NULL ? policy_case_membership(b->policy, type, asker->partner, lead)
                                     : NULL;
    return rule != NULL && policy_case_member_reaches(b->policy, rule, asker) ? rule : NULL;
}

/* A summary of a case (strings borrowed from brief and members). */
static void case_summary_fill(Schakel__CaseSummary *s, const case_brief_t *brief,
                              const case_members_t *members, char **member_ids)
{
    schakel__case_summary__init(s);
    s->case_id = (char *)(uintptr_t)brief->case_id;
    s->case_type = (char *)(uintptr_t)brief->case_type;
    s->lead = (char *)(uintptr_t)brief->lead;
    s->state = (char *)(uintptr_t)(brief->closed ? "closed" : "open");
    s->my_state = (char *)(uintptr_t)(brief->my_state == CASE_MEMBER_MEMBER ? "member" : "invited");
    s->title = brief->title;
    s->has_opened_at = 1;
    s->opened_at = brief->opened_at;
    s->n_members = 0;
    s->members = member_ids;
    for (size_t i = 0; i < members->n; i++)
        if (members->rows[i].state == CASE_MEMBER_MEMBER)
            member_ids[s->n_members++] = (char *)(uintptr_t)members->rows[i].partner;
}

/* Queue the view, with what it was decided on (check: taken). */
static void case_view_send(broker_t *b, const session_t *session, Schakel__CaseView *view,
                           case_view_check_t *check)
{
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    frame.body_case = SCHAKEL__FRAME__BODY_CASE_VIEW;
    frame.case_view = view;
    size_t len = 0;
    uint8_t *bytes = wire_encode_frame(&frame, &len);
    /* its case.viewed entry is in this turn: no view without its record */
    if (bytes == NULL)
        case_view_check_free(&check);
    if (bytes == NULL || broker_queue_gated_reply(b, session, bytes, len, check) != 0)
        log_event(LOG_ERROR, "reply.dropped", "principal", session->principal, "why",
                  "out of memory", NULL);
}

static void case_view_refuse_store(broker_t *b, const session_t *session)
{
    log_event(LOG_ERROR, "store.read_failed", "error", store_errmsg(b->store), NULL);
    broker_reject(b, session, broker_store_failure_reason(b),
                  "the broker could not read its store; ask again", NULL, -1, 0);
}

/* ------------------------------------------------------------------ deciding again */

/* The cases of one (case type, lead) a view shows, and the asker's
 * membership rule in them when it was decided (the same for each: the
 * rule is a function of type, lead and the asker's partner). */
typedef struct case_view_kind {
    char case_type[SCHAKEL_MAX_ID_LEN + 1];
    char lead[SCHAKEL_MAX_ID_LEN + 1];
    char rule_id[SCHAKEL_MAX_ID_LEN + 1];
    char rule_hash[65];
} case_view_kind_t;

struct case_view_check {
    char partner[SCHAKEL_MAX_ID_LEN + 1];      /* the asker's */
    char case_id[SCHAKEL_CASE_ID_LEN + 1];     /* "": the list */
    size_t shown;                              /* events of the case, or cases of the list */
    char subject[SCHAKEL_MAX_SUBJECT_LEN + 1]; /* the case's ("": none), as recorded */
    case_linked_subject_t *linked;             /* other subjects of linked signals shown */
    size_t n_linked;
    case_view_kind_t *kinds;
    size_t n_kinds, cap_kinds;
};

/* What a decision under another policy says of a view; a zeroed value
 * shows nothing. */
enum case_view_verdict {
    CASE_VIEW_NOT_SHOWN = 0, /* a case of it the asker may not see */
    CASE_VIEW_OTHER,         /* seen, but not as it is (another rule or partner) */
    CASE_VIEW_SAME,          /* shown as it is */
};

#define CASE_VIEW_RELOADED "the policy was reloaded after this view was decided; ask again"
#define CASE_VIEW_PENDING                                                                          \
    "a policy reload not yet recorded changes what this view may show; ask again"

static case_view_check_t *case_view_check_new(const policy_principal_t *asker, const char *case_id)
{
    case_view_check_t *check = calloc(1, sizeof *check);
    if (check == NULL)
        return NULL;
    snprintf(check->partner, sizeof check->partner, "%s", asker->partner->id);
    snprintf(check->case_id, sizeof check->case_id, "%s", case_id != NULL ? case_id : "");
    return check;
}

void case_view_check_free(case_view_check_t **checkp)
{
    if (checkp == NULL || *checkp == NULL)
        return;
    case_view_check_t *check = *checkp;
    if (check->linked != NULL) {
        sodium_memzero(check->linked, check->n_linked * sizeof *check->linked);
        free(check->linked);
    }
    free(check->kinds);
    sodium_memzero(check, sizeof *check);
    free(check);
    *checkp = NULL;
}

/* The view shows a case of brief's type and lead under rule: kept once
 * per (type, lead). 0, or -1 out of memory. */
static int case_view_check_add(case_view_check_t *check, const case_brief_t *brief,
                               const policy_case_member_rule_t *rule)
{
    for (size_t i = 0; i < check->n_kinds; i++)
        if (strcmp(check->kinds[i].case_type, brief->case_type) == 0 &&
            strcmp(check->kinds[i].lead, brief->lead) == 0)
            return 0;
    if (check->n_kinds == check->cap_kinds) {
        size_t cap = check->cap_kinds ? check->cap_kinds * 2 : 4;
        case_view_kind_t *grown = realloc(check->kinds, cap * sizeof *grown);
        if (grown == NULL)
            return -1;
        check->kinds = grown;
        check->cap_kinds = cap;
    }
    case_view_kind_t *kind = &check->kinds[check->n_kinds++];
    snprintf(kind->case_type, sizeof kind->case_type, "%s", brief->case_type);
    snprintf(kind->lead, sizeof kind->lead, "%s", brief->lead);
    /* a longer id than fits is cut, and then differs: decided as another rule */
    snprintf(kind->rule_id, sizeof kind->rule_id, "%s", rule->id);
    snprintf(kind->rule_hash, sizeof kind->rule_hash, "%s", rule->hash_hex);
    return 0;
}

/* The view decided again under `policy`, for `principal`. Cost: a
 * principal look-up, then a case type, a partner and a membership rule
 * per (type, lead) the view shows. */
static enum case_view_verdict case_view_under(const policy_t *policy, const char *principal,
                                              const case_view_check_t *check)
{
    const policy_principal_t *asker = policy_principal_by_id(policy, principal);
    if (asker == NULL || asker->partner == NULL)
        return CASE_VIEW_NOT_SHOWN;
    if (strcmp(asker->partner->id, check->partner) != 0)
        return CASE_VIEW_OTHER; /* its partner's cases, members and standing are others */
    enum case_view_verdict verdict = CASE_VIEW_SAME;
    for (size_t i = 0; i < check->n_kinds; i++) {
        const case_view_kind_t *kind = &check->kinds[i];
        const policy_case_type_t *type = policy_case_type_by_id(policy, kind->case_type);
        const policy_partner_t *lead = policy_partner_by_id(policy, kind->lead);
        const policy_case_member_rule_t *rule =
            type != NULL && lead != NULL
                ? policy_case_membership(policy, type, asker->partner, lead)
                : NULL;
        if (rule == NULL || !policy_case_member_reaches(policy, rule, asker))
            return CASE_VIEW_NOT_SHOWN;
        /* a timeline is filtered by the rule's fields; a list shows none */
        if (check->case_id[0] != '\0' &&
            (strcmp(rule->id, kind->rule_id) != 0 || strcmp(rule->hash_hex, kind->rule_hash) != 0))
            verdict = CASE_VIEW_OTHER;
    }
    return verdict;
}

/* The refusal a view `verdict` does not show as it is gets instead. */
static void case_view_refusal(const case_view_check_t *check, enum case_view_verdict verdict,
                              const char *ask_again, Schakel__Reason *reason, char *text,
                              size_t textlen)
{
    if (verdict == CASE_VIEW_NOT_SHOWN && check->case_id[0] != '\0') {
        *reason = SCHAKEL__REASON__NOT_FOUND; /* what a read of the case gets now */
        case_state_not_found_text(check->case_id, text, textlen);
    } else {
        *reason = SCHAKEL__REASON__UNAVAILABLE;
        snprintf(text, textlen, "%s", ask_again);
    }
}

/* A view about to be recorded and sent while a reload waits to be
 * recorded: what that reload withdraws is withdrawn already (as for the
 * push, and for a view decided before it). 1: it may go on; 0: refused
 * (nothing was recorded). */
static int case_view_pending_allows(broker_t *b, const session_t *session,
                                    const case_view_check_t *check)
{
    if (b->policy_pending == NULL)
        return 1;
    enum case_view_verdict verdict = case_view_under(b->policy_pending, session->principal, check);
    if (verdict == CASE_VIEW_SAME)
        return 1;
    Schakel__Reason reason = SCHAKEL__REASON__REASON_NONE;
    char text[SCHAKEL_MAX_REJECT_TEXT];
    case_view_refusal(check, verdict, CASE_VIEW_PENDING, &reason, text, sizeof text);
    broker_reject(b, session, reason, text, NULL, -1, 0);
    return 0;
}

int case_view_decide_again(broker_t *b, const char *principal, const case_view_check_t *check,
                           Schakel__Reason *reason, char *text, size_t textlen)
{
    enum case_view_verdict verdict = case_view_under(b->policy, principal, check);
    if (b->policy_pending != NULL) {
        enum case_view_verdict pending = case_view_under(b->policy_pending, principal, check);
        if (pending < verdict)
            verdict = pending;
    }
    if (verdict == CASE_VIEW_SAME)
        return 1;
    case_view_refusal(check, verdict, CASE_VIEW_RELOADED, reason, text, textlen);
    metrics_refused(b, *reason);
    case_view_withheld(b, principal, check, *reason);
    return 0;
}

void case_view_withheld(broker_t *b, const char *principal, const case_view_check_t *check,
                        Schakel__Reason reason)
{
    /* Its entries said shown: one entry against each, each carried until
     * the trail holds it (record.h), whatever becomes of the transaction
     * it is written in; the view is withheld all the same. */
    if (check->case_id[0] == '\0') {
        (void)record_case_view_withheld(b, principal, NULL, NULL, check->shown, 0, reason);
        return;
    }
    const char *subject = check->subject[0] != '\0' ? check->subject : NULL;
    (void)record_case_view_withheld(b, principal, check->case_id, subject, check->shown, 0, reason);
    for (size_t i = 0; i < check->n_linked; i++) {
        const case_linked_subject_t *other = &check->linked[i];
        if (subject != NULL && strcmp(other->subject, subject) == 0)
            continue; /* as case_view_record */
        (void)record_case_view_withheld(b, principal, check->case_id, other->subject, check->shown,
                                        other->signals, reason);
    }
}

/* ------------------------------------------------------------------ the list */

static void case_query_list(broker_t *b, const session_t *session, const policy_principal_t *asker,
                            const Schakel__CaseQuery *query)
{
    case_briefs_t list = {.after = query->after_case_id, .now_s = b->now_s};
    Schakel__CaseView view = SCHAKEL__CASE_VIEW__INIT;
    view.has_request_id = query->has_request_id;
    view.request_id = query->request_id;
    if (store_cases_of_partner(b->store, asker->partner->id, case_briefs_collect, &list) < 0 ||
        list.failed) {
        case_briefs_free(&list);
        case_view_refuse_store(b, session);
        return;
    }
    Schakel__CaseSummary *summaries = calloc(list.n ? list.n : 1, sizeof *summaries);
    Schakel__CaseSummary **ptrs = calloc(list.n ? list.n : 1, sizeof *ptrs);
    case_members_t *members = calloc(list.n ? list.n : 1, sizeof *members);
    char **ids = calloc((list.n ? list.n : 1) * SCHAKEL_MAX_PARTNERS, sizeof *ids);
    case_view_check_t *check = case_view_check_new(asker, NULL);
    size_t budget = SCHAKEL_MAX_FRAME_BYTES - CASE_VIEW_MARGIN, used = 0;
    int failed =
        summaries == NULL || ptrs == NULL || members == NULL || ids == NULL || check == NULL;
    for (size_t i = 0; !failed && i < list.n; i++) {
        const policy_case_member_rule_t *rule = case_asker_rule(b, asker, &list.rows[i]);
        if (rule == NULL)
            continue;
        if (case_members_load(b->store, list.rows[i].case_id, &members[i]) != 0) {
            failed = 1;
            break;
        }
        Schakel__CaseSummary *s = &summaries[view.n_cases];
        case_summary_fill(s, &list.rows[i], &members[i], ids + i * SCHAKEL_MAX_PARTNERS);
        size_t size = protobuf_c_message_get_packed_size(&s->base) + 8;
        if (used + size > budget) {
            /* the rest in the next page, in order: the client asks again
             * after the last case of this one */
            view.has_more = view.more = 1;
            break;
        }
        if (case_view_check_add(check, &list.rows[i], rule) != 0) {
            failed = 1;
            break;
        }
        used += size;
        ptrs[view.n_cases++] = s;
    }
    view.cases = ptrs;
    if (check != NULL)
        check->shown = view.n_cases;
    /* titles are free text about people: a list is a view, on the trail
     * in this turn, or not shown */
    if (failed) {
        case_view_refuse_store(b, session);
    } else if (!case_view_pending_allows(b, session, check)) {
        /* refused */
    } else if (record_case_listed(b, asker->id, view.n_cases) != 0) {
        broker_reject(b, session, b->turn_failure,
                      "the broker could not record this list; ask again", NULL, -1, 0);
    } else {
        case_view_send(b, session, &view, check);
        check = NULL; /* the reply's */
    }
    case_view_check_free(&check);
    for (size_t i = 0; members != NULL && i < list.n; i++)
        case_members_free(&members[i]);
    free(members);
    free(ids);
    free(ptrs);
    free(summaries);
    case_briefs_free(&list);
}

/* ------------------------------------------------------------------ one case */

typedef struct case_timeline {
    Schakel__CaseEvent **events;
    size_t n, cap;
    size_t used;
    int more; /* an event did not fit: the rest is for the next page */
    case_linked_subject_t *linked; /* distinct, in order of first showing */
    size_t n_linked, cap_linked;
} case_timeline_t;

static void case_timeline_free(case_timeline_t *t)
{
    for (size_t i = 0; i < t->n; i++)
        schakel__case_event__free_unpacked(t->events[i], wire_wiped_allocator());
    free(t->events);
    if (t->linked != NULL) {
        sodium_memzero(t->linked, t->cap_linked * sizeof *t->linked);
        free(t->linked);
    }
    memset(t, 0, sizeof *t);
}

/* The page shows a signal about `subject` (NULL: about nobody): count it
 * under its subject, a new one at the end. Returns 0, or -1 out of memory. */
static int case_timeline_note_subject(case_timeline_t *t, const char *subject)
{
    if (subject == NULL || strlen(subject) > SCHAKEL_MAX_SUBJECT_LEN)
        return 0; /* validated when stored: never longer */
    for (size_t i = 0; i < t->n_linked; i++)
        if (strcmp(t->linked[i].subject, subject) == 0) {
            t->linked[i].signals++;
            return 0;
        }
    if (t->n_linked == t->cap_linked) {
        size_t cap = t->cap_linked ? t->cap_linked * 2 : 4;
        case_linked_subject_t *grown = calloc(cap, sizeof *grown);
        if (grown == NULL)
            return -1;
        if (t->linked != NULL) {
            memcpy(grown, t->linked, t->n_linked * sizeof *grown);
            sodium_memzero(t->linked, t->cap_linked * sizeof *t->linked);
            free(t->linked);
        }
        t->linked = grown;
        t->cap_linked = cap;
    }
    case_linked_subject_t *entry = &t->linked[t->n_linked++];
    strcpy(entry->subject, subject);
    entry->signals = 1;
    return 0;
}

/* Add one stored event, reduced to the rule, if it fits: with its
 * attachment's bytes, else without them, else not (nor anything after it,
 * so that the timeline stays in order without gaps). Returns 0 or -1. */
static int case_timeline_add(case_timeline_t *t, const case_event_copy_t *copy,
                             const policy_case_member_rule_t *rule, size_t budget)
{
    Schakel__CaseEvent *full =
        schakel__case_event__unpack(wire_wiped_allocator(), copy->len, copy->bytes);
    if (full == NULL)
        return -1;
    Schakel__Signal *linked =
        full->has_signal
            ? schakel__signal__unpack(wire_wiped_allocator(), full->signal.len, full->signal.data)
            : NULL;
    case_filtered_t filtered = {0};
    int rc = case_event_filter(full, linked, rule, 0, &filtered);
    if (rc == 0 && t->used + filtered.len + 8 > budget && full->attachment != NULL) {
        case_filtered_free(&filtered);
        rc = case_event_filter(full, linked, rule, 1, &filtered);
    }
    int fits = rc == 0 && t->used + filtered.len + 8 <= budget;
    /* a shown signal is a view of its subject's data, whatever fields of
     * it the rule lets through */
    if (fits && filtered.has_signal && case_timeline_note_subject(t, linked->subject) != 0)
        rc = -1;
    if (linked != NULL)
        schakel__signal__free_unpacked(linked, wire_wiped_allocator());
    schakel__case_event__free_unpacked(full, wire_wiped_allocator());
    if (rc != 0) {
        case_filtered_free(&filtered);
        return -1;
    }
    if (!fits) {
        t->more = 1;
        case_filtered_free(&filtered);
        return 0;
    }
    if (growarray_room((void **)&t->events, &t->cap, t->n, sizeof *t->events, 32) != 0) {
        case_filtered_free(&filtered);
        return -1;
    }
    Schakel__CaseEvent *mine =
        schakel__case_event__unpack(wire_wiped_allocator(), filtered.len, filtered.body);
    t->used += filtered.len + 8;
    case_filtered_free(&filtered);
    if (mine == NULL)
        return -1;
    t->events[t->n++] = mine;
    return 0;
}

/* The timeline of a case after event `after`, as `rule` lets its members
 * see it, as far as it fits `budget`: in order and without gaps, so the
 * first event that does not fit ends the page (t->more) and nothing after
 * it is read. Returns 0, or -1 (store error, out of memory, or a first
 * event that fits no page, which the broker never stores). */
static int case_timeline_load(broker_t *b, const char *case_id, uint64_t after,
                              uint64_t last_event_seq, const policy_case_member_rule_t *rule,
                              size_t budget, case_timeline_t *t)
{
    for (uint64_t seq = after; seq < last_event_seq;) {
        case_event_copy_t copy = {0};
        int visited = store_case_events(b->store, case_id, seq, case_event_copy_one, &copy);
        int rc = visited < 0 || copy.failed ? -1
                 : copy.bytes == NULL       ? 1
                                            : case_timeline_add(t, &copy, rule, budget);
        seq = copy.event_seq;
        case_event_copy_free(&copy);
        if (rc != 0)
            return rc < 0 ? -1 : 0;
        if (t->more)
            return t->n > 0 ? 0 : -1;
    }
    return 0;
}

/* The view's entries: one tagged with the case's subject, and one more
 * per other subject whose linked signals the page shows (an entry holds
 * one tag), so that each person's export finds who saw their data.
 * Returns 0, or -1 (the turn failed). */
static int case_view_record(broker_t *b, const policy_principal_t *asker, const char *case_id,
                            const char *case_subject, const case_timeline_t *t)
{
    if (record_case_viewed(b, asker->id, case_id, case_subject, t->n) != 0)
        return -1;
    for (size_t i = 0; i < t->n_linked; i++) {
        const case_linked_subject_t *other = &t->linked[i];
        if (case_subject != NULL && strcmp(other->subject, case_subject) == 0)
            continue;
        if (record_case_viewed_signals(b, asker->id, case_id, other->subject, t->n,
                                       other->signals) != 0)
            return -1;
    }
    return 0;
}

static void case_query_not_found(broker_t *b, const session_t *session, const char *case_id)
{
    char text[SCHAKEL_MAX_REJECT_TEXT];
    case_state_not_found_text(case_id, text, sizeof text);
    broker_reject(b, session, SCHAKEL__REASON__NOT_FOUND, text, NULL, -1, 0);
}

/* What a page of a case was decided on: the asker's rule, and the
 * subjects its entries name. NULL out of memory. */
static case_view_check_t *case_view_check_of_case(const policy_principal_t *asker,
                                                  const case_brief_t *brief,
                                                  const policy_case_member_rule_t *rule,
                                                  const char *subject, const case_timeline_t *t)
{
    case_view_check_t *check = case_view_check_new(asker, brief->case_id);
    if (check == NULL || case_view_check_add(check, brief, rule) != 0)
        goto fail;
    check->shown = t->n;
    snprintf(check->subject, sizeof check->subject, "%s", subject);
    if (t->n_linked > 0) {
        check->linked = calloc(t->n_linked, sizeof *check->linked);
        if (check->linked == NULL)
            goto fail;
        memcpy(check->linked, t->linked, t->n_linked * sizeof *check->linked);
        check->n_linked = t->n_linked;
    }
    return check;
fail:
    case_view_check_free(&check);
    return NULL;
}

/* A partner neither member nor invited is refused before the case row is
 * read (case_may_be_visible): as fast as an unknown id, and NOT_FOUND even
 * when that row is damaged. */
static void case_query_one(broker_t *b, const session_t *session, const policy_principal_t *asker,
                           const Schakel__CaseQuery *query)
{
    int visible = case_may_be_visible(b, asker, query->case_id, NULL);
    if (visible <= 0) {
        if (visible < 0)
            case_view_refuse_store(b, session);
        else
            case_query_not_found(b, session, query->case_id);
        return;
    }
    store_case_t c;
    case_brief_t brief = {0};
    case_members_t members = {0};
    case_timeline_t timeline = {0};
    int found = store_case_get(b->store, query->case_id, &c);
    if (found == 1 && c.expires_at <= b->now_s)
        found = 0; /* past its retention: gone, even before the sweep */
    if (found < 0 || (found == 1 && case_brief_set(&brief, &c, 0) != 0) ||
        (found == 1 && case_members_load(b->store, brief.case_id, &members) != 0)) {
        case_title_free(&brief.title);
        case_view_refuse_store(b, session);
        return;
    }
    uint64_t last_event_seq = found == 1 ? c.last_event_seq : 0;
    const case_member_t *own = case_members_find(&members, asker->partner->id);
    brief.my_state = own != NULL ? own->state : 0;
    const policy_case_member_rule_t *rule = found == 1 ? case_asker_rule(b, asker, &brief) : NULL;
    if (rule == NULL ||
        (brief.my_state != CASE_MEMBER_MEMBER && brief.my_state != CASE_MEMBER_INVITED)) {
        case_query_not_found(b, session, query->case_id);
    } else {
        char *member_ids[SCHAKEL_MAX_PARTNERS];
        Schakel__CaseSummary summary;
        Schakel__CaseSummary *summaries[1] = {&summary};
        Schakel__CaseView view = SCHAKEL__CASE_VIEW__INIT;
        case_summary_fill(&summary, &brief, &members, member_ids);
        size_t budget = SCHAKEL_MAX_FRAME_BYTES - CASE_VIEW_MARGIN -
                        protobuf_c_message_get_packed_size(&summary.base);
        char subject[SCHAKEL_MAX_SUBJECT_LEN + 1];
        case_view_check_t *check = NULL;
        /* an invited partner sees the case, not its contents */
        if ((brief.my_state == CASE_MEMBER_MEMBER &&
             case_timeline_load(b, brief.case_id, query->after_event_seq, last_event_seq, rule,
                                budget, &timeline) != 0) ||
            case_subject_load(b->store, brief.case_id, subject) != 0 ||
            (check = case_view_check_of_case(asker, &brief, rule, subject, &timeline)) == NULL) {
            case_view_refuse_store(b, session);
        } else if (!case_view_pending_allows(b, session, check)) {
            /* refused */
        } else if (case_view_record(b, asker, brief.case_id, subject[0] != '\0' ? subject : NULL,
                                    &timeline) == 0) {
            view.has_request_id = query->has_request_id;
            view.request_id = query->request_id;
            view.n_cases = 1;
            view.cases = summaries;
            view.n_events = timeline.n;
            view.events = timeline.events;
            view.has_more = view.more = timeline.more;
            case_view_send(b, session, &view, check);
            check = NULL; /* the reply's */
        } else {
            broker_reject(b, session, b->turn_failure,
                          "the broker could not record this view; ask again", NULL, -1, 0);
        }
        case_view_check_free(&check);
    }
    case_timeline_free(&timeline);
    case_members_free(&members);
    case_title_free(&brief.title);
}

void case_query_handle(broker_t *b, session_t *session, const policy_principal_t *asker,
                       const Schakel__CaseQuery *query)
{
    if (sendq_full(session->queue)) {
        /* A view can be 256 KiB, and the query costs the client one small
         * frame: one that asks and does not read would have the broker hold
         * every answer (sendq.h). Nothing is read or recorded. */
        b->stats.queries_held++;
        broker_reject(b, session, SCHAKEL__REASON__RATE_LIMITED,
                      "this connection has not read the answers and deliveries already sent to "
                      "it (4 MiB); read them, then ask again",
                      NULL, -1, 0);
        return;
    }
    if (sendq_shared_bytes(session->queue) >= b->max_principal_queued) {
        /* The same for all connections of the principal together: each of
         * its connections (up to max_connections_per_principal) could be
         * owed the bound above. */
        char text[SCHAKEL_MAX_REJECT_TEXT];
        snprintf(text, sizeof text,
                 "the connections of this principal have not read the answers and deliveries "
                 "already sent to them (%zu bytes, max_queued_bytes_per_principal); read them, "
                 "then ask again",
                 b->max_principal_queued);
        b->stats.principal_queries_held++;
        broker_reject(b, session, SCHAKEL__REASON__RATE_LIMITED, text, NULL, -1, 0);
        return;
    }
    if (query->case_id == NULL)
        case_query_list(b, session, asker, query);
    else
        case_query_one(b, session, asker, query);
}

/* ------------------------------------------------------------------ reachability */

typedef struct reach_ctx {
    const policy_t *policy;
    long unreachable;
} reach_ctx_t;

static int case_kind_reachable(const char *case_type, const char *lead, uint64_t open_cases,
                               void *arg)
{
    reach_ctx_t *r = arg;
    const policy_case_type_t *type = policy_case_type_by_id(r->policy, case_type);
    const policy_partner_t *partner = policy_partner_by_id(r->policy, lead);
    char why[2 * SCHAKEL_MAX_ID_LEN + 96];
    if (type == NULL)
        snprintf(why, sizeof why,
                 "the policy has no such case type: nobody can see or close these cases");
    else if (partner == NULL)
        snprintf(why, sizeof why, "the policy has no such partner: nobody can close these cases");
    else if (policy_case_membership(r->policy, type, partner, partner) == NULL)
        /* only the lead closes (case_state.c): out of the type's lead
         * list, it is not even a member any more */
        snprintf(why, sizeof why,
                 "lead %s is no longer a lead partner of %s: nobody can close these cases", lead,
                 case_type);
    else
        return 0;
    char n[24];
    snprintf(n, sizeof n, "%llu", (unsigned long long)open_cases);
    log_event(LOG_WARN, "cases.unreachable", "case_type", case_type, "lead", lead, "open", n, "why",
              why, NULL);
    r->unreachable += open_cases > (uint64_t)LONG_MAX ? LONG_MAX : (long)open_cases;
    return 0;
}

long case_check_reachable(broker_t *b)
{
    reach_ctx_t r = {.policy = b->policy, .unreachable = 0};
    if (store_open_case_kinds(b->store, case_kind_reachable, &r) < 0) {
        log_event(LOG_ERROR, "store.read_failed", "error", store_errmsg(b->store), NULL);
        return -1;
    }
    return r.unreachable;
}

/* ------------------------------------------------------------------ push */

int case_delivery_still_allowed(const policy_t *policy, const store_delivery_t *d,
                                const policy_principal_t *recipient)
{
    const policy_case_member_rule_t *rule = policy_case_member_rule_by_id(policy, d->rule_id);
    if (rule == NULL || recipient == NULL || strcmp(rule->hash_hex, d->rule_hash) != 0)
        return 0;
    return policy_case_member_reaches(policy, rule, recipient);
}
