/*
 * test_import_journal.c — schakel import's journal and the broker's store
 * epoch: a journal from before epochs reads as it did and gets the epoch
 * of the run that resumes it; the same epoch leaves it as it is; another
 * one (a restore of the broker's store since) keeps the batches whose
 * seqs are at most its floor seq and forgets the others, and those of D
 * lines without seqs, not the refusals, also when the journal is read
 * again; with the floor unknown, or far above the journal's seqs, it
 * forgets them all; across two restores (the second of a backup older
 * than the first restore) the floor keeps only what that backup has; D
 * lines without seqs alone are never "far below" a floor, and the change
 * counts those it forgot; a malformed epoch or done line is damage. A new
 * journal records that its message ids are keyed, with the check of the
 * key; a journal without that line (begun by a schakel from before keyed
 * ids) reads as one of unkeyed ids and stays so; a run with another key
 * records it (K) once, and only when let in by --new-key (refused
 * otherwise, the journal left as it is); a malformed ids or K line, or one
 * out of its place, is damage. A journal of keyed ids says version 2 in
 * its first line: one cut before its ids line is incomplete, not one of
 * unkeyed ids. --restart keeps the ids of the journal it replaces
 * (unkeyed stay unkeyed; a header cut short keeps those its first line
 * names), and refuses one that names another key anywhere unless
 * --new-key; it keeps the journal's batch size, and refuses another unless
 * --new-batch. A new journal is written beside the old one and renamed
 * over it (through a link, over the file the link names): a crash leaves
 * the old one whole, with a stray PATH.new the next open removes, or the
 * new one whole. A journal of another sender or format, or with a line
 * longer than one it writes, is refused and left as it is; one another
 * import holds is in use; one in a folder not there cannot be opened.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "import.h"

#define SENDER "politie/bvh-koppeling"
#define HASH "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define EPOCH_A "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"
#define EPOCH_B "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"

/* The header a journal of the fixture's file has (batch 100, JSON): of
 * unkeyed ids (version 1, no ids line), as a schakel from before keyed
 * ids wrote it. */
#define COMMENT "# journal of `schakel import`: the lines done and refused; see schakel(1)\n"
#define HEADER_FIELDS                                                                              \
    "file 4096 " HASH "\n"                                                                         \
    "sender " SENDER "\n"                                                                          \
    "format json\n"                                                                                \
    "batch 100\n"
#define HEADER COMMENT "schakel-import-journal 1\n" HEADER_FIELDS

/* The check of the fixture's key, and another; a new journal's header
 * (version 2, keyed ids), and one of keyed ids with the first line of
 * version 1, as a schakel wrote it before the version told them apart. */
#define CHECK_A "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
#define CHECK_B "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"
#define HEADER_KEYED COMMENT "schakel-import-journal 2\n" HEADER_FIELDS "ids keyed " CHECK_A "\n"
#define HEADER_KEYED_V1 HEADER "ids keyed " CHECK_A "\n"

typedef struct fixture {
    char dir[64];
    char path[128];
    import_fingerprint_t fingerprint;
    import_identity_t identity;
    import_journal_t journal;
    import_refusals_t refusals;
    uint8_t key_check[IMPORT_KEY_CHECK_BYTES];
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/schakel-import-journal-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/feed.jsonl.import-state", f->dir);
    f->fingerprint.size = 4096;
    for (size_t i = 0; i < sizeof f->fingerprint.hash; i++)
        f->fingerprint.hash[i] = (uint8_t)(0x11 * (i % 16));
    memset(f->key_check, 0xa1, sizeof f->key_check);
    f->identity =
        (import_identity_t){&f->fingerprint, SENDER, IMPORT_FORMAT_JSON, 100, f->key_check, 0, 0};
    f->journal.fd = -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    char temp[160];
    import_journal_close(&f->journal);
    import_refusals_free(&f->refusals);
    unlink(f->path);
    snprintf(temp, sizeof temp, "%s.new", f->path);
    unlink(temp);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void write_text(const char *path, const char *text)
{
    FILE *file = fopen(path, "w");
    assert_non_null(file);
    assert_int_equal(fputs(text, file) >= 0, 1);
    assert_int_equal(fclose(file), 0);
}

/* The whole file (the caller frees it). */
static char *read_text(const char *path)
{
    FILE *file = fopen(path, "r");
    assert_non_null(file);
    char *text = calloc(1, 8192);
    assert_non_null(text);
    size_t got = fread(text, 1, 8191, file);
    assert_true(got < 8191);
    assert_int_equal(fclose(file), 0);
    return text;
}

static void epoch_of(const char *hex, uint8_t epoch[SCHAKEL_STORE_EPOCH_BYTES])
{
    for (size_t i = 0; i < SCHAKEL_STORE_EPOCH_BYTES; i++) {
        unsigned byte;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &byte), 1);
        epoch[i] = (uint8_t)byte;
    }
}

/* Open (resume) the fixture's journal; CLI_EXIT_OK expected unless want. */
static int open_journal(fixture_t *f, char *err, size_t errlen)
{
    import_journal_close(&f->journal);
    import_refusals_free(&f->refusals);
    return import_journal_open(&f->journal, f->path, &f->identity, 0, 0, &f->refusals, err, errlen);
}

/* The batches done, as "FIRST-LAST" words ("" none). */
static void expect_done(const import_journal_t *journal, const char *want)
{
    char got[512] = "";
    for (size_t i = 0; i < journal->n_done; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%ld-%ld", i ? " " : "",
                 journal->done[i].first, journal->done[i].last);
    if (strcmp(got, want) != 0)
        fail_msg("batches done: \"%s\", want \"%s\"", got, want);
    /* import_journal_is_done agrees, at the edges of each */
    for (size_t i = 0; i < journal->n_done; i++) {
        assert_true(import_journal_is_done(journal, journal->done[i].first));
        assert_true(import_journal_is_done(journal, journal->done[i].last));
        assert_false(import_journal_is_done(journal, journal->done[i].first - 1) &&
                     (i == 0 || journal->done[i - 1].last != journal->done[i].first - 1));
    }
}

static void expect_open(fixture_t *f, const char *done, uint64_t accepted, size_t refusals)
{
    char err[1024] = "";
    int rc = open_journal(f, err, sizeof err);
    if (rc != CLI_EXIT_OK)
        fail_msg("open: %d: %s", rc, err);
    expect_done(&f->journal, done);
    assert_int_equal(f->journal.accepted_before, accepted);
    assert_int_equal(f->refusals.n_loaded, refusals);
    assert_int_equal(f->journal.batch, 100);
}

