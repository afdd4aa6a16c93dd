/*
 * admin_export.c — the data-subject export (audit-subject): one at a
 * time, read in bounded steps over loop turns from the turn after its
 * request's commit, recorded by its last step, and handed out in chunks
 * after that record's commit while its operator reads. Trusts the store
 * and the connection events (admin.c); an export whose operator left is
 * dropped unrecorded, one that fails or is stopped is answered why. Its
 * document names the subject: wiped on every path.
 */
#include "admin.h"

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>
#include <zmq.h>

#include "admin_internal.h"
#include "broker_internal.h"
#include "log.h"
#include "record.h"
#include "signals.h"
#include "syntax.h"

/* ------------------------------------------------------------------ the export */

/* audit-subject PSEUDONYM: checked now; read in steps from the turn after
 * this one's commit (admin_export_begin). One export at a time: a second
 * request meanwhile is answered at once that one is running, so that an
 * export's memory is never held twice. A bad pseudonym becomes the answer
 * (not ok). */
void admin_prepare_export(admin_t *admin, admin_request_t *request)
{
    char err[256] = "";
    const char *pseudonym = request->n_args == 1 ? request->args[0] : NULL;
    if (pseudonym == NULL || !syntax_is_pseudonym(pseudonym)) {
        snprintf(err, sizeof err,
                 "audit-subject takes one pseudonym (8..64 of A-Z a-z 0-9 . _ : -, "
                 "not all digits)");
    } else if (admin->job.active) {
        snprintf(err, sizeof err,
                 "another data-subject export is running (one at a time); ask again when it "
                 "has been answered");
    } else {
        admin->job.active = 1;
        admin->job.request = *request; /* its socket: its connection's events count from now */
        /* which socket it is, for the frames of its answer (sendq_watch);
         * one closed already is in turn_sockets */
        admin->job.conn_known = request->fd >= 0 && fstat(request->fd, &admin->job.conn) == 0 &&
                                S_ISSOCK(admin->job.conn.st_mode);
        for (size_t i = 0; i < admin->n_turn_sockets; i++)
            admin->job.gone |= request->fd >= 0 && admin->turn_sockets[i] == request->fd;
        admin->job.gone |= admin->turn_sockets_overflow;
        request->export_begins = 1;
        return;
    }
    size_t len = 0;
    request->refusal = admin_encode_response(request->request_id, 0, err, NULL, 0, &len);
    request->refusal_len = len;
    request->command = NULL;
}

/* Wipe and free what the export holds (its document names the subject);
 * the slot is free for the next request. Then the memory goes back to the
 * system: glibc keeps what was freed in the process (an export at the cap
 * peaks at some 160 MiB, and tens of MB stayed resident until a restart),
 * and malloc_trim gives back the free pages of every arena, libzmq's
 * threads' too (a few ms, once an export). */
void admin_export_release(admin_t *admin)
{
    admin_export_job_t *job = &admin->job;
    audit_export_destroy(&job->export);
    if (job->json != NULL)
        sodium_memzero(job->json, job->json_len);
    free(job->json);
    sendq_release(&job->queue);       /* its frames still in libzmq hold their own */
    sodium_memzero(job, sizeof *job); /* the request names the pseudonym */
    malloc_trim(0);
}

static void admin_export_log(const admin_export_job_t *job, int64_t now_ms, const char *event,
                             const char *why)
{
    char id[24], steps[16], ms[24], owed[24];
    snprintf(id, sizeof id, "%" PRIu64, job->request.request_id);
    snprintf(steps, sizeof steps, "%u", job->steps);
    snprintf(ms, sizeof ms, "%lld", (long long)(now_ms - job->began_ms));
    snprintf(owed, sizeof owed, "%zu", job->max_owed);
    log_event(why != NULL ? LOG_WARN : LOG_INFO, event, "principal", job->request.principal,
              "request_id", id, "steps", steps, "ms", ms, "max_owed", owed, "why", why, NULL);
}

