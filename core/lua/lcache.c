/* lcache.c - core.cache_new and the cache object's methods.
 *
 * Thin: options are read and checked into C structs first, then the core
 * (cache.c, x509.c) does the work, then results are pushed.  Whatever the core
 * hands back in malloc'ed memory (copied entries, id arrays, PEM) sits in a
 * "guard" userdata while Lua tables are built from it, so an out-of-memory
 * error raised by the Lua API cannot leak it.
 */
#include "lcore.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../cache.h"
#include "../ocsp.h"
#include "../x509.h"

#define CACHE_MT "certmaint.cache"
#define GUARD_MT "certmaint.cache.guard"

struct lcache {
    struct cm_cache *c; /* NULL once closed */
};

/* Owner of the core's malloc'ed results while Lua values are built. */
struct guard {
    struct cm_cache_cert cert;
    char *pem;
    struct cm_cache_id *ids;
};

static int guard_gc(lua_State *L)
{
    struct guard *g = luaL_checkudata(L, 1, GUARD_MT);
    cm_cache_cert_free(&g->cert);
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

/* Whole seconds as integers (they print and serialise cleanly), else floats. */
static void push_time(lua_State *L, double t)
{
    if (isfinite(t) && t == floor(t) && t >= -9.0e15 && t <= 9.0e15)
        lua_pushinteger(L, (lua_Integer)t);
    else
        lua_pushnumber(L, t);
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

/* Reject keys of the option table at idx that are not in allowed. */
static void check_keys(lua_State *L, int idx, const char *what, const char *const allowed[])
{
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        size_t i;
        int ok = 0;
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -1);
            for (i = 0; allowed[i]; i++)
                if (strcmp(k, allowed[i]) == 0) ok = 1;
        }
        if (!ok) {
            const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                            : luaL_typename(L, -1);
            luaL_error(L, "%s: unknown field '%s'", what, k);
        }
    }
}

/* Field `name` of the table at idx: pushes it and returns its type; raises if
 * it is present with a type other than want. */
