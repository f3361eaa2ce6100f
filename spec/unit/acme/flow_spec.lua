-- The ACME flow (client, account, order, http-01 solver, issuer.acme) against
-- a simulated CA in the client's transport (spec/helpers/fake_acme.lua):
-- http-01 is really fetched from the solver's listener on 127.0.0.1.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local testing = require "certmaint.testing"
local keys = require "certmaint.keys"
local acme = require "certmaint.issuer.acme"
local client_mod = require "certmaint.acme.client"
local order = require "certmaint.acme.order"
local fake = require "helpers.fake_acme"


local tasks = require "helpers.loop_task"
local function run(fn) return tasks.run(fn, 30) end
local free_port = tasks.free_port

local function csr_for(names)
  local key = assert(core.key_generate("p256"))
  return (core.csr_create(key, names)), key
end

-- an issuer (its own directory URL so its client is fresh) wired to a fake CA
local seq = 0
local function setup(opts, issuer_opts)
  seq = seq + 1
  local port = free_port()
  opts = opts or {}
  opts.http_port = port
  local ca = fake.new(opts)
  local o = { directory = fake.DIRECTORY .. "?spec=" .. seq, email = "ops@example.test",
    challenges = { http01 = { listen = "127.0.0.1:" .. port } } }
  for k, v in pairs(issuer_opts or {}) do o[k] = v end
  local iss = acme.new(o)
  ca:attach(iss:client())
  return iss, ca, testing.memory(), port
end

local function issue(iss, storage, names, extra)
  local csr = csr_for(names)
  local req = { names = names, csr_pem = csr }
  for k, v in pairs(extra or {}) do req[k] = v end
  return run(function() return iss:issue(req, { storage = storage }) end)
end

