/* crl.c - checking CRLs on OpenSSL (building them: localca.c). */
#include "crl.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1t.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "der.h"
#include "encoding.h"
#include "ocsp.h"
#include "x509_ssl.h"

/* One entry, fixed size so a CRL is one array: the serial's magnitude
 * big-endian without leading zeros (len octets; zero has len 0), sorted by
 * (neg, len, bytes), which is an order on the values' encodings that the
 * lookup's key shares. */
struct crl_entry {
    int64_t revoked_at;
    unsigned char serial[CM_CRL_SERIAL_MAX];
    unsigned char len;
    unsigned char neg;
    signed char reason;
};

struct cm_crl {
    struct cm_crl_info info;
    struct crl_entry *entries;
    size_t count;
};

/* A CRL decoded lean.  OpenSSL's X509_CRL decodes every entry into a
 * structure of its own (some 300 bytes each: 400 MB for a 32 MiB CRL) that we
 * would only copy out of.  Here the outer CertificateList keeps
 * tbsCertList undecoded (its bytes are what the signature covers), and the
 * TBSCertList keeps revokedCertificates undecoded; the entries are then read
 * with the strict DER reader (der.h) straight into the compact array.  An
 * entry that reader declines (BER, a negative serial, an odd extension) sends
 * the whole list to OpenSSL's decoder, which accepts or refuses as before.
 * The ASN.1 template macros need typedef names, hence the typedefs. */
typedef struct {
    ASN1_STRING *tbs; /* the whole TBSCertList encoding */
    X509_ALGOR *sig_alg;
    ASN1_BIT_STRING *sig;
} CM_CRL_LIST;

ASN1_SEQUENCE(CM_CRL_LIST) = {
    ASN1_SIMPLE(CM_CRL_LIST, tbs, ASN1_SEQUENCE),
    ASN1_SIMPLE(CM_CRL_LIST, sig_alg, X509_ALGOR),
    ASN1_SIMPLE(CM_CRL_LIST, sig, ASN1_BIT_STRING),
} static_ASN1_SEQUENCE_END(CM_CRL_LIST)

typedef struct {
    ASN1_INTEGER *version;
    X509_ALGOR *signature;
    X509_NAME *issuer;
    ASN1_TIME *this_update;
    ASN1_TIME *next_update;
    ASN1_STRING *revoked; /* the whole revokedCertificates encoding, or NULL */
    STACK_OF(X509_EXTENSION) *extensions;
} CM_CRL_TBS;

ASN1_SEQUENCE(CM_CRL_TBS) = {
    ASN1_OPT(CM_CRL_TBS, version, ASN1_INTEGER),
    ASN1_SIMPLE(CM_CRL_TBS, signature, X509_ALGOR),
    ASN1_SIMPLE(CM_CRL_TBS, issuer, X509_NAME),
    ASN1_SIMPLE(CM_CRL_TBS, this_update, ASN1_TIME),
    ASN1_OPT(CM_CRL_TBS, next_update, ASN1_TIME),
    ASN1_OPT(CM_CRL_TBS, revoked, ASN1_SEQUENCE),
    ASN1_EXP_SEQUENCE_OF_OPT(CM_CRL_TBS, extensions, X509_EXTENSION, 0),
} static_ASN1_SEQUENCE_END(CM_CRL_TBS)

/* A decoded CRL: the two lean layers and the DER they came from. */
struct lean_crl {
    CM_CRL_LIST *list;
    CM_CRL_TBS *tbs;
    const unsigned char *der; /* borrowed from the input, or owned */
    size_t der_len;
    unsigned char *owned;
};

static void lean_free(struct lean_crl *l)
{
    ASN1_item_free((ASN1_VALUE *)l->tbs, ASN1_ITEM_rptr(CM_CRL_TBS));
    l->tbs = NULL;
    ASN1_item_free((ASN1_VALUE *)l->list, ASN1_ITEM_rptr(CM_CRL_LIST));
    l->list = NULL;
    free(l->owned); l->owned = NULL;
}

#define PEM_CRL_BEGIN "-----BEGIN X509 CRL-----"
#define PEM_CRL_END "-----END X509 CRL-----"

