/* lterm.c - core.isatty, core.progress, core.progress_clear,
 * core.progress_enable (core/term.h). */
#include "lcore.h"

#include "../term.h"

/* isatty(fd) -> boolean: fd 0, 1 or 2 (or any descriptor number) is a terminal. */
static int l_isatty(lua_State *L)
{
    lua_Integer fd = luaL_checkinteger(L, 1);
    luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, 1, "not a file descriptor");
    lua_pushboolean(L, cm_term_isatty((int)fd));
    return 1;
}

/* progress_enable(on) -> boolean: the progress line is on (stderr is a terminal). */
static int l_progress_enable(lua_State *L)
{
    lua_pushboolean(L, cm_term_progress_enable(lua_toboolean(L, 1)));
    return 1;
}

static uint64_t count_arg(lua_State *L, int arg)
{
    lua_Number v = luaL_optnumber(L, arg, 0);
    luaL_argcheck(L, v >= 0 && v < 9.0e15, arg, "not a count");
    return (uint64_t)v;
}

/* progress(label, done [, total [, failed]]): a pass's progress (throttled;
 * drawn only when the line is on). */
static int l_progress(lua_State *L)
{
    const char *label = luaL_checkstring(L, 1);
    uint64_t done = count_arg(L, 2), total = count_arg(L, 3), failed = count_arg(L, 4);
    cm_term_progress(label, done, total, failed);
    return 0;
}

/* progress_clear(): the pass ended; its line is erased. */
static int l_progress_clear(lua_State *L)
{
    (void)L;
    cm_term_progress_clear();
    return 0;
}

int cm_lua_open_term(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"isatty", l_isatty},
        {"progress_enable", l_progress_enable},
        {"progress", l_progress},
        {"progress_clear", l_progress_clear},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
    return 0;
}
