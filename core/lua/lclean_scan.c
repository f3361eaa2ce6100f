/* lclean_scan.c - core.clean_scan: the clean pass's scan of a file storage
 * tree (clean_scan.h).
 *
 *   core.clean_scan(root, {crt_top = "certificates", skip_top =, expired_before = t,
 *                          temp_before = t, threads = 2, max_bytes = 1 MiB})
 *     -> {certificates = n,
 *         expired = {{key =, not_after =, id =}, ...},   -- notAfter <= expired_before
 *         failed = {{key =, error =, code =}, ...},      -- unreadable or unparseable
 *         temp = {key, ...}}                             -- temp files older than temp_before
 *      | nil, err, code
 * Keys are relative to root.  Blocks while it reads (threads readers).
 */
#include "lcore.h"

#include <string.h>

#include "../cache.h"
#include "../clean_scan.h"

#define SCAN_MT "certmaint.clean_scan"

/* The scan's result anchored in a userdata while it is pushed, so a memory
 * error in Lua cannot leak it. */
struct scan_box {
    struct cm_clean_scan s;
};

static int scan_gc(lua_State *L)
{
    struct scan_box *box = luaL_checkudata(L, 1, SCAN_MT);
    cm_clean_scan_free(&box->s);
    return 0;
}

static lua_Integer opt_integer(lua_State *L, const char *name, lua_Integer def, lua_Integer lo, lua_Integer hi)
{
    lua_Integer v = def;
    if (lua_getfield(L, 2, name) != LUA_TNIL) {
        if (!lua_isinteger(L, -1) || (v = lua_tointeger(L, -1)) < lo || v > hi)
            cm_lua_opt_error(L, "core.clean_scan", "%s must be an integer in %I..%I", name, lo, hi);
    }
    lua_pop(L, 1);
    return v;
}

static int l_clean_scan(lua_State *L)
{
    static const char *const known[] = {"crt_top", "skip_top", "expired_before", "temp_before",
                                        "threads", "max_bytes", NULL};
    const char *root = luaL_checkstring(L, 1);
    struct cm_clean_scan_opts o;
    struct scan_box *box;
    struct cm_result res;
    size_t i, e = 0, f = 0;

    luaL_checktype(L, 2, LUA_TTABLE);
    cm_lua_check_options(L, 2, "core.clean_scan", known);
    cm_clean_scan_opts_init(&o);
    if (lua_getfield(L, 2, "crt_top") != LUA_TNIL) o.crt_top = luaL_checkstring(L, -1);
    if (lua_getfield(L, 2, "skip_top") != LUA_TNIL) o.skip_top = luaL_checkstring(L, -1);
    lua_pop(L, 2); /* the strings stay alive in the options table */
    o.expired_before = opt_integer(L, "expired_before", 0, INT64_MIN, INT64_MAX);
    o.temp_before = opt_integer(L, "temp_before", 0, INT64_MIN, INT64_MAX);
    o.threads = (unsigned)opt_integer(L, "threads", 2, 1, 64);
    o.max_bytes = (size_t)opt_integer(L, "max_bytes", 1024 * 1024, 1, 64 * 1024 * 1024);

    box = lua_newuserdatauv(L, sizeof *box, 0);
    memset(&box->s, 0, sizeof box->s);
    luaL_setmetatable(L, SCAN_MT);
    if (cm_clean_scan(root, &o, &box->s, &res) != CM_OK) return cm_lua_fail(L, &res);

    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)box->s.certificates);
    lua_setfield(L, -2, "certificates");
    lua_newtable(L); /* expired */
    lua_newtable(L); /* failed */
    for (i = 0; i < box->s.count; i++) {
        const struct cm_clean_scan_item *it = &box->s.items[i];
        lua_createtable(L, 0, 3);
        lua_pushstring(L, it->key);
        lua_setfield(L, -2, "key");
        if (it->error) {
            lua_pushstring(L, it->error);
            lua_setfield(L, -2, "error");
            lua_pushstring(L, it->code);
            lua_setfield(L, -2, "code");
            lua_rawseti(L, -2, (lua_Integer)++f);
        } else {
            struct cm_cache_id id;
            char hex[65];
            memcpy(id.sha256, it->id, sizeof id.sha256);
            cm_cache_id_hex(&id, hex);
            lua_pushinteger(L, (lua_Integer)it->not_after);
            lua_setfield(L, -2, "not_after");
            lua_pushlstring(L, hex, 64);
            lua_setfield(L, -2, "id");
            lua_rawseti(L, -3, (lua_Integer)++e);
        }
    }
    lua_setfield(L, -3, "failed");
    lua_setfield(L, -2, "expired");
    lua_createtable(L, (int)(box->s.temp_count > INT32_MAX ? INT32_MAX : box->s.temp_count), 0);
    for (i = 0; i < box->s.temp_count; i++) {
        lua_pushstring(L, box->s.temp[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "temp");
    cm_clean_scan_free(&box->s);
    return 1;
}

int cm_lua_open_clean_scan(lua_State *L)
{
    if (luaL_newmetatable(L, SCAN_MT)) {
        lua_pushcfunction(L, scan_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_clean_scan);
    lua_setfield(L, -2, "clean_scan");
    return 0;
}
