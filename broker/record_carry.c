/*
 * record_carry.c — entries carried to a commit: an entry the trail must
 * get whatever becomes of the transaction it is first written in (a
 * refusal, a view withheld), kept in b->acks until the trail holds it,
 * written again in a transaction of its own when it does not, and said at
 * the end when it never did. A failed write fails nothing (it is tried
 * again); past SCHAKEL_AUDIT_MAX_CARRIED an entry is written once only,
 * said by audit.not_carried at most once a second. A carried entry with a field it has no room for
 * is a bug: aborts.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "broker.h"
#include "growarray.h"
#include "log.h"
#include "record.h"
#include "record_internal.h"

/* An entry the trail must get whatever becomes of the transaction it is
 * first written in (a refusal stands, recorded or not; a view withheld
 * was not shown): kept here, as the entry it is (its texts copied and
 * cleaned: actor, peer, key, message id, item index, subject tag, reason,
 * detail), until a settle finds it committed. Whether it committed is
 * read from the trail, not from the turn's outcome: its seq holds its
 * hash or it does not, whichever transactions committed or rolled back
 * meanwhile (an operator's reload commits the open transaction at once,
 * whatever it holds: counting turns would then write such an entry
 * twice). One that is missing is written again at the settle in a
 * transaction of its own, committed at once, so that the next turn's
 * rollback cannot take it too. A rewrite that fails waits before the next
 * (RECORD_CARRIED_PAUSE_MS, doubled after each failure up to
 * RECORD_CARRIED_PAUSE_MAX_MS): a store locked by another process makes
 * each try wait its busy timeout, which must not hold up every turn.
 * Cost: one indexed read per carried entry at the settle after its
 * write; an fsync at a settle that writes one again; about 2 KiB of
 * memory per entry, SCHAKEL_AUDIT_MAX_CARRIED at most. */
#define RECORD_CARRIED_PAUSE_MS 1000
#define RECORD_CARRIED_PAUSE_MAX_MS 30000
/* audit.not_carried: at most one line in this interval (the others are
 * counted, and said as more=N in the next). */
#define RECORD_NOT_CARRIED_SAID_EVERY_MS 1000
typedef struct record_carried record_carried_t;
struct record_carried {
    char event[32];
    unsigned present; /* 1u << enum store_audit_field, for each field the entry has */
    /* record_clean keeps 5 bytes free: each holds its longest value */
    char actor[SCHAKEL_MAX_PRINCIPAL_LEN + 6];
    char peer[128];
    char curve_key[48];
    char message_id[2 * SCHAKEL_MESSAGE_ID_BYTES + 6];
    char subject_tag[STORE_SUBJECT_TAG_LEN + 6];
    char reason[1024 + 8]; /* a refused reload's error: cleaned to 1024 bytes already */
    char detail[512];
    int64_t item_index;
    int64_t decided_at; /* record_now when it was carried: a later write names it */
    int written;        /* appended, and not yet found missing: seq and hash are its */
    int again;      /* to be written by this settle; -1 at a stop: unknown whether on the trail */
    unsigned tries; /* writes so far */
    uint64_t seq;
    uint8_t hash[STORE_AUDIT_HASH_BYTES];
};

/* The fields a carried entry may have, and where their texts are kept
 * (STORE_AUDIT_ITEM_INDEX, the one number, is kept apart). */
static const struct {
    enum store_audit_field field;
    size_t offset, size;
} record_carried_texts[] = {
#define RECORD_CARRIED_TEXT(field, member)                                                         \
    {                                                                                              \
        field, offsetof(record_carried_t, member), sizeof(((record_carried_t *)0)->member)         \
    }
    RECORD_CARRIED_TEXT(STORE_AUDIT_ACTOR, actor),
    RECORD_CARRIED_TEXT(STORE_AUDIT_PEER, peer),
    RECORD_CARRIED_TEXT(STORE_AUDIT_CURVE_KEY, curve_key),
    RECORD_CARRIED_TEXT(STORE_AUDIT_MESSAGE_ID, message_id),
    RECORD_CARRIED_TEXT(STORE_AUDIT_SUBJECT_TAG, subject_tag),
    RECORD_CARRIED_TEXT(STORE_AUDIT_REASON, reason),
    RECORD_CARRIED_TEXT(STORE_AUDIT_DETAIL, detail),
#undef RECORD_CARRIED_TEXT
};

