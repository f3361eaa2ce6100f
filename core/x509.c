/* x509.c - certificates, chains and CSRs on OpenSSL (keys: key.c; the local
 * CA: localca.c).
 *
 * The chain parser is on the cache's load path (100k certificates at start,
 * 30 us each at most), so it scans PEM itself (no BIO, no PEM_read_bio_X509
 * with its header and password handling) and decodes base64 straight into the
 * buffers the facts keep.  Each certificate is then read by the DER fast
 * path (x509_der.c: one walk, no ASN.1 templates), and only where that
 * declines (an unusual name or extension, anything not strict DER) by
 * OpenSSL -- but not d2i_X509: OpenSSL 3.0 decodes the public key through
 * its provider decoders there, about 100 us a certificate.  Our own ASN.1
 * template (below) is X.509's with the key left as an opaque SEQUENCE.
 */
#include "x509.h"
#include "x509_der.h"
#include "x509_ssl.h"

#include "encoding.h"
#include "renewal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/asn1t.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* Certificates in one chain: real chains have 1-4; anything past this is an
 * attack or a mistake (a whole CA bundle where a chain belongs). */
#define MAX_CHAIN 16

/* ------------------------------------------------------------------------ */
/* small helpers                                                            */

static char *dup_mem(const void *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s) return NULL;
    if (n) memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

int cm_strlist_push_n(struct cm_strlist *l, const char *s, size_t n)
{
    char **items;
    char *copy = dup_mem(s, n);
    if (!copy) return CM_ERR;
    items = realloc(l->items, (l->count + 1) * sizeof *items);
    if (!items) {
        free(copy); copy = NULL;
        return CM_ERR;
    }
    l->items = items;
    l->items[l->count++] = copy;
    return CM_OK;
}

void cm_strlist_free(struct cm_strlist *l)
{
    size_t i;
    if (!l) return;
    for (i = 0; i < l->count; i++) {
        free(l->items[i]); l->items[i] = NULL;
    }
    free(l->items); l->items = NULL;
    l->count = 0;
}

/* Text from a certificate (a DNS name, a URI) is attacker-chosen: keep only
 * printable ASCII without spaces, so nothing downstream (logs, paths, URLs)
 * meets a NUL, a newline or an escape sequence. */
int cm_x509_usable_text(const unsigned char *p, size_t n)
{
    size_t i;
    if (n == 0) return 0;
    for (i = 0; i < n; i++)
        if (p[i] <= 0x20 || p[i] >= 0x7f) return 0;
    return 1;
}

/* Lower-case hex of an INTEGER's big-endian magnitude, two digits a byte (as
 * `openssl x509 -serial` prints it), "-" first when negative, "00" for zero. */
char *cm_ssl_integer_hex(const ASN1_INTEGER *ai)
{
    const unsigned char *p = ASN1_STRING_get0_data(ai);
    int n = ASN1_STRING_length(ai);
    int neg = ASN1_STRING_type(ai) == V_ASN1_NEG_INTEGER;
    char *s;
    if (n < 0) return NULL;
    while (n > 1 && p[0] == 0) { p++; n--; }
    s = malloc((size_t)n * 2 + 4);
    if (!s) return NULL;
    if (n == 0) {
        memcpy(s, "00", 3);
        return s;
    }
    if (neg) s[0] = '-';
    cm_hex_encode(p, (size_t)n, s + (neg ? 1 : 0));
    return s;
}

int cm_ssl_time_unix(const ASN1_TIME *t, int64_t *out)
{
    struct tm tm;
    time_t u;
    memset(&tm, 0, sizeof tm);
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return CM_ERR;
    u = timegm(&tm);
    if (u == (time_t)-1 && !(tm.tm_year == 69 && tm.tm_mon == 11 && tm.tm_mday == 31))
        return CM_ERR;
    *out = (int64_t)u;
    return CM_OK;
}

/* X509_NAME in RFC 2253 text, malloc'd. One mem BIO serves both names. */
static char *name_rfc2253(BIO *bio, const X509_NAME *name)
{
    char *data = NULL;
    long n;
    if (BIO_reset(bio) <= 0) return NULL;
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) < 0) return NULL;
    n = BIO_get_mem_data(bio, &data);
    if (n < 0) return NULL;
    return dup_mem(data ? data : "", (size_t)n);
}

/* ------------------------------------------------------------------------ */
/* a lean Certificate template                                              */

/* RFC 5280 Certificate, field for field as OpenSSL's X509_CINF, except that
 * subjectPublicKeyInfo stays an undecoded SEQUENCE.  The ASN.1 template
 * macros need typedef names, hence the typedefs (the core has no others but
 * crl.c's lean CRL templates). */
typedef struct {
    ASN1_INTEGER *version;
    ASN1_INTEGER *serial;
    X509_ALGOR *signature;
    X509_NAME *issuer;
    X509_VAL *validity;
    X509_NAME *subject;
    ASN1_STRING *key;
    ASN1_BIT_STRING *issuer_uid;
    ASN1_BIT_STRING *subject_uid;
    STACK_OF(X509_EXTENSION) *extensions;
} CM_TBS;

ASN1_SEQUENCE(CM_TBS) = {
    ASN1_EXP_OPT(CM_TBS, version, ASN1_INTEGER, 0),
    ASN1_SIMPLE(CM_TBS, serial, ASN1_INTEGER),
    ASN1_SIMPLE(CM_TBS, signature, X509_ALGOR),
    ASN1_SIMPLE(CM_TBS, issuer, X509_NAME),
    ASN1_SIMPLE(CM_TBS, validity, X509_VAL),
    ASN1_SIMPLE(CM_TBS, subject, X509_NAME),
    ASN1_SIMPLE(CM_TBS, key, ASN1_SEQUENCE),
    ASN1_IMP_OPT(CM_TBS, issuer_uid, ASN1_BIT_STRING, 1),
    ASN1_IMP_OPT(CM_TBS, subject_uid, ASN1_BIT_STRING, 2),
    ASN1_EXP_SEQUENCE_OF_OPT(CM_TBS, extensions, X509_EXTENSION, 3),
} static_ASN1_SEQUENCE_END(CM_TBS)

typedef struct {
    CM_TBS *tbs;
    X509_ALGOR *sig_alg;
    ASN1_BIT_STRING *sig;
} CM_CERT;

ASN1_SEQUENCE(CM_CERT) = {
    ASN1_SIMPLE(CM_CERT, tbs, CM_TBS),
    ASN1_SIMPLE(CM_CERT, sig_alg, X509_ALGOR),
    ASN1_SIMPLE(CM_CERT, sig, ASN1_BIT_STRING),
} static_ASN1_SEQUENCE_END(CM_CERT)

/* The rest of a chain is only stored and handed on, never read field by
 * field, so its certificates are checked for shape (every TBSCertificate field
 * present with the right tag, lengths consistent) but their names and
 * extensions are not decoded: that halves the cost of a two-certificate chain.
 * Whoever verifies the chain (a TLS peer, X509_verify_cert) decodes it fully. */
