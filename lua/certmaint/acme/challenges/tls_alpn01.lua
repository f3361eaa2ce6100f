--- certmaint.acme.challenges.tls_alpn01: tls-alpn-01 (RFC 8737) answered by
-- certmaint itself, on the core's in-loop TLS responder (core.tls_alpn_serve:
-- ALPN "acme-tls/1" only, a self-signed certificate per SNI with the critical
-- acmeIdentifier extension, nothing but the handshake, time and connection
-- limits).
--
--   challenges = { tls_alpn01 = { listen = "0.0.0.0:443" } }
--   challenges = { tls_alpn01 = { listen = "127.0.0.1:5001", timeout = "10s" } }
--
-- The CA connects to port 443 of the name (Pebble: its tlsPort), so `listen`
-- must be reachable there; nothing else may hold that port while a
-- validation can come (no web server on 443 at the same time).
-- One responder per address for the whole process, shared by every order in
-- flight: it opens at the first present() and closes when the last challenge
-- on it is cleaned up, so the port is held only while a validation can come.
-- One name holds one certificate: two orders validating the same name at
-- once answer with the later key authorization (the earlier order's
-- validation then fails and is retried), as in any tls-alpn-01 solver.
-- Identifiers are DNS names or IP addresses (RFC 8738; the validator's SNI is
-- then the reverse-DNS name); wildcard names need dns-01.
local core = require "certmaint.core"
local options = require "certmaint.options"

local M = {}

M.TYPE = "tls-alpn-01"
M.SCHEMA = {
  listen = { type = "string", required = true,
    check = function(v)
      local port = tonumber(v:match(":(%d+)$"))
      return v:match("^%[?[%w%.:%-%*]*%]?:%d+$") ~= nil and port ~= nil and port <= 65535,
        'must be "ADDRESS:PORT" (like "0.0.0.0:443" or "[::]:443")'
    end },
  timeout = { type = "duration", default = 10,
    check = function(v) return v > 0 and v <= 3600, "must be more than 0 seconds and at most 1h" end },
  max_connections = { type = "number", default = 1024,
    check = function(v)
      return math.tointeger(v) ~= nil and v >= 1 and v <= 65536, "must be an integer from 1 to 65536"
    end },
}

-- listen address -> { id =, port =, refs = presents not yet cleaned up,
--                     names = { [identifier] = key authorization served },
--                     presented = { [identifier .. "\0" .. key authorization] = count } }
local servers = {}

local Solver = {}
Solver.__index = Solver

--- new(opts, ctx) -> solver. Nothing is opened until present().
function M.new(opts, ctx)
  local o = options.check(opts, M.SCHEMA, "certmaint.acme.challenges.tls_alpn01", 2)
  o.ctx = ctx or {}
  return setmetatable(o, Solver)
end

local function fail(chal, what, err, code)
  return nil, string.format("tls-alpn-01 challenge for %s: %s: %s", tostring(chal.identifier), what,
    tostring(err)), code or "tls_alpn01"
end

local function open(self)
  local s = servers[self.listen]
  if s then return s end
  local id, port_or_err, code = core.tls_alpn_serve { listen = self.listen, timeout = self.timeout,
    max_connections = math.tointeger(self.max_connections) }
  if not id then return nil, port_or_err, code end
  s = { id = id, port = port_or_err, refs = 0, names = {}, presented = {} }
  servers[self.listen] = s
  core.log("info", "acme_tls_alpn01_listening", { listen = self.listen, port = s.port })
  return s
end

function Solver:present(chal)
  if type(chal.identifier) ~= "string" or chal.identifier == "" then
    return fail(chal, "identifier", "missing", "invalid")
  end
  if chal.wildcard or chal.identifier:find("*", 1, true) then
    return fail(chal, "identifier", "a wildcard name can only be validated with dns-01", "invalid")
  end
  if type(chal.key_authorization) ~= "string" then
    return fail(chal, "key authorization", "missing", "invalid")
  end
  for attempt = 1, 2 do
    local s, err, code = open(self)
    if not s then return fail(chal, "listening on " .. self.listen, err, code) end
    local ok
    ok, err, code = core.tls_alpn_set(s.id, chal.identifier, chal.key_authorization)
    if ok then
      local key = chal.identifier .. "\0" .. chal.key_authorization
      s.presented[key] = (s.presented[key] or 0) + 1
      s.refs = s.refs + 1
      s.names[chal.identifier] = chal.key_authorization
      return true
    end
    if code ~= "ENOENT" or attempt == 2 then
      if s.refs == 0 then -- opened for this challenge alone: do not keep the port
        core.tls_alpn_close(s.id)
        servers[self.listen] = nil
      end
      return fail(chal, "certificate", err, code)
    end
    -- the responder is gone (core.loop_reset): open a new one once
    servers[self.listen] = nil
  end
end

function Solver:cleanup(chal)
  local s = servers[self.listen]
  local id, ka = chal.identifier, chal.key_authorization
  if not s or type(id) ~= "string" or type(ka) ~= "string" then return true end
  local key = id .. "\0" .. ka
  if not s.presented[key] then return true end -- never presented here (or already cleaned up)
  s.presented[key] = s.presented[key] > 1 and s.presented[key] - 1 or nil
  -- the last present of the key authorization being served takes the name down
  if s.names[id] == ka and not s.presented[key] then
    core.tls_alpn_unset(s.id, id)
    s.names[id] = nil
  end
  s.refs = s.refs - 1
  if s.refs <= 0 then
    local st = core.tls_alpn_stats(s.id) or {}
    core.tls_alpn_close(s.id)
    servers[self.listen] = nil
    core.log("info", "acme_tls_alpn01_closed", { listen = self.listen, handshakes = st.handshakes,
      refused = st.refused, timeouts = st.timeouts })
  end
  return true
end

--- The port an address is served on (nil when closed) and its presents: for tests.
function M.serving(listen)
  local s = servers[listen]
  return s and s.port or nil, s and s.refs or 0
end

--- The responder's counters for an address (core.tls_alpn_stats), or nil.
function M.stats(listen)
  local s = servers[listen]
  return s and core.tls_alpn_stats(s.id) or nil
end

return M
