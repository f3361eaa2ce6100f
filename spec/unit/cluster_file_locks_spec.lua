-- The file backend on a directory shared by several OS processes (issue 10,
-- "NFS-style"): lock files exclude each other across processes, a holder
-- killed with SIGKILL is taken over, and one stopped past the stale time
-- (SIGSTOP) loses its lock: its fenced commit is refused once it resumes.
-- The processes are spec/helpers/lock_worker.lua under lua5.4.
local file = require "certmaint.storage.file"
local common = require "certmaint.storage.common"
local helpers = require "helpers.policies"

local WORKER = helpers.ROOT .. "/spec/helpers/lock_worker.lua"

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function start(...)
  local argv = { "exec", "lua5.4", sh_quote(WORKER) }
  for _, a in ipairs { ... } do argv[#argv + 1] = sh_quote(a) end
  return assert(io.popen(table.concat(argv, " ") .. " 2>&1", "r"))
end

local function signal(sig, pid) assert(os.execute("kill -" .. sig .. " " .. pid)) end

-- try_lock until granted, sleeping between attempts (no loop task here)
local function take(storage, name)
  for _ = 1, 600 do
    local lock, holder = storage:try_lock(name)
    if lock then return lock end
    assert(lock == false, holder)
    os.execute("sleep 0.05")
  end
  error("lock " .. name .. " never granted")
end

describe("file storage shared by several processes", function()
  local dir, root

  before_each(function()
    dir = helpers.tmpdir()
    root = dir .. "/shared"
  end)

  after_each(function() os.execute("rm -rf " .. sh_quote(dir)) end)

  it("lets one process at a time hold a lock: no two inside, no update lost", function()
    local workers, rounds = 4, 25
    local procs = {}
    for i = 1, workers do procs[i] = start("count", root, "w" .. i, rounds) end
    local output = {}
    for i, p in ipairs(procs) do
      output[i] = p:read("a")
      assert.is_true((p:close()))
    end
    local all = table.concat(output)
    assert.not_matches("violation", all)
    assert.not_matches("error", all)
    for i = 1, workers do assert.matches("done w" .. i .. "\n", output[i], 1, true) end
    local storage = file.new { root = root }
    assert.equal(tostring(workers * rounds), storage:load("cs/count"))
    assert.is_false(storage:exists("cs/holder"))
    -- every grant took a new token: the next one is above them all
    local lock = assert(storage:try_lock("shared"))
    assert.equal(workers * rounds + 1, lock.token)
    assert(storage:unlock(lock))
  end)

  it("takes over the lock of a holder killed with SIGKILL", function()
    local p = start("hold", root)
    local pid, token = p:read("l"):match("^held (%d+) (%d+)$")
    assert.is_string(pid)
    signal("KILL", pid)
    p:close()
    local storage = file.new { root = root, stale_after = 60 } -- not by staleness: its owner is dead
    local lock = take(storage, "held")
    assert.equal(tonumber(token) + 1, lock.token)
    local rec = common.decode_lock(storage:load(lock.key))
    assert.equal(storage.owner, rec.owner)
    assert(storage:unlock(lock))
  end)

  it("takes over a holder stopped past the stale time; its fenced commit is refused when it resumes", function()
    local p = start("hold", root)
    local pid, token = p:read("l"):match("^held (%d+) (%d+)$")
    assert.is_string(pid)
    signal("STOP", pid) -- its heartbeat stops; the process lives on (owner_dead says no)
    local storage = file.new { root = root, stale_after = 1 }
    local lock = take(storage, "held")
    assert.equal(tonumber(token) + 1, lock.token)
    assert(storage:commit { put = { ["cs/value"] = "the new holder" }, fence = lock })
    signal("CONT", pid)
    local rest = p:read("a")
    p:close()
    assert.matches("lost\ncommit fenced\n", rest, 1, true)
    assert.equal("the new holder", storage:load("cs/value"))
    local rec = common.decode_lock(storage:load(lock.key))
    assert.equal(storage.owner, rec.owner) -- the old holder did not write over the lock file
    assert(storage:unlock(lock))
  end)
end)
