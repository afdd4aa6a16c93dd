/*
 * audit_cmd.c — `schakelctl audit verify|subject|tail` (see audit_cmd.h).
 *
 * Works on a store file opened read-only (the broker's live file or a
 * copy), without the store key but for subject; verify needs only the
 * broker's public key. Trusts nothing in the file: audit.c recomputes every hash and
 * checks every signature. Exit codes are audit_cmd.h's; errors are one line
 * on stderr.
 */
#include "audit_cmd.h"

#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "audit.h"
#include "keys.h"
#include "optreport.h"
#include "plural.h"
#include "schakel_limits.h"
#include "store.h"
#include "storefile.h"
#include "syntax.h"

/* The places docs/OPERATIONS.md "Files" gives them. */
#define AUDIT_DEFAULT_STORE "/var/lib/schakel/store.db"
#define AUDIT_DEFAULT_BROKER_KEY "/etc/schakel/keys/broker.pub"
#define AUDIT_DEFAULT_STORE_KEY "/etc/schakel/keys/store.key"
#define AUDIT_MAX_KEYS 8 /* --broker-key may be repeated (keys before and after a rotation) */
#define AUDIT_TAIL_BATCH 256u
#define AUDIT_TAIL_DEFAULT_LAST 10u

static const char audit_usage[] =
    "usage: schakelctl audit verify [--store PATH] [--broker-key FILE]... [--expect SEQ:HASH]\n"
    "       schakelctl audit subject PSEUDONYM [--store PATH] [--store-key FILE]\n"
    "       schakelctl audit subject PSEUDONYM --admin ENDPOINT [--key FILE] [--broker-key FILE]\n"
    "                                 [--json] [--timeout S] [--connect-timeout S]\n"
    "       schakelctl audit tail [--store PATH] [--from SEQ] [--count N] [--no-follow] "
    "[--json]\n"
    "\n"
    "Reads the broker's audit trail from its store file, read-only; a copy of the\n"
    "file will do. verify and tail need no store key; subject does. With --admin (or\n"
    "SCHAKEL_ADMIN set) and no --store, subject asks the running broker instead,\n"
    "which records the export in its trail first (its options: schakelctl audit\n"
    "subject P --admin ENDPOINT --help).\n"
    "  verify    recompute the hash chain and check every signed checkpoint; report\n"
    "            the trail intact (entries and checkpoints checked) or name the\n"
    "            first broken entry; then check the index of acked deliveries\n"
    "            against the entries\n"
    "  subject   everything the trail holds about one data subject, as JSON; needs\n"
    "            the store key, as the trail names subjects by a keyed tag (from a\n"
    "            store file not itself recorded: with --admin the broker records it)\n"
    "  tail      print entries as they are written, one key=value line each (or\n"
    "            JSON with --json); subject pseudonyms are withheld\n"
    "options:\n"
    "  --store PATH        the store file (default " AUDIT_DEFAULT_STORE ")\n"
    "  --store-key FILE    subject: the store key (default " AUDIT_DEFAULT_STORE_KEY ")\n"
    "  --broker-key FILE   the broker's public key, .pub; after a rotation give every\n"
    "                      key used, oldest first (default $SCHAKEL_BROKER_KEY, else\n"
    "                      " AUDIT_DEFAULT_BROKER_KEY ")\n"
    "  --expect SEQ:HASH   the hash a previous verify reported for entry SEQ: the\n"
    "                      trail must still hold it (catches a trail cut back)\n"
    "  --from SEQ          tail: start at entry SEQ (default: the last 10)\n"
    "  --count N           tail: stop after N entries\n"
    "  --no-follow         tail: stop at the end of the trail instead of waiting\n"
    "  --json              tail: one JSON object per line\n"
    "Options may stand before or after the arguments. subject's PSEUDONYM is the\n"
    "first argument that is neither an option nor an option's value: one that begins\n"
    "with a single '-' is taken as it is; one that begins with '--' follows '--'\n"
    "(audit subject -- --PSEUDONYM).\n"
    "Exit status: 0 ok (verify: intact), 1 failure, 2 usage, 3 verify: the trail is broken\n"
    "(or its index of acked deliveries disagrees with it), 5 the store not read: its files\n"
    "are as an interrupted schakeld --restored left them, or its file has a second name\n"
    "(as the files stand, the trail may lack the store's last commits; the message says\n"
    "what to do).\n";

