/* x509_ssl.h - OpenSSL-typed helpers shared by x509.c, key.c, localca.c, ari.c and
 * ocsp.c.
 *
 * Private to those units: the rest of the core sees only x509.h, key.h,
 * localca.h and ocsp.h, which hold no OpenSSL types.  Every loader bounds its input by
 * CM_X509_MAX_INPUT and names `what` (e.g. "issuer certificate") in errors.
 */
#ifndef CM_X509_SSL_H
#define CM_X509_SSL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "result.h"

struct cm_strlist;

/* ---- x509.c ---- */

/* The first certificate of a PEM chain or of DER data (first byte 0x30).
 * Caller frees.  NULL with "parse"/"toobig" in res. */
/* CM_OK when data is non-empty and at most CM_X509_MAX_INPUT bytes; else
 * CM_ERR with res ("parse": "<what>: empty", "toobig"), naming what. */
int cm_ssl_check_input(const char *data, size_t len, const char *what, struct cm_result *res);

X509 *cm_ssl_load_cert(const char *data, size_t len, const char *what, struct cm_result *res);

/* cm_ssl_load_cert for an issuer certificate, which is checked against
 * again and again: decoded once and kept in a small process-wide cache
 * (keyed by the DER's SHA-256), so the caller gets a new reference to a
 * shared X509 that it must free and must not change.  The same failures. */
X509 *cm_ssl_load_issuer(const char *data, size_t len, const char *what, struct cm_result *res);

/* The serialNumber of the first certificate (PEM or DER), read without
 * decoding its public key (a lean template; what an OCSP CertID needs of the
 * certificate it is about).  Caller frees.  NULL with "parse"/"toobig". */
ASN1_INTEGER *cm_ssl_cert_serial(const char *data, size_t len, const char *what,
                                 struct cm_result *res);

/* ---- key.c ---- */

/* A private key from PEM (PKCS#8 or traditional); encrypted keys are refused,
 * never prompted for.  Caller frees.  NULL with "parse"/"toobig" in res. */
EVP_PKEY *cm_ssl_load_private_key(const char *pem, size_t len, const char *what,
                                  struct cm_result *res);

/* Sign a fixed message with key and verify it under key's own public half.
 * A damaged private key whose parts disagree (RSA's n != p*q, an EC scalar
 * that is not its public point's) loads, but signs what nobody can verify:
 * CSRs a CA refuses, JWS it rejects.  CM_ERR with "parse" naming `what`. */
int cm_ssl_key_self_check(EVP_PKEY *key, const char *what, struct cm_result *res);

/* A key from "PUBLIC KEY" PEM, or the public half of a private key PEM. */
EVP_PKEY *cm_ssl_load_public_key(const char *pem, size_t len, const char *what,
                                 struct cm_result *res);

/* The contents of a memory BIO as a malloc'd NUL-terminated string (*len
 * bytes without the NUL, when len is not NULL), or NULL when out of memory. */
char *cm_ssl_bio_string(BIO *bio, size_t *len);

/* An ASN1_TIME as Unix seconds (ASN1_TIME_to_tm + timegm); CM_ERR when it
 * is malformed. */
int cm_ssl_time_unix(const ASN1_TIME *t, int64_t *out);

/* ---- x509.c, for the local CA ---- */

/* Lower-case hex of an INTEGER's magnitude ("-" first when negative, "00"
 * for zero), malloc'd; NULL when out of memory. */
char *cm_ssl_integer_hex(const ASN1_INTEGER *ai);

/* A GENERAL_NAME for name: a DNS name (an IP literal becomes an iPAddress)
 * when type is GEN_DNS, a URI when GEN_URI.  Name must be printable ASCII of
 * at most 2048 bytes.  Caller frees.  NULL with "invalid"/"ENOMEM" in res. */
GENERAL_NAME *cm_ssl_general_name(const char *name, int type, struct cm_result *res);

/* GENERAL_NAMES for names[0..n), as cm_ssl_general_name.  Caller frees. */
GENERAL_NAMES *cm_ssl_general_names(const char *const *names, size_t n, int type,
                                    struct cm_result *res);

/* Add a CN entry (UTF-8) to name; CM_ERR with "invalid" in res. */
int cm_ssl_add_cn(X509_NAME *name, const char *cn, struct cm_result *res);

/* A CSR from PEM or DER with its self-signature verified; caller frees.
 * NULL with "parse"/"toobig"/"verify"/"ENOMEM" in res. */
X509_REQ *cm_ssl_load_csr(const unsigned char *data, size_t len, struct cm_result *res);

/* A CSR's names (SAN DNS, SAN IP, else its subject's last CN) appended to
 * *names (the caller's); CM_ERR with "ENOMEM". */
int cm_ssl_csr_names(X509_REQ *req, struct cm_strlist *names, struct cm_result *res);

/* ---- key.c, for x509.c ---- */

/* The PEM password callback that refuses: never prompt for a key's password. */
int cm_ssl_no_password(char *buf, int size, int rwflag, void *u);

/* pkey's public key as "PUBLIC KEY" PEM, malloc'd; NULL on failure
 * (OpenSSL's queue says why). */
char *cm_ssl_public_key_pem(const EVP_PKEY *pkey);

#endif
