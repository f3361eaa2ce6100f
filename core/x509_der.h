/* x509_der.h - the fast path of the chain parser: a certificate's facts read
 * straight from its DER (der.h), without OpenSSL's ASN.1 decoder.
 *
 * Private to x509.c and to the tests.  The fast path handles the common
 * certificate fully and declines everything else (an attribute type it does
 * not name, a string that is not plain ASCII, an extension it cannot read
 * completely, anything not strict DER); x509.c then runs the OpenSSL decoder,
 * which decides and reports.  So the fast path never rejects: it either
 * produces exactly the facts the OpenSSL path would, or declines.
 */
#ifndef CM_X509_DER_H
#define CM_X509_DER_H

#include <stddef.h>
#include <stdint.h>

#include "result.h"
#include "x509.h"

/* The fast path does not handle this input; ask OpenSSL. */
#define CM_X509_DECLINED 1

/* The facts of the leaf certificate at the start of der[0..len): not_before,
 * not_after, serial_hex, issuer, subject, names, ocsp_urls, crl_urls, is_ca,
 * must_staple (not sha256, der or the chain: those fields are left as they are) into
 * *f, where they must be zero; *used gets the certificate's length.  CM_OK, CM_X509_DECLINED (*f untouched) or
 * CM_ERR (out of memory, *f untouched). */
int cm_x509_der_leaf(const unsigned char *der, size_t len, size_t *used,
                     struct cm_cert_facts *f);

/* The shape check of a chain certificate (as x509.c's check_shallow: every
 * TBSCertificate field present with the right tag and form, names and
 * extensions not decoded) at the start of der[0..len); *used gets its
 * length.  CM_OK or CM_X509_DECLINED. */
int cm_x509_der_shallow(const unsigned char *der, size_t len, size_t *used);

/* The notAfter of the certificate that is exactly der[0..len), with the
 * shape check of cm_x509_der_shallow: CM_OK or CM_X509_DECLINED. */
int cm_x509_der_not_after(const unsigned char *der, size_t len, int64_t *not_after);

/* The attribute types the fast path names in an RFC 2253 DN, as OpenSSL's
 * short names: table[0..return) (for the tests, which check it against
 * OpenSSL's object table). */
struct cm_x509_der_attr {
    const char *name;               /* e.g. "CN", "emailAddress" */
    unsigned char oid_len;
    unsigned char oid[11];          /* OBJECT IDENTIFIER contents */
};
size_t cm_x509_der_attrs(const struct cm_x509_der_attr **table);

/* Which decoder cm_x509_parse_*_with uses: the fast path with OpenSSL when
 * it declines (what cm_x509_parse_chain and cm_x509_parse_der_chain do),
 * OpenSSL only, or the fast path only (failing with code "declined" where
 * it declines).  The last two are for the differential tests. */
enum cm_x509_decoder {
    CM_X509_DECODE_AUTO,
    CM_X509_DECODE_OPENSSL,
    CM_X509_DECODE_FAST_ONLY
};

/* cm_x509_parse_chain / cm_x509_parse_der_chain with the decoder chosen. */
int cm_x509_parse_chain_with(enum cm_x509_decoder how, const char *pem, size_t len,
                             struct cm_cert_facts *out, struct cm_result *res);
int cm_x509_parse_der_chain_with(enum cm_x509_decoder how, const unsigned char *der,
                                 size_t len, struct cm_cert_facts *out,
                                 struct cm_result *res);

/* Printable ASCII without spaces (0x21-0x7e), non-empty: the only text taken
 * from a certificate as a name or URL (x509.c). */
int cm_x509_usable_text(const unsigned char *p, size_t n);

/* Append a copy of s[0..n) (NUL-terminated) to *l: CM_OK or CM_ERR (out of
 * memory, *l unchanged) (x509.c). */
int cm_strlist_push_n(struct cm_strlist *l, const char *s, size_t n);

#endif
