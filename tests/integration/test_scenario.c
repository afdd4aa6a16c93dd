/*
 * test_scenario.c — the partners' scenario against a real schakeld: who
 * receives what, with which fields, and what is refused with which reason.
 *
 * Each test starts its own broker on a random loopback port with the default
 * test policy (harness.c) and checks every recipient's mailbox, not only the
 * intended ones: a delivery to a partner no rule names is a failure.
 */
#include "harness.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define SUBJECT "PSN-7f3a9c2e41"

/* A woco's report of a suspected cannabis farm: every field set, so that the
 * per-recipient field filtering is visible. */
static schakel_signal_t sample_cannabis_farm(void)
{
    schakel_signal_t s = {
        .kind = "hennepkwekerij",
        .theme = "ondermijning",
        .area = "BU09350101",
        .postcode = "6211AB",
        .house_number = 12,
        .subject = SUBJECT,
        .grounds = "Stroomverbruik viermaal het gemiddelde; huurder weigert de monteur "
                   "toegang; sterke hennepgeur in het trappenhuis",
        .case_ref = "RIEC-2024-0117",
        .severity = SCHAKEL_SEVERITY_HIGH,
        .observed_at = (int64_t)time(NULL) - 3600,
        .summary = "Vermoedelijke hennepkwekerij in huurwoning",
        .source_ref = "WM-2024-0311",
    };
    return s;
}

/* Receive exactly one delivery as `principal`, check it, ack it and check
 * that the mailbox is then empty. */
static void expect_one_delivery(h_env_t *env, const char *principal, const char *sender,
                                const schakel_signal_t *sent, const uint8_t message_id[16],
                                uint64_t item_seq, const char *rule_id, const char *purpose,
                                unsigned fields)
{
    schakel_client_t *client = h_connect(env, principal);
    assert_int_equal(h_backlog(client), 1);
    schakel_delivery_t *d = h_receive(client);
    assert_string_equal(d->sender, sender);
    assert_true(strncmp(sender, d->sender_partner, strlen(d->sender_partner)) == 0);
    assert_int_equal(sender[strlen(d->sender_partner)], '/');
    assert_memory_equal(d->message_id, message_id, 16);
    assert_int_equal(d->item_index, 0);
    assert_int_equal(d->item_seq, item_seq);
    assert_int_equal(d->redelivery, 0);
    assert_string_equal(d->rule_id, rule_id);
    assert_string_equal(d->purpose, purpose);
    h_assert_delivery_fields(d, sent, fields);
    assert_int_equal(schakel_ack(client, d->seq), SCHAKEL_OK);
    assert_int_equal(h_backlog(client), 0);
    schakel_delivery_free(&d);
    assert_null(d);
    schakel_close(&client);
}

/* 1. A housing corporation reports a suspected cannabis farm: politie, riec
 * (both principals) and gemeente receive it, each with its rule's fields;
 * gemeente sees neither subject nor grounds; nobody else receives it. */
