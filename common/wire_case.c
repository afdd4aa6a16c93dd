/*
 * wire_case.c — the case part of the frame codec: decoding and validating
 * a CaseCommand (the signed bytes of a CasePublish), decoding a CaseEvent
 * as a client receives it, the signed bytes of a CasePublish, and packing.
 *
 * Trusts nothing it decodes (the budgeted, checked unpack of wire.c).
 * Every refusal returns NULL or -1 with a wire_error_t holding a
 * Schakel__Reason and a text naming the field and the rule broken, never
 * the field's contents.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schakel_limits.h"
#include "syntax.h"
#include "wire.h"
#include "wire_internal.h"

#define WIRE_CASE_MEDIA_TYPE_MAX 255u /* type "/" subtype, 127 each (RFC 6838) */

/* Names the policy gives a meaning of its own in a membership rule's
 * `fields` (docs/POLICY.md "Case types"); a note field may not take them. */
static const char *const reserved_note_fields[] = {"text", "subject", "address", "attachments",
                                                   NULL};

int wire_is_reserved_note_field(const char *name)
{
    for (size_t i = 0; name != NULL && reserved_note_fields[i] != NULL; i++)
        if (strcmp(name, reserved_note_fields[i]) == 0)
            return 1;
    return 0;
}

/* ------------------------------------------------------------ frame bodies */

/* A CasePublish: the signed envelope of one CaseCommand (docs/PROTOCOL.md
 * "Cases"). The command's contents are checked by wire_decode_case_command,
 * in the broker's case path, after the signature has verified. */
int wire_check_case_publish(const Schakel__CasePublish *publish, wire_error_t *err)
{
    if (wire_check_id_field(&publish->command_id, publish->has_command_id, "case_publish",
                            "command_id", err) < 0)
        return -1;
    if (!publish->has_command || publish->command.len == 0) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "case_publish carries no command");
        return -1;
    }
    if (publish->command.len > wire_get_limits().max_frame_bytes) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                       "case_publish command is %zu bytes; at most %u are allowed",
                       publish->command.len, wire_get_limits().max_frame_bytes);
        return -1;
    }
    if (!publish->has_signature || publish->signature.len != SCHAKEL_SIGNATURE_BYTES) {
        wire_error_set(err, SCHAKEL__REASON__BAD_SIGNATURE,
                       publish->has_signature
                           ? "case_publish signature is not %u bytes"
                           : "case_publish carries no signature (%u bytes expected)",
                       SCHAKEL_SIGNATURE_BYTES);
        return -1;
    }
    return 0;
}

int wire_check_case_query(const Schakel__CaseQuery *query, wire_error_t *err)
{
    if (query->case_id != NULL && !syntax_is_case_id(query->case_id)) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                       "case_query case_id is not a case id (C- and 8 digits)");
        return -1;
    }
    if (query->case_id != NULL && query->after_case_id != NULL) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                       "case_query after_case_id pages the list: not with a case_id");
        return -1;
    }
    if (query->case_id == NULL && query->has_after_event_seq) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                       "case_query after_event_seq pages a timeline: only with a case_id");
        return -1;
    }
    if (query->after_case_id != NULL && !syntax_is_case_id(query->after_case_id)) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                       "case_query after_case_id is not a case id (C- and 8 digits)");
        return -1;
    }
    return 0;
}

/* What a client relies on in an event the broker sent: which case, where
 * in its timeline, and what happened. Everything else may be filtered out. */
int wire_check_case_event(const Schakel__CaseEvent *event, const char *what, wire_error_t *err)
{
    if (!syntax_is_case_id(event->case_id)) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "%s has no valid case_id", what);
        return -1;
    }
    if (!event->has_event_seq || event->event_seq == 0) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "%s has no event_seq (from 1)", what);
        return -1;
    }
    if (!event->has_kind || event->kind == SCHAKEL__CASE_EVENT_KIND__CASE_EVENT_NONE) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "%s has no kind", what);
        return -1;
    }
    return 0;
}

int wire_check_case_view(const Schakel__CaseView *view, wire_error_t *err)
{
    for (size_t i = 0; i < view->n_cases; i++) {
        if (!syntax_is_case_id(view->cases[i]->case_id)) {
            wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE,
                           "case_view cases[%zu] has no valid case_id", i);
            return -1;
        }
    }
    for (size_t i = 0; i < view->n_events; i++)
        if (wire_check_case_event(view->events[i], "case_view event", err) < 0)
            return -1;
    return 0;
}

/* ------------------------------------------------------------ field helpers */

