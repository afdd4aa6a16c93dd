/*
 * import.h — the parts of `schakel import` that its files share.
 *
 * import.c: options, the run and its summary. import_read.c: the file's
 * records (JSON lines or RFC 4180 CSV), the first pass, records as JSON
 * objects. import_item.c: a record as the signal it publishes.
 * import_journal.c: the journal that makes a run resumable, and the
 * refusals. import_send.c: batches, their message ids, publishing and
 * retrying. import_progress.c: the progress bar or periodic lines.
 */
#ifndef SCHAKEL_IMPORT_H
#define SCHAKEL_IMPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <jansson.h>

#include "cli.h"
#include "schakel_limits.h"

/* Exit codes of `schakel import` beyond those of every command (cli.h):
 * 3 (CLI_EXIT_REFUSED) means the file was read to its end and some lines
 * were refused; 5 means SIGINT/SIGTERM stopped it between batches. */
#define IMPORT_EXIT_SOME_REFUSED CLI_EXIT_REFUSED
#define IMPORT_EXIT_INTERRUPTED 5

/* One record (a JSON line, a CSV record) of at most this many bytes; an
 * item may encode to 32 KiB, and JSON escapes can triple that. */
#define IMPORT_MAX_RECORD_BYTES (256u * 1024u)
/* Fields of a CSV record kept (the header may name each column once). */
#define IMPORT_CSV_MAX_FIELDS 32u
/* The reason code of a line refused before anything was sent. */
#define IMPORT_LOCAL_REASON "LOCAL_INVALID"
/* Bytes of a reason name, as schakel_error_t.reason_name. */
#define IMPORT_REASON_SIZE 32u
/* A refusal text is cut to this many bytes. */
#define IMPORT_MAX_TEXT 512u
/* Buffer for a principal id (schakel_whoami wants at least 130 bytes). */
#define IMPORT_PRINCIPAL_SIZE 136u

/* How the message ids of a journal's lines are derived (schakel(1),
 * "Batches and message ids"). A journal keeps the derivation it was begun
 * with, also across --restart: one begun by a schakel from before keyed
 * ids names none and goes on with V1, so that a batch accepted but not
 * journalled, or published again by --restart, is sent under the id it
 * had and answered as a repeat. */
enum import_ids {
    IMPORT_IDS_V1 = 1, /* unkeyed BLAKE2b ("schakel-import1"): a recipient can test guesses */
    IMPORT_IDS_KEYED =
        2, /* keyed with a secret derived from the sender's key ("schakel-import2") */
};
/* The secrets an import derives from the sender's key
 * (schakel_derive_secret): the key of its message ids, and a check of
 * that key the journal records (so that a rerun with another key is told
 * apart). Neither lets anyone without the key file compute the other. */
#define IMPORT_KDF_CONTEXT "schkimpt"
#define IMPORT_KDF_ID_KEY 1u
#define IMPORT_KDF_KEY_CHECK 2u
#define IMPORT_ID_KEY_BYTES 32u
#define IMPORT_KEY_CHECK_BYTES 16u

enum import_format {
    IMPORT_FORMAT_JSON = 1,
    IMPORT_FORMAT_CSV = 2,
};

/* Name of a format ("json", "csv"). */
const char *import_format_name(int format);

/* ------------------------------------------------------------ import_read.c */

/* What the first pass learns: the file's identity and how many data lines
 * (records: non-blank lines, without the CSV header) it holds. */
typedef struct import_fingerprint {
    uint64_t size;
    uint8_t hash[32]; /* BLAKE2b-256 of the whole file */
    uint64_t data_lines;
    dev_t device; /* the file scanned: the reader reads this one, no other */
    ino_t inode;
} import_fingerprint_t;

