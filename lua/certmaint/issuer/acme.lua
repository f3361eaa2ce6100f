--- certmaint.issuer.acme: certificates from an ACME CA (RFC 8555): Let's
-- Encrypt, ZeroSSL, Google Trust Services, step-ca, Pebble.
--
--   issuer = certmaint.issuer.acme {
--     directory = "https://acme-v02.api.letsencrypt.org/directory",
--     email = "ops@example.com",
--     challenges = { http01 = { listen = "0.0.0.0:80" } },
--   }
--
-- Options are checked when the policy loads (SCHEMA; `certmaint check`
-- reports them with the policy's file:line). The protocol runs in loop tasks
-- (certmaint.acme.client/account/order); many orders proceed at once on one
-- loop, sharing one directory, one nonce pool, one account and libcurl's
-- connection cache. Certificates are stored under the CA's key
-- ("127.0.0.1-14000-dir"), as Caddy stores them.
--
-- issue(req, ctx) also takes req.replaces (ARI cert ID: sent as `replaces`,
-- dropped and retried at once when the CA refuses it), req.profile and
-- req.preferred_chain (over the options of the same names).
-- renewal_info(cert, ctx) -> { start, ["end"], explanation_url, retry_after }
-- | nil, "unsupported", "unsupported" when the directory has no renewalInfo.
-- revoke(cert, ctx): ctx.reason (RFC 5280 code), signed by the account, or
-- with ctx.key_pem by the certificate's own key.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local options = require "certmaint.options"
local keys = require "certmaint.keys"
local rfc3339 = require "certmaint.rfc3339"
local client_mod = require "certmaint.acme.client"
local account = require "certmaint.acme.account"
local order = require "certmaint.acme.order"
local challenges = require "certmaint.acme.challenges"

local M = {}
local Acme = {}
Acme.__index = Acme
Acme.__name = "certmaint.issuer.acme"

local WHAT = "certmaint.issuer.acme"

local function url_check(v)
  return v:match("^https?://[^/%s]+") ~= nil and not v:find("%s"), "must be an https:// (or http://) URL"
end

local function positive(v) return v > 0, "must be more than 0 seconds" end

local function readable_file(v)
  local f, err = io.open(v, "r")
  if not f then return false, "names a file that cannot be read (" .. tostring(err) .. ")" end
  f:close()
  return true
end

local function eab_check(v)
  if type(v.kid) ~= "string" or v.kid == "" then return false, "needs kid = \"<key identifier>\" (a string)" end
  if type(v.hmac_key) ~= "string" or not v.hmac_key:match("^[%w_%-]+=*$") then
    return false, "needs hmac_key = \"<base64url MAC key>\" as the CA gives it"
  end
  for k in pairs(v) do
    if k ~= "kid" and k ~= "hmac_key" then return false, "has an unknown field " .. tostring(k) .. " (known: hmac_key, kid)" end
  end
  return true
end

local SCHEMA = {
  directory = { type = "string", required = true, check = url_check },
  email = { type = "string",
    check = function(v) return v == "" or v:match("^[^@%s]+@[^@%s]+$") ~= nil, "must be an e-mail address" end },
  ca_bundle = { type = "string", check = readable_file },
  challenges = { type = "table", required = true },
  eab = { type = "table", check = eab_check },
  preferred_chain = { type = "string" },
  profile = { type = "string", check = function(v) return v ~= "", "must not be empty" end },
  timeout = { type = "duration", default = 30, check = positive },
  connect_timeout = { type = "duration", default = 10, check = positive },
  max_response_bytes = { type = "number", default = 1048576,
    check = function(v) return math.tointeger(v) ~= nil and v >= 4096, "must be an integer of at least 4096" end },
  poll_timeout = { type = "duration", default = order.POLL_TIMEOUT, check = positive },
  max_poll_interval = { type = "duration", default = order.MAX_POLL_INTERVAL, check = positive },
}
M.SCHEMA = SCHEMA

-- One client a directory (and trust) per process: issuers of several
-- policies share its directory, nonce pool and connections.
local clients = {}

function M.new(opts)
  local o = options.check(opts, SCHEMA, WHAT, 2)
  o.checked_challenges = challenges.check(o.challenges, WHAT, 2)
  o.issuer_key = keys.issuer_key(o.directory)
  o.kind = "acme"
  o.accounts = setmetatable({}, { __mode = "k" }) -- storage -> account
  o.pending = setmetatable({}, { __mode = "k" })  -- storage -> cond while an account is fetched
  o.solver_sets = setmetatable({}, { __mode = "k" })
  return setmetatable(o, Acme)
end

function Acme:storage_key() return self.issuer_key end

function Acme:describe() return "ACME " .. self.directory end

function Acme:client()
  local ck = self.directory .. "\0" .. (self.ca_bundle or "")
  local c = clients[ck]
  if not c then
    c = client_mod.new { directory = self.directory, ca_file = self.ca_bundle, timeout = self.timeout,
      connect_timeout = self.connect_timeout, max_bytes = math.tointeger(self.max_response_bytes) }
    clients[ck] = c
  end
  return c
end

--- The account for storage, fetched or made once even when many orders ask at once.
function Acme:account(storage, stale)
  local a = self.accounts[storage]
  if a then return a end
  local waiting = self.pending[storage]
  if waiting then
    waiting:wait(self.timeout * 4)
    a = self.accounts[storage]
    if a then return a end
  end
  local cond = loop.cond()
  self.pending[storage] = cond
  local ok, res, err, code = pcall(account.get, self:client(), storage,
    { email = self.email, eab = self.eab, stale = stale })
  self.pending[storage] = nil
  cond:notify_all()
  if not ok then error(res, 0) end
  if res then self.accounts[storage] = res end
  return res, err, code
end

function Acme:solvers(ctx)
  local set = self.solver_sets[ctx.storage]
  if not set then
    set = challenges.build(self.checked_challenges, { storage = ctx.storage, issuer_key = self.issuer_key,
      log = core.log, hooks = ctx.hooks })
    self.solver_sets[ctx.storage] = set
  end
  return set
end

--- Start what runs while the daemon does (the engine calls it at start-up and
-- after SIGHUP): http-01 standby listeners (http01 = { standby = true }).
function Acme:start(ctx)
  for _, e in ipairs(self:solvers(ctx)) do
    if e.solver.start then
      local ok, err, code = e.solver:start()
      if not ok then return nil, err, code end
    end
  end
  return true
end

function Acme:session(ctx, acct)
  return { client = self:client(), account = acct, solvers = self:solvers(ctx), storage = ctx.storage,
    issuer_key = self.issuer_key, poll_timeout = self.poll_timeout, max_poll_interval = self.max_poll_interval,
    before_order = ctx.before_order } -- the engine's order budget, asked before each newOrder
end

--- Obtain a certificate (see certmaint.issuer): req.names, req.csr_pem and
-- req.key_pem (the CSR's key: stored with the order before finalize so that
-- a resumer can finish it). The answer's key_pem is the key the certificate
-- is for (another attempt's, for an order resumed after finalize), and its
-- commit_deletes the order's state, to delete in the commit that stores it.
function Acme:issue(req, ctx)
  local acct, err, code = self:account(ctx.storage)
  if not acct then return nil, err, code end
  local r = {
    names = req.names, csr_pem = req.csr_pem, key_pem = req.key_pem, replaces = req.replaces,
    profile = req.profile or self.profile, preferred_chain = req.preferred_chain or self.preferred_chain,
  }
  local res
  res, err, code = order.obtain(self:session(ctx, acct), r)
  if not res and code == "acme:accountDoesNotExist" then
    -- the CA forgot the account (a test CA restarted): register again, once
    self.accounts[ctx.storage] = nil
    core.log("warn", "acme_account_unknown", { directory = self.directory, account = acct.url })
    acct, err, code = self:account(ctx.storage, acct.url)
    if not acct then return nil, err, code end
    res, err, code = order.obtain(self:session(ctx, acct), r)
  end
  if not res then return nil, err, code end
  local facts = core.cert_parse(res.chain_pem)
  return { chain_pem = res.chain_pem, key_pem = res.key_pem, serial = facts and facts.serial,
    order_url = res.order_url, certificate_url = res.certificate_url, commit_deletes = res.commit_deletes }
end

local function cert_pem(cert)
  if type(cert) == "string" then return cert end
  if type(cert) == "table" then return cert.pem or cert.chain_pem end
end

--- Revoke (RFC 8555 7.6): cert (a cert table with .pem, or PEM), ctx.reason.
function Acme:revoke(cert, ctx)
  ctx = ctx or {}
  local pem = cert_pem(cert)
  local facts = pem and core.cert_parse(pem)
  if not facts then return nil, client_mod.failure("revoke: not a certificate", "invalid", true) end
  local reason = ctx.reason
  if reason ~= nil and (math.tointeger(reason) == nil or reason < 0 or reason > 10 or reason == 7) then
    return nil, client_mod.failure("revoke: reason must be an RFC 5280 reason code (0-6, 8-10), not "
      .. tostring(reason), "invalid", true)
  end
  local c = self:client()
  local dir, err, code = c:directory()
  if not dir then return nil, err, code end
  if type(dir.revokeCert) ~= "string" then
    return nil, client_mod.failure(self.directory .. " offers no revokeCert", "unsupported", true)
  end
  local payload = { certificate = core.base64url_encode(facts.der), reason = math.tointeger(reason) }
  local signer, kid
  if ctx.key_pem then
    signer, err, code = core.jws_signer(ctx.key_pem)
    if not signer then return nil, client_mod.failure("revoke: the certificate's key: " .. tostring(err), code, true) end
  else
    local acct
    acct, err, code = self:account(ctx.storage)
    if not acct then return nil, err, code end
    signer, kid = acct.signer, acct.url
  end
  local resp
  resp, err, code = c:post(dir.revokeCert, (assert(core.json_encode(payload))), signer, kid)
  if not resp then return nil, err, code end
  core.log("info", "acme_revoked", { serial = facts.serial, directory = self.directory, reason = reason })
  return true
end

--- ACME Renewal Information (RFC 9773) for cert.
function Acme:renewal_info(cert, ctx)
  local pem = cert_pem(cert)
  local c = self:client()
  local dir, err, code = c:directory()
  if not dir then return nil, err, code end
  if type(dir.renewalInfo) ~= "string" then return nil, "unsupported", "unsupported" end
  local id
  id, err, code = core.ari_cert_id(pem)
  if not id then return nil, err, code end
  local url = dir.renewalInfo:gsub("/$", "") .. "/" .. id
  local resp
  resp, err, code = c:get(url)
  if not resp then return nil, err, code end
  local doc = resp.json
  local w = type(doc) == "table" and doc.suggestedWindow
  local start = type(w) == "table" and rfc3339.parse(w.start)
  local stop = type(w) == "table" and rfc3339.parse(w["end"])
  if not start or not stop or stop < start then
    return nil, client_mod.failure("renewalInfo at " .. url .. " has no valid suggestedWindow", "acme:malformedResponse",
      false, resp.retry_after)
  end
  return { start = start, ["end"] = stop, retry_after = resp.retry_after,
    explanation_url = type(doc.explanationURL) == "string" and doc.explanationURL or nil }
end

return M
