/* test_ocsp.c - core/ocsp.c against the fixtures of scripts/make-ocsp-fixtures.sh
 * (tests/fixtures/ocsp/README.md says what each file must give): requests
 * equal to openssl's, every status and reason, the time checks, wrong
 * signers, delegated responders, broken input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "key.h"
#include "localca.h"
#include "ocsp.h"
#include "x509.h"
#include "x509_der.h"

#define T 1767225600LL /* 2026-01-01T00:00:00Z, the fixtures' thisUpdate */
#define NOW (T + 3600)
#define DAY 86400LL

static struct blob fixture(const char *name) { return check_fixture("ocsp", name); }

static struct blob ca, leaf, other_leaf, impostor;

/* Parse fixture `name` about leaf under ca at now (skew 300); code "" for success. */
static int parse(const char *name, int64_t now, struct cm_ocsp_info *info, struct cm_result *res)
{
    struct blob r = fixture(name);
    int rc;
    cm_result_clear(res);
    memset(info, 0x5a, sizeof *info);
    rc = cm_ocsp_response_parse((const unsigned char *)r.data, r.len, leaf.data, leaf.len,
                                ca.data, ca.len, now, CM_OCSP_DEFAULT_SKEW, info, res);
    free(r.data);
    return rc;
}

static void expect_fail(const char *name, int64_t now, const char *code)
{
    struct cm_ocsp_info info, zero;
    struct cm_result res;
    memset(&zero, 0, sizeof zero);
    CHECK(parse(name, now, &info, &res) == CM_ERR);
    if (strcmp(res.code, code) != 0)
        fprintf(stderr, "%s: code %s (%s), expected %s\n", name, res.code, res.message, code);
    CHECK_STR(res.code, code);
    CHECK(res.message[0] != '\0');
    CHECK(memcmp(&info, &zero, sizeof info) == 0); /* never half an answer */
}

static void test_request(void)
{
    struct blob want = fixture("openssl_request.der");
    unsigned char *der = NULL;
    size_t len = 0;
    struct cm_result res;

    /* byte for byte what `openssl ocsp -no_nonce -reqout` sends: SHA-1 CertID, no nonce */
    CHECK(cm_ocsp_request_build(leaf.data, leaf.len, ca.data, ca.len, &der, &len, &res) == CM_OK);
    CHECK(der && len == want.len && memcmp(der, want.data, len) == 0);
    free(der); der = NULL;
    /* another leaf: another request */
    CHECK(cm_ocsp_request_build(other_leaf.data, other_leaf.len, ca.data, ca.len, &der, &len,
                                &res) == CM_OK);
    CHECK(der && !(len == want.len && memcmp(der, want.data, len) == 0));
    free(der); der = NULL;
    /* unreadable inputs */
    CHECK(cm_ocsp_request_build("junk", 4, ca.data, ca.len, &der, &len, &res) == CM_ERR);
    CHECK_STR(res.code, "parse");
    CHECK(der == NULL && len == 0);
    CHECK(cm_ocsp_request_build(leaf.data, leaf.len, "", 0, &der, &len, &res) == CM_ERR);
    CHECK_STR(res.code, "parse");
    CHECK(der == NULL);
    free(want.data);
}

