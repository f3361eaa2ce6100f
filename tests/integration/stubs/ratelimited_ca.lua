-- A stub ACME CA on 127.0.0.1 that answers every new order with a rateLimited
-- problem and a Retry-After (RFC 8555 6.6, 7.4): the directory, nonces and
-- account creation work (nothing is verified: the stub is what a CA's rate
-- limiter looks like, not a CA), then POST /order gets
--   429, Content-Type application/problem+json, Retry-After: <seconds>
--   {"type":"urn:ietf:params:acme:error:rateLimited","detail":...}
-- Each request is appended to LOG as "<unix time> <METHOD> <path>".
--
--   lua5.4 ratelimited_ca.lua PORT RETRY_AFTER_SECONDS LOG
-- Runs until SIGTERM (or SIGINT).
local core = require "certmaint.core"
local loop = require "certmaint.loop"

local port, retry_after, log_path = tonumber(arg[1]), tonumber(arg[2]), arg[3]
if not (port and retry_after and log_path) then
  io.stderr:write("usage: lua5.4 ratelimited_ca.lua PORT RETRY_AFTER_SECONDS LOG\n")
  os.exit(2)
end
local base = "http://127.0.0.1:" .. port
local log = assert(io.open(log_path, "a"))
log:setvbuf("line")

local nonces = 0
local function nonce()
  nonces = nonces + 1
  return core.base64url_encode(string.format("stub-nonce-%08d", nonces))
end

local function json(status, doc, extra)
  local headers = { ["Replay-Nonce"] = nonce(), ["Cache-Control"] = "no-store",
    ["Content-Type"] = "application/json" }
  for k, v in pairs(extra or {}) do headers[k] = v end
  return { status = status, body = assert(core.json_encode(doc)), headers = headers }
end

local routes = {}
routes["GET /dir"] = function()
  return json(200, { newNonce = base .. "/nonce", newAccount = base .. "/acct",
    newOrder = base .. "/order", revokeCert = base .. "/revoke", keyChange = base .. "/key-change" })
end
routes["HEAD /nonce"] = function() return { status = 200, headers = { ["Replay-Nonce"] = nonce(), ["Cache-Control"] = "no-store" } } end
routes["GET /nonce"] = function() return { status = 204, headers = { ["Replay-Nonce"] = nonce(), ["Cache-Control"] = "no-store" } } end
routes["POST /acct"] = function()
  return json(201, { status = "valid", orders = base .. "/acct/1/orders" }, { Location = base .. "/acct/1" })
end
routes["POST /acct/1"] = function() return json(200, { status = "valid", orders = base .. "/acct/1/orders" }) end
routes["POST /order"] = function()
  return json(429, { type = "urn:ietf:params:acme:error:rateLimited",
      detail = "too many new orders recently: stub limit, retry after " .. retry_after .. " s" },
    { ["Content-Type"] = "application/problem+json", ["Retry-After"] = tostring(retry_after) })
end

local id, err = loop.serve({ listen = "127.0.0.1:" .. port, timeout = 10 }, function(req)
  log:write(string.format("%.3f %s %s\n", core.now(), req.method, req.path))
  local route = routes[req.method .. " " .. req.path]
  if route then return route(req) end
  return json(404, { type = "urn:ietf:params:acme:error:malformed", detail = "no such resource " .. req.path },
    { ["Content-Type"] = "application/problem+json" })
end)
if not id then
  io.stderr:write("ratelimited_ca.lua: cannot listen on 127.0.0.1:" .. port .. ": " .. tostring(err) .. "\n")
  os.exit(1)
end
loop.on_signal(function() loop.stop() end, { "TERM", "INT" })
loop.run()
loop.serve_close(id)
log:close()
