/*
 * test_config.c — the broker config loader (broker/config.c).
 *
 * Good configs load with relative paths resolved against the config file's
 * folder; broken ones fail with FILE:LINE; command-line overrides are
 * checked like file values. Files are written into a mkdtemp() folder,
 * which is removed afterwards.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"

typedef struct fixture {
    char dir[64];
    char path[128]; /* DIR/schakeld.yaml */
} fixture_t;

static int fixture_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/schakel-test-config-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/schakeld.yaml", f->dir);
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    fixture_t *f = *state;
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void write_text(const char *path, const char *text, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(text, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
    /* whatever the umask: a config others may write is refused */
    assert_int_equal(chmod(path, 0644), 0);
}

static broker_config_t *load_text(const fixture_t *f, const char *text, char *err, size_t errlen)
{
    write_text(f->path, text, strlen(text));
    return config_load(f->path, err, errlen);
}

static void test_good_config(void **state)
{
    const fixture_t *f = *state;
    char err[512] = "", expected[256];
    broker_config_t *cfg = load_text(f,
                                     "# broker\n"
                                     "listen: \"tcp://127.0.0.1:*\"\n"
                                     "key_file: keys/broker.key\n"
                                     "policy: /etc/schakel/policy.yaml\n"
                                     "store: var/schakel.db\n"
                                     "store_key_file: keys/store.key\n"
                                     "ack_timeout: 2m\n"
                                     "sync_thread: always\n"
                                     "max_handshakes_per_minute: 120\n"
                                     "connection_idle_timeout: 90s\n"
                                     "max_silent_connections: 2048\n"
                                     "max_case_opens_per_hour: 40\n"
                                     "max_case_opens_per_hour_per_partner: 90\n"
                                     "admin_heartbeat_timeout: 2m\n"
                                     "max_queued_bytes_per_principal: 8388608\n"
                                     "max_unknown_acks_per_second: 64\n",
                                     err, sizeof err);
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_string_equal(cfg->listen, "tcp://127.0.0.1:*");
    snprintf(expected, sizeof expected, "%s/keys/broker.key", f->dir);
    assert_string_equal(cfg->key_file, expected);
    assert_string_equal(cfg->policy_path, "/etc/schakel/policy.yaml");
    snprintf(expected, sizeof expected, "%s/var/schakel.db", f->dir);
    assert_string_equal(cfg->store_path, expected);
    snprintf(expected, sizeof expected, "%s/keys/store.key", f->dir);
    assert_string_equal(cfg->store_key_path, expected);
    assert_string_equal(cfg->ack_timeout, "2m");
    assert_int_equal(config_duration_ms(cfg->ack_timeout), 120000);
    assert_string_equal(cfg->sync_thread, "always");
    assert_int_equal(config_limit(cfg->max_handshakes, "max_handshakes_per_minute"), 120);
    assert_int_equal(config_duration_ms(cfg->idle_timeout), 90000);
    assert_int_equal(config_limit(cfg->max_silent, "max_silent_connections"), 2048);
    assert_int_equal(config_limit(cfg->max_case_opens, "max_case_opens_per_hour"), 40);
    assert_int_equal(
        config_limit(cfg->max_case_opens_partner, "max_case_opens_per_hour_per_partner"), 90);
    assert_int_equal(config_duration_ms(cfg->admin_heartbeat_timeout), 120000);
    assert_int_equal(config_limit(cfg->max_principal_queued, "max_queued_bytes_per_principal"),
                     8388608);
    assert_int_equal(config_limit(cfg->max_unknown_acks, "max_unknown_acks_per_second"), 64);
    assert_int_equal(config_complete(cfg, err, sizeof err), 0);
    config_destroy(&cfg);
    assert_null(cfg);
    config_destroy(&cfg); /* idempotent */
    config_destroy(NULL);
}

static void test_partial_config(void **state)
{
    const fixture_t *f = *state;
    char err[512] = "";
    broker_config_t *cfg = load_text(f, "listen: tcp://0.0.0.0:7450\n", err, sizeof err);
    if (cfg == NULL)
        fail_msg("%s", err);
    assert_string_equal(cfg->listen, "tcp://0.0.0.0:7450");
    assert_null(cfg->sync_thread); /* busy */
    assert_null(cfg->key_file);
    assert_null(cfg->policy_path);
    assert_null(cfg->store_path);
    assert_int_equal(config_complete(cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "key_file is not set"));

    /* command-line overrides fill the rest; paths stay as given */
    assert_int_equal(config_set(cfg, "key_file", "broker.key", err, sizeof err), 0);
    assert_int_equal(config_set(cfg, "policy", "policy.yaml", err, sizeof err), 0);
    assert_int_equal(config_complete(cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "store is not set"));
    assert_int_equal(config_set(cfg, "store", "/var/lib/schakel/schakel.db", err, sizeof err), 0);
    assert_int_equal(config_set(cfg, "listen", "tcp://127.0.0.1:*", err, sizeof err), 0);
    assert_int_equal(config_complete(cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "store_key_file is not set"));
    assert_int_equal(config_set(cfg, "store_key_file", "store.key", err, sizeof err), 0);
    assert_int_equal(config_complete(cfg, err, sizeof err), 0); /* ack_timeout is optional */
    assert_string_equal(cfg->key_file, "broker.key");
    assert_string_equal(cfg->policy_path, "policy.yaml");
    assert_string_equal(cfg->listen, "tcp://127.0.0.1:*");
    config_destroy(&cfg);

    /* an empty file is a config with nothing set */
    cfg = load_text(f, "", err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(config_complete(cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "listen is not set"));
    config_destroy(&cfg);
    assert_int_equal(config_complete(NULL, err, sizeof err), -1);
}

typedef struct set_row {
    const char *field, *value;
    int ok;
    const char *error;
} set_row_t;

static const set_row_t set_rows[] = {
    {"listen", "tcp://[::1]:7450", 1, NULL},
    {"listen", "ipc:///tmp/schakel", 0, "must be a tcp:// endpoint"},
    {"listen", "tcp://", 0, "must be a tcp:// endpoint"},
    {"listen", "tcp://1.2.3.4:5 6", 0, "spaces"},
    {"store", "", 0, "must not be empty"},
    {"store", "a\nb", 0, "control character"},
    {"policy", NULL, 0, "must not be empty"},
    {"password", "x", 0, "unknown config field \"password\" (the keys: schakeld(8)"},
    {"max_windw", "5", 0, "unknown config field \"max_windw\": did you mean \"max_window\"?"},
    {NULL, "x", 0, "unknown config field"},
    {"key_file", "/etc/schakel/broker.key", 1, NULL},
    {"ack_timeout", "30s", 1, NULL},
    {"ack_timeout", "1h", 1, NULL},
    {"ack_timeout", "500ms", 0, "must be a duration"},
    {"ack_timeout", "25h", 0, "must be a duration"},
    {"ack_timeout", "60", 0, "must be a duration"},
    {"ack_timeout", "-5s", 0, "must be a duration"},
    {"ack_timeout", "5 s", 0, "must be a duration"},
    {"ack_timeout", "99999999999999999999s", 0, "must be a duration"},
    {"store_key_file", "/etc/schakel/store.key", 1, NULL},
    {"max_publish_rate", "50", 1, NULL},
    {"max_publish_rate", "0", 0,
     "max_publish_rate must be a whole number from 1 to 1000000 (the built-in limit; "
     "docs/OPERATIONS.md, Limits)"},
    {"max_connections_per_principal", "4097", 0,
     "max_connections_per_principal is 4097, over the built-in limit of 4096 (a config can "
     "lower a limit, not raise it"},
    {"max_frame_bytes", "262144", 1, NULL},
    {"max_frame_bytes", "262145", 0, "is 262145, over the built-in limit of 262144"},
    {"max_frame_bytes", "8388608", 0, "is 8388608, over the built-in limit of 262144"},
    {"max_frame_bytes", "64MiB", 0, "must be a whole number from 1 to 262144"},
    {"max_frame_bytes", "0262144", 0, "must be a whole number from 1 to 262144"},
    {"max_frame_bytes", "99999999999999999999999999999", 0,
     "is 999999999999999999999999..., over the built-in limit of 262144"},
    {"max_items_per_publish", "12x", 0, "whole number"},
    {"max_window", "1024", 1, NULL},
    {"max_window", "-1", 0, "whole number"},
    {"max_summary_length", "80", 1, NULL},
    {"max_grounds_length", "2001", 0, "built-in limit"},
    {"max_handshakes_per_minute", "60000", 1, NULL},
    {"max_handshakes_per_minute", "60001", 0, "built-in limit"},
    {"max_handshakes_per_minute", "0", 0, "whole number"},
    {"max_case_opens_per_hour", "100000", 1, NULL},
    {"max_case_opens_per_hour", "100001", 0, "built-in limit"},
    {"max_case_opens_per_hour", "0", 0, "whole number"},
    {"max_case_opens_per_hour", "-5", 0, "whole number"},
    {"max_case_opens_per_hour_per_partner", "400000", 1, NULL},
    {"max_case_opens_per_hour_per_partner", "400001", 0, "built-in limit"},
    {"max_case_opens_per_hour_per_partner", "0", 0, "whole number"},
    {"max_queued_bytes_per_principal", "1073741825", 0, "built-in limit"},
    {"max_queued_bytes_per_principal", "0", 0, "whole number"},
    {"max_queued_bytes_per_principal", "16MiB", 0, "whole number"},
    {"max_queued_bytes_per_principal", "1073741824", 1, NULL},
    {"max_unknown_acks_per_second", "1000001", 0, "built-in limit"},
    {"max_unknown_acks_per_second", "0", 0, "whole number"},
    {"max_unknown_acks_per_second", "1000000", 1, NULL},
    {"store_min_free_bytes", "1125899906842625", 0, "built-in limit"},
    {"store_min_free_bytes", "0", 0, "whole number"},
    {"store_min_free_bytes", "1GiB", 0, "whole number"},
    {"store_min_free_bytes", "1125899906842624", 1, NULL},
    {"max_stored_bytes_per_partner", "1125899906842625", 0, "built-in limit"},
    {"max_stored_bytes_per_partner", "0", 0, "whole number"},
    {"max_stored_bytes_per_partner", "1125899906842624", 1, NULL},
    {"connection_idle_timeout", "5s", 1, NULL},
    {"connection_idle_timeout", "100ms", 0, "must be a duration"},
    {"connection_idle_timeout", "forever", 0, "must be a duration"},
    {"max_silent_connections", "65536", 1, NULL},
    {"max_silent_connections", "65537", 0, "built-in limit"},
    {"max_silent_connections", "0", 0, "whole number"},
    {"connection_idle_timeout", "25h", 0, "must be a duration"},
    {"idempotency_window", "24h", 1, NULL},
    {"idempotency_window", "10m", 1, NULL},
    {"idempotency_window", "500ms", 0, "must be a duration"},
    {"idempotency_window", "25h", 0, "must be a duration"},
    {"idempotency_window", "0s", 0, "must be a duration"},
    {"admin_heartbeat_timeout", "500ms", 0, "must be a duration"},
    {"admin_heartbeat_timeout", "25h", 0, "must be a duration"},
    {"admin_heartbeat_timeout", "0s", 0, "must be a duration"},
    {"admin_heartbeat_timeout", "+6s", 0, "must be a duration"},
    {"admin_heartbeat_timeout", "6", 0, "must be a duration"},
    {"admin_heartbeat_timeout", "", 0, "must not be empty"},
    {"admin_heartbeat_timeout", "30s", 1, NULL},
};

static void test_config_set(void **state)
{
    (void)state;
    broker_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    for (size_t i = 0; i < sizeof set_rows / sizeof set_rows[0]; i++) {
        const set_row_t *row = &set_rows[i];
        char err[256] = "";
        broker_config_t before = cfg;
        int rc = config_set(&cfg, row->field, row->value, err, sizeof err);
        if ((rc == 0) != row->ok)
            fail_msg("row %zu: rc %d (%s)", i, rc, err);
        if (!row->ok) {
            if (strstr(err, row->error) == NULL)
                fail_msg("row %zu: \"%s\" lacks \"%s\"", i, err, row->error);
            /* unchanged on error */
            assert_ptr_equal(cfg.listen, before.listen);
            assert_ptr_equal(cfg.store_path, before.store_path);
            assert_ptr_equal(cfg.policy_path, before.policy_path);
        }
    }
    assert_string_equal(cfg.listen, "tcp://[::1]:7450");
    assert_string_equal(cfg.key_file, "/etc/schakel/broker.key");
    assert_null(cfg.store_path);
    assert_string_equal(cfg.ack_timeout, "1h");
    assert_string_equal(cfg.store_key_path, "/etc/schakel/store.key");
    free(cfg.listen);
    free(cfg.key_file);
    free(cfg.ack_timeout);
    free(cfg.store_key_path);
    assert_int_equal(config_limit(cfg.max_publish_rate, "max_publish_rate"), 50);
    assert_int_equal(config_limit(cfg.max_window, "max_window"), 1024);
    assert_int_equal(config_limit(NULL, "max_window"), 0);
    assert_int_equal(config_limit("5", "listen"), -1);
    free(cfg.max_publish_rate);
    free(cfg.max_frame_bytes);
    free(cfg.max_window);
    free(cfg.max_summary);
    assert_int_equal(config_limit(cfg.max_handshakes, "max_handshakes_per_minute"), 60000);
    assert_int_equal(config_duration_ms(cfg.idle_timeout), 5000);
    assert_int_equal(config_limit(cfg.max_silent, "max_silent_connections"), 65536);
    assert_int_equal(config_duration_ms(cfg.idempotency_window), 600000);
    free(cfg.max_handshakes);
    free(cfg.idle_timeout);
    free(cfg.max_silent);
    free(cfg.idempotency_window);
    assert_int_equal(config_limit(cfg.max_case_opens, "max_case_opens_per_hour"), 100000);
    free(cfg.max_case_opens);
    assert_int_equal(
        config_limit(cfg.max_case_opens_partner, "max_case_opens_per_hour_per_partner"), 400000);
    free(cfg.max_case_opens_partner);
    assert_int_equal(config_duration_ms(cfg.admin_heartbeat_timeout), 30000);
    free(cfg.admin_heartbeat_timeout);
    assert_int_equal(config_limit(cfg.max_principal_queued, "max_queued_bytes_per_principal"),
                     1073741824);
    free(cfg.max_principal_queued);
    assert_int_equal(config_limit(cfg.max_unknown_acks, "max_unknown_acks_per_second"), 1000000);
    free(cfg.max_unknown_acks);
    assert_int_equal(config_limit(cfg.store_min_free, "store_min_free_bytes"), 1125899906842624LL);
    free(cfg.store_min_free);
    assert_int_equal(config_limit(cfg.max_partner_stored, "max_stored_bytes_per_partner"),
                     1125899906842624LL);
    free(cfg.max_partner_stored);
    assert_int_equal(config_set(NULL, "listen", "tcp://x:1", NULL, 0), -1);
}

typedef struct bad_row {
    const char *text;
    const char *where; /* "schakeld.yaml:N:" */
    const char *what;
} bad_row_t;

static const bad_row_t bad_rows[] = {
    {"listen: tcp://x:1\nstore: [[[[[[[[[db]]]]]]]]]\n", "schakeld.yaml:2:", "nesting too deep"},
    {"listen: tcp://127.0.0.1:7450\nstore: db\nlisten_admin: tcp://127.0.0.1:7451\n",
     "schakeld.yaml:3:", "unknown key \"listen_admin\""},
    {"# c\nlisten: ipc:///run/schakel.sock\n", "schakeld.yaml:2:", "listen must be a tcp://"},
    {"listen: tcp://x:1\nstore: \"\"\n", "schakeld.yaml:2:", "store: must not be empty"},
    {"listen: tcp://x:1\npolicy: \"a\\tb\"\n", "schakeld.yaml:2:", "control character"},
    {"listen: tcp://x:1\n\nack_timeout: soon\n",
     "schakeld.yaml:3:", "ack_timeout must be a duration"},
    {"listen: tcp://x:1\nsync_thread: sometimes\n", "schakeld.yaml:2:",
     "sync_thread must be busy (hand a turn's fsync to the sync thread while more frames wait) or "
     "always"},
    {"listen: tcp://x:1\nsync_thread: Always\n", "schakeld.yaml:2:", "sync_thread must be busy"},
    {"listen: tcp://x:1\nstore: \"db\\0.evil\"\n", "schakeld.yaml:2:", "NUL character"},
    {"listen: tcp://x:1\nlisten: tcp://y:2\n",
     "schakeld.yaml:2:", "duplicate key \"listen\" (first at line 1)"},
    {"listen: &ep tcp://x:1\nstore: *ep\n", "schakeld.yaml:2:", "aliases"},
    {"listen: tcp://x:1\nstore: !!str db\n", "schakeld.yaml:2:",
     "tags (!!str) are not allowed: values are read as written, whatever a tag says; remove it"},
    {"!!map\nlisten: tcp://x:1\n", "schakeld.yaml:1:", "tags (!!map) are not allowed"},
    {"listen: [tcp://x:1\n", "schakeld.yaml:2:", "YAML syntax"},
    {"listen: tcp://x:1\n---\nstore: db\n", "schakeld.yaml:2:", "only one YAML document"},
    {"- listen: tcp://x:1\n", "schakeld.yaml:1:",
     "expected a mapping, found a list (a config is a mapping of keys to single values)"},
    {"listen:\n  - tcp://x:1\n",
     "schakeld.yaml:2:", "listen: expected a single value, found a list"},
    {"listen: tcp://x:1\n\nstore: {path: db}\n",
     "schakeld.yaml:3:", "store: expected a single value, found a mapping"},
    {"listen: tcp://x:1\nmax_frame_bytes: 8388608\n",
     "schakeld.yaml:2:", "max_frame_bytes is 8388608, over the built-in limit of 262144"},
    {"listen: tcp://x:1\nmax_frame_bytes: 64MiB\n", "schakeld.yaml:2:",
     "max_frame_bytes must be a whole number from 1 to 262144 (the built-in limit"},
    /* bytes libyaml's reader refuses: the line they are on, not 1 */
    {"listen: tcp://x:1\n# note\nstore: db # \x1b\n",
     "schakeld.yaml:3:", "control character 0x1b (raw control characters"},
    {"listen: tcp://x:1\r\n\r\nstore: d\x7f\r\n", "schakeld.yaml:3:", "control character 0x7f"},
    {"listen: tcp://x:1\n\n\nstore: \xff\n",
     "schakeld.yaml:4:", "not UTF-8: invalid leading UTF-8 octet 0xff"},
    /* the file ends inside a character: no octet to name */
    {"listen: tcp://x:1\n\nstore: d\xc3",
     "schakeld.yaml:3:", "not UTF-8: incomplete UTF-8 octet sequence (the file must be UTF-8)"},
    {"\xfe\xff", "schakeld.yaml:1:", "the file is UTF-16BE (byte order mark FE FF), not UTF-8"},
    {"\xff\xfel", "schakeld.yaml:1:", "the file is UTF-16LE (byte order mark FF FE)"},
};

static void test_bad_configs(void **state)
{
    const fixture_t *f = *state;
    int failures = 0;
    for (size_t i = 0; i < sizeof bad_rows / sizeof bad_rows[0]; i++) {
        char err[512] = "";
        broker_config_t *cfg = load_text(f, bad_rows[i].text, err, sizeof err);
        if (cfg != NULL) {
            print_error("row %zu: loaded, but must fail\n", i);
            config_destroy(&cfg);
            failures++;
        } else if (strstr(err, bad_rows[i].where) == NULL ||
                   strstr(err, bad_rows[i].what) == NULL) {
            print_error("row %zu:\n  got      %s\n  expected %s ... %s\n", i, err,
                        bad_rows[i].where, bad_rows[i].what);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
}

/* An unknown key names the allowed key nearest to it, when one is, and
 * sends the operator to the docs for the list: the message is whole. */
typedef struct unknown_row {
    const char *text;
    const char *message; /* after "schakeld.yaml:" */
} unknown_row_t;

#define KEYS_DOC "(the keys: schakeld(8), docs/OPERATIONS.md (Configuration, Limits))"
static const unknown_row_t unknown_rows[] = {
    /* misspelt at the top level */
    {"listen: tcp://x:1\nstore: db\nack_timout: 5s\n",
     "3: unknown key \"ack_timout\": did you mean \"ack_timeout\"? " KEYS_DOC},
    {"Listen: tcp://x:1\n", "1: unknown key \"Listen\": did you mean \"listen\"? " KEYS_DOC},
    {"listen: tcp://x:1\nmax_case_opens_per_hour_per_partnr: 4\n",
     "2: unknown key \"max_case_opens_per_hour_per_partnr\": did you mean "
     "\"max_case_opens_per_hour_per_partner\"? " KEYS_DOC},
    {"listen: tcp://x:1\nmetrics_lsiten: 127.0.0.1:0\n",
     "2: unknown key \"metrics_lsiten\": did you mean \"metrics_listen\"? " KEYS_DOC},
    /* none near: no guess */
    {"listen: tcp://x:1\nfrobnicate: 1\n", "2: unknown key \"frobnicate\" " KEYS_DOC},
    {"store_key: k\n", "1: unknown key \"store_key\" " KEYS_DOC},
    /* a key longer than 64 characters is shown cut, and said to be */
    {"listen: tcp://x:1\n"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: 1\n",
     "2: unknown key "
     "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\" " KEYS_DOC},
    /* misspelt and indented under the key above it */
    {"listen:\n  ack_timout: 5s\n", "2: key \"ack_timout\" is indented under \"listen\": did you "
                                    "mean \"ack_timeout\", at the top level? " KEYS_DOC},
    {"listen: tcp://x:1\nstore:\n  path: db\n  polcy: p.yaml\n",
     "4: key \"polcy\" is indented under \"store\": did you mean \"policy\", at the top "
     "level? " KEYS_DOC},
    {"listen: tcp://x:1\nstore:\n  path: [a, b]\n  polcy: p.yaml\n",
     "4: key \"polcy\" is indented under \"store\": did you mean \"policy\", at the top "
     "level? " KEYS_DOC},
    {"listen: tcp://x:1\nstore:\n\n  policy: p.yaml\n",
     "4: key \"policy\" is indented under \"store\": a config is a mapping of keys to single "
     "values; write it at the top level"},
    /* a nested key near none: the value is a mapping, as before */
    {"listen: tcp://x:1\nstore:\n  path: db\n",
     "3: store: expected a single value, found a mapping"},
};

static void test_unknown_keys(void **state)
{
    const fixture_t *f = *state;
    int failures = 0;
    for (size_t i = 0; i < sizeof unknown_rows / sizeof unknown_rows[0]; i++) {
        char err[512] = "", want[512];
        broker_config_t *cfg = load_text(f, unknown_rows[i].text, err, sizeof err);
        snprintf(want, sizeof want, "%s:%s", f->path, unknown_rows[i].message);
        if (cfg != NULL) {
            print_error("row %zu: loaded, but must fail\n", i);
            config_destroy(&cfg);
            failures++;
        } else if (strcmp(err, want) != 0) {
            print_error("row %zu:\n  got      %s\n  expected %s\n", i, err, want);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
}

/* config_closest_key: a slip or two is near, another key is not. */
static void test_closest_key(void **state)
{
    (void)state;
    static const char *const rows[][2] = {
        {"listen", "listen"},
        {"lisetn", "listen"},
        {"polciy", "policy"},
        {"stor", "store"},
        {"admin_listne", "admin_listen"},
        {"max_silent_connection", "max_silent_connections"},
        {"idempotence_window", "idempotency_window"},
        {"ack", NULL},
        {"keyfile", "key_file"},
        {"key", NULL},
        {"store_key", NULL},
        {"listen_admin", NULL},
        {"", NULL},
        {NULL, NULL},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *got = config_closest_key(rows[i][0]);
        if ((got == NULL) != (rows[i][1] == NULL) || (got != NULL && strcmp(got, rows[i][1]) != 0))
            fail_msg("row %zu (%s): got %s, expected %s", i, rows[i][0] ? rows[i][0] : "NULL",
                     got ? got : "NULL", rows[i][1] ? rows[i][1] : "NULL");
    }
    /* longer than the distance is computed for: never near */
    char long_name[200];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_null(config_closest_key(long_name));
}

static void test_file_errors(void **state)
{
    const fixture_t *f = *state;
    char err[512] = "", path[160];
    snprintf(path, sizeof path, "%s/missing.yaml", f->dir);
    assert_null(config_load(path, err, sizeof err));
    assert_non_null(strstr(err, "missing.yaml: cannot open"));
    assert_null(config_load(f->dir, err, sizeof err));
    assert_non_null(strstr(err, "not a regular file"));
    assert_null(config_load(NULL, err, sizeof err));
    /* a FIFO is refused at once, not waited on (alarm bounds a regression) */
    snprintf(path, sizeof path, "%s/fifo.yaml", f->dir);
    assert_int_equal(mkfifo(path, 0600), 0);
    alarm(10);
    assert_null(config_load(path, err, sizeof err));
    alarm(0);
    assert_non_null(strstr(err, "not a regular file"));
    unlink(path);

    size_t big = 64 * 1024 + 1;
    char *text = malloc(big);
    assert_non_null(text);
    memset(text, '#', big);
    write_text(f->path, text, big);
    free(text);
    assert_null(config_load(f->path, err, sizeof err));
    assert_non_null(strstr(err, "larger than"));
}

/* A raw NUL (which a C string cannot hold) on line 3 and UTF-16 without a
 * byte order mark are refused; a UTF-8 byte order mark is taken. */
static void test_raw_nul_and_utf8_bom(void **state)
{
    const fixture_t *f = *state;
    char err[512] = "";
    static const char nul[] = "listen: tcp://x:1\n\nstore: db\0x\n";
    write_text(f->path, nul, sizeof nul - 1);
    assert_null(config_load(f->path, err, sizeof err));
    if (strstr(err, "schakeld.yaml:3: control character 0x00") == NULL)
        fail_msg("got %s", err);
    static const char utf16[] = "l\0i\0s\0t\0e\0n\0:\0";
    write_text(f->path, utf16, sizeof utf16 - 1);
    assert_null(config_load(f->path, err, sizeof err));
    if (strstr(err, "schakeld.yaml:1: the file is UTF-16LE (NUL bytes in its first character), "
                    "not UTF-8") == NULL)
        fail_msg("got %s", err);
    broker_config_t *cfg = load_text(f, "\xef\xbb\xbflisten: tcp://x:1\n", err, sizeof err);
    if (cfg == NULL)
        fail_msg("a config with a UTF-8 byte order mark: %s", err);
    assert_string_equal(cfg->listen, "tcp://x:1");
    config_destroy(&cfg);
}

/* A config file group or others may write, or in a folder they may write
 * (unless sticky and the file is this user's or root's), is refused: it
 * names the policy and the keys. */
static void test_config_others_may_write(void **state)
{
    const fixture_t *f = *state;
    char err[1024] = "", want[1024];
    broker_config_t *cfg = load_text(f, "listen: tcp://x:1\n", err, sizeof err);
    assert_non_null(cfg);
    config_destroy(&cfg);
    assert_int_equal(chmod(f->path, 0664), 0);
    assert_null(config_load(f->path, err, sizeof err));
    snprintf(want, sizeof want,
             "%s: group or others may write this config file (mode 664): run: chmod go-w %s",
             f->path, f->path);
    assert_string_equal(err, want);
    assert_int_equal(chmod(f->path, 0644), 0);
    assert_int_equal(chmod(f->dir, 0777), 0);
    assert_null(config_load(f->path, err, sizeof err));
    snprintf(want, sizeof want,
             "%s: group or others may write its folder %s (mode 0777), so they can put another "
             "config in its place: run: chmod go-w %s",
             f->path, f->dir, f->dir);
    if (strstr(err, want) == NULL)
        fail_msg("got %s", err);
    assert_int_equal(chmod(f->dir, 01777), 0);
    cfg = config_load(f->path, err, sizeof err);
    if (cfg == NULL)
        fail_msg("this user's config in a sticky folder: %s", err);
    config_destroy(&cfg);
    assert_int_equal(chmod(f->dir, 0700), 0);
    if (geteuid() != 0)
        skip(); /* only root can give a file to another user */
    assert_int_equal(chown(f->path, 4242, 4242), 0);
    assert_null(config_load(f->path, err, sizeof err));
    snprintf(want, sizeof want,
             "%s: this config file belongs to uid 4242 (?), not to root or uid 0 (root, the "
             "reader), so its owner can change it whatever its mode: run: chown root %s",
             f->path, f->path);
    assert_string_equal(err, want);
    assert_int_equal(chown(f->path, 0, 0), 0);
}

/* The loaders need to search a config's folder, not to list it: a folder
 * of mode 0711 is taken. Root may list any folder, so as root the load
 * runs in a child that becomes another user; as another user, a folder of
 * its own of mode 0311 shows the same. */
static void test_config_folder_search_only(void **state)
{
    const fixture_t *f = *state;
    char err[1024] = "";
    broker_config_t *cfg = load_text(f, "listen: tcp://x:1\n", err, sizeof err);
    assert_non_null(cfg);
    config_destroy(&cfg);
    if (geteuid() != 0) {
        assert_int_equal(chmod(f->dir, 0311), 0);
        cfg = config_load(f->path, err, sizeof err);
        assert_int_equal(chmod(f->dir, 0700), 0);
        if (cfg == NULL)
            fail_msg("a folder of mode 0311, our own: %s", err);
        config_destroy(&cfg);
        return;
    }
    assert_int_equal(chmod(f->dir, 0711), 0);
    int pipe_fd[2];
    assert_int_equal(pipe(pipe_fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pipe_fd[0]);
        int rc = -1;
        if (setgid(65534) != 0 || setuid(65534) != 0 || geteuid() != 65534)
            snprintf(err, sizeof err, "cannot become uid 65534");
        else if (open(f->dir, O_RDONLY | O_DIRECTORY) >= 0)
            snprintf(err, sizeof err, "uid 65534 may list %s: the test proves nothing", f->dir);
        else if ((cfg = config_load(f->path, err, sizeof err)) != NULL)
            rc = 0;
        config_destroy(&cfg);
        if (rc == 0)
            err[0] = '\0';
        ssize_t n = write(pipe_fd[1], err, strlen(err));
        _exit(n < 0 ? 2 : rc == 0 ? 0 : 1);
    }
    close(pipe_fd[1]);
    char child_err[1024] = "";
    ssize_t n = read(pipe_fd[0], child_err, sizeof child_err - 1);
    close(pipe_fd[0]);
    child_err[n > 0 ? n : 0] = '\0';
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(chmod(f->dir, 0700), 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("uid 65534 reading a config in a folder of mode 0711: %s", child_err);
}

/* A config the reader may not open (root's, 0600, as cp without -p leaves
 * a copy of a root:schakel 0640 file) is refused naming the reader and
 * how First install makes it readable, not with the bare errno. Root
 * reads any file, so the load runs in a child that becomes uid 65534. */
static void test_config_unreadable_says_who_reads(void **state)
{
    const fixture_t *f = *state;
    if (geteuid() != 0)
        skip(); /* only root can become another user */
    write_text(f->path, "listen: tcp://x:1\n", strlen("listen: tcp://x:1\n"));
    assert_int_equal(chmod(f->path, 0600), 0);
    assert_int_equal(chmod(f->dir, 0711), 0);
    int pipe_fd[2];
    assert_int_equal(pipe(pipe_fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char err[1024] = "";
        close(pipe_fd[0]);
        broker_config_t *cfg = NULL;
        if (setgid(65534) != 0 || setuid(65534) != 0 || geteuid() != 65534)
            snprintf(err, sizeof err, "cannot become uid 65534");
        else if ((cfg = config_load(f->path, err, sizeof err)) != NULL)
            snprintf(err, sizeof err, "uid 65534 loaded a config of root's, mode 0600");
        config_destroy(&cfg);
        ssize_t n = write(pipe_fd[1], err, strlen(err));
        _exit(n < 0 ? 2 : 0);
    }
    close(pipe_fd[1]);
    char child_err[1024] = "", want[512];
    ssize_t n = read(pipe_fd[0], child_err, sizeof child_err - 1);
    close(pipe_fd[0]);
    child_err[n > 0 ? n : 0] = '\0';
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(chmod(f->dir, 0700), 0);
    snprintf(want, sizeof want, "%s: cannot open: Permission denied: uid 65534 (", f->path);
    if (strncmp(child_err, want, strlen(want)) != 0 ||
        !strstr(child_err, "the reader) may not read this config or search a folder above it") ||
        !strstr(child_err, "&& chmod 0640 ") || !strstr(child_err, "cp -p"))
        fail_msg("uid 65534 reading a config of root's, mode 0600: %s", child_err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_good_config, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_partial_config, fixture_setup, fixture_teardown),
        cmocka_unit_test(test_config_set),
        cmocka_unit_test_setup_teardown(test_bad_configs, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_keys, fixture_setup, fixture_teardown),
        cmocka_unit_test(test_closest_key),
        cmocka_unit_test_setup_teardown(test_file_errors, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_raw_nul_and_utf8_bom, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_config_unreadable_says_who_reads, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_config_folder_search_only, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_config_others_may_write, fixture_setup,
                                        fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
