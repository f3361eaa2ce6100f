--- The engine: certmagic's maintenance routine, with the policy deciding.
--
-- One engine owns a cache (C), a job queue, the storage backend and the issuer
-- of one policy. Passes run inside loop tasks; renewals are named jobs
-- ("renew:<name>") so one name is never renewed twice at once, and they run
-- outside any cache lock (the C scan copies ids and returns).
--
--   local e = engine.new(policy, { data_dir = "certmaint-data" })
--   e:start()                -- load what storage has, obtain what is missing
--   e:tick("renew")          -- one pass (inside a loop task)
--   e:run()                  -- timers + signals until SIGTERM
--
-- This file is the wiring: entries, policy (re)loading, ticks, run, signals.
-- Each concern has its own file, whose methods are mixed into Engine:
--   engine/load.lua    start-up: read storage into the cache, obtain what is missing
--   engine/renew.lua   the renew pass, renewal jobs, obtaining a certificate
--   engine/retry.lua   retry state of failing renewals (the cache holds the schedule)
--   engine/clean.lua   the clean pass
--   engine/ocsp.lua    the OCSP pass (staples: storage, responder, verify, attach)
--   engine/revocation.lua  a revoked certificate: on_revoked, replacement, compromised keys
--   engine/status.lua  status rows and `check`'s plan
--   engine/deploy.lua  deploy as tracked state: records, retries, start-up redeploy
--   engine/attention.lua  what needs attention (status --check)
--   engine/ari.lua     ACME Renewal Information: windows fetched, stored, applied
--   engine/timewatch.lua  the tickers; wall vs elapsed time, steps of the wall clock
--   engine/watchdog.lua   stalled passes, the health file, systemd notification
--   engine/alerts.lua     notifications: on_failure, on_expiring, on_recovered, de-duplicated
--   engine/metrics.lua    what the metrics record, their endpoint and textfile
-- certmaint.certset reads and writes a certificate set (.crt .key .json).
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local jobs = require "certmaint.jobs"
local hooks = require "certmaint.hooks"
local certset = require "certmaint.certset"
local rfc3339 = require "certmaint.rfc3339"
local issuers = require "certmaint.issuer"

local M = {}
local Engine = {}
Engine.__index = Engine

M.LOCK_HEARTBEAT = 5        -- seconds between lock refreshes (certmagic: 5 s)
M.SHUTDOWN_GRACE = 60       -- seconds in-flight jobs get to finish on SIGTERM
M.CLOSE_GRACE = 10          -- seconds storage:close() gets on shutdown (etcd: revoke leases)
M.iso = rfc3339.iso

local function log(level, event, fields) core.log(level, event, fields or {}) end

for _, part in ipairs { "load", "renew", "retry", "clean", "ocsp", "revocation", "status", "deploy", "attention", "ari",
  "crl", "staple_files", "must_staple", "order_budget", "timewatch", "watchdog", "alerts", "metrics" } do
  for name, fn in pairs(require("certmaint.engine." .. part)) do
    if Engine[name] then error("engine: method " .. name .. " defined twice (engine/" .. part .. ".lua)") end
    Engine[name] = fn
  end
end

