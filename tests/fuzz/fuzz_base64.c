/* fuzz_base64.c - cm_base64_decode_into and cm_hex_decode on untrusted bytes
 * (PEM bodies from storage, JOSE fields from an ACME server).
 *
 * Properties (encoding.h): a decode never writes past out_cap and fails with
 * "invalid" or "toobig" only; whatever decodes (without CM_BASE64_SPACE)
 * re-encodes to exactly the input (one text per byte string), in all four
 * modes; a decode with whitespace skipping agrees with the decode of the
 * input stripped of whitespace; hex decodes round-trip case-insensitively. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "encoding.h"
#include "fuzz.h"

#define MAX_IN 4096

static void check_mode(const char *in, size_t len, unsigned flags)
{
    unsigned char out[MAX_IN];
    char again[2 * MAX_IN];
    size_t n = 0, cap = cm_base64_decoded_max(len);
    struct cm_result res;
    int rc;

    /* the capacity guard: a canary just past out_cap survives */
    if (cap > sizeof out - 1) cap = sizeof out - 1;
    out[cap] = 0xa5;
    rc = cm_base64_decode_into(in, len, flags, out, cap, &n, &res);
    FUZZ_CHECK(out[cap] == 0xa5);
    if (rc != CM_OK) {
        FUZZ_CHECK(rc == CM_ERR && n == 0);
        FUZZ_CHECK(strcmp(res.code, "invalid") == 0 || strcmp(res.code, "toobig") == 0);
        return;
    }
    FUZZ_CHECK(n <= cap);
    FUZZ_CHECK(cm_base64_encoded_size(n, flags) <= sizeof again - 1);
    FUZZ_CHECK(cm_base64_encode_into(out, n, flags, again) == len);
    FUZZ_CHECK(memcmp(again, in, len) == 0);
}

static void check_space(const char *in, size_t len)
{
    unsigned char a[MAX_IN], b[MAX_IN];
    char stripped[MAX_IN];
    size_t i, m = 0, na = 0, nb = 0;
    struct cm_result res;
    int ra, rb;
    for (i = 0; i < len; i++)
        if (in[i] != ' ' && in[i] != '\t' && in[i] != '\r' && in[i] != '\n') stripped[m++] = in[i];
    ra = cm_base64_decode_into(in, len, CM_BASE64_PAD | CM_BASE64_SPACE, a, sizeof a, &na, &res);
    rb = cm_base64_decode_into(stripped, m, CM_BASE64_PAD, b, sizeof b, &nb, &res);
    FUZZ_CHECK(ra == rb);
    if (ra == CM_OK) FUZZ_CHECK(na == nb && memcmp(a, b, na) == 0);
}

static void check_hex(const char *in, size_t len)
{
    unsigned char out[MAX_IN / 2];
    char again[MAX_IN + 1];
    size_t n = 0, i;
    struct cm_result res;
    if (cm_hex_decode(in, len, out, sizeof out, &n, &res) != CM_OK) {
        FUZZ_CHECK(n == 0);
        return;
    }
    FUZZ_CHECK(n == len / 2);
    cm_hex_encode(out, n, again);
    for (i = 0; i < len; i++) FUZZ_CHECK(tolower((unsigned char)in[i]) == again[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    if (size > MAX_IN) size = MAX_IN;
    check_mode(in, size, CM_BASE64_PAD);
    check_mode(in, size, 0);
    check_mode(in, size, CM_BASE64_URL);
    check_mode(in, size, CM_BASE64_URL | CM_BASE64_PAD);
    check_space(in, size);
    check_hex(in, size);
    return 0;
}