static void expect_text(const char *path, const char *want)
{
    char *text = read_text(path);
    assert_string_equal(text, want);
    free(text);
}

/* A journal written before store epochs: its lines are done as they were
 * (a broker from before epochs, or a run that cannot tell, goes on as
 * before), and the first run that knows the broker's epoch adds it. */
static void test_old_journal_reads_as_before_and_gets_the_epoch(void **state)
{
    fixture_t *f = *state;
    char err[1024] = "";
    write_text(f->path, HEADER "R 7 POLICY_DENIED no rule lets politie send this\n"
                               "D 1 100 99\n"
                               "D 101 200 100\n");
    expect_open(f, "1-100 101-200", 199, 1);
    assert_int_equal(f->journal.has_epoch, 0);
    uint8_t a[SCHAKEL_STORE_EPOCH_BYTES];
    epoch_of(EPOCH_A, a);
    assert_int_equal(import_journal_epoch(&f->journal, a, 1, 0, err, sizeof err),
                     IMPORT_EPOCH_SAME);
    expect_done(&f->journal, "1-100 101-200");
    assert_int_equal(f->journal.has_epoch, 1);
    char *text = read_text(f->path);
    assert_string_equal(text, HEADER "R 7 POLICY_DENIED no rule lets politie send this\n"
                                     "D 1 100 99\n"
                                     "D 101 200 100\n"
                                     "E " EPOCH_A "\n");
    free(text);
    /* read again: the same, the epoch known */
    expect_open(f, "1-100 101-200", 199, 1);
    assert_int_equal(f->journal.has_epoch, 1);
    assert_memory_equal(f->journal.epoch, a, sizeof a);
}

/* The same epoch: nothing written, everything done stays done. */
static void test_same_epoch_keeps_the_journal(void **state)
{
    fixture_t *f = *state;
    char err[1024] = "";
    const char *written = HEADER "E " EPOCH_A "\n"
                                 "D 1 100 100\n";
    write_text(f->path, written);
    expect_open(f, "1-100", 100, 0);
    uint8_t a[SCHAKEL_STORE_EPOCH_BYTES];
    epoch_of(EPOCH_A, a);
    assert_int_equal(import_journal_epoch(&f->journal, a, 1, 0, err, sizeof err),
                     IMPORT_EPOCH_SAME);
    expect_done(&f->journal, "1-100");
    assert_int_equal(f->journal.dropped_without_seq, 0); /* of this change alone */
    char *text = read_text(f->path);
    assert_string_equal(text, written);
    free(text);
}

/* Another epoch: the broker's store was restored since. The lines done
 * are forgotten (a restored store may have lost them), the refusals are
 * not (their lines stay out of the batches, which keep their ids), and a
 * journal read again after it is so too, with what is done after it. */
static void test_other_epoch_forgets_the_lines_done(void **state)
{
    fixture_t *f = *state;
    char err[1024] = "";
    write_text(f->path, HEADER "E " EPOCH_A "\n"
                               "R 7 POLICY_DENIED no rule lets politie send this\n"
                               "D 1 100 99\n"
                               "D 101 200 100\n");
    expect_open(f, "1-100 101-200", 199, 1);
    uint8_t b[SCHAKEL_STORE_EPOCH_BYTES];
    epoch_of(EPOCH_B, b);
    /* D lines from before seqs: nothing is kept, whatever the floor, and
     * the run is told how many it forgot for want of a seq */
    assert_int_equal(import_journal_epoch(&f->journal, b, 1, 1000, err, sizeof err),
                     IMPORT_EPOCH_FLOOR);
    expect_done(&f->journal, "");
    assert_int_equal(f->journal.accepted_before, 0);
    assert_int_equal(f->journal.kept_by_floor, 0);
    assert_int_equal(f->journal.dropped_without_seq, 2);
    assert_memory_equal(f->journal.epoch, b, sizeof b);
    expect_open(f, "", 0, 1);
    assert_non_null(import_refusals_loaded(&f->refusals, 7));
    /* the rerun goes on from line 1 */
    assert_int_equal(import_journal_done(&f->journal, 1, 100, 99, 0, err, sizeof err), 0);
    expect_open(f, "1-100", 99, 1);
    /* the same epoch again: nothing more is forgotten */
    assert_int_equal(import_journal_epoch(&f->journal, b, 1, 0, err, sizeof err),
                     IMPORT_EPOCH_SAME);
    expect_done(&f->journal, "1-100");
    assert_int_equal(f->journal.dropped_without_seq, 0); /* of this change alone */
    char *text = read_text(f->path);
    assert_string_equal(text, HEADER "E " EPOCH_A "\n"
                                     "R 7 POLICY_DENIED no rule lets politie send this\n"
                                     "D 1 100 99\n"
                                     "D 101 200 100\n"
                                     "E " EPOCH_B "\n"
                                     "D 1 100 99 0\n");
    free(text);
}

/* A journal whose D lines all lack seqs has nothing to compare a floor
 * with: however high the floor, the change is IMPORT_EPOCH_FLOOR keeping
 * nothing for want of seqs (not "far above the journal's seqs"); one with
 * a seq beside them is judged by it, and its seq-less batches counted. */
static void test_seqless_journal_is_no_far_floor(void **state)
{
    fixture_t *f = *state;
    uint8_t b[SCHAKEL_STORE_EPOCH_BYTES];
    epoch_of(EPOCH_B, b);
    static const struct {
        const char *lines;
        int change;
        size_t kept, without_seq;
    } rows[] = {
        {"D 1 100 100\nD 101 200 100\n", IMPORT_EPOCH_FLOOR, 0, 2},
        {"D 1 100 100\nD 101 200 100 500\n", IMPORT_EPOCH_FLOOR_AFAR, 0, 1},
        {"D 1 100 100\nD 101 200 100 1000000500\n", IMPORT_EPOCH_FLOOR, 1, 1},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char text[1024], err[1024] = "";
        snprintf(text, sizeof text, "%sE %s\n%s", HEADER, EPOCH_A, rows[i].lines);
        write_text(f->path, text);
        expect_open(f, "1-100 101-200", 200, 0);
        int change = import_journal_epoch(&f->journal, b, 1, 1000000600, err, sizeof err);
        if (change != rows[i].change || f->journal.kept_by_floor != rows[i].kept ||
            f->journal.dropped_without_seq != rows[i].without_seq)
            fail_msg("row %zu: change %d kept %zu without seq %zu, want %d %zu %zu", i, change,
                     f->journal.kept_by_floor, f->journal.dropped_without_seq, rows[i].change,
                     rows[i].kept, rows[i].without_seq);
    }
}

