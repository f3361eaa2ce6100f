/* fuzz_lua_storage_json.c - JSON read back from storage (lock files, ACME
 * account and order records, challenge tokens, certmagic metadata, deploy
 * records, retry states) through the real readers:
 * tests/fuzz/lua/fuzz_storage_json.lua in the Lua host (lua_host.h). */
#include "fuzz.h"
#include "lua_host.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lua_run("fuzz_storage_json", data, size);
    return 0;
}
