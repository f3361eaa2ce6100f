--- ACME Renewal Information (RFC 9773) in the engine.
--
-- For a managed certificate whose issuer (the list member whose folder holds
-- it) has the optional method renewal_info(cert, ctx), the CA's suggested
-- window is fetched as background work: named jobs "ari:<name>", queued by
-- the renew pass and after start-up, never on the start-up load itself. A
-- window is kept
--   - in memory, self.ari[cache id] = { start, ["end"], explanation_url,
--     next_fetch, unique_id } (false: looked, nothing stored), and
--   - in the certificate's .json, where certmagic keeps it:
--     issuer_data.renewal_info = { suggestedWindow = { start, end },
--     explanationURL, _uniqueIdentifier, _retryAfter, _selectedTime } (acmez's
--     acme.RenewalInfo, times RFC 3339), so Caddy and a restart read it back.
-- The window becomes the cache entry's renew_at through certmaint.renewal's
-- ARI layer (core.renew_at: a point inside the window from the serial, the
-- emergency floor, the guard), so the C due-scan picks the time; a
-- needs_renewal hook gets it as cert.ari. A window in the past renews at
-- once. The next fetch is at the CA's Retry-After (clamped to [1 min, 7 d]),
-- else in 6 h; a failed fetch keeps the last window and tries again at the
-- error's retry_after, else in 1 h; "unsupported" (no renewalInfo in the
-- directory) stops asking that issuer until the policy is reloaded.
--
-- The start-up load reads no .json (it stays the C bulk path: .crt files
-- only); the stored windows are read afterwards in one load_many per batch,
-- only for certificates whose issuer has renewal_info.
local core = require "certmaint.core"
local keys = require "certmaint.keys"
local renewal = require "certmaint.renewal"
local rfc3339 = require "certmaint.rfc3339"
local issuers = require "certmaint.issuer"

local M = {}

M.ARI_DEFAULT_REFRESH = 6 * 3600 -- no Retry-After: ask again in 6 h (RFC 9773 section 4.3)
M.ARI_MIN_REFRESH = 60
M.ARI_MAX_REFRESH = 7 * 86400
M.ARI_ERROR_RETRY = 3600
local BATCH = 2048

local function log(level, event, fields) core.log(level, event, fields or {}) end

local function clamp(v, lo, hi) return math.max(lo, math.min(hi, v)) end

local function number(v) return type(v) == "number" and v == v and v > -math.huge and v < math.huge end

--- The issuer that answers renewal_info for e's certificate, or nil.
function M:ari_member(e)
  local iss = self:issuer_for(e.issuer_key or self.issuer_key)
  if iss and issuers.has(iss, "renewal_info") and not self.ari_unsupported[iss] then return iss end
  return nil
end

--- Is any window kept (status then decides renewal_due in Lua, with it)?
function M:ari_any()
  for _, rec in pairs(self.ari) do if rec then return true end end
  return false
end

--- Does any configured issuer have renewal_info? (Nothing here runs otherwise.)
function M:ari_enabled()
  for _, m in ipairs(self.issuers) do
    if issuers.has(m, "renewal_info") and not self.ari_unsupported[m] then return true end
  end
  return false
end

--- cert (a cache:get table, or cert_parse facts) with cert.ari set from the
-- window kept for it, when there is one. Returns cert.
function M:with_ari(cert)
  if cert.ari == nil then
    local rec = self.ari[cert.id or cert.hash]
    if rec then
      cert.ari = { start = rec.start, ["end"] = rec["end"], explanation_url = rec.explanation_url,
        retry_after = rec.next_fetch }
    end
  end
  return cert
end

-- A renewal_info answer as a record, or nil, why.
local function record_of(info, now)
  if type(info) ~= "table" then return nil, "renewal_info returned " .. type(info) .. ", not a table" end
  local s, e = info.start, info["end"]
  if not number(s) or not number(e) then return nil, "renewal_info gave no window (start and end must be Unix times)" end
  if e < s then return nil, "renewal_info gave a window that ends before it starts" end
  local next_fetch = number(info.retry_after) and info.retry_after or (now + M.ARI_DEFAULT_REFRESH)
  return {
    start = s, ["end"] = e, next_fetch = clamp(next_fetch, now + M.ARI_MIN_REFRESH, now + M.ARI_MAX_REFRESH),
    explanation_url = type(info.explanation_url) == "string" and info.explanation_url or nil,
  }
end

-- The record in a stored .json (issuer_data.renewal_info), or nil.
local function record_from_meta(raw)
  local m = raw and core.json_decode(raw)
  local ri = type(m) == "table" and type(m.issuer_data) == "table" and m.issuer_data.renewal_info
  if type(ri) ~= "table" or type(ri.suggestedWindow) ~= "table" then return nil end
  local s, e = rfc3339.parse(ri.suggestedWindow.start), rfc3339.parse(ri.suggestedWindow["end"])
  if not s or not e or e < s then return nil end
  return { start = s, ["end"] = e, next_fetch = rfc3339.parse(ri._retryAfter) or 0,
    explanation_url = type(ri.explanationURL) == "string" and ri.explanationURL or nil,
    unique_id = type(ri._uniqueIdentifier) == "string" and ri._uniqueIdentifier or nil }
