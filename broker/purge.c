/*
 * purge.c — withdrawing the mailboxes of principals the policy no longer
 * has (purge.h). Owns the list of such recipients; the store keeps the
 * deliveries, record.c their audit entries. Errors fail the turn, as an
 * expiry's do.
 */
#include "purge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "record.h"
#include "store_mailbox.h"

typedef char purge_id_t[SCHAKEL_MAX_PRINCIPAL_LEN + 1];

/* A principal that can receive under the policy in force: in it, and not
 * an operator (an operator key cannot use the partner endpoint). */
static int purge_can_receive(const broker_t *b, const char *principal)
{
    const policy_principal_t *p = policy_principal_by_id(b->policy, principal);
    return p != NULL && p->role != ROLE_OPERATOR;
}

/* How often a listing that keeps failing says so again. */
#define PURGE_FAILED_LOG_MS 60000

/* The listing failed: tried again in a second (purge_retry); said at
 * once, then once a minute while it lasts. */
static void purge_failed(broker_t *b, const char *error)
{
    if (!b->purge_refind || b->now_ms - b->purge_failed_logged_ms >= PURGE_FAILED_LOG_MS) {
        log_event(LOG_ERROR, "purge.failed", "error", error, "effect",
                  "the mailboxes of principals not in the policy in force are not withdrawn "
                  "yet; listed again every second until the store can be read",
                  NULL);
        b->purge_failed_logged_ms = b->now_ms;
    }
    b->purge_refind = 1;
    b->purge_refind_ms = b->now_ms + 1000;
}

void purge_release(broker_t *b)
{
    free(b->purge_list);
    b->purge_list = NULL;
    b->n_purge = 0;
    b->purge_more = 0;
    b->purge_emptied = 0;
}

long purge_find(broker_t *b)
{
    purge_id_t after = "", recipient;
    purge_release(b);
    b->purge_list = calloc(PURGE_LIST_MAX, sizeof *b->purge_list);
    if (b->purge_list == NULL) {
        purge_failed(b, "out of memory");
        return -1;
    }
    int rc;
    while ((rc = store_mailbox_next_recipient(b->store, after, recipient, sizeof recipient)) == 1) {
        memcpy(after, recipient, sizeof after);
        if (purge_can_receive(b, recipient))
            continue;
        if (b->n_purge == PURGE_LIST_MAX) {
            b->purge_more = 1; /* listed again once these are done */
            break;
        }
        memcpy(b->purge_list[b->n_purge++], recipient, sizeof recipient);
        log_event(LOG_WARN, "mailbox.withdrawn", "recipient", recipient, "why",
                  "not in the policy in force: its waiting deliveries are revoked", NULL);
    }
    if (rc < 0) {
        purge_failed(b, store_errmsg(b->store));
        purge_release(b);
        return -1;
    }
    if (b->purge_refind) {
        char listed[24];
        snprintf(listed, sizeof listed, "%zu", b->n_purge);
        log_event(LOG_INFO, "purge.resumed", "recipients", listed, NULL);
        b->purge_refind = 0;
    }
    return (long)b->n_purge;
}

void purge_retry(broker_t *b)
{
    if (b->purge_refind && b->now_ms >= b->purge_refind_ms)
        (void)purge_find(b); /* logged either way */
}

int purge_pending(const broker_t *b)
{
    return b->n_purge > 0 || b->purge_more;
}

static void purge_on_revoked(const store_expired_t *e, void *arg)
{
    store_expired_copy_set(arg, e);
}

/* The last listed recipient leaves the list. */
static void purge_done_with_last(broker_t *b)
{
    b->n_purge--;
    if (b->n_purge == 0 && b->purge_more)
        (void)purge_find(b); /* the next ones (logged on failure) */
}

void purge_settle(broker_t *b, int committed)
{
    if (!b->purge_emptied)
        return;
    b->purge_emptied = 0;
    if (committed && b->n_purge > 0) { /* nothing of it is left for good */
        log_event(LOG_INFO, "mailbox.emptied", "recipient", b->purge_list[b->n_purge - 1], NULL);
        purge_done_with_last(b);
    }
}

