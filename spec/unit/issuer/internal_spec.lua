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

  it("never issues past its intermediate, and says so when it cuts a leaf short", function()
    local clock = testing.clock(testing.EPOCH)
    local storage = testing.memory()
    local issuer = internal.new { lifetime = "25d", intermediate_lifetime = "30d" }
    local logs = testing.capture_logs()
    assert(issue(issuer, storage, { "a.test" })) -- a fresh intermediate: 30 days left, the full 25
    assert.not_matches("leaf_lifetime_clamped", table.concat(logs(), "\n"), 1, true)
    clock:advance("15d") -- the intermediate is still fresh (replaced from day 20), 15 days left
    local res = assert(issue(issuer, storage, { "a.test" }))
    local int = core.cert_parse(storage:load("pki/authorities/local/intermediate.crt"))
    local leaf = core.cert_parse(res.chain_pem)
    assert.equal(int.not_after, leaf.not_after)
    local text = table.concat(logs(), "\n")
    assert.matches("level=warn event=leaf_lifetime_clamped authority=local lifetime=25d name=a.test "
      .. "not_after=2026-01-31T00:00:00Z why=\"the intermediate expires at 2026-01-31T00:00:00Z\"", text, 1, true)
  end)

  it("refuses a lifetime longer than the intermediate's, and an intermediate's longer than the root's", function()
    local ok, err = pcall(function() return internal.new { lifetime = "400d" } end)
    assert.is_false(ok)
    assert.matches('internal_spec.lua:%d+: certmaint.issuer.internal: option "lifetime" %(400d%) is longer '
      .. "than intermediate_lifetime %(365d%): a certificate cannot outlive the one that signs it", err)
    ok, err = pcall(function() return internal.new { intermediate_lifetime = "4000d" } end)
    assert.is_false(ok, err)
    assert.matches('option "intermediate_lifetime"', err)
  end)

  it("checks every option when the policy loads, naming the field (not at the first issuance)", function()
    local cases = {
      { { key_type = "dsa" }, 'option "key_type" must be one of p256, p384, rsa2048, rsa4096 %(not "dsa"%)' },
      { { name = "../etc" }, 'option "name" must be a folder name' },
      { { common_name = "" }, 'option "common_name" must not be empty' },
      { { ocsp_url = "ldap://x" }, 'option "ocsp_url" must be an http:// or https:// URL' },
      { { crl_url = "x y" }, 'option "crl_url" must be an http:// or https:// URL' },
      { { root_lifetime = 0 }, 'option "root_lifetime" must be at least 1 second' },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(function() return internal.new(c[1]) end)
      assert.is_false(ok)
      assert.matches("internal_spec.lua:%d+: certmaint.issuer.internal: " .. c[2], err)
    end
    assert.is_table(internal.new { key_type = "rsa2048", ocsp_url = "http://127.0.0.1:1/ocsp", name = "my-ca.2" })
  end)

  it("refuses bad options with the caller's file:line", function()
    local ok, err = pcall(function() return internal.new { lifetime = "soon" } end)
    assert.is_false(ok)
    assert.matches("issuer/internal_spec.lua:%d+: certmaint.issuer.internal", err)
  end)
end)
