-- The file backend's clean pass (issue 11): one walk listing the stored
-- certificates and the temp files (core.clean_scan), each certificate read
-- for its leaf's notAfter only, and the expired sets removed by one
-- core.remove_many that syncs each folder once.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local keys = require "certmaint.keys"
local file = require "certmaint.storage.file"
local helpers = require "helpers.policies"
local lfs = require "lfs"

local DAY = 86400

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- A certificate set for name expiring at not_after, stored in storage
-- (certificate, key, metadata): its keys and the issued certificate.
local function plant_set(ca, storage, name, not_after)
  local c = ca:issue { names = { name }, not_before = not_after - 90 * DAY, not_after = not_after }
  local set = keys.site_files("testing", name)
  assert(storage:store(set.crt, c.cert_pem))
  assert(storage:store(set.key, c.key_pem))
  assert(storage:store(set.meta, "{}"))
  return set, c
end

local function by_key(list)
  local out = {}
  for _, it in ipairs(list) do out[it.key] = it end
  return out
end

describe("core.clean_scan", function()
  local clock, ca, dir

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    dir = helpers.tmpdir()
  end)

  after_each(function()
    testing.reset()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function plant(storage, name, not_after) return plant_set(ca, storage, name, not_after) end

  it("reports the expired certificates with their ids, the unparseable ones, the old temp files", function()
    local root = dir .. "/data"
    local s = file.new { root = root }
    local now = math.floor(clock:now())
    local old = plant(s, "old.test", now - 2 * DAY)
    local _, fresh_cert = plant(s, "fresh.test", now + 30 * DAY)
    local edge = plant(s, "edge.test", now - DAY) -- notAfter == expired_before: expired
    assert(s:store("certificates/testing/bad.test/bad.test.crt", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
    assert(s:store("ocsp/not-a-cert.crt", "ignored: outside certificates/"))
    write(root .. "/certificates/testing/fresh.test/.fresh.test.crt.tmp-00ff", "half")
    write(root .. "/.x.stale-12ab", "half")
    write(root .. "/ocsp/.y.tmp-34cd", "young")
    assert(lfs.touch(root .. "/certificates/testing/fresh.test/.fresh.test.crt.tmp-00ff", now - 3600, now - 3600))
    assert(lfs.touch(root .. "/.x.stale-12ab", now - 3600, now - 3600))
    assert(lfs.touch(root .. "/ocsp/.y.tmp-34cd", now - 10, now - 10))
    for _, threads in ipairs { 1, 3 } do
      local scan = assert(core.clean_scan(root, { expired_before = now - DAY, temp_before = now - 600,
        threads = threads, skip_top = "journal" }))
      assert.equal(4, scan.certificates)
      local expired = by_key(scan.expired)
      assert.same({ [old.crt] = true, [edge.crt] = true }, (function()
        local t = {}
        for k in pairs(expired) do t[k] = true end
        return t
      end)())
      assert.equal(now - 2 * DAY, expired[old.crt].not_after)
      assert.equal(64, #expired[old.crt].id)
      assert.equal(1, #scan.failed)
      assert.equal("certificates/testing/bad.test/bad.test.crt", scan.failed[1].key)
      assert.is_string(scan.failed[1].error)
      assert.same({ ".x.stale-12ab", "certificates/testing/fresh.test/.fresh.test.crt.tmp-00ff" }, scan.temp)
    end
    -- the id is the cache's: SHA-256 of the leaf
    local cache = core.cache_new()
    local id = cache:add(fresh_cert.cert_pem)
    local scan = assert(core.clean_scan(root, { expired_before = now + 31 * DAY, temp_before = 0 }))
    assert.equal(id, by_key(scan.expired)["certificates/testing/fresh.test/fresh.test.crt"].id)
  end)

  it("fails clearly for a missing root and bad options", function()
    local scan, err, code = core.clean_scan(dir .. "/none", { expired_before = 0, temp_before = 0 })
    assert.is_nil(scan)
    assert.equal("ENOENT", code)
    assert.matches("none", err)
    assert.has_error(function() core.clean_scan(dir, { threads = 0 }) end)
    assert.has_error(function() core.clean_scan(dir, { nope = 1 }) end)
    assert.has_error(function() core.clean_scan(dir, { expired_before = 1.5, temp_before = 0 }) end,
      "core.clean_scan: expired_before must be an integer in -9223372036854775808..9223372036854775807")
  end)
end)

describe("core.remove_many", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("removes files, says which were missing, prunes folders left empty and refuses a linked folder", function()
    assert(core.mkdir_p(dir .. "/r/a/s1", "0700"))
    assert(core.mkdir_p(dir .. "/r/a/s2", "0700"))
    assert(core.mkdir_p(dir .. "/outside", "0700"))
    write(dir .. "/r/a/s1/x.crt", "x")
    write(dir .. "/r/a/s1/x.key", "k")
    write(dir .. "/r/a/s2/y.crt", "y")
    write(dir .. "/r/a/s2/keep", "stays")
    write(dir .. "/outside/z.crt", "not ours")
    assert(lfs.link(dir .. "/outside", dir .. "/r/a/linked", true))
    local removed, err, code, partial = core.remove_many(dir .. "/r",
      { "a/linked/z.crt", "a/s1/x.crt", "a/s1/x.json", "a/s1/x.key", "a/s2/y.crt", "gone/w.crt" },
      { prune_empty = true })
    assert.is_nil(removed)
    assert.equal("ELOOP", code)
    assert.matches("a/linked/z.crt", err)
    assert.same({ false, "removed", "missing", "removed", "removed", "missing" }, partial)
    assert.is_nil(lfs.attributes(dir .. "/r/a/s1")) -- left empty: pruned
    assert.equal("directory", lfs.attributes(dir .. "/r/a/s2", "mode")) -- not empty
    assert.is_nil(lfs.attributes(dir .. "/r/a/s2/y.crt"))
    assert.equal("file", lfs.attributes(dir .. "/outside/z.crt", "mode")) -- never through the link
    assert.same({ "removed" }, core.remove_many(dir .. "/r", { "a/s2/keep" }))
    assert.equal("directory", lfs.attributes(dir .. "/r/a/s2", "mode")) -- no prune unless asked
  end)
end)

describe("the clean pass on the file backend", function()
  local clock, ca, logs, dir

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    logs = testing.capture_logs()
    dir = helpers.tmpdir()
  end)

  after_each(function()
    testing.reset()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("takes a grace period longer than any time as: nothing is old enough", function()
    local root = dir .. "/data"
    local s = file.new { root = root }
    local e = testing.engine(certmaint.policy {
      certificates = { "a.test" }, storage = s, issuer = testing.issuer { ca = ca, lifetime = "30d" },
      clean = { expired_cert_grace_period = 1e300 },
    })
    local now = math.floor(clock:now())
    local set = plant_set(ca, s, "old.test", now - 400 * DAY)
    local t = e:tick("clean")
    assert.is_nil(t.skipped)
    assert.equal(0, t.deleted)
    assert.is_string(s:load(set.crt))
  end)

  it("deletes unmanaged expired sets with their site folder, keeps the managed, the fresh and the unparseable", function()
    local root = dir .. "/data"
    local s = file.new { root = root }
    local e = testing.engine(certmaint.policy {
      certificates = { "a.test" }, storage = s,
      issuer = testing.issuer { ca = ca, lifetime = "30d" },
      clean = { expired_cert_grace_period = "1d" },
    })
    e:tick("renew")
    local now = math.floor(clock:now())
    local function plant(name, not_after) return (plant_set(ca, s, name, not_after)) end
    local gone = plant("gone.test", now - 2 * DAY)
    local grace = plant("grace.test", now - 3600) -- expired, within the grace period
    assert(s:store("certificates/testing/junk.test/junk.test.crt", "not a certificate"))
    clock:advance(31 * DAY) -- a.test's own certificate has expired too, but a.test is managed
    local t = e:tick("clean")
    assert.equal(2, t.deleted) -- gone.test and grace.test (now past its grace)
    -- each step's time, as plain numbers the tick's log line shows
    for _, step in ipairs { "staples", "crls", "certs", "locks" } do assert.is_number(t["seconds_" .. step], step) end
    assert.equal(1, t.unparseable)
    assert.is_nil(lfs.attributes(root .. "/" .. gone.site))
    assert.is_nil(lfs.attributes(root .. "/" .. grace.site))
    assert.is_string(s:load(keys.cert("testing", "a.test")))
    assert.is_string(s:load("certificates/testing/junk.test/junk.test.crt"))
    local lines = logs() -- (takes them)
    local deleted = 0
    for _, l in ipairs(lines) do
      if l:find("event=clean_deleted key=certificates/testing/gone%.test/gone%.test%.[a-z]+ not_after=") then
        deleted = deleted + 1
      end
    end
    assert.equal(3, deleted) -- .crt, .key, .json
    local warned = 0
    for _, l in ipairs(lines) do
      if l:find("level=warn event=clean_unparseable .*key=certificates/testing/junk%.test/junk%.test%.crt") then
        warned = warned + 1
      end
    end
    assert.equal(1, warned)
  end)
end)
