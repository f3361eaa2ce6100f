-- The OCSP pass (engine/ocsp.lua), driven through certmaint.testing: a fake
-- clock, memory storage, a testing CA and the in-process responder that
-- answers for it (ca:ocsp), so no network.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local keys = require "certmaint.keys"

local DAY = 86400
local URL = "http://ocsp.ca.test/"
local ENGINE_YIELD_EVERY = require("certmaint.engine.ocsp").YIELD_EVERY

local grep = require("helpers.log_lines").count

describe("OCSP pass", function()
  local clock, ca, logs, lines

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    logs = testing.capture_logs()
    lines = {}
  end)

  after_each(function()
    local pending = core.loop_pending()
    testing.reset()
    assert.equal(0, pending.http)
    assert.same({ timers = 0, http = 0, exec = 0, servers = 0 }, core.loop_pending())
  end)

  -- the log lines since the last call, kept for the whole test too
  local function take()
    local got = logs()
    for _, l in ipairs(got) do lines[#lines + 1] = l end
    return got
  end

  local function engine(fields, opts)
    fields.certificates = fields.certificates or { "a.test" }
    fields.issuer = fields.issuer or testing.issuer { ca = ca, ocsp_url = URL }
    local e = testing.engine(certmaint.policy(fields), opts)
    return e, fields.issuer
  end

  local function staple_key(cert) return keys.ocsp(cert.names[1], keys.fast_hash(cert.pem)) end

  it("staples every certificate at start-up, verified, stored under certmagic's key", function()
    local e = engine { certificates = { "a.test", "b.test" } }
    for _, name in ipairs { "a.test", "b.test" } do
      local c = e:cert(name)
      assert.is_table(c.ocsp)
      assert.equal("good", c.ocsp.status)
      assert.equal(clock:now(), c.ocsp.this_update)
      assert.equal(clock:now() + 7 * DAY, c.ocsp.next_update)
      assert.equal(clock:now() + 3.5 * DAY, c.ocsp.refresh_at) -- half the span
      assert.equal(c.ocsp.der, e.storage:load(staple_key(c)))
      -- what was stored is a response the core verifies for this certificate
      assert.equal("good", core.ocsp_response_parse(c.ocsp.der, c.pem, ca.cert_pem, clock:now(), 300).status)
    end
    assert.equal(2, e.responder:count("ocsp", URL))
    -- each request was a real OCSP request for that certificate
    for _, call in ipairs(e.responder.calls) do assert.is_true(#call.request > 40) end
    assert.equal(2, grep(take(), "level=info event=staple_updated .*status=good"))
  end)

  it("skips fresh staples, refreshes past half their span, and logs the advance", function()
    local e = engine {}
    take()
    local tick = e:tick("ocsp")
    assert.equal(0, tick.due)
    assert.equal(1, e.responder:count("ocsp"))
    clock:advance(3 * DAY)
    assert.equal(0, e:tick("ocsp").due)
    clock:advance(DAY) -- 4 days: past 3.5
    tick = e:tick("ocsp")
    assert.equal(1, tick.due)
    assert.equal(1, tick.refreshed)
    assert.equal(2, e.responder:count("ocsp"))
    assert.equal(clock:now(), e:cert("a.test").ocsp.this_update)
    assert.equal(1, grep(take(), "event=staple_updated .*this_update=2026%-01%-05T00:00:00Z"))
  end)

  it("takes a fresher staple another instance stored instead of asking the responder", function()
    local e = engine {}
    clock:advance(4 * DAY)
    local c = e:cert("a.test")
    local fresher = ca:ocsp(c.pem, { this_update = clock:now() - 60, next_update = clock:now() + 7 * DAY })
    assert(e.storage:store(staple_key(c), fresher))
    local tick = e:tick("ocsp")
    assert.equal(1, tick.from_storage)
    assert.equal(0, tick.refreshed)
    assert.equal(1, e.responder:count("ocsp")) -- only start-up's
    assert.equal(fresher, e:cert("a.test").ocsp.der)
  end)

  it("loads staples from storage at start-up: a restart asks no responder", function()
    local storage = testing.memory()
    local issuer = testing.issuer { ca = ca, ocsp_url = URL }
    local first = engine({ issuer = issuer, storage = storage })
    local der = first:cert("a.test").ocsp.der
    local second = engine({ issuer = issuer, storage = storage })
    assert.equal(0, second.responder:count("ocsp"))
    assert.equal(der, second:cert("a.test").ocsp.der)
  end)

  it("lets the loop run while it checks many staples that need no waiting", function()
    local loop = require "certmaint.loop"
    local names = {}
    for i = 1, 10 * ENGINE_YIELD_EVERY do names[i] = ("s%d.test"):format(i) end
    local e = engine { certificates = names, ocsp = { concurrency = 1 } }
    -- every staple is in storage and none is on its entry: the pass takes them all from storage
    for _, c in ipairs(e:cache()) do assert(e.engine.cache:set(c.id, { ocsp = false })) end
    local probe, tick = 0, nil
    loop.spawn(function() tick = e.engine:tick("ocsp") end)
    loop.spawn(function()
      while not tick do
        probe = probe + 1
        loop.yield()
      end
    end)
    loop.run_until_idle()
    assert.equal(#names, tick.from_storage)
    assert.equal(#names, e.responder:count("ocsp")) -- start-up's only
    -- one worker, 10 x YIELD_EVERY staples: the other task ran at least 10 times meanwhile
    assert.is_true(probe >= 10, "the probe ran " .. probe .. " times")
  end)

  it("checks stored staples in batches on the core's threads, file storage reading the files there", function()
    local helpers = require "helpers.policies"
    local ocsp = require "certmaint.engine.ocsp"
    local dir = helpers.tmpdir()
    local storage = require("certmaint.storage").file { root = dir }
    local saved = ocsp.STAPLE_BATCH
    ocsp.STAPLE_BATCH = 4 -- several batches, the next started while one is handled
    local names = {}
    for i = 1, 11 do names[i] = ("f%d.test"):format(i) end
    local e = engine { certificates = names, storage = storage }
    clock:advance(4 * DAY) -- every staple is due
    local by_name, other = {}, testing.ca()
    for i, name in ipairs(names) do
      local c = e:cert(name)
      by_name[name] = c
      local der
      if i == 3 then der = other:ocsp(c.pem, { this_update = clock:now() }) -- signed by another CA
      elseif i == 5 then der = ca:ocsp(c.pem, { this_update = clock:now(), status = "unknown" })
      elseif i == 7 then der = nil -- nothing stored: removed
      else der = ca:ocsp(c.pem, { this_update = clock:now() - 60, next_update = clock:now() - 60 + 7 * DAY }) end
      if der then assert(storage:store(staple_key(c), der)) else assert(storage:delete(staple_key(c))) end
    end
    take()
    local asked = e.responder:count("ocsp")
    local tick = e:tick("ocsp")
    ocsp.STAPLE_BATCH = saved
    assert.equal(11, tick.due)
    assert.equal(8, tick.from_storage)
    assert.equal(3, tick.refreshed) -- the bad, the unknown and the missing one: asked
    assert.equal(asked + 3, e.responder:count("ocsp"))
    for i, name in ipairs(names) do
      local st = e:cert(name).ocsp
      if i == 3 or i == 5 or i == 7 then
        assert.equal(clock:now(), st.this_update, name) -- fetched now
      else
        assert.equal(clock:now() - 60, st.this_update, name)
        assert.equal(storage:load(staple_key(by_name[name])), st.der)
        assert.equal(clock:now() - 60 + 3.5 * DAY, st.refresh_at)
      end
    end
    assert.equal(11, grep(take(), "level=info event=staple_updated"))
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("a stored revoked staple taken by the batch is handled as revoked", function()
    local e = engine { certificates = { "a.test", "b.test" } }
    clock:advance(4 * DAY)
    local c = e:cert("b.test")
    local old_serial = c.serial
    ca:revoke(c.serial, { reason = "keyCompromise" })
    assert(e.storage:store(staple_key(c), ca:ocsp(c.pem, { this_update = clock:now() - 60 })))
    assert(e.storage:store(staple_key(e:cert("a.test")), ca:ocsp(e:cert("a.test").pem, { this_update = clock:now() - 60 })))
    local tick = e:tick("ocsp")
    assert.equal(2, tick.from_storage)
    assert.equal(1, tick.revoked)
    assert.not_equal(old_serial, e:cert("b.test").serial) -- replaced
  end)

  it("does not take a stored staple that fails verification", function()
    local e = engine {}
    clock:advance(4 * DAY)
    local c = e:cert("a.test")
    -- fresh, but signed by another CA
    assert(e.storage:store(staple_key(c), testing.ca():ocsp(c.pem, { this_update = clock:now() })))
    local tick = e:tick("ocsp")
    assert.equal(0, tick.from_storage)
    assert.equal(1, tick.refreshed)
    assert.equal(e:cert("a.test").ocsp.der, e.storage:load(staple_key(c)))
  end)

  it("keeps a still valid staple when the responder fails, with an error naming URL and reason", function()
    local e = engine {}
    local der = e:cert("a.test").ocsp.der
    e.responder:fail(true, "error")
    clock:advance(4 * DAY)
    take()
    local tick = e:tick("ocsp")
    assert.equal(1, tick.failed)
    assert.equal(1, tick.kept)
    assert.equal(0, tick.removed)
    assert.equal(der, e:cert("a.test").ocsp.der)
    assert.equal(1, grep(take(), "level=error event=staple_fetch_failed code=connect .*kept_until=2026%-01%-08T00:00:00Z "
      .. "name=a.test url=http://ocsp.ca.test/"))
  end)

  it("takes a staple past its nextUpdate off the certificate, at error level", function()
    local e = engine {}
    e.responder:fail(URL, "http")
    clock:advance(7 * DAY + 1)
    take()
    local tick = e:tick("ocsp")
    assert.equal(1, tick.removed)
    assert.is_nil(e:cert("a.test").ocsp)
    assert.equal(1, grep(take(), "level=error event=staple_expired .*code=http .*name=a.test"))
    -- the responder back: stapled again
    e.responder:fail(URL, false)
    assert.equal(1, e:tick("ocsp").refreshed)
    assert.equal("good", e:cert("a.test").ocsp.status)
  end)

  for _, case in ipairs {
    { how = "garbage", code = "parse" },
    { how = "stale", code = "stale" },
    { how = "timeout", code = "timeout" },
    { how = "toobig", code = "toobig" },
  } do
    it("neither uses nor stores an answer that fails (" .. case.how .. ")", function()
      local e = engine {}
      local c = e:cert("a.test")
      local der = c.ocsp.der
      e.responder:fail(true, case.how)
      clock:advance(4 * DAY)
      take()
      local tick = e:tick("ocsp")
      assert.equal(1, tick.failed)
      assert.equal(1, tick.kept)
      assert.equal(der, e:cert("a.test").ocsp.der)
      assert.equal(der, e.storage:load(staple_key(c)))
      assert.equal(1, grep(take(), "level=error event=staple_fetch_failed code=" .. case.code))
    end)
  end

  it("refuses a response signed by another CA and one not yet valid", function()
    local e = engine {}
    local der = e:cert("a.test").ocsp.der
    local other = testing.ca()
    local answers = {
      function(pem) return other:ocsp(pem) end,
      function(pem) return ca:ocsp(pem, { this_update = clock:now() + 3600, next_update = clock:now() + 8 * DAY }) end,
    }
    local codes = {}
    for i, answer in ipairs(answers) do
      e.responder:fail(true, function(_, _, cert) return answer(cert.pem) end)
      clock:set(testing.EPOCH + 4 * DAY + i)
      take()
      e:tick("ocsp")
      for _, l in ipairs(take()) do codes[#codes + 1] = l:match("event=staple_fetch_failed code=(%S+)") end
      assert.equal(der, e:cert("a.test").ocsp.der)
    end
    assert.same({ "verify", "notyet" }, codes)
  end)

  it("clamps a staple's life to its certificate's not_after", function()
    local e = engine { issuer = testing.issuer { ca = ca, ocsp_url = URL, lifetime = "2d" } }
    local s = e:cert("a.test").ocsp
    assert.equal(clock:now() + 7 * DAY, s.next_update)
    assert.equal(clock:now() + DAY, s.refresh_at) -- half of the 2 days the certificate has
  end)

  it("fetches at most ocsp.concurrency at once", function()
    local names = {}
    for i = 1, 7 do names[i] = "n" .. i .. ".test" end
    local e = engine { certificates = names, ocsp = { concurrency = 3 } }
    assert.equal(7, e.responder:count("ocsp"))
    assert.equal(3, e.responder.max_in_flight)
    for _, n in ipairs(names) do assert.equal("good", e:cert(n).ocsp.status) end
  end)

  it("says nothing above debug for a certificate that names no responder", function()
    local e = engine { issuer = testing.issuer { ca = ca } }
    assert.equal(0, grep(take(), "kind=ocsp")) -- start-up ran no OCSP pass
    local tick = e:tick("ocsp")
    assert.equal(0, tick.due)
    assert.equal(0, e.responder:count("ocsp"))
    for _, l in ipairs(take()) do
      assert.is_nil(l:find("level=warn") or l:find("level=error"), l)
    end
  end)

  it("does nothing with ocsp.enabled = false", function()
    local e = engine { ocsp = { enabled = false } }
    assert.is_nil(e:cert("a.test").ocsp)
    assert.equal(0, e:tick("ocsp").due)
    assert.equal(0, e.responder:count("ocsp"))
  end)

  it("neither staples nor stores an unknown status, keeps the staple, and asks again next pass", function()
    local e = engine {}
    local c = e:cert("a.test")
    local der = c.ocsp.der
    e.responder:fail(true, "unknown")
    clock:advance(4 * DAY)
    take()
    local tick = e:tick("ocsp")
    assert.equal(1, tick.failed)
    assert.equal(1, tick.kept)
    assert.equal(der, e:cert("a.test").ocsp.der)
    assert.equal(der, e.storage:load(staple_key(c)))
    local got = take()
    assert.equal(1, grep(got, "level=warn event=staple_unknown code=unknown .*kept_until="))
    assert.equal(0, grep(got, "level=error"))
    e.responder:fail(true, false) -- the responder caught up
    clock:advance(60)
    assert.equal(1, e:tick("ocsp").refreshed)
    assert.equal("good", e:cert("a.test").ocsp.status)
  end)

  it("staples a new certificate once the responder knows it", function()
    local e = engine({}, { start = false })
    e.responder:fail(true, "unknown") -- the responder has not caught up with what the CA issued
    e:start()
    assert.is_nil(e:cert("a.test").ocsp) -- unknown is no staple
    e.responder:fail(true, false)
    local tick = e:tick("ocsp") -- the next pass, no time needed
    assert.equal(1, tick.due)
    assert.equal(1, tick.refreshed)
    assert.equal("good", e:cert("a.test").ocsp.status)
  end)

  it("reports its tick to on_tick", function()
    local ticks = {}
    local e = engine { on_tick = function(t) ticks[#ticks + 1] = t end }
    assert.equal(1, #ticks)
    assert.equal("ocsp", ticks[1].kind)
    assert.equal(1, ticks[1].refreshed)
    clock:advance(4 * DAY)
    e:tick("ocsp")
    assert.same({ "ocsp", 1, 1, 0, 0, 0, 0 }, { ticks[2].kind, ticks[2].due, ticks[2].refreshed, ticks[2].from_storage,
      ticks[2].failed, ticks[2].revoked, ticks[2].removed })
  end)
end)

describe("the daemon's OCSP ticker", function()
  after_each(testing.reset)

  it("runs a pass after start-up and then every ocsp_check_interval", function()
    local loop = require "certmaint.loop"
    local clock = testing.clock(testing.EPOCH)
    testing.capture_logs()
    local ca = testing.ca()
    local kinds, ticked = {}, loop.cond()
    local e = testing.engine(certmaint.policy {
      certificates = { "a.test" },
      issuer = testing.issuer { ca = ca, ocsp_url = URL },
      ocsp_check_interval = "1h", renew_check_interval = "1d", clean_interval = "1d",
      on_tick = function(t) kinds[#kinds + 1] = t.kind; ticked:notify_all() end,
    }, { start = false })
    local eng = e.engine
    local function ocsp_ticks()
      local n = 0
      for _, k in ipairs(kinds) do if k == "ocsp" then n = n + 1 end end
      return n
    end
    loop.spawn(function()
      while ocsp_ticks() < 1 do ticked:wait() end   -- start-up's pass
      clock:advance(4 * DAY)                         -- the staple is due; the ticker's hour has passed
      while ocsp_ticks() < 2 do ticked:wait() end
      eng.stopping = true
      eng.wake:notify_all()
    end)
    eng:run()
    assert.equal(2, ocsp_ticks())
    assert.equal(2, e.responder:count("ocsp"))
    assert.equal(clock:now(), eng.cache:get(eng.cache:lookup("a.test")).ocsp.this_update)
  end)
end)

describe("policy ocsp record", function()
  it("has the documented defaults", function()
    local p = certmaint.policy { certificates = { "a.test" } }
    assert.same({ enabled = true, concurrency = 16, timeout = 10, max_response_size = 65536, skew = 300,
      crl_checks = true, max_crl_size = 33554432 }, p.ocsp)
  end)

  it("takes durations and staple files, and names a wrong field", function()
    local p = certmaint.policy { certificates = { "a.test" },
      ocsp = { timeout = "3s", skew = "1m", staple_files = { "/etc/haproxy/x.pem" } } }
    assert.equal(3, p.ocsp.timeout)
    assert.equal(60, p.ocsp.skew)
    assert.same({ "/etc/haproxy/x.pem" }, p.ocsp.staple_files)
    assert.has_error(function() certmaint.policy { certificates = { "a.test" }, ocsp = { timeuot = 1 } } end)
    assert.has_error(function() certmaint.policy { certificates = { "a.test" }, ocsp = { concurrency = 0 } } end)
    assert.has_error(function() certmaint.policy { certificates = { "a.test" }, ocsp = { staple_files = { 1 } } } end)
    local ok, err = pcall(certmaint.policy, { certificates = { "a.test" }, ocsp = { staple_files = "x.pem" } })
    assert.is_false(ok)
    assert.matches("ocsp.staple_files", err, 1, true)
  end)
end)

describe("engine.ocsp.issuer_pem_of", function()
  local ocsp = require "certmaint.engine.ocsp"
  local function block(body) return "-----BEGIN CERTIFICATE-----\n" .. body .. "\n-----END CERTIFICATE-----\n" end

  it("gives the chain's second certificate, its newline included", function()
    assert.equal(block("BBB"), ocsp.issuer_pem_of(block("AAA") .. block("BBB") .. block("CCC")))
    assert.equal(block("BBB"):sub(1, -2), ocsp.issuer_pem_of(block("AAA") .. block("BBB"):sub(1, -2)))
  end)

  it("gives nil for a chain of one, or a second certificate that never ends", function()
    assert.is_nil(ocsp.issuer_pem_of(block("AAA")))
    assert.is_nil(ocsp.issuer_pem_of(block("AAA") .. "-----BEGIN CERTIFICATE-----\nBBB\n"))
    assert.is_nil(ocsp.issuer_pem_of("-----END CERTIFICATE-----\n" .. block("AAA")))
    assert.is_nil(ocsp.issuer_pem_of(""))
  end)
end)
