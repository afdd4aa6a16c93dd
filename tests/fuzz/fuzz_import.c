/*
 * fuzz_import.c — libFuzzer harness for what `schakel import FILE` does
 * with a partner's file before anything is signed or sent: the format
 * (forced, and found from the first non-blank byte), the first pass
 * (import_scan: size, hash, data lines), import_reader_open (the CSV
 * header), and every record through import_reader_next and import_item_read
 * (the record as a JSON object, jsonio.c's signal, the message_id, the
 * encoded size), as import.c and import_send.c call them. The input is
 * written to a file in a per-process mkdtemp() folder under /tmp (removed
 * at exit) and read as the format found and as the other one, forced.
 *
 * Promises (abort, with the promise named on stderr, when one breaks):
 * every refusal carries a terminated, non-empty text, and the line it is
 * recorded under starts a record (a non-blank line after the previous
 * record); a CSV header that refuses the file names its line; a record the
 * reader finds malformed is never accepted; the records read, accepted or
 * refused, are as many as the first pass counted (the progress total and
 * the summary's "lines"), and the reader reads every line of the file; an
 * accepted record's bytes are those of its lines, its signal holds every
 * string of its JSON whole, a message_id it names is 32 hex digits and
 * its id, it encodes as libschakel does (signal_pb_encode) to the size
 * import_item_read said (within SCHAKEL_MAX_ITEM_BYTES), decodes to the
 * values it was encoded with (packed again: the same bytes), and the
 * broker's decoder either accepts it or refuses it for a value
 * (wire_validate_signal gives the same refusal), never for its encoding; the
 * reader's buffers stay within 1 MiB however long a line is. Crashes,
 * sanitizer reports and leaks are findings too.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "import.h"
#include "signal_pb.h"
#include "syntax.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A fixed clock, so that a finding replays the same way on any day. */
#define FUZZ_NOW INT64_C(1700000000)
/* The principal the signals are encoded from (import_item_read's sender). */
#define FUZZ_SENDER "politie/bvh-koppeling"
/* The reader keeps a record's limit of a line, and a record: never more
 * than this in any of its buffers, however long a line or record is. */
#define FUZZ_READER_MAX_BUFFER (4u * IMPORT_MAX_RECORD_BYTES)

static char fuzz_import_dir[64];
static char fuzz_import_path[96];

static void fuzz_import_cleanup(void)
{
    if (fuzz_import_path[0] != '\0')
        unlink(fuzz_import_path);
    if (fuzz_import_dir[0] != '\0')
        rmdir(fuzz_import_dir);
}

/* A finding: say which promise broke, leave no file behind, and abort so
 * that libFuzzer and the replay both stop on this input. */
static void fuzz_import_fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_import: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    fuzz_import_cleanup();
    abort();
}

/* Once per process: a folder per input would only measure mkdir. The file
 * has no extension, so that its format is found from its content. */
static void fuzz_import_setup(void)
{
    if (fuzz_import_dir[0] != '\0')
        return;
    snprintf(fuzz_import_dir, sizeof fuzz_import_dir, "/tmp/schakel-fuzz-import-XXXXXX");
    if (sodium_init() < 0 || mkdtemp(fuzz_import_dir) == NULL) {
        perror("fuzz_import: setup");
        abort();
    }
    snprintf(fuzz_import_path, sizeof fuzz_import_path, "%s/feed", fuzz_import_dir);
    atexit(fuzz_import_cleanup);
}

static void fuzz_import_write(const uint8_t *data, size_t size)
{
    FILE *file = fopen(fuzz_import_path, "wb");
    if (file == NULL)
        fuzz_import_fail("cannot create the input file", NULL);
    size_t written = size > 0 ? fwrite(data, 1, size, file) : 0;
    if (fclose(file) != 0 || written != size)
        fuzz_import_fail("cannot write the input file", NULL);
}

/* ------------------------------------------------------------ the input's lines */

/* The input's physical lines, found here independently of the reader:
 * line L (from 1) starts at start[L - 1]; a last line without '\n' counts. */
typedef struct fuzz_input {
    const uint8_t *data;
    size_t size;
    size_t *start;
    size_t n_lines;
} fuzz_input_t;

static const uint8_t fuzz_bom[3] = {0xEF, 0xBB, 0xBF};

static void fuzz_input_init(fuzz_input_t *in, const uint8_t *data, size_t size)
{
    in->data = data;
    in->size = size;
    in->n_lines = 0;
    in->start = malloc((size + 1) * sizeof *in->start);
    if (in->start == NULL)
        fuzz_import_fail("out of memory", NULL);
    for (size_t at = 0; at < size;) {
        in->start[in->n_lines++] = at;
        const uint8_t *end = memchr(data + at, '\n', size - at);
        at = end != NULL ? (size_t)(end - data) + 1 : size;
    }
}

