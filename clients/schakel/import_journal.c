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
 * --restart, as does its batch size unless --new-batch; a new journal is
 * written beside it and renamed into its place, so that a crash leaves
 * the old one or the new one whole), then one line per refusal
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
#include <limits.h>
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
/* A new journal is written under the journal's name with this added, and
 * renamed into place. */
#define IMPORT_JOURNAL_TEMP_SUFFIX ".new"

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

/* A new journal of these ids (enum import_ids) in place of the file at
 * real (the journal's path, links resolved; path names it in errors): its
 * header is written to real IMPORT_JOURNAL_TEMP_SUFFIX beside it (0600,
 * locked), made durable and renamed over it, and import_journal_open then
 * syncs the folder before anything is published. A crash or power loss at
 * any point leaves the file it replaces whole (and perhaps the temporary
 * file, which the next run removes) or the new one whole, never a header
 * cut short: the one it replaces keeps saying how the lines published
 * under it were derived until the new one says the same (--restart keeps
 * the ids). journal->fd becomes the new file's; the old one's lock is
 * held until the new one holds its own. */
static int import_journal_start(import_journal_t *journal, const char *path, const char *real,
                                const import_identity_t *identity, int ids, char *err,
                                size_t errlen)
{
    char hash[2 * sizeof identity->fingerprint->hash + 1];
    char check[2 * IMPORT_KEY_CHECK_BYTES + 1];
    char header[512], temp[PATH_MAX + sizeof IMPORT_JOURNAL_TEMP_SUFFIX];
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
    if (snprintf(temp, sizeof temp, "%s%s", real, IMPORT_JOURNAL_TEMP_SUFFIX) >= (int)sizeof temp) {
        snprintf(err, errlen, "the journal's path %s is too long", path);
        return -1;
    }
    /* O_EXCL: one left by a crash is removed first, and no link is followed */
    int fd = -1;
    if ((unlink(temp) != 0 && errno != ENOENT) ||
        (fd = open(temp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0 ||
        flock(fd, LOCK_EX | LOCK_NB) != 0 || import_write_all(fd, header, (size_t)len) != 0 ||
        fdatasync(fd) != 0 || rename(temp, real) != 0) {
        snprintf(err, errlen, "cannot write the journal %s (by way of %s): %s", path, temp,
                 strerror(errno));
        if (fd >= 0) {
            close(fd);
            (void)unlink(temp);
        }
        return -1;
    }
    close(journal->fd);
    journal->fd = fd;
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

/* Does the header name this identity? 0, or CLI_EXIT_USAGE with err
 * (accepted: the lines its batches done record as accepted). */
static int import_header_matches(const import_header_t *h, const import_identity_t *identity,
                                 int batch_given, uint64_t accepted, const char *path, char *err,
                                 size_t errlen)
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
                 "must be cut as before). --restart with --batch %u and --new-batch imports the "
                 "file again in other batches, under other message ids: the %" PRIu64
                 " lines the journal records as accepted, and those of a batch accepted but not "
                 "journalled, reach their recipients twice",
                 path, h->batch, identity->batch, accepted);
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
    /* version 2 without its ids line: cut while its header was written
     * in place (by a schakel from before new journals were renamed into
     * place); --restart goes on with the ids its first line names */
    if (h.lines < 5 || (h.version == 2 && journal->ids != IMPORT_IDS_KEYED)) {
        snprintf(err, errlen, "the journal %s has no complete header: give --restart", path);
        return CLI_EXIT_USAGE;
    }
    int rc = import_header_matches(&h, identity, batch_given, journal->accepted_before, path, err,
                                   errlen);
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

/* What the journal a restart replaces says of the lines published under
 * it. */
typedef struct import_prior {
    int ids;           /* enum import_ids they may have been published under; 0 none */
    int other_key;     /* keyed: it names another key than this run's, or a K line not read */
    unsigned batch;    /* its batch size; 0 when its header was cut before it */
    uint64_t accepted; /* lines its batches done record as accepted (as far as they parse) */
} import_prior_t;

/* Read the journal a restart replaces (text): its header, its batches done
 * and every K line. Its first line alone says how its ids were derived
 * (schakel-import-journal 2: keyed; 1: unkeyed, unless an ids line ends a
 * complete header), also when the rest of the header was cut: a schakel
 * that wrote a restart's header over the old one in place could leave a
 * header cut short by a crash, the lines of the old one published. Only
 * a file whose first line is no journal's, or one of another sender (its
 * ids are not this sender's), names no ids. A header cut before its ids
 * line names no key: it is taken as this run's. */
static void import_journal_prior(const char *text, const import_identity_t *identity,
                                 import_prior_t *prior)
{
    import_header_t h;
    import_journal_t scratch = {.fd = -1, .ids = IMPORT_IDS_V1};
    import_refusals_t refusals = {0};
    uint8_t header_check[IMPORT_KEY_CHECK_BYTES];
    int entries = 0, ids_read = 0;
    memset(&h, 0, sizeof h);
    memset(prior, 0, sizeof *prior);
    for (const char *p = text; *p != '\0'; p = strchr(p, '\n') + 1) {
        char line[IMPORT_MAX_TEXT + 128];
        size_t len = strcspn(p, "\n"); /* every line ends with one (see slurp) */
        if (len >= sizeof line) {
            if (h.lines < 5)
                break;
            continue; /* an entry: not counted */
        }
        memcpy(line, p, len);
        line[len] = '\0';
        if (line[0] == '#')
            continue;
        if (h.lines < 5) {
            if (import_header_line(&h, line) != 0)
                break;
            h.lines++;
        } else if (entries++ == 0 && (h.version == 2 || strncmp(line, "ids ", 4) == 0)) {
            if (import_ids_line(&scratch, line) != 0)
                break;
            memcpy(header_check, scratch.key_check, sizeof header_check); /* K lines follow */
            ids_read = 1;
        } else {
            (void)import_entry_line(&scratch, &refusals, line); /* counted as far as it parses */
        }
    }
    import_refusals_free(&refusals);
    free(scratch.done);
    if (h.lines == 0 || (h.lines >= 3 && strcmp(h.sender, identity->sender) != 0))
        return;
    prior->ids = h.version == 2 || ids_read ? IMPORT_IDS_KEYED : IMPORT_IDS_V1;
    prior->batch = h.lines == 5 ? h.batch : 0;
    prior->accepted = scratch.accepted_before;
    if (prior->ids != IMPORT_IDS_KEYED)
        return;
    prior->other_key =
        identity->key_check == NULL ||
        (ids_read && memcmp(header_check, identity->key_check, sizeof header_check) != 0);
    if (identity->key_check == NULL)
        return;
    /* no header line begins with K */
    for (const char *p = text; *p != '\0'; p = strchr(p, '\n') + 1) {
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

/* The batch size of a restart (into *batch): the journal's unless --batch
 * gives another, which only new_batch (--new-batch) lets in: other batches
 * go out under other ids, and what the broker accepted before is
 * delivered twice. 0, or CLI_EXIT_USAGE with err. */
static int import_restart_batch(const import_prior_t *prior, const import_identity_t *identity,
                                int batch_given, const char *path, unsigned *batch, char *err,
                                size_t errlen)
{
    *batch = identity->batch;
    if (prior->ids == 0)
        return CLI_EXIT_OK; /* nothing of this sender's was published under it */
    if (!batch_given && prior->batch == 0) {
        snprintf(err, errlen,
                 "the journal %s was cut within its header, before its batch size: give --batch "
                 "with the size the import was run with (with another one every line the broker "
                 "accepted goes out again under another message id, and is delivered twice)",
                 path);
        return CLI_EXIT_USAGE;
    }
    if (!batch_given) {
        *batch = prior->batch;
        return CLI_EXIT_OK;
    }
    if (prior->batch != 0 && prior->batch != identity->batch && !identity->new_batch) {
        snprintf(err, errlen,
                 "the journal %s was written with --batch %u: --restart with --batch %u cuts the "
                 "file into other batches, and every line goes out again under another message "
                 "id: the %" PRIu64 " lines the journal records as accepted, and those of a "
                 "batch accepted but not journalled, reach their recipients twice (only a line "
                 "with its own message_id, and a publish of the very lines of one before, is "
                 "answered as a repeat). Give --restart without --batch to keep %u, or "
                 "--new-batch as well to do so all the same",
                 path, prior->batch, identity->batch, prior->accepted, prior->batch);
        return CLI_EXIT_USAGE;
    }
    return CLI_EXIT_OK;
}

/* --restart of a journal (text): a new one of the same ids and, unless
 * --batch and --new-batch say otherwise, the same batch size. 0, or
 * CLI_EXIT_USAGE (another key without new_key, another batch size
 * without new_batch) or CLI_EXIT_FAILURE with err. */
static int import_journal_restart(import_journal_t *journal, const char *path, const char *real,
                                  const char *text, const import_identity_t *identity,
                                  int batch_given, char *err, size_t errlen)
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
    import_identity_t chosen = *identity;
    int rc = import_restart_batch(&prior, identity, batch_given, path, &chosen.batch, err, errlen);
    if (rc != CLI_EXIT_OK)
        return rc;
    int ids = prior.ids == IMPORT_IDS_V1 ? IMPORT_IDS_V1 : IMPORT_IDS_KEYED;
    return import_journal_start(journal, path, real, &chosen, ids, err, errlen) == 0
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

/* Open and lock the journal at path: the file at path when the lock is
 * taken, not one a restart renamed it over meanwhile (whose lock is
 * another). 0, or CLI_EXIT_FAILURE with err. */
static int import_journal_lock(import_journal_t *journal, const char *path, char *err,
                               size_t errlen)
{
    for (int attempt = 0; attempt < 8; attempt++) {
        struct stat held, named;
        journal->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (journal->fd < 0) {
            snprintf(err, errlen,
                     "cannot open the journal %s: %s (give --state PATH to keep it "
                     "elsewhere)",
                     path, strerror(errno));
            return CLI_EXIT_FAILURE;
        }
        if (flock(journal->fd, LOCK_EX | LOCK_NB) != 0)
            break;
        if (fstat(journal->fd, &held) == 0 && stat(path, &named) == 0 &&
            held.st_dev == named.st_dev && held.st_ino == named.st_ino)
            return CLI_EXIT_OK;
        close(journal->fd);
        journal->fd = -1;
    }
    snprintf(err, errlen, "the journal %s is in use: is another import of this file running?",
             path);
    return CLI_EXIT_FAILURE;
}

int import_journal_open(import_journal_t *journal, const char *path,
                        const import_identity_t *identity, int batch_given, int restart,
                        import_refusals_t *refusals, char *err, size_t errlen)
{
    char real[PATH_MAX], temp[PATH_MAX + sizeof IMPORT_JOURNAL_TEMP_SUFFIX];
    memset(journal, 0, sizeof *journal);
    if (import_journal_lock(journal, path, err, errlen) != CLI_EXIT_OK) {
        import_journal_close(journal);
        return CLI_EXIT_FAILURE;
    }
    /* a new journal is renamed over the file itself, not over a link to it */
    if (realpath(path, real) == NULL) {
        snprintf(err, errlen, "cannot open the journal %s: %s", path, strerror(errno));
        import_journal_close(journal);
        return CLI_EXIT_FAILURE;
    }
    /* left by a crash before its rename: the journal is the file at path */
    if (snprintf(temp, sizeof temp, "%s%s", real, IMPORT_JOURNAL_TEMP_SUFFIX) < (int)sizeof temp)
        (void)unlink(temp);
    size_t len = 0;
    char *text = import_journal_slurp(journal->fd, path, &len, err, errlen);
    if (text == NULL) {
        import_journal_close(journal);
        return CLI_EXIT_FAILURE;
    }
    int rc;
    if (len == 0)
        rc = import_journal_start(journal, path, real, identity, IMPORT_IDS_KEYED, err, errlen) == 0
                 ? CLI_EXIT_OK
                 : CLI_EXIT_FAILURE;
    else if (restart)
        rc = import_journal_restart(journal, path, real, text, identity, batch_given, err, errlen);
    else
        rc = import_journal_resume(journal, path, text, identity, batch_given, refusals, err,
                                   errlen);
    free(text);
    if (rc == CLI_EXIT_OK && import_journal_sync_folder(real, err, errlen) != 0)
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