typedef struct import_reader {
    FILE *file;
    uint64_t left; /* bytes it may still read: what the first pass saw, no more */
    int format;
    char *line; /* getline's buffer, reused */
    size_t line_cap;
    long line_no; /* physical lines read so far */
    /* the current record */
    long record_line;      /* its first physical line */
    long record_last_line; /* its last physical line */
    const char *raw;       /* its bytes without the final line end */
    size_t raw_len;
    char error[256]; /* why it cannot be read ("" if it can) */
    /* CSV: the record's bytes and its unquoted field values */
    char *csv_raw;
    size_t csv_raw_len, csv_raw_cap;
    char *values;
    size_t values_len, values_cap;
    size_t field_off[IMPORT_CSV_MAX_FIELDS], field_len[IMPORT_CSV_MAX_FIELDS];
    size_t n_fields;
    int csv_state;      /* at the start of the line being read, then as parsed */
    int line_end_state; /* CSV: the quote state at the end of the last line read, followed
                           over all of it (also the part of a cut line not kept) */
    int line_newline;   /* the last line read ended with '\n' (else: the end of the file) */
    /* CSV: the column (enum import_column) of each position of the header */
    int columns[IMPORT_CSV_MAX_FIELDS];
    size_t n_columns;
} import_reader_t;

/* The format of path: forced ("json", "csv", or NULL), else by extension
 * (.jsonl, .ndjson, .json: JSON lines; .csv: CSV), else by the first
 * non-blank byte ('{': JSON lines, anything else CSV). Returns 0, or -1
 * with err. */
int import_detect_format(const char *path, const char *forced, int *format, char *err,
                         size_t errlen);

/* The first pass: size, hash and data lines of path. 0, or -1 with err. */
int import_scan(const char *path, int format, import_fingerprint_t *fp, char *err, size_t errlen);

/* Open path for reading the records of what the first pass saw (fp): the
 * same file (not one renamed into its place since: -1 with err), and its
 * first fp->size bytes only (lines appended since are not read: the
 * journal's fingerprint covers exactly what is imported). 0, or -1 with err
 * when it cannot be read. For CSV also reads the header row and refuses
 * the file (-2 with err) when a column is unknown or named twice, or the
 * header row is not valid CSV. An empty file has no records. */
int import_reader_open(import_reader_t *reader, const char *path, const import_fingerprint_t *fp,
                       int format, char *err, size_t errlen);

/* The next non-blank record: 1 with reader->record_* and raw set (and
 * reader->error set when it is malformed), 0 at the end, -1 when the file
 * cannot be read (err). */
int import_reader_next(import_reader_t *reader, char *err, size_t errlen);

/* The current record as a JSON object of `schakel publish` input (a CSV
 * record's postcode, house_number and addition become "address", its
 * recipients split at ';'). NULL with err when it is malformed. */
json_t *import_reader_object(import_reader_t *reader, char *err, size_t errlen);

void import_reader_close(import_reader_t *reader);

/* ------------------------------------------------------------ import_journal.c */

typedef struct import_refusal {
    long line;
    char reason[IMPORT_REASON_SIZE];
    char *text;
} import_refusal_t;

/* Every refusal of the file: the first n_loaded come from the journal (and
 * are sorted by line), the rest from this run. */
typedef struct import_refusals {
    import_refusal_t *items;
    size_t n, cap, n_loaded;
} import_refusals_t;

/* Add one (text copied, control characters made spaces). 0 or -1 (memory). */
int import_refusals_add(import_refusals_t *refusals, long line, const char *reason,
                        const char *text);
/* The refusal of a line that the journal holds, or NULL. */
const import_refusal_t *import_refusals_loaded(const import_refusals_t *refusals, long line);
/* Write all, sorted by line, as "line L: REASON: text" to path (0600).
 * 0, or -1 with err. */
int import_refusals_write(import_refusals_t *refusals, const char *path, char *err, size_t errlen);
void import_refusals_free(import_refusals_t *refusals);

/* What a journal belongs to; a resume needs all of it to match. */
typedef struct import_identity {
    const import_fingerprint_t *fingerprint;
    const char *sender;
    int format;
    unsigned batch;
    /* the check of the sender's id key (IMPORT_KDF_KEY_CHECK): a new
     * journal of keyed ids records it; a journal of keyed ids that names
     * another is refused unless new_key (--new-key) */
    const uint8_t *key_check;
    int new_key;
    /* --restart with another batch size than the journal's (--new-batch):
     * refused unless given, as every line goes out under other ids */
    int new_batch;
} import_identity_t;

/* A batch the journal has done: lines first..last, `accepted` of them
 * accepted, and the highest item seq the broker answered for them (0 when
 * none was accepted), which a D line from before seqs does not name. */
