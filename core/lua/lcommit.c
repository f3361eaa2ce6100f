/* lcommit.c - core.commit_job: the file storage's journal commit (commit.h)
 * as a job that runs here (job:run) or on the loop's worker pool
 * (job:submit, loop/work.h), so a commit's fsyncs need not stop the loop.
 *
 *   local job = core.commit_job { root = "/var/lib/certmaint", txn = id,
 *     dir_mode = "0700", puts = { { key =, value =, mode = "0600" }, ... },
 *     deletes = { key, ... }, crash_after = n }
 *   job:run(phase [, manifest])    -> true | nil, err, code, step, path, committed
 *   job:submit(phase [, manifest]) -> id (a {kind = "work", id =} event when
 *                                     done; then job:result()) | nil, err, code
 *   job:result()                   -> what run would have returned
 *   job:busy()                     -> submitted and not yet reported
 *   job:steps()                    -> steps done (the crash injector's count)
 * phase: "stage", "apply" (manifest required: the commit point), "write".
 *
 *   core.file_job(op, path [, data, mode]) -> job: one blocking file call
 *     of core's, op "write_atomic" | "create_exclusive" | "remove", as a
 *     job (run/submit/result as above, no phase; result: true | nil, err, code)
 *     so the storage's lock files are fsynced off the loop too.
 * An injected crash is code "crash".  A job's userdata may be collected
 * while it runs on a worker: the job then frees itself when reported.
 */
#include "lcore.h"

#include <stdlib.h>
#include <string.h>

#include "../commit.h"
#include "../fileio.h"
#include "../loop/loop.h"
#include "../loop/work.h"

#define JOB_MT "certmaint.commit_job"
#define FN "core.commit_job"

enum file_op { OP_NONE = 0, OP_WRITE_ATOMIC, OP_CREATE_EXCLUSIVE, OP_REMOVE };

struct job {
    struct cm_commit c;
    enum file_op op;            /* a core.file_job: one call, c.res its outcome */
    char *path, *data;
    size_t len;
    mode_t mode;
    enum cm_commit_phase phase;
    int rc;         /* of the last run */
    int ran;        /* a run finished (result() has something to say) */
    int busy;       /* on the pool: the worker owns c */
    int orphaned;   /* the userdata is gone: free when the pool lets go */
};

struct box {
    struct job *job;
};

static void job_free(struct job *j)
{
    cm_commit_free(&j->c);
    free(j->path);
    free(j->data);
    free(j);
}

static struct job *check_job(lua_State *L)
{
    struct box *b = luaL_checkudata(L, 1, JOB_MT);
    if (!b->job) luaL_error(L, "commit job: already freed");
    return b->job;
}

static int job_gc(lua_State *L)
{
    struct box *b = luaL_checkudata(L, 1, JOB_MT);
    if (b->job) {
        if (b->job->busy) b->job->orphaned = 1;
        else job_free(b->job);
        b->job = NULL;
    }
    return 0;
}

static mode_t parse_mode(lua_State *L, const char *fn, const char *s, const char *what)
{
    char *end = NULL;
    size_t len = strlen(s);
    unsigned long v;
    if (len < 3 || len > 4 || strspn(s, "01234567") != len)
        cm_lua_opt_error(L, fn, "%s must be an octal string like \"0600\"", what);
    v = strtoul(s, &end, 8);
    if (*end != '\0' || v > 0777) cm_lua_opt_error(L, fn, "%s must be permission bits (<= 0777)", what);
    return (mode_t)v;
}

