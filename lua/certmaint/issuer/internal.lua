--- The internal issuer: a local CA kept in storage, made on first use.
--
--   certmaint.issuer.internal { lifetime = "7d" }
--
-- The root and the intermediate live where Caddy's PKI app keeps its own
-- ("pki/authorities/<name>/root.crt|root.key|intermediate.crt|intermediate.key"),
-- so several instances sharing one storage share one CA. Leaves are signed by
-- the intermediate; the intermediate is replaced (signed by the same root) once
-- a third of its life is left, so it always outlives the leaves it signs.
local core = require "certmaint.core"
local options = require "certmaint.options"
local duration = require "certmaint.duration"
local rfc3339 = require "certmaint.rfc3339"

local M = {}
local Internal = {}
Internal.__index = Internal

local DAY = 86400

local function at_least_a_second(v) return v >= 1, "must be at least 1 second" end

local function one_of_key_types(v)
  local types = require("certmaint.policy").KEY_TYPES
  for _, t in ipairs(types) do if v == t then return true end end
  return false, "must be one of " .. table.concat(types, ", ") .. " (not \"" .. v .. "\")"
end

local function http_url(v)
  return v:match("^https?://[^/%s]+") ~= nil and not v:find("%s"), "must be an http:// or https:// URL"
end

-- Every option is checked here, when the policy loads (`certmaint check`
-- reports it), not at the first issuance.
local SCHEMA = {
  lifetime = { type = "duration", default = "7d", check = at_least_a_second },
  -- a folder name in storage: pki/authorities/<name>/
  name = { type = "string", default = "local",
    check = function(v) return v:match("^[%w_-][%w._-]*$") ~= nil, "must be a folder name (letters, digits, . _ -)" end },
  common_name = { type = "string", default = "certmaint Local Authority",
    check = function(v) return v ~= "", "must not be empty" end },
  root_lifetime = { type = "duration", default = "3650d", check = at_least_a_second },
  intermediate_lifetime = { type = "duration", default = "365d", check = at_least_a_second },
  key_type = { type = "string", default = "p256", check = one_of_key_types },
  ocsp_url = { type = "string", check = http_url },
  crl_url = { type = "string", check = http_url },
}

--- certmaint.issuer.internal(opts): see SCHEMA for the options.
function M.new(opts)
  local self = options.check(opts, SCHEMA, "certmaint.issuer.internal", 2)
  -- a certificate cannot outlive the one that signs it: say so now rather
  -- than cut every leaf short
  local function longer(a, b)
    if self[a] > self[b] then
      error(options.where(1) .. string.format("certmaint.issuer.internal: option \"%s\" (%s) is longer "
        .. "than %s (%s): a certificate cannot outlive the one that signs it", a, duration.format(self[a]), b,
        duration.format(self[b])), 0)
    end
  end
  longer("lifetime", "intermediate_lifetime")
  longer("intermediate_lifetime", "root_lifetime")
  self.kind = "internal"
  self.authorities = setmetatable({}, { __mode = "k" }) -- storage -> loaded CA
  return setmetatable(self, Internal)
end

function Internal:storage_key()
  return self.name
end

function Internal:describe()
  return "internal CA \"" .. self.name .. "\" (leaf lifetime " .. duration.format(self.lifetime) .. ")"
end

local function ca_keys(name)
  local base = "pki/authorities/" .. name .. "/"
  return {
    root_crt = base .. "root.crt", root_key = base .. "root.key",
    int_crt = base .. "intermediate.crt", int_key = base .. "intermediate.key",
  }
end

local function load_pair(storage, crt_key, key_key)
  local crt = storage:load(crt_key)
  local key = storage:load(key_key)
  if not crt or not key then return nil end
  local facts = core.cert_parse(crt)
  if not facts then return nil end
  return { pem = crt, key = key, facts = facts }
end

function Internal:make_root(now)
  local key, err, code = core.key_generate(self.key_type)
  if not key then return nil, err, code end
  local pem
  pem, err, code = core.cert_issue {
    subject_key = key, issuer_key = key, cn = self.common_name .. " - Root",
    not_before = now, not_after = now + self.root_lifetime, is_ca = true, path_len = 1,
  }
  if not pem then return nil, err, code end
  return { pem = pem, key = key, facts = core.cert_parse(pem) }
end

