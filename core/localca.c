/* localca.c - issuing certificates, building OCSP responses and CRLs on OpenSSL. */
#include "localca.h"
#include "x509.h"
#include "x509_ssl.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* ------------------------------------------------------------------------ */
/* certificates                                                             */

#define SERIAL_MAX_HEX 40 /* RFC 5280: at most 20 octets */

static ASN1_INTEGER *serial_for(const char *hex, struct cm_result *res)
{
    BIGNUM *bn = NULL;
    ASN1_INTEGER *ai = NULL;
    size_t i, n;

    if (!(bn = BN_new())) goto crypto;
    if (hex) {
        n = strlen(hex);
        for (i = 0; i < n && isxdigit((unsigned char)hex[i]); i++) {}
        if (n == 0 || i != n || n > SERIAL_MAX_HEX) {
            cm_fail(res, "invalid", "serial \"%.60s\" is not 1-%d hex digits", hex,
                    SERIAL_MAX_HEX);
            goto out;
        }
        if (BN_hex2bn(&bn, hex) != (int)n) goto crypto;
        if (BN_is_zero(bn)) {
            cm_fail(res, "invalid", "serial must be positive, not zero");
            goto out;
        }
    } else if (BN_rand(bn, 128, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) != 1) {
        /* TOP_ONE: always 128 bits, so every default serial has one length */
        goto crypto;
    }
    if (!(ai = BN_to_ASN1_INTEGER(bn, NULL))) goto crypto;
    goto out;
crypto:
    cm_fail_ssl(res, "crypto", "making the serial number failed");
out:
    BN_free(bn); bn = NULL;
    return ai;
}

/* Add extension nid with value v (an OpenSSL object of the extension's
 * type); CM_ERR with res filled. */
static int add_ext(X509 *x, int nid, void *v, int crit, struct cm_result *res)
{
    if (!v || X509_add1_ext_i2d(x, nid, v, crit, X509V3_ADD_DEFAULT) != 1)
        return cm_fail_ssl(res, "crypto", "adding the %s extension failed", OBJ_nid2sn(nid));
    return CM_OK;
}

