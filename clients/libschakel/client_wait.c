/*
 * client_wait.c — libschakel's wait loop: what is sent to the broker
 * (requests, Heartbeats, Flow, what a reconnect makes owed), the handshake
 * monitor's events, and the loop that polls for them and for frames in
 * (client_frames.c pairs those with the request that waits for them).
 * Trusts nothing the broker sends. Never aborts the host: every failure
 * is a schakel_status_t with the last error filled.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#include "client_internal.h"
#include "plural.h"
#include "client_state.h"
#include "wire.h"

/* Milliseconds of the wall clock (a Heartbeat's time). */
static int64_t client_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ sending */

/* Send encoded bytes without blocking. With ZMQ_IMMEDIATE off the DEALER
 * queues while (re)connecting, so EAGAIN means the send queue
 * (SCHAKEL_SNDHWM messages) is full, or libzmq abandoned the connection. */
schakel_status_t client_send_bytes(schakel_client_t *client, const uint8_t *buf, size_t len,
                                   const char *what)
{
    if (client->socket == NULL && client_replace_socket(client) != SCHAKEL_OK)
        return client->last_error.status;
    int rc = zmq_send(client->socket, buf, len, ZMQ_DONTWAIT);
    int saved_errno = errno;
    /* A live connection keeps its queue while reconnecting, so a full queue
     * right after an unannounced drop is an abandoned connection. */
    if (rc == -1 && saved_errno == EAGAIN && client->retry_awaited_since != 0 &&
        client_replace_socket(client) == SCHAKEL_OK) {
        rc = zmq_send(client->socket, buf, len, ZMQ_DONTWAIT);
        saved_errno = errno;
    }
    if (rc == -1 && saved_errno == EAGAIN)
        return client_fail(client, SCHAKEL_ERR_TIMEOUT,
                           "cannot send %s: the queue to broker %s is full (broker unreachable?)",
                           what, client->endpoint);
    if (rc == -1)
        return client_fail(client, SCHAKEL_ERR_INTERNAL, "cannot send %s: %s", what,
                           zmq_strerror(saved_errno));
    client->last_send_ms = client_now_ms();
    return SCHAKEL_OK;
}

static schakel_status_t client_send(schakel_client_t *client, Schakel__Frame *frame,
                                    const char *what)
{
    size_t len = 0;
    uint8_t *buf = wire_encode_frame(frame, &len);
    if (buf == NULL)
        return client_fail(client, SCHAKEL_ERR_NOMEM, "out of memory encoding %s", what);
    schakel_status_t status = client_send_bytes(client, buf, len, what);
    free(buf);
    return status;
}

schakel_status_t client_send_heartbeat(schakel_client_t *client)
{
    Schakel__Heartbeat heartbeat = SCHAKEL__HEARTBEAT__INIT;
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    uint8_t id[CLIENT_HEARTBEAT_ID_BYTES];
    uint64_t order = client->requests_sent + 1;
    int named = !client->heartbeat_ids_refused;
    client_heartbeat_id(order, id);
    heartbeat.has_time = 1;
    heartbeat.time = client_wall_ms();
    heartbeat.has_store_epoch = client->epoch_asking; /* empty: asks for it */
    heartbeat.has_heartbeat_id = named;
    heartbeat.heartbeat_id.data = id;
    heartbeat.heartbeat_id.len = sizeof id;
    frame.body_case = SCHAKEL__FRAME__BODY_HEARTBEAT;
    frame.heartbeat = &heartbeat;
    schakel_status_t status = client_send(client, &frame, "Heartbeat");
    if (status != SCHAKEL_OK)
        return status;
    if (client->heartbeats_pending == CLIENT_HEARTBEATS_MAX) {
        memmove(&client->heartbeats[0], &client->heartbeats[1],
                (CLIENT_HEARTBEATS_MAX - 1) * sizeof client->heartbeats[0]);
        client->heartbeats_pending--;
    }
    client->heartbeats[client->heartbeats_pending++] = (client_heartbeat_t){
        order, named, client->epoch_asking, client->connected, client->sockets_made};
    client->requests_sent = order;
    return SCHAKEL_OK;
}

static schakel_status_t client_send_flow(schakel_client_t *client)
{
    Schakel__Flow flow = SCHAKEL__FLOW__INIT;
    Schakel__Frame frame = SCHAKEL__FRAME__INIT;
    flow.has_window = 1;
    flow.window = client->window;
    frame.body_case = SCHAKEL__FRAME__BODY_FLOW;
    frame.flow = &flow;
    return client_send(client, &frame, "Flow");
}

