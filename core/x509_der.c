/* x509_der.c - the fast path of x509_der.h: a leaf certificate's facts from
 * its DER in one walk (der.h), a few mallocs for the strings the facts keep.
 *
 * Why: OpenSSL's template decoder (ASN1_item_d2i, X509_NAME with its
 * canonical copy, X509V3_get_d2i per extension, X509_NAME_print_ex through a
 * BIO) costs ~30 us a certificate, which is most of the start-up load.
 *
 * Every "not handled" below is a decline, never a rejection: the OpenSSL
 * path then parses the input and either rejects it with its own message or
 * accepts it.  What is accepted here is a strict subset of what OpenSSL
 * accepts, and yields the same facts (tests/fuzz/fuzz_x509_fastpath.c
 * checks both claims input by input).  The rules OpenSSL applies, and which
 * this file mirrors, are cited where they matter.
 */
#include "x509_der.h"

#include "der.h"
#include "encoding.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define DECLINE CM_X509_DECLINED

/* Attributes in one Name: real names have 3-8; more is unusual, declined. */
#define MAX_AVAS 32

/* ------------------------------------------------------------------------ */
/* attribute types                                                          */

/* Those OpenSSL names by these short names (OBJ_nid2sn), which
 * X509_NAME_print_ex(XN_FLAG_RFC2253) prints; an OID it does not know it
 * prints as dotted digits with the value dumped in hex: declined here. */
static const struct cm_x509_der_attr attrs[] = {
    {"CN", 3, {0x55, 0x04, 0x03}},
    {"SN", 3, {0x55, 0x04, 0x04}},
    {"serialNumber", 3, {0x55, 0x04, 0x05}},
    {"C", 3, {0x55, 0x04, 0x06}},
    {"L", 3, {0x55, 0x04, 0x07}},
    {"ST", 3, {0x55, 0x04, 0x08}},
    {"street", 3, {0x55, 0x04, 0x09}},
    {"O", 3, {0x55, 0x04, 0x0a}},
    {"OU", 3, {0x55, 0x04, 0x0b}},
    {"title", 3, {0x55, 0x04, 0x0c}},
    {"description", 3, {0x55, 0x04, 0x0d}},
    {"businessCategory", 3, {0x55, 0x04, 0x0f}},
    {"postalCode", 3, {0x55, 0x04, 0x11}},
    {"name", 3, {0x55, 0x04, 0x29}},
    {"GN", 3, {0x55, 0x04, 0x2a}},
    {"initials", 3, {0x55, 0x04, 0x2b}},
    {"generationQualifier", 3, {0x55, 0x04, 0x2c}},
    {"dnQualifier", 3, {0x55, 0x04, 0x2e}},
    {"pseudonym", 3, {0x55, 0x04, 0x41}},
    {"organizationIdentifier", 3, {0x55, 0x04, 0x61}},
    {"emailAddress", 9, {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01}},
    {"UID", 10, {0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01}},
    {"DC", 10, {0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19}},
    {"jurisdictionL", 11, {0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x3c, 0x02, 0x01, 0x01}},
    {"jurisdictionST", 11, {0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x3c, 0x02, 0x01, 0x02}},
    {"jurisdictionC", 11, {0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x3c, 0x02, 0x01, 0x03}},
};

#define ATTR_CN (&attrs[0])

size_t cm_x509_der_attrs(const struct cm_x509_der_attr **table)
{
    *table = attrs;
    return sizeof attrs / sizeof attrs[0];
}

static const struct cm_x509_der_attr *attr_by_oid(const struct cm_der_elem *oid)
{
    size_t i;
    for (i = 0; i < sizeof attrs / sizeof attrs[0]; i++)
        if (attrs[i].oid_len == oid->len && memcmp(attrs[i].oid, oid->body, oid->len) == 0)
            return &attrs[i];
    return NULL;
}

static int oid_is(const struct cm_der_elem *oid, const unsigned char *want, size_t n)
{
    return oid->len == n && memcmp(oid->body, want, n) == 0;
}

static const unsigned char OID_SAN[] = {0x55, 0x1d, 0x11};
static const unsigned char OID_BASIC_CONSTRAINTS[] = {0x55, 0x1d, 0x13};
static const unsigned char OID_CRL_DP[] = {0x55, 0x1d, 0x1f};
static const unsigned char OID_AIA[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x01};
static const unsigned char OID_TLS_FEATURE[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x18};
static const unsigned char OID_AD_OCSP[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01};

