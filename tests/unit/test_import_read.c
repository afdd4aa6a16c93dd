/*
 * test_import_read.c — schakel import's reading of a feed: it reads the
 * file its first pass hashed for the journal, and no more of it than that
 * pass saw (a feed still being written, a file renamed into its place),
 * refuses a CSV header without a name for each column and a record whose
 * quoted field the file ends inside, and reads a CSV field's value within
 * its bytes.
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

typedef struct fixture {
    char dir[64];
    char path[128];
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/schakel-import-read-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/feed.jsonl", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    char other[160];
    snprintf(other, sizeof other, "%s.new", f->path);
    unlink(other);
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void write_lines(const char *path, const char *mode, long from, long to, const char *end)
{
    FILE *file = fopen(path, mode);
    assert_non_null(file);
    for (long n = from; n <= to; n++)
        fprintf(file, "{\"kind\":\"witwassen\",\"source_ref\":\"L%ld\"}%s", n, n < to ? "\n" : end);
    assert_int_equal(fclose(file), 0);
}

/* Records the reader gives, their last line number in *last. */
static long read_all(import_reader_t *reader, long *last)
{
    char err[256];
    long n = 0;
    int rc;
    while ((rc = import_reader_next(reader, err, sizeof err)) == 1) {
        assert_string_equal(reader->error, "");
        n++;
        *last = reader->record_line;
    }
    assert_int_equal(rc, 0);
    return n;
}

/* Write text to the fixture's file, scan it as CSV and open a reader on it:
 * import_reader_open's result (0, or -1 / -2 with err). */
static int csv_open(const fixture_t *f, const char *text, import_reader_t *reader, char *err,
                    size_t errlen)
{
    FILE *file = fopen(f->path, "w");
    assert_non_null(file);
    assert_int_equal(fputs(text, file) >= 0, 1);
    assert_int_equal(fclose(file), 0);
    import_fingerprint_t fp;
    assert_int_equal(import_scan(f->path, IMPORT_FORMAT_CSV, &fp, err, errlen), 0);
    return import_reader_open(reader, f->path, &fp, IMPORT_FORMAT_CSV, err, errlen);
}

/* Lines appended after the first pass are not read: the journal's
 * fingerprint covers exactly what is imported. A last line without its
 * line end is read whole, as the first pass saw it. */
static void test_lines_appended_after_the_scan_are_not_read(void **state)
{
    fixture_t *f = *state;
    static const char *const ends[] = {"\n", ""};
    for (size_t e = 0; e < 2; e++) {
        write_lines(f->path, "w", 1, 5, ends[e]);
        import_fingerprint_t fp;
        char err[256];
        assert_int_equal(import_scan(f->path, IMPORT_FORMAT_JSON, &fp, err, sizeof err), 0);
        assert_int_equal(fp.data_lines, 5);
        /* without its line end, line 5 goes on in what is appended: the
         * reader still ends it where the first pass did */
        write_lines(f->path, "a", 6, 9, "\n");
        import_reader_t reader;
        assert_int_equal(
            import_reader_open(&reader, f->path, &fp, IMPORT_FORMAT_JSON, err, sizeof err), 0);
        long last = 0;
        assert_int_equal(read_all(&reader, &last), 5);
        assert_int_equal(last, 5);
        import_reader_close(&reader);
    }
}

/* A file renamed into the path after the first pass is not read. */
static void test_a_file_put_in_its_place_is_refused(void **state)
{
    fixture_t *f = *state;
    char other[160], err[256];
    snprintf(other, sizeof other, "%s.new", f->path);
    write_lines(f->path, "w", 1, 5, "\n");
    import_fingerprint_t fp;
    assert_int_equal(import_scan(f->path, IMPORT_FORMAT_JSON, &fp, err, sizeof err), 0);
    write_lines(other, "w", 1, 5, "\n");
    assert_int_equal(rename(other, f->path), 0);
    import_reader_t reader;
    assert_int_equal(import_reader_open(&reader, f->path, &fp, IMPORT_FORMAT_JSON, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "another file took its place"));
    /* scanned again, it is read */
    assert_int_equal(import_scan(f->path, IMPORT_FORMAT_JSON, &fp, err, sizeof err), 0);
    assert_int_equal(import_reader_open(&reader, f->path, &fp, IMPORT_FORMAT_JSON, err, sizeof err),
                     0);
    long last = 0;
    assert_int_equal(read_all(&reader, &last), 5);
    import_reader_close(&reader);
}

/* A CSV header row with a column without a name refuses the file (-2),
 * naming the line and the empty name, before any record; also when every
 * name is empty, so that the header was read without a byte of a value
 * (clang's UBSan, in fuzz_import: no offset into a buffer never made). */
