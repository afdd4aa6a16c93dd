/*
 * caseview.c — cases as libschakel hands them out: CaseSummary and
 * CaseEvent copied into the public structs, linked signals unpacked, and
 * the public free functions of case lists, case views and events.
 *
 * Trusts the broker's messages only as far as the codec checked them
 * (wire_decode_frame / wire_decode_case_event); checks the rest (states,
 * kinds, UTF-8 again, the linked signal). Returns CASEVIEW_BAD or
 * CASEVIEW_NOMEM, never aborts.
 */
#include "caseview.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "schakel_limits.h"
#include "syntax.h"

static const char *const caseview_kind_names[] = {
    [SCHAKEL_CASE_EVENT_OPENED] = "opened",
    [SCHAKEL_CASE_EVENT_INVITED] = "invited",
    [SCHAKEL_CASE_EVENT_JOINED] = "joined",
    [SCHAKEL_CASE_EVENT_DECLINED] = "declined",
    [SCHAKEL_CASE_EVENT_LEFT] = "left",
    [SCHAKEL_CASE_EVENT_NOTE] = "note",
    [SCHAKEL_CASE_EVENT_ATTACHMENT] = "attachment",
    [SCHAKEL_CASE_EVENT_CLOSED] = "closed",
    [SCHAKEL_CASE_EVENT_REOPENED] = "reopened",
    [SCHAKEL_CASE_EVENT_SIGNAL_LINKED] = "signal_linked",
};

const char *schakel_case_event_kind_name(int kind)
{
    if (kind <= SCHAKEL_CASE_EVENT_NONE || kind > SCHAKEL_CASE_EVENT_SIGNAL_LINKED)
        return "unknown";
    return caseview_kind_names[kind];
}

/* ------------------------------------------------------------------ copying */

/* Copy a string (NULL stays NULL) after checking its UTF-8 once more. */
static int caseview_text(const char *in, char **out)
{
    *out = NULL;
    if (in == NULL)
        return CASEVIEW_OK;
    size_t len = strlen(in);
    if (!syntax_is_utf8((const uint8_t *)in, len))
        return CASEVIEW_BAD;
    *out = malloc(len + 1);
    if (*out == NULL)
        return CASEVIEW_NOMEM;
    memcpy(*out, in, len + 1);
    return CASEVIEW_OK;
}

static int caseview_texts(char **in, size_t n, char ***out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    if (n == 0)
        return CASEVIEW_OK;
    *out = calloc(n, sizeof **out);
    if (*out == NULL)
        return CASEVIEW_NOMEM;
    *n_out = n;
    for (size_t i = 0; i < n; i++) {
        int rc = caseview_text(in[i], &(*out)[i]);
        if (rc != CASEVIEW_OK)
            return rc;
    }
    return CASEVIEW_OK;
}

static void caseview_free_texts(char **texts, size_t n)
{
    for (size_t i = 0; texts != NULL && i < n; i++)
        wire_free_text(texts[i]);
    free(texts);
}

static int caseview_case_id(const char *in, char out[SCHAKEL_CASE_ID_SIZE])
{
    if (!syntax_is_case_id(in))
        return CASEVIEW_BAD;
    snprintf(out, SCHAKEL_CASE_ID_SIZE, "%s", in);
    return CASEVIEW_OK;
}

int caseview_copy_summary(schakel_case_summary_t *out, const Schakel__CaseSummary *in)
{
    if (caseview_case_id(in->case_id, out->case_id) != CASEVIEW_OK || in->case_type == NULL ||
        in->lead == NULL || in->state == NULL)
        return CASEVIEW_BAD;
    if (strcmp(in->state, "open") != 0 && strcmp(in->state, "closed") != 0)
        return CASEVIEW_BAD;
    out->closed = strcmp(in->state, "closed") == 0;
    if (in->my_state != NULL && strcmp(in->my_state, "member") != 0 &&
        strcmp(in->my_state, "invited") != 0)
        return CASEVIEW_BAD;
    out->invited = in->my_state != NULL && strcmp(in->my_state, "invited") == 0;
    out->opened_at = in->has_opened_at ? in->opened_at : 0;
    int rc = caseview_text(in->case_type, &out->case_type);
    if (rc == CASEVIEW_OK)
        rc = caseview_text(in->lead, &out->lead);
    if (rc == CASEVIEW_OK)
        rc = caseview_text(in->title, &out->title);
    if (rc == CASEVIEW_OK)
        rc = caseview_texts(in->members, in->n_members, &out->members, &out->n_members);
    return rc;
}

void caseview_clear_summary(schakel_case_summary_t *summary)
{
    wire_free_text(summary->case_type);
    wire_free_text(summary->lead);
    wire_free_text(summary->title);
    caseview_free_texts(summary->members, summary->n_members);
    memset(summary, 0, sizeof *summary);
}