static void test_statuses(void)
{
    static const int reasons[] = {0, 1, 2, 3, 4, 5, 6, 8, 9, 10};
    struct cm_ocsp_info info;
    struct cm_result res;
    char name[64];
    size_t i;

    CHECK(parse("ocsp_good.der", NOW, &info, &res) == CM_OK);
    CHECK(info.status == CM_OCSP_GOOD && info.this_update == T && info.next_update == T + 7 * DAY);
    CHECK(info.produced_at == T && info.revoked_at == 0 && info.reason == -1);
    CHECK(parse("ocsp_good_no_next.der", NOW, &info, &res) == CM_OK);
    CHECK(info.status == CM_OCSP_GOOD && info.next_update == 0);
    /* no nextUpdate: never stale, however late */
    CHECK(parse("ocsp_good_no_next.der", T + 1000 * DAY, &info, &res) == CM_OK);
    CHECK(parse("ocsp_unknown.der", NOW, &info, &res) == CM_OK);
    CHECK(info.status == CM_OCSP_UNKNOWN);
    CHECK(parse("ocsp_revoked_none.der", NOW, &info, &res) == CM_OK);
    CHECK(info.status == CM_OCSP_REVOKED && info.revoked_at == T - DAY && info.reason == -1);
    for (i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
        snprintf(name, sizeof name, "ocsp_revoked_%d.der", reasons[i]);
        CHECK(parse(name, NOW, &info, &res) == CM_OK);
        CHECK(info.status == CM_OCSP_REVOKED && info.revoked_at == T - DAY);
        CHECK(info.reason == reasons[i]);
        CHECK(cm_ocsp_reason_name(info.reason) != NULL);
    }
    CHECK_STR(cm_ocsp_reason_name(1), "keyCompromise");
    CHECK(cm_ocsp_reason_parse("aACompromise") == 10 && cm_ocsp_reason_name(7) == NULL);
    /* openssl's responder, read the same way */
    CHECK(parse("openssl_revoked.der", 0, &info, &res) == CM_OK);
    CHECK(info.status == CM_OCSP_REVOKED && info.reason == 1);
    CHECK(info.revoked_at == 1767139200); /* 2025-12-31T00:00:00Z */
    CHECK(parse("openssl_revoked.der", info.this_update + 60, &info, &res) == CM_OK);
}

static void test_times(void)
{
    struct cm_ocsp_info info;
    struct cm_result res;

    expect_fail("ocsp_stale.der", NOW, "stale");
    expect_fail("ocsp_notyet.der", NOW, "notyet");
    /* time 0: no time check at all (the caller decides) */
    CHECK(parse("ocsp_stale.der", 0, &info, &res) == CM_OK);
    CHECK(info.next_update == T - DAY);
    CHECK(parse("ocsp_notyet.der", 0, &info, &res) == CM_OK);
    /* the boundaries: nextUpdate at now is stale, one second before it is not */
    expect_fail("ocsp_good.der", T + 7 * DAY, "stale");
    CHECK(parse("ocsp_good.der", T + 7 * DAY - 1, &info, &res) == CM_OK);
    /* thisUpdate up to skew ahead of now passes, one second more does not */
    CHECK(parse("ocsp_good.der", T - CM_OCSP_DEFAULT_SKEW, &info, &res) == CM_OK);
    expect_fail("ocsp_good.der", T - CM_OCSP_DEFAULT_SKEW - 1, "notyet");
    {
        struct blob r = fixture("ocsp_good.der");
        CHECK(cm_ocsp_response_parse((const unsigned char *)r.data, r.len, leaf.data, leaf.len,
                                     ca.data, ca.len, T - 1, 0, &info, &res) == CM_ERR);
        CHECK_STR(res.code, "notyet");
        CHECK(cm_ocsp_response_parse((const unsigned char *)r.data, r.len, leaf.data, leaf.len,
                                     ca.data, ca.len, T - 1, 1, &info, &res) == CM_OK);
        free(r.data);
    }
}

static void test_signers(void)
{
    struct cm_ocsp_info info;
    struct cm_result res;
    struct blob r;

    expect_fail("ocsp_wrong_key.der", NOW, "verify");
    expect_fail("ocsp_other_issuer.der", NOW, "verify");
    expect_fail("ocsp_delegated_no_eku.der", NOW, "verify");
    CHECK(parse("ocsp_delegated.der", NOW, &info, &res) == CM_OK);
    CHECK(info.status == CM_OCSP_GOOD);
    /* a response about leaf is not one about another certificate of the CA */
    r = fixture("ocsp_good.der");
    CHECK(cm_ocsp_response_parse((const unsigned char *)r.data, r.len, other_leaf.data,
                                 other_leaf.len, ca.data, ca.len, NOW, 300, &info, &res) == CM_ERR);
    CHECK_STR(res.code, "mismatch");
    /* against the impostor (same name, its own key) the CA's response does not verify */
    CHECK(cm_ocsp_response_parse((const unsigned char *)r.data, r.len, leaf.data, leaf.len,
                                 impostor.data, impostor.len, NOW, 300, &info, &res) == CM_ERR);
    CHECK_STR(res.code, "verify");
    free(r.data);
}

