-- One cleaner per interval among the instances sharing a storage (issue 10):
-- the clean pass takes try_lock("clean"), reads certmaint/last_clean and
-- skips when another instance cleaned within clean_interval; it removes stale
-- locks (their holders died) and temp files of writes that never finished.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local keys = require "certmaint.keys"
local rfc3339 = require "certmaint.rfc3339"
local common = require "certmaint.storage.common"
local file = require "certmaint.storage.file"
local helpers = require "helpers.policies"
local lfs = require "lfs"
local loop = require "certmaint.loop"

local DAY = 86400

local function grep(lines, pattern)
  local n = 0
  for _, l in ipairs(lines) do if l:find(pattern) then n = n + 1 end end
  return n
end

describe("the clean pass across instances", function()
  local clock, ca, logs, dir

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    logs = testing.capture_logs()
    dir = helpers.tmpdir()
  end)

  after_each(function()
    core.log_config { level = "info" }
    testing.reset()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function engine(storage, fields)
    fields = fields or {}
    fields.certificates = fields.certificates or { "a.test" }
    fields.storage = storage
    fields.issuer = fields.issuer or testing.issuer { ca = ca, lifetime = "30d" }
    return testing.engine(certmaint.policy(fields))
  end

  -- a clean pass as the daemon's clean ticker runs it
  local function scheduled_clean(e)
    local task = loop.spawn(e.engine.tick, e.engine, "clean", { scheduled = true })
    loop.run_until_idle()
    assert(task.done and task.ok, tostring(task.error))
    return task.results[1]
  end

  -- an expired certificate nobody manages, for the pass to delete
  local function plant_expired(storage, name)
    local c = ca:issue { names = { name }, not_before = clock:now() - 40 * DAY, not_after = clock:now() - 10 * DAY }
    local set = keys.site_files("testing", name)
    assert(storage:store(set.crt, c.cert_pem))
    assert(storage:store(set.key, c.key_pem))
    return set.crt
  end

  it("cleans once per interval: the other instance skips, and cleans after the interval", function()
    local sa = testing.memory()
    local sb = testing.memory { share = sa }
    local a, b = engine(sa), engine(sb)
    plant_expired(sa, "old.test")
    local ta = scheduled_clean(a)
    assert.equal(1, ta.deleted)
    assert.is_nil(ta.skipped)
    assert.equal(rfc3339.format(clock:now()) .. "\n", sa:load("certmaint/last_clean"))
    local crt = plant_expired(sa, "older.test")
    clock:advance(3600)
    local tb = scheduled_clean(b)
    assert.matches("another instance cleaned at 2026%-01%-01T00:00:00Z", tb.skipped)
    assert.equal(0, tb.deleted)
    assert.is_true(sa:exists(crt))
    assert.equal(1, grep(logs(), "level=info event=clean_skipped .*last_clean=2026%-01%-01T00:00:00Z"))
    -- A's own record does not stop A (its ticker keeps the interval)
    assert.is_nil(scheduled_clean(a).skipped)
    assert.is_false(sa:exists(crt))
    plant_expired(sa, "oldest.test")
    clock:advance(DAY + 1)
    tb = scheduled_clean(b)
    assert.is_nil(tb.skipped)
    assert.equal(1, tb.deleted)
    assert.equal(rfc3339.format(clock:now()) .. "\n", sa:load("certmaint/last_clean"))
  end)

  it("cleans when asked by hand (certmaint clean, once) even if another instance just did, and records it", function()
    local sa = testing.memory()
    local sb = testing.memory { share = sa }
    local a, b = engine(sa), engine(sb)
    assert.is_nil(scheduled_clean(a).skipped)
    local crt = plant_expired(sa, "old.test")
    clock:advance(60)
    local tb = b:tick("clean") -- what the command line runs
    assert.is_nil(tb.skipped)
    assert.equal(1, tb.deleted)
    assert.is_false(sa:exists(crt))
    assert.equal(rfc3339.format(clock:now()) .. "\n", sa:load("certmaint/last_clean"))
    -- and the daemons leave the interval to it
    assert.matches("another instance cleaned", scheduled_clean(a).skipped)
  end)

  it("skips the pass while another instance holds the clean lock", function()
    core.log_config { level = "debug" }
    local sa = testing.memory()
    local sb = testing.memory { share = sa }
    local a = engine(sa)
    local crt = plant_expired(sa, "old.test")
    local lock = assert(sb:try_lock("clean"))
    local t = a:tick("clean")
    assert.matches("another instance is cleaning", t.skipped)
    assert.is_true(sa:exists(crt))
    assert.equal(1, grep(logs(), "level=debug event=clean_skipped .*lock=clean"))
    assert(sb:unlock(lock))
    assert.is_nil(a:tick("clean").skipped)
    assert.is_false(sa:exists(crt))
  end)

  it("removes stale locks through a takeover, and leaves live ones (file backend)", function()
    local root = dir .. "/data"
    -- max_skew = 0: stale by the wall clock at first look (storage/staleness.lua)
    local sa = file.new { root = root, max_skew = 0 }
    local dead = file.new { root = root, max_skew = 0 } -- an instance that died holding a lock
    local live = file.new { root = root, max_skew = 0 }
    local a = engine(sa)
    assert(dead:try_lock(keys.lock_name("gone.test")))
    clock:advance(60) -- dead stopped its heartbeat a minute ago
    local held = assert(live:try_lock(keys.lock_name("busy.test")))
    assert.is_true(sa:exists(keys.lock("gone.test")))
    local t = a:tick("clean")
    assert.equal(1, t.locks_deleted)
    assert.is_false(sa:exists(keys.lock("gone.test")))
    assert.is_true(sa:exists(keys.lock("busy.test")))
    assert.equal(1, grep(logs(), "level=info event=clean_deleted .*key=locks/issue_cert_gone%.test%.lock .*what=\"stale lock\""))
    -- the fencing token of the removed lock is kept: the next grant is larger
    local again = assert(sa:try_lock(keys.lock_name("gone.test")))
    assert.equal(3, again.token) -- 1: dead's grant, 2: the cleaner's takeover
    assert(sa:unlock(again))
    -- and the live holder still holds its lock
    assert.is_true(live:_holds(held))
    assert.equal(common.decode_lock(sa:load(keys.lock("busy.test"))).owner, live.owner)
  end)

  it("removes temp files of writes that never finished, older than a renew tick (file backend)", function()
    local root = dir .. "/data"
    local sa = file.new { root = root }
    local a = engine(sa, { renew_check_interval = "10m" })
    local site = root .. "/certificates/testing/a.test"
    local old_tmp = site .. "/.a.test.crt.tmp-0123abcd"
    local new_tmp = site .. "/.a.test.key.tmp-4567ef01"
    local old_aside = root .. "/.last_clean.stale-89abcdef"
    for _, p in ipairs { old_tmp, new_tmp, old_aside } do
      local f = assert(io.open(p, "w"))
      f:write("half a write")
      f:close()
    end
    local t0 = math.floor(clock:now())
    assert(lfs.touch(old_tmp, t0 - 3600, t0 - 3600))
    assert(lfs.touch(old_aside, t0 - 700, t0 - 700))
    assert(lfs.touch(new_tmp, t0 - 60, t0 - 60)) -- a write in progress, maybe
    local t = a:tick("clean")
    assert.equal(2, t.temp_deleted)
    assert.is_nil(lfs.attributes(old_tmp))
    assert.is_nil(lfs.attributes(old_aside))
    assert.is_table(lfs.attributes(new_tmp))
    assert.is_string(sa:load(keys.cert("testing", "a.test"))) -- the real files stay
    assert.is_string(sa:load(keys.private_key("testing", "a.test")))
    assert.equal(1, grep(logs(), "event=clean_deleted .*key=certificates/testing/a%.test/%.a%.test%.crt%.tmp%-0123abcd"))
  end)
end)
