/*
 * test_client_alloc.c — libschakel when allocations fail, one at a time.
 *
 * Linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,
 * --wrap=free (Makefile: UNIT_LDFLAGS_test_client_alloc), so that every
 * allocation made by the objects of this program — the library, the common
 * code, the generated protobuf-c code — goes through the wrappers below.
 * That includes protobuf-c's own unpacking: the library unpacks only through
 * ProtobufCAllocators of its own (wire.c, delivery.c) whose blocks come from
 * malloc in our objects; packing allocates nothing. What libzmq and
 * libprotobuf-c allocate inside themselves, as shared libraries, is not
 * wrapped, and could not be failed safely: libzmq aborts on out-of-memory by
 * design (its alloc_assert), so no client library on top of it can survive
 * that. libsodium's sodium_malloc (long-term keys, outside sanitizer builds)
 * is not wrapped either.
 *
 * For each main operation a wrapper fails the Nth allocation of the test
 * thread, for N = 1, 2, 3, ... until a run makes fewer than N allocations.
 * Every run that met a failure must return an error (never success, never a
 * crash or abort), leave the client usable and lose nothing the broker sent;
 * and every run must free all it allocated (counted here per run; the ASan
 * build's LeakSanitizer checks the same at exit). A fake broker runs in its
 * own thread; its allocations are never failed or counted.
 */
#define _GNU_SOURCE /* memmem */

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <zmq.h>

#include "keys.h"
#include "schakel.h"
#include "schakel_limits.h"
#include "wire.h"

#define PRINCIPAL "politie/bvh-koppeling"
#define PARTNER "politie"
#define ROLE "system"
#define WAIT_MS 5000 /* generous: every wait ends on an answer well before */
#define DELIVERED_SEQ 7u
#define BACKLOG 4711u
#define BATCH 16u        /* signals in the published batch */
#define ACK_MANY 3000u   /* seqs in the bulk ack: three Ack frames */
#define MAX_RUNS 100000u /* a loop that never ends is a failure too */

/* ------------------------------------------------------------ allocation */

void *__real_malloc(size_t size);
void *__real_calloc(size_t count, size_t size);
void *__real_realloc(void *block, size_t size);
void __real_free(void *block);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t count, size_t size);
void *__wrap_realloc(void *block, size_t size);
char *__wrap_strdup(const char *text);
void __wrap_free(void *block);

/* Only the test thread's allocations are failed and tracked: the globals
 * below are touched by no other thread. */
static _Thread_local int in_test_thread;
static size_t alloc_calls; /* allocations seen since arming */
static size_t fail_at;     /* fail the allocation with this number; 0 = none */
static int injected;       /* the failure was injected in this run */

/* Blocks allocated by the test thread while tracking, not yet freed. */
#define TRACK_SLOTS 65536u
static void *tracked[TRACK_SLOTS];
static size_t tracked_count;
static int tracking;
static int track_overflow;

static int alloc_should_fail(void)
{
    if (!in_test_thread || fail_at == 0)
        return 0;
    if (++alloc_calls != fail_at)
        return 0;
    injected = 1;
    errno = ENOMEM; /* as the allocators do */
    return 1;
}

static void track_add(void *block)
{
    if (block == NULL || !in_test_thread || !tracking)
        return;
    if (tracked_count == TRACK_SLOTS) {
        track_overflow = 1;
        return;
    }
    tracked[tracked_count++] = block;
}

static void track_remove(void *block)
{
    if (block == NULL || !in_test_thread || !tracking)
        return;
    for (size_t i = tracked_count; i-- > 0;) { /* recent blocks die first */
        if (tracked[i] == block) {
            tracked[i] = tracked[--tracked_count];
            return;
        }
    }
}

/* While watched_text is set, every block the test thread allocates is
 * zeroed (so that no byte of it is undefined to a memory checker: malloc's
 * contents are unspecified anyway), remembered with its size, and searched
 * for that text when it is freed: what the broker sent must be wiped
 * before its memory goes back. */
#define WATCH_SLOTS 4096u
static const char *watched_text;
static size_t watched_hits;
static struct {
    void *block;
    size_t size;
} watched[WATCH_SLOTS];
static size_t n_watched;
static int watch_overflow;

/* Watch a block whose first `kept` bytes hold data (0: a new block). */
static void watch_on_alloc(void *block, size_t size, size_t kept)
{
    if (block == NULL || watched_text == NULL || !in_test_thread)
        return;
    if (n_watched == WATCH_SLOTS) {
        watch_overflow = 1;
        return;
    }
    if (size > kept)
        memset((char *)block + kept, 0, size - kept);
    watched[n_watched].block = block;
    watched[n_watched++].size = size;
}