static int get_typed(lua_State *L, int idx, const char *what, const char *name, int want)
{
    int t = lua_getfield(L, idx, name);
    if (t != LUA_TNIL && t != want)
        luaL_error(L, "%s: field '%s' must be a %s, not %s", what, name, lua_typename(L, want),
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
        check_keys(L, 3, "cache:add", keys);
        if (get_typed(L, 3, "cache:add", "managed", LUA_TBOOLEAN) != LUA_TNIL)
            o.managed = lua_toboolean(L, -1);
        if (get_typed(L, 3, "cache:add", "on_demand", LUA_TBOOLEAN) != LUA_TNIL)
            o.on_demand = lua_toboolean(L, -1);
        if (get_typed(L, 3, "cache:add", "renew_at", LUA_TNUMBER) != LUA_TNIL) {
            o.renew_at = lua_tonumber(L, -1);
            if (isnan(o.renew_at)) luaL_error(L, "cache:add: field 'renew_at' is NaN");
        }
        if (get_typed(L, 3, "cache:add", "next_attempt", LUA_TNUMBER) != LUA_TNIL) {
            o.next_attempt = lua_tonumber(L, -1);
            if (isnan(o.next_attempt)) luaL_error(L, "cache:add: field 'next_attempt' is NaN");
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

/* ---- c:get(id) ---------------------------------------------------------- */

static int l_get(lua_State *L)
{
    struct lcache *lc = check_open(L);
    struct cm_cache_id id;
    struct cm_result res;
    struct guard *g;
    size_t pem_len = 0;
    const struct cm_cache_cert *ct;

    check_id(L, 2, &id);
    g = guard_push(L);
    if (cm_cache_get(lc->c, &id, &g->cert, &res) != CM_OK) {
        if (strcmp(res.code, "ENOENT") == 0) {
            lua_pushnil(L);
            return 1;
        }
        return cm_lua_fail(L, &res);
    }
    if (cm_cache_cert_pem(&g->cert, &g->pem, &pem_len, &res) != CM_OK) return cm_lua_fail(L, &res);
    ct = &g->cert;
    lua_createtable(L, 0, 20);
    push_id(L, &ct->id);
    lua_setfield(L, -2, "id");
    cm_lua_push_strlist(L, &ct->names);
    lua_setfield(L, -2, "names");
    lua_pushboolean(L, (ct->flags & CM_CACHE_MANAGED) != 0);
    lua_setfield(L, -2, "managed");
    lua_pushboolean(L, (ct->flags & CM_CACHE_ON_DEMAND) != 0);
    lua_setfield(L, -2, "on_demand");
    lua_pushstring(L, ct->issuer);
    lua_setfield(L, -2, "issuer");
    lua_pushstring(L, ct->subject);
    lua_setfield(L, -2, "subject");
    lua_pushstring(L, ct->serial_hex);
    lua_setfield(L, -2, "serial");
    lua_pushinteger(L, (lua_Integer)ct->not_before);
    lua_setfield(L, -2, "not_before");
    lua_pushinteger(L, (lua_Integer)ct->not_after);
    lua_setfield(L, -2, "not_after");
    lua_pushlstring(L, g->pem, pem_len);
    lua_setfield(L, -2, "pem");
    cm_lua_push_strlist(L, &ct->ocsp_urls);
    lua_setfield(L, -2, "ocsp_urls");
    cm_lua_push_strlist(L, &ct->crl_urls);
    lua_setfield(L, -2, "crl_urls");
    push_time(L, ct->renew_at);
    lua_setfield(L, -2, "renew_at");
    push_time(L, ct->next_attempt);
    lua_setfield(L, -2, "next_attempt");
    lua_pushinteger(L, (lua_Integer)ct->attempts);
    lua_setfield(L, -2, "attempts");
    if (ct->last_error) {
        lua_pushstring(L, ct->last_error);
        lua_setfield(L, -2, "last_error");
    }
    if (ct->flags & CM_CACHE_HAS_STAPLE) {
        lua_createtable(L, 0, 5);
        lua_pushstring(L, cm_ocsp_status_name(ct->staple.status));
        lua_setfield(L, -2, "status");
        push_time(L, ct->staple.this_update);
        lua_setfield(L, -2, "this_update");
        push_time(L, ct->staple.next_update);
        lua_setfield(L, -2, "next_update");
        push_time(L, ct->staple.refresh_at);
        lua_setfield(L, -2, "refresh_at");
        lua_pushlstring(L, (const char *)ct->staple.der, ct->staple.der_len);
        lua_setfield(L, -2, "der");
        lua_setfield(L, -2, "ocsp");
    }
    /* release now rather than at the next collection */
    cm_cache_cert_free(&g->cert);
    free(g->pem); g->pem = NULL;
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

    check_keys(L, idx, what, keys);
    memset(st, 0, sizeof *st);
    if (get_typed(L, idx, what, "status", LUA_TSTRING) == LUA_TNIL)
        luaL_error(L, "%s: field 'status' is required", what);
    status = cm_ocsp_status_parse(lua_tostring(L, -1));
    if (status < 0)
        luaL_error(L, "%s: status must be good, revoked or unknown, not '%s'", what,
                   lua_tostring(L, -1));
    st->status = (enum cm_ocsp_cert_status)status;
    if (get_typed(L, idx, what, "this_update", LUA_TNUMBER) == LUA_TNIL)
        luaL_error(L, "%s: field 'this_update' is required", what);
    st->this_update = lua_tonumber(L, -1);
    if (get_typed(L, idx, what, "next_update", LUA_TNUMBER) == LUA_TNIL)
        luaL_error(L, "%s: field 'next_update' is required", what);
    st->next_update = lua_tonumber(L, -1);
    st->refresh_at = NAN;
    if (get_typed(L, idx, what, "refresh_at", LUA_TNUMBER) != LUA_TNIL)
        st->refresh_at = lua_tonumber(L, -1);
    if (get_typed(L, idx, what, "der", LUA_TSTRING) == LUA_TNIL)
        luaL_error(L, "%s: field 'der' is required", what);
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
    check_keys(L, 3, what, keys);
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
        if (isnan(u.renew_at)) luaL_error(L, "%s: field 'renew_at' is NaN", what);
    }
    if (get_typed(L, 3, what, "next_attempt", LUA_TNUMBER) != LUA_TNIL) {
        u.fields |= CM_CACHE_SET_NEXT_ATTEMPT;
        u.next_attempt = lua_tonumber(L, -1);
        if (isnan(u.next_attempt)) luaL_error(L, "%s: field 'next_attempt' is NaN", what);
    }
    if (get_typed(L, 3, what, "attempts", LUA_TNUMBER) != LUA_TNIL) {
        lua_Integer a;
        if (!lua_isinteger(L, -1)) luaL_error(L, "%s: field 'attempts' must be an integer", what);
        a = lua_tointeger(L, -1);
        if (a < 0 || a > UINT32_MAX)
            luaL_error(L, "%s: field 'attempts' out of range", what);
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
        luaL_error(L, "%s: field 'last_error' must be a string or false", what);
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
        luaL_error(L, "%s: field 'ocsp' must be a table or false", what);
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
    static const char *const keys[] = {"managed", NULL};
    struct lcache *lc = check_open(L);
    int managed = -1;
    size_t n = 0;
    struct cm_result res;
    struct guard *g;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        check_keys(L, 2, "cache:ids", keys);
        if (get_typed(L, 2, "cache:ids", "managed", LUA_TBOOLEAN) != LUA_TNIL)
            managed = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    g = guard_push(L);
    if (cm_cache_ids(lc->c, managed, &g->ids, &n, &res) != CM_OK) return cm_lua_fail(L, &res);
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
        {"get", l_get},
        {"lookup", l_lookup},
        {"find", l_find},
        {"remove", l_remove},
        {"set", l_set},
        {"due", l_due},
        {"staples_due", l_staples_due},
        {"expired", l_expired},
        {"ids", l_ids},
        {"count", l_count},
        {"memory", l_memory},
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
    if (luaL_newmetatable(L, GUARD_MT)) {
        lua_pushcfunction(L, guard_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_setfuncs(L, fns, 0);
    return 0;
}
