/*
 * listen.c — `schakel listen`: receive deliveries (signals and case
 * events), print each one (a key=value line, or a JSON object per line),
 * and only then acknowledge it, so a delivery is never acked that did not
 * reach the output. What is already queued is taken as one batch (at most
 * half the Flow window): printed, then, when stdout is a regular file, synced
 * once (fdatasync), then acked together. A pipe or terminal cannot be
 * synced: what was written into it is acked.
 * A regular file is checked before anything is received: it must have a
 * name (its folder is synced once before the first ack), and a partial
 * last line (a crash while writing) is ended with a newline first.
 * Stops on --count, --drain (broker reports backlog 0), --timeout, or
 * SIGINT/SIGTERM (after the delivery being written; a second one at
 * once). A failed write or sync stops without acking what it failed for
 * (exit 1), and cuts a regular file back to its last whole delivery, so
 * that no partial line stays for the next copy to join.
 * A delivery the library cannot read is said on stderr (its seq and why),
 * not printed and not acked (unless --ack-undecodable), and listen goes on
 * with those behind it: one broken delivery, sent again at every
 * reconnect, must not stop a partner's feed. A run that leaves such
 * deliveries unacked ends with exit 1 (not after a SIGINT or SIGTERM).
 */
#include "cli.h"
#include "plural.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
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
    LISTEN_OPT_ACK_UNDECODABLE,
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
    "1024)\n"
    "  --ack-undecodable    acknowledge a delivery that cannot be read, once said on\n"
    "                       stderr: it is dropped (default: left, and exit 1 at the "
    "end)\n" CLI_COMMON_HELP;

static const struct option listen_options[] = {
    CLI_COMMON_LONG_OPTIONS,
    {"count", 1, NULL, LISTEN_OPT_COUNT},
    {"drain", 0, NULL, LISTEN_OPT_DRAIN},
    {"timeout", 1, NULL, LISTEN_OPT_TIMEOUT},
    {"window", 1, NULL, LISTEN_OPT_WINDOW},
    {"ack-undecodable", 0, NULL, LISTEN_OPT_ACK_UNDECODABLE},
    {NULL, 0, NULL, 0},
};

typedef struct listen_settings {
    long long count; /* 0 = no limit */
    int drain;
    long long timeout_s; /* 0 = none */
    unsigned window;
    int ack_undecodable; /* ack a delivery that cannot be read, once said */
} listen_settings_t;

/* Deliveries that could not be read, said and left unacked in this run:
 * they hold slots of the window until acked (PROTOCOL 7.11). Each is said
 * once; as many as the window stop the feed, said once too. */
#define LISTEN_UNREADABLE_LISTED 10 /* seqs named in the closing summary */
typedef struct listen_unreadable {
    uint64_t seqs[SCHAKEL_MAX_WINDOW];
    size_t n;
    int window_said;
} listen_unreadable_t;

/* Where the deliveries go. A regular file is synced before its deliveries
 * are acked, and cut back when one could not be written whole. */
