/*
 * store_case.c — cases in the store: the case rows and their ids, member
 * partners and their states, the sealed timeline of events, a case's
 * retention (its expiry set at the close), dropping a leaving member's
 * deliveries, and reading back an item for linking. All case SQL is here
 * except the sweep's and the case columns of deliveries (store.c, which
 * must not need this file). Trusts the broker (case.c) for id syntax
 * and for the state machine: it records what it is told, after checking
 * presence, sizes and that the case exists. Trusts nothing read back: a
 * body that does not authenticate is an error. Errors are -1 with
 * store_errmsg set, as everywhere in the store.
 */
#include <limits.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "schakel_limits.h"
#include "store_internal.h"
#include "store_mailbox.h"

/* Parameters only: no SQL text is ever built from input. */
static const char *const case_sql[CASE_STMT_COUNT] = {
    [CASE_STMT_CREATE] = "INSERT INTO cases (num, case_id, case_type, lead, title, opened_at,"
                         " expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [CASE_STMT_GET] = "SELECT case_id, case_type, lead, title, closed, opened_at, closed_at,"
                      " last_event_seq, expires_at FROM cases WHERE case_id = ?1",
    [CASE_STMT_SET_CLOSED] = "UPDATE cases SET closed = ?2, closed_at = ?3 WHERE case_id = ?1",
    /* Does the case exist, the partner's state (NULL: no row), and how
     * many partners are invited or members. */
    [CASE_STMT_MEMBER_FACTS] =
        "SELECT (SELECT count(*) FROM cases WHERE case_id = ?1),"
        " (SELECT state FROM case_members WHERE case_id = ?1 AND partner = ?2),"
        " (SELECT count(*) FROM case_members WHERE case_id = ?1 AND state IN ('i', 'm'))",
    [CASE_STMT_MEMBER_INSERT] =
        "INSERT INTO case_members (case_id, partner, state, rule_id, rule_hash, changed_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [CASE_STMT_MEMBER_UPDATE] =
        "UPDATE case_members SET state = ?3, rule_id = coalesce(?4, rule_id),"
        " rule_hash = coalesce(?5, rule_hash), changed_at = ?6"
        " WHERE case_id = ?1 AND partner = ?2",
    [CASE_STMT_MEMBER_GET] = "SELECT state FROM case_members WHERE case_id = ?1 AND partner = ?2",
    [CASE_STMT_MEMBERS] = "SELECT partner, state, rule_id, rule_hash FROM case_members"
                          " WHERE case_id = ?1 ORDER BY id",
    /* Selecting from the case makes an unknown case, or a seq that is not
     * the next one, insert nothing; the trigger advances last_event_seq. */
    [CASE_STMT_EVENT_ADD] = "INSERT INTO case_events (case_id, event_seq, at, expires_at, body)"
                            " SELECT case_id, ?2, ?3, expires_at, ?4 FROM cases"
                            " WHERE case_id = ?1 AND last_event_seq = ?2 - 1",
    [CASE_STMT_EVENTS] = "SELECT event_seq, body FROM case_events"
                         " WHERE case_id = ?1 AND event_seq > ?2 ORDER BY event_seq",
    [CASE_STMT_OF_PARTNER] =
        "SELECT c.case_id, c.case_type, c.lead, c.title, c.closed, c.opened_at, c.closed_at,"
        " c.last_event_seq, c.expires_at, m.state"
        " FROM case_members AS m JOIN cases AS c ON c.case_id = m.case_id"
        " WHERE m.partner = ?1 AND m.state IN ('i', 'm') ORDER BY c.num",
    [CASE_STMT_LINK_FACTS] = "SELECT (SELECT count(*) FROM cases WHERE case_id = ?1),"
                             " (SELECT count(*) FROM items WHERE seq = ?2)",
    /* The case_items trigger raises the item and its publish to the case's
     * expiry. */
    [CASE_STMT_ITEM_LINK] = "INSERT OR IGNORE INTO case_items (case_id, item_seq) VALUES (?1, ?2)",
    [CASE_STMT_ITEM_GET] = "SELECT seq, publish_id, item_index, body FROM items WHERE seq = ?1",
    [CASE_STMT_OPEN_KINDS] = "SELECT case_type, lead, count(*) FROM cases WHERE closed = 0"
                             " GROUP BY case_type, lead ORDER BY case_type, lead",
};

