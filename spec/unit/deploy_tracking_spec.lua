-- Deploy is tracked state (issue 7, item 5): what on_renewed deployed where is
-- recorded in storage, a failed deploy is retried on the renewal back-off, a
-- restart redeploys what differs from storage, and status shows it all.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local keys = require "certmaint.keys"
local helpers = require "helpers.policies"
local backends = require "helpers.storage_backends"
local lfs = require "lfs"

local DAY = 86400

describe("deploy tracking", function()
  local clock, ca, dir, storage

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    dir = helpers.tmpdir()
    storage = testing.memory()
    testing.capture_logs()
  end)

  after_each(function()
    testing.reset()
    backends.make_writable(dir)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function policy(fields)
    fields.certificates = fields.certificates or { "a.test" }
    fields.issuer = fields.issuer or testing.issuer { ca = ca, lifetime = "30d" }
    return certmaint.policy(fields)
  end

  local function record(name)
    local raw = storage:load(keys.deploy(name))
    return raw and core.json_decode(raw)
  end

  local function deploy_row(e, name)
    for _, r in ipairs(e:status_rows()) do
      if r.names[1] == name then return r.deploy end
    end
  end

  it("records per certificate and target the serial and time deployed, in certmaint/deploy/", function()
    local e = testing.engine(policy { on_renewed = certmaint.deploy.files { dir = dir } }, { storage = storage })
    local serial = e:cert("a.test").serial
    local rec = record("a.test")
    local t = rec.targets["files:" .. dir]
    assert.equal("a.test", rec.name)
    assert.equal(serial, t.serial)
    assert.equal(testing.EPOCH, t.deployed_at)
    assert.is_nil(t.error)
    assert.equal(keys.fast_hash(e:cert("a.test").pem), t.files[dir .. "/a.test/fullchain.pem"])
    assert.same({ { target = "files:" .. dir, state = "deployed", serial = serial, deployed_at = testing.EPOCH,
      host = core.hostname() } }, deploy_row(e, "a.test"))
    -- a renewal records the new serial
    clock:advance(25 * DAY)
    e:tick("renew")
    assert.are_not.equal(serial, e:cert("a.test").serial)
    assert.equal(e:cert("a.test").serial, record("a.test").targets["files:" .. dir].serial)
    assert.equal(testing.EPOCH + 25 * DAY, record("a.test").targets["files:" .. dir].deployed_at)
  end)

  it("retries a deploy to an unwritable target directory on the back-off, and deploys once it is fixed", function()
    assert.is_true(backends.make_readonly(dir), "cannot make a directory read-only here")
    local e = testing.engine(policy { on_renewed = certmaint.deploy.files { dir = dir } }, { storage = storage })
    local serial = e:cert("a.test").serial
    local d = deploy_row(e, "a.test")[1]
    assert.equal("failed", d.state)
    assert.matches("^deploy: ", d.error)
    assert.equal(1, d.attempts)
    assert.equal(testing.EPOCH + 60, d.next_attempt) -- certmagic's first interval: 1m
    assert.is_nil(d.serial)                          -- nothing was ever deployed
    assert.equal(serial, record("a.test").targets["files:" .. dir].failed_serial)
    -- the retry is data: a waiting job, no timer of its own
    assert.equal("waiting", e.jobs:status("deploy:a.test").state)
    assert.equal(testing.EPOCH + 60, e.jobs:next_wakeup())
    assert.equal(0, core.loop_pending().timers)
    -- still broken at the first retry: the back-off grows (2m)
    clock:advance(60)
    e:wait()
    d = deploy_row(e, "a.test")[1]
    assert.equal(2, d.attempts)
    assert.equal(testing.EPOCH + 60 + 120, d.next_attempt)
    -- fixed: the next retry deploys, without a restart
    backends.make_writable(dir)
    clock:advance(120)
    e:wait()
    d = deploy_row(e, "a.test")[1]
    assert.equal("deployed", d.state)
    assert.is_nil(d.error)
    assert.equal(serial, d.serial)
    assert.equal(e:cert("a.test").pem, helpers.read(dir .. "/a.test/fullchain.pem"))
    assert.equal("done", e.jobs:status("deploy:a.test").state)
    assert.is_nil(e.jobs:next_wakeup())
  end)

  it("retries a deploy whose command fails, with the hook's error in the record", function()
    local calls, fail = {}, 2
    local e = testing.engine(policy { on_renewed = function(cert)
      calls[#calls + 1] = cert.event
      if #calls <= fail then error("reload exited 1", 0) end
    end }, { storage = storage })
    assert.same({ "obtained" }, calls)
    local d = deploy_row(e, "a.test")[1]
    assert.same({ "on_renewed", "failed", "reload exited 1" }, { d.target, d.state, d.error })
    clock:advance(59)
    e:wait()
    assert.equal(1, #calls) -- not before its time
    clock:advance(1)
    e:wait()
    assert.same({ "obtained", "redeploy" }, calls)
    clock:advance(120)
    e:wait()
    assert.same({ "obtained", "redeploy", "redeploy" }, calls)
    assert.equal("deployed", deploy_row(e, "a.test")[1].state)
    -- a renew pass finds nothing more to retry
    e:tick("renew")
    assert.equal(3, #calls)
  end)

  it("deploys a new certificate at once although an older one's deploy waits to retry", function()
    local calls, broken = {}, true
    local e = testing.engine(policy { on_renewed = function(cert)
      calls[#calls + 1] = cert.serial
      if broken then error("down", 0) end
    end }, { storage = storage })
    broken = false
    clock:advance(25 * DAY) -- long past the retry, but the renewal comes first in the pass
    local tick = e:tick("renew")
    assert.equal(1, tick.renewed)
    assert.equal(1, tick.deployed)
    assert.equal(e:cert("a.test").serial, calls[#calls])
    assert.equal("deployed", deploy_row(e, "a.test")[1].state)
  end)

  it("at start-up redeploys a deleted or changed target file, and leaves intact ones alone", function()
    local p = policy { certificates = { "a.test", "b.test" }, on_renewed = certmaint.deploy.files { dir = dir } }
    local e = testing.engine(p, { storage = storage })
    local a_pem = e:cert("a.test").pem
    local b_ino = lfs.attributes(dir .. "/b.test/fullchain.pem", "ino")
    os.remove(dir .. "/a.test/privkey.pem")
    testing.reset()
    clock = testing.clock(testing.EPOCH + 60)
    local logs = testing.capture_logs()
    local e2 = testing.engine(p, { storage = storage }) -- a restart
    assert.is_truthy(helpers.read(dir .. "/a.test/privkey.pem"))
    assert.is_true(core.key_matches(a_pem, helpers.read(dir .. "/a.test/privkey.pem")))
    assert.equal(b_ino, lfs.attributes(dir .. "/b.test/fullchain.pem", "ino")) -- not rewritten
    assert.matches("event=redeploying name=a.test reason=\"deployed files missing or changed\"",
      table.concat(logs(), "\n"), 1, true)
    assert.equal(testing.EPOCH + 60, record("a.test").targets["files:" .. dir].deployed_at)
    assert.equal(testing.EPOCH, record("b.test").targets["files:" .. dir].deployed_at)
    -- a file changed by hand is put back as well
    local f = assert(io.open(dir .. "/b.test/fullchain.pem", "w"))
    f:write("not the certificate\n")
    f:close()
    testing.reset()
    testing.clock(testing.EPOCH + 120)
    local e3 = testing.engine(p, { storage = storage })
    assert.equal(e3:cert("b.test").pem, helpers.read(dir .. "/b.test/fullchain.pem"))
    assert.equal(e2:cert("b.test").pem, e3:cert("b.test").pem)
  end)

  it("at start-up redeploys when the deployed serial is not the stored one, or the last deploy failed", function()
    local calls = {}
    local function p() return policy { certificates = { "a.test", "b.test", "c.test" }, on_renewed = function(cert)
      calls[#calls + 1] = cert.names[1] .. " " .. cert.event
    end } end
    local e = testing.engine(p(), { storage = storage })
    assert.equal(3, #calls)
    -- what a crash between a renewal's commit and its deploy leaves: an older serial recorded
    local rec = record("a.test")
    rec.targets.on_renewed.serial = "00"
    storage:store(keys.deploy("a.test"), core.json_encode(rec))
    rec = record("b.test")
    rec.targets.on_renewed.error = "reload exited 1"
    storage:store(keys.deploy("b.test"), core.json_encode(rec))
    testing.reset()
    testing.clock(testing.EPOCH + 60)
    calls = {}
    e = testing.engine(p(), { storage = storage })
    table.sort(calls)
    assert.same({ "a.test redeploy", "b.test redeploy" }, calls)
    for _, n in ipairs { "a.test", "b.test", "c.test" } do
      assert.equal(e:cert(n).serial, record(n).targets.on_renewed.serial)
      assert.is_nil(record(n).targets.on_renewed.error)
    end
    -- and a restart with nothing different deploys nothing
    testing.reset()
    testing.clock(testing.EPOCH + 120)
    calls = {}
    testing.engine(p(), { storage = storage })
    assert.same({}, calls)
  end)

  it("records files found in place when storage holds no record yet (an upgrade), rewriting nothing", function()
    local p = policy { on_renewed = certmaint.deploy.files { dir = dir } }
    testing.engine(p, { storage = storage })
    local ino = lfs.attributes(dir .. "/a.test/privkey.pem", "ino")
    storage:delete(keys.deploy("a.test"))
    testing.reset()
    testing.clock(testing.EPOCH + 60)
    local e = testing.engine(p, { storage = storage })
    assert.equal(ino, lfs.attributes(dir .. "/a.test/privkey.pem", "ino"))
    assert.equal(e:cert("a.test").serial, record("a.test").targets["files:" .. dir].serial)
  end)

  it("forgets a waiting retry when a reloaded policy drops on_renewed or the certificate", function()
    local e = testing.engine(policy { certificates = { "a.test", "b.test" },
      on_renewed = function() error("down", 0) end }, { storage = storage })
    assert.equal(testing.EPOCH + 60, e.jobs:next_wakeup())
    e.engine:apply_policy(policy { certificates = { "a.test" } }) -- SIGHUP: no on_renewed, no b.test
    clock:advance(60)
    e:wait()
    assert.is_nil(e.jobs:next_wakeup()) -- nothing left for the renew ticker to wake for
    assert.is_nil(e.jobs:status("deploy:a.test"))
    assert.is_nil(e.jobs:status("deploy:b.test"))
  end)

  it("has no deploy field and writes no record without on_renewed", function()
    local e = testing.engine(policy {}, { storage = storage })
    assert.is_nil(deploy_row(e, "a.test"))
    assert.is_nil(record("a.test"))
  end)
end)
