/* test_x509.c - chain parsing, keys, CSRs, issuance and OCSP of core/x509.c
 * and core/ocsp.c, against the fixtures of scripts/make-x509-fixtures.sh. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "check.h"
#include "key.h"
#include "localca.h"
#include "ocsp.h"
#include "x509.h"
#include "renewal.h"

static char *read_fixture(const char *name, size_t *len)
{
    char path[1024];
    const char *src = getenv("CERTMAINT_SOURCE_DIR");
    FILE *fp;
    char *buf;
    long n;
    snprintf(path, sizeof path, "%s/tests/fixtures/x509/%s", src ? src : "..", name);
    fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "cannot open fixture %s\n", path);
        exit(2);
    }
    if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) exit(2);
    buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, fp) != (size_t)n) exit(2);
    buf[n] = '\0';
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static int has_name(const struct cm_strlist *l, const char *s)
{
    size_t i;
    for (i = 0; i < l->count; i++)
        if (strcmp(l->items[i], s) == 0) return 1;
    return 0;
}

static void check_leaf_facts(const struct cm_cert_facts *f)
{
    CHECK(f->names.count == 5);
    if (f->names.count == 5) {
        CHECK_STR(f->names.items[0], "example.com");
        CHECK_STR(f->names.items[1], "*.example.com");
        CHECK_STR(f->names.items[2], "www.example.com");
        CHECK_STR(f->names.items[3], "192.0.2.1");
        CHECK_STR(f->names.items[4], "2001:db8::1");
    }
    CHECK_STR(f->serial_hex, "0123456789abcdef0123456789abcdef");
    CHECK(f->not_before == 1704067200);  /* 2024-01-01T00:00:00Z */
    CHECK(f->not_after == 4859740800LL); /* 2124-01-01T00:00:00Z */
    CHECK_STR(f->issuer, "CN=certmaint test intermediate,O=certmaint tests");
    CHECK_STR(f->subject, "CN=example.com");
    CHECK(f->ocsp_urls.count == 1);
    CHECK(f->ocsp_urls.count && strcmp(f->ocsp_urls.items[0], "http://127.0.0.1:8888/ocsp") == 0);
    CHECK(f->crl_urls.count == 1);
    CHECK(f->crl_urls.count &&
          strcmp(f->crl_urls.items[0], "http://127.0.0.1:8888/intermediate.crl") == 0);
    CHECK(!f->is_ca);
    CHECK(f->der && f->der_len > 100);
}

static void test_good_chain(void)
{
    struct cm_cert_facts f, g;
    struct cm_result res;
    size_t len, dlen, i;
    char *pem = read_fixture("ok_chain.pem", &len);
    char *der = read_fixture("ok_chain.der", &dlen);
    unsigned char zero[32] = {0};

    CHECK(cm_x509_parse_chain(pem, len, &f, &res) == CM_OK);
    check_leaf_facts(&f);
    CHECK(f.chain_count == 1);
    CHECK(f.der_len + f.chain_der_len == dlen);
    CHECK(memcmp(f.der, der, f.der_len) == 0);
    CHECK(memcmp(f.chain_der, der + f.der_len, f.chain_der_len) == 0);
    CHECK(memcmp(f.sha256, zero, 32) != 0);

    /* the same chain as DER gives the same facts */
    CHECK(cm_x509_parse_der_chain((unsigned char *)der, dlen, &g, &res) == CM_OK);
    check_leaf_facts(&g);
    CHECK(g.chain_count == 1);
    CHECK(memcmp(f.sha256, g.sha256, 32) == 0);
    cm_cert_facts_free(&g);

    /* explanatory text around blocks and CRLF line ends are fine */
    free(pem);
    pem = read_fixture("ok_chain_with_text.pem", &len);
    CHECK(cm_x509_parse_chain(pem, len, &g, &res) == CM_OK);
    CHECK(g.chain_count == 1 && memcmp(f.sha256, g.sha256, 32) == 0);
    cm_cert_facts_free(&g);
    free(pem);
    pem = read_fixture("ok_chain_crlf.pem", &len);
    CHECK(cm_x509_parse_chain(pem, len, &g, &res) == CM_OK);
    CHECK(g.chain_count == 1 && memcmp(f.sha256, g.sha256, 32) == 0);
    cm_cert_facts_free(&g);

    /* the intermediate alone is a CA */
    free(pem);
    pem = read_fixture("ok_intermediate.pem", &len);
    CHECK(cm_x509_parse_chain(pem, len, &g, &res) == CM_OK);
    CHECK(g.is_ca && g.chain_count == 0 && g.chain_der == NULL);
    CHECK_STR(g.subject, "CN=certmaint test intermediate,O=certmaint tests");
    CHECK_STR(g.serial_hex, "02");
    cm_cert_facts_free(&g);

    cm_cert_facts_free(&f);
    cm_cert_facts_free(&f); /* idempotent */
    for (i = 0, len = 0; i < sizeof f; i++) len += ((unsigned char *)&f)[i] != 0;
    CHECK(len == 0);
    free(pem);
    free(der);
}