/* Result columns of CASE_STMT_GET and the first ones of CASE_STMT_OF_PARTNER. */
enum case_col {
    CASE_COL_ID,
    CASE_COL_TYPE,
    CASE_COL_LEAD,
    CASE_COL_TITLE,
    CASE_COL_CLOSED,
    CASE_COL_OPENED_AT,
    CASE_COL_CLOSED_AT,
    CASE_COL_LAST_EVENT_SEQ,
    CASE_COL_EXPIRES_AT,
    CASE_COL_MY_STATE /* CASE_STMT_OF_PARTNER only */
};

/* ------------------------------------------------------------------ helpers */

/* The statement, prepared at its first use on this connection. */
static sqlite3_stmt *case_stmt(store_t *store, enum store_case_stmt_id id)
{
    if (store->case_stmt[id] != NULL)
        return store->case_stmt[id];
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v3(store->db, case_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL) !=
        SQLITE_OK) {
        store_fail(store, "case: prepare");
        return NULL;
    }
    store->case_stmt[id] = stmt;
    return stmt;
}

/* Statement id with the case id bound as ?1 (case_stmt_on), and ?2 a text
 * (case_stmt_on_text) or an integer (case_stmt_on_int); the caller binds
 * any others. NULL when it cannot be had or bound (the error recorded,
 * the statement reset). */
static sqlite3_stmt *case_stmt_on(store_t *store, enum store_case_stmt_id id, const char *case_id)
{
    sqlite3_stmt *stmt = case_stmt(store, id);
    if (stmt == NULL)
        return NULL;
    if (store_bind_text(store, stmt, 1, case_id) != 0) {
        store_stmt_finish(stmt);
        return NULL;
    }
    return stmt;
}

static sqlite3_stmt *case_stmt_on_text(store_t *store, enum store_case_stmt_id id,
                                       const char *case_id, const char *text)
{
    sqlite3_stmt *stmt = case_stmt_on(store, id, case_id);
    if (stmt != NULL && store_bind_text(store, stmt, 2, text) != 0) {
        store_stmt_finish(stmt);
        return NULL;
    }
    return stmt;
}

static sqlite3_stmt *case_stmt_on_int(store_t *store, enum store_case_stmt_id id,
                                      const char *case_id, int64_t value)
{
    sqlite3_stmt *stmt = case_stmt_on(store, id, case_id);
    if (stmt != NULL && store_bind_int64(store, stmt, 2, value) != 0) {
        store_stmt_finish(stmt);
        return NULL;
    }
    return stmt;
}

/* Every case id the store ever made has this length; anything else names
 * no case. */
static int case_id_plausible(const char *case_id)
{
    return case_id != NULL && strlen(case_id) == SCHAKEL_CASE_ID_LEN;
}

static int text_fits(const char *text, size_t max)
{
    return text != NULL && text[0] != '\0' && strlen(text) <= max;
}

static int member_state_known(char state)
{
    return state == STORE_CASE_INVITED || state == STORE_CASE_MEMBER ||
           state == STORE_CASE_DECLINED || state == STORE_CASE_LEFT;
}

static int member_state_active(char state)
{
    return state == STORE_CASE_INVITED || state == STORE_CASE_MEMBER;
}

/* The first character of a one-letter state column; 0 for a damaged one. */
static char state_column(sqlite3_stmt *stmt, int col)
{
    const char *text = store_column_text(stmt, col);
    if (text == NULL || text[0] == '\0' || text[1] != '\0' || !member_state_known(text[0]))
        return 0;
    return text[0];
}

/* Step a statement that yields one row of facts; 0 with the row current,
 * or -1 (finished). */
static int step_facts(store_t *store, sqlite3_stmt *stmt, const char *what)
{
    if (sqlite3_step(stmt) == SQLITE_ROW)
        return 0;
    store_fail(store, what);
    store_stmt_finish(stmt);
    return -1;
}

/* ------------------------------------------------------------------ case rows */

/* Copy the case of the current row (columns enum case_col) into out, its
 * strings (type, lead and the opened title) into store->case_row, which
 * keeps them until its next use. */
