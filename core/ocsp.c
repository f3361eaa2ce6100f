/* ocsp.c - checking OCSP responses on OpenSSL (building them: localca.c). */
#include "ocsp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "ocsp_ssl.h"
#include "rfc3339.h"
#include "x509.h"
#include "x509_ssl.h"

static const char *const status_names[] = {"good", "revoked", "unknown"};

const char *cm_ocsp_status_name(enum cm_ocsp_cert_status s)
{
    return (unsigned)s < 3 ? status_names[s] : "unknown";
}

int cm_ocsp_status_parse(const char *name)
{
    int i;
    for (i = 0; name && i < 3; i++)
        if (strcmp(name, status_names[i]) == 0) return i;
    return -1;
}

/* RFC 5280 5.3.1 CRLReason; 7 is not used. */
static const char *const reason_names[] = {
    "unspecified",  "keyCompromise",        "cACompromise",  "affiliationChanged",
    "superseded",   "cessationOfOperation", "certificateHold", NULL,
    "removeFromCRL", "privilegeWithdrawn",  "aACompromise",
};
#define REASON_COUNT (int)(sizeof reason_names / sizeof reason_names[0])

const char *cm_ocsp_reason_name(int reason)
{
    return reason >= 0 && reason < REASON_COUNT ? reason_names[reason] : NULL;
}

int cm_ocsp_reason_parse(const char *name)
{
    int i;
    for (i = 0; name && i < REASON_COUNT; i++)
        if (reason_names[i] && strcmp(name, reason_names[i]) == 0) return i;
    return -1;
}

/* RFC 6960 OCSPResponseStatus names, for the "ocsp:<status>" codes. */
static const char *response_status_name(int st)
{
    switch (st) {
    case OCSP_RESPONSE_STATUS_MALFORMEDREQUEST: return "malformedRequest";
    case OCSP_RESPONSE_STATUS_INTERNALERROR: return "internalError";
    case OCSP_RESPONSE_STATUS_TRYLATER: return "tryLater";
    case OCSP_RESPONSE_STATUS_SIGREQUIRED: return "sigRequired";
    case OCSP_RESPONSE_STATUS_UNAUTHORIZED: return "unauthorized";
    default: return "unknownStatus";
    }
}

/* The CertID of the certificate with `serial` that issuer issued, under md:
 * the hashes of the issuer's name and key, as OCSP_cert_to_id makes them
 * (without needing the certificate itself decoded). */
static OCSP_CERTID *cert_id(const EVP_MD *md, const ASN1_INTEGER *serial, X509 *issuer)
{
    return OCSP_cert_id_new(md, X509_get_subject_name(issuer), X509_get0_pubkey_bitstr(issuer),
                            serial);
}

/* The SingleResponse about the certificate with `serial` that issuer issued,
 * under whatever hash its CertID uses. */
static OCSP_SINGLERESP *find_single(OCSP_BASICRESP *bs, const ASN1_INTEGER *serial, X509 *issuer)
{
    int i, n = OCSP_resp_count(bs);
    for (i = 0; i < n; i++) {
        OCSP_SINGLERESP *single = OCSP_resp_get0(bs, i);
        const OCSP_CERTID *cid = single ? OCSP_SINGLERESP_get0_id(single) : NULL;
        ASN1_OBJECT *md_obj = NULL;
        const EVP_MD *md;
        OCSP_CERTID *ours;
        int same;
        if (!cid || !OCSP_id_get0_info(NULL, &md_obj, NULL, NULL, (OCSP_CERTID *)cid)) continue;
        if (!(md = EVP_get_digestbyobj(md_obj))) continue;
        if (!(ours = cert_id(md, serial, issuer))) continue;
        same = OCSP_id_cmp(ours, cid) == 0;
        OCSP_CERTID_free(ours); ours = NULL;
        if (same) return single;
    }
    return NULL;
}

