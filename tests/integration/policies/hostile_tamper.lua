-- Reaching for the host: the shared string metatable, certmaint's modules and
-- metatables, the standard libraries, certmaint.core (clock_set would freeze
-- the daemon's clock). Every attempt is made again in on_tick (policy code
-- runs with its own string table then); one that works is logged as
-- tamper_succeeded, which the suite forbids.
local certmaint = require "certmaint"
local log = certmaint.log
local base = require "hostile_common"
local attempts = {
  string_mt_index = function() getmetatable("").__index = { sub = function() return "" end } end,
  string_mt_rawset = function() rawset(getmetatable(""), "__index", {}) end,
  string_mt_set = function() setmetatable(getmetatable(""), {}) end,
  certmaint_log = function() require("certmaint").log = nil end,
  certmaint_renewal = function() require("certmaint").renewal.renew_at = nil end,
  certmaint_module_mt = function() getmetatable(require("certmaint")).__index = nil end,
  certmaint_setmetatable = function() setmetatable(require("certmaint.renewal"), { __index = {} }) end,
  certmaint_storage = function() require("certmaint.storage").file = nil end,
  core = function() require("certmaint.core").clock_set(0) end,
  engine = function() require("certmaint.engine").new = nil end,
  debug = function() debug.sethook() end,
  package = function() package.loaded["certmaint.core"].clock_set(0) end,
}
local function tamper(when)
  for what, fn in pairs(attempts) do
    if pcall(fn) then log("warn", "tamper_succeeded", { what = what, when = when }) end
  end
  -- the policy's own copies may change; that is not the host's
  string.format = nil
  table.concat = nil
  require("string").rep = nil
end
tamper("load")
return base {
  on_tick = function() tamper("on_tick") end,
  needs_renewal = function(cert, now, default)
    if ("abc"):sub(2, 2) ~= "b" or not ("x"):rep(2) then error("string methods broken") end
    return default(cert, now)
  end,
}
