/* lcore.h - the Lua binding units of certmaint.core.
 *
 * Each cm_lua_open_<area> adds its functions (and makes its metatables) into
 * the module table at the top of the stack, leaving the stack as it found it.
 * Only files under core/lua/ include lua.h.
 */
#ifndef CM_LCORE_H
#define CM_LCORE_H

#include <lua.h>
#include <lauxlib.h>

#include <stdint.h>

#include "../result.h"

int cm_lua_open_log(lua_State *L);
int cm_lua_open_clock(lua_State *L);
int cm_lua_open_x509(lua_State *L);
int cm_lua_open_key(lua_State *L);
int cm_lua_open_localca(lua_State *L);
int cm_lua_open_cache(lua_State *L);
int cm_lua_open_loop(lua_State *L);
int cm_lua_open_fs(lua_State *L);
int cm_lua_open_name(lua_State *L);
int cm_lua_open_json(lua_State *L);
int cm_lua_open_crypto(lua_State *L);
int cm_lua_open_renewal(lua_State *L);
int cm_lua_open_watch(lua_State *L);
int cm_lua_open_pattern(lua_State *L);
int cm_lua_open_jws(lua_State *L);
int cm_lua_open_tlsalpn(lua_State *L);
int cm_lua_open_crl(lua_State *L);
int cm_lua_open_commit(lua_State *L);
int cm_lua_open_clean_scan(lua_State *L);
int cm_lua_open_sdnotify(lua_State *L);
int cm_lua_open_term(lua_State *L);
int cm_lua_open_failpoint(lua_State *L);
int cm_lua_open_ocsp_memo(lua_State *L);

/* The accounting allocator (lwatch.c): the Lua heap in bytes, capped at
 * `limit` (0: none) and, while a watched policy call runs, at that call's
 * `ceiling`.  inner = NULL means malloc/realloc/free; otherwise allocations
 * go to inner(inner_ud, ...) (a stock interpreter's allocator, wrapped). */
struct cm_lua_mem {
    lua_Alloc inner;
    void *inner_ud;
    size_t used;
    size_t limit;
    size_t ceiling;
};
void *cm_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

/* 1 when the running watched call has passed a limit (then it is marked so
 * its hook raises); 0 otherwise or when none runs. */
int cm_lua_watch_check(void);

/* Why the running watched call was stopped ("" when it was not). */
const char *cm_lua_watch_why(void);

/* Push nil, res->message, res->code and return 3: the `nil, err, code` shape. */
int cm_lua_fail(lua_State *L, const struct cm_result *res);

/* Push nil, message, code built from a code and a message; returns 3. */
int cm_lua_failf(lua_State *L, const char *code, const char *fmt, ...);

/* Push a string list as a Lua array (names, URLs). */
struct cm_strlist;
void cm_lua_push_strlist(lua_State *L, const struct cm_strlist *list);

/* The one option-table checker of the C bindings.  Raises (a bad option
 * table is the caller's bug) when the table at idx has a key that is not in
 * known (a NULL-terminated list), with the wording of certmaint.options:
 *
 *   file:line: core.http_request: unknown option "tiemout" (did you mean "timeout"? known: a, b)
 *   file:line: core.http_request: unknown option "x" (known: a, b)
 *   file:line: core.http_request: unexpected positional value [1] (options are named: name = value; known: a, b)
 *
 * file:line is the Lua caller's; the known names are listed sorted; of
 * several unknown keys the smallest string key is named, so the message is
 * stable.  `what` names the function ("core.http_request").  Does nothing
 * when every key is known.  Never raises with malloc'd memory live. */
void cm_lua_check_options(lua_State *L, int idx, const char *what, const char *const *known);

/* Option fields of the table at idx, for the functions named fn
 * ("core.cert_issue").  Wrong types and missing required fields raise
 * "file:line: fn: option 'key' …" naming the Lua caller; nothing raises with
 * malloc'd memory live (the callers park theirs in a userdata first). */

/* The process's event loop (made on first use); raises when it cannot be
 * made.  What every binding of a loop unit (lloop.c, ltlsalpn.c) starts from. */
struct cm_loop;
struct cm_loop *cm_lua_loop(lua_State *L);

/* Argument arg as a loop id (a positive integer); raises otherwise. */
uint64_t cm_lua_check_loop_id(lua_State *L, int arg);

/* Raise "file:line: fn: <formatted message>" (lua_pushfstring formats). */
int cm_lua_opt_error(lua_State *L, const char *fn, const char *fmt, ...);

/* Field key as a string, or NULL when nil or absent (then *len = 0; len may
 * be NULL); raises when it is another type, or absent and required.  The
 * string stays alive while the table does. */
const char *cm_lua_opt_string(lua_State *L, int idx, const char *fn, const char *key,
                              int required, size_t *len);

/* Field key as integer Unix seconds (floored), 0 when absent; raises when not
 * a number, out of +-1e15, or absent and required. */
int64_t cm_lua_opt_time(lua_State *L, int idx, const char *fn, const char *key, int required);

/* Field key as a boolean (absent: false); raises when another type. */
int cm_lua_opt_bool(lua_State *L, int idx, const char *fn, const char *key);

/* The Lua value at idx as core.json_encode(v, {pretty = true}) writes it, as
 * malloc'd text the caller frees; NULL with err filled ("json: ... at $.x")
 * when it cannot be encoded.  Leaves the stack as it found it; may raise
 * only on a Lua memory error (nothing of its own leaks then). */
char *cm_lua_json_pretty(lua_State *L, int idx, char *err, size_t err_size);

/* The JSON text ("\"...\"", escaped as core.json_encode escapes) of the string
 * s[0..len), malloc'd; NULL when s is not valid UTF-8 or memory ran out.
 * Calls no Lua. */
char *cm_json_string_text(const char *s, size_t len);

int luaopen_certmaint_core(lua_State *L);

#endif