static void test_woco_ondermijning_reaches_each_partner_with_its_fields(void **state)
{
    h_env_t *env = *state;
    schakel_signal_t sent = sample_cannabis_farm();
    schakel_client_t *woco = h_connect(env, H_WOCO_MAASOEVER);
    uint8_t id[16];
    uint32_t recipients = 0;
    uint64_t seq = h_publish_ok(woco, &sent, NULL, id, &recipients, NULL);
    assert_int_equal(recipients, 4); /* politie, riec/analyse, riec/m.janssen, gemeente */
    schakel_close(&woco);

    static const struct {
        const char *principal, *rule, *purpose;
        unsigned fields;
    } expected[] = {
        {H_POLITIE, "woco-ondermijning-politie", "Opsporing van ondermijnende criminaliteit",
         H_F_AREA | H_F_ADDRESS | H_F_SUBJECT | H_F_GROUNDS | H_F_CASE_REF | H_F_SEVERITY |
             H_F_OBSERVED_AT | H_F_SUMMARY | H_F_SOURCE_REF},
        {H_RIEC, "woco-ondermijning-riec", "Integrale analyse van ondermijning",
         H_F_AREA | H_F_ADDRESS | H_F_SUBJECT | H_F_GROUNDS | H_F_SEVERITY | H_F_OBSERVED_AT |
             H_F_SUMMARY},
        {H_RIEC_CASEWORKER, "woco-ondermijning-riec", "Integrale analyse van ondermijning",
         H_F_AREA | H_F_ADDRESS | H_F_SUBJECT | H_F_GROUNDS | H_F_SEVERITY | H_F_OBSERVED_AT |
             H_F_SUMMARY},
        {H_GEMEENTE, "woco-ondermijning-gemeente", "Bestuurlijke aanpak van ondermijning",
         H_F_AREA | H_F_ADDRESS | H_F_SEVERITY | H_F_OBSERVED_AT | H_F_SUMMARY},
    };
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
        expect_one_delivery(env, expected[i].principal, H_WOCO_MAASOEVER, &sent, id, seq,
                            expected[i].rule, expected[i].purpose, expected[i].fields);
    /* The recipients acked theirs: now every mailbox must be empty, which
     * also proves that om, veiligheidshuis, brandweer and both wocos
     * (the sender included) never got a copy. */
    h_assert_nobody_else(env, NULL);
    h_done(env);
}

/* 2. The fire service reports a fire-safety breach at the same address to
 * the municipality and the owning corporation: exactly those two receive. */
static void test_brandweer_brandveiligheid_to_gemeente_and_woco(void **state)
{
    h_env_t *env = *state;
    const char *const to[] = {"gemeente", "woco-maasoever"};
    schakel_signal_t sent = {
        .kind = "brandonveilige-situatie",
        .theme = "brandveiligheid",
        .area = "BU09350101",
        .postcode = "6211AB",
        .house_number = 12,
        .severity = SCHAKEL_SEVERITY_MEDIUM,
        .observed_at = (int64_t)time(NULL) - 600,
        .summary = "Vluchtweg geblokkeerd, rookmelders verwijderd, overbelaste groepen",
        .source_ref = "BZL-2024-1188",
        .recipients = to,
        .n_recipients = 2,
    };
    schakel_client_t *brandweer = h_connect(env, H_BRANDWEER);
    uint8_t id[16];
    uint32_t recipients = 0;
    uint64_t seq = h_publish_ok(brandweer, &sent, NULL, id, &recipients, NULL);
    assert_int_equal(recipients, 2);
    schakel_close(&brandweer);

    const unsigned fields =
        H_F_AREA | H_F_ADDRESS | H_F_SEVERITY | H_F_OBSERVED_AT | H_F_SUMMARY | H_F_SOURCE_REF;
    const char *const receivers[] = {H_GEMEENTE, H_WOCO_MAASOEVER, NULL};
    /* woco-jekerdal is entitled by the rule but was not named: it must not
     * receive. */
    h_assert_nobody_else(env, receivers);
    for (size_t i = 0; receivers[i]; i++)
        expect_one_delivery(env, receivers[i], H_BRANDWEER, &sent, id, seq,
                            "brandweer-brandveiligheid", "Toezicht op brandveiligheid van woningen",
                            fields);
    h_done(env);
}

/* Without named recipients a signal goes to every partner a rule entitles. */
static void test_unnamed_recipients_reach_every_entitled_partner(void **state)
{
    h_env_t *env = *state;
    schakel_signal_t sent = {
        .kind = "brandonveilige-situatie",
        .theme = "brandveiligheid",
        .area = "WK093501",
        .summary = "Controle galerijflats: brandwerende deuren vastgezet",
    };
    schakel_client_t *brandweer = h_connect(env, H_BRANDWEER);
    uint32_t recipients = 0;
    (void)h_publish_ok(brandweer, &sent, NULL, NULL, &recipients, NULL);
    assert_int_equal(recipients, 3);
    schakel_close(&brandweer);
    const char *const receivers[] = {H_GEMEENTE, H_WOCO_MAASOEVER, H_WOCO_JEKERDAL, NULL};
    for (size_t i = 0; receivers[i]; i++)
        assert_int_equal(h_backlog_of(env, receivers[i]), 1);
    h_assert_nobody_else(env, receivers);
    h_done(env);
}

