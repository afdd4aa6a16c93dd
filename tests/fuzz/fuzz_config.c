/*
 * fuzz_config.c — libFuzzer harness for config_load, the reader of the
 * broker's YAML configuration. The input is written to schakeld.yaml in a
 * per-process mkdtemp() folder under /tmp (removed at exit) and loaded. A
 * refusal must carry a terminated "FILE: ..." or "FILE:LINE: ..." text; a
 * config that loads must hold only values config_set accepts too, with
 * paths resolved against the folder, and no string of the input may have
 * held a NUL (libyaml is asked independently). Crashes, sanitizer reports,
 * leaks and broken promises (abort) are the findings.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <yaml.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_config_dir[64];
static char fuzz_config_path[96];

static void fuzz_config_cleanup(void)
{
    unlink(fuzz_config_path);
    rmdir(fuzz_config_dir);
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
    if (file == NULL || (size > 0 && fwrite(data, 1, size, file) != size) || fclose(file) != 0) {
        perror("fuzz_config: write");
        abort();
    }
}

/* "PATH: message" or "PATH:LINE: message", terminated. */
static void fuzz_config_check_refusal(const char *err, size_t errlen)
{
    size_t path_len = strlen(fuzz_config_path);
    if (memchr(err, '\0', errlen) == NULL || strncmp(err, fuzz_config_path, path_len) != 0 ||
        err[path_len] != ':' || strlen(err) <= path_len + 2)
        abort();
}

/* A resolved path is absolute: a relative one was joined to the config
 * file's folder, which is absolute here. */
static void fuzz_config_check_path(const char *value)
{
    if (value != NULL && value[0] != '/')
        abort();
}

/* Every value config_load took, config_set must take as well: both
 * promise the same checks. The value is copied first, since config_set
 * frees the old one. */
static void fuzz_config_check_set(broker_config_t *cfg, const char *field, const char *value)
{
    char err[256];
    if (value == NULL)
        return;
    char *copy = strdup(value);
    if (copy == NULL)
        abort();
    for (const unsigned char *c = (const unsigned char *)copy; *c; c++)
        if (*c < 0x20 || *c == 0x7f)
            abort(); /* control characters are refused */
    if (config_set(cfg, field, copy, err, sizeof err) != 0)
        abort();
    free(copy);
}

/* Each field of broker_config_t with its YAML key name. */
static void fuzz_config_fields(const broker_config_t *cfg, const char *names[], const char *values[],
                               size_t *count)
{
    size_t n = 0;
#define FUZZ_CONFIG_FIELD(name, member) (names[n] = (name), values[n++] = cfg->member)
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
#undef FUZZ_CONFIG_FIELD
    *count = n;
}

static void fuzz_config_check_loaded(broker_config_t *cfg)
{
    const char *names[16], *values[16];
    size_t n = 0;
    char err[256];
    if (cfg->listen != NULL && strncmp(cfg->listen, "tcp://", 6) != 0)
        abort();
    if (cfg->ack_timeout != NULL && config_duration_ms(cfg->ack_timeout) < 1000)
        abort();
    fuzz_config_check_path(cfg->key_file);
    fuzz_config_check_path(cfg->policy_path);
    fuzz_config_check_path(cfg->store_path);
    fuzz_config_check_path(cfg->store_key_path);
    fuzz_config_fields(cfg, names, values, &n);
    for (size_t i = 0; i < n; i++)
        if (strncmp(names[i], "max_", 4) == 0 && values[i] != NULL &&
            config_limit(values[i], names[i]) < 1)
            abort(); /* a number the loader took is within its key's cap */
    for (size_t i = 0; i < n; i++) {
        fuzz_config_fields(cfg, names, values, &n); /* config_set replaced earlier ones */
        fuzz_config_check_set(cfg, names[i], values[i]);
    }
    memset(err, 'x', sizeof err);
    if (config_complete(cfg, err, sizeof err) != 0 &&
        (memchr(err, '\0', sizeof err) == NULL || err[0] == '\0'))
        abort();
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
        abort();
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
        fprintf(stderr, "fuzz_config: a YAML string holding a NUL was accepted; config.h "
                        "promises values free of control characters\n");
        abort();
    }
    fuzz_config_check_loaded(cfg);
    config_destroy(&cfg);
    if (cfg != NULL)
        abort();
    return 0;
}
