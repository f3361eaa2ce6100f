-- core.crl_parse (crl:lookup, crl:info), core.crl_peek, core.crl_build and cache:crl_due, seen
-- from Lua, over tests/fixtures/ocsp/ (its README says what each CRL must give).
local core = require "certmaint.core"

local read = require("helpers.fixtures").reader("ocsp")

local T, DAY = 1767225600, 86400
local NOW = T + 3600
local CA, CA_KEY = read("ca.pem"), read("ca.key")

local function fails(code, data, issuer, now, skew)
  local crl, err, c = core.crl_parse(data, issuer or CA, now, skew)
  assert.is_nil(crl)
  assert.is_string(err)
  assert.equal(code, c)
  return err
end

describe("core.crl_parse", function()
  it("verifies a CRL and looks serials up as cert.serial writes them", function()
    for _, name in ipairs { "crl_revoked.der", "crl_revoked.pem" } do
      local crl = assert(core.crl_parse(read(name), CA, NOW))
      assert.same({ this_update = T, next_update = T + 7 * DAY, count = 42, number = "10" }, crl:info())
      local leaf = assert(core.cert_parse(read("leaf.pem")))
      assert.same({ revoked_at = T - DAY, reason = "keyCompromise" }, crl:lookup(leaf.serial))
      assert.same({ revoked_at = T - DAY, reason = "keyCompromise" }, crl:lookup("001001"))
      assert.same({ revoked_at = T - 2 * DAY }, crl:lookup("FF00FF00FF00FF00FF00FF00FF00FF00FF00FF"))
      assert.same({ revoked_at = T - 3600, reason = "unspecified" }, crl:lookup("3007")) -- i = 1
      assert.same({ revoked_at = T - 11 * 3600, reason = "aACompromise" }, crl:lookup("304d")) -- i = 11
      assert.same({ revoked_at = T - 12 * 3600 }, crl:lookup("3054")) -- i = 12: no reason
      assert.same({ revoked_at = T - 8 * 3600 }, crl:lookup("3038")) -- i = 8: 7 is no reason
      assert.is_nil(crl:lookup("1002"))
      assert.is_nil(crl:lookup(assert(core.cert_parse(read("leaf_crl_only.pem"))).serial))
      assert.has_error(function() crl:lookup("not hex") end, "crl:lookup: serial is not hex (offset 0)")
      assert.has_error(function() crl:lookup({}) end)
    end
  end)

  it("refuses a wrong signer, another issuer, stale and future CRLs, broken input", function()
    fails("verify", read("crl_wrong_signer.der"), CA, NOW)
    fails("mismatch", read("crl_other_issuer.der"), CA, NOW)
    fails("mismatch", read("crl_revoked.der"), read("other_ca.pem"), NOW)
    fails("verify", read("crl_revoked.der"), read("impostor.pem"), NOW)
    assert.matches("stale", fails("stale", read("crl_stale.der"), CA, NOW))
    fails("notyet", read("crl_notyet.der"), CA, NOW)
    fails("stale", read("crl_revoked.der"), CA, T + 7 * DAY)
    fails("notyet", read("crl_revoked.der"), CA, T - 1, 0)
    assert.is_userdata(core.crl_parse(read("crl_revoked.der"), CA, T - 1, 1))
    assert.is_userdata(core.crl_parse(read("crl_stale.der"), CA)) -- no now: no time checks
    for _, name in ipairs { "crl_truncated.der", "crl_trailing.der", "crl_garbage.der", "leaf.pem" } do
      fails("parse", read(name), CA, NOW)
    end
    fails("parse", read("crl_revoked.der"), "not a certificate", NOW)
    fails("parse", "", CA, NOW)
    assert.has_error(function() core.crl_parse(read("crl_revoked.der"), CA, NOW, -5) end)
  end)

  it("refuses more than 32 MiB with toobig", function()
    local err = fails("toobig", ("0"):rep(32 * 1024 * 1024 + 1), CA, NOW)
    assert.matches("33554433 bytes", err)
  end)

  it("reads openssl ca -gencrl's CRL", function()
    local info = assert(core.crl_peek(read("openssl_crl.der")))
    local crl = assert(core.crl_parse(read("openssl_crl.der"), CA, info.this_update + 60))
    assert.same({ revoked_at = 1767139200, reason = "keyCompromise" }, crl:lookup("1001"))
    assert.equal("20", crl:info().number)
  end)

  it("is closed by close(), <close> and the collector; a closed CRL raises", function()
    local crl = assert(core.crl_parse(read("crl_empty.der"), CA, NOW))
    assert.matches("^crl %(0 entries%)$", tostring(crl))
    crl:close()
    crl:close()
    assert.matches("closed", tostring(crl))
    assert.has_error(function() crl:lookup("01") end, "crl: used after close")
    assert.has_error(function() crl:info() end, "crl: used after close")
    do
      local c <close> = assert(core.crl_parse(read("crl_empty.der"), CA, NOW))
      assert.is_nil(c:lookup("1001"))
    end
  end)
end)

