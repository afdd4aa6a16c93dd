/*
 * optreport.h — what was wrong with a command-line option that
 * getopt_long refused, in one sentence.
 *
 * schakel and schakelctl parse every command with getopt_long (opterr = 0,
 * an optstring that starts with ':' after any '+' or '-') and hand its '?'
 * or ':' here, so that both tools name a wrong option the same way: the option
 * itself (not the argument before it, which is what argv[optind - 1] is
 * while getopt is inside a cluster of short options), and the reason.
 */
#ifndef SCHAKEL_OPTREPORT_H
#define SCHAKEL_OPTREPORT_H

#include <stddef.h>

struct option;

/* The message for getopt_long's `result` ('?' or ':') into out (cut to
 * outlen, always terminated), from the optind and optopt getopt_long left
 * and the argc, argv and long options table it was given. One of:
 *   unknown option '--name'        (an "=value" is not repeated)
 *   option '--na' is ambiguous (--name, --names)
 *   --name needs a value           (the full name, also when abbreviated)
 *   --name takes no value          (a flag given "--name=...")
 *   unknown option '-x'            (also inside a cluster such as -qx)
 *   -x needs a value
 * Call it right after getopt_long returned, before getopt is called again.
 * A long option whose val is a character must be that short option too (as
 * is usual): its val is how a refused long option is told from a refused
 * short one. Safe on any command line: argv is only read. */
void optreport_describe(int result, const struct option *options, int argc, char *const argv[],
                        char *out, size_t outlen);

/* The entry of options that getopt_long's `result` ('?' or ':') refused,
 * when that was a long option of the table (named in full or abbreviated)
 * given a value it does not take, or without the value it needs; NULL for
 * an unknown or ambiguous long option and for a short option. For a
 * command that shares one table among several subcommands, to name an
 * option of another one as such rather than say what its value lacks. The
 * same preconditions as optreport_describe; safe on any command line. */
const struct option *optreport_refused_long(int result, const struct option *options, int argc,
                                            char *const argv[]);

#endif
