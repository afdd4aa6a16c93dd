/*
 * listen.c — `schakel listen`: receive deliveries (signals and case
 * events), print each one (a key=value line, or a JSON object per line),
 * and only then acknowledge it, so a delivery is never acked that did not
 * reach the output. What is already queued is taken as one batch (at most
 * half the Flow window): printed, then, when stdout is a regular file, synced
 * once (fdatasync), then acked together. A pipe or terminal cannot be
 * synced: what was written into it is acked.
 * Stops on --count, --drain (broker reports backlog 0), --timeout, or
 * SIGINT/SIGTERM. A failed write or sync stops without acking what it
 * failed for (exit 1), and cuts a regular file back to its last whole
 * delivery, so that no partial line stays for the next copy to join.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "schakel_limits.h"
#include "syntax.h"

#define LISTEN_SLICE_MS 500 /* longest wait between checks of signals and deadline */
#define LISTEN_BACKLOG_TIMEOUT_MS 5000
#define LISTEN_MAX_TIMEOUT_S 31536000 /* a year */

enum listen_option {
    LISTEN_OPT_COUNT = CLI_OPT_FIRST_OWN,
    LISTEN_OPT_DRAIN,
    LISTEN_OPT_TIMEOUT,
    LISTEN_OPT_WINDOW,
};

static const char listen_usage[] =
    "usage: schakel listen [OPTIONS]\n"
    "\n"
    "Receive deliveries (signals and case events), print each one and then\n"
    "acknowledge it (written to a regular file: once the file is synced).\n"
    "\n"
    "  --count N            exit 0 after N deliveries\n"
    "  --drain              exit 0 once the broker reports nothing left to deliver\n"
    "  --timeout S          stop after S seconds: exit 0, or 1 if --count or --drain\n"
    "                       was not satisfied by then\n"
    "  --window N           deliveries in flight before we ack (default 64, max "
    "1024)\n" CLI_COMMON_HELP;

static const struct option listen_options[] = {
    CLI_COMMON_LONG_OPTIONS,
    {"count", 1, NULL, LISTEN_OPT_COUNT},
    {"drain", 0, NULL, LISTEN_OPT_DRAIN},
    {"timeout", 1, NULL, LISTEN_OPT_TIMEOUT},
    {"window", 1, NULL, LISTEN_OPT_WINDOW},
    {NULL, 0, NULL, 0},
};

typedef struct listen_settings {
    long long count; /* 0 = no limit */
    int drain;
    long long timeout_s; /* 0 = none */
    unsigned window;
} listen_settings_t;

/* Where the deliveries go. A regular file is synced before its deliveries
 * are acked, and cut back when one could not be written whole. */
typedef struct listen_output {
    int is_file;
    int append; /* O_APPEND: each write goes to the end, whatever the offset says */
} listen_output_t;

/* Deliveries printed and not yet acked: at most a Flow window. */
typedef struct listen_batch {
    uint64_t seqs[SCHAKEL_MAX_WINDOW];
    size_t n;
    off_t start;     /* a file's end before the batch: where a failed sync cuts back to */
    off_t end;       /* where the batch's last delivery ended in the file */
    int contiguous;  /* nothing but the batch was written from start to end */
    int unconfirmed; /* acks were sent that no round trip has confirmed since */
} listen_batch_t;

static volatile sig_atomic_t listen_stop;

static void listen_on_signal(int signo)
{
    (void)signo;
    listen_stop = 1;
}

static void listen_catch_signals(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = listen_on_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    /* A reader that went away is a write error (EPIPE) to report, not a
     * silent death with status 141. */
    action.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &action, NULL);
}

static int64_t listen_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* seq, then what identifies the item also when it comes again under a new
 * seq (a broker restored from a backup, its partners publishing again):
 * the sender's message id and the item's index in it. */
static void listen_print_ids(const schakel_delivery_t *d)
{
    char message_id[2 * SCHAKEL_MESSAGE_ID_BYTES + 1];
    syntax_hex(d->message_id, sizeof d->message_id, message_id);
    printf("seq=%llu message_id=%s item_index=%u", (unsigned long long)d->seq, message_id,
           (unsigned)d->item_index);
}

/* A case event: which case, then the event as `case show` prints it. */
static void listen_print_case_event(const schakel_delivery_t *d)
{
    listen_print_ids(d);
    printf(" case=%s ", d->case_event->case_id);
    case_print_event(d->case_event);
    cli_field("rule", d->rule_id);
    if (d->redelivery)
        printf(" redelivery");
    putchar('\n');
}

