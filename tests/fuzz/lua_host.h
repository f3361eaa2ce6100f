/* lua_host.h - the in-process Lua 5.4 host of the fuzz_lua_* harnesses.
 *
 * One lua_State for the life of the process (as the daemon has), with the
 * real certmaint.core preloaded and package.path on the source tree's lua/
 * and tests/fuzz/lua/, under the daemon's accounting allocator capped at
 * FUZZ_LUA_MEMORY_MAX.  fuzz_lua_run() requires the driver module once (a
 * tests/fuzz/lua/<driver>.lua returning function(bytes)), then calls it on
 * each input with an instruction budget.
 *
 * Verdicts: the driver returning, or a Lua error raised on purpose by the
 * code under test (error("storage.etcd: ...")), are fine; a Lua runtime
 * error (indexing nil, arithmetic on a string, a bad argument to a core
 * function, stack overflow, out of memory under the cap, the instruction
 * budget spent) means untrusted bytes reached code that did not check them:
 * the message and traceback go to stderr and the process aborts, so both
 * libFuzzer and replay.c report the input. */
#ifndef CM_FUZZ_LUA_HOST_H
#define CM_FUZZ_LUA_HOST_H

#include <stddef.h>
#include <stdint.h>

#define FUZZ_LUA_MEMORY_MAX ((size_t)256 << 20)  /* Lua heap for one input's work */
#define FUZZ_LUA_INSTRUCTIONS 200000000L         /* VM instructions an input may take */

/* Run driver (a module name under tests/fuzz/lua/) on data; aborts on a finding. */
void fuzz_lua_run(const char *driver, const uint8_t *data, size_t size);

#endif