/* The DER of data: data itself when it starts as DER does, else the body of
 * its first "X509 CRL" PEM block, decoded into *owned (the caller frees). */
static int crl_der(const char *data, size_t len, const unsigned char **der, size_t *der_len,
                   unsigned char **owned, struct cm_result *res)
{
    const char *begin, *body, *end;
    size_t cap;

    *owned = NULL;
    if (!data || len == 0) return cm_fail(res, "parse", "empty CRL");
    if (len > CM_CRL_MAX_INPUT)
        return cm_fail(res, "toobig", "CRL is %zu bytes, more than the %u allowed", len,
                       CM_CRL_MAX_INPUT);
    if ((unsigned char)data[0] == 0x30) {
        *der = (const unsigned char *)data;
        *der_len = len;
        return CM_OK;
    }
    if (!(begin = memmem(data, len, PEM_CRL_BEGIN, sizeof PEM_CRL_BEGIN - 1)))
        return cm_fail(res, "parse", "not a CRL: neither DER nor an X509 CRL PEM block");
    body = begin + sizeof PEM_CRL_BEGIN - 1;
    if (!(end = memmem(body, (size_t)(data + len - body), PEM_CRL_END, sizeof PEM_CRL_END - 1)))
        return cm_fail(res, "parse", "truncated PEM: missing END line of the X509 CRL");
    cap = cm_base64_decoded_max((size_t)(end - body));
    if (!(*owned = malloc(cap ? cap : 1))) return cm_fail(res, "ENOMEM", "out of memory for a CRL");
    if (cm_base64_decode_into(body, (size_t)(end - body), CM_BASE64_PAD | CM_BASE64_SPACE,
                              *owned, cap, der_len, res) != CM_OK) {
        free(*owned); *owned = NULL;
        return cm_fail(res, "parse", "X509 CRL PEM body is not base64");
    }
    *der = *owned;
    return CM_OK;
}

/* Decode data into *l (freed with lean_free, also on failure): one
 * CertificateList, no trailing bytes, a v1 or v2 TBSCertList, not a delta
 * CRL (which lists only changes: read as complete, it would hide
 * revocations). */
static int crl_decode(const char *data, size_t len, struct lean_crl *l, struct cm_result *res)
{
    const unsigned char *p;
    const ASN1_STRING *tbs;
    long v;

    memset(l, 0, sizeof *l);
    if (crl_der(data, len, &l->der, &l->der_len, &l->owned, res) != CM_OK) return CM_ERR;
    if (l->der_len > (size_t)LONG_MAX) return cm_fail(res, "toobig", "CRL too large");
    p = l->der;
    if (!(l->list = (CM_CRL_LIST *)ASN1_item_d2i(NULL, &p, (long)l->der_len,
                                                 ASN1_ITEM_rptr(CM_CRL_LIST))))
        return cm_fail_ssl(res, "parse", "not a DER CRL");
    if (p != l->der + l->der_len)
        return cm_fail(res, "parse", "CRL has %zu bytes of trailing data",
                       (size_t)(l->der + l->der_len - p));
    tbs = l->list->tbs;
    p = ASN1_STRING_get0_data(tbs);
    if (!(l->tbs = (CM_CRL_TBS *)ASN1_item_d2i(NULL, &p, ASN1_STRING_length(tbs),
                                               ASN1_ITEM_rptr(CM_CRL_TBS))) ||
        p != ASN1_STRING_get0_data(tbs) + ASN1_STRING_length(tbs))
        return cm_fail_ssl(res, "parse", "CRL has a malformed tbsCertList");
    if (l->tbs->version && ((v = ASN1_INTEGER_get(l->tbs->version)) != 1))
        return cm_fail(res, "parse", "CRL version %ld is not v2", v + 1);
    if (X509v3_get_ext_by_NID(l->tbs->extensions, NID_delta_crl, -1) >= 0)
        return cm_fail(res, "parse", "a delta CRL, not a complete one");
    return CM_OK;
}

/* ---- the entries, read with the DER reader ------------------------------ */

