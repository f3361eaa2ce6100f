/* lfailpoint.c - the failpoints (failpoint.h) for the Lua side.
 *
 *   core.failpoints_active          true when CERTMAINT_FAILPOINTS armed a point
 *   core.failpoint(name)            -> action, sleep_ms | nil: counts a hit of
 *                                      name; the action due now ("crash-before",
 *                                      "crash-after", "enospc", "eio", "sleep")
 *   core.failpoint_crash(name, action)   log the trigger and die (SIGKILL)
 *   core.failpoint_report(name, action)  log the trigger
 *   core.failpoint_sleep(ms)        a blocking sleep (outside a loop task)
 *   core.failpoint_list()           -> { {name =, description =}, ... }
 * An undeclared name is a programming error (raised).  certmaint.failpoint
 * (lua/certmaint/failpoint.lua) is what storage and network code calls.
 */
#include "lcore.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../failpoint.h"

static enum cm_failpoint_action action_of(lua_State *L, int idx)
{
    static const char *const names[] = {"crash-before", "crash-after", "enospc", "eio", "sleep", NULL};
    static const enum cm_failpoint_action actions[] = {CM_FP_CRASH_BEFORE, CM_FP_CRASH_AFTER, CM_FP_ENOSPC,
                                                       CM_FP_EIO, CM_FP_SLEEP};
    return actions[luaL_checkoption(L, idx, NULL, names)];
}

static const char *declared_name(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    if (!cm_failpoint_declared(name))
        luaL_error(L, "failpoint \"%s\" is not declared in core/failpoint.c", name);
    return name;
}

static int l_failpoint(lua_State *L)
{
    long ms = 0;
    enum cm_failpoint_action a;
    if (!cm_failpoints_active) {
        luaL_checkstring(L, 1);
        return 0;
    }
    a = cm_failpoint_hit(declared_name(L), &ms);
    if (a == CM_FP_NONE) return 0;
    lua_pushstring(L, cm_failpoint_action_name(a));
    lua_pushinteger(L, ms);
    return 2;
}

static int l_failpoint_crash(lua_State *L)
{
    const char *name = declared_name(L);
    cm_failpoint_crash(name, action_of(L, 2));
    return 0;
}

static int l_failpoint_report(lua_State *L)
{
    const char *name = declared_name(L);
    cm_failpoint_report(name, action_of(L, 2));
    return 0;
}

/* A blocking sleep, for a sleep action outside a loop task. */
static int l_failpoint_sleep(lua_State *L)
{
    lua_Integer ms = luaL_checkinteger(L, 1);
    struct timespec ts;
    luaL_argcheck(L, ms >= 0 && ms <= 3600000, 1, "milliseconds 0..3600000");
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
    return 0;
}

static int l_failpoint_list(lua_State *L)
{
    int i;
    lua_newtable(L);
    for (i = 0; cm_failpoints[i].name; i++) {
        lua_createtable(L, 0, 2);
        lua_pushstring(L, cm_failpoints[i].name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, cm_failpoints[i].description);
        lua_setfield(L, -2, "description");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

int cm_lua_open_failpoint(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"failpoint", l_failpoint},
        {"failpoint_crash", l_failpoint_crash},
        {"failpoint_report", l_failpoint_report},
        {"failpoint_list", l_failpoint_list},
        {"failpoint_sleep", l_failpoint_sleep},
        {NULL, NULL},
    };
    struct cm_result res;
    /* the daemon parsed it already (core/bin/certmaint.c); a stock lua5.4
     * loading the module parses it here */
    if (cm_failpoint_init(getenv("CERTMAINT_FAILPOINTS"), &res) != CM_OK)
        return luaL_error(L, "%s", res.message);
    luaL_setfuncs(L, fns, 0);
    lua_pushboolean(L, cm_failpoints_active);
    lua_setfield(L, -2, "failpoints_active");
    return 0;
}