static int add_key_ids(X509 *x, X509 *issuer, struct cm_result *res)
{
    unsigned char md[EVP_MAX_MD_SIZE], imd[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0, imdlen = 0;
    ASN1_OCTET_STRING *ski = NULL;
    AUTHORITY_KEYID *akid = NULL;
    const ASN1_OCTET_STRING *issuer_ski;
    int ret = CM_ERR;

    /* RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. */
    if (X509_pubkey_digest(x, EVP_sha1(), md, &mdlen) != 1) goto crypto;
    if (!(ski = ASN1_OCTET_STRING_new()) || ASN1_OCTET_STRING_set(ski, md, (int)mdlen) != 1)
        goto crypto;
    if (add_ext(x, NID_subject_key_identifier, ski, 0, res) != CM_OK) goto out;
    if (!(akid = AUTHORITY_KEYID_new())) goto crypto;
    issuer_ski = issuer ? X509_get0_subject_key_id(issuer) : ski;
    if (issuer_ski) {
        if (!(akid->keyid = ASN1_OCTET_STRING_dup(issuer_ski))) goto crypto;
    } else {
        if (X509_pubkey_digest(issuer, EVP_sha1(), imd, &imdlen) != 1) goto crypto;
        if (!(akid->keyid = ASN1_OCTET_STRING_new()) ||
            ASN1_OCTET_STRING_set(akid->keyid, imd, (int)imdlen) != 1)
            goto crypto;
    }
    if (add_ext(x, NID_authority_key_identifier, akid, 0, res) != CM_OK) goto out;
    ret = CM_OK;
    goto out;
crypto:
    ret = cm_fail_ssl(res, "crypto", "computing key identifiers failed");
out:
    ASN1_OCTET_STRING_free(ski); ski = NULL;
    AUTHORITY_KEYID_free(akid); akid = NULL;
    return ret;
}

static int add_usage(X509 *x, const struct cm_issue_opts *o, EVP_PKEY *subject_key,
                     struct cm_result *res)
{
    BASIC_CONSTRAINTS *bc = NULL;
    ASN1_BIT_STRING *ku = NULL;
    EXTENDED_KEY_USAGE *eku = NULL;
    ASN1_NULL *nocheck = NULL;
    int ret = CM_ERR, ok = 1;

    if (!(bc = BASIC_CONSTRAINTS_new())) goto crypto;
    bc->ca = o->is_ca ? 0xff : 0;
    if (o->is_ca && o->path_len >= 0) {
        if (!(bc->pathlen = ASN1_INTEGER_new()) || ASN1_INTEGER_set(bc->pathlen, o->path_len) != 1)
            goto crypto;
    }
    if (add_ext(x, NID_basic_constraints, bc, 1, res) != CM_OK) goto out;

    /* KeyUsage bits: digitalSignature 0, keyEncipherment 2, keyCertSign 5, cRLSign 6 */
    if (!(ku = ASN1_BIT_STRING_new())) goto crypto;
    if (o->is_ca) {
        ok &= ASN1_BIT_STRING_set_bit(ku, 5, 1);
        ok &= ASN1_BIT_STRING_set_bit(ku, 6, 1);
    } else {
        ok &= ASN1_BIT_STRING_set_bit(ku, 0, 1);
        if (EVP_PKEY_get_base_id(subject_key) == EVP_PKEY_RSA)
            ok &= ASN1_BIT_STRING_set_bit(ku, 2, 1);
    }
    if (!ok) goto crypto;
    if (add_ext(x, NID_key_usage, ku, 1, res) != CM_OK) goto out;

    if (!o->is_ca) {
        if (!(eku = sk_ASN1_OBJECT_new_null())) goto crypto;
        if (o->ocsp_signing) {
            ok &= sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_OCSP_sign)) > 0;
        } else {
            ok &= sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth)) > 0;
            ok &= sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth)) > 0;
        }
        if (!ok) goto crypto;
        if (add_ext(x, NID_ext_key_usage, eku, 0, res) != CM_OK) goto out;
        /* RFC 6960 4.2.2.2.1: clients need not check a responder's revocation */
        if (o->ocsp_signing) {
            if (!(nocheck = ASN1_NULL_new())) goto crypto;
            if (add_ext(x, NID_id_pkix_OCSP_noCheck, nocheck, 0, res) != CM_OK) goto out;
        }
    }
    ret = CM_OK;
    goto out;
crypto:
    ret = cm_fail_ssl(res, "crypto", "building usage extensions failed");
out:
    BASIC_CONSTRAINTS_free(bc); bc = NULL;
    ASN1_BIT_STRING_free(ku); ku = NULL;
    /* OBJ_nid2obj objects are static: sk_ASN1_OBJECT_free is enough */
    sk_ASN1_OBJECT_free(eku); eku = NULL;
    ASN1_NULL_free(nocheck); nocheck = NULL;
    return ret;
}

