-- on_tick runs away with a long limit: SIGTERM must still stop the daemon
-- within a second.
local certmaint = require "certmaint"
local base = require "hostile_common"
return base({
  on_tick = function()
    certmaint.log("info", "runaway_started", {})
    while true do end
  end,
}, { event_time = "60s" })
