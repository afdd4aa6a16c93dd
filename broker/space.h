/*
 * space.h — bounds on what the store keeps: a free-space floor for all,
 * and a share for each sender partner.
 *
 * The floor (store_min_free_bytes): the room the store has left (its file
 * system's free space for users other than root, plus the store's free
 * pages while the file system keeps the WAL's reserve, store_space) is
 * measured at most once a second. Below the floor new
 * content is refused UNAVAILABLE (publishes, and the case commands that
 * add content: open, invite, accept, note, attach, link, reopen), while
 * everything that frees room or must go on does (acks, heartbeats,
 * queries, the case commands that end something: close, leave, decline,
 * remove; operators' requests, retention, the audit trail), so that
 * recipients drain and room comes back before a full disk rolls back
 * every turn. The share (max_stored_bytes_per_partner): the sealed bytes
 * of the items a partner's principals have in the store, their publishes'
 * and their case commands' (each kept as evidence), store_partner_bytes,
 * one hash lookup; a publish, or a case command that adds content, that
 * would take them past it is refused RATE_LIMITED (a command that ends
 * something never is), the other partners' go on. Both are asked once the
 * request is allowed, so that one refused for good is told so.
 */
#ifndef SCHAKEL_SPACE_H
#define SCHAKEL_SPACE_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

typedef struct space {
    uint64_t min_free;            /* the floor, bytes */
    uint64_t max_partner;         /* each partner's share, bytes */
    int64_t next_measure_ms;      /* monotonic: the next measure is due */
    int known;                    /* measured at least once */
    int below;                    /* the last measure was below the floor */
    store_space_t last;           /* what it found */
    int logged;                   /* what the log last said: 0 nothing yet, 1 below, 2 above */
    int64_t logged_ms[3];         /* when each was last said (indexed as logged) */
    int pending;                  /* a crossing not said yet: said once its minute is over */
    uint64_t flips;               /* crossings since the last line */
    uint64_t floor_refused;       /* refusals below the floor (counter) */
    uint64_t floor_refused_since; /* ... since the crossing below was said */
    uint64_t share_refused;       /* publishes, case commands refused at their partner's share */
    int measure_failed;           /* the last measure failed (said once a minute) */
    int64_t failed_logged_ms;
} space_t;

struct broker;

/* Take the bounds (0: the default). */
void space_init(space_t *space, uint64_t min_free, uint64_t max_partner);

/* Measure the room left when a second has passed since the last measure
 * (force: now), and say a crossing of the floor: store.below_floor (warn)
 * and store.above_floor (info), each at once, but a crossing the same way
 * as one said less than a minute ago only once that minute is over (with
 * how many crossings there were), so a store that hovers at its floor
 * logs two lines a minute at most. A measure that fails keeps the last
 * verdict (store.space_unknown, once a minute). */
void space_measure(struct broker *b, int force);

/* 1 when new content is refused for now (below the floor), with the text
 * of the refusal in why; else 0. Counts the refusal. */
int space_floor_refuses(struct broker *b, char *why, size_t len);

/* 1 when a publish or case command of `incoming` sealed bytes from a
 * principal of `partner` would take the partner's items past its share, with the text
 * of the refusal in why; else 0. Counts the refusal. One hash lookup. */
int space_share_refuses(struct broker *b, const char *partner, uint64_t incoming, char *why,
                        size_t len);

#endif
