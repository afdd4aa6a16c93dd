/*
 * schakel_limits.h — every size, count and time limit of Schakel, in one place.
 *
 * The broker and the client library both include this file; a limit that
 * appears as a bare number anywhere else is a bug. Values that operators may
 * tune are defaults; the broker's config can lower (not raise past the hard
 * caps) some of them.
 */
#ifndef SCHAKEL_LIMITS_H
#define SCHAKEL_LIMITS_H

#define SCHAKEL_PROTOCOL_VERSION 1u

/* Release of the programs (schakeld --version, the admin `status`). */
#ifndef SCHAKEL_VERSION
#define SCHAKEL_VERSION "0.1.0"
#endif

/* Wire */
#define SCHAKEL_MAX_FRAME_BYTES (256u * 1024u)      /* one ZMQ frame, checked before decoding */
#define SCHAKEL_DECODE_BUDGET_BYTES (1024u * 1024u) /* allocator budget per decoded frame */
#define SCHAKEL_DECODE_BROKER_BUDGET_BYTES                                                         \
    (16u * 1024u * 1024u) /* the same, for a client decoding a frame from the broker */
#define SCHAKEL_MAX_ITEMS 256u                      /* items in one Publish */
#define SCHAKEL_MAX_ITEM_BYTES (32u * 1024u)        /* one serialized Signal */
#define SCHAKEL_MESSAGE_ID_BYTES 16u
#define SCHAKEL_SIGNATURE_BYTES 64u
#define SCHAKEL_STORE_EPOCH_BYTES 16u /* Heartbeat.store_epoch: the store's history */
#define SCHAKEL_MAX_HEARTBEAT_ID_BYTES 16u /* Heartbeat.heartbeat_id: echoed in the answer */
/* A restore from a backup moves the item seq counter at least this far
 * past the backup's (PROTOCOL 4.9): a client that finds a store epoch's
 * floor seq this far above the seqs it recorded knows that another
 * restore may lie between */
#define SCHAKEL_RESTORE_SEQ_MARGIN 1000000000u
#define SCHAKEL_MAX_ACKS 1024u     /* seqs in one Ack */
#define SCHAKEL_MAX_RECIPIENTS 16u /* Signal.recipients */

/* Strings (bytes, UTF-8) */
#define SCHAKEL_MAX_ID_LEN 64u         /* partner id, rule id, kind token */
#define SCHAKEL_MAX_PRINCIPAL_LEN 129u /* "partner/name" */
#define SCHAKEL_MAX_SUMMARY_LEN 2000u
#define SCHAKEL_MAX_GROUNDS_LEN 2000u
#define SCHAKEL_MAX_REF_LEN 128u /* source_ref, case_ref */
#define SCHAKEL_MIN_SUBJECT_LEN 8u
#define SCHAKEL_MAX_SUBJECT_LEN 64u
#define SCHAKEL_MAX_ADDITION_LEN 8u
#define SCHAKEL_MAX_HOUSE_NUMBER 99999u
#define SCHAKEL_MAX_REJECT_TEXT 256u

/* Cases */
#define SCHAKEL_MAX_NOTE_TEXT_LEN 8000u             /* CaseNote.text */
#define SCHAKEL_MAX_NOTE_FIELDS 32u                 /* CaseNote.fields */
#define SCHAKEL_MAX_NOTE_FIELD_LEN 2000u            /* NoteField.value */
#define SCHAKEL_MAX_ATTACHMENT_BYTES (128u * 1024u) /* CaseAttach.content */
#define SCHAKEL_MAX_ATTACHMENT_NAME_LEN 128u
#define SCHAKEL_MAX_CASE_TITLE_LEN 200u
#define SCHAKEL_MAX_CASE_REASON_LEN 1000u /* close / reopen reason */
#define SCHAKEL_MAX_CASE_MEMBERS 64u      /* partners in one case */
#define SCHAKEL_MAX_CASE_TYPES 1000u
#define SCHAKEL_CASE_ID_LEN 10u /* "C-" + 8 digits */
/* The highest case number, never handed out twice: once it is used, no
 * case can be opened on this broker (CASE_IDS_EXHAUSTED). Fewer than
 * SCHAKEL_CASE_IDS_LOW (a tenth) left: the broker warns (case.ids_low). */
#define SCHAKEL_CASE_NUM_MAX 99999999LL
#define SCHAKEL_CASE_IDS_LOW 10000000LL

