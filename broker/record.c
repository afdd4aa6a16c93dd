/*
 * record.c — decisions recorded as key=value events (see record.h).
 *
 * Records ids and metadata only, never contents. Trusts its callers: every
 * string passed here was validated by the wire module or comes from the
 * policy.
 */
#include "record.h"

#include <stdio.h>

#include "log.h"
#include "syntax.h"
#include "wire.h"

void record_accepted(const char *sender, const uint8_t message_id[16], size_t n_items,
                     size_t n_deliveries, int duplicate)
{
    char id_hex[33], items[24], deliveries[24];
    syntax_hex(message_id, 16, id_hex);
    snprintf(items, sizeof items, "%zu", n_items);
    snprintf(deliveries, sizeof deliveries, "%zu", n_deliveries);
    log_event(LOG_INFO, duplicate ? "publish.duplicate" : "publish.accepted", "principal",
              sender, "message_id", id_hex, "items", items, "deliveries", deliveries, NULL);
}

void record_refused(const char *principal, const uint8_t *message_id, Schakel__Reason reason,
                    const char *text, int item_index)
{
    char id_hex[33] = "-", item[16];
    if (message_id != NULL)
        syntax_hex(message_id, 16, id_hex);
    snprintf(item, sizeof item, "%d", item_index);
    log_event(LOG_WARN, "request.refused", "principal", principal, "message_id", id_hex,
              "reason", wire_reason_name(reason), "item", item, "text", text, NULL);
}

void record_queued(const char *sender, const char *recipient, uint64_t seq, uint64_t item_seq,
                   const char *rule_id, const char *rule_hash)
{
    char seq_s[24], item_s[24];
    snprintf(seq_s, sizeof seq_s, "%llu", (unsigned long long)seq);
    snprintf(item_s, sizeof item_s, "%llu", (unsigned long long)item_seq);
    log_event(LOG_DEBUG, "delivery.queued", "sender", sender, "recipient", recipient, "seq",
              seq_s, "item_seq", item_s, "rule", rule_id, "rule_hash", rule_hash, NULL);
}

void record_delivered(const char *recipient, uint64_t seq, int redelivery)
{
    char seq_s[24];
    snprintf(seq_s, sizeof seq_s, "%llu", (unsigned long long)seq);
    log_event(LOG_DEBUG, "delivery.sent", "recipient", recipient, "seq", seq_s, "redelivery",
              redelivery ? "true" : "false", NULL);
}

void record_acked(const char *recipient, uint64_t seq)
{
    char seq_s[24];
    snprintf(seq_s, sizeof seq_s, "%llu", (unsigned long long)seq);
    log_event(LOG_DEBUG, "delivery.acked", "recipient", recipient, "seq", seq_s, NULL);
}

void record_expired(const char *recipient, uint64_t seq, const char *rule_id, const char *rule_hash)
{
    char seq_s[24];
    snprintf(seq_s, sizeof seq_s, "%llu", (unsigned long long)seq);
    log_event(LOG_INFO, "delivery.expired", "recipient", recipient, "seq", seq_s, "rule", rule_id,
              "rule_hash", rule_hash, NULL);
}

void record_revoked(const char *recipient, uint64_t seq, const char *rule_id, const char *rule_hash)
{
    char seq_s[24];
    snprintf(seq_s, sizeof seq_s, "%llu", (unsigned long long)seq);
    log_event(LOG_INFO, "delivery.revoked", "recipient", recipient, "seq", seq_s, "rule", rule_id,
              "rule_hash", rule_hash, "why", "the policy in force no longer allows it", NULL);
}
