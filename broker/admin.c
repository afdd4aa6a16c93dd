/*
 * admin.c — the admin endpoint (see admin.h): its socket and connection
 * events, the records and log lines of requests, the encoding and sending
 * of answers, and answering each request after the turn's commit. Requests
 * are read and checked in admin_request.c, the commands run in
 * admin_commands.c and admin_pending.c, the data-subject export in
 * admin_export.c.
 *
 * Trusts only the ZAP User-Id, re-checked per request against the policy
 * in force (still an operator, still the key the connection authenticated
 * with); every frame goes through the wire codec. A malformed request is
 * answered Rejected with a reason code, an unknown command or a failed one
 * AdminResponse{ok: false}; the broker carries on either way. Answers are
 * JSON (admin_json.c), sent in chunks of SCHAKEL_ADMIN_CHUNK_BYTES.
 */
#include "admin.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <zmq.h>

#include "admin_internal.h"
#include "connevents.h"
#include "log.h"
#include "record.h"

/* ------------------------------------------------------------------ lifecycle */

/* The admin socket reports each connection it accepts and each that
 * closes, by its socket (the ZMQ_SRCFD of its frames), so that an export
 * whose operator went away is dropped before it is recorded. Without them
 * (an error here, logged) an export runs to its end and is recorded, and
 * its answer is undeliverable. */
#define ADMIN_EVENTS_ENDPOINT "inproc://schakel-admin-events"

static void admin_events_open(admin_t *admin, void *ctx)
{
    /* two small frames per connection event, read every turn */
    admin->events = connevents_open(ctx, admin->socket, ADMIN_EVENTS_ENDPOINT,
                                    ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CLOSED,
                                    1 << 16, "admin.connection_events_unavailable");
}

/* Every connection event so far (non-blocking). The export's connection
 * is gone at any event on its socket once the job holds that socket
 * (from the reading of its request on): libzmq reports a connection's
 * close before it frees the socket number, and its accept before the
 * handshake the request came through, so that an event read after the
 * request is its connection's close, or a later connection's accept on
 * the number its close freed (a close and an accept in one drain must
 * not read as "still there"). Every event read is noted (admin->
 * turn_sockets) until a turn's read has emptied the admin queue: one read
 * before a request of its socket is that connection's close too, even
 * when the queue held the request for several turns (a connection's
 * accept, and any event of an earlier connection on its socket number,
 * came before the handshake the request came through, whose ZAP request
 * the loop answered in an earlier turn, after which that turn read the
 * events). A wrong "gone" drops an export unrecorded; a wrong "there"
 * would record one nobody received. */
void admin_events_drain(admin_t *admin)
{
    uint16_t id; /* which event it is does not matter */
    int32_t fd;
    while (connevents_next(admin->events, &id, &fd)) {
        admin_export_job_t *job = &admin->job;
        if (job->active && fd >= 0 && fd == job->request.fd)
            job->gone = 1;
        if (admin->n_turn_sockets < ADMIN_TURN_SOCKETS)
            admin->turn_sockets[admin->n_turn_sockets++] = fd;
        else
            admin->turn_sockets_overflow = 1;
    }
}

admin_t *admin_new(void *ctx, const keypair_t *key, const char *listen, const char *store_path,
                   int heartbeat_timeout_ms, char *err, size_t errlen)
{
    admin_t *admin = calloc(1, sizeof *admin);
    if (admin == NULL || (admin->store_path = strdup(store_path ? store_path : "")) == NULL ||
        (admin->pending = calloc(SCHAKEL_ADMIN_BATCH, sizeof *admin->pending)) == NULL ||
        (admin->chunk = malloc(SCHAKEL_ADMIN_CHUNK_BYTES + 1)) == NULL) {
        snprintf(err, errlen, "out of memory");
        admin_destroy(&admin);
        return NULL;
    }
    admin->socket = zmq_socket(ctx, ZMQ_ROUTER);
    if (admin->socket == NULL ||
        broker_configure_router(admin->socket, key, ZAP_DOMAIN_ADMIN, heartbeat_timeout_ms) != 0 ||
        zmq_bind(admin->socket, listen) != 0) {
        snprintf(err, errlen, "cannot listen for operators on %s (admin_listen): %s", listen,
                 zmq_strerror(zmq_errno()));
        admin_destroy(&admin);
        return NULL;
    }
    size_t len = sizeof admin->endpoint;
    if (zmq_getsockopt(admin->socket, ZMQ_LAST_ENDPOINT, admin->endpoint, &len) != 0) {
        snprintf(err, errlen, "cannot read the bound admin endpoint: %s",
                 zmq_strerror(zmq_errno()));
        admin_destroy(&admin);
        return NULL;
    }
    admin_events_open(admin, ctx);
    return admin;
}