/* Drop the block's record; with scan, search it first (it is still ours).
 * Returns its size plus one if the block was watched, else 0. */
static size_t watch_drop(void *block, int scan)
{
    if (block == NULL || !in_test_thread)
        return 0;
    for (size_t i = n_watched; i-- > 0;) {
        if (watched[i].block != block)
            continue;
        size_t size = watched[i].size;
        if (scan && watched_text != NULL &&
            memmem(block, size, watched_text, strlen(watched_text)) != NULL)
            watched_hits++;
        watched[i] = watched[--n_watched];
        return size + 1;
    }
    return 0;
}

static void watch_on_free(void *block)
{
    (void)watch_drop(block, 1);
}

void *__wrap_malloc(size_t size)
{
    if (alloc_should_fail())
        return NULL;
    void *block = __real_malloc(size);
    track_add(block);
    watch_on_alloc(block, size, 0);
    return block;
}

void *__wrap_calloc(size_t count, size_t size)
{
    if (alloc_should_fail())
        return NULL;
    void *block = __real_calloc(count, size);
    track_add(block);
    watch_on_alloc(block, count * size, count * size); /* zeroed; calloc checked the product */
    return block;
}

void *__wrap_realloc(void *block, size_t size)
{
    if (alloc_should_fail())
        return NULL; /* block stays valid, as realloc promises */
    void *moved = __real_realloc(block, size);
    if (moved != NULL) {
        track_remove(block);
        track_add(moved);
        /* its bytes are `moved` now: watched (the new tail zeroed) if
         * they were, or if this is a new block */
        size_t was = watch_drop(block, 0); /* its size + 1, or 0 */
        size_t kept = was == 0 ? 0 : was - 1 < size ? was - 1 : size;
        if (block == NULL || was > 0)
            watch_on_alloc(moved, size, kept);
    }
    return moved;
}

char *__wrap_strdup(const char *text)
{
    size_t len = strlen(text) + 1;
    char *copy = __wrap_malloc(len);
    if (copy != NULL)
        memcpy(copy, text, len);
    return copy;
}

void __wrap_free(void *block)
{
    watch_on_free(block);
    track_remove(block);
    __real_free(block);
}

static void alloc_arm(size_t n)
{
    alloc_calls = 0;
    injected = 0;
    fail_at = n;
}

/* Stop failing; returns whether this run met its failure. */
static int alloc_disarm(void)
{
    fail_at = 0;
    return injected;
}

static void track_start(void)
{
    tracked_count = 0;
    track_overflow = 0;
    tracking = 1;
}

/* Stop tracking; returns the blocks still live (leaked). */
static size_t track_stop(void)
{
    tracking = 0;
    assert_false(track_overflow);
    return tracked_count;
}

/* ------------------------------------------------------------ fake broker */

typedef struct fake_broker {
    void *context;
    void *router;
    void *zap;
    pthread_t thread;
    char endpoint[128];
    uint8_t broker_curve_sk[32];
    uint8_t admitted_curve_pk[32];
    uint8_t client_sign_pk[32];

    pthread_mutex_t lock; /* guards everything below */
    int publishes_ok;     /* publishes with a valid signature over valid items */
    int publishes_bad;
    int delivery_owed; /* the Deliver of DELIVERED_SEQ is not acked yet */
    int unreadable;    /* ... and its purpose is not UTF-8: the codec refuses it */
    size_t acks;       /* seqs acked */
} fake_broker_t;

static fake_broker_t fake = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void fake_send_frame(zmq_msg_t *routing, Schakel__Frame *frame)
{
    size_t len = 0;
    uint8_t *bytes = wire_encode_frame(frame, &len);
    if (bytes == NULL)
        return;
    zmq_send(fake.router, zmq_msg_data(routing), zmq_msg_size(routing), ZMQ_SNDMORE);
    zmq_send(fake.router, bytes, len, 0);
    free(bytes);
}