/* Time window for Signal.observed_at, relative to the broker's clock */
#define SCHAKEL_MAX_FUTURE_SKEW_S 300               /* five minutes ahead */
#define SCHAKEL_MAX_PAST_S (10LL * 366 * 24 * 3600) /* ten years back */

/* Abuse limits per principal (configurable up to the caps) */
#define SCHAKEL_DEFAULT_PUBLISH_RATE 1000 /* publishes per second; a second's worth may burst */
#define SCHAKEL_MAX_PUBLISH_RATE 1000000
#define SCHAKEL_DEFAULT_MAX_CONNECTIONS 64 /* sessions (connections that sent a frame) */
#define SCHAKEL_SESSION_ACTIVE_MS 1000     /* a session quieter than this may make room */
#define SCHAKEL_MAX_CONNECTIONS_CAP 4096
/* Handshakes a principal may complete per minute (a token bucket holding a
 * minute's worth); over it, ZAP answers 300 and the client tries again. */
#define SCHAKEL_DEFAULT_MAX_HANDSHAKES 300
#define SCHAKEL_MAX_HANDSHAKES_CAP 60000
/* Cases a principal may open per hour (a token bucket holding an hour's
 * worth: a burst of that many, then one every 3600 / N seconds), apart
 * from its publish rate: case ids are a finite space shared by every
 * partner (SCHAKEL_CASE_NUM_MAX), which a loop at the publish rate would
 * use up in about a day. At 300 an hour one principal opening without
 * pause needs 38 years to use it up. Over it: RATE_LIMITED. */
#define SCHAKEL_DEFAULT_CASE_OPENS_PER_HOUR 300
#define SCHAKEL_MAX_CASE_OPENS_CAP 100000
/* Cases all principals of one partner may open per hour together, a bucket
 * of its own beside each principal's: a partner with many principals
 * (SCHAKEL_MAX_PRINCIPALS_PER_PARTNER) would otherwise have that many
 * budgets. Unset: this many times the per-principal budget in force (1200
 * an hour by default: one partner opening without pause needs over nine
 * years; every partner of a full policy at once, 54 days). */
#define SCHAKEL_CASE_OPENS_PARTNER_FACTOR 4
#define SCHAKEL_MAX_CASE_OPENS_PARTNER_CAP 400000
/* Acked seqs that are not pending in the acker's mailbox, per second per
 * principal (a token bucket holding a second's worth; an Ack's seqs are
 * counted once it has been looked up, so one Ack may go below 0): each
 * costs a look-up in the store, and a client that acks only what it was
 * delivered meets one now and then (an ack sent twice). Over it the whole
 * Ack is answered RATE_LIMITED before any look-up, nothing acknowledged. */
#define SCHAKEL_DEFAULT_UNKNOWN_ACK_RATE 1024
#define SCHAKEL_MAX_UNKNOWN_ACK_RATE 1000000
/* Connections that sent no frame since they connected, beyond
 * SCHAKEL_DEFAULT_MAX_SILENT of them (shared among peer addresses), are
 * closed once older than the idle timeout; so are a principal's least
 * recently used connections beyond max_connections_per_principal, once
 * quiet for SCHAKEL_SESSION_ACTIVE_MS, and those that served frames with
 * a revoked key, the idle timeout after the revocation (broker/conns.h). */
#define SCHAKEL_DEFAULT_IDLE_TIMEOUT_MS 30000
#define SCHAKEL_DEFAULT_MAX_SILENT 1024
#define SCHAKEL_MAX_SILENT_CAP 65536

/* An accepted publish is remembered by (sender, message_id) at least this
 * long after its acceptance (config idempotency_window), however short
 * its retention or when it reached no recipient: a retry inside it is
 * answered as a repeat, never delivered again. Only the idempotency
 * record (ids, the sealed evidence, the keyed content tag, the answer)
 * stays: its items go with their retention (docs/PROTOCOL.md 7.3). */
#define SCHAKEL_DEFAULT_IDEMPOTENCY_MS 600000

/* Flow control */
#define SCHAKEL_DEFAULT_WINDOW 64u           /* deliveries in flight per receiver */
#define SCHAKEL_MAX_WINDOW 1024u             /* a larger Flow.window is clamped */
#define SCHAKEL_DEFAULT_ACK_TIMEOUT_MS 60000 /* no ack for this long: resend what is in flight */

