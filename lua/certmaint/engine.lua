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
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local jobs = require "certmaint.jobs"
local keys = require "certmaint.keys"
local renewal = require "certmaint.renewal"
local hooks = require "certmaint.hooks"

local M = {}
local Engine = {}
Engine.__index = Engine

M.LOCK_HEARTBEAT = 5        -- seconds between lock refreshes (certmagic: 5 s)
M.SHUTDOWN_GRACE = 60       -- seconds in-flight jobs get to finish on SIGTERM

local function log(level, event, fields) core.log(level, event, fields or {}) end

local function iso(t)
  if not t then return nil end
  return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t))
end
M.iso = iso

local function same_names(a, b)
  if #a ~= #b then return false end
  local set = {}
  for _, n in ipairs(a) do set[n] = true end
  for _, n in ipairs(b) do if not set[n] then return false end end
  return true
end

local function message_of(err)
  if type(err) == "table" then return tostring(err.message or err[1] or "error") end
  return tostring(err)
end

--- Yield the current task until pred() holds (other tasks run meanwhile).
local function wait_until(pred)
  while not pred() do
    if core.clock_is_fake() then loop.yield() else loop.sleep(0.02) end
  end
end

--- engine.new(policy, opts): opts.data_dir (default "certmaint-data"),
-- opts.storage / opts.issuer override the policy's (testing), opts.reload
-- (function returning a fresh policy, for SIGHUP).
function M.new(policy, opts)
  opts = opts or {}
  local self = setmetatable({}, Engine)
  self.opts = opts
  self.cache = core.cache_new()
  self.entries = {}         -- primary name -> entry
  self.order = {}           -- primaries in policy order
  self.by_id = {}           -- cache id -> entry
  self.collectors = {}      -- open pass collectors (see collect)
  self:apply_policy(policy)
  self.jobs = jobs.new {
    concurrency = policy.concurrency or 8,
    on_state = function(job, state)
      local e = self.entries[job:match("^renew:(.*)$") or ""]
      if e and (state == "waiting" or state == "failed") then self:save_state(e) end
    end,
  }
  return self
end

--- Install a (new) policy: settings, storage, issuer, hook runner, entries.
function Engine:apply_policy(policy)
  self.policy = policy
  self.hooks = hooks.new(policy)
  self.renewal_opts = require("certmaint.policy").renewal_opts(policy)
  if not self.storage or policy.storage then
    self.storage = self.opts.storage or policy.storage
      or require("certmaint.storage.file").new { root = self.opts.data_dir or "certmaint-data" }
  end
  if not self.issuer or policy.issuer then
    self.issuer = self.opts.issuer or policy.issuer or require("certmaint.issuer.internal").new {}
  end
  self.issuer_key = self.issuer:storage_key()
  local wanted = {}
  for _, c in ipairs(policy.certificates) do
    wanted[c.names[1]] = true
    local e = self.entries[c.names[1]]
    if not e then
      self:add_entry(c.names, { key_type = c.key_type, on_demand = c.on_demand, source = "policy" })
    elseif not same_names(e.names, c.names) then
      e.names, e.key_type = c.names, c.key_type or e.key_type
      e.names_changed = true
    end
  end
  for _, primary in ipairs(self.order) do
    local e = self.entries[primary]
    if e and e.source == "policy" and not wanted[primary] then self:drop_entry(primary, "removed from policy") end
  end
end