/* Copy entry e into c: its event and the fields above, texts cleaned and
 * cut to their room. Any other field is a caller's mistake: aborts. */
static void record_carried_set(record_carried_t *c, const store_audit_entry_t *e, int64_t now)
{
    memset(c, 0, sizeof *c);
    record_clean(e->field[STORE_AUDIT_EVENT].text, c->event, sizeof c->event);
    for (int f = 0; f < STORE_AUDIT_FIELD_COUNT; f++) {
        if (f == STORE_AUDIT_EVENT || !e->field[f].present)
            continue;
        c->present |= 1u << f;
        if (f == STORE_AUDIT_ITEM_INDEX) {
            c->item_index = e->field[f].number;
            continue;
        }
        size_t i = 0;
        while (i < sizeof record_carried_texts / sizeof record_carried_texts[0] &&
               record_carried_texts[i].field != (enum store_audit_field)f)
            i++;
        if (i == sizeof record_carried_texts / sizeof record_carried_texts[0] ||
            e->field[f].text == NULL) {
            log_event(LOG_ERROR, "record.bug", "entry", c->event, "why",
                      "a carried entry has a field record_carried_texts does not keep", NULL);
            abort();
        }
        record_clean(e->field[f].text, (char *)c + record_carried_texts[i].offset,
                     record_carried_texts[i].size);
    }
    c->decided_at = now;
}

/* The entry c is, into e (which points into c and late). */
static void record_carried_entry(const record_carried_t *c, int64_t now, store_audit_entry_t *e,
                                 char *late, size_t latelen)
{
    audit_entry_init(e, c->event);
    for (size_t i = 0; i < sizeof record_carried_texts / sizeof record_carried_texts[0]; i++)
        if (c->present & (1u << record_carried_texts[i].field))
            audit_set_text(e, record_carried_texts[i].field,
                           (const char *)c + record_carried_texts[i].offset);
    if (c->present & (1u << STORE_AUDIT_ITEM_INDEX))
        audit_set_int(e, STORE_AUDIT_ITEM_INDEX, c->item_index);
    if (now != c->decided_at) {
        /* written later than it was decided: the entry says when that was */
        const char *detail = (c->present & (1u << STORE_AUDIT_DETAIL)) ? c->detail : "";
        snprintf(late, latelen, "%s%sdecided_at=%lld", detail, detail[0] != '\0' ? " " : "",
                 (long long)c->decided_at);
        audit_set_text(e, STORE_AUDIT_DETAIL, late);
    }
}

/* Append c in the open transaction (one is begun if none is). Returns 0;
 * -1 when the store refused it (logged); -2 when it was appended but the
 * checkpoint due with it failed (logged): it is in the transaction, which
 * must not commit. */
static int record_carried_write(broker_t *b, record_carried_t *c)
{
    store_audit_entry_t e;
    store_audit_tail_t tail;
    char late[sizeof c->detail + 40];
    record_carried_entry(c, record_now(b), &e, late, sizeof late);
    c->tries++;
    int rc = audit_append(b->store, b->key, record_now(b), &e);
    if (rc != 0) {
        record_write_failed(b, "audit.write_failed", c->event, store_errmsg(b->store));
        if (e.seq == 0 || store_audit_tail(b->store, &tail) != 0 || tail.seq != e.seq ||
            memcmp(tail.hash, e.hash, sizeof tail.hash) != 0)
            return -1;
        rc = -2;
    }
    c->written = 1;
    c->seq = e.seq;
    memcpy(c->hash, e.hash, sizeof c->hash);
    return rc;
}

typedef struct record_carried_find {
    const record_carried_t *carried;
    int found;
} record_carried_find_t;

static int record_carried_match(const store_audit_entry_t *entry, void *arg)
{
    record_carried_find_t *find = arg;
    find->found = entry->seq == find->carried->seq &&
                  (entry->damage != NULL ||
                   memcmp(entry->hash, find->carried->hash, sizeof entry->hash) == 0);
    return 1;
}

/* 1: the trail as the store shows it (committed; inside a transaction,
 * with its own entries) holds c; 0: it does not; -1: it cannot be read.
 * A row at its seq that reads back damaged counts as c: writing it again
 * would not mend the chain, and audit verify names the damage. */
