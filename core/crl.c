/* crl.c - checking CRLs on OpenSSL (building them: localca.c). */
#include "crl.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "encoding.h"
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

/* Decode data into an X509_CRL the caller frees; refuses trailing bytes and
 * delta CRLs (which list only changes: read as complete, they would hide
 * revocations). */
static X509_CRL *crl_decode(const char *data, size_t len, struct cm_result *res)
{
    const unsigned char *der = NULL, *p;
    unsigned char *owned = NULL;
    size_t der_len = 0;
    X509_CRL *crl = NULL;

    if (crl_der(data, len, &der, &der_len, &owned, res) != CM_OK) goto out;
    if (der_len > (size_t)LONG_MAX) {
        cm_fail(res, "toobig", "CRL too large");
        goto out;
    }
    p = der;
    if (!(crl = d2i_X509_CRL(NULL, &p, (long)der_len))) {
        cm_fail_ssl(res, "parse", "not a DER CRL");
        goto out;
    }
    if (p != der + der_len) {
        cm_fail(res, "parse", "CRL has %zu bytes of trailing data", (size_t)(der + der_len - p));
        X509_CRL_free(crl); crl = NULL;
        goto out;
    }
    if (X509_CRL_get_ext_by_NID(crl, NID_delta_crl, -1) >= 0) {
        cm_fail(res, "parse", "a delta CRL, not a complete one");
        X509_CRL_free(crl); crl = NULL;
        goto out;
    }
out:
    free(owned); owned = NULL;
    return crl;
}

/* thisUpdate, nextUpdate, count and cRLNumber of crl into *info. */
static int crl_info(X509_CRL *crl, struct cm_crl_info *info, struct cm_result *res)
{
    const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
    ASN1_INTEGER *number = NULL;
    STACK_OF(X509_REVOKED) *revoked = X509_CRL_get_REVOKED(crl);
    char *hex = NULL;
    int crit = -1, ret = CM_ERR;

    memset(info, 0, sizeof *info);
    if (cm_ssl_time_unix(X509_CRL_get0_lastUpdate(crl), &info->this_update) != CM_OK ||
        (next && cm_ssl_time_unix(next, &info->next_update) != CM_OK)) {
        ret = cm_fail(res, "parse", "CRL has a malformed thisUpdate or nextUpdate");
        goto out;
    }
    info->count = revoked ? (size_t)sk_X509_REVOKED_num(revoked) : 0;
    number = X509_CRL_get_ext_d2i(crl, NID_crl_number, &crit, NULL);
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

/* Check the CRL was issued and signed by issuer. */
static int crl_verify(X509_CRL *crl, X509 *issuer, struct cm_result *res)
{
    EVP_PKEY *key;

    if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(issuer)) != 0)
        return cm_fail(res, "mismatch", "CRL issuer name is not the issuer certificate's subject");
    if ((X509_get_extension_flags(issuer) & EXFLAG_KUSAGE) &&
        !(X509_get_key_usage(issuer) & KU_CRL_SIGN))
        return cm_fail(res, "verify", "the issuer certificate may not sign CRLs (no cRLSign)");
    if (!(key = X509_get0_pubkey(issuer)))
        return cm_fail_ssl(res, "parse", "issuer certificate has no usable public key");
    if (X509_CRL_verify(crl, key) != 1)
        return cm_fail_ssl(res, "verify", "CRL is not signed by the issuer certificate's key");
    return CM_OK;
}

int cm_crl_parse(const char *data, size_t len, const char *issuer_data, size_t issuer_len,
                 int64_t now, int64_t skew, struct cm_crl **out, struct cm_result *res)
{
    X509_CRL *crl = NULL;
    X509 *issuer = NULL;
    STACK_OF(X509_REVOKED) *revoked;
    struct cm_crl *c = NULL;
    size_t i;
    int ret = CM_ERR;

    *out = NULL;
    if (!(crl = crl_decode(data, len, res))) goto out;
    if (!(issuer = cm_ssl_load_issuer(issuer_data, issuer_len, "issuer certificate", res)))
        goto out;
    if (crl_verify(crl, issuer, res) != CM_OK) goto out;
    if (!(c = calloc(1, sizeof *c))) {
        cm_fail(res, "ENOMEM", "out of memory for a CRL");
        goto out;
    }
    if (crl_info(crl, &c->info, res) != CM_OK) goto out;
    if (now > 0) {
        if (skew < 0) skew = 0;
        if (c->info.this_update > now + skew) {
            cm_fail(res, "notyet", "CRL thisUpdate %lld is %lld s after now (%lld), more than the "
                    "%lld s skew allowed", (long long)c->info.this_update,
                    (long long)(c->info.this_update - now), (long long)now, (long long)skew);
            goto out;
        }
        if (c->info.next_update && c->info.next_update <= now) {
            cm_fail(res, "stale", "CRL is stale: nextUpdate %lld is %lld s before now",
                    (long long)c->info.next_update, (long long)(now - c->info.next_update));
            goto out;
        }
    }
    revoked = X509_CRL_get_REVOKED(crl);
    if (c->info.count) {
        if (!(c->entries = calloc(c->info.count, sizeof *c->entries))) {
            cm_fail(res, "ENOMEM", "out of memory for %zu CRL entries", c->info.count);
            goto out;
        }
        for (i = 0; i < c->info.count; i++)
            if (read_entry(sk_X509_REVOKED_value(revoked, (int)i), i, &c->entries[i], res) !=
                CM_OK)
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
    X509_CRL_free(crl); crl = NULL;
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
    X509_CRL *crl = NULL;
    int ret = CM_ERR;

    memset(out, 0, sizeof *out);
    if (!(crl = crl_decode(data, len, res))) goto out;
    ret = crl_info(crl, out, res);
out:
    ERR_clear_error();
    X509_CRL_free(crl); crl = NULL;
    return ret;
}
