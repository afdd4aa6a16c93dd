/*
 * config.h — the broker's configuration file (YAML, docs/OPERATIONS.md).
 *
 *   listen: "tcp://0.0.0.0:7450"   # ZeroMQ endpoint; CURVE over TCP only
 *   key_file: keys/broker.key      # the broker's secret key
 *   policy: policy.yaml            # access policy (docs/POLICY.md)
 *   store: var/schakel.db          # SQLite store
 *   store_key_file: keys/store.key # sealing key of the store (schakeld --init)
 *   ack_timeout: 60s               # optional: resend in-flight deliveries after this
 *   max_publish_rate: 1000         # optional: publishes per second per principal
 *   max_connections_per_principal: 16   # optional
 *   max_frame_bytes / max_items_per_publish / max_summary_length /
 *   max_grounds_length / max_window: optional, lower the built-in caps
 *   metrics_listen: 127.0.0.1:9750 # optional: HTTP /metrics, /healthz, /readyz
 *   admin_listen: tcp://127.0.0.1:7451  # optional: the operators' endpoint (schakelctl)
 *   sync_thread: busy              # optional: busy | always (docs/OPERATIONS.md, Capacity)
 *   max_handshakes_per_minute: 300 # optional: per principal
 *   connection_idle_timeout: 30s   # optional: close a connection without a frame this long
 *   max_silent_connections: 1024   # optional: ... beyond this many such connections
 *   idempotency_window: 10m        # optional: a publish is known as a repeat at least this long
 *   max_case_opens_per_hour: 300   # optional: cases one principal may open an hour
 *   max_case_opens_per_hour_per_partner: 1200 # optional: ... all principals of one partner
 *                                  # together (default: 4 x max_case_opens_per_hour)
 *   admin_heartbeat_timeout: 6s    # optional: an operator's connection silent this long
 *                                  # (no answer to the admin endpoint's heartbeat) is closed
 *   max_queued_bytes_per_principal: 16777216 # optional: bytes all connections of one
 *                                  # principal may owe together (the push waits at half)
 *   max_unknown_acks_per_second: 1024 # optional: acked seqs not pending, per principal
 *   store_min_free_bytes: 1073741824 # optional: below this much room new content is refused
 *   max_stored_bytes_per_partner: 17179869184 # optional: item bytes one partner may keep
 *
 * Every key is optional in the file, because each can also be given on the
 * command line; config_complete says whether the merged result is usable.
 * Relative paths are resolved against the folder of the config file;
 * `listen` is an endpoint, not a path, and is kept as written.
 */
#ifndef SCHAKEL_CONFIG_H
#define SCHAKEL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct broker_config {
    char *listen;           /* endpoint, or NULL if not set */
    char *key_file;         /* path (resolved), or NULL */
    char *policy_path;      /* path (resolved), or NULL */
    char *store_path;       /* path (resolved), or NULL */
    char *store_key_path;   /* the store's sealing key file (resolved), or NULL */
    char *ack_timeout;      /* duration text ("60s"), or NULL for the default */
    char *max_publish_rate; /* publishes per second per principal, or NULL: default */
    char *max_connections;  /* connections per principal, or NULL: default */
    char *max_frame_bytes;  /* the limits below only lower the built-in caps */
    char *max_items;
    char *max_summary;
    char *max_grounds;
    char *max_window;
    char *metrics_listen; /* "HOST:PORT" (IPv4 or [IPv6] literal), or NULL: no metrics */
    char *admin_listen;   /* tcp:// endpoint of the admin endpoint, or NULL: none */
    char *sync_thread;    /* "busy" or "always", or NULL: busy */
    char *max_handshakes; /* handshakes per minute per principal, or NULL: default */
    char *idle_timeout;   /* duration text: close a connection without a frame this long */
    char *max_silent;     /* connections without a frame kept in all, or NULL: default */
    char *idempotency_window; /* duration text: an accepted publish is remembered at least
                               * this long, or NULL: default */
    char *max_case_opens;     /* cases opened per hour per principal, or NULL: default */
    char *max_case_opens_partner; /* ... per partner (all its principals), or NULL: default */
    char *admin_heartbeat_timeout; /* duration text: an operator's connection that does not
                                    * answer the heartbeat this long is closed, or NULL: 6s */
    char *max_principal_queued;    /* bytes one principal's connections may owe, or NULL */
    char *store_min_free;          /* bytes of room below which new content is refused */
    char *max_partner_stored;      /* bytes of items one partner may keep in the store */
    char *max_unknown_acks;        /* acked seqs not pending per second per principal, or NULL */
} broker_config_t;

/* Load and check a config file: strict (an unknown key is an error), at most
 * 64 KiB, UTF-8, no anchors or aliases, one document; refused when group or
 * others may write it or its folder (yamlguard_read_file). `listen` must be a tcp://
 * endpoint; paths must be non-empty and free of control characters. Returns
 * a new config (caller frees with config_destroy) or NULL with
 * "FILE:LINE: message" (or "FILE: message" when no line applies) in err.
 * Safe on untrusted input. */
broker_config_t *config_load(const char *path, char *err, size_t errlen);

/* Free the config and set *cfg to NULL; safe on NULL and *cfg == NULL. */
void config_destroy(broker_config_t **cfg);

/* The allowed config key nearest to name (a misspelling of it: an edit or
 * two, three in the longest keys), or NULL when none is near; name itself
 * when it is one. For the messages of config_load and config_set. Safe on
 * any string (NULL too). */
const char *config_closest_key(const char *name);

/* Override one field from the command line. field is one of the YAML key
 * names. The value is taken as given:
 * a relative path stays relative to the working directory. Checks the
 * value like config_load does. Returns 0, or -1 with err filled (unknown
 * field, bad value, out of memory); cfg is unchanged on error. */
int config_set(broker_config_t *cfg, const char *field, const char *value, char *err,
               size_t errlen);

/* A whole number 1..max written in decimal; -1 if invalid. */
int64_t config_count(const char *value, int64_t max);

/* The value of numeric key `field` (its YAML name) checked against that
 * key's built-in cap: the number, 0 when value is NULL (not set: use the
 * default), -1 when invalid or when field is not a numeric key. */
int64_t config_limit(const char *value, const char *field);

/* A duration ("500ms" is too short; "30s", "2m", "1h") in milliseconds:
 * a whole number with unit ms, s, m or h, from 1 s to 24 h; -1 if invalid. */
int64_t config_duration_ms(const char *value);

/* 0 if listen, key_file, policy, store and store_key_file are all set;
 * otherwise -1 with err naming the first missing one. */
int config_complete(const broker_config_t *cfg, char *err, size_t errlen);

#endif
