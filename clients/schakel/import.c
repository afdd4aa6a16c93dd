/*
 * import.c — `schakel import FILE`: a partner's bulk feed (JSON lines, or
 * CSV with a header row) published in signed batches, with progress, a
 * journal that makes a rerun go on where the last one stopped without
 * publishing anything twice, and a list of the refused lines.
 *
 * Owns the options, the order of the run (check the file before anything
 * is sent, connect, open the journal and compare the broker's store epoch
 * with the journal's, read and send batch by batch, asking the epoch again
 * before a batch is journalled when libschakel has made its connection
 * again since, and at the end) and the summary. SIGINT and SIGTERM are
 * blocked for the whole run and looked at between batches: the batch
 * being sent is finished and journalled, then the run stops (exit 5).
 * Exit codes: see import.h and schakel(1).
 */
#include "import.h"
#include "plural.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define IMPORT_DEFAULT_TIMEOUT_MS 10000
#define IMPORT_MAX_TIMEOUT_S 3600
#define IMPORT_DEFAULT_BATCH SCHAKEL_MAX_ITEMS
/* Publishes sent ahead of their answers: a few keep the broker busy while
 * the next batch is read and signed; each holds a batch (about 100 KiB). */
#define IMPORT_DEFAULT_IN_FLIGHT 4
#define IMPORT_MAX_IN_FLIGHT 16
#define IMPORT_SKIP_UPDATE_MASK 4095u /* progress while skipping journalled lines */

enum import_option {
    IMPORT_OPT_FORMAT = CLI_OPT_FIRST_OWN,
    IMPORT_OPT_BATCH,
    IMPORT_OPT_STATE,
    IMPORT_OPT_RESTART,
    IMPORT_OPT_NEW_KEY,
    IMPORT_OPT_NEW_BATCH,
    IMPORT_OPT_REFUSALS,
    IMPORT_OPT_TIMEOUT,
    IMPORT_OPT_QUIET,
    IMPORT_OPT_IN_FLIGHT,
    IMPORT_OPT_TEST_INTERRUPT,
};

static const char import_usage[] =
    "usage: schakel import [OPTIONS] FILE\n"
    "\n"
    "Publish a feed of signals in signed batches: JSON lines (one object per line,\n"
    "the fields of 'schakel publish') or CSV with a header row naming those fields\n"
    "(postcode, house_number and addition for the address; recipients separated\n"
    "by ';'). Interrupted or failed runs go on where they stopped when run again;\n"
    "nothing is published twice. After the broker's store was restored from a\n"
    "backup, a run again publishes the batches accepted after the backup was\n"
    "taken (what the broker kept counts as already accepted). Prints \"accepted N,\n"
    "refused N, already accepted N\" and lists each refused line in the refusals\n"
    "file.\n"
    "\n"
    "options:\n"
    "  --format F           json or csv (default: by the extension .jsonl, .json,\n"
    "                       .csv, else by the first character: '{' is JSON)\n"
    "  --batch N            lines per batch, 1 to 256 (default 256)\n"
    "  --state PATH         the journal of this import (default FILE.import-state)\n"
    "  --restart            forget the journal and start again from the first line,\n"
    "                       with the journal's batch size and message ids\n"
    "  --new-batch          with --restart, take the --batch given over the\n"
    "                       journal's (see schakel(1): lines are delivered twice)\n"
    "  --new-key            go on with a journal written with another key of the\n"
    "                       sender (see schakel(1): lines may be delivered twice)\n"
    "  --refusals PATH      the list of refused lines (default FILE.refused)\n"
    "  --timeout S          seconds to wait for each answer of the broker (default 10)\n"
    "  --in-flight N        publishes sent before their answers come, 1 to 16\n"
    "                       (default 4; 1: wait for each answer before the next)\n"
    "  --quiet              no progress on stderr\n" CLI_COMMON_HELP "\n"
    "Exit status: 0 every line accepted (now or before), 1 failure, 2 usage or a file\n"
    "that cannot be imported as it is, 3 some lines refused, 4 cannot reach or\n"
    "authenticate to the broker, 5 interrupted (run it again to go on).\n";

