-- An HTTP proxy on 127.0.0.1 that holds each request until a file exists, then
-- forwards it: put in front of an http-01 listener, it keeps a validation in
-- flight for as long as a test needs (the client that presented the challenge
-- can be killed and restarted meanwhile). Forwarding retries for a few seconds
-- while the upstream is down or does not have the token yet (a 404), so a
-- restarted client that presents again in time is what answers.
-- Each request is appended to LOG: "<unix time> held <path>", then
-- "<unix time> answered <status> <path>".
--
--   lua5.4 holding_proxy.lua PORT UPSTREAM_PORT RELEASE_FILE LOG
-- Runs until SIGTERM (or SIGINT).
local core = require "certmaint.core"
local loop = require "certmaint.loop"

local port, upstream, release, log_path = tonumber(arg[1]), tonumber(arg[2]), arg[3], arg[4]
if not (port and upstream and release and log_path) then
  io.stderr:write("usage: lua5.4 holding_proxy.lua PORT UPSTREAM_PORT RELEASE_FILE LOG\n")
  os.exit(2)
end
local HOLD_MAX, FORWARD_FOR = 30, 10 -- seconds
local log = assert(io.open(log_path, "a"))
log:setvbuf("line")

local function released()
  local f = io.open(release, "r")
  if f then f:close() return true end
  return false
end

local id, err = loop.serve({ listen = "127.0.0.1:" .. port, timeout = HOLD_MAX + FORWARD_FOR + 5 }, function(req)
  log:write(string.format("%.3f held %s\n", core.now(), req.path))
  local until_ = core.monotonic() + HOLD_MAX
  while not released() and core.monotonic() < until_ do loop.sleep(0.05) end
  local resp, ferr
  local stop = core.monotonic() + FORWARD_FOR
  repeat
    resp, ferr = loop.http { url = "http://127.0.0.1:" .. upstream .. req.path,
      headers = { Host = req.host or "localhost" }, timeout = 5, connect_timeout = 2 }
    if resp and resp.status ~= 404 then break end
    loop.sleep(0.1)
  until core.monotonic() > stop
  local status = resp and resp.status or 502
  log:write(string.format("%.3f answered %d %s\n", core.now(), status, req.path))
  if not resp then return { status = 502, body = "upstream: " .. tostring(ferr) } end
  return { status = resp.status, body = resp.body }
end)
if not id then
  io.stderr:write("holding_proxy.lua: cannot listen on 127.0.0.1:" .. port .. ": " .. tostring(err) .. "\n")
  os.exit(1)
end
loop.on_signal(function() loop.stop() end, { "TERM", "INT" })
loop.run()
loop.serve_close(id)
log:close()
