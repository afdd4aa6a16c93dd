/*
 * import_read.c — the records of an import file: JSON lines, or CSV with a
 * header row read strictly by RFC 4180 (quoted fields, doubled quotes,
 * commas and line breaks inside quotes; CRLF or LF line ends). Also the
 * first pass (size, BLAKE2b-256 hash, number of data lines) and each record
 * as a JSON object for jsonio.c, so both formats are checked alike.
 * Trusts nothing in the file: a malformed record is reported in
 * reader->error and reading goes on with the next; only a bad CSV header
 * or an unreadable file refuses the whole file.
 */
#include "import.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "syntax.h"

#define IMPORT_SCAN_CHUNK (256u * 1024u)

/* CSV columns; the header names them by these names. */
enum import_column {
    IMPORT_COL_KIND,
    IMPORT_COL_THEME,
    IMPORT_COL_AREA,
    IMPORT_COL_POSTCODE,
    IMPORT_COL_HOUSE_NUMBER,
    IMPORT_COL_ADDITION,
    IMPORT_COL_SUBJECT,
    IMPORT_COL_GROUNDS,
    IMPORT_COL_CASE_REF,
    IMPORT_COL_SEVERITY,
    IMPORT_COL_OBSERVED_AT,
    IMPORT_COL_SUMMARY,
    IMPORT_COL_SOURCE_REF,
    IMPORT_COL_RECIPIENTS,
    IMPORT_COL_MESSAGE_ID,
    IMPORT_COL_COUNT,
};

static const char *const import_column_names[IMPORT_COL_COUNT] = {
    "kind",        "theme",   "area",       "postcode",   "house_number",
    "addition",    "subject", "grounds",    "case_ref",   "severity",
    "observed_at", "summary", "source_ref", "recipients", "message_id",
};

/* States of the CSV field parser. */
enum import_csv_state {
    IMPORT_CSV_FIELD_START,
    IMPORT_CSV_UNQUOTED,
    IMPORT_CSV_QUOTED,
    IMPORT_CSV_QUOTE_IN_QUOTED, /* a quote inside quotes: closing, or the first of "" */
};

static const unsigned char import_bom[3] = {0xEF, 0xBB, 0xBF};

const char *import_format_name(int format)
{
    return format == IMPORT_FORMAT_CSV ? "csv" : "json";
}

static int import_blank(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (text[i] != ' ' && text[i] != '\t' && text[i] != '\r' && text[i] != '\n')
            return 0;
    return 1;
}

static int import_ends_with(const char *path, const char *suffix)
{
    size_t n = strlen(path), m = strlen(suffix);
    return n > m && strcmp(path + n - m, suffix) == 0;
}

/* The first non-blank byte of the file (after a UTF-8 BOM), or EOF. */
static int import_first_byte(FILE *file)
{
    unsigned char head[3];
    if (fread(head, 1, sizeof head, file) != sizeof head || memcmp(head, import_bom, 3) != 0)
        rewind(file);
    int c;
    while ((c = getc(file)) != EOF)
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
            return c;
    return EOF;
}

int import_detect_format(const char *path, const char *forced, int *format, char *err,
                         size_t errlen)
{
    if (forced != NULL) {
        if (strcmp(forced, "json") == 0 || strcmp(forced, "jsonl") == 0)
            *format = IMPORT_FORMAT_JSON;
        else if (strcmp(forced, "csv") == 0)
            *format = IMPORT_FORMAT_CSV;
        else {
            snprintf(err, errlen, "--format wants json or csv, not '%s'", forced);
            return -1;
        }
        return 0;
    }
    if (import_ends_with(path, ".jsonl") || import_ends_with(path, ".ndjson") ||
        import_ends_with(path, ".json")) {
        *format = IMPORT_FORMAT_JSON;
        return 0;
    }
    if (import_ends_with(path, ".csv")) {
        *format = IMPORT_FORMAT_CSV;
        return 0;
    }
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    int first = import_first_byte(file);
    fclose(file);
    *format = first == '{' ? IMPORT_FORMAT_JSON : IMPORT_FORMAT_CSV;
    return 0;
}

/* ------------------------------------------------------------ first pass */

/* Counts data lines as the reader will find them: non-blank lines (JSON),
 * or non-blank records (CSV, less the header), with the reader's states: a
 * line break inside quotes does not end a record, a malformed field ends
 * its record at the end of its line. */
