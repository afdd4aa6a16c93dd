/*
 * test_cases.c — cases against a real schakeld, driven by libschakel.
 *
 * Each rule of docs/PROTOCOL.md "Cases" is its own test on its own broker
 * with the harness's case types (h_case_types): only members receive a
 * case's events and a partner outside it gets exactly the answer of an id
 * that does not exist; a late joiner receives the history in order; acting
 * for the lead is recorded with both names; a closed case refuses notes;
 * each member sees only its rule's note fields; an invite no rule allows is
 * refused naming the case type; leaving stops delivery at once; contents
 * expire after the close; a received signal can be linked, and its
 * deliveries and views are in its own subject's export; a repeated
 * command is answered, not carried out, again; lists are recorded; cases
 * a reload leaves unclosable are named; a store row that cannot be read
 * refuses what needs it, whole, and nothing else (who cannot see the case
 * never reads it). Waits are bounded: on
 * deliveries, answers and the broker's log, never on the clock.
 */
#define _GNU_SOURCE /* memmem */
#include "harness.h"
#include "schakel_limits.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/resource.h>

#include <sodium.h>
#include <sqlite3.h>

#define T H_TIMEOUT_MS
#define UNKNOWN_CASE "C-09999999"

/* ------------------------------------------------------------------ helpers */

static int setup_cases(void **state)
{
    h_env_t *env = h_env_new_with_cases();
    h_broker_start(env);
    *state = env;
    return 0;
}

/* An environment with the case types whose broker the test starts. */
static int setup_cases_env(void **state)
{
    *state = h_env_new_with_cases();
    return 0;
}

/* The broker stops cleanly on SIGTERM (under the sanitizers: without a
 * leak or an error), and the test is done. */
static void stop_clean(h_env_t *env)
{
    int rc = h_broker_stop(env);
    if (rc != 0)
        fail_msg("schakeld exited with %d on SIGTERM", rc);
    h_done(env);
}

static void must(schakel_client_t *c, schakel_status_t st, const char *what)
{
    if (st != SCHAKEL_OK) {
        const schakel_error_t *e = schakel_last_error(c);
        fail_msg("%s: %s (%s %s)", what, schakel_strerror(st), e->reason_name, e->text);
    }
}

/* The command must have been refused with `reason`; returns the error. */
static const schakel_error_t *must_refuse(schakel_client_t *c, schakel_status_t st,
                                          const char *reason, const char *what)
{
    const schakel_error_t *e = schakel_last_error(c);
    if (st != SCHAKEL_ERR_REFUSED)
        fail_msg("%s: expected a refusal %s, got %s (%s)", what, reason, schakel_strerror(st),
                 e->text);
    if (strcmp(e->reason_name, reason) != 0)
        fail_msg("%s: expected %s, got %s: %s", what, reason, e->reason_name, e->text);
    return e;
}

/* A case on the address of the signals: with a pseudonym and an address. */
static const schakel_case_open_t ADDRESS_CASE = {
    .case_type = "ondermijning-adres",
    .area = "BU09350101",
    .subject = "PSN-7f3a9c2e41",
    .postcode = "6211AB",
    .house_number = 12,
    .title = "Hennepkwekerij en contante betalingen",
};

static void open_case(schakel_client_t *c, const schakel_case_open_t *open,
                      char id[SCHAKEL_CASE_ID_SIZE])
{
    schakel_case_result_t r;
    must(c, schakel_case_open(c, open, NULL, id, &r, T), "open");
    assert_string_equal(r.case_id, id);
    assert_int_equal(r.duplicate, 0);
    assert_true(r.seq > 0);
}

static void invite(schakel_client_t *lead, const char *id, const char *partner)
{
    char what[96];
    snprintf(what, sizeof what, "invite %s", partner);
    must(lead, schakel_case_invite(lead, id, partner, NULL, NULL, T), what);
}

static void note(schakel_client_t *c, const char *id, const char *text,
                 const schakel_note_field_t *fields, size_t n, schakel_case_result_t *r)
{
    must(c, schakel_case_note(c, id, text, fields, n, NULL, r, T), "note");
}

/* The next delivery must be an event of this case of this kind; it is
 * acked and returned (the caller frees it). */
static schakel_delivery_t *expect_event(schakel_client_t *c, const char *id, int kind)
{
    schakel_delivery_t *d = h_receive(c);
    if (!d->is_case_event || d->case_event == NULL)
        fail_msg("expected case event %s of %s, got a signal (kind %s)",
                 schakel_case_event_kind_name(kind), id, d->kind ? d->kind : "-");
    const schakel_case_event_t *ev = d->case_event;
    if (strcmp(ev->case_id, id) != 0 || ev->kind != kind)
        fail_msg("expected case event %s of %s, got %s of %s (event %llu)",
                 schakel_case_event_kind_name(kind), id, schakel_case_event_kind_name(ev->kind),
                 ev->case_id, (unsigned long long)ev->event_seq);
    assert_non_null(d->rule_id);
    assert_non_null(d->rule_hash);
    assert_non_null(d->purpose);
    assert_non_null(d->legal_basis);
    must(c, schakel_ack(c, d->seq), "ack");
    return d;
}

/* Receive, ack and drop events of these kinds, in this order. */
static void expect_events(schakel_client_t *c, const char *id, const int *kinds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        schakel_delivery_t *d = expect_event(c, id, kinds[i]);
        schakel_delivery_free(&d);
    }
}

/* Nothing waits for this client any more (what it received is acked). */
static void expect_quiet(schakel_client_t *c, const char *who)
{
    uint64_t backlog = h_backlog(c);
    if (backlog != 0)
        fail_msg("%s still has %llu deliveries waiting", who, (unsigned long long)backlog);
}

static const char *field_value(const schakel_case_event_t *ev, const char *name)
{
    for (size_t i = 0; i < ev->n_fields; i++)
        if (strcmp(ev->fields[i].name, name) == 0)
            return ev->fields[i].value;
    return NULL;
}

/* The names of an event's note fields, comma-separated, in order. */
static void field_names(const schakel_case_event_t *ev, char *out, size_t len)
{
    out[0] = '\0';
    for (size_t i = 0; i < ev->n_fields; i++) {
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%s%s", i ? "," : "", ev->fields[i].name);
    }
}

/* A refusal text with the case id replaced by "ID", to compare the answer
 * about a real case with the answer about one that does not exist. */
static void without_id(const char *text, const char *id, char *out, size_t len)
{
    const char *at = strstr(text, id);
    if (at == NULL) {
        snprintf(out, len, "%s", text);
        return;
    }
    snprintf(out, len, "%.*sID%s", (int)(at - text), text, at + strlen(id));
}

/* Riec opens the address case, invites partners who accept; every client
 * has drained what this produced. */
static void case_with_members(schakel_client_t *riec, char id[SCHAKEL_CASE_ID_SIZE],
                              schakel_client_t **members, const char *const *partners, size_t n)
{
    open_case(riec, &ADDRESS_CASE, id);
    schakel_delivery_t *d = expect_event(riec, id, SCHAKEL_CASE_EVENT_OPENED);
    schakel_delivery_free(&d);
    for (size_t i = 0; i < n; i++) {
        invite(riec, id, partners[i]);
        d = expect_event(riec, id, SCHAKEL_CASE_EVENT_INVITED);
        schakel_delivery_free(&d);
        d = expect_event(members[i], id, SCHAKEL_CASE_EVENT_INVITED);
        schakel_delivery_free(&d);
        must(members[i], schakel_case_accept(members[i], id, NULL, NULL, T), "accept");
        /* history (without its own invitation), then its joining */
        for (;;) {
            d = h_receive(members[i]);
            assert_true(d->is_case_event);
            int kind = d->case_event->kind;
            int is_own_join = kind == SCHAKEL_CASE_EVENT_JOINED &&
                              strcmp(d->case_event->partner, partners[i]) == 0;
            must(members[i], schakel_ack(members[i], d->seq), "ack");
            schakel_delivery_free(&d);
            if (is_own_join)
                break;
        }
        for (size_t k = 0; k < i; k++) { /* earlier members see the invitation and the join */
            static const int seen[] = {SCHAKEL_CASE_EVENT_INVITED, SCHAKEL_CASE_EVENT_JOINED};
            expect_events(members[k], id, seen, 2);
        }
        d = expect_event(riec, id, SCHAKEL_CASE_EVENT_JOINED);
        schakel_delivery_free(&d);
    }
}

/* ------------------------------------------------------------------ membership */

/* Only members receive a case's events; a partner that is no member (never
 * invited, declined, or another partner altogether) gets, for anything it
 * asks about the case, the answer an unknown id gets: NOT_FOUND, same text. */
static void test_membership_boundary(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *om = h_connect(env, H_OM);
    schakel_client_t *gemeente = h_connect(env, H_GEMEENTE);
    schakel_client_t *brandweer = h_connect(env, H_BRANDWEER);
    char id[SCHAKEL_CASE_ID_SIZE];
    schakel_client_t *members[] = {politie};
    const char *const partners[] = {"politie"};
    case_with_members(riec, id, members, partners, 1);

    /* om is invited and declines: it is outside the case again */
    invite(riec, id, "om");
    schakel_delivery_t *d = expect_event(om, id, SCHAKEL_CASE_EVENT_INVITED);
    assert_string_equal(d->case_event->partner, "om");
    must(om, schakel_ack(om, d->seq), "ack");
    schakel_delivery_free(&d);
    /* no contents before it joins: the invitation is all that waits */
    assert_int_equal(h_backlog(om), 0);
    must(om, schakel_case_decline(om, id, NULL, NULL, T), "decline");
    static const int riec_saw[] = {SCHAKEL_CASE_EVENT_INVITED, SCHAKEL_CASE_EVENT_DECLINED};
    expect_events(riec, id, riec_saw, 2);
    expect_events(politie, id, riec_saw, 2);

    static const schakel_note_field_t fields[] = {{"financieel", "Huur contant, 1.400 euro"}};
    schakel_case_result_t r;
    note(riec, id, "Eigenaar onbereikbaar; huurder onbekend bij de gemeente", fields, 1, &r);
    assert_int_equal(r.recipients, 3); /* riec/analyse, riec/m.janssen, politie */
    d = expect_event(politie, id, SCHAKEL_CASE_EVENT_NOTE);
    assert_string_equal(d->case_event->text,
                        "Eigenaar onbereikbaar; huurder onbekend bij de gemeente");
    assert_string_equal(field_value(d->case_event, "financieel"), "Huur contant, 1.400 euro");
    assert_string_equal(d->rule_id, "ondermijning-politie");
    schakel_delivery_free(&d);
    expect_quiet(politie, "politie");
    expect_quiet(om, "om");
    expect_quiet(gemeente, "gemeente");
    expect_quiet(brandweer, "brandweer");

    /* The answer for an id that does not exist ... */
    char unknown[512], seen[512];
    const schakel_error_t *e = must_refuse(
        gemeente, schakel_case_note(gemeente, UNKNOWN_CASE, "x", NULL, 0, NULL, NULL, T),
        "NOT_FOUND", "note on an unknown case");
    without_id(e->text, UNKNOWN_CASE, unknown, sizeof unknown);
    assert_non_null(strstr(e->text, UNKNOWN_CASE));
    /* ... is the answer outsiders get for everything about this case. */
    schakel_client_t *outsiders[] = {gemeente, om, brandweer};
    const char *names[] = {"gemeente", "om (declined)", "brandweer"};
    for (size_t i = 0; i < 3; i++) {
        schakel_client_t *c = outsiders[i];
        for (int k = 0; k < 8; k++) {
            schakel_case_view_t *view = NULL;
            schakel_status_t st = SCHAKEL_OK;
            switch (k) {
            case 0:
                st = schakel_case_note(c, id, "x", NULL, 0, NULL, NULL, T);
                break;
            case 1:
                st = schakel_case_show(c, id, &view, T);
                break;
            case 2:
                st = schakel_case_accept(c, id, NULL, NULL, T);
                break;
            case 3:
                st = schakel_case_decline(c, id, NULL, NULL, T);
                break;
            case 4:
                st = schakel_case_leave(c, id, NULL, NULL, NULL, T);
                break;
            case 5:
                st = schakel_case_close(c, id, "klaar", NULL, NULL, T);
                break;
            case 6:
                st = schakel_case_invite(c, id, "gemeente", NULL, NULL, T);
                break;
            default:
                st = schakel_case_attach(c, id, "a.txt", "text/plain", (const uint8_t *)"a", 1,
                                         NULL, NULL, T);
                break;
            }
            char what[96];
            snprintf(what, sizeof what, "%s, command %d on %s", names[i], k, id);
            e = must_refuse(c, st, "NOT_FOUND", what);
            without_id(e->text, id, seen, sizeof seen);
            assert_string_equal(seen, unknown);
            assert_null(view);
        }
        schakel_case_list_t *list = NULL;
        must(c, schakel_case_list(c, &list, T), "list");
        assert_int_equal(list->n_cases, 0);
        schakel_case_list_free(&list);
        expect_quiet(c, names[i]);
    }
    /* members see the case, and nothing of it reached anyone else */
    schakel_case_list_t *list = NULL;
    must(politie, schakel_case_list(politie, &list, T), "list");
    assert_int_equal(list->n_cases, 1);
    assert_string_equal(list->cases[0].case_id, id);
    assert_int_equal(list->cases[0].invited, 0);
    schakel_case_list_free(&list);
    expect_quiet(politie, "politie");
    schakel_close(&brandweer);
    schakel_close(&gemeente);
    schakel_close(&om);
    schakel_close(&politie);
    schakel_close(&riec);
    stop_clean(env);
}

/* A partner that joins later receives the history its rule allows, in
 * order, then its own joining; and the timeline shows the same. */
static void test_late_joiner_history(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *om = h_connect(env, H_OM);
    char id[SCHAKEL_CASE_ID_SIZE];
    schakel_client_t *members[] = {politie};
    const char *const partners[] = {"politie"};
    case_with_members(riec, id, members, partners, 1); /* events 1 opened .. 3 joined */
    invite(riec, id, "om");                            /* 4 */
    schakel_delivery_t *d = expect_event(om, id, SCHAKEL_CASE_EVENT_INVITED);
    assert_int_equal(d->case_event->event_seq, 4);
    schakel_delivery_free(&d);
    static const schakel_note_field_t f1[] = {{"financieel", "Drie panden contant gekocht"}};
    static const schakel_note_field_t f2[] = {{"strafrechtelijk", "Lopend onderzoek 26Hennep"}};
    note(riec, id, "Eerste overleg gepland", f1, 1, NULL);           /* 5 */
    note(politie, id, "Observatie bevestigt kwekerij", f2, 1, NULL); /* 6 */
    static const uint8_t pdf[] = "%PDF-1.4 proces-verbaal (fictief)";
    must(riec,
         schakel_case_attach(riec, id, "pv-2026-0042.pdf", "application/pdf", pdf, sizeof pdf, NULL,
                             NULL, T),
         "attach");                                                 /* 7 */
    must(om, schakel_case_accept(om, id, NULL, NULL, T), "accept"); /* 8 */

    static const int history[] = {
        SCHAKEL_CASE_EVENT_OPENED, SCHAKEL_CASE_EVENT_INVITED, SCHAKEL_CASE_EVENT_JOINED,
        SCHAKEL_CASE_EVENT_NOTE,   SCHAKEL_CASE_EVENT_NOTE,    SCHAKEL_CASE_EVENT_ATTACHMENT,
        SCHAKEL_CASE_EVENT_JOINED,
    };
    static const uint64_t seqs[] = {1, 2, 3, 5, 6, 7, 8};
    for (size_t i = 0; i < sizeof history / sizeof history[0]; i++) {
        d = expect_event(om, id, history[i]);
        const schakel_case_event_t *ev = d->case_event;
        assert_int_equal(ev->event_seq, seqs[i]);
        assert_string_equal(d->rule_id, "ondermijning-politie");
        if (i == 0) {
            assert_string_equal(ev->title, ADDRESS_CASE.title);
            assert_string_equal(ev->subject, ADDRESS_CASE.subject);
            assert_string_equal(ev->postcode, "6211AB");
            assert_string_equal(ev->actor, H_RIEC);
        } else if (i == 3) {
            assert_string_equal(ev->text, "Eerste overleg gepland");
            assert_string_equal(field_value(ev, "financieel"), "Drie panden contant gekocht");
        } else if (i == 4) {
            assert_string_equal(ev->actor, H_POLITIE);
            assert_string_equal(field_value(ev, "strafrechtelijk"), "Lopend onderzoek 26Hennep");
        } else if (i == 5) {
            assert_true(ev->has_attachment);
            assert_string_equal(ev->attachment_name, "pv-2026-0042.pdf");
            assert_int_equal(ev->attachment_len, sizeof pdf);
            assert_memory_equal(ev->attachment, pdf, sizeof pdf);
        } else if (i == 6) {
            assert_string_equal(ev->partner, "om");
            assert_int_equal(ev->n_members, 3); /* riec, politie, om */
        }
        schakel_delivery_free(&d);
    }
    expect_quiet(om, "om");

    /* from now on it receives as every member does */
    note(riec, id, "Actie afgestemd met het OM", NULL, 0, NULL); /* 9 */
    d = expect_event(om, id, SCHAKEL_CASE_EVENT_NOTE);
    assert_int_equal(d->case_event->event_seq, 9);
    schakel_delivery_free(&d);

    /* the timeline as om may see it: every event, in order */
    schakel_case_view_t *view = NULL;
    must(om, schakel_case_show(om, id, &view, T), "show");
    assert_int_equal(view->n_events, 9);
    for (size_t i = 0; i < view->n_events; i++)
        assert_int_equal(view->events[i].event_seq, i + 1);
    assert_int_equal(view->events[6].kind, SCHAKEL_CASE_EVENT_ATTACHMENT);
    assert_string_equal(view->events[6].attachment_name, "pv-2026-0042.pdf");
    assert_string_equal(view->summary.case_id, id);
    assert_int_equal(view->summary.invited, 0);
    schakel_case_view_free(&view);
    schakel_close(&om);
    schakel_close(&politie);
    schakel_close(&riec);
    stop_clean(env);
}

