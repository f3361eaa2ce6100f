/* log.c - structured log lines, text or JSON. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "rfc3339.h"
#include "term.h"

#define LINE_MAX_BYTES 8192
#define CAPTURE_MAX_LINES 10000

static enum cm_log_format log_format = CM_LOG_TEXT;
static enum cm_log_level log_level = CM_LOG_INFO;
static int log_fd = 2;
static int capture_on;
static int echo_on = 1; /* write lines to log_fd (specs capturing logs turn it off) */
static char **captured;
static size_t captured_n;
static unsigned long counts[4];

struct line {
    char buf[LINE_MAX_BYTES];
    size_t len;
};

static void put(struct line *ln, const char *s, size_t n)
{
    /* Keep 1 byte for '\n' and 1 for NUL; an over-long line is cut, not lost. */
    if (ln->len + n > sizeof ln->buf - 2) n = sizeof ln->buf - 2 - ln->len;
    memcpy(ln->buf + ln->len, s, n);
    ln->len += n;
}

static void puts_(struct line *ln, const char *s) { put(ln, s, strlen(s)); }

static int needs_quotes(const char *v)
{
    if (!*v) return 1;
    for (; *v; v++)
        if (*v == ' ' || *v == '"' || *v == '=' || *v == '\\' || (unsigned char)*v < 0x20) return 1;
    return 0;
}

/* Escape for a quoted text value or a JSON string (same rules suffice). */
static void put_escaped(struct line *ln, const char *v)
{
    char tmp[8];
    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            put(ln, tmp, 2);
        } else if (c == '\n') {
            put(ln, "\\n", 2);
        } else if (c == '\t') {
            put(ln, "\\t", 2);
        } else if (c < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
            puts_(ln, tmp);
        } else {
            put(ln, (const char *)&c, 1);
        }
    }
}

static void put_pair(struct line *ln, const char *k, const char *v, int first)
{
    if (log_format == CM_LOG_JSON) {
        if (!first) put(ln, ",", 1);
        put(ln, "\"", 1);
        put_escaped(ln, k);
        put(ln, "\":\"", 3);
        put_escaped(ln, v);
        put(ln, "\"", 1);
        return;
    }
    if (!first) put(ln, " ", 1);
    puts_(ln, k);
    put(ln, "=", 1);
    if (needs_quotes(v)) {
        put(ln, "\"", 1);
        put_escaped(ln, v);
        put(ln, "\"", 1);
    } else {
        puts_(ln, v);
    }
}

static void keep_captured(const char *s)
{
    char **grown;
    if (captured_n >= CAPTURE_MAX_LINES) return;
    grown = realloc(captured, (captured_n + 1) * sizeof *captured);
    if (!grown) return;
    captured = grown;
    captured[captured_n] = strdup(s);
    if (captured[captured_n]) captured_n++;
}

void cm_log_event(enum cm_log_level level, const char *event, size_t n,
                  const char *const *keys, const char *const *values)
{
    static struct line ln; /* one thread logs; keeps 8 KiB off the stack */
    char ts[CM_RFC3339_ISO_MAX];
    size_t i;
    ssize_t w;
    size_t off;

    if ((int)level < 0 || level > CM_LOG_ERROR) level = CM_LOG_ERROR;
    counts[level]++;
    if (level < log_level && !capture_on) return;

    cm_rfc3339_iso(cm_clock_now(), ts); /* one RFC 3339 writer for logs and status */

    ln.len = 0;
    if (log_format == CM_LOG_JSON) put(&ln, "{", 1);
    put_pair(&ln, "ts", ts, 1);
    put_pair(&ln, "level", cm_log_level_name(level), 0);
    put_pair(&ln, "event", event ? event : "unknown", 0);
    for (i = 0; i < n; i++)
        if (keys[i] && values[i]) put_pair(&ln, keys[i], values[i], 0);
    if (log_format == CM_LOG_JSON) put(&ln, "}", 1);
    ln.buf[ln.len] = '\0';

    if (capture_on) keep_captured(ln.buf);
    if (level < log_level || !echo_on) return;
    ln.buf[ln.len++] = '\n';
    cm_term_progress_hide(log_fd); /* a progress line on the same terminal: not mixed in */
    for (off = 0; off < ln.len; off += (size_t)w) {
        w = write(log_fd, ln.buf + off, ln.len - off);
        if (w <= 0) break; /* nowhere left to report a logging failure */
    }
    cm_term_progress_show(log_fd);
}

void cm_log(enum cm_log_level level, const char *event, ...)
{
    const char *keys[32], *values[32];
    size_t n = 0;
    va_list ap;
    va_start(ap, event);
    while (n < 32) {
        const char *k = va_arg(ap, const char *);
        if (!k) break;
        keys[n] = k;
        values[n] = va_arg(ap, const char *);
        n++;
    }
    va_end(ap);
    cm_log_event(level, event, n, keys, values);
}

void cm_log_set_format(enum cm_log_format format) { log_format = format; }
void cm_log_set_level(enum cm_log_level level) { log_level = level; }
int cm_log_wants(enum cm_log_level level) { return level >= log_level || capture_on; }
void cm_log_set_fd(int fd) { log_fd = fd; }

int cm_log_level_parse(const char *name)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    int i;
    for (i = 0; i < 4; i++)
        if (name && strcmp(name, names[i]) == 0) return i;
    return -1;
}

const char *cm_log_level_name(enum cm_log_level level)
{
    switch (level) {
    case CM_LOG_DEBUG: return "debug";
    case CM_LOG_INFO: return "info";
    case CM_LOG_WARN: return "warn";
    default: return "error";
    }
}

void cm_log_capture(int on) { capture_on = on; }
void cm_log_set_echo(int on) { echo_on = on; }

char **cm_log_capture_take(size_t *count)
{
    char **lines = captured;
    *count = captured_n;
    captured = NULL;
    captured_n = 0;
    return lines;
}

unsigned long cm_log_count(enum cm_log_level level)
{
    if ((int)level < 0 || level > CM_LOG_ERROR) return 0;
    return counts[level];
}
