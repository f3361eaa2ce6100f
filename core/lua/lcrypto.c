/* lcrypto.c - core.sha256, core.sha256_hex, core.digest, core.random_bytes,
 * core.base64url_encode/decode, core.base64_encode/decode. */
#include "lcore.h"

#include "../crypto.h"
#include "../encoding.h"

/* Upper bound for one random_bytes call: keys and nonces need a few dozen
 * bytes; a huge n is a bug, not a request. */
#define RANDOM_MAX (1024 * 1024)

static int l_sha256(lua_State *L)
{
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    unsigned char md[CM_SHA256_LEN];
    struct cm_result res;
    if (cm_crypto_sha256(data, len, md, &res) != CM_OK) return cm_lua_fail(L, &res);
    lua_pushlstring(L, (const char *)md, sizeof md);
    return 1;
}

static int l_sha256_hex(lua_State *L)
{
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    unsigned char md[CM_SHA256_LEN];
    char hex[2 * CM_SHA256_LEN + 1];
    struct cm_result res;
    if (cm_crypto_sha256(data, len, md, &res) != CM_OK) return cm_lua_fail(L, &res);
    cm_hex_encode(md, sizeof md, hex);
    lua_pushstring(L, hex);
    return 1;
}

/* core.digest(algo, data [, encoding]): algo "sha256"; encoding "raw"
 * (default), "hex" or "base64url" (a dns-01 TXT value).  Another algo or
 * encoding is the caller's bug: it raises. */
static int l_digest(lua_State *L)
{
    static const char *const algos[] = {"sha256", NULL};
    static const char *const encodings[] = {"raw", "hex", "base64url", NULL};
    size_t len;
    const char *data;
    int enc;
    unsigned char md[CM_SHA256_LEN];
    char text[2 * CM_SHA256_LEN + 1];
    struct cm_result res;
    luaL_checkoption(L, 1, NULL, algos);
    data = luaL_checklstring(L, 2, &len);
    enc = luaL_checkoption(L, 3, "raw", encodings);
    if (cm_crypto_sha256(data, len, md, &res) != CM_OK) return cm_lua_fail(L, &res);
    if (enc == 0) {
        lua_pushlstring(L, (const char *)md, sizeof md);
    } else if (enc == 1) {
        cm_hex_encode(md, sizeof md, text);
        lua_pushstring(L, text);
    } else {
        cm_base64url_encode(md, sizeof md, text);
        lua_pushstring(L, text);
    }
    return 1;
}

static int l_random_bytes(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_Buffer b;
    char *p;
    struct cm_result res;
    luaL_argcheck(L, n >= 0 && n <= RANDOM_MAX, 1, "must be between 0 and 1048576");
    /* The buffer is Lua memory, so nothing leaks if a later call raises. */
    p = luaL_buffinitsize(L, &b, (size_t)n);
    if (cm_crypto_random_bytes(p, (size_t)n, &res) != CM_OK) return cm_lua_fail(L, &res);
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

static int push_encoded(lua_State *L, int padded,
                        size_t (*enc)(const void *, size_t, char *))
{
    size_t len, out_len;
    const char *data = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    char *p;
    luaL_argcheck(L, len <= ((size_t)-1 / 4 * 3) - 4, 1, "too long");
    out_len = cm_base64_encoded_len(len, padded);
    p = luaL_buffinitsize(L, &b, out_len + 1);
    out_len = enc(data, len, p);
    luaL_pushresultsize(&b, out_len);
    return 1;
}

static int push_decoded(lua_State *L,
                        int (*dec)(const char *, size_t, unsigned char *, size_t *,
                                   struct cm_result *))
{
    size_t len, out_len = 0;
    const char *text = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    unsigned char *p;
    struct cm_result res;
    p = (unsigned char *)luaL_buffinitsize(L, &b, cm_base64_decoded_max(len));
    if (dec(text, len, p, &out_len, &res) != CM_OK) return cm_lua_fail(L, &res);
    luaL_pushresultsize(&b, out_len);
    return 1;
}

static int l_base64url_encode(lua_State *L) { return push_encoded(L, 0, cm_base64url_encode); }
static int l_base64_encode(lua_State *L) { return push_encoded(L, 1, cm_base64_encode); }
static int l_base64url_decode(lua_State *L) { return push_decoded(L, cm_base64url_decode); }
static int l_base64_decode(lua_State *L) { return push_decoded(L, cm_base64_decode); }

int cm_lua_open_crypto(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"sha256", l_sha256},
        {"sha256_hex", l_sha256_hex},
        {"digest", l_digest},
        {"random_bytes", l_random_bytes},
        {"base64url_encode", l_base64url_encode},
        {"base64url_decode", l_base64url_decode},
        {"base64_encode", l_base64_encode},
        {"base64_decode", l_base64_decode},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
    return 0;
}
