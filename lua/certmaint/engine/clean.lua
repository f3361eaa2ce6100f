--- The clean pass (DESIGN "Cleaning"): stale or unparseable staples and
-- stored CRLs (engine/crl.lua clean_crls), then
-- certificates expired longer than the grace period (with their key and
-- metadata), then site folders left empty. Never deletes what the policy
-- manages, nor a file it cannot parse as a certificate (that is reported).
--
-- Instances sharing one storage clean in turn: the pass takes try_lock("clean")
-- (busy: skipped) and records certmaint/last_clean (RFC 3339) after, fenced by
-- that lock; a scheduled pass (the daemon's clean ticker) reads it first and
-- skips when another instance cleaned within clean_interval. A pass asked for
-- by hand (`certmaint clean`, `once`) cleans whenever it can take the lock. It also removes stale locks (not refreshed for the
-- backend's stale time: their holders died) and, on a backend that has them,
-- temp files of writes that never finished (older than a renew tick).
local core = require "certmaint.core"
local common = require "certmaint.storage.common"
local keys = require "certmaint.keys"
local rfc3339 = require "certmaint.rfc3339"

local M = {}

local function log(level, event, fields) core.log(level, event, fields or {}) end

local function dirname(key) return key:match("^(.*)/[^/]*$") end

--- Staples that cannot be parsed, or whose nextUpdate has passed (none given
-- counts as passed, as in certmagic), are deleted: a fresh one is fetched.
function M:clean_staples(now, tick)
  local list = self.storage:list(keys.OCSP_PREFIX, true) or {}
  local found, failed = self.storage:load_many(list)
  for _, k in ipairs(list) do
    local der = found[k]
    local info, err = nil, "cannot be read"
    if der then info, err = core.ocsp_response_peek(der) end
    local why
    if not info then
      if not (failed[k] and failed[k].code == "ENOENT") then why = "unparseable: " .. tostring(err) end
    elseif not info.next_update or info.next_update <= now then
      why = "stale: next update " .. (info.next_update and rfc3339.iso(info.next_update) or "not given")
    end
    if why then self:clean_delete(k, "OCSP staple", why, tick, "staples_deleted") end
  end
end

--- Delete storage key k for the clean pass, logged with what it was and
-- why; counted in tick[counter].
function M:clean_delete(k, what, why, tick, counter)
  local ok, derr = self.storage:delete(k)
  if ok then
    tick[counter] = (tick[counter] or 0) + 1
    log("info", "clean_deleted", { key = k, what = what, why = why })
  else
    log("error", "clean_delete_failed", { key = k, error = derr })
  end
  return ok
end

--- The keys of managed certificates (never cleaned).
function M:managed_crt_keys()
  local managed = {}
  for _, primary in ipairs(self.order) do managed[self:paths(primary).crt] = true end
  return managed
end

local BATCH = 2048

--- Stored certificates the policy does not manage: calls fn(key, facts) for
-- each, where facts = { hash =, not_after = [, names =] } or nil when it
-- cannot be parsed. The bulk path parses them in C (storage:load_into_cache
-- on a scratch cache, a batch at a time): cleaning needs not_after, not a
-- full parse in Lua. opts.names adds each certificate's names.
function M:each_unmanaged_stored(fn, opts)
  local managed = self:managed_crt_keys()
  local crts = {}
  for _, k in ipairs(self.storage:list(keys.CERTS_PREFIX, true) or {}) do
    if k:sub(-4) == ".crt" and not managed[k] then crts[#crts + 1] = k end
  end
  for first = 1, #crts, BATCH do
    local batch = table.move(crts, first, math.min(first + BATCH - 1, #crts), 1, {})
    local scratch <close> = core.cache_new()
    local r = self.storage:load_into_cache(scratch, batch, { managed = false })
    for i, k in ipairs(batch) do
      local id = r.id[i]
      if id then
        local facts = { hash = id, not_after = r.not_after[i] }
        if opts and opts.names then facts.names = scratch:get(id, { pem = false }).names end
        fn(k, facts)
      elseif r.state[i] ~= "missing" then -- (a file deleted meanwhile is no business of ours)
        fn(k, nil)
      end
    end
  end
  return #crts
end

M.LAST_CLEAN_KEY = "certmaint/last_clean"

-- fn(...) with its wall time in tick["seconds_" .. phase], rounded to the
-- millisecond (where a clean pass spends its time: the tick's log line and
-- the bench show it)
local function timed(tick, phase, fn, ...)
  local t0 = core.monotonic()
  fn(...)
  local key = "seconds_" .. phase
  tick[key] = math.floor(((tick[key] or 0) + core.monotonic() - t0) * 1000 + 0.5) / 1000
end
M.CLEAN_LOCK = "clean"

--- Locks whose holder stopped refreshing them (died) for longer than the
-- backend's stale time are removed. Each is taken over first (try_lock: the
-- backend's own compare-and-swap), then released, so a lock some instance
-- takes over or refreshes meanwhile is never removed under it. Backends that
-- keep no lock records under locks/ (memory, etcd's leases) have none.
function M:clean_stale_locks(now, tick)
  local stale_after = self.storage.stale_after or common.STALE_AFTER
  local held = self.storage.held or {}
  for _, k in ipairs(self.storage:list(keys.LOCKS_PREFIX, false) or {}) do
    if k:sub(-5) == ".lock" and not held[k] then
      local rec = common.decode_lock(self.storage:load(k))
      if rec and common.is_stale(rec.updated, now, stale_after) then
        local lock = self.storage:try_lock(k)
        if lock then
          local ok, err = self.storage:unlock(lock)
          if ok then
            tick.locks_deleted = (tick.locks_deleted or 0) + 1
            log("info", "clean_deleted", { key = k, what = "stale lock", owner = rec.owner,
              updated = rfc3339.iso(rec.updated) })
          else
            log("error", "clean_delete_failed", { key = k, error = err })
          end
        end
      end
    end
  end
end

-- Unfinished writes' temp files older than this are a crash's leftovers.
function M:temp_cutoff(now) return now - (self.policy.renew_check_interval or 600) end

--- Temp files of writes that never finished, older than one renew tick
-- (a backend without a clean scan, which finds them itself).
function M:clean_temp_files(now, tick)
  if not self.storage.clean_temp then return end
  local removed, err = self.storage:clean_temp(self:temp_cutoff(now))
  if not removed then
    log("error", "clean_delete_failed", { what = "temp files", error = err })
    return
  end
  for _, k in ipairs(removed) do log("info", "clean_deleted", { key = k, what = "unfinished write's temp file" }) end
  tick.temp_deleted = (tick.temp_deleted or 0) + #removed
end

--- Delete the files at list (storage keys) in one storage call where the
-- backend has one (the file backend syncs each folder once, not each file),
-- each removal logged as `what` with fields_of(key)'s fields; prune_empty:
-- also a folder they leave empty. Returns how many were removed.
function M:delete_files(list, what, prune_empty, fields_of)
  if #list == 0 then return 0 end
  local result, err, code, partial
  if self.storage.delete_many then
    result, err, code, partial = self.storage:delete_many(list, { prune_empty = prune_empty })
    result = result or partial
  else
    result = {}
    for _, k in ipairs(list) do
      if not self.storage:exists(k) then
        result[k] = "missing"
      else
        local ok, derr, dcode = self.storage:delete(k)
        result[k] = ok and "removed" or false
        if not ok then err, code = err or derr, code or dcode end
      end
    end
  end
  local n = 0
  for _, k in ipairs(list) do
    if result[k] == "removed" then
      n = n + 1
      local fields = fields_of and fields_of(k) or {}
      fields.key, fields.what = k, fields.what or what
      log("info", "clean_deleted", fields)
    elseif result[k] == false then
      log("error", "clean_delete_failed", { key = k, error = err, code = code })
    end
  end
  return n
end

--- The clean pass, once per clean_interval among the instances sharing the
-- storage when opts.scheduled (see the top of this file). Returns the tick;
-- tick.skipped says why it did nothing.
function M:clean_pass(opts)
  local scheduled = opts and opts.scheduled
  local now = core.now()
  local tick = { kind = "clean", at = now, deleted = 0, kept = 0, unparseable = 0, staples_deleted = 0,
    crls_deleted = 0 }
  self:clean_deploy_temp(now, tick)
  local lock, holder = self:try_take_lock(M.CLEAN_LOCK, "clean")
  if not lock then
    tick.skipped = lock == false and ("another instance is cleaning: " .. tostring(holder))
      or ("the clean lock cannot be taken: " .. tostring(holder))
    return tick
  end
  local ok, err = pcall(function()
    local last = self.storage:load(M.LAST_CLEAN_KEY)
    local at = last and rfc3339.parse((last:gsub("%s+$", "")))
    local interval = self.policy.clean_interval or 86400
    -- this instance's own record does not stop it: its ticker keeps the interval
    if scheduled and at and last ~= self.last_clean_written and now - at < interval and now >= at then
      tick.skipped = "another instance cleaned at " .. rfc3339.iso(at)
      log("info", "clean_skipped", { last_clean = rfc3339.iso(at), why = "another instance cleaned within the interval" })
      return
    end
    local scanned = self:clean_work(now, tick)
    timed(tick, "locks", self.clean_stale_locks, self, now, tick)
    if not scanned then timed(tick, "temp", self.clean_temp_files, self, now, tick) end
    local text = rfc3339.format(now) .. "\n"
    local cok, cerr, ccode = self.storage:commit { put = { [M.LAST_CLEAN_KEY] = text }, fence = lock }
    if cok then
      self.last_clean_written = text
    elseif ccode == "fenced" then
      self:log_fenced(lock, cerr, { key = M.LAST_CLEAN_KEY })
    else
      log("error", "last_clean_store_failed", { key = M.LAST_CLEAN_KEY, error = cerr, code = ccode })
    end
  end)
  self:release_lock(lock)
  if not ok then error(err, 0) end
  return tick
end

-- What one clean pass removes (under the clean lock). Returns true when
-- the backend's clean scan found (and this removed) the temp files too.
function M:clean_work(now, tick)
  local cfg = self.policy.clean or {}
  if cfg.ocsp_staples ~= false then timed(tick, "staples", self.clean_staples, self, now, tick) end
  -- engine/crl.lua: a CRL past its nextUpdate is of no use to anyone
  timed(tick, "crls", self.clean_crls, self, now, tick)
  if cfg.expired_certs == false then return false end
  local grace = cfg.expired_cert_grace_period or 86400
  if self.storage.clean_scan then
    timed(tick, "certs", self.clean_scanned, self, now, tick, grace)
    return true
  end
  timed(tick, "certs", self.clean_expired_certs, self, now, tick, grace)
  return false
end

-- The files of the certificate set stored at crt_key (".crt"), in the
-- order they are deleted.
local function set_files(crt_key)
  local base = crt_key:sub(1, -5)
  return { base .. ".crt", base .. ".key", base .. ".json" }
end

--- The clean pass over the backend's clean scan (storage:clean_scan, the file
-- backend's: one walk for the certificates and the temp files, each
-- certificate read on threads for its notAfter only): the temp files first
-- (so a site folder they were in can go with its certificate), then the
-- expired sets in one delete_many, their site folders with them when empty.
function M:clean_scanned(now, tick, grace)
  local scan, err, code = self.storage:clean_scan { expired_before = now - grace,
    temp_before = self:temp_cutoff(now) }
  if not scan then
    log("error", "clean_scan_failed", { error = err, code = code })
    return
  end
  tick.temp_deleted = (tick.temp_deleted or 0) + self:delete_files(scan.temp, "unfinished write's temp file", false)
  local managed = self:managed_crt_keys()
  for _, f in ipairs(scan.failed) do
    if not managed[f.key] then
      tick.unparseable = tick.unparseable + 1
      log("warn", "clean_unparseable", { key = f.key, error = f.error })
    end
  end
  local doomed, not_after = {}, {}
  for _, it in ipairs(scan.expired) do
    if not (managed[it.key] or self.by_id[it.id]) then
      tick.deleted = tick.deleted + 1
      for _, k in ipairs(set_files(it.key)) do
        doomed[#doomed + 1] = k
        not_after[k] = it.not_after
      end
    end
  end
  tick.kept = tick.kept + scan.certificates - tick.deleted - tick.unparseable
  self:delete_files(doomed, nil, true, function(k) return { not_after = rfc3339.iso(not_after[k]) } end)
end

--- Stored certificates expired longer than the grace period, with their key
-- and metadata, then the site folders they leave empty (a backend without a
-- clean scan).
function M:clean_expired_certs(now, tick, grace)
  for _, primary in ipairs(self.order) do -- managed and stored: kept
    if self.entries[primary].id then tick.kept = tick.kept + 1 end
  end
  local sites, doomed, not_after = {}, {}, {}
  self:each_unmanaged_stored(function(k, facts)
    if facts and self.by_id[facts.hash] then
      tick.kept = tick.kept + 1
    elseif not facts then
      tick.unparseable = tick.unparseable + 1
      log("warn", "clean_unparseable", { key = k })
    elseif facts.not_after + grace <= now then
      for _, f in ipairs(set_files(k)) do
        doomed[#doomed + 1] = f
        not_after[f] = facts.not_after
      end
      tick.deleted = tick.deleted + 1
      sites[dirname(k)] = true
    else
      tick.kept = tick.kept + 1
    end
  end)
  self:delete_files(doomed, nil, false, function(k) return { not_after = rfc3339.iso(not_after[k]) } end)
  for site in pairs(sites) do
    local rest = self.storage:list(site, false)
    if rest and #rest == 0 then
      self.storage:delete(site)
      log("info", "clean_deleted", { key = site, what = "empty site folder" })
    end
  end
end

return M
