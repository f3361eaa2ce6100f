--- Calling the policy's hooks: every call protected, errors logged and survived.
--
-- Decision hooks (needs_renewal, on_revoked, allow_name) are pure and quick:
-- they run under an instruction-count watchdog, so a runaway loop in a policy
-- is stopped with an error instead of freezing the daemon (Redis/HAProxy's
-- approach). Once the deadline passes the watchdog fires on every line, so a
-- policy's own pcall cannot swallow the error and keep looping.
-- Event hooks (on_tick, on_renewed, on_error) may yield (deploy commands run
-- through certmaint.exec), so they get no watchdog.
local core = require "certmaint.core"

local M = {}

M.DECISION_TIME_LIMIT = 2 -- seconds of real time for one decision hook call
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

--- Call a decision hook with the watchdog. Returns true, results... or false, err.
function Runner:decide(name, fn, ...)
  local deadline = core.monotonic() + M.DECISION_TIME_LIMIT
  local co = coroutine.running()
  local old_hook, old_mask, old_count = debug.gethook(co)
  -- The watchdog never fires in this file's own frames: between xpcall's
  -- return and the restore below there is a line event, and raising there
  -- would escape the protection.
  local function in_runner()
    local info = debug.getinfo(3, "S")
    return info and info.source == OWN_SOURCE
  end
  debug.sethook(co, function()
    if core.monotonic() > deadline and not in_runner() then
      -- fire on every line from now on: a pcall in the policy cannot outlast us
      debug.sethook(co, function()
        if not in_runner() then error("hook " .. name .. " exceeded its time limit", 2) end
      end, "l")
      error("hook " .. name .. " exceeded its time limit of " .. M.DECISION_TIME_LIMIT .. "s", 2)
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

--- Call an event hook (may yield). Returns true, results... or false, err.
function Runner:notify(name, fn, ...)
  local res = table.pack(xpcall(fn, traceback, ...))
  if not res[1] then
    failed(self, name, res[2])
    return false, first_line(res[2])
  end
  return table.unpack(res, 1, res.n)
end

return M
