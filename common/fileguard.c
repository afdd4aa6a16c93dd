/*
 * fileguard.c — open a file only root and its reader can replace (see
 * fileguard.h).
 *
 * Trusts no name on the path: each is opened without following it and
 * checked as opened. Errors are returned as a fileguard_problem_t, never
 * printed; an fd opened is closed on every error path.
 */
#define _GNU_SOURCE /* O_PATH */
#include "fileguard.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <linux/magic.h> /* PROC_SUPER_MAGIC */
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

void fileguard_user_name(uid_t uid, char *out, size_t outlen)
{
    struct passwd entry, *found = NULL;
    char buf[1024];
    if (getpwuid_r(uid, &entry, buf, sizeof buf, &found) == 0 && found != NULL)
        snprintf(out, outlen, "%s", found->pw_name);
    else
        snprintf(out, outlen, "?");
}

/* Where the walk has got to: the folder reached, as opened, and its name
 * in the operator's words; the names still to resolve (rest from pos);
 * how many links it followed. */
typedef struct walk {
    int dir_fd;
    char shown_dir[PATH_MAX];
    char rest[PATH_MAX];
    size_t pos;
    int links, max_links;
    unsigned flags;
    fileguard_problem_t *problem;
} walk_t;

static int fail_errno(walk_t *walk, int err)
{
    walk->problem->fault = FILEGUARD_SYSTEM;
    walk->problem->sys_errno = err;
    return -1;
}

/* "DIR/NAME", "NAME" when dir is "." or name is absolute, "/NAME" under
 * the root. -1 if it does not fit. */
static int join(char *out, size_t outlen, const char *dir, const char *name)
{
    int n;
    if (strcmp(dir, ".") == 0 || name[0] == '/')
        n = snprintf(out, outlen, "%s", name);
    else if (strcmp(dir, "/") == 0)
        n = snprintf(out, outlen, "/%s", name);
    else
        n = snprintf(out, outlen, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

/* Whether the rest of the walk names nothing after the next name: the
 * folder reached holds the last name. */
static bool holds_last(const walk_t *walk)
{
    const char *p = walk->rest + walk->pos;
    while (*p == '/')
        p++;
    const char *slash = strchr(p, '/');
    if (slash == NULL)
        return true;
    while (*slash == '/')
        slash++;
    return *slash == '\0';
}

/* The folder fd (shown as shown): refused when another user than root and
 * the reader owns it, or group or others may write it and it is not
 * sticky. A sticky folder others may write is taken here: what is in it
 * must then be the reader's or root's (a folder: this same rule; a link:
 * follow_link; the file: the caller's check of its owner). */
static int check_folder(walk_t *walk, int fd, const char *shown, bool holds_it)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return fail_errno(walk, errno);
    if (!S_ISDIR(st.st_mode))
        return fail_errno(walk, ENOTDIR);
    uid_t self = geteuid();
    fileguard_fault_t fault = FILEGUARD_OK;
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0)
        fault = FILEGUARD_FOLDER_OPEN;
    else if (st.st_uid != 0 && st.st_uid != self)
        fault = FILEGUARD_FOLDER_OWNER;
    if (fault == FILEGUARD_OK)
        return 0;
    fileguard_problem_t *p = walk->problem;
    p->fault = fault;
    snprintf(p->folder, sizeof p->folder, "%s", shown);
    p->holds_it = holds_it;
    p->folder_mode = st.st_mode & 07777;
    p->folder_uid = st.st_uid;
    return -1;
}

/* The start of a relative name is the working folder, which the reader
 * chose but did not necessarily make safe: it and every folder above it
 * up to "/" are checked, each reached by ".." from the one below (what
 * was opened, not a name), and named for the messages from getcwd. */
