/* ocsp_fast.c - see ocsp_fast.h. */
#include "ocsp_fast.h"

#include <string.h>

#include <openssl/err.h>
#include <openssl/obj_mac.h>

/* What OCSP_basic_verify checks of the signer itself, once: the chain from
 * the issuer to the store's trust (the issuer itself, PARTIAL_CHAIN), for
 * the OCSP helper purpose, at the store's time. */
static int signer_verifies(X509 *issuer, X509_STORE *store)
{
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    int ok = ctx && untrusted && sk_X509_push(untrusted, issuer) &&
             X509_STORE_CTX_init(ctx, store, issuer, untrusted) == 1 &&
             X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_OCSP_HELPER) == 1 && X509_verify_cert(ctx) == 1;
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted);
    ERR_clear_error();
    return ok;
}

void cm_ocsp_fast_issuer_init(struct cm_ocsp_fast_issuer *fi, X509 *issuer, X509_STORE *store)
{
    static const char *const names[3] = {"SHA256", "SHA384", "SHA512"};
    unsigned int len;
    int i, n;

    memset(fi, 0, sizeof *fi);
    fi->issuer = issuer;
    if (!issuer || !store || !signer_verifies(issuer, store)) return;
    if (X509_pubkey_digest(issuer, EVP_sha1(), fi->key_sha1, &len) != 1 || len != 20 ||
        X509_NAME_digest(X509_get_subject_name(issuer), EVP_sha1(), fi->name_sha1, &len) != 1 || len != 20 ||
        X509_pubkey_digest(issuer, EVP_sha256(), fi->key_sha256, &len) != 1 || len != 32 ||
        X509_NAME_digest(X509_get_subject_name(issuer), EVP_sha256(), fi->name_sha256, &len) != 1 || len != 32)
        goto fail;
    for (i = 0; i < 3; i++)
        if (!(fi->md[i] = EVP_MD_fetch(NULL, names[i], NULL))) goto fail;
    /* the bytes decoded (an X509_NAME keeps its encoding), not a new encoding */
    if ((n = i2d_X509_NAME(X509_get_subject_name(issuer), &fi->subject_der)) <= 0) goto fail;
    fi->subject_len = (size_t)n;
    if ((n = i2d_X509(issuer, &fi->issuer_der)) <= 0) goto fail;
    fi->issuer_len = (size_t)n;
    fi->key = cm_ecdsa_fixed_get(X509_get0_pubkey(issuer)); /* NULL for a key of another kind */
    ERR_clear_error();
    return;
fail:
    ERR_clear_error();
    cm_ocsp_fast_issuer_clear(fi);
}

void cm_ocsp_fast_issuer_clear(struct cm_ocsp_fast_issuer *fi)
{
    int i;
    cm_ecdsa_fixed_release(fi->key);
    for (i = 0; i < 3; i++) EVP_MD_free(fi->md[i]);
    OPENSSL_free(fi->subject_der);
    OPENSSL_free(fi->issuer_der);
    memset(fi, 0, sizeof *fi);
}

static int same(const ASN1_OCTET_STRING *s, const unsigned char *want, int len)
{
    return s && ASN1_STRING_length(s) == len && memcmp(ASN1_STRING_get0_data(s), want, (size_t)len) == 0;
}

/* The responder ID names the issuer (ocsp_find_signer's two ways). */
static int responder_is_issuer(const struct cm_ocsp_fast_issuer *fi, OCSP_BASICRESP *bs)
{
    const ASN1_OCTET_STRING *by_key = NULL;
    const X509_NAME *by_name = NULL;
    if (OCSP_resp_get0_id(bs, &by_key, &by_name) != 1) return 0;
    if (by_key) return same(by_key, fi->key_sha1, 20);
    return by_name && X509_NAME_cmp(by_name, X509_get_subject_name(fi->issuer)) == 0;
}

/* Every SingleResponse is about a certificate of the issuer (what
 * ocsp_check_issuer demands of a response the issuer signed). */