/* The bytes of line L without its line end ("\n" or "\r\n"), and without
 * a UTF-8 BOM on line 1: as the reader sees a line's body. */
static void fuzz_input_body(const fuzz_input_t *in, long line, size_t *from, size_t *to)
{
    size_t begin = in->start[line - 1];
    size_t end = (size_t)line < in->n_lines ? in->start[line] : in->size;
    if (line == 1 && end - begin >= 3 && memcmp(in->data, fuzz_bom, 3) == 0)
        begin += 3;
    if (end > begin && in->data[end - 1] == '\n') {
        end--;
        if (end > begin && in->data[end - 1] == '\r')
            end--;
    }
    *from = begin;
    *to = end;
}

static int fuzz_blank(const uint8_t *bytes, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (bytes[i] != ' ' && bytes[i] != '\t' && bytes[i] != '\r' && bytes[i] != '\n')
            return 0;
    return 1;
}

static int fuzz_line_blank(const fuzz_input_t *in, long line)
{
    size_t from, to;
    fuzz_input_body(in, line, &from, &to);
    return fuzz_blank(in->data + from, to - from);
}

/* The format schakel(1) says a file without an extension has: JSON lines
 * when its first non-blank byte (after a BOM) is '{', else CSV. */
static int fuzz_expected_format(const fuzz_input_t *in)
{
    size_t i = in->size >= 3 && memcmp(in->data, fuzz_bom, 3) == 0 ? 3 : 0;
    while (i < in->size && fuzz_blank(in->data + i, 1))
        i++;
    return i < in->size && in->data[i] == '{' ? IMPORT_FORMAT_JSON : IMPORT_FORMAT_CSV;
}

/* ------------------------------------------------------------ refusals */

/* A refusal names its cause in a terminated, non-empty text. */
static void fuzz_import_check_text(const char *err, size_t errlen, const char *what)
{
    if (memchr(err, '\0', errlen) == NULL || err[0] == '\0')
        fuzz_import_fail("a refusal without a terminated error text", what);
}

/* ------------------------------------------------------------ accepted records */

/* Every string in the record's JSON is whole in C (no NUL cut it short)
 * and UTF-8: the signal's strings point into it. */
static void fuzz_import_check_json(json_t *value)
{
    const char *key;
    json_t *member;
    size_t index;
    switch (json_typeof(value)) {
    case JSON_STRING:
        if (strlen(json_string_value(value)) != json_string_length(value) ||
            !syntax_is_utf8((const uint8_t *)json_string_value(value), json_string_length(value)))
            fuzz_import_fail("an accepted record holds a string with a NUL or not UTF-8", NULL);
        break;
    case JSON_OBJECT:
        json_object_foreach(value, key, member)
        {
            if (!syntax_is_utf8((const uint8_t *)key, strlen(key)))
                fuzz_import_fail("an accepted record has a member name that is not UTF-8", NULL);
            fuzz_import_check_json(member);
        }
        break;
    case JSON_ARRAY:
        json_array_foreach(value, index, member) fuzz_import_check_json(member);
        break;
    default:
        break;
    }
}

/* The decoded Signal holds what libschakel encoded (signal_pb.c, the
 * mapping both the encoding and import_item_read's size go through): packed
 * again, it is the same bytes, so no value was lost or changed on the way
 * (the encoder wrote no unknown fields, and protobuf-c packs the fields of
 * a message in one order). Which field of the signal goes where is
 * test_signal_pb's to check, every field set and unset. */
static void fuzz_import_check_same(const uint8_t *packed, size_t len, const Schakel__Signal *out)
{
    size_t again_len = 0;
    uint8_t *again = wire_encode_signal(out, &again_len);
    if (again == NULL)
        fuzz_import_fail("an accepted record's decoded Signal cannot be encoded", NULL);
    if (again_len != len || memcmp(again, packed, len) != 0)
        fuzz_import_fail("an accepted record's Signal decodes to other values", NULL);
    free(again);
}

/* What the broker makes of the item: accepted, or refused for one of its
 * values (the line is refused with that reason), never for the encoding:
 * the decoder's refusal is its validator's, reason and text, not one of
 * the unpacking, the tree walk or the string scan before it. */
