/*
 * listen.c — `schakel listen`: receive deliveries (signals and case
 * events), print each one (a key=value line, or a JSON object per line),
 * flush stdout, and only then acknowledge it, so a delivery is never acked
 * that did not reach the output.
 * Stops on --count, --drain (broker reports backlog 0), --timeout, or
 * SIGINT/SIGTERM. A failed write to stdout stops without acking (exit 1).
 */
#include "cli.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

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
    "acknowledge it.\n"
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
}

static int64_t listen_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A case event: which case, then the event as `case show` prints it. */
static void listen_print_case_event(const schakel_delivery_t *d)
{
    printf("seq=%llu case=%s ", (unsigned long long)d->seq, d->case_event->case_id);
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
    printf("seq=%llu", (unsigned long long)d->seq);
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

/* Print one delivery and flush. Returns 0, or -1 if it did not reach stdout. */
static int listen_print(const cli_options_t *opts, const schakel_delivery_t *d)
{
    if (opts->json) {
        json_t *obj = jsonio_delivery_to_json(d);
        int rc = obj != NULL ? cli_print_json(obj) : -1;
        json_decref(obj);
        return rc;
    }
    listen_print_human(d);
    return fflush(stdout) == 0 && !ferror(stdout) ? 0 : -1;
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

/* Receive one delivery (up to wait_ms), print it, ack it. Returns 1 when a
 * delivery was handled, 0 on a quiet timeout, or -(exit code) on failure. */
static int listen_one(const cli_options_t *opts, schakel_client_t *client, int wait_ms)
{
    schakel_delivery_t *d = NULL;
    schakel_status_t status = schakel_receive(client, &d, wait_ms);
    if (status == SCHAKEL_ERR_TIMEOUT)
        return 0;
    if (status != SCHAKEL_OK)
        return -cli_report("listen", status, schakel_last_error(client));
    int printed = listen_print(opts, d);
    uint64_t seq = d->seq;
    schakel_delivery_free(&d);
    if (printed != 0) {
        cli_say("listen: cannot write to stdout; delivery seq=%llu not acknowledged",
                (unsigned long long)seq);
        return -CLI_EXIT_FAILURE;
    }
    status = schakel_ack(client, seq);
    if (status != SCHAKEL_OK)
        return -cli_report("ack", status, schakel_last_error(client));
    return 1;
}

/* The receive loop. Returns the exit code. */
static int listen_loop(const cli_options_t *opts, const listen_settings_t *settings,
                       schakel_client_t *client)
{
    int64_t deadline = settings->timeout_s > 0 ? listen_now_ms() + settings->timeout_s * 1000 : -1;
    long long received = 0;
    while (!listen_stop) {
        int wait_ms = LISTEN_SLICE_MS;
        if (deadline >= 0) {
            int64_t left = deadline - listen_now_ms();
            if (left <= 0)
                break;
            if (left < wait_ms)
                wait_ms = (int)left;
        }
        int got = listen_one(opts, client, wait_ms);
        if (got < 0)
            return -got;
        received += got;
        if (settings->count > 0 && received >= settings->count) {
            listen_confirm_acks(client);
            return CLI_EXIT_OK;
        }
        if (got == 0 && settings->drain) {
            uint64_t backlog = 0;
            schakel_status_t status = schakel_backlog(client, &backlog, LISTEN_BACKLOG_TIMEOUT_MS);
            if (status != SCHAKEL_OK)
                return cli_report("listen: backlog", status, schakel_last_error(client));
            if (backlog == 0)
                return CLI_EXIT_OK;
        }
    }
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
