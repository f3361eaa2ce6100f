--- certmaint.acme.client: one ACME server (RFC 8555) as seen from loop tasks.
--
--   local client = require("certmaint.acme.client").new {
--     directory = "https://127.0.0.1:14000/dir", ca_file = "/path/ca.pem",
--     timeout = 30, connect_timeout = 10, max_bytes = 1048576 }
--   local dir, err, code = c:directory()                 -- fetched once, shared
--   local resp, err, code = c:post(url, payload, signer, kid)   -- signed POST
--   local resp, err, code = c:post_as_get(url, signer, kid)
--   (post, post_as_get and request take the step's failpoint name last:
--   "acme.order", ...; see certmaint.failpoint)
--   local resp, err, code = c:get(url)                   -- unauthenticated (renewalInfo)
--
-- resp = { status, headers, body, json = decoded body or nil, location = Location,
--          links = { rel = { url, ... } }, retry_after = absolute Unix time or nil }.
-- Everything waits in the loop (call from a loop task); every transfer has the
-- client's total and connect timeouts and its body limit.
--
-- Nonces: a pool fed by every response's Replay-Nonce, refilled with a HEAD of
-- newNonce when empty, so many orders in flight on one loop rarely pay an
-- extra round trip. A badNonce problem is retried with a fresh nonce, up to
-- MAX_BAD_NONCE times, and never reaches the caller unless they all fail.
--
-- Failures are nil, err, code where err is a table
--   { message = "<detail> (<type>) at <url>", final = bool, retry_after = t,
--     retry_at = t, problem = <the decoded problem document> }
-- and code is "acme:<type>" for a problem document (urn:ietf:params:acme:error:
-- dropped: "acme:rateLimited", "acme:badCSR"), "http:<status>" for an error
-- status without one, or the transport's code ("connect", "timeout", "tls", ...).
-- retry_at is the same time as retry_after: certmaint.jobs schedules the next
-- attempt no earlier than it.
local core = require "certmaint.core"
local failpoint = require "certmaint.failpoint"
local loop = require "certmaint.loop"
local metrics = require "certmaint.metrics"
local rfc3339 = require "certmaint.rfc3339"

local M = {}

M.ERROR_PREFIX = "urn:ietf:params:acme:error:"
M.MAX_BAD_NONCE = 8
M.MAX_POOL = 128          -- nonces kept; more would only go stale
M.DIRECTORY_TTL = 12 * 3600
M.USER_AGENT = "certmaint (ACME; +RFC 8555)"

--- Problem types after which the same request cannot succeed: not retried.
-- (Validation failures reported inside a challenge are never final: see order.lua.)
M.FINAL_TYPES = {
  malformed = true, unauthorized = true, badCSR = true, rejectedIdentifier = true,
  unsupportedIdentifier = true, badSignatureAlgorithm = true, badPublicKey = true,
  invalidContact = true, unsupportedContact = true, accountDoesNotExist = true,
  externalAccountRequired = true, userActionRequired = true, badRevocationReason = true,
  alreadyRevoked = true, caa = true, compound = true, invalidProfile = true,
}

local Client = {}
Client.__index = Client
Client.__name = "certmaint.acme.client"

function M.new(opts)
  if type(opts) ~= "table" or type(opts.directory) ~= "string" then
    error("acme.client.new: opts.directory (the directory URL) is required", 2)
  end
  return setmetatable({
    directory_url = opts.directory,
    ca_file = opts.ca_file,
    timeout = opts.timeout or 30,
    connect_timeout = opts.connect_timeout or 10,
    max_bytes = opts.max_bytes or 1048576,
    dir = nil, dir_at = nil, dir_wait = nil,
    nonces = {},
    stats = { requests = 0, nonce_fetches = 0, bad_nonce = 0, pooled_nonce_used = 0 },
  }, Client)
end

----------------------------------------------------------------------------
-- errors

--- An error table (see the header) and its code.
function M.failure(message, code, final, retry_after, problem)
  return { message = message, final = final and true or false, retry_after = retry_after,
    retry_at = retry_after, problem = problem }, code
end

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9,
  Oct = 10, Nov = 11, Dec = 12 }