/* 3. The police report a burglary series at area level (no address) to the
 * municipality; the source reference is not in that rule and is removed. */
static void test_politie_woninginbraak_area_level_to_gemeente(void **state)
{
    h_env_t *env = *state;
    schakel_signal_t sent = {
        .kind = "inbraakreeks",
        .theme = "woninginbraak",
        .area = "WK093501",
        .severity = SCHAKEL_SEVERITY_MEDIUM,
        .observed_at = (int64_t)time(NULL) - 86400,
        .summary = "Zeven woninginbraken in twee weken, werkwijze: flipperen van achterdeuren",
        .source_ref = "BVH-2024-55120",
    };
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    uint8_t id[16];
    uint32_t recipients = 0;
    uint64_t seq = h_publish_ok(politie, &sent, NULL, id, &recipients, NULL);
    assert_int_equal(recipients, 1);
    schakel_close(&politie);
    expect_one_delivery(env, H_GEMEENTE, H_POLITIE, &sent, id, seq,
                        "politie-woninginbraak-gemeente",
                        "Gebiedsgerichte preventie van woninginbraak",
                        H_F_AREA | H_F_SEVERITY | H_F_OBSERVED_AT | H_F_SUMMARY);
    h_assert_nobody_else(env, NULL);
    h_done(env);
}

/* 4. What no rule allows is refused as a whole, with a text that says for
 * whom and what; nobody receives any of it. */
static void test_policy_refusals_name_sender_recipient_kind_theme(void **state)
{
    h_env_t *env = *state;
    const char *const to_politie[] = {"politie"};
    const char *const to_politie_and_brandweer[] = {"politie", "brandweer"};
    static const struct {
        const char *sender;
        const char *kind, *theme, *area, *case_ref;
        int named; /* 0 none, 1 politie, 2 politie + brandweer */
        const char *text_must_name[5];
    } rows[] = {
        /* a theme the fire service may not share at all */
        {H_BRANDWEER,
         "hennepkwekerij",
         "ondermijning",
         "BU09350101",
         NULL,
         1,
         {"brandweer", "politie", "hennepkwekerij", "ondermijning", NULL}},
        {H_BRANDWEER,
         "hennepkwekerij",
         "ondermijning",
         "BU09350101",
         NULL,
         0,
         {"brandweer", "hennepkwekerij", "ondermijning", NULL}},
        /* one intended recipient no rule allows spoils the whole signal */
        {H_WOCO_MAASOEVER,
         "hennepkwekerij",
         "ondermijning",
         "BU09350101",
         NULL,
         2,
         {"woco-maasoever", "brandweer", "hennepkwekerij", "ondermijning", NULL}},
        /* kind outside the rule's kinds */
        {H_POLITIE,
         "losse-inbraak",
         "woninginbraak",
         "WK093501",
         NULL,
         0,
         {"politie", "losse-inbraak", "woninginbraak", NULL}},
        /* area outside the rule's areas (Heerlen) */
        {H_POLITIE,
         "inbraakreeks",
         "woninginbraak",
         "GM0917",
         NULL,
         0,
         {"politie", "inbraakreeks", "woninginbraak", NULL}},
        /* rule requires a case reference */
        {H_POLITIE,
         "zorgmelding",
         "zorg",
         "BU09350101",
         NULL,
         0,
         {"politie", "zorgmelding", "zorg", NULL}},
    };
    schakel_client_t *clients[3] = {h_connect(env, H_BRANDWEER), h_connect(env, H_WOCO_MAASOEVER),
                                    h_connect(env, H_POLITIE)};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        schakel_client_t *client = strcmp(rows[i].sender, H_BRANDWEER) == 0        ? clients[0]
                                   : strcmp(rows[i].sender, H_WOCO_MAASOEVER) == 0 ? clients[1]
                                                                                   : clients[2];
        schakel_signal_t s = {.kind = rows[i].kind,
                              .theme = rows[i].theme,
                              .area = rows[i].area,
                              .case_ref = rows[i].case_ref,
                              .summary = "mag niet worden gedeeld"};
        if (rows[i].named == 1) {
            s.recipients = to_politie;
            s.n_recipients = 1;
        } else if (rows[i].named == 2) {
            s.recipients = to_politie_and_brandweer;
            s.n_recipients = 2;
        }
        const schakel_error_t *e = h_publish_refused(client, NULL, &s, "POLICY_DENIED");
        for (size_t w = 0; rows[i].text_must_name[w]; w++)
            if (!strstr(e->text, rows[i].text_must_name[w]))
                fail_msg("row %zu: refusal text \"%s\" does not name \"%s\"", i, e->text,
                         rows[i].text_must_name[w]);
    }
    h_assert_nobody_else(env, NULL);

    /* Named allowed recipients only: exactly those get it. */
    schakel_signal_t to_riec = sample_cannabis_farm();
    const char *const riec_only[] = {"riec"};
    to_riec.recipients = riec_only;
    to_riec.n_recipients = 1;
    uint32_t recipients = 0;
    (void)h_publish_ok(clients[1], &to_riec, NULL, NULL, &recipients, NULL);
    assert_int_equal(recipients, 2);
    const char *const riec[] = {H_RIEC, H_RIEC_CASEWORKER, NULL};
    for (size_t i = 0; riec[i]; i++)
        assert_int_equal(h_backlog_of(env, riec[i]), 1);
    h_assert_nobody_else(env, riec);

    /* The case-bound rule does allow the same signal with a case reference. */
    schakel_signal_t zorg = {.kind = "zorgmelding",
                             .theme = "zorg",
                             .area = "BU09350101",
                             .subject = SUBJECT,
                             .grounds = "Herhaalde meldingen van verwarring en vervuiling",
                             .case_ref = "VH-2024-031"};
    (void)h_publish_ok(clients[2], &zorg, NULL, NULL, &recipients, NULL);
    assert_int_equal(recipients, 1);
    assert_int_equal(h_backlog_of(env, H_VEILIGHEIDSHUIS), 1);
    for (size_t i = 0; i < 3; i++)
        schakel_close(&clients[i]);
    h_done(env);
}

