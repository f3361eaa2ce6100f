-- certmaint.issuer.acme{} and the challenge registry check their options when
-- the policy loads, naming what is wrong and the caller's file:line.
local acme = require "certmaint.issuer.acme"
local issuers = require "certmaint.issuer"
local challenges = require "certmaint.acme.challenges"
local testing = require "certmaint.testing"

local DIR = "https://127.0.0.1:14000/dir"
local function http01() return { http01 = { listen = "127.0.0.1:5002" } } end

local function err_of(opts)
  local ok, err = pcall(acme.new, opts)
  assert.is_false(ok)
  return err
end

describe("certmaint.issuer.acme options", function()
  after_each(testing.reset)

  it("is reachable as certmaint.issuer.acme and is an issuer", function()
    local iss = issuers.acme { directory = DIR, challenges = http01() }
    assert.is_true(issuers.check(iss))
    assert.equal("127.0.0.1-14000-dir", issuers.storage_key(iss))
    assert.equal("ACME " .. DIR, issuers.describe(iss))
    assert.equal("function", type(iss.renewal_info))
  end)

  it("names the policy line and the option", function()
    local err = err_of { challenges = http01() }
    assert.truthy(err:find("options_spec.lua:%d+: certmaint.issuer.acme: option \"directory\" is required"), err)
    err = err_of { directory = "ftp://x", challenges = http01() }
    assert.truthy(err:find('option "directory" must be an https:// (or http://) URL', 1, true), err)
    err = err_of { directory = DIR, challenges = http01(), emial = "a@b" }
    assert.truthy(err:find('unknown option "emial" (did you mean "email"?', 1, true), err)
    err = err_of { directory = DIR, challenges = http01(), email = "not an address" }
    assert.truthy(err:find('option "email" must be an e-mail address', 1, true), err)
    err = err_of { directory = DIR, challenges = http01(), ca_bundle = "/nonexistent/ca.pem" }
    assert.truthy(err:find('option "ca_bundle" names a file that cannot be read', 1, true), err)
    err = err_of { directory = DIR, challenges = http01(), timeout = "soon" }
    assert.truthy(err:find("timeout: bad duration", 1, true), err)
  end)

  it("checks eab", function()
    local err = err_of { directory = DIR, challenges = http01(), eab = { kid = "k" } }
    assert.truthy(err:find('option "eab" needs hmac_key', 1, true), err)
    err = err_of { directory = DIR, challenges = http01(), eab = { kid = "k", hmac_key = "bad key!" } }
    assert.truthy(err:find('needs hmac_key = "<base64url MAC key>"', 1, true), err)
    err = err_of { directory = DIR, challenges = http01(), eab = { kid = "k", hmac_key = "abc", x = 1 } }
    assert.truthy(err:find("unknown field x", 1, true), err)
    assert.truthy(acme.new { directory = DIR, challenges = http01(), eab = { kid = "k", hmac_key = "c2VjcmV0" } })
  end)

  it("checks challenges and each solver's options", function()
    local err = err_of { directory = DIR }
    assert.truthy(err:find('option "challenges" is required', 1, true), err)
    err = err_of { directory = DIR, challenges = {} }
    assert.truthy(err:find("configure at least one of http01", 1, true), err)
    err = err_of { directory = DIR, challenges = { htp01 = { listen = ":80" } } }
    assert.truthy(err:find('unknown option "htp01" (did you mean "http01"?', 1, true), err)
    err = err_of { directory = DIR, challenges = { http01 = { listen = "localhost" } } }
    assert.truthy(err:find("options_spec.lua:%d+: certmaint.acme.challenges.http01: option \"listen\" must be \"ADDRESS:PORT\""), err)
    err = err_of { directory = DIR, challenges = { http01 = {} } }
    assert.truthy(err:find('option "listen" is required', 1, true), err)
    err = err_of { directory = DIR, challenges = { http01 = { listen = "0.0.0.0:80" }, prefer = { "dns01" } } }
    assert.truthy(err:find('challenges.prefer[1] names "dns01", which is not configured', 1, true), err)
  end)

  it("orders solvers by preference", function()
    local c = challenges.check({ http01 = { listen = "127.0.0.1:1" }, webroot = "/tmp",
      dns01 = { present = function() end, cleanup = function() end } }, "x")
    assert.same({ "http01", "webroot", "dns01" }, c.order)
    assert.same({ dir = "/tmp" }, c.opts.webroot)
    c = challenges.check({ http01 = { listen = "127.0.0.1:1" }, webroot = "/tmp",
      dns01 = { present = function() end, cleanup = function() end }, prefer = { "dns01" } }, "x")
    assert.same({ "dns01", "http01", "webroot" }, c.order)
    local list = challenges.build(c, {})
    assert.equal("dns-01", list[1].type)
    local offered = { ["http-01"] = { type = "http-01" }, ["dns-01"] = { type = "dns-01" } }
    local cands = challenges.candidates(list, offered, false)
    assert.equal(3, #cands)
    assert.equal("dns01", cands[1].entry.kind)
    cands = challenges.candidates(list, offered, true)
    assert.equal(1, #cands)
    assert.equal("dns-01", cands[1].entry.type)
  end)

end)
