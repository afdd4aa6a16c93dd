/*
 * case.c — signed case commands in the broker loop (see case.h): the
 * handler, its admission, and storing a command; planning is
 * case_plan.c's, the event and its deliveries case_deliver.c's.
 *
 * The order is publish.c's: rate limit, signature, idempotency, decoding,
 * actor check, whether the actor can see the case at all (its partner's
 * member row, before the case's own), then the state machine and the
 * policy, then the store's bounds (space.h: the floor and the actor's
 * partner's share, for a command that adds content, so that a command
 * refused for good is told so first); nothing is written before all of
 * that has passed. Then, in the
 * turn's transaction: the signed command as evidence (publishes/items),
 * the case's new state, its event (unfiltered, sealed) and one delivery
 * per member principal with the event reduced to its membership rule;
 * the Accepted waits for the commit. Trusts the wire module's validation,
 * ZAP's identity, the store's authenticated bodies and the policy in
 * force. Refusals: RATE_LIMITED, BAD_SIGNATURE, DUPLICATE_CONFLICT, the
 * wire module's, SENDER_MISMATCH, POLICY_DENIED, NOT_PERMITTED,
 * NOT_FOUND, CASE_CLOSED, for an open CASE_IDS_EXHAUSTED or RATE_LIMITED
 * (case_ids.c), and below the floor UNAVAILABLE, at the share
 * RATE_LIMITED; a store failure fails the turn (UNAVAILABLE or
 * INTERNAL_ERROR).
 */
#include "case.h"
#include "plural.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "case_internal.h"
#include "case_state.h"
#include "log.h"
#include "record.h"

static void case_cmd_free(case_cmd_t *x)
{
    free(x->drops);
    sodium_memzero(x->case_subject, sizeof x->case_subject);
    case_members_free(&x->members);
    if (x->linked != NULL)
        schakel__signal__free_unpacked(x->linked, wire_wiped_allocator());
    if (x->linked_body != NULL) {
        sodium_memzero(x->linked_body, x->linked_len);
        free(x->linked_body);
    }
}

static case_command_t case_command_of(const Schakel__CaseCommand *cmd)
{
    switch (cmd->op_case) {
    case SCHAKEL__CASE_COMMAND__OP_OPEN:
        return CASE_CMD_OPEN;
    case SCHAKEL__CASE_COMMAND__OP_INVITE:
        return CASE_CMD_INVITE;
    case SCHAKEL__CASE_COMMAND__OP_ACCEPT:
        return CASE_CMD_ACCEPT;
    case SCHAKEL__CASE_COMMAND__OP_DECLINE:
        return CASE_CMD_DECLINE;
    case SCHAKEL__CASE_COMMAND__OP_LEAVE:
        return CASE_CMD_LEAVE;
    case SCHAKEL__CASE_COMMAND__OP_NOTE:
        return CASE_CMD_NOTE;
    case SCHAKEL__CASE_COMMAND__OP_ATTACH:
        return CASE_CMD_ATTACH;
    case SCHAKEL__CASE_COMMAND__OP_CLOSE:
        return CASE_CMD_CLOSE;
    case SCHAKEL__CASE_COMMAND__OP_REOPEN:
        return CASE_CMD_REOPEN;
    case SCHAKEL__CASE_COMMAND__OP_LINK_SIGNAL:
        return CASE_CMD_LINK;
    default:
        return CASE_CMD_NONE;
    }
}

/* ------------------------------------------------------------------ storing */

/* The case's retention from now on (store_case_set_expiry). Deliveries of
 * it whose bodies do not authenticate (rows altered in the store) take it
 * too, unsent as before: logged, the command goes on. 0 or -1. */
static int case_set_expiry(case_cmd_t *x, int64_t expires_at)
{
    int unreadable = store_case_set_expiry(x->b->store, x->case_id, expires_at);
    if (unreadable <= 0)
        return unreadable;
    char n[16];
    snprintf(n, sizeof n, "%d", unreadable);
    log_event(LOG_ERROR, "store.read_failed", "case", x->case_id, "deliveries", n, "error",
              store_errmsg(x->b->store), "effect",
              "their retention follows the case; they stay unsent until it ends", NULL);
    return 0;
}

