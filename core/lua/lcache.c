/* lcache.c - core.cache_new and the cache object's methods.
 *
 * Thin: options are read and checked into C structs first, then the core
 * (cache.c, x509.c) does the work, then results are pushed.  Whatever the core
 * hands back in malloc'ed memory (copied entries, id arrays, PEM) sits in a
 * "guard" userdata while Lua tables are built from it, so an out-of-memory
 * error raised by the Lua API cannot leak it.
 */
#include "lcore.h"
#include "locsp_batch.h"
#include "lrenewal.h"

#include <lualib.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../cache.h"
#include "../fileio.h"
#include "../name.h"
#include "../ocsp.h"
#include "../rfc3339.h"
#include "../x509.h"

#define CACHE_MT "certmaint.cache"
#define GUARD_MT "certmaint.cache.guard"

struct lcache {
    struct cm_cache *c; /* NULL once closed */
};

/* Owner of the core's malloc'ed results while Lua values are built. */
struct guard {
    char *pem;
    struct cm_cache_id *ids;
};

static int guard_gc(lua_State *L)
{
    struct guard *g = luaL_checkudata(L, 1, GUARD_MT);
    free(g->pem); g->pem = NULL;
    free(g->ids); g->ids = NULL;
    return 0;
}

/* Push a fresh, empty guard and return it. */
static struct guard *guard_push(lua_State *L)
{
    struct guard *g = lua_newuserdatauv(L, sizeof *g, 0);
    memset(g, 0, sizeof *g);
    luaL_setmetatable(L, GUARD_MT);
    return g;
}

static struct lcache *check_open(lua_State *L)
{
    struct lcache *lc = luaL_checkudata(L, 1, CACHE_MT);
    if (!lc->c) luaL_error(L, "attempt to use a closed cache");
    return lc;
}

struct cm_cache *cm_lua_cache_check(lua_State *L, int idx)
{
    struct lcache *lc = luaL_checkudata(L, idx, CACHE_MT);
    if (!lc->c) luaL_error(L, "attempt to use a closed cache");
    return lc->c;
}

struct cm_cache *cm_lua_cache_opt(lua_State *L, int idx)
{
    return ((struct lcache *)luaL_checkudata(L, idx, CACHE_MT))->c;
}

static void check_id(lua_State *L, int arg, struct cm_cache_id *id)
{
    size_t len;
    const char *s = luaL_checklstring(L, arg, &len);
    if (cm_cache_id_parse(s, len, id) != CM_OK)
        luaL_argerror(L, arg, "certificate id must be 64 hex digits");
}

static void push_id(lua_State *L, const struct cm_cache_id *id)
{
    char hex[65];
    cm_cache_id_hex(id, hex);
    lua_pushlstring(L, hex, 64);
}

