/* ari.c - the RFC 9773 certificate identifier, read by OpenSSL. */
#include "ari.h"
#include "der.h"
#include "encoding.h"
#include "x509_ssl.h"

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

/* A serial's DER is at most 2 + 21 bytes for RFC 5280 serials; be generous
 * with nonconforming CAs but bounded. */
#define SERIAL_DER_MAX 64

int cm_ari_cert_id(const char *cert, size_t len, char *out, size_t out_size,
                   struct cm_result *res)
{
    X509 *x = NULL;
    const ASN1_OCTET_STRING *kid;
    const ASN1_INTEGER *serial;
    unsigned char der[SERIAL_DER_MAX], *dp = der;
    struct cm_der d;
    struct cm_der_elem e;
    int n, kid_len, ret = CM_ERR;
    size_t need;

    if (out_size) out[0] = '\0';
    if (!(x = cm_ssl_load_cert(cert, len, "certificate", res))) return CM_ERR;
    /* X509_get0_authority_key_id reads the cached extensions; a certificate
     * whose extensions do not decode has none to give. */
    kid = X509_get0_authority_key_id(x);
    ERR_clear_error();
    if (!kid || (kid_len = ASN1_STRING_length(kid)) <= 0) {
        ret = cm_fail(res, "noaki", "certificate has no authority key identifier "
                                    "(keyIdentifier), so it has no ARI certificate ID");
        goto out;
    }
    if (!(serial = X509_get0_serialNumber(x)) ||
        (n = i2d_ASN1_INTEGER(serial, NULL)) <= 0 || n > SERIAL_DER_MAX ||
        i2d_ASN1_INTEGER(serial, &dp) != n) {
        ret = cm_fail_ssl(res, "parse", "certificate: serial number unreadable or over %d bytes",
                          SERIAL_DER_MAX - 2);
        goto out;
    }
    d = cm_der_init(der, (size_t)n);
    if (cm_der_expect(&d, CM_DER_INTEGER, &e) != CM_OK || !cm_der_done(&d)) {
        ret = cm_fail(res, "parse", "certificate: serial number is not a DER INTEGER");
        goto out;
    }
    need = cm_base64_encoded_len((size_t)kid_len, 0) + 1 + cm_base64_encoded_len(e.len, 0) + 1;
    if (need > out_size) {
        ret = cm_fail(res, "toobig", "certificate: ARI ID of %zu characters does not fit in %zu",
                      need - 1, out_size);
        goto out;
    }
    n = (int)cm_base64url_encode(ASN1_STRING_get0_data(kid), (size_t)kid_len, out);
    out[n++] = '.';
    cm_base64url_encode(e.body, e.len, out + n);
    ret = CM_OK;
out:
    X509_free(x);
    return ret;
}
