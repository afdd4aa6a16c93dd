/*
 * fuzz_config.c — libFuzzer harness for config_load, the reader of the
 * broker's YAML configuration. The input is written to schakeld.yaml in a
 * per-process mkdtemp() folder under /tmp (removed at exit) and loaded. A
 * refusal must carry a terminated "FILE: ..." or "FILE:LINE: ..." text; a
 * config that loads must hold only values config_set accepts too, with
 * paths resolved against the folder, and no string of the input may have
 * held a NUL (libyaml is asked independently). Crashes, sanitizer reports,
 * leaks and broken promises (abort, with the promise named on stderr) are
 * the findings.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_config_dir[64];
static char fuzz_config_path[96];

static void fuzz_config_cleanup(void)
{
    if (fuzz_config_path[0] != '\0')
        unlink(fuzz_config_path);
    if (fuzz_config_dir[0] != '\0')
        rmdir(fuzz_config_dir);
}

/* A finding: say which promise broke, leave no file behind, and abort so
 * that libFuzzer and the replay both stop on this input. */
static void fuzz_config_fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_config: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    fuzz_config_cleanup();
    abort();
}

/* Once per process: a folder per input would only measure mkdir. */
static void fuzz_config_setup(void)
{
    if (fuzz_config_dir[0] != '\0')
        return;
    snprintf(fuzz_config_dir, sizeof fuzz_config_dir, "/tmp/schakel-fuzz-config-XXXXXX");
    if (mkdtemp(fuzz_config_dir) == NULL) {
        perror("fuzz_config: mkdtemp");
        abort();
    }
    snprintf(fuzz_config_path, sizeof fuzz_config_path, "%s/schakeld.yaml", fuzz_config_dir);
    atexit(fuzz_config_cleanup);
}

static void fuzz_config_write(const uint8_t *data, size_t size)
{
    FILE *file = fopen(fuzz_config_path, "wb");
    if (file == NULL)
        fuzz_config_fail("cannot create the input file", NULL);
    size_t written = size > 0 ? fwrite(data, 1, size, file) : 0;
    if (fclose(file) != 0 || written != size)
        fuzz_config_fail("cannot write the input file", NULL);
    /* whatever the umask: config_load refuses a file others may write */
    if (chmod(fuzz_config_path, 0644) != 0)
        fuzz_config_fail("cannot chmod the input file", NULL);
}

/* "PATH: message" or "PATH:LINE: message", terminated. */
static void fuzz_config_check_refusal(const char *err, size_t errlen)
{
    size_t path_len = strlen(fuzz_config_path);
    if (memchr(err, '\0', errlen) == NULL)
        fuzz_config_fail("a refusal without a terminated error text", NULL);
    if (strncmp(err, fuzz_config_path, path_len) != 0 || err[path_len] != ':' ||
        strlen(err) <= path_len + 2)
        fuzz_config_fail("a refusal that does not start with \"FILE:\"", err);
}

/* Whether any scalar of the input, as libyaml decodes it, holds a NUL
 * ("\0", "\x00" or "\u0000" in a double-quoted string). A loader that
 * keeps such a value as a C string would silently cut it short. */
static int fuzz_config_has_nul_scalar(const uint8_t *data, size_t size)
{
    yaml_parser_t parser;
    yaml_event_t event;
    int found = 0, done = 0;
    if (!yaml_parser_initialize(&parser))
        fuzz_config_fail("out of memory", NULL);
    yaml_parser_set_input_string(&parser, data, size);
    while (!found && !done && yaml_parser_parse(&parser, &event)) {
        found = event.type == YAML_SCALAR_EVENT &&
                memchr(event.data.scalar.value, '\0', event.data.scalar.length) != NULL;
        done = event.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&event);
    }
    yaml_parser_delete(&parser);
    return found;
}

/* Every field of broker_config_t with its YAML key name: all of them are
 * strings, so a field added to the struct stops the build until it is
 * listed here too. */
#define FUZZ_CONFIG_FIELDS 27
_Static_assert(sizeof(broker_config_t) == FUZZ_CONFIG_FIELDS * sizeof(char *),
               "fuzz_config_fields must list every field of broker_config_t");

