/*
 * init.h — schakeld --init: the store key and an empty store, each made
 * only where there is none.
 *
 * The broker never makes its own store (store.h, STORE_OPEN_EXISTING): a
 * store that is gone stays gone until an operator restores a backup or
 * runs this, knowingly.
 */
#ifndef SCHAKEL_INIT_H
#define SCHAKEL_INIT_H

/* With store_path NULL: make the store key file at store_key_path (mode
 * 0600), refusing an existing file. With a store_path: the key file is
 * made if it is not there (and kept, and used, if it is), then an empty
 * store at the current schema version, sealed under that key, if none is
 * there; a store that is there is left as it is, byte for byte, and so is
 * an empty file at store_path, and a store file missing while its -wal is
 * there gets no new store under that WAL. The new store is made as
 * PATH.initializing beside it (a leftover of an interrupted run, with its
 * side files, removed first), synced, and moved to the store path only if
 * nothing is there then (renameat2 RENAME_NOREPLACE): an interruption
 * leaves no file at the store path, and a store that appeared meanwhile is
 * left as it is. The one --init at a time holds the store's lock file
 * throughout. A new store and its lock file get the owner of the store's
 * folder (owner.h), so that a run as root makes what the service user can
 * open. Prints what it made and left on
 * stdout, a refusal on stderr. Returns the exit status: 0 when it made
 * something, 1 when it made nothing or failed, 2 without store_key_path. */
int init_command(const char *store_key_path, const char *store_path);

#endif
