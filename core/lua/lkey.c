/* lkey.c - keys for Lua (the core's key.h): core.key_generate,
 * core.key_matches, core.key_public_pem.  Results the core mallocs are
 * parked in a box (lx509.h) first. */
#include "lcore.h"
#include "lx509.h"

#include "../key.h"

/* core.key_generate([type]) -> pem | nil, err, code */
static int l_key_generate(lua_State *L)
{
    const char *type = luaL_optstring(L, 1, "p256");
    struct cm_lua_x509_box *b = cm_lua_x509_box_new(L);
    struct cm_result res;
    if (cm_key_generate(type, &b->str[0], &res) != CM_OK) return cm_lua_fail(L, &res);
    lua_pushstring(L, b->str[0]);
    cm_lua_x509_box_release(b);
    return 1;
}

/* core.key_matches(cert, key_pem) -> true | nil, err, "mismatch"/"parse" */
static int l_key_matches(lua_State *L)
{
    size_t cl, kl;
    const char *cert = luaL_checklstring(L, 1, &cl);
    const char *key = luaL_checklstring(L, 2, &kl);
    struct cm_result res;
    if (cm_key_matches_cert(cert, cl, key, kl, &res) != CM_OK) return cm_lua_fail(L, &res);
    lua_pushboolean(L, 1);
    return 1;
}

/* core.key_public_pem(key_pem) -> pem | nil, err, code */
static int l_key_public_pem(lua_State *L)
{
    size_t kl;
    const char *key = luaL_checklstring(L, 1, &kl);
    struct cm_lua_x509_box *b = cm_lua_x509_box_new(L);
    struct cm_result res;
    if (cm_key_public_pem(key, kl, &b->str[0], &res) != CM_OK)
        return cm_lua_fail(L, &res);
    lua_pushstring(L, b->str[0]);
    cm_lua_x509_box_release(b);
    return 1;
}

int cm_lua_open_key(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"key_generate", l_key_generate},
        {"key_matches", l_key_matches},
        {"key_public_pem", l_key_public_pem},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
    return 0;
}