static int record_carried_on_trail(broker_t *b, const record_carried_t *c)
{
    record_carried_find_t find = {c, 0};
    if (store_audit_scan(b->store, c->seq - 1, 1, record_carried_match, &find) < 0)
        return -1;
    return find.found;
}

/* The count the metrics show (schakel_audit_entries_carried). */
static void record_carried_counted(broker_t *b)
{
    b->stats.audit_carried = b->acks != NULL ? b->acks->n_carried : 0;
}

/* An operator's entry (admin.refused, policy.reload_refused): it may
 * take the room kept for them (SCHAKEL_AUDIT_CARRIED_RESERVED), and no
 * share per actor bounds it. */
static int record_carried_is_operators(const char *event)
{
    return strncmp(event, "admin.", 6) == 0 || strncmp(event, "policy.", 7) == 0;
}

/* Why e may not be carried now, or NULL: the list full; for a partner's
 * entry, the room left to partners full, or its actor's share taken. */
static const char *record_carried_full(const struct record_acks *a, const store_audit_entry_t *e)
{
    if (a->n_carried >= SCHAKEL_AUDIT_MAX_CARRIED)
        return "as many entries are carried already (SCHAKEL_AUDIT_MAX_CARRIED)";
    if (record_carried_is_operators(e->field[STORE_AUDIT_EVENT].text))
        return NULL;
    if (a->n_carried >= SCHAKEL_AUDIT_MAX_CARRIED - SCHAKEL_AUDIT_CARRIED_RESERVED)
        return "the room for partners' entries is taken (the rest is kept for operators': "
               "SCHAKEL_AUDIT_CARRIED_RESERVED)";
    const char *actor = e->field[STORE_AUDIT_ACTOR].present ? e->field[STORE_AUDIT_ACTOR].text : "";
    char cleaned[sizeof a->carried[0].actor];
    record_clean(actor, cleaned, sizeof cleaned);
    size_t same = 0;
    for (size_t i = 0; i < a->n_carried; i++)
        if (!record_carried_is_operators(a->carried[i].event) &&
            strcmp(a->carried[i].actor, cleaned) == 0 &&
            ++same >= SCHAKEL_AUDIT_MAX_CARRIED_PER_ACTOR)
            return "as many of this actor's entries are carried already "
                   "(SCHAKEL_AUDIT_MAX_CARRIED_PER_ACTOR)";
    return NULL;
}

/* audit.not_carried for the entry event of actor, turned away (why) with
 * effect (both literals): at most one line every
 * RECORD_NOT_CARRIED_SAID_EVERY_MS, the first at once. A flood of
 * refusals while the store cannot be written turns away one entry per
 * refusal: a line each would flood the log. One turned away sooner is
 * counted (and kept as the last, to be named) and said in the next line
 * as more=N, that line's or record_not_carried_catch_up's. The metric
 * counts each one whatever is said. */
static void record_not_carried_say(broker_t *b, const char *event, const char *actor,
                                   const char *why, const char *effect)
{
    if (b->not_carried_said &&
        b->now_ms - b->not_carried_said_ms < RECORD_NOT_CARRIED_SAID_EVERY_MS) {
        b->not_carried_unsaid++;
        record_clean(event, b->not_carried_last_entry, sizeof b->not_carried_last_entry);
        record_clean(actor, b->not_carried_last_actor, sizeof b->not_carried_last_actor);
        b->not_carried_last_why = why;
        b->not_carried_last_effect = effect;
        return;
    }
    char more[24];
    snprintf(more, sizeof more, "%llu", (unsigned long long)b->not_carried_unsaid);
    if (b->not_carried_unsaid == 0)
        log_event(LOG_WARN, "audit.not_carried", "entry", event, "actor", actor, "why", why,
                  "effect", effect, NULL);
    else
        log_event(LOG_WARN, "audit.not_carried", "entry", event, "actor", actor, "why", why,
                  "effect", effect, "more", more, NULL);
    b->not_carried_said = 1;
    b->not_carried_said_ms = b->now_ms;
    b->not_carried_unsaid = 0;
}

/* Entries turned away without a line of their own, their interval over
 * (or `force`, at the release): said now, naming the last of them, and
 * more= the others, so that a flood that stops is not left unsaid. */
