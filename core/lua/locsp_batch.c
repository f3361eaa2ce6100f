/* locsp_batch.c - cache:verify_staples / cache:verify_staples_start (ocsp_batch.h).
 *
 *   cache:verify_staples(ids, responses, opts) -> r
 *   cache:verify_staples_start(ids, responses, opts) -> batch
 *   batch:ready() -> bool (never blocks); batch:finish() -> r; batch:drop()
 *
 * ids[i] names a cache entry, responses[i] is its DER response or, with
 * files = true, the path of a file holding it.  opts: now (Unix seconds; absent:
 * 0, no time checks, as core.ocsp_response_parse), skew (300), threads (2,
 * 0..16), files, max_bytes (1..65536), verify (true; false: parse-only),
 * attach (false), ders (false; with files: r.der[i] for the ok items).
 * r is by column, like add_many's: r.ok[i] (boolean); when ok, r.status[i],
 * r.this_update[i], r.next_update[i] (nil when the response has none),
 * r.produced_at[i], r.revoked_at[i] and r.reason[i] (revoked), r.refresh_at[i]
 * (nil when the entry went away); r.attached[i] (boolean); r.error[i],
 * r.code[i] when not ok, or when ok and attaching failed.
 *
 *   cache:stored_staples_start(ids, opts) -> batch; batch:finish() -> counts
 *
 * Start-up's first staples, checked while the load goes on: for each id of
 * ids cached, valid at now, naming an OCSP responder, holding its issuer and
 * no staple yet, the file storage's staple for it (opts.root .. "/" ..
 * certmagic's key, as cache:staple_plan names it) is read and verified on the
 * core's threads, and one that is good, fresh and has a nextUpdate is
 * attached by finish, in C: nothing crosses into Lua per certificate.  What
 * is not attached (none stored, damaged, stale, revoked, unknown) is left
 * to the OCSP pass, which treats it as before.  opts: root (the storage
 * folder), now (required), skew (300), threads (2), memo.  counts: checked
 * (files looked for), attached, missing (no file), failed (the others not
 * attached: unreadable, not verified, stale, not good).
 */
#include "lcore.h"
#include "locsp_batch.h"
#include "locsp_memo.h"
#include "lrenewal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "../cache.h"
#include "../name.h"
#include "../ocsp_batch.h"

#define OBATCH_MT "certmaint.cache.ocsp_batch"
#define OBATCH_MAX 16384 /* items of one batch (each carries a struct cm_result) */

/* A batch on the core's threads.  It owns its items and a copy of every
 * response or path (the threads read them while Lua runs); uservalue 1 is
 * the cache. */
struct lobatch {
    struct cm_ocsp_batch *b; /* NULL once finished or dropped */
    struct cm_ocsp_batch_item *items;
    size_t n;
    char *bytes;             /* the responses / paths, back to back */
    int files, ders, finished;
    int summary;             /* stored_staples_start's: finish returns counts only */
};

static void lobatch_release(struct lobatch *lb)
{
    cm_ocsp_batch_free(lb->b); /* stops and joins the threads first */
    lb->b = NULL;
    cm_ocsp_batch_items_free(lb->items, lb->n);
    free(lb->items); lb->items = NULL;
    free(lb->bytes); lb->bytes = NULL;
}

static int l_obatch_gc(lua_State *L)
{
    lobatch_release(luaL_checkudata(L, 1, OBATCH_MT));
    return 0;
}

/* Read (ids, responses, opts) at 2, 3, 4 into *o; raise on a caller's bug. */

/* Option `name` of the options table at idx: an integer in lo..hi, or
 * dflt when absent; anything else raises, naming it. */
static lua_Integer opt_int_in(lua_State *L, int idx, const char *what, const char *name, lua_Integer lo,
                              lua_Integer hi, lua_Integer dflt)
{
    lua_Integer v = dflt;
    if (lua_getfield(L, idx, name) != LUA_TNIL) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < lo || lua_tointeger(L, -1) > hi)
            cm_lua_opt_error(L, what, "option '%s' must be an integer in %d..%d", name, (int)lo, (int)hi);
        v = lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