/* ------------------------------------------------------------------ acting for the lead */

/* Runs schakelctl audit tail over the whole trail; the caller frees res. */
static void audit_all(h_env_t *env, h_cli_result_t *res)
{
    int rc = h_run_ctl(env, NULL, NULL, res, "audit", "tail", "--store", env->store_path, "--from",
                       "1", "--no-follow", "--json", NULL);
    if (rc != 0)
        fail_msg("schakelctl audit tail: exit %d: %s", rc, res->err);
}

/* The first line of out holding every needle (NULL-terminated), or NULL;
 * the line is copied into line. */
static const char *audit_line(const char *out, char *line, size_t len, const char *const *needles)
{
    for (const char *at = out; at != NULL && *at != '\0';) {
        const char *end = strchr(at, '\n');
        size_t n = end ? (size_t)(end - at) : strlen(at);
        snprintf(line, len, "%.*s", (int)n, at);
        int all = 1;
        for (size_t i = 0; needles[i] != NULL && all; i++)
            all = strstr(line, needles[i]) != NULL;
        if (all)
            return line;
        at = end ? end + 1 : NULL;
    }
    return NULL;
}

/* The Veiligheidshuis coordinator acts for the RIEC where the case type
 * says so: the events name it as actor and the RIEC as the partner it
 * acted for, and so do the audit entries. Claiming a partner one may not
 * act for is refused. */
static void test_act_on_behalf_recorded(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *vh = h_connect(env, H_VEILIGHEIDSHUIS);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    const schakel_case_options_t for_riec = {.on_behalf_of = "riec"};
    char id[SCHAKEL_CASE_ID_SIZE];
    must(vh, schakel_case_open(vh, &ADDRESS_CASE, &for_riec, id, NULL, T), "open for riec");
    schakel_delivery_t *d = expect_event(riec, id, SCHAKEL_CASE_EVENT_OPENED);
    assert_string_equal(d->case_event->actor, H_VEILIGHEIDSHUIS);
    assert_string_equal(d->case_event->on_behalf_of, "riec");
    assert_string_equal(d->case_event->lead, "riec");
    assert_string_equal(d->sender, H_VEILIGHEIDSHUIS);
    schakel_delivery_free(&d);
    must(vh, schakel_case_invite(vh, id, "politie", &for_riec, NULL, T), "invite for riec");
    d = expect_event(politie, id, SCHAKEL_CASE_EVENT_INVITED);
    assert_string_equal(d->case_event->actor, H_VEILIGHEIDSHUIS);
    assert_string_equal(d->case_event->on_behalf_of, "riec");
    schakel_delivery_free(&d);
    must(politie, schakel_case_accept(politie, id, NULL, NULL, T), "accept");
    must(vh,
         schakel_case_note(vh, id, "Procesafspraak 4711 vastgelegd", NULL, 0, &for_riec, NULL, T),
         "note for riec");

    /* its own partner is no member: without acting for the lead it sees nothing */
    must_refuse(vh, schakel_case_note(vh, id, "x", NULL, 0, NULL, NULL, T), "NOT_FOUND",
                "note for itself");
    const schakel_case_options_t for_gemeente = {.on_behalf_of = "gemeente"};
    must_refuse(vh, schakel_case_note(vh, id, "x", NULL, 0, &for_gemeente, NULL, T), "NOT_FOUND",
                "note for a partner that does not lead the case");
    /* a member may not claim to act for the lead */
    const schakel_error_t *e =
        must_refuse(politie, schakel_case_note(politie, id, "x", NULL, 0, &for_riec, NULL, T),
                    "NOT_PERMITTED", "a member acting for the lead");
    assert_string_equal(e->text, "may not act for riec in case type ondermijning-adres");
    /* opening for a partner that may not lead this type */
    e = must_refuse(vh, schakel_case_open(vh, &ADDRESS_CASE, &for_gemeente, NULL, NULL, T),
                    "NOT_PERMITTED", "open for gemeente");
    assert_string_equal(e->text, "may not act for gemeente in case type ondermijning-adres");

    h_cli_result_t res = {0};
    audit_all(env, &res);
    char line[4096];
    const char *opened[] = {"\"event\":\"case.opened\"",
                            "\"actor\":\"" H_VEILIGHEIDSHUIS "\"",
                            "on_behalf_of=riec",
                            "lead=riec",
                            id,
                            NULL};
    if (audit_line(res.out, line, sizeof line, opened) == NULL)
        fail_msg("no case.opened entry naming the coordinator and riec in:\n%s", res.out);
    const char *invited[] = {"\"event\":\"case.invited\"",
                             "\"actor\":\"" H_VEILIGHEIDSHUIS "\"",
                             "on_behalf_of=riec",
                             "partner=politie",
                             "\"rule_id\":\"ondermijning-politie\"",
                             NULL};
    if (audit_line(res.out, line, sizeof line, invited) == NULL)
        fail_msg("no case.invited entry naming the coordinator and riec in:\n%s", res.out);
    const char *joined[] = {"\"event\":\"case.joined\"", "\"actor\":\"" H_POLITIE "\"",
                            "partner=politie", NULL};
    assert_non_null(audit_line(res.out, line, sizeof line, joined));
    const char *noted[] = {"\"event\":\"case.note\"", "\"actor\":\"" H_VEILIGHEIDSHUIS "\"",
                           "on_behalf_of=riec", NULL};
    assert_non_null(audit_line(res.out, line, sizeof line, noted));
    /* metadata only: the note's text is nowhere on the trail */
    assert_null(strstr(res.out, "Procesafspraak"));
    assert_null(strstr(res.out, ADDRESS_CASE.title));
    h_cli_result_free(&res);
    schakel_close(&politie);
    schakel_close(&vh);
    schakel_close(&riec);
    stop_clean(env);
}

/* ------------------------------------------------------------------ closing */

/* A closed case refuses notes, attachments, links and invitations
 * (CASE_CLOSED); the lead reopens it where the type allows, and not
 * where it does not. */
static void test_closed_case_refuses_notes(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *gemeente = h_connect(env, H_GEMEENTE);
    char id[SCHAKEL_CASE_ID_SIZE];
    schakel_client_t *members[] = {politie};
    const char *const partners[] = {"politie"};
    case_with_members(riec, id, members, partners, 1);
    must_refuse(politie, schakel_case_close(politie, id, "klaar", NULL, NULL, T), "NOT_PERMITTED",
                "close by a member");
    must(riec,
         schakel_case_close(riec, id, "Pand gesloten (art. 13b), casus afgerond", NULL, NULL, T),
         "close");
    schakel_delivery_t *d = expect_event(politie, id, SCHAKEL_CASE_EVENT_CLOSED);
    assert_string_equal(d->case_event->text, "Pand gesloten (art. 13b), casus afgerond");
    /* retention now runs from the close: 30 days for this type */
    assert_int_equal(d->expires_at - d->case_event->at, 30 * 86400);
    schakel_delivery_free(&d);

    const schakel_error_t *e =
        must_refuse(riec, schakel_case_note(riec, id, "nog iets", NULL, 0, NULL, NULL, T),
                    "CASE_CLOSED", "note by the lead");
    char want[64];
    snprintf(want, sizeof want, "case %s is closed", id);
    assert_string_equal(e->text, want);
    must_refuse(politie, schakel_case_note(politie, id, "nog iets", NULL, 0, NULL, NULL, T),
                "CASE_CLOSED", "note by a member");
    must_refuse(politie,
                schakel_case_attach(politie, id, "b.txt", "text/plain", (const uint8_t *)"b", 1,
                                    NULL, NULL, T),
                "CASE_CLOSED", "attach");
    must_refuse(riec, schakel_case_invite(riec, id, "gemeente", NULL, NULL, T), "CASE_CLOSED",
                "invite");
    must_refuse(riec, schakel_case_close(riec, id, "nogmaals", NULL, NULL, T), "CASE_CLOSED",
                "close again");
    schakel_case_list_t *list = NULL;
    must(politie, schakel_case_list(politie, &list, T), "list");
    assert_int_equal(list->n_cases, 1);
    assert_int_equal(list->cases[0].closed, 1);
    schakel_case_list_free(&list);
    expect_quiet(politie, "politie");

    must_refuse(politie, schakel_case_reopen(politie, id, NULL, NULL, NULL, T), "NOT_PERMITTED",
                "reopen by a member");
    must(riec, schakel_case_reopen(riec, id, "Nieuwe signalen op het adres", NULL, NULL, T),
         "reopen");
    d = expect_event(politie, id, SCHAKEL_CASE_EVENT_REOPENED);
    assert_true(d->expires_at > d->case_event->at + 100LL * 365 * 86400); /* open: no end */
    schakel_delivery_free(&d);
    note(riec, id, "Weer open", NULL, 0, NULL);
    d = expect_event(politie, id, SCHAKEL_CASE_EVENT_NOTE);
    schakel_delivery_free(&d);

    /* a type without reopen */
    static const schakel_case_open_t street = {
        .case_type = "overlast-kort", .area = "WK093501", .title = "Overlast Boschstraat"};
    char street_id[SCHAKEL_CASE_ID_SIZE];
    open_case(gemeente, &street, street_id);
    must(gemeente, schakel_case_close(gemeente, street_id, "Rustig", NULL, NULL, T), "close");
    e = must_refuse(gemeente, schakel_case_reopen(gemeente, street_id, NULL, NULL, NULL, T),
                    "NOT_PERMITTED", "reopen where the type does not allow it");
    assert_string_equal(e->text, "case type overlast-kort does not allow reopening a closed case");
    schakel_close(&gemeente);
    schakel_close(&politie);
    schakel_close(&riec);
    stop_clean(env);
}

/* ------------------------------------------------------------------ minimisation */

/* Each member sees only the note fields (and case fields) its membership
 * rule names: the municipality gets the note without 'financieel' and
 * 'strafrechtelijk', and the case without its subject. */
static void test_note_field_minimisation(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *gemeente = h_connect(env, H_GEMEENTE);
    char id[SCHAKEL_CASE_ID_SIZE];
    open_case(riec, &ADDRESS_CASE, id);
    invite(riec, id, "politie");
    invite(riec, id, "gemeente");
    schakel_delivery_t *d = expect_event(politie, id, SCHAKEL_CASE_EVENT_INVITED);
    schakel_delivery_free(&d);
    d = expect_event(gemeente, id, SCHAKEL_CASE_EVENT_INVITED);
    schakel_delivery_free(&d);
    must(politie, schakel_case_accept(politie, id, NULL, NULL, T), "accept politie");
    must(gemeente, schakel_case_accept(gemeente, id, NULL, NULL, T), "accept gemeente");

    /* the case as opened: gemeente gets the address, not the person */
    d = expect_event(gemeente, id, SCHAKEL_CASE_EVENT_OPENED);
    assert_string_equal(d->rule_id, "ondermijning-gemeente");
    assert_string_equal(d->purpose, "Bestuurlijke aanpak (Opiumwet art. 13b)");
    assert_string_equal(d->legal_basis, "Convenant RIEC Limburg, art. 7 lid 3");
    assert_null(d->case_event->subject);
    assert_string_equal(d->case_event->postcode, "6211AB");
    assert_int_equal(d->case_event->house_number, 12);
    assert_string_equal(d->case_event->title, ADDRESS_CASE.title);
    assert_string_equal(d->case_event->area, "BU09350101");
    schakel_delivery_free(&d);
    d = expect_event(politie, id, SCHAKEL_CASE_EVENT_OPENED);
    assert_string_equal(d->rule_id, "ondermijning-politie");
    assert_string_equal(d->case_event->subject, ADDRESS_CASE.subject);
    schakel_delivery_free(&d);

    static const schakel_note_field_t fields[] = {
        {"financieel", "40.000 euro contant gestort"},
        {"strafrechtelijk", "Huurder eerder veroordeeld (Opiumwet)"},
        {"bestuurlijk", "Sluiting op grond van art. 13b overwogen"},
        {"intern", "Alleen voor de RIEC"},
    };
    schakel_case_result_t r;
    note(riec, id, "Gezamenlijke aanpak Markt 12", fields, 4, &r);
    struct {
        schakel_client_t *client;
        const char *who, *rule, *fields;
    } views[] = {
        {politie, "politie", "ondermijning-politie", "financieel,strafrechtelijk"},
        {gemeente, "gemeente", "ondermijning-gemeente", "bestuurlijk"},
        {riec, "riec", "ondermijning-adres.lead", "financieel,strafrechtelijk,bestuurlijk,intern"},
    };
    for (size_t i = 0; i < 3; i++) {
        schakel_client_t *c = views[i].client;
        for (;;) { /* skip membership events still waiting for it */
            d = h_receive(c);
            must(c, schakel_ack(c, d->seq), "ack");
            assert_true(d->is_case_event);
            if (d->case_event->kind == SCHAKEL_CASE_EVENT_NOTE)
                break;
            schakel_delivery_free(&d);
        }
        char names[256];
        field_names(d->case_event, names, sizeof names);
        if (strcmp(names, views[i].fields) != 0)
            fail_msg("%s saw note fields '%s', expected '%s'", views[i].who, names,
                     views[i].fields);
        assert_string_equal(d->rule_id, views[i].rule);
        assert_string_equal(d->case_event->text, "Gezamenlijke aanpak Markt 12");
        for (size_t k = 0; k < d->case_event->n_fields; k++)
            for (size_t f = 0; f < 4; f++)
                if (strcmp(fields[f].name, d->case_event->fields[k].name) == 0)
                    assert_string_equal(d->case_event->fields[k].value, fields[f].value);
        schakel_delivery_free(&d);
    }
    /* the timeline as gemeente may see it holds no more */
    schakel_case_view_t *view = NULL;
    must(gemeente, schakel_case_show(gemeente, id, &view, T), "show");
    for (size_t i = 0; i < view->n_events; i++) {
        const schakel_case_event_t *ev = &view->events[i];
        assert_null(ev->subject);
        assert_null(field_value(ev, "financieel"));
        assert_null(field_value(ev, "strafrechtelijk"));
        assert_null(field_value(ev, "intern"));
        if (ev->kind == SCHAKEL_CASE_EVENT_NOTE)
            assert_string_equal(field_value(ev, "bestuurlijk"), fields[2].value);
    }
    schakel_case_view_free(&view);
    schakel_close(&gemeente);
    schakel_close(&politie);
    schakel_close(&riec);
    stop_clean(env);
}

/* ------------------------------------------------------------------ invitations */

/* An invitation no membership rule allows is refused naming the case type;
 * only the lead invites; nobody is invited twice. */
static void test_invite_refused_by_rule(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    char id[SCHAKEL_CASE_ID_SIZE];
    schakel_client_t *members[] = {politie};
    const char *const partners[] = {"politie"};
    case_with_members(riec, id, members, partners, 1);
    const schakel_error_t *e =
        must_refuse(riec, schakel_case_invite(riec, id, "brandweer", NULL, NULL, T),
                    "POLICY_DENIED", "invite brandweer");
    assert_string_equal(e->text,
                        "no rule lets brandweer be a member of a case of type ondermijning-adres");
    must_refuse(riec, schakel_case_invite(riec, id, "onbekend", NULL, NULL, T), "POLICY_DENIED",
                "invite a partner the policy does not know");
    e = must_refuse(politie, schakel_case_invite(politie, id, "gemeente", NULL, NULL, T),
                    "NOT_PERMITTED", "invite by a member");
    char want[128];
    snprintf(want, sizeof want, "only the lead partner riec invites partners to case %s", id);
    assert_string_equal(e->text, want);
    must_refuse(riec, schakel_case_invite(riec, id, "politie", NULL, NULL, T), "NOT_PERMITTED",
                "invite a member");
    invite(riec, id, "gemeente");
    must_refuse(riec, schakel_case_invite(riec, id, "gemeente", NULL, NULL, T), "NOT_PERMITTED",
                "invite twice");
    assert_int_equal(h_backlog_of(env, H_BRANDWEER), 0);
    /* a case type the policy does not have */
    schakel_case_open_t other = ADDRESS_CASE;
    other.case_type = "bestaat-niet";
    e = must_refuse(riec, schakel_case_open(riec, &other, NULL, NULL, NULL, T), "POLICY_DENIED",
                    "open a type the policy lacks");
    assert_string_equal(e->text, "case type bestaat-niet is not in the policy");
    /* a partner that may not lead this type */
    must_refuse(politie, schakel_case_open(politie, &ADDRESS_CASE, NULL, NULL, NULL, T),
                "POLICY_DENIED", "open by a partner that does not lead the type");
    schakel_close(&politie);
    schakel_close(&riec);
    stop_clean(env);
}

