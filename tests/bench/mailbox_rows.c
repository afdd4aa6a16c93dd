/*
 * mailbox_rows.c — a measurement, not a test: the store's own code for a
 * mailbox of rows of one publish and recipient (store_mailbox.c, the
 * broker's since schema 13) against a row per delivery (--schema today:
 * what store_delivery_add makes, as schema 12 kept a delivery in a row of
 * its own; measured against schema 12's table itself before the switch),
 * so that the instructions per delivery of docs/design/mailbox.md section
 * 5 (a prototype in SQLite alone) can be checked on the real code, sealing
 * and opening included.
 *
 * It makes a store in a temporary folder (store_open, the broker's
 * settings), then: --publishes publishes of --items items of 1 KiB at
 * fan-out 3, one transaction each (publish, items, and either a delivery
 * per item and recipient or a row per recipient); each recipient's
 * mailbox scanned in rounds of 16 as the push does (every item opened, or
 * none with --kept, as for items the push keeps); acks in frames of 256
 * seqs in order, one transaction each. Each phase is a function of its
 * own, for callgrind:
 *
 *   valgrind --tool=callgrind --callgrind-out-file=cg.out \
 *     build/bench/mailbox_rows --schema rows --items 256 --publishes 40
 *   callgrind_annotate --inclusive=yes cg.out | grep mailbox_rows.c:
 *
 * Never part of `make test` or `make bench`.
 */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"
#include "store_mailbox.h"

#define RECIPIENTS 3
#define ROUND 16      /* deliveries per receiver per push round (deliver.c) */
#define ACK_FRAME 256 /* seqs per Ack frame */
#define ITEM_BYTES 1024
#define MAX_ITEMS 256
#define NOW 1750000000LL

#define NOINLINE __attribute__((noinline))

static const char *const recipients[RECIPIENTS] = {
    "politie/signalen-ontvangst", "zorg/wijkteam-centrum", "woningcorp/meldpunt-overlast"};
static const store_mailbox_rule_t rules[RECIPIENTS] = {
    {"gemeente-naar-politie", "3f1c9a0b7d2e4f6081a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708",
     "Signalering van overlast en onveiligheid in de wijk",
     "Gemeentewet art. 172; Wet politiegegevens art. 8", NOW + 86400, 0x1f},
    {"gemeente-naar-zorg", "4f1c9a0b7d2e4f6081a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708",
     "Signalering van overlast en onveiligheid in de wijk", "Wmo 2015 art. 5.2.2", NOW + 86400,
     0x0f},
    {"gemeente-naar-woningcorp", "5f1c9a0b7d2e4f6081a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708",
     "Signalering van overlast en onveiligheid in de wijk", "Woningwet art. 45", NOW + 86400, 0x07},
};
#define SENDER "gemeente/meldingen"

typedef struct bench {
    store_t *store;
    int rows; /* 1: a row per publish and recipient; 0: a row per delivery */
    int items, publishes, kept;
    uint64_t *seqs[RECIPIENTS]; /* what the scan handed out, to ack */
    size_t n_seqs[RECIPIENTS];
    uint64_t deliveries;
} bench_t;

static void die(bench_t *b, const char *what)
{
    fprintf(stderr, "mailbox_rows: %s: %s\n", what, store_errmsg(b->store));
    exit(1);
}

static NOINLINE void publish_one(bench_t *b, int p)
{
    uint8_t id[16] = {0}, hash[32] = {1}, sig[64] = {2}, root[32] = {3};
    uint8_t body[ITEM_BYTES];
    int64_t item_seq[MAX_ITEMS];
    memcpy(id, &p, sizeof p);
    memset(body, 'x', sizeof body);
    if (store_begin(b->store) != 0)
        die(b, "begin");
    int64_t publish_id =
        store_publish_add_retained(b->store, SENDER, id, hash, sig, root, NOW, NOW + 86400);
    int64_t first = store_delivery_seqs_reserve(b->store, (uint64_t)(RECIPIENTS * b->items));
    if (publish_id < 0 || first < 0)
        die(b, "publish");
    for (int i = 0; i < b->items; i++) {
        item_seq[i] = store_item_add_retained(b->store, publish_id, (uint32_t)i, body, sizeof body,
                                              NOW + 86400);
        if (item_seq[i] < 0)
            die(b, "item");
        for (int r = 0; r < RECIPIENTS && !b->rows; r++) {
            store_delivery_t d = {
                .seq = (uint64_t)(first + r * b->items + i),
                .recipient = recipients[r],
                .item_seq = (uint64_t)item_seq[i],
                .message_id = id,
                .item_index = (uint32_t)i,
                .sender = SENDER,
                .sender_partner = "gemeente",
                .rule_id = rules[r].rule_id,
                .rule_hash = rules[r].rule_hash,
                .purpose = rules[r].purpose,
                .legal_basis = rules[r].legal_basis,
                .accepted_at = NOW,
                .expires_at = rules[r].expires_at,
                .by_ref = 1,
                .fields = rules[r].fields,
            };
            if (store_delivery_add_reserved(b->store, &d) < 0)
                die(b, "delivery add");
        }
    }
    for (int r = 0; r < RECIPIENTS && b->rows; r++) {
        store_mailbox_entry_t entries[MAX_ITEMS];
        for (int i = 0; i < b->items; i++)
            entries[i] = (store_mailbox_entry_t){(uint64_t)item_seq[i], (uint32_t)i, 0};
        store_mailbox_row_t row = {
            .first_seq = (uint64_t)(first + r * b->items),
            .recipient = recipients[r],
            .sender = SENDER,
            .sender_partner = "gemeente",
            .message_id = id,
            .accepted_at = NOW,
            .entries = entries,
            .n = (size_t)b->items,
            .rules = &rules[r],
            .n_rules = 1,
        };
        if (store_mailbox_row_add(b->store, &row) != 0)
            die(b, "row add");
    }
    if (store_commit(b->store) != 0)
        die(b, "commit");
    b->deliveries += (uint64_t)(RECIPIENTS * b->items);
}

