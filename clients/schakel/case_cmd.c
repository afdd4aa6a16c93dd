/*
 * case_cmd.c — `schakel case open|invite|accept|decline|leave|note|attach|
 * close|reopen|link|list|show` and `schakel inbox`: the caseworker's view
 * of cases. Parses and checks the command line here (files, field
 * syntax), leaves the rules to the library and the broker, and prints one
 * key=value line (or one JSON object) per result. A refusal is printed as
 * "refused: REASON: text" and a line in caseworker words (exit 3).
 */
#include "cli.h"
#include "plural.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "schakel_limits.h"
#include "syntax.h"

#define CASE_DEFAULT_TIMEOUT_MS 10000
#define CASE_MAX_TIMEOUT_S 3600

enum case_option {
    CASE_OPT_TYPE = CLI_OPT_FIRST_OWN,
    CASE_OPT_AREA,
    CASE_OPT_SUBJECT,
    CASE_OPT_POSTCODE,
    CASE_OPT_HOUSE_NUMBER,
    CASE_OPT_ADDITION,
    CASE_OPT_TITLE,
    CASE_OPT_PARTNER,
    CASE_OPT_TEXT,
    CASE_OPT_TEXT_FILE,
    CASE_OPT_FIELD,
    CASE_OPT_NAME,
    CASE_OPT_MEDIA_TYPE,
    CASE_OPT_REASON,
    CASE_OPT_SAVE,
    CASE_OPT_ON_BEHALF_OF,
    CASE_OPT_COMMAND_ID,
    CASE_OPT_TIMEOUT,
};

/* Option sets, as bits of (option - CASE_OPT_TYPE). */
#define CASE_BIT(option) (1u << ((option)-CASE_OPT_TYPE))
#define CASE_OPEN_OPTS                                                                             \
    (CASE_BIT(CASE_OPT_TYPE) | CASE_BIT(CASE_OPT_AREA) | CASE_BIT(CASE_OPT_SUBJECT) |              \
     CASE_BIT(CASE_OPT_POSTCODE) | CASE_BIT(CASE_OPT_HOUSE_NUMBER) | CASE_BIT(CASE_OPT_ADDITION) | \
     CASE_BIT(CASE_OPT_TITLE))
#define CASE_WRITE_OPTS                                                                            \
    (CASE_BIT(CASE_OPT_ON_BEHALF_OF) | CASE_BIT(CASE_OPT_COMMAND_ID) | CASE_BIT(CASE_OPT_TIMEOUT))

static const struct option case_options[] = {
    CLI_COMMON_LONG_OPTIONS,
    {"type", 1, NULL, CASE_OPT_TYPE},
    {"area", 1, NULL, CASE_OPT_AREA},
    {"subject", 1, NULL, CASE_OPT_SUBJECT},
    {"postcode", 1, NULL, CASE_OPT_POSTCODE},
    {"house-number", 1, NULL, CASE_OPT_HOUSE_NUMBER},
    {"addition", 1, NULL, CASE_OPT_ADDITION},
    {"title", 1, NULL, CASE_OPT_TITLE},
    {"partner", 1, NULL, CASE_OPT_PARTNER},
    {"text", 1, NULL, CASE_OPT_TEXT},
    {"text-file", 1, NULL, CASE_OPT_TEXT_FILE},
    {"field", 1, NULL, CASE_OPT_FIELD},
    {"name", 1, NULL, CASE_OPT_NAME},
    {"media-type", 1, NULL, CASE_OPT_MEDIA_TYPE},
    {"reason", 1, NULL, CASE_OPT_REASON},
    {"save-attachments", 1, NULL, CASE_OPT_SAVE},
    {"on-behalf-of", 1, NULL, CASE_OPT_ON_BEHALF_OF},
    {"command-id", 1, NULL, CASE_OPT_COMMAND_ID},
    {"timeout", 1, NULL, CASE_OPT_TIMEOUT},
    {NULL, 0, NULL, 0},
};