/* RFC 27: admit the one registered key with User-Id PRINCIPAL. */
static void fake_zap(void)
{
    zmq_msg_t parts[8];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, fake.zap, 0) == -1) {
            zmq_msg_close(&part);
            break;
        }
        more = zmq_msg_more(&part);
        if (n < 8)
            parts[n++] = part;
        else
            zmq_msg_close(&part);
    }
    int admit = n >= 7 && zmq_msg_size(&parts[6]) == 32 &&
                memcmp(zmq_msg_data(&parts[6]), fake.admitted_curve_pk, 32) == 0;
    zmq_send(fake.zap, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(fake.zap, n > 1 ? zmq_msg_data(&parts[1]) : "", n > 1 ? zmq_msg_size(&parts[1]) : 0,
             ZMQ_SNDMORE);
    zmq_send(fake.zap, admit ? "200" : "400", 3, ZMQ_SNDMORE);
    zmq_send(fake.zap, admit ? "OK" : "no", 2, ZMQ_SNDMORE);
    zmq_send(fake.zap, admit ? PRINCIPAL : "", admit ? strlen(PRINCIPAL) : 0, ZMQ_SNDMORE);
    zmq_send(fake.zap, "", 0, 0);
    for (int i = 0; i < n; i++)
        zmq_msg_close(&parts[i]);
}

/* Verify the signature and every item, then answer Accepted. */
static void fake_on_publish(zmq_msg_t *routing, const Schakel__Publish *publish)
{
    static Schakel__ItemAccepted items[SCHAKEL_MAX_ITEMS];
    static Schakel__ItemAccepted *pointers[SCHAKEL_MAX_ITEMS];
    uint8_t root[32], signed_bytes[64];
    wire_items_root(publish->items, publish->n_items, root);
    wire_signed_bytes(publish->message_id.data, root, signed_bytes);
    int ok = publish->signature.len == 64 &&
             keys_verify(fake.client_sign_pk, signed_bytes, sizeof signed_bytes,
                         publish->signature.data) == 0;
    for (size_t i = 0; ok && i < publish->n_items; i++) {
        wire_error_t err;
        Schakel__Signal *signal =
            wire_decode_signal(publish->items[i].data, publish->items[i].len, time(NULL), &err);
        ok = signal != NULL && strcmp(signal->sender, PRINCIPAL) == 0;
        wire_signal_free(&signal);
    }
    pthread_mutex_lock(&fake.lock);
    ok ? fake.publishes_ok++ : fake.publishes_bad++;
    pthread_mutex_unlock(&fake.lock);
    Schakel__Accepted accepted = SCHAKEL__ACCEPTED__INIT;
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    for (size_t i = 0; i < publish->n_items; i++) {
        Schakel__ItemAccepted init = SCHAKEL__ITEM_ACCEPTED__INIT;
        items[i] = init;
        items[i].has_seq = items[i].has_recipients = 1;
        items[i].seq = 100 + i;
        items[i].recipients = 2;
        pointers[i] = &items[i];
    }
    accepted.has_message_id = 1;
    accepted.message_id = publish->message_id;
    accepted.n_items = publish->n_items;
    accepted.items = pointers;
    frame.body_case = SCHAKEL__FRAME__BODY_ACCEPTED;
    frame.accepted = &accepted;
    fake_send_frame(routing, &frame);
}

/* The answer names the Heartbeat it answers, as PROTOCOL 4.9 says. */
static void fake_on_heartbeat(zmq_msg_t *routing, const char *user_id,
                              const Schakel__Heartbeat *asked)
{
    Schakel__Heartbeat heartbeat = SCHAKEL__HEARTBEAT__INIT;
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    heartbeat.has_heartbeat_id = asked->has_heartbeat_id;
    heartbeat.heartbeat_id = asked->heartbeat_id;
    heartbeat.principal = (char *)(uintptr_t)user_id;
    heartbeat.partner = PARTNER;
    heartbeat.role = ROLE;
    heartbeat.has_backlog = 1;
    heartbeat.backlog = BACKLOG;
    frame.body_case = SCHAKEL__FRAME__BODY_HEARTBEAT;
    frame.heartbeat = &heartbeat;
    fake_send_frame(routing, &frame);
}

/* Every Flow is answered by the Deliver still owed, as a broker pushes
 * what is owed after each (re)connect. */
