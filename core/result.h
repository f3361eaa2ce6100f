/* result.h - the one failure record every core function fills.
 *
 * Modelled on mod_md's md_result_t: a failure carries a stable machine code
 * ("ENOENT", "parse", "timeout", "acme:rateLimited"), a human message naming
 * what was wrong and where, and an optional retry-after time.  Core functions
 * return CM_OK (0) or CM_ERR (-1) and fill *res when it is not NULL.
 */
#ifndef CM_RESULT_H
#define CM_RESULT_H

#include <stdint.h>

#define CM_OK 0
#define CM_ERR (-1)

struct cm_result {
    char code[48];      /* stable, machine-readable: "ENOENT", "parse", ... */
    char message[512];  /* human text: what went wrong, naming the input */
    int64_t retry_at;   /* Unix seconds; 0 = no hint */
};

/* Fill res (if not NULL) with code and a printf-style message; returns CM_ERR
 * so callers can write `return cm_fail(res, "parse", "...")`. */
int cm_fail(struct cm_result *res, const char *code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Like cm_fail, then appends OpenSSL's error queue (drained) to the message. */
int cm_fail_ssl(struct cm_result *res, const char *code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Clear res to "no error". */
void cm_result_clear(struct cm_result *res);

#endif