static size_t read_args(lua_State *L, const char *what, struct cm_ocsp_batch_opts *o, int *files,
                        int *ders)
{
    static const char *const keys[] = {"now", "skew", "threads", "files", "max_bytes", "verify",
                                       "attach", "ders", "memo", NULL};
    lua_Integer n, i;
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 4);
    cm_ocsp_batch_opts_init(o);
    *files = *ders = 0;
    if (!lua_isnil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        cm_lua_check_options(L, 4, what, keys);
        o->now = cm_lua_opt_time(L, 4, what, "now", 0);
        if (o->now < 0) cm_lua_opt_error(L, what, "option 'now' must not be negative");
        if (lua_getfield(L, 4, "skew") != LUA_TNIL) {
            o->skew = cm_lua_opt_time(L, 4, what, "skew", 0);
            if (o->skew < 0) cm_lua_opt_error(L, what, "option 'skew' must not be negative");
        }
        lua_pop(L, 1);
        o->threads = (unsigned)opt_int_in(L, 4, what, "threads", 0, CM_OCSP_BATCH_MAX_THREADS, o->threads);
        o->max_bytes = (size_t)opt_int_in(L, 4, what, "max_bytes", 1, CM_OCSP_MAX_INPUT, (lua_Integer)o->max_bytes);
        *files = cm_lua_opt_bool(L, 4, what, "files");
        *ders = cm_lua_opt_bool(L, 4, what, "ders");
        o->attach = cm_lua_opt_bool(L, 4, what, "attach");
        lua_getfield(L, 4, "verify");
        if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
            cm_lua_opt_error(L, what, "option 'verify' must be a boolean");
        if (!lua_isnil(L, -1)) o->verify = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (o->attach && !o->verify)
            cm_lua_opt_error(L, what, "option 'attach' needs verify: an unverified response is never a staple");
        if (o->attach && o->now <= 0)
            cm_lua_opt_error(L, what, "option 'attach' needs 'now'");
    }
    if (!lua_isnil(L, 4)) {
        if (lua_getfield(L, 4, "memo") != LUA_TNIL) o->memo = cm_lua_ocsp_memo_check(L, -1);
        lua_pop(L, 1);
    }
    o->keep_der = *files && *ders;
    n = (lua_Integer)lua_rawlen(L, 2);
    if ((lua_Integer)lua_rawlen(L, 3) != n)
        cm_lua_opt_error(L, what, "%d ids but %d responses", (int)n, (int)lua_rawlen(L, 3));
    if (n > OBATCH_MAX) cm_lua_opt_error(L, what, "at most %d responses a batch", OBATCH_MAX);
    for (i = 1; i <= n; i++) {
        struct cm_cache_id id;
        size_t len;
        const char *s;
        if (lua_rawgeti(L, 2, i) != LUA_TSTRING || !(s = lua_tolstring(L, -1, &len)) ||
            cm_cache_id_parse(s, len, &id) != CM_OK)
            cm_lua_opt_error(L, what, "ids[%d] must be a certificate id (64 hex digits)", (int)i);
        if (lua_rawgeti(L, 3, i) != LUA_TSTRING)
            cm_lua_opt_error(L, what, "responses[%d] must be a string, not %s", (int)i,
                             luaL_typename(L, -1));
        s = lua_tolstring(L, -1, &len);
        if (*files && (len == 0 || strlen(s) != len))
            cm_lua_opt_error(L, what, "responses[%d] must be a file path (files = true)", (int)i);
        lua_pop(L, 2);
    }
    return (size_t)n;
}

/* Make the batch userdata (pushed) with its own copies of the arguments. */
static struct lobatch *new_batch(lua_State *L, const char *what, size_t n, int files, int ders)
{
    struct lobatch *lb = lua_newuserdatauv(L, sizeof *lb, 2);
    size_t i, total = 1, at = 0;
    memset(lb, 0, sizeof *lb);
    luaL_setmetatable(L, OBATCH_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    /* the memo the threads read: alive while the batch is */
    if (lua_istable(L, 4)) {
        lua_getfield(L, 4, "memo");
        lua_setiuservalue(L, -2, 2);
    }
    lb->n = n;
    lb->files = files;
    lb->ders = ders;
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, 3, (lua_Integer)i);
        total += lua_rawlen(L, -1) + 1;
        lua_pop(L, 1);
    }
    if (!(lb->items = calloc(n ? n : 1, sizeof *lb->items)) || !(lb->bytes = malloc(total)))
        luaL_error(L, "%s: out of memory", what); /* __gc frees what was made */
    for (i = 0; i < n; i++) {
        struct cm_ocsp_batch_item *it = &lb->items[i];
        size_t len;
        const char *s;
        lua_rawgeti(L, 2, (lua_Integer)i + 1);
        s = lua_tolstring(L, -1, &len);
        cm_cache_id_parse(s, len, &it->id); /* checked by read_args */
        lua_rawgeti(L, 3, (lua_Integer)i + 1);
        s = lua_tolstring(L, -1, &len);
        memcpy(lb->bytes + at, s, len);
        lb->bytes[at + len] = '\0';
        if (files) {
            it->path = lb->bytes + at;
        } else {
            it->der = (const unsigned char *)lb->bytes + at;
            it->der_len = len;
        }
        at += len + 1;
        lua_pop(L, 2);
    }
    return lb;
}

