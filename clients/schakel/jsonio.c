/*
 * jsonio.c — JSON in and out of `schakel`: a signal from one input object
 * (field names as in proto/schakel.proto), a delivery, a case or a case
 * event to one output object.
 * Input is checked for types and unknown members (a typo must not silently
 * drop a field); the broker validates the values. Errors are returned as
 * text naming the member, never printed here.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "schakel_limits.h"
#include "syntax.h"

/* A string member, or absent (missing or null). Returns 0 or -1 with err. */
static int jsonio_string(json_t *obj, const char *name, const char **out, char *err, size_t errlen)
{
    json_t *value = json_object_get(obj, name);
    *out = NULL;
    if (value == NULL || json_is_null(value))
        return 0;
    if (!json_is_string(value)) {
        snprintf(err, errlen, "\"%s\" must be a string", name);
        return -1;
    }
    *out = json_string_value(value);
    return 0;
}

static int jsonio_address(json_t *obj, schakel_signal_t *signal, char *err, size_t errlen)
{
    json_t *address = json_object_get(obj, "address");
    if (address == NULL || json_is_null(address))
        return 0;
    if (!json_is_object(address)) {
        snprintf(err, errlen, "\"address\" must be an object {postcode, house_number, addition}");
        return -1;
    }
    const char *key;
    json_t *value;
    json_object_foreach(address, key, value)
    {
        if (strcmp(key, "postcode") != 0 && strcmp(key, "house_number") != 0 &&
            strcmp(key, "addition") != 0) {
            snprintf(err, errlen, "unknown member \"address.%.64s\"", key);
            return -1;
        }
    }
    if (jsonio_string(address, "postcode", &signal->postcode, err, errlen) != 0 ||
        jsonio_string(address, "addition", &signal->addition, err, errlen) != 0)
        return -1;
    json_t *number = json_object_get(address, "house_number");
    if (number != NULL && !json_is_null(number)) {
        if (!json_is_integer(number) || json_integer_value(number) < 1 ||
            json_integer_value(number) > SCHAKEL_MAX_HOUSE_NUMBER) {
            snprintf(err, errlen, "\"address.house_number\" must be a number from 1 to %u",
                     SCHAKEL_MAX_HOUSE_NUMBER);
            return -1;
        }
        signal->house_number = (uint32_t)json_integer_value(number);
    }
    return 0;
}

static int jsonio_severity(json_t *obj, schakel_signal_t *signal, char *err, size_t errlen)
{
    json_t *value = json_object_get(obj, "severity");
    if (value == NULL || json_is_null(value))
        return 0;
    if (json_is_integer(value) && json_integer_value(value) >= SCHAKEL_SEVERITY_LOW &&
        json_integer_value(value) <= SCHAKEL_SEVERITY_CRITICAL) {
        signal->severity = (int)json_integer_value(value);
        return 0;
    }
    if (json_is_string(value) &&
        fields_parse_severity(json_string_value(value), &signal->severity) == 0)
        return 0;
    snprintf(err, errlen, "\"severity\" must be low, medium, high, critical or 1..4");
    return -1;
}

static int jsonio_observed_at(json_t *obj, schakel_signal_t *signal, char *err, size_t errlen)
{
    json_t *value = json_object_get(obj, "observed_at");
    if (value == NULL || json_is_null(value))
        return 0;
    if (json_is_integer(value) && json_integer_value(value) > 0) {
        signal->observed_at = json_integer_value(value);
        return 0;
    }
    if (json_is_string(value) &&
        fields_parse_time(json_string_value(value), &signal->observed_at) == 0)
        return 0;
    snprintf(err, errlen,
             "\"observed_at\" must be Unix seconds or ISO-8601 UTC like \"2026-11-20T14:00:00Z\"");
    return -1;
}

static int jsonio_recipients(json_t *obj, schakel_signal_t *signal, const char ***recipients,
                             char *err, size_t errlen)
{
    json_t *list = json_object_get(obj, "recipients");
    if (list == NULL || json_is_null(list))
        return 0;
    if (!json_is_array(list)) {
        snprintf(err, errlen, "\"recipients\" must be an array of partner ids");
        return -1;
    }
    size_t n = json_array_size(list);
    if (n == 0)
        return 0;
    *recipients = calloc(n, sizeof **recipients);
    if (*recipients == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get(list, i);
        if (!json_is_string(item)) {
            snprintf(err, errlen, "\"recipients\"[%zu] must be a string", i);
            return -1;
        }
        (*recipients)[i] = json_string_value(item);
    }
    signal->recipients = *recipients;
    signal->n_recipients = n;
    return 0;
}

