/*
 * test_import_journal.c — schakel import's journal and the broker's store
 * epoch: a journal from before epochs reads as it did and gets the epoch
 * of the run that resumes it; the same epoch leaves it as it is; another
 * one (a restore of the broker's store since) forgets the lines done, not
 * the refusals, also when the journal is read again; a malformed epoch
 * line is damage.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "import.h"

#define SENDER "politie/bvh-koppeling"
#define HASH "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define EPOCH_A "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"
#define EPOCH_B "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"

/* The header a journal of the fixture's file has (batch 100, JSON). */
#define HEADER                                                                                     \
    "# journal of `schakel import`: the lines done and refused; see schakel(1)\n"                  \
    "schakel-import-journal 1\n"                                                                   \
    "file 4096 " HASH "\n"                                                                         \
    "sender " SENDER "\n"                                                                          \
    "format json\n"                                                                                \
    "batch 100\n"

typedef struct fixture {
    char dir[64];
    char path[128];
    import_fingerprint_t fingerprint;
    import_identity_t identity;
    import_journal_t journal;
    import_refusals_t refusals;
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
    f->identity = (import_identity_t){&f->fingerprint, SENDER, IMPORT_FORMAT_JSON, 100};
    f->journal.fd = -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    import_journal_close(&f->journal);
    import_refusals_free(&f->refusals);
    unlink(f->path);
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

static void expect_open(fixture_t *f, long done_through, uint64_t accepted, size_t refusals)
{
    char err[1024] = "";
    int rc = open_journal(f, err, sizeof err);
    if (rc != CLI_EXIT_OK)
        fail_msg("open: %d: %s", rc, err);
    assert_int_equal(f->journal.done_through, done_through);
    assert_int_equal(f->journal.accepted_before, accepted);
    assert_int_equal(f->refusals.n_loaded, refusals);
    assert_int_equal(f->journal.batch, 100);
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
    expect_open(f, 200, 199, 1);
    assert_int_equal(f->journal.has_epoch, 0);
    uint8_t a[SCHAKEL_STORE_EPOCH_BYTES];
    epoch_of(EPOCH_A, a);
    assert_int_equal(import_journal_epoch(&f->journal, a, err, sizeof err), 0);
    assert_int_equal(f->journal.done_through, 200);
    assert_int_equal(f->journal.has_epoch, 1);
    char *text = read_text(f->path);
    assert_string_equal(text, HEADER "R 7 POLICY_DENIED no rule lets politie send this\n"
                                     "D 1 100 99\n"
                                     "D 101 200 100\n"
                                     "E " EPOCH_A "\n");
    free(text);
    /* read again: the same, the epoch known */
    expect_open(f, 200, 199, 1);
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
    expect_open(f, 100, 100, 0);
    uint8_t a[SCHAKEL_STORE_EPOCH_BYTES];
    epoch_of(EPOCH_A, a);
    assert_int_equal(import_journal_epoch(&f->journal, a, err, sizeof err), 0);
    assert_int_equal(f->journal.done_through, 100);
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
    expect_open(f, 200, 199, 1);
    uint8_t b[SCHAKEL_STORE_EPOCH_BYTES];
    epoch_of(EPOCH_B, b);
    assert_int_equal(import_journal_epoch(&f->journal, b, err, sizeof err), 1);
    assert_int_equal(f->journal.done_through, 0);
    assert_int_equal(f->journal.accepted_before, 0);
    assert_memory_equal(f->journal.epoch, b, sizeof b);
    expect_open(f, 0, 0, 1);
    assert_non_null(import_refusals_loaded(&f->refusals, 7));
    /* the rerun goes on from line 1 */
    assert_int_equal(import_journal_done(&f->journal, 1, 100, 99, err, sizeof err), 0);
    expect_open(f, 100, 99, 1);
    /* the same epoch again: nothing more is forgotten */
    assert_int_equal(import_journal_epoch(&f->journal, b, err, sizeof err), 0);
    assert_int_equal(f->journal.done_through, 100);
    char *text = read_text(f->path);
    assert_string_equal(text, HEADER "E " EPOCH_A "\n"
                                     "R 7 POLICY_DENIED no rule lets politie send this\n"
                                     "D 1 100 99\n"
                                     "D 101 200 100\n"
                                     "E " EPOCH_B "\n"
                                     "D 1 100 99\n");
    free(text);
}

/* A new journal names the epoch right after its header; a journal that
 * never finished a batch forgets nothing (and says so: 0). */
static void test_new_journal_gets_the_epoch(void **state)
{
    fixture_t *f = *state;
    char err[1024] = "";
    expect_open(f, 0, 0, 0); /* no file yet: a new journal */
    uint8_t a[SCHAKEL_STORE_EPOCH_BYTES], b[SCHAKEL_STORE_EPOCH_BYTES];
    epoch_of(EPOCH_A, a);
    epoch_of(EPOCH_B, b);
    assert_int_equal(import_journal_epoch(&f->journal, a, err, sizeof err), 0);
    assert_int_equal(import_journal_epoch(&f->journal, b, err, sizeof err), 0);
    char *text = read_text(f->path);
    assert_string_equal(text, HEADER "E " EPOCH_A "\n"
                                     "E " EPOCH_B "\n");
    free(text);
}

/* An epoch line that is not 32 hex digits is damage, as any other. */
static void test_malformed_epoch_line_is_damage(void **state)
{
    fixture_t *f = *state;
    static const char *const lines[] = {
        "E 0a0a\n", "E " EPOCH_A "00\n", "E 0g0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a\n",
        "E\n",      "E  " EPOCH_A "\n",
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_old_journal_reads_as_before_and_gets_the_epoch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_same_epoch_keeps_the_journal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_epoch_forgets_the_lines_done, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_journal_gets_the_epoch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_epoch_line_is_damage, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