/* The case's new state: membership, closed flag, retention. */
static int case_apply(case_cmd_t *x)
{
    broker_t *b = x->b;
    store_t *s = b->store;
    const policy_case_member_rule_t *rule = x->concerned_rule;
    switch (x->command) {
    case CASE_CMD_OPEN:
    case CASE_CMD_INVITE:
    case CASE_CMD_ACCEPT:
        return store_case_member_set(s, x->case_id, x->t.partner, (char)x->t.new_state,
                                     rule != NULL ? rule->id : NULL,
                                     rule != NULL ? rule->hash_hex : NULL, b->now_s);
    case CASE_CMD_DECLINE:
        return store_case_member_set(s, x->case_id, x->t.partner, (char)x->t.new_state, NULL, NULL,
                                     b->now_s);
    case CASE_CMD_LEAVE:
    case CASE_CMD_REMOVE:
        if (store_case_member_set(s, x->case_id, x->t.partner, (char)x->t.new_state, NULL, NULL,
                                  b->now_s) != 0)
            return -1;
        return case_drop_partner(x, x->t.partner);
    case CASE_CMD_CLOSE:
        return store_case_set_closed(s, x->case_id, 1, b->now_s);
    case CASE_CMD_REOPEN:
        if (store_case_set_closed(s, x->case_id, 0, b->now_s) != 0)
            return -1;
        return case_set_expiry(x, STORE_CASE_OPEN_EXPIRY);
    default:
        return 0;
    }
}

/* The Accepted of a case command. */
static uint8_t *case_encode_accepted(const case_cmd_t *x, size_t *len)
{
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    Schakel__Accepted accepted = SCHAKEL__ACCEPTED__INIT;
    Schakel__ItemAccepted item = SCHAKEL__ITEM_ACCEPTED__INIT;
    Schakel__ItemAccepted *items[1] = {&item};
    item.has_seq = 1;
    item.seq = (uint64_t)x->item_seq;
    item.has_recipients = 1;
    item.recipients = (uint32_t)x->queued;
    accepted.has_message_id = 1;
    accepted.message_id.data = (uint8_t *)(uintptr_t)x->id;
    accepted.message_id.len = SCHAKEL_MESSAGE_ID_BYTES;
    accepted.n_items = 1;
    accepted.items = items;
    accepted.case_id = (char *)(uintptr_t)x->case_id;
    frame.body_case = SCHAKEL__FRAME__BODY_ACCEPTED;
    frame.accepted = &accepted;
    return wire_encode_frame(&frame, len);
}

static int case_record(case_cmd_t *x, const Schakel__CaseEvent *ev)
{
    const policy_case_member_rule_t *rule = x->concerned_rule;
    record_case_t rc = {
        .event = case_event_name(ev->kind),
        .actor = x->actor->id,
        .on_behalf_of = x->acted_for,
        .case_id = x->case_id,
        .case_type = x->type->id,
        .lead = x->lead->id,
        .partner = ev->partner,
        .command_id = x->id,
        .item_seq = (uint64_t)x->item_seq,
        .event_seq = x->event_seq,
        .rule_id = rule != NULL ? rule->id : x->type->id,
        .rule_hash = rule != NULL ? rule->hash_hex : x->type->hash_hex,
        .subject =
            x->linked != NULL && x->linked->subject != NULL ? x->linked->subject : case_subject(x),
        .linked_item_seq = x->command == CASE_CMD_LINK ? x->cmd->link_signal->item_seq : 0,
        .n_fields = x->command == CASE_CMD_NOTE ? x->cmd->note->n_fields : 0,
        .deliveries = x->queued,
        .dropped = x->dropped,
        .expires_at = x->command == CASE_CMD_CLOSE ? x->expires_at : 0,
    };
    return record_case(x->b, &rc);
}

/* Store the command as evidence, the case's new state, its event and
 * deliveries, and queue the Accepted. Returns 0, or -1 on a store (or
 * record) failure: the caller fails the turn. */
