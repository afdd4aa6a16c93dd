/*
 * store_audit_internal.h — what the audit trail's files share:
 * store_audit.c (the statements, the tail, appends) and store_audit_read.c
 * (scans, verification's counts, the offline reader). Nothing outside them
 * includes it.
 */
#ifndef SCHAKEL_STORE_AUDIT_INTERNAL_H
#define SCHAKEL_STORE_AUDIT_INTERNAL_H

#include "store_internal.h"

/* Result columns of the entry scans: seq, at, the fields, hash. */
enum { ROW_SEQ = 0, ROW_AT = 1, ROW_FIRST_FIELD = 2, ROW_HASH = 2 + STORE_AUDIT_FIELD_COUNT };

/* The statement, prepared at its first use on this connection (an offline
 * reader's scans with the columns of its store's schema). NULL on error,
 * with store_errmsg set. */
sqlite3_stmt *store_audit_stmt(store_t *store, enum store_audit_stmt_id id);

/* 1 when the store has delivery_seqs and an acked-delivery index, 0 when
 * it predates them, -1 on error. */
int store_audit_has_acks(store_t *store);

/* The index row with the greatest first seq at most delivery_seq, whether
 * or not it reaches the seq: 1 with it, 0 when there is none, -1 on error
 * (store_audit_acked_row without store_enter, which keeps it only when it
 * holds the seq; the append's check of a run, store_audit.c). */
int store_audit_range_find(store_t *store, uint64_t delivery_seq, uint64_t *first, uint64_t *last,
                           uint64_t *audit_seq);

#endif