typedef struct import_counter {
    int format;
    int state; /* enum import_csv_state, or -1: skipping a malformed rest of a line */
    int nonblank;
    int at_start; /* before the first byte: a BOM is not content */
    uint64_t records;
} import_counter_t;

#define IMPORT_COUNT_SKIP (-1)

/* The CSV state after byte c (not a line break outside quotes). */
static int import_count_csv(int state, unsigned char c)
{
    switch (state) {
    case IMPORT_CSV_FIELD_START:
        return c == '"' ? IMPORT_CSV_QUOTED : c == ',' ? state : IMPORT_CSV_UNQUOTED;
    case IMPORT_CSV_UNQUOTED:
        return c == ',' ? IMPORT_CSV_FIELD_START : c == '"' ? IMPORT_COUNT_SKIP : state;
    case IMPORT_CSV_QUOTED:
        return c == '"' ? IMPORT_CSV_QUOTE_IN_QUOTED : state;
    case IMPORT_CSV_QUOTE_IN_QUOTED:
        return c == '"'    ? IMPORT_CSV_QUOTED
               : c == ','  ? IMPORT_CSV_FIELD_START
               : c == '\r' ? state
                           : IMPORT_COUNT_SKIP;
    default:
        return state;
    }
}

static void import_count(import_counter_t *counter, const unsigned char *bytes, size_t len)
{
    size_t i = 0;
    if (counter->at_start && len >= 3 && memcmp(bytes, import_bom, 3) == 0)
        i = 3;
    counter->at_start = 0;
    int csv = counter->format == IMPORT_FORMAT_CSV;
    for (; i < len; i++) {
        unsigned char c = bytes[i];
        if (c == '\n' && counter->state != IMPORT_CSV_QUOTED) {
            counter->records += (uint64_t)counter->nonblank;
            counter->nonblank = 0;
            counter->state = IMPORT_CSV_FIELD_START;
            continue;
        }
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
            counter->nonblank = 1;
        if (csv)
            counter->state = import_count_csv(counter->state, c);
    }
}

int import_scan(const char *path, int format, import_fingerprint_t *fp, char *err, size_t errlen)
{
    memset(fp, 0, sizeof *fp);
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    unsigned char *chunk = malloc(IMPORT_SCAN_CHUNK);
    if (chunk == NULL) {
        fclose(file);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    crypto_generichash_state state;
    crypto_generichash_init(&state, NULL, 0, sizeof fp->hash);
    import_counter_t counter = {.format = format, .state = IMPORT_CSV_FIELD_START, .at_start = 1};
    size_t got;
    while ((got = fread(chunk, 1, IMPORT_SCAN_CHUNK, file)) > 0) {
        crypto_generichash_update(&state, chunk, got);
        import_count(&counter, chunk, got);
        fp->size += got;
    }
    struct stat st;
    int failed = ferror(file) || fstat(fileno(file), &st) != 0;
    if (!failed) {
        fp->device = st.st_dev;
        fp->inode = st.st_ino;
    }
    fclose(file);
    free(chunk);
    if (failed) {
        snprintf(err, errlen, "cannot read %s", path);
        return -1;
    }
    crypto_generichash_final(&state, fp->hash, sizeof fp->hash);
    counter.records += (uint64_t)counter.nonblank; /* a last line without a line end */
    if (format == IMPORT_FORMAT_CSV && counter.records > 0)
        counter.records--; /* the header */
    fp->data_lines = counter.records;
    return 0;
}

/* ------------------------------------------------------------ reading lines */

/* Grow *buf to hold need bytes (doubling: no reallocation per line). */
static int import_reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t next = *cap < 256 ? 256 : *cap;
    while (next < need)
        next *= 2;
    char *grown = realloc(*buf, next);
    if (grown == NULL)
        return -1;
    *buf = grown;
    *cap = next;
    return 0;
}

/* What is kept of one physical line: a record's limit, a BOM and a CRLF. A
 * longer line is read to its end but not kept (its record is refused as too
 * long), so one huge line cannot take the memory getline would give it. */
#define IMPORT_LINE_KEEP (IMPORT_MAX_RECORD_BYTES + 8u)

/* Read one physical line (through its '\n', or to the end of the file) into
 * reader->line, keeping at most IMPORT_LINE_KEEP bytes. Returns the bytes
 * kept (the line is cut if *cut), -1 at the end, -2 on a read error. */
