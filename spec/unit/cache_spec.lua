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
      assert.matches("cache_spec%.lua:%d+: cache:add: unknown field 'manged'", err)
      assert.error_matches(function() c:add(pem, { managed = "yes" }) end,
        "field 'managed' must be a boolean")
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
      assert.error_matches(function() c:set(id, { renew_after = 1 }) end, "unknown field 'renew_after'")
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
        "unknown field 'extra'")
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
      assert.error_matches(function() c:ids { manged = true } end, "unknown field 'manged'")
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
