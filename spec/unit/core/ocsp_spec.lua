-- core.ocsp_request, core.ocsp_response_parse (with its time checks) and core.ocsp_response_peek,
-- seen from Lua, over tests/fixtures/ocsp/ (its README says what each file must give), plus
-- must_staple in core.cert_parse and the cache.
local core = require "certmaint.core"

local read = require("helpers.fixtures").reader("ocsp")

local T, DAY = 1767225600, 86400
local NOW = T + 3600
local CA, LEAF = read("ca.pem"), read("leaf.pem")

local function parse(name, now, skew)
  return core.ocsp_response_parse(read(name), LEAF, CA, now, skew)
end

local function fails(code, name, now, skew)
  local info, err, c = parse(name, now, skew)
  assert.is_nil(info)
  assert.equal(code, c)
  assert.is_string(err)
  return err
end

describe("core.ocsp_request", function()
  it("is byte for byte what `openssl ocsp -no_nonce` sends, from PEM or DER", function()
    local want = read("openssl_request.der")
    assert.equal(want, core.ocsp_request(LEAF, CA))
    local leaf_der = assert(core.cert_parse(LEAF)).der
    local ca_der = assert(core.cert_parse(CA)).der
    assert.equal(want, core.ocsp_request(leaf_der, ca_der))
    assert.not_equal(want, core.ocsp_request(read("leaf_crl_only.pem"), CA))
  end)

  it("fails with parse for what is no certificate, and raises for non-strings", function()
    local r, err, code = core.ocsp_request("garbage", CA)
    assert.is_nil(r)
    assert.equal("parse", code)
    assert.matches("certificate", err)
    assert.equal("parse", select(3, core.ocsp_request(LEAF, "")))
    assert.has_error(function() core.ocsp_request(nil, CA) end)
  end)
end)

describe("core.ocsp_response_parse", function()
  it("reads good, unknown and revoked responses with every reason", function()
    local g = assert(parse("ocsp_good.der", NOW))
    assert.same({ status = "good", this_update = T, next_update = T + 7 * DAY, produced_at = T }, g)
    assert.equal("unknown", assert(parse("ocsp_unknown.der", NOW)).status)
    local names = { [0] = "unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
      "cessationOfOperation", "certificateHold", nil, "removeFromCRL", "privilegeWithdrawn", "aACompromise" }
    for r = 0, 10 do
      if r ~= 7 then
        local info = assert(parse(("ocsp_revoked_%d.der"):format(r), NOW))
        assert.same({ status = "revoked", this_update = T, next_update = T + 7 * DAY, produced_at = T,
          revoked_at = T - DAY, reason = names[r] }, info)
      end
    end
    local none = assert(parse("ocsp_revoked_none.der", NOW))
    assert.equal("revoked", none.status)
    assert.is_nil(none.reason)
  end)

  it("fails a stale response and one from the future (skew 300 s unless given)", function()
    assert.matches("stale", fails("stale", "ocsp_stale.der", NOW))
    fails("notyet", "ocsp_notyet.der", NOW)
    fails("stale", "ocsp_good.der", T + 7 * DAY)
    assert.is_table(parse("ocsp_good.der", T + 7 * DAY - 1))
    assert.is_table(parse("ocsp_good.der", T - 300))
    fails("notyet", "ocsp_good.der", T - 301)
    fails("notyet", "ocsp_good.der", T - 1, 0)
    assert.is_table(parse("ocsp_good.der", T - 3600, 3600))
    -- no nextUpdate: never stale
    assert.is_nil(assert(parse("ocsp_good_no_next.der", T + 1000 * DAY)).next_update)
    -- without now nothing is checked for time
    assert.equal(T - DAY, assert(parse("ocsp_stale.der")).next_update)
    assert.is_table(parse("ocsp_notyet.der", 0))
    assert.has_error(function() parse("ocsp_good.der", NOW, -1) end)
    assert.has_error(function() parse("ocsp_good.der", "soon") end)
  end)

  it("trusts only the issuer and responders it delegated to with OCSPSigning", function()
    assert.equal("good", assert(parse("ocsp_delegated.der", NOW)).status)
    fails("verify", "ocsp_delegated_no_eku.der", NOW)
    fails("verify", "ocsp_wrong_key.der", NOW)
    fails("verify", "ocsp_other_issuer.der", NOW)
    local _, _, code = core.ocsp_response_parse(read("ocsp_good.der"), read("leaf_crl_only.pem"), CA, NOW)
    assert.equal("mismatch", code)
    _, _, code = core.ocsp_response_parse(read("ocsp_good.der"), LEAF, read("impostor.pem"), NOW)
    assert.equal("verify", code)
  end)

  it("reads what openssl's responder answers", function()
    local info = assert(parse("openssl_revoked.der"))
    assert.equal("revoked", info.status)
    assert.equal("keyCompromise", info.reason)
    assert.equal(1767139200, info.revoked_at)
    assert.is_table(parse("openssl_revoked.der", info.this_update + 60))
  end)

  it("fails broken input with parse and error statuses with ocsp:<status>, peek too", function()
    for _, name in ipairs { "ocsp_truncated.der", "ocsp_trailing.der", "ocsp_garbage.der" } do
      fails("parse", name, NOW)
      assert.equal("parse", select(3, core.ocsp_response_peek(read(name))))
    end
    for _, st in ipairs { "malformedRequest", "internalError", "tryLater", "sigRequired", "unauthorized" } do
      fails("ocsp:" .. st, "ocsp_status_" .. st .. ".der", NOW)
      assert.equal("ocsp:" .. st, select(3, core.ocsp_response_peek(read("ocsp_status_" .. st .. ".der"))))
    end
    assert.equal("toobig", select(3, core.ocsp_response_parse(("x"):rep(65537), LEAF, CA, NOW)))
  end)

  it("peek reads what a response says without verifying it", function()
    assert.equal(T - DAY, assert(core.ocsp_response_peek(read("ocsp_stale.der"))).next_update)
    assert.equal("good", assert(core.ocsp_response_peek(read("ocsp_wrong_key.der"))).status)
  end)
end)

