/*
 * log.h — one line per event, key=value, to stderr (journald picks it up).
 *
 * Values are quoted when they contain spaces or quotes; control characters
 * are escaped, so a hostile string can never forge a second log line.
 * Message contents (summaries, grounds, subjects, addresses) and keys never
 * reach a log line: callers pass ids and metadata only.
 */
#ifndef SCHAKEL_LOG_H
#define SCHAKEL_LOG_H

typedef enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } log_level_t;

/* Minimum level written (default LOG_INFO). */
void log_set_level(log_level_t level);

/* Whether events of this level are written: callers that format values
 * only for a log line (per delivery, say) ask first. */
int log_enabled(log_level_t level);

/* log_event(LOG_INFO, "publish.accepted", "principal", p, "items", "3", NULL):
 * an event name then key/value string pairs, NULL-terminated. A NULL value
 * is written as "-". */
void log_event(log_level_t level, const char *event, ...) __attribute__((sentinel));

#endif