typedef struct {
    ASN1_INTEGER *version;
    ASN1_INTEGER *serial;
    X509_ALGOR *signature;
    ASN1_STRING *issuer;
    X509_VAL *validity;
    ASN1_STRING *subject;
    ASN1_STRING *key;
    ASN1_BIT_STRING *issuer_uid;
    ASN1_BIT_STRING *subject_uid;
    ASN1_STRING *extensions;
} CM_SHALLOW_TBS;

ASN1_SEQUENCE(CM_SHALLOW_TBS) = {
    ASN1_EXP_OPT(CM_SHALLOW_TBS, version, ASN1_INTEGER, 0),
    ASN1_SIMPLE(CM_SHALLOW_TBS, serial, ASN1_INTEGER),
    ASN1_SIMPLE(CM_SHALLOW_TBS, signature, X509_ALGOR),
    ASN1_SIMPLE(CM_SHALLOW_TBS, issuer, ASN1_SEQUENCE),
    ASN1_SIMPLE(CM_SHALLOW_TBS, validity, X509_VAL),
    ASN1_SIMPLE(CM_SHALLOW_TBS, subject, ASN1_SEQUENCE),
    ASN1_SIMPLE(CM_SHALLOW_TBS, key, ASN1_SEQUENCE),
    ASN1_IMP_OPT(CM_SHALLOW_TBS, issuer_uid, ASN1_BIT_STRING, 1),
    ASN1_IMP_OPT(CM_SHALLOW_TBS, subject_uid, ASN1_BIT_STRING, 2),
    ASN1_EXP_OPT(CM_SHALLOW_TBS, extensions, ASN1_SEQUENCE, 3),
} static_ASN1_SEQUENCE_END(CM_SHALLOW_TBS)

typedef struct {
    CM_SHALLOW_TBS *tbs;
    X509_ALGOR *sig_alg;
    ASN1_BIT_STRING *sig;
} CM_SHALLOW_CERT;

ASN1_SEQUENCE(CM_SHALLOW_CERT) = {
    ASN1_SIMPLE(CM_SHALLOW_CERT, tbs, CM_SHALLOW_TBS),
    ASN1_SIMPLE(CM_SHALLOW_CERT, sig_alg, X509_ALGOR),
    ASN1_SIMPLE(CM_SHALLOW_CERT, sig, ASN1_BIT_STRING),
} static_ASN1_SEQUENCE_END(CM_SHALLOW_CERT)

static void cert_free(CM_CERT *c)
{
    ASN1_item_free((ASN1_VALUE *)c, ASN1_ITEM_rptr(CM_CERT));
}

/* Check that der[0..len) starts with a certificate of the right shape; *used
 * says how many bytes it takes.  CM_ERR leaves OpenSSL's reason queued. */
static int check_shallow(const unsigned char *der, size_t len, size_t *used)
{
    const unsigned char *p = der;
    ASN1_VALUE *v;
    if (len == 0 || len > LONG_MAX) return CM_ERR;
    v = ASN1_item_d2i(NULL, &p, (long)len, ASN1_ITEM_rptr(CM_SHALLOW_CERT));
    if (!v) return CM_ERR;
    ASN1_item_free(v, ASN1_ITEM_rptr(CM_SHALLOW_CERT));
    *used = (size_t)(p - der);
    return CM_OK;
}

/* ------------------------------------------------------------------------ */
/* facts from one decoded certificate                                       */

static int add_general_name_text(struct cm_strlist *l, const GENERAL_NAME *gn, int type)
{
    const ASN1_STRING *s;
    if (gn->type != type) return CM_OK;
    s = type == GEN_DNS ? gn->d.dNSName : gn->d.uniformResourceIdentifier;
    if (!cm_x509_usable_text(ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s)))
        return CM_OK; /* unusable name: skip it rather than refuse the certificate */
    return cm_strlist_push_n(l, (const char *)ASN1_STRING_get0_data(s),
                             (size_t)ASN1_STRING_length(s));
}

static int add_ip(struct cm_strlist *l, const GENERAL_NAME *gn)
{
    char text[INET6_ADDRSTRLEN];
    const ASN1_OCTET_STRING *ip;
    int af;
    if (gn->type != GEN_IPADD) return CM_OK;
    ip = gn->d.iPAddress;
    if (ASN1_STRING_length(ip) == 4) af = AF_INET;
    else if (ASN1_STRING_length(ip) == 16) af = AF_INET6;
    else return CM_OK; /* a name constraint's address/mask pair: not a name */
    if (!inet_ntop(af, ASN1_STRING_get0_data(ip), text, sizeof text)) return CM_OK;
    return cm_strlist_push_n(l, text, strlen(text));
}

/* DNS SANs, then IP SANs, else the subject's last CN (as Go's crypto/x509). */
static int names_from(const STACK_OF(X509_EXTENSION) *exts, const X509_NAME *subject,
                      struct cm_strlist *names)
{
    GENERAL_NAMES *gens = NULL;
    const X509_NAME *subj;
    int i, n, ret = CM_ERR, idx, last = -1;

    gens = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
    if (gens) {
        n = sk_GENERAL_NAME_num(gens);
        for (i = 0; i < n; i++)
            if (add_general_name_text(names, sk_GENERAL_NAME_value(gens, i), GEN_DNS) != CM_OK)
                goto out;
        for (i = 0; i < n; i++)
            if (add_ip(names, sk_GENERAL_NAME_value(gens, i)) != CM_OK) goto out;
    }
    if (names->count == 0) {
        subj = subject;
        for (idx = -1; (idx = X509_NAME_get_index_by_NID(subj, NID_commonName, idx)) >= 0;)
            last = idx;
        if (last >= 0) {
            unsigned char *utf8 = NULL;
            X509_NAME_ENTRY *e = X509_NAME_get_entry(subj, last);
            int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e));
            int rc = CM_OK;
            if (len > 0 && cm_x509_usable_text(utf8, (size_t)len))
                rc = cm_strlist_push_n(names, (const char *)utf8, (size_t)len);
            OPENSSL_free(utf8);
            if (rc != CM_OK) goto out;
        }
    }
    ret = CM_OK;
out:
    GENERAL_NAMES_free(gens); gens = NULL;
    return ret;
}

static int urls_from_cert(const CM_TBS *tbs, struct cm_cert_facts *f)
{
    AUTHORITY_INFO_ACCESS *aia = NULL;
    CRL_DIST_POINTS *cdp = NULL;
    int i, j, ret = CM_ERR;

    aia = X509V3_get_d2i(tbs->extensions, NID_info_access, NULL, NULL);
    for (i = 0; aia && i < sk_ACCESS_DESCRIPTION_num(aia); i++) {
        ACCESS_DESCRIPTION *ad = sk_ACCESS_DESCRIPTION_value(aia, i);
        if (OBJ_obj2nid(ad->method) != NID_ad_OCSP) continue;
        if (add_general_name_text(&f->ocsp_urls, ad->location, GEN_URI) != CM_OK) goto out;
    }
    cdp = X509V3_get_d2i(tbs->extensions, NID_crl_distribution_points, NULL, NULL);
    for (i = 0; cdp && i < sk_DIST_POINT_num(cdp); i++) {
        DIST_POINT *dp = sk_DIST_POINT_value(cdp, i);
        if (!dp->distpoint || dp->distpoint->type != 0) continue; /* fullName only */
        for (j = 0; j < sk_GENERAL_NAME_num(dp->distpoint->name.fullname); j++)
            if (add_general_name_text(&f->crl_urls,
                                      sk_GENERAL_NAME_value(dp->distpoint->name.fullname, j),
                                      GEN_URI) != CM_OK)
                goto out;
    }
    ret = CM_OK;
out:
    AUTHORITY_INFO_ACCESS_free(aia); aia = NULL;
    CRL_DIST_POINTS_free(cdp); cdp = NULL;
    return ret;
}