static void record_not_carried_catch_up(broker_t *b, int force)
{
    if (b->not_carried_unsaid == 0 ||
        (!force && b->now_ms - b->not_carried_said_ms < RECORD_NOT_CARRIED_SAID_EVERY_MS))
        return;
    b->not_carried_unsaid--; /* the last is the line's own */
    b->not_carried_said = 0; /* said whatever the interval */
    record_not_carried_say(b, b->not_carried_last_entry, b->not_carried_last_actor,
                           b->not_carried_last_why, b->not_carried_last_effect);
}

/* Keep e to be carried: its place in the list, or NULL when it may not be
 * (record_carried_full) or without memory for it, which is said
 * (audit.not_carried, with what becomes of it: `effect`) and counted. */
static record_carried_t *record_carried_keep(broker_t *b, const store_audit_entry_t *e,
                                             const char *effect)
{
    struct record_acks *a = b->acks;
    if (a == NULL)
        a = b->acks = calloc(1, sizeof *b->acks);
    const char *full = a != NULL ? record_carried_full(a, e) : NULL;
    if (a != NULL && full == NULL &&
        growarray_room((void **)&a->carried, &a->cap_carried, a->n_carried, sizeof *a->carried,
                       8) == 0) {
        record_carried_t *c = &a->carried[a->n_carried++];
        record_carried_set(c, e, record_now(b));
        record_carried_counted(b);
        return c;
    }
    const char *actor =
        e->field[STORE_AUDIT_ACTOR].present ? e->field[STORE_AUDIT_ACTOR].text : "-";
    b->stats.audit_not_carried++;
    record_not_carried_say(b, e->field[STORE_AUDIT_EVENT].text, actor,
                           full != NULL ? full : "out of memory", effect);
    return NULL;
}

/* Keep entry e and write it, in the turn's transaction: a refused write
 * does not fail the turn (nothing waits on the entry), one whose
 * checkpoint failed does, as any such write. Past SCHAKEL_AUDIT_MAX_CARRIED
 * (or without memory for it) it is written once, in the open transaction
 * only. 0 when written now, else -1. */
int record_carry(broker_t *b, const store_audit_entry_t *e)
{
    record_carried_t one, *c = record_carried_keep(
                              b, e, "written in this transaction only: lost if it is rolled back");
    if (c == NULL) {
        c = &one;
        record_carried_set(c, e, record_now(b));
    }
    if (record_queue_flush(b) != 0)
        return -1;         /* the turn failed: written at its settle */
    b->turn_acks_only = 0; /* the turn's commit holds it: a synced one */
    int rc = record_carried_write(b, c);
    if (rc == -2)
        broker_fail_turn(b);
    return rc == 0 ? 0 : -1;
}

/* Keep entry e, whose write failed already (its transaction rolled
 * back), for a settle to write in a transaction of its own: not before
 * the pause a failed try starts (RECORD_CARRIED_PAUSE_MS, unless one runs
 * already), as that failure was one. A store locked by another process
 * makes each try wait its busy timeout: one try more at once would hold
 * up the loop for nothing. */
void record_carry_owed(broker_t *b, const store_audit_entry_t *e)
{
    if (record_carried_keep(b, e, "its write failed: it is not on the trail") == NULL)
        return;
    if (b->acks->carried_pause_ms == 0) {
        b->acks->carried_pause_ms = RECORD_CARRIED_PAUSE_MS;
        b->acks->carried_next_ms = b->now_ms + RECORD_CARRIED_PAUSE_MS;
    }
}

/* After each turn's commit or rollback, before anything else writes: an
 * entry written before it and now on the trail is forgotten; the others
 * (not on it, or whose last write failed) are written again, oldest
 * first, in one transaction committed at once (audit.recorded_late for
 * each); if that fails it is rolled back (logged), and they wait for the
 * next settle. An entry whose check cannot read the trail is checked
 * again at the next settle. Entries turned away since the last
 * audit.not_carried line, a second after it, are said first. */
