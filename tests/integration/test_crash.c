/*
 * test_crash.c — crash safety: schakeld is killed with SIGKILL at random
 * moments while three publishers publish, a fourth sends 256-item bulk
 * publishes, a caseworker opens cases and adds notes, and five recipients
 * receive, and is restarted each time on the same port and store.
 *
 * The moments: after a publish went out, after an Accepted, after a
 * delivery; during a bulk publish; during a case command (open or note);
 * just after a recipient's acks were confirmed (below); during or just
 * after a policy reload (SIGHUP); just before or just after the broker
 * signs an audit checkpoint (every SCHAKEL_AUDIT_CHECKPOINT_ENTRIES
 * entries, a constant: the trail is read from the store to find one near).
 *
 * After each kill, while no broker runs: `schakelctl audit verify --store`
 * finds the trail intact and still holding the entry the previous
 * verification ended at (--expect), and SQLite's integrity_check of the
 * store, opened read-only from here (no sqlite3 tool needed), says ok.
 *
 * Afterwards every publish a publisher saw Accepted has reached every
 * principal its rules name, nothing else was delivered, no publish was
 * stored twice, each recipient got the items of one sender in publish order
 * (first receipts), and every case command answered is in its case once
 * and in order. And no delivery came again once its ack was confirmed: a
 * recipient asks for its backlog (a Heartbeat) after its acks, and when
 * the answer came on the connection the acks went out on, the broker had
 * read them, and committed them before it answered (docs/PROTOCOL.md 4.7:
 * an Ack takes effect with the next commit; 7.7: the answer counts every
 * Ack read before the Heartbeat). That holds on every connection of a
 * recipient's client, the ones after a kill too: the answer names its
 * Heartbeat (heartbeat_id, 4.9), so one left from a lost connection is
 * not taken for it. Only a power failure may bring such a delivery back
 * (4.7, 9), never a kill.
 *
 * Worker threads never call cmocka (its failures jump out of the main
 * thread): they record what they saw, and the main thread checks it once
 * they are joined. The crash moments come from a seeded PRNG whose seed is
 * printed first; SCHAKEL_CRASH_SEED=N replays them (thread timing is not
 * replayable, so a replay is likely, not certain, to hit the same state;
 * a checkpoint comes when the trail nears one, whatever was drawn).
 */
#include "harness.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "schakel_limits.h"

enum {
    /* Three publishers publish freely; the fourth (a second connection of
     * the police's principal, with ids of its own) sends bulk publishes
     * when the main thread asks for one, to crash the broker during it. */
    CRASH_PUBLISHERS = 4,
    CRASH_FREE_PUBLISHERS = 3,
    CRASH_BULK_PUBLISHER = 3,
    CRASH_BULKS = 3,
    CRASH_BULK_ITEMS = SCHAKEL_MAX_ITEMS,
    CRASH_RECIPIENTS = 5,
    CRASH_MESSAGES = 150,               /* publishes per free publisher */
    CRASH_MAX_ITEMS = CRASH_BULK_ITEMS, /* items of the largest batch */
    CRASH_MIN_CYCLES = 20,
    /* A crash comes after 1..16 more publishes sent or Accepted, or 1..33
     * more deliveries received (a bulk publish, a case command, confirmed
     * acks or a reload after 1..16 more sent), and at the latest after 18
     * more publish calls: some 450 / (18 + 3 in flight + 3 retries) = 19
     * crashes while the 450 publishes are made at the very least (the
     * rest of the 20 while the recipients drain), 35 to 55 in practice.
     * Fewer than the publishes alone would allow: each crash also runs the
     * checks of the store, and the test keeps to about 10 s. */
    CRASH_MAX_ADVANCE_PUBLISHES = 16,
    CRASH_MAX_ADVANCE_DELIVERIES = 33,
    CRASH_MAX_SENT_PER_CYCLE = 18,
    /* Near a checkpoint the wait is longer: the trail grows by a few
     * entries per publish. */
    CRASH_CHECKPOINT_SENT_PER_CYCLE = 64,
    /* A checkpoint is "near" within this many entries; a crash "just
     * before" one comes 1..16 entries short of it. */
    CRASH_CHECKPOINT_REACH = 120,
    CRASH_CHECKPOINT_SHORT = 16,
    /* Cases: each opened, then given notes, one command per request. */
    CRASH_CASES = 2,
    CRASH_NOTES_PER_CASE = 3,
    CRASH_CASE_COMMANDS = CRASH_CASES * (1 + CRASH_NOTES_PER_CASE),
    /* A recipient confirms its acks after this many deliveries (and when
     * nothing more comes); it remembers at most CRASH_PENDING_ACKS acks not
     * yet confirmed. */
    CRASH_CONFIRM_EVERY = 32,
    CRASH_PENDING_ACKS = 256,
    CRASH_EXAMPLES = 8, /* violations printed per kind */
};

#define CRASH_DEADLINE_MS 90000

/* The deadline, stretched by SCHAKEL_TEST_TIME_FACTOR (an integer 1..20)
 * when the broker runs under a slow tool such as valgrind (make
 * check-valgrind sets it). */
static int64_t crash_deadline_ms(void)
{
    return CRASH_DEADLINE_MS * h_time_factor();
}
/* Shorter than a restart and reconnect often takes, so that publishes are
 * also retried by the test itself, not only re-sent by the library. */
#define CRASH_PUBLISH_TIMEOUT_MS 300
#define CRASH_RECEIVE_TIMEOUT_MS 250
#define CRASH_BACKLOG_TIMEOUT_MS 2000
#define CRASH_CASE_TIMEOUT_MS 300
/* Backlog 0 answers a recipient with items missing takes as final. */
#define CRASH_EMPTY_ANSWERS 3
#define CRASH_FORBIDDEN_THEME "drugs" /* no rule below names it */
#define CRASH_CASE_TYPE "crash-casus"
#define CRASH_CASEWORKER H_VEILIGHEIDSHUIS /* leads the cases: nobody else sees them */

/* ------------------------------------------------------------------ the plan */

/* The policy of this test, as data: the YAML is written from it, and the
 * expected recipients are computed from it. Every recipient principal below
 * is a system or caseworker principal, the default to_roles of a rule. */
struct crash_rule {
    const char *id;
    const char *from; /* partner */
    const char *theme;
    const char *to[4]; /* partners, NULL-terminated */
};

static const struct crash_rule crash_rules[] = {
    {"politie-ondermijning", "politie", "ondermijning", {"om", "riec", NULL}},
    {"politie-woninginbraak", "politie", "woninginbraak", {"gemeente", "woco-jekerdal", NULL}},
    {"brandweer-brandveiligheid",
     "brandweer",
     "brandveiligheid",
     {"gemeente", "woco-jekerdal", NULL}},
    {"brandweer-overlast", "brandweer", "overlast", {"gemeente", "om", NULL}},
    {"woco-ondermijning", "woco-maasoever", "ondermijning", {"gemeente", "riec", "om", NULL}},
    {"woco-woonfraude", "woco-maasoever", "woonfraude", {"gemeente", "riec", NULL}},
};
#define CRASH_N_RULES (sizeof crash_rules / sizeof crash_rules[0])

struct crash_publisher_def {
    const char *principal;
    const char *themes[2]; /* item themes take turns */
};

static const struct crash_publisher_def crash_publisher_defs[CRASH_PUBLISHERS] = {
    {H_POLITIE, {"ondermijning", "woninginbraak"}},
    {H_BRANDWEER, {"brandveiligheid", "overlast"}},
    {H_WOCO_MAASOEVER, {"ondermijning", "woonfraude"}},
    {H_POLITIE, {"woninginbraak", "ondermijning"}}, /* the bulk publisher */
};

static const char *const crash_recipient_ids[CRASH_RECIPIENTS + 1] = {
    H_GEMEENTE, H_OM, H_RIEC, H_RIEC_CASEWORKER, H_WOCO_JEKERDAL, NULL,
};

/* Every principal with a mailbox of its own in this test: the recipients
 * and the caseworker, who gets the events of the cases it leads. */
static const char *const crash_mailbox_ids[] = {
    H_GEMEENTE, H_OM, H_RIEC, H_RIEC_CASEWORKER, H_WOCO_JEKERDAL, CRASH_CASEWORKER, NULL,
};

/* How many publishes publisher p makes. */
static int crash_messages_of(int p)
{
    return p == CRASH_BULK_PUBLISHER ? CRASH_BULKS : CRASH_MESSAGES;
}

/* Publish m of publisher p: one item, a batch of 3 or 4, or a bulk. */
static size_t crash_items_of(int p, int m)
{
    if (p == CRASH_BULK_PUBLISHER)
        return CRASH_BULK_ITEMS;
    return m % 4 == 1 ? 3 : m % 8 == 6 ? 4 : 1;
}

/* Every tenth publish carries (as its last item) a theme no rule allows: the
 * broker must refuse it whole, and nothing of it may ever be delivered. */
static int crash_is_forbidden(int p, int m)
{
    return p != CRASH_BULK_PUBLISHER && m % 10 == 7;
}

static const char *crash_theme_of(int p, int m, size_t item)
{
    if (crash_is_forbidden(p, m) && item + 1 == crash_items_of(p, m))
        return CRASH_FORBIDDEN_THEME;
    return crash_publisher_defs[p].themes[((size_t)m + item) % 2];
}

static void crash_source_ref(int p, int m, size_t item, char *out, size_t outlen)
{
    snprintf(out, outlen, "CRASH-%d-%03d-%zu", p, m, item);
}

/* Message ids are a pure function of (publisher, publish): a retry sends
 * the same id, and a receiver can tell which publish an id is. */
static const char crash_id_prefix[] = "crashtest";

