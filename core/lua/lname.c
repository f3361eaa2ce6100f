/* lname.c - core.name_normalize, core.name_storage_key. */
#include "lcore.h"

#include "../name.h"

/* name_normalize(name) -> normalized, kind ("dns"|"wildcard"|"ipv4"|"ipv6")
 *                       | nil, err, "invalid" */
static int l_name_normalize(lua_State *L)
{
    static const char *const kinds[] = {"dns", "wildcard", "ipv4", "ipv6"};
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    char out[CM_NAME_BUF];
    enum cm_name_kind kind = CM_NAME_DNS;
    struct cm_result res;
    if (cm_name_normalize(name, len, out, &kind, &res) != CM_OK) return cm_lua_fail(L, &res);
    lua_pushstring(L, out);
    lua_pushstring(L, kinds[kind]);
    return 2;
}

/* name_storage_key(name) -> key | nil, err, "invalid" */
static int l_name_storage_key(lua_State *L)
{
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    char out[CM_NAME_BUF];
    struct cm_result res;
    if (cm_name_storage_key(name, len, out, &res) != CM_OK) return cm_lua_fail(L, &res);
    lua_pushstring(L, out);
    return 1;
}

int cm_lua_open_name(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"name_normalize", l_name_normalize},
        {"name_storage_key", l_name_storage_key},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
    return 0;
}
