-- Start-up's first staples (engine/ocsp.lua first_staples, load_all with
-- staples = true): on the file backend, each certificate's stored staple is
-- checked on the core's threads while the load goes on and the good ones are
-- attached before `loaded`; what is not good is the first OCSP pass's, which
-- treats it as before (a revoked one replaces the certificate); a policy that
-- deploys staples keeps the pass's own step.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local keys = require "certmaint.keys"
local helpers = require "helpers.policies"

local DAY = 86400
local URL = "http://ocsp.ca.test/"

local grep = require("helpers.log_lines").count
local first_line = require("helpers.log_lines").first

describe("start-up's first staples", function()
  local clock, ca, logs, dir, storage, issuer

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    logs = testing.capture_logs()
    dir = helpers.tmpdir()
    storage = require("certmaint.storage").file { root = dir }
    issuer = testing.issuer { ca = ca, ocsp_url = URL }
  end)

  after_each(function()
    testing.reset()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local NAMES = { "a.test", "b.test", "c.test" }

  -- each name's staple written to dir as the deploy target's file, the one e holds
  local function assert_staples_deployed(e, dir)
    for _, n in ipairs(NAMES) do
      local f = io.open(dir .. "/" .. n .. ".pem.ocsp", "rb")
      assert.is_not_nil(f, n .. ": staple deployed")
      assert.equal(e:cert(n).ocsp.der, f:read("a"))
      f:close()
    end
  end

  local function engine(fields)
    fields = fields or {}
    fields.certificates = fields.certificates or NAMES
    fields.issuer = issuer
    return testing.engine(certmaint.policy(fields), { storage = storage })
  end

  local function staple_key(cert) return keys.ocsp(cert.names[1], keys.fast_hash(cert.pem)) end

  it("a restart attaches the stored staples while loading: no responder asked, no OCSP pass needed", function()
    local first = engine()
    assert.equal(3, first.responder:count("ocsp"))
    local ders = {}
    for _, n in ipairs(NAMES) do ders[n] = first:cert(n).ocsp.der end
    logs()
    local second = engine()
    local lines = logs()
    assert.equal(0, second.responder:count("ocsp"))
    for _, n in ipairs(NAMES) do
      local c = second:cert(n)
      assert.equal("good", c.ocsp.status, n)
      assert.equal(ders[n], c.ocsp.der, n)
    end
    local loaded = assert(first_line(lines, "event=staples_loaded"))
    assert.matches("count=3", loaded)
    assert.matches("good=3", loaded)
    -- attached before the load's summary line, and nothing was due for a pass
    local at_staples, at_loaded
    for i, l in ipairs(lines) do
      if l:find("event=staples_loaded") then at_staples = i end
      if l:find("event=loaded ") then at_loaded = i end
    end
    assert.is_true(at_staples < at_loaded, table.concat(lines, "\n"))
    assert.equal(0, grep(lines, "event=tick .*kind=ocsp"))
    assert.same({}, second.engine.cache:staples_due(clock:now()))
  end)

  it("leaves a revoked, a forged and a missing staple to the first OCSP pass, which acts on each", function()
    local first = engine()
    local a, b, c = first:cert("a.test"), first:cert("b.test"), first:cert("c.test")
    ca:revoke(b.serial, { reason = "keyCompromise" })
    assert(storage:store(staple_key(b), ca:ocsp(b.pem, { this_update = clock:now() })))
    assert(storage:store(staple_key(c), testing.ca():ocsp(c.pem, { this_update = clock:now() }))) -- another CA's
    assert(storage:delete(staple_key(a)))
    logs()
    local second = engine()
    local lines = logs()
    -- none attached while loading: the only staples_loaded line is the pass's (after `loaded`)
    local loaded_at
    for i, l in ipairs(lines) do
      if l:find("event=loaded ") then loaded_at = i end
      if l:find("event=staples_loaded") then assert.is_truthy(loaded_at, "staples_loaded before loaded: " .. l) end
    end
    local tick = assert(first_line(lines, "event=tick .*kind=ocsp"))
    assert.matches(" due=4", tick) -- the three, then b's replacement
    assert.matches(" from_storage=1", tick) -- b's revoked staple
    assert.matches(" refreshed=3", tick) -- a, c and the replacement, fetched
    assert.matches(" revoked=1", tick)
    assert.not_equal(b.serial, second:cert("b.test").serial) -- replaced at once
    assert.equal("good", second:cert("a.test").ocsp.status)
    assert.equal("good", second:cert("c.test").ocsp.status)
    assert.equal(second:cert("c.test").ocsp.der, storage:load(staple_key(c))) -- fetched, stored over the forgery
  end)

  it("a stale stored staple is not attached: the pass fetches a fresh one", function()
    local first = engine()
    local a = first:cert("a.test")
    assert(storage:store(staple_key(a), ca:ocsp(a.pem, { this_update = clock:now() - 6 * DAY,
      next_update = clock:now() + DAY })))
    local second = engine()
    assert.equal(1, second.responder:count("ocsp"))
    assert.equal(clock:now(), second:cert("a.test").ocsp.this_update)
  end)

  it("with staples deployed, the pass's own step writes them (none attached while loading)", function()
    local deploy_dir = helpers.tmpdir()
    local fields = function()
      return { on_renewed = certmaint.deploy.files { dir = deploy_dir, layout = "haproxy", staple = true } }
    end
    engine(fields())
    os.execute("rm -rf '" .. deploy_dir .. "'/*")
    logs()
    local second = engine(fields())
    local lines = logs()
    assert.equal(0, second.responder:count("ocsp"))
    local tick = assert(first_line(lines, "event=tick .*kind=ocsp"))
    assert.matches(" from_storage=3", tick)
    assert_staples_deployed(second, deploy_dir)
    os.execute("rm -rf '" .. deploy_dir .. "'")
  end)

  -- the OCSP pass's own shortcut for a plain first staple (counted, not
  -- handled one by one) runs only where no debug line is wanted: logs not captured here
  describe("with the log at error level (the pass's plain first staples)", function()
    before_each(function() require("certmaint.core").log_config { capture = false, level = "error" } end)
    after_each(function() require("certmaint.core").log_config { level = "info" } end)

    local function memory_engine(memory, fields)
      fields = fields or {}
      fields.certificates = NAMES
      fields.issuer = issuer
      return testing.engine(certmaint.policy(fields), { storage = memory })
    end

    it("memory storage, nothing deployed: a restart takes every staple from storage", function()
      local memory = testing.memory()
      local first = memory_engine(memory)
      local second = memory_engine(memory)
      assert.equal(0, second.responder:count("ocsp"))
      for _, n in ipairs(NAMES) do assert.equal(first:cert(n).ocsp.der, second:cert(n).ocsp.der, n) end
    end)

    it("memory storage with a staple deploy target: a restart deploys each first staple", function()
      local memory, deploy_dir = testing.memory(), helpers.tmpdir()
      local fields = function()
        return { on_renewed = certmaint.deploy.files { dir = deploy_dir, layout = "haproxy", staple = true } }
      end
      memory_engine(memory, fields())
      os.execute("rm -f '" .. deploy_dir .. "'/*.ocsp")
      local second = memory_engine(memory, fields())
      assert.equal(0, second.responder:count("ocsp"))
      assert_staples_deployed(second, deploy_dir)
      os.execute("rm -rf '" .. deploy_dir .. "'")
    end)
  end)
end)