/* A mandatory string of class `cls`: missing is INVALID_MESSAGE. */
static int case_required(const char *value, const char *name, size_t max_len,
                         enum wire_text_class cls, Schakel__Reason reason, wire_error_t *err)
{
    if (value == NULL) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "case command has no %s", name);
        return -1;
    }
    return wire_check_text(value, name, max_len, cls, reason, err);
}

/* A string checked further by a syntax predicate; NULL passes when optional. */
static int case_token(const char *value, const char *name, int mandatory,
                      int (*is_valid)(const char *), Schakel__Reason reason, const char *rule,
                      wire_error_t *err)
{
    if (value == NULL && !mandatory)
        return 0;
    if (case_required(value, name, SCHAKEL_MAX_PRINCIPAL_LEN, WIRE_TEXT_TOKEN, reason, err) < 0)
        return -1;
    if (!is_valid(value)) {
        wire_error_set(err, reason, "%s %s", name, rule);
        return -1;
    }
    return 0;
}

static int case_partner(const char *value, const char *name, int mandatory, wire_error_t *err)
{
    return case_token(value, name, mandatory, syntax_is_id_token, SCHAKEL__REASON__INVALID_FIELD,
                      "is not a partner id ([a-z0-9][a-z0-9._-]{0,63})", err);
}

/* --------------------------------------------------------------- operations */

static int case_check_open(const Schakel__CaseOpen *open, wire_error_t *err)
{
    if (case_token(open->case_type, "open.case_type", 1, syntax_is_id_token,
                   SCHAKEL__REASON__INVALID_FIELD,
                   "is not a case type id ([a-z0-9][a-z0-9._-]{0,63})", err) < 0)
        return -1;
    if (case_token(open->area, "open.area", 1, syntax_is_area_code, SCHAKEL__REASON__INVALID_AREA,
                   "is not a CBS code (GM + 4 digits, WK + 6 or BU + 8 positions)", err) < 0)
        return -1;
    if (open->address != NULL && wire_check_address(open->address, err) < 0)
        return -1;
    if (open->subject != NULL) {
        if (wire_check_text(open->subject, "open.subject", SCHAKEL_MAX_SUBJECT_LEN, WIRE_TEXT_TOKEN,
                            SCHAKEL__REASON__INVALID_FIELD, err) < 0)
            return -1;
        if (!syntax_is_pseudonym(open->subject)) {
            wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                           "open.subject must be a pseudonym, never a BSN (%u..%u of "
                           "[A-Za-z0-9._:-], not all digits)",
                           SCHAKEL_MIN_SUBJECT_LEN, SCHAKEL_MAX_SUBJECT_LEN);
            return -1;
        }
    }
    if (open->title != NULL &&
        wire_check_text(open->title, "open.title", SCHAKEL_MAX_CASE_TITLE_LEN, WIRE_TEXT_PRINTABLE,
                        SCHAKEL__REASON__INVALID_FIELD, err) < 0)
        return -1;
    return 0;
}

/* One field of a note: an id token that the policy does not reserve, and
 * a value of prose. n <= SCHAKEL_MAX_NOTE_FIELDS, so the duplicate check
 * is pairwise. */
static int case_check_note_field(const Schakel__CaseNote *note, size_t i, wire_error_t *err)
{
    const Schakel__NoteField *field = note->fields[i];
    char name[48];
    snprintf(name, sizeof name, "note.fields[%zu].name", i);
    if (case_token(field->name, name, 1, syntax_is_id_token, SCHAKEL__REASON__INVALID_FIELD,
                   "is not a field name ([a-z0-9][a-z0-9._-]{0,63})", err) < 0)
        return -1;
    if (wire_is_reserved_note_field(field->name)) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                       "%s \"%s\" is reserved (text, subject, address, attachments)", name,
                       field->name);
        return -1;
    }
    for (size_t j = 0; j < i; j++) {
        if (strcmp(field->name, note->fields[j]->name) == 0) {
            wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                           "%s repeats note.fields[%zu].name \"%s\"", name, j, field->name);
            return -1;
        }
    }
    snprintf(name, sizeof name, "note.fields[%zu].value", i);
    return case_required(field->value, name, SCHAKEL_MAX_NOTE_FIELD_LEN, WIRE_TEXT_PROSE,
                         SCHAKEL__REASON__INVALID_FIELD, err);
}

