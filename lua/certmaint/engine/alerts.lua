--- Notifications: the policy's on_failure, on_expiring and on_recovered
-- hooks, told once per problem (README "Notifications").
--
-- A problem is (certificate, kind): kind "renew" (a renewal or first obtain
-- failed), "deploy" (on_renewed failed) or "expiring" (a managed certificate
-- is within notify.expiring_before / notify.expiring_ratio of its expiry and
-- not renewed yet). certmaint.alert_state decides when to tell; this file
-- keeps the records, one JSON per certificate in storage at
-- keys.alert(primary) = "certmaint/alerts/<name>.json", written (atomically,
-- storage:store) *before* the hook is called, so a daemon that crashes and
-- restarts does not page again, and still tells the recovery. The records
-- exist only while a problem is open, so the start-up listing is small.
--
-- Hooks never run inside a renewal job or a pass: each notice is queued and
-- run by up to notify.concurrency worker tasks under the hook runner (its
-- time and memory limits; a raise is logged as hook_failed and survived). A
-- webhook that hangs holds one worker, never the loop or a pass.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local keys = require "certmaint.keys"
local rfc3339 = require "certmaint.rfc3339"
local alert_state = require "certmaint.alert_state"

local M = {}

local QUEUE_MAX = 10000 -- notices waiting for a worker; past it new ones are dropped (logged)
local LOAD_BATCH = 2048

local function log(level, event, fields) core.log(level, event, fields or {}) end

local HOOK_OF = { failure = "on_failure", expiring = "on_expiring", recovered = "on_recovered" }

--- Does the policy want notices at all? (Nothing is kept or stored otherwise.)
function M:alerting()
  local P = self.policy
  return (P.on_failure or P.on_expiring or P.on_recovered) and true or false
end

local function notify_opts(self)
  return self.policy.notify or {}
end