static int add_urls(X509 *x, const struct cm_issue_opts *o, struct cm_result *res)
{
    AUTHORITY_INFO_ACCESS *aia = NULL;
    ACCESS_DESCRIPTION *ad = NULL;
    CRL_DIST_POINTS *cdp = NULL;
    DIST_POINT *dp = NULL;
    GENERAL_NAME *gn = NULL;
    int ret = CM_ERR;

    if (o->ocsp_url) {
        if (!(gn = cm_ssl_general_name(o->ocsp_url, GEN_URI, res))) goto out;
        if (!(aia = sk_ACCESS_DESCRIPTION_new_null()) || !(ad = ACCESS_DESCRIPTION_new()))
            goto crypto;
        ASN1_OBJECT_free(ad->method);
        ad->method = OBJ_nid2obj(NID_ad_OCSP);
        GENERAL_NAME_free(ad->location);
        ad->location = gn;
        gn = NULL;
        if (!sk_ACCESS_DESCRIPTION_push(aia, ad)) goto crypto;
        ad = NULL;
        if (add_ext(x, NID_info_access, aia, 0, res) != CM_OK) goto out;
    }
    if (o->crl_url) {
        if (!(cdp = sk_DIST_POINT_new_null()) || !(dp = DIST_POINT_new()) ||
            !(dp->distpoint = DIST_POINT_NAME_new()))
            goto crypto;
        dp->distpoint->type = 0; /* fullName */
        if (!(dp->distpoint->name.fullname = cm_ssl_general_names(&o->crl_url, 1, GEN_URI, res)))
            goto out;
        if (!sk_DIST_POINT_push(cdp, dp)) goto crypto;
        dp = NULL;
        if (add_ext(x, NID_crl_distribution_points, cdp, 0, res) != CM_OK) goto out;
    }
    ret = CM_OK;
    goto out;
crypto:
    ret = cm_fail_ssl(res, "crypto", "building AIA/CDP extensions failed");
out:
    GENERAL_NAME_free(gn); gn = NULL;
    ACCESS_DESCRIPTION_free(ad); ad = NULL;
    AUTHORITY_INFO_ACCESS_free(aia); aia = NULL;
    DIST_POINT_free(dp); dp = NULL;
    CRL_DIST_POINTS_free(cdp); cdp = NULL;
    return ret;
}

/* RFC 7633 TLS Feature { status_request (5) }: Must-Staple. */
static int add_must_staple(X509 *x, struct cm_result *res)
{
    TLS_FEATURE *tlsf = NULL;
    ASN1_INTEGER *status_request = NULL;
    int ret = CM_ERR;

    if (!(tlsf = sk_ASN1_INTEGER_new_null()) || !(status_request = ASN1_INTEGER_new()) ||
        ASN1_INTEGER_set(status_request, 5) != 1 || !sk_ASN1_INTEGER_push(tlsf, status_request)) {
        ret = cm_fail_ssl(res, "crypto", "building the TLS Feature extension failed");
        goto out;
    }
    status_request = NULL; /* the stack's now */
    ret = add_ext(x, NID_tlsfeature, tlsf, 0, res);
out:
    ASN1_INTEGER_free(status_request); status_request = NULL;
    sk_ASN1_INTEGER_pop_free(tlsf, ASN1_INTEGER_free); tlsf = NULL;
    return ret;
}

int cm_cert_issue(const struct cm_issue_opts *o, char **cert_pem, char **serial_hex,
                  struct cm_result *res)
{
    EVP_PKEY *issuer_key = NULL, *subject_key = NULL;
    X509 *issuer = NULL, *x = NULL;
    X509_REQ *req = NULL;
    X509_NAME *subject = NULL;
    ASN1_INTEGER *serial = NULL;
    GENERAL_NAMES *san = NULL;
    BIO *bio = NULL;
    struct cm_strlist csr_names_list = {NULL, 0};
    const char *const *names;
    size_t names_count;
    const char *cn;
    int ret = CM_ERR;

    *cert_pem = NULL;
    if (serial_hex) *serial_hex = NULL;
    if (!o || !o->issuer_key) return cm_fail(res, "invalid", "issuing needs an issuer key");
    if (o->not_after <= o->not_before)
        return cm_fail(res, "invalid", "not_after must be later than not_before");
    if (o->subject_key && o->csr)
        return cm_fail(res, "invalid", "give a subject key or a CSR, not both");

