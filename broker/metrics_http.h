/*
 * metrics_http.h — the HTTP server under the metrics endpoint: libmicrohttpd
 * on a thread of its own, with a deadline on every connection.
 *
 * libmicrohttpd's CONNECTION_TIMEOUT counts from a connection's last byte:
 * a client that trickles its request a byte a second would hold its slot
 * for good, and enough of them would keep every scrape out. Here a
 * connection lives at most METRICS_HTTP_DEADLINE_MS from its accept,
 * whatever it sends, and when more than METRICS_HTTP_CONNECTIONS wait for
 * their request at once, the oldest of them is closed to make room.
 */
#ifndef SCHAKEL_METRICS_HTTP_H
#define SCHAKEL_METRICS_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <microhttpd.h>

#define METRICS_HTTP_DEADLINE_MS 3000 /* from accept to the end of its answer */
#define METRICS_HTTP_CONNECTIONS 64u  /* waiting for their request at once */
/* libmicrohttpd's limit (those being closed included); past it, it stops
 * accepting and new connections wait in the kernel's listen backlog. */
#define METRICS_HTTP_OPEN_MAX (2u * METRICS_HTTP_CONNECTIONS)

typedef struct metrics_http metrics_http_t;

/* Serve on addr (bound exactly; port 0 takes a free one). answer is
 * libmicrohttpd's access handler, called on the HTTP thread with cls; it
 * should call metrics_http_answered first. The thread is created with
 * every signal blocked. Returns NULL with err filled (cannot bind, out of
 * memory or descriptors). */
metrics_http_t *metrics_http_start(const struct sockaddr *addr, MHD_AccessHandlerCallback answer,
                                   void *cls, char *err, size_t errlen);

/* Stop the thread (waits for it: at once, it is woken), close every
 * connection, free; *h = NULL. Safe on NULL. */
void metrics_http_stop(metrics_http_t **h);

/* The port bound. */
unsigned metrics_http_port(const metrics_http_t *h);

/* The request of connection was read whole (from the access handler): it
 * is no longer one to close to make room. */
void metrics_http_answered(struct MHD_Connection *connection);

/* Connections the server of connection closed so far past their deadline,
 * and to make room. From the access handler only (the HTTP thread's own
 * counts; it may run before metrics_http_start has returned). */
typedef struct metrics_http_cuts {
    uint64_t deadline, crowded;
} metrics_http_cuts_t;
metrics_http_cuts_t metrics_http_cut_counts(struct MHD_Connection *connection);

#endif