function Engine:add_entry(names, o)
  local e = {
    names = names, primary = names[1], key_type = o.key_type or self.policy.key_type or "p256",
    on_demand = o.on_demand and true or false, source = o.source or "policy",
  }
  self.entries[e.primary] = e
  self.order[#self.order + 1] = e.primary
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
  end
  log("info", "unmanaged", { name = primary, reason = why })
  return true
end

-- Storage keys of an entry's three files.
function Engine:paths(primary, issuer_key)
  issuer_key = issuer_key or self.issuer_key
  local staged = keys.staging_files(issuer_key, primary)
  return {
    crt = keys.cert(issuer_key, primary), key = keys.private_key(issuer_key, primary),
    meta = keys.meta(issuer_key, primary), site = keys.site(issuer_key, primary),
    staging = staged.site, staged_crt = staged.cert, staged_key = staged.private_key,
    staged_meta = staged.meta,
  }
end

--- The time at which the policy says `cert` needs renewing (for scans and status).
-- With the default decision this is renewal.renew_at; with a needs_renewal
-- hook it is found by bisection over the certificate's life (the hook is
-- assumed monotonic in time, which any sane policy is).
function Engine:renewal_time(cert)
  local hook = self.policy.needs_renewal
  if not hook then
    return renewal.renew_at(cert, self.renewal_opts)
  end
  local lo, hi = cert.not_before, cert.not_after
  local ok, due = self.hooks:decide("needs_renewal", hook, cert, hi)
  if not ok then return nil end
  if not due then return math.huge end
  ok, due = self.hooks:decide("needs_renewal", hook, cert, lo)
  if ok and due then return lo end
  for _ = 1, 40 do
    if hi - lo < 1 then break end
    local mid = (lo + hi) / 2
    ok, due = self.hooks:decide("needs_renewal", hook, cert, mid)
    if not ok then return nil end
    if due then hi = mid else lo = mid end
  end
  return math.ceil(hi)
end

--- Does the policy say `cert` needs renewing at `now`? Returns bool, reason.
function Engine:needs_renewal(cert, now)
  local hook = self.policy.needs_renewal
  if hook then
    local ok, due = self.hooks:decide("needs_renewal", hook, cert, now)
    if not ok then return false, "hook failed" end
    return due and true or false, "policy"
  end
  return renewal.needs_renewal(cert, now, self.renewal_opts)
end

--- Put a certificate PEM into the cache for entry e, replacing e's old one.
function Engine:cache_put(e, pem)
  local id, existed_or_err, code = self.cache:add(pem, { managed = true, on_demand = e.on_demand })
  if not id then return nil, existed_or_err, code end
  local cert = self.cache:get(id)
  local at = self:renewal_time(cert)
  self.cache:set(id, { renew_at = at or 0, next_attempt = 0, attempts = 0, last_error = false })
  if e.id and e.id ~= id then
    self.cache:remove(e.id)
    self.by_id[e.id] = nil
  end
  e.id = id
  self.by_id[id] = e
  return self.cache:get(id)
end

--- Read e's certificate from storage. Returns
--   "ok", pem, facts | "missing" | "names_changed", pem, facts | nil, err, code
function Engine:read_stored(e)
  local p = self:paths(e.primary)
  local crt, err, code = self.storage:load(p.crt)
  if not crt then
    if code == "ENOENT" then return "missing" end
    return nil, err, code
  end
  local facts
  facts, err, code = core.cert_parse(crt)
  if not facts then return nil, p.crt .. ": " .. err, code end
  -- A promotion writes key, cert, meta, then deletes the staged copy, so a
  -- staged cert still present means it may have been cut short: only then is
  -- the pair checked (parsing a key costs ~0.5 ms; 100k start-ups must not pay it).
  local matches = true
  if self.storage:exists(p.staged_crt) or not self.storage:exists(p.key) then
    local key = self.storage:load(p.key)
    matches = key and core.key_matches(crt, key)
  end
  if not matches then
    -- a crash mid-promotion: finish it from staging, never delete anything
    local repaired = self:repair_from_staging(e)
    if not repaired then return nil, p.crt .. ": private key missing or does not match the certificate", "mismatch" end
    return self:read_stored(e)
  end
  if not same_names(facts.names, e.names) then return "names_changed", crt, facts end
  return "ok", crt, facts
end

--- Finish an interrupted promotion from the staging copy, if it is whole.
function Engine:repair_from_staging(e)
  local p = self:paths(e.primary)
  local s_crt = self.storage:load(p.staged_crt)
  local s_key = self.storage:load(p.staged_key)
  local s_meta = self.storage:load(p.staged_meta)
  if not (s_crt and s_key and s_meta) or not core.key_matches(s_crt, s_key) then return false end
  local ok, err = self:promote(p, s_crt, s_key, s_meta)
  if not ok then
    log("error", "repair_failed", { name = e.primary, error = err })
    return false
  end
  log("warn", "repaired_from_staging", { name = e.primary })
  return true
end