/* ------------------------------------------------------------------------ */
/* small readers                                                            */

static int read_integer(struct cm_der *d, struct cm_der_elem *e)
{
    if (cm_der_expect(d, CM_DER_INTEGER, e) != CM_OK) return DECLINE;
    return cm_der_integer_ok(e->body, e->len) == CM_OK ? CM_OK : DECLINE;
}

static int read_oid(struct cm_der *d, struct cm_der_elem *e)
{
    if (cm_der_expect(d, CM_DER_OID, e) != CM_OK) return DECLINE;
    return cm_der_oid_ok(e->body, e->len) == CM_OK ? CM_OK : DECLINE;
}

/* An optional BOOLEAN that, when present, is TRUE: DER omits a FALSE that is
 * the DEFAULT (OpenSSL would accept it, and any non-zero byte as TRUE). */
static int read_true_flag(struct cm_der *d, int *on)
{
    struct cm_der_elem e;
    if (cm_der_optional(d, CM_DER_BOOLEAN, &e, on) != CM_OK) return DECLINE;
    if (*on && (e.len != 1 || e.body[0] != 0xff)) return DECLINE;
    return CM_OK;
}

/* AlgorithmIdentifier: OID, then parameters that are absent, NULL, an OID
 * or a SEQUENCE (OpenSSL's ANY keeps a SEQUENCE undecoded; other types it
 * checks type by type: declined). */
static int read_algorithm(struct cm_der *d)
{
    struct cm_der_elem seq, e;
    struct cm_der in;
    int tag;
    if (cm_der_expect(d, CM_DER_SEQUENCE, &seq) != CM_OK) return DECLINE;
    in = cm_der_inside(&seq);
    if (read_oid(&in, &e) != CM_OK) return DECLINE;
    tag = cm_der_peek(&in);
    if (tag == CM_DER_NULL) {
        if (cm_der_next(&in, &e) != CM_OK || e.len != 0) return DECLINE;
    } else if (tag == CM_DER_OID) {
        if (read_oid(&in, &e) != CM_OK) return DECLINE;
    } else if (tag == CM_DER_SEQUENCE) {
        if (cm_der_next(&in, &e) != CM_OK) return DECLINE;
    } else if (tag != -1) {
        return DECLINE;
    }
    return cm_der_done(&in) ? CM_OK : DECLINE;
}

static int read_bit_string(struct cm_der *d)
{
    struct cm_der_elem e;
    if (cm_der_expect(d, CM_DER_BIT_STRING, &e) != CM_OK) return DECLINE;
    return cm_der_bit_string_ok(e.body, e.len) == CM_OK ? CM_OK : DECLINE;
}

/* Validity: two times in their strict form. */
static int read_validity(struct cm_der *d, int64_t *not_before, int64_t *not_after)
{
    struct cm_der_elem seq, t;
    struct cm_der in;
    if (cm_der_expect(d, CM_DER_SEQUENCE, &seq) != CM_OK) return DECLINE;
    in = cm_der_inside(&seq);
    if (cm_der_next(&in, &t) != CM_OK || cm_der_time(&t, not_before) != CM_OK) return DECLINE;
    if (cm_der_next(&in, &t) != CM_OK || cm_der_time(&t, not_after) != CM_OK) return DECLINE;
    return cm_der_done(&in) ? CM_OK : DECLINE;
}

/* The fields of a TBSCertificate, located. */
struct tbs {
    struct cm_der_elem serial, issuer, subject, exts;
    int has_exts;
    int64_t not_before, not_after;
};

/* Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
 * at the start of der[0..len), its TBSCertificate fields into *t.  The key
 * is only checked to be a SEQUENCE (OpenSSL's lean templates do the same),
 * the names and extensions are left to the caller.  The unique identifiers
 * of X.509 v2 are declined (nobody issues them). */
