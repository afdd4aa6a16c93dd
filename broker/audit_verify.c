/*
 * audit_verify.c — offline verification of a whole audit trail (see
 * audit.h, audit_verify): every hash recomputed from entry 1, every
 * checkpoint's signature checked under the broker keys in their order,
 * then the acked-delivery index and the tables' indexes. Trusts nothing in
 * the store's rows: what is broken is the report's (intact 0, the first
 * seq and why); -1 only when the store cannot be read.
 */
#include "audit.h"
#include "plural.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "schakel_limits.h"

/* ------------------------------------------------------------------ verifying */

typedef struct verify_state {
    const uint8_t (*keys)[32];
    size_t n_keys;
    const audit_anchor_t *anchor;
    audit_verify_report_t *report;
    uint8_t prev[STORE_AUDIT_HASH_BYTES]; /* the recomputed hash of the last entry */
    uint64_t expected;                    /* the seq the next entry must have */
    uint64_t certified;                   /* seq of the last checkpoint that matched */
    size_t key_floor;   /* index of the key that signed it: later ones need this or a later key */
    uint64_t floor_seq; /* the first checkpoint signed by keys[key_floor] (0: none yet) */
    store_audit_checkpoint_t *cps; /* this batch's checkpoints, in seq order */
    size_t n_cps, cap_cps, next_cp;
    int out_of_memory;
    /* The acked-delivery index check: the runs of consecutive seqs (first,
     * last, entry seq) the entries listed since the last look-up round, at
     * most VERIFY_ACKED_RUNS (the scan pauses to look them up); each seq
     * a run of its own when the index keeps a row per seq (schema < 12). */
    uint64_t (*acked)[3];
    size_t n_acked;
    int acked_pause;
    int acked_index; /* STORE_AUDIT_ACKED_*, asked once */
} verify_state_t;

#define VERIFY_ACKED_RUNS 43690u /* 1 MiB of runs */