static void test_cn_fallback(void)
{
    struct cm_cert_facts f;
    struct cm_result res;
    size_t len;
    char *pem = read_fixture("ok_cn_only.pem", &len);
    CHECK(cm_x509_parse_chain(pem, len, &f, &res) == CM_OK);
    CHECK(f.names.count == 1);
    CHECK(has_name(&f.names, "cn-only.example.net"));
    CHECK_STR(f.subject, "CN=cn-only.example.net,O=certmaint tests");
    CHECK_STR(f.serial_hex, "0a");
    CHECK(f.ocsp_urls.count == 0 && f.crl_urls.count == 0);
    cm_cert_facts_free(&f);
    free(pem);
}

static void expect_parse_error(const char *fixture, const char *code, const char *needle)
{
    struct cm_cert_facts f;
    struct cm_result res;
    size_t len;
    char *data = read_fixture(fixture, &len);
    int der = strstr(fixture, ".der") != NULL;
    int rc;
    memset(&res, 0, sizeof res);
    memset(&f, 0x5a, sizeof f); /* must come back zeroed */
    rc = der ? cm_x509_parse_der_chain((unsigned char *)data, len, &f, &res)
             : cm_x509_parse_chain(data, len, &f, &res);
    CHECK(rc == CM_ERR);
    CHECK_STR(res.code, code);
    if (!strstr(res.message, needle)) {
        fprintf(stderr, "%s: message \"%s\" lacks \"%s\"\n", fixture, res.message, needle);
        CHECK(0);
    }
    CHECK(f.der == NULL && f.names.items == NULL && f.serial_hex == NULL);
    CHECK(ERR_peek_error() == 0); /* the error queue was drained */
    free(data);
}

static void test_broken_input(void)
{
    struct cm_cert_facts f;
    struct cm_result res;
    char *big;
    size_t n = CM_X509_MAX_INPUT + 1;

    expect_parse_error("err_empty.pem", "parse", "no PEM certificate found");
    expect_parse_error("err_whitespace.pem", "parse", "no PEM certificate found");
    expect_parse_error("err_garbage.pem", "parse", "no PEM certificate found");
    expect_parse_error("err_truncated.pem", "parse", "truncated PEM: missing END line");
    expect_parse_error("err_missing_end.pem", "parse", "truncated PEM: missing END line");
    expect_parse_error("err_truncated_body.pem", "parse", "certificate 1 in chain is not valid DER");
    expect_parse_error("err_not_cert.pem", "parse", "\"CERTIFICATE REQUEST\", not a CERTIFICATE");
    expect_parse_error("err_bad_second.pem", "parse", "certificate 2 in chain is not valid DER");
    expect_parse_error("err_not_der.pem", "parse", "certificate 1 in chain is not valid DER");
    expect_parse_error("err_bad_base64.pem", "parse", "certificate 1 in chain is not valid base64");
    expect_parse_error("err_bad_second.der", "parse", "certificate 2 in chain is not valid DER");
    expect_parse_error("err_garbage.der", "parse", "certificate 1 in chain is not valid DER");
    expect_parse_error("err_empty.der", "parse", "empty certificate data");

    /* bigger than the bound: refused before anything is read */
    big = malloc(n);
    CHECK(big != NULL);
    memset(big, 'A', n);
    CHECK(cm_x509_parse_chain(big, n, &f, &res) == CM_ERR);
    CHECK_STR(res.code, "toobig");
    CHECK(cm_x509_parse_der_chain((unsigned char *)big, n, &f, &res) == CM_ERR);
    CHECK_STR(res.code, "toobig");
    free(big);
    CHECK(cm_x509_parse_chain(NULL, 0, &f, &res) == CM_ERR);
    CHECK_STR(res.code, "parse");
}

/* Untrusted input: every prefix of a chain and thousands of corrupted
 * copies must parse or fail cleanly (ASan watches), never crash. */
