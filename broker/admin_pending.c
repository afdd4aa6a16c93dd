/*
 * admin_pending.c — `pending PRINCIPAL [after=SEQ] [limit=N]`: a page of
 * one principal's mailbox, oldest first, each delivery with the state the
 * broker knows it in (waiting, in flight, expired, revoked, withheld, set
 * aside). Runs after the request's record committed (admin.c).
 *
 * Trusts the policy in force and the broker's own push state; reads the
 * store's clear columns only (store_mailbox_list opens no body), so the
 * answer holds nothing of a signal's or case's content. Refusals (a
 * missing, unknown or operator principal, a bad argument, a store error)
 * are -1 with a specific text; nothing is changed either way.
 */
#include "admin_pending.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "broker.h"
#include "syntax.h"

/* What the request asks for, once its arguments are read. */
typedef struct pending_ask {
    const policy_principal_t *principal;
    uint64_t after;
    size_t limit;
} pending_ask_t;

/* The page being written (store_mailbox_list's callback). */
typedef struct pending_page {
    broker_t *b;
    const char *principal;
    const receiver_t *receiver; /* NULL: it never asked to receive since the start */
    admin_json_t *out;
    size_t limit;
    size_t listed;
    uint64_t last_seq;
    int more; /* a row past the limit exists */
} pending_page_t;

/* "after=SEQ" or "limit=N" into ask; -1 with err filled otherwise. */
static int pending_option(const char *arg, size_t index, pending_ask_t *ask, int seen[2], char *err,
                          size_t errlen)
{
    long long value = 0;
    if (strncmp(arg, "after=", 6) == 0) {
        if (seen[0]++) {
            snprintf(err, errlen, "pending: after= is given twice");
            return -1;
        }
        if (syntax_decimal(arg + 6, 0, INT64_MAX, &value) != 0) {
            snprintf(err, errlen,
                     "pending: after= takes a delivery seq, a whole number from 0 to %" PRId64,
                     INT64_MAX);
            return -1;
        }
        ask->after = (uint64_t)value;
        return 0;
    }
    if (strncmp(arg, "limit=", 6) == 0) {
        if (seen[1]++) {
            snprintf(err, errlen, "pending: limit= is given twice");
            return -1;
        }
        if (syntax_decimal(arg + 6, 1, SCHAKEL_ADMIN_PENDING_MAX_LIMIT, &value) != 0) {
            snprintf(err, errlen, "pending: limit= takes a whole number from 1 to %u",
                     SCHAKEL_ADMIN_PENDING_MAX_LIMIT);
            return -1;
        }
        ask->limit = (size_t)value;
        return 0;
    }
    snprintf(err, errlen,
             "pending takes PRINCIPAL [after=SEQ] [limit=N]: argument %zu is neither after= nor "
             "limit=",
             index + 1);
    return -1;
}

/* The arguments, checked: the principal must be one of the policy in
 * force that can have a mailbox. */
static int pending_read(const broker_t *b, const char (*args)[SCHAKEL_ADMIN_MAX_ARG_LEN + 1],
                        size_t n_args, pending_ask_t *ask, char *err, size_t errlen)
{
    int seen[2] = {0, 0};
    ask->after = 0;
    ask->limit = SCHAKEL_ADMIN_PENDING_LIMIT;
    if (n_args == 0 || args[0][0] == '\0') {
        snprintf(err, errlen,
                 "pending takes a principal id, as the policy names it "
                 "(\"politie/bvh-koppeling\")");
        return -1;
    }
    for (size_t i = 1; i < n_args; i++)
        if (pending_option(args[i], i, ask, seen, err, errlen) != 0)
            return -1;
    /* named back only once it is known to be one: the text is the
     * operator's, and its answer goes to a terminal */
    if (!syntax_is_principal_id(args[0])) {
        snprintf(err, errlen, "pending: the principal given is not a principal id (PARTNER/NAME)");
        return -1;
    }
    ask->principal = policy_principal_by_id(b->policy, args[0]);
    if (ask->principal == NULL) {
        snprintf(err, errlen, "pending: principal \"%s\" is not in the policy in force", args[0]);
        return -1;
    }
    if (ask->principal->role == ROLE_OPERATOR) {
        snprintf(err, errlen, "pending: principal \"%s\" is an operator: operators have no mailbox",
                 args[0]);
        return -1;
    }
    return 0;
}

/* What the broker knows of the delivery now, the first that holds:
 * set aside; its retention ended (the sweep removes it); a reload not yet
 * recorded would not allow it (the push withholds it until that applies,
 * as deliver_decision asks it); the policy in force no longer allows it
 * (the push revokes it); sent to the receiving connection and not
 * acknowledged (a slot of its window); waiting. */