/* Push r for the finished items of lb.  The columns stay on the stack while
 * they are filled (a lookup of r's field for each value cost ~1 us an item). */
static void push_results(lua_State *L, const struct lobatch *lb)
{
    enum { OK, STATUS, THIS_UPDATE, NEXT_UPDATE, PRODUCED_AT, REVOKED_AT, REASON, REFRESH_AT, ATTACHED,
           ERROR, CODE, DER, NCOLS };
    static const char *const cols[NCOLS] = {"ok", "status", "this_update", "next_update",
                                            "produced_at", "revoked_at", "reason", "refresh_at",
                                            "attached", "error", "code", "der"};
    size_t i;
    int k, r, c0;
    luaL_checkstack(L, NCOLS + 4, "cache:verify_staples");
    lua_createtable(L, 0, NCOLS);
    r = lua_gettop(L);
    c0 = r + 1;
    for (k = 0; k < NCOLS; k++) {
        int dense = k <= PRODUCED_AT || k == REFRESH_AT || k == ATTACHED;
        lua_createtable(L, dense ? (int)lb->n : 0, 0);
        lua_pushvalue(L, -1);
        lua_setfield(L, r, cols[k]);
    }
#define SET(col) lua_rawseti(L, c0 + (col), li)
    for (i = 0; i < lb->n; i++) {
        const struct cm_ocsp_batch_item *it = &lb->items[i];
        lua_Integer li = (lua_Integer)i + 1;
        lua_pushboolean(L, it->ok);
        SET(OK);
        lua_pushboolean(L, it->attached);
        SET(ATTACHED);
        if (!it->ok || it->attach_failed) {
            lua_pushstring(L, it->res.message[0] ? it->res.message : "error");
            SET(ERROR);
            lua_pushstring(L, it->res.code[0] ? it->res.code : "error");
            SET(CODE);
        }
        if (!it->ok) continue;
        lua_pushstring(L, cm_ocsp_status_name(it->info.status));
        SET(STATUS);
        lua_pushinteger(L, (lua_Integer)it->info.this_update);
        SET(THIS_UPDATE);
        if (it->info.next_update) {
            lua_pushinteger(L, (lua_Integer)it->info.next_update);
            SET(NEXT_UPDATE);
        }
        lua_pushinteger(L, (lua_Integer)it->info.produced_at);
        SET(PRODUCED_AT);
        if (it->info.status == CM_OCSP_REVOKED) {
            lua_pushinteger(L, (lua_Integer)it->info.revoked_at);
            SET(REVOKED_AT);
            if (cm_ocsp_reason_name(it->info.reason)) {
                lua_pushstring(L, cm_ocsp_reason_name(it->info.reason));
                SET(REASON);
            }
        }
        if (it->refresh_at == it->refresh_at) { /* not NaN: the entry was there */
            cm_lua_push_time(L, it->refresh_at);
            SET(REFRESH_AT);
        }
        if (lb->files && lb->ders && it->file_der) {
            lua_pushlstring(L, (const char *)it->file_der, it->file_der_len);
            SET(DER);
        }
    }
#undef SET
    lua_settop(L, r);
}

/* Push stored_staples_start's counts for the finished items of lb. */
static void push_counts(lua_State *L, const struct lobatch *lb)
{
    lua_Integer attached = 0, missing = 0, failed = 0;
    size_t i;
    for (i = 0; i < lb->n; i++) {
        const struct cm_ocsp_batch_item *it = &lb->items[i];
        if (it->attached) attached++;
        else if (!it->ok && strcmp(it->res.code, "ENOENT") == 0) missing++;
        else failed++;
    }
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)lb->n);
    lua_setfield(L, -2, "checked");
    lua_pushinteger(L, attached);
    lua_setfield(L, -2, "attached");
    lua_pushinteger(L, missing);
    lua_setfield(L, -2, "missing");
    lua_pushinteger(L, failed);
    lua_setfield(L, -2, "failed");
}