static const struct option import_options[] = {
    CLI_COMMON_LONG_OPTIONS,
    {"format", 1, NULL, IMPORT_OPT_FORMAT},
    {"batch", 1, NULL, IMPORT_OPT_BATCH},
    {"state", 1, NULL, IMPORT_OPT_STATE},
    {"restart", 0, NULL, IMPORT_OPT_RESTART},
    {"new-key", 0, NULL, IMPORT_OPT_NEW_KEY},
    {"new-batch", 0, NULL, IMPORT_OPT_NEW_BATCH},
    {"refusals", 1, NULL, IMPORT_OPT_REFUSALS},
    {"timeout", 1, NULL, IMPORT_OPT_TIMEOUT},
    {"quiet", 0, NULL, IMPORT_OPT_QUIET},
    {"in-flight", 1, NULL, IMPORT_OPT_IN_FLIGHT},
    /* for tests: raise SIGINT once this many batches are sent (not in --help; in
     * schakel(1) as a test hook: the tests run the program that is installed) */
    {"test-interrupt-after-batches", 1, NULL, IMPORT_OPT_TEST_INTERRUPT},
    {NULL, 0, NULL, 0},
};

typedef struct import_options {
    cli_options_t common;
    const char *file;
    const char *format;
    unsigned batch;
    int batch_given;
    const char *state;
    int restart;
    int new_key;
    int new_batch;
    const char *refusals;
    int timeout_ms;
    unsigned in_flight;
    int quiet;
    uint64_t interrupt_after; /* 0: never */
    char state_buf[4096], refusals_buf[4096];
} import_options_t;

/* One option of ours. Returns 1 if taken, 0 if not ours, -1 if bad. */
static int import_option(import_options_t *o, int option, const char *arg)
{
    long long number;
    switch (option) {
    case IMPORT_OPT_FORMAT:
        o->format = arg;
        return 1;
    case IMPORT_OPT_BATCH:
        if (cli_parse_number(arg, 1, SCHAKEL_MAX_ITEMS, &number) != 0)
            return cli_bad_value("import", "--batch wants a number from 1 to %u, not '%s'",
                                 SCHAKEL_MAX_ITEMS, arg);
        o->batch = (unsigned)number;
        o->batch_given = 1;
        return 1;
    case IMPORT_OPT_STATE:
        o->state = arg;
        return 1;
    case IMPORT_OPT_RESTART:
        o->restart = 1;
        return 1;
    case IMPORT_OPT_NEW_KEY:
        o->new_key = 1;
        return 1;
    case IMPORT_OPT_NEW_BATCH:
        o->new_batch = 1;
        return 1;
    case IMPORT_OPT_REFUSALS:
        o->refusals = arg;
        return 1;
    case IMPORT_OPT_TIMEOUT:
        if (cli_parse_number(arg, 1, IMPORT_MAX_TIMEOUT_S, &number) != 0)
            return cli_bad_value("import", "--timeout wants whole seconds from 1 to %d, not '%s'",
                                 IMPORT_MAX_TIMEOUT_S, arg);
        o->timeout_ms = (int)number * 1000;
        return 1;
    case IMPORT_OPT_QUIET:
        o->quiet = 1;
        return 1;
    case IMPORT_OPT_IN_FLIGHT:
        if (cli_parse_number(arg, 1, IMPORT_MAX_IN_FLIGHT, &number) != 0)
            return cli_bad_value("import", "--in-flight wants a number from 1 to %d, not '%s'",
                                 IMPORT_MAX_IN_FLIGHT, arg);
        o->in_flight = (unsigned)number;
        return 1;
    case IMPORT_OPT_TEST_INTERRUPT:
        if (cli_parse_number(arg, 1, INT32_MAX, &number) != 0)
            return cli_bad_value("import",
                                 "--test-interrupt-after-batches wants a number from 1 to %d, "
                                 "not '%s'",
                                 INT32_MAX, arg);
        o->interrupt_after = (uint64_t)number;
        return 1;
    default:
        return 0;
    }
}

