--- certmaint.testing: what a policy author's busted specs need.
--
--   local testing = require "certmaint.testing"
--   local clock = testing.clock(1767225600)
--   local ca = testing.ca()
--   local issuer = testing.issuer { ca = ca, lifetime = "30d" }
--   local e = testing.engine(policy, { clock = clock })
--   clock:advance(25 * 86400); e:tick("renew")
--   assert.equal(2, issuer.issued)
--
-- Everything runs in-process on the real core with a fake clock: no network,
-- no sleeping, a certificate's whole life in milliseconds. Load the policy
-- file with testing.load_policy(path): the daemon's own loader, so its hooks
-- run in the same sandbox, with the same globals and limits, as `certmaint run`.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local duration = require "certmaint.duration"
local options = require "certmaint.options"

local M = {}

M.EPOCH = 1767225600 -- 2026-01-01T00:00:00Z, a default start for clocks

-- clock ---------------------------------------------------------------------

local Clock = {}
Clock.__index = Clock

--- testing.clock(t0): fake the process clock at t0 (default testing.EPOCH).
function M.clock(t0)
  core.clock_set(t0 or M.EPOCH)
  return setmetatable({}, Clock)
end

function Clock:now() return core.now() end

--- Move forward `seconds` (a number or a duration string like "7d").
function Clock:advance(seconds)
  local s = assert(duration.parse(seconds, "advance"))
  return core.clock_advance(s)
end

--- Forward: as advance. Backward: a step of the wall clock (as jump).
function Clock:set(t)
  if t < core.now() then core.clock_set(t) else core.clock_advance(t - core.now()) end
  return core.now()
end

--- Step the wall clock by `seconds` (either sign) while elapsed time stands
-- still: an NTP step or `date -s`. Timers and pass intervals run on elapsed
-- time (core.elapsed), so they do not move; advance moves both, as a suspend
-- does (nothing runs until the loop next turns).
function Clock:jump(seconds)
  assert(type(seconds) == "number", "clock:jump needs a number of seconds")
  return core.clock_jump(seconds)
end

--- Back to the wall clock.
function Clock:restore() core.clock_set(nil) end

-- a local CA ----------------------------------------------------------------

local CA = {}
CA.__index = CA

--- testing.ca{key_type=, name=}: a root that issues leaves and OCSP responses.
function M.ca(opts)
  opts = options.check(opts, {
    key_type = { type = "string", default = "p256" },
    name = { type = "string", default = "certmaint Testing CA" },
  }, "testing.ca", 2)
  local now = core.now()
  local key = assert(core.key_generate(opts.key_type))
  local pem = assert(core.cert_issue {
    subject_key = key, issuer_key = key, cn = opts.name, is_ca = true, path_len = 0,
    not_before = now - 86400, not_after = now + 100 * 365 * 86400,
  })
  return setmetatable({ cert_pem = pem, key_pem = key, revoked = {}, reasons = {}, issued = {}, crl_urls = {} }, CA)
end

--- ca:issue{names=, not_before=, not_after=, ocsp_url=, crl_url=, key_type=, csr=, must_staple=}
-- -> {cert_pem, key_pem, serial}; cert_pem is the leaf followed by the CA certificate.
function CA:issue(o)
  assert(type(o) == "table" and type(o.names) == "table", "ca:issue needs { names = {...} }")
  local now = core.now()
  local key -- with a CSR the key is the requester's
  if not o.csr then key = assert(core.key_generate(o.key_type or "p256")) end
  local leaf, serial = core.cert_issue {
    subject_key = key, csr = o.csr, names = o.names, cn = o.names[1],
    not_before = o.not_before or now, not_after = o.not_after or (now + 90 * 86400),
    issuer_cert = self.cert_pem, issuer_key = self.key_pem, ocsp_url = o.ocsp_url, crl_url = o.crl_url,
    must_staple = o.must_staple,
  }
  assert(leaf, serial)
  self.issued[serial] = leaf
  if o.crl_url then self.crl_urls[o.crl_url] = true end
  return { cert_pem = leaf .. self.cert_pem, key_pem = key, serial = serial }
end

