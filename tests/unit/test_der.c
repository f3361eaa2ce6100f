/* test_der.c - the strict DER reader (core/der.c) and the DER fast path of
 * the chain parser (core/x509_der.c) against the OpenSSL path.
 *
 * Certificates are built here byte by byte (a small DER writer over an
 * arena), so each field, each fallback case and each malformed encoding is
 * one line.  Neither parser verifies signatures, so the signature is a few
 * bytes.  Every accepted certificate is compared field by field with what
 * CM_X509_DECODE_OPENSSL yields; every declined one must still parse (or
 * fail) exactly as the OpenSSL path does under CM_X509_DECODE_AUTO. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/objects.h>

#include "check.h"
#include "der.h"
#include "encoding.h"
#include "x509.h"
#include "x509_der.h"

/* ------------------------------------------------------------------------ */
/* a DER writer                                                             */

static unsigned char arena[1 << 20];
static size_t arena_used;

struct piece {
    const unsigned char *p;
    size_t n;
};

static unsigned char *take(size_t n)
{
    unsigned char *p;
    if (arena_used + n > sizeof arena) {
        fprintf(stderr, "test_der: arena full\n");
        exit(2);
    }
    p = arena + arena_used;
    arena_used += n;
    return p;
}

static struct piece raw(const void *p, size_t n)
{
    struct piece r;
    unsigned char *q = take(n ? n : 1);
    if (n) memcpy(q, p, n);
    r.p = q;
    r.n = n;
    return r;
}

#define BYTES(...) raw((const unsigned char[]){__VA_ARGS__}, sizeof((const unsigned char[]){__VA_ARGS__}))
#define NONE raw("", 0)

static struct piece cat_n(size_t count, const struct piece *parts)
{
    size_t i, n = 0;
    unsigned char *q;
    struct piece r;
    for (i = 0; i < count; i++) n += parts[i].n;
    q = take(n ? n : 1);
    r.p = q;
    r.n = n;
    for (i = 0; i < count; i++) {
        memcpy(q, parts[i].p, parts[i].n);
        q += parts[i].n;
    }
    return r;
}

#define CAT(...) cat_n(sizeof((struct piece[]){__VA_ARGS__}) / sizeof(struct piece), (struct piece[]){__VA_ARGS__})

/* An element with its minimal definite length. */
static struct piece tlv(unsigned tag, struct piece body)
{
    unsigned char hdr[6];
    size_t h = 0;
    hdr[h++] = (unsigned char)tag;
    if (body.n < 0x80) {
        hdr[h++] = (unsigned char)body.n;
    } else if (body.n < 0x100) {
        hdr[h++] = 0x81;
        hdr[h++] = (unsigned char)body.n;
    } else {
        hdr[h++] = 0x82;
        hdr[h++] = (unsigned char)(body.n >> 8);
        hdr[h++] = (unsigned char)body.n;
    }
    return CAT(raw(hdr, h), body);
}

#define SEQ(...) tlv(0x30, CAT(__VA_ARGS__))
#define SET(...) tlv(0x31, CAT(__VA_ARGS__))
#define EMPTY_SEQ BYTES(0x30, 0x00)
#define EMPTY_SET BYTES(0x31, 0x00)

static struct piece str(unsigned tag, const char *s)
{
    return tlv(tag, raw(s, strlen(s)));
}

static const unsigned char OID_CN[] = {0x55, 0x04, 0x03};
static const unsigned char OID_O[] = {0x55, 0x04, 0x0a};
static const unsigned char OID_C[] = {0x55, 0x04, 0x06};
static const unsigned char OID_EMAIL[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01};
static const unsigned char OID_SAN[] = {0x55, 0x1d, 0x11};
static const unsigned char OID_BC[] = {0x55, 0x1d, 0x13};
static const unsigned char OID_CRLDP[] = {0x55, 0x1d, 0x1f};
static const unsigned char OID_AIA[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x01};
static const unsigned char OID_OCSP[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01};
static const unsigned char OID_CAISSUERS[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02};
static const unsigned char OID_KU[] = {0x55, 0x1d, 0x0f};

#define OID(o) tlv(CM_DER_OID, raw(o, sizeof o))

static struct piece ava(const unsigned char *oid, size_t oid_len, unsigned tag, const char *v)
{
    return SEQ(tlv(CM_DER_OID, raw(oid, oid_len)), str(tag, v));
}

#define AVA(o, tag, v) ava(o, sizeof o, tag, v)
#define CN(v) SET(AVA(OID_CN, CM_DER_UTF8STRING, v))

static struct piece ext(const unsigned char *oid, size_t oid_len, int critical, struct piece value)
{
    return SEQ(tlv(CM_DER_OID, raw(oid, oid_len)),
               critical ? BYTES(0x01, 0x01, 0xff) : NONE, tlv(CM_DER_OCTET_STRING, value));
}

#define EXT(o, crit, value) ext(o, sizeof o, crit, value)
#define EXTS(...) tlv(0xa3, SEQ(__VA_ARGS__))
#define DNS(s) str(0x82, s)
#define URI(s) str(0x86, s)

/* The parts of a certificate; build() puts defaults where a part is unset. */
struct parts {
    struct piece version, serial, alg, issuer, validity, subject, key, extra, exts, outer_alg,
        sig, after;
    int set_version, set_serial, set_alg, set_issuer, set_validity, set_subject, set_key,
        set_exts, set_outer_alg, set_sig;
};

static struct piece ecdsa_alg(void)
{
    return SEQ(BYTES(0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02));
}

static struct piece utc(const char *s)
{
    return str(CM_DER_UTCTIME, s);
}