int cm_ssl_ocsp_decode(const unsigned char *der, size_t der_len, OCSP_RESPONSE **resp_out,
                       OCSP_BASICRESP **bs_out, struct cm_result *res)
{
    OCSP_RESPONSE *resp = NULL;
    const unsigned char *p = der;
    int st;

    *resp_out = NULL;
    *bs_out = NULL;
    if (!der || der_len == 0) return cm_fail(res, "parse", "empty OCSP response");
    if (der_len > CM_OCSP_MAX_INPUT)
        return cm_fail(res, "toobig", "OCSP response is %zu bytes, more than the %d allowed",
                       der_len, CM_OCSP_MAX_INPUT);
    resp = d2i_OCSP_RESPONSE(NULL, &p, (long)der_len);
    if (!resp) return cm_fail_ssl(res, "parse", "not a DER OCSP response");
    if (p != der + der_len) {
        OCSP_RESPONSE_free(resp); resp = NULL;
        return cm_fail(res, "parse", "OCSP response has %zu bytes of trailing data",
                       (size_t)(der + der_len - p));
    }
    st = OCSP_response_status(resp);
    if (st != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        char code[32];
        snprintf(code, sizeof code, "ocsp:%s", response_status_name(st));
        OCSP_RESPONSE_free(resp); resp = NULL;
        return cm_fail(res, code, "OCSP responder answered %s", response_status_name(st));
    }
    if (!(*bs_out = OCSP_response_get1_basic(resp))) {
        OCSP_RESPONSE_free(resp); resp = NULL;
        return cm_fail_ssl(res, "parse", "OCSP response is not a basic response");
    }
    *resp_out = resp;
    return CM_OK;
}

/* What one SingleResponse says, into *info. */
static int single_info(OCSP_BASICRESP *bs, OCSP_SINGLERESP *single, struct cm_ocsp_info *info,
                       struct cm_result *res)
{
    ASN1_GENERALIZEDTIME *revtime = NULL, *thisupd = NULL, *nextupd = NULL;
    int reason = -1;
    int st = OCSP_single_get0_status(single, &reason, &revtime, &thisupd, &nextupd);

    memset(info, 0, sizeof *info);
    if (st < 0 || !thisupd) return cm_fail_ssl(res, "parse", "OCSP response has no certificate status");
    info->status = st == V_OCSP_CERTSTATUS_GOOD      ? CM_OCSP_GOOD
                   : st == V_OCSP_CERTSTATUS_REVOKED ? CM_OCSP_REVOKED
                                                     : CM_OCSP_UNKNOWN;
    /* The ENUMERATED is the responder's: anything outside RFC 5280's 0-10
     * is no CRLReason, and callers are promised one or -1 (ocsp.h). */
    info->reason = st == V_OCSP_CERTSTATUS_REVOKED && reason >= 0 && reason <= 10 ? reason : -1;
    if (cm_ssl_time_unix(thisupd, &info->this_update) != CM_OK ||
        (nextupd && cm_ssl_time_unix(nextupd, &info->next_update) != CM_OK) ||
        (revtime && cm_ssl_time_unix(revtime, &info->revoked_at) != CM_OK) ||
        cm_ssl_time_unix(OCSP_resp_get0_produced_at(bs), &info->produced_at) != CM_OK)
        return cm_fail_ssl(res, "parse", "OCSP response has a malformed time");
    return CM_OK;
}

int cm_ocsp_response_peek(const unsigned char *der, size_t der_len, struct cm_ocsp_info *out,
                          struct cm_result *res)
{
    OCSP_RESPONSE *resp = NULL;
    OCSP_BASICRESP *bs = NULL;
    OCSP_SINGLERESP *single;
    struct cm_ocsp_info info;
    int ret = CM_ERR;

