/*
 * test_record.c — unit tests of broker/record.c's acks: kept per turn,
 * recorded at its end as one "delivery.acked" entry per recipient; and its
 * deliveries: kept per item, recorded as one "delivery.queued" entry.
 *
 * record.c and the record_*.c files beside it are linked alone with the
 * common code; the audit trail, the store, the log and the broker's turn
 * are stand-ins defined here, which keep every entry they append (and can
 * refuse them, as a full disk would). Entries are checked against the
 * documented layout of delivery_seqs (docs/OPERATIONS.md): ascending
 * seqs, one comma between.
 * The stand-in trail also chains as the store does: an entry gets the seq
 * after the entries not rolled back, and is committed or rolled back with
 * the next store_commit or store_rollback, so that an entry carried to a
 * commit (record_admin_refused) can be looked for at its seq.
 * The real trail, index and verification of these entries are
 * test_audit.c's; a real broker's, tests/integration/test_audit.c's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "audit.h"
#include "broker.h"
#include "log.h"
#include "policy.h"
#include "record.h"
#include "store.h"
#include "store_mailbox.h"
#include "storefile.h"

/* ------------------------------------------------------------------ stand-ins */

#define MAX_KEPT 4096

typedef struct kept_entry {
    char event[64];
    char actor[160];
    char recipient[160];
    char detail[160];
    /* the fields of a carried entry but actor and detail, "" when absent */
    char reason[160], subject_tag[80], message_id[40], peer[64], curve_key[48];
    int has_item_index;
    int64_t item_index;
    char *seqs;       /* delivery_seqs, NULL when absent */
    char *deliveries; /* deliveries, NULL when absent */
    int64_t item_seq;
    int per_delivery; /* any of the single-delivery columns is present */
    int has_seq;
    int64_t seq;   /* delivery_seq */
    size_t commit; /* commits before it was appended */
    enum { KEPT_PENDING, KEPT_COMMITTED, KEPT_ROLLED_BACK } state;
    uint64_t chain_seq; /* its seq in the trail */
    uint64_t hash_tag;  /* the first bytes of its hash: one per append */
} kept_entry_t;

static struct {
    kept_entry_t entries[MAX_KEPT];
    size_t n_entries;
    size_t commits, rollbacks, write_failed_logs, set_aside_logs, tail_mismatch_logs;
    size_t tail_mismatch_repeats; /* audit.tail_mismatch lines with refused= */
    char refused[24];             /* the last one's count */
    size_t marks;                 /* storefile_mark_mismatch calls */
    int mark_fails;               /* ... which fail */
    char mark_text[512];          /* what the first wrote */
    int tail_mismatch;        /* store_audit_tail_mismatch says so */
    const char *refuse_event; /* audit_append refuses entries of this event */
    size_t refuse_after;      /* ... once this many of them were taken */
    uint64_t unrecorded_from; /* store_set_aside_unrecorded: seqs from here ... */
    size_t n_unrecorded;      /* ... this many */
    uint64_t taken_first[4], taken_last[4]; /* store_mailbox_row_set_aside_take's rows */
    size_t n_taken, taken;                  /* ... how many, and how many were taken */
    uint64_t sent_up_to;                    /* deliver_sent: yes up to this seq, no after it */
    int commit_fails;         /* store_commit fails (and rolls back) */
    int in_transaction;       /* audit_append began one (refused or not) */
    size_t recorded_late_logs, not_carried_logs, not_recorded_logs;
    char not_carried_more[24];  /* the last audit.not_carried line's more=, "" without */
    char not_carried_actor[64]; /* ... and its actor */
    uint64_t hashes; /* hash tags given */
} trail;

static char store_token; /* the broker's store: only its address is used */

static void trail_reset(void)
{
    for (size_t i = 0; i < trail.n_entries; i++) {
        free(trail.entries[i].seqs);
        free(trail.entries[i].deliveries);
    }
    memset(&trail, 0, sizeof trail);
}

void audit_entry_init(store_audit_entry_t *entry, const char *event)
{
    memset(entry, 0, sizeof *entry);
    audit_set_text(entry, STORE_AUDIT_EVENT, event);
}

void audit_set_text(store_audit_entry_t *entry, enum store_audit_field field, const char *text)
{
    entry->field[field].present = text != NULL;
    entry->field[field].text = text;
}

void audit_set_int(store_audit_entry_t *entry, enum store_audit_field field, int64_t value)
{
    entry->field[field].present = 1;
    entry->field[field].number = value;
}

static size_t taken_of(const char *event)
{
    size_t n = 0;
    for (size_t i = 0; i < trail.n_entries; i++)
        n += strcmp(trail.entries[i].event, event) == 0;
    return n;
}

/* The seq the next entry gets: after every entry not rolled back. */
static uint64_t trail_next_seq(void)
{
    uint64_t seq = 1;
    for (size_t i = 0; i < trail.n_entries; i++)
        seq += trail.entries[i].state != KEPT_ROLLED_BACK;
    return seq;
}