static int singles_of_issuer(const struct cm_ocsp_fast_issuer *fi, OCSP_BASICRESP *bs)
{
    int i, n = OCSP_resp_count(bs);
    if (n < 1) return 0;
    for (i = 0; i < n; i++) {
        OCSP_SINGLERESP *single = OCSP_resp_get0(bs, i);
        const OCSP_CERTID *cid = single ? OCSP_SINGLERESP_get0_id(single) : NULL;
        ASN1_OCTET_STRING *name_hash = NULL, *key_hash = NULL;
        ASN1_OBJECT *md = NULL;
        int nid;
        if (!cid || OCSP_id_get0_info(&name_hash, &md, &key_hash, NULL, (OCSP_CERTID *)cid) != 1) return 0;
        nid = OBJ_obj2nid(md);
        if (nid == NID_sha1) {
            if (!same(name_hash, fi->name_sha1, 20) || !same(key_hash, fi->key_sha1, 20)) return 0;
        } else if (nid == NID_sha256) {
            if (!same(name_hash, fi->name_sha256, 32) || !same(key_hash, fi->key_sha256, 32)) return 0;
        } else {
            return 0;
        }
    }
    return 1;
}

int cm_ocsp_fast_prepare(const struct cm_ocsp_fast_issuer *fi, OCSP_BASICRESP *bs, unsigned char *dgst,
                         unsigned int *dlen, const unsigned char **sig_out, size_t *siglen)
{
    const X509_ALGOR *alg;
    const ASN1_OBJECT *obj = NULL;
    const ASN1_OCTET_STRING *sig;
    const STACK_OF(X509) *certs;
    unsigned char *tbs = NULL;
    const EVP_MD *md;
    int ptype = 0, nid, tlen, ok = 0;

    if (!fi || !fi->key || !bs) return 0;
    if ((certs = OCSP_resp_get0_certs(bs)) && sk_X509_num(certs) > 0) return 0;
    if (!responder_is_issuer(fi, bs) || !singles_of_issuer(fi, bs)) goto out;
    if (!(alg = OCSP_resp_get0_tbs_sigalg(bs))) goto out;
    X509_ALGOR_get0(&obj, &ptype, NULL, alg);
    nid = OBJ_obj2nid(obj);
    md = nid == NID_ecdsa_with_SHA256   ? fi->md[0]
         : nid == NID_ecdsa_with_SHA384 ? fi->md[1]
         : nid == NID_ecdsa_with_SHA512 ? fi->md[2]
                                        : NULL;
    if (!md || ptype != V_ASN1_UNDEF) goto out;
    /* a BIT STRING with unused bits is no signature (ASN1_item_verify) */
    if (!(sig = OCSP_resp_get0_signature(bs)) || (sig->flags & 0x7) || ASN1_STRING_length(sig) <= 0) goto out;
    /* the signed bytes, re-encoded as ASN1_item_verify does */
    if ((tlen = i2d_OCSP_RESPDATA((OCSP_RESPDATA *)OCSP_resp_get0_respdata(bs), &tbs)) <= 0) goto out;
    if (EVP_Digest(tbs, (size_t)tlen, dgst, dlen, md, NULL) != 1) goto out;
    *sig_out = ASN1_STRING_get0_data(sig);
    *siglen = (size_t)ASN1_STRING_length(sig);
    ok = 1;
out:
    OPENSSL_free(tbs);
    ERR_clear_error();
    return ok;
}

int cm_ocsp_fast_verify(const struct cm_ocsp_fast_issuer *fi, OCSP_BASICRESP *bs)
{
    unsigned char dgst[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    const unsigned char *sig = NULL;
    size_t siglen = 0;
    if (!cm_ocsp_fast_prepare(fi, bs, dgst, &dlen, &sig, &siglen)) return 0;
    return cm_ecdsa_fixed_verify(fi->key, dgst, dlen, sig, siglen);
}