static void test_mutations(void)
{
    struct cm_cert_facts f;
    struct cm_result res;
    size_t len, cut, leaf_len = 0, i, ok_prefixes = 0, bad_prefix_ok = 0;
    char *der = read_fixture("ok_chain.der", &len);
    unsigned char *copy = malloc(len);
    uint32_t seed = 12345;
    int round, parsed = 0;

    CHECK(copy != NULL);
    if (cm_x509_parse_der_chain((unsigned char *)der, len, &f, &res) == CM_OK) {
        leaf_len = f.der_len;
        cm_cert_facts_free(&f);
    }
    for (cut = 0; cut <= len; cut++) {
        if (cm_x509_parse_der_chain((unsigned char *)der, cut, &f, &res) == CM_OK) {
            ok_prefixes++;
            if (cut != leaf_len && cut != len) bad_prefix_ok++;
            cm_cert_facts_free(&f);
        }
    }
    CHECK(ok_prefixes == 2 && bad_prefix_ok == 0); /* the leaf alone, and the whole chain */
    for (round = 0; round < 5000; round++) {
        int flips = 1 + round % 3, k;
        memcpy(copy, der, len);
        for (k = 0; k < flips; k++) {
            seed = seed * 1103515245u + 12345u;
            i = (seed >> 8) % len;
            seed = seed * 1103515245u + 12345u;
            copy[i] ^= (unsigned char)(1u << ((seed >> 16) % 8));
        }
        if (cm_x509_parse_der_chain(copy, len, &f, &res) == CM_OK) {
            parsed++;
            CHECK(f.der_len + f.chain_der_len == len);
            cm_cert_facts_free(&f);
        }
    }
    printf("mutations: %d of 5000 corrupted chains still parse (signature bytes, names)\n", parsed);
    CHECK(ERR_peek_error() == 0);
    free(copy);
    free(der);
}

