/*
 * main.c — `schakelctl`, the operators' tool: dispatches to the commands
 * that ask the broker's admin endpoint (status, partners, rules, reload,
 * pending),
 * the policy commands that need no broker (policy check, policy explain),
 * and the audit commands (audit_cmd.c).
 *
 * Trusts nothing on the command line; every command parses its own
 * options. Exit codes: 0 ok, 1 the command failed, 2 usage, 3 audit verify
 * found the trail broken, 4 cannot reach or authenticate to the broker.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit_cmd.h"
#include "coredump.h"
#include "ctl.h"
#include "schakel_limits.h"

static const char main_usage[] =
    "usage: schakelctl COMMAND [OPTIONS]\n"
    "\n"
    "commands (ask the broker's admin endpoint, operator keys only):\n"
    "  status          uptime, version, policy, connections, counters, backlog, store size\n"
    "  partners        per partner and principal: connected, last seen, backlog, refusals\n"
    "  rules           the rules in force: ids, hashes, scope, purposes, legal bases\n"
    "  reload          reload the broker's policy now and report the outcome\n"
    "  pending PRINCIPAL  the deliveries waiting for PRINCIPAL, oldest first, and their state\n"
    "commands without a broker:\n"
    "  policy check FILE      validate a policy file (FILE:LINE: errors, warnings)\n"
    "  policy explain ...     which rule would decide about a signal, and what passes\n"
    "  audit ...              the audit trail (see schakelctl audit --help)\n"
    "\n"
    "Run 'schakelctl COMMAND --help' for the options of a command; see schakelctl(8).\n"
    "Exit status: 0 ok, 1 the command failed, 2 usage, 3 audit verify found the\n"
    "trail broken, 4 cannot reach or authenticate to the broker, 5 audit did not read\n"
    "the store: its files are as an interrupted restore left them.\n";

/* An audit export goes to the broker when an admin endpoint is named (an
 * --admin option or SCHAKEL_ADMIN) and no store file is. Whole option
 * names only: --store-key names no store (the broker's path then refuses
 * it as an option it does not take, rather than an export of the default
 * store going unrecorded), and the offline path takes no abbreviation of
 * --store either (for subject each is ambiguous with --store-key). */
static int wants_broker(int argc, char **argv)
{
    int admin = getenv("SCHAKEL_ADMIN") != NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--store") == 0 || strncmp(argv[i], "--store=", 8) == 0)
            return 0;
        if (strcmp(argv[i], "--admin") == 0 || strncmp(argv[i], "--admin=", 8) == 0)
            admin = 1;
    }
    return admin;
}

int main(int argc, char **argv)
{
    /* First, before any key is read (coredump.h): an operator's secret
     * key, the store key of an offline audit command and what it exports
     * are in this process. */
    char why[256];
    if (coredump_disable("schakelctl", why, sizeof why) != 0) {
        fprintf(stderr, "schakelctl: %s\n", why);
        return CTL_EXIT_FAILURE;
    }
    if (argc < 2)
        return ctl_usage_error(NULL, "no command given");
    const char *command = argv[1];
    if (strcmp(command, "--help") == 0 || strcmp(command, "-h") == 0 ||
        strcmp(command, "help") == 0) {
        fputs(main_usage, stdout);
        return CTL_EXIT_OK;
    }
    if (strcmp(command, "--version") == 0) {
        printf("schakelctl %s (protocol %u)\n", SCHAKEL_VERSION, SCHAKEL_PROTOCOL_VERSION);
        return CTL_EXIT_OK;
    }
    /* Commands see argv[0] = their own name, as getopt expects. */
    if (strcmp(command, "status") == 0 || strcmp(command, "partners") == 0 ||
        strcmp(command, "rules") == 0 || strcmp(command, "reload") == 0)
        return ctl_show_main(argc - 1, argv + 1);
    if (strcmp(command, "pending") == 0)
        return ctl_pending_main(argc - 1, argv + 1);
    if (strcmp(command, "policy") == 0)
        return ctl_policy_main(argc - 1, argv + 1);
    if (strcmp(command, "audit") == 0) {
        /* `audit subject P --admin EP`: through the broker, which records
         * the export in the trail; with --store: offline, from a copy. */
        if (argc >= 3 && strcmp(argv[2], "subject") == 0 && wants_broker(argc, argv)) {
            for (int i = 3; i < argc; i++)
                if (strcmp(argv[i], "--store-key") == 0 ||
                    strncmp(argv[i], "--store-key=", 12) == 0)
                    return ctl_usage_error(NULL,
                                           "audit subject through the broker (SCHAKEL_ADMIN or "
                                           "--admin) takes no --store-key: the broker uses its "
                                           "own; give --store PATH to export from a store file");
            argv[2] = (char *)"audit-subject";
            return ctl_show_main(argc - 2, argv + 2);
        }
        return audit_cmd_main(argc - 1, argv + 1);
    }
    return ctl_usage_error(NULL, "unknown command '%s'", command);
}
