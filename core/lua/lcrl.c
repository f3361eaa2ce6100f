/* lcrl.c - CRL checks for Lua (the core's crl.h): core.crl_parse (crl:lookup,
 * crl:info), core.crl_peek.  Building CRLs is the local CA's (llocalca.c:
 * core.crl_build).  The crl userdata is made before the core parses, so a
 * parsed CRL is always owned by something __gc reaches. */
#include "lcore.h"

#include <math.h>

#include "../crl.h"
#include "../ocsp.h"

#define CRL_MT "certmaint.crl"

struct crl_ud {
    struct cm_crl *crl;
};

static struct cm_crl *check_crl(lua_State *L)
{
    struct crl_ud *u = luaL_checkudata(L, 1, CRL_MT);
    if (!u->crl) luaL_error(L, "crl: used after close");
    return u->crl;
}

/* Argument arg as integer seconds (floored), def when absent. */
static int64_t opt_seconds(lua_State *L, int arg, int64_t def)
{
    lua_Number n;
    if (lua_isnoneornil(L, arg)) return def;
    n = luaL_checknumber(L, arg);
    luaL_argcheck(L, n > -1e15 && n < 1e15, arg, "out of range");
    return (int64_t)floor(n);
}

static void push_info(lua_State *L, const struct cm_crl_info *info)
{
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)info->this_update);
    lua_setfield(L, -2, "this_update");
    if (info->next_update) {
        lua_pushinteger(L, (lua_Integer)info->next_update);
        lua_setfield(L, -2, "next_update");
    }
    lua_pushinteger(L, (lua_Integer)info->count);
    lua_setfield(L, -2, "count");
    if (info->number_hex[0]) {
        lua_pushstring(L, info->number_hex);
        lua_setfield(L, -2, "number");
    }
}

/* core.crl_parse(der_or_pem, issuer [, now [, skew]]) -> crl | nil, err, code */
static int l_crl_parse(lua_State *L)
{
    size_t dl, il;
    const char *data = luaL_checklstring(L, 1, &dl);
    const char *issuer = luaL_checklstring(L, 2, &il);
    int64_t now = opt_seconds(L, 3, 0);
    int64_t skew = opt_seconds(L, 4, CM_OCSP_DEFAULT_SKEW);
    struct crl_ud *u;
    struct cm_result res;

    luaL_argcheck(L, skew >= 0, 4, "skew must not be negative");
    u = lua_newuserdatauv(L, sizeof *u, 0);
    u->crl = NULL;
    luaL_setmetatable(L, CRL_MT);
    if (cm_crl_parse(data, dl, issuer, il, now, skew, &u->crl, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    return 1;
}

/* core.crl_peek(der_or_pem) -> info | nil, err, code: NOT verified. */
static int l_crl_peek(lua_State *L)
{
    size_t dl;
    const char *data = luaL_checklstring(L, 1, &dl);
    struct cm_crl_info info;
    struct cm_result res;

    if (cm_crl_peek(data, dl, &info, &res) != CM_OK) return cm_lua_fail(L, &res);
    push_info(L, &info);
    return 1;
}

/* crl:lookup(serial_hex) -> nil | {revoked_at =, reason = name | nil} */
static int l_crl_lookup(lua_State *L)
{
    struct cm_crl *crl = check_crl(L);
    size_t len;
    const char *hex = luaL_checklstring(L, 2, &len);
    struct cm_crl_revoked rev;
    struct cm_result res;
    int found = cm_crl_lookup(crl, hex, len, &rev, &res);

    if (found == CM_ERR) return luaL_error(L, "crl:lookup: %s", res.message);
    if (!found) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)rev.revoked_at);
    lua_setfield(L, -2, "revoked_at");
    if (cm_ocsp_reason_name(rev.reason)) {
        lua_pushstring(L, cm_ocsp_reason_name(rev.reason));
        lua_setfield(L, -2, "reason");
    }
    return 1;
}

/* crl:info() -> {this_update =, next_update =, count =, number =} */
static int l_crl_info(lua_State *L)
{
    struct cm_crl_info info;
    cm_crl_get_info(check_crl(L), &info);
    push_info(L, &info);
    return 1;
}

static int l_crl_gc(lua_State *L)
{
    struct crl_ud *u = luaL_checkudata(L, 1, CRL_MT);
    cm_crl_free(u->crl);
    u->crl = NULL;
    return 0;
}

static int l_crl_tostring(lua_State *L)
{
    struct crl_ud *u = luaL_checkudata(L, 1, CRL_MT);
    struct cm_crl_info info;
    if (!u->crl) {
        lua_pushliteral(L, "crl (closed)");
        return 1;
    }
    cm_crl_get_info(u->crl, &info);
    lua_pushfstring(L, "crl (%d entries)", (int)info.count);
    return 1;
}

int cm_lua_open_crl(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"lookup", l_crl_lookup},
        {"info", l_crl_info},
        {"close", l_crl_gc},
        {NULL, NULL},
    };
    static const luaL_Reg fns[] = {
        {"crl_parse", l_crl_parse},
        {"crl_peek", l_crl_peek},
        {NULL, NULL},
    };
    luaL_newmetatable(L, CRL_MT);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_crl_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_crl_gc);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, l_crl_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
    luaL_setfuncs(L, fns, 0);
    return 0;
}