describe("acme flow", function()
  local logs
  before_each(function() logs = testing.capture_logs() end)
  after_each(testing.reset)

  it("obtains a certificate through http-01 served on the solver's listener", function()
    local iss, ca, storage, port = setup()
    local res, err = issue(iss, storage, { "a.example.test", "www.a.example.test" })
    assert.is_nil(err)
    local facts = assert(core.cert_parse(res.chain_pem))
    assert.same({ "a.example.test", "www.a.example.test" }, facts.names)
    assert.equal(2, ca.responded)
    assert.equal(1, ca.issued)
    -- the listener is closed once nothing is left to validate
    local closed = run(function() return loop.http { url = "http://127.0.0.1:" .. port .. "/", timeout = 2 } end)
    assert.is_nil(closed)
    -- account in certmagic's layout, key usable, no order left open
    local files = keys.acme_account(iss.directory, "ops@example.test")
    local reg = assert(core.json_decode(assert(storage:load(files.registration))))
    assert.equal("valid", reg.status)
    assert.truthy(reg.location:match("^https://ca.test/acct/"))
    assert.same({ "mailto:ops@example.test" }, { table.unpack(reg.contact) })
    assert.is_true(reg.termsOfServiceAgreed)
    assert.truthy(core.jws_signer(assert(storage:load(files.private_key))))
    -- the order's state stays until the caller stores the certificate: it is
    -- handed back for the caller's commit to delete
    local rkey = keys.acme_order(iss.issuer_key, "a.example.test")
    assert.truthy(storage:load(rkey))
    assert.same({ rkey, keys.acme_order_key(iss.issuer_key, "a.example.test") }, res.commit_deletes)
  end)

  it("registers one account for many orders at once and shares the nonce pool", function()
    local iss, ca, storage = setup()
    local done, results = 0, {}
    for i = 1, 20 do
      loop.spawn(function()
        local names = { "n" .. i .. ".example.test" }
        results[i] = { iss:issue({ names = names, csr_pem = csr_for(names) }, { storage = storage }) }
        done = done + 1
      end)
    end
    assert(loop.run_until(function() return done == 20 end, { timeout = 30 }))
    for i = 1, 20 do assert.truthy(results[i][1], tostring(results[i][2] and results[i][2].message)) end
    assert.equal(1, ca.counts["new-account"])
    assert.equal(20, ca.issued)
    local st = iss:client().stats
    -- most POSTs ride on a nonce from an earlier response
    assert.is_true(st.pooled_nonce_used > 4 * st.nonce_fetches, core.json_encode(st))
  end)

  it("reuses a stored account (certmagic's files) instead of registering", function()
    local iss, ca, storage = setup()
    assert(issue(iss, storage, { "a.example.test" }))
    local iss2 = acme.new { directory = iss.directory, email = "ops@example.test",
      challenges = { http01 = { listen = iss.checked_challenges.opts.http01.listen } } }
    assert.equal(iss:client(), iss2:client()) -- one client a directory
    assert(issue(iss2, storage, { "b.example.test" }))
    assert.equal(1, ca.counts["new-account"])
  end)

  it("retries badNonce transparently", function()
    local iss, ca, storage = setup { }
    ca.bad_nonce_every = 3
    local res, err = issue(iss, storage, { "a.example.test" })
    assert.is_nil(err)
    assert.truthy(res)
    assert.is_true(iss:client().stats.bad_nonce >= 3)
  end)

  it("reuses authorizations that are already valid (no challenge answered)", function()
    local iss, ca, storage = setup { reuse_valid = { ["a.example.test"] = true } }
    assert(issue(iss, storage, { "a.example.test" }))
    assert.is_nil(ca.responded)
  end)

  it("turns a problem into an error with the ACME type as code, and Retry-After into retry_after", function()
    local iss, ca, storage = setup()
    ca.fail["new-order"] = { status = 429, type = "rateLimited", detail = "too many certificates", retry_after = "120" }
    local t0 = core.now()
    local res, err, code = issue(iss, storage, { "a.example.test" })
    assert.is_nil(res)
    assert.equal("acme:rateLimited", code)
    assert.is_false(err.final)
    assert.near(t0 + 120, err.retry_after, 5)
    assert.equal(err.retry_after, err.retry_at)
    assert.truthy(err.message:find("too many certificates (rateLimited) at https://ca.test/new-order", 1, true))
  end)

  it("makes malformed, unauthorized and badCSR final; 5xx not", function()
    for _, case in ipairs {
      { 400, "malformed", true }, { 403, "unauthorized", true }, { 400, "badCSR", true },
      { 500, "serverInternal", false }, { 503, "malformed", false },
    } do
      local iss, ca, storage = setup()
      ca.fail["new-order"] = { status = case[1], type = case[2] }
      local _, err, code = issue(iss, storage, { "a.example.test" })
      assert.equal("acme:" .. case[2], code)
      assert.equal(case[3], err.final, case[2] .. " " .. case[1])
    end
  end)

  it("names the identifier and the challenge when validation fails, not final, no order left to resume", function()
    local iss, ca, storage = setup()
    -- the CA checks another port than the one we answer on
    ca.http_port = free_port()
    local res, err, code = issue(iss, storage, { "bad.example.test" })
    assert.is_nil(res)
    assert.equal("acme:incorrectResponse", code)
    assert.is_false(err.final)
    assert.truthy(err.message:find("http-01 challenge for bad.example.test (http01) failed", 1, true), err.message)
    assert.is_nil(storage:load(keys.acme_order(iss.issuer_key, "bad.example.test")))
  end)

  it("honours Retry-After while polling, and polls fast without it", function()
    local iss, ca, storage = setup { valid_after = 3 }
    local t0 = core.now()
    assert(issue(iss, storage, { "a.example.test" }))
    local fast = core.now() - t0
    assert.is_true(fast < 1, "no Retry-After: adaptive short waits, took " .. fast)

    iss, ca, storage = setup { valid_after = 2, retry_after = "1" }
    t0 = core.now()
    assert(issue(iss, storage, { "b.example.test" }))
    local slow = core.now() - t0
    assert.is_true(slow >= 1, "Retry-After: 1 honoured, took " .. slow)
  end)

  it("resumes a stored order after a restart instead of opening a second one", function()
    local iss, ca, storage = setup()
    -- an order opened by an earlier run (stored, then the process died)
    local acct = run(function() return iss:account(storage) end)
    local o = ca:on_new_order(nil, { identifiers = setmetatable({ { type = "dns", value = "r.example.test" } },
      core.json_array_mt) }, nil, ca.accounts[acct.url])
    local url = o.headers.location
    assert(storage:store(keys.acme_order(iss.issuer_key, "r.example.test"),
      core.json_encode { url = url, names = setmetatable({ "r.example.test" }, core.json_array_mt), account = acct.url }))
    local before = ca.counts["new-order"] or 0
    local res, err = issue(iss, storage, { "r.example.test" })
    assert.is_nil(err)
    assert.truthy(res)
    assert.equal(before, ca.counts["new-order"] or 0)
    assert.equal(url, res.order_url)
    local found = false
    for _, l in ipairs(logs()) do if l:find("event=acme_order_resumed", 1, true) then found = true end end
    assert.is_true(found)
  end)

  describe("an order the CA finalized before the process died", function()
    -- the process "dies" once the CA has issued: the certificate cannot be downloaded
    local function die_after_issuance(ca)
      local handle = ca.handle
      ca.handle = function(self, req)
        if req.url:find("/cert/", 1, true) then return nil, "connection refused", "connect" end
        return handle(self, req)
      end
      return function() ca.handle = handle end
    end

    -- res, key (the CSR's), err, code
    local function issue_with_key(iss, storage, names)
      local csr, key = csr_for(names)
      local res, err, code = run(function()
        return iss:issue({ names = names, csr_pem = csr, key_pem = key }, { storage = storage })
      end)
      return res, key, err, code
    end

    it("is finished by the next attempt with the stored key: no second order, no second issuance", function()
      local iss, ca, storage = setup()
      local revive = die_after_issuance(ca)
      local res, first_key = issue_with_key(iss, storage, { "f.example.test" })
      assert.is_nil(res)
      assert.equal(1, ca.issued)
      local kkey = keys.acme_order_key(iss.issuer_key, "f.example.test")
      assert.equal(first_key, storage:load(kkey))
      assert.is_true(require("certmaint.storage.common").is_private(kkey)) -- 0600 in every backend
      revive()
      -- the next attempt (a restart, another cluster member) comes with a new key
      local again, second_key = issue_with_key(iss, storage, { "f.example.test" })
      assert.truthy(again)
      assert.are_not.equal(first_key, second_key)
      assert.equal(1, ca.counts["new-order"])
      assert.equal(1, ca.issued)
      assert.equal(first_key, again.key_pem)
      assert.is_true(core.key_matches(again.chain_pem, again.key_pem))
      assert.same({ keys.acme_order(iss.issuer_key, "f.example.test"), kkey }, again.commit_deletes)
      local resumed = false
      for _, l in ipairs(logs()) do
        if l:find("event=acme_order_resumed", 1, true) and l:find("status=valid", 1, true) then resumed = true end
      end
      assert.is_true(resumed)
    end)

    it("is not resumed when its key was not stored (no key_pem given): a new order", function()
      local iss, ca, storage = setup()
      local revive = die_after_issuance(ca)
      assert.is_nil(issue(iss, storage, { "g.example.test" }))
      revive()
      local again = assert(issue(iss, storage, { "g.example.test" }))
      assert.equal(2, ca.counts["new-order"])
      assert.equal(2, ca.issued)
      assert.is_nil(again.key_pem)
      local why = false
      for _, l in ipairs(logs()) do
        if l:find("event=acme_order_not_resumed", 1, true) and l:find("key is not stored", 1, true) then why = true end
      end
      assert.is_true(why)
    end)

    it("is never finalized when the key cannot be stored, and says where", function()
      local iss, ca, storage = setup()
      local store = storage.store
      storage.store = function(self, key, value, o)
        if key:match("%.key$") and key:find("orders", 1, true) then return nil, "disk full", "ENOSPC" end
        return store(self, key, value, o)
      end
      local res, _, err, code = issue_with_key(iss, storage, { "h.example.test" })
      storage.store = store
      assert.is_nil(res)
      assert.equal(0, ca.issued or 0)
      assert.equal("ENOSPC", code)
      assert.is_false(err.final)
      assert.truthy(err.message:find("not finalized", 1, true), err.message)
      assert.truthy(err.message:find(keys.acme_order_key(iss.issuer_key, "h.example.test"), 1, true), err.message)
    end)

    it("with a stored key that is not the certificate's: dropped, named, a new order next", function()
      local iss, ca, storage = setup()
      local revive = die_after_issuance(ca)
      assert.is_nil((issue_with_key(iss, storage, { "m.example.test" })))
      revive()
      local kkey = keys.acme_order_key(iss.issuer_key, "m.example.test")
      assert(storage:store(kkey, (assert(core.key_generate("p256")))))
      local res, err, code = run(function()
        local names = { "m.example.test" }
        return iss:issue({ names = names, csr_pem = (csr_for(names)) }, { storage = storage })
      end)
      assert.is_nil(res)
      assert.equal("mismatch", code)
      assert.truthy(err.message:find(kkey, 1, true), err.message)
      assert.is_nil(storage:load(kkey))
      assert.is_nil(storage:load(keys.acme_order(iss.issuer_key, "m.example.test")))
      assert.truthy(issue_with_key(iss, storage, { "m.example.test" }))
      assert.equal(2, ca.counts["new-order"])
    end)
  end)

  it("registers again with the same key when the CA forgot the account (a restarted test CA)", function()
    local iss, ca, storage = setup()
    assert(issue(iss, storage, { "a.example.test" }))
    local files = keys.acme_account(iss.directory, "ops@example.test")
    local old = core.json_decode(storage:load(files.registration)).location
    local key = storage:load(files.private_key)
    ca.accounts = {} -- the CA lost its state
    local res, err = issue(iss, storage, { "b.example.test" })
    assert.is_nil(err)
    assert.truthy(res)
    local new = core.json_decode(storage:load(files.registration)).location
    assert.are_not.equal(old, new)
    assert.equal(key, storage:load(files.private_key))
    assert.truthy(ca.accounts[new])
  end)

  it("resumes another instance's order made with the account it registered again (the CA forgot the old one)", function()
    -- bench/chaos.sh: Pebble restarted, member 2 registered again and opened
    -- an order; member 1, its account URL cached from before, did not resume
    -- that order ("another account") and opened a second one
    local iss, ca, storage, port = setup()
    -- a second instance on the same storage (its solver listens only while it solves)
    local other = acme.new { directory = iss.directory, email = "ops@example.test",
      challenges = { http01 = { listen = "127.0.0.1:" .. port } } }
    ca:attach(other:client())
    local stale = run(function() return iss:account(storage) end)
    assert.equal(stale.url, run(function() return other:account(storage) end).url)
    ca.accounts = {} -- the CA lost its state
    assert(issue(other, storage, { "a.example.test" })) -- the other instance registers again
    local fresh = run(function() return other:account(storage) end)
    assert.are_not.equal(stale.url, fresh.url)
    local o = ca:on_new_order(nil, { identifiers = setmetatable({ { type = "dns", value = "r.example.test" } },
      core.json_array_mt) }, nil, ca.accounts[fresh.url])
    local url = o.headers.location
    local rkey = keys.acme_order(iss.issuer_key, "r.example.test")
    assert(storage:store(rkey, core.json_encode { url = url,
      names = setmetatable({ "r.example.test" }, core.json_array_mt), account = fresh.url }))
    logs()
    local res, err = issue(iss, storage, { "r.example.test" })
    assert.is_nil(err)
    assert.equal(url, res.order_url) -- that order, not a new one
    local resumed = 0
    for _, l in ipairs(logs()) do if l:find("event=acme_order_resumed", 1, true) then resumed = resumed + 1 end end
    assert.equal(1, resumed)
  end)

  it("keeps the stored order when the CA cannot be reached, and resumes it later", function()
    local iss, ca, storage = setup()
    local acct = run(function() return iss:account(storage) end)
    local o = ca:on_new_order(nil, { identifiers = setmetatable({ { type = "dns", value = "u.example.test" } },
      core.json_array_mt) }, nil, ca.accounts[acct.url])
    local rkey = keys.acme_order(iss.issuer_key, "u.example.test")
    assert(storage:store(rkey, core.json_encode { url = o.headers.location,
      names = setmetatable({ "u.example.test" }, core.json_array_mt), account = acct.url }))
    local handle = ca.handle
    ca.handle = function(self, req)
      if req.url:find("/order/", 1, true) then return nil, "connection refused", "connect" end
      return handle(self, req)
    end
    local res, err, code = issue(iss, storage, { "u.example.test" })
    assert.is_nil(res)
    assert.equal("connect", code)
    assert.is_false(err.final)
    assert.truthy(storage:load(rkey))
    ca.handle = handle
    local again = assert(issue(iss, storage, { "u.example.test" }))
    assert.equal(o.headers.location, again.order_url)
    assert.is_nil(ca.counts["new-order"]) -- the stored one was used, no new order
  end)

  it("does not resume an order for other names", function()
    local iss, ca, storage = setup()
    local acct = run(function() return iss:account(storage) end)
    assert(storage:store(keys.acme_order(iss.issuer_key, "r.example.test"),
      core.json_encode { url = "https://ca.test/order/zzz", names = setmetatable({ "other.test" }, core.json_array_mt),
        account = acct.url }))
    assert(issue(iss, storage, { "r.example.test" }))
    assert.equal(1, ca.counts["new-order"])
  end)

  it("sends replaces and profile, and retries at once without replaces when the CA refuses it", function()
    local iss, ca, storage = setup({}, { profile = "shortlived" })
    ca.fail["new-order"] = { status = 409, type = "alreadyReplaced", times = 1 }
    local res, err = issue(iss, storage, { "a.example.test" }, { replaces = "aaa.bbb" })
    assert.is_nil(err)
    assert.truthy(res)
    assert.equal(2, ca.counts["new-order"])
    assert.is_nil(ca.last_order_payload.replaces)
    assert.equal("shortlived", ca.last_order_payload.profile)
  end)

  it("picks the alternate chain named by preferred_chain, the default otherwise", function()
    local iss, _, storage = setup({}, { preferred_chain = "Fake Root B" })
    local res = assert(issue(iss, storage, { "a.example.test" }))
    local facts = core.cert_parse(res.chain_pem)
    local top = core.cert_parse_der(facts.chain_der[#facts.chain_der])
    assert.equal("CN=Fake Root B", top.subject)
    local iss2, _, storage2 = setup()
    local res2 = assert(issue(iss2, storage2, { "a.example.test" }))
    local top2 = core.cert_parse_der(core.cert_parse(res2.chain_pem).chain_der[1])
    assert.equal("CN=Fake Root A", top2.subject)
    -- the request's choice wins over the issuer's
    local res3 = assert(issue(iss, storage, { "b.example.test" }, { preferred_chain = "Fake Root A" }))
    assert.equal("CN=Fake Root A", core.cert_parse_der(core.cert_parse(res3.chain_pem).chain_der[1]).subject)
  end)

  it("needs dns-01 for a wildcard and says so", function()
    local iss, _, storage = setup()
    local res, err, code = issue(iss, storage, { "*.example.test" })
    assert.is_nil(res)
    assert.equal("acme:noChallenge", code)
    assert.truthy(err.message:find("a wildcard needs dns01", 1, true), err.message)
  end)

  it("binds the account to an external account (EAB, HS256 over the account JWK)", function()
    local mac = core.base64url_encode(string.rep("k", 32))
    local iss, ca, storage = setup({}, { eab = { kid = "kid-1", hmac_key = mac } })
    assert(issue(iss, storage, { "a.example.test" }))
    local eab = ca.last_account_payload.externalAccountBinding
    local protected = core.json_decode(core.base64url_decode(eab.protected))
    assert.equal("HS256", protected.alg)
    assert.equal("kid-1", protected.kid)
    assert.equal("https://ca.test/new-account", protected.url)
    local acct = run(function() return iss:account(storage) end)
    assert.equal(acct.signer:jwk(), core.base64url_decode(eab.payload))
    local again = core.json_decode(core.jws_hmac(mac, core.base64url_decode(eab.protected), acct.signer:jwk()))
    assert.equal(again.signature, eab.signature)
  end)

  it("revokes by account key, or by the certificate's key with ctx.key_pem", function()
    local iss, ca, storage = setup()
    local names = { "a.example.test" }
    local csr, key = csr_for(names)
    local res = assert(run(function() return iss:issue({ names = names, csr_pem = csr }, { storage = storage }) end))
    assert.is_true(run(function() return iss:revoke({ pem = res.chain_pem }, { storage = storage, reason = 4 }) end))
    assert.equal(4, ca.revoked.reason)
    assert.is_false(ca.revoked.by_jwk)
    assert.equal(core.base64url_encode(core.cert_parse(res.chain_pem).der), ca.revoked.certificate)
    assert.is_true(run(function() return iss:revoke(res.chain_pem, { storage = storage, key_pem = key }) end))
    assert.is_true(ca.revoked.by_jwk)
    local ok, err = run(function() return iss:revoke(res.chain_pem, { storage = storage, reason = 7 }) end)
    assert.is_nil(ok)
    assert.truthy(err.message:find("reason", 1, true))
  end)

  it("reads renewalInfo when the directory has it, and says unsupported otherwise", function()
    local iss, _, storage = setup()
    local res = assert(issue(iss, storage, { "a.example.test" }))
    local ok, err, code = run(function() return iss:renewal_info({ pem = res.chain_pem }, { storage = storage }) end)
    assert.is_nil(ok)
    assert.equal("unsupported", err)
    assert.equal("unsupported", code)

    local asked
    iss = setup({ renewal_info = function(id)
      asked = id
      return { body = { suggestedWindow = { start = "2030-01-01T00:00:00Z", ["end"] = "2030-01-02T00:00:00Z" },
        explanationURL = "https://ca.test/why" }, retry_after = "3600" }
    end })
    local t0 = core.now()
    local ri = assert(run(function() return iss:renewal_info(res.chain_pem, { storage = storage }) end))
    assert.equal(core.ari_cert_id(res.chain_pem), asked)
    assert.equal(1893456000, ri.start)
    assert.equal(1893456000 + 86400, ri["end"])
    assert.equal("https://ca.test/why", ri.explanation_url)
    assert.near(t0 + 3600, ri.retry_after, 5)
  end)
end)

describe("acme.client helpers", function()
  it("reads Retry-After as seconds or an HTTP date", function()
    assert.equal(1000 + 30, client_mod.parse_retry_after("30", 1000))
    assert.equal(784111777, client_mod.parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 0))
    assert.is_nil(client_mod.parse_retry_after("soon", 0))
    assert.is_nil(client_mod.parse_retry_after(nil, 0))
  end)

  it("reads Link headers, several joined by commas", function()
    local l = client_mod.parse_links('<https://a/cert/1/1>;rel="alternate", <https://a/issuer>; rel=up, '
      .. '<https://a/cert/1/2>;rel="alternate"')
    assert.same({ "https://a/cert/1/1", "https://a/cert/1/2" }, l.alternate)
    assert.same({ "https://a/issuer" }, l.up)
  end)

  it("builds the protected header with kid, or the JWK without an account", function()
    local signer = assert(core.jws_signer(assert(core.key_generate("p256"))))
    local p = core.json_decode(client_mod.protected(signer, "n1", "https://x/y", "https://x/acct/1"))
    assert.same({ alg = "ES256", kid = "https://x/acct/1", nonce = "n1", url = "https://x/y" }, p)
    p = core.json_decode(client_mod.protected(signer, "n1", "https://x/y"))
    assert.equal("EC", p.jwk.kty)
    assert.is_nil(p.kid)
  end)

  it("turns the CSR's PEM into base64url DER", function()
    local csr, _ = csr_for({ "a.example.test" })
    local b = assert(order.csr_b64u(csr))
    assert.same({ "a.example.test" }, core.csr_parse(core.base64url_decode(b)).names)
    assert.is_nil(order.csr_b64u("garbage"))
  end)
end)

describe("acme client: a directory that is not one", function()
  -- the CA's answer as the transport hands it over
  local function client_answering(raw)
    local c = client_mod.new { directory = "https://ca.invalid/dir?bad=" .. tostring(raw) }
    local asked = 0
    function c:transport() asked = asked + 1 return raw end
    return c, function() return asked end
  end

  for what, raw in pairs {
    ["a 503 problem"] = { status = 503, headers = { ["content-type"] = "application/problem+json",
      ["retry-after"] = "30" }, body = '{"type":"urn:ietf:params:acme:error:serverInternal","detail":"down"}' },
    ["cut-off JSON"] = { status = 200, headers = { ["content-type"] = "application/json" }, body = '{"newNonce":' },
    ["JSON without the URLs"] = { status = 200, headers = { ["content-type"] = "application/json" },
      body = '{"newNonce":"https://ca.invalid/nonce"}' },
  } do
    it("fails with an error, never as a directory (" .. what .. "), and a nonce cannot be had", function()
      local c = client_answering(raw)
      local dir, err, code = run(function() return c:directory() end)
      assert.is_nil(dir)
      assert.equal("table", type(err))
      assert.is_string(code)
      assert.is_false(err.message:find("raised", 1, true) ~= nil)
      if raw.status == 503 then
        assert.equal("acme:serverInternal", code)
        assert.is_false(err.final)
        assert.is_number(err.retry_after)
      else
        assert.equal("acme:directory", code)
        assert.matches("is not a directory", err.message, 1, true)
      end
      local n, nerr, ncode = run(function() return c:nonce() end)
      assert.is_nil(n)
      assert.equal(code, ncode)
      assert.equal("table", type(nerr))
    end)
  end
end)