#define DECLINED 1 /* not for the DER walk: OpenSSL's decoder decides */

static const unsigned char OID_CRL_REASON[] = {0x55, 0x1d, 0x15};

/* The revokedCertificates SEQUENCE OF, inside its own encoding. */
static int entries_reader(const CM_CRL_TBS *tbs, struct cm_der *list)
{
    struct cm_der outer;
    struct cm_der_elem seq;
    if (!tbs->revoked) {
        *list = cm_der_init(NULL, 0);
        return CM_OK;
    }
    outer = cm_der_init(ASN1_STRING_get0_data(tbs->revoked),
                        (size_t)ASN1_STRING_length(tbs->revoked));
    if (cm_der_expect(&outer, CM_DER_SEQUENCE, &seq) != CM_OK || !cm_der_done(&outer))
        return DECLINED;
    *list = cm_der_inside(&seq);
    return CM_OK;
}

/* One entry ::= SEQUENCE { userCertificate INTEGER, revocationDate Time,
 * crlEntryExtensions Extensions OPTIONAL } into *e (when e is not NULL):
 * CM_OK or DECLINED (anything not plainly DER, a negative serial, a serial
 * over CM_CRL_SERIAL_MAX octets, a repeated or odd reasonCode). */
static int walk_entry(const struct cm_der_elem *entry, struct crl_entry *e)
{
    struct cm_der in = cm_der_inside(entry), exts, ext;
    struct cm_der_elem serial, when, all, one, oid, crit, value;
    const unsigned char *b;
    size_t n;
    int present, have_reason = 0;
    int64_t t;

    if (cm_der_expect(&in, CM_DER_INTEGER, &serial) != CM_OK ||
        cm_der_integer_ok(serial.body, serial.len) != CM_OK || (serial.body[0] & 0x80))
        return DECLINED;
    if (cm_der_next(&in, &when) != CM_OK || cm_der_time(&when, &t) != CM_OK) return DECLINED;
    if (cm_der_optional(&in, CM_DER_SEQUENCE, &all, &present) != CM_OK || !cm_der_done(&in))
        return DECLINED;
    b = serial.body;
    n = serial.len;
    while (n > 0 && b[0] == 0) { b++; n--; }
    if (n > CM_CRL_SERIAL_MAX) return DECLINED;
    if (e) {
        memset(e, 0, sizeof *e);
        memcpy(e->serial, b, n);
        e->len = (unsigned char)n;
        e->revoked_at = t;
        e->reason = -1;
    }
    exts = present ? cm_der_inside(&all) : cm_der_init(NULL, 0);
    if (present && cm_der_done(&exts)) return DECLINED; /* SEQUENCE SIZE (1..MAX) */
    while (!cm_der_done(&exts)) {
        if (cm_der_expect(&exts, CM_DER_SEQUENCE, &one) != CM_OK) return DECLINED;
        ext = cm_der_inside(&one);
        if (cm_der_expect(&ext, CM_DER_OID, &oid) != CM_OK ||
            cm_der_oid_ok(oid.body, oid.len) != CM_OK ||
            cm_der_optional(&ext, CM_DER_BOOLEAN, &crit, &present) != CM_OK ||
            (present && (crit.len != 1 || crit.body[0] != 0xff)) || /* DER: TRUE, or absent */
            cm_der_expect(&ext, CM_DER_OCTET_STRING, &value) != CM_OK || !cm_der_done(&ext))
            return DECLINED;
        if (oid.len == sizeof OID_CRL_REASON && memcmp(oid.body, OID_CRL_REASON, oid.len) == 0) {
            /* CRLReason ::= ENUMERATED, here 0-10 in one octet */
            if (have_reason++ || value.len != 3 || value.body[0] != 0x0a || value.body[1] != 1 ||
                value.body[2] > 10)
                return DECLINED;
            if (e) e->reason = value.body[2] == 7 ? -1 : (signed char)value.body[2];
        }
    }
    return CM_OK;
}

