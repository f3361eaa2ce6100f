-- Several instances on one storage (issue 10): two engines share one memory
-- storage (memory.new{share = ...}: separate owners and locks, the same data),
-- as two certmaint processes share etcd or a directory. Renewals take the
-- name's lock, re-read, reload what the other renewed; lock waits are bounded
-- and logged; a fenced commit is a lost lock; staples, CRLs and ARI windows
-- are fetched by one instance and shared.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local keys = require "certmaint.keys"
local certset = require "certmaint.certset"

local DAY = 86400
local URL = "http://ocsp.cluster.test/"

local function grep(lines, pattern)
  local n = 0
  for _, l in ipairs(lines) do if l:find(pattern) then n = n + 1 end end
  return n
end

describe("two instances on one storage", function()
  local clock, ca, logs, lines

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    logs = testing.capture_logs()
    core.log_config { level = "debug" }
    lines = {}
  end)

  after_each(function()
    local pending = core.loop_pending()
    core.log_config { level = "info" }
    testing.reset()
    assert.equal(0, pending.http)
    assert.equal(0, pending.exec)
  end)

  local function take()
    for _, l in ipairs(logs()) do lines[#lines + 1] = l end
    return lines
  end

  -- An issuer that waits at `gate` until opened: a renewal in flight (an ACME
  -- order takes seconds) while the other instance's pass runs.
  local function gated(inner)
    local g = { ca = inner.ca, inner = inner, closed = true, gate = loop.cond(), calls = 0 }
    function g.issue(self, req, ctx)
      self.calls = self.calls + 1
      while self.closed do self.gate:wait() end
      if self.during then self.during() end
      return self.inner:issue(req, ctx)
    end
    function g.storage_key() return inner:storage_key() end
    function g.describe() return "gated testing issuer" end
    function g.open(self)
      self.closed = false
      self.gate:notify_all()
    end
    return g
  end

  -- instance A and B: one storage (shared), an issuer each (one CA)
  local function pair(fields_a, fields_b, opts)
    opts = opts or {}
    local sa = testing.memory()
    local sb = testing.memory { share = sa }
    local ia = opts.issuer_a or testing.issuer { ca = ca, lifetime = "30d", ocsp_url = opts.ocsp_url,
      crl_url = opts.crl_url, ari = opts.ari }
    local ib = opts.issuer_b or testing.issuer { ca = ca, lifetime = "30d", ocsp_url = opts.ocsp_url,
      crl_url = opts.crl_url, ari = opts.ari }
    fields_a.certificates = fields_a.certificates or { "a.test" }
    fields_b.certificates = fields_b.certificates or { "a.test" }
    fields_a.storage, fields_a.issuer = sa, ia
    fields_b.storage, fields_b.issuer = sb, ib
    local a = testing.engine(certmaint.policy(fields_a))
    local b = testing.engine(certmaint.policy(fields_b))
    return a, b, ia, ib
  end

  local function spawn_tick(e, kind)
    local box = {}
    loop.spawn(function() box.tick = e.engine:tick(kind) end)
    return box
  end

  describe("the renewal protocol", function()
    it("beats as often as the storage's locks need: a 3 s stale time keeps a 10 s renewal's lock held", function()
      local sa = testing.memory { stale_after = 3 }
      local sb = testing.memory { share = sa, stale_after = 3 }
      assert.equal(1.5, sa.heartbeat_interval) -- half of stale_after, under the usual 5 s
      assert.equal(5, testing.memory().heartbeat_interval)
      local inner = testing.issuer { ca = ca, lifetime = "30d" }
      local g = gated(inner)
      g.closed = false
      local seen = {}
      local a = testing.engine(certmaint.policy { certificates = { "a.test" }, storage = sa, issuer = g })
      clock:advance(21 * DAY)
      -- A's order takes 10 s; all along B finds the lock held, never stale
      g.during = function()
        g.during = nil
        for _ = 1, 10 do
          clock:advance(1)
          loop.sleep(0) -- the heartbeat timer runs
          local got, holder = sb:try_lock(keys.lock_name("a.test"))
          seen[#seen + 1] = got and "taken" or tostring(holder and "held")
          if got then sb:unlock(got) end
        end
      end
      local ta = a:tick("renew")
      assert.equal(1, ta.renewed)
      assert.same({ "held", "held", "held", "held", "held", "held", "held", "held", "held", "held" }, seen)
      assert.equal(0, grep(take(), "event=lock_lost"))
    end)

    it("renews a name once: the other instance re-reads under the lock and reloads", function()
      local a, b, ia, ib = pair({}, {})
      assert.equal(1, ia.issued) -- A obtained at start-up
      assert.equal(0, ib.issued) -- B found it in storage
      assert.equal(a:cert("a.test").serial, b:cert("a.test").serial)
      clock:advance(21 * DAY) -- into the last third of 30 days, for both
      local ta = a:tick("renew")
      local tb = b:tick("renew")
      assert.equal(1, ta.renewed)
      assert.equal(1, tb.reloaded)
      assert.equal(0, tb.renewed)
      assert.equal(2, ia.issued)
      assert.equal(0, ib.issued)
      local serial = a:cert("a.test").serial
      assert.equal(serial, b:cert("a.test").serial)
      assert.equal(1, grep(take(), "event=reloaded .*name=a%.test .*serial=" .. serial))
    end)

    it("a renewal in flight makes the other instance wait (logged once, with the holder), then reload", function()
      local inner = testing.issuer { ca = ca, lifetime = "30d" }
      local g = gated(inner)
      g.closed = false
      local a, b, _, ib = pair({}, {}, { issuer_a = g })
      g.closed = true
      assert.equal(1, inner.issued)
      clock:advance(21 * DAY)
      local ra = spawn_tick(a, "renew")
      loop.run_until_idle() -- A holds the lock, waiting on its CA
      assert.equal(2, g.calls)
      local rb = spawn_tick(b, "renew")
      for _ = 1, 3 do -- B polls the busy lock; the clock moves, A's heartbeat keeps it
        clock:advance(1)
        loop.run_until_idle()
      end
      assert.is_nil(rb.tick)
      take()
      assert.equal(1, grep(lines, "level=info event=lock_waiting .*lock=issue_cert_a%.test"))
      assert.equal(1, grep(lines, "event=lock_waiting .*holder=" .. a.storage.owner:gsub("%p", "%%%0")))
      g:open()
      loop.run_until_idle() -- A renews, commits under the fence, releases
      assert.equal(1, ra.tick.renewed)
      clock:advance(1) -- B's next poll
      loop.run_until_idle()
      assert.equal(1, rb.tick.reloaded)
      assert.equal(0, rb.tick.renewed)
      assert.equal(2, inner.issued)
      assert.equal(0, ib.issued)
      assert.equal(a:cert("a.test").serial, b:cert("a.test").serial)
      assert.equal(1, grep(take(), "event=lock_acquired .*lock=issue_cert_a%.test"))
      assert.equal(0, grep(lines, "level=error"))
    end)

    it("a lock wait is bounded by lock_wait: lock_wait_timeout, the job fails and retries later", function()
      local inner = testing.issuer { ca = ca, lifetime = "30d" }
      local g = gated(inner)
      g.closed = false
      local a, b, _, ib = pair({}, { lock_wait = "3s" }, { issuer_a = g })
      g.closed = true
      clock:advance(21 * DAY)
      local ra = spawn_tick(a, "renew")
      loop.run_until_idle()
      local rb = spawn_tick(b, "renew")
      for _ = 1, 4 do
        clock:advance(1)
        loop.run_until_idle()
      end
      assert.is_table(rb.tick)
      assert.equal(1, rb.tick.failed)
      assert.equal(0, ib.issued)
      take()
      assert.equal(1, grep(lines, "level=error event=lock_wait_timeout .*lock=issue_cert_a%.test"))
      assert.equal(1, grep(lines, "level=error event=renew_failed .*code=lock_wait_timeout .*name=a%.test"))
      g:open()
      loop.run_until_idle()
      assert.equal(1, ra.tick.renewed)
      -- B's retry finds A's certificate in storage: reloaded, never issued twice
      clock:advance(DAY)
      b:wait()
      assert.equal(0, ib.issued)
      assert.equal(a:cert("a.test").serial, b:cert("a.test").serial)
    end)

    it("a renewal that fails after its lock was lost reloads what the new holder committed", function()
      local inner = testing.issuer { ca = ca, lifetime = "30d" }
      local g = gated(inner)
      g.closed = false
      local a, b = pair({}, {}, { issuer_a = g })
      clock:advance(21 * DAY)
      local theirs
      -- A stalls past the stale time; B takes the lock over, finishes A's
      -- order for itself and commits; A's heartbeat then finds the lock lost,
      -- and A's order fails (the certificate is for B's key)
      g.during = function()
        g.during = nil
        clock:advance(b.storage.stale_after + 1)
        local lock = assert(b.storage:try_lock(keys.lock_name("a.test")))
        local issued = ca:issue { names = { "a.test" }, not_before = clock:now(), not_after = clock:now() + 30 * DAY }
        local facts = assert(core.cert_parse(issued.cert_pem))
        assert(certset.write(b.storage, b.engine:paths("a.test"), { crt = issued.cert_pem, key = issued.key_pem,
          meta = certset.meta({ "a.test" }, "B", facts.serial, {}) }, lock))
        theirs = { serial = facts.serial }
        assert.equal(0, a.storage:refresh_locks()) -- A's heartbeat: lost
        assert(b.storage:unlock(lock))
        g.inner = { issue = function() return nil, { message = "issuer returned a certificate for another key" }, "mismatch" end }
      end
      local ta = a:tick("renew")
      assert.is_table(theirs)
      assert.equal(1, ta.reloaded)
      assert.equal(0, ta.failed)
      assert.equal(theirs.serial, a:cert("a.test").serial)
      take()
      assert.equal(1, grep(lines, "level=error event=lock_lost .*lock=issue_cert_a%.test"))
      assert.equal(1, grep(lines, "level=error event=renewal_lock_lost .*name=a%.test"))
      assert.equal(0, grep(lines, "event=renew_failed"))
    end)

    it("a fenced commit is a lost lock: commit_fenced logged, the new holder's certificate reloaded", function()
      local inner = testing.issuer { ca = ca, lifetime = "30d" }
      local g = gated(inner)
      g.closed = false
      local a, b = pair({}, {}, { issuer_a = g })
      clock:advance(21 * DAY)
      local theirs
      -- while A's order is in flight, A stalls past the stale time (SIGSTOP,
      -- a long GC pause): B takes the lock over and commits its own set
      g.during = function()
        g.during = nil
        clock:advance(b.storage.stale_after + 1)
        local lock = assert(b.storage:try_lock(keys.lock_name("a.test")))
        local issued = ca:issue { names = { "a.test" }, not_before = clock:now(), not_after = clock:now() + 30 * DAY }
        local facts = assert(core.cert_parse(issued.cert_pem))
        assert(certset.write(b.storage, b.engine:paths("a.test"), { crt = issued.cert_pem, key = issued.key_pem,
          meta = certset.meta({ "a.test" }, "B", facts.serial, {}) }, lock))
        assert(b.storage:unlock(lock))
        theirs = { serial = facts.serial, token = lock.token }
      end
      local ta = a:tick("renew")
      assert.is_table(theirs)
      assert.equal(1, ta.reloaded)
      assert.equal(0, ta.renewed)
      assert.equal(theirs.serial, a:cert("a.test").serial) -- A serves what B committed
      local stored = assert(core.cert_parse(assert(a.storage:load(a.engine:paths("a.test").crt))))
      assert.equal(theirs.serial, stored.serial) -- and storage still holds it
      take()
      assert.equal(1, grep(lines, "level=error event=commit_fenced .*lock=issue_cert_a%.test"))
      assert.equal(1, grep(lines, "event=commit_fenced .*token=" .. (theirs.token - 1)))
      assert.equal(0, grep(lines, "event=renewed"))
    end)
  end)

  describe("OCSP staples", function()
    it("are fetched by one instance and taken from storage by the other", function()
      local a, b = pair({}, {}, { ocsp_url = URL })
      assert.equal(1, a.responder:count("ocsp")) -- A stapled at start-up and stored it
      assert.equal(0, b.responder:count("ocsp")) -- B took it from storage
      assert.equal(a:cert("a.test").ocsp.der, b:cert("a.test").ocsp.der)
      clock:advance(4 * DAY) -- past half the staple's 7 days
      local ta = a:tick("ocsp")
      local tb = b:tick("ocsp")
      assert.equal(1, ta.refreshed)
      assert.equal(1, tb.from_storage)
      assert.equal(0, b.responder:count("ocsp"))
      assert.equal(a:cert("a.test").ocsp.der, b:cert("a.test").ocsp.der)
    end)

    it("skip the fetch while another instance holds its lock, then read what it stored", function()
      local a, b = pair({}, {}, { ocsp_url = URL })
      clock:advance(4 * DAY)
      local key = keys.ocsp("a.test", keys.fast_hash(a:cert("a.test").pem))
      local lock = assert(b.storage:try_lock("ocsp_" .. key:gsub("^.*/", "")))
      local before = a.responder:count("ocsp")
      local ta = a:tick("ocsp")
      assert.equal(1, ta.skipped)
      assert.equal(0, ta.refreshed)
      assert.equal(before, a.responder:count("ocsp"))
      assert.equal(1, grep(take(), "level=debug event=staple_fetch_skipped .*holder="))
      -- B fetches under that lock, stores, releases: A's next pass takes it from storage
      b.storage:unlock(lock)
      local tb = b:tick("ocsp")
      assert.equal(1, tb.refreshed)
      ta = a:tick("ocsp")
      assert.equal(1, ta.from_storage)
      assert.equal(before, a.responder:count("ocsp"))
      assert.equal(b:cert("a.test").ocsp.der, a:cert("a.test").ocsp.der)
    end)

    it("take an expired staple off even while another instance is fetching its successor", function()
      local a, b = pair({}, {}, { ocsp_url = URL })
      clock:advance(8 * DAY) -- past the staple's nextUpdate (7 days)
      local key = keys.ocsp("a.test", keys.fast_hash(a:cert("a.test").pem))
      local lock = assert(b.storage:try_lock("ocsp_" .. key:gsub("^.*/", "")))
      local ta = a:tick("ocsp")
      assert.equal(1, ta.skipped)
      assert.equal(1, ta.removed)
      assert.is_nil(a:cert("a.test").ocsp)
      assert.equal(1, grep(take(), "level=error event=staple_expired .*code=skipped"))
      b.storage:unlock(lock)
    end)
  end)

  describe("CRLs", function()
    it("are fetched once and shared; a fetch another instance is at is skipped", function()
      local crl = "http://crl.cluster.test/ca.crl"
      local a, b = pair({}, {}, { crl_url = crl })
      assert.equal(1, a.responder:count("crl", crl))
      assert.equal(0, b.responder:count("crl", crl)) -- read from storage
      -- a refetch while B holds the CRL's lock: A skips quietly, checks it next pass
      local lock = assert(b.storage:try_lock("crl_" .. keys.crl(crl):gsub("^.*/", "")))
      assert(a.storage:delete(keys.crl(crl)))
      a.engine.crls = nil
      local ta = a:tick("ocsp")
      assert.equal(1, a.responder:count("crl", crl))
      assert.equal(1, ta.crl_skipped or 0)
      assert.equal(0, grep(take(), "level=error"))
      b.storage:unlock(lock)
    end)
  end)

  describe("ARI windows", function()
    it("are fetched by one instance at a time: a fetch another instance holds is skipped", function()
      local window = { start = testing.EPOCH + 10 * DAY, ["end"] = testing.EPOCH + 11 * DAY }
      local a, b, ia, ib = pair({}, {}, { ari = window })
      clock:advance(7 * 3600) -- past the window's next fetch (6 h): both instances due to ask
      local lock = assert(b.storage:try_lock("ari_" .. keys.name_key("a.test")))
      local calls = ia.ari_calls + ib.ari_calls
      a:tick("renew")
      assert.equal(calls, ia.ari_calls + ib.ari_calls)
      assert.equal(1, grep(take(), "level=debug event=ari_fetch_skipped .*lock=ari_a%.test"))
      b.storage:unlock(lock)
      -- the instance that fetches stores the window; the other reads it from storage
      b:tick("renew")
      assert.equal(calls + 1, ia.ari_calls + ib.ari_calls)
      a:tick("renew")
      assert.equal(calls + 1, ia.ari_calls + ib.ari_calls)
      assert.is_table(a.engine.ari[a:cert("a.test").id])
      assert.equal(window.start, a.engine.ari[a:cert("a.test").id].start)
    end)
  end)
end)