/* RFC 7633 Must-Staple: the TLS Feature extension (1.3.6.1.5.5.7.1.24)
 * lists status_request (5).  A malformed or repeated extension counts as
 * absent, as X509V3_get_d2i treats it (and as the DER fast path agrees). */
static int must_staple(const CM_TBS *tbs)
{
    TLS_FEATURE *tlsf = X509V3_get_d2i(tbs->extensions, NID_tlsfeature, NULL, NULL);
    int i, found = 0;
    for (i = 0; tlsf && !found && i < sk_ASN1_INTEGER_num(tlsf); i++)
        found = ASN1_INTEGER_get(sk_ASN1_INTEGER_value(tlsf, i)) == 5;
    sk_ASN1_INTEGER_pop_free(tlsf, ASN1_INTEGER_free);
    return found;
}

/* Fill everything but der/chain_der from the decoded leaf. */
static int facts_from_leaf(const CM_TBS *tbs, struct cm_cert_facts *f, struct cm_result *res)
{
    BASIC_CONSTRAINTS *bc = NULL;
    BIO *bio = NULL;
    int ret = CM_ERR;

    if (cm_ssl_time_unix(tbs->validity->notBefore, &f->not_before) != CM_OK ||
        cm_ssl_time_unix(tbs->validity->notAfter, &f->not_after) != CM_OK) {
        ret = cm_fail_ssl(res, "parse", "certificate has an invalid validity time");
        goto out;
    }
    if (!(f->serial_hex = cm_ssl_integer_hex(tbs->serial))) goto oom;
    if (!(bio = BIO_new(BIO_s_mem()))) goto oom;
    if (!(f->issuer = name_rfc2253(bio, tbs->issuer))) goto oom;
    if (!(f->subject = name_rfc2253(bio, tbs->subject))) goto oom;
    if (names_from(tbs->extensions, tbs->subject, &f->names) != CM_OK) goto oom;
    if (urls_from_cert(tbs, f) != CM_OK) goto oom;
    bc = X509V3_get_d2i(tbs->extensions, NID_basic_constraints, NULL, NULL);
    f->is_ca = bc && bc->ca;
    f->must_staple = must_staple(tbs);
    /* A malformed optional extension makes X509V3_get_d2i return NULL and
     * queue an error; we treat it as absent, so do not leak it to the next
     * caller's cm_fail_ssl. */
    ERR_clear_error();
    ret = CM_OK;
    goto out;
oom:
    ret = cm_fail_ssl(res, "ENOMEM", "reading certificate facts failed (out of memory)");
out:
    BASIC_CONSTRAINTS_free(bc); bc = NULL;
    BIO_free(bio); bio = NULL;
    return ret;
}

static int sha256(const unsigned char *p, size_t n, unsigned char out[32])
{
    unsigned int len = 0;
    if (EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) != 1 || len != 32) return CM_ERR;
    return CM_OK;
}

/* Decode the first certificate in der[0..len); *used says how many bytes it
 * took.  Returns it or NULL (OpenSSL's error queue says why). */
static CM_CERT *decode_one(const unsigned char *der, size_t len, size_t *used)
{
    const unsigned char *p = der;
    CM_CERT *c;
    if (len == 0 || len > LONG_MAX) return NULL;
    c = (CM_CERT *)ASN1_item_d2i(NULL, &p, (long)len, ASN1_ITEM_rptr(CM_CERT));
    if (!c) return NULL;
    *used = (size_t)(p - der);
    return c;
}

/* Hash and facts of the leaf, once f->der is in place; the facts only when
 * OpenSSL decoded it (leaf not NULL): the fast path has filled them. */
static int finish_facts(const CM_CERT *leaf, struct cm_cert_facts *f, struct cm_result *res)
{
    if (sha256(f->der, f->der_len, f->sha256) != CM_OK)
        return cm_fail_ssl(res, "crypto", "SHA-256 of the certificate failed");
    return leaf ? facts_from_leaf(leaf->tbs, f, res) : CM_OK;
}

/* The leaf at der[0..len), *used bytes long: its facts read by the fast path
 * (x509_der.c) into *f, *ssl left NULL; or, where the fast path declines (or
 * is not wanted), decoded by OpenSSL into *ssl for finish_facts.  Fails with
 * "parse" (OpenSSL's reason appended), "declined", "ENOMEM". */
static int decode_leaf(enum cm_x509_decoder how, const unsigned char *der, size_t len,
                       size_t *used, CM_CERT **ssl, struct cm_cert_facts *f,
                       struct cm_result *res)
{
    int rc;
    *ssl = NULL;
    if (how != CM_X509_DECODE_OPENSSL) {
        rc = cm_x509_der_leaf(der, len, used, f);
        if (rc == CM_OK) return CM_OK;
        if (rc == CM_ERR)
            return cm_fail(res, "ENOMEM", "reading certificate facts failed (out of memory)");
        if (how == CM_X509_DECODE_FAST_ONLY)
            return cm_fail(res, "declined", "certificate 1 in chain: not for the DER fast path");
    }
    if (!(*ssl = decode_one(der, len, used)))
        return cm_fail_ssl(res, "parse", "certificate 1 in chain is not valid DER");
    return CM_OK;
}

/* Certificate n (2, 3, ...) of a chain at der[0..len), *used bytes long,
 * checked for shape: by the fast path, else by check_shallow.  Fails with
 * "parse" (OpenSSL's reason appended) or "declined". */
static int check_chain_cert(enum cm_x509_decoder how, const unsigned char *der, size_t len,
                            size_t *used, size_t n, struct cm_result *res)
{
    if (how != CM_X509_DECODE_OPENSSL) {
        if (cm_x509_der_shallow(der, len, used) == CM_OK) return CM_OK;
        if (how == CM_X509_DECODE_FAST_ONLY)
            return cm_fail(res, "declined", "certificate %zu in chain: not for the DER fast path",
                           n);
    }
    if (check_shallow(der, len, used) != CM_OK)
        return cm_fail_ssl(res, "parse", "certificate %zu in chain is not valid DER", n);
    return CM_OK;
}

