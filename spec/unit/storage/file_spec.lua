-- certmaint.storage.file beyond the contract (spec/contract/): what only a
-- file tree on one host has — lock owners that are processes of this host,
-- and symbolic links inside the storage root.
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local common = require "certmaint.storage.common"
local file = require "certmaint.storage.file"
local helpers = require "helpers.policies"
local lfs = require "lfs"

-- A pid that was a process of this host and is not any more.
local function dead_pid()
  local p = assert(io.popen("sh -c 'echo $$'"))
  local pid = tonumber(p:read("l"))
  p:close()
  assert.is_false(core.pid_alive(pid))
  return pid
end

-- Plant a fresh lock file for lock `name` held by `owner`, refreshed just now.
local function plant_lock(root, name, owner)
  assert(core.mkdir_p(root .. "/locks"))
  local now = core.now()
  assert(core.write_atomic(root .. "/locks/" .. name .. ".lock", common.encode_lock(owner, now, now, "g"), "0644"))
end

describe("storage.file", function()
  local root
  before_each(function() root = helpers.tmpdir() end)
  after_each(function()
    testing.reset()
    os.execute("rm -rf " .. root)
  end)

  it("beats twice per stale_after (every 5 s at most) and refuses a stale_after of 0", function()
    assert.equal(5, file.new { root = root }.heartbeat_interval)
    assert.equal(0.5, file.new { root = root, stale_after = 1 }.heartbeat_interval)
    local ok, err = pcall(file.new, { root = root, stale_after = 0 })
    assert.is_false(ok)
    assert.matches("stale_after.*must be more than 0 seconds", err)
  end)

  describe("a lock whose owner is a dead process of this host", function()
    it("is taken over at once, not after stale_after, and the log says why", function()
      local owner = string.format("%s:%d:abcdef", core.hostname(), dead_pid())
      plant_lock(root, "issue_cert_a.test", owner)
      local s = file.new { root = root, stale_after = "1h" }
      local logs = testing.capture_logs()
      local lock = assert(s:try_lock("issue_cert_a.test"))
      assert.equal(s.owner, lock.owner)
      assert.matches("event=lock_taken_over lock=issue_cert_a.test reason=owner_dead stale_owner=" .. owner,
        table.concat(logs(), "\n"), 1, true)
      assert(s:unlock(lock))
    end)

    it("is still busy when the owner is alive, on another host, or another instance of this process", function()
      local s = file.new { root = root, stale_after = "1h" }
      for _, owner in ipairs {
        string.format("%s:%d:abcdef", core.hostname(), 1),               -- alive (init)
        string.format("elsewhere.invalid:%d:abcdef", dead_pid()),          -- another host: cannot tell
        string.format("%s:%d:abcdef", core.hostname(), core.getpid()),     -- this process (a SIGHUP'd policy's storage)
        "unknown",                                                          -- Caddy's lock
      } do
        plant_lock(root, "issue_cert_b.test", owner)
        local ok, holder = s:try_lock("issue_cert_b.test")
        assert.is_false(ok, owner)
        assert.equal(owner, holder)
      end
    end)
  end)

  describe("a symbolic link inside the root", function()
    local outside
    before_each(function() outside = helpers.tmpdir() end)
    after_each(function() os.execute("rm -rf " .. outside) end)

    local function empty(dir)
      local p = assert(io.popen("ls -A " .. dir))
      local listing = p:read("a")
      p:close()
      return listing == ""
    end

    it("is never written through: store, commit, delete and lock refuse it, naming the link", function()
      local s = file.new { root = root }
      assert(core.mkdir_p(root .. "/certificates/local"))
      assert(os.execute("ln -s " .. outside .. " " .. root .. "/certificates/local/a.test"))
      local ok, err, code = s:store("certificates/local/a.test/a.test.crt", "x")
      assert.is_nil(ok)
      assert.equal("ELOOP", code)
      assert.equal("store certificates/local/a.test/a.test.crt: certificates/local/a.test in " .. root
        .. " is a symbolic link (storage never writes through one)", err)
      ok, err, code = s:commit { put = { ["certificates/local/a.test/a.test.key"] = "k",
        ["certificates/local/b.test/b.test.crt"] = "c" } }
      assert.is_nil(ok)
      assert.equal("ELOOP", code, err)
      assert.is_nil(s:load("certificates/local/b.test/b.test.crt")) -- all or nothing
      assert(core.write_atomic(outside .. "/keep", "mine"))
      ok, _, code = s:delete("certificates/local/a.test/keep")
      assert.is_nil(ok)
      assert.equal("ELOOP", code)
      assert.equal("mine", core.read_file(outside .. "/keep"))
      assert(core.remove(outside .. "/keep"))
      assert.is_true(empty(outside))
      -- the link itself can be deleted (that never follows it)
      assert(s:delete("certificates/local/a.test"))
      assert.is_nil(lfs.symlinkattributes(root .. "/certificates/local/a.test"))
      -- locks/ as a link
      assert(os.execute("ln -s " .. outside .. " " .. root .. "/locks"))
      local lock, lerr, lcode = s:try_lock("issue_cert_a.test")
      assert.is_nil(lock)
      assert.equal("ELOOP", lcode, lerr)
      assert.is_true(empty(outside))
    end)

    it("is fine as the root itself (the operator chose it)", function()
      local link = root .. "/data"
      assert(os.execute("ln -s " .. outside .. " " .. link))
      local s = file.new { root = link }
      assert(s:store("certificates/local/a.test/a.test.crt", "x"))
      assert(s:commit { put = { ["certificates/local/a.test/a.test.key"] = "k" } })
      assert.equal("x", core.read_file(outside .. "/certificates/local/a.test/a.test.crt"))
    end)
  end)
end)
