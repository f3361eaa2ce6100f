/* fuzz_x509_fastpath.c - the DER fast path (core/x509_der.c) against the
 * OpenSSL path, input by input, as DER and as PEM.
 *
 * Each input is parsed three ways (x509_der.h): OpenSSL only, the fast path
 * only, and the way the product does it (fast path, OpenSSL when it
 * declines).  The properties:
 *  - where the fast path accepts, OpenSSL accepts too, with the same facts
 *    in every field (it never accepts what OpenSSL rejects);
 *  - where the fast path fails for another reason than declining (PEM
 *    framing, trailing data, too many certificates), OpenSSL fails the same;
 *  - the product's result equals OpenSSL's: the same facts, or the same
 *    error code and message. */
#include <stdio.h>
#include <string.h>

#include "fuzz.h"
#include "x509.h"
#include "x509_der.h"

static void dump_list(const char *what, const struct cm_strlist *l)
{
    size_t i;
    fprintf(stderr, "  %s (%zu):", what, l->count);
    for (i = 0; i < l->count; i++) fprintf(stderr, " [%s]", l->items[i]);
    fprintf(stderr, "\n");
}

static void dump(const char *who, const struct cm_cert_facts *f)
{
    fprintf(stderr, "%s: serial %s\n  issuer [%s]\n  subject [%s]\n", who,
            f->serial_hex ? f->serial_hex : "(null)", f->issuer ? f->issuer : "(null)",
            f->subject ? f->subject : "(null)");
    fprintf(stderr, "  not_before %lld not_after %lld is_ca %d der %zu chain %zu/%zu\n",
            (long long)f->not_before, (long long)f->not_after, f->is_ca, f->der_len,
            f->chain_der_len, f->chain_count);
    dump_list("names", &f->names);
    dump_list("ocsp", &f->ocsp_urls);
    dump_list("crl", &f->crl_urls);
}

static int same_str(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

static int same_list(const struct cm_strlist *a, const struct cm_strlist *b)
{
    size_t i;
    if (a->count != b->count) return 0;
    for (i = 0; i < a->count; i++)
        if (!same_str(a->items[i], b->items[i])) return 0;
    return 1;
}

static int same_bytes(const unsigned char *a, size_t an, const unsigned char *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

static int same_facts(const struct cm_cert_facts *a, const struct cm_cert_facts *b)
{
    return memcmp(a->sha256, b->sha256, sizeof a->sha256) == 0 &&
           a->not_before == b->not_before && a->not_after == b->not_after &&
           same_list(&a->names, &b->names) && same_str(a->serial_hex, b->serial_hex) &&
           same_str(a->issuer, b->issuer) && same_str(a->subject, b->subject) &&
           same_list(&a->ocsp_urls, &b->ocsp_urls) && same_list(&a->crl_urls, &b->crl_urls) &&
           a->is_ca == b->is_ca && a->must_staple == b->must_staple &&
           same_bytes(a->der, a->der_len, b->der, b->der_len) &&
           same_bytes(a->chain_der, a->chain_der_len, b->chain_der, b->chain_der_len) &&
           a->chain_count == b->chain_count;
}

static void check_same_facts(const struct cm_cert_facts *got, const struct cm_cert_facts *want,
                             const char *who)
{
    if (same_facts(got, want)) return;
    dump(who, got);
    dump("openssl", want);
    FUZZ_CHECK(!"facts differ from the OpenSSL path");
}

static int parse(int der, enum cm_x509_decoder how, const uint8_t *data, size_t size,
                 struct cm_cert_facts *f, struct cm_result *res)
{
    cm_result_clear(res);
    if (der) return cm_x509_parse_der_chain_with(how, data, size, f, res);
    return cm_x509_parse_chain_with(how, (const char *)data, size, f, res);
}

static void run(int der, const uint8_t *data, size_t size)
{
    struct cm_cert_facts ssl, fast, aut;
    struct cm_result ssl_res, fast_res, auto_res;
    int ssl_rc, fast_rc, auto_rc;

    ssl_rc = parse(der, CM_X509_DECODE_OPENSSL, data, size, &ssl, &ssl_res);
    fast_rc = parse(der, CM_X509_DECODE_FAST_ONLY, data, size, &fast, &fast_res);
    auto_rc = parse(der, CM_X509_DECODE_AUTO, data, size, &aut, &auto_res);

    if (fast_rc == CM_OK) {
        if (ssl_rc != CM_OK) {
            dump("fast path", &fast);
            fprintf(stderr, "openssl: %s: %s\n", ssl_res.code, ssl_res.message);
            FUZZ_CHECK(!"the fast path accepted what OpenSSL rejects");
        }
        check_same_facts(&fast, &ssl, "fast path");
    } else if (strcmp(fast_res.code, "declined") != 0) {
        FUZZ_CHECK(ssl_rc != CM_OK);
        FUZZ_CHECK(strcmp(fast_res.code, ssl_res.code) == 0);
        FUZZ_CHECK(strcmp(fast_res.message, ssl_res.message) == 0);
    }

    FUZZ_CHECK(auto_rc == ssl_rc);
    if (auto_rc == CM_OK) {
        check_same_facts(&aut, &ssl, "auto");
    } else {
        FUZZ_CHECK(strcmp(auto_res.code, ssl_res.code) == 0);
        if (strcmp(auto_res.message, ssl_res.message) != 0) {
            fprintf(stderr, "auto: %s\nopenssl: %s\n", auto_res.message, ssl_res.message);
            FUZZ_CHECK(!"error messages differ");
        }
    }
    cm_cert_facts_free(&ssl);
    cm_cert_facts_free(&fast);
    cm_cert_facts_free(&aut);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run(1, data, size);
    run(0, data, size);
    return 0;
}
