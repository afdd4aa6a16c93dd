/*
 * main.c — `schakel`, the command-line tool of partner systems and
 * caseworkers: dispatches to keygen, whoami, publish, import, listen, ack,
 * case and inbox.
 *
 * Trusts nothing on the command line; every subcommand parses its own
 * options. Exit codes: 0 ok, 1 other failure, 2 usage, 3 refused by the
 * broker, 4 cannot reach or authenticate to the broker.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "coredump.h"

static const char main_usage[] =
    "usage: schakel COMMAND [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  keygen NAME   write a new key pair NAME.key (0600) and NAME.pub\n"
    "  whoami        show the principal, partner and role the broker knows us as\n"
    "  publish       publish signals (from options, or JSON lines on stdin)\n"
    "  import FILE   publish a feed (JSON lines or CSV) in batches; resumable\n"
    "  listen        receive deliveries, print them, then acknowledge them\n"
    "  ack SEQ...    acknowledge deliveries by seq (one listen cannot read)\n"
    "  case          work on cases: open, invite, accept, decline, leave, note,\n"
    "                attach, close, reopen, link, list, show\n"
    "  inbox         what waits for us: deliveries, invitations, open cases\n"
    "\n"
    "Run 'schakel COMMAND --help' for the options of a command; see schakel(1).\n"
    "Exit status: 0 ok, 1 failure, 2 usage, 3 refused by the broker (import: some\n"
    "lines refused), 4 cannot reach or authenticate to the broker, 5 import\n"
    "interrupted (run it again to go on).\n";

int main(int argc, char **argv)
{
    /* First, before any key is read (coredump.h): a partner's secret keys
     * and the signals it sends and receives are in this process. */
    char why[256];
    if (coredump_disable("schakel", why, sizeof why) != 0) {
        fprintf(stderr, "schakel: %s\n", why);
        return CLI_EXIT_FAILURE;
    }
    if (argc < 2)
        return cli_usage_error(NULL, "no command given");
    const char *command = argv[1];
    if (strcmp(command, "--help") == 0 || strcmp(command, "-h") == 0 ||
        strcmp(command, "help") == 0) {
        fputs(main_usage, stdout);
        return CLI_EXIT_OK;
    }
    /* Subcommands see argv[0] = their own name, as getopt expects. */
    if (strcmp(command, "keygen") == 0)
        return identity_keygen_main(argc - 1, argv + 1);
    if (strcmp(command, "whoami") == 0)
        return identity_whoami_main(argc - 1, argv + 1);
    if (strcmp(command, "publish") == 0)
        return publish_main(argc - 1, argv + 1);
    if (strcmp(command, "import") == 0)
        return import_main(argc - 1, argv + 1);
    if (strcmp(command, "listen") == 0)
        return listen_main(argc - 1, argv + 1);
    if (strcmp(command, "ack") == 0)
        return ack_main(argc - 1, argv + 1);
    if (strcmp(command, "case") == 0)
        return case_main(argc - 1, argv + 1);
    if (strcmp(command, "inbox") == 0)
        return case_inbox_main(argc - 1, argv + 1);
    return cli_usage_error(NULL, "unknown command '%s'", command);
}