static struct piece build(const struct parts *p)
{
    struct piece version = p->set_version ? p->version : tlv(0xa0, BYTES(0x02, 0x01, 0x02));
    struct piece serial = p->set_serial ? p->serial : BYTES(0x02, 0x02, 0x12, 0x34);
    struct piece alg = p->set_alg ? p->alg : ecdsa_alg();
    struct piece issuer = p->set_issuer ? p->issuer : SEQ(SET(AVA(OID_C, CM_DER_PRINTABLESTRING, "DE")), CN("Test CA"));
    struct piece validity = p->set_validity ? p->validity
                                            : SEQ(utc("260101000000Z"), utc("260401000000Z"));
    struct piece subject = p->set_subject ? p->subject : SEQ(CN("leaf.example"));
    struct piece key = p->set_key ? p->key
                                  : SEQ(SEQ(BYTES(0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01)),
                                        BYTES(0x03, 0x03, 0x00, 0x04, 0x01));
    struct piece exts = p->set_exts ? p->exts
                                    : EXTS(EXT(OID_SAN, 0, SEQ(DNS("leaf.example"), DNS("www.leaf.example"))));
    struct piece outer = p->set_outer_alg ? p->outer_alg : ecdsa_alg();
    struct piece sig = p->set_sig ? p->sig : BYTES(0x03, 0x03, 0x00, 0xaa, 0xbb);
    return CAT(SEQ(SEQ(version, serial, alg, issuer, validity, subject, key, p->extra, exts), outer, sig),
               p->after);
}

static struct piece leaf_with_exts(struct piece exts)
{
    struct parts p;
    memset(&p, 0, sizeof p);
    p.after = NONE;
    p.extra = NONE;
    p.exts = exts;
    p.set_exts = 1;
    return build(&p);
}

static struct piece leaf_with_subject(struct piece subject)
{
    struct parts p;
    memset(&p, 0, sizeof p);
    p.after = NONE;
    p.extra = NONE;
    p.subject = subject;
    p.set_subject = 1;
    p.exts = NONE;
    p.set_exts = 1;
    return build(&p);
}

static struct parts defaults(void)
{
    struct parts p;
    memset(&p, 0, sizeof p);
    p.after = NONE;
    p.extra = NONE;
    return p;
}

/* ------------------------------------------------------------------------ */
/* comparing the two paths                                                  */

static int same_list(const struct cm_strlist *a, const struct cm_strlist *b)
{
    size_t i;
    if (a->count != b->count) return 0;
    for (i = 0; i < a->count; i++)
        if (strcmp(a->items[i], b->items[i]) != 0) return 0;
    return 1;
}

static int same_facts(const struct cm_cert_facts *a, const struct cm_cert_facts *b)
{
    return memcmp(a->sha256, b->sha256, 32) == 0 && a->not_before == b->not_before &&
           a->not_after == b->not_after && same_list(&a->names, &b->names) &&
           strcmp(a->serial_hex, b->serial_hex) == 0 && strcmp(a->issuer, b->issuer) == 0 &&
           strcmp(a->subject, b->subject) == 0 && same_list(&a->ocsp_urls, &b->ocsp_urls) &&
           same_list(&a->crl_urls, &b->crl_urls) && a->is_ca == b->is_ca &&
           a->must_staple == b->must_staple &&
           a->der_len == b->der_len && memcmp(a->der, b->der, a->der_len) == 0 &&
           a->chain_der_len == b->chain_der_len && a->chain_count == b->chain_count &&
           (a->chain_der_len == 0 || memcmp(a->chain_der, b->chain_der, a->chain_der_len) == 0);
}

/* The fast path accepts c, OpenSSL too, with the same facts (left in *f for
 * the caller, who frees it). */
static int accepted_at(const char *file, int line, struct piece c, struct cm_cert_facts *f)
{
    struct cm_cert_facts g;
    struct cm_result res, res2;
    int ok = 1;
    memset(f, 0, sizeof *f);
    if (cm_x509_parse_der_chain_with(CM_X509_DECODE_FAST_ONLY, c.p, c.n, f, &res) != CM_OK) {
        fprintf(stderr, "%s:%d: fast path: %s: %s\n", file, line, res.code, res.message);
        return 0;
    }
    if (cm_x509_parse_der_chain_with(CM_X509_DECODE_OPENSSL, c.p, c.n, &g, &res2) != CM_OK) {
        fprintf(stderr, "%s:%d: the fast path accepts what OpenSSL rejects: %s\n", file, line,
                res2.message);
        return 0;
    }
    if (!same_facts(f, &g)) {
        fprintf(stderr, "%s:%d: facts differ: subject [%s] vs [%s], issuer [%s] vs [%s]\n",
                file, line, f->subject, g.subject, f->issuer, g.issuer);
        ok = 0;
    }
    cm_cert_facts_free(&g);
    return ok;
}

#define ACCEPTED(c, f) accepted_at(__FILE__, __LINE__, (c), (f))

/* The fast path declines c, and the product's parser (AUTO) gives exactly
 * OpenSSL's result: *ssl_ok says whether that was a success. */
static int declined_at(const char *file, int line, struct piece c, int *ssl_ok)
{
    struct cm_cert_facts f, g;
    struct cm_result res, res2;
    int rc, rc2, ok = 1;
    if (cm_x509_parse_der_chain_with(CM_X509_DECODE_FAST_ONLY, c.p, c.n, &f, &res) == CM_OK ||
        strcmp(res.code, "declined") != 0) {
        fprintf(stderr, "%s:%d: the fast path did not decline (%s)\n", file, line,
                res.code);
        cm_cert_facts_free(&f);
        return 0;
    }
    rc = cm_x509_parse_der_chain_with(CM_X509_DECODE_AUTO, c.p, c.n, &f, &res);
    rc2 = cm_x509_parse_der_chain_with(CM_X509_DECODE_OPENSSL, c.p, c.n, &g, &res2);
    if (rc != rc2) ok = 0;
    else if (rc == CM_OK) ok = same_facts(&f, &g);
    else ok = strcmp(res.code, res2.code) == 0 && strcmp(res.message, res2.message) == 0;
    if (!ok) fprintf(stderr, "%s:%d: AUTO differs from OpenSSL\n", file, line);
    if (rc == CM_OK) cm_cert_facts_free(&f);
    if (rc2 == CM_OK) cm_cert_facts_free(&g);
    *ssl_ok = rc2 == CM_OK;
    return ok;
}

#define DECLINED(c, ssl_ok) declined_at(__FILE__, __LINE__, (c), (ssl_ok))

