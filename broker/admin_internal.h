/*
 * admin_internal.h — what the admin endpoint's files share: admin.c (the
 * socket, records, encoding and sending, answering after the commit),
 * admin_request.c (reading and checking requests, the command table),
 * admin_export.c (the data-subject export over turns) and admin_commands.c
 * (what status, partners, rules and reload answer). Nothing outside them
 * includes it: the rest of the broker uses admin.h.
 */
#ifndef SCHAKEL_ADMIN_INTERNAL_H
#define SCHAKEL_ADMIN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "admin.h"
#include "admin_json.h"
#include "audit.h"
#include "broker.h"
#include "sendq.h"
#include "wire.h"

typedef struct admin_request admin_request_t;

/* A command runs after the turn's commit. It writes its answer into out and
 * returns 0, or returns -1 with err filled (out may then hold details). */
typedef int (*admin_run_fn)(admin_t *admin, broker_t *b, const admin_request_t *request,
                            admin_json_t *out, char *err, size_t errlen);

typedef struct admin_command {
    const char *name;
    size_t max_args;
    admin_run_fn run;
} admin_command_t;

/* One request read this turn, answered after the commit. */
struct admin_request {
    uint8_t routing_id[SESSION_ROUTING_MAX];
    size_t routing_len;
    char principal[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    uint64_t request_id;
    const admin_command_t *command; /* NULL: the answer is `refusal` */
    uint8_t *refusal;               /* encoded frame refusing the request, owned */
    size_t refusal_len;
    const char *asked;    /* the command it names, once read as one (static) */
    int refusal_recorded; /* its refusal's entry is carried (record_admin_refused) */
    size_t n_args;
    char args[SCHAKEL_ADMIN_MAX_ARGS][SCHAKEL_ADMIN_MAX_ARG_LEN + 1];
    int fd;            /* the connection's socket (ZMQ_SRCFD), -1 when unknown */
    char key[41];      /* the key it authenticated with (Z85), "" when unknown */
    int export_begins; /* audit-subject: the export begins after the commit */
};

/* The data-subject export, one at a time, read in steps over loop turns
 * (admin_export_step) from the turn after the commit of its request. */
typedef struct admin_export_job {
    int active;              /* a request holds it (from admin_accept on) */
    admin_request_t request; /* whose answer it is (from admin_accept on: its socket) */
    int gone;                /* its connection closed: no answer, no record; never cleared */
    audit_export_t *export;  /* NULL before it begins and once all is read */
    char *json;              /* the document, recorded this turn: sent after its commit;
                                wiped and NULL once all of it is handed to libzmq */
    size_t json_len;
    size_t sent;      /* of it, once sending began (in chunks over turns) */
    int sending;      /* from the commit of its record until its last chunk has left libzmq */
    sendq_t *queue;   /* the bytes of its chunks libzmq holds (sendq.h), while sending */
    size_t max_owed;  /* the most queue counted, for the log */
    int held;         /* sending waited at SCHAKEL_EXPORT_MAX_OWED_BYTES (logged once) */
    struct stat conn; /* its connection's socket (fstat of request.fd as it was read) */
    int conn_known;   /* conn holds it: the queue watches it (sendq_watch) */
    char failed[448]; /* why it ended without a document this turn ("": it did not) */
    int64_t began_ms; /* monotonic, for the log */
    unsigned steps;   /* turns it read in */
} admin_export_job_t;

#define ADMIN_TURN_SOCKETS 256

struct admin {
    void *socket;
    char endpoint[256];
    char *store_path;
    admin_request_t *pending; /* SCHAKEL_ADMIN_BATCH slots */
    size_t n_pending;
    char *chunk;  /* SCHAKEL_ADMIN_CHUNK_BYTES + 1: one NUL-terminated JSON chunk */
    void *events; /* the admin socket's connection events (NULL: none) */
    /* The sockets of the events read since a turn's read last emptied the
     * admin queue (a request read after its connection's close is in
     * them, however many turns its reading took: libzmq queues a
     * connection's requests before it reports the close); past
     * ADMIN_TURN_SOCKETS, every export asked for meanwhile is gone. */
    int turn_sockets[ADMIN_TURN_SOCKETS];
    size_t n_turn_sockets;
    int turn_sockets_overflow;
    int queue_emptied; /* the last turn's read found the admin queue empty */
    admin_export_job_t job;
};

/* ---------------------------------------------------------------- admin.c */

/* Every connection event so far (non-blocking); see admin.c. */
void admin_events_drain(admin_t *admin);
/* A refused request's "admin.refused" entry, carried (record.h). */
void admin_record_refused(broker_t *b, admin_request_t *request, const char *why);
/* How a request ended, once answered: a log line. */
void admin_log_outcome(const admin_request_t *request, const char *command, const char *outcome,
                       const char *text);
/* An AdminResponse frame (one chunk of an answer); NULL when out of memory. */
uint8_t *admin_encode_response(uint64_t request_id, int ok, const char *error, const char *json,
                               int more, size_t *len);
/* The answer in chunks from *offset, at most max_chunks, counted in queue
 * (NULL: none): 1 when the last is sent, 0 when more remain, -1 when one
 * could not be sent. */
int admin_send_chunks(admin_t *admin, sendq_t *queue, const admin_request_t *request, int ok,
                      const char *error, const char *json, size_t json_len, size_t *offset,
                      size_t max_chunks);
/* Refuse the request with a Rejected frame (reason, text), counted and
 * recorded. */
void admin_refuse(admin_t *admin, broker_t *b, admin_request_t *request, Schakel__Reason reason,
                  const char *text);

/* The whole answer at once, in as many chunks as it takes. */
static inline void admin_send_answer(admin_t *admin, const admin_request_t *request, int ok,
                                     const char *error, const char *json, size_t json_len)
{
    size_t offset = 0;
    (void)admin_send_chunks(admin, NULL, request, ok, error, json, json_len, &offset, SIZE_MAX);
}

/* ---------------------------------------------------------------- admin_request.c */

/* 1 when the connection's key is still an operator's under the policy in
 * force and under a reload not yet recorded. */
int admin_still_operator(const broker_t *b, const char *principal, const char *key);

/* ---------------------------------------------------------------- admin_export.c */

/* audit-subject's argument and the one-at-a-time check, as its request is
 * read: the job is taken, or the request's answer is the refusal. */
void admin_prepare_export(admin_t *admin, admin_request_t *request);
/* After the commit of its request's record: the export begins. */
void admin_export_begin(admin_t *admin, broker_t *b, const admin_request_t *request);
/* After each commit: an export that ended this turn is answered. */
void admin_export_answer(admin_t *admin, const broker_t *b, int committed);
/* Wipe and free what the export holds; the job is free again. */
void admin_export_release(admin_t *admin);

/* ---------------------------------------------------------------- admin_commands.c */

/* The commands' run functions (admin_run_fn), named by the command table. */
int admin_status(admin_t *admin, broker_t *b, const admin_request_t *request, admin_json_t *out,
                 char *err, size_t errlen);
int admin_partners(admin_t *admin, broker_t *b, const admin_request_t *request, admin_json_t *out,
                   char *err, size_t errlen);
int admin_rules(admin_t *admin, broker_t *b, const admin_request_t *request, admin_json_t *out,
                char *err, size_t errlen);
int admin_reload(admin_t *admin, broker_t *b, const admin_request_t *request, admin_json_t *out,
                 char *err, size_t errlen);
int admin_pending(admin_t *admin, broker_t *b, const admin_request_t *request, admin_json_t *out,
                  char *err, size_t errlen);

#endif
