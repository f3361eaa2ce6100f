-- `certmaint once` runs the OCSP pass: on file storage in a temporary folder,
-- with the internal issuer naming an OCSP responder that is a real HTTP
-- server on 127.0.0.1 (loop.serve in this process), answering with responses
-- signed by the internal CA's intermediate, read from storage.
local cli = require "certmaint.cli"
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local keys = require "certmaint.keys"
local testing = require "certmaint.testing"

local POLICY = [[
local certmaint = require "certmaint"
return certmaint.policy {
  storage = certmaint.storage.file { root = "%s" },
  issuer = certmaint.issuer.internal { lifetime = "30d", ocsp_url = "%s" },
  certificates = { "once.test" },
}
]]

local DAY = 86400

describe("certmaint once with an OCSP responder", function()
  local dir, logs, clock, revoked_serial, asked

  local function read(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local s = f:read("a")
    f:close()
    return s
  end

  local function site(ext) return dir .. "/data/certificates/local/once.test/once.test" .. ext end

  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(require("lfs").mkdir(dir))
    assert(require("lfs").mkdir(dir .. "/data"))
    clock = testing.clock(testing.EPOCH)
    logs = testing.capture_logs()
    revoked_serial, asked = nil, 0
  end)

  after_each(function()
    testing.reset()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function responder()
    local _, port = assert(loop.serve({ listen = "127.0.0.1:0" }, function(req)
      asked = asked + 1
      local base = dir .. "/data/pki/authorities/local/"
      local leaf = read(site(".crt"))
      if req.method ~= "GET" or not leaf then return { status = 400, body = "" } end
      -- it answers for the certificate storage holds now; revoked_serial says revoked
      local status = assert(core.cert_parse(leaf)).serial == revoked_serial and "revoked" or "good"
      local der = assert(core.ocsp_response_build {
        issuer_cert = read(base .. "intermediate.crt"), issuer_key = read(base .. "intermediate.key"),
        cert = leaf, status = status, this_update = core.now(), next_update = core.now() + 4 * DAY,
        reason = status == "revoked" and "keyCompromise" or nil,
      })
      return { status = 200, body = der, headers = { ["Content-Type"] = "application/ocsp-response" } }
    end))
    return "http://127.0.0.1:" .. port .. "/"
  end

  local function write_policy(url)
    local path = dir .. "/policy.lua"
    local f = assert(io.open(path, "w"))
    f:write(string.format(POLICY, dir .. "/data", url))
    f:close()
    return path
  end

  it("staples and stores what it obtained, then replaces a certificate the responder says is revoked", function()
    local path = write_policy(responder())
    assert.equal(0, cli.main { "once", path })
    assert.equal(1, asked)
    local pem = assert(read(site(".crt")))
    local facts = assert(core.cert_parse(pem))
    local staple = read(dir .. "/data/" .. keys.ocsp("once.test", keys.fast_hash(pem)))
    assert.is_string(staple)
    assert.matches("event=staple_updated name=once.test .*status=good", table.concat(logs(), "\n"))
    -- fresh: the next run asks nobody
    assert.equal(0, cli.main { "once", path })
    assert.equal(1, asked)
    -- past half its span, the responder now says revoked (keyCompromise)
    revoked_serial = facts.serial
    clock:advance(3 * DAY)
    local old_key = read(site(".key"))
    assert.equal(0, cli.main { "once", path })
    local new = assert(core.cert_parse(read(site(".crt"))))
    assert.are_not.equal(facts.serial, new.serial)
    assert.are_not.equal(old_key, read(site(".key")))
    -- the replacement was stapled in the same run: good, stored
    local new_pem = read(site(".crt"))
    local new_staple = assert(read(dir .. "/data/" .. keys.ocsp("once.test", keys.fast_hash(new_pem))))
    local base = dir .. "/data/pki/authorities/local/"
    assert.equal("good", core.ocsp_response_parse(new_staple, new_pem, read(base .. "intermediate.crt")).status)
    assert.equal(3, asked)
    local text = table.concat(logs(), "\n")
    assert.matches("event=revoked decision=renew .*reason=keyCompromise .*source=ocsp", text)
    assert.matches("event=key_set_aside", text)
  end)

  it("logs a responder that cannot be reached as an error, and still exits 0", function()
    local path = write_policy("http://127.0.0.1:" .. require("helpers.loop_task").free_port() .. "/")
    assert.equal(0, cli.main { "once", path })
    assert.matches("level=error event=staple_fetch_failed code=connect", table.concat(logs(), "\n"))
  end)
end)