/* The linked signal: reduced to the member's signal fields, so only
 * sender, kind and theme are required (as in a Deliver). */
static int caseview_copy_signal(schakel_case_event_t *out, const ProtobufCBinaryData *bytes)
{
    wire_error_t err;
    Schakel__Signal *s = wire_decode_delivered_signal(bytes->data, bytes->len, &err);
    if (s == NULL)
        return err.reason == SCHAKEL__REASON__INTERNAL_ERROR ? CASEVIEW_NOMEM : CASEVIEW_BAD;
    schakel_linked_signal_t *d = out->signal = calloc(1, sizeof *out->signal);
    int rc = d == NULL ? CASEVIEW_NOMEM : CASEVIEW_OK;
    if (rc == CASEVIEW_OK) {
        struct {
            const char *in;
            char **out;
        } texts[] = {
            {s->sender, &d->sender},
            {s->kind, &d->kind},
            {s->theme, &d->theme},
            {s->area, &d->area},
            {s->subject, &d->subject},
            {s->grounds, &d->grounds},
            {s->case_ref, &d->case_ref},
            {s->summary, &d->summary},
            {s->source_ref, &d->source_ref},
            {s->address != NULL ? s->address->postcode : NULL, &d->postcode},
            {s->address != NULL ? s->address->addition : NULL, &d->addition},
        };
        for (size_t i = 0; rc == CASEVIEW_OK && i < sizeof texts / sizeof texts[0]; i++)
            rc = caseview_text(texts[i].in, texts[i].out);
        if (s->address != NULL && s->address->has_house_number)
            d->house_number = s->address->house_number;
        d->severity = s->has_severity ? (int)s->severity : 0;
        d->observed_at = s->has_observed_at ? s->observed_at : 0;
    }
    wire_signal_free(&s);
    return rc;
}

static int caseview_copy_fields(schakel_case_event_t *out, const Schakel__CaseEvent *in)
{
    if (in->n_fields == 0)
        return CASEVIEW_OK;
    if (in->n_fields > SCHAKEL_MAX_NOTE_FIELDS)
        return CASEVIEW_BAD;
    out->fields = calloc(in->n_fields, sizeof *out->fields);
    if (out->fields == NULL)
        return CASEVIEW_NOMEM;
    out->n_fields = in->n_fields;
    for (size_t i = 0; i < in->n_fields; i++) {
        if (in->fields[i]->name == NULL || in->fields[i]->value == NULL)
            return CASEVIEW_BAD;
        int rc = caseview_text(in->fields[i]->name, &out->fields[i].name);
        if (rc == CASEVIEW_OK)
            rc = caseview_text(in->fields[i]->value, &out->fields[i].value);
        if (rc != CASEVIEW_OK)
            return rc;
    }
    return CASEVIEW_OK;
}

static int caseview_copy_attachment(schakel_case_event_t *out, const Schakel__CaseAttach *in)
{
    if (in->name == NULL || in->media_type == NULL || !in->has_content ||
        in->content.len > SCHAKEL_MAX_ATTACHMENT_BYTES)
        return CASEVIEW_BAD;
    out->has_attachment = 1;
    int rc = caseview_text(in->name, &out->attachment_name);
    if (rc == CASEVIEW_OK)
        rc = caseview_text(in->media_type, &out->attachment_media_type);
    if (rc != CASEVIEW_OK)
        return rc;
    out->attachment = malloc(in->content.len > 0 ? in->content.len : 1);
    if (out->attachment == NULL)
        return CASEVIEW_NOMEM;
    if (in->content.len > 0)
        memcpy(out->attachment, in->content.data, in->content.len);
    out->attachment_len = in->content.len;
    return CASEVIEW_OK;
}

static int caseview_copy_event_texts(schakel_case_event_t *out, const Schakel__CaseEvent *in)
{
    struct {
        const char *in;
        char **out;
    } texts[] = {
        {in->case_type, &out->case_type},
        {in->actor, &out->actor},
        {in->on_behalf_of, &out->on_behalf_of},
        {in->lead, &out->lead},
        {in->partner, &out->partner},
        {in->text, &out->text},
        {in->title, &out->title},
        {in->subject, &out->subject},
        {in->area, &out->area},
        {in->address != NULL ? in->address->postcode : NULL, &out->postcode},
        {in->address != NULL ? in->address->addition : NULL, &out->addition},
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int rc = caseview_text(texts[i].in, texts[i].out);
        if (rc != CASEVIEW_OK)
            return rc;
    }
    if (in->address != NULL && in->address->has_house_number)
        out->house_number = in->address->house_number;
    return CASEVIEW_OK;
}

