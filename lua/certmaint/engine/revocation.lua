--- Revocation (DESIGN "OCSP and revocation"; issue 9 items 3 and 4).
--
-- Engine:handle_revoked(id, info) is the one way a revoked certificate is
-- dealt with, whoever found it: the OCSP pass (source "ocsp"), the CRL pass
-- ("crl") or `certmaint revoke` ("cli"). The policy's on_revoked(cert, info)
-- decides:
--   "renew"  (default for managed certificates) obtain a replacement now; if
--            that attempt fails the certificate leaves the cache (error
--            `revoked_removed`): a revoked certificate is never served. The
--            renew pass keeps trying to obtain one.
--   "remove" out of the cache at once (error `revoked_removed`); a managed
--            name is then one without a certificate, which the renew pass
--            obtains (never by reloading the revoked copy).
--   "keep"   (default for unmanaged ones) logged at warn level.
-- A revocation for keyCompromise moves the stored key aside (below) before
-- anything else, so no renewal, restart or other instance can reuse it.
--
-- Compromised keys are kept at certmaint/compromised/<namekey>/<serial>.key
-- (0600: every *.key is): in certmaint's own folder, where no certificate
-- loader (ours, Caddy's) looks for a key of a certificate set, and where
-- reuse_key looks to refuse a key that was compromised.
local core = require "certmaint.core"
local keys = require "certmaint.keys"
local rfc3339 = require "certmaint.rfc3339"

local M = {}

local function log(level, event, fields) core.log(level, event, fields or {}) end

M.COMPROMISED_PREFIX = "certmaint/compromised"
M.DECISIONS = { renew = true, remove = true, keep = true }

--- The storage folder of name's compromised keys.
function M.compromised_folder(name)
  return M.COMPROMISED_PREFIX .. "/" .. keys.name_key(name)
end

--- Where the compromised key of name's certificate `serial` is set aside.
function M.compromised_key(name, serial)
  if type(serial) ~= "string" or not serial:match("^%x+$") then
    error("compromised_key: serial must be hex, got " .. tostring(serial), 2)
  end
  return M.compromised_folder(name) .. "/" .. serial:lower() .. ".key"
end

--- Is a revocation reason keyCompromise (by name or RFC 5280 number)?
function M.is_key_compromise(reason)
  return reason == "keyCompromise" or reason == 1
end

--- Has `key_pem` been set aside as compromised for e? (reuse_key asks.)
function M:key_compromised(e, key_pem)
  local list = self.storage:list(M.compromised_folder(e.primary), false)
  for _, k in ipairs(list or {}) do
    if self.storage:load(k) == key_pem then return true end
  end
  return false
end

--- Move e's stored key aside when it is the key of `cert` (a replacement
-- stored meanwhile has a key of its own), under the name's storage lock, as
-- one commit. Returns true | nil, err, code.
function M:set_aside_key(e, cert)
  local lock, err, code = self:take_lock(keys.lock_name(e.primary))
  if not lock then return nil, err, code end
  local ran, ok, merr, mcode = pcall(function()
    local set = self:paths(e.primary)
    local key_pem = self.storage:load(set.key)
    if not key_pem or not core.key_matches(cert.pem, key_pem) then return true end
    local aside = M.compromised_key(e.primary, cert.serial)
    local cok, cerr, ccode = self.storage:commit { put = { [aside] = key_pem }, delete = { set.key }, fence = lock }
    if not cok then
      if ccode == "fenced" then self:log_fenced(lock, cerr, { name = e.primary }) end
      return nil, cerr, ccode
    end
    log("warn", "key_set_aside", { name = e.primary, serial = cert.serial, key = aside,
      why = "revoked for keyCompromise: never reused" })
    return true
  end)
  self:release_lock(lock)
  if not ran then return nil, tostring(ok), "error" end
  return ok, merr, mcode
end

-- The policy's decision for cert (on_revoked), or the default. A hook that
-- fails or answers something else does not decide (logged, counted).
function M:revocation_decision(cert, info, default)
  local hook = self.policy.on_revoked
  if not hook then return default end
  local ok, d = self.hooks:decide("on_revoked", hook, cert, info)
  if not ok then return default end
  if type(d) ~= "string" or not M.DECISIONS[d] then
    self.hooks:failed("on_revoked", "on_revoked returned " .. (type(d) == "string" and string.format("%q", d) or
      (d == nil and "nil" or ("a " .. type(d)))) .. ', not "renew", "remove" or "keep"', "type")
    return default
  end
  return d