static int audit_say(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int audit_say(int code, const char *fmt, ...)
{
    va_list ap;
    fputs("schakelctl audit: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (code == AUDIT_CMD_USAGE)
        fputs("Run 'schakelctl audit --help' for usage.\n", stderr);
    return code;
}

/* ------------------------------------------------------------------ options */

typedef struct audit_options {
    const char *store;
    const char *keys[AUDIT_MAX_KEYS];
    size_t n_keys;
    const char *keys_from; /* NULL: --broker-key; else where the one key came from */
    const char *expect;
    const char *store_key;
    const char *subject;
    uint64_t from;  /* 0: the last AUDIT_TAIL_DEFAULT_LAST */
    uint64_t count; /* 0: no bound */
    int no_follow;
    int json;
} audit_options_t;

static int parse_u64(const char *text, uint64_t min, uint64_t *out)
{
    long long value;
    if (syntax_decimal(text, (long long)min, INT64_MAX, &value) != 0)
        return -1;
    *out = (uint64_t)value;
    return 0;
}

enum audit_option {
    AUDIT_OPT_STORE = 1000,
    AUDIT_OPT_BROKER_KEY,
    AUDIT_OPT_EXPECT,
    AUDIT_OPT_STORE_KEY,
    AUDIT_OPT_FROM,
    AUDIT_OPT_COUNT,
    AUDIT_OPT_NO_FOLLOW,
    AUDIT_OPT_JSON,
};

/* Every audit command's options in one table: an option of another
 * command is named as such (option_applies), not as unknown. */
static const struct option audit_options[] = {{"store", 1, NULL, AUDIT_OPT_STORE},
                                              {"broker-key", 1, NULL, AUDIT_OPT_BROKER_KEY},
                                              {"expect", 1, NULL, AUDIT_OPT_EXPECT},
                                              {"store-key", 1, NULL, AUDIT_OPT_STORE_KEY},
                                              {"from", 1, NULL, AUDIT_OPT_FROM},
                                              {"count", 1, NULL, AUDIT_OPT_COUNT},
                                              {"no-follow", 0, NULL, AUDIT_OPT_NO_FOLLOW},
                                              {"json", 0, NULL, AUDIT_OPT_JSON},
                                              {"help", 0, NULL, 'h'},
                                              {NULL, 0, NULL, 0}};

/* 1 if option (an AUDIT_OPT_) is one of audit `sub`'s. */
static int option_applies(int option, const char *sub)
{
    switch (option) {
    case AUDIT_OPT_BROKER_KEY:
    case AUDIT_OPT_EXPECT:
        return strcmp(sub, "verify") == 0;
    case AUDIT_OPT_STORE_KEY:
        return strcmp(sub, "subject") == 0;
    case AUDIT_OPT_FROM:
    case AUDIT_OPT_COUNT:
    case AUDIT_OPT_NO_FOLLOW:
    case AUDIT_OPT_JSON:
        return strcmp(sub, "tail") == 0;
    default:
        return 1; /* --store */
    }
}

/* One option that applies (value: its optarg). Returns 0, or a usage exit. */
static int option_set(audit_options_t *o, int option, const char *value)
{
    switch (option) {
    case AUDIT_OPT_STORE:
        o->store = value;
        break;
    case AUDIT_OPT_BROKER_KEY:
        if (o->n_keys == AUDIT_MAX_KEYS)
            return audit_say(AUDIT_CMD_USAGE, "at most %d --broker-key options", AUDIT_MAX_KEYS);
        o->keys[o->n_keys++] = value;
        break;
    case AUDIT_OPT_STORE_KEY:
        o->store_key = value;
        break;
    case AUDIT_OPT_EXPECT:
        o->expect = value;
        break;
    case AUDIT_OPT_FROM:
        if (parse_u64(value, 1, &o->from) != 0)
            return audit_say(AUDIT_CMD_USAGE, "--from needs a seq (1 or more), not '%s'", value);
        break;
    case AUDIT_OPT_COUNT:
        if (parse_u64(value, 1, &o->count) != 0)
            return audit_say(AUDIT_CMD_USAGE, "--count needs a number (1 or more), not '%s'",
                             value);
        break;
    case AUDIT_OPT_NO_FOLLOW:
        o->no_follow = 1;
        break;
    case AUDIT_OPT_JSON:
        o->json = 1;
        break;
    }
    return 0;
}

/* An option getopt_long refused. One of another audit command's, also
 * given a value it does not take or without its value, is named as such:
 * "'--json' is not an option of audit verify", not "--json takes no value". */
static int option_refused(const char *sub, int option, int argc, char **argv)
{
    const struct option *named = optreport_refused_long(option, audit_options, argc, argv);
    if (named != NULL && !option_applies(named->val, sub))
        return audit_say(AUDIT_CMD_USAGE, "'--%s' is not an option of audit %s", named->name, sub);
    char text[256];
    optreport_describe(option, audit_options, argc, argv, text, sizeof text);
    return audit_say(AUDIT_CMD_USAGE, "%s", text);
}

/* An argument that is not an option: subject's PSEUDONYM, once. */
static int operand_set(audit_options_t *o, const char *sub, const char *arg)
{
    if (strcmp(sub, "subject") != 0 || o->subject != NULL)
        return audit_say(AUDIT_CMD_USAGE, "unexpected argument '%s'", arg);
    o->subject = arg;
    return 0;
}

/* Options and subject's PSEUDONYM, in any order. The optstring's '-' hands
 * getopt_long's arguments over in the order given, each operand as 1,
 * whatever POSIXLY_CORRECT says (without it getopt would stop at the
 * first operand there, and refuse `subject P --store X`). Where subject's
 * PSEUDONYM is due, an argument that begins with a single '-' is that
 * PSEUDONYM (audit_cmd_dash_pseudonym); after "--" every argument is an
 * operand. Returns 0, -1 after printing the help, or a usage exit. */
static int options_parse(audit_options_t *o, const char *sub, int argc, char **argv)
{
    memset(o, 0, sizeof *o);
    o->store = AUDIT_DEFAULT_STORE;
    o->store_key = AUDIT_DEFAULT_STORE_KEY;
    int is_subject = strcmp(sub, "subject") == 0;
    int option, long_index = -1, rc = 0;
    opterr = 0; /* its '?' and ':' are told apart by optreport_describe */
    optind = 2; /* after "audit SUB" */
    while (rc == 0) {
        if (is_subject && o->subject == NULL && optind < argc &&
            audit_cmd_dash_pseudonym(argv[optind])) {
            o->subject = argv[optind++];
            continue;
        }
        option = getopt_long(argc, argv, "-:h", audit_options, &long_index);
        if (option == -1)
            break;
        if (option == 'h') {
            fputs(audit_usage, stdout);
            return -1;
        }
        if (option == '?' || option == ':')
            return option_refused(sub, option, argc, argv);
        if (option == 1)
            rc = operand_set(o, sub, optarg);
        else if (!option_applies(option, sub))
            rc = audit_say(AUDIT_CMD_USAGE, "'--%s' is not an option of audit %s",
                           audit_options[long_index].name, sub);
        else
            rc = option_set(o, option, optarg);
    }
    for (; rc == 0 && optind < argc; optind++) /* after "--" */
        rc = operand_set(o, sub, argv[optind]);
    if (rc != 0)
        return rc;
    if (is_subject && o->subject == NULL)
        return audit_say(AUDIT_CMD_USAGE, "audit subject needs a PSEUDONYM");
    if (strcmp(sub, "verify") == 0 && o->n_keys == 0) {
        /* as for the commands that ask the broker (schakelctl(8)) */
        const char *env_key = getenv("SCHAKEL_BROKER_KEY");
        int from_env = env_key != NULL && env_key[0] != '\0';
        o->keys[o->n_keys++] = from_env ? env_key : AUDIT_DEFAULT_BROKER_KEY;
        o->keys_from = from_env ? "SCHAKEL_BROKER_KEY" : "the default";
    }
    return 0;
}

int audit_cmd_dash_pseudonym(const char *arg)
{
    return arg[0] == '-' && arg[1] != '-' && arg[1] != '\0' && strcmp(arg, "-h") != 0;
}

/* Read-only; with the store key when key is not NULL (wiped here). Not
 * a store whose files may lack its last commits as they stand, where a
 * start of the broker is refused (storefile_whole_refuse: a WAL an
 * interrupted restore set aside, a second name of its file that such a
 * restore left): a trail read without them would verify as intact, an
 * export would miss them. NULL with the exit code in *code, after the
 * message, which begins with refused ("not verified"). Another second
 * name of the file is a warning on stderr, and the store is read. */
static store_t *open_store(const char *path, uint8_t *key, const char *refused, int *code)
{
    char err[2048];
    store_t *store = NULL;
    int whole = storefile_whole_refuse(path, err, sizeof err);
    if (whole > 0)
        (void)audit_say(AUDIT_CMD_OK, "warning: %s", err);
    if (whole < 0)
        *code = audit_say(AUDIT_CMD_NOT_WHOLE,
                          "%s: %s; as the files stand, what the store holds may lack its last "
                          "commits, and a trail read without them would still verify as intact",
                          refused, err);
    else if ((store = store_open_reader(path, key, err, sizeof err)) == NULL)
        *code = audit_say(AUDIT_CMD_FAILED, "cannot read the store: %s", err);
    if (key != NULL)
        sodium_memzero(key, STORE_KEY_BYTES);
    return store;
}

/* ------------------------------------------------------------------ verify */

static int parse_anchor(const char *text, audit_anchor_t *anchor)
{
    char seq_text[24];
    const char *colon = text != NULL ? strchr(text, ':') : NULL;
    if (colon == NULL || (size_t)(colon - text) >= sizeof seq_text)
        return -1;
    memcpy(seq_text, text, (size_t)(colon - text));
    seq_text[colon - text] = '\0';
    if (parse_u64(seq_text, 1, &anchor->seq) != 0 || strlen(colon + 1) != 64 ||
        syntax_unhex(colon + 1, anchor->hash, sizeof anchor->hash) != 0)
        return -1;
    return 0;
}

static void print_intact(const audit_verify_report_t *r)
{
    char when[32], hash[65];
    printf("audit trail intact: %llu %s, %llu %s verified\n", (unsigned long long)r->entries,
           plural(r->entries, "entry", "entries"), (unsigned long long)r->checkpoints,
           plural(r->checkpoints, "checkpoint", "checkpoints"));
    if (r->last_checkpoint_seq > 0) {
        audit_format_time(r->last_checkpoint_at, when, sizeof when);
        syntax_hex(r->last_checkpoint_hash, sizeof r->last_checkpoint_hash, hash);
        printf("last checkpoint: seq %llu at %s, hash %s\n",
               (unsigned long long)r->last_checkpoint_seq, when, hash);
    }
    if (r->last_seq > r->last_checkpoint_seq)
        printf("not yet under a checkpoint: %llu %s (the broker signs them within %d s "
               "or %u entries)\n",
               (unsigned long long)(r->last_seq - r->last_checkpoint_seq),
               plural(r->last_seq - r->last_checkpoint_seq, "entry", "entries"),
               SCHAKEL_AUDIT_CHECKPOINT_IVL_S, SCHAKEL_AUDIT_CHECKPOINT_ENTRIES);
    if (r->last_seq > 0) {
        syntax_hex(r->last_hash, sizeof r->last_hash, hash);
        printf("anchor for the next verification: --expect %llu:%s\n",
               (unsigned long long)r->last_seq, hash);
    }
}

/* The acked-delivery index, after an intact chain. Returns the exit code:
 * an index that disagrees with the entries fails the verification too (an
 * export would miss or misplace acks), though the chain itself holds. */
static int print_index(const audit_verify_report_t *r)
{
    if (!r->index_checked)
        return AUDIT_CMD_OK; /* a store from before the index */
    if (r->index_intact) {
        printf("acked-delivery index agrees with the entries: %llu acked %s\n",
               (unsigned long long)r->acked_seqs, plural(r->acked_seqs, "delivery", "deliveries"));
        return AUDIT_CMD_OK;
    }
    printf("acked-delivery index DISAGREES with the entries (the chain itself is intact): %s\n",
           r->index_problem);
    return AUDIT_CMD_BROKEN;
}

/* The tables' SQLite indexes, after an intact chain. Returns the exit
 * code: an index that SQLite finds damaged fails the verification (an
 * export reads through it: it may leave the subject's entries out, or
 * show another subject's), though the chain itself holds. */
static int print_tables(const audit_verify_report_t *r)
{
    if (!r->tables_checked)
        return AUDIT_CMD_OK;
    if (r->tables_intact) {
        printf("audit tables and their indexes: SQLite's integrity_check ok\n");
        return AUDIT_CMD_OK;
    }
    printf("audit indexes DAMAGED (the chain itself is intact): SQLite reports %llu %s, the "
           "first: %s; an export reads through them, so it may miss or misplace entries\n",
           (unsigned long long)r->tables_problems,
           plural(r->tables_problems, "problem", "problems"), r->tables_problem);
    return AUDIT_CMD_BROKEN;
}

static int audit_verify_cmd(const audit_options_t *o)
{
    uint8_t keys[AUDIT_MAX_KEYS][32];
    audit_anchor_t anchor;
    char err[512];
    if (o->expect != NULL && parse_anchor(o->expect, &anchor) != 0)
        return audit_say(AUDIT_CMD_USAGE, "--expect needs SEQ:HASH (HASH: 64 hex digits)");
    for (size_t i = 0; i < o->n_keys; i++) {
        if (keys_load_public(o->keys[i], keys[i], err, sizeof err) == 0)
            continue;
        if (o->keys_from == NULL)
            return audit_say(AUDIT_CMD_FAILED, "cannot read the broker key: %s", err);
        return audit_say(AUDIT_CMD_FAILED,
                         "cannot read the broker key: %s (%s, as no --broker-key was given): "
                         "name the broker's .pub with --broker-key FILE (after a rotation of "
                         "the broker key, every key used, oldest first)",
                         err, o->keys_from);
    }
    int code = AUDIT_CMD_FAILED;
    store_t *store = open_store(o->store, NULL, "not verified", &code);
    if (store == NULL)
        return code;
    audit_verify_report_t report;
    int rc = audit_verify(store, (const uint8_t(*)[32])keys, o->n_keys,
                          o->expect != NULL ? &anchor : NULL, &report);
    store_close(&store);
    if (rc != 0)
        return audit_say(AUDIT_CMD_FAILED, "%s", report.problem);
    if (report.intact) {
        print_intact(&report);
        int index_rc = print_index(&report), tables_rc = print_tables(&report);
        return index_rc != AUDIT_CMD_OK ? index_rc : tables_rc;
    }
    printf("audit trail BROKEN at entry %llu: %s\n", (unsigned long long)report.broken_seq,
           report.problem);
    printf("verified before it: %llu %s, %llu %s\n", (unsigned long long)report.entries,
           plural(report.entries, "entry", "entries"), (unsigned long long)report.checkpoints,
           plural(report.checkpoints, "checkpoint", "checkpoints"));
    return AUDIT_CMD_BROKEN;
}

/* ------------------------------------------------------------------ subject */

static int audit_subject_cmd(const audit_options_t *o)
{
    char err[512], *json = NULL;
    uint8_t key[STORE_KEY_BYTES];
    if (!syntax_is_pseudonym(o->subject))
        return audit_say(AUDIT_CMD_USAGE, "'%s' is not a pseudonym", o->subject);
    if (keys_load_symmetric(o->store_key, key, err, sizeof err) != 0)
        return audit_say(AUDIT_CMD_FAILED, "cannot read the store key: %s", err);
    int code = AUDIT_CMD_FAILED;
    store_t *store = open_store(o->store, key, "nothing exported", &code);
    if (store == NULL)
        return code;
    int rc = audit_subject_export(store, o->subject, (int64_t)time(NULL), &json, err, sizeof err);
    store_close(&store);
    if (rc != 0)
        return audit_say(AUDIT_CMD_FAILED, "%s", err);
    fputs(json, stdout);
    free(json);
    fprintf(stderr, "schakelctl audit: an offline export is not itself recorded in the broker's "
                    "trail\n");
    return fflush(stdout) == 0 ? AUDIT_CMD_OK : AUDIT_CMD_FAILED;
}

/* ------------------------------------------------------------------ tail */

static volatile sig_atomic_t tail_interrupted;

static void tail_on_signal(int sig)
{
    (void)sig;
    tail_interrupted = 1;
}

typedef struct tail_state {
    const audit_options_t *options;
    uint64_t after; /* the last seq printed */
    uint64_t printed;
    int failed; /* out of memory or stdout gone */
} tail_state_t;

static int tail_print(const store_audit_entry_t *e, void *arg)
{
    tail_state_t *st = arg;
    /* Subjects are withheld: tail is for watching the broker, not people. */
    char *text = st->options->json ? audit_entry_json(e, 1) : audit_entry_line(e, 1);
    if (text == NULL || puts(text) == EOF) {
        free(text);
        st->failed = 1;
        return 1;
    }
    free(text);
    st->after = e->seq;
    st->printed++;
    return st->options->count != 0 && st->printed >= st->options->count;
}

static int tail_start(store_t *store, const audit_options_t *o, uint64_t *after)
{
    store_audit_tail_t tail;
    if (o->from != 0) {
        *after = o->from - 1;
        return 0;
    }
    if (store_audit_tail(store, &tail) != 0)
        return -1;
    *after = tail.seq > AUDIT_TAIL_DEFAULT_LAST ? tail.seq - AUDIT_TAIL_DEFAULT_LAST : 0;
    return 0;
}

/* Read, print, wait SCHAKEL_AUDIT_TAIL_POLL_MS, again: each read is its
 * own short read transaction, so the broker's WAL checkpoints are never
 * held up for long. */
static int audit_tail_cmd(const audit_options_t *o)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = tail_on_signal; /* no SA_RESTART: the wait ends at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int code = AUDIT_CMD_FAILED;
    store_t *store = open_store(o->store, NULL, "nothing read", &code);
    if (store == NULL)
        return code;
    tail_state_t st = {.options = o};
    int rc = tail_start(store, o, &st.after);
    while (rc == 0 && !tail_interrupted) {
        int n = store_audit_scan(store, st.after, AUDIT_TAIL_BATCH, tail_print, &st);
        if (n < 0 || st.failed || fflush(stdout) != 0) {
            rc = -1;
            break;
        }
        if (o->count != 0 && st.printed >= o->count)
            break;
        if ((size_t)n == AUDIT_TAIL_BATCH)
            continue;
        if (o->no_follow)
            break;
        struct timespec wait = {.tv_sec = SCHAKEL_AUDIT_TAIL_POLL_MS / 1000,
                                .tv_nsec = (SCHAKEL_AUDIT_TAIL_POLL_MS % 1000) * 1000000L};
        nanosleep(&wait, NULL);
    }
    if (rc != 0 && !st.failed)
        audit_say(AUDIT_CMD_FAILED, "cannot read the trail: %s", store_errmsg(store));
    store_close(&store);
    return rc == 0 ? AUDIT_CMD_OK : AUDIT_CMD_FAILED;
}

/* ------------------------------------------------------------------ main */

int audit_cmd_main(int argc, char **argv)
{
    audit_options_t o;
    if (argc < 2)
        return audit_say(AUDIT_CMD_USAGE, "no audit command given (verify, subject, tail)");
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        fputs(audit_usage, stdout);
        return AUDIT_CMD_OK;
    }
    if (strcmp(sub, "verify") != 0 && strcmp(sub, "subject") != 0 && strcmp(sub, "tail") != 0)
        return audit_say(AUDIT_CMD_USAGE, "unknown audit command '%s'", sub);
    int rc = options_parse(&o, sub, argc, argv);
    if (rc != 0)
        return rc < 0 ? AUDIT_CMD_OK : rc;
    if (keys_init() != 0)
        return audit_say(AUDIT_CMD_FAILED, "libsodium cannot initialise");
    if (strcmp(sub, "verify") == 0)
        return audit_verify_cmd(&o);
    if (strcmp(sub, "subject") == 0)
        return audit_subject_cmd(&o);
    return audit_tail_cmd(&o);
}
