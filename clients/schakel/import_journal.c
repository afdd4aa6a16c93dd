/*
 * import_journal.c — the journal of `schakel import` (FILE.import-state):
 * which lines are done and which were refused, so that a rerun skips them
 * and a batch is never published twice; and the list of refusals with its
 * file (FILE.refused).
 *
 * The journal is text: a header naming the file (size and BLAKE2b-256),
 * the sender, the format, the batch size and how message ids are derived
 * ("ids keyed CHECK", CHECK the check of the sender's id key in 32 hex
 * digits; a journal of keyed ids says "schakel-import-journal 2" in its
 * first line, so that one cut before its ids line reads as incomplete, not
 * as one of unkeyed ids; a journal begun by a schakel from before keyed
 * ids says 1 and has no ids line, and its ids stay unkeyed, also across
 * --restart), then one line per refusal
 * ("R LINE REASON text"), per finished batch ("D FIRST LAST ACCEPTED
 * SEQ", SEQ the highest item seq the broker answered for its lines) and
 * per broker store epoch a run began with, or met after libschakel made
 * its connection again, that the journal did not name last ("E EPOCH",
 * 32 hex digits, or "E EPOCH FLOOR" with the epoch's floor seq when that
 * kept batches), and per run with another key than the journal's last
 * ("K CHECK"; only with --new-key: another key is refused, as it would
 * publish again under other ids what the journal does not record),
 * appended and made durable (fdatasync) as they happen.
 * An E line with another epoch than the E line before it means the
 * broker's store was restored from a backup in between: of the batches
 * done before it only those whose SEQ is at most FLOOR still count (the
 * backup has them, or forgot them on purpose), the refusals all do. A
 * journal from before E lines, or D lines without SEQ, reads as before.
 * It trusts its own journal only as far as it parses: anything else is
 * "damaged". Errors are returned as text, never printed here.
 */
#include "import.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "syntax.h"

/* The first line: 2 for a journal of keyed ids (its header ends with the
 * ids line), 1 for one of unkeyed ids (no ids line; a journal with 1 and
 * an ids line is of keyed ids as well, from a schakel that wrote it so). */
#define IMPORT_JOURNAL_MAGIC "schakel-import-journal 2"
#define IMPORT_JOURNAL_MAGIC_UNKEYED "schakel-import-journal 1"
#define IMPORT_JOURNAL_MAX_BYTES (1024L * 1024L * 1024L)

/* ------------------------------------------------------------ refusals */

int import_refusals_add(import_refusals_t *refusals, long line, const char *reason,
                        const char *text)
{
    if (refusals->n == refusals->cap) {
        size_t cap = refusals->cap == 0 ? 64 : refusals->cap * 2;
        import_refusal_t *grown = realloc(refusals->items, cap * sizeof *grown);
        if (grown == NULL)
            return -1;
        refusals->items = grown;
        refusals->cap = cap;
    }
    size_t len = strnlen(text, IMPORT_MAX_TEXT);
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        copy[i] = c < 0x20 || c == 0x7f ? ' ' : (char)c; /* one line each, in both files */
    }
    copy[len] = '\0';
    import_refusal_t *r = &refusals->items[refusals->n++];
    r->line = line;
    snprintf(r->reason, sizeof r->reason, "%s", reason);
    r->text = copy;
    return 0;
}

static int import_refusal_order(const void *a, const void *b)
{
    const import_refusal_t *x = a, *y = b;
    return (x->line > y->line) - (x->line < y->line);
}

const import_refusal_t *import_refusals_loaded(const import_refusals_t *refusals, long line)
{
    import_refusal_t key = {.line = line};
    if (refusals->n_loaded == 0)
        return NULL;
    return bsearch(&key, refusals->items, refusals->n_loaded, sizeof key, import_refusal_order);
}

/* Sort the refusals and keep the first of each line. */
static void import_refusals_sort(import_refusals_t *refusals, size_t from)
{
    size_t n = refusals->n - from;
    if (n == 0)
        return;
    import_refusal_t *items = refusals->items + from;
    qsort(items, n, sizeof *items, import_refusal_order);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (kept > 0 && items[kept - 1].line == items[i].line) {
            free(items[i].text);
            continue;
        }
        items[kept++] = items[i];
    }
    refusals->n = from + kept;
}

