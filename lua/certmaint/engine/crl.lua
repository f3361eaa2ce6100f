--- CRL checks: the fallback for certificates that name CRL distribution
-- points and no OCSP responder (every Let's Encrypt certificate since 2025).
-- Run after each OCSP pass (engine/ocsp.lua calls crl_pass).
--
-- The C scan cache:crl_due(now) names them. They are grouped by CRL URL and
-- issuer name, so a CRL is fetched and verified once for all the
-- certificates naming it. Per group, the first CRL that verifies against the issuer and
-- is not stale (core.crl_parse with now and ocsp.skew):
--   1. the parsed CRL kept in memory from an earlier pass, until nextUpdate;
--   2. the copy in storage (keys.crl(url), shared by every instance);
--   3. the CRL server (self.responder:crl(url): size limit ocsp.max_crl_size,
--      timeout), stored as downloaded (log crl_updated).
-- Then each certificate's serial is looked up; a listed one goes to
-- handle_revoked with source "crl". A CRL that cannot be had is one
-- error line per URL per pass (crl_failed), and nothing is revoked by it.
-- The clean pass deletes stored CRLs past their nextUpdate (clean_crls).
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local keys = require "certmaint.keys"
local rfc3339 = require "certmaint.rfc3339"

local M = {}

local function log(level, event, fields) core.log(level, event, fields or {}) end

-- The issuer's certificate of a chain PEM (its second certificate), or nil.
local issuer_of = require("certmaint.engine.ocsp").issuer_pem_of

-- The URL of a certificate's CRL: its first http(s) distribution point
-- (ldap: and other schemes are not fetched).
local function crl_url_of(cert)
  for _, u in ipairs(cert.crl_urls or {}) do
    if u:match("^[Hh][Tt][Tt][Pp][Ss]?://") then return u end
  end
  return nil
end

-- The pass's settings from the policy's ocsp record.
local function settings(policy)
  local o = policy.ocsp or {}
  return { enabled = o.enabled ~= false and o.crl_checks ~= false, skew = o.skew or 300,
    concurrency = o.concurrency or 16 }
end

--- The lock name of the fetch of the CRL stored at key.
function M.crl_lock_name(key) return "crl_" .. key:gsub("^.*/", "") end

-- The CRL stored at key for group g, parsed, when usable at now | nil.
function M:stored_crl(key, g, now, skew)
  local stored = self.storage:load(key)
  if not stored then return nil end
  local crl = core.crl_parse(stored, g.issuer_pem, now, skew)
  if crl and not crl:info().next_update then return nil end -- no end given: ask the server again
  return crl
end

--- The CRL of group g ({ url, issuer_pem, issuer_hash }, crl_groups) at now: the parsed
-- CRL | nil, err, code. Records in tick what it took.
function M:crl_for(g, now, skew, tick)
  self.crls = self.crls or {} -- url .. " " .. issuer hash -> { crl =, next_update = }
  local mkey = g.url .. " " .. g.issuer_hash
  local held = self.crls[mkey]
  if held and held.next_update and held.next_update > now then return held.crl end
  self.crls[mkey] = nil
  local key = keys.crl(g.url)
  local crl = self:stored_crl(key, g, now, skew)
  local err, code
  if not crl then
    -- one instance at a time asks the CRL server (try_lock); another one busy
    -- with it stores what it gets, and this one reads that at its next pass
    local lock, lerr = self:try_take_lock(M.crl_lock_name(key), "crl_fetch")
    if not lock then
      tick.crl_skipped = (tick.crl_skipped or 0) + 1
      return nil, "another instance is fetching this CRL" .. (lerr and (" (" .. tostring(lerr) .. ")") or ""), "skipped"
    end
    local ok, perr = pcall(function()
      crl = self:stored_crl(key, g, now, skew) -- the last holder may just have stored it
      if crl then return end
      local der
      der, err, code = self.responder:crl(g.url)
      if not der then return end
      crl, err, code = core.crl_parse(der, g.issuer_pem, now, skew)
      if not crl then return end
      tick.crl_fetched = tick.crl_fetched + 1
      local info = crl:info()
      local sok, serr, scode = self.storage:store(key, der)
      if not sok then log("error", "crl_store_failed", { url = g.url, key = key, error = serr, code = scode }) end
      log("info", "crl_updated", { url = g.url, entries = info.count, number = info.number,
        this_update = rfc3339.iso(info.this_update),
        next_update = info.next_update and rfc3339.iso(info.next_update) or nil })
    end)
    self:release_lock(lock)
    if not ok then error(perr, 0) end
    if not crl then return nil, err, code end
  end
  local next_update = crl:info().next_update
  if next_update then self.crls[mkey] = { crl = crl, next_update = next_update } end
  return crl
end

-- Check one group's certificates against its CRL; listed ones are put in
-- revoked (id -> info).
function M:check_crl_group(g, now, cfg, tick, revoked)
  local crl, err, code = self:crl_for(g, now, cfg.skew, tick)
  if not crl and code == "skipped" then return end -- another instance fetches it (logged at debug level)
  if not crl then
    tick.crl_failed = tick.crl_failed + 1
    log("error", "crl_failed", { url = g.url, error = tostring(err), code = code, certificates = #g.ids,
      action = "nothing revoked by it; tried again next pass" })
    return
  end
  for i, id in ipairs(g.ids) do
    tick.crl_checked = tick.crl_checked + 1
    local entry = crl:lookup(g.serials[i])
    if entry then
      revoked[id] = { status = "revoked", revoked_at = entry.revoked_at, reason = entry.reason, source = "crl" }
      log("info", "crl_listed", { name = g.names[i], serial = g.serials[i], url = g.url,
        reason = entry.reason, revoked_at = entry.revoked_at and rfc3339.iso(entry.revoked_at) or nil })
    end
  end
end

--- The certificates due a CRL check, grouped by CRL URL and issuer name: a
-- list of { url, issuer, issuer_pem, issuer_hash, ids = {}, serials = {},
-- names = {} }. Only the first certificate of a group has its chain copied
-- out of the cache (for the issuer's certificate): serials are unique per
-- issuer name (RFC 5280), and 100k certificates naming one CRL cost 100k
-- facts, not 100k PEM chains.
function M:crl_groups(now)
  local groups, by_key = {}, {}
  for _, id in ipairs(self.cache:crl_due(now)) do
    local cert = self.cache:get(id, { pem = false })
    local url = cert and crl_url_of(cert)
    local name = cert and (cert.names[1] or id)
    if cert and not url then
      log("debug", "crl_skipped", { name = name, why = "no http(s) CRL distribution point" })
    elseif cert then
      local gk = url .. "\0" .. tostring(cert.issuer)
      local g = by_key[gk]
      if g == nil then
        local full = self.cache:get(id)
        local issuer_pem = full and issuer_of(full.pem)
        if not issuer_pem then
          log("error", "crl_failed", { name = name, url = url,
            error = "the chain holds no issuer certificate to verify a CRL with", code = "chain" })
          g = false -- (the next certificate of this issuer may carry it: asked again)
        else
          g = { url = url, issuer = cert.issuer, issuer_pem = issuer_pem, issuer_hash = keys.fast_hash(issuer_pem),
            ids = {}, serials = {}, names = {} }
          by_key[gk] = g
          groups[#groups + 1] = g
        end
      end
      if g then
        local n = #g.ids + 1
        g.ids[n], g.serials[n], g.names[n] = id, cert.serial, name
      end
    end
  end
  return groups
end

--- The CRL pass, at now (inside a loop task). Adds crl_checked (certificates
-- looked up), crl_fetched (CRLs downloaded), crl_failed (URLs that failed)
-- and crl_revoked (listed, handed to handle_revoked; also counted in the
-- OCSP tick's revoked) to tick. Returns tick.
function M:crl_pass(now, tick)
  now = now or core.now()
  tick = tick or {}
  tick.crl_checked, tick.crl_fetched, tick.crl_failed, tick.crl_revoked = 0, 0, 0, 0
  local cfg = settings(self.policy)
  if not cfg.enabled or not self.cache.crl_due then return tick end
  local groups = self:crl_groups(now)
  local used = {}
  for _, g in ipairs(groups) do used[g.url .. " " .. g.issuer_hash] = true end
  for k in pairs(self.crls or {}) do
    if not used[k] then self.crls[k] = nil end -- no certificate names it any more
  end
  local revoked = {}
  -- groups fetched at once, bounded like the OCSP fetches
  local next_i, running, done = 1, 0, loop.cond()
  local function worker()
    while next_i <= #groups and not self.stopping do
      local g = groups[next_i]
      next_i = next_i + 1
      local ok, err = pcall(self.check_crl_group, self, g, now, cfg, tick, revoked)
      if not ok then
        tick.crl_failed = tick.crl_failed + 1
        log("error", "crl_failed", { url = g.url, error = tostring(err) })
      end
    end
    running = running - 1
    done:notify_all()
  end
  for _ = 1, math.min(cfg.concurrency, #groups) do
    running = running + 1
    loop.spawn_named("crl", worker)
  end
  while running > 0 do done:wait() end
  if next(revoked) then
    local jobs_tick = {}
    local collector = self.open_collector and self:open_collector(jobs_tick)
    for _, g in ipairs(groups) do -- in scan order: the log reads the same each run
      for _, id in ipairs(g.ids) do
        if revoked[id] then
          tick.crl_revoked = tick.crl_revoked + 1
          if tick.revoked then tick.revoked = tick.revoked + 1 end -- the pass's total (once's summary)
          self:handle_revoked(id, revoked[id], collector)
        end
      end
    end
    if collector then self:finish_collector(collector) end
  end
  return tick
end

--- Clean pass: stored CRLs that cannot be read as one, or whose nextUpdate
-- has passed (none given counts as passed), are deleted.
function M:clean_crls(now, tick)
  local list = self.storage:list(keys.CRL_PREFIX, true) or {}
  for _, k in ipairs(list) do
    local der, lerr, lcode = self.storage:load(k)
    local why
    if der then
      local info, err = core.crl_peek(der)
      if not info then why = "unparseable: " .. tostring(err)
      elseif not info.next_update or info.next_update <= now then
        why = "stale: next update " .. (info.next_update and rfc3339.iso(info.next_update) or "not given")
      end
    elseif lcode ~= "ENOENT" then
      why = "cannot be read: " .. tostring(lerr)
    end
    if why then self:clean_delete(k, "CRL", why, tick, "crls_deleted") end
  end
end

return M