/* Options and FILE. Returns 0 to go on, -1 after --help, or an exit code. */
static int import_parse(int argc, char **argv, import_options_t *o)
{
    int option;
    opterr = 0; /* its '?' and ':' are told apart by cli_option_error */
    while ((option = getopt_long(argc, argv, "+:", import_options, NULL)) != -1) {
        int rc = cli_common_option(&o->common, option, optarg);
        if (rc == 0)
            rc = import_option(o, option, optarg);
        if (rc < 0)
            return CLI_EXIT_USAGE;
        if (rc == 0)
            return cli_option_error("import", option, import_options, argc, argv);
    }
    if (o->common.help) {
        fputs(import_usage, stdout);
        return -1;
    }
    if (optind >= argc)
        return cli_usage_error("import", "no FILE given");
    if (optind + 1 != argc)
        return cli_usage_error("import", "one FILE at a time, not also '%s'", argv[optind + 1]);
    o->file = argv[optind];
    if (strcmp(o->file, "-") == 0)
        return cli_usage_error("import", "import reads a file twice and keeps a journal "
                                         "beside it: give a file, not stdin");
    if (strlen(o->file) + sizeof ".import-state" > sizeof o->state_buf)
        return cli_usage_error("import", "the file's path is too long");
    if (o->state == NULL) {
        snprintf(o->state_buf, sizeof o->state_buf, "%s.import-state", o->file);
        o->state = o->state_buf;
    }
    if (o->refusals == NULL) {
        snprintf(o->refusals_buf, sizeof o->refusals_buf, "%s.refused", o->file);
        o->refusals = o->refusals_buf;
    }
    return 0;
}

/* SIGINT and SIGTERM wait, blocked, until we look between batches; blocked
 * before libzmq starts its threads, so that none of them takes one. */
static void import_block_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
}