describe("core.crl_peek", function()
  it("reads times, count and number without verifying", function()
    assert.same({ this_update = T, next_update = T + 7 * DAY, count = 42, number = "10" },
      core.crl_peek(read("crl_wrong_signer.der")))
    assert.same({ this_update = T, count = 0 }, core.crl_peek(read("crl_empty_no_next.der")))
    assert.equal(T - DAY, core.crl_peek(read("crl_stale.der")).next_update)
    assert.equal("parse", select(3, core.crl_peek(read("crl_truncated.der"))))
    assert.equal("parse", select(3, core.crl_peek("garbage")))
  end)
end)

describe("core.crl_build", function()
  it("builds a CRL that crl_parse reads back, reasons by name or number", function()
    local der = assert(core.crl_build { issuer_cert = CA, issuer_key = CA_KEY, this_update = T, next_update = T + DAY,
      number = "2a", entries = {
        { serial = "0aBc", revoked_at = T - 5, reason = "superseded" },
        { serial = "1", revoked_at = T - 6, reason = 9 },
        { serial = "ff", revoked_at = T - 7 },
      } })
    local crl = assert(core.crl_parse(der, CA, NOW))
    assert.same({ this_update = T, next_update = T + DAY, count = 3, number = "2a" }, crl:info())
    assert.same({ revoked_at = T - 5, reason = "superseded" }, crl:lookup("abc"))
    assert.same({ revoked_at = T - 6, reason = "privilegeWithdrawn" }, crl:lookup("01"))
    assert.same({ revoked_at = T - 7 }, crl:lookup("FF"))
    local empty = assert(core.crl_build { issuer_cert = CA, issuer_key = CA_KEY, this_update = T })
    assert.same({ this_update = T, count = 0 }, core.crl_peek(empty))
  end)

  it("checks its options: unknown keys and wrong types raise, bad values fail", function()
    assert.has_error(function()
      core.crl_build { issuer_cert = CA, issuer_key = CA_KEY, this_update = T, next_updat = T }
    end)
    assert.has_error(function()
      core.crl_build { issuer_cert = CA, issuer_key = CA_KEY, this_update = T, entries = { { serial = "01" } } }
    end)
    assert.has_error(function()
      core.crl_build { issuer_cert = CA, issuer_key = CA_KEY, this_update = T,
        entries = { { serial = "01", revoked_at = T, reason = "bogus" } } }
    end)
    assert.has_error(function()
      core.crl_build { issuer_cert = CA, issuer_key = CA_KEY, this_update = T,
        entries = { { serial = "01", revoked_at = T, when = T } } }
    end)
    assert.has_error(function() core.crl_build { issuer_cert = CA, this_update = T } end)
    local der, _, code = core.crl_build { issuer_cert = CA, issuer_key = CA_KEY, this_update = T,
      entries = { { serial = "xyz", revoked_at = T } } }
    assert.is_nil(der)
    assert.equal("invalid", code)
    assert.equal("mismatch", select(3, core.crl_build { issuer_cert = CA, issuer_key = read("other_ca.key"),
      this_update = T }))
  end)
end)

describe("cache:crl_due", function()
  it("lists unexpired certificates with a CRL point and no OCSP responder", function()
    local c = core.cache_new()
    local crl_only = assert(c:add(read("leaf_crl_only.pem") .. CA))
    assert(c:add(read("leaf.pem") .. CA))               -- OCSP and CRL: OCSP is asked
    assert(c:add(read("leaf_must_staple.pem") .. CA))   -- OCSP only
    assert(c:add(CA))                                   -- neither
    assert.same({ crl_only }, c:crl_due(NOW))
    assert.same({ crl_only }, c:crl_due(NOW, 1))
    assert.same({}, c:crl_due(4860000000)) -- expired by then
    assert.has_error(function() c:crl_due(NOW, 0) end)
    c:close()
  end)
end)