/* Liveness (milliseconds) */
#define SCHAKEL_HANDSHAKE_IVL_MS 5000 /* a CURVE handshake must finish in this */
#define SCHAKEL_ZMTP_HEARTBEAT_IVL_MS 2000
#define SCHAKEL_ZMTP_HEARTBEAT_TIMEOUT_MS 6000
#define SCHAKEL_CLIENT_HEARTBEAT_MS 5000 /* client sends Heartbeat this often when idle */
#define SCHAKEL_SESSION_TIMEOUT_MS 20000 /* no frame this long: a session that is not receiving ends */

/* Socket buffers (messages); 0 would mean unbounded */
#define SCHAKEL_SNDHWM 10000
#define SCHAKEL_RCVHWM 10000
/* The broker's receive queue per connection: past it libzmq stops reading
 * that connection (the client's own queue holds the rest), so a stalled
 * loop holds at most this many frames of each connection in memory. */
#define SCHAKEL_BROKER_RCVHWM 128

/* Multipart messages that never end (broker/conns.h): a connection from
 * which libzmq has read more than this that is neither a frame the broker
 * took nor the handshake or a ZMTP command is shut down. Of a client that
 * sends whole messages libzmq holds at most the frame it is reading (up to
 * ZMQ_MAXMSGSIZE, 1 MiB, read straight into the message) and one read
 * batch (8 KiB), so this leaves 1 MiB to spare. Parts of 256 KiB held cost
 * the broker about their bytes; parts of a few bytes (35 on the wire) 150
 * to 600 bytes each (libzmq's 64-byte message, its share of its queue's
 * chunks and of its read buffers, and what the allocator keeps: measured),
 * so that a connection cut at this bound held up to about 36 MiB. */
#define SCHAKEL_HELD_BOUND_BYTES (2u * 1024u * 1024u)
/* ZMTP command bytes a connection may send a second: a PONG (40 bytes on
 * the wire) to the broker's PING every 2 s, and PINGs of its own (42
 * bytes, 58 with the longest context) up to four a second; libzmq clients
 * set ZMQ_HEARTBEAT_IVL=2000 (41 bytes a second in all, measured). A
 * client that pings more often than every 250 ms may find its connection
 * shut down once its excess adds up to the bound (hours). */
#define SCHAKEL_HELD_COMMAND_BYTES_PER_S 256u
/* The most that allowance may reach: a well-behaved client's excess is
 * brought down at every check to what it sent since the last (a few
 * hundred bytes), so only a connection that holds unfinished parts could
 * build it up, 256 bytes a second for as long as it holds them; capped,
 * such a slow drip is cut at the bound and this much more. A client's
 * PINGs during a loop stall of hours stay within the bound above it. */
#define SCHAKEL_HELD_COMMAND_MAX_BYTES 65536u

/* Broker loop */
#define SCHAKEL_MAX_BATCH 512u          /* frames handled per loop turn, one commit */
#define SCHAKEL_MAX_SYNC_TICKETS 64u    /* turns committed and waiting for their sync */
#define SCHAKEL_MAX_HELD_REPLIES 8192u  /* their answers, before the loop waits for the disk */
/* Work per loop turn besides its frames: published items and acked seqs
 * together. A turn stops taking frames once it has this much, so that a
 * burst of full batches (or Acks of 1,024 seqs) from one partner is spread
 * over turns, with the other partners' frames read between them. */
#define SCHAKEL_MAX_TURN_WORK 4096u
/* Bytes one connection may owe before the broker holds back what a client
 * can make large: answers queued in the loop and frames libzmq has not yet
 * taken out to send (SNDHWM counts frames, not bytes). Past it a CaseQuery
 * is answered RATE_LIMITED (docs/PROTOCOL.md 10.2). The push waits at half
 * of it, so that deliveries alone never make a receiver's queries refused:
 * only views it does not read do. */
#define SCHAKEL_MAX_QUEUED_BYTES (4u * 1024u * 1024u)
#define SCHAKEL_MAX_QUEUED_PUSH_BYTES (SCHAKEL_MAX_QUEUED_BYTES / 2u)
/* Bytes all connections of one principal may owe together (config
 * max_queued_bytes_per_principal): a principal may hold up to
 * max_connections_per_principal connections, each up to the bound above,
 * 256 MiB by default. Past it a CaseQuery on any of them is answered
 * RATE_LIMITED, and the push to it waits at half of it, as at one
 * connection's bounds; the other principals are not held up. */