/* Send the Flow this connection is owed. A Flow that could not be sent
 * stays owed and is tried again by the next wait: a receiver whose Flow was
 * lost would otherwise never be pushed to until the next reconnect. */
schakel_status_t client_send_owed_flow(schakel_client_t *client)
{
    if (!client->flow_owed)
        return SCHAKEL_OK;
    schakel_status_t status = client_send_flow(client);
    if (status == SCHAKEL_OK)
        client->flow_owed = 0;
    return status;
}

/* A new connection is up: what was given up on while a connection was up
 * went with it; what was sent while none was goes out on this one. */
static void client_gave_up_reconnected(schakel_client_t *client)
{
    size_t keep = 0;
    for (size_t i = 0; i < client->n_gave_up; i++)
        if (!client->gave_up[i].sent_connected) {
            client->gave_up[keep] = client->gave_up[i];
            client->gave_up[keep++].sent_connected = 1;
        }
    client->n_gave_up = keep;
}

/* ------------------------------------------------------------------ events */

/* Read one socket event from the monitor (two frames: 6 bytes of event and
 * value, then the endpoint). Returns 0, or -1 if none is waiting. */
static int client_read_event(void *monitor, uint16_t *event, int32_t *value)
{
    zmq_msg_t part;
    zmq_msg_init(&part);
    if (zmq_msg_recv(&part, monitor, ZMQ_DONTWAIT) == -1) {
        zmq_msg_close(&part);
        return -1;
    }
    int ok = zmq_msg_size(&part) >= 6;
    if (ok) {
        const uint8_t *data = zmq_msg_data(&part);
        uint32_t raw_value;
        memcpy(event, data, sizeof *event);
        memcpy(&raw_value, data + 2, sizeof raw_value);
        *value = (int32_t)raw_value;
    }
    while (zmq_msg_more(&part)) {
        zmq_msg_close(&part);
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, monitor, ZMQ_DONTWAIT) == -1)
            break;
    }
    zmq_msg_close(&part);
    return ok ? 0 : -1;
}

/* Send again each publish in flight whose resend is owed (after a
 * reconnect), oldest first; one that cannot be queued now stays owed, and
 * so do those after it, which keeps them in order. */
schakel_status_t client_send_owed_publishes(schakel_client_t *client)
{
    for (size_t i = 0; i < client->flight.count; i++) {
        inflight_entry_t *entry = &client->flight.entries[i];
        if (entry->answer != NULL)
            entry->resend_owed = 0; /* answered meanwhile: nothing to send */
        if (!entry->resend_owed)
            continue;
        schakel_status_t status =
            client_send_bytes(client, entry->frame, entry->frame_len, "Publish");
        if (status != SCHAKEL_OK)
            return status;
        entry->resend_owed = 0;
        entry->order = ++client->requests_sent;
        entry->sent_connected = client->connected;
    }
    return SCHAKEL_OK;
}

/* Send again each Ack the broker refused RATE_LIMITED whose pause is
 * over (acksent.h), oldest first; one that cannot be queued now stays
 * owed, and is tried again by the next wait. */
schakel_status_t client_send_owed_acks(schakel_client_t *client, int64_t now)
{
    acksent_entry_t *entry;
    while ((entry = acksent_due(&client->acks_sent, now)) != NULL) {
        schakel_status_t status = client_send_bytes(client, entry->frame, entry->frame_len, "Ack");
        if (status != SCHAKEL_OK)
            return status;
        acksent_resent(&client->acks_sent, entry, ++client->requests_sent);
    }
    return SCHAKEL_OK;
}

/* A new connection is up: Heartbeats that went out on the lost one are
 * owed no answer any more (one may still be read, PROTOCOL 7.10: it names
 * a Heartbeat not owed one, and is ignored), and the one a wait is for is
 * asked again. Those sent while there was none wait in the socket's queue
 * and go out on this one: they stay owed, and are answered (or refused, by
 * a broker from before heartbeat_id, whose refusals would otherwise be
 * taken for those of the Heartbeats asked after them). */
static void client_heartbeats_reconnected(schakel_client_t *client, client_wait_t *wait)
{
    size_t kept = 0;
    int last_lost = 0; /* a wait's Heartbeat is the last one sent */
    for (size_t i = 0; i < client->heartbeats_pending; i++) {
        client_heartbeat_t heartbeat = client->heartbeats[i];
        if (!heartbeat.sent_connected && heartbeat.socket_no == client->sockets_made) {
            heartbeat.sent_connected = 1; /* in the queue: it goes out now */
            client->heartbeats[kept++] = heartbeat;
        } else {
            last_lost = i + 1 == client->heartbeats_pending;
        }
    }
    if (wait->kind == CLIENT_WAIT_HEARTBEAT && last_lost)
        wait->heartbeat_owed = 1;
    client->heartbeats_pending = kept;
}

