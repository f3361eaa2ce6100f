/* lfileio.c - core.write_atomic, core.read_file, core.read_files,
 * core.list_files, core.create_exclusive, core.replace_if_unchanged, core.mkdir_p, core.stat,
 * core.rename, core.fsync_dir, core.remove, core.rmdir, core.hostname,
 * core.getpid, core.pid_alive. */
#include "lcore.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../fileio.h"

#define BUF_MT "certmaint.fileio.buffer"
#define RBUF_MT "certmaint.fileio.readbuf"
/* The most paths one read_files call takes (a bound, not a tuning knob). */
#define READ_FILES_MAX (4L * 1024 * 1024)
/* The largest read_file bound a caller may ask for. */
#define READ_MAX_LIMIT (1024L * 1024 * 1024)

/* A malloc'ed buffer anchored in a userdata while we push it into Lua, so a
 * memory error in lua_pushlstring cannot leak it. */
struct buf_box {
    char *data;
};

static int buf_gc(lua_State *L)
{
    struct buf_box *box = luaL_checkudata(L, 1, BUF_MT);
    free(box->data); box->data = NULL;
    return 0;
}

/* The reusable buffer of read_files, anchored in a userdata for the same
 * reason. */
struct rbuf_box {
    struct cm_fileio_buf buf;
};

static int rbuf_gc(lua_State *L)
{
    struct rbuf_box *box = luaL_checkudata(L, 1, RBUF_MT);
    cm_fileio_buf_free(&box->buf);
    return 0;
}

static const char *check_path(lua_State *L, int arg)
{
    size_t len;
    const char *path = luaL_checklstring(L, arg, &len);
    luaL_argcheck(L, len > 0, arg, "empty path");
    luaL_argcheck(L, strlen(path) == len, arg, "path contains a NUL byte");
    return path;
}

/* Permission bits from an octal string such as "0600" or "755"; a mistake
 * here is the caller's bug, so it raises. */
static mode_t check_mode(lua_State *L, int arg, const char *def)
{
    const char *s = luaL_optstring(L, arg, def);
    char *end = NULL;
    size_t len = strlen(s);
    unsigned long v;
    luaL_argcheck(L, len >= 3 && len <= 4 && strspn(s, "01234567") == len, arg,
                  "mode must be an octal string like \"0600\"");
    v = strtoul(s, &end, 8);
    luaL_argcheck(L, *end == '\0' && v <= 0777, arg, "mode must be permission bits (<= 0777)");
    return (mode_t)v;
}

static int push_ok(lua_State *L)
{
    lua_pushboolean(L, 1);
    return 1;
}