static int case_store(case_cmd_t *x)
{
    broker_t *b = x->b;
    const ProtobufCBinaryData *command = &x->publish->command;
    char *members[SCHAKEL_MAX_PARTNERS + 1];
    Schakel__CaseEvent ev;
    if (store_begin(b->store) != 0)
        return -1;
    if (x->command == CASE_CMD_OPEN &&
        store_case_create(b->store, x->type->id, x->lead->id, x->cmd->open->title, b->now_s,
                          x->case_id) != 0)
        return -1;
    int64_t publish_id = store_publish_add(b->store, x->actor->id, x->id, x->hash,
                                           x->publish->signature.data, x->root, b->now_s);
    if (publish_id < 0)
        return -1;
    x->item_seq = store_item_add(b->store, publish_id, 0, command->data, command->len);
    if (x->item_seq < 0)
        return -1;
    metrics_item_accepted(b->metrics, (uint64_t)x->item_seq, b->now_ms);
    x->expires_at = x->command == CASE_CMD_CLOSE ? b->now_s + x->type->retention_after_close_s
                                                 : STORE_CASE_OPEN_EXPIRY;
    if (case_apply(x) != 0 || case_store_event(x, &ev, members) != 0)
        return -1;
    /* From the close the whole case counts down: rows, events, deliveries,
     * the commands' evidence. */
    if (x->command == CASE_CMD_CLOSE && case_set_expiry(x, x->expires_at) != 0)
        return -1;
    if (x->queued == 0 && store_case_item_link(b->store, x->case_id, (uint64_t)x->item_seq) != 0)
        return -1;
    size_t len = 0;
    uint8_t *frame = case_encode_accepted(x, &len);
    if (frame == NULL || store_publish_set_reply(b->store, publish_id, frame, len) != 0 ||
        case_record(x, &ev) != 0) {
        free(frame);
        return -1;
    }
    if (broker_queue_reply(b, x->session, frame, len, x->id) != 0)
        return -1;
    b->stats.accepted++;
    return 0;
}

/* ------------------------------------------------------------------ the handler */

/* A repeat of a known command id: same content gets the original Accepted
 * (marked duplicate), other content is a conflict. Returns 1 when handled,
 * 0 when the id is new, -1 on a store error. */
static int case_answer_repeat(case_cmd_t *x)
{
    broker_t *b = x->b;
    int same_content = 0;
    uint8_t *reply = NULL;
    size_t reply_len = 0;
    int found = store_publish_find(b->store, x->actor->id, x->id, x->hash, &same_content, &reply,
                                   &reply_len);
    if (found <= 0)
        return found;
    if (!same_content) {
        free(reply);
        case_refuse(x, SCHAKEL__REASON__DUPLICATE_CONFLICT,
                    "this command id was already used by this principal for other content");
        return 1;
    }
    size_t len = 0;
    uint8_t *frame = publish_duplicate_reply(reply, reply_len, &len);
    free(reply);
    if (frame == NULL)
        return -1;
    broker_queue_reply(b, x->session, frame, len, x->id);
    b->stats.duplicates++;
    (void)record_accepted(b, x->actor->id, x->id, 1, 0, 1); /* failing fails the turn */
    return 1;
}

/* Below the store's floor, and at its actor's partner's share (space.h),
 * a command that adds content is refused: an open, invite or accept (an
 * accepted member is sent the case's history), a note, attachment or
 * link, a reopen. One that ends something goes on (close starts the
 * countdown of the case's retention; leave, decline and remove end what
 * is owed to a member): each writes a command and an event of its own,
 * small beside what it lets go, and counted in the share all the same. */
static int case_adds_content(case_command_t command)
{
    switch (command) {
    case CASE_CMD_CLOSE:
    case CASE_CMD_LEAVE:
    case CASE_CMD_DECLINE:
    case CASE_CMD_REMOVE:
        return 0;
    default:
        return 1;
    }
}

/* The store's bounds (space.h), asked once the command is allowed, so that
 * one refused for good is told so: a command that adds content is
 * refused UNAVAILABLE below the floor, RATE_LIMITED when its bytes (kept
 * as evidence, an item of the actor's partner) would take the partner
 * past its share. 1 after queueing the refusal, else 0. */
static int case_bounds_refuse(case_cmd_t *x)
{
    char text[SCHAKEL_MAX_REJECT_TEXT];
    if (!case_adds_content(x->command))
        return 0;
    if (space_floor_refuses(x->b, text, sizeof text)) {
        case_refuse(x, SCHAKEL__REASON__UNAVAILABLE, text);
        return 1;
    }
    if (space_share_refuses(x->b, x->actor->partner->id, store_sealed_len(x->publish->command.len),
                            text, sizeof text)) {
        case_refuse(x, SCHAKEL__REASON__RATE_LIMITED, text);
        return 1;
    }
    return 0;
}

