/* fuzz_lua_names.c - tests/fuzz/lua/fuzz_names.lua (see its header) in the Lua
 * host (lua_host.h). */
#include "fuzz.h"
#include "lua_host.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lua_run("fuzz_names", data, size);
    return 0;
}