    if (!(issuer_key = cm_ssl_load_private_key(o->issuer_key, strlen(o->issuer_key),
                                               "issuer key", res)))
        goto out;
    if (o->issuer_cert) {
        if (!(issuer = cm_ssl_load_cert(o->issuer_cert, strlen(o->issuer_cert),
                                        "issuer certificate", res)))
            goto out;
        if (EVP_PKEY_eq(X509_get0_pubkey(issuer), issuer_key) != 1) {
            ERR_clear_error();
            ret = cm_fail(res, "mismatch", "issuer key does not belong to the issuer certificate");
            goto out;
        }
    }
    if (o->csr) {
        if (!(req = cm_ssl_load_csr((const unsigned char *)o->csr, o->csr_len, res))) goto out;
        if (!(subject_key = X509_REQ_get_pubkey(req))) goto crypto;
    } else if (o->subject_key) {
        if (!(subject_key = cm_ssl_load_public_key(o->subject_key, strlen(o->subject_key),
                                                   "subject key", res)))
            goto out;
    } else if (!o->issuer_cert) {
        if (EVP_PKEY_up_ref(issuer_key) != 1) goto crypto;
        subject_key = issuer_key;
    } else {
        ret = cm_fail(res, "invalid", "issuing needs a subject key or a CSR");
        goto out;
    }
    if (!o->issuer_cert && EVP_PKEY_eq(subject_key, issuer_key) != 1) {
        ERR_clear_error();
        ret = cm_fail(res, "invalid", "a self-signed certificate's subject key must be the issuer key");
        goto out;
    }

    names = o->names;
    names_count = o->names ? o->names_count : 0;
    if (!o->names && req) {
        if (cm_ssl_csr_names(req, &csr_names_list, res) != CM_OK) goto out;
        names = (const char *const *)csr_names_list.items;
        names_count = csr_names_list.count;
    }
    cn = o->cn ? o->cn : names_count && strlen(names[0]) <= CM_X509_CN_MAX ? names[0] : NULL;
    if (!cn && names_count == 0) {
        ret = cm_fail(res, "invalid", "a certificate needs names or a cn");
        goto out;
    }
    if (cn && strlen(cn) > CM_X509_CN_MAX) {
        ret = cm_fail(res, "invalid", "cn is longer than %d bytes", CM_X509_CN_MAX);
        goto out;
    }

    if (!(serial = serial_for(o->serial_hex, res))) goto out;
    if (!(x = X509_new()) || X509_set_version(x, X509_VERSION_3) != 1 ||
        X509_set_serialNumber(x, serial) != 1)
        goto crypto;
    if (!(subject = X509_NAME_new())) goto crypto;
    if (cn && cm_ssl_add_cn(subject, cn, res) != CM_OK) goto out;
    if (X509_set_subject_name(x, subject) != 1 ||
        X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : subject) != 1)
        goto crypto;
    if (!ASN1_TIME_set(X509_getm_notBefore(x), (time_t)o->not_before) ||
        !ASN1_TIME_set(X509_getm_notAfter(x), (time_t)o->not_after))
        goto crypto;
    if (X509_set_pubkey(x, subject_key) != 1) goto crypto;

    if (add_usage(x, o, subject_key, res) != CM_OK) goto out;
    if (add_key_ids(x, issuer, res) != CM_OK) goto out;
    if (names_count) {
        if (!(san = cm_ssl_general_names(names, names_count, GEN_DNS, res))) goto out;
        /* RFC 5280 4.2.1.6: SAN is critical when the subject is empty. */
        if (add_ext(x, NID_subject_alt_name, san, cn == NULL, res) != CM_OK) goto out;
    }
    if (add_urls(x, o, res) != CM_OK) goto out;
    if (o->must_staple && add_must_staple(x, res) != CM_OK) goto out;

    if (X509_sign(x, issuer_key, EVP_sha256()) <= 0) goto crypto;
    if (!(bio = BIO_new(BIO_s_mem())) || PEM_write_bio_X509(bio, x) != 1 ||
        !(*cert_pem = cm_ssl_bio_string(bio, NULL)))
        goto crypto;
    if (serial_hex && !(*serial_hex = cm_ssl_integer_hex(X509_get0_serialNumber(x)))) {
        free(*cert_pem); *cert_pem = NULL;
        goto crypto;
    }
    ret = CM_OK;
    goto out;
crypto:
    ret = cm_fail_ssl(res, "crypto", "issuing the certificate failed");
out:
    BIO_free(bio); bio = NULL;
    GENERAL_NAMES_free(san); san = NULL;
    X509_NAME_free(subject); subject = NULL;
    ASN1_INTEGER_free(serial); serial = NULL;
    X509_free(x); x = NULL;
    cm_strlist_free(&csr_names_list);
    X509_REQ_free(req); req = NULL;
    EVP_PKEY_free(subject_key); subject_key = NULL;
    X509_free(issuer); issuer = NULL;
    EVP_PKEY_free(issuer_key); issuer_key = NULL;
    return ret;
}

