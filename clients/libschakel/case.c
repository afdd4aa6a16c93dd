/*
 * case.c — libschakel's case functions: each command built as a
 * CaseCommand, checked with the codec's own rules before it leaves,
 * signed like a one-item publish and sent as a CasePublish; the cases we
 * are in and one case's timeline asked with a CaseQuery.
 *
 * Trusts nothing the broker answers: an Accepted must name our command id,
 * one event and a case id (the one asked for); a CaseView must name our
 * request and only the case asked for. A list or timeline larger than one
 * frame comes in pages (CaseView.more), each of which must go on from the
 * last. Returns a schakel_status_t with the client's last error filled;
 * never aborts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "caseview.h"
#include "client_internal.h"
#include "schakel.h"
#include "schakel_limits.h"
#include "syntax.h"
#include "wire.h"

/* ------------------------------------------------------------------ commands */

/* Sign the command bytes and pack the CasePublish frame (caller frees). */
static schakel_status_t case_pack_publish(schakel_client_t *client, const uint8_t command_id[16],
                                          const uint8_t *command, size_t command_len,
                                          uint8_t **frame_out, size_t *frame_len)
{
    uint8_t signed_bytes[64], signature[SCHAKEL_SIGNATURE_BYTES];
    wire_case_signed_bytes(command_id, command, command_len, signed_bytes);
    if (client_sign(client, signed_bytes, sizeof signed_bytes, signature) != 0)
        return client_fail(client, SCHAKEL_ERR_INTERNAL, "cannot sign the case command");
    Schakel__CasePublish publish = SCHAKEL__CASE_PUBLISH__INIT;
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    publish.has_command_id = publish.has_command = publish.has_signature = 1;
    publish.command_id.data = client_lend_bytes(command_id);
    publish.command_id.len = SCHAKEL_MESSAGE_ID_BYTES;
    publish.command.data = client_lend_bytes(command);
    publish.command.len = command_len;
    publish.signature.data = signature;
    publish.signature.len = sizeof signature;
    frame.body_case = SCHAKEL__FRAME__BODY_CASE_PUBLISH;
    frame.case_publish = &publish;
    *frame_out = wire_encode_frame(&frame, frame_len);
    if (*frame_out == NULL)
        return client_fail(client, SCHAKEL_ERR_NOMEM, "out of memory encoding the case command");
    return SCHAKEL_OK;
}

/* The broker's answer to a case command, into *result. */
static schakel_status_t case_take_answer(schakel_client_t *client, const Schakel__Frame *answer,
                                         const char *case_id, schakel_case_result_t *result)
{
    if (answer->body_case == SCHAKEL__FRAME__BODY_REJECTED) {
        client_refused(client, answer->rejected);
        return SCHAKEL_ERR_REFUSED;
    }
    const Schakel__Accepted *accepted = answer->accepted;
    if (accepted->n_items != 1 || !syntax_is_case_id(accepted->case_id) ||
        (case_id != NULL && strcmp(case_id, accepted->case_id) != 0))
        return client_fail(client, SCHAKEL_ERR_PROTOCOL,
                           "broker accepted the case command with %zu events and case id %s%s%s",
                           accepted->n_items,
                           accepted->case_id != NULL && syntax_is_case_id(accepted->case_id)
                               ? accepted->case_id
                               : "(none or malformed)",
                           case_id != NULL ? "; we asked about " : "",
                           case_id != NULL ? case_id : "");
    snprintf(result->case_id, sizeof result->case_id, "%s", accepted->case_id);
    result->seq = accepted->items[0]->seq;
    result->recipients = accepted->items[0]->recipients;
    result->duplicate = accepted->has_duplicate && accepted->duplicate;
    return SCHAKEL_OK;
}

/* Fill in actor and on_behalf_of, check, sign, send, wait, read the answer.
 * `command` holds the operation and (except for open) the case id. */
