-- phases.lua - where `certmaint status POLICY --json` spends its time, phase by phase.
--
--   LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/lua/?.so;;" lua5.4 bench/phases.lua POLICY
--
-- Runs the steps of the CLI's status --json path on the same modules (the
-- policy, engine.new, load_all, the JSON rows) and prints, per phase, wall
-- seconds, the main thread's CPU seconds (/proc/thread-self/schedstat: what
-- Lua and the C it calls cost, without the parse threads, so other load on a
-- shared machine moves it little), microseconds per certificate of both, and
-- the Lua heap after it; then the text table's rows (status_rows). The
-- JSON goes to /dev/null. Use a policy of bench/startup.sh
-- (WORK/policy-<ISSUER>-<N>.lua). Prints figures; never a test.
collectgarbage("generational") -- as cli.main does for one-shot commands
local core = require "certmaint.core"
local P = assert(arg[1], "usage: lua5.4 bench/phases.lua POLICY")
local function thread_cpu()
  local f = io.open("/proc/thread-self/schedstat")
  if not f then return os.clock() end
  local ns = f:read("n")
  f:close()
  return ns / 1e9
end
local n = 1
local t0, c0 = core.monotonic(), thread_cpu()
local function mark(what)
  local t, c = core.monotonic(), thread_cpu()
  io.stdout:write(string.format("%-12s wall %.3f s %6.2f us/cert  main thread cpu %.3f s %6.2f us/cert  heap %.1f MiB\n",
    what, t - t0, (t - t0) / n * 1e6, c - c0, (c - c0) / n * 1e6, collectgarbage("count") / 1024))
  t0, c0 = core.monotonic(), thread_cpu()
end
local policy = assert(require("certmaint.sandbox").load_policy(P))
n = math.max(#policy.certificates, 1)
mark("policy")
local engine = require("certmaint.engine").new(policy, {})
mark("engine.new")
local loop = require "certmaint.loop"
local now = core.now()
local task = loop.spawn(function()
  engine:load_all { keys = false }
  mark("load_all")
  engine:each_status_batch(now, function() end)
  mark("columns")
  local sink = assert(io.open("/dev/null", "w"))
  assert(engine:status_json(now, sink))
  sink:close()
  mark("status_json")
  local rows = 0
  engine:status_rows(now, function() rows = rows + 1 end)
  mark("status_rows")
end)
loop.run_until(function() return task.done end)
if not task.ok then error(task.error) end