/* A new connection is up: the broker keeps no session state across
 * connections, so our window is owed again, and so is a question whose
 * answer may have been lost with the old connection. A publish is sent
 * again as is: the broker answers a repeated message id with the original
 * answer. Nothing is sent here: the wait sends what is owed once every
 * event read with this one is handled (events are read late, after calls
 * that did not read them, and several reconnects then mean one copy). */
static void client_on_handshake(schakel_client_t *client, client_wait_t *wait)
{
    client->handshakes++;
    client->connected = 1;
    client->handshake_failures = 0;
    if (client->handshakes > 1) {
        client->flow_owed = client->subscribed;
        client_gave_up_reconnected(client);
        /* What went out on the lost connection is sent again; what was
         * sent while there was none waits in the socket's queue and goes
         * out on this one (sending it again would make two copies, and a
         * second, stale answer). */
        for (size_t i = 0; i < client->flight.count; i++) {
            inflight_entry_t *entry = &client->flight.entries[i];
            if (entry->answer != NULL || entry->resend_owed)
                continue;
            if (entry->sent_connected)
                entry->resend_owed = 1;
            else
                entry->sent_connected = 1;
        }
        /* A publish or case command is answered once whatever the number of
         * copies (idempotent by id); a query has no effect to repeat. */
        if ((wait->kind == CLIENT_WAIT_ANSWER || wait->kind == CLIENT_WAIT_VIEW) &&
            wait->request != NULL && !wait->resend_owed) {
            if (!wait->sent_connected && wait->socket_no == client->sockets_made)
                wait->sent_connected = 1; /* in the queue: it goes out now */
            else
                wait->resend_owed = 1;
        }
        client_heartbeats_reconnected(client, wait);
        client->heartbeat_ids_refused = 0; /* perhaps a newer broker */
    }
    if (wait->kind == CLIENT_WAIT_HANDSHAKE)
        client_wait_finish(wait, SCHAKEL_OK);
}

static void client_on_event(schakel_client_t *client, uint16_t event, int32_t value,
                            client_wait_t *wait)
{
    switch (event) {
    case ZMQ_EVENT_CONNECTED:
        client->tcp_connects++;
        client->retry_awaited_since = 0;
        break;
    case ZMQ_EVENT_CONNECT_DELAYED:
    case ZMQ_EVENT_CONNECT_RETRIED:
        client->retry_awaited_since = 0;
        break;
    case ZMQ_EVENT_DISCONNECTED:
        if (client->connected)
            client->drops++;
        else
            client->handshake_failures++; /* closed before the handshake completed */
        client->connected = 0;
        client->retry_awaited_since = client_now_ms() | 1; /* never 0 */
        break;
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
        client_on_handshake(client, wait);
        break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        client_fail(client, SCHAKEL_ERR_AUTH,
                    "broker %s refused our key (status %d): is this key registered in the "
                    "policy?",
                    client->endpoint, (int)value);
        client_wait_finish(wait, SCHAKEL_ERR_AUTH);
        break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
        client->handshake_failures++;
        break;
    default:
        break;
    }
}

static void client_drain_events(schakel_client_t *client, client_wait_t *wait)
{
    uint16_t event;
    int32_t value;
    while (client_read_event(client->monitor, &event, &value) == 0)
        client_on_event(client, event, value, wait);
}

/* ------------------------------------------------------------------ waiting */

/* libzmq reconnects a lost connection and says so at once (CONNECT_RETRIED),
 * except after a protocol error on an established connection (a frame over
 * ZMQ_MAXMSGSIZE, a frame failing CURVE authentication): then it abandons
 * the connection for good, silently, and every send fails with EAGAIN. A
 * drop without that word for CLIENT_RETRY_GRACE_MS is taken as abandoned,
 * and the socket is replaced. */
static int client_connection_abandoned(const schakel_client_t *client, int64_t now)
{
    return client->retry_awaited_since != 0 &&
           now - client->retry_awaited_since >= CLIENT_RETRY_GRACE_MS;
}

/* The answered publish a wait for `id` (NULL: any) would hand out. */
inflight_entry_t *client_flight_ready(schakel_client_t *client, const uint8_t *id)
{
    if (id == NULL)
        return inflight_first_answered(&client->flight);
    inflight_entry_t *entry = inflight_find(&client->flight, id);
    return entry != NULL && entry->answer != NULL ? entry : NULL;
}