static void listen_print_human(const schakel_delivery_t *d)
{
    char when[40], address[64];
    if (d->is_case_event && d->case_event != NULL) {
        listen_print_case_event(d);
        return;
    }
    listen_print_ids(d);
    cli_field("from", d->sender);
    cli_field("kind", d->kind);
    cli_field("theme", d->theme);
    cli_field("area", d->area);
    if (d->postcode != NULL || d->house_number != 0) {
        snprintf(address, sizeof address, "%s%s%u%s%s", d->postcode ? d->postcode : "",
                 d->postcode ? " " : "", d->house_number, d->addition ? " " : "",
                 d->addition ? d->addition : "");
        cli_field("address", address);
    }
    cli_field("subject", d->subject);
    cli_field("severity", fields_severity_name(d->severity));
    if (d->observed_at != 0) {
        fields_format_time(d->observed_at, when, sizeof when);
        cli_field("observed", when);
    }
    cli_field("case", d->case_ref);
    cli_field("ref", d->source_ref);
    cli_field("rule", d->rule_id);
    if (d->redelivery)
        printf(" redelivery");
    cli_field("grounds", d->grounds);
    cli_field("summary", d->summary);
    putchar('\n');
}

/* Print one delivery and flush. Returns 0, or -1 if it did not reach
 * stdout whole (errno says why, 0 when it is unknown). */
static int listen_print(const cli_options_t *opts, const schakel_delivery_t *d)
{
    errno = 0;
    if (opts->json) {
        json_t *obj = jsonio_delivery_to_json(d);
        int rc = obj != NULL ? cli_print_json(obj) : -1;
        json_decref(obj);
        return rc;
    }
    listen_print_human(d);
    return fflush(stdout) == 0 && !ferror(stdout) ? 0 : -1;
}

static void listen_output_init(listen_output_t *out)
{
    struct stat st;
    int flags = fcntl(STDOUT_FILENO, F_GETFL);
    out->is_file = fstat(STDOUT_FILENO, &st) == 0 && S_ISREG(st.st_mode);
    out->append = flags != -1 && (flags & O_APPEND) != 0;
}

/* Where the next delivery begins in a regular file (all before it is
 * flushed). For an O_APPEND file that is its end: the offset of a file
 * opened with >> is 0 until the first write. -1 if it cannot be told. */
static off_t listen_offset(const listen_output_t *out)
{
    return out->is_file ? lseek(STDOUT_FILENO, 0, out->append ? SEEK_END : SEEK_CUR) : -1;
}

/* Take back what a failed write or sync left: stdio's unwritten bytes
 * (defensive: glibc drops them when a write fails, the C standard does not
 * say so, and the exit would write them after the cut) and, in a regular
 * file, everything from `offset` on, but only while the file ends where
 * our own writing left it (`end`): a file other programs append to too
 * (several listeners into one inbox) keeps what they wrote after us. */
static void listen_cut_back(const listen_output_t *out, off_t offset, off_t end)
{
    struct stat st;
    __fpurge(stdout);
    if (!out->is_file)
        return;
    if (offset < 0 || end < 0)
        cli_say("listen: cannot cut standard output back to its last whole delivery (its "
                "offset is unknown); it may end in a partial line");
    else if (fstat(STDOUT_FILENO, &st) != 0 || st.st_size != end)
        cli_say("listen: standard output was not cut back to its last whole delivery: another "
                "program wrote to it after this one; it may hold a partial line of ours");
    else if (ftruncate(STDOUT_FILENO, offset) != 0)
        cli_say("listen: cannot cut standard output back to its last whole delivery (%s); "
                "it may end in a partial line",
                strerror(errno));
}

/* After the last ack: one round trip proves the broker has processed them. */
static void listen_confirm_acks(schakel_client_t *client)
{
    uint64_t backlog;
    if (schakel_backlog(client, &backlog, LISTEN_BACKLOG_TIMEOUT_MS) != SCHAKEL_OK)
        cli_say("listen: could not confirm the last acks (%s); those deliveries may come "
                "again",
                schakel_last_error(client)->text);
}

/* Make the batch's deliveries durable (a regular file: fdatasync) and ack
 * them together. Returns 0, or -(exit code) after a report: a failed sync
 * cuts the file back to where the batch began and acks nothing. */
