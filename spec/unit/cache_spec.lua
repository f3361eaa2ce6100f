-- The certificate cache through its Lua API (core/lua/lcache.c), with real
-- certificates issued in-process by core.cert_issue.
local core = require "certmaint.core"

local DAY = 86400
local T0 = 1767225600 -- 2026-01-01T00:00:00Z

local ca_key = assert(core.key_generate("p256"))
local ca_pem = assert(core.cert_issue {
  subject_key = ca_key, issuer_key = ca_key, cn = "Cache Spec CA", is_ca = true,
  not_before = T0 - 365 * DAY, not_after = T0 + 3650 * DAY,
})
local leaf_key = assert(core.key_generate("p256"))

-- issue_serial{names=, not_before=, not_after=, ocsp_url=} -> chain PEM (leaf + CA), serial
local function issue_serial(o)
  local pem, serial = assert(core.cert_issue {
    subject_key = leaf_key, issuer_key = ca_key, issuer_cert = ca_pem,
    names = o.names, not_before = o.not_before or T0, not_after = o.not_after or T0 + 90 * DAY,
    ocsp_url = o.ocsp_url, crl_url = o.crl_url,
  })
  return pem .. ca_pem, serial
end

-- issue{...} -> chain PEM only, so `c:add(issue{...})` passes no stray options
local function issue(o)
  return (issue_serial(o))
end

local function sorted(t)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  table.sort(c)
  return c
end