static void crash_message_id(int p, int m, uint8_t id[16])
{
    memset(id, 0, 16);
    memcpy(id, crash_id_prefix, sizeof crash_id_prefix - 1);
    id[9] = (uint8_t)p;
    id[10] = (uint8_t)(m >> 8);
    id[11] = (uint8_t)m;
}

static int crash_decode_id(const uint8_t id[16], int *p, int *m)
{
    static const uint8_t zeros[4] = {0};
    if (memcmp(id, crash_id_prefix, sizeof crash_id_prefix - 1) != 0 ||
        memcmp(id + 12, zeros, sizeof zeros) != 0)
        return -1;
    *p = id[9];
    *m = id[10] << 8 | id[11];
    return *p < CRASH_PUBLISHERS && *m < crash_messages_of(*p) ? 0 : -1;
}

/* Is principal ("partner/name") one of partner's? */
static int crash_principal_of(const char *principal, const char *partner)
{
    size_t len = strlen(partner);
    return strncmp(principal, partner, len) == 0 && principal[len] == '/';
}

/* The rule that lets publisher p send theme, or NULL. */
static const struct crash_rule *crash_rule_for(int p, const char *theme)
{
    for (size_t i = 0; i < CRASH_N_RULES; i++)
        if (crash_principal_of(crash_publisher_defs[p].principal, crash_rules[i].from) &&
            strcmp(crash_rules[i].theme, theme) == 0)
            return &crash_rules[i];
    return NULL;
}

/* Must recipient r receive an item of publisher p with this theme? */
static int crash_expects(int r, int p, const char *theme)
{
    const struct crash_rule *rule = crash_rule_for(p, theme);
    for (size_t i = 0; rule && rule->to[i]; i++)
        if (crash_principal_of(crash_recipient_ids[r], rule->to[i]))
            return 1;
    return 0;
}

static unsigned crash_expected_recipients(int p, const char *theme)
{
    unsigned n = 0;
    for (int r = 0; r < CRASH_RECIPIENTS; r++)
        n += (unsigned)crash_expects(r, p, theme);
    return n;
}

/* The rules and case types of the policy (caller frees). The case type is
 * led by the caseworker's partner alone, without members: its events go
 * to the caseworker only, and the recipients see nothing of it. */
static char *crash_rules_yaml(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    fputs("rules:\n", out);
    for (size_t i = 0; i < CRASH_N_RULES; i++) {
        const struct crash_rule *rule = &crash_rules[i];
        fprintf(out, "  - id: %s\n    from: [%s]\n    to: [", rule->id, rule->from);
        for (size_t t = 0; rule->to[t]; t++)
            fprintf(out, "%s%s", t ? ", " : "", rule->to[t]);
        fprintf(out,
                "]\n    themes: [%s]\n    areas: [\"*\"]\n"
                "    purpose: \"Proef: wat aanvaard is, gaat bij een crash niet verloren\"\n"
                "    legal_basis: \"Testomgeving zonder persoonsgegevens\"\n"
                "    fields: [area, severity, observed_at, summary, source_ref]\n"
                "    retention: 30d\n",
                rule->theme);
    }
    fputs("case_types:\n"
          "  - id: " CRASH_CASE_TYPE "\n"
          "    purpose: \"Proef: een casus overleeft een crash\"\n"
          "    legal_basis: \"Testomgeving zonder persoonsgegevens\"\n"
          "    lead: [veiligheidshuis]\n"
          "    members: []\n"
          "    retention_after_close: 30d\n",
          out);
    assert_int_equal(fclose(out), 0);
    return text;
}

/* ------------------------------------------------------------------ shared state */

enum crash_publish_state {
    PUBLISH_UNSENT = 0,
    PUBLISH_PENDING,  /* sent, no final answer (only if the deadline passed) */
    PUBLISH_ACCEPTED, /* the publisher saw Accepted */
    PUBLISH_REFUSED,  /* the publisher saw Rejected */
};

typedef struct crash_run crash_run_t;

typedef struct crash_publisher {
    crash_run_t *run;
    int index;
    schakel_client_t *client;
    pthread_t thread;
    /* Written by the publisher thread; read by others only after it has
     * finished (publishers_running, under the run's lock). */
    uint8_t state[CRASH_MESSAGES];
    unsigned calls;      /* schakel_publish calls */
    unsigned timeouts;   /* calls that ended without an answer, then retried */
    unsigned duplicates; /* Accepted answers marked as a repeat */
    unsigned wrong;      /* answers other than the planned one */
    char example[256];   /* the first wrong answer */
} crash_publisher_t;

/* Violations a recipient can see on its own, per delivery. */
enum crash_violation {
    V_UNKNOWN_ID,    /* not a message id of this test, or another sender */
    V_MISROUTED,     /* an item whose rule does not name this recipient */
    V_CORRUPT,       /* content or rule id differs from what was published */
    V_OUT_OF_ORDER,  /* a first receipt before an earlier publish of that sender */
    V_SECOND_SEQ,    /* one item delivered under two mailbox seqs: stored twice */
    V_REPEAT_AS_NEW, /* a seq received before came again with redelivery false */
    V_AFTER_EMPTY,   /* a new item after the broker said the mailbox was empty */
    V_ACKED_AGAIN,   /* delivered again after its ack was confirmed */
    V_RECEIVE_ERROR, /* schakel_receive failed other than by a timeout */
    V_COUNT,
};

static const char *const crash_violation_names[V_COUNT] = {
    "deliveries with an unknown message id or sender",
    "deliveries to a recipient its rule does not name",
    "deliveries whose content or rule differs from the publish",
    "first receipts out of publish order",
    "items delivered under a second mailbox seq (stored twice)",
    "repeated deliveries not flagged as redelivery",
    "new items after the backlog was reported 0",
    "deliveries again after a Heartbeat answer on the connection of their Ack",
    "receive errors",
};

/* An ack sent and not yet confirmed: the item, and the number of
 * connections the client had made when it went out. */
typedef struct crash_ack {
    uint8_t p;
    uint16_t m, i;
    uint64_t connection;
} crash_ack_t;

typedef struct crash_recipient {
    crash_run_t *run;
    int index;
    schakel_client_t *client;
    pthread_t thread;
    uint32_t receipts[CRASH_PUBLISHERS][CRASH_MESSAGES][CRASH_MAX_ITEMS];
    uint64_t first_seq[CRASH_PUBLISHERS][CRASH_MESSAGES][CRASH_MAX_ITEMS];
    uint8_t confirmed[CRASH_PUBLISHERS][CRASH_MESSAGES][CRASH_MAX_ITEMS]; /* its ack confirmed */
    int last_first[CRASH_PUBLISHERS]; /* position of the last first receipt */
    uint64_t received;                /* every delivery, repeats included */
    uint64_t repeats;                 /* deliveries of an item received before */
    unsigned violations[V_COUNT];
    char examples[V_COUNT][256]; /* the first of each kind */
    int drained;                 /* backlog 0 after publishing ended */
    uint64_t backlog_answers;    /* backlog queries answered */
    uint64_t last_backlog;
    unsigned empty_answers; /* backlog 0 answers while items were missing */
    crash_ack_t pending[CRASH_PENDING_ACKS];
    size_t n_pending;
    unsigned since_confirm;    /* deliveries since the last confirmation */
    uint64_t acks_confirmed;   /* acks a Heartbeat answer confirmed */
    uint64_t acks_later;       /* of them, on a connection after the client's first */
    uint64_t acks_unconfirmed; /* acks not confirmed (see crash_confirm_acks) */
} crash_recipient_t;

/* One case command of the caseworker: command k opens case k / (1 + notes)
 * when k % (1 + notes) is 0, and otherwise adds that note to it. */
typedef struct crash_caseworker {
    crash_run_t *run;
    schakel_client_t *client;
    pthread_t thread;
    uint8_t state[CRASH_CASE_COMMANDS]; /* enum crash_publish_state */
    char case_ids[CRASH_CASES][SCHAKEL_CASE_ID_SIZE];
    unsigned calls, timeouts, duplicates, wrong;
    uint64_t recipients; /* mailboxes the answered commands' events went to */
    char example[256];
} crash_caseworker_t;

/* What the main thread counts or does to choose the moment of a crash.
 * Right after a publish went out the broker is likely verifying or
 * committing it; right after an Accepted it is likely between publishes;
 * right after a delivery it is likely handling acks. */
enum crash_moment {
    MOMENT_SENT,      /* publishes handed to schakel_publish (retries included) */
    MOMENT_ACCEPTED,  /* Accepted answers seen by the publishers */
    MOMENT_RECEIVED,  /* deliveries handed to the recipients */
    MOMENT_BULK,      /* bulk publishes handed to the connection (resends included) */
    MOMENT_CASE,      /* case commands about to be sent (retries included) */
    MOMENT_CONFIRMED, /* acks a Heartbeat answer confirmed (crash_confirm_acks) */
    MOMENT_RELOAD,    /* a SIGHUP: during the reload, or once it is logged */
    MOMENT_DRAWN,     /* the kinds above are drawn; the next comes by the trail */
    MOMENT_CHECKPOINT = MOMENT_DRAWN, /* an audit checkpoint near: before or after it */
    MOMENT_COUNT,
};

static const char *const crash_moment_names[MOMENT_COUNT] = {
    "just after a send",     "after an Accepted",        "after a delivery",
    "during a bulk publish", "during a case command",    "after acks were confirmed",
    "at a policy reload",    "near an audit checkpoint",
};

