--- The renew pass and renewal jobs (DESIGN "Behaviour to keep", "Issuing").
--
-- The C scan (cache:due) finds what is due; each due certificate becomes a
-- named job "renew:<primary>" (one at a time per name). A job takes the
-- storage lock for its name, re-reads storage (another instance may have
-- renewed meanwhile: then it reloads), else obtains a new certificate and
-- writes the whole set as one commit fenced by that lock.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local keys = require "certmaint.keys"
local renewal = require "certmaint.renewal"
local certset = require "certmaint.certset"
local rfc3339 = require "certmaint.rfc3339"
local issuers = require "certmaint.issuer"
local progress = require "certmaint.progress"

local M = {}

local function log(level, event, fields) core.log(level, event, fields or {}) end

local function message_of(err)
  if type(err) == "table" then return tostring(err.message or err[1] or "error") end
  return tostring(err)
end

--- The engine's own rule (certmaint.renewal with the policy's renewal
-- options): what decides without a needs_renewal hook, what decides when the
-- hook fails, and what a hook gets as its third argument to delegate to.
function M:default_needs_renewal(cert, now)
  return renewal.needs_renewal(cert, now, self.renewal_opts)
end

-- Ask the policy's needs_renewal hook about cert at `now`: true | false, or
-- nil, message when the hook failed (raised, ran out of time or memory, did
-- not return a boolean); the failure is logged and counted by the runner.
function M:ask_needs_renewal(hook, cert, now)
  if not self.default_rule then
    self.default_rule = function(c, t) return (self:default_needs_renewal(c, t)) end
  end
  local ok, due = self.hooks:decide("needs_renewal", hook, cert, now, self.default_rule)
  if not ok then return nil, due end
  if type(due) ~= "boolean" then
    local msg = "needs_renewal returned " .. (due == nil and "nil" or ("a " .. type(due))) .. ", not true or false"
    self.hooks:failed("needs_renewal", msg, "type")
    return nil, msg
  end
  return due
end

local function hook_failure(err)
  return "needs_renewal hook failed: " .. tostring(err) .. "; the default rule decided"
end
M.hook_failure = hook_failure

--- The time at which the policy says `cert` needs renewing (for scans and status).
-- With the default decision this is renewal.renew_at; with a needs_renewal
-- hook it is found by bisection over the certificate's life (the hook is
-- assumed monotonic in time, which any sane policy is). When the hook fails,
-- the default rule's time, and the failure as a second value.
function M:renewal_time(cert)
  self:with_ari(cert) -- the CA's ARI window, when one is kept for it (engine/ari.lua)
  local hook = self.policy.needs_renewal
  if not hook then
    return (renewal.renew_at(cert, self.renewal_opts))
  end
  local function fallback(err)
    return (renewal.renew_at(cert, self.renewal_opts)), hook_failure(err)
  end
  local lo, hi = cert.not_before, cert.not_after
  local due, err = self:ask_needs_renewal(hook, cert, hi)
  if due == nil then return fallback(err) end
  if not due then return math.huge end
  due, err = self:ask_needs_renewal(hook, cert, lo)
  if due == nil then return fallback(err) end
  if due then return lo end
  for _ = 1, 40 do
    if hi - lo < 1 then break end
    local mid = (lo + hi) / 2
    due, err = self:ask_needs_renewal(hook, cert, mid)
    if due == nil then return fallback(err) end
    if due then hi = mid else lo = mid end
  end
  return math.ceil(hi)
end

--- Does the policy say `cert` needs renewing at `now`? Returns bool, reason,
-- and when the needs_renewal hook failed (then the default rule decided) the
-- failure as a third value.
function M:needs_renewal(cert, now)
  self:with_ari(cert)
  local hook = self.policy.needs_renewal
  if hook then
    local due, err = self:ask_needs_renewal(hook, cert, now)
    if due ~= nil then return due, "policy" end
    local d, reason = self:default_needs_renewal(cert, now)
    if d then
      core.log("error", "default_rule_decided", { name = cert.names and cert.names[1], reason = reason,
        error = err })
    end
    return d and true or false, reason, hook_failure(err)
  end
  return renewal.needs_renewal(cert, now, self.renewal_opts)
end

