/*
 * import_send.c — batches of `schakel import` and their publishing.
 *
 * A batch is --batch consecutive data lines; its items are published as one
 * signed publish (several when they would not fit one frame; a line with
 * its own message_id alone). Message ids are derived from the sender and
 * the items' line numbers and bytes, keyed with a secret derived from the
 * sender's key (a message id reaches every recipient, whatever fields its
 * rule passes: unkeyed, it would let a recipient test guesses of the
 * fields withheld from it), so a rerun with the same key sends a batch
 * under the same id and the broker answers a repeat as a duplicate:
 * nothing is published twice. A journal begun without keyed ids keeps
 * its unkeyed ones. A line the broker refuses is recorded (and journalled,
 * durably) and the rest is sent again; a refusal of the publish as a
 * whole is retried when the protocol says so (with a bounded backoff), and
 * stops the run otherwise. Errors are reported on stderr here, with the
 * exit code in run->stop_status.
 */
#include "import.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "schakel.pb-c.h"

/* Room in a frame for everything but the items: CurveZMQ framing, the
 * Frame and Publish headers, the message id and the signature. */
#define IMPORT_FRAME_RESERVE 256u
#define IMPORT_FRAME_BUDGET (SCHAKEL_MAX_FRAME_BYTES - IMPORT_FRAME_RESERVE)
/* Retries of one publish the broker could not take (RATE_LIMITED,
 * UNAVAILABLE, INTERNAL_ERROR), waiting 250 ms, 500 ms, ... up to 8 s. */
#define IMPORT_MAX_RETRIES 8
#define IMPORT_FIRST_BACKOFF_MS 250
#define IMPORT_MAX_BACKOFF_MS 8000
/* Retries of a publish that got no answer (each waited --timeout). */
#define IMPORT_MAX_TIMEOUTS 3

/* The domains of derived message ids (enum import_ids); with their NUL,
 * 16 bytes each. */
static const char import_id_domain_v1[] = "schakel-import1";
static const char import_id_domain_keyed[] = "schakel-import2";

/* Set when a wait for a retry took SIGINT/SIGTERM off the pending set. */
static int import_interrupt_taken;

int import_interrupted(void)
{
    sigset_t pending;
    if (import_interrupt_taken)
        return 1;
    if (sigpending(&pending) != 0)
        return 0;
    return sigismember(&pending, SIGINT) == 1 || sigismember(&pending, SIGTERM) == 1;
}

/* Wait ms, or less when SIGINT/SIGTERM comes. Returns 1 if it came. */
static int import_wait_interruptible(int ms)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    struct timespec left = {ms / 1000, (long)(ms % 1000) * 1000000L};
    for (;;) {
        int sig = sigtimedwait(&set, NULL, &left);
        if (sig > 0) {
            import_interrupt_taken = 1;
            return 1;
        }
        if (errno == EAGAIN)
            return 0;
        /* EINTR from another signal: waiting a little less long is fine */
        if (errno != EINTR)
            return 0;
    }
}

/* ------------------------------------------------------------ sizes and ids */

/* An item inside a Publish: its tag, its length as a varint, its bytes. */
static size_t import_item_wire(size_t encoded)
{
    size_t varint = 1;
    for (size_t rest = encoded >> 7; rest != 0; rest >>= 7)
        varint++;
    return 1 + varint + encoded;
}

/* BLAKE2b-128 keyed with run->id_key over "schakel-import2" NUL (a journal
 * of V1 ids: unkeyed, over "schakel-import1" NUL), the sender and NUL, and
 * for each item its line number (8 bytes, little-endian) and the
 * BLAKE2b-256 of its bytes: the same lines of the same file, sent with the
 * same key, give the same id, and nobody without the key can compute it. */
static void import_derive_id(const import_run_t *run, const import_item_t *items, size_t n,
                             uint8_t id[SCHAKEL_MESSAGE_ID_BYTES])
{
    crypto_generichash_state state;
    if (run->journal.ids == IMPORT_IDS_V1) {
        crypto_generichash_init(&state, NULL, 0, SCHAKEL_MESSAGE_ID_BYTES);
        crypto_generichash_update(&state, (const unsigned char *)import_id_domain_v1,
                                  sizeof import_id_domain_v1);
    } else {
        crypto_generichash_init(&state, run->id_key, sizeof run->id_key, SCHAKEL_MESSAGE_ID_BYTES);
        crypto_generichash_update(&state, (const unsigned char *)import_id_domain_keyed,
                                  sizeof import_id_domain_keyed);
    }
    crypto_generichash_update(&state, (const unsigned char *)run->sender, strlen(run->sender) + 1);
    for (size_t i = 0; i < n; i++) {
        uint8_t line[8];
        uint64_t number = (uint64_t)items[i].line;
        for (int b = 0; b < 8; b++)
            line[b] = (uint8_t)(number >> (8 * b));
        crypto_generichash_update(&state, line, sizeof line);
        crypto_generichash_update(&state, items[i].digest, sizeof items[i].digest);
    }
    crypto_generichash_final(&state, id, SCHAKEL_MESSAGE_ID_BYTES);
    sodium_memzero(&state, sizeof state); /* it held the key */
}

