/*
 * admin.c — the admin endpoint (see admin.h): reads operators' requests,
 * answers status, partners, rules and pending (admin_pending.c), and runs
 * reload.
 *
 * Trusts only the ZAP User-Id, re-checked per request against the policy
 * in force (still an operator, still the key the connection authenticated
 * with); every frame goes through the wire codec. A malformed request is
 * answered Rejected with a reason code, an unknown command or a failed one
 * AdminResponse{ok: false}; the broker carries on either way. Answers are
 * JSON (admin_json.c), sent in chunks of SCHAKEL_ADMIN_CHUNK_BYTES.
 */
#include "admin.h"
#include "audit.h"

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

#include "admin_json.h"
#include "admin_pending.h"
#include "broker.h"
#include "connevents.h"
#include "log.h"
#include "plural.h"
#include "record.h"
#include "sendq.h"
#include "syntax.h"
#include "wire.h"

typedef struct admin_request admin_request_t;

/* A command runs after the turn's commit. It writes its answer into out and
 * returns 0, or returns -1 with err filled (out may then hold details). */
typedef int (*admin_run_fn)(admin_t *admin, broker_t *b, const admin_request_t *request,
                            admin_json_t *out, char *err, size_t errlen);

typedef struct admin_command {
    const char *name;
    size_t max_args;
    admin_run_fn run;
} admin_command_t;