/* Push the ids of g->ids[0..n) as an array, then free them. */
static int push_ids(lua_State *L, struct guard *g, size_t n)
{
    size_t i;
    lua_createtable(L, n > INT32_MAX ? 0 : (int)n, 0);
    for (i = 0; i < n; i++) {
        push_id(L, &g->ids[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    free(g->ids); g->ids = NULL;
    return 1;
}

/* Field `name` of the table at idx: pushes it and returns its type; raises if
 * it is present with a type other than want. */
static int get_typed(lua_State *L, int idx, const char *what, const char *name, int want)
{
    int t = lua_getfield(L, idx, name);
    if (t != LUA_TNIL && t != want)
        cm_lua_opt_error(L, what, "option '%s' must be a %s, not %s", name, lua_typename(L, want),
                         luaL_typename(L, -1));
    return t;
}

/* ---- core.cache_new ----------------------------------------------------- */

static int l_cache_new(lua_State *L)
{
    struct cm_result res;
    struct lcache *lc = lua_newuserdatauv(L, sizeof *lc, 0);
    lc->c = NULL;
    luaL_setmetatable(L, CACHE_MT);
    if (!(lc->c = cm_cache_new(&res))) return cm_lua_fail(L, &res);
    return 1;
}

static int l_close(lua_State *L)
{
    struct lcache *lc = luaL_checkudata(L, 1, CACHE_MT);
    cm_cache_free(lc->c);
    lc->c = NULL;
    return 0;
}

static int l_tostring(lua_State *L)
{
    struct lcache *lc = luaL_checkudata(L, 1, CACHE_MT);
    if (lc->c)
        lua_pushfstring(L, "certmaint.cache (%d certificates)", (int)cm_cache_count(lc->c));
    else
        lua_pushliteral(L, "certmaint.cache (closed)");
    return 1;
}

/* ---- c:add(chain_pem, opts) -------------------------------------------- */

static int l_add(lua_State *L)
{
    static const char *const keys[] = {"managed", "on_demand", "renew_at", "next_attempt", NULL};
    struct lcache *lc = check_open(L);
    size_t len;
    const char *pem = luaL_checklstring(L, 2, &len);
    struct cm_cache_add_opts o;
    struct cm_cert_facts f;
    struct cm_cache_id id;
    struct cm_result res;
    int existed = 0, rc;

    cm_cache_add_opts_init(&o);
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        cm_lua_check_options(L, 3, "cache:add", keys);
        if (get_typed(L, 3, "cache:add", "managed", LUA_TBOOLEAN) != LUA_TNIL)
            o.managed = lua_toboolean(L, -1);
        if (get_typed(L, 3, "cache:add", "on_demand", LUA_TBOOLEAN) != LUA_TNIL)
            o.on_demand = lua_toboolean(L, -1);
        if (get_typed(L, 3, "cache:add", "renew_at", LUA_TNUMBER) != LUA_TNIL) {
            o.renew_at = lua_tonumber(L, -1);
            if (isnan(o.renew_at)) luaL_error(L, "cache:add: option 'renew_at' is NaN");
        }
        if (get_typed(L, 3, "cache:add", "next_attempt", LUA_TNUMBER) != LUA_TNIL) {
            o.next_attempt = lua_tonumber(L, -1);
            if (isnan(o.next_attempt)) luaL_error(L, "cache:add: option 'next_attempt' is NaN");
        }
        lua_pop(L, 4);
    }
    /* From here to the pushes nothing may raise: f owns malloc'ed memory. */
    if (cm_x509_parse_chain(pem, len, &f, &res) != CM_OK) return cm_lua_fail(L, &res);
    rc = cm_cache_add(lc->c, &f, &o, &id, &existed, &res);
    cm_cert_facts_free(&f);
    if (rc != CM_OK) return cm_lua_fail(L, &res);
    push_id(L, &id);
    lua_pushboolean(L, existed);
    return 2;
}

/* ---- c:get(id [, {pem = false}]) --------------------------------------- */

/* Push the view's list as an array of strings. */
static void push_view_list(lua_State *L, const struct cm_cache_view *v, enum cm_cache_list list,
                           size_t n)
{
    size_t i, len;
    lua_createtable(L, n > INT32_MAX ? 0 : (int)n, 0);
    for (i = 0; i < n; i++) {
        const char *s = cm_cache_view_item(v, list, i, &len);
        lua_pushlstring(L, s, len);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

/* The entry as a table, read straight from the cache (nothing is copied but
 * into Lua strings); the PEM and the staple's DER only when `pem` is set. */
/* c:facts(id) -> issuer, serial, not_before, not_after, renew_at, next_attempt,
 * attempts, last_error|nil, staple_status|nil, this_update, next_update
 * | nil (unknown id): what a status row shows, as values, no table (status of
 * 100k certificates). */
static int l_facts(lua_State *L)
{
    struct lcache *lc = check_open(L);
    struct cm_cache_id id;
    struct cm_cache_view v;
    check_id(L, 2, &id);
    if (!cm_cache_view(lc->c, &id, &v)) {
        lua_pushnil(L);
        return 1;
    }
    luaL_checkstack(L, 11, "cache:facts");
    lua_pushstring(L, v.issuer);
    lua_pushstring(L, v.serial_hex);
    lua_pushinteger(L, (lua_Integer)v.not_before);
    lua_pushinteger(L, (lua_Integer)v.not_after);
    cm_lua_push_time(L, v.renew_at);
    cm_lua_push_time(L, v.next_attempt);
    lua_pushinteger(L, (lua_Integer)v.attempts);
    if (v.last_error) lua_pushstring(L, v.last_error);
    else lua_pushnil(L);
    if (v.flags & CM_CACHE_HAS_STAPLE) {
        lua_pushstring(L, cm_ocsp_status_name(v.staple.status));
        cm_lua_push_time(L, v.staple.this_update);
        cm_lua_push_time(L, v.staple.next_update);
        return 11;
    }
    return 8;
}

static int l_get(lua_State *L)
{
    static const char *const keys[] = {"pem", NULL};
    struct lcache *lc = check_open(L);
    struct cm_cache_id id;
    struct cm_cache_view v;
    struct cm_result res;
    struct guard *g = NULL;
    size_t pem_len = 0;
    int want_pem = 1;

    check_id(L, 2, &id);
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        cm_lua_check_options(L, 3, "cache:get", keys);
        if (get_typed(L, 3, "cache:get", "pem", LUA_TBOOLEAN) != LUA_TNIL)
            want_pem = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    if (want_pem) g = guard_push(L);
    /* Nothing below changes the cache, so the view stays valid throughout
     * (only a __gc metamethod that changed this very cache while the table
     * is built could; nothing in certmaint sets one). */
    if (!cm_cache_view(lc->c, &id, &v)) {
        lua_pushnil(L);
        return 1;
    }
    if (want_pem && cm_x509_chain_pem(v.der, v.der_len, v.chain_der, v.chain_der_len, &g->pem,
                                      &pem_len, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    lua_createtable(L, 0, 20);
    push_id(L, &v.id);
    lua_setfield(L, -2, "id");
    push_view_list(L, &v, CM_CACHE_NAMES, v.names_count);
    lua_setfield(L, -2, "names");
    lua_pushboolean(L, (v.flags & CM_CACHE_MANAGED) != 0);
    lua_setfield(L, -2, "managed");
    lua_pushboolean(L, (v.flags & CM_CACHE_ON_DEMAND) != 0);
    lua_setfield(L, -2, "on_demand");
    lua_pushboolean(L, (v.flags & CM_CACHE_MUST_STAPLE) != 0);
    lua_setfield(L, -2, "must_staple");
    lua_pushstring(L, v.issuer);
    lua_setfield(L, -2, "issuer");
    lua_pushstring(L, v.subject);
    lua_setfield(L, -2, "subject");
    lua_pushstring(L, v.serial_hex);
    lua_setfield(L, -2, "serial");
    lua_pushinteger(L, (lua_Integer)v.not_before);
    lua_setfield(L, -2, "not_before");
    lua_pushinteger(L, (lua_Integer)v.not_after);
    lua_setfield(L, -2, "not_after");
    if (want_pem) {
        lua_pushlstring(L, g->pem, pem_len);
        lua_setfield(L, -2, "pem");
        free(g->pem); g->pem = NULL; /* now rather than at the next collection */
    }
    push_view_list(L, &v, CM_CACHE_OCSP_URLS, v.ocsp_count);
    lua_setfield(L, -2, "ocsp_urls");
    push_view_list(L, &v, CM_CACHE_CRL_URLS, v.crl_count);
    lua_setfield(L, -2, "crl_urls");
    cm_lua_push_time(L, v.renew_at);
    lua_setfield(L, -2, "renew_at");
    cm_lua_push_time(L, v.next_attempt);
    lua_setfield(L, -2, "next_attempt");
    lua_pushinteger(L, (lua_Integer)v.attempts);
    lua_setfield(L, -2, "attempts");
    if (v.last_error) {
        lua_pushstring(L, v.last_error);
        lua_setfield(L, -2, "last_error");
    }
    if (v.flags & CM_CACHE_HAS_STAPLE) {
        lua_createtable(L, 0, 5);
        lua_pushstring(L, cm_ocsp_status_name(v.staple.status));
        lua_setfield(L, -2, "status");
        cm_lua_push_time(L, v.staple.this_update);
        lua_setfield(L, -2, "this_update");
        cm_lua_push_time(L, v.staple.next_update);
        lua_setfield(L, -2, "next_update");
        cm_lua_push_time(L, v.staple.refresh_at);
        lua_setfield(L, -2, "refresh_at");
        if (want_pem) {
            lua_pushlstring(L, (const char *)v.staple.der, v.staple.der_len);
            lua_setfield(L, -2, "der");
        }
        lua_setfield(L, -2, "ocsp");
    }
    return 1;
}

/* ---- c:add_many(pems, opts) ------------------------------------------- */

#define MANY_CHUNK 2048          /* items handed to the core at once */
#define MANY_MAX_THREADS 64

/* Stack slots of l_add_many. */
enum { A_PEMS = 2, A_OPTS, A_ON_DEMAND, A_NAMES, A_COMPANIONS, A_RESULT, A_ITEMS };

static const char *const MANY_FIELDS[] = {"id", "state", "error", "code", "not_before",
                                          "not_after", "renew_at", NULL};

static const char *item_state_name(int state)
{
    switch (state) {
    case CM_CACHE_ITEM_OK: return "ok";
    case CM_CACHE_ITEM_NAMES_CHANGED: return "names_changed";
    case CM_CACHE_ITEM_MISSING: return "missing";
    default: return "error";
    }
}

/* Raise unless every element 1..n of the array at idx (if a table) passes. */
static void check_many_args(lua_State *L, const char *what, lua_Integer n, int files)
{
    lua_Integer i, k, m;
    for (i = 1; i <= n; i++) {
        size_t len;
        if (lua_rawgeti(L, A_PEMS, i) != LUA_TSTRING)
            cm_lua_opt_error(L, what, "pems[%d] must be a string, not %s", (int)i,
                             luaL_typename(L, -1));
        if (files && (lua_tolstring(L, -1, &len), len == 0 || strlen(lua_tostring(L, -1)) != len))
            cm_lua_opt_error(L, what, "pems[%d] must be a file path (files = true)", (int)i);
        lua_pop(L, 1);
    }
    if (lua_istable(L, A_COMPANIONS)) {
        for (i = 1; i <= n; i++) {
            int t = lua_rawgeti(L, A_COMPANIONS, i);
            if (t != LUA_TNIL && (t != LUA_TSTRING || strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1)))
                cm_lua_opt_error(L, what, "option 'companions[%d]' must be a file path, not %s",
                                 (int)i, luaL_typename(L, -1));
            lua_pop(L, 1);
        }
    }
    if (lua_istable(L, A_ON_DEMAND)) {
        for (i = 1; i <= n; i++) {
            int t = lua_rawgeti(L, A_ON_DEMAND, i);
            if (t != LUA_TNIL && t != LUA_TBOOLEAN)
                cm_lua_opt_error(L, what, "option 'on_demand[%d]' must be a boolean, not %s",
                                 (int)i, luaL_typename(L, -1));
            lua_pop(L, 1);
        }
    }
    if (lua_istable(L, A_NAMES)) {
        for (i = 1; i <= n; i++) {
            int t = lua_rawgeti(L, A_NAMES, i);
            if (t == LUA_TTABLE) {
                m = (lua_Integer)lua_rawlen(L, -1);
                if (m > CM_CACHE_MAX_LIST)
                    cm_lua_opt_error(L, what, "option 'names[%d]' has more than %d names",
                                     (int)i, CM_CACHE_MAX_LIST);
                for (k = 1; k <= m; k++) {
                    if (lua_rawgeti(L, -1, k) != LUA_TSTRING)
                        cm_lua_opt_error(L, what,
                                         "option 'names[%d][%d]' must be a string, not %s", (int)i,
                                         (int)k, luaL_typename(L, -1));
                    lua_pop(L, 1);
                }
            } else if (t != LUA_TNIL) {
                cm_lua_opt_error(L, what, "option 'names[%d]' must be a table, not %s",
                                 (int)i, luaL_typename(L, -1));
            }
            lua_pop(L, 1);
        }
    }
}

/* Fill items[0..cnt) from Lua items first+1..first+cnt; names pointers go to
 * a userdata pushed on the stack (popped by the caller after the core ran). */
static void fill_items(lua_State *L, struct cm_cache_item *items, lua_Integer first, size_t cnt,
                       int files)
{
    const char **ptrs = NULL;
    size_t total = 0, j, used = 0;
    if (lua_istable(L, A_NAMES)) {
        for (j = 0; j < cnt; j++) {
            if (lua_rawgeti(L, A_NAMES, first + (lua_Integer)j + 1) == LUA_TTABLE)
                total += lua_rawlen(L, -1);
            lua_pop(L, 1);
        }
    }
    ptrs = lua_newuserdatauv(L, (total ? total : 1) * sizeof *ptrs, 0);
    for (j = 0; j < cnt; j++) {
        struct cm_cache_item *it = &items[j];
        lua_Integer li = first + (lua_Integer)j + 1;
        memset(it, 0, sizeof *it);
        lua_rawgeti(L, A_PEMS, li);
        if (files) it->path = lua_tostring(L, -1); /* the pems table keeps it */
        else it->pem = lua_tolstring(L, -1, &it->pem_len);
        lua_pop(L, 1);
        if (lua_istable(L, A_COMPANIONS)) {
            if (lua_rawgeti(L, A_COMPANIONS, li) == LUA_TSTRING) it->companion = lua_tostring(L, -1);
            lua_pop(L, 1);
        }
        if (lua_istable(L, A_ON_DEMAND)) {
            lua_rawgeti(L, A_ON_DEMAND, li);
            it->on_demand = lua_toboolean(L, -1);
            lua_pop(L, 1);
        }
        if (lua_istable(L, A_NAMES)) {
            if (lua_rawgeti(L, A_NAMES, li) == LUA_TTABLE) {
                size_t k, m = lua_rawlen(L, -1);
                it->names = ptrs + used;
                it->names_count = m;
                for (k = 0; k < m; k++) {
                    lua_rawgeti(L, -1, (lua_Integer)k + 1);
                    ptrs[used++] = lua_tostring(L, -1); /* the names table keeps it */
                    lua_pop(L, 1);
                }
            }
            lua_pop(L, 1);
        }
    }
}

/* Store item j's outcome at index li of the result arrays. */
static void push_outcome(lua_State *L, const struct cm_cache_item *it, lua_Integer li)
{
    lua_getfield(L, A_RESULT, "state");
    lua_pushstring(L, item_state_name(it->state));
    lua_rawseti(L, -2, li);
    lua_pop(L, 1);
    if (it->state == CM_CACHE_ITEM_ERROR || it->state == CM_CACHE_ITEM_MISSING) {
        lua_getfield(L, A_RESULT, "error");
        lua_pushstring(L, it->res.message[0] ? it->res.message : "error");
        lua_rawseti(L, -2, li);
        lua_getfield(L, A_RESULT, "code");
        lua_pushstring(L, it->res.code[0] ? it->res.code : "error");
        lua_rawseti(L, -2, li);
        lua_pop(L, 2);
        return;
    }
    lua_getfield(L, A_RESULT, "id");
    push_id(L, &it->id);
    lua_rawseti(L, -2, li);
    lua_getfield(L, A_RESULT, "not_before");
    lua_pushinteger(L, (lua_Integer)it->not_before);
    lua_rawseti(L, -2, li);
    lua_getfield(L, A_RESULT, "not_after");
    lua_pushinteger(L, (lua_Integer)it->not_after);
    lua_rawseti(L, -2, li);
    lua_getfield(L, A_RESULT, "renew_at");
    cm_lua_push_time(L, it->renew_at);
    lua_rawseti(L, -2, li);
    lua_pop(L, 4);
}

/* add_many_start's site mode: the list holds names, and each item's file is
 * DIR/<key>/<key>.crt (and its companion DIR/<key>/<key>.key with site_keys),
 * <key> being the name's storage key (cm_name_storage_key) - certmagic's
 * layout, built here rather than in Lua (three strings a certificate). */
struct site_args {
    const char *dir;  /* NULL: not site mode */
    size_t dir_len;
    int keys;
};

/* Check (pems, opts) of add_many / add_many_start, fill *mo (its renew
 * pointing at *ro), leave the stack at A_COMPANIONS; returns #pems. */
static lua_Integer many_args(lua_State *L, const char *what, struct cm_cache_many_opts *o,
                             struct cm_renewal_opts *ro, int *files_out, struct site_args *site)
{
    static const char *const keys[] = {"managed", "on_demand", "names", "renew", "threads",
                                       "files", "companions", "max_bytes", "site_dir",
                                       "site_keys", NULL};
    struct cm_cache_many_opts mo;
    lua_Integer n;
    int files = 0;

    luaL_checktype(L, A_PEMS, LUA_TTABLE);
    lua_settop(L, A_OPTS);
    cm_cache_many_opts_init(&mo);
    lua_pushnil(L); /* A_ON_DEMAND */
    lua_pushnil(L); /* A_NAMES */
    lua_pushnil(L); /* A_COMPANIONS */
    if (!lua_isnil(L, A_OPTS)) {
        luaL_checktype(L, A_OPTS, LUA_TTABLE);
        cm_lua_check_options(L, A_OPTS, what, keys);
        if (get_typed(L, A_OPTS, what, "managed", LUA_TBOOLEAN) != LUA_TNIL)
            mo.managed = lua_toboolean(L, -1);
        lua_pop(L, 1);
        get_typed(L, A_OPTS, what, "on_demand", LUA_TTABLE);
        lua_replace(L, A_ON_DEMAND);
        get_typed(L, A_OPTS, what, "names", LUA_TTABLE);
        lua_replace(L, A_NAMES);
        get_typed(L, A_OPTS, what, "companions", LUA_TTABLE);
        lua_replace(L, A_COMPANIONS);
        if (get_typed(L, A_OPTS, what, "files", LUA_TBOOLEAN) != LUA_TNIL) files = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (get_typed(L, A_OPTS, what, "site_dir", LUA_TSTRING) != LUA_TNIL) {
            /* the opts table (on the stack until we return) keeps the string */
            if (!site) cm_lua_opt_error(L, what, "option 'site_dir' is for add_many_start only");
            site->dir = lua_tolstring(L, -1, &site->dir_len);
            if (site->dir_len == 0 || strlen(site->dir) != site->dir_len)
                cm_lua_opt_error(L, what, "option 'site_dir' must be a directory path");
            if (!lua_isnil(L, A_COMPANIONS))
                cm_lua_opt_error(L, what, "options 'site_dir' and 'companions' exclude each other "
                                          "(site_keys names the key files)");
            files = 1; /* the list holds names; their files are read */
        }
        lua_pop(L, 1);
        if (get_typed(L, A_OPTS, what, "site_keys", LUA_TBOOLEAN) != LUA_TNIL && site)
            site->keys = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (get_typed(L, A_OPTS, what, "max_bytes", LUA_TNUMBER) != LUA_TNIL) {
            if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 ||
                lua_tointeger(L, -1) > (lua_Integer)CM_CACHE_MAX_FILE)
                /* %d: lua_pushvfstring knows no %u (it raised "invalid option") */
                cm_lua_opt_error(L, what, "option 'max_bytes' must be an integer in 1..%d",
                                 (int)CM_CACHE_MAX_FILE);
            mo.max_bytes = (size_t)lua_tointeger(L, -1);
        }
        lua_pop(L, 1);
        if (get_typed(L, A_OPTS, what, "renew", LUA_TTABLE) != LUA_TNIL) {
            char rwhat[64];
            snprintf(rwhat, sizeof rwhat, "%s: renew", what);
            cm_lua_renewal_opts(L, -1, rwhat, ro);
            mo.renew = ro;
        }
        lua_pop(L, 1);
        if (get_typed(L, A_OPTS, what, "threads", LUA_TNUMBER) != LUA_TNIL) {
            lua_Integer t;
            if (!lua_isinteger(L, -1) || (t = lua_tointeger(L, -1)) < 0 || t > MANY_MAX_THREADS)
                cm_lua_opt_error(L, what, "option 'threads' must be an integer in 0..%d",
                                 MANY_MAX_THREADS);
            mo.threads = (unsigned)lua_tointeger(L, -1);
        }
        lua_pop(L, 1);
    }
    n = (lua_Integer)lua_rawlen(L, A_PEMS);
    if (n > INT32_MAX) cm_lua_opt_error(L, what, "too many certificates");
    /* every argument is checked before the cache changes at all */
    check_many_args(L, what, n, files);
    *o = mo;
    *files_out = files;
    return n;
}

/* Push the result table of n items (at A_RESULT). */
static void new_many_result(lua_State *L, lua_Integer n)
{
    int k;
    lua_createtable(L, 0, 7);
    for (k = 0; MANY_FIELDS[k]; k++) {
        int sparse = strcmp(MANY_FIELDS[k], "error") == 0 || strcmp(MANY_FIELDS[k], "code") == 0;
        lua_createtable(L, sparse ? 0 : (int)n, 0);
        lua_setfield(L, -2, MANY_FIELDS[k]);
    }
}

static int l_add_many(lua_State *L)
{
    struct lcache *lc = check_open(L);
    struct cm_cache_many_opts mo;
    struct cm_renewal_opts ro;
    struct cm_cache_item *items;
    lua_Integer n, first;
    int files = 0;

    n = many_args(L, "cache:add_many", &mo, &ro, &files, NULL);
    new_many_result(L, n); /* A_RESULT */
    /* A_ITEMS: Lua owns the items, so a raise never leaks them */
    items = lua_newuserdatauv(L, (size_t)(n < MANY_CHUNK ? (n ? n : 1) : MANY_CHUNK) * sizeof *items, 0);
    for (first = 0; first < n; first += MANY_CHUNK) {
        size_t cnt = (size_t)(n - first < MANY_CHUNK ? n - first : MANY_CHUNK), j;
        struct cm_result res;
        fill_items(L, items, first, cnt, files); /* pushes the names userdata */
        mo.first_index = (size_t)first + 1;
        if (cm_cache_add_many(lc->c, items, cnt, &mo, &res) != CM_OK) {
            /* nothing of this chunk was done: say so on each item */
            for (j = 0; j < cnt; j++) {
                items[j].state = CM_CACHE_ITEM_ERROR;
                cm_fail(&items[j].res, res.code, "item %zu: %s", (size_t)first + j + 1,
                        res.message);
            }
        }
        lua_pop(L, 1); /* the names userdata */
        for (j = 0; j < cnt; j++) push_outcome(L, &items[j], first + (lua_Integer)j + 1);
    }
    lua_settop(L, A_RESULT);
    return 1;
}

/* ---- c:add_many_start(pems, opts) -> batch; batch:finish() ------------- */

#define BATCH_MT "certmaint.cache.batch"
#define BATCH_MAX (4 * MANY_CHUNK) /* all of a batch may be parsed ahead: keep it small */

/* A batch parsing on the core's threads.  It owns its items and copies of
 * every string they point to (the threads read them while Lua runs and may
 * collect the tables they came from); uservalue 1 is the cache. */
struct lbatch {
    struct cm_cache_batch *b; /* NULL once finished or dropped */
    struct cm_cache_item *items;
    size_t n;
    char *strings;            /* paths/PEMs, companions, names, NUL-terminated */
    const char **names;       /* the items' names arrays, pointing into strings */
    int started, finished;
    struct cm_result start_res; /* when start failed (b NULL, started 0) */
};

static void lbatch_release(struct lbatch *lb)
{
    cm_cache_batch_free(lb->b); /* stops and joins the threads first */
    lb->b = NULL;
    free(lb->items); lb->items = NULL;
    free(lb->strings); lb->strings = NULL;
    free(lb->names); lb->names = NULL;
}

static int l_batch_gc(lua_State *L)
{
    lbatch_release(luaL_checkudata(L, 1, BATCH_MT));
    return 0;
}

/* Copy s (len bytes) to *at, NUL-terminated; return the copy. */
static const char *put_string(char **at, const char *s, size_t len)
{
    char *d = *at;
    memcpy(d, s, len);
    d[len] = '\0';
    *at += len + 1;
    return d;
}

/* Deep-copy the borrowed items lb->items[0..n) (fill_items's) into lb. */
static int own_items(struct lbatch *lb)
{
    size_t total = 1, nnames = 0, j, k, used = 0;
    char *at;
    for (j = 0; j < lb->n; j++) {
        const struct cm_cache_item *it = &lb->items[j];
        total += (it->pem ? it->pem_len : strlen(it->path)) + 1;
        if (it->companion) total += strlen(it->companion) + 1;
        for (k = 0; k < it->names_count; k++) total += strlen(it->names[k]) + 1;
        nnames += it->names_count;
    }
    if (!(lb->strings = malloc(total))) return CM_ERR;
    if (nnames && !(lb->names = malloc(nnames * sizeof *lb->names))) return CM_ERR;
    at = lb->strings;
    for (j = 0; j < lb->n; j++) {
        struct cm_cache_item *it = &lb->items[j];
        if (it->pem) it->pem = put_string(&at, it->pem, it->pem_len);
        else it->path = put_string(&at, it->path, strlen(it->path));
        if (it->companion) it->companion = put_string(&at, it->companion, strlen(it->companion));
        if (it->names) {
            const char **dst = lb->names + used;
            for (k = 0; k < it->names_count; k++)
                dst[k] = put_string(&at, it->names[k], strlen(it->names[k]));
            it->names = dst;
            used += it->names_count;
        }
    }
    return CM_OK;
}

/* Point the items' path (a name, as fill_items left it) and companion at
 * their site files, built into *buf (malloc'd; the caller frees it once
 * own_items copied them).  CM_ERR with the failing item's number in *bad
 * (its name does not make a storage key: res says why) or *bad 0 (out of
 * memory). */
static int site_paths(struct lbatch *lb, const struct site_args *site, char **buf, size_t *bad,
                      struct cm_result *res)
{
    size_t j, cap = 1, per;
    char *at;
    *buf = NULL;
    *bad = 0;
    /* <dir>/<key>/<key>.crt and .key: at most 2 * (dir + 2 keys + 7) a name */
    per = 2 * (site->dir_len + 2 * CM_NAME_BUF + 8);
    if (lb->n > SIZE_MAX / per) return CM_ERR;
    cap += lb->n * per;
    if (!(at = *buf = malloc(cap))) return CM_ERR;
    for (j = 0; j < lb->n; j++) {
        struct cm_cache_item *it = &lb->items[j];
        char key[CM_NAME_BUF];
        int w;
        if (cm_name_storage_key(it->path, strlen(it->path), key, res) != CM_OK) {
            *bad = j + 1;
            return CM_ERR;
        }
        w = snprintf(at, per / 2, "%s/%s/%s.crt", site->dir, key, key);
        if (w < 0 || (size_t)w >= per / 2) {
            *bad = j + 1;
            return cm_fail(res, "toobig", "its site path is too long");
        }
        it->path = at;
        at += w + 1;
        if (site->keys) {
            memcpy(at, it->path, (size_t)w - 3);
            memcpy(at + w - 3, "key", 4);
            it->companion = at;
            at += w + 1;
        }
    }
    return CM_OK;
}

/* c:add_many_start(pems, opts): add_many's arguments; starts reading and
 * parsing them on the parse threads and returns a batch at once.
 * batch:finish() adds them to the cache and returns what add_many would
 * have. */
static int l_add_many_start(lua_State *L)
{
    static const char what[] = "cache:add_many_start";
    struct cm_cache_many_opts mo;
    struct cm_renewal_opts ro;
    struct lbatch *lb;
    lua_Integer n;
    int files = 0;
    struct site_args site = {NULL, 0, 0};

    check_open(L);
    n = many_args(L, what, &mo, &ro, &files, &site);
    if (n > BATCH_MAX) cm_lua_opt_error(L, what, "at most %d certificates a batch", BATCH_MAX);
    lb = lua_newuserdatauv(L, sizeof *lb, 1); /* A_RESULT's slot: the batch */
    memset(lb, 0, sizeof *lb);
    luaL_setmetatable(L, BATCH_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    lb->n = (size_t)n;
    if (!(lb->items = calloc(lb->n ? lb->n : 1, sizeof *lb->items))) return luaL_error(L, "%s: out of memory", what);
    fill_items(L, lb->items, 0, lb->n, files); /* borrowed; pushes the names userdata */
    if (site.dir) {
        char *paths = NULL;
        size_t bad = 0;
        struct cm_result res;
        int rc = site_paths(lb, &site, &paths, &bad, &res);
        if (rc == CM_OK) rc = own_items(lb);
        free(paths);
        if (rc != CM_OK && bad)
            return luaL_error(L, "%s: names[%d]: %s", what, (int)bad, res.message);
        if (rc != CM_OK) return luaL_error(L, "%s: out of memory", what);
    } else if (own_items(lb) != CM_OK) {
        return luaL_error(L, "%s: out of memory", what);
    }
    lua_pop(L, 1);
    mo.first_index = 1;
    if (cm_cache_batch_start(&lb->b, lb->items, lb->n, &mo, &lb->start_res) != CM_OK) lb->b = NULL;
    else lb->started = 1;
    return 1;
}

static int l_batch_finish(lua_State *L)
{
    struct lbatch *lb = luaL_checkudata(L, 1, BATCH_MT);
    struct lcache *lc;
    size_t j;
    if (lb->finished) return luaL_error(L, "cache batch: finished already");
    if (!lb->items) return luaL_error(L, "cache batch: dropped");
    lua_settop(L, 1);
    lua_getiuservalue(L, 1, 1);
    lc = luaL_checkudata(L, 2, CACHE_MT);
    if (!lc->c) {
        lbatch_release(lb);
        return luaL_error(L, "attempt to use a closed cache");
    }
    lua_settop(L, A_RESULT - 1);
    new_many_result(L, (lua_Integer)lb->n); /* A_RESULT */
    if (lb->started) {
        cm_cache_batch_finish(lc->c, lb->b); /* frees it */
        lb->b = NULL;
    } else {
        /* nothing was done: say so on each item, as add_many does */
        for (j = 0; j < lb->n; j++) {
            lb->items[j].state = CM_CACHE_ITEM_ERROR;
            cm_fail(&lb->items[j].res, lb->start_res.code, "item %zu: %s", j + 1,
                    lb->start_res.message);
        }
    }
    lb->finished = 1;
    for (j = 0; j < lb->n; j++) push_outcome(L, &lb->items[j], (lua_Integer)j + 1);
    lbatch_release(lb);
    lua_settop(L, A_RESULT);
    return 1;
}

/* batch:drop(): stop parsing (joins the threads), add nothing; idempotent. */
static int l_batch_drop(lua_State *L)
{
    struct lbatch *lb = luaL_checkudata(L, 1, BATCH_MT);
    lbatch_release(lb);
    return 0;
}

/* ---- c:status_json(ids, fields, opts) ----------------------------------- */

/* The text being written; its bytes live in a guard (g->pem), so a raise at
 * any point frees them. */
struct text {
    struct guard *g;
    size_t len, cap;
    FILE *file; /* opts.file: the text goes there in pieces of ~TEXT_FLUSH bytes */
};

#define TEXT_FLUSH (64 * 1024)

/* Room for n more bytes: CM_OK, or CM_ERR (out of memory; nothing raised). */
static int text_reserve(struct text *t, size_t n)
{
    size_t cap = t->cap ? t->cap : 16384;
    char *p;
    if (t->cap - t->len >= n) return CM_OK;
    while (cap - t->len < n) {
        if (cap > SIZE_MAX / 2) return CM_ERR;
        cap *= 2;
    }
    if (!(p = realloc(t->g->pem, cap))) return CM_ERR;
    t->g->pem = p;
    t->cap = cap;
    return CM_OK;
}

static void text_add(lua_State *L, struct text *t, const char *s, size_t n)
{
    if (text_reserve(t, n) != CM_OK) luaL_error(L, "cache:status_json: out of memory");
    memcpy(t->g->pem + t->len, s, n);
    t->len += n;
}

#define TEXT_LIT(L, t, lit) text_add((L), (t), (lit), sizeof(lit) - 1)

/* Add malloc'd JSON text j (freed here, on every path), each line after the
 * first indented by `indent` more spaces. */
static void text_add_json(lua_State *L, struct text *t, char *j, int indent)
{
    size_t len = strlen(j), lines = 0, i;
    char *p;
    for (i = 0; i < len; i++) lines += j[i] == '\n';
    if (lines > (SIZE_MAX - len) / 16 || text_reserve(t, len + lines * (size_t)indent) != CM_OK) {
        free(j);
        luaL_error(L, "cache:status_json: out of memory");
    }
    p = t->g->pem + t->len;
    for (i = 0; i < len; i++) {
        *p++ = j[i];
        if (j[i] == '\n') {
            memset(p, ' ', (size_t)indent);
            p += indent;
        }
    }
    t->len = (size_t)(p - t->g->pem);
    free(j);
}

/* Printable ASCII without '"' and '\\': the JSON text is the string quoted. */
static int plain_ascii(const char *s, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') return 0;
    }
    return 1;
}

/* What a raise says about the value being written: row and field. */
struct at {
    lua_Integer row;
    const char *field;
};

/* s as a JSON string, escaped exactly as core.json_encode escapes it. */
static void text_string(lua_State *L, struct text *t, const char *s, size_t n, const struct at *at)
{
    char *j;
    if (plain_ascii(s, n)) {
        if (text_reserve(t, n + 2) != CM_OK) luaL_error(L, "cache:status_json: out of memory");
        t->g->pem[t->len++] = '"';
        memcpy(t->g->pem + t->len, s, n);
        t->len += n;
        t->g->pem[t->len++] = '"';
        return;
    }
    if (!(j = cm_json_string_text(s, n)))
        luaL_error(L, "cache:status_json: row %I, field '%s': string is not valid UTF-8 (or out of memory)",
                   at->row, at->field);
    text_add_json(L, t, j, 0);
}

/* A time: "2026-01-01T00:00:00Z" (whole seconds), or null when not finite. */
static void text_time(lua_State *L, struct text *t, double v)
{
    char iso[CM_RFC3339_ISO_MAX + 2];
    size_t len = cm_rfc3339_iso(v, iso + 1);
    if (!len) {
        TEXT_LIT(L, t, "null");
        return;
    }
    iso[0] = '"';
    iso[len + 1] = '"';
    text_add(L, t, iso, len + 2);
}

static void text_integer(lua_State *L, struct text *t, long long v)
{
    char num[32];
    int len = snprintf(num, sizeof num, "%lld", v);
    text_add(L, t, num, (size_t)len);
}

/* The table at idx is a list of 1..n plain-ASCII strings, n >= 1, and
 * nothing else: it has the fast form below. */
static int plain_string_list(lua_State *L, int idx, lua_Integer *n_out)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx), i, keys = 0;
    size_t len;
    if (n < 1 || n > 1000) return 0;
    for (i = 1; i <= n; i++) {
        int ok = lua_rawgeti(L, idx, i) == LUA_TSTRING;
        const char *s = ok ? lua_tolstring(L, -1, &len) : NULL;
        lua_pop(L, 1);
        if (!ok || !plain_ascii(s, len)) return 0;
    }
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (++keys > n) {
            lua_pop(L, 1);
            return 0;
        }
    }
    *n_out = n;
    return keys == n;
}

/* The Lua value at idx (a field of a row, written at `indent` spaces) as
 * core.json_encode{pretty = true} writes it. */
static void text_value(lua_State *L, struct text *t, int idx, int indent, const struct at *at)
{
    lua_Integer n, i;
    size_t len;
    const char *s;
    char err[400], *j;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        TEXT_LIT(L, t, "null");
        return;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx)) TEXT_LIT(L, t, "true");
        else TEXT_LIT(L, t, "false");
        return;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            text_integer(L, t, (long long)lua_tointeger(L, idx));
            return;
        }
        break;
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        text_string(L, t, s, len, at);
        return;
    case LUA_TTABLE:
        if (!plain_string_list(L, idx, &n)) break;
        TEXT_LIT(L, t, "[\n");
        for (i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, i);
            s = lua_tolstring(L, -1, &len);
            if (text_reserve(t, (size_t)indent + 2) != CM_OK) luaL_error(L, "cache:status_json: out of memory");
            memset(t->g->pem + t->len, ' ', (size_t)indent + 2);
            t->len += (size_t)indent + 2;
            text_string(L, t, s, len, at);
            lua_pop(L, 1);
            if (i < n) TEXT_LIT(L, t, ",\n");
            else TEXT_LIT(L, t, "\n");
        }
        if (text_reserve(t, (size_t)indent + 1) != CM_OK) luaL_error(L, "cache:status_json: out of memory");
        memset(t->g->pem + t->len, ' ', (size_t)indent);
        t->len += (size_t)indent;
        t->g->pem[t->len++] = ']';
        return;
    default:
        break;
    }
    /* floats, other tables, core.json_null: the encoder itself */
    if (!(j = cm_lua_json_pretty(L, idx, err, sizeof err)))
        luaL_error(L, "cache:status_json: row %I, field '%s': %s", at->row, at->field, err);
    text_add_json(L, t, j, indent);
}

