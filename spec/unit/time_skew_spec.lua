-- Skew between instances sharing file storage (issue 12, part 3): one
-- instance's clock minutes ahead must not take the other's live locks (a
-- second order at the CA), nor must a lock stay forever when its holder died
-- (storage/staleness.lua). Each instance's own clock is played by stepping
-- the one process clock before it acts (clock:jump), elapsed time moving on.
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local file = require "certmaint.storage.file"
local helpers = require "helpers.storage_backends"

local NAME = "issue_cert_example.com"

describe("file locks under clock skew", function()
  local clock, dir, logs

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    dir = helpers.tmpdir()
    logs = testing.capture_logs()
  end)

  after_each(function()
    testing.reset()
    helpers.rm_rf(dir)
  end)

  local function taken_over() local n = 0 for _, l in ipairs(logs()) do if l:find("event=lock_taken_over", 1, true) then n = n + 1 end end return n end

  it("an instance whose clock is 4 minutes ahead does not take a live lock, however often it tries", function()
    local a, b = file.new { root = dir }, file.new { root = dir }
    local lock = assert(a:lock(NAME))
    for _ = 1, 12 do -- a minute of A beating every 5 s, B trying with its clock 4 min ahead
      clock:advance(5)
      assert.equal(1, (a:refresh_locks()))
      clock:jump(240)
      local got, holder = b:try_lock(NAME)
      assert.is_false(got, "B took A's live lock")
      assert.equal(a.owner, holder)
      clock:jump(-240)
    end
    assert.equal(0, taken_over())
    assert.is_true(a:unlock(lock))
  end)

  it("a holder that died is taken over stale_after after it was first seen unchanged, whatever the clocks", function()
    local a, b = file.new { root = dir }, file.new { root = dir }
    assert(a:lock(NAME)) -- then A dies: no more heartbeats
    clock:jump(-3600) -- and B's clock is an hour behind A's: by the wall clock the lock is "from the future"
    clock:advance(1)
    assert.is_false((b:try_lock(NAME))) -- first seen now
    clock:advance(9)
    assert.is_false((b:try_lock(NAME)))
    clock:advance(2) -- 11 s unchanged on B's own elapsed clock
    assert.is_truthy(b:try_lock(NAME))
    assert.equal(1, taken_over())
  end)

  it("a lock long dead by its own record (beyond stale_after + max_skew) is taken at first look", function()
    local a, b = file.new { root = dir }, file.new { root = dir }
    assert(a:lock(NAME))
    clock:advance(10 + 300 + 1)
    assert.is_truthy(b:try_lock(NAME))
    assert.equal(1, taken_over())
  end)

  it("with max_skew = 0 the wall-clock rule is certmagic's: stale 10 s after the last update", function()
    local a, b = file.new { root = dir }, file.new { root = dir, max_skew = 0 }
    assert(a:lock(NAME))
    clock:advance(11)
    assert.is_truthy(b:try_lock(NAME))
    assert.is_not_nil(a)
  end)
end)