end

--- The record as certmagic/acmez store it (issuer_data.renewal_info).
function M.renewal_info_json(rec, serial)
  local selected = core.ari_point({ start = rec.start, ["end"] = rec["end"] }, serial) or rec.start
  return {
    suggestedWindow = { start = rfc3339.iso(rec.start), ["end"] = rfc3339.iso(rec["end"]) },
    explanationURL = rec.explanation_url, _uniqueIdentifier = rec.unique_id,
    _retryAfter = rfc3339.iso(rec.next_fetch), _selectedTime = rfc3339.iso(selected),
  }
end

--- Put e's window into its cache entry's renew_at (the ARI layer decides
-- with it). Returns the new renew_at.
function M:ari_apply(e)
  local id = e.id
  if not id then return nil end
  local cert = self.cache:get(id, { pem = false })
  if not cert then return nil end
  self:with_ari(cert)
  if cert.ari == nil then return cert.renew_at end
  local at
  if self.policy.needs_renewal then
    at = self:renewal_time(cert)
  else
    at = renewal.renew_at(cert, self.renewal_opts)
  end
  self.cache:set(id, { renew_at = at })
  local rec = self.ari[id]
  if rec then rec.applied = true end
  return at
end

-- Read the windows stored in the .json of the certificates that have none
-- in memory yet (those whose issuer has renewal_info), in bulk.
function M:ari_load_stored(list)
  for first = 1, #list, BATCH do
    local wanted, by_key = {}, {}
    for i = first, math.min(first + BATCH - 1, #list) do
      local e = list[i]
      local k = self:paths(e.primary).meta
      wanted[#wanted + 1], by_key[k] = k, e
    end
    local found = self.storage:load_many(wanted)
    for k, e in pairs(by_key) do
      local rec = record_from_meta(found[k])
      if e.id and self.ari[e.id] == nil then self.ari[e.id] = rec or false end
    end
  end
end

--- Bring every ARI-capable certificate's window up to date: stored windows
-- read and applied, fetch jobs queued for those whose next fetch has come,
-- and waited for (through `collector`, or one of its own). Returns the
-- entries whose window makes them due at `now` (the caller queues them).
function M:ari_refresh(now, collector, opts)
  if not self:ari_enabled() then return {} end
  local fetch = not (opts and opts.fetch == false)
  if opts and opts.reapply then
    -- the cache's renew_at were computed anew (a load): every window applies again
    for _, rec in pairs(self.ari) do if rec then rec.applied = nil end end
  end
  local capable, unread = {}, {}
  local member_of = {} -- folder -> the member answering ARI for it, or false
  for _, p in ipairs(self.order) do
    local e = self.entries[p]
    local folder = e.issuer_key or self.issuer_key
    local m = member_of[folder]
    if m == nil then
      m = self:ari_member(e) or false
      member_of[folder] = m
    end
    if e.id and m then
      capable[#capable + 1] = e
      if self.ari[e.id] == nil then unread[#unread + 1] = e end
    end
  end
  if #unread > 0 then self:ari_load_stored(unread) end
  local opened = collector or self:open_collector({})
  for _, e in ipairs(capable) do
    local rec = self.ari[e.id]
    if rec and not rec.applied then self:ari_apply(e) end
    local next_fetch = rec and rec.next_fetch or self.ari_retry[e.id] or 0
    if fetch and next_fetch <= now then self:submit_ari(e, opened) end
  end
  self:finish_collector(opened)
  local due = {}
  for _, e in ipairs(capable) do
    if e.id and self.ari[e.id] then
      local at = select(5, self.cache:facts(e.id))
      if at and at <= now then due[#due + 1] = e end
    end
  end
  return due
end

--- Queue the fetch of e's window (job "ari:<name>"); false when queued already.
function M:submit_ari(e, collector)
  if self.stopping then return false end
  local job = "ari:" .. e.primary
  local queued = self.jobs:submit(job, function()
    local ok, err = pcall(self.ari_fetch, self, e)
    if not ok then log("error", "ari_failed", { name = e.primary, error = err }) end
    self:collect(job, "ari")
    return true -- its own schedule (next_fetch), never the job queue's back-off
  end)
  if queued and collector then
    collector.waiting[job] = true
    collector.outstanding = collector.outstanding + 1
    collector.total = (collector.total or 0) + 1
  end
  return queued
end

-- Store rec in e's .json, under e's lock, if the stored set is still the
-- certificate rec is for (a renewal meanwhile wrote a new set: leave it).
function M:ari_store(e, id, rec)
  local lock, err = self:take_lock(keys.lock_name(e.primary))
  if not lock then return nil, err end
  local ok, res, serr = pcall(function()
    local set = self:paths(e.primary)
    local crt = self.storage:load(set.crt)
    local facts = crt and core.cert_parse(crt)
    if not facts or facts.hash ~= id then return nil, "the stored certificate changed" end
    local raw = self.storage:load(set.meta)
    local m = raw and core.json_decode(raw)
    if type(m) ~= "table" then m = { sans = e.names } end
    if type(m.issuer_data) ~= "table" then m.issuer_data = {} end
    m.issuer_data.renewal_info = M.renewal_info_json(rec, facts.serial)
    return self.storage:store(set.meta, core.json_encode(m, { pretty = true }))
  end)
  self:release_lock(lock)
  if not ok then return nil, res end
  return res, serr
end

--- The lock name of e's ARI fetch: one instance asks the CA at a time.
function M.ari_lock_name(primary) return "ari_" .. keys.name_key(primary) end

--- Ask e's issuer for its certificate's window (a loop task: may wait on
-- HTTP). Instances sharing the storage take turns (try_lock): while another
-- one is at it this one skips, and reads the window it stored at the next
-- pass; the one that gets the lock reads storage first, and asks the CA only
-- when no other instance stored a window still current meanwhile.
function M:ari_fetch(e)
  local iss = self:ari_member(e)
  local id = e.id
  if not iss or not id then return end
  local lock = self:try_take_lock(M.ari_lock_name(e.primary), "ari_fetch", { fence = false })
  if not lock then
    -- another instance is asking (or the lock cannot be had): its window is read
    -- from storage at the next pass, a fetch of ours only if it stored none
    local old = self.ari[id]
    self.ari[id] = nil
    if not old then self.ari_retry[id] = core.now() + M.ARI_MIN_REFRESH end
    return
  end
  local ok, err = pcall(function()
    local now = core.now()
    local rec = record_from_meta(self.storage:load(self:paths(e.primary).meta))
    local old = self.ari[id]
    if rec and rec.next_fetch > now and (not old or rec.next_fetch > old.next_fetch) and e.id == id then
      -- fetched and stored by another instance meanwhile
      self.ari[id], self.ari_retry[id] = rec, nil
      self:ari_apply(e)
      log("debug", "ari_from_storage", { name = e.primary, start = rfc3339.iso(rec.start),
        ["end"] = rfc3339.iso(rec["end"]), next_fetch = rfc3339.iso(rec.next_fetch) })
      return
    end
    self:ari_fetch_locked(e, iss, id)
  end)
  self:release_lock(lock)
  if not ok then error(err, 0) end
end

-- ari_fetch's work, under the ARI lock of e.
function M:ari_fetch_locked(e, iss, id)
  local cert = self.cache:get(id)
  if not cert then return end
  local now = core.now()
  local info, err, code = iss:renewal_info(cert, { storage = self.storage, now = now })
  if e.id ~= id then return end -- renewed while we asked: that window is for the old one
  local old = self.ari[id] or nil
  if not info then
    if code == "unsupported" then
      self.ari_unsupported[iss] = true
      log("info", "ari_unsupported", { issuer = issuers.describe(iss), why = type(err) == "table" and err.message or err })
      return
    end
    local t = type(err) == "table" and number(err.retry_after) and err.retry_after or (now + M.ARI_ERROR_RETRY)
    local next_fetch = clamp(t, now + M.ARI_MIN_REFRESH, now + M.ARI_MAX_REFRESH)
    -- the last window stays in force; only the next fetch moves
    if old then old.next_fetch = next_fetch else self.ari[id] = false; self.ari_retry[id] = next_fetch end
    log("warn", "ari_fetch_failed", { name = e.primary, issuer = issuers.describe(iss), code = code,
      error = type(err) == "table" and err.message or tostring(err), next_fetch = rfc3339.iso(next_fetch) })
    return
  end
  local rec, why = record_of(info, now)
  if not rec then
    local next_fetch = now + M.ARI_ERROR_RETRY
    if old then old.next_fetch = next_fetch else self.ari[id] = false; self.ari_retry[id] = next_fetch end
    log("warn", "ari_fetch_failed", { name = e.primary, issuer = issuers.describe(iss), error = why,
      next_fetch = rfc3339.iso(next_fetch) })
    return
  end
  rec.unique_id = core.ari_cert_id and core.ari_cert_id(cert.pem) or nil
  self.ari[id] = rec
  self.ari_retry[id] = nil
  local changed = not old or old.start ~= rec.start or old["end"] ~= rec["end"]
  local stored, serr = self:ari_store(e, id, rec)
  if not stored then log("warn", "ari_store_failed", { name = e.primary, error = serr }) end
  local at = self:ari_apply(e)
  log(changed and old and "warn" or "info", changed and "ari_window" or "ari_refreshed", {
    name = e.primary, start = rfc3339.iso(rec.start), ["end"] = rfc3339.iso(rec["end"]),
    renew_at = at and at ~= math.huge and rfc3339.iso(at) or nil, next_fetch = rfc3339.iso(rec.next_fetch),
    explanation_url = rec.explanation_url, previous_start = changed and old and rfc3339.iso(old.start) or nil })
end

return M
