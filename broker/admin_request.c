/*
 * admin_request.c — reading the admin endpoint's requests in a turn and
 * checking them: the connection's identity (the ZAP User-Id, still an
 * operator with the key it authenticated with), one frame, an
 * AdminRequest with a request id, a known command and its arguments within
 * the limits; each recorded as it is read, to be run after the commit
 * (admin.c). Trusts nothing from the connection but the User-Id and key
 * libzmq gives; a bad request is refused with a reason code, never fatal.
 */
#include "admin.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <zmq.h>

#include "admin_internal.h"
#include "log.h"
#include "plural.h"
#include "record.h"
#include "syntax.h"

/* The commands; docs/PROTOCOL.md section 11 describes each answer.
 * audit-subject has no run function: it is read in steps over the turns
 * after its request's commit (admin_export_step), and its answer is
 * handed out after the commit of the turn that records the export. */
static const admin_command_t admin_commands[] = {
    {"status", 0, admin_status}, {"partners", 0, admin_partners}, {"rules", 0, admin_rules},
    {"reload", 0, admin_reload}, {"audit-subject", 1, NULL},      {"pending", 3, admin_pending},
};
#define ADMIN_COMMAND_NAMES "status, partners, rules, reload, audit-subject, pending"

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
int admin_still_operator(const broker_t *b, const char *principal, const char *key)
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
