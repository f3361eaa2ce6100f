/* ocsp_der_agree.h - the property of the OCSP DER path (core/ocsp_der.c),
 * shared by its unit test (tests/unit/test_ocsp_der.c) and its fuzz harness
 * (fuzz_ocsp_der.c): where it takes a response whose signature is good, the
 * OpenSSL path (cm_ocsp_response_parse) accepts it with the same facts, and
 * the digest it made of the bytes in place is the one OpenSSL's re-encoding
 * gives (what ASN1_item_verify hashes). */
#ifndef CM_OCSP_DER_AGREE_H
#define CM_OCSP_DER_AGREE_H

#include <string.h>

#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/x509.h>

#include "ecdsa_fixed.h"
#include "ocsp.h"
#include "ocsp_der.h"
#include "ocsp_fast.h"
#include "ocsp_ssl.h"
#include "x509_ssl.h"

/* The issuer and the certificate the responses are about, prepared once. */
struct ocsp_der_pair {
    const char *leaf_pem, *ca_pem;
    size_t leaf_len, ca_len;
    X509 *issuer;
    X509_STORE *store;
    struct cm_ocsp_fast_issuer fi;
    unsigned char *serial; /* the leaf's serialNumber element */
    size_t serial_len;
};

/* 0 on success; the pair is for checks at `now` (the store's time). */
static inline int ocsp_der_pair_init(struct ocsp_der_pair *p, const char *leaf_pem, size_t leaf_len,
                                     const char *ca_pem, size_t ca_len, int64_t now)
{
    struct cm_result res;
    ASN1_INTEGER *serial;
    unsigned char *q = NULL;
    int n;
    memset(p, 0, sizeof *p);
    p->leaf_pem = leaf_pem;
    p->leaf_len = leaf_len;
    p->ca_pem = ca_pem;
    p->ca_len = ca_len;
    if (!(p->issuer = cm_ssl_load_issuer(ca_pem, ca_len, "issuer", &res))) return -1;
    if (!(p->store = cm_ssl_ocsp_trust(p->issuer, now, &res))) return -1;
    cm_ocsp_fast_issuer_init(&p->fi, p->issuer, p->store);
    if (!p->fi.key) return -1;
    if (!(serial = cm_ssl_cert_serial(leaf_pem, leaf_len, "leaf", &res))) return -1;
    n = i2d_ASN1_INTEGER(serial, &q);
    ASN1_INTEGER_free(serial);
    if (n <= 0) return -1;
    p->serial = q;
    p->serial_len = (size_t)n;
    return 0;
}

static inline void ocsp_der_pair_free(struct ocsp_der_pair *p)
{
    OPENSSL_free(p->serial);
    cm_ocsp_fast_issuer_clear(&p->fi);
    X509_STORE_free(p->store);
    X509_free(p->issuer);
    memset(p, 0, sizeof *p);
}

static inline int ocsp_der_same_info(const struct cm_ocsp_info *a, const struct cm_ocsp_info *b)
{
    return a->status == b->status && a->this_update == b->this_update && a->next_update == b->next_update &&
           a->produced_at == b->produced_at && a->revoked_at == b->revoked_at && a->reason == b->reason;
}

/* What ASN1_item_verify hashes: the signed data encoded again, under the
 * signature algorithm's hash; and the signature's bytes. */
static inline int openssl_digest(OCSP_BASICRESP *bs, unsigned char *dgst, unsigned int *dlen,
                                 const unsigned char **sig, size_t *siglen)
{
    const X509_ALGOR *alg = OCSP_resp_get0_tbs_sigalg(bs);
    const ASN1_OBJECT *obj = NULL;
    const ASN1_OCTET_STRING *s = OCSP_resp_get0_signature(bs);
    unsigned char *tbs = NULL;
    int nid, tlen, ok;
    const EVP_MD *md;
    if (!alg || !s) return 0;
    X509_ALGOR_get0(&obj, NULL, NULL, alg);
    nid = OBJ_obj2nid(obj);
    md = nid == NID_ecdsa_with_SHA256 ? EVP_sha256() : nid == NID_ecdsa_with_SHA384 ? EVP_sha384()
         : nid == NID_ecdsa_with_SHA512 ? EVP_sha512() : NULL;
    if (!md || (tlen = i2d_OCSP_RESPDATA((OCSP_RESPDATA *)OCSP_resp_get0_respdata(bs), &tbs)) <= 0) return 0;
    ok = EVP_Digest(tbs, (size_t)tlen, dgst, dlen, md, NULL) == 1;
    OPENSSL_free(tbs);
    *sig = ASN1_STRING_get0_data(s);
    *siglen = (size_t)ASN1_STRING_length(s);
    return ok;
}

/* 0: the DER path declined; 1: it took der and the signature is good; 2:
 * it took der and the signature is bad (the OpenSSL path then decides).
 * *broken is set when the property does not hold. */
static inline int ocsp_der_agree(const struct ocsp_der_pair *p, const unsigned char *der, size_t len, int64_t now,
                                 int64_t skew, int *broken)
{
    struct cm_ocsp_der_result dr;
    struct cm_ocsp_info info;
    struct cm_result res;
    OCSP_RESPONSE *resp = NULL;
    OCSP_BASICRESP *bs = NULL;
    unsigned char dgst[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    const unsigned char *sig = NULL;
    size_t siglen = 0;
    int good;

    if (!cm_ocsp_der_check(&p->fi, der, len, p->serial, p->serial_len, now, skew, &dr)) return 0;
    good = cm_ecdsa_fixed_verify(p->fi.key, dr.dgst, dr.dlen, dr.sig, dr.siglen);
    /* OpenSSL decodes what the DER path took, and its fast path hashes the same bytes */
    if (cm_ssl_ocsp_decode(der, len, &resp, &bs, &res) != CM_OK || !openssl_digest(bs, dgst, &dlen, &sig, &siglen) ||
        dlen != dr.dlen || memcmp(dgst, dr.dgst, dlen) != 0 || siglen != dr.siglen || memcmp(sig, dr.sig, siglen) != 0) {
        fprintf(stderr, "ocsp_der: taken, but OpenSSL decodes or hashes it otherwise\n");
        *broken = 1;
    }
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(resp);
    ERR_clear_error();
    if (good) {
        int rc = cm_ocsp_response_parse(der, len, p->leaf_pem, p->leaf_len, p->ca_pem, p->ca_len, now, skew,
                                        &info, &res);
        if (rc != CM_OK || !ocsp_der_same_info(&info, &dr.info)) {
            fprintf(stderr, "ocsp_der: taken with a good signature, OpenSSL says %s %s\n",
                    rc == CM_OK ? "ok with other facts" : res.code, rc == CM_OK ? "" : res.message);
            *broken = 1;
        }
    }
    return good ? 1 : 2;
}

#endif