-- Write key, cert, meta into place (key first: a crash then leaves a
-- mismatch that start-up repairs from staging), then drop staging.
function Engine:promote(p, crt, key, meta)
  local ok, err, code = self.storage:store(p.key, key)
  if not ok then return nil, err, code end
  ok, err, code = self.storage:store(p.crt, crt)
  if not ok then return nil, err, code end
  ok, err, code = self.storage:store(p.meta, meta)
  if not ok then return nil, err, code end
  for _, k in ipairs { p.staged_crt, p.staged_key, p.staged_meta } do self.storage:delete(k) end
  self.storage:delete(p.staging)
  return true
end

--- Obtain a fresh certificate for e and store it (caller holds the lock).
function Engine:obtain(e)
  local now = core.now()
  local key, err, code = core.key_generate(e.key_type)
  if not key then return nil, err, code end
  local csr
  csr, err, code = core.csr_create(key, e.names)
  if not csr then return nil, err, code end
  local res
  res, err, code = self.issuer:issue({ names = e.names, csr_pem = csr, key_type = e.key_type },
    { storage = self.storage, now = now })
  if not res then return nil, err, code end
  local facts
  facts, err, code = core.cert_parse(res.chain_pem)
  if not facts then return nil, { message = "issuer returned an unusable certificate: " .. err }, code end
  if not core.key_matches(res.chain_pem, key) then
    return nil, { message = "issuer returned a certificate for another key" }, "mismatch"
  end
  local meta = core.json_encode({
    sans = e.names,
    issuer_data = { issuer = self.issuer:describe(), serial = facts.serial },
  }, { pretty = true })
  local p = self:paths(e.primary)
  -- the whole new set goes to staging first, so a crash never leaves a half set
  local ok
  ok, err, code = self.storage:store(p.staged_key, key)
  if ok then ok, err, code = self.storage:store(p.staged_crt, res.chain_pem) end
  if ok then ok, err, code = self.storage:store(p.staged_meta, meta) end
  if not ok then return nil, err, code end
  ok, err, code = self:promote(p, res.chain_pem, key, meta)
  if not ok then return nil, err, code end
  return res.chain_pem, facts
end

--- Keep this instance's storage locks fresh (every LOCK_HEARTBEAT seconds)
-- while it runs, so no other instance takes them for stale. Started by the
-- first lock, in the daemon and in one-shot commands alike.
function Engine:ensure_heartbeat()
  if self.heartbeat or not self.storage.refresh_locks then return end
  self.heartbeat = loop.spawn_named("lock_heartbeat", function()
    while not self.stopping do
      loop.sleep(M.LOCK_HEARTBEAT)
      local ok, err = pcall(self.storage.refresh_locks, self.storage)
      if not ok then log("error", "lock_heartbeat_failed", { error = err }) end
    end
  end)
end

--- One attempt at renewing (or obtaining) e. Returns "renewed"|"reloaded"|"obtained", cert or nil, err, code.
function Engine:renew_once(e, reason)
  local name = keys.lock_name(e.primary)
  self:ensure_heartbeat()
  local locked, err, code = self.storage:lock(name)
  if not locked then return nil, err, code end
  -- pcall: a raising issuer or storage must not leave the lock held (locks
  -- are not re-entrant: the next attempt would wait for itself)
  local ran, result, cert
  ran, result, cert, code = pcall(function()
    -- another instance may have renewed while we waited for the lock
    local state, pem = self:read_stored(e)
    if state == "ok" then
      local current = e.id and self.cache:get(e.id)
      local stored = core.cert_parse(pem)
      if stored and (not current or stored.hash ~= current.id)
         and not self:needs_renewal(stored, core.now()) then
        local c, lerr, lcode = self:cache_put(e, pem)
        if not c then return nil, lerr, lcode end
        return "reloaded", c
      end
    end
    local chain, ferr, fcode = self:obtain(e)
    if not chain then return nil, ferr, fcode end
    local c, lerr, lcode = self:cache_put(e, chain)
    if not c then
      -- stored fine, but the cache refused it: not retried (certmagic: reload failures are logged)
      log("error", "reload_failed", { name = e.primary, error = lerr })
      return nil, { message = "reload after renewal failed: " .. tostring(lerr), final = true }, lcode
    end
    e.names_changed = nil
    return (reason == "obtain") and "obtained" or "renewed", c
  end)
  self.storage:unlock(name)
  if not ran then return nil, tostring(result), "error" end
  return result, cert, code
end

