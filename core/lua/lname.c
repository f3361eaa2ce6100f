/* placeholder: replaced by the name unit */
#include "lcore.h"
int cm_lua_open_name(lua_State *L) { (void)L; return 0; }
