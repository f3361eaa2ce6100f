/* x509.h - certificates, keys and CSRs on OpenSSL, with no Lua in sight.
 *
 * The cache keeps DER plus the facts below, never OpenSSL objects, so 100k
 * certificates stay small.  Everything parsed here comes from outside
 * (storage, a CA): it is sized and every OpenSSL return value is checked.
 */
#ifndef CM_X509_H
#define CM_X509_H

#include <stddef.h>
#include <stdint.h>

#include "result.h"

/* Upper bound on any PEM/DER input we accept (a chain is a few KiB). */
#define CM_X509_MAX_INPUT (1024 * 1024)

struct cm_strlist {
    char **items;
    size_t count;
};

/* Facts about a leaf certificate and its chain, all owned by the struct. */
struct cm_cert_facts {
    unsigned char sha256[32];          /* SHA-256 of the leaf DER: the cache key */
    int64_t not_before, not_after;     /* Unix seconds */
    struct cm_strlist names;           /* DNS SANs then IP SANs (canonical text); subject CN if no SAN */
    char *serial_hex;                  /* lower-case hex */
    char *issuer;                      /* issuer DN, RFC 2253 */
    char *subject;                     /* subject DN, RFC 2253 */
    struct cm_strlist ocsp_urls;       /* AIA OCSP responders */
    struct cm_strlist crl_urls;        /* CRL distribution points (URIs) */
    int is_ca;                         /* basicConstraints CA:TRUE */
    unsigned char *der;                /* leaf DER */
    size_t der_len;
    unsigned char *chain_der;          /* the rest of the chain, DER certificates back to back */
    size_t chain_der_len;
    size_t chain_count;                /* certificates in chain_der */
};

/* Parse a PEM chain (leaf first, then intermediates) into *out, which the
 * caller frees with cm_cert_facts_free.  Fails with code "parse" (garbage,
 * truncated, empty), "toobig" (len > CM_X509_MAX_INPUT).  On failure *out is
 * left zeroed. */
int cm_x509_parse_chain(const char *pem, size_t len, struct cm_cert_facts *out,
                        struct cm_result *res);

/* Parse DER certificates back to back (leaf first) into *out, as above. */
int cm_x509_parse_der_chain(const unsigned char *der, size_t len,
                            struct cm_cert_facts *out, struct cm_result *res);

/* Free everything *f owns and zero it; safe on a zeroed struct. */
void cm_cert_facts_free(struct cm_cert_facts *f);

#endif