#define SCHAKEL_DEFAULT_PRINCIPAL_QUEUED_BYTES (16u * 1024u * 1024u)
#define SCHAKEL_MAX_PRINCIPAL_QUEUED_CAP (1024LL * 1024 * 1024)
/* The store's free-space floor (config store_min_free_bytes): room the
 * store's file system has for it, plus the store's free pages while the
 * file system keeps SCHAKEL_STORE_WAL_RESERVE_BYTES. Below it
 * publishes and the case commands that add content are refused
 * UNAVAILABLE, while acks, heartbeats, queries, operators' requests,
 * retention and the audit trail go on, so that recipients drain and room
 * comes back before the disk is full (a full disk rolls back every turn
 * that writes, acks included). 1 GiB by default: the WAL (up to some 32
 * MiB under load, more while a backup reads), the trail's entries and the
 * drain's own writes fit in it many times. Measured once a second. */
#define SCHAKEL_DEFAULT_STORE_MIN_FREE_BYTES (1024LL * 1024 * 1024)
#define SCHAKEL_MAX_STORE_MIN_FREE_CAP (1LL << 50) /* 1 PiB */
/* The store's free pages count as room only while its file system has
 * this much free beside them. Every commit is written to the WAL first, a
 * file of its own that takes new blocks of the file system as it grows
 * (retention's checkpoint truncates it to nothing); free pages of the
 * database file cannot hold it. 64 MiB is twice what the WAL reaches
 * under load (checkpointed in place from 4,000 pages of 8 KiB). Below it
 * the room is the file system's alone, so a disk that cannot take the
 * WAL's growth is below any floor above it, free pages or not. */
#define SCHAKEL_STORE_WAL_RESERVE_BYTES (64LL * 1024 * 1024)
/* The sealed bytes of items one sender partner (all its principals) may
 * have in the store (config max_stored_bytes_per_partner); past it its
 * publishes are refused RATE_LIMITED, the other partners' go on. 16 GiB
 * by default: 10,000 signals a day kept a year are less than 5.5 GB of items. */
#define SCHAKEL_DEFAULT_PARTNER_STORED_BYTES (16LL * 1024 * 1024 * 1024)
#define SCHAKEL_MAX_PARTNER_STORED_CAP (1LL << 50) /* 1 PiB */
#define SCHAKEL_EXPIRY_BATCH 256u       /* expired rows removed per loop turn at most */
#define SCHAKEL_REVOKE_BATCH 256u       /* withheld deliveries removed per loop turn at most */
#define SCHAKEL_SET_ASIDE_BATCH 64u     /* unreadable deliveries set aside per loop turn at most */
#define SCHAKEL_CHECKPOINT_IVL_MS 10000 /* after expiries, truncate the WAL at most this often */

/* Admin endpoint (docs/PROTOCOL.md "Admin endpoint") */
#define SCHAKEL_ADMIN_MAX_COMMAND_LEN 32u        /* AdminRequest.command */
#define SCHAKEL_ADMIN_MAX_ARGS 8u                /* AdminRequest.args */
#define SCHAKEL_ADMIN_MAX_ARG_LEN 256u           /* bytes of one argument */
#define SCHAKEL_ADMIN_BATCH 64u                  /* admin requests handled per loop turn */
#define SCHAKEL_ADMIN_CHUNK_BYTES (128u * 1024u) /* JSON bytes in one AdminResponse */
#define SCHAKEL_ADMIN_MAX_RESPONSE_BYTES (64u * 1024u * 1024u) /* a whole answer, client side */
#define SCHAKEL_ADMIN_PENDING_LIMIT 100u      /* pending: deliveries listed unless limit= */
#define SCHAKEL_ADMIN_PENDING_MAX_LIMIT 1000u /* pending: the most limit= may ask */
/* The data-subject export (audit-subject) runs in steps over loop turns,
 * one export at a time: a turn reads at most this many of the subject's
 * entries (each rendered as JSON: 50-100 us for a queued entry of 4 rules),
 * or the entries of at most this many of its deliveries (two index
 * look-ups each), or writes this many bytes of the document, or sends
 * this many chunks of it; a few milliseconds each. Its renderings are
 * bounded by SCHAKEL_ADMIN_MAX_RESPONSE_BYTES, the most an answer may be. */