/* ------------------------------------------------------------------ leaving */

/* The trail read beside the running broker: `sql` prepared on a read-only
 * connection of the store, with p1 and p2 (when not NULL) bound as ?1 and
 * ?2. End with trail_done. */
static sqlite3_stmt *trail_query(const h_env_t *env, const char *sql, const char *p1,
                                 const char *p2)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_open_v2(env->store_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
        fail_msg("reading the trail: %s", sqlite3_errmsg(db));
    if (p1 != NULL)
        sqlite3_bind_text(stmt, 1, p1, -1, SQLITE_TRANSIENT);
    if (p2 != NULL)
        sqlite3_bind_text(stmt, 2, p2, -1, SQLITE_TRANSIENT);
    return stmt;
}

static void trail_done(sqlite3_stmt *stmt)
{
    sqlite3 *db = sqlite3_db_handle(stmt);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
}

/* The "delivery.revoked" entries of the trail whose reason is `why`, each
 * for another delivery of a principal of `partner`. */
static int revoked_entries(const h_env_t *env, const char *partner, const char *why)
{
    char like[80];
    snprintf(like, sizeof like, "%s/%%", partner);
    sqlite3_stmt *stmt = trail_query(env,
                                     "SELECT count(*), count(DISTINCT delivery_seq) FROM audit"
                                     " WHERE event = 'delivery.revoked' AND recipient LIKE ?1"
                                     " AND reason = ?2",
                                     like, why);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    int n = sqlite3_column_int(stmt, 0);
    assert_int_equal(sqlite3_column_int(stmt, 1), n);
    trail_done(stmt);
    return n;
}

/* A partner that leaves, or that the lead removes, stops receiving at
 * once: what waited in its mailbox is gone in the same commit, nothing
 * follows, and the case is NOT_FOUND to it from then on. */
static void test_leave_stops_delivery(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *om = h_connect(env, H_OM);
    char id[SCHAKEL_CASE_ID_SIZE];
    schakel_client_t *members[] = {politie, om};
    const char *const partners[] = {"politie", "om"};
    case_with_members(riec, id, members, partners, 2);
    /* they stop receiving: what follows waits in their mailboxes */
    schakel_close(&politie);
    schakel_close(&om);
    note(riec, id, "Eerste bevindingen", NULL, 0, NULL);
    note(riec, id, "Tweede bevindingen", NULL, 0, NULL);
    assert_int_equal(h_backlog_of(env, H_POLITIE), 2);
    assert_int_equal(h_backlog_of(env, H_OM), 2);

    politie = h_connect(env, H_POLITIE);
    must(politie, schakel_case_leave(politie, id, NULL, NULL, NULL, T), "leave");
    assert_int_equal(h_backlog(politie), 0); /* at once: in the same commit */
    char why[96];                            /* and each withdrawn delivery ends in the trail */
    snprintf(why, sizeof why, "partner politie left case %s", id);
    assert_int_equal(revoked_entries(env, "politie", why), 2);
    schakel_case_result_t r;
    note(riec, id, "Derde bevindingen", NULL, 0, &r);
    assert_int_equal(r.recipients, 3); /* riec's two principals and om's, not politie's */
    assert_int_equal(h_backlog(politie), 0);
    must_refuse(politie, schakel_case_note(politie, id, "x", NULL, 0, NULL, NULL, T), "NOT_FOUND",
                "note after leaving");
    schakel_case_view_t *view = NULL;
    must_refuse(politie, schakel_case_show(politie, id, &view, T), "NOT_FOUND",
                "show after leaving");

    /* the lead removes om */
    om = h_connect(env, H_OM);
    assert_int_equal(h_backlog(om), 4); /* two notes, politie leaving, the third note */
    must(riec, schakel_case_leave(riec, id, "om", NULL, NULL, T), "remove om");
    assert_int_equal(h_backlog(om), 0);
    snprintf(why, sizeof why, "partner om was removed from case %s", id);
    assert_int_equal(revoked_entries(env, "om", why), 4);
    note(riec, id, "Vierde bevindingen", NULL, 0, &r);
    assert_int_equal(r.recipients, 2);
    assert_int_equal(h_backlog(om), 0);
    must_refuse(om, schakel_case_show(om, id, &view, T), "NOT_FOUND", "show after removal");
    /* the lead cannot leave its own case */
    must_refuse(riec, schakel_case_leave(riec, id, NULL, NULL, NULL, T), "NOT_PERMITTED",
                "the lead leaves");

    /* the lead saw both go */
    schakel_delivery_t *d = NULL;
    int left_seen = 0;
    while (left_seen < 2) {
        d = h_receive(riec);
        must(riec, schakel_ack(riec, d->seq), "ack");
        if (d->is_case_event && d->case_event->kind == SCHAKEL_CASE_EVENT_LEFT) {
            const char *who = left_seen == 0 ? "politie" : "om";
            assert_string_equal(d->case_event->partner, who);
            left_seen++;
        }
        schakel_delivery_free(&d);
    }
    schakel_close(&om);
    schakel_close(&politie);
    schakel_close(&riec);
    stop_clean(env);
}

/* Every entry the trail holds about a case (its commands, each delivery
 * of its events, the views of its timeline) carries the tag of the
 * subject it was opened with, whether or not a recipient's rule shows the
 * pseudonym: a data-subject export finds them all. Read beside the
 * running broker. */
static void test_case_entries_name_the_subject(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *om = h_connect(env, H_OM);
    char id[SCHAKEL_CASE_ID_SIZE];
    schakel_client_t *members[] = {politie, om};
    const char *const partners[] = {"politie", "om"};
    case_with_members(riec, id, members, partners, 2);
    note(riec, id, "Betrokkene heeft schulden bij meerdere partijen", NULL, 0, NULL);
    schakel_case_view_t *view = NULL;
    must(politie, schakel_case_show(politie, id, &view, T), "show");
    schakel_case_view_free(&view);
    must(politie, schakel_case_leave(politie, id, NULL, NULL, NULL, T), "leave");

    char like[32];
    snprintf(like, sizeof like, "case_id=%s%%", id);
    sqlite3_stmt *stmt =
        trail_query(env,
                    "SELECT event, count(*), count(subject_tag),"
                    " count(DISTINCT subject_tag) = 1 AND min(subject_tag) = (SELECT"
                    " subject_tag FROM audit WHERE event = 'case.opened' AND detail LIKE ?1)"
                    " FROM audit WHERE detail LIKE ?1 GROUP BY event ORDER BY event",
                    like, NULL);
    static const char *const expected[] = {"case.invited",   "case.joined", "case.left",
                                           "case.note",      "case.opened", "case.viewed",
                                           "delivery.queued"};
    size_t n = 0;
    while (sqlite3_step(stmt) == SQLITE_ROW) {
        const char *event = (const char *)sqlite3_column_text(stmt, 0);
        int rows = sqlite3_column_int(stmt, 1), tagged = sqlite3_column_int(stmt, 2);
        if (n >= sizeof expected / sizeof expected[0] || strcmp(event, expected[n]) != 0)
            fail_msg("entry kind %zu of the case is %s", n, event);
        if (tagged != rows || sqlite3_column_int(stmt, 3) != 1)
            fail_msg("%d of %d %s entries of the case carry the subject's tag", tagged, rows,
                     event);
        n++;
    }
    assert_int_equal(n, sizeof expected / sizeof expected[0]);
    trail_done(stmt);
    schakel_close(&om);
    schakel_close(&politie);
    schakel_close(&riec);
    stop_clean(env);
}

/* Make the store refuse every new audit entry `event` (as a full disk
 * would), through a trigger the broker's statements meet at once; drop it
 * again with trail_trigger(env, NULL). */
static void trail_trigger(const h_env_t *env, const char *event)
{
    char sql[256];
    sqlite3 *db = NULL;
    if (event != NULL)
        snprintf(sql, sizeof sql,
                 "CREATE TRIGGER test_refuse BEFORE INSERT ON audit WHEN NEW.event = '%s'"
                 " BEGIN SELECT RAISE(ABORT, 'the audit path is full'); END",
                 event);
    else
        snprintf(sql, sizeof sql, "DROP TRIGGER test_refuse");
    if (sqlite3_open(env->store_path, &db) != SQLITE_OK)
        fail_msg("open the store: %s", sqlite3_errmsg(db));
    sqlite3_busy_timeout(db, H_TIMEOUT_MS);
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    sqlite3_close(db);
}

/* A case command whose audit entry cannot be written is not stored, and
 * its answer says to send it again with the same command id, which then
 * stores it once; a view that cannot be recorded is not shown. */
static void test_case_command_not_recorded_is_not_stored(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    char id[SCHAKEL_CASE_ID_SIZE];
    open_case(riec, &ADDRESS_CASE, id);
    uint8_t command_id[16];
    randombytes_buf(command_id, sizeof command_id);
    const schakel_case_options_t same = {.command_id = command_id};
    trail_trigger(env, "case.note");
    const schakel_error_t *e = must_refuse(
        riec, schakel_case_note(riec, id, "Eerste aantekening", NULL, 0, &same, NULL, T),
        "INTERNAL_ERROR", "a note whose entry cannot be written");
    if (strstr(e->text, "could not store this case command") == NULL ||
        strstr(e->text, "same command id") == NULL)
        fail_msg("the refused note says \"%s\"", e->text);
    trail_trigger(env, NULL);
    schakel_case_view_t *view = NULL;
    must(riec, schakel_case_show(riec, id, &view, T), "show");
    assert_int_equal(view->n_events, 1); /* opened only */
    schakel_case_view_free(&view);
    schakel_case_result_t r;
    must(riec, schakel_case_note(riec, id, "Eerste aantekening", NULL, 0, &same, &r, T),
         "the note again");
    assert_false(r.duplicate);
    must(riec, schakel_case_note(riec, id, "Eerste aantekening", NULL, 0, &same, &r, T),
         "the note a third time");
    assert_true(r.duplicate);
    trail_trigger(env, "case.viewed");
    e = must_refuse(riec, schakel_case_show(riec, id, &view, T), "INTERNAL_ERROR",
                    "an unrecorded view");
    if (strstr(e->text, "could not record this view") == NULL)
        fail_msg("the refused view says \"%s\"", e->text);
    assert_null(view);
    trail_trigger(env, NULL);
    must(riec, schakel_case_show(riec, id, &view, T), "show");
    assert_int_equal(view->n_events, 2); /* opened, one note */
    schakel_case_view_free(&view);
    schakel_close(&riec);
    stop_clean(env);
}

/* ------------------------------------------------------------------ unreadable rows */

static const char UNAUTHENTIC[] = "does not authenticate: store key wrong or row tampered";

/* The broker logged `event` with the store's reason `why`. */
static void expect_logged_unreadable(const h_env_t *env, long offset, const char *event,
                                     const char *why)
{
    char needle[64];
    snprintf(needle, sizeof needle, "event=%s ", event);
    if (h_await_log(env, offset, needle, 0) != 0 || h_await_log(env, offset, why, 0) != 0)
        fail_msg("the log does not say why the store could not be read (%s: %s)", event, why);
}

/* Entries of the trail: `event` by `actor` with `reason` (NULL: any). */
static int64_t entries_of(const h_env_t *env, const char *event, const char *actor,
                          const char *reason)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM audit WHERE event = '%s' AND actor = '%s'%s%s%s", event, actor,
             reason != NULL ? " AND reason = '" : "", reason != NULL ? reason : "",
             reason != NULL ? "'" : "");
    return h_store_int(env, sql, NULL);
}

/* The INTERNAL_ERROR refusals on the trail of `actor`'s commands with this
 * id. */
static int64_t command_refusals(const h_env_t *env, const char *actor, const uint8_t id[16])
{
    char hex[33], sql[256];
    sodium_bin2hex(hex, sizeof hex, id, 16);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM audit WHERE event = 'publish.refused' AND actor = '%s'"
             " AND message_id = '%s' AND reason = 'INTERNAL_ERROR'",
             actor, hex);
    return h_store_int(env, sql, NULL);
}

/* Whether `actor`'s command with this id is stored (0 or 1). */
static int64_t command_stored(const h_env_t *env, const char *actor, const uint8_t id[16])
{
    char hex[33], sql[256];
    sodium_bin2hex(hex, sizeof hex, id, 16);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM publishes WHERE sender = '%s' AND message_id = x'%s'", actor,
             hex);
    return h_store_int(env, sql, NULL);
}

static int64_t last_event_seq(const h_env_t *env, const char *id)
{
    return h_store_int(env, "SELECT last_event_seq FROM cases WHERE case_id = ?1", id);
}

static const char READ_FAILED_VIEW[] = "the broker could not read its store; ask again";
static const char READ_FAILED_COMMAND[] =
    "the broker could not read its store; nothing was stored, send the command again with the "
    "same command id";

/* The refusal of an id never used, as `c` gets it, with the id replaced
 * by "ID" (without_id). */
static void unknown_case_answer(schakel_client_t *c, char *out, size_t len)
{
    schakel_case_view_t *view = NULL;
    const schakel_error_t *e = must_refuse(c, schakel_case_show(c, UNKNOWN_CASE, &view, T),
                                           "NOT_FOUND", "a view of an unknown case");
    without_id(e->text, UNKNOWN_CASE, out, len);
}

/* The refusal must be `unknown` (unknown_case_answer) for case `id`. */
static void expect_unknown_answer(schakel_client_t *c, schakel_status_t st, const char *id,
                                  const char *unknown, const char *what)
{
    char seen[512];
    const schakel_error_t *e = must_refuse(c, st, "NOT_FOUND", what);
    without_id(e->text, id, seen, sizeof seen);
    if (strcmp(seen, unknown) != 0)
        fail_msg("%s: \"%s\", not the answer to an unknown id (\"%s\")", what, e->text, unknown);
}

/* Who cannot see a case is refused before its row is read: with its title
 * damaged, partners outside it (and one naming a partner it may not act
 * for) get exactly the answer of an id never used, and the broker reads
 * nothing that fails (no store.read_failed); the lead, an invited
 * partner and one acting for the lead read the row and get the store
 * error as ever; once the title is whole each of them is served. */
static void test_hidden_case_with_unreadable_title_is_not_found(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *gemeente = h_connect(env, H_GEMEENTE);
    schakel_client_t *vh = h_connect(env, H_VEILIGHEIDSHUIS);
    char id[SCHAKEL_CASE_ID_SIZE], where[64], unknown[512];
    open_case(riec, &ADDRESS_CASE, id);
    invite(riec, id, "politie");
    const schakel_case_options_t for_riec = {.on_behalf_of = "riec"};
    const schakel_case_options_t for_gemeente = {.on_behalf_of = "gemeente"};
    const schakel_case_options_t for_politie = {.on_behalf_of = "politie"};
    h_damage_t damage;
    snprintf(where, sizeof where, "case_id = '%s'", id);
    h_damage_row(env, &damage, "cases", "title", where);

    long offset = h_log_offset(env);
    unknown_case_answer(gemeente, unknown, sizeof unknown);
    schakel_case_view_t *view = NULL;
    expect_unknown_answer(gemeente, schakel_case_show(gemeente, id, &view, T), id, unknown,
                          "an outsider's view");
    assert_null(view);
    expect_unknown_answer(gemeente, schakel_case_note(gemeente, id, "x", NULL, 0, NULL, NULL, T),
                          id, unknown, "an outsider's note");
    expect_unknown_answer(gemeente, schakel_case_accept(gemeente, id, NULL, NULL, T), id, unknown,
                          "an outsider's accept");
    expect_unknown_answer(vh, schakel_case_show(vh, id, &view, T), id, unknown,
                          "the coordinator's view (its partner is no member)");
    expect_unknown_answer(vh, schakel_case_note(vh, id, "x", NULL, 0, NULL, NULL, T), id, unknown,
                          "the coordinator's note for itself");
    expect_unknown_answer(vh, schakel_case_note(vh, id, "x", NULL, 0, &for_gemeente, NULL, T), id,
                          unknown, "a note for a partner outside the case");
    /* politie is only invited, and nobody may act for it */
    expect_unknown_answer(vh, schakel_case_note(vh, id, "x", NULL, 0, &for_politie, NULL, T), id,
                          unknown, "a note for a partner it may not act for");
    expect_unknown_answer(gemeente,
                          schakel_case_note(gemeente, id, "x", NULL, 0, &for_riec, NULL, T), id,
                          unknown, "an outsider claiming the lead");
    if (h_log_count(env, offset, "event=store.read_failed ") != 0)
        fail_msg("an outsider's request read the damaged case row");

    /* those who may see it read the row, and fail as ever */
    const schakel_error_t *e = must_refuse(riec, schakel_case_show(riec, id, &view, T),
                                           "INTERNAL_ERROR", "the lead's view");
    assert_string_equal(e->text, READ_FAILED_VIEW);
    e = must_refuse(politie, schakel_case_show(politie, id, &view, T), "INTERNAL_ERROR",
                    "the invited partner's view");
    assert_string_equal(e->text, READ_FAILED_VIEW);
    e = must_refuse(politie, schakel_case_accept(politie, id, NULL, NULL, T), "INTERNAL_ERROR",
                    "the invited partner's accept");
    assert_string_equal(e->text, READ_FAILED_COMMAND);
    e = must_refuse(vh, schakel_case_note(vh, id, "x", NULL, 0, &for_riec, NULL, T),
                    "INTERNAL_ERROR", "a note for the lead");
    assert_string_equal(e->text, READ_FAILED_COMMAND);
    assert_int_equal(h_log_count(env, offset, "event=store.read_failed "), 4);
    assert_int_equal(last_event_seq(env, id), 2);

    h_damage_repair(env, &damage);
    must(politie, schakel_case_show(politie, id, &view, T), "the invited partner's view");
    assert_true(view->summary.invited);
    assert_int_equal(view->n_events, 0);
    schakel_case_view_free(&view);
    must(politie, schakel_case_accept(politie, id, NULL, NULL, T), "accept");
    must(vh, schakel_case_note(vh, id, "Procesafspraak", NULL, 0, &for_riec, NULL, T),
         "a note for the lead");
    note(politie, id, "Aantekening van de politie", NULL, 0, NULL);
    must(riec, schakel_case_show(riec, id, &view, T), "the lead's view");
    assert_string_equal(view->summary.title, ADDRESS_CASE.title);
    assert_int_equal(view->n_events, 5); /* opened, invited, joined, two notes */
    schakel_case_view_free(&view);
    expect_unknown_answer(gemeente, schakel_case_show(gemeente, id, &view, T), id, unknown,
                          "an outsider's view of the whole case");
    schakel_close(&vh);
    schakel_close(&gemeente);
    schakel_close(&politie);
    schakel_close(&riec);
    stop_clean(env);
}

