/* term.h - what certmaint writes for a person at a terminal, apart from the
 * log: whether a descriptor is a terminal, and the progress line of a long
 * pass.
 *
 * The progress line is one line on stderr, rewritten in place ("\r", erase
 * to end of line), at most CM_TERM_PROGRESS_HZ times a second, and erased
 * when the pass ends.  It is drawn only once cm_term_progress_enable turned
 * it on and stderr is a terminal, so it never reaches a pipe, a file or the
 * journal.  The log (log.c) writes to stderr too: it erases the line before
 * each log line and redraws it after (cm_term_progress_hide/_show), so the
 * two never mix on one line.
 *
 * One thread (the Lua thread) calls these; nothing here is thread-safe.
 */
#ifndef CM_TERM_H
#define CM_TERM_H

#include <stdint.h>

#define CM_TERM_PROGRESS_HZ 10 /* redraws a second at most */

/* 1 when fd is a terminal, else 0. */
int cm_term_isatty(int fd);

/* Turn the progress line on (on != 0: only if stderr is a terminal) or off
 * (erasing a line being shown).  Returns 1 when it is on. */
int cm_term_progress_enable(int on);

/* Report a pass's progress: label (copied; cut at 64 bytes), done of total
 * items (total 0: unknown), failed of them.  Draws when the line is on and
 * the last draw is at least 1/CM_TERM_PROGRESS_HZ s old (the first update
 * of a pass draws at once); otherwise only remembers the numbers.  Never
 * fails: a write error turns the line off. */
void cm_term_progress(const char *label, uint64_t done, uint64_t total, uint64_t failed);

/* End the pass's line: erase it (when shown).  The next cm_term_progress
 * starts a new pass (its first update draws at once, its time counts from
 * then). */
void cm_term_progress_clear(void);

/* For the log, around each line it writes to fd: when fd is stderr and the
 * line is shown, hide erases it and show redraws it. */
void cm_term_progress_hide(int fd);
void cm_term_progress_show(int fd);

#endif