/* ------------------------------------------------------------------------ */
/* shared by the builders                                                    */

/* 1 if key is the private half of cert's public key; else 0 with res
 * ("mismatch", naming whose key: "issuer", "responder"). */
static int key_belongs(const X509 *cert, EVP_PKEY *key, const char *whose, struct cm_result *res)
{
    if (EVP_PKEY_eq(X509_get0_pubkey(cert), key) == 1) return 1;
    ERR_clear_error();
    cm_fail(res, "mismatch", "the %s key does not belong to its certificate", whose);
    return 0;
}

/* Copy n bytes of OpenSSL-allocated DER into a malloc'ed *der the caller
 * owns (the caller frees buf either way). */
static int take_der(const unsigned char *buf, int n, unsigned char **der, size_t *der_len,
                    struct cm_result *res)
{
    if (n <= 0) return cm_fail(res, "crypto", "no DER produced");
    if (!(*der = malloc((size_t)n))) return cm_fail(res, "ENOMEM", "out of memory");
    memcpy(*der, buf, (size_t)n);
    *der_len = (size_t)n;
    return CM_OK;
}

/* ------------------------------------------------------------------------ */
/* OCSP responses                                                           */

static ASN1_GENERALIZEDTIME *gtime(int64_t t)
{
    return ASN1_GENERALIZEDTIME_set(NULL, (time_t)t);
}

int cm_ocsp_response_build(const struct cm_ocsp_build_opts *o, unsigned char **der,
                           size_t *der_len, struct cm_result *res)
{
    X509 *issuer = NULL, *cert = NULL, *rcert = NULL;
    EVP_PKEY *key = NULL;
    OCSP_CERTID *id = NULL;
    OCSP_BASICRESP *bs = NULL;
    OCSP_RESPONSE *resp = NULL;
    ASN1_GENERALIZEDTIME *thisupd = NULL, *nextupd = NULL, *revtime = NULL;
    ASN1_GENERALIZEDTIME *produced;
    unsigned char *buf = NULL;
    int n, ret = CM_ERR, delegated;

    *der = NULL;
    *der_len = 0;
    if (!o) return cm_fail(res, "invalid", "no OCSP build options");
    delegated = o->responder_cert != NULL;
    if ((unsigned)o->status > CM_OCSP_UNKNOWN)
        return cm_fail(res, "invalid", "OCSP status must be good, revoked or unknown");
    if (o->this_update <= 0) return cm_fail(res, "invalid", "OCSP this_update is required");
    if (o->next_update && o->next_update < o->this_update)
        return cm_fail(res, "invalid", "OCSP next_update is before this_update");
    if (o->reason != -1 && !cm_ocsp_reason_name(o->reason))
        return cm_fail(res, "invalid", "OCSP revocation reason %d is not a CRLReason", o->reason);
    if (delegated ? !o->responder_key : !o->issuer_key)
        return cm_fail(res, "invalid", "OCSP signing needs the %s key",
                       delegated ? "responder" : "issuer");

    if (!(issuer = cm_ssl_load_cert(o->issuer_cert, o->issuer_cert_len, "issuer certificate", res)))
        goto out;
    if (!(cert = cm_ssl_load_cert(o->cert, o->cert_len, "certificate", res))) goto out;
    if (delegated) {
        if (!(rcert = cm_ssl_load_cert(o->responder_cert, o->responder_cert_len,
                                       "responder certificate", res)))
            goto out;
        if (!(key = cm_ssl_load_private_key(o->responder_key, o->responder_key_len,
                                            "responder key", res)))
            goto out;
    } else if (!(key = cm_ssl_load_private_key(o->issuer_key, o->issuer_key_len, "issuer key",
                                               res))) {
        goto out;
    }
    if (!key_belongs(delegated ? rcert : issuer, key, delegated ? "responder" : "issuer", res))
        goto out;

    /* SHA-1 CertIDs: what RFC 5019 responders and clients use. */
    if (!(id = OCSP_cert_to_id(EVP_sha1(), cert, issuer))) goto crypto;
    if (!(bs = OCSP_BASICRESP_new())) goto crypto;
    if (!(thisupd = gtime(o->this_update))) goto crypto;
    if (o->next_update && !(nextupd = gtime(o->next_update))) goto crypto;
    if (o->status == CM_OCSP_REVOKED &&
        !(revtime = gtime(o->revoked_at ? o->revoked_at : o->this_update)))
        goto crypto;
    if (!OCSP_basic_add1_status(bs, id,
                                o->status == CM_OCSP_GOOD      ? V_OCSP_CERTSTATUS_GOOD
                                : o->status == CM_OCSP_REVOKED ? V_OCSP_CERTSTATUS_REVOKED
                                                               : V_OCSP_CERTSTATUS_UNKNOWN,
                                o->status == CM_OCSP_REVOKED ? o->reason : -1, revtime, thisupd,
                                nextupd))
        goto crypto;
    /* producedAt from opts, not the wall clock (OCSP_NOTIME below): a test on
     * a fake clock gets a response consistent with its own time.  The getter
     * returns the response's own field, so setting it in place is sound. */
    produced = (ASN1_GENERALIZEDTIME *)OCSP_resp_get0_produced_at(bs);
    if (!produced ||
        !ASN1_GENERALIZEDTIME_set(produced, (time_t)(o->produced_at ? o->produced_at
                                                                     : o->this_update)))
        goto crypto;
    /* A delegated responder ships its certificate; the issuer need not. */
    if (OCSP_basic_sign(bs, delegated ? rcert : issuer, key, EVP_sha256(), NULL,
                        OCSP_NOTIME | (delegated ? 0 : OCSP_NOCERTS)) != 1)
        goto crypto;
    if (!(resp = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs))) goto crypto;
    if ((n = i2d_OCSP_RESPONSE(resp, &buf)) <= 0) goto crypto;
    ret = take_der(buf, n, der, der_len, res);
    goto out;