void cm_cert_facts_free(struct cm_cert_facts *f)
{
    if (!f) return;
    cm_strlist_free(&f->names);
    cm_strlist_free(&f->ocsp_urls);
    cm_strlist_free(&f->crl_urls);
    free(f->serial_hex); f->serial_hex = NULL;
    free(f->issuer); f->issuer = NULL;
    free(f->subject); f->subject = NULL;
    free(f->der); f->der = NULL;
    free(f->chain_der); f->chain_der = NULL;
    memset(f, 0, sizeof *f);
}

/* ------------------------------------------------------------------------ */
/* DER chain                                                                */

int cm_x509_parse_der_chain(const unsigned char *der, size_t len,
                            struct cm_cert_facts *out, struct cm_result *res)
{
    return cm_x509_parse_der_chain_with(CM_X509_DECODE_AUTO, der, len, out, res);
}

int cm_x509_parse_der_chain_with(enum cm_x509_decoder how, const unsigned char *der,
                                 size_t len, struct cm_cert_facts *out,
                                 struct cm_result *res)
{
    struct cm_cert_facts f;
    CM_CERT *leaf = NULL;
    size_t leaf_len = 0, used = 0, off, n;
    int ret = CM_ERR;

    memset(&f, 0, sizeof f);
    if (!out) return cm_fail(res, "invalid", "cm_x509_parse_der_chain: no output");
    memset(out, 0, sizeof *out);
    if (!der || len == 0) return cm_fail(res, "parse", "empty certificate data");
    if (len > CM_X509_MAX_INPUT)
        return cm_fail(res, "toobig", "certificate data is %zu bytes, more than the %d allowed",
                       len, CM_X509_MAX_INPUT);
    if (decode_leaf(how, der, len, &leaf_len, &leaf, &f, res) != CM_OK) goto out;
    for (off = leaf_len, n = 1; off < len; off += used) {
        if (++n > MAX_CHAIN) {
            ret = cm_fail(res, "parse", "chain has more than %d certificates", MAX_CHAIN);
            goto out;
        }
        if (check_chain_cert(how, der + off, len - off, &used, n, res) != CM_OK) goto out;
    }
    if (!(f.der = malloc(leaf_len))) goto oom;
    memcpy(f.der, der, leaf_len);
    f.der_len = leaf_len;
    if (len > leaf_len) {
        if (!(f.chain_der = malloc(len - leaf_len))) goto oom;
        memcpy(f.chain_der, der + leaf_len, len - leaf_len);
        f.chain_der_len = len - leaf_len;
    }
    f.chain_count = n - 1;
    if (finish_facts(leaf, &f, res) != CM_OK) goto out;
    *out = f;
    memset(&f, 0, sizeof f);
    ret = CM_OK;
    goto out;
oom:
    ret = cm_fail(res, "ENOMEM", "out of memory copying certificate data");
out:
    cert_free(leaf); leaf = NULL;
    cm_cert_facts_free(&f);
    return ret;
}

/* ------------------------------------------------------------------------ */
/* PEM chain                                                                */

/* One PEM block's base64 body, located in the input. */
struct pem_span {
    const char *body;
    size_t len;
};

#define PEM_BEGIN "-----BEGIN "
#define PEM_END "-----END "
#define PEM_DASHES "-----"

/* PEM bodies: standard alphabet, padded, whitespace anywhere (RFC 7468). */
#define PEM_BASE64 (CM_BASE64_PAD | CM_BASE64_SPACE)

/* Find every PEM block; text outside blocks is ignored (RFC 7468 allows
 * explanatory text), but every block must be a certificate. */
static int pem_scan(const char *pem, size_t len, struct pem_span *spans, size_t *count,
                    struct cm_result *res)
{
    const char *p = pem, *end = pem + len;
    size_t n = 0;

    for (;;) {
        const char *begin, *label, *label_end, *body, *stop, *q;
        size_t label_len;
        char endline[96];
        int m;

        begin = memmem(p, (size_t)(end - p), PEM_BEGIN, sizeof PEM_BEGIN - 1);
        if (!begin) break;
        label = begin + sizeof PEM_BEGIN - 1;
        label_end = memmem(label, (size_t)(end - label), PEM_DASHES, sizeof PEM_DASHES - 1);
        q = memchr(label, '\n', (size_t)(end - label));
        if (!label_end || (q && q < label_end))
            return cm_fail(res, "parse", "PEM block %zu has a malformed BEGIN line", n + 1);
        label_len = (size_t)(label_end - label);
        if (!((label_len == 11 && memcmp(label, "CERTIFICATE", 11) == 0) ||
              (label_len == 16 && memcmp(label, "X509 CERTIFICATE", 16) == 0)))
            return cm_fail(res, "parse", "PEM block %zu is \"%.*s\", not a CERTIFICATE", n + 1,
                           (int)(label_len > 40 ? 40 : label_len), label);
        body = label_end + sizeof PEM_DASHES - 1;
        /* "-----END <label>-----" (the label is one of the two above) */
        memcpy(endline, PEM_END, sizeof PEM_END - 1);
        memcpy(endline + sizeof PEM_END - 1, label, label_len);
        memcpy(endline + sizeof PEM_END - 1 + label_len, PEM_DASHES, sizeof PEM_DASHES - 1);
        m = (int)(sizeof PEM_END - 1 + label_len + sizeof PEM_DASHES - 1);
        stop = memmem(body, (size_t)(end - body), endline, (size_t)m);
        /* A BEGIN before our END means this block was cut short. */
        q = memmem(body, (size_t)(end - body), PEM_BEGIN, sizeof PEM_BEGIN - 1);
        if (!stop || (q && q < stop))
            return cm_fail(res, "parse", "truncated PEM: missing END line for certificate %zu",
                           n + 1);
        if (n == MAX_CHAIN)
            return cm_fail(res, "parse", "chain has more than %d certificates", MAX_CHAIN);
        spans[n].body = body;
        spans[n].len = (size_t)(stop - body);
        n++;
        p = stop + m;
    }
    if (n == 0) {
        size_t i;
        for (i = 0; i < len && isspace((unsigned char)pem[i]); i++) {}
        if (i == len) return cm_fail(res, "parse", "no PEM certificate found: input is empty");
        return cm_fail(res, "parse", "no PEM certificate found");
    }
    *count = n;
    return CM_OK;
}

/* Decode span i into buf and check it is exactly one certificate: the leaf
 * (i == 0) read as decode_leaf does, into *f or *leaf, the others checked for
 * shape only.  *der_len gets its DER length.  CM_ERR with res filled on
 * failure. */
static int pem_decode_cert(enum cm_x509_decoder how, const struct pem_span *span, size_t i,
                           unsigned char *buf, size_t *der_len, CM_CERT **leaf,
                           struct cm_cert_facts *f, struct cm_result *res)
{
    size_t n = 0, used = 0;
    int rc;
    if (cm_base64_decode_into(span->body, span->len, PEM_BASE64, buf,
                              cm_base64_decoded_max(span->len), &n, NULL) != CM_OK ||
        n == 0)
        return cm_fail(res, "parse", "certificate %zu in chain is not valid base64", i + 1);
    if (i == 0) rc = decode_leaf(how, buf, n, &used, leaf, f, res);
    else rc = check_chain_cert(how, buf, n, &used, i + 1, res);
    if (rc != CM_OK) return CM_ERR;
    if (used != n)
        return cm_fail(res, "parse", "certificate %zu in chain has %zu bytes of trailing data",
                       i + 1, n - used);
    *der_len = used;
    return CM_OK;
}

