/* lrenewal.c - core.renew_at, core.needs_renewal, core.ari_point, core.fnv1a32:
 * the default renewal rule of renewal.c, for certmaint.renewal (which keeps
 * the documented Lua API and delegates here) and the engine. */
#include "lrenewal.h"

#include <math.h>
#include <stdio.h>

void cm_lua_push_time(lua_State *L, double t)
{
    if (isfinite(t) && t == floor(t) && t >= -9.0e15 && t <= 9.0e15)
        lua_pushinteger(L, (lua_Integer)t);
    else
        lua_pushnumber(L, t);
}

/* Field `name` of the table at idx as a number, or NAN when absent; raises
 * when it is there but not a number. */
static double opt_number(lua_State *L, int idx, const char *what, const char *name)
{
    double v = NAN;
    int t = lua_getfield(L, idx, name);
    if (t == LUA_TNUMBER) v = lua_tonumber(L, -1);
    else if (t != LUA_TNIL)
        cm_lua_opt_error(L, what, "option '%s' must be a number, not %s", name,
                         luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

/* Read the rule's three options from the table at idx; the caller checked the keys. */
static void read_rule(lua_State *L, int idx, const char *what, struct cm_renewal_opts *o)
{
    int t;
    cm_renewal_opts_init(o);
    o->ratio = opt_number(L, idx, what, "ratio");
    if (!isnan(o->ratio) && !(o->ratio > 0 && o->ratio < 1))
        cm_lua_opt_error(L, what, "option 'ratio' must be a number in (0, 1)");
    o->check_interval = opt_number(L, idx, what, "check_interval");
    if (!isnan(o->check_interval) && !(o->check_interval >= 0))
        cm_lua_opt_error(L, what, "option 'check_interval' must be a non-negative number");
    t = lua_getfield(L, idx, "explicit_ratio");
    if (t == LUA_TBOOLEAN) o->explicit_ratio = lua_toboolean(L, -1);
    else if (t != LUA_TNIL)
        cm_lua_opt_error(L, what, "option 'explicit_ratio' must be a boolean, not %s",
                         luaL_typename(L, -1));
    lua_pop(L, 1);
}

void cm_lua_renewal_opts(lua_State *L, int idx, const char *what, struct cm_renewal_opts *o)
{
    static const char *const known[] = {"ratio", "explicit_ratio", "check_interval", NULL};
    idx = lua_absindex(L, idx);
    cm_lua_check_options(L, idx, what, known);
    read_rule(L, idx, what, o);
}

/* The ARI point for `ari` (any value: only a table whose start and end are
 * numbers with end >= start is a window) and the serial at serial_idx (a
 * string; any other value: no serial).  NAN when there is no usable window. */
static double ari_point_of(lua_State *L, int ari_idx, int serial_idx)
{
    double s, e;
    const char *serial = NULL;
    size_t len = 0;
    if (lua_type(L, ari_idx) != LUA_TTABLE) return NAN;
    lua_getfield(L, ari_idx, "start");
    lua_getfield(L, ari_idx, "end");
    s = lua_type(L, -2) == LUA_TNUMBER ? lua_tonumber(L, -2) : NAN;
    e = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : NAN;
    lua_pop(L, 2);
    if (lua_type(L, serial_idx) == LUA_TSTRING) serial = lua_tolstring(L, serial_idx, &len);
    return cm_renewal_ari_point(s, e, serial, len);
}

/* Options of core.renew_at / core.needs_renewal at idx (none, nil or a
 * table): the rule's options, plus serial and ari for the ARI layer. */
static void read_opts(lua_State *L, int idx, const char *what, struct cm_renewal_opts *o,
                      double *ari)
{
    static const char *const known[] = {"ratio", "explicit_ratio", "check_interval", "serial",
                                        "ari", NULL};
    cm_renewal_opts_init(o);
    *ari = NAN;
    if (lua_isnoneornil(L, idx)) return;
    luaL_checktype(L, idx, LUA_TTABLE);
    cm_lua_check_options(L, idx, what, known);
    read_rule(L, idx, what, o);
    lua_getfield(L, idx, "ari");
    lua_getfield(L, idx, "serial");
    *ari = ari_point_of(L, lua_absindex(L, -2), lua_absindex(L, -1));
    lua_pop(L, 2);
}

/* core.renew_at(not_before, not_after [, opts]) -> time, layer */
static int l_renew_at(lua_State *L)
{
    double nb = luaL_checknumber(L, 1), na = luaL_checknumber(L, 2), ari, at;
    struct cm_renewal_opts o;
    enum cm_renewal_layer layer;
    read_opts(L, 3, "core.renew_at", &o, &ari);
    at = cm_renewal_at(nb, na, ari, &o, &layer);
    cm_lua_push_time(L, at);
    lua_pushstring(L, cm_renewal_layer_name(layer));
    return 2;
}

/* core.needs_renewal(not_before, not_after, now [, opts]) -> due, reason|nil, renew_at */
static int l_needs_renewal(lua_State *L)
{
    double nb = luaL_checknumber(L, 1), na = luaL_checknumber(L, 2), now = luaL_checknumber(L, 3);
    double ari, at = 0;
    struct cm_renewal_opts o;
    enum cm_renewal_layer reason = CM_RENEWAL_WINDOW;
    int due;
    read_opts(L, 4, "core.needs_renewal", &o, &ari);
    due = cm_renewal_due(nb, na, ari, &o, now, &reason, &at);
    lua_pushboolean(L, due);
    if (due) lua_pushstring(L, cm_renewal_layer_name(reason));
    else lua_pushnil(L);
    cm_lua_push_time(L, at);
    return 3;
}

/* core.renewal_guard(not_before, not_after [, check_interval]) -> seconds */
static int l_renewal_guard(lua_State *L)
{
    double nb = luaL_checknumber(L, 1), na = luaL_checknumber(L, 2);
    double interval = luaL_optnumber(L, 3, NAN);
    lua_pushnumber(L, cm_renewal_guard(nb, na, interval));
    return 1;
}

/* core.ari_point(ari, serial) -> time | nil */
static int l_ari_point(lua_State *L)
{
    double p;
    lua_settop(L, 2);
    p = ari_point_of(L, 1, 2);
    if (isnan(p)) lua_pushnil(L);
    else cm_lua_push_time(L, p);
    return 1;
}

/* core.fnv1a32(str) -> 8 lower-case hex digits, and the hash as an integer */
static int l_fnv1a32(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    uint32_t h = cm_fnv1a32(s, len);
    char hex[9];
    snprintf(hex, sizeof hex, "%08x", (unsigned)h);
    lua_pushlstring(L, hex, 8);
    lua_pushinteger(L, (lua_Integer)h);
    return 2;
}

int cm_lua_open_renewal(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"renew_at", l_renew_at},
        {"needs_renewal", l_needs_renewal},
        {"ari_point", l_ari_point},
        {"renewal_guard", l_renewal_guard},
        {"fnv1a32", l_fnv1a32},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
    return 0;
}