static int case_row_read(store_t *store, sqlite3_stmt *stmt, store_case_t *out)
{
    const char *case_id = store_column_text(stmt, CASE_COL_ID);
    const char *case_type = store_column_text(stmt, CASE_COL_TYPE);
    const char *lead = store_column_text(stmt, CASE_COL_LEAD);
    if (!case_id_plausible(case_id) || case_type == NULL || lead == NULL) {
        store_refuse(store, "case", "damaged row or out of memory");
        return -1;
    }
    char what[64];
    snprintf(what, sizeof what, "case %s title", case_id);
    store_seal_ad_t ad;
    const uint8_t *title = NULL;
    size_t title_len = 0, type_len = strlen(case_type), lead_len = strlen(lead);
    if (store_seal_ad_case(&ad, case_id) != 0 ||
        store_seal_column_named(store, stmt, CASE_COL_TITLE, what, &ad, &title, &title_len) != 0)
        return -1;
    size_t need = type_len + lead_len + title_len + 3;
    if (store_scratch_reserve(&store->case_row, need) != 0) {
        sodium_memzero(store->opened.bytes, title_len);
        store_refuse(store, "case", "out of memory");
        return -1;
    }
    char *text = (char *)store->case_row.bytes;
    memcpy(text, case_type, type_len + 1);
    memcpy(text + type_len + 1, lead, lead_len + 1);
    memcpy(text + type_len + lead_len + 2, title, title_len);
    text[need - 1] = '\0';
    sodium_memzero(store->opened.bytes, title_len); /* the copy is what lives on */
    memcpy(out->case_id, case_id, SCHAKEL_CASE_ID_LEN + 1);
    out->case_type = text;
    out->lead = text + type_len + 1;
    out->title = text + type_len + lead_len + 2;
    out->closed = sqlite3_column_int64(stmt, CASE_COL_CLOSED) != 0;
    out->opened_at = sqlite3_column_int64(stmt, CASE_COL_OPENED_AT);
    out->closed_at = sqlite3_column_int64(stmt, CASE_COL_CLOSED_AT);
    out->last_event_seq = (uint64_t)sqlite3_column_int64(stmt, CASE_COL_LAST_EVENT_SEQ);
    out->expires_at = sqlite3_column_int64(stmt, CASE_COL_EXPIRES_AT);
    return 0;
}

static int create_check(store_t *store, const char *case_type, const char *lead_partner,
                        const char *title, char *case_id_out)
{
    if (case_id_out == NULL || !text_fits(case_type, SCHAKEL_MAX_ID_LEN) ||
        !text_fits(lead_partner, SCHAKEL_MAX_ID_LEN)) {
        store_refuse(store, "case_create",
                     "case type, lead partner and the id's room are required");
        return -1;
    }
    if (title != NULL && strlen(title) > SCHAKEL_MAX_CASE_TITLE_LEN) {
        store_refuse(store, "case_create", "title too long");
        return -1;
    }
    if (store->next_case_num <= 0 || store->next_case_num > STORE_CASE_NUM_MAX) {
        store_refuse(store, "case_create", "case ids exhausted");
        return -1;
    }
    return 0;
}

/* Cost: one append (num is the rowid), the case_id and expires_at index
 * inserts, O(log n); sealing the title. */
