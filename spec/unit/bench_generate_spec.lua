-- The benchmark tree generator (bench/generate.c, the Lua module
-- certmaint.benchgen): a tree certmaint reads as its own, checked through
-- certmaint's own functions (keys, cert_parse, key_matches, the renewal rule,
-- ocsp_response_parse) and once through the real engine (`certmaint status`).
local benchgen = require "certmaint.benchgen"
local core = require "certmaint.core"
local keys = require "certmaint.keys"
local renewal = require "certmaint.renewal"
local helpers = require "helpers.policies"

local ISSUER = "acme-v02.api.letsencrypt.org-directory"
local N = 20
local DAY = 86400

local function name_of(i) return "host" .. i .. ".bench.test" end

local function generate(dir, extra)
  local opts = { dir = dir, n = N, due = 0.25, expired = 0.1, stale_staples = 0.2, seed = 7 }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return benchgen.generate(opts)
end

local function files_of(dir)
  return assert(core.list_files(dir))
end

describe("certmaint.benchgen.generate", function()
  local dir, summary
  local intermediate

  setup(function()
    dir = helpers.tmpdir() .. "/tree" -- missing: generate creates it
    local err, code
    summary, err, code = generate(dir)
    assert(summary, tostring(err) .. " " .. tostring(code))
    intermediate = assert(helpers.read(dir .. "/bench-ca/intermediate.pem"))
  end)

  teardown(function()
    if dir then os.execute("rm -rf '" .. dir:gsub("/tree$", "") .. "'") end
  end)

  it("returns the counts the fractions give, and what it wrote", function()
    assert.same({ n = 20, due = 5, expired = 2, stale_staples = 4, issuer_key = ISSUER, dir = dir },
      { n = summary.n, due = summary.due, expired = summary.expired,
        stale_staples = summary.stale_staples, issuer_key = summary.issuer_key, dir = summary.dir })
    assert.is_number(summary.seconds)
    assert.is_true(math.abs(summary.now - core.now()) < 600)
    local total = 0
    for _, f in ipairs(files_of(dir)) do total = total + assert(core.stat(dir .. "/" .. f)).size end
    assert.equal(total, summary.bytes)
  end)

  it("writes certmagic's layout: a site per name, a staple per certificate, the CA beside them", function()
    local want = {
      "bench-ca/intermediate.key", "bench-ca/intermediate.pem", "bench-ca/root.key", "bench-ca/root.pem",
    }
    for i = 1, N do
      local site = keys.site_files(ISSUER, name_of(i))
      want[#want + 1], want[#want + 2], want[#want + 3] = site.crt, site.key, site.meta
      local crt = assert(helpers.read(dir .. "/" .. site.crt))
      want[#want + 1] = keys.ocsp(name_of(i), keys.fast_hash(crt))
    end
    table.sort(want)
    assert.same(want, files_of(dir))
    for _, f in ipairs(want) do
      if f:match("%.key$") then assert.equal(384, assert(core.stat(dir .. "/" .. f)).perms, f) end -- 0600
    end
  end)

  it("writes leaves certmaint parses, each with its own key, the intermediate and metadata", function()
    local root = assert(core.cert_parse(assert(helpers.read(dir .. "/bench-ca/root.pem"))))
    local inter = assert(core.cert_parse(intermediate))
    assert.is_true(root.is_ca and inter.is_ca)
    assert.equal(root.subject, inter.issuer)
    assert.is_true(core.key_matches(intermediate, assert(helpers.read(dir .. "/bench-ca/intermediate.key"))))
    local public_keys, serials = {}, {}
    for i = 1, N do
      local name, site = name_of(i), keys.site_files(ISSUER, name_of(i))
      local crt = assert(helpers.read(dir .. "/" .. site.crt))
      local key = assert(helpers.read(dir .. "/" .. site.key))
      local facts = assert(core.cert_parse(crt))
      assert.same({ name }, facts.names)
      assert.same({ "http://127.0.0.1:4002/ocsp" }, facts.ocsp_urls)
      assert.equal(90 * DAY, facts.not_after - facts.not_before)
      assert.equal(inter.subject, facts.issuer)
      assert.is_false(facts.is_ca)
      assert.matches("^%x+$", facts.serial)
      assert.equal(32, #facts.serial)
      assert.same({ inter.der }, facts.chain_der) -- the chain after the leaf
      assert.is_true(core.key_matches(crt, key))
      assert.matches("^%-%-%-%-%-BEGIN EC PRIVATE KEY%-%-%-%-%-\n", key)
      local meta = assert(core.json_decode(assert(helpers.read(dir .. "/" .. site.meta))))
      assert.same({ name }, meta.sans)
      assert.equal(facts.serial, meta.issuer_data.serial)
      local pub = assert(core.key_public_pem(key))
      assert.is_nil(public_keys[pub], "a key shared by two certificates")
      assert.is_nil(serials[facts.serial], "a serial used twice")
      public_keys[pub], serials[facts.serial] = true, true
    end
  end)

  it("makes exactly the due and expired certificates due under certmaint's renewal rule", function()
    local now, due, expired, fresh = summary.now, 0, 0, 0
    for i = 1, N do
      local crt = assert(helpers.read(dir .. "/" .. keys.cert(ISSUER, name_of(i))))
      local facts = assert(core.cert_parse(crt))
      local is_due, reason = renewal.needs_renewal(facts, now)
      if now > facts.not_after then
        expired = expired + 1
        assert.equal("expired", reason)
      elseif is_due then
        due = due + 1
        assert.equal("window", reason)
        assert.is_true(facts.not_after - now > 10 * DAY, "due, but not about to expire")
      else
        fresh = fresh + 1
        assert.is_true(now - facts.not_before <= 10 * DAY, "issued within the last 10 days")
      end
    end
    assert.same({ due = summary.due, expired = summary.expired, fresh = N - summary.due - summary.expired },
      { due = due, expired = expired, fresh = fresh })
  end)

  it("stores each staple under the key the engine looks up, good and verified, the stale ones stale", function()
    local now, stale = summary.now, 0
    for i = 1, N do
      local name = name_of(i)
      local crt = assert(helpers.read(dir .. "/" .. keys.cert(ISSUER, name)))
      local der = assert(helpers.read(dir .. "/" .. keys.ocsp(name, keys.fast_hash(crt))), name)
      local info, err, code = core.ocsp_response_parse(der, crt, intermediate, now)
      if info then
        assert.equal("good", info.status)
        assert.equal(now - 3600, info.this_update)
        assert.equal(now + 7 * DAY, info.next_update)
      else
        assert.equal("stale", code, err)
        stale = stale + 1
        -- stale, not broken: verified without the time check it is good
        info = assert(core.ocsp_response_parse(der, crt, intermediate, 0))
        assert.equal("good", info.status)
        assert.is_true(info.next_update < now)
      end
    end
    assert.equal(summary.stale_staples, stale)
  end)

  it("is deterministic in the seed: the same names, serials and validity", function()
    local function facts_of(d)
      local out = {}
      for i = 1, N do
        local f = assert(core.cert_parse(assert(helpers.read(d .. "/" .. keys.cert(ISSUER, name_of(i))))))
        out[i] = { f.names[1], f.serial, f.not_before, f.not_after }
      end
      return out
    end
    local base = helpers.tmpdir()
    local a = assert(generate(base .. "/a", { now = 1767225600, threads = 1 }))
    local b = assert(generate(base .. "/b", { now = 1767225600, threads = 3 }))
    local c = assert(generate(base .. "/c", { now = 1767225600, seed = 8 }))
    assert.equal(1767225600, a.now)
    local fa, fb, fc = facts_of(base .. "/a"), facts_of(base .. "/b"), facts_of(base .. "/c")
    assert.same(fa, fb)
    assert.not_equal(fa[1][2], fc[1][2])
    os.execute("rm -rf '" .. base .. "'")
  end)

  it("refuses a directory that already holds certificates/, writing nothing", function()
    local before = files_of(dir)
    local s, err, code = generate(dir)
    assert.is_nil(s)
    assert.equal("exists", code)
    assert.matches("already holds certificates/", err, 1, true)
    assert.same(before, files_of(dir))
  end)

  it("signs with an RSA-2048 CA when asked (ca_key_type), as Let's Encrypt's RSA intermediates do", function()
    local base = helpers.tmpdir()
    local s = assert(generate(base .. "/rsa", { n = 3, stale_staples = 0, expired = 0, due = 0, ca_key_type = "rsa2048" }))
    local inter = assert(helpers.read(base .. "/rsa/bench-ca/intermediate.pem"))
    local p = assert(io.popen("openssl pkey -noout -text -in '" .. base .. "/rsa/bench-ca/intermediate.key'"))
    local text = p:read("a")
    p:close()
    assert.matches("Private%-Key: %(2048 bit", text)
    for i = 1, 3 do
      local crt = assert(helpers.read(base .. "/rsa/" .. keys.cert(ISSUER, name_of(i))))
      local der = assert(helpers.read(base .. "/rsa/" .. keys.ocsp(name_of(i), keys.fast_hash(crt))))
      assert.equal("good", assert(core.ocsp_response_parse(der, crt, inter, s.now)).status)
    end
    os.execute("rm -rf '" .. base .. "'")
  end)

  it("names the option that is wrong, and what it must be", function()
    local base = helpers.tmpdir()
    local cases = {
      { { due = 2 }, "generate: option 'due' must be a number between 0 and 1, got 2" },
      { { expired = -0.5 }, "generate: option 'expired' must be a number between 0 and 1, got -0.5" },
      { { stale_staples = "lots" }, "generate: option 'stale_staples' must be a number between 0 and 1, got a string" },
      { { n = 0 }, "generate: option 'n' must be an integer from 1 to 10000000, got 0" },
      { { n = 2.5 }, "generate: option 'n' must be an integer from 1 to 10000000, got 2.5" },
      { { threads = 0 }, "generate: option 'threads' must be an integer from 1 to 64, got 0" },
      { { seed = 1.5 }, "generate: option 'seed' must be an integer, got 1.5" },
      { { progress = 1 }, "generate: option 'progress' must be a boolean, got 1" },
      { { issuer_key = "Not Safe" }, "generate: option 'issuer_key' must be" },
      { { issuer_key = "a..b" }, "generate: option 'issuer_key' must be" },
      { { ca_key_type = "dsa" }, 'generate: option \'ca_key_type\' must be "p256", "p384" or "rsa2048", got "dsa"' },
      { { dir = "" }, "generate: option 'dir' must be a non-empty string (a directory), got a string" },
      { { due = 0.6, expired = 0.6 }, "generate: options 'due' and 'expired' together must not exceed 1, got 0.6 + 0.6" },
    }
    for _, case in ipairs(cases) do
      local s, err, code = generate(base .. "/x", case[1])
      assert.is_nil(s)
      assert.equal("invalid", code)
      assert.equal(case[2], err:sub(1, #case[2]))
    end
    local s, err, code = benchgen.generate { n = 1 }
    assert.is_nil(s)
    assert.equal("invalid", code)
    assert.equal("generate: option 'dir' must be a non-empty string (a directory), got nothing", err)
    assert.is_nil(core.stat(base .. "/x"), "nothing written for bad options")
    assert.has_error(function() benchgen.generate { dir = base .. "/x", n = 1, thread = 2 } end,
      'generate: unknown option "thread" (known: ca_key_type, dir, due, expired, issuer_key, n, now, progress, '
        .. 'seed, stale_staples, threads)')
    os.execute("rm -rf '" .. base .. "'")
  end)

  it("is a tree the real engine loads: `certmaint status` sees every certificate and each fresh staple", function()
    local bin = os.getenv("CERTMAINT_BIN") or "build/certmaint"
    local names = {}
    for i = 1, N do names[i] = string.format("%q", name_of(i)) end
    local policy = dir:gsub("/tree$", "") .. "/policy.lua"
    local f = assert(io.open(policy, "w"))
    f:write(string.format([[
local certmaint = require "certmaint"
return certmaint.policy {
  storage = certmaint.storage.file { root = %q },
  issuer = certmaint.issuer.internal { name = %q },
  certificates = { %s },
}
]], dir, ISSUER, table.concat(names, ", ")))
    f:close()
    local out = policy .. ".json"
    local ok = os.execute(string.format("%s status %s --json > %s 2> %s.err", bin, policy, out, out))
    assert.is_true(ok, helpers.read(out .. ".err"))
    local rows = assert(core.json_decode(assert(helpers.read(out))))
    assert.equal(N, #rows)
    local now, due, stapled = summary.now, 0, 0
    for i, row in ipairs(rows) do
      local name = name_of(i)
      assert.same({ name }, row.names)
      local crt = assert(helpers.read(dir .. "/" .. keys.cert(ISSUER, name)))
      local facts = assert(core.cert_parse(crt))
      assert.equal(facts.serial, row.serial)
      assert.equal(core.json_null, row.last_error)
      if row.renewal_due then due = due + 1 end
      assert.equal((renewal.needs_renewal(facts, now)), row.renewal_due, name)
      local der = assert(helpers.read(dir .. "/" .. keys.ocsp(name, keys.fast_hash(crt))))
      local fresh = core.ocsp_response_parse(der, crt, intermediate, now) ~= nil
      assert.equal(fresh, type(row.ocsp) == "table", name .. ": a fresh staple is attached, a stale one not")
      if fresh then
        stapled = stapled + 1
        assert.equal("good", row.ocsp.status)
      end
    end
    assert.equal(summary.due + summary.expired, due)
    assert.equal(N - summary.stale_staples, stapled)
  end)
end)
