/*
 * purge.h — the mailboxes of principals the policy no longer has.
 *
 * A principal removed from the policy (a partner that left the programme, a
 * system taken out of use), or made an operator, can never receive again
 * on the partner endpoint, so what waits in its
 * mailbox would never be delivered: signal deliveries until their
 * retention ends, case deliveries of open cases without end. The broker
 * withdraws them instead: at start and after every reload it lists the
 * recipients with waiting deliveries that the policy in force does not
 * name, and revokes their deliveries a batch per loop turn (each with its
 * tombstone and its "delivery.revoked" audit entry), so routing never
 * waits for it. A principal that is back in the policy before its turn
 * keeps what is left.
 */
#ifndef SCHAKEL_PURGE_H
#define SCHAKEL_PURGE_H

#include "broker.h"

/* At most this many such recipients are listed at once; more are found
 * by listing again once these are done. */
#define PURGE_LIST_MAX 256u

/* List the recipients to withdraw under b->policy (replacing any list).
 * Returns how many, or -1 when the store could not be read (logged
 * purge.failed, then once a minute while it lasts): purge_retry lists
 * again. Cost: one index descent per recipient with waiting deliveries. */
long purge_find(broker_t *b);

/* A listing that failed is tried again (purge_find), at most once a
 * second: the policy in force is the new one, and what waits for a
 * principal it removed must not wait for the next reload or start. */
void purge_retry(broker_t *b);

/* Whether a purge waits for the next turn. */
int purge_pending(const broker_t *b);

/* In the turn's transaction: revoke up to SCHAKEL_EXPIRY_BATCH waiting
 * deliveries of the first listed recipient, recording each; a recipient
 * with none left leaves the list once the turn has committed
 * (purge_settle). Nothing in a turn that has failed already. A store or
 * record failure fails the turn (tried again in a later one). */
void purge_step(broker_t *b);

/* After the turn's commit (committed 0: rolled back): a recipient the turn
 * found empty leaves the list ("mailbox.emptied") only if it committed;
 * otherwise what the rollback put back is withdrawn in a later turn. */
void purge_settle(broker_t *b, int committed);

/* Free the list. */
void purge_release(broker_t *b);

#endif
