--- Calling the policy's hooks: every call protected, errors logged and survived.
--
-- Decision hooks (needs_renewal, on_revoked, allow_name) are pure and quick:
-- they run under an instruction-count watchdog, so a runaway loop in a policy
-- is stopped with an error instead of freezing the daemon (Redis/HAProxy's
-- approach). Once the deadline passes the watchdog fires on every line, so a
-- policy's own pcall cannot swallow the error and keep looping.
-- Event hooks (on_tick, on_renewed, on_error) may yield (deploy commands run
-- through certmaint.exec), so their watchdog counts instructions instead.
local core = require "certmaint.core"

local M = {}

M.DECISION_TIME_LIMIT = 2 -- seconds of real time for one decision hook call
M.EVENT_INSTRUCTION_LIMIT = 2000000000 -- Lua instructions for one event hook call (seconds of CPU)
local COUNT = 100000
local OWN_SOURCE = debug.getinfo(1, "S").source

local function traceback(err)
  local msg = err
  if type(err) ~= "string" then
    local mt = getmetatable(err)
    msg = (mt and mt.__tostring) and tostring(err) or ("(error object is a " .. type(err) .. " value)")
  end
  return debug.traceback(msg, 2)
end

local function first_line(s)
  return (tostring(s):match("^[^\n]*"))
end

--- Record a hook failure: log it (with traceback), count it, tell on_error.
local function failed(runner, name, err)
  runner.errors = runner.errors + 1
  core.log("error", "hook_failed", { hook = name, error = first_line(err), traceback = err })
  local on_error = runner.policy and runner.policy.on_error
  if on_error and name ~= "on_error" then
    local ok, e2 = xpcall(on_error, traceback, { kind = "hook", hook = name, message = first_line(err) })
    if not ok then
      runner.errors = runner.errors + 1
      core.log("error", "hook_failed", { hook = "on_error", error = first_line(e2), traceback = e2 })
    end
  end
end

local Runner = {}
Runner.__index = Runner

--- A hook runner for one policy. runner.errors counts hook failures.
function M.new(policy)
  return setmetatable({ policy = policy, errors = 0 }, Runner)
end

-- Run fn under a watchdog: over_limit() is asked every COUNT instructions;
-- once it says yes, every following line raises, so a pcall in the policy
-- cannot swallow the error and keep looping. The watchdog never fires in this
-- file's own frames: between xpcall's return and the restore there is a line
-- event, and raising there would escape the protection.
local function guarded(self, name, over_limit, why, fn, ...)
  local co = coroutine.running()
  local old_hook, old_mask, old_count = debug.gethook(co)
  local function in_runner()
    local info = debug.getinfo(3, "S")
    return info and info.source == OWN_SOURCE
  end
  debug.sethook(co, function()
    if not in_runner() and over_limit() then
      debug.sethook(co, function()
        if not in_runner() then error("hook " .. name .. " " .. why, 2) end
      end, "l")
      error("hook " .. name .. " " .. why, 2)
    end
  end, "", COUNT)
  local res = table.pack(xpcall(fn, traceback, ...))
  if old_hook then debug.sethook(co, old_hook, old_mask, old_count) else debug.sethook(co) end
  if not res[1] then
    failed(self, name, res[2])
    return false, first_line(res[2])
  end
  return table.unpack(res, 1, res.n)
end

--- Call a decision hook (pure, quick, never yields) under a wall-clock limit.
-- Returns true, results... or false, err.
function Runner:decide(name, fn, ...)
  local deadline = core.monotonic() + M.DECISION_TIME_LIMIT
  return guarded(self, name, function() return core.monotonic() > deadline end,
    "exceeded its time limit of " .. M.DECISION_TIME_LIMIT .. "s", fn, ...)
end

--- Call an event hook. It may yield (deploy commands run through
-- certmaint.exec), so its limit counts instructions, not seconds: time spent
-- waiting does not count, a loop that never yields is stopped.
-- Returns true, results... or false, err.
function Runner:notify(name, fn, ...)
  local batches = 0
  local allowed = M.EVENT_INSTRUCTION_LIMIT // COUNT
  return guarded(self, name, function()
    batches = batches + 1
    return batches > allowed
  end, "exceeded its limit of " .. M.EVENT_INSTRUCTION_LIMIT .. " instructions", fn, ...)
end

return M
