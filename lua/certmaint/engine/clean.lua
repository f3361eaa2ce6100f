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

--- Temp files of writes that never finished, older than one renew tick.
function M:clean_temp_files(now, tick)
  if not self.storage.clean_temp then return end
  local removed, err = self.storage:clean_temp(now - (self.policy.renew_check_interval or 600))
  if not removed then
    log("error", "clean_delete_failed", { what = "temp files", error = err })
    return
  end
  for _, k in ipairs(removed) do log("info", "clean_deleted", { key = k, what = "unfinished write's temp file" }) end
  tick.temp_deleted = (tick.temp_deleted or 0) + #removed
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
    self:clean_work(now, tick)
    self:clean_stale_locks(now, tick)
    self:clean_temp_files(now, tick)
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

-- What one clean pass removes (under the clean lock).
function M:clean_work(now, tick)
  local cfg = self.policy.clean or {}
  if cfg.ocsp_staples ~= false then self:clean_staples(now, tick) end
  self:clean_crls(now, tick) -- engine/crl.lua: a CRL past its nextUpdate is of no use to anyone
  if cfg.expired_certs == false then return end
  local grace = cfg.expired_cert_grace_period or 86400
  for _, primary in ipairs(self.order) do -- managed and stored: kept
    if self.entries[primary].id then tick.kept = tick.kept + 1 end
  end
  local sites = {}
  self:each_unmanaged_stored(function(k, facts)
    if facts and self.by_id[facts.hash] then
      tick.kept = tick.kept + 1
    elseif not facts then
      tick.unparseable = tick.unparseable + 1
      log("warn", "clean_unparseable", { key = k })
    elseif facts.not_after + grace <= now then
      local base = k:sub(1, -5)
      for _, ext in ipairs { ".crt", ".key", ".json" } do
        if self.storage:exists(base .. ext) then
          local ok, err = self.storage:delete(base .. ext)
          if ok then log("info", "clean_deleted", { key = base .. ext, not_after = rfc3339.iso(facts.not_after) })
          else log("error", "clean_delete_failed", { key = base .. ext, error = err }) end
        end
      end
      tick.deleted = tick.deleted + 1
      sites[dirname(k)] = true
    else
      tick.kept = tick.kept + 1
    end
  end)
  for site in pairs(sites) do
    local rest = self.storage:list(site, false)
    if rest and #rest == 0 then
      self.storage:delete(site)
      log("info", "clean_deleted", { key = site, what = "empty site folder" })
    end
  end
end

return M
