local testing = require "certmaint.testing"
local core = require "certmaint.core"
local internal = require "certmaint.issuer.internal"
local loop = require "certmaint.loop"

local function issue(issuer, storage, names)
  local key = core.key_generate("p256")
  local csr = core.csr_create(key, names)
  local task = loop.spawn(function()
    return issuer:issue({ names = names, csr_pem = csr }, { storage = storage, now = core.now() })
  end)
  loop.run_until_idle()
  assert.is_true(task.done)
  return table.unpack(task.results)
end

describe("issuer.internal", function()
  after_each(testing.reset)

  it("makes its CA on first use and keeps it in storage, keys 0600-worthy names", function()
    testing.clock(testing.EPOCH)
    local storage = testing.memory()
    local issuer = internal.new { lifetime = "7d" }
    local res = assert(issue(issuer, storage, { "a.test" }))
    for _, k in ipairs { "root.crt", "root.key", "intermediate.crt", "intermediate.key" } do
      assert.is_truthy(storage:load("pki/authorities/local/" .. k))
    end
    local leaf = core.cert_parse(res.chain_pem)
    assert.equal(7 * 86400, leaf.not_after - leaf.not_before)
    assert.same({ "a.test" }, leaf.names)
    assert.equal(1, #leaf.chain_der)
  end)

  it("shares one CA between instances on one storage", function()
    testing.clock(testing.EPOCH)
    local storage = testing.memory()
    local a = assert(issue(internal.new {}, storage, { "a.test" }))
    local b = assert(issue(internal.new {}, storage, { "b.test" }))
    assert.equal(core.cert_parse(a.chain_pem).issuer, core.cert_parse(b.chain_pem).issuer)
    local ia = core.cert_parse(a.chain_pem).chain_der[1]
    local ib = core.cert_parse(b.chain_pem).chain_der[1]
    assert.equal(ia, ib)
  end)

  it("replaces the intermediate once a third of its life is left, under the same root", function()
    local clock = testing.clock(testing.EPOCH)
    local storage = testing.memory()
    local issuer = internal.new { intermediate_lifetime = "30d" }
    issue(issuer, storage, { "a.test" })
    local int1 = storage:load("pki/authorities/local/intermediate.crt")
    local root1 = storage:load("pki/authorities/local/root.crt")
    clock:advance("21d")
    local res = assert(issue(issuer, storage, { "a.test" }))
    assert.not_equal(int1, storage:load("pki/authorities/local/intermediate.crt"))
    assert.equal(root1, storage:load("pki/authorities/local/root.crt"))
    local leaf = core.cert_parse(res.chain_pem)
    assert.is_true(leaf.not_after <= clock:now() + 30 * 86400)
  end)

  it("never issues past its intermediate", function()
    testing.clock(testing.EPOCH)
    local storage = testing.memory()
    local res = assert(issue(internal.new { lifetime = "400d", intermediate_lifetime = "30d" }, storage, { "a.test" }))
    local int = core.cert_parse(storage:load("pki/authorities/local/intermediate.crt"))
    assert.is_true(core.cert_parse(res.chain_pem).not_after <= int.not_after)
  end)

  it("refuses bad options with the caller's file:line", function()
    local ok, err = pcall(function() return internal.new { lifetime = "soon" } end)
    assert.is_false(ok)
    assert.matches("issuer/internal_spec.lua:%d+: certmaint.issuer.internal", err)
  end)
end)