crypto:
    ret = cm_fail_ssl(res, "crypto", "building the OCSP response failed");
out:
    OPENSSL_free(buf); buf = NULL;
    OCSP_RESPONSE_free(resp); resp = NULL;
    ASN1_GENERALIZEDTIME_free(thisupd); thisupd = NULL;
    ASN1_GENERALIZEDTIME_free(nextupd); nextupd = NULL;
    ASN1_GENERALIZEDTIME_free(revtime); revtime = NULL;
    OCSP_BASICRESP_free(bs); bs = NULL;
    OCSP_CERTID_free(id); id = NULL;
    EVP_PKEY_free(key); key = NULL;
    X509_free(rcert); rcert = NULL;
    X509_free(cert); cert = NULL;
    X509_free(issuer); issuer = NULL;
    return ret;
}

/* ------------------------------------------------------------------------ */
/* CRLs                                                                     */

static int crl_add_entry(X509_CRL *crl, const struct cm_crl_entry *e, size_t i,
                         struct cm_result *res)
{
    X509_REVOKED *rev = NULL;
    ASN1_INTEGER *serial = NULL;
    ASN1_TIME *when = NULL;
    ASN1_ENUMERATED *reason = NULL;
    int ret = CM_ERR;

    if (!e->serial_hex) {
        ret = cm_fail(res, "invalid", "CRL entry %zu has no serial", i + 1);
        goto out;
    }
    if (e->reason != -1 && !cm_ocsp_reason_name(e->reason)) {
        ret = cm_fail(res, "invalid", "CRL entry %zu: reason %d is not a CRLReason", i + 1,
                      e->reason);
        goto out;
    }
    if (!(serial = serial_for(e->serial_hex, res))) goto out;
    if (!(rev = X509_REVOKED_new()) || X509_REVOKED_set_serialNumber(rev, serial) != 1)
        goto crypto;
    if (!(when = ASN1_TIME_set(NULL, (time_t)e->revoked_at)) ||
        X509_REVOKED_set_revocationDate(rev, when) != 1)
        goto crypto;
    if (e->reason >= 0) {
        if (!(reason = ASN1_ENUMERATED_new()) || ASN1_ENUMERATED_set(reason, e->reason) != 1 ||
            X509_REVOKED_add1_ext_i2d(rev, NID_crl_reason, reason, 0, 0) != 1)
            goto crypto;
    }
    if (X509_CRL_add0_revoked(crl, rev) != 1) goto crypto;
    rev = NULL; /* the CRL's now */
    ret = CM_OK;
    goto out;
crypto:
    ret = cm_fail_ssl(res, "crypto", "adding CRL entry %zu failed", i + 1);
out:
    ASN1_ENUMERATED_free(reason); reason = NULL;
    ASN1_TIME_free(when); when = NULL;
    ASN1_INTEGER_free(serial); serial = NULL;
    X509_REVOKED_free(rev); rev = NULL;
    return ret;
}