/* A new journal names the epoch right after its header; a journal that
 * never finished a batch forgets nothing (and says so: 0). */
static void test_new_journal_gets_the_epoch(void **state)
{
    fixture_t *f = *state;
    char err[1024] = "";
    expect_open(f, "", 0, 0); /* no file yet: a new journal */
    uint8_t a[SCHAKEL_STORE_EPOCH_BYTES], b[SCHAKEL_STORE_EPOCH_BYTES];
    epoch_of(EPOCH_A, a);
    epoch_of(EPOCH_B, b);
    assert_int_equal(import_journal_epoch(&f->journal, a, 1, 0, err, sizeof err),
                     IMPORT_EPOCH_SAME);
    assert_int_equal(import_journal_epoch(&f->journal, b, 1, 0, err, sizeof err),
                     IMPORT_EPOCH_SAME);
    char *text = read_text(f->path);
    assert_string_equal(text, HEADER_KEYED "E " EPOCH_A "\n"
                                           "E " EPOCH_B "\n");
    free(text);
}

/* A new journal's ids are keyed, and it names the check of the key;
 * read again it is so, and the same key writes nothing. Another key is
 * recorded once (1, then 0), and read again it is the journal's. */
static void test_new_journal_records_keyed_ids(void **state)
{
    fixture_t *f = *state;
    char err[1024] = "";
    uint8_t b[IMPORT_KEY_CHECK_BYTES];
    memset(b, 0xb2, sizeof b);
    expect_open(f, "", 0, 0); /* a new journal */
    assert_int_equal(f->journal.ids, IMPORT_IDS_KEYED);
    assert_int_equal(import_journal_done(&f->journal, 1, 100, 100, 5, err, sizeof err), 0);
    expect_open(f, "1-100", 100, 0);
    assert_int_equal(f->journal.ids, IMPORT_IDS_KEYED);
    assert_memory_equal(f->journal.key_check, f->key_check, sizeof f->key_check);
    assert_int_equal(import_journal_key(&f->journal, f->key_check, err, sizeof err), 0);
    expect_text(f->path, HEADER_KEYED "D 1 100 100 5\n");
    assert_int_equal(import_journal_key(&f->journal, b, err, sizeof err), 1);
    assert_int_equal(import_journal_key(&f->journal, b, err, sizeof err), 0);
    expect_text(f->path, HEADER_KEYED "D 1 100 100 5\nK " CHECK_B "\n");
    memcpy(f->key_check, b, sizeof b); /* the run's key is the journal's last */
    expect_open(f, "1-100", 100, 0);
    assert_int_equal(f->journal.ids, IMPORT_IDS_KEYED);
    assert_memory_equal(f->journal.key_check, b, sizeof b);
    assert_int_equal(import_journal_key(&f->journal, b, err, sizeof err), 0);
    /* version 1 with an ids line reads as keyed too */
    memset(f->key_check, 0xa1, sizeof f->key_check);
    write_text(f->path, HEADER_KEYED_V1 "D 1 100 100 5\n");
    expect_open(f, "1-100", 100, 0);
    assert_int_equal(f->journal.ids, IMPORT_IDS_KEYED);
    assert_memory_equal(f->journal.key_check, f->key_check, sizeof f->key_check);
}

/* Open the fixture's journal with --restart, and --batch given or not:
 * its exit code. */
static int restart_journal_given(fixture_t *f, int batch_given, char *err, size_t errlen)
{
    import_journal_close(&f->journal);
    import_refusals_free(&f->refusals);
    return import_journal_open(&f->journal, f->path, &f->identity, batch_given, 1, &f->refusals,
                               err, errlen);
}

static int restart_journal(fixture_t *f, char *err, size_t errlen)
{
    return restart_journal_given(f, 0, err, errlen);
}

/* A journal of keyed ids written with another key than the run's (the
 * sender's key was replaced) is refused, and left as it is: a batch the
 * broker accepted that it does not record would go out again under
 * another id. With new_key (--new-key) it is resumed, and takes the key. */
static void test_other_key_is_refused_without_new_key(void **state)
{
    fixture_t *f = *state;
    char err[1024] = "";
    const char *written = HEADER_KEYED "E " EPOCH_A "\nD 1 100 100 5\n";
    write_text(f->path, written);
    memset(f->key_check, 0xb2, sizeof f->key_check);
    int rc = open_journal(f, err, sizeof err);
    if (rc != CLI_EXIT_USAGE || strstr(err, "written with another key") == NULL ||
        strstr(err, "--new-key") == NULL)
        fail_msg("another key: %d: %s", rc, err);
    expect_text(f->path, written);
    f->identity.new_key = 1;
    expect_open(f, "1-100", 100, 0);
    assert_int_equal(import_journal_key(&f->journal, f->key_check, err, sizeof err), 1);
    expect_text(f->path, HEADER_KEYED "E " EPOCH_A "\nD 1 100 100 5\nK " CHECK_B "\n");
    /* taken: without new_key from here on */
    f->identity.new_key = 0;
    expect_open(f, "1-100", 100, 0);
    /* a journal of unkeyed ids needs no key: any is taken */
    write_text(f->path, HEADER "D 1 100 100 5\n");
    expect_open(f, "1-100", 100, 0);
    assert_int_equal(f->journal.ids, IMPORT_IDS_V1);
}

/* --restart keeps the ids of the journal it replaces, so that the batches
 * whose lines did not change are answered as repeats: one of unkeyed ids
 * (also of a file that changed since) is begun again as one, its version
 * 1 header without an ids line; one of keyed ids with the run's key as
 * one of keyed ids. One that names another key anywhere (its header or a
 * K line) is refused and left as it is, unless new_key. A journal whose
 * header cannot be read, or of another sender, begins keyed ids. */