/* After the commit of its request's record: the export begins, cut at the
 * trail's last committed entry. Not answered until it ends. */
void admin_export_begin(admin_t *admin, broker_t *b, const admin_request_t *request)
{
    admin_export_job_t *job = &admin->job;
    char err[256] = "", cut[24], id[24];
    job->request = *request;
    job->began_ms = b->now_ms;
    job->export = audit_export_begin(b->store, request->args[0], b->now_s,
                                     SCHAKEL_ADMIN_MAX_RESPONSE_BYTES - 1024u, err, sizeof err);
    if (job->export != NULL && (job->queue = sendq_new()) == NULL) {
        audit_export_destroy(&job->export);
        snprintf(err, sizeof err, "out of memory");
    }
    if (job->queue != NULL && job->conn_known)
        sendq_watch(job->queue, job->request.fd, &job->conn);
    if (job->export == NULL) {
        admin_log_outcome(request, request->command->name, "failed", err);
        admin_send_answer(admin, request, 0, err, NULL, 0);
        admin_export_release(admin);
        return;
    }
    snprintf(cut, sizeof cut, "%" PRIu64, audit_export_cut(job->export));
    snprintf(id, sizeof id, "%" PRIu64, request->request_id);
    log_event(LOG_INFO, "admin.export_begun", "principal", request->principal, "request_id", id,
              "up_to_seq", cut, NULL);
    admin_events_drain(admin); /* a connection that closed already */
}

/* The export ends this turn without a document: answered after the
 * commit with `why` (and nothing handed out). */
static void admin_export_fail(admin_t *admin, const char *why)
{
    admin_export_job_t *job = &admin->job;
    audit_export_destroy(&job->export);
    snprintf(job->failed, sizeof job->failed, "%s; nothing was handed out", why);
}

/* All read and written: the document, and its record in this turn (handed
 * out only after the turn's commit: admin_export_answer). */
static void admin_export_finish(admin_t *admin, broker_t *b)
{
    admin_export_job_t *job = &admin->job;
    size_t count = 0;
    char *json = audit_export_document(job->export, &count);
    audit_export_destroy(&job->export);
    if (json == NULL) {
        admin_export_fail(admin, "out of memory while writing the export");
        return;
    }
    b->turn_acks_only = 0; /* an operator's action: a synced commit before it is handed out */
    if (record_subject_export(b, job->request.principal, job->request.args[0],
                              job->request.request_id, count) != 0) {
        sodium_memzero(json, strlen(json));
        free(json);
        snprintf(job->failed, sizeof job->failed,
                 "the export could not be recorded; nothing was handed out");
        return;
    }
    job->json = json;
    job->json_len = strlen(json);
}

int admin_export_wait_ms(const admin_t *admin)
{
    if (admin == NULL || (admin->job.export == NULL && !admin->job.sending))
        return -1;
    if (admin->job.export != NULL ||
        (admin->job.json != NULL && sendq_bytes(admin->job.queue) < SCHAKEL_EXPORT_MAX_OWED_BYTES))
        return 0;
    return SCHAKEL_EXPORT_SEND_WAIT_MS; /* its operator owes the bound, or libzmq the last chunks */
}

void admin_export_step(admin_t *admin, broker_t *b)
{
    admin_export_job_t *job = admin != NULL ? &admin->job : NULL;
    char err[256] = "", why[400];
    if (job == NULL || job->export == NULL)
        return;
    admin_events_drain(admin);
    if (job->gone) {
        /* nobody to hand it to: not recorded, not kept */
        admin_export_log(job, b->now_ms, "admin.export_dropped",
                         "the operator's connection closed");
        admin_export_release(admin);
        return;
    }
    if (!admin_still_operator(b, job->request.principal, job->request.key)) {
        admin_export_fail(admin, "this key is no longer registered as an operator's");
        return;
    }
    static const audit_export_bounds_t bounds = {
        SCHAKEL_EXPORT_STEP_ENTRIES, SCHAKEL_EXPORT_STEP_DELIVERIES, SCHAKEL_EXPORT_STEP_BYTES};
    job->steps++;
    int rc = audit_export_step(job->export, b->store, &bounds, err, sizeof err);
    if (rc < 0 && audit_export_too_large(job->export)) {
        snprintf(why, sizeof why,
                 "the export is larger than the %u MiB an answer may carry; export it "
                 "offline (schakelctl audit subject PSEUDONYM --store FILE --store-key FILE)",
                 SCHAKEL_ADMIN_MAX_RESPONSE_BYTES / (1024u * 1024u));
        admin_export_fail(admin, why);
    } else if (rc < 0) {
        admin_export_fail(admin, err);
    } else if (rc == 1) {
        admin_export_finish(admin, b);
    }
}

