--- Spec helpers for code that runs in loop tasks.
local core = require "certmaint.core"
local loop = require "certmaint.loop"

local M = {}

--- Run fn in a loop task until it ends (at most `timeout` seconds, default
-- 30); returns its results, or raises its error.
function M.run(fn, timeout)
  local t = loop.spawn(fn)
  assert(loop.run_until(function() return t.done end, { timeout = timeout or 30 }),
    "the task did not end in time")
  if not t.ok then error(t.error, 0) end
  return table.unpack(t.results, 1, t.results.n)
end

--- A TCP port on 127.0.0.1 that was free a moment ago.
function M.free_port()
  local id, port = assert(core.http_serve { listen = "127.0.0.1:0" })
  core.http_serve_close(id)
  return port
end

return M