/* 5. Unregistered keys (and operators, on the partner endpoint) cannot
 * connect; the broker keeps serving everyone else. */
static void test_unregistered_key_cannot_connect(void **state)
{
    h_env_t *env = *state;
    const char *const refused[] = {H_UNREGISTERED, H_OPERATOR};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        schakel_client_t *client = NULL;
        schakel_error_t err;
        schakel_status_t st = h_try_connect(env, h_key_file(env, refused[i]), &client, &err);
        if (st != SCHAKEL_ERR_AUTH)
            fail_msg("%s: expected SCHAKEL_ERR_AUTH, got %s (%s)", refused[i], schakel_strerror(st),
                     err.text);
        assert_null(client);
        assert_int_equal(err.status, SCHAKEL_ERR_AUTH);
    }
    /* Still serving: a registered partner connects, is told who it is, and
     * publishes. */
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    char principal[130], partner[130], role[130];
    assert_int_equal(schakel_whoami(politie, principal, partner, role, H_TIMEOUT_MS), SCHAKEL_OK);
    assert_string_equal(principal, H_POLITIE);
    schakel_signal_t s = {.kind = "inbraakreeks", .theme = "woninginbraak", .area = "GM0935"};
    uint32_t recipients = 0;
    (void)h_publish_ok(politie, &s, NULL, NULL, &recipients, NULL);
    assert_int_equal(recipients, 1);
    schakel_close(&politie);
    h_done(env);
}

