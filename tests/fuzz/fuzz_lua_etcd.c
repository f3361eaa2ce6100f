/* fuzz_lua_etcd.c - etcd v3 JSON gateway answers through the real etcd storage
 * backend: tests/fuzz/lua/fuzz_etcd.lua in the Lua host (lua_host.h). */
#include "fuzz.h"
#include "lua_host.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lua_run("fuzz_etcd", data, size);
    return 0;
}
