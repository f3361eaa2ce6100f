--- Calling the policy's hooks: every call watched, errors logged and survived.
--
-- Every call into the policy (and the loading of the file, certmaint.sandbox)
-- runs under core.watch_call (core/lua/lwatch.c): a limit on running time, on
-- Lua instructions and on heap growth, and a pending SIGTERM stops it too.
-- The watchdog is a C count hook, so a policy's own pcall cannot swallow it:
-- once a limit is passed every following line raises.
--
-- Decision hooks (needs_renewal, on_revoked, allow_name) are pure and quick:
-- they may not yield, and get DECISION_TIME_LIMIT seconds. A decision hook
-- that fails (raises, times out, returns the wrong type) does not decide: the
-- engine falls back to its default rule for that certificate (engine/renew.lua)
-- and the failure shows in `status` and `check`. One that ran out of time is
-- suspended for SUSPEND seconds (pure functions time out again: asking it for
-- every certificate would stall the loop for DECISION_TIME_LIMIT each).
-- Event hooks (on_tick, on_renewed, on_error, and the notifications
-- on_failure, on_expiring, on_recovered) may wait in the loop (deploy
-- commands through certmaint.exec); the waiting does not count as running.
--
-- Memory: a call may grow the heap by HOOK_MEMORY_MAX (policy field
-- hook_limits.memory) and never past HEAP_SHARE of the whole-heap cap
-- (CERTMAINT_LUA_MEMORY_MAX), so the engine keeps headroom. What the policy
-- keeps between calls is counted too; when it still exceeds HOOK_MEMORY_MAX
-- after a full collection, or the heap stays above the share, the policy's
-- hooks are dropped (their state is freed) and the default rules run until
-- the policy is reloaded.
local core = require "certmaint.core"

local M = {}

M.DECISION_TIME_LIMIT = 2          -- seconds of running time for one decision hook call
M.EVENT_TIME_LIMIT = 10            -- seconds of running time for one event hook call (waits excluded)
M.EVENT_INSTRUCTION_LIMIT = 2000000000 -- Lua instructions for one hook call (seconds of CPU)
M.HOOK_MEMORY_MAX = 64 * 1024 * 1024 -- bytes a call may add, and the policy may keep
M.HEAP_SHARE = 0.75                -- hooks are refused above this share of the heap cap
M.SUSPEND = 600                    -- seconds a decision hook that ran out of time is skipped
M.LOG_BURST = 5                    -- hook_failed lines logged per hook in a LOG_WINDOW ...
M.LOG_WINDOW = 60                  -- ... seconds; further failures are counted, not logged

M.DECISIONS = { needs_renewal = true, on_revoked = true, allow_name = true }
M.EVENTS = { on_tick = true, on_renewed = true, on_error = true,
  on_failure = true, on_expiring = true, on_recovered = true }

local function first_line(s)
  return (tostring(s):match("^[^\n]*"))
end

local LIMIT_CODES = { timeout = true, instructions = true, stopping = true }

local Runner = {}
Runner.__index = Runner

--- A hook runner for one policy. runner.errors counts hook failures;
-- runner.last_failure = { hook=, message=, at= } the latest; runner.disabled
-- the reason the policy's hooks were dropped, if they were.
-- The limits are the policy's hook_limits, else the module's defaults (read
-- at each call, so a spec can change them); opts.memory_max overrides.
function M.new(policy, opts)
  opts = opts or {}
  local limits = policy and policy.hook_limits or {}
  return setmetatable({ policy = policy, errors = 0, retained = 0, suspended = {}, log_windows = {},
    decision_time = limits.decision_time, event_time = limits.event_time,
    memory_max = opts.memory_max or limits.memory or M.HOOK_MEMORY_MAX }, Runner)
end

--- Drop the policy's hooks (their closures and whatever they hold are freed
-- at the next collection): the default rules decide until a reload.
function Runner:disable(why)
  self.disabled = why
  local P = self.policy
  if P then
    for name in pairs(M.DECISIONS) do P[name] = nil end
    for name in pairs(M.EVENTS) do P[name] = nil end
  end
  collectgarbage("collect")
  core.log("error", "policy_hooks_disabled", { error = why,
    action = "the default rules decide until the policy is reloaded (SIGHUP)" })
end

-- Log a failure with its traceback, at most LOG_BURST lines per hook in a
-- LOG_WINDOW: a hook failing for each of 100k certificates must not write
-- 100k tracebacks. The line that starts a window says how many failures the
-- last one left unlogged; status shows the count (runner.errors) too.
-- Would a failure of hook `name` now be logged (its burst not spent)?
function Runner:will_log(name)
  local w = self.log_windows[name]
  return not w or w.logged < M.LOG_BURST or core.monotonic() - w.start >= M.LOG_WINDOW
end