    memset(&info, 0, sizeof info);
    memset(out, 0, sizeof *out);
    if (cm_ssl_ocsp_decode(der, der_len, &resp, &bs, res) != CM_OK) goto out;
    if (OCSP_resp_count(bs) < 1 || !(single = OCSP_resp_get0(bs, 0))) {
        ret = cm_fail(res, "parse", "OCSP response holds no certificate status");
        goto out;
    }
    /* Into a local first: single_info stops half-way on a malformed time,
     * and *out stays zeroed on failure, as with cm_ocsp_response_parse. */
    if ((ret = single_info(bs, single, &info, res)) == CM_OK) *out = info;
out:
    ERR_clear_error();
    OCSP_BASICRESP_free(bs); bs = NULL;
    OCSP_RESPONSE_free(resp); resp = NULL;
    return ret;
}

int cm_revocation_times_check(const char *what, int64_t this_update, int64_t next_update,
                              int64_t now, int64_t skew, struct cm_result *res)
{
    char at[CM_RFC3339_ISO_MAX], nowtext[CM_RFC3339_ISO_MAX];
    if (skew < 0) skew = 0;
    cm_rfc3339_iso((double)now, nowtext);
    if (this_update > now + skew) {
        cm_rfc3339_iso((double)this_update, at);
        return cm_fail(res, "notyet",
                       "%s is not valid yet: thisUpdate %s is %lld s after now (%s), more than the "
                       "%lld s skew allowed",
                       what, at, (long long)(this_update - now), nowtext, (long long)skew);
    }
    if (next_update && next_update <= now) {
        cm_rfc3339_iso((double)next_update, at);
        return cm_fail(res, "stale", "%s is stale: nextUpdate %s is %lld s before now (%s)", what,
                       at, (long long)(now - next_update), nowtext);
    }
    return CM_OK;
}

X509_STORE *cm_ssl_ocsp_trust(X509 *issuer, int64_t now, struct cm_result *res)
{
    X509_STORE *store = NULL;
    X509_VERIFY_PARAM *param;

    /* Trust exactly the issuer (often an intermediate: PARTIAL_CHAIN). */
    if (!(store = X509_STORE_new()) || X509_STORE_add_cert(store, issuer) != 1) goto crypto;
    param = X509_STORE_get0_param(store);
    if (X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN |
                                               (now ? 0 : X509_V_FLAG_NO_CHECK_TIME)) != 1)
        goto crypto;
    if (now) X509_VERIFY_PARAM_set_time(param, (time_t)now);
    return store;
crypto:
    cm_fail_ssl(res, "crypto", "checking the OCSP response failed");
    X509_STORE_free(store); store = NULL;
    return NULL;
}

int cm_ssl_ocsp_check(OCSP_BASICRESP *bs, const ASN1_INTEGER *serial, X509 *issuer,
                      X509_STORE *store, int signed_ok, int verify_signature,
                      int64_t now, int64_t skew, struct cm_ocsp_info *out, struct cm_result *res)
{
    STACK_OF(X509) *certs = NULL;
    OCSP_SINGLERESP *single;
    struct cm_ocsp_info info;
    int ret = CM_ERR;

    memset(&info, 0, sizeof info);
    memset(out, 0, sizeof *out);
    if (verify_signature && !signed_ok) {
        /* No OCSP_NOCHECKS: OpenSSL then accepts a signer only if it is the
         * issuer named by the CertIDs, or a responder that issuer signed with
         * the OCSPSigning EKU.  OCSP_NOEXPLICIT: never fall back to "anything
         * under a self-signed root may answer", which a root issuer would
         * allow.  The stack is per call: the store may be shared by threads. */
        if (!store || !(certs = sk_X509_new_null()) || !sk_X509_push(certs, issuer)) {
            ret = cm_fail_ssl(res, "crypto", "checking the OCSP response failed");
            goto out;
        }
        if (OCSP_basic_verify(bs, certs, store, OCSP_NOEXPLICIT) != 1) {
            ret = cm_fail_ssl(res, "verify",
                              "OCSP response is not signed by the issuer or a responder it delegated to");
            goto out;
        }
    }
    if (!(single = find_single(bs, serial, issuer))) {
        ERR_clear_error();
        ret = cm_fail(res, "mismatch", "OCSP response is not about this certificate");
        goto out;
    }
    if (single_info(bs, single, &info, res) != CM_OK) goto out;
    if (now > 0 && cm_revocation_times_check("OCSP response", info.this_update, info.next_update, now,
                                              skew, res) != CM_OK)
        goto out;
    *out = info;
    ret = CM_OK;
out:
    ERR_clear_error();
    sk_X509_free(certs); certs = NULL; /* borrowed issuer: not popped */
    return ret;
}