static void test_restart_keeps_the_ids(void **state)
{
    fixture_t *f = *state;
    char err[1024] = "";
    f->fingerprint.size = 5000; /* the file grew: --restart is what the refusal says */
    write_text(f->path, HEADER "E " EPOCH_A "\nR 7 POLICY_DENIED no\nD 1 100 99 5\n");
    assert_int_equal(open_journal(f, err, sizeof err), CLI_EXIT_USAGE);
    assert_non_null(strstr(err, "the file has changed"));
    assert_int_equal(restart_journal(f, err, sizeof err), CLI_EXIT_OK);
    assert_int_equal(f->journal.ids, IMPORT_IDS_V1);
    expect_text(f->path, COMMENT "schakel-import-journal 1\nfile 5000 " HASH "\nsender " SENDER
                                 "\nformat json\nbatch 100\n");
    expect_open(f, "", 0, 0);
    assert_int_equal(f->journal.ids, IMPORT_IDS_V1);
    f->fingerprint.size = 4096;

    static const struct {
        const char *text;
        int key_b;   /* the run's key is CHECK_B, not CHECK_A */
        int new_key; /* --new-key */
        int rc;
        const char *after; /* the journal after it */
    } rows[] = {
        {HEADER_KEYED "D 1 100 100 5\n", 0, 0, CLI_EXIT_OK, HEADER_KEYED},
        {HEADER_KEYED_V1 "D 1 100 100 5\n", 0, 0, CLI_EXIT_OK, HEADER_KEYED},
        {HEADER_KEYED "D 1 100 100 5\n", 1, 0, CLI_EXIT_USAGE, NULL},
        {HEADER_KEYED "D 1 100 100 5\nK " CHECK_B "\n", 1, 0, CLI_EXIT_USAGE, NULL},
        {HEADER_KEYED "D 1 100 100 5\nK " CHECK_B "\nK " CHECK_A "\n", 0, 0, CLI_EXIT_USAGE, NULL},
        {HEADER_KEYED "K b2\n", 0, 0, CLI_EXIT_USAGE, NULL},
        {HEADER_KEYED "D 1 100 100 5\nK " CHECK_B "\n", 0, 1, CLI_EXIT_OK, HEADER_KEYED},
        /* another sender's journal: its ids are not this sender's */
        {COMMENT "schakel-import-journal 1\nfile 4096 " HASH "\nsender om/bvh\nformat json\n"
                 "batch 100\nD 1 100 100 5\n",
         0, 0, CLI_EXIT_OK, HEADER_KEYED},
        /* version 2 cut before its ids line: keyed, its key unknown */
        {COMMENT "schakel-import-journal 2\n" HEADER_FIELDS, 0, 0, CLI_EXIT_OK, HEADER_KEYED},
        /* not a journal: nothing was published under it */
        {"something else\n", 0, 0, CLI_EXIT_OK, HEADER_KEYED},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        write_text(f->path, rows[i].text);
        memset(f->key_check, rows[i].key_b ? 0xb2 : 0xa1, sizeof f->key_check);
        f->identity.new_key = rows[i].new_key;
        err[0] = '\0';
        int rc = restart_journal(f, err, sizeof err);
        if (rc != rows[i].rc)
            fail_msg("row %zu: %d, want %d: %s", i, rc, rows[i].rc, err);
        if (rc == CLI_EXIT_USAGE && strstr(err, "names another key") == NULL)
            fail_msg("row %zu: %s", i, err);
        if (rc == CLI_EXIT_OK)
            assert_int_equal(f->journal.ids, IMPORT_IDS_KEYED);
        char *text = read_text(f->path);
        const char *want = rows[i].after != NULL ? rows[i].after : rows[i].text;
        if (strcmp(text, want) != 0)
            fail_msg("row %zu: the journal is\n%s\nnot\n%s", i, text, want);
        free(text);
    }
}

/* A journal of version 2 (keyed ids) whose header has no ids line was cut
 * while its header was written (a torn ids line is cut from the file): it
 * reads as incomplete, never as one of unkeyed ids; another line in the
 * ids line's place is damage. */