-- The open records, by primary: read from storage once (the first time a
-- problem or a success needs them), then kept in memory. Tasks that arrive
-- while the first one reads wait for it.
function M:alert_records()
  if self.alerts_by_name then return self.alerts_by_name end
  if self.alerts_loading then
    while not self.alerts_by_name do self.alerts_loading:wait() end
    return self.alerts_by_name
  end
  self.alerts_loading = loop.cond()
  local by_name = {}
  local ok, err = pcall(function()
    local listed, lerr, lcode = self.storage:list(keys.ALERTS_PREFIX, false)
    if not listed and lcode == "ENOENT" then listed = {} end -- nothing was ever recorded
    if not listed then error(lerr or "cannot list", 0) end
    for first = 1, #listed, LOAD_BATCH do
      local batch = table.move(listed, first, math.min(first + LOAD_BATCH - 1, #listed), 1, {})
      for key, raw in pairs(self.storage:load_many(batch) or {}) do
        local rec = core.json_decode(raw)
        if type(rec) == "table" and type(rec.name) == "string" and type(rec.kinds) == "table" then
          by_name[rec.name] = rec
        else
          log("warn", "alert_record_unreadable", { key = key, action = "ignored; rewritten at the next notice" })
        end
      end
    end
  end)
  if not ok then
    log("error", "alert_records_failed", { error = tostring(err),
      action = "open problems from before the restart may be told again" })
  end
  self.alerts_by_name = by_name
  self.alerts_loading:notify_all()
  self.alerts_loading = nil
  return by_name
end

-- Write (or delete, when no problem is open) primary's record.
function M:save_alert_record(primary, rec)
  local key = keys.alert(primary)
  local ok, err, code
  if rec and next(rec.kinds) then
    ok, err, code = self.storage:store(key, core.json_encode(rec))
  else
    ok, err, code = self.storage:delete(key)
    if not ok and code == "ENOENT" then ok = true end
  end
  if not ok then log("error", "alert_record_failed", { name = primary, error = err, code = code }) end
end

-- What a hook gets as `cert`: the cached certificate's facts (no key, no
-- PEM), or for a certificate never obtained just its names.
function M:alert_cert(e)
  local c = e.id and self.cache:get(e.id, { pem = false })
  local view = {}
  if c then for k, v in pairs(c) do view[k] = v end end
  view.names = view.names or e.names
  view.managed = true
  return view
end

-- Queue one notice per hook of the event (a list: each on its own, so a
-- webhook that hangs does not hold back the mail); workers (at most
-- notify.concurrency) run them.
function M:alert_dispatch(event, e, info)
  local fns = self.policy[HOOK_OF[event]]
  if not fns then return end
  if type(fns) ~= "table" or getmetatable(fns) ~= nil then fns = { fns } end -- a policy table built by hand
  info.event = event
  info.name = e.primary
  info.names = e.names
  info.host = core.hostname()
  local q = self.alert_queue
  if not q then
    q = { head = 1, tail = 0 }
    self.alert_queue = q
    self.alert_workers = 0
    self.alert_idle = loop.cond()
  end
  local cert = self:alert_cert(e)
  for i, fn in ipairs(fns) do
    if q.tail - q.head + 1 >= QUEUE_MAX then
      log("error", "notify_dropped", { name = e.primary, event = event, kind = info.kind,
        why = QUEUE_MAX .. " notices are waiting for the hooks" })
      return
    end
    -- each hook its own copies: one hook changing them changes nothing for the next
    local c, inf = {}, {}
    for k, v in pairs(cert) do c[k] = v end
    for k, v in pairs(info) do inf[k] = v end
    q.tail = q.tail + 1
    q[q.tail] = { hook = HOOK_OF[event], index = #fns > 1 and i or nil, fn = fn, cert = c, info = inf }
  end
  local max = notify_opts(self).concurrency or 4
  while self.alert_workers < max and self.alert_workers < q.tail - q.head + 1 do
    self.alert_workers = self.alert_workers + 1
    loop.spawn_named("notify", function() self:alert_worker() end)
  end
end

function M:alert_worker()
  local q = self.alert_queue
  while q.head <= q.tail do
    local n = q[q.head]
    q[q.head] = nil
    q.head = q.head + 1
    local hook = n.index and (n.hook .. "[" .. n.index .. "]") or n.hook
    local ok, res, err = self.hooks:notify(hook, n.fn, n.cert, n.info)
    local fields = { hook = hook, name = n.info.name, kind = n.info.kind, event = n.info.event }
    if ok and (res == false or (res == nil and err ~= nil)) then
      -- a shipped helper (certmaint.notify) that gave up says why; a raise was logged as hook_failed
      fields.error = tostring(err)
      log("error", "notify_failed", fields)
    elseif ok then
      log("info", "notified", fields)
    end
  end
  self.alert_workers = self.alert_workers - 1
  if self.alert_workers == 0 then self.alert_idle:notify_all() end
end

--- Wait (inside a task) until every queued notice was handed to its hook,
-- at most `timeout` seconds (`certmaint once` before it exits). Returns true
-- when none is left.
function M:alerts_drain(timeout)
  if not self.alert_queue then return true end
  local deadline = core.monotonic() + (timeout or 60)
  while self.alert_workers > 0 do
    local left = deadline - core.monotonic()
    if left <= 0 then return false end
    self.alert_idle:wait(left)
  end
  return true
end

--- Are notices still queued or running? (shutdown waits for them.)
function M:alerts_busy()
  return (self.alert_workers or 0) > 0
end

--- A problem of `kind` on e: recorded, and told through on_failure (kind
-- "renew" or "deploy") or on_expiring (kind "expiring") the first time and
-- then once per notify.repeat_interval. extra: the fields of info.
function M:alert_failed(e, kind, message, code, extra)
  if not self:alerting() then return end
  local ok, err = pcall(function()
    local now = core.now()
    local records = self:alert_records()
    local rec = records[e.primary] or { name = e.primary, kinds = {} }
    local r, tell = alert_state.failed(rec.kinds[kind], now, notify_opts(self).repeat_interval, message, code)
    rec.kinds[kind] = r
    records[e.primary] = rec
    if not tell then return end
    self:save_alert_record(e.primary, rec) -- first: a crash after the page must not page again
    local info = { kind = kind, message = message, code = code, at = now, since = r.since, failures = r.failures,
      ["repeat"] = tell == "repeat" }
    for k, v in pairs(extra or {}) do info[k] = v end
    log(tell == "first" and "warn" or "info", "notify_" .. (kind == "expiring" and "expiring" or "failure"),
      { name = e.primary, kind = kind, ["repeat"] = info["repeat"], since = rfc3339.iso(r.since) })
    self:alert_dispatch(kind == "expiring" and "expiring" or "failure", e, info)
  end)
  if not ok then log("error", "alert_failed", { name = e.primary, kind = kind, error = tostring(err) }) end
end

--- The problem of `kind` on e healed: its record goes, and on_recovered is
-- told once when a notice had been sent for it.
function M:alert_healed(e, kind)
  if not self:alerting() then return end
  local ok, err = pcall(function()
    local records = self:alert_records()
    local rec = records[e.primary]
    local r = rec and rec.kinds[kind]
    if not r then return end
    rec.kinds[kind] = nil
    if not next(rec.kinds) then records[e.primary] = nil end
    self:save_alert_record(e.primary, rec)
    if not alert_state.healed(r) then return end
    local now = core.now()
    log("info", "notify_recovered", { name = e.primary, kind = kind, since = rfc3339.iso(r.since) })
    self:alert_dispatch("recovered", e, { kind = kind, at = now, since = r.since, failures = r.failures,
      message = r.message, code = r.code })
  end)
  if not ok then log("error", "alert_failed", { name = e.primary, kind = kind, error = tostring(err) }) end
end

local FORGET_AFTER = 30 * 86400 -- a record of a name no longer managed goes after this

-- Was rec (of a name no longer managed) last told more than FORGET_AFTER ago?
local function stale(rec, now)
  for _, r in pairs(rec.kinds) do
    if (r.notified_at or r.since or 0) > now - FORGET_AFTER then return false end
  end
  return true
end

--- The renew pass's part: managed certificates within their expiring
-- threshold get on_expiring (de-duplicated like failures); an open
-- "expiring" problem whose certificate is no longer expiring (renewed here,
-- or reloaded from another instance's renewal) heals; the records of
-- certificates no longer managed go.
function M:alert_expiring_scan(now)
  if not self:alerting() then return end
  local o = notify_opts(self)
  local before = o.expiring_before or alert_state.DEFAULT_EXPIRING_BEFORE
  local expiring = {}
  -- the C scan finds every certificate whose not_after is within `before`; the ratio narrows it
  for _, id in ipairs(self.cache:expired(now + before, 0)) do
    local e = self.by_id[id]
    local cert = e and self.cache:get(id, { pem = false })
    if cert and cert.managed then
      local yes, left, threshold = alert_state.is_expiring(cert, now, before, o.expiring_ratio)
      if yes then
        expiring[e.primary] = true
        self:alert_failed(e, "expiring", string.format("%s expires %s (in %s)", e.primary,
          rfc3339.iso(cert.not_after), left > 0 and (math.floor(left) .. " s") or "the past"), "expiring",
          { not_after = cert.not_after, serial = cert.serial, seconds_left = math.floor(left),
            threshold = math.floor(threshold), expired = left <= 0 })
      end
    end
  end
  local healed, gone = {}, {}
  for primary, rec in pairs(self:alert_records()) do
    if not self.entries[primary] then
      if stale(rec, now) then gone[#gone + 1] = primary end
    elseif rec.kinds.expiring and not expiring[primary] then
      healed[#healed + 1] = primary
    end
  end
  for _, primary in ipairs(healed) do self:alert_healed(self.entries[primary], "expiring") end
  -- no longer managed (removed from the policy, unmanaged at run time) and not
  -- told for FORGET_AFTER: forgotten, no recovery told. Not at once: names a
  -- policy's on_tick manages at run time come back only after the first pass
  for _, primary in ipairs(gone) do
    self.alerts_by_name[primary] = nil
    self:save_alert_record(primary, nil)
  end
end

return M
