--- certmaint: the Lua side every policy uses.
--
--   local certmaint = require "certmaint"
--   return certmaint.policy { certificates = { "example.com" } }
--
-- Fields load lazily so `require "certmaint"` stays cheap and a spec that only
-- needs durations does not pull in storage or the loop.
--
-- This table is what a policy sees, so it offers only the public modules: the
-- C module certmaint.core (with its test levers: clock_set, loop_reset, ...),
-- the scheduler's controls and certmaint.testing are for certmaint's own
-- modules and for specs, which `require` them by name (certmaint.sandbox
-- refuses them to a policy).
local M = {}

--- certmaint.loop as a policy sees it: the calls that wait inside a loop task,
-- for hooks and issuers written in the policy (a slow issuer sleeps, a deploy
-- hook runs a command). What drives the daemon (run, step, stop, spawn, reset)
-- is not here. Each call goes to the scheduler at call time.
M.loop = {}
for _, name in ipairs { "sleep", "yield", "exec", "http", "in_task" } do
  M.loop[name] = function(...) return require("certmaint.loop")[name](...) end
end

local lazy = {
  duration = "certmaint.duration",
  renewal = "certmaint.renewal",
  keys = "certmaint.keys",
  storage = "certmaint.storage",
  issuer = "certmaint.issuer",
  deploy = "certmaint.deploy",
}

--- Run a command without blocking the loop (deploy hooks: reload nginx, ...).
-- Returns {status=, signal=, stdout=, stderr=} or nil, err, code.
function M.exec(argv, opts)
  return require("certmaint.loop").exec(argv, opts)
end

--- Log one event: certmaint.log("info", "deployed", {name = "example.com"}).
function M.log(level, event, fields)
  return require("certmaint.core").log(level, event, fields)
end

-- certmaint.policy(spec): validate a policy table and apply defaults (see
-- certmaint.policy). Errors and P.source name the file:line where
-- `certmaint.policy` is written, even in `return certmaint.policy { ... }`:
-- a tail call drops the file's frame before any callee runs, but reading the
-- field happens first, while the frame is live, so it is served from __index,
-- which notes the place. Called as a statement, the call's own line is used
-- (the same line, or the right one when the function was kept in a local).
local function policy_at(at)
  return function(spec)
    local P = require "certmaint.policy"
    local source = at
    if not debug.getinfo(1, "t").istailcall then source = P.where(2) end
    return P.validate(spec, source)
  end
end

return setmetatable(M, {
  policy_at = policy_at, -- for certmaint.sandbox's read-only view of this table
  __index = function(t, k)
    if k == "policy" then
      return policy_at(require("certmaint.policy").where(2)) -- not cached: each use has its own place
    end
    local mod = lazy[k]
    if not mod then return nil end
    local v = require(mod)
    rawset(t, k, v)
    return v
  end,
})
