--- certmaint.acme.order: one certificate through an ACME order (RFC 8555 7.4),
-- inside a loop task: new order (or the stored one, after a restart),
-- authorizations (already-valid ones reused), challenges by the policy's
-- preference, polling, finalize with the CSR, chain download (alternates
-- with `preferred_chain`).
--
--   order.obtain(s, req) -> { chain_pem =, key_pem =, order_url =, chains = n,
--                             commit_deletes = { keys } } | nil, err, code
--     s   = { client =, account =, solvers = (challenges.build's list), storage =,
--             issuer_key =, poll_timeout = seconds, max_poll_interval = seconds }
--     req = { names = {...}, csr_pem =, key_pem = (the CSR's key), replaces =,
--             profile =, preferred_chain = }
--
-- Order state: while an order is open its URL is kept in storage under
--   certmaint/acme/orders/<issuer>/<name>.json  (keys.acme_order)
-- so a restart in the middle resumes it (same names, same account, not yet
-- expired or invalid) instead of opening a second order. Before finalize the
-- CSR's private key is stored beside it (<name>.key, keys.acme_order_key,
-- 0600): an order the CA finalized, or even issued, before the process died
-- is then finished by whoever resumes it (a restart, another instance of a
-- cluster), with that key (returned as key_pem), instead of issuing twice.
-- Both stay in storage until the caller has stored the certificate: they are
-- returned as commit_deletes for the caller to delete in the same commit, so
-- no crash point between the CA issuing and the certificate being stored
-- loses the certificate. A finalized order whose key is not stored (req
-- without key_pem) cannot be resumed: a new order is made then.
--
-- Polling adapts: the first wait is FIRST_POLL seconds and doubles up to
-- max_poll_interval; a Retry-After from the CA replaces the computed wait.
-- A validation failure names the identifier and the challenge and is not
-- final (a wrong answer or a closed port can be fixed; the engine backs off).
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local keys = require "certmaint.keys"
local client_mod = require "certmaint.acme.client"
local challenges = require "certmaint.acme.challenges"

local M = {}

M.FIRST_POLL = 0.05
M.MAX_POLL_INTERVAL = 2
M.POLL_TIMEOUT = 300
M.MAX_RETRY_AFTER = 600 -- a longer Retry-After while polling: give up the attempt, retry then

local failure = client_mod.failure

local function json_array(t) return setmetatable(t, core.json_array_mt) end

local function encode(v) return (assert(core.json_encode(v))) end

local function identifier_of(name)
  local _, kind = keys.normalize(name)
  if kind == "ipv4" or kind == "ipv6" then return { type = "ip", value = name } end
  return { type = "dns", value = name }
end

local function same_names(a, b)
  if type(a) ~= "table" or #a ~= #b then return false end
  local set = {}
  for _, n in ipairs(a) do set[n] = true end
  for _, n in ipairs(b) do if not set[n] then return false end end
  return true
end

--- PEM (CERTIFICATE REQUEST) -> base64url of the DER.
function M.csr_b64u(csr_pem)
  local body = csr_pem:match("%-%-%-%-%-BEGIN [%u ]*REQUEST%-%-%-%-%-(.-)%-%-%-%-%-END")
  if not body then return nil, "the CSR is not PEM" end
  local der, err = core.base64_decode((body:gsub("%s", "")))
  if not der then return nil, "the CSR's PEM does not decode: " .. tostring(err) end
  return core.base64url_encode(der)
end

----------------------------------------------------------------------------
-- polling

-- GET-as-POST url until done(resp.json) is true; waits adapt (see header).
local function poll(s, url, done, what)
  local deadline = core.now() + (s.poll_timeout or M.POLL_TIMEOUT)
  local wait = M.FIRST_POLL
  local max = s.max_poll_interval or M.MAX_POLL_INTERVAL
  while true do
    local resp, err, code = s.client:post_as_get(url, s.account.signer, s.account.url, nil, "acme.poll")
    if not resp then return nil, err, code end
    local doc = resp.json
    if type(doc) ~= "table" then
      return nil, failure(what .. ": " .. url .. " did not answer a JSON object", "acme:malformedResponse", false)
    end
    if done(doc) then return doc, resp end
    local now = core.now()
    local delay = wait
    if resp.retry_after then
      delay = resp.retry_after - now
      if delay > M.MAX_RETRY_AFTER then
        return nil, failure(string.format("%s: the CA asks to come back in %ds (Retry-After)", what, math.floor(delay)),
          "acme:retryAfter", false, resp.retry_after)
      end
      if delay < 0 then delay = 0 end
    end
    if now + delay > deadline then
      return nil, failure(string.format("%s: still %s after %ds at %s", what, tostring(doc.status),
        math.floor(s.poll_timeout or M.POLL_TIMEOUT), url), "timeout", false)
    end
    loop.sleep(delay)
    wait = math.min(wait * 2, max)
  end
end

----------------------------------------------------------------------------
-- the stored order

local function load_record(s, primary)
  local key = keys.acme_order(s.issuer_key, primary)
  local text = s.storage:load(key)
  if not text then return nil, key end
  local doc = core.json_decode(text, 64 * 1024)
  if type(doc) ~= "table" or type(doc.url) ~= "string" then return nil, key end
  return doc, key
end

local function store_record(s, key, rec)
  local ok, err = s.storage:store(key, encode(rec))
  if not ok then core.log("warn", "acme_order_not_saved", { key = key, error = err }) end
end

local function drop_record(s, key)
  s.storage:delete(key)
  s.storage:delete((key:gsub("%.json$", ".key")))
end

-- the stored key of the order whose record is at rkey (keys.acme_order_key)
local function key_of(rkey) return (rkey:gsub("%.json$", ".key")) end

-- The stored order for req, fetched again, when it can still be used:
-- o, url, key_pem (of an order already finalized) | nil, why (not usable: a
-- new order is needed) | nil, err, code, true when the CA could not be asked
-- or storage not read (keep the record for the next attempt).
local function resume(s, req, rec, rkey)
  if not same_names(rec.names, req.names) then return nil, "other names" end
  if rec.account ~= s.account.url then return nil, "another account" end
  local resp, err, code = s.client:post_as_get(rec.url, s.account.signer, s.account.url, nil, "acme.poll")
  if not resp then
    if not tostring(code):match("^acme:") and not tostring(code):match("^http:") then return nil, err, code, true end
    return nil, tostring(code)
  end
  local o = resp.json
  if type(o) ~= "table" then return nil, "not an order" end
  if o.status == "pending" or o.status == "ready" then return o, rec.url end
  if o.status ~= "processing" and o.status ~= "valid" then return nil, "status " .. tostring(o.status) end
  -- finalized: usable only with the key its CSR was made for
  local key, kerr, kcode = s.storage:load(key_of(rkey))
  if not key then
    if kcode ~= "ENOENT" and kcode ~= nil then return nil, kerr, kcode, true end
    return nil, "status " .. o.status .. " and the CSR's key is not stored"
  end
  return o, rec.url, key
end

local function new_order(s, req)
  local dir, err, code = s.client:directory()
  if not dir then return nil, err, code end
  if s.before_order then
    -- the caller's order budget (engine/order_budget.lua): a new order only with room in it
    local ok
    ok, err, code = s.before_order(req.names)
    if not ok then return nil, err, code end
  end
  local ids = {}
  for i, n in ipairs(req.names) do ids[i] = identifier_of(n) end
  local payload = { identifiers = json_array(ids) }
  if req.profile then payload.profile = req.profile end
  if req.replaces then payload.replaces = req.replaces end
  local resp
  resp, err, code = s.client:post(dir.newOrder, encode(payload), s.account.signer, s.account.url, nil, "acme.order")
  if not resp and req.replaces and (code == "acme:alreadyReplaced" or code == "acme:malformed"
      or code == "acme:conflict") then
    -- ARI must never keep a certificate from being renewed: ask again without it
    core.log("warn", "acme_replaces_refused", { name = req.names[1], replaces = req.replaces,
      error = type(err) == "table" and err.message or err })
    payload.replaces = nil
    resp, err, code = s.client:post(dir.newOrder, encode(payload), s.account.signer, s.account.url, nil, "acme.order")
  end
  if not resp then return nil, err, code end
  if not resp.location or type(resp.json) ~= "table" then
    return nil, failure("newOrder at " .. dir.newOrder .. " answered without an order (Location and JSON)",
      "acme:malformedResponse", false)
  end
  core.log("info", "acme_order_created", { name = req.names[1], order = resp.location })
  return resp.json, resp.location
end

----------------------------------------------------------------------------
-- authorizations

local function chal_error_text(ch)
  local e = ch and ch.error
  if type(e) ~= "table" then return "no reason given" end
  local t = type(e.type) == "string" and e.type:gsub("^urn:ietf:params:acme:error:", "") or "?"
  return string.format("%s (%s)", tostring(e.detail or "no detail"), t), t
end

-- Present a challenge for one pending authorization and tell the CA to check.
-- Returns a record for cleanup and polling.
local function start_authz(s, authz_url, authz)
  local ident = type(authz.identifier) == "table" and authz.identifier.value or "?"
  local wildcard = authz.wildcard == true
  local offered = {}
  for _, ch in ipairs(type(authz.challenges) == "table" and authz.challenges or {}) do
    if type(ch) == "table" and type(ch.type) == "string" and not offered[ch.type] then offered[ch.type] = ch end
  end
  local cands = challenges.candidates(s.solvers, offered, wildcard)
  if #cands == 0 then
    local types = {}
    for t in pairs(offered) do types[#types + 1] = t end
    table.sort(types)
    return nil, failure(string.format("no configured challenge can answer for %s%s (the CA offers %s)",
      wildcard and "*." or "", ident, #types > 0 and table.concat(types, ", ") or "none"
    ) .. (wildcard and "; a wildcard needs dns01" or ""), "acme:noChallenge", true)
  end
  local thumb = s.account.signer:thumbprint()
  local errs = {}
  for _, c in ipairs(cands) do
    local ch, solver = c.challenge, c.entry.solver
    local ka = tostring(ch.token) .. "." .. thumb
    local chal = { identifier = ident, wildcard = wildcard, type = ch.type, token = ch.token,
      key_authorization = ka, url = ch.url }
    if ch.type == "dns-01" then chal.dns_value = core.digest("sha256", ka, "base64url") end
    local ok, err, code = solver:present(chal)
    if ok and solver.wait then ok, err, code = solver:wait(chal) end
    if ok then
      local active = { authz_url = authz_url, chal = chal, solver = solver, kind = c.entry.kind,
        identifier = ident }
      if ch.status == "pending" or ch.status == nil then
        local resp
        resp, err, code = s.client:post(ch.url, "{}", s.account.signer, s.account.url, nil, "acme.challenge")
        if not resp then
          solver:cleanup(chal)
          return nil, err, code
        end
      end
      -- else the CA is already checking it (an order resumed after a restart):
      -- only answer again
      return active
    end
    solver:cleanup(chal)
    errs[#errs + 1] = tostring(type(err) == "table" and err.message or err)
    core.log("warn", "acme_challenge_present_failed", { name = ident, challenge = ch.type, solver = c.entry.kind,
      error = errs[#errs], code = code })
  end
  return nil, failure(string.format("%s: no challenge could be presented: %s", ident, table.concat(errs, "; ")),
    "acme:present", false)
end

local function finish_authz(s, active)
  local doc, err, code = poll(s, active.authz_url, function(a) return a.status ~= "pending" end,
    string.format("%s challenge for %s", active.chal.type, active.identifier))
  if not doc then return nil, err, code end
  if doc.status == "valid" then return true end
  local ch
  for _, c in ipairs(type(doc.challenges) == "table" and doc.challenges or {}) do
    if type(c) == "table" and c.type == active.chal.type then ch = c end
  end
  local why, t = chal_error_text(ch)
  local err, code = failure(string.format("%s challenge for %s (%s) failed: %s", active.chal.type,
    active.identifier, active.kind, why), "acme:" .. (t or "invalid"), false)
  return nil, err, code, true
end

-- Every authorization of order o valid, or nil, err, code, dead (dead: the
-- order cannot succeed any more, an authorization failed).
local function authorize(s, o)
  local started, err, code, dead = {}, nil, nil, false
  for _, url in ipairs(type(o.authorizations) == "table" and o.authorizations or {}) do
    local resp
    resp, err, code = s.client:post_as_get(url, s.account.signer, s.account.url, nil, "acme.authz")
    if not resp then break end
    local a = resp.json or {}
    if a.status == "pending" then
      local active
      active, err, code = start_authz(s, url, a)
      if not active then break end
      started[#started + 1] = active
    elseif a.status ~= "valid" then
      local ident = type(a.identifier) == "table" and a.identifier.value or url
      err, code = failure(string.format("the authorization for %s is %s", ident, tostring(a.status)),
        "acme:authorization", false)
      dead = true
      break
    end
  end
  if not err then
    for _, active in ipairs(started) do
      local ok
      ok, err, code, dead = finish_authz(s, active)
      if not ok then break end
    end
  end
  for _, active in ipairs(started) do
    local ok, cerr = active.solver:cleanup(active.chal)
    if not ok then
      core.log("warn", "acme_challenge_cleanup_failed", { name = active.identifier, challenge = active.chal.type,
        error = type(cerr) == "table" and cerr.message or cerr })
    end
  end
  if err then return nil, err, code, dead end
  return true
end

----------------------------------------------------------------------------
-- chains

local function dn_cn(dn)
  if type(dn) ~= "string" then return nil end
  return dn:match("^CN=([^,]*)") or dn:match(",CN=([^,]*)")
end

-- Does the chain (PEM) match preferred (a name): the topmost certificate's
-- issuer CN first (certbot's --preferred-chain), else any certificate's.
local function chain_rank(pem, preferred)
  local facts = core.cert_parse(pem)
  if not facts then return nil end
  local issuers = { dn_cn(facts.issuer) }
  for _, der in ipairs(facts.chain_der or {}) do
    local f = core.cert_parse_der(der)
    issuers[#issuers + 1] = f and dn_cn(f.issuer) or false
  end
  if issuers[#issuers] == preferred then return 1 end
  for _, cn in ipairs(issuers) do if cn == preferred then return 2 end end
  return nil
end

local PEM_CHAIN = { "Accept: application/pem-certificate-chain" }

local function download(s, url, preferred)
  local resp, err, code = s.client:post_as_get(url, s.account.signer, s.account.url, PEM_CHAIN, "acme.certificate")
  if not resp then return nil, err, code end
  local chains = 1
  local pem = resp.body
  if preferred and preferred ~= "" then
    local best = chain_rank(pem, preferred)
    for _, alt in ipairs(resp.links.alternate or {}) do
      if best == 1 then break end
      local aresp = s.client:post_as_get(alt, s.account.signer, s.account.url, PEM_CHAIN, "acme.certificate")
      if aresp then
        chains = chains + 1
        local r = chain_rank(aresp.body, preferred)
        if r and (not best or r < best) then pem, best = aresp.body, r end
      end
    end
    if not best then
      core.log("info", "acme_preferred_chain_missing", { preferred_chain = preferred, url = url })
    end
  end
  return pem, chains
end

----------------------------------------------------------------------------

function M.obtain(s, req)
  local primary = req.names[1]
  local rec, rkey = load_record(s, primary)
  local o, url, key
  local drop_after_new_order = false
  if rec then
    local unreachable
    o, url, key, unreachable = resume(s, req, rec, rkey)
    if o then
      core.log("info", "acme_order_resumed", { name = primary, order = url, status = o.status })
      if type(key) ~= "string" then key = nil end
    elseif unreachable then
      local code = key
      return nil, url, code
    else
      core.log("info", "acme_order_not_resumed", { name = primary, order = rec.url, why = url })
      -- another account's order is kept until this account's new order
      -- exists: when the CA says this account does not (it forgot it, and
      -- another instance registered again and made that order), the issuer
      -- loads the account storage holds now and the next try resumes it
      if url == "another account" then drop_after_new_order = true else drop_record(s, rkey) end
    end
  end
  if not o then
    local code
    o, url, code = new_order(s, req)
    if not o then return nil, url, code end
    if drop_after_new_order then drop_record(s, rkey) end
  end
  return M.continue(s, req, o, url, rkey, key)
end

-- key_pem: the stored key of a resumed order already finalized (else req.key_pem)
function M.continue(s, req, o, url, rkey, key_pem)
  local primary = req.names[1]
  key_pem = key_pem or req.key_pem
  local kkey = key_of(rkey)
  if o.status == "pending" or o.status == "ready" then
    store_record(s, rkey, { url = url, names = json_array({ table.unpack(req.names) }), account = s.account.url,
      created = core.now(), expires = o.expires })
  end
  local ok, err, code
  if o.status == "pending" then
    local dead
    ok, err, code, dead = authorize(s, o)
    if not ok then
      -- an invalid authorization makes the order invalid: do not resume it;
      -- anything else (a challenge that could not be presented, the CA out of
      -- reach) leaves it pending for the next attempt
      if dead then drop_record(s, rkey) end
      return nil, err, code
    end
    o, err, code = poll(s, url, function(d) return d.status ~= "pending" end, "order for " .. primary)
    if not o then return nil, err, code end
  end
  if o.status == "ready" then
    local csr
    csr, err = M.csr_b64u(req.csr_pem)
    if not csr then return nil, failure(err, "acme:badCSR", true) end
    if req.key_pem then
      -- whoever resumes a finalized order needs this key: no finalize unless it is stored
      ok, err, code = s.storage:store(kkey, req.key_pem)
      if not ok then
        return nil, failure(string.format("the order for %s is not finalized: its key could not be stored at %s: %s",
          primary, kkey, tostring(type(err) == "table" and err.message or err)), code or "storage", false)
      end
    end
    key_pem = req.key_pem
    local resp
    resp, err, code = s.client:post(o.finalize, encode({ csr = csr }), s.account.signer, s.account.url, nil, "acme.finalize")
    if not resp then
      if code == "acme:badCSR" or code == "acme:orderNotReady" then drop_record(s, rkey) end
      return nil, err, code
    end
    o = resp.json or o
  end
  if o.status == "processing" or o.status == "ready" then
    o, err, code = poll(s, url, function(d) return d.status ~= "processing" and d.status ~= "ready" end,
      "order for " .. primary)
    if not o then return nil, err, code end
  end
  if o.status ~= "valid" or type(o.certificate) ~= "string" then
    drop_record(s, rkey)
    local why = type(o.error) == "table" and (" (" .. tostring(o.error.detail) .. ")") or ""
    return nil, failure(string.format("the order for %s is %s%s at %s", primary, tostring(o.status), why, url),
      "acme:order" .. tostring(o.status):gsub("^%l", string.upper), false)
  end
  local pem, chains
  pem, chains, code = download(s, o.certificate, req.preferred_chain)
  if not pem then return nil, chains, code end
  if key_pem and not core.key_matches(pem, key_pem) then
    -- a stored key of another attempt: this certificate can never be used
    drop_record(s, rkey)
    return nil, failure(string.format("the certificate of the order for %s at %s is not for the stored key %s",
      primary, url, kkey), "mismatch", false)
  end
  return { chain_pem = pem, key_pem = key_pem, order_url = url, certificate_url = o.certificate, chains = chains,
    commit_deletes = { rkey, kkey } }
end

return M