/* Wipe and free the document once all of it is handed to libzmq (which
 * holds copies of its own, wiped when freed). */
static void admin_export_wipe_document(admin_export_job_t *job)
{
    sodium_memzero(job->json, job->json_len);
    free(job->json);
    job->json = NULL;
}

/* An export going out whose operator's key a reload (in force or
 * pending) no longer registers: nothing more of it goes out; said, and
 * the slot freed. 1 if so. */
static int admin_export_revoked(admin_t *admin, const broker_t *b)
{
    admin_export_job_t *job = &admin->job;
    if (job->gone || job->json == NULL ||
        admin_still_operator(b, job->request.principal, job->request.key))
        return 0;
    admin_export_log(job, b->now_ms, "admin.export_undelivered",
                     "this key is no longer registered as an operator's: the rest was not sent");
    admin_export_release(admin);
    return 1;
}

/* How an export going out stands, read after a drain of the connection
 * events: 1 when every chunk has left libzmq for its connection while
 * that was open (done: what the kernel holds cannot be called back), -1
 * when some never will (its connection closed before libzmq took them
 * out, or libzmq dropped them as it closed), 0 while it goes on. A close
 * seen does not decide it alone: an operator who read the last chunk
 * closes its connection at once, often before the turn after the one that
 * handed that chunk over (review: half of the exports read whole were
 * logged undelivered). Neither do the bytes libzmq holds alone: those of
 * a connection that closed leave that count too, dropped; sendq_dropped
 * tells them apart (sendq.h sendq_watch). Without the socket known, an
 * answer handed over whole counts as done. */
static int admin_export_outcome(const admin_export_job_t *job)
{
    if (job->json == NULL && sendq_bytes(job->queue) == 0)
        return sendq_dropped(job->queue) == 0 ? 1 : -1;
    return job->gone ? -1 : 0;
}

/* Hand the document's next chunks to libzmq: at most `chunks`, and only
 * while its operator owes less than SCHAKEL_EXPORT_MAX_OWED_BYTES (what
 * libzmq holds of it). Returns how the export stands
 * (admin_export_outcome), or -2 when a chunk could not be handed over. */
static int admin_export_hand(admin_export_job_t *job, admin_t *admin, size_t chunks)
{
    int rc = 0;
    for (size_t n = 0; !job->gone && rc == 0 && job->json != NULL && n < chunks &&
                       sendq_bytes(job->queue) < SCHAKEL_EXPORT_MAX_OWED_BYTES;
         n++) {
        rc = admin_send_chunks(admin, job->queue, &job->request, 1, NULL, job->json, job->json_len,
                               &job->sent, 1);
        size_t owed = sendq_bytes(job->queue);
        if (owed > job->max_owed)
            job->max_owed = owed;
        if (rc > 0)
            admin_export_wipe_document(job);
    }
    return rc < 0 ? -2 : admin_export_outcome(job);
}

/* An export that ended (outcome not 0) is said, and its slot freed. */
static void admin_export_end(admin_t *admin, int64_t now_ms, int outcome)
{
    admin_export_job_t *job = &admin->job;
    if (outcome > 0)
        admin_export_log(job, now_ms, "admin.export_done", NULL);
    else
        admin_export_log(job, now_ms, "admin.export_undelivered",
                         outcome == -2 ? "its connection took no more"
                                       : "its connection closed before all of it had left the "
                                         "broker");
    admin_export_release(admin);
}

