/* ljson.c - core.json_encode, core.json_decode, core.json_null,
 * core.json_array_mt (on jansson).
 *
 * Mapping:
 *   Lua table with keys exactly 1..n (n >= 1)   <-> JSON array
 *   empty table with metatable core.json_array_mt <-> []   (decoded arrays
 *                                                       carry that metatable)
 *   other table with string keys only            <-> JSON object ({} if empty)
 *   string (valid UTF-8), boolean                <-> string, true/false
 *   integer / float                              <-> integer / real
 *   core.json_null (light userdata)              <-> null
 * Anything else (functions, other userdata, mixed keys, NaN, cycles, nesting
 * deeper than 64) is refused with nil, message naming where, "invalid".
 *
 * Memory: the jansson tree is anchored in a userdata box with __gc before
 * any Lua call that could raise, and containers are attached to their parent
 * before they are filled, so a Lua error (out of memory) never leaks it.
 */
#include "lcore.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_ARRAY_MT "certmaint.json_array"
#define BOX_MT "certmaint.json_box"
#define MAX_DEPTH 64
#define DECODE_MAX_DEFAULT (1024 * 1024)
#define DECODE_MAX_LIMIT (256L * 1024 * 1024)

/* The address of this byte is core.json_null. */
static const char json_null_sentinel = 0;

struct box {
    json_t *root;
    char *text;
};

static int box_gc(lua_State *L)
{
    struct box *b = luaL_checkudata(L, 1, BOX_MT);
    json_decref(b->root); b->root = NULL;
    free(b->text); b->text = NULL;
    return 0;
}

static struct box *new_box(lua_State *L)
{
    struct box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->root = NULL;
    b->text = NULL;
    luaL_setmetatable(L, BOX_MT);
    return b;
}

/* ---- encoding --------------------------------------------------------- */

/* One step of the path to the value being encoded: an object key (borrowed
 * from the Lua stack, where it stays while the step is live) or an index. */
struct step {
    const char *key; /* NULL: an array index */
    size_t klen;
    lua_Integer index;
};

struct enc {
    lua_State *L;
    const void *seen[MAX_DEPTH + 1]; /* tables on the current path (cycles) */
    int depth;
    struct step steps[MAX_DEPTH + 2]; /* the path, "$.a[2].b", formatted only for messages */
    int nsteps;
    char err[400];
};

static void path_push_key(struct enc *e, const char *key, size_t len)
{
    if (e->nsteps < (int)(sizeof e->steps / sizeof e->steps[0]))
        e->steps[e->nsteps] = (struct step){key, len, 0};
    e->nsteps++;
}

static void path_push_index(struct enc *e, lua_Integer i)
{
    if (e->nsteps < (int)(sizeof e->steps / sizeof e->steps[0]))
        e->steps[e->nsteps] = (struct step){NULL, 0, i};
    e->nsteps++;
}

static void path_pop(struct enc *e) { e->nsteps--; }

/* The path as text ("$.a[2].b", keys cut at 40 bytes), bounded by out_size. */
static void path_text(const struct enc *e, char *out, size_t out_size)
{
    size_t used;
    int i, n = e->nsteps < (int)(sizeof e->steps / sizeof e->steps[0])
                   ? e->nsteps : (int)(sizeof e->steps / sizeof e->steps[0]);
    snprintf(out, out_size, "$");
    for (i = 0; i < n; i++) {
        const struct step *st = &e->steps[i];
        used = strlen(out);
        if (used + 24 >= out_size) return;
        if (st->key)
            snprintf(out + used, out_size - used, ".%.*s", (int)(st->klen > 40 ? 40 : st->klen), st->key);
        else
            snprintf(out + used, out_size - used, "[%lld]", (long long)st->index);
    }
}

static int enc_fail(struct enc *e, const char *what)
{
    char path[200];
    path_text(e, path, sizeof path);
    snprintf(e->err, sizeof e->err, "json: %s at %s", what, path);
    return CM_ERR;
}

/* 1 if the table at idx is exactly 1..n with n >= 1, or empty with the array
 * metatable; 0 if every key is a string; -1 (with e->err) otherwise. */
