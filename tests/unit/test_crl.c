/* test_crl.c - core/crl.c against the fixtures of scripts/make-ocsp-fixtures.sh
 * (tests/fixtures/ocsp/README.md) and against CRLs built here with
 * cm_crl_build: verification (name, signature, cRLSign), the time checks,
 * every entry found with its time and reason, lookups that must miss, PEM
 * and DER, broken input, and peek. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "check.h"
#include "crl.h"
#include "localca.h"

#define T 1767225600LL /* the fixtures' thisUpdate */
#define NOW (T + 3600)
#define DAY 86400LL

static struct blob fixture(const char *name) { return check_fixture("ocsp", name); }

static struct blob ca, ca_key, leaf, leaf_key, other;

static struct cm_crl *parse_blob(const struct blob *b, const struct blob *issuer, int64_t now,
                                 struct cm_result *res)
{
    struct cm_crl *crl = (struct cm_crl *)&crl; /* must be reset to NULL on failure */
    cm_result_clear(res);
    if (cm_crl_parse(b->data, b->len, issuer->data, issuer->len, now, 300, &crl, res) != CM_OK) {
        CHECK(crl == NULL);
        return NULL;
    }
    CHECK(crl != NULL);
    return crl;
}

static struct cm_crl *parse(const char *name, int64_t now, struct cm_result *res)
{
    struct blob b = fixture(name);
    struct cm_crl *crl = parse_blob(&b, &ca, now, res);
    free(b.data);
    return crl;
}

static void expect_fail(const char *name, const struct blob *issuer, int64_t now, const char *code)
{
    struct blob b = fixture(name);
    struct cm_result res;
    CHECK(parse_blob(&b, issuer, now, &res) == NULL);
    if (strcmp(res.code, code) != 0)
        fprintf(stderr, "%s: code %s (%s), expected %s\n", name, res.code, res.message, code);
    CHECK_STR(res.code, code);
    CHECK(res.message[0] != '\0');
    free(b.data);
}

static int lookup(const struct cm_crl *crl, const char *hex, struct cm_crl_revoked *rev)
{
    struct cm_result res;
    return cm_crl_lookup(crl, hex, strlen(hex), rev, &res);
}

/* Every entry of crl_revoked (README.md) is found with its time and reason. */
static void check_revoked_entries(const struct cm_crl *crl)
{
    struct cm_crl_revoked rev;
    struct cm_crl_info info;
    char hex[16];
    int i;

    cm_crl_get_info(crl, &info);
    CHECK(info.count == 42 && info.this_update == T && info.next_update == T + 7 * DAY);
    CHECK_STR(info.number_hex, "10");
    CHECK(lookup(crl, "1001", &rev) == 1);
    CHECK(rev.revoked_at == T - DAY && rev.reason == 1);
    for (i = 1; i <= 40; i++) {
        int r = (i % 12) - 1;
        snprintf(hex, sizeof hex, "%x", 0x3000 + i * 7);
        CHECK(lookup(crl, hex, &rev) == 1);
        CHECK(rev.revoked_at == T - i * 3600);
        CHECK(rev.reason == ((r >= 0 && r != 7) ? r : -1));
        /* the numbers between are not listed */
        snprintf(hex, sizeof hex, "%x", 0x3000 + i * 7 + 1);
        CHECK(lookup(crl, hex, &rev) == 0);
    }
    CHECK(lookup(crl, "00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff", &rev) == 1);
    CHECK(rev.revoked_at == T - 2 * DAY && rev.reason == -1);
    /* case and leading zeros do not matter */
    CHECK(lookup(crl, "FF00FF00FF00FF00FF00FF00FF00FF00FF00FF", &rev) == 1);
    CHECK(lookup(crl, "0000001001", &rev) == 1 && rev.reason == 1);
    CHECK(lookup(crl, "301e", &rev) == 0); /* 0x3000 + 30: i * 7 never is */
    CHECK(lookup(crl, "301E", &rev) == 0);
    CHECK(lookup(crl, "3007", &rev) == 1);
    CHECK(lookup(crl, "3OO7", &rev) == CM_ERR);
    /* misses: next to the leaf, past either end, far too long, negative, zero */
    CHECK(lookup(crl, "1002", &rev) == 0 && rev.revoked_at == 0);
    CHECK(lookup(crl, "1000", &rev) == 0);
    CHECK(lookup(crl, "01", &rev) == 0);
    CHECK(lookup(crl, "ffffffffffffffffffffffffffffffffffffffffff", &rev) == 0);
    CHECK(lookup(crl, "-1001", &rev) == 0);
    CHECK(lookup(crl, "0", &rev) == 0);
    CHECK(lookup(crl, "00", &rev) == 0);
    CHECK(lookup(crl, "", &rev) == CM_ERR);
    CHECK(lookup(crl, "-", &rev) == CM_ERR);
    CHECK(lookup(crl, "10 01", &rev) == CM_ERR);
}

