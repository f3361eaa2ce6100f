-- x509_spec.lua - core.cert_parse & co. (core/lua/lx509.c) against the
-- fixtures of scripts/make-x509-fixtures.sh and certificates issued here.
local core = require "certmaint.core"

local FIXTURES = (os.getenv("CERTMAINT_SOURCE_DIR") or ".") .. "/tests/fixtures/x509/"

local function fixture(name)
  local f = assert(io.open(FIXTURES .. name, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local T0 = 1700000000
local DAY = 86400

-- A CA (or self-signed root when issuer is nil) with key type kt.
local function make_ca(cn, issuer, kt, path_len)
  local key = assert(core.key_generate(kt or "p256"))
  local cert, serial = assert(core.cert_issue {
    subject_key = issuer and assert(core.key_public_pem(key)) or nil,
    issuer_cert = issuer and issuer.cert or nil,
    issuer_key = issuer and issuer.key or key,
    cn = cn, is_ca = true, path_len = path_len,
    not_before = T0, not_after = T0 + 3650 * DAY,
  })
  return { key = key, cert = cert, serial = serial }
end

local function make_leaf(issuer, names, extra)
  local key = assert(core.key_generate("p256"))
  local opts = {
    subject_key = key, issuer_cert = issuer.cert, issuer_key = issuer.key,
    names = names, not_before = T0, not_after = T0 + 90 * DAY,
  }
  for k, v in pairs(extra or {}) do opts[k] = v end
  local cert, serial = assert(core.cert_issue(opts))
  return { key = key, cert = cert, serial = serial }
end

describe("core.cert_parse", function()
  it("reads the facts of a leaf + intermediate chain", function()
    local c = assert(core.cert_parse(fixture("ok_chain.pem")))
    assert.same({ "example.com", "*.example.com", "www.example.com", "192.0.2.1", "2001:db8::1" }, c.names)
    assert.equal("0123456789abcdef0123456789abcdef", c.serial)
    assert.equal(1704067200, c.not_before)
    assert.equal(4859740800, c.not_after)
    assert.equal("CN=certmaint test intermediate,O=certmaint tests", c.issuer)
    assert.equal("CN=example.com", c.subject)
    assert.same({ "http://127.0.0.1:8888/ocsp" }, c.ocsp_urls)
    assert.same({ "http://127.0.0.1:8888/intermediate.crl" }, c.crl_urls)
    assert.is_false(c.is_ca)
    assert.equal(1, #c.chain_der)
    assert.matches("^%x+$", c.hash)
    assert.equal(64, #c.hash)
    -- the DER form gives the same facts
    local d = assert(core.cert_parse_der(fixture("ok_chain.der")))
    assert.same(c, d)
    assert.equal(fixture("ok_chain.der"), d.der .. d.chain_der[1])
  end)

  it("falls back to the subject CN when there is no SAN", function()
    local c = assert(core.cert_parse(fixture("ok_cn_only.pem")))
    assert.same({ "cn-only.example.net" }, c.names)
    assert.same({}, c.ocsp_urls)
    assert.same({}, c.chain_der)
  end)

  it("reads a CA certificate as is_ca", function()
    local c = assert(core.cert_parse(fixture("ok_intermediate.pem")))
    assert.is_true(c.is_ca)
    assert.equal("02", c.serial)
  end)

  local broken = {
    { "err_empty.pem", "no PEM certificate found" },
    { "err_whitespace.pem", "no PEM certificate found" },
    { "err_garbage.pem", "no PEM certificate found" },
    { "err_truncated.pem", "truncated PEM: missing END line" },
    { "err_missing_end.pem", "truncated PEM: missing END line" },
    { "err_truncated_body.pem", "certificate 1 in chain is not valid DER" },
    { "err_not_cert.pem", "not a CERTIFICATE" },
    { "err_bad_second.pem", "certificate 2 in chain is not valid DER" },
    { "err_not_der.pem", "certificate 1 in chain is not valid DER" },
    { "err_bad_base64.pem", "not valid base64" },
  }
  for _, case in ipairs(broken) do
    it("refuses " .. case[1], function()
      local c, err, code = core.cert_parse(fixture(case[1]))
      assert.is_nil(c)
      assert.equal("parse", code)
      assert.truthy(err:find(case[2], 1, true), err)
    end)
  end

  it("refuses broken DER", function()
    local c, err, code = core.cert_parse_der(fixture("err_bad_second.der"))
    assert.is_nil(c)
    assert.equal("parse", code)
    assert.truthy(err:find("certificate 2 in chain is not valid DER", 1, true))
    assert.equal("parse", select(3, core.cert_parse_der(fixture("err_garbage.der"))))
    assert.equal("parse", select(3, core.cert_parse_der("")))
  end)

  it("refuses input over 1 MiB before reading it", function()
    local huge = fixture("ok_chain.pem") .. string.rep("A", 1024 * 1024)
    local c, _, code = core.cert_parse(huge)
    assert.is_nil(c)
    assert.equal("toobig", code)
    assert.equal("toobig", select(3, core.cert_parse_der(huge)))
  end)

  it("raises on a wrong argument type", function()
    assert.has_error(function() core.cert_parse(nil) end)
    assert.has_error(function() core.cert_parse({}) end)
  end)
end)

describe("core.chain_pem", function()
  it("turns DER back into the same PEM", function()
    local pem = fixture("ok_chain.pem")
    local c = assert(core.cert_parse(pem))
    assert.equal(pem, core.chain_pem(c.der, c.chain_der))
    assert.equal(pem, core.chain_pem(c.der, table.concat(c.chain_der)))
    assert.equal(fixture("ok_leaf.pem"), core.chain_pem(c.der))
  end)

  it("refuses what is not DER", function()
    local pem, _, code = core.chain_pem("hello")
    assert.is_nil(pem)
    assert.equal("parse", code)
  end)
end)

describe("keys", function()
  for _, kt in ipairs { "p256", "p384", "rsa2048", "rsa4096" } do
    it("generates a " .. kt .. " key that matches its certificate", function()
      local key = assert(core.key_generate(kt))
      assert.matches("^%-%-%-%-%-BEGIN PRIVATE KEY%-%-%-%-%-", key)
      local cert = assert(core.cert_issue {
        issuer_key = key, names = { kt .. ".example" }, not_before = T0, not_after = T0 + DAY,
      })
      assert.is_true(core.key_matches(cert, key))
      local pub = assert(core.key_public_pem(key))
      assert.matches("^%-%-%-%-%-BEGIN PUBLIC KEY%-%-%-%-%-", pub)
      assert.equal(pub, core.key_public_pem(pub))
    end)
  end

  it("defaults to p256 and refuses unknown types", function()
    assert.truthy(core.key_generate())
    local key, err, code = core.key_generate("ed448")
    assert.is_nil(key)
    assert.equal("invalid", code)
    assert.truthy(err:find("ed448", 1, true))
  end)

  it("tells a wrong key and an unreadable one apart", function()
    local cert = fixture("ok_chain.pem")
    assert.is_true(core.key_matches(cert, fixture("ok_leaf.key")))
    local ok, _, code = core.key_matches(cert, fixture("ok_other_rsa.key"))
    assert.is_nil(ok)
    assert.equal("mismatch", code)
    assert.equal("mismatch", select(3, core.key_matches(cert, fixture("ok_intermediate.key"))))
    assert.equal("parse", select(3, core.key_matches(cert, "not a key")))
    assert.equal("parse", select(3, core.key_matches("not a cert", fixture("ok_leaf.key"))))
    -- DER works for the certificate too
    local der = assert(core.cert_parse(cert)).der
    assert.is_true(core.key_matches(der, fixture("ok_leaf.key")))
  end)
end)

describe("CSRs", function()
  it("round-trips names and the public key", function()
    local key = assert(core.key_generate())
    local pem, der = assert(core.csr_create(key, { "csr.example", "*.csr.example", "192.0.2.9" }))
    assert.matches("^%-%-%-%-%-BEGIN CERTIFICATE REQUEST", pem)
    for _, input in ipairs { pem, der } do
      local info = assert(core.csr_parse(input))
      assert.same({ "csr.example", "*.csr.example", "192.0.2.9" }, info.names)
      assert.equal("csr.example", info.cn)
      assert.equal(core.key_public_pem(key), info.public_key_pem)
    end
  end)

  it("refuses a tampered CSR", function()
    local key = assert(core.key_generate())
    local _, der = assert(core.csr_create(key, { "good.example" }))
    local bad = der:gsub("good%.example", "evil.example")
    assert.equal(#der, #bad)
    local info, err, code = core.csr_parse(bad)
    assert.is_nil(info)
    assert.equal("verify", code, err)
    assert.equal("parse", select(3, core.csr_parse("garbage")))
  end)

  it("refuses names that are not printable", function()
    local key = assert(core.key_generate())
    assert.equal("invalid", select(3, core.csr_create(key, { "a b.example" })))
    assert.equal("invalid", select(3, core.csr_create(key, {})))
    assert.has_error(function() core.csr_create(key, { 1 }) end)
  end)
end)

describe("core.cert_issue", function()
  it("issues a root -> intermediate -> leaf chain", function()
    local root = make_ca("spec root", nil, "p384", 1)
    local inter = make_ca("spec intermediate", root, "p256", 0)
    local leaf = make_leaf(inter, { "leaf.example", "10.0.0.1" }, {
      ocsp_url = "http://127.0.0.1:1/ocsp", crl_url = "http://127.0.0.1:1/crl",
    })
    local c = assert(core.cert_parse(leaf.cert .. inter.cert))
    assert.same({ "leaf.example", "10.0.0.1" }, c.names)
    assert.equal(leaf.serial, c.serial)
    assert.equal(32, #leaf.serial)
    assert.equal("CN=spec intermediate", c.issuer)
    assert.equal("CN=leaf.example", c.subject)
    assert.same({ "http://127.0.0.1:1/ocsp" }, c.ocsp_urls)
    assert.same({ "http://127.0.0.1:1/crl" }, c.crl_urls)
    assert.equal(T0, c.not_before)
    assert.equal(T0 + 90 * DAY, c.not_after)
    assert.is_true(core.key_matches(leaf.cert, leaf.key))
    assert.is_true(assert(core.cert_parse(inter.cert)).is_ca)
  end)

  it("issues from a CSR with its names and a given serial", function()
    local ca = make_ca("csr ca")
    local key = assert(core.key_generate("rsa2048"))
    local csr = assert(core.csr_create(key, { "from-csr.example" }))
    local cert, serial = assert(core.cert_issue {
      csr = csr, issuer_cert = ca.cert, issuer_key = ca.key, serial = "0BadC0de",
      not_before = T0, not_after = T0 + DAY,
    })
    assert.equal("0badc0de", serial)
    assert.same({ "from-csr.example" }, assert(core.cert_parse(cert)).names)
    assert.is_true(core.key_matches(cert, key))
  end)

  it("returns nil, err, code for inconsistent input", function()
    local ca = make_ca("refusing ca")
    local other = assert(core.key_generate())
    local function issue(over)
      local opts = {
        subject_key = other, issuer_cert = ca.cert, issuer_key = ca.key,
        names = { "x.example" }, not_before = T0, not_after = T0 + DAY,
      }
      for k, v in pairs(over) do opts[k] = v end
      return core.cert_issue(opts)
    end
    assert.equal("mismatch", select(3, issue { issuer_key = other }))
    assert.equal("invalid", select(3, issue { not_after = T0 }))
    assert.equal("invalid", select(3, issue { serial = "nothex" }))
    assert.equal("invalid", select(3, issue { names = { "bad name" } }))
    assert.equal("parse", select(3, issue { subject_key = "garbage" }))
  end)

  it("raises on unknown options, missing fields and wrong types", function()
    local key = assert(core.key_generate())
    local base = { issuer_key = key, names = { "x.example" }, not_before = T0, not_after = T0 + DAY }
    local function with(k, v)
      local t = {}
      for kk, vv in pairs(base) do t[kk] = vv end
      t[k] = v
      return t
    end
    assert.truthy(core.cert_issue(base))
    -- the message names the key and the caller's file:line
    local line = debug.getinfo(1, "l").currentline + 1
    local ok, err = pcall(function() core.cert_issue(with("not_afer", 1)) end)
    assert.is_false(ok)
    assert.truthy(err:find("x509_spec.lua:" .. line .. ': core.cert_issue: unknown option "not_afer"', 1, true), err)
    assert.has_error(function() core.cert_issue(with("issuer_key", nil)) end)
    assert.has_error(function() core.cert_issue(with("not_before", nil)) end)
    assert.has_error(function() core.cert_issue(with("names", "x.example")) end)
    assert.has_error(function() core.cert_issue(with("is_ca", "yes")) end)
    assert.has_error(function() core.cert_issue(with("path_len", -1)) end)
    assert.has_error(function() core.cert_issue("nope") end)
  end)
end)

describe("OCSP responses", function()
  local root, inter, leaf, other_leaf, stranger
  setup(function()
    root = make_ca("ocsp spec root")
    inter = make_ca("ocsp spec intermediate", root, "p256", 0)
    leaf = make_leaf(inter, { "ocsp.example" })
    other_leaf = make_leaf(inter, { "other.example" })
    stranger = make_ca("stranger")
  end)

  for _, status in ipairs { "good", "revoked", "unknown" } do
    it("round-trips " .. status, function()
      local der = assert(core.ocsp_response_build {
        issuer_cert = inter.cert, issuer_key = inter.key, cert = leaf.cert, status = status,
        this_update = T0, next_update = T0 + 7 * DAY,
        revoked_at = status == "revoked" and T0 - 100 or nil,
        reason = status == "revoked" and "keyCompromise" or nil,
      })
      local r = assert(core.ocsp_response_parse(der, leaf.cert, inter.cert))
      assert.equal(status, r.status)
      assert.equal(T0, r.this_update)
      assert.equal(T0 + 7 * DAY, r.next_update)
      assert.equal(T0, r.produced_at)
      if status == "revoked" then
        assert.equal(T0 - 100, r.revoked_at)
        assert.equal("keyCompromise", r.reason)
      else
        assert.is_nil(r.revoked_at)
      end
    end)
  end

  it("accepts a delegated responder with the OCSPSigning EKU only", function()
    local responder = make_leaf(inter, { "responder.example" }, { ocsp_signing = true })
    local der = assert(core.ocsp_response_build {
      issuer_cert = inter.cert, cert = leaf.cert, this_update = T0,
      responder_cert = responder.cert, responder_key = responder.key,
    })
    assert.equal("good", assert(core.ocsp_response_parse(der, leaf.cert, inter.cert)).status)
    local plain = make_leaf(inter, { "plain.example" })
    der = assert(core.ocsp_response_build {
      issuer_cert = inter.cert, cert = leaf.cert, this_update = T0,
      responder_cert = plain.cert, responder_key = plain.key,
    })
    assert.equal("verify", select(3, core.ocsp_response_parse(der, leaf.cert, inter.cert)))
  end)

  it("refuses a response signed by another key", function()
    local der = assert(core.ocsp_response_build {
      issuer_cert = inter.cert, cert = leaf.cert, this_update = T0,
      responder_cert = stranger.cert, responder_key = stranger.key,
    })
    local r, err, code = core.ocsp_response_parse(der, leaf.cert, inter.cert)
    assert.is_nil(r)
    assert.equal("verify", code, err)
  end)

  it("refuses a response about another certificate", function()
    local der = assert(core.ocsp_response_build {
      issuer_cert = inter.cert, issuer_key = inter.key, cert = other_leaf.cert, this_update = T0,
    })
    local r, err, code = core.ocsp_response_parse(der, leaf.cert, inter.cert)
    assert.is_nil(r)
    assert.equal("mismatch", code, err)
  end)

  it("refuses garbage and raises on bad options", function()
    assert.equal("parse", select(3, core.ocsp_response_parse("junk", leaf.cert, inter.cert)))
    assert.has_error(function()
      core.ocsp_response_build { issuer_cert = inter.cert, cert = leaf.cert, this_update = T0, status = "fine" }
    end)
    assert.has_error(function()
      core.ocsp_response_build { issuer_cert = inter.cert, cert = leaf.cert, this_update = T0, reason = "bored" }
    end)
    assert.has_error(function()
      core.ocsp_response_build { issuer_cert = inter.cert, cert = leaf.cert }
    end)
  end)
end)

describe("core.ocsp_response_peek", function()
  local core = require "certmaint.core"

  it("reads status and times without verifying (for cleaning decisions)", function()
    local key = assert(core.key_generate("p256"))
    local ca = assert(core.cert_issue { subject_key = key, issuer_key = key, cn = "peek CA", is_ca = true,
      not_before = 1000, not_after = 10 ^ 9 * 3 })
    local leaf = assert(core.cert_issue { subject_key = assert(core.key_generate("p256")), names = { "a.test" },
      not_before = 1000, not_after = 10 ^ 9 * 2, issuer_cert = ca, issuer_key = key })
    local der = assert(core.ocsp_response_build { issuer_cert = ca, issuer_key = key, cert = leaf,
      status = "revoked", this_update = 5000, next_update = 9000, revoked_at = 4000 })
    local info = assert(core.ocsp_response_peek(der))
    assert.equal("revoked", info.status)
    assert.equal(5000, info.this_update)
    assert.equal(9000, info.next_update)
    assert.equal(4000, info.revoked_at)
  end)

  it("refuses garbage, truncation and trailing bytes with code parse", function()
    local key = assert(core.key_generate("p256"))
    local ca = assert(core.cert_issue { subject_key = key, issuer_key = key, cn = "peek CA", is_ca = true,
      not_before = 1000, not_after = 10 ^ 9 * 3 })
    local der = assert(core.ocsp_response_build { issuer_cert = ca, issuer_key = key, cert = ca,
      status = "good", this_update = 5000, next_update = 9000 })
    for _, bad in ipairs { "", "garbage", der:sub(1, #der - 1), der .. "x" } do
      local info, err, code = core.ocsp_response_peek(bad)
      assert.is_nil(info)
      assert.is_string(err)
      assert.equal("parse", code)
    end
  end)
end)