int cm_x509_parse_chain(const char *pem, size_t len, struct cm_cert_facts *out,
                        struct cm_result *res)
{
    return cm_x509_parse_chain_with(CM_X509_DECODE_AUTO, pem, len, out, res);
}

int cm_x509_parse_chain_with(enum cm_x509_decoder how, const char *pem, size_t len,
                             struct cm_cert_facts *out, struct cm_result *res)
{
    struct pem_span spans[MAX_CHAIN];
    struct cm_cert_facts f;
    CM_CERT *leaf = NULL;
    size_t count = 0, i, chain_cap = 0, der_len = 0;
    int ret = CM_ERR;

    memset(&f, 0, sizeof f);
    if (!out) return cm_fail(res, "invalid", "cm_x509_parse_chain: no output");
    memset(out, 0, sizeof *out);
    if (!pem || len == 0) return cm_fail(res, "parse", "no PEM certificate found: input is empty");
    if (len > CM_X509_MAX_INPUT)
        return cm_fail(res, "toobig", "PEM data is %zu bytes, more than the %d allowed", len,
                       CM_X509_MAX_INPUT);
    if (pem_scan(pem, len, spans, &count, res) != CM_OK) goto out;

    /* base64 never decodes to more than 3/4 of its length */
    if (!(f.der = malloc(cm_base64_decoded_max(spans[0].len)))) goto oom;
    for (i = 1; i < count; i++) chain_cap += cm_base64_decoded_max(spans[i].len);
    if (chain_cap && !(f.chain_der = malloc(chain_cap))) goto oom;

    if (pem_decode_cert(how, &spans[0], 0, f.der, &f.der_len, &leaf, &f, res) != CM_OK) goto out;
    for (i = 1; i < count; i++) {
        if (pem_decode_cert(how, &spans[i], i, f.chain_der + f.chain_der_len, &der_len, NULL,
                            NULL, res) != CM_OK)
            goto out;
        f.chain_der_len += der_len;
    }
    f.chain_count = count - 1;
    if (finish_facts(leaf, &f, res) != CM_OK) goto out;
    *out = f;
    memset(&f, 0, sizeof f);
    ret = CM_OK;
    goto out;
oom:
    ret = cm_fail(res, "ENOMEM", "out of memory decoding PEM");
out:
    cert_free(leaf); leaf = NULL;
    cm_cert_facts_free(&f);
    return ret;
}

int cm_x509_leaf_not_after(const char *pem, size_t len, int64_t *not_after, struct cm_result *res)
{
    struct pem_span spans[MAX_CHAIN];
    struct cm_cert_facts f;
    unsigned char small[6144], *buf = small;
    size_t count = 0, n = 0, cap;
    int rc;

    if (!pem || len == 0) return cm_fail(res, "parse", "no PEM certificate found: input is empty");
    if (len > CM_X509_MAX_INPUT)
        return cm_fail(res, "toobig", "PEM data is %zu bytes, more than the %d allowed", len,
                       CM_X509_MAX_INPUT);
    if (pem_scan(pem, len, spans, &count, res) != CM_OK) return CM_ERR;
    cap = cm_base64_decoded_max(spans[0].len);
    if (cap > sizeof small && !(buf = malloc(cap))) return cm_fail(res, "ENOMEM", "out of memory decoding PEM");
    rc = cm_base64_decode_into(spans[0].body, spans[0].len, PEM_BASE64, buf, cap, &n, NULL) == CM_OK && n > 0
             ? cm_x509_der_not_after(buf, n, not_after)
             : CM_X509_DECLINED;
    if (buf != small) free(buf);
    if (rc == CM_OK) return CM_OK;
    /* declined: the full parser decides (and says what is wrong) */
    if (cm_x509_parse_chain(pem, len, &f, res) != CM_OK) return CM_ERR;
    *not_after = f.not_after;
    cm_cert_facts_free(&f);
    return CM_OK;
}

/* ------------------------------------------------------------------------ */
/* DER to PEM                                                               */

int cm_x509_der_next(const unsigned char *der, size_t len, size_t *elem_len,
                     struct cm_result *res)
{
    const unsigned char *p = der;
    long body = 0;
    int tag = 0, cls = 0, rc;
    if (!der || len == 0) return cm_fail(res, "parse", "empty DER element");
    if (len > LONG_MAX) return cm_fail(res, "toobig", "DER data too large");
    rc = ASN1_get_object(&p, &body, &tag, &cls, (long)len);
    /* 0x80: error or length past the end; 0x01: indefinite length (BER). */
    if ((rc & 0x80) || (rc & 0x01) || body < 0) {
        ERR_clear_error();
        return cm_fail(res, "parse", "malformed DER element header");
    }
    *elem_len = (size_t)(p - der) + (size_t)body;
    if (*elem_len > len) return cm_fail(res, "parse", "DER element runs past the data");
    return CM_OK;
}

#define PEM_CERT_BEGIN "-----BEGIN CERTIFICATE-----\n"
#define PEM_CERT_END "-----END CERTIFICATE-----\n"
#define PEM_LINES (CM_BASE64_PAD | CM_BASE64_LINES)

static size_t pem_block_size(size_t der_len)
{
    return sizeof PEM_CERT_BEGIN - 1 + cm_base64_encoded_size(der_len, PEM_LINES) +
           sizeof PEM_CERT_END - 1;
}

/* The certificates of leaf + chain as (start, length) pairs, split by their
 * DER headers: what cm_x509_chain_pem and its FNV-1a make PEM of. */
static int chain_blocks(const unsigned char *leaf, size_t leaf_len, const unsigned char *chain, size_t chain_len,
                        const unsigned char **starts, size_t *lens, size_t *count, struct cm_result *res)
{
    size_t n = 0, off;
    if (!leaf || leaf_len == 0) return cm_fail(res, "parse", "no leaf certificate DER");
    if (leaf_len > CM_X509_MAX_INPUT || chain_len > CM_X509_MAX_INPUT - leaf_len)
        return cm_fail(res, "toobig", "certificate DER larger than %d bytes", CM_X509_MAX_INPUT);
    if (cm_x509_der_next(leaf, leaf_len, &lens[0], res) != CM_OK) return CM_ERR;
    if (lens[0] != leaf_len)
        return cm_fail(res, "parse", "leaf DER has %zu bytes of trailing data", leaf_len - lens[0]);
    starts[n++] = leaf;
    for (off = 0; chain && off < chain_len; off += lens[n - 1]) {
        if (n == MAX_CHAIN + 1)
            return cm_fail(res, "parse", "chain has more than %d certificates", MAX_CHAIN);
        if (cm_x509_der_next(chain + off, chain_len - off, &lens[n], res) != CM_OK) return CM_ERR;
        starts[n++] = chain + off;
    }
    *count = n;
    return CM_OK;
}

