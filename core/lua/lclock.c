/* lclock.c - core.now, core.monotonic, core.clock_set, core.clock_advance. */
#include "lcore.h"

#include "../clock.h"

static int l_now(lua_State *L)
{
    lua_pushnumber(L, cm_clock_now());
    return 1;
}

static int l_monotonic(lua_State *L)
{
    lua_pushnumber(L, cm_clock_monotonic());
    return 1;
}

/* clock_set(t) fakes the clock at t; clock_set(nil) returns to real time. */
static int l_clock_set(lua_State *L)
{
    if (lua_isnoneornil(L, 1))
        cm_clock_set_real();
    else
        cm_clock_set_fake(luaL_checknumber(L, 1));
    return 0;
}

static int l_clock_advance(lua_State *L)
{
    lua_Number dt = luaL_checknumber(L, 1);
    luaL_argcheck(L, dt >= 0, 1, "cannot move the clock backwards");
    luaL_argcheck(L, cm_clock_is_fake(), 1, "the clock is real; call clock_set first");
    cm_clock_advance(dt);
    lua_pushnumber(L, cm_clock_now());
    return 1;
}

static int l_clock_is_fake(lua_State *L)
{
    lua_pushboolean(L, cm_clock_is_fake());
    return 1;
}

int cm_lua_open_clock(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"now", l_now},
        {"monotonic", l_monotonic},
        {"clock_set", l_clock_set},
        {"clock_advance", l_clock_advance},
        {"clock_is_fake", l_clock_is_fake},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
    return 0;
}