/* A case a partner declined is not read for its list: a damaged title
 * there leaves the list of its other cases whole (and nothing unsealed of
 * a case it may no longer see). */
static void test_declined_case_with_unreadable_title_leaves_the_list(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    char declined[SCHAKEL_CASE_ID_SIZE], joined[SCHAKEL_CASE_ID_SIZE], where[64];
    schakel_client_t *members[] = {politie};
    const char *const partners[] = {"politie"};
    case_with_members(riec, joined, members, partners, 1);
    open_case(riec, &ADDRESS_CASE, declined);
    invite(riec, declined, "politie");
    must(politie, schakel_case_decline(politie, declined, NULL, NULL, T), "decline");
    h_damage_t damage;
    snprintf(where, sizeof where, "case_id = '%s'", declined);
    h_damage_row(env, &damage, "cases", "title", where);

    long offset = h_log_offset(env);
    schakel_case_list_t *list = NULL;
    must(politie, schakel_case_list(politie, &list, T), "the list of a partner that declined");
    assert_int_equal(list->n_cases, 1);
    assert_string_equal(list->cases[0].case_id, joined);
    schakel_case_list_free(&list);
    assert_int_equal(h_log_count(env, offset, "event=store.read_failed "), 0);
    /* the lead still reads it, and fails as ever */
    must_refuse(riec, schakel_case_list(riec, &list, T), "INTERNAL_ERROR", "the lead's list");
    assert_int_equal(h_log_count(env, offset, "event=store.read_failed "), 1);
    h_damage_repair(env, &damage);
    schakel_close(&politie);
    schakel_close(&riec);
    stop_clean(env);
}

/* An event that cannot be read is never shown in part: a view of the
 * timeline is refused INTERNAL_ERROR ("ask again"), is not on the trail,
 * and the log names the row; commands, which read the case and its first
 * event only, go on; once the row is whole the view shows every event. */
static void test_unreadable_event_refuses_the_view(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    char id[SCHAKEL_CASE_ID_SIZE], where[96];
    schakel_client_t *members[] = {politie};
    const char *const partners[] = {"politie"};
    static const int a_note[] = {SCHAKEL_CASE_EVENT_NOTE};
    case_with_members(riec, id, members, partners, 1);   /* 1 opened .. 3 joined */
    note(riec, id, "Eerste aantekening", NULL, 0, NULL); /* 4 */
    expect_events(politie, id, a_note, 1);
    h_damage_t damage;
    snprintf(where, sizeof where, "case_id = '%s' AND event_seq = 4", id);
    h_damage_row(env, &damage, "case_events", "body", where);

    long offset = h_log_offset(env);
    schakel_case_view_t *view = NULL;
    const schakel_error_t *e = must_refuse(politie, schakel_case_show(politie, id, &view, T),
                                           "INTERNAL_ERROR", "a view of an unreadable event");
    assert_string_equal(e->text, READ_FAILED_VIEW);
    assert_null(view);
    expect_logged_unreadable(env, offset, "store.read_failed", UNAUTHENTIC);

    note(politie, id, "Tweede aantekening", NULL, 0, NULL); /* 5 */
    expect_events(riec, id, a_note, 1);
    schakel_case_list_t *list = NULL;
    must(politie, schakel_case_list(politie, &list, T), "list");
    assert_int_equal(list->n_cases, 1);
    schakel_case_list_free(&list);

    h_damage_repair(env, &damage);
    must(politie, schakel_case_show(politie, id, &view, T), "show");
    assert_int_equal(view->n_events, 5);
    assert_string_equal(view->events[3].text, "Eerste aantekening");
    assert_string_equal(view->events[4].text, "Tweede aantekening");
    schakel_case_view_free(&view);
    schakel_close(&politie);
    schakel_close(&riec);
    assert_int_equal(h_broker_stop(env), 0);
    assert_int_equal(entries_of(env, "case.viewed", H_POLITIE, NULL), 1);
    assert_int_equal(entries_of(env, "request.refused", H_POLITIE, "INTERNAL_ERROR"), 1);
    h_done(env);
}

/* A case whose title cannot be read: the list that holds it, its view and
 * commands on it are refused INTERNAL_ERROR, nothing stored or recorded
 * but the refusals; the partner's other case is served as ever; once the
 * title is whole the refused command is carried out, once. */
static void test_unreadable_title_refuses_what_reads_it(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    char id[SCHAKEL_CASE_ID_SIZE], other[SCHAKEL_CASE_ID_SIZE], where[64];
    open_case(riec, &ADDRESS_CASE, id);
    schakel_case_open_t second = ADDRESS_CASE;
    second.title = "Tweede adres, zelfde patroon";
    open_case(riec, &second, other);
    h_damage_t damage;
    snprintf(where, sizeof where, "case_id = '%s'", id);
    h_damage_row(env, &damage, "cases", "title", where);

    long offset = h_log_offset(env);
    schakel_case_list_t *list = NULL;
    const schakel_error_t *e = must_refuse(riec, schakel_case_list(riec, &list, T),
                                           "INTERNAL_ERROR", "a list with an unreadable title");
    assert_string_equal(e->text, READ_FAILED_VIEW);
    assert_null(list);
    schakel_case_view_t *view = NULL;
    e = must_refuse(riec, schakel_case_show(riec, id, &view, T), "INTERNAL_ERROR",
                    "a view of a case whose title is unreadable");
    assert_string_equal(e->text, READ_FAILED_VIEW);
    assert_null(view);
    uint8_t command_id[16];
    randombytes_buf(command_id, sizeof command_id);
    const schakel_case_options_t same = {.command_id = command_id};
    e = must_refuse(riec, schakel_case_note(riec, id, "Aantekening", NULL, 0, &same, NULL, T),
                    "INTERNAL_ERROR", "a note on a case whose title is unreadable");
    assert_string_equal(e->text, READ_FAILED_COMMAND);
    expect_logged_unreadable(env, offset, "store.read_failed", UNAUTHENTIC);
    assert_int_equal(last_event_seq(env, id), 1);
    assert_int_equal(command_stored(env, H_RIEC, command_id), 0);

    must(riec, schakel_case_show(riec, other, &view, T), "show the other case");
    assert_string_equal(view->summary.title, second.title);
    schakel_case_view_free(&view);
    note(riec, other, "Aantekening bij het tweede adres", NULL, 0, NULL);

    h_damage_repair(env, &damage);
    must(riec, schakel_case_list(riec, &list, T), "list");
    assert_int_equal(list->n_cases, 2);
    assert_string_equal(list->cases[0].title, ADDRESS_CASE.title);
    schakel_case_list_free(&list);
    schakel_case_result_t r;
    must(riec, schakel_case_note(riec, id, "Aantekening", NULL, 0, &same, &r, T), "the note again");
    assert_false(r.duplicate);
    assert_int_equal(last_event_seq(env, id), 2);
    schakel_close(&riec);
    assert_int_equal(h_broker_stop(env), 0);
    assert_int_equal(entries_of(env, "case.listed", H_RIEC, NULL), 1);
    assert_int_equal(entries_of(env, "case.viewed", H_RIEC, NULL), 1);
    assert_int_equal(entries_of(env, "request.refused", H_RIEC, "INTERNAL_ERROR"), 2);
    assert_int_equal(command_refusals(env, H_RIEC, command_id), 1);
    assert_int_equal(entries_of(env, "case.note", H_RIEC, NULL), 2);
    h_done(env);
}

/* A command whose case's first event (the subject of every entry) cannot
 * be read, or whose id's earlier answer cannot be read, is refused
 * INTERNAL_ERROR with nothing stored; sent again with the same command id
 * once the rows are whole, it is carried out once, then answered as a
 * duplicate. */
static void test_unreadable_rows_refuse_the_command(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    char id[SCHAKEL_CASE_ID_SIZE], where[128], hex[33];
    schakel_client_t *members[] = {politie};
    const char *const partners[] = {"politie"};
    case_with_members(riec, id, members, partners, 1); /* 1 opened .. 3 joined */
    uint8_t command_id[16];
    randombytes_buf(command_id, sizeof command_id);
    const schakel_case_options_t same = {.command_id = command_id};
    h_damage_t damage;
    snprintf(where, sizeof where, "case_id = '%s' AND event_seq = 1", id);
    h_damage_row(env, &damage, "case_events", "body", where);

    long offset = h_log_offset(env);
    const schakel_error_t *e =
        must_refuse(riec, schakel_case_note(riec, id, "Aantekening", NULL, 0, &same, NULL, T),
                    "INTERNAL_ERROR", "a note on a case whose opening is unreadable");
    assert_string_equal(e->text, READ_FAILED_COMMAND);
    expect_logged_unreadable(env, offset, "store.read_failed", UNAUTHENTIC);
    assert_int_equal(last_event_seq(env, id), 3);
    assert_int_equal(command_stored(env, H_RIEC, command_id), 0);
    expect_quiet(politie, "politie");
    h_damage_repair(env, &damage);
    schakel_case_result_t r;
    must(riec, schakel_case_note(riec, id, "Aantekening", NULL, 0, &same, &r, T), "the note again");
    assert_false(r.duplicate);
    schakel_delivery_t *d = expect_event(politie, id, SCHAKEL_CASE_EVENT_NOTE);
    assert_int_equal(d->case_event->event_seq, 4);
    schakel_delivery_free(&d);

    /* the stored answer to the id, damaged: a repeat cannot be told */
    sodium_bin2hex(hex, sizeof hex, command_id, sizeof command_id);
    snprintf(where, sizeof where, "sender = '" H_RIEC "' AND message_id = x'%s'", hex);
    h_damage_row(env, &damage, "publishes", "content_hash", where);
    offset = h_log_offset(env);
    e = must_refuse(riec, schakel_case_note(riec, id, "Aantekening", NULL, 0, &same, NULL, T),
                    "INTERNAL_ERROR", "a repeat whose first answer is unreadable");
    assert_string_equal(e->text, "the broker could not read its store; send the command again");
    expect_logged_unreadable(env, offset, "store.read_failed", "stored content hash is damaged");
    assert_int_equal(last_event_seq(env, id), 4);
    expect_quiet(politie, "politie");
    h_damage_repair(env, &damage);
    must(riec, schakel_case_note(riec, id, "Aantekening", NULL, 0, &same, &r, T),
         "the note a third time");
    assert_true(r.duplicate);
    assert_int_equal(last_event_seq(env, id), 4);
    expect_quiet(politie, "politie");
    schakel_close(&politie);
    schakel_close(&riec);
    assert_int_equal(h_broker_stop(env), 0);
    assert_int_equal(command_refusals(env, H_RIEC, command_id), 2);
    assert_int_equal(entries_of(env, "case.note", H_RIEC, NULL), 1);
    h_done(env);
}

/* A join whose history cannot be read all through fails after much of it
 * was written in the turn (the command, the membership, the joined event,
 * the first deliveries and their entries): the turn is rolled back whole,
 * the joiner is told to send it again, and nobody receives anything; the
 * case goes on at the same event seq, and the join sent again once the
 * row is whole brings the whole history in order. */
static void test_unreadable_history_rolls_back_the_join(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *om = h_connect(env, H_OM);
    char id[SCHAKEL_CASE_ID_SIZE], where[96];
    schakel_client_t *members[] = {politie};
    const char *const partners[] = {"politie"};
    static const int a_note[] = {SCHAKEL_CASE_EVENT_NOTE};
    static const int invited[] = {SCHAKEL_CASE_EVENT_INVITED};
    case_with_members(riec, id, members, partners, 1); /* 1 opened .. 3 joined */
    invite(riec, id, "om");                            /* 4 */
    expect_events(riec, id, invited, 1);
    expect_events(politie, id, invited, 1);
    expect_events(om, id, invited, 1);
    note(riec, id, "Eerste aantekening", NULL, 0, NULL); /* 5 */
    expect_events(riec, id, a_note, 1);
    expect_events(politie, id, a_note, 1);
    /* the acks committed: none of them is in the turn that fails */
    expect_quiet(riec, "riec");
    expect_quiet(politie, "politie");
    expect_quiet(om, "om");
    h_damage_t damage;
    snprintf(where, sizeof where, "case_id = '%s' AND event_seq = 5", id);
    h_damage_row(env, &damage, "case_events", "body", where);

    uint8_t command_id[16];
    randombytes_buf(command_id, sizeof command_id);
    const schakel_case_options_t same = {.command_id = command_id};
    long offset = h_log_offset(env);
    const schakel_error_t *e = must_refuse(om, schakel_case_accept(om, id, &same, NULL, T),
                                           "INTERNAL_ERROR", "a join with an unreadable history");
    assert_string_equal(e->text, "the broker could not store this case command; nothing was "
                                 "stored, send it again with the same command id");
    expect_logged_unreadable(env, offset, "store.write_failed", UNAUTHENTIC);
    assert_int_equal(h_store_int(env,
                                 "SELECT count(*) FROM case_members WHERE case_id = ?1"
                                 " AND partner = 'om' AND state = 'i'",
                                 id),
                     1);
    assert_int_equal(last_event_seq(env, id), 5);
    assert_int_equal(h_store_int(env, "SELECT count(*) FROM mailbox WHERE recipient = ?1", H_OM),
                     0);
    assert_int_equal(command_stored(env, H_OM, command_id), 0);
    assert_int_equal(
        h_store_int(env, "SELECT count(*) FROM audit WHERE event = 'case.joined'", NULL),
        1); /* politie's */
    expect_quiet(riec, "riec");
    expect_quiet(politie, "politie");
    expect_quiet(om, "om");

    note(politie, id, "Tweede aantekening", NULL, 0, NULL); /* 6 */
    expect_events(riec, id, a_note, 1);
    assert_int_equal(last_event_seq(env, id), 6);
    h_damage_repair(env, &damage);
    schakel_case_result_t r;
    must(om, schakel_case_accept(om, id, &same, &r, T), "the join again");
    assert_false(r.duplicate);
    static const int history[] = {SCHAKEL_CASE_EVENT_OPENED, SCHAKEL_CASE_EVENT_INVITED,
                                  SCHAKEL_CASE_EVENT_JOINED, SCHAKEL_CASE_EVENT_NOTE,
                                  SCHAKEL_CASE_EVENT_NOTE,   SCHAKEL_CASE_EVENT_JOINED};
    static const uint64_t seqs[] = {1, 2, 3, 5, 6, 7};
    for (size_t i = 0; i < sizeof history / sizeof history[0]; i++) {
        schakel_delivery_t *d = expect_event(om, id, history[i]);
        assert_int_equal(d->case_event->event_seq, seqs[i]);
        schakel_delivery_free(&d);
    }
    expect_quiet(om, "om");
    schakel_close(&om);
    schakel_close(&politie);
    schakel_close(&riec);
    assert_int_equal(h_broker_stop(env), 0);
    assert_int_equal(command_refusals(env, H_OM, command_id), 1);
    assert_int_equal(entries_of(env, "case.joined", H_OM, NULL), 1);
    h_cli_result_t res;
    const char *const verify[] = {"audit",        "verify",        "--store", env->store_path,
                                  "--broker-key", env->broker_pub, NULL};
    h_run_ctl_argv(env, NULL, NULL, verify, &res);
    if (res.status != 0)
        fail_msg("audit verify: exit %d\n%s%s", res.status, res.out, res.err);
    h_cli_result_free(&res);
    h_done(env);
}

