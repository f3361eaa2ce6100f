-- Decision hooks that try to wait or yield, event hooks that yield the
-- daemon's task, and a coroutine made at load time that loops when a hook
-- resumes it (it carries the watchdog from its creation).
local certmaint = require "certmaint"
local base = require "hostile_common"
local spin = coroutine.wrap(function() while true do end end)
return base {
  needs_renewal = function() certmaint.loop.sleep(0.1) return true end,
  allow_name = function() coroutine.yield() return true end,
  on_tick = function(tick)
    tick.manage("extra.hostile.test")
    coroutine.yield("a task's yield")
  end,
  on_renewed = function() spin() end,
}