static schakel_status_t case_run(schakel_client_t *client, Schakel__CaseCommand *command,
                                 const schakel_case_options_t *options,
                                 schakel_case_result_t *result, int timeout_ms)
{
    schakel_case_result_t local;
    if (result == NULL)
        result = &local;
    memset(result, 0, sizeof *result);
    if (timeout_ms <= 0)
        return client_fail(client, SCHAKEL_ERR_USAGE, "a case command needs a positive timeout");
    if (options != NULL && options->command_id != NULL)
        memcpy(result->command_id, options->command_id, SCHAKEL_MESSAGE_ID_BYTES);
    else
        randombytes_buf(result->command_id, SCHAKEL_MESSAGE_ID_BYTES);
    command->actor = client_lend(client_principal(client));
    command->on_behalf_of = options != NULL ? client_lend(options->on_behalf_of) : NULL;
    /* The broker applies the same rules: refusing here saves a round trip
     * and says what is wrong before anything is signed. */
    wire_error_t werr;
    if (wire_validate_case_command(command, &werr) != 0)
        return client_fail(client, SCHAKEL_ERR_USAGE, "case command: %s", werr.text);

    size_t command_len = 0, frame_len = 0;
    uint8_t *bytes = wire_encode_case_command(command, &command_len);
    if (bytes == NULL)
        return client_fail(client, SCHAKEL_ERR_NOMEM, "out of memory encoding the case command");
    uint8_t *frame = NULL;
    schakel_status_t status =
        case_pack_publish(client, result->command_id, bytes, command_len, &frame, &frame_len);
    free(bytes);
    Schakel__Frame *answer = NULL;
    if (status == SCHAKEL_OK)
        status = client_exchange(client, frame, frame_len, result->command_id, 0, "case command",
                                 timeout_ms, &answer);
    free(frame);
    if (status == SCHAKEL_OK)
        status = case_take_answer(client, answer, command->case_id, result);
    wire_frame_free(&answer);
    return status;
}

/* A command on an existing case: its id is checked before anything else. */
static schakel_status_t case_on(schakel_client_t *client, const char *case_id,
                                Schakel__CaseCommand *command,
                                const schakel_case_options_t *options,
                                schakel_case_result_t *result, int timeout_ms)
{
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    if (!syntax_is_case_id(case_id))
        return client_fail(client, SCHAKEL_ERR_USAGE,
                           "'%.40s' is not a case id: \"C-\" and 8 digits, like C-00000042",
                           case_id != NULL ? case_id : "(null)");
    command->case_id = client_lend(case_id);
    return case_run(client, command, options, result, timeout_ms);
}

schakel_status_t schakel_case_open(schakel_client_t *client, const schakel_case_open_t *open,
                                   const schakel_case_options_t *options,
                                   char case_id_out[SCHAKEL_CASE_ID_SIZE],
                                   schakel_case_result_t *result, int timeout_ms)
{
    schakel_case_result_t local;
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    if (open == NULL)
        return client_fail(client, SCHAKEL_ERR_USAGE, "schakel_case_open needs what to open");
    if (result == NULL)
        result = &local;
    Schakel__CaseCommand command = SCHAKEL__CASE_COMMAND__INIT;
    Schakel__CaseOpen op = SCHAKEL__CASE_OPEN__INIT;
    Schakel__Address address = SCHAKEL__ADDRESS__INIT;
    op.case_type = client_lend(open->case_type);
    op.area = client_lend(open->area);
    op.subject = client_lend(open->subject);
    op.title = client_lend(open->title);
    if (open->postcode != NULL || open->house_number != 0 || open->addition != NULL) {
        address.postcode = client_lend(open->postcode);
        address.has_house_number = open->house_number != 0;
        address.house_number = open->house_number;
        address.addition = client_lend(open->addition);
        op.address = &address;
    }
    command.op_case = SCHAKEL__CASE_COMMAND__OP_OPEN;
    command.open = &op;
    schakel_status_t status = case_run(client, &command, options, result, timeout_ms);
    if (case_id_out != NULL)
        snprintf(case_id_out, SCHAKEL_CASE_ID_SIZE, "%s",
                 status == SCHAKEL_OK ? result->case_id : "");
    return status;
}

schakel_status_t schakel_case_invite(schakel_client_t *client, const char *case_id,
                                     const char *partner, const schakel_case_options_t *options,
                                     schakel_case_result_t *result, int timeout_ms)
{
    Schakel__CaseCommand command = SCHAKEL__CASE_COMMAND__INIT;
    Schakel__CaseInvite op = SCHAKEL__CASE_INVITE__INIT;
    op.partner = client_lend(partner);
    command.op_case = SCHAKEL__CASE_COMMAND__OP_INVITE;
    command.invite = &op;
    return case_on(client, case_id, &command, options, result, timeout_ms);
}