/* write_atomic(path, data [, mode = "0600"]) -> true | nil, err, code */
static int l_write_atomic(lua_State *L)
{
    const char *path = check_path(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    mode_t mode = check_mode(L, 3, "0600");
    struct cm_result res;
    if (cm_fileio_write_atomic(path, data, len, mode, &res) != CM_OK) return cm_lua_fail(L, &res);
    return push_ok(L);
}

/* read_file(path [, max_bytes = 1 MiB]) -> data | nil, err, code */
static int l_read_file(lua_State *L)
{
    const char *path = check_path(L, 1);
    lua_Integer max = luaL_optinteger(L, 2, CM_FILEIO_READ_MAX_DEFAULT);
    struct buf_box *box;
    size_t len = 0;
    struct cm_result res;
    luaL_argcheck(L, max >= 0 && max <= READ_MAX_LIMIT, 2, "max_bytes out of range");
    box = lua_newuserdatauv(L, sizeof *box, 0);
    box->data = NULL;
    luaL_setmetatable(L, BUF_MT);
    if (cm_fileio_read_file(path, (size_t)max, &box->data, &len, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    lua_pushlstring(L, box->data, len);
    free(box->data); box->data = NULL;
    return 1;
}

/* Set t[i] = {message = res->message, code = res->code}; t at index t_idx. */
static void set_failure(lua_State *L, int t_idx, lua_Integer i, const struct cm_result *res)
{
    lua_createtable(L, 0, 2);
    lua_pushstring(L, res->message[0] ? res->message : "unknown error");
    lua_setfield(L, -2, "message");
    lua_pushstring(L, res->code[0] ? res->code : "error");
    lua_setfield(L, -2, "code");
    lua_rawseti(L, t_idx, i);
}

/* read_files(paths [, max_bytes = 1 MiB [, dir]]) -> values, failures
 * Reads every file of the array paths (each "dir/<path>" when dir is given,
 * so callers need not build path strings).  values[i] is the content of
 * paths[i], or false when it could not be read; failures[i] is then
 * {message =, code =} (code "ENOENT", "EISDIR", "toobig", "ENAMETOOLONG", ...).
 * One buffer is reused for every file, so the only allocations per file are
 * the value strings themselves.  Raises on a non-string path, a NUL byte, or
 * more than READ_FILES_MAX paths. */

/* A walk's result anchored in a userdata while it is pushed into Lua. */
struct walk_box {
    char **paths;
    size_t count;
};

static int walk_gc(lua_State *L)
{
    struct walk_box *box = luaL_checkudata(L, 1, "certmaint.fileio.walk");
    cm_fileio_paths_free(box->paths, box->count);
    box->paths = NULL;
    box->count = 0;
    return 0;
}

/* list_files(dir [, {skip_top =, max_depth = 64, max_files = 10000000, side_files = false}]) ->
 * sorted relative paths of every file below dir | nil, err, code; side_files:
 * only our temp and aside files (cm_fileio_walk_side_files) */
static int l_list_files(lua_State *L)
{
    static const char *const keys[] = {"skip_top", "max_depth", "max_files", "side_files", NULL};
    int side_files = 0;
    const char *dir = check_path(L, 1);
    const char *skip = NULL;
    lua_Integer depth = 64, maxf = 10000000;
    struct walk_box *box;
    struct cm_result res;
    size_t i;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        cm_lua_check_options(L, 2, "core.list_files", keys);
        if (lua_getfield(L, 2, "skip_top") != LUA_TNIL) skip = luaL_checkstring(L, -1);
        if (lua_getfield(L, 2, "max_depth") != LUA_TNIL) depth = luaL_checkinteger(L, -1);
        if (lua_getfield(L, 2, "max_files") != LUA_TNIL) maxf = luaL_checkinteger(L, -1);
        if (lua_getfield(L, 2, "side_files") != LUA_TNIL) side_files = lua_toboolean(L, -1);
        luaL_argcheck(L, depth >= 0 && depth <= 1024, 2, "max_depth out of range");
        luaL_argcheck(L, maxf >= 0, 2, "max_files out of range");
    }
    box = lua_newuserdatauv(L, sizeof *box, 0);
    box->paths = NULL;
    box->count = 0;
    luaL_setmetatable(L, "certmaint.fileio.walk");
    if ((side_files ? cm_fileio_walk_side_files : cm_fileio_walk)(dir, skip, (unsigned)depth, (size_t)maxf,
                                                                  &box->paths, &box->count, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    lua_createtable(L, (int)(box->count > INT32_MAX ? INT32_MAX : box->count), 0);
    for (i = 0; i < box->count; i++) {
        lua_pushstring(L, box->paths[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    cm_fileio_paths_free(box->paths, box->count);
    box->paths = NULL;
    box->count = 0;
    return 1;
}

static int l_read_files(lua_State *L)
{
    lua_Integer max, n, i;
    const char *dir = NULL;
    size_t dir_len = 0;
    struct rbuf_box *box;
    char full[PATH_MAX];

    luaL_checktype(L, 1, LUA_TTABLE);
    max = luaL_optinteger(L, 2, CM_FILEIO_READ_MAX_DEFAULT);
    luaL_argcheck(L, max >= 0 && max <= READ_MAX_LIMIT, 2, "max_bytes out of range");
    if (!lua_isnoneornil(L, 3)) {
        dir = luaL_checklstring(L, 3, &dir_len);
        luaL_argcheck(L, dir_len > 0 && strlen(dir) == dir_len, 3, "bad directory");
    }
    n = (lua_Integer)lua_rawlen(L, 1);
    luaL_argcheck(L, n <= READ_FILES_MAX, 1, "too many paths");
    lua_settop(L, 3);
    box = lua_newuserdatauv(L, sizeof *box, 0); /* 4 */
    box->buf.data = NULL;
    box->buf.cap = 0;
    luaL_setmetatable(L, RBUF_MT);
    lua_createtable(L, (int)n, 0); /* 5: values */
    lua_createtable(L, 0, 0);      /* 6: failures */
    for (i = 1; i <= n; i++) {
        size_t len, got = 0;
        const char *p, *path;
        struct cm_result res;
        if (lua_rawgeti(L, 1, i) != LUA_TSTRING) {
            return luaL_error(L, "read_files: paths[%d] is a %s, not a string", (int)i,
                              luaL_typename(L, -1));
        }
        p = lua_tolstring(L, -1, &len);
        if (len == 0 || strlen(p) != len)
            return luaL_error(L, "read_files: paths[%d] is empty or contains a NUL byte", (int)i);
        path = p;
        if (dir) {
            int w = snprintf(full, sizeof full, "%s/%s", dir, p);
            if (w < 0 || (size_t)w >= sizeof full) {
                cm_fail(&res, "ENAMETOOLONG", "read %s/%s: File name too long", dir, p);
                lua_pop(L, 1);
                lua_pushboolean(L, 0);
                lua_rawseti(L, 5, i);
                set_failure(L, 6, i, &res);
                continue;
            }
            path = full;
        }
        if (cm_fileio_read_into(path, (size_t)max, &box->buf, &got, &res) == CM_OK) {
            lua_pop(L, 1);
            lua_pushlstring(L, box->buf.data, got);
            lua_rawseti(L, 5, i);
        } else {
            lua_pop(L, 1);
            lua_pushboolean(L, 0);
            lua_rawseti(L, 5, i);
            set_failure(L, 6, i, &res);
        }
    }
    cm_fileio_buf_free(&box->buf);
    return 2;
}

/* rename(from, to) -> true | nil, err, code (no fsync: see fsync_dir) */
static int l_rename(lua_State *L)
{
    const char *from = check_path(L, 1);
    const char *to = check_path(L, 2);
    struct cm_result res;
    if (cm_fileio_rename(from, to, &res) != CM_OK) return cm_lua_fail(L, &res);
    return push_ok(L);
}

/* fsync_dir(path) -> true | nil, err, code */
static int l_fsync_dir(lua_State *L)
{
    struct cm_result res;
    if (cm_fileio_fsync_dir(check_path(L, 1), &res) != CM_OK) return cm_lua_fail(L, &res);
    return push_ok(L);
}

/* create_exclusive(path, data [, mode = "0600"]) -> true | nil, err, "EEXIST"|... */
static int l_create_exclusive(lua_State *L)
{
    const char *path = check_path(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    mode_t mode = check_mode(L, 3, "0600");
    struct cm_result res;
    if (cm_fileio_create_exclusive(path, data, len, mode, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    return push_ok(L);
}

/* replace_if_unchanged(path, expected, data [, mode]) -> true | nil, err,
 * "changed"|"ENOENT"|"EEXIST"|... */
static int l_replace_if_unchanged(lua_State *L)
{
    const char *path = check_path(L, 1);
    size_t elen, len;
    const char *expected = luaL_checklstring(L, 2, &elen);
    const char *data = luaL_checklstring(L, 3, &len);
    mode_t mode = check_mode(L, 4, "0600");
    struct cm_result res;
    luaL_argcheck(L, elen <= CM_FILEIO_READ_MAX_DEFAULT, 2, "expected content too large");
    if (cm_fileio_replace_if_unchanged(path, expected, elen, data, len, mode, &res) != CM_OK)
        return cm_lua_fail(L, &res);
    return push_ok(L);
}

/* mkdir_p(path [, mode = "0700"]) -> true | nil, err, code */
static int l_mkdir_p(lua_State *L)
{
    const char *path = check_path(L, 1);
    mode_t mode = check_mode(L, 2, "0700");
    struct cm_result res;
    if (cm_fileio_mkdir_p(path, mode, &res) != CM_OK) return cm_lua_fail(L, &res);
    return push_ok(L);
}

/* stat(path) -> {type=, size=, modified=, mode="0600", perms=} | nil, err, code */
static int l_stat(lua_State *L)
{
    const char *path = check_path(L, 1);
    struct cm_file_stat st;
    struct cm_result res;
    char mode[8];
    static const char *const types[] = {"file", "directory", "other"};
    if (cm_fileio_stat(path, &st, &res) != CM_OK) return cm_lua_fail(L, &res);
    lua_createtable(L, 0, 5);
    lua_pushstring(L, types[st.type]);
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, (lua_Integer)st.size);
    lua_setfield(L, -2, "size");
    lua_pushnumber(L, st.modified);
    lua_setfield(L, -2, "modified");
    snprintf(mode, sizeof mode, "%04o", st.perms & 07777);
    lua_pushstring(L, mode);
    lua_setfield(L, -2, "mode");
    lua_pushinteger(L, (lua_Integer)st.perms);
    lua_setfield(L, -2, "perms");
    return 1;
}

/* remove(path) -> true | nil, err, code (a file, not a directory) */
static int l_remove(lua_State *L)
{
    struct cm_result res;
    if (cm_fileio_remove(check_path(L, 1), &res) != CM_OK) return cm_lua_fail(L, &res);
    return push_ok(L);
}

/* rmdir(path) -> true | nil, err, code ("ENOTEMPTY" when not empty) */
static int l_rmdir(lua_State *L)
{
    struct cm_result res;
    if (cm_fileio_rmdir(check_path(L, 1), &res) != CM_OK) return cm_lua_fail(L, &res);
    return push_ok(L);
}

static int l_hostname(lua_State *L)
{
    char name[256];
    cm_fileio_hostname(name, sizeof name);
    lua_pushstring(L, name);
    return 1;
}

static int l_getpid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

/* core.pid_alive(pid) -> boolean: does the process exist on this host? */
static int l_pid_alive(lua_State *L)
{
    lua_Integer pid = luaL_checkinteger(L, 1);
    lua_pushboolean(L, cm_fileio_pid_alive((long)pid));
    return 1;
}

/* remove_many(root, rels [, {prune_empty = false}]) -> removed | nil, err, code, removed:
 * cm_fileio_remove_many; removed[i] is "removed", "missing" (was not there)
 * or false (the failure names the first such) for each rels[i]. */
static int l_remove_many(lua_State *L)
{
    static const char *const keys[] = {"prune_empty", NULL};
    const char *root = check_path(L, 1);
    int prune = 0, rc;
    lua_Integer n, i;
    char **rels;
    unsigned char *ok;
    struct cm_result res;

    luaL_checktype(L, 2, LUA_TTABLE);
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        cm_lua_check_options(L, 3, "core.remove_many", keys);
        if (lua_getfield(L, 3, "prune_empty") != LUA_TNIL) prune = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    n = (lua_Integer)lua_rawlen(L, 2);
    luaL_argcheck(L, n <= READ_FILES_MAX, 2, "too many paths");
    /* userdata memory: freed by Lua whatever happens below */
    rels = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *rels, 0);
    ok = lua_newuserdatauv(L, (size_t)(n ? n : 1), 0);
    for (i = 1; i <= n; i++) {
        size_t len;
        lua_rawgeti(L, 2, i);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "core.remove_many: path %d is not a string", (int)i);
        rels[i - 1] = (char *)lua_tolstring(L, -1, &len); /* anchored in the table at 2 */
        if (len == 0 || strlen(rels[i - 1]) != len || rels[i - 1][0] == '/')
            luaL_error(L, "core.remove_many: path %d must be relative, non-empty, without NUL", (int)i);
        lua_pop(L, 1);
    }
    rc = cm_fileio_remove_many(root, rels, (size_t)n, prune, ok, &res);
    lua_createtable(L, (int)n, 0);
    for (i = 0; i < n; i++) {
        if (ok[i] == 1) lua_pushliteral(L, "removed");
        else if (ok[i] == 2) lua_pushliteral(L, "missing");
        else lua_pushboolean(L, 0);
        lua_rawseti(L, -2, i + 1);
    }
    if (rc == CM_OK) return 1;
    lua_pushnil(L);
    lua_pushstring(L, res.message);
    lua_pushstring(L, res.code);
    lua_rotate(L, -4, -1); /* nil, err, code, removed */
    return 4;
}

int cm_lua_open_fs(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"write_atomic", l_write_atomic},
        {"read_file", l_read_file},
        {"read_files", l_read_files},
        {"list_files", l_list_files},
        {"rename", l_rename},
        {"fsync_dir", l_fsync_dir},
        {"create_exclusive", l_create_exclusive},
        {"replace_if_unchanged", l_replace_if_unchanged},
        {"mkdir_p", l_mkdir_p},
        {"stat", l_stat},
        {"remove", l_remove},
        {"rmdir", l_rmdir},
        {"remove_many", l_remove_many},
        {"hostname", l_hostname},
        {"getpid", l_getpid},
        {"pid_alive", l_pid_alive},
        {NULL, NULL},
    };
    if (luaL_newmetatable(L, BUF_MT)) {
        lua_pushcfunction(L, buf_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, RBUF_MT)) {
        lua_pushcfunction(L, rbuf_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, "certmaint.fileio.walk")) {
        lua_pushcfunction(L, walk_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_setfuncs(L, fns, 0);
    return 0;
}