static void test_csv_header_with_empty_names_is_refused(void **state)
{
    fixture_t *f = *state;
    static const struct {
        const char *file;
        long line;
    } rows[] = {
        {",", 1}, /* fuzz_import's crash-5c10b5b2... */
        {",\r\nwitwassen,ondermijning,GM0935\r\n", 1},
        {",,,\nwitwassen,ondermijning,GM0935,x\n", 1},
        {"\"\",kind\nx,witwassen\n", 1},
        {"kind,,area\nwitwassen,ondermijning,GM0935\n", 1},
        {"\n \n,\nwitwassen\n", 3},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char err[256];
        import_reader_t reader;
        assert_int_equal(csv_open(f, rows[i].file, &reader, err, sizeof err), -2);
        char want[64];
        snprintf(want, sizeof want, "line %ld: unknown column \"\"", rows[i].line);
        if (strncmp(err, want, strlen(want)) != 0)
            fail_msg("file %zu: \"%s\", want \"%s ...\"", i, err, want);
        assert_null(reader.file);
    }
}

/* A CSV record's house_number in digits becomes a number, read within its
 * field: here the last field, whose value ends exactly at the end of the
 * values buffer (256 bytes: ASan sees a read past it), and one followed by
 * a field of digits. Anything else stays text for jsonio.c to refuse. */
static void test_csv_house_number_is_read_within_its_field(void **state)
{
    fixture_t *f = *state;
    char summary[247];
    memset(summary, 'a', sizeof summary - 1);
    summary[sizeof summary - 1] = '\0';
    static const struct {
        const char *header, *value, *after;
        json_int_t number; /* 0: text */
    } rows[] = {
        {"kind,theme,area,summary,house_number", "12", "", 12},
        {"kind,theme,area,summary,house_number,source_ref", "12", ",345", 12},
        {"kind,theme,area,summary,house_number", "0012", "", 12},
        {"kind,theme,area,summary,house_number", "12a", "", 0},
        {"kind,theme,area,summary,house_number", "1234567890", "", 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char err[256], text[512];
        /* "w" + "o" + "GM0935" + 246 + 2 values bytes: 256 in all */
        snprintf(text, sizeof text, "%s\nw,o,GM0935,%s,%s%s\n", rows[i].header, summary,
                 rows[i].value, rows[i].after);
        import_reader_t reader;
        assert_int_equal(csv_open(f, text, &reader, err, sizeof err), 0);
        assert_int_equal(import_reader_next(&reader, err, sizeof err), 1);
        json_t *obj = import_reader_object(&reader, err, sizeof err);
        assert_non_null(obj);
        json_t *number = json_object_get(json_object_get(obj, "address"), "house_number");
        assert_non_null(number);
        if (rows[i].number != 0) {
            assert_true(json_is_integer(number));
            assert_int_equal(json_integer_value(number), rows[i].number);
        } else {
            assert_true(json_is_string(number));
            assert_string_equal(json_string_value(number), rows[i].value);
        }
        json_decref(obj);
        import_reader_close(&reader);
    }
}

/* A quoted field still open where the file ends refuses that record
 * (whether or not the last line has its line end), named with its first
 * and last line; the records before it are read as they are, and the
 * reader ends after it. */
static void test_csv_quote_open_at_the_end_is_refused(void **state)
{
    fixture_t *f = *state;
    static const struct {
        const char *last;
        long first_line, last_line;
    } rows[] = {
        {"witwassen,ondermijning,\"GM0935", 3, 3},
        {"witwassen,\"onder\nmijning,GM0935\n", 3, 4},
        {"witwassen,\"onder\nmijning,GM0935", 3, 4},
        {"witwassen,ondermijning,\"GM\n\n0935\n\n", 3, 6},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char err[256], text[128];
        snprintf(text, sizeof text, "kind,theme,area\nwitwassen,ondermijning,GM0935\n%s",
                 rows[i].last);
        import_reader_t reader;
        assert_int_equal(csv_open(f, text, &reader, err, sizeof err), 0);
        assert_int_equal(import_reader_next(&reader, err, sizeof err), 1);
        assert_string_equal(reader.error, "");
        assert_int_equal(reader.record_line, 2);
        assert_int_equal(import_reader_next(&reader, err, sizeof err), 1);
        if (strcmp(reader.error, "not valid CSV (RFC 4180): a quoted field is not closed before "
                                 "the end of the file") != 0)
            fail_msg("file %zu: \"%s\"", i, reader.error);
        assert_int_equal(reader.record_line, rows[i].first_line);
        assert_int_equal(reader.record_last_line, rows[i].last_line);
        assert_int_equal(import_reader_next(&reader, err, sizeof err), 0);
        import_reader_close(&reader);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lines_appended_after_the_scan_are_not_read, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_file_put_in_its_place_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_csv_header_with_empty_names_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_csv_house_number_is_read_within_its_field, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_csv_quote_open_at_the_end_is_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