--- ca:ocsp(cert_pem, {status=, this_update=, next_update=, revoked_at=, reason=}) -> DER
-- response signed by the CA; without status, "revoked" (with the time and
-- reason ca:revoke was given) for a revoked serial, else "good".
function CA:ocsp(cert_pem, o)
  o = o or {}
  local now = core.now()
  local facts = assert(core.cert_parse(cert_pem))
  local status = o.status or (self.revoked[facts.serial] and "revoked" or "good")
  local revoked = status == "revoked"
  return assert(core.ocsp_response_build {
    issuer_cert = self.cert_pem, issuer_key = self.key_pem, cert = cert_pem, status = status,
    this_update = o.this_update or now, next_update = o.next_update or (now + 7 * 86400),
    revoked_at = o.revoked_at or (revoked and (self.revoked[facts.serial] or now)) or nil,
    reason = o.reason or (revoked and self.reasons[facts.serial]) or nil,
  })
end

-- RFC 5280 reason names, for ca:revoke's reason given as a number
M.REASONS = { [0] = "unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
  "cessationOfOperation", "certificateHold", nil, "removeFromCRL", "privilegeWithdrawn", "aACompromise" }

--- ca:revoke(serial [, {reason=, at=}]): later OCSP answers (and CRLs) for
-- that serial say "revoked", at `at` (default now), with `reason` (a name
-- such as "keyCompromise", or an RFC 5280 number; nil: none given).
function CA:revoke(serial, o)
  assert(type(serial) == "string", "ca:revoke needs a serial (hex)")
  o = options.check(o, { reason = { type = "any" }, at = { type = "number" } }, "ca:revoke", 2)
  local reason = o.reason
  if type(reason) == "number" then reason = assert(M.REASONS[reason], "ca:revoke: no such reason code") end
  if reason ~= nil and type(reason) ~= "string" then error("ca:revoke: reason must be a name or a number", 2) end
  self.revoked[serial] = o.at or core.now()
  self.reasons[serial] = reason
end