/* The number of entries, or -1 when the DER walk declines any of them. */
static long count_entries(const CM_CRL_TBS *tbs)
{
    struct cm_der list;
    struct cm_der_elem entry;
    long n = 0;
    if (entries_reader(tbs, &list) != CM_OK) return -1;
    while (!cm_der_done(&list)) {
        if (cm_der_expect(&list, CM_DER_SEQUENCE, &entry) != CM_OK ||
            walk_entry(&entry, NULL) != CM_OK)
            return -1;
        n++;
    }
    return n;
}

/* The count entries into entries[0..count): CM_OK, or DECLINED. */
static int walk_entries(const CM_CRL_TBS *tbs, struct crl_entry *entries, size_t count)
{
    struct cm_der list;
    struct cm_der_elem entry;
    size_t i;
    if (entries_reader(tbs, &list) != CM_OK) return DECLINED;
    for (i = 0; i < count; i++)
        if (cm_der_expect(&list, CM_DER_SEQUENCE, &entry) != CM_OK ||
            walk_entry(&entry, &entries[i]) != CM_OK)
            return DECLINED;
    return cm_der_done(&list) ? CM_OK : DECLINED;
}

/* thisUpdate, nextUpdate, count and cRLNumber of the CRL into *info; count
 * from the DER walk, or from OpenSSL's decoder of the whole CRL (l->der)
 * where the walk declines. */
static int crl_info(const struct lean_crl *l, struct cm_crl_info *info, struct cm_result *res)
{
    ASN1_INTEGER *number = NULL;
    X509_CRL *crl = NULL;
    const unsigned char *p;
    char *hex = NULL;
    long n;
    int crit = -1, ret = CM_ERR;

    memset(info, 0, sizeof *info);
    if (cm_ssl_time_unix(l->tbs->this_update, &info->this_update) != CM_OK ||
        (l->tbs->next_update &&
         cm_ssl_time_unix(l->tbs->next_update, &info->next_update) != CM_OK)) {
        ret = cm_fail(res, "parse", "CRL has a malformed thisUpdate or nextUpdate");
        goto out;
    }
    if ((n = count_entries(l->tbs)) < 0) {
        p = l->der;
        if (!(crl = d2i_X509_CRL(NULL, &p, (long)l->der_len))) {
            ret = cm_fail_ssl(res, "parse", "CRL has a malformed revoked certificate list");
            goto out;
        }
        n = X509_CRL_get_REVOKED(crl) ? sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)) : 0;
    }
    info->count = (size_t)n;
    number = X509V3_get_d2i(l->tbs->extensions, NID_crl_number, &crit, NULL);
    if (!number && crit != -1) {
        ret = cm_fail(res, "parse", "CRL has a malformed or repeated cRLNumber");
        goto out;
    }
    if (number) {
        if (!(hex = cm_ssl_integer_hex(number))) {
            ret = cm_fail(res, "ENOMEM", "out of memory reading the cRLNumber");
            goto out;
        }
        if (hex[0] == '-' || strlen(hex) >= sizeof info->number_hex) {
            ret = cm_fail(res, "parse", "CRL cRLNumber is negative or longer than %d octets",
                          CM_CRL_SERIAL_MAX);
            goto out;
        }
        memcpy(info->number_hex, hex, strlen(hex) + 1);
    }
    ret = CM_OK;
out:
    free(hex); hex = NULL;
    ASN1_INTEGER_free(number); number = NULL;
    X509_CRL_free(crl); crl = NULL;
    if (ret != CM_OK) memset(info, 0, sizeof *info);
    return ret;
}

static int entry_cmp(const struct crl_entry *a, const struct crl_entry *b)
{
    if (a->neg != b->neg) return a->neg ? -1 : 1;
    if (a->len != b->len) return (a->len < b->len) == !a->neg ? -1 : 1;
    return a->neg ? -memcmp(a->serial, b->serial, a->len) : memcmp(a->serial, b->serial, a->len);
}

static int entry_qcmp(const void *a, const void *b)
{
    return entry_cmp(a, b);
}