static ssize_t import_read_line(import_reader_t *reader, int *cut)
{
    if (import_reserve(&reader->line, &reader->line_cap, IMPORT_LINE_KEEP + 1) != 0)
        return -2;
    size_t kept = 0, seen = 0;
    int c = EOF, csv = reader->format == IMPORT_FORMAT_CSV, state = reader->csv_state;
    *cut = 0;
    while (reader->left > 0 && (c = getc_unlocked(reader->file)) != EOF) {
        reader->left--;
        seen++;
        if (kept < IMPORT_LINE_KEEP)
            reader->line[kept++] = (char)c;
        else
            *cut = 1;
        if (c == '\n')
            break;
        if (csv) /* as the first pass follows it: where the record really ends */
            state = import_count_csv(state, (unsigned char)c);
    }
    reader->line_end_state = state;
    reader->line_newline = c == '\n';
    if (ferror(reader->file))
        return -2;
    if (seen == 0)
        return -1;
    reader->line[kept] = '\0';
    return (ssize_t)kept;
}

/* The next physical line into reader->line: its length with the line end,
 * *body its length without (more than IMPORT_MAX_RECORD_BYTES for a line
 * that was cut); -1 at the end, -2 on a read error. */
static ssize_t import_getline(import_reader_t *reader, size_t *body)
{
    int cut = 0;
    ssize_t len = import_read_line(reader, &cut);
    if (len < 0)
        return len;
    reader->line_no++;
    if (reader->line_no == 1 && len >= 3 && memcmp(reader->line, import_bom, 3) == 0) {
        memmove(reader->line, reader->line + 3, (size_t)len - 2); /* with its NUL */
        len -= 3;
    }
    size_t n = (size_t)len;
    if (cut) {
        *body = n; /* IMPORT_LINE_KEEP bytes, more than any record may hold */
        return len;
    }
    if (n > 0 && reader->line[n - 1] == '\n') {
        n--;
        if (n > 0 && reader->line[n - 1] == '\r')
            n--;
    }
    *body = n;
    return len;
}