int import_refusals_write(import_refusals_t *refusals, const char *path, char *err, size_t errlen)
{
    import_refusals_sort(refusals, 0);
    refusals->n_loaded = refusals->n;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *file = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (file == NULL) {
        snprintf(err, errlen, "cannot write the refusals to %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    for (size_t i = 0; i < refusals->n; i++)
        fprintf(file, "line %ld: %s: %s\n", refusals->items[i].line, refusals->items[i].reason,
                refusals->items[i].text);
    if (fclose(file) != 0) {
        snprintf(err, errlen, "cannot write the refusals to %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

void import_refusals_free(import_refusals_t *refusals)
{
    for (size_t i = 0; i < refusals->n; i++)
        free(refusals->items[i].text);
    free(refusals->items);
    memset(refusals, 0, sizeof *refusals);
}

/* ------------------------------------------------------------ writing */

static int import_write_all(int fd, const char *text, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, text, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        text += n;
        len -= (size_t)n;
    }
    return 0;
}

static int import_journal_append(import_journal_t *journal, const char *text, int sync, char *err,
                                 size_t errlen)
{
    if (import_write_all(journal->fd, text, strlen(text)) != 0 ||
        (sync && fdatasync(journal->fd) != 0)) {
        snprintf(err, errlen, "cannot write the journal: %s", strerror(errno));
        return -1;
    }
    return 0;
}

int import_journal_refusal(import_journal_t *journal, const import_refusal_t *refusal, int sync,
                           char *err, size_t errlen)
{
    char line[IMPORT_MAX_TEXT + 96];
    snprintf(line, sizeof line, "R %ld %s %s\n", refusal->line, refusal->reason, refusal->text);
    return import_journal_append(journal, line, sync, err, errlen);
}

/* ------------------------------------------------------------ batches done */

/* The first batch done whose last line is at least line (n_done: none). */
static size_t import_done_find(const import_journal_t *journal, long line)
{
    size_t low = 0, high = journal->n_done;
    while (low < high) {
        size_t mid = low + (high - low) / 2;
        if (journal->done[mid].last < line)
            low = mid + 1;
        else
            high = mid;
    }
    return low;
}

int import_journal_is_done(const import_journal_t *journal, long line)
{
    size_t at = import_done_find(journal, line);
    return at < journal->n_done && journal->done[at].first <= line;
}

/* A batch done, in its place. -1 when it is no batch of lines or overlaps
 * one done (damage), -2 short of memory. */
static int import_done_add(import_journal_t *journal, const import_done_t *batch)
{
    size_t at = import_done_find(journal, batch->first);
    if (batch->first < 1 || batch->last < batch->first ||
        (at < journal->n_done && journal->done[at].first <= batch->last))
        return -1;
    if (journal->n_done == journal->cap_done) {
        size_t cap = journal->cap_done == 0 ? 64 : journal->cap_done * 2;
        import_done_t *grown = realloc(journal->done, cap * sizeof *grown);
        if (grown == NULL)
            return -2;
        journal->done = grown;
        journal->cap_done = cap;
    }
    memmove(journal->done + at + 1, journal->done + at,
            (journal->n_done - at) * sizeof *journal->done);
    journal->done[at] = *batch;
    journal->n_done++;
    journal->accepted_before += batch->accepted;
    return 0;
}

int import_journal_done(import_journal_t *journal, long first, long last, uint64_t accepted,
                        uint64_t max_seq, char *err, size_t errlen)
{
    char line[128];
    import_done_t batch = {first, last, accepted, max_seq, 1};
    if (import_journal_is_done(journal, first) || import_journal_is_done(journal, last)) {
        snprintf(err, errlen, "lines %ld to %ld are in a batch the journal has done", first, last);
        return -1;
    }
    snprintf(line, sizeof line, "D %ld %ld %" PRIu64 " %" PRIu64 "\n", first, last, accepted,
             max_seq);
    if (import_journal_append(journal, line, 1, err, errlen) != 0)
        return -1;
    if (import_done_add(journal, &batch) != 0) {
        snprintf(err, errlen, "out of memory (the journal holds lines %ld to %ld)", first, last);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ store epochs */

/* What a change to another epoch with this floor does to the batches
 * done. Item seqs are never handed out twice and a restore moves the
 * counter past every seq handed out before it, so a batch recorded under
 * the journal's last epoch with seqs at most the floor (the highest of the
 * backup) was accepted before the backup was taken, in the history the
 * backup has. That holds for a backup of the last epoch or of one before
 * it (its floor is below every seq of the epochs after it: those batches
 * are published again), not for one made after a restore the journal did
 * not see: such a restore moved the counter at least
 * SCHAKEL_RESTORE_SEQ_MARGIN past the journal's seqs, and a backup made
 * after it has a floor as far above them. Half the margin leaves room for
 * a restore without the replaced store's counters (they go on from the
 * backup's then), and asks, at worst, too often. */
static enum import_epoch_change import_epoch_judge(const import_journal_t *journal, int floor_known,
                                                   uint64_t floor)
{
    uint64_t highest = 0;
    int any_seq = 0;
    for (size_t i = 0; i < journal->n_done; i++) {
        any_seq |= journal->done[i].has_seq;
        if (journal->done[i].has_seq && journal->done[i].max_seq > highest)
            highest = journal->done[i].max_seq;
    }
    if (!floor_known)
        return IMPORT_EPOCH_NO_FLOOR;
    /* D lines without seqs alone: nothing to compare, and nothing to keep */
    if (any_seq && floor >= highest && floor - highest >= SCHAKEL_RESTORE_SEQ_MARGIN / 2)
        return IMPORT_EPOCH_FLOOR_AFAR;
    return IMPORT_EPOCH_FLOOR;
}

/* How many batches the change keeps; with apply, keep only those. */
static size_t import_epoch_keep(import_journal_t *journal, enum import_epoch_change change,
                                uint64_t floor, int apply)
{
    size_t kept = 0, without_seq = 0;
    uint64_t accepted = 0;
    for (size_t i = 0; i < journal->n_done; i++) {
        const import_done_t *batch = &journal->done[i];
        without_seq += !batch->has_seq;
        if (change != IMPORT_EPOCH_FLOOR || !batch->has_seq || batch->max_seq > floor)
            continue;
        accepted += batch->accepted;
        if (apply)
            journal->done[kept] = *batch;
        kept++;
    }
    if (apply) {
        journal->n_done = kept;
        journal->accepted_before = accepted;
        journal->kept_by_floor = kept;
        journal->dropped_without_seq = without_seq;
    }
    return kept;
}

/* The change an epoch (and its floor) makes to the journal: none for its
 * own, or when nothing is done to lose. */
static enum import_epoch_change import_epoch_change(const import_journal_t *journal,
                                                    const uint8_t *epoch, int floor_known,
                                                    uint64_t floor)
{
    if (!journal->has_epoch || memcmp(journal->epoch, epoch, sizeof journal->epoch) == 0 ||
        journal->n_done == 0)
        return IMPORT_EPOCH_SAME;
    return import_epoch_judge(journal, floor_known, floor);
}

/* A store epoch: the journal's lines are of the store it names. */
static void import_epoch_take(import_journal_t *journal, const uint8_t *epoch, int floor_known,
                              uint64_t floor)
{
    enum import_epoch_change change = import_epoch_change(journal, epoch, floor_known, floor);
    if (change != IMPORT_EPOCH_SAME)
        (void)import_epoch_keep(journal, change, floor, 1);
    memcpy(journal->epoch, epoch, sizeof journal->epoch);
    journal->has_epoch = 1;
}

int import_journal_epoch(import_journal_t *journal, const uint8_t epoch[SCHAKEL_STORE_EPOCH_BYTES],
                         int floor_known, uint64_t floor, char *err, size_t errlen)
{
    journal->kept_by_floor = 0; /* they tell of this change alone */
    journal->dropped_without_seq = 0;
    if (journal->has_epoch && memcmp(journal->epoch, epoch, sizeof journal->epoch) == 0)
        return IMPORT_EPOCH_SAME;
    enum import_epoch_change change = import_epoch_change(journal, epoch, floor_known, floor);
    char line[2 * SCHAKEL_STORE_EPOCH_BYTES + 32] = "E ";
    syntax_hex(epoch, SCHAKEL_STORE_EPOCH_BYTES, line + 2);
    /* the floor only when it keeps something: "E EPOCH" alone keeps
     * nothing, which a schakel from before floors reads the same way; one
     * with a floor it calls damaged, rather than publish again what it
     * keeps */
    if (change != IMPORT_EPOCH_SAME && import_epoch_keep(journal, change, floor, 0) > 0)
        snprintf(line + strlen(line), sizeof line - strlen(line), " %" PRIu64, floor);
    strcat(line, "\n");
    if (import_journal_append(journal, line, 1, err, errlen) != 0)
        return -1;
    import_epoch_take(journal, epoch, floor_known, floor);
    return (int)change;
}

/* A new journal of these ids (enum import_ids): the header, durable. The
 * file is first cut to its first keep bytes (the header of the journal a
 * restart replaces, which names the same ids), durably, and then the
 * header is written over them: a crash in between leaves a header that
 * still says how the lines published so far were derived. */
static int import_journal_start(import_journal_t *journal, const char *path,
                                const import_identity_t *identity, int ids, off_t keep, char *err,
                                size_t errlen)
{
    char hash[2 * sizeof identity->fingerprint->hash + 1];
    char check[2 * IMPORT_KEY_CHECK_BYTES + 1];
    char header[512];
    if (ids == IMPORT_IDS_KEYED && identity->key_check == NULL) {
        snprintf(err, errlen, "no key to derive message ids with");
        return -1;
    }
    syntax_hex(identity->fingerprint->hash, sizeof identity->fingerprint->hash, hash);
    if (ids == IMPORT_IDS_KEYED)
        syntax_hex(identity->key_check, IMPORT_KEY_CHECK_BYTES, check);
    int len = snprintf(
        header, sizeof header,
        "# journal of `schakel import`: the lines done and refused; see schakel(1)\n"
        "%s\nfile %" PRIu64 " %s\nsender %s\nformat %s\nbatch %u\n%s%s%s",
        ids == IMPORT_IDS_KEYED ? IMPORT_JOURNAL_MAGIC : IMPORT_JOURNAL_MAGIC_UNKEYED,
        identity->fingerprint->size, hash, identity->sender, import_format_name(identity->format),
        identity->batch, ids == IMPORT_IDS_KEYED ? "ids keyed " : "",
        ids == IMPORT_IDS_KEYED ? check : "", ids == IMPORT_IDS_KEYED ? "\n" : "");
    if (ftruncate(journal->fd, keep) != 0 || fdatasync(journal->fd) != 0 ||
        lseek(journal->fd, 0, SEEK_SET) != 0 ||
        import_journal_append(journal, header, 0, err, errlen) != 0 ||
        ftruncate(journal->fd, (off_t)len) != 0 || fdatasync(journal->fd) != 0) {
        snprintf(err, errlen, "cannot write the journal %s: %s", path, strerror(errno));
        return -1;
    }
    journal->batch = identity->batch;
    journal->n_done = 0;
    journal->accepted_before = 0;
    journal->ids = ids;
    if (ids == IMPORT_IDS_KEYED)
        memcpy(journal->key_check, identity->key_check, sizeof journal->key_check);
    return 0;
}

/* ------------------------------------------------------------ reading */

/* The whole journal into a NUL-terminated buffer, a torn last line (a
 * crash while appending) cut from the file. NULL with err on failure. */
static char *import_journal_slurp(int fd, const char *path, size_t *len, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size > IMPORT_JOURNAL_MAX_BYTES) {
        snprintf(err, errlen, "cannot read the journal %s", path);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    char *text = malloc(size + 1);
    if (text == NULL) {
        snprintf(err, errlen, "out of memory reading the journal %s", path);
        return NULL;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t n = pread(fd, text + got, size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "cannot read the journal %s", path);
            free(text);
            return NULL;
        }
        got += (size_t)n;
    }
    while (size > 0 && text[size - 1] != '\n')
        size--;
    text[size] = '\0';
    if (size != (size_t)st.st_size && ftruncate(fd, (off_t)size) != 0) {
        snprintf(err, errlen, "cannot repair the journal %s: %s", path, strerror(errno));
        free(text);
        return NULL;
    }
    *len = size;
    return text;
}

/* What a journal's header says. */
typedef struct import_header {
    unsigned long long size;
    char hash[80];
    char sender[IMPORT_PRINCIPAL_SIZE];
    char format[16];
    unsigned batch;
    int lines;   /* header lines seen */
    int version; /* of the first line: 2 (keyed ids, an ids line follows) or 1 */
} import_header_t;

static int import_header_line(import_header_t *h, const char *line)
{
    switch (h->lines) {
    case 0:
        h->version = strcmp(line, IMPORT_JOURNAL_MAGIC) == 0           ? 2
                     : strcmp(line, IMPORT_JOURNAL_MAGIC_UNKEYED) == 0 ? 1
                                                                       : 0;
        return h->version != 0 ? 0 : -1;
    case 1:
        return sscanf(line, "file %llu %79s", &h->size, h->hash) == 2 ? 0 : -1;
    case 2:
        return sscanf(line, "sender %135s", h->sender) == 1 ? 0 : -1;
    case 3:
        return sscanf(line, "format %15s", h->format) == 1 ? 0 : -1;
    default:
        return sscanf(line, "batch %u", &h->batch) == 1 && h->batch >= 1 &&
                       h->batch <= SCHAKEL_MAX_ITEMS
                   ? 0
                   : -1;
    }
}

/* Are text's first n words (single spaces between them, none after) of
 * digits alone, and under 20 each (sscanf's %llu takes a sign and wraps
 * around on overflow)? */
static int import_decimal_words(const char *text, int n)
{
    for (int word = 0; word < n; word++) {
        size_t digits = strspn(text, "0123456789");
        if (digits == 0 || digits > 19)
            return 0;
        text += digits;
        if (word + 1 < n && *text++ != ' ')
            return 0;
    }
    return *text == '\0';
}

/* An epoch line's words: the epoch, 32 hex digits, and the floor when it
 * kept batches. 0, or -1. */
static int import_epoch_line(import_journal_t *journal, const char *words)
{
    char hex[2 * SCHAKEL_STORE_EPOCH_BYTES + 1];
    uint8_t epoch[SCHAKEL_STORE_EPOCH_BYTES];
    size_t len = strcspn(words, " ");
    unsigned long long floor = 0;
    if (len != sizeof hex - 1)
        return -1;
    memcpy(hex, words, len);
    hex[len] = '\0';
    if (syntax_unhex(hex, epoch, sizeof epoch) != 0)
        return -1;
    int floor_known = words[len] == ' ';
    if (floor_known &&
        (!import_decimal_words(words + len + 1, 1) || sscanf(words + len + 1, "%llu", &floor) != 1))
        return -1;
    /* "E EPOCH" after another epoch keeps nothing, whatever the floor was */
    import_epoch_take(journal, epoch, floor_known, floor);
    return 0;
}

/* A key check (32 hex digits, nothing after) into check. 0, or -1. */
static int import_key_check_word(const char *hex, uint8_t check[IMPORT_KEY_CHECK_BYTES])
{
    return strlen(hex) == 2 * IMPORT_KEY_CHECK_BYTES &&
                   syntax_unhex(hex, check, IMPORT_KEY_CHECK_BYTES) == 0
               ? 0
               : -1;
}

/* The header's last line: "ids keyed CHECK" (a journal of version 2
 * has it; one of version 1 without it is of unkeyed ids, a schakel from
 * before keyed ids wrote it). 0, or -1 for another derivation (a newer
 * schakel's). */
static int import_ids_line(import_journal_t *journal, const char *line)
{
    if (strncmp(line, "ids keyed ", 10) != 0 ||
        import_key_check_word(line + 10, journal->key_check) != 0)
        return -1;
    journal->ids = IMPORT_IDS_KEYED;
    return 0;
}

/* One entry after the header. 0, or -1 when it does not parse. */
static int import_entry_line(import_journal_t *journal, import_refusals_t *refusals,
                             const char *line)
{
    long first, last;
    unsigned long long accepted, seq;
    char reason[IMPORT_REASON_SIZE];
    int text_at = 0;
    if (line[0] == 'E' && line[1] == ' ')
        return import_epoch_line(journal, line + 2);
    /* another key: only a journal of keyed ids has one */
    if (line[0] == 'K' && line[1] == ' ')
        return journal->ids == IMPORT_IDS_KEYED
                   ? import_key_check_word(line + 2, journal->key_check)
                   : -1;
    if (line[0] == 'R' && sscanf(line, "R %ld %31s %n", &first, reason, &text_at) == 2 &&
        text_at > 0 && first > 0)
        return import_refusals_add(refusals, first, reason, line + text_at);
    if (line[0] == 'D') {
        import_done_t batch;
        char end[2];
        int n = sscanf(line, "D %ld %ld %llu %llu%1s", &first, &last, &accepted, &seq, end);
        if ((n != 3 && n != 4) || !import_decimal_words(line + 2, n))
            return -1;
        batch =
            (import_done_t){first, last, (uint64_t)accepted, n == 4 ? (uint64_t)seq : 0, n == 4};
        return import_done_add(journal, &batch);
    }
    return -1;
}

/* Does the header name this identity? 0, or CLI_EXIT_USAGE with err. */
static int import_header_matches(const import_header_t *h, const import_identity_t *identity,
                                 int batch_given, const char *path, char *err, size_t errlen)
{
    char hash[2 * sizeof identity->fingerprint->hash + 1];
    syntax_hex(identity->fingerprint->hash, sizeof identity->fingerprint->hash, hash);
    if (h->size != identity->fingerprint->size || strcmp(h->hash, hash) != 0) {
        snprintf(err, errlen,
                 "the file has changed since its journal %s was written (then %llu bytes, now "
                 "%" PRIu64 "): the journal's line numbers may name other lines now. If lines "
                 "were only added and that import finished, import what follows its first "
                 "%llu bytes as a file of their own (tail -c +%llu); --restart imports the "
                 "file from the start, and publishes again the lines of every batch that "
                 "changed (the last one, when lines were added)",
                 path, h->size, identity->fingerprint->size, h->size, h->size + 1);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(h->sender, identity->sender) != 0) {
        snprintf(err, errlen,
                 "the journal %s is of an import by %s, not by %s: give --restart (or --state "
                 "with another file) to import as %s",
                 path, h->sender, identity->sender, identity->sender);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(h->format, import_format_name(identity->format)) != 0) {
        snprintf(err, errlen, "the journal %s is of an import as %s, not %s: give --restart", path,
                 h->format, import_format_name(identity->format));
        return CLI_EXIT_USAGE;
    }
    if (batch_given && h->batch != identity->batch) {
        snprintf(err, errlen,
                 "the journal %s was written with --batch %u: resume with that size (batches "
                 "must be cut as before), or give --restart",
                 path, h->batch);
        return CLI_EXIT_USAGE;
    }
    return CLI_EXIT_OK;
}

/* Resume: parse the journal, check it, take its state and refusals. */
static int import_journal_resume(import_journal_t *journal, const char *path, const char *text,
                                 const import_identity_t *identity, int batch_given,
                                 import_refusals_t *refusals, char *err, size_t errlen)
{
    import_header_t h;
    memset(&h, 0, sizeof h);
    size_t from = refusals->n;
    long line_no = 0;
    int entries = 0; /* lines after the header's first five */
    journal->ids = IMPORT_IDS_V1;
    const char *p = text;
    while (*p != '\0') {
        const char *end = strchr(p, '\n'); /* every line ends with one (see slurp) */
        char line[IMPORT_MAX_TEXT + 128];
        size_t len = (size_t)(end - p);
        line_no++;
        if (len >= sizeof line) {
            snprintf(err, errlen, "the journal %s is damaged at line %ld: give --restart", path,
                     line_no);
            return CLI_EXIT_USAGE;
        }
        memcpy(line, p, len);
        line[len] = '\0';
        p = end + 1;
        if (line[0] == '#')
            continue;
        int bad;
        if (h.lines < 5)
            bad = import_header_line(&h, line);
        else if (entries++ == 0 && (h.version == 2 || strncmp(line, "ids ", 4) == 0))
            bad = import_ids_line(journal, line);
        else
            bad = import_entry_line(journal, refusals, line);
        if (bad) {
            snprintf(err, errlen, "the journal %s is damaged at line %ld: give --restart", path,
                     line_no);
            return CLI_EXIT_USAGE;
        }
        if (h.lines < 5)
            h.lines++;
    }
    /* version 2 without its ids line: cut while its header was written,
     * before anything was published under it */
    if (h.lines < 5 || (h.version == 2 && journal->ids != IMPORT_IDS_KEYED)) {
        snprintf(err, errlen, "the journal %s has no complete header: give --restart", path);
        return CLI_EXIT_USAGE;
    }
    int rc = import_header_matches(&h, identity, batch_given, path, err, errlen);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (journal->ids == IMPORT_IDS_KEYED && !identity->new_key &&
        (identity->key_check == NULL ||
         memcmp(journal->key_check, identity->key_check, sizeof journal->key_check) != 0)) {
        snprintf(err, errlen,
                 "the journal %s was written with another key than this one (the sender's key "
                 "was replaced since): message ids derive from the key, so a batch the broker "
                 "accepted that the journal does not record as done (a run that stopped with "
                 "exit 1 or 4, or crashed) would be published again under another id and "
                 "delivered twice. Run it with the key file it was written with (--key) while "
                 "the broker still knows that key; when it no longer does, give --new-key to go "
                 "on with this one",
                 path);
        return CLI_EXIT_USAGE;
    }
    import_refusals_sort(refusals, from);
    refusals->n_loaded = refusals->n;
    journal->batch = h.batch;
    return CLI_EXIT_OK;
}

/* What the journal a restart replaces says of its ids. */
typedef struct import_prior {
    int ids;           /* enum import_ids of its header; 0 none (unreadable, another sender) */
    int other_key;     /* keyed: it names another key than this run's, or a K line not read */
    size_t header_end; /* bytes of its header (0 for none) */
} import_prior_t;

/* Read the header of the journal a restart replaces (text), and every K
 * line after it. A header that cannot be read, or is not complete, was
 * cut while it was written, before anything was published under it: it
 * names no ids; so does one of another sender (its ids are not this
 * sender's). */
static void import_journal_prior(const char *text, const import_identity_t *identity,
                                 import_prior_t *prior)
{
    import_header_t h;
    import_journal_t keyed = {.ids = IMPORT_IDS_V1};
    memset(&h, 0, sizeof h);
    memset(prior, 0, sizeof *prior);
    const char *p = text;
    while (*p != '\0') {
        const char *next = strchr(p, '\n') + 1; /* every line ends with one (see slurp) */
        char line[256];
        size_t len = (size_t)(next - 1 - p);
        if (len >= sizeof line) {
            if (h.lines < 5)
                return;
            break; /* an entry: the header ended before it */
        }
        memcpy(line, p, len);
        line[len] = '\0';
        if (line[0] != '#' && h.lines < 5) {
            if (import_header_line(&h, line) != 0)
                return;
            h.lines++;
        } else if (line[0] != '#') {
            /* the ids line ends the header; without one (version 1) the
             * header ended before this line */
            if (h.version == 2 || strncmp(line, "ids ", 4) == 0) {
                if (import_ids_line(&keyed, line) != 0)
                    return;
                p = next;
            }
            break;
        }
        p = next;
    }
    if (h.lines < 5 || (h.version == 2 && keyed.ids != IMPORT_IDS_KEYED) ||
        strcmp(h.sender, identity->sender) != 0)
        return;
    prior->ids = keyed.ids;
    prior->header_end = (size_t)(p - text);
    if (prior->ids != IMPORT_IDS_KEYED)
        return;
    prior->other_key = identity->key_check == NULL ||
                       memcmp(keyed.key_check, identity->key_check, IMPORT_KEY_CHECK_BYTES) != 0;
    if (identity->key_check == NULL)
        return;
    for (; *p != '\0'; p = strchr(p, '\n') + 1) {
        uint8_t check[IMPORT_KEY_CHECK_BYTES];
        char hex[2 * IMPORT_KEY_CHECK_BYTES + 1];
        size_t len = strcspn(p, "\n");
        if (p[0] != 'K')
            continue;
        if (len != sizeof hex + 1 || p[1] != ' ') {
            prior->other_key = 1;
            continue;
        }
        memcpy(hex, p + 2, sizeof hex - 1);
        hex[sizeof hex - 1] = '\0';
        prior->other_key |= import_key_check_word(hex, check) != 0 ||
                            memcmp(check, identity->key_check, sizeof check) != 0;
    }
}

/* --restart of a journal (text): a new one of the same ids. 0, or
 * CLI_EXIT_USAGE (another key, without new_key) or CLI_EXIT_FAILURE with
 * err. */
static int import_journal_restart(import_journal_t *journal, const char *path, const char *text,
                                  const import_identity_t *identity, char *err, size_t errlen)
{
    import_prior_t prior;
    import_journal_prior(text, identity, &prior);
    if (prior.ids == IMPORT_IDS_KEYED && prior.other_key && !identity->new_key) {
        snprintf(err, errlen,
                 "the journal %s names another key than this one (the sender's key was replaced "
                 "since): --restart publishes every line again, under the ids of this key, and "
                 "the broker takes the lines it accepted under the other key as new and delivers "
                 "them twice. Give --new-key as well to do so all the same",
                 path);
        return CLI_EXIT_USAGE;
    }
    int ids = prior.ids == IMPORT_IDS_V1 ? IMPORT_IDS_V1 : IMPORT_IDS_KEYED;
    return import_journal_start(journal, path, identity, ids, (off_t)prior.header_end, err,
                                errlen) == 0
               ? CLI_EXIT_OK
               : CLI_EXIT_FAILURE;
}

/* The folder entry of the journal, durable at every open (a run that
 * failed here left the file behind, and the next one resumes it): without
 * it a power loss could take the journal with the batches it records, and
 * a rerun publish them again after the broker has forgotten them. Nothing
 * is published until it holds. */
static int import_journal_sync_folder(const char *path, char *err, size_t errlen)
{
    char folder[4096];
    snprintf(folder, sizeof folder, "%s", path);
    char *slash = strrchr(folder, '/');
    if (slash == NULL)
        snprintf(folder, sizeof folder, ".");
    else if (slash == folder)
        folder[1] = '\0';
    else
        *slash = '\0';
    int dir = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0 || fsync(dir) != 0) {
        snprintf(err, errlen, "cannot sync the folder %s of the journal %s: %s", folder, path,
                 strerror(errno));
        if (dir >= 0)
            close(dir);
        return -1;
    }
    close(dir);
    return 0;
}

int import_journal_open(import_journal_t *journal, const char *path,
                        const import_identity_t *identity, int batch_given, int restart,
                        import_refusals_t *refusals, char *err, size_t errlen)
{
    memset(journal, 0, sizeof *journal);
    journal->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (journal->fd < 0) {
        snprintf(err, errlen,
                 "cannot open the journal %s: %s (give --state PATH to keep it "
                 "elsewhere)",
                 path, strerror(errno));
        return CLI_EXIT_FAILURE;
    }
    if (flock(journal->fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen,
                 "the journal %s is in use: is another import of this file "
                 "running?",
                 path);
        import_journal_close(journal);
        return CLI_EXIT_FAILURE;
    }
    size_t len = 0;
    char *text = import_journal_slurp(journal->fd, path, &len, err, errlen);
    if (text == NULL) {
        import_journal_close(journal);
        return CLI_EXIT_FAILURE;
    }
    int rc;
    if (len == 0)
        rc = import_journal_start(journal, path, identity, IMPORT_IDS_KEYED, 0, err, errlen) == 0
                 ? CLI_EXIT_OK
                 : CLI_EXIT_FAILURE;
    else if (restart)
        rc = import_journal_restart(journal, path, text, identity, err, errlen);
    else
        rc = import_journal_resume(journal, path, text, identity, batch_given, refusals, err,
                                   errlen);
    free(text);
    if (rc == CLI_EXIT_OK && import_journal_sync_folder(path, err, errlen) != 0)
        rc = CLI_EXIT_FAILURE;
    if (rc == CLI_EXIT_OK && lseek(journal->fd, 0, SEEK_END) < 0) {
        snprintf(err, errlen, "cannot append to the journal %s: %s", path, strerror(errno));
        rc = CLI_EXIT_FAILURE;
    }
    if (rc != CLI_EXIT_OK)
        import_journal_close(journal);
    return rc;
}

int import_journal_key(import_journal_t *journal, const uint8_t check[IMPORT_KEY_CHECK_BYTES],
                       char *err, size_t errlen)
{
    char line[2 * IMPORT_KEY_CHECK_BYTES + 4] = "K ";
    if (journal->ids != IMPORT_IDS_KEYED ||
        memcmp(journal->key_check, check, sizeof journal->key_check) == 0)
        return 0;
    syntax_hex(check, IMPORT_KEY_CHECK_BYTES, line + 2);
    strcat(line, "\n");
    if (import_journal_append(journal, line, 1, err, errlen) != 0)
        return -1;
    memcpy(journal->key_check, check, sizeof journal->key_check);
    return 1;
}

void import_journal_close(import_journal_t *journal)
{
    if (journal->fd >= 0)
        close(journal->fd);
    journal->fd = -1;
    free(journal->done);
    journal->done = NULL;
    journal->n_done = journal->cap_done = 0;
}
