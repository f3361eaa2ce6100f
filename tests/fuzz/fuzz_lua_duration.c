/* fuzz_lua_duration.c - tests/fuzz/lua/fuzz_duration.lua (see its header) in the Lua
 * host (lua_host.h). */
#include "fuzz.h"
#include "lua_host.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lua_run("fuzz_duration", data, size);
    return 0;
}
