/* certmaint.c - the executable: one lua_State running lua/certmaint/cli.lua.
 * Built a second time as certmaint-bench with CM_ENTRY_MODULE "certmaint.bench"
 * (and CM_WITH_BENCHGEN: the benchmark tree generator preloaded), so the
 * benchmark runs the very same embedded modules the daemon does.
 *
 * Host setup runs inside a protected C function (lua.c's pmain), so even an
 * out-of-memory during start-up is reported, not fatal.  The Lua side
 * (lua/certmaint) is embedded at build time and found by a searcher placed
 * before the file-system ones, so the binary never runs stale sources.
 * The accounting allocator (core/lua/lwatch.c) caps Lua's heap at
 * CERTMAINT_LUA_MEMORY_MAX bytes (default DEFAULT_MEMORY_MAX; 0: no cap);
 * policy calls run under their own ceilings inside it.
 */
#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "failpoint.h"
#include "lcore.h"

#ifndef CM_ENTRY_MODULE
#define CM_ENTRY_MODULE "certmaint.cli"
#endif
#ifdef CM_WITH_BENCHGEN
int luaopen_certmaint_benchgen(lua_State *L);
#endif

#define DEFAULT_MEMORY_MAX ((size_t)4 << 30) /* 4 GiB: ~2 KiB of Lua heap a certificate (bench/README.md) */

struct embedded_module {
    const char *name;
    const char *path;
    const unsigned char *src;
    size_t len;
};
extern const struct embedded_module cm_embedded_lua[];

static int embedded_searcher(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const struct embedded_module *m;
    for (m = cm_embedded_lua; m->name; m++) {
        if (strcmp(m->name, name) == 0) {
            char chunkname[256];
            snprintf(chunkname, sizeof chunkname, "@%s", m->path);
            if (luaL_loadbufferx(L, (const char *)m->src, m->len, chunkname, "t") != LUA_OK)
                return lua_error(L);
            lua_pushstring(L, chunkname + 1);
            return 2;
        }
    }
    lua_pushfstring(L, "\n\tno embedded module '%s'", name);
    return 1;
}

static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* pmain(argc, argv): set up the state and run cli.main(args); returns exit code. */
static int pmain(lua_State *L)
{
    int argc = (int)lua_tointeger(L, 1);
    char **argv = (char **)lua_touserdata(L, 2);
    int i;

    luaL_checkversion(L);
    luaL_openlibs(L);

    /* package.preload["certmaint.core"] and the embedded searcher at slot 2 */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_certmaint_core);
    lua_setfield(L, -2, "certmaint.core");
#ifdef CM_WITH_BENCHGEN
    lua_pushcfunction(L, luaopen_certmaint_benchgen);
    lua_setfield(L, -2, "certmaint.benchgen");
#endif
    lua_pop(L, 1);
    lua_getfield(L, -1, "searchers");
    for (i = (int)luaL_len(L, -1); i >= 2; i--) {
        lua_rawgeti(L, -1, i);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushcfunction(L, embedded_searcher);
    lua_rawseti(L, -2, 2);
    lua_pop(L, 2);

    /* the global `arg`, as lua.c makes it */
    lua_createtable(L, argc, 1);
    for (i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    lua_setglobal(L, "arg");

    lua_getglobal(L, "require");
    lua_pushliteral(L, CM_ENTRY_MODULE);
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "main");
    lua_createtable(L, argc, 0);
    for (i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    lua_call(L, 1, 1);
    lua_pushinteger(L, lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 1);
    return 1;
}

int main(int argc, char **argv)
{
    static struct cm_lua_mem alloc = {NULL, NULL, 0, DEFAULT_MEMORY_MAX, 0};
    const char *limit = getenv("CERTMAINT_LUA_MEMORY_MAX");
    lua_State *L = NULL;
    int status, code = 1;

    if (limit && *limit) {
        char *end = NULL;
        unsigned long long v = strtoull(limit, &end, 10);
        if (*end != '\0') {
            fprintf(stderr, "certmaint: CERTMAINT_LUA_MEMORY_MAX must be a number of bytes, got '%s'\n", limit);
            return 2;
        }
        alloc.limit = (size_t)v;
    }
    if (cm_failpoint_main(argc, argv, &code)) return code;
    /* before any thread exists, as libcurl asks */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "certmaint: cannot initialise libcurl\n");
        return 1;
    }
    L = lua_newstate(cm_lua_alloc, &alloc);
    if (!L) {
        fprintf(stderr, "certmaint: cannot create Lua state: not enough memory\n");
        curl_global_cleanup();
        return 1;
    }
    lua_pushcfunction(L, msghandler);
    lua_pushcfunction(L, pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    status = lua_pcall(L, 2, 1, 1);
    if (status == LUA_OK) {
        code = (int)lua_tointeger(L, -1);
    } else {
        const char *msg = lua_tostring(L, -1);
        fprintf(stderr, "certmaint: %s\n", msg ? msg : "(error without message)");
        code = 1;
    }
    lua_close(L);
    curl_global_cleanup();
    return code;
}