static void fuzz_import_check_broker(const uint8_t *packed, size_t len, const Schakel__Signal *out)
{
    wire_error_t decoded, validated;
    Schakel__Signal *signal = wire_decode_signal(packed, len, FUZZ_NOW, &decoded);
    int valid = wire_validate_signal(out, FUZZ_NOW, &validated) == 0;
    if (signal != NULL) {
        wire_signal_free(&signal);
        if (!valid)
            fuzz_import_fail("the broker's decoder accepted what its validator refused",
                             validated.text);
        return;
    }
    if (decoded.reason == SCHAKEL__REASON__REASON_NONE || decoded.text[0] == '\0')
        fuzz_import_fail("the broker's decoder refused an item without a reason", NULL);
    if (valid || validated.reason != decoded.reason || strcmp(validated.text, decoded.text) != 0)
        fuzz_import_fail("the broker would refuse an accepted record for its encoding",
                         decoded.text);
}

static void fuzz_import_check_item(const import_reader_t *reader, const import_item_t *item)
{
    uint8_t digest[32];
    fuzz_import_check_json(item->object);
    crypto_generichash(digest, sizeof digest, (const unsigned char *)reader->raw, reader->raw_len,
                       NULL, 0);
    if (item->line != reader->record_line || memcmp(digest, item->digest, sizeof digest) != 0)
        fuzz_import_fail("an item's line or digest is not its record's", NULL);
    json_t *hex = json_object_get(item->object, "message_id");
    int named = hex != NULL && !json_is_null(hex);
    uint8_t id[SCHAKEL_MESSAGE_ID_BYTES];
    if (named != item->has_given_id ||
        (named && (strlen(json_string_value(hex)) != 2 * sizeof id ||
                   syntax_unhex(json_string_value(hex), id, sizeof id) != 0 ||
                   memcmp(id, item->given_id, sizeof id) != 0)))
        fuzz_import_fail("an accepted record's message_id is not the 32 hex digits of its id",
                         NULL);
    size_t len = 0;
    uint8_t *packed = signal_pb_encode(&item->signal, FUZZ_SENDER, &len);
    if (packed == NULL)
        fuzz_import_fail("an accepted record cannot be encoded", NULL);
    if (len != item->encoded || len > SCHAKEL_MAX_ITEM_BYTES)
        fuzz_import_fail("an accepted record encodes to another size than predicted, or too large",
                         NULL);
    Schakel__Signal *out = schakel__signal__unpack(NULL, len, packed);
    if (out == NULL)
        fuzz_import_fail("an accepted record's Signal does not unpack", NULL);
    fuzz_import_check_same(packed, len, out);
    fuzz_import_check_broker(packed, len, out);
    schakel__signal__free_unpacked(out, NULL);
    free(packed);
}

/* ------------------------------------------------------------ records */

static void fuzz_import_check_buffers(const import_reader_t *reader)
{
    if (reader->line_cap > FUZZ_READER_MAX_BUFFER || reader->csv_raw_cap > FUZZ_READER_MAX_BUFFER ||
        reader->values_cap > FUZZ_READER_MAX_BUFFER)
        fuzz_import_fail("the reader's buffers grew past 1 MiB", NULL);
}

/* Where the reader says the record is, against the input's own lines. */
static void fuzz_import_check_record(const fuzz_input_t *in, const import_reader_t *reader,
                                     long previous_last)
{
    fuzz_import_check_buffers(reader);
    if (reader->record_line <= previous_last || reader->record_line > reader->record_last_line ||
        reader->record_last_line > reader->line_no || (size_t)reader->line_no > in->n_lines)
        fuzz_import_fail("a record's line numbers are out of order or past the file", NULL);
    if (reader->format == IMPORT_FORMAT_JSON && reader->record_line != reader->record_last_line)
        fuzz_import_fail("a JSON record spans lines", NULL);
    if (fuzz_line_blank(in, reader->record_line))
        fuzz_import_fail("a record is named by a blank line", NULL);
    if (memchr(reader->error, '\0', sizeof reader->error) == NULL)
        fuzz_import_fail("a record's error text is not terminated", NULL);
    if (reader->error[0] != '\0')
        return;
    /* a record read whole: its bytes are those of its lines, its last
     * line's end left out */
    size_t from, to, unused;
    fuzz_input_body(in, reader->record_line, &from, &unused);
    fuzz_input_body(in, reader->record_last_line, &unused, &to);
    if (reader->raw_len > IMPORT_MAX_RECORD_BYTES || reader->raw_len != to - from ||
        memcmp(reader->raw, in->data + from, to - from) != 0)
        fuzz_import_fail("a record's bytes are not those of its lines", NULL);
    if (reader->format == IMPORT_FORMAT_CSV && reader->n_fields > IMPORT_CSV_MAX_FIELDS)
        fuzz_import_fail("a CSV record has more fields than kept, without an error", NULL);
}

