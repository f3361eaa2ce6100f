/* fuzz_lua_acme.c - ACME JSON (directory, account, order, authorization,
 * problem) through the real acme client and flows: tests/fuzz/lua/fuzz_acme.lua
 * in the Lua host (lua_host.h). */
#include "fuzz.h"
#include "lua_host.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lua_run("fuzz_acme", data, size);
    return 0;
}
