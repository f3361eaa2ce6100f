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

int luaopen_certmaint_core(lua_State *L);

#endif