/* The broker tells each principal who it authenticated it as. */
static void test_whoami_names_principal_partner_role(void **state)
{
    h_env_t *env = *state;
    static const struct {
        const char *principal, *partner, *role;
    } rows[] = {
        {H_GEMEENTE, "gemeente", "system"},
        {H_POLITIE, "politie", "system"},
        {H_OM, "om", "system"},
        {H_VEILIGHEIDSHUIS, "veiligheidshuis", "caseworker"},
        {H_RIEC, "riec", "system"},
        {H_RIEC_CASEWORKER, "riec", "caseworker"},
        {H_WOCO_MAASOEVER, "woco-maasoever", "system"},
        {H_WOCO_JEKERDAL, "woco-jekerdal", "system"},
        {H_BRANDWEER, "brandweer", "system"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        schakel_client_t *client = h_connect(env, rows[i].principal);
        char principal[130] = "", partner[130] = "", role[130] = "";
        assert_int_equal(schakel_whoami(client, principal, partner, role, H_TIMEOUT_MS),
                         SCHAKEL_OK);
        assert_string_equal(principal, rows[i].principal);
        assert_string_equal(partner, rows[i].partner);
        assert_string_equal(role, rows[i].role);
        schakel_close(&client);
    }
    h_done(env);
}

/* 9. The sender inside a signal must be the authenticated principal. */
static void test_sender_mismatch_is_refused(void **state)
{
    h_env_t *env = *state;
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    /* Would be allowed for the woco itself: only the forgery is at fault. */
    schakel_signal_t s = sample_cannabis_farm();
    const char *const forged[] = {H_WOCO_MAASOEVER, "politie/nep-koppeling", H_OM};
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++) {
        const schakel_error_t *e = h_publish_refused(politie, forged[i], &s, "SENDER_MISMATCH");
        assert_true(e->text[0] != '\0');
    }
    h_assert_nobody_else(env, NULL);
    /* The same connection still publishes under its own name. */
    schakel_signal_t own = {.kind = "inbraakreeks", .theme = "woninginbraak", .area = "GM0935"};
    uint32_t recipients = 0;
    (void)h_publish_ok(politie, &own, NULL, NULL, &recipients, NULL);
    assert_int_equal(recipients, 1);
    schakel_close(&politie);
    h_done(env);
}

/* 10. Invalid signals are refused with their specific reason; the broker
 * carries on and nothing is delivered. */
static void test_validation_refusals_through_the_broker(void **state)
{
    h_env_t *env = *state;
    static const struct {
        const char *what, *theme, *area, *postcode, *subject, *grounds;
        int64_t observed_offset;
        const char *reason;
    } rows[] = {
        {"unknown theme", "hennep", NULL, NULL, NULL, NULL, 0, "INVALID_THEME"},
        {"theme in capitals", "Ondermijning", NULL, NULL, NULL, NULL, 0, "INVALID_THEME"},
        {"municipality code too short", NULL, "GM935", NULL, NULL, NULL, 0, "INVALID_AREA"},
        {"neighbourhood code too long", NULL, "BU093501011", NULL, NULL, NULL, 0, "INVALID_AREA"},
        {"district code of four", NULL, "WK0935", NULL, NULL, NULL, 0, "INVALID_AREA"},
        {"lower-case area", NULL, "bu09350101", NULL, NULL, NULL, 0, "INVALID_AREA"},
        {"postcode starting with 0", NULL, NULL, "0211AB", NULL, NULL, 0, "INVALID_POSTCODE"},
        {"postcode with a space", NULL, NULL, "6211 AB", NULL, NULL, 0, "INVALID_POSTCODE"},
        {"postcode letters SA", NULL, NULL, "6211SA", NULL, NULL, 0, "INVALID_POSTCODE"},
        {"subject without grounds", NULL, NULL, NULL, SUBJECT, "", 0, "MISSING_GROUNDS"},
        {"subject that looks like a BSN", NULL, NULL, NULL, "123456782", NULL, 0, "INVALID_FIELD"},
        {"observed a day in the future", NULL, NULL, NULL, NULL, NULL, 86400, "INVALID_FIELD"},
    };
    schakel_client_t *woco = h_connect(env, H_WOCO_MAASOEVER);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        schakel_signal_t s = sample_cannabis_farm();
        if (rows[i].theme)
            s.theme = rows[i].theme;
        if (rows[i].area)
            s.area = rows[i].area;
        if (rows[i].postcode)
            s.postcode = rows[i].postcode;
        if (rows[i].subject)
            s.subject = rows[i].subject;
        if (rows[i].grounds)
            s.grounds = *rows[i].grounds ? rows[i].grounds : NULL;
        if (rows[i].observed_offset)
            s.observed_at = (int64_t)time(NULL) + rows[i].observed_offset;
        schakel_status_t st =
            schakel_publish(woco, NULL, &s, 1, NULL, NULL, NULL, NULL, H_TIMEOUT_MS);
        const schakel_error_t *e = schakel_last_error(woco);
        if (st != SCHAKEL_ERR_REFUSED || strcmp(e->reason_name, rows[i].reason) != 0)
            fail_msg("%s: expected %s, got %s %s (%s)", rows[i].what, rows[i].reason,
                     schakel_strerror(st), e->reason_name, e->text);
        assert_int_equal(e->item_index, 0);
    }
    h_assert_nobody_else(env, NULL);
    /* Still serving, on the same connection. */
    schakel_signal_t good = sample_cannabis_farm();
    uint32_t recipients = 0;
    (void)h_publish_ok(woco, &good, NULL, NULL, &recipients, NULL);
    assert_int_equal(recipients, 4);
    schakel_close(&woco);
    h_done(env);
}

