/*
 * owner.c — the owner an offline command gives the files it makes beside a
 * store (owner.h).
 *
 * Trusts the paths it is given (from the broker's configuration); changes
 * nothing but owner and mode. Errors: -1 with a message naming the file.
 */
#include "owner.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int owner_of_store(const char *store_path, file_owner_t *owner, char *err, size_t errlen)
{
    struct stat st;
    if (stat(store_path, &st) == 0) {
        /* owner-only, whatever the replaced store had: the broker would
         * make a looser mode so at its start anyway (storefile.h) */
        *owner = (file_owner_t){st.st_uid, st.st_gid, 0600};
        return 0;
    }
    char dir[PATH_MAX];
    const char *slash = strrchr(store_path, '/');
    snprintf(dir, sizeof dir, "%.*s", slash == NULL ? 1 : (int)(slash - store_path),
             slash == NULL ? "." : store_path);
    if (dir[0] == '\0')
        snprintf(dir, sizeof dir, "/");
    if (stat(dir, &st) != 0)
        return snprintf(err, errlen, "%s: %s", dir, strerror(errno)), -1;
    *owner = (file_owner_t){st.st_uid, st.st_gid, 0600};
    return 0;
}

int owner_give(const char *path, int fd, const file_owner_t *owner, char *err, size_t errlen)
{
    struct stat st;
    int rc = fd >= 0 ? fstat(fd, &st) : stat(path, &st);
    if (rc == 0 && (st.st_uid != owner->uid || st.st_gid != owner->gid))
        rc = fd >= 0 ? fchown(fd, owner->uid, owner->gid) : chown(path, owner->uid, owner->gid);
    if (rc == 0 && fd < 0 && (st.st_mode & 0777) != owner->mode)
        rc = chmod(path, owner->mode);
    if (rc != 0)
        snprintf(err, errlen, "%s: cannot give it the store's owner: %s", path, strerror(errno));
    return rc;
}
