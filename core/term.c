/* term.c - the terminal: isatty and the progress line (term.h). */
#include "term.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"

#define LABEL_MAX 64
#define ERASE "\r\033[K" /* to column 0, erase to the end of the line */

static int enabled;      /* on, and stderr is a terminal */
static int shown;        /* the line is on the screen */
static int active;       /* a pass is reporting (between its first update and clear) */
static double started;   /* monotonic time of the pass's first update */
static double drawn_at;  /* monotonic time of the last draw */
static char line[LABEL_MAX + 128];
static size_t line_len;

int cm_term_isatty(int fd) { return isatty(fd) == 1; }

/* Write all of s to stderr; a failure turns the line off (a closed
 * terminal: nothing to show it on). */
static void put(const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(2, s, n);
        if (w <= 0) {
            enabled = shown = 0;
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

static void erase(void)
{
    if (!shown) return;
    put(ERASE, sizeof ERASE - 1);
    shown = 0;
}

static void draw(void)
{
    if (!enabled || line_len == 0) return;
    put("\r", 1);
    put(line, line_len);
    put("\033[K", 3);
    if (enabled) shown = 1;
}

int cm_term_progress_enable(int on)
{
    if (!on) {
        erase();
        enabled = 0;
        return 0;
    }
    enabled = cm_term_isatty(2);
    return enabled;
}

void cm_term_progress(const char *label, uint64_t done, uint64_t total, uint64_t failed)
{
    double now;
    int n;
    char lab[LABEL_MAX + 1];
    if (!enabled) return;
    now = cm_clock_monotonic();
    if (!active) {
        active = 1;
        started = now;
    } else if (now - drawn_at < 1.0 / CM_TERM_PROGRESS_HZ) {
        return;
    }
    snprintf(lab, sizeof lab, "%s", label ? label : "");
    if (total > 0)
        n = snprintf(line, sizeof line, "%s %" PRIu64 "/%" PRIu64 " (%u%%)", lab, done, total,
                     (unsigned)(done >= total ? 100 : done * 100 / total));
    else
        n = snprintf(line, sizeof line, "%s %" PRIu64, lab, done);
    if (n > 0 && (size_t)n < sizeof line && failed > 0)
        n += snprintf(line + n, sizeof line - (size_t)n, ", %" PRIu64 " failed", failed);
    if (n > 0 && (size_t)n < sizeof line)
        n += snprintf(line + n, sizeof line - (size_t)n, ", %.0fs", now - started);
    line_len = (n < 0) ? 0 : ((size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    drawn_at = now;
    draw();
}

void cm_term_progress_clear(void)
{
    erase();
    active = 0;
    line_len = 0;
}

void cm_term_progress_hide(int fd)
{
    if (fd == 2) erase();
}

void cm_term_progress_show(int fd)
{
    if (fd == 2 && active) draw();
}
