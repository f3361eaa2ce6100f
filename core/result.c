/* result.c - filling struct cm_result. */
#include "result.h"

#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void set_code(struct cm_result *res, const char *code)
{
    snprintf(res->code, sizeof res->code, "%s", code ? code : "error");
}

int cm_fail(struct cm_result *res, const char *code, const char *fmt, ...)
{
    va_list ap;
    if (!res) return CM_ERR;
    set_code(res, code);
    va_start(ap, fmt);
    vsnprintf(res->message, sizeof res->message, fmt, ap);
    va_end(ap);
    res->retry_at = 0;
    return CM_ERR;
}

int cm_fail_ssl(struct cm_result *res, const char *code, const char *fmt, ...)
{
    va_list ap;
    unsigned long e;
    size_t used;
    if (!res) {
        ERR_clear_error();
        return CM_ERR;
    }
    set_code(res, code);
    va_start(ap, fmt);
    vsnprintf(res->message, sizeof res->message, fmt, ap);
    va_end(ap);
    res->retry_at = 0;
    /* Drain the whole queue so a later call does not report our leftovers. */
    while ((e = ERR_get_error()) != 0) {
        char buf[256];
        used = strlen(res->message);
        if (used + 3 >= sizeof res->message) continue;
        ERR_error_string_n(e, buf, sizeof buf);
        snprintf(res->message + used, sizeof res->message - used, ": %s", buf);
    }
    return CM_ERR;
}

void cm_result_clear(struct cm_result *res)
{
    if (!res) return;
    res->code[0] = '\0';
    res->message[0] = '\0';
    res->retry_at = 0;
}