/* Declined, and OpenSSL accepts it (it is unusual, not broken). */
#define DECLINED_OK(c) (DECLINED((c), &ssl_ok) && ssl_ok)
/* Declined, and OpenSSL rejects it: the product rejects it as before. */
#define DECLINED_BAD(c) (DECLINED((c), &ssl_ok) && !ssl_ok)

/* ------------------------------------------------------------------------ */
/* der.c                                                                    */

static int next_ok(struct piece p)
{
    struct cm_der d = cm_der_init(p.p, p.n);
    struct cm_der_elem e;
    return cm_der_next(&d, &e) == CM_OK;
}

static void test_reader(void)
{
    struct cm_der d;
    struct cm_der_elem e;
    unsigned char big[300];
    int present;

    memset(big, 'a', sizeof big);
    /* short and long forms, minimal */
    CHECK(next_ok(BYTES(0x04, 0x00)));
    CHECK(next_ok(BYTES(0x04, 0x01, 0x41)));
    CHECK(next_ok(tlv(0x04, raw(big, 200))));
    CHECK(next_ok(tlv(0x04, raw(big, 300))));
    d = cm_der_init(tlv(0x04, raw(big, 300)).p, 304);
    CHECK(cm_der_next(&d, &e) == CM_OK && e.len == 300 && e.tag == 0x04 && cm_der_done(&d));
    /* not minimal: long form for a short length, a leading zero length byte */
    CHECK(!next_ok(BYTES(0x04, 0x81, 0x05, 1, 2, 3, 4, 5)));
    CHECK(!next_ok(CAT(BYTES(0x04, 0x82, 0x00, 0xc8), raw(big, 200))));
    /* indefinite length, reserved length byte, 4-byte lengths, high tag number, tag 0 */
    CHECK(!next_ok(BYTES(0x30, 0x80, 0x04, 0x00, 0x00, 0x00)));
    CHECK(!next_ok(BYTES(0x04, 0xff, 0x00)));
    CHECK(!next_ok(BYTES(0x04, 0x84, 0x01, 0x00, 0x00, 0x00)));
    CHECK(!next_ok(BYTES(0x1f, 0x22, 0x01, 0x00)));
    CHECK(!next_ok(BYTES(0x00, 0x00)));
    /* truncation: no length, length bytes missing, contents past the end */
    CHECK(!next_ok(BYTES(0x04)));
    CHECK(!next_ok(BYTES(0x04, 0x82, 0x01)));
    CHECK(!next_ok(BYTES(0x04, 0x02, 0x41)));
    CHECK(!next_ok(CAT(BYTES(0x04, 0x82, 0x01, 0x00), raw(big, 255))));
    d = cm_der_init(NULL, 0);
    CHECK(cm_der_done(&d) && cm_der_peek(&d) == -1 && cm_der_next(&d, &e) == CM_ERR);

    /* a failed read leaves the reader where it was */
    d = cm_der_init(BYTES(0x02, 0x01, 0x05, 0x04, 0x09).p, 5);
    CHECK(cm_der_expect(&d, CM_DER_OCTET_STRING, &e) == CM_ERR && cm_der_peek(&d) == 0x02);
    CHECK(cm_der_optional(&d, CM_DER_BOOLEAN, &e, &present) == CM_OK && !present);
    CHECK(cm_der_optional(&d, CM_DER_INTEGER, &e, &present) == CM_OK && present &&
          e.len == 1 && e.body[0] == 5);
    CHECK(cm_der_optional(&d, CM_DER_OCTET_STRING, &e, &present) == CM_ERR &&
          cm_der_peek(&d) == 0x04);

    /* nested windows stay inside their parent */
    d = cm_der_init(BYTES(0x30, 0x03, 0x04, 0x05, 0x00, 0x00, 0x00).p, 7);
    CHECK(cm_der_next(&d, &e) == CM_OK && e.len == 3);
    d = cm_der_inside(&e);
    CHECK(cm_der_next(&d, &e) == CM_ERR); /* 5 bytes claimed, 1 inside the SEQUENCE */
}

static void test_primitives(void)
{
    /* INTEGER: minimal two's complement only */
    CHECK(cm_der_integer_ok((const unsigned char *)"\x00", 1) == CM_OK);
    CHECK(cm_der_integer_ok((const unsigned char *)"\x00\x80", 2) == CM_OK);
    CHECK(cm_der_integer_ok((const unsigned char *)"\xff\x7f", 2) == CM_OK);
    CHECK(cm_der_integer_ok((const unsigned char *)"\x80", 1) == CM_OK);
    CHECK(cm_der_integer_ok((const unsigned char *)"", 0) == CM_ERR);
    CHECK(cm_der_integer_ok((const unsigned char *)"\x00\x7f", 2) == CM_ERR);
    CHECK(cm_der_integer_ok((const unsigned char *)"\xff\x80", 2) == CM_ERR);
    /* OID */
    CHECK(cm_der_oid_ok(OID_EMAIL, sizeof OID_EMAIL) == CM_OK);
    CHECK(cm_der_oid_ok((const unsigned char *)"", 0) == CM_ERR);
    CHECK(cm_der_oid_ok((const unsigned char *)"\x2a\x86", 2) == CM_ERR);     /* unfinished */
    CHECK(cm_der_oid_ok((const unsigned char *)"\x2a\x80\x01", 3) == CM_ERR); /* leading 0x80 */
    CHECK(cm_der_oid_ok((const unsigned char *)"\x80\x01", 2) == CM_ERR);
    CHECK(cm_der_oid_ok((const unsigned char *)"\x2a\x81\x80\x01", 4) == CM_OK);
    /* BIT STRING */
    CHECK(cm_der_bit_string_ok((const unsigned char *)"\x00", 1) == CM_OK);
    CHECK(cm_der_bit_string_ok((const unsigned char *)"\x03\xf8", 2) == CM_OK);
    CHECK(cm_der_bit_string_ok((const unsigned char *)"", 0) == CM_ERR);
    CHECK(cm_der_bit_string_ok((const unsigned char *)"\x08\x00", 2) == CM_ERR);
    CHECK(cm_der_bit_string_ok((const unsigned char *)"\x01", 1) == CM_ERR);
    CHECK(cm_der_bit_string_ok((const unsigned char *)"\x03\xf9", 2) == CM_ERR); /* unused bit set */
}

