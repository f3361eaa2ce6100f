/* test_ocsp_der.c - the OCSP DER path (core/ocsp_der.c): it takes the
 * issuer's own current responses about the certificate, with the facts
 * OpenSSL reads (status, times, reason), and declines everything the OpenSSL
 * path must judge (stale, not yet valid, delegated, another issuer's, not
 * about this certificate, malformed); on thousands of mutations of good and
 * revoked responses, whatever it takes with a good signature OpenSSL takes
 * with the same facts (tests/fuzz/ocsp_der_agree.h). */
#include <openssl/rand.h>

#include "../fuzz/ocsp_der_agree.h"
#include "check.h"

#define T 1767225600LL /* the fixtures' thisUpdate */
#define NOW (T + 3600)

static struct blob fixture(const char *name) { return check_fixture("ocsp", name); }

/* The DER path's verdict on a fixture, its facts in *dr when taken. */
static int takes(const struct ocsp_der_pair *p, const char *file, int64_t now, struct cm_ocsp_der_result *dr,
                 int *broken)
{
    struct blob b = fixture(file);
    int got = ocsp_der_agree(p, (unsigned char *)b.data, b.len, now, 300, broken);
    if (got && !cm_ocsp_der_check(&p->fi, (unsigned char *)b.data, b.len, p->serial, p->serial_len, now, 300, dr))
        got = -1;
    free(b.data);
    return got;
}

/* ocsp_good.der with certs a (and b) added, through ocsp_der_agree. */
static int with_certs(const struct ocsp_der_pair *p, X509 *a, X509 *b, int *broken)
{
    struct blob good = fixture("ocsp_good.der");
    OCSP_RESPONSE *resp = NULL, *again = NULL;
    OCSP_BASICRESP *bs = NULL;
    struct cm_result res;
    unsigned char *der = NULL;
    int n, got = -1;
    if (cm_ssl_ocsp_decode((unsigned char *)good.data, good.len, &resp, &bs, &res) == CM_OK &&
        OCSP_basic_add1_cert(bs, a) == 1 && (!b || OCSP_basic_add1_cert(bs, b) == 1) &&
        (again = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs)) &&
        (n = i2d_OCSP_RESPONSE(again, &der)) > 0)
        got = ocsp_der_agree(p, der, (size_t)n, NOW, 300, broken);
    OPENSSL_free(der);
    OCSP_RESPONSE_free(again);
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(resp);
    free(good.data);
    return got;
}

static void mutate(const struct ocsp_der_pair *p, const char *file, int64_t now, int rounds, int *taken, int *declined,
                   int *broken)
{
    struct blob good = fixture(file);
    unsigned char *m = malloc(good.len);
    int i;
    for (i = 0; i < rounds; i++) {
        unsigned char pick[8];
        RAND_bytes(pick, sizeof pick);
        check_mutate(m, (unsigned char *)good.data, good.len, pick);
        if (ocsp_der_agree(p, m, good.len, now, 300, broken)) (*taken)++;
        else (*declined)++;
        /* a cut anywhere is declined */
        CHECK(ocsp_der_agree(p, (unsigned char *)good.data, (size_t)(pick[3] % good.len), now, 300, broken) == 0);
    }
    free(m);
    free(good.data);
}