static NOINLINE void publish_all(bench_t *b)
{
    for (int p = 0; p < b->publishes; p++)
        publish_one(b, p);
}

typedef struct round {
    bench_t *b;
    int r;
    uint64_t last;
} round_t;

static int scanned(const store_delivery_t *d, void *arg)
{
    round_t *round = arg;
    round->b->seqs[round->r][round->b->n_seqs[round->r]++] = d->seq;
    round->last = d->seq;
    return 0;
}

static int have_item(uint64_t item_seq, void *arg)
{
    (void)item_seq;
    return ((round_t *)arg)->b->kept;
}

static NOINLINE void scan_all(bench_t *b)
{
    store_scan_hints_t hints = {.have_item = have_item, .vouch = NULL};
    for (int r = 0; r < RECIPIENTS; r++) {
        round_t round = {b, r, 0};
        for (;;) {
            int n = b->rows ? store_mailbox_row_scan(b->store, recipients[r], round.last, ROUND,
                                                     &hints, scanned, &round)
                            : store_mailbox_scan_vouched(b->store, recipients[r], round.last, ROUND,
                                                         &hints, scanned, &round);
            if (n < 0)
                die(b, "scan");
            if (n == 0)
                break;
        }
    }
}

static NOINLINE void ack_all(bench_t *b)
{
    for (int r = 0; r < RECIPIENTS; r++)
        for (size_t k = 0; k < b->n_seqs[r]; k += ACK_FRAME) {
            if (store_begin(b->store) != 0)
                die(b, "begin");
            for (size_t j = k; j < b->n_seqs[r] && j < k + ACK_FRAME; j++) {
                int acked = b->rows ? store_mailbox_row_ack(b->store, recipients[r], b->seqs[r][j])
                                    : store_delivery_ack(b->store, recipients[r], b->seqs[r][j]);
                if (acked != 1)
                    die(b, "ack");
            }
            if (store_commit(b->store) != 0)
                die(b, "commit");
        }
}

static long number(const char *text, long min, long max)
{
    char *end = NULL;
    long value = strtol(text, &end, 10);
    if (end == text || *end != '\0' || value < min || value > max) {
        fprintf(stderr, "mailbox_rows: %s is not a number from %ld to %ld\n", text, min, max);
        exit(2);
    }
    return value;
}

int main(int argc, char **argv)
{
    bench_t b = {.items = 256, .publishes = 40};
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--schema") == 0 && v != NULL) {
            b.rows = strcmp(v, "rows") == 0;
            if (!b.rows && strcmp(v, "today") != 0)
                break;
            i++;
        } else if (strcmp(argv[i], "--items") == 0 && v != NULL) {
            b.items = (int)number(argv[++i], 1, MAX_ITEMS);
        } else if (strcmp(argv[i], "--publishes") == 0 && v != NULL) {
            b.publishes = (int)number(argv[++i], 1, 100000);
        } else if (strcmp(argv[i], "--kept") == 0) {
            b.kept = 1;
        } else {
            fprintf(stderr, "usage: mailbox_rows [--schema today|rows] [--items N]"
                            " [--publishes N] [--kept]\n");
            return 2;
        }
    }
    if (sodium_init() < 0)
        return 1;
    char dir[] = "/tmp/mailbox-rows-XXXXXX", path[64], err[256];
    if (mkdtemp(dir) == NULL)
        return 1;
    snprintf(path, sizeof path, "%s/store.db", dir);
    uint8_t key[STORE_KEY_BYTES];
    randombytes_buf(key, sizeof key);
    store_global_init();
    b.store = store_open(path, key, STORE_OPEN_CREATE, err, sizeof err);
    if (b.store == NULL) {
        fprintf(stderr, "mailbox_rows: %s\n", err);
        return 1;
    }
    if (b.rows && store_mailbox_schema(b.store) != 0)
        die(&b, "schema");
    for (int r = 0; r < RECIPIENTS; r++)
        if ((b.seqs[r] = malloc(sizeof(uint64_t) * (size_t)b.items * (size_t)b.publishes)) == NULL)
            return 1;
    publish_all(&b);
    scan_all(&b);
    ack_all(&b);
    printf("schema %s  items %d  publishes %d  deliveries %" PRIu64 "%s\n",
           b.rows ? "rows" : "today", b.items, b.publishes, b.deliveries, b.kept ? "  kept" : "");
    store_close(&b.store);
    for (int r = 0; r < RECIPIENTS; r++)
        free(b.seqs[r]);
    const char *files[] = {"store.db", "store.db-wal", "store.db-shm", "store.db.lock"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    return 0;
}
