local testing = require "certmaint.testing"
local core = require "certmaint.core"
local helpers = require "helpers.policies"

describe("policies/local.lua", function()
  after_each(testing.reset)

  it("names its issuer on the first line", function()
    local first = helpers.read(helpers.ROOT .. "/policies/local.lua"):match("^[^\n]*")
    assert.matches("^%-%- issuer: .*internal", first)
  end)

  it("obtains every certificate from the internal CA and renews in the last half of a 30 s life", function()
    local clock = testing.clock(testing.EPOCH)
    local policy = assert(testing.load_policy(helpers.ROOT .. "/policies/local.lua", { env = { CERTMAINT_LIFETIME = "30s", CERTMAINT_RENEW_CHECK = "3s" } }))
    assert.equal(3, policy.renew_check_interval)
    local e = testing.engine(policy, { clock = clock, storage = testing.memory() })
    local certs = e:cache()
    assert.equal(4, #certs)
    local c = e:cert("localhost")
    assert.equal(30, c.not_after - c.not_before)
    assert.is_truthy(e:cert("x.dev.localhost"))        -- the wildcard entry
    assert.is_truthy(e:cert("127.0.0.1"))
    clock:advance(14)
    assert.equal(0, e:tick("renew").renewed)
    clock:advance(2)
    assert.equal(4, e:tick("renew").renewed)
    assert.is_true(e:cert("localhost").not_after > c.not_after)
  end)

  it("chains every leaf to the local root kept in storage", function()
    testing.clock(testing.EPOCH)
    local storage = testing.memory()
    local e = testing.engine(assert(testing.load_policy(helpers.ROOT .. "/policies/local.lua", { env = {} })), { storage = storage })
    local root = assert(storage:load("pki/authorities/local/root.crt"))
    local leaf = e:cert("localhost")
    local int = assert(core.cert_parse(assert(storage:load("pki/authorities/local/intermediate.crt"))))
    assert.equal(int.subject, leaf.issuer)
    assert.equal(7 * 86400, leaf.not_after - leaf.not_before)
    assert.is_truthy(core.cert_parse(root).is_ca)
  end)
end)
