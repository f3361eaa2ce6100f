/* ocsp_der.c - see ocsp_der.h.  Field names follow RFC 6960 4.2.1. */
#include "ocsp_der.h"

#include <string.h>

#include <openssl/evp.h>

#include "der.h"

static const unsigned char OID_OCSP_BASIC[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01};
static const unsigned char OID_SHA1[] = {0x2b, 0x0e, 0x03, 0x02, 0x1a};
static const unsigned char OID_SHA256[] = {0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01};
/* ecdsa-with-SHA256/384/512: 1.2.840.10045.4.3.{2,3,4} */
static const unsigned char OID_ECDSA_SHA2[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03};

/* The latest second a GeneralizedTime can name (9999-12-31T23:59:59Z), and
 * the earliest taken: OpenSSL's conversion (timegm) is not asked about
 * years before this. */
#define LAST_SECOND 253402300799LL
#define FIRST_SECOND -631152000LL /* 1950-01-01 */

static int oid_is(const struct cm_der_elem *e, const unsigned char *want, size_t n)
{
    return e->tag == CM_DER_OID && e->len == n && memcmp(e->body, want, n) == 0;
}

static int same_bytes(const struct cm_der_elem *e, const unsigned char *want, size_t n)
{
    return e->len == n && memcmp(e->body, want, n) == 0;
}

/* A GeneralizedTime in RFC 5280's one form, as Unix seconds. */
static int read_time(struct cm_der *d, int64_t *t)
{
    struct cm_der_elem e;
    if (cm_der_expect(d, CM_DER_GENERALIZEDTIME, &e) != CM_OK || cm_der_time(&e, t) != CM_OK) return CM_ERR;
    return *t >= FIRST_SECOND && *t <= LAST_SECOND ? CM_OK : CM_ERR;
}

/* Extensions: SEQUENCE SIZE (1..MAX) OF SEQUENCE { OID, BOOLEAN TRUE
 * OPTIONAL (DER: FALSE is left out), OCTET STRING }.  Only the form is
 * checked: OpenSSL's decoding does not look inside the values either. */
static int extensions_ok(const struct cm_der_elem *explicit_tag)
{
    struct cm_der outer = cm_der_inside(explicit_tag), list;
    struct cm_der_elem seq, ext, e;
    int present, n = 0;
    if (cm_der_expect(&outer, CM_DER_SEQUENCE, &seq) != CM_OK || !cm_der_done(&outer)) return CM_ERR;
    list = cm_der_inside(&seq);
    while (!cm_der_done(&list)) {
        struct cm_der x;
        if (cm_der_expect(&list, CM_DER_SEQUENCE, &ext) != CM_OK) return CM_ERR;
        x = cm_der_inside(&ext);
        if (cm_der_expect(&x, CM_DER_OID, &e) != CM_OK || cm_der_oid_ok(e.body, e.len) != CM_OK) return CM_ERR;
        if (cm_der_optional(&x, CM_DER_BOOLEAN, &e, &present) != CM_OK) return CM_ERR;
        if (present && !(e.len == 1 && e.body[0] == 0xff)) return CM_ERR;
        if (cm_der_expect(&x, CM_DER_OCTET_STRING, &e) != CM_OK || !cm_der_done(&x)) return CM_ERR;
        n++;
    }
    return n > 0 ? CM_OK : CM_ERR;
}

/* CertID: SEQUENCE { AlgorithmIdentifier { sha1 | sha256, NULL or nothing },
 * issuerNameHash, issuerKeyHash, serialNumber }, naming fi's issuer.
 * *serial_el: the serialNumber element, whole. */