/* ------------------------------------------------------------ refusals */

int import_send_refuse(import_run_t *run, long line, const char *reason, const char *text, int sync)
{
    char err[IMPORT_MAX_TEXT];
    if (import_refusals_add(&run->refusals, line, reason, text) != 0) {
        cli_say("import: out of memory");
        run->stop_status = CLI_EXIT_FAILURE;
        return -1;
    }
    const import_refusal_t *added = &run->refusals.items[run->refusals.n - 1];
    if (import_journal_refusal(&run->journal, added, sync, err, sizeof err) != 0) {
        import_progress_clear(&run->progress);
        cli_say("import: %s", err);
        run->stop_status = CLI_EXIT_FAILURE;
        return -1;
    }
    return 0;
}

/* A line that cannot be sent as it is; the journal may know it already. */
static int import_local_refusal(import_run_t *run, long line, const char *text)
{
    if (import_refusals_loaded(&run->refusals, line) != NULL)
        return 0;
    return import_send_refuse(run, line, IMPORT_LOCAL_REASON, text, 0);
}

/* ------------------------------------------------------------ building a batch */

static int64_t import_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void import_send_settle(import_run_t *run, import_batch_t *batch)
{
    schakel_publish_answer_t answer;
    /* one --timeout for all the answers a stopped run still takes */
    if (run->settle_deadline_ms == 0)
        run->settle_deadline_ms = import_now_ms() + run->timeout_ms;
    for (size_t p = 0; p < batch->n_publishes; p++) {
        import_publish_t *pub = &batch->publishes[p];
        if (!pub->in_flight)
            continue;
        pub->in_flight = 0;
        int64_t left = run->settle_deadline_ms - import_now_ms();
        if (schakel_publish_wait(run->client, pub->id, &answer, left > 0 ? (int)left : 0) !=
            SCHAKEL_OK) {
            (void)schakel_publish_forget(run->client, pub->id);
            continue;
        }
        if (answer.status != SCHAKEL_OK)
            continue;
        if (answer.duplicate)
            run->already += answer.n;
        else
            run->accepted += answer.n;
    }
    import_send_discard(batch);
}

void import_send_discard(import_batch_t *batch)
{
    for (size_t i = 0; i < batch->n_items; i++)
        import_item_free(&batch->items[i]);
    batch->n_items = 0;
    batch->n_lines = 0;
    batch->n_publishes = 0;
}

int import_send_add(import_run_t *run, import_batch_t *batch, import_reader_t *reader)
{
    char err[IMPORT_MAX_TEXT];
    long line = reader->record_line;
    if (batch->n_lines == 0)
        batch->first_line = line;
    batch->n_lines++;
    batch->last_line = reader->record_last_line;
    import_item_t *item = &batch->items[batch->n_items];
    if (import_item_read(item, reader, run->sender, err, sizeof err) != 0)
        return import_local_refusal(run, line, err);
    /* refused by the broker in an earlier run: not sent, but still part of
     * its batch's id, so that the batch gets the id it had then */
    item->excluded = import_refusals_loaded(&run->refusals, line) != NULL;
    batch->n_items++;
    return 0;
}

/* ------------------------------------------------------------ publishing */