typedef struct import_done {
    long first, last;
    uint64_t accepted;
    uint64_t max_seq;
    int has_seq;
} import_done_t;

typedef struct import_journal {
    int fd;
    import_done_t *done; /* the batches done, by first line, none overlapping */
    size_t n_done, cap_done;
    uint64_t accepted_before; /* lines accepted in earlier runs: of those batches */
    unsigned batch;           /* lines per batch of the journal */
    int has_epoch;            /* the journal names the broker's store epoch: */
    uint8_t epoch[SCHAKEL_STORE_EPOCH_BYTES]; /* its last one */
    size_t kept_by_floor;                     /* the last change of epoch kept this many batches, */
    size_t dropped_without_seq;               /* and forgot this many of D lines without a seq */
    int ids;                                  /* enum import_ids of its message ids */
    uint8_t key_check[IMPORT_KEY_CHECK_BYTES]; /* IMPORT_IDS_KEYED: the last key's check */
} import_journal_t;

/* What import_journal_epoch found. */
enum import_epoch_change {
    IMPORT_EPOCH_SAME = 0,       /* the journal's epoch, or nothing done to lose */
    IMPORT_EPOCH_FLOOR = 1,      /* another: the batches the floor seq covers are kept */
    IMPORT_EPOCH_NO_FLOOR = 2,   /* another, its floor unknown: nothing is kept */
    IMPORT_EPOCH_FLOOR_AFAR = 3, /* another, its floor so far above the journal's seqs that
                                  * another restore may lie between: nothing is kept */
};

/* Open the journal at path for the identity: resume one that matches, or
 * start a new one (none yet, or restart). The journal's refusals are added
 * to refusals. If the journal is of another file, sender or format, or
 * its batch size differs from one given explicitly (batch_given), returns
 * CLI_EXIT_USAGE with err saying to use --restart. A journal of keyed ids
 * that names another key than identity->key_check (its last one; with
 * restart, any) is refused with CLI_EXIT_USAGE unless identity->new_key:
 * ids derive from the key, and the lines the broker accepted that it does
 * not record (with restart: every line) would be published again under
 * other ids. A restart keeps the derivation of the journal it replaces
 * when that names the same sender (a journal of unkeyed ids stays one, so
 * that unchanged batches are answered as repeats; the first line of a
 * header cut short says which), and its batch size: another one given
 * with batch_given is refused with CLI_EXIT_USAGE unless
 * identity->new_batch (other batches go out under other ids), and so is
 * a restart without batch_given of a header cut before its batch size.
 * A new journal (also a restart's) is written to PATH.new, made durable
 * and renamed over PATH, its folder synced: a crash leaves the old
 * journal whole or the new one, and the next open removes a PATH.new left
 * behind. Otherwise CLI_EXIT_OK with journal->batch the batch size to
 * use, or CLI_EXIT_FAILURE. */
int import_journal_open(import_journal_t *journal, const char *path,
                        const import_identity_t *identity, int batch_given, int restart,
                        import_refusals_t *refusals, char *err, size_t errlen);

/* Append a refusal; with sync, make it durable before returning (a
 * refusal by the broker must be, before the rest of its batch is sent
 * again). 0, or -1 with err. */
int import_journal_refusal(import_journal_t *journal, const import_refusal_t *refusal, int sync,
                           char *err, size_t errlen);

/* Append "lines first..last are done, `accepted` of them accepted, the
 * highest item seq the broker answered for them max_seq (0: none)" and
 * make it durable. 0, or -1 with err (also for lines that overlap a batch
 * done). */
int import_journal_done(import_journal_t *journal, long first, long last, uint64_t accepted,
                        uint64_t max_seq, char *err, size_t errlen);

/* 1 when the journal has done the batch holding line (a rerun skips it). */
int import_journal_is_done(const import_journal_t *journal, long line);

/* The broker's store epoch and its floor seq (floor_known 0: unknown) as
 * this run begins (schakel_store_epoch_floor). When the journal names
 * another epoch and has batches done, the broker's store was restored
 * since: a batch whose recorded seqs are all at most the floor is kept
 * (the restored store has it, or forgot it on purpose), the others, and
 * every batch of a D line without a seq, are forgotten (their refusals
 * stay) and accepted_before counts the kept ones; with the floor unknown,
 * or at least SCHAKEL_RESTORE_SEQ_MARGIN / 2 above the highest seq the
 * journal holds (a restore it did not see may lie between: a backup made
 * after it has a floor that high), none is kept. Appends the epoch,
 * durably, unless it is the journal's already (a journal from before
 * epochs gets it, its lines kept), with the floor when it kept a batch.
 * enum import_epoch_change, or -1 with err. */