end

--- Take certificate id out of the cache (never serve it again); entry e
-- (managed) then has none, and the renew pass keeps obtaining one.
function M:remove_revoked(id, e, why)
  local cert = self.cache:get(id, { pem = false })
  self.cache:remove(id)
  self.by_id[id] = nil
  self.ari[id], self.ari_retry[id] = nil, nil
  if e and e.id == id then
    e.id = nil
    if self.entries[e.primary] == e then self.uncached[e.primary] = true end
  end
  log("error", "revoked_removed", { name = cert and cert.names[1] or (e and e.primary) or id,
    serial = cert and cert.serial, why = why })
end

--- handle_revoked(id, info [, collector]) -> decision | nil, err.
-- info = { status = "revoked", revoked_at =, reason = "keyCompromise" | ... | nil,
-- source = "ocsp" | "crl" | "cli" }. A certificate already being handled
-- is not handled again (the decision taken is returned). With "renew" the
-- replacement is a job ("renew:<name>", reason "revoked") whose first
-- attempt `collector` waits for.
function M:handle_revoked(id, info, collector)
  if type(info) ~= "table" then error("handle_revoked: info must be a table", 2) end
  self.revoking = self.revoking or {}
  local taken = self.revoking[id]
  if taken then return taken end
  local cert = self.cache:get(id)
  if not cert then return nil, "no certificate " .. tostring(id) .. " in the cache" end
  local e = self.by_id[id]
  if e and self.entries[e.primary] ~= e then e = nil end
  local managed = e ~= nil and cert.managed
  local name = cert.names[1] or id
  local decision = self:revocation_decision(cert, info, managed and "renew" or "keep")
  if decision == "renew" and not managed then
    log("error", "revoked_not_renewable", { name = name, serial = cert.serial,
      why = "certmaint does not manage this certificate; it is kept, revoked (decide \"remove\" to stop serving it)" })
    decision = "keep"
  end
  local compromised = M.is_key_compromise(info.reason)
  -- found revoked: warn (the replacement or removal says the rest); the
  -- operator's own `certmaint revoke`: info
  log(info.source == "cli" and "info" or "warn", "revoked", { name = name, serial = cert.serial,
    source = info.source, reason = info.reason, revoked_at = info.revoked_at and rfc3339.iso(info.revoked_at) or nil,
    decision = decision })
  if compromised and e then
    e.key_compromised = true -- this entry's next key is a fresh one, whatever reuse_key says
    local ok, err, code = self:set_aside_key(e, cert)
    if not ok then
      log("error", "key_set_aside_failed", { name = e.primary, error = err, code = code,
        action = "the replacement gets a fresh key all the same" })
    end
  end
  if decision == "keep" then return decision end
  -- storage's copy of this certificate is never loaded again for e (a
  -- renewal takes another one or obtains)
  if e then e.revoked = { hash = id, serial = cert.serial } end
  if decision == "remove" then
    self:remove_revoked(id, e, "on_revoked decided \"remove\"")
    return decision
  end
  self.revoking[id] = decision
  -- now, even when a failing renewal waits for its retry time
  local st = self.jobs:status("renew:" .. e.primary)
  if st and st.state == "waiting" then self.jobs:cancel("renew:" .. e.primary) end
  if not self:submit(e, "revoked", collector) then
    st = self.jobs:status("renew:" .. e.primary)
    if not (st and (st.state == "queued" or st.state == "running")) then
      -- nothing can replace it now (stopping): not served all the same
      self.revoking[id] = nil
      self:remove_revoked(id, e, "no replacement could be started")
    end
  end
  return decision
end

--- A renewal job of e ended (renew.lua): a revoked certificate that was not
-- replaced leaves the cache; a replaced one is forgotten.
function M:revoked_job_done(e, replaced, err)
  local r = e.revoked
  if not r then return end
  self.revoking = self.revoking or {}
  if replaced then
    e.revoked = nil
    self.revoking[r.hash] = nil
    e.key_compromised = nil
  elseif e.id == r.hash then
    self.revoking[r.hash] = nil
    self:remove_revoked(r.hash, e, "obtaining a replacement failed: " .. tostring(err))
  end
end

return M