int main(void)
{
    struct blob ca = fixture("ca.pem"), leaf = fixture("leaf.pem"), other = fixture("leaf_must_staple.pem");
    struct ocsp_der_pair p, q;
    struct cm_result res;
    struct cm_ocsp_der_result dr;
    int broken = 0, taken = 0, declined = 0, n;
    static const char *const declined_files[] = {
        "ocsp_stale.der",          "ocsp_notyet.der",        "ocsp_delegated.der",       "ocsp_delegated_no_eku.der",
        "ocsp_other_issuer.der",   "ocsp_truncated.der",     "ocsp_trailing.der",        "ocsp_garbage.der",
        "ocsp_status_tryLater.der", "ocsp_status_unauthorized.der", "ocsp_status_internalError.der",
        "ocsp_wrong_key.der", /* the impostor's key hash in the CertID */
    };
    static const int reasons[] = {0, 1, 2, 3, 4, 5, 6, 8, 9, 10};
    size_t i;

    CHECK(ocsp_der_pair_init(&p, leaf.data, leaf.len, ca.data, ca.len, NOW) == 0);

    /* the issuer's own responses, taken with their facts */
    CHECK(takes(&p, "ocsp_good.der", NOW, &dr, &broken) == 1);
    CHECK(dr.info.status == CM_OCSP_GOOD && dr.info.this_update == T && dr.info.next_update == T + 7 * 86400);
    CHECK(dr.info.reason == -1 && dr.info.revoked_at == 0 && dr.info.produced_at > 0);
    CHECK(dr.dlen == 32 && dr.siglen > 64);
    CHECK(takes(&p, "ocsp_good_no_next.der", NOW, &dr, &broken) == 1);
    CHECK(dr.info.status == CM_OCSP_GOOD && dr.info.next_update == 0);
    CHECK(takes(&p, "ocsp_unknown.der", NOW, &dr, &broken) == 1);
    CHECK(dr.info.status == CM_OCSP_UNKNOWN);
    CHECK(takes(&p, "ocsp_revoked_none.der", NOW, &dr, &broken) == 1);
    CHECK(dr.info.status == CM_OCSP_REVOKED && dr.info.reason == -1 && dr.info.revoked_at == T - 86400);
    for (i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "ocsp_revoked_%d.der", reasons[i]);
        CHECK(takes(&p, name, NOW, &dr, &broken) == 1);
        CHECK(dr.info.status == CM_OCSP_REVOKED && dr.info.reason == reasons[i]);
    }
    /* made by `openssl ocsp` (responder ID by name, the issuer in certs): taken, times unchecked */
    CHECK(takes(&p, "openssl_revoked.der", 0, &dr, &broken) == 1);
    CHECK(dr.info.status == CM_OCSP_REVOKED && dr.info.reason == 1);
    /* stale and not-yet-valid ones are current at another time: the window is the check's */
    CHECK(takes(&p, "ocsp_stale.der", T - 2 * 86400, &dr, &broken) == 1);
    CHECK(takes(&p, "ocsp_notyet.der", T + 86400, &dr, &broken) == 1);
    /* a signature that does not verify: taken as bytes, refused by the signature check */
    {
        struct blob b = fixture("ocsp_good.der");
        b.data[b.len - 1] ^= 0x01; /* the last byte of s: still DER */
        CHECK(ocsp_der_agree(&p, (unsigned char *)b.data, b.len, NOW, 300, &broken) == 2);
        free(b.data);
    }

    for (i = 0; i < sizeof declined_files / sizeof declined_files[0]; i++) {
        n = takes(&p, declined_files[i], NOW, &dr, &broken);
        if (n != 0) fprintf(stderr, "%s: taken (%d)\n", declined_files[i], n);
        CHECK(n == 0);
    }

    /* certs (outside the signed data): the issuer itself is taken; an impostor
     * under its name, or another certificate beside it, declined (OpenSSL
     * could take either as the signer) */
    {
        struct blob imp = fixture("impostor.pem");
        X509 *impostor = cm_ssl_load_issuer(imp.data, imp.len, "impostor", &res);
        CHECK(impostor != NULL);
        CHECK(with_certs(&p, p.issuer, NULL, &broken) == 1);
        CHECK(with_certs(&p, p.issuer, p.issuer, &broken) == 1);
        CHECK(with_certs(&p, impostor, NULL, &broken) == 0);
        CHECK(with_certs(&p, p.issuer, impostor, &broken) == 0);
        X509_free(impostor);
        free(imp.data);
    }

    /* another certificate of the same issuer: not about it, declined */
    CHECK(ocsp_der_pair_init(&q, other.data, other.len, ca.data, ca.len, NOW) == 0);
    CHECK(takes(&q, "ocsp_good.der", NOW, &dr, &broken) == 0);
    ocsp_der_pair_free(&q);

    mutate(&p, "ocsp_good.der", NOW, 3000, &taken, &declined, &broken);
    mutate(&p, "ocsp_revoked_1.der", NOW, 1500, &taken, &declined, &broken);
    mutate(&p, "openssl_revoked.der", 0, 1500, &taken, &declined, &broken);
    printf("mutations: %d taken (changed in unsigned bytes or refused by signature), %d declined\n", taken,
           declined);
    CHECK(declined > 2000);
    CHECK(!broken);

    ocsp_der_pair_free(&p);
    free(ca.data);
    free(leaf.data);
    free(other.data);
    return CHECK_DONE();
}