typedef struct listen_output {
    int is_file;
    int append;              /* O_APPEND: each write goes to the end, whatever the offset says */
    int folder_fd;           /* the file's folder, for the run; else -1 */
    int folder_synced;       /* its entry of the file is durable (before the first ack) */
    char name[NAME_MAX + 1]; /* the file's name in it */
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

/* The first SIGINT or SIGTERM asks for a stop after the delivery being
 * written; a second one ends the process at once, by that signal (what
 * was not written whole is not acked: it comes again). */
static void listen_on_signal(int signo)
{
    if (listen_stop) {
        signal(signo, SIG_DFL);
        raise(signo); /* blocked in its handler: taken as it returns */
        return;
    }
    listen_stop = 1;
}

/* SA_RESTART: a write blocked in a full pipe goes on after the signal
 * instead of failing with EINTR, which stdio would report as a failed
 * write (exit 1, and a partial line left in the pipe). Waits for the
 * broker (poll) are not restarted by it and see the stop within a slice. */
static void listen_catch_signals(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = listen_on_signal;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    sigaddset(&action.sa_mask, SIGINT);
    sigaddset(&action.sa_mask, SIGTERM);
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    action.sa_flags = 0;
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

/* The folder holding the file `st` (standard output's), opened, found by
 * the name /proc gives the descriptor and checked to hold that file under
 * that name. Returns the folder's descriptor, or -1 after a report: a file
 * with no name (deleted), or one whose name cannot be found there, cannot
 * have its folder synced, and what is written to a deleted one is gone
 * when it is closed; acking deliveries into either could lose them, so
 * listen refuses it before anything is received. */
static int listen_open_folder(const struct stat *st, char *name, size_t namelen)
{
    char path[PATH_MAX];
    struct stat named;
    if (st->st_nlink == 0) {
        cli_say("listen: standard output is a file that was deleted: what is written to it is "
                "lost once it is closed; nothing received");
        return -1;
    }
    ssize_t len = readlink("/proc/self/fd/1", path, sizeof path - 1);
    if (len > 0)
        path[len] = '\0';
    char *slash = len > 0 && path[0] == '/' ? strrchr(path, '/') : NULL;
    if (slash == NULL) {
        cli_say("listen: cannot find the name of standard output's file (%s), so its folder "
                "cannot be synced; nothing received",
                len < 0 ? strerror(errno) : "/proc/self/fd/1 names no path");
        return -1;
    }
    *slash = '\0';
    int folder = open(slash == path ? "/" : path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (folder < 0 || fstatat(folder, slash + 1, &named, AT_SYMLINK_NOFOLLOW) != 0 ||
        named.st_dev != st->st_dev || named.st_ino != st->st_ino) {
        int error = folder < 0 ? errno : 0;
        *slash = '/';
        cli_say("listen: standard output's file is not found under its name %s (%s), so its "
                "folder cannot be synced; nothing received",
                path, error != 0 ? strerror(error) : "another file or none is there now");
        if (folder >= 0)
            close(folder);
        return -1;
    }
    if (strlen(slash + 1) >= namelen) { /* a name longer than NAME_MAX was found: not possible */
        close(folder);
        cli_say("listen: the name of standard output's file is too long; nothing received");
        return -1;
    }
    strcpy(name, slash + 1);
    return folder;
}

/* Whether standard output's file is still the one under its name in its
 * folder. One deleted, or renamed away (a reader taking the inbox, a file
 * renamed over it), no longer is: what listen wrote into it is not where
 * the partner looks, and once listen closes a deleted one it is gone. */
static int listen_still_named(const listen_output_t *out)
{
    struct stat st, named;
    return fstat(STDOUT_FILENO, &st) == 0 && st.st_nlink > 0 &&
           fstatat(out->folder_fd, out->name, &named, AT_SYMLINK_NOFOLLOW) == 0 &&
           named.st_dev == st.st_dev && named.st_ino == st.st_ino;
}

/* Where in a regular file the last line before `end` begins: the byte
 * after its last newline before `end`, 0 if there is none. -1 on error. */
static off_t listen_line_start(int fd, off_t end)
{
    char chunk[4096];
    while (end > 0) {
        size_t want = end < (off_t)sizeof chunk ? (size_t)end : sizeof chunk;
        ssize_t got = pread(fd, chunk, want, end - (off_t)want);
        if (got != (ssize_t)want) {
            if (got >= 0)
                errno = EIO; /* shorter than it was a moment ago */
            return -1;
        }
        for (size_t i = want; i > 0; i--)
            if (chunk[i - 1] == '\n')
                return end - (off_t)want + (off_t)i;
        end -= (off_t)want;
    }
    return 0;
}

/* A file that does not end in a newline where our first delivery would
 * go ends in a fragment: a delivery being written when the system went
 * down (never synced, so never acked: it comes again). Appended to, it
 * would glue our first line onto it, two deliveries in one line that no
 * parser reads. The fragment is ended with a newline and said on stderr
 * (offset, length): it stays as one bad line, and ours stay whole.
 *
 * Why not cut it away (ftruncate back to its last newline), which would
 * leave only whole lines: ftruncate cannot say "only if the file still
 * ends here". Another listener appending to the same file between our look
 * and our cut would lose what it wrote, synced and acked. A newline
 * appended after such a line costs an empty line at most. What stays
 * unsafe: a listener that starts just while another is in the middle of
 * writing a line could end that line early, splitting it in two.
 *
 * The file is read through /proc/self/fd/1 (standard output is usually
 * opened for writing only). Returns 0, or -1 after a report when the
 * newline cannot be written. A file that cannot be read is said and left
 * as it is. */
static int listen_end_fragment(const listen_output_t *out, const struct stat *st)
{
    off_t at = out->append ? st->st_size : lseek(STDOUT_FILENO, 0, SEEK_CUR);
    if (at <= 0)
        return 0;
    int fd = open("/proc/self/fd/1", O_RDONLY | O_CLOEXEC);
    off_t start = fd >= 0 ? listen_line_start(fd, at) : -1;
    int error = errno;
    if (fd >= 0)
        close(fd);
    if (start < 0) {
        cli_say("listen: warning: cannot read standard output's file to see whether it ends in "
                "a partial line (%s)",
                strerror(error));
        return 0;
    }
    if (start == at)
        return 0;
    if (write(STDOUT_FILENO, "\n", 1) != 1) {
        cli_say("listen: standard output ends in a partial line (offset %lld, %lld bytes) that "
                "cannot be ended with a newline (%s); nothing received",
                (long long)start, (long long)(at - start), strerror(errno));
        return -1;
    }
    cli_say("listen: warning: standard output ended in a partial line (offset %lld, %lld bytes): "
            "a delivery written when the system went down, not acknowledged, which comes again; "
            "ended with a newline, it stays a line of its own",
            (long long)start, (long long)(at - start));
    return 0;
}

/* Standard output before anything is received: a regular file must have a
 * name (its folder is opened to be synced) and gets its fragment ended.
 * Returns CLI_EXIT_OK, or CLI_EXIT_FAILURE after a report. */
static int listen_output_open(listen_output_t *out)
{
    struct stat st;
    int flags = fcntl(STDOUT_FILENO, F_GETFL);
    out->is_file = fstat(STDOUT_FILENO, &st) == 0 && S_ISREG(st.st_mode);
    out->append = flags != -1 && (flags & O_APPEND) != 0;
    out->folder_fd = -1;
    out->folder_synced = 0;
    if (!out->is_file)
        return CLI_EXIT_OK;
    if ((out->folder_fd = listen_open_folder(&st, out->name, sizeof out->name)) < 0 ||
        listen_end_fragment(out, &st) != 0)
        return CLI_EXIT_FAILURE;
    return CLI_EXIT_OK;
}

static void listen_output_close(listen_output_t *out)
{
    if (out->folder_fd >= 0)
        close(out->folder_fd);
    out->folder_fd = -1;
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
    if (schakel_backlog(client, &backlog, LISTEN_BACKLOG_TIMEOUT_MS) == SCHAKEL_OK)
        return;
    const schakel_error_t *err = schakel_last_error(client);
    if (err->status == SCHAKEL_ERR_REFUSED && err->reason == SCHAKEL_REASON_NOT_PERMITTED)
        /* the principal was removed from the policy or its key replaced:
         * what waits for it is withdrawn, not sent again (PROTOCOL 8) */
        cli_say("listen: could not confirm the last acks (%s); this key is no longer "
                "admitted, and what still waited for it is withdrawn, not delivered again",
                err->text);
    else
        cli_say("listen: could not confirm the last acks (%s); those deliveries may come "
                "again",
                err->text);
}

/* Make what a regular file holds durable: its data, and before the first
 * ack of the run its folder, whose entry of the file the shell made (`>`):
 * lost in a power loss, it would take the file and every delivery acked
 * into it. Then, before every ack, the file must still be the one under
 * its name. Returns 0; -1 with errno and *what naming what failed; -2
 * when the file was deleted or renamed away. */
static int listen_sync(listen_output_t *out, const char **what)
{
    *what = "standard output";
    if (fdatasync(STDOUT_FILENO) != 0)
        return -1;
    if (!out->folder_synced) {
        *what = "the folder of standard output's file";
        if (fsync(out->folder_fd) != 0)
            return -1;
        out->folder_synced = 1;
    }
    return listen_still_named(out) ? 0 : -2;
}

/* Make the batch's deliveries durable (a regular file: listen_sync) and ack
 * them together. Returns 0, or -(exit code) after a report: a failed sync
 * cuts the file back to where the batch began and acks nothing. */
static int listen_commit(listen_output_t *out, schakel_client_t *client, listen_batch_t *batch)
{
    size_t n = batch->n;
    const char *what = "";
    batch->n = 0;
    if (n == 0)
        return 0;
    int synced = out->is_file ? listen_sync(out, &what) : 0;
    if (synced == -2) {
        /* the file is not where the partner looks; nothing to cut back */
        __fpurge(stdout);
        cli_say("listen: standard output's file was deleted or renamed away while listen ran "
                "(%s is another file or none now); %zu deliveries from seq=%llu not "
                "acknowledged: they come again",
                out->name, n, (unsigned long long)batch->seqs[0]);
        return -CLI_EXIT_FAILURE;
    }
    if (synced != 0) {
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
        cli_say("listen: cannot sync %s (%s); %zu deliveries from seq=%llu not acknowledged", what,
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
static int listen_add(const cli_options_t *opts, listen_output_t *out, schakel_client_t *client,
                      listen_batch_t *batch, const schakel_delivery_t *d)
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

static int listen_unreadable_known(const listen_unreadable_t *unreadable, uint64_t seq)
{
    for (size_t i = 0; i < unreadable->n; i++)
        if (unreadable->seqs[i] == seq)
            return 1;
    return 0;
}

/* Say on stderr that delivery seq cannot be read: a line of words, or with
 * --json a JSON object a partner's system can parse (stdout holds only
 * deliveries: a reader of the inbox file expects nothing else there). */
static void listen_say_unreadable(const cli_options_t *opts, uint64_t seq, const char *text,
                                  int acked)
{
    if (opts->json) {
        json_t *line = json_pack("{s:{s:I,s:s,s:b}}", "undecodable", "seq", (json_int_t)seq,
                                 "error", text, "acked", acked);
        char *raw = line != NULL ? json_dumps(line, JSON_COMPACT) : NULL;
        char *safe = raw != NULL ? syntax_json_escape_controls(raw) : NULL;
        json_decref(line);
        free(raw);
        if (safe != NULL) {
            fprintf(stderr, "%s\n", safe);
            free(safe);
            return;
        } /* short of memory: in words */
    }
    cli_say("listen: cannot read delivery seq=%llu, %s: %s", (unsigned long long)seq,
            acked ? "acknowledged (--ack-undecodable): dropped"
                  : "not acknowledged (it comes again until acknowledged or its retention ends)",
            text);
}

/* The delivery schakel_receive could not read: said (once a run unless
 * acked), acked with --ack-undecodable, else kept in `unreadable`. */
static void listen_on_unreadable(const cli_options_t *opts, const listen_settings_t *settings,
                                 listen_unreadable_t *unreadable, schakel_client_t *client,
                                 listen_batch_t *batch)
{
    uint64_t seq = schakel_undecodable_seq(client);
    char text[sizeof schakel_last_error(client)->text];
    snprintf(text, sizeof text, "%s", schakel_last_error(client)->text);
    if (settings->ack_undecodable) {
        schakel_status_t status = schakel_ack(client, seq);
        listen_say_unreadable(opts, seq, text, status == SCHAKEL_OK);
        if (status != SCHAKEL_OK)
            cli_say("listen: cannot acknowledge delivery seq=%llu (%s); it comes again",
                    (unsigned long long)seq, schakel_last_error(client)->text);
        else
            batch->unconfirmed = 1;
        return;
    }
    if (listen_unreadable_known(unreadable, seq))
        return; /* sent again: said already */
    listen_say_unreadable(opts, seq, text, 0);
    if (unreadable->n < SCHAKEL_MAX_WINDOW)
        unreadable->seqs[unreadable->n++] = seq;
    if (unreadable->n >= settings->window && !unreadable->window_said) {
        unreadable->window_said = 1;
        cli_say("listen: %zu %s that cannot be read fill%s the window of %u: nothing more "
                "is delivered until %s acknowledged (schakel ack SEQ..., or listen "
                "--ack-undecodable) or %s retention ends",
                unreadable->n, plural(unreadable->n, "delivery", "deliveries"),
                plural(unreadable->n, "s", ""), settings->window,
                plural(unreadable->n, "it is", "they are"), plural(unreadable->n, "its", "their"));
    }
}

/* At the end of a run: the deliveries left unread and unacked, said again
 * together. Returns rc, or CLI_EXIT_FAILURE for a run that would have
 * ended 0 and left some (a stop by a signal still ends 0). */
static int listen_unreadable_summary(const listen_unreadable_t *unreadable, int rc)
{
    char seqs[LISTEN_UNREADABLE_LISTED * 22 + 8] = "";
    size_t used = 0;
    if (unreadable->n == 0)
        return rc;
    for (size_t i = 0; i < unreadable->n && i < LISTEN_UNREADABLE_LISTED; i++)
        used += (size_t)snprintf(seqs + used, sizeof seqs - used, "%s%llu", i > 0 ? " " : "",
                                 (unsigned long long)unreadable->seqs[i]);
    if (unreadable->n > LISTEN_UNREADABLE_LISTED)
        snprintf(seqs + used, sizeof seqs - used, " ...");
    cli_say("listen: %zu %s could not be read and %s not acknowledged (seq %s): "
            "%s again until acknowledged (schakel ack SEQ...) or %s retention ends",
            unreadable->n, plural(unreadable->n, "delivery", "deliveries"),
            plural(unreadable->n, "was", "were"), seqs,
            plural(unreadable->n, "it comes", "they come"), plural(unreadable->n, "its", "their"));
    return rc == CLI_EXIT_OK && !listen_stop ? CLI_EXIT_FAILURE : rc;
}

/* Receive one batch: a delivery within wait_ms, then what is already
 * queued, at most max in all; print them, then commit them. A delivery
 * that cannot be read is said and passed over (listen_on_unreadable).
 * Returns how many were handled (0 on a quiet timeout), or -(exit code). */
static long long listen_batch(const cli_options_t *opts, const listen_settings_t *settings,
                              listen_output_t *out, schakel_client_t *client, listen_batch_t *batch,
                              listen_unreadable_t *unreadable, int wait_ms, size_t max)
{
    schakel_status_t status = SCHAKEL_OK;
    long long handled = 0;
    /* a stop is taken between deliveries: the one being written is finished */
    for (size_t taken = 0; taken < max && (taken == 0 || !listen_stop); taken++) {
        schakel_delivery_t *d = NULL;
        status = schakel_receive(client, &d, taken == 0 ? wait_ms : 0);
        if (status == SCHAKEL_ERR_PROTOCOL && schakel_undecodable_seq(client) != 0) {
            listen_on_unreadable(opts, settings, unreadable, client, batch);
            status = SCHAKEL_OK;
            continue;
        }
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
    if (status == SCHAKEL_ERR_PROTOCOL) {
        /* A frame that names no delivery: if it was one, its seq could
         * not be read (PROTOCOL.md 7.11), and only the broker's side can
         * name it. */
        (void)cli_report("listen", status, &error);
        cli_say("listen: stopped at a frame from the broker that names no delivery; if it was "
                "one, it is not acknowledged and comes again, oldest first, to the next listen: "
                "ask the broker's operators for its seq (the oldest one pending for this "
                "principal), then drop it with schakel ack SEQ");
        return -CLI_EXIT_FAILURE;
    }
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
        cli_say("listen: received %lld of %lld %s within %lld s", received, settings->count,
                plural(settings->count, "delivery", "deliveries"), settings->timeout_s);
        return CLI_EXIT_FAILURE;
    }
    if (settings->drain) {
        cli_say("listen: the backlog was not drained within %lld s", settings->timeout_s);
        return CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}

/* The receive loop into out. Returns the exit code. */
static int listen_loop(const cli_options_t *opts, const listen_settings_t *settings,
                       listen_output_t *out, schakel_client_t *client)
{
    int64_t deadline = settings->timeout_s > 0 ? listen_now_ms() + settings->timeout_s * 1000 : -1;
    long long received = 0;
    listen_batch_t *batch = calloc(1, sizeof *batch);
    listen_unreadable_t *unreadable = calloc(1, sizeof *unreadable);
    if (batch == NULL || unreadable == NULL) {
        free(batch);
        free(unreadable);
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
        long long got = listen_batch(opts, settings, out, client, batch, unreadable, wait_ms, max);
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
            else if (backlog <= unreadable->n) /* all that is left is unreadable */
                rc = CLI_EXIT_OK;
            else if (unreadable->window_said) {
                /* The unreadable ones fill the window: the broker sends
                 * nothing more, and waiting would not drain the rest. */
                cli_say("listen: the backlog (%llu) cannot be drained while deliveries that "
                        "cannot be read fill the window",
                        (unsigned long long)backlog);
                rc = CLI_EXIT_FAILURE;
            }
        }
    }
    if (rc < 0 && listen_stop && batch->unconfirmed)
        listen_confirm_acks(client); /* what was written before the stop */
    free(batch);
    rc = listen_unreadable_summary(unreadable, rc >= 0 ? rc : listen_stopped(settings, received));
    free(unreadable);
    return rc;
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
            return cli_bad_value("listen", "--timeout wants whole seconds from 1 to %d, not '%s'",
                                 LISTEN_MAX_TIMEOUT_S, arg);
        return 1;
    case LISTEN_OPT_WINDOW:
        if (cli_parse_number(arg, 1, SCHAKEL_MAX_WINDOW, &number) != 0)
            return cli_bad_value("listen", "--window wants a number from 1 to %u, not '%s'",
                                 SCHAKEL_MAX_WINDOW, arg);
        settings->window = (unsigned)number;
        return 1;
    case LISTEN_OPT_ACK_UNDECODABLE:
        settings->ack_undecodable = 1;
        return 1;
    default:
        return 0;
    }
}

int listen_main(int argc, char **argv)
{
    cli_options_t opts;
    listen_settings_t settings = {0, 0, 0, SCHAKEL_DEFAULT_WINDOW, 0};
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
    listen_output_t out;
    int rc = listen_output_open(&out);
    schakel_client_t *client = NULL;
    if (rc == CLI_EXIT_OK)
        rc = cli_connect(&opts, &client);
    if (rc != CLI_EXIT_OK) {
        listen_output_close(&out);
        return rc;
    }
    schakel_status_t status = schakel_subscribe(client, settings.window);
    if (status != SCHAKEL_OK)
        rc = cli_report("listen", status, schakel_last_error(client));
    else
        rc = listen_loop(&opts, &settings, &out, client);
    schakel_close(&client);
    listen_output_close(&out);
    return rc;
}
