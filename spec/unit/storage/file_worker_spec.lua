-- certmaint.storage.file off the loop thread: from a loop task, commit() and
-- store() run their file work (and its fsyncs) on the loop's worker threads
-- (core.commit_job, loop.work), so the other tasks run meanwhile; the crash
-- guarantees are the ones of spec/contract/storage_spec.lua.
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local file = require "certmaint.storage.file"
local helpers = require "helpers.policies"
local task = require "helpers.loop_task"
local backends = require "helpers.storage_backends"
local lfs = require "lfs"

local function perms(path) return lfs.attributes(path, "permissions") end

-- A task that counts its turns until stopped: each loop.yield() is one turn
-- of the loop, so a count that moved while another task waited shows that
-- the loop went on (no timing involved).
local function counter()
  local c = { n = 0, stop = false }
  c.task = loop.spawn(function()
    while not c.stop do
      c.n = c.n + 1
      loop.yield()
    end
  end)
  return c
end

describe("storage.file from loop tasks", function()
  local root, s
  local logs
  before_each(function()
    root = helpers.tmpdir()
    s = file.new { root = root }
    logs = testing.capture_logs()
  end)
  after_each(function()
    testing.reset()
    os.execute("rm -rf " .. root)
  end)

  it("lets the other tasks run while a commit of many large values is written", function()
    local c = counter()
    local big = string.rep("x", 256 * 1024)
    local put = {}
    for i = 1, 40 do put[("certificates/ca/s%d/s%d.crt"):format(i, i)] = big .. i end
    put["certificates/ca/s1/s1.key"] = "KEY"
    local during = task.run(function()
      local before = c.n
      assert(s:commit { put = put })
      return c.n - before
    end)
    c.stop = true
    assert.is_true(during >= 1, "the counter did not move during the commit")
    assert.equal(big .. "7", s:load("certificates/ca/s7/s7.crt"))
    assert.equal("rw-------", perms(root .. "/certificates/ca/s1/s1.key"))
    assert.same({}, backends.walk(root .. "/journal")) -- the transaction is gone
    assert.equal(0, core.work_pending())
  end)

  it("stores from a task off the loop thread, keys 0600", function()
    local c = counter()
    local during = task.run(function()
      local before = c.n
      assert(s:store("certificates/ca/a/a.key", "K"))
      assert(s:store("certificates/ca/a/a.json", "{}", { mode = "0644" }))
      return c.n - before
    end)
    c.stop = true
    assert.is_true(during >= 1)
    assert.equal("K", s:load("certificates/ca/a/a.key"))
    assert.equal("rw-------", perms(root .. "/certificates/ca/a/a.key"))
    assert.equal("rw-r--r--", perms(root .. "/certificates/ca/a/a.json"))
  end)

  it("lands overlapping writes to one key in call order, and recover() leaves commits in progress alone", function()
    local results = {}
    local a = loop.spawn(function() results.a = { s:commit { put = { k = "first", a = "A" } } } end)
    local b = loop.spawn(function() results.b = { s:commit { put = { k = "second", b = "B" } } } end)
    local r = loop.spawn(function() results.r = { s:recover() } end)
    local st = loop.spawn(function() results.st = { s:store("k", "third") } end)
    assert.is_true(loop.run_until(function() return a.done and b.done and r.done and st.done end, { timeout = 30 }))
    assert.same({ true }, results.a)
    assert.same({ true }, results.b)
    assert.same({ true }, results.st)
    assert.same({ 0, 0 }, results.r) -- the two commits were in flight: not its to finish
    assert.equal("third", s:load("k"))
    assert.equal("A", s:load("a"))
    assert.equal("B", s:load("b"))
    assert.same({ 0, 0 }, { s:recover() })
    assert.is_nil(next(s.writing))
    assert.is_nil(next(s.inflight))
  end)

  it("names the step and the key that failed; recover() finishes a committed one", function()
    assert(s:store("k/x.crt", "OLD"))
    local res = { task.run(function()
      loop.spawn(function()
        -- runs while the commit is staged: a folder appears where the value goes
        assert(os.remove(root .. "/k/x.crt"))
        assert(core.mkdir_p(root .. "/k/x.crt/inside", "0700"))
      end)
      return s:commit { put = { ["k/x.crt"] = "NEW", ["k/x.key"] = "KEY" } }
    end) }
    assert.is_nil(res[1])
    assert.equal("EISDIR", res[3])
    assert.matches("is committed but not yet applied %(recover%(%) finishes it%)", res[2])
    assert.matches("rename k/x.crt: rename " .. root:gsub("%p", "%%%0") .. "/k/x.crt: ", res[2])
    os.execute("rm -rf " .. root .. "/k/x.crt")
    assert.matches("event=storage_commit_unfinished", table.concat(logs(), "\n"))
    assert.same({ 1, 0 }, { s:recover() })
    assert.equal("NEW", s:load("k/x.crt"))
    assert.equal("KEY", s:load("k/x.key"))
    assert.equal("rw-------", perms(root .. "/k/x.key"))
  end)

  it("leaves all-old or all-new after an injected crash at any step of a commit on a worker", function()
    core.clock_set(1700000000)
    local keys = { "certificates/ca/n/n.crt", "certificates/ca/n/n.json", "certificates/ca/n/n.key" }
    local outcomes = {}
    local n = 0
    while true do
      os.execute("rm -rf " .. root .. "/*")
      s = file.new { root = root }
      for _, k in ipairs(keys) do assert(s:store(k, "old")) end
      s.crash_after = n
      local put = {}
      for _, k in ipairs(keys) do put[k] = "new" end
      local ok, err = task.run(function() return pcall(s.commit, s, { put = put }) end)
      if ok then
        assert.is_true(err)
        break
      end
      assert.matches("injected crash", err, 1, true)
      core.clock_advance(s.stale_after + 1)
      local r = file.new { root = root }
      assert.is_number(r:recover())
      local seen = {}
      for _, k in ipairs(keys) do seen[#seen + 1] = r:load(k) end
      assert.is_true(seen[1] == seen[2] and seen[2] == seen[3], "a mix after " .. n .. " steps")
      outcomes[#outcomes + 1] = seen[1]
      assert.same({ 0, 0 }, { r:recover() })
      n = n + 1
      assert.is_true(n < 50)
    end
    -- 3 staged, the commit point, 3 renames, the fsync, the removal
    assert.equal(9, n)
    for i, o in ipairs(outcomes) do assert.equal(i <= 4 and "old" or "new", o, "crash after " .. (i - 1)) end
  end)

  it("takes and releases a lock from a task, its files written on a worker", function()
    local c = counter()
    local during, token = task.run(function()
      local before = c.n
      local lock = assert(s:try_lock("issue_cert_example.com"))
      assert.equal("rw-r--r--", perms(root .. "/locks/issue_cert_example.com.lock"))
      assert.equal(lock.token, core.json_decode(s:load("locks/issue_cert_example.com.token")).token)
      assert(s:unlock(lock))
      return c.n - before, lock.token
    end)
    c.stop = true
    assert.is_true(during >= 1)
    assert.is_nil(lfs.attributes(root .. "/locks/issue_cert_example.com.lock"))
    local again = task.run(function() return assert(s:try_lock("issue_cert_example.com")) end)
    assert.is_true(again.token > token)
    local ok, err, code = core.file_job("remove", root .. "/locks/none.lock"):run()
    assert.is_nil(ok)
    assert.equal("ENOENT", code)
    assert.matches("none.lock", err)
  end)

  it("runs the same job on the calling thread outside a task", function()
    assert.is_false(loop.in_task())
    assert.is_true(s:commit { put = { ["a/b.key"] = "K" }, delete = { "none" } })
    assert.equal(0, core.work_pending())
    assert.equal("K", s:load("a/b.key"))
    local job = core.commit_job { root = root, puts = { { key = "c/d", value = "D", mode = "0640" } } }
    assert.is_true(loop.work(job, "write"))
    assert.equal("rw-r-----", perms(root .. "/c/d"))
    assert.has_error(function() core.commit_job { root = root, puts = { { key = "x", value = "y", mode = "rw" } } } end)
    assert.has_error(function() core.commit_job { root = root, bogus = 1 } end)
  end)
end)