/* The non-blank lines: JSON lines' data lines, counted here. */
static uint64_t fuzz_nonblank_lines(const fuzz_input_t *in)
{
    uint64_t nonblank = 0;
    for (size_t line = 1; line <= in->n_lines; line++)
        nonblank += !fuzz_line_blank(in, (long)line);
    return nonblank;
}

/* Every record of the file, as the import reads it in one format. */
static void fuzz_import_read(const fuzz_input_t *in, int format)
{
    char err[IMPORT_MAX_TEXT];
    import_fingerprint_t fp;
    import_reader_t reader;
    memset(err, 'x', sizeof err);
    if (import_scan(fuzz_import_path, format, &fp, err, sizeof err) != 0)
        fuzz_import_fail("the first pass failed on a readable file", err);
    uint8_t hash[32];
    crypto_generichash(hash, sizeof hash, in->data, in->size, NULL, 0);
    if (fp.size != in->size || memcmp(hash, fp.hash, sizeof hash) != 0)
        fuzz_import_fail("the first pass saw another size or hash", NULL);
    if (format == IMPORT_FORMAT_JSON && fp.data_lines != fuzz_nonblank_lines(in))
        fuzz_import_fail("the first pass counts other JSON lines than the non-blank ones", NULL);

    memset(err, 'x', sizeof err);
    int rc = import_reader_open(&reader, fuzz_import_path, &fp, format, err, sizeof err);
    if (rc == -2 && format == IMPORT_FORMAT_CSV) {
        fuzz_import_check_text(err, sizeof err, "a refused header");
        if (strstr(err, "line ") == NULL)
            fuzz_import_fail("a refused header does not name its line", err);
        return;
    }
    if (rc != 0)
        fuzz_import_fail("the reader cannot open a readable file", err);

    uint64_t records = 0;
    long previous_last = 0;
    while ((rc = import_reader_next(&reader, err, sizeof err)) == 1) {
        records++;
        fuzz_import_check_record(in, &reader, previous_last);
        previous_last = reader.record_last_line;
        import_item_t item;
        memset(err, 'x', sizeof err);
        if (import_item_read(&item, &reader, FUZZ_SENDER, err, sizeof err) != 0) {
            fuzz_import_check_text(err, sizeof err, "a refused record");
            if (item.object != NULL || item.recipients != NULL)
                fuzz_import_fail("a refused record left its item filled", NULL);
            continue;
        }
        if (reader.error[0] != '\0')
            fuzz_import_fail("a record the reader found malformed was accepted", reader.error);
        fuzz_import_check_item(&reader, &item);
        import_item_free(&item);
    }
    if (rc != 0)
        fuzz_import_fail("the reader failed on a readable file", err);
    fuzz_import_check_buffers(&reader);
    if (records != fp.data_lines)
        fuzz_import_fail("the records read are not as many as the first pass counted", NULL);
    if ((size_t)reader.line_no != in->n_lines)
        fuzz_import_fail("the reader did not read every line of the file", NULL);
    import_reader_close(&reader);
}

/* --format as given, and the format found from the content. */
static int fuzz_import_detect(const fuzz_input_t *in)
{
    static const struct {
        const char *forced;
        int format;
    } forced[] = {{"json", IMPORT_FORMAT_JSON},
                  {"jsonl", IMPORT_FORMAT_JSON},
                  {"csv", IMPORT_FORMAT_CSV},
                  {"xml", 0}};
    char err[IMPORT_MAX_TEXT];
    int format;
    for (size_t i = 0; i < sizeof forced / sizeof forced[0]; i++) {
        format = 0;
        memset(err, 'x', sizeof err);
        int rc = import_detect_format(fuzz_import_path, forced[i].forced, &format, err, sizeof err);
        if (forced[i].format == 0 ? rc != -1 : rc != 0 || format != forced[i].format)
            fuzz_import_fail("--format is not taken as schakel(1) says", forced[i].forced);
        if (rc != 0)
            fuzz_import_check_text(err, sizeof err, "an unknown --format");
    }
    memset(err, 'x', sizeof err);
    if (import_detect_format(fuzz_import_path, NULL, &format, err, sizeof err) != 0)
        fuzz_import_fail("the format of a readable file cannot be found", err);
    if (format != fuzz_expected_format(in))
        fuzz_import_fail("the format found is not the one the first non-blank byte says", NULL);
    return format;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input_t in;
    fuzz_import_setup();
    fuzz_import_write(data, size);
    fuzz_input_init(&in, data, size);
    int format = fuzz_import_detect(&in);
    fuzz_import_read(&in, format);
    fuzz_import_read(&in, format == IMPORT_FORMAT_JSON ? IMPORT_FORMAT_CSV : IMPORT_FORMAT_JSON);
    free(in.start);
    return 0;
}