describe("core cache", function()
  local c

  before_each(function()
    c = core.cache_new()
  end)

  after_each(function()
    c:close()
  end)

  describe("add and get", function()
    it("adds a chain and reports whether it existed", function()
      local pem = issue { names = { "example.com", "www.example.com" } }
      local id, existed = c:add(pem, { managed = true })
      assert.is_string(id)
      assert.matches("^[0-9a-f]+$", id)
      assert.equals(64, #id)
      assert.is_false(existed)
      assert.equals(1, c:count())
      assert.equals(1, #c)
      local id2, existed2 = c:add(pem)
      assert.equals(id, id2)
      assert.is_true(existed2)
      assert.equals(1, c:count())
    end)

    it("uses the SHA-256 of the leaf DER as id", function()
      local pem = issue { names = { "hash.test" } }
      local id = c:add(pem)
      local facts = assert(core.cert_parse(pem))
      assert.equals(core.sha256_hex(facts.der), id)
    end)

    it("copies the facts out", function()
      local pem, serial = issue_serial {
        names = { "Example.COM", "www.example.com" }, not_before = T0, not_after = T0 + 90 * DAY,
        ocsp_url = "http://ocsp.example.test", crl_url = "http://crl.example.test/ca.crl",
      }
      local id = c:add(pem, { managed = true, on_demand = true, renew_at = T0 + 60 * DAY,
                              next_attempt = T0 + 1 })
      local cert = c:get(id)
      assert.equals(id, cert.id)
      assert.same({ "example.com", "www.example.com" }, cert.names)
      assert.is_true(cert.managed)
      assert.is_true(cert.on_demand)
      assert.equals("CN=Cache Spec CA", cert.issuer)
      assert.is_string(cert.subject)
      assert.equals(serial, cert.serial)
      assert.equals(T0, cert.not_before)
      assert.equals(T0 + 90 * DAY, cert.not_after)
      assert.equals(math.type(cert.not_after), "integer")
      assert.equals(pem, cert.pem)
      assert.same({ "http://ocsp.example.test" }, cert.ocsp_urls)
      assert.same({ "http://crl.example.test/ca.crl" }, cert.crl_urls)
      assert.equals(T0 + 60 * DAY, cert.renew_at)
      assert.equals(T0 + 1, cert.next_attempt)
      assert.equals(0, cert.attempts)
      assert.is_nil(cert.last_error)
      assert.is_nil(cert.ocsp)
    end)

    it("defaults: unmanaged, renew at expiry, no back-off", function()
      local id = c:add(issue { names = { "d.test" }, not_after = T0 + 10 * DAY })
      local cert = c:get(id)
      assert.is_false(cert.managed)
      assert.is_false(cert.on_demand)
      assert.equals(T0 + 10 * DAY, cert.renew_at)
      assert.equals(0, cert.next_attempt)
    end)

    it("re-adding applies only the options given", function()
      local pem = issue { names = { "re.test" } }
      local id = c:add(pem, { managed = true, renew_at = 5 })
      c:add(pem, {})
      local cert = c:get(id)
      assert.is_true(cert.managed)
      assert.equals(5, cert.renew_at)
      c:add(pem, { managed = false, on_demand = true, next_attempt = 7 })
      cert = c:get(id)
      assert.is_false(cert.managed)
      assert.is_true(cert.on_demand)
      assert.equals(5, cert.renew_at)
      assert.equals(7, cert.next_attempt)
    end)

    it("returns nil, err, code for what does not parse", function()
      local id, err, code = c:add("not a certificate")
      assert.is_nil(id)
      assert.is_string(err)
      assert.equals("parse", code)
      id, err, code = c:add("")
      assert.is_nil(id)
      assert.is_string(code)
      assert.equals(0, c:count())
    end)

    it("raises on unknown or mistyped options", function()
      local pem = issue { names = { "o.test" } }
      -- the message names the field and the caller's file:line
      local ok, err = pcall(function() c:add(pem, { manged = true }) end)
      assert.is_false(ok)
      assert.matches("cache_spec%.lua:%d+: cache:add: unknown option \"manged\" %(did you mean \"managed\"?", err)
      assert.error_matches(function() c:add(pem, { managed = "yes" }) end,
        "option 'managed' must be a boolean")
      assert.error_matches(function() c:add(pem, { renew_at = 0 / 0 }) end, "NaN")
      assert.error_matches(function() c:add({}) end, "string expected")
      assert.equals(0, c:count())
    end)

    it("get: nil for an unknown id, raises for a malformed one", function()
      assert.is_nil(c:get(string.rep("ab", 32)))
      assert.is_nil(c:get(string.rep("AB", 32)))
      assert.error_matches(function() c:get("example.com") end, "64 hex digits")
      assert.error_matches(function() c:remove(string.rep("x", 64)) end, "64 hex digits")
    end)

    it("accepts an id in upper case", function()
      local id = c:add(issue { names = { "u.test" } })
      assert.equals(id, c:get(id:upper()).id)
    end)
  end)

  describe("lookup", function()
    it("finds exact names case-insensitively", function()
      local id = c:add(issue { names = { "example.com", "www.example.com" } })
      assert.equals(id, c:lookup("example.com"))
      assert.equals(id, c:lookup("WWW.Example.Com"))
      assert.is_nil(c:lookup("other.example.com"))
      assert.is_nil(c:lookup(""))
    end)

    it("falls back to a wildcard covering exactly one label", function()
      local apex = c:add(issue { names = { "example.com", "www.example.com" } })
      local wild = c:add(issue { names = { "*.example.com" } })
      assert.equals(wild, c:lookup("a.example.com"))
      assert.equals(apex, c:lookup("www.example.com")) -- exact first
      assert.equals(apex, c:lookup("example.com"))
      assert.equals(wild, c:lookup("*.example.com"))
      assert.is_nil(c:lookup("a.b.example.com"))
      assert.is_true(c:remove(apex))
      assert.is_nil(c:lookup("example.com")) -- never the apex
      assert.equals(wild, c:lookup("www.example.com"))
    end)

    it("prefers the latest not_after among certificates sharing a name", function()
      local old = c:add(issue { names = { "r.test" }, not_after = T0 + 30 * DAY })
      local new = c:add(issue { names = { "r.test" }, not_after = T0 + 90 * DAY })
      local mid = c:add(issue { names = { "r.test" }, not_after = T0 + 60 * DAY })
      assert.equals(new, c:lookup("r.test"))
      assert.same({ new, mid, old }, c:find("R.TEST"))
      assert.is_true(c:remove(new))
      assert.equals(mid, c:lookup("r.test"))
      assert.same({ mid, old }, c:find("r.test"))
      assert.same({}, c:find("x.r.test"))
    end)

    it("find does not match wildcards", function()
      c:add(issue { names = { "*.w.test" } })
      assert.same({}, c:find("a.w.test"))
      assert.equals(1, #c:find("*.w.test"))
    end)
  end)

  describe("remove", function()
    it("removes once and keeps the rest consistent", function()
      local a = c:add(issue { names = { "a.test" } }, { managed = true, renew_at = 0 })
      local b = c:add(issue { names = { "b.test" } }, { managed = true, renew_at = 0 })
      assert.is_true(c:remove(a))
      assert.is_false(c:remove(a))
      assert.is_nil(c:get(a))
      assert.is_nil(c:lookup("a.test"))
      assert.equals(b, c:lookup("b.test"))
      assert.same({ b }, c:due(T0))
      assert.equals(1, c:count())
    end)
  end)

  describe("set", function()
    local id
    before_each(function()
      id = c:add(issue { names = { "s.test" }, ocsp_url = "http://ocsp.s.test" })
    end)

    it("changes fields", function()
      assert.is_true(c:set(id, { managed = true, on_demand = true, renew_at = 10.5,
                                 next_attempt = 20, attempts = 3, last_error = "boom" }))
      local cert = c:get(id)
      assert.is_true(cert.managed)
      assert.is_true(cert.on_demand)
      assert.equals(10.5, cert.renew_at)
      assert.equals(20, cert.next_attempt)
      assert.equals(3, cert.attempts)
      assert.equals("boom", cert.last_error)
      assert.is_true(c:set(id, { last_error = false, on_demand = false }))
      cert = c:get(id)
      assert.is_nil(cert.last_error)
      assert.is_false(cert.on_demand)
      assert.is_true(cert.managed)
    end)

    it("attaches and clears a staple", function()
      assert.is_true(c:set(id, { ocsp = { status = "good", this_update = T0, next_update = T0 + 4 * DAY,
                                          der = "\48\3\10\1\0" } }))
      local o = c:get(id).ocsp
      assert.same({ status = "good", this_update = T0, next_update = T0 + 4 * DAY,
                    refresh_at = T0 + 2 * DAY, der = "\48\3\10\1\0" }, o)
      assert.is_true(c:set(id, { ocsp = { status = "revoked", this_update = T0, next_update = T0 + 4 * DAY,
                                          refresh_at = T0 + 1, der = "x" } }))
      o = c:get(id).ocsp
      assert.equals("revoked", o.status)
      assert.equals(T0 + 1, o.refresh_at)
      assert.is_true(c:set(id, { ocsp = false }))
      assert.is_nil(c:get(id).ocsp)
    end)

    it("returns false for an unknown id", function()
      assert.is_false(c:set(string.rep("0", 64), { managed = true }))
    end)

    it("raises on unknown fields, naming them, and on bad values", function()
      assert.error_matches(function() c:set(id, { renew_after = 1 }) end, 'unknown option "renew_after"')
      assert.error_matches(function() c:set(id, { managed = 1 }) end, "'managed' must be a boolean")
      assert.error_matches(function() c:set(id, { attempts = 1.5 }) end, "'attempts' must be an integer")
      assert.error_matches(function() c:set(id, { attempts = -1 }) end, "out of range")
      assert.error_matches(function() c:set(id, { last_error = true }) end, "string or false")
      assert.error_matches(function() c:set(id, { ocsp = { status = "fine", this_update = 1,
                                                            next_update = 2, der = "" } }) end,
        "status must be good, revoked or unknown")
      assert.error_matches(function() c:set(id, { ocsp = { status = "good", next_update = 2, der = "" } }) end,
        "'this_update' is required")
      assert.error_matches(function() c:set(id, { ocsp = { status = "good", this_update = 1,
                                                            next_update = 2, der = "", extra = 1 } }) end,
        'unknown option "extra"')
      assert.error_matches(function() c:set(id, { renew_at = 0 / 0 }) end, "NaN")
      assert.error_matches(function() c:set(id) end, "table expected")
    end)
  end)

  describe("scans", function()
    it("due: managed, renew_at <= now and next_attempt <= now", function()
      local a = c:add(issue { names = { "a.test" } }, { managed = true, renew_at = T0 + 100 })
      local b = c:add(issue { names = { "b.test" } }, { managed = false, renew_at = T0 })
      assert.same({}, c:due(T0 + 99))
      assert.same({ a }, c:due(T0 + 100))
      c:set(a, { next_attempt = T0 + 200 })
      assert.same({}, c:due(T0 + 199.5))
      assert.same({ a }, c:due(T0 + 200))
      c:set(b, { managed = true })
      assert.same(sorted { a, b }, sorted(c:due(T0 + 200)))
      assert.equals(1, #c:due(T0 + 200, 1))
      assert.error_matches(function() c:due(T0, 0) end, "limit must be positive")
      assert.error_matches(function() c:due() end, "number expected")
    end)

    it("staples_due: has a responder, not expired, staple missing or stale", function()
      local a = c:add(issue { names = { "a.test" }, ocsp_url = "http://ocsp.test", not_after = T0 + 10 * DAY })
      c:add(issue { names = { "b.test" }, not_after = T0 + 10 * DAY }) -- no responder
      assert.same({ a }, c:staples_due(T0))
      c:set(a, { ocsp = { status = "good", this_update = T0, next_update = T0 + 2 * DAY, der = "x" } })
      assert.same({}, c:staples_due(T0 + DAY - 1))
      assert.same({ a }, c:staples_due(T0 + DAY))
      assert.same({}, c:staples_due(T0 + 10 * DAY)) -- expired
      assert.same({ a }, c:staples_due(T0 + DAY, 5))
    end)

    it("expired: not_after + grace <= now", function()
      local a = c:add(issue { names = { "a.test" }, not_after = T0 + DAY })
      local b = c:add(issue { names = { "b.test" }, not_after = T0 + 5 * DAY })
      assert.same({}, c:expired(T0 + DAY - 1))
      assert.same({ a }, c:expired(T0 + DAY))
      assert.same({}, c:expired(T0 + DAY, 60))
      assert.same({ a }, c:expired(T0 + DAY + 60, 60))
      assert.same(sorted { a, b }, sorted(c:expired(T0 + 5 * DAY)))
    end)

    it("ids, optionally filtered on managed", function()
      local a = c:add(issue { names = { "a.test" } }, { managed = true })
      local b = c:add(issue { names = { "b.test" } })
      assert.same(sorted { a, b }, sorted(c:ids()))
      assert.same({ a }, c:ids { managed = true })
      assert.same({ b }, c:ids { managed = false })
      assert.error_matches(function() c:ids { manged = true } end, 'unknown option "manged"')
    end)

    it("ids of the must-staple certificates", function()
      local ms = c:add(require("helpers.fixtures").reader("ocsp")("leaf_must_staple.pem"))
      c:add(issue { names = { "plain.test" } }, { managed = true })
      assert.is_true(c:get(ms).must_staple)
      assert.same({ ms }, c:ids { must_staple = true })
      assert.same({}, (function() c:remove(ms) return c:ids { must_staple = true } end)())
      assert.error_matches(function() c:ids { must_staple = true, managed = true } end, "do not go together")
    end)
  end)

  describe("memory", function()
    it("accounts DER separately and gives memory back on removal", function()
      assert.equals(0, select(2, c:memory()))
      local pem = issue { names = { "m.test" } }
      local id = c:add(pem)
      local total, der = c:memory()
      assert.is_true(der > 0)
      assert.is_true(total > der)
      c:remove(id)
      local total2, der2 = c:memory()
      assert.equals(0, der2)
      assert.is_true(total2 < total)
    end)
  end)

  describe("many certificates", function()
    it("stays consistent across rehashes and removals", function()
      local ids = {}
      for i = 1, 300 do
        ids[i] = c:add(issue { names = { ("h%d.many.test"):format(i), ("*.w%d.many.test"):format(i) } },
          { managed = true, renew_at = (i % 2 == 0) and T0 or T0 + DAY })
      end
      assert.equals(300, #c)
      assert.equals(150, #c:due(T0))
      for i = 1, 300, 3 do assert.is_true(c:remove(ids[i])) end
      for i = 1, 300 do
        local want = (i % 3 ~= 1) and ids[i] or nil
        assert.equals(want, c:lookup(("h%d.many.test"):format(i)))
        assert.equals(want, c:lookup(("x.w%d.many.test"):format(i)))
      end
      assert.equals(200, #c:ids())
    end)
  end)

  describe("add_many", function()
    local FIELDS = { "id", "state", "error", "code", "not_before", "not_after", "renew_at" }

    it("adds a batch, parsing each PEM once, and returns parallel arrays", function()
      local pems, serials = {}, {}
      for i = 1, 40 do
        pems[i], serials[i] = issue_serial { names = { "h" .. i .. ".many.test" },
          not_before = T0, not_after = T0 + 90 * DAY }
      end
      local r = c:add_many(pems)
      for _, f in ipairs(FIELDS) do assert.is_table(r[f], f) end
      assert.equals(40, c:count())
      for i = 1, 40 do
        assert.equals("ok", r.state[i])
        assert.equals(64, #r.id[i])
        assert.equals(T0, r.not_before[i])
        assert.equals(T0 + 90 * DAY, r.not_after[i])
        -- without renew options, renew_at is not_after (as cache:add)
        assert.equals(T0 + 90 * DAY, r.renew_at[i])
        assert.is_nil(r.error[i])
        local g = c:get(r.id[i])
        assert.equals(serials[i], g.serial)
        assert.is_true(g.managed)
        assert.is_false(g.on_demand)
        assert.equals(pems[i], g.pem)
        assert.equals(r.id[i], c:lookup("h" .. i .. ".many.test"))
      end
    end)

    it("computes renew_at with the default rule when renew is given", function()
      local renewal = require "certmaint.renewal"
      local long = issue { names = { "long.test" }, not_before = T0, not_after = T0 + 90 * DAY }
      local short = issue { names = { "short.test" }, not_before = T0, not_after = T0 + 6 * DAY }
      local r = c:add_many({ long, short }, { renew = {} })
      assert.equals(T0 + 60 * DAY, r.renew_at[1])
      assert.equals(T0 + 3 * DAY, r.renew_at[2])
      assert.equals(T0 + 60 * DAY, c:get(r.id[1], { pem = false }).renew_at)
      local d = core.cache_new()
      local opts = { ratio = 0.25, check_interval = 3600, explicit_ratio = true }
      r = d:add_many({ long, short }, { renew = opts })
      for i, pem in ipairs { long, short } do
        local f = assert(core.cert_parse(pem))
        assert.equals((renewal.renew_at(f, opts)), r.renew_at[i])
      end
      assert.same({ r.id[2] }, d:due(T0 + 5 * DAY))
      d:close()
    end)

    it("sets managed and on_demand per the options", function()
      local a, b = issue { names = { "a.od.test" } }, issue { names = { "b.od.test" } }
      local r = c:add_many({ a, b }, { managed = false, on_demand = { true, false } })
      local ga, gb = c:get(r.id[1], { pem = false }), c:get(r.id[2], { pem = false })
      assert.is_false(ga.managed)
      assert.is_true(ga.on_demand)
      assert.is_false(gb.on_demand)
      assert.same({}, c:due(T0 + 1000 * DAY)) -- unmanaged: never due
    end)

    it("survives garbage in the middle of a batch, naming the item", function()
      local pems = {}
      for i = 1, 9 do pems[i] = issue { names = { "g" .. i .. ".test" } } end
      pems[4] = "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n"
      pems[6] = ""
      pems[7] = pems[7]:sub(1, 200) -- truncated
      local r = c:add_many(pems, { threads = 2 })
      assert.equals(6, c:count())
      for _, i in ipairs { 4, 6, 7 } do
        assert.equals("error", r.state[i])
        assert.is_nil(r.id[i])
        assert.is_nil(r.not_after[i])
        assert.matches("^item " .. i .. ": ", r.error[i])
        assert.equals("parse", r.code[i])
      end
      for _, i in ipairs { 1, 2, 3, 5, 8, 9 } do
        assert.equals("ok", r.state[i])
        assert.equals(r.id[i], c:lookup("g" .. i .. ".test"))
      end
    end)

    it("refuses an oversized PEM as an item error", function()
      local r = c:add_many { ("x"):rep(1024 * 1024 + 1) }
      assert.equals("error", r.state[1])
      assert.equals("toobig", r.code[1])
      assert.equals(0, c:count())
    end)

    it("takes a batch of duplicates as one entry", function()
      local pem = issue { names = { "dup.test" } }
      local pems = {}
      for i = 1, 600 do pems[i] = pem end
      local r = c:add_many(pems, { threads = 2 })
      assert.equals(1, c:count())
      for i = 1, 600 do
        assert.equals("ok", r.state[i])
        assert.equals(r.id[1], r.id[i])
      end
      -- and again: the entry exists, nothing new
      r = c:add_many({ pem }, { managed = false })
      assert.equals(1, c:count())
      assert.is_false(c:get(r.id[1], { pem = false }).managed)
    end)

    it("compares names as sets, ASCII case-insensitive, and caches a mismatch anyway", function()
      local pem = issue { names = { "one.test", "two.test" } }
      local other = issue { names = { "three.test" } }
      local r = c:add_many({ pem, pem, pem, other, other }, {
        names = { { "TWO.test", "one.test" }, { "one.test" }, nil, { "three.test", "four.test" },
          { "three.test", "three.test" } },
      })
      assert.same({ "ok", "names_changed", "ok", "names_changed", "ok" },
        { r.state[1], r.state[2], r.state[3], r.state[4], r.state[5] })
      assert.equals(2, c:count())
      assert.equals(r.id[4], c:lookup("three.test"))
    end)

    it("does nothing with an empty batch", function()
      local r = c:add_many({}, { names = {}, on_demand = {} })
      for _, f in ipairs(FIELDS) do assert.same({}, r[f]) end
      assert.equals(0, c:count())
    end)

    it("gives the same entries with any number of threads", function()
      local pems = {}
      for i = 1, 300 do pems[i] = issue { names = { "t" .. i .. ".test" } } end
      pems[150] = "junk"
      local ref
      for _, threads in ipairs { 0, 1, 2, 3, 16 } do
        local d = core.cache_new()
        local r = d:add_many(pems, { threads = threads, renew = {} })
        assert.equals(299, d:count())
        if ref then assert.same(ref, r) else ref = r end
        d:close()
      end
    end)

    it("raises on bad arguments before changing the cache", function()
      local ok_pem = issue { names = { "arg.test" } }
      assert.error_matches(function() c:add_many("pem") end, "table expected")
      assert.error_matches(function() c:add_many({ ok_pem, 42 }) end, "pems%[2%] must be a string")
      assert.error_matches(function() c:add_many({ ok_pem }, { manged = true }) end,
        'unknown option "manged"')
      assert.error_matches(function() c:add_many({ ok_pem }, { names = { "x" } }) end,
        "names%[1%]' must be a table")
      assert.error_matches(function() c:add_many({ ok_pem }, { names = { { 1 } } }) end,
        "names%[1%]%[1%]' must be a string")
      assert.error_matches(function() c:add_many({ ok_pem }, { on_demand = { "yes" } }) end,
        "on_demand%[1%]' must be a boolean")
      assert.error_matches(function() c:add_many({ ok_pem }, { renew = { ratio = 2 } }) end,
        "ratio' must be a number in %(0, 1%)")
      assert.error_matches(function() c:add_many({ ok_pem }, { renew = { windwo = 1 } }) end,
        'unknown option "windwo"')
      assert.error_matches(function() c:add_many({ ok_pem }, { threads = -1 }) end,
        "threads' must be an integer")
      assert.error_matches(function() c:add_many({ ok_pem }, { threads = 1.5 }) end,
        "threads' must be an integer")
      assert.equals(0, c:count())
    end)

    it("loads thousands in chunks with few Lua tables", function()
      local pems = {}
      local base = issue { names = { "chunk.test" } }
      -- past one chunk (2048 items) of the binding, a few distinct ones in each
      for i = 1, 4500 do pems[i] = (i % 100 == 1) and issue { names = { "c" .. i .. ".test" } } or base end
      pems[2049] = "junk"
      local r = c:add_many(pems, { threads = 2 })
      assert.equals(46, c:count())
      assert.equals(4500, #r.state)
      assert.equals(r.id[2], r.id[4500])
      assert.equals("error", r.state[2049])
      assert.matches("^item 2049: ", r.error[2049])
      assert.equals(r.id[4401], c:lookup("c4401.test"))
    end)

    describe("with files = true", function()
      local fs = require "helpers.storage_backends"
      local dir

      before_each(function() dir = fs.tmpdir() end)
      after_each(function() fs.rm_rf(dir) end)

      -- put(name, data) -> the path of a new file name below dir holding data
      local function put(name, data)
        local path = dir .. "/" .. name
        local f = assert(io.open(path, "wb"))
        assert(f:write(data))
        assert(f:close())
        return path
      end

      it("reads each path on the parse threads and adds what it holds", function()
        local pem, serial = issue_serial { names = { "file.test", "www.file.test" },
          not_before = T0, not_after = T0 + 30 * DAY }
        local r = c:add_many({ put("file.crt", pem) }, { files = true })
        assert.same({ "ok" }, r.state)
        assert.equals(64, #r.id[1])
        assert.equals(T0, r.not_before[1])
        assert.equals(T0 + 30 * DAY, r.not_after[1])
        assert.is_nil(r.error[1])
        assert.is_nil(r.code[1])
        local g = c:get(r.id[1])
        assert.equals(serial, g.serial)
        assert.equals(pem, g.pem)
        assert.same({ "file.test", "www.file.test" }, g.names)
        assert.equals(r.id[1], c:lookup("www.file.test"))
      end)

      it("says missing (ENOENT) for a path that does not exist", function()
        local good = put("good.crt", issue { names = { "good.test" } })
        local gone = dir .. "/gone.crt"
        local r = c:add_many({ gone, good }, { files = true })
        assert.equals("missing", r.state[1])
        assert.equals("ENOENT", r.code[1])
        assert.matches("^item 1: ", r.error[1])
        assert.matches(gone, r.error[1], 1, true)
        assert.is_nil(r.id[1])
        assert.is_nil(r.not_after[1])
        assert.equals("ok", r.state[2])
        assert.equals(1, c:count())
      end)

      it("refuses an item whose companion is missing (ENOENT, naming the companion)", function()
        local pem = issue { names = { "comp.test" } }
        local crt, key = put("comp.crt", pem), put("comp.key", "KEY")
        local crt2 = put("lonely.crt", issue { names = { "lonely.test" } })
        local absent = dir .. "/lonely.key"
        local r = c:add_many({ crt, crt2 }, { files = true, companions = { key, absent } })
        assert.equals("ok", r.state[1])
        assert.equals("error", r.state[2])
        assert.equals("ENOENT", r.code[2])
        assert.matches("^item 2: ", r.error[2])
        assert.matches(absent, r.error[2], 1, true)
        assert.is_nil(r.id[2])
        assert.equals(1, c:count())
        assert.is_nil(c:lookup("lonely.test"))
        -- a directory is no companion (regression: it passed as present in C,
        -- while storage.common's generic path said EISDIR)
        assert(core.mkdir_p(dir .. "/dir.key", "0700"))
        r = c:add_many({ crt2 }, { files = true, companions = { dir .. "/dir.key" } })
        assert.equals("error", r.state[1])
        assert.equals("EISDIR", r.code[1])
        assert.matches(dir .. "/dir.key", r.error[1], 1, true)
        assert.is_nil(c:lookup("lonely.test"))
        -- a missing certificate stays "missing" whatever its companion
        r = c:add_many({ dir .. "/none.crt" }, { files = true, companions = { absent } })
        assert.equals("missing", r.state[1])
        -- companions apply to PEMs given inline too; a nil companion is none
        r = c:add_many({ pem, pem }, { companions = { absent } })
        assert.same({ "error", "ok" }, r.state)
        assert.equals("ENOENT", r.code[1])
      end)

      it("gives the file's error for an oversized file or a directory", function()
        local pem = issue { names = { "big.test" } }
        local big = put("big.crt", pem)
        assert(core.mkdir_p(dir .. "/sub.crt", "0700"))
        local r = c:add_many({ big, dir .. "/sub.crt", big }, { files = true, max_bytes = #pem - 1 })
        assert.same({ "error", "error", "error" }, r.state)
        assert.equals("toobig", r.code[1])
        assert.matches("^item 1: ", r.error[1])
        assert.equals("EISDIR", r.code[2])
        assert.matches("^item 2: ", r.error[2])
        assert.equals(0, c:count())
        -- a FIFO is not read (it could block the parse thread forever)
        assert.is_true(os.execute("mkfifo '" .. dir .. "/fifo.crt'"))
        r = c:add_many({ dir .. "/fifo.crt" }, { files = true })
        assert.equals("error", r.state[1])
        assert.equals("EISDIR", r.code[1])
        assert.matches("not a regular file", r.error[1], 1, true)
        -- exactly max_bytes is allowed
        r = c:add_many({ big }, { files = true, max_bytes = #pem })
        assert.same({ "ok" }, r.state)
        -- past the default bound (what the parser accepts)
        r = c:add_many({ put("huge.crt", pem .. ("\n"):rep(1024 * 1024)) }, { files = true })
        assert.equals("toobig", r.code[1])
      end)

      it("says parse for a file of garbage, and reads an empty file as garbage", function()
        local r = c:add_many({ put("junk.crt", "not a certificate\n"), put("empty.crt", ""),
          put("cut.crt", (issue { names = { "cut.test" } }):sub(1, 300)) }, { files = true })
        assert.same({ "error", "error", "error" }, r.state)
        for i = 1, 3 do
          assert.equals("parse", r.code[i])
          assert.matches("^item " .. i .. ": ", r.error[i])
        end
        assert.equals(0, c:count())
      end)

      it("gives the same results for a mixed batch with 0, 2 and 8 threads", function()
        local paths, companions, names, on_demand, want = {}, {}, {}, {}, {}
        assert(core.mkdir_p(dir .. "/a-dir", "0700"))
        local huge = put("huge.crt", ("x"):rep(1024 * 1024 + 1))
        for i = 1, 48 do
          local kind = i % 8
          local host = "m" .. i .. ".test"
          local pem = issue { names = { host } }
          if kind == 0 then
            paths[i], want[i] = put(i .. ".crt", pem), { "ok" }
            companions[i] = put(i .. ".key", "KEY")
          elseif kind == 1 then
            paths[i], want[i] = dir .. "/" .. i .. ".crt", { "missing", "ENOENT" }
          elseif kind == 2 then
            paths[i], want[i] = put(i .. ".crt", pem), { "error", "ENOENT" }
            companions[i] = dir .. "/" .. i .. ".key"
          elseif kind == 3 then
            paths[i], want[i] = huge, { "error", "toobig" }
          elseif kind == 4 then
            paths[i], want[i] = dir .. "/a-dir", { "error", "EISDIR" }
          elseif kind == 5 then
            paths[i], want[i] = put(i .. ".crt", "garbage " .. i), { "error", "parse" }
          elseif kind == 6 then
            paths[i], want[i] = put(i .. ".crt", pem), { "names_changed" }
            names[i] = { host, "extra.test" }
          else
            paths[i], want[i] = put(i .. ".crt", pem), { "ok" }
            names[i], on_demand[i] = { host }, true
          end
        end
        local ref
        for _, threads in ipairs { 0, 2, 8 } do
          local d = core.cache_new()
          local r = d:add_many(paths, { files = true, companions = companions, names = names,
            on_demand = on_demand, threads = threads })
          for i = 1, 48 do
            local w = want[i]
            assert.equals(w[1], r.state[i], "item " .. i .. ", threads " .. threads)
            if w[2] then
              assert.equals(w[2], r.code[i], "item " .. i .. ", threads " .. threads)
              assert.matches("^item " .. i .. ": ", r.error[i])
              assert.is_nil(r.id[i])
            else
              assert.is_nil(r.error[i])
              local g = d:get(r.id[i], { pem = false })
              assert.same({ "m" .. i .. ".test" }, g.names)
              assert.equals(i % 8 == 7, g.on_demand, "item " .. i)
            end
          end
          assert.equals(18, d:count()) -- kinds 0, 6 and 7, six of each
          if ref then assert.same(ref, r) else ref = r end
          d:close()
        end
      end)

      it("raises on bad file options before changing the cache", function()
        local path = put("arg.crt", issue { names = { "arg.test" } })
        for _, v in ipairs { 0, -1, 1.5, 1024 * 1024 + 1 } do
          assert.error_matches(function() c:add_many({ path }, { files = true, max_bytes = v }) end,
            "option 'max_bytes' must be an integer in 1%.%.1048576")
        end
        assert.error_matches(function() c:add_many({ path }, { max_bytes = "10" }) end, "max_bytes")
        assert.error_matches(function() c:add_many({ path }, { files = "yes" }) end, "files")
        assert.error_matches(function() c:add_many({ path }, { companions = path }) end, "companions")
        assert.error_matches(function()
          c:add_many({ path, path }, { files = true, companions = { path, 42 } })
        end, "option 'companions%[2%]' must be a file path")
        assert.error_matches(function()
          c:add_many({ path }, { files = true, companions = { path .. "\0.key" } })
        end, "option 'companions%[1%]' must be a file path")
        assert.error_matches(function() c:add_many({ path, path .. "\0x" }, { files = true }) end,
          "pems%[2%] must be a file path %(files = true%)")
        assert.error_matches(function() c:add_many({ path, "" }, { files = true }) end,
          "pems%[2%] must be a file path")
        assert.error_matches(function() c:add_many({ path, 7 }, { files = true }) end,
          "pems%[2%] must be a string")
        assert.equals(0, c:count())
        -- a NUL is only refused in a path: inline, a PEM is just bytes (garbage here)
        local r = c:add_many { "x\0y" }
        assert.equals("parse", r.code[1])
      end)

      it("add_many_start with site_dir reads <dir>/<key>/<key>.crt of each name (and .key with site_keys)", function()
        local sites = dir .. "/sites"
        local function site(name, key, with_key)
          local d = sites .. "/" .. key
          assert(core.mkdir_p(d, "0700"))
          local pem = issue { names = { name } }
          assert(core.write_atomic(d .. "/" .. key .. ".crt", pem, "0600"))
          if with_key then assert(core.write_atomic(d .. "/" .. key .. ".key", "k", "0600")) end
          return pem
        end
        site("a.site.test", "a.site.test", true)
        site("*.w.site.test", "wildcard_.w.site.test", true)
        site("192.0.2.7", "192.0.2.7", false)
        local names = { "a.site.test", "*.w.site.test", "192.0.2.7", "none.site.test" }
        local want = { { "a.site.test" }, { "*.w.site.test" }, { "192.0.2.7" }, { "none.site.test" } }
        local d = core.cache_new()
        local r = d:add_many_start(names, { site_dir = sites, site_keys = true, names = want, threads = 8 }):finish()
        assert.same({ "ok", "ok", "error", "missing" }, r.state)
        assert.equals("ENOENT", r.code[3])
        assert.matches("192.0.2.7/192.0.2.7.key", r.error[3], 1, true)
        assert.matches(sites .. "/none.site.test/none.site.test.crt", r.error[4], 1, true)
        r = d:add_many_start(names, { site_dir = sites, names = want }):finish()
        assert.same({ "ok", "ok", "ok", "missing" }, r.state)
        assert.equals(3, d:count())
        assert.error_matches(function() d:add_many_start({ "a..b" }, { site_dir = sites }) end,
          "names%[1%]: ")
        assert.error_matches(function() d:add_many_start(names, { site_dir = sites, companions = {} }) end,
          "exclude each other")
        assert.error_matches(function() d:add_many(names, { site_dir = sites }) end,
          "'site_dir' is for add_many_start only")
        assert.error_matches(function() d:add_many_start(names, { site_dir = "" }) end,
          "'site_dir' must be a directory path")
        d:close()
      end)

      describe("add_many_start (a batch parsed ahead)", function()
        -- a mixed batch: good files, garbage, a missing file, a missing
        -- companion, the same certificate twice, names that differ
        local function mixed(n)
          local paths, companions, names = {}, {}, {}
          local dup = put("dup.crt", issue { names = { "dup.test" } })
          for i = 1, n do
            local name = "b" .. i .. ".batch.test"
            paths[i] = put(name .. ".crt", issue { names = { name } })
            names[i] = { name }
          end
          paths[5] = put("garbage.crt", "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
          paths[n // 2] = dir .. "/gone.crt"
          companions[n // 2 + 1] = dir .. "/gone.key"
          paths[n - 3], paths[n - 2] = dup, dup
          names[n - 1] = { "other.test" }
          return paths, { files = true, threads = 8, companions = companions, names = names, renew = {} }
        end

        it("gives what add_many gives, inserting nothing before finish", function()
          local paths, opts = mixed(300)
          local want = c:add_many(paths, opts)
          local d = core.cache_new()
          local b = d:add_many_start(paths, opts)
          assert.equals(0, d:count())
          local r = b:finish()
          assert.same(want, r)
          assert.equals(c:count(), d:count())
          assert.equals("error", r.state[5])
          assert.matches("^item 5: ", r.error[5])
          assert.equals("missing", r.state[150])
          assert.equals("ENOENT", r.code[151])
          assert.equals("names_changed", r.state[299])
          assert.equals(r.id[297], r.id[298])
          assert.error_matches(function() b:finish() end, "finished already")
          b:drop() -- after finish: nothing to do
          d:close()
        end)

        it("owns copies of its inputs: the caller's tables may change meanwhile", function()
          local paths, opts = mixed(40)
          local want = c:add_many(paths, opts)
          local d = core.cache_new()
          local p2, o2 = {}, { files = true, threads = 8, companions = {}, names = {}, renew = {} }
          for i, p in ipairs(paths) do p2[i] = p end
          for i, v in pairs(opts.companions) do o2.companions[i] = v end
          for i, v in pairs(opts.names) do o2.names[i] = { v[1] } end
          local b = d:add_many_start(p2, o2)
          for i in ipairs(p2) do p2[i] = "/nonexistent/x" .. i end
          for i in pairs(o2.names) do o2.names[i][1] = "changed.test" end
          p2, o2 = nil, nil
          collectgarbage()
          collectgarbage()
          assert.same(want, b:finish())
          d:close()
        end)

        it("runs several batches at once, finished in order", function()
          local paths, opts = mixed(60)
          local want = c:add_many(paths, opts)
          local d = core.cache_new()
          local first, second = {}, {}
          for i = 1, 30 do first[i], second[i] = paths[i], paths[i + 30] end
          local o1 = { files = true, threads = 8, companions = {}, names = {}, renew = {} }
          local o2 = { files = true, threads = 8, companions = {}, names = {}, renew = {} }
          for i = 1, 30 do
            o1.companions[i], o1.names[i] = opts.companions[i], opts.names[i]
            o2.companions[i], o2.names[i] = opts.companions[i + 30], opts.names[i + 30]
          end
          local b1, b2 = d:add_many_start(first, o1), d:add_many_start(second, o2)
          local r1, r2 = b1:finish(), b2:finish()
          for i = 1, 30 do
            assert.equals(want.state[i], r1.state[i])
            assert.equals(want.id[i], r1.id[i])
            assert.equals(want.state[i + 30], r2.state[i])
            assert.equals(want.id[i + 30], r2.id[i])
          end
          assert.equals(c:count(), d:count())
          d:close()
        end)

        it("can be dropped unfinished (or just lost), adding nothing", function()
          local paths, opts = mixed(500)
          local b = c:add_many_start(paths, opts)
          b:drop()
          b:drop()
          assert.equals(0, c:count())
          assert.error_matches(function() b:finish() end, "dropped")
          local lost = c:add_many_start(paths, opts)
          lost = nil -- luacheck: ignore
          collectgarbage() -- its __gc stops and joins the threads
          collectgarbage()
          do
            local closed <close> = c:add_many_start(paths, opts) -- luacheck: ignore
          end
          assert.equals(0, c:count())
          -- a closed cache: finish says so and drops the batch
          local d = core.cache_new()
          local b2 = d:add_many_start(paths, opts)
          d:close()
          assert.error_matches(function() b2:finish() end, "closed cache")
          assert.error_matches(function() b2:finish() end, "dropped")
        end)

        it("checks its arguments as add_many does, before starting", function()
          local path = put("arg.crt", issue { names = { "arg.test" } })
          assert.error_matches(function() c:add_many_start({ path, 7 }, { files = true }) end,
            "cache:add_many_start: pems%[2%] must be a string")
          assert.error_matches(function() c:add_many_start({ path }, { threads = -1 }) end,
            "cache:add_many_start: option 'threads'")
          assert.error_matches(function() c:add_many_start({ path }, { renew = { ratio = 2 } }) end,
            "cache:add_many_start: renew")
          local many = {}
          for i = 1, 8193 do many[i] = path end
          assert.error_matches(function() c:add_many_start(many, { files = true }) end,
            "at most 8192 certificates a batch")
          local r = c:add_many_start({}, { files = true }):finish()
          assert.same({}, r.state)
          assert.equals(0, c:count())
        end)
      end)
    end)
  end)

  describe("get without the PEM", function()
    it("gives the facts without pem or staple DER", function()
      local pem, serial = issue_serial { names = { "light.test", "www.light.test" },
        ocsp_url = "http://ocsp.light.test/", crl_url = "http://crl.light.test/ca.crl" }
      local id = c:add(pem, { managed = true })
      c:set(id, { last_error = "boom", ocsp = { status = "good", this_update = T0,
        next_update = T0 + 4 * DAY, der = "\48\3\1\2\3" } })
      local full, light = c:get(id), c:get(id, { pem = false })
      assert.is_nil(light.pem)
      assert.is_nil(light.ocsp.der)
      assert.equals("\48\3\1\2\3", full.ocsp.der)
      assert.equals(serial, light.serial)
      full.pem, full.ocsp.der = nil, nil
      assert.same(full, light)
      assert.same(full, c:get(id, { pem = true }) and (function()
        local t = c:get(id, { pem = true })
        t.pem, t.ocsp.der = nil, nil
        return t
      end)())
      assert.same({ "light.test", "www.light.test" }, light.names)
      assert.same({ "http://ocsp.light.test/" }, light.ocsp_urls)
      assert.same({ "http://crl.light.test/ca.crl" }, light.crl_urls)
      assert.equals("boom", light.last_error)
    end)

    it("nil for an unknown id; raises on bad options", function()
      assert.is_nil(c:get(("0"):rep(64), { pem = false }))
      assert.error_matches(function() c:get(("0"):rep(64), { pme = false }) end, 'unknown option "pme"')
      assert.error_matches(function() c:get(("0"):rep(64), { pem = 0 }) end, "'pem' must be a boolean")
    end)
  end)

  describe("closing", function()
    it("is idempotent and makes methods raise", function()
      local d = core.cache_new()
      d:add(issue { names = { "z.test" } })
      assert.matches("1 certificates", tostring(d))
      d:close()
      d:close()
      assert.matches("closed", tostring(d))
      assert.error_matches(function() d:count() end, "closed cache")
      assert.error_matches(function() d:lookup("z.test") end, "closed cache")
      assert.error_matches(function() return #d end, "closed cache")
    end)

    it("closes a to-be-closed variable", function()
      local ref
      do
        local d <close> = core.cache_new()
        ref = d
        d:add(issue { names = { "tbc.test" } })
      end
      assert.error_matches(function() ref:count() end, "closed cache")
    end)

    it("methods check their receiver", function()
      assert.error_matches(function() c.count({}) end, "certmaint.cache expected")
    end)
  end)
end)

-- cache:status_json writes the rows of `status --json` in C: the very text
-- core.json_encode{pretty = true} writes for the same objects in an array.
describe("cache:status_json", function()
  local c
  before_each(function() c = core.cache_new() end)
  after_each(function() c:close() end)

  local null = core.json_null
  local function iso(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t)) end

  -- the rows as the encoder writes them inside "[\n" ... "\n]"
  local function encoded(objs)
    local text = core.json_encode(setmetatable(objs, core.json_array_mt), { pretty = true })
    return text:sub(3, -3)
  end

  local function expect(text, objs)
    assert.same(objs, core.json_decode("[" .. text .. "]"))
    assert.equal(encoded(objs), text) -- keys sorted, two-space indent, same escapes
  end

  -- what the cache contributes to a row of a cached certificate
  local function cached(id, now)
    local g = c:get(id, { pem = false })
    local o = { issuer = g.issuer, must_staple = g.must_staple, serial = g.serial, not_before = iso(g.not_before), not_after = iso(g.not_after),
      renewal_at = g.renew_at ~= math.huge and iso(g.renew_at) or null, time_left = math.floor(g.not_after - now),
      ocsp = g.ocsp and { status = g.ocsp.status, this_update = iso(g.ocsp.this_update),
        next_update = iso(g.ocsp.next_update) } or null }
    return o
  end

  local function with(t, extra)
    for k, v in pairs(extra) do t[k] = v end
    return t
  end

  it("writes a certificate with a staple and a retry, and one with no certificate", function()
    local now = T0 + 0.75
    local id = c:add(issue { names = { "example.com", "www.example.com" }, ocsp_url = "http://ocsp.test",
      not_before = T0 - DAY, not_after = T0 + DAY })
    c:set(id, { renew_at = T0 + 3600, ocsp = { status = "good", this_update = T0 - 60, next_update = T0 + 7 * DAY, der = "x" } })
    local text = c:status_json({ id, false }, {
      names = { { "example.com", "www.example.com" }, { "a.example" } }, managed = { true, true },
      attempts = { 2, 0 }, next_attempt = { T0 + 60 }, last_error = { "planned", "no certificate in storage" },
    }, { now = now, times = { "next_attempt" }, renew = {} })
    expect(text, {
      with(cached(id, now), { names = { "example.com", "www.example.com" }, managed = true, attempts = 2,
        next_attempt = "2026-01-01T00:01:00Z", last_error = "planned",
        renewal_due = (core.needs_renewal(T0 - DAY, T0 + DAY, now, {})),
        ocsp = { status = "good", this_update = "2025-12-31T23:59:00Z", next_update = "2026-01-08T00:00:00Z" },
        renewal_at = "2026-01-01T01:00:00Z", time_left = 86399 }),
      { names = { "a.example" }, managed = true, attempts = 0, next_attempt = null, renewal_due = false,
        last_error = "no certificate in storage", issuer = null, must_staple = null, serial = null, not_before = null,
        not_after = null, ocsp = null, renewal_at = null, time_left = null },
    })
    assert.equal("", c:status_json({}, { names = {} }, { now = now }))
  end)

  it("gives renewal_due by the rule's options, or the caller's column", function()
    local id = c:add(issue { names = { "due.test" }, not_before = T0, not_after = T0 + 90 * DAY })
    local function due(now, opts)
      return core.json_decode("[" .. c:status_json({ id }, opts.fields or {}, { now = now, renew = opts.renew }) .. "]")[1]
    end
    assert.is_false(due(T0 + 59 * DAY, { renew = {} }).renewal_due)
    assert.is_true(due(T0 + 61 * DAY, { renew = {} }).renewal_due)       -- the last third
    assert.is_false(due(T0 + 61 * DAY, { renew = { ratio = 0.2 } }).renewal_due)
    assert.equal(core.needs_renewal(T0, T0 + 90 * DAY, T0 + 61 * DAY, {}), due(T0 + 61 * DAY, { renew = {} }).renewal_due)
    assert.is_true(due(T0, { fields = { renewal_due = { true } } }).renewal_due) -- a hook decided
    assert.is_nil(due(T0, {}).renewal_due) -- neither: no such field
    c:set(id, { renew_at = math.huge })
    assert.equal(null, due(T0, { renew = {} }).renewal_at) -- never
  end)

  it("writes any field the caller adds, in key order, as the encoder would", function()
    local now = T0
    local id = c:add(issue { names = { "x.test" } })
    local deploy = { { targets = { "nginx", "haproxy" }, ok = true, at = "2026-01-01T00:00:00Z", took = 0.25,
      empty = setmetatable({}, core.json_array_mt), none = {} }, null }
    local text = c:status_json({ id, id }, { deploy = deploy, zzz = { 1.5, -3 }, aaa = { "first" } }, { now = now })
    expect(text, {
      with(cached(id, now), { deploy = deploy[1], zzz = 1.5, aaa = "first" }),
      with(cached(id, now), { deploy = null, zzz = -3, aaa = null }),
    })
    assert.matches('^  {\n    "aaa": "first",\n    "deploy": {\n      "at"', text)
  end)

  it("escapes quotes, control characters and non-ASCII text as the encoder does", function()
    local odd = 'CA said "no"\n\tretry later \\ \u{00e9}t\u{00e9} \1 \127 /'
    local key = assert(core.key_generate("p256"))
    local issuer_pem = assert(core.cert_issue { subject_key = key, issuer_key = key, cn = 'Odd "CA" caf\u{00e9}',
      is_ca = true, not_before = T0 - DAY, not_after = T0 + 900 * DAY })
    local pem = assert(core.cert_issue { subject_key = leaf_key, issuer_key = key, issuer_cert = issuer_pem,
      names = { "odd.test" }, not_before = T0, not_after = T0 + 90 * DAY })
    local id = c:add(pem .. issuer_pem)
    local text = c:status_json({ id }, { last_error = { odd }, names = { { "xn--bcher-kva.example", odd } } }, { now = T0 })
    expect(text, { with(cached(id, T0), { last_error = odd, names = { "xn--bcher-kva.example", odd } }) })
    assert.truthy(c:get(id).issuer:find('"CA\\', 1, true)) -- the DN's own escapes: '"' and '\\' 
  end)

  it("writes to a file in pieces when given one", function()
    local ids, names = {}, {}
    for i = 1, 300 do
      ids[i] = c:add(issue { names = { "f" .. i .. ".test" } })
      names[i] = { "f" .. i .. ".test" }
    end
    local text = c:status_json(ids, { names = names }, { now = T0 })
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("[\n")
    assert.is_true(c:status_json(ids, { names = names }, { now = T0, file = f }))
    f:write("\n]")
    f:close()
    local back = assert(io.open(path)):read("a")
    os.remove(path)
    assert.equal("[\n" .. text .. "\n]", back)
    assert.is_true(#text > 64 * 1024) -- more than one piece
    assert.equal(300, #core.json_decode(back))
  end)

  it("refuses bad arguments, naming the row and field", function()
    local id = c:add(issue { names = { "bad.test" } })
    local now = { now = T0 }
    assert.error_matches(function() c:status_json(nil, {}, now) end, "table expected")
    assert.error_matches(function() c:status_json({ id }, nil, now) end, "table expected")
    assert.error_matches(function() c:status_json({ id }, {}) end, "table expected")
    assert.error_matches(function() c:status_json({ id }, {}, {}) end, "option 'now' is required")
    assert.error_matches(function() c:status_json({ id }, {}, { now = 0 / 0 }) end, "'now' must be a finite number")
    assert.error_matches(function() c:status_json({ id }, {}, { now = T0, later = 1 }) end, 'unknown option "later"')
    assert.error_matches(function() c:status_json({ "abc" }, {}, now) end, "ids%[1%] must be a certificate id")
    assert.error_matches(function() c:status_json({ id, true }, {}, now) end, "ids%[2%] must be a certificate id or false")
    assert.error_matches(function() c:status_json({ id }, { [1] = {} }, now) end, "keys must be field names")
    assert.error_matches(function() c:status_json({ id }, { names = "a" }, now) end, "fields.names must be a list")
    assert.error_matches(function() c:status_json({ id }, { serial = {} }, now) end, "fields.serial: the cache writes that field")
    assert.error_matches(function() c:status_json({ id }, { renewal_due = {} }, { now = T0, renew = {} }) end,
      "option 'renew' was given")
    assert.error_matches(function() c:status_json({ id }, {}, { now = T0, renew = { ratio = 2 } }) end, "ratio")
    assert.error_matches(function() c:status_json({ id }, {}, { now = T0, times = { 1 } }) end, "times%[1%]' must be a field name")
    assert.error_matches(function() c:status_json({ id }, { x = { print } }, now) end, "row 1, field 'x': json: cannot encode a function")
    assert.error_matches(function() c:status_json({ id, id }, { x = { "ok", "\255" } }, now) end, "row 2, field 'x': string is not valid UTF%-8")
    assert.error_matches(function() c:status_json({ id }, { x = { { 1, nil, 3 } } }, now) end, "row 1, field 'x': json: sparse array")
    local f = assert(io.open(os.tmpname(), "w"))
    f:close()
    assert.error_matches(function() c:status_json({ id }, {}, { now = T0, file = f }) end, "a closed file")
    assert.error_matches(function() c:status_json({ id }, {}, { now = T0, file = "stdout" }) end, "must be an open file")
    c:close()
    assert.error_matches(function() c:status_json({ id }, {}, now) end, "closed cache")
    c = core.cache_new()
  end)
end)
