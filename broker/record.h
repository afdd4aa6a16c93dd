/*
 * record.h — the one place where the broker records what it decided.
 *
 * Every acceptance, refusal, delivery, ack and authentication decision goes
 * through here, with the rule (id and content hash) that decided it. Today a
 * record is a log line; the audit trail (hash-chained, in the store's
 * transaction) hooks in here, so no decision can bypass it.
 */
#ifndef SCHAKEL_RECORD_H
#define SCHAKEL_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "schakel.pb-c.h"

void record_accepted(const char *sender, const uint8_t message_id[16], size_t n_items,
                     size_t n_deliveries, int duplicate);
void record_refused(const char *principal, const uint8_t *message_id, Schakel__Reason reason,
                    const char *text, int item_index);
/* One delivery queued to a recipient under a rule. */
void record_queued(const char *sender, const char *recipient, uint64_t seq, uint64_t item_seq,
                   const char *rule_id, const char *rule_hash);
void record_delivered(const char *recipient, uint64_t seq, int redelivery);
void record_acked(const char *recipient, uint64_t seq);
/* A waiting delivery the policy in force no longer allows was removed
 * without being sent: its body is gone, a tombstone stays. */
void record_revoked(const char *recipient, uint64_t seq, const char *rule_id,
                    const char *rule_hash);
/* A delivery's retention ended: its body is gone, a tombstone stays. */
void record_expired(const char *recipient, uint64_t seq, const char *rule_id,
                    const char *rule_hash);

#endif