int import_journal_epoch(import_journal_t *journal, const uint8_t epoch[SCHAKEL_STORE_EPOCH_BYTES],
                         int floor_known, uint64_t floor, char *err, size_t errlen);

/* The check of the key this run derives its ids with (a journal with
 * IMPORT_IDS_KEYED): 0 when it is the journal's (and for a V1 journal,
 * whose ids need no key); 1 when it is another (the sender's key was
 * replaced since the journal was written, and import_journal_open let
 * it in with new_key: ids derive otherwise now), recorded durably
 * ("K CHECK") as the journal's key from here on; -1 with err. */
int import_journal_key(import_journal_t *journal, const uint8_t check[IMPORT_KEY_CHECK_BYTES],
                       char *err, size_t errlen);

void import_journal_close(import_journal_t *journal);

/* ------------------------------------------------------------ import_progress.c */

typedef struct import_progress {
    int mode; /* 0 none, 1 a bar on a terminal, 2 plain lines */
    uint64_t total;
    uint64_t done;
    uint64_t start_done; /* lines done in earlier runs (the journal's) */
    double begin_s;      /* when this run began */
    double start_s;      /* when its first line not done before came */
    double last_s;
    int bar_drawn; /* the bar is on the terminal's current line */
} import_progress_t;

/* Progress on stderr: a bar when it is a terminal, plain lines otherwise,
 * nothing with quiet. */
void import_progress_init(import_progress_t *progress, int quiet, uint64_t total);
/* Lines done so far; redrawn at most ten times a second (plain: every few
 * seconds). */
void import_progress_update(import_progress_t *progress, uint64_t done);
/* The lines done so far were done in earlier runs: the rate starts now. */
void import_progress_mark_start(import_progress_t *progress);
/* Clear the bar's line before other text goes to stderr. */
void import_progress_clear(import_progress_t *progress);
/* The final state, and a newline after the bar. */
void import_progress_finish(import_progress_t *progress);

/* ------------------------------------------------------------ import_item.c */

/* One record that parsed into a signal. */
typedef struct import_item {
    long line;
    json_t *object; /* the signal's strings point into it */
    schakel_signal_t signal;
    const char **recipients; /* owned */
    uint8_t digest[32];      /* BLAKE2b-256 of the record's bytes */
    uint8_t given_id[SCHAKEL_MESSAGE_ID_BYTES];
    int has_given_id;
    size_t encoded; /* bytes of its serialized Signal */
    int excluded;   /* refused: no longer sent */
} import_item_t;

/* The reader's current record as an item: its JSON object, its signal (the
 * strings point into the object), its own message_id if it names one, the
 * bytes of the Signal libschakel serializes for it from sender, and the
 * digest of its bytes. 0; or -1 with err saying why it cannot be sent (not
 * JSON, not valid CSV, an unknown member, a wrong type, a message_id that
 * is not 32 hex digits, a signal over SCHAKEL_MAX_ITEM_BYTES), the item
 * then zeroed. The values are not checked here: the broker does. Safe on
 * untrusted input. Free a filled item with import_item_free. */
int import_item_read(import_item_t *item, import_reader_t *reader, const char *sender, char *err,
                     size_t errlen);
/* Free its object and recipients and zero it; a zeroed item is a no-op. */
void import_item_free(import_item_t *item);

/* ------------------------------------------------------------ import_send.c */

/* One publish of a batch: items [from, to) under one message id. */
typedef struct import_publish {
    size_t from, to;
    uint8_t id[SCHAKEL_MESSAGE_ID_BYTES];
    int in_flight; /* sent by import_send_launch, answer not yet taken */
} import_publish_t;

