/*
 * storefile.h — the files beside a store, for the offline commands that
 * put a store file in place (schakeld --init, --restored): the side files'
 * names (PATH-wal, PATH-shm, PATH.lock), their removal, syncing a file
 * and the folder a rename happened in, and a move that never replaces a
 * file that is there; and for the broker's start, a store file that
 * others may read made owner-only.
 *
 * Every function returns 0 (storefile_tighten: 0 or 1), or -1 with err
 * naming the file and why.
 */
#ifndef SCHAKEL_STOREFILE_H
#define SCHAKEL_STOREFILE_H

#include <stddef.h>
#include <sys/types.h>

/* PATH followed by suffix ("-wal", ".lock") into out; -1 (and nothing in
 * err: the caller names the path) when it does not fit. */
int storefile_side(char *out, size_t outlen, const char *path, const char *suffix);

/* Removes path; a file that is not there is fine. */
int storefile_remove(const char *path, char *err, size_t errlen);

/* Removes PATH-wal and PATH-shm, and PATH.lock too when with_lock; those
 * that are not there are fine. */
int storefile_remove_sides(const char *path, int with_lock, char *err, size_t errlen);

/* Syncs the file at path (its data and size), or the folder path is in,
 * so that a rename in it is on disk. */
int storefile_sync(const char *path, char *err, size_t errlen);
int storefile_sync_folder(const char *path, char *err, size_t errlen);

/* Renames from to to, in one folder, unless a file (or a link, even one
 * that leads nowhere) is at to: renameat2 with RENAME_NOREPLACE, or where
 * the file system cannot, link and unlink (should the unlink fail, from
 * stays as a second name of the file: remove it with storefile_remove).
 * A file at to is never replaced: -1 with errno EEXIST and err "TO: File
 * exists". Not synced (storefile_sync_folder). */
int storefile_place(const char *from, const char *to, char *err, size_t errlen);

/* The file at path (a store or its -wal or -shm) made mode 0600 when
 * group or others have any permission on it: it holds personal data (in
 * its sealed bodies, and its metadata in clear), and SQLite gives the
 * -wal and -shm it makes the store file's mode. Returns 1 when it did
 * (*was the mode it had, e.g. 0644), 0 when there was nothing to do (no
 * file there, or owner-only already), -1 when the mode cannot be read or
 * changed, with err saying what to run ("chmod 600 PATH", and a chown to
 * the user that runs schakeld when another user owns the file). */
int storefile_tighten(const char *path, mode_t *was, char *err, size_t errlen);

/* STORE.audit-mismatch: the mark the running broker leaves when the
 * audit trail's tail is no longer the one it last committed (written
 * outside it: audit.tail_mismatch), so that no later start, --rekey or
 * --restored of that store chains or signs anything onto that tail while
 * it knows only the file. */
#define STOREFILE_MISMATCH_SUFFIX ".audit-mismatch"

/* Writes text as STORE.audit-mismatch: created, never replaced (O_EXCL:
 * the first mark, with the first anchor, stays), mode 0600, given the
 * store's owner and group when they differ from the process's (a broker
 * run as root on a store of the schakel user), synced, and its folder
 * synced. Returns 0 when written (path_out names it), 1 when a mark was
 * there already, -1 with err. */
int storefile_mark_mismatch(const char *store_path, const char *text, char *path_out,
                            size_t path_outlen, char *err, size_t errlen);

/* Whether STORE.audit-mismatch is there (any file or link of that name).
 * Returns 0 when it is not; -1 when it is, or cannot be looked at, with
 * err saying so: the mark's file, the anchor it holds (expect=SEQ:HASH),
 * the schakelctl audit verify command to run and what to do then (for a
 * start or --rekey: restore a backup, or remove the mark once verify
 * holds; restoring, for --restored: move the mark away with the copy kept
 * as evidence). The caller adds what it did not do. */
int storefile_mismatch_refuse(const char *store_path, int restoring, char *err, size_t errlen);

#endif
