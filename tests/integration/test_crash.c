/*
 * test_crash.c — crash safety: schakeld is killed with SIGKILL at random
 * moments while three publishers publish and five recipients receive, and
 * is restarted each time on the same port and store. Afterwards every
 * publish a publisher saw Accepted has reached every principal its rules
 * name, nothing else was delivered, no publish was stored twice, and each
 * recipient got the items of one sender in publish order (first receipts).
 *
 * Worker threads never call cmocka (its failures jump out of the main
 * thread): they record what they saw, and the main thread checks it once
 * they are joined. The crash moments come from a seeded PRNG whose seed is
 * printed; SCHAKEL_CRASH_SEED=N replays them (thread timing is not
 * replayable, so a replay is likely, not certain, to hit the same state).
 */
#include "harness.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum {
    CRASH_PUBLISHERS = 3,
    CRASH_RECIPIENTS = 5,
    CRASH_MESSAGES = 150, /* publishes per publisher */
    CRASH_MAX_ITEMS = 4,  /* items of the largest batch */
    CRASH_MIN_CYCLES = 20,
    /* A crash comes after 1..14 more publishes sent or Accepted, or 1..29
     * more deliveries received, and at the latest after 16 more publish
     * calls: some 450 / (16 + 3 in flight + 3 retries) = 20 crashes while
     * the 450 publishes are made at the very least, 50 to 80 in practice. */
    CRASH_MAX_ADVANCE_PUBLISHES = 14,
    CRASH_MAX_ADVANCE_DELIVERIES = 29,
    CRASH_MAX_SENT_PER_CYCLE = 16,
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
/* Backlog 0 answers a recipient with items missing takes as final. */
#define CRASH_EMPTY_ANSWERS 3
#define CRASH_FORBIDDEN_THEME "drugs" /* no rule below names it */

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
};

static const char *const crash_recipient_ids[CRASH_RECIPIENTS + 1] = {
    H_GEMEENTE, H_OM, H_RIEC, H_RIEC_CASEWORKER, H_WOCO_JEKERDAL, NULL,
};

/* Publish m of a publisher: one item, or a batch of 3 or 4. */
static size_t crash_items_of(int m)
{
    return m % 4 == 1 ? 3 : m % 8 == 6 ? CRASH_MAX_ITEMS : 1;
}

/* Every tenth publish carries (as its last item) a theme no rule allows: the
 * broker must refuse it whole, and nothing of it may ever be delivered. */
static int crash_is_forbidden(int m)
{
    return m % 10 == 7;
}

static const char *crash_theme_of(int p, int m, size_t item)
{
    if (crash_is_forbidden(m) && item + 1 == crash_items_of(m))
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
    return *p < CRASH_PUBLISHERS && *m < CRASH_MESSAGES ? 0 : -1;
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

/* The rules block of the policy (caller frees). */
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
    "receive errors",
};

typedef struct crash_recipient {
    crash_run_t *run;
    int index;
    schakel_client_t *client;
    pthread_t thread;
    uint32_t receipts[CRASH_PUBLISHERS][CRASH_MESSAGES][CRASH_MAX_ITEMS];
    uint64_t first_seq[CRASH_PUBLISHERS][CRASH_MESSAGES][CRASH_MAX_ITEMS];
    int last_first[CRASH_PUBLISHERS]; /* position of the last first receipt */
    uint64_t received;                /* every delivery, repeats included */
    uint64_t repeats;                 /* deliveries of an item received before */
    unsigned violations[V_COUNT];
    char examples[V_COUNT][256]; /* the first of each kind */
    int drained;                 /* backlog 0 after publishing ended */
    uint64_t backlog_answers;    /* backlog queries answered */
    uint64_t last_backlog;
    unsigned empty_answers; /* backlog 0 answers while items were missing */
} crash_recipient_t;

/* What the main thread counts to choose the moment of a crash. Right after
 * a publish went out the broker is likely verifying or committing it; right
 * after an Accepted it is likely between publishes; right after a delivery
 * it is likely handling acks. */