static int read_certificate(const unsigned char *der, size_t len, size_t *used, struct tbs *t)
{
    struct cm_der top = cm_der_init(der, len), cert, in, ver;
    struct cm_der_elem c, tbs, e;
    int present;

    memset(t, 0, sizeof *t);
    if (cm_der_expect(&top, CM_DER_SEQUENCE, &c) != CM_OK) return DECLINE;
    *used = (size_t)(c.body + c.len - der);
    cert = cm_der_inside(&c);
    if (cm_der_expect(&cert, CM_DER_SEQUENCE, &tbs) != CM_OK) return DECLINE;
    if (read_algorithm(&cert) != CM_OK || read_bit_string(&cert) != CM_OK ||
        !cm_der_done(&cert))
        return DECLINE;

    in = cm_der_inside(&tbs);
    if (cm_der_optional(&in, CM_DER_CONTEXT_CONS(0), &e, &present) != CM_OK) return DECLINE;
    if (present) {
        ver = cm_der_inside(&e);
        if (read_integer(&ver, &e) != CM_OK || !cm_der_done(&ver)) return DECLINE;
    }
    if (read_integer(&in, &t->serial) != CM_OK || read_algorithm(&in) != CM_OK ||
        cm_der_expect(&in, CM_DER_SEQUENCE, &t->issuer) != CM_OK ||
        read_validity(&in, &t->not_before, &t->not_after) != CM_OK ||
        cm_der_expect(&in, CM_DER_SEQUENCE, &t->subject) != CM_OK ||
        cm_der_expect(&in, CM_DER_SEQUENCE, &e) != CM_OK)
        return DECLINE;
    if (cm_der_optional(&in, CM_DER_CONTEXT_CONS(3), &e, &t->has_exts) != CM_OK) return DECLINE;
    if (t->has_exts) {
        struct cm_der x = cm_der_inside(&e);
        if (cm_der_expect(&x, CM_DER_SEQUENCE, &t->exts) != CM_OK || !cm_der_done(&x) ||
            t->exts.len == 0)
            return DECLINE;
    }
    return cm_der_done(&in) ? CM_OK : DECLINE;
}

int cm_x509_der_shallow(const unsigned char *der, size_t len, size_t *used)
{
    struct tbs t;
    return read_certificate(der, len, used, &t);
}

int cm_x509_der_not_after(const unsigned char *der, size_t len, int64_t *not_after)
{
    struct tbs t;
    size_t used = 0;
    int rc = read_certificate(der, len, &used, &t);
    if (rc != CM_OK) return rc;
    if (used != len) return DECLINE;
    *not_after = t.not_after;
    return CM_OK;
}

/* ------------------------------------------------------------------------ */
/* names in RFC 2253 text                                                   */

struct ava {
    const struct cm_x509_der_attr *attr;
    const unsigned char *value;
    size_t len;
    size_t rdn; /* which RelativeDistinguishedName it belongs to */
};

/* String types that OpenSSL takes in a Name (B_ASN1_PRINTABLE: not
 * VisibleString) and prints byte for byte when they are ASCII (UTF8String
 * as is, the others as Latin-1 converted to UTF-8). */
static int plain_string_tag(unsigned tag)
{
    return tag == CM_DER_UTF8STRING || tag == CM_DER_PRINTABLESTRING ||
           tag == CM_DER_IA5STRING || tag == CM_DER_T61STRING || tag == CM_DER_NUMERICSTRING;
}

/* Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value string }, each
 * attribute into avas[0..*count).  Declines an empty RDN, an unknown type, a
 * value that is not one of the plain string types or not 7-bit ASCII. */
static int read_name(const struct cm_der_elem *name, struct ava *avas, size_t *count)
{
    struct cm_der rdns = cm_der_inside(name), set, attr;
    struct cm_der_elem rdn, seq, oid, val;
    size_t n = 0, r, i;

    for (r = 0; !cm_der_done(&rdns); r++) {
        if (cm_der_expect(&rdns, CM_DER_SET, &rdn) != CM_OK || rdn.len == 0) return DECLINE;
        set = cm_der_inside(&rdn);
        while (!cm_der_done(&set)) {
            if (n == MAX_AVAS || cm_der_expect(&set, CM_DER_SEQUENCE, &seq) != CM_OK)
                return DECLINE;
            attr = cm_der_inside(&seq);
            if (cm_der_expect(&attr, CM_DER_OID, &oid) != CM_OK ||
                cm_der_next(&attr, &val) != CM_OK || !cm_der_done(&attr))
                return DECLINE;
            if (!(avas[n].attr = attr_by_oid(&oid)) || !plain_string_tag(val.tag))
                return DECLINE;
            for (i = 0; i < val.len; i++)
                if (val.body[i] >= 0x80) return DECLINE;
            avas[n].value = val.body;
            avas[n].len = val.len;
            avas[n].rdn = r;
            n++;
        }
    }
    *count = n;
    return CM_OK;
}

