--- certmaint.acme.challenges.http01: http-01 answered by certmaint itself, on
-- the core's in-loop HTTP server (core.http_serve: GET/HEAD of exact paths
-- only, request size and time limits, everything else 404).
--
--   challenges = { http01 = { listen = "0.0.0.0:80" } }
--   challenges = { http01 = { listen = "127.0.0.1:5002", timeout = "10s" } }
--
-- One listener per address for the whole process, shared by every order in
-- flight: it opens at the first present() and closes when the last challenge
-- on it is cleaned up (certmagic's standalone solver does the same), so the
-- port is held only while a validation can come. Each challenge is the path
-- /.well-known/acme-challenge/<token> answering the key authorization.
local core = require "certmaint.core"
local options = require "certmaint.options"

local M = {}

M.TYPE = "http-01"
M.PATH_PREFIX = "/.well-known/acme-challenge/"
M.SCHEMA = {
  listen = { type = "string", required = true,
    check = function(v)
      return v:match("^%[?[%w%.:%-]*%]?:%d+$") ~= nil and tonumber(v:match(":(%d+)$")) <= 65535,
        'must be "ADDRESS:PORT" (like "0.0.0.0:80" or "[::]:80")'
    end },
  timeout = { type = "duration", default = 10,
    check = function(v) return v > 0, "must be more than 0 seconds" end },
  max_connections = { type = "number", default = 1024,
    check = function(v) return math.tointeger(v) ~= nil and v >= 1, "must be a positive integer" end },
}

-- listen address -> { id =, port =, refs = challenges presented on it }
local servers = {}

local function valid_token(t)
  return type(t) == "string" and #t >= 1 and #t <= 256 and t:find("^[%w_%-]+$") ~= nil
end

local Solver = {}
Solver.__index = Solver

--- new(opts, ctx) -> solver. Nothing is opened until present().
function M.new(opts, ctx)
  local o = options.check(opts, M.SCHEMA, "certmaint.acme.challenges.http01", 2)
  o.ctx = ctx or {}
  return setmetatable(o, Solver)
end

local function open(self)
  local s = servers[self.listen]
  if s then return s end
  local id, port_or_err, code = core.http_serve { listen = self.listen, timeout = self.timeout,
    max_connections = math.tointeger(self.max_connections) }
  if not id then return nil, port_or_err, code end
  s = { id = id, port = port_or_err, refs = 0 }
  servers[self.listen] = s
  core.log("info", "acme_http01_listening", { listen = self.listen, port = s.port })
  return s
end

local function fail(chal, what, err, code)
  return nil, string.format("http-01 challenge for %s: %s: %s", tostring(chal.identifier), what, tostring(err)),
    code or "http01"
end

function Solver:present(chal)
  if not valid_token(chal.token) then return fail(chal, "token", "the CA's token is not base64url", "invalid") end
  local path = M.PATH_PREFIX .. chal.token
  for attempt = 1, 2 do
    local s, err, code = open(self)
    if not s then return fail(chal, "listening on " .. self.listen, err, code) end
    local ok
    ok, err, code = core.http_serve_set(s.id, path, chal.key_authorization, "application/octet-stream")
    if ok then
      s.refs = s.refs + 1
      return true
    end
    -- the server is gone (core.loop_reset): open a new one once
    servers[self.listen] = nil
    if attempt == 2 then return fail(chal, "serving " .. path, err, code) end
  end
end

function Solver:cleanup(chal)
  local s = servers[self.listen]
  if not s or not valid_token(chal.token) then return true end
  if core.http_serve_unset(s.id, M.PATH_PREFIX .. chal.token) then s.refs = s.refs - 1 end
  if s.refs <= 0 then
    core.http_serve_close(s.id)
    servers[self.listen] = nil
  end
  return true
end

--- The port an address is being served on (nil when closed): for tests.
function M.serving(listen)
  local s = servers[listen]
  return s and s.port or nil, s and s.refs or 0
end

return M