static char *dup_bytes(lua_State *L, const char *s, size_t len)
{
    char *p = malloc(len + 1);
    if (!p) luaL_error(L, "out of memory");
    if (len) memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

/* A string field of the table at idx that must not hold a NUL (paths, keys). */
static const char *name_field(lua_State *L, int idx, const char *key, const char *what)
{
    size_t len;
    const char *s = cm_lua_opt_string(L, idx, FN, key, 1, &len);
    if (len == 0 || strlen(s) != len) cm_lua_opt_error(L, FN, "%s must be a non-empty string without NUL", what);
    return s;
}

static int l_commit_job(lua_State *L)
{
    static const char *const known[] = {"root", "txn", "dir_mode", "puts", "deletes", "crash_after", NULL};
    struct box *b;
    struct job *j;
    const char *s;
    lua_Integer n, i;
    luaL_checktype(L, 1, LUA_TTABLE);
    cm_lua_check_options(L, 1, FN, known);
    /* the userdata first: a raise below leaves what was copied to its __gc */
    b = lua_newuserdatauv(L, sizeof *b, 0);
    b->job = NULL;
    luaL_setmetatable(L, JOB_MT);
    if (!(j = calloc(1, sizeof *j))) return luaL_error(L, "out of memory");
    cm_commit_init(&j->c);
    b->job = j;

    s = name_field(L, 1, "root", "root");
    j->c.root = dup_bytes(L, s, strlen(s));
    if ((s = cm_lua_opt_string(L, 1, FN, "txn", 0, NULL))) {
        if (!*s || strchr(s, '/')) cm_lua_opt_error(L, FN, "txn must be a name without '/'");
        j->c.txn = dup_bytes(L, s, strlen(s));
    }
    if ((s = cm_lua_opt_string(L, 1, FN, "dir_mode", 0, NULL))) j->c.dir_mode = parse_mode(L, FN, s, "dir_mode");
    if (lua_getfield(L, 1, "crash_after") != LUA_TNIL) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
            cm_lua_opt_error(L, FN, "crash_after must be an integer >= 0");
        j->c.crash_after = (long)lua_tointeger(L, -1);
    }
    lua_pop(L, 1);

    if (lua_getfield(L, 1, "puts") != LUA_TNIL) {
        luaL_checktype(L, -1, LUA_TTABLE);
        n = (lua_Integer)lua_rawlen(L, -1);
        if (n > 0) {
            if (!(j->c.puts = calloc((size_t)n, sizeof *j->c.puts))) return luaL_error(L, "out of memory");
            for (i = 1; i <= n; i++) {
                struct cm_commit_put *p = &j->c.puts[j->c.nput];
                const char *v;
                size_t vlen;
                if (lua_rawgeti(L, -1, i) != LUA_TTABLE) cm_lua_opt_error(L, FN, "puts[%d] must be a table", (int)i);
                s = name_field(L, -1, "key", "a put's key");
                v = cm_lua_opt_string(L, -1, FN, "value", 1, &vlen);
                p->mode = parse_mode(L, FN, cm_lua_opt_string(L, -1, FN, "mode", 1, NULL), "a put's mode");
                p->key = dup_bytes(L, s, strlen(s));
                if (!(p->data = malloc(vlen ? vlen : 1))) return luaL_error(L, "out of memory");
                if (vlen) memcpy(p->data, v, vlen);
                p->len = vlen;
                j->c.nput++; /* counted once whole: cm_commit_free frees what is counted */
                lua_pop(L, 1);
            }
        }
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "deletes") != LUA_TNIL) {
        luaL_checktype(L, -1, LUA_TTABLE);
        n = (lua_Integer)lua_rawlen(L, -1);
        if (n > 0) {
            if (!(j->c.deletes = calloc((size_t)n, sizeof *j->c.deletes))) return luaL_error(L, "out of memory");
            for (i = 1; i <= n; i++) {
                size_t len;
                if (lua_rawgeti(L, -1, i) != LUA_TSTRING) cm_lua_opt_error(L, FN, "deletes[%d] must be a string", (int)i);
                s = lua_tolstring(L, -1, &len);
                if (len == 0 || strlen(s) != len) cm_lua_opt_error(L, FN, "deletes[%d] must be a key", (int)i);
                j->c.deletes[j->c.ndelete++] = dup_bytes(L, s, len);
                lua_pop(L, 1);
            }
        }
    }
    lua_pop(L, 1);
    if (j->c.txn == NULL && (j->c.ndelete > 0))
        cm_lua_opt_error(L, FN, "deletes need a txn (only a journal commit deletes)");
    return 1;
}

/* The phase argument, and the manifest for "apply" (copied into the job). */
static void set_phase(lua_State *L, struct job *j)
{
    static const char *const phases[] = {"stage", "apply", "write", NULL};
    static const enum cm_commit_phase values[] = {CM_COMMIT_STAGE, CM_COMMIT_APPLY, CM_COMMIT_WRITE};
    int p;
    if (j->busy) luaL_error(L, "commit job: already running");
    if (j->op != OP_NONE) return; /* a file job: one call, no phases */
    p = luaL_checkoption(L, 2, NULL, phases);
    j->phase = values[p];
    if (j->phase != CM_COMMIT_WRITE && !j->c.txn) luaL_error(L, "commit job: phase %s needs a txn", phases[p]);
    if (j->phase == CM_COMMIT_APPLY) {
        size_t len;
        const char *m = luaL_checklstring(L, 3, &len);
        char *copy = malloc(len + 1);
        if (!copy) luaL_error(L, "out of memory");
        memcpy(copy, m, len);
        copy[len] = '\0';
        free(j->c.manifest);
        j->c.manifest = copy;
        j->c.manifest_len = len;
    }
}

