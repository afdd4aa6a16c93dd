/*
 * restore.h — schakeld --restored BACKUP: a backup put in place of the store.
 *
 * A backup is the store as it was when it was taken; a broker started on
 * it as it is would hand out again the seqs and case numbers the lost
 * state after it had given (docs/OPERATIONS.md "Restoring a backup").
 * restore_from_backup makes the restored store safe to start before it
 * becomes the store: counters moved, the restore in the audit trail.
 */
#ifndef SCHAKEL_RESTORE_H
#define SCHAKEL_RESTORE_H

#include <stdint.h>

#include "keys.h"
#include "store.h"
#include "storefile.h"

/* The margins: far beyond the traffic of the time between a backup and
 * its restore (a billion seqs, a million case numbers). */
#define RESTORE_SEQ_MARGIN SCHAKEL_RESTORE_SEQ_MARGIN /* clients rely on it: schakel_limits.h */
#define RESTORE_CASE_MARGIN 1000000u

/* A next case number as the restore names it: "C-00000415", or "none"
 * past the last (fewer than RESTORE_CASE_MARGIN were left: the restored
 * broker opens no case, store_counters_move). */
void restore_case_from(uint64_t next_case_num, char out[16]);

/* restore_from_backup's flags: go on without the replaced store as the
 * floor of the counters (--without-floor); stamp the store.restored entry
 * with the system clock even when it is behind the backup's trail
 * (--accept-clock; else refused over WALLCLOCK_BEHIND_S, audit.h). */
#define RESTORE_WITHOUT_FLOOR 1u
#define RESTORE_ACCEPT_CLOCK 2u

typedef struct restore_report {
    store_counters_t was; /* what the backup would have handed out next */
    store_counters_t now; /* what the restored store hands out next */
    uint64_t trail_seq;   /* the backup's last audit entry (0: none) */
    int64_t trail_at;     /* its time, Unix seconds */
    uint64_t entry_seq;   /* the "store.restored" entry */
    uint8_t epoch_was[SCHAKEL_STORE_EPOCH_BYTES]; /* the backup's store epoch */
    uint8_t epoch_now[SCHAKEL_STORE_EPOCH_BYTES]; /* the restored store's, new */
    uint64_t epoch_floor;                         /* its floor seq: the backup's highest item seq */
    int epoch_floor_known;                        /* 0: unknown (no floor of the replaced store) */
    int has_floor;        /* the counters also went past the replaced store's */
    char floor_note[400]; /* what of the floor is missing ("" none): the restore went on
                           * without it (RESTORE_WITHOUT_FLOOR) */
    char fold_note[420];  /* why the old WAL was set aside as it was */
    char warning[600];    /* restored, but something after the rename failed */
    int migrated_from;    /* the backup's schema, when its copy was migrated (0: it
                           * was current) */
    int64_t set_aside_recorded; /* rows the schema migration of the backup set aside,
                                 * recorded (delivery.set_aside) before the restore's entry */
    char replaced[4096];        /* where the replaced store is kept ("": there was none) */
    int replaced_linked;        /* 1: a second name of its file; 0: a copy made at the swap */
    uint64_t replaced_trail_seq;  /* its audit trail's last entry (0: none or unreadable) */
    char replaced_trail_hash[65]; /* that entry's hash, hex ("" unknown) */
    int marked;                   /* 1: the replaced store had STORE.audit-mismatch */
    storefile_mark_t mark;        /* that mark, as read before anything changed */
    char mark_kept[4096 + 16];    /* where it is kept: KEPT.audit-mismatch ("" not yet) */
} restore_report_t;

/* With no broker on the store (its lock is taken for the whole of it):
 * copy backup_path (and a non-empty BACKUP-wal beside it, a snapshot's)
 * to STORE.restoring, open the copy as a store under store_key (a file
 * that is not a Schakel store, or a key that does not open it, is
 * refused; an older schema is migrated), move its counters
 * (store_counters_move with the margins above, from the larger of the
 * backup's and the replaced store's own, read without its key, so that a
 * store restored twice from one backup never hands out a seq twice;
 * without that floor, in whole or for the case numbers, because no store
 * is there or it cannot be read, it is refused unless RESTORE_WITHOUT_FLOOR),
 * give it a new store epoch (store_epoch_renew: clients that compare it
 * learn that what the broker accepted after the backup is gone) whose
 * floor seq is the backup's highest item seq (unknown when the item
 * counters went on without the replaced store's),
 * append a "store.restored" entry signed into the trail with key, commit,
 * copy its WAL into it; give it the replaced store's owner and mode (its
 * folder's owner for a new one; the lock file likewise); then set the old
 * store's -wal aside (it belongs to the lost state), rename the copy over
 * store_path, and remove the old -shm. The replaced store is kept beside
 * it as STORE.replaced-YYYYMMDDTHHMMSSZ (named before the copy is made,
 * made just before the rename: a second name of its file, with its -wal
 * moved to that name's -wal; a copy, with one of its -wal, where the file
 * system has no second names): its audit trail is the only record of what
 * was accepted, delivered and acknowledged after the backup, and the
 * store.restored entry names it with its trail's last seq and hash. A
 * STORE.lost-wal left by an interrupted restore is refused (it belongs to
 * a store); second names of the store's own file left by one go. A
 * replaced store marked STORE.audit-mismatch (a running broker found its
 * trail's tail written outside it: storefile.h) is restored over all the
 * same, the backup being the remedy: the store.restored entry records the
 * mark's anchor and what it found, and the mark goes with the kept store
 * (KEPT.audit-mismatch, made with it, before the rename; the mark itself
 * removed after it); a mark that cannot be read, or kept, is refused with
 * nothing changed. A
 * failure up to the
 * rename leaves the store as it was, and no copy; the copy carries the
 * moved counters before it becomes the store, so an interruption never
 * leaves a restored store with the old counters (one between setting the
 * WAL aside and the rename needs the command run again: err says so when
 * it can). Returns 0 with *report, or -1 with err. */
int restore_from_backup(const char *store_path, const char *backup_path,
                        const uint8_t store_key[STORE_KEY_BYTES], const keypair_t *key,
                        unsigned flags, restore_report_t *report, char *err, size_t errlen);

#endif