static int cert_id_of_issuer(const struct cm_ocsp_fast_issuer *fi, struct cm_der *d,
                             struct cm_der_elem *serial_el, const unsigned char **serial_at)
{
    struct cm_der_elem id, alg, oid, e, name_hash, key_hash;
    struct cm_der in, a;
    int present, sha1;
    if (cm_der_expect(d, CM_DER_SEQUENCE, &id) != CM_OK) return CM_ERR;
    in = cm_der_inside(&id);
    if (cm_der_expect(&in, CM_DER_SEQUENCE, &alg) != CM_OK) return CM_ERR;
    a = cm_der_inside(&alg);
    if (cm_der_next(&a, &oid) != CM_OK) return CM_ERR;
    if (oid_is(&oid, OID_SHA1, sizeof OID_SHA1)) sha1 = 1;
    else if (oid_is(&oid, OID_SHA256, sizeof OID_SHA256)) sha1 = 0;
    else return CM_ERR;
    if (cm_der_optional(&a, CM_DER_NULL, &e, &present) != CM_OK || (present && e.len != 0) || !cm_der_done(&a))
        return CM_ERR;
    if (cm_der_expect(&in, CM_DER_OCTET_STRING, &name_hash) != CM_OK ||
        cm_der_expect(&in, CM_DER_OCTET_STRING, &key_hash) != CM_OK)
        return CM_ERR;
    if (sha1 ? !same_bytes(&name_hash, fi->name_sha1, 20) || !same_bytes(&key_hash, fi->key_sha1, 20)
             : !same_bytes(&name_hash, fi->name_sha256, 32) || !same_bytes(&key_hash, fi->key_sha256, 32))
        return CM_ERR;
    *serial_at = in.p;
    if (cm_der_expect(&in, CM_DER_INTEGER, serial_el) != CM_OK ||
        cm_der_integer_ok(serial_el->body, serial_el->len) != CM_OK || !cm_der_done(&in))
        return CM_ERR;
    return CM_OK;
}

/* One SingleResponse; *mine says whether it is about serial, and when it is
 * (the first such), *info gets what it says. */
static int single_response(const struct cm_ocsp_fast_issuer *fi, struct cm_der *d, const unsigned char *serial,
                           size_t serial_len, int *mine, struct cm_ocsp_info *info)
{
    struct cm_der_elem single, serial_el, status, e;
    struct cm_der in;
    const unsigned char *serial_at;
    int64_t this_update, next_update = 0, revoked_at = 0;
    int present, reason = -1;
    enum cm_ocsp_cert_status st;

    if (cm_der_expect(d, CM_DER_SEQUENCE, &single) != CM_OK) return CM_ERR;
    in = cm_der_inside(&single);
    if (cert_id_of_issuer(fi, &in, &serial_el, &serial_at) != CM_OK) return CM_ERR;
    if (cm_der_next(&in, &status) != CM_OK) return CM_ERR;
    if (status.tag == CM_DER_CONTEXT(0) && status.len == 0) {
        st = CM_OCSP_GOOD;
    } else if (status.tag == CM_DER_CONTEXT(2) && status.len == 0) {
        st = CM_OCSP_UNKNOWN;
    } else if (status.tag == CM_DER_CONTEXT_CONS(1)) {
        /* RevokedInfo: revocationTime, [0] EXPLICIT CRLReason OPTIONAL */
        struct cm_der r = cm_der_inside(&status);
        st = CM_OCSP_REVOKED;
        if (read_time(&r, &revoked_at) != CM_OK) return CM_ERR;
        if (cm_der_optional(&r, CM_DER_CONTEXT_CONS(0), &e, &present) != CM_OK) return CM_ERR;
        if (present) {
            struct cm_der rr = cm_der_inside(&e);
            struct cm_der_elem en;
            if (cm_der_expect(&rr, 0x0a /* ENUMERATED */, &en) != CM_OK || !cm_der_done(&rr) ||
                cm_der_integer_ok(en.body, en.len) != CM_OK)
                return CM_ERR;
            /* anything outside RFC 5280's 0-10 is no CRLReason (ocsp.c's single_info) */
            reason = en.len == 1 && en.body[0] <= 10 ? en.body[0] : -1;
        }
        if (!cm_der_done(&r)) return CM_ERR;
    } else {
        return CM_ERR;
    }
    if (read_time(&in, &this_update) != CM_OK) return CM_ERR;
    if (cm_der_optional(&in, CM_DER_CONTEXT_CONS(0), &e, &present) != CM_OK) return CM_ERR;
    if (present) {
        struct cm_der n = cm_der_inside(&e);
        if (read_time(&n, &next_update) != CM_OK || !cm_der_done(&n)) return CM_ERR;
    }
    if (cm_der_optional(&in, CM_DER_CONTEXT_CONS(1), &e, &present) != CM_OK) return CM_ERR;
    if (present && extensions_ok(&e) != CM_OK) return CM_ERR;
    if (!cm_der_done(&in)) return CM_ERR;
    *mine = (size_t)(serial_el.body + serial_el.len - serial_at) == serial_len &&
            memcmp(serial_at, serial, serial_len) == 0;
    if (*mine) {
        memset(info, 0, sizeof *info);
        info->status = st;
        info->reason = st == CM_OCSP_REVOKED ? reason : -1;
        info->this_update = this_update;
        info->next_update = next_update;
        info->revoked_at = revoked_at;
    }
    return CM_OK;
}

