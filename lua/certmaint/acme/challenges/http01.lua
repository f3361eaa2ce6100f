--- certmaint.acme.challenges.http01: http-01 answered by certmaint itself, on
-- the core's in-loop HTTP server (GET/HEAD of /.well-known/acme-challenge/
-- only, request size and time limits, everything else 404).
--
--   challenges = { http01 = { listen = "0.0.0.0:80" } }
--   challenges = { http01 = { listen = "127.0.0.1:5002", timeout = "10s", standby = true } }
--
-- One listener per address for the whole process, shared by every order in
-- flight. Each challenge is a path in the server's table, answered in C. By
-- default the listener opens at the first present() and closes when the last
-- challenge on it is cleaned up (certmagic's standalone solver does the same),
-- so the port is held only while a validation can come; with standby = true
-- it opens when the daemon starts (issuer:start) and stays open.
--
-- distributed (default true): the challenge is also kept in storage
-- (certmaint.acme.challenges.tokens, certmagic's challenge_tokens layout), and
-- a request the table cannot answer is looked up there, so any instance
-- sharing the storage (or Caddy) can answer a validation another one started,
-- and this one answers theirs (event challenge_served distributed=true).
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local options = require "certmaint.options"
local tokens = require "certmaint.acme.challenges.tokens"

local M = {}

M.TYPE = "http-01"
M.PATH_PREFIX = tokens.PATH_PREFIX
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
  distributed = { type = "boolean", default = true },
  standby = { type = "boolean", default = false },
}

-- listen address -> { id =, port =, refs = challenges presented on it,
--   standby = bool, events = bool, sources = { [storage] = { issuer_key = true } } }
local servers = {}

local Solver = {}
Solver.__index = Solver

--- new(opts, ctx) -> solver; ctx = { storage =, issuer_key = } (for distributed).
-- Nothing is opened until present() or start().
function M.new(opts, ctx)
  local o = options.check(opts, M.SCHEMA, "certmaint.acme.challenges.http01", 2)
  o.ctx = ctx or {}
  o.distributed = o.distributed and o.ctx.storage ~= nil and o.ctx.issuer_key ~= nil
  return setmetatable(o, Solver)
end

-- A miss in the table: a challenge another instance on one of the storages
-- presented.
local function miss_handler(s)
  return function(req)
    local ka, why, code = nil, "no storage", "ENOENT"
    for storage, set in pairs(s.sources) do
      local ks = {}
      for k in pairs(set) do ks[#ks + 1] = k end
      ka, why, code = tokens.answer(storage, ks, req)
      if ka or code == "method" then break end
    end
    return tokens.http_reply(req, ka, why, code, function()
      core.log("info", "challenge_served", { identifier = tokens.host_identifier(req.host), challenge = "http-01",
        distributed = true })
    end)
  end
end

local function close(listen, s)
  if s.events then loop.serve_close(s.id) else core.http_serve_close(s.id) end
  if servers[listen] == s then servers[listen] = nil end
end

local function open(self)
  local s = servers[self.listen]
  if not s then
    s = { refs = 0, sources = {} }
    local o = { listen = self.listen, timeout = self.timeout, max_connections = math.tointeger(self.max_connections) }
    local id, port_or_err, code
    if self.distributed then
      s.events = true
      o.max_body = 4096
      id, port_or_err, code = loop.serve(o, miss_handler(s))
    else
      id, port_or_err, code = core.http_serve(o)
    end
    if not id then return nil, port_or_err, code end
    s.id, s.port = id, port_or_err
    servers[self.listen] = s
    core.log("info", "acme_http01_listening", { listen = self.listen, port = s.port, distributed = self.distributed })
  end
  if self.distributed then
    local set = s.sources[self.ctx.storage] or {}
    set[self.ctx.issuer_key] = true
    s.sources[self.ctx.storage] = set
  end
  return s
end

local function fail(chal, what, err, code)
  return nil, string.format("http-01 challenge for %s: %s: %s", tostring(chal.identifier), what, tostring(err)),
    code or "http01"
end

--- The standby listener (issuer:start): open now, keep open.
function Solver:start()
  if not self.standby then return true end
  local s, err, code = open(self)
  if not s then return nil, string.format("http-01 standby listener on %s: %s", self.listen, tostring(err)), code end
  s.standby = true
  return true
end

function Solver:present(chal)
  if not tokens.valid_token(chal.token) then
    return fail(chal, "token", "the CA's token is not base64url", "invalid")
  end
  if self.distributed then
    local ok, err, code = tokens.present(self.ctx.storage, self.ctx.issuer_key, chal)
    if not ok then return nil, err, code end
  end
  local path = M.PATH_PREFIX .. chal.token
  for attempt = 1, 2 do
    local s, err, code = open(self)
    if not s then
      if self.distributed then tokens.cleanup(self.ctx.storage, self.ctx.issuer_key, chal) end
      return fail(chal, "listening on " .. self.listen, err, code)
    end
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
  if self.distributed then
    local ok, err = tokens.cleanup(self.ctx.storage, self.ctx.issuer_key, chal)
    if not ok then core.log("warn", "challenge_token_cleanup_failed", { name = chal.identifier, error = err }) end
  end
  local s = servers[self.listen]
  if not s or not tokens.valid_token(chal.token) then return true end
  if core.http_serve_unset(s.id, M.PATH_PREFIX .. chal.token) then s.refs = s.refs - 1 end
  if s.refs <= 0 and not s.standby then close(self.listen, s) end
  return true
end

--- The port an address is being served on (nil when closed) and how many
-- challenges it holds: for tests.
function M.serving(listen)
  local s = servers[listen]
  return s and s.port or nil, s and s.refs or 0
end

return M
