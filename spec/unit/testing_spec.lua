-- The public contract of certmaint.testing (DESIGN.md).
local testing = require "certmaint.testing"
local certmaint = require "certmaint"
local core = require "certmaint.core"

describe("certmaint.testing", function()
  after_each(testing.reset)

  it("clock: now, advance (seconds or durations), set", function()
    local clock = testing.clock(1000)
    assert.equal(1000, clock:now())
    assert.equal(1000, core.now())
    clock:advance(60)
    assert.equal(1060, clock:now())
    clock:advance("1h")
    assert.equal(4660, clock:now())
    clock:set(50)
    assert.equal(50, core.now())
  end)

  it("ca: issues leaves chained to it, answers OCSP, revokes", function()
    testing.clock(testing.EPOCH)
    local ca = testing.ca()
    local leaf = ca:issue { names = { "a.test", "b.test" }, not_before = testing.EPOCH,
      not_after = testing.EPOCH + 86400, ocsp_url = "http://127.0.0.1:1/ocsp" }
    local facts = assert(core.cert_parse(leaf.cert_pem))
    assert.same({ "a.test", "b.test" }, facts.names)
    assert.equal(testing.EPOCH + 86400, facts.not_after)
    assert.same({ "http://127.0.0.1:1/ocsp" }, facts.ocsp_urls)
    assert.is_true(core.key_matches(leaf.cert_pem, leaf.key_pem))
    local good = assert(core.ocsp_response_parse(ca:ocsp(leaf.cert_pem), leaf.cert_pem, ca.cert_pem))
    assert.equal("good", good.status)
    ca:revoke(leaf.serial)
    local revoked = assert(core.ocsp_response_parse(ca:ocsp(leaf.cert_pem), leaf.cert_pem, ca.cert_pem))
    assert.equal("revoked", revoked.status)
    local custom = assert(core.ocsp_response_parse(ca:ocsp(leaf.cert_pem, { status = "unknown",
      this_update = testing.EPOCH, next_update = testing.EPOCH + 3600 }), leaf.cert_pem, ca.cert_pem))
    assert.equal("unknown", custom.status)
    assert.equal(testing.EPOCH + 3600, custom.next_update)
  end)

  it("ca: issues for a CSR with the requester's key (no key of its own)", function()
    testing.clock(testing.EPOCH)
    local ca = testing.ca()
    local key = assert(core.key_generate("p256"))
    local csr = assert(core.csr_create(key, { "csr.test" }))
    local leaf = ca:issue { names = { "csr.test" }, csr = csr }
    assert.is_nil(leaf.key_pem)
    assert.is_true(core.key_matches(leaf.cert_pem, key))
    assert.same({ "csr.test" }, assert(core.cert_parse(leaf.cert_pem)).names)
  end)

  it("issuer: counts what it issued and fails its first N calls", function()
    testing.clock(testing.EPOCH)
    local issuer = testing.issuer { lifetime = "10d", fail = 2 }
    local key = core.key_generate("p256")
    local csr = core.csr_create(key, { "a.test" })
    local req = { names = { "a.test" }, csr_pem = csr }
    assert.is_nil(issuer:issue(req, {}))
    assert.is_nil(issuer:issue(req, {}))
    local res = assert(issuer:issue(req, {}))
    assert.equal(1, issuer.issued)
    assert.equal(3, issuer.calls)
    local facts = core.cert_parse(res.chain_pem)
    assert.equal(10 * 86400, facts.not_after - facts.not_before)
  end)

  it("engine: tick, wait, cache", function()
    local clock = testing.clock(testing.EPOCH)
    local issuer = testing.issuer { lifetime = "9d" }
    local e = testing.engine(certmaint.policy { certificates = { "a.test" }, issuer = issuer }, { clock = clock })
    assert.equal(1, #e:cache())
    clock:advance("5d") -- under 10 days the default window is the last half
    assert.equal(1, e:tick("renew").renewed)
    e:wait()
    assert.equal(2, issuer.issued)
  end)

  it("rejects unknown options, naming them", function()
    local ok, err = pcall(function() return testing.issuer { lifetme = "1d" } end)
    assert.is_false(ok)
    assert.matches("unknown option \"lifetme\"", err)
    assert.matches("testing_spec.lua:%d+", err)
  end)

  describe("load_policy", function()
    local FIX = (os.getenv("CERTMAINT_SOURCE_DIR") or ".") .. "/spec/fixtures/policies/"

    local function tmpfile()
      local p = os.tmpname()
      os.remove(p)
      return p
    end

    it("loads a policy file as the daemon does: a hook calling os.rename fails as in certmaint run", function()
      testing.clock(testing.EPOCH)
      local metrics = tmpfile()
      local policy = assert(testing.load_policy(FIX .. "hook_os_rename.lua", { env = { CERTMAINT_METRICS = metrics } }))
      local logs = testing.capture_logs()
      local e = testing.engine(policy, { storage = testing.memory() })
      assert.is_truthy(e:cert("metrics.test")) -- the certificate is obtained; the hook failed
      local text = table.concat(logs(), "\n")
      assert.matches("event=hook_failed[^\n]*hook=on_renewed", text)
      assert.matches("hook_os_rename.lua:13: os.rename is not available in a policy", text, 1, true)
      assert.is_nil(io.open(metrics, "r")) -- never renamed into place
      os.remove(metrics .. ".tmp")
    end)

    it("gives hooks certmaint.write_file, which writes the file atomically with its mode", function()
      testing.clock(testing.EPOCH)
      local metrics = tmpfile()
      local policy = assert(testing.load_policy(FIX .. "hook_write_file.lua", { env = { CERTMAINT_METRICS = metrics } }))
      local e = testing.engine(policy, { storage = testing.memory() })
      local f = assert(io.open(metrics, "r"))
      local body = f:read("a")
      f:close()
      assert.equal(string.format('certmaint_not_after{name="metrics.test"} %d\n', e:cert("metrics.test").not_after), body)
      assert.equal("0644", core.stat(metrics).mode)
      os.remove(metrics)
    end)

    it("returns the error certmaint check prints, naming file:line", function()
      local p, err = testing.load_policy(FIX .. "err_unknown_field.lua")
      assert.is_nil(p)
      local sandbox = require "certmaint.sandbox"
      assert.equal(select(2, sandbox.load_policy(FIX .. "err_unknown_field.lua")), err)
      assert.matches("err_unknown_field.lua:%d+: policy field", err)
    end)

    it("loads under the daemon's limits: a top level that grows without bound fails as certmaint check fails", function()
      local p, err = testing.load_policy(FIX .. "err_load_memory.lua")
      assert.is_nil(p)
      assert.matches("err_load_memory.lua: loading the policy ran out of memory", err, 1, true)
      local bin = os.getenv("CERTMAINT_BIN")
      assert.is_string(bin, "CERTMAINT_BIN must point at the certmaint binary")
      local out = os.tmpname()
      local ok, _, rc = os.execute(bin .. " check " .. FIX .. "err_load_memory.lua 2>" .. out)
      local f = assert(io.open(out, "r"))
      local printed = f:read("a")
      f:close()
      os.remove(out)
      assert.is_nil(ok)
      assert.equal(2, rc)
      assert.equal("certmaint: " .. err .. "\n", printed)
    end)

    it("answers os.getenv from env, or from getenv, and refuses unknown options", function()
      local dir = tmpfile()
      local policy = assert(testing.load_policy(FIX .. "hook_os_rename.lua", { env = { CERTMAINT_DATA = dir } }))
      assert.equal("file:" .. dir, policy.storage:describe())
      policy = assert(testing.load_policy(FIX .. "hook_os_rename.lua",
        { getenv = function(k) return k == "CERTMAINT_DATA" and dir .. "2" or nil end }))
      assert.equal("file:" .. dir .. "2", policy.storage:describe())
      assert.error_matches(function() testing.load_policy(FIX .. "ok_minimal.lua", { evn = {} }) end,
        'testing.load_policy: unknown option "evn"', 1, true)
      assert.error_matches(function() testing.load_policy(FIX .. "ok_minimal.lua", { env = {}, getenv = os.getenv }) end,
        "give env or getenv, not both", 1, true)
    end)
  end)

  it("capture_logs keeps the captured lines off stderr (echo = true prints them too)", function()
    -- a child interpreter, so its stderr can be read
    local function stderr_of(capture_opts)
      local err = os.tmpname()
      local script = "local t = require 'certmaint.testing'; local core = require 'certmaint.core'; "
        .. "local logs = t.capture_logs(" .. capture_opts .. "); core.log('info', 'spec_line', { n = 1 }); "
        .. "assert(#logs() == 1, 'not captured')"
      local ok = os.execute("lua5.4 -e " .. string.format("%q", script) .. " 2>" .. err)
      local f = assert(io.open(err, "r"))
      local text = f:read("a")
      f:close()
      os.remove(err)
      assert.is_true(ok, text)
      return text
    end
    assert.equal("", stderr_of(""))
    assert.matches("event=spec_line n=1", stderr_of("{ echo = true }"))
  end)
end)