static int case_check_note(const Schakel__CaseNote *note, wire_error_t *err)
{
    if (note->text == NULL && note->n_fields == 0) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "note has neither text nor fields");
        return -1;
    }
    if (note->text != NULL &&
        wire_check_text(note->text, "note.text", SCHAKEL_MAX_NOTE_TEXT_LEN, WIRE_TEXT_PROSE,
                        SCHAKEL__REASON__INVALID_FIELD, err) < 0)
        return -1;
    if (note->n_fields > SCHAKEL_MAX_NOTE_FIELDS) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                       "note.fields has %zu entries; at most %u are allowed", note->n_fields,
                       SCHAKEL_MAX_NOTE_FIELDS);
        return -1;
    }
    for (size_t i = 0; i < note->n_fields; i++)
        if (case_check_note_field(note, i, err) < 0)
            return -1;
    return 0;
}

/* A file name as it will be offered to a caseworker's disk: one name, no
 * path (neither '/' nor '\'), not "." or "..". */
static int case_check_attachment_name(const char *name, wire_error_t *err)
{
    if (case_required(name, "attach.name", SCHAKEL_MAX_ATTACHMENT_NAME_LEN, WIRE_TEXT_PRINTABLE,
                      SCHAKEL__REASON__INVALID_FIELD, err) < 0)
        return -1;
    if (strchr(name, '/') != NULL || strchr(name, '\\') != NULL || strcmp(name, ".") == 0 ||
        strcmp(name, "..") == 0) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                       "attach.name must be a file name without a path ('/', '\\', '.', '..')");
        return -1;
    }
    return 0;
}

static int case_check_attach(const Schakel__CaseAttach *attach, wire_error_t *err)
{
    if (case_check_attachment_name(attach->name, err) < 0)
        return -1;
    if (case_required(attach->media_type, "attach.media_type", WIRE_CASE_MEDIA_TYPE_MAX,
                      WIRE_TEXT_TOKEN, SCHAKEL__REASON__INVALID_FIELD, err) < 0)
        return -1;
    if (!syntax_is_media_type(attach->media_type)) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                       "attach.media_type is not a media type without parameters "
                       "(type/subtype, e.g. application/pdf)");
        return -1;
    }
    if (!attach->has_content) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "case command has no attach.content");
        return -1;
    }
    if (attach->content.len == 0 || attach->content.len > SCHAKEL_MAX_ATTACHMENT_BYTES) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                       "attach.content is %zu bytes; an attachment must be 1..%u bytes",
                       attach->content.len, SCHAKEL_MAX_ATTACHMENT_BYTES);
        return -1;
    }
    return 0;
}

static int case_check_reason(const char *reason, const char *name, int mandatory, wire_error_t *err)
{
    if (reason == NULL && !mandatory)
        return 0;
    return case_required(reason, name, SCHAKEL_MAX_CASE_REASON_LEN, WIRE_TEXT_PROSE,
                         SCHAKEL__REASON__INVALID_FIELD, err);
}

static int case_check_operation(const Schakel__CaseCommand *command, wire_error_t *err)
{
    switch (command->op_case) {
    case SCHAKEL__CASE_COMMAND__OP_OPEN:
        return case_check_open(command->open, err);
    case SCHAKEL__CASE_COMMAND__OP_INVITE:
        return case_partner(command->invite->partner, "invite.partner", 1, err);
    case SCHAKEL__CASE_COMMAND__OP_ACCEPT:
    case SCHAKEL__CASE_COMMAND__OP_DECLINE:
        return 0;
    case SCHAKEL__CASE_COMMAND__OP_LEAVE:
        return case_partner(command->leave->partner, "leave.partner", 0, err);
    case SCHAKEL__CASE_COMMAND__OP_NOTE:
        return case_check_note(command->note, err);
    case SCHAKEL__CASE_COMMAND__OP_ATTACH:
        return case_check_attach(command->attach, err);
    case SCHAKEL__CASE_COMMAND__OP_CLOSE:
        return case_check_reason(command->close->reason, "close.reason", 1, err);
    case SCHAKEL__CASE_COMMAND__OP_REOPEN:
        return case_check_reason(command->reopen->reason, "reopen.reason", 0, err);
    case SCHAKEL__CASE_COMMAND__OP_LINK_SIGNAL:
        if (!command->link_signal->has_item_seq) {
            wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE,
                           "case command has no link_signal.item_seq");
            return -1;
        }
        if (command->link_signal->item_seq == 0) {
            wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                           "link_signal.item_seq is 0; item seqs start at 1");
            return -1;
        }
        return 0;
    default:
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE,
                       "case command names no operation (open, invite, accept, decline, leave, "
                       "note, attach, close, reopen or link_signal)");
        return -1;
    }
}

/* The broker assigns the id of a new case; every other operation names one. */
static int case_check_case_id(const Schakel__CaseCommand *command, wire_error_t *err)
{
    if (command->op_case == SCHAKEL__CASE_COMMAND__OP_OPEN) {
        if (command->case_id != NULL) {
            wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                           "an open names no case_id: the broker assigns it");
            return -1;
        }
        return 0;
    }
    return case_token(command->case_id, "case_id", 1, syntax_is_case_id,
                      SCHAKEL__REASON__INVALID_FIELD, "is not a case id (C- and 8 digits)", err);
}

