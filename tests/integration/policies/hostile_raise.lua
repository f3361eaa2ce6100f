-- Every hook raises, on every call.
local base = require "hostile_common"
return base {
  needs_renewal = function() error("needs_renewal raises") end,
  allow_name = function() error("allow_name raises") end,
  on_tick = function(tick)
    tick.manage("extra.hostile.test") -- asks allow_name
    error("on_tick raises")
  end,
  on_renewed = function() error("on_renewed raises") end,
  on_error = function() error("on_error raises") end,
}
