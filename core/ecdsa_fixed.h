/* ecdsa_fixed.h - ECDSA verification under one public key many times.
 *
 * An OCSP pass checks 100k responses all signed by one or two issuer keys.
 * OpenSSL's verification multiplies the key point Q afresh each time (a
 * variable-base multiplication, most of a P-256 verification's ~70 us);
 * here Q gets the precomputed table OpenSSL keeps for a curve's generator
 * (a copy of the curve whose generator is Q), so u1*G + u2*Q is two
 * fixed-base multiplications.  The verification equation is SEC 1 4.1.4's;
 * only the arithmetic is arranged differently.
 *
 * Keys are made once per process and shared (read-only) by threads.
 */
#ifndef CM_ECDSA_FIXED_H
#define CM_ECDSA_FIXED_H

#include <stddef.h>

#include <openssl/evp.h>

struct cm_ecdsa_fixed;

/* The prepared key for pkey (an EC key on a prime curve), from a small
 * process-wide cache (the tables take ~50 ms and ~150 KiB a key to make):
 * a reference the caller releases with cm_ecdsa_fixed_release.  NULL when
 * pkey is not such a key or on failure: the caller verifies the usual way. */
struct cm_ecdsa_fixed *cm_ecdsa_fixed_get(EVP_PKEY *pkey);
void cm_ecdsa_fixed_release(struct cm_ecdsa_fixed *k);

/* 1 when sig (a DER ECDSA-Sig-Value, strictly encoded) is a valid signature
 * of the digest dgst[0..dlen) under k; 0 otherwise (invalid, malformed, or
 * out of memory: a caller that needs the reason asks OpenSSL). */
int cm_ecdsa_fixed_verify(const struct cm_ecdsa_fixed *k, const unsigned char *dgst, size_t dlen,
                          const unsigned char *sig, size_t siglen);

/* One signature of a cm_ecdsa_fixed_verify_many call. */
struct cm_ecdsa_check {
    const unsigned char *dgst, *sig;
    size_t dlen, siglen;
    int ok; /* out: as cm_ecdsa_fixed_verify would say */
};

/* cm_ecdsa_fixed_verify for each of c[0..n), with one modular inversion for
 * all of them (Montgomery's trick: the inverse of each s from the inverse of
 * their product), the costliest step of a verification after the two
 * multiplications. */
void cm_ecdsa_fixed_verify_many(const struct cm_ecdsa_fixed *k, struct cm_ecdsa_check *c, size_t n);

#endif
