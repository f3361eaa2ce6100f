-- A static web server for the webroot test (not a test itself): serves the
-- files under DIR/.well-known/acme-challenge/ on LISTEN, as nginx would for
-- certmaint's webroot solver, with core.http_serve's event mode (loop.serve).
-- Each request is printed "<status> <host> <path>" on stdout; it runs until
-- SIGTERM or SIGINT.
--
--   lua5.4 webroot_server.lua DIR 127.0.0.1:PORT
local core = require "certmaint.core"
local loop = require "certmaint.loop"

local dir, listen = arg[1], arg[2]
if not dir or not listen then
  io.stderr:write("usage: webroot_server.lua DIR HOST:PORT\n")
  os.exit(2)
end
local PREFIX = "/.well-known/acme-challenge/"

local function answer(req)
  local token = req.path:sub(1, #PREFIX) == PREFIX and req.path:sub(#PREFIX + 1) or nil
  local status, body = 404, "404 Not Found\n"
  if req.method ~= "GET" and req.method ~= "HEAD" then
    status, body = 405, "405 Method Not Allowed\n"
  elseif token and token:find("^[%w_%-]+$") then
    local data = core.read_file(dir .. PREFIX .. token, 4096)
    if data then status, body = 200, data end
  end
  io.stdout:write(string.format("%d %s %s\n", status, tostring(req.host), req.path))
  io.stdout:flush()
  return { status = status, body = body }
end

local id, port_or_err = loop.serve({ listen = listen, timeout = 5 }, answer)
if not id then
  io.stderr:write("webroot_server: cannot listen on ", listen, ": ", tostring(port_or_err), "\n")
  os.exit(1)
end
io.stdout:write("listening ", listen, "\n")
io.stdout:flush()
loop.on_signal(function() loop.stop() end, { "TERM", "INT" })
loop.run()
