/* lwatch.c - the watchdog over policy code: core.watch_call and the heap cap.
 *
 * Every call into a policy (loading the file, each hook) runs through
 * core.watch_call(limits, fn, ...), which bounds it by
 *   - running time (seconds; time spent parked in the loop does not count),
 *   - Lua instructions,
 *   - heap growth (an allocation past the call's ceiling fails: the policy
 *     sees "not enough memory"), and
 *   - a pending SIGTERM/SIGINT (the loop blocks them for its signalfd, so a
 *     pending one means the daemon was asked to stop).
 * The checks run in a C count hook every WATCH_COUNT instructions, and in the
 * allocator for large allocations (so a loop of big string.rep calls, where
 * few instructions run between calls, is stopped as well).  Once a limit is
 * passed the hook raises on every line and every instruction: a policy's own
 * pcall cannot swallow the error and carry on, and a C hook cannot be caught
 * or removed by the policy (it has no debug library).
 *
 * Hooks belong to a thread, and a coroutine inherits its creator's hook: the
 * coroutines a policy creates inside a watched call, or at load time and
 * resumed later, carry this hook.  The hook charges whatever watch is active
 * (`active`, a stack: a decision hook can run inside an event hook) - Lua
 * runs one thread at a time, so the active watch is the one running.  When a
 * watched event hook waits in the loop (certmaint.exec), loop.lua calls
 * watch_suspend / watch_restore around its yield, so other tasks run unwatched
 * and the wait does not count as running time.
 *
 * The accounting allocator (cm_lua_alloc) is the executable's, made by
 * certmaint.c; under a stock lua5.4 (busted) core.memory installs it around
 * the interpreter's own on first use, so specs see the same limits.
 */
#include "lcore.h"

#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../clock.h"

#define WATCH_COUNT 10000              /* instructions between checks */
#define BIG_ALLOCATION (64 * 1024)     /* allocations this large check the clock */
#define WATCH_MT "certmaint.watch"

struct cm_watch {
    struct cm_watch *prev;   /* the watch this one runs inside, or NULL */
    lua_State *L;            /* the thread the call runs on */
    lua_Hook old_hook;       /* L's hook before the call, restored after */
    int old_mask, old_count;
    double seconds, used, since; /* limit, running time so far, running since */
    double instructions, counted;
    size_t ceiling;          /* heap ceiling while this call runs (0: none) */
    int tripped;             /* a limit was passed: raise on every line */
    int done;
    char code[16];
    char why[200];
};

#define STOP_GRACE 0.2 /* seconds policy code may still run once the daemon is stopping */

static struct cm_watch *active;
static double stop_at; /* monotonic time policy calls end by (0: not stopping) */
static struct cm_lua_mem *mem_state; /* the allocator's state, once known */

/* ---- the accounting allocator ------------------------------------------ */

void *cm_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct cm_lua_mem *st = ud;
    size_t old = ptr ? osize : 0; /* Lua passes a type tag in osize when ptr is NULL */
    void *grown;
    if (nsize == 0) {
        if (st->inner) st->inner(st->inner_ud, ptr, osize, 0);
        else free(ptr);
        st->used -= old;
        return NULL;
    }
    if (nsize > old) {
        size_t after = st->used - old + nsize;
        if (st->limit && after > st->limit) return NULL;
        if (st->ceiling && after > st->ceiling) return NULL;
        if (nsize - old >= BIG_ALLOCATION && active && cm_lua_watch_check() != 0) return NULL;
    }
    grown = st->inner ? st->inner(st->inner_ud, ptr, osize, nsize) : realloc(ptr, nsize);
    if (!grown) return NULL;
    st->used = st->used - old + nsize;
    return grown;
}

/* The allocator state of L: the executable's, or one installed around a
 * stock interpreter's allocator (its blocks so far are counted from the
 * collector's total, which is exact).  The module is pinned in memory so the
 * allocator outlives lua_close's unloading of C libraries. */
