/* fuzz_x509_chain.c - cm_x509_parse_chain (PEM) and cm_x509_parse_der_chain
 * (DER) on untrusted bytes: what storage and a CA hand the cache.
 *
 * Every input goes through both parsers.  Beyond "no crash, no leak" it
 * checks the contracts of x509.h: a failure leaves *out zeroed with a code
 * set; a success re-encodes with cm_x509_chain_pem, and that PEM parses to
 * the same leaf and chain; cm_x509_der_next splits chain_der exactly into
 * chain_count elements. */
#include <string.h>

#include "fuzz.h"
#include "x509.h"

static int is_zero(const void *p, size_t n)
{
    const unsigned char *b = p;
    size_t i;
    for (i = 0; i < n; i++)
        if (b[i]) return 0;
    return 1;
}

static void check_facts(const struct cm_cert_facts *f)
{
    struct cm_result res;
    struct cm_cert_facts again;
    size_t off = 0, elem, count = 0;
    char *pem = NULL;
    size_t pem_len = 0;

    FUZZ_CHECK(f->der && f->der_len > 0);
    FUZZ_CHECK(f->serial_hex && f->issuer && f->subject);
    FUZZ_CHECK((f->chain_der == NULL) == (f->chain_der_len == 0));
    while (off < f->chain_der_len) {
        FUZZ_CHECK(cm_x509_der_next(f->chain_der + off, f->chain_der_len - off, &elem, &res) ==
                   CM_OK);
        FUZZ_CHECK(elem > 0 && elem <= f->chain_der_len - off);
        off += elem;
        count++;
    }
    FUZZ_CHECK(count == f->chain_count);

    /* Round trip: what the cache writes back must read the same. */
    FUZZ_CHECK(cm_x509_chain_pem(f->der, f->der_len, f->chain_der, f->chain_der_len, &pem,
                                 &pem_len, &res) == CM_OK);
    FUZZ_CHECK(pem && strlen(pem) == pem_len);
    memset(&again, 0, sizeof again);
    FUZZ_CHECK(cm_x509_parse_chain(pem, pem_len, &again, &res) == CM_OK);
    FUZZ_CHECK(again.der_len == f->der_len && memcmp(again.der, f->der, f->der_len) == 0);
    FUZZ_CHECK(again.chain_der_len == f->chain_der_len);
    FUZZ_CHECK(f->chain_der_len == 0 ||
               memcmp(again.chain_der, f->chain_der, f->chain_der_len) == 0);
    FUZZ_CHECK(memcmp(again.sha256, f->sha256, sizeof f->sha256) == 0);
    cm_cert_facts_free(&again);
    free(pem); pem = NULL;
}

static void run(int der, const uint8_t *data, size_t size)
{
    struct cm_cert_facts facts;
    struct cm_result res;
    int rc;

    memset(&facts, 0xa5, sizeof facts); /* the parser must not rely on a zeroed *out */
    cm_result_clear(&res);
    if (der)
        rc = cm_x509_parse_der_chain(data, size, &facts, &res);
    else
        rc = cm_x509_parse_chain((const char *)data, size, &facts, &res);
    if (rc == CM_OK) {
        check_facts(&facts);
    } else {
        FUZZ_CHECK(rc == CM_ERR);
        FUZZ_CHECK(res.code[0] != '\0');
        FUZZ_CHECK(memchr(res.message, '\0', sizeof res.message) != NULL);
        FUZZ_CHECK(is_zero(&facts, sizeof facts));
    }
    cm_cert_facts_free(&facts);
    FUZZ_CHECK(is_zero(&facts, sizeof facts));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run(0, data, size);
    run(1, data, size);
    return 0;
}
