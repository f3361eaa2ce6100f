/* test_ocsp_fast.c - the OCSP fast path (core/ocsp_fast.c) never accepts
 * what OCSP_basic_verify rejects: on the fixtures (the issuer's own
 * responses taken, a delegated responder's, an impostor's, another CA's
 * declined) and on thousands of mutations of a good response, each one the
 * fast path accepts is one OpenSSL accepts. */
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/rand.h>

#include "check.h"
#include "ocsp_fast.h"
#include "ocsp_ssl.h"
#include "x509_ssl.h"

#define T 1767225600LL /* the fixtures' thisUpdate */
#define NOW (T + 3600)

static struct blob fixture(const char *name) { return check_fixture("ocsp", name); }

/* OpenSSL's verdict on der (decoded), as cm_ssl_ocsp_check asks for it. */
static int openssl_says(OCSP_BASICRESP *bs, X509 *issuer, X509_STORE *store)
{
    STACK_OF(X509) *certs = sk_X509_new_null();
    int ok;
    sk_X509_push(certs, issuer);
    ok = OCSP_basic_verify(bs, certs, store, OCSP_NOEXPLICIT) == 1;
    sk_X509_free(certs);
    ERR_clear_error();
    return ok;
}

/* -1: not a decodable response; else the fast path's verdict (checked
 * against OpenSSL's: never 1 where OpenSSL says no). */
static int fast_says(const unsigned char *der, size_t len, const struct cm_ocsp_fast_issuer *fi, X509 *issuer,
                     X509_STORE *store, int *disagreed)
{
    OCSP_RESPONSE *resp = NULL;
    OCSP_BASICRESP *bs = NULL;
    struct cm_result res;
    int fast;
    if (cm_ssl_ocsp_decode(der, len, &resp, &bs, &res) != CM_OK) return -1;
    fast = cm_ocsp_fast_verify(fi, bs);
    if (fast && !openssl_says(bs, issuer, store)) *disagreed = 1;
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(resp);
    return fast;
}

int main(void)
{
    struct blob ca = fixture("ca.pem");
    struct cm_result res;
    X509 *issuer = cm_ssl_load_issuer(ca.data, ca.len, "issuer", &res);
    X509_STORE *store = cm_ssl_ocsp_trust(issuer, NOW, &res);
    struct cm_ocsp_fast_issuer fi;
    static const struct {
        const char *file;
        int fast;
    } cases[] = {
        {"ocsp_good.der", 1},          {"ocsp_good_no_next.der", 1}, {"ocsp_unknown.der", 1},
        {"ocsp_revoked_1.der", 1},     {"ocsp_stale.der", 1},        /* (times are the caller's) */
        {"ocsp_wrong_key.der", 0},     {"ocsp_other_issuer.der", 0}, {"ocsp_delegated.der", 0},
        {"ocsp_delegated_no_eku.der", 0},
    };
    size_t i;
    int disagreed = 0, accepted = 0, declined = 0, undecodable = 0;

    CHECK(issuer && store);
    cm_ocsp_fast_issuer_init(&fi, issuer, store);
    CHECK(fi.key != NULL); /* the fixture CA's key is P-256 */
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct blob b = fixture(cases[i].file);
        int got = fast_says((unsigned char *)b.data, b.len, &fi, issuer, store, &disagreed);
        if (got != cases[i].fast) fprintf(stderr, "%s: fast path says %d\n", cases[i].file, got);
        CHECK(got == cases[i].fast);
        free(b.data);
    }
    CHECK(!disagreed);

    /* mutations of a good response: one to three random bytes changed */
    {
        struct blob good = fixture("ocsp_good.der");
        unsigned char *m = malloc(good.len);
        for (i = 0; i < 4000; i++) {
            unsigned char pick[8];
            int got;
            RAND_bytes(pick, sizeof pick);
            check_mutate(m, (unsigned char *)good.data, good.len, pick);
            got = fast_says(m, good.len, &fi, issuer, store, &disagreed);
            if (got < 0) undecodable++;
            else if (got) accepted++;
            else declined++;
        }
        printf("mutations: %d accepted (a change to unsigned bytes), %d declined, %d undecodable\n", accepted,
               declined, undecodable);
        CHECK(declined > 1000);
        CHECK(!disagreed);
        free(m);
        free(good.data);
    }

    /* an issuer of another kind: nothing for the fast path */
    {
        struct cm_ocsp_fast_issuer none;
        struct blob b = fixture("ocsp_good.der");
        cm_ocsp_fast_issuer_init(&none, NULL, NULL);
        CHECK(none.key == NULL);
        CHECK(fast_says((unsigned char *)b.data, b.len, &none, issuer, store, &disagreed) == 0);
        cm_ocsp_fast_issuer_clear(&none);
        free(b.data);
    }
    /* an issuer OpenSSL would not take as the signer at that time (expired
     * in 2124): no fast path, so OpenSSL says why */
    {
        struct cm_ocsp_fast_issuer late;
        X509_STORE *later = cm_ssl_ocsp_trust(issuer, T + 200LL * 365 * 86400, &res);
        cm_ocsp_fast_issuer_init(&late, issuer, later);
        CHECK(later && late.key == NULL);
        cm_ocsp_fast_issuer_clear(&late);
        X509_STORE_free(later);
    }
    cm_ocsp_fast_issuer_clear(&fi);
    X509_STORE_free(store);
    X509_free(issuer);
    free(ca.data);
    return CHECK_DONE();
}
