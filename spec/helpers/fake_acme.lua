--- A simulated ACME CA for specs: it sits in an acme.client's transport
-- (client.transport), so the whole flow (nonces, JWS, orders, polling,
-- finalize, download) runs offline and the spec can inspect and steer it.
-- It checks what a CA checks that the flow could get wrong: a known nonce,
-- the JWS url matching the request URL, kid vs jwk, and for http-01 it really
-- fetches http://127.0.0.1:<port>/.well-known/acme-challenge/<token> from
-- the solver's listener (loop.http) and compares the key authorization.
--
--   local ca = fake.new { http_port = 5002, ... }
--   ca:attach(client)               -- client.transport = the simulated CA
--   ca.log                          -- { "POST /new-order", ... }
--   ca.fail = { ["new-order"] = { status = 429, type = "rateLimited", retry_after = "7" } }
--   ca.bad_nonce_every = 3          -- every third signed POST: badNonce
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local testing = require "certmaint.testing"

local M = {}
local CA = {}
CA.__index = CA

local BASE = "https://ca.test"
local PREFIX = "urn:ietf:params:acme:error:"

function M.new(opts)
  opts = opts or {}
  local self = setmetatable({
    http_port = opts.http_port,
    valid_after = opts.valid_after or 1,   -- authz polls before validation is decided
    processing_polls = opts.processing_polls or 1,
    retry_after = opts.retry_after,        -- Retry-After sent while pending/processing
    renewal_info = opts.renewal_info,      -- function(cert_id) -> window table or nil
    reuse_valid = opts.reuse_valid,        -- identifiers whose authz starts valid
    offer = opts.offer or { "http-01", "dns-01" },
    ca = testing.ca { name = "Fake Root A" },
    alt = testing.ca { name = "Fake Root B" },
    nonces = {}, nseq = 0, seq = 0, posts = 0,
    accounts = {}, orders = {}, authzs = {}, certs = {},
    log = {}, fail = {}, counts = {}, sleeps = {},
  }, CA)
  return self
end

function CA:attach(client)
  client.transport = function(_, req) return self:handle(req) end
end

function CA:directory()
  local d = {
    newNonce = BASE .. "/new-nonce", newAccount = BASE .. "/new-account", newOrder = BASE .. "/new-order",
    revokeCert = BASE .. "/revoke-cert", keyChange = BASE .. "/key-change",
  }
  if self.renewal_info then d.renewalInfo = BASE .. "/renewal-info" end
  return d
end

function CA:nonce()
  self.nseq = self.nseq + 1
  local n = "nonce" .. self.nseq
  self.nonces[n] = true
  return n
end

local function json(v) return (assert(core.json_encode(v))) end
local function arr(t) return setmetatable(t, core.json_array_mt) end

function CA:reply(status, doc, headers)
  headers = headers or {}
  headers["replay-nonce"] = self:nonce()
  if doc ~= nil and headers["content-type"] == nil then headers["content-type"] = "application/json" end
  return { status = status, headers = headers, body = type(doc) == "string" and doc or (doc and json(doc) or "") }
end

function CA:problem(status, t, detail, extra)
  local h = { ["content-type"] = "application/problem+json" }
  if extra and extra.retry_after then h["retry-after"] = extra.retry_after end
  return self:reply(status, { type = PREFIX .. t, detail = detail, status = status }, h)
end

function CA:id(kind)
  self.seq = self.seq + 1
  return kind .. self.seq
end

local function b64json(s)
  local raw = core.base64url_decode(s)
  return raw and core.json_decode(raw)
end