static void test_fixtures(void)
{
    struct cm_crl *crl;
    struct cm_crl_info info;
    struct cm_crl_revoked rev;
    struct cm_result res;

    CHECK((crl = parse("crl_revoked.der", NOW, &res)) != NULL);
    if (crl) check_revoked_entries(crl);
    cm_crl_free(crl);
    CHECK((crl = parse("crl_revoked.pem", NOW, &res)) != NULL);
    if (crl) check_revoked_entries(crl);
    cm_crl_free(crl);

    CHECK((crl = parse("crl_empty.der", NOW, &res)) != NULL);
    if (crl) {
        cm_crl_get_info(crl, &info);
        CHECK(info.count == 0 && info.this_update == T && info.next_update == T + 7 * DAY);
        CHECK_STR(info.number_hex, "01");
        CHECK(lookup(crl, "1001", &rev) == 0);
    }
    cm_crl_free(crl);
    CHECK((crl = parse("crl_empty_no_next.der", T + 1000 * DAY, &res)) != NULL); /* never stale */
    if (crl) {
        cm_crl_get_info(crl, &info);
        CHECK(info.next_update == 0 && info.number_hex[0] == '\0');
    }
    cm_crl_free(crl);
    CHECK((crl = parse("crl_not_listing.der", NOW, &res)) != NULL);
    if (crl) {
        CHECK(lookup(crl, "1001", &rev) == 0);
        CHECK(lookup(crl, "1002", &rev) == 1 && rev.reason == 4);
    }
    cm_crl_free(crl);

    /* openssl ca -gencrl's CRL: thisUpdate is when it was made */
    CHECK((crl = parse("openssl_crl.der", 0, &res)) != NULL);
    if (crl) {
        cm_crl_get_info(crl, &info);
        CHECK(info.count == 1);
        CHECK_STR(info.number_hex, "20");
        CHECK(lookup(crl, "1001", &rev) == 1 && rev.reason == 1 && rev.revoked_at == 1767139200);
        cm_crl_free(crl);
        CHECK((crl = parse("openssl_crl.der", info.this_update + 60, &res)) != NULL);
    }
    cm_crl_free(crl);
}

static void test_failures(void)
{
    struct cm_crl *crl;
    struct cm_result res;

    expect_fail("crl_wrong_signer.der", &ca, NOW, "verify");
    expect_fail("crl_other_issuer.der", &ca, NOW, "mismatch");
    expect_fail("crl_revoked.der", &other, NOW, "mismatch");
    expect_fail("crl_stale.der", &ca, NOW, "stale");
    expect_fail("crl_notyet.der", &ca, NOW, "notyet");
    expect_fail("crl_truncated.der", &ca, NOW, "parse");
    expect_fail("crl_trailing.der", &ca, NOW, "parse");
    expect_fail("crl_garbage.der", &ca, NOW, "parse");
    expect_fail("leaf.pem", &ca, NOW, "parse"); /* a certificate is no CRL */
    /* without now nothing is checked for time */
    CHECK((crl = parse("crl_stale.der", 0, &res)) != NULL);
    cm_crl_free(crl);
    CHECK((crl = parse("crl_notyet.der", 0, &res)) != NULL);
    cm_crl_free(crl);
    /* boundaries: nextUpdate at now is stale; thisUpdate up to the skew ahead passes */
    expect_fail("crl_revoked.der", &ca, T + 7 * DAY, "stale");
    CHECK((crl = parse("crl_revoked.der", T + 7 * DAY - 1, &res)) != NULL);
    cm_crl_free(crl);
    CHECK((crl = parse("crl_revoked.der", T - 300, &res)) != NULL);
    cm_crl_free(crl);
    expect_fail("crl_revoked.der", &ca, T - 301, "notyet");
    /* an unreadable issuer */
    {
        struct blob b = fixture("crl_revoked.der"), junk = {(char *)"junk", 4};
        CHECK(parse_blob(&b, &junk, NOW, &res) == NULL);
        CHECK_STR(res.code, "parse");
        free(b.data);
    }
    /* empty and oversized input */
    CHECK(cm_crl_parse("", 0, ca.data, ca.len, NOW, 300, &crl, &res) == CM_ERR);
    CHECK_STR(res.code, "parse");
    CHECK(cm_crl_parse("0", (size_t)CM_CRL_MAX_INPUT + 1, ca.data, ca.len, NOW, 300, &crl, &res) ==
          CM_ERR);
    CHECK_STR(res.code, "toobig");
    CHECK(crl == NULL);
}

