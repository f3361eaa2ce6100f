/* test_localca.c - the local CA's CRLs (issuing and OCSP responses are
 * covered in test_x509.c). */
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "check.h"
#include "key.h"
#include "localca.h"

#define T0 1700000000

static X509 *pem_cert(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    return x;
}

static void test_crl(void)
{
    char *ca_key = NULL, *ca_pem = NULL, *other_key = NULL;
    unsigned char *der = NULL;
    const unsigned char *p;
    size_t der_len = 0;
    struct cm_result res;
    struct cm_issue_opts io;
    struct cm_crl_entry entries[2] = {{"0b", T0 - 100, 1}, {"0a", T0 - 200, -1}};
    struct cm_crl_build_opts co;
    X509_CRL *crl = NULL;
    X509 *ca = NULL;
    STACK_OF(X509_REVOKED) *revs;
    ASN1_ENUMERATED *reason;
    int crit = 0;

    CHECK(cm_key_generate("p256", &ca_key, &res) == CM_OK);
    CHECK(cm_key_generate("p256", &other_key, &res) == CM_OK);
    memset(&io, 0, sizeof io);
    io.issuer_key = ca_key;
    io.cn = "Test CRL CA";
    io.is_ca = 1;
    io.path_len = -1;
    io.not_before = T0 - 86400;
    io.not_after = T0 + 86400;
    CHECK(cm_cert_issue(&io, &ca_pem, NULL, &res) == CM_OK);
    if (!ca_pem) goto out;

    memset(&co, 0, sizeof co);
    co.issuer_cert = ca_pem;
    co.issuer_cert_len = strlen(ca_pem);
    co.issuer_key = ca_key;
    co.issuer_key_len = strlen(ca_key);
    co.entries = entries;
    co.entry_count = 2;
    co.this_update = T0;
    co.next_update = T0 + 3600;
    co.crl_number_hex = "2a";
    CHECK(cm_crl_build(&co, &der, &der_len, &res) == CM_OK);
    if (!der) goto out;
    p = der;
    CHECK((crl = d2i_X509_CRL(NULL, &p, (long)der_len)) != NULL && p == der + der_len);
    CHECK((ca = pem_cert(ca_pem)) != NULL);
    if (!crl || !ca) goto out;
    CHECK(X509_CRL_verify(crl, X509_get0_pubkey(ca)) == 1);
    CHECK(X509_CRL_get_version(crl) == 1);
    CHECK(X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca)) == 0);
    CHECK(ASN1_TIME_cmp_time_t(X509_CRL_get0_lastUpdate(crl), T0) == 0);
    CHECK(ASN1_TIME_cmp_time_t(X509_CRL_get0_nextUpdate(crl), T0 + 3600) == 0);
    revs = X509_CRL_get_REVOKED(crl);
    CHECK(sk_X509_REVOKED_num(revs) == 2);
    if (sk_X509_REVOKED_num(revs) == 2) {
        /* sorted by serial; the reasonCode only where given */
        CHECK(ASN1_INTEGER_get(X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(revs, 0))) == 10);
        CHECK(ASN1_INTEGER_get(X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(revs, 1))) == 11);
        reason = X509_REVOKED_get_ext_d2i(sk_X509_REVOKED_value(revs, 1), NID_crl_reason, &crit,
                                          NULL);
        CHECK(reason && ASN1_ENUMERATED_get(reason) == 1);
        ASN1_ENUMERATED_free(reason);
        CHECK(X509_REVOKED_get_ext_d2i(sk_X509_REVOKED_value(revs, 0), NID_crl_reason, &crit,
                                       NULL) == NULL);
    }
    free(der); der = NULL;

    /* refusals */
    co.issuer_key = other_key;
    co.issuer_key_len = strlen(other_key);
    CHECK(cm_crl_build(&co, &der, &der_len, &res) == CM_ERR && der == NULL);
    CHECK_STR(res.code, "mismatch");
    co.issuer_key = ca_key;
    co.issuer_key_len = strlen(ca_key);
    entries[0].reason = 7;
    CHECK(cm_crl_build(&co, &der, &der_len, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    entries[0].reason = 1;
    entries[1].serial_hex = "xyz";
    CHECK(cm_crl_build(&co, &der, &der_len, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    co.entry_count = 0;
    co.next_update = T0 - 1;
    CHECK(cm_crl_build(&co, &der, &der_len, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    co.next_update = 0;
    CHECK(cm_crl_build(&co, &der, &der_len, &res) == CM_OK); /* empty, no nextUpdate */
out:
    free(der); der = NULL;
    X509_CRL_free(crl); crl = NULL;
    X509_free(ca); ca = NULL;
    free(ca_key); ca_key = NULL;
    free(other_key); other_key = NULL;
    free(ca_pem); ca_pem = NULL;
}

int main(void)
{
    test_crl();
    return CHECK_DONE();
}
