/* locsp_memo.c - core.ocsp_memo (core/ocsp_memo.h).
 *
 *   core.ocsp_memo(path) -> memo | nil, err, code (a missing file is an empty memo)
 *   memo:flush() -> true | nil, err, code
 *   memo:stats() -> { entries, file_records, hits, added, damaged }
 *   memo:close()  (also __gc / __close)
 * Given to cache:verify_staples[_start] as opts.memo.
 */
#include "lcore.h"
#include "locsp_memo.h"

#include "../ocsp_memo.h"

#define MEMO_MT "certmaint.ocsp_memo"

struct lmemo {
    struct cm_ocsp_memo *m; /* NULL once closed */
};

static int l_memo_open(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct lmemo *lm = lua_newuserdatauv(L, sizeof *lm, 0);
    struct cm_result res;
    lm->m = NULL;
    luaL_setmetatable(L, MEMO_MT);
    if (cm_ocsp_memo_open(&lm->m, path, &res) != CM_OK) return cm_lua_fail(L, &res);
    return 1;
}

struct cm_ocsp_memo *cm_lua_ocsp_memo_check(lua_State *L, int idx)
{
    struct lmemo *lm = luaL_checkudata(L, idx, MEMO_MT);
    if (!lm->m) luaL_error(L, "attempt to use a closed ocsp memo");
    return lm->m;
}

static int l_memo_flush(lua_State *L)
{
    struct cm_result res;
    if (cm_ocsp_memo_flush(cm_lua_ocsp_memo_check(L, 1), &res) != CM_OK) return cm_lua_fail(L, &res);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_memo_stats(lua_State *L)
{
    struct cm_ocsp_memo_stats st;
    cm_ocsp_memo_stats(cm_lua_ocsp_memo_check(L, 1), &st);
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, (lua_Integer)st.entries);
    lua_setfield(L, -2, "entries");
    lua_pushinteger(L, (lua_Integer)st.file_records);
    lua_setfield(L, -2, "file_records");
    lua_pushinteger(L, (lua_Integer)st.hits);
    lua_setfield(L, -2, "hits");
    lua_pushinteger(L, (lua_Integer)st.added);
    lua_setfield(L, -2, "added");
    lua_pushboolean(L, st.damaged);
    lua_setfield(L, -2, "damaged");
    return 1;
}

static int l_memo_close(lua_State *L)
{
    struct lmemo *lm = luaL_checkudata(L, 1, MEMO_MT);
    cm_ocsp_memo_free(lm->m);
    lm->m = NULL;
    return 0;
}

int cm_lua_open_ocsp_memo(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"flush", l_memo_flush},
        {"stats", l_memo_stats},
        {"close", l_memo_close},
        {NULL, NULL},
    };
    if (luaL_newmetatable(L, MEMO_MT)) {
        lua_pushcfunction(L, l_memo_close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_memo_close);
        lua_setfield(L, -2, "__close");
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_memo_open);
    lua_setfield(L, -2, "ocsp_memo");
    return 0;
}