static schakel_status_t case_answer(schakel_client_t *client, const char *case_id, int accept,
                                    const schakel_case_options_t *options,
                                    schakel_case_result_t *result, int timeout_ms)
{
    Schakel__CaseCommand command = SCHAKEL__CASE_COMMAND__INIT;
    Schakel__CaseAnswer op = SCHAKEL__CASE_ANSWER__INIT;
    if (accept) {
        command.op_case = SCHAKEL__CASE_COMMAND__OP_ACCEPT;
        command.accept = &op;
    } else {
        command.op_case = SCHAKEL__CASE_COMMAND__OP_DECLINE;
        command.decline = &op;
    }
    return case_on(client, case_id, &command, options, result, timeout_ms);
}

schakel_status_t schakel_case_accept(schakel_client_t *client, const char *case_id,
                                     const schakel_case_options_t *options,
                                     schakel_case_result_t *result, int timeout_ms)
{
    return case_answer(client, case_id, 1, options, result, timeout_ms);
}

schakel_status_t schakel_case_decline(schakel_client_t *client, const char *case_id,
                                      const schakel_case_options_t *options,
                                      schakel_case_result_t *result, int timeout_ms)
{
    return case_answer(client, case_id, 0, options, result, timeout_ms);
}

schakel_status_t schakel_case_leave(schakel_client_t *client, const char *case_id,
                                    const char *partner, const schakel_case_options_t *options,
                                    schakel_case_result_t *result, int timeout_ms)
{
    Schakel__CaseCommand command = SCHAKEL__CASE_COMMAND__INIT;
    Schakel__CaseLeave op = SCHAKEL__CASE_LEAVE__INIT;
    op.partner = client_lend(partner);
    command.op_case = SCHAKEL__CASE_COMMAND__OP_LEAVE;
    command.leave = &op;
    return case_on(client, case_id, &command, options, result, timeout_ms);
}

schakel_status_t schakel_case_note(schakel_client_t *client, const char *case_id, const char *text,
                                   const schakel_note_field_t *fields, size_t n_fields,
                                   const schakel_case_options_t *options,
                                   schakel_case_result_t *result, int timeout_ms)
{
    Schakel__NoteField note_fields[SCHAKEL_MAX_NOTE_FIELDS];
    Schakel__NoteField *pointers[SCHAKEL_MAX_NOTE_FIELDS];
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    if ((fields == NULL && n_fields > 0) || n_fields > SCHAKEL_MAX_NOTE_FIELDS)
        return client_fail(client, SCHAKEL_ERR_USAGE, "a note has at most %u fields (given %zu%s)",
                           SCHAKEL_MAX_NOTE_FIELDS, n_fields,
                           fields == NULL ? ", none passed" : "");
    Schakel__CaseCommand command = SCHAKEL__CASE_COMMAND__INIT;
    Schakel__CaseNote op = SCHAKEL__CASE_NOTE__INIT;
    for (size_t i = 0; i < n_fields; i++) {
        Schakel__NoteField init = SCHAKEL__NOTE_FIELD__INIT;
        note_fields[i] = init;
        note_fields[i].name = client_lend(fields[i].name);
        note_fields[i].value = client_lend(fields[i].value);
        pointers[i] = &note_fields[i];
    }
    op.text = client_lend(text);
    op.n_fields = n_fields;
    op.fields = n_fields > 0 ? pointers : NULL;
    command.op_case = SCHAKEL__CASE_COMMAND__OP_NOTE;
    command.note = &op;
    return case_on(client, case_id, &command, options, result, timeout_ms);
}

schakel_status_t schakel_case_attach(schakel_client_t *client, const char *case_id,
                                     const char *name, const char *media_type,
                                     const uint8_t *content, size_t len,
                                     const schakel_case_options_t *options,
                                     schakel_case_result_t *result, int timeout_ms)
{
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    if (content == NULL && len > 0)
        return client_fail(client, SCHAKEL_ERR_USAGE, "schakel_case_attach needs the content");
    Schakel__CaseCommand command = SCHAKEL__CASE_COMMAND__INIT;
    Schakel__CaseAttach op = SCHAKEL__CASE_ATTACH__INIT;
    op.name = client_lend(name);
    op.media_type = client_lend(media_type);
    op.has_content = 1;
    op.content.data = client_lend_bytes(content);
    op.content.len = len;
    command.op_case = SCHAKEL__CASE_COMMAND__OP_ATTACH;
    command.attach = &op;
    return case_on(client, case_id, &command, options, result, timeout_ms);
}

