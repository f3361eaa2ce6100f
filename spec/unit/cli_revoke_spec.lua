-- `certmaint revoke POLICY NAME [--reason N]` through cli.main, on file
-- storage in a temporary folder: the issuer that issued the certificate
-- revokes it (with the reason), then it is replaced.
local cli = require "certmaint.cli"
local core = require "certmaint.core"
local testing = require "certmaint.testing"

local POLICY = [[
local certmaint = require "certmaint"
local internal = certmaint.issuer.internal { lifetime = "30d", name = "%s" }
local function wrap(inner, can_revoke)
  local w = {
    issue = function(_, req, ctx) return inner:issue(req, ctx) end,
    storage_key = function() return inner:storage_key() end,
  }
  if can_revoke then
    w.revoke = function(_, cert, ctx)
      certmaint.log("info", "spec_revoke_called", { serial = cert.serial, reason = tostring(ctx.reason),
        issuer = inner:storage_key() })
      return true
    end
  end
  return w
end
return certmaint.policy {
  storage = certmaint.storage.file { root = "%s" },
  issuer = { wrap(internal, %s), wrap(certmaint.issuer.internal { name = "other" }, true) },
  certificates = { "revoke.test" },
  reuse_key = %s,%s
}
]]

describe("certmaint revoke", function()
  local dir, logs

  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(require("lfs").mkdir(dir))
    logs = testing.capture_logs()
  end)

  after_each(function()
    testing.reset()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function write_policy(can_revoke, reuse_key, extra)
    local path = dir .. "/policy.lua"
    local f = assert(io.open(path, "w"))
    f:write(string.format(POLICY, "first", dir .. "/data", tostring(can_revoke), tostring(reuse_key or false),
      extra or ""))
    f:close()
    return path
  end

  local function stored_serial()
    local f = io.open(dir .. "/data/certificates/first/revoke.test/revoke.test.crt")
    if not f then return nil end
    local pem = f:read("a")
    f:close()
    return assert(core.cert_parse(pem)).serial
  end

  local function text() return table.concat(logs(), "\n") end

  local SITE = "/data/certificates/first/revoke.test/revoke.test"
  local function read(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local s = f:read("a")
    f:close()
    return s
  end

  it("revokes at the issuer that issued it, with the reason, then replaces the certificate", function()
    local path = write_policy(true)
    assert(require("lfs").mkdir(dir .. "/data"))
    assert.equal(0, cli.main { "once", path })
    local old = assert(stored_serial())
    assert.equal(0, cli.main { "revoke", path, "revoke.test", "--reason", "4" })
    local lines = text()
    assert.matches("event=spec_revoke_called issuer=first reason=4 serial=" .. old, lines, 1, true)
    assert.matches("event=revoked .*reason=superseded", lines)
    local new = assert(stored_serial())
    assert.are_not.equal(old, new)
  end)

  it("refuses a bad reason and an unknown name with usage errors", function()
    local path = write_policy(true)
    assert(require("lfs").mkdir(dir .. "/data"))
    assert.equal(2, cli.main { "revoke", path, "revoke.test", "--reason", "7" })
    assert.equal(2, cli.main { "revoke", path, "revoke.test", "--reason" })
    assert.equal(2, cli.main { "revoke", path, "nothere.test" })
    assert.equal(2, cli.main { "revoke", path })
  end)

  it("fails, naming the issuer, when the issuer that issued it cannot revoke", function()
    local path = write_policy(false)
    assert(require("lfs").mkdir(dir .. "/data"))
    assert.equal(0, cli.main { "once", path })
    local old = stored_serial()
    assert.equal(1, cli.main { "revoke", path, "revoke.test" })
    assert.equal(old, stored_serial()) -- nothing replaced, nothing revoked elsewhere
    assert.not_matches("spec_revoke_called", text(), 1, true)
  end)

  it("with --reason 1 (keyCompromise) sets the key aside, 0600, and replaces it with a new key under reuse_key", function()
    local path = write_policy(true, true)
    assert(require("lfs").mkdir(dir .. "/data"))
    assert.equal(0, cli.main { "once", path })
    local old, old_key = assert(stored_serial()), assert(read(dir .. SITE .. ".key"))
    assert.equal(0, cli.main { "revoke", path, "revoke.test", "--reason", "1" })
    local new, new_key = assert(stored_serial()), assert(read(dir .. SITE .. ".key"))
    assert.are_not.equal(old, new)
    assert.are_not.equal(old_key, new_key)
    local aside = dir .. "/data/certmaint/compromised/revoke.test/" .. old:lower() .. ".key"
    assert.equal(old_key, read(aside))
    assert.equal("rw-------", require("lfs").attributes(aside, "permissions"))
    assert.matches("event=revoked decision=renew .*reason=keyCompromise .*source=cli", text())
    -- a later renewal under reuse_key keeps the new key, never the old one
    assert.equal(0, cli.main { "renew", path, "--force" })
    assert.equal(new_key, read(dir .. SITE .. ".key"))
  end)

  it("follows on_revoked: keep leaves the certificate as it is", function()
    local path = write_policy(true, false, '\n  on_revoked = function() return "keep" end,')
    assert(require("lfs").mkdir(dir .. "/data"))
    assert.equal(0, cli.main { "once", path })
    local old = stored_serial()
    assert.equal(0, cli.main { "revoke", path, "revoke.test", "--reason", "4" })
    assert.equal(old, stored_serial())
    assert.matches("event=revoked decision=keep", text())
  end)
end)