/* The entry for revoked entry i of crl into *e. */
static int read_entry(const X509_REVOKED *rev, size_t i, struct crl_entry *e,
                      struct cm_result *res)
{
    const ASN1_INTEGER *serial = X509_REVOKED_get0_serialNumber(rev);
    const unsigned char *p;
    ASN1_ENUMERATED *reason;
    int n, crit = -1;
    long r;

    memset(e, 0, sizeof *e);
    e->reason = -1;
    if (!serial || (n = ASN1_STRING_length(serial)) < 0)
        return cm_fail(res, "parse", "CRL entry %zu has no serial", i + 1);
    p = ASN1_STRING_get0_data(serial);
    while (n > 0 && p[0] == 0) { p++; n--; }
    if (n > CM_CRL_SERIAL_MAX)
        return cm_fail(res, "parse", "CRL entry %zu has a serial of %d octets (at most %d)", i + 1,
                       n, CM_CRL_SERIAL_MAX);
    memcpy(e->serial, p, (size_t)n);
    e->len = (unsigned char)n;
    e->neg = ASN1_STRING_type(serial) == V_ASN1_NEG_INTEGER && n > 0;
    if (cm_ssl_time_unix(X509_REVOKED_get0_revocationDate(rev), &e->revoked_at) != CM_OK)
        return cm_fail(res, "parse", "CRL entry %zu has a malformed revocationDate", i + 1);
    reason = X509_REVOKED_get_ext_d2i(rev, NID_crl_reason, &crit, NULL);
    if (!reason && crit != -1)
        return cm_fail(res, "parse", "CRL entry %zu has a malformed or repeated reasonCode",
                       i + 1);
    if (reason) {
        r = ASN1_ENUMERATED_get(reason);
        ASN1_ENUMERATED_free(reason); reason = NULL;
        /* anything outside RFC 5280's 0-10 (7 unused) is no CRLReason */
        e->reason = r >= 0 && r <= 10 && r != 7 ? (signed char)r : -1;
    }
    return CM_OK;
}

/* Check the CRL was issued and signed by issuer: the signature over the
 * tbsCertList bytes as they came (an undecoded ASN1_SEQUENCE re-encodes as
 * exactly those bytes). */
static int crl_verify(const struct lean_crl *l, X509 *issuer, struct cm_result *res)
{
    EVP_PKEY *key;

    if (X509_NAME_cmp(l->tbs->issuer, X509_get_subject_name(issuer)) != 0)
        return cm_fail(res, "mismatch", "CRL issuer name is not the issuer certificate's subject");
    if ((X509_get_extension_flags(issuer) & EXFLAG_KUSAGE) &&
        !(X509_get_key_usage(issuer) & KU_CRL_SIGN))
        return cm_fail(res, "verify", "the issuer certificate may not sign CRLs (no cRLSign)");
    if (!(key = X509_get0_pubkey(issuer)))
        return cm_fail_ssl(res, "parse", "issuer certificate has no usable public key");
    if (ASN1_item_verify(ASN1_ITEM_rptr(ASN1_SEQUENCE), l->list->sig_alg, l->list->sig,
                         l->list->tbs, key) != 1)
        return cm_fail_ssl(res, "verify", "CRL is not signed by the issuer certificate's key");
    return CM_OK;
}

/* The entries of a CRL the DER walk declined, through OpenSSL's decoder. */
static int decode_entries(const struct lean_crl *l, struct cm_crl *c, struct cm_result *res)
{
    const unsigned char *p = l->der;
    X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)l->der_len);
    STACK_OF(X509_REVOKED) *revoked;
    size_t i;
    int ret = CM_ERR;

    if (!crl) return cm_fail_ssl(res, "parse", "CRL has a malformed revoked certificate list");
    revoked = X509_CRL_get_REVOKED(crl);
    if ((revoked ? (size_t)sk_X509_REVOKED_num(revoked) : 0) != c->info.count) {
        ret = cm_fail(res, "parse", "CRL entries do not decode consistently");
        goto out;
    }
    for (i = 0; i < c->info.count; i++)
        if (read_entry(sk_X509_REVOKED_value(revoked, (int)i), i, &c->entries[i], res) != CM_OK)
            goto out;
    ret = CM_OK;