int cm_crl_build(const struct cm_crl_build_opts *o, unsigned char **der, size_t *der_len,
                 struct cm_result *res)
{
    X509 *issuer = NULL;
    EVP_PKEY *key = NULL;
    X509_CRL *crl = NULL;
    ASN1_TIME *last = NULL, *next = NULL;
    ASN1_INTEGER *number = NULL;
    unsigned char *buf = NULL;
    size_t i;
    int n, ret = CM_ERR;

    *der = NULL;
    *der_len = 0;
    if (!o) return cm_fail(res, "invalid", "no CRL build options");
    if (o->this_update <= 0) return cm_fail(res, "invalid", "CRL this_update is required");
    if (o->next_update && o->next_update < o->this_update)
        return cm_fail(res, "invalid", "CRL next_update is before this_update");
    if (o->entry_count && !o->entries) return cm_fail(res, "invalid", "CRL entries missing");

    if (!(issuer = cm_ssl_load_cert(o->issuer_cert, o->issuer_cert_len, "issuer certificate",
                                    res)))
        goto out;
    if (!(key = cm_ssl_load_private_key(o->issuer_key, o->issuer_key_len, "issuer key", res)))
        goto out;
    if (!key_belongs(issuer, key, "issuer", res)) goto out;
    if (!(crl = X509_CRL_new()) || X509_CRL_set_version(crl, 1 /* v2 */) != 1 ||
        X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer)) != 1)
        goto crypto;
    if (!(last = ASN1_TIME_set(NULL, (time_t)o->this_update)) ||
        X509_CRL_set1_lastUpdate(crl, last) != 1)
        goto crypto;
    if (o->next_update && (!(next = ASN1_TIME_set(NULL, (time_t)o->next_update)) ||
                           X509_CRL_set1_nextUpdate(crl, next) != 1))
        goto crypto;
    if (o->crl_number_hex) {
        if (!(number = serial_for(o->crl_number_hex, res))) goto out;
        if (X509_CRL_add1_ext_i2d(crl, NID_crl_number, number, 0, 0) != 1) goto crypto;
    }
    for (i = 0; i < o->entry_count; i++)
        if (crl_add_entry(crl, &o->entries[i], i, res) != CM_OK) goto out;
    if (X509_CRL_sort(crl) != 1) goto crypto;
    if (X509_CRL_sign(crl, key, EVP_sha256()) <= 0) goto crypto;
    if ((n = i2d_X509_CRL(crl, &buf)) <= 0) goto crypto;
    ret = take_der(buf, n, der, der_len, res);
    goto out;
crypto:
    ret = cm_fail_ssl(res, "crypto", "building the CRL failed");
out:
    OPENSSL_free(buf); buf = NULL;
    ASN1_INTEGER_free(number); number = NULL;
    ASN1_TIME_free(next); next = NULL;
    ASN1_TIME_free(last); last = NULL;
    X509_CRL_free(crl); crl = NULL;
    EVP_PKEY_free(key); key = NULL;
    X509_free(issuer); issuer = NULL;
    return ret;
}