/* Format, first pass and (CSV) header: all before anything is sent. */
static int import_check_file(const import_options_t *o, int *format, import_fingerprint_t *fp,
                             import_reader_t *reader)
{
    char err[IMPORT_MAX_TEXT];
    if (import_detect_format(o->file, o->format, format, err, sizeof err) != 0) {
        cli_say("import: %s", err);
        return o->format != NULL ? CLI_EXIT_USAGE : CLI_EXIT_FAILURE;
    }
    if (import_scan(o->file, *format, fp, err, sizeof err) != 0) {
        cli_say("import: %s", err);
        return CLI_EXIT_FAILURE;
    }
    int rc = import_reader_open(reader, o->file, fp, *format, err, sizeof err);
    if (rc != 0) {
        cli_say("import: %s: %s%s", o->file, err, rc == -2 ? "; nothing was sent" : "");
        return rc == -2 ? CLI_EXIT_USAGE : CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}

/* The warning of a change that publishes again batches the backup may
 * have held and forgotten on purpose, why that cannot be told apart. */
static void import_warn_forgotten(const import_run_t *run, int change)
{
    char why[512];
    size_t without_seq = run->journal.dropped_without_seq;
    if (change == IMPORT_EPOCH_NO_FLOOR)
        snprintf(why, sizeof why,
                 "the broker does not say which seqs its backup held (a restore without the "
                 "counters of the store it replaced, or a broker from before it tells)");
    else if (change == IMPORT_EPOCH_FLOOR_AFAR)
        snprintf(why, sizeof why,
                 "the backup's floor seq %llu is half a billion or more above every seq the "
                 "journal holds: the backup was taken after a restore (one this journal did not "
                 "see, or one it saw whose backup was older than its batches), or this file was "
                 "imported long before the backup on a busy broker, and the seqs cannot tell "
                 "which batches the backup held",
                 (unsigned long long)run->epoch_floor);
    else if (without_seq > 0)
        snprintf(why, sizeof why,
                 "%zu %s of the journal %s recorded by a schakel from before item seqs, so "
                 "whether the backup held %s is not known",
                 without_seq, plural(without_seq, "batch", "batches"),
                 plural(without_seq, "was", "were"), plural(without_seq, "it", "them"));
    else
        return;
    cli_say("import: warning: %s, so lines the broker had forgotten on purpose before its backup "
            "was taken (their retention and its idempotency window over) are accepted and "
            "delivered anew, with a new retention",
            why);
}

/* What a change of the broker's store epoch does to this run
 * (import_journal_epoch): since the journal was written (at the start:
 * this run publishes again), or during this run (the next one does). */
static void import_say_restored(const import_run_t *run, int change, int during)
{
    if (change == IMPORT_EPOCH_SAME && !during)
        return;
    char when[512];
    size_t kept = run->journal.kept_by_floor;
    if (during)
        snprintf(when, sizeof when,
                 "import: the broker's store was restored from a backup during this import (the "
                 "connection was made again, to a store of another epoch): the journal %s now "
                 "names it, and what the restored store answered is not journalled; run the same "
                 "command again: it publishes again",
                 run->journal_path);
    else
        snprintf(when, sizeof when,
                 "import: the broker's store was restored from a backup since the journal %s was "
                 "written: publishing again",
                 run->journal_path);
    if (change == IMPORT_EPOCH_FLOOR && kept > 0)
        cli_say("%s the batches accepted after the backup was taken; the %zu %s done before "
                "it %s kept (the broker has %s, or forgot %s on purpose when %s time was over), "
                "and what the broker still has is answered as already accepted",
                when, kept, plural(kept, "batch", "batches"), plural(kept, "is", "are"),
                plural(kept, "it", "them"), plural(kept, "it", "them"),
                plural(kept, "its", "their"));
    else
        cli_say("%s from line 1; what the broker still has is answered as already accepted", when);
    import_warn_forgotten(run, change);
}

/* The journal's ids and this run's key (after the journal is open): a
 * journal of unkeyed ids keeps them, which is said; one written with
 * another key (let in by --new-key) takes this one, which is said with
 * what it means. 0, or -1 (said). */
static int import_take_key(import_run_t *run, const uint8_t check[IMPORT_KEY_CHECK_BYTES])
{
    char err[IMPORT_MAX_TEXT * 2];
    if (run->journal.ids == IMPORT_IDS_V1) {
        cli_say("import: note: the journal %s was begun by a schakel from before keyed message "
                "ids: this file's ids stay derived without a key, as they were, so that nothing "
                "is published twice (a recipient can test guesses of fields withheld from it "
                "against them; see schakel(1))",
                run->journal_path);
        return 0;
    }
    int changed = import_journal_key(&run->journal, check, err, sizeof err);
    if (changed < 0) {
        cli_say("import: %s", err);
        return -1;
    }
    if (changed)
        cli_say("import: warning: the journal %s was written with another key than this one "
                "(--new-key): message ids derive from the key, so a batch the broker accepted "
                "but that was not journalled as done (an import that stopped within a batch: a "
                "crash, a lost connection) is published again under another id and delivered "
                "twice; this key is the journal's from here on",
                run->journal_path);
    return 0;
}

/* The key of this run's message ids and its check, from the sender's key.
 * 0, or the exit code (said). */
static int import_derive_keys(import_run_t *run, uint8_t check[IMPORT_KEY_CHECK_BYTES])
{
    schakel_status_t status = schakel_derive_secret(
        run->client, IMPORT_KDF_CONTEXT, IMPORT_KDF_ID_KEY, run->id_key, sizeof run->id_key);
    if (status == SCHAKEL_OK)
        status = schakel_derive_secret(run->client, IMPORT_KDF_CONTEXT, IMPORT_KDF_KEY_CHECK, check,
                                       IMPORT_KEY_CHECK_BYTES);
    if (status != SCHAKEL_OK)
        return cli_report("import", status, schakel_last_error(run->client));
    return CLI_EXIT_OK;
}

/* Connect, learn who we are, derive the id key, open the journal. */
static int import_begin(import_run_t *run, const import_options_t *o, int format,
                        const import_fingerprint_t *fp)
{
    char partner[IMPORT_PRINCIPAL_SIZE], role[IMPORT_PRINCIPAL_SIZE], err[IMPORT_MAX_TEXT * 2];
    uint8_t check[IMPORT_KEY_CHECK_BYTES];
    int rc = cli_connect(&o->common, &run->client);
    if (rc != CLI_EXIT_OK)
        return rc;
    rc = import_derive_keys(run, check);
    if (rc != CLI_EXIT_OK)
        return rc;
    schakel_status_t status =
        schakel_whoami(run->client, run->sender, partner, role, o->common.connect_timeout_ms);
    if (status != SCHAKEL_OK)
        return cli_report("whoami", status, schakel_last_error(run->client));
    /* counted before the epoch is asked: a connection made again while it
     * is asked makes the first batch ask once more */
    status = schakel_connections_made(run->client, &run->epoch_connections);
    if (status == SCHAKEL_OK)
        status =
            schakel_store_epoch_floor(run->client, run->epoch, &run->epoch_known, &run->epoch_floor,
                                      &run->epoch_floor_known, o->common.connect_timeout_ms);
    if (status != SCHAKEL_OK)
        return cli_report("store epoch", status, schakel_last_error(run->client));
    import_identity_t identity = {.fingerprint = fp,
                                  .sender = run->sender,
                                  .format = format,
                                  .batch = o->batch,
                                  .key_check = check,
                                  .new_key = o->new_key,
                                  .new_batch = o->new_batch};
    rc = import_journal_open(&run->journal, o->state, &identity, o->batch_given, o->restart,
                             &run->refusals, err, sizeof err);
    if (rc != CLI_EXIT_OK) {
        cli_say("import: %s", err);
        return rc;
    }
    /* a broker from before store epochs names none: the journal is taken
     * as it is */
    int change = run->epoch_known
                     ? import_journal_epoch(&run->journal, run->epoch, run->epoch_floor_known,
                                            run->epoch_floor, err, sizeof err)
                     : IMPORT_EPOCH_SAME;
    if (change < 0) {
        cli_say("import: %s", err);
        return CLI_EXIT_FAILURE;
    }
    import_say_restored(run, change, 0);
    return import_take_key(run, check) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
}

/* The broker could not tell, after a connection made again, whether its
 * store is still the one the run began with. Returns -1. */
static int import_recheck_failed(import_run_t *run, int status, const char *why)
{
    import_progress_clear(&run->progress);
    cli_say("import: the connection to the broker was made again during this import, and %s: "
            "stopping before journalling what it answered since; run the same command again",
            why);
    run->stop_status = status;
    return -1;
}

int import_epoch_recheck(import_run_t *run)
{
    char err[IMPORT_MAX_TEXT * 2];
    uint8_t now[SCHAKEL_STORE_EPOCH_BYTES];
    int known = 0, floor_known = 0;
    uint64_t connections = 0, floor = 0;
    if (!run->epoch_known)
        return 0; /* a broker from before store epochs: nothing to compare */
    schakel_status_t status = schakel_connections_made(run->client, &connections);
    if (status == SCHAKEL_OK && connections == run->epoch_connections)
        return 0;
    if (status == SCHAKEL_OK)
        status = schakel_store_epoch_floor(run->client, now, &known, &floor, &floor_known,
                                           run->ask_timeout_ms);
    if (status != SCHAKEL_OK) {
        snprintf(err, sizeof err,
                 "the broker could not be asked whether its store was restored "
                 "from a backup meanwhile (%s)",
                 schakel_last_error(run->client)->text);
        /* 4 when it cannot be reached, else 1 (not 2 or 3: no usage
         * error, and the file was not read to its end) */
        int code = cli_exit_for(status);
        return import_recheck_failed(
            run, code == CLI_EXIT_UNREACHABLE ? CLI_EXIT_UNREACHABLE : CLI_EXIT_FAILURE, err);
    }
    if (!known)
        return import_recheck_failed(run, CLI_EXIT_FAILURE,
                                     "the broker no longer names its store epoch (one from before "
                                     "store epochs took its place)");
    if (memcmp(now, run->epoch, sizeof now) == 0) {
        run->epoch_connections = connections;
        return 0;
    }
    int change = import_journal_epoch(&run->journal, now, floor_known, floor, err, sizeof err);
    import_progress_clear(&run->progress);
    run->stop_status = CLI_EXIT_FAILURE;
    if (change < 0) {
        cli_say("import: %s", err);
        return -1;
    }
    memcpy(run->epoch, now, sizeof run->epoch);
    run->epoch_floor = floor;
    run->epoch_floor_known = floor_known;
    run->epoch_connections = connections;
    import_say_restored(run, change, 1); /* also with nothing done to lose */
    return -1;
}

/* A run that went through asks the broker's store epoch once more: when it
 * is another than at the start, the store was restored from a backup
 * during the run and may have lost batches the journal has done (their
 * lines are under the epoch of the start, so the next run publishes them
 * again). Said, and the run fails, so that it is run again. A broker that
 * cannot be asked now leaves it to the next run, which is said. */
static void import_check_epoch(import_run_t *run, const import_options_t *o)
{
    uint8_t now[SCHAKEL_STORE_EPOCH_BYTES];
    int known = 0;
    if (!run->epoch_known || run->stop_status != CLI_EXIT_OK || run->batches_done == 0)
        return;
    if (schakel_store_epoch(run->client, now, &known, o->common.connect_timeout_ms) != SCHAKEL_OK) {
        import_progress_clear(&run->progress);
        cli_say("import: warning: could not ask the broker at the end whether its store was "
                "restored from a backup during this import (%s); if it was, run the same command "
                "again",
                schakel_last_error(run->client)->text);
        return;
    }
    if (!known || memcmp(now, run->epoch, sizeof now) == 0)
        return;
    import_progress_clear(&run->progress);
    cli_say("import: the broker's store was restored from a backup during this import, and may "
            "have lost lines it had accepted: run the same command again; it publishes again what "
            "was accepted after the backup was taken, and what the broker still has is answered "
            "as already accepted");
    run->stop_status = CLI_EXIT_FAILURE;
}

/* Batches sent ahead of their answers, oldest first, and the one being
 * filled after them: --in-flight + 1 buffers. */
typedef struct import_pipeline {
    import_batch_t *batches[IMPORT_MAX_IN_FLIGHT + 1];
    size_t capacity;
    size_t head;    /* the oldest launched batch */
    size_t pending; /* launched, not finished */
    uint64_t launched;
} import_pipeline_t;

static import_batch_t *import_filling(const import_pipeline_t *pipe)
{
    return pipe->batches[(pipe->head + pipe->pending) % pipe->capacity];
}

/* Finish launched batches, oldest first, until `keep` are left. 0 or -1. */
static int import_finish_until(import_run_t *run, import_pipeline_t *pipe, size_t keep)
{
    while (pipe->pending > keep) {
        import_batch_t *oldest = pipe->batches[pipe->head];
        pipe->head = (pipe->head + 1) % pipe->capacity;
        pipe->pending--;
        if (import_send_finish(run, oldest) != 0)
            return -1;
    }
    return 0;
}

/* Send the batch being filled, after finishing the oldest when
 * --in-flight batches are out; finish all of them when this one could not
 * be sent whole (what it kept back must not be overtaken). 0 or -1. */
static int import_launch(import_run_t *run, import_pipeline_t *pipe)
{
    if (pipe->pending >= run->in_flight && import_finish_until(run, pipe, run->in_flight - 1) != 0)
        return -1;
    int sent = import_send_launch(run, import_filling(pipe));
    pipe->pending++;
    pipe->launched++;
    if (sent < 0)
        return -1;
    return sent == 1 ? import_finish_until(run, pipe, 0) : 0;
}

/* The run stopped with batches sent ahead: their publishes may have been
 * accepted all the same. Take the answers that come (nothing is sent
 * again) and count the accepted lines, so that the summary tells what the
 * broker has; they are not journalled (an earlier batch is not done), and
 * a rerun finds them accepted already. */
static void import_settle_stopped(import_run_t *run, import_pipeline_t *pipe)
{
    for (; pipe->pending > 0; pipe->pending--, pipe->head = (pipe->head + 1) % pipe->capacity)
        import_send_settle(run, pipe->batches[pipe->head]);
}

/* Read every record, skipping what the journal has done, sending batch by
 * batch. Sets run->stop_status when it stops early. */
static void import_loop(import_run_t *run, const import_options_t *o, import_reader_t *reader,
                        import_pipeline_t *pipe)
{
    char err[IMPORT_MAX_TEXT];
    uint64_t done = 0;
    int started = 0, rc;
    while ((rc = import_reader_next(reader, err, sizeof err)) == 1) {
        if (import_journal_is_done(&run->journal, reader->record_line)) {
            /* done in an earlier run; a batch being filled goes before it
             * (batches are cut as before, so none is: a defensive check) */
            if (import_filling(pipe)->n_lines > 0 && import_launch(run, pipe) != 0)
                return;
            done++;
            if ((done & IMPORT_SKIP_UPDATE_MASK) == 0)
                import_progress_update(&run->progress, done);
            continue;
        }
        if (!started) {
            import_progress_update(&run->progress, done);
            import_progress_mark_start(&run->progress);
            started = 1;
        }
        done++;
        if (import_send_add(run, import_filling(pipe), reader) != 0)
            return;
        if (import_filling(pipe)->n_lines < run->journal.batch)
            continue;
        if (import_launch(run, pipe) != 0)
            return;
        import_progress_update(&run->progress, done);
        if (o->interrupt_after != 0 && pipe->launched == o->interrupt_after)
            raise(SIGINT); /* blocked: pending until we look, as a real one */
        if (import_interrupted()) {
            /* what was sent is finished and journalled first */
            if (import_finish_until(run, pipe, 0) == 0)
                run->stop_status = IMPORT_EXIT_INTERRUPTED;
            return;
        }
    }
    if (rc < 0) {
        /* what was sent before the file failed is finished and journalled */
        if (import_finish_until(run, pipe, 0) != 0)
            return;
        import_progress_clear(&run->progress);
        cli_say("import: %s: %s", o->file, err);
        run->stop_status = CLI_EXIT_FAILURE;
        return;
    }
    if (import_filling(pipe)->n_lines > 0 && import_launch(run, pipe) != 0)
        return;
    if (import_finish_until(run, pipe, 0) != 0)
        return;
    import_progress_update(&run->progress, done);
    if (!started) /* every line was done before */
        import_progress_mark_start(&run->progress);
}

static int import_print_summary(const import_run_t *run, const import_options_t *o,
                                const import_fingerprint_t *fp)
{
    uint64_t refused = run->refusals.n;
    if (!o->common.json) {
        printf("accepted %llu, refused %llu, already accepted %llu\n",
               (unsigned long long)run->accepted, (unsigned long long)refused,
               (unsigned long long)run->already);
        return fflush(stdout) == 0 ? 0 : -1;
    }
    json_t *obj = json_pack("{s:s, s:I, s:I, s:I, s:I, s:s, s:b}", "file", o->file, "lines",
                            (json_int_t)fp->data_lines, "accepted", (json_int_t)run->accepted,
                            "refused", (json_int_t)refused, "already_accepted",
                            (json_int_t)run->already, "refusals_file", o->refusals, "interrupted",
                            run->stop_status == IMPORT_EXIT_INTERRUPTED);
    int rc = obj == NULL ? -1 : cli_print_json(obj);
    json_decref(obj);
    return rc;
}

/* Progress, refusals file, summary; the exit code of the run. */
static int import_end(import_run_t *run, const import_options_t *o, const import_fingerprint_t *fp)
{
    char err[IMPORT_MAX_TEXT];
    import_progress_finish(&run->progress);
    int status = run->stop_status;
    if (status == IMPORT_EXIT_INTERRUPTED)
        cli_say("import: interrupted after %llu %s, each finished and journalled; run the "
                "same command again to go on",
                (unsigned long long)run->batches_done,
                plural(run->batches_done, "batch", "batches"));
    if (import_refusals_write(&run->refusals, o->refusals, err, sizeof err) != 0) {
        cli_say("import: %s", err);
        if (status == CLI_EXIT_OK)
            status = CLI_EXIT_FAILURE;
    }
    if (run->refusals.n > 0)
        cli_say("import: %zu %s refused: see %s", run->refusals.n,
                plural(run->refusals.n, "line", "lines"), o->refusals);
    if (import_print_summary(run, o, fp) != 0 && status == CLI_EXIT_OK)
        status = CLI_EXIT_FAILURE;
    if (status == CLI_EXIT_OK && run->refusals.n > 0)
        status = IMPORT_EXIT_SOME_REFUSED;
    return status;
}

static int import_run(const import_options_t *o)
{
    import_fingerprint_t fp;
    import_reader_t reader;
    int format = 0;
    int rc = import_check_file(o, &format, &fp, &reader);
    if (rc != CLI_EXIT_OK)
        return rc;
    import_run_t *run = calloc(1, sizeof *run);
    import_pipeline_t pipe = {.capacity = o->in_flight + 1};
    int short_of_memory = run == NULL;
    for (size_t i = 0; i < pipe.capacity; i++)
        short_of_memory |= (pipe.batches[i] = calloc(1, sizeof *pipe.batches[i])) == NULL;
    if (short_of_memory) {
        cli_say("import: out of memory");
        rc = CLI_EXIT_FAILURE;
    } else {
        run->journal.fd = -1;
        run->timeout_ms = o->timeout_ms;
        run->in_flight = o->in_flight;
        run->journal_path = o->state;
        run->ask_timeout_ms = o->common.connect_timeout_ms;
        rc = import_begin(run, o, format, &fp);
    }
    if (!short_of_memory && rc == CLI_EXIT_OK) {
        run->already = run->journal.accepted_before;
        import_progress_init(&run->progress, o->quiet, fp.data_lines);
        import_loop(run, o, &reader, &pipe);
        import_settle_stopped(run, &pipe);
        import_check_epoch(run, o);
        rc = import_end(run, o, &fp);
    }
    for (size_t i = 0; i < pipe.capacity; i++) {
        if (pipe.batches[i] != NULL)
            import_send_discard(pipe.batches[i]);
        free(pipe.batches[i]);
    }
    if (run != NULL) {
        sodium_memzero(run->id_key, sizeof run->id_key);
        import_journal_close(&run->journal);
        import_refusals_free(&run->refusals);
        schakel_close(&run->client);
    }
    import_reader_close(&reader);
    free(run);
    return rc;
}

int import_main(int argc, char **argv)
{
    import_options_t *o = calloc(1, sizeof *o);
    if (o == NULL) {
        cli_say("out of memory");
        return CLI_EXIT_FAILURE;
    }
    cli_options_init(&o->common);
    o->batch = IMPORT_DEFAULT_BATCH;
    o->timeout_ms = IMPORT_DEFAULT_TIMEOUT_MS;
    o->in_flight = IMPORT_DEFAULT_IN_FLIGHT;
    int rc = import_parse(argc, argv, o);
    if (rc == -1) {
        rc = CLI_EXIT_OK; /* --help */
    } else if (rc == 0) {
        import_block_signals();
        rc = import_run(o);
    }
    free(o);
    return rc;
}