static void test_broken(void)
{
    static const char *const statuses[] = {"malformedRequest", "internalError", "tryLater",
                                           "sigRequired", "unauthorized"};
    struct cm_ocsp_info info;
    struct cm_result res;
    char name[64], code[64];
    size_t i;
    struct blob r;

    expect_fail("ocsp_truncated.der", NOW, "parse");
    expect_fail("ocsp_trailing.der", NOW, "parse");
    expect_fail("ocsp_garbage.der", NOW, "parse");
    for (i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        snprintf(name, sizeof name, "ocsp_status_%s.der", statuses[i]);
        snprintf(code, sizeof code, "ocsp:%s", statuses[i]);
        expect_fail(name, NOW, code);
        r = fixture(name);
        CHECK(cm_ocsp_response_peek((const unsigned char *)r.data, r.len, &info, &res) == CM_ERR);
        CHECK_STR(res.code, code);
        free(r.data);
    }
    /* peek reads a stale response and one from the wrong key: it verifies nothing */
    r = fixture("ocsp_stale.der");
    CHECK(cm_ocsp_response_peek((const unsigned char *)r.data, r.len, &info, &res) == CM_OK);
    CHECK(info.next_update == T - DAY);
    free(r.data);
    r = fixture("ocsp_wrong_key.der");
    CHECK(cm_ocsp_response_peek((const unsigned char *)r.data, r.len, &info, &res) == CM_OK);
    CHECK(info.status == CM_OCSP_GOOD);
    free(r.data);
    r = fixture("ocsp_truncated.der");
    CHECK(cm_ocsp_response_peek((const unsigned char *)r.data, r.len, &info, &res) == CM_ERR);
    CHECK_STR(res.code, "parse");
    free(r.data);
}

/* must_staple: the same on the DER fast path and on OpenSSL's decoder. */
static void test_must_staple(void)
{
    static const struct {
        const char *name;
        int must_staple;
    } cases[] = {
        {"leaf_must_staple.pem", 1},         {"leaf.pem", 0}, {"ca.pem", 0},
        {"tlsfeature_status_request.pem", 1}, {"tlsfeature_v2.pem", 0},
        {"tlsfeature_both.pem", 1},
    };
    static const enum cm_x509_decoder hows[] = {CM_X509_DECODE_OPENSSL, CM_X509_DECODE_FAST_ONLY,
                                                CM_X509_DECODE_AUTO};
    struct cm_cert_facts f;
    struct cm_result res;
    size_t i, j;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct blob b = fixture(cases[i].name);
        for (j = 0; j < sizeof hows / sizeof hows[0]; j++) {
            memset(&f, 0, sizeof f);
            CHECK(cm_x509_parse_chain_with(hows[j], b.data, b.len, &f, &res) == CM_OK);
            if (f.must_staple != cases[i].must_staple)
                fprintf(stderr, "%s: decoder %d: must_staple %d\n", cases[i].name, (int)hows[j],
                        f.must_staple);
            CHECK(f.must_staple == cases[i].must_staple);
            cm_cert_facts_free(&f);
        }
        free(b.data);
    }
}

/* More issuers than the issuer cache holds (32), used round-robin twice and
 * interleaved with the fixtures' CA: every check still runs against the
 * right issuer, and an issuer's response never verifies under another. */
