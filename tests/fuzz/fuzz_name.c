/* fuzz_name.c - cm_name_normalize and cm_name_storage_key on untrusted
 * bytes (names come from config, Lua policies and on-demand TLS SNI).
 *
 * Properties (name.h): output is NUL-terminated within CM_NAME_BUF; a
 * normalised name normalises to itself with the same kind; the storage key is
 * the same for the input and its normal form, holds no '/' or NUL, and is
 * never "." or ".."; failures say "invalid" and leave out empty. */
#include <string.h>

#include "fuzz.h"
#include "name.h"

static void check_key(const char *key)
{
    size_t i, n = strlen(key);
    FUZZ_CHECK(n > 0 && n <= CM_NAME_KEY_MAX);
    FUZZ_CHECK(strcmp(key, ".") != 0 && strcmp(key, "..") != 0);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        FUZZ_CHECK(c > 0x20 && c < 0x7f && c != '/' && c != '\\' && c != ':');
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char norm[CM_NAME_BUF], again[CM_NAME_BUF], key[CM_NAME_BUF], key2[CM_NAME_BUF];
    enum cm_name_kind kind = CM_NAME_DNS, kind2 = CM_NAME_DNS;
    struct cm_result res;
    int rc, krc;

    cm_result_clear(&res);
    rc = cm_name_normalize((const char *)data, size, norm, &kind, &res);
    FUZZ_CHECK(memchr(norm, '\0', sizeof norm) != NULL);
    krc = cm_name_storage_key((const char *)data, size, key, &res);
    FUZZ_CHECK(memchr(key, '\0', sizeof key) != NULL);
    if (rc != CM_OK) {
        FUZZ_CHECK(rc == CM_ERR && norm[0] == '\0');
        FUZZ_CHECK(krc == CM_ERR && key[0] == '\0');
        FUZZ_CHECK(strcmp(res.code, "invalid") == 0);
        return 0;
    }
    FUZZ_CHECK(strlen(norm) > 0 && strlen(norm) <= CM_NAME_MAX + 2);
    /* Normalising is idempotent: one spelling per name. */
    FUZZ_CHECK(cm_name_normalize(norm, strlen(norm), again, &kind2, &res) == CM_OK);
    FUZZ_CHECK(strcmp(again, norm) == 0 && kind2 == kind);
    /* Every spelling of a name has the same key (or is refused the same). */
    if (krc == CM_OK) {
        check_key(key);
        FUZZ_CHECK(cm_name_storage_key(norm, strlen(norm), key2, &res) == CM_OK);
        FUZZ_CHECK(strcmp(key, key2) == 0);
    } else {
        FUZZ_CHECK(kind == CM_NAME_DNS && key[0] == '\0');
        FUZZ_CHECK(cm_name_storage_key(norm, strlen(norm), key2, &res) == CM_ERR);
    }
    return 0;
}