--- The newest certificate stored for e under any configured issuer's folder:
-- state, pem, facts, folder (certset.read's answer; with one folder, that
-- folder's answer as it is). A certificate another issuer of the list
-- obtained is found and kept, so changing or adding an issuer re-orders nothing.
function M:read_stored(e)
  local folders = self.issuer_keys
  local own = e.issuer_key or self.issuer_key
  if #folders == 1 then
    local state, pem, facts = certset.read(self.storage, self:paths(e.primary), e.names)
    return state, pem, facts, own
  end
  local best, mine
  for _, folder in ipairs(folders) do
    local r = table.pack(certset.read(self.storage, self:paths(e.primary, folder), e.names))
    r[4] = folder
    if r[1] == "ok" and (not best or r[3].not_after > best[3].not_after) then best = r end
    if folder == own then mine = r end
  end
  -- nothing usable anywhere: the answer of e's own folder (missing, names_changed, an error)
  best = best or mine or { "missing" }
  return best[1], best[2], best[3], best[4]
end

-- The key to reuse for e (reuse_key): the stored one, when it is there and of
-- the key type wanted (the .json says which; a set written before it said so
-- is reused as it is). nil: make a new one.
function M:reusable_key(e)
  local set = self:paths(e.primary)
  local key = self.storage:load(set.key)
  if not key then return nil end
  if self:key_compromised(e, key) then
    log("warn", "key_not_reused", { name = e.primary, why = "the key was revoked for keyCompromise" })
    return nil
  end
  local meta = self.storage:load(set.meta)
  local m = meta and core.json_decode(meta)
  local kt = type(m) == "table" and type(m.certmaint) == "table" and m.certmaint.key_type
  if kt and kt ~= e.key_type then
    log("info", "key_not_reused", { name = e.primary, why = "key type " .. tostring(kt) .. " is not " .. e.key_type })
    return nil
  end
  return key
end

-- The ARI certificate ID (RFC 9773 section 4.1) of the certificate e is
-- replacing, or nil (none, the core cannot say, or no AKI in it).
function M:replaces_id(e)
  if not e.id or not core.ari_cert_id then return nil end
  local cert = self.cache:get(e.id)
  if not cert then return nil end
  local id = core.ari_cert_id(cert.pem)
  return id
end

local function is_final(err) return type(err) == "table" and err.final and true or false end
local function retry_after_of(err)
  local t = type(err) == "table" and (err.retry_after or err.retry_at)
  if type(t) == "number" and t == t then return t end
  return nil
end

--- Obtain a fresh certificate for e and store it under `lock` (held by the
-- caller), from the first issuer of the list that gives one (in list order,
-- or shuffled with issuer_policy = "first_random"). An issuer that said when
-- to come back (retry_after) is skipped for e until then. The set goes to the
-- folder of the issuer that issued it.
function M:obtain(e, lock)
  local now = core.now()
  local reuse = e.reuse_key
  if reuse == nil then reuse = self.policy.reuse_key end
  -- a key revoked for keyCompromise is never reused (engine/revocation.lua)
  local key = (reuse and not e.key_compromised) and self:reusable_key(e) or nil
  local err, code
  if not key then
    key, err, code = core.key_generate(e.key_type)
    if not key then return nil, err, code end
  end
  local csr
  csr, err, code = core.csr_create(key, e.names)
  if not csr then return nil, err, code end
  local own = e.issuer_key or self.issuer_key
  local replaces = self:replaces_id(e)
  local profile = e.profile or self.policy.profile
  local order = issuers.order(self.issuer, self.issuer_policy)
  local failed, waiting = {}, {}
  local last_err, last_code
  for i, iss in ipairs(order) do
    local folder = issuers.storage_key(iss)
    local wait = e.issuer_wait and e.issuer_wait[iss]
    if wait and wait > now then
      waiting[#waiting + 1] = { issuer = iss, until_ = wait }
    else
      if wait then e.issuer_wait[iss] = nil end
      -- replaces names a certificate of this CA only: another one would refuse it
      local req = { names = e.names, csr_pem = csr, key_pem = key, key_type = e.key_type, profile = profile,
        replaces = (folder == own) and replaces or nil }
      -- a member that raises is a failed member: the next one is still asked
      -- before_order: the issuer reserves each new order in the CA's budget (engine/order_budget.lua)
      local called, res, ierr, icode = pcall(iss.issue, iss, req, { storage = self.storage, now = now, hooks = self.hooks,
        before_order = self:budget_before_order(iss, e) })
      if not called then res, ierr, icode = nil, { message = issuers.describe(iss) .. " raised: " .. tostring(res) }, "error" end
      if res then
        if next(e.issuer_wait or {}) == nil then e.issuer_wait = nil end
        return self:store_issued(e, lock, iss, folder, key, res)
      end
      last_err, last_code = ierr, icode
      failed[#failed + 1] = { issuer = iss, err = ierr }
      local t = retry_after_of(ierr)
      if t and t > now then
        e.issuer_wait = e.issuer_wait or setmetatable({}, { __mode = "k" })
        e.issuer_wait[iss] = t
      end
      if #order > 1 then
        log(i < #order and "warn" or "error", "issuer_failed", { name = e.primary, issuer = issuers.describe(iss),
          error = message_of(ierr), code = icode, retry_after = t and rfc3339.iso(t) or nil,
          next = i < #order and "the next issuer" or nil })
      end
    end
  end
  if #failed == 1 and #waiting == 0 then return nil, last_err, last_code end
  -- several issuers failed, or every one asked to wait: one error for the job
  local parts, all_final, soonest, all_timed = {}, #waiting == 0, nil, true
  for _, f in ipairs(failed) do
    parts[#parts + 1] = issuers.describe(f.issuer) .. ": " .. message_of(f.err)
    all_final = all_final and is_final(f.err)
    local t = retry_after_of(f.err)
    if t then soonest = math.min(soonest or t, t) elseif not is_final(f.err) then all_timed = false end
  end
  for _, w in ipairs(waiting) do
    parts[#parts + 1] = issuers.describe(w.issuer) .. ": asked to wait until " .. rfc3339.iso(w.until_)
    soonest = math.min(soonest or w.until_, w.until_)
  end
  return nil, {
    message = string.format("every issuer failed for %s: %s", e.primary, table.concat(parts, "; ")),
    final = all_final,
    -- the job waits for the first issuer that can be asked again, when all said when
    retry_after = all_timed and soonest or nil,
  }, last_code or "waiting"
end

--- Store what issuer `iss` returned for e under its folder, as one commit
-- that also deletes the issuer's res.commit_deletes (its order state). The
-- key is res.key_pem when the issuer says the certificate is for another one
-- (an order finished after a crash). Returns chain_pem, facts | nil, err, code.
function M:store_issued(e, lock, iss, folder, key, res)
  if type(res) ~= "table" or type(res.chain_pem) ~= "string" then
    return nil, { message = issuers.describe(iss) .. " returned no chain_pem" }, "issuer"
  end
  if res.key_pem ~= nil then
    if type(res.key_pem) ~= "string" then
      return nil, { message = issuers.describe(iss) .. " returned a key_pem that is not a string" }, "issuer"
    end
    key = res.key_pem
  end
  local deletes = res.commit_deletes
  if deletes ~= nil then
    local bad = type(deletes) ~= "table"
    for i, k in ipairs(bad and {} or deletes) do
      if type(k) ~= "string" or k == "" then bad = i end
    end
    if bad then
      return nil, { message = issuers.describe(iss) .. " returned commit_deletes that is not a list of storage keys" },
        "issuer"
    end
  end
  local facts, err, code = core.cert_parse(res.chain_pem)
  if not facts then return nil, { message = "issuer returned an unusable certificate: " .. err }, code end
  if not core.key_matches(res.chain_pem, key) then
    return nil, { message = "issuer returned a certificate for another key" }, "mismatch"
  end
  local ok
  ok, err, code = certset.write(self.storage, self:paths(e.primary, folder), {
    crt = res.chain_pem, key = key,
    meta = certset.meta(e.names, issuers.describe(iss), facts.serial,
      { key_type = e.key_type,
        -- certmagic keeps the ACME certificate URL as issuer_data.url
        issuer_data = res.issuer_data or (type(res.certificate_url) == "string" and { url = res.certificate_url } or nil) }),
  }, lock, deletes)
  if not ok then return nil, err, code end
  self:set_folder(e, folder)
  return res.chain_pem, facts
end

--- One attempt at renewing (or obtaining) e. Returns "renewed"|"reloaded"|"obtained", cert, or
-- "replaced", cert (a revoked certificate's replacement found already served), or nil, err, code.
function M:renew_once(e, reason)
  local lock, err, code = self:take_lock(keys.lock_name(e.primary))
  if not lock then return nil, err, code end
  -- pcall: a raising issuer or storage must not leave the lock held (locks
  -- are not re-entrant: the next attempt would wait for itself)
  local ran, result, cert
  ran, result, cert, code = pcall(function()
    -- another instance may have renewed while we waited for the lock
    local state, pem, stored, folder = self:read_stored(e)
    -- replacing a revoked certificate: storage's copy counts only if it is another one
    if state == "ok" and not (e.revoked and stored.hash == e.revoked.hash) then
      local current = e.id and self.cache:get(e.id, { pem = false })
      if (not current or stored.hash ~= current.id) and not self:needs_renewal(stored, core.now()) then
        self:set_folder(e, folder)
        local c, lerr, lcode = self:cache_put(e, pem)
        if not c then return nil, lerr, lcode end
        return "reloaded", c
      end
      -- replacing a revoked certificate that this instance no longer serves:
      -- while the replacement waited for the lock, a renewal reloaded another
      -- instance's new certificate (storage's, not the revoked one, not due)
      if e.revoked and current and current.id ~= e.revoked.hash and stored.hash == current.id
          and not self:needs_renewal(stored, core.now()) then
        return "replaced", current
      end
    end
    local chain, ferr, fcode = self:obtain(e, lock)
    -- a failure after the heartbeat found the lock lost (this instance was
    -- paused past the stale time; the new holder may have finished the order)
    -- is a lost lock too: what the new holder committed is reloaded
    if not chain and (fcode == "fenced" or lock.lost) then return self:lost_lock(e, lock, ferr, fcode ~= "fenced") end
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
  self:release_lock(lock)
  if not ran then return nil, tostring(result), "error" end
  return result, cert, code
end

--- The commit of e's new set was refused by its fence, or the renewal failed
-- after the heartbeat found its lock lost (not_fenced): another instance
-- took the lock (this one paused or lost it past the stale time) and may have
-- committed a set of its own. Logged (commit_fenced, or renewal_lock_lost); storage is read again
-- and what the new holder committed is reloaded. Returns "reloaded", cert |
-- nil, err, "fenced" (nothing usable stored yet: the job retries).
function M:lost_lock(e, lock, err, not_fenced)
  if not_fenced then
    log("error", "renewal_lock_lost", { name = e.primary, lock = lock.name, error = message_of(err),
      action = "reading what the new holder stored" })
  else
    self:log_fenced(lock, err, { name = e.primary })
  end
  local state, pem, stored, folder = self:read_stored(e)
  if state == "ok" and not (e.revoked and stored.hash == e.revoked.hash) then
    local current = e.id and self.cache:get(e.id, { pem = false })
    if not current or stored.hash ~= current.id then
      self:set_folder(e, folder)
      local c, lerr, lcode = self:cache_put(e, pem)
      if not c then return nil, lerr, lcode end
      return "reloaded", c
    end
  end
  return nil, { message = "lost the lock " .. lock.name .. ": " .. message_of(err) }, "fenced"
end

-- Pass collectors: a pass waits for the first attempt of the jobs it queued
-- so that on_tick can say what it did.
-- What the terminal's progress line calls a collector's jobs, by tick kind.
local COLLECTOR_LABELS = { start = "obtaining certificates", renew = "renewing certificates" }

function M:open_collector(tick)
  local c = { waiting = {}, outstanding = 0, total = 0, tick = tick }
  self.collectors[#self.collectors + 1] = c
  return c
end

function M:collect(name, outcome)
  for _, c in ipairs(self.collectors) do
    if c.waiting[name] then
      c.waiting[name] = nil
      c.outstanding = c.outstanding - 1
      c.tick[outcome] = (c.tick[outcome] or 0) + 1
      if c.progress then
        c.progress.total = c.total
        c.progress:step(1, (c.tick.failed or 0) + (c.tick.deploy_failed or 0))
      end
    end
  end
end

--- Wait for the first attempt of every job collector c queued. A job that is
-- no longer queued or running without having reported (its task died: a bug)
-- is not waited for, so a pass can never hang on it. Woken by job state
-- changes (self.job_event), never by polling.
function M:finish_collector(c)
  local function settled()
    if c.outstanding == 0 then return true end
    for job in pairs(c.waiting) do
      local st = self.jobs:status(job)
      if st and (st.state == "queued" or st.state == "running") then return false end
    end
    return true
  end
  if not settled() then
    -- a pass with many jobs (the first issuance of many names) shows them on a terminal
    local p <close> = progress.new(COLLECTOR_LABELS[c.tick.kind] or "renewals and deploys", c.total)
    p.done = c.total - c.outstanding
    c.progress = p
    p:step(0)
    while not settled() do self.job_event:wait() end
    c.progress = nil
  end
  for i, x in ipairs(self.collectors) do
    if x == c then table.remove(self.collectors, i) break end
  end
end

-- The share of a certificate's remaining lifetime a failed renewal may wait
-- before its next attempt (the job queue's retry_by): certmagic's back-off
-- starts at 1 min, longer than all that is left of a 60 s certificate at
-- half-life, so a short-lived one retries within a quarter of what it has
-- left (each wait shorter than the last as notAfter nears).
local RETRY_SHARE_OF_REMAINING = 0.25

--- err with retry_by set from e's current certificate (a copy when a table:
-- the issuer's error is not ours to change), or err itself when e has no
-- certificate or it has expired (then certmagic's back-off alone: an expired
-- certificate that keeps failing does not come back every second).
function M:with_retry_by(e, err)
  local cert = e.id and self.cache:get(e.id)
  local now = core.now()
  if not (cert and type(cert.not_after) == "number" and cert.not_after > now) then return err end
  local out = {}
  if type(err) == "table" then
    for k, v in pairs(err) do out[k] = v end
  else
    out.message = message_of(err)
  end
  out.retry_by = now + (cert.not_after - now) * RETRY_SHARE_OF_REMAINING
  return out
end

--- Queue a renewal (or obtain) job for e; false if one is already queued,
-- running, or waiting for a retry time that has not come.
function M:submit(e, reason, collector)
  if self.stopping then return false end
  local job = "renew:" .. e.primary
  local queued = self.jobs:submit(job, function(attempt)
    if self.entries[e.primary] ~= e then return true end -- unmanaged meanwhile
    local ok, res, cert_or_err, code = pcall(self.renew_once, self, e, reason)
    if not ok then res, cert_or_err, code = nil, res, "error" end
    if res or code ~= "order_budget" then self:metrics_note_renewal(e, res ~= nil) end -- deferred is no attempt
    if res == "replaced" then
      -- nothing to order or deploy: what is served is already the replacement
      log("info", "revoked_replaced_meanwhile", { name = e.primary, serial = cert_or_err.serial,
        revoked_serial = e.revoked and e.revoked.serial, attempt = attempt })
      self:clear_state(e)
      self:revoked_job_done(e, true)
      self:alert_healed(e, "renew")
      self:alert_healed(e, "expiring")
      self:collect(job, "reloaded")
      return true
    end
    if res then
      local cert = cert_or_err
      self:clear_state(e)
      self:revoked_job_done(e, true)
      log("info", res, { name = e.primary, serial = cert.serial, not_after = rfc3339.iso(cert.not_after), attempt = attempt })
      self:alert_healed(e, "renew")
      self:alert_healed(e, "expiring") -- a new certificate is not expiring
      self:notify_renewed(e, cert, res, collector) -- before collecting: the pass waits for the deploy too
      self:collect(job, (res == "reloaded") and "reloaded" or "renewed")
      return true
    end
    local err = cert_or_err
    local msg = message_of(err)
    -- the cap of the retry comes from the certificate being replaced, taken
    -- before a revoked one leaves the cache below (then the name has none,
    -- and certmagic's 1 min would leave the revoked one deployed past its end)
    local retry_err = self:with_retry_by(e, err)
    if code == "order_budget" then
      -- the budget is used up: the renewal waits for it, it did not fail
      log("info", "renewal_deferred", { name = e.primary, error = msg, attempt = attempt, code = code })
      self:collect(job, "deferred")
      return nil, err, code
    end
    log("error", "renew_failed", { name = e.primary, error = msg, attempt = attempt, code = code })
    self:alert_failed(e, "renew", msg, code, { attempt = attempt, final = is_final(err) or e.on_demand or nil })
    self:revoked_job_done(e, false, msg) -- a revoked certificate not replaced leaves the cache
    self:collect(job, "failed")
    if self.policy.on_error then
      self.hooks:notify("on_error", self.policy.on_error, { kind = "renew", name = e.primary, message = msg, code = code })
    end
    if e.on_demand then
      -- certmagic: an on-demand certificate whose renewal fails leaves the cache
      self:drop_entry(e.primary, "on-demand renewal failed")
      return nil, { message = msg, final = true }, code
    end
    return nil, retry_err, code
  end)
  if queued and collector then
    collector.waiting[job] = true
    collector.outstanding = collector.outstanding + 1
    collector.total = collector.total + 1
  end
  return queued
end

--- Deploy e's new certificate: on_renewed(cert) gets what deploying needs,
-- cert.pem (chain), cert.key_pem, cert.event ("obtained" | "renewed" |
-- "reloaded": a reload means another instance renewed, and this machine's
-- servers need the new files too; "redeploy": a retry or a start-up repair).
-- It runs as a deploy job (engine/deploy.lua) whose first attempt `collector`
-- waits for; a failure is recorded and retried on the back-off.
function M:notify_renewed(e, _, event, collector)
  return self:submit_deploy(e, event, collector)
end

--- The ids of managed certificates due at `now`: the C scan, or with a
-- needs_renewal hook, the hook asked for each one not waiting to retry.
function M:due_ids(now)
  if not self.policy.needs_renewal then return self.cache:due(now) end
  local ids = {}
  for _, id in ipairs(self.cache:ids { managed = true }) do
    local cert = self.cache:get(id, { pem = false })
    if cert and cert.next_attempt <= now and self:needs_renewal(cert, now) then ids[#ids + 1] = id end
  end
  return ids
end

-- Queue a job for every certificate due at `now` (and every entry still
-- without one), within the CA's order budget (engine/order_budget.lua);
-- counts go into tick.
function M:queue_due(now, tick, collector)
  local cands = {}
  for _, id in ipairs(self:due_ids(now)) do
    local cert = self.cache:get(id, { pem = false })
    local e = self.by_id[id]
    if cert and #cert.names == 0 then
      log("warn", "dropped_no_names", { id = id })
      self.cache:remove(id)
      self.by_id[id] = nil
      tick.dropped = tick.dropped + 1
    elseif e then
      tick.due = tick.due + 1
      cands[#cands + 1] = { e = e, reason = "renew", not_after = cert and cert.not_after or -math.huge }
    end
  end
  -- entries still without a certificate (an obtain failed) retry here once
  -- their back-off has passed (submit refuses them until then)
  for primary in pairs(self.uncached) do
    local e = self.entries[primary]
    if not e or e.id then
      self.uncached[primary] = nil
    else
      local st = self.jobs:status("renew:" .. primary) -- one queued, running or backing off is not due
      if not (st and (st.state == "queued" or st.state == "running"
          or (st.state == "waiting" and st.next_attempt > now))) then
        tick.due = tick.due + 1
        cands[#cands + 1] = { e = e, reason = "obtain", not_after = -math.huge }
      end
    end
  end
  self:budget_admit(cands, tick, collector)
end

--- The renew pass (DESIGN "Behaviour to keep").
function M:renew_pass()
  local now = core.now()
  local tick = { kind = "renew", at = now, due = 0, queued = 0, renewed = 0, reloaded = 0, failed = 0, dropped = 0,
    deployed = 0, deploy_failed = 0 }
  local collector = self:open_collector(tick)
  self:ari_refresh(now) -- the CA's windows brought up to date first (nothing without renewal_info)
  self:queue_due(now, tick, collector)
  self:retry_deploys(collector)
  self:finish_collector(collector)
  self:alert_expiring_scan(now) -- after the renewals: what this pass renewed is not expiring (engine/alerts.lua)
  return tick
end

--- Between passes: resubmit the failing renewals (and deploys) whose retry time has come
-- (the daemon's renew ticker calls this when it wakes for jobs:next_wakeup).
-- Returns how many were queued.
function M:retry_due()
  local now = core.now()
  local wake = self.jobs:next_wakeup()
  local budget = self:budget_wakeup() -- renewals waiting for the order budget
  if budget and (not wake or budget < wake) then wake = budget end
  if self.stopping or not wake or wake > now then return 0 end
  local tick = { due = 0, queued = 0, dropped = 0 }
  self:queue_due(now, tick)
  return tick.queued + self:retry_deploys()
end

return M