static int classify(struct enc *e, int idx)
{
    lua_State *L = e->L;
    lua_Integer n = 0, max = 0;
    int all_int = 1, all_str = 1, is_array_mt = 0;

    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        n++;
        if (lua_type(L, -1) == LUA_TSTRING) {
            all_int = 0;
        } else {
            all_str = 0;
            if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
                if (lua_tointeger(L, -1) > max) max = lua_tointeger(L, -1);
            } else {
                all_int = 0;
            }
        }
    }
    if (n == 0) {
        if (lua_getmetatable(L, idx)) {
            luaL_getmetatable(L, JSON_ARRAY_MT);
            is_array_mt = lua_rawequal(L, -1, -2);
            lua_pop(L, 2);
        }
        return is_array_mt;
    }
    if (all_int && max == n) return 1;
    if (all_str) return 0;
    enc_fail(e, all_int ? "sparse array (keys are not 1..n)"
                        : "table mixes non-string keys with others");
    return -1;
}

static int fill(struct enc *e, int idx, json_t *c, int is_array);

/* A new json_t for the non-table value at idx. */
static int make_scalar(struct enc *e, int idx, json_t **out)
{
    lua_State *L = e->L;
    size_t len;
    const char *s;
    *out = NULL;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        *out = json_null();
        break;
    case LUA_TBOOLEAN:
        *out = json_boolean(lua_toboolean(L, idx));
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            *out = json_integer((json_int_t)lua_tointeger(L, idx));
        } else {
            lua_Number v = lua_tonumber(L, idx);
            if (!isfinite(v)) return enc_fail(e, "NaN or infinity");
            *out = json_real((double)v);
        }
        break;
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        *out = json_stringn(s, len);
        if (!*out) return enc_fail(e, "string is not valid UTF-8");
        break;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == (void *)&json_null_sentinel) {
            *out = json_null();
            break;
        }
        /* fall through */
    default: {
        char path[200];
        path_text(e, path, sizeof path);
        snprintf(e->err, sizeof e->err, "json: cannot encode a %s at %s", luaL_typename(L, idx), path);
        return CM_ERR;
    }
    }
    if (!*out) return enc_fail(e, "out of memory");
    return CM_OK;
}

/* Add v to parent: appended to an array when key is NULL, else set under
 * key.  Steals v (jansson releases it on failure too). */
static int attach(struct enc *e, json_t *parent, const char *key, size_t klen, json_t *v)
{
    if (!key) {
        if (json_array_append_new(parent, v) != 0) return enc_fail(e, "out of memory");
    } else if (json_object_setn_new(parent, key, klen, v) != 0) {
        return enc_fail(e, "object key is not valid UTF-8");
    }
    return CM_OK;
}

/* Convert the value at idx and add it to parent (or, with parent NULL, make
 * it *root).  A table's container is attached before it is filled, so the
 * whole tree stays reachable from the boxed root at every step. */
static int add_value(struct enc *e, int idx, json_t *parent, const char *key, size_t klen,
                     json_t **root)
{
    lua_State *L = e->L;
    const void *p;
    json_t *v = NULL;
    int is_arr, i;

    luaL_checkstack(L, 8, "json nesting");
    if (lua_type(L, idx) != LUA_TTABLE) {
        if (make_scalar(e, idx, &v) != CM_OK) return CM_ERR;
        if (!parent) {
            *root = v;
            return CM_OK;
        }
        return attach(e, parent, key, klen, v);
    }
    p = lua_topointer(L, idx);
    for (i = 0; i < e->depth; i++)
        if (e->seen[i] == p) return enc_fail(e, "cycle");
    if (e->depth >= MAX_DEPTH) return enc_fail(e, "nesting deeper than 64");
    is_arr = classify(e, idx);
    if (is_arr < 0) return CM_ERR;
    v = is_arr ? json_array() : json_object();
    if (!v) return enc_fail(e, "out of memory");
    if (!parent)
        *root = v;
    else if (attach(e, parent, key, klen, v) != CM_OK)
        return CM_ERR;
    e->seen[e->depth++] = p;
    if (fill(e, idx, v, is_arr) != CM_OK) return CM_ERR;
    e->depth--;
    return CM_OK;
}

