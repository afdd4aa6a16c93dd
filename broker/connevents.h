/*
 * connevents.h — the connection events libzmq reports of a socket (its
 * monitor), read by the loop without blocking: each accepted and closed
 * connection by its socket number. The router's (broker.c: sessions and
 * conns.c) and the admin socket's (admin.c: an export whose operator went
 * away). Private to the broker.
 */
#ifndef SCHAKEL_CONNEVENTS_H
#define SCHAKEL_CONNEVENTS_H

#include <stdint.h>

/* A PAIR socket of ctx that receives socket's events of the kinds in mask
 * (ZMQ_EVENT_*) through endpoint (inproc, unique), holding up to hwm
 * messages (two a connection event). NULL when libzmq cannot: logged as
 * the warning log_name with its error, and socket left unmonitored. */
void *connevents_open(void *ctx, void *socket, const char *endpoint, int mask, int hwm,
                      const char *log_name);

/* The next event waiting: 1 with its kind (*id) and socket number (*fd,
 * -1 when the event did not say), 0 when none is waiting or events is
 * NULL. Never blocks. */
int connevents_next(void *events, uint16_t *id, int32_t *fd);

/* Stop monitoring socket and close *events; NULLs it; NULL-safe. */
void connevents_close(void *socket, void **events);

#endif