out:
    X509_CRL_free(crl); crl = NULL;
    return ret;
}

int cm_crl_parse(const char *data, size_t len, const char *issuer_data, size_t issuer_len,
                 int64_t now, int64_t skew, struct cm_crl **out, struct cm_result *res)
{
    struct lean_crl l;
    X509 *issuer = NULL;
    struct cm_crl *c = NULL;
    int ret = CM_ERR;

    *out = NULL;
    if (crl_decode(data, len, &l, res) != CM_OK) goto out;
    if (!(issuer = cm_ssl_load_issuer(issuer_data, issuer_len, "issuer certificate", res)))
        goto out;
    if (crl_verify(&l, issuer, res) != CM_OK) goto out;
    if (!(c = calloc(1, sizeof *c))) {
        cm_fail(res, "ENOMEM", "out of memory for a CRL");
        goto out;
    }
    if (crl_info(&l, &c->info, res) != CM_OK) goto out;
    if (now > 0 && cm_revocation_times_check("CRL", c->info.this_update, c->info.next_update, now,
                                             skew, res) != CM_OK)
        goto out;
    if (c->info.count) {
        if (!(c->entries = calloc(c->info.count, sizeof *c->entries))) {
            cm_fail(res, "ENOMEM", "out of memory for %zu CRL entries", c->info.count);
            goto out;
        }
        if (walk_entries(l.tbs, c->entries, c->info.count) != CM_OK &&
            decode_entries(&l, c, res) != CM_OK)
            goto out;
        c->count = c->info.count;
        qsort(c->entries, c->count, sizeof *c->entries, entry_qcmp);
    }
    *out = c;
    c = NULL;
    ret = CM_OK;
out:
    ERR_clear_error();
    cm_crl_free(c); c = NULL;
    X509_free(issuer); issuer = NULL;
    lean_free(&l);
    return ret;
}

void cm_crl_free(struct cm_crl *crl)
{
    if (!crl) return;
    free(crl->entries); crl->entries = NULL;
    free(crl);
}

void cm_crl_get_info(const struct cm_crl *crl, struct cm_crl_info *out)
{
    *out = crl->info;
}

static int hex_nibble(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int cm_crl_lookup(const struct cm_crl *crl, const char *hex, size_t len,
                  struct cm_crl_revoked *out, struct cm_result *res)
{
    struct crl_entry key;
    size_t lo = 0, hi = crl->count, i, digits;
    int neg = 0;

    memset(&key, 0, sizeof key);
    memset(out, 0, sizeof *out);
    if (len > 0 && hex[0] == '-') { neg = 1; hex++; len--; }
    if (len == 0) return cm_fail(res, "invalid", "serial is empty");
    for (i = 0; i < len; i++)
        if (hex_nibble(hex[i]) < 0)
            return cm_fail(res, "invalid", "serial is not hex (offset %zu)", i + (size_t)neg);
    while (len > 0 && hex[0] == '0') { hex++; len--; }
    if (len > 2 * CM_CRL_SERIAL_MAX) return 0; /* longer than any serial a CRL we parsed holds */
    digits = len;
    key.len = (unsigned char)((digits + 1) / 2);
    for (i = 0; i < digits; i++) {
        /* right-aligned: an odd count puts the first digit in a low nibble */
        size_t pos = i + (digits & 1);
        key.serial[pos / 2] |= (unsigned char)(hex_nibble(hex[i]) << (pos & 1 ? 0 : 4));
    }
    key.neg = (unsigned char)(neg && key.len > 0);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = entry_cmp(&crl->entries[mid], &key);
        if (c == 0) {
            out->revoked_at = crl->entries[mid].revoked_at;
            out->reason = crl->entries[mid].reason;
            return 1;
        }
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

int cm_crl_peek(const char *data, size_t len, struct cm_crl_info *out, struct cm_result *res)
{
    struct lean_crl l;
    int ret = CM_ERR;

    memset(out, 0, sizeof *out);
    if (crl_decode(data, len, &l, res) == CM_OK) ret = crl_info(&l, out, res);
    ERR_clear_error();
    lean_free(&l);
    return ret;
}