schakel_status_t schakel_case_close(schakel_client_t *client, const char *case_id,
                                    const char *reason, const schakel_case_options_t *options,
                                    schakel_case_result_t *result, int timeout_ms)
{
    Schakel__CaseCommand command = SCHAKEL__CASE_COMMAND__INIT;
    Schakel__CaseClose op = SCHAKEL__CASE_CLOSE__INIT;
    op.reason = client_lend(reason);
    command.op_case = SCHAKEL__CASE_COMMAND__OP_CLOSE;
    command.close = &op;
    return case_on(client, case_id, &command, options, result, timeout_ms);
}

schakel_status_t schakel_case_reopen(schakel_client_t *client, const char *case_id,
                                     const char *reason, const schakel_case_options_t *options,
                                     schakel_case_result_t *result, int timeout_ms)
{
    Schakel__CaseCommand command = SCHAKEL__CASE_COMMAND__INIT;
    Schakel__CaseReopen op = SCHAKEL__CASE_REOPEN__INIT;
    op.reason = client_lend(reason);
    command.op_case = SCHAKEL__CASE_COMMAND__OP_REOPEN;
    command.reopen = &op;
    return case_on(client, case_id, &command, options, result, timeout_ms);
}

schakel_status_t schakel_case_link(schakel_client_t *client, const char *case_id, uint64_t item_seq,
                                   const schakel_case_options_t *options,
                                   schakel_case_result_t *result, int timeout_ms)
{
    Schakel__CaseCommand command = SCHAKEL__CASE_COMMAND__INIT;
    Schakel__CaseLinkSignal op = SCHAKEL__CASE_LINK_SIGNAL__INIT;
    op.has_item_seq = 1;
    op.item_seq = item_seq;
    command.op_case = SCHAKEL__CASE_COMMAND__OP_LINK_SIGNAL;
    command.link_signal = &op;
    return case_on(client, case_id, &command, options, result, timeout_ms);
}

/* ------------------------------------------------------------------ queries */

/* Ask a CaseQuery (case_id NULL: the list, after after_case_id when not
 * NULL; else that case's timeline after event after_event) and return the
 * CaseView frame. */
static schakel_status_t case_query(schakel_client_t *client, const char *case_id,
                                   const char *after_case_id, uint64_t after_event, int timeout_ms,
                                   Schakel__Frame **view)
{
    uint64_t request_id = 0;
    /* Random, so that the answer to a query given up on is never taken
     * for the answer to this one. Never 0 (absent would look the same). */
    while (request_id == 0)
        randombytes_buf(&request_id, sizeof request_id);
    Schakel__CaseQuery query = SCHAKEL__CASE_QUERY__INIT;
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    query.has_request_id = 1;
    query.request_id = request_id;
    query.case_id = client_lend(case_id);
    query.after_case_id = client_lend(after_case_id);
    query.has_after_event_seq = case_id != NULL && after_event > 0;
    query.after_event_seq = after_event;
    frame.body_case = SCHAKEL__FRAME__BODY_CASE_QUERY;
    frame.case_query = &query;
    size_t len = 0;
    uint8_t *bytes = wire_encode_frame(&frame, &len);
    if (bytes == NULL)
        return client_fail(client, SCHAKEL_ERR_NOMEM, "out of memory encoding the case query");
    schakel_status_t status =
        client_exchange(client, bytes, len, NULL, request_id, "case query", timeout_ms, view);
    free(bytes);
    if (status == SCHAKEL_OK && (*view)->body_case == SCHAKEL__FRAME__BODY_REJECTED) {
        client_refused(client, (*view)->rejected);
        wire_frame_free(view);
        status = SCHAKEL_ERR_REFUSED;
    }
    return status;
}

static schakel_status_t case_copy_failed(schakel_client_t *client, int rc, const char *what)
{
    if (rc == CASEVIEW_NOMEM)
        return client_fail(client, SCHAKEL_ERR_NOMEM, "out of memory copying %s", what);
    return client_fail(client, SCHAKEL_ERR_PROTOCOL, "broker sent %s that is not valid", what);
}