/* A batch of items under one signature (a hash tree over five items, so the
 * split is uneven): every item is accepted and delivered with its index; a
 * batch with one bad item is refused whole, naming that item. */
static void test_batch_publish_is_signed_and_refused_whole(void **state)
{
    h_env_t *env = *state;
    enum { N = 5 };
    schakel_signal_t batch[N];
    char refs[N][24];
    for (int i = 0; i < N; i++) {
        snprintf(refs[i], sizeof refs[i], "BVH-2024-%05d", 61000 + i);
        batch[i] = (schakel_signal_t){.kind = "witwassen",
                                      .theme = "ondermijning",
                                      .area = "GM0935",
                                      .summary = "Verdachte transactie",
                                      .source_ref = refs[i]};
    }
    schakel_client_t *politie = h_connect(env, H_POLITIE);
    schakel_item_result_t results[N];
    uint8_t id[16];
    int duplicate = -1;
    assert_int_equal(
        schakel_publish(politie, NULL, batch, N, NULL, id, results, &duplicate, H_TIMEOUT_MS),
        SCHAKEL_OK);
    assert_int_equal(duplicate, 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(results[i].recipients, 1);
        if (i > 0)
            assert_true(results[i].seq > results[i - 1].seq);
    }

    /* Item 3 of a second batch is invalid: nothing of that batch is kept. */
    batch[3].area = "GM09350";
    uint64_t om_backlog_before = h_backlog_of(env, H_OM);
    assert_int_equal(om_backlog_before, N);
    schakel_status_t st =
        schakel_publish(politie, NULL, batch, N, NULL, NULL, NULL, NULL, H_TIMEOUT_MS);
    assert_int_equal(st, SCHAKEL_ERR_REFUSED);
    assert_string_equal(schakel_last_error(politie)->reason_name, "INVALID_AREA");
    assert_int_equal(schakel_last_error(politie)->item_index, 3);
    assert_int_equal(h_backlog_of(env, H_OM), N);
    schakel_close(&politie);

    schakel_client_t *om = h_connect(env, H_OM);
    for (int i = 0; i < N; i++) {
        schakel_delivery_t *d = h_receive(om);
        assert_memory_equal(d->message_id, id, 16);
        assert_int_equal(d->item_index, (uint32_t)i);
        assert_int_equal(d->item_seq, results[i].seq);
        assert_string_equal(d->source_ref, refs[i]);
        assert_int_equal(schakel_ack(om, d->seq), SCHAKEL_OK);
        schakel_delivery_free(&d);
    }
    assert_int_equal(h_backlog(om), 0);
    schakel_close(&om);
    h_assert_nobody_else(env, NULL);
    h_done(env);
}

/* Rules that give each kind of a woco's report its own recipients: a
 * drugslab reaches riec (both principals), a cannabis farm politie, human
 * trafficking all three partners, money laundering riec and politie. */