#define SCHAKEL_EXPORT_STEP_ENTRIES 16u
#define SCHAKEL_EXPORT_STEP_DELIVERIES 32u
#define SCHAKEL_EXPORT_STEP_BYTES (1024u * 1024u)
#define SCHAKEL_EXPORT_SEND_CHUNKS 8u /* of SCHAKEL_ADMIN_CHUNK_BYTES */
/* What the export's operator may owe: its next chunks go to libzmq only
 * while the bytes of its answer libzmq still holds (not yet taken out to
 * encrypt and write) are under this, so that an operator who does not read
 * holds about this much, not the whole document; meanwhile the loop looks
 * again every SCHAKEL_EXPORT_SEND_WAIT_MS. The export, and with it "one at
 * a time", ends only once the last chunk has left libzmq. */
#define SCHAKEL_EXPORT_MAX_OWED_BYTES (1024u * 1024u)
#define SCHAKEL_EXPORT_SEND_WAIT_MS 10
/* At the broker's stop, an export still going out goes on going out
 * (admin.h admin_stop_drain) until its operator has it, or at most this
 * long: inside the unit's TimeoutStopSec (30 s) with the rest of the
 * stop. */
#define SCHAKEL_ADMIN_STOP_MAX_MS 20000

/* Audit trail (docs/OPERATIONS.md "Audit trail") */
#define SCHAKEL_AUDIT_CHECKPOINT_ENTRIES                                                           \
    1000u                                 /* a signed checkpoint at least every this many entries */
#define SCHAKEL_AUDIT_CHECKPOINT_IVL_S 60 /* ... and for entries older than this (seconds) */
#define SCHAKEL_AUDIT_MAX_TEXT_LEN 4096u  /* bytes of one text field of an entry */
#define SCHAKEL_AUDIT_TAIL_POLL_MS 500    /* `schakelctl audit tail` reads the store this often */
#define SCHAKEL_AUDIT_VERIFY_BATCH 4096u  /* entries read per step of a verification */
/* Entries carried in memory until a transaction that holds them commits
 * (record.h record_admin_refused: refusals of operators, partners and
 * handshakes decided or written again after a rollback, views withheld,
 * refused reloads): about 2 KiB each, so 2 MiB at most. Past it an entry
 * is written once, in the open transaction only (audit.not_carried,
 * schakel_audit_entries_not_carried_total). */
#define SCHAKEL_AUDIT_MAX_CARRIED 1024u
/* Of them, the last SCHAKEL_AUDIT_CARRIED_RESERVED are kept for operators'
 * entries (admin.*, policy.*), which partners' entries (refusals, views
 * withheld, handshakes) never take; and one actor's partner entries take
 * at most SCHAKEL_AUDIT_MAX_CARRIED_PER_ACTOR: a partner that makes many
 * refused requests while the store cannot be written pushes out neither
 * the operators' entries nor the other partners'. */
#define SCHAKEL_AUDIT_CARRIED_RESERVED 128u
#define SCHAKEL_AUDIT_MAX_CARRIED_PER_ACTOR 64u

/* Policy */
#define SCHAKEL_MAX_PARTNERS 64u
#define SCHAKEL_MAX_PRINCIPALS 4096u
#define SCHAKEL_MAX_PRINCIPALS_PER_PARTNER 256u
#define SCHAKEL_MAX_RULES 100000u
#define SCHAKEL_MAX_POLICY_BYTES (4u * 1024u * 1024u)
#define SCHAKEL_MAX_POLICY_TEXT_LEN 1000u /* purpose, legal_basis, partner name (bytes) */
#define SCHAKEL_MAX_RULE_LIST 1024u       /* entries in one rule's kinds or areas */
#define SCHAKEL_MAX_RETENTION_S (30LL * 365 * 24 * 3600) /* retention cap: 30 years of 365 days */
/* A policy's warnings (rules that never decide, docs/POLICY.md 5) the
 * broker logs at a start or reload, and a reload's answer lists; the
 * rest are counted (schakelctl policy check lists every one). */
#define SCHAKEL_POLICY_WARNINGS_SHOWN 20u
/* One warning line, cut with "..." past it. */
#define SCHAKEL_POLICY_WARNING_LEN 1024u

#endif