static void test_many_issuers(void)
{
    enum { ISSUERS = 40 };
    static const char *const name[] = {"cache.example"};
    char *ca_pem[ISSUERS] = {NULL}, *ca_key[ISSUERS] = {NULL}, *leaf_pem[ISSUERS] = {NULL};
    unsigned char *resp[ISSUERS] = {NULL};
    size_t resp_len[ISSUERS] = {0};
    struct cm_issue_opts o;
    struct cm_ocsp_build_opts b;
    struct cm_ocsp_info info;
    struct cm_result res;
    char *serial = NULL, cn[32];
    int i, round, ok = 0, refused = 0;

    for (i = 0; i < ISSUERS; i++) {
        snprintf(cn, sizeof cn, "cache CA %d", i);
        CHECK(cm_key_generate("p256", &ca_key[i], &res) == CM_OK);
        memset(&o, 0, sizeof o);
        o.issuer_key = ca_key[i];
        o.cn = cn;
        o.is_ca = 1;
        o.path_len = -1;
        o.not_before = T - DAY;
        o.not_after = T + 100 * DAY;
        CHECK(cm_cert_issue(&o, &ca_pem[i], &serial, &res) == CM_OK);
        free(serial); serial = NULL;
        memset(&o, 0, sizeof o);
        o.subject_key = ca_key[i]; /* any key will do for the leaf */
        o.names = name;
        o.names_count = 1;
        o.path_len = -1;
        o.issuer_cert = ca_pem[i];
        o.issuer_key = ca_key[i];
        o.not_before = T - DAY;
        o.not_after = T + 10 * DAY;
        o.serial_hex = "1001"; /* the same serial under every CA: only the issuer tells them apart */
        CHECK(cm_cert_issue(&o, &leaf_pem[i], &serial, &res) == CM_OK);
        free(serial); serial = NULL;
        memset(&b, 0, sizeof b);
        b.issuer_cert = ca_pem[i];
        b.issuer_cert_len = strlen(ca_pem[i]);
        b.issuer_key = ca_key[i];
        b.issuer_key_len = strlen(ca_key[i]);
        b.cert = leaf_pem[i];
        b.cert_len = strlen(leaf_pem[i]);
        b.status = i % 2 ? CM_OCSP_REVOKED : CM_OCSP_GOOD;
        b.this_update = T;
        b.next_update = T + DAY;
        b.reason = i % 2 ? 1 : -1;
        CHECK(cm_ocsp_response_build(&b, &resp[i], &resp_len[i], &res) == CM_OK);
    }
    for (round = 0; round < 2; round++) {
        for (i = 0; i < ISSUERS; i++) {
            int other = (i + 1) % ISSUERS;
            struct cm_ocsp_info fixture_info;
            if (cm_ocsp_response_parse(resp[i], resp_len[i], leaf_pem[i], strlen(leaf_pem[i]),
                                       ca_pem[i], strlen(ca_pem[i]), NOW, 300, &info,
                                       &res) == CM_OK &&
                info.status == (i % 2 ? CM_OCSP_REVOKED : CM_OCSP_GOOD))
                ok++;
            if (cm_ocsp_response_parse(resp[i], resp_len[i], leaf_pem[i], strlen(leaf_pem[i]),
                                       ca_pem[other], strlen(ca_pem[other]), NOW, 300, &info,
                                       &res) == CM_ERR)
                refused++;
            CHECK(parse("ocsp_good.der", NOW, &fixture_info, &res) == CM_OK);
        }
    }
    CHECK(ok == 2 * ISSUERS);
    CHECK(refused == 2 * ISSUERS);
    for (i = 0; i < ISSUERS; i++) {
        free(ca_pem[i]);
        free(ca_key[i]);
        free(leaf_pem[i]);
        free(resp[i]);
    }
}

int main(void)
{
    ca = fixture("ca.pem");
    leaf = fixture("leaf.pem");
    other_leaf = fixture("leaf_crl_only.pem");
    impostor = fixture("impostor.pem");
    test_request();
    test_statuses();
    test_times();
    test_signers();
    test_broken();
    test_must_staple();
    test_many_issuers();
    free(ca.data);
    free(leaf.data);
    free(other_leaf.data);
    free(impostor.data);
    return CHECK_DONE();
}
