/*
 * admin_pending.h — the admin endpoint's `pending` command: which
 * deliveries wait for one principal, oldest first, and in what state the
 * broker knows each (docs/PROTOCOL.md section 11.4).
 *
 * Metadata only, what the audit trail shows operators already: seqs,
 * sender, ids, rule, times, state. Never a body, a field mask or a note.
 */
#ifndef SCHAKEL_ADMIN_PENDING_H
#define SCHAKEL_ADMIN_PENDING_H

#include <stddef.h>

#include "admin_json.h"
#include "schakel_limits.h"

struct broker;

/* Run `pending` with the request's n_args arguments (PRINCIPAL, then
 * "after=SEQ" and "limit=N" in any order, each at most once), after the
 * request's record committed. Writes the answer into out and returns 0,
 * or returns -1 with err filled: a missing, unknown or operator
 * principal, a malformed or out-of-range argument, a store error. Safe on
 * any argument text (the wire codec checked its UTF-8 and length).
 * Cost: store_mailbox_list for at most limit + 1 rows, and per row the
 * policy's rule lookup. */
int admin_pending_run(struct broker *b, const char (*args)[SCHAKEL_ADMIN_MAX_ARG_LEN + 1],
                      size_t n_args, admin_json_t *out, char *err, size_t errlen);

#endif
