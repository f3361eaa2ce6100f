-- Memory: on_tick grows a table without bound inside one call; on_renewed
-- keeps 6 MiB more after every call (the policy's state grows across calls).
local base = require "hostile_common"
local kept = {}
-- a long time limit: memory is the limit these calls must run into
return base({
  on_tick = function()
    local t = {}
    for i = 1, 1e9 do t[i] = ("x"):rep(64 * 1024) .. i end
  end,
  on_renewed = function()
    for _ = 1, 6 do kept[#kept + 1] = ("k"):rep(1024 * 1024 - 64) .. #kept end
  end,
}, { event_time = "10s" })