struct crash_run {
    h_env_t *env;
    pthread_mutex_t lock;
    pthread_cond_t changed; /* progress, requests or publishers_running changed */
    unsigned progress[MOMENT_COUNT];
    int publishers_running; /* publishing threads: publishers and the caseworker */
    int free_running;       /* of those, the free publishers */
    unsigned bulks_asked;   /* bulk publishes the main thread asked for */
    unsigned cases_asked;   /* case commands the main thread asked for */
    int stop;               /* the main thread gives up: every thread returns */
    int64_t deadline_ms;
    int64_t observed_at;
    char endpoint[128]; /* the broker's, for a recipient's new client */
    char anchor[160];   /* SEQ:HASH of the trail's last entry at the last verification */
    uint64_t verified;  /* verifications passed */
    crash_publisher_t publishers[CRASH_PUBLISHERS];
    crash_recipient_t recipients[CRASH_RECIPIENTS];
    crash_caseworker_t caseworker;
};

static int64_t crash_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int crash_should_stop(crash_run_t *run)
{
    pthread_mutex_lock(&run->lock);
    int stop = run->stop;
    pthread_mutex_unlock(&run->lock);
    return stop || crash_now_ms() >= run->deadline_ms;
}

static void crash_stop(crash_run_t *run)
{
    pthread_mutex_lock(&run->lock);
    run->stop = 1;
    pthread_cond_broadcast(&run->changed);
    pthread_mutex_unlock(&run->lock);
}

static int crash_publishing(crash_run_t *run)
{
    pthread_mutex_lock(&run->lock);
    int running = run->publishers_running;
    pthread_mutex_unlock(&run->lock);
    return running > 0;
}

/* Wakes the main thread, which may be waiting to crash the broker. */
static void crash_progress(crash_run_t *run, enum crash_moment moment)
{
    pthread_mutex_lock(&run->lock);
    run->progress[moment]++;
    pthread_cond_broadcast(&run->changed);
    pthread_mutex_unlock(&run->lock);
}

/* A publishing thread is done (free: one of the free publishers). */
static void crash_publisher_done(crash_run_t *run, int free)
{
    pthread_mutex_lock(&run->lock);
    run->publishers_running--;
    run->free_running -= free;
    pthread_cond_broadcast(&run->changed);
    pthread_mutex_unlock(&run->lock);
}

