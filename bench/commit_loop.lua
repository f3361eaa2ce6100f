-- commit_loop.lua - many certificate commits finishing at once, and what they
-- do to the rest of the loop.
--
--   LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/lua/?.so;;" \
--     lua5.4 bench/commit_loop.lua [M=200] [dir]
--
-- M loop tasks each commit one certificate set (.crt 3 KiB, .key 0.3 KiB,
-- .json 0.6 KiB, 0600 keys: what an obtain stores) to a fresh file storage
-- under dir (default: a new folder in $TMPDIR or /var/tmp, on a disk that
-- fsyncs; removed after), all spawned at once, while a ticker task sleeps
-- 10 ms at a time and records how late each tick woke.  Prints the wall time
-- of all M commits, commits/s, the ticker's worst and median lateness and its
-- tick count, and the process's CPU seconds.  Runs against any tree whose
-- storage.file has commit{} (before and after the worker pool alike).
-- Prints figures; never a test.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local file = require "certmaint.storage.file"

local M = math.tointeger(tonumber(arg[1] or "200")) or error("usage: commit_loop.lua [M] [dir]")
local base = arg[2] or ((os.getenv("TMPDIR") or "/var/tmp") .. "/certmaint-bench-commit-" .. tostring(core.getpid()))
assert(os.execute("rm -rf '" .. base .. "' && mkdir -p '" .. base .. "'"))

local TICK = 0.010
local storage = file.new { root = base }
local crt = string.rep("C", 3 * 1024)
local key = string.rep("K", 300)
local meta = string.rep("J", 600)

local lateness, ticking = {}, true
loop.spawn(function()
  while ticking do
    local due = core.monotonic() + TICK
    loop.sleep(TICK)
    lateness[#lateness + 1] = math.max(core.monotonic() - due, 0)
  end
end)

local done, failed = 0, 0
local t0 = core.monotonic()
local cpu0 = os.clock()
for i = 1, M do
  loop.spawn(function()
    local dir = ("certificates/bench/site%d.bench.test/site%d.bench.test"):format(i, i)
    local ok, err = storage:commit { put = { [dir .. ".crt"] = crt .. i, [dir .. ".key"] = key .. i,
      [dir .. ".json"] = meta .. i } }
    if not ok then
      failed = failed + 1
      io.stderr:write("commit failed: ", tostring(err), "\n")
    end
    done = done + 1
  end)
end
assert(loop.run_until(function() return done == M end, { timeout = 600 }), "commits did not finish")
local wall = core.monotonic() - t0
local cpu = os.clock() - cpu0
ticking = false
loop.run_until(function() return loop.stats().tasks == 0 end, { timeout = 5 })

table.sort(lateness)
local worst = lateness[#lateness] or 0
local median = lateness[(#lateness + 1) // 2] or 0
print(("commits=%d failed=%d"):format(M, failed))
print(("wall_s=%.3f s"):format(wall))
print(("commits_per_s=%.1f /s"):format(M / wall))
print(("cpu_s=%.3f s"):format(cpu))
print(("ticks=%d (one each %g ms if the loop were free: %d)"):format(#lateness, TICK * 1000, math.floor(wall / TICK)))
print(("tick_late_max_ms=%.1f ms"):format(worst * 1000))
print(("tick_late_median_ms=%.1f ms"):format(median * 1000))
if not arg[2] then os.execute("rm -rf '" .. base .. "'") end
