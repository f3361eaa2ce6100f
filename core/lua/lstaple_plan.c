/* lstaple_plan.c - cache:staple_plan: what the OCSP pass's stored-staple
 * step needs of each certificate, without building its whole table.
 *
 *   cache:staple_plan(ids, now) -> plan
 *     plan.ids[j], plan.keys[j] (certmagic's staple key: "ocsp/<name key>-<FNV-1a
 *     of the PEM chain>"), plan.names[j] (first name, or the id), plan.urls[j]
 *     (first OCSP URL), plan.current[j] (the staple attached now, as
 *     cache:get's ocsp field with der, or false)
 *   for each id of ids still cached, valid at now, naming an OCSP responder
 *   and holding its issuer in the chain: the certificates refresh_staple
 *   would look for in storage (engine/ocsp.lua).  cache:get of each cost
 *   ~23 us a certificate in Lua, most of the step at 100k.
 */
#include "lcore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../cache.h"
#include "../name.h"
#include "../ocsp.h"
#include "../renewal.h"
#include "../x509.h"
#include "locsp_batch.h"
#include "lrenewal.h"

/* Push the current staple of v as cache:get's ocsp table (with der), or false. */
static void push_current(lua_State *L, const struct cm_cache_view *v)
{
    if (!(v->flags & CM_CACHE_HAS_STAPLE)) {
        lua_pushboolean(L, 0);
        return;
    }
    lua_createtable(L, 0, 5);
    lua_pushstring(L, cm_ocsp_status_name(v->staple.status));
    lua_setfield(L, -2, "status");
    cm_lua_push_time(L, v->staple.this_update);
    lua_setfield(L, -2, "this_update");
    cm_lua_push_time(L, v->staple.next_update);
    lua_setfield(L, -2, "next_update");
    cm_lua_push_time(L, v->staple.refresh_at);
    lua_setfield(L, -2, "refresh_at");
    lua_pushlstring(L, (const char *)v->staple.der, v->staple.der_len);
    lua_setfield(L, -2, "der");
}

/* The staple key of v into out: FNV-1a 32 of its PEM chain, in Go's %x (no
 * leading zeros), after its first name's storage key.  0 when v's name
 * makes no key or its PEM cannot be made (then the entry is left out, as
 * refresh_staple would fail on it too). */
int cm_lua_staple_key(const struct cm_cache_view *v, char *out, size_t cap)
{
    char namekey[CM_NAME_BUF];
    struct cm_result res;
    size_t len = 0;
    const char *name = cm_cache_view_item(v, CM_CACHE_NAMES, 0, &len);
    uint32_t h;
    int n;
    if (v->pem_fnv_ok) {
        h = v->pem_fnv; /* made with the entry */
    } else if (cm_x509_chain_pem_fnv1a32(v->der, v->der_len, v->chain_der, v->chain_der_len, &h, &res) != CM_OK) {
        return 0;
    }
    if (name) {
        if (cm_name_storage_key(name, len, namekey, &res) != CM_OK) return 0;
        n = snprintf(out, cap, "ocsp/%s-%x", namekey, (unsigned)h);
    } else {
        n = snprintf(out, cap, "ocsp/%x", (unsigned)h);
    }
    return n > 0 && (size_t)n < cap;
}

int cm_lua_cache_staple_plan(lua_State *L)
{
    struct cm_cache *c = cm_lua_cache_check(L, 1);
    lua_Integer n, i, j = 0;
    lua_Number now;

    luaL_checktype(L, 2, LUA_TTABLE);
    now = luaL_checknumber(L, 3);
    lua_settop(L, 3);
    n = (lua_Integer)lua_rawlen(L, 2);
    lua_createtable(L, 0, 5); /* plan, at 4; its lists at 5..9 */
    lua_createtable(L, (int)(n > INT32_MAX ? 0 : n), 0);
    lua_createtable(L, (int)(n > INT32_MAX ? 0 : n), 0);
    lua_createtable(L, (int)(n > INT32_MAX ? 0 : n), 0);
    lua_createtable(L, (int)(n > INT32_MAX ? 0 : n), 0);
    lua_createtable(L, (int)(n > INT32_MAX ? 0 : n), 0);
    for (i = 1; i <= n; i++) {
        struct cm_cache_view v;
        struct cm_cache_id id;
        char key[CM_NAME_BUF + 32];
        const char *url, *name;
        size_t url_len = 0, name_len = 0, id_len = 0;
        const char *id_hex;
        lua_rawgeti(L, 2, i); /* at 10 */
        id_hex = lua_tolstring(L, -1, &id_len);
        if (!id_hex || cm_cache_id_parse(id_hex, id_len, &id) != CM_OK)
            return luaL_error(L, "cache:staple_plan: ids[%d] is not a certificate id", (int)i);
        /* what refresh_staple does not look for in storage goes there as it is */
        if (!cm_cache_view(c, &id, &v) || !((lua_Number)v.not_after > now) || v.ocsp_count == 0 ||
            v.chain_count == 0 || !cm_lua_staple_key(&v, key, sizeof key)) {
            lua_pop(L, 1);
            continue;
        }
        url = cm_cache_view_item(&v, CM_CACHE_OCSP_URLS, 0, &url_len);
        name = cm_cache_view_item(&v, CM_CACHE_NAMES, 0, &name_len);
        j++;
        lua_rawseti(L, 5, j); /* the id */
        lua_pushstring(L, key);
        lua_rawseti(L, 6, j);
        if (name) lua_pushlstring(L, name, name_len);
        else lua_pushlstring(L, id_hex, id_len);
        lua_rawseti(L, 7, j);
        lua_pushlstring(L, url, url_len);
        lua_rawseti(L, 8, j);
        push_current(L, &v);
        lua_rawseti(L, 9, j);
    }
    lua_setfield(L, 4, "current");
    lua_setfield(L, 4, "urls");
    lua_setfield(L, 4, "names");
    lua_setfield(L, 4, "keys");
    lua_setfield(L, 4, "ids");
    return 1;
}
