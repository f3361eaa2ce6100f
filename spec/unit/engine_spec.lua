-- The maintenance routine (DESIGN.md "Behaviour to keep"), driven only through
-- certmaint.testing: a fake clock, memory storage, a counting issuer.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local keys = require "certmaint.keys"

local DAY = 86400

local function grep(lines, pattern)
  local n = 0
  for _, l in ipairs(lines) do if l:find(pattern) then n = n + 1 end end
  return n
end

describe("engine", function()
  local clock, ca, logs

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    logs = testing.capture_logs()
  end)

  after_each(function()
    -- nothing left in flight: sleeping tasks (retries, the lock heartbeat) are
    -- legitimate and cleared by reset, transfers and commands are not
    local pending = core.loop_pending()
    testing.reset()
    assert.equal(0, pending.http)
    assert.equal(0, pending.exec)
    assert.same({ timers = 0, http = 0, exec = 0, servers = 0 }, core.loop_pending())
  end)

  local function policy(fields)
    fields.certificates = fields.certificates or { "example.com" }
    return certmaint.policy(fields)
  end

  describe("start-up", function()
    it("obtains every certificate the policy names that storage lacks", function()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = testing.engine(policy { issuer = issuer,
        certificates = { "example.com", { "www.example.org", "example.org" } } })
      assert.equal(2, issuer.issued)
      assert.equal(2, #e:cache())
      local c = e:cert("example.org")
      assert.same({ "www.example.org", "example.org" }, c.names)
      assert.is_true(c.managed)
    end)

    it("loads what storage already has instead of obtaining again", function()
      local storage = testing.memory()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      testing.engine(policy { issuer = issuer, storage = storage })
      local e2 = testing.engine(policy { issuer = issuer, storage = storage })
      assert.equal(1, issuer.issued)
      assert.equal(1, #e2:cache())
    end)

    it("re-obtains a certificate whose names no longer match the policy", function()
      local storage = testing.memory()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      testing.engine(policy { issuer = issuer, storage = storage, certificates = { { "example.com" } } })
      local e2 = testing.engine(policy { issuer = issuer, storage = storage,
        certificates = { { "example.com", "www.example.com" } } })
      assert.equal(2, issuer.issued)
      assert.same({ "example.com", "www.example.com" }, e2:cert("www.example.com").names)
    end)

    it("does not manage storage entries the policy does not name", function()
      local storage = testing.memory()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      testing.engine(policy { issuer = issuer, storage = storage, certificates = { "old.example.com" } })
      local e2 = testing.engine(policy { issuer = issuer, storage = storage })
      assert.is_nil(e2:cert("old.example.com"))
      clock:advance("29d")
      e2:tick("renew")
      assert.equal(3, issuer.calls) -- old once, example.com twice; never old again
      assert.equal("example.com", issuer.requests[3][1])
    end)

    it("finishes a renewal commit that a crash cut short, at every step, never mixing two sets", function()
      -- a renewal writes .key .crt .json as one commit: 2*3+2 = 8 steps; a
      -- crash after step n leaves the old set (n <= 3, before the commit
      -- point) or, after recovery at the next start, the new one
      for n = 1, 7 do
        local storage = testing.memory()
        local issuer = testing.issuer { ca = ca, lifetime = "30d" }
        local e1 = testing.engine(policy { issuer = issuer, storage = storage })
        local first = e1:cert("example.com")
        local set = e1.engine:paths("example.com")
        clock:advance(25 * DAY)
        storage.crash_after = n
        e1:tick("renew") -- the job raises "injected crash" after step n
        assert.equal(2, issuer.issued, "step " .. n)
        local e2 = testing.engine(policy { issuer = issuer, storage = storage })
        local c = e2:cert("example.com")
        assert.is_true(core.key_matches(c.pem, storage:load(set.key)), "step " .. n)
        assert.is_truthy(storage:load(set.meta), "step " .. n)
        if n <= 3 then
          assert.equal(first.serial, c.serial, "step " .. n)
        else
          assert.not_equal(first.serial, c.serial, "step " .. n)
          assert.is_true(grep(logs(), "event=repaired_from_staging") >= 1, "step " .. n)
        end
        assert.equal(2, issuer.issued, "step " .. n) -- nothing obtained twice
        testing.reset()
        clock = testing.clock(testing.EPOCH)
        logs = testing.capture_logs()
      end
    end)

    it("refuses a stored certificate whose private key is gone, and obtains a new one", function()
      local storage = testing.memory()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e1 = testing.engine(policy { issuer = issuer, storage = storage })
      assert(storage:delete(e1.engine:paths("example.com").key))
      local e2 = testing.engine(policy { issuer = issuer, storage = storage })
      assert.equal(2, issuer.issued)
      assert.is_truthy(storage:load(e2.engine:paths("example.com").key))
      assert.is_true(core.key_matches(e2:cert("example.com").pem, storage:load(e2.engine:paths("example.com").key)))
    end)

    describe("in pipelined batches (file storage)", function()
      local fs = require "helpers.storage_backends"
      local dir
      before_each(function() dir = fs.tmpdir() end)
      after_each(function() fs.rm_rf(dir) end)

      local NAMES = {}
      for i = 1, 8 do NAMES[i] = "p" .. i .. ".example.com" end

      -- an engine (not started) over dir's storage, its batches `size` long
      local function engine(issuer, size)
        local storage = require("certmaint.storage.file").new { root = dir }
        local e = testing.engine(policy { issuer = issuer, storage = storage, certificates = NAMES },
          { start = false })
        e.engine.load_batch_size = size
        return e, storage
      end

      -- what load_all made of each entry: state, error, cached id
      local function outcome(e)
        local out = {}
        for _, name in ipairs(NAMES) do
          local en = e.engine.entries[name]
          -- "item N" numbers within a batch: the rest must be the same
          out[name] = { en.load_state, en.load_error and (en.load_error:gsub("^item %d+: ", "")) or false,
            en.id or false }
        end
        return out
      end

      it("gives what one batch gives, with errors in the middle of a batch", function()
        local issuer = testing.issuer { ca = ca, lifetime = "30d" }
        local first, storage = engine(issuer, 3)
        first:start()
        assert.equal(8, issuer.issued)
        local p4, p5, p7 = first.engine:paths(NAMES[4]), first.engine:paths(NAMES[5]), first.engine:paths(NAMES[7])
        assert(storage:store(p4.cert, "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"))
        assert(storage:delete(p5.key))
        assert(storage:delete(p7.cert))
        local whole = engine(issuer, 2048)
        local counts, to_obtain = whole.engine:load_all { recover = false }
        assert.same({ ok = 5, missing = 1, names_changed = 0, error = 2 }, counts)
        for _, size in ipairs { 1, 2, 3, 7 } do
          local e = engine(issuer, size)
          local c2, o2 = e.engine:load_all { recover = false }
          assert.same(counts, c2)
          assert.equal(#to_obtain, #o2)
          for i, en in ipairs(o2) do assert.equal(to_obtain[i].primary, en.primary) end
          assert.same(outcome(whole), outcome(e))
          assert.equal(5, e.engine.cache:count())
        end
        assert.equal("error", whole.engine.entries[NAMES[4]].load_state)
        assert.equal("error", whole.engine.entries[NAMES[5]].load_state)
        assert.equal("missing", whole.engine.entries[NAMES[7]].load_state)
      end)

      it("drops the batches in flight when a batch raises", function()
        local issuer = testing.issuer { ca = ca, lifetime = "30d" }
        local first, storage = engine(issuer, 3)
        first:start()
        local e = engine(issuer, 3)
        local started, dropped = 0, 0
        -- a storage whose second batch raises on finish
        local proxy = setmetatable({}, { __index = storage })
        function proxy.start_load_certificates(_, cache, issuer_key, names, opts)
          started = started + 1
          local n, b = started, storage:start_load_certificates(cache, issuer_key, names, opts)
          return {
            finish = function()
              if n == 2 then error("batch 2 broke") end
              return b:finish()
            end,
            drop = function() dropped = dropped + 1; b:drop() end,
          }
        end
        e.engine.storage = proxy
        assert.error_matches(function() e.engine:load_all { recover = false } end, "batch 2 broke")
        assert.equal(3, started) -- batch 3 was parsing while batch 2 was finished
        assert.equal(2, dropped) -- batches 2 and 3, never finished
        assert.equal(3, e.engine.cache:count()) -- batch 1 only
      end)
    end)
  end)

  describe("renew pass", function()
    it("renews a managed certificate once it enters the last third of its life", function()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = testing.engine(policy { issuer = issuer })
      local first = e:cert("example.com")
      clock:advance(19 * DAY)
      local tick = e:tick("renew")
      assert.equal(0, tick.renewed)
      assert.equal(first.serial, e:cert("example.com").serial)
      clock:advance(2 * DAY)
      tick = e:tick("renew")
      assert.equal(1, tick.renewed)
      assert.equal(2, issuer.issued)
    end)

    it("reloads the new certificate into the cache after a successful renewal", function()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = testing.engine(policy { issuer = issuer })
      local first = e:cert("example.com")
      clock:advance(25 * DAY)
      e:tick("renew")
      local now = e:cert("example.com")
      assert.not_equal(first.serial, now.serial)
      assert.is_true(now.not_after > first.not_after)
      assert.equal(1, #e:cache())
    end)

    it("renews only managed certificates", function()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = testing.engine(policy { issuer = issuer })
      local stray = ca:issue { names = { "stray.example.com" }, not_after = clock:now() + 30 * DAY }
      e.engine.cache:add(stray.cert_pem, { managed = false, renew_at = 0 })
      clock:advance(25 * DAY)
      local tick = e:tick("renew")
      assert.equal(1, tick.due)
      for _, names in ipairs(issuer.requests) do assert.equal("example.com", names[1]) end
    end)

    it("drops a due entry with no names, with a warning", function()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = testing.engine(policy { issuer = issuer })
      local nameless = assert(core.cert_issue {
        subject_key = assert(core.key_generate("p256")), names = {}, cn = "a subject with no host name",
        not_before = clock:now(), not_after = clock:now() + DAY,
        issuer_cert = ca.cert_pem, issuer_key = ca.key_pem,
      })
      local id = assert(e.engine.cache:add(nameless, { managed = true, renew_at = 0 }))
      local tick = e:tick("renew")
      assert.equal(1, tick.dropped)
      assert.is_nil(e.engine.cache:get(id))
      assert.equal(1, grep(logs(), "level=warn event=dropped_no_names"))
    end)

    it("reloads from storage instead of renewing when another instance already renewed", function()
      local storage = testing.memory()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local a = testing.engine(policy { issuer = issuer, storage = storage })
      local b = testing.engine(policy { issuer = issuer, storage = testing.memory { share = storage } })
      assert.equal(1, issuer.issued)
      clock:advance(25 * DAY)
      assert.equal(1, a:tick("renew").renewed)
      local tick = b:tick("renew")
      assert.equal(1, tick.reloaded)
      assert.equal(0, tick.renewed)
      assert.equal(2, issuer.issued)
      assert.equal(a:cert("example.com").serial, b:cert("example.com").serial)
    end)

    -- an issuer whose renewals take `seconds` of (fake) time
    local function slow_issuer(seconds)
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local issue = issuer.issue
      function issuer:issue(req, ctx)
        if self.calls >= 1 then require("certmaint.loop").sleep(seconds) end
        return issue(self, req, ctx)
      end
      return issuer
    end

    it("never issues twice when two instances renew the same name at once", function()
      local loop = require "certmaint.loop"
      local storage = testing.memory()
      local issuer = slow_issuer(30)
      local a = testing.engine(policy { issuer = issuer, storage = storage })
      local b = testing.engine(policy { issuer = issuer, storage = testing.memory { share = storage } })
      clock:advance(25 * DAY)
      assert.is_true(a.engine:submit(a.engine.entries["example.com"], "renew"))
      assert.is_true(b.engine:submit(b.engine.entries["example.com"], "renew"))
      for _ = 1, 20 do clock:advance(5); loop.run_until_idle() end
      assert.equal(2, issuer.issued)           -- the first certificate and one renewal
      assert.equal(a:cert("example.com").serial, b:cert("example.com").serial)
      assert.equal(1, grep(logs(), "event=reloaded"))
    end)

    it("keeps its lock fresh during a slow renewal, so no other instance takes it over", function()
      local loop = require "certmaint.loop"
      local storage = testing.memory()
      local a = testing.engine(policy { issuer = slow_issuer(60), storage = storage })
      local other = testing.memory { share = storage }
      clock:advance(25 * DAY)
      a.engine:submit(a.engine.entries["example.com"], "renew")
      loop.run_until_idle()
      for _ = 1, 10 do -- 50 s, five times the 10 s staleness
        clock:advance(5); loop.run_until_idle()
        local ok, _, code = other:lock(keys.lock_name("example.com"))
        assert.is_nil(ok)
        assert.equal("locked", code)
      end
      for _ = 1, 4 do clock:advance(5); loop.run_until_idle() end
      local lk = other:lock(keys.lock_name("example.com")) -- released after the renewal
      assert.is_table(lk)
      assert.is_true(math.type(lk.token) == "integer" and lk.token >= 2) -- a later grant than a's
    end)

    it("deduplicates renewals by name", function()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = testing.engine(policy { issuer = issuer })
      clock:advance(25 * DAY)
      local entry = e.engine.entries["example.com"]
      assert.is_true(e.engine:submit(entry, "renew"))
      assert.is_false(e.engine:submit(entry, "renew"))
      e:wait()
      assert.equal(2, issuer.issued)
    end)

    it("keeps the old certificate in service and retries on certmagic's back-off", function()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = testing.engine(policy { issuer = issuer })
      local first = e:cert("example.com")
      issuer.fail = issuer.calls + 3 -- the next three calls fail
      clock:advance(25 * DAY)
      local tick = e:tick("renew")
      assert.equal(1, tick.failed)
      assert.equal(first.serial, e:cert("example.com").serial)
      local row = e:status_rows()[1]
      assert.equal(1, row.attempts)
      assert.matches("planned failure", row.last_error)
      assert.near(clock:now() + 60, row.next_attempt, 1)
      clock:advance(60); e:wait()     -- 2nd attempt fails
      clock:advance(120); e:wait()    -- 3rd attempt fails
      assert.equal(first.serial, e:cert("example.com").serial)
      clock:advance(119); e:wait()
      assert.equal(1, issuer.issued)
      clock:advance(1); e:wait()      -- 4th attempt succeeds
      assert.equal(2, issuer.issued)
      assert.not_equal(first.serial, e:cert("example.com").serial)
      assert.is_nil(e:status_rows()[1].last_error)
    end)

    it("retries a short-lived certificate within a quarter of what is left of it, not after 1 min", function()
      -- bench/chaos.sh: 60 s certificates due at half-life whose renewal failed once
      -- (Pebble restarting) waited certmagic's 1 min and expired meanwhile
      local issuer = testing.issuer { ca = ca, lifetime = "60s" }
      local e = testing.engine(policy { issuer = issuer, renew_check_interval = "1s" })
      local first = e:cert("example.com")
      issuer.fail = issuer.calls + 3 -- the next three calls fail
      clock:advance(31)
      local tick = e:tick("renew")
      assert.equal(1, tick.failed)
      local left = first.not_after - clock:now()
      local row = e:status_rows()[1]
      assert.near(clock:now() + left / 4, row.next_attempt, 0.5)
      local waits = { row.next_attempt - clock:now() }
      while issuer.issued == 1 and clock:now() < first.not_after do
        clock:advance(row.next_attempt - clock:now()); e:wait()
        row = e:status_rows()[1]
        if issuer.issued == 1 then waits[#waits + 1] = row.next_attempt - clock:now() end
      end
      assert.equal(2, issuer.issued)
      assert.is_true(clock:now() < first.not_after, "renewed before the old one expired")
      assert.equal(3, #waits)
      for i = 2, #waits do assert.is_true(waits[i] < waits[i - 1], "each wait shorter than the last") end
      assert.not_equal(first.serial, e:cert("example.com").serial)
    end)

    it("keeps certmagic's back-off for an expired certificate whose renewal fails", function()
      local issuer = testing.issuer { ca = ca, lifetime = "60s" }
      local e = testing.engine(policy { issuer = issuer, renew_check_interval = "1s" })
      issuer.fail = issuer.calls + 100
      clock:advance(61)
      e:tick("renew")
      assert.near(clock:now() + 60, e:status_rows()[1].next_attempt, 1)
    end)

    it("status names what is wrong with a damaged stored certificate, not 'no certificate'", function()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local storage = testing.memory()
      local e1 = testing.engine(policy { issuer = issuer, storage = storage })
      assert(storage:store(e1.engine:paths("example.com").cert, "-----BEGIN CERTIFICATE-----\ngarbage\n"))
      local e2 = testing.engine(policy { issuer = issuer, storage = storage }, { start = false })
      e2.engine:load_all { recover = false }
      local row = e2:status_rows()[1]
      assert.matches("^the stored certificate cannot be used: .*PEM", row.last_error)
      -- a missing one says so
      assert(storage:delete(e1.engine:paths("example.com").cert))
      local e3 = testing.engine(policy { issuer = issuer, storage = storage }, { start = false })
      e3.engine:load_all { recover = false }
      assert.equal("no certificate in storage", e3:status_rows()[1].last_error)
    end)

    it("status_json writes the rows status_rows gives, as the encoder would", function()
      local rfc3339 = require "certmaint.rfc3339"
      local null = core.json_null
      local function as_json(r)
        local function t(v) return v and v ~= math.huge and rfc3339.iso(v) or null end
        return { names = r.names, managed = r.managed, issuer = r.issuer or null, serial = r.serial or null,
          must_staple = r.must_staple == nil and null or r.must_staple,
          not_before = t(r.not_before), not_after = t(r.not_after), renewal_at = t(r.renewal_at),
          renewal_due = r.renewal_due, last_error = r.last_error or null, attempts = r.attempts,
          next_attempt = t(r.next_attempt), time_left = r.not_after and math.floor(r.not_after - clock:now()) or null,
          ocsp = r.ocsp and { status = r.ocsp.status, this_update = t(r.ocsp.this_update),
            next_update = t(r.ocsp.next_update) } or null, deploy = null }
      end
      local function check(e)
        local now = clock:now()
        local path = os.tmpname()
        local f = assert(io.open(path, "w"))
        assert.is_true(e.engine:status_json(now, f))
        f:close()
        local text = assert(io.open(path)):read("a")
        os.remove(path)
        local want = {}
        for i, r in ipairs(e:status_rows(now)) do want[i] = as_json(r) end
        assert.same(want, core.json_decode(text))
        assert.equal(core.json_encode(want, { pretty = true }) .. "\n", text)
        return want
      end
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = testing.engine(policy { issuer = issuer, certificates = { "example.com", "b.example" } })
      issuer.fail = issuer.calls + 3
      clock:advance(25 * DAY)
      e:tick("renew")
      local rows = check(e) -- a failing renewal: attempts, last_error, next_attempt
      assert.equal(1, rows[1].attempts)
      assert.is_true(rows[2].renewal_due)
      -- with a needs_renewal hook, renewal_due is the hook's (a column of its own)
      local e2 = testing.engine(policy { issuer = testing.issuer { ca = ca, lifetime = "30d" }, certificates = { "c.example" },
        needs_renewal = function(cert, now) return now > cert.not_before + DAY end })
      assert.is_false(check(e2)[1].renewal_due)
      clock:advance(DAY + 1) -- the hook says due; the default rule would not for 19 more days
      assert.is_true(check(e2)[1].renewal_due)
      -- no managed certificate: an empty array
      local empty = testing.engine(policy { issuer = issuer, certificates = {} })
      local f = assert(io.open(os.tmpname(), "w+"))
      assert.is_true(empty.engine:status_json(clock:now(), f))
      f:seek("set")
      assert.equal("[]\n", f:read("a"))
      f:close()
    end)

    it("does not retry an error marked final", function()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = testing.engine(policy { issuer = issuer })
      issuer.fail, issuer.final = issuer.calls + 5, true
      clock:advance(25 * DAY)
      e:tick("renew")
      local calls = issuer.calls
      clock:advance(DAY); e:wait()
      assert.equal(calls, issuer.calls)
    end)

    it("does not retry a renewal whose reload into the cache failed", function()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = testing.engine(policy { issuer = issuer })
      local real_put = e.engine.cache_put
      e.engine.cache_put = function() return nil, "injected reload failure", "parse" end
      clock:advance(25 * DAY)
      local tick = e:tick("renew")
      assert.equal(1, tick.failed)
      assert.equal(2, issuer.issued)              -- the renewal itself happened and was stored
      local calls = issuer.calls
      clock:advance(DAY); e:wait()                -- no back-off retry of that job
      assert.equal(calls, issuer.calls)
      assert.equal(1, grep(logs(), "level=error event=reload_failed"))
      e.engine.cache_put = real_put
    end)

    it("removes an on-demand certificate from the cache when its renewal fails", function()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = testing.engine(policy { issuer = issuer })
      assert.is_true(e:manage({ "customer.example.net" }))
      assert.is_truthy(e:cert("customer.example.net"))
      issuer.fail = issuer.calls + 100
      clock:advance(25 * DAY)
      e:tick("renew")
      assert.is_nil(e:cert("customer.example.net"))
      assert.is_truthy(e:cert("example.com")) -- a policy entry stays, with its old cert
    end)

    it("calls on_renewed with the chain and the key after storing", function()
      local seen = {}
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = testing.engine(policy { issuer = issuer, on_renewed = function(cert)
        seen[#seen + 1] = cert
      end })
      assert.equal(1, #seen)
      assert.equal("obtained", seen[1].event)
      clock:advance(25 * DAY)
      e:tick("renew")
      assert.equal(2, #seen)
      assert.equal("renewed", seen[2].event)
      assert.is_true(core.key_matches(seen[2].pem, seen[2].key_pem))
    end)

    it("lets needs_renewal override the default window", function()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = testing.engine(policy { issuer = issuer, needs_renewal = function(cert, now)
        return cert.not_after - now < 5 * DAY
      end })
      clock:advance(24 * DAY)
      assert.equal(0, e:tick("renew").renewed)
      clock:advance(2 * DAY)
      assert.equal(1, e:tick("renew").renewed)
    end)

    it("honours renewal_window_ratio", function()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = testing.engine(policy { issuer = issuer, renewal_window_ratio = 0.5 })
      clock:advance(14 * DAY)
      assert.equal(0, e:tick("renew").renewed)
      clock:advance(2 * DAY)
      assert.equal(1, e:tick("renew").renewed)
    end)

    it("survives a needs_renewal hook that raises, and says so", function()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local errors = {}
      local e = testing.engine(policy { issuer = issuer,
        needs_renewal = function() error("policy bug") end,
        on_error = function(err) errors[#errors + 1] = err end })
      clock:advance(10 * DAY)
      assert.equal(0, e:tick("renew").renewed) -- the default rule: not yet
      clock:advance(15 * DAY)
      local tick = e:tick("renew")
      assert.equal(1, tick.renewed) -- A.1: the default rule renews it
      assert.is_true(#errors >= 1)
      assert.matches("policy bug", errors[1].message)
      local lines = logs()
      assert.is_true(grep(lines, "event=hook_failed") >= 1)
      assert.is_true(grep(lines, "level=error event=default_rule_decided") >= 1)
    end)

    -- issue 7 A.1: a failing decision hook falls back to the default rule,
    -- and status and check say so
    for _, case in ipairs {
      { "raises", function() error("policy bug") end, "policy bug" },
      { "returns nil", function() end, "needs_renewal returned nil, not true or false" },
      { "returns a string", function() return "yes" end, "needs_renewal returned a string" },
      { "loops", function() while true do end end, "exceeded its time limit" },
      { "yields", function() coroutine.yield() end, "cannot suspend certmaint's task" },
    } do
      it("A.1 failing decision hook falls back: a hook that " .. case[1], function()
        local hooks = require "certmaint.hooks"
        local saved = hooks.DECISION_TIME_LIMIT
        hooks.DECISION_TIME_LIMIT = 0.05
        local issuer = testing.issuer { ca = ca, lifetime = "30d" }
        local sandboxed = require("certmaint.sandbox").environment("/x/policy.lua")
        local hook = case[2]
        if case[1] == "yields" then
          hook = load("return function() coroutine.yield() end", "=hook", "t", sandboxed)()
        end
        local e = testing.engine(policy { issuer = issuer, needs_renewal = hook })
        local now = clock:now()
        local rows = e:status_rows(now)
        assert.near(now + 20 * DAY, rows[1].renewal_at, 1) -- the default rule's time, not 1970
        assert.is_false(rows[1].renewal_due)
        assert.matches("needs_renewal hook failed: .*" .. case[3]:gsub("%p", "%%%0") .. ".*; the default rule decided",
          rows[1].last_error)
        local plan = e:plan(now)
        assert.equal("error", plan[1].action)
        assert.matches("the default rule decided", plan[1].why, 1, true)
        e.hooks.suspended = {}
        clock:advance(25 * DAY)
        assert.equal(1, e:tick("renew").renewed)
        hooks.DECISION_TIME_LIMIT = saved
      end)
    end

    it("gives needs_renewal the engine's own rule to delegate to", function()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local seen
      local e = testing.engine(policy { issuer = issuer, renewal_window_ratio = 0.5,
        needs_renewal = function(cert, now, default)
          seen = default
          return default(cert, now)
        end })
      assert.is_function(seen)
      clock:advance(14 * DAY)
      assert.equal(0, e:tick("renew").renewed)
      clock:advance(2 * DAY)
      assert.equal(1, e:tick("renew").renewed)
    end)

    it("stops a runaway decision hook", function()
      local hooks = require "certmaint.hooks"
      local saved = hooks.DECISION_TIME_LIMIT
      hooks.DECISION_TIME_LIMIT = 0.05
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = testing.engine(policy { issuer = issuer, needs_renewal = function()
        while true do pcall(function() end) end
      end })
      clock:advance(25 * DAY)
      local ok, tick = pcall(e.tick, e, "renew")
      hooks.DECISION_TIME_LIMIT = saved
      assert.is_true(ok)
      assert.equal(1, tick.renewed) -- the default rule decided
      assert.is_true(grep(logs(), "exceeded its time limit") >= 1)
    end)
  end)

  describe("on_tick", function()
    it("stops an event hook that loops without yielding, and the pass goes on", function()
      local hooks = require "certmaint.hooks"
      local saved = hooks.EVENT_INSTRUCTION_LIMIT
      hooks.EVENT_INSTRUCTION_LIMIT = 5000000
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = testing.engine(policy { issuer = issuer, on_tick = function()
        while true do pcall(function() end) end
      end })
      clock:advance(25 * DAY)
      local ok, tick = pcall(e.tick, e, "renew")
      hooks.EVENT_INSTRUCTION_LIMIT = saved
      assert.is_true(ok)
      assert.equal(1, tick.renewed)
      assert.equal(1, grep(logs(), "event=hook_failed.*exceeded its limit of 5000000 instructions.*hook=on_tick"))
    end)

    it("lets an event hook wait for a command as long as it takes", function()
      local hooks = require "certmaint.hooks"
      local saved = hooks.EVENT_INSTRUCTION_LIMIT
      hooks.EVENT_INSTRUCTION_LIMIT = 5000000
      local ran
      local e = testing.engine(policy { issuer = testing.issuer { ca = ca }, on_tick = function()
        local res = certmaint.exec({ "sh", "-c", "sleep 0.3; echo done" })
        ran = res and res.stdout
      end })
      local tick = e:tick("clean")
      hooks.EVENT_INSTRUCTION_LIMIT = saved
      assert.equal("clean", tick.kind)
      assert.equal("done\n", ran)
    end)

    it("gets the counts of the pass, and a raising on_tick is survived", function()
      local ticks = {}
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = testing.engine(policy { issuer = issuer, on_tick = function(t)
        ticks[#ticks + 1] = { kind = t.kind, renewed = t.renewed, failed = t.failed, deleted = t.deleted }
        error("on_tick always fails")
      end })
      clock:advance(25 * DAY)
      e:tick("renew")
      e:tick("clean")
      assert.same({ kind = "renew", renewed = 1, failed = 0 }, ticks[1])
      assert.same({ kind = "clean", deleted = 0 }, ticks[2])
      assert.equal(2, grep(logs(), "event=hook_failed.*hook=on_tick"))
    end)

    it("can manage and drop names at run time, asking allow_name", function()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local customers = { "a.example.net", "bad.example.net" }
      local e = testing.engine(policy { issuer = issuer,
        allow_name = function(name) return not name:find("^bad") end,
        on_tick = function(t)
          for _, n in ipairs(customers) do t.manage(n) end
          if #customers == 0 then t.unmanage("a.example.net") end
        end })
      e:tick("renew")
      e:wait()
      assert.is_truthy(e:cert("a.example.net"))
      assert.is_nil(e:cert("bad.example.net"))
      assert.equal(1, grep(logs(), "event=name_refused name=bad.example.net"))
      customers = {}
      e:tick("renew")
      assert.is_nil(e:cert("a.example.net"))
    end)
  end)

  describe("clean pass", function()
    local function store_cert(storage, issuer_key, name, not_after)
      local leaf = ca:issue { names = { name }, not_before = not_after - 30 * DAY, not_after = not_after }
      assert(storage:store(keys.cert(issuer_key, name), leaf.cert_pem))
      assert(storage:store(keys.private_key(issuer_key, name), leaf.key_pem))
      assert(storage:store(keys.meta(issuer_key, name), "{}"))
      return leaf
    end

    it("deletes expired certificates past the grace period, with key and metadata, then the empty folder", function()
      local storage = testing.memory()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = testing.engine(policy { issuer = issuer, storage = storage,
        clean = { expired_cert_grace_period = "2d" } })
      store_cert(storage, "testing", "gone.example.com", clock:now() - 3 * DAY)
      store_cert(storage, "testing", "recent.example.com", clock:now() - 1 * DAY)
      local tick = e:tick("clean")
      assert.equal(1, tick.deleted)
      assert.is_false(storage:exists(keys.cert("testing", "gone.example.com")))
      assert.is_false(storage:exists(keys.private_key("testing", "gone.example.com")))
      assert.is_false(storage:exists(keys.meta("testing", "gone.example.com")))
      assert.is_false(storage:exists(keys.site("testing", "gone.example.com")))
      assert.is_true(storage:exists(keys.cert("testing", "recent.example.com")))
      assert.is_true(grep(logs(), "event=clean_deleted") >= 3)
    end)

    it("never deletes a certificate the policy manages, even expired", function()
      local storage = testing.memory()
      local issuer = testing.issuer { ca = ca, lifetime = "30d", fail = 0 }
      local e = testing.engine(policy { issuer = issuer, storage = storage })
      issuer.fail = 1000
      clock:advance(40 * DAY)
      e:tick("renew")
      local tick = e:tick("clean")
      assert.equal(0, tick.deleted)
      assert.is_true(storage:exists(keys.cert("testing", "example.com")))
    end)

    it("reports a file it cannot parse and leaves it", function()
      local storage = testing.memory()
      local e = testing.engine(policy { issuer = testing.issuer { ca = ca }, storage = storage })
      assert(storage:store("certificates/testing/junk.example.com/junk.example.com.crt", "not a certificate"))
      local tick = e:tick("clean")
      assert.equal(1, tick.unparseable)
      assert.is_true(storage:exists("certificates/testing/junk.example.com/junk.example.com.crt"))
      assert.equal(1, grep(logs(), "level=warn event=clean_unparseable"))
    end)

    it("deletes OCSP staples that are stale or unparseable, keeping fresh ones", function()
      local storage = testing.memory()
      local e = testing.engine(policy { issuer = testing.issuer { ca = ca }, storage = storage })
      local leaf = ca:issue { names = { "example.com" } }
      local now = clock:now()
      assert(storage:store(keys.ocsp("fresh.example.com", "aa11"),
        ca:ocsp(leaf.cert_pem, { this_update = now - 3600, next_update = now + DAY })))
      assert(storage:store(keys.ocsp("stale.example.com", "bb22"),
        ca:ocsp(leaf.cert_pem, { this_update = now - 2 * DAY, next_update = now - DAY })))
      assert(storage:store(keys.ocsp("junk.example.com", "cc33"), "not DER at all"))
      local tick = e:tick("clean")
      assert.equal(2, tick.staples_deleted)
      assert.is_true(storage:exists(keys.ocsp("fresh.example.com", "aa11")))
      assert.is_false(storage:exists(keys.ocsp("stale.example.com", "bb22")))
      assert.is_false(storage:exists(keys.ocsp("junk.example.com", "cc33")))
      local lines = logs()
      assert.equal(1, grep(lines, "event=clean_deleted.*why=\"stale"))
      assert.equal(1, grep(lines, "event=clean_deleted.*why=\"unparseable"))
    end)

    it("leaves staples alone when ocsp_staples is off", function()
      local storage = testing.memory()
      local e = testing.engine(policy { issuer = testing.issuer { ca = ca }, storage = storage,
        clean = { ocsp_staples = false } })
      assert(storage:store(keys.ocsp("junk.example.com", "cc33"), "not DER at all"))
      assert.equal(0, e:tick("clean").staples_deleted)
      assert.is_true(storage:exists(keys.ocsp("junk.example.com", "cc33")))
    end)

    it("does nothing to certificates when expired_certs is off", function()
      local storage = testing.memory()
      local e = testing.engine(policy { issuer = testing.issuer { ca = ca }, storage = storage,
        clean = { expired_certs = false } })
      store_cert(storage, "testing", "gone.example.com", clock:now() - 30 * DAY)
      assert.equal(0, e:tick("clean").deleted)
      assert.is_true(storage:exists(keys.cert("testing", "gone.example.com")))
    end)
  end)

  describe("plan (certmaint check)", function()
    it("says when each certificate will be renewed and cleaned, changing nothing", function()
      local storage = testing.memory()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = testing.engine(policy { issuer = issuer, storage = storage,
        certificates = { "example.com", "later.example.com" } }, { start = false })
      -- only example.com is in storage
      testing.engine(policy { issuer = issuer, storage = storage })
      local now = clock:now()
      local rows = e:plan(now)
      assert.equal("renew", rows[1].action)
      assert.near(now + 20 * DAY, rows[1].when, 1)
      assert.equal("obtain", rows[2].action)
      rows = e:plan(now + 25 * DAY)
      assert.equal("renew", rows[1].action)
      assert.equal(now + 25 * DAY, rows[1].when)
      assert.equal(1, issuer.issued)
    end)
  end)
end)