static int purge_scan_nothing(const store_delivery_t *d, void *arg)
{
    (void)d;
    (void)arg;
    return 0;
}

/* A row of recipient that the purge could not read (its n, done, rule
 * lines or items as no broker writes them): found as the push finds one
 * (a scan from its first row stops at it) and set aside whole, its
 * deliveries recorded in this turn, so that it cannot hold up the purge;
 * a principal gone from the policy has no session whose push would set
 * it aside. Each delivery's entry says what this run sent of it
 * (deliver_sent), as the withdrawal's do. 0 when one was set aside (the purge goes on next turn),
 * -2 when recording it failed the turn, -1 when the failure was not such a row (the caller says the
 * first failure). */
static int purge_set_aside_damaged(broker_t *b, const char *recipient)
{
    if (strstr(store_errmsg(b->store), "damaged row") == NULL)
        return -1;
    if (store_mailbox_scan(b->store, recipient, 0, SCHAKEL_EXPIRY_BATCH, purge_scan_nothing,
                           NULL) >= 0 ||
        store_scan_unreadable(b->store) == 0)
        return -1;
    store_mailbox_aside_t aside;
    if (store_mailbox_row_set_aside(b->store, recipient, store_scan_unreadable(b->store), b->now_s,
                                    &aside) != 1)
        return -1;
    /* its entries from the row set aside, as the push writes them: the
     * trail may name its seqs already (a row put back and damaged again) */
    return record_set_aside_seqs(b, aside.first_seq, aside.last_seq) == 0 ? 0 : -2;
}

/* The store refused a step of the withdrawal: a damaged row is set aside
 * (purge_set_aside_damaged), anything else fails the turn, logged. */
static void purge_refused(broker_t *b, const char *recipient)
{
    char failed[512];
    snprintf(failed, sizeof failed, "%s", store_errmsg(b->store));
    int aside = purge_set_aside_damaged(b, recipient);
    if (aside == 0 || aside == -2)
        return; /* set aside, or the turn failed recording it */
    log_event(LOG_ERROR, "store.revoke_failed", "error", failed, NULL);
    broker_fail_turn(b);
}

void purge_step(broker_t *b)
{
    if (b->n_purge == 0 || b->turn_failed)
        return; /* a failed turn is rolled back: what it saw may come back */
    const char *recipient = b->purge_list[b->n_purge - 1];
    if (purge_can_receive(b, recipient)) {
        purge_done_with_last(b); /* back in the policy: what is left stays */
        return;
    }
    uint64_t seqs[SCHAKEL_EXPIRY_BATCH];
    int n = store_begin(b->store) == 0
                ? store_mailbox_oldest(b->store, recipient, seqs, SCHAKEL_EXPIRY_BATCH)
                : -1;
    if (n < 0) {
        purge_refused(b, recipient);
        return;
    }
    if (n == 0) { /* it leaves the list once this turn has committed */
        b->purge_emptied = 1;
        return;
    }
    char why[SCHAKEL_MAX_PRINCIPAL_LEN + 64];
    snprintf(why, sizeof why, "principal %s %s", recipient,
             policy_principal_by_id(b->policy, recipient) != NULL
                 ? "is an operator under the policy in force"
                 : "is not in the policy in force");
    for (int i = 0; i < n; i++) {
        store_expired_copy_t copy;
        record_sent_t sent = deliver_sent(b, recipient, seqs[i]);
        int rc =
            store_delivery_revoke(b->store, recipient, seqs[i], b->now_s, purge_on_revoked, &copy);
        if (rc < 0) {
            purge_refused(b, recipient);
            return;
        }
        if (rc == 1 && record_withdrawn(b, &copy.view, why, sent) != 0)
            return; /* the turn fails (recorded by record.c); tried again later */
    }
}