static const char seq_order_rules[] = "rules:\n"
                                      "  - id: seq-riec\n"
                                      "    from: [woco-maasoever]\n"
                                      "    to: [riec]\n"
                                      "    kinds: [drugslab, mensenhandel, witwassen]\n"
                                      "    themes: [ondermijning]\n"
                                      "    areas: [\"*\"]\n"
                                      "    purpose: \"Integrale analyse van ondermijning\"\n"
                                      "    legal_basis: \"Convenant RIEC Limburg, art. 5\"\n"
                                      "    fields: [area, summary, source_ref]\n"
                                      "    retention: 30d\n"
                                      "  - id: seq-politie\n"
                                      "    from: [woco-maasoever]\n"
                                      "    to: [politie]\n"
                                      "    kinds: [hennepkwekerij, mensenhandel, witwassen]\n"
                                      "    themes: [ondermijning]\n"
                                      "    areas: [\"*\"]\n"
                                      "    purpose: \"Opsporing van ondermijnende criminaliteit\"\n"
                                      "    legal_basis: \"Wpg art. 16 lid 1\"\n"
                                      "    fields: [area, summary, source_ref]\n"
                                      "    retention: 60d\n"
                                      "  - id: seq-gemeente\n"
                                      "    from: [woco-maasoever]\n"
                                      "    to: [gemeente]\n"
                                      "    kinds: [mensenhandel]\n"
                                      "    themes: [ondermijning]\n"
                                      "    areas: [\"*\"]\n"
                                      "    purpose: \"Bestuurlijke aanpak van ondermijning\"\n"
                                      "    legal_basis: \"Opiumwet art. 13b\"\n"
                                      "    fields: [area, source_ref]\n"
                                      "    retention: 90d\n";

static int setup_seq_order_broker(void **state)
{
    h_env_t *env = h_env_new_with_rules(seq_order_rules);
    h_broker_start(env);
    *state = env;
    return 0;
}

/* 11. The seqs of one publish are handed out recipient by recipient
 * (docs/PROTOCOL.md 7.6): each mailbox gets its deliveries of the publish
 * under consecutive seqs, in item order; the recipient that first appears
 * earlier in the publish gets the lower seqs; together they are one run
 * with no seq twice. Each item still has one "delivery.queued" entry,
 * listing its seqs ascending: the trail verifies. */