/* One value as X509_NAME_print_ex(XN_FLAG_RFC2253) escapes 7-bit text
 * (crypto/asn1/a_strex.c do_esc_char with charmap.h): a backslash before
 * , + " \ < > ;, before a space that opens or ends the value and before a #
 * that opens it; \XX (upper-case hex) for control characters and DEL.  In a
 * one-character value only the "ends" rule applies, as in do_buf.  Writes
 * to out when it is not NULL; returns the length either way. */
static size_t put_value(char *out, const unsigned char *v, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i, o = 0;
    for (i = 0; i < n; i++) {
        unsigned c = v[i];
        int last = i + 1 == n, first = i == 0 && !last;
        if (c < 0x20 || c == 0x7f) {
            if (out) {
                out[o] = '\\';
                out[o + 1] = hex[c >> 4];
                out[o + 2] = hex[c & 15];
            }
            o += 3;
            continue;
        }
        if (c == ',' || c == '+' || c == '"' || c == '\\' || c == '<' || c == '>' ||
            c == ';' || (c == ' ' && (first || last)) || (c == '#' && first)) {
            if (out) out[o] = '\\';
            o++;
        }
        if (out) out[o] = (char)c;
        o++;
    }
    return o;
}

/* The RFC 2253 text of avas[0..n): last RDN first, "," between RDNs, "+"
 * between the attributes of one RDN (also last first), "type=value".
 * Writes to out when not NULL; returns the length. */
static size_t put_name(char *out, const struct ava *avas, size_t n)
{
    size_t o = 0, i, k;
    for (i = n; i-- > 0;) {
        if (i + 1 < n) {
            if (out) out[o] = avas[i].rdn == avas[i + 1].rdn ? '+' : ',';
            o++;
        }
        k = strlen(avas[i].attr->name);
        if (out) {
            memcpy(out + o, avas[i].attr->name, k);
            out[o + k] = '=';
        }
        o += k + 1;
        o += put_value(out ? out + o : NULL, avas[i].value, avas[i].len);
    }
    return o;
}

static char *name_text(const struct ava *avas, size_t n)
{
    size_t len = put_name(NULL, avas, n);
    char *s = malloc(len + 1);
    if (!s) return NULL;
    put_name(s, avas, n);
    s[len] = '\0';
    return s;
}

/* ------------------------------------------------------------------------ */
/* extensions                                                               */

/* The extensions the facts come from; each at most once (OpenSSL's
 * X509V3_get_d2i treats a duplicate as absent: declined). */
struct exts {
    struct cm_der_elem san, aia, crl_dp, basic, tls_feature;
    int has_san, has_aia, has_crl_dp, has_basic, has_tls_feature;
};

static int take_ext(struct cm_der_elem *slot, int *has, const struct cm_der_elem *value)
{
    if (*has) return DECLINE;
    *slot = *value;
    *has = 1;
    return CM_OK;
}

/* Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE,
 * extnValue OCTET STRING }, for each of exts (a non-empty SEQUENCE OF). */
