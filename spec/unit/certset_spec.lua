-- certmaint.certset: a site's .crt/.key/.json read, written and repaired as one
-- thing, against the memory backend (the contract spec holds it to the file
-- backend's behaviour), with certificates from certmaint.testing's CA.
local core = require "certmaint.core"
local certset = require "certmaint.certset"
local memory = require "certmaint.storage.memory"
local testing = require "certmaint.testing"

local T0 = 1767225600 -- 2026-01-01T00:00:00Z
local LOCK = "issue_cert_example.com"

local ca = testing.ca()
local OLD = ca:issue { names = { "example.com", "www.example.com" } }
local NEW = ca:issue { names = { "example.com", "www.example.com" } }
local OTHER = ca:issue { names = { "other.example" } }
local NAMES = { "www.example.com", "example.com" }

-- The events logged since the last call, as { event =, line = } rows.
local function events()
  local out = {}
  for _, line in ipairs(core.log_take()) do
    local ev = line:match("event=(%S+)")
    if ev then out[#out + 1] = { event = ev, line = line } end
  end
  return out
end

local function only_event(name)
  local evs = events()
  assert.equal(1, #evs, "events: " .. #evs)
  assert.equal(name, evs[1].event)
  return evs[1].line
end

describe("certset", function()
  local s, set

  before_each(function()
    core.clock_set(T0)
    core.log_config { capture = true }
    core.log_take()
    s = memory.new()
    set = certset.paths("acme-v02.api.letsencrypt.org-directory", "example.com")
  end)

  after_each(function()
    core.log_config { capture = false }
    core.log_take()
    core.clock_set(nil)
  end)

  local function store_set(files)
    for k, v in pairs(files) do assert.is_true(s:store(set[k], v)) end
  end

  describe("paths, same_names and meta", function()
    it("keys a site's files as certmagic does", function()
      assert.same({
        site = "certificates/acme-v02.api.letsencrypt.org-directory/example.com",
        crt = "certificates/acme-v02.api.letsencrypt.org-directory/example.com/example.com.crt",
        key = "certificates/acme-v02.api.letsencrypt.org-directory/example.com/example.com.key",
        meta = "certificates/acme-v02.api.letsencrypt.org-directory/example.com/example.com.json",
        cert = "certificates/acme-v02.api.letsencrypt.org-directory/example.com/example.com.crt",
        private_key = "certificates/acme-v02.api.letsencrypt.org-directory/example.com/example.com.key",
      }, set)
      assert.equal("certificates/ca/wildcard_.example.com/wildcard_.example.com.crt",
        certset.paths("ca", "*.example.com").crt)
    end)

    it("compares names as sets, order aside, the same both ways", function()
      assert.is_true(certset.same_names({ "a.test", "b.test" }, { "b.test", "a.test" }))
      assert.is_true(certset.same_names({}, {}))
      assert.is_false(certset.same_names({ "a.test" }, { "a.test", "b.test" }))
      assert.is_false(certset.same_names({ "a.test", "b.test" }, { "a.test" }))
      assert.is_false(certset.same_names({ "a.test", "b.test" }, { "a.test", "c.test" }))
      -- regression: a duplicate hid a missing name one way round only
      assert.is_false(certset.same_names({ "a.test", "b.test" }, { "a.test", "a.test" }))
      assert.is_false(certset.same_names({ "a.test", "a.test" }, { "a.test", "b.test" }))
      -- as cache:add_many compares them: duplicates do not count
      assert.is_true(certset.same_names({ "a.test", "a.test" }, { "a.test" }))
    end)

    it("writes metadata in certmagic's shape", function()
      local meta = core.json_decode(certset.meta(NAMES, "ACME ca", "0a1b"))
      assert.same({ sans = NAMES, issuer_data = { issuer = "ACME ca", serial = "0a1b" } }, meta)
    end)
  end)

  describe("classify", function()
    it("says ok, names_changed or why it cannot parse", function()
      local state, pem, facts = certset.classify(set, OLD.cert_pem, NAMES)
      assert.equal("ok", state)
      assert.equal(OLD.cert_pem, pem)
      assert.equal(OLD.serial, facts.serial)
      state, pem, facts = certset.classify(set, OLD.cert_pem, { "example.com" })
      assert.equal("names_changed", state)
      assert.equal(OLD.cert_pem, pem)
      assert.same({ "example.com", "www.example.com" }, facts.names)
      local err, code
      state, err, code = certset.classify(set, "garbage", NAMES)
      assert.is_nil(state)
      assert.equal("parse", code)
      assert.equal(set.crt .. ": ", err:sub(1, #set.crt + 2))
    end)
  end)

  describe("read", function()
    it("says missing when no certificate is stored", function()
      assert.same({ "missing" }, { certset.read(s, set, NAMES) })
      -- a key alone is no set either
      store_set { key = OLD.key_pem }
      assert.same({ "missing" }, { certset.read(s, set, NAMES, { check_key = true }) })
    end)

    it("gives ok, the PEM and its facts for a complete set", function()
      store_set { crt = OLD.cert_pem, key = OLD.key_pem, meta = certset.meta(NAMES, "ca", OLD.serial) }
      for _, opts in ipairs { {}, { check_key = true } } do
        local state, pem, facts = certset.read(s, set, NAMES, opts)
        assert.equal("ok", state)
        assert.equal(OLD.cert_pem, pem)
        assert.equal(OLD.serial, facts.serial)
        assert.same({ "example.com", "www.example.com" }, facts.names)
      end
    end)

    it("says names_changed when the policy names differ", function()
      store_set { crt = OLD.cert_pem, key = OLD.key_pem }
      local state, pem, facts = certset.read(s, set, { "example.com", "new.example.com" })
      assert.equal("names_changed", state)
      assert.equal(OLD.cert_pem, pem)
      assert.equal(OLD.serial, facts.serial)
    end)

    it("fails naming the key when the certificate does not parse", function()
      store_set { crt = "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n", key = OLD.key_pem }
      local state, err, code = certset.read(s, set, NAMES)
      assert.is_nil(state)
      assert.equal("parse", code)
      assert.matches(set.crt, err, 1, true)
    end)

    it("passes on a storage failure other than a missing certificate", function()
      assert.is_true(s:store(set.crt .. "/inner", "x")) -- the .crt is a directory
      local state, err, code = certset.read(s, set, NAMES)
      assert.is_nil(state)
      assert.equal("EISDIR", code)
      assert.is_string(err)
    end)

    it("refuses a certificate whose private key is missing (mismatch)", function()
      store_set { crt = OLD.cert_pem, meta = "{}" }
      for _, opts in ipairs { {}, { check_key = true } } do
        local state, err, code = certset.read(s, set, NAMES, opts)
        assert.is_nil(state)
        assert.equal("mismatch", code)
        assert.equal(set.crt .. ": private key missing or does not match the certificate", err)
      end
    end)

    it("checks a present key against the certificate only when asked (check_key)", function()
      store_set { crt = OLD.cert_pem, key = OTHER.key_pem }
      -- the cheap path trusts a present key: start-up must not parse 100k keys
      assert.equal("ok", (certset.read(s, set, NAMES)))
      local state, err, code = certset.read(s, set, NAMES, { check_key = true })
      assert.is_nil(state)
      assert.equal("mismatch", code)
      assert.matches("does not match", err, 1, true)
      -- a key that is not a key at all
      assert.is_true(s:store(set.key, "not a key"))
      assert.same({ nil, set.crt .. ": private key missing or does not match the certificate", "mismatch" },
        { certset.read(s, set, NAMES, { check_key = true }) })
    end)
  end)

  describe("write", function()
    local function files(c, names)
      return { crt = c.cert_pem, key = c.key_pem, meta = certset.meta(names or NAMES, "ca", c.serial) }
    end

    local function stored()
      local found = s:load_many { set.crt, set.key, set.meta }
      return { crt = found[set.crt], key = found[set.key], meta = found[set.meta] }
    end

    it("puts the whole set in one commit under the writer's lock", function()
      local lock = assert(s:lock(LOCK))
      assert.is_true(certset.write(s, set, files(OLD), lock))
      assert.same(files(OLD), stored())
      assert.equal("ok", (certset.read(s, set, NAMES, { check_key = true })))
      -- replaced as a whole
      assert.is_true(certset.write(s, set, files(NEW), lock))
      assert.same(files(NEW), stored())
      local _, _, facts = certset.read(s, set, NAMES, { check_key = true })
      assert.equal(NEW.serial, facts.serial)
      assert.is_true(s:unlock(lock))
      assert.same({ 0, 0 }, { s:recover() }) -- nothing left staged
    end)

    it("is refused (fenced) with a stale lock another instance took over, keeping the old set", function()
      local lock = assert(s:lock(LOCK))
      assert.is_true(certset.write(s, set, files(OLD), lock))
      core.clock_advance(s.stale_after + 1) -- this instance paused: its lock went stale
      local b = memory.new { share = s }
      local theirs = assert(b:lock(LOCK))
      assert.is_true(theirs.token > lock.token)
      local ok, err, code = certset.write(s, set, files(NEW), lock)
      assert.is_nil(ok)
      assert.equal("fenced", code)
      assert.matches(LOCK, err, 1, true)
      assert.same(files(OLD), stored())
      assert.equal(OLD.serial, select(3, certset.read(b, set, NAMES, { check_key = true })).serial)
      assert.same({ 0, 0 }, { b:recover() })
      -- the new holder's write goes through
      assert.is_true(certset.write(b, set, files(NEW), theirs))
      assert.same(files(NEW), stored())
    end)

    it("is refused (fenced) with a released lock", function()
      local lock = assert(s:lock(LOCK))
      assert.is_true(s:unlock(lock))
      local ok, _, code = certset.write(s, set, files(NEW), lock)
      assert.is_nil(ok)
      assert.equal("fenced", code)
      assert.same({ "missing" }, { certset.read(s, set, NAMES) })
    end)
  end)

  describe("recover", function()
    it("is quiet and says nothing was finished when nothing is pending", function()
      assert.same({ true, false }, { certset.recover(s) })
      assert.same({}, events())
    end)

    it("finishes a commit a crash cut short (repaired_from_staging), or drops one never committed", function()
      local new_files = { crt = NEW.cert_pem, key = NEW.key_pem, meta = certset.meta(NAMES, "ca", NEW.serial) }
      local n = 0
      while true do
        core.clock_set(T0)
        s = memory.new()
        local lock = assert(s:lock(LOCK))
        assert.is_true(certset.write(s, set, { crt = OLD.cert_pem, key = OLD.key_pem,
          meta = certset.meta(NAMES, "ca", OLD.serial) }, lock))
        s.crash_after = n
        local ran, err = pcall(certset.write, s, set, new_files, lock)
        if ran then
          assert.is_true(err) -- past the last step: it just commits
          break
        end
        assert.matches("injected crash", err, 1, true)
        events()
        -- the process died; the next start-up, once its lock went stale
        core.clock_advance(s.stale_after + 1)
        local r = memory.new { share = s }
        local ok, finished = certset.recover(r)
        assert.is_true(ok, "crash after " .. n)
        local state, _, facts = certset.read(r, set, NAMES, { check_key = true })
        assert.equal("ok", state, "crash after " .. n)
        -- 3 staged values, then the commit point: before it the old set, after it the new
        local committed = n >= 4
        assert.equal(committed and NEW.serial or OLD.serial, facts.serial, "crash after " .. n)
        assert.equal(committed, finished, "crash after " .. n)
        local seen = {}
        for _, ev in ipairs(events()) do
          seen[ev.event] = (seen[ev.event] or 0) + 1
          if ev.event == "repaired_from_staging" then
            assert.matches("level=warn", ev.line, 1, true)
            assert.matches("commits=1", ev.line, 1, true)
          end
        end
        assert.equal(committed and 1 or nil, seen.repaired_from_staging, "crash after " .. n)
        assert.is_nil(seen.storage_recover_failed)
        -- begun but not committed: dropped
        assert.equal(not committed and 1 or nil, seen.storage_discarded_uncommitted, "crash after " .. n)
        -- once is enough
        assert.same({ true, false }, { certset.recover(r) })
        assert.same({}, events())
        n = n + 1
        assert.is_true(n < 50)
      end
      assert.is_true(n > 4) -- some crashes fell after the commit point
    end)

    it("logs and returns the failure when storage cannot recover", function()
      local broken = { recover = function() return nil, "journal unreadable", "EIO" end,
        describe = function() return "broken:1" end }
      assert.same({ nil, "journal unreadable" }, { certset.recover(broken) })
      local line = only_event("storage_recover_failed")
      assert.matches("level=error", line, 1, true)
      assert.matches("broken:1", line, 1, true)
      assert.matches("journal unreadable", line, 1, true)
    end)
  end)
end)
