/*
 * owner.h — whose the files are that an offline command (schakeld --init,
 * --restored) makes beside a store: the store's owner, so that the
 * broker's service user can open what a command run as root made.
 */
#ifndef SCHAKEL_OWNER_H
#define SCHAKEL_OWNER_H

#include <stddef.h>
#include <sys/types.h>

typedef struct file_owner {
    uid_t uid;
    gid_t gid;
    mode_t mode;
} file_owner_t;

/* The owner of the store file at store_path, or, for a store not made
 * yet, its folder's owner; and mode 0600 either way (a store file that
 * group or others may read is one the broker makes owner-only at its
 * start). Returns 0, or -1 with err ("FOLDER: No such file or
 * directory"). */
int owner_of_store(const char *store_path, file_owner_t *owner, char *err, size_t errlen);

/* Give the file at path (through fd when fd >= 0) owner's uid and gid,
 * with a chown only when they differ (an unprivileged run owns the files
 * already), and, by path, owner's mode. Returns 0, or -1 with err
 * ("PATH: cannot give it the store's owner: ..."). */
int owner_give(const char *path, int fd, const file_owner_t *owner, char *err, size_t errlen);

#endif