static int push_result(lua_State *L, struct job *j)
{
    if (!j->ran) return luaL_error(L, "commit job: no result yet");
    if (j->rc == CM_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (j->op != OP_NONE) return cm_lua_fail(L, &j->c.res);
    lua_pushnil(L);
    lua_pushstring(L, j->c.res.message);
    lua_pushstring(L, j->c.res.code[0] ? j->c.res.code : "EIO");
    if (j->c.failed_step) lua_pushstring(L, j->c.failed_step); else lua_pushnil(L);
    lua_pushstring(L, j->c.failed_path);
    lua_pushboolean(L, j->c.committed);
    return 6;
}

static int run_job(struct job *j)
{
    switch (j->op) {
    case OP_WRITE_ATOMIC: return cm_fileio_write_atomic(j->path, j->data, j->len, j->mode, &j->c.res);
    case OP_CREATE_EXCLUSIVE: return cm_fileio_create_exclusive(j->path, j->data, j->len, j->mode, &j->c.res);
    case OP_REMOVE: return cm_fileio_remove(j->path, &j->c.res);
    case OP_NONE: break;
    }
    return cm_commit_run(&j->c, j->phase);
}

static int l_job_run(lua_State *L)
{
    struct job *j = check_job(L);
    set_phase(L, j);
    j->rc = run_job(j);
    j->ran = 1;
    return push_result(L, j);
}

static void job_work(void *arg)
{
    struct job *j = arg;
    j->rc = run_job(j);
}

static void job_done(void *arg, int ran)
{
    struct job *j = arg;
    j->busy = 0;
    j->ran = 1;
    if (!ran) {
        j->rc = CM_ERR;
        cm_fail(&j->c.res, "cancelled", "commit job dropped before it started (loop reset)");
    }
    if (j->orphaned) job_free(j);
}

static int l_job_submit(lua_State *L)
{
    struct job *j = check_job(L);
    struct cm_result res;
    uint64_t id;
    set_phase(L, j);
    j->ran = 0;
    id = cm_work_submit(cm_lua_loop(L), job_work, job_done, j, &res);
    if (!id) return cm_lua_fail(L, &res);
    j->busy = 1;
    lua_pushinteger(L, (lua_Integer)id);
    return 1;
}

static int l_job_result(lua_State *L)
{
    struct job *j = check_job(L);
    if (j->busy) return luaL_error(L, "commit job: still running");
    return push_result(L, j);
}

static int l_job_busy(lua_State *L)
{
    lua_pushboolean(L, check_job(L)->busy);
    return 1;
}

static int l_job_steps(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check_job(L)->c.steps);
    return 1;
}

/* core.file_job(op, path [, data [, mode = "0600"]]) */
static int l_file_job(lua_State *L)
{
    static const char *const ops[] = {"write_atomic", "create_exclusive", "remove", NULL};
    static const enum file_op values[] = {OP_WRITE_ATOMIC, OP_CREATE_EXCLUSIVE, OP_REMOVE};
    int op = luaL_checkoption(L, 1, NULL, ops);
    size_t plen, dlen = 0;
    const char *path = luaL_checklstring(L, 2, &plen), *data = NULL;
    mode_t mode = 0600;
    struct box *b;
    struct job *j;
    luaL_argcheck(L, plen > 0 && strlen(path) == plen, 2, "path must be non-empty, without NUL");
    if (values[op] != OP_REMOVE) {
        data = luaL_checklstring(L, 3, &dlen);
        if (!lua_isnoneornil(L, 4)) mode = parse_mode(L, "core.file_job", luaL_checkstring(L, 4), "mode");
    }
    b = lua_newuserdatauv(L, sizeof *b, 0);
    b->job = NULL;
    luaL_setmetatable(L, JOB_MT);
    if (!(j = calloc(1, sizeof *j))) return luaL_error(L, "out of memory");
    cm_commit_init(&j->c);
    b->job = j;
    j->op = values[op];
    j->mode = mode;
    j->path = dup_bytes(L, path, plen);
    if (data) {
        j->data = dup_bytes(L, data, dlen);
        j->len = dlen;
    }
    return 1;
}

int cm_lua_open_commit(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"commit_job", l_commit_job},
        {"file_job", l_file_job},
        {NULL, NULL},
    };
    static const luaL_Reg methods[] = {
        {"run", l_job_run},
        {"submit", l_job_submit},
        {"result", l_job_result},
        {"busy", l_job_busy},
        {"steps", l_job_steps},
        {NULL, NULL},
    };
    if (luaL_newmetatable(L, JOB_MT)) {
        lua_pushcfunction(L, job_gc);
        lua_setfield(L, -2, "__gc");
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    luaL_setfuncs(L, fns, 0);
    return 0;
}