/* A CRL signed with a key whose certificate may not sign CRLs. */
static void test_no_crl_sign(void)
{
    struct cm_crl_entry e = {"1001", T - DAY, 1};
    struct cm_crl_build_opts o;
    struct cm_crl *crl = NULL;
    unsigned char *der = NULL;
    size_t len = 0;
    struct cm_result res;

    memset(&o, 0, sizeof o);
    o.issuer_cert = leaf.data;
    o.issuer_cert_len = leaf.len;
    o.issuer_key = leaf_key.data;
    o.issuer_key_len = leaf_key.len;
    o.entries = &e;
    o.entry_count = 1;
    o.this_update = T;
    o.next_update = T + DAY;
    CHECK(cm_crl_build(&o, &der, &len, &res) == CM_OK);
    CHECK(cm_crl_parse((const char *)der, len, leaf.data, leaf.len, NOW, 300, &crl, &res) ==
          CM_ERR);
    CHECK_STR(res.code, "verify");
    CHECK(crl == NULL);
    free(der);
}

/* Many entries in random order: every one found, numbers between missed. */
static void test_many(void)
{
    enum { N = 5000 };
    struct cm_crl_entry *e = calloc(N, sizeof *e);
    char (*hex)[24] = calloc(N, sizeof *hex);
    struct cm_crl_build_opts o;
    struct cm_crl *crl = NULL;
    struct cm_crl_revoked rev;
    struct cm_crl_info info;
    unsigned char *der = NULL;
    size_t len = 0;
    struct cm_result res;
    uint64_t x = 88172645463325252ULL;
    int i, found = 0, missed = 0;

    if (!e || !hex) exit(2);
    for (i = 0; i < N; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17; /* xorshift: fixed, no clock */
        /* even serials of varied lengths, so value + 1 is never listed */
        snprintf(hex[i], sizeof hex[i], "%llx", (unsigned long long)((x >> (i % 40)) | 2) & ~1ULL);
        e[i].serial_hex = hex[i];
        e[i].revoked_at = T - i;
        e[i].reason = i % 3 == 0 ? -1 : 1;
    }
    memset(&o, 0, sizeof o);
    o.issuer_cert = ca.data;
    o.issuer_cert_len = ca.len;
    o.issuer_key = ca_key.data;
    o.issuer_key_len = ca_key.len;
    o.entries = e;
    o.entry_count = N;
    o.this_update = T;
    o.next_update = T + DAY;
    CHECK(cm_crl_build(&o, &der, &len, &res) == CM_OK);
    CHECK(cm_crl_parse((const char *)der, len, ca.data, ca.len, NOW, 300, &crl, &res) == CM_OK);
    if (crl) {
        cm_crl_get_info(crl, &info);
        CHECK(info.count == N);
        for (i = 0; i < N; i++) {
            char next[24];
            unsigned long long v = strtoull(hex[i], NULL, 16);
            if (lookup(crl, hex[i], &rev) == 1 && rev.revoked_at <= T) found++;
            snprintf(next, sizeof next, "%llx", v + 1);
            if (lookup(crl, next, &rev) == 0) missed++;
        }
        CHECK(found == N);
        CHECK(missed == N);
    }
    cm_crl_free(crl);
    free(der);
    free(hex);
    free(e);
}

/* A CRL whose entries the DER walk declines (a negative serial: OpenSSL
 * encodes it, no conforming CA issues it) is read by OpenSSL's decoder, with
 * the same results for the other entries. */