static struct cm_lua_mem *mem_of(lua_State *L)
{
    static struct cm_lua_mem wrapped;
    void *ud;
    lua_Alloc f;
    if (mem_state) return mem_state;
    f = lua_getallocf(L, &ud);
    if (f == cm_lua_alloc) {
        mem_state = ud;
        return mem_state;
    }
    {
        Dl_info info;
        if (dladdr(&mem_state, &info) && info.dli_fname)
            (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    }
    wrapped.inner = f;
    wrapped.inner_ud = ud;
    wrapped.used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    wrapped.limit = 0;
    wrapped.ceiling = 0;
    lua_setallocf(L, cm_lua_alloc, &wrapped);
    mem_state = &wrapped;
    return mem_state;
}

/* ---- the active watch ----------------------------------------------------- */

static char policy_string_key; /* registry: the string table policy code sees */
static char host_string_key;   /* registry: the string metatable's own __index */
static int string_swapped;

/* While a watched call runs, ("x"):find and friends are the policy's bounded
 * ones (watch_string_index); the engine's own calls between policy calls
 * keep the stock table. */
static void swap_string_index(lua_State *L, int on)
{
    if (on == string_swapped) return;
    luaL_checkstack(L, 4, NULL);
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &policy_string_key) != LUA_TTABLE) {
        lua_pop(L, 1);
        return;
    }
    lua_pushliteral(L, "");
    if (!lua_getmetatable(L, -1)) {
        lua_pop(L, 2);
        return;
    }
    if (on) {
        lua_getfield(L, -1, "__index");
        lua_rawsetp(L, LUA_REGISTRYINDEX, &host_string_key);
        lua_pushvalue(L, -3);
    } else {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &host_string_key);
    }
    lua_setfield(L, -2, "__index");
    lua_pop(L, 3);
    string_swapped = on;
}

/* The heap ceiling and the string methods follow the active watch. */
static void apply_active(lua_State *L)
{
    if (mem_state) mem_state->ceiling = active ? active->ceiling : 0;
    swap_string_index(L, active != NULL);
}

/* Mark w and every watch inside it (they end with it) as past a limit. */
static void trip(struct cm_watch *w, const char *code, const char *why)
{
    struct cm_watch *x;
    for (x = active; x; x = x->prev) {
        if (!x->tripped) {
            x->tripped = 1;
            snprintf(x->code, sizeof x->code, "%s", code);
            snprintf(x->why, sizeof x->why, "%s", why);
        }
        if (x == w) break;
    }
}

static int stop_signal_pending(void)
{
    sigset_t pending;
    if (sigpending(&pending) != 0) return 0;
    return sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1;
}

const char *cm_lua_watch_why(void)
{
    return active ? active->why : "";
}

/* Check the active watches; returns 1 when one has been passed (tripped). */
int cm_lua_watch_check(void)
{
    struct cm_watch *x;
    double now;
    if (!active) return 0;
    if (active->tripped) return 1;
    now = cm_clock_monotonic();
    for (x = active; x; x = x->prev) {
        char why[200];
        if (x->seconds > 0 && x->used + (now - x->since) > x->seconds) {
            snprintf(why, sizeof why, "exceeded its time limit of %gs", x->seconds);
            trip(x, "timeout", why);
            return 1;
        }
        if (x->instructions > 0 && x->counted > x->instructions) {
            snprintf(why, sizeof why, "exceeded its limit of %.0f instructions", x->instructions);
            trip(x, "instructions", why);
            return 1;
        }
    }
    if (stop_signal_pending() || (stop_at > 0 && now > stop_at)) {
        x = active;
        while (x->prev) x = x->prev;
        trip(x, "stopping", "was stopped: the daemon is stopping (SIGTERM/SIGINT)");
        return 1;
    }
    return 0;
}

static void watch_hook(lua_State *L, lua_Debug *ar)
{
    struct cm_watch *x;
    int count = lua_gethookcount(L);
    (void)ar;
    if (!active) {
        /* a thread that inherited this hook, run outside any call: nothing to
         * charge; back to counting if an earlier trip left it every-line */
        if (count != WATCH_COUNT) lua_sethook(L, watch_hook, LUA_MASKCOUNT, WATCH_COUNT);
        return;
    }
    if (!active->tripped) {
        if (ar->event == LUA_HOOKCOUNT)
            for (x = active; x; x = x->prev) x->counted += count;
        if (!cm_lua_watch_check()) {
            /* left every-line by an earlier call's trip: back to counting */
            if (count != WATCH_COUNT) lua_sethook(L, watch_hook, LUA_MASKCOUNT, WATCH_COUNT);
            return;
        }
    }
    lua_sethook(L, watch_hook, LUA_MASKCOUNT | LUA_MASKLINE, 1);
    luaL_error(L, "%s", active->why);
}