static struct timespec crash_timespec(int64_t ms)
{
    return (struct timespec){.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
}

/* Wait until the main thread asked for more than `done` (bulks or case
 * commands), the free publishers ended (the rest is done unasked), or the
 * run stops. Returns 0 to go on, -1 to stop. */
static int crash_await_request(crash_run_t *run, const unsigned *asked, unsigned done)
{
    struct timespec until = crash_timespec(run->deadline_ms);
    pthread_mutex_lock(&run->lock);
    while (*asked <= done && run->free_running > 0 && !run->stop &&
           pthread_cond_timedwait(&run->changed, &run->lock, &until) != ETIMEDOUT)
        ;
    int stop = run->stop;
    pthread_mutex_unlock(&run->lock);
    return stop || crash_should_stop(run) ? -1 : 0;
}

static void crash_example(char *out, size_t outlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void crash_example(char *out, size_t outlen, const char *fmt, ...)
{
    if (out[0] != '\0')
        return; /* keep the first */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, outlen, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ publishers */

/* Refusals after which the same publish may succeed (docs/PROTOCOL.md 8). */
static int crash_retryable(const schakel_error_t *e)
{
    return strcmp(e->reason_name, "INTERNAL_ERROR") == 0 ||
           strcmp(e->reason_name, "UNAVAILABLE") == 0;
}

/* One publish, retried with the same message id (so the same bytes: the
 * signature is deterministic) on a timeout or a retryable refusal until an
 * answer comes or the run ends. */
static schakel_status_t crash_publish_until_answered(crash_publisher_t *pub, int m,
                                                     const schakel_signal_t *signals, size_t n,
                                                     schakel_item_result_t *results, int *dup)
{
    uint8_t id[16];
    crash_message_id(pub->index, m, id);
    for (;;) {
        if (crash_should_stop(pub->run))
            return SCHAKEL_ERR_TIMEOUT;
        pub->calls++;
        crash_progress(pub->run, MOMENT_SENT);
        schakel_status_t st = schakel_publish(pub->client, NULL, signals, n, id, NULL, results, dup,
                                              CRASH_PUBLISH_TIMEOUT_MS);
        if (st != SCHAKEL_ERR_TIMEOUT &&
            !(st == SCHAKEL_ERR_REFUSED && crash_retryable(schakel_last_error(pub->client))))
            return st;
        pub->timeouts++;
    }
}

/* A bulk publish is handed to the connection (schakel_publish_send) before
 * the main thread hears of it, so that a crash then finds the broker
 * reading, verifying or committing its items; the library sends it again
 * after a reconnect, and the test again after a retryable refusal. */
static schakel_status_t crash_bulk_until_answered(crash_publisher_t *pub, int m,
                                                  const schakel_signal_t *signals, size_t n,
                                                  schakel_publish_answer_t *answer)
{
    uint8_t id[16];
    crash_message_id(pub->index, m, id);
    for (;;) {
        if (crash_should_stop(pub->run))
            return SCHAKEL_ERR_TIMEOUT;
        pub->calls++;
        crash_progress(pub->run, MOMENT_SENT);
        schakel_status_t st = schakel_publish_send(pub->client, NULL, signals, n, id, NULL);
        if (st != SCHAKEL_OK)
            return st;
        crash_progress(pub->run, MOMENT_BULK);
        while ((st = schakel_publish_wait(pub->client, id, answer, CRASH_PUBLISH_TIMEOUT_MS)) ==
                   SCHAKEL_ERR_TIMEOUT &&
               !crash_should_stop(pub->run))
            pub->timeouts++;
        if (st != SCHAKEL_OK) {
            (void)schakel_publish_forget(pub->client, id);
            return st;
        }
        if (!(answer->status == SCHAKEL_ERR_REFUSED && crash_retryable(&answer->error)))
            return answer->status;
        pub->timeouts++;
    }
}

/* Compare an answer with the plan; record the state. */
static void crash_take_answer(crash_publisher_t *pub, int m, schakel_status_t st, size_t n,
                              const schakel_item_result_t *results, int dup)
{
    const char *principal = crash_publisher_defs[pub->index].principal;
    const schakel_error_t *e = schakel_last_error(pub->client);
    int forbidden = crash_is_forbidden(pub->index, m);
    if (st == SCHAKEL_OK) {
        pub->state[m] = PUBLISH_ACCEPTED;
        pub->duplicates += dup != 0;
        for (size_t i = 0; i < n && !forbidden; i++) {
            unsigned want = crash_expected_recipients(pub->index, crash_theme_of(pub->index, m, i));
            if (results[i].recipients != want || results[i].seq == 0) {
                pub->wrong++;
                crash_example(pub->example, sizeof pub->example,
                              "%s publish %d item %zu: Accepted with seq %" PRIu64
                              " for %u recipients; the policy names %u",
                              principal, m, i, results[i].seq, results[i].recipients, want);
            }
        }
    } else if (st == SCHAKEL_ERR_REFUSED) {
        pub->state[m] = PUBLISH_REFUSED;
    }
    int planned = forbidden
                      ? st == SCHAKEL_ERR_REFUSED && strcmp(e->reason_name, "POLICY_DENIED") == 0
                      : st == SCHAKEL_OK;
    if (!planned && !crash_should_stop(pub->run)) {
        pub->wrong++;
        crash_example(pub->example, sizeof pub->example, "%s publish %d%s: %s %s: %s", principal, m,
                      forbidden ? " (no rule allows it)" : "", schakel_strerror(st),
                      st == SCHAKEL_OK ? "" : e->reason_name,
                      st == SCHAKEL_OK ? "accepted" : e->text);
    }
}

/* The signals of publish m, with their strings in the caller's buffers. */
typedef struct crash_batch {
    schakel_signal_t signals[CRASH_MAX_ITEMS];
    char refs[CRASH_MAX_ITEMS][64];
    char summaries[CRASH_MAX_ITEMS][64];
} crash_batch_t;

static size_t crash_batch_fill(const crash_publisher_t *pub, int m, crash_batch_t *batch)
{
    size_t n = crash_items_of(pub->index, m);
    for (size_t i = 0; i < n; i++) {
        crash_source_ref(pub->index, m, i, batch->refs[i], sizeof batch->refs[i]);
        snprintf(batch->summaries[i], sizeof batch->summaries[i], "Proefsignaal %d van %s", m,
                 crash_publisher_defs[pub->index].principal);
        batch->signals[i] = (schakel_signal_t){
            .kind = "proefsignaal",
            .theme = crash_theme_of(pub->index, m, i),
            .area = "GM0935",
            .severity = SCHAKEL_SEVERITY_MEDIUM,
            .observed_at = pub->run->observed_at,
            .summary = batch->summaries[i],
            .source_ref = batch->refs[i],
        };
    }
    return n;
}

static void crash_publish_one(crash_publisher_t *pub, int m)
{
    crash_batch_t batch;
    schakel_publish_answer_t answer;
    size_t n = crash_batch_fill(pub, m, &batch);
    memset(&answer, 0, sizeof answer);
    pub->state[m] = PUBLISH_PENDING;
    schakel_status_t st;
    if (pub->index == CRASH_BULK_PUBLISHER)
        st = crash_bulk_until_answered(pub, m, batch.signals, n, &answer);
    else
        st = crash_publish_until_answered(pub, m, batch.signals, n, answer.results,
                                          &answer.duplicate);
    crash_take_answer(pub, m, st, n, answer.results, answer.duplicate);
    if (st == SCHAKEL_OK)
        crash_progress(pub->run, MOMENT_ACCEPTED);
}

static void *crash_publisher_main(void *arg)
{
    crash_publisher_t *pub = arg;
    for (int m = 0; m < CRASH_MESSAGES && !crash_should_stop(pub->run); m++)
        crash_publish_one(pub, m);
    crash_publisher_done(pub->run, 1);
    return NULL;
}

/* Bulk publishes go out when the main thread asks, the rest once the free
 * publishers are done. */
static void *crash_bulk_main(void *arg)
{
    crash_publisher_t *pub = arg;
    for (int m = 0; m < CRASH_BULKS; m++) {
        if (crash_await_request(pub->run, &pub->run->bulks_asked, (unsigned)m) != 0)
            break;
        crash_publish_one(pub, m);
    }
    crash_publisher_done(pub->run, 0);
    return NULL;
}

/* ------------------------------------------------------------------ recipients */

static void crash_violation(crash_recipient_t *rec, enum crash_violation kind,
                            const schakel_delivery_t *d, const char *what)
{
    rec->violations[kind]++;
    crash_example(rec->examples[kind], sizeof rec->examples[kind],
                  "%s got seq %" PRIu64 " (sender %s, item %u, source_ref %s, rule %s%s): %s",
                  crash_recipient_ids[rec->index], d->seq, d->sender ? d->sender : "-",
                  d->item_index, d->source_ref ? d->source_ref : "-", d->rule_id ? d->rule_id : "-",
                  d->redelivery ? ", redelivery" : "", what);
}

/* Is this delivery the item it claims to be, sent to the right principal?
 * Returns 0 and fills p, m, i if it can be counted. */
static int crash_check_delivery(crash_recipient_t *rec, const schakel_delivery_t *d, int *p, int *m,
                                size_t *i)
{
    if (d->is_case_event || crash_decode_id(d->message_id, p, m) != 0 || !d->sender ||
        strcmp(d->sender, crash_publisher_defs[*p].principal) != 0 ||
        d->item_index >= crash_items_of(*p, *m)) {
        crash_violation(rec, V_UNKNOWN_ID, d, "not an item any publisher of this test made");
        return -1;
    }
    *i = d->item_index;
    const char *theme = crash_theme_of(*p, *m, *i);
    if (!crash_expects(rec->index, *p, theme))
        crash_violation(rec, V_MISROUTED, d, "no rule names this recipient for it");
    char ref[64];
    crash_source_ref(*p, *m, *i, ref, sizeof ref);
    const struct crash_rule *rule = crash_rule_for(*p, theme);
    if (!d->source_ref || strcmp(d->source_ref, ref) != 0 || !d->theme ||
        strcmp(d->theme, theme) != 0 || !rule || !d->rule_id || strcmp(d->rule_id, rule->id) != 0)
        crash_violation(rec, V_CORRUPT, d, "differs from the published item or its rule");
    return 0;
}

/* Record a delivery; returns 0 and fills p, m, i if it is an item of this
 * test. `queued_before` says it may have been read before the answer
 * that confirmed its ack (crash_confirm_acks): such a copy is no
 * violation. */
static int crash_record(crash_recipient_t *rec, const schakel_delivery_t *d, int queued_before,
                        int *p, int *m, size_t *i)
{
    rec->received++;
    if (crash_check_delivery(rec, d, p, m, i) != 0)
        return -1;
    uint32_t *count = &rec->receipts[*p][*m][*i];
    if (*count == 0) {
        rec->first_seq[*p][*m][*i] = d->seq;
        if (rec->empty_answers > 0)
            crash_violation(rec, V_AFTER_EMPTY, d, "the broker had said the mailbox was empty");
        int position = *m * CRASH_MAX_ITEMS + (int)*i;
        if (position <= rec->last_first[*p])
            crash_violation(rec, V_OUT_OF_ORDER, d,
                            "an earlier item of a later publish came first");
        rec->last_first[*p] = position;
    } else {
        rec->repeats++;
        if (d->seq != rec->first_seq[*p][*m][*i])
            crash_violation(rec, V_SECOND_SEQ, d, "this item came before under another seq");
        else if (!d->redelivery)
            crash_violation(rec, V_REPEAT_AS_NEW, d, "a seq received before, flagged as new");
        if (rec->confirmed[*p][*m][*i] && !queued_before)
            crash_violation(rec, V_ACKED_AGAIN, d,
                            "its Ack was followed by a Heartbeat answer on the same connection");
    }
    (*count)++;
    return 0;
}

/* Take one delivery: record it, ack it, and remember the ack with the
 * number of connections made when it went out. */
static void crash_take_delivery(crash_recipient_t *rec, schakel_delivery_t *d, int queued_before)
{
    int p = 0, m = 0;
    size_t i = 0;
    crash_progress(rec->run, MOMENT_RECEIVED);
    int known = crash_record(rec, d, queued_before, &p, &m, &i) == 0;
    uint64_t connection = 0;
    if (schakel_connections_made(rec->client, &connection) != SCHAKEL_OK)
        connection = 0; /* never confirmed */
    /* A lost ack only means a redelivery, which the test counts. */
    if (schakel_ack(rec->client, d->seq) == SCHAKEL_OK && known && connection > 0) {
        if (rec->n_pending == CRASH_PENDING_ACKS) { /* the oldest goes unconfirmed */
            memmove(&rec->pending[0], &rec->pending[1],
                    (CRASH_PENDING_ACKS - 1) * sizeof(crash_ack_t));
            rec->n_pending--;
            rec->acks_unconfirmed++;
        }
        rec->pending[rec->n_pending++] = (crash_ack_t){
            .p = (uint8_t)p, .m = (uint16_t)m, .i = (uint16_t)i, .connection = connection};
    }
    rec->since_confirm++;
}

/* Confirm the acks sent since the last time: ask for the backlog (a
 * Heartbeat) on the connection they went out on. Its answer counts every
 * Ack the broker read before the Heartbeat, and leaves after the commit of
 * their turn (docs/PROTOCOL.md 4.7, 7.7): those deliveries must never come
 * again, the broker killed or not. The connection is the client's count of
 * connections made (schakel_connections_made): the same before the
 * Heartbeat and once its answer was read means the Heartbeat went out on
 * it and was answered there (libzmq tells of a handshake before the
 * connection hands on a frame, and the answer names its Heartbeat, 4.9,
 * so one left from an earlier connection does not end the call), and the
 * acks sent on it went before. Whatever connection of the client it is:
 * acks of the first and of those after a kill are confirmed alike; those
 * sent on an earlier one are not. Deliveries the broker sent before it
 * read the acks came before the answer and wait in the library's queue:
 * they are taken now (a zero timeout hands out the queue, and reads no
 * more than has arrived), and are no violation. */
static void crash_confirm_acks(crash_recipient_t *rec)
{
    uint64_t before = 0, after = 0, backlog = 0;
    size_t n = rec->n_pending;
    rec->n_pending = 0;
    rec->since_confirm = 0;
    if (n == 0)
        return;
    if (schakel_connections_made(rec->client, &before) != SCHAKEL_OK ||
        schakel_backlog(rec->client, &backlog, CRASH_BACKLOG_TIMEOUT_MS) != SCHAKEL_OK ||
        schakel_connections_made(rec->client, &after) != SCHAKEL_OK || after != before) {
        rec->acks_unconfirmed += n;
        return;
    }
    for (size_t k = 0; k < n; k++) {
        const crash_ack_t *ack = &rec->pending[k];
        if (ack->connection == before) {
            rec->confirmed[ack->p][ack->m][ack->i] = 1;
            rec->acks_confirmed++;
            rec->acks_later += before > 1;
        } else {
            rec->acks_unconfirmed++;
        }
    }
    crash_progress(rec->run, MOMENT_CONFIRMED);
    schakel_delivery_t *d = NULL;
    while (schakel_receive(rec->client, &d, 0) == SCHAKEL_OK) {
        crash_take_delivery(rec, d, 1);
        schakel_delivery_free(&d);
    }
}

/* Has this recipient received every item its publishers saw Accepted that
 * a rule sends it? Called only after publishing ended, when the publishers'
 * states no longer change. */
static int crash_complete(const crash_recipient_t *rec)
{
    const crash_run_t *run = rec->run;
    for (int p = 0; p < CRASH_PUBLISHERS; p++)
        for (int m = 0; m < crash_messages_of(p); m++)
            for (size_t i = 0; i < crash_items_of(p, m); i++)
                if (run->publishers[p].state[m] == PUBLISH_ACCEPTED &&
                    crash_expects(rec->index, p, crash_theme_of(p, m, i)) &&
                    rec->receipts[p][m][i] == 0)
                    return 0;
    return 1;
}

/* After publishing ended: is our mailbox empty (acks included) and every
 * expected item here? A backlog of 0 means nothing more is owed to us, so
 * after a few such answers whatever is still missing counts as lost (the
 * main thread reports it); an item arriving after all is a violation too. */
static int crash_drained(crash_recipient_t *rec)
{
    uint64_t backlog = UINT64_MAX;
    if (schakel_backlog(rec->client, &backlog, CRASH_BACKLOG_TIMEOUT_MS) != SCHAKEL_OK)
        return 0; /* the broker may be restarting: try again later */
    rec->backlog_answers++;
    rec->last_backlog = backlog;
    if (backlog != 0)
        return 0;
    if (crash_complete(rec))
        return 1;
    return ++rec->empty_answers >= CRASH_EMPTY_ANSWERS;
}

static void *crash_recipient_main(void *arg)
{
    crash_recipient_t *rec = arg;
    while (!crash_should_stop(rec->run)) {
        /* Read before receiving: a timeout after publishing ended is then
         * a quiet moment to ask for the backlog. */
        int publishing = crash_publishing(rec->run);
        schakel_delivery_t *d = NULL;
        schakel_status_t st = schakel_receive(rec->client, &d, CRASH_RECEIVE_TIMEOUT_MS);
        if (st == SCHAKEL_OK) {
            crash_take_delivery(rec, d, 0);
            schakel_delivery_free(&d);
            if (rec->since_confirm >= CRASH_CONFIRM_EVERY)
                crash_confirm_acks(rec);
            continue;
        }
        if (st != SCHAKEL_ERR_TIMEOUT) {
            rec->violations[V_RECEIVE_ERROR]++;
            crash_example(rec->examples[V_RECEIVE_ERROR], sizeof rec->examples[V_RECEIVE_ERROR],
                          "%s: receive: %s (%s)", crash_recipient_ids[rec->index],
                          schakel_strerror(st), schakel_last_error(rec->client)->text);
            continue;
        }
        crash_confirm_acks(rec);
        if (!publishing && crash_drained(rec)) {
            rec->drained = 1;
            break;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ cases */

/* Command ids are a pure function of the command, as message ids are. */
static void crash_command_id(unsigned k, uint8_t id[16])
{
    memset(id, 0, 16);
    memcpy(id, "crashcase", 9);
    id[10] = (uint8_t)k;
}

static void crash_note_text(unsigned c, unsigned note, char *out, size_t outlen)
{
    snprintf(out, outlen, "Notitie %u van proefcasus %u", note, c);
}

/* Send case command k until it is answered (with the same command id: the
 * broker answers a repeat with the original answer) or the run ends. */
static schakel_status_t crash_case_command(crash_caseworker_t *cw, unsigned k,
                                           schakel_case_result_t *result)
{
    unsigned c = k / (1 + CRASH_NOTES_PER_CASE), note = k % (1 + CRASH_NOTES_PER_CASE);
    uint8_t id[16];
    crash_command_id(k, id);
    schakel_case_options_t options = {.command_id = id};
    char title[64], text[64];
    snprintf(title, sizeof title, "Proefcasus %u", c);
    crash_note_text(c, note, text, sizeof text);
    schakel_case_open_t open = {.case_type = CRASH_CASE_TYPE, .area = "GM0935", .title = title};
    for (;;) {
        if (crash_should_stop(cw->run))
            return SCHAKEL_ERR_TIMEOUT;
        cw->calls++;
        crash_progress(cw->run, MOMENT_CASE);
        schakel_status_t st = note == 0
                                  ? schakel_case_open(cw->client, &open, &options, NULL, result,
                                                      CRASH_CASE_TIMEOUT_MS)
                                  : schakel_case_note(cw->client, cw->case_ids[c], text, NULL, 0,
                                                      &options, result, CRASH_CASE_TIMEOUT_MS);
        if (st != SCHAKEL_ERR_TIMEOUT &&
            !(st == SCHAKEL_ERR_REFUSED && crash_retryable(schakel_last_error(cw->client))))
            return st;
        cw->timeouts++;
    }
}

static void *crash_caseworker_main(void *arg)
{
    crash_caseworker_t *cw = arg;
    for (unsigned k = 0; k < CRASH_CASE_COMMANDS; k++) {
        if (crash_await_request(cw->run, &cw->run->cases_asked, k) != 0)
            break;
        unsigned c = k / (1 + CRASH_NOTES_PER_CASE);
        if (k % (1 + CRASH_NOTES_PER_CASE) != 0 && cw->case_ids[c][0] == '\0')
            continue; /* its case was never opened: counted below as unsent */
        schakel_case_result_t result;
        memset(&result, 0, sizeof result);
        cw->state[k] = PUBLISH_PENDING;
        schakel_status_t st = crash_case_command(cw, k, &result);
        if (st == SCHAKEL_OK) {
            cw->state[k] = PUBLISH_ACCEPTED;
            cw->duplicates += result.duplicate != 0;
            cw->recipients += result.recipients;
            if (k % (1 + CRASH_NOTES_PER_CASE) == 0)
                snprintf(cw->case_ids[c], sizeof cw->case_ids[c], "%s", result.case_id);
        } else if (!crash_should_stop(cw->run)) {
            cw->state[k] = st == SCHAKEL_ERR_REFUSED ? PUBLISH_REFUSED : PUBLISH_PENDING;
            cw->wrong++;
            crash_example(cw->example, sizeof cw->example, "case command %u: %s %s: %s", k,
                          schakel_strerror(st), schakel_last_error(cw->client)->reason_name,
                          schakel_last_error(cw->client)->text);
        }
    }
    crash_publisher_done(cw->run, 0);
    return NULL;
}

/* ------------------------------------------------------------------ the store */

/* The audit trail's entries since its last checkpoint, and that
 * checkpoint's seq, read from the store beside the running broker
 * (read-only, a connection of its own each time: one held across a kill
 * would keep the store's shared memory for the next broker). Returns 0, or
 * -1 when it cannot be read now. */
static int crash_trail_gap(const h_env_t *env, int64_t *gap, int64_t *checkpoint)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    int rc = -1;
    if (sqlite3_open_v2(env->store_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_busy_timeout(db, 1000) == SQLITE_OK &&
        sqlite3_prepare_v2(db,
                           "SELECT (SELECT IFNULL(MAX(seq), 0) FROM audit), "
                           "(SELECT IFNULL(MAX(seq), 0) FROM audit_checkpoints)",
                           -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
        *checkpoint = sqlite3_column_int64(stmt, 1);
        *gap = sqlite3_column_int64(stmt, 0) - *checkpoint;
        rc = 0;
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return rc;
}

/* SQLite's integrity_check of the whole store, opened read-only while no
 * broker runs (what a kill left: the database and its WAL). Returns 0 when
 * it says ok, else -1 with the first rows of what it found in problem. */
static int crash_integrity_check(const h_env_t *env, char *problem, size_t problem_len)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_open_v2(env->store_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &stmt, NULL) != SQLITE_OK) {
        snprintf(problem, problem_len, "integrity_check of %s: %s", env->store_path,
                 db != NULL ? sqlite3_errmsg(db) : "no memory");
        sqlite3_finalize(stmt);
        sqlite3_close(db);
        return -1;
    }
    int rows = 0, ok = 0, rc;
    size_t used = (size_t)snprintf(problem, problem_len, "integrity_check of %s:", env->store_path);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *row = (const char *)sqlite3_column_text(stmt, 0);
        ok = ++rows == 1 && row != NULL && strcmp(row, "ok") == 0;
        if (rows <= 3 && used < problem_len)
            used += (size_t)snprintf(problem + used, problem_len - used, " %s",
                                     row != NULL ? row : "(null)");
    }
    if (rc != SQLITE_DONE && used < problem_len)
        snprintf(problem + used, problem_len - used, " (%s)", sqlite3_errmsg(db));
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    if (ok && rows == 1 && rc == SQLITE_DONE) {
        problem[0] = '\0';
        return 0;
    }
    return -1;
}

/* `schakelctl audit verify` on the store while no broker runs: the trail
 * must be intact, and still hold the entry the previous verification ended
 * at (its --expect anchor, kept for the next one). Returns 0, or -1 with
 * the tool's words in problem. */
static int crash_verify_trail(crash_run_t *run, char *problem, size_t problem_len)
{
    h_env_t *env = run->env;
    const char *args[] = {"audit",
                          "verify",
                          "--store",
                          env->store_path,
                          "--broker-key",
                          env->broker_pub,
                          run->anchor[0] ? "--expect" : NULL,
                          run->anchor,
                          NULL};
    h_cli_result_t res = {0};
    int status = h_run_ctl_argv(env, NULL, NULL, args, &res);
    const char *out = res.out != NULL ? res.out : "", *err = res.err != NULL ? res.err : "";
    const char *anchor = strstr(out, "--expect ");
    size_t len = anchor != NULL ? strcspn(anchor + 9, " \n") : 0;
    int rc = -1;
    if (status != 0)
        snprintf(problem, problem_len,
                 "schakelctl audit verify after a kill (previous anchor %s) exited %d: %s%s",
                 run->anchor[0] ? run->anchor : "none", status, out, err);
    else if (len == 0 || len >= sizeof run->anchor)
        snprintf(problem, problem_len, "schakelctl audit verify named no anchor: %s", out);
    else {
        memcpy(run->anchor, anchor + 9, len);
        run->anchor[len] = '\0';
        run->verified++;
        rc = 0;
    }
    h_cli_result_free(&res);
    return rc;
}

/* Kill the broker, check the store it left, and start another on the same
 * endpoint and store. Returns 0, or -1 with the reason in problem. */
static int crash_kill_check_restart(crash_run_t *run, char *problem, size_t problem_len)
{
    h_env_t *env = run->env;
    if (env->broker_pid <= 0 || env->endpoint[0] == '\0') {
        snprintf(problem, problem_len, "no broker is running to crash");
        return -1;
    }
    char endpoint[sizeof env->endpoint];
    snprintf(endpoint, sizeof endpoint, "%s", env->endpoint);
    h_broker_kill9(env);
    if (crash_verify_trail(run, problem, problem_len) != 0 ||
        crash_integrity_check(env, problem, problem_len) != 0)
        return -1;
    /* As h_broker_crash_restart: a client reconnecting to the free port can,
     * rarely, hold it as its own source port for a moment. */
    for (int attempt = 1; attempt <= H_RESTART_ATTEMPTS; attempt++) {
        if (h_broker_try_start_at(env, endpoint, problem, problem_len) == 0)
            return 0;
        fprintf(stderr, "crash: restart %d of %d on %s failed: %s\n", attempt, H_RESTART_ATTEMPTS,
                endpoint, problem);
    }
    return -1;
}

/* ------------------------------------------------------------------ main thread */

static uint64_t crash_splitmix(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t crash_seed(void)
{
    const char *given = getenv("SCHAKEL_CRASH_SEED");
    if (given && *given) {
        char *end = NULL;
        errno = 0;
        uint64_t seed = strtoull(given, &end, 10);
        if (errno != 0 || *end != '\0')
            fail_msg("SCHAKEL_CRASH_SEED=%s is not a decimal number", given);
        return seed;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 40;
}

static crash_run_t *crash_run_new(h_env_t *env)
{
    crash_run_t *run = calloc(1, sizeof *run);
    assert_non_null(run);
    run->env = env;
    pthread_condattr_t attr;
    assert_int_equal(pthread_condattr_init(&attr), 0);
    assert_int_equal(pthread_condattr_setclock(&attr, CLOCK_MONOTONIC), 0);
    assert_int_equal(pthread_cond_init(&run->changed, &attr), 0);
    pthread_condattr_destroy(&attr);
    assert_int_equal(pthread_mutex_init(&run->lock, NULL), 0);
    run->observed_at = (int64_t)time(NULL) - 3600;
    snprintf(run->endpoint, sizeof run->endpoint, "%s", env->endpoint);
    for (int p = 0; p < CRASH_PUBLISHERS; p++) {
        run->publishers[p].run = run;
        run->publishers[p].index = p;
        run->publishers[p].client = h_connect(env, crash_publisher_defs[p].principal);
    }
    for (int r = 0; r < CRASH_RECIPIENTS; r++) {
        run->recipients[r].run = run;
        run->recipients[r].index = r;
        run->recipients[r].client = h_connect(env, crash_recipient_ids[r]);
        for (int p = 0; p < CRASH_PUBLISHERS; p++)
            run->recipients[r].last_first[p] = -1;
    }
    run->caseworker.run = run;
    run->caseworker.client = h_connect(env, CRASH_CASEWORKER);
    return run;
}

static void crash_run_free(crash_run_t **runp)
{
    crash_run_t *run = *runp;
    for (int p = 0; p < CRASH_PUBLISHERS; p++)
        schakel_close(&run->publishers[p].client);
    for (int r = 0; r < CRASH_RECIPIENTS; r++)
        schakel_close(&run->recipients[r].client);
    schakel_close(&run->caseworker.client);
    pthread_cond_destroy(&run->changed);
    pthread_mutex_destroy(&run->lock);
    free(run);
    *runp = NULL;
}

/* The threads, in the order they start. */
enum {
    CRASH_THREADS = CRASH_RECIPIENTS + CRASH_PUBLISHERS + 1,
};

static pthread_t *crash_thread_of(crash_run_t *run, int t)
{
    if (t < CRASH_RECIPIENTS)
        return &run->recipients[t].thread;
    if (t < CRASH_RECIPIENTS + CRASH_PUBLISHERS)
        return &run->publishers[t - CRASH_RECIPIENTS].thread;
    return &run->caseworker.thread;
}

/* Start every worker; returns how many started (all, unless one failed). */
static int crash_start_threads(crash_run_t *run)
{
    run->publishers_running = CRASH_PUBLISHERS + 1;
    run->free_running = CRASH_FREE_PUBLISHERS;
    for (int t = 0; t < CRASH_THREADS; t++) {
        int rc;
        if (t < CRASH_RECIPIENTS)
            rc = pthread_create(crash_thread_of(run, t), NULL, crash_recipient_main,
                                &run->recipients[t]);
        else if (t < CRASH_RECIPIENTS + CRASH_PUBLISHERS) {
            int p = t - CRASH_RECIPIENTS;
            rc = pthread_create(crash_thread_of(run, t), NULL,
                                p == CRASH_BULK_PUBLISHER ? crash_bulk_main : crash_publisher_main,
                                &run->publishers[p]);
        } else
            rc = pthread_create(crash_thread_of(run, t), NULL, crash_caseworker_main,
                                &run->caseworker);
        if (rc != 0) {
            crash_stop(run); /* those started return: nobody waits for the others */
            return t;
        }
    }
    return CRASH_THREADS;
}

static void crash_join_threads(crash_run_t *run, int started)
{
    for (int t = 0; t < started; t++)
        pthread_join(*crash_thread_of(run, t), NULL);
}

/* Wait until the count of `moment` reaches target, the count of sent
 * publishes reaches sent_cap, publishing ends, or the run stops. Returns 1
 * while publishing goes on. */
static int crash_await_progress(crash_run_t *run, enum crash_moment moment, unsigned target,
                                unsigned sent_cap)
{
    struct timespec until = crash_timespec(run->deadline_ms);
    pthread_mutex_lock(&run->lock);
    while (run->progress[moment] < target && run->progress[MOMENT_SENT] < sent_cap &&
           run->publishers_running > 0 && !run->stop &&
           pthread_cond_timedwait(&run->changed, &run->lock, &until) != ETIMEDOUT)
        ;
    int publishing = run->publishers_running > 0;
    pthread_mutex_unlock(&run->lock);
    return publishing;
}

/* The next moment to crash at, drawn from the seed. */
typedef struct crash_plan {
    enum crash_moment moment;
    unsigned advance; /* of the moment's count; of Accepted answers after a bulk or case command */
    uint64_t variant; /* the reload's and the checkpoint's way, and how near */
} crash_plan_t;

typedef struct crash_cycles {
    unsigned total;
    unsigned while_publishing;
    unsigned after[MOMENT_COUNT]; /* crashes per kind of moment */
    unsigned reloads_logged;      /* crashes after a logged reload (the others: during it) */
    unsigned before_checkpoint, after_checkpoint;
    int64_t checkpoint_aimed; /* the checkpoint seq when one was last aimed at */
    char problem[1024];       /* why a check or restart failed, or "" */
} crash_cycles_t;

static int crash_count_now(crash_run_t *run, enum crash_moment moment)
{
    pthread_mutex_lock(&run->lock);
    unsigned n = run->progress[moment];
    pthread_mutex_unlock(&run->lock);
    return (int)n;
}

/* Ask a thread for one more bulk publish or case command (asked), then
 * wait until it is sent (moment) and `advance` more publishes are
 * Accepted (0: at once), so that the crash falls at some point of its
 * handling. Returns 1 while publishing goes on. */
static int crash_ask_and_await(crash_run_t *run, unsigned *asked, enum crash_moment moment,
                               unsigned advance)
{
    pthread_mutex_lock(&run->lock);
    unsigned sent_cap = run->progress[MOMENT_SENT] + CRASH_MAX_SENT_PER_CYCLE;
    unsigned target = run->progress[moment] + 1;
    (*asked)++;
    pthread_cond_broadcast(&run->changed);
    pthread_mutex_unlock(&run->lock);
    int publishing = crash_await_progress(run, moment, target, sent_cap);
    if (publishing && advance > 0)
        publishing = crash_await_progress(run, MOMENT_ACCEPTED,
                                          (unsigned)crash_count_now(run, MOMENT_ACCEPTED) + advance,
                                          sent_cap);
    return publishing;
}

/* SIGHUP the broker (its policy file unchanged: the reload keeps every
 * rule and case type, and is recorded in the trail), then crash during the
 * reload, or once its outcome is logged (variant odd): it must be taken.
 * Returns 1 while publishing goes on, 0 when it ended (no reload then), -1
 * with the reason in problem. */
static int crash_await_reload(crash_run_t *run, const crash_plan_t *plan, crash_cycles_t *cycles)
{
    h_env_t *env = run->env;
    if (!crash_publishing(run))
        return 0;
    long offset = h_log_offset(env);
    if (kill(env->broker_pid, SIGHUP) != 0) {
        snprintf(cycles->problem, sizeof cycles->problem, "SIGHUP: %s", strerror(errno));
        return -1;
    }
    if (plan->variant % 2 == 1) {
        int wait_ms = H_TIMEOUT_MS;
        if (h_await_log(env, offset, "event=policy.", wait_ms) != 0) {
            snprintf(cycles->problem, sizeof cycles->problem,
                     "no policy reload outcome logged within %d ms of a SIGHUP", wait_ms);
            return -1;
        }
        if (h_log_count(env, offset, "event=policy.reloaded ") != 1) {
            snprintf(cycles->problem, sizeof cycles->problem,
                     "the broker did not reload its unchanged policy (see its log)");
            return -1;
        }
        cycles->reloads_logged++;
    }
    return crash_publishing(run);
}

static unsigned crash_progress_total(crash_run_t *run)
{
    pthread_mutex_lock(&run->lock);
    unsigned total = 0;
    for (int k = 0; k < MOMENT_DRAWN; k++)
        total += run->progress[k];
    pthread_mutex_unlock(&run->lock);
    return total;
}

/* Wait until the workers made `steps` more progress of any kind, or
 * sent_cap publishes were sent, publishing ended, or the run stops.
 * Returns 1 when the caller may look again. */
static int crash_await_steps(crash_run_t *run, unsigned steps, unsigned sent_cap)
{
    struct timespec until = crash_timespec(run->deadline_ms);
    unsigned target = crash_progress_total(run) + steps;
    pthread_mutex_lock(&run->lock);
    for (;;) {
        unsigned total = 0;
        for (int k = 0; k < MOMENT_DRAWN; k++)
            total += run->progress[k];
        if (total >= target || run->progress[MOMENT_SENT] >= sent_cap ||
            run->publishers_running == 0 || run->stop ||
            pthread_cond_timedwait(&run->changed, &run->lock, &until) == ETIMEDOUT)
            break;
    }
    int again = run->progress[MOMENT_SENT] < sent_cap && run->publishers_running > 0 && !run->stop;
    pthread_mutex_unlock(&run->lock);
    return again && crash_now_ms() < run->deadline_ms;
}

/* Crash just before the broker signs the next audit checkpoint (the trail
 * 1..CRASH_CHECKPOINT_SHORT entries short of it, variant even) or just
 * after it signed it (variant odd), the trail read again after every few
 * steps of the workers. `checkpoint` is the last checkpoint's seq when the
 * moment was chosen. Returns 1 while publishing goes on. */
static int crash_await_checkpoint(crash_run_t *run, const crash_plan_t *plan, int64_t checkpoint,
                                  crash_cycles_t *cycles)
{
    int before = plan->variant % 2 == 0;
    int64_t short_by = 1 + (int64_t)(plan->variant / 2 % CRASH_CHECKPOINT_SHORT);
    int64_t due = (int64_t)SCHAKEL_AUDIT_CHECKPOINT_ENTRIES - short_by;
    pthread_mutex_lock(&run->lock);
    unsigned sent_cap = run->progress[MOMENT_SENT] + CRASH_CHECKPOINT_SENT_PER_CYCLE;
    pthread_mutex_unlock(&run->lock);
    for (;;) {
        int64_t gap = 0, now = 0;
        if (crash_trail_gap(run->env, &gap, &now) == 0) {
            if (now != checkpoint) {
                cycles->after_checkpoint++;
                break;
            }
            if (before && gap >= due) {
                cycles->before_checkpoint++;
                break;
            }
        }
        if (!crash_await_steps(run, 4, sent_cap))
            break;
    }
    return crash_publishing(run);
}

/* Bring about the moment of the plan: its count advanced (for a bulk
 * publish, a case command or a reload, the publishes sent, after which
 * it is asked for or made: so every kind of cycle lets about as many
 * publishes go), or the checkpoint near. A bulk publish or case command
 * when none is left is a plain send. Returns 1 while publishing goes on,
 * 0 when it ended, -1 on a problem (in cycles). */
static int crash_await_moment(crash_run_t *run, crash_plan_t *plan, int64_t checkpoint,
                              crash_cycles_t *cycles)
{
    if (plan->moment == MOMENT_CHECKPOINT)
        return crash_await_checkpoint(run, plan, checkpoint, cycles);
    if ((plan->moment == MOMENT_BULK && run->bulks_asked >= CRASH_BULKS) ||
        (plan->moment == MOMENT_CASE && run->cases_asked >= CRASH_CASE_COMMANDS))
        plan->moment = MOMENT_SENT;
    enum crash_moment counted = plan->moment <= MOMENT_RECEIVED ? plan->moment : MOMENT_SENT;
    pthread_mutex_lock(&run->lock);
    unsigned target = run->progress[counted] + plan->advance;
    unsigned sent_cap = run->progress[MOMENT_SENT] + CRASH_MAX_SENT_PER_CYCLE;
    pthread_mutex_unlock(&run->lock);
    int publishing = crash_await_progress(run, counted, target, sent_cap);
    if (!publishing || crash_should_stop(run))
        return publishing;
    switch (plan->moment) {
    case MOMENT_BULK:
        return crash_ask_and_await(run, &run->bulks_asked, MOMENT_BULK,
                                   (unsigned)(plan->variant % 3));
    case MOMENT_CASE:
        return crash_ask_and_await(run, &run->cases_asked, MOMENT_CASE,
                                   (unsigned)(plan->variant % 3));
    case MOMENT_CONFIRMED: /* the broker may have committed nothing after them */
        return crash_await_progress(run, MOMENT_CONFIRMED,
                                    (unsigned)crash_count_now(run, MOMENT_CONFIRMED) + 1, sent_cap);
    case MOMENT_RELOAD:
        return crash_await_reload(run, plan, cycles);
    default:
        return publishing;
    }
}

/* Kill and restart the broker at a random moment (a random kind of
 * progress, advanced by a random amount; a bulk publish, a case command,
 * confirmed acks or a reload brought about after such an advance; an audit
 * checkpoint whenever the trail nears one), until publishing has ended and at least
 * CRASH_MIN_CYCLES crashes happened. The cap on publishes sent per cycle makes sure most crashes
 * come while publishing; should it end early anyway, the remaining crashes
 * happen while the recipients drain. Every draw comes from the seed, one
 * cycle after the other, whatever the moment turns out to be. */
static void crash_cycle(crash_run_t *run, uint64_t seed, crash_cycles_t *cycles)
{
    uint64_t prng = seed;
    cycles->checkpoint_aimed = -1;
    for (;;) {
        crash_plan_t plan;
        plan.moment = (enum crash_moment)(crash_splitmix(&prng) % MOMENT_DRAWN);
        unsigned max_advance = plan.moment == MOMENT_RECEIVED ? CRASH_MAX_ADVANCE_DELIVERIES
                                                              : CRASH_MAX_ADVANCE_PUBLISHES;
        plan.advance = 1 + (unsigned)(crash_splitmix(&prng) % max_advance);
        plan.variant = crash_splitmix(&prng);
        int64_t gap = 0, checkpoint = 0;
        if (crash_trail_gap(run->env, &gap, &checkpoint) == 0 &&
            gap + CRASH_CHECKPOINT_REACH >= (int64_t)SCHAKEL_AUDIT_CHECKPOINT_ENTRIES &&
            checkpoint != cycles->checkpoint_aimed) {
            plan.moment = MOMENT_CHECKPOINT;
            cycles->checkpoint_aimed = checkpoint;
        }
        int publishing = crash_await_moment(run, &plan, checkpoint, cycles);
        if (publishing < 0) {
            crash_stop(run);
            return;
        }
        if (crash_should_stop(run) || (!publishing && cycles->total >= CRASH_MIN_CYCLES))
            return;
        if (crash_kill_check_restart(run, cycles->problem, sizeof cycles->problem) != 0) {
            crash_stop(run);
            return;
        }
        cycles->total++;
        cycles->while_publishing += (unsigned)publishing;
        cycles->after[plan.moment] += (unsigned)publishing;
    }
}

/* ------------------------------------------------------------------ checks */

typedef struct crash_totals {
    unsigned publishes, batches, items, accepted, refused, forbidden, pending, calls, timeouts,
        duplicates_answered, case_commands;
    uint64_t expected, delivered, received, repeats, missing, phantom, acks_confirmed, acks_later,
        acks_unconfirmed;
} crash_totals_t;

static void crash_count_publishers(const crash_run_t *run, crash_totals_t *t)
{
    for (int p = 0; p < CRASH_PUBLISHERS; p++) {
        const crash_publisher_t *pub = &run->publishers[p];
        t->calls += pub->calls;
        t->timeouts += pub->timeouts;
        t->duplicates_answered += pub->duplicates;
        for (int m = 0; m < crash_messages_of(p); m++) {
            if (pub->state[m] == PUBLISH_UNSENT)
                continue;
            t->publishes++;
            t->batches += crash_items_of(p, m) > 1;
            t->forbidden += (unsigned)crash_is_forbidden(p, m);
            t->items += (unsigned)crash_items_of(p, m);
            t->accepted += pub->state[m] == PUBLISH_ACCEPTED;
            t->refused += pub->state[m] == PUBLISH_REFUSED;
            t->pending += pub->state[m] == PUBLISH_PENDING;
        }
    }
    for (unsigned k = 0; k < CRASH_CASE_COMMANDS; k++)
        t->case_commands += run->caseworker.state[k] == PUBLISH_ACCEPTED;
}

/* Check one item at one recipient: (a) an item its publisher saw Accepted
 * reached every recipient its rule names; (b) nothing reached anyone unless
 * its publisher saw it Accepted. */
static void crash_check_item(const crash_run_t *run, int r, int p, int m, size_t i,
                             crash_totals_t *t)
{
    uint8_t state = run->publishers[p].state[m];
    int accepted = state == PUBLISH_ACCEPTED;
    int expected = accepted && crash_expects(r, p, crash_theme_of(p, m, i));
    int got = run->recipients[r].receipts[p][m][i] > 0;
    const char *recipient = crash_recipient_ids[r], *sender = crash_publisher_defs[p].principal;
    t->expected += (unsigned)expected;
    t->delivered += (unsigned)(expected && got);
    if (expected && !got && t->missing++ < CRASH_EXAMPLES)
        fprintf(stderr,
                "crash: LOST: %s never received item %zu of %s publish %d of publisher %d "
                "(Accepted)\n",
                recipient, i, sender, m, p);
    if (got && !accepted && t->phantom++ < CRASH_EXAMPLES)
        fprintf(stderr,
                "crash: NOT ACCEPTED BUT DELIVERED: %s received item %zu of %s publish %d of "
                "publisher %d, which its publisher saw %s\n",
                recipient, i, sender, m, p,
                state == PUBLISH_REFUSED ? "Rejected" : "never answered");
}

static void crash_count_deliveries(const crash_run_t *run, crash_totals_t *t)
{
    for (int r = 0; r < CRASH_RECIPIENTS; r++) {
        const crash_recipient_t *rec = &run->recipients[r];
        t->received += rec->received;
        t->repeats += rec->repeats;
        t->acks_confirmed += rec->acks_confirmed;
        t->acks_unconfirmed += rec->acks_unconfirmed;
        t->acks_later += rec->acks_later;
        for (int p = 0; p < CRASH_PUBLISHERS; p++)
            for (int m = 0; m < crash_messages_of(p); m++)
                for (size_t i = 0; i < crash_items_of(p, m); i++)
                    crash_check_item(run, r, p, m, i, t);
    }
}

static void crash_print_totals(const crash_run_t *run, const crash_cycles_t *cycles,
                               const crash_totals_t *t, int64_t took_ms)
{
    printf("crash: %u kill -9/restart cycles, %u while publishing:", cycles->total,
           cycles->while_publishing);
    for (int k = 0; k < MOMENT_COUNT; k++)
        printf("%s %u %s", k ? "," : "", cycles->after[k], crash_moment_names[k]);
    printf(" (reloads: %u once logged, the others during it; checkpoints: %u just before, %u "
           "just after)\n",
           cycles->reloads_logged, cycles->before_checkpoint, cycles->after_checkpoint);
    printf("crash: after each kill the trail verified (%" PRIu64
           " times, each still holding the last one's end) and integrity_check ok\n",
           run->verified);
    printf("crash: %u publishes (%u batches, %u bulks of %d, %u items) in %u calls, %u retried "
           "after a timeout, %u answered as repeats; %u case commands answered in %u calls\n",
           t->publishes, t->batches, run->bulks_asked, CRASH_BULK_ITEMS, t->items, t->calls,
           t->timeouts, t->duplicates_answered, t->case_commands, run->caseworker.calls);
    printf("crash: %u accepted, %u refused (%u planned), %u without an answer; deliveries "
           "expected %" PRIu64 ", delivered %" PRIu64 ", missing %" PRIu64
           ", delivered without Accepted %" PRIu64 "; %" PRIu64 " received, of which %" PRIu64
           " repeats\n",
           t->accepted, t->refused, t->forbidden, t->pending, t->expected, t->delivered, t->missing,
           t->phantom, t->received, t->repeats);
    printf("crash: %" PRIu64 " acks confirmed by a Heartbeat answer on their connection (%" PRIu64
           " on a connection after a kill), %" PRIu64 " not (a reconnect came between)\n",
           t->acks_confirmed, t->acks_later, t->acks_unconfirmed);
    printf("crash: %.1f s from the start of publishing until every thread finished\n",
           (double)took_ms / 1000.0);

    fflush(stdout);
}

/* Per-delivery violations and publisher surprises; returns how many. */
static unsigned crash_report_violations(const crash_run_t *run)
{
    unsigned total = 0;
    for (int p = 0; p < CRASH_PUBLISHERS; p++) {
        const crash_publisher_t *pub = &run->publishers[p];
        total += pub->wrong;
        if (pub->wrong)
            fprintf(stderr, "crash: publisher %d (%s): %u unplanned answers, first: %s\n", p,
                    crash_publisher_defs[p].principal, pub->wrong, pub->example);
    }
    for (int r = 0; r < CRASH_RECIPIENTS; r++) {
        const crash_recipient_t *rec = &run->recipients[r];
        for (int v = 0; v < V_COUNT; v++) {
            total += rec->violations[v];
            if (rec->violations[v])
                fprintf(stderr, "crash: %s: %u %s, first: %s\n", crash_recipient_ids[r],
                        rec->violations[v], crash_violation_names[v], rec->examples[v]);
        }
        if (!rec->drained) {
            total++;
            fprintf(stderr,
                    "crash: %s did not see an empty mailbox in time (%" PRIu64
                    " backlog answers, the last %" PRIu64 ")\n",
                    crash_recipient_ids[r], rec->backlog_answers, rec->last_backlog);
        }
    }
    return total;
}

/* Every case command answered is in its case once, in order, and nothing
 * else is: each case is its opening and its notes. Returns the problems
 * found (printed). */
static unsigned crash_check_cases(crash_run_t *run)
{
    crash_caseworker_t *cw = &run->caseworker;
    unsigned problems = cw->wrong;
    if (cw->wrong)
        fprintf(stderr, "crash: %s: %u unplanned answers to case commands, first: %s\n",
                CRASH_CASEWORKER, cw->wrong, cw->example);
    for (unsigned c = 0; c < CRASH_CASES; c++) {
        unsigned first = c * (1 + CRASH_NOTES_PER_CASE);
        for (unsigned k = first; k <= first + CRASH_NOTES_PER_CASE; k++)
            if (cw->state[k] != PUBLISH_ACCEPTED && problems++ < CRASH_EXAMPLES)
                fprintf(stderr, "crash: case command %u was not answered as done\n", k);
        if (cw->state[first] != PUBLISH_ACCEPTED)
            continue;
        schakel_case_view_t *view = NULL;
        if (schakel_case_show(cw->client, cw->case_ids[c], &view, H_TIMEOUT_MS) != SCHAKEL_OK) {
            fprintf(stderr, "crash: case %s cannot be shown: %s\n", cw->case_ids[c],
                    schakel_last_error(cw->client)->text);
            problems++;
            continue;
        }
        size_t e = 0;
        int wrong = 0;
        for (unsigned note = 0; note <= CRASH_NOTES_PER_CASE; note++) {
            if (cw->state[first + note] != PUBLISH_ACCEPTED)
                continue;
            char text[64];
            crash_note_text(c, note, text, sizeof text);
            const schakel_case_event_t *ev = e < view->n_events ? &view->events[e] : NULL;
            int want = note == 0 ? SCHAKEL_CASE_EVENT_OPENED : SCHAKEL_CASE_EVENT_NOTE;
            if (ev == NULL || ev->kind != want ||
                (note > 0 && (ev->text == NULL || strcmp(ev->text, text) != 0))) {
                fprintf(stderr,
                        "crash: case %s: event %zu is %s \"%s\", where the %s answered as done "
                        "belongs\n",
                        cw->case_ids[c], e + 1,
                        ev != NULL ? schakel_case_event_kind_name(ev->kind) : "missing",
                        ev != NULL && ev->text != NULL ? ev->text : "",
                        note == 0 ? "opening" : text);
                problems++;
                wrong = 1;
                break;
            }
            e++;
        }
        if (!wrong && e != view->n_events) {
            fprintf(stderr, "crash: case %s has %zu events, %zu answered as done\n",
                    cw->case_ids[c], view->n_events, e);
            problems++;
        }
        schakel_case_view_free(&view);
    }
    /* Each answered command's event queued once to each mailbox it named. */
    uint64_t backlog = h_backlog_of(run->env, CRASH_CASEWORKER);
    if (backlog != cw->recipients) {
        fprintf(stderr,
                "crash: %s has %" PRIu64 " case events waiting; the answers named %" PRIu64 "\n",
                CRASH_CASEWORKER, backlog, cw->recipients);
        problems++;
    }
    return problems;
}

/* ------------------------------------------------------------------ the test */

static void test_accepted_survives_random_kill9(void **state)
{
    h_env_t *env = *state;
    uint64_t seed = crash_seed();
    printf("crash: seed %" PRIu64 " (SCHAKEL_CRASH_SEED=%" PRIu64 " replays the crash points)\n",
           seed, seed);
    fflush(stdout);
    crash_run_t *run = crash_run_new(env);
    int64_t started_ms = crash_now_ms();
    run->deadline_ms = started_ms + crash_deadline_ms();

    int started = crash_start_threads(run);
    crash_cycles_t cycles = {0};
    if (started == CRASH_THREADS)
        crash_cycle(run, seed, &cycles);
    crash_join_threads(run, started);
    int64_t took_ms = crash_now_ms() - started_ms;
    if (started != CRASH_THREADS) {
        crash_run_free(&run);
        fail_msg("could not start worker thread %d", started);
    }

    if (cycles.problem[0])
        fprintf(stderr,
                "crash: the run was cut short (at crash %u: %s); what follows counts an "
                "unfinished run\n",
                cycles.total + 1, cycles.problem);
    crash_totals_t totals = {0};
    crash_count_publishers(run, &totals);
    crash_count_deliveries(run, &totals);
    crash_print_totals(run, &cycles, &totals, took_ms);
    unsigned violations = crash_report_violations(run);
    unsigned case_problems = cycles.problem[0] ? 0 : crash_check_cases(run);
    crash_run_free(&run);

    if (cycles.problem[0])
        fail_msg("at crash %u: %s", cycles.total + 1, cycles.problem);
    if (took_ms >= crash_deadline_ms())
        fail_msg("the crash test did not finish within %lld ms", (long long)crash_deadline_ms());
    if (totals.missing || totals.phantom)
        fail_msg("%" PRIu64 " Accepted deliveries lost, %" PRIu64
                 " deliveries of publishes never Accepted (see above)",
                 totals.missing, totals.phantom);
    if (violations)
        fail_msg("%u violations (see above)", violations);
    if (case_problems)
        fail_msg("%u problems with the cases (see above)", case_problems);
    if (cycles.total < CRASH_MIN_CYCLES)
        fail_msg("only %u crash cycles, want at least %d", cycles.total, CRASH_MIN_CYCLES);
    assert_int_equal(totals.publishes, CRASH_FREE_PUBLISHERS * CRASH_MESSAGES + CRASH_BULKS);
    assert_int_equal(totals.pending, 0);
    assert_int_equal(totals.case_commands, CRASH_CASE_COMMANDS);
    assert_true(totals.expected > 0);
    assert_int_equal(totals.delivered, totals.expected);
    /* the ack check had acks to check, on later connections too */
    assert_true(totals.acks_confirmed > 0);
    assert_true(totals.acks_later > 0);

    /* Nobody outside the rules got anything, publishers included. */
    h_assert_nobody_else(env, crash_mailbox_ids);
    h_done(env);
}

static int crash_setup(void **state)
{
    char *rules = crash_rules_yaml();
    h_env_t *env = h_env_new_with_rules(rules);
    free(rules);
    *state = env;
    /* cmocka skips the teardown of a failed setup: free the folder here. */
    char problem[256];
    if (h_broker_try_start_at(env, "tcp://127.0.0.1:*", problem, sizeof problem) != 0) {
        h_env_free(&env); /* prints the broker's log */
        *state = NULL;
        fail_msg("%s", problem);
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_accepted_survives_random_kill9, crash_setup,
                                        h_teardown),
    };
    return cmocka_run_group_tests_name("integration: crash safety", tests, NULL, NULL);
}
