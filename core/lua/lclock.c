/* lclock.c - core.now, core.monotonic, core.elapsed, core.clock_set,
 * core.clock_advance, core.clock_jump, core.rfc3339_iso. */
#include "lcore.h"

#include "../clock.h"
#include "../rfc3339.h"

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

/* elapsed() -> seconds on the clock timers and intervals use (clock.h). */
static int l_elapsed(lua_State *L)
{
    lua_pushnumber(L, cm_clock_elapsed());
    return 1;
}

/* clock_jump(dt): step the fake wall clock by dt (either sign), the elapsed
 * clock unchanged -> the new now. */
static int l_clock_jump(lua_State *L)
{
    lua_Number dt = luaL_checknumber(L, 1);
    luaL_argcheck(L, dt == dt, 1, "not a number");
    luaL_argcheck(L, cm_clock_is_fake(), 1, "the clock is real; call clock_set first");
    cm_clock_jump(dt);
    lua_pushnumber(L, cm_clock_now());
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

/* rfc3339_iso(t) -> "2026-01-01T00:00:00Z" (t rounded down); raises when t
 * is not a finite number within +-1e15 (a caller's bug, like os.date's). */
static int l_rfc3339_iso(lua_State *L)
{
    char out[CM_RFC3339_ISO_MAX];
    size_t len = cm_rfc3339_iso(luaL_checknumber(L, 1), out);
    luaL_argcheck(L, len > 0, 1, "time must be a finite number of Unix seconds within 1e15");
    lua_pushlstring(L, out, len);
    return 1;
}

int cm_lua_open_clock(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"now", l_now},
        {"monotonic", l_monotonic},
        {"elapsed", l_elapsed},
        {"clock_jump", l_clock_jump},
        {"clock_set", l_clock_set},
        {"clock_advance", l_clock_advance},
        {"clock_is_fake", l_clock_is_fake},
        {"rfc3339_iso", l_rfc3339_iso},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
    return 0;
}
