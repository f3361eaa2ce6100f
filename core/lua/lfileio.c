/* placeholder: replaced by the fs unit (core/fileio.c) */
#include "lcore.h"
int cm_lua_open_fs(lua_State *L) { (void)L; return 0; }
