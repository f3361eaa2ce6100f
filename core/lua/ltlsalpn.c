/* ltlsalpn.c - the in-loop tls-alpn-01 responder for Lua (core/loop/tlsalpn.h):
 * core.tls_alpn_serve, core.tls_alpn_set, core.tls_alpn_unset,
 * core.tls_alpn_close, core.tls_alpn_stats.  Ids are the loop's (positive
 * integers); core.loop_reset closes these servers too. */
#include "lcore.h"

#include "../loop/loop.h"
#include "../loop/tlsalpn.h"


/* core.tls_alpn_serve{listen=, timeout=, max_connections=} -> id, port | nil, err, code */
static int l_tls_alpn_serve(lua_State *L)
{
    static const char *const keys[] = {"listen", "timeout", "max_connections", NULL};
    static const char fn[] = "core.tls_alpn_serve";
    struct cm_tlsalpn_opts o;
    struct cm_result res;
    uint64_t id = 0;
    int port = 0, t;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    cm_lua_check_options(L, 1, fn, keys);
    cm_tlsalpn_opts_init(&o);
    o.listen = cm_lua_opt_string(L, 1, fn, "listen", 1, NULL);
    t = lua_getfield(L, 1, "timeout");
    if (t != LUA_TNIL) {
        if (t != LUA_TNUMBER) cm_lua_opt_error(L, fn, "option 'timeout' must be a number");
        o.timeout = lua_tonumber(L, -1);
    }
    t = lua_getfield(L, 1, "max_connections");
    if (t != LUA_TNIL) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1)
            cm_lua_opt_error(L, fn, "option 'max_connections' must be a positive integer");
        o.max_connections = (size_t)lua_tointeger(L, -1);
    }
    lua_pop(L, 2);
    if (cm_tlsalpn_serve(cm_lua_loop(L), &o, &id, &port, &res) != CM_OK) return cm_lua_fail(L, &res);
    lua_pushinteger(L, (lua_Integer)id);
    lua_pushinteger(L, port);
    return 2;
}

/* core.tls_alpn_set(id, identifier, key_authorization) -> true | nil, err, code */
static int l_tls_alpn_set(lua_State *L)
{
    struct cm_result res;
    uint64_t id = cm_lua_check_loop_id(L, 1);
    const char *identifier = luaL_checkstring(L, 2);
    size_t len;
    const char *ka = luaL_checklstring(L, 3, &len);
    if (cm_tlsalpn_set(cm_lua_loop(L), id, identifier, ka, len, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_tls_alpn_unset(lua_State *L)
{
    uint64_t id = cm_lua_check_loop_id(L, 1);
    lua_pushboolean(L, cm_tlsalpn_unset(cm_lua_loop(L), id, luaL_checkstring(L, 2)));
    return 1;
}

static int l_tls_alpn_close(lua_State *L)
{
    lua_pushboolean(L, cm_tlsalpn_close(cm_lua_loop(L), cm_lua_check_loop_id(L, 1)));
    return 1;
}

static void set_int(lua_State *L, const char *k, uint64_t v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

static int l_tls_alpn_stats(lua_State *L)
{
    struct cm_tlsalpn_stats st;
    struct cm_result res;
    if (cm_tlsalpn_stats(cm_lua_loop(L), cm_lua_check_loop_id(L, 1), &st, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    lua_createtable(L, 0, 7);
    set_int(L, "connections", st.connections);
    set_int(L, "names", st.names);
    set_int(L, "accepted", st.accepted);
    set_int(L, "rejected", st.rejected);
    set_int(L, "timeouts", st.timeouts);
    set_int(L, "handshakes", st.handshakes);
    set_int(L, "refused", st.refused);
    return 1;
}

int cm_lua_open_tlsalpn(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"tls_alpn_serve", l_tls_alpn_serve},
        {"tls_alpn_set", l_tls_alpn_set},
        {"tls_alpn_unset", l_tls_alpn_unset},
        {"tls_alpn_close", l_tls_alpn_close},
        {"tls_alpn_stats", l_tls_alpn_stats},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
    return 0;
}
