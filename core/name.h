/* name.h - the one place a certificate name is normalised and turned into a
 * storage key (DESIGN.md, "Storage").
 *
 * A name is a DNS name, a wildcard "*.<DNS name>", or an IP address.
 * Normalising: IP addresses (v4, v6) are put in canonical text form; for DNS
 * names one trailing dot is stripped, IDN U-labels become A-labels (UTS #46
 * non-transitional), ASCII is lower-cased, every label is LDH of 1-63 octets,
 * the whole at most 253, and '*' is allowed only as the whole leftmost label.
 * Anything else is refused with a message that names the input and the fault.
 */
#ifndef CM_NAME_H
#define CM_NAME_H

#include <stddef.h>

#include "result.h"

#define CM_NAME_MAX 253       /* longest DNS name, without the trailing dot */
#define CM_NAME_BUF 256       /* room for any normalised name or key + NUL */
#define CM_NAME_KEY_MAX 200   /* keys longer than this are hashed */
#define CM_NAME_INPUT_MAX 1024 /* longer inputs are refused before parsing */

enum cm_name_kind { CM_NAME_DNS, CM_NAME_WILDCARD, CM_NAME_IPV4, CM_NAME_IPV6 };

/* Normalise len bytes of name (UTF-8) into out (CM_NAME_BUF bytes, NUL-
 * terminated); *kind (if not NULL) says what it is.  Returns CM_ERR with code
 * "invalid" and a message naming the input and what is wrong. */
int cm_name_normalize(const char *name, size_t len, char out[CM_NAME_BUF],
                      enum cm_name_kind *kind, struct cm_result *res);

/* The storage key of a name: one safe path component, the same for every
 * spelling of the same name and different for different names.
 *   DNS name        as normalised                 "example.com"
 *   wildcard        '*' -> "wildcard_" (certmagic) "wildcard_.example.com"
 *   IPv4            canonical                     "192.0.2.1"
 *   IPv6            canonical, ':' -> '-'         "2001-db8--1"
 *   longer than 200 bytes: "h_" + the first 32 hex digits of SHA-256 of the
 *   normalised name (callers keep the full name inside the site's .json).
 * Returns CM_ERR with code "invalid" when the name does not normalise, or for
 * the few single-label DNS names that would share a key with an IPv6 address
 * (see name.c). */
int cm_name_storage_key(const char *name, size_t len, char out[CM_NAME_BUF],
                        struct cm_result *res);

#endif