/* A close sets the retention of the case's waiting deliveries, which
 * their seals bind, so it seals each again: the member receives them
 * afterwards as they were, with the new retention. One whose envelope was
 * altered in the store does not hold up the close: it takes the new
 * retention and the log names it (store.read_failed with the case and the
 * count); the push then sets it aside, with that retention, and the
 * member receives the close after it. The documented put-back from a
 * backup taken before the close does not bring it back. */
static void test_close_reseals_waiting_deliveries(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    char id[SCHAKEL_CASE_ID_SIZE], sql[160];
    schakel_client_t *members[] = {politie};
    const char *const partners[] = {"politie"};
    static const int a_note[] = {SCHAKEL_CASE_EVENT_NOTE};
    case_with_members(riec, id, members, partners, 1); /* 1 opened .. 3 joined */
    expect_quiet(politie, "politie");
    schakel_close(&politie);                             /* what follows waits in its mailbox */
    note(riec, id, "Eerste aantekening", NULL, 0, NULL); /* 4 */
    note(riec, id, "Tweede aantekening", NULL, 0, NULL); /* 5 */
    expect_events(riec, id, a_note, 1);
    expect_events(riec, id, a_note, 1);
    h_waiting_t waiting[2]; /* the two notes, a row each */
    assert_int_equal(h_mailbox_waiting(env, H_POLITIE, waiting, 2), 2);
    int64_t altered = waiting[1].seq, altered_item = waiting[1].item_seq;
    assert_int_equal(waiting[1].first_seq, altered);
    char backup[PATH_MAX], vacuum[PATH_MAX + 32];
    snprintf(backup, sizeof backup, "%s/before-close.db", env->dir);
    snprintf(vacuum, sizeof vacuum, "VACUUM INTO '%s'", backup); /* the case still open */
    h_store_exec(env, vacuum);
    h_mailbox_rule_set(env, altered, H_RULE_PURPOSE, "Marketing");

    long offset = h_log_offset(env);
    must(riec, schakel_case_close(riec, id, "Afgerond", NULL, NULL, T), "close");
    char named[96], count[64];
    snprintf(named, sizeof named, "case=%s deliveries=1 ", id);
    snprintf(count, sizeof count, "body of mailbox row %lld does not authenticate",
             (long long)altered); /* the row of the one delivery */
    if (h_await_log(env, offset, "event=store.read_failed ", H_TIMEOUT_MS) != 0 ||
        h_await_log(env, offset, named, 0) != 0 || h_await_log(env, offset, count, 0) != 0)
        fail_msg("the close does not log the delivery it could not seal again");

    /* the first note, sealed again: delivered with the close's retention
     * (30 days for this type); the altered one is set aside; the close
     * follows */
    offset = h_log_offset(env);
    politie = h_connect(env, H_POLITIE);
    schakel_delivery_t *d = expect_event(politie, id, SCHAKEL_CASE_EVENT_NOTE);
    assert_string_equal(d->case_event->text, "Eerste aantekening");
    int64_t now = (int64_t)time(NULL);
    assert_true(d->expires_at > now + 29 * 86400 && d->expires_at <= now + 30 * 86400);
    schakel_delivery_free(&d);
    d = expect_event(politie, id, SCHAKEL_CASE_EVENT_CLOSED);
    schakel_delivery_free(&d);
    if (h_await_log(env, offset, "event=delivery.set_aside ", 0) != 0 ||
        h_await_log(env, offset, count, 0) != 0)
        fail_msg("the push did not set the altered delivery aside");
    snprintf(sql, sizeof sql,
             "SELECT expires_at FROM mailbox_set_aside WHERE first_seq = %lld AND n = 1",
             (long long)altered);
    assert_true(h_store_int(env, sql, NULL) <= now + 30 * 86400); /* the close's retention */
    assert_int_equal(h_backlog(politie), 0);
    schakel_close(&politie);
    schakel_close(&riec);

    /* Put back from the backup taken while the case was open, its seal
     * there binding the open case's retention (never, in practice): the
     * documented put-back refuses it, since put back it would authenticate
     * and go out telling politie to keep it indefinitely. */
    assert_int_equal(h_broker_stop(env), 0);
    assert_int_equal(h_put_back(env, backup, altered, altered_item), 0);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM mailbox_set_aside WHERE first_seq = %lld",
             (long long)altered);
    assert_int_equal(h_store_int(env, sql, NULL), 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM mailbox WHERE first_seq = %lld",
             (long long)altered);
    assert_int_equal(h_store_int(env, sql, NULL), 0);
    assert_int_equal(h_mailbox_holds(env, altered), 0);
    h_done(env);
}

/* ------------------------------------------------------------------ retention */

/* Contents are kept for the case type's retention after the close, then
 * expire: the members' deliveries (the broker logs delivery.expired), the
 * events, the case itself. */
static void test_retention_after_close(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *gemeente = h_connect(env, H_GEMEENTE);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    static const schakel_case_open_t street = {
        .case_type = "overlast-kort", .area = "WK093501", .title = "Overlast Boschstraat"};
    char id[SCHAKEL_CASE_ID_SIZE];
    open_case(gemeente, &street, id);
    invite(gemeente, id, "politie");
    must(politie, schakel_case_accept(politie, id, NULL, NULL, T), "accept");
    note(gemeente, id, "Geluidsoverlast na 23 uur, drie meldingen", NULL, 0, NULL);
    uint64_t waiting = h_backlog(politie); /* invited, opened, joined, note */
    assert_int_equal(waiting, 4);

    long offset = h_log_offset(env);
    must(gemeente, schakel_case_close(gemeente, id, "Afspraken gemaakt", NULL, NULL, T), "close");
    assert_int_equal(h_backlog(politie), 5);
    char needle[128];
    snprintf(needle, sizeof needle, "event=delivery.expired recipient=%s", H_POLITIE);
    if (h_await_log(env, offset, needle, H_TIMEOUT_MS) != 0)
        fail_msg("no delivery to %s expired after the close", H_POLITIE);
    assert_int_equal(h_backlog(politie), 0);
    assert_int_equal(h_backlog(gemeente), 0);
    /* the case is gone with its contents */
    schakel_case_view_t *view = NULL;
    must_refuse(gemeente, schakel_case_show(gemeente, id, &view, T), "NOT_FOUND",
                "show after retention");
    schakel_case_list_t *list = NULL;
    must(gemeente, schakel_case_list(gemeente, &list, T), "list");
    assert_int_equal(list->n_cases, 0);
    schakel_case_list_free(&list);
    /* nor can the lead touch it any more: past its retention it is gone */
    must_refuse(gemeente, schakel_case_note(gemeente, id, "nog iets", NULL, 0, NULL, NULL, T),
                "NOT_FOUND", "note after retention");
    must_refuse(gemeente, schakel_case_reopen(gemeente, id, "toch weer", NULL, NULL, T),
                "NOT_FOUND", "reopen after retention");
    schakel_close(&politie);
    schakel_close(&gemeente);
    stop_clean(env);
}

/* ------------------------------------------------------------------ linking */

static const schakel_signal_t FARM_SIGNAL = {
    .kind = "hennepkwekerij",
    .theme = "ondermijning",
    .area = "BU09350101",
    .postcode = "6211AB",
    .house_number = 12,
    .subject = "PSN-7f3a9c2e41",
    .grounds = "Stroomverbruik viermaal het gemiddelde; sterke geur",
    .severity = SCHAKEL_SEVERITY_HIGH,
    .summary = "Vermoedelijke hennepkwekerij in huurwoning",
    .source_ref = "WM-2026-0311",
};

/* Publish n fire-safety signals for woco-jekerdal alone; their item seqs
 * go to seqs. */
static void publish_for_jekerdal(schakel_client_t *brandweer, uint64_t *seqs, size_t n)
{
    static const char *const to[] = {"woco-jekerdal"};
    schakel_signal_t s = {
        .kind = "brandonveilige-situatie",
        .theme = "brandveiligheid",
        .area = "BU09350102",
        .postcode = "6211AC",
        .house_number = 3,
        .severity = SCHAKEL_SEVERITY_MEDIUM,
        .summary = "Vluchtweg geblokkeerd",
        .recipients = to,
        .n_recipients = 1,
    };
    for (size_t i = 0; i < n; i++) {
        uint32_t recipients = 0;
        seqs[i] = h_publish_ok(brandweer, &s, NULL, NULL, &recipients, NULL);
        assert_int_equal(recipients, 1);
    }
}

/* The signal fields of a linked signal, as enum h_field bits. */
static unsigned linked_fields(const schakel_linked_signal_t *s)
{
    return (s->area ? H_F_AREA : 0) | (s->postcode ? H_F_ADDRESS : 0) |
           (s->subject ? H_F_SUBJECT : 0) | (s->grounds ? H_F_GROUNDS : 0) |
           (s->severity ? H_F_SEVERITY : 0) | (s->summary ? H_F_SUMMARY : 0) |
           (s->source_ref ? H_F_SOURCE_REF : 0) | (s->case_ref ? H_F_CASE_REF : 0) |
           (s->observed_at ? H_F_OBSERVED_AT : 0);
}

/* The next event must be the link of a signal from `sender` that this
 * member sees with exactly `fields`. */
static void expect_linked(schakel_client_t *c, const char *who, const char *id, const char *sender,
                          unsigned fields)
{
    schakel_delivery_t *d = expect_event(c, id, SCHAKEL_CASE_EVENT_SIGNAL_LINKED);
    const schakel_linked_signal_t *s = d->case_event->signal;
    if (s == NULL)
        fail_msg("%s got the link without the signal", who);
    assert_string_equal(s->sender, sender);
    assert_non_null(s->kind);
    assert_non_null(s->theme);
    unsigned got = linked_fields(s);
    if (got != fields) {
        char g[160], w[160];
        h_field_names(got, g, sizeof g);
        h_field_names(fields, w, sizeof w);
        fail_msg("%s saw the linked signal with %s, expected %s", who, g, w);
    }
    if (s->subject)
        assert_string_equal(s->subject, FARM_SIGNAL.subject);
    schakel_delivery_free(&d);
}

/* A member links a signal it received: each member gets it with its own
 * rule's signal fields. A signal the partner did not receive, an unknown
 * one and a case command are not signals it can link. The signals sit
 * among many others on the audit trail, where the broker looks for the
 * delivery. */
static void test_link_received_signal(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *woco = h_connect(env, H_WOCO_MAASOEVER);
    schakel_client_t *jekerdal = h_connect(env, H_WOCO_JEKERDAL);
    schakel_client_t *brandweer = h_connect(env, H_BRANDWEER);
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *gemeente = h_connect(env, H_GEMEENTE);
    uint64_t fire[60];
    publish_for_jekerdal(brandweer, fire, 30);
    uint32_t recipients = 0;
    uint64_t item_seq = h_publish_ok(woco, &FARM_SIGNAL, NULL, NULL, &recipients, NULL);
    assert_int_equal(recipients, 4); /* politie, riec's two principals, gemeente */
    publish_for_jekerdal(brandweer, fire + 30, 30);
    schakel_client_t *receivers[] = {riec, politie, gemeente};
    for (size_t i = 0; i < 3; i++) {
        schakel_delivery_t *d = h_receive(receivers[i]);
        assert_false(d->is_case_event);
        assert_int_equal(d->item_seq, item_seq);
        must(receivers[i], schakel_ack(receivers[i], d->seq), "ack");
        schakel_delivery_free(&d);
    }
    for (size_t i = 0; i < 60; i++) {
        schakel_delivery_t *d = h_receive(jekerdal);
        assert_int_equal(d->item_seq, fire[i]);
        must(jekerdal, schakel_ack(jekerdal, d->seq), "ack");
        schakel_delivery_free(&d);
    }
    char id[SCHAKEL_CASE_ID_SIZE];
    schakel_client_t *members[] = {politie, gemeente, woco, jekerdal};
    const char *const partners[] = {"politie", "gemeente", "woco-maasoever", "woco-jekerdal"};
    case_with_members(riec, id, members, partners, 4);

    schakel_case_result_t r;
    must(riec, schakel_case_link(riec, id, item_seq, NULL, &r, T), "link");
    assert_int_equal(r.recipients, 6);
    /* Never more than the linking partner itself may see: riec's own signal
     * rule leaves out source_ref, so nobody gets it through the case, not
     * even the lead (whose case rule would show every field). */
    const unsigned to_riec =
        H_F_AREA | H_F_ADDRESS | H_F_SUBJECT | H_F_GROUNDS | H_F_SEVERITY | H_F_SUMMARY;
    expect_linked(politie, "politie", id, H_WOCO_MAASOEVER,
                  H_F_AREA | H_F_ADDRESS | H_F_SUBJECT | H_F_GROUNDS | H_F_SUMMARY);
    expect_linked(gemeente, "gemeente", id, H_WOCO_MAASOEVER, H_F_AREA | H_F_ADDRESS | H_F_SUMMARY);
    expect_linked(woco, "woco-maasoever", id, H_WOCO_MAASOEVER, H_F_AREA | H_F_ADDRESS);
    expect_linked(jekerdal, "woco-jekerdal", id, H_WOCO_MAASOEVER, H_F_AREA | H_F_ADDRESS);
    expect_linked(riec, "riec", id, H_WOCO_MAASOEVER, to_riec);

    /* woco-jekerdal links one of the fire-safety signals it received */
    must(jekerdal, schakel_case_link(jekerdal, id, fire[44], NULL, NULL, T), "link by jekerdal");
    expect_linked(gemeente, "gemeente", id, H_BRANDWEER, H_F_AREA | H_F_ADDRESS | H_F_SUMMARY);
    expect_linked(riec, "riec", id, H_BRANDWEER,
                  H_F_AREA | H_F_ADDRESS | H_F_SEVERITY | H_F_SUMMARY);

    /* signals gemeente never received: for jekerdal alone, or politie's to om */
    schakel_signal_t to_om = FARM_SIGNAL;
    to_om.kind = "witwassen";
    uint64_t om_only = h_publish_ok(politie, &to_om, NULL, NULL, &recipients, NULL);
    assert_int_equal(recipients, 1);
    const uint64_t not_received[] = {om_only, fire[0], fire[29], fire[30], fire[59]};
    for (size_t i = 0; i < sizeof not_received / sizeof not_received[0]; i++) {
        const schakel_error_t *e =
            must_refuse(gemeente, schakel_case_link(gemeente, id, not_received[i], NULL, NULL, T),
                        "NOT_FOUND", "link a signal it did not receive");
        char want[128];
        snprintf(want, sizeof want, "no signal with item seq %llu that %s received",
                 (unsigned long long)not_received[i], H_GEMEENTE);
        assert_string_equal(e->text, want);
    }
    must_refuse(riec, schakel_case_link(riec, id, 999999, NULL, NULL, T), "NOT_FOUND",
                "link an unknown item");
    must_refuse(riec, schakel_case_link(riec, id, r.seq, NULL, NULL, T), "NOT_FOUND",
                "link a case command");
    must_refuse(brandweer, schakel_case_link(brandweer, id, item_seq, NULL, NULL, T), "NOT_FOUND",
                "link by a non-member");
    schakel_close(&brandweer);
    schakel_close(&gemeente);
    schakel_close(&politie);
    schakel_close(&riec);
    schakel_close(&jekerdal);
    schakel_close(&woco);
    stop_clean(env);
}

/* The policy with riec's signal rule ending in `tail` instead of its
 * retention line, reloaded. */
static void reload_riec_rule(h_env_t *env, const char *tail)
{
    static const char retention[] = "    retention: 730d\n";
    const char *at = strstr(h_default_rules, retention);
    assert_non_null(at);
    h_env_write_policy(env, "%s%.*s%s%s%s", h_policy_header, (int)(at - h_default_rules),
                       h_default_rules, tail, at + strlen(retention), h_case_types);
    assert_int_equal(h_broker_reload(env), 1);
}

/* A principal links only what it was given itself, and still may see: not
 * what another principal of its partner got (a rule's to_roles), and not
 * what the rule no longer lets reach its role. riec's caseworker and its
 * system both receive signal A; then riec's rule reaches only systems, and
 * signal B goes to riec's system alone. */