int caseview_copy_event(schakel_case_event_t *out, const Schakel__CaseEvent *in)
{
    if (caseview_case_id(in->case_id, out->case_id) != CASEVIEW_OK || !in->has_event_seq ||
        in->event_seq == 0 || !in->has_kind || (int)in->kind <= SCHAKEL_CASE_EVENT_NONE ||
        (int)in->kind > SCHAKEL_CASE_EVENT_SIGNAL_LINKED)
        return CASEVIEW_BAD;
    out->event_seq = in->event_seq;
    out->kind = (int)in->kind;
    out->at = in->has_at ? in->at : 0;
    int rc = caseview_copy_event_texts(out, in);
    if (rc == CASEVIEW_OK)
        rc = caseview_texts(in->members, in->n_members, &out->members, &out->n_members);
    if (rc == CASEVIEW_OK)
        rc = caseview_copy_fields(out, in);
    if (rc == CASEVIEW_OK && in->attachment != NULL)
        rc = caseview_copy_attachment(out, in->attachment);
    if (rc == CASEVIEW_OK && in->has_signal)
        rc = caseview_copy_signal(out, &in->signal);
    return rc;
}

static void caseview_free_signal(schakel_linked_signal_t *s)
{
    if (s == NULL)
        return;
    char *texts[] = {s->sender,  s->kind,    s->theme,    s->area,    s->postcode,  s->addition,
                     s->subject, s->grounds, s->case_ref, s->summary, s->source_ref};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        wire_free_text(texts[i]);
    free(s);
}

void caseview_clear_event(schakel_case_event_t *e)
{
    char *texts[] = {e->case_type,
                     e->actor,
                     e->on_behalf_of,
                     e->lead,
                     e->partner,
                     e->text,
                     e->attachment_name,
                     e->attachment_media_type,
                     e->title,
                     e->subject,
                     e->area,
                     e->postcode,
                     e->addition};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        wire_free_text(texts[i]);
    caseview_free_texts(e->members, e->n_members);
    for (size_t i = 0; e->fields != NULL && i < e->n_fields; i++) {
        wire_free_text(e->fields[i].name);
        wire_free_text(e->fields[i].value);
    }
    free(e->fields);
    if (e->attachment != NULL)
        sodium_memzero(e->attachment, e->attachment_len);
    free(e->attachment);
    caseview_free_signal(e->signal);
    memset(e, 0, sizeof *e);
}

/* ------------------------------------------------------------------ deliveries */

schakel_status_t caseview_decode_event(const uint8_t *bytes, size_t len, schakel_case_event_t **out,
                                       char *text, size_t textlen)
{
    wire_error_t err;
    *out = NULL;
    Schakel__CaseEvent *event = wire_decode_case_event(bytes, len, &err);
    if (event == NULL) {
        snprintf(text, textlen, "%s", err.text);
        return err.reason == SCHAKEL__REASON__INTERNAL_ERROR ? SCHAKEL_ERR_NOMEM
                                                             : SCHAKEL_ERR_PROTOCOL;
    }
    schakel_case_event_t *copy = calloc(1, sizeof *copy);
    int rc = copy == NULL ? CASEVIEW_NOMEM : caseview_copy_event(copy, event);
    wire_case_event_free(&event);
    if (rc != CASEVIEW_OK) {
        caseview_event_free(&copy);
        snprintf(text, textlen, "%s",
                 rc == CASEVIEW_NOMEM ? "out of memory"
                                      : "the case event has a field that is not valid (state, "
                                        "field, attachment or linked signal)");
        return rc == CASEVIEW_NOMEM ? SCHAKEL_ERR_NOMEM : SCHAKEL_ERR_PROTOCOL;
    }
    *out = copy;
    return SCHAKEL_OK;
}

void caseview_event_free(schakel_case_event_t **event)
{
    if (event == NULL || *event == NULL)
        return;
    caseview_clear_event(*event);
    free(*event);
    *event = NULL;
}

/* ------------------------------------------------------------------ public frees */

void schakel_case_list_free(schakel_case_list_t **list)
{
    if (list == NULL || *list == NULL)
        return;
    for (size_t i = 0; (*list)->cases != NULL && i < (*list)->n_cases; i++)
        caseview_clear_summary(&(*list)->cases[i]);
    free((*list)->cases);
    free(*list);
    *list = NULL;
}

void schakel_case_view_free(schakel_case_view_t **view)
{
    if (view == NULL || *view == NULL)
        return;
    caseview_clear_summary(&(*view)->summary);
    for (size_t i = 0; (*view)->events != NULL && i < (*view)->n_events; i++)
        caseview_clear_event(&(*view)->events[i]);
    free((*view)->events);
    free(*view);
    *view = NULL;
}