static void test_batch_publish_numbers_each_mailbox_consecutively(void **state)
{
    h_env_t *env = *state;
    enum { N = 4, RECIPIENTS = 4 };
    static const char *const kinds[N] = {"drugslab", "hennepkwekerij", "mensenhandel", "witwassen"};
    static const uint32_t want_recipients[N] = {2, 1, 4, 3};
    static const struct {
        const char *principal;
        size_t n;
        uint32_t items[N];
        uint32_t first_item; /* of the publish's items, the first it receives */
    } mailboxes[RECIPIENTS] = {
        {H_RIEC, 3, {0, 2, 3}, 0},
        {H_RIEC_CASEWORKER, 3, {0, 2, 3}, 0},
        {H_POLITIE, 3, {1, 2, 3}, 1},
        {H_GEMEENTE, 1, {2}, 2},
    };
    schakel_signal_t batch[N];
    char refs[N][24];
    for (int i = 0; i < N; i++) {
        snprintf(refs[i], sizeof refs[i], "WM-2026-%04d", 700 + i);
        batch[i] = (schakel_signal_t){.kind = kinds[i],
                                      .theme = "ondermijning",
                                      .area = "BU09350101",
                                      .summary = "Melding uit de wijk",
                                      .source_ref = refs[i]};
    }
    schakel_client_t *woco = h_connect(env, H_WOCO_MAASOEVER);
    schakel_item_result_t results[N];
    uint8_t id[16];
    assert_int_equal(schakel_publish(woco, NULL, batch, N, NULL, id, results, NULL, H_TIMEOUT_MS),
                     SCHAKEL_OK);
    schakel_close(&woco);
    size_t total = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(results[i].recipients, want_recipients[i]);
        total += results[i].recipients;
    }

    uint64_t first_seq[RECIPIENTS], last_seq[RECIPIENTS];
    for (size_t m = 0; m < RECIPIENTS; m++) {
        schakel_client_t *client = h_connect(env, mailboxes[m].principal);
        assert_int_equal(h_backlog(client), mailboxes[m].n);
        for (size_t k = 0; k < mailboxes[m].n; k++) {
            schakel_delivery_t *d = h_receive(client);
            uint32_t item = mailboxes[m].items[k];
            assert_memory_equal(d->message_id, id, 16);
            if (d->item_index != item)
                fail_msg("%s: delivery %zu is of item %u, not %u", mailboxes[m].principal, k,
                         d->item_index, item);
            assert_int_equal(d->item_seq, results[item].seq);
            assert_string_equal(d->source_ref, refs[item]);
            if (k == 0)
                first_seq[m] = d->seq;
            else if (d->seq != first_seq[m] + k)
                fail_msg("%s: seq %llu for its delivery %zu, not %llu: the mailbox's seqs of one "
                         "publish are not consecutive",
                         mailboxes[m].principal, (unsigned long long)d->seq, k,
                         (unsigned long long)(first_seq[m] + k));
            last_seq[m] = d->seq;
            assert_int_equal(schakel_ack(client, d->seq), SCHAKEL_OK);
            schakel_delivery_free(&d);
        }
        assert_int_equal(h_backlog(client), 0);
        schakel_close(&client);
    }
    h_assert_nobody_else(env, NULL);
    /* One "delivery.queued" entry per item, as with item-major seqs: an
     * entry lists ascending seqs, so an item written out of seq order
     * would have been split. */
    assert_int_equal(
        h_store_int(env, "SELECT count(*) FROM audit WHERE event = 'delivery.queued'", NULL), N);

    /* The runs, ordered by first seq, meet end to end, and come in the
     * order their recipients first appear in the publish. */
    uint64_t low = UINT64_MAX;
    for (size_t m = 0; m < RECIPIENTS; m++)
        if (first_seq[m] < low)
            low = first_seq[m];
    uint64_t next = low;
    for (size_t placed = 0; placed < RECIPIENTS; placed++) {
        size_t at = RECIPIENTS;
        for (size_t m = 0; m < RECIPIENTS; m++)
            if (first_seq[m] == next)
                at = m;
        if (at == RECIPIENTS)
            fail_msg("no mailbox's run starts at seq %llu: the publish's seqs have a gap",
                     (unsigned long long)next);
        for (size_t m = 0; m < RECIPIENTS; m++)
            if (mailboxes[m].first_item < mailboxes[at].first_item && first_seq[m] > first_seq[at])
                fail_msg("%s first appears before %s in the publish but got later seqs",
                         mailboxes[m].principal, mailboxes[at].principal);
        next = last_seq[at] + 1;
    }
    assert_int_equal(next - low, total);

    assert_int_equal(h_broker_stop(env), 0);
    const char *const verify[] = {"audit",        "verify",        "--store", env->store_path,
                                  "--broker-key", env->broker_pub, NULL};
    h_cli_result_t res;
    h_run_ctl_argv(env, NULL, NULL, verify, &res);
    h_expect_exit(&res, 0, "audit verify after a batch to several recipients");
    h_expect_text(res.out, "audit trail intact",
                  "audit verify after a batch to several recipients");
    h_cli_result_free(&res);
    h_done(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_woco_ondermijning_reaches_each_partner_with_its_fields,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_brandweer_brandveiligheid_to_gemeente_and_woco,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_unnamed_recipients_reach_every_entitled_partner,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_politie_woninginbraak_area_level_to_gemeente,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_policy_refusals_name_sender_recipient_kind_theme,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_unregistered_key_cannot_connect, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_whoami_names_principal_partner_role, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_sender_mismatch_is_refused, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_validation_refusals_through_the_broker, h_setup_broker,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_batch_publish_is_signed_and_refused_whole,
                                        h_setup_broker, h_teardown),
        cmocka_unit_test_setup_teardown(test_batch_publish_numbers_each_mailbox_consecutively,
                                        setup_seq_order_broker, h_teardown),
    };
    return cmocka_run_group_tests_name("integration: scenario", tests, NULL, NULL);
}