/* One batch: --batch consecutive data lines. */
typedef struct import_batch {
    import_item_t items[SCHAKEL_MAX_ITEMS];
    size_t n_items;
    size_t n_lines;
    long first_line, last_line;
    /* its publishes (a line with its own message_id is one alone) */
    import_publish_t publishes[SCHAKEL_MAX_ITEMS];
    size_t n_publishes;
    /* one publish being sent: its signals and the item each one is */
    schakel_signal_t send[SCHAKEL_MAX_ITEMS];
    size_t send_item[SCHAKEL_MAX_ITEMS];
} import_batch_t;

/* Everything a run carries. */
typedef struct import_run {
    schakel_client_t *client;
    char sender[IMPORT_PRINCIPAL_SIZE];
    import_journal_t journal;
    import_refusals_t refusals;
    import_progress_t progress;
    int timeout_ms;
    unsigned in_flight; /* publishes sent ahead of their answers (--in-flight) */
    int64_t settle_deadline_ms; /* a stopped run takes answers until then (0: not yet) */
    uint64_t accepted;  /* new this run */
    uint64_t already;  /* accepted before: journal and duplicate answers */
    uint64_t batches_done;
    int stop_status; /* exit code of an error that stopped the run, or 0 */
    int epoch_known; /* the broker named its store epoch as the run began: */
    uint8_t epoch[SCHAKEL_STORE_EPOCH_BYTES];
    int epoch_floor_known; /* and its floor seq: */
    uint64_t epoch_floor;
    /* connections libschakel had made when the epoch was last asked: a
     * batch answered after another one is journalled once the epoch is
     * asked again (import_epoch_recheck) */
    uint64_t epoch_connections;
    /* the key of derived message ids (IMPORT_IDS_KEYED), derived from
     * the sender's key; wiped before the run is freed */
    uint8_t id_key[IMPORT_ID_KEY_BYTES];
    const char *journal_path; /* --state */
    int ask_timeout_ms;       /* --connect-timeout: for the epoch */
} import_run_t;

/* Add the current record to the batch: as an item, or as a refusal when
 * it cannot be read (journalled without sync). 0, or -1 when the run must
 * stop (run->stop_status set). */
int import_send_add(import_run_t *run, import_batch_t *batch, import_reader_t *reader);

/* Cut the batch into publishes (each fits a frame; a line with its own
 * message_id alone) and send as many as run->in_flight allows next to the
 * publishes already in flight, without waiting for answers. Returns 0
 * when every publish was sent; 1 when some were not (they are sent by
 * import_send_finish: finish every batch launched so far before launching
 * another, or it would overtake them); -1 when the run must stop
 * (run->stop_status set). */
int import_send_launch(import_run_t *run, import_batch_t *batch);

/* Take the answers of the batch's publishes (launched ones) or publish
 * them (the others), retrying what may be retried and dropping refused
 * lines, then journal the batch as done (after import_epoch_recheck, which
 * may stop the run) and free its items. Batches are finished in the order
 * they were launched. 0, or -1 when the run must stop (run->stop_status
 * set; the batch is not journalled then). */
int import_send_finish(import_run_t *run, import_batch_t *batch);

/* The run stopped: take the answers of the batch's publishes still in
 * flight (all of them within one --timeout from the first call, sending
 * nothing again), count the
 * accepted lines in the summary without journalling them (an earlier
 * batch is not done; a rerun finds them accepted already), and free the
 * batch's items. */
void import_send_settle(import_run_t *run, import_batch_t *batch);

/* Free a batch's items without publishing. */
void import_send_discard(import_batch_t *batch);

/* 1 when SIGINT or SIGTERM is pending (blocked for the whole run). */
int import_interrupted(void);

/* import.c: before a finished batch is journalled. When libschakel has
 * made its connection again since the store epoch was last asked (a
 * broker restarted, or restored from a backup), asks it again: the same
 * epoch, 0 (journal it); another, the journal takes it as a run's start
 * does (an E line, with the floor when that keeps batches), says so and
 * returns -1 with run->stop_status 1: the batch is not journalled (its
 * answers may be the restored store's or the old one's), and the next run
 * publishes again what the change did not keep. -1 too, said, when the
 * broker cannot be asked. */
int import_epoch_recheck(import_run_t *run);

/* Record a refusal of a line (and journal it). 0, or -1 (run->stop_status). */
int import_send_refuse(import_run_t *run, long line, const char *reason, const char *text,
                       int sync);

#endif