static int listen_commit(const listen_output_t *out, schakel_client_t *client,
                         listen_batch_t *batch)
{
    size_t n = batch->n;
    batch->n = 0;
    if (n == 0)
        return 0;
    if (out->is_file && fdatasync(STDOUT_FILENO) != 0) {
        int error = errno;
        /* whole lines, not synced, not acked: they come again; taken back
         * when the file holds only ours from start on */
        if (batch->contiguous) {
            listen_cut_back(out, batch->start, batch->end);
        } else {
            __fpurge(stdout);
            cli_say("listen: standard output was not cut back: another program wrote to it "
                    "between this one's deliveries, which stay in it whole");
        }
        cli_say("listen: cannot sync standard output (%s); %zu deliveries from seq=%llu not "
                "acknowledged",
                strerror(error), n, (unsigned long long)batch->seqs[0]);
        return -CLI_EXIT_FAILURE;
    }
    schakel_status_t status = schakel_ack_many(client, batch->seqs, n);
    if (status != SCHAKEL_OK)
        return -cli_report("ack", status, schakel_last_error(client));
    batch->unconfirmed = 1;
    return 0;
}

/* Print d into the batch. Returns 0, or -(exit code) after a report when it
 * could not be written whole: it is cut back and not acked; those before
 * it in the batch are committed. */
static int listen_add(const cli_options_t *opts, const listen_output_t *out,
                      schakel_client_t *client, listen_batch_t *batch, const schakel_delivery_t *d)
{
    off_t offset = listen_offset(out);
    if (batch->n == 0) {
        batch->start = batch->end = offset;
        batch->contiguous = 1;
    } else if (offset != batch->end) {
        batch->contiguous = 0; /* another program appended between ours */
    }
    if (listen_print(opts, d) == 0) {
        batch->seqs[batch->n++] = d->seq;
        batch->end = out->is_file ? lseek(STDOUT_FILENO, 0, SEEK_CUR) : -1;
        return 0;
    }
    int error = errno;
    listen_cut_back(out, offset, out->is_file ? lseek(STDOUT_FILENO, 0, SEEK_CUR) : -1);
    cli_say("listen: cannot write to standard output (%s); delivery seq=%llu not acknowledged",
            error != 0 ? strerror(error) : "cause unknown", (unsigned long long)d->seq);
    int rc = listen_commit(out, client, batch);
    return rc != 0 ? rc : -CLI_EXIT_FAILURE;
}

/* Receive one batch: a delivery within wait_ms, then what is already
 * queued, at most max in all; print them, then commit them. Returns how
 * many were handled (0 on a quiet timeout), or -(exit code). */
static long long listen_batch(const cli_options_t *opts, const listen_output_t *out,
                              schakel_client_t *client, listen_batch_t *batch, int wait_ms,
                              size_t max)
{
    schakel_status_t status = SCHAKEL_OK;
    long long handled = 0;
    for (size_t taken = 0; taken < max; taken++) {
        schakel_delivery_t *d = NULL;
        status = schakel_receive(client, &d, taken == 0 ? wait_ms : 0);
        if (status != SCHAKEL_OK)
            break;
        int rc = listen_add(opts, out, client, batch, d);
        schakel_delivery_free(&d);
        if (rc != 0)
            return rc;
        handled++;
    }
    /* What was printed before a failed receive is acked before the report. */
    schakel_error_t error = *schakel_last_error(client);
    int rc = listen_commit(out, client, batch);
    if (rc != 0)
        return rc;
    if (status != SCHAKEL_OK && status != SCHAKEL_ERR_TIMEOUT)
        return -cli_report("listen", status, &error);
    return handled;
}

/* The loop ended by a signal (exit 0) or at --timeout: 0, or 1 with a
 * report when --count or --drain was not satisfied by then. */