static void test_link_needs_the_principals_own_delivery(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *janssen = h_connect(env, H_RIEC_CASEWORKER);
    schakel_client_t *woco = h_connect(env, H_WOCO_MAASOEVER);
    uint32_t recipients = 0;
    uint64_t a = h_publish_ok(woco, &FARM_SIGNAL, NULL, NULL, &recipients, NULL);
    assert_int_equal(recipients, 4); /* politie, riec's two principals, gemeente */
    reload_riec_rule(env, "    retention: 730d\n    to_roles: [system]\n");
    uint64_t b = h_publish_ok(woco, &FARM_SIGNAL, NULL, NULL, &recipients, NULL);
    assert_int_equal(recipients, 3); /* not riec's caseworker */
    char id[SCHAKEL_CASE_ID_SIZE];
    open_case(riec, &ADDRESS_CASE, id);
    char want[128];
    const uint64_t refused[] = {a, b};
    for (size_t i = 0; i < 2; i++) {
        const schakel_error_t *e =
            must_refuse(janssen, schakel_case_link(janssen, id, refused[i], NULL, NULL, T),
                        "NOT_FOUND", "link by a role the rule does not reach");
        snprintf(want, sizeof want, "no signal with item seq %llu that %s received",
                 (unsigned long long)refused[i], H_RIEC_CASEWORKER);
        assert_string_equal(e->text, want);
    }
    must(riec, schakel_case_link(riec, id, b, NULL, NULL, T), "link by riec's system");
    /* the rule reaches caseworkers again: A, which the caseworker got, can
     * be linked; B, which it never got, still cannot */
    reload_riec_rule(env, "    retention: 730d\n");
    must_refuse(janssen, schakel_case_link(janssen, id, b, NULL, NULL, T), "NOT_FOUND",
                "link of a signal another principal of the partner received");
    must(janssen, schakel_case_link(janssen, id, a, NULL, NULL, T), "link by the caseworker");
    schakel_close(&woco);
    schakel_close(&janssen);
    schakel_close(&riec);
    stop_clean(env);
}

/* A signal whose retention for the principal ended cannot be linked, even
 * while another partner's longer retention keeps the item: riec must not
 * keep it beyond its rule's retention, so neither can its case. */
static void test_link_after_own_retention_is_refused(void **state)
{
    h_env_t *env = *state;
    reload_riec_rule(env, "    retention: 2s\n");
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *woco = h_connect(env, H_WOCO_MAASOEVER);
    long offset = h_log_offset(env);
    uint64_t item = h_publish_ok(woco, &FARM_SIGNAL, NULL, NULL, NULL, NULL);
    if (h_await_log(env, offset, "event=delivery.expired recipient=" H_RIEC, H_TIMEOUT_MS) != 0)
        fail_msg("riec's delivery did not expire");
    assert_true(h_backlog_of(env, H_POLITIE) >= 1); /* the item is still kept for politie */
    char id[SCHAKEL_CASE_ID_SIZE];
    open_case(riec, &ADDRESS_CASE, id);
    must_refuse(riec, schakel_case_link(riec, id, item, NULL, NULL, T), "NOT_FOUND",
                "link after the principal's retention ended");
    schakel_close(&woco);
    schakel_close(&riec);
    stop_clean(env);
}

/* riec's signal rule as written, and with source_ref among its fields:
 * a new version of the rule. */
static const char RIEC_FIELDS[] =
    "    fields: [area, address, subject, grounds, severity, observed_at, summary]\n"
    "    retention: 730d\n";
static const char RIEC_FIELDS_WIDER[] =
    "    fields: [area, address, subject, grounds, severity, observed_at, summary, source_ref]\n"
    "    retention: 730d\n";

/* The policy with riec's signal rule given `fields` (RIEC_FIELDS or
 * RIEC_FIELDS_WIDER), reloaded. */
static void reload_riec_fields(h_env_t *env, const char *fields)
{
    const char *at = strstr(h_default_rules, RIEC_FIELDS);
    assert_non_null(at);
    h_env_write_policy(env, "%s%.*s%s%s%s", h_policy_header, (int)(at - h_default_rules),
                       h_default_rules, fields, at + strlen(RIEC_FIELDS), h_case_types);
    assert_int_equal(h_broker_reload(env), 1);
}

/* A link passes on no more than the linker was given: riec received the
 * farm signal without source_ref and acked it; a reload then adds
 * source_ref to riec's rule. The link of that signal carries what riec's
 * own delivery carried (within what the rule in force gives), so nobody
 * gets source_ref through the case, not even the lead, whose case rule
 * shows every field. A signal riec receives under the new version carries
 * it, and so does its link (sent right after its ack: the two frames
 * usually meet in one broker turn, before the ack's entry is written at
 * the turn's end). */
static void test_link_gives_the_linkers_own_fields(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *woco = h_connect(env, H_WOCO_MAASOEVER);
    uint64_t before = h_publish_ok(woco, &FARM_SIGNAL, NULL, NULL, NULL, NULL);
    schakel_delivery_t *d = h_receive(riec);
    assert_int_equal(d->item_seq, before);
    assert_null(d->source_ref);
    must(riec, schakel_ack(riec, d->seq), "ack");
    schakel_delivery_free(&d);
    d = h_receive(politie);
    must(politie, schakel_ack(politie, d->seq), "ack");
    schakel_delivery_free(&d);
    char id[SCHAKEL_CASE_ID_SIZE];
    schakel_client_t *members[] = {politie};
    const char *const partners[] = {"politie"};
    case_with_members(riec, id, members, partners, 1);

    reload_riec_fields(env, RIEC_FIELDS_WIDER);
    must(riec, schakel_case_link(riec, id, before, NULL, NULL, T), "link");
    const unsigned to_riec =
        H_F_AREA | H_F_ADDRESS | H_F_SUBJECT | H_F_GROUNDS | H_F_SEVERITY | H_F_SUMMARY;
    expect_linked(riec, "riec", id, H_WOCO_MAASOEVER, to_riec);
    expect_linked(politie, "politie", id, H_WOCO_MAASOEVER,
                  H_F_AREA | H_F_ADDRESS | H_F_SUBJECT | H_F_GROUNDS | H_F_SUMMARY);

    /* given under the new version, with source_ref: linked with it */
    uint64_t after = h_publish_ok(woco, &FARM_SIGNAL, NULL, NULL, NULL, NULL);
    d = h_receive(riec);
    assert_int_equal(d->item_seq, after);
    assert_non_null(d->source_ref);
    must(riec, schakel_ack(riec, d->seq), "ack");
    schakel_delivery_free(&d);
    must(riec, schakel_case_link(riec, id, after, NULL, NULL, T), "link of the new one");
    expect_linked(riec, "riec", id, H_WOCO_MAASOEVER, to_riec | H_F_SOURCE_REF);
    d = h_receive(politie); /* politie's delivery of the new signal itself */
    assert_false(d->is_case_event);
    must(politie, schakel_ack(politie, d->seq), "ack");
    schakel_delivery_free(&d);
    expect_linked(politie, "politie", id, H_WOCO_MAASOEVER,
                  H_F_AREA | H_F_ADDRESS | H_F_SUBJECT | H_F_GROUNDS | H_F_SUMMARY);
    schakel_close(&woco);
    schakel_close(&politie);
    schakel_close(&riec);
    stop_clean(env);
}

/* A delivery the policy withholds gives nothing to link: riec's system
 * and caseworker wait for the farm signal when a reload changes riec's
 * rule (a new version: what the old one decided is withheld). The
 * system's delivery is revoked at its push (delivery.revoked); the
 * caseworker's still waits, not re-decided yet. Neither can be linked,
 * with the answer about a signal never received. */
static void test_link_of_a_withheld_delivery_is_refused(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *janssen = h_connect(env, H_RIEC_CASEWORKER);
    schakel_client_t *woco = h_connect(env, H_WOCO_MAASOEVER);
    char id[SCHAKEL_CASE_ID_SIZE];
    open_case(riec, &ADDRESS_CASE, id);
    schakel_delivery_t *d = expect_event(riec, id, SCHAKEL_CASE_EVENT_OPENED);
    schakel_delivery_free(&d);
    uint32_t recipients = 0;
    uint64_t item = h_publish_ok(woco, &FARM_SIGNAL, NULL, NULL, &recipients, NULL);
    assert_int_equal(recipients, 4); /* politie, riec's two principals, gemeente */
    /* held by riec's client, not acked: it waits */
    d = h_receive(riec);
    assert_int_equal(d->item_seq, item);
    schakel_delivery_free(&d);

    long offset = h_log_offset(env);
    reload_riec_fields(env, RIEC_FIELDS_WIDER);
    /* pushed again (a new connection) under the new version: revoked */
    schakel_close(&riec);
    riec = h_connect(env, H_RIEC);
    must(riec, schakel_subscribe(riec, 0), "subscribe");
    if (h_await_log(env, offset, "event=delivery.revoked recipient=" H_RIEC, H_TIMEOUT_MS) != 0)
        fail_msg("riec's waiting delivery was not revoked under the new rule");
    assert_int_equal(schakel_receive(riec, &d, 300), SCHAKEL_ERR_TIMEOUT);

    schakel_client_t *linkers[] = {riec, janssen};
    const char *const names[] = {H_RIEC, H_RIEC_CASEWORKER};
    for (size_t i = 0; i < 2; i++) {
        const schakel_error_t *e =
            must_refuse(linkers[i], schakel_case_link(linkers[i], id, item, NULL, NULL, T),
                        "NOT_FOUND", "link of a withheld delivery");
        char want[128];
        snprintf(want, sizeof want, "no signal with item seq %llu that %s received",
                 (unsigned long long)item, names[i]);
        assert_string_equal(e->text, want);
    }
    /* the caseworker's waits still, beside the case's opening (its case
     * rule did not change) */
    assert_int_equal(h_backlog(janssen), 2);
    assert_int_equal(h_backlog(riec), 0);
    schakel_close(&woco);
    schakel_close(&janssen);
    schakel_close(&riec);
    stop_clean(env);
}

/* How many lines of out (an export: an entry a line) hold every needle
 * (NULL-terminated). */
static size_t export_lines(const char *out, const char *const *needles)
{
    size_t n = 0;
    for (const char *at = out; at != NULL && *at != '\0';) {
        const char *end = strchr(at, '\n');
        size_t len = end != NULL ? (size_t)(end - at) : strlen(at);
        int all = 1;
        for (size_t i = 0; needles[i] != NULL && all; i++)
            all = memmem(at, len, needles[i], strlen(needles[i])) != NULL;
        n += (size_t)all;
        at = end != NULL ? end + 1 : NULL;
    }
    return n;
}

/* The export of `subject` by schakelctl, offline from the stopped broker's
 * store; the caller frees res. */
static void export_subject(h_env_t *env, const char *subject, h_cli_result_t *res)
{
    char store_key[192];
    snprintf(store_key, sizeof store_key, "%s/keys/store.key", env->dir);
    int rc = h_run_ctl(env, NULL, NULL, res, "audit", "subject", subject, "--store",
                       env->store_path, "--store-key", store_key, NULL);
    if (rc != 0)
        fail_msg("schakelctl audit subject: exit %d: %s", rc, res->err);
}

#define LINKED_SUBJECT "PSN-0b5e11a7c9"

/* A signal about another person than the case's, linked to the case: every
 * delivery of its link (to the members then, and in the history of one
 * that joins later) and every view of a timeline showing it is in that
 * person's export, whether or not the recipient's rule shows the
 * pseudonym, each delivery naming the signal fields the member got. */
static void test_linked_signal_names_its_subject(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *woco = h_connect(env, H_WOCO_MAASOEVER);
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *gemeente = h_connect(env, H_GEMEENTE);
    schakel_client_t *om = h_connect(env, H_OM);
    schakel_signal_t about_b = FARM_SIGNAL;
    about_b.subject = LINKED_SUBJECT;
    uint32_t recipients = 0;
    uint64_t item_seq = h_publish_ok(woco, &about_b, NULL, NULL, &recipients, NULL);
    assert_int_equal(recipients, 4); /* politie, riec's two principals, gemeente */
    schakel_client_t *receivers[] = {riec, politie, gemeente};
    for (size_t i = 0; i < 3; i++) {
        schakel_delivery_t *d = h_receive(receivers[i]);
        assert_int_equal(d->item_seq, item_seq);
        must(receivers[i], schakel_ack(receivers[i], d->seq), "ack");
        schakel_delivery_free(&d);
    }
    char id[SCHAKEL_CASE_ID_SIZE];
    schakel_client_t *members[] = {politie, gemeente};
    const char *const partners[] = {"politie", "gemeente"};
    case_with_members(riec, id, members, partners, 2);
    schakel_case_result_t r;
    must(riec, schakel_case_link(riec, id, item_seq, NULL, &r, T), "link");
    assert_int_equal(r.recipients, 4); /* riec's two principals, politie, gemeente */
    schakel_delivery_t *d = expect_event(politie, id, SCHAKEL_CASE_EVENT_SIGNAL_LINKED);
    assert_string_equal(d->case_event->signal->subject, LINKED_SUBJECT);
    schakel_delivery_free(&d);
    d = expect_event(gemeente, id, SCHAKEL_CASE_EVENT_SIGNAL_LINKED);
    assert_null(d->case_event->signal->subject); /* its rule does not show it */
    schakel_delivery_free(&d);
    /* om joins later: the link comes in its history */
    invite(riec, id, "om");
    d = expect_event(om, id, SCHAKEL_CASE_EVENT_INVITED);
    schakel_delivery_free(&d);
    must(om, schakel_case_accept(om, id, NULL, NULL, T), "accept");
    int linked_seen = 0;
    for (int joined = 0; !joined;) {
        d = h_receive(om);
        assert_true(d->is_case_event);
        linked_seen += d->case_event->kind == SCHAKEL_CASE_EVENT_SIGNAL_LINKED;
        joined = d->case_event->kind == SCHAKEL_CASE_EVENT_JOINED &&
                 strcmp(d->case_event->partner, "om") == 0;
        must(om, schakel_ack(om, d->seq), "ack");
        schakel_delivery_free(&d);
    }
    assert_int_equal(linked_seen, 1);
    /* two members view the timeline, one of them without the pseudonym */
    schakel_client_t *viewers[] = {politie, gemeente};
    for (size_t i = 0; i < 2; i++) {
        schakel_case_view_t *view = NULL;
        must(viewers[i], schakel_case_show(viewers[i], id, &view, T), "show");
        schakel_case_view_free(&view);
    }
    schakel_close(&om);
    schakel_close(&gemeente);
    schakel_close(&politie);
    schakel_close(&riec);
    schakel_close(&woco);
    assert_int_equal(h_broker_stop(env), 0);

    /* the entries keep the shapes the verifier checks */
    h_cli_result_t res;
    int rc = h_run_ctl(env, NULL, NULL, &res, "audit", "verify", "--store", env->store_path,
                       "--broker-key", env->broker_pub, NULL);
    if (rc != 0)
        fail_msg("schakelctl audit verify: exit %d: %s%s", rc, res.out, res.err);
    h_cli_result_free(&res);
    export_subject(env, LINKED_SUBJECT, &res);
    static const struct {
        const char *recipient, *fields;
    } got[] = {
        {H_RIEC, "signal:sender,kind,theme,area,address,subject,grounds,severity,summary"},
        {H_RIEC_CASEWORKER,
         "signal:sender,kind,theme,area,address,subject,grounds,severity,summary"},
        {H_POLITIE, "signal:sender,kind,theme,area,address,subject,grounds,summary"},
        {H_GEMEENTE, "signal:sender,kind,theme,area,address,summary"},
        {H_OM, "signal:sender,kind,theme,area,address,subject,grounds,summary"},
    };
    for (size_t i = 0; i < sizeof got / sizeof got[0]; i++) {
        char recipient[96], fields[160];
        snprintf(recipient, sizeof recipient, "\"recipient\":\"%s\"", got[i].recipient);
        snprintf(fields, sizeof fields, "\"fields\":\"%s\"", got[i].fields);
        const char *const needles[] = {"\"event\":\"delivery.queued\"",
                                       "\"kind\":\"case.signal_linked\"", recipient, fields, NULL};
        if (export_lines(res.out, needles) != 1)
            fail_msg("the export of the linked signal's subject lacks its delivery to %s with"
                     " %s:\n%s",
                     got[i].recipient, got[i].fields, res.out);
    }
    const char *const any_link[] = {"\"kind\":\"case.signal_linked\"", NULL};
    assert_int_equal(export_lines(res.out, any_link), 5);
    static const char *const viewers_ids[] = {H_POLITIE, H_GEMEENTE};
    for (size_t i = 0; i < 2; i++) {
        char actor[96];
        snprintf(actor, sizeof actor, "\"actor\":\"%s\"", viewers_ids[i]);
        const char *const needles[] = {"\"event\":\"case.viewed\"", actor, "linked_signals=1", id,
                                       NULL};
        if (export_lines(res.out, needles) != 1)
            fail_msg("the export lacks the view of %s:\n%s", viewers_ids[i], res.out);
    }
    h_cli_result_free(&res);
    /* the case's own subject keeps its views (one entry each), not the link */
    export_subject(env, ADDRESS_CASE.subject, &res);
    const char *const viewed[] = {"\"event\":\"case.viewed\"", NULL};
    assert_int_equal(export_lines(res.out, viewed), 2);
    assert_int_equal(export_lines(res.out, any_link), 0);
    h_cli_result_free(&res);
    h_done(env);
}

