/*
 * fileguard.h — open a file that only root and the user reading it can
 * replace: the key files, the policy, the config.
 *
 * The rule is OpenSSH's StrictModes, adapted: every folder from "/" down
 * to the file (for a relative name, the working folder and every folder
 * above it first; after a symbolic link, each link's folder and the
 * folders its target passes) must belong to root or to the reader (the
 * effective uid), and must not be writable by group or others unless it
 * is sticky, where a symbolic link must be root's or the reader's too.
 * Whoever owns a folder, or may write it, can rename what is in it away
 * and put their own in its place: a whole keys folder, a ConfigMap's
 * dated folder. The file itself is the caller's to check (its kind, mode
 * and owner), on the fd returned.
 *
 * The mode bits cover POSIX ACLs: on a file with an access ACL the group
 * bits are the ACL mask, which bounds every named user's and group's
 * entry (acl(5)); a mask without write leaves no entry that may write.
 *
 * Nothing is followed by the kernel: each name is opened O_PATH |
 * O_NOFOLLOW in the folder before it, a link's target read from the link
 * as opened, and every check is an fstat of what was opened, so a name
 * swapped between a check and an open cannot dodge one. Folders are
 * opened O_PATH: one the reader may search but not list (mode 0711)
 * passes. Nothing is printed, nothing aborts (libschakel links this).
 */
#ifndef SCHAKEL_FILEGUARD_H
#define SCHAKEL_FILEGUARD_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* How many symbolic links one open of a policy or config follows,
 * wherever they are in the name. A ConfigMap mount takes two (policy.yaml
 * -> ..data/policy.yaml, ..data -> a dated folder). A key file's name,
 * made from the policy's folder as named, may pass those and its own:
 * the kernel's bound (MAXSYMLINKS). */
#define FILEGUARD_MAX_LINKS 8
#define FILEGUARD_KERNEL_LINKS 40

/* fileguard_open flags. */
#define FILEGUARD_FOLLOW_LAST 1u /* a link at the end is followed as the others; else ELOOP */
#define FILEGUARD_FOLDER_ONLY 2u /* open the folder that would hold the last name, not the name */

typedef enum fileguard_fault {
    FILEGUARD_OK = 0,
    FILEGUARD_SYSTEM,       /* a name could not be opened or examined: sys_errno */
    FILEGUARD_FOLDER_OPEN,  /* a folder group or others may write, and not sticky */
    FILEGUARD_FOLDER_OWNER, /* a folder of another user than root and the reader */
    FILEGUARD_LINK_OWNER,   /* a link of another user in a sticky folder others may write */
    FILEGUARD_NOT_ON_DISK,  /* a /proc link to no file on disk (a pipe, a socket): link */
} fileguard_fault_t;

/* Why fileguard_open refused, for the caller's message (fileguard_describe). */
typedef struct fileguard_problem {
    fileguard_fault_t fault;
    int sys_errno;           /* FILEGUARD_SYSTEM */
    char folder[PATH_MAX];   /* the folder at fault, in the operator's words */
    bool holds_it;           /* that folder holds the last name (else it is on the way) */
    mode_t folder_mode;      /* its st_mode & 07777 */
    uid_t folder_uid;        /* its owner */
    char link[NAME_MAX + 1]; /* FILEGUARD_LINK_OWNER: the link's name in the folder;
                              * FILEGUARD_NOT_ON_DISK: its text ("pipe:[1234]") */
    uid_t link_uid;          /* and its owner */
} fileguard_problem_t;

/* An opened file. dir and name say where it was found, in the operator's
 * words (the name given, or a link's target). */
typedef struct fileguard_file {
    int fd;     /* O_RDONLY | O_NONBLOCK | O_NOFOLLOW; -1 with FILEGUARD_FOLDER_ONLY */
    int dir_fd; /* the folder holding it, O_PATH */
    char dir[PATH_MAX];
    char name[NAME_MAX + 1];
} fileguard_file_t;

/* Open path as above: every folder on the way checked, links followed one
 * at a time (at most max_links, then ELOOP; one at the end only with
 * FILEGUARD_FOLLOW_LAST, else the open fails ELOOP). The last name is
 * opened O_RDONLY | O_NOFOLLOW | O_NONBLOCK (a FIFO does not block: the
 * caller refuses what is not a regular file), or not at all with
 * FILEGUARD_FOLDER_ONLY. A link of /proc whose text is no name but what
 * the fd it stands for is open on ("pipe:[1234]" for /dev/fd/63, a
 * process substitution's) is never followed, at the end or on the way:
 * FILEGUARD_NOT_ON_DISK says what it is (with or without
 * FILEGUARD_FOLLOW_LAST). Returns 0 with *file filled (fileguard_close it),
 * or -1 with *problem filled and nothing left open. Safe on any path. */
int fileguard_open(const char *path, unsigned flags, int max_links, fileguard_file_t *file,
                   fileguard_problem_t *problem);

/* Close what fileguard_open opened; safe twice. */
void fileguard_close(fileguard_file_t *file);

/* problem in words, what naming the file ("policy", "config", "key"):
 * the folder (or link), its owner and mode, and the chmod or chown that
 * mends it. Written into out, truncated to outlen. */
void fileguard_describe(const fileguard_problem_t *problem, const char *what, char *out,
                        size_t outlen);

/* The name of a user, or "?" for a uid no account has. */
void fileguard_user_name(uid_t uid, char *out, size_t outlen);

#endif