/* Fill the (already attached) container c from the table at idx. */
static int fill(struct enc *e, int idx, json_t *c, int is_array)
{
    lua_State *L = e->L;

    if (is_array) {
        lua_Integer i, n = (lua_Integer)lua_rawlen(L, idx);
        for (i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, i);
            path_push_index(e, i);
            if (add_value(e, lua_gettop(L), c, NULL, 0, NULL) != CM_OK) return CM_ERR;
            path_pop(e);
            lua_pop(L, 1);
        }
        return CM_OK;
    }
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        size_t klen;
        /* classify() made sure every key is a string, so no conversion
         * happens here to confuse lua_next. */
        const char *key = lua_tolstring(L, -2, &klen);
        path_push_key(e, key, klen);
        if (add_value(e, lua_gettop(L), c, key, klen, NULL) != CM_OK) return CM_ERR;
        path_pop(e);
        lua_pop(L, 1);
    }
    return CM_OK;
}

/* ---- for other bindings (lcore.h) -------------------------------------- */

char *cm_lua_json_pretty(lua_State *L, int idx, char *err, size_t err_size)
{
    struct enc e;
    struct box *b;
    char *text;
    int top = lua_gettop(L);

    idx = lua_absindex(L, idx);
    b = new_box(L);
    memset(&e, 0, sizeof e);
    e.L = L;
    if (add_value(&e, idx, NULL, NULL, 0, &b->root) != CM_OK) {
        snprintf(err, err_size, "%s", e.err);
        lua_settop(L, top + 1);
        json_decref(b->root); b->root = NULL;
        lua_settop(L, top);
        return NULL;
    }
    text = json_dumps(b->root, JSON_ENCODE_ANY | JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(b->root); b->root = NULL;
    lua_settop(L, top);
    if (!text) snprintf(err, err_size, "json: out of memory");
    return text;
}

char *cm_json_string_text(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    char *text;
    if (!j) return NULL;
    text = json_dumps(j, JSON_ENCODE_ANY);
    json_decref(j);
    return text;
}

/* json_encode(value [, {pretty=false, sort_keys=true}]) -> text | nil, err, "invalid" */
static int l_json_encode(lua_State *L)
{
    static const char *const keys[] = {"pretty", "sort_keys", NULL};
    struct enc e;
    struct box *b;
    size_t flags = JSON_ENCODE_ANY;
    int pretty = 0, sort_keys = 1;

    luaL_checkany(L, 1);
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        cm_lua_check_options(L, 2, "core.json_encode", keys);
        if (lua_getfield(L, 2, "pretty") != LUA_TNIL) pretty = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (lua_getfield(L, 2, "sort_keys") != LUA_TNIL) sort_keys = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    lua_settop(L, 1);
    b = new_box(L); /* index 2 */
    memset(&e, 0, sizeof e);
    e.L = L;
    if (add_value(&e, 1, NULL, NULL, 0, &b->root) != CM_OK)
        return cm_lua_failf(L, "invalid", "%s", e.err);
    flags |= pretty ? JSON_INDENT(2) : JSON_COMPACT;
    if (sort_keys) flags |= JSON_SORT_KEYS;
    b->text = json_dumps(b->root, flags);
    if (!b->text) return cm_lua_failf(L, "invalid", "json: out of memory");
    lua_pushstring(L, b->text);
    json_decref(b->root); b->root = NULL;
    free(b->text); b->text = NULL;
    return 1;
}

/* ---- decoding --------------------------------------------------------- */

/* Push the Lua value for j; fills err on failure. */
static int push_json(lua_State *L, json_t *j, int depth, int ints_as_reals, char *err,
                     size_t err_size)
{
    luaL_checkstack(L, 6, "json nesting");
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        void *it;
        if (depth >= MAX_DEPTH) {
            snprintf(err, err_size, "json: nesting deeper than 64");
            return CM_ERR;
        }
        lua_createtable(L, 0, (int)json_object_size(j));
        for (it = json_object_iter(j); it; it = json_object_iter_next(j, it)) {
            lua_pushlstring(L, json_object_iter_key(it), json_object_iter_key_len(it));
            if (push_json(L, json_object_iter_value(it), depth + 1, ints_as_reals, err,
                          err_size) != CM_OK)
                return CM_ERR;
            lua_rawset(L, -3);
        }
        return CM_OK;
    }
    case JSON_ARRAY: {
        size_t i, n = json_array_size(j);
        if (depth >= MAX_DEPTH) {
            snprintf(err, err_size, "json: nesting deeper than 64");
            return CM_ERR;
        }
        lua_createtable(L, n > 1000000 ? 0 : (int)n, 0);
        for (i = 0; i < n; i++) {
            if (push_json(L, json_array_get(j, i), depth + 1, ints_as_reals, err, err_size) != CM_OK)
                return CM_ERR;
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        luaL_setmetatable(L, JSON_ARRAY_MT);
        return CM_OK;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(j), json_string_length(j));
        return CM_OK;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(j));
        return CM_OK;
    case JSON_REAL: {
        double v = json_real_value(j);
        /* Only in the big-integer fallback (see l_json_decode) do integers
         * arrive as reals: give back the ones that fit exactly. */
        if (ints_as_reals && v == floor(v) && fabs(v) <= 9007199254740992.0)
            lua_pushinteger(L, (lua_Integer)v);
        else
            lua_pushnumber(L, (lua_Number)v);
        return CM_OK;
    }
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        return CM_OK;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        return CM_OK;
    case JSON_NULL:
    default:
        lua_pushlightuserdata(L, (void *)&json_null_sentinel);
        return CM_OK;
    }
}

