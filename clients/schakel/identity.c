/*
 * identity.c — `schakel keygen` (a new key pair on disk) and `schakel whoami`
 * (who the broker authenticated us as). Key files are written and read by
 * the library (common/keys.c); this file only talks to the user.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "keys.h"

#define IDENTITY_WHOAMI_TIMEOUT_MS 5000

static const char identity_keygen_usage[] =
    "usage: schakel keygen NAME\n"
    "\n"
    "Write a new Ed25519 key pair: NAME.key (secret, mode 0600) and NAME.pub,\n"
    "and print the public key (Z85, 40 characters) for the broker's policy.\n"
    "Existing files are never overwritten.\n";

static const char identity_whoami_usage[] =
    "usage: schakel whoami [OPTIONS]\n"
    "\n"
    "Connect and print the principal, partner and role the broker\n"
    "authenticated us as.\n"
    "\n" CLI_COMMON_HELP;

/* After a keygen that failed: when NAME's folder is not there, say so,
 * with what to do (the library's "cannot create NAME.key: No such file or
 * directory" leaves the reader to guess which part is missing). Returns 1
 * if it said so. */
static int identity_folder_missing(const char *name)
{
    char folder[4096];
    const char *slash = strrchr(name, '/');
    if (slash == NULL || (size_t)(slash - name) >= sizeof folder)
        return 0; /* the current folder, which is there */
    size_t len = slash == name ? 1 : (size_t)(slash - name);
    memcpy(folder, name, len);
    folder[len] = '\0';
    struct stat st;
    if (stat(folder, &st) == 0 || errno != ENOENT)
        return 0;
    cli_say("keygen: cannot create %s.key: the folder %s does not exist; create it first "
            "(mkdir -p, or for the broker's keys: install -d -m 0750 -g schakel %s)",
            name, folder, folder);
    return 1;
}

/* Only --help (or -h), before or after NAME: the optstring's '-' hands
 * the arguments over in order, NAME as 1, whatever POSIXLY_CORRECT says.
 * A NAME that begins with '-' is refused even after "--": it would read as
 * an option everywhere else. */
int identity_keygen_main(int argc, char **argv)
{
    static const struct option options[] = {{"help", 0, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *name = NULL;
    int names = 0, option;
    opterr = 0; /* its '?' and ':' are told apart by cli_option_error */
    while ((option = getopt_long(argc, argv, "-:h", options, NULL)) != -1) {
        if (option == 'h') {
            fputs(identity_keygen_usage, stdout);
            return CLI_EXIT_OK;
        }
        if (option != 1)
            return cli_option_error("keygen", option, options, argc, argv);
        if (names++ == 0)
            name = optarg;
    }
    for (; optind < argc; optind++) /* after "--" */
        if (names++ == 0)
            name = argv[optind];
    if (names != 1 || name[0] == '\0' || name[0] == '-')
        return cli_usage_error("keygen", "keygen wants exactly one NAME");
    schakel_error_t err;
    memset(&err, 0, sizeof err);
    schakel_status_t status = schakel_keygen(name, &err);
    if (status != SCHAKEL_OK) {
        if (!identity_folder_missing(name))
            cli_say("keygen: %s", err.text);
        return status == SCHAKEL_ERR_USAGE ? CLI_EXIT_USAGE : CLI_EXIT_FAILURE;
    }
    char pub_path[4096], text[256] = "", z85[41];
    uint8_t sign_pk[32];
    snprintf(pub_path, sizeof pub_path, "%s.pub", name);
    if (keys_load_public(pub_path, sign_pk, text, sizeof text) != 0) {
        cli_say("keygen: wrote the key pair but cannot read %s back: %s", pub_path, text);
        return CLI_EXIT_FAILURE;
    }
    keys_public_z85(sign_pk, z85);
    printf("%s\n", z85);
    return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
}

static int identity_print(const cli_options_t *opts, const char *principal, const char *partner,
                          const char *role)
{
    if (!opts->json) {
        printf("principal=%s partner=%s role=%s\n", principal, partner, role);
        return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
    }
    json_t *obj =
        json_pack("{s:s, s:s, s:s}", "principal", principal, "partner", partner, "role", role);
    int rc = obj != NULL && cli_print_json(obj) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
    json_decref(obj);
    return rc;
}

int identity_whoami_main(int argc, char **argv)
{
    cli_options_t opts;
    int rc = cli_parse_common_options("whoami", identity_whoami_usage, argc, argv, &opts);
    if (rc != CLI_GO_ON)
        return rc;
    if (optind != argc)
        return cli_usage_error("whoami", "whoami takes no arguments ('%s')", argv[optind]);
    schakel_client_t *client = NULL;
    rc = cli_connect(&opts, &client);
    if (rc != CLI_EXIT_OK)
        return rc;
    char principal[130], partner[130], role[130];
    schakel_status_t status =
        schakel_whoami(client, principal, partner, role, IDENTITY_WHOAMI_TIMEOUT_MS);
    if (status == SCHAKEL_OK)
        rc = identity_print(&opts, principal, partner, role);
    else
        rc = cli_report("whoami", status, schakel_last_error(client));
    schakel_close(&client);
    return rc;
}