static void test_declined_entries(void)
{
    BIO *bio = BIO_new_mem_buf(ca.data, (int)ca.len);
    BIO *kbio = BIO_new_mem_buf(ca_key.data, (int)ca_key.len);
    X509 *cax = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    EVP_PKEY *key = kbio ? PEM_read_bio_PrivateKey(kbio, NULL, NULL, NULL) : NULL;
    X509_CRL *x = X509_CRL_new();
    ASN1_TIME *t = ASN1_TIME_set(NULL, (time_t)T), *nt = ASN1_TIME_set(NULL, (time_t)(T + DAY));
    static const long serials[] = {-0x1234, 0x1001, 0x7f};
    unsigned char *der = NULL;
    struct cm_crl *crl = NULL;
    struct cm_crl_revoked rev;
    struct cm_crl_info info;
    struct cm_result res;
    size_t i;
    int n;

    CHECK(cax && key && x && t && nt);
    CHECK(X509_CRL_set_version(x, 1) == 1);
    CHECK(X509_CRL_set_issuer_name(x, X509_get_subject_name(cax)) == 1);
    CHECK(X509_CRL_set1_lastUpdate(x, t) == 1 && X509_CRL_set1_nextUpdate(x, nt) == 1);
    for (i = 0; i < sizeof serials / sizeof serials[0]; i++) {
        X509_REVOKED *r = X509_REVOKED_new();
        ASN1_INTEGER *ai = ASN1_INTEGER_new();
        ASN1_ENUMERATED *reason = ASN1_ENUMERATED_new();
        CHECK(r && ai && reason && ASN1_INTEGER_set(ai, serials[i]) == 1);
        CHECK(X509_REVOKED_set_serialNumber(r, ai) == 1);
        CHECK(X509_REVOKED_set_revocationDate(r, t) == 1);
        CHECK(ASN1_ENUMERATED_set(reason, (long)(i + 1)) == 1);
        CHECK(X509_REVOKED_add1_ext_i2d(r, NID_crl_reason, reason, 0, 0) == 1);
        CHECK(X509_CRL_add0_revoked(x, r) == 1);
        ASN1_INTEGER_free(ai);
        ASN1_ENUMERATED_free(reason);
    }
    CHECK(X509_CRL_sign(x, key, EVP_sha256()) > 0);
    CHECK((n = i2d_X509_CRL(x, &der)) > 0);
    CHECK(cm_crl_parse((const char *)der, (size_t)n, ca.data, ca.len, NOW, 300, &crl, &res) ==
          CM_OK);
    if (crl) {
        cm_crl_get_info(crl, &info);
        CHECK(info.count == 3);
        CHECK(lookup(crl, "-1234", &rev) == 1 && rev.reason == 1 && rev.revoked_at == T);
        CHECK(lookup(crl, "1234", &rev) == 0);
        CHECK(lookup(crl, "1001", &rev) == 1 && rev.reason == 2);
        CHECK(lookup(crl, "7F", &rev) == 1 && rev.reason == 3);
    }
    CHECK(cm_crl_peek((const char *)der, (size_t)n, &info, &res) == CM_OK && info.count == 3);
    cm_crl_free(crl);
    OPENSSL_free(der);
    ASN1_TIME_free(t);
    ASN1_TIME_free(nt);
    X509_CRL_free(x);
    EVP_PKEY_free(key);
    X509_free(cax);
    BIO_free(bio);
    BIO_free(kbio);
}

static void test_peek(void)
{
    struct cm_crl_info info;
    struct cm_result res;
    struct blob b;

    b = fixture("crl_wrong_signer.der"); /* peek verifies nothing */
    CHECK(cm_crl_peek(b.data, b.len, &info, &res) == CM_OK);
    CHECK(info.count == 42 && info.this_update == T && info.next_update == T + 7 * DAY);
    CHECK_STR(info.number_hex, "10");
    free(b.data);
    b = fixture("crl_stale.der");
    CHECK(cm_crl_peek(b.data, b.len, &info, &res) == CM_OK);
    CHECK(info.next_update == T - DAY);
    free(b.data);
    b = fixture("crl_revoked.pem");
    CHECK(cm_crl_peek(b.data, b.len, &info, &res) == CM_OK && info.count == 42);
    free(b.data);
    b = fixture("crl_truncated.der");
    CHECK(cm_crl_peek(b.data, b.len, &info, &res) == CM_ERR);
    CHECK_STR(res.code, "parse");
    CHECK(info.count == 0 && info.this_update == 0);
    free(b.data);
    b = fixture("crl_garbage.der");
    CHECK(cm_crl_peek(b.data, b.len, &info, &res) == CM_ERR);
    CHECK_STR(res.code, "parse");
    free(b.data);
}

int main(void)
{
    ca = fixture("ca.pem");
    ca_key = fixture("ca.key");
    leaf = fixture("leaf.pem");
    leaf_key = fixture("leaf.key");
    other = fixture("other_ca.pem");
    test_fixtures();
    test_failures();
    test_no_crl_sign();
    test_many();
    test_declined_entries();
    test_peek();
    free(ca.data);
    free(ca_key.data);
    free(leaf.data);
    free(leaf_key.data);
    free(other.data);
    return CHECK_DONE();
}