static void verify_broken(verify_state_t *st, uint64_t seq, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void verify_broken(verify_state_t *st, uint64_t seq, const char *fmt, ...)
{
    va_list ap;
    st->report->intact = 0;
    st->report->broken_seq = seq;
    /* What comes before the first broken place is what was verified. */
    st->report->entries = seq - 1;
    va_start(ap, fmt);
    vsnprintf(st->report->problem, sizeof st->report->problem, fmt, ap);
    va_end(ap);
}

static int verify_collect_checkpoint(const store_audit_checkpoint_t *cp, void *arg)
{
    verify_state_t *st = arg;
    if (st->n_cps == st->cap_cps) {
        size_t cap = st->cap_cps ? st->cap_cps * 2 : 16;
        store_audit_checkpoint_t *grown = realloc(st->cps, cap * sizeof *grown);
        if (grown == NULL) {
            st->out_of_memory = 1;
            return 1;
        }
        st->cps = grown;
        st->cap_cps = cap;
    }
    st->cps[st->n_cps] = *cp;
    st->cps[st->n_cps].damage = cp->damage != NULL ? "a column is missing or of the wrong size"
                                                   : NULL; /* the row's string ends with the call */
    st->n_cps++;
    return 0;
}

/* The index of key among the given keys, oldest first: the first match at
 * or after the key of the last verified checkpoint (a key listed twice
 * covers a return to it). -1 when it was not given at all; -2 when only an
 * older key than that checkpoint's matches. */
static long verify_key_index(const verify_state_t *st, const uint8_t key[32])
{
    long older = -1;
    for (size_t i = 0; i < st->n_keys; i++) {
        if (sodium_memcmp(st->keys[i], key, 32) != 0)
            continue;
        if (i >= st->key_floor)
            return (long)i;
        older = -2;
    }
    return older;
}

/* The key of a checkpoint: given, and not older than the one before it.
 * After a rotation the old key signs nothing more; one that does (a
 * retired, perhaps leaked, key re-signing what the new key certified) is
 * refused. Returns 0, or -1 reported. */
static int verify_checkpoint_key(verify_state_t *st, const store_audit_checkpoint_t *cp)
{
    char z85[41];
    long index = verify_key_index(st, cp->key);
    keys_public_z85(cp->key, z85);
    if (index == -1) {
        verify_broken(st, cp->seq,
                      "the checkpoint at seq %llu is signed by key %s, which is not a broker key "
                      "given for the verification",
                      (unsigned long long)cp->seq, z85);
        return -1;
    }
    if (index == -2) {
        verify_broken(st, cp->seq,
                      "the checkpoint at seq %llu is signed by key %s, which comes before the key "
                      "that signed checkpoints since seq %llu: after a rotation the old key signs "
                      "nothing, so a retired key re-signed the trail (or the keys were not given "
                      "oldest first)",
                      (unsigned long long)cp->seq, z85, (unsigned long long)st->floor_seq);
        return -1;
    }
    if (st->floor_seq == 0 || (size_t)index != st->key_floor)
        st->floor_seq = cp->seq;
    st->key_floor = (size_t)index;
    return 0;
}

/* Check one checkpoint against the recomputed hash of its entry. Returns 0
 * when it holds, -1 when the trail is broken (reported). */
static int verify_checkpoint(verify_state_t *st, const store_audit_checkpoint_t *cp,
                             const uint8_t recomputed[STORE_AUDIT_HASH_BYTES])
{
    uint8_t signed_bytes[AUDIT_CHECKPOINT_SIGNED_BYTES];
    if (cp->damage != NULL) {
        verify_broken(st, cp->seq, "the checkpoint at seq %llu is damaged: %s",
                      (unsigned long long)cp->seq, cp->damage);
        return -1;
    }
    if (verify_checkpoint_key(st, cp) != 0)
        return -1;
    audit_checkpoint_signed_bytes(cp->seq, cp->hash, cp->at, signed_bytes);
    if (keys_verify(cp->key, signed_bytes, sizeof signed_bytes, cp->signature) != 0) {
        verify_broken(st, cp->seq,
                      "the checkpoint at seq %llu does not verify: its seq, hash or time was "
                      "altered, or its signature",
                      (unsigned long long)cp->seq);
        return -1;
    }
    if (sodium_memcmp(cp->hash, recomputed, STORE_AUDIT_HASH_BYTES) != 0) {
        verify_broken(st, st->certified + 1,
                      "the signed checkpoint at seq %llu certifies another hash than the trail "
                      "holds: entries %llu..%llu were rewritten (with their hashes recomputed)",
                      (unsigned long long)cp->seq, (unsigned long long)st->certified + 1,
                      (unsigned long long)cp->seq);
        return -1;
    }
    st->certified = cp->seq;
    st->report->checkpoints++;
    st->report->last_checkpoint_seq = cp->seq;
    st->report->last_checkpoint_at = cp->at;
    memcpy(st->report->last_checkpoint_hash, cp->hash, STORE_AUDIT_HASH_BYTES);
    return 0;
}

/* The entry's own checks: its place, its row, its hash. */
static int verify_entry_itself(verify_state_t *st, const store_audit_entry_t *e,
                               uint8_t recomputed[STORE_AUDIT_HASH_BYTES])
{
    unsigned long long seq = (unsigned long long)e->seq;
    if (e->seq != st->expected) {
        if (e->seq > st->expected)
            verify_broken(st, st->expected,
                          "entry %llu is missing (removed): the trail goes on at seq %llu",
                          (unsigned long long)st->expected, seq);
        else
            verify_broken(st, st->expected,
                          "an entry with seq %llu stands where entry %llu "
                          "belongs",
                          seq, (unsigned long long)st->expected);
        return -1;
    }
    if (e->damage != NULL) {
        verify_broken(st, e->seq, "entry %llu is damaged: %s", seq, e->damage);
        return -1;
    }
    audit_entry_hash(st->prev, e, recomputed);
    if (sodium_memcmp(recomputed, e->hash, STORE_AUDIT_HASH_BYTES) != 0) {
        verify_broken(st, e->seq,
                      "entry %llu does not match its hash: it was altered or moved here, or the "
                      "entry before it was rewritten together with its hash",
                      seq);
        return -1;
    }
    /* The store refuses to write another shape: one can only be hashed in
     * by someone rewriting the chain (a list moved to another column, a
     * list on another event, a list not in its one spelling). */
    const char *shape = store_audit_shape_problem(e);
    if (shape != NULL) {
        verify_broken(st, e->seq, "entry %llu is of a shape the broker does not write: %s", seq,
                      shape);
        return -1;
    }
    if (st->anchor != NULL && st->anchor->seq == e->seq &&
        sodium_memcmp(st->anchor->hash, recomputed, STORE_AUDIT_HASH_BYTES) != 0) {
        verify_broken(st, e->seq,
                      "entry %llu does not have the anchor's hash: the trail up to it was "
                      "rewritten since the anchor was taken",
                      seq);
        return -1;
    }
    return 0;
}

/* The first way the acked-delivery index disagrees with the entries. */
static void verify_index_problem(verify_state_t *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void verify_index_problem(verify_state_t *st, const char *fmt, ...)
{
    va_list ap;
    if (!st->report->index_intact)
        return;
    st->report->index_intact = 0;
    va_start(ap, fmt);
    vsnprintf(st->report->index_problem, sizeof st->report->index_problem, fmt, ap);
    va_end(ap);
}

/* An acked entry's seqs, as runs, into what the next look-up round checks.
 * Returns 1 when the scan should pause for that round. */
static int verify_collect_acked(verify_state_t *st, const store_audit_entry_t *e)
{
    const store_audit_value_t *v = &e->field[STORE_AUDIT_DELIVERY_SEQS];
    uint64_t seqs[STORE_AUDIT_MAX_ACKED_SEQS];
    if (!v->present)
        return 0;
    size_t n = store_audit_seqs_parse(v->text, seqs, STORE_AUDIT_MAX_ACKED_SEQS);
    if (n == 0) {
        verify_index_problem(st, "entry %llu lists delivery_seqs that are not a seq list",
                             (unsigned long long)e->seq);
        return 0;
    }
    if (st->acked == NULL && (st->acked = malloc(VERIFY_ACKED_RUNS * sizeof *st->acked)) == NULL) {
        st->out_of_memory = 1;
        return 1;
    }
    for (size_t i = 0; i < n;) {
        size_t end =
            st->acked_index == STORE_AUDIT_ACKED_RANGES ? store_audit_seqs_run(seqs, n, i) : i + 1;
        st->acked[st->n_acked][0] = seqs[i];
        st->acked[st->n_acked][1] = seqs[end - 1];
        st->acked[st->n_acked++][2] = e->seq;
        st->report->acked_runs++;
        i = end;
    }
    st->report->acked_seqs += n;
    return st->n_acked + STORE_AUDIT_MAX_ACKED_SEQS > VERIFY_ACKED_RUNS;
}

static int verify_entry(const store_audit_entry_t *e, void *arg)
{
    verify_state_t *st = arg;
    uint8_t recomputed[STORE_AUDIT_HASH_BYTES];
    if (verify_entry_itself(st, e, recomputed) != 0)
        return 1;
    while (st->next_cp < st->n_cps && st->cps[st->next_cp].seq <= e->seq) {
        if (verify_checkpoint(st, &st->cps[st->next_cp++], recomputed) != 0)
            return 1;
    }
    /* The broker signs a checkpoint in the transaction of every
     * SCHAKEL_AUDIT_CHECKPOINT_ENTRIES-th entry after the last one (and
     * more often by time): a longer stretch means checkpoints were removed,
     * and with them what would show a rewritten chain. */
    if (e->seq - st->report->last_checkpoint_seq >= SCHAKEL_AUDIT_CHECKPOINT_ENTRIES) {
        verify_broken(st, e->seq,
                      "entry %llu is %llu entries after the last checkpoint (seq %llu), but the "
                      "broker signs one at least every %u entries: checkpoints were removed",
                      (unsigned long long)e->seq,
                      (unsigned long long)(e->seq - st->report->last_checkpoint_seq),
                      (unsigned long long)st->report->last_checkpoint_seq,
                      (unsigned)SCHAKEL_AUDIT_CHECKPOINT_ENTRIES);
        return 1;
    }
    memcpy(st->prev, recomputed, STORE_AUDIT_HASH_BYTES);
    st->expected = e->seq + 1;
    st->report->entries++;
    st->report->last_seq = e->seq;
    memcpy(st->report->last_hash, recomputed, STORE_AUDIT_HASH_BYTES);
    st->acked_pause = verify_collect_acked(st, e);
    return st->acked_pause;
}

/* One run an entry lists against the index: the row that holds its first
 * seq must be the run, exactly, and name the entry. */
static void verify_acked_run(verify_state_t *st, uint64_t first, uint64_t last, uint64_t listed_by,
                             int found, uint64_t row_first, uint64_t row_last, uint64_t named)
{
    if (!found)
        verify_index_problem(st,
                             "entry %llu lists delivery %llu as acked, but the index does not "
                             "name it",
                             (unsigned long long)listed_by, (unsigned long long)first);
    else if (named != listed_by)
        verify_index_problem(st,
                             "entry %llu lists delivery %llu as acked, but the index names "
                             "entry %llu for it",
                             (unsigned long long)listed_by, (unsigned long long)first,
                             (unsigned long long)named);
    else if (row_first != first || row_last != last)
        verify_index_problem(st,
                             "entry %llu lists deliveries %llu to %llu as acked (a run), but the "
                             "index's row for delivery %llu holds %llu to %llu",
                             (unsigned long long)listed_by, (unsigned long long)first,
                             (unsigned long long)last, (unsigned long long)first,
                             (unsigned long long)row_first, (unsigned long long)row_last);
}

/* A look-up round: the index must hold, for each run of deliveries an
 * entry lists, a row of that run naming that entry. Returns 0, or -1 on
 * a read error. */
static int verify_acked_round(store_t *store, verify_state_t *st)
{
    for (size_t i = 0; i < st->n_acked && st->report->index_intact; i++) {
        uint64_t first = st->acked[i][0], row_first = 0, row_last = 0, named = 0;
        int rc = store_audit_acked_row(store, first, &row_first, &row_last, &named);
        if (rc < 0)
            return -1;
        verify_acked_run(st, first, st->acked[i][1], st->acked[i][2], rc, row_first, row_last,
                         named);
    }
    st->n_acked = 0;
    return 0;
}

/* After an intact chain: the index holds no row beyond those the entries
 * list (each listed run was looked up), and no two of its rows overlap
 * (a look-up descends to one of them only). Rows for entries after the
 * last one verified (a live broker goes on writing) are not counted, but
 * a row naming an entry that does not exist is named: it would make the
 * ack of its deliveries fail for good. */
static int verify_index_end(store_t *store, verify_state_t *st)
{
    uint64_t rows = 0, delivery = 0, entry = 0, overlap[4];
    int rc = store_audit_acked_count(store, st->report->last_seq, &rows);
    if (rc <= 0)
        return rc; /* -1, or 0: a store from before the index */
    st->report->index_checked = 1;
    const audit_verify_report_t *r = st->report;
    if (rows != r->acked_runs)
        verify_index_problem(
            st,
            "the index holds %llu %s for entries up to %llu, but those "
            "entries list %llu acked %s in %llu %s",
            (unsigned long long)rows, plural(rows, "row", "rows"), (unsigned long long)r->last_seq,
            (unsigned long long)r->acked_seqs, plural(r->acked_seqs, "delivery", "deliveries"),
            (unsigned long long)r->acked_runs, plural(r->acked_runs, "run", "runs"));
    rc = store_audit_acked_overlap(store, overlap);
    if (rc < 0)
        return -1;
    if (rc > 0)
        verify_index_problem(st,
                             "the index's rows for deliveries %llu to %llu and %llu to %llu "
                             "overlap (a look-up of delivery %llu finds only the second)",
                             (unsigned long long)overlap[0], (unsigned long long)overlap[1],
                             (unsigned long long)overlap[2], (unsigned long long)overlap[3],
                             (unsigned long long)overlap[2]);
    rc = store_audit_acked_stray(store, st->report->last_seq, &delivery, &entry);
    if (rc < 0)
        return -1;
    if (rc > 0)
        verify_index_problem(st,
                             "the index names entry %llu for delivery %llu, but the trail has "
                             "no such entry (an ack of delivery %llu would fail)",
                             (unsigned long long)entry, (unsigned long long)delivery,
                             (unsigned long long)delivery);
    return 0;
}

static int verify_first_checkpoint(const store_audit_checkpoint_t *cp, void *arg)
{
    *(uint64_t *)arg = cp->seq;
    return 1;
}

/* After the last entry: nothing may be certified or anchored beyond it. */
static int verify_end(store_t *store, verify_state_t *st)
{
    uint64_t beyond = 0, last = st->expected - 1;
    if (store_audit_checkpoint_scan(store, last, INT64_MAX, verify_first_checkpoint, &beyond) < 0)
        return -1;
    if (beyond != 0)
        verify_broken(st, last + 1,
                      "a checkpoint certifies entry %llu, but the trail ends at seq %llu: "
                      "entries from %llu on were removed",
                      (unsigned long long)beyond, (unsigned long long)last,
                      (unsigned long long)last + 1);
    else if (st->anchor != NULL && st->anchor->seq > last)
        verify_broken(st, last + 1,
                      "the anchor names entry %llu, but the trail ends at seq %llu: entries from "
                      "%llu on were removed",
                      (unsigned long long)st->anchor->seq, (unsigned long long)last,
                      (unsigned long long)last + 1);
    if (!st->report->intact)
        return 0;
    uint64_t off_chain = 0;
    if (store_audit_off_chain(store, &off_chain) != 0)
        return -1;
    if (off_chain > 0)
        verify_broken(st, last + 1,
                      "the file holds %llu audit row(s) outside the chain (seq below 1): the "
                      "broker writes none, so they were put there by other means",
                      (unsigned long long)off_chain);
    return 0;
}

/* After an intact chain: SQLite's indexes of the trail's tables. The
 * chain is read by seq (the rowid) alone, so an index rebuilt outside the
 * broker, its definition put back, changes no hash; but the export reads
 * through it. Returns 0, or -1 on a read error. */
static int verify_tables(store_t *store, audit_verify_report_t *report)
{
    if (store_audit_integrity(store, report->tables_problem, sizeof report->tables_problem,
                              &report->tables_problems) != 0)
        return -1;
    report->tables_checked = 1;
    report->tables_intact = report->tables_problems == 0;
    return 0;
}

/* One batch: its checkpoints, then its entries. Returns the entries read,
 * or -1 on a read error. */
static int verify_batch(store_t *store, verify_state_t *st)
{
    uint64_t after = st->expected - 1;
    st->n_cps = st->next_cp = 0;
    if (store_audit_checkpoint_scan(store, after, after + SCHAKEL_AUDIT_VERIFY_BATCH,
                                    verify_collect_checkpoint, st) < 0)
        return -1;
    if (st->out_of_memory)
        return -1;
    st->acked_pause = 0;
    int n = store_audit_scan(store, after, SCHAKEL_AUDIT_VERIFY_BATCH, verify_entry, st);
    if (n < 0 || st->out_of_memory || verify_acked_round(store, st) != 0)
        return -1;
    return n;
}

int audit_verify(store_t *store, const uint8_t (*keys)[32], size_t n_keys,
                 const audit_anchor_t *anchor, audit_verify_report_t *report)
{
    verify_state_t st;
    if (report == NULL)
        return -1;
    memset(report, 0, sizeof *report);
    memset(&st, 0, sizeof st);
    report->intact = 1;
    report->index_intact = 1;
    st.keys = keys;
    st.n_keys = keys != NULL ? n_keys : 0;
    st.anchor = anchor;
    st.report = report;
    st.expected = 1;
    /* One snapshot for all of it: a running broker commits entries and
     * checkpoints meanwhile, and a checkpoint read before the entries it
     * certifies would look like a trail cut back. */
    int snapshot = store_audit_snapshot_begin(store);
    int result = snapshot < 0 ? -1 : 0;
    if (result == 0 && (st.acked_index = store_audit_acked_index(store)) < 0)
        result = -1;
    for (; result == 0;) {
        int n = verify_batch(store, &st);
        if (n < 0) {
            result = -1;
            break;
        }
        if (!report->intact || ((size_t)n < SCHAKEL_AUDIT_VERIFY_BATCH && !st.acked_pause))
            break;
    }
    if (result == 0 && report->intact &&
        (verify_end(store, &st) != 0 || (report->intact && verify_index_end(store, &st) != 0) ||
         (report->intact && verify_tables(store, report) != 0)))
        result = -1;
    if (result != 0) {
        report->intact = 0;
        snprintf(report->problem, sizeof report->problem, "cannot read the trail: %s",
                 st.out_of_memory ? "out of memory" : store_errmsg(store));
    }
    store_audit_snapshot_end(store, snapshot);
    free(st.cps);
    free(st.acked);
    return result;
}
