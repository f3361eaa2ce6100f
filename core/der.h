/* der.h - a strict reader of DER (X.690) for untrusted bytes, with no
 * allocation and no OpenSSL.
 *
 * Strict means the distinguished encoding only: one-byte tags (low tag
 * numbers), definite lengths in their shortest form, every length inside its
 * parent.  Anything else (BER, indefinite lengths, high tag numbers,
 * truncation) is CM_ERR, which the callers read as "not for the fast path":
 * x509_der.c then hands the input to OpenSSL, which decides and reports.
 * The reader never looks outside [p, end) and never recurses.
 */
#ifndef CM_DER_H
#define CM_DER_H

#include <stddef.h>
#include <stdint.h>

#include "result.h"

/* Tag bytes (class, constructed bit and number in one byte). */
#define CM_DER_BOOLEAN 0x01
#define CM_DER_INTEGER 0x02
#define CM_DER_BIT_STRING 0x03
#define CM_DER_OCTET_STRING 0x04
#define CM_DER_NULL 0x05
#define CM_DER_OID 0x06
#define CM_DER_UTF8STRING 0x0c
#define CM_DER_NUMERICSTRING 0x12
#define CM_DER_PRINTABLESTRING 0x13
#define CM_DER_T61STRING 0x14
#define CM_DER_IA5STRING 0x16
#define CM_DER_UTCTIME 0x17
#define CM_DER_GENERALIZEDTIME 0x18
#define CM_DER_VISIBLESTRING 0x1a
#define CM_DER_SEQUENCE 0x30
#define CM_DER_SET 0x31
#define CM_DER_CONTEXT(n) (0x80 | (n))            /* [n] IMPLICIT, primitive */
#define CM_DER_CONTEXT_CONS(n) (0xa0 | (n))       /* [n] constructed / EXPLICIT */

/* A window of DER: the elements still to read are in [p, end). */
struct cm_der {
    const unsigned char *p, *end;
};

/* One element: its tag byte and its contents [body, body + len). */
struct cm_der_elem {
    unsigned tag;
    const unsigned char *body;
    size_t len;
};

/* A reader over buf[0..len). */
struct cm_der cm_der_init(const unsigned char *buf, size_t len);

/* A reader over an element's contents. */
struct cm_der cm_der_inside(const struct cm_der_elem *e);

/* 1 when every element of d has been read. */
int cm_der_done(const struct cm_der *d);

/* The tag byte of the next element, or -1 at the end. */
int cm_der_peek(const struct cm_der *d);

/* Read the next element into *e and step over it.  CM_ERR (d unchanged) when
 * it is not strict DER or does not fit in d. */
int cm_der_next(struct cm_der *d, struct cm_der_elem *e);

/* cm_der_next, and CM_ERR unless its tag is `tag`. */
int cm_der_expect(struct cm_der *d, unsigned tag, struct cm_der_elem *e);

/* Read the next element only when its tag is `tag`: *present says whether
 * it was there.  CM_ERR only for a malformed element with that tag. */
int cm_der_optional(struct cm_der *d, unsigned tag, struct cm_der_elem *e, int *present);

/* Contents of an INTEGER in its minimal two's complement form (non-empty,
 * no redundant leading 0x00/0xff): CM_OK, else CM_ERR. */
int cm_der_integer_ok(const unsigned char *body, size_t len);

/* Contents of an OBJECT IDENTIFIER well formed (non-empty, every
 * sub-identifier minimal, the last one finished): CM_OK, else CM_ERR. */
int cm_der_oid_ok(const unsigned char *body, size_t len);

/* Contents of a BIT STRING with its unused-bits octet present and at most 7
 * (an empty string has none unused): CM_OK, else CM_ERR. */
int cm_der_bit_string_ok(const unsigned char *body, size_t len);

/* A UTCTime ("YYMMDDHHMMSSZ", years 1950-2049) or GeneralizedTime
 * ("YYYYMMDDHHMMSSZ") in the one form RFC 5280 allows, every field in range
 * (day within its month, no leap second), as Unix seconds.  CM_ERR for any
 * other form or tag. */
int cm_der_time(const struct cm_der_elem *e, int64_t *unix_seconds);

#endif