static int read_extensions(const struct cm_der_elem *seq, struct exts *x)
{
    struct cm_der all = cm_der_inside(seq), ext;
    struct cm_der_elem e, oid, value;
    int critical, rc = CM_OK;

    memset(x, 0, sizeof *x);
    while (!cm_der_done(&all)) {
        if (cm_der_expect(&all, CM_DER_SEQUENCE, &e) != CM_OK) return DECLINE;
        ext = cm_der_inside(&e);
        if (read_oid(&ext, &oid) != CM_OK || read_true_flag(&ext, &critical) != CM_OK ||
            cm_der_expect(&ext, CM_DER_OCTET_STRING, &value) != CM_OK || !cm_der_done(&ext))
            return DECLINE;
        if (oid_is(&oid, OID_SAN, sizeof OID_SAN))
            rc = take_ext(&x->san, &x->has_san, &value);
        else if (oid_is(&oid, OID_AIA, sizeof OID_AIA))
            rc = take_ext(&x->aia, &x->has_aia, &value);
        else if (oid_is(&oid, OID_CRL_DP, sizeof OID_CRL_DP))
            rc = take_ext(&x->crl_dp, &x->has_crl_dp, &value);
        else if (oid_is(&oid, OID_BASIC_CONSTRAINTS, sizeof OID_BASIC_CONSTRAINTS))
            rc = take_ext(&x->basic, &x->has_basic, &value);
        else if (oid_is(&oid, OID_TLS_FEATURE, sizeof OID_TLS_FEATURE))
            rc = take_ext(&x->tls_feature, &x->has_tls_feature, &value);
        if (rc != CM_OK) return rc;
    }
    return CM_OK;
}

/* The one SEQUENCE an extension's OCTET STRING holds, exactly (OpenSSL
 * ignores bytes after it: declined). */
static int ext_sequence(const struct cm_der_elem *value, struct cm_der *inside)
{
    struct cm_der v = cm_der_init(value->body, value->len);
    struct cm_der_elem seq;
    if (cm_der_expect(&v, CM_DER_SEQUENCE, &seq) != CM_OK || !cm_der_done(&v)) return DECLINE;
    *inside = cm_der_inside(&seq);
    return CM_OK;
}

/* GeneralName kinds read here: rfc822Name, dNSName, URI (IA5String) and
 * iPAddress (OCTET STRING), primitive and implicitly tagged; OpenSSL checks
 * none of their contents.  The constructed kinds are declined. */
#define GN_EMAIL CM_DER_CONTEXT(1)
#define GN_DNS CM_DER_CONTEXT(2)
#define GN_URI CM_DER_CONTEXT(6)
#define GN_IP CM_DER_CONTEXT(7)

static int read_general_name(struct cm_der *d, struct cm_der_elem *gn)
{
    if (cm_der_next(d, gn) != CM_OK) return DECLINE;
    if (gn->tag != GN_EMAIL && gn->tag != GN_DNS && gn->tag != GN_URI && gn->tag != GN_IP)
        return DECLINE;
    return CM_OK;
}

/* Every GeneralName of names checked; none kept. */
static int check_general_names(struct cm_der names)
{
    struct cm_der_elem gn;
    while (!cm_der_done(&names))
        if (read_general_name(&names, &gn) != CM_OK) return DECLINE;
    return CM_OK;
}

static int push_text(struct cm_strlist *l, const struct cm_der_elem *e)
{
    if (!cm_x509_usable_text(e->body, e->len)) return CM_OK; /* skipped, as x509.c does */
    return cm_strlist_push_n(l, (const char *)e->body, e->len);
}

static int push_ip(struct cm_strlist *l, const struct cm_der_elem *e)
{
    char text[INET6_ADDRSTRLEN];
    int af;
    if (e->len == 4) af = AF_INET;
    else if (e->len == 16) af = AF_INET6;
    else return CM_OK; /* an address/mask pair: not a name */
    if (!inet_ntop(af, e->body, text, sizeof text)) return CM_OK;
    return cm_strlist_push_n(l, text, strlen(text));
}

/* subjectAltName: DNS names, then IP addresses. */
static int san_names(const struct cm_der_elem *value, struct cm_strlist *names)
{
    struct cm_der all, d;
    struct cm_der_elem gn;
    if (ext_sequence(value, &all) != CM_OK || check_general_names(all) != CM_OK) return DECLINE;
    for (d = all; !cm_der_done(&d);) {
        if (cm_der_next(&d, &gn) != CM_OK) return DECLINE;
        if (gn.tag == GN_DNS && push_text(names, &gn) != CM_OK) return CM_ERR;
    }
    for (d = all; !cm_der_done(&d);) {
        if (cm_der_next(&d, &gn) != CM_OK) return DECLINE;
        if (gn.tag == GN_IP && push_ip(names, &gn) != CM_OK) return CM_ERR;
    }
    return CM_OK;
}

