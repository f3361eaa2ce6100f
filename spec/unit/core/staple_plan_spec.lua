-- cache:staple_plan (core/lua/lstaple_plan.c): for the OCSP pass's
-- stored-staple step, each certificate's staple key (certmagic's, as
-- engine/ocsp.lua's staple_key makes it from cache:get), first name, first
-- responder URL and current staple, for exactly the ones refresh_staple
-- would look for in storage.
local core = require "certmaint.core"
local ocsp = require "certmaint.engine.ocsp"

local read = require("helpers.fixtures").reader("ocsp")

local T = 1767225600
local NOW = T + 3600
local CA, LEAF = read("ca.pem"), read("leaf.pem")

describe("cache:staple_plan", function()
  local cache
  before_each(function() cache = core.cache_new() end)
  after_each(function() cache:close() end)

  it("gives the key, name, URL and current staple of each certificate the pass looks up", function()
    local id = assert(cache:add(LEAF .. CA))
    local must = assert(cache:add(read("leaf_must_staple.pem") .. CA))
    local crl_only = assert(cache:add(read("leaf_crl_only.pem") .. CA)) -- no responder: left out
    local r = assert(cache:verify_staples({ id }, { read("ocsp_good.der") }, { now = NOW, attach = true }))
    assert.is_true(r.attached[1])
    local plan = cache:staple_plan({ id, crl_only, must, string.rep("0", 64) }, NOW)
    assert.same({ id, must }, plan.ids)
    for j, which in ipairs { id, must } do
      local cert = cache:get(which)
      assert.equal(ocsp.staple_key(cert), plan.keys[j])
      assert.equal(cert.names[1], plan.names[j])
      assert.equal(cert.ocsp_urls[1], plan.urls[j])
    end
    local want = cache:get(id).ocsp
    assert.same(want, plan.current[1])
    assert.equal(read("ocsp_good.der"), plan.current[1].der)
    assert.is_false(plan.current[2])
  end)

  it("leaves out a certificate without its issuer in the chain", function()
    local alone = assert(cache:add(LEAF))
    assert.same({}, cache:staple_plan({ alone }, NOW).ids)
  end)

  it("leaves out certificates that have expired at now, and raises for a bad id", function()
    local id = assert(cache:add(LEAF .. CA))
    local not_after = cache:get(id).not_after
    assert.same({}, cache:staple_plan({ id }, not_after).ids)
    assert.same({ id }, cache:staple_plan({ id }, not_after - 1).ids)
    assert.has_error(function() cache:staple_plan({ "nope" }, NOW) end, "cache:staple_plan: ids[1] is not a certificate id")
  end)
end)