static int import_next_json(import_reader_t *reader, char *err, size_t errlen)
{
    size_t body;
    ssize_t len;
    while ((len = import_getline(reader, &body)) >= 0) {
        if (import_blank(reader->line, body))
            continue;
        reader->record_line = reader->line_no;
        reader->record_last_line = reader->line_no;
        reader->raw = reader->line;
        reader->raw_len = body;
        reader->error[0] = '\0';
        if (body > IMPORT_MAX_RECORD_BYTES)
            snprintf(reader->error, sizeof reader->error, "longer than %u bytes",
                     IMPORT_MAX_RECORD_BYTES);
        return 1;
    }
    if (len == -2) {
        snprintf(err, errlen, "cannot read line %ld: %s", reader->line_no + 1, strerror(errno));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ CSV records */

static void import_csv_fail(import_reader_t *reader, const char *what)
{
    if (reader->error[0] == '\0')
        snprintf(reader->error, sizeof reader->error, "not valid CSV (RFC 4180): %s", what);
}

static int import_csv_append(import_reader_t *reader, char c)
{
    if (import_reserve(&reader->values, &reader->values_cap, reader->values_len + 1) != 0)
        return -1;
    reader->values[reader->values_len++] = c;
    return 0;
}

static void import_csv_end_field(import_reader_t *reader, size_t *field_start)
{
    if (reader->n_fields < IMPORT_CSV_MAX_FIELDS) {
        reader->field_off[reader->n_fields] = *field_start;
        reader->field_len[reader->n_fields] = reader->values_len - *field_start;
    } else {
        import_csv_fail(reader, "more fields than any header may have");
    }
    reader->n_fields++;
    *field_start = reader->values_len;
    reader->csv_state = IMPORT_CSV_FIELD_START;
}

/* A byte of a field that does not start with a quote. */
static int import_csv_unquoted(import_reader_t *reader, char c, size_t *field_start)
{
    reader->csv_state = IMPORT_CSV_UNQUOTED;
    if (c == ',') {
        import_csv_end_field(reader, field_start);
        return 0;
    }
    if (c == '"')
        import_csv_fail(reader, "a quote inside a field that does not start with one");
    else if (c == '\r' || c == '\n')
        import_csv_fail(reader, "a line break outside quotes");
    return import_csv_append(reader, c);
}

/* One byte of a field outside the line end. Returns 0, or -1 (memory). */
static int import_csv_byte(import_reader_t *reader, char c, size_t *field_start)
{
    switch (reader->csv_state) {
    case IMPORT_CSV_FIELD_START:
        if (c == '"') {
            reader->csv_state = IMPORT_CSV_QUOTED;
            return 0;
        }
        return import_csv_unquoted(reader, c, field_start);
    case IMPORT_CSV_UNQUOTED:
        return import_csv_unquoted(reader, c, field_start);
    case IMPORT_CSV_QUOTED:
        if (c == '"') {
            reader->csv_state = IMPORT_CSV_QUOTE_IN_QUOTED;
            return 0;
        }
        return import_csv_append(reader, c);
    default: /* IMPORT_CSV_QUOTE_IN_QUOTED */
        if (c == '"') {
            reader->csv_state = IMPORT_CSV_QUOTED;
            return import_csv_append(reader, '"');
        }
        if (c == ',') {
            import_csv_end_field(reader, field_start);
            return 0;
        }
        import_csv_fail(reader, "text after the closing quote of a field");
        return 0;
    }
}

/* Keep the record's bytes (for its message id), up to the limit. */
static int import_csv_keep(import_reader_t *reader, const char *bytes, size_t len)
{
    if (reader->csv_raw_len + len > IMPORT_MAX_RECORD_BYTES) {
        if (reader->error[0] == '\0')
            snprintf(reader->error, sizeof reader->error, "longer than %u bytes",
                     IMPORT_MAX_RECORD_BYTES);
        return 0;
    }
    if (import_reserve(&reader->csv_raw, &reader->csv_raw_cap, reader->csv_raw_len + len) != 0)
        return -1;
    memcpy(reader->csv_raw + reader->csv_raw_len, bytes, len);
    reader->csv_raw_len += len;
    return 0;
}

/* Feed one physical line (len bytes, body without the line end). Returns 1
 * when the record ends with it, 0 when a quoted field goes on, -1 (memory). */
static int import_csv_line(import_reader_t *reader, size_t len, size_t body, size_t *field_start)
{
    const char *line = reader->line;
    if (body > IMPORT_MAX_RECORD_BYTES && reader->error[0] == '\0') /* a cut line */
        snprintf(reader->error, sizeof reader->error, "longer than %u bytes",
                 IMPORT_MAX_RECORD_BYTES);
    for (size_t i = 0; i < body && reader->error[0] == '\0'; i++)
        if (import_csv_byte(reader, line[i], field_start) != 0)
            return -1;
    if (reader->error[0] != '\0') {
        /* Refused: its values no longer matter, but where it ends does. A
         * quoted field still open at the end of the line goes on (as the
         * first pass counts it), so its lines never become records. */
        reader->csv_state = reader->line_end_state;
        if (body <= IMPORT_MAX_RECORD_BYTES && import_csv_keep(reader, line, body) != 0)
            return -1;
        return reader->csv_state == IMPORT_CSV_QUOTED && reader->line_newline ? 0 : 1;
    }
    if (reader->csv_state == IMPORT_CSV_QUOTED) {
        if (body == len) { /* the last line of the file, and no closing quote */
            import_csv_fail(reader, "a quoted field is not closed before the end of the file");
            return import_csv_keep(reader, line, body) == 0 ? 1 : -1;
        }
        for (size_t i = body; i < len; i++) /* the line break belongs to the field */
            if (import_csv_append(reader, line[i]) != 0)
                return -1;
        return import_csv_keep(reader, line, len) == 0 ? 0 : -1;
    }
    import_csv_end_field(reader, field_start);
    return import_csv_keep(reader, line, body) == 0 ? 1 : -1;
}

static int import_next_csv(import_reader_t *reader, char *err, size_t errlen)
{
    size_t body, field_start = 0;
    ssize_t len;
    int started = 0;
    while ((len = import_getline(reader, &body)) >= 0) {
        if (!started) {
            if (import_blank(reader->line, body))
                continue;
            started = 1;
            reader->record_line = reader->line_no;
            reader->csv_raw_len = 0;
            reader->values_len = 0;
            reader->n_fields = 0;
            reader->error[0] = '\0';
            reader->csv_state = IMPORT_CSV_FIELD_START;
        }
        int ended = import_csv_line(reader, (size_t)len, body, &field_start);
        if (ended < 0) {
            snprintf(err, errlen, "out of memory reading line %ld", reader->line_no);
            return -1;
        }
        if (ended) {
            reader->csv_state = IMPORT_CSV_FIELD_START; /* where the next line starts */
            reader->record_last_line = reader->line_no;
            reader->raw = reader->csv_raw;
            reader->raw_len = reader->csv_raw_len;
            return 1;
        }
    }
    if (len == -2) {
        snprintf(err, errlen, "cannot read line %ld: %s", reader->line_no + 1, strerror(errno));
        return -1;
    }
    if (started) { /* the file ended inside a quoted field */
        import_csv_fail(reader, "a quoted field is not closed before the end of the file");
        reader->record_last_line = reader->line_no;
        reader->raw = reader->csv_raw;
        reader->raw_len = reader->csv_raw_len;
        return 1;
    }
    return 0;
}

int import_reader_next(import_reader_t *reader, char *err, size_t errlen)
{
    if (reader->format == IMPORT_FORMAT_CSV)
        return import_next_csv(reader, err, errlen);
    return import_next_json(reader, err, errlen);
}

/* Read the header row into reader->columns. 0, -1 when the file cannot be
 * read, -2 when the header is not one we take (err says why). */
static int import_csv_header(import_reader_t *reader, char *err, size_t errlen)
{
    int rc = import_next_csv(reader, err, errlen);
    if (rc <= 0)
        return rc; /* an empty file: no records */
    if (reader->error[0] != '\0') {
        snprintf(err, errlen, "the header row (line %ld) is %s", reader->record_line,
                 reader->error);
        return -2;
    }
    unsigned seen = 0;
    for (size_t i = 0; i < reader->n_fields; i++) {
        size_t len = reader->field_len[i];
        /* a header of empty names only has no values buffer at all */
        const char *name = len > 0 ? reader->values + reader->field_off[i] : "";
        int column = 0;
        while (column < IMPORT_COL_COUNT && (strlen(import_column_names[column]) != len ||
                                             memcmp(import_column_names[column], name, len) != 0))
            column++;
        if (column == IMPORT_COL_COUNT) {
            snprintf(err, errlen,
                     "line %ld: unknown column \"%.*s\" (columns: kind, theme, area, postcode, "
                     "house_number, addition, subject, grounds, case_ref, severity, "
                     "observed_at, summary, source_ref, recipients, message_id)",
                     reader->record_line, (int)(len > 64 ? 64 : len), name);
            return -2;
        }
        if (seen & (1u << column)) {
            snprintf(err, errlen, "line %ld: column \"%s\" is named twice", reader->record_line,
                     import_column_names[column]);
            return -2;
        }
        seen |= 1u << column;
        reader->columns[i] = column;
    }
    reader->n_columns = reader->n_fields;
    return 0;
}

int import_reader_open(import_reader_t *reader, const char *path, const import_fingerprint_t *fp,
                       int format, char *err, size_t errlen)
{
    memset(reader, 0, sizeof *reader);
    reader->format = format;
    reader->left = fp->size;
    reader->file = fopen(path, "rb");
    if (reader->file == NULL) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(reader->file), &st) != 0 || st.st_dev != fp->device ||
        st.st_ino != fp->inode) {
        snprintf(err, errlen, "another file took its place while it was being read");
        import_reader_close(reader);
        return -1;
    }
    int rc = format == IMPORT_FORMAT_CSV ? import_csv_header(reader, err, errlen) : 0;
    if (rc != 0)
        import_reader_close(reader);
    return rc;
}