/* The request a wait is for, or its Heartbeat, sent again after a
 * reconnect (client_on_handshake); a failure to send ends the wait. */
static void client_send_owed_request(schakel_client_t *client, client_wait_t *wait)
{
    if (wait->resend_owed) {
        if (client_send_bytes(client, wait->request, wait->request_len, wait->what) != SCHAKEL_OK) {
            client_wait_finish(wait, client->last_error.status);
            return;
        }
        wait->resend_owed = 0;
        wait->order = ++client->requests_sent;
        wait->sent_connected = client->connected;
        wait->socket_no = client->sockets_made;
    }
    if (wait->heartbeat_owed) {
        wait->heartbeat_owed = 0;
        if (client_send_heartbeat(client) != SCHAKEL_OK)
            client_wait_finish(wait, client->last_error.status);
    }
}

/* Events that came while no call read them (drops, reconnects), handled
 * before a request goes out: it is then sent knowing the connection it
 * goes out on, and is not taken for one lost with an earlier connection
 * (which would send it again once per reconnect read). What they make
 * owed goes out with the request's own wait. Returns an error a handshake
 * ended in (a refused key), else SCHAKEL_OK. */
schakel_status_t client_catch_up(schakel_client_t *client)
{
    client_wait_t idle = {.kind = CLIENT_WAIT_DELIVERY}; /* waits for nothing of its own */
    if (client->monitor != NULL)
        client_drain_events(client, &idle);
    return idle.done ? idle.status : SCHAKEL_OK;
}

/* What a wait does before it polls: hand out what is queued, replace an
 * abandoned socket, decode a held message, send an owed Flow. */
static void client_wait_chores(schakel_client_t *client, client_wait_t *wait, int64_t now)
{
    if (wait->kind == CLIENT_WAIT_DELIVERY && client->queue.count > 0)
        client_wait_finish(wait, SCHAKEL_OK);
    if (wait->kind == CLIENT_WAIT_PUBLISH && client_flight_ready(client, wait->message_id) != NULL)
        client_wait_finish(wait, SCHAKEL_OK);
    if (!wait->done && client_connection_abandoned(client, now))
        client_drain_events(client, wait); /* the word may have come while no call read it */
    if (!wait->done && (client->socket == NULL || client_connection_abandoned(client, now)) &&
        client_replace_socket(client) != SCHAKEL_OK)
        client_wait_finish(wait, client->last_error.status);
    if (!wait->done && client->holding && !delivery_queue_full(&client->queue))
        client_read_frame(client, wait);
    if (!wait->done) {
        (void)client_send_owed_flow(client);      /* stays owed on failure */
        (void)client_send_owed_publishes(client); /* likewise */
        (void)client_send_owed_acks(client, now); /* likewise */
        client_send_owed_request(client, wait);
    }
}

/* How long the wait may sleep in zmq_poll (-1 = no limit): until its
 * deadline, the moment an unannounced drop counts as abandoned, when a
 * refused Ack is owed again, and, while
 * waiting for a delivery, the next keep-alive Heartbeat (sent here when due,
 * so that the broker keeps the session). */
static int64_t client_wait_sleep_ms(schakel_client_t *client, const client_wait_t *wait,
                                    int64_t deadline, int64_t now)
{
    int64_t sleep_ms = deadline < 0 ? -1 : deadline > now ? deadline - now : 0;
    int64_t wake = -1;
    if (client->retry_awaited_since != 0)
        wake = client->retry_awaited_since + CLIENT_RETRY_GRACE_MS;
    int64_t ack_due = acksent_next_due(&client->acks_sent); /* an Ack owed again */
    if (ack_due >= 0 && (wake < 0 || ack_due < wake))
        wake = ack_due;
    if (wait->kind == CLIENT_WAIT_DELIVERY) {
        int64_t due = client->last_send_ms + SCHAKEL_CLIENT_HEARTBEAT_MS;
        if (now >= due) {
            /* Best-effort keep-alive; none is queued while disconnected,
             * where it would only pile up and answer later questions. */
            if (client->connected)
                (void)client_send_heartbeat(client);
            due = now + SCHAKEL_CLIENT_HEARTBEAT_MS;
        }
        if (wake < 0 || due < wake)
            wake = due;
    }
    if (wake >= 0 && (sleep_ms < 0 || wake - now < sleep_ms))
        sleep_ms = wake > now ? wake - now : 0;
    return sleep_ms;
}

/* Poll the socket and the monitor until the wait is done or the deadline
 * (monotonic ms; -1 = none) passes. Returns the wait's status or TIMEOUT. */