/* ResponseData: the responder, producedAt, the SingleResponses; the one
 * about serial into *info. */
static int response_data(const struct cm_ocsp_fast_issuer *fi, const struct cm_der_elem *tbs,
                         const unsigned char *serial, size_t serial_len, struct cm_ocsp_info *info)
{
    struct cm_der in = cm_der_inside(tbs), list;
    struct cm_der_elem rid, e, responses;
    int64_t produced_at;
    int present, found = 0, count = 0;

    /* version [0]: DER leaves v1, the only version, out */
    if (cm_der_next(&in, &rid) != CM_OK) return CM_ERR;
    if (rid.tag == CM_DER_CONTEXT_CONS(2)) { /* byKey: the SHA-1 of the issuer's key */
        struct cm_der k = cm_der_inside(&rid);
        if (cm_der_expect(&k, CM_DER_OCTET_STRING, &e) != CM_OK || !cm_der_done(&k) ||
            !same_bytes(&e, fi->key_sha1, 20))
            return CM_ERR;
    } else if (rid.tag == CM_DER_CONTEXT_CONS(1)) { /* byName: the issuer's subject, the same bytes */
        if (!fi->subject_der || rid.len != fi->subject_len || memcmp(rid.body, fi->subject_der, rid.len) != 0)
            return CM_ERR;
    } else {
        return CM_ERR;
    }
    if (read_time(&in, &produced_at) != CM_OK) return CM_ERR;
    if (cm_der_expect(&in, CM_DER_SEQUENCE, &responses) != CM_OK) return CM_ERR;
    list = cm_der_inside(&responses);
    while (!cm_der_done(&list)) {
        struct cm_ocsp_info one;
        int mine = 0;
        if (single_response(fi, &list, serial, serial_len, &mine, &one) != CM_OK) return CM_ERR;
        count++;
        if (mine && !found) {
            *info = one;
            found = 1;
        }
    }
    if (count < 1 || !found) return CM_ERR; /* "mismatch": the OpenSSL path says so */
    if (cm_der_optional(&in, CM_DER_CONTEXT_CONS(1), &e, &present) != CM_OK) return CM_ERR;
    if (present && extensions_ok(&e) != CM_OK) return CM_ERR;
    if (!cm_der_done(&in)) return CM_ERR;
    info->produced_at = produced_at;
    return CM_OK;
}

/* certs [0] EXPLICIT SEQUENCE OF Certificate holding the issuer itself and
 * nothing else (`openssl ocsp` adds its signer): OpenSSL then finds the
 * issuer as the signer, as with none.  Any other certificate could be the
 * signer OpenSSL picks, so it declines. */
static int certs_are_issuer(const struct cm_ocsp_fast_issuer *fi, const struct cm_der_elem *explicit_tag)
{
    struct cm_der outer = cm_der_inside(explicit_tag), list;
    struct cm_der_elem seq, cert;
    int n = 0;
    if (!fi->issuer_der) return CM_ERR;
    if (cm_der_expect(&outer, CM_DER_SEQUENCE, &seq) != CM_OK || !cm_der_done(&outer)) return CM_ERR;
    list = cm_der_inside(&seq);
    while (!cm_der_done(&list)) {
        const unsigned char *at = list.p;
        if (cm_der_expect(&list, CM_DER_SEQUENCE, &cert) != CM_OK) return CM_ERR;
        if ((size_t)(list.p - at) != fi->issuer_len || memcmp(at, fi->issuer_der, fi->issuer_len) != 0)
            return CM_ERR;
        n++;
    }
    return n > 0 ? CM_OK : CM_ERR;
}