int cm_x509_chain_pem(const unsigned char *leaf, size_t leaf_len, const unsigned char *chain,
                      size_t chain_len, char **pem, size_t *pem_len, struct cm_result *res)
{
    size_t lens[MAX_CHAIN + 1];
    const unsigned char *starts[MAX_CHAIN + 1];
    size_t n = 0, total = 1, o = 0, i;
    char *buf = NULL;

    *pem = NULL;
    if (pem_len) *pem_len = 0;
    if (chain_blocks(leaf, leaf_len, chain, chain_len, starts, lens, &n, res) != CM_OK) return CM_ERR;
    for (i = 0; i < n; i++) total += pem_block_size(lens[i]);
    if (!(buf = malloc(total))) return cm_fail(res, "ENOMEM", "out of memory building PEM");
    for (i = 0; i < n; i++) {
        memcpy(buf + o, PEM_CERT_BEGIN, sizeof PEM_CERT_BEGIN - 1);
        o += sizeof PEM_CERT_BEGIN - 1;
        o += cm_base64_encode_into(starts[i], lens[i], PEM_LINES, buf + o);
        memcpy(buf + o, PEM_CERT_END, sizeof PEM_CERT_END - 1);
        o += sizeof PEM_CERT_END - 1;
    }
    buf[o] = '\0';
    *pem = buf;
    if (pem_len) *pem_len = o;
    return CM_OK;
}

/* DER bytes encoded at a time: whole 64-column lines (48 bytes each), so the
 * pieces' text is the whole text's */
#define PEM_FNV_CHUNK (48 * 32)

int cm_x509_chain_pem_fnv1a32(const unsigned char *leaf, size_t leaf_len, const unsigned char *chain,
                              size_t chain_len, uint32_t *hash, struct cm_result *res)
{
    size_t lens[MAX_CHAIN + 1];
    const unsigned char *starts[MAX_CHAIN + 1];
    char text[PEM_FNV_CHUNK / 3 * 4 + PEM_FNV_CHUNK / 48 + 2];
    size_t n = 0, i, off;
    uint32_t h = CM_FNV1A32_BASIS;

    if (chain_blocks(leaf, leaf_len, chain, chain_len, starts, lens, &n, res) != CM_OK) return CM_ERR;
    for (i = 0; i < n; i++) {
        h = cm_fnv1a32_update(h, PEM_CERT_BEGIN, sizeof PEM_CERT_BEGIN - 1);
        for (off = 0; off < lens[i]; off += PEM_FNV_CHUNK) {
            size_t piece = lens[i] - off < PEM_FNV_CHUNK ? lens[i] - off : PEM_FNV_CHUNK;
            h = cm_fnv1a32_update(h, text, cm_base64_encode_into(starts[i] + off, piece, PEM_LINES, text));
        }
        h = cm_fnv1a32_update(h, PEM_CERT_END, sizeof PEM_CERT_END - 1);
    }
    *hash = h;
    return CM_OK;
}

/* ------------------------------------------------------------------------ */
/* OpenSSL-typed loaders (x509_ssl.h)                                       */

char *cm_ssl_bio_string(BIO *bio, size_t *len)
{
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    if (n < 0) return NULL;
    if (len) *len = (size_t)n;
    return dup_mem(data ? data : "", (size_t)n);
}

static int looks_like_pem(const char *data, size_t len)
{
    return memmem(data, len, PEM_BEGIN, sizeof PEM_BEGIN - 1) != NULL;
}

int cm_ssl_check_input(const char *data, size_t len, const char *what, struct cm_result *res)
{
    if (!data || len == 0) return cm_fail(res, "parse", "%s: empty", what);
    if (len > CM_X509_MAX_INPUT)
        return cm_fail(res, "toobig", "%s: %zu bytes, more than the %d allowed", what, len,
                       CM_X509_MAX_INPUT);
    return CM_OK;
}

/* The DER of the first certificate of data (PEM or DER): data itself, or
 * the first PEM block decoded into *owned (the caller frees it). */
static int first_cert_der(const char *data, size_t len, const char *what,
                          const unsigned char **der, size_t *der_len, unsigned char **owned,
                          struct cm_result *res)
{
    struct pem_span spans[MAX_CHAIN];
    size_t count = 0, cap, n = 0;

    *owned = NULL;
    if (cm_ssl_check_input(data, len, what, res) != CM_OK) return CM_ERR;
    if (!looks_like_pem(data, len)) {
        *der = (const unsigned char *)data;
        *der_len = len;
        return CM_OK;
    }
    if (pem_scan(data, len, spans, &count, res) != CM_OK) {
        char msg[sizeof res->message];
        if (res) {
            snprintf(msg, sizeof msg, "%s", res->message);
            cm_fail(res, "parse", "%s: %s", what, msg);
        }
        return CM_ERR;
    }
    cap = cm_base64_decoded_max(spans[0].len);
    if (!(*owned = malloc(cap))) return cm_fail(res, "ENOMEM", "%s: out of memory", what);
    if (cm_base64_decode_into(spans[0].body, spans[0].len, PEM_BASE64, *owned, cap, &n, NULL) !=
            CM_OK ||
        n == 0 || n > LONG_MAX) {
        free(*owned); *owned = NULL;
        return cm_fail(res, "parse", "%s: invalid base64", what);
    }
    *der = *owned;
    *der_len = n;
    return CM_OK;
}

static X509 *decode_x509(const unsigned char *der, size_t len, int pem, const char *what,
                         struct cm_result *res)
{
    const unsigned char *p = der;
    X509 *x = len <= LONG_MAX ? d2i_X509(NULL, &p, (long)len) : NULL;
    if (!x) {
        if (pem) cm_fail_ssl(res, "parse", "%s: not valid DER", what);
        else cm_fail_ssl(res, "parse", "%s: not a PEM or DER certificate", what);
    }
    return x;
}

X509 *cm_ssl_load_cert(const char *data, size_t len, const char *what, struct cm_result *res)
{
    const unsigned char *der = NULL;
    unsigned char *owned = NULL;
    size_t n = 0;
    X509 *x;

    if (first_cert_der(data, len, what, &der, &n, &owned, res) != CM_OK) return NULL;
    x = decode_x509(der, n, owned != NULL, what, res);
    free(owned); owned = NULL;
    return x;
}

ASN1_INTEGER *cm_ssl_cert_serial(const char *data, size_t len, const char *what,
                                 struct cm_result *res)
{
    const unsigned char *der = NULL, *p;
    unsigned char *owned = NULL;
    size_t n = 0;
    CM_CERT *c = NULL;
    ASN1_INTEGER *serial = NULL;

    if (first_cert_der(data, len, what, &der, &n, &owned, res) != CM_OK) return NULL;
    p = der;
    if (!(c = (CM_CERT *)ASN1_item_d2i(NULL, &p, (long)n, ASN1_ITEM_rptr(CM_CERT))))
        cm_fail_ssl(res, "parse", "%s: not a %s certificate", what, owned ? "DER" : "PEM or DER");
    else if (!(serial = ASN1_INTEGER_dup(c->tbs->serial)))
        cm_fail_ssl(res, "ENOMEM", "%s: out of memory", what);
    ASN1_item_free((ASN1_VALUE *)c, ASN1_ITEM_rptr(CM_CERT));
    c = NULL;
    free(owned); owned = NULL;
    return serial;
}

