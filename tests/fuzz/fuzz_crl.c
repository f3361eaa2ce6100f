/* fuzz_crl.c - CRLs are fetched over plain HTTP and loaded from storage:
 * untrusted bytes, up to 32 MiB.  Each input goes through cm_crl_peek and
 * through cm_crl_parse against the CA of tests/fixtures/ocsp/ (so the
 * committed corpus, made from those fixtures, verifies and reaches the
 * entries), at time 0 (no time checks) and at a fixed time.
 *
 * Properties (crl.h): a failure has a code, leaves *out NULL and the peeked
 * info zeroed; peek counts the entries OpenSSL's decoder sees (where both
 * read the input); a parsed CRL says about itself what peek says; every entry
 * OpenSSL's decoder sees is found by cm_crl_lookup under its serial (as
 * cm_cert_facts writes serials), with a CRLReason or -1; cRLNumber is
 * lower-case hex. */
#include <string.h>

#include <openssl/x509.h>

#include "crl.h"
#include "encoding.h"
#include "fuzz.h"

#ifndef CM_FUZZ_FIXTURES
#error "CM_FUZZ_FIXTURES must name tests/fixtures/x509"
#endif

struct blob {
    char *data;
    size_t len;
};

/* Read the OCSP fixtures' CA once; kept for the life of the process. */
static void load_ca(struct blob *b)
{
    char path[1024];
    FILE *f = NULL;
    long n;

    if (b->data) return;
    snprintf(path, sizeof path, "%s/../ocsp/ca.pem", CM_FUZZ_FIXTURES);
    if (!(f = fopen(path, "rb")) || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) <= 0 ||
        fseek(f, 0, SEEK_SET) != 0 || !(b->data = malloc((size_t)n)) ||
        fread(b->data, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "fuzz_crl: cannot read %s\n", path);
        abort();
    }
    b->len = (size_t)n;
    fclose(f);
}

static int is_zero(const void *p, size_t n)
{
    const unsigned char *b = p;
    size_t i;
    for (i = 0; i < n; i++)
        if (b[i]) return 0;
    return 1;
}

static void check_number(const struct cm_crl_info *info)
{
    size_t i, n = strnlen(info->number_hex, sizeof info->number_hex);
    FUZZ_CHECK(n < sizeof info->number_hex);
    for (i = 0; i < n; i++)
        FUZZ_CHECK((info->number_hex[i] >= '0' && info->number_hex[i] <= '9') ||
                   (info->number_hex[i] >= 'a' && info->number_hex[i] <= 'f'));
}

/* Every entry OpenSSL decodes from der is found in crl. */
static void check_entries(const struct cm_crl *crl, const uint8_t *data, size_t size)
{
    const unsigned char *p = data;
    X509_CRL *x = NULL;
    STACK_OF(X509_REVOKED) *revoked;
    struct cm_crl_revoked rev;
    struct cm_result res;
    char hex[2 * CM_CRL_SERIAL_MAX + 2];
    int i, n;

    if (size == 0 || data[0] != 0x30) return; /* PEM input: the DER fixtures cover this */
    if (!(x = d2i_X509_CRL(NULL, &p, (long)size))) abort(); /* cm_crl_parse decoded it */
    revoked = X509_CRL_get_REVOKED(x);
    n = revoked ? sk_X509_REVOKED_num(revoked) : 0;
    for (i = 0; i < n; i++) {
        const ASN1_INTEGER *s = X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(revoked, i));
        const unsigned char *b = ASN1_STRING_get0_data(s);
        int len = ASN1_STRING_length(s), neg = ASN1_STRING_type(s) == V_ASN1_NEG_INTEGER;
        while (len > 0 && b[0] == 0) { b++; len--; }
        FUZZ_CHECK(len <= CM_CRL_SERIAL_MAX); /* else cm_crl_parse refused it */
        if (len == 0) {
            memcpy(hex, "00", 3);
        } else {
            if (neg) hex[0] = '-';
            cm_hex_encode(b, (size_t)len, hex + neg);
        }
        FUZZ_CHECK(cm_crl_lookup(crl, hex, strlen(hex), &rev, &res) == 1);
        FUZZ_CHECK(rev.reason >= -1 && rev.reason <= 10 && rev.reason != 7);
    }
    X509_CRL_free(x);
}

static void check_parse(int64_t now, const uint8_t *data, size_t size, const struct blob *ca,
                        const struct cm_crl_info *peeked, int peek_rc)
{
    struct cm_crl *crl = (struct cm_crl *)&crl;
    struct cm_crl_info info;
    struct cm_crl_revoked rev;
    struct cm_result res;
    int rc;

    cm_result_clear(&res);
    rc = cm_crl_parse((const char *)data, size, ca->data, ca->len, now, 300, &crl, &res);
    if (rc != CM_OK) {
        FUZZ_CHECK(rc == CM_ERR && res.code[0] != '\0' && crl == NULL);
        FUZZ_CHECK(memchr(res.message, '\0', sizeof res.message) != NULL);
        return;
    }
    FUZZ_CHECK(crl != NULL && peek_rc == CM_OK);
    cm_crl_get_info(crl, &info);
    FUZZ_CHECK(memcmp(&info, peeked, sizeof info) == 0);
    if (now) {
        FUZZ_CHECK(info.this_update <= now + 300);
        FUZZ_CHECK(info.next_update == 0 || info.next_update > now);
    }
    /* malformed keys are refused, odd-length and long ones simply looked up */
    FUZZ_CHECK(cm_crl_lookup(crl, "zz", 2, &rev, &res) == CM_ERR);
    FUZZ_CHECK(cm_crl_lookup(crl, "", 0, &rev, &res) == CM_ERR);
    FUZZ_CHECK(cm_crl_lookup(crl, "abc", 3, &rev, &res) >= 0);
    FUZZ_CHECK(cm_crl_lookup(crl, "0123456789abcdef0123456789abcdef0123456789abcdef", 48, &rev,
                             &res) == 0);
    check_entries(crl, data, size);
    cm_crl_free(crl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct blob ca;
    struct cm_crl_info info;
    struct cm_result res;
    int rc;

    load_ca(&ca);
    memset(&info, 0x5a, sizeof info);
    cm_result_clear(&res);
    rc = cm_crl_peek((const char *)data, size, &info, &res);
    if (rc != CM_OK) {
        FUZZ_CHECK(rc == CM_ERR && res.code[0] != '\0');
        FUZZ_CHECK(is_zero(&info, sizeof info));
    } else {
        const unsigned char *p = data;
        X509_CRL *x = size && data[0] == 0x30 ? d2i_X509_CRL(NULL, &p, (long)size) : NULL;
        check_number(&info);
        if (x) {
            STACK_OF(X509_REVOKED) *revoked = X509_CRL_get_REVOKED(x);
            FUZZ_CHECK(info.count == (size_t)(revoked ? sk_X509_REVOKED_num(revoked) : 0));
            X509_CRL_free(x);
        }
    }
    check_parse(0, data, size, &ca, &info, rc);
    check_parse(1767229200 /* the fixtures' T + 1 h */, data, size, &ca, &info, rc);
    return 0;
}
