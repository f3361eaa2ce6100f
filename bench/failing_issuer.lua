-- bench/failing_issuer.lua: N managed certificates against an issuer that
-- always fails. Prints what the waiting costs: live coroutines, timers, Lua
-- heap and RSS after every obtain has failed once, and again after the
-- first retries. With retry state as data these stay O(concurrency), not O(N).
--
--   LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/lua/?.so;;" \
--     lua5.4 bench/failing_issuer.lua [N]
local N = tonumber(arg[1]) or 10000
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local loop = require "certmaint.loop"

local function rss_kib()
  for line in io.lines("/proc/self/status") do
    local v = line:match("^VmRSS:%s+(%d+)")
    if v then return tonumber(v) end
  end
end

local names = {}
for i = 1, N do names[i] = ("site%06d.example.com"):format(i) end
core.log_config { level = "error", capture = true }
local clock = testing.clock(testing.EPOCH)
local issuer = testing.issuer { fail = math.maxinteger }
local rss0 = rss_kib()
local e = testing.engine(certmaint.policy { certificates = names, issuer = issuer })
core.log_take()

local function report(label)
  collectgarbage()
  local st, pending = loop.stats(), core.loop_pending()
  print(("RESULT %s N=%d issuer_calls=%d tasks=%d timers=%d lua_heap_MiB=%.1f rss_growth_MiB=%.1f"):format(
    label, N, issuer.calls, st.tasks, pending.timers, collectgarbage("count") / 1024, (rss_kib() - rss0) / 1024))
end

report("after_first_attempts")
clock:advance(61)
e:tick("renew")
core.log_take()
report("after_first_retries")
testing.reset()
