/*
 * audit_cmd.h — `schakelctl audit verify|subject|tail`: the broker's audit
 * trail read offline from a store file (read-only, without the store key;
 * a copy of the file will do). docs/OPERATIONS.md "Audit trail" describes
 * the commands, their output and the encodings they check.
 */
#ifndef SCHAKEL_AUDIT_CMD_H
#define SCHAKEL_AUDIT_CMD_H

/* Exit codes of the audit commands. */
#define AUDIT_CMD_OK 0     /* done; for verify: the trail is intact */
#define AUDIT_CMD_FAILED 1 /* could not do it: unreadable store or key file */
#define AUDIT_CMD_USAGE 2  /* bad arguments */
#define AUDIT_CMD_BROKEN 3 /* verify: the trail is broken (the first broken entry is named) */
/* 4 is schakelctl's: the broker cannot be reached (ctl.h) */
#define AUDIT_CMD_NOT_WHOLE                                                                        \
    5 /* the store's files are as an interrupted restore leaves them,                              \
       * or its file has a second name: not read (storefile.h) */

/* Run `schakelctl audit ...`: argv[0] is "audit", argv[1] the subcommand
 * (verify, subject, tail, help). Writes results to stdout, errors to
 * stderr, and returns one of the exit codes above. */
int audit_cmd_main(int argc, char **argv);

/* 1 if arg, standing where `audit subject` still expects its PSEUDONYM
 * (offline here, or through the broker in ctl_show.c), is that PSEUDONYM
 * though it begins with '-': it begins with a single '-' and is not -h.
 * PROTOCOL.md 5.2 lets a pseudonym begin with '-', and the audit commands
 * have no short option but -h, so nothing else is lost; one that begins
 * with "--" is told from a long option only by a "--" before it. */
int audit_cmd_dash_pseudonym(const char *arg);

#endif