/* Start lb's batch on the cache at 1; nil, err, code pushed on failure. */
static int start(lua_State *L, struct lobatch *lb, const struct cm_ocsp_batch_opts *o)
{
    struct cm_result res;
    struct cm_cache *c = cm_lua_cache_check(L, 1);
    if (cm_ocsp_batch_start(&lb->b, c, lb->items, lb->n, o, &res) != CM_OK) {
        lb->b = NULL;
        return cm_lua_fail(L, &res);
    }
    return 0;
}

/* Finish lb on the cache of its uservalue and push r. */
static int finish(lua_State *L, int idx, struct lobatch *lb)
{
    struct cm_cache *c;
    lua_getiuservalue(L, idx, 1);
    c = cm_lua_cache_opt(L, -1);
    lua_pop(L, 1);
    if (!c) {
        lobatch_release(lb);
        return luaL_error(L, "attempt to use a closed cache");
    }
    cm_ocsp_batch_finish(c, lb->b); /* frees it */
    lb->b = NULL;
    lb->finished = 1;
    if (lb->summary) push_counts(L, lb);
    else push_results(L, lb);
    lobatch_release(lb);
    return 1;
}

/* What both entry points do: check the arguments, make the batch userdata
 * (pushed, index 5) and start it. -> the batch | NULL with nil, err, code
 * pushed (*rc the count to return). */
static struct lobatch *begin(lua_State *L, const char *what, int *rc)
{
    struct cm_ocsp_batch_opts o;
    struct lobatch *lb;
    int files, ders;
    size_t n;
    cm_lua_cache_check(L, 1);
    n = read_args(L, what, &o, &files, &ders);
    lb = new_batch(L, what, n, files, ders);
    if ((*rc = start(L, lb, &o)) != 0) return NULL;
    return lb;
}

int cm_lua_cache_verify_staples(lua_State *L)
{
    int rc;
    struct lobatch *lb = begin(L, "cache:verify_staples", &rc);
    return lb ? finish(L, 5, lb) : rc;
}

int cm_lua_cache_verify_staples_start(lua_State *L)
{
    int rc;
    return begin(L, "cache:verify_staples_start", &rc) ? 1 : rc;
}

/* The paths of stored_staples_start, grown as they are made. */
struct pathbuf {
    char *p;
    size_t len, cap;
};

static int pathbuf_add(struct pathbuf *pb, const char *root, size_t root_len, const char *key)
{
    size_t key_len = strlen(key), need = pb->len + root_len + 1 + key_len + 1;
    if (need > pb->cap) {
        size_t ncap = pb->cap ? pb->cap : 4096;
        char *grown;
        while (ncap < need) ncap *= 2;
        if (!(grown = realloc(pb->p, ncap))) return 0;
        pb->p = grown;
        pb->cap = ncap;
    }
    memcpy(pb->p + pb->len, root, root_len);
    pb->len += root_len;
    if (root_len == 0 || root[root_len - 1] != '/') pb->p[pb->len++] = '/';
    memcpy(pb->p + pb->len, key, key_len + 1);
    pb->len += key_len + 1;
    return 1;
}