int wire_validate_case_command(const Schakel__CaseCommand *command, wire_error_t *err)
{
    wire_error_reset(err);
    if (command == NULL) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "no case command");
        return -1;
    }
    if (case_token(command->actor, "actor", 1, syntax_is_principal_id,
                   SCHAKEL__REASON__INVALID_FIELD, "is not a principal id (partner/name)", err) < 0)
        return -1;
    if (case_partner(command->on_behalf_of, "on_behalf_of", 0, err) < 0)
        return -1;
    /* The operation first: without it, whether case_id belongs is unknown. */
    if (command->op_case == SCHAKEL__CASE_COMMAND__OP__NOT_SET)
        return case_check_operation(command, err);
    if (case_check_case_id(command, err) < 0)
        return -1;
    return case_check_operation(command, err);
}

Schakel__CaseCommand *wire_decode_case_command(const uint8_t *buf, size_t len, wire_error_t *err)
{
    wire_error_reset(err);
    if (len == 0 || buf == NULL) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "case command is empty");
        return NULL;
    }
    uint32_t max = wire_get_limits().max_frame_bytes;
    if (len > max) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                       "case command is %zu bytes; at most %u are allowed", len, max);
        return NULL;
    }
    ProtobufCMessage *message =
        wire_unpack_checked(&schakel__case_command__descriptor, buf, len, "case command", err);
    if (message == NULL)
        return NULL;
    Schakel__CaseCommand *command = (Schakel__CaseCommand *)message;
    if (wire_validate_case_command(command, err) < 0) {
        wire_case_command_free(&command);
        return NULL;
    }
    return command;
}

void wire_case_command_free(Schakel__CaseCommand **command)
{
    if (command == NULL || *command == NULL)
        return;
    wire_message_free(&(*command)->base);
    *command = NULL;
}

uint8_t *wire_encode_case_command(const Schakel__CaseCommand *command, size_t *len)
{
    return command != NULL ? wire_pack_message(&command->base, len) : NULL;
}

/* ------------------------------------------------------------------ signing */

void wire_case_signed_bytes(const uint8_t command_id[16], const uint8_t *command, size_t len,
                            uint8_t out[64])
{
    ProtobufCBinaryData item;
    uint8_t root[32];
    /* The item is only read; protobuf-c's struct has no const member. */
    memcpy(&item.data, &command, sizeof item.data);
    item.len = len;
    wire_items_root(&item, 1, root);
    wire_signed_bytes(command_id, root, out);
}

void wire_case_publish_hash(const Schakel__CasePublish *case_publish, uint8_t out[32])
{
    Schakel__Publish publish = SCHAKEL__PUBLISH__INIT;
    ProtobufCBinaryData item = case_publish->command;
    publish.has_message_id = case_publish->has_command_id;
    publish.message_id = case_publish->command_id;
    publish.n_items = 1;
    publish.items = &item;
    publish.has_signature = case_publish->has_signature;
    publish.signature = case_publish->signature;
    wire_publish_hash(&publish, out);
}

/* ------------------------------------------------------------------- events */

Schakel__CaseEvent *wire_decode_case_event(const uint8_t *buf, size_t len, wire_error_t *err)
{
    wire_error_reset(err);
    if (len == 0 || buf == NULL) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_MESSAGE, "case event is empty");
        return NULL;
    }
    if (len > SCHAKEL_MAX_FRAME_BYTES) {
        wire_error_set(err, SCHAKEL__REASON__INVALID_FIELD,
                       "case event is %zu bytes; at most %u are allowed", len,
                       SCHAKEL_MAX_FRAME_BYTES);
        return NULL;
    }
    ProtobufCMessage *message =
        wire_unpack_checked(&schakel__case_event__descriptor, buf, len, "case event", err);
    if (message == NULL)
        return NULL;
    Schakel__CaseEvent *event = (Schakel__CaseEvent *)message;
    if (wire_check_case_event(event, "case event", err) < 0)
        wire_case_event_free(&event);
    return event;
}

void wire_case_event_free(Schakel__CaseEvent **event)
{
    if (event == NULL || *event == NULL)
        return;
    wire_message_free(&(*event)->base);
    *event = NULL;
}

uint8_t *wire_encode_case_event(const Schakel__CaseEvent *event, size_t *len)
{
    return event != NULL ? wire_pack_message(&event->base, len) : NULL;
}