static struct cm_watch *check_watch(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, WATCH_MT);
}

/* ---- core.watch_call ------------------------------------------------------ */

static double opt_number(lua_State *L, int idx, const char *key)
{
    double v = 0;
    int t = lua_getfield(L, idx, key);
    if (t == LUA_TNUMBER) v = lua_tonumber(L, -1);
    else if (t != LUA_TNIL) cm_lua_opt_error(L, "core.watch_call", "option '%s' must be a number", key);
    lua_pop(L, 1);
    if (v < 0) cm_lua_opt_error(L, "core.watch_call", "option '%s' must not be negative", key);
    return v;
}

static void unlink_watch(struct cm_watch *w)
{
    struct cm_watch **p;
    for (p = &active; *p; p = &(*p)->prev) {
        if (*p == w) {
            *p = w->prev;
            break;
        }
    }
}

/* Stack: 1 the watch's userdata (or nil when w is on the C stack), 2 the
 * message handler, 3.. results or the error. */
static int finish(lua_State *L, int status, struct cm_watch *w)
{
    int n;
    if (!w->done) {
        w->done = 1;
        unlink_watch(w);
        if (w->old_hook) lua_sethook(w->L, w->old_hook, w->old_mask, w->old_count);
        else lua_sethook(w->L, NULL, 0, 0);
        apply_active(L);
    }
    if (status == LUA_OK || status == LUA_YIELD) {
        if (!w->tripped) {
            lua_pushboolean(L, 1);
            lua_replace(L, 2);
            return lua_gettop(L) - 1;
        }
    }
    if (w->tripped) {
        lua_settop(L, 2); /* the limit is the news, whatever error it caused */
        lua_pushstring(L, w->why);
    }
    n = lua_gettop(L);
    lua_pushboolean(L, 0);
    lua_pushvalue(L, n); /* the error (a traceback from the handler) */
    if (w->tripped) lua_pushstring(L, w->code);
    else if (status == LUA_ERRMEM) lua_pushliteral(L, "memory");
    else lua_pushliteral(L, "error");
    return 3;
}

static int finish_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)ctx;
    return finish(L, status, check_watch(L, 1));
}

/* The error as text: a string as it is, else its __tostring, else its type. */
static const char *error_text(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg) return msg;
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return lua_tostring(L, -1);
    return lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
}

static int msghandler(lua_State *L)
{
    luaL_traceback(L, L, error_text(L), 1);
    return 1;
}

/* For calls whose failure will not be logged (the runner's log burst is
 * spent): the message only, without walking the stack for a traceback. */
static int msghandler_plain(lua_State *L)
{
    const char *msg = error_text(L);
    lua_pushstring(L, msg);
    return 1;
}

/* watch_call(limits, fn, ...) -> true, results... | false, message, code
 * limits: seconds (running time), instructions, ceiling (heap bytes the call
 * may not pass; 0 = none), yield (true: fn may yield to the loop), traceback
 * (false: the message comes without a traceback; default true). code:
 * "error", "memory", "timeout", "instructions" or "stopping". */