/* json_decode(text [, max_bytes = 1 MiB]) -> value | nil, err, "parse"|"toobig" */
static int l_json_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    lua_Integer max = luaL_optinteger(L, 2, DECODE_MAX_DEFAULT);
    size_t flags = JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL;
    json_error_t jerr;
    char err[256];
    struct box *b;
    int base, ints_as_reals = 0;

    luaL_argcheck(L, max >= 0 && max <= DECODE_MAX_LIMIT, 2, "max_bytes out of range");
    if (len > (size_t)max)
        return cm_lua_failf(L, "toobig", "json: input of %zu bytes is larger than %lld", len,
                            (long long)max);
    lua_settop(L, 1);
    b = new_box(L);
    base = lua_gettop(L);
    b->root = json_loadb(text, len, flags, &jerr);
    if (!b->root && json_error_code(&jerr) == json_error_numeric_overflow) {
        /* An integer too big for 64 bits: read numbers as reals instead, so
         * it arrives as the nearest float rather than failing; the others
         * are turned back into integers by push_json.  (A whole real such as
         * 2.0 in such a document then arrives as an integer too.) */
        ints_as_reals = 1;
        b->root = json_loadb(text, len, flags | JSON_DECODE_INT_AS_REAL, &jerr);
    }
    if (!b->root)
        return cm_lua_failf(L, "parse", "json: line %d column %d: %s", jerr.line, jerr.column,
                            jerr.text);
    if (push_json(L, b->root, 0, ints_as_reals, err, sizeof err) != CM_OK) {
        lua_settop(L, base);
        return cm_lua_failf(L, "parse", "%s", err);
    }
    json_decref(b->root); b->root = NULL;
    return 1;
}

int cm_lua_open_json(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"json_encode", l_json_encode},
        {"json_decode", l_json_decode},
        {NULL, NULL},
    };
    if (luaL_newmetatable(L, BOX_MT)) {
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_setfuncs(L, fns, 0);
    luaL_newmetatable(L, JSON_ARRAY_MT);
    lua_setfield(L, -2, "json_array_mt");
    lua_pushlightuserdata(L, (void *)&json_null_sentinel);
    lua_setfield(L, -2, "json_null");
    return 0;
}