--- engine.new(policy, opts): opts.data_dir (default "certmaint-data"),
-- opts.storage / opts.issuer override the policy's (testing), opts.reload
-- (function returning a fresh policy, for SIGHUP), opts.responder (where
-- OCSP responses and CRLs come from: r:ocsp(url, request_der, cert,
-- issuer_pem), r:crl(url); default certmaint.responder over HTTP with the
-- policy's `ocsp` limits; certmaint.testing passes an in-process one).
function M.new(policy, opts)
  opts = opts or {}
  local self = setmetatable({}, Engine)
  self.opts = opts
  self.cache = core.cache_new()
  self.entries = {}         -- primary name -> entry
  self.order = {}           -- primaries in policy order
  self.by_id = {}           -- cache id -> entry
  self.uncached = {}        -- primaries with no certificate yet (an obtain failed)
  self.collectors = {}      -- open pass collectors (see engine/renew.lua)
  self.wake = loop.cond()   -- the renew ticker: a retry time or stopping changed
  self.job_event = loop.cond() -- a renewal job changed state (collectors wait on it)
  self.lock_event = loop.cond() -- a storage lock was taken (the heartbeat waits on it)
  self.locks_held = 0
  self.lock_waiters = 0 -- take_lock calls waiting for a busy lock (they hold nothing yet)
  self.deploy_records = {}  -- primary -> what was deployed where (engine/deploy.lua)
  self.deploy_retry = {}    -- primaries whose deploy waits to retry
  self.deploy_dirty = {}    -- primaries whose deploy record changed since written
  self.ari = {}             -- cache id -> ARI window record, or false (engine/ari.lua)
  self.ari_retry = {}       -- cache id -> next fetch of a window never obtained
  self.ari_unsupported = setmetatable({}, { __mode = "k" }) -- issuers whose CA has no renewalInfo
  self.revoking = {}        -- cache id -> decision, while a revoked certificate is being replaced
  self:apply_policy(policy)
  self.jobs = jobs.new {
    concurrency = policy.concurrency or 8,
    retry = "manual",       -- a failing renewal waits as a number in the cache
    on_state = function(job, state)
      local e = self.entries[job:match("^renew:(.*)$") or ""]
      if e and (state == "waiting" or state == "failed") then self:save_state(e) end
      local deploying = job:match("^deploy:(.*)$")
      if deploying then self:deploy_state(deploying, state) end
      self.job_event:notify_all()
    end,
  }
  return self
end

-- An entry's optional settings from its policy entry: only what differs
-- from the policy's default is kept on the entry (100k entries).
local function entry_settings(e, c)
  e.reuse_key = c.reuse_key -- nil: the policy's reuse_key
  e.profile = c.profile     -- nil: the policy's profile
end

--- Install a (new) policy: settings, storage, issuer, hook runner, entries.
function Engine:apply_policy(policy)
  self.policy = policy
  self.hooks = hooks.new(policy)
  -- the default responder takes the policy's limits, so a reload changes them
  self.responder = self.opts.responder or require("certmaint.responder").new(policy)
  self.renewal_opts = require("certmaint.policy").renewal_opts(policy)
  if not self.storage or policy.storage then
    self.storage = self.opts.storage or policy.storage
      or require("certmaint.storage.file").new { root = self.opts.data_dir or "certmaint-data" }
  end
  if not self.issuer or policy.issuer then
    local given = self.opts.issuer or policy.issuer or require("certmaint.issuer.internal").new {}
    if issuers.is_list(given) then
      local ok, err = issuers.check_list(given) -- policy issuers were checked already; opts.issuer not
      if not ok then error("engine: issuer" .. err, 3) end
      given = issuers.list(given)
    else
      local ok, err = issuers.check(given)
      if not ok then error("engine: " .. err, 3) end
    end
    self.issuer = given
  end
  self:set_issuers()
  local entries, reloading = self.entries, #self.order > 0
  local wanted = reloading and {} or nil -- to drop what a new policy no longer names
  for _, c in ipairs(policy.certificates) do
    local primary = c.names[1]
    if wanted then wanted[primary] = true end
    local e = entries[primary]
    if not e then
      e = self:add_entry(c.names, c.key_type, c.on_demand, "policy")
    else
      if not certset.same_names(e.names, c.names) then
        e.names = c.names
        e.names_changed = true
      end
      e.key_type = c.key_type or e.key_type
    end
    if c.reuse_key ~= nil or c.profile ~= nil or e.reuse_key ~= nil or e.profile ~= nil then entry_settings(e, c) end
  end
  if not wanted then return end
  for _, primary in ipairs(self.order) do
    local e = entries[primary]
    if e and e.source == "policy" and not wanted[primary] then self:drop_entry(primary, "removed from policy") end
  end
end

--- The issuers to try (self.issuers, in list order) and the storage folders
-- a certificate may be found in (self.issuer_keys: each member's, in order,
-- once). New certificates go to the folder of the member that issued them;
-- self.issuer_key (the first member's) is the folder of an entry whose
-- e.issuer_key is nil, so one issuer costs nothing per entry.
function Engine:set_issuers()
  self.issuers = issuers.members(self.issuer)
  self.issuer_policy = self.policy.issuer_policy or self.issuer.policy or "in_order"
  local folders, seen = {}, {}
  for _, m in ipairs(self.issuers) do
    local k = issuers.storage_key(m)
    if not seen[k] then
      seen[k] = true
      folders[#folders + 1] = k
    end
  end
  self.issuer_key = folders[1]
  self.issuer_keys = folders
end

--- The member of the issuer list whose folder is `folder` (the one that
-- issued a certificate kept there), or nil when none is configured now.
function Engine:issuer_for(folder)
  for _, m in ipairs(self.issuers) do
    if issuers.storage_key(m) == folder then return m end
  end
  return nil
end

--- Note that e's certificate is kept under `folder` (nil: the default one).
function Engine:set_folder(e, folder)
  if folder == self.issuer_key then folder = nil end
  e.issuer_key = folder
end

-- A new entry (source "policy" or "runtime"); key_type nil: the policy's.
function Engine:add_entry(names, key_type, on_demand, source)
  local primary = names[1]
  local e = {
    names = names, primary = primary, key_type = key_type or self.policy.key_type or "p256",
    on_demand = on_demand and true or false, source = source,
  }
  self.entries[primary] = e
  self.order[#self.order + 1] = primary
  return e
end

function Engine:drop_entry(primary, why)
  local e = self.entries[primary]
  if not e then return false end
  self.entries[primary] = nil
  for i, p in ipairs(self.order) do
    if p == primary then table.remove(self.order, i) break end
  end
  if e.id then
    self.cache:remove(e.id)
    self.by_id[e.id] = nil
    self.ari[e.id], self.ari_retry[e.id] = nil, nil
  end
  log("info", "unmanaged", { name = primary, reason = why })
  return true
end

--- Storage keys of a site's set (certmaint.certset.paths): computed when
-- needed, not kept per entry (100k entries would carry 0.7 KiB each).
function Engine:paths(primary, folder)
  if not folder then
    local e = self.entries[primary]
    folder = e and e.issuer_key or self.issuer_key
  end
  return certset.paths(folder, primary)
end

--- Names managed at run time (a SaaS policy's on_tick adds its customers).
-- Such entries are on-demand in certmagic's sense. Returns true or nil, err.
function Engine:manage(names, o)
  o = o or {}
  if type(names) == "string" then names = { names } end
  local norm = {}
  for i, n in ipairs(names) do
    local v, err = core.name_normalize(n)
    if not v then return nil, "name " .. i .. ": " .. err, "invalid" end
    norm[#norm + 1] = v
  end
  if #norm == 0 then return nil, "no names", "invalid" end
  if self.entries[norm[1]] then return true end
  if self.policy.allow_name then
    for _, n in ipairs(norm) do
      local ok, allowed = self.hooks:decide("allow_name", self.policy.allow_name, n)
      if not ok or not allowed then
        log("warn", "name_refused", { name = n })
        return nil, "policy refused to manage " .. n, "refused"
      end
    end
  end
  local e = self:add_entry(norm, o.key_type, true, "runtime")
  log("info", "managed", { name = e.primary, names = table.concat(norm, ","), source = "runtime" })
  local state, pem, _, folder = self:read_stored(e)
  if state == "ok" then
    self:set_folder(e, folder)
    self:cache_put(e, pem)
  else
    self:submit(e, "obtain")
  end
  return true
end

function Engine:unmanage(name)
  local e = self.entries[name]
  if not e then return false end
  if e.source ~= "runtime" then return nil, name .. " is named by the policy file", "invalid" end
  self.jobs:cancel("renew:" .. name)
  return self:drop_entry(name, "unmanaged at run time")
end

function Engine:managed_names()
  local out = {}
  for _, p in ipairs(self.order) do out[#out + 1] = p end
  return out
end

--- One pass of a kind, then on_tick. Runs inside a loop task.
function Engine:tick(kind, opts)
  local tick
  local started = core.monotonic()
  if kind == "renew" then tick = self:renew_pass()
  elseif kind == "clean" then tick = self:clean_pass(opts)
  elseif kind == "ocsp" then tick = self:ocsp_pass()
  else error("unknown tick kind " .. tostring(kind), 2) end
  tick.lua_kib = math.floor(collectgarbage("count")) -- the Lua heap, so a leak shows in the log
  tick.cached = self.cache:count()
  self:metrics_note_pass(kind, core.monotonic() - started, tick)
  -- the log line's times are RFC 3339 like every other; the hook keeps the number
  local line = {}
  for k, v in pairs(tick) do line[k] = v end
  if type(tick.at) == "number" then line.at = rfc3339.iso(tick.at) end
  -- the pass's summary line: its counts, failures and how long it took
  line.seconds = math.floor((core.monotonic() - started) * 1000 + 0.5) / 1000
  log("info", "tick", line)
  if self.policy.on_tick and not self.stopping then
    tick.manage = function(names, o) return self:manage(names, o) end
    tick.unmanage = function(name) return self:unmanage(name) end
    tick.managed = function() return self:managed_names() end
    self.hooks:notify("on_tick", self.policy.on_tick, tick)
    tick.manage, tick.unmanage, tick.managed = nil, nil, nil
  end
  self:metrics_write_textfile()
  return tick
end

--- Take a storage lock for this engine's work; the heartbeat keeps it fresh
-- until release_lock. A lock another instance holds is waited for at most
-- the policy's lock_wait (default 5 min): `lock_waiting` is logged once, with
-- the holder, and giving up is `lock_wait_timeout` (an error: the job retries
-- on its back-off). Returns the lock | nil, err, code.
function Engine:take_lock(name)
  self:ensure_heartbeat()
  local ok, lock, err, code = pcall(self.storage.try_lock, self.storage, name)
  if not ok then error(lock, 0) end
  if lock == nil then return nil, err, code end
  if not lock then
    local holder = err
    local wait = self.policy.lock_wait or 300
    log("info", "lock_waiting", { lock = name, holder = holder, max_wait = wait })
    local started = core.now()
    self.lock_waiters = self.lock_waiters + 1
    ok, lock, err, code = pcall(self.storage.lock, self.storage, name, { timeout = wait })
    self.lock_waiters = self.lock_waiters - 1
    self:metrics_note_lock_wait((ok and lock) and "acquired" or (ok and code == "timeout") and "timeout" or "error",
      core.now() - started)
    if not ok then error(lock, 0) end
    if not lock then
      if code == "timeout" then
        log("error", "lock_wait_timeout", { lock = name, waited = core.now() - started, error = err })
        return nil, { message = tostring(err) }, "lock_wait_timeout"
      end
      return nil, err, code
    end
    log("info", "lock_acquired", { lock = name, waited = core.now() - started, token = lock.token })
  end
  self.locks_held = self.locks_held + 1
  self.lock_event:notify_all()
  return lock
end

--- Take a lock for work that another instance may as well do (ARI, staple
-- and CRL fetches, the clean pass): one attempt. Returns the lock | false,
-- holder (busy: logged at debug level as `<what>_skipped`) | nil, err, code.
function Engine:try_take_lock(name, what, opts)
  local ok, lock, err, code = pcall(self.storage.try_lock, self.storage, name, opts)
  if not ok then error(lock, 0) end
  if lock == nil then
    log("warn", "lock_failed", { lock = name, error = err, code = code })
    return nil, err, code
  end
  if not lock then
    log("debug", what .. "_skipped", { lock = name, holder = err, why = "another instance is at it" })
    return false, err
  end
  self:ensure_heartbeat()
  self.locks_held = self.locks_held + 1
  self.lock_event:notify_all()
  return lock
end

--- A fenced commit was refused: another instance holds the lock now (this
-- one paused or lost it past the stale time). Logged at error level.
function Engine:log_fenced(lock, err, fields)
  local f = { lock = lock and lock.name, token = lock and lock.token, error = type(err) == "table" and err.message or err }
  for k, v in pairs(fields or {}) do f[k] = v end
  log("error", "commit_fenced", f)
end

function Engine:release_lock(lock)
  self.locks_held = self.locks_held - 1
  return self.storage:unlock(lock)
end

--- Keep this instance's storage locks fresh (every storage.heartbeat_interval
-- seconds: shorter than 5 s when its locks go stale sooner; else LOCK_HEARTBEAT)
-- while it holds any, so no other instance takes them for stale. With none
-- held it waits on lock_event: an idle daemon does not wake for it.
function Engine:ensure_heartbeat()
  if self.heartbeat or not self.storage.refresh_locks then return end
  self.heartbeat = loop.spawn_named("lock_heartbeat", function()
    while not self.stopping do
      if self.locks_held == 0 then
        self.lock_event:wait()
      else
        loop.sleep(self.storage.heartbeat_interval or M.LOCK_HEARTBEAT)
        local ok, err = pcall(self.storage.refresh_locks, self.storage)
        if not ok then log("error", "lock_heartbeat_failed", { error = err }) end
      end
    end
  end)
end

--- Run forever: tickers, lock heartbeat, signals. Returns when stopped.
function Engine:run()
  local run_started = core.monotonic()
  core.signal_watch { "TERM", "INT", "HUP" }
  loop.on_signal(function(sig)
    if sig == "HUP" then
      self:reload()
    else
      log("info", "stopping", { signal = sig })
      core.watch_stopping() -- policy code still running gets STOP_GRACE (core/lua/lwatch.c)
      self.stopping = true
      self.wake:notify_all()
      self.lock_event:notify_all()
    end
  end)
  self:watchdog_start()
  self.metrics_active = true
  self:metrics_serve()
  loop.spawn_named("start", function()
    local ok, tick = pcall(self.start, self)
    if not ok then log("error", "start_failed", { error = tick }) end
    self:metrics_write_textfile() -- what start-up loaded, before the first pass
    self:watchdog_ready()
    -- loaded, obtained, staples attached, first OCSP pass done: only timers from here
    log("info", "ready", { certificates = #self.order,
      seconds = math.floor((core.monotonic() - run_started) * 1000 + 0.5) / 1000 })
  end)
  -- tickers (engine/timewatch.lua): intervals on elapsed time, decisions on wall time
  self:start_ticker("renew", "renew_check_interval")
  self:start_ticker("ocsp", "ocsp_check_interval")
  self:start_ticker("clean", "clean_interval")
  log("info", "running", { certificates = #self.order, storage = self.storage.describe and self.storage:describe() or "?",
    issuer = issuers.describe(self.issuer) })
  loop.run_until(function() return self.stopping end)
  self:shutdown()
end

--- Give the storage its close() (optional in the contract) once the jobs
-- are done: etcd revokes this instance's leases, so its locks go now rather
-- than lock_ttl later and a peer takes over the names at once. Bounded by
-- CLOSE_GRACE; a failure is logged, never raised (the locks still expire).
function Engine:close_storage()
  local storage = self.storage
  if type(storage) ~= "table" or type(storage.close) ~= "function" then return end
  local task = loop.spawn_named("storage:close", function() return storage:close() end)
  loop.run_until(function() return task.done end, { timeout = M.CLOSE_GRACE })
  local err
  if not task.done then
    err = "did not finish in " .. M.CLOSE_GRACE .. " s"
  elseif not task.ok then
    err = tostring(task.error)
  elseif not task.results[1] then
    err = tostring(task.results[2])
  end
  if err then log("warn", "storage_close_failed", { storage = storage.describe and storage:describe() or "?", error = err }) end
end

--- Stop cleanly: no new jobs, in-flight jobs get SHUTDOWN_GRACE to finish
-- (their writes and unlocks complete), then the loop is cleared. A job still
-- waiting for a busy storage lock holds nothing and has written nothing, so
-- it is not waited for (another instance's lock could keep it waiting for
-- as long as that instance runs).
function Engine:shutdown()
  self.stopping = true
  self.wake:notify_all()
  loop.run_until(function()
    local running = 0
    for _, j in ipairs(self.jobs:list()) do
      if j.state == "running" then running = running + 1 end
    end
    return running <= self.lock_waiters and not self:alerts_busy() -- notices being told get the grace too
  end, { timeout = M.SHUTDOWN_GRACE })
  self:metrics_close()
  self:close_storage()
  self:watchdog_stop()
  log("info", "stopped", {})
  core.watch_stopping(false)
  loop.reset()
  core.signal_unwatch()
end

--- SIGHUP: re-read the policy; a policy that fails to load leaves the old one.
function Engine:reload()
  if not self.opts.reload then return end
  log("info", "policy_reloading", {})
  local policy, err = self.opts.reload()
  if not policy then
    log("error", "policy_reload_failed", { error = err })
    return false
  end
  self:apply_policy(policy)
  if self.metrics_active then self:metrics_serve() end
  log("info", "policy_reloaded", { certificates = #self.order })
  loop.spawn_named("start", function() self:start() end)
  return true
end

return M
