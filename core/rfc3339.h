/* rfc3339.h - RFC 3339 times as status output and logs print them.
 *
 * The C side of lua/certmaint/rfc3339.lua's `iso` (which delegates here):
 * whole seconds, UTC, "2026-01-01T00:00:00Z".  Pure: no clock, no locale,
 * no libc time functions (gmtime's range and cost are not needed).
 */
#ifndef CM_RFC3339_H
#define CM_RFC3339_H

#include <stddef.h>

/* Bytes "YYYY-MM-DDTHH:MM:SSZ" and its NUL need (with room for years past 9999). */
#define CM_RFC3339_ISO_MAX 32

/* Largest |t| accepted: well past year 9999, well inside int64 and exact doubles. */
#define CM_RFC3339_LIMIT 1.0e15

/* Write t (Unix seconds, rounded down) as "2026-01-01T00:00:00Z" into out
 * (CM_RFC3339_ISO_MAX bytes) and return its length, or 0 (out = "") when t
 * is NaN, infinite or beyond +-CM_RFC3339_LIMIT.  Years before 1 or after
 * 9999 are written with as many digits as they need (and a '-'). */
size_t cm_rfc3339_iso(double t, char *out);

#endif
