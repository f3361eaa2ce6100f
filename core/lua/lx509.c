/* placeholder: replaced by the x509 unit */
#include "lcore.h"
int cm_lua_open_x509(lua_State *L) { (void)L; return 0; }