int cm_ocsp_der_check(const struct cm_ocsp_fast_issuer *fi, const unsigned char *der, size_t len,
                      const unsigned char *serial, size_t serial_len, int64_t now, int64_t skew,
                      struct cm_ocsp_der_result *out)
{
    struct cm_der d = cm_der_init(der, len), in, rb, basic, alg_in;
    struct cm_der_elem resp, e, bytes, oid, octets, basic_seq, tbs, alg, sig;
    const unsigned char *tbs_at;
    const EVP_MD *md;
    int present;

    if (!fi || !fi->key || !der || !serial || len == 0 || len > CM_OCSP_MAX_INPUT) return 0;
    /* OCSPResponse { responseStatus successful(0), [0] EXPLICIT ResponseBytes } */
    if (cm_der_expect(&d, CM_DER_SEQUENCE, &resp) != CM_OK || !cm_der_done(&d)) return 0;
    in = cm_der_inside(&resp);
    if (cm_der_expect(&in, 0x0a /* ENUMERATED */, &e) != CM_OK || e.len != 1 || e.body[0] != 0) return 0;
    if (cm_der_expect(&in, CM_DER_CONTEXT_CONS(0), &e) != CM_OK || !cm_der_done(&in)) return 0;
    rb = cm_der_inside(&e);
    if (cm_der_expect(&rb, CM_DER_SEQUENCE, &bytes) != CM_OK || !cm_der_done(&rb)) return 0;
    rb = cm_der_inside(&bytes);
    if (cm_der_expect(&rb, CM_DER_OID, &oid) != CM_OK || !oid_is(&oid, OID_OCSP_BASIC, sizeof OID_OCSP_BASIC) ||
        cm_der_expect(&rb, CM_DER_OCTET_STRING, &octets) != CM_OK || !cm_der_done(&rb))
        return 0;
    /* BasicOCSPResponse { tbsResponseData, signatureAlgorithm, signature }: no certs */
    basic = cm_der_init(octets.body, octets.len);
    if (cm_der_expect(&basic, CM_DER_SEQUENCE, &basic_seq) != CM_OK || !cm_der_done(&basic)) return 0;
    basic = cm_der_inside(&basic_seq);
    tbs_at = basic.p;
    if (cm_der_expect(&basic, CM_DER_SEQUENCE, &tbs) != CM_OK) return 0;
    if (cm_der_expect(&basic, CM_DER_SEQUENCE, &alg) != CM_OK) return 0;
    alg_in = cm_der_inside(&alg);
    if (cm_der_expect(&alg_in, CM_DER_OID, &oid) != CM_OK || !cm_der_done(&alg_in)) return 0;
    if (oid.len != sizeof OID_ECDSA_SHA2 + 1 || memcmp(oid.body, OID_ECDSA_SHA2, sizeof OID_ECDSA_SHA2) != 0)
        return 0;
    switch (oid.body[sizeof OID_ECDSA_SHA2]) {
    case 2: md = fi->md[0]; break;
    case 3: md = fi->md[1]; break;
    case 4: md = fi->md[2]; break;
    default: return 0;
    }
    /* a BIT STRING with unused bits is no signature (ASN1_item_verify) */
    if (cm_der_expect(&basic, CM_DER_BIT_STRING, &sig) != CM_OK || sig.len < 2 || sig.body[0] != 0) return 0;
    if (sig.len - 1 > CM_OCSP_DER_MAX_SIG) return 0;
    if (cm_der_optional(&basic, CM_DER_CONTEXT_CONS(0), &e, &present) != CM_OK || !cm_der_done(&basic)) return 0;
    if (present && certs_are_issuer(fi, &e) != CM_OK) return 0;
    if (!md || response_data(fi, &tbs, serial, serial_len, &out->info) != CM_OK) return 0;
    /* the update window at now: a failure is the OpenSSL path's to report */
    if (now > 0) {
        if (skew < 0) skew = 0;
        if (out->info.this_update > now + skew) return 0;
        if (out->info.next_update && out->info.next_update <= now) return 0;
    }
    /* the signed bytes where they lie: DER, so what re-encoding them would give */
    if (EVP_Digest(tbs_at, (size_t)(tbs.body + tbs.len - tbs_at), out->dgst, &out->dlen, md, NULL) != 1 ||
        out->dlen > sizeof out->dgst)
        return 0;
    memcpy(out->sig, sig.body + 1, sig.len - 1);
    out->siglen = sig.len - 1;
    return 1;
}
