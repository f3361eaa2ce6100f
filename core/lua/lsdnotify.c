/* lsdnotify.c - core.sd_notify, core.sd_watchdog (core/sdnotify.h). */
#include "lcore.h"

#include <stdlib.h>

#include "../sdnotify.h"

/* sd_notify(msg [, socket]) -> true | false (no socket: not run by systemd)
 * | nil, err, code.  socket defaults to $NOTIFY_SOCKET. */
static int l_sd_notify(lua_State *L)
{
    size_t len;
    const char *msg = luaL_checklstring(L, 1, &len);
    const char *sock = luaL_optstring(L, 2, NULL);
    struct cm_result res;
    if (!sock) sock = getenv("NOTIFY_SOCKET");
    if (!sock || !*sock) {
        lua_pushboolean(L, 0);
        return 1;
    }
    cm_result_clear(&res);
    if (cm_sdnotify_send(sock, msg, len, &res) != CM_OK) {
        luaL_pushfail(L);
        lua_pushstring(L, res.message);
        lua_pushstring(L, res.code);
        return 3;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* sd_watchdog() -> seconds systemd's watchdog allows between pings, or nil. */
static int l_sd_watchdog(lua_State *L)
{
    double s = cm_sdnotify_watchdog_seconds();
    if (s > 0) lua_pushnumber(L, s);
    else lua_pushnil(L);
    return 1;
}

int cm_lua_open_sdnotify(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"sd_notify", l_sd_notify},
        {"sd_watchdog", l_sd_watchdog},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
    return 0;
}
