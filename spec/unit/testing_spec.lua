-- The public contract of certmaint.testing (DESIGN.md).
local testing = require "certmaint.testing"
local certmaint = require "certmaint"
local core = require "certmaint.core"

describe("certmaint.testing", function()
  after_each(testing.reset)

  it("clock: now, advance (seconds or durations), set", function()
    local clock = testing.clock(1000)
    assert.equal(1000, clock:now())
    assert.equal(1000, core.now())
    clock:advance(60)
    assert.equal(1060, clock:now())
    clock:advance("1h")
    assert.equal(4660, clock:now())
    clock:set(50)
    assert.equal(50, core.now())
  end)

  it("ca: issues leaves chained to it, answers OCSP, revokes", function()
    testing.clock(testing.EPOCH)
    local ca = testing.ca()
    local leaf = ca:issue { names = { "a.test", "b.test" }, not_before = testing.EPOCH,
      not_after = testing.EPOCH + 86400, ocsp_url = "http://127.0.0.1:1/ocsp" }
    local facts = assert(core.cert_parse(leaf.cert_pem))
    assert.same({ "a.test", "b.test" }, facts.names)
    assert.equal(testing.EPOCH + 86400, facts.not_after)
    assert.same({ "http://127.0.0.1:1/ocsp" }, facts.ocsp_urls)
    assert.is_true(core.key_matches(leaf.cert_pem, leaf.key_pem))
    local good = assert(core.ocsp_response_parse(ca:ocsp(leaf.cert_pem), leaf.cert_pem, ca.cert_pem))
    assert.equal("good", good.status)
    ca:revoke(leaf.serial)
    local revoked = assert(core.ocsp_response_parse(ca:ocsp(leaf.cert_pem), leaf.cert_pem, ca.cert_pem))
    assert.equal("revoked", revoked.status)
    local custom = assert(core.ocsp_response_parse(ca:ocsp(leaf.cert_pem, { status = "unknown",
      this_update = testing.EPOCH, next_update = testing.EPOCH + 3600 }), leaf.cert_pem, ca.cert_pem))
    assert.equal("unknown", custom.status)
    assert.equal(testing.EPOCH + 3600, custom.next_update)
  end)

  it("issuer: counts what it issued and fails its first N calls", function()
    testing.clock(testing.EPOCH)
    local issuer = testing.issuer { lifetime = "10d", fail = 2 }
    local key = core.key_generate("p256")
    local csr = core.csr_create(key, { "a.test" })
    local req = { names = { "a.test" }, csr_pem = csr }
    assert.is_nil(issuer:issue(req, {}))
    assert.is_nil(issuer:issue(req, {}))
    local res = assert(issuer:issue(req, {}))
    assert.equal(1, issuer.issued)
    assert.equal(3, issuer.calls)
    local facts = core.cert_parse(res.chain_pem)
    assert.equal(10 * 86400, facts.not_after - facts.not_before)
  end)

  it("engine: tick, wait, cache", function()
    local clock = testing.clock(testing.EPOCH)
    local issuer = testing.issuer { lifetime = "9d" }
    local e = testing.engine(certmaint.policy { certificates = { "a.test" }, issuer = issuer }, { clock = clock })
    assert.equal(1, #e:cache())
    clock:advance("5d") -- under 10 days the default window is the last half
    assert.equal(1, e:tick("renew").renewed)
    e:wait()
    assert.equal(2, issuer.issued)
  end)

  it("rejects unknown options, naming them", function()
    local ok, err = pcall(function() return testing.issuer { lifetme = "1d" } end)
    assert.is_false(ok)
    assert.matches("unknown option \"lifetme\"", err)
    assert.matches("testing_spec.lua:%d+", err)
  end)
end)