/* What is left of a call's time for its next page; 0 when none. */
static int case_time_left(int64_t deadline)
{
    int64_t left = deadline - client_now_ms();
    return left <= 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
}

/* A query refused UNAVAILABLE is asked again (PROTOCOL 12.6: a policy
 * reload overtook the view, or the broker could not record it: "ask
 * again"): at most CASE_ASKS_AGAIN times a page, after a pause of
 * CASE_ASK_AGAIN_PAUSE_MS doubled each time (50, 100, 200 ms), within the
 * call's time. A reload's refusal is answered at the next ask; a store that
 * stays unwritable is the caller's to wait out, with the refusal. */
#define CASE_ASKS_AGAIN 3
#define CASE_ASK_AGAIN_PAUSE_MS 50

/* One page, as case_query, asked again on UNAVAILABLE as above; `what`
 * names it in the text of a timeout. */
static schakel_status_t case_ask(schakel_client_t *client, const char *case_id,
                                 const char *after_case_id, uint64_t after_event, int64_t deadline,
                                 int timeout_ms, const char *what, Schakel__Frame **view)
{
    for (int again = 0;; again++) {
        int left = case_time_left(deadline);
        if (left == 0)
            return client_fail(client, SCHAKEL_ERR_TIMEOUT, "%s did not come whole within %d ms",
                               what, timeout_ms);
        schakel_status_t status =
            case_query(client, case_id, after_case_id, after_event, left, view);
        if (status != SCHAKEL_ERR_REFUSED ||
            schakel_last_error(client)->reason != SCHAKEL__REASON__UNAVAILABLE ||
            again == CASE_ASKS_AGAIN)
            return status;
        int pause_ms = CASE_ASK_AGAIN_PAUSE_MS << again;
        if (case_time_left(deadline) <= pause_ms)
            return status; /* no time to ask again: the refusal stands */
        status = client_pause(client, pause_ms);
        if (status != SCHAKEL_OK)
            return status;
    }
}

/* Whether the page says more follows; a page that says so must have
 * brought something (else asking again would bring the same). */
static int case_page_more(const Schakel__CaseView *view, size_t brought)
{
    int more = view->has_more && view->more;
    return more && brought == 0 ? CASEVIEW_BAD : more;
}

/* One page of the list appended: cases in id order, each after the last. */
static int case_list_append(schakel_case_list_t *list, const Schakel__CaseView *view)
{
    if (view->n_events > 0)
        return CASEVIEW_BAD;
    if (view->n_cases == 0)
        return CASEVIEW_OK;
    schakel_case_summary_t *grown =
        realloc(list->cases, (list->n_cases + view->n_cases) * sizeof *grown);
    if (grown == NULL)
        return CASEVIEW_NOMEM;
    list->cases = grown;
    for (size_t i = 0; i < view->n_cases; i++) {
        const char *prev = list->n_cases > 0 ? list->cases[list->n_cases - 1].case_id : "";
        if (strcmp(view->cases[i]->case_id, prev) <= 0)
            return CASEVIEW_BAD;
        memset(&list->cases[list->n_cases], 0, sizeof list->cases[0]);
        list->n_cases++;
        int rc = caseview_copy_summary(&list->cases[list->n_cases - 1], view->cases[i]);
        if (rc != CASEVIEW_OK)
            return rc;
    }
    return CASEVIEW_OK;
}