enum crash_moment {
    MOMENT_SENT,     /* publishes handed to schakel_publish (retries included) */
    MOMENT_ACCEPTED, /* Accepted answers seen by the publishers */
    MOMENT_RECEIVED, /* deliveries handed to the recipients */
    MOMENT_COUNT,
};

struct crash_run {
    h_env_t *env;
    pthread_mutex_t lock;
    pthread_cond_t changed; /* progress or publishers_running changed */
    unsigned progress[MOMENT_COUNT];
    int publishers_running;
    int stop; /* the main thread gives up: every thread returns */
    int64_t deadline_ms;
    int64_t observed_at;
    crash_publisher_t publishers[CRASH_PUBLISHERS];
    crash_recipient_t recipients[CRASH_RECIPIENTS];
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

/* Compare an answer with the plan; record the state. */
static void crash_take_answer(crash_publisher_t *pub, int m, schakel_status_t st, size_t n,
                              const schakel_item_result_t *results, int dup)
{
    const char *principal = crash_publisher_defs[pub->index].principal;
    const schakel_error_t *e = schakel_last_error(pub->client);
    if (st == SCHAKEL_OK) {
        pub->state[m] = PUBLISH_ACCEPTED;
        pub->duplicates += dup != 0;
        for (size_t i = 0; i < n && !crash_is_forbidden(m); i++) {
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
    int planned = crash_is_forbidden(m)
                      ? st == SCHAKEL_ERR_REFUSED && strcmp(e->reason_name, "POLICY_DENIED") == 0
                      : st == SCHAKEL_OK;
    if (!planned && !crash_should_stop(pub->run)) {
        pub->wrong++;
        crash_example(pub->example, sizeof pub->example, "%s publish %d%s: %s %s: %s", principal, m,
                      crash_is_forbidden(m) ? " (no rule allows it)" : "", schakel_strerror(st),
                      st == SCHAKEL_OK ? "" : e->reason_name,
                      st == SCHAKEL_OK ? "accepted" : e->text);
    }
}

static void crash_publish_one(crash_publisher_t *pub, int m)
{
    size_t n = crash_items_of(m);
    schakel_signal_t signals[CRASH_MAX_ITEMS];
    char refs[CRASH_MAX_ITEMS][64];
    char summaries[CRASH_MAX_ITEMS][64];
    for (size_t i = 0; i < n; i++) {
        crash_source_ref(pub->index, m, i, refs[i], sizeof refs[i]);
        snprintf(summaries[i], sizeof summaries[i], "Proefsignaal %d van %s", m,
                 crash_publisher_defs[pub->index].principal);
        signals[i] = (schakel_signal_t){
            .kind = "proefsignaal",
            .theme = crash_theme_of(pub->index, m, i),
            .area = "GM0935",
            .severity = SCHAKEL_SEVERITY_MEDIUM,
            .observed_at = pub->run->observed_at,
            .summary = summaries[i],
            .source_ref = refs[i],
        };
    }
    schakel_item_result_t results[CRASH_MAX_ITEMS];
    memset(results, 0, sizeof results);
    int dup = 0;
    pub->state[m] = PUBLISH_PENDING;
    schakel_status_t st = crash_publish_until_answered(pub, m, signals, n, results, &dup);
    crash_take_answer(pub, m, st, n, results, dup);
    if (st == SCHAKEL_OK)
        crash_progress(pub->run, MOMENT_ACCEPTED);
}

static void *crash_publisher_main(void *arg)
{
    crash_publisher_t *pub = arg;
    for (int m = 0; m < CRASH_MESSAGES && !crash_should_stop(pub->run); m++)
        crash_publish_one(pub, m);
    pthread_mutex_lock(&pub->run->lock);
    pub->run->publishers_running--;
    pthread_cond_broadcast(&pub->run->changed);
    pthread_mutex_unlock(&pub->run->lock);
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
    if (crash_decode_id(d->message_id, p, m) != 0 || !d->sender ||
        strcmp(d->sender, crash_publisher_defs[*p].principal) != 0 ||
        d->item_index >= crash_items_of(*m)) {
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

static void crash_record(crash_recipient_t *rec, const schakel_delivery_t *d)
{
    int p, m;
    size_t i;
    rec->received++;
    if (crash_check_delivery(rec, d, &p, &m, &i) != 0)
        return;
    uint32_t *count = &rec->receipts[p][m][i];
    if (*count == 0) {
        rec->first_seq[p][m][i] = d->seq;
        if (rec->empty_answers > 0)
            crash_violation(rec, V_AFTER_EMPTY, d, "the broker had said the mailbox was empty");
        int position = m * CRASH_MAX_ITEMS + (int)i;
        if (position <= rec->last_first[p])
            crash_violation(rec, V_OUT_OF_ORDER, d,
                            "an earlier item of a later publish came first");
        rec->last_first[p] = position;
    } else {
        rec->repeats++;
        if (d->seq != rec->first_seq[p][m][i])
            crash_violation(rec, V_SECOND_SEQ, d, "this item came before under another seq");
        else if (!d->redelivery)
            crash_violation(rec, V_REPEAT_AS_NEW, d, "a seq received before, flagged as new");
    }
    (*count)++;
}

/* Has this recipient received every item its publishers saw Accepted that
 * a rule sends it? Called only after publishing ended, when the publishers'
 * states no longer change. */
static int crash_complete(const crash_recipient_t *rec)
{
    const crash_run_t *run = rec->run;
    for (int p = 0; p < CRASH_PUBLISHERS; p++)
        for (int m = 0; m < CRASH_MESSAGES; m++)
            for (size_t i = 0; i < crash_items_of(m); i++)
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
            crash_progress(rec->run, MOMENT_RECEIVED);
            crash_record(rec, d);
            /* A lost ack only means a redelivery, which the test counts. */
            (void)schakel_ack(rec->client, d->seq);
            schakel_delivery_free(&d);
            continue;
        }
        if (st != SCHAKEL_ERR_TIMEOUT) {
            rec->violations[V_RECEIVE_ERROR]++;
            crash_example(rec->examples[V_RECEIVE_ERROR], sizeof rec->examples[V_RECEIVE_ERROR],
                          "%s: receive: %s (%s)", crash_recipient_ids[rec->index],
                          schakel_strerror(st), schakel_last_error(rec->client)->text);
            continue;
        }
        if (!publishing && crash_drained(rec)) {
            rec->drained = 1;
            break;
        }
    }
    return NULL;
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
    return run;
}

static void crash_run_free(crash_run_t **runp)
{
    crash_run_t *run = *runp;
    for (int p = 0; p < CRASH_PUBLISHERS; p++)
        schakel_close(&run->publishers[p].client);
    for (int r = 0; r < CRASH_RECIPIENTS; r++)
        schakel_close(&run->recipients[r].client);
    pthread_cond_destroy(&run->changed);
    pthread_mutex_destroy(&run->lock);
    free(run);
    *runp = NULL;
}

/* Start every worker; returns how many started (all, unless one failed). */
static int crash_start_threads(crash_run_t *run)
{
    run->publishers_running = CRASH_PUBLISHERS;
    for (int r = 0; r < CRASH_RECIPIENTS; r++)
        if (pthread_create(&run->recipients[r].thread, NULL, crash_recipient_main,
                           &run->recipients[r]) != 0)
            return r;
    for (int p = 0; p < CRASH_PUBLISHERS; p++)
        if (pthread_create(&run->publishers[p].thread, NULL, crash_publisher_main,
                           &run->publishers[p]) != 0) {
            pthread_mutex_lock(&run->lock);
            run->publishers_running = p;
            pthread_mutex_unlock(&run->lock);
            return CRASH_RECIPIENTS + p;
        }
    return CRASH_RECIPIENTS + CRASH_PUBLISHERS;
}

static void crash_join_threads(crash_run_t *run, int started)
{
    for (int r = 0; r < CRASH_RECIPIENTS && r < started; r++)
        pthread_join(run->recipients[r].thread, NULL);
    for (int p = 0; p < CRASH_PUBLISHERS && CRASH_RECIPIENTS + p < started; p++)
        pthread_join(run->publishers[p].thread, NULL);
}

/* Wait until the count of `moment` reaches target, the count of sent
 * publishes reaches sent_cap, publishing ends, or the run stops. Returns 1
 * while publishing goes on. */
static int crash_await_progress(crash_run_t *run, enum crash_moment moment, unsigned target,
                                unsigned sent_cap)
{
    struct timespec until = {.tv_sec = run->deadline_ms / 1000,
                             .tv_nsec = (long)(run->deadline_ms % 1000) * 1000000L};
    pthread_mutex_lock(&run->lock);
    while (run->progress[moment] < target && run->progress[MOMENT_SENT] < sent_cap &&
           run->publishers_running > 0 && !run->stop &&
           pthread_cond_timedwait(&run->changed, &run->lock, &until) != ETIMEDOUT)
        ;
    int publishing = run->publishers_running > 0;
    pthread_mutex_unlock(&run->lock);
    return publishing;
}

typedef struct crash_cycles {
    unsigned total;
    unsigned while_publishing;
    unsigned after[MOMENT_COUNT]; /* crashes per kind of moment */
    char problem[256];            /* why a restart failed, or "" */
} crash_cycles_t;

/* Kill and restart the broker at a random moment (a random kind of
 * progress, advanced by a random amount), until publishing has ended and at
 * least CRASH_MIN_CYCLES crashes happened. The cap on publishes sent per
 * cycle makes sure most crashes come while publishing; should it end early
 * anyway, the remaining crashes happen while the recipients drain. */
static void crash_cycle(crash_run_t *run, uint64_t seed, crash_cycles_t *cycles)
{
    uint64_t prng = seed;
    for (;;) {
        enum crash_moment moment = (enum crash_moment)(crash_splitmix(&prng) % MOMENT_COUNT);
        unsigned max_advance =
            moment == MOMENT_RECEIVED ? CRASH_MAX_ADVANCE_DELIVERIES : CRASH_MAX_ADVANCE_PUBLISHES;
        unsigned advance = 1 + (unsigned)(crash_splitmix(&prng) % max_advance);
        pthread_mutex_lock(&run->lock);
        unsigned target = run->progress[moment] + advance;
        unsigned sent_cap = run->progress[MOMENT_SENT] + CRASH_MAX_SENT_PER_CYCLE;
        pthread_mutex_unlock(&run->lock);
        int publishing = crash_await_progress(run, moment, target, sent_cap);
        if (crash_should_stop(run) || (!publishing && cycles->total >= CRASH_MIN_CYCLES))
            return;
        if (h_broker_crash_restart(run->env, cycles->problem, sizeof cycles->problem) != 0) {
            crash_stop(run);
            return;
        }
        cycles->total++;
        cycles->while_publishing += (unsigned)publishing;
        cycles->after[moment] += (unsigned)publishing;
    }
}

/* ------------------------------------------------------------------ checks */

typedef struct crash_totals {
    unsigned publishes, batches, items, accepted, refused, forbidden, pending, calls, timeouts,
        duplicates_answered;
    uint64_t expected, delivered, received, repeats, missing, phantom;
} crash_totals_t;

static void crash_count_publishers(const crash_run_t *run, crash_totals_t *t)
{
    for (int p = 0; p < CRASH_PUBLISHERS; p++) {
        const crash_publisher_t *pub = &run->publishers[p];
        t->calls += pub->calls;
        t->timeouts += pub->timeouts;
        t->duplicates_answered += pub->duplicates;
        for (int m = 0; m < CRASH_MESSAGES; m++) {
            if (pub->state[m] == PUBLISH_UNSENT)
                continue;
            t->publishes++;
            t->batches += crash_items_of(m) > 1;
            t->forbidden += (unsigned)crash_is_forbidden(m);
            t->items += (unsigned)crash_items_of(m);
            t->accepted += pub->state[m] == PUBLISH_ACCEPTED;
            t->refused += pub->state[m] == PUBLISH_REFUSED;
            t->pending += pub->state[m] == PUBLISH_PENDING;
        }
    }
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
        fprintf(stderr, "crash: LOST: %s never received item %zu of %s publish %d (Accepted)\n",
                recipient, i, sender, m);
    if (got && !accepted && t->phantom++ < CRASH_EXAMPLES)
        fprintf(stderr,
                "crash: NOT ACCEPTED BUT DELIVERED: %s received item %zu of %s publish %d, "
                "which its publisher saw %s\n",
                recipient, i, sender, m, state == PUBLISH_REFUSED ? "Rejected" : "never answered");
}

static void crash_count_deliveries(const crash_run_t *run, crash_totals_t *t)
{
    for (int r = 0; r < CRASH_RECIPIENTS; r++) {
        t->received += run->recipients[r].received;
        t->repeats += run->recipients[r].repeats;
        for (int p = 0; p < CRASH_PUBLISHERS; p++)
            for (int m = 0; m < CRASH_MESSAGES; m++)
                for (size_t i = 0; i < crash_items_of(m); i++)
                    crash_check_item(run, r, p, m, i, t);
    }
}

static void crash_print_totals(const crash_cycles_t *cycles, const crash_totals_t *t,
                               int64_t took_ms)
{
    printf("crash: %u kill -9/restart cycles, %u while publishing (%u just after a send, %u "
           "after an Accepted, %u after a delivery)\n",
           cycles->total, cycles->while_publishing, cycles->after[MOMENT_SENT],
           cycles->after[MOMENT_ACCEPTED], cycles->after[MOMENT_RECEIVED]);
    printf("crash: %u publishes (%u batches, %u items) in %u calls, %u retried after a timeout, "
           "%u answered as repeats\n",
           t->publishes, t->batches, t->items, t->calls, t->timeouts, t->duplicates_answered);
    printf("crash: %u accepted, %u refused (%u planned), %u without an answer; deliveries "
           "expected %" PRIu64 ", delivered %" PRIu64 ", missing %" PRIu64
           ", delivered without Accepted %" PRIu64 "; %" PRIu64 " received, of which %" PRIu64
           " repeats\n",
           t->accepted, t->refused, t->forbidden, t->pending, t->expected, t->delivered, t->missing,
           t->phantom, t->received, t->repeats);
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
            fprintf(stderr, "crash: %s: %u unplanned answers, first: %s\n",
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
    if (started == CRASH_RECIPIENTS + CRASH_PUBLISHERS)
        crash_cycle(run, seed, &cycles);
    else
        crash_stop(run);
    crash_join_threads(run, started);
    int64_t took_ms = crash_now_ms() - started_ms;
    if (started != CRASH_RECIPIENTS + CRASH_PUBLISHERS) {
        crash_run_free(&run);
        fail_msg("could not start worker thread %d", started);
    }

    if (cycles.problem[0])
        fprintf(stderr,
                "crash: the run was cut short (restart after crash %u failed: %s); what follows "
                "counts an unfinished run\n",
                cycles.total + 1, cycles.problem);
    crash_totals_t totals = {0};
    crash_count_publishers(run, &totals);
    crash_count_deliveries(run, &totals);
    crash_print_totals(&cycles, &totals, took_ms);
    unsigned violations = crash_report_violations(run);
    crash_run_free(&run);

    if (cycles.problem[0])
        fail_msg("restart after crash %u failed: %s", cycles.total + 1, cycles.problem);
    if (took_ms >= crash_deadline_ms())
        fail_msg("the crash test did not finish within %lld ms", (long long)crash_deadline_ms());
    if (totals.missing || totals.phantom)
        fail_msg("%" PRIu64 " Accepted deliveries lost, %" PRIu64
                 " deliveries of publishes never Accepted (see above)",
                 totals.missing, totals.phantom);
    if (violations)
        fail_msg("%u violations (see above)", violations);
    if (cycles.total < CRASH_MIN_CYCLES)
        fail_msg("only %u crash cycles, want at least %d", cycles.total, CRASH_MIN_CYCLES);
    assert_int_equal(totals.publishes, CRASH_PUBLISHERS * CRASH_MESSAGES);
    assert_int_equal(totals.pending, 0);
    assert_true(totals.expected > 0);
    assert_int_equal(totals.delivered, totals.expected);

    /* Nobody outside the rules got anything, publishers included. */
    h_assert_nobody_else(env, crash_recipient_ids);
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