/* Issuer certificates, decoded once: OpenSSL 3.0 decodes a certificate's
 * public key through its provider decoders on every d2i_X509, about 90 us,
 * more than the rest of an OCSP check, and the OCSP pass checks thousands of
 * responses against a handful of issuers.  Keyed by the SHA-256 of the DER;
 * the least recently used slot makes room.  Entries are shared read-only
 * (X509 objects are reference counted and safe to use from several threads). */
#define ISSUER_CACHE_SLOTS 32

static struct {
    unsigned char sha256[32];
    X509 *x;
    uint64_t used;
} issuer_cache[ISSUER_CACHE_SLOTS];
static uint64_t issuer_cache_clock;
static pthread_mutex_t issuer_cache_lock = PTHREAD_MUTEX_INITIALIZER;

/* The cached certificate for sha256, up-ref'd for the caller; NULL if none.
 * Call with the lock held. */
static X509 *issuer_cache_find(const unsigned char *sha256)
{
    size_t i;
    for (i = 0; i < ISSUER_CACHE_SLOTS; i++) {
        if (issuer_cache[i].x && memcmp(issuer_cache[i].sha256, sha256, 32) == 0) {
            if (X509_up_ref(issuer_cache[i].x) != 1) return NULL;
            issuer_cache[i].used = ++issuer_cache_clock;
            return issuer_cache[i].x;
        }
    }
    return NULL;
}

X509 *cm_ssl_load_issuer(const char *data, size_t len, const char *what, struct cm_result *res)
{
    const unsigned char *der = NULL;
    unsigned char *owned = NULL, sha256[32];
    unsigned int md_len = 0;
    size_t n = 0, i, victim = 0;
    X509 *x = NULL, *have;

    if (first_cert_der(data, len, what, &der, &n, &owned, res) != CM_OK) return NULL;
    if (EVP_Digest(der, n, sha256, &md_len, EVP_sha256(), NULL) != 1 || md_len != 32) {
        /* no key for the cache: decode it every time */
        ERR_clear_error();
        x = decode_x509(der, n, owned != NULL, what, res);
        goto out;
    }
    if (pthread_mutex_lock(&issuer_cache_lock) == 0) {
        x = issuer_cache_find(sha256);
        pthread_mutex_unlock(&issuer_cache_lock);
        if (x) goto out;
    }
    /* decoded outside the lock: the slow part */
    if (!(x = decode_x509(der, n, owned != NULL, what, res))) goto out;
    /* only what decodes is cached, keyed by all of its bytes */
    if (pthread_mutex_lock(&issuer_cache_lock) != 0) goto out;
    if ((have = issuer_cache_find(sha256))) { /* another thread was quicker */
        X509_free(x);
        x = have;
    } else if (X509_up_ref(x) == 1) {
        for (i = 0; i < ISSUER_CACHE_SLOTS; i++) {
            if (!issuer_cache[i].x) {
                victim = i;
                break;
            }
            if (issuer_cache[i].used < issuer_cache[victim].used) victim = i;
        }
        X509_free(issuer_cache[victim].x);
        issuer_cache[victim].x = x;
        memcpy(issuer_cache[victim].sha256, sha256, 32);
        issuer_cache[victim].used = ++issuer_cache_clock;
    }
    pthread_mutex_unlock(&issuer_cache_lock);
out:
    free(owned); owned = NULL;
    return x;
}

/* ------------------------------------------------------------------------ */
/* names into certificates and CSRs                                         */

/* A GENERAL_NAME for a DNS name or an IP literal. */
GENERAL_NAME *cm_ssl_general_name(const char *name, int type, struct cm_result *res)
{
    unsigned char ip[16];
    GENERAL_NAME *gn = NULL;
    ASN1_STRING *s = NULL;
    int iplen = 0;

    if (!name || !cm_x509_usable_text((const unsigned char *)name, strlen(name)) ||
        strlen(name) > 2048) {
        cm_fail(res, "invalid", "\"%.80s\" is not a usable name or URL (printable ASCII only)",
                name ? name : "(null)");
        return NULL;
    }
    if (type == GEN_DNS && inet_pton(AF_INET, name, ip) == 1) iplen = 4;
    else if (type == GEN_DNS && inet_pton(AF_INET6, name, ip) == 1) iplen = 16;
    if (!(gn = GENERAL_NAME_new())) goto oom;
    if (iplen) {
        if (!(s = ASN1_OCTET_STRING_new()) || ASN1_OCTET_STRING_set(s, ip, iplen) != 1) goto oom;
        GENERAL_NAME_set0_value(gn, GEN_IPADD, s);
    } else {
        if (!(s = ASN1_IA5STRING_new()) || ASN1_STRING_set(s, name, -1) != 1) goto oom;
        GENERAL_NAME_set0_value(gn, type, s);
    }
    return gn;
oom:
    ASN1_STRING_free(s); s = NULL;
    GENERAL_NAME_free(gn); gn = NULL;
    cm_fail_ssl(res, "ENOMEM", "out of memory building a name");
    return NULL;
}

GENERAL_NAMES *cm_ssl_general_names(const char *const *names, size_t n, int type,
                                        struct cm_result *res)
{
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    GENERAL_NAME *gn = NULL;
    size_t i;
    if (!gens) {
        cm_fail_ssl(res, "ENOMEM", "out of memory building names");
        return NULL;
    }
    for (i = 0; i < n; i++) {
        if (!(gn = cm_ssl_general_name(names[i], type, res))) goto fail;
        if (!sk_GENERAL_NAME_push(gens, gn)) {
            GENERAL_NAME_free(gn); gn = NULL;
            cm_fail_ssl(res, "ENOMEM", "out of memory building names");
            goto fail;
        }
    }
    return gens;
fail:
    GENERAL_NAMES_free(gens); gens = NULL;
    return NULL;
}

int cm_ssl_add_cn(X509_NAME *name, const char *cn, struct cm_result *res)
{
    if (X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                   (const unsigned char *)cn, -1, -1, 0) != 1)
        return cm_fail_ssl(res, "invalid", "cannot use \"%.80s\" as a common name", cn);
    return CM_OK;
}

/* Last CN of a name as UTF-8, malloc'd; NULL when there is none. */
static char *last_cn(const X509_NAME *name)
{
    int idx = -1, last = -1, len;
    unsigned char *utf8 = NULL;
    char *s = NULL;
    while ((idx = X509_NAME_get_index_by_NID(name, NID_commonName, idx)) >= 0) last = idx;
    if (last < 0) return NULL;
    len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, last)));
    if (len >= 0) s = dup_mem(utf8, (size_t)len);
    OPENSSL_free(utf8);
    return s;
}

/* ------------------------------------------------------------------------ */
/* CSRs                                                                     */