int cm_lua_cache_stored_staples_start(lua_State *L)
{
    static const char *const keys[] = {"root", "now", "skew", "threads", "memo", NULL};
    const char *what = "cache:stored_staples_start";
    struct cm_cache *c = cm_lua_cache_check(L, 1);
    struct cm_ocsp_batch_opts o;
    struct lobatch *lb;
    struct pathbuf pb = {NULL, 0, 0};
    size_t root_len = 0, k = 0, *offs;
    const char *root;
    lua_Integer n, i;
    int rc;

    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    cm_lua_check_options(L, 3, what, keys);
    cm_ocsp_batch_opts_init(&o);
    lua_getfield(L, 3, "root");
    root = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &root_len) : NULL;
    if (!root || root_len == 0 || strlen(root) != root_len || root_len >= PATH_MAX / 2)
        cm_lua_opt_error(L, what, "option 'root' must be the storage folder (a path)");
    lua_pop(L, 1); /* the string stays alive in opts */
    o.now = cm_lua_opt_time(L, 3, what, "now", 1);
    if (o.now <= 0) cm_lua_opt_error(L, what, "option 'now' must be a positive time");
    if (lua_getfield(L, 3, "skew") != LUA_TNIL) {
        o.skew = cm_lua_opt_time(L, 3, what, "skew", 0);
        if (o.skew < 0) cm_lua_opt_error(L, what, "option 'skew' must not be negative");
    }
    lua_pop(L, 1);
    o.threads = (unsigned)opt_int_in(L, 3, what, "threads", 0, CM_OCSP_BATCH_MAX_THREADS, o.threads);
    o.attach = 1;
    o.attach_good_only = 1;
    if (lua_getfield(L, 3, "memo") != LUA_TNIL) o.memo = cm_lua_ocsp_memo_check(L, -1);
    lua_pop(L, 1);
    n = (lua_Integer)lua_rawlen(L, 2);
    if (n > OBATCH_MAX) cm_lua_opt_error(L, what, "at most %d certificates a batch", OBATCH_MAX);

    lb = lua_newuserdatauv(L, sizeof *lb, 2); /* at 4 */
    memset(lb, 0, sizeof *lb);
    luaL_setmetatable(L, OBATCH_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, 4, 1);
    lua_getfield(L, 3, "memo"); /* the memo the threads read: alive while the batch is */
    lua_setiuservalue(L, 4, 2);
    lb->files = 1;
    lb->summary = 1;
    if (!(lb->items = calloc(n ? (size_t)n : 1, sizeof *lb->items)) ||
        !(offs = malloc((n ? (size_t)n : 1) * sizeof *offs)))
        return luaL_error(L, "%s: out of memory", what); /* __gc frees the items */
    for (i = 1; i <= n; i++) {
        struct cm_cache_id id;
        struct cm_cache_view v;
        char key[CM_NAME_BUF + 32];
        size_t len = 0;
        const char *s;
        if (lua_rawgeti(L, 2, i) != LUA_TSTRING || !(s = lua_tolstring(L, -1, &len)) ||
            cm_cache_id_parse(s, len, &id) != CM_OK) {
            free(offs);
            free(pb.p);
            return cm_lua_opt_error(L, what, "ids[%d] must be a certificate id (64 hex digits)", (int)i);
        }
        lua_pop(L, 1);
        /* what the OCSP pass would not look for in storage, or that has a staple */
        if (!cm_cache_view(c, &id, &v) || !(v.not_after > o.now) || v.ocsp_count == 0 ||
            v.chain_count == 0 || (v.flags & CM_CACHE_HAS_STAPLE) || !cm_lua_staple_key(&v, key, sizeof key))
            continue;
        offs[k] = pb.len;
        if (!pathbuf_add(&pb, root, root_len, key)) {
            free(offs);
            free(pb.p);
            return luaL_error(L, "%s: out of memory", what);
        }
        lb->items[k++].id = id;
    }
    lb->n = k;
    lb->bytes = pb.p; /* owned by the batch from here */
    for (i = 0; (size_t)i < k; i++) lb->items[i].path = lb->bytes + offs[i];
    free(offs);
    if ((rc = start(L, lb, &o)) != 0) return rc;
    lua_settop(L, 4);
    return 1;
}

static struct lobatch *check_batch(lua_State *L)
{
    struct lobatch *lb = luaL_checkudata(L, 1, OBATCH_MT);
    if (lb->finished) luaL_error(L, "ocsp batch: finished already");
    if (!lb->items) luaL_error(L, "ocsp batch: dropped");
    return lb;
}

static int l_obatch_ready(lua_State *L)
{
    struct lobatch *lb = check_batch(L);
    lua_pushboolean(L, cm_ocsp_batch_ready(lb->b));
    return 1;
}

static int l_obatch_finish(lua_State *L)
{
    struct lobatch *lb = check_batch(L);
    lua_settop(L, 1);
    return finish(L, 1, lb);
}

/* batch:drop(): stop (joins the threads), attach nothing; idempotent. */
static int l_obatch_drop(lua_State *L)
{
    struct lobatch *lb = luaL_checkudata(L, 1, OBATCH_MT);
    if (!lb->finished) lobatch_release(lb);
    return 0;
}

void cm_lua_open_ocsp_batch(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"ready", l_obatch_ready},
        {"finish", l_obatch_finish},
        {"drop", l_obatch_drop},
        {NULL, NULL},
    };
    if (luaL_newmetatable(L, OBATCH_MT)) {
        lua_pushcfunction(L, l_obatch_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_obatch_gc);
        lua_setfield(L, -2, "__close");
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}