--- ca:crl{this_update=, next_update=, number=} -> DER CRL signed by the CA,
-- listing every serial revoked so far (with its time and reason).
function CA:crl(o)
  o = options.check(o, { this_update = { type = "number" }, next_update = { type = "number" },
    number = { type = "string" } }, "ca:crl", 2)
  if not core.crl_build then error("ca:crl: this core has no crl_build", 2) end
  local now = core.now()
  local entries = {}
  for serial, at in pairs(self.revoked) do
    entries[#entries + 1] = { serial = serial, revoked_at = at, reason = self.reasons[serial] }
  end
  table.sort(entries, function(a, b) return a.serial < b.serial end)
  return assert(core.crl_build {
    issuer_cert = self.cert_pem, issuer_key = self.key_pem, entries = entries,
    this_update = o.this_update or now, next_update = o.next_update or (now + 7 * 86400),
    number = o.number,
  })
end

-- an in-process OCSP responder and CRL server -------------------------------

local Responder = {}
Responder.__index = Responder

local FAIL_HOW = { error = true, http = true, timeout = true, garbage = true, toobig = true, stale = true,
  unknown = true }

local function first_cert(pem)
  return type(pem) == "string" and pem:match("%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-.-%-%-%-%-%-END CERTIFICATE%-%-%-%-%-")
end

--- testing.responder{cas = {ca, ...}}: what engine.new's `responder` is for
-- specs, with the methods of certmaint.responder. It answers OCSP requests
-- for certificates of its CAs (ca:ocsp, so ca:revoke shows) and serves
-- ca:crl() at every crl_url a CA put in a certificate. It counts its calls
-- in .calls ({kind=, url=, serial=} each) and can be made to fail.
function M.responder(opts)
  opts = options.check(opts, { cas = { type = "table", default = {} } }, "testing.responder", 2)
  local self = setmetatable({ cas = {}, calls = {}, failing = {}, in_flight = 0, max_in_flight = 0 }, Responder)
  for _, ca in ipairs(opts.cas) do self:add_ca(ca) end
  return self
end

--- r:add_ca(ca): answer for ca's certificates too.
function Responder:add_ca(ca)
  for _, c in ipairs(self.cas) do if c == ca then return self end end
  self.cas[#self.cas + 1] = ca
  return self
end

--- r:fail(url_or_true, how): answers for `url` (true: every URL) fail from
-- now on: how = "error" (connection refused, the default), "http" (status
-- 500), "timeout", "garbage" (bytes that are no OCSP response or CRL),
-- "toobig", "stale" (a correctly signed OCSP answer whose nextUpdate has
-- passed), "unknown" (status unknown), or a function(kind, url, cert)
-- returning what the responder returns. how = false: answer again.
function Responder:fail(url, how)
  if url ~= true and type(url) ~= "string" then error("responder:fail: a URL or true", 2) end
  if how == nil then how = "error" end
  if how ~= false and type(how) ~= "function" and not FAIL_HOW[how] then
    error("responder:fail: how must be one of error, http, timeout, garbage, toobig, stale, unknown, "
      .. "a function or false", 2)
  end
  self.failing[url] = how or nil
  return self
end

--- r:count(kind [, url]) -> how many calls of kind ("ocsp" | "crl") it had.
function Responder:count(kind, url)
  local n = 0
  for _, c in ipairs(self.calls) do
    if c.kind == kind and (url == nil or c.url == url) then n = n + 1 end
  end
  return n
end

-- A planned failure for url: nil (none) or what to return.
function Responder:planned(kind, url, cert, answer)
  local how = self.failing[url]
  if how == nil then how = self.failing[true] end
  if how == nil then return nil end
  if type(how) == "function" then return table.pack(how(kind, url, cert)) end
  if how == "error" then return table.pack(nil, url .. ": connection refused (testing responder)", "connect") end
  if how == "http" then return table.pack(nil, url .. ": HTTP status 500", "http") end
  if how == "timeout" then return table.pack(nil, url .. ": timed out after 10s", "timeout") end
  if how == "toobig" then return table.pack(nil, url .. ": answer larger than the size limit", "toobig") end
  if how == "garbage" then return table.pack("\48\3\10\1\0 this is not DER") end
  if kind == "ocsp" and (how == "stale" or how == "unknown") then return table.pack(answer(how)) end
  return nil
end

-- The CA that issued cert (issuer_pem's first certificate is its certificate).
function Responder:ca_of(issuer_pem)
  local want = first_cert(issuer_pem)
  for _, ca in ipairs(self.cas) do
    if first_cert(ca.cert_pem) == want then return ca end
  end
  return nil
end

-- A task switch, so concurrent callers interleave as real fetches do.
local function pause()
  if loop.in_task() then loop.yield() end
end

--- r:ocsp(url, request_der, cert, issuer_pem) -> DER | nil, err, code
-- (cert: the cached certificate, or its PEM).
function Responder:ocsp(url, request_der, cert, issuer_pem)
  local pem = type(cert) == "table" and cert.pem or cert
  local facts = core.cert_parse(pem)
  self.calls[#self.calls + 1] = { kind = "ocsp", url = url, serial = facts and facts.serial,
    request = request_der }
  self.in_flight = self.in_flight + 1
  if self.in_flight > self.max_in_flight then self.max_in_flight = self.in_flight end
  pause()
  self.in_flight = self.in_flight - 1
  local ca = self:ca_of(issuer_pem)
  local planned = self:planned("ocsp", url, cert, function(how)
    local now = core.now()
    if how == "stale" then
      return ca and ca:ocsp(pem, { this_update = now - 8 * 86400, next_update = now - 86400 })
    end
    return ca and ca:ocsp(pem, { status = "unknown" })
  end)
  if planned then return table.unpack(planned, 1, planned.n) end
  if not ca then return nil, url .. ": HTTP status 404 (no testing CA issued this certificate)", "http" end
  return ca:ocsp(pem)
end

--- r:crl(url) -> DER | nil, err, code: the CRL of the CA whose certificates name url.
function Responder:crl(url)
  self.calls[#self.calls + 1] = { kind = "crl", url = url }
  pause()
  local planned = self:planned("crl", url, nil)
  if planned then return table.unpack(planned, 1, planned.n) end
  for _, ca in ipairs(self.cas) do
    if ca.crl_urls[url] then return ca:crl() end
  end
  return nil, url .. ": HTTP status 404 (no testing CA publishes a CRL here)", "http"
end

-- an issuer that counts and can fail ---------------------------------------

local Issuer = {}
Issuer.__index = Issuer

local function window_or_string(v)
  local t = type(v)
  if t == "function" or v == "past" or v == false then return true end
  if t == "table" then
    return type(v.start) == "number" and type(v["end"]) == "number", 'must be { start = t, ["end"] = t } (Unix times)'
  end
  return false, 'must be a window { start =, ["end"] = }, a function(cert, now), "past" or false'
end

M.CHALLENGE_TYPES = { http01 = "http-01", webroot = "http-01", dns01 = "dns-01", tls_alpn01 = "tls-alpn-01" }
M.CHALLENGE_ORDER = { "http01", "webroot", "tls_alpn01", "dns01" } -- without challenges.prefer

--- testing.issuer{ca=, lifetime="90d", fail=N, final=bool, retry_after=, code=,
-- ari=, ari_retry_after=, challenges=, fail_challenge=}: issues from `ca`,
-- counts successes in .issued and calls in .calls, fails its first N calls
-- (with retry_after: "come back then", an absolute time in the error, and
-- `code`). Each call's request is kept in .reqs (names, profile, replaces,
-- key_type, csr_pem, replaces_refused).
--   ari: the ARI window it publishes (renewal_info): { start =, ["end"] = },
--     a function(cert, now) returning one (or nil, err), "past" (a window that
--     ended a day ago: "renew now", as a CA signals a revocation), or false
--     (renewal_info answers "unsupported"). Without it the issuer has no
--     renewal_info at all. ari_retry_after: the Retry-After it sends with it.
--   challenges: the ACME issuer's `challenges` table; dns01's present/cleanup
--     run for each name, as the ACME issuer runs them (no propagation wait), other
--     kinds are taken as validated (no listener, no network).
--     fail_challenge = "dns-01" (or :fail_challenge(type)) fails that type's
--     validation, so the next kind the policy allows is tried.
-- On demand: :rate_limit(n [, retry_after]), :already_replaced(n),
-- :fail_challenge(type), :fail_ari(n [, retry_after]).
function M.issuer(opts)
  local self = options.check(opts, {
    ca = { type = "table" },
    lifetime = { type = "duration", default = "90d" },
    fail = { type = "number", default = 0 },
    final = { type = "boolean", default = false },
    ocsp_url = { type = "string" },
    crl_url = { type = "string" },
    must_staple = { type = "boolean" },
    name = { type = "string", default = "testing" },
    retry_after = { type = "duration" }, -- planned failures say "come back in this long"
    code = { type = "string", default = "planned" }, -- the code of planned failures
    ari = { type = "any", check = window_or_string },
    ari_retry_after = { type = "duration" },
    challenges = { type = "table" },
    fail_challenge = { type = "string" },
  }, "testing.issuer", 2)
  self.ca = self.ca or M.ca()
  self.issued, self.calls = 0, 0
  self.requests = {} -- the names of each call
  self.reqs = {}     -- each call's whole request (names, profile, replaces, key_type)
  self.ari_calls, self.revoked = 0, {}
  self.presented = {} -- { type =, identifier =, name =, value = } of each challenge presented
  self.rate_limited, self.replaced_refusals, self.ari_failures = 0, 0, 0
  self.failing_challenges = {}
  if self.fail_challenge then self.failing_challenges[self.fail_challenge] = true end
  self.fail_challenge = nil -- the option; the method of that name stays reachable
  if self.ari ~= nil then self.renewal_info = Issuer.ari_answer end
  return setmetatable(self, Issuer)
end

function Issuer:storage_key() return self.name end
function Issuer:describe() return "testing issuer \"" .. self.name .. "\"" end

--- The next n issue calls answer a rateLimited problem with Retry-After
-- (retry_after: seconds or a duration, default 1h), as an ACME CA does.
function Issuer:rate_limit(n, retry_after)
  self.rate_limited = n or 1
  self.rate_limit_after = assert(duration.parse(retry_after or "1h", "rate_limit"))
  return self
end

--- The next n issue calls that carry req.replaces are answered alreadyReplaced;
-- like the ACME issuer, this one then orders again at once without replaces.
function Issuer:already_replaced(n)
  self.replaced_refusals = n or 1
  return self
end

--- Fail validations of challenge type ("dns-01", "http-01", "tls-alpn-01"); false: stop.
function Issuer:fail_challenge(ctype, on)
  self.failing_challenges[ctype] = on ~= false
  return self
end

--- The next n renewal_info calls fail (retry_after: sent with the error).
function Issuer:fail_ari(n, retry_after)
  self.ari_failures = n or 1
  self.ari_fail_after = retry_after and assert(duration.parse(retry_after, "fail_ari")) or nil
  return self
end

-- renewal_info(cert, ctx), when the issuer publishes ARI (opts.ari).
function Issuer:ari_answer(cert, ctx)
  self.ari_calls = self.ari_calls + 1
  local now = ctx and ctx.now or core.now()
  if self.ari_failures > 0 then
    self.ari_failures = self.ari_failures - 1
    return nil, { message = "testing issuer: renewalInfo failed (planned)",
      retry_after = self.ari_fail_after and (now + self.ari_fail_after) or nil }, "acme:serverInternal"
  end
  local w, err = self.ari, nil
  if w == false then return nil, "testing issuer: no renewalInfo", "unsupported" end
  if w == "past" then w = { start = now - 2 * 86400, ["end"] = now - 86400 } end
  if type(w) == "function" then
    w, err = w(cert, now)
    if w == "past" then w = { start = now - 2 * 86400, ["end"] = now - 86400 } end
    if not w then return nil, err or "testing issuer: the ari function gave no window", "ari" end
  end
  return { start = w.start, ["end"] = w["end"], explanation_url = w.explanation_url,
    retry_after = self.ari_retry_after and (now + self.ari_retry_after) or w.retry_after }
end

function Issuer:revoke(cert, ctx)
  self.revoked[#self.revoked + 1] = { serial = cert.serial, reason = ctx and ctx.reason }
  if self.ca.revoke then self.ca:revoke(cert.serial, { reason = ctx and ctx.reason }) end
  return true
end

-- The solvers of the challenges table for kind, or nil when it has none.
local function dns01_solver(opts, ctx)
  local ok, mod = pcall(require, "certmaint.acme.challenges.dns01")
  if ok and type(mod) == "table" and mod.new then return mod.new(opts, ctx) end
  -- without the ACME client's solver: the hooks themselves, as it calls them
  return {
    present = function(_, chal)
      local r, err = opts.present("_acme-challenge." .. chal.identifier, chal.dns_value, chal)
      if r == false or (r == nil and err) then return nil, tostring(err or "present returned false") end
      return true
    end,
    cleanup = function(_, chal)
      local r, err = opts.cleanup("_acme-challenge." .. chal.identifier, chal.dns_value, chal)
      if r == false or (r == nil and err) then return nil, tostring(err or "cleanup returned false") end
      return true
    end,
  }
end

-- Validate every name through the challenges table: nil | error table, code.
function Issuer:validate(names, ctx)
  local ch = self.challenges
  if not ch then return nil end
  local order = ch.prefer or M.CHALLENGE_ORDER
  for _, name in ipairs(names) do
    local wildcard = name:sub(1, 2) == "*."
    local identifier = wildcard and name:sub(3) or name
    local tried, ok_any = {}, false
    for _, kind in ipairs(order) do
      local ctype = M.CHALLENGE_TYPES[kind]
      if ch[kind] ~= nil and ctype and (not wildcard or ctype == "dns-01") then
        local token = core.base64url_encode(core.random_bytes(16))
        local ka = token .. ".testing-thumbprint"
        local chal = { identifier = identifier, wildcard = wildcard, type = ctype, token = token,
          key_authorization = ka, dns_value = core.base64url_encode(core.sha256(ka)),
          url = "testing://challenge/" .. token }
        local failure
        if kind == "dns01" then
          local solver = dns01_solver(ch.dns01, { hooks = ctx and ctx.hooks, storage = ctx and ctx.storage })
          local r, err = solver:present(chal)
          if r then
            self.presented[#self.presented + 1] = { type = ctype, identifier = name,
              name = "_acme-challenge." .. identifier, value = chal.dns_value }
            -- no propagation wait: no time passes in a spec unless it moves the clock
          else
            failure = err
          end
          if not failure and self.failing_challenges[ctype] then
            failure = "testing issuer: the TXT record was not found (planned failure of " .. ctype .. ")"
          end
          solver:cleanup(chal)
        else
          self.presented[#self.presented + 1] = { type = ctype, identifier = name }
          if self.failing_challenges[ctype] then
            failure = "testing issuer: validation failed (planned failure of " .. ctype .. ")"
          end
        end
        if not failure then ok_any = true break end
        tried[#tried + 1] = ctype .. " challenge for \"" .. name .. "\": " .. tostring(failure)
      end
    end
    if not ok_any then
      if #tried == 0 then
        return { message = "testing issuer: no challenge of the policy can validate \"" .. name .. "\""
          .. (wildcard and " (a wildcard needs dns-01)" or ""), final = true }, "acme:rejectedIdentifier"
      end
      return { message = table.concat(tried, "; ") }, "acme:unauthorized"
    end
  end
  return nil
end

function Issuer:issue(req, ctx)
  self.calls = self.calls + 1
  self.requests[#self.requests + 1] = req.names
  local r = { names = req.names, profile = req.profile, replaces = req.replaces,
    key_type = req.key_type, csr_pem = req.csr_pem }
  self.reqs[#self.reqs + 1] = r
  local now = ctx and ctx.now or core.now()
  if ctx and ctx.before_order then -- an order budget applies (the policy's order_budget): as ACME's newOrder asks
    local ok, err, code = ctx.before_order(req.names)
    if not ok then return nil, err, code end
  end
  if self.calls <= self.fail then
    return nil, { message = "testing issuer: planned failure " .. self.calls .. " of " .. self.fail,
      final = self.final, retry_after = self.retry_after and (now + self.retry_after) or nil }, self.code
  end
  if self.rate_limited > 0 then
    self.rate_limited = self.rate_limited - 1
    local at = now + self.rate_limit_after
    return nil, { message = "testing issuer: too many certificates already issued (rateLimited), retry after "
      .. require("certmaint.rfc3339").iso(at), retry_after = at }, "acme:rateLimited"
  end
  if req.replaces and self.replaced_refusals > 0 then
    -- what the ACME issuer does with alreadyReplaced: order again, without replaces
    self.replaced_refusals = self.replaced_refusals - 1
    r.replaces_refused = true
    core.log("warn", "testing_already_replaced", { name = req.names[1], replaces = req.replaces })
  end
  local verr, vcode = self:validate(req.names, ctx)
  if verr then return nil, verr, vcode end
  local leaf, serial = core.cert_issue {
    csr = req.csr_pem, names = req.names, cn = req.names[1],
    not_before = now, not_after = now + self.lifetime,
    issuer_cert = self.ca.cert_pem, issuer_key = self.ca.key_pem, ocsp_url = self.ocsp_url,
    crl_url = self.crl_url, must_staple = self.must_staple,
  }
  if not leaf then return nil, serial, "issue" end
  if self.crl_url and self.ca.crl_urls then self.ca.crl_urls[self.crl_url] = true end
  self.issued = self.issued + 1
  return { chain_pem = leaf .. self.ca.cert_pem, serial = serial }
end

-- the policy file, loaded as the daemon loads it ----------------------------

local LOAD_OPTIONS = {
  env = { type = "table" },
  getenv = { type = "function" },
}

--- testing.load_policy(path, {env = {VAR = "value"}}) -> policy | nil, err:
-- load the policy file through certmaint.sandbox.load_policy, the loader
-- `certmaint run`, `check` and SIGHUP use: the same environment (a hook that
-- calls os.rename fails here as it fails in the daemon), the same `require`
-- rules, the same limits. The error is the one `certmaint check` prints.
-- env (a table) or getenv (a function) answers the policy's os.getenv, so a
-- spec chooses the settings the policy reads; without either the real
-- environment is read.
function M.load_policy(path, opts)
  if type(path) ~= "string" then error("testing.load_policy: path must be a string", 2) end
  local o = options.check(opts, LOAD_OPTIONS, "testing.load_policy", 2)
  if o.env and o.getenv then error("testing.load_policy: give env or getenv, not both", 2) end
  local getenv = o.getenv
  if o.env then
    local env = o.env
    getenv = function(k) return env[k] end
  end
  return require("certmaint.sandbox").load_policy(path, { getenv = getenv })
end

-- an engine driven by hand ---------------------------------------------------

local TestEngine = {}
TestEngine.__index = function(t, k)
  local v = TestEngine[k]
  if v ~= nil then return v end
  -- fall through to the engine (status_rows, plan, ...), bound to it
  local ev = t.engine[k]
  if type(ev) == "function" then
    return function(first, ...)
      if first == t then return ev(t.engine, ...) end
      return ev(first, ...)
    end
  end
  return ev
end

local function run_task(fn, ...)
  local task = loop.spawn(fn, ...)
  loop.run_until_idle()
  if not task.done then error("testing: task did not finish (is it waiting on something?)", 3) end
  if not task.ok then error(task.error, 3) end
  return table.unpack(task.results or {})
end

--- testing.engine(policy, {clock=, storage=, issuer=, responder=, start=true}): an
-- engine on the fake clock with memory storage unless the policy names one.
-- It gets an in-process responder (testing.responder; .responder) that
-- answers OCSP and CRL requests for the issuer's testing CA, unless
-- `responder` is given. It starts (loads and obtains) at once unless start=false.
function M.engine(policy, opts)
  opts = opts or {}
  if not core.clock_is_fake() then core.clock_set(M.EPOCH) end
  local storage = opts.storage or policy.storage or require("certmaint.storage.memory").new()
  local responder = opts.responder
  if not responder then
    responder = M.responder()
    local issuer = opts.issuer or policy.issuer
    local members = issuer and require("certmaint.issuer").is_list(issuer) and issuer or { issuer }
    for _, m in ipairs(members) do
      local ok, ca = pcall(function() return m.ca end) -- a strict issuer object may raise on a missing key
      if ok and type(ca) == "table" and ca.cert_pem and ca.ocsp then responder:add_ca(ca) end
    end
  end
  local e = require("certmaint.engine").new(policy, { storage = storage, issuer = opts.issuer, responder = responder })
  local self = setmetatable({ engine = e, storage = storage, clock = opts.clock, responder = responder }, TestEngine)
  if opts.start ~= false then self:start() end
  return self
end

function TestEngine:start() return run_task(self.engine.start, self.engine) end

--- Run one pass ("renew" | "clean" | "ocsp") and the jobs it queued; returns the tick.
function TestEngine:tick(kind) return run_task(self.engine.tick, self.engine, kind) end

--- Run the loop until nothing is runnable, resubmitting failing renewals
-- whose retry time has come as the daemon's renew ticker does (jobs waiting
-- for a later retry time do not count).
function TestEngine:wait()
  loop.run_until_idle()
  while run_task(self.engine.retry_due, self.engine) > 0 do loop.run_until_idle() end
end

--- The cached certificates (tables with names, not_after, pem, ...).
function TestEngine:cache() return self.engine:certificates() end

--- The certificate serving `name` right now, or nil.
function TestEngine:cert(name)
  local id = self.engine.cache:lookup(name)
  return id and self.engine.cache:get(id)
end

function TestEngine:manage(names, o)
  local res = table.pack(run_task(self.engine.manage, self.engine, names, o))
  loop.run_until_idle()
  return table.unpack(res, 1, res.n)
end

--- Forget everything a spec changed in the process: loop, clock, log capture.
function M.reset()
  loop.reset()
  core.clock_set(nil)
  core.log_config { capture = false, echo = true }
  core.log_take()
end

--- testing.capture_logs([{echo = false}]) -> a function returning the log
-- lines since the last call. The lines are kept off stderr while capturing
-- (echo = true prints them as well); testing.reset() ends the capture.
function M.capture_logs(opts)
  local o = options.check(opts, { echo = { type = "boolean", default = false } }, "testing.capture_logs", 2)
  core.log_take()
  core.log_config { capture = true, echo = o.echo }
  return function() return core.log_take() end
end

M.memory = function(o) return require("certmaint.storage.memory").new(o) end

return M