static int time_of(unsigned tag, const char *s, int64_t *t)
{
    struct cm_der_elem e;
    e.tag = tag;
    e.body = (const unsigned char *)s;
    e.len = strlen(s);
    return cm_der_time(&e, t);
}

static void test_times(void)
{
    int64_t t = 0;
    CHECK(time_of(CM_DER_UTCTIME, "700101000000Z", &t) == CM_OK && t == 0);
    CHECK(time_of(CM_DER_UTCTIME, "260101000000Z", &t) == CM_OK && t == 1767225600);
    CHECK(time_of(CM_DER_UTCTIME, "491231235959Z", &t) == CM_OK && t == 2524607999LL);
    CHECK(time_of(CM_DER_UTCTIME, "500101000000Z", &t) == CM_OK && t == -631152000LL);
    CHECK(time_of(CM_DER_UTCTIME, "691231235959Z", &t) == CM_OK && t == -1);
    CHECK(time_of(CM_DER_GENERALIZEDTIME, "21240101000000Z", &t) == CM_OK && t == 4859740800LL);
    CHECK(time_of(CM_DER_GENERALIZEDTIME, "00000101000000Z", &t) == CM_OK &&
          t == -62167219200LL);
    /* leap days: 2024 and 2000 have one, 2100 and 1900 do not */
    CHECK(time_of(CM_DER_UTCTIME, "240229120000Z", &t) == CM_OK && t == 1709208000);
    CHECK(time_of(CM_DER_UTCTIME, "000229000000Z", &t) == CM_OK && t == 951782400);
    CHECK(time_of(CM_DER_UTCTIME, "250229000000Z", &t) == CM_ERR);
    CHECK(time_of(CM_DER_GENERALIZEDTIME, "21000229000000Z", &t) == CM_ERR);
    CHECK(time_of(CM_DER_GENERALIZEDTIME, "19000229000000Z", &t) == CM_ERR);
    CHECK(time_of(CM_DER_GENERALIZEDTIME, "20000229000000Z", &t) == CM_OK);
    /* out of range fields */
    CHECK(time_of(CM_DER_UTCTIME, "261301000000Z", &t) == CM_ERR);
    CHECK(time_of(CM_DER_UTCTIME, "260001000000Z", &t) == CM_ERR);
    CHECK(time_of(CM_DER_UTCTIME, "260100000000Z", &t) == CM_ERR);
    CHECK(time_of(CM_DER_UTCTIME, "260431000000Z", &t) == CM_ERR);
    CHECK(time_of(CM_DER_UTCTIME, "260101240000Z", &t) == CM_ERR);
    CHECK(time_of(CM_DER_UTCTIME, "260101006000Z", &t) == CM_ERR);
    CHECK(time_of(CM_DER_UTCTIME, "260101000060Z", &t) == CM_ERR);
    /* forms RFC 5280 forbids (OpenSSL takes some: the fast path declines) */
    CHECK(time_of(CM_DER_UTCTIME, "2601010000Z", &t) == CM_ERR);
    CHECK(time_of(CM_DER_UTCTIME, "260101000000+0100", &t) == CM_ERR);
    CHECK(time_of(CM_DER_UTCTIME, "260101000000z", &t) == CM_ERR);
    CHECK(time_of(CM_DER_UTCTIME, "2601010000001", &t) == CM_ERR);
    CHECK(time_of(CM_DER_UTCTIME, "26010100000 Z", &t) == CM_ERR);
    CHECK(time_of(CM_DER_GENERALIZEDTIME, "20260101000000.5Z", &t) == CM_ERR);
    CHECK(time_of(CM_DER_GENERALIZEDTIME, "260101000000Z", &t) == CM_ERR);
    CHECK(time_of(CM_DER_UTCTIME, "20260101000000Z", &t) == CM_ERR);
    CHECK(time_of(CM_DER_OCTET_STRING, "260101000000Z", &t) == CM_ERR);
}

/* ------------------------------------------------------------------------ */
/* x509_der.c                                                               */

static void test_attr_table(void)
{
    const struct cm_x509_der_attr *t;
    size_t n = cm_x509_der_attrs(&t), i;
    CHECK(n >= 20);
    for (i = 0; i < n; i++) {
        const unsigned char *p = t[i].oid;
        unsigned char der[16];
        ASN1_OBJECT *obj;
        der[0] = 0x06;
        der[1] = t[i].oid_len;
        memcpy(der + 2, t[i].oid, t[i].oid_len);
        p = der;
        obj = d2i_ASN1_OBJECT(NULL, &p, t[i].oid_len + 2);
        CHECK(obj != NULL);
        if (obj) {
            int nid = OBJ_obj2nid(obj);
            if (nid == NID_undef || strcmp(OBJ_nid2sn(nid), t[i].name) != 0) {
                fprintf(stderr, "attribute table: %s is %s in OpenSSL\n", t[i].name,
                        nid == NID_undef ? "unknown" : OBJ_nid2sn(nid));
                CHECK(0);
            }
        }
        ASN1_OBJECT_free(obj); obj = NULL;
    }
}