static double now_us(void)
{
    struct timespec ts;
    /* CPU time, not wall time: other builds share the machine */
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Not asserted (machines differ): printed for the record.  The cache's
 * budget is 30 us a certificate including this parse. */
static void bench_parse(void)
{
    struct cm_cert_facts f;
    struct cm_result res;
    size_t len, dlen;
    char *pem = read_fixture("ok_chain.pem", &len);
    char *der = read_fixture("ok_chain.der", &dlen);
    int i, iters = 20000, ok = 1;
    double t0, t1, t2;

    t0 = now_us();
    for (i = 0; i < iters; i++) {
        ok &= cm_x509_parse_chain(pem, len, &f, &res) == CM_OK;
        cm_cert_facts_free(&f);
    }
    t1 = now_us();
    for (i = 0; i < iters; i++) {
        ok &= cm_x509_parse_der_chain((unsigned char *)der, dlen, &f, &res) == CM_OK;
        cm_cert_facts_free(&f);
    }
    t2 = now_us();
    CHECK(ok);
    printf("parse: PEM leaf+intermediate %.2f us/chain, DER %.2f us/chain (CPU, %d iterations)\n",
           (t1 - t0) / iters, (t2 - t1) / iters, iters);
    free(pem);
    free(der);
}


static void test_chain_pem(void)
{
    struct cm_cert_facts f;
    struct cm_result res;
    size_t len, plen = 0, elem = 0;
    char *pem = read_fixture("ok_chain.pem", &len);
    char *out = NULL;

    CHECK(cm_x509_parse_chain(pem, len, &f, &res) == CM_OK);
    /* DER back to PEM gives the bytes openssl wrote */
    CHECK(cm_x509_chain_pem(f.der, f.der_len, f.chain_der, f.chain_der_len, &out, &plen, &res) ==
          CM_OK);
    CHECK(out && plen == len && memcmp(out, pem, len) == 0);
    free(out); out = NULL;
    CHECK(cm_x509_chain_pem(f.der, f.der_len, NULL, 0, &out, &plen, &res) == CM_OK);
    CHECK(out && strstr(out, "-----END CERTIFICATE-----\n") == out + plen - 26);
    free(out); out = NULL;
    CHECK(cm_x509_der_next(f.chain_der, f.chain_der_len, &elem, &res) == CM_OK);
    CHECK(elem == f.chain_der_len);
    CHECK(cm_x509_der_next(f.chain_der, 3, &elem, &res) == CM_ERR);
    CHECK_STR(res.code, "parse");
    /* leaf with trailing bytes is not one certificate */
    CHECK(cm_x509_chain_pem(f.der, f.der_len - 1, NULL, 0, &out, &plen, &res) == CM_ERR);
    CHECK(out == NULL);
    cm_cert_facts_free(&f);
    free(pem);
}

/* A DER element of len bytes in all (tag SEQUENCE, a two-byte length): the
 * PEM functions split by headers, they do not decode. */
static unsigned char *fake_der(size_t len, unsigned seed)
{
    unsigned char *d = malloc(len);
    size_t i, body = len - 4;
    d[0] = 0x30;
    d[1] = 0x82;
    d[2] = (unsigned char)(body >> 8);
    d[3] = (unsigned char)body;
    for (i = 4; i < len; i++) d[i] = (unsigned char)(i * 31u + seed);
    return d;
}

/* The staple key's hash made without the PEM equals the PEM's, whatever the
 * sizes (the 1,536-byte pieces it encodes at a time, and past them). */
static void test_chain_pem_fnv(void)
{
    static const size_t sizes[] = {130, 1535, 1536, 1537, 3072, 3073, 5000, 40000};
    struct cm_cert_facts f;
    struct cm_result res;
    size_t len, plen = 0, i, j;
    char *pem = read_fixture("ok_chain.pem", &len), *out = NULL;
    uint32_t h = 0;

    CHECK(cm_x509_parse_chain(pem, len, &f, &res) == CM_OK);
    CHECK(cm_x509_chain_pem_fnv1a32(f.der, f.der_len, f.chain_der, f.chain_der_len, &h, &res) == CM_OK);
    CHECK(h == cm_fnv1a32(pem, len)); /* what certmagic hashes: the bytes openssl wrote */
    CHECK(cm_x509_chain_pem_fnv1a32(f.der, f.der_len, NULL, 0, &h, &res) == CM_OK);
    CHECK(cm_x509_chain_pem(f.der, f.der_len, NULL, 0, &out, &plen, &res) == CM_OK);
    CHECK(out && h == cm_fnv1a32(out, plen));
    free(out); out = NULL;
    CHECK(cm_x509_chain_pem_fnv1a32(f.der, f.der_len - 1, NULL, 0, &h, &res) == CM_ERR);
    CHECK_STR(res.code, "parse");
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        for (j = 0; j < sizeof sizes / sizeof sizes[0]; j += 3) {
            unsigned char *leaf = fake_der(sizes[i], 1), *chain = fake_der(sizes[j], 7);
            uint32_t got = 0;
            CHECK(cm_x509_chain_pem(leaf, sizes[i], chain, sizes[j], &out, &plen, &res) == CM_OK);
            CHECK(cm_x509_chain_pem_fnv1a32(leaf, sizes[i], chain, sizes[j], &got, &res) == CM_OK);
            CHECK(out && got == cm_fnv1a32(out, plen));
            free(out); out = NULL;
            free(leaf);
            free(chain);
        }
    cm_cert_facts_free(&f);
    free(pem);
}

static void test_keys(void)
{
    static const char *const types[] = {"p256", "p384", "rsa2048", "rsa4096", NULL, ""};
    static const char *const name[] = {"key.example"};
    struct cm_issue_opts o;
    struct cm_result res;
    size_t i, clen, klen, olen;
    char *cert = read_fixture("ok_leaf.pem", &clen);
    char *key = read_fixture("ok_leaf.key", &klen);
    char *other = read_fixture("ok_other_rsa.key", &olen);
    char *k = NULL, *pub = NULL, *self = NULL, *serial = NULL, *prev = NULL;

    CHECK(cm_key_matches_cert(cert, clen, key, klen, &res) == CM_OK);
    CHECK(cm_key_matches_cert(cert, clen, other, olen, &res) == CM_ERR);
    CHECK_STR(res.code, "mismatch");
    CHECK(cm_key_matches_cert(cert, clen, "garbage", 7, &res) == CM_ERR);
    CHECK_STR(res.code, "parse");
    CHECK(cm_key_matches_cert("garbage", 7, key, klen, &res) == CM_ERR);
    CHECK_STR(res.code, "parse");
    CHECK(cm_key_generate("dsa1024", &k, &res) == CM_ERR && k == NULL);
    CHECK_STR(res.code, "invalid");

    for (i = 0; i < sizeof types / sizeof types[0]; i++) {
        CHECK(cm_key_generate(types[i], &k, &res) == CM_OK);
        CHECK(k && strstr(k, "-----BEGIN PRIVATE KEY-----") == k); /* PKCS#8 */
        CHECK(cm_key_public_pem(k, strlen(k), &pub, &res) == CM_OK);
        CHECK(pub && strstr(pub, "-----BEGIN PUBLIC KEY-----") == pub);
        memset(&o, 0, sizeof o);
        o.issuer_key = k;
        o.names = name;
        o.names_count = 1;
        o.not_before = 1700000000;
        o.not_after = 1800000000;
        o.path_len = -1;
        CHECK(cm_cert_issue(&o, &self, &serial, &res) == CM_OK);
        CHECK(self && cm_key_matches_cert(self, strlen(self), k, strlen(k), &res) == CM_OK);
        CHECK(cm_key_matches_cert(self, strlen(self), other, olen, &res) == CM_ERR);
        CHECK_STR(res.code, "mismatch");
        if (prev) { /* another key of the same or another type */
            CHECK(cm_key_matches_cert(self, strlen(self), prev, strlen(prev), &res) == CM_ERR);
            CHECK_STR(res.code, "mismatch");
        }
        CHECK(serial && strlen(serial) == 32); /* default: 128 random bits */
        free(prev);
        prev = k; k = NULL;
        free(pub); pub = NULL;
        free(self); self = NULL;
        free(serial); serial = NULL;
    }
    free(prev);
    free(cert);
    free(key);
    free(other);
}

static void test_csr(void)
{
    static const char *const names[] = {"csr.example", "*.csr.example", "192.0.2.7", "::1"};
    struct cm_csr_info info;
    struct cm_result res;
    char *key = NULL, *pem = NULL;
    unsigned char *der = NULL, *hit;
    size_t der_len = 0;

    CHECK(cm_key_generate("p256", &key, &res) == CM_OK);
    CHECK(cm_csr_create(key, strlen(key), names, 4, &pem, &der, &der_len, &res) == CM_OK);
    CHECK(pem && strstr(pem, "-----BEGIN CERTIFICATE REQUEST-----") == pem);
    CHECK(cm_csr_parse((unsigned char *)pem, strlen(pem), &info, &res) == CM_OK);
    CHECK(info.names.count == 4);
    if (info.names.count == 4) {
        CHECK_STR(info.names.items[0], "csr.example");
        CHECK_STR(info.names.items[1], "*.csr.example");
        CHECK_STR(info.names.items[2], "192.0.2.7");
        CHECK_STR(info.names.items[3], "::1");
    }
    CHECK_STR(info.cn, "csr.example");
    CHECK(info.public_key_pem && strstr(info.public_key_pem, "BEGIN PUBLIC KEY"));
    cm_csr_info_free(&info);
    CHECK(cm_csr_parse(der, der_len, &info, &res) == CM_OK && info.names.count == 4);
    cm_csr_info_free(&info);

    /* a name changed after signing: the signature no longer verifies */
    hit = memmem(der, der_len, "csr.example", 11);
    CHECK(hit != NULL);
    if (hit) hit[0] = 'x';
    CHECK(cm_csr_parse(der, der_len, &info, &res) == CM_ERR);
    CHECK_STR(res.code, "verify");
    CHECK(info.names.items == NULL && info.public_key_pem == NULL);
    CHECK(cm_csr_parse((const unsigned char *)"\x30\x03\x02\x01\x01", 5, &info, &res) == CM_ERR);
    CHECK_STR(res.code, "parse");
    CHECK(cm_csr_create(key, strlen(key), names, 0, NULL, NULL, NULL, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    {
        static const char *const bad[] = {"bad name.example"};
        free(pem); pem = NULL;
        CHECK(cm_csr_create(key, strlen(key), bad, 1, &pem, NULL, NULL, &res) == CM_ERR);
        CHECK_STR(res.code, "invalid");
    }
    free(pem);
    free(der);
    free(key);
}

/* A test CA: key + certificate PEM. */
struct ca {
    char *key, *cert, *serial;
};

static void ca_free(struct ca *c)
{
    free(c->key); c->key = NULL;
    free(c->cert); c->cert = NULL;
    free(c->serial); c->serial = NULL;
}

static int issue(struct ca *out, const struct ca *issuer, const char *key_type, const char *name,
                 int is_ca, int path_len, int ocsp_signing)
{
    struct cm_issue_opts o;
    struct cm_result res;
    char *pub = NULL;
    int rc;
    memset(&o, 0, sizeof o);
    memset(out, 0, sizeof *out);
    if (cm_key_generate(key_type, &out->key, &res) != CM_OK) return CM_ERR;
    if (issuer && cm_key_public_pem(out->key, strlen(out->key), &pub, &res) != CM_OK)
        return CM_ERR;
    o.subject_key = pub;
    o.issuer_key = issuer ? issuer->key : out->key;
    o.issuer_cert = issuer ? issuer->cert : NULL;
    o.names = is_ca ? NULL : &name;
    o.names_count = is_ca ? 0 : 1;
    o.cn = is_ca ? name : NULL;
    o.not_before = 1700000000;
    o.not_after = 1700000000 + 10 * 365 * 86400LL;
    o.is_ca = is_ca;
    o.path_len = path_len;
    o.ocsp_signing = ocsp_signing;
    o.ocsp_url = is_ca ? NULL : "http://127.0.0.1:9/ocsp";
    rc = cm_cert_issue(&o, &out->cert, &out->serial, &res);
    if (rc != CM_OK) fprintf(stderr, "issue %s: %s (%s)\n", name, res.message, res.code);
    free(pub);
    return rc;
}

static X509 *x509_of(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    return x;
}

/* OpenSSL's own path validation of leaf <- untrusted... <- root, at t. */
static int verify_chain(const char *root, const char *inter, const char *leaf, time_t t)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    X509 *r = x509_of(root), *i = x509_of(inter), *l = x509_of(leaf);
    int ok = -1;
    if (store && ctx && untrusted && r && i && l && X509_STORE_add_cert(store, r) == 1 &&
        sk_X509_push(untrusted, i) && X509_STORE_CTX_init(ctx, store, l, untrusted) == 1) {
        X509_STORE_CTX_set_time(ctx, 0, t);
        X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
        ok = X509_verify_cert(ctx);
        if (ok != 1)
            fprintf(stderr, "(expected for negative cases) verify: %s\n",
                    X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    }
    ERR_clear_error();
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    sk_X509_free(untrusted);
    X509_free(r);
    X509_free(i);
    X509_free(l);
    return ok;
}

static void test_issue_chain(void)
{
    struct ca root, inter, leaf, sub, subleaf;
    struct cm_cert_facts f;
    struct cm_issue_opts o;
    struct cm_result res;
    char *pem = NULL, *serial = NULL;
    static const char *const names[] = {"leaf.example", "*.leaf.example", "2001:db8::7"};

    CHECK(issue(&root, NULL, "p384", "test root", 1, 1, 0) == CM_OK);
    CHECK(issue(&inter, &root, "p256", "test intermediate", 1, 0, 0) == CM_OK);
    CHECK(issue(&leaf, &inter, "rsa2048", "leaf.example", 0, -1, 0) == CM_OK);
    CHECK(verify_chain(root.cert, inter.cert, leaf.cert, 1700000000 + 86400) == 1);
    /* outside the validity window */
    CHECK(verify_chain(root.cert, inter.cert, leaf.cert, 1600000000) != 1);
    /* pathlen:0 on the intermediate forbids a CA below it */
    CHECK(issue(&sub, &inter, "p256", "sub CA", 1, -1, 0) == CM_OK);
    CHECK(issue(&subleaf, &sub, "p256", "deep.example", 0, -1, 0) == CM_OK);
    {
        char *both = malloc(strlen(sub.cert) + strlen(inter.cert) + 1);
        X509_STORE *store = X509_STORE_new();
        X509_STORE_CTX *ctx = X509_STORE_CTX_new();
        STACK_OF(X509) *untrusted = sk_X509_new_null();
        X509 *r = x509_of(root.cert), *i1 = x509_of(inter.cert), *i2 = x509_of(sub.cert),
             *l = x509_of(subleaf.cert);
        CHECK(both && store && ctx && untrusted && r && i1 && i2 && l);
        X509_STORE_add_cert(store, r);
        sk_X509_push(untrusted, i1);
        sk_X509_push(untrusted, i2);
        X509_STORE_CTX_init(ctx, store, l, untrusted);
        X509_STORE_CTX_set_time(ctx, 0, 1700000000 + 86400);
        CHECK(X509_verify_cert(ctx) != 1);
        CHECK(X509_STORE_CTX_get_error(ctx) == X509_V_ERR_PATH_LENGTH_EXCEEDED);
        ERR_clear_error();
        X509_STORE_CTX_free(ctx);
        X509_STORE_free(store);
        sk_X509_free(untrusted);
        X509_free(r);
        X509_free(i1);
        X509_free(i2);
        X509_free(l);
        free(both);
    }

    /* what the parser reads back */
    CHECK(cm_x509_parse_chain(leaf.cert, strlen(leaf.cert), &f, &res) == CM_OK);
    CHECK(f.names.count == 1 && strcmp(f.names.items[0], "leaf.example") == 0);
    CHECK_STR(f.issuer, "CN=test intermediate");
    CHECK_STR(f.serial_hex, leaf.serial);
    CHECK(f.ocsp_urls.count == 1 && f.not_before == 1700000000 && !f.is_ca);
    cm_cert_facts_free(&f);
    CHECK(cm_x509_parse_chain(inter.cert, strlen(inter.cert), &f, &res) == CM_OK);
    CHECK(f.is_ca && f.names.count == 0); /* a CN with a space is no host name */
    cm_cert_facts_free(&f);

    /* explicit serial, names with IP, CN given, CRL URL, dates past 2049 */
    memset(&o, 0, sizeof o);
    o.subject_key = leaf.key;
    o.issuer_cert = inter.cert;
    o.issuer_key = inter.key;
    o.names = names;
    o.names_count = 3;
    o.cn = "custom cn";
    o.not_before = 2524608000LL; /* 2050 */
    o.not_after = 4102444800LL;  /* 2100 */
    o.path_len = -1;
    o.crl_url = "http://127.0.0.1:9/crl";
    o.serial_hex = "00C0FFEE";
    CHECK(cm_cert_issue(&o, &pem, &serial, &res) == CM_OK);
    CHECK_STR(serial, "c0ffee");
    CHECK(pem && cm_x509_parse_chain(pem, strlen(pem), &f, &res) == CM_OK);
    CHECK(f.names.count == 3 && f.not_before == 2524608000LL && f.not_after == 4102444800LL);
    CHECK(f.crl_urls.count == 1 && f.ocsp_urls.count == 0);
    CHECK_STR(f.subject, "CN=custom cn");
    cm_cert_facts_free(&f);
    free(pem); pem = NULL;
    free(serial); serial = NULL;

    /* issuing from a CSR takes the CSR's names */
    {
        static const char *const csr_names[] = {"from-csr.example", "10.1.2.3"};
        unsigned char *der = NULL;
        size_t der_len = 0;
        CHECK(cm_csr_create(leaf.key, strlen(leaf.key), csr_names, 2, NULL, &der, &der_len, &res) ==
              CM_OK);
        memset(&o, 0, sizeof o);
        o.csr = (const char *)der;
        o.csr_len = der_len;
        o.issuer_cert = inter.cert;
        o.issuer_key = inter.key;
        o.not_before = 1700000000;
        o.not_after = 1710000000;
        o.path_len = -1;
        CHECK(cm_cert_issue(&o, &pem, &serial, &res) == CM_OK);
        CHECK(pem && cm_key_matches_cert(pem, strlen(pem), leaf.key, strlen(leaf.key), &res) ==
                         CM_OK);
        CHECK(pem && cm_x509_parse_chain(pem, strlen(pem), &f, &res) == CM_OK);
        CHECK(f.names.count == 2 && strcmp(f.names.items[1], "10.1.2.3") == 0);
        cm_cert_facts_free(&f);
        free(pem); pem = NULL;
        free(serial); serial = NULL;
        der[der_len - 5] ^= 0x01; /* in the signature: tampered */
        CHECK(cm_cert_issue(&o, &pem, &serial, &res) == CM_ERR);
        CHECK_STR(res.code, "verify");
        free(der);
    }

    /* refusals */
    memset(&o, 0, sizeof o);
    o.subject_key = leaf.key;
    o.issuer_cert = inter.cert;
    o.issuer_key = root.key; /* not the intermediate's */
    o.names = names;
    o.names_count = 1;
    o.not_before = 1;
    o.not_after = 2;
    o.path_len = -1;
    CHECK(cm_cert_issue(&o, &pem, &serial, &res) == CM_ERR && pem == NULL);
    CHECK_STR(res.code, "mismatch");
    o.issuer_key = inter.key;
    o.serial_hex = "xyz";
    CHECK(cm_cert_issue(&o, &pem, &serial, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    o.serial_hex = "0";
    CHECK(cm_cert_issue(&o, &pem, &serial, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    o.serial_hex = NULL;
    o.not_after = 1;
    CHECK(cm_cert_issue(&o, &pem, &serial, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    o.not_after = 2;
    o.names_count = 0;
    CHECK(cm_cert_issue(&o, &pem, &serial, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    o.names_count = 1;
    o.issuer_cert = NULL; /* self-signed, but the subject key is not the issuer key */
    CHECK(cm_cert_issue(&o, &pem, &serial, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");

    ca_free(&root);
    ca_free(&inter);
    ca_free(&leaf);
    ca_free(&sub);
    ca_free(&subleaf);
}

static int build_ocsp(const struct ca *issuer, const struct ca *responder, const char *cert,
                      enum cm_ocsp_cert_status st, unsigned char **der, size_t *len)
{
    struct cm_ocsp_build_opts o;
    struct cm_result res;
    int rc;
    memset(&o, 0, sizeof o);
    o.issuer_cert = issuer->cert;
    o.issuer_cert_len = strlen(issuer->cert);
    o.issuer_key = issuer->key;
    o.issuer_key_len = strlen(issuer->key);
    if (responder) {
        o.responder_cert = responder->cert;
        o.responder_cert_len = strlen(responder->cert);
        o.responder_key = responder->key;
        o.responder_key_len = strlen(responder->key);
    }
    o.cert = cert;
    o.cert_len = strlen(cert);
    o.status = st;
    o.this_update = 1700000000;
    o.next_update = 1700000000 + 7 * 86400;
    o.revoked_at = st == CM_OCSP_REVOKED ? 1699990000 : 0;
    o.reason = st == CM_OCSP_REVOKED ? 1 : -1;
    rc = cm_ocsp_response_build(&o, der, len, &res);
    if (rc != CM_OK) fprintf(stderr, "build_ocsp: %s (%s)\n", res.message, res.code);
    return rc;
}

static int parse_ocsp(const unsigned char *der, size_t len, const struct ca *cert,
                      const struct ca *issuer, struct cm_ocsp_info *info, struct cm_result *res)
{
    return cm_ocsp_response_parse(der, len, cert->cert, strlen(cert->cert), issuer->cert,
                                  strlen(issuer->cert), 0, 0, info, res);
}

static void test_ocsp(void)
{
    struct ca root, inter, leaf, leaf2, other, responder, rogue;
    struct cm_ocsp_info info;
    struct cm_result res;
    unsigned char *der = NULL, *buf = NULL;
    size_t len = 0;
    int st, n;
    OCSP_RESPONSE *later;

    CHECK(issue(&root, NULL, "p256", "ocsp root", 1, -1, 0) == CM_OK);
    CHECK(issue(&inter, &root, "p256", "ocsp intermediate", 1, 0, 0) == CM_OK);
    CHECK(issue(&leaf, &inter, "p256", "ocsp.example", 0, -1, 0) == CM_OK);
    CHECK(issue(&leaf2, &inter, "p256", "other.example", 0, -1, 0) == CM_OK);
    CHECK(issue(&other, NULL, "p256", "another CA", 1, -1, 0) == CM_OK);
    CHECK(issue(&responder, &inter, "p256", "responder.example", 0, -1, 1) == CM_OK);
    CHECK(issue(&rogue, &inter, "p256", "not-a-responder.example", 0, -1, 0) == CM_OK);

    for (st = CM_OCSP_GOOD; st <= CM_OCSP_UNKNOWN; st++) {
        CHECK(build_ocsp(&inter, NULL, leaf.cert, (enum cm_ocsp_cert_status)st, &der, &len) ==
              CM_OK);
        CHECK(parse_ocsp(der, len, &leaf, &inter, &info, &res) == CM_OK);
        CHECK(info.status == (enum cm_ocsp_cert_status)st);
        CHECK(info.this_update == 1700000000 && info.next_update == 1700000000 + 7 * 86400);
        CHECK(info.produced_at == 1700000000);
        if (st == CM_OCSP_REVOKED) CHECK(info.revoked_at == 1699990000 && info.reason == 1);
        else CHECK(info.revoked_at == 0 && info.reason == -1);
        free(der); der = NULL;
    }

    /* a root signing for its own leaf: no intermediate involved */
    CHECK(build_ocsp(&root, NULL, inter.cert, CM_OCSP_GOOD, &der, &len) == CM_OK);
    CHECK(parse_ocsp(der, len, &inter, &root, &info, &res) == CM_OK && info.status == CM_OCSP_GOOD);
    free(der); der = NULL;

    /* delegated responder with the OCSPSigning EKU: accepted */
    CHECK(build_ocsp(&inter, &responder, leaf.cert, CM_OCSP_REVOKED, &der, &len) == CM_OK);
    CHECK(parse_ocsp(der, len, &leaf, &inter, &info, &res) == CM_OK);
    CHECK(info.status == CM_OCSP_REVOKED);
    free(der); der = NULL;
    /* a certificate of the same issuer without that EKU: refused */
    CHECK(build_ocsp(&inter, &rogue, leaf.cert, CM_OCSP_GOOD, &der, &len) == CM_OK);
    CHECK(parse_ocsp(der, len, &leaf, &inter, &info, &res) == CM_ERR);
    CHECK_STR(res.code, "verify");
    free(der); der = NULL;

    /* signed by another key (another CA's), for our certificate */
    {
        struct cm_ocsp_build_opts o;
        memset(&o, 0, sizeof o);
        o.issuer_cert = inter.cert;
        o.issuer_cert_len = strlen(inter.cert);
        o.responder_cert = other.cert; /* ships its own certificate */
        o.responder_cert_len = strlen(other.cert);
        o.responder_key = other.key;
        o.responder_key_len = strlen(other.key);
        o.cert = leaf.cert;
        o.cert_len = strlen(leaf.cert);
        o.this_update = 1700000000;
        o.reason = -1;
        CHECK(cm_ocsp_response_build(&o, &der, &len, &res) == CM_OK);
        CHECK(parse_ocsp(der, len, &leaf, &inter, &info, &res) == CM_ERR);
        CHECK_STR(res.code, "verify");
        free(der); der = NULL;
    }

    /* a valid response, but about another certificate */
    CHECK(build_ocsp(&inter, NULL, leaf2.cert, CM_OCSP_GOOD, &der, &len) == CM_OK);
    CHECK(parse_ocsp(der, len, &leaf, &inter, &info, &res) == CM_ERR);
    CHECK_STR(res.code, "mismatch");
    /* checked against the wrong issuer */
    CHECK(parse_ocsp(der, len, &leaf2, &other, &info, &res) == CM_ERR);
    CHECK_STR(res.code, "verify");
    /* a flipped bit in the signature */
    der[len - 3] ^= 0x01;
    CHECK(parse_ocsp(der, len, &leaf2, &inter, &info, &res) == CM_ERR);
    CHECK_STR(res.code, "verify");
    /* garbage, truncation */
    CHECK(parse_ocsp(der, len / 2, &leaf2, &inter, &info, &res) == CM_ERR);
    CHECK_STR(res.code, "parse");
    CHECK(parse_ocsp((const unsigned char *)"hello", 5, &leaf2, &inter, &info, &res) == CM_ERR);
    CHECK_STR(res.code, "parse");
    free(der); der = NULL;

    /* the responder answered, but tryLater */
    later = OCSP_response_create(OCSP_RESPONSE_STATUS_TRYLATER, NULL);
    n = later ? i2d_OCSP_RESPONSE(later, &buf) : -1;
    CHECK(n > 0);
    if (n > 0) {
        CHECK(parse_ocsp(buf, (size_t)n, &leaf, &inter, &info, &res) == CM_ERR);
        CHECK_STR(res.code, "ocsp:tryLater");
    }
    OPENSSL_free(buf);
    OCSP_RESPONSE_free(later);
    CHECK(ERR_peek_error() == 0);

    ca_free(&root);
    ca_free(&inter);
    ca_free(&leaf);
    ca_free(&leaf2);
    ca_free(&other);
    ca_free(&responder);
    ca_free(&rogue);
}

int main(void)
{
    test_good_chain();
    test_cn_fallback();
    test_broken_input();
    test_mutations();
    test_chain_pem();
    test_chain_pem_fnv();
    test_keys();
    test_csr();
    test_issue_chain();
    test_ocsp();
    bench_parse();
    return CHECK_DONE();
}
