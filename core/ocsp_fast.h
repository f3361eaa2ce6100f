/* ocsp_fast.h - the signature check of an OCSP response its certificate's
 * issuer signed itself (the common case: Let's Encrypt's, a private CA's),
 * for checking many under one issuer (ocsp_batch.c).
 *
 * It never rejects: it either finds the response signed as OCSP_basic_verify
 * (with OCSP_NOEXPLICIT, the issuer trusted) would accept it, or declines,
 * and the caller runs OCSP_basic_verify, which decides and reports.  It
 * accepts only: no certificates in the response, the responder ID naming
 * the issuer (by key hash or name), every SingleResponse's CertID naming the
 * issuer (SHA-1 or SHA-256 hashes), an ECDSA signature with SHA-256/384/512
 * and no parameters, valid under the issuer's key (ecdsa_fixed.h), and an
 * issuer OpenSSL verifies as the signer once, when the issuer is prepared. */
#ifndef CM_OCSP_FAST_H
#define CM_OCSP_FAST_H

#include <stdint.h>

#include <openssl/ocsp.h>
#include <openssl/x509.h>

#include "ecdsa_fixed.h"

struct cm_ocsp_fast_issuer {
    struct cm_ecdsa_fixed *key; /* NULL: not for the fast path */
    X509 *issuer;               /* borrowed */
    unsigned char key_sha1[20], name_sha1[20], key_sha256[32], name_sha256[32];
    EVP_MD *md[3];              /* SHA-256, SHA-384, SHA-512, fetched once */
    unsigned char *subject_der; /* the issuer's subject as its certificate encodes it
                                 * (a responder ID by name, ocsp_der.c) */
    size_t subject_len;
    unsigned char *issuer_der;  /* the issuer certificate (a response may carry it) */
    size_t issuer_len;
};

/* Prepare issuer (trusted by store, as cm_ssl_ocsp_trust makes it) for
 * cm_ocsp_fast_verify; a key that is not EC, or an issuer OpenSSL would not
 * take as a signer, leaves fi->key NULL (every response then declined).
 * Read-only once made: threads may share it.  Clear with
 * cm_ocsp_fast_issuer_clear (also when not prepared). */
void cm_ocsp_fast_issuer_init(struct cm_ocsp_fast_issuer *fi, X509 *issuer, X509_STORE *store);
void cm_ocsp_fast_issuer_clear(struct cm_ocsp_fast_issuer *fi);

/* 1: bs is signed by fi's issuer as OCSP_basic_verify would accept; 0: ask
 * OCSP_basic_verify. */
int cm_ocsp_fast_verify(const struct cm_ocsp_fast_issuer *fi, OCSP_BASICRESP *bs);

/* The first half of cm_ocsp_fast_verify, for checking many signatures at
 * once (cm_ecdsa_fixed_verify_many under fi->key): 1 when bs is for the fast
 * path, with the digest of its signed data in dgst[0..*dlen) and its
 * signature at *sig (inside bs: valid while bs is); 0: ask OCSP_basic_verify. */
int cm_ocsp_fast_prepare(const struct cm_ocsp_fast_issuer *fi, OCSP_BASICRESP *bs, unsigned char *dgst,
                         unsigned int *dlen, const unsigned char **sig, size_t *siglen);

#endif
