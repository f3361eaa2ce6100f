--- certmaint.failpoint: the named failpoints (core/failpoint.h) around Lua
-- steps: storage locks, etcd requests, ACME and OCSP requests.
--
--   local failpoint = require "certmaint.failpoint"
--   local resp, err, code = failpoint.call("acme.finalize", fn, ...)
--
-- call(name, fn, ...) runs fn(...) and returns what it returns.  With
-- CERTMAINT_FAILPOINTS arming name (certmaint --failpoints lists the names):
-- crash-before kills the process before fn runs, crash-after right after it
-- returns; enospc / eio return nil, "<name>: ... (injected)", "ENOSPC" | "EIO"
-- without running fn (the `nil, err, code` every step here returns on a
-- failure); sleep:MS runs fn MS milliseconds late (loop.sleep inside a loop
-- task: the other tasks go on, as with a slow disk or network).  Unarmed:
-- one field check, then fn(...).
local core = require "certmaint.core"

local M = {}

local ERRORS = {
  enospc = { "ENOSPC", "No space left on device" },
  eio = { "EIO", "Input/output error" },
}

local function finish_after(name, ...)
  core.failpoint_crash(name, "crash-after")
  return ...
end

function M.call(name, fn, ...)
  if not core.failpoints_active or name == nil then return fn(...) end
  local action, ms = core.failpoint(name)
  if not action then return fn(...) end
  if action == "crash-before" then core.failpoint_crash(name, action) end
  if action == "crash-after" then return finish_after(name, fn(...)) end
  core.failpoint_report(name, action)
  local e = ERRORS[action]
  if e then return nil, string.format("%s: %s (injected: failpoint %s)", name, e[2], name), e[1] end
  -- sleep
  local loop = require "certmaint.loop" -- here: certmaint.loop uses this module
  if loop.in_task() and coroutine.isyieldable() then loop.sleep(ms / 1000) else core.failpoint_sleep(ms) end
  return fn(...)
end

return M