/* Stop the run with a report. Returns -1. */
static int import_stop(import_run_t *run, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int import_stop(import_run_t *run, int status, const char *fmt, ...)
{
    va_list args;
    import_progress_clear(&run->progress);
    fputs("schakel: import: ", stderr);
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fputc('\n', stderr);
    run->stop_status = status;
    return -1;
}

static int import_retryable(int reason)
{
    return reason == SCHAKEL__REASON__RATE_LIMITED || reason == SCHAKEL__REASON__UNAVAILABLE ||
           reason == SCHAKEL__REASON__INTERNAL_ERROR;
}

/* The broker refused the publish of batch->send as a whole, for a reason
 * that may pass: wait and let the caller send it again. 0 or -1 (stop). */
static int import_backoff(import_run_t *run, const schakel_error_t *e, int *retries)
{
    if (++*retries > IMPORT_MAX_RETRIES)
        return import_stop(run, CLI_EXIT_FAILURE,
                           "the broker still answers %s after %d retries: %s; run the import "
                           "again later to go on from here",
                           e->reason_name, IMPORT_MAX_RETRIES, e->text);
    int ms = IMPORT_FIRST_BACKOFF_MS << (*retries - 1);
    if (ms > IMPORT_MAX_BACKOFF_MS)
        ms = IMPORT_MAX_BACKOFF_MS;
    import_progress_clear(&run->progress);
    cli_say("import: the broker answered %s (%s); trying again in %.2f s", e->reason_name, e->text,
            ms / 1000.0);
    if (import_wait_interruptible(ms))
        return import_stop(run, IMPORT_EXIT_INTERRUPTED,
                           "interrupted while waiting to retry; the current batch is not "
                           "finished: run the import again to finish it");
    return 0;
}

/* The id was used before for other lines (an earlier run saw other
 * refusals in this batch): the broker keeps the first, so each line still
 * to be sent is refused, none sent twice. */
static int import_conflict(import_run_t *run, import_batch_t *batch, size_t n,
                           const schakel_error_t *e)
{
    char text[IMPORT_MAX_TEXT];
    snprintf(text, sizeof text,
             "%.300s (this line's batch was accepted before with other lines; it may or may not "
             "have been published then: check before sending it again)",
             e->text);
    for (size_t i = 0; i < n; i++) {
        import_item_t *item = &batch->items[batch->send_item[i]];
        item->excluded = 1;
        if (import_send_refuse(run, item->line, e->reason_name, text, i + 1 == n) != 0)
            return -1;
    }
    return 0;
}

/* After a failed publish of n signals: 0 to send (what is left) again, -1
 * to stop. */
static int import_after_failure(import_run_t *run, import_batch_t *batch, size_t n,
                                schakel_status_t status, const schakel_error_t *e, int *retries,
                                int *timeouts)
{
    if (status == SCHAKEL_ERR_TIMEOUT) {
        if (++*timeouts > IMPORT_MAX_TIMEOUTS)
            return import_stop(run, CLI_EXIT_UNREACHABLE, "%s", e->text);
        import_progress_clear(&run->progress);
        cli_say("import: no answer from the broker; sending the batch again (same id)");
        return 0;
    }
    if (status != SCHAKEL_ERR_REFUSED)
        return import_stop(run,
                           status == SCHAKEL_ERR_USAGE ? CLI_EXIT_FAILURE : cli_exit_for(status),
                           "publish: %s", e->text[0] ? e->text : schakel_strerror(status));
    if (e->item_index >= 0 && (size_t)e->item_index < n) {
        import_item_t *item = &batch->items[batch->send_item[e->item_index]];
        item->excluded = 1; /* durable before the rest goes out under the same id */
        return import_send_refuse(run, item->line, e->reason_name, e->text, 1);
    }
    if (import_retryable(e->reason))
        return import_backoff(run, e, retries);
    if (e->reason == SCHAKEL__REASON__DUPLICATE_CONFLICT)
        return import_conflict(run, batch, n, e);
    return import_stop(run, CLI_EXIT_FAILURE, "the broker refused the import as a whole: %s: %s%s",
                       e->reason_name, e->text,
                       e->reason == SCHAKEL__REASON__FRAME_TOO_LARGE ||
                               e->reason == SCHAKEL__REASON__TOO_MANY_ITEMS
                           ? " (give a smaller --batch)"
                           : "");
}

/* The items of the publish still to send (not refused), as signals in
 * batch->send and their places in batch->send_item. Returns how many. */
static size_t import_send_list(import_batch_t *batch, const import_publish_t *pub)
{
    size_t n = 0;
    for (size_t i = pub->from; i < pub->to; i++) {
        if (batch->items[i].excluded)
            continue;
        batch->send[n] = batch->items[i].signal;
        batch->send_item[n++] = i;
    }
    return n;
}

/* The answer of a publish sent ahead. A wait that fails (no answer within
 * --timeout, a broken connection) leaves it to be sent again, in the
 * caller's loop, like a publish that got no answer. */
static schakel_status_t import_take_answer(import_run_t *run, import_publish_t *pub,
                                           schakel_publish_answer_t *answer, schakel_error_t *e)
{
    pub->in_flight = 0;
    schakel_status_t status = schakel_publish_wait(run->client, pub->id, answer, run->timeout_ms);
    if (status == SCHAKEL_OK) {
        *e = answer->error;
        return answer->status;
    }
    *e = *schakel_last_error(run->client);
    (void)schakel_publish_forget(run->client, pub->id); /* sent again under the same id */
    return status;
}

/* Publish items [from, to) of the batch under the publish's id until every
 * one of them is accepted or refused; the first answer is that of the
 * launch, if it sent the publish. The accepted items are added to
 * *accepted, and *max_seq raised to the highest item seq of the answer (a
 * repeat's answer carries the seqs of the original). 0, or -1 (stop). */
static int import_publish(import_run_t *run, import_batch_t *batch, import_publish_t *pub,
                          uint64_t *accepted, uint64_t *max_seq)
{
    schakel_publish_answer_t answer;
    int retries = 0, timeouts = 0;
    for (;;) {
        size_t n = import_send_list(batch, pub);
        if (n == 0)
            return 0;
        int duplicate = 0;
        schakel_error_t e;
        schakel_status_t status;
        if (pub->in_flight) {
            status = import_take_answer(run, pub, &answer, &e);
            duplicate = status == SCHAKEL_OK && answer.duplicate;
        } else {
            status = schakel_publish(run->client, NULL, batch->send, n, pub->id, NULL,
                                     answer.results, &duplicate, run->timeout_ms);
            e = *schakel_last_error(run->client);
        }
        if (status == SCHAKEL_OK) {
            if (duplicate)
                run->already += n;
            else
                run->accepted += n;
            *accepted += n;
            for (size_t i = 0; i < n; i++)
                if (answer.results[i].seq > *max_seq)
                    *max_seq = answer.results[i].seq;
            return 0;
        }
        if (import_after_failure(run, batch, n, status, &e, &retries, &timeouts) != 0)
            return -1;
    }
}

/* Cut the batch into publishes: as many items as fit one frame, a line
 * with its own id alone; the cut depends on the lines alone, so a rerun
 * sends the same publishes under the same ids. */
static void import_cut(const import_run_t *run, import_batch_t *batch)
{
    batch->n_publishes = 0;
    size_t i = 0;
    while (i < batch->n_items) {
        size_t from = i, bytes = 0;
        if (batch->items[i].has_given_id) {
            i++;
        } else {
            while (i < batch->n_items && !batch->items[i].has_given_id) {
                size_t wire = import_item_wire(batch->items[i].encoded);
                if (i > from && bytes + wire > IMPORT_FRAME_BUDGET)
                    break;
                bytes += wire;
                i++;
            }
        }
        import_publish_t *pub = &batch->publishes[batch->n_publishes++];
        memset(pub, 0, sizeof *pub);
        pub->from = from;
        pub->to = i;
        if (batch->items[from].has_given_id)
            memcpy(pub->id, batch->items[from].given_id, sizeof pub->id);
        else
            import_derive_id(run, batch->items + from, i - from, pub->id);
    }
}

int import_send_launch(import_run_t *run, import_batch_t *batch)
{
    import_cut(run, batch);
    for (size_t p = 0; p < batch->n_publishes; p++) {
        if (schakel_publishes_in_flight(run->client) >= run->in_flight)
            return 1; /* the rest goes out in import_send_finish */
        import_publish_t *pub = &batch->publishes[p];
        size_t n = import_send_list(batch, pub);
        if (n == 0)
            continue;
        schakel_status_t status =
            schakel_publish_send(run->client, NULL, batch->send, n, pub->id, NULL);
        /* A publish that cannot be sent now (a full queue to a broker that
         * is away) is published, with its retries, when the batch is
         * finished; so is one whose id is still in flight (the same lines
         * twice in one file under a given id). */
        if (status == SCHAKEL_OK)
            pub->in_flight = 1;
        else if (status == SCHAKEL_ERR_NOMEM)
            return import_stop(run, CLI_EXIT_FAILURE, "publish: %s",
                               schakel_last_error(run->client)->text);
        else
            return 1;
    }
    return 0;
}

int import_send_finish(import_run_t *run, import_batch_t *batch)
{
    char err[IMPORT_MAX_TEXT];
    uint64_t accepted = 0, max_seq = 0;
    for (size_t p = 0; p < batch->n_publishes; p++) {
        if (import_publish(run, batch, &batch->publishes[p], &accepted, &max_seq) != 0) {
            import_send_settle(run, batch);
            return -1;
        }
    }
    int rc = 0;
    if (batch->n_lines > 0 && import_epoch_recheck(run) != 0) {
        import_send_discard(batch);
        return -1;
    }
    if (batch->n_lines > 0 &&
        import_journal_done(&run->journal, batch->first_line, batch->last_line, accepted, max_seq,
                            err, sizeof err) != 0)
        rc = import_stop(run, CLI_EXIT_FAILURE, "%s", err);
    if (rc == 0)
        run->batches_done++;
    import_send_discard(batch);
    return rc;
}