/* One request read this turn, answered after the commit. */
struct admin_request {
    uint8_t routing_id[SESSION_ROUTING_MAX];
    size_t routing_len;
    char principal[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    uint64_t request_id;
    const admin_command_t *command; /* NULL: the answer is `refusal` */
    uint8_t *refusal;               /* encoded frame refusing the request, owned */
    size_t refusal_len;
    const char *asked;    /* the command it names, once read as one (static) */
    int refusal_recorded; /* its refusal's entry is carried (record_admin_refused) */
    size_t n_args;
    char args[SCHAKEL_ADMIN_MAX_ARGS][SCHAKEL_ADMIN_MAX_ARG_LEN + 1];
    int fd;            /* the connection's socket (ZMQ_SRCFD), -1 when unknown */
    char key[41];      /* the key it authenticated with (Z85), "" when unknown */
    int export_begins; /* audit-subject: the export begins after the commit */
};

/* The data-subject export, one at a time, read in steps over loop turns
 * (admin_export_step) from the turn after the commit of its request. */
typedef struct admin_export_job {
    int active;              /* a request holds it (from admin_accept on) */
    admin_request_t request; /* whose answer it is (from admin_accept on: its socket) */
    int gone;                /* its connection closed: no answer, no record; never cleared */
    audit_export_t *export;  /* NULL before it begins and once all is read */
    char *json;              /* the document, recorded this turn: sent after its commit;
                                wiped and NULL once all of it is handed to libzmq */
    size_t json_len;
    size_t sent; /* of it, once sending began (in chunks over turns) */
    int sending; /* from the commit of its record until its last chunk has left libzmq */
    sendq_t *queue;   /* the bytes of its chunks libzmq holds (sendq.h), while sending */
    size_t max_owed;  /* the most queue counted, for the log */
    int held;         /* sending waited at SCHAKEL_EXPORT_MAX_OWED_BYTES (logged once) */
    struct stat conn; /* its connection's socket (fstat of request.fd as it was read) */
    int conn_known;   /* conn holds it: the queue watches it (sendq_watch) */
    char failed[448]; /* why it ended without a document this turn ("": it did not) */
    int64_t began_ms; /* monotonic, for the log */
    unsigned steps;   /* turns it read in */
} admin_export_job_t;

#define ADMIN_TURN_SOCKETS 256

struct admin {
    void *socket;
    char endpoint[256];
    char *store_path;
    admin_request_t *pending; /* SCHAKEL_ADMIN_BATCH slots */
    size_t n_pending;
    char *chunk; /* SCHAKEL_ADMIN_CHUNK_BYTES + 1: one NUL-terminated JSON chunk */
    void *events; /* the admin socket's connection events (NULL: none) */
    /* The sockets of the events read since a turn's read last emptied the
     * admin queue (a request read after its connection's close is in
     * them, however many turns its reading took: libzmq queues a
     * connection's requests before it reports the close); past
     * ADMIN_TURN_SOCKETS, every export asked for meanwhile is gone. */
    int turn_sockets[ADMIN_TURN_SOCKETS];
    size_t n_turn_sockets;
    int turn_sockets_overflow;
    int queue_emptied; /* the last turn's read found the admin queue empty */
    admin_export_job_t job;
};

static int admin_status(admin_t *admin, broker_t *b, const admin_request_t *request,
                        admin_json_t *out, char *err, size_t errlen);
static int admin_partners(admin_t *admin, broker_t *b, const admin_request_t *request,
                          admin_json_t *out, char *err, size_t errlen);
static int admin_rules(admin_t *admin, broker_t *b, const admin_request_t *request,
                       admin_json_t *out, char *err, size_t errlen);
static int admin_reload(admin_t *admin, broker_t *b, const admin_request_t *request,
                        admin_json_t *out, char *err, size_t errlen);
static int admin_pending(admin_t *admin, broker_t *b, const admin_request_t *request,
                         admin_json_t *out, char *err, size_t errlen);

/* The commands; docs/PROTOCOL.md section 11 describes each answer.
 * audit-subject has no run function: it is read in steps over the turns
 * after its request's commit (admin_export_step), and its answer is
 * handed out after the commit of the turn that records the export. */
static const admin_command_t admin_commands[] = {
    {"status", 0, admin_status}, {"partners", 0, admin_partners}, {"rules", 0, admin_rules},
    {"reload", 0, admin_reload}, {"audit-subject", 1, NULL},      {"pending", 3, admin_pending},
};
#define ADMIN_COMMAND_NAMES "status, partners, rules, reload, audit-subject, pending"

static void admin_export_release(admin_t *admin);

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
static void admin_events_drain(admin_t *admin)
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

/* Every request is recorded in the audit trail, in this turn's
 * transaction, as it is read: who (the authenticated operator), what
 * (command, request id). It is executed only after that transaction
 * committed; a record that cannot be written fails the turn, and the
 * request is then refused unexecuted, which is recorded in its place. */
static void admin_record(broker_t *b, const admin_request_t *request, const char *action)
{
    char details[40 + SCHAKEL_ADMIN_MAX_ARG_LEN];
    int n = snprintf(details, sizeof details, "request_id=%" PRIu64, request->request_id);
    /* whose mailbox an operator looked into: the trail says who saw what.
     * Only a well-formed id is written; anything else is refused anyway. */
    if (strcmp(action, "pending") == 0 && request->n_args >= 1 &&
        syntax_is_principal_id(request->args[0]) && n > 0 && (size_t)n < sizeof details)
        snprintf(details + n, sizeof details - (size_t)n, " principal=%s", request->args[0]);
    (void)record_admin(b, request->principal, action, details);
}

/* A refused request, and why: "admin.refused", carried until a
 * transaction that holds it commits (record.h record_admin_refused), as
 * the refusal is answered whether or not its turn commits, and a refusal
 * decided after a commit (the check as a request is run) is written into
 * the next turn's transaction, which may roll back as well. */
static void admin_record_refused(broker_t *b, admin_request_t *request, const char *why)
{
    char details[400];
    snprintf(details, sizeof details, "request_id=%" PRIu64 " %s", request->request_id, why);
    (void)record_admin_refused(b, request->principal, details);
    request->refusal_recorded = 1;
}

/* How a request ended, once answered: a log line (the trail has the
 * request; a reload has its own entry). */
static void admin_log_outcome(const admin_request_t *request, const char *command,
                              const char *outcome, const char *text)
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

static uint8_t *admin_encode_response(uint64_t request_id, int ok, const char *error,
                                      const char *json, int more, size_t *len)
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
static int admin_send_chunks(admin_t *admin, sendq_t *queue, const admin_request_t *request, int ok,
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

static void admin_send_answer(admin_t *admin, const admin_request_t *request, int ok,
                              const char *error, const char *json, size_t json_len)
{
    size_t offset = 0;
    (void)admin_send_chunks(admin, NULL, request, ok, error, json, json_len, &offset, SIZE_MAX);
}

/* ------------------------------------------------------------------ reading requests */

/* Take a request slot for the message's sender. NULL when the routing id
 * cannot be kept (oversized: a client that set one against the protocol). */
static admin_request_t *admin_slot(admin_t *admin, broker_t *b, zmq_msg_t *routing,
                                   const char *principal)
{
    size_t len = zmq_msg_size(routing);
    if (len == 0 || len > SESSION_ROUTING_MAX || strlen(principal) > SCHAKEL_MAX_PRINCIPAL_LEN) {
        log_event(LOG_WARN, "admin.dropped", "principal", principal, "why",
                  "oversized routing id or principal", NULL);
        /* unanswerable, but on the trail like any refused request */
        (void)record_admin_refused(b, principal,
                                   "request_id=- dropped unanswered: the connection set a routing "
                                   "id the broker cannot keep (a client must set no "
                                   "ZMQ_ROUTING_ID)");
        return NULL;
    }
    admin_request_t *request = &admin->pending[admin->n_pending++];
    /* whole: a field left from the slot's last request (its export_begins,
     * its key) would act for this one */
    memset(request, 0, sizeof *request);
    memcpy(request->routing_id, zmq_msg_data(routing), len);
    request->routing_len = len;
    strcpy(request->principal, principal);
    request->fd = -1;
    return request;
}

static void admin_refuse(admin_t *admin, broker_t *b, admin_request_t *request,
                         Schakel__Reason reason, const char *text)
{
    char why[320];
    (void)admin;
    sessions_count_refusal(b->sessions, request->principal);
    request->refusal = admin_encode_rejected(reason, text, &request->refusal_len);
    snprintf(why, sizeof why, "reason=%s %s", wire_reason_name(reason), text);
    admin_record_refused(b, request, why);
}

static int admin_operator_in(const policy_t *policy, const char *principal, const char *key)
{
    const policy_principal_t *p = policy_principal_by_id(policy, principal);
    char current[41];
    if (p == NULL || p->role != ROLE_OPERATOR || key == NULL)
        return 0;
    keys_public_z85(p->curve_pk, current);
    return strcmp(key, current) == 0;
}

/* The connection's key must still be an operator's under the policy in
 * force, and under a reload not yet recorded (broker.h policy_pending): a
 * reload that removes or replaces it cuts the connection off. */
static int admin_still_operator(const broker_t *b, const char *principal, const char *key)
{
    return admin_operator_in(b->policy, principal, key) &&
           (b->policy_pending == NULL || admin_operator_in(b->policy_pending, principal, key));
}

static const admin_command_t *admin_command_by_name(const char *name)
{
    for (size_t i = 0; i < sizeof admin_commands / sizeof admin_commands[0]; i++)
        if (strcmp(admin_commands[i].name, name) == 0)
            return &admin_commands[i];
    return NULL;
}

/* A decoded AdminRequest: its fields, then the command. */
/* audit-subject PSEUDONYM: checked now; read in steps from the turn after
 * this one's commit (admin_export_begin). One export at a time: a second
 * request meanwhile is answered at once that one is running, so that an
 * export's memory is never held twice. A bad pseudonym becomes the answer
 * (not ok). */
static void admin_prepare_export(admin_t *admin, admin_request_t *request)
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

static void admin_accept(admin_t *admin, broker_t *b, admin_request_t *request,
                         const Schakel__AdminRequest *body)
{
    char text[256];
    if (!body->has_request_id || body->request_id == 0) {
        admin_refuse(admin, b, request, SCHAKEL__REASON__INVALID_MESSAGE,
                     "admin_request has no request_id (a non-zero number)");
        return;
    }
    request->request_id = body->request_id;
    if (body->command == NULL || body->command[0] == '\0') {
        admin_refuse(admin, b, request, SCHAKEL__REASON__INVALID_MESSAGE,
                     "admin_request has no command (" ADMIN_COMMAND_NAMES ")");
        return;
    }
    if (strlen(body->command) > SCHAKEL_ADMIN_MAX_COMMAND_LEN) {
        snprintf(text, sizeof text,
                 "admin_request command is longer than %u bytes (" ADMIN_COMMAND_NAMES ")",
                 SCHAKEL_ADMIN_MAX_COMMAND_LEN);
        admin_refuse(admin, b, request, SCHAKEL__REASON__INVALID_FIELD, text);
        return;
    }
    if (body->n_args > SCHAKEL_ADMIN_MAX_ARGS) {
        snprintf(text, sizeof text, "admin_request has %zu args; at most %u are allowed",
                 body->n_args, SCHAKEL_ADMIN_MAX_ARGS);
        admin_refuse(admin, b, request, SCHAKEL__REASON__INVALID_FIELD, text);
        return;
    }
    for (size_t i = 0; i < body->n_args; i++) {
        if (strlen(body->args[i]) > SCHAKEL_ADMIN_MAX_ARG_LEN) {
            snprintf(text, sizeof text, "admin_request args[%zu] is longer than %u bytes", i,
                     SCHAKEL_ADMIN_MAX_ARG_LEN);
            admin_refuse(admin, b, request, SCHAKEL__REASON__INVALID_FIELD, text);
            return;
        }
        strcpy(request->args[i], body->args[i]);
    }
    request->n_args = body->n_args;
    const admin_command_t *command = admin_command_by_name(body->command);
    if (command == NULL || body->n_args > command->max_args) {
        if (command == NULL)
            snprintf(text, sizeof text,
                     "unknown command \"%.32s\" (known: " ADMIN_COMMAND_NAMES ")", body->command);
        else
            snprintf(text, sizeof text, "%s takes at most %zu %s, not %zu", command->name,
                     command->max_args, plural(command->max_args, "argument", "arguments"),
                     body->n_args);
        size_t len = 0;
        request->refusal = admin_encode_response(request->request_id, 0, text, NULL, 0, &len);
        request->refusal_len = len;
        admin_record_refused(b, request, text);
        return;
    }
    request->command = command;
    request->asked = command->name;
    admin_record(b, request, command->name);
    if (command->run == NULL)
        admin_prepare_export(admin, request);
}

/* Everything but the identity check: one frame, a valid Frame, an AdminRequest. */
static void admin_check(admin_t *admin, broker_t *b, admin_request_t *request, int parts,
                        const zmq_msg_t *data)
{
    if (parts != 1) {
        admin_refuse(admin, b, request, SCHAKEL__REASON__TOO_MANY_FRAMES,
                     "send exactly one frame per message");
        return;
    }
    wire_error_t err = {0};
    Schakel__Frame *frame =
        wire_decode_frame(zmq_msg_data((zmq_msg_t *)(uintptr_t)data), zmq_msg_size(data), &err);
    if (frame == NULL) {
        admin_refuse(admin, b, request, err.reason, err.text);
        return;
    }
    if (frame->body_case != SCHAKEL__FRAME__BODY_ADMIN_REQUEST)
        admin_refuse(admin, b, request, SCHAKEL__REASON__UNEXPECTED_BODY,
                     "the admin endpoint takes admin_request frames only");
    else
        admin_accept(admin, b, request, frame->admin_request);
    wire_frame_free(&frame);
}

/* Receive one ROUTER message: routing id, then its parts (the first kept).
 * Returns 1 when one was read, 0 when none was pending, -1 on error. */
static int admin_receive_one(admin_t *admin, broker_t *b)
{
    zmq_msg_t routing, data;
    zmq_msg_init(&routing);
    if (zmq_msg_recv(&routing, admin->socket, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&routing);
        return zmq_errno() == EAGAIN ? 0 : -1;
    }
    zmq_msg_init(&data);
    int parts = 0, more = zmq_msg_more(&routing);
    while (more) {
        zmq_msg_t extra;
        zmq_msg_t *target = parts == 0 ? &data : &extra;
        if (parts > 0)
            zmq_msg_init(&extra);
        int rc = zmq_msg_recv(target, admin->socket, 0);
        more = rc >= 0 && zmq_msg_more(target);
        if (parts > 0)
            zmq_msg_close(&extra);
        if (rc >= 0)
            parts++;
    }
    const char *user_id = parts > 0 ? zmq_msg_gets(&data, "User-Id") : NULL;
    admin_request_t *request = user_id != NULL ? admin_slot(admin, b, &routing, user_id) : NULL;
    if (user_id == NULL)
        log_event(LOG_ERROR, "admin.unattributed", NULL);
    else if (request != NULL &&
             !admin_still_operator(b, user_id, zmq_msg_gets(&data, ZAP_PROPERTY_KEY)))
        admin_refuse(admin, b, request, SCHAKEL__REASON__NOT_PERMITTED,
                     "this key is no longer registered as an operator's");
    else if (request != NULL) {
        const char *key = zmq_msg_gets(&data, ZAP_PROPERTY_KEY);
        if (key != NULL && strlen(key) < sizeof request->key)
            strcpy(request->key, key);
        request->fd = zmq_msg_get(&data, ZMQ_SRCFD);
        admin_check(admin, b, request, parts, &data);
    }
    zmq_msg_close(&data);
    zmq_msg_close(&routing);
    return 1;
}

int admin_receive(admin_t *admin, broker_t *b)
{
    int read = 0;
    /* every turn, export or not: the monitor's queue stays short; the
     * sockets noted for an export asked for in this turn's requests */
    if (admin->queue_emptied) {
        admin->n_turn_sockets = 0;
        admin->turn_sockets_overflow = 0;
    }
    admin->queue_emptied = 0;
    admin_events_drain(admin);
    while (admin->n_pending < SCHAKEL_ADMIN_BATCH) {
        int rc = admin_receive_one(admin, b);
        if (rc < 0)
            return -1;
        if (rc == 0) {
            admin->queue_emptied = 1;
            break;
        }
        read++;
    }
    return read;
}

/* ------------------------------------------------------------------ the export */

/* Wipe and free what the export holds (its document names the subject);
 * the slot is free for the next request. Then the memory goes back to the
 * system: glibc keeps what was freed in the process (an export at the cap
 * peaks at some 160 MiB, and tens of MB stayed resident until a restart),
 * and malloc_trim gives back the free pages of every arena, libzmq's
 * threads' too (a few ms, once an export). */
static void admin_export_release(admin_t *admin)
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
static void admin_export_begin(admin_t *admin, broker_t *b, const admin_request_t *request)
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

/* The document's next chunks: at most SCHAKEL_EXPORT_SEND_CHUNKS a turn,
 * and only while its operator owes less than SCHAKEL_EXPORT_MAX_OWED_BYTES
 * (what libzmq holds of it). The export ends once the last chunk has left
 * libzmq (encrypted and written, or being written), when a chunk could
 * not be handed over, when its connection closed, or when a reload (in
 * force or pending) no longer registers its operator's key: no more of
 * it is handed over, though what libzmq or the kernel holds already (up
 * to the bound, and the socket's buffers) cannot be called back. */
static void admin_export_send(admin_t *admin, const broker_t *b)
{
    admin_export_job_t *job = &admin->job;
    int rc = 0;
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
    for (size_t n = 0;
         !job->gone && rc == 0 && job->json != NULL && n < SCHAKEL_EXPORT_SEND_CHUNKS &&
         sendq_bytes(job->queue) < SCHAKEL_EXPORT_MAX_OWED_BYTES;
         n++) {
        rc = admin_send_chunks(admin, job->queue, &job->request, 1, NULL, job->json, job->json_len,
                               &job->sent, 1);
        owed = sendq_bytes(job->queue);
        if (owed > job->max_owed)
            job->max_owed = owed;
        if (rc > 0)
            admin_export_wipe_document(job);
    }
    int outcome = rc < 0 ? -1 : admin_export_outcome(job);
    if (outcome < 0)
        admin_export_log(job, b->now_ms, "admin.export_undelivered",
                         rc < 0 ? "its connection took no more"
                                : "its connection closed before all of it had left the broker");
    else if (outcome > 0)
        admin_export_log(job, b->now_ms, "admin.export_done", NULL);
    if (outcome != 0)
        admin_export_release(admin);
}

/* After each commit: an export that ended this turn is answered, with its
 * document (in chunks over this turn and the next ones) only if the turn
 * that recorded it committed. */
static void admin_export_answer(admin_t *admin, const broker_t *b, int committed)
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

/* Recorded as handed out, and still going out at the stop: the rest goes
 * to libzmq at once, whatever its operator owes, and the admin socket
 * lingers SCHAKEL_ADMIN_STOP_LINGER_MS for libzmq to send it (its close at
 * the broker's end would drop it unsent with the usual linger of 0). An
 * operator who does not read it by then does not get it. */
static void admin_stop_sending(admin_t *admin, const broker_t *b)
{
    admin_export_job_t *job = &admin->job;
    char linger_text[16], owed[24];
    int linger = SCHAKEL_ADMIN_STOP_LINGER_MS;
    admin_events_drain(admin);
    if (admin_export_revoked(admin, b))
        return;
    int rc = job->gone ? admin_export_outcome(job)
             : job->json == NULL
                 ? 1
                 : admin_send_chunks(admin, job->queue, &job->request, 1, NULL, job->json,
                                     job->json_len, &job->sent, SIZE_MAX);
    if (rc <= 0) {
        admin_export_log(job, b->now_ms, "admin.export_undelivered",
                         job->gone ? "its connection closed before all of it had left the broker"
                                   : "its connection took no more");
        admin_export_release(admin);
        return;
    }
    if (zmq_setsockopt(admin->socket, ZMQ_LINGER, &linger, sizeof linger) != 0)
        log_event(LOG_WARN, "admin.linger_failed", "error", zmq_strerror(zmq_errno()), NULL);
    snprintf(linger_text, sizeof linger_text, "%d", linger);
    snprintf(owed, sizeof owed, "%zu", sendq_bytes(job->queue));
    log_event(LOG_INFO, "admin.export_stopping", "principal", job->request.principal, "owed", owed,
              "linger_ms", linger_text, NULL);
    admin_export_log(job, b->now_ms, "admin.export_done", NULL);
    admin_export_release(admin);
}

void admin_stop(admin_t *admin, const broker_t *b)
{
    if (admin != NULL && admin->job.sending)
        admin_stop_sending(admin, b);
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

/* ------------------------------------------------------------------ status */

/* Wall-clock seconds of a monotonic instant of this turn. */
static int64_t admin_wall_time(const broker_t *b, int64_t monotonic_ms)
{
    return b->now_s - (b->now_ms - monotonic_ms) / 1000;
}

static int64_t admin_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
}

static void admin_status_store(admin_t *admin, broker_t *b, admin_json_t *out)
{
    char wal[4200];
    snprintf(wal, sizeof wal, "%s-wal", admin->store_path);
    int64_t db_bytes = admin_file_size(admin->store_path), wal_bytes = admin_file_size(wal);
    int64_t backlog = store_backlog_total(b->store);
    admin_json_key(out, "backlog");
    if (backlog >= 0)
        admin_json_int(out, backlog);
    else
        admin_json_null(out);
    admin_json_key(out, "store");
    admin_json_object_begin(out);
    admin_json_member_string(out, "path", admin->store_path);
    admin_json_member_int(out, "bytes", db_bytes + wal_bytes);
    admin_json_member_int(out, "db_bytes", db_bytes);
    admin_json_member_int(out, "wal_bytes", wal_bytes);
    /* The floor (space.h): the room last measured, null before the first */
    admin_json_key(out, "free_bytes");
    if (b->space.known)
        admin_json_uint(out, b->space.last.free_bytes);
    else
        admin_json_null(out);
    admin_json_member_uint(out, "min_free_bytes", b->space.min_free);
    admin_json_member_bool(out, "below_floor", b->space.below);
    admin_json_member_uint(out, "max_stored_bytes_per_partner", b->space.max_partner);
    /* the schema it is at, and the one this start migrated it from */
    admin_json_member_int(out, "schema", store_schema_version());
    int64_t migrated_ms = 0;
    int migrated_from = store_migrated_from(b->store, &migrated_ms);
    admin_json_key(out, "migrated_from");
    if (migrated_from > 0)
        admin_json_int(out, migrated_from);
    else
        admin_json_null(out);
    if (backlog < 0)
        admin_json_member_string(out, "error", store_errmsg(b->store));
    admin_json_object_end(out);
}

/* Where the audit trail ends: its last entry and its last signed
 * checkpoint (entries after it are chained but not yet signed). */
static void admin_status_audit(broker_t *b, admin_json_t *out)
{
    store_audit_tail_t tail;
    char hash[2 * STORE_AUDIT_HASH_BYTES + 1];
    admin_json_key(out, "audit");
    if (store_audit_tail(b->store, &tail) != 0) {
        admin_json_null(out);
        return;
    }
    syntax_hex(tail.hash, sizeof tail.hash, hash);
    admin_json_object_begin(out);
    admin_json_member_uint(out, "entries", tail.seq);
    admin_json_member_string(out, "last_hash", tail.seq > 0 ? hash : NULL);
    admin_json_member_uint(out, "last_checkpoint_seq", tail.checkpoint_seq);
    admin_json_key(out, "last_checkpoint_at");
    if (tail.checkpoint_seq > 0)
        admin_json_int(out, tail.checkpoint_at);
    else
        admin_json_null(out);
    admin_json_object_end(out);
}

/* The last reload and whether the files on disk would start the broker
 * (broker.h reload_report_t). */
static void admin_status_reload(const broker_t *b, admin_json_t *out)
{
    admin_json_key(out, "last_reload");
    if (b->reload.at == 0) {
        admin_json_null(out);
    } else {
        admin_json_object_begin(out);
        admin_json_member_int(out, "at", b->reload.at);
        admin_json_member_string(out, "by", b->reload.by);
        admin_json_member_bool(out, "failed", b->reload.failed);
        admin_json_member_string(out, "error", b->reload.failed ? b->reload.error : NULL);
        admin_json_object_end(out);
    }
    admin_json_key(out, "next_start");
    admin_json_object_begin(out);
    admin_json_member_bool(out, "fails", b->reload.start_fails);
    admin_json_member_string(out, "error", b->reload.start_fails ? b->reload.start_error : NULL);
    /* the config names another policy file than the one a reload reads */
    admin_json_member_string(out, "policy",
                             b->reload.next_policy[0] != '\0' ? b->reload.next_policy : NULL);
    admin_json_object_end(out);
}

static int admin_status(admin_t *admin, broker_t *b, const admin_request_t *request,
                        admin_json_t *out, char *err, size_t errlen)
{
    (void)request, (void)err, (void)errlen;
    size_t connected = 0;
    for (size_t i = 0; i < policy_principal_count(b->policy); i++) {
        sessions_principal_stats_t stats;
        sessions_principal_stats(b->sessions, policy_principal_at(b->policy, i)->id, &stats);
        connected += stats.sessions > 0;
    }
    zap_counts_t auth = zap_counts(b->zap);
    admin_json_object_begin(out);
    admin_json_member_string(out, "version", SCHAKEL_VERSION);
    admin_json_member_uint(out, "protocol", SCHAKEL_PROTOCOL_VERSION);
    admin_json_member_int(out, "started_at", b->started_at);
    admin_json_member_int(out, "uptime_s", b->now_s - b->started_at);
    admin_json_member_string(out, "endpoint", b->endpoint);
    admin_json_member_string(out, "admin_endpoint", admin->endpoint);
    admin_json_key(out, "policy");
    admin_json_object_begin(out);
    admin_json_member_string(out, "hash", policy_hash_hex(b->policy));
    admin_json_member_string(out, "path", b->policy_path);
    admin_json_member_int(out, "loaded_at", b->policy_loaded_at);
    admin_json_member_uint(out, "partners", policy_partner_count(b->policy));
    admin_json_member_uint(out, "principals", policy_principal_count(b->policy));
    admin_json_member_uint(out, "rules", policy_rule_count(b->policy));
    admin_json_object_end(out);
    admin_json_member_uint(out, "connected_principals", connected);
    admin_json_member_uint(out, "connections", sessions_count(b->sessions));
    admin_json_key(out, "messages");
    admin_json_object_begin(out);
    admin_json_member_uint(out, "accepted", b->stats.accepted);
    admin_json_member_uint(out, "refused", b->stats.refused);
    admin_json_member_uint(out, "delivered", b->stats.delivered);
    admin_json_member_uint(out, "acked", b->stats.acked);
    admin_json_member_uint(out, "duplicates", b->stats.duplicates);
    admin_json_object_end(out);
    admin_json_key(out, "handshakes");
    admin_json_object_begin(out);
    admin_json_member_uint(out, "admitted", auth.admitted);
    admin_json_member_uint(out, "refused", auth.refused);
    admin_json_object_end(out);
    admin_status_reload(b, out);
    admin_status_store(admin, b, out);
    admin_status_audit(b, out);
    admin_json_object_end(out);
    return 0;
}

/* ------------------------------------------------------------------ partners */

/* One principal as operators see it. */
typedef struct admin_principal_view {
    sessions_principal_stats_t stats;
    int64_t backlog; /* -1: the store could not count it */
    const receiver_t *receiver;
} admin_principal_view_t;

static void admin_last_seen(admin_json_t *out, const broker_t *b, int64_t last_seen_ms)
{
    admin_json_key(out, "last_seen");
    if (last_seen_ms > 0)
        admin_json_int(out, admin_wall_time(b, last_seen_ms));
    else
        admin_json_null(out);
}

static void admin_principal_write(admin_json_t *out, const broker_t *b, const policy_principal_t *p,
                                  const admin_principal_view_t *v)
{
    int receiving = v->receiver != NULL && v->receiver->session != NULL;
    admin_json_object_begin(out);
    admin_json_member_string(out, "id", p->id);
    admin_json_member_string(out, "role", policy_role_name(p->role));
    admin_json_member_bool(out, "connected", v->stats.sessions > 0);
    admin_json_member_uint(out, "connections", v->stats.sessions);
    admin_json_member_bool(out, "receiving", receiving);
    if (receiving) {
        admin_json_member_uint(out, "window", v->receiver->window);
        admin_json_member_uint(out, "in_flight", v->receiver->inflight);
    }
    admin_last_seen(out, b, v->stats.last_seen_ms);
    admin_json_key(out, "backlog");
    if (v->backlog >= 0)
        admin_json_int(out, v->backlog);
    else
        admin_json_null(out);
    admin_json_member_uint(out, "refusals", v->stats.refusals);
    admin_json_object_end(out);
}

/* One partner: its totals, then its principals in policy order. */
static void admin_partner_write(admin_json_t *out, broker_t *b, const policy_partner_t *partner,
                                const admin_principal_view_t *views)
{
    unsigned connections = 0;
    unsigned long refusals = 0;
    int64_t backlog = 0, last_seen_ms = 0;
    size_t n = policy_principal_count(b->policy);
    for (size_t i = 0; i < n; i++) {
        if (policy_principal_at(b->policy, i)->partner != partner)
            continue;
        connections += views[i].stats.sessions;
        refusals += views[i].stats.refusals;
        backlog = backlog < 0 || views[i].backlog < 0 ? -1 : backlog + views[i].backlog;
        if (views[i].stats.last_seen_ms > last_seen_ms)
            last_seen_ms = views[i].stats.last_seen_ms;
    }
    admin_json_object_begin(out);
    admin_json_member_string(out, "id", partner->id);
    admin_json_member_string(out, "name", partner->name);
    admin_json_member_bool(out, "connected", connections > 0);
    admin_json_member_uint(out, "connections", connections);
    admin_last_seen(out, b, last_seen_ms);
    admin_json_key(out, "backlog");
    if (backlog >= 0)
        admin_json_int(out, backlog);
    else
        admin_json_null(out);
    admin_json_member_uint(out, "refusals", refusals);
    admin_json_member_int(out, "stored_bytes", store_partner_bytes(b->store, partner->id));
    admin_json_key(out, "principals");
    admin_json_array_begin(out);
    for (size_t i = 0; i < n; i++) {
        const policy_principal_t *p = policy_principal_at(b->policy, i);
        if (p->partner == partner)
            admin_principal_write(out, b, p, &views[i]);
    }
    admin_json_array_end(out);
    admin_json_object_end(out);
}

/* Cost: one mailbox count per principal (an index range each) and
 * O(partners x principals) grouping; operators only. */
static int admin_partners(admin_t *admin, broker_t *b, const admin_request_t *request,
                          admin_json_t *out, char *err, size_t errlen)
{
    (void)admin, (void)request;
    size_t n = policy_principal_count(b->policy);
    admin_principal_view_t *views = calloc(n ? n : 1, sizeof *views);
    if (views == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const policy_principal_t *p = policy_principal_at(b->policy, i);
        sessions_principal_stats(b->sessions, p->id, &views[i].stats);
        views[i].backlog = store_mailbox_count(b->store, p->id);
        views[i].receiver = sessions_receiver(b->sessions, p->id);
    }
    admin_json_object_begin(out);
    admin_json_member_string(out, "policy_hash", policy_hash_hex(b->policy));
    admin_json_key(out, "partners");
    admin_json_array_begin(out);
    for (size_t k = 0; k < policy_partner_count(b->policy); k++)
        admin_partner_write(out, b, policy_partner_at(b->policy, k), views);
    admin_json_array_end(out);
    admin_json_object_end(out);
    free(views);
    return 0;
}

/* ------------------------------------------------------------------ rules */

void admin_retention_text(int64_t seconds, char *out, size_t outlen)
{
    static const struct {
        int64_t seconds;
        char unit;
    } units[] = {{365LL * 86400, 'y'}, {86400, 'd'}, {3600, 'h'}, {60, 'm'}, {1, 's'}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (seconds % units[i].seconds == 0) {
            snprintf(out, outlen, "%" PRId64 "%c", seconds / units[i].seconds, units[i].unit);
            return;
        }
    }
}

static void admin_partner_list(admin_json_t *out, const policy_t *policy, const char *key,
                               uint64_t mask)
{
    admin_json_key(out, key);
    admin_json_array_begin(out);
    for (size_t k = 0; k < policy_partner_count(policy) && k < 64; k++)
        if (mask >> k & 1)
            admin_json_string(out, policy_partner_at(policy, k)->id);
    admin_json_array_end(out);
}

static void admin_role_list(admin_json_t *out, const char *key, unsigned roles)
{
    static const role_t order[] = {ROLE_SYSTEM, ROLE_CASEWORKER, ROLE_OPERATOR};
    admin_json_key(out, key);
    admin_json_array_begin(out);
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (roles & (unsigned)order[i])
            admin_json_string(out, policy_role_name(order[i]));
    admin_json_array_end(out);
}

/* A list as written, or ["*"] for any. */
static void admin_pattern_list(admin_json_t *out, const char *key, int any,
                               const char *const *items, size_t n)
{
    admin_json_key(out, key);
    admin_json_array_begin(out);
    if (any)
        admin_json_string(out, "*");
    for (size_t i = 0; !any && i < n; i++)
        admin_json_string(out, items[i]);
    admin_json_array_end(out);
}

static void admin_rule_scope_write(admin_json_t *out, const policy_t *policy,
                                   const policy_rule_scope_t *scope)
{
    admin_partner_list(out, policy, "from", scope->from_partners);
    admin_role_list(out, "from_roles", scope->from_roles);
    admin_partner_list(out, policy, "to", scope->to_partners);
    admin_role_list(out, "to_roles", scope->to_roles);
    admin_pattern_list(out, "kinds", scope->any_kind, scope->kinds, scope->n_kinds);
    admin_json_key(out, "themes");
    admin_json_array_begin(out);
    if (scope->any_theme)
        admin_json_string(out, "*");
    for (size_t t = 0; !scope->any_theme && syntax_themes[t] != NULL && t < 64; t++)
        if (scope->themes >> t & 1)
            admin_json_string(out, syntax_themes[t]);
    admin_json_array_end(out);
    admin_pattern_list(out, "areas", scope->any_area, scope->areas, scope->n_areas);
}

static void admin_rule_write(admin_json_t *out, const policy_t *policy, const policy_rule_t *rule)
{
    policy_rule_scope_t scope;
    char retention[32] = "";
    admin_retention_text(rule->retention_s, retention, sizeof retention);
    admin_json_object_begin(out);
    admin_json_member_string(out, "id", rule->id);
    admin_json_member_string(out, "hash", rule->hash_hex);
    admin_json_member_uint(out, "line", rule->line);
    if (policy_rule_scope(policy, rule, &scope) == 0)
        admin_rule_scope_write(out, policy, &scope);
    admin_json_key(out, "fields");
    admin_json_array_begin(out);
    for (uint32_t bit = 1; bit != 0; bit <<= 1)
        if ((rule->fields & bit) && policy_field_name(bit) != NULL)
            admin_json_string(out, policy_field_name(bit));
    admin_json_array_end(out);
    admin_json_member_string(out, "purpose", rule->purpose);
    admin_json_member_string(out, "legal_basis", rule->legal_basis);
    admin_json_member_string(out, "retention", retention);
    admin_json_member_int(out, "retention_s", rule->retention_s);
    admin_json_member_bool(out, "require_case_ref", rule->require_case_ref);
    admin_json_object_end(out);
}

static int admin_rules(admin_t *admin, broker_t *b, const admin_request_t *request,
                       admin_json_t *out, char *err, size_t errlen)
{
    (void)admin, (void)request, (void)err, (void)errlen;
    admin_json_object_begin(out);
    admin_json_member_string(out, "policy_hash", policy_hash_hex(b->policy));
    admin_json_key(out, "rules");
    admin_json_array_begin(out);
    for (size_t i = 0; i < policy_rule_count(b->policy); i++)
        admin_rule_write(out, b->policy, policy_rule_at(b->policy, i));
    admin_json_array_end(out);
    admin_json_object_end(out);
    return 0;
}

/* ------------------------------------------------------------------ reload */

/* The new policy's warnings (rules that never decide, ...): the first
 * SCHAKEL_POLICY_WARNINGS_SHOWN lines, and how many there are. */
static void admin_reload_warnings(const policy_t *policy, admin_json_t *out)
{
    size_t n = policy_warning_count(policy);
    admin_json_member_uint(out, "warnings_total", n);
    admin_json_key(out, "warnings");
    admin_json_array_begin(out);
    for (size_t i = 0; i < n && i < SCHAKEL_POLICY_WARNINGS_SHOWN; i++) {
        char text[SCHAKEL_POLICY_WARNING_LEN];
        policy_warning_format(policy, i, text, sizeof text);
        admin_json_string(out, text);
    }
    admin_json_array_end(out);
}

static int admin_reload(admin_t *admin, broker_t *b, const admin_request_t *request,
                        admin_json_t *out, char *err, size_t errlen)
{
    (void)admin;
    char old_hash[65], by[SCHAKEL_MAX_PRINCIPAL_LEN + 16];
    snprintf(old_hash, sizeof old_hash, "%s", policy_hash_hex(b->policy));
    snprintf(by, sizeof by, "admin:%s", request->principal);
    int dropped = broker_reload_policy(b, by, err, errlen);
    admin_json_object_begin(out);
    admin_json_member_string(out, "policy", b->policy_path);
    if (dropped < 0) {
        admin_json_member_string(out, "kept_hash", old_hash);
    } else {
        /* The asker reloaded its own key away: answered, then refused
         * (admin_still_operator); with no operator left only SIGHUP
         * reloads. */
        int removed_self = !admin_still_operator(b, request->principal, request->key);
        if (removed_self) {
            char operators[24];
            snprintf(operators, sizeof operators, "%zu", b->reload.operators);
            log_event(LOG_WARN, "admin.operator_removed_itself", "principal", request->principal,
                      "operators", operators, "effect",
                      "answered; its next request is refused NOT_PERMITTED", NULL);
        }
        admin_json_member_string(out, "old_hash", old_hash);
        admin_json_member_string(out, "new_hash", policy_hash_hex(b->policy));
        admin_json_member_bool(out, "changed", strcmp(old_hash, policy_hash_hex(b->policy)) != 0);
        admin_json_member_int(out, "sessions_dropped", dropped);
        admin_json_member_uint(out, "operators", b->reload.operators);
        admin_json_member_bool(out, "removed_self", removed_self);
        admin_json_member_int(out, "cases_unreachable", b->reload.cases_unreachable);
        admin_reload_warnings(b->policy, out);
    }
    /* the config or policy on disk would not start the broker (for a
     * refused policy, the same error) */
    if (b->reload.start_fails)
        admin_json_member_string(out, "next_start_error", b->reload.start_error);
    /* the next start reads another policy file than the one reloaded */
    if (b->reload.next_policy[0] != '\0')
        admin_json_member_string(out, "next_start_policy", b->reload.next_policy);
    admin_json_object_end(out);
    return dropped < 0 ? -1 : 0;
}

/* ------------------------------------------------------------------ pending */

static int admin_pending(admin_t *admin, broker_t *b, const admin_request_t *request,
                         admin_json_t *out, char *err, size_t errlen)
{
    (void)admin;
    return admin_pending_run(b, request->args, request->n_args, out, err, errlen);
}