int store_case_create(store_t *store, const char *case_type, const char *lead_partner,
                      const char *title, int64_t now, char case_id_out[SCHAKEL_CASE_ID_LEN + 1])
{
    if (store_enter(store, "case_create") != 0 ||
        create_check(store, case_type, lead_partner, title, case_id_out) != 0)
        return -1;
    sqlite3_stmt *stmt = case_stmt(store, CASE_STMT_CREATE);
    if (stmt == NULL)
        return -1;
    int64_t num = store->next_case_num;
    char case_id[SCHAKEL_CASE_ID_LEN + 1];
    snprintf(case_id, sizeof case_id, "C-%08lld", (long long)num);
    if (title == NULL)
        title = "";
    store_seal_ad_t ad;
    if (store_seal_ad_case(&ad, case_id) != 0 || store_bind_int64(store, stmt, 1, num) != 0 ||
        store_bind_text(store, stmt, 2, case_id) != 0 ||
        store_bind_text(store, stmt, 3, case_type) != 0 ||
        store_bind_text(store, stmt, 4, lead_partner) != 0 ||
        store_seal_bind(store, stmt, 5, &ad, (const uint8_t *)title, strlen(title)) != 0 ||
        store_bind_int64(store, stmt, 6, now) != 0 ||
        store_bind_int64(store, stmt, 7, STORE_CASE_OPEN_EXPIRY) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    if (store_stmt_run(store, stmt, "case_create") != 0)
        return -1;
    store->next_case_num = num + 1;
    memcpy(case_id_out, case_id, sizeof case_id);
    return 0;
}

int64_t store_case_ids_left(const store_t *store)
{
    if (store == NULL || store->next_case_num <= 0 || store->next_case_num > STORE_CASE_NUM_MAX)
        return 0;
    return STORE_CASE_NUM_MAX - store->next_case_num + 1;
}

/* Cost: one lookup in the case_id index and a rowid lookup, O(log n). */
void store_case_forget(store_t *store)
{
    if (store->case_row.bytes != NULL)
        sodium_memzero(store->case_row.bytes, store->case_row.cap);
}

int store_case_get(store_t *store, const char *case_id, store_case_t *out)
{
    if (store_enter(store, "case_get") != 0)
        return -1;
    if (case_id == NULL || out == NULL) {
        store_refuse(store, "case_get", "case id and result are required");
        return -1;
    }
    if (!case_id_plausible(case_id))
        return 0;
    sqlite3_stmt *stmt = case_stmt_on(store, CASE_STMT_GET, case_id);
    if (stmt == NULL)
        return -1;
    int rc = sqlite3_step(stmt), found = -1;
    if (rc == SQLITE_DONE)
        found = 0;
    else if (rc == SQLITE_ROW)
        found = case_row_read(store, stmt, out) == 0 ? 1 : -1;
    else
        store_fail(store, "case_get");
    store_stmt_finish(stmt);
    return found;
}

/* Run an UPDATE of one case row (?1 = case_id, ?2 and ?3 integers); a
 * case that does not exist is refused. */
static int case_update(store_t *store, enum store_case_stmt_id id, const char *case_id,
                       int64_t second, int64_t third, const char *what)
{
    if (!case_id_plausible(case_id)) {
        store_refuse(store, what, "no such case");
        return -1;
    }
    sqlite3_stmt *stmt = case_stmt(store, id);
    if (stmt == NULL)
        return -1;
    if (store_bind_text(store, stmt, 1, case_id) != 0 ||
        store_bind_int64(store, stmt, 2, second) != 0 ||
        (id == CASE_STMT_SET_CLOSED && store_bind_int64(store, stmt, 3, third) != 0)) {
        store_stmt_finish(stmt);
        return -1;
    }
    if (store_stmt_run(store, stmt, what) != 0)
        return -1;
    if (sqlite3_changes(store->db) != 1) {
        store_refuse(store, what, "no such case");
        return -1;
    }
    return 0;
}

/* Cost: one index lookup and a row rewrite, O(log n). */
int store_case_set_closed(store_t *store, const char *case_id, int closed, int64_t now)
{
    if (store_enter(store, "case_set_closed") != 0)
        return -1;
    return case_update(store, CASE_STMT_SET_CLOSED, case_id, closed ? 1 : 0, closed ? now : 0,
                       "case_set_closed");
}

/* ------------------------------------------------------------------ members */

typedef struct member_facts {
    int case_exists;
    char state; /* 0: the partner has no row */
    int64_t active;
} member_facts_t;

static int member_facts(store_t *store, const char *case_id, const char *partner,
                        member_facts_t *facts)
{
    sqlite3_stmt *stmt = case_stmt_on_text(store, CASE_STMT_MEMBER_FACTS, case_id, partner);
    if (stmt == NULL)
        return -1;
    if (step_facts(store, stmt, "case_member_set") != 0)
        return -1;
    facts->case_exists = sqlite3_column_int64(stmt, 0) > 0;
    int has_row = sqlite3_column_type(stmt, 1) != SQLITE_NULL;
    facts->state = has_row ? state_column(stmt, 1) : 0;
    facts->active = sqlite3_column_int64(stmt, 2);
    store_stmt_finish(stmt);
    if (has_row && facts->state == 0) {
        store_refuse(store, "case_member_set", "damaged member row");
        return -1;
    }
    return 0;
}

/* Why this change may not be recorded, or NULL. */
static const char *member_refusal(const member_facts_t *facts, char state, const char *rule_id,
                                  const char *rule_hash)
{
    if (!facts->case_exists)
        return "no such case";
    if (facts->state == 0 && (rule_id == NULL || rule_hash == NULL))
        return "a new member row needs its membership rule";
    if (member_state_active(state) && !member_state_active(facts->state) &&
        facts->active >= (int64_t)SCHAKEL_MAX_CASE_MEMBERS)
        return "the case has the most partners it may have";
    return NULL;
}

/* Cost: three index lookups (a count over the case's members) and one
 * insert or rewrite, O(log n + members). */
int store_case_member_set(store_t *store, const char *case_id, const char *partner, char state,
                          const char *rule_id, const char *rule_hash, int64_t now)
{
    if (store_enter(store, "case_member_set") != 0)
        return -1;
    if (!text_fits(partner, SCHAKEL_MAX_ID_LEN) || !member_state_known(state) ||
        (rule_id != NULL && rule_id[0] == '\0') || (rule_hash != NULL && rule_hash[0] == '\0')) {
        store_refuse(store, "case_member_set", "partner, a known state and a rule are required");
        return -1;
    }
    member_facts_t facts = {0, 0, 0};
    if (!case_id_plausible(case_id)) {
        store_refuse(store, "case_member_set", "no such case");
        return -1;
    }
    if (member_facts(store, case_id, partner, &facts) != 0)
        return -1;
    const char *refusal = member_refusal(&facts, state, rule_id, rule_hash);
    if (refusal != NULL) {
        store_refuse(store, "case_member_set", refusal);
        return -1;
    }
    sqlite3_stmt *stmt =
        case_stmt(store, facts.state == 0 ? CASE_STMT_MEMBER_INSERT : CASE_STMT_MEMBER_UPDATE);
    if (stmt == NULL)
        return -1;
    char state_text[2] = {state, '\0'};
    if (store_bind_text(store, stmt, 1, case_id) != 0 ||
        store_bind_text(store, stmt, 2, partner) != 0 ||
        store_bind_text(store, stmt, 3, state_text) != 0 ||
        (rule_id != NULL && store_bind_text(store, stmt, 4, rule_id) != 0) ||
        (rule_hash != NULL && store_bind_text(store, stmt, 5, rule_hash) != 0) ||
        store_bind_int64(store, stmt, 6, now) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    return store_stmt_run(store, stmt, "case_member_set");
}

/* Cost: one lookup in the (case_id, partner) index, O(log n). */
int store_case_member_get(store_t *store, const char *case_id, const char *partner, char *state)
{
    if (store_enter(store, "case_member_get") != 0)
        return -1;
    if (case_id == NULL || partner == NULL || state == NULL) {
        store_refuse(store, "case_member_get", "case id, partner and result are required");
        return -1;
    }
    if (!case_id_plausible(case_id))
        return 0;
    sqlite3_stmt *stmt = case_stmt_on_text(store, CASE_STMT_MEMBER_GET, case_id, partner);
    if (stmt == NULL)
        return -1;
    int rc = sqlite3_step(stmt), found = -1;
    if (rc == SQLITE_DONE) {
        found = 0;
    } else if (rc == SQLITE_ROW) {
        *state = state_column(stmt, 0);
        found = *state != 0 ? 1 : -1;
        if (found < 0)
            store_refuse(store, "case_member_get", "damaged member row");
    } else {
        store_fail(store, "case_member_get");
    }
    store_stmt_finish(stmt);
    return found;
}

/* Run a scan statement whose parameters are bound, calling visit for each
 * row with the store marked in a callback. visit returns 0 to go on, 1 to
 * stop, -1 on error (errmsg set). Returns the rows visited or -1. */
typedef int (*row_visit_fn)(store_t *store, sqlite3_stmt *stmt, void *ctx);

static int scan_rows(store_t *store, sqlite3_stmt *stmt, row_visit_fn visit, void *ctx,
                     const char *what)
{
    int visited = 0, verdict = 0, rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        store->in_callback = 1;
        verdict = visit(store, stmt, ctx);
        store->in_callback = 0;
        if (verdict < 0)
            break;
        visited++;
        if (verdict > 0 || visited == INT_MAX) /* the count returned is an int */
            break;
    }
    int result = -1;
    if (verdict >= 0 && (rc == SQLITE_ROW || rc == SQLITE_DONE))
        result = visited; /* SQLITE_ROW: stopped early */
    else if (verdict >= 0)
        store_fail(store, what);
    store_stmt_finish(stmt);
    return result;
}

typedef struct members_ctx {
    store_case_member_fn fn;
    void *arg;
} members_ctx_t;

static int members_visit(store_t *store, sqlite3_stmt *stmt, void *ctx)
{
    members_ctx_t *m = ctx;
    const char *partner = store_column_text(stmt, 0);
    char state = state_column(stmt, 1);
    const char *rule_id = store_column_text(stmt, 2);
    const char *rule_hash = store_column_text(stmt, 3);
    if (partner == NULL || state == 0 || rule_id == NULL || rule_hash == NULL) {
        store_refuse(store, "case_members", "damaged member row or out of memory");
        return -1;
    }
    return m->fn(partner, state, rule_id, rule_hash, m->arg) != 0 ? 1 : 0;
}

/* Cost: one range of the (case_id, partner) index, then a sort of the
 * case's members by rowid (at most a few dozen), O(log n + m log m). */
int store_case_members(store_t *store, const char *case_id, store_case_member_fn fn, void *arg)
{
    if (store_enter(store, "case_members") != 0)
        return -1;
    if (case_id == NULL || fn == NULL) {
        store_refuse(store, "case_members", "case id and callback are required");
        return -1;
    }
    if (!case_id_plausible(case_id))
        return 0;
    sqlite3_stmt *stmt = case_stmt_on(store, CASE_STMT_MEMBERS, case_id);
    if (stmt == NULL)
        return -1;
    members_ctx_t ctx = {fn, arg};
    return scan_rows(store, stmt, members_visit, &ctx, "case_members");
}

/* ------------------------------------------------------------------ events */

/* Cost: the case's lookup, one append and two index inserts, the trigger's
 * row rewrite, O(log n); sealing is linear in len. */
int store_case_event_add(store_t *store, const char *case_id, uint64_t event_seq, int64_t now,
                         const uint8_t *event, size_t len)
{
    if (store_enter(store, "case_event_add") != 0)
        return -1;
    if ((event == NULL && len > 0) || len > SCHAKEL_MAX_FRAME_BYTES || event_seq == 0 ||
        event_seq > INT64_MAX) {
        store_refuse(store, "case_event_add", "event bytes missing, too long, or seq out of range");
        return -1;
    }
    store_seal_ad_t ad;
    if (!case_id_plausible(case_id) || store_seal_ad_case_event(&ad, case_id, event_seq) != 0) {
        store_refuse(store, "case_event_add", "no such case");
        return -1;
    }
    sqlite3_stmt *stmt = case_stmt(store, CASE_STMT_EVENT_ADD);
    if (stmt == NULL)
        return -1;
    if (store_bind_text(store, stmt, 1, case_id) != 0 ||
        store_bind_int64(store, stmt, 2, (int64_t)event_seq) != 0 ||
        store_bind_int64(store, stmt, 3, now) != 0 ||
        store_seal_bind(store, stmt, 4, &ad, event, len) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    if (store_stmt_run(store, stmt, "case_event_add") != 0)
        return -1;
    if (sqlite3_changes(store->db) != 1) {
        store_refuse(store, "case_event_add",
                     "no such case, or event_seq is not its last_event_seq + 1");
        return -1;
    }
    return 0;
}

typedef struct events_ctx {
    const char *case_id;
    store_case_event_fn fn;
    void *arg;
} events_ctx_t;

static int events_visit(store_t *store, sqlite3_stmt *stmt, void *ctx)
{
    events_ctx_t *e = ctx;
    int64_t event_seq = sqlite3_column_int64(stmt, 0);
    char what[64];
    snprintf(what, sizeof what, "case %s event %lld", e->case_id, (long long)event_seq);
    store_seal_ad_t ad;
    const uint8_t *body = NULL;
    size_t len = 0;
    if (event_seq <= 0 || store_seal_ad_case_event(&ad, e->case_id, (uint64_t)event_seq) != 0) {
        store_refuse(store, "case_events", "damaged event row");
        return -1;
    }
    if (store_seal_column_named(store, stmt, 1, what, &ad, &body, &len) != 0)
        return -1;
    int stop = e->fn((uint64_t)event_seq, body, len, e->arg);
    sodium_memzero(store->opened.bytes, len); /* the plaintext is fn's no longer */
    return stop != 0 ? 1 : 0;
}

/* Cost: one descent of the (case_id, event_seq) index, then a rowid lookup
 * and a decryption per event visited, no sort; memory: one event. */
int store_case_events(store_t *store, const char *case_id, uint64_t after_event_seq,
                      store_case_event_fn fn, void *arg)
{
    if (store_enter(store, "case_events") != 0)
        return -1;
    if (case_id == NULL || fn == NULL) {
        store_refuse(store, "case_events", "case id and callback are required");
        return -1;
    }
    if (!case_id_plausible(case_id) || after_event_seq >= INT64_MAX)
        return 0;
    sqlite3_stmt *stmt =
        case_stmt_on_int(store, CASE_STMT_EVENTS, case_id, (int64_t)after_event_seq);
    if (stmt == NULL)
        return -1;
    events_ctx_t ctx = {case_id, fn, arg};
    return scan_rows(store, stmt, events_visit, &ctx, "case_events");
}

/* ------------------------------------------------------------------ a partner's cases */

typedef struct partner_ctx {
    store_case_fn fn;
    void *arg;
} partner_ctx_t;

static int partner_visit(store_t *store, sqlite3_stmt *stmt, void *ctx)
{
    partner_ctx_t *p = ctx;
    store_case_t c;
    char my_state = state_column(stmt, CASE_COL_MY_STATE);
    if (my_state == 0) {
        store_refuse(store, "cases_of_partner", "damaged member row");
        return -1;
    }
    if (case_row_read(store, stmt, &c) != 0)
        return -1;
    return p->fn(&c, my_state, p->arg) != 0 ? 1 : 0;
}

/* The cases the partner is invited to or a member of: a case it declined
 * or left is not read (its title not unsealed: it may no longer see it).
 * Cost: one range of the (partner, case_id) index, a case lookup and a
 * title decryption per row, and a sort by case number, O(k log n) for the
 * partner's k cases. */
int store_cases_of_partner(store_t *store, const char *partner, store_case_fn fn, void *arg)
{
    if (store_enter(store, "cases_of_partner") != 0)
        return -1;
    if (partner == NULL || fn == NULL) {
        store_refuse(store, "cases_of_partner", "partner and callback are required");
        return -1;
    }
    sqlite3_stmt *stmt = case_stmt(store, CASE_STMT_OF_PARTNER);
    if (stmt == NULL)
        return -1;
    if (store_bind_text(store, stmt, 1, partner) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    partner_ctx_t ctx = {fn, arg};
    return scan_rows(store, stmt, partner_visit, &ctx, "cases_of_partner");
}

typedef struct kinds_ctx {
    store_case_kind_fn fn;
    void *arg;
} kinds_ctx_t;

static int kinds_visit(store_t *store, sqlite3_stmt *stmt, void *arg)
{
    kinds_ctx_t *k = arg;
    const char *type = store_column_text(stmt, 0), *lead = store_column_text(stmt, 1);
    if (type == NULL || lead == NULL) {
        store_refuse(store, "open_case_kinds", "damaged case row");
        return -1;
    }
    return k->fn(type, lead, (uint64_t)sqlite3_column_int64(stmt, 2), k->arg) != 0 ? 1 : 0;
}

/* Cost: a walk of the cases table (only at start and after a reload). */
int store_open_case_kinds(store_t *store, store_case_kind_fn fn, void *arg)
{
    if (store_enter(store, "open_case_kinds") != 0)
        return -1;
    if (fn == NULL) {
        store_refuse(store, "open_case_kinds", "a callback is required");
        return -1;
    }
    sqlite3_stmt *stmt = case_stmt(store, CASE_STMT_OPEN_KINDS);
    if (stmt == NULL)
        return -1;
    kinds_ctx_t ctx = {fn, arg};
    return scan_rows(store, stmt, kinds_visit, &ctx, "open_case_kinds");
}

/* ------------------------------------------------------------------ deliveries and retention */

/* Cost: per delivery removed, one descent of the (case_id, recipient)
 * index (in seq order within it: no sort) and the tombstone, O(log n). */
int store_case_drop_deliveries_at(store_t *store, const char *case_id, const char *recipient,
                                  int64_t now, store_expired_fn fn, void *arg)
{
    return store_mailbox_row_case_drop_at(store, case_id, recipient, now, fn, arg);
}

/* The broker's clock is not passed here, so the tombstones take the wall
 * clock's; nothing reads expired_at back but operators. */
int store_case_drop_deliveries(store_t *store, const char *case_id, const char *recipient)
{
    return store_mailbox_row_case_drop(store, case_id, recipient);
}

/* Where the walk of a case's deliveries is: past this recipient and seq. */
typedef struct expiry_cursor {
    char recipient[SCHAKEL_MAX_PRINCIPAL_LEN + 1];
    int64_t seq;
} expiry_cursor_t;

/* Cost: the case row, then each of its events, pending deliveries (through
 * the (case_id, recipient) index, each opened, re-sealed and rewritten:
 * two BLAKE2b passes and a decryption and an encryption of its body),
 * command items, deliveries set aside (through their case_id index, an
 * item lookup each) and publishes (through case_items) rewritten:
 * O((e + d + c + s) log n). */
int store_case_set_expiry(store_t *store, const char *case_id, int64_t expires_at)
{
    return store_mailbox_row_case_set_expiry(store, case_id, expires_at);
}

/* Cost: two index lookups and at most one insert with its trigger's two
 * rowid updates, O(log n). */
int store_case_item_link(store_t *store, const char *case_id, uint64_t item_seq)
{
    if (store_enter(store, "case_item_link") != 0)
        return -1;
    if (!case_id_plausible(case_id) || item_seq == 0 || item_seq > INT64_MAX) {
        store_refuse(store, "case_item_link", "no such case or item");
        return -1;
    }
    sqlite3_stmt *facts = case_stmt_on_int(store, CASE_STMT_LINK_FACTS, case_id, (int64_t)item_seq);
    if (facts == NULL)
        return -1;
    if (step_facts(store, facts, "case_item_link") != 0)
        return -1;
    int known = sqlite3_column_int64(facts, 0) > 0 && sqlite3_column_int64(facts, 1) > 0;
    store_stmt_finish(facts);
    if (!known) {
        store_refuse(store, "case_item_link", "no such case or item");
        return -1;
    }
    sqlite3_stmt *link = case_stmt_on_int(store, CASE_STMT_ITEM_LINK, case_id, (int64_t)item_seq);
    if (link == NULL)
        return -1;
    return store_stmt_run(store, link, "case_item_link");
}

/* ------------------------------------------------------------------ items */

/* Open the current row's item body and copy it out. */
static int item_copy(store_t *store, sqlite3_stmt *stmt, uint8_t **body, size_t *len)
{
    int64_t seq = sqlite3_column_int64(stmt, 0), item_index = sqlite3_column_int64(stmt, 2);
    if (item_index < 0 || item_index > UINT32_MAX) {
        store_refuse(store, "item_get", "damaged item row");
        return -1;
    }
    char what[48];
    snprintf(what, sizeof what, "item %lld", (long long)seq);
    store_seal_ad_t ad;
    store_seal_ad_item(&ad, seq, sqlite3_column_int64(stmt, 1), (uint32_t)item_index);
    const uint8_t *opened = NULL;
    size_t opened_len = 0;
    if (store_seal_column_named(store, stmt, 3, what, &ad, &opened, &opened_len) != 0)
        return -1;
    uint8_t *copy = malloc(opened_len > 0 ? opened_len : 1);
    if (copy == NULL) {
        sodium_memzero(store->opened.bytes, opened_len);
        store_refuse(store, "item_get", "out of memory");
        return -1;
    }
    if (opened_len > 0)
        memcpy(copy, opened, opened_len);
    sodium_memzero(store->opened.bytes, opened_len);
    *body = copy;
    *len = opened_len;
    return 0;
}

/* Cost: one rowid lookup and a decryption, O(log n + len). */
int store_item_get(store_t *store, uint64_t item_seq, uint8_t **body, size_t *len)
{
    if (store_enter(store, "item_get") != 0)
        return -1;
    if (body == NULL || len == NULL) {
        store_refuse(store, "item_get", "result pointers are required");
        return -1;
    }
    *body = NULL;
    *len = 0;
    if (item_seq == 0 || item_seq > INT64_MAX)
        return 0;
    sqlite3_stmt *stmt = case_stmt(store, CASE_STMT_ITEM_GET);
    if (stmt == NULL)
        return -1;
    if (store_bind_int64(store, stmt, 1, (int64_t)item_seq) != 0) {
        store_stmt_finish(stmt);
        return -1;
    }
    int rc = sqlite3_step(stmt), found = -1;
    if (rc == SQLITE_DONE)
        found = 0;
    else if (rc == SQLITE_ROW)
        found = item_copy(store, stmt, body, len) == 0 ? 1 : -1;
    else
        store_fail(store, "item_get");
    store_stmt_finish(stmt);
    return found;
}
