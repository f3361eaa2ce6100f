/* fuzz_ocsp.c - OCSP responses are fetched from responders and loaded from
 * storage: untrusted bytes.  Each input goes through cm_ocsp_response_peek
 * and through cm_ocsp_response_parse against a fixed certificate and issuer
 * (tests/fixtures/x509/ok_leaf.pem under ok_intermediate.pem), at time 0
 * (no responder time check) and at a fixed time; and against the pair the
 * OCSP fixtures are about (tests/fixtures/ocsp/leaf.pem under ca.pem, whose
 * responses seed the corpus as fixture_*) at their T + 1 h, with the time
 * checks: a success there is current.  Against that pair also the DER path
 * (core/ocsp_der.c), at that time and with no time checks: where it takes a
 * response whose signature is good, OpenSSL takes it with the same facts and
 * hashes the same signed bytes (ocsp_der_agree.h).
 *
 * Properties (ocsp.h): a result is an enum value, a CRLReason or -1, and
 * revoked_at is 0 unless revoked; a failure has a code and zeroes *out. */
#include <string.h>

#include "fuzz.h"
#include "ocsp.h"
#include "ocsp_der_agree.h"

#ifndef CM_FUZZ_FIXTURES
#error "CM_FUZZ_FIXTURES must name tests/fixtures/x509"
#endif

struct blob {
    char *data;
    size_t len;
};

/* Read a fixture once; the harness keeps it for the life of the process. */
static void load(const char *name, struct blob *b)
{
    char path[1024];
    FILE *f = NULL;
    long n;

    if (b->data) return;
    snprintf(path, sizeof path, "%s/%s", CM_FUZZ_FIXTURES, name);
    if (!(f = fopen(path, "rb")) || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) <= 0 ||
        fseek(f, 0, SEEK_SET) != 0 || !(b->data = malloc((size_t)n)) ||
        fread(b->data, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "fuzz_ocsp: cannot read %s\n", path);
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

static void check_info(int rc, const struct cm_ocsp_info *info, const struct cm_result *res)
{
    if (rc != CM_OK) {
        FUZZ_CHECK(rc == CM_ERR && res->code[0] != '\0');
        FUZZ_CHECK(memchr(res->message, '\0', sizeof res->message) != NULL);
        FUZZ_CHECK(is_zero(info, sizeof *info));
        return;
    }
    FUZZ_CHECK(info->status == CM_OCSP_GOOD || info->status == CM_OCSP_REVOKED ||
               info->status == CM_OCSP_UNKNOWN);
    FUZZ_CHECK(cm_ocsp_status_name(info->status) != NULL);
    FUZZ_CHECK(info->reason >= -1 && info->reason <= 10);
    FUZZ_CHECK(info->status == CM_OCSP_REVOKED || (info->revoked_at == 0 && info->reason == -1));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct blob leaf, issuer, ocsp_leaf, ocsp_ca;
    struct cm_ocsp_info info;
    struct cm_result res;
    int rc;

    load("ok_leaf.pem", &leaf);
    load("ok_intermediate.pem", &issuer);
    load("../ocsp/leaf.pem", &ocsp_leaf);
    load("../ocsp/ca.pem", &ocsp_ca);

    memset(&info, 0x5a, sizeof info);
    cm_result_clear(&res);
    rc = cm_ocsp_response_peek(data, size, &info, &res);
    check_info(rc, &info, &res);

    memset(&info, 0x5a, sizeof info);
    cm_result_clear(&res);
    rc = cm_ocsp_response_parse(data, size, leaf.data, leaf.len, issuer.data, issuer.len, 0,
                                0, &info, &res);
    check_info(rc, &info, &res);

    memset(&info, 0x5a, sizeof info);
    cm_result_clear(&res);
    rc = cm_ocsp_response_parse(data, size, leaf.data, leaf.len, issuer.data, issuer.len,
                                1767225600 /* 2026-01-01 */, 300, &info, &res);
    check_info(rc, &info, &res);

    memset(&info, 0x5a, sizeof info);
    cm_result_clear(&res);
    rc = cm_ocsp_response_parse(data, size, ocsp_leaf.data, ocsp_leaf.len, ocsp_ca.data,
                                ocsp_ca.len, 1767229200, 300, &info, &res);
    check_info(rc, &info, &res);
    if (rc == CM_OK)
        FUZZ_CHECK(info.this_update <= 1767229200 + 300 &&
                   (info.next_update == 0 || info.next_update > 1767229200));

    {
        static struct ocsp_der_pair pair;
        static int ready;
        int broken = 0;
        if (!ready) {
            FUZZ_CHECK(ocsp_der_pair_init(&pair, ocsp_leaf.data, ocsp_leaf.len, ocsp_ca.data, ocsp_ca.len,
                                          1767229200) == 0);
            ready = 1;
        }
        (void)ocsp_der_agree(&pair, data, size, 1767229200, 300, &broken);
        (void)ocsp_der_agree(&pair, data, size, 0, 300, &broken);
        FUZZ_CHECK(!broken);
    }
    return 0;
}