void admin_destroy(admin_t **adminp)
{
    if (adminp == NULL || *adminp == NULL)
        return;
    admin_t *admin = *adminp;
    for (size_t i = 0; admin->pending != NULL && i < admin->n_pending; i++)
        free(admin->pending[i].refusal);
    admin_export_abandon(admin); /* said, if one was still going out */
    admin_export_release(admin);
    connevents_close(admin->socket, &admin->events);
    if (admin->socket != NULL)
        zmq_close(admin->socket);
    free(admin->pending);
    free(admin->store_path);
    free(admin->chunk);
    free(admin);
    *adminp = NULL;
}

void *admin_socket(admin_t *admin)
{
    return admin->socket;
}

const char *admin_endpoint(const admin_t *admin)
{
    return admin->endpoint;
}

/* ------------------------------------------------------------------ records */

/* A refused request, and why: "admin.refused", carried until a
 * transaction that holds it commits (record.h record_admin_refused), as
 * the refusal is answered whether or not its turn commits, and a refusal
 * decided after a commit (the check as a request is run) is written into
 * the next turn's transaction, which may roll back as well. */
void admin_record_refused(broker_t *b, admin_request_t *request, const char *why)
{
    char details[400];
    snprintf(details, sizeof details, "request_id=%" PRIu64 " %s", request->request_id, why);
    (void)record_admin_refused(b, request->principal, details);
    request->refusal_recorded = 1;
}

/* How a request ended, once answered: a log line (the trail has the
 * request; a reload has its own entry). */
void admin_log_outcome(const admin_request_t *request, const char *command, const char *outcome,
                       const char *text)
{
    char id[24];
    snprintf(id, sizeof id, "%" PRIu64, request->request_id);
    log_event(strcmp(outcome, "ok") == 0 ? LOG_INFO : LOG_WARN, "admin.answered", "principal",
              request->principal, "command", command, "request_id", id, "outcome", outcome, "text",
              text, NULL);
}

/* ------------------------------------------------------------------ encoding */

static uint8_t *admin_encode_rejected(Schakel__Reason reason, const char *text, size_t *len)
{
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    Schakel__Rejected rejected = SCHAKEL__REJECTED__INIT;
    rejected.has_reason = 1;
    rejected.reason = reason;
    rejected.text = (char *)(uintptr_t)text;
    rejected.has_item_index = 1;
    rejected.item_index = -1;
    frame.body_case = SCHAKEL__FRAME__BODY_REJECTED;
    frame.rejected = &rejected;
    return wire_encode_frame(&frame, len);
}

uint8_t *admin_encode_response(uint64_t request_id, int ok, const char *error, const char *json,
                               int more, size_t *len)
{
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    Schakel__AdminResponse response = SCHAKEL__ADMIN_RESPONSE__INIT;
    response.has_request_id = 1;
    response.request_id = request_id;
    response.has_ok = 1;
    response.ok = ok != 0;
    response.error = (char *)(uintptr_t)error;
    response.json = (char *)(uintptr_t)json;
    if (more) {
        response.has_more = 1;
        response.more = 1;
    }
    frame.body_case = SCHAKEL__FRAME__BODY_ADMIN_RESPONSE;
    frame.admin_response = &response;
    return wire_encode_frame(&frame, len);
}

/* Never blocks: a client that does not read loses its answer, not us.
 * libzmq gets a copy that is wiped when it frees it (broker_send_on: an
 * answer may name a subject), counted in queue (NULL: none) until then. */
static int admin_send(admin_t *admin, sendq_t *queue, const admin_request_t *request,
                      const uint8_t *frame, size_t len)
{
    if (broker_send_on(admin->socket, queue, 0, request->routing_id, request->routing_len, frame,
                       len) != 0) {
        log_event(LOG_WARN, "admin.reply_undeliverable", "principal", request->principal, "errno",
                  zmq_strerror(zmq_errno()), NULL);
        return -1;
    }
    return 0;
}

/* The answer in chunks of at most SCHAKEL_ADMIN_CHUNK_BYTES, cut only
 * before the first byte of a UTF-8 sequence; `error` rides on the first.
 * From *offset on, at most max_chunks of them, counted in queue (NULL:
 * none): 1 when the last is sent, 0 when more remain, -1 when one could
 * not be sent (the rest is not). */
