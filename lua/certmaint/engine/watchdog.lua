--- The watchdog: is every pass still completing, and can others tell?
--
-- The daemon's tickers report each pass they start and finish
-- (engine/timewatch.lua). A pass that has not completed within
-- policy.watchdog_intervals (default 3) of its intervals, and at least
-- MIN_STALL seconds — counted on the elapsed clock from the daemon's start or
-- the pass's last completion — is stalled (a renew pass waits for the
-- renewals it queued: with a 1 s interval a pass of a few seconds is
-- normal): one error-level event `pass_stalled` (pass, late, interval,
-- last_completed) when it becomes so, `pass_recovered` when it completes
-- again. A pass that fails still completed: failures are pass_failed's.
--
-- What the watchdog knows goes three ways, from a task of its own (so a pass
-- waiting on a hung storage call does not stop it):
--   - the health file (policy.health_file; default <root>/health/<host>.json,
--     <root> the file storage's root or the data directory), rewritten
--     atomically every write_interval seconds and when a pass completes, with
--     state "running" and "stopped" on a clean stop: `certmaint status --check`
--     reads it (exit 2 when a pass is stalled, or the daemon stopped, died or
--     stopped writing), `status --daemon` prints it;
--   - under systemd (NOTIFY_SOCKET set, core/sdnotify.c): READY=1 once
--     start-up has loaded the certificates, STATUS=... lines, STOPPING=1, and
--     with WatchdogSec (WATCHDOG_USEC) WATCHDOG=1 at half that interval while
--     every pass is healthy only: a stalled loop stops pinging and systemd
--     restarts it;
--   - the log, as above.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local rfc3339 = require "certmaint.rfc3339"

local M = {}

M.DEFAULT_INTERVALS = 3     -- policy.watchdog_intervals when not set
M.HEALTH_WRITE_MAX = 60     -- seconds between health file writes, at most
M.HEALTH_VERSION = 1
M.MIN_STALL = 60            -- seconds: no pass is stalled sooner, however short its interval

local function log(level, event, fields) core.log(level, event, fields or {}) end

--- The passes the watchdog watches, with their intervals: { {kind, interval}, ... }.
function M:watched_passes()
  local p = self.policy
  local out = { { "renew", p.renew_check_interval } }
  if not p.ocsp or p.ocsp.enabled ~= false then out[#out + 1] = { "ocsp", p.ocsp_check_interval } end
  out[#out + 1] = { "clean", p.clean_interval }
  return out
end

--- Where the health file is: policy.health_file, else <root>/health/<host>.json.
function M:health_file()
  if self.policy.health_file then return self.policy.health_file end
  local ok, root = pcall(function() return self.storage.root end) -- a strict backend may raise
  if not ok then root = nil end
  if type(root) ~= "string" then root = self.opts.data_dir or "certmaint-data" end
  return root .. "/health/" .. core.hostname() .. ".json"
end

local function intervals(self) return self.policy.watchdog_intervals or M.DEFAULT_INTERVALS end

--- Start watching (engine:run): the passes' records, the watchdog task.
function M:watchdog_start()
  local now_el = core.elapsed()
  self.passes = {}
  for _, w in ipairs(self:watched_passes()) do
    self.passes[w[1]] = { since = now_el, completed = 0, stalled = false }
  end
  self.daemon_started = core.now()
  self.sd_watchdog = core.sd_watchdog()
  self.watchdog_wake = loop.cond()
  self.watchdog_task = loop.spawn_named("watchdog", function()
    while not self.stopping do
      self:watchdog_check()
      self.watchdog_wake:wait(self:watchdog_period())
    end
  end)
end

--- Seconds between the watchdog's checks: half of systemd's watchdog
-- interval, half of the shortest pass interval, HEALTH_WRITE_MAX at most.
function M:watchdog_period()
  local period = M.HEALTH_WRITE_MAX
  for _, w in ipairs(self:watched_passes()) do period = math.min(period, w[2] / 2) end
  if self.sd_watchdog then period = math.min(period, self.sd_watchdog / 2) end
  return period
end

function M:pass_started(kind)
  local p = self.passes and self.passes[kind]
  if p then p.running_since = core.elapsed() end
end

function M:pass_completed(kind)
  local p = self.passes and self.passes[kind]
  if not p then return end
  p.running_since = nil
  p.last_elapsed = core.elapsed()
  p.last_completed = core.now()
  p.completed = p.completed + 1
  if p.stalled then
    p.stalled = false
    log("info", "pass_recovered", { pass = kind })
  end
  self.watchdog_wake:notify_all() -- the health file says so now
end

--- The daemon's health now: { healthy =, passes = { {pass =, interval =,
-- completed =, last_completed =, stalled =, late =, running_for =}, ... } }
-- (times Unix seconds), from the passes' records.
function M:daemon_health()
  local n, el = intervals(self), core.elapsed()
  local out = { healthy = true, passes = {}, watchdog_intervals = n }
  for _, w in ipairs(self:watched_passes()) do
    local kind, interval = w[1], w[2]
    local p = self.passes and self.passes[kind]
    if p then
      local late = el - math.max(p.last_elapsed or p.since, p.grace_from or -math.huge)
        - math.max(n * interval, M.MIN_STALL)
      local r = { pass = kind, interval = interval, completed = p.completed, last_completed = p.last_completed,
        stalled = late > 0, late = late > 0 and late or nil,
        running_for = p.running_since and (el - p.running_since) or nil }
      if r.stalled then out.healthy = false end
      out.passes[#out.passes + 1] = r
    end
  end
  return out
end

local function round(x) return x and math.floor(x + 0.5) end

--- One look: log what became stalled, write the health file, tell systemd.
function M:watchdog_check()
  -- the watchdog itself ran late by far: the machine was suspended, or the
  -- process stopped. The passes get their intervals again from now, so a
  -- resume is not a stall (and they are due at once: the tickers run them).
  local el, period = core.elapsed(), self:watchdog_period()
  if self.watchdog_last and el - self.watchdog_last > 2 * period + 1 then
    log("info", "resumed", { after = math.floor(el - self.watchdog_last) })
    for _, p in pairs(self.passes) do p.grace_from = el end
  end
  self.watchdog_last = el
  self:clock_watch() -- a step of the wall clock is noticed (and retries moved) within a period
  local h = self:daemon_health()
  local stalled = {}
  for _, r in ipairs(h.passes) do
    local p = self.passes[r.pass]
    if r.stalled then
      stalled[#stalled + 1] = string.format("%s pass stalled (%ds late)", r.pass, math.ceil(r.late))
      if not p.stalled then
        p.stalled = true
        log("error", "pass_stalled", { pass = r.pass, late = math.ceil(r.late), interval = r.interval,
          intervals = h.watchdog_intervals, running_for = round(r.running_for),
          last_completed = r.last_completed and rfc3339.iso(r.last_completed) or "never" })
      end
    end
  end
  self:write_health(h, "running")
  if h.healthy and self.sd_watchdog then self:sd_notify("WATCHDOG=1") end
  local status = h.healthy and string.format("%d certificates; passes healthy", #self.order)
    or table.concat(stalled, "; ")
  if status ~= self.sd_status then
    self.sd_status = status
    self:sd_notify("STATUS=" .. status)
  end
  return h
end

--- Tell systemd (when it started us): errors are logged once, never raised.
function M:sd_notify(msg)
  local ok, err, code = core.sd_notify(msg)
  if ok == nil and not self.sd_failed then
    self.sd_failed = true
    log("warn", "sd_notify_failed", { error = err, code = code })
  end
  return ok
end

--- Start-up has loaded the certificates: systemd's READY=1.
function M:watchdog_ready()
  self:sd_notify("READY=1\nSTATUS=" .. string.format("%d certificates loaded", #self.order))
end

local function iso_or_nil(t) return t and rfc3339.iso(t) or nil end

--- Write the health file atomically (0644: a monitoring user may read it).
function M:write_health(h, state)
  local now = core.now()
  local passes = {}
  for i, r in ipairs(h.passes) do
    passes[i] = { pass = r.pass, interval = r.interval, completed = r.completed,
      last_completed = iso_or_nil(r.last_completed), stalled = r.stalled, late = r.late and math.ceil(r.late),
      running_for = round(r.running_for) }
  end
  local rec = {
    version = M.HEALTH_VERSION, state = state, healthy = h.healthy, pid = core.getpid(), host = core.hostname(),
    started = rfc3339.iso(self.daemon_started), updated = rfc3339.iso(now), updated_unix = now,
    write_interval = self:watchdog_period(), watchdog_intervals = h.watchdog_intervals, passes = passes,
  }
  local path = self:health_file()
  local dir = path:match("^(.*)/[^/]*$")
  local ok, err, code = true, nil, nil
  if dir and dir ~= "" then ok, err, code = core.mkdir_p(dir) end
  if ok then ok, err, code = core.write_atomic(path, assert(core.json_encode(rec)) .. "\n", "0644") end
  if not ok then
    if not self.health_write_failed then
      log("error", "health_write_failed", { path = path, error = err, code = code })
    end
    self.health_write_failed = true
  else
    self.health_write_failed = nil
  end
  return ok
end

--- A clean stop: the health file says "stopped", systemd hears STOPPING=1.
function M:watchdog_stop()
  if not self.passes then return end
  self:sd_notify("STOPPING=1")
  self:write_health(self:daemon_health(), "stopped")
end

-- status --check's side -------------------------------------------------------

--- Read the health file a daemon wrote -> record | nil (no file) | false, why.
function M:read_health()
  local path = self:health_file()
  local text, err, code = core.read_file(path, 1024 * 1024)
  if not text then
    if code == "ENOENT" then return nil end
    return false, "daemon health file " .. path .. " cannot be read: " .. tostring(err)
  end
  local rec = core.json_decode(text, 1024 * 1024)
  if type(rec) ~= "table" or type(rec.updated_unix) ~= "number" or type(rec.state) ~= "string"
    or type(rec.passes) ~= "table" then
    return false, "daemon health file " .. path .. " is not a health record"
  end
  return rec
end

--- What is wrong with the daemon at `now`, from its health file: a list of
-- short texts (empty: healthy), and the record (nil when there is no file: no
-- daemon ever ran here, which is not checked — a cron setup runs `once`).
function M:daemon_problems(now)
  local rec, why = self:read_health()
  if rec == nil then return {}, nil end
  if rec == false then return { why }, nil end
  local out = {}
  local updated = rfc3339.iso(rec.updated_unix)
  if rec.state == "stopped" then
    out[#out + 1] = "daemon stopped at " .. updated
    return out, rec
  end
  if rec.host == core.hostname() and math.type(rec.pid) == "integer" and rec.pid ~= core.getpid()
    and not core.pid_alive(rec.pid) then
    out[#out + 1] = string.format("daemon (pid %d) is not running, last seen %s", rec.pid, updated)
    return out, rec
  end
  local every = tonumber(rec.write_interval) or M.HEALTH_WRITE_MAX
  if now - rec.updated_unix > 3 * every + 10 then
    out[#out + 1] = string.format("daemon health not updated since %s (the daemon hangs or is gone)", updated)
  end
  for _, p in ipairs(rec.passes) do
    if type(p) == "table" and p.stalled then
      out[#out + 1] = string.format("%s pass stalled: last completed %s, %ss late", tostring(p.pass),
        tostring(p.last_completed or "never"), tostring(p.late))
    end
  end
  return out, rec
end

return M