static size_t fuzz_config_fields(const broker_config_t *cfg, const char *names[],
                                 const char *values[])
{
    size_t n = 0;
#define FUZZ_CONFIG_FIELD(name, member)                                                            \
    (n < FUZZ_CONFIG_FIELDS ? (void)(names[n] = (name), values[n++] = cfg->member)                 \
                            : fuzz_config_fail("the harness lists a field too many", (name)))
    FUZZ_CONFIG_FIELD("listen", listen);
    FUZZ_CONFIG_FIELD("key_file", key_file);
    FUZZ_CONFIG_FIELD("policy", policy_path);
    FUZZ_CONFIG_FIELD("store", store_path);
    FUZZ_CONFIG_FIELD("store_key_file", store_key_path);
    FUZZ_CONFIG_FIELD("ack_timeout", ack_timeout);
    FUZZ_CONFIG_FIELD("max_publish_rate", max_publish_rate);
    FUZZ_CONFIG_FIELD("max_connections_per_principal", max_connections);
    FUZZ_CONFIG_FIELD("max_frame_bytes", max_frame_bytes);
    FUZZ_CONFIG_FIELD("max_items_per_publish", max_items);
    FUZZ_CONFIG_FIELD("max_summary_length", max_summary);
    FUZZ_CONFIG_FIELD("max_grounds_length", max_grounds);
    FUZZ_CONFIG_FIELD("max_window", max_window);
    FUZZ_CONFIG_FIELD("max_case_opens_per_hour", max_case_opens);
    FUZZ_CONFIG_FIELD("max_case_opens_per_hour_per_partner", max_case_opens_partner);
    FUZZ_CONFIG_FIELD("metrics_listen", metrics_listen);
    FUZZ_CONFIG_FIELD("admin_listen", admin_listen);
    FUZZ_CONFIG_FIELD("sync_thread", sync_thread);
    FUZZ_CONFIG_FIELD("max_handshakes_per_minute", max_handshakes);
    FUZZ_CONFIG_FIELD("connection_idle_timeout", idle_timeout);
    FUZZ_CONFIG_FIELD("max_silent_connections", max_silent);
    FUZZ_CONFIG_FIELD("idempotency_window", idempotency_window);
    FUZZ_CONFIG_FIELD("admin_heartbeat_timeout", admin_heartbeat_timeout);
    FUZZ_CONFIG_FIELD("max_queued_bytes_per_principal", max_principal_queued);
    FUZZ_CONFIG_FIELD("max_unknown_acks_per_second", max_unknown_acks);
    FUZZ_CONFIG_FIELD("store_min_free_bytes", store_min_free);
    FUZZ_CONFIG_FIELD("max_stored_bytes_per_partner", max_partner_stored);
#undef FUZZ_CONFIG_FIELD
    if (n != FUZZ_CONFIG_FIELDS)
        fuzz_config_fail("the harness lists a field too few", NULL);
    return n;
}

/* Every value config_load took, config_set must take as well: both
 * promise the same checks. The value is copied first, since config_set
 * frees the old one. */
static void fuzz_config_check_set(broker_config_t *cfg, const char *field, const char *value)
{
    char err[256];
    if (value == NULL)
        return;
    for (const unsigned char *c = (const unsigned char *)value; *c; c++)
        if (*c < 0x20 || *c == 0x7f)
            fuzz_config_fail("a value with a control character was accepted", field);
    char *copy = strdup(value);
    if (copy == NULL)
        fuzz_config_fail("out of memory", NULL);
    if (config_set(cfg, field, copy, err, sizeof err) != 0)
        fuzz_config_fail("config_set refuses a value config_load took", err);
    free(copy);
}

/* A relative path was joined to the config file's folder, which is
 * absolute here, so every resolved path is absolute. */
static void fuzz_config_check_loaded(broker_config_t *cfg)
{
    const char *names[FUZZ_CONFIG_FIELDS], *values[FUZZ_CONFIG_FIELDS];
    const char *durations[] = {cfg->ack_timeout, cfg->idle_timeout, cfg->idempotency_window,
                               cfg->admin_heartbeat_timeout};
    char err[256];
    const char *paths[] = {cfg->key_file, cfg->policy_path, cfg->store_path, cfg->store_key_path};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (paths[i] != NULL && paths[i][0] != '/')
            fuzz_config_fail("a path not resolved against the config folder", paths[i]);
    if (cfg->listen != NULL && strncmp(cfg->listen, "tcp://", 6) != 0)
        fuzz_config_fail("a listen endpoint that is not tcp://", cfg->listen);
    if (cfg->admin_listen != NULL && strncmp(cfg->admin_listen, "tcp://", 6) != 0)
        fuzz_config_fail("an admin_listen endpoint that is not tcp://", cfg->admin_listen);
    for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++)
        if (durations[i] != NULL && config_duration_ms(durations[i]) < 1000)
            fuzz_config_fail("a duration outside 1 s .. 24 h", durations[i]);
    size_t n = fuzz_config_fields(cfg, names, values);
    for (size_t i = 0; i < n; i++)
        if ((strncmp(names[i], "max_", 4) == 0 || strcmp(names[i], "store_min_free_bytes") == 0) &&
            values[i] != NULL && config_limit(values[i], names[i]) < 1)
            fuzz_config_fail("a number outside its key's cap", names[i]);
    for (size_t i = 0; i < n; i++) {
        fuzz_config_fields(cfg, names, values); /* config_set replaced earlier values */
        fuzz_config_check_set(cfg, names[i], values[i]);
    }
    memset(err, 'x', sizeof err);
    if (config_complete(cfg, err, sizeof err) != 0 &&
        (memchr(err, '\0', sizeof err) == NULL || err[0] == '\0'))
        fuzz_config_fail("config_complete refused without an error text", NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    fuzz_config_setup();
    fuzz_config_write(data, size);
    memset(err, 'x', sizeof err);
    broker_config_t *cfg = config_load(fuzz_config_path, err, sizeof err);
    if (cfg == NULL) {
        fuzz_config_check_refusal(err, sizeof err);
        return 0;
    }
    if (fuzz_config_has_nul_scalar(data, size)) {
        config_destroy(&cfg);
        fuzz_config_fail("a YAML string holding a NUL was accepted (config.h promises values "
                         "free of control characters; the value was cut short at the NUL)",
                         NULL);
    }
    fuzz_config_check_loaded(cfg);
    config_destroy(&cfg);
    if (cfg != NULL)
        fuzz_config_fail("config_destroy left the pointer set", NULL);
    return 0;
}
