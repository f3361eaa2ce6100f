--- The engine's metrics: what the passes, renewals, deploys and lock waits
-- record for certmaint.metrics to render, the endpoint of policy.metrics.listen
-- and the file of policy.metrics.textfile (README "Metrics").
--
-- The endpoint is the core's in-loop HTTP server (core/loop/httpd.c) in
-- event mode: requests are parsed in C (heads bounded to 8 KiB, bodies
-- refused with 413, one deadline per connection, a connection cap), and only
-- a well-formed request reaches the handler here, which renders on the
-- loop's one Lua thread between other work: GET or HEAD /metrics, else 404.
--
-- Only `certmaint run` serves, and only `run` and `once` write the textfile
-- (the engine's metrics_active flag): a `clean` or `renew` by hand would
-- overwrite the daemon's file with a view that knows no passes.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local metrics = require "certmaint.metrics"

local M = {}

M.METRICS_TIMEOUT = 10        -- seconds a scrape connection may take
M.METRICS_MAX_CONNECTIONS = 16 -- scrapers at once; more are closed at once
M.METRICS_MAX_RESPONSE = 512 * 1024 * 1024 -- bytes of one exposition (100k certificates: ~65 MB)

local function log(level, event, fields) core.log(level, event, fields or {}) end

--- A pass of kind finished after `seconds`: its sum, count, last duration
-- and completion time, and the tick's integer counts.
function M:metrics_note_pass(kind, seconds, tick)
  self.pass_stats = self.pass_stats or {}
  local p = self.pass_stats[kind]
  if not p then
    p = { count = 0, seconds = 0 }
    self.pass_stats[kind] = p
  end
  p.count, p.seconds = p.count + 1, p.seconds + seconds
  p.last_seconds, p.last_at = seconds, core.now()
  local counts = {}
  for k, v in pairs(tick) do
    -- the tick's counts are integers; its times, sizes and seconds_* are not counts
    if math.type(v) == "integer" and k ~= "at" and k ~= "lua_kib" and k ~= "cached" and not k:find("^seconds") then
      counts[k] = v
    end
  end
  p.counts = counts
end

--- A renewal (or obtain) attempt of entry e ended: ok or not, now.
function M:metrics_note_renewal(e, ok)
  e.renewal_time, e.renewal_ok = core.now(), ok and true or false
end

--- A deploy of primary's certificate ended ("done", or failed).
function M:metrics_note_deploy(primary, ok)
  local e = self.entries[primary]
  if e then e.deploy_time, e.deploy_ok = core.now(), ok and true or false end
end

--- A wait for a lock another instance held ended: result "acquired",
-- "timeout" or "error", after seconds.
function M:metrics_note_lock_wait(result, seconds)
  local w = self.lock_stats or { count = 0, seconds = 0 }
  self.lock_stats = w
  w[result] = (w[result] or 0) + 1
  w.count, w.seconds = w.count + 1, w.seconds + seconds
end

--- The exposition now (certmaint.metrics.render).
function M:metrics_text()
  return metrics.render(self)
end

local function handler(self)
  return function(req)
    if req.path ~= "/metrics" then return { status = 404, body = "404 Not Found (try /metrics)\n" } end
    if req.method ~= "GET" and req.method ~= "HEAD" then
      return { status = 405, body = "405 Method Not Allowed\n", headers = { Allow = "GET, HEAD" } }
    end
    return { status = 200, body = self:metrics_text(), headers = { ["Content-Type"] = metrics.CONTENT_TYPE } }
  end
end

--- Serve policy.metrics.listen (again after a reload that changed it; a
-- reload that dropped it closes the server). A listen that fails is logged
-- at error level (metrics_listen_failed): the daemon runs on without it.
function M:metrics_serve()
  local want = (self.policy.metrics or {}).listen
  local s = self.metrics_server
  if s and s.listen == want then return true end
  if s then
    loop.serve_close(s.id)
    self.metrics_server = nil
    log("info", "metrics_closed", { listen = s.listen })
  end
  if not want then return true end
  local id, port, code = loop.serve({ listen = want, timeout = M.METRICS_TIMEOUT,
    max_connections = M.METRICS_MAX_CONNECTIONS, max_body = 0,
    max_response = M.METRICS_MAX_RESPONSE }, handler(self))
  if not id then
    log("error", "metrics_listen_failed", { listen = want, error = port, code = code })
    return nil, port, code
  end
  self.metrics_server = { id = id, listen = want, port = port }
  log("info", "metrics_listening", { listen = want, port = port, path = "/metrics" })
  return true
end

function M:metrics_close()
  local s = self.metrics_server
  if s then
    loop.serve_close(s.id)
    self.metrics_server = nil
  end
end

--- Write policy.metrics.textfile (atomically, 0644: node_exporter runs as
-- another user) after a pass. A failure is logged, never raised.
function M:metrics_write_textfile()
  local path = self.metrics_active and (self.policy.metrics or {}).textfile
  if not path then return end
  local ok, err, code = core.write_atomic(path, self:metrics_text(), "0644")
  if not ok then log("warn", "metrics_textfile_failed", { path = path, error = err, code = code }) end
end

return M
