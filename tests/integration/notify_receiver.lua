-- A webhook receiver for the notification test (not a test itself), with
-- core.http_serve's event mode (loop.serve). Each request's path and body go
-- to OUT as one line "<path> <body>"; the answer depends on the path:
--   /ok    200        /fail  500        /hang  none: the request waits an hour
-- It runs until SIGTERM or SIGINT.
--
--   lua5.4 notify_receiver.lua OUT 127.0.0.1:PORT
local loop = require "certmaint.loop"

local out_path, listen = arg[1], arg[2]
if not out_path or not listen then
  io.stderr:write("usage: notify_receiver.lua OUT HOST:PORT\n")
  os.exit(2)
end
local out = assert(io.open(out_path, "a"))

local function answer(req)
  -- one line per request: a JSON body has no raw newline
  out:write(req.path, " ", (tostring(req.body or ""):gsub("\n", "\\n")), "\n")
  out:flush()
  if req.path == "/ok" then return { status = 200, body = "ok\n" } end
  if req.path == "/fail" then return { status = 500, body = "broken\n" } end
  if req.path == "/hang" then
    loop.sleep(3600)
    return { status = 200, body = "late\n" }
  end
  return { status = 404, body = "404 Not Found\n" }
end

local id, port_or_err = loop.serve({ listen = listen, timeout = 3600 }, answer)
if not id then
  io.stderr:write("notify_receiver: cannot listen on ", listen, ": ", tostring(port_or_err), "\n")
  os.exit(1)
end
io.stdout:write("listening ", listen, "\n")
io.stdout:flush()
loop.on_signal(function() loop.stop() end, { "TERM", "INT" })
loop.run()