static void test_fields(void)
{
    struct cm_cert_facts f;
    struct parts p;
    struct piece exts;
    int ssl_ok;

    /* the default certificate: every field */
    p = defaults();
    CHECK(ACCEPTED(build(&p), &f));
    CHECK_STR(f.subject, "CN=leaf.example");
    CHECK_STR(f.issuer, "CN=Test CA,C=DE");
    CHECK_STR(f.serial_hex, "1234");
    CHECK(f.not_before == 1767225600 && f.not_after == 1775001600);
    CHECK(f.names.count == 2 && strcmp(f.names.items[1], "www.leaf.example") == 0);
    CHECK(!f.is_ca && f.ocsp_urls.count == 0 && f.crl_urls.count == 0);
    CHECK(f.chain_count == 0);
    cm_cert_facts_free(&f);

    /* serials: leading zero, negative, zero, long */
    p = defaults();
    p.set_serial = 1;
    p.serial = BYTES(0x02, 0x02, 0x00, 0x80);
    CHECK(ACCEPTED(build(&p), &f) && strcmp(f.serial_hex, "80") == 0);
    cm_cert_facts_free(&f);
    p.serial = BYTES(0x02, 0x01, 0xfb);
    CHECK(ACCEPTED(build(&p), &f) && strcmp(f.serial_hex, "-05") == 0);
    cm_cert_facts_free(&f);
    p.serial = BYTES(0x02, 0x02, 0xff, 0x00);
    CHECK(ACCEPTED(build(&p), &f) && strcmp(f.serial_hex, "-0100") == 0);
    cm_cert_facts_free(&f);
    p.serial = BYTES(0x02, 0x01, 0x80);
    CHECK(ACCEPTED(build(&p), &f) && strcmp(f.serial_hex, "-80") == 0);
    cm_cert_facts_free(&f);
    p.serial = BYTES(0x02, 0x01, 0x00);
    CHECK(ACCEPTED(build(&p), &f) && strcmp(f.serial_hex, "00") == 0);
    cm_cert_facts_free(&f);
    p.serial = tlv(0x02, BYTES(0x80, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
                               18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33));
    CHECK(ACCEPTED(build(&p), &f) && f.serial_hex[0] == '-' && strlen(f.serial_hex) == 69);
    cm_cert_facts_free(&f);
    p.serial = BYTES(0x02, 0x02, 0x00, 0x01); /* padded: OpenSSL rejects */
    CHECK(DECLINED_BAD(build(&p)));

    /* times: GeneralizedTime, then forms OpenSSL takes and RFC 5280 does not */
    p = defaults();
    p.set_validity = 1;
    p.validity = SEQ(utc("260101000000Z"), str(CM_DER_GENERALIZEDTIME, "20991231235959Z"));
    CHECK(ACCEPTED(build(&p), &f) && f.not_after == 4102444799LL);
    cm_cert_facts_free(&f);
    p.validity = SEQ(utc("2601010000Z"), utc("260401000000Z"));
    CHECK(DECLINED_OK(build(&p)));
    p.validity = SEQ(utc("260101000000+0100"), utc("260401000000Z"));
    CHECK(DECLINED_OK(build(&p)));
    p.validity = SEQ(utc("260101000000Z"), str(CM_DER_GENERALIZEDTIME, "20991231235959.5Z"));
    CHECK(DECLINED_OK(build(&p)));
    p.validity = SEQ(utc("261301000000Z"), utc("260401000000Z")); /* month 13 */
    CHECK(DECLINED_BAD(build(&p)));
    p.validity = SEQ(utc("260101000000Z")); /* one time only */
    CHECK(DECLINED_BAD(build(&p)));

    /* version: absent (v1), explicit v1 (DER omits it) */
    p = defaults();
    p.set_version = 1;
    p.version = NONE;
    CHECK(ACCEPTED(build(&p), &f));
    cm_cert_facts_free(&f);
    p.version = tlv(0xa0, BYTES(0x02, 0x01, 0x00));
    CHECK(ACCEPTED(build(&p), &f));
    cm_cert_facts_free(&f);

    /* algorithm parameters: NULL (RSA), a SEQUENCE (RSA-PSS), an INTEGER (declined) */
    p = defaults();
    p.set_alg = p.set_outer_alg = 1;
    p.alg = p.outer_alg = SEQ(BYTES(0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b), BYTES(0x05, 0x00));
    CHECK(ACCEPTED(build(&p), &f));
    cm_cert_facts_free(&f);
    p.alg = p.outer_alg = SEQ(BYTES(0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a), SEQ(tlv(0xa2, BYTES(0x02, 0x01, 0x20))));
    CHECK(ACCEPTED(build(&p), &f));
    cm_cert_facts_free(&f);
    p.alg = SEQ(BYTES(0x06, 0x03, 0x2a, 0x03, 0x04), BYTES(0x02, 0x01, 0x01));
    CHECK(DECLINED_OK(build(&p)));
    p.alg = SEQ(BYTES(0x06, 0x03, 0x2a, 0x03, 0x04), BYTES(0x05, 0x01, 0x00)); /* NULL with contents */
    CHECK(DECLINED_BAD(build(&p)));

    /* extensions: URLs, CA flag, names */
    exts = EXTS(EXT(OID_BC, 1, SEQ(BYTES(0x01, 0x01, 0xff), BYTES(0x02, 0x01, 0x00))),
                EXT(OID_KU, 1, BYTES(0x03, 0x02, 0x01, 0x06)),
                EXT(OID_AIA, 0, SEQ(SEQ(OID(OID_CAISSUERS), URI("http://ca.example/ca.der")),
                                    SEQ(OID(OID_OCSP), URI("http://ocsp.example/")),
                                    SEQ(OID(OID_OCSP), URI("bad url")),
                                    SEQ(OID(OID_OCSP), DNS("ocsp.example")),
                                    SEQ(OID(OID_OCSP), URI("http://ocsp2.example/")))),
                EXT(OID_CRLDP, 0, SEQ(SEQ(tlv(0xa0, tlv(0xa0, CAT(URI("http://crl.example/a.crl"), DNS("x.example"))))),
                                      EMPTY_SEQ,
                                      SEQ(tlv(0xa0, tlv(0xa0, URI("http://crl.example/b.crl"))), BYTES(0x81, 0x02, 0x05, 0x60)))),
                EXT(OID_SAN, 0, SEQ(BYTES(0x87, 0x04, 192, 0, 2, 1), DNS("a.example"), str(0x81, "x@example.net"),
                                    BYTES(0x87, 0x10, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1),
                                    BYTES(0x87, 0x08, 10, 0, 0, 0, 255, 0, 0, 0), DNS("bad name"), DNS("b.example"),
                                    URI("https://u.example/"))));
    CHECK(ACCEPTED(leaf_with_exts(exts), &f));
    CHECK(f.is_ca);
    CHECK(f.names.count == 4 && strcmp(f.names.items[0], "a.example") == 0 &&
          strcmp(f.names.items[1], "b.example") == 0 && strcmp(f.names.items[2], "192.0.2.1") == 0 &&
          strcmp(f.names.items[3], "2001:db8::1") == 0);
    CHECK(f.ocsp_urls.count == 2 && strcmp(f.ocsp_urls.items[1], "http://ocsp2.example/") == 0);
    CHECK(f.crl_urls.count == 2 && strcmp(f.crl_urls.items[1], "http://crl.example/b.crl") == 0);
    cm_cert_facts_free(&f);
    /* basicConstraints without cA; an empty SAN falls back to the CN */
    CHECK(ACCEPTED(leaf_with_exts(EXTS(EXT(OID_BC, 1, EMPTY_SEQ), EXT(OID_SAN, 0, EMPTY_SEQ))), &f));
    CHECK(!f.is_ca && f.names.count == 1 && strcmp(f.names.items[0], "leaf.example") == 0);
    cm_cert_facts_free(&f);
    /* no usable SAN: the last CN; an unusable CN: no names */
    CHECK(ACCEPTED(leaf_with_exts(EXTS(EXT(OID_SAN, 0, SEQ(DNS("with space"))))), &f));
    CHECK(f.names.count == 1 && strcmp(f.names.items[0], "leaf.example") == 0);
    cm_cert_facts_free(&f);
    CHECK(ACCEPTED(leaf_with_subject(SEQ(CN("first.example"), SET(AVA(OID_O, CM_DER_PRINTABLESTRING, "x")),
                                         SET(AVA(OID_CN, CM_DER_PRINTABLESTRING, "last.example")))), &f));
    CHECK(f.names.count == 1 && strcmp(f.names.items[0], "last.example") == 0);
    cm_cert_facts_free(&f);
    CHECK(ACCEPTED(leaf_with_subject(SEQ(CN("ok.example"), CN("not ok"))), &f));
    CHECK(f.names.count == 0);
    cm_cert_facts_free(&f);
    CHECK(ACCEPTED(leaf_with_subject(EMPTY_SEQ), &f));
    CHECK(f.names.count == 0 && strcmp(f.subject, "") == 0);
    cm_cert_facts_free(&f);

    /* a chain: the second certificate is checked for shape */
    {
        struct piece leaf, ca, chain;
        p = defaults();
        leaf = build(&p);
        p.set_exts = 1;
        p.exts = EXTS(EXT(OID_BC, 1, SEQ(BYTES(0x01, 0x01, 0xff))));
        ca = build(&p);
        chain = CAT(leaf, ca, ca);
        CHECK(ACCEPTED(chain, &f) && f.chain_count == 2 && f.der_len == leaf.n &&
              f.chain_der_len == 2 * ca.n);
        cm_cert_facts_free(&f);
        CHECK(DECLINED_BAD(CAT(leaf, BYTES(0x30, 0x00))));
        CHECK(DECLINED_BAD(CAT(leaf, raw(ca.p, ca.n - 1))));
        /* a chain certificate's names are not read: a BMPString subject is fine */
        p.set_subject = 1;
        p.subject = SEQ(SET(SEQ(OID(OID_CN), tlv(0x1e, BYTES(0, 'c', 0, 'a')))));
        ca = build(&p);
        CHECK(ACCEPTED(CAT(leaf, ca), &f) && f.chain_count == 1);
        cm_cert_facts_free(&f);
        /* a chain certificate in BER (long-form length): OpenSSL's shape check takes it */
        {
            unsigned char *ber = take(ca.n + 1);
            size_t hdr = ca.p[1] == 0x81 ? 3 : 2;
            CHECK(ca.p[1] == 0x81 || ca.p[1] == 0x82);
            if (ca.p[1] == 0x81) {
                ber[0] = 0x30;
                ber[1] = 0x82;
                ber[2] = 0x00;
                ber[3] = ca.p[2];
                memcpy(ber + 4, ca.p + hdr, ca.n - hdr);
                CHECK(DECLINED_OK(CAT(leaf, raw(ber, ca.n + 1))));
            }
        }
    }
    (void)ssl_ok;
}