void import_reader_close(import_reader_t *reader)
{
    if (reader->file != NULL)
        fclose(reader->file);
    free(reader->line);
    free(reader->csv_raw);
    free(reader->values);
    memset(reader, 0, sizeof *reader);
}

/* ------------------------------------------------------------ records as JSON */

/* Set member name of parent to value (taking it); -1 if it failed. */
static int import_set(json_t *parent, const char *name, json_t *value)
{
    return value == NULL || json_object_set_new(parent, name, value) != 0 ? -1 : 0;
}

/* A field's text as a JSON string: refused if it holds a NUL byte (a C
 * string would silently end there) or is not UTF-8. */
static json_t *import_text(const char *value, size_t len, const char *column, char *err,
                           size_t errlen)
{
    if (memchr(value, '\0', len) != NULL || !syntax_is_utf8((const uint8_t *)value, len)) {
        snprintf(err, errlen, "column %s is not UTF-8 text without NUL bytes", column);
        return NULL;
    }
    json_t *text = json_stringn(value, len);
    if (text == NULL)
        snprintf(err, errlen, "out of memory");
    return text;
}

/* "politie;om" as ["politie", "om"]; an empty id is refused. */
static json_t *import_recipients(const char *value, size_t len, char *err, size_t errlen)
{
    json_t *list = json_array();
    size_t start = 0;
    for (size_t i = 0; list != NULL && i <= len; i++) {
        if (i < len && value[i] != ';')
            continue;
        if (i == start) {
            snprintf(err, errlen, "column recipients has an empty partner id (';' separates ids)");
            json_decref(list);
            return NULL;
        }
        json_t *id = import_text(value + start, i - start, "recipients", err, errlen);
        if (id == NULL || json_array_append_new(list, id) != 0) {
            json_decref(list);
            return NULL;
        }
        start = i + 1;
    }
    if (list == NULL)
        snprintf(err, errlen, "out of memory");
    return list;
}

