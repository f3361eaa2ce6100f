/* lua_host.c - see lua_host.h. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "lcore.h"
#include "lua_host.h"

int luaopen_certmaint_core(lua_State *L);

static struct cm_lua_mem mem = {NULL, NULL, 0, FUZZ_LUA_MEMORY_MAX, 0};
static lua_State *host;
static int driver_ref = LUA_NOREF;
static long budget_left;

/* Messages of Lua's own runtime errors (lvm.c, ldebug.c, lauxlib.c, ldo.c):
 * an error with one of these was not raised on purpose by certmaint. */
static const char *const RUNTIME_ERRORS[] = {
    "attempt to ", "bad argument #", "stack overflow", "table index is ", "number has no integer",
    "string length overflow", "not enough memory", "invalid key to 'next'", "'for' initial value",
    "'for' limit", "'for' step", "error in error handling", "assertion failed!", "wrong number of arguments",
    "invalid value (at index", "invalid option", "fuzz: instruction budget", "C stack overflow",
    "attempt to compare", "malformed pattern", "pattern too complex", "invalid capture index",
    "invalid pattern capture", "missing '[' after", "unfinished capture", "too many captures",
    "resulting string too large", "integer overflow", "property broken", "fuzz: hang", NULL};

#ifdef CM_FUZZ_LIBFUZZER
/* Lua's own coverage for libFuzzer: the system liblua is not instrumented, so
 * without this only the C under the Lua code would guide the fuzzer.  Each
 * line event counts the step from the previous (chunk, line) to this one in
 * libFuzzer's extra counters (a section it finds by name). */
#define LUA_EDGES 65536
__attribute__((section("__libfuzzer_extra_counters"))) static uint8_t lua_edges[LUA_EDGES];
static uintptr_t last_location;
#define HOOK_MASK (LUA_MASKCOUNT | LUA_MASKLINE)
#else
#define HOOK_MASK LUA_MASKCOUNT
#endif

static void budget_hook(lua_State *L, lua_Debug *ar)
{
#ifdef CM_FUZZ_LIBFUZZER
    if (ar->event == LUA_HOOKLINE) {
        uintptr_t here;
        if (!lua_getinfo(L, "S", ar)) return;
        /* a chunk's source string is interned once: its address names the chunk */
        here = ((uintptr_t)ar->source * 31u) ^ ((uintptr_t)ar->currentline * 2654435761u);
        lua_edges[(here ^ (last_location >> 1)) % LUA_EDGES]++;
        last_location = here;
        return;
    }
#endif
    budget_left -= 10000;
    if (budget_left <= 0) luaL_error(L, "fuzz: instruction budget of %ld spent", FUZZ_LUA_INSTRUCTIONS);
}

static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* pmain-style set-up inside a protected call: state, core, paths, driver. */
static int setup(lua_State *L)
{
    const char *driver = lua_touserdata(L, 1);
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_certmaint_core);
    lua_setfield(L, -2, "certmaint.core");
    lua_pop(L, 1);
    lua_pushstring(L, CM_FUZZ_SOURCE "/lua/?.lua;" CM_FUZZ_SOURCE "/lua/?/init.lua;" CM_FUZZ_SOURCE
                   "/tests/fuzz/lua/?.lua");
    lua_setfield(L, -2, "path");
    lua_pushstring(L, "");
    lua_setfield(L, -2, "cpath");
    lua_pop(L, 1);
    lua_pushstring(L, CM_FUZZ_SOURCE);
    lua_setglobal(L, "FUZZ_SOURCE"); /* where the drivers find tests/fixtures/ */
    lua_getglobal(L, "require");
    lua_pushstring(L, driver);
    lua_call(L, 1, 1);
    luaL_checktype(L, -1, LUA_TFUNCTION);
    driver_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static void start(const char *driver)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "fuzz: cannot initialise libcurl\n");
        abort();
    }
    host = lua_newstate(cm_lua_alloc, &mem);
    if (!host) {
        fprintf(stderr, "fuzz: cannot make a lua_State\n");
        abort();
    }
    lua_pushcfunction(host, msghandler);
    lua_pushcfunction(host, setup);
    lua_pushlightuserdata(host, (void *)driver);
    if (lua_pcall(host, 1, 0, -3) != LUA_OK) {
        fprintf(stderr, "fuzz: loading the driver %s: %s\n", driver, lua_tostring(host, -1));
        abort();
    }
    lua_pop(host, 1);
}

static int is_runtime_error(const char *msg)
{
    const char *const *p;
    /* only the message, not the traceback below it */
    const char *nl = strchr(msg, '\n');
    size_t n = nl ? (size_t)(nl - msg) : strlen(msg);
    for (p = RUNTIME_ERRORS; *p; p++) {
        size_t k = strlen(*p), i;
        for (i = 0; i + k <= n; i++)
            if (memcmp(msg + i, *p, k) == 0) return 1;
    }
    return 0;
}

void fuzz_lua_run(const char *driver, const uint8_t *data, size_t size)
{
    int top;
    if (!host) start(driver);
    top = lua_gettop(host);
    lua_pushcfunction(host, msghandler);
    lua_rawgeti(host, LUA_REGISTRYINDEX, driver_ref);
    lua_pushlstring(host, (const char *)data, size);
    budget_left = FUZZ_LUA_INSTRUCTIONS;
    lua_sethook(host, budget_hook, HOOK_MASK, 10000);
    if (lua_pcall(host, 1, 0, top + 1) != LUA_OK) {
        const char *msg = lua_tostring(host, -1);
        if (!msg) msg = "(no message)";
        if (is_runtime_error(msg)) {
            fprintf(stderr, "fuzz: %s: a Lua runtime error on untrusted input:\n%s\n", driver, msg);
            abort();
        }
    }
    lua_sethook(host, NULL, 0, 0);
    lua_settop(host, top);
    /* what one input left behind is garbage for the next: keep the heap small */
    lua_gc(host, LUA_GCSTEP, 0);
    if (mem.used > FUZZ_LUA_MEMORY_MAX / 2) {
        lua_gc(host, LUA_GCCOLLECT, 0);
        if (mem.used > FUZZ_LUA_MEMORY_MAX / 2) {
            fprintf(stderr, "fuzz: %s: %zu bytes of Lua heap still live after an input\n", driver, mem.used);
            abort();
        }
    }
}
