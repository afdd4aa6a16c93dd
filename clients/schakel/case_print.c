/*
 * case_print.c — cases and case events as `schakel` prints them for
 * people: one line of key=value pairs each (values quoted when needed,
 * control characters escaped by cli_field). Used by `case list`, `case
 * show`, `inbox` and `listen`. Writes to stdout only; the caller flushes.
 */
#include "cli.h"
#include "schakel_limits.h"

#include <stdio.h>
#include <string.h>

/* Members joined with ',' (partner ids hold no ','): room for every
 * partner a policy can have; a longer list (not from this broker) is cut
 * on a name, and says how many there are in all. */
static void case_print_list(const char *key, char *const *items, size_t n)
{
    char text[SCHAKEL_MAX_PARTNERS * (SCHAKEL_MAX_ID_LEN + 1) + 32];
    const size_t room = sizeof text - 32; /* the rest for the note of a cut */
    size_t used = 0, shown = 0;
    text[0] = '\0';
    for (; shown < n; shown++) {
        size_t len = strlen(items[shown]) + (shown > 0 ? 1 : 0);
        if (used + len >= room)
            break;
        snprintf(text + used, sizeof text - used, "%s%s", shown > 0 ? "," : "", items[shown]);
        used += len;
    }
    if (shown < n)
        snprintf(text + used, sizeof text - used, "%s...(%zu in all)", shown > 0 ? "," : "", n);
    if (n > 0)
        cli_field(key, text);
}

static void case_print_time(const char *key, int64_t unix_seconds)
{
    char when[40];
    if (unix_seconds == 0)
        return;
    fields_format_time(unix_seconds, when, sizeof when);
    cli_field(key, when);
}

static void case_print_address(const char *key, const char *postcode, uint32_t house_number,
                               const char *addition)
{
    char address[64];
    if (postcode == NULL && house_number == 0)
        return;
    snprintf(address, sizeof address, "%s%s%u%s%s", postcode ? postcode : "", postcode ? " " : "",
             house_number, addition ? " " : "", addition ? addition : "");
    cli_field(key, address);
}

void case_print_summary(const schakel_case_summary_t *c)
{
    printf("case=%s", c->case_id);
    cli_field("state", c->closed ? "closed" : "open");
    cli_field("my_state", c->invited ? "invited" : "member");
    cli_field("type", c->case_type);
    cli_field("lead", c->lead);
    case_print_time("opened", c->opened_at);
    case_print_list("members", c->members, c->n_members);
    cli_field("title", c->title);
}

static void case_print_signal(const schakel_linked_signal_t *s)
{
    cli_field("signal.from", s->sender);
    cli_field("signal.kind", s->kind);
    cli_field("signal.theme", s->theme);
    cli_field("signal.area", s->area);
    case_print_address("signal.address", s->postcode, s->house_number, s->addition);
    cli_field("signal.subject", s->subject);
    cli_field("signal.severity", fields_severity_name(s->severity));
    case_print_time("signal.observed", s->observed_at);
    cli_field("signal.case", s->case_ref);
    cli_field("signal.ref", s->source_ref);
    cli_field("signal.grounds", s->grounds);
    cli_field("signal.summary", s->summary);
}

void case_print_event(const schakel_case_event_t *e)
{
    char number[32], key[96];
    printf("event=%llu", (unsigned long long)e->event_seq);
    case_print_time("at", e->at);
    cli_field("kind", schakel_case_event_kind_name(e->kind));
    cli_field("actor", e->actor);
    cli_field("for", e->on_behalf_of);
    cli_field("partner", e->partner);
    cli_field("title", e->title);
    cli_field("area", e->area);
    case_print_address("address", e->postcode, e->house_number, e->addition);
    cli_field("subject", e->subject);
    cli_field("text", e->text);
    for (size_t i = 0; i < e->n_fields; i++) {
        snprintf(key, sizeof key, "field.%s", e->fields[i].name);
        cli_field(key, e->fields[i].value);
    }
    if (e->has_attachment) {
        cli_field("attachment", e->attachment_name);
        cli_field("media_type", e->attachment_media_type);
        snprintf(number, sizeof number, "%zu", e->attachment_len);
        /* a case view too large for one frame leaves the bytes out */
        cli_field(e->attachment_len > 0 ? "size" : "content",
                  e->attachment_len > 0 ? number : "omitted");
    }
    if (e->signal != NULL)
        case_print_signal(e->signal);
    case_print_list("members", e->members, e->n_members);
}