-- Pass collectors: a pass waits for the first attempt of the jobs it queued
-- so that on_tick can say what it did.
function Engine:collect(kind, name, outcome)
  for _, c in ipairs(self.collectors) do
    if c.waiting[name] then
      c.waiting[name] = nil
      c.outstanding = c.outstanding - 1
      c.tick[outcome] = (c.tick[outcome] or 0) + 1
    end
  end
end

--- Queue a renewal (or obtain) job for e; false if one is already queued.
function Engine:submit(e, reason, collector)
  if self.stopping then return false end
  local job = "renew:" .. e.primary
  local queued = self.jobs:submit(job, function(attempt)
    if self.entries[e.primary] ~= e then return true end -- unmanaged meanwhile
    local ok, res, cert_or_err, code = pcall(self.renew_once, self, e, reason)
    if not ok then res, cert_or_err, code = nil, res, "error" end
    if res then
      local cert = cert_or_err
      self:clear_state(e)
      log("info", res, { name = e.primary, serial = cert.serial, not_after = iso(cert.not_after), attempt = attempt })
      self:collect("renew", job, (res == "reloaded") and "reloaded" or "renewed")
      self:notify_renewed(e, cert, res)
      return true
    end
    local err = cert_or_err
    local msg = message_of(err)
    log("error", "renew_failed", { name = e.primary, error = msg, attempt = attempt, code = code })
    self:collect("renew", job, "failed")
    if self.policy.on_error then
      self.hooks:notify("on_error", self.policy.on_error, { kind = "renew", name = e.primary, message = msg, code = code })
    end
    if e.on_demand then
      -- certmagic: an on-demand certificate whose renewal fails leaves the cache
      self:drop_entry(e.primary, "on-demand renewal failed")
      return nil, { message = msg, final = true }, code
    end
    return nil, err, code
  end)
  if queued and collector then
    collector.waiting[job] = true
    collector.outstanding = collector.outstanding + 1
  end
  return queued
end

