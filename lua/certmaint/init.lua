--- certmaint: the Lua side every policy uses.
--
--   local certmaint = require "certmaint"
--   return certmaint.policy { certificates = { "example.com" } }
--
-- Fields load lazily so `require "certmaint"` stays cheap and a spec that only
-- needs durations does not pull in storage or the loop.
local M = {}

local lazy = {
  core = "certmaint.core",
  loop = "certmaint.loop",
  duration = "certmaint.duration",
  renewal = "certmaint.renewal",
  keys = "certmaint.keys",
  storage = "certmaint.storage",
  issuer = "certmaint.issuer",
  deploy = "certmaint.deploy",
  testing = "certmaint.testing",
}

--- Validate a policy table and apply defaults (see certmaint.policy).
-- Errors name the field and the file:line of this call.
function M.policy(spec)
  return require("certmaint.policy")(spec, 3)
end

--- Run a command without blocking the loop (deploy hooks: reload nginx, ...).
-- Returns {status=, signal=, stdout=, stderr=} or nil, err, code.
function M.exec(argv, opts)
  return require("certmaint.loop").exec(argv, opts)
end

--- Log one event: certmaint.log("info", "deployed", {name = "example.com"}).
function M.log(level, event, fields)
  return require("certmaint.core").log(level, event, fields)
end

return setmetatable(M, {
  __index = function(t, k)
    local mod = lazy[k]
    if not mod then return nil end
    local v = require(mod)
    rawset(t, k, v)
    return v
  end,
})