static void test_names(void)
{
    struct cm_cert_facts f;
    int ssl_ok;
    struct piece multi;

    /* RFC 2253 escapes as OpenSSL applies them */
    CHECK(ACCEPTED(leaf_with_subject(SEQ(SET(AVA(OID_CN, CM_DER_UTF8STRING, "a,b+c\"d\\e<f>g;h#i=j")))), &f));
    CHECK_STR(f.subject, "CN=a\\,b\\+c\\\"d\\\\e\\<f\\>g\\;h#i=j");
    cm_cert_facts_free(&f);
    CHECK(ACCEPTED(leaf_with_subject(SEQ(SET(AVA(OID_CN, CM_DER_UTF8STRING, " lead")),
                                         SET(AVA(OID_O, CM_DER_UTF8STRING, "trail ")),
                                         SET(AVA(OID_O, CM_DER_UTF8STRING, " ")),
                                         SET(AVA(OID_O, CM_DER_UTF8STRING, "#")),
                                         SET(AVA(OID_O, CM_DER_UTF8STRING, "#x#")),
                                         SET(AVA(OID_O, CM_DER_UTF8STRING, "  ")),
                                         SET(AVA(OID_O, CM_DER_UTF8STRING, "")))), &f));
    CHECK_STR(f.subject, "O=,O=\\ \\ ,O=\\#x#,O=#,O=\\ ,O=trail\\ ,CN=\\ lead");
    cm_cert_facts_free(&f);
    /* control characters and DEL as \XX */
    CHECK(ACCEPTED(leaf_with_subject(SEQ(SET(SEQ(OID(OID_CN), tlv(CM_DER_UTF8STRING, BYTES('a', 0x00, 0x0a, 0x7f, 0x1f)))))), &f));
    CHECK_STR(f.subject, "CN=a\\00\\0A\\7F\\1F");
    cm_cert_facts_free(&f);
    /* multi-valued RDNs print last attribute first, joined by + */
    multi = SEQ(SET(AVA(OID_C, CM_DER_PRINTABLESTRING, "FR")),
                SET(AVA(OID_CN, CM_DER_UTF8STRING, "mv"), AVA(OID_O, CM_DER_UTF8STRING, "Multi"),
                    AVA(OID_EMAIL, CM_DER_IA5STRING, "x@example.com")));
    CHECK(ACCEPTED(leaf_with_subject(multi), &f));
    CHECK_STR(f.subject, "emailAddress=x@example.com+O=Multi+CN=mv,C=FR");
    cm_cert_facts_free(&f);
    /* every plain string type */
    CHECK(ACCEPTED(leaf_with_subject(SEQ(SET(AVA(OID_CN, CM_DER_T61STRING, "t61")),
                                         SET(AVA(OID_CN, CM_DER_IA5STRING, "ia5")),
                                         SET(AVA(OID_CN, CM_DER_NUMERICSTRING, "123")))), &f));
    CHECK_STR(f.subject, "CN=123,CN=ia5,CN=t61");
    cm_cert_facts_free(&f);
    /* VisibleString is not a DirectoryString: OpenSSL rejects the Name */
    CHECK(DECLINED_BAD(leaf_with_subject(SEQ(SET(AVA(OID_CN, CM_DER_VISIBLESTRING, "vis"))))));

    /* declined: non-ASCII UTF-8, BMPString, an unknown type, a value of another type, an empty RDN */
    CHECK(DECLINED_OK(leaf_with_subject(SEQ(CN("caf\xc3\xa9")))));
    CHECK(DECLINED_BAD(leaf_with_subject(SEQ(CN("bad \xc3")))));
    CHECK(DECLINED_OK(leaf_with_subject(SEQ(SET(SEQ(OID(OID_CN), tlv(0x1e, BYTES(0, 'a', 0, 'b'))))))));
    CHECK(DECLINED_OK(leaf_with_subject(SEQ(SET(SEQ(BYTES(0x06, 0x03, 0x2a, 0x03, 0x04), str(CM_DER_UTF8STRING, "x")))))));
    CHECK(DECLINED_BAD(leaf_with_subject(SEQ(SET(SEQ(OID(OID_CN), BYTES(0x02, 0x01, 0x05)))))));
    CHECK(DECLINED_OK(leaf_with_subject(SEQ(EMPTY_SET, CN("x")))));
    /* up to 32 attributes in a Name are read; more are declined */
    {
        struct piece many = NONE;
        int i;
        for (i = 0; i < 32; i++) many = CAT(many, CN("n"));
        CHECK(ACCEPTED(leaf_with_subject(tlv(0x30, many)), &f));
        CHECK(strlen(f.subject) == 32 * 4 + 31);
        cm_cert_facts_free(&f);
        CHECK(DECLINED_OK(leaf_with_subject(tlv(0x30, CAT(many, CN("n"))))));
    }
    CHECK(DECLINED_BAD(leaf_with_subject(SEQ(SET(SEQ(OID(OID_CN))))))); /* no value */
    CHECK(DECLINED_BAD(leaf_with_subject(SEQ(SET(SEQ(OID(OID_CN), str(CM_DER_UTF8STRING, "x"), str(CM_DER_UTF8STRING, "y")))))));
    CHECK(DECLINED_BAD(leaf_with_subject(SEQ(SEQ(AVA(OID_CN, CM_DER_UTF8STRING, "x")))))); /* SEQUENCE, not SET */
}