static const char *const jsonio_signal_members[] = {
    "kind",     "theme",   "area",       "address",     "subject",    "grounds",    "case_ref",
    "severity", "summary", "source_ref", "observed_at", "recipients", "message_id", NULL};

static int jsonio_known_members(json_t *obj, char *err, size_t errlen)
{
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value)
    {
        size_t i = 0;
        while (jsonio_signal_members[i] != NULL && strcmp(jsonio_signal_members[i], key) != 0)
            i++;
        if (jsonio_signal_members[i] == NULL) {
            snprintf(err, errlen, "unknown member \"%.64s\"", key);
            return -1;
        }
    }
    return 0;
}

int jsonio_signal_from_json(json_t *obj, schakel_signal_t *signal, const char ***recipients,
                            const char **message_id_hex, char *err, size_t errlen)
{
    memset(signal, 0, sizeof *signal);
    *recipients = NULL;
    *message_id_hex = NULL;
    if (!json_is_object(obj)) {
        snprintf(err, errlen, "expected a JSON object");
        return -1;
    }
    struct {
        const char *name;
        const char **out;
    } strings[] = {
        {"kind", &signal->kind},        {"theme", &signal->theme},
        {"area", &signal->area},        {"subject", &signal->subject},
        {"grounds", &signal->grounds},  {"case_ref", &signal->case_ref},
        {"summary", &signal->summary},  {"source_ref", &signal->source_ref},
        {"message_id", message_id_hex},
    };
    if (jsonio_known_members(obj, err, errlen) != 0)
        return -1;
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
        if (jsonio_string(obj, strings[i].name, strings[i].out, err, errlen) != 0)
            return -1;
    if (jsonio_address(obj, signal, err, errlen) != 0 ||
        jsonio_severity(obj, signal, err, errlen) != 0 ||
        jsonio_observed_at(obj, signal, err, errlen) != 0 ||
        jsonio_recipients(obj, signal, recipients, err, errlen) != 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------ output */

/* Builder that remembers whether any allocation failed. */
typedef struct jsonio_builder {
    json_t *obj;
    int failed;
} jsonio_builder_t;

static void jsonio_put(jsonio_builder_t *b, json_t *parent, const char *name, json_t *value)
{
    if (value == NULL || json_object_set_new(parent, name, value) != 0)
        b->failed = 1;
}

static void jsonio_put_string(jsonio_builder_t *b, json_t *parent, const char *name,
                              const char *text)
{
    if (text != NULL)
        jsonio_put(b, parent, name, json_string(text));
}

static void jsonio_put_signal(jsonio_builder_t *b, const schakel_delivery_t *d)
{
    jsonio_put_string(b, b->obj, "kind", d->kind);
    jsonio_put_string(b, b->obj, "theme", d->theme);
    jsonio_put_string(b, b->obj, "area", d->area);
    if (d->postcode != NULL || d->house_number != 0 || d->addition != NULL) {
        json_t *address = json_object();
        jsonio_put(b, b->obj, "address", address);
        if (address != NULL) {
            jsonio_put_string(b, address, "postcode", d->postcode);
            if (d->house_number != 0)
                jsonio_put(b, address, "house_number", json_integer(d->house_number));
            jsonio_put_string(b, address, "addition", d->addition);
        }
    }
    jsonio_put_string(b, b->obj, "subject", d->subject);
    jsonio_put_string(b, b->obj, "grounds", d->grounds);
    jsonio_put_string(b, b->obj, "case_ref", d->case_ref);
    if (fields_severity_name(d->severity) != NULL)
        jsonio_put_string(b, b->obj, "severity", fields_severity_name(d->severity));
    if (d->observed_at != 0)
        jsonio_put(b, b->obj, "observed_at", json_integer(d->observed_at));
    jsonio_put_string(b, b->obj, "summary", d->summary);
    jsonio_put_string(b, b->obj, "source_ref", d->source_ref);
    if (d->n_recipients > 0) {
        json_t *list = json_array();
        jsonio_put(b, b->obj, "recipients", list);
        for (size_t i = 0; list != NULL && i < d->n_recipients; i++)
            if (json_array_append_new(list, json_string(d->recipients[i])) != 0)
                b->failed = 1;
    }
}

static void jsonio_put_strings(jsonio_builder_t *b, json_t *parent, const char *name,
                               char *const *texts, size_t n)
{
    json_t *list = json_array();
    jsonio_put(b, parent, name, list);
    for (size_t i = 0; list != NULL && i < n; i++)
        if (json_array_append_new(list, json_string(texts[i])) != 0)
            b->failed = 1;
}

static void jsonio_put_address(jsonio_builder_t *b, json_t *parent, const char *postcode,
                               uint32_t house_number, const char *addition)
{
    if (postcode == NULL && house_number == 0 && addition == NULL)
        return;
    json_t *address = json_object();
    jsonio_put(b, parent, "address", address);
    if (address == NULL)
        return;
    jsonio_put_string(b, address, "postcode", postcode);
    if (house_number != 0)
        jsonio_put(b, address, "house_number", json_integer(house_number));
    jsonio_put_string(b, address, "addition", addition);
}

json_t *jsonio_case_summary_to_json(const schakel_case_summary_t *c)
{
    jsonio_builder_t b = {json_object(), 0};
    if (b.obj == NULL)
        return NULL;
    jsonio_put_string(&b, b.obj, "case_id", c->case_id);
    jsonio_put_string(&b, b.obj, "case_type", c->case_type);
    jsonio_put_string(&b, b.obj, "lead", c->lead);
    jsonio_put_string(&b, b.obj, "state", c->closed ? "closed" : "open");
    jsonio_put_string(&b, b.obj, "my_state", c->invited ? "invited" : "member");
    jsonio_put_string(&b, b.obj, "title", c->title);
    jsonio_put(&b, b.obj, "opened_at", json_integer(c->opened_at));
    jsonio_put_strings(&b, b.obj, "members", c->members, c->n_members);
    if (b.failed) {
        json_decref(b.obj);
        return NULL;
    }
    return b.obj;
}

/* The attachment's name, media type, size and bytes (base64, as JSON has
 * no bytes). */
static void jsonio_put_attachment(jsonio_builder_t *b, const schakel_case_event_t *e)
{
    json_t *attachment = json_object();
    jsonio_put(b, b->obj, "attachment", attachment);
    if (attachment == NULL)
        return;
    jsonio_put_string(b, attachment, "name", e->attachment_name);
    jsonio_put_string(b, attachment, "media_type", e->attachment_media_type);
    jsonio_put(b, attachment, "size", json_integer((json_int_t)e->attachment_len));
    if (e->attachment_len == 0) { /* left out of a case view too large for one frame */
        jsonio_put(b, attachment, "content_omitted", json_true());
        return;
    }
    size_t len = sodium_base64_encoded_len(e->attachment_len, sodium_base64_VARIANT_ORIGINAL);
    char *base64 = malloc(len);
    if (base64 == NULL) {
        b->failed = 1;
        return;
    }
    sodium_bin2base64(base64, len, e->attachment, e->attachment_len,
                      sodium_base64_VARIANT_ORIGINAL);
    jsonio_put_string(b, attachment, "content_base64", base64);
    free(base64);
}

static void jsonio_put_linked_signal(jsonio_builder_t *b, const schakel_linked_signal_t *s)
{
    json_t *signal = json_object();
    jsonio_put(b, b->obj, "signal", signal);
    if (signal == NULL)
        return;
    jsonio_put_string(b, signal, "sender", s->sender);
    jsonio_put_string(b, signal, "kind", s->kind);
    jsonio_put_string(b, signal, "theme", s->theme);
    jsonio_put_string(b, signal, "area", s->area);
    jsonio_put_address(b, signal, s->postcode, s->house_number, s->addition);
    jsonio_put_string(b, signal, "subject", s->subject);
    jsonio_put_string(b, signal, "grounds", s->grounds);
    jsonio_put_string(b, signal, "case_ref", s->case_ref);
    if (fields_severity_name(s->severity) != NULL)
        jsonio_put_string(b, signal, "severity", fields_severity_name(s->severity));
    if (s->observed_at != 0)
        jsonio_put(b, signal, "observed_at", json_integer(s->observed_at));
    jsonio_put_string(b, signal, "summary", s->summary);
    jsonio_put_string(b, signal, "source_ref", s->source_ref);
}

json_t *jsonio_case_event_to_json(const schakel_case_event_t *e)
{
    jsonio_builder_t b = {json_object(), 0};
    if (b.obj == NULL)
        return NULL;
    jsonio_put_string(&b, b.obj, "case_id", e->case_id);
    jsonio_put_string(&b, b.obj, "case_type", e->case_type);
    jsonio_put(&b, b.obj, "event_seq", json_integer((json_int_t)e->event_seq));
    jsonio_put_string(&b, b.obj, "kind", schakel_case_event_kind_name(e->kind));
    jsonio_put_string(&b, b.obj, "actor", e->actor);
    jsonio_put_string(&b, b.obj, "on_behalf_of", e->on_behalf_of);
    jsonio_put(&b, b.obj, "at", json_integer(e->at));
    jsonio_put_string(&b, b.obj, "lead", e->lead);
    jsonio_put_strings(&b, b.obj, "members", e->members, e->n_members);
    jsonio_put_string(&b, b.obj, "partner", e->partner);
    jsonio_put_string(&b, b.obj, "title", e->title);
    jsonio_put_string(&b, b.obj, "area", e->area);
    jsonio_put_address(&b, b.obj, e->postcode, e->house_number, e->addition);
    jsonio_put_string(&b, b.obj, "subject", e->subject);
    jsonio_put_string(&b, b.obj, "text", e->text);
    if (e->n_fields > 0) {
        json_t *fields = json_object();
        jsonio_put(&b, b.obj, "fields", fields);
        for (size_t i = 0; fields != NULL && i < e->n_fields; i++)
            jsonio_put_string(&b, fields, e->fields[i].name, e->fields[i].value);
    }
    if (e->has_attachment)
        jsonio_put_attachment(&b, e);
    if (e->signal != NULL)
        jsonio_put_linked_signal(&b, e->signal);
    if (b.failed) {
        json_decref(b.obj);
        return NULL;
    }
    return b.obj;
}

json_t *jsonio_delivery_to_json(const schakel_delivery_t *d)
{
    char message_id[2 * SCHAKEL_MESSAGE_ID_BYTES + 1];
    jsonio_builder_t b = {json_object(), 0};
    if (b.obj == NULL)
        return NULL;
    syntax_hex(d->message_id, sizeof d->message_id, message_id);
    jsonio_put(&b, b.obj, "seq", json_integer((json_int_t)d->seq));
    jsonio_put_string(&b, b.obj, "message_id", message_id);
    jsonio_put(&b, b.obj, "item_index", json_integer(d->item_index));
    jsonio_put(&b, b.obj, "item_seq", json_integer((json_int_t)d->item_seq));
    jsonio_put_string(&b, b.obj, "sender", d->sender);
    jsonio_put_string(&b, b.obj, "sender_partner", d->sender_partner);
    jsonio_put_string(&b, b.obj, "rule_id", d->rule_id);
    jsonio_put_string(&b, b.obj, "rule_hash", d->rule_hash);
    jsonio_put_string(&b, b.obj, "purpose", d->purpose);
    jsonio_put_string(&b, b.obj, "legal_basis", d->legal_basis);
    jsonio_put(&b, b.obj, "accepted_at", json_integer(d->accepted_at));
    jsonio_put(&b, b.obj, "expires_at", json_integer(d->expires_at));
    jsonio_put(&b, b.obj, "redelivery", json_boolean(d->redelivery));
    if (d->is_case_event && d->case_event != NULL)
        jsonio_put(&b, b.obj, "case_event", jsonio_case_event_to_json(d->case_event));
    else
        jsonio_put_signal(&b, d);
    if (b.failed) {
        json_decref(b.obj);
        return NULL;
    }
    return b.obj;
}