/* The fields a status row takes from the cache, in key order. */
enum status_field {
    SF_ISSUER,
    SF_MUST_STAPLE,
    SF_NOT_AFTER,
    SF_NOT_BEFORE,
    SF_OCSP,
    SF_RENEWAL_AT,
    SF_RENEWAL_DUE, /* only with opts.renew */
    SF_SERIAL,
    SF_TIME_LEFT,
    SF_COUNT,
    SF_LUA = -1 /* a column from fields */
};

static const char *const STATUS_FIELD_NAMES[SF_COUNT] = {
    "issuer",      "must_staple", "not_after", "not_before", "ocsp",
    "renewal_at",  "renewal_due", "serial",    "time_left",
};

#define STATUS_MAX_FIELDS 64

struct status_col {
    const char *name;
    enum status_field field;
    int idx;  /* SF_LUA: the column's stack index */
    int time; /* SF_LUA: numbers are written as RFC 3339 times (opts.times) */
};

static int col_cmp(const void *a, const void *b)
{
    return strcmp(((const struct status_col *)a)->name, ((const struct status_col *)b)->name);
}

/* A cache-held field of the row whose entry is v (NULL: no certificate). */
static void text_cache_field(lua_State *L, struct text *t, enum status_field f,
                             const struct cm_cache_view *v, double now,
                             const struct cm_renewal_opts *ro, const struct at *at)
{
    if (f == SF_RENEWAL_DUE) {
        int due = v && cm_renewal_due((double)v->not_before, (double)v->not_after, NAN, ro, now,
                                      NULL, NULL);
        if (due) TEXT_LIT(L, t, "true");
        else TEXT_LIT(L, t, "false");
        return;
    }
    if (!v) {
        TEXT_LIT(L, t, "null");
        return;
    }
    switch (f) {
    case SF_ISSUER:
        text_string(L, t, v->issuer, strlen(v->issuer), at);
        break;
    case SF_MUST_STAPLE:
        if (v->flags & CM_CACHE_MUST_STAPLE) TEXT_LIT(L, t, "true");
        else TEXT_LIT(L, t, "false");
        break;
    case SF_NOT_AFTER:
        text_time(L, t, (double)v->not_after);
        break;
    case SF_NOT_BEFORE:
        text_time(L, t, (double)v->not_before);
        break;
    case SF_OCSP:
        if (!(v->flags & CM_CACHE_HAS_STAPLE)) {
            TEXT_LIT(L, t, "null");
            break;
        }
        TEXT_LIT(L, t, "{\n      \"next_update\": ");
        text_time(L, t, v->staple.next_update);
        TEXT_LIT(L, t, ",\n      \"status\": ");
        text_string(L, t, cm_ocsp_status_name(v->staple.status),
                    strlen(cm_ocsp_status_name(v->staple.status)), at);
        TEXT_LIT(L, t, ",\n      \"this_update\": ");
        text_time(L, t, v->staple.this_update);
        TEXT_LIT(L, t, "\n    }");
        break;
    case SF_RENEWAL_AT:
        if (isinf(v->renew_at) && v->renew_at > 0) TEXT_LIT(L, t, "null"); /* never */
        else text_time(L, t, v->renew_at);
        break;
    case SF_SERIAL:
        text_string(L, t, v->serial_hex, strlen(v->serial_hex), at);
        break;
    case SF_TIME_LEFT:
        text_integer(L, t, (long long)floor((double)v->not_after - now));
        break;
    default:
        break;
    }
}