static const char *pending_state(const pending_page_t *page, const store_listed_t *d)
{
    if (d->set_aside)
        return "set_aside";
    if (d->expires_at <= page->b->now_s)
        return "expired";
    int decision =
        deliver_decision(page->b, page->principal, d->seq, d->rule_id, d->rule_hash, d->case_id);
    if (decision == DELIVER_REVOKED)
        return "revoked";
    if (decision == DELIVER_HELD)
        return "withheld";
    const receiver_t *r = page->receiver;
    if (r != NULL && r->session != NULL && d->seq <= r->cursor)
        return "in_flight";
    return "waiting";
}

/* Whether this run sent it, as the trail's delivery.revoked says it;
 * NULL (unknown) for one set aside: the push passed over it. */
static const char *pending_sent(const pending_page_t *page, const store_listed_t *d)
{
    if (d->set_aside)
        return NULL;
    switch (deliver_sent(page->b, page->principal, d->seq)) {
    case RECORD_SENT_YES:
        return "yes";
    case RECORD_SENT_NO:
        return "no";
    case RECORD_SENT_UNKNOWN:
        break;
    }
    return "unknown";
}

static void pending_member_uint_or_null(admin_json_t *out, const char *key, int present,
                                        uint64_t value)
{
    admin_json_key(out, key);
    if (present)
        admin_json_uint(out, value);
    else
        admin_json_null(out);
}

static int pending_row(const store_listed_t *d, void *arg)
{
    pending_page_t *page = arg;
    admin_json_t *out = page->out;
    if (page->listed == page->limit) {
        page->more = 1; /* the row past the page: asked for only to know */
        return 1;
    }
    char id_hex[2 * 16 + 1];
    if (d->message_id != NULL)
        syntax_hex(d->message_id, 16, id_hex);
    int event = d->is_case_event;
    admin_json_object_begin(out);
    admin_json_member_uint(out, "seq", d->seq);
    admin_json_member_uint(out, "item_seq", d->item_seq);
    admin_json_member_string(out, "kind", event ? "case_event" : "signal");
    admin_json_member_string(out, "sender", d->sender);
    admin_json_member_string(out, "message_id", d->message_id != NULL ? id_hex : NULL);
    pending_member_uint_or_null(out, "item_index", !event, d->item_index);
    admin_json_member_string(out, "case_id", event ? d->case_id : NULL);
    pending_member_uint_or_null(out, "event_seq", event && d->event_seq > 0, d->event_seq);
    admin_json_member_string(out, "rule_id", d->rule_id);
    admin_json_member_int(out, "queued_at", d->queued_at);
    admin_json_member_int(out, "expires_at", d->expires_at);
    admin_json_member_string(out, "state", pending_state(page, d));
    admin_json_member_string(out, "sent", pending_sent(page, d));
    admin_json_key(out, "set_aside_at");
    if (d->set_aside)
        admin_json_int(out, d->set_aside_at);
    else
        admin_json_null(out);
    admin_json_member_string(out, "reason", d->set_aside ? d->reason : NULL);
    admin_json_object_end(out);
    page->listed++;
    page->last_seq = d->seq;
    return 0;
}

int admin_pending_run(broker_t *b, const char (*args)[SCHAKEL_ADMIN_MAX_ARG_LEN + 1], size_t n_args,
                      admin_json_t *out, char *err, size_t errlen)
{
    pending_ask_t ask;
    if (pending_read(b, args, n_args, &ask, err, errlen) != 0)
        return -1;
    const char *id = ask.principal->id;
    int64_t count = store_mailbox_count(b->store, id);
    if (count < 0) {
        snprintf(err, errlen, "pending: the store could not be read (%s); nothing was listed",
                 store_errmsg(b->store));
        return -1;
    }
    pending_page_t page = {
        .b = b,
        .principal = id,
        .receiver = sessions_receiver(b->sessions, id),
        .out = out,
        .limit = ask.limit,
    };
    admin_json_object_begin(out);
    admin_json_member_string(out, "principal", id);
    admin_json_member_string(out, "partner", ask.principal->partner->id);
    admin_json_member_int(out, "pending", count);
    admin_json_member_uint(out, "after", ask.after);
    admin_json_member_uint(out, "limit", ask.limit);
    admin_json_key(out, "deliveries");
    admin_json_array_begin(out);
    /* one row past the page, to know whether another page follows */
    if (store_mailbox_list(b->store, id, ask.after, ask.limit + 1, pending_row, &page) < 0) {
        snprintf(err, errlen, "pending: the store could not be read (%s); nothing was listed",
                 store_errmsg(b->store));
        admin_json_free(out); /* half a page: the answer is the refusal alone */
        return -1;
    }
    admin_json_array_end(out);
    pending_member_uint_or_null(out, "next_after", page.more, page.last_seq);
    admin_json_object_end(out);
    return 0;
}
