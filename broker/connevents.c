/*
 * connevents.c — a socket's connection events (see connevents.h). Trusts
 * libzmq's event messages: a first frame of the 16-bit event id and a
 * 32-bit value (the socket number for the events asked), then the
 * endpoint, which is read and dropped. Failures to monitor are logged,
 * never fatal: the callers work without the events, less promptly.
 */
#include "connevents.h"

#include <string.h>

#include <zmq.h>

#include "log.h"

void *connevents_open(void *ctx, void *socket, const char *endpoint, int mask, int hwm,
                      const char *log_name)
{
    void *events = NULL;
    if (zmq_socket_monitor(socket, endpoint, mask) != 0 ||
        (events = zmq_socket(ctx, ZMQ_PAIR)) == NULL ||
        zmq_setsockopt(events, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
        zmq_connect(events, endpoint) != 0) {
        log_event(LOG_WARN, log_name, "error", zmq_strerror(zmq_errno()), NULL);
        if (events != NULL)
            zmq_close(events);
        (void)zmq_socket_monitor(socket, NULL, 0);
        return NULL;
    }
    return events;
}

int connevents_next(void *events, uint16_t *id, int32_t *fd)
{
    if (events == NULL)
        return 0;
    zmq_msg_t event;
    zmq_msg_init(&event);
    if (zmq_msg_recv(&event, events, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&event);
        return 0;
    }
    int more = zmq_msg_more(&event);
    *id = 0;
    *fd = -1;
    if (zmq_msg_size(&event) >= 6) {
        memcpy(id, zmq_msg_data(&event), sizeof *id);
        memcpy(fd, (const uint8_t *)zmq_msg_data(&event) + 2, sizeof *fd);
    }
    zmq_msg_close(&event);
    if (more) { /* the endpoint */
        zmq_msg_t endpoint;
        zmq_msg_init(&endpoint);
        (void)zmq_msg_recv(&endpoint, events, ZMQ_DONTWAIT);
        zmq_msg_close(&endpoint);
    }
    return 1;
}

void connevents_close(void *socket, void **events)
{
    if (events == NULL || *events == NULL)
        return;
    (void)zmq_socket_monitor(socket, NULL, 0);
    zmq_close(*events);
    *events = NULL;
}
