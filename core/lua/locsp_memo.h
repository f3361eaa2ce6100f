/* locsp_memo.h - the ocsp memo userdata for other bindings (locsp_memo.c). */
#ifndef CM_LUA_OCSP_MEMO_H
#define CM_LUA_OCSP_MEMO_H

#include <lua.h>

struct cm_ocsp_memo;

/* The open memo at idx; raises when it is not one or is closed. */
struct cm_ocsp_memo *cm_lua_ocsp_memo_check(lua_State *L, int idx);

#endif