/* authorityInfoAccess: the URIs of its id-ad-ocsp entries. */
static int aia_ocsp(const struct cm_der_elem *value, struct cm_strlist *urls)
{
    struct cm_der all, ad;
    struct cm_der_elem e, method, gn;
    if (ext_sequence(value, &all) != CM_OK) return DECLINE;
    while (!cm_der_done(&all)) {
        if (cm_der_expect(&all, CM_DER_SEQUENCE, &e) != CM_OK) return DECLINE;
        ad = cm_der_inside(&e);
        if (read_oid(&ad, &method) != CM_OK || read_general_name(&ad, &gn) != CM_OK ||
            !cm_der_done(&ad))
            return DECLINE;
        if (oid_is(&method, OID_AD_OCSP, sizeof OID_AD_OCSP) && gn.tag == GN_URI &&
            push_text(urls, &gn) != CM_OK)
            return CM_ERR;
    }
    return CM_OK;
}

/* cRLDistributionPoints: the URIs of each point's fullName.
 * DistributionPoint ::= SEQUENCE { [0] EXPLICIT DistributionPointName
 * OPTIONAL, [1] IMPLICIT ReasonFlags OPTIONAL, [2] IMPLICIT GeneralNames
 * OPTIONAL }; DistributionPointName ::= CHOICE { fullName [0] IMPLICIT
 * GeneralNames, nameRelativeToCRLIssuer [1] (declined) }. */
static int crl_urls(const struct cm_der_elem *value, struct cm_strlist *urls)
{
    struct cm_der all, dp, name, full;
    struct cm_der_elem e, f, gn;
    int present;
    if (ext_sequence(value, &all) != CM_OK) return DECLINE;
    while (!cm_der_done(&all)) {
        if (cm_der_expect(&all, CM_DER_SEQUENCE, &e) != CM_OK) return DECLINE;
        dp = cm_der_inside(&e);
        if (cm_der_optional(&dp, CM_DER_CONTEXT_CONS(0), &e, &present) != CM_OK) return DECLINE;
        if (present) {
            name = cm_der_inside(&e);
            if (cm_der_expect(&name, CM_DER_CONTEXT_CONS(0), &f) != CM_OK ||
                !cm_der_done(&name))
                return DECLINE;
            full = cm_der_inside(&f);
            if (check_general_names(full) != CM_OK) return DECLINE;
            while (!cm_der_done(&full)) {
                if (cm_der_next(&full, &gn) != CM_OK) return DECLINE;
                if (gn.tag == GN_URI && push_text(urls, &gn) != CM_OK) return CM_ERR;
            }
        }
        if (cm_der_optional(&dp, CM_DER_CONTEXT(1), &e, &present) != CM_OK ||
            (present && cm_der_bit_string_ok(e.body, e.len) != CM_OK))
            return DECLINE;
        if (cm_der_optional(&dp, CM_DER_CONTEXT_CONS(2), &e, &present) != CM_OK ||
            (present && check_general_names(cm_der_inside(&e)) != CM_OK))
            return DECLINE;
        if (!cm_der_done(&dp)) return DECLINE;
    }
    return CM_OK;
}

/* basicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE,
 * pathLenConstraint INTEGER OPTIONAL }. */
static int basic_is_ca(const struct cm_der_elem *value, int *is_ca)
{
    struct cm_der in;
    struct cm_der_elem e;
    int present;
    if (ext_sequence(value, &in) != CM_OK || read_true_flag(&in, is_ca) != CM_OK) return DECLINE;
    if (cm_der_optional(&in, CM_DER_INTEGER, &e, &present) != CM_OK ||
        (present && cm_der_integer_ok(e.body, e.len) != CM_OK))
        return DECLINE;
    return cm_der_done(&in) ? CM_OK : DECLINE;
}

/* Features ::= SEQUENCE OF INTEGER (RFC 7633); *must_staple when one is
 * status_request (5).  Any other shape is declined (OpenSSL then decides:
 * it reads a malformed extension as absent). */
static int tls_feature_must_staple(const struct cm_der_elem *value, int *must_staple)
{
    struct cm_der in;
    struct cm_der_elem e;
    if (ext_sequence(value, &in) != CM_OK) return DECLINE;
    while (!cm_der_done(&in)) {
        if (read_integer(&in, &e) != CM_OK) return DECLINE;
        if (e.len == 1 && e.body[0] == 5) *must_staple = 1;
    }
    return CM_OK;
}

