/* placeholder: replaced by the loop unit */
#include "lcore.h"
int cm_lua_open_loop(lua_State *L) { (void)L; return 0; }
