/* test_term.c - the progress line (core/term.h) on a real pseudo-terminal:
 * drawn only on a terminal, at most CM_TERM_PROGRESS_HZ redraws a second,
 * erased at the end, and kept off the log's lines. */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "clock.h"
#include "log.h"
#include "term.h"

static char got[1 << 16];
static size_t got_len;

/* Read what is waiting on the pty's master (non-blocking). */
static void drain(int master)
{
    ssize_t n;
    while (got_len < sizeof got - 1 && (n = read(master, got + got_len, sizeof got - 1 - got_len)) > 0)
        got_len += (size_t)n;
    got[got_len] = '\0';
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

int main(void)
{
    int saved = dup(2), master = -1, slave = -1, pipefd[2];
    int off_pipe, on_pty, first_drawn, failed_shown, log_clean, redrawn, erased_last;
    size_t draws = 0;
    double t0, elapsed;
    char *p;

    /* a pipe: never drawn */
    CHECK(pipe(pipefd) == 0);
    dup2(pipefd[1], 2);
    off_pipe = cm_term_progress_enable(1);
    cm_term_progress("loading", 1, 2, 0);
    cm_term_progress_clear();
    dup2(saved, 2);
    close(pipefd[1]);
    CHECK(off_pipe == 0);
    CHECK(read(pipefd[0], got, sizeof got) == 0); /* nothing was written */
    close(pipefd[0]);

    /* a pseudo-terminal as stderr */
    master = posix_openpt(O_RDWR | O_NOCTTY);
    CHECK(master >= 0);
    if (master < 0) return CHECK_DONE();
    CHECK(grantpt(master) == 0 && unlockpt(master) == 0);
    slave = open(ptsname(master), O_RDWR | O_NOCTTY);
    CHECK(slave >= 0);
    if (slave < 0) return CHECK_DONE();
    fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
    dup2(slave, 2);
    on_pty = cm_term_progress_enable(1);

    cm_term_progress("loading certificates", 0, 100000, 0);
    drain(master);
    first_drawn = strncmp(got, "\rloading certificates 0/100000 (0%), 0s\033[K", got_len) == 0 && got_len > 0;

    /* updates as fast as they come for 0.35 s: at most 10 redraws a second */
    got_len = 0;
    t0 = cm_clock_monotonic();
    for (unsigned long i = 1; (elapsed = cm_clock_monotonic() - t0) < 0.35; i++) {
        cm_term_progress("loading certificates", i % 100000, 100000, i > 5 ? 3 : 0);
        drain(master);
    }
    draws = count(got, "\rloading certificates ");
    failed_shown = strstr(got, ", 3 failed, ") != NULL;

    /* a log line meanwhile: the progress line is erased first, redrawn after */
    got_len = 0;
    cm_log(CM_LOG_INFO, "probe", "k", "v", NULL);
    drain(master);
    p = strstr(got, "ts=");
    log_clean = p && p >= got + 4 && strncmp(p - 4, "\r\033[K", 4) == 0 && strstr(p, "event=probe k=v") != NULL;
    redrawn = p && strstr(p, "\rloading certificates ") != NULL;

    /* the end of the pass: erased */
    got_len = 0;
    cm_term_progress_clear();
    drain(master);
    erased_last = got_len == 4 && memcmp(got, "\r\033[K", 4) == 0;

    /* after clear, nothing is redrawn around a log line */
    got_len = 0;
    cm_log(CM_LOG_INFO, "probe2", NULL);
    drain(master);

    dup2(saved, 2);
    CHECK(on_pty == 1);
    CHECK(first_drawn);
    fprintf(stderr, "%zu redraws in %.2f s\n", draws, elapsed);
    CHECK(draws >= 1); /* a stalled machine may leave room for one only */
    CHECK(draws <= (size_t)(elapsed * CM_TERM_PROGRESS_HZ) + 1);
    CHECK(failed_shown);
    CHECK(log_clean);
    CHECK(redrawn);
    CHECK(erased_last);
    CHECK(strstr(got, "event=probe2") != NULL && strchr(got, '\033') == NULL);

    cm_term_progress_enable(0);
    close(slave);
    close(master);
    close(saved);
    return CHECK_DONE();
}
