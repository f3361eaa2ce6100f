-- certmaint.storage.file beyond the contract (spec/contract/): what only a
-- file tree on one host has — lock owners that are processes of this host,
-- and symbolic links inside the storage root.
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local common = require "certmaint.storage.common"
local file = require "certmaint.storage.file"
local helpers = require "helpers.policies"

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
end)