static void test_extension_fallbacks(void)
{
    int ssl_ok;
    struct piece san = EXT(OID_SAN, 0, SEQ(DNS("a.example")));

    /* duplicates: OpenSSL reads a duplicated extension as absent */
    CHECK(DECLINED_OK(leaf_with_exts(EXTS(san, san))));
    CHECK(DECLINED_OK(leaf_with_exts(EXTS(EXT(OID_BC, 1, SEQ(BYTES(0x01, 0x01, 0xff))),
                                          EXT(OID_BC, 1, SEQ(BYTES(0x01, 0x01, 0xff)))))));
    /* GeneralName kinds not read here: otherName, directoryName, registeredID */
    CHECK(DECLINED_OK(leaf_with_exts(EXTS(EXT(OID_SAN, 0, SEQ(DNS("a.example"), tlv(0xa0, CAT(BYTES(0x06, 0x03, 0x2a, 0x03, 0x04), tlv(0xa0, str(CM_DER_UTF8STRING, "x"))))))))));
    CHECK(DECLINED_OK(leaf_with_exts(EXTS(EXT(OID_SAN, 0, SEQ(tlv(0xa4, SEQ(CN("inner")))))))));
    CHECK(DECLINED_OK(leaf_with_exts(EXTS(EXT(OID_SAN, 0, SEQ(BYTES(0x88, 0x03, 0x2a, 0x03, 0x04)))))));
    /* a malformed extension value: OpenSSL reads it as absent */
    CHECK(DECLINED_OK(leaf_with_exts(EXTS(EXT(OID_SAN, 0, CAT(SEQ(DNS("a.example")), BYTES(0x00)))))));
    CHECK(DECLINED_OK(leaf_with_exts(EXTS(EXT(OID_SAN, 0, BYTES(0x30, 0x05, 0x82, 0x01)))))); /* truncated */
    CHECK(DECLINED_OK(leaf_with_exts(EXTS(EXT(OID_SAN, 0, tlv(0xa2, DNS("a.example")))))));
    CHECK(DECLINED_OK(leaf_with_exts(EXTS(EXT(OID_BC, 0, SEQ(BYTES(0x01, 0x01, 0x00)))))));
    CHECK(DECLINED_OK(leaf_with_exts(EXTS(EXT(OID_BC, 0, SEQ(BYTES(0x01, 0x02, 0xff, 0xff)))))));
    CHECK(DECLINED_OK(leaf_with_exts(EXTS(EXT(OID_CRLDP, 0, SEQ(SEQ(tlv(0xa0, tlv(0xa1, SET(AVA(OID_CN, CM_DER_UTF8STRING, "rel"))))))))))); /* relative name */
    CHECK(DECLINED_OK(leaf_with_exts(EXTS(EXT(OID_AIA, 0, SEQ(SEQ(OID(OID_OCSP)))))))); /* no location */
    /* an explicit critical FALSE (DER omits a DEFAULT) */
    CHECK(DECLINED_OK(leaf_with_exts(EXTS(SEQ(OID(OID_SAN), BYTES(0x01, 0x01, 0x00), tlv(0x04, SEQ(DNS("a.example"))))))));
    /* an empty extension list */
    CHECK(DECLINED_OK(leaf_with_exts(tlv(0xa3, EMPTY_SEQ))));
    /* the extension list broken: OpenSSL rejects the certificate */
    CHECK(DECLINED_BAD(leaf_with_exts(EXTS(SEQ(OID(OID_SAN))))));
    CHECK(DECLINED_BAD(leaf_with_exts(EXTS(SEQ(BYTES(0x06, 0x02, 0x55, 0x9d), tlv(0x04, EMPTY_SEQ))))));
    CHECK(DECLINED_BAD(leaf_with_exts(EXTS(SEQ(OID(OID_SAN), BYTES(0x01, 0x02, 0xff, 0xff), tlv(0x04, EMPTY_SEQ))))));
}

