/*
 * storefile.h — the files beside a store, for the offline commands that
 * put a store file in place (schakeld --init, --restored): the side files'
 * names (PATH-wal, PATH-shm, PATH.lock), their removal, syncing a file
 * and the folder a rename happened in, and a move that never replaces a
 * file that is there; and for the broker's start, a store file that
 * others may read made owner-only. The audit-mismatch mark a running
 * broker leaves beside the store (written, refused at a start and
 * --rekey, read and kept by --restored), and the refusal of a store file
 * with a second name.
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
 * the schakelctl audit verify command to run and what to do then
 * (restore a backup, or remove the mark once verify holds). For a start
 * and --rekey; the caller adds what it did not do. */
int storefile_mismatch_refuse(const char *store_path, char *err, size_t errlen);

/* The mark's path for store_path into out: beside the store's file itself
 * (through a symbolic link, beside the file it names). -1 when it does
 * not fit. */
int storefile_mismatch_path(char *out, size_t outlen, const char *store_path);

/* A mark as read by storefile_mismatch_read. */
typedef struct storefile_mark {
    char path[4096]; /* STORE.audit-mismatch, beside the store's file */
    char text[1024]; /* its bytes, NUL-terminated */
    size_t len;      /* how many */
    uid_t uid;       /* its owner and group: a copy of it gets them */
    gid_t gid;
    char expect[96]; /* its expect= line's SEQ:HASH: the broker's own last entry */
    char found[96];  /* its found= line's SEQ:HASH: the tail it found instead */
} storefile_mark_t;

/* The mark of store_path read whole, for schakeld --restored, which keeps
 * it with the store it replaces and records its anchor. Returns 0 when
 * there is none, 1 with *m, or -1 when it is there but cannot be read: not
 * a regular file (O_NOFOLLOW), unreadable, larger than a mark schakeld
 * writes, or without both lines as schakeld writes them (SEQ:HASH, 64
 * lowercase hex digits), with err naming it and what to do. */
int storefile_mismatch_read(const char *store_path, storefile_mark_t *m, char *err, size_t errlen);

/* The mark m made KEPT.audit-mismatch beside the kept store kept (its
 * path into kept_mark): a second name of its file, or, where the file
 * system has none (EPERM, EXDEV, EMLINK, ENOTSUP, ENOSYS), a copy of its
 * bytes with its owner, written whole under another name and put in place
 * without replacing anything; the folder synced. The mark itself stays
 * (the caller removes it once the store it marked is replaced). -1 with
 * err and nothing made. */
int storefile_mismatch_keep(const storefile_mark_t *m, const char *kept, char *kept_mark,
                            size_t kept_marklen, char *err, size_t errlen);

/* A store file with more than one name (st_nlink > 1: a hard link) is
 * refused for a start and --rekey: SQLite names the -wal and -journal
 * after the name a store is opened under, so two names of one store can
 * corrupt it, and the mark beside one name is not beside the other.
 * Returns 0 (one name, or no file: the caller says that), or -1 with err
 * naming the count and what to do: when another name is one the project's
 * own commands leave (an interrupted --restored's STORE.replaced-..., an
 * interrupted --init's STORE.initializing), that name and the command
 * that removes it; when store_path is itself such a name of STORE's
 * file (an offline reader may be given it), STORE and that command. */
int storefile_links_refuse(const char *store_path, char *err, size_t errlen);

/* The store's file as SQLite names its -wal and -shm: the file a store
 * path that is a symbolic link names (realpath), or the path itself when
 * it cannot be resolved (no file). Returns 0, or -1 when it does not fit. */
int storefile_real(char *out, size_t outlen, const char *store_path);

/* What an interrupted schakeld --restored left beside the store before
 * its rename: STORE.restoring (its copy of the backup) or that copy's
 * -wal, -shm or .lock. The store is as it was, and the broker serves it
 * (a start beside STORE.lost-wal is refused apart: lost_wal_refuse); the
 * restore did not happen. Returns 1 with why naming the files and the two
 * ways on (run that restore again; remove them if it is abandoned), else
 * 0 (nothing there, or the path does not fit). */
int storefile_restore_unfinished(const char *store_path, char *why, size_t whylen);

/* STORE.lost-wal beside the store's file (storefile_real): the WAL of a
 * store a schakeld --restored set aside and that an interruption left
 * (its frames are a store's last commits: the live store's, when the
 * restore had not yet put the backup in place). A start and --rekey are
 * refused while it is there; the next --restored puts it back where it
 * belongs (restore.c). Returns 0, or -1 with err naming it and what to
 * do. */
int storefile_lost_wal_refuse(const char *store_path, char *err, size_t errlen);

/* For the offline readers of a store (schakelctl audit): what a start
 * refuses beside a store whose files, as they stand, may not hold its
 * last commits: a STORE.lost-wal or a -wal beside a linked store path
 * (storefile_lost_wal_refuse), or a second name of its file that an
 * interrupted restore left, whose own -wal may hold them
 * (storefile_links_refuse; also when store_path is itself that name). A
 * trail read as the files stand would then verify without them. Returns
 * 0; -1 with their err (the file and what to do); or 1 when the file
 * has another name that none of the project's commands left (a hard link
 * made by hand, or the file a symbolic link store path named, which a
 * restore keeps under a second name), with err saying that a -wal beside
 * that name is not read: a warning, as nothing shows that one is there.
 * The audit-mismatch mark is not refused: it asks for that very
 * verification. */
int storefile_whole_refuse(const char *store_path, char *err, size_t errlen);

#endif
