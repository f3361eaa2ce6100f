/* placeholder: replaced by the cache unit */
#include "lcore.h"
int cm_lua_open_cache(lua_State *L) { (void)L; return 0; }