/* The document's next chunks: at most SCHAKEL_EXPORT_SEND_CHUNKS a turn
 * (admin_export_hand). The export ends once the last chunk has left
 * libzmq (encrypted and written, or being written), when a chunk could
 * not be handed over, when its connection closed, or when a reload (in
 * force or pending) no longer registers its operator's key: no more of
 * it is handed over, though what libzmq or the kernel holds already (up
 * to the bound, and the socket's buffers) cannot be called back. */
static void admin_export_send(admin_t *admin, const broker_t *b)
{
    admin_export_job_t *job = &admin->job;
    admin_events_drain(admin);
    if (admin_export_revoked(admin, b))
        return;
    size_t owed = sendq_bytes(job->queue);
    if (!job->gone && job->json != NULL && owed >= SCHAKEL_EXPORT_MAX_OWED_BYTES && !job->held) {
        /* a turn on, libzmq still holds the bound: its operator reads slowly, or not */
        char text[24], bound[24];
        job->held = 1;
        snprintf(text, sizeof text, "%zu", owed);
        snprintf(bound, sizeof bound, "%u", SCHAKEL_EXPORT_MAX_OWED_BYTES);
        log_event(LOG_INFO, "admin.export_held", "principal", job->request.principal, "owed", text,
                  "bound", bound, NULL);
    }
    int outcome = admin_export_hand(job, admin, SCHAKEL_EXPORT_SEND_CHUNKS);
    if (outcome != 0)
        admin_export_end(admin, b->now_ms, outcome);
}

/* After each commit: an export that ended this turn is answered, with its
 * document (in chunks over this turn and the next ones) only if the turn
 * that recorded it committed. */
void admin_export_answer(admin_t *admin, const broker_t *b, int committed)
{
    admin_export_job_t *job = &admin->job;
    const admin_request_t *request = &job->request;
    if (!job->sending && job->json != NULL && committed) {
        admin_log_outcome(request, "audit-subject", "ok", NULL);
        job->sending = 1;
    }
    if (job->sending) {
        admin_export_send(admin, b);
        return;
    }
    if (job->json == NULL && job->failed[0] == '\0')
        return; /* still reading, or none */
    const char *why = job->failed[0] != '\0'
                          ? job->failed
                          : "the broker could not store its record of this export (storage "
                            "trouble); nothing was handed out, try again";
    admin_log_outcome(request, "audit-subject", "failed", why);
    admin_send_answer(admin, request, 0, why, NULL, 0);
    admin_export_release(admin);
}

/* Recorded as handed out, and still going out at the stop: once the
 * store is done with (its last checkpoint taken), the broker goes on
 * handing it out, as in its turns, and nothing else, until its operator
 * has it all and closes the connection, or its connection closes
 * otherwise (a silent one at admin_heartbeat_timeout), or
 * SCHAKEL_ADMIN_STOP_MAX_MS have passed, or a second stop signal asks
 * the broker not to wait (signals_stop_repeated: an operator, or systemd
 * after its first TERM). Waiting for the close is what
 * lets the answer arrive: libzmq counts a frame sent once written to the
 * kernel, and a socket closed with bytes of the operator's unread (a
 * heartbeat) is reset, the kernel's unsent rest thrown away with it
 * (review: with the rest handed to libzmq and 5 s of ZMQ_LINGER, an
 * operator on a busy machine got none of it, one time in three). How
 * much the operator takes is no sign of life: a stopped one's kernel
 * still takes a chunk every few seconds. An export whose operator's key
 * a reload took out is ended first, as in a turn. */
