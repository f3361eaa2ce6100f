/* lcore.c - luaopen_certmaint_core: assembles the module from its units. */
#include "lcore.h"

#include <stdarg.h>

#include "../x509.h"
#include <stdint.h>
#include <stdio.h>

int cm_lua_fail(lua_State *L, const struct cm_result *res)
{
    lua_pushnil(L);
    lua_pushstring(L, res->message[0] ? res->message : "unknown error");
    lua_pushstring(L, res->code[0] ? res->code : "error");
    return 3;
}

int cm_lua_failf(lua_State *L, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lua_pushnil(L);
    lua_pushstring(L, msg);
    lua_pushstring(L, code);
    return 3;
}

void cm_lua_push_strlist(lua_State *L, const struct cm_strlist *list)
{
    size_t i;
    lua_createtable(L, list->count > INT32_MAX ? 0 : (int)list->count, 0);
    for (i = 0; i < list->count; i++) {
        lua_pushstring(L, list->items[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

int luaopen_certmaint_core(lua_State *L)
{
    static int (*const units[])(lua_State *) = {
        cm_lua_open_log,   cm_lua_open_clock, cm_lua_open_x509,
        cm_lua_open_cache, cm_lua_open_loop,  cm_lua_open_fs,
        cm_lua_open_name,  cm_lua_open_json,  cm_lua_open_crypto,
    };
    size_t i;
    lua_newtable(L);
    for (i = 0; i < sizeof units / sizeof units[0]; i++) {
        units[i](L);
        luaL_checkstack(L, 1, NULL);
    }
    lua_pushliteral(L, "0.1.0");
    lua_setfield(L, -2, "version");
    return 1;
}