/* Everything one `schakel case ...` invocation was given. */
typedef struct case_args {
    cli_options_t opts;
    const struct case_command *command;
    char *positional[2];
    schakel_case_open_t open;
    const char *partner, *text, *text_file, *name, *media_type, *reason, *save_dir;
    schakel_note_field_t fields[SCHAKEL_MAX_NOTE_FIELDS];
    size_t n_fields;
    schakel_case_options_t options;
    uint8_t command_id[SCHAKEL_MESSAGE_ID_BYTES];
    int timeout_ms;
    uint8_t *text_buffer; /* --text-file contents, NUL-terminated */
    uint8_t *content;     /* attach: the file's bytes */
    size_t content_len;
} case_args_t;

typedef int (*case_run_fn)(case_args_t *args, schakel_client_t *client);

typedef struct case_command {
    const char *name;
    size_t n_positional;
    unsigned allowed; /* CASE_BIT set of its own options */
    case_run_fn run;
    const char *verb; /* the first word of the output line */
} case_command_t;

static const char case_usage[] =
    "usage: schakel case COMMAND [ARGUMENTS] [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  open --type T --area A [--subject S] [--postcode P --house-number N\n"
    "       [--addition X]] [--title T]      open a case our partner leads\n"
    "  invite CASE PARTNER                    invite a partner (lead only)\n"
    "  accept CASE | decline CASE             answer an invitation of our partner\n"
    "  leave CASE [--partner P]               leave; the lead removes P\n"
    "  note CASE [--text T | --text-file F] [--field NAME=VALUE]...\n"
    "  attach CASE FILE [--name N] [--media-type M]\n"
    "  close CASE --reason R                  close (lead only)\n"
    "  reopen CASE [--reason R]               reopen, where the case type allows\n"
    "  link CASE ITEM_SEQ                     link a signal this key received (its item_seq)\n"
    "  list                                   the cases we are member of or invited to\n"
    "  show CASE [--save-attachments DIR]     a case's timeline as we may see it\n"
    "\n"
    "options of the commands that change a case:\n"
    "  --on-behalf-of P     act for the lead partner P (a rule must allow it)\n"
    "  --command-id HEX     32 hex digits; repeat a command safely with its id\n"
    "  --timeout S          seconds to wait for the broker's answer (default 10)\n" CLI_COMMON_HELP
    "\n"
    "CASE is a case id like C-00000042. Output: one line per result,\n"
    "\"VERB case=C-00000042 seq=N recipients=N\" (see schakel(1)).\n";

/* ------------------------------------------------------------------ input */

/* Read a whole file (path, or "-" for stdin) of at most max bytes into a
 * new buffer with a NUL after it. Returns 0, or an exit code after a
 * message. */