/* ------------------------------------------------------------------ policy reload */

/* h_case_types with `what` replaced by `with` (which must occur). */
static char *case_types_with(const char *what, const char *with)
{
    const char *at = strstr(h_case_types, what);
    if (at == NULL)
        fail_msg("h_case_types lacks \"%s\"", what);
    size_t head = (size_t)(at - h_case_types);
    size_t len = strlen(h_case_types) - strlen(what) + strlen(with);
    char *out = malloc(len + 1);
    assert_non_null(out);
    snprintf(out, len + 1, "%.*s%s%s", (int)head, h_case_types, with, at + strlen(what));
    return out;
}

/* A policy reload applies to cases at once: a waiting delivery under a
 * membership rule that changed is withheld (the new version decides what
 * follows), and a partner no rule admits any more sees nothing of the
 * case. */
static void test_policy_reload_applies(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *gemeente = h_connect(env, H_GEMEENTE);
    char id[SCHAKEL_CASE_ID_SIZE];
    schakel_client_t *members[] = {gemeente};
    const char *const partners[] = {"gemeente"};
    case_with_members(riec, id, members, partners, 1);
    schakel_close(&gemeente);
    note(riec, id, "Onder de oude regel", NULL, 0, NULL);
    assert_int_equal(h_backlog_of(env, H_GEMEENTE), 1);

    char *changed = case_types_with("Bestuurlijke aanpak (Opiumwet art. 13b)",
                                    "Bestuurlijke aanpak (Opiumwet art. 13b en Gemeentewet)");
    h_env_write_policy(env, "%s%s%s", h_policy_header, h_default_rules, changed);
    free(changed);
    assert_int_equal(h_broker_reload(env), 1);
    note(riec, id, "Onder de nieuwe regel", NULL, 0, NULL);
    long offset = h_log_offset(env);
    gemeente = h_connect(env, H_GEMEENTE);
    schakel_delivery_t *d = expect_event(gemeente, id, SCHAKEL_CASE_EVENT_NOTE);
    assert_string_equal(d->case_event->text, "Onder de nieuwe regel");
    assert_string_equal(d->purpose, "Bestuurlijke aanpak (Opiumwet art. 13b en Gemeentewet)");
    schakel_delivery_free(&d);
    /* the withheld one is removed, and recorded, in the turn after the push */
    if (h_await_log(env, offset, "event=delivery.revoked recipient=" H_GEMEENTE, T) != 0)
        fail_msg("the delivery under the old rule was not revoked");
    expect_quiet(gemeente, "gemeente");

    /* gemeente may be a member no more */
    char *without = case_types_with("        partners: [gemeente]\n", "        partners: [om]\n");
    char *also =
        strstr(without, "      - id: ondermijning-politie\n        partners: [politie, om]");
    assert_non_null(also);
    memcpy(strstr(also, "[politie, om]"), "[politie]    ", strlen("[politie, om]"));
    h_env_write_policy(env, "%s%s%s", h_policy_header, h_default_rules, without);
    free(without);
    assert_int_equal(h_broker_reload(env), 1);
    schakel_case_result_t r;
    note(riec, id, "Na de wijziging", NULL, 0, &r);
    assert_int_equal(r.recipients, 2); /* riec's principals only */
    expect_quiet(gemeente, "gemeente");
    schakel_case_view_t *view = NULL;
    must_refuse(gemeente, schakel_case_show(gemeente, id, &view, T), "NOT_FOUND",
                "show without a membership rule");
    must_refuse(gemeente, schakel_case_note(gemeente, id, "x", NULL, 0, NULL, NULL, T), "NOT_FOUND",
                "note without a membership rule");
    schakel_close(&gemeente);
    schakel_close(&riec);
    stop_clean(env);
}

/* ------------------------------------------------------------------ views */

/* A timeline is one frame: attachments whose bytes do not fit any more
 * are listed with empty content, and every event is there, in order; the
 * bytes themselves came through the mailbox. */
static void test_view_of_a_large_case(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    char id[SCHAKEL_CASE_ID_SIZE];
    open_case(riec, &ADDRESS_CASE, id);
    enum { DOC = 100 * 1024 };
    uint8_t *doc = malloc(DOC);
    assert_non_null(doc);
    for (size_t i = 0; i < 3; i++) {
        char name[32];
        memset(doc, 'a' + (int)i, DOC);
        snprintf(name, sizeof name, "bijlage-%zu.bin", i + 1);
        must(riec,
             schakel_case_attach(riec, id, name, "application/octet-stream", doc, DOC, NULL, NULL,
                                 T),
             "attach");
    }
    note(riec, id, "Drie bijlagen toegevoegd", NULL, 0, NULL);
    schakel_case_view_t *view = NULL;
    must(riec, schakel_case_show(riec, id, &view, T), "show");
    assert_int_equal(view->n_events, 5);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(view->events[i].event_seq, i + 1);
    for (size_t i = 1; i <= 3; i++) {
        const schakel_case_event_t *ev = &view->events[i];
        char name[32];
        snprintf(name, sizeof name, "bijlage-%zu.bin", i);
        assert_int_equal(ev->kind, SCHAKEL_CASE_EVENT_ATTACHMENT);
        assert_string_equal(ev->attachment_name, name);
        if (i < 3) {
            assert_int_equal(ev->attachment_len, DOC);
            assert_int_equal(ev->attachment[DOC - 1], 'a' + (int)i - 1);
        } else {
            assert_int_equal(ev->attachment_len, 0); /* no room left in the frame */
        }
    }
    assert_string_equal(view->events[4].text, "Drie bijlagen toegevoegd");
    schakel_case_view_free(&view);
    /* the mailbox has every document whole */
    schakel_delivery_t *d = expect_event(riec, id, SCHAKEL_CASE_EVENT_OPENED);
    schakel_delivery_free(&d);
    for (size_t i = 0; i < 3; i++) {
        d = expect_event(riec, id, SCHAKEL_CASE_EVENT_ATTACHMENT);
        assert_int_equal(d->case_event->attachment_len, DOC);
        assert_int_equal(d->case_event->attachment[0], 'a' + (int)i);
        schakel_delivery_free(&d);
    }
    free(doc);
    schakel_close(&riec);
    stop_clean(env);
}

/* A timeline larger than one frame comes in pages (CaseView.more), each
 * going on from the last event of the one before: schakel_case_show
 * returns all of it, in order, and each page is a view in the trail. */
static void test_view_comes_in_pages(void **state)
{
    h_env_t *env = *state;
    enum { NOTES = 40 };
    schakel_client_t *riec = h_connect(env, H_RIEC);
    char id[SCHAKEL_CASE_ID_SIZE];
    open_case(riec, &ADDRESS_CASE, id);
    char *text = malloc(SCHAKEL_MAX_NOTE_TEXT_LEN + 1);
    assert_non_null(text);
    for (int i = 0; i < NOTES; i++) {
        memset(text, 'k' + i % 10, SCHAKEL_MAX_NOTE_TEXT_LEN);
        text[SCHAKEL_MAX_NOTE_TEXT_LEN] = '\0';
        note(riec, id, text, NULL, 0, NULL);
    }
    free(text);
    schakel_case_view_t *view = NULL;
    must(riec, schakel_case_show(riec, id, &view, T), "show");
    assert_int_equal(view->n_events, NOTES + 1);
    for (size_t i = 0; i < view->n_events; i++) {
        assert_int_equal(view->events[i].event_seq, i + 1);
        if (i > 0)
            assert_int_equal(view->events[i].text[0], 'k' + (int)(i - 1) % 10);
    }
    schakel_case_view_free(&view);
    /* a frame holds about 32 of these notes: two pages, two views */
    char detail[40];
    snprintf(detail, sizeof detail, "case_id=%s %%", id);
    sqlite3_stmt *stmt = trail_query(env,
                                     "SELECT group_concat(detail, '|') FROM audit WHERE event ="
                                     " 'case.viewed' AND detail LIKE ?1",
                                     detail, NULL);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    const char *pages = (const char *)sqlite3_column_text(stmt, 0);
    assert_non_null(pages);
    unsigned first = 0, second = 0;
    char tail[8] = "";
    if (sscanf(strchr(pages, ' ') + 1, "events=%u|case_id=%*s events=%u%7s", &first, &second,
               tail) != 2)
        fail_msg("the views of the pages: %s", pages);
    assert_true(first > 1 && first < NOTES + 1);
    assert_int_equal(first + second, NOTES + 1);
    trail_done(stmt);
    schakel_close(&riec);
    stop_clean(env);
}

/* A case list larger than one frame comes in pages, each going on after
 * the last case of the one before: schakel_case_list returns every case,
 * in the order they were opened, none twice. */
static void test_list_comes_in_pages(void **state)
{
    h_env_t *env = *state;
    enum { CASES = 1100 };
    const char *extra[] = {"--set", "max_case_opens_per_hour=1100", NULL};
    h_broker_start_with(env, extra); /* over the default budget (300 an hour) */
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_case_open_t open = ADDRESS_CASE;
    char title[SCHAKEL_MAX_CASE_TITLE_LEN + 1];
    char first[SCHAKEL_CASE_ID_SIZE] = "", last[SCHAKEL_CASE_ID_SIZE] = "";
    for (int i = 0; i < CASES; i++) {
        snprintf(title, sizeof title, "%04d %0195d", i, 0);
        open.title = title;
        open_case(riec, &open, last);
        if (i == 0)
            memcpy(first, last, sizeof first);
    }
    schakel_case_list_t *list = NULL;
    must(riec, schakel_case_list(riec, &list, T), "list");
    assert_int_equal(list->n_cases, CASES);
    assert_string_equal(list->cases[0].case_id, first);
    assert_string_equal(list->cases[CASES - 1].case_id, last);
    for (size_t i = 0; i < list->n_cases; i++) {
        char want[24];
        snprintf(want, sizeof want, "%04zu ", i);
        if (strncmp(list->cases[i].title, want, 5) != 0)
            fail_msg("case %zu of the list is \"%.8s...\"", i, list->cases[i].title);
    }
    schakel_case_list_free(&list);
    schakel_close(&riec);
    stop_clean(env);
}

/* Open cases whose case type leaves the policy can be seen and closed by
 * nobody, so their retention never starts: the broker says so at every
 * reload and start, with how many. */
static void test_unreachable_cases_are_named(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    char id[SCHAKEL_CASE_ID_SIZE];
    open_case(riec, &ADDRESS_CASE, id);
    open_case(riec, &ADDRESS_CASE, id);
    schakel_close(&riec);
    static const char old_id[] = "  - id: ondermijning-adres\n";
    const char *at = strstr(h_case_types, old_id);
    assert_non_null(at);
    h_env_write_policy(env, "%s%s%.*s  - id: ondermijning-adres-v2\n%s", h_policy_header,
                       h_default_rules, (int)(at - h_case_types), h_case_types,
                       at + strlen(old_id));
    long offset = h_log_offset(env);
    assert_int_equal(h_broker_reload(env), 1);
    static const char needle[] =
        "event=cases.unreachable case_type=ondermijning-adres lead=riec open=2 ";
    if (h_await_log(env, offset, needle, T) != 0)
        fail_msg("no \"%s\" after the reload", needle);
    /* and counted on the reload's own line */
    if (h_await_log(env, offset, "event=policy.reloaded ", 0) != 0 ||
        h_log_count(env, offset, " operators=1 cases_unreachable=2") != 1)
        fail_msg("the reload's line does not count the cases it made unreachable");
    assert_int_equal(h_broker_stop(env), 0);
    offset = h_log_offset(env);
    const char *const admin_on[] = {"--set", "admin_listen=tcp://127.0.0.1:*", NULL};
    h_broker_start_with(env, admin_on);
    if (h_await_log(env, offset, needle, T) != 0)
        fail_msg("no \"%s\" at the start", needle);
    /* an operator's reload counts them, and warns */
    char admin[128];
    h_admin_endpoint(env, admin, sizeof admin);
    const char *const reload[] = {"reload", NULL};
    h_cli_result_t res;
    h_run_ctl_argv(env, admin, h_key_file(env, H_OPERATOR), reload, &res);
    if (res.status != 0 ||
        strstr(res.err, "warning: 2 open cases can no longer be seen or closed under this "
                        "policy (cases.unreachable in the broker's log names the case types "
                        "and leads)") == NULL)
        fail_msg("schakelctl reload: exit %d\n%s%s", res.status, res.out, res.err);
    h_cli_result_free(&res);
    stop_clean(env);
}

/* A lead partner taken out of its case type's `lead:` list (still a
 * partner) can close none of its open cases, nor can anyone acting for
 * it: the broker says so at the reload and at the start. */
static void test_lead_out_of_lead_list_is_named(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    char id[SCHAKEL_CASE_ID_SIZE];
    open_case(riec, &ADDRESS_CASE, id);
    schakel_close(&riec);
    char *types = case_types_with("    lead: [riec]\n", "    lead: [brandweer]\n");
    h_env_write_policy(env, "%s%s%s", h_policy_header, h_default_rules, types);
    free(types);
    long offset = h_log_offset(env);
    assert_int_equal(h_broker_reload(env), 1);
    static const char needle[] =
        "event=cases.unreachable case_type=ondermijning-adres lead=riec open=1 why=\"lead riec is"
        " no longer a lead partner of ondermijning-adres: nobody can close these cases\"";
    if (h_await_log(env, offset, needle, T) != 0)
        fail_msg("no \"%s\" after the reload", needle);
    /* and indeed: riec cannot close it */
    riec = h_connect(env, H_RIEC);
    schakel_status_t st = schakel_case_close(riec, id, "Afgerond", NULL, NULL, T);
    assert_int_equal(st, SCHAKEL_ERR_REFUSED);
    schakel_close(&riec);
    assert_int_equal(h_broker_stop(env), 0);
    offset = h_log_offset(env);
    h_broker_start(env);
    if (h_await_log(env, offset, needle, T) != 0)
        fail_msg("no \"%s\" at the start", needle);
    stop_clean(env);
}

/* The "case.listed" entries of `principal`, their details joined by '|'
 * into out ("" when none). */
static void listed_entries(const h_env_t *env, const char *principal, char *out, size_t len)
{
    sqlite3_stmt *stmt = trail_query(env,
                                     "SELECT coalesce(group_concat(detail, '|'), '') FROM"
                                     " (SELECT detail FROM audit WHERE event = 'case.listed'"
                                     " AND actor = ?1 ORDER BY seq)",
                                     principal, NULL);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    snprintf(out, len, "%s", (const char *)sqlite3_column_text(stmt, 0));
    trail_done(stmt);
}

/* A list of cases shows titles, leads and members: each list answer is a
 * "case.listed" entry naming who asked and how many cases it showed, and
 * a list that cannot be recorded is not shown. */
static void test_case_list_is_recorded(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    char id[SCHAKEL_CASE_ID_SIZE];
    open_case(riec, &ADDRESS_CASE, id);
    open_case(riec, &ADDRESS_CASE, id);
    invite(riec, id, "politie");
    schakel_case_list_t *list = NULL;
    must(riec, schakel_case_list(riec, &list, T), "list by riec");
    assert_int_equal(list->n_cases, 2);
    schakel_case_list_free(&list);
    must(politie, schakel_case_list(politie, &list, T), "list by politie");
    assert_int_equal(list->n_cases, 1); /* invited to one */
    schakel_case_list_free(&list);
    char details[256];
    listed_entries(env, H_RIEC, details, sizeof details);
    assert_string_equal(details, "cases=2");
    listed_entries(env, H_POLITIE, details, sizeof details);
    assert_string_equal(details, "cases=1");

    trail_trigger(env, "case.listed");
    const schakel_error_t *e = must_refuse(riec, schakel_case_list(riec, &list, T),
                                           "INTERNAL_ERROR", "an unrecorded list");
    if (strstr(e->text, "could not record this list") == NULL)
        fail_msg("the refused list says \"%s\"", e->text);
    assert_null(list);
    trail_trigger(env, NULL);
    must(riec, schakel_case_list(riec, &list, T), "list again");
    assert_int_equal(list->n_cases, 2);
    schakel_case_list_free(&list);
    listed_entries(env, H_RIEC, details, sizeof details);
    assert_string_equal(details, "cases=2|cases=2");
    schakel_close(&politie);
    schakel_close(&riec);
    stop_clean(env);
}

/* ------------------------------------------------------------------ idempotency */

/* A command repeated with its command id is answered with the original
 * answer and carried out once; the id with other content is a conflict. */