/* Rate limit, signature, idempotency. Returns 1 to go on, 0 when answered
 * (refused or repeated). */
static int case_admit(case_cmd_t *x)
{
    broker_t *b = x->b;
    const Schakel__CasePublish *publish = x->publish;
    uint8_t signed_bytes[64];
    if (!sessions_allow_publish(b->sessions, x->actor->id, b->now_ms, b->publish_rate)) {
        char text[160];
        snprintf(text, sizeof text,
                 "more than %u %s per second from this principal; slow down and retry "
                 "with the same command id",
                 b->publish_rate, plural(b->publish_rate, "publish", "publishes"));
        case_refuse(x, SCHAKEL__REASON__RATE_LIMITED, text);
        return 0;
    }
    ProtobufCBinaryData item = publish->command;
    wire_items_root(&item, 1, x->root);
    wire_signed_bytes(x->id, x->root, signed_bytes);
    if (keys_verify(x->actor->sign_pk, signed_bytes, sizeof signed_bytes,
                    publish->signature.data) != 0) {
        case_refuse(x, SCHAKEL__REASON__BAD_SIGNATURE,
                    "the signature does not verify with the actor's registered key");
        return 0;
    }
    wire_case_publish_hash(publish, x->hash);
    int repeat = case_answer_repeat(x);
    if (repeat < 0) {
        log_event(LOG_ERROR, "store.read_failed", "error", store_errmsg(b->store), NULL);
        case_refuse(x, broker_store_failure_reason(b),
                    "the broker could not read its store; send the command again");
    }
    return repeat == 0;
}

void case_publish_handle(broker_t *b, session_t *session, const policy_principal_t *actor,
                         const Schakel__CasePublish *publish)
{
    case_cmd_t x;
    memset(&x, 0, sizeof x);
    x.b = b;
    x.session = session;
    x.actor = actor;
    x.publish = publish;
    x.id = publish->command_id.data;
    if (!case_admit(&x))
        return;
    wire_error_t err = {0};
    Schakel__CaseCommand *cmd =
        wire_decode_case_command(publish->command.data, publish->command.len, &err);
    if (cmd == NULL) {
        case_refuse(&x, err.reason, err.text);
        return;
    }
    x.cmd = cmd;
    x.command = case_command_of(cmd);
    if (strcmp(cmd->actor, actor->id) != 0) {
        char text[SCHAKEL_MAX_REJECT_TEXT];
        snprintf(text, sizeof text,
                 "the command names actor %s but this connection is authenticated as %s",
                 cmd->actor, actor->id);
        case_refuse(&x, SCHAKEL__REASON__SENDER_MISMATCH, text);
    } else {
        int planned = x.command == CASE_CMD_OPEN ? case_plan_open(&x) : case_plan_existing(&x);
        /* an allowed open: a case id left (a refusal for good comes first) */
        if (planned == 0 && x.command == CASE_CMD_OPEN &&
            case_ids_exhausted_refuses(b, session, x.id))
            planned = -1;
        /* the store's bounds: before anything is stored or budgeted */
        if (planned == 0 && case_bounds_refuse(&x))
            planned = -1;
        /* an allowed open within the bounds: the actor's and its partner's budget */
        if (planned == 0 && x.command == CASE_CMD_OPEN &&
            !case_ids_admit_open(b, session, actor, x.id))
            planned = -1;
        if (planned == -2) {
            log_event(LOG_ERROR, "store.read_failed", "error", store_errmsg(b->store), NULL);
            case_refuse(&x, broker_store_failure_reason(b),
                        "the broker could not read its store; nothing was stored, send the "
                        "command again with the same command id");
        } else if (planned == 0 && case_store(&x) != 0) {
            log_event(LOG_ERROR, "store.write_failed", "error", store_errmsg(b->store), NULL);
            broker_fail_turn(b);
            case_refuse(&x, b->turn_failure,
                        "the broker could not store this case command; nothing was stored, "
                        "send it again with the same command id");
        } else if (planned == 0 && x.command == CASE_CMD_OPEN) {
            case_ids_watch(b, b->now_ms);
        }
    }
    case_cmd_free(&x);
    wire_case_command_free(&cmd);
}