static int l_watch_call(lua_State *L)
{
    static const char *const known[] = {"seconds", "instructions", "ceiling", "yield", "traceback", NULL};
    struct cm_watch on_stack, *w = &on_stack;
    int nargs, yield, status, traceback;
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    cm_lua_check_options(L, 1, "core.watch_call", known);
    mem_of(L);
    yield = cm_lua_opt_bool(L, 1, "core.watch_call", "yield");
    lua_getfield(L, 1, "traceback");
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
        return luaL_error(L, "core.watch_call: option 'traceback' must be a boolean, not %s", luaL_typename(L, -1));
    traceback = lua_isnil(L, -1) || lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (yield) { /* the C frame does not survive a yield: the watch lives on the Lua stack */
        w = lua_newuserdatauv(L, sizeof *w, 0);
        luaL_setmetatable(L, WATCH_MT);
    } else {
        lua_pushnil(L);
    }
    memset(w, 0, sizeof *w);
    w->seconds = opt_number(L, 1, "seconds");
    w->instructions = opt_number(L, 1, "instructions");
    w->ceiling = (size_t)opt_number(L, 1, "ceiling");
    lua_insert(L, 1);
    lua_pushcfunction(L, traceback ? msghandler : msghandler_plain);
    lua_replace(L, 2); /* the limits table's slot */
    nargs = lua_gettop(L) - 3;

    w->L = L;
    w->old_hook = lua_gethook(L);
    w->old_mask = lua_gethookmask(L);
    w->old_count = lua_gethookcount(L);
    w->since = cm_clock_monotonic();
    if (active && active->ceiling && (!w->ceiling || active->ceiling < w->ceiling)) w->ceiling = active->ceiling;
    w->prev = active;
    active = w;
    apply_active(L);
    lua_sethook(L, watch_hook, LUA_MASKCOUNT, WATCH_COUNT);
    if (yield) return finish(L, lua_pcallk(L, nargs, LUA_MULTRET, 2, 0, finish_k), w);
    status = lua_pcall(L, nargs, LUA_MULTRET, 2);
    return finish(L, status, w);
}

/* watch_suspend() -> token | nil: the running task is about to wait in the
 * loop; its watches stop counting until watch_restore(token). */
static int l_watch_suspend(lua_State *L)
{
    struct cm_watch *x;
    double now;
    if (!active) return 0;
    now = cm_clock_monotonic();
    for (x = active; x; x = x->prev) x->used += now - x->since;
    lua_pushlightuserdata(L, active);
    active = NULL;
    apply_active(L);
    return 1;
}

static int l_watch_restore(lua_State *L)
{
    struct cm_watch *x;
    double now;
    if (lua_isnoneornil(L, 1)) return 0;
    luaL_checktype(L, 1, LUA_TLIGHTUSERDATA);
    active = lua_touserdata(L, 1);
    now = cm_clock_monotonic();
    for (x = active; x; x = x->prev) x->since = now;
    apply_active(L);
    return 0;
}

/* memory() -> used, limit: the Lua heap in bytes, and its cap (0: none). */
static int l_memory(lua_State *L)
{
    struct cm_lua_mem *st = mem_of(L);
    lua_pushinteger(L, (lua_Integer)st->used);
    lua_pushinteger(L, (lua_Integer)st->limit);
    return 2;
}

/* memory_limit(bytes): set the whole-heap cap (0: none). */
static int l_memory_limit(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0, 1, "must not be negative");
    mem_of(L)->limit = (size_t)n;
    return 0;
}

/* watch_string_index(t): the table ("x"):method finds while policy code runs. */
static int l_watch_string_index(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &policy_string_key);
    return 0;
}

/* watch_stopping([false]): the daemon is stopping (the loop has read its
 * SIGTERM): policy calls, running and new, end within STOP_GRACE seconds;
 * watch_stopping(false) when it has stopped (specs run engines again). */
static int l_watch_stopping(lua_State *L)
{
    if (lua_isboolean(L, 1) && !lua_toboolean(L, 1)) stop_at = 0;
    else if (stop_at == 0) stop_at = cm_clock_monotonic() + STOP_GRACE;
    return 0;
}

/* watching() -> bool: is a watched call running (for specs). */
static int l_watching(lua_State *L)
{
    lua_pushboolean(L, active != NULL);
    return 1;
}

int cm_lua_open_watch(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"watch_call", l_watch_call},
        {"watch_suspend", l_watch_suspend},
        {"watch_restore", l_watch_restore},
        {"watching", l_watching},
        {"watch_stopping", l_watch_stopping},
        {"watch_string_index", l_watch_string_index},
        {"memory", l_memory},
        {"memory_limit", l_memory_limit},
        {NULL, NULL},
    };
    luaL_newmetatable(L, WATCH_MT);
    lua_pop(L, 1);
    luaL_setfuncs(L, fns, 0);
    return 0;
}
