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

#include "../result.h"

int cm_lua_open_log(lua_State *L);
int cm_lua_open_clock(lua_State *L);
int cm_lua_open_x509(lua_State *L);
int cm_lua_open_cache(lua_State *L);
int cm_lua_open_loop(lua_State *L);
int cm_lua_open_fs(lua_State *L);
int cm_lua_open_name(lua_State *L);
int cm_lua_open_json(lua_State *L);
int cm_lua_open_crypto(lua_State *L);

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

int luaopen_certmaint_core(lua_State *L);

#endif
