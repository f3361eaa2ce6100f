-- core/lua/ljws.c and core.digest: the ACME primitives seen from Lua, with the RFC vectors
-- (keys in tests/fixtures/jws/, see its README).
local core = require "certmaint.core"

local read = require("helpers.fixtures").reader("jws")

local function b64u_json(jws, member)
  return jws:match('"' .. member .. '":"([^"]*)"')
end

local PAYLOAD = '{"iss":"joe",\r\n "exp":1300819380,\r\n "http://example.com/is_root":true}'

describe("core.jws_signer", function()
  it("RS256 reproduces RFC 7515 A.2 byte for byte", function()
    local s = assert(core.jws_signer(read("rfc7515_a2_rsa.pem")))
    assert.equal("RS256", s:alg())
    assert.matches('^{"e":"AQAB","kty":"RSA","n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wW', s:jwk())
    local jws = assert(s:sign('{"alg":"RS256"}', PAYLOAD))
    assert.equal("eyJhbGciOiJSUzI1NiJ9", b64u_json(jws, "protected"))
    assert.equal(core.base64url_encode(PAYLOAD), b64u_json(jws, "payload"))
    assert.equal("cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_"
      .. "lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6"
      .. "xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6Bf"
      .. "I7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypG"
      .. "lUPQGe77Rw", b64u_json(jws, "signature"))
    -- flattened JSON, exactly three members in this order
    assert.matches('^{"protected":"[%w_-]+","payload":"[%w_-]*","signature":"[%w_-]+"}$', jws)
  end)

  it("ES256 with the RFC 7515 A.3 key: its JWK, raw r||s signatures that verify", function()
    local pem = read("rfc7515_a3_p256.pem")
    local s = assert(core.jws_signer(pem))
    assert.equal("ES256", s:alg())
    assert.equal('{"crv":"P-256","kty":"EC","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",'
      .. '"y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}', s:jwk())
    assert.equal(core.base64url_encode(core.sha256(s:jwk())), s:thumbprint())
    local a = assert(s:sign('{"alg":"ES256","nonce":"abc","url":"https://ca/x"}', "{}"))
    local b = assert(s:sign('{"alg":"ES256","nonce":"abc","url":"https://ca/x"}', "{}"))
    assert.not_equal(a, b) -- ECDSA is randomised
    assert.equal(64, #core.base64url_decode(b64u_json(a, "signature")))
    local prot, payload = assert(core.jws_verify(pem, a))
    assert.equal('{"alg":"ES256","nonce":"abc","url":"https://ca/x"}', prot)
    assert.equal("{}", payload)
    -- and the RFC's own signature verifies
    local rfc = '{"protected":"eyJhbGciOiJFUzI1NiJ9","payload":"' .. core.base64url_encode(PAYLOAD)
      .. '","signature":"DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQx'
      .. 'fKTUJqPP3-Kg6NU1Q"}'
    local _, p2 = assert(core.jws_verify(core.key_public_pem(pem), rfc))
    assert.equal(PAYLOAD, p2)
    local ok, err, code = core.jws_verify(pem, (rfc:gsub("fKTUJqPP", "fKTUJqPQ")))
    assert.is_nil(ok)
    assert.equal("verify", code)
    assert.matches("does not verify", err)
  end)

  it("POST-as-GET: an empty payload", function()
    local pem = read("rfc7515_a3_p256.pem")
    local jws = assert(assert(core.jws_signer(pem)):sign('{"alg":"ES256"}', ""))
    assert.equal("", b64u_json(jws, "payload"))
    local _, payload = assert(core.jws_verify(pem, jws))
    assert.equal("", payload)
  end)

  it("algorithms and JWK shapes of generated keys", function()
    for _, c in ipairs {
      { "p256", "ES256", '^{"crv":"P%-256","kty":"EC","x":"[%w_-]+","y":"[%w_-]+"}$', 64 },
      { "p384", "ES384", '^{"crv":"P%-384","kty":"EC","x":"[%w_-]+","y":"[%w_-]+"}$', 96 },
      { "rsa2048", "RS256", '^{"e":"AQAB","kty":"RSA","n":"[%w_-]+"}$', 256 },
    } do
      local pem = core.key_generate(c[1])
      local s = assert(core.jws_signer(pem))
      assert.equal(c[2], s:alg())
      assert.matches(c[3], s:jwk())
      assert.equal(43, #s:thumbprint())
      local jws = assert(s:sign(('{"alg":"%s"}'):format(c[2]), "x"))
      assert.equal(c[4], #core.base64url_decode(b64u_json(jws, "signature")), c[1])
      assert.truthy(core.jws_verify(pem, jws))
      assert.matches("^jws signer %(" .. c[2] .. "%)$", tostring(s))
    end
  end)

  it("refuses what it cannot use, with nil, err, code", function()
    local v, err, code = core.jws_signer("not a key")
    assert.is_nil(v)
    assert.equal("parse", code)
    assert.matches("private key", err)
    v, _, code = core.jws_signer(read("rfc7638_rsa_public.pem"))
    assert.is_nil(v)
    assert.equal("parse", code)
    assert.has_error(function() core.jws_signer() end)
    local s = assert(core.jws_signer(core.key_generate("p256")))
    assert.has_error(function() s:sign("{}") end)
    assert.has_error(function() s.sign(nil, "{}", "") end)
    v, err, code = s:sign("", "")
    assert.is_nil(v)
    assert.equal("invalid", code)
    assert.matches("protected header", err)
  end)

  it("verify names a malformed JWS and the wrong alg", function()
    local pem = read("rfc7515_a3_p256.pem")
    local v, err, code = core.jws_verify(pem, "{}")
    assert.is_nil(v)
    assert.equal("parse", code)
    assert.matches('"protected"', err)
    v, _, code = core.jws_verify(pem, "not json")
    assert.equal("parse", code)
    local rs = assert(core.jws_signer(read("rfc7515_a2_rsa.pem")))
    v, err, code = core.jws_verify(pem, rs:sign('{"alg":"RS256"}', "x"))
    assert.is_nil(v)
    assert.equal("verify", code)
    assert.matches('alg "RS256", the key signs ES256', err, 1, true)
  end)

  it("a closed signer raises", function()
    do
      local s <close> = assert(core.jws_signer(core.key_generate("p256")))
      assert.equal("ES256", s:alg())
      getmetatable(s).__close(s)
      assert.has_error(function() s:alg() end, "jws signer: used after close")
      assert.equal("jws signer (closed)", tostring(s))
    end
  end)
end)

describe("core.jws_hmac", function()
  it("HS256 reproduces RFC 7515 A.1", function()
    local jws = assert(core.jws_hmac(
      "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow",
      '{"typ":"JWT",\r\n "alg":"HS256"}', PAYLOAD))
    assert.equal("eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9", b64u_json(jws, "protected"))
    assert.equal("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", b64u_json(jws, "signature"))
  end)

  it("an EAB inner JWS over the account JWK", function()
    local s = assert(core.jws_signer(core.key_generate("p256")))
    local jws = assert(core.jws_hmac(core.base64url_encode(("k"):rep(32)),
      '{"alg":"HS256","kid":"kid-1","url":"https://ca/new-account"}', s:jwk()))
    assert.equal(s:jwk(), core.base64url_decode(b64u_json(jws, "payload")))
    assert.equal(32, #core.base64url_decode(b64u_json(jws, "signature")))
  end)

  it("refuses a bad key clearly", function()
    for _, case in ipairs {
      { "", "empty" },
      { "ab+/", "not base64url" },
      { "YWJj==", "not base64url" },
      { ("A"):rep(2000), "at most" },
    } do
      local v, err, code = core.jws_hmac(case[1], '{"alg":"HS256"}', "{}")
      assert.is_nil(v)
      assert.equal("invalid", code)
      assert.matches(case[2], err, 1, true)
      assert.matches("^jws_hmac: ", err)
    end
  end)
end)

describe("core.digest", function()
  it("sha256 as raw, hex and base64url", function()
    assert.equal(core.sha256("abc"), core.digest("sha256", "abc"))
    assert.equal(core.sha256("abc"), core.digest("sha256", "abc", "raw"))
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
      core.digest("sha256", "abc", "hex"))
    -- RFC 8555 section 8.4's dns-01 form: no padding, url-safe alphabet
    assert.equal("ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0", core.digest("sha256", "abc", "base64url"))
  end)

  it("raises for an unknown algorithm or encoding", function()
    assert.has_error(function() core.digest("md5", "x") end)
    assert.has_error(function() core.digest("sha256", "x", "base64") end)
    assert.has_error(function() core.digest("sha256") end)
  end)
end)

describe("core.ari_cert_id", function()
  it("RFC 9773 appendix A", function()
    local pem = read("rfc9773_appendix_a.pem")
    assert.equal("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE", core.ari_cert_id(pem))
    local cert = assert(core.cert_parse(pem))
    assert.equal("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE", core.ari_cert_id(cert.der))
  end)

  it("a certificate from the local CA: the issuer's SKI and the serial", function()
    local ca_key = core.key_generate("p256")
    local ca = assert(core.cert_issue { subject_key = ca_key, issuer_key = ca_key, names = { "ca" },
      is_ca = true, not_before = 0, not_after = 4000000000 })
    local leaf = assert(core.cert_issue { subject_key = core.key_generate("p256"), names = { "a.test" },
      issuer_cert = ca, issuer_key = ca_key, not_before = 0, not_after = 4000000000,
      serial = "8000000000000001" })
    local id = assert(core.ari_cert_id(leaf))
    local aki, serial = id:match("^([%w_-]+)%.([%w_-]+)$")
    assert.equal("\0\x80\0\0\0\0\0\0\1", core.base64url_decode(serial))
    assert.equal(20, #core.base64url_decode(aki))
  end)

  it("nil, err, code for a certificate without an AKI, or no certificate", function()
    local v, err, code = core.ari_cert_id(read("no_aki.pem"))
    assert.is_nil(v)
    assert.equal("noaki", code)
    assert.matches("authority key identifier", err)
    v, _, code = core.ari_cert_id("junk")
    assert.is_nil(v)
    assert.equal("parse", code)
  end)
end)