function Internal:make_intermediate(root, now)
  local key, err, code = core.key_generate(self.key_type)
  if not key then return nil, err, code end
  local not_after = math.min(now + self.intermediate_lifetime, root.facts.not_after)
  local pem
  pem, err, code = core.cert_issue {
    subject_key = key, issuer_key = root.key, issuer_cert = root.pem,
    cn = self.common_name .. " - Intermediate",
    not_before = now, not_after = not_after, is_ca = true, path_len = 0,
  }
  if not pem then return nil, err, code end
  return { pem = pem, key = key, facts = core.cert_parse(pem) }
end

local function fresh(pair, now)
  local f = pair and pair.facts
  if not f then return false end
  local life = f.not_after - f.not_before
  return now < f.not_after - life / 3
end

--- The CA in `storage`, made or refreshed under a storage lock when needed.
function Internal:authority(storage, now)
  local cached = self.authorities[storage]
  if cached and fresh(cached.intermediate, now) then return cached end
  local k = ca_keys(self.name)
  local root = load_pair(storage, k.root_crt, k.root_key)
  local int = load_pair(storage, k.int_crt, k.int_key)
  if root and fresh(int, now) then
    cached = { root = root, intermediate = int }
    self.authorities[storage] = cached
    return cached
  end

  local lock_name = "pki_authority_" .. self.name
  local ok, err, code = storage:lock(lock_name)
  if not ok then return nil, err, code end
  -- Another instance may have made it while we waited for the lock.
  root = load_pair(storage, k.root_crt, k.root_key)
  int = load_pair(storage, k.int_crt, k.int_key)
  local result
  result, err, code = (function()
    if not root or now >= root.facts.not_after then
      root, err, code = self:make_root(now)
      if not root then return nil, err, code end
      local stored, serr, scode = storage:store(k.root_key, root.key)
      if not stored then return nil, serr, scode end
      stored, serr, scode = storage:store(k.root_crt, root.pem)
      if not stored then return nil, serr, scode end
      int = nil
      core.log("info", "ca_root_created", { authority = self.name, not_after = rfc3339.iso(root.facts.not_after) })
    end
    if not fresh(int, now) then
      int, err, code = self:make_intermediate(root, now)
      if not int then return nil, err, code end
      local stored, serr, scode = storage:store(k.int_key, int.key)
      if not stored then return nil, serr, scode end
      stored, serr, scode = storage:store(k.int_crt, int.pem)
      if not stored then return nil, serr, scode end
      core.log("info", "ca_intermediate_created", { authority = self.name, not_after = rfc3339.iso(int.facts.not_after) })
    end
    return { root = root, intermediate = int }
  end)()
  storage:unlock(lock_name)
  if not result then return nil, err, code end
  self.authorities[storage] = result
  return result
end

--- The root certificate (PEM) clients should trust.
function Internal:root_pem(storage, now)
  local ca, err, code = self:authority(storage, now or core.now())
  if not ca then return nil, err, code end
  return ca.root.pem
end

--- Issue a certificate for req.csr_pem / req.names (see certmaint.issuer).
function Internal:issue(req, ctx)
  local now = ctx.now or core.now()
  local ca, err, code = self:authority(ctx.storage, now)
  if not ca then return nil, err, code end
  local csr
  csr, err, code = core.csr_parse(req.csr_pem)
  if not csr then return nil, { message = "internal issuer: bad CSR: " .. err, final = true }, code end
  local not_after = math.min(now + self.lifetime, ca.intermediate.facts.not_after)
  if not_after < now + self.lifetime then
    -- the intermediate is replaced once a third of its life is left, so a
    -- lifetime over that third is cut short near the end of each intermediate
    core.log("warn", "leaf_lifetime_clamped", { name = req.names[1], authority = self.name,
      lifetime = duration.format(self.lifetime), not_after = rfc3339.iso(not_after),
      why = "the intermediate expires at " .. rfc3339.iso(ca.intermediate.facts.not_after) })
  end
  local pem, serial
  pem, serial = core.cert_issue {
    csr = req.csr_pem, names = req.names, cn = req.names[1],
    not_before = now, not_after = not_after,
    issuer_cert = ca.intermediate.pem, issuer_key = ca.intermediate.key,
    ocsp_url = self.ocsp_url, crl_url = self.crl_url,
  }
  if not pem then return nil, "internal issuer: " .. tostring(serial), "issue" end
  return { chain_pem = pem .. ca.intermediate.pem, serial = serial }
end

M.DAY = DAY
return M