static void test_keyed_header_cut_before_ids_is_incomplete(void **state)
{
    fixture_t *f = *state;
    static const struct {
        const char *text;
        const char *want;
    } rows[] = {
        {COMMENT "schakel-import-journal 2\n" HEADER_FIELDS, "has no complete header"},
        {COMMENT "schakel-import-journal 2\n" HEADER_FIELDS "ids keyed a1a1a1", "has no complete "
                                                                                "header"},
        {COMMENT "schakel-import-journal 2\n" HEADER_FIELDS "E " EPOCH_A "\n",
         "is damaged at line 7"},
        {COMMENT "schakel-import-journal 3\n" HEADER_FIELDS "ids keyed " CHECK_A "\n",
         "is damaged at line 2"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char err[1024] = "";
        write_text(f->path, rows[i].text);
        int rc = open_journal(f, err, sizeof err);
        if (rc != CLI_EXIT_USAGE || strstr(err, rows[i].want) == NULL)
            fail_msg("row %zu: %d: %s", i, rc, err);
    }
}

/* A journal without an ids line was begun by a schakel from before keyed
 * ids: its ids stay unkeyed (V1), whatever key the run has, and nothing
 * is written for the key; it never becomes keyed by what it is given. */
static void test_journal_without_ids_line_keeps_v1_ids(void **state)
{
    fixture_t *f = *state;
    char err[1024] = "";
    const char *written = HEADER "E " EPOCH_A "\nD 1 100 100 5\n";
    write_text(f->path, written);
    expect_open(f, "1-100", 100, 0);
    assert_int_equal(f->journal.ids, IMPORT_IDS_V1);
    assert_int_equal(import_journal_key(&f->journal, f->key_check, err, sizeof err), 0);
    assert_int_equal(import_journal_done(&f->journal, 101, 200, 100, 9, err, sizeof err), 0);
    expect_text(f->path, HEADER "E " EPOCH_A "\nD 1 100 100 5\nD 101 200 100 9\n");
    expect_open(f, "1-100 101-200", 200, 0);
    assert_int_equal(f->journal.ids, IMPORT_IDS_V1);
}

/* An ids line that is not "ids keyed" and 32 hex digits, or that is not
 * the header's last line; a K line that is malformed, or in a journal of
 * unkeyed ids: damage. */
static void test_malformed_ids_or_key_line_is_damage(void **state)
{
    fixture_t *f = *state;
    static const struct {
        const char *text;
        int line;
    } rows[] = {
        {HEADER "ids keyed a1a1\n", 7},
        {HEADER "ids keyed " CHECK_A "00\n", 7},
        {HEADER "ids keyed " CHECK_A " \n", 7},
        {HEADER "ids keyed  " CHECK_A "\n", 7},
        {HEADER "ids keyed g1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1\n", 7},
        {HEADER "ids plain " CHECK_A "\n", 7},
        {HEADER "ids keyed\n", 7},
        {HEADER "ids v1\n", 7},
        {HEADER_KEYED "ids keyed " CHECK_A "\n", 8},
        {COMMENT "schakel-import-journal 2\n" HEADER_FIELDS "ids keyed a1a1\n", 7},
        {COMMENT "schakel-import-journal 2\n" HEADER_FIELDS "ids v1\n", 7},
        {HEADER "D 1 100 100 5\nids keyed " CHECK_A "\n", 8},
        {HEADER "K " CHECK_B "\n", 7},
        {HEADER_KEYED "K b2b2\n", 8},
        {HEADER_KEYED "K " CHECK_B " \n", 8},
        {HEADER_KEYED "K\n", 8},
        {HEADER_KEYED "K  " CHECK_B "\n", 8},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char want[64], err[1024] = "";
        write_text(f->path, rows[i].text);
        int rc = open_journal(f, err, sizeof err);
        snprintf(want, sizeof want, "is damaged at line %d", rows[i].line);
        if (rc != CLI_EXIT_USAGE || strstr(err, want) == NULL)
            fail_msg("row %zu: %d: %s", i, rc, err);
    }
}

/* The header of the fixture's file grown to 10000 bytes, of unkeyed ids:
 * one byte longer than HEADER. */
#define HEADER_GROWN                                                                               \
    COMMENT "schakel-import-journal 1\nfile 10000 " HASH "\nsender " SENDER "\nformat json\n"      \
            "batch 100\n"

/* What a rerun finds after a crash in a restart (or the first run) of a
 * journal of unkeyed ids, whatever the moment: the old journal whole with
 * a stray PATH.new beside it (a crash before the rename) resumes as it
 * was, its batches done skipped, and the stray file is removed; the new
 * journal whole in its place (after the rename) resumes with unkeyed
 * ids and nothing done, so that every line goes out under the id it had
 * and is answered as a repeat. A header written over the old one in
 * place and cut short (a schakel from before renames, a power loss within
 * its last sync: the new bytes, the old size) is incomplete, and
 * --restart keeps the unkeyed ids its first line names (it asks for
 * --batch, which the cut took). A restart that cannot write PATH.new
 * leaves the journal as it was. */
static void test_restart_crash_leaves_the_ids(void **state)
{
    fixture_t *f = *state;
    char err[1024] = "", temp[160], grown[sizeof HEADER_GROWN];
    const char *written = HEADER "E " EPOCH_A "\nD 1 100 100 5\n";
    struct stat st;
    snprintf(temp, sizeof temp, "%s.new", f->path);

    /* before the rename: the old journal, and a torn new one beside it */
    write_text(f->path, written);
    write_text(temp, COMMENT "schakel-import-journal 2\nfile 10");
    expect_open(f, "1-100", 100, 0);
    assert_int_equal(f->journal.ids, IMPORT_IDS_V1);
    assert_int_equal(stat(temp, &st), -1);
    expect_text(f->path, written);
    /* a restart with one beside it replaces it */
    write_text(temp, "stray\n");
    f->fingerprint.size = 10000;
    assert_int_equal(restart_journal(f, err, sizeof err), CLI_EXIT_OK);
    assert_int_equal(f->journal.ids, IMPORT_IDS_V1);
    assert_int_equal(stat(temp, &st), -1);
    expect_text(f->path, HEADER_GROWN);

    /* after the rename: the new journal whole */
    expect_open(f, "", 0, 0);
    assert_int_equal(f->journal.ids, IMPORT_IDS_V1);

    /* written in place and cut: the new header's bytes, the old size */
    memcpy(grown, HEADER_GROWN, sizeof grown);
    assert_int_equal(strlen(grown), strlen(HEADER) + 1);
    grown[strlen(HEADER)] = '\0';
    write_text(f->path, grown);
    assert_int_equal(open_journal(f, err, sizeof err), CLI_EXIT_USAGE);
    assert_non_null(strstr(err, "has no complete header: give --restart"));
    assert_int_equal(restart_journal(f, err, sizeof err), CLI_EXIT_USAGE);
    if (strstr(err, "before its batch size: give --batch") == NULL)
        fail_msg("a restart of a header cut before its batch: %s", err);
    *strrchr(grown, '\n') = '\0'; /* the torn line, cut as every torn last line is */
    strcat(grown, "\n");
    expect_text(f->path, grown);
    assert_int_equal(restart_journal_given(f, 1, err, sizeof err), CLI_EXIT_OK);
    assert_int_equal(f->journal.ids, IMPORT_IDS_V1);
    expect_text(f->path, HEADER_GROWN);
    /* the same with a keyed one: keyed it stays */
    write_text(f->path, COMMENT "schakel-import-journal 2\nfile 10000 " HASH "\nsender " SENDER
                                "\nformat json\nbatch 100\n");
    assert_int_equal(restart_journal(f, err, sizeof err), CLI_EXIT_OK);
    assert_int_equal(f->journal.ids, IMPORT_IDS_KEYED);
    /* a shorter header over a longer one, the old one's end after it */
    write_text(f->path, HEADER "0\n");
    f->fingerprint.size = 4096;
    assert_int_equal(open_journal(f, err, sizeof err), CLI_EXIT_USAGE);
    assert_non_null(strstr(err, "is damaged at line 7"));
    assert_int_equal(restart_journal(f, err, sizeof err), CLI_EXIT_OK);
    assert_int_equal(f->journal.ids, IMPORT_IDS_V1);
    expect_text(f->path, HEADER);

    /* PATH.new cannot be written: the journal stays as it was */
    write_text(f->path, written);
    assert_int_equal(mkdir(temp, 0700), 0);
    char inner[200];
    snprintf(inner, sizeof inner, "%s/x", temp);
    write_text(inner, "x");
    assert_int_equal(restart_journal(f, err, sizeof err), CLI_EXIT_FAILURE);
    if (strstr(err, "cannot write the journal") == NULL || strstr(err, ".new") == NULL)
        fail_msg("a restart that cannot write beside the journal: %s", err);
    expect_text(f->path, written);
    assert_int_equal(unlink(inner), 0);
    assert_int_equal(rmdir(temp), 0);
    expect_open(f, "1-100", 100, 0);
}

/* A journal named through a link (--state LINK): the new journal is
 * renamed over the file the link names, and the link stays one. */
static void test_restart_through_a_link_keeps_the_link(void **state)
{
    fixture_t *f = *state;
    char err[1024] = "", target[160], temp[170];
    struct stat st;
    snprintf(target, sizeof target, "%s/journal", f->dir);
    snprintf(temp, sizeof temp, "%s.new", target);
    write_text(target, HEADER "D 1 100 100 5\n");
    assert_int_equal(symlink("journal", f->path), 0);
    assert_int_equal(restart_journal(f, err, sizeof err), CLI_EXIT_OK);
    assert_int_equal(lstat(f->path, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    expect_text(target, HEADER);
    assert_int_equal(stat(temp, &st), -1);
    import_journal_close(&f->journal);
    assert_int_equal(unlink(target), 0);
}

/* --restart keeps the journal's batch size: without --batch it takes it;
 * another --batch is refused (the journal left as it is), naming what
 * would be delivered twice and --new-batch, which lets it in. A resume
 * with another --batch names --new-batch too. Another sender's journal
 * (nothing of this sender's under it) takes any. */
static void test_restart_keeps_the_batch_size(void **state)
{
    fixture_t *f = *state;
    char err[1024] = "";
    const char *written = HEADER "E " EPOCH_A "\nD 1 100 99 5\nD 101 200 100 9\n";
    write_text(f->path, written);
    f->identity.batch = 50;
    assert_int_equal(restart_journal_given(f, 1, err, sizeof err), CLI_EXIT_USAGE);
    if (strstr(err, "written with --batch 100: --restart with --batch 50") == NULL ||
        strstr(err, "the 199 lines the journal records as accepted") == NULL ||
        strstr(err, "reach their recipients twice") == NULL ||
        strstr(err, "--new-batch as well") == NULL)
        fail_msg("another batch size: %s", err);
    expect_text(f->path, written);
    assert_int_equal(open_journal(f, err, sizeof err), CLI_EXIT_OK); /* not given: the journal's */
    import_journal_close(&f->journal);
    import_refusals_free(&f->refusals);
    assert_int_equal(import_journal_open(&f->journal, f->path, &f->identity, 1, 0, &f->refusals,
                                         err, sizeof err),
                     CLI_EXIT_USAGE);
    if (strstr(err, "--restart with --batch 50 and --new-batch") == NULL ||
        strstr(err, "the 199 lines the journal records as accepted") == NULL)
        fail_msg("a resume with another batch size: %s", err);
    expect_text(f->path, written);

    /* without --batch: the journal's */
    f->identity.batch = 256;
    assert_int_equal(restart_journal(f, err, sizeof err), CLI_EXIT_OK);
    assert_int_equal(f->journal.batch, 100);
    expect_text(f->path, HEADER);
    /* with --new-batch: the one given */
    write_text(f->path, written);
    f->identity.batch = 50;
    f->identity.new_batch = 1;
    assert_int_equal(restart_journal_given(f, 1, err, sizeof err), CLI_EXIT_OK);
    assert_int_equal(f->journal.batch, 50);
    assert_int_equal(f->journal.ids, IMPORT_IDS_V1);
    expect_text(f->path, COMMENT "schakel-import-journal 1\n"
                                 "file 4096 " HASH "\nsender " SENDER "\nformat json\nbatch 50\n");
    /* another sender's journal */
    f->identity.new_batch = 0;
    write_text(f->path, COMMENT "schakel-import-journal 1\nfile 4096 " HASH
                                "\nsender om/bvh\nformat json\nbatch 100\nD 1 100 100 5\n");
    assert_int_equal(restart_journal_given(f, 1, err, sizeof err), CLI_EXIT_OK);
    assert_int_equal(f->journal.batch, 50);
}

#define EPOCH_C "0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c"

/* Another epoch with a floor seq: the batches whose seqs are at most the
 * floor are kept (the backup has them, or forgot them on purpose), also
 * one after a batch that is not (a repeat's answer carries the original's
 * seqs), and counted as accepted before; the others are forgotten; the
 * refusals stay. The E line names the floor, and the journal reads the
 * same again; the batches published again go in their places. */
static void test_other_epoch_keeps_what_the_floor_covers(void **state)
{
    fixture_t *f = *state;
    char err[1024] = "";
    write_text(f->path, HEADER "E " EPOCH_A "\n"
                               "R 7 POLICY_DENIED no rule lets politie send this\n"
                               "D 1 100 99 500\n"
                               "D 101 200 100 1500\n"
                               "D 201 300 100 1000\n"
                               "D 301 350 0 0\n");
    expect_open(f, "1-100 101-200 201-300 301-350", 299, 1);
    uint8_t b[SCHAKEL_STORE_EPOCH_BYTES];
    epoch_of(EPOCH_B, b);
    assert_int_equal(import_journal_epoch(&f->journal, b, 1, 1000, err, sizeof err),
                     IMPORT_EPOCH_FLOOR);
    expect_done(&f->journal, "1-100 201-300 301-350");
    assert_int_equal(f->journal.accepted_before, 199);
    assert_int_equal(f->journal.kept_by_floor, 3);
    assert_false(import_journal_is_done(&f->journal, 150));
    expect_open(f, "1-100 201-300 301-350", 199, 1);
    assert_memory_equal(f->journal.epoch, b, sizeof b);
    /* the rerun publishes 101..200 again, into the new epoch's seqs */
    assert_int_equal(import_journal_done(&f->journal, 101, 200, 100, 1000001600, err, sizeof err),
                     0);
    /* lines of a batch done are refused, not journalled */
    assert_int_equal(import_journal_done(&f->journal, 150, 250, 1, 1, err, sizeof err), -1);
    expect_open(f, "1-100 101-200 201-300 301-350", 299, 1);
    expect_text(f->path, HEADER "E " EPOCH_A "\n"
                                "R 7 POLICY_DENIED no rule lets politie send this\n"
                                "D 1 100 99 500\n"
                                "D 101 200 100 1500\n"
                                "D 201 300 100 1000\n"
                                "D 301 350 0 0\n"
                                "E " EPOCH_B " 1000\n"
                                "D 101 200 100 1000001600\n");
}

/* The floor unknown (a restore without the replaced store's counters, a
 * broker from before floors), or far above the journal's seqs (a backup
 * made after a restore the journal did not see: that restore moved the
 * counters a billion past them), keeps nothing; the E line then has no
 * floor, as one from before floors, and reads the same. Just under half
 * the margin above, the floor is taken. */
static void test_unknown_or_far_floor_keeps_nothing(void **state)
{
    fixture_t *f = *state;
    static const struct {
        int floor_known;
        uint64_t floor;
        int change;
        const char *done;
    } rows[] = {
        {0, 0, IMPORT_EPOCH_NO_FLOOR, ""},
        {0, 5000, IMPORT_EPOCH_NO_FLOOR, ""},
        {1, 1500 + SCHAKEL_RESTORE_SEQ_MARGIN / 2, IMPORT_EPOCH_FLOOR_AFAR, ""},
        {1, 1500 + SCHAKEL_RESTORE_SEQ_MARGIN, IMPORT_EPOCH_FLOOR_AFAR, ""},
        {1, 1500 + SCHAKEL_RESTORE_SEQ_MARGIN / 2 - 1, IMPORT_EPOCH_FLOOR, "1-100 101-200"},
        {1, 1499, IMPORT_EPOCH_FLOOR, "1-100"},
        {1, 499, IMPORT_EPOCH_FLOOR, ""},
    };
    uint8_t b[SCHAKEL_STORE_EPOCH_BYTES];
    epoch_of(EPOCH_B, b);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char err[1024] = "", want[2048];
        write_text(f->path, HEADER "E " EPOCH_A "\n"
                                   "D 1 100 100 500\n"
                                   "D 101 200 100 1500\n");
        expect_open(f, "1-100 101-200", 200, 0);
        int change = import_journal_epoch(&f->journal, b, rows[i].floor_known, rows[i].floor, err,
                                          sizeof err);
        if (change != rows[i].change)
            fail_msg("row %zu: change %d, want %d", i, change, rows[i].change);
        expect_done(&f->journal, rows[i].done);
        uint64_t accepted = 100 * (uint64_t)f->journal.n_done;
        assert_int_equal(f->journal.accepted_before, accepted);
        expect_open(f, rows[i].done, accepted, 0);
        char floor_word[32] = "";
        if (rows[i].done[0] != '\0')
            snprintf(floor_word, sizeof floor_word, " %llu", (unsigned long long)rows[i].floor);
        snprintf(want, sizeof want, "%sE %s\nD 1 100 100 500\nD 101 200 100 1500\nE %s%s\n", HEADER,
                 EPOCH_A, EPOCH_B, floor_word);
        expect_text(f->path, want);
    }
}

/* Two restores. Under epoch A three batches were done (seqs 100, 200,
 * 300); a backup taken after the first (its highest seq 150) was restored:
 * epoch B keeps the first and the rerun published the other two again,
 * into B's seqs (past a billion). Then a backup of A taken later than the
 * first (highest seq 250: it has the first two batches) is restored:
 * epoch C. Its floor is below every seq of epoch B, so what the journal
 * holds from B is published again; what it holds from A at most 250 is
 * kept. The backup does have the second batch (seq 200): published again,
 * it is answered as a repeat. Had the second restore been of a backup of
 * B's store (its floor past B's seqs, a billion above the journal's A
 * seqs) with the journal never run under B, that floor would be far
 * above the journal's seqs: nothing kept. */
static void test_two_restores_keep_what_the_last_backup_has(void **state)
{
    fixture_t *f = *state;
    char err[1024] = "";
    uint8_t b[SCHAKEL_STORE_EPOCH_BYTES], c[SCHAKEL_STORE_EPOCH_BYTES];
    epoch_of(EPOCH_B, b);
    epoch_of(EPOCH_C, c);
    write_text(f->path, HEADER "E " EPOCH_A "\n"
                               "D 1 100 100 100\n"
                               "D 101 200 100 200\n"
                               "D 201 300 100 300\n");
    expect_open(f, "1-100 101-200 201-300", 300, 0);
    assert_int_equal(import_journal_epoch(&f->journal, b, 1, 150, err, sizeof err),
                     IMPORT_EPOCH_FLOOR);
    expect_done(&f->journal, "1-100");
    assert_int_equal(import_journal_done(&f->journal, 101, 200, 100, 1000000400, err, sizeof err),
                     0);
    assert_int_equal(import_journal_done(&f->journal, 201, 300, 100, 1000000500, err, sizeof err),
                     0);
    expect_open(f, "1-100 101-200 201-300", 300, 0);
    assert_int_equal(import_journal_epoch(&f->journal, c, 1, 250, err, sizeof err),
                     IMPORT_EPOCH_FLOOR);
    expect_done(&f->journal, "1-100");
    assert_int_equal(f->journal.accepted_before, 100);
    expect_open(f, "1-100", 100, 0);
    /* the rerun: the second batch is a repeat (its original seq), the
     * third new */
    assert_int_equal(import_journal_done(&f->journal, 101, 200, 100, 200, err, sizeof err), 0);
    assert_int_equal(import_journal_done(&f->journal, 201, 300, 100, 1000000750, err, sizeof err),
                     0);
    expect_text(f->path, HEADER "E " EPOCH_A "\n"
                                "D 1 100 100 100\n"
                                "D 101 200 100 200\n"
                                "D 201 300 100 300\n"
                                "E " EPOCH_B " 150\n"
                                "D 101 200 100 1000000400\n"
                                "D 201 300 100 1000000500\n"
                                "E " EPOCH_C " 250\n"
                                "D 101 200 100 200\n"
                                "D 201 300 100 1000000750\n");
    expect_open(f, "1-100 101-200 201-300", 300, 0);

    /* the journal never run under B; C restored from a backup of B */
    write_text(f->path, HEADER "E " EPOCH_A "\n"
                               "D 1 100 100 100\n"
                               "D 101 200 100 200\n"
                               "D 201 300 100 300\n");
    expect_open(f, "1-100 101-200 201-300", 300, 0);
    assert_int_equal(import_journal_epoch(&f->journal, c, 1, 1000000350, err, sizeof err),
                     IMPORT_EPOCH_FLOOR_AFAR);
    expect_done(&f->journal, "");
}

/* An epoch line that is not 32 hex digits (and a floor seq of digits),
 * or a done line that is malformed or names lines done, is damage. */
static void test_malformed_epoch_line_is_damage(void **state)
{
    fixture_t *f = *state;
    static const char *const lines[] = {
        "E 0a0a\n",
        "E " EPOCH_A "00\n",
        "E 0g0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a\n",
        "E\n",
        "E  " EPOCH_A "\n",
        "E " EPOCH_A " \n",
        "E " EPOCH_A " x\n",
        "E " EPOCH_A " -1\n",
        "E " EPOCH_A " +1\n",
        "E " EPOCH_A " 12345678901234567890\n",
        "E " EPOCH_A " 1 2\n",
        "E " EPOCH_A "  1\n",
        /* done lines: malformed, or over lines done */
        "D 101 200 100 x\n",
        "D 101 200 100 -5\n",
        "D 101 200 100 5 6\n",
        "D 101 200 100  5\n",
        "D 101 200 100 5 \n",
        "D 101 200\n",
        "D 200 101 1 1\n",
        "D 0 10 1 1\n",
        "D 100 200 1 1\n",
        "D 1 100 100 7\n",
        "D 101 200 12345678901234567890 1\n",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        char text[1024], err[1024] = "";
        snprintf(text, sizeof text, "%sD 1 100 100\n%s", HEADER, lines[i]);
        write_text(f->path, text);
        int rc = open_journal(f, err, sizeof err);
        if (rc != CLI_EXIT_USAGE || strstr(err, "is damaged at line 8") == NULL)
            fail_msg("line \"%.*s\": %d: %s", (int)strlen(lines[i]) - 1, lines[i], rc, err);
    }
}

/* A journal that is not this import's is refused before anything is
 * read from the file, each way named, and left as it is: of another
 * sender, of another format, with a line longer than any it writes; one
 * another import holds (its lock) is in use; one in a folder that is not
 * there cannot be opened. Each names what to do about it. */
static void test_journal_not_of_this_import_is_refused(void **state)
{
    fixture_t *f = *state;
    char err[1024] = "";
    const char *written = HEADER_KEYED "E " EPOCH_A "\nD 1 100 100 5\n";
    write_text(f->path, written);
    /* another sender */
    f->identity.sender = "politie/andere-koppeling";
    int rc = open_journal(f, err, sizeof err);
    char want[1024];
    snprintf(want, sizeof want,
             "the journal %s is of an import by " SENDER ", not by politie/andere-koppeling: "
             "give --restart (or --state with another file) to import as "
             "politie/andere-koppeling",
             f->path);
    if (rc != CLI_EXIT_USAGE || strcmp(err, want) != 0)
        fail_msg("another sender: %d: %s", rc, err);
    expect_text(f->path, written);
    f->identity.sender = SENDER;
    /* another format */
    f->identity.format = IMPORT_FORMAT_CSV;
    rc = open_journal(f, err, sizeof err);
    snprintf(want, sizeof want, "the journal %s is of an import as json, not csv: give --restart",
             f->path);
    if (rc != CLI_EXIT_USAGE || strcmp(err, want) != 0)
        fail_msg("another format: %d: %s", rc, err);
    expect_text(f->path, written);
    f->identity.format = IMPORT_FORMAT_JSON;
    /* a line longer than a journal's (line 9, after the header's 7 and E) */
    char long_line[IMPORT_MAX_TEXT + 256];
    memset(long_line, 'R', sizeof long_line - 1);
    long_line[sizeof long_line - 1] = '\0';
    char *damaged = malloc(strlen(written) + sizeof long_line + 2);
    assert_non_null(damaged);
    sprintf(damaged, "%s%s\n", HEADER_KEYED "E " EPOCH_A "\n", long_line);
    write_text(f->path, damaged);
    rc = open_journal(f, err, sizeof err);
    snprintf(want, sizeof want, "the journal %s is damaged at line 9: give --restart", f->path);
    if (rc != CLI_EXIT_USAGE || strcmp(err, want) != 0)
        fail_msg("a long line: %d: %s", rc, err);
    expect_text(f->path, damaged);
    free(damaged);
    /* in use: another import holds its lock */
    write_text(f->path, written);
    int held = open(f->path, O_RDWR | O_CLOEXEC);
    assert_true(held >= 0);
    assert_int_equal(flock(held, LOCK_EX | LOCK_NB), 0);
    rc = open_journal(f, err, sizeof err);
    snprintf(want, sizeof want, "the journal %s is in use: is another import of this file running?",
             f->path);
    if (rc != CLI_EXIT_FAILURE || strcmp(err, want) != 0)
        fail_msg("in use: %d: %s", rc, err);
    assert_int_equal(close(held), 0);
    expect_open(f, "1-100", 100, 0);
    import_journal_close(&f->journal);
    /* a folder that is not there */
    char nowhere[192];
    snprintf(nowhere, sizeof nowhere, "%s/gone/feed.jsonl.import-state", f->dir);
    import_journal_t other;
    rc = import_journal_open(&other, nowhere, &f->identity, 0, 0, &f->refusals, err, sizeof err);
    snprintf(want, sizeof want,
             "cannot open the journal %s: No such file or directory (give --state PATH to keep "
             "it elsewhere)",
             nowhere);
    if (rc != CLI_EXIT_FAILURE || strcmp(err, want) != 0)
        fail_msg("no folder: %d: %s", rc, err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_old_journal_reads_as_before_and_gets_the_epoch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_same_epoch_keeps_the_journal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_epoch_forgets_the_lines_done, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_journal_gets_the_epoch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seqless_journal_is_no_far_floor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_epoch_keeps_what_the_floor_covers, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unknown_or_far_floor_keeps_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_restores_keep_what_the_last_backup_has, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_malformed_epoch_line_is_damage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_journal_records_keyed_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_without_ids_line_keeps_v1_ids, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_malformed_ids_or_key_line_is_damage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_key_is_refused_without_new_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_keeps_the_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_crash_leaves_the_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_keeps_the_batch_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_through_a_link_keeps_the_link, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_keyed_header_cut_before_ids_is_incomplete, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_journal_not_of_this_import_is_refused, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
