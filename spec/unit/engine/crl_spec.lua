-- CRL checks (issue 9, item 5): certificates naming CRL distribution points
-- and no OCSP responder are checked against their CRL after each OCSP pass.
-- The CRL is fetched once per URL, verified against the issuer, kept in
-- memory and in storage until its nextUpdate; a listed serial is revoked
-- through handle_revoked. All with the in-process responder: no network.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local keys = require "certmaint.keys"

local CRL_URL = "http://127.0.0.1:1/ca.crl"
local DAY = 86400

describe("the CRL pass", function()
  local clock, ca, logs, storage

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    storage = testing.memory()
    logs = testing.capture_logs()
  end)

  after_each(testing.reset)

  local function policy(o)
    o = o or {}
    return certmaint.policy {
      certificates = o.certificates or { "a.test", "b.test", "c.test" },
      issuer = testing.issuer { ca = ca, lifetime = "30d", crl_url = o.crl_url or CRL_URL, ocsp_url = o.ocsp_url },
      ocsp = o.ocsp,
      on_revoked = o.on_revoked,
    }
  end

  local function engine(o, eo)
    eo = eo or {}
    return testing.engine(policy(o), { clock = clock, storage = eo.storage or storage, responder = eo.responder })
  end

  local function lines(event)
    local out = {}
    for _, l in ipairs(logs()) do
      if l:find("event=" .. event .. " ", 1, true) or l:sub(-#event - 6) == "event=" .. event then
        out[#out + 1] = l
      end
    end
    return out
  end

  it("fetches one CRL for every certificate naming it, verifies it, and stores it", function()
    local e = engine()
    assert.equal(1, e.responder:count("crl", CRL_URL)) -- the start-up OCSP pass ran it
    local tick = e:tick("ocsp")
    assert.equal(3, tick.crl_checked)
    assert.equal(0, tick.crl_fetched, "kept in memory until its nextUpdate")
    assert.equal(0, tick.crl_failed)
    assert.equal(0, tick.crl_revoked)
    assert.equal(1, e.responder:count("crl", CRL_URL))
    local stored = storage:load(keys.crl(CRL_URL))
    assert.is_truthy(stored)
    assert.is_truthy(core.crl_parse(stored, ca.cert_pem, clock:now()), "what is stored verifies")
    assert.equal(1, #lines("crl_updated"))
  end)

  it("replaces a certificate whose serial the CRL lists, with its reason, and leaves the others", function()
    local e = engine()
    local a, b = e:cert("a.test"), e:cert("b.test")
    ca:revoke(a.serial, { reason = "superseded" })
    clock:advance(8 * DAY) -- past the CRL's nextUpdate: fetched again
    local tick = e:tick("ocsp")
    assert.equal(1, tick.crl_fetched)
    assert.equal(1, tick.crl_revoked)
    assert.equal(1, tick.revoked, "the pass's total")
    assert.are_not.equal(a.serial, e:cert("a.test").serial, "replaced")
    assert.equal(b.serial, e:cert("b.test").serial)
    local revoked = table.concat(lines("revoked"), "\n")
    assert.matches("source=crl", revoked, 1, true)
    assert.matches("reason=superseded", revoked, 1, true)
    assert.matches(a.serial, revoked, 1, true)
  end)

  it("goes through on_revoked: \"keep\" keeps the listed certificate", function()
    local seen
    local e = engine { on_revoked = function(cert, info)
      seen = { serial = cert.serial, source = info.source, reason = info.reason }
      return "keep"
    end }
    local a = e:cert("a.test")
    ca:revoke(a.serial, { reason = 1 })
    clock:advance(8 * DAY)
    e:tick("ocsp")
    assert.same({ serial = a.serial, source = "crl", reason = "keyCompromise" }, seen)
    assert.equal(a.serial, e:cert("a.test").serial)
  end)

  it("another instance on the same storage takes the stored CRL instead of fetching", function()
    local e1 = engine()
    assert.equal(1, e1.responder:count("crl"))
    local e2 = engine()
    assert.equal(0, e2.responder:count("crl"), "the stored copy verified and is not stale")
    assert.equal(0, #lines("crl_failed"))
  end)

  it("a stored CRL past its nextUpdate is fetched again, and the clean pass deletes stale ones", function()
    local e = engine()
    clock:advance(8 * DAY)
    local tick = e:tick("clean")
    assert.equal(1, tick.crls_deleted)
    assert.is_nil(storage:load(keys.crl(CRL_URL)))
    e:tick("ocsp")
    assert.equal(2, e.responder:count("crl"))
    assert.is_truthy(storage:load(keys.crl(CRL_URL)))
    assert.equal(0, e:tick("clean").crls_deleted, "a fresh CRL stays")
  end)

  it("the clean pass deletes a stored CRL that does not parse", function()
    local e = engine()
    assert(storage:store(keys.crl("http://127.0.0.1:1/other.crl"), "garbage"))
    assert.equal(1, e:tick("clean").crls_deleted)
    assert.is_truthy(storage:load(keys.crl(CRL_URL)))
  end)

  local function failing(how)
    local e = engine()
    local a = e:cert("a.test")
    ca:revoke(a.serial)
    e.responder:fail(CRL_URL, how)
    clock:advance(8 * DAY)
    logs()
    local before = storage:load(keys.crl(CRL_URL))
    local tick = e:tick("ocsp")
    return e, a, tick, before
  end

  for _, how in ipairs { "error", "http", "timeout", "garbage", "toobig" } do
    it("a CRL that cannot be had (" .. how .. ") is one error naming the URL, and revokes nothing", function()
      local e, a, tick = failing(how)
      assert.equal(1, tick.crl_failed)
      assert.equal(0, tick.crl_revoked)
      local failed = lines("crl_failed")
      assert.equal(1, #failed, "once per URL, not per certificate")
      assert.matches("level=error", failed[1], 1, true)
      assert.matches(CRL_URL, failed[1], 1, true)
      assert.equal(a.serial, e:cert("a.test").serial)
    end)
  end

  it("a CRL signed by another CA is refused (verify), and revokes nothing", function()
    local other = testing.ca { name = "Someone Else" }
    local e, a, tick, before = failing(function() return other:crl() end)
    assert.equal(1, tick.crl_failed)
    assert.matches("code=mismatch", lines("crl_failed")[1] or "", 1, true)
    assert.equal(a.serial, e:cert("a.test").serial)
    assert.equal(before, storage:load(keys.crl(CRL_URL)), "nothing refused is stored")
  end)

  it("a stale CRL from the server is refused", function()
    local e, a, tick = failing(function()
      return ca:crl { this_update = clock:now() - 9 * DAY, next_update = clock:now() - DAY }
    end)
    assert.equal(1, tick.crl_failed)
    assert.matches("code=stale", lines("crl_failed")[1] or "", 1, true)
    assert.equal(a.serial, e:cert("a.test").serial)
  end)

  it("after a failure the next pass tries again and revokes what is listed", function()
    local e, a = failing("error")
    e.responder:fail(CRL_URL, false)
    local tick = e:tick("ocsp")
    assert.equal(1, tick.crl_revoked)
    assert.are_not.equal(a.serial, e:cert("a.test").serial)
  end)

  it("certificates naming an OCSP responder are not CRL-checked", function()
    local e = engine { ocsp_url = "http://127.0.0.1:1/ocsp" }
    assert.equal(0, e.responder:count("crl"))
    assert.equal(0, e:tick("ocsp").crl_checked)
  end)

  it("ocsp.crl_checks = false turns the checks off", function()
    local e = engine { ocsp = { crl_checks = false } }
    assert.equal(0, e.responder:count("crl"))
    local tick = e:tick("ocsp")
    assert.equal(0, tick.crl_checked)
    assert.equal(0, tick.crl_fetched)
  end)

  it("groups certificates by URL: two URLs, two fetches", function()
    local e = engine()
    local other_url = "http://127.0.0.1:1/other.crl"
    local other = ca:issue { names = { "x.test" }, crl_url = other_url }
    assert(e.engine.cache:add(other.cert_pem))
    e:tick("ocsp")
    assert.equal(1, e.responder:count("crl", CRL_URL))
    assert.equal(1, e.responder:count("crl", other_url))
  end)

  it("a chain without its issuer's certificate is an error naming it; the others are checked", function()
    local e = engine()
    -- (a certificate of a known issuer is checked with its siblings' issuer certificate)
    local leaf_only = testing.ca { name = "Lonely CA" }:issue { names = { "lonely.test" }, crl_url = CRL_URL }
    assert(e.engine.cache:add(leaf_only.cert_pem:match("^.-END CERTIFICATE%-%-%-%-%-\n")))
    logs()
    local tick = e:tick("ocsp")
    assert.equal(3, tick.crl_checked)
    local failed = lines("crl_failed")
    assert.equal(1, #failed)
    assert.matches("name=lonely.test", failed[1], 1, true)
    assert.matches("code=chain", failed[1], 1, true)
  end)
end)