int cm_csr_create(const char *key_pem, size_t key_len, const char *const *names, size_t n,
                  char **csr_pem, unsigned char **csr_der, size_t *der_len,
                  struct cm_result *res)
{
    EVP_PKEY *key = NULL;
    X509_REQ *req = NULL;
    GENERAL_NAMES *san = NULL;
    STACK_OF(X509_EXTENSION) *exts = NULL;
    X509_EXTENSION *ext = NULL;
    BIO *bio = NULL;
    unsigned char *der = NULL;
    int der_n, with_cn, ret = CM_ERR;

    if (csr_pem) *csr_pem = NULL;
    if (csr_der) *csr_der = NULL;
    if (der_len) *der_len = 0;
    if (!names || n == 0) return cm_fail(res, "invalid", "a CSR needs at least one name");
    if (!(key = cm_ssl_load_private_key(key_pem, key_len, "CSR key", res))) goto out;
    if (!(san = cm_ssl_general_names(names, n, GEN_DNS, res))) goto out;
    if (!(req = X509_REQ_new()) || X509_REQ_set_version(req, X509_REQ_VERSION_1) != 1 ||
        X509_REQ_set_pubkey(req, key) != 1)
        goto crypto;
    with_cn = strlen(names[0]) <= CM_X509_CN_MAX;
    if (with_cn && cm_ssl_add_cn(X509_REQ_get_subject_name(req), names[0], res) != CM_OK) goto out;
    /* RFC 5280 4.2.1.6: SAN is critical when the subject is empty. */
    if (!(ext = X509V3_EXT_i2d(NID_subject_alt_name, !with_cn, san))) goto crypto;
    if (!(exts = sk_X509_EXTENSION_new_null()) || !sk_X509_EXTENSION_push(exts, ext)) goto crypto;
    ext = NULL; /* owned by exts now */
    if (X509_REQ_add_extensions(req, exts) != 1) goto crypto;
    if (X509_REQ_sign(req, key, EVP_sha256()) <= 0) goto crypto;
    /* a damaged key signs a CSR that does not verify: say so here, not as the CA's badCSR */
    if (X509_REQ_verify(req, key) != 1) {
        ERR_clear_error();
        cm_fail(res, "parse", "CSR key: the private key's parts do not agree: the CSR it signed does not "
                "verify (a damaged key file?)");
        goto out;
    }
    if (csr_der) {
        if ((der_n = i2d_X509_REQ(req, &der)) <= 0) goto crypto;
        *csr_der = malloc((size_t)der_n);
        if (!*csr_der) goto crypto;
        memcpy(*csr_der, der, (size_t)der_n);
        if (der_len) *der_len = (size_t)der_n;
    }
    if (csr_pem) {
        if (!(bio = BIO_new(BIO_s_mem())) || PEM_write_bio_X509_REQ(bio, req) != 1 ||
            !(*csr_pem = cm_ssl_bio_string(bio, NULL)))
            goto crypto;
    }
    ret = CM_OK;
    goto out;
crypto:
    ret = cm_fail_ssl(res, "crypto", "building the CSR failed");
    if (csr_der) {
        free(*csr_der); *csr_der = NULL;
    }
out:
    OPENSSL_free(der); der = NULL;
    BIO_free(bio); bio = NULL;
    X509_EXTENSION_free(ext); ext = NULL;
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free); exts = NULL;
    GENERAL_NAMES_free(san); san = NULL;
    X509_REQ_free(req); req = NULL;
    EVP_PKEY_free(key); key = NULL;
    return ret;
}

/* A CSR from PEM or DER with its self-signature verified; caller frees. */
X509_REQ *cm_ssl_load_csr(const unsigned char *data, size_t len, struct cm_result *res)
{
    BIO *bio = NULL;
    X509_REQ *req = NULL;
    EVP_PKEY *key;
    const unsigned char *p = data;

    if (!data || len == 0) {
        cm_fail(res, "parse", "CSR: empty");
        return NULL;
    }
    if (len > CM_X509_MAX_INPUT) {
        cm_fail(res, "toobig", "CSR: %zu bytes, more than the %d allowed", len,
                CM_X509_MAX_INPUT);
        return NULL;
    }
    if (looks_like_pem((const char *)data, len)) {
        if (!(bio = BIO_new_mem_buf(data, (int)len))) {
            cm_fail_ssl(res, "ENOMEM", "CSR: out of memory");
            return NULL;
        }
        req = PEM_read_bio_X509_REQ(bio, NULL, cm_ssl_no_password, NULL);
        BIO_free(bio); bio = NULL;
        if (!req) {
            cm_fail_ssl(res, "parse", "CSR: no valid PEM CERTIFICATE REQUEST found");
            return NULL;
        }
    } else {
        req = d2i_X509_REQ(NULL, &p, (long)len);
        if (!req || p != data + len) {
            X509_REQ_free(req); req = NULL;
            cm_fail_ssl(res, "parse", "CSR: not valid PEM or DER");
            return NULL;
        }
    }
    if (!(key = X509_REQ_get0_pubkey(req))) {
        X509_REQ_free(req); req = NULL;
        cm_fail_ssl(res, "parse", "CSR: unreadable public key");
        return NULL;
    }
    if (X509_REQ_verify(req, key) != 1) {
        X509_REQ_free(req); req = NULL;
        cm_fail_ssl(res, "verify", "CSR: signature does not verify (tampered or corrupt)");
        return NULL;
    }
    return req;
}

int cm_ssl_csr_names(X509_REQ *req, struct cm_strlist *names, struct cm_result *res)
{
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    int rc = names_from(exts, X509_REQ_get_subject_name(req), names);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free); exts = NULL;
    ERR_clear_error(); /* absent or malformed optional extensions read as absent */
    if (rc != CM_OK) return cm_fail(res, "ENOMEM", "out of memory reading CSR names");
    return CM_OK;
}

void cm_csr_info_free(struct cm_csr_info *info)
{
    if (!info) return;
    cm_strlist_free(&info->names);
    free(info->cn); info->cn = NULL;
    free(info->public_key_pem); info->public_key_pem = NULL;
}

int cm_csr_parse(const unsigned char *data, size_t len, struct cm_csr_info *out,
                 struct cm_result *res)
{
    struct cm_csr_info info;
    X509_REQ *req = NULL;
    int ret = CM_ERR;

    memset(&info, 0, sizeof info);
    memset(out, 0, sizeof *out);
    if (!(req = cm_ssl_load_csr(data, len, res))) goto out;
    if (cm_ssl_csr_names(req, &info.names, res) != CM_OK) goto out;
    info.cn = last_cn(X509_REQ_get_subject_name(req));
    if (!(info.public_key_pem = cm_ssl_public_key_pem(X509_REQ_get0_pubkey(req)))) {
        ret = cm_fail_ssl(res, "crypto", "CSR: writing its public key failed");
        goto out;
    }
    *out = info;
    memset(&info, 0, sizeof info);
    ret = CM_OK;
out:
    cm_csr_info_free(&info);
    X509_REQ_free(req); req = NULL;
    return ret;
}
