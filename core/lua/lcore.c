/* lcore.c - luaopen_certmaint_core: assembles the module from its units. */
#include "lcore.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../x509.h"

int cm_lua_fail(lua_State *L, const struct cm_result *res)
{
    lua_pushnil(L);
    lua_pushstring(L, res->message[0] ? res->message : "unknown error");
    lua_pushstring(L, res->code[0] ? res->code : "error");
    return 3;
}

int cm_lua_failf(lua_State *L, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lua_pushnil(L);
    lua_pushstring(L, msg);
    lua_pushstring(L, code);
    return 3;
}

void cm_lua_push_strlist(lua_State *L, const struct cm_strlist *list)
{
    size_t i;
    lua_createtable(L, list->count > INT32_MAX ? 0 : (int)list->count, 0);
    for (i = 0; i < list->count; i++) {
        lua_pushstring(L, list->items[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

/* ---- option fields (contracts in lcore.h) ------------------------------- */

int cm_lua_opt_error(lua_State *L, const char *fn, const char *fmt, ...)
{
    va_list ap;
    luaL_where(L, 1);
    lua_pushfstring(L, "%s: ", fn);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 3);
    return lua_error(L);
}

const char *cm_lua_opt_string(lua_State *L, int idx, const char *fn, const char *key,
                              int required, size_t *len)
{
    const char *s = NULL;
    int t = lua_getfield(L, idx, key);
    if (t == LUA_TSTRING) s = lua_tolstring(L, -1, len);
    else if (t != LUA_TNIL) cm_lua_opt_error(L, fn, "option '%s' must be a string", key);
    else if (required) cm_lua_opt_error(L, fn, "option '%s' is required", key);
    lua_pop(L, 1); /* the string stays alive: the table holds it */
    if (!s && len) *len = 0;
    return s;
}

int64_t cm_lua_opt_time(lua_State *L, int idx, const char *fn, const char *key, int required)
{
    int64_t v = 0;
    int t = lua_getfield(L, idx, key);
    if (t == LUA_TNUMBER) {
        lua_Number n = lua_tonumber(L, -1);
        if (!(n > -1e15 && n < 1e15)) cm_lua_opt_error(L, fn, "option '%s' is out of range", key);
        v = (int64_t)floor(n);
    } else if (t != LUA_TNIL) {
        cm_lua_opt_error(L, fn, "option '%s' must be a number (Unix seconds)", key);
    } else if (required) {
        cm_lua_opt_error(L, fn, "option '%s' is required", key);
    }
    lua_pop(L, 1);
    return v;
}

int cm_lua_opt_bool(lua_State *L, int idx, const char *fn, const char *key)
{
    int t = lua_getfield(L, idx, key), v;
    if (t != LUA_TNIL && t != LUA_TBOOLEAN) cm_lua_opt_error(L, fn, "option '%s' must be a boolean", key);
    v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* ---- the option checker ------------------------------------------------ */

#define OPT_NAME_MAX 64 /* longer keys get no "did you mean" */

/* Restricted Damerau-Levenshtein (optimal string alignment) distance of a to
 * b's prefixes, as certmaint.options.suggest computes it: row[j] is the
 * distance of a to b[0..j).  la, lb <= OPT_NAME_MAX. */
static void osa_row(const char *a, size_t la, const char *b, size_t lb, size_t *row)
{
    size_t prev2[OPT_NAME_MAX + 1], prev[OPT_NAME_MAX + 1], cur[OPT_NAME_MAX + 1];
    size_t i, j;
    for (j = 0; j <= lb; j++) prev[j] = j;
    memcpy(prev2, prev, sizeof prev2);
    memcpy(cur, prev, sizeof cur);
    for (i = 1; i <= la; i++) {
        cur[0] = i;
        for (j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1, v = prev[j] + 1;
            if (cur[j - 1] + 1 < v) v = cur[j - 1] + 1;
            if (prev[j - 1] + cost < v) v = prev[j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                prev2[j - 2] + 1 < v)
                v = prev2[j - 2] + 1;
            cur[j] = v;
        }
        memcpy(prev2, prev, sizeof prev);
        memcpy(prev, cur, sizeof cur);
    }
    memcpy(row, prev, (lb + 1) * sizeof *row);
}

/* The name of names[0..n) (sorted) closest to word (lower-cased), or NULL:
 * the same choice as certmaint.options.suggest, ties included. */
static const char *suggest(const char *word, const char *const *names, size_t n)
{
    char lw[OPT_NAME_MAX + 1];
    size_t row[OPT_NAME_MAX + 1];
    size_t lwn = strlen(word), i, j, best_d = 0, best_full = 0, limit;
    const char *best = NULL;
    if (lwn == 0 || lwn > OPT_NAME_MAX) return NULL;
    for (i = 0; i < lwn; i++)
        lw[i] = (word[i] >= 'A' && word[i] <= 'Z') ? (char)(word[i] - 'A' + 'a') : word[i];
    lw[lwn] = '\0';
    for (i = 0; i < n; i++) {
        size_t lc = strlen(names[i]), full, d;
        if (lc > OPT_NAME_MAX) continue;
        osa_row(lw, lwn, names[i], lc, row);
        full = d = row[lc];
        /* a prefix at least as long as the word (less a little) may match better */
        for (j = lwn > 2 ? lwn - 2 : 1; j <= lc; j++)
            if (row[j] < d) d = row[j];
        if (!best || d < best_d || (d == best_d && full < best_full)) {
            best = names[i];
            best_d = d;
            best_full = full;
        }
    }
    limit = lwn / 3 > 2 ? lwn / 3 : 2;
    return best && best_d <= limit ? best : NULL;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void cm_lua_check_options(lua_State *L, int idx, const char *what, const char *const *known)
{
    const char *sorted[64];
    const char *bad, *hint;
    int slot;
    size_t n, i;
    luaL_Buffer b;

    idx = lua_absindex(L, idx);
    luaL_checkstack(L, 8, what);
    lua_pushnil(L); /* slot: the key to name, nil while every key is known */
    slot = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -1);
            for (i = 0; known[i] && strcmp(known[i], k) != 0; i++) {}
            if (known[i]) continue;
            /* prefer a string key; among strings the smallest, for a stable message */
            if (lua_type(L, slot) == LUA_TSTRING && strcmp(k, lua_tostring(L, slot)) >= 0)
                continue;
        } else if (!lua_isnil(L, slot)) {
            continue;
        }
        lua_pushvalue(L, -1);
        lua_replace(L, slot);
    }
    if (lua_isnil(L, slot)) {
        lua_pop(L, 1);
        return;
    }
    /* From here only Lua strings and static names are live, so raising leaks
     * nothing.  The known names, sorted: */
    for (n = 0; known[n] && n < sizeof sorted / sizeof sorted[0]; n++) sorted[n] = known[n];
    qsort(sorted, n, sizeof sorted[0], name_cmp);
    luaL_buffinit(L, &b);
    for (i = 0; i < n; i++) {
        if (i) luaL_addstring(&b, ", ");
        luaL_addstring(&b, sorted[i]);
    }
    luaL_pushresult(&b); /* slot + 1 */
    luaL_where(L, 1);    /* slot + 2 */
    if (lua_type(L, slot) != LUA_TSTRING) {
        bad = luaL_tolstring(L, slot, NULL);
        lua_pushfstring(L, "%s: unexpected positional value [%s] (options are named: "
                           "name = value; known: %s)", what, bad, lua_tostring(L, slot + 1));
        lua_remove(L, -2);
    } else if ((hint = suggest(lua_tostring(L, slot), sorted, n)) != NULL) {
        lua_pushfstring(L, "%s: unknown option \"%s\" (did you mean \"%s\"? known: %s)", what,
                        lua_tostring(L, slot), hint, lua_tostring(L, slot + 1));
    } else {
        lua_pushfstring(L, "%s: unknown option \"%s\" (known: %s)", what, lua_tostring(L, slot),
                        lua_tostring(L, slot + 1));
    }
    lua_concat(L, 2);
    lua_error(L);
}

int luaopen_certmaint_core(lua_State *L)
{
    static int (*const units[])(lua_State *) = {
        /* x509 first: it makes the box metatable key and localca use */
        cm_lua_open_log,     cm_lua_open_clock, cm_lua_open_x509,
        cm_lua_open_key,     cm_lua_open_localca, cm_lua_open_cache,
        cm_lua_open_loop,    cm_lua_open_fs,    cm_lua_open_name,
        cm_lua_open_json,    cm_lua_open_crypto,
        cm_lua_open_renewal, cm_lua_open_watch, cm_lua_open_pattern,
        cm_lua_open_jws,     cm_lua_open_tlsalpn, cm_lua_open_crl,
        cm_lua_open_commit,  cm_lua_open_clean_scan, cm_lua_open_sdnotify,
        cm_lua_open_failpoint, cm_lua_open_ocsp_memo, cm_lua_open_term,
    };
    size_t i;
    lua_newtable(L);
    for (i = 0; i < sizeof units / sizeof units[0]; i++) {
        units[i](L);
        luaL_checkstack(L, 1, NULL);
    }
    lua_pushliteral(L, "0.1.0");
    lua_setfield(L, -2, "version");
    return 1;
}