int cm_ocsp_response_parse(const unsigned char *der, size_t der_len, const char *cert_data,
                           size_t cert_len, const char *issuer_data, size_t issuer_len,
                           int64_t now, int64_t skew, struct cm_ocsp_info *out,
                           struct cm_result *res)
{
    OCSP_RESPONSE *resp = NULL;
    OCSP_BASICRESP *bs = NULL;
    ASN1_INTEGER *serial = NULL;
    X509 *issuer = NULL;
    X509_STORE *store = NULL;
    int ret = CM_ERR;

    memset(out, 0, sizeof *out);
    if (cm_ssl_ocsp_decode(der, der_len, &resp, &bs, res) != CM_OK) goto out;
    /* of the certificate only its serial is needed; the issuer is cached */
    if (!(serial = cm_ssl_cert_serial(cert_data, cert_len, "certificate", res))) goto out;
    if (!(issuer = cm_ssl_load_issuer(issuer_data, issuer_len, "issuer certificate", res)))
        goto out;
    if (!(store = cm_ssl_ocsp_trust(issuer, now, res))) goto out;
    ret = cm_ssl_ocsp_check(bs, serial, issuer, store, 0, 1, now, skew, out, res);
out:
    ERR_clear_error();
    X509_STORE_free(store); store = NULL;
    X509_free(issuer); issuer = NULL;
    ASN1_INTEGER_free(serial); serial = NULL;
    OCSP_BASICRESP_free(bs); bs = NULL;
    OCSP_RESPONSE_free(resp); resp = NULL;
    return ret;
}

int cm_ocsp_request_build(const char *cert_data, size_t cert_len, const char *issuer_data,
                          size_t issuer_len, unsigned char **der, size_t *der_len,
                          struct cm_result *res)
{
    ASN1_INTEGER *serial = NULL;
    X509 *issuer = NULL;
    OCSP_REQUEST *req = NULL;
    OCSP_CERTID *id = NULL;
    unsigned char *buf = NULL;
    int n, ret = CM_ERR;

    *der = NULL;
    *der_len = 0;
    if (!(serial = cm_ssl_cert_serial(cert_data, cert_len, "certificate", res))) goto out;
    if (!(issuer = cm_ssl_load_issuer(issuer_data, issuer_len, "issuer certificate", res)))
        goto out;
    if (!(req = OCSP_REQUEST_new())) goto crypto;
    if (!(id = cert_id(EVP_sha1(), serial, issuer))) goto crypto;
    if (!OCSP_request_add0_id(req, id)) goto crypto;
    id = NULL; /* the request owns it now */
    if ((n = i2d_OCSP_REQUEST(req, &buf)) <= 0) goto crypto;
    if (!(*der = malloc((size_t)n))) {
        ret = cm_fail(res, "ENOMEM", "out of memory for the OCSP request");
        goto out;
    }
    memcpy(*der, buf, (size_t)n);
    *der_len = (size_t)n;
    ret = CM_OK;
    goto out;
crypto:
    ret = cm_fail_ssl(res, "crypto", "building the OCSP request failed");
out:
    ERR_clear_error();
    OPENSSL_free(buf); buf = NULL;
    OCSP_CERTID_free(id); id = NULL;
    OCSP_REQUEST_free(req); req = NULL;
    X509_free(issuer); issuer = NULL;
    ASN1_INTEGER_free(serial); serial = NULL;
    return ret;
}