--- Retry-After (RFC 9110 10.2.3: delay-seconds or an IMF-fixdate) -> absolute
-- Unix time, or nil when absent or unreadable.
function M.parse_retry_after(value, now)
  if type(value) ~= "string" then return nil end
  value = value:match("^%s*(.-)%s*$")
  local secs = value:match("^(%d+)$")
  if secs then
    local n = tonumber(secs)
    if n > 86400 * 365 then n = 86400 * 365 end
    return (now or core.now()) + n
  end
  local d, mon, y, h, mi, s = value:match("^%a%a%a, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if not d or not MONTHS[mon] then return nil end
  d, y, h, mi, s = tonumber(d), tonumber(y), tonumber(h), tonumber(mi), tonumber(s)
  if d < 1 or d > 31 or h > 23 or mi > 59 or s > 60 then return nil end
  return rfc3339.days_from_civil(y, MONTHS[mon], d) * 86400 + h * 3600 + mi * 60 + s
end

--- Link header value(s) -> { rel = { url, ... } } (RFC 8288; several Link
-- headers arrive joined by ", ").
function M.parse_links(value)
  local out = {}
  if type(value) ~= "string" then return out end
  for url, params in value:gmatch("<([^>]*)>([^<]*)") do
    local rel = params:match('[Rr][Ee][Ll]%s*=%s*"([^"]*)"') or params:match("[Rr][Ee][Ll]%s*=%s*([^;,%s]+)")
    if rel then
      for r in rel:gmatch("%S+") do
        local list = out[r] or {}
        list[#list + 1] = url
        out[r] = list
      end
    end
  end
  return out
end

local function resolve(base, ref)
  if ref:match("^%a[%w+.%-]*://") then return ref end
  local origin = base:match("^(%a[%w+.%-]*://[^/]+)") or ""
  if ref:sub(1, 1) == "/" then return origin .. ref end
  return (base:gsub("[^/]*$", "")) .. ref
end

local function wrap(url, raw, now)
  local h = raw.headers or {}
  local resp = { status = raw.status, headers = h, body = raw.body or "", url = url }
  resp.retry_after = M.parse_retry_after(h["retry-after"], now)
  if h.location then resp.location = resolve(url, h.location) end
  resp.links = M.parse_links(h.link)
  for _, list in pairs(resp.links) do
    for i, u in ipairs(list) do list[i] = resolve(url, u) end
  end
  local ct = (h["content-type"] or ""):lower()
  if ct:find("json", 1, true) and resp.body ~= "" then
    local doc = core.json_decode(resp.body, #resp.body + 1)
    if type(doc) == "table" then resp.json = doc end
  end
  return resp
end

--- The error for a response with an error status (a problem document or not).
function M.response_error(resp, what)
  local p = resp.json
  local status = resp.status
  local retryable_status = status == 429 or status >= 500
  if p and type(p.type) == "string" then
    local t = p.type
    local short = t:sub(1, #M.ERROR_PREFIX) == M.ERROR_PREFIX and t:sub(#M.ERROR_PREFIX + 1) or t
    local detail = type(p.detail) == "string" and p.detail or "no detail"
    local msg = string.format("%s (%s) at %s", detail, short, what)
    if type(p.subproblems) == "table" then
      local parts = {}
      for _, sp in ipairs(p.subproblems) do
        if type(sp) == "table" then
          local id = type(sp.identifier) == "table" and sp.identifier.value or "?"
          local st = type(sp.type) == "string" and sp.type:gsub("^" .. M.ERROR_PREFIX:gsub("%p", "%%%0"), "") or "?"
          parts[#parts + 1] = string.format("%s: %s (%s)", tostring(id), tostring(sp.detail), st)
        end
        if #parts >= 8 then break end
      end
      if #parts > 0 then msg = msg .. "; " .. table.concat(parts, "; ") end
    end
    local final = M.FINAL_TYPES[short] and not retryable_status or false
    return M.failure(msg, "acme:" .. short, final, resp.retry_after, p)
  end
  local body = (resp.body or ""):sub(1, 200):gsub("%c", " ")
  local msg = string.format("HTTP %d at %s%s", status, what, body ~= "" and (": " .. body) or "")
  -- 4xx without a problem document: the request is wrong, asking again will not help
  return M.failure(msg, "http:" .. status, not retryable_status and status ~= 408, resp.retry_after)
end

----------------------------------------------------------------------------
-- transport

--- One transfer: loop.http (a spec puts a simulated CA here).
function Client:transport(req)
  return loop.http(req)
end

-- point: the step's failpoint (core/failpoint.c), nil for none.
function Client:request(method, url, body, headers, point)
  local hs = { "User-Agent: " .. M.USER_AGENT }
  for _, h in ipairs(headers or {}) do hs[#hs + 1] = h end
  self.stats.requests = self.stats.requests + 1
  local started = core.monotonic()
  local raw, err, code = failpoint.call(point, self.transport, self, {
    url = url, method = method, body = body, headers = hs,
    timeout = self.timeout, connect_timeout = self.connect_timeout,
    max_bytes = self.max_bytes, ca_file = self.ca_file,
  })
  metrics.acme_request(point, metrics.acme_result(raw and raw.status), core.monotonic() - started)
  if not raw then
    -- the core's errors already start "METHOD URL: "
    local msg, where = tostring(err), method .. " " .. url .. ":"
    if msg:sub(1, #where) ~= where then msg = where .. " " .. msg end
    return nil, M.failure(msg, code or "network", false)
  end
  local resp = wrap(url, raw, core.now())
  local nonce = resp.headers["replay-nonce"]
  if nonce and nonce:match("^[%w_%-]+$") and #self.nonces < M.MAX_POOL then
    self.nonces[#self.nonces + 1] = nonce
  end
  return resp
end

--- The directory (decoded), fetched at most once per DIRECTORY_TTL; tasks
-- asking while a fetch is under way wait for it.
function Client:directory()
  local now = core.now()
  if self.dir and now - self.dir_at < M.DIRECTORY_TTL then return self.dir end
  if self.dir_wait then
    -- one fetch at a time: the others share its outcome
    self.dir_wait:wait(self.timeout + 5)
    if self.dir then return self.dir end
    if self.dir_failure then return nil, self.dir_failure[1], self.dir_failure[2] end
  end
  self.dir_wait, self.dir_failure = loop.cond(), nil
  local resp, err, code = self:request("GET", self.directory_url, nil, nil, "acme.directory")
  local waiters = self.dir_wait
  self.dir_wait = nil
  local function done(d, e, c)
    if not d then self.dir_failure = { e, c } end
    waiters:notify_all()
    return d, e, c
  end
  if not resp then return done(nil, err, code) end
  if resp.status ~= 200 then return done(nil, M.response_error(resp, self.directory_url)) end
  local d = resp.json
  if type(d) ~= "table" or type(d.newNonce) ~= "string" or type(d.newAccount) ~= "string"
    or type(d.newOrder) ~= "string" then
    return done(nil, M.failure("the ACME directory at " .. self.directory_url
      .. " is not a directory (no newNonce/newAccount/newOrder URLs)", "acme:directory", false))
  end
  self.dir, self.dir_at = d, now
  return done(d)
end

function Client:nonce()
  local n = table.remove(self.nonces)
  if n then
    self.stats.pooled_nonce_used = self.stats.pooled_nonce_used + 1
    return n
  end
  local dir, err, code = self:directory()
  if not dir then return nil, err, code end
  self.stats.nonce_fetches = self.stats.nonce_fetches + 1
  local resp
  resp, err, code = self:request("HEAD", dir.newNonce, nil, nil, "acme.nonce")
  if not resp then return nil, err, code end
  -- taken back out of the pool request() put it in: this one is ours
  n = resp.headers["replay-nonce"]
  if not n or not (resp.status == 200 or resp.status == 204) then
    return nil, M.failure("no Replay-Nonce from " .. dir.newNonce .. " (HTTP " .. resp.status .. ")",
      "acme:badNonce", false)
  end
  for i = #self.nonces, 1, -1 do
    if self.nonces[i] == n then table.remove(self.nonces, i) break end
  end
  return n
end

local function json_string(s)
  return (assert(core.json_encode(s)))
end

--- The protected header of a JWS: kid (the account URL) or, without one,
-- the signer's JWK (newAccount, revocation by certificate key).
function M.protected(signer, nonce, url, kid)
  local key = kid and ('"kid":' .. json_string(kid)) or ('"jwk":' .. signer:jwk())
  return '{"alg":' .. json_string(signer:alg()) .. ',' .. key .. ',"nonce":' .. json_string(nonce)
    .. ',"url":' .. json_string(url) .. '}'
end

--- A signed POST of payload (text; "" for POST-as-GET). badNonce is retried.
-- An error status becomes nil, err, code (see the header).
function Client:post(url, payload, signer, kid, headers, point)
  local last_err, last_code
  for _ = 1, M.MAX_BAD_NONCE do
    local nonce, err, code = self:nonce()
    if not nonce then return nil, err, code end
    local body
    body, err, code = signer:sign(M.protected(signer, nonce, url, kid), payload)
    if not body then
      return nil, M.failure("signing the request to " .. url .. ": " .. tostring(err), code or "sign", true)
    end
    local hs = { "Content-Type: application/jose+json" }
    for _, h in ipairs(headers or {}) do hs[#hs + 1] = h end
    local resp
    resp, err, code = self:request("POST", url, body, hs, point)
    if not resp then return nil, err, code end
    if resp.status < 400 then return resp end
    last_err, last_code = M.response_error(resp, url)
    if last_code ~= "acme:badNonce" then return nil, last_err, last_code end
    self.stats.bad_nonce = self.stats.bad_nonce + 1
  end
  last_err.final = false
  return nil, last_err, last_code
end

function Client:post_as_get(url, signer, kid, headers, point)
  return self:post(url, "", signer, kid, headers, point)
end

--- An unauthenticated GET (renewalInfo); error statuses become errors.
function Client:get(url, headers)
  local resp, err, code = self:request("GET", url, nil, headers)
  if not resp then return nil, err, code end
  if resp.status >= 400 then return nil, M.response_error(resp, url) end
  return resp
end

return M