/* c:status_json(ids, fields, opts) -> text: the rows of `status --json` for
 * ids[1..n] (a certificate id, or false for an entry with no certificate),
 * each a pretty JSON object as core.json_encode{pretty = true} writes it
 * inside an array ("  {\n    \"attempts\": 0,\n ...  }"), joined by ",\n",
 * with no brackets (the caller writes many batches as one array).  A row has
 * the cache's fields of its certificate -- issuer, must_staple, not_after,
 * not_before, ocsp, renewal_at (null for never), serial, time_left (from opts.now), and
 * with opts.renew (the rule's options) renewal_due by the default rule -- all
 * null (renewal_due false) without one, and the caller's fields: fields[name]
 * is a list holding row i's value at [i], written as json_encode would (nil:
 * null); with opts.times = {name, ...} those columns' numbers are written as
 * RFC 3339 times.  Keys are sorted as json_encode sorts them.  Bad arguments
 * (a field the cache writes, an id that is not 64 hex digits, a value
 * json_encode refuses) raise, naming the row and field. */

/* Stack slots of l_status_json. */
enum { S_SELF = 1, S_IDS, S_FIELDS, S_OPTS, S_GUARD, S_COLS };

static int l_status_json(lua_State *L)
{
    static const char *const keys[] = {"now", "renew", "times", "file", NULL};
    static const char what[] = "cache:status_json";
    struct lcache *lc = check_open(L);
    struct status_col cols[STATUS_MAX_FIELDS + SF_COUNT];
    struct cm_renewal_opts ro;
    struct text t;
    int ncols = 0, have_renew = 0, k;
    lua_Integer n, row;
    double now;

    luaL_checktype(L, S_IDS, LUA_TTABLE);
    luaL_checktype(L, S_FIELDS, LUA_TTABLE);
    luaL_checktype(L, S_OPTS, LUA_TTABLE);
    lua_settop(L, S_OPTS);
    cm_lua_check_options(L, S_OPTS, what, keys);
    if (get_typed(L, S_OPTS, what, "now", LUA_TNUMBER) == LUA_TNIL)
        cm_lua_opt_error(L, what, "option 'now' is required (the time time_left counts from)");
    now = lua_tonumber(L, -1);
    if (!isfinite(now)) cm_lua_opt_error(L, what, "option 'now' must be a finite number");
    lua_pop(L, 1);
    if (get_typed(L, S_OPTS, what, "renew", LUA_TTABLE) != LUA_TNIL) {
        cm_lua_renewal_opts(L, -1, "cache:status_json: renew", &ro);
        have_renew = 1;
    }
    lua_pop(L, 1);

    if (!have_renew) cm_renewal_opts_init(&ro); /* unused then; defined all the same */
    t.g = guard_push(L); /* S_GUARD */
    t.len = t.cap = 0;
    t.file = NULL;
    if (lua_getfield(L, S_OPTS, "file") != LUA_TNIL) {
        luaL_Stream *st = luaL_testudata(L, -1, LUA_FILEHANDLE);
        if (!st || !st->closef)
            cm_lua_opt_error(L, what, "option 'file' must be an open file (io.stdout, io.open(...)), not %s",
                             st ? "a closed file" : luaL_typename(L, -1));
        t.file = st->f;
    }
    lua_pop(L, 1);
    for (k = 0; k < SF_COUNT; k++) {
        if (k == SF_RENEWAL_DUE && !have_renew) continue;
        cols[ncols].name = STATUS_FIELD_NAMES[k];
        cols[ncols].field = (enum status_field)k;
        cols[ncols++].idx = 0;
    }
    /* the columns from Lua, each pushed (from S_COLS on) so it stays put */
    lua_pushnil(L);
    while (lua_next(L, S_FIELDS) != 0) {
        const char *name;
        if (lua_type(L, -2) != LUA_TSTRING)
            cm_lua_opt_error(L, what, "fields: keys must be field names (strings), not %s",
                             luaL_typename(L, -2));
        name = lua_tostring(L, -2);
        if (lua_type(L, -1) != LUA_TTABLE)
            cm_lua_opt_error(L, what, "fields.%s must be a list (a value per row), not %s", name,
                             luaL_typename(L, -1));
        for (k = 0; k < ncols; k++)
            if (strcmp(cols[k].name, name) == 0)
                cm_lua_opt_error(L, what, "fields.%s: the cache writes that field%s", name,
                                 strcmp(name, "renewal_due") == 0 ? " (option 'renew' was given)" : "");
        if (ncols >= STATUS_MAX_FIELDS) cm_lua_opt_error(L, what, "fields: more than %d", STATUS_MAX_FIELDS);
        luaL_checkstack(L, 3, what);
        lua_insert(L, -2); /* the column stays, the key goes on to lua_next */
        cols[ncols].name = name;
        cols[ncols].field = SF_LUA;
        cols[ncols].time = 0;
        cols[ncols++].idx = lua_gettop(L) - 1;
    }
    if (get_typed(L, S_OPTS, what, "times", LUA_TTABLE) != LUA_TNIL) {
        lua_Integer i, nt = (lua_Integer)lua_rawlen(L, -1);
        for (i = 1; i <= nt; i++) {
            const char *name;
            if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
                cm_lua_opt_error(L, what, "option 'times[%I]' must be a field name, not %s", i,
                                 luaL_typename(L, -1));
            name = lua_tostring(L, -1);
            for (k = 0; k < ncols; k++)
                if (cols[k].field == SF_LUA && strcmp(cols[k].name, name) == 0) cols[k].time = 1;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    qsort(cols, (size_t)ncols, sizeof cols[0], col_cmp); /* json_encode's key order */

    n = (lua_Integer)lua_rawlen(L, S_IDS);
    for (row = 1; row <= n; row++) {
        struct cm_cache_view view, *v = NULL;
        struct at at;
        int type = lua_rawgeti(L, S_IDS, row);
        at.row = row;
        if (type == LUA_TSTRING) {
            struct cm_cache_id id;
            size_t len;
            const char *s = lua_tolstring(L, -1, &len);
            if (cm_cache_id_parse(s, len, &id) != CM_OK)
                cm_lua_opt_error(L, what, "ids[%I] must be a certificate id (64 hex digits)", row);
            if (cm_cache_view(lc->c, &id, &view)) v = &view;
        } else if (type != LUA_TBOOLEAN || lua_toboolean(L, -1)) {
            cm_lua_opt_error(L, what, "ids[%I] must be a certificate id or false (no certificate), not %s",
                             row, luaL_typename(L, -1));
        }
        lua_pop(L, 1);
        if (row > 1) TEXT_LIT(L, &t, ",\n  {\n");
        else TEXT_LIT(L, &t, "  {\n");
        /* Nothing below changes the cache, so the view stays valid (as in
         * cache:get: only a __gc that changed this very cache could break
         * that, and certmaint sets none). */
        for (k = 0; k < ncols; k++) {
            at.field = cols[k].name;
            TEXT_LIT(L, &t, "    ");
            text_string(L, &t, cols[k].name, strlen(cols[k].name), &at);
            TEXT_LIT(L, &t, ": ");
            if (cols[k].field == SF_LUA) {
                if (lua_rawgeti(L, cols[k].idx, row) == LUA_TNUMBER && cols[k].time)
                    text_time(L, &t, lua_tonumber(L, -1));
                else
                    text_value(L, &t, lua_gettop(L), 4, &at);
                lua_pop(L, 1);
            } else {
                text_cache_field(L, &t, cols[k].field, v, now, &ro, &at);
            }
            if (k + 1 < ncols) TEXT_LIT(L, &t, ",\n");
            else TEXT_LIT(L, &t, "\n");
        }
        TEXT_LIT(L, &t, "  }");
        if (t.file && (t.len >= TEXT_FLUSH || row == n)) {
            if (fwrite(t.g->pem, 1, t.len, t.file) != t.len) {
                int e = errno;
                return cm_lua_failf(L, cm_errno_name(e), "cache:status_json: write: %s", strerror(e));
            }
            t.len = 0;
        }
    }
    if (t.file) {
        free(t.g->pem); t.g->pem = NULL;
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushlstring(L, t.len ? t.g->pem : "", t.len);
    free(t.g->pem); t.g->pem = NULL;
    return 1;
}

/* ---- lookups ------------------------------------------------------------ */

static int l_lookup(lua_State *L)
{
    struct lcache *lc = check_open(L);
    size_t len;
    const char *name = luaL_checklstring(L, 2, &len);
    struct cm_cache_id id;
    if (cm_cache_lookup(lc->c, name, len, &id)) push_id(L, &id);
    else lua_pushnil(L);
    return 1;
}

static int l_find(lua_State *L)
{
    struct lcache *lc = check_open(L);
    size_t len, n = 0;
    const char *name = luaL_checklstring(L, 2, &len);
    struct cm_result res;
    struct guard *g = guard_push(L);
    if (cm_cache_find(lc->c, name, len, &g->ids, &n, &res) != CM_OK) return cm_lua_fail(L, &res);
    return push_ids(L, g, n);
}

static int l_remove(lua_State *L)
{
    struct lcache *lc = check_open(L);
    struct cm_cache_id id;
    check_id(L, 2, &id);
    lua_pushboolean(L, cm_cache_remove(lc->c, &id));
    return 1;
}

/* ---- c:set(id, fields) -------------------------------------------------- */

static void read_staple(lua_State *L, int idx, struct cm_cache_staple *st)
{
    static const char *const keys[] = {"status", "this_update", "next_update", "refresh_at",
                                       "der", NULL};
    static const char what[] = "cache:set: ocsp";
    int status;
    size_t len;

    cm_lua_check_options(L, idx, what, keys);
    memset(st, 0, sizeof *st);
    if (get_typed(L, idx, what, "status", LUA_TSTRING) == LUA_TNIL)
        luaL_error(L, "%s: option 'status' is required", what);
    status = cm_ocsp_status_parse(lua_tostring(L, -1));
    if (status < 0)
        luaL_error(L, "%s: status must be good, revoked or unknown, not '%s'", what,
                   lua_tostring(L, -1));
    st->status = (enum cm_ocsp_cert_status)status;
    if (get_typed(L, idx, what, "this_update", LUA_TNUMBER) == LUA_TNIL)
        luaL_error(L, "%s: option 'this_update' is required", what);
    st->this_update = lua_tonumber(L, -1);
    if (get_typed(L, idx, what, "next_update", LUA_TNUMBER) == LUA_TNIL)
        luaL_error(L, "%s: option 'next_update' is required", what);
    st->next_update = lua_tonumber(L, -1);
    st->refresh_at = NAN;
    if (get_typed(L, idx, what, "refresh_at", LUA_TNUMBER) != LUA_TNIL)
        st->refresh_at = lua_tonumber(L, -1);
    if (get_typed(L, idx, what, "der", LUA_TSTRING) == LUA_TNIL)
        luaL_error(L, "%s: option 'der' is required", what);
    /* the string stays referenced by the fields table, which the caller keeps */
    st->der = (const unsigned char *)lua_tolstring(L, -1, &len);
    st->der_len = len;
    lua_pop(L, 5);
    if (isnan(st->this_update) || isnan(st->next_update))
        luaL_error(L, "%s: a time is NaN", what);
}

static int l_set(lua_State *L)
{
    static const char *const keys[] = {"managed", "on_demand", "renew_at", "next_attempt",
                                       "attempts", "last_error", "ocsp", NULL};
    static const char what[] = "cache:set";
    struct lcache *lc = check_open(L);
    struct cm_cache_update u;
    struct cm_cache_staple st;
    struct cm_cache_id id;
    struct cm_result res;
    int t;

    check_id(L, 2, &id);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    cm_lua_check_options(L, 3, what, keys);
    memset(&u, 0, sizeof u);
    if (get_typed(L, 3, what, "managed", LUA_TBOOLEAN) != LUA_TNIL) {
        u.fields |= CM_CACHE_SET_MANAGED;
        u.managed = lua_toboolean(L, -1);
    }
    if (get_typed(L, 3, what, "on_demand", LUA_TBOOLEAN) != LUA_TNIL) {
        u.fields |= CM_CACHE_SET_ON_DEMAND;
        u.on_demand = lua_toboolean(L, -1);
    }
    if (get_typed(L, 3, what, "renew_at", LUA_TNUMBER) != LUA_TNIL) {
        u.fields |= CM_CACHE_SET_RENEW_AT;
        u.renew_at = lua_tonumber(L, -1);
        if (isnan(u.renew_at)) luaL_error(L, "%s: option 'renew_at' is NaN", what);
    }
    if (get_typed(L, 3, what, "next_attempt", LUA_TNUMBER) != LUA_TNIL) {
        u.fields |= CM_CACHE_SET_NEXT_ATTEMPT;
        u.next_attempt = lua_tonumber(L, -1);
        if (isnan(u.next_attempt)) luaL_error(L, "%s: option 'next_attempt' is NaN", what);
    }
    if (get_typed(L, 3, what, "attempts", LUA_TNUMBER) != LUA_TNIL) {
        lua_Integer a;
        if (!lua_isinteger(L, -1)) luaL_error(L, "%s: option 'attempts' must be an integer", what);
        a = lua_tointeger(L, -1);
        if (a < 0 || a > UINT32_MAX)
            luaL_error(L, "%s: option 'attempts' out of range", what);
        u.fields |= CM_CACHE_SET_ATTEMPTS;
        u.attempts = (unsigned)a;
    }
    lua_pop(L, 5);
    t = lua_getfield(L, 3, "last_error");
    if (t == LUA_TSTRING) {
        u.fields |= CM_CACHE_SET_LAST_ERROR;
        u.last_error = lua_tostring(L, -1);
    } else if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        u.fields |= CM_CACHE_SET_LAST_ERROR;
        u.last_error = NULL;
    } else if (t != LUA_TNIL) {
        luaL_error(L, "%s: option 'last_error' must be a string or false", what);
    }
    t = lua_getfield(L, 3, "ocsp");
    if (t == LUA_TTABLE) {
        read_staple(L, lua_gettop(L), &st);
        u.fields |= CM_CACHE_SET_OCSP;
        u.ocsp = &st;
    } else if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        u.fields |= CM_CACHE_SET_OCSP;
        u.ocsp = NULL;
    } else if (t != LUA_TNIL) {
        luaL_error(L, "%s: option 'ocsp' must be a table or false", what);
    }
    /* last_error and ocsp stay on the stack, so the borrowed strings live */
    if (cm_cache_set(lc->c, &id, &u, &res) != CM_OK) {
        if (strcmp(res.code, "ENOENT") == 0) {
            lua_pushboolean(L, 0);
            return 1;
        }
        return cm_lua_fail(L, &res);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- scans -------------------------------------------------------------- */

static size_t opt_limit(lua_State *L, int arg)
{
    lua_Integer lim = luaL_optinteger(L, arg, 0);
    if (!lua_isnoneornil(L, arg)) luaL_argcheck(L, lim > 0, arg, "limit must be positive");
    return (size_t)lim;
}

static int l_due(lua_State *L)
{
    struct lcache *lc = check_open(L);
    double now = luaL_checknumber(L, 2);
    size_t limit = opt_limit(L, 3), n = 0;
    struct cm_result res;
    struct guard *g = guard_push(L);
    if (cm_cache_scan_due(lc->c, now, limit, &g->ids, &n, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    return push_ids(L, g, n);
}

static int l_staples_due(lua_State *L)
{
    struct lcache *lc = check_open(L);
    double now = luaL_checknumber(L, 2);
    size_t limit = opt_limit(L, 3), n = 0;
    struct cm_result res;
    struct guard *g = guard_push(L);
    if (cm_cache_scan_staples(lc->c, now, limit, &g->ids, &n, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    return push_ids(L, g, n);
}

static int l_crl_due(lua_State *L)
{
    struct lcache *lc = check_open(L);
    double now = luaL_checknumber(L, 2);
    size_t limit = opt_limit(L, 3), n = 0;
    struct cm_result res;
    struct guard *g = guard_push(L);
    if (cm_cache_scan_crl(lc->c, now, limit, &g->ids, &n, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    return push_ids(L, g, n);
}

static int l_expired(lua_State *L)
{
    struct lcache *lc = check_open(L);
    double now = luaL_checknumber(L, 2);
    double grace = luaL_optnumber(L, 3, 0);
    size_t n = 0;
    struct cm_result res;
    struct guard *g;
    luaL_argcheck(L, !isnan(grace), 3, "grace is NaN");
    g = guard_push(L);
    if (cm_cache_scan_expired(lc->c, now, grace, 0, &g->ids, &n, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    return push_ids(L, g, n);
}

static int l_ids(lua_State *L)
{
    static const char *const keys[] = {"managed", "must_staple", NULL};
    struct lcache *lc = check_open(L);
    int managed = -1, must_staple = 0;
    size_t n = 0;
    struct cm_result res;
    struct guard *g;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        cm_lua_check_options(L, 2, "cache:ids", keys);
        if (get_typed(L, 2, "cache:ids", "managed", LUA_TBOOLEAN) != LUA_TNIL)
            managed = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (get_typed(L, 2, "cache:ids", "must_staple", LUA_TBOOLEAN) != LUA_TNIL)
            must_staple = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (must_staple && managed != -1) return luaL_error(L, "cache:ids: managed and must_staple do not go together");
    }
    g = guard_push(L);
    if (must_staple ? cm_cache_scan_must_staple(lc->c, &g->ids, &n, &res) != CM_OK
                    : cm_cache_ids(lc->c, managed, &g->ids, &n, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    return push_ids(L, g, n);
}

static int l_count(lua_State *L)
{
    struct lcache *lc = check_open(L);
    lua_pushinteger(L, (lua_Integer)cm_cache_count(lc->c));
    return 1;
}

static int l_memory(lua_State *L)
{
    struct lcache *lc = check_open(L);
    size_t der = 0, total = cm_cache_memory(lc->c, &der);
    lua_pushinteger(L, (lua_Integer)total);
    lua_pushinteger(L, (lua_Integer)der);
    return 2;
}

int cm_lua_open_cache(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"add", l_add},
        {"add_many", l_add_many},
        {"add_many_start", l_add_many_start},
        {"get", l_get},
        {"facts", l_facts},
        {"status_json", l_status_json},
        {"lookup", l_lookup},
        {"find", l_find},
        {"remove", l_remove},
        {"set", l_set},
        {"due", l_due},
        {"staples_due", l_staples_due},
        {"crl_due", l_crl_due},
        {"expired", l_expired},
        {"ids", l_ids},
        {"count", l_count},
        {"memory", l_memory},
        {"verify_staples", cm_lua_cache_verify_staples},
        {"verify_staples_start", cm_lua_cache_verify_staples_start},
        {"staple_plan", cm_lua_cache_staple_plan},
        {"stored_staples_start", cm_lua_cache_stored_staples_start},
        {"close", l_close},
        {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", l_close},
        {"__close", l_close},
        {"__len", l_count},
        {"__tostring", l_tostring},
        {NULL, NULL},
    };
    static const luaL_Reg fns[] = {
        {"cache_new", l_cache_new},
        {NULL, NULL},
    };
    if (luaL_newmetatable(L, CACHE_MT)) {
        luaL_setfuncs(L, meta, 0);
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, BATCH_MT)) {
        static const luaL_Reg batch_methods[] = {
            {"finish", l_batch_finish},
            {"drop", l_batch_drop},
            {NULL, NULL},
        };
        lua_pushcfunction(L, l_batch_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_batch_gc);
        lua_setfield(L, -2, "__close");
        luaL_newlib(L, batch_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    cm_lua_open_ocsp_batch(L);
    if (luaL_newmetatable(L, GUARD_MT)) {
        lua_pushcfunction(L, guard_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_setfuncs(L, fns, 0);
    return 0;
}