function CA:handle(req)
  local path = req.url:gsub("^" .. BASE:gsub("%p", "%%%0"), "")
  local ep = path:match("^/([%w%-]+)")
  self.log[#self.log + 1] = req.method .. " " .. path
  self.counts[ep] = (self.counts[ep] or 0) + 1
  if req.method == "GET" and path:match("^/dir") then return self:reply(200, self:directory()) end
  if req.method == "HEAD" and ep == "new-nonce" then return self:reply(200, nil) end
  if req.method == "GET" and ep == "renewal-info" then
    local w = self.renewal_info(path:match("^/renewal%-info/(.+)$"))
    if not w then return self:problem(404, "malformed", "no such certificate") end
    return self:reply(200, w.body, { ["retry-after"] = w.retry_after })
  end
  if req.method ~= "POST" then return self:reply(405, "method") end

  -- a JWS: nonce, url, key
  local jws = core.json_decode(req.body)
  local protected = jws and b64json(jws.protected)
  if not protected then return self:problem(400, "malformed", "not a JWS") end
  if not self.nonces[protected.nonce] then return self:problem(400, "badNonce", "unknown nonce") end
  self.nonces[protected.nonce] = nil
  if protected.url ~= req.url then return self:problem(400, "unauthorized", "url mismatch") end
  self.posts = self.posts + 1
  if self.bad_nonce_every and self.posts % self.bad_nonce_every == 0 then
    return self:problem(400, "badNonce", "rejected for the spec")
  end
  local f = self.fail[ep]
  if f and (f.times == nil or f.times > 0) then
    if f.times then f.times = f.times - 1 end
    if f.when == nil or f.when(protected, jws) then
      return self:problem(f.status or 400, f.type, f.detail or ("failing " .. ep), f)
    end
  end
  local payload = jws.payload ~= "" and b64json(jws.payload) or nil
  local account
  if ep == "new-account" then
    if not protected.jwk then return self:problem(400, "malformed", "newAccount needs jwk") end
  else
    if protected.jwk and ep ~= "revoke-cert" then return self:problem(400, "malformed", "kid expected") end
    if protected.kid then
      account = self.accounts[protected.kid]
      if not account then return self:problem(400, "accountDoesNotExist", "no such account") end
    end
  end
  local h = self["on_" .. ep:gsub("%-", "_")]
  if not h then return self:problem(404, "malformed", "no such resource " .. path) end
  return h(self, path, payload, protected, account, jws)
end

function CA:on_new_account(_, payload, protected)
  local thumb = core.digest("sha256", json(protected.jwk), "base64url")
  for url, a in pairs(self.accounts) do
    if a.thumb == thumb then return self:reply(200, a.doc, { location = url }) end
  end
  if payload.onlyReturnExisting then return self:problem(400, "accountDoesNotExist", "no account for this key") end
  if not payload.termsOfServiceAgreed then return self:problem(403, "userActionRequired", "agree to the terms") end
  local url = BASE .. "/acct/" .. self:id("a")
  local doc = { status = "valid", contact = payload.contact or arr({}), orders = url .. "/orders" }
  self.accounts[url] = { thumb = thumb, doc = doc, eab = payload.externalAccountBinding }
  self.last_account_payload = payload
  return self:reply(201, doc, { location = url })
end

function CA:order_doc(o)
  local authz = {}
  for i, a in ipairs(o.authzs) do authz[i] = BASE .. "/authz/" .. a end
  return { status = o.status, identifiers = arr(o.identifiers), authorizations = arr(authz),
    finalize = BASE .. "/finalize/" .. o.id, certificate = o.cert and (BASE .. "/cert/" .. o.id) or nil,
    expires = "2099-01-01T00:00:00Z" }
end

function CA:on_new_order(_, payload, _, account)
  local o = { id = self:id("o"), status = "pending", identifiers = payload.identifiers, authzs = {},
    replaces = payload.replaces, profile = payload.profile, account = account }
  self.last_order_payload = payload
  for _, ident in ipairs(payload.identifiers) do
    local wildcard = ident.value:sub(1, 2) == "*."
    local value = wildcard and ident.value:sub(3) or ident.value
    local a = { id = self:id("z"), identifier = { type = ident.type, value = value }, wildcard = wildcard,
      status = (self.reuse_valid and self.reuse_valid[value]) and "valid" or "pending", polls = 0, challenges = {} }
    for _, t in ipairs(self.offer) do
      if not (wildcard and t == "http-01") then
        a.challenges[#a.challenges + 1] = { type = t, url = BASE .. "/chall/" .. a.id .. "/" .. t,
          token = core.base64url_encode(core.random_bytes(16)), status = "pending" }
      end
    end
    self.authzs[a.id] = a
    o.authzs[#o.authzs + 1] = a.id
  end
  self.orders[o.id] = o
  return self:reply(201, self:order_doc(o), { location = BASE .. "/order/" .. o.id })
end

function CA:update_order(o)
  if o.status ~= "pending" then return end
  for _, id in ipairs(o.authzs) do
    local a = self.authzs[id]
    if a.status == "invalid" then o.status = "invalid" return end
    if a.status ~= "valid" then return end
  end
  o.status = "ready"
end

function CA:on_order(path)
  local o = self.orders[path:match("^/order/(.+)$")]
  if not o then return self:problem(404, "malformed", "no such order") end
  self:update_order(o)
  local h = {}
  if o.status == "processing" then
    o.polls = (o.polls or 0) + 1
    if o.polls >= self.processing_polls then o.status, o.cert = "valid", o.pending_cert
    elseif self.retry_after then h["retry-after"] = self.retry_after end
  end
  return self:reply(200, self:order_doc(o), h)
end

function CA:authz_doc(a)
  local chs = {}
  for i, c in ipairs(a.challenges) do
    chs[i] = { type = c.type, url = c.url, token = c.token, status = c.status, error = c.error }
  end
  return { status = a.status, identifier = a.identifier, wildcard = a.wildcard or nil, challenges = arr(chs),
    expires = "2099-01-01T00:00:00Z" }
end

-- Validation of a challenge the client asked for: http-01 over the real
-- listener; dns-01 accepted when the spec says so (self.dns_ok).
function CA:validate(a, c, account)
  local ka = c.token .. "." .. account.thumb
  if c.type == "http-01" then
    local resp = loop.http { url = string.format("http://127.0.0.1:%d/.well-known/acme-challenge/%s",
      self.http_port, c.token), timeout = 5 }
    if resp and resp.status == 200 and resp.body == ka then return true end
    return false, "incorrectResponse", string.format("http-01: %s answered %s", a.identifier.value,
      resp and (resp.status .. " " .. resp.body) or "nothing")
  elseif c.type == "dns-01" and self.dns_ok then
    return true
  end
  return false, "unauthorized", c.type .. " not validated"
end

function CA:on_authz(path, _, _, account)
  local a = self.authzs[path:match("^/authz/(.+)$")]
  if not a then return self:problem(404, "malformed", "no such authorization") end
  local h = {}
  for _, c in ipairs(a.challenges) do
    if c.status == "processing" and a.status == "pending" then
      a.polls = a.polls + 1
      if a.polls >= self.valid_after then
        local ok, t, detail = self:validate(a, c, account)
        c.status = ok and "valid" or "invalid"
        a.status = c.status
        if not ok then c.error = { type = PREFIX .. t, detail = detail } end
      elseif self.retry_after then
        h["retry-after"] = self.retry_after
      end
    end
  end
  return self:reply(200, self:authz_doc(a), h)
end

function CA:on_chall(path, _, _, account)
  local id, t = path:match("^/chall/([^/]+)/(.+)$")
  local a = self.authzs[id]
  if not a then return self:problem(404, "malformed", "no such challenge") end
  for _, c in ipairs(a.challenges) do
    if c.type == t then
      if c.status == "pending" then c.status = "processing" end
      self.responded = (self.responded or 0) + 1
      return self:reply(200, { type = c.type, url = c.url, token = c.token, status = c.status },
        { link = "<" .. BASE .. "/authz/" .. id .. '>;rel="up"' })
    end
  end
  return self:problem(404, "malformed", "no such challenge")
end

function CA:on_finalize(path, payload)
  local o = self.orders[path:match("^/finalize/(.+)$")]
  if not o then return self:problem(404, "malformed", "no such order") end
  self:update_order(o)
  if o.status ~= "ready" then return self:problem(403, "orderNotReady", "order is " .. o.status) end
  local der = core.base64url_decode(payload.csr)
  local csr, err = core.csr_parse(der or "")
  if not csr then return self:problem(400, "badCSR", tostring(err)) end
  local names = {}
  for i, ident in ipairs(o.identifiers) do names[i] = ident.value end
  local now = core.now()
  local leaf = assert(core.cert_issue { csr = der, names = names, cn = names[1], not_before = now - 60,
    not_after = now + 90 * 86400, issuer_cert = self.ca.cert_pem, issuer_key = self.ca.key_pem })
  o.leaf = leaf
  o.pending_cert = true
  o.status = "processing"
  o.polls = 0
  self.issued = (self.issued or 0) + 1
  return self:reply(200, self:order_doc(o), self.retry_after and { ["retry-after"] = self.retry_after } or nil)
end

function CA:on_cert(path)
  local id, alt = path:match("^/cert/([^/]+)/?(%d*)$")
  local o = self.orders[id]
  if not o or not o.leaf then return self:problem(404, "malformed", "no such certificate") end
  local h = { ["content-type"] = "application/pem-certificate-chain" }
  if alt == "1" then return self:reply(200, o.leaf .. self.alt.cert_pem, h) end
  h.link = "<" .. BASE .. "/cert/" .. id .. '/1>;rel="alternate", <' .. BASE .. '/issuer>;rel="up"'
  return self:reply(200, o.leaf .. self.ca.cert_pem, h)
end

function CA:on_revoke_cert(_, payload, protected)
  self.revoked = { certificate = payload.certificate, reason = payload.reason, by_jwk = protected.jwk ~= nil }
  return self:reply(200, "")
end

M.BASE = BASE
M.DIRECTORY = BASE .. "/dir"
return M