static void fake_on_flow(zmq_msg_t *routing)
{
    static const uint8_t id[16] = {0xca, 0xfe, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
    char *recipients[] = {"politie", "riec"};
    pthread_mutex_lock(&fake.lock);
    int owed = fake.delivery_owed;
    int unreadable = fake.unreadable;
    pthread_mutex_unlock(&fake.lock);
    if (!owed)
        return;
    Schakel__Signal signal = SCHAKEL__SIGNAL__INIT;
    Schakel__Address address = SCHAKEL__ADDRESS__INIT;
    signal.sender = "woco-servatius/meldingen";
    signal.kind = "hennepkwekerij";
    signal.theme = "ondermijning";
    signal.area = "BU09350101";
    address.postcode = "6211AB";
    address.has_house_number = 1;
    address.house_number = 12;
    signal.address = &address;
    signal.summary = "Stroomverbruik verdubbeld";
    signal.n_recipients = 2;
    signal.recipients = recipients;
    size_t len = 0;
    uint8_t *bytes = wire_encode_signal(&signal, &len);
    Schakel__Deliver deliver = SCHAKEL__DELIVER__INIT;
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    deliver.has_seq = deliver.has_message_id = deliver.has_signal = 1;
    deliver.seq = DELIVERED_SEQ;
    deliver.message_id.data = (uint8_t *)(uintptr_t)id;
    deliver.message_id.len = 16;
    deliver.sender = "woco-servatius/meldingen";
    deliver.sender_partner = "woco-servatius";
    deliver.rule_id = "woco-ondermijning";
    deliver.purpose = unreadable ? "Aanpak \xc3\x28" : "Aanpak ondermijning";
    deliver.legal_basis = "Convenant RIEC Limburg 2023, art. 6";
    deliver.signal.data = bytes;
    deliver.signal.len = len;
    frame.body_case = SCHAKEL__FRAME__BODY_DELIVER;
    frame.deliver = &deliver;
    if (bytes != NULL)
        fake_send_frame(routing, &frame);
    free(bytes);
}

static void fake_on_ack(const Schakel__Ack *ack)
{
    pthread_mutex_lock(&fake.lock);
    for (size_t i = 0; i < ack->n_seqs; i++) {
        fake.acks++;
        if (ack->seqs[i] == DELIVERED_SEQ)
            fake.delivery_owed = 0;
    }
    pthread_mutex_unlock(&fake.lock);
}

static void fake_router(void)
{
    zmq_msg_t routing, data;
    zmq_msg_init(&routing);
    zmq_msg_init(&data);
    if (zmq_msg_recv(&routing, fake.router, 0) != -1 && zmq_msg_more(&routing) &&
        zmq_msg_recv(&data, fake.router, 0) != -1) {
        const char *user_id = zmq_msg_gets(&data, "User-Id");
        wire_error_t err;
        Schakel__Frame *frame = wire_decode_frame(zmq_msg_data(&data), zmq_msg_size(&data), &err);
        if (frame != NULL && user_id != NULL) {
            if (frame->body_case == SCHAKEL__FRAME__BODY_PUBLISH)
                fake_on_publish(&routing, frame->publish);
            else if (frame->body_case == SCHAKEL__FRAME__BODY_HEARTBEAT)
                fake_on_heartbeat(&routing, user_id, frame->heartbeat);
            else if (frame->body_case == SCHAKEL__FRAME__BODY_FLOW)
                fake_on_flow(&routing);
            else if (frame->body_case == SCHAKEL__FRAME__BODY_ACK)
                fake_on_ack(frame->ack);
        }
        wire_frame_free(&frame);
    }
    zmq_msg_close(&routing);
    zmq_msg_close(&data);
}

static void *fake_run(void *arg)
{
    (void)arg;
    for (;;) {
        zmq_pollitem_t items[2] = {{fake.zap, 0, ZMQ_POLLIN, 0}, {fake.router, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, -1) == -1) {
            if (errno == EINTR)
                continue;
            break; /* ETERM: shut down */
        }
        if (items[0].revents & ZMQ_POLLIN)
            fake_zap();
        if (items[1].revents & ZMQ_POLLIN)
            fake_router();
    }
    zmq_close(fake.zap);
    zmq_close(fake.router);
    return NULL;
}

static int fake_start(void)
{
    int zero = 0, one = 1;
    size_t len = sizeof fake.endpoint;
    fake.context = zmq_ctx_new();
    fake.zap = zmq_socket(fake.context, ZMQ_REP);
    fake.router = zmq_socket(fake.context, ZMQ_ROUTER);
    if (fake.zap == NULL || fake.router == NULL ||
        zmq_setsockopt(fake.zap, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(fake.router, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_bind(fake.zap, "inproc://zeromq.zap.01") != 0 ||
        zmq_setsockopt(fake.router, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(fake.router, ZMQ_CURVE_SECRETKEY, fake.broker_curve_sk, 32) != 0 ||
        zmq_bind(fake.router, "tcp://127.0.0.1:*") != 0 ||
        zmq_getsockopt(fake.router, ZMQ_LAST_ENDPOINT, fake.endpoint, &len) != 0)
        return -1;
    return pthread_create(&fake.thread, NULL, fake_run, NULL) == 0 ? 0 : -1;
}

static void fake_owe_delivery(void)
{
    pthread_mutex_lock(&fake.lock);
    fake.delivery_owed = 1;
    fake.unreadable = 0;
    fake.acks = 0;
    pthread_mutex_unlock(&fake.lock);
}

static void fake_owe_unreadable(void)
{
    fake_owe_delivery();
    pthread_mutex_lock(&fake.lock);
    fake.unreadable = 1;
    pthread_mutex_unlock(&fake.lock);
}

static void fake_forget_acks(void)
{
    pthread_mutex_lock(&fake.lock);
    fake.acks = 0;
    pthread_mutex_unlock(&fake.lock);
}

/* ------------------------------------------------------------ fixture */

static char dir[64];
static char key_path[128], pub_path[128];

static int group_setup(void **state)
{
    (void)state;
    char base[96], err[256], broker_key[128];
    in_test_thread = 1;
    if (keys_init() != 0)
        return -1;
    strcpy(dir, "/tmp/schakel-client-alloc-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(base, sizeof base, "%s/broker", dir);
    if (keys_generate(base, err, sizeof err) != 0)
        return -1;
    snprintf(base, sizeof base, "%s/alice", dir);
    if (keys_generate(base, err, sizeof err) != 0)
        return -1;
    snprintf(broker_key, sizeof broker_key, "%s/broker.key", dir);
    snprintf(key_path, sizeof key_path, "%s/alice.key", dir);
    snprintf(pub_path, sizeof pub_path, "%s/broker.pub", dir);
    keypair_t *broker = keys_load_secret(broker_key, err, sizeof err);
    keypair_t *alice = keys_load_secret(key_path, err, sizeof err);
    if (broker == NULL || alice == NULL)
        return -1;
    memcpy(fake.broker_curve_sk, broker->curve_sk, 32);
    memcpy(fake.admitted_curve_pk, alice->curve_pk, 32);
    memcpy(fake.client_sign_pk, alice->sign_pk, 32);
    keys_destroy(&broker);
    keys_destroy(&alice);
    return fake_start();
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[128];
    zmq_ctx_shutdown(fake.context);
    pthread_join(fake.thread, NULL);
    zmq_ctx_term(fake.context);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------ operations */

/* One operation under test: it runs armed; check_ok judges a success,
 * check_after_failure (unarmed) that the client still works and that
 * nothing the broker sent was lost. */
typedef struct run {
    schakel_client_t *client;
    schakel_delivery_t *delivery;
    schakel_item_result_t results[BATCH];
    uint8_t message_id[16];
    uint64_t backlog;
    char principal[130], partner[130], role[130];
} run_t;

typedef struct operation {
    const char *name;
    int needs_client;      /* connect (unarmed) before the run */
    void (*prepare)(void); /* unarmed, before connecting */
    schakel_status_t (*run)(run_t *run);
    void (*check_ok)(run_t *run);
    void (*check_after_failure)(run_t *run);
} operation_t;

static schakel_status_t connect_client(schakel_client_t **client, schakel_error_t *err)
{
    return schakel_connect(client, fake.endpoint, pub_path, key_path, WAIT_MS, err);
}

static void check_whoami(run_t *run)
{
    assert_string_equal(run->principal, PRINCIPAL);
    assert_string_equal(run->partner, PARTNER);
    assert_string_equal(run->role, ROLE);
}

static void check_usable(run_t *run)
{
    memset(run->principal, 0, sizeof run->principal);
    assert_int_equal(schakel_whoami(run->client, run->principal, run->partner, run->role, WAIT_MS),
                     SCHAKEL_OK);
    check_whoami(run);
}

/* connect */

static schakel_status_t op_connect(run_t *run)
{
    schakel_error_t err;
    schakel_status_t status = connect_client(&run->client, &err);
    assert_int_equal(err.status, status);
    if (status != SCHAKEL_OK)
        assert_true(strlen(err.text) > 0);
    return status;
}

static void op_connect_failed(run_t *run)
{
    assert_null(run->client); /* nothing half-made is handed out */
}

/* publish of a batch */

static schakel_signal_t batch[BATCH];

static void fill_batch(void)
{
    static const char *const recipients[] = {"riec", "gemeente"};
    for (size_t i = 0; i < BATCH; i++) {
        schakel_signal_t signal = {0};
        signal.kind = i % 2 ? "woonfraude" : "hennepkwekerij";
        signal.theme = i % 2 ? "woonfraude" : "ondermijning";
        signal.area = "BU09350101";
        signal.postcode = "6211AB";
        signal.house_number = (uint32_t)(10 + i);
        signal.subject = "pseudo-4f9a2c71";
        signal.grounds = "Stroomverbruik verdubbeld en ramen afgeplakt";
        signal.severity = SCHAKEL_SEVERITY_MEDIUM;
        signal.observed_at = (int64_t)time(NULL) - 3600;
        signal.summary = "Vermoeden hennepkwekerij";
        signal.recipients = recipients;
        signal.n_recipients = 2;
        batch[i] = signal;
    }
}

static schakel_status_t op_publish(run_t *run)
{
    memset(run->results, 0, sizeof run->results);
    return schakel_publish(run->client, NULL, batch, BATCH, NULL, run->message_id, run->results,
                           NULL, WAIT_MS);
}

static void op_publish_ok(run_t *run)
{
    for (size_t i = 0; i < BATCH; i++) {
        assert_int_equal(run->results[i].seq, 100 + i);
        assert_int_equal(run->results[i].recipients, 2);
    }
    pthread_mutex_lock(&fake.lock);
    int publishes_bad = fake.publishes_bad;
    pthread_mutex_unlock(&fake.lock);
    assert_int_equal(publishes_bad, 0);
}

static schakel_status_t op_publish_retry(run_t *run)
{
    memset(run->results, 0, sizeof run->results);
    return schakel_publish(run->client, NULL, batch, BATCH, run->message_id, NULL, run->results,
                           NULL, WAIT_MS);
}

static void op_publish_failed(run_t *run)
{
    for (size_t i = 0; i < BATCH; i++)
        assert_int_equal(run->results[i].seq, 0); /* nothing reported as accepted */
    check_usable(run);
    /* retrying with the same message id works */
    assert_int_equal(op_publish_retry(run), SCHAKEL_OK);
    op_publish_ok(run);
}

/* receive + ack */

static void check_delivery(const schakel_delivery_t *d)
{
    assert_non_null(d);
    assert_int_equal(d->seq, DELIVERED_SEQ);
    assert_string_equal(d->sender, "woco-servatius/meldingen");
    assert_string_equal(d->rule_id, "woco-ondermijning");
    assert_string_equal(d->kind, "hennepkwekerij");
    assert_string_equal(d->theme, "ondermijning");
    assert_string_equal(d->area, "BU09350101");
    assert_string_equal(d->postcode, "6211AB");
    assert_int_equal(d->house_number, 12);
    assert_int_equal(d->n_recipients, 2);
    assert_string_equal(d->recipients[1], "riec");
}

static schakel_status_t op_receive_ack(run_t *run)
{
    schakel_status_t status = schakel_receive(run->client, &run->delivery, WAIT_MS);
    if (status != SCHAKEL_OK) {
        assert_null(run->delivery);
        return status;
    }
    return schakel_ack(run->client, run->delivery->seq);
}

static void check_delivery_acked(run_t *run)
{
    /* the Heartbeat round trip comes after the Ack on the same connection */
    assert_int_equal(schakel_backlog(run->client, &run->backlog, WAIT_MS), SCHAKEL_OK);
    pthread_mutex_lock(&fake.lock);
    int delivery_owed = fake.delivery_owed;
    size_t acks = fake.acks;
    pthread_mutex_unlock(&fake.lock);
    assert_int_equal(delivery_owed, 0);
    assert_int_equal(acks, 1);
}

static void op_receive_ack_ok(run_t *run)
{
    check_delivery(run->delivery);
    schakel_delivery_free(&run->delivery);
    check_delivery_acked(run);
}

/* The delivery was not lost: it is received now (it stayed queued, or
 * held undecoded, or the owed Flow brings it), or it was, and the ack can
 * be sent again. */
static void op_receive_ack_failed(run_t *run)
{
    if (run->delivery == NULL)
        assert_int_equal(schakel_receive(run->client, &run->delivery, WAIT_MS), SCHAKEL_OK);
    check_delivery(run->delivery);
    assert_int_equal(schakel_ack(run->client, run->delivery->seq), SCHAKEL_OK);
    schakel_delivery_free(&run->delivery);
    check_delivery_acked(run);
}

/* a delivery that cannot be read (PROTOCOL.md 7.11): queued by its seq,
 * reported by schakel_receive as SCHAKEL_ERR_PROTOCOL naming the seq
 * (taken as success here); short of memory to keep it, held and reported
 * by the next call, never lost */

static schakel_status_t op_receive_unreadable(run_t *run)
{
    schakel_status_t status = schakel_receive(run->client, &run->delivery, WAIT_MS);
    assert_null(run->delivery);
    if (status == SCHAKEL_ERR_PROTOCOL && schakel_undecodable_seq(run->client) == DELIVERED_SEQ)
        return SCHAKEL_OK;
    return status;
}

static void check_unreadable_dropped(run_t *run)
{
    assert_int_equal(schakel_ack(run->client, DELIVERED_SEQ), SCHAKEL_OK);
    check_delivery_acked(run);
}

static void op_receive_unreadable_failed(run_t *run)
{
    assert_int_equal(op_receive_unreadable(run), SCHAKEL_OK);
    check_unreadable_dropped(run);
}

/* bulk ack */

static schakel_status_t op_ack_many(run_t *run)
{
    static uint64_t seqs[ACK_MANY];
    for (size_t i = 0; i < ACK_MANY; i++)
        seqs[i] = 1000 + i;
    return schakel_ack_many(run->client, seqs, ACK_MANY);
}

static void op_ack_many_ok(run_t *run)
{
    assert_int_equal(schakel_backlog(run->client, &run->backlog, WAIT_MS), SCHAKEL_OK);
    pthread_mutex_lock(&fake.lock);
    size_t acks = fake.acks;
    pthread_mutex_unlock(&fake.lock);
    assert_int_equal(acks, ACK_MANY);
}

static void op_ack_many_failed(run_t *run)
{
    assert_non_null(strstr(schakel_last_error(run->client)->text, "seqs were acked before"));
    check_usable(run);
    pthread_mutex_lock(&fake.lock);
    size_t acks = fake.acks;
    fake.acks = 0;
    pthread_mutex_unlock(&fake.lock);
    assert_true(acks < ACK_MANY);
    assert_int_equal(op_ack_many(run), SCHAKEL_OK);
    op_ack_many_ok(run);
}

/* backlog and whoami */

static schakel_status_t op_backlog(run_t *run)
{
    run->backlog = 0;
    return schakel_backlog(run->client, &run->backlog, WAIT_MS);
}

static void op_backlog_ok(run_t *run)
{
    assert_int_equal(run->backlog, BACKLOG);
}

static void op_backlog_failed(run_t *run)
{
    assert_int_equal(run->backlog, 0); /* untouched */
    check_usable(run);
    assert_int_equal(op_backlog(run), SCHAKEL_OK);
    op_backlog_ok(run);
}

static schakel_status_t op_whoami(run_t *run)
{
    memset(run->principal, 0, sizeof run->principal);
    memset(run->partner, 0, sizeof run->partner);
    memset(run->role, 0, sizeof run->role);
    return schakel_whoami(run->client, run->principal, run->partner, run->role, WAIT_MS);
}

static void op_whoami_failed(run_t *run)
{
    assert_string_equal(run->principal, ""); /* untouched */
    check_usable(run);
}

/* close */

static schakel_status_t op_close(run_t *run)
{
    schakel_close(&run->client);
    assert_null(run->client);
    return SCHAKEL_OK;
}

static void op_close_ok(run_t *run)
{
    assert_null(run->client);
}

static void op_close_failed(run_t *run)
{
    (void)run;
    fail_msg("schakel_close allocated: closing must not be able to fail");
}

/* ------------------------------------------------------------ the loop */

/* Runs op with a failure at allocation 1, 2, 3, ... until a run makes fewer
 * allocations than that. Returns the number of allocations of that last
 * run, in which none failed. */
static size_t fail_each_allocation(const operation_t *op)
{
    for (size_t n = 1; n < MAX_RUNS; n++) {
        run_t run;
        memset(&run, 0, sizeof run);
        if (op->prepare != NULL)
            op->prepare();
        track_start();
        if (op->needs_client)
            assert_int_equal(connect_client(&run.client, NULL), SCHAKEL_OK);
        alloc_arm(n);
        schakel_status_t status = op->run(&run);
        int failed = alloc_disarm();
        if (failed) {
            if (status == SCHAKEL_OK)
                fail_msg("%s: allocation %zu failed, yet it reported success", op->name, n);
            if (status != SCHAKEL_ERR_NOMEM)
                fail_msg("%s: allocation %zu failed: status %d, not NOMEM", op->name, n, status);
            op->check_after_failure(&run);
        } else {
            if (status != SCHAKEL_OK)
                fail_msg("%s: no allocation failed, yet: %s", op->name,
                         schakel_last_error(run.client)->text);
            op->check_ok(&run);
        }
        schakel_delivery_free(&run.delivery);
        schakel_close(&run.client);
        size_t leaked = track_stop();
        if (leaked != 0)
            fail_msg("%s: %zu blocks leaked when allocation %zu failed", op->name, leaked, n);
        if (!failed) {
            print_message("%s: %zu allocations, each failed in turn\n", op->name, alloc_calls);
            return alloc_calls;
        }
    }
    fail_msg("%s: still allocating after %u runs", op->name, MAX_RUNS);
    return 0;
}

static void test_connect(void **state)
{
    (void)state;
    const operation_t op = {"connect", 0, NULL, op_connect, check_usable, op_connect_failed};
    /* the key pair, the delivery queue, a Heartbeat out and its answer in */
    assert_true(fail_each_allocation(&op) >= 4);
}

static void test_publish_batch(void **state)
{
    (void)state;
    const operation_t op = {"publish", 1, fill_batch, op_publish, op_publish_ok, op_publish_failed};
    /* BATCH items, the item list, the frame, and the Accepted decoded */
    assert_true(fail_each_allocation(&op) >= BATCH + 3);
}

static void test_receive_and_ack(void **state)
{
    (void)state;
    const operation_t op = {"receive+ack",     1,
                            fake_owe_delivery, op_receive_ack,
                            op_receive_ack_ok, op_receive_ack_failed};
    /* Flow, Deliver decoded, the delivery's fields, Ack */
    assert_true(fail_each_allocation(&op) >= 10);
}

static void test_receive_unreadable(void **state)
{
    (void)state;
    const operation_t op = {"receive unreadable",     1,
                            fake_owe_unreadable,      op_receive_unreadable,
                            check_unreadable_dropped, op_receive_unreadable_failed};
    /* Flow, the Deliver's unpacking, its text */
    assert_true(fail_each_allocation(&op) >= 3);
}

static void test_ack_many(void **state)
{
    (void)state;
    const operation_t op = {"ack_many",        1, fake_forget_acks, op_ack_many, op_ack_many_ok,
                            op_ack_many_failed};
    assert_int_equal(fail_each_allocation(&op), 3); /* one per Ack frame */
}

static void test_backlog(void **state)
{
    (void)state;
    const operation_t op = {"backlog", 1, NULL, op_backlog, op_backlog_ok, op_backlog_failed};
    assert_true(fail_each_allocation(&op) >= 2); /* the Heartbeat out, its answer in */
}

static void test_whoami(void **state)
{
    (void)state;
    const operation_t op = {"whoami", 1, NULL, op_whoami, check_whoami, op_whoami_failed};
    assert_true(fail_each_allocation(&op) >= 2);
}

/* A received signal's texts are wiped when the library frees them: the
 * decoded frame, the signal unpacked from it, and the copies in the
 * schakel_delivery_t (at schakel_delivery_free). Nothing is failed here. */
static void test_received_text_wiped(void **state)
{
    (void)state;
    static const struct {
        const char *text; /* as the fake delivers it */
    } rows[] = {{"Stroomverbruik verdubbeld"},
                {"Convenant RIEC Limburg 2023, art. 6"},
                {"woco-servatius/meldingen"}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        run_t run;
        memset(&run, 0, sizeof run);
        fake_owe_delivery();
        assert_int_equal(connect_client(&run.client, NULL), SCHAKEL_OK);
        watched_hits = 0;
        n_watched = 0;
        watch_overflow = 0;
        watched_text = rows[i].text;
        assert_int_equal(op_receive_ack(&run), SCHAKEL_OK);
        assert_non_null(run.delivery);
        schakel_delivery_free(&run.delivery);
        watched_text = NULL;
        check_delivery_acked(&run);
        schakel_close(&run.client);
        assert_false(watch_overflow);
        if (watched_hits != 0)
            fail_msg("%zu freed blocks still held \"%s\"", watched_hits, rows[i].text);
    }
}

static void test_close(void **state)
{
    (void)state;
    const operation_t op = {"close", 1, NULL, op_close, op_close_ok, op_close_failed};
    assert_int_equal(fail_each_allocation(&op), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect),
        cmocka_unit_test(test_publish_batch),
        cmocka_unit_test(test_receive_and_ack),
        cmocka_unit_test(test_receive_unreadable),
        cmocka_unit_test(test_ack_many),
        cmocka_unit_test(test_backlog),
        cmocka_unit_test(test_whoami),
        cmocka_unit_test(test_close),
        cmocka_unit_test(test_received_text_wiped),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
