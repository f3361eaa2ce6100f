/* lx509.h - what the x509-family bindings (lx509.c, lkey.c, llocalca.c)
 * share: the "box" that parks whatever the core mallocs for a call.
 *
 * A box is a userdata made before the core call, so a Lua error (out of
 * memory while pushing a result, a bad option) never longjmps over live
 * memory: its __gc (and __close) frees what it holds.  Its metatable is made
 * by cm_lua_open_x509, which luaopen_certmaint_core runs before the other two.
 */
#ifndef CM_LX509_H
#define CM_LX509_H

#include "lcore.h"

#include <stddef.h>

#include "../x509.h"

#define CM_LUA_X509_BOX_MT "certmaint.x509.box"
#define CM_LUA_X509_MAX_NAMES 4096 /* names in one CSR or certificate */

struct cm_lua_x509_box {
    struct cm_cert_facts facts;
    struct cm_csr_info csr;
    char *str[2];
    unsigned char *bin;
    const char **names; /* array of borrowed Lua strings */
};

/* Push a new, empty box and return it (raises only when Lua is out of
 * memory, before anything is malloc'd). */
struct cm_lua_x509_box *cm_lua_x509_box_new(lua_State *L);

/* Free everything b holds and zero it; the box stays usable. */
void cm_lua_x509_box_release(struct cm_lua_x509_box *b);

/* The array of strings at stack index idx into b->names (borrowed: the table
 * anchors the strings while it stays on the stack); returns their count.
 * Raises "fn: …" for a non-table, a non-string item, or more than
 * CM_LUA_X509_MAX_NAMES. */
size_t cm_lua_x509_names(lua_State *L, int idx, const char *fn, struct cm_lua_x509_box *b);

#endif