void record_carried_settle(broker_t *b)
{
    record_not_carried_catch_up(b, 0);
    struct record_acks *a = b->acks;
    if (a == NULL || a->n_carried == 0)
        return;
    size_t kept = 0;
    for (size_t i = 0; i < a->n_carried; i++) {
        record_carried_t *c = &a->carried[i];
        int on_trail = c->written ? record_carried_on_trail(b, c) : 0;
        if (on_trail == 1)
            continue;
        c->again = on_trail == 0; /* -1: checked again at the next settle */
        a->carried[kept++] = *c;
    }
    a->n_carried = kept;
    record_carried_counted(b);
    if (store_in_transaction(b->store))
        return; /* defensive: the settle comes right after a commit or rollback */
    if (a->carried_pause_ms > 0 && b->now_ms < a->carried_next_ms)
        return; /* the last try failed: not before its pause ends */
    int wrote = 0, rc = 0;
    for (size_t i = 0; i < a->n_carried && rc == 0; i++)
        if (a->carried[i].again) {
            rc = record_carried_write(b, &a->carried[i]);
            wrote = 1;
        }
    if (!wrote)
        return;
    if (rc == 0 && store_commit(b->store) != 0) {
        record_write_failed(b, "audit.write_failed", a->carried[0].event, store_errmsg(b->store));
        rc = -1;
    }
    if (rc != 0) {
        store_rollback(b->store);
        for (size_t i = 0; i < a->n_carried; i++)
            if (a->carried[i].again)
                a->carried[i].written = 0;
        a->carried_pause_ms = a->carried_pause_ms == 0 ? RECORD_CARRIED_PAUSE_MS
                              : a->carried_pause_ms >= RECORD_CARRIED_PAUSE_MAX_MS / 2
                                  ? RECORD_CARRIED_PAUSE_MAX_MS
                                  : a->carried_pause_ms * 2;
        a->carried_next_ms = b->now_ms + a->carried_pause_ms;
        return;
    }
    a->carried_pause_ms = 0;
    kept = 0;
    for (size_t i = 0; i < a->n_carried; i++) {
        record_carried_t *c = &a->carried[i];
        if (!c->again) {
            a->carried[kept++] = *c;
            continue;
        }
        char seq[24], tries[16];
        snprintf(seq, sizeof seq, "%llu", (unsigned long long)c->seq);
        snprintf(tries, sizeof tries, "%u", c->tries);
        log_event(LOG_INFO, "audit.recorded_late", "entry", c->event, "actor",
                  (c->present & (1u << STORE_AUDIT_ACTOR)) ? c->actor : "-", "seq", seq, "writes",
                  tries, NULL);
    }
    a->n_carried = kept;
    record_carried_counted(b);
}

/* At a stop, before broker.stopped: every carried entry that is not on
 * the trail (or in the open transaction) is written into it. */
void record_carried_flush(broker_t *b)
{
    for (size_t i = 0; b->acks != NULL && i < b->acks->n_carried; i++) {
        record_carried_t *c = &b->acks->carried[i];
        int on_trail = c->written ? record_carried_on_trail(b, c) : 0;
        if (on_trail == 1)
            continue;
        if (on_trail < 0) {
            /* unknown: not written twice, but not forgotten either (said
             * at the release, as one that stays out) */
            c->written = 0;
            c->again = -1;
            continue;
        }
        c->written = 0;
        (void)record_carried_write(b, c); /* logged; said at the release if it stays out */
    }
}

void record_carried_stopped(broker_t *b)
{
    /* committed with it: only an entry whose last write failed is still owed */
    size_t kept = 0;
    for (size_t i = 0; b->acks != NULL && i < b->acks->n_carried; i++)
        if (!b->acks->carried[i].written)
            b->acks->carried[kept++] = b->acks->carried[i];
    if (b->acks != NULL)
        b->acks->n_carried = kept;
}

void record_carried_release(broker_t *b)
{
    record_not_carried_catch_up(b, 1);
    /* Owed to the trail and not known to be on it: said, as this is the
     * last that is known of them. */
    for (size_t i = 0; i < b->acks->n_carried; i++) {
        const record_carried_t *c = &b->acks->carried[i];
        log_event(LOG_ERROR, "audit.not_recorded", "entry", c->event, "actor", c->actor, "detail",
                  c->detail, "why",
                  c->again < 0
                      ? "the trail could not be read at the stop to tell whether it holds it"
                      : "the broker stopped before a transaction that holds it committed",
                  NULL);
    }
    free(b->acks->carried);
}
