-- One OS process sharing a file storage directory with others, for
-- spec/unit/cluster_file_locks_spec.lua (run as `lua5.4 lock_worker.lua MODE ...`;
-- LUA_PATH/LUA_CPATH as for the specs). Prints what it saw, one fact a line.
--
--   count ROOT ID N   N times: lock "shared", check no other process is inside
--                     (a marker key), stay a moment, add 1 to a counter key,
--                     unlock. Prints "violation ..." if two were inside at once,
--                     then "done ID".
--   hold ROOT         take lock "held", print "held PID TOKEN", keep it fresh
--                     (a heartbeat every 0.2 s) until it is lost (this process
--                     was stopped past the stale time and another took it
--                     over), then try a commit fenced by it and print
--                     "lost" and "commit CODE", and exit.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local file = require "certmaint.storage.file"

local mode, root = arg[1], arg[2]
local storage = file.new { root = root, stale_after = 1, poll_interval = 0.01 }
local out = io.stdout
out:setvbuf("line")

local function count(id, n)
  for i = 1, n do
    local lock = assert(storage:lock("shared", { timeout = 120 }))
    local inside = storage:load("cs/holder")
    if inside then out:write("violation ", id, " found ", inside, " inside\n") end
    assert(storage:store("cs/holder", id))
    loop.sleep(0.002)
    local still = storage:load("cs/holder")
    if still ~= id then out:write("violation ", id, " replaced by ", tostring(still), "\n") end
    assert(storage:delete("cs/holder"))
    local c = tonumber(storage:load("cs/count") or "0")
    -- fenced: a write by a holder that lost its lock would be refused
    assert(storage:commit { put = { ["cs/count"] = tostring(c + 1) }, fence = lock })
    assert(storage:unlock(lock))
    if i % 10 == 0 then loop.yield() end
  end
  out:write("done ", id, "\n")
end

local function hold()
  local lock = assert(storage:lock("held", { timeout = 120 }))
  out:write("held ", core.getpid(), " ", lock.token, "\n")
  while true do
    loop.sleep(0.2)
    local _, lost = storage:refresh_locks()
    if #lost > 0 then
      out:write("lost\n")
      local ok, _, code = storage:commit { put = { ["cs/value"] = "the old holder" }, fence = lock }
      out:write("commit ", ok and "ok" or tostring(code), "\n")
      return
    end
  end
end

local done = false
loop.spawn(function()
  local ok, err = pcall(function()
    if mode == "count" then count(arg[3], tonumber(arg[4])) elseif mode == "hold" then hold()
    else error("lock_worker: unknown mode " .. tostring(mode)) end
  end)
  if not ok then out:write("error ", tostring(err), "\n") end
  done = true
end)
loop.run_until(function() return done end)
