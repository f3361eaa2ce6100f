-- Every hook kind loops for ever, and pcalls its own loop so a plain error
-- would be swallowed.
local base = require "hostile_common"
local function forever() while true do pcall(function() while true do end end) end end
return base {
  needs_renewal = forever,
  allow_name = forever,
  on_tick = function(tick)
    tick.manage("extra.hostile.test") -- asks allow_name, which loops
    forever()
  end,
  on_renewed = forever,
  on_error = forever, -- called when the others fail
}