static int case_read_file(const char *path, size_t max, const char *what, uint8_t **out,
                          size_t *len)
{
    FILE *file = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (file == NULL) {
        cli_say("cannot read %s '%s': %s", what, path, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    uint8_t *buffer = malloc(max + 2);
    size_t got = buffer != NULL ? fread(buffer, 1, max + 1, file) : 0;
    int failed = buffer == NULL || ferror(file);
    if (file != stdin)
        fclose(file);
    if (failed) {
        free(buffer);
        cli_say("cannot read %s '%s'", what, path);
        return CLI_EXIT_FAILURE;
    }
    if (got > max) {
        free(buffer);
        cli_say("%s '%s' is larger than %zu bytes, the most a case takes", what, path, max);
        return CLI_EXIT_USAGE;
    }
    buffer[got] = '\0';
    *out = buffer;
    *len = got;
    return CLI_EXIT_OK;
}

/* A media type from the file name's extension, for --media-type left out. */
static const char *case_guess_media_type(const char *name)
{
    static const struct {
        const char *extension, *media_type;
    } types[] = {
        {".pdf", "application/pdf"},
        {".txt", "text/plain"},
        {".csv", "text/csv"},
        {".jpg", "image/jpeg"},
        {".jpeg", "image/jpeg"},
        {".png", "image/png"},
        {".eml", "message/rfc822"},
        {".odt", "application/vnd.oasis.opendocument.text"},
        {".docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"},
        {".xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot != NULL && i < sizeof types / sizeof types[0]; i++)
        if (strcasecmp(dot, types[i].extension) == 0)
            return types[i].media_type;
    return "application/octet-stream";
}

/* --field NAME=VALUE, split in place (argv is ours to write). */
static int case_add_field(case_args_t *args, char *arg)
{
    char *equals = strchr(arg, '=');
    if (equals == NULL || equals == arg)
        return cli_bad_value("case", "--field wants NAME=VALUE, not '%s'", arg);
    if (args->n_fields == SCHAKEL_MAX_NOTE_FIELDS)
        return cli_bad_value("case", "a note has at most %u fields", SCHAKEL_MAX_NOTE_FIELDS);
    *equals = '\0';
    args->fields[args->n_fields].name = arg;
    args->fields[args->n_fields].value = equals + 1;
    args->n_fields++;
    return 1;
}

static int case_set_command_id(case_args_t *args, const char *hex)
{
    if (strlen(hex) != 2 * SCHAKEL_MESSAGE_ID_BYTES ||
        syntax_unhex(hex, args->command_id, sizeof args->command_id) != 0)
        return cli_bad_value("case", "a command id is 32 hex digits, not '%s'", hex);
    args->options.command_id = args->command_id;
    return 1;
}

/* Options that need parsing. Returns 1, or -1 on a bad value. */
static int case_parsed_option(case_args_t *args, int option, char *arg)
{
    long long number;
    switch (option) {
    case CASE_OPT_HOUSE_NUMBER:
        if (cli_parse_number(arg, 1, SCHAKEL_MAX_HOUSE_NUMBER, &number) != 0)
            return cli_bad_value("case", "--house-number wants a number from 1 to %u, not '%s'",
                                 SCHAKEL_MAX_HOUSE_NUMBER, arg);
        args->open.house_number = (uint32_t)number;
        return 1;
    case CASE_OPT_FIELD:
        return case_add_field(args, arg);
    case CASE_OPT_COMMAND_ID:
        return case_set_command_id(args, arg);
    case CASE_OPT_TIMEOUT:
        if (cli_parse_number(arg, 1, CASE_MAX_TIMEOUT_S, &number) != 0)
            return cli_bad_value("case", "--timeout wants whole seconds from 1 to %d, not '%s'",
                                 CASE_MAX_TIMEOUT_S, arg);
        args->timeout_ms = (int)number * 1000;
        return 1;
    default:
        return 0;
    }
}

/* One option of the command's own. Returns 1, 0 if not one, -1 if bad. */
static int case_option(case_args_t *args, int option, char *arg)
{
    const char **texts[] = {
        [CASE_OPT_TYPE - CASE_OPT_TYPE] = &args->open.case_type,
        [CASE_OPT_AREA - CASE_OPT_TYPE] = &args->open.area,
        [CASE_OPT_SUBJECT - CASE_OPT_TYPE] = &args->open.subject,
        [CASE_OPT_POSTCODE - CASE_OPT_TYPE] = &args->open.postcode,
        [CASE_OPT_ADDITION - CASE_OPT_TYPE] = &args->open.addition,
        [CASE_OPT_TITLE - CASE_OPT_TYPE] = &args->open.title,
        [CASE_OPT_PARTNER - CASE_OPT_TYPE] = &args->partner,
        [CASE_OPT_TEXT - CASE_OPT_TYPE] = &args->text,
        [CASE_OPT_TEXT_FILE - CASE_OPT_TYPE] = &args->text_file,
        [CASE_OPT_NAME - CASE_OPT_TYPE] = &args->name,
        [CASE_OPT_MEDIA_TYPE - CASE_OPT_TYPE] = &args->media_type,
        [CASE_OPT_REASON - CASE_OPT_TYPE] = &args->reason,
        [CASE_OPT_SAVE - CASE_OPT_TYPE] = &args->save_dir,
        [CASE_OPT_ON_BEHALF_OF - CASE_OPT_TYPE] = &args->options.on_behalf_of,
    };
    if (option < CASE_OPT_TYPE || option > CASE_OPT_TIMEOUT)
        return 0;
    if (!(args->command->allowed & CASE_BIT(option)))
        return cli_bad_value("case", "'case %s' does not take that option", args->command->name);
    size_t slot = (size_t)(option - CASE_OPT_TYPE);
    if (slot < sizeof texts / sizeof texts[0] && texts[slot] != NULL) {
        *texts[slot] = arg;
        return 1;
    }
    return case_parsed_option(args, option, arg);
}

/* ------------------------------------------------------------------ output */

static const char *case_hint(const char *reason_name)
{
    static const struct {
        const char *reason, *hint;
    } hints[] = {
        {"NOT_FOUND", "there is no such case that your organisation can see: check the number, "
                      "or ask the lead partner to invite you"},
        {"CASE_CLOSED",
         "the case is closed; the lead partner can reopen it where its case type allows"},
        {"POLICY_DENIED", "the policy has no rule that allows this; ask who keeps the policy"},
        {"NOT_PERMITTED", "you may not do this in this case: some steps are for the lead partner "
                          "(or who acts for it), answering for the invited partner"},
        {"SENDER_MISMATCH", "the broker knows this key as another principal"},
    };
    for (size_t i = 0; i < sizeof hints / sizeof hints[0]; i++)
        if (strcmp(reason_name, hints[i].reason) == 0)
            return hints[i].hint;
    return NULL;
}

/* Report a failed call: the library's words, then the caseworker's. */
static int case_report(const char *what, schakel_status_t status, schakel_client_t *client,
                       const schakel_case_result_t *result)
{
    const schakel_error_t *err = schakel_last_error(client);
    int rc = cli_report(what, status, err);
    const char *hint = status == SCHAKEL_ERR_REFUSED ? case_hint(err->reason_name) : NULL;
    if (hint != NULL && strcmp(what, "link") == 0 && strcmp(err->reason_name, "NOT_FOUND") == 0)
        hint = "no such case that your organisation can see, or no such signal that it received";
    if (hint != NULL)
        cli_say("%s", hint);
    if (status == SCHAKEL_ERR_TIMEOUT && result != NULL) {
        char hex[2 * SCHAKEL_MESSAGE_ID_BYTES + 1];
        syntax_hex(result->command_id, sizeof result->command_id, hex);
        cli_say("the command may or may not have been carried out; repeat it with "
                "--command-id %s to be sure it counts once",
                hex);
    }
    return rc;
}

static int case_print_result(const case_args_t *args, const schakel_case_result_t *result)
{
    char hex[2 * SCHAKEL_MESSAGE_ID_BYTES + 1];
    syntax_hex(result->command_id, sizeof result->command_id, hex);
    const char *verb = args->command->verb;
    if (strcmp(args->command->name, "leave") == 0 && args->partner != NULL)
        verb = "removed"; /* the lead removed another partner */
    if (!args->opts.json) {
        printf("%s case=%s seq=%llu recipients=%u%s\n", verb, result->case_id,
               (unsigned long long)result->seq, result->recipients,
               result->duplicate ? " duplicate" : "");
        return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
    }
    json_t *obj =
        json_pack("{s:s, s:s, s:s, s:I, s:I, s:b}", "command", args->command->name, "case_id",
                  result->case_id, "command_id", hex, "seq", (json_int_t)result->seq, "recipients",
                  (json_int_t)result->recipients, "duplicate", result->duplicate);
    int rc = obj != NULL && cli_print_json(obj) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
    json_decref(obj);
    return rc;
}

/* ------------------------------------------------------------------ commands */

static const char *case_id_arg(const case_args_t *args)
{
    return args->positional[0];
}

static schakel_status_t case_do(case_args_t *args, schakel_client_t *client,
                                schakel_case_result_t *result)
{
    const char *id = case_id_arg(args);
    const schakel_case_options_t *o = &args->options;
    int t = args->timeout_ms;
    const char *name = args->command->name;
    if (strcmp(name, "open") == 0)
        return schakel_case_open(client, &args->open, o, NULL, result, t);
    if (strcmp(name, "invite") == 0)
        return schakel_case_invite(client, id, args->positional[1], o, result, t);
    if (strcmp(name, "accept") == 0)
        return schakel_case_accept(client, id, o, result, t);
    if (strcmp(name, "decline") == 0)
        return schakel_case_decline(client, id, o, result, t);
    if (strcmp(name, "leave") == 0)
        return schakel_case_leave(client, id, args->partner, o, result, t);
    if (strcmp(name, "note") == 0)
        return schakel_case_note(client, id, args->text, args->fields, args->n_fields, o, result,
                                 t);
    if (strcmp(name, "attach") == 0)
        return schakel_case_attach(client, id, args->name, args->media_type, args->content,
                                   args->content_len, o, result, t);
    if (strcmp(name, "close") == 0)
        return schakel_case_close(client, id, args->reason, o, result, t);
    if (strcmp(name, "reopen") == 0)
        return schakel_case_reopen(client, id, args->reason, o, result, t);
    long long item_seq = 0; /* link: checked by case_prepare */
    (void)cli_parse_number(args->positional[1], 1, INT64_MAX, &item_seq);
    return schakel_case_link(client, id, (uint64_t)item_seq, o, result, t);
}

/* Every command that changes a case. */
static int case_run_write(case_args_t *args, schakel_client_t *client)
{
    schakel_case_result_t result;
    memset(&result, 0, sizeof result);
    schakel_status_t status = case_do(args, client, &result);
    if (status != SCHAKEL_OK)
        return case_report(args->command->name, status, client, &result);
    return case_print_result(args, &result);
}

static int case_run_list(case_args_t *args, schakel_client_t *client)
{
    schakel_case_list_t *list = NULL;
    schakel_status_t status = schakel_case_list(client, &list, args->timeout_ms);
    if (status != SCHAKEL_OK)
        return case_report("list", status, client, NULL);
    int failed = 0;
    for (size_t i = 0; !failed && i < list->n_cases; i++) {
        if (args->opts.json) {
            json_t *obj = jsonio_case_summary_to_json(&list->cases[i]);
            failed = obj == NULL || cli_print_json(obj) != 0;
            json_decref(obj);
        } else {
            case_print_summary(&list->cases[i]);
            putchar('\n');
        }
    }
    if (!args->opts.json && list->n_cases == 0)
        puts("no cases");
    schakel_case_list_free(&list);
    if (fflush(stdout) != 0 || ferror(stdout))
        failed = 1;
    return failed ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
}

/* Write an attachment to DIR/SEQ-NAME, never over an existing file. The
 * name has no path (the codec refuses '/' and '\'). */
static int case_save(const char *dir, const schakel_case_event_t *e, char *path, size_t len)
{
    snprintf(path, len, "%s/%llu-%s", dir, (unsigned long long)e->event_seq, e->attachment_name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        cli_say("cannot save %s: %s", path, strerror(errno));
        return -1;
    }
    size_t done = 0;
    while (done < e->attachment_len) {
        ssize_t n = write(fd, e->attachment + done, e->attachment_len - done);
        if (n <= 0) {
            cli_say("cannot write %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        done += (size_t)n;
    }
    return close(fd) == 0 ? 0 : -1;
}

static int case_print_view_event(const case_args_t *args, const schakel_case_event_t *e)
{
    char path[4096] = "";
    if (args->save_dir != NULL && e->has_attachment && e->attachment_len == 0)
        cli_say("event %llu: the attachment's content did not fit in the answer; it comes "
                "with the delivery of the event (schakel listen --json)",
                (unsigned long long)e->event_seq);
    else if (args->save_dir != NULL && e->has_attachment &&
             case_save(args->save_dir, e, path, sizeof path) != 0)
        return -1;
    if (args->opts.json) {
        json_t *obj = jsonio_case_event_to_json(e);
        int rc = obj != NULL ? 0 : -1;
        if (rc == 0 && path[0] != '\0')
            rc = json_object_set_new(obj, "saved", json_string(path));
        if (rc == 0)
            rc = cli_print_json(obj);
        json_decref(obj);
        return rc;
    }
    case_print_event(e);
    cli_field("saved", path[0] != '\0' ? path : NULL);
    putchar('\n');
    return 0;
}

static int case_run_show(case_args_t *args, schakel_client_t *client)
{
    schakel_case_view_t *view = NULL;
    schakel_status_t status = schakel_case_show(client, case_id_arg(args), &view, args->timeout_ms);
    if (status != SCHAKEL_OK)
        return case_report("show", status, client, NULL);
    int failed = 0;
    if (args->opts.json) {
        json_t *obj = jsonio_case_summary_to_json(&view->summary);
        failed = obj == NULL || cli_print_json(obj) != 0;
        json_decref(obj);
    } else {
        case_print_summary(&view->summary);
        putchar('\n');
    }
    for (size_t i = 0; !failed && i < view->n_events; i++)
        failed = case_print_view_event(args, &view->events[i]) != 0;
    schakel_case_view_free(&view);
    if (fflush(stdout) != 0 || ferror(stdout))
        failed = 1;
    return failed ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
}

static const case_command_t case_commands[] = {
    {"open", 0, CASE_OPEN_OPTS | CASE_WRITE_OPTS, case_run_write, "opened"},
    {"invite", 2, CASE_WRITE_OPTS, case_run_write, "invited"},
    {"accept", 1, CASE_WRITE_OPTS, case_run_write, "accepted"},
    {"decline", 1, CASE_WRITE_OPTS, case_run_write, "declined"},
    {"leave", 1, CASE_BIT(CASE_OPT_PARTNER) | CASE_WRITE_OPTS, case_run_write, "left"},
    {"note", 1,
     CASE_BIT(CASE_OPT_TEXT) | CASE_BIT(CASE_OPT_TEXT_FILE) | CASE_BIT(CASE_OPT_FIELD) |
         CASE_WRITE_OPTS,
     case_run_write, "noted"},
    {"attach", 2, CASE_BIT(CASE_OPT_NAME) | CASE_BIT(CASE_OPT_MEDIA_TYPE) | CASE_WRITE_OPTS,
     case_run_write, "attached"},
    {"close", 1, CASE_BIT(CASE_OPT_REASON) | CASE_WRITE_OPTS, case_run_write, "closed"},
    {"reopen", 1, CASE_BIT(CASE_OPT_REASON) | CASE_WRITE_OPTS, case_run_write, "reopened"},
    {"link", 2, CASE_WRITE_OPTS, case_run_write, "linked"},
    {"list", 0, CASE_BIT(CASE_OPT_TIMEOUT), case_run_list, NULL},
    {"show", 1, CASE_BIT(CASE_OPT_SAVE) | CASE_BIT(CASE_OPT_TIMEOUT), case_run_show, NULL},
};

/* ------------------------------------------------------------------ main */

/* Checks that need no broker, and the files to read. Returns 0 or an exit code. */
static int case_prepare(case_args_t *args)
{
    const char *name = args->command->name;
    long long number;
    if (args->command->n_positional > 0 && !syntax_is_case_id(case_id_arg(args)))
        return cli_usage_error("case", "'%s' is not a case id: C- and 8 digits, like C-00000042",
                               case_id_arg(args));
    if (strcmp(name, "link") == 0 &&
        cli_parse_number(args->positional[1], 1, INT64_MAX, &number) != 0)
        return cli_usage_error("case", "link wants the item_seq of a signal we received, not '%s'",
                               args->positional[1]);
    if (strcmp(name, "note") == 0 && args->text != NULL && args->text_file != NULL)
        return cli_usage_error("case", "give --text or --text-file, not both");
    if (strcmp(name, "note") == 0 && args->text_file != NULL) {
        size_t len = 0;
        int rc = case_read_file(args->text_file, SCHAKEL_MAX_NOTE_TEXT_LEN, "note text",
                                &args->text_buffer, &len);
        if (rc != CLI_EXIT_OK)
            return rc;
        if (memchr(args->text_buffer, '\0', len) != NULL)
            return cli_usage_error("case", "note text '%s' holds a NUL byte", args->text_file);
        args->text = (const char *)args->text_buffer;
    }
    if (strcmp(name, "attach") == 0) {
        const char *file = args->positional[1];
        const char *slash = strrchr(file, '/');
        if (args->name == NULL)
            args->name = slash != NULL ? slash + 1 : file;
        if (args->media_type == NULL)
            args->media_type = case_guess_media_type(args->name);
        return case_read_file(file, SCHAKEL_MAX_ATTACHMENT_BYTES, "attachment", &args->content,
                              &args->content_len);
    }
    return 0;
}

static const case_command_t *case_find(const char *name)
{
    for (size_t i = 0; i < sizeof case_commands / sizeof case_commands[0]; i++)
        if (strcmp(case_commands[i].name, name) == 0)
            return &case_commands[i];
    return NULL;
}

/* Parse `case COMMAND ...` (argv[0] = COMMAND). Returns 0 to go on, -1
 * after --help, or an exit code. Options may come before or after the
 * arguments: the optstring's '-' hands them over in order, each argument
 * as 1, whatever POSIXLY_CORRECT says (without it getopt would stop at
 * the first argument there, and refuse `case note CASE --text T`). */
static int case_parse(int argc, char **argv, case_args_t *args)
{
    const size_t kept = sizeof args->positional / sizeof args->positional[0];
    size_t given = 0;
    int option;
    opterr = 0; /* its '?' and ':' are told apart by cli_option_error */
    while ((option = getopt_long(argc, argv, "-:", case_options, NULL)) != -1) {
        if (option == 1) {
            if (given < kept)
                args->positional[given] = optarg;
            given++;
            continue;
        }
        int rc = cli_common_option(&args->opts, option, optarg);
        if (rc == 0)
            rc = case_option(args, option, optarg);
        if (rc < 0)
            return CLI_EXIT_USAGE;
        if (rc == 0)
            return cli_option_error("case", option, case_options, argc, argv);
    }
    for (; optind < argc; optind++, given++) /* after "--" */
        if (given < kept)
            args->positional[given] = argv[optind];
    if (args->opts.help) {
        fputs(case_usage, stdout);
        return -1;
    }
    if (given != args->command->n_positional)
        return cli_usage_error("case", "'case %s' takes %zu %s, not %zu", args->command->name,
                               args->command->n_positional,
                               plural(args->command->n_positional, "argument", "arguments"), given);
    return case_prepare(args);
}

int case_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        if (argc < 2)
            return cli_usage_error("case", "no case command given");
        fputs(case_usage, stdout);
        return CLI_EXIT_OK;
    }
    const case_command_t *command = case_find(argv[1]);
    if (command == NULL)
        return cli_usage_error("case", "unknown case command '%s'", argv[1]);
    case_args_t *args = calloc(1, sizeof *args);
    if (args == NULL) {
        cli_say("out of memory");
        return CLI_EXIT_FAILURE;
    }
    cli_options_init(&args->opts);
    args->command = command;
    args->timeout_ms = CASE_DEFAULT_TIMEOUT_MS;
    int rc = case_parse(argc - 1, argv + 1, args);
    schakel_client_t *client = NULL;
    if (rc == 0)
        rc = cli_connect(&args->opts, &client);
    if (rc == CLI_EXIT_OK && client != NULL)
        rc = command->run(args, client);
    if (rc == -1)
        rc = CLI_EXIT_OK; /* --help */
    schakel_close(&client);
    free(args->text_buffer);
    free(args->content);
    free(args);
    return rc;
}

/* ------------------------------------------------------------------ inbox */

static const char case_inbox_usage[] =
    "usage: schakel inbox [OPTIONS]\n"
    "\n"
    "Summarise what waits for us: deliveries not yet received or acknowledged\n"
    "(signals and case events), invitations to cases, and our open cases.\n"
    "Receives nothing: use 'schakel listen' for that.\n"
    "\n" CLI_COMMON_HELP;

static int case_inbox_print(const cli_options_t *opts, uint64_t waiting,
                            const schakel_case_list_t *list)
{
    size_t invited = 0, open = 0, closed = 0;
    for (size_t i = 0; i < list->n_cases; i++) {
        const schakel_case_summary_t *c = &list->cases[i];
        invited += c->invited;
        open += !c->invited && !c->closed;
        closed += !c->invited && c->closed;
    }
    if (!opts->json) {
        printf("waiting=%llu invitations=%zu open_cases=%zu closed_cases=%zu\n",
               (unsigned long long)waiting, invited, open, closed);
        for (size_t i = 0; i < list->n_cases; i++) {
            if (!list->cases[i].invited)
                continue;
            printf("invited ");
            case_print_summary(&list->cases[i]);
            putchar('\n');
        }
        return fflush(stdout) == 0 && !ferror(stdout) ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
    }
    json_t *invitations = json_array();
    json_t *obj =
        json_pack("{s:I, s:I, s:I, s:o*}", "waiting", (json_int_t)waiting, "open_cases",
                  (json_int_t)open, "closed_cases", (json_int_t)closed, "invitations", invitations);
    int failed = obj == NULL || invitations == NULL;
    for (size_t i = 0; !failed && i < list->n_cases; i++)
        if (list->cases[i].invited)
            failed = json_array_append_new(invitations,
                                           jsonio_case_summary_to_json(&list->cases[i])) != 0;
    if (!failed)
        failed = cli_print_json(obj) != 0;
    json_decref(obj);
    return failed ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
}

int case_inbox_main(int argc, char **argv)
{
    cli_options_t opts;
    int rc = cli_parse_common_options("inbox", case_inbox_usage, argc, argv, &opts);
    if (rc != CLI_GO_ON)
        return rc;
    if (optind != argc)
        return cli_usage_error("inbox", "inbox takes no arguments ('%s')", argv[optind]);
    schakel_client_t *client = NULL;
    rc = cli_connect(&opts, &client);
    if (rc != CLI_EXIT_OK)
        return rc;
    uint64_t waiting = 0;
    schakel_case_list_t *list = NULL;
    schakel_status_t status = schakel_backlog(client, &waiting, CASE_DEFAULT_TIMEOUT_MS);
    if (status == SCHAKEL_OK)
        status = schakel_case_list(client, &list, CASE_DEFAULT_TIMEOUT_MS);
    if (status == SCHAKEL_OK)
        rc = case_inbox_print(&opts, waiting, list);
    else
        rc = case_report("inbox", status, client, NULL);
    schakel_case_list_free(&list);
    schakel_close(&client);
    return rc;
}
