-- An HTTP server on 127.0.0.1 for the OCSP and CRL integration tests (not a
-- test itself), on certmaint's own loop.serve:
--
--   lua5.4 ocsp_http.lua PORT files DIR     GET /NAME answers DIR/NAME (read at each
--                                           request, so a test swaps a CRL by renaming
--                                           a new file in), 404 when absent
--   lua5.4 ocsp_http.lua PORT garbage       200 application/ocsp-response, bytes that
--                                           are no OCSP response
--   lua5.4 ocsp_http.lua PORT huge BYTES    200 with a body of BYTES bytes
--   lua5.4 ocsp_http.lua PORT slow SECONDS  answers garbage after SECONDS (a test kills
--                                           the server meanwhile for "dies mid-request")
--   lua5.4 ocsp_http.lua PORT status CODE   answers HTTP CODE
--
-- Each request is printed "<mode> <method> <path length> <body length>" on
-- stdout (line-buffered). Runs until SIGTERM or SIGINT.
local core = require "certmaint.core"
local loop = require "certmaint.loop"

local port, mode, arg3 = tonumber(arg[1]), arg[2], arg[3]
local MODES = { files = true, garbage = true, huge = true, slow = true, status = true }
if not port or not MODES[mode] or (mode ~= "garbage" and not arg3) then
  io.stderr:write("usage: lua5.4 ocsp_http.lua PORT files DIR | garbage | huge BYTES | slow SECONDS | status CODE\n")
  os.exit(2)
end
local MAX_FILE = 64 * 1024 * 1024
local GARBAGE = "\x30\x82\xff\xff" .. string.rep("not an OCSP response ", 20)

io.stdout:setvbuf("line")

local function answer(req)
  io.stdout:write(string.format("%s %s %d %d\n", mode, req.method, #req.path, #(req.body or "")))
  if mode == "files" then
    local name = req.path:match("^/([%w._-]+)$")
    local data = name and core.read_file(arg3 .. "/" .. name, MAX_FILE)
    if not data then return { status = 404, body = "404 Not Found\n" } end
    return { status = 200, body = data, headers = { ["Content-Type"] = "application/pkix-crl" } }
  elseif mode == "garbage" then
    return { status = 200, body = GARBAGE, headers = { ["Content-Type"] = "application/ocsp-response" } }
  elseif mode == "huge" then
    return { status = 200, body = string.rep("\0", tonumber(arg3)),
      headers = { ["Content-Type"] = "application/ocsp-response" } }
  elseif mode == "slow" then
    loop.sleep(tonumber(arg3))
    return { status = 200, body = GARBAGE, headers = { ["Content-Type"] = "application/ocsp-response" } }
  else
    return { status = tonumber(arg3), body = "no\n" }
  end
end

local id, err = loop.serve({ listen = "127.0.0.1:" .. port, timeout = 600 }, answer)
if not id then
  io.stderr:write("ocsp_http: cannot listen on 127.0.0.1:", port, ": ", tostring(err), "\n")
  os.exit(1)
end
io.stdout:write("listening 127.0.0.1:", port, " ", mode, "\n")
loop.on_signal(function() loop.stop() end, { "TERM", "INT" })
loop.run()
