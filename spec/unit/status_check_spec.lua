-- `status --check` as a monitoring check (issue 7, item 6): what needs
-- attention, the one-line summary and its exit status; and a storage root
-- that does not exist is an error, not an empty store.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local cli = require "certmaint.cli"
local helpers = require "helpers.policies"
local lfs = require "lfs"

local DAY = 86400

describe("status --check", function()
  local clock, ca

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    testing.capture_logs()
  end)

  after_each(testing.reset)

  local function engine(fields)
    fields.certificates = fields.certificates or { "a.test" }
    fields.issuer = fields.issuer or testing.issuer { ca = ca, lifetime = "30d" }
    return testing.engine(certmaint.policy(fields))
  end

  local function check(e)
    return cli.check_summary(e:health(clock:now()))
  end

  it("says OK with exit status 0 when nothing needs attention", function()
    local e = engine { certificates = { "a.test", "b.test" } }
    assert.same({ "certmaint OK: 2 certificates, none needs attention", 0 }, { check(e) })
    clock:advance(19 * DAY) -- before the renewal window
    assert.same({ "certmaint OK: 2 certificates, none needs attention", 0 }, { check(e) })
  end)

  it("names an expired certificate", function()
    local e = engine {}
    clock:advance(31 * DAY) -- no daemon ran meanwhile
    local line, code = check(e)
    assert.equal(1, code)
    assert.equal("certmaint WARNING: 1 of 1 certificate needs attention: a.test expired 2026-01-31T00:00:00Z", line)
  end)

  it("names a certificate inside its imminent-expiry guard", function()
    local e = engine {}
    clock:advance(30 * DAY - 10 * 3600) -- the guard of a 30-day certificate: its last 14.4 h
    local line, code = check(e)
    assert.equal(1, code)
    assert.matches("a.test expires 2026-01-31T00:00:00Z, inside its guard", line, 1, true)
  end)

  it("names a renewal overdue by more than two renew check intervals, not one just due", function()
    local e = engine {}
    clock:set(testing.EPOCH + 20 * DAY + 2 * 600) -- renewal at 20 d (a third left); two 10 m checks
    assert.equal(0, select(2, check(e)))
    clock:advance(1)
    local line, code = check(e)
    assert.equal(1, code)
    assert.matches("a.test renewal overdue since 2026-01-21T00:00:00Z", line, 1, true)
    -- a daemon renews it: all well again
    e:tick("renew")
    assert.equal(0, select(2, check(e)))
  end)

  it("names a certificate whose last renewal failed, and one never obtained", function()
    local issuer = testing.issuer { ca = ca, lifetime = "30d" }
    local e = engine { certificates = { "a.test", "b.test" }, issuer = issuer }
    issuer.fail = issuer.calls + 3 -- every call from now on fails
    clock:advance(21 * DAY)
    e:tick("renew")
    local line, code = check(e)
    assert.equal(1, code)
    assert.matches("2 of 2 certificates need attention: a.test renewal overdue since 2026-01-21T00:00:00Z, "
      .. "last error: testing issuer: planned failure 3 of 5; b.test ", line, 1, true)
    local e2 = engine { certificates = { "c.test" }, issuer = testing.issuer { ca = ca, fail = 5 } }
    line = check(e2)
    assert.matches("c.test testing issuer: planned failure 1 of 5", line, 1, true)
  end)

  it("names a failed deploy", function()
    local e = engine { on_renewed = function() error("nginx -s reload: exit status 1", 0) end }
    local line, code = check(e)
    assert.equal(1, code)
    assert.equal("certmaint WARNING: 1 of 1 certificate needs attention: a.test deploy to on_renewed failed: "
      .. "nginx -s reload: exit status 1", line)
  end)

  it("counts a policy hook that fails while status asks it", function()
    local e = engine { needs_renewal = function(cert, now)
      if now > cert.not_before + DAY then error("broken policy", 0) end
      return false
    end }
    clock:advance(2 * DAY)
    local line, code = check(e)
    assert.equal(1, code)
    assert.matches("policy hooks failed %d+ times? %(see the log%)", line)
  end)

  it("names at most five certificates on its one line", function()
    local names = {}
    for i = 1, 7 do names[i] = "n" .. i .. ".test" end
    local e = engine { certificates = names }
    clock:advance(31 * DAY)
    local line, code = check(e)
    assert.equal(1, code)
    assert.matches("^certmaint WARNING: 7 of 7 certificates need attention: n1%.test expired", line)
    assert.matches("; and 2 more$", line)
    assert.is_nil(line:find("n6.test", 1, true))
    assert.is_nil(line:find("\n", 1, true))
  end)
end)

describe("storage.file check_root", function()
  local file = require "certmaint.storage.file"
  local dir

  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("says a missing root does not exist, and creates nothing", function()
    local s = file.new { root = dir .. "/x/y" }
    assert.same({ nil, "storage root " .. dir .. "/x/y does not exist", "ENOENT" }, { s:check_root(false) })
    assert.is_nil(lfs.attributes(dir .. "/x"))
  end)

  it("creates a missing root when asked (run), with the storage's dir_mode", function()
    local s = file.new { root = dir .. "/x/y" }
    assert.same({ true, true }, { s:check_root(true) })
    assert.equal("directory", lfs.attributes(dir .. "/x/y", "mode"))
    assert.equal("rwx------", lfs.attributes(dir .. "/x/y", "permissions"))
    assert.same({ true, false }, { s:check_root(true) })
    assert.same({ true, false }, { s:check_root(false) })
  end)

  it("refuses a root that is a file", function()
    assert(io.open(dir .. "/f", "w")):close()
    local ok, err, code = file.new { root = dir .. "/f" }:check_root(true)
    assert.is_nil(ok)
    assert.equal("storage root " .. dir .. "/f is not a directory", err)
    assert.equal("ENOTDIR", code)
  end)
end)