void admin_stop_drain(admin_t *admin, const broker_t *b)
{
    if (admin == NULL || !admin->job.sending)
        return;
    admin_export_job_t *job = &admin->job;
    /* a reload of the loop's last turn (an operator's, run after that
     * turn's chunks were sent) may have taken its operator's key out */
    admin_events_drain(admin);
    if (admin_export_revoked(admin, b))
        return;
    char owed_text[24], wait_text[16];
    snprintf(owed_text, sizeof owed_text, "%zu",
             sendq_bytes(job->queue) + (job->json != NULL ? job->json_len - job->sent : 0));
    snprintf(wait_text, sizeof wait_text, "%d", SCHAKEL_ADMIN_STOP_MAX_MS);
    log_event(LOG_INFO, "admin.export_stopping", "principal", job->request.principal, "owed",
              owed_text, "wait_ms", wait_text, NULL);
    int64_t start = broker_monotonic_ms(), now = start;
    int outcome = 0, asked_again = 0;
    for (;;) {
        admin_events_drain(admin);
        outcome = admin_export_hand(job, admin, SIZE_MAX);
        now = broker_monotonic_ms();
        /* all of it out and the close seen; or out, where no close can be
         * seen (connection events unavailable: counted done, as in a turn) */
        if (outcome < 0 || (outcome > 0 && (job->gone || admin->events == NULL)))
            break;
        asked_again = signals_stop_repeated();
        if (asked_again || now - start >= SCHAKEL_ADMIN_STOP_MAX_MS)
            break;
        /* woken by a connection event, or by a signal (its eventfd; a
         * second stop ends the wait); a frame taken out is seen by time */
        zmq_pollitem_t items[2];
        int n_items = 0;
        if (admin->events != NULL)
            items[n_items++] = (zmq_pollitem_t){.socket = admin->events, .events = ZMQ_POLLIN};
        if (signals_wake_fd() >= 0)
            items[n_items++] = (zmq_pollitem_t){.fd = signals_wake_fd(), .events = ZMQ_POLLIN};
        int rc = zmq_poll(items, n_items, SCHAKEL_EXPORT_SEND_WAIT_MS);
        /* emptied, so that only a signal from now on wakes the next poll
         * (the one that began the stop may have left it readable) */
        signals_wake_drain();
        if (rc < 0 && zmq_errno() != EINTR)
            break;
    }
    if (outcome < 0 || (outcome > 0 && (job->gone || admin->events == NULL))) {
        admin_export_end(admin, now, outcome); /* as in a turn */
        return;
    }
    /* the wait ran out, or was cut: the broker's close resets a
     * connection the operator has not closed, and what the kernel still
     * held of it with it */
    char timed_out[160];
    snprintf(timed_out, sizeof timed_out,
             outcome > 0 ? "the broker stopped, and its operator had not closed its connection "
                           "within %d ms: whether all of it arrived is not known"
                         : "the broker stopped, and its operator had not taken the rest within %d "
                           "ms",
             SCHAKEL_ADMIN_STOP_MAX_MS);
    const char *why = timed_out;
    if (asked_again)
        why = outcome > 0 ? "the broker stopped, and a second stop signal ended the wait before "
                            "its operator closed its connection: whether all of it arrived is "
                            "not known"
                          : "the broker stopped, and a second stop signal ended the wait before "
                            "its operator had taken the rest";
    admin_export_log(job, now, "admin.export_undelivered", why);
    admin_export_release(admin);
}

void admin_export_abandon(admin_t *admin)
{
    if (admin == NULL || !admin->job.sending)
        return;
    admin_export_log(&admin->job, broker_monotonic_ms(), "admin.export_undelivered",
                     "the broker stopped on a failure (the lines before say which) before all "
                     "of it was sent");
}

void admin_stop(admin_t *admin, const broker_t *b)
{
    if (admin == NULL || admin->job.export == NULL)
        return;
    admin_export_job_t *job = &admin->job;
    static const char why[] = "the broker stopped before the export was done; nothing was handed "
                              "out, ask again once it runs";
    admin_export_log(job, b->now_ms, "admin.export_dropped", "the broker is stopping");
    admin_log_outcome(&job->request, "audit-subject", "refused", why);
    admin_send_answer(admin, &job->request, 0, why, NULL, 0);
    admin_export_release(admin);
}