/* ------------------------------------------------------------------------ */
/* the leaf                                                                 */

/* An INTEGER's value as cm_ssl_integer_hex prints OpenSSL's ASN1_INTEGER:
 * lower-case hex of the magnitude without leading zero bytes, "-" first when
 * negative.  The contents are minimal two's complement (checked). */
static char *serial_hex(const unsigned char *b, size_t n)
{
    unsigned char small[32], *mag = small;
    char *s = NULL;
    int neg = (b[0] & 0x80) != 0;
    size_t i;
    unsigned carry = 1;

    if (neg) {
        if (n > sizeof small && !(mag = malloc(n))) return NULL;
        for (i = n; i-- > 0;) { /* magnitude: invert and add one */
            unsigned v = (unsigned)(unsigned char)~b[i] + carry;
            mag[i] = (unsigned char)v;
            carry = v >> 8;
        }
        b = mag;
    }
    while (n > 1 && b[0] == 0) {
        b++;
        n--;
    }
    if ((s = malloc(n * 2 + 2))) {
        if (neg) s[0] = '-';
        cm_hex_encode(b, n, s + neg);
    }
    if (mag != small) free(mag);
    mag = NULL;
    return s;
}

int cm_x509_der_leaf(const unsigned char *der, size_t len, size_t *used,
                     struct cm_cert_facts *out)
{
    struct ava issuer[MAX_AVAS], subject[MAX_AVAS];
    const struct ava *cn = NULL;
    struct cm_cert_facts f;
    struct tbs t;
    struct exts x;
    size_t n_issuer = 0, n_subject = 0, i, cert_len = 0;
    int rc;

    memset(&f, 0, sizeof f);
    memset(&x, 0, sizeof x);
    if ((rc = read_certificate(der, len, &cert_len, &t)) != CM_OK) return rc;
    if ((rc = read_name(&t.issuer, issuer, &n_issuer)) != CM_OK ||
        (rc = read_name(&t.subject, subject, &n_subject)) != CM_OK ||
        (t.has_exts && (rc = read_extensions(&t.exts, &x)) != CM_OK))
        return rc;

    f.not_before = t.not_before;
    f.not_after = t.not_after;
    rc = CM_ERR;
    if (!(f.serial_hex = serial_hex(t.serial.body, t.serial.len)) ||
        !(f.issuer = name_text(issuer, n_issuer)) || !(f.subject = name_text(subject, n_subject)))
        goto out;
    if ((x.has_san && (rc = san_names(&x.san, &f.names)) != CM_OK) ||
        (x.has_aia && (rc = aia_ocsp(&x.aia, &f.ocsp_urls)) != CM_OK) ||
        (x.has_crl_dp && (rc = crl_urls(&x.crl_dp, &f.crl_urls)) != CM_OK) ||
        (x.has_basic && (rc = basic_is_ca(&x.basic, &f.is_ca)) != CM_OK) ||
        (x.has_tls_feature &&
         (rc = tls_feature_must_staple(&x.tls_feature, &f.must_staple)) != CM_OK))
        goto out;
    if (f.names.count == 0) { /* no usable SAN: the subject's last CN */
        for (i = 0; i < n_subject; i++)
            if (subject[i].attr == ATTR_CN) cn = &subject[i];
        if (cn && cm_x509_usable_text(cn->value, cn->len) &&
            cm_strlist_push_n(&f.names, (const char *)cn->value, cn->len) != CM_OK) {
            rc = CM_ERR;
            goto out;
        }
    }
    *used = cert_len;
    /* only the fields named in x509_der.h: der and the chain are the caller's */
    out->not_before = f.not_before;
    out->not_after = f.not_after;
    out->serial_hex = f.serial_hex;
    out->issuer = f.issuer;
    out->subject = f.subject;
    out->names = f.names;
    out->ocsp_urls = f.ocsp_urls;
    out->crl_urls = f.crl_urls;
    out->is_ca = f.is_ca;
    out->must_staple = f.must_staple;
    memset(&f, 0, sizeof f);
    rc = CM_OK;
out:
    cm_cert_facts_free(&f);
    return rc;
}
