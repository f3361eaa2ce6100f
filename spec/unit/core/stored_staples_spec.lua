-- cache:stored_staples_start (core/lua/locsp_batch.c): start-up's first
-- staples, read from the file storage's ocsp/ folder under certmagic's key and
-- checked on the core's threads; only a good, fresh, verified one is attached,
-- everything else is left (counted) for the OCSP pass, and a certificate that
-- has a staple already is not looked at.
local core = require "certmaint.core"
local lfs = require "lfs"

local read = require("helpers.fixtures").reader("ocsp")

local T = 1767225600
local NOW = T + 3600
local CA, LEAF = read("ca.pem"), read("leaf.pem")

local function spit(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

describe("cache:stored_staples_start", function()
  local cache, id, root, key_path

  before_each(function()
    cache = core.cache_new()
    id = assert(cache:add(LEAF .. CA))
    root = os.tmpname()
    os.remove(root)
    assert(lfs.mkdir(root))
    assert(lfs.mkdir(root .. "/ocsp"))
    -- where the OCSP pass looks (cache:staple_plan names it)
    local plan = cache:staple_plan({ id }, NOW)
    assert.equal(1, #plan.keys)
    assert.matches("^ocsp/", plan.keys[1])
    key_path = root .. "/" .. plan.keys[1]
  end)

  after_each(function()
    cache:close()
    for f in lfs.dir(root .. "/ocsp") do
      if f ~= "." and f ~= ".." then os.remove(root .. "/ocsp/" .. f) end
    end
    lfs.rmdir(root .. "/ocsp")
    os.remove(root .. "/memo")
    lfs.rmdir(root)
  end)

  local function run(opts)
    opts = opts or {}
    local b = assert(cache:stored_staples_start({ id }, { root = opts.root or root, now = opts.now or NOW,
      memo = opts.memo, threads = opts.threads }))
    return b:finish()
  end

  it("attaches the stored staple that is good and fresh, as the OCSP pass would", function()
    local der = read("ocsp_good.der")
    spit(key_path, der)
    for _, threads in ipairs { 0, 2 } do
      cache:set(id, { ocsp = false })
      local r = run { threads = threads }
      assert.same({ checked = 1, attached = 1, missing = 0, failed = 0 }, r)
      local c = cache:get(id)
      assert.equal("good", c.ocsp.status)
      assert.equal(der, c.ocsp.der)
      local want = core.ocsp_response_parse(der, LEAF, CA, NOW, 300)
      assert.equal(want.this_update, c.ocsp.this_update)
      assert.equal(want.next_update, c.ocsp.next_update)
    end
  end)

  it("the root may end with a slash", function()
    spit(key_path, read("ocsp_good.der"))
    assert.equal(1, run({ root = root .. "/" }).attached)
  end)

  it("does not look at a certificate that has a staple already", function()
    spit(key_path, read("ocsp_good.der"))
    assert.equal(1, run().attached)
    local before = cache:get(id).ocsp.der
    spit(key_path, read("ocsp_revoked_1.der"))
    assert.same({ checked = 0, attached = 0, missing = 0, failed = 0 }, run())
    assert.equal(before, cache:get(id).ocsp.der)
  end)

  it("leaves revoked, unknown, stale, damaged and forged staples to the OCSP pass", function()
    local der = read("ocsp_good.der")
    local forged = der:sub(1, -2) .. string.char((der:byte(-1) + 1) % 256)
    for _, bytes in ipairs { read("ocsp_revoked_1.der"), read("ocsp_unknown.der"), read("ocsp_stale.der"),
      read("ocsp_truncated.der"), read("ocsp_garbage.der"), read("ocsp_good_no_next.der"), forged, "" } do
      spit(key_path, bytes)
      assert.same({ checked = 1, attached = 0, missing = 0, failed = 1 }, run())
      assert.is_nil(cache:get(id).ocsp)
    end
  end)

  it("counts a staple not stored as missing, and a folder in its place as failed", function()
    assert.same({ checked = 1, attached = 0, missing = 1, failed = 0 }, run())
    assert(lfs.mkdir(key_path))
    assert.same({ checked = 1, attached = 0, missing = 0, failed = 1 }, run())
    lfs.rmdir(key_path)
  end)

  it("skips what the pass would not look for: expired, gone from the cache", function()
    spit(key_path, read("ocsp_good.der"))
    local c = cache:get(id)
    assert.same({ checked = 0, attached = 0, missing = 0, failed = 0 }, run { now = c.not_after + 1 })
    cache:remove(id)
    assert.same({ checked = 0, attached = 0, missing = 0, failed = 0 }, run())
  end)

  it("checks a signature in the memo once, and finds it there at the next start", function()
    spit(key_path, read("ocsp_good.der"))
    local memo = assert(core.ocsp_memo(root .. "/memo"))
    assert.equal(1, run({ memo = memo }).attached)
    assert.equal(1, memo:stats().added)
    assert(memo:flush())
    memo:close()
    cache:set(id, { ocsp = false })
    memo = assert(core.ocsp_memo(root .. "/memo"))
    assert.equal(1, run({ memo = memo }).attached)
    assert.equal(1, memo:stats().hits)
    memo:close()
  end)

  it("drop joins the threads and attaches nothing", function()
    spit(key_path, read("ocsp_good.der"))
    local b = assert(cache:stored_staples_start({ id }, { root = root, now = NOW }))
    b:drop()
    assert.is_nil(cache:get(id).ocsp)
    assert.error_matches(function() b:finish() end, "dropped")
  end)

  it("raises on a caller's mistake, naming it", function()
    assert.error_matches(function() cache:stored_staples_start({ id }, { now = NOW }) end, "option 'root'")
    assert.error_matches(function() cache:stored_staples_start({ id }, { root = root }) end, "now")
    assert.error_matches(function() cache:stored_staples_start({ "xyz" }, { root = root, now = NOW }) end,
      "ids%[1%] must be a certificate id")
    assert.error_matches(function() cache:stored_staples_start({ id }, { root = root, now = NOW, files = true }) end,
      "files")
    assert.error_matches(function() cache:stored_staples_start({ id }, { root = root, now = NOW, threads = 99 }) end,
      "threads")
  end)
end)