int admin_send_chunks(admin_t *admin, sendq_t *queue, const admin_request_t *request, int ok,
                      const char *error, const char *json, size_t json_len, size_t *offset,
                      size_t max_chunks)
{
    size_t chunks = 0;
    do {
        size_t n = json_len - *offset;
        if (n > SCHAKEL_ADMIN_CHUNK_BYTES) {
            n = SCHAKEL_ADMIN_CHUNK_BYTES;
            while (n > 0 && ((unsigned char)json[*offset + n] & 0xC0) == 0x80)
                n--;
        }
        if (json != NULL) {
            memcpy(admin->chunk, json + *offset, n);
            admin->chunk[n] = '\0';
        }
        int more = *offset + n < json_len;
        size_t len = 0;
        uint8_t *frame = admin_encode_response(request->request_id, ok, *offset == 0 ? error : NULL,
                                               json != NULL ? admin->chunk : NULL, more, &len);
        int sent = frame != NULL && admin_send(admin, queue, request, frame, len) == 0;
        /* an answer may name a subject (audit-subject): wiped once sent */
        if (frame != NULL)
            sodium_memzero(frame, len);
        free(frame);
        if (json != NULL)
            sodium_memzero(admin->chunk, n);
        if (!sent)
            return -1;
        *offset += n;
    } while (*offset < json_len && ++chunks < max_chunks);
    return *offset >= json_len;
}

void admin_refuse(admin_t *admin, broker_t *b, admin_request_t *request, Schakel__Reason reason,
                  const char *text)
{
    char why[320];
    (void)admin;
    sessions_count_refusal(b->sessions, request->principal);
    request->refusal = admin_encode_rejected(reason, text, &request->refusal_len);
    snprintf(why, sizeof why, "reason=%s %s", wire_reason_name(reason), text);
    admin_record_refused(b, request, why);
}

/* ------------------------------------------------------------------ answering */

/* Read as a command whose entry went with a rolled-back turn: refused
 * unexecuted, and that refusal recorded in its place (carried), so that
 * the trail still says who asked for what. */
static void admin_record_unstored(broker_t *b, admin_request_t *request)
{
    char why[160];
    snprintf(why, sizeof why,
             "command=%s not done: its record went with a turn the broker rolled back "
             "(storage trouble)",
             request->asked);
    admin_record_refused(b, request, why);
}

static void admin_answer(admin_t *admin, broker_t *b, admin_request_t *request, int committed)
{
    /* A refusal's entry is carried to the trail already: written again at
     * once if it went with this turn (record.h record_admin_refused). */
    if (!committed && !request->refusal_recorded && request->asked != NULL)
        admin_record_unstored(b, request);
    if (request->command == NULL) {
        if (request->refusal != NULL)
            (void)admin_send(admin, NULL, request, request->refusal, request->refusal_len);
        return;
    }
    if (!committed) {
        static const char text[] = "the broker could not store its record of this request "
                                   "(storage trouble); nothing was done, try again";
        admin_log_outcome(request, request->command->name, "refused", text);
        admin_send_answer(admin, request, 0, text, NULL, 0);
        if (request->export_begins)
            admin_export_release(admin);
        return;
    }
    /* A reload run ahead of it in this batch (an operator's `reload`) may
     * have removed its key since it was read: then nothing is done. Its
     * record says it was asked; the refusal's goes into the next turn's
     * transaction, carried until one that holds it commits. */
    if (!admin_still_operator(b, request->principal, request->key)) {
        static const char text[] = "this key is no longer registered as an operator's (a reload "
                                   "ahead of this request removed it); nothing was done";
        admin_refuse(admin, b, request, SCHAKEL__REASON__NOT_PERMITTED, text);
        admin_log_outcome(request, request->command->name, "refused", text);
        if (request->refusal != NULL)
            (void)admin_send(admin, NULL, request, request->refusal, request->refusal_len);
        if (request->export_begins)
            admin_export_release(admin);
        return;
    }
    if (request->export_begins) {
        admin_export_begin(admin, b, request);
        return;
    }
    admin_json_t out;
    char err[512] = "";
    admin_json_init(&out);
    int rc = request->command->run(admin, b, request, &out, err, sizeof err);
    size_t len = 0;
    char *json = admin_json_take(&out, &len);
    if (rc == 0 && json == NULL) {
        rc = -1;
        snprintf(err, sizeof err, "out of memory while writing the answer");
    }
    admin_log_outcome(request, request->command->name, rc == 0 ? "ok" : "failed",
                      rc == 0 ? NULL : err);
    admin_send_answer(admin, request, rc == 0, rc == 0 ? NULL : err, json, json ? len : 0);
    free(json);
}

int admin_has_pending(const admin_t *admin)
{
    return admin != NULL &&
           (admin->n_pending > 0 || (admin->job.json != NULL && !admin->job.sending) ||
            admin->job.failed[0] != '\0');
}

void admin_after_commit(admin_t *admin, broker_t *b, int committed)
{
    admin_export_answer(admin, b, committed);
    for (size_t i = 0; i < admin->n_pending; i++) {
        admin_request_t *request = &admin->pending[i];
        admin_answer(admin, b, request, committed);
        free(request->refusal);
        request->refusal = NULL;
    }
    admin->n_pending = 0;
}