--- Call on_renewed(cert) with what deploying needs: cert.pem (chain),
-- cert.key_pem, cert.event ("obtained" | "renewed" | "reloaded": a reload means
-- another instance renewed, and this machine's servers need the new files too).
function Engine:notify_renewed(e, cert, event)
  if not self.policy.on_renewed then return end
  local view = {}
  for k, v in pairs(cert) do view[k] = v end
  view.event = event
  view.key_pem = self.storage:load(self:paths(e.primary).key)
  return self.hooks:notify("on_renewed", self.policy.on_renewed, view)
end

-- Retry state lives in storage so `certmaint status` in another process sees it.
function Engine:state_key(e) return keys.state(e.primary) end

function Engine:save_state(e)
  local st = self.jobs:status("renew:" .. e.primary)
  if not st then return end
  if e.id then
    self.cache:set(e.id, { last_error = st.last_error or false, next_attempt = st.next_attempt or 0,
      attempts = st.attempts or 0 })
  end
  self.storage:store(self:state_key(e), core.json_encode {
    name = e.primary, state = st.state, attempts = st.attempts, last_error = st.last_error,
    next_attempt = st.next_attempt, first_attempt = st.first_attempt,
  })
end

function Engine:clear_state(e)
  if e.id then self.cache:set(e.id, { last_error = false, next_attempt = 0, attempts = 0 }) end
  self.storage:delete(self:state_key(e))
end

--- Retry state of e as saved in storage (nil when none).
function Engine:load_state(e)
  local raw = self.storage:load(self:state_key(e))
  if not raw then return nil end
  return core.json_decode(raw)
end

--- Load every managed certificate from storage into the cache.
-- Returns a list of {entry, state} where state is "ok", "missing",
-- "names_changed" or "error".
function Engine:load_all()
  local out = {}
  for _, primary in ipairs(self.order) do
    local e = self.entries[primary]
    local state, pem, err = self:read_stored(e)
    if state == "ok" then
      local c, cerr = self:cache_put(e, pem)
      if not c then state, err = "error", cerr end
    elseif state == "names_changed" then
      self:cache_put(e, pem) -- keep serving the old one until the new one is here
    elseif not state then
      state, err = "error", pem
      log("error", "load_failed", { name = primary, error = err })
    end
    if e.names_changed then state = "names_changed" end
    out[#out + 1] = { entry = e, state = state, error = err }
  end
  return out
end

--- Start-up: load storage, obtain what is missing or whose names changed.
-- Runs inside a loop task; waits for the first attempt of each obtain.
function Engine:start()
  local tick = { kind = "start", obtained = 0, loaded = 0, failed = 0, renewed = 0 }
  local collector = self:open_collector(tick)
  for _, r in ipairs(self:load_all()) do
    if r.state == "ok" then
      tick.loaded = tick.loaded + 1
      log("info", "loaded", { name = r.entry.primary })
    elseif r.state == "missing" or r.state == "names_changed" or r.state == "error" then
      log("info", "obtaining", { name = r.entry.primary, reason = r.state })
      self:submit(r.entry, "obtain", collector)
    end
  end
  self:finish_collector(collector)
  tick.obtained = tick.renewed or 0
  tick.renewed = nil
  self.started = true
  return tick
end

function Engine:open_collector(tick)
  local c = { waiting = {}, outstanding = 0, tick = tick }
  self.collectors[#self.collectors + 1] = c
  return c
end

--- Wait for the first attempt of every job collector c queued. A job that is
-- no longer queued or running without having reported (its task died: a bug)
-- is not waited for, so a pass can never hang on it.
function Engine:finish_collector(c)
  wait_until(function()
    if c.outstanding == 0 then return true end
    for job in pairs(c.waiting) do
      local st = self.jobs:status(job)
      if st and (st.state == "queued" or st.state == "running") then return false end
    end
    return true
  end)
  for i, x in ipairs(self.collectors) do
    if x == c then table.remove(self.collectors, i) break end
  end
end

--- The renew pass (DESIGN "Behaviour to keep").
function Engine:renew_pass()
  local now = core.now()
  local tick = { kind = "renew", at = now, due = 0, queued = 0, renewed = 0, reloaded = 0, failed = 0, dropped = 0 }
  local collector = self:open_collector(tick)
  local ids
  if self.policy.needs_renewal then
    ids = {}
    for _, id in ipairs(self.cache:ids { managed = true }) do
      local cert = self.cache:get(id)
      if cert and cert.next_attempt <= now and self:needs_renewal(cert, now) then ids[#ids + 1] = id end
    end
  else
    ids = self.cache:due(now)
  end
  for _, id in ipairs(ids) do
    local cert = self.cache:get(id)
    local e = self.by_id[id]
    if cert and #cert.names == 0 then
      log("warn", "dropped_no_names", { id = id })
      self.cache:remove(id)
      self.by_id[id] = nil
      tick.dropped = tick.dropped + 1
    elseif e then
      tick.due = tick.due + 1
      if self:submit(e, "renew", collector) then tick.queued = tick.queued + 1 end
    end
  end
  -- entries still without a certificate (obtain failed at start-up) are retried by their job
  self:finish_collector(collector)
  return tick
end

local function dirname(key) return key:match("^(.*)/[^/]*$") end

--- Staples that cannot be parsed, or whose nextUpdate has passed (none given
-- counts as passed, as in certmagic), are deleted: a fresh one is fetched.
function Engine:clean_staples(now, tick)
  for _, k in ipairs(self.storage:list(keys.OCSP_PREFIX, true) or {}) do
    local der = self.storage:load(k)
    local info, err = nil, "cannot be read"
    if der then info, err = core.ocsp_response_peek(der) end
    local why
    if not info then
      why = "unparseable: " .. tostring(err)
    elseif not info.next_update or info.next_update <= now then
      why = "stale: next update " .. (info.next_update and iso(info.next_update) or "not given")
    end
    if why then
      local ok, derr = self.storage:delete(k)
      if ok then
        tick.staples_deleted = tick.staples_deleted + 1
        log("info", "clean_deleted", { key = k, what = "OCSP staple", why = why })
      else
        log("error", "clean_delete_failed", { key = k, error = derr })
      end
    end
  end
end

--- The clean pass: expired certificates past the grace period, then empty
-- site folders. Never deletes what the policy manages, nor what it cannot parse.
function Engine:clean_pass()
  local now = core.now()
  local cfg = self.policy.clean or {}
  local tick = { kind = "clean", at = now, deleted = 0, kept = 0, unparseable = 0, staples_deleted = 0 }
  if cfg.ocsp_staples ~= false then self:clean_staples(now, tick) end
  if cfg.expired_certs == false then return tick end
  local grace = cfg.expired_cert_grace_period or 86400
  local managed_paths = {}
  for _, primary in ipairs(self.order) do managed_paths[self:paths(primary).crt] = true end
  local list = self.storage:list("certificates", true) or {}
  local sites = {}
  for _, k in ipairs(list) do
    if k:sub(-4) == ".crt" then
      local pem = self.storage:load(k)
      local facts = pem and core.cert_parse(pem)
      if managed_paths[k] or (facts and self.by_id[facts.hash]) then
        tick.kept = tick.kept + 1
      elseif not facts then
        tick.unparseable = tick.unparseable + 1
        log("warn", "clean_unparseable", { key = k })
      elseif facts.not_after + grace <= now then
        local base = k:sub(1, -5)
        for _, ext in ipairs { ".crt", ".key", ".json" } do
          if self.storage:exists(base .. ext) then
            local ok, err = self.storage:delete(base .. ext)
            if ok then log("info", "clean_deleted", { key = base .. ext, not_after = iso(facts.not_after) })
            else log("error", "clean_delete_failed", { key = base .. ext, error = err }) end
          end
        end
        tick.deleted = tick.deleted + 1
        sites[dirname(k)] = true
      else
        tick.kept = tick.kept + 1
      end
    end
  end
  for site in pairs(sites) do
    local rest = self.storage:list(site, false)
    if rest and #rest == 0 then
      self.storage:delete(site)
      log("info", "clean_deleted", { key = site, what = "empty site folder" })
    end
  end
  return tick
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
  local e = self:add_entry(norm, { on_demand = true, source = "runtime", key_type = o.key_type })
  log("info", "managed", { name = e.primary, names = table.concat(norm, ","), source = "runtime" })
  local state, pem = self:read_stored(e)
  if state == "ok" then
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
function Engine:tick(kind)
  local tick
  if kind == "renew" then tick = self:renew_pass()
  elseif kind == "clean" then tick = self:clean_pass()
  elseif kind == "ocsp" then tick = { kind = "ocsp", at = core.now(), refreshed = 0 }
  else error("unknown tick kind " .. tostring(kind), 2) end
  tick.lua_kib = math.floor(collectgarbage("count")) -- the Lua heap, so a leak shows in the log
  tick.cached = self.cache:count()
  log("info", "tick", tick)
  if self.policy.on_tick then
    tick.manage = function(names, o) return self:manage(names, o) end
    tick.unmanage = function(name) return self:unmanage(name) end
    tick.managed = function() return self:managed_names() end
    self.hooks:notify("on_tick", self.policy.on_tick, tick)
    tick.manage, tick.unmanage, tick.managed = nil, nil, nil
  end
  return tick
end

--- Certificates in the cache, as the tables Lua sees.
function Engine:certificates()
  local out = {}
  for _, primary in ipairs(self.order) do
    local e = self.entries[primary]
    local c = e.id and self.cache:get(e.id)
    if c then out[#out + 1] = c end
  end
  return out
end

--- One status row per managed entry (the facts `status` prints).
function Engine:status_rows(now)
  now = now or core.now()
  local rows = {}
  for _, primary in ipairs(self.order) do
    local e = self.entries[primary]
    local c = e.id and self.cache:get(e.id)
    local st = self.jobs:status("renew:" .. primary) or self:load_state(e)
    local row = {
      names = e.names, managed = true, on_demand = e.on_demand,
      issuer = c and c.issuer or nil, serial = c and c.serial or nil,
      not_before = c and c.not_before, not_after = c and c.not_after,
      renewal_at = c and c.renew_at, renewal_due = false,
      ocsp = c and c.ocsp and { status = c.ocsp.status, this_update = c.ocsp.this_update,
        next_update = c.ocsp.next_update } or nil,
      last_error = st and st.last_error or (not c and "no certificate in storage") or nil,
      attempts = st and st.attempts or nil, next_attempt = st and st.next_attempt or nil,
    }
    if c then row.renewal_due = (self:needs_renewal(c, now)) end
    rows[#rows + 1] = row
  end
  return rows
end

--- What the next passes would do at `at` (check --at): changes nothing.
function Engine:plan(at)
  local out = {}
  local grace = (self.policy.clean or {}).expired_cert_grace_period or 86400
  for _, primary in ipairs(self.order) do
    local e = self.entries[primary]
    local state, pem, facts = self:read_stored(e)
    local row = { names = e.names }
    if state == "missing" then
      row.action, row.when, row.why = "obtain", at, "not in storage"
    elseif state == "names_changed" then
      row.action, row.when, row.why = "obtain", at, "names changed (storage has " .. table.concat(facts.names, ",") .. ")"
    elseif state == "ok" then
      local t = self:renewal_time(facts)
      row.not_after = facts.not_after
      if not t then
        row.action, row.when, row.why = "error", at, "needs_renewal hook failed"
      elseif facts.not_after <= at then
        row.action, row.when, row.why = "renew", at, "expired at " .. iso(facts.not_after)
      elseif t <= at then
        row.action, row.when, row.why = "renew", at, "due since " .. iso(t)
      elseif t == math.huge then
        row.action, row.when, row.why = "keep", nil, "policy never renews it"
      else
        row.action, row.when, row.why = "renew", t, "renewal window opens"
      end
    else
      row.action, row.when, row.why = "error", at, tostring(pem)
    end
    out[#out + 1] = row
  end
  -- clean: unmanaged certificates in storage
  local managed_paths = {}
  for _, primary in ipairs(self.order) do managed_paths[self:paths(primary).crt] = true end
  for _, k in ipairs(self.storage:list("certificates", true) or {}) do
    if k:sub(-4) == ".crt" and not managed_paths[k] then
      local pem = self.storage:load(k)
      local facts = pem and core.cert_parse(pem)
      if not facts then
        out[#out + 1] = { names = { k }, action = "report", when = at, why = "cannot be parsed; never deleted" }
      elseif (self.policy.clean or {}).expired_certs ~= false then
        local t = facts.not_after + grace
        out[#out + 1] = { names = facts.names, action = "clean", when = math.max(t, at),
          why = (t <= at) and "expired and past grace period" or "expires " .. iso(facts.not_after) }
      end
    end
  end
  return out
end

--- Run forever: tickers, lock heartbeat, signals. Returns when stopped.
function Engine:run()
  local p = self.policy
  core.signal_watch { "TERM", "INT", "HUP" }
  loop.on_signal(function(sig)
    if sig == "HUP" then
      self:reload()
    else
      log("info", "stopping", { signal = sig })
      self.stopping = true
    end
  end)
  loop.spawn(function()
    local ok, tick = pcall(self.start, self)
    if not ok then log("error", "start_failed", { error = tick }) end
  end)
  local function ticker(kind, interval_field)
    loop.spawn(function()
      while not self.stopping do
        loop.sleep(self.policy[interval_field] or p[interval_field])
        if self.stopping then break end
        if self.started then
          local ok, err = pcall(self.tick, self, kind)
          if not ok then log("error", "pass_failed", { kind = kind, error = err }) end
        end
      end
    end)
  end
  ticker("renew", "renew_check_interval")
  ticker("clean", "clean_interval")
  log("info", "running", { certificates = #self.order, storage = self.storage.describe and self.storage:describe() or "?",
    issuer = self.issuer:describe() })
  loop.run_until(function() return self.stopping end)
  self:shutdown()
end

--- Stop cleanly: no new jobs, in-flight jobs get SHUTDOWN_GRACE to finish
-- (their writes and unlocks complete), then the loop is cleared.
function Engine:shutdown()
  self.stopping = true
  local deadline = core.monotonic() + M.SHUTDOWN_GRACE
  loop.run_until(function()
    local st = self.jobs:list()
    for _, j in ipairs(st) do
      if j.state == "running" then return core.monotonic() > deadline end
    end
    return true
  end)
  log("info", "stopped", {})
  loop.reset()
  core.signal_unwatch()
end

--- SIGHUP: re-read the policy; a policy that fails to load leaves the old one.
function Engine:reload()
  if not self.opts.reload then return end
  local policy, err = self.opts.reload()
  if not policy then
    log("error", "policy_reload_failed", { error = err })
    return false
  end
  self:apply_policy(policy)
  log("info", "policy_reloaded", { certificates = #self.order })
  loop.spawn(function() self:start() end)
  return true
end

return M
