/* locsp_batch.h - the cache's OCSP batch methods (locsp_batch.c), registered
 * by lcache.c, and the cache accessors lcache.c gives them. */
#ifndef CM_LOCSP_BATCH_H
#define CM_LOCSP_BATCH_H

#include <lua.h>

struct cm_cache;
struct cm_cache_view;

/* The open cache at idx; raises unless it is one. */
struct cm_cache *cm_lua_cache_check(lua_State *L, int idx);
/* The cache at idx, or NULL when it is closed; raises unless it is a cache. */
struct cm_cache *cm_lua_cache_opt(lua_State *L, int idx);

int cm_lua_cache_verify_staples(lua_State *L);
int cm_lua_cache_verify_staples_start(lua_State *L);
/* cache:stored_staples_start: start-up's first staples (locsp_batch.c) */
int cm_lua_cache_stored_staples_start(lua_State *L);
/* cache:staple_plan (lstaple_plan.c) */
int cm_lua_cache_staple_plan(lua_State *L);
/* The storage key of v's staple ("ocsp/<name key>-<FNV-1a of the PEM chain>",
 * certmagic's) into out[0..cap): 0 when v's name makes no key or its PEM
 * cannot be made (lstaple_plan.c). */
int cm_lua_staple_key(const struct cm_cache_view *v, char *out, size_t cap);
/* Make the batch metatable (once). */
void cm_lua_open_ocsp_batch(lua_State *L);

#endif