function Runner:log_failure(name, err, code)
  local now = core.monotonic()
  local w = self.log_windows[name]
  if not w or now - w.start >= M.LOG_WINDOW then
    w = { start = now, logged = 0, unlogged = w and w.unlogged or 0 }
    self.log_windows[name] = w
  end
  if w.logged >= M.LOG_BURST then
    w.unlogged = w.unlogged + 1
    return
  end
  w.logged = w.logged + 1
  local fields = { hook = name, error = first_line(err), code = code, traceback = err }
  if w.unlogged > 0 then fields.unlogged_before = w.unlogged w.unlogged = 0 end
  core.log("error", "hook_failed", fields)
  if w.logged == M.LOG_BURST then
    core.log("warn", "hook_failures_not_logged", { hook = name, seconds = M.LOG_WINDOW,
      why = string.format("%d failures of this hook logged in %ds: more are counted, not logged", M.LOG_BURST, M.LOG_WINDOW) })
  end
end

--- Record a hook failure: log it (with traceback), count it, tell on_error.
function Runner:failed(name, err, code)
  self.errors = self.errors + 1
  self.last_failure = { hook = name, message = first_line(err), code = code, at = core.now() }
  self:log_failure(name, err, code)
  local on_error = self.policy and self.policy.on_error
  if on_error and name ~= "on_error" and not self.in_on_error then
    self.in_on_error = true
    self:call("on_error", on_error, true, { kind = "hook", hook = name, message = first_line(err) })
    self.in_on_error = false
  end
end

-- The heap ceiling for the next call, or nil, why when no call may run.
function Runner:ceiling()
  local used, limit = core.memory()
  local share = limit > 0 and math.floor(limit * M.HEAP_SHARE) or nil
  if share and used > share then
    collectgarbage("collect")
    used = core.memory()
    if used > share then
      return nil, string.format("the Lua heap (%d MiB) is above %d%% of its cap (%d MiB)",
        used >> 20, math.floor(M.HEAP_SHARE * 100), limit >> 20)
    end
  end
  local ceiling = used + self.memory_max
  if share and ceiling > share then ceiling = share end
  return ceiling, nil, used
end

-- After a call: count what the policy kept; past memory_max after a full
-- collection, the policy's hooks go.
function Runner:account(before)
  local used = core.memory()
  self.retained = math.max(self.retained + (used - before), 0)
  if self.retained > self.memory_max then
    collectgarbage("collect")
    local after = core.memory()
    self.retained = math.max(self.retained - (used - after), 0)
    if self.retained > self.memory_max then
      self:disable(string.format("the policy keeps %d MiB between hook calls, more than hook_limits.memory (%d MiB)",
        self.retained >> 20, self.memory_max >> 20))
    end
  end
end

-- The end of a call: count what the policy kept, report a failure.
local function finish(self, name, before, ok, ...)
  self:account(before)
  if ok then return ok, ... end
  local err, code = ...
  if LIMIT_CODES[code] then err = "hook " .. name .. " " .. err end
  if code == "memory" then
    err = string.format("hook %s ran out of memory (%s; it may add %d MiB to the heap)",
      name, first_line(err), self.memory_max >> 20)
  end
  self:failed(name, err, code)
  return false, first_line(err), code
end

--- Call hook `name` (fn) watched. yield: it may wait in the loop.
-- Returns true, results... or false, err, code.
function Runner:call(name, fn, yield, ...)
  if self.disabled then return false, "policy hooks disabled: " .. self.disabled, "disabled" end
  local ceiling, why, before = self:ceiling()
  if not ceiling then
    self:disable(why)
    return false, "policy hooks disabled: " .. why, "disabled"
  end
  -- one limits table per kind of call, reused (this runs per certificate);
  -- the module's defaults are read each time (specs change them)
  local seconds = yield and (self.event_time or M.EVENT_TIME_LIMIT) or (self.decision_time or M.DECISION_TIME_LIMIT)
  local limits = yield and self.event_limits or self.decision_limits
  if not limits or limits.seconds ~= seconds or limits.instructions ~= M.EVENT_INSTRUCTION_LIMIT then
    limits = { seconds = seconds, instructions = M.EVENT_INSTRUCTION_LIMIT, yield = yield }
    if yield then self.event_limits = limits else self.decision_limits = limits end
  end
  limits.ceiling = ceiling
  -- a failure past the log burst is only counted: no traceback to build
  limits.traceback = self:will_log(name)
  return finish(self, name, before, core.watch_call(limits, fn, ...))
end

--- Call a decision hook (pure, quick, never yields) under DECISION_TIME_LIMIT.
-- A hook that ran out of time is skipped for SUSPEND seconds.
-- Returns true, results... or false, err, code.
function Runner:decide(name, fn, ...)
  local until_t = self.suspended[name]
  if until_t then
    if core.monotonic() < until_t then
      return false, "hook " .. name .. " is suspended: it exceeded its time limit", "suspended"
    end
    self.suspended[name] = nil
  end
  local res = table.pack(self:call(name, fn, false, ...))
  if not res[1] and (res[3] == "timeout" or res[3] == "instructions") then
    self.suspended[name] = core.monotonic() + M.SUSPEND
  end
  return table.unpack(res, 1, res.n)
end

--- Call an event hook. It may wait in the loop (deploy commands run through
-- certmaint.exec): its time limit counts running time only.
-- Returns true, results... or false, err, code.
function Runner:notify(name, fn, ...)
  return self:call(name, fn, true, ...)
end

--- What `status` says about the policy's hooks: the reason they were
-- disabled, or nil.
function Runner:problem()
  if self.disabled then return "policy hooks disabled: " .. self.disabled end
  return nil
end

return M
