-- Issuer lists (`issuer = { a, b }`, `issuer_policy`), the next issuer when
-- one fails, certificates kept under the folder of the issuer that issued
-- them and found there whatever the list says now, and errors whose
-- retry_after (absolute time) defers the retry.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local keys = require "certmaint.keys"
local issuers = require "certmaint.issuer"

local DAY = 86400

local function grep(lines, pattern)
  local n = 0
  for _, l in ipairs(lines) do if l:find(pattern) then n = n + 1 end end
  return n
end

describe("issuer lists", function()
  local clock, ca, logs

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    logs = testing.capture_logs()
  end)

  after_each(testing.reset)

  local function policy(fields)
    fields.certificates = fields.certificates or { "example.com" }
    return certmaint.policy(fields)
  end

  local function stored_in(storage, folder, name)
    local run = require("certmaint.loop")
    local task = run.spawn(function() return storage:load(keys.cert(folder, name)) end)
    run.run_until_idle()
    return task.results and task.results[1]
  end

  describe("the policy field", function()
    it("takes a list of issuers and names a bad member by its index", function()
      local a = testing.issuer { ca = ca, name = "a" }
      local P = policy { issuer = { a, testing.issuer { ca = ca, name = "b" } } }
      assert.equal(2, #issuers.members(P.issuer))
      assert.equal("in_order", P.issuer_policy)
      local ok, err = pcall(policy, { issuer = { a, { issue = "nope" } } })
      assert.is_false(ok)
      assert.matches('policy field "issuer%[2%]": issuer.issue must be a function, got string', err)
      ok, err = pcall(policy, { issuer = { a }, issuer_policy = "random" })
      assert.is_false(ok)
      assert.matches('"random" is not one of "in_order", "first_random"', err, 1, true)
    end)

    it("checks reuse_key and profile, per policy and per certificate", function()
      local P = policy { profile = "tlsserver", reuse_key = true,
        certificates = { { names = { "a.example" }, profile = "shortlived", reuse_key = false } } }
      assert.equal("tlsserver", P.profile)
      assert.is_true(P.reuse_key)
      assert.equal("shortlived", P.certificates[1].profile)
      assert.is_false(P.certificates[1].reuse_key)
      local ok, err = pcall(policy, { profile = "has space" })
      assert.is_false(ok)
      assert.matches('policy field "profile"', err, 1, true)
      ok, err = pcall(policy, { certificates = { { names = { "a.example" }, reuse_key = "yes" } } })
      assert.is_false(ok)
      assert.matches('certificates[1].reuse_key', err, 1, true)
    end)
  end)

  describe("issuing", function()
    it("uses the first issuer while it works, and stores under its folder", function()
      local a = testing.issuer { ca = ca, name = "a" }
      local b = testing.issuer { ca = ca, name = "b" }
      local storage = testing.memory()
      testing.engine(policy { issuer = { a, b }, storage = storage })
      assert.equal(1, a.issued)
      assert.equal(0, b.calls)
      assert.is_string(stored_in(storage, "a", "example.com"))
      assert.is_nil(stored_in(storage, "b", "example.com"))
    end)

    it("falls back to the next issuer for a name when one fails, and keeps the set in that issuer's folder", function()
      local a = testing.issuer { ca = ca, name = "a", fail = 100 }
      local b = testing.issuer { ca = ca, name = "b" }
      local storage = testing.memory()
      local e = testing.engine(policy { issuer = { a, b }, storage = storage })
      assert.equal(1, a.calls)
      assert.equal(1, b.issued)
      assert.is_string(stored_in(storage, "b", "example.com"))
      assert.is_nil(stored_in(storage, "a", "example.com"))
      assert.is_not_nil(e:cert("example.com"))
      local lines = logs()
      assert.equal(1, grep(lines, 'event=issuer_failed .*issuer="testing issuer \\"a\\""'))
      -- the metadata names the issuer that issued it
      local meta = core.json_decode(assert(storage:load(keys.meta("b", "example.com"))))
      assert.equal('testing issuer "b"', meta.issuer_data.issuer)
      assert.equal("p256", meta.certmaint.key_type)
    end)

    it("asks the next issuer when one raises", function()
      local a = setmetatable({ issue = function() error("boom in a") end, storage_key = function() return "a" end },
        { __index = {} })
      local b = testing.issuer { ca = ca, name = "b" }
      local e = testing.engine(policy { issuer = { a, b } })
      assert.equal(1, b.issued)
      assert.is_not_nil(e:cert("example.com"))
      assert.equal(1, grep(logs(), "event=issuer_failed .*boom in a"))
    end)

    it("says what every issuer answered when all fail, and retries on the back-off", function()
      local a = testing.issuer { ca = ca, name = "a", fail = 1 }
      local b = testing.issuer { ca = ca, name = "b", fail = 1 }
      local e = testing.engine(policy { issuer = { a, b } })
      local st = e.engine.jobs:status("renew:example.com")
      assert.equal("waiting", st.state)
      assert.matches('every issuer failed for example.com: testing issuer "a": testing issuer: planned failure 1 of 1; '
        .. 'testing issuer "b": testing issuer: planned failure 1 of 1', st.last_error, 1, true)
      assert.equal(testing.EPOCH + 60, st.next_attempt)
      clock:advance(61)
      e:wait()
      assert.equal(1, a.issued) -- the first issuer again, first
      assert.equal(0, b.issued)
    end)

    it("is final only when every issuer's error is final", function()
      local a = testing.issuer { ca = ca, name = "a", fail = 5, final = true }
      local b = testing.issuer { ca = ca, name = "b", fail = 1 }
      local e = testing.engine(policy { issuer = { a, b } })
      assert.equal("waiting", e.engine.jobs:status("renew:example.com").state)
      local c = testing.issuer { ca = ca, name = "c", fail = 5, final = true }
      local d = testing.issuer { ca = ca, name = "d", fail = 5, final = true }
      local e2 = testing.engine(policy { issuer = { c, d }, storage = testing.memory() })
      assert.equal("failed", e2.engine.jobs:status("renew:example.com").state)
    end)

    it("first_random spreads first attempts over the members", function()
      local a = testing.issuer { ca = ca, name = "a" }
      local b = testing.issuer { ca = ca, name = "b" }
      local names = {}
      for i = 1, 24 do names[i] = "n" .. i .. ".example" end
      math.randomseed(7)
      testing.engine(policy { issuer = { a, b }, issuer_policy = "first_random", certificates = names })
      assert.equal(24, a.issued + b.issued)
      assert.equal(24, a.calls + b.calls) -- no failures: each name asked one issuer
      assert.is_true(a.issued > 0 and b.issued > 0, "both used: " .. a.issued .. "/" .. b.issued)
    end)

    it("orders first_random by the random source, every member once", function()
      local list = issuers.list({ testing.issuer { ca = ca, name = "x" }, testing.issuer { ca = ca, name = "y" },
        testing.issuer { ca = ca, name = "z" } }, "first_random")
      local function pick(n) return n end -- the identity swap: order kept
      local o = issuers.order(list, nil, pick)
      assert.same({ "x", "y", "z" }, { o[1].name, o[2].name, o[3].name })
      local function first(_) return 1 end -- always swap with the first
      o = issuers.order(list, nil, first)
      assert.same({ "y", "z", "x" }, { o[1].name, o[2].name, o[3].name })
    end)
  end)

  describe("storage", function()
    it("finds a certificate stored by any configured issuer, and does not obtain it again", function()
      local storage = testing.memory()
      local a = testing.issuer { ca = ca, name = "a" }
      testing.engine(policy { issuer = a, storage = storage })
      assert.equal(1, a.issued)
      -- a new issuer put first: the certificate under "a" is found and kept
      local b = testing.issuer { ca = ca, name = "b" }
      local e = testing.engine(policy { issuer = { b, a }, storage = storage })
      assert.equal(0, b.calls)
      assert.equal(1, a.issued)
      assert.is_not_nil(e:cert("example.com"))
      assert.equal("a", e.engine.entries["example.com"].issuer_key)
      -- it renews with the list's first issuer, into that one's folder
      clock:advance("61d")
      e:tick("renew")
      assert.equal(1, b.issued)
      assert.is_string(stored_in(storage, "b", "example.com"))
      assert.is_nil(e.engine.entries["example.com"].issuer_key) -- the first issuer's folder
      -- and a restart takes the newer one, under "b", not the old one under "a"
      local e3 = testing.engine(policy { issuer = { a, b }, storage = storage })
      assert.equal(1, a.issued)
      assert.equal(1, b.issued)
      assert.equal("b", e3.engine.entries["example.com"].issuer_key)
      assert.equal(testing.EPOCH + 61 * DAY + 90 * DAY, e3:cert("example.com").not_after)
      assert.equal(1, #e3:cache())
    end)

    it("deploys to the same paths whichever issuer issued", function()
      local dir = os.tmpname()
      os.remove(dir)
      assert(require("lfs").mkdir(dir))
      local storage = testing.memory()
      local a = testing.issuer { ca = ca, name = "a", fail = 100 }
      local b = testing.issuer { ca = ca, name = "b" }
      testing.engine(policy { issuer = { a, b }, storage = storage, on_renewed = certmaint.deploy.files { dir = dir } })
      local f = assert(io.open(dir .. "/example.com/fullchain.pem"))
      local pem = f:read("a")
      f:close()
      assert.matches("BEGIN CERTIFICATE", pem)
      os.execute("rm -rf '" .. dir .. "'")
    end)

    it("keeps the clean pass away from the set in its issuer's folder", function()
      local storage = testing.memory()
      local a = testing.issuer { ca = ca, name = "a", fail = 100 }
      local b = testing.issuer { ca = ca, name = "b", lifetime = "2d" }
      local e = testing.engine(policy { issuer = { a, b }, storage = storage,
        clean = { expired_cert_grace_period = "1h" }, renew_check_interval = "1d" })
      b.fail = 1000 -- no renewal succeeds: the certificate expires
      clock:advance("5d")
      e:tick("clean")
      assert.is_string(stored_in(storage, "b", "example.com"))
    end)
  end)

  describe("requests and keys", function()
    local function key_of(storage, folder, name)
      return storage:load(keys.private_key(folder, name))
    end

    it("makes a new key for every renewal by default, of the entry's key_type", function()
      local a = testing.issuer { ca = ca, name = "a", lifetime = "30d" }
      local storage = testing.memory()
      local e = testing.engine(policy { issuer = a, storage = storage,
        certificates = { { names = { "rsa.example" }, key_type = "rsa2048" }, "ec.example" } })
      local k1 = assert(key_of(storage, "a", "rsa.example"))
      assert.equal("rsa2048", a.reqs[1].key_type)
      assert.equal("p256", a.reqs[2].key_type)
      assert.is_true(#k1 > 1000) -- an RSA key's PEM, not a P-256 one's (~240 bytes)
      assert.is_true(#assert(key_of(storage, "a", "ec.example")) < 400)
      clock:advance("21d")
      e:tick("renew")
      assert.equal(4, a.issued)
      assert.are_not.equal(k1, key_of(storage, "a", "rsa.example"))
    end)

    it("keeps the key with reuse_key = true, and a certificate entry can say otherwise", function()
      local a = testing.issuer { ca = ca, name = "a", lifetime = "30d" }
      local storage = testing.memory()
      local e = testing.engine(policy { issuer = a, storage = storage, reuse_key = true,
        certificates = { "keep.example", { names = { "fresh.example" }, reuse_key = false } } })
      local keep, fresh = key_of(storage, "a", "keep.example"), key_of(storage, "a", "fresh.example")
      clock:advance("21d")
      e:tick("renew")
      assert.equal(4, a.issued)
      assert.equal(keep, key_of(storage, "a", "keep.example"))
      assert.are_not.equal(fresh, key_of(storage, "a", "fresh.example"))
      -- the policy's key type changed: the old key is not reused
      local e2 = testing.engine(policy { issuer = a, storage = storage, reuse_key = true, key_type = "p384",
        certificates = { "keep.example" } })
      clock:advance("21d")
      e2:tick("renew")
      assert.are_not.equal(keep, key_of(storage, "a", "keep.example"))
    end)

    it("never logs a private key", function()
      local a = testing.issuer { ca = ca, name = "a", lifetime = "30d", fail = 1 }
      local storage = testing.memory()
      local e = testing.engine(policy { issuer = a, storage = storage, reuse_key = true })
      clock:advance(61)
      e:wait()
      clock:advance("21d")
      e:tick("renew")
      local all = table.concat(logs(), "\n")
      assert.not_matches("PRIVATE KEY", all, 1, true)
      assert.not_matches(key_of(storage, "a", "example.com"):match("\n(.-)\n"), all, 1, true)
    end)

    it("passes profile (the certificate entry's over the policy's)", function()
      local a = testing.issuer { ca = ca, name = "a" }
      testing.engine(policy { issuer = a, profile = "tlsserver",
        certificates = { "p.example", { names = { "q.example" }, profile = "shortlived" } } })
      assert.equal("tlsserver", a.reqs[1].profile)
      assert.equal("shortlived", a.reqs[2].profile)
    end)

    it("accepts IP address identifiers (RFC 8738) and puts them in the CSR as IP SANs", function()
      local a = testing.issuer { ca = ca, name = "a" }
      local storage = testing.memory()
      local e = testing.engine(policy { issuer = a, storage = storage,
        certificates = { "192.0.2.10", { "2001:DB8::0:1", "ip.example" } } })
      assert.equal(2, a.issued)
      local csr = assert(core.csr_parse(a.reqs[2].csr_pem))
      assert.same({ "2001:db8::1", "ip.example" }, a.reqs[2].names)
      local seen = {}
      for _, n in ipairs(csr.names) do seen[n] = true end
      assert.is_true(seen["2001:db8::1"] and seen["ip.example"])
      assert.same({ "192.0.2.10" }, e:cert("192.0.2.10").names)
      assert.is_string(storage:load(keys.cert("a", "2001:db8::1")))
    end)
  end)

  describe("retry_after", function()
    it("schedules the retry no earlier than an error's retry_after", function()
      local a = testing.issuer { ca = ca, name = "a", fail = 1, retry_after = "3h", code = "acme:rateLimited" }
      local e = testing.engine(policy { issuer = a })
      local st = e.engine.jobs:status("renew:example.com")
      assert.equal(testing.EPOCH + 3 * 3600, st.next_attempt)
      clock:advance("2h")
      e:wait()
      assert.equal(1, a.calls)
      clock:advance("1h1s")
      e:wait()
      assert.equal(2, a.calls)
      assert.equal(1, a.issued)
    end)

    it("defers a due renewal's retry, kept in the cache's schedule", function()
      local a = testing.issuer { ca = ca, name = "a", lifetime = "30d" }
      local e = testing.engine(policy { issuer = a })
      a.fail, a.calls, a.retry_after = 1, 0, 7200
      clock:advance("21d")
      e:tick("renew")
      local cert = e:cert("example.com")
      assert.equal(core.now() + 7200, cert.next_attempt)
      assert.equal(0, #e.engine.cache:due(core.now() + 7199))
      assert.equal(1, #e.engine.cache:due(core.now() + 7200))
    end)

    it("skips an issuer that asked to wait and goes on with the next; asks it again after", function()
      local a = testing.issuer { ca = ca, name = "a", fail = 1, retry_after = "1d", code = "acme:rateLimited" }
      local b = testing.issuer { ca = ca, name = "b", fail = 1 }
      local e = testing.engine(policy { issuer = { a, b } })
      assert.equal(1, a.calls)
      assert.equal(1, b.calls)
      -- a said when, b did not: the back-off (1m) brings the retry, which skips a
      clock:advance(61)
      e:wait()
      assert.equal(1, a.calls)
      assert.equal(1, b.issued)
      assert.equal("b", e.engine.entries["example.com"].issuer_key)
    end)

    it("waits for the first issuer that can be asked again when every one said when", function()
      local a = testing.issuer { ca = ca, name = "a", fail = 1, retry_after = "2h" }
      local b = testing.issuer { ca = ca, name = "b", fail = 1, retry_after = "5h" }
      local e = testing.engine(policy { issuer = { a, b } })
      local st = e.engine.jobs:status("renew:example.com")
      assert.equal(testing.EPOCH + 2 * 3600, st.next_attempt)
      clock:advance(2 * 3600 + 1)
      e:wait()
      assert.equal(1, a.issued)
      assert.equal(1, b.calls)
    end)
  end)
end)