static int check_working_folder(walk_t *walk)
{
    char cwd[PATH_MAX];
    bool named = getcwd(cwd, sizeof cwd) != NULL && cwd[0] == '/';
    if (!named)
        snprintf(cwd, sizeof cwd, ".");
    if (check_folder(walk, walk->dir_fd, cwd, holds_last(walk)) != 0)
        return -1;
    struct stat below;
    if (fstat(walk->dir_fd, &below) != 0)
        return fail_errno(walk, errno);
    int fd = openat(walk->dir_fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
    for (int depth = 0; fd >= 0; depth++) {
        struct stat up;
        if (fstat(fd, &up) != 0 || depth > PATH_MAX / 2) {
            int saved = depth > PATH_MAX / 2 ? ELOOP : errno;
            close(fd);
            return fail_errno(walk, saved);
        }
        if (up.st_dev == below.st_dev && up.st_ino == below.st_ino)
            break; /* ".." of "/" is "/": checked as the one below */
        char *slash = strrchr(cwd, '/');
        if (named && slash != NULL)
            slash[slash == cwd ? 1 : 0] = '\0';
        else if (!named && strlen(cwd) + 3 < sizeof cwd)
            strcat(cwd, strcmp(cwd, ".") == 0 ? "." : "/..");
        if (check_folder(walk, fd, cwd, false) != 0) {
            close(fd);
            return -1;
        }
        below = up;
        int next = openat(fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
        close(fd);
        fd = next;
    }
    if (fd < 0)
        return fail_errno(walk, errno);
    close(fd);
    return 0;
}

/* Restart the walk at "/" (an absolute name, or a link's absolute target). */
static int start_at_root(walk_t *walk)
{
    int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return fail_errno(walk, errno);
    if (walk->dir_fd >= 0)
        close(walk->dir_fd);
    walk->dir_fd = fd;
    snprintf(walk->shown_dir, sizeof walk->shown_dir, "/");
    return check_folder(walk, fd, "/", holds_last(walk));
}

/* Whether target, the text of a link in walk->dir_fd, is no name but what
 * a /proc fd link stands for ("pipe:[1234]", "socket:[5678]",
 * "anon_inode:[eventfd]"): the kernel opens such an fd's own file, but as
 * a name it is a relative one that does not exist. Said as
 * FILEGUARD_NOT_ON_DISK (-1), never followed; 0 for any other link. Only
 * in /proc, and only a text with a ':' in its first name: /proc's other
 * relative links are names ("self" -> "4946", "mounts" -> "self/mounts"),
 * and a link elsewhere with such a text names a file next to it. */
static int not_on_disk(walk_t *walk, const char *target)
{
    struct statfs fs;
    size_t first = strcspn(target, "/");
    if (target[0] == '/' || memchr(target, ':', first) == NULL || fstatfs(walk->dir_fd, &fs) != 0 ||
        fs.f_type != PROC_SUPER_MAGIC)
        return 0;
    fileguard_problem_t *p = walk->problem;
    p->fault = FILEGUARD_NOT_ON_DISK;
    snprintf(p->link, sizeof p->link, "%.*s", (int)sizeof p->link - 1, target); /* cut */
    return -1;
}

/* The link name in walk->dir_fd, at the end of a walk that does not follow
 * one there: -1 (FILEGUARD_NOT_ON_DISK) when it is a /proc fd link to no
 * file on disk, else 0 (the caller refuses the link as a link). */
static int last_not_on_disk(walk_t *walk, const char *name)
{
    char target[PATH_MAX];
    ssize_t n = readlinkat(walk->dir_fd, name, target, sizeof target);
    if (n <= 0 || (size_t)n >= sizeof target)
        return 0;
    target[n] = '\0';
    return not_on_disk(walk, target);
}

/* name, in walk->dir_fd and opened there as link_fd, is a symbolic link:
 * believed only if it is the reader's or root's where others may write
 * its folder (sticky, or the folder would have been refused), its target
 * read from the link as opened. The walk goes on at the target followed
 * by the names after the link (more: there were some). */
static int follow_link(walk_t *walk, const char *name, int link_fd, bool more)
{
    struct stat st, dir_st;
    char target[PATH_MAX], next[PATH_MAX];
    if (fstat(link_fd, &st) != 0 || fstat(walk->dir_fd, &dir_st) != 0)
        return fail_errno(walk, errno);
    uid_t self = geteuid();
    if ((dir_st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && st.st_uid != self && st.st_uid != 0) {
        fileguard_problem_t *p = walk->problem;
        p->fault = FILEGUARD_LINK_OWNER;
        snprintf(p->folder, sizeof p->folder, "%s", walk->shown_dir);
        p->holds_it = true;
        p->folder_mode = dir_st.st_mode & 07777;
        p->folder_uid = dir_st.st_uid;
        snprintf(p->link, sizeof p->link, "%s", name);
        p->link_uid = st.st_uid;
        return -1;
    }
    if (++walk->links > walk->max_links)
        return fail_errno(walk, ELOOP);
    ssize_t n = readlinkat(link_fd, "", target, sizeof target);
    if (n <= 0 || (size_t)n >= sizeof target)
        return fail_errno(walk, n < 0 ? errno : n == 0 ? ENOENT : ENAMETOOLONG);
    target[n] = '\0';
    if (not_on_disk(walk, target) != 0)
        return -1;
    n = snprintf(next, sizeof next, "%s%s%s", target, more ? "/" : "", walk->rest + walk->pos);
    if (n < 0 || (size_t)n >= sizeof next)
        return fail_errno(walk, ENAMETOOLONG);
    memcpy(walk->rest, next, (size_t)n + 1);
    walk->pos = 0;
    if (target[0] != '/')
        return 0; /* relative to the link's folder, where the walk is */
    return start_at_root(walk);
}

/* walk->step: the walk moved on to the next name; done: the file (or with
 * FILEGUARD_FOLDER_ONLY its folder) is reached. */
enum { STEP_ON = 1, STEP_DONE = 2 };

/* Resolve the next name of walk->rest in walk->dir_fd. Returns STEP_ON,
 * STEP_DONE (*fd the file, or -1 with FILEGUARD_FOLDER_ONLY; *last its
 * name), or -1 with the problem filled. */
static int step(walk_t *walk, int *fd, char *last, size_t lastlen)
{
    char *name = walk->rest + walk->pos;
    while (*name == '/')
        name++;
    if (*name == '\0') /* the path ends in '/': it names a folder */
        return fail_errno(walk, EISDIR);
    char *end = strchr(name, '/');
    bool more = end != NULL;
    if (more)
        *end = '\0';
    walk->pos = (size_t)(name - walk->rest) + strlen(name) + (more ? 1 : 0);
    if (!more && strlen(name) >= lastlen)
        return fail_errno(walk, ENAMETOOLONG);
    if (!more && (walk->flags & FILEGUARD_FOLDER_ONLY)) {
        memcpy(last, name, strlen(name) + 1);
        *fd = -1;
        return STEP_DONE;
    }
    if (!more) {
        *fd = openat(walk->dir_fd, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
        if (*fd >= 0) {
            memcpy(last, name, strlen(name) + 1);
            return STEP_DONE;
        }
        int err = errno;
        if (err == ELOOP && (walk->flags & FILEGUARD_FOLLOW_LAST) == 0 &&
            last_not_on_disk(walk, name) != 0)
            return -1;
        if (err != ELOOP || (walk->flags & FILEGUARD_FOLLOW_LAST) == 0)
            return fail_errno(walk, err);
    }
    struct stat st;
    int entry = openat(walk->dir_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (entry < 0 || fstat(entry, &st) != 0) {
        int saved = errno;
        if (entry >= 0)
            close(entry);
        return fail_errno(walk, saved);
    }
    if (S_ISLNK(st.st_mode)) {
        int rc = follow_link(walk, name, entry, more);
        close(entry);
        return rc == 0 ? STEP_ON : -1;
    }
    char shown_dir[PATH_MAX];
    if (!S_ISDIR(st.st_mode) || join(shown_dir, sizeof shown_dir, walk->shown_dir, name) != 0) {
        close(entry);
        return fail_errno(walk, S_ISDIR(st.st_mode) ? ENAMETOOLONG : ENOTDIR);
    }
    if (check_folder(walk, entry, shown_dir, holds_last(walk)) != 0) {
        close(entry);
        return -1;
    }
    close(walk->dir_fd);
    walk->dir_fd = entry;
    memcpy(walk->shown_dir, shown_dir, sizeof shown_dir);
    return STEP_ON;
}

int fileguard_open(const char *path, unsigned flags, int max_links, fileguard_file_t *file,
                   fileguard_problem_t *problem)
{
    walk_t walk = {.dir_fd = -1, .flags = flags, .max_links = max_links, .problem = problem};
    memset(problem, 0, sizeof *problem);
    file->fd = -1;
    file->dir_fd = -1;
    int n = snprintf(walk.rest, sizeof walk.rest, "%s", path);
    if (n < 0 || (size_t)n >= sizeof walk.rest)
        return fail_errno(&walk, ENAMETOOLONG);
    if (n == 0)
        return fail_errno(&walk, ENOENT);
    int rc;
    if (walk.rest[0] == '/') {
        rc = start_at_root(&walk);
    } else {
        walk.dir_fd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
        snprintf(walk.shown_dir, sizeof walk.shown_dir, ".");
        rc = walk.dir_fd < 0 ? fail_errno(&walk, errno) : check_working_folder(&walk);
    }
    int fd = -1;
    while (rc == 0 && (rc = step(&walk, &fd, file->name, sizeof file->name)) == STEP_ON)
        rc = 0;
    if (rc != STEP_DONE) {
        if (walk.dir_fd >= 0)
            close(walk.dir_fd);
        return -1;
    }
    file->fd = fd;
    file->dir_fd = walk.dir_fd;
    memcpy(file->dir, walk.shown_dir, sizeof file->dir);
    return 0;
}

void fileguard_close(fileguard_file_t *file)
{
    if (file->fd >= 0)
        close(file->fd);
    if (file->dir_fd >= 0)
        close(file->dir_fd);
    file->fd = -1;
    file->dir_fd = -1;
}

/* What a /proc fd link's text says the fd is open on, in words. */
static const char *fileguard_not_on_disk_kind(const char *text)
{
    if (strncmp(text, "pipe:", 5) == 0)
        return "a pipe or process substitution";
    if (strncmp(text, "socket:", 7) == 0)
        return "a socket";
    if (strncmp(text, "anon_inode:", 11) == 0)
        return "an anonymous inode: an eventfd, epoll, timerfd or the like";
    return "a kernel object, not a file";
}

void fileguard_describe(const fileguard_problem_t *p, const char *what, char *out, size_t outlen)
{
    char owner[64], reader[64];
    uid_t self = geteuid();
    const char *where = p->holds_it ? "its folder" : "the folder";
    const char *above = p->holds_it ? "" : " above it";
    switch (p->fault) {
    case FILEGUARD_OK:
        snprintf(out, outlen, "no fault");
        return;
    case FILEGUARD_SYSTEM:
        snprintf(out, outlen, "cannot open: %s", strerror(p->sys_errno));
        return;
    case FILEGUARD_FOLDER_OPEN:
        snprintf(out, outlen,
                 "group or others may write %s %s%s (mode %04o), so they can put another %s in "
                 "its place: run: chmod go-w %s, or move the %s to a folder only its owner may "
                 "write",
                 where, p->folder, above, (unsigned)p->folder_mode, what, p->folder, what);
        return;
    case FILEGUARD_FOLDER_OWNER:
        fileguard_user_name(p->folder_uid, owner, sizeof owner);
        fileguard_user_name(self, reader, sizeof reader);
        snprintf(out, outlen,
                 "%s %s%s belongs to uid %u (%s), not to root or uid %u (%s, the reader), so its "
                 "owner can put another %s in its place: run: chown root %s, or move the %s to "
                 "folders only root or the reader own",
                 where, p->folder, above, (unsigned)p->folder_uid, owner, (unsigned)self, reader,
                 what, p->folder, what);
        return;
    case FILEGUARD_LINK_OWNER:
        snprintf(out, outlen,
                 "group or others may write its folder %s (mode %04o, sticky) and the symbolic "
                 "link %s there belongs to uid %u, not to uid %u (the reader) or root, so its "
                 "owner can put another %s in its place: move the %s to a folder only its owner "
                 "may write",
                 p->folder, (unsigned)p->folder_mode, p->link, (unsigned)p->link_uid,
                 (unsigned)self, what, what);
        return;
    case FILEGUARD_NOT_ON_DISK:
        snprintf(out, outlen, "not a file on disk but %s (%s): give the %s file's own path",
                 p->link, fileguard_not_on_disk_kind(p->link), what);
        return;
    }
    snprintf(out, outlen, "refused");
}
