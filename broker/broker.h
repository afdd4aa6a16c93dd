/*
 * broker.h — the broker: one thread, one event loop, one commit per turn.
 *
 * The loop (broker.c) polls the ROUTER and the ZAP socket, handles up to
 * SCHAKEL_MAX_BATCH frames, commits the store once, then sends the replies
 * that commit made true and pushes mailboxes to receivers within their
 * windows. Nothing is answered Accepted or delivered before its commit.
 * publish.c owns the publish path, deliver.c the mailbox push,
 * deliver_ack.c acks and flow; record.c is the one place where decisions
 * are recorded.
 */
#ifndef SCHAKEL_BROKER_H
#define SCHAKEL_BROKER_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "admin.h"
#include "conns.h"
#include "keys.h"
#include "metrics.h"
#include "policy.h"
#include "record.h"
#include "refusals.h"
#include "schakel.pb-c.h"
#include "session.h"
#include "space.h"
#include "store.h"
#include "wallclock.h"
#include "wire.h"
#include "zap.h"

/* A reply waiting for the turn's commit. */
typedef struct pending_reply {
    uint8_t routing_id[SESSION_ROUTING_MAX];
    size_t routing_len;
    char principal[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    char key[41];               /* Z85 key of its session's connection; "": unknown */
    uint64_t policy_generation; /* b->policy_generation when it was queued */
    uint8_t *frame; /* encoded Frame, owned */
    size_t frame_len;
    sendq_t *queue;    /* its session's count of bytes owed (a reference), or NULL */
    size_t queued_len; /* what it added to that count: frame_len when queued */
    int is_accept; /* an Accepted whose truth depends on the commit */
    int is_gated;  /* another answer that may only go out if the turn commits (a view) */
    /* A CaseView: what it was decided on, to decide it again should it
     * leave after a reload (case_view_decide_again); owned, else NULL. */
    struct case_view_check *view_check;
    uint8_t message_id[SCHAKEL_MESSAGE_ID_BYTES];
    /* A Rejected: what its audit entry said, to write it again should the
     * turn be rolled back (and the entry with it); is_refusal only when it
     * had an entry of its own (not only counted: refusals.h). */
    int is_refusal;
    int has_message_id;
    Schakel__Reason reason;
    int item_index;
    char text[SCHAKEL_MAX_REJECT_TEXT];
} pending_reply_t;

/* A turn committed without waiting for the disk: its answers and its
 * deliveries wait until the syncer has synced as far as its ticket. */
typedef struct sync_ticket {
    uint64_t ticket;        /* store_syncer_request's number */
    uint64_t loop_syncs;    /* store_loop_syncs when it was held: a later sync covers it */
    uint64_t delivery_high; /* deliveries up to this seq are on disk once it is */
    pending_reply_t *replies;
    size_t n_replies;
} sync_ticket_t;

/* A waiting delivery the policy in force no longer allows: withheld at
 * push time, removed (with a tombstone) in the next turn's transaction. */
typedef struct revocation {
    uint64_t seq;
    char recipient[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    record_sent_t sent; /* as the push passed over it (deliver_sent) */
} revocation_t;

/* Counters since start. accepted, duplicates, acked and set_aside count
 * committed turns only (metrics_turn_end takes back those of a rolled-back
 * turn). */
typedef struct broker_stats {
    unsigned long accepted, refused, delivered, acked, duplicates;
    unsigned long set_aside;   /* deliveries set aside (deliver_set_aside, and at the start) */
    unsigned long redelivered; /* deliveries sent with the redelivery flag */
    /* turns committed with an fsync of the WAL, and without (acks only) */
    unsigned long commits_synced, commits_unsynced;
    unsigned long refused_by_reason[METRICS_REASON_SLOTS]; /* see metrics_refused */
    unsigned long connections_closed_idle; /* shut down: unused, or over the cap (conns.h) */
    unsigned long connections_cut_unfinished; /* shut down: an unfinished message held (conns.h) */
    /* A connection's queued bytes at their bounds (sendq.h): case queries
     * answered RATE_LIMITED, pushes stopped, ack timeouts that sent
     * nothing again; and answers that could not be queued. */
    unsigned long queries_held, pushes_held, ack_timeouts_deferred;
    unsigned long replies_undeliverable;
    /* The same at the principal's bound (max_queued_bytes_per_principal),
     * and Acks refused for their principal's unknown seqs
     * (max_unknown_acks_per_second). */
    unsigned long principal_queries_held, principal_pushes_held, acks_rate_limited;
    /* Audit entries carried until the trail holds them (record.c): how
     * many are now, and how many could not be (audit.not_carried). */
    unsigned long audit_carried, audit_not_carried;
} broker_stats_t;

/* Whether the config file as it is on disk now would start a broker
 * (main.c: loaded as a start loads it, with the same command-line options
 * over it; nothing of it is applied), and the policy file it names, as a
 * start would open it, into policy_path. Asked at every reload, which
 * loads that policy itself (once: the file it reloads when it is the same,
 * broker_reload_policy). Returns 0, or -1 with "FILE:LINE: message" in
 * err. */
typedef int (*broker_start_check_fn)(const void *arg, char *policy_path, size_t path_len, char *err,
                                     size_t errlen);

/* What the last reload found: for the metrics, `schakelctl status` and
 * the reload's answer and log line (broker_reload_policy). */
typedef struct reload_report {
    int64_t at;             /* Unix seconds of the last reload asked; 0: none since the start */
    char by[64];            /* who asked it: "SIGHUP", "admin:PRINCIPAL" */
    int failed;             /* refused: its policy did not load, or its record is pending */
    char error[512];        /* why, while failed */
    size_t operators;       /* operators the policy in force registers after it */
    long cases_unreachable; /* open cases nobody can see or close under it; -1: unknown */
    int start_fails;        /* the config on disk, or the policy it names, would not start
                             * the broker (start_check at the last reload) */
    char start_error[1024]; /* why, while start_fails */
    /* The policy file the config on disk names when it is another than the
     * one a reload reads (policy_path, the start's): the next start loads
     * it. "" when the same, or when the config did not load. */
    char next_policy[PATH_MAX];
} reload_report_t;

typedef struct broker {
    void *ctx;
    void *router;
    void *router_events; /* the router's connection events (accepted, closed), or NULL */
    conns_t *conns;      /* its connections by socket: open, closed, unused since (conns.h) */
    zap_t *zap;
    policy_t *policy;
    refusals_t refusals;        /* which refused handshakes the trail takes in full */
    refusals_t refusals_summed; /* the window summed up in this turn, until it commits */
    int refusals_summed_pending;
    /* The same for refused requests of authenticated principals (kind
     * refusals_requests): a partner's flood of refusals (unknown acks,
     * refused publishes) cannot fill the disk with entries. */
    refusals_t request_refusals;
    refusals_t request_refusals_summed;
    int request_refusals_summed_pending;
    /* Answers that could not be queued (reply.undeliverable): a client
     * that reads nothing, or is gone, gets many; logged a few per
     * principal a minute, the rest summed up (log only, no audit entry). */
    refusals_t undeliverable;
    /* Acks refused RATE_LIMITED for their principal's unknown seqs
     * (ack.rate_limited): logged once per principal a minute, the rest
     * summed up (deliver_acks_limited_summary). */
    refusals_t acks_limited;
    /* A reload whose audit entry could not be written yet: not in force,
     * but it narrows the one in force (no session, admission, frame,
     * operator request or push it would refuse), and its record is tried
     * again each second and after any turn that committed; once written,
     * it applies (broker_reload_policy). */
    policy_t *policy_pending;
    char pending_by[64];
    int64_t pending_retry_ms;
    int64_t pending_logged_ms; /* when a retry of it last logged its refusal */
    uint64_t pending_retries;  /* retries since then, logged with the next */
    uint64_t pending_tries;    /* retries in all, logged when it applies */
    int quiet_audit_failure;   /* a retry not logged: nor is its audit.write_failed */
    /* Counts the reloads that put a policy in force or made one pending: a
     * reply queued under another count is checked again as it is sent. */
    uint64_t policy_generation;
    char *policy_path;
    broker_start_check_fn start_check; /* NULL: not asked (broker_options_t) */
    const void *start_check_arg;
    reload_report_t reload;
    char *store_path; /* beside it, STORE.audit-mismatch (storefile.h) */
    /* The trail's tail found rewritten outside the broker (record.c
     * record_write_failed): said in full once, with the mark written
     * beside the store; after that the refusals are counted and said at
     * most once a minute. */
    int tail_mismatch_said;
    int64_t tail_mismatch_said_ms; /* now_ms of the last audit.tail_mismatch line */
    uint64_t tail_mismatch_unsaid; /* refusals since then */
    char tail_mismatch_mark[4200]; /* the mark's path, or why it could not be written */
    int tail_mismatch_marked;      /* 1: the mark is there (written now, or before) */
    /* Carried entries turned away (record_carry.c): said by audit.not_carried
     * at most once a second; the others are counted until a line says
     * them (more=N), the last of them kept to be named then. */
    int not_carried_said;
    int64_t not_carried_said_ms;     /* now_ms of the last audit.not_carried line */
    uint64_t not_carried_unsaid;     /* turned away since, without a line */
    char not_carried_last_entry[32]; /* the last of those: its event, */
    char not_carried_last_actor[SCHAKEL_MAX_PRINCIPAL_LEN + 6]; /* its actor (record_clean), */
    const char *not_carried_last_why;                           /* why (a literal) */
    const char *not_carried_last_effect; /* and what became of it (a literal) */
    store_t *store;
    sessions_t *sessions;
    keypair_t *key;
    char endpoint[256];
    pending_reply_t *replies;
    size_t n_replies, cap_replies;
    broker_stats_t stats;
    uint64_t seq_at_start; /* deliveries up to this seq may have been sent before a restart */
    /* Deliveries up to this seq may have been decided under another policy
     * than the one in force (before a start or the last reload): an ack of
     * one asks the policy again (deliver_pending_check); UINT64_MAX when
     * the seq could not be read at the reload. */
    uint64_t seq_at_policy;
    /* Deliveries above this seq are committed but their commit is not synced
     * yet: they wait (UINT64_MAX when every commit is synced). */
    uint64_t push_limit_seq;
    int turn_failed; /* a store write failed: roll the turn back, commit nothing */
    int last_turn_rolled_back;      /* the turn before this one committed nothing it wrote */
    int last_turn_committed_writes; /* ... or committed what it wrote */
    /* Nothing but Ack, Flow and Heartbeat frames this turn: its writes (acks)
     * claim nothing to anyone, so it commits without an fsync
     * (store_commit_unsynced); the next synced commit covers it. */
    int turn_acks_only;
    int sync_failed; /* the store could not sync a commit: stop (broker_run returns -1) */
    Schakel__Reason turn_failure; /* what the turn's publishers are told then */
    int64_t now_s;                /* wall clock of this loop turn */
    int64_t now_ms;               /* monotonic clock of this loop turn */
    uint32_t turn_work; /* items published and seqs acked in this turn (SCHAKEL_MAX_TURN_WORK) */
    wallclock_t clock;            /* now_s's source: the system clock, guarded (wallclock.h) */
    int64_t clock_logged_ms;      /* when clock.stepped was last logged (now_ms) */
    int64_t ack_timeout_ms;       /* in-flight deliveries unacked this long are sent again */
    uint32_t publish_rate;        /* publishes per second per principal */
    uint32_t max_connections;     /* sessions per principal */
    uint32_t max_handshakes;      /* handshakes per minute per principal */
    uint32_t case_opens_per_hour; /* cases opened per hour per principal */
    uint32_t case_opens_per_hour_per_partner; /* ... per partner, its principals together */
    size_t max_principal_queued;              /* bytes all connections of one principal may owe */
    uint32_t unknown_ack_rate;                /* acked seqs not pending, per second per principal */
    space_t space;                /* the store's floor and the partners' shares (space.h) */
    int case_ids_logged;          /* what case_ids_watch last said: 0 nothing, 1 low,
                                   * 2 none left */
    int64_t case_ids_logged_ms;   /* when (now_ms) */
    int64_t idle_timeout_ms;      /* a connection without a frame this long is closed */
    uint32_t max_silent;          /* ... beyond this many such connections in all */
    uint32_t max_window;          /* a larger Flow.window is clamped to this */
    int64_t idempotency_s;        /* an accepted publish is remembered at least this long */
    int expiry_due; /* the last sweep hit its limit, or the push met an expired delivery */
    revocation_t revocations[SCHAKEL_REVOKE_BATCH];
    size_t n_revocations;
    /* Waiting deliveries the push found unreadable (they do not
     * authenticate): set aside in the next turn's transaction
     * (deliver_set_aside), which comes at once. One per receiver and push
     * at most; beyond the batch the push finds them again. */
    revocation_t set_asides[SCHAKEL_SET_ASIDE_BATCH];
    size_t n_set_asides;
    /* Recipients with waiting deliveries the policy in force does not
     * name, withdrawn a batch per turn (purge.h). */
    char (*purge_list)[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    size_t n_purge;
    int purge_more;    /* more than the list holds: listed again once it is done */
    int purge_emptied; /* this turn found the last listed recipient empty */
    int purge_refind;  /* the last listing failed: listed again at purge_refind_ms */
    int64_t purge_refind_ms;
    int64_t purge_failed_logged_ms; /* when purge.failed was last said (now_ms) */
    size_t expired_since_checkpoint;
    int64_t next_checkpoint_ms;
    admin_t *admin;           /* the admin endpoint, NULL unless admin_listen is set */
    int64_t started_at;       /* Unix seconds when the broker was built */
    int64_t policy_loaded_at; /* Unix seconds when the policy in force was loaded */
    metrics_t *metrics;       /* watchdog, counters' snapshot, HTTP endpoint if configured */
    struct record_acks *acks; /* record.c: the turn's acks, one entry per recipient at its end */
    /* Turns committed and waiting for their sync, oldest first (NULL
     * syncer: every turn syncs its own commit before it answers). */
    store_syncer_t *syncer;
    sync_ticket_t *tickets;
    size_t n_tickets, cap_tickets;
    size_t held_replies;   /* answers in all tickets together */
    uint64_t durable_high; /* deliveries up to this seq are known to be on disk */
    int sync_always;       /* config sync_thread: always (else busy: broker_frames_waiting) */
    /* deliver.c: published items kept decoded for the push (NULL until the
     * first publish keeps one); settled by every turn's commit or rollback */
    struct deliver_kept *kept;
} broker_t;

typedef struct broker_options {
    const char *listen;
    const char *key_file; /* the broker's secret key */
    const char *policy_path;
    const char *store_path;
    const char *store_key_path; /* the store's sealing key (schakeld --init) */
    int64_t ack_timeout_ms;     /* 0: SCHAKEL_DEFAULT_ACK_TIMEOUT_MS */
    uint32_t publish_rate;      /* per principal per second; 0: SCHAKEL_DEFAULT_PUBLISH_RATE */
    uint32_t max_connections;   /* per principal; 0: SCHAKEL_DEFAULT_MAX_CONNECTIONS */
    uint32_t max_handshakes;    /* per principal per minute; 0: SCHAKEL_DEFAULT_MAX_HANDSHAKES */
    uint32_t case_opens_per_hour; /* per principal; 0: SCHAKEL_DEFAULT_CASE_OPENS_PER_HOUR */
    uint32_t case_opens_per_hour_per_partner; /* 0: SCHAKEL_CASE_OPENS_PARTNER_FACTOR times
                                               * the per-principal budget (at most its cap) */
    uint64_t max_principal_queued;            /* 0: SCHAKEL_DEFAULT_PRINCIPAL_QUEUED_BYTES */
    uint32_t unknown_ack_rate;  /* per principal per second; 0: SCHAKEL_DEFAULT_UNKNOWN_ACK_RATE */
    uint64_t store_min_free;    /* 0: SCHAKEL_DEFAULT_STORE_MIN_FREE_BYTES */
    uint64_t max_partner_stored; /* 0: SCHAKEL_DEFAULT_PARTNER_STORED_BYTES */
    int64_t idle_timeout_ms;    /* 0: SCHAKEL_DEFAULT_IDLE_TIMEOUT_MS */
    uint32_t max_silent;        /* 0: SCHAKEL_DEFAULT_MAX_SILENT */
    uint32_t max_window;        /* Flow windows are clamped to this; 0: SCHAKEL_MAX_WINDOW */
    int64_t idempotency_ms;     /* 0: SCHAKEL_DEFAULT_IDEMPOTENCY_MS */
    int accept_clock;           /* start on a system clock behind the audit trail */
    const char *admin_listen;   /* admin endpoint (operators), or NULL for none */
    int64_t admin_heartbeat_timeout_ms; /* 0: SCHAKEL_ZMTP_HEARTBEAT_TIMEOUT_MS */
    const char *metrics_listen; /* HTTP metrics "HOST:PORT", or NULL for none */
    int sync_always;            /* every turn's sync on the sync thread, not only while busy */
    const char *version;        /* for schakel_build_info */
    /* Asked at every reload (broker_start_check_fn), with arg; NULL: the
     * files are not checked. */
    broker_start_check_fn start_check;
    const void *start_check_arg;
} broker_options_t;

/* Create the broker: load key and policy, open the sealed store, start the
 * ZAP handler and bind the CURVE ROUTER (ZAP first, as PITFALLS demands).
 * Returns NULL with err filled. */
broker_t *broker_new(const broker_options_t *options, char *err, size_t errlen);
void broker_destroy(broker_t **broker);

/* Answer the ZAP requests pending now as one turn: decide, record, commit,
 * reply (zap_flush). For the start-up self-check, which runs before
 * broker_run. Returns the number handled, or -1 on a socket error. */
int broker_serve_zap(broker_t *b);

/* Prove that an unknown key cannot complete a handshake: connect a probe
 * with a fresh random key and require that the ZAP handler refused it and
 * the ROUTER never saw a message. Returns 0, or -1 with err filled. */
int broker_self_check(broker_t *broker, char *err, size_t errlen);

/* Run until a stop is asked (signals.h): at once, with no turn, when it was
 * asked during start-up. A reload asked during start-up is made at the
 * first turn. Returns 0 on a clean stop, -1 on a fatal error (logged). */
int broker_run(broker_t *broker);

/* Reload the policy file now (SIGHUP, or an operator's `schakelctl reload`;
 * requested_by names which, for the record). The new policy is parsed and
 * validated whole first; on any error the old one stays and -1 is returned
 * with "FILE:LINE: message" in err. On success it replaces the old one at
 * once, sessions of principals that were removed, became operators or had
 * their key replaced are dropped, and the number dropped is returned.
 * Either way b->reload says what it found (operators left, cases made
 * unreachable) and whether the files on disk would start the broker
 * (broker_start_check_fn; logged config.would_not_start when not): the
 * policy file is loaded once when the config names the one reloaded, and
 * one it names instead is loaded too and said (config.other_policy). */
int broker_reload_policy(broker_t *b, const char *requested_by, char *err, size_t errlen);

/* Queue a reply frame to a session for after the commit (takes ownership
 * of frame). An Accepted passes its message id so a failed commit can turn
 * it into a refusal (and record that). Returns 0 or -1 (OOM: frame freed). */
int broker_queue_reply(broker_t *b, const session_t *session, uint8_t *frame, size_t frame_len,
                       const uint8_t *accept_message_id);

/* The socket options every CURVE ROUTER of the broker gets, with its ZAP
 * domain and the ZMTP heartbeat timeout of its connections (ms; the
 * partners' SCHAKEL_ZMTP_HEARTBEAT_TIMEOUT_MS, the operators' as
 * configured). Returns 0, or non-zero when libzmq refused an option. */
int broker_configure_router(void *router, const keypair_t *key, const char *domain,
                            int heartbeat_timeout_ms);

/* Send one frame to a routing id without ever blocking. Returns 0 when
 * queued, -1 with zmq_errno() EAGAIN (peer's queue full: keep it for later)
 * or EHOSTUNREACH (peer gone). A frame queued is counted in `queue` (the
 * session's, or NULL) until libzmq frees it (sendq.h), as a delivery's when
 * push is 1. */
int broker_send(broker_t *b, sendq_t *queue, int push, const uint8_t *routing_id,
                size_t routing_len, const uint8_t *frame, size_t frame_len);

/* The same on another ROUTER of the broker's (the admin socket): every
 * frame body handed to libzmq is wiped when libzmq frees it. */
int broker_send_on(void *socket, sendq_t *queue, int push, const uint8_t *routing_id,
                   size_t routing_len, const uint8_t *frame, size_t frame_len);

/* Queue an answer that may only be sent if this turn commits (a CaseView,
 * whose audit entry is in the turn): on a rolled-back turn it becomes a
 * refusal with the failure's reason. A view that leaves after a reload
 * (held for its sync, or answered in the turn of an operator's reload) is
 * decided again by case_view_decide_again under the policy then in force,
 * from `check` (what it was decided on). Takes ownership of frame and
 * check (check may be NULL: nothing to decide again); 0 or -1. */
int broker_queue_gated_reply(broker_t *b, const session_t *session, uint8_t *frame,
                             size_t frame_len, struct case_view_check *check);

/* A store write of this turn failed: the turn is rolled back instead of
 * committed, and every Accepted queued in it becomes a refusal with the
 * reason of the failure (UNAVAILABLE for a storage condition). */
void broker_fail_turn(broker_t *b);

/* Read the router's connection events so far (non-blocking): the session
 * of every connection that closed ends, before anything more is pushed to
 * its routing id, which a later connection may have taken. */
void broker_connections_drain(broker_t *b);

/* 1 when the connection on socket fd has closed (a frame of it can still
 * be read: libzmq keeps what it had received), and no other has been
 * given that socket since. */
int broker_connection_closed(const broker_t *b, int fd);

/* UNAVAILABLE when the store's last failure is a storage condition that may
 * pass (disk full, I/O error, read-only), INTERNAL_ERROR otherwise. */
Schakel__Reason broker_store_failure_reason(const broker_t *b);

/* Queue a Rejected reply. */
void broker_reject(broker_t *b, const session_t *session, Schakel__Reason reason, const char *text,
                   const uint8_t *message_id, int item_index, uint64_t seq);
/* The same without its request.refused log line, for a refusal a client
 * can have made by the thousand a second: the caller logs it summed up.
 * Counted, audited (refusals.h) and answered as any. */
void broker_reject_unlogged(broker_t *b, const session_t *session, Schakel__Reason reason,
                            const char *text, uint64_t seq);

/* publish.c */
void publish_handle(broker_t *b, session_t *session, const policy_principal_t *sender,
                    const Schakel__Publish *publish);
/* The copy of a signal a recipient may see: sender, kind and theme always,
 * the rest only where the field mask (enum signal_field) allows; packed
 * into a new malloc'd buffer (NULL on allocation failure). Also for
 * signals linked to a case (case.c). */
uint8_t *publish_signal_for_recipient(const Schakel__Signal *signal, uint32_t fields, size_t *len);
/* What the policy decides a signal by (policy_decide_signal): its facts,
 * with the recipient partners it is to go to (those the sender named, at
 * a publish; the one partner asked about, at a case's link). */
static inline policy_signal_facts_t
publish_signal_facts(const Schakel__Signal *s, const char *const *recipients, size_t n_recipients)
{
    return (policy_signal_facts_t){
        .kind = s->kind,
        .theme = s->theme,
        .area = s->area,
        .has_subject = s->subject != NULL,
        .has_case_ref = s->case_ref != NULL,
        .recipients = recipients,
        .n_recipients = n_recipients,
    };
}

/* The stored Accepted frame of a publish (or case command) made into the
 * answer to its repeat: the same, marked duplicate. A new malloc'd frame,
 * or NULL when the stored one does not decode or memory runs out. */
uint8_t *publish_duplicate_reply(const uint8_t *reply, size_t reply_len, size_t *len);

/* deliver.c, deliver_ack.c */
void deliver_flow(broker_t *b, session_t *session, const Schakel__Flow *flow);
/* An ack removes the delivery only while the policy still allows it
 * (deliver_pending_check): one the policy in force withholds is revoked
 * instead, as the push would, and one a reload not yet recorded withholds
 * stays; both are answered UNKNOWN_DELIVERY, as a seq that is not there. */
void deliver_ack(broker_t *b, session_t *session, const Schakel__Ack *ack);
/* The window of Acks refused for unknown seqs has ended (or the broker
 * stops: force): its ack.rate_limited_summary line, if any were only
 * counted. */
void deliver_acks_limited_summary(broker_t *b, int force);

/* Whether recipient's pending delivery seq may go out, by the push's
 * check: its rule, in the version that decided it, still reaches the
 * recipient under the policy in force and under a reload not yet
 * recorded. */
typedef enum deliver_pending {
    DELIVER_NOT_PENDING = 0, /* no such pending delivery of recipient */
    DELIVER_ALLOWED,
    DELIVER_HELD,    /* allowed, but a reload not yet recorded withholds it */
    DELIVER_REVOKED, /* the policy in force withholds it: the push revokes it */
} deliver_pending_t;
/* Returns a deliver_pending_t, or -1 on a store error (store_errmsg).
 * Cost: one rowid lookup and the rule's lookup by id. */
int deliver_pending_check(broker_t *b, const char *recipient, uint64_t seq);
/* The same for a delivery known by its row's rule (rule_id, rule_hash;
 * case_id NULL for a signal's), with no store access: DELIVER_REVOKED
 * also when the push queued it for revocation already (b->revocations)
 * or the row names no rule. Cost: the rule's lookup by id and
 * O(revocations queued). */
int deliver_decision(const broker_t *b, const char *recipient, uint64_t seq, const char *rule_id,
                     const char *rule_hash, const char *case_id);
/* Whether the push queued (recipient, seq) for revocation in this turn
 * (b->revocations): such a delivery was never sent. O(revocations queued). */
int deliver_revocation_queued(const broker_t *b, const char *recipient, uint64_t seq);
/* Push every dirty receiver's mailbox within its window (after commit). */
void deliver_push_all(broker_t *b);
/* Retention: remove up to SCHAKEL_EXPIRY_BATCH expired deliveries (and
 * unreferenced expired items) inside the turn's transaction. */
void deliver_expire(broker_t *b);

/* Remove the deliveries withheld since the last turn because the policy no
 * longer allows them (inside the turn's transaction). */
void deliver_revoke(broker_t *b);

/* Whether this run pushed recipient's delivery seq, for the record of its
 * withdrawal: yes when seq is at or below the highest seq the receiver
 * was ever sent (pushes go in seq order; one passed over to be revoked
 * waits in b->revocations with what was known then); unknown when it
 * waited since before the start (an earlier run may have sent it; what a
 * run sent is not kept); no otherwise. It errs only towards yes: one
 * passed over, whose revocation a reload forgot (deliver_policy_changed)
 * before the push sent a later seq, reads as sent; one pushed never
 * reads as no. O(revocations queued). */
record_sent_t deliver_sent(const broker_t *b, const char *recipient, uint64_t seq);

/* Delivery seq of recipient left the mailbox unacked (set aside): the
 * slot it held in the receiver's window, if the push had counted it in
 * flight (at or before the cursor, no revocation of it queued), is free
 * again, as an expiry frees one; the receiver goes on past it. */
void deliver_slot_free(broker_t *b, const char *recipient, uint64_t seq);

/* Set aside, in the turn's transaction, the deliveries the push found
 * unreadable (store_delivery_set_aside checks each again): each is
 * recorded (record_set_aside: an error log line, an audit entry, the
 * counter) and its receiver goes on past it. A store error fails the
 * turn; the push finds the row again. */
void deliver_set_aside(broker_t *b);

/* Another policy is in force: what the push decided under the one before
 * is decided again. The kept items are wiped (pushed from the store from
 * now on), and revocations not yet applied are forgotten; when there were
 * any, every receiver starts again at its oldest unacked delivery (what
 * was sent before comes again flagged as a redelivery), so that a delivery
 * the new policy allows is never removed for what the old one said, nor
 * passed over. With none, nothing was passed over, and no receiver starts
 * again. */
void deliver_policy_changed(broker_t *b);

/* Receivers that acked nothing for ack_timeout_ms while deliveries were in
 * flight get everything unacked again. Returns how many were restarted. */
size_t deliver_check_ack_timeouts(broker_t *b);

/* Published items kept for the push (deliver.c), so that a signal is
 * normally pushed to its recipients without opening its item from the
 * store again. An entry holds the item's Signal reduced to each field mask
 * of its deliveries (plaintext, wiped when released); it is made by the
 * publish path while the turn's transaction is open and is usable only
 * once deliver_kept_settle has been told that this transaction committed.
 * At most DELIVER_KEPT_ITEMS entries (an item whose slot is taken by an
 * older one is not kept) holding at most DELIVER_KEPT_BYTES of reduced
 * copies together (an item that would take them over is not kept); an
 * entry is wiped when its last delivery has been pushed, when it is
 * DELIVER_KEPT_MAX_AGE_MS old (deliver_kept_sweep), when its turn is rolled
 * back, and by deliver_kept_clear / _destroy. One loop thread: nothing here
 * locks. The number covers a receiver's largest window (SCHAKEL_MAX_WINDOW)
 * and the items committed before the push reaches them (docs/PERFORMANCE.md,
 * step 21); the bytes bound the plaintext whatever the items' size (1 KiB
 * signals at fan-out 3: about 3 KB an entry, 6 MB for all 2048). */
#define DELIVER_KEPT_ITEMS 2048u
#define DELIVER_KEPT_BYTES (8u * 1024u * 1024u)
#define DELIVER_KEPT_MASKS 4u /* field masks per item; an item with more is not kept */
#define DELIVER_KEPT_MAX_AGE_MS 2000
typedef struct deliver_kept deliver_kept_t;
/* A new, empty cache (NULL when out of memory: then nothing is kept). */
deliver_kept_t *deliver_kept_new(void);
/* Wipe every entry, free, set *kept to NULL. Safe on NULL. */
void deliver_kept_destroy(deliver_kept_t **kept);
/* Keep item_seq (pending) with signal (the item's decoded Signal, which is
 * only read) reduced to each of masks[0..n_masks) and `owed` deliveries to
 * push. An entry of the same seq is wiped first. Returns 1 when kept, 0
 * when not (its slot holds another item, no delivery owed, no or more than
 * DELIVER_KEPT_MASKS masks, its reductions would take the cache over
 * DELIVER_KEPT_BYTES, out of memory): then its deliveries open the item
 * from the store. */
int deliver_kept_add(deliver_kept_t *kept, uint64_t item_seq, const Schakel__Signal *signal,
                     const uint32_t *masks, size_t n_masks, uint32_t owed, int64_t now_ms);
/* The end of the turn whose transaction the pending entries belong to:
 * committed (the commit succeeded) makes them usable, anything else wipes
 * them. Safe on NULL. */
void deliver_kept_settle(deliver_kept_t *kept, int committed);
/* Wipe the usable entries kept DELIVER_KEPT_MAX_AGE_MS or longer; cheap
 * when none is due. Safe on NULL. */
void deliver_kept_sweep(deliver_kept_t *kept, int64_t now_ms);
/* How long the loop may wait for frames before the oldest usable entry
 * is due for deliver_kept_sweep: max_ms, or less (0 when due). Safe on
 * NULL. */
int deliver_kept_wait_ms(const deliver_kept_t *kept, int64_t now_ms, int max_ms);
/* Wipe every entry (pending ones too). Safe on NULL. */
void deliver_kept_clear(deliver_kept_t *kept);
/* The usable entry of item_seq reduced to `fields`: borrowed, valid until
 * the next call that changes the cache; NULL when there is none. */
const uint8_t *deliver_kept_content(const deliver_kept_t *kept, uint64_t item_seq, uint32_t fields,
                                    size_t *len);
/* One of item_seq's deliveries was pushed from its entry: the last one
 * owed wipes it. */
void deliver_kept_pushed(deliver_kept_t *kept, uint64_t item_seq);
/* Entries held, pending and usable (for tests and accounting). */
size_t deliver_kept_count(const deliver_kept_t *kept);
/* Bytes of reduced copies those entries hold (at most DELIVER_KEPT_BYTES). */
size_t deliver_kept_bytes(const deliver_kept_t *kept);
/* What the publish path wrote for a kept item's deliveries: the item's
 * envelope, and each delivery's seq, recipient, rule and expiry. With it the
 * push vouches for those rows (deliver_kept_vouch, store_mailbox_scan_vouched)
 * instead of opening each one's sealed field mask again. Pointers into the
 * policy in force when the rows were written, which the entry never
 * outlives (every policy change clears the cache, deliver_policy_changed);
 * at most DELIVER_KEPT_DELIVERIES deliveries (the rest are opened). */
#define DELIVER_KEPT_DELIVERIES 8u
typedef struct deliver_kept_delivery {
    uint64_t seq;
    const policy_principal_t *recipient;
    const policy_rule_t *rule;
    int64_t expires_at;
} deliver_kept_delivery_t;
typedef struct deliver_kept_envelope {
    const policy_t *policy;
    uint64_t policy_generation; /* b->policy_generation then: an address alone could be
                                   a later policy's, allocated where this one was */
    const policy_principal_t *sender;
    uint8_t message_id[SCHAKEL_MESSAGE_ID_BYTES];
    uint32_t item_index;
    int64_t accepted_at;
    size_t n;
    deliver_kept_delivery_t deliveries[DELIVER_KEPT_DELIVERIES];
} deliver_kept_envelope_t;
/* Give item_seq's entry, pending in the open turn, the envelope its rows
 * were written with. Returns 1, or 0 when there is no such entry. */
int deliver_kept_envelope(deliver_kept_t *kept, uint64_t item_seq,
                          const deliver_kept_envelope_t *envelope);
/* Whether d, a delivery row as the scan read it, is one the publish path
 * wrote for a usable entry under `policy` and its `generation`
 * (b->policy_generation), with every column the seal binds
 * as written (seq, recipient, item, message id, index, sender and its
 * partner, acceptance and expiry, rule id, hash, purpose and legal basis):
 * then 1, and *fields is the mask it sealed; otherwise 0 (the row is
 * opened and authenticated from the store). */
int deliver_kept_vouch(const deliver_kept_t *kept, const policy_t *policy, uint64_t generation,
                       const store_delivery_t *d, uint32_t *fields);
/* The publish path's call: keep a stored item for the push if any of its
 * recipients receives now (b->kept is made on first use), with the
 * envelope its deliveries were written with (NULL: none). */
void deliver_keep_published(broker_t *b, uint64_t item_seq, const Schakel__Signal *signal,
                            const uint32_t *masks, size_t n_masks, size_t owed,
                            const deliver_kept_envelope_t *envelope);

#endif