int audit_append(store_t *store, const keypair_t *key, int64_t now, store_audit_entry_t *entry)
{
    (void)key, (void)now;
    assert_ptr_equal(store, (store_t *)&store_token);
    const char *event = entry->field[STORE_AUDIT_EVENT].text;
    assert_non_null(event);
    trail.in_transaction = 1; /* store_begin comes first */
    entry->seq = trail_next_seq();
    memset(entry->hash, 0, sizeof entry->hash);
    uint64_t tag = ++trail.hashes;
    memcpy(entry->hash, &tag, sizeof tag);
    if (trail.refuse_event != NULL && strcmp(event, trail.refuse_event) == 0 &&
        taken_of(event) >= trail.refuse_after)
        return -1;
    assert_true(trail.n_entries < MAX_KEPT);
    kept_entry_t *k = &trail.entries[trail.n_entries++];
    k->state = KEPT_PENDING;
    k->chain_seq = entry->seq;
    k->hash_tag = tag;
    const store_audit_value_t *f = entry->field;
    snprintf(k->event, sizeof k->event, "%s", event);
    snprintf(k->actor, sizeof k->actor, "%s",
             f[STORE_AUDIT_ACTOR].present ? f[STORE_AUDIT_ACTOR].text : "");
    snprintf(k->recipient, sizeof k->recipient, "%s",
             f[STORE_AUDIT_RECIPIENT].present ? f[STORE_AUDIT_RECIPIENT].text : "");
    snprintf(k->detail, sizeof k->detail, "%s",
             f[STORE_AUDIT_DETAIL].present ? f[STORE_AUDIT_DETAIL].text : "");
    static const struct {
        int field;
        size_t offset, size;
    } texts[] = {
        {STORE_AUDIT_REASON, offsetof(kept_entry_t, reason), sizeof k->reason},
        {STORE_AUDIT_SUBJECT_TAG, offsetof(kept_entry_t, subject_tag), sizeof k->subject_tag},
        {STORE_AUDIT_MESSAGE_ID, offsetof(kept_entry_t, message_id), sizeof k->message_id},
        {STORE_AUDIT_PEER, offsetof(kept_entry_t, peer), sizeof k->peer},
        {STORE_AUDIT_CURVE_KEY, offsetof(kept_entry_t, curve_key), sizeof k->curve_key},
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        snprintf((char *)k + texts[i].offset, texts[i].size, "%s",
                 f[texts[i].field].present ? f[texts[i].field].text : "");
    k->has_item_index = f[STORE_AUDIT_ITEM_INDEX].present;
    k->item_index = f[STORE_AUDIT_ITEM_INDEX].number;
    k->seqs =
        f[STORE_AUDIT_DELIVERY_SEQS].present ? strdup(f[STORE_AUDIT_DELIVERY_SEQS].text) : NULL;
    k->deliveries =
        f[STORE_AUDIT_DELIVERIES].present ? strdup(f[STORE_AUDIT_DELIVERIES].text) : NULL;
    k->item_seq = f[STORE_AUDIT_ITEM_SEQ].number;
    static const int single[] = {STORE_AUDIT_RECIPIENT, STORE_AUDIT_RECIPIENT_PARTNER,
                                 STORE_AUDIT_RULE_ID,   STORE_AUDIT_RULE_HASH,
                                 STORE_AUDIT_PURPOSE,   STORE_AUDIT_LEGAL_BASIS,
                                 STORE_AUDIT_FIELDS,    STORE_AUDIT_EXPIRES_AT};
    k->per_delivery = 0;
    for (size_t i = 0; i < sizeof single / sizeof single[0]; i++)
        k->per_delivery |= f[single[i]].present;
    k->has_seq = f[STORE_AUDIT_DELIVERY_SEQ].present;
    k->seq = f[STORE_AUDIT_DELIVERY_SEQ].number;
    k->commit = trail.commits;
    return 0;
}

int audit_checkpoint(store_t *store, const keypair_t *key, int64_t now, int force)
{
    (void)store, (void)key, (void)now, (void)force;
    return 0;
}

static void trail_end_transaction(int committed)
{
    trail.in_transaction = 0;
    for (size_t i = 0; i < trail.n_entries; i++)
        if (trail.entries[i].state == KEPT_PENDING)
            trail.entries[i].state = committed ? KEPT_COMMITTED : KEPT_ROLLED_BACK;
}

int store_commit(store_t *store)
{
    (void)store;
    if (trail.commit_fails) {
        trail_end_transaction(0); /* a failed commit rolls back */
        return -1;
    }
    trail.commits++;
    trail_end_transaction(1);
    return 0;
}

int store_rollback(store_t *store)
{
    (void)store;
    trail.rollbacks++;
    trail_end_transaction(0);
    return 0;
}

int store_in_transaction(const store_t *store)
{
    (void)store;
    return trail.in_transaction;
}

/* The trail as the store shows it: committed entries and the open
 * transaction's. */
int store_audit_scan(store_t *store, uint64_t after_seq, size_t limit, store_audit_fn fn, void *arg)
{
    assert_ptr_equal(store, (store_t *)&store_token);
    assert_int_equal(limit, 1);
    for (size_t i = 0; i < trail.n_entries; i++) {
        const kept_entry_t *k = &trail.entries[i];
        if (k->state == KEPT_ROLLED_BACK || k->chain_seq != after_seq + 1)
            continue;
        store_audit_entry_t e;
        memset(&e, 0, sizeof e);
        e.seq = k->chain_seq;
        memcpy(e.hash, &k->hash_tag, sizeof k->hash_tag);
        (void)fn(&e, arg);
        return 1;
    }
    return 0;
}

int store_audit_tail(store_t *store, store_audit_tail_t *tail)
{
    assert_ptr_equal(store, (store_t *)&store_token);
    memset(tail, 0, sizeof *tail);
    tail->seq = trail_next_seq() - 1;
    for (size_t i = 0; i < trail.n_entries; i++)
        if (trail.entries[i].state != KEPT_ROLLED_BACK && trail.entries[i].chain_seq == tail->seq)
            memcpy(tail->hash, &trail.entries[i].hash_tag, sizeof trail.entries[i].hash_tag);
    return 0;
}

const char *store_errmsg(const store_t *store)
{
    (void)store;
    return "refused by the test";
}

int store_audit_tail_mismatch(const store_t *store, uint64_t *stored_seq,
                              uint8_t stored_hash[STORE_AUDIT_HASH_BYTES], uint64_t *committed_seq,
                              uint8_t committed_hash[STORE_AUDIT_HASH_BYTES])
{
    (void)store;
    if (!trail.tail_mismatch)
        return 0;
    *stored_seq = 40;
    if (stored_hash != NULL)
        memset(stored_hash, 0xcd, STORE_AUDIT_HASH_BYTES);
    *committed_seq = 41;
    memset(committed_hash, 0xab, STORE_AUDIT_HASH_BYTES);
    return 1;
}

int storefile_mark_mismatch(const char *store_path, const char *text, char *path_out,
                            size_t path_outlen, char *err, size_t errlen)
{
    trail.marks++;
    if (trail.mark_fails) {
        snprintf(err, errlen, "%s.audit-mismatch: No space left on device", store_path);
        return -1;
    }
    if (trail.marks == 1)
        snprintf(trail.mark_text, sizeof trail.mark_text, "%s", text);
    snprintf(path_out, path_outlen, "%s.audit-mismatch", store_path);
    return trail.marks == 1 ? 0 : 1;
}

int store_subject_tag(store_t *store, const char *pseudonym, char tag[STORE_SUBJECT_TAG_LEN + 1])
{
    (void)store, (void)pseudonym;
    memset(tag, 'a', STORE_SUBJECT_TAG_LEN);
    tag[STORE_SUBJECT_TAG_LEN] = '\0';
    return 0;
}

/* The rows set aside that no entry names: trail.n_unrecorded of them
 * from seq trail.unrecorded_from (none unless a test says so). */
int store_set_aside_unrecorded(store_t *store, uint64_t after, uint64_t *seqs, size_t max)
{
    assert_ptr_equal(store, (store_t *)&store_token);
    int n = 0;
    for (uint64_t seq = trail.unrecorded_from;
         seq < trail.unrecorded_from + trail.n_unrecorded && (size_t)n < max; seq++)
        if (seq > after)
            seqs[n++] = seq;
    return n;
}

int store_set_aside_get(store_t *store, uint64_t seq, store_set_aside_t *out)
{
    assert_ptr_equal(store, (store_t *)&store_token);
    memset(out, 0, sizeof *out);
    snprintf(out->row.recipient, sizeof out->row.recipient, "om/parket");
    snprintf(out->reason, sizeof out->reason, "body of delivery %llu does not authenticate",
             (unsigned long long)seq);
    out->row.view = (store_expired_t){.seq = seq, .item_seq = 7, .set_aside = 1};
    out->row.view.recipient = out->row.recipient;
    out->row.view.rule_id = out->row.rule_id;
    out->row.view.rule_hash = out->row.rule_hash;
    return 1;
}

/* The rows a store call set aside on its own: trail.taken_first[i] to
 * trail.taken_last[i], each taken once. */
int store_mailbox_row_set_aside_take(store_t *store, store_mailbox_aside_t *out)
{
    assert_ptr_equal(store, (store_t *)&store_token);
    if (trail.taken == trail.n_taken)
        return 0;
    *out = (store_mailbox_aside_t){.first_seq = trail.taken_first[trail.taken],
                                   .last_seq = trail.taken_last[trail.taken]};
    trail.taken++;
    return 1;
}

/* This run sent om/parket's deliveries up to trail.sent_up_to. */
record_sent_t deliver_sent(const broker_t *b, const char *recipient, uint64_t seq)
{
    (void)b;
    assert_string_equal(recipient, "om/parket");
    return seq <= trail.sent_up_to ? RECORD_SENT_YES : RECORD_SENT_NO;
}

/* No receivers here: the window's slots are the push's (test_storage). */
void deliver_slot_free(broker_t *b, const char *recipient, uint64_t seq)
{
    (void)b;
    (void)recipient;
    (void)seq;
}

int log_enabled(log_level_t level)
{
    (void)level;
    return 1; /* the debug lines' code runs too */
}

void log_event(log_level_t level, const char *event, ...)
{
    if (strcmp(event, "audit.recorded_late") == 0)
        trail.recorded_late_logs++;
    if (strcmp(event, "audit.not_carried") == 0) {
        trail.not_carried_logs++;
        trail.not_carried_more[0] = '\0';
        va_list ap;
        va_start(ap, event);
        for (const char *key = va_arg(ap, const char *); key != NULL;
             key = va_arg(ap, const char *)) {
            const char *value = va_arg(ap, const char *);
            if (strcmp(key, "more") == 0)
                snprintf(trail.not_carried_more, sizeof trail.not_carried_more, "%s", value);
            if (strcmp(key, "actor") == 0)
                snprintf(trail.not_carried_actor, sizeof trail.not_carried_actor, "%s", value);
        }
        va_end(ap);
    }
    if (strcmp(event, "audit.not_recorded") == 0)
        trail.not_recorded_logs++;
    if (strcmp(event, "audit.write_failed") == 0)
        trail.write_failed_logs++;
    if (strcmp(event, "audit.tail_mismatch") == 0 && level == LOG_ERROR) {
        va_list ap;
        va_start(ap, event);
        for (const char *key = va_arg(ap, const char *); key != NULL;
             key = va_arg(ap, const char *)) {
            const char *value = va_arg(ap, const char *);
            if (strcmp(key, "refused") == 0) {
                trail.tail_mismatch_repeats++;
                snprintf(trail.refused, sizeof trail.refused, "%s", value);
            }
        }
        va_end(ap);
        trail.tail_mismatch_logs++;
    }
    if (strcmp(event, "delivery.set_aside") == 0 && level == LOG_ERROR)
        trail.set_aside_logs++;
}

const char *policy_hash_hex(const policy_t *policy)
{
    (void)policy;
    return "0000000000000000000000000000000000000000000000000000000000000000";
}

void broker_fail_turn(broker_t *b)
{
    b->turn_failed = 1;
}

/* ------------------------------------------------------------------ helpers */

static broker_t *test_broker(void)
{
    broker_t *b = calloc(1, sizeof *b);
    assert_non_null(b);
    b->store = (store_t *)&store_token;
    b->now_s = 1700000000;
    b->turn_acks_only = 1;
    return b;
}

static void test_broker_free(broker_t **b)
{
    record_release(*b);
    record_release(*b); /* safe twice */
    assert_null((*b)->acks);
    free(*b);
    *b = NULL;
}

/* The broker's broker_commit_turn after record_turn_end: a failed turn is
 * rolled back and the next one starts clean. */
static void turn_end(broker_t *b)
{
    record_turn_end(b);
    int committed = !b->turn_failed;
    if (b->turn_failed)
        store_rollback(b->store);
    else
        store_commit(b->store);
    record_turn_settle(b, committed);
    b->turn_failed = 0;
}

static void ack_ok(broker_t *b, const char *recipient, uint64_t seq)
{
    if (record_acked(b, recipient, seq) != 0)
        fail_msg("record_acked(%s, %llu) failed", recipient, (unsigned long long)seq);
}

/* delivery_seqs as docs/OPERATIONS.md writes it: ascending decimal seqs,
 * one comma between; the seqs go to out, their number is returned. */
static size_t documented_seqs(const char *text, uint64_t *out, size_t max)
{
    size_t n = 0;
    const char *p = text;
    assert_non_null(p);
    for (;;) {
        char *end = NULL;
        assert_true(*p >= '1' && *p <= '9');
        unsigned long long value = strtoull(p, &end, 10);
        assert_true(n < max);
        if (n > 0 && value <= out[n - 1])
            fail_msg("\"%s\" is not ascending", text);
        out[n++] = value;
        if (*end == '\0')
            return n;
        assert_int_equal(*end, ',');
        p = end + 1;
    }
}

static const kept_entry_t *acked_entry(size_t i)
{
    assert_true(i < trail.n_entries);
    const kept_entry_t *k = &trail.entries[i];
    assert_string_equal(k->event, "delivery.acked");
    assert_string_equal(k->actor, k->recipient); /* the recipient acked */
    assert_false(k->has_seq);                    /* one shape: the list */
    assert_non_null(k->seqs);
    return k;
}

/* ------------------------------------------------------------------ tests */

/* A turn's acks of one recipient: nothing until the turn ends, then one
 * entry with every seq, ascending; an ack entry leaves the turn unsynced. */
static void test_one_entry_per_recipient_and_turn(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    static const uint64_t acked[] = {9, 3, 7, 1, 5, 3}; /* 3 twice: listed once */
    for (size_t i = 0; i < sizeof acked / sizeof acked[0]; i++)
        ack_ok(b, "om/parket", acked[i]);
    assert_int_equal(trail.n_entries, 0);
    turn_end(b);
    assert_int_equal(trail.n_entries, 1);
    assert_string_equal(acked_entry(0)->recipient, "om/parket");
    assert_string_equal(acked_entry(0)->seqs, "1,3,5,7,9");
    assert_int_equal(acked_entry(0)->commit, 0); /* in the turn's transaction */
    assert_int_equal(trail.commits, 1);
    assert_int_equal(b->turn_acks_only, 1);
    /* A turn without acks writes none; the next acks start afresh. */
    turn_end(b);
    assert_int_equal(trail.n_entries, 1);
    ack_ok(b, "om/parket", 11);
    turn_end(b);
    assert_int_equal(trail.n_entries, 2);
    assert_string_equal(acked_entry(1)->seqs, "11");
    test_broker_free(&b);
    trail_reset();
}

static void test_recipients_of_one_turn_get_an_entry_each(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    static const struct {
        const char *recipient;
        uint64_t seq;
    } acks[] = {
        {"om/parket", 4},    {"riec/analyse", 5}, {"om/parket", 6},
        {"politie/bvh", 10}, {"riec/analyse", 2}, {"om/parket", 1},
    };
    for (size_t i = 0; i < sizeof acks / sizeof acks[0]; i++)
        ack_ok(b, acks[i].recipient, acks[i].seq);
    turn_end(b);
    static const struct {
        const char *recipient, *seqs;
    } expected[] = {{"om/parket", "1,4,6"}, {"riec/analyse", "2,5"}, {"politie/bvh", "10"}};
    assert_int_equal(trail.n_entries, 3);
    for (size_t i = 0; i < 3; i++) {
        const kept_entry_t *k = acked_entry(i);
        if (strcmp(k->recipient, expected[i].recipient) != 0 ||
            strcmp(k->seqs, expected[i].seqs) != 0)
            fail_msg("entry %zu: %s %s, expected %s %s", i, k->recipient, k->seqs,
                     expected[i].recipient, expected[i].seqs);
    }

    /* More recipients than record.c keeps room for between turns, twice. */
    for (int round = 0; round < 2; round++) {
        size_t before = trail.n_entries;
        for (unsigned r = 0; r < 40; r++) {
            char recipient[32];
            snprintf(recipient, sizeof recipient, "partner%u/system", r);
            ack_ok(b, recipient, 100 + r);
            ack_ok(b, recipient, 1000 + r);
        }
        turn_end(b);
        assert_int_equal(trail.n_entries, before + 40);
        for (unsigned r = 0; r < 40; r++) {
            char recipient[32], seqs[32];
            snprintf(recipient, sizeof recipient, "partner%u/system", r);
            snprintf(seqs, sizeof seqs, "%u,%u", 100 + r, 1000 + r);
            assert_string_equal(acked_entry(before + r)->recipient, recipient);
            assert_string_equal(acked_entry(before + r)->seqs, seqs);
        }
    }
    test_broker_free(&b);
    trail_reset();
}

/* A failed turn is rolled back, its acks with it: no entry, then or
 * later; an ack after the failure is refused. */
static void test_failed_turn_records_no_acks(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    ack_ok(b, "om/parket", 1);
    ack_ok(b, "riec/analyse", 2);
    broker_fail_turn(b); /* another write of the turn failed */
    assert_int_equal(record_acked(b, "om/parket", 3), -1);
    turn_end(b);
    assert_int_equal(trail.n_entries, 0);
    assert_int_equal(trail.rollbacks, 1);
    ack_ok(b, "om/parket", 4);
    turn_end(b);
    assert_int_equal(trail.n_entries, 1);
    assert_string_equal(acked_entry(0)->seqs, "4");

    /* An entry that cannot be written fails the turn (fail closed): the
     * entries after it are not tried, and nothing is kept for the next
     * turn. */
    trail.refuse_event = "delivery.acked";
    trail.refuse_after = 2; /* the one above and one more */
    ack_ok(b, "om/parket", 5);
    ack_ok(b, "riec/analyse", 6);
    ack_ok(b, "politie/bvh", 7);
    record_turn_end(b);
    assert_int_equal(b->turn_failed, 1);
    assert_int_equal(trail.n_entries, 2); /* om/parket's */
    assert_true(trail.write_failed_logs >= 1);
    turn_end(b);
    trail.refuse_event = NULL;
    ack_ok(b, "riec/analyse", 8);
    turn_end(b);
    assert_int_equal(trail.n_entries, 3);
    assert_string_equal(acked_entry(2)->recipient, "riec/analyse");
    assert_string_equal(acked_entry(2)->seqs, "8");

    /* A trail whose tail is not the one the broker committed: the same
     * failure, said as audit.tail_mismatch. */
    trail.refuse_event = "delivery.acked";
    trail.refuse_after = 0;
    trail.tail_mismatch = 1;
    b->store_path = "/var/lib/schakel/store.db";
    b->now_ms = 5000;
    size_t write_failed = trail.write_failed_logs;
    ack_ok(b, "om/parket", 10);
    record_turn_end(b);
    assert_int_equal(b->turn_failed, 1);
    assert_int_equal(trail.tail_mismatch_logs, 1);
    assert_int_equal(trail.write_failed_logs, write_failed);
    turn_end(b);
    assert_int_equal(trail.n_entries, 3);
    /* The first wrote the mark, with the anchor and what was found. */
    assert_int_equal(trail.marks, 1);
    assert_non_null(strstr(trail.mark_text, "\nexpect=41:abababab"));
    assert_non_null(strstr(trail.mark_text, "\nfound=40:cdcdcdcd"));
    /* Said once: within the minute the refusals are counted, not said,
     * and the mark is not written again; a minute on, one line with
     * their count. */
    for (int i = 0; i < 3; i++) {
        b->now_ms += 1000;
        ack_ok(b, "om/parket", 10);
        record_turn_end(b);
        assert_int_equal(b->turn_failed, 1);
        turn_end(b);
    }
    assert_int_equal(trail.tail_mismatch_logs, 1);
    assert_int_equal(trail.marks, 1);
    b->now_ms = 5000 + 60000;
    ack_ok(b, "om/parket", 10);
    record_turn_end(b);
    turn_end(b);
    assert_int_equal(trail.tail_mismatch_logs, 2);
    assert_int_equal(trail.tail_mismatch_repeats, 1);
    assert_string_equal(trail.refused, "4");
    assert_int_equal(b->tail_mismatch_unsaid, 0);
    assert_int_equal(trail.marks, 1);
    /* A mark that could not be written is tried again with the next
     * line, a minute on, not at every refusal. */
    broker_t *unmarked = test_broker();
    unmarked->store_path = "/var/lib/schakel/store.db";
    trail.mark_fails = 1;
    trail.marks = 0;
    for (int i = 0; i < 3; i++) {
        unmarked->now_ms = 1000 * i;
        ack_ok(unmarked, "om/parket", 10);
        record_turn_end(unmarked);
        turn_end(unmarked);
    }
    assert_int_equal(trail.marks, 1);
    assert_int_equal(unmarked->tail_mismatch_marked, 0);
    trail.mark_fails = 0;
    unmarked->now_ms = 60000;
    ack_ok(unmarked, "om/parket", 10);
    record_turn_end(unmarked);
    turn_end(unmarked);
    assert_int_equal(trail.marks, 2);
    assert_int_equal(unmarked->tail_mismatch_marked, 1);
    test_broker_free(&unmarked);
    b->store_path = NULL;
    trail.refuse_event = NULL;
    trail.tail_mismatch = 0;

    /* A recipient that cannot be a principal id fails the turn too. */
    char too_long[SCHAKEL_MAX_PRINCIPAL_LEN + 2];
    memset(too_long, 'a', sizeof too_long - 1);
    too_long[sizeof too_long - 1] = '\0';
    assert_int_equal(record_acked(b, too_long, 9), -1);
    assert_int_equal(b->turn_failed, 1);
    turn_end(b);
    assert_int_equal(trail.n_entries, 3);
    test_broker_free(&b);
    trail_reset();
}

/* An entry lists at most STORE_AUDIT_MAX_ACKED_SEQS seqs: a recipient
 * that acks more in one turn gets an entry as each list fills. */
static void test_lists_are_bounded(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    const uint64_t total = 2 * STORE_AUDIT_MAX_ACKED_SEQS + 5;
    uint64_t *seqs = calloc(STORE_AUDIT_MAX_ACKED_SEQS, sizeof *seqs);
    assert_non_null(seqs);
    for (uint64_t s = 1; s <= total; s++) {
        ack_ok(b, "om/parket", s * 2);
        ack_ok(b, "riec/analyse", s * 2 + 1); /* interleaved with another recipient */
        /* the entry is written the moment its list is full */
        assert_int_equal(trail.n_entries, 2 * (s / STORE_AUDIT_MAX_ACKED_SEQS));
    }
    turn_end(b);
    assert_int_equal(trail.n_entries, 6);
    uint64_t next[2] = {2, 3};
    for (size_t i = 0; i < trail.n_entries; i++) {
        const kept_entry_t *k = acked_entry(i);
        int odd = strcmp(k->recipient, "riec/analyse") == 0;
        size_t n = documented_seqs(k->seqs, seqs, STORE_AUDIT_MAX_ACKED_SEQS);
        assert_int_equal(n, i < 4 ? STORE_AUDIT_MAX_ACKED_SEQS : 5);
        for (size_t k2 = 0; k2 < n; k2++, next[odd] += 2)
            assert_int_equal(seqs[k2], next[odd]);
    }
    assert_int_equal(next[0], 2 * total + 2);
    assert_int_equal(next[1], 2 * total + 3);
    free(seqs);
    test_broker_free(&b);
    trail_reset();
}

/* The entries that commit at once carry the acks kept so far in the same
 * transaction, ahead of themselves: no commit leaves a delete without its
 * record. */
/* A delivery set aside: one entry naming it (its damaged texts cleaned:
 * the row may be the damage), counted, and one error line once the turn
 * commits (a turn rolled back says nothing: the next push sets the row
 * aside again and says it then); the turn is no longer one of acks only.
 * A refused entry fails the turn and counts nothing. */
static void test_set_aside_entry(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    store_set_aside_t x;
    memset(&x, 0, sizeof x);
    x.row.view = (store_expired_t){.seq = 42, .item_seq = 17, .expires_at = 1800000000,
                                   .set_aside = 1};
    snprintf(x.row.recipient, sizeof x.row.recipient, "om/par\x01ket");
    snprintf(x.row.rule_id, sizeof x.row.rule_id, "om-ondermijning");
    snprintf(x.row.rule_hash, sizeof x.row.rule_hash, "9f2c");
    x.row.view.recipient = x.row.recipient;
    x.row.view.rule_id = x.row.rule_id;
    x.row.view.rule_hash = x.row.rule_hash;
    snprintf(x.reason, sizeof x.reason, "body of delivery 42 does not authenticate");
    assert_int_equal(record_set_aside(b, &x, RECORD_SENT_YES), 0);
    assert_int_equal(trail.n_entries, 1);
    const kept_entry_t *k = &trail.entries[0];
    assert_string_equal(k->event, "delivery.set_aside");
    assert_string_equal(k->detail, "sent=yes");
    assert_string_equal(k->recipient, "om/par?ket");
    assert_true(k->has_seq);
    assert_int_equal(k->seq, 42);
    assert_int_equal(k->item_seq, 17);
    assert_int_equal(trail.set_aside_logs, 0); /* not before the commit */
    assert_int_equal(b->stats.set_aside, 1);
    assert_false(b->turn_acks_only);
    assert_false(b->turn_failed);
    turn_end(b);
    assert_int_equal(trail.set_aside_logs, 1);
    turn_end(b);
    assert_int_equal(trail.set_aside_logs, 1); /* said once */

    /* recorded in a turn that fails for another reason: not said */
    assert_int_equal(record_set_aside(b, &x, RECORD_SENT_NO), 0);
    assert_string_equal(trail.entries[1].detail, "sent=no");
    broker_fail_turn(b);
    turn_end(b);
    assert_int_equal(trail.set_aside_logs, 1);
    turn_end(b);
    assert_int_equal(trail.set_aside_logs, 1);

    trail.refuse_event = "delivery.set_aside";
    trail.refuse_after = 2;
    assert_int_equal(record_set_aside(b, &x, RECORD_SENT_UNKNOWN), -1);
    assert_true(b->turn_failed);
    assert_int_equal(b->stats.set_aside, 2);
    turn_end(b);
    assert_int_equal(trail.set_aside_logs, 1);
    test_broker_free(&b);
    trail_reset();
}

/* The rows set aside that no entry names (the schema migration's) are
 * recorded at the start, each as the push records one, committed a
 * batch at a time, each batch's lines said once it committed. A refused
 * entry rolls back the batch it is in and fails (the broker does not
 * start): the rows of that batch are found again at the next start. */
static void test_set_aside_unrecorded_at_start(void **state)
{
    (void)state;
    static const struct {
        size_t rows, refuse_after;
        int result;
        size_t entries, commits, said;
    } cases[] = {
        {0, 0, 0, 0, 0, 0},       /* none: nothing written, nothing committed */
        {70, 0, 0, 70, 2, 70},    /* two batches */
        {70, 65, -1, 65, 1, 64},  /* the second batch refused after its first entry */
        {3, 0 + 100, 0, 3, 1, 3}, /* refusal beyond them: all recorded */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        trail_reset();
        broker_t *b = test_broker();
        trail.unrecorded_from = 1000;
        trail.n_unrecorded = cases[i].rows;
        if (cases[i].refuse_after > 0) {
            trail.refuse_event = "delivery.set_aside";
            trail.refuse_after = cases[i].refuse_after;
        }
        int result = record_set_aside_unrecorded(b);
        if (result != cases[i].result || trail.n_entries != cases[i].entries ||
            trail.commits != cases[i].commits || trail.set_aside_logs != cases[i].said)
            fail_msg("case %zu: result %d, %zu entries, %zu commits, %zu said", i, result,
                     trail.n_entries, trail.commits, trail.set_aside_logs);
        for (size_t k = 0; k < trail.n_entries; k++) {
            assert_string_equal(trail.entries[k].event, "delivery.set_aside");
            assert_int_equal(trail.entries[k].seq, 1000 + (int64_t)k);
            assert_string_equal(trail.entries[k].detail, "sent=unknown"); /* before the start */
        }
        assert_int_equal(trail.rollbacks, result < 0 ? 1 : 0);
        assert_int_equal(b->stats.set_aside, cases[i].entries);
        test_broker_free(&b);
    }
    trail_reset();
}

/* The rows a store call of the turn set aside on its own (an expiry's, a
 * case's drop) are recorded from the store's list, not from the trail: a
 * seq the trail names already (a row put back and set aside again) gets
 * its entry all the same. Each entry says whether this run sent it. */
static void test_set_aside_in_turn_takes_the_listed_rows(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    trail.n_taken = 2;
    trail.taken_first[0] = 40, trail.taken_last[0] = 42;
    trail.taken_first[1] = 50, trail.taken_last[1] = 50;
    trail.sent_up_to = 41;
    trail.unrecorded_from = 40; /* what the trail would call unrecorded: nothing is read */
    trail.n_unrecorded = 0;
    assert_int_equal(record_set_aside_in_turn(b), 0);
    static const struct {
        int64_t seq;
        const char *detail;
    } want[] = {{40, "sent=yes"}, {41, "sent=yes"}, {42, "sent=no"}, {50, "sent=no"}};
    assert_int_equal(trail.n_entries, 4);
    for (size_t k = 0; k < 4; k++) {
        assert_string_equal(trail.entries[k].event, "delivery.set_aside");
        assert_int_equal(trail.entries[k].seq, want[k].seq);
        assert_string_equal(trail.entries[k].detail, want[k].detail);
    }
    assert_int_equal(b->stats.set_aside, 4);
    /* taken once: a second call in the turn writes nothing more */
    assert_int_equal(record_set_aside_in_turn(b), 0);
    assert_int_equal(trail.n_entries, 4);
    turn_end(b);
    assert_int_equal(trail.set_aside_logs, 4);
    test_broker_free(&b);
    trail_reset();
}

static void test_immediate_commits_record_kept_acks_first(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    ack_ok(b, "om/parket", 12);
    assert_int_equal(record_policy_reloaded(b, "SIGHUP", "old", "new"), 0);
    assert_int_equal(trail.n_entries, 2);
    assert_string_equal(acked_entry(0)->seqs, "12");
    assert_string_equal(trail.entries[1].event, "policy.reloaded");
    assert_int_equal(trail.entries[0].commit, trail.entries[1].commit); /* one commit */
    assert_int_equal(trail.commits, 1);
    turn_end(b); /* nothing left for the turn's end */
    assert_int_equal(trail.n_entries, 2);

    ack_ok(b, "om/parket", 13);
    assert_int_equal(record_stopped(b), 0);
    assert_int_equal(trail.n_entries, 4);
    assert_string_equal(acked_entry(2)->seqs, "13");
    assert_string_equal(trail.entries[3].event, "broker.stopped");
    test_broker_free(&b);
    trail_reset();
}

/* ------------------------------------------------------------------ queued */

#define HASH_R1 "1111111111111111111111111111111111111111111111111111111111111111"
#define HASH_R2 "2222222222222222222222222222222222222222222222222222222222222222"

static const uint8_t message_one[16] = {1, 2, 3};

/* A delivery of item item_seq to recipient under rule 1 ("r1") or 2. */
static record_delivery_t delivery(uint64_t item_seq, uint64_t seq, const char *recipient, int rule)
{
    record_delivery_t d = {
        .sender = "politie/bvh-koppeling",
        .recipient = recipient,
        .recipient_partner = "ignored", /* the part of recipient before '/' */
        .seq = seq,
        .item_seq = item_seq,
        .message_id = message_one,
        .item_index = 0,
        .kind = "witwassen",
        .theme = "ondermijning",
        .subject = NULL,
        .rule_id = rule == 1 ? "r1" : "r2",
        .rule_hash = rule == 1 ? HASH_R1 : HASH_R2,
        .purpose = rule == 1 ? "Aanpak ondermijning" : "Zorg: \"regie\"\nart. 2",
        .legal_basis = rule == 1 ? "Wpg art. 16" : "",
        .fields = rule == 1 ? FIELD_AREA | FIELD_SUBJECT : 0,
        .expires_at = rule == 1 ? 1700086400 : 1700000060,
    };
    return d;
}

static void queued_ok(broker_t *b, record_delivery_t d)
{
    if (record_queued(b, &d) != 0)
        fail_msg("record_queued(%llu) failed", (unsigned long long)d.seq);
}

static const kept_entry_t *queued_entry(size_t i)
{
    assert_true(i < trail.n_entries);
    const kept_entry_t *k = &trail.entries[i];
    assert_string_equal(k->event, "delivery.queued");
    assert_string_equal(k->actor, "politie/bvh-koppeling");
    assert_false(k->has_seq); /* one shape: the list */
    assert_false(k->per_delivery);
    assert_non_null(k->deliveries);
    return k;
}

/* The deliveries of one item: one entry when the turn ends, in the
 * documented bytes (rules once, in the order of first use; deliveries by
 * seq); an entry of another kind written in between comes after it. */
static void test_one_queued_entry_per_item(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    queued_ok(b, delivery(7, 20, "om/parket", 2));
    queued_ok(b, delivery(7, 21, "riec/analyse", 1));
    queued_ok(b, delivery(7, 22, "riec/team-2", 2));
    assert_int_equal(trail.n_entries, 0);
    turn_end(b);
    assert_int_equal(trail.n_entries, 1);
    assert_int_equal(trail.entries[0].commit, 0);
    assert_int_equal(queued_entry(0)->item_seq, 7);
    assert_string_equal(queued_entry(0)->deliveries,
                        "rule r2 " HASH_R2
                        " 1700000060 sender,kind,theme 20:Zorg: \"regie\"\nart. 2 0:\n"
                        "rule r1 " HASH_R1 " 1700086400 sender,kind,theme,area,subject"
                        " 19:Aanpak ondermijning 11:Wpg art. 16\n"
                        "20 0 om/parket\n"
                        "21 1 riec/analyse\n"
                        "22 0 riec/team-2\n");
    assert_int_equal(b->turn_acks_only, 0); /* a queued entry makes the turn synced */

    /* Another entry (an accepted one) writes the kept item first. */
    queued_ok(b, delivery(8, 30, "om/parket", 1));
    assert_int_equal(record_accepted(b, "politie/bvh-koppeling", message_one, 1, 1, 0), 0);
    assert_int_equal(trail.n_entries, 3);
    assert_string_equal(queued_entry(1)->deliveries,
                        "rule r1 " HASH_R1 " 1700086400 sender,kind,theme,area,subject"
                        " 19:Aanpak ondermijning 11:Wpg art. 16\n30 0 om/parket\n");
    assert_string_equal(trail.entries[2].event, "publish.accepted");
    turn_end(b);
    assert_int_equal(trail.n_entries, 3);
    test_broker_free(&b);
    trail_reset();
}

/* The text is built by copying, not formatting: every field name in its
 * place, the extreme numbers, texts beyond ASCII and empty ones are
 * spelled as documented. */
static void test_queued_text_spells_every_field_and_number(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    record_delivery_t d = delivery(9, INT64_MAX, "riec/analyse", 1);
    d.fields = FIELD_AREA | FIELD_ADDRESS | FIELD_SUBJECT | FIELD_GROUNDS | FIELD_CASE_REF |
               FIELD_SEVERITY | FIELD_OBSERVED_AT | FIELD_SUMMARY | FIELD_SOURCE_REF |
               FIELD_RECIPIENTS;
    d.expires_at = 0;
    d.purpose = "Zorg \xc3\xa9\xe2\x82\xac";
    d.legal_basis = NULL;
    queued_ok(b, d);
    turn_end(b);
    assert_int_equal(trail.n_entries, 1);
    assert_string_equal(queued_entry(0)->deliveries,
                        "rule r1 " HASH_R1 " 0 sender,kind,theme,area,address,subject,grounds,"
                        "case_ref,severity,observed_at,summary,source_ref,recipients"
                        " 10:Zorg \xc3\xa9\xe2\x82\xac 0:\n"
                        "9223372036854775807 0 riec/analyse\n");
    test_broker_free(&b);
    trail_reset();
}

/* Items interleaved (never by publish.c, but by any caller): an entry per
 * run of one item; a seq that does not ascend starts a new entry too. */
static void test_interleaved_items_get_an_entry_per_run(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    queued_ok(b, delivery(1, 10, "om/parket", 1));
    queued_ok(b, delivery(2, 11, "om/parket", 1));
    queued_ok(b, delivery(1, 12, "riec/analyse", 1));
    queued_ok(b, delivery(1, 9, "riec/team-2", 1)); /* not ascending */
    record_delivery_t other_subject = delivery(1, 13, "om/parket", 1);
    other_subject.subject = "PSEUDO-1234";
    queued_ok(b, other_subject);
    turn_end(b);
    static const int64_t items[] = {1, 2, 1, 1, 1};
    assert_int_equal(trail.n_entries, 5);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(queued_entry(i)->item_seq, items[i]);
    test_broker_free(&b);
    trail_reset();
}

/* A failed turn writes no queued entry and forgets the kept deliveries; a
 * refused entry fails the turn (fail closed). */
static void test_failed_turn_records_no_queued(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    queued_ok(b, delivery(3, 40, "om/parket", 1));
    broker_fail_turn(b);
    assert_int_equal(record_queued(b, &(record_delivery_t){0}), -1); /* nothing after a failure */
    turn_end(b);
    assert_int_equal(trail.n_entries, 0);
    assert_int_equal(trail.rollbacks, 1);
    queued_ok(b, delivery(4, 41, "om/parket", 1));
    turn_end(b);
    assert_int_equal(trail.n_entries, 1);
    assert_string_equal(queued_entry(0)->deliveries + strlen(queued_entry(0)->deliveries) - 15,
                        "41 0 om/parket\n");

    /* The store refuses the entry: the turn fails, nothing is kept. */
    trail.refuse_event = "delivery.queued";
    trail.refuse_after = 1;
    queued_ok(b, delivery(5, 42, "om/parket", 1));
    record_turn_end(b);
    assert_true(b->turn_failed);
    turn_end(b);
    assert_int_equal(trail.n_entries, 1);
    trail.refuse_event = NULL;
    turn_end(b);
    assert_int_equal(trail.n_entries, 1);

    /* Ids too long to keep fail the turn at once. */
    record_delivery_t bad = delivery(6, 43, "om/parket", 1);
    bad.rule_hash = HASH_R1 "0";
    assert_int_equal(record_queued(b, &bad), -1);
    assert_true(b->turn_failed);
    turn_end(b);
    assert_int_equal(trail.n_entries, 1);
    test_broker_free(&b);
    trail_reset();
}

/* An entry lists at most STORE_AUDIT_MAX_QUEUED_DELIVERIES: the next
 * delivery of the item starts another entry, the first written at once. */
static void test_queued_entries_are_bounded(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    char recipient[32];
    for (uint64_t i = 0; i <= STORE_AUDIT_MAX_QUEUED_DELIVERIES; i++) {
        snprintf(recipient, sizeof recipient, "om/p%llu", (unsigned long long)i);
        queued_ok(b, delivery(9, 100 + i, recipient, 1));
    }
    assert_int_equal(trail.n_entries, 1);
    turn_end(b);
    assert_int_equal(trail.n_entries, 2);
    size_t lines[2] = {0, 0};
    for (size_t e = 0; e < 2; e++)
        for (const char *p = queued_entry(e)->deliveries; *p != '\0'; p++)
            lines[e] += *p == '\n';
    assert_int_equal(lines[0], 1 + STORE_AUDIT_MAX_QUEUED_DELIVERIES); /* a rule line */
    assert_int_equal(lines[1], 2);
    assert_non_null(strstr(queued_entry(1)->deliveries, "\n1124 0 om/p1024\n"));
    /* Kept entries are written before an immediate commit. */
    queued_ok(b, delivery(10, 2000, "om/parket", 1));
    assert_int_equal(record_stopped(b), 0);
    assert_int_equal(trail.n_entries, 4);
    assert_int_equal(queued_entry(2)->item_seq, 10);
    assert_int_equal(trail.entries[2].commit, trail.entries[3].commit);
    test_broker_free(&b);
    trail_reset();
}

/* The last entry of this event taken, or NULL. */
static const kept_entry_t *last_of(const char *event)
{
    for (size_t i = trail.n_entries; i > 0; i--)
        if (strcmp(trail.entries[i - 1].event, event) == 0)
            return &trail.entries[i - 1];
    return NULL;
}

/* Refused handshakes beyond the limits are counted, and summed up in one
 * entry when the window ends; a summary whose write fails, or whose turn
 * is rolled back, is written again with the next turn, never lost. */
static void test_refusal_summary_survives_a_failed_turn(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    const zap_decision_t d = {
        .key_z85 = "-", .peer = "10.0.0.9", .domain = "partners", .why = "key not registered"};
    int counted = 0;
    for (unsigned i = 0; i < REFUSALS_PER_PEER + 5; i++)
        counted += record_auth(b, &d) == 1;
    assert_int_equal(counted, 5);
    assert_int_equal(taken_of("auth.refused"), REFUSALS_PER_PEER);
    turn_end(b); /* within the window: no summary yet */
    assert_null(last_of("auth.refused_summary"));
    b->now_s += REFUSALS_WINDOW_S;
    trail.refuse_event = "auth.refused_summary"; /* its write fails: the turn fails */
    turn_end(b);
    assert_null(last_of("auth.refused_summary"));
    assert_int_equal(trail.write_failed_logs, 1);
    trail.refuse_event = NULL;
    record_turn_end(b); /* written, then the turn rolled back for another reason */
    assert_int_equal(taken_of("auth.refused_summary"), 1);
    b->turn_failed = 1;
    store_rollback(b->store);
    record_turn_settle(b, 0);
    b->turn_failed = 0;
    turn_end(b); /* summed up again, and committed */
    assert_int_equal(taken_of("auth.refused_summary"), 2);
    const kept_entry_t *k = last_of("auth.refused_summary");
    assert_non_null(strstr(k->detail, "suppressed=5 "));
    assert_non_null(strstr(k->detail, "peers=10.0.0.9:5"));
    turn_end(b);
    assert_int_equal(taken_of("auth.refused_summary"), 2); /* once committed, once only */
    test_broker_free(&b);
    trail_reset();
}

/* ------------------------------------------------------------------ carried */

static size_t committed_of(const char *event, const char *detail)
{
    size_t n = 0;
    for (size_t i = 0; i < trail.n_entries; i++)
        n += trail.entries[i].state == KEPT_COMMITTED &&
             strcmp(trail.entries[i].event, event) == 0 &&
             (detail == NULL || strcmp(trail.entries[i].detail, detail) == 0);
    return n;
}

static void refused_ok(broker_t *b, const char *details)
{
    if (record_admin_refused(b, "gemeente/beheer", details) != 0)
        fail_msg("record_admin_refused(%s) failed", details);
}

/* A refusal's entry is written in its turn; the turn's commit takes it
 * with it and nothing writes it again; a rolled-back turn's is written
 * again at once in a transaction of its own, committed; once on the trail,
 * never again. */
static void test_refusal_carried_until_committed(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    refused_ok(b, "request_id=1 reason=INVALID_MESSAGE x");
    assert_int_equal(b->turn_acks_only, 0); /* the turn's commit is a synced one */
    turn_end(b);
    turn_end(b);
    assert_int_equal(taken_of("admin.refused"), 1);
    assert_int_equal(committed_of("admin.refused", NULL), 1);
    assert_int_equal(trail.recorded_late_logs, 0);

    size_t commits = trail.commits;
    refused_ok(b, "request_id=2 reason=INVALID_MESSAGE x");
    broker_fail_turn(b); /* another entry of the turn failed */
    turn_end(b);
    assert_int_equal(trail.commits, commits + 1); /* its own, at the settle */
    assert_int_equal(taken_of("admin.refused"), 3);
    assert_int_equal(committed_of("admin.refused", "request_id=2 reason=INVALID_MESSAGE x"), 1);
    assert_int_equal(trail.recorded_late_logs, 1);
    assert_false(store_in_transaction(b->store));
    turn_end(b);
    turn_end(b);
    assert_int_equal(taken_of("admin.refused"), 3);
    test_broker_free(&b);
    assert_int_equal(trail.not_recorded_logs, 0);
    trail_reset();
}

/* A refusal whose writes the store refuses does not fail its turn, and is
 * written at each settle until the store takes it; a settle whose commit
 * fails rolls it back and tries at the next. Entries keep the order the
 * refusals came in. */
static void test_refusal_refused_by_the_store_is_written_later(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    trail.refuse_event = "admin.refused";
    assert_int_equal(record_admin_refused(b, "gemeente/beheer", "request_id=3 a"), -1);
    assert_int_equal(record_admin_refused(b, "gemeente/beheer", "request_id=4 b"), -1);
    assert_int_equal(b->turn_failed, 0);
    assert_int_equal(trail.write_failed_logs, 2);
    turn_end(b); /* committed; the settle's write is refused: one line, not one each */
    assert_int_equal(trail.write_failed_logs, 3);
    assert_false(store_in_transaction(b->store));
    trail.refuse_event = NULL;
    /* a failed try waits a second before the next: a locked store makes
     * each wait its busy timeout, which must not hold up every turn */
    size_t taken = taken_of("admin.refused");
    b->now_ms += 999;
    turn_end(b);
    assert_int_equal(taken_of("admin.refused"), taken);
    b->now_ms += 1;
    trail.commit_fails = 1;
    turn_end(b); /* written, but the commit fails: two seconds to the next */
    assert_int_equal(taken_of("admin.refused"), taken + 2);
    assert_int_equal(committed_of("admin.refused", NULL), 0);
    assert_false(store_in_transaction(b->store));
    trail.commit_fails = 0;
    b->now_ms += 1999;
    turn_end(b);
    assert_int_equal(committed_of("admin.refused", NULL), 0);
    b->now_ms += 1;
    b->now_s += 3; /* written later than decided: the entry says when it was */
    turn_end(b);
    assert_int_equal(committed_of("admin.refused", NULL), 2);
    size_t first = trail.n_entries;
    for (size_t i = 0; i < trail.n_entries; i++)
        if (trail.entries[i].state == KEPT_COMMITTED && first == trail.n_entries)
            first = i;
    assert_string_equal(trail.entries[first].detail, "request_id=3 a decided_at=1700000000");
    assert_string_equal(trail.entries[first + 1].detail, "request_id=4 b decided_at=1700000000");
    assert_int_equal(trail.recorded_late_logs, 2);
    turn_end(b);
    assert_int_equal(committed_of("admin.refused", NULL), 2);
    test_broker_free(&b);
    trail_reset();
}

/* An entry committed by an action that commits at once (a reload) in the
 * transaction it was written in is not written again when the rest of
 * that turn rolls back: the trail, not the turn, says it is there. */
static void test_refusal_committed_mid_turn_is_not_written_twice(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    refused_ok(b, "request_id=5 reason=NOT_PERMITTED gone");
    assert_int_equal(record_policy_reloaded(b, "gemeente/beheer", "old", "new"), 0);
    refused_ok(b, "request_id=6 reason=NOT_PERMITTED gone");
    broker_fail_turn(b);
    turn_end(b); /* rolls back request 6's entry only */
    assert_int_equal(committed_of("admin.refused", "request_id=5 reason=NOT_PERMITTED gone"), 1);
    assert_int_equal(taken_of("admin.refused"), 3); /* 5 once; 6 twice */
    assert_int_equal(committed_of("admin.refused", "request_id=6 reason=NOT_PERMITTED gone"), 1);
    test_broker_free(&b);
    trail_reset();
}

/* At a stop a refusal not yet on the trail goes into broker.stopped's
 * transaction, before it; one the stop cannot write either is logged at
 * the release (audit.not_recorded). */
static void test_refusal_carried_into_the_stop(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    trail.refuse_event = "admin.refused";
    assert_int_equal(record_admin_refused(b, "gemeente/beheer", "request_id=7 c"), -1);
    trail.refuse_event = NULL;
    assert_int_equal(record_stopped(b), 0);
    const kept_entry_t *stopped = last_of("broker.stopped");
    assert_non_null(stopped);
    assert_string_equal((stopped - 1)->event, "admin.refused");
    assert_int_equal(committed_of("admin.refused", "request_id=7 c"), 1);
    test_broker_free(&b);
    assert_int_equal(trail.not_recorded_logs, 0);

    b = test_broker();
    trail.refuse_event = "admin.refused";
    assert_int_equal(record_admin_refused(b, "gemeente/beheer", "request_id=8 d"), -1);
    assert_int_equal(record_stopped(b), 0);
    test_broker_free(&b);
    assert_int_equal(trail.not_recorded_logs, 1);
    trail_reset();
}

/* At most SCHAKEL_AUDIT_MAX_CARRIED are carried; one more is written once
 * only, and said (audit.not_carried). */
static void test_carried_entries_are_bounded(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    trail.refuse_event = "admin.refused";
    char detail[32];
    for (unsigned i = 0; i <= SCHAKEL_AUDIT_MAX_CARRIED; i++) {
        snprintf(detail, sizeof detail, "request_id=%u", i + 1);
        assert_int_equal(record_admin_refused(b, "gemeente/beheer", detail), -1);
    }
    assert_int_equal(trail.not_carried_logs, 1);
    trail.refuse_event = NULL;
    turn_end(b);
    assert_int_equal(committed_of("admin.refused", NULL), SCHAKEL_AUDIT_MAX_CARRIED);
    snprintf(detail, sizeof detail, "request_id=%u", SCHAKEL_AUDIT_MAX_CARRIED + 1);
    assert_int_equal(committed_of("admin.refused", detail), 0);
    test_broker_free(&b);
    trail_reset();
}

/* The first committed entry of event, or NULL. */
static const kept_entry_t *committed_entry(const char *event)
{
    for (size_t i = 0; i < trail.n_entries; i++)
        if (trail.entries[i].state == KEPT_COMMITTED && strcmp(trail.entries[i].event, event) == 0)
            return &trail.entries[i];
    return NULL;
}

/* Every kind of carried entry keeps its fields: a partner's refusal (its
 * message id, item index and reason), a refused handshake recorded again
 * (peer, key, reason, no actor), an admission refused after all (its
 * principal), a view withheld (its subject tag and reason). Those made
 * after a rollback are not written into the next turn, and not before a
 * second has passed; a view withheld is written at once. Its turn rolled
 * back, and the settle's write refused, each is on the trail once the
 * store takes it, as it was first written but for the decided_at the
 * later write adds. */
static void test_every_kind_is_carried_whole(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    static const uint8_t message_id[16] = {0xab, 0xcd};
    const zap_decision_t again = {.key_z85 = "K3y",
                                  .peer = "10.0.0.7",
                                  .domain = "schakel",
                                  .why = "key not registered",
                                  .again = 1};
    const zap_decision_t unrecorded = {.principal = "gemeente/meldingen",
                                       .key_z85 = "K3y",
                                       .peer = "10.0.0.8",
                                       .domain = "schakel",
                                       .why = ZAP_WHY_UNRECORDED,
                                       .unrecorded = 1};
    record_refused_carried(b, "politie/bvh", message_id, SCHAKEL__REASON__UNAVAILABLE,
                           "stored nothing", 2, 1);
    assert_int_equal(record_auth(b, &again), 0);
    assert_int_equal(record_auth(b, &unrecorded), 0);
    assert_int_equal(trail.n_entries, 0); /* none written yet */
    assert_int_equal(record_case_view_withheld(b, "gemeente/meldingen", "C-1", "PSN-1", 3, 0,
                                               SCHAKEL__REASON__NOT_PERMITTED),
                     0);
    assert_int_equal(record_case_view_withheld(b, "gemeente/meldingen", NULL, NULL, 4, 0,
                                               SCHAKEL__REASON__UNAVAILABLE),
                     0);
    assert_int_equal(trail.n_entries, 2);
    assert_int_equal(b->stats.audit_carried, 5);
    assert_int_equal(b->turn_failed, 0); /* none of them fails the turn */
    broker_fail_turn(b);                 /* another entry of the turn does */
    turn_end(b);
    assert_int_equal(trail.n_entries, 2); /* not within the second */
    b->now_ms += 999;
    turn_end(b);
    assert_int_equal(trail.n_entries, 2);
    trail.refuse_event = "auth.refused"; /* the settle's write of one is refused */
    b->now_ms += 1;
    turn_end(b);
    assert_true(trail.n_entries > 2);
    assert_int_equal(committed_of("publish.refused", NULL), 0);
    assert_int_equal(b->stats.audit_carried, 5);
    trail.refuse_event = NULL;
    b->now_ms += 2000;
    b->now_s += 2;
    turn_end(b);
    assert_int_equal(b->stats.audit_carried, 0);
    assert_int_equal(trail.recorded_late_logs, 5);

    const kept_entry_t *k = committed_entry("publish.refused");
    assert_non_null(k);
    assert_string_equal(k->actor, "politie/bvh");
    assert_string_equal(k->message_id, "abcd0000000000000000000000000000");
    assert_true(k->has_item_index);
    assert_int_equal(k->item_index, 2);
    assert_string_equal(k->reason, "UNAVAILABLE");
    assert_string_equal(k->detail, "stored nothing decided_at=1700000000");
    assert_int_equal(committed_of("publish.refused", NULL), 1);

    assert_int_equal(committed_of("auth.refused", NULL), 2);
    k = committed_entry("auth.refused");
    assert_string_equal(k->actor, "");
    assert_string_equal(k->peer, "10.0.0.7");
    assert_string_equal(k->curve_key, "K3y");
    assert_string_equal(k->reason, "key not registered");
    assert_string_equal(k->detail, "domain=schakel decided_at=1700000000");
    k = last_of("auth.refused");
    assert_int_equal(k->state, KEPT_COMMITTED);
    assert_string_equal(k->actor, "gemeente/meldingen");
    assert_string_equal(k->peer, "10.0.0.8");
    assert_string_equal(k->reason, ZAP_WHY_UNRECORDED);

    k = committed_entry("case.view_withheld");
    assert_non_null(k);
    assert_int_equal(committed_of("case.view_withheld", NULL), 1);
    assert_string_equal(k->subject_tag,
                        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_string_equal(k->reason, "NOT_PERMITTED");
    assert_string_equal(k->detail, "case_id=C-1 events=3 decided_at=1700000000");
    k = committed_entry("case.list_withheld");
    assert_non_null(k);
    assert_string_equal(k->subject_tag, "");
    assert_string_equal(k->detail, "cases=4 decided_at=1700000000");
    turn_end(b);
    assert_int_equal(trail.recorded_late_logs, 5); /* never again */
    test_broker_free(&b);
    assert_int_equal(trail.not_recorded_logs, 0);
    trail_reset();
}

/* A refused reload whose commit fails is carried, and written at the
 * next settle in a transaction of its own, saying when it was decided;
 * one that commits at once is not carried. */
static void test_reload_refusal_carried_when_its_commit_fails(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    assert_int_equal(record_policy_refused(b, "SIGHUP", "k1", "policy.yaml:3: bad"), 0);
    assert_int_equal(b->stats.audit_carried, 0);
    trail.commit_fails = 1;
    assert_int_equal(record_policy_refused(b, "gemeente/beheer", "k2", "policy.yaml:4: worse"), -1);
    assert_int_equal(b->stats.audit_carried, 1);
    assert_int_equal(committed_of("policy.reload_refused", NULL), 1);
    turn_end(b); /* the settle's commit fails too */
    assert_int_equal(committed_of("policy.reload_refused", NULL), 1);
    trail.commit_fails = 0;
    b->now_ms += 1000;
    b->now_s += 5;
    turn_end(b);
    assert_int_equal(committed_of("policy.reload_refused", NULL), 2);
    const kept_entry_t *k = last_of("policy.reload_refused");
    assert_int_equal(k->state, KEPT_COMMITTED);
    assert_string_equal(k->actor, "gemeente/beheer");
    assert_string_equal(k->reason, "policy.yaml:4: worse");
    assert_string_equal(k->detail,
                        "kept_policy=k2 requested_by=gemeente/beheer decided_at=1700000000");
    assert_int_equal(b->stats.audit_carried, 0);
    turn_end(b);
    assert_int_equal(committed_of("policy.reload_refused", NULL), 2);
    test_broker_free(&b);
    trail_reset();
}

/* The bound is shared by every kind of partners' entry, and what it turns
 * away is counted for the metrics as well as said. */
static void test_carried_bound_is_counted(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    const unsigned room = SCHAKEL_AUDIT_MAX_CARRIED - SCHAKEL_AUDIT_CARRIED_RESERVED;
    char actor[32];
    for (unsigned i = 0; i < room; i++) {
        snprintf(actor, sizeof actor, "p%u/bvh", i / SCHAKEL_AUDIT_MAX_CARRIED_PER_ACTOR);
        record_refused_carried(b, actor, NULL, SCHAKEL__REASON__INVALID_MESSAGE, "x", -1, 0);
    }
    assert_int_equal(b->stats.audit_carried, room);
    assert_int_equal(b->stats.audit_not_carried, 0);
    assert_int_equal(record_case_view_withheld(b, "gemeente/meldingen", NULL, NULL, 1, 0,
                                               SCHAKEL__REASON__UNAVAILABLE),
                     0); /* written once, in this transaction */
    assert_int_equal(b->stats.audit_not_carried, 1);
    assert_int_equal(trail.not_carried_logs, 1);
    assert_int_equal(b->stats.audit_carried, room);
    turn_end(b);
    assert_int_equal(committed_of("case.list_withheld", NULL), 1);
    assert_int_equal(committed_of("request.refused", NULL), 0); /* a second after */
    b->now_ms += 1000;
    turn_end(b);
    assert_int_equal(committed_of("request.refused", NULL), room);
    assert_int_equal(b->stats.audit_carried, 0);
    test_broker_free(&b);
    trail_reset();
}

/* One partner's refusals, while the store cannot be written, push out
 * neither the other partners' entries nor an operator's (review: one
 * FIFO bound for all, so a client refused at its publish rate filled it,
 * and an operator's admin.refused was turned away): an actor keeps at
 * most SCHAKEL_AUDIT_MAX_CARRIED_PER_ACTOR, partners together all but
 * SCHAKEL_AUDIT_CARRIED_RESERVED, and operators' entries the rest. */
static void test_one_partner_cannot_crowd_out_the_others(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    trail.refuse_event = "request.refused"; /* the store refuses them: all owed */
    for (unsigned i = 0; i < 3 * SCHAKEL_AUDIT_MAX_CARRIED_PER_ACTOR; i++)
        record_refused_carried(b, "politie/bvh", NULL, SCHAKEL__REASON__RATE_LIMITED, "x", -1, 0);
    assert_int_equal(b->stats.audit_carried, SCHAKEL_AUDIT_MAX_CARRIED_PER_ACTOR);
    assert_int_equal(b->stats.audit_not_carried, 2 * SCHAKEL_AUDIT_MAX_CARRIED_PER_ACTOR);
    /* another partner's still is */
    record_refused_carried(b, "om/parket", NULL, SCHAKEL__REASON__RATE_LIMITED, "y", -1, 0);
    assert_int_equal(b->stats.audit_carried, SCHAKEL_AUDIT_MAX_CARRIED_PER_ACTOR + 1);
    /* partners filling all their room leave the operators' */
    char actor[32];
    const unsigned room = SCHAKEL_AUDIT_MAX_CARRIED - SCHAKEL_AUDIT_CARRIED_RESERVED;
    for (unsigned i = 0; b->stats.audit_carried < room && i < 2 * room; i++) {
        snprintf(actor, sizeof actor, "w%u/x", i / SCHAKEL_AUDIT_MAX_CARRIED_PER_ACTOR);
        record_refused_carried(b, actor, NULL, SCHAKEL__REASON__RATE_LIMITED, "z", -1, 0);
    }
    assert_int_equal(b->stats.audit_carried, room);
    uint64_t turned_away = b->stats.audit_not_carried;
    record_refused_carried(b, "brandweer/meldkamer", NULL, SCHAKEL__REASON__RATE_LIMITED, "v", -1,
                           0);
    assert_int_equal(b->stats.audit_not_carried, turned_away + 1);
    trail.refuse_event = "admin.refused";
    assert_int_equal(record_admin_refused(b, "gemeente/beheer", "request_id=9 e"), -1);
    assert_int_equal(b->stats.audit_not_carried, turned_away + 1); /* carried */
    assert_int_equal(b->stats.audit_carried, room + 1);
    trail.refuse_event = NULL;
    b->now_ms += 1000; /* the pause a failed write starts */
    turn_end(b);
    assert_int_equal(committed_of("admin.refused", "request_id=9 e"), 1);
    assert_int_equal(committed_of("request.refused", NULL), room);
    assert_int_equal(b->stats.audit_carried, 0);
    test_broker_free(&b);
    trail_reset();
}

/* A flood of refusals while the store cannot be written turns away an
 * entry per refusal: audit.not_carried says one a second at most (the
 * first at once), the next line how many were turned away since without
 * one (more=N), and a flood that stops is said at the first settle a
 * second after, or at the release; the metric counts every one. */
static void test_not_carried_lines_are_bounded(void **state)
{
    (void)state;
    trail_reset();
    broker_t *b = test_broker();
    trail.refuse_event = "request.refused"; /* the store refuses them: all owed */
    const unsigned share = SCHAKEL_AUDIT_MAX_CARRIED_PER_ACTOR;
    for (unsigned i = 0; i < share + 200; i++)
        record_refused_carried(b, "politie/bvh", NULL, SCHAKEL__REASON__RATE_LIMITED, "x", -1, 0);
    assert_int_equal(b->stats.audit_not_carried, 200);
    assert_int_equal(trail.not_carried_logs, 1); /* the first, at once */
    assert_string_equal(trail.not_carried_more, "");
    b->now_ms += 999;
    record_refused_carried(b, "politie/bvh", NULL, SCHAKEL__REASON__RATE_LIMITED, "x", -1, 0);
    assert_int_equal(trail.not_carried_logs, 1);
    b->now_ms += 1;
    record_refused_carried(b, "politie/bvh", NULL, SCHAKEL__REASON__RATE_LIMITED, "x", -1, 0);
    assert_int_equal(trail.not_carried_logs, 2);
    assert_string_equal(trail.not_carried_more, "200"); /* 199 after the first, 1 at 999 ms */
    assert_int_equal(b->stats.audit_not_carried, 202);
    /* a flood that stops: said at the first settle a second after the last line */
    for (unsigned i = 0; i < 5; i++)
        record_refused_carried(b, "om/parket", NULL, SCHAKEL__REASON__RATE_LIMITED, "y", -1, 0);
    for (unsigned i = 0; i < 3; i++) /* om/parket's entries are carried; these are not */
        record_refused_carried(b, "politie/bvh", NULL, SCHAKEL__REASON__RATE_LIMITED, "x", -1, 0);
    turn_end(b);
    assert_int_equal(trail.not_carried_logs, 2);
    b->now_ms += 1000;
    turn_end(b);
    assert_int_equal(trail.not_carried_logs, 3);
    assert_string_equal(trail.not_carried_actor, "politie/bvh"); /* the last turned away */
    assert_string_equal(trail.not_carried_more, "2");
    assert_int_equal(b->stats.audit_not_carried, 205);
    /* turned away and not said yet when the broker stops: said at the release */
    for (unsigned i = 0; i < 4; i++)
        record_refused_carried(b, "politie/bvh", NULL, SCHAKEL__REASON__RATE_LIMITED, "x", -1, 0);
    assert_int_equal(trail.not_carried_logs, 3);
    assert_int_equal(b->stats.audit_not_carried, 209);
    test_broker_free(&b);
    assert_int_equal(trail.not_carried_logs, 4);
    assert_string_equal(trail.not_carried_more, "3");
    trail_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_entry_per_recipient_and_turn),
        cmocka_unit_test(test_recipients_of_one_turn_get_an_entry_each),
        cmocka_unit_test(test_failed_turn_records_no_acks),
        cmocka_unit_test(test_lists_are_bounded),
        cmocka_unit_test(test_immediate_commits_record_kept_acks_first),
        cmocka_unit_test(test_set_aside_entry),
        cmocka_unit_test(test_set_aside_unrecorded_at_start),
        cmocka_unit_test(test_set_aside_in_turn_takes_the_listed_rows),
        cmocka_unit_test(test_one_queued_entry_per_item),
        cmocka_unit_test(test_queued_text_spells_every_field_and_number),
        cmocka_unit_test(test_interleaved_items_get_an_entry_per_run),
        cmocka_unit_test(test_failed_turn_records_no_queued),
        cmocka_unit_test(test_queued_entries_are_bounded),
        cmocka_unit_test(test_refusal_summary_survives_a_failed_turn),
        cmocka_unit_test(test_refusal_carried_until_committed),
        cmocka_unit_test(test_refusal_refused_by_the_store_is_written_later),
        cmocka_unit_test(test_refusal_committed_mid_turn_is_not_written_twice),
        cmocka_unit_test(test_refusal_carried_into_the_stop),
        cmocka_unit_test(test_carried_entries_are_bounded),
        cmocka_unit_test(test_every_kind_is_carried_whole),
        cmocka_unit_test(test_reload_refusal_carried_when_its_commit_fails),
        cmocka_unit_test(test_carried_bound_is_counted),
        cmocka_unit_test(test_one_partner_cannot_crowd_out_the_others),
        cmocka_unit_test(test_not_carried_lines_are_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
