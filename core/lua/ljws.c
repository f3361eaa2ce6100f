/* ljws.c - ACME's primitives for Lua (core/jws.h, core/ari.h):
 * core.jws_signer (signer:alg, :jwk, :thumbprint, :sign), core.jws_hmac,
 * core.jws_verify, core.ari_cert_id.  Text the core mallocs is parked in a
 * box (lx509.h) before anything is pushed, so a Lua error leaks nothing. */
#include "lcore.h"
#include "lx509.h"

#include "../ari.h"
#include "../jws.h"

#define SIGNER_MT "certmaint.jws.signer"

struct signer_ud {
    struct cm_jws_signer *s;
};

static struct cm_jws_signer *check_signer(lua_State *L)
{
    struct signer_ud *u = luaL_checkudata(L, 1, SIGNER_MT);
    if (!u->s) luaL_error(L, "jws signer: used after close");
    return u->s;
}

/* core.jws_signer(key_pem) -> signer | nil, err, code */
static int l_jws_signer(lua_State *L)
{
    size_t len;
    const char *pem = luaL_checklstring(L, 1, &len);
    struct signer_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    struct cm_result res;
    u->s = NULL;
    luaL_setmetatable(L, SIGNER_MT);
    if (cm_jws_signer_new(pem, len, &u->s, &res) != CM_OK) return cm_lua_fail(L, &res);
    return 1;
}

static int l_signer_gc(lua_State *L)
{
    struct signer_ud *u = luaL_checkudata(L, 1, SIGNER_MT);
    cm_jws_signer_free(u->s);
    u->s = NULL;
    return 0;
}

static int l_signer_alg(lua_State *L)
{
    lua_pushstring(L, cm_jws_signer_alg(check_signer(L)));
    return 1;
}

static int l_signer_jwk(lua_State *L)
{
    size_t len;
    const char *jwk = cm_jws_signer_jwk(check_signer(L), &len);
    lua_pushlstring(L, jwk, len);
    return 1;
}

static int l_signer_thumbprint(lua_State *L)
{
    lua_pushstring(L, cm_jws_signer_thumbprint(check_signer(L)));
    return 1;
}

static int l_signer_tostring(lua_State *L)
{
    struct signer_ud *u = luaL_checkudata(L, 1, SIGNER_MT);
    if (u->s) lua_pushfstring(L, "jws signer (%s)", cm_jws_signer_alg(u->s));
    else lua_pushliteral(L, "jws signer (closed)");
    return 1;
}

/* signer:sign(protected_json, payload) -> jws_json | nil, err, code */
static int l_signer_sign(lua_State *L)
{
    struct cm_jws_signer *s = check_signer(L);
    size_t plen, len, out_len;
    const char *prot = luaL_checklstring(L, 2, &plen);
    const char *payload = luaL_checklstring(L, 3, &len);
    struct cm_lua_x509_box *b = cm_lua_x509_box_new(L);
    struct cm_result res;
    if (cm_jws_sign(s, prot, plen, payload, len, &b->str[0], &out_len, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    lua_pushlstring(L, b->str[0], out_len);
    cm_lua_x509_box_release(b);
    return 1;
}

/* core.jws_hmac(mac_key_b64url, protected_json, payload) -> jws_json | nil, err, code */
static int l_jws_hmac(lua_State *L)
{
    size_t klen, plen, len, out_len;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *prot = luaL_checklstring(L, 2, &plen);
    const char *payload = luaL_checklstring(L, 3, &len);
    struct cm_lua_x509_box *b = cm_lua_x509_box_new(L);
    struct cm_result res;
    if (cm_jws_hmac_sign(key, klen, prot, plen, payload, len, &b->str[0], &out_len, &res) !=
        CM_OK)
        return cm_lua_fail(L, &res);
    lua_pushlstring(L, b->str[0], out_len);
    cm_lua_x509_box_release(b);
    return 1;
}

/* core.jws_verify(key_pem, jws_json) -> protected_json, payload | nil, err, code */
static int l_jws_verify(lua_State *L)
{
    size_t klen, len, plen = 0, ylen = 0;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *jws = luaL_checklstring(L, 2, &len);
    struct cm_lua_x509_box *b = cm_lua_x509_box_new(L);
    struct cm_result res;
    if (cm_jws_verify(key, klen, jws, len, &b->str[0], &plen, &b->str[1], &ylen, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    lua_pushlstring(L, b->str[0], plen);
    lua_pushlstring(L, b->str[1], ylen);
    cm_lua_x509_box_release(b);
    return 2;
}

/* core.ari_cert_id(cert_pem_or_der) -> id | nil, err, code */
static int l_ari_cert_id(lua_State *L)
{
    size_t len;
    const char *cert = luaL_checklstring(L, 1, &len);
    char id[CM_ARI_CERT_ID_MAX];
    struct cm_result res;
    if (cm_ari_cert_id(cert, len, id, sizeof id, &res) != CM_OK) return cm_lua_fail(L, &res);
    lua_pushstring(L, id);
    return 1;
}

int cm_lua_open_jws(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"alg", l_signer_alg},
        {"jwk", l_signer_jwk},
        {"thumbprint", l_signer_thumbprint},
        {"sign", l_signer_sign},
        {NULL, NULL},
    };
    static const luaL_Reg fns[] = {
        {"jws_signer", l_jws_signer},
        {"jws_hmac", l_jws_hmac},
        {"jws_verify", l_jws_verify},
        {"ari_cert_id", l_ari_cert_id},
        {NULL, NULL},
    };
    luaL_newmetatable(L, SIGNER_MT);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_signer_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_signer_gc);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, l_signer_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_setfuncs(L, fns, 0);
    return 0;
}