describe("must_staple", function()
  it("is in cert_parse facts: true only with the TLS Feature status_request", function()
    assert.is_true(assert(core.cert_parse(read("leaf_must_staple.pem"))).must_staple)
    assert.is_false(assert(core.cert_parse(LEAF)).must_staple)
    assert.is_false(assert(core.cert_parse(CA)).must_staple)
    local der = assert(core.cert_parse(read("leaf_must_staple.pem"))).der
    assert.is_true(assert(core.cert_parse_der(der)).must_staple)
  end)

  it("core.cert_issue{must_staple = true} makes such certificates", function()
    local key = core.key_generate()
    local pem = assert(core.cert_issue { subject_key = core.key_generate(), names = { "ms.example" },
      issuer_cert = CA, issuer_key = read("ca.key"), not_before = T, not_after = T + DAY, must_staple = true })
    assert.is_true(core.cert_parse(pem).must_staple)
    assert.has_error(function()
      core.cert_issue { subject_key = key, issuer_key = key, cn = "x", not_before = T, not_after = T + 1,
        must_staple = "yes" }
    end, nil)
  end)

  it("is a cache flag: cache:get(id).must_staple and status_json's must_staple", function()
    local c = core.cache_new()
    local ms = assert(c:add(read("leaf_must_staple.pem") .. CA))
    local plain = assert(c:add(LEAF .. CA))
    assert.is_true(c:get(ms).must_staple)
    assert.is_false(c:get(plain, { pem = false }).must_staple)
    local rows = core.json_decode("[" .. c:status_json({ ms, plain, false }, {}, { now = NOW }) .. "]")
    assert.is_true(rows[1].must_staple)
    assert.is_false(rows[2].must_staple)
    assert.equal(core.json_null, rows[3].must_staple)
    c:close()
  end)
end)
