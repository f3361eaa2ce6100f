/* placeholder: replaced by the crypto unit */
#include "lcore.h"
int cm_lua_open_crypto(lua_State *L) { (void)L; return 0; }
