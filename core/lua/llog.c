/* llog.c - core.log, core.log_config, core.log_take, core.log_counts. */
#include "lcore.h"

#include <stdlib.h>
#include <string.h>

#include "../log.h"

#define MAX_FIELDS 32

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int reserved(const char *key)
{
    return strcmp(key, "ts") == 0 || strcmp(key, "level") == 0 || strcmp(key, "event") == 0;
}

/* core.log(level, event [, fields]): fields is a table of scalar values, logged
 * with keys sorted so lines are stable. */
static int l_log(lua_State *L)
{
    const char *level_name = luaL_checkstring(L, 1);
    const char *event = luaL_checkstring(L, 2);
    const char *keys[MAX_FIELDS], *values[MAX_FIELDS];
    size_t n = 0, i;
    int level = cm_log_level_parse(level_name);
    int top;

    if (level < 0) return luaL_argerror(L, 1, "level must be debug, info, warn or error");
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    top = lua_gettop(L);
    /* room for every anchored key, then a value and its string per field */
    luaL_checkstack(L, MAX_FIELDS + 4, "log fields");
    if (lua_istable(L, 3)) {
        lua_pushnil(L);
        while (lua_next(L, 3) != 0) {
            /* ts, level and event belong to the line itself; a field may not
             * shadow them (a reader would see two "event=" keys) */
            if (lua_type(L, -2) == LUA_TSTRING && n < MAX_FIELDS && !reserved(lua_tostring(L, -2))) {
                keys[n++] = lua_tostring(L, -2);
                /* anchor the key string on the stack past lua_next */
                lua_pushvalue(L, -2);
                lua_insert(L, top + 1);
            }
            lua_pop(L, 1);
        }
    }
    qsort(keys, n, sizeof keys[0], cmp_str);
    luaL_checkstack(L, 2 * (int)n + 2, "log fields");
    for (i = 0; i < n; i++) {
        lua_getfield(L, 3, keys[i]);
        if (lua_type(L, -1) == LUA_TBOOLEAN)
            values[i] = lua_toboolean(L, -1) ? "true" : "false";
        else
            values[i] = luaL_tolstring(L, -1, NULL);
        /* the string stays on the stack (anchored) until we return */
    }
    cm_log_event((enum cm_log_level)level, event, n, keys, values);
    return 0;
}

/* core.log_config{format="text"|"json", level="info", capture=bool, echo=bool, fd=n} */
static int l_log_config(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_getfield(L, 1, "format") != LUA_TNIL) {
        const char *f = luaL_checkstring(L, -1);
        if (strcmp(f, "json") == 0) cm_log_set_format(CM_LOG_JSON);
        else if (strcmp(f, "text") == 0) cm_log_set_format(CM_LOG_TEXT);
        else return luaL_error(L, "log format must be \"text\" or \"json\", not \"%s\"", f);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "level") != LUA_TNIL) {
        int lv = cm_log_level_parse(luaL_checkstring(L, -1));
        if (lv < 0) return luaL_error(L, "log level must be debug, info, warn or error");
        cm_log_set_level((enum cm_log_level)lv);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "capture") != LUA_TNIL) cm_log_capture(lua_toboolean(L, -1));
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "echo") != LUA_TNIL) cm_log_set_echo(lua_toboolean(L, -1));
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "fd") != LUA_TNIL) cm_log_set_fd((int)luaL_checkinteger(L, -1));
    lua_pop(L, 1);
    return 0;
}

/* core.log_take() -> array of captured lines (and clears them). */
static int l_log_take(lua_State *L)
{
    size_t n = 0, i;
    char **lines = cm_log_capture_take(&n);
    lua_createtable(L, (int)n, 0);
    for (i = 0; i < n; i++) {
        lua_pushstring(L, lines[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
        free(lines[i]); lines[i] = NULL;
    }
    free(lines);
    return 1;
}

static int l_log_counts(lua_State *L)
{
    int lv;
    lua_createtable(L, 0, 4);
    for (lv = CM_LOG_DEBUG; lv <= CM_LOG_ERROR; lv++) {
        lua_pushinteger(L, (lua_Integer)cm_log_count((enum cm_log_level)lv));
        lua_setfield(L, -2, cm_log_level_name((enum cm_log_level)lv));
    }
    return 1;
}

/* log_wants(level) -> bool: would a line at level be written or captured? */
static int l_log_wants(lua_State *L)
{
    int lv = cm_log_level_parse(luaL_checkstring(L, 1));
    if (lv < 0) return luaL_argerror(L, 1, "a log level: debug, info, warn or error");
    lua_pushboolean(L, cm_log_wants((enum cm_log_level)lv));
    return 1;
}

int cm_lua_open_log(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"log", l_log},
        {"log_config", l_log_config},
        {"log_take", l_log_take},
        {"log_counts", l_log_counts},
        {"log_wants", l_log_wants},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
    return 0;
}