static void test_idempotent_retry(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    static const uint8_t open_id[16] = {0x0c, 0xa5, 0xe0, 1, 2,  3,  4,  5,
                                        6,    7,    8,    9, 10, 11, 12, 13};
    static const uint8_t invite_id[16] = {0x0c, 0xa5, 0xe0, 0x17, 1};
    static const uint8_t note_id[16] = {0x0c, 0xa5, 0xe0, 0x2e, 1};
    const schakel_case_options_t first_open = {.command_id = open_id};
    char id[SCHAKEL_CASE_ID_SIZE], again[SCHAKEL_CASE_ID_SIZE];
    schakel_case_result_t r1, r2;
    must(riec, schakel_case_open(riec, &ADDRESS_CASE, &first_open, id, &r1, T), "open");
    must(riec, schakel_case_open(riec, &ADDRESS_CASE, &first_open, again, &r2, T), "open again");
    assert_string_equal(again, id);
    assert_int_equal(r2.duplicate, 1);
    assert_int_equal(r2.seq, r1.seq);
    assert_int_equal(r2.recipients, r1.recipients);
    schakel_case_open_t other = ADDRESS_CASE;
    other.title = "Een andere titel";
    must_refuse(riec, schakel_case_open(riec, &other, &first_open, NULL, NULL, T),
                "DUPLICATE_CONFLICT", "the id with other content");
    schakel_case_list_t *list = NULL;
    must(riec, schakel_case_list(riec, &list, T), "list");
    assert_int_equal(list->n_cases, 1);
    schakel_case_list_free(&list);

    const schakel_case_options_t inv = {.command_id = invite_id};
    must(riec, schakel_case_invite(riec, id, "politie", &inv, &r1, T), "invite");
    must(riec, schakel_case_invite(riec, id, "politie", &inv, &r2, T), "invite again");
    assert_int_equal(r2.duplicate, 1);
    assert_int_equal(r2.seq, r1.seq);
    assert_int_equal(h_backlog(politie), 1); /* one invitation */
    must(politie, schakel_case_accept(politie, id, NULL, NULL, T), "accept");
    uint64_t before = h_backlog(politie);
    const schakel_case_options_t n = {.command_id = note_id};
    must(riec, schakel_case_note(riec, id, "Eenmaal", NULL, 0, &n, &r1, T), "note");
    must(riec, schakel_case_note(riec, id, "Eenmaal", NULL, 0, &n, &r2, T), "note again");
    assert_int_equal(r2.duplicate, 1);
    assert_int_equal(h_backlog(politie), before + 1);
    schakel_case_view_t *view = NULL;
    must(riec, schakel_case_show(riec, id, &view, T), "show");
    assert_int_equal(view->n_events, 4); /* opened, invited, joined, one note */
    schakel_case_view_free(&view);
    schakel_close(&politie);
    schakel_close(&riec);
    stop_clean(env);
}

/* A signal whose rule was withdrawn cannot be brought back through a case:
 * politie received the farm signal, then the policy stopped the housing
 * corporations sharing ondermijning with the police; politie's link is
 * answered as if it had never received it, and nobody gets the signal. */
static void test_link_after_revocation_is_refused(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_client_t *woco = h_connect(env, H_WOCO_MAASOEVER);
    uint32_t recipients = 0;
    uint64_t item_seq = h_publish_ok(woco, &FARM_SIGNAL, NULL, NULL, &recipients, NULL);
    schakel_delivery_t *d = h_receive(politie);
    assert_int_equal(d->item_seq, item_seq);
    must(politie, schakel_ack(politie, d->seq), "ack");
    schakel_delivery_free(&d);
    d = h_receive(riec); /* riec gets the farm signal too */
    assert_int_equal(d->item_seq, item_seq);
    must(riec, schakel_ack(riec, d->seq), "ack");
    schakel_delivery_free(&d);
    char id[SCHAKEL_CASE_ID_SIZE];
    schakel_client_t *members[] = {politie};
    const char *const partners[] = {"politie"};
    case_with_members(riec, id, members, partners, 1);

    /* the rule woco -> politie is withdrawn */
    const char *rule = strstr(h_default_rules, "  - id: woco-ondermijning-politie\n");
    const char *next = strstr(rule + 1, "  - id: ");
    assert_non_null(rule);
    assert_non_null(next);
    h_env_write_policy(env, "%s%.*s%s%s", h_policy_header, (int)(rule - h_default_rules),
                       h_default_rules, next, h_case_types);
    assert_int_equal(h_broker_reload(env), 1);

    const schakel_error_t *e =
        must_refuse(politie, schakel_case_link(politie, id, item_seq, NULL, NULL, T), "NOT_FOUND",
                    "link of a withdrawn signal");
    assert_non_null(strstr(e->text, "that " H_POLITIE " received"));
    /* and nothing reached the case */
    assert_int_equal(h_backlog(riec), 0);
    assert_int_equal(h_backlog(politie), 0);
    schakel_close(&woco);
    schakel_close(&politie);
    schakel_close(&riec);
}

/* ------------------------------------------------------------------ case ids */

/* Refusals on the trail of `actor`'s command with this id and reason. */
static int64_t refusals_of(const h_env_t *env, const char *actor, const uint8_t id[16],
                           const char *reason)
{
    char hex[33], sql[256];
    sodium_bin2hex(hex, sizeof hex, id, 16);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM audit WHERE event = 'publish.refused' AND actor = '%s'"
             " AND message_id = '%s' AND reason = '%s'",
             actor, hex, reason);
    return h_store_int(env, sql, NULL);
}

/* The case counter: the last case number handed out. */
static int64_t last_case_num(const h_env_t *env)
{
    return h_store_int(env,
                       "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'cases'),"
                       " 0)",
                       NULL);
}

/* A principal's case-open budget (here 2 an hour, a burst of 2): its
 * third open is refused RATE_LIMITED naming the budget, on the trail
 * under its command id; nothing is stored and no case number used; the
 * same command goes once the budget has a token again (after a restart,
 * the clock of a test cannot wait an hour). Another principal of the
 * same partner, and another partner, open all the while. */
static void test_case_open_budget(void **state)
{
    h_env_t *env = *state;
    const char *extra[] = {"--set", "max_case_opens_per_hour=2", NULL};
    h_broker_start_with(env, extra);
    schakel_client_t *riec = h_connect(env, H_RIEC);
    char id[SCHAKEL_CASE_ID_SIZE];
    open_case(riec, &ADDRESS_CASE, id);
    open_case(riec, &ADDRESS_CASE, id);
    assert_string_equal(id, "C-00000002");
    uint8_t command_id[16];
    randombytes_buf(command_id, sizeof command_id);
    const schakel_case_options_t third = {.command_id = command_id};
    const schakel_error_t *e =
        must_refuse(riec, schakel_case_open(riec, &ADDRESS_CASE, &third, id, NULL, T),
                    "RATE_LIMITED", "a third open within the hour");
    if (strstr(e->text, "more than 2 case opens per hour") == NULL ||
        strstr(e->text, "case-open budget") == NULL || strstr(e->text, "same command id") == NULL)
        fail_msg("the refused open says \"%s\"", e->text);
    assert_int_equal(refusals_of(env, H_RIEC, command_id, "RATE_LIMITED"), 1);
    assert_int_equal(command_stored(env, H_RIEC, command_id), 0);
    assert_int_equal(h_store_int(env, "SELECT count(*) FROM cases", NULL), 2);
    assert_int_equal(last_case_num(env), 2);
    /* a refused open costs nothing: a note on an open case still goes */
    note(riec, "C-00000001", "Na de weigering", NULL, 0, NULL);

    schakel_client_t *caseworker = h_connect(env, H_RIEC_CASEWORKER);
    open_case(caseworker, &ADDRESS_CASE, id);
    assert_string_equal(id, "C-00000003");
    schakel_client_t *gemeente = h_connect(env, H_GEMEENTE);
    const schakel_case_open_t street = {
        .case_type = "overlast-kort", .area = "WK093501", .title = "Overlast Boschstraat"};
    open_case(gemeente, &street, id);
    assert_string_equal(id, "C-00000004");
    e = must_refuse(riec, schakel_case_open(riec, &ADDRESS_CASE, &third, id, NULL, T),
                    "RATE_LIMITED", "the third open again within the hour");
    schakel_close(&gemeente);
    schakel_close(&caseworker);
    schakel_close(&riec);

    /* a full budget again: the refused command itself goes, once */
    assert_int_equal(h_broker_stop(env), 0);
    h_broker_start_with(env, extra);
    riec = h_connect(env, H_RIEC);
    schakel_case_result_t r;
    must(riec, schakel_case_open(riec, &ADDRESS_CASE, &third, id, &r, T), "the refused open");
    assert_string_equal(id, "C-00000005");
    assert_false(r.duplicate);
    assert_int_equal(command_stored(env, H_RIEC, command_id), 1);
    schakel_close(&riec);
    stop_clean(env);
}

/* Two principals of one partner share its case-open budget (here 3 an
 * hour, each principal 2): riec's third open in all is refused
 * RATE_LIMITED naming the partner's budget, though that principal has one
 * of its own left; another partner opens all the while. */
static void test_case_open_budget_per_partner(void **state)
{
    h_env_t *env = *state;
    const char *extra[] = {"--set", "max_case_opens_per_hour=2", "--set",
                           "max_case_opens_per_hour_per_partner=3", NULL};
    h_broker_start_with(env, extra);
    schakel_client_t *riec = h_connect(env, H_RIEC);
    schakel_client_t *caseworker = h_connect(env, H_RIEC_CASEWORKER);
    schakel_client_t *gemeente = h_connect(env, H_GEMEENTE);
    char id[SCHAKEL_CASE_ID_SIZE];
    open_case(riec, &ADDRESS_CASE, id);
    open_case(riec, &ADDRESS_CASE, id);
    open_case(caseworker, &ADDRESS_CASE, id);
    assert_string_equal(id, "C-00000003");
    uint8_t command_id[16];
    randombytes_buf(command_id, sizeof command_id);
    const schakel_case_options_t fourth = {.command_id = command_id};
    const schakel_error_t *e =
        must_refuse(caseworker, schakel_case_open(caseworker, &ADDRESS_CASE, &fourth, id, NULL, T),
                    "RATE_LIMITED", "the partner's fourth open within the hour");
    if (strstr(e->text, "more than 3 case opens per hour from the principals of partner riec") ==
            NULL ||
        strstr(e->text, "same command id") == NULL)
        fail_msg("the refused open says \"%s\"", e->text);
    assert_int_equal(refusals_of(env, H_RIEC_CASEWORKER, command_id, "RATE_LIMITED"), 1);
    assert_int_equal(command_stored(env, H_RIEC_CASEWORKER, command_id), 0);
    assert_int_equal(last_case_num(env), 3);
    const schakel_case_open_t street = {
        .case_type = "overlast-kort", .area = "WK093501", .title = "Overlast Boschstraat"};
    open_case(gemeente, &street, id);
    open_case(gemeente, &street, id);
    assert_string_equal(id, "C-00000005");
    schakel_close(&gemeente);
    schakel_close(&caseworker);
    schakel_close(&riec);
    stop_clean(env);
}

/* Publish signals until the broker refuses one UNAVAILABLE (its file-size
 * limit lowered: a full disk); fails the test if none is. */
static void fill_the_disk(h_env_t *env)
{
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    for (int n = 0;; n++) {
        if (n == 200)
            fail_msg("no signal was refused under the lowered file-size limit");
        char ref[32];
        snprintf(ref, sizeof ref, "BVH-VOL-%04d", n);
        schakel_signal_t s = h_police_signal(ref);
        uint8_t message_id[16];
        schakel_item_result_t result = {0};
        int duplicate = -1;
        schakel_status_t st =
            schakel_publish(politie, NULL, &s, 1, NULL, message_id, &result, &duplicate, T);
        if (st == SCHAKEL_OK)
            continue;
        must_refuse(politie, st, "UNAVAILABLE", "a signal on a full disk");
        break;
    }
    schakel_close(&politie);
}

/* An open whose turn is rolled back (a full disk: UNAVAILABLE) uses
 * neither a case id nor budget: with one id left and a budget of 2 an
 * hour, one open stored, the next rolled back, its retry (same command id)
 * gets the last id, C-99999999; then no id is left. The rolled-back open
 * is not logged as opened (the id it would have named is the retry's):
 * case.opened once for C-99999999, said by the retry. */
static void test_rolled_back_open_costs_nothing(void **state)
{
    h_env_t *env = *state;
    h_store_exec(env, "INSERT INTO sqlite_sequence (name, seq) SELECT 'cases', 0 WHERE NOT EXISTS"
                      " (SELECT 1 FROM sqlite_sequence WHERE name = 'cases');"
                      "UPDATE sqlite_sequence SET seq = 99999997 WHERE name = 'cases'");
    const char *extra[] = {"--set", "max_case_opens_per_hour=2", NULL};
    h_broker_start_with(env, extra);
    schakel_client_t *riec = h_connect(env, H_RIEC);
    char id[SCHAKEL_CASE_ID_SIZE];
    open_case(riec, &ADDRESS_CASE, id);
    assert_string_equal(id, "C-99999998");

    struct rlimit old;
    (void)h_broker_file_limit_lower(env, &old);
    fill_the_disk(env);
    uint8_t command_id[16];
    randombytes_buf(command_id, sizeof command_id);
    const schakel_case_options_t last = {.command_id = command_id};
    long offset = h_log_offset(env);
    must_refuse(riec, schakel_case_open(riec, &ADDRESS_CASE, &last, id, NULL, T), "UNAVAILABLE",
                "an open on a full disk");
    h_broker_file_limit_restore(env, &old);
    assert_int_equal(command_stored(env, H_RIEC, command_id), 0);
    /* the answer left after the turn's end: a line said for the open is in */
    if (h_log_count(env, offset, "event=case.opened ") != 0)
        fail_msg("the rolled-back open was logged as opened");

    schakel_case_result_t r;
    must(riec, schakel_case_open(riec, &ADDRESS_CASE, &last, id, &r, T),
         "the rolled-back open, sent again");
    assert_string_equal(id, "C-99999999");
    assert_false(r.duplicate);
    assert_int_equal(h_log_count(env, offset, "event=case.opened "), 1);
    assert_int_equal(h_log_count(env, offset,
                                 "event=case.opened actor=" H_RIEC
                                 " on_behalf_of=- case_id=C-99999999 partner=- "),
                     1);
    assert_int_equal(h_store_int(env, "SELECT count(*) FROM cases", NULL), 2);
    randombytes_buf(command_id, sizeof command_id);
    must_refuse(riec, schakel_case_open(riec, &ADDRESS_CASE, &last, id, NULL, T),
                "CASE_IDS_EXHAUSTED", "an open with no id left");
    schakel_close(&riec);
    stop_clean(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_membership_boundary, setup_cases, h_teardown),
        cmocka_unit_test_setup_teardown(test_link_after_revocation_is_refused, setup_cases,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_late_joiner_history, setup_cases, h_teardown),
        cmocka_unit_test_setup_teardown(test_act_on_behalf_recorded, setup_cases, h_teardown),
        cmocka_unit_test_setup_teardown(test_closed_case_refuses_notes, setup_cases, h_teardown),
        cmocka_unit_test_setup_teardown(test_note_field_minimisation, setup_cases, h_teardown),
        cmocka_unit_test_setup_teardown(test_invite_refused_by_rule, setup_cases, h_teardown),
        cmocka_unit_test_setup_teardown(test_leave_stops_delivery, setup_cases, h_teardown),
        cmocka_unit_test_setup_teardown(test_retention_after_close, setup_cases, h_teardown),
        cmocka_unit_test_setup_teardown(test_close_reseals_waiting_deliveries, setup_cases,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_case_command_not_recorded_is_not_stored, setup_cases,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_unreadable_event_refuses_the_view, setup_cases,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_unreadable_title_refuses_what_reads_it, setup_cases,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_hidden_case_with_unreadable_title_is_not_found,
                                        setup_cases, h_teardown),
        cmocka_unit_test_setup_teardown(test_declined_case_with_unreadable_title_leaves_the_list,
                                        setup_cases, h_teardown),
        cmocka_unit_test_setup_teardown(test_unreadable_rows_refuse_the_command, setup_cases,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_unreadable_history_rolls_back_the_join, setup_cases,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_link_received_signal, setup_cases, h_teardown),
        cmocka_unit_test_setup_teardown(test_link_needs_the_principals_own_delivery, setup_cases,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_link_gives_the_linkers_own_fields, setup_cases,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_link_of_a_withheld_delivery_is_refused, setup_cases,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_link_after_own_retention_is_refused, setup_cases,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_idempotent_retry, setup_cases, h_teardown),
        cmocka_unit_test_setup_teardown(test_policy_reload_applies, setup_cases, h_teardown),
        cmocka_unit_test_setup_teardown(test_view_of_a_large_case, setup_cases, h_teardown),
        cmocka_unit_test_setup_teardown(test_case_entries_name_the_subject, setup_cases,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_view_comes_in_pages, setup_cases, h_teardown),
        cmocka_unit_test_setup_teardown(test_list_comes_in_pages, setup_cases_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_case_open_budget, setup_cases_env, h_teardown),
        cmocka_unit_test_setup_teardown(test_case_open_budget_per_partner, setup_cases_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_rolled_back_open_costs_nothing, setup_cases_env,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_cases_are_named, setup_cases, h_teardown),
        cmocka_unit_test_setup_teardown(test_linked_signal_names_its_subject, setup_cases,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_lead_out_of_lead_list_is_named, setup_cases,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_case_list_is_recorded, setup_cases, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