/* len bytes, all digits. A field's value is not NUL-terminated (the next
 * field's bytes follow it, or the end of the buffer): no str* function may
 * read it. */
static int import_digits(const char *value, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (value[i] < '0' || value[i] > '9')
            return 0;
    return 1;
}

/* house_number in digits as a JSON number; anything else stays text, which
 * jsonio.c then refuses with its own words. */
static json_t *import_house_number(const char *value, size_t len, char *err, size_t errlen)
{
    if (len > 0 && len <= 9 && import_digits(value, len)) {
        json_int_t number = 0;
        for (size_t i = 0; i < len; i++)
            number = number * 10 + (value[i] - '0');
        return json_integer(number);
    }
    return import_text(value, len, "house_number", err, errlen);
}

/* One non-empty field into obj (address parts into address). */
static int import_csv_field(json_t *obj, json_t *address, int column, const char *value, size_t len,
                            char *err, size_t errlen)
{
    const char *name = import_column_names[column];
    json_t *json;
    switch (column) {
    case IMPORT_COL_RECIPIENTS:
        json = import_recipients(value, len, err, errlen);
        break;
    case IMPORT_COL_HOUSE_NUMBER:
        json = import_house_number(value, len, err, errlen);
        break;
    default:
        json = import_text(value, len, name, err, errlen);
        break;
    }
    if (json == NULL)
        return -1;
    int in_address = column == IMPORT_COL_POSTCODE || column == IMPORT_COL_HOUSE_NUMBER ||
                     column == IMPORT_COL_ADDITION;
    if (import_set(in_address ? address : obj, name, json) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static json_t *import_csv_object(import_reader_t *reader, char *err, size_t errlen)
{
    if (reader->n_fields != reader->n_columns) {
        snprintf(err, errlen, "has %zu fields; the header has %zu columns", reader->n_fields,
                 reader->n_columns);
        return NULL;
    }
    json_t *obj = json_object(), *address = json_object();
    if (obj == NULL || address == NULL) {
        json_decref(obj);
        json_decref(address);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < reader->n_fields; i++) {
        if (reader->field_len[i] == 0)
            continue; /* an empty cell: the field is absent */
        if (import_csv_field(obj, address, reader->columns[i],
                             reader->values + reader->field_off[i], reader->field_len[i], err,
                             errlen) != 0) {
            json_decref(obj);
            json_decref(address);
            return NULL;
        }
    }
    if (json_object_size(address) == 0) {
        json_decref(address);
    } else if (import_set(obj, "address", address) != 0) {
        json_decref(obj);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return obj;
}

json_t *import_reader_object(import_reader_t *reader, char *err, size_t errlen)
{
    if (reader->error[0] != '\0') {
        snprintf(err, errlen, "%s", reader->error);
        return NULL;
    }
    if (reader->format == IMPORT_FORMAT_CSV)
        return import_csv_object(reader, err, errlen);
    json_error_t jerr;
    json_t *obj = json_loadb(reader->raw, reader->raw_len, JSON_REJECT_DUPLICATES, &jerr);
    if (obj == NULL)
        snprintf(err, errlen, "not JSON: %s (column %d)", jerr.text, jerr.column);
    return obj;
}