static void test_malformed(void)
{
    struct parts p;
    struct piece c;
    unsigned char *copy;
    int ssl_ok;
    size_t i;

    p = defaults();
    c = build(&p);
    /* every truncation: OpenSSL rejects, the product says so as before */
    for (i = 1; i < c.n; i++) {
        if (!DECLINED_BAD(raw(c.p, i))) {
            fprintf(stderr, "truncated to %zu bytes\n", i);
            CHECK(0);
            break;
        }
    }
    CHECK(i == c.n);
    /* the outer length in long form for a short length, and padded with a zero */
    copy = take(c.n + 2);
    memcpy(copy, c.p, c.n);
    CHECK(copy[1] == 0x81 || copy[1] < 0x80);
    if (copy[1] < 0x80) {
        memmove(copy + 3, copy + 2, c.n - 2);
        copy[2] = copy[1];
        copy[1] = 0x81;
        CHECK(DECLINED_OK(raw(copy, c.n + 1)));
    } else {
        memmove(copy + 3, copy + 2, c.n - 2);
        copy[1] = 0x82;
        copy[2] = 0x00;
        CHECK(DECLINED_OK(raw(copy, c.n + 1)));
    }
    /* indefinite length outside (BER) */
    {
        struct piece inner = raw(c.p + (c.p[1] == 0x81 ? 3 : 2), c.n - (c.p[1] == 0x81 ? 3 : 2));
        CHECK(DECLINED_OK(CAT(BYTES(0x30, 0x80), inner, BYTES(0x00, 0x00))));
    }
    /* a field missing, a field too many, trailing data in the TBS */
    p = defaults();
    p.set_key = 1;
    p.key = NONE;
    CHECK(DECLINED_BAD(build(&p)));
    p = defaults();
    p.extra = BYTES(0x81, 0x02, 0x00, 0xff); /* issuerUniqueID: v2, never issued, declined */
    CHECK(DECLINED_OK(build(&p)));
    p = defaults();
    p.set_exts = 1;
    p.exts = BYTES(0x05, 0x00);
    CHECK(DECLINED_BAD(build(&p)));
    /* the signature BIT STRING: bad unused-bits count */
    p = defaults();
    p.set_sig = 1;
    p.sig = BYTES(0x03, 0x02, 0x08, 0x00);
    CHECK(DECLINED_BAD(build(&p)));
    /* an OID with a redundant 0x80 */
    p = defaults();
    p.set_alg = 1;
    p.alg = SEQ(BYTES(0x06, 0x03, 0x2a, 0x80, 0x01));
    CHECK(DECLINED_BAD(build(&p)));
    /* not a certificate at all */
    CHECK(DECLINED_BAD(BYTES(0x04, 0x00)));
    CHECK(DECLINED_BAD(BYTES(0x30, 0x00)));
}

/* One PEM CERTIFICATE block of der[0..n), malloc'd. */
static char *pem_block(const unsigned char *der, size_t n)
{
    static const char begin[] = "-----BEGIN CERTIFICATE-----\n", end[] = "-----END CERTIFICATE-----\n";
    size_t b64 = cm_base64_encoded_size(n, CM_BASE64_PAD | CM_BASE64_LINES);
    char *pem = malloc(sizeof begin + b64 + sizeof end);
    size_t o;
    if (!pem) exit(2);
    memcpy(pem, begin, sizeof begin - 1);
    o = sizeof begin - 1;
    o += cm_base64_encode_into(der, n, CM_BASE64_PAD | CM_BASE64_LINES, pem + o);
    memcpy(pem + o, end, sizeof end);
    return pem;
}

/* The PEM path takes the fast path too, and keeps its own checks. */
static void test_pem(void)
{
    struct parts p = defaults();
    struct piece c = build(&p), junk = CAT(c, BYTES(0x00));
    struct cm_cert_facts f, g;
    struct cm_result res, res2;
    char *pem = pem_block(c.p, c.n), *bad = pem_block(junk.p, junk.n);

    CHECK(cm_x509_parse_chain_with(CM_X509_DECODE_FAST_ONLY, pem, strlen(pem), &f, &res) == CM_OK);
    CHECK(cm_x509_parse_chain_with(CM_X509_DECODE_OPENSSL, pem, strlen(pem), &g, &res) == CM_OK);
    CHECK(same_facts(&f, &g));
    cm_cert_facts_free(&f);
    cm_cert_facts_free(&g);
    /* trailing bytes after the leaf inside its block: the same error both ways */
    CHECK(cm_x509_parse_chain_with(CM_X509_DECODE_FAST_ONLY, bad, strlen(bad), &f, &res) == CM_ERR);
    CHECK(cm_x509_parse_chain_with(CM_X509_DECODE_OPENSSL, bad, strlen(bad), &g, &res2) == CM_ERR);
    CHECK_STR(res.code, "parse");
    CHECK_STR(res.message, res2.message);
    CHECK_STR(res.message, "certificate 1 in chain has 1 bytes of trailing data");
    free(bad); bad = NULL;
    free(pem); pem = NULL;
}

int main(void)
{
    test_reader();
    test_primitives();
    test_times();
    test_attr_table();
    test_fields();
    test_names();
    test_extension_fallbacks();
    test_malformed();
    test_pem();
    return CHECK_DONE();
}