schakel_status_t client_wait(schakel_client_t *client, client_wait_t *wait, int64_t deadline)
{
    int polled = 0; /* poll at least once: a zero timeout still reads what is there */
    for (;;) {
        int64_t now = client_now_ms();
        client_wait_chores(client, wait, now);
        if (wait->done)
            return wait->status;
        if (deadline >= 0 && now >= deadline && polled)
            return SCHAKEL_ERR_TIMEOUT;
        long sleep_ms = (long)client_wait_sleep_ms(client, wait, deadline, now); /* keep-alive */
        polled = 1;
        /* What zmq_poll would find ready, taken without it while frames
         * come in a stream (most of a receiver's waits): the socket's
         * events first, then one frame, as below. Only a wait that finds
         * nothing there polls, and sleeps. */
        if (client->monitor != NULL)
            client_drain_events(client, wait);
        if (!wait->done && client->socket != NULL && !delivery_queue_full(&client->queue) &&
            client_read_frame(client, wait))
            continue;
        if (wait->done)
            continue;
        zmq_pollitem_t items[2] = {
            {client->monitor, 0, ZMQ_POLLIN, 0},
            {client->socket, 0, delivery_queue_full(&client->queue) ? 0 : ZMQ_POLLIN, 0},
        };
        if (zmq_poll(items, 2, sleep_ms) == -1) {
            /* A signal caught by a handler ends a wait without a deadline
             * (a receive that waits without limit), as it ends read(2):
             * its program can stop. poll(2) is never restarted, with or
             * without SA_RESTART, so any caught signal does; a wait with a
             * deadline goes on to it. */
            if (errno == EINTR && deadline < 0) {
                wait->interrupted = 1;
                return SCHAKEL_ERR_TIMEOUT;
            }
            if (errno == EINTR)
                continue;
            return client_fail(client, SCHAKEL_ERR_INTERNAL, "zmq_poll: %s", zmq_strerror(errno));
        }
        if (items[0].revents & ZMQ_POLLIN)
            client_drain_events(client, wait);
        if (!wait->done && (items[1].revents & ZMQ_POLLIN))
            client_read_frame(client, wait);
    }
}

/* Deadline for a timeout in ms; negative timeouts are refused by callers. */
int64_t client_deadline(int timeout_ms)
{
    return client_now_ms() + timeout_ms;
}

/* What else a timed-out wait may owe its silence to, for the error text:
 * a full delivery queue (we stopped reading), connections lost meanwhile
 * (a broker restarting, or one sending frames over our size limit, which
 * libzmq answers by dropping the connection), or no connection at all. */
const char *client_timeout_hint(const schakel_client_t *client, int drops_before, char *buf,
                                size_t len)
{
    int drops = client->drops - drops_before;
    if (delivery_queue_full(&client->queue))
        return " (deliveries are waiting: call schakel_receive)";
    if (drops > 0) {
        snprintf(buf, len,
                 " (the connection dropped %d %s meanwhile: broker restarting, or sending "
                 "frames over %u bytes?)",
                 drops, plural((unsigned long long)drops, "time", "times"),
                 SCHAKEL_MAX_FRAME_BYTES);
        return buf;
    }
    return client->connected ? "" : " (not connected to the broker)";
}

/* One Heartbeat round trip: refreshes principal, partner, role, backlog.
 * A Heartbeat that a broker from before heartbeat_id refused is asked
 * again without it (client_on_rejected). */
schakel_status_t client_heartbeat_round_trip(schakel_client_t *client, int timeout_ms)
{
    int64_t deadline = client_deadline(timeout_ms);
    int drops_before = client->drops;
    char hint[160];
    schakel_status_t status = SCHAKEL_ERR_REFUSED;
    for (int tries = 0; tries < CLIENT_HEARTBEAT_TRIES; tries++) {
        client_wait_t wait = {.kind = CLIENT_WAIT_HEARTBEAT};
        unsigned refusals = client->heartbeat_id_refusals;
        status = client_catch_up(client);
        if (status == SCHAKEL_OK)
            status = client_send_heartbeat(client);
        if (status != SCHAKEL_OK)
            return status;
        status = client_wait(client, &wait, deadline);
        if (status != SCHAKEL_ERR_REFUSED || client->heartbeat_id_refusals == refusals)
            break;
    }
    if (status == SCHAKEL_ERR_TIMEOUT)
        return client_fail(client, SCHAKEL_ERR_TIMEOUT,
                           "broker %s did not answer a Heartbeat within %d ms%s", client->endpoint,
                           timeout_ms,
                           client_timeout_hint(client, drops_before, hint, sizeof hint));
    return status;
}
