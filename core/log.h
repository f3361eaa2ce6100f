/* log.h - structured logging: one event a line.
 *
 *   ts=2026-11-25T11:28:31Z level=info event=renewed name=example.com
 *   {"ts":"2026-11-25T11:28:31Z","level":"info","event":"renewed","name":"example.com"}
 *
 * Event names are stable identifiers tests and operators match on.
 */
#ifndef CM_LOG_H
#define CM_LOG_H

#include <stddef.h>

enum cm_log_level { CM_LOG_DEBUG = 0, CM_LOG_INFO, CM_LOG_WARN, CM_LOG_ERROR };

enum cm_log_format { CM_LOG_TEXT = 0, CM_LOG_JSON };

/* Emit one event with n key/value pairs (keys[i], values[i]); NULL values are skipped. */
void cm_log_event(enum cm_log_level level, const char *event, size_t n,
                  const char *const *keys, const char *const *values);

/* Convenience: key, value, key, value, ..., NULL. */
void cm_log(enum cm_log_level level, const char *event, ...);

void cm_log_set_format(enum cm_log_format format);
void cm_log_set_level(enum cm_log_level level);
/* 1 when a line at level would be written or captured: callers skip building
 * fields nobody reads (a debug line a staple at start-up). */
int cm_log_wants(enum cm_log_level level);
/* Where lines go (default 2, stderr). */
void cm_log_set_fd(int fd);

/* Parse "debug|info|warn|error"; returns -1 when unknown. */
int cm_log_level_parse(const char *name);
const char *cm_log_level_name(enum cm_log_level level);

/* Capture: while on, lines are also kept in memory (bounded) for tests. */
void cm_log_capture(int on);
/* Write lines to the log fd (default on); off, lines are only counted and captured. */
void cm_log_set_echo(int on);
/* Hand over the captured lines (caller frees each and the array); clears them. */
char **cm_log_capture_take(size_t *count);

/* Lines emitted per level since start (for alerts and tests). */
unsigned long cm_log_count(enum cm_log_level level);

#endif