schakel_status_t schakel_case_list(schakel_client_t *client, schakel_case_list_t **out,
                                   int timeout_ms)
{
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    if (out == NULL || timeout_ms <= 0)
        return client_fail(client, SCHAKEL_ERR_USAGE,
                           "schakel_case_list needs an output and a positive timeout");
    *out = NULL;
    schakel_case_list_t *list = calloc(1, sizeof *list);
    if (list == NULL)
        return client_fail(client, SCHAKEL_ERR_NOMEM, "out of memory for a case list");
    int64_t deadline = client_now_ms() + timeout_ms;
    int more = 1, rc = CASEVIEW_OK;
    while (more && rc == CASEVIEW_OK) {
        Schakel__Frame *frame = NULL;
        char after[sizeof list->cases[0].case_id] = "";
        if (list->n_cases > 0)
            snprintf(after, sizeof after, "%s", list->cases[list->n_cases - 1].case_id);
        schakel_status_t status = case_ask(client, NULL, after[0] != '\0' ? after : NULL, 0,
                                           deadline, timeout_ms, "the case list", &frame);
        if (status != SCHAKEL_OK) {
            schakel_case_list_free(&list);
            return status;
        }
        size_t before = list->n_cases;
        rc = case_list_append(list, frame->case_view);
        int page_more = case_page_more(frame->case_view, list->n_cases - before);
        if (rc == CASEVIEW_OK && page_more < 0)
            rc = page_more;
        more = page_more > 0;
        wire_frame_free(&frame);
    }
    if (rc != CASEVIEW_OK) {
        schakel_case_list_free(&list);
        return case_copy_failed(client, rc, "a case list");
    }
    *out = list;
    return SCHAKEL_OK;
}

/* One page of one case appended: that case's summary (kept from the
 * first page), and events of it only, each the one after the last. */
static int case_view_append(schakel_case_view_t *out, const Schakel__CaseView *view,
                            const char *case_id, int first)
{
    if (view->n_cases != 1 || strcmp(view->cases[0]->case_id, case_id) != 0)
        return CASEVIEW_BAD;
    int rc = first ? caseview_copy_summary(&out->summary, view->cases[0]) : CASEVIEW_OK;
    if (rc != CASEVIEW_OK || view->n_events == 0)
        return rc;
    schakel_case_event_t *grown =
        realloc(out->events, (out->n_events + view->n_events) * sizeof *grown);
    if (grown == NULL)
        return CASEVIEW_NOMEM;
    out->events = grown;
    for (size_t i = 0; i < view->n_events; i++) {
        uint64_t prev = out->n_events > 0 ? out->events[out->n_events - 1].event_seq : 0;
        if (strcmp(view->events[i]->case_id, case_id) != 0 || view->events[i]->event_seq <= prev)
            return CASEVIEW_BAD;
        memset(&out->events[out->n_events], 0, sizeof out->events[0]);
        out->n_events++;
        rc = caseview_copy_event(&out->events[out->n_events - 1], view->events[i]);
        if (rc != CASEVIEW_OK)
            return rc;
    }
    return CASEVIEW_OK;
}

schakel_status_t schakel_case_show(schakel_client_t *client, const char *case_id,
                                   schakel_case_view_t **out, int timeout_ms)
{
    if (client == NULL)
        return SCHAKEL_ERR_USAGE;
    if (out == NULL || timeout_ms <= 0)
        return client_fail(client, SCHAKEL_ERR_USAGE,
                           "schakel_case_show needs an output and a positive timeout");
    *out = NULL;
    if (!syntax_is_case_id(case_id))
        return client_fail(client, SCHAKEL_ERR_USAGE,
                           "'%.40s' is not a case id: \"C-\" and 8 digits, like C-00000042",
                           case_id != NULL ? case_id : "(null)");
    schakel_case_view_t *view = calloc(1, sizeof *view);
    if (view == NULL)
        return client_fail(client, SCHAKEL_ERR_NOMEM, "out of memory for a case view");
    int64_t deadline = client_now_ms() + timeout_ms;
    int more = 1, rc = CASEVIEW_OK, first = 1;
    while (more && rc == CASEVIEW_OK) {
        Schakel__Frame *frame = NULL;
        uint64_t after = view->n_events > 0 ? view->events[view->n_events - 1].event_seq : 0;
        schakel_status_t status = case_ask(client, case_id, NULL, after, deadline, timeout_ms,
                                           "the case's timeline", &frame);
        if (status != SCHAKEL_OK) {
            schakel_case_view_free(&view);
            return status;
        }
        size_t before = view->n_events;
        rc = case_view_append(view, frame->case_view, case_id, first);
        first = 0;
        int page_more = case_page_more(frame->case_view, view->n_events - before);
        if (rc == CASEVIEW_OK && page_more < 0)
            rc = page_more;
        more = page_more > 0;
        wire_frame_free(&frame);
    }
    if (rc != CASEVIEW_OK) {
        schakel_case_view_free(&view);
        return case_copy_failed(client, rc, "a case view");
    }
    *out = view;
    return SCHAKEL_OK;
}