static int listen_stopped(const listen_settings_t *settings, long long received)
{
    if (listen_stop)
        return CLI_EXIT_OK;
    if (settings->count > 0) {
        cli_say("listen: received %lld of %lld deliveries within %lld s", received, settings->count,
                settings->timeout_s);
        return CLI_EXIT_FAILURE;
    }
    if (settings->drain) {
        cli_say("listen: the backlog was not drained within %lld s", settings->timeout_s);
        return CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}

/* The receive loop. Returns the exit code. */
static int listen_loop(const cli_options_t *opts, const listen_settings_t *settings,
                       schakel_client_t *client)
{
    int64_t deadline = settings->timeout_s > 0 ? listen_now_ms() + settings->timeout_s * 1000 : -1;
    long long received = 0;
    listen_output_t out;
    listen_output_init(&out);
    listen_batch_t *batch = calloc(1, sizeof *batch);
    if (batch == NULL) {
        cli_say("listen: out of memory");
        return CLI_EXIT_FAILURE;
    }
    int rc = -1;
    while (!listen_stop && rc < 0) {
        int wait_ms = LISTEN_SLICE_MS;
        if (deadline >= 0) {
            int64_t left = deadline - listen_now_ms();
            if (left <= 0)
                break;
            if (left < wait_ms)
                wait_ms = (int)left;
        }
        /* Half the window at most: the broker sends the other half while
         * this batch is written and synced, and is not left idle. */
        size_t max = settings->window > 1 ? settings->window / 2 : 1;
        if (settings->count > 0 && (unsigned long long)(settings->count - received) < max)
            max = (size_t)(settings->count - received);
        long long got = listen_batch(opts, &out, client, batch, wait_ms, max);
        if (got < 0) {
            /* What reached the output before the failure was acked:
             * confirm it, or say that it may come again. */
            if (batch->unconfirmed)
                listen_confirm_acks(client);
            rc = (int)-got;
            break;
        }
        received += got;
        if (settings->count > 0 && received >= settings->count) {
            listen_confirm_acks(client);
            rc = CLI_EXIT_OK;
        } else if (got == 0 && settings->drain) {
            uint64_t backlog = 0;
            schakel_status_t status = schakel_backlog(client, &backlog, LISTEN_BACKLOG_TIMEOUT_MS);
            if (status != SCHAKEL_OK)
                rc = cli_report("listen: backlog", status, schakel_last_error(client));
            else if (backlog == 0)
                rc = CLI_EXIT_OK;
        }
    }
    free(batch);
    return rc >= 0 ? rc : listen_stopped(settings, received);
}

static int listen_option(listen_settings_t *settings, int option, const char *arg)
{
    long long number;
    switch (option) {
    case LISTEN_OPT_COUNT:
        if (cli_parse_number(arg, 1, INT64_MAX, &settings->count) != 0)
            return cli_bad_value("listen", "--count wants a positive number, not '%s'", arg);
        return 1;
    case LISTEN_OPT_DRAIN:
        settings->drain = 1;
        return 1;
    case LISTEN_OPT_TIMEOUT:
        if (cli_parse_number(arg, 1, LISTEN_MAX_TIMEOUT_S, &settings->timeout_s) != 0)
            return cli_bad_value("listen", "--timeout wants whole seconds, not '%s'", arg);
        return 1;
    case LISTEN_OPT_WINDOW:
        if (cli_parse_number(arg, 1, SCHAKEL_MAX_WINDOW, &number) != 0)
            return cli_bad_value("listen", "--window wants a number from 1 to %u, not '%s'",
                                 SCHAKEL_MAX_WINDOW, arg);
        settings->window = (unsigned)number;
        return 1;
    default:
        return 0;
    }
}

int listen_main(int argc, char **argv)
{
    cli_options_t opts;
    listen_settings_t settings = {0, 0, 0, SCHAKEL_DEFAULT_WINDOW};
    cli_options_init(&opts);
    int option;
    opterr = 0; /* its '?' and ':' are told apart by cli_option_error */
    while ((option = getopt_long(argc, argv, "+:", listen_options, NULL)) != -1) {
        int rc = cli_common_option(&opts, option, optarg);
        if (rc == 0)
            rc = listen_option(&settings, option, optarg);
        if (rc < 0)
            return CLI_EXIT_USAGE;
        if (rc == 0)
            return cli_option_error("listen", option, listen_options, argc, argv);
    }
    if (opts.help) {
        fputs(listen_usage, stdout);
        return CLI_EXIT_OK;
    }
    if (optind != argc)
        return cli_usage_error("listen", "listen takes no arguments ('%s')", argv[optind]);
    listen_catch_signals();
    schakel_client_t *client = NULL;
    int rc = cli_connect(&opts, &client);
    if (rc != CLI_EXIT_OK)
        return rc;
    schakel_status_t status = schakel_subscribe(client, settings.window);
    if (status != SCHAKEL_OK)
        rc = cli_report("listen", status, schakel_last_error(client));
    else
        rc = listen_loop(&opts, &settings, client);
    schakel_close(&client);
    return rc;
}
