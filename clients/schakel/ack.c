/*
 * ack.c — `schakel ack SEQ...`: acknowledge deliveries by seq, without
 * receiving them: for an operator dropping one that `listen` said it cannot
 * read (PROTOCOL.md 7.11). Sends the Acks, then one round trip (a
 * Heartbeat) that comes back after the broker has taken them, and reports
 * a refusal (UNKNOWN_DELIVERY: a seq not pending) that came before it.
 */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#define ACK_CONFIRM_TIMEOUT_MS 5000

static const char ack_usage[] =
    "usage: schakel ack [OPTIONS] SEQ...\n"
    "\n"
    "Acknowledge deliveries by their seq without receiving them: the broker\n"
    "removes them from our mailbox, and they are not delivered again. Meant\n"
    "for a delivery that 'schakel listen' said it cannot read.\n"
    "\n" CLI_COMMON_HELP;

/* The seqs of argv[first..argc), each a decimal from 1, into *out (a new
 * array the caller frees). Returns CLI_EXIT_OK, or an exit code after a
 * report. */
static int ack_parse_seqs(int argc, char **argv, int first, uint64_t **out)
{
    *out = NULL;
    if (first >= argc)
        return cli_usage_error("ack", "ack wants the seqs to acknowledge");
    uint64_t *seqs = calloc((size_t)(argc - first), sizeof *seqs);
    if (seqs == NULL) {
        cli_say("ack: out of memory");
        return CLI_EXIT_FAILURE;
    }
    for (int i = first; i < argc; i++) {
        long long seq;
        if (cli_parse_number(argv[i], 1, INT64_MAX, &seq) != 0) {
            free(seqs);
            return cli_usage_error("ack", "a seq is a positive number, not '%s'", argv[i]);
        }
        seqs[i - first] = (uint64_t)seq;
    }
    *out = seqs;
    return CLI_EXIT_OK;
}

/* Send the Acks and wait for the broker to have taken them. Returns the
 * exit code: a refusal recorded meanwhile is CLI_EXIT_REFUSED. */
static int ack_send(const cli_options_t *opts, schakel_client_t *client, const uint64_t *seqs,
                    size_t n)
{
    uint64_t backlog = 0;
    schakel_status_t status = schakel_ack_many(client, seqs, n);
    if (status == SCHAKEL_OK)
        status = schakel_backlog(client, &backlog, ACK_CONFIRM_TIMEOUT_MS);
    if (status != SCHAKEL_OK)
        return cli_report("ack", status, schakel_last_error(client));
    /* A new client's last error is empty: one there now is a refusal of
     * our Acks, recorded by the round trip that came back after it. */
    const schakel_error_t *refusal = schakel_last_error(client);
    if (refusal->status == SCHAKEL_ERR_REFUSED)
        return cli_report("ack", refusal->status, refusal);
    if (opts->json) {
        json_t *line =
            json_pack("{s:I,s:I}", "acked", (json_int_t)n, "backlog", (json_int_t)backlog);
        int rc = line != NULL && cli_print_json(line) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
        json_decref(line);
        return rc;
    }
    printf("acked=%zu backlog=%llu\n", n, (unsigned long long)backlog);
    return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
}

int ack_main(int argc, char **argv)
{
    cli_options_t opts;
    int rc = cli_parse_common_options("ack", ack_usage, argc, argv, &opts);
    if (rc != CLI_GO_ON)
        return rc;
    uint64_t *seqs = NULL;
    rc = ack_parse_seqs(argc, argv, optind, &seqs);
    if (rc != CLI_EXIT_OK)
        return rc;
    schakel_client_t *client = NULL;
    rc = cli_connect(&opts, &client);
    if (rc == CLI_EXIT_OK)
        rc = ack_send(&opts, client, seqs, (size_t)(argc - optind));
    schakel_close(&client);
    free(seqs);
    return rc;
}
